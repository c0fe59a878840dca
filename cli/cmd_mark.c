/*
 * cmd_mark.c — `rewind mark` and `rewind marks`: named points in time.
 *
 * A mark stores a timestamp and the seq it resolved to when taken; restores
 * resolve the timestamp again (restore/view.c), so a mark made while a
 * server's index lagged by a few milliseconds still covers every write
 * acknowledged before it.  Marks are written through LMDB's own writer
 * lock, so they work while `rewind serve` runs.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"
#include "restore/rs.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mark_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind mark [--store DIR] NAME LABEL [--at WHEN] [--json]\n"
		"       rewind mark [--store DIR] NAME LABEL --delete\n\n"
		"Name a point in disk NAME's history (default: now) so it can be\n"
		"restored with --at mark:LABEL.  Marks survive compaction while they\n"
		"are inside history.\n");
}

static int cmd_mark(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "at", required_argument, NULL, 'a' },
		{ "delete", no_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *at = "now";
	bool del = false, json = false;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:a:djh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'a': at = optarg; break;
		case 'd': del = true; break;
		case 'j': json = true; break;
		case 'h': mark_usage(stdout); return 0;
		default: return cli_usage_error("mark", "unknown option");
		}
	}
	if (optind + 2 != argc)
		return cli_usage_error("mark", "expected disk NAME and LABEL");
	const char *name = argv[optind], *label = argv[optind + 1];
	if (!*label || strlen(label) > IX_LABEL_MAX || strchr(label, '/'))
		return cli_usage_error("mark", "invalid label '%s' (1..%d printable "
				       "characters, no '/')", label, IX_LABEL_MAX);
	for (const char *p = label; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return cli_usage_error("mark", "invalid label: control "
					       "characters are not allowed");
	struct rw_when w;
	uint64_t now = rw_clock_ns();
	if ((err = rw_parse_when(at, now, &w)))
		return cli_fail(err, "--at");

	struct ix *ix = NULL;
	store = cli_store_dir(store);
	if ((err = ix_open(&ix, store, 0)))
		return cli_fail(err, "cannot open store '%s'", store);
	struct ix_disk d;
	if ((err = ix_disk_get(ix, name, &d))) {
		rc = cli_fail(err, "disk '%s'", name);
		goto out;
	}
	if (del) {
		if ((err = ix_mark_del(ix, d.id, label))) {
			rc = cli_fail(err, "cannot delete mark '%s' of disk '%s'",
				      label, name);
			goto out;
		}
		if (!json)
			printf("deleted mark '%s' of disk '%s'\n", label, name);
		else
			printf("{\"deleted\":true}\n");
		rc = 0;
		goto out;
	}
	struct ix_mark m = { 0 };
	if ((err = rs_resolve(ix, &d, &w, &m.seq, &m.ts_ns))) {
		rc = cli_fail(err, "cannot mark disk '%s' at '%s'", name, at);
		goto out;
	}
	snprintf(m.label, sizeof(m.label), "%s", label);
	m.created_ns = now;
	if ((err = ix_mark_put(ix, d.id, &m))) {
		rc = cli_fail(err, "cannot store mark '%s' of disk '%s'", label, name);
		goto out;
	}
	char tb[40];
	if (json) {
		printf("{\"disk\":");
		cli_json_str(stdout, name);
		printf(",\"label\":");
		cli_json_str(stdout, label);
		printf(",\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64 ",\"time\":\"%s\"}\n",
		       m.seq, m.ts_ns, cli_fmt_time(m.ts_ns, tb));
	} else {
		printf("marked disk '%s' at %s (seq %" PRIu64 ") as '%s'\n", name,
		       cli_fmt_time(m.ts_ns, tb), m.seq, label);
	}
	rc = 0;
out:
	ix_close(ix);
	return rc;
}

static void marks_usage(FILE *f)
{
	fprintf(f, "usage: rewind marks [--store DIR] NAME [--json]\n\n"
		   "List the marks of disk NAME, oldest first.\n");
}

static int cmd_marks(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL;
	bool json = false;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = true; break;
		case 'h': marks_usage(stdout); return 0;
		default: return cli_usage_error("marks", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("marks", "expected one disk NAME");
	const char *name = argv[optind];
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct ix_mark *ms = NULL;
	store = cli_store_dir(store);
	if ((err = ix_open(&ix, store, IX_RDONLY)))
		return cli_fail(err, "cannot open store '%s'", store);
	struct ix_disk d;
	if ((err = ix_disk_get(ix, name, &d))) {
		rc = cli_fail(err, "disk '%s'", name);
		goto out;
	}
	if ((err = ix_read_begin(ix, &rd))) {
		rc = cli_fail(err, "cannot read the index of '%s'", store);
		goto out;
	}
	int n = ix_mark_list(rd, d.id, &ms);
	if (n < 0) {
		rc = cli_fail(n, "cannot list marks of disk '%s'", name);
		goto out;
	}
	char tb[40];
	if (json) {
		printf("{\"disk\":");
		cli_json_str(stdout, name);
		printf(",\"marks\":[");
		for (int i = 0; i < n; i++) {
			printf("%s{\"label\":", i ? "," : "");
			cli_json_str(stdout, ms[i].label);
			printf(",\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64
			       ",\"time\":\"%s\",\"restorable\":%s}", ms[i].seq,
			       ms[i].ts_ns, cli_fmt_time(ms[i].ts_ns, tb),
			       ms[i].seq >= d.horizon_seq ? "true" : "false");
		}
		printf("]}\n");
	} else if (!n) {
		printf("disk '%s' has no marks\n", name);
	} else {
		printf("%-28s %-12s %s\n", "TIME", "SEQ", "LABEL");
		for (int i = 0; i < n; i++)
			printf("%-28s %-12" PRIu64 " %s\n",
			       cli_fmt_time(ms[i].ts_ns, tb), ms[i].seq,
			       ms[i].label);
	}
	rc = 0;
out:
	free(ms);
	ix_read_end(rd);
	ix_close(ix);
	return rc;
}

CLI_COMMAND(mark, "mark", "name a point in a disk's history", cmd_mark)
CLI_COMMAND(marks, "marks", "list a disk's marks", cmd_marks)
