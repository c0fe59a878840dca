/*
 * cmd_list.c — `rewind list`: the disks of a store, as a table or JSON.
 *
 * How: opens the store read-only (no lock, so it works while `rewind
 * serve` runs) and prints each disk's identity and progress counters from
 * the index.  With --records it also scans each journal's record headers
 * (no payloads) and reports how many records of each type it holds and
 * their logical and stored bytes — what the end-to-end tests compare
 * against the writes they made.
 *
 * Rejected alternative: reporting journal totals from the index's segment
 * summaries only.  Cheaper, but it trusts the derived data; tests should
 * count what is really in the journal files.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

struct jcount {
	uint64_t records, writes, zeroes, trims;
	uint64_t write_bytes, zero_bytes, trim_bytes, stored_bytes;
	uint64_t first_seq, last_seq, segments;
};

static int count_journal(struct ix *ix, const char *name, struct jcount *jc)
{
	char dir[4096];
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	struct jr_seginfo *segs = NULL;
	int err;

	err = ix_disk_path(ix, name, "journal", dir, sizeof(dir));
	if (err)
		return err;
	err = jr_segments_list(dir, &segs);
	if (err < 0)
		return err;
	jc->segments = (uint64_t)err;
	free(segs);
	err = jr_reader_open(&r, dir, JR_READ_HEADERS);
	if (err)
		return err;
	while ((err = jr_reader_next(r, &rec, &loc, &payload)) == 1) {
		jc->records++;
		if (!jc->first_seq)
			jc->first_seq = rec.seq;
		jc->last_seq = rec.seq;
		jc->stored_bytes += rec.stored_len;
		switch (rec.type) {
		case JR_WRITE: jc->writes++; jc->write_bytes += rec.length; break;
		case JR_ZERO: jc->zeroes++; jc->zero_bytes += rec.length; break;
		case JR_TRIM: jc->trims++; jc->trim_bytes += rec.length; break;
		default: break;
		}
	}
	jr_reader_close(r);
	return err < 0 ? err : 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rewind list [--store DIR] [--json] [--records]\n\n"
		   "Lists the disks of the store.  --records also counts the "
		   "records in each\ndisk's journal (reads every record header).  "
		   "Works while the store is served.\n");
}

static int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "records", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL;
	bool json = false, records = false;
	struct ix *ix = NULL;
	struct ix_disk *disks = NULL;
	int c, n, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:jrh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = true; break;
		case 'r': records = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("list", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("list", "unexpected argument '%s'",
				       argv[optind]);
	store = cli_store_dir(store);
	rw_err_clear();
	n = ix_open(&ix, store, IX_RDONLY);
	if (n == RW_ENOTFOUND) {
		rw_log(RW_LOG_ERROR, "'%s' is not a rewind store (create it "
		       "with `rewind init`)", store);
		return 1;
	}
	if (n)
		return cli_fail(n, "cannot open store '%s'", store);
	n = ix_disk_list(ix, &disks);
	if (n < 0) {
		cli_fail(n, "cannot list the disks of store '%s'", store);
		goto out;
	}
	if (json)
		printf("{\"store\":");
	if (json) {
		cli_json_str(stdout, store);
		printf(",\"disks\":[");
	} else if (n) {
		printf("%-20s %5s %12s %8s %14s %14s", "NAME", "ID", "SIZE",
		       "BLOCK", "INDEXED-SEQ", "HEAD-SYNC-SEQ");
		printf(records ? " %10s %12s\n" : "\n", "RECORDS", "WRITTEN");
	} else {
		printf("no disks in store '%s' (add one with `rewind create`)\n",
		       store);
	}
	for (int i = 0; i < n; i++) {
		struct ix_disk *d = &disks[i];
		struct jcount jc = { 0 };
		char sz[32], ts[40];
		if (records) {
			rw_err_clear();
			int err = count_journal(ix, d->name, &jc);
			if (err) {
				if (json)
					printf("]}\n");
				cli_fail(err, "cannot read the journal of disk "
					 "'%s'", d->name);
				goto out;
			}
		}
		if (!json) {
			printf("%-20s %5u %12s %8u %14llu %14llu", d->name, d->id,
			       rw_fmt_size(d->size, sz, sizeof(sz)),
			       d->block_size,
			       (unsigned long long)d->last_indexed_seq,
			       (unsigned long long)d->head_synced_seq);
			if (records)
				printf(" %10llu %12s\n",
				       (unsigned long long)jc.records,
				       rw_fmt_size(jc.write_bytes, sz, sizeof(sz)));
			else
				printf("\n");
			continue;
		}
		printf("%s{\"name\":", i ? "," : "");
		cli_json_str(stdout, d->name);
		printf(",\"id\":%u,\"size\":%llu,\"block_size\":%u,"
		       "\"created\":\"%s\",\"horizon_seq\":%llu,"
		       "\"last_indexed_seq\":%llu,\"head_synced_seq\":%llu",
		       d->id, (unsigned long long)d->size, d->block_size,
		       cli_fmt_time(d->ctime_ns, ts),
		       (unsigned long long)d->horizon_seq,
		       (unsigned long long)d->last_indexed_seq,
		       (unsigned long long)d->head_synced_seq);
		if (records)
			printf(",\"journal\":{\"segments\":%llu,\"records\":%llu,"
			       "\"writes\":%llu,\"zeroes\":%llu,\"trims\":%llu,"
			       "\"write_bytes\":%llu,\"zero_bytes\":%llu,"
			       "\"trim_bytes\":%llu,\"stored_bytes\":%llu,"
			       "\"first_seq\":%llu,\"last_seq\":%llu}",
			       (unsigned long long)jc.segments,
			       (unsigned long long)jc.records,
			       (unsigned long long)jc.writes,
			       (unsigned long long)jc.zeroes,
			       (unsigned long long)jc.trims,
			       (unsigned long long)jc.write_bytes,
			       (unsigned long long)jc.zero_bytes,
			       (unsigned long long)jc.trim_bytes,
			       (unsigned long long)jc.stored_bytes,
			       (unsigned long long)jc.first_seq,
			       (unsigned long long)jc.last_seq);
		printf("}");
	}
	if (json)
		printf("]}\n");
	rc = 0;
out:
	free(disks);
	ix_close(ix);
	return rc;
}

CLI_COMMAND(list, "list", "list the disks of a store", cmd_list)
