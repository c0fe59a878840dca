/*
 * cmd_timeline.c — `rewind timeline`: where a disk's history is, so a
 * person can see where to rewind to.
 *
 * Shows the restorable range, the marks, and write activity over time as a
 * histogram with one column per interval the terminal width allows: bytes
 * written (zeroes and trims count as writes of their length) and flushes.
 * Activity comes from the journal headers (no payload is read), between
 * the horizon and the latest record.  Runs of empty intervals longer than
 * a tenth of the range are listed as gaps.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct bucket {
	uint64_t bytes, writes, flushes;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind timeline [--store DIR] NAME [--width N] [--json]\n\n"
		"Show disk NAME's restorable range, marks, gaps, and bytes written and\n"
		"flushes per interval.\n\n"
		"  --width N   columns of the histogram (default: the terminal's)\n"
		"  --json      the same data as JSON\n");
}

static const char *const bars[] = { " ", "\u2581", "\u2582", "\u2583", "\u2584",
				    "\u2585", "\u2586", "\u2587", "\u2588" };

static void print_row(const char *label, const struct bucket *b, int n,
		      uint64_t (*get)(const struct bucket *), uint64_t max)
{
	printf("%-9s|", label);
	for (int i = 0; i < n; i++) {
		uint64_t v = get(&b[i]);
		int level = !v ? 0 : 1 + (int)((double)v * 7 / (double)(max ? max : 1));
		printf("%s", bars[level > 8 ? 8 : level]);
	}
	printf("|\n");
}

static uint64_t get_bytes(const struct bucket *b) { return b->bytes; }
static uint64_t get_flushes(const struct bucket *b) { return b->flushes; }

static int cmd_timeline(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "width", required_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL;
	bool json = false;
	int width = 0, c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:w:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'w': width = atoi(optarg);
			if (width < 10 || width > 1000)
				return cli_usage_error("timeline", "--width must be 10..1000");
			break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("timeline", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("timeline", "expected one disk NAME");
	const char *name = argv[optind];
	if (!width) {
		struct winsize ws;
		width = 72;
		if (isatty(STDOUT_FILENO) && !ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) &&
		    ws.ws_col > 30)
			width = ws.ws_col - 12;
	}

	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct ix_mark *ms = NULL;
	struct jr_reader *r = NULL;
	struct bucket *b = NULL;
	store = cli_store_dir(store);
	if ((err = ix_open(&ix, store, IX_RDONLY)))
		return cli_fail(err, "cannot open store '%s'", store);
	struct ix_disk d;
	struct rs_range rg;
	if ((err = ix_disk_get(ix, name, &d)) || (err = rs_range_get(ix, &d, &rg))) {
		rc = cli_fail(err, "disk '%s'", name);
		goto out;
	}
	if ((err = ix_read_begin(ix, &rd))) {
		rc = cli_fail(err, "cannot read the index of '%s'", store);
		goto out;
	}
	int nm = ix_mark_list(rd, d.id, &ms);
	ix_read_end(rd);
	rd = NULL;
	if (nm < 0) {
		rc = cli_fail(nm, "cannot list marks of disk '%s'", name);
		goto out;
	}
	b = calloc((size_t)width, sizeof(*b));
	if (!b) {
		rc = cli_fail(-ENOMEM, "timeline");
		goto out;
	}
	uint64_t t0 = rg.oldest_ts, t1 = rg.latest_ts > t0 ? rg.latest_ts : t0 + 1;
	double span = (double)(t1 - t0);
	char jpath[4096];
	uint64_t total_bytes = 0, total_writes = 0, total_flushes = 0;
	if ((err = ix_disk_path(ix, name, "journal", jpath, sizeof(jpath))) ||
	    (err = jr_reader_open(&r, jpath, JR_READ_HEADERS)) ||
	    (err = jr_reader_seek(r, d.horizon_seq + 1)) < 0) {
		rc = cli_fail(err, "cannot read the journal of disk '%s'", name);
		goto out;
	}
	for (;;) {
		struct jr_rec rec;
		struct jr_loc loc;
		err = jr_reader_next(r, &rec, &loc, NULL);
		if (err <= 0)
			break;
		if (rec.seq > rg.latest_seq)
			break;
		int i = rec.ts_ns <= t0 ? 0 :
			(int)((double)(rec.ts_ns - t0) / span * (width - 1) + 0.5);
		if (i >= width)
			i = width - 1;
		if (rec.type == JR_FLUSH) {
			b[i].flushes++;
			total_flushes++;
		} else if (rec.type == JR_WRITE || rec.type == JR_ZERO ||
			   rec.type == JR_TRIM) {
			b[i].bytes += rec.length;
			b[i].writes++;
			total_bytes += rec.length;
			total_writes++;
		}
	}
	if (err < 0) {
		rc = cli_fail(err, "reading the journal of disk '%s'", name);
		goto out;
	}

	/* Gaps: runs of empty columns longer than a tenth of the range. */
	uint64_t gap_from[64], gap_to[64];
	int ng = 0;
	for (int i = 0; i < width && ng < 64;) {
		if (b[i].writes || b[i].flushes) {
			i++;
			continue;
		}
		int j = i;
		while (j < width && !b[j].writes && !b[j].flushes)
			j++;
		if (j - i >= width / 10 && j - i >= 2) {
			gap_from[ng] = t0 + (uint64_t)(span * i / width);
			gap_to[ng] = t0 + (uint64_t)(span * j / width);
			ng++;
		}
		i = j;
	}

	char ta[40], tb[40];
	if (json) {
		printf("{\"disk\":");
		cli_json_str(stdout, name);
		printf(",\"range\":{\"oldest_seq\":%" PRIu64 ",\"oldest_ts_ns\":%" PRIu64
		       ",\"latest_seq\":%" PRIu64 ",\"latest_ts_ns\":%" PRIu64 "}",
		       rg.oldest_seq, rg.oldest_ts, rg.latest_seq, rg.latest_ts);
		printf(",\"totals\":{\"bytes\":%" PRIu64 ",\"writes\":%" PRIu64
		       ",\"flushes\":%" PRIu64 "},\"marks\":[", total_bytes,
		       total_writes, total_flushes);
		for (int i = 0; i < nm; i++) {
			printf("%s{\"label\":", i ? "," : "");
			cli_json_str(stdout, ms[i].label);
			printf(",\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64 "}",
			       ms[i].seq, ms[i].ts_ns);
		}
		printf("],\"gaps\":[");
		for (int i = 0; i < ng; i++)
			printf("%s{\"from_ns\":%" PRIu64 ",\"to_ns\":%" PRIu64 "}",
			       i ? "," : "", gap_from[i], gap_to[i]);
		printf("],\"interval_ns\":%.0f,\"buckets\":[", span / width);
		for (int i = 0; i < width; i++)
			printf("%s{\"start_ns\":%" PRIu64 ",\"bytes\":%" PRIu64
			       ",\"writes\":%" PRIu64 ",\"flushes\":%" PRIu64 "}",
			       i ? "," : "", t0 + (uint64_t)(span * i / width),
			       b[i].bytes, b[i].writes, b[i].flushes);
		printf("]}\n");
		rc = 0;
		goto out;
	}
	char sz[32];
	printf("disk '%s': restorable from %s (seq %" PRIu64 ") to %s (seq %" PRIu64
	       "), %.1fs of history\n", name, cli_fmt_time(rg.oldest_ts, ta),
	       rg.oldest_seq, cli_fmt_time(rg.latest_ts, tb), rg.latest_seq,
	       (double)(rg.latest_ts - rg.oldest_ts) / 1e9);
	printf("%" PRIu64 " writes (%s), %" PRIu64 " flushes; one column = %.3fs\n\n",
	       total_writes, rw_fmt_size(total_bytes, sz, sizeof(sz)),
	       total_flushes, span / width / 1e9);
	uint64_t maxb = 0, maxf = 0;
	for (int i = 0; i < width; i++) {
		if (b[i].bytes > maxb)
			maxb = b[i].bytes;
		if (b[i].flushes > maxf)
			maxf = b[i].flushes;
	}
	print_row("written", b, width, get_bytes, maxb);
	print_row("flushes", b, width, get_flushes, maxf);
	if (nm) {
		char *line = malloc((size_t)width + 1);
		if (line) {
			memset(line, ' ', (size_t)width);
			line[width] = '\0';
			for (int i = 0; i < nm; i++) {
				if (ms[i].ts_ns < t0 || ms[i].ts_ns > t1)
					continue;
				int col = (int)((double)(ms[i].ts_ns - t0) / span * (width - 1) + 0.5);
				line[col] = '^';
			}
			printf("%-9s %s\n", "marks", line);
			free(line);
		}
	}
	printf("%-9s %-*s%s\n\n", "", width - 27, cli_fmt_time(t0, ta),
	       cli_fmt_time(t1, tb));
	for (int i = 0; i < nm; i++)
		printf("mark %-24s %s  seq %" PRIu64 "%s\n", ms[i].label,
		       cli_fmt_time(ms[i].ts_ns, ta), ms[i].seq,
		       ms[i].seq < d.horizon_seq ? "  (compacted away)" : "");
	for (int i = 0; i < ng; i++)
		printf("gap  no writes from %s to %s\n", cli_fmt_time(gap_from[i], ta),
		       cli_fmt_time(gap_to[i], tb));
	rc = 0;
out:
	free(b);
	free(ms);
	jr_reader_close(r);
	ix_read_end(rd);
	ix_close(ix);
	return rc;
}

CLI_COMMAND(timeline, "timeline", "show a disk's restorable range, marks and write activity", cmd_timeline)
