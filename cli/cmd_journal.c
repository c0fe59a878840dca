/*
 * cmd_journal.c — `rewind journal`: list a disk's journal records.
 *
 * Reads the journal files directly (jr_reader), never the index, so it
 * shows the source of truth even when the index lags or is damaged, and
 * works while a server appends (it sees what has been written out).
 * Every payload is checksummed and decompressed unless --headers, so a
 * listing doubles as a full integrity pass; corruption is reported with
 * segment and seq and the exit status is 1.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "journal/jr.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind journal [--store DIR] NAME [--from SEQ] [--summary] [--json] [--headers]\n"
		"       rewind journal --dir JOURNAL_DIR [...]\n\n"
		"List the records of disk NAME's journal, oldest first, with a summary.\n\n"
		"  --store DIR    the store (default $REWIND_STORE, else ./rewind-store)\n"
		"  --dir DIR      read this journal directory instead of a disk's\n"
		"  --from SEQ     start at the first record with seq >= SEQ\n"
		"  --summary      print only the totals\n"
		"  --headers      skip payload checksums and decompression (faster)\n"
		"  --json         machine-readable output\n");
}

static int cmd_journal(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "dir", required_argument, NULL, 'd' },
		{ "from", required_argument, NULL, 'f' },
		{ "summary", no_argument, NULL, 'S' },
		{ "headers", no_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *dir = NULL;
	uint64_t from = 0;
	bool summary = false, json = false, headers = false;
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "s:d:f:SHjh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'd': dir = optarg; break;
		case 'f': {
			char *end;
			from = strtoull(optarg, &end, 10);
			if (*end || !*optarg)
				return cli_usage_error("journal", "bad --from '%s'", optarg);
			break;
		}
		case 'S': summary = true; break;
		case 'H': headers = true; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("journal", "unknown option");
		}
	}
	char path[4096];
	if (dir) {
		if (optind != argc)
			return cli_usage_error("journal", "--dir takes no disk NAME");
		snprintf(path, sizeof(path), "%s", dir);
	} else {
		if (optind + 1 != argc)
			return cli_usage_error("journal", "expected one disk NAME");
		const char *name = argv[optind];
		if (strchr(name, '/') || name[0] == '.' || !*name)
			return cli_usage_error("journal", "invalid disk name '%s'", name);
		if ((size_t)snprintf(path, sizeof(path), "%s/disks/%s/journal",
				     cli_store_dir(store), name) >= sizeof(path))
			return cli_usage_error("journal", "path too long");
	}

	struct jr_reader *r = NULL;
	int err = jr_reader_open(&r, path, headers ? JR_READ_HEADERS : 0);
	if (err)
		return cli_fail(err, "cannot read journal '%s'", path);
	if (from && (err = jr_reader_seek(r, from)) < 0) {
		rc = cli_fail(err, "cannot seek journal '%s' to seq %" PRIu64, path, from);
		goto out;
	}

	uint64_t n = 0, logical = 0, stored = 0, writes = 0, zeroes = 0, trims = 0;
	uint64_t flushes = 0;
	uint64_t first_seq = 0, last_seq = 0, first_ts = 0, last_ts = 0;
	if (json) {
		printf("{\"journal\":");
		cli_json_str(stdout, path);
		printf(",%s", summary ? "" : "\"records\":[");
	} else if (!summary) {
		printf("%-10s %-27s %-5s %14s %10s %10s %s\n", "SEQ", "TIME",
		       "TYPE", "OFFSET", "LENGTH", "STORED", "FLAGS");
	}
	for (;;) {
		struct jr_rec rec;
		struct jr_loc loc;
		const void *payload;
		err = jr_reader_next(r, &rec, &loc, &payload);
		if (err <= 0)
			break;
		if (!n) {
			first_seq = rec.seq;
			first_ts = rec.ts_ns;
		}
		n++;
		last_seq = rec.seq;
		last_ts = rec.ts_ns;
		stored += JR_HDR_SIZE + rec.stored_len;
		switch (rec.type) {
		case JR_WRITE: writes++; logical += rec.length; break;
		case JR_ZERO: zeroes++; break;
		case JR_TRIM: trims++; break;
		case JR_FLUSH: flushes++; break;
		default: break;
		}
		if (summary)
			continue;
		char tb[40];
		if (json) {
			printf("%s{\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64
			       ",\"type\":\"%s\",\"offset\":%" PRIu64
			       ",\"length\":%u,\"stored\":%u,\"zstd\":%s"
			       ",\"segment\":%" PRIu64 ",\"at\":%" PRIu64 "}",
			       n > 1 ? "," : "", rec.seq, rec.ts_ns,
			       jr_type_name(rec.type), rec.offset, rec.length,
			       rec.stored_len,
			       (rec.flags & JR_F_ZSTD) ? "true" : "false",
			       loc.segment, loc.offset);
		} else {
			printf("%-10" PRIu64 " %-27s %-5s %14" PRIu64 " %10u %10u %s\n",
			       rec.seq, cli_fmt_time(rec.ts_ns, tb),
			       jr_type_name(rec.type), rec.offset, rec.length,
			       rec.stored_len, (rec.flags & JR_F_ZSTD) ? "zstd" : "-");
		}
	}
	if (err < 0) {
		if (json)
			printf("%s\"error\":true}\n", summary ? "" : "],");
		rc = cli_fail(err, "reading journal '%s'", path);
		goto out;
	}
	if (json) {
		printf("%s\"summary\":{\"records\":%" PRIu64 ",\"writes\":%" PRIu64
		       ",\"zeroes\":%" PRIu64 ",\"trims\":%" PRIu64
		       ",\"flushes\":%" PRIu64 ",\"write_bytes\":%" PRIu64 ",\"stored_bytes\":%" PRIu64
		       ",\"first_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64
		       ",\"first_ts_ns\":%" PRIu64 ",\"last_ts_ns\":%" PRIu64 "}}\n",
		       summary ? "" : "],", n, writes, zeroes, trims, flushes, logical,
		       stored, first_seq, last_seq, first_ts, last_ts);
	} else {
		char a[32], b[32];
		printf("%s%" PRIu64 " records (%" PRIu64 " writes, %" PRIu64
		       " zeroes, %" PRIu64 " trims, %" PRIu64 " flushes), seq %"
		       PRIu64 "..%" PRIu64 ", %s written, %s in the journal "
		       "(%.2fx)\n",
		       summary ? "" : "\n", n, writes, zeroes, trims, flushes,
		       first_seq,
		       last_seq, rw_fmt_size(logical, a, sizeof(a)),
		       rw_fmt_size(stored, b, sizeof(b)),
		       stored ? (double)logical / (double)stored : 0.0);
	}
	rc = 0;
out:
	jr_reader_close(r);
	return rc;
}

CLI_COMMAND(journal, "journal", "list a disk's journal records (seq, time, type, range)", cmd_journal)
