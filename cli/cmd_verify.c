/*
 * cmd_verify.c — `rewind verify`: cross-check the index against the
 * journals (ix_verify) and print what does not match.
 *
 * The checking lives in index/verify.c so the unit tests exercise the
 * same code; this file only parses options and formats the report (one
 * line per mismatch as it is found, or one JSON document at the end).
 * The store is opened without the lock: verify reads, and may run next to
 * a server (records it has not indexed yet are counted, not reported).
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

struct vout {
	bool json;
	struct ix_problem *p;   /* collected for JSON */
	char **what;
	char **disk;
	size_t n, cap;
	bool oom;
};

static void on_problem(void *arg, const struct ix_problem *p)
{
	struct vout *o = arg;
	char seg[32] = "-";

	if (!o->json) {
		if (p->segment)
			jr_segment_name(p->segment, seg);
		if (p->disk_id)
			printf("MISMATCH disk %s (id %u)", p->disk, p->disk_id);
		else
			printf("MISMATCH time map");
		if (p->block != UINT64_MAX)
			printf(" block %llu", (unsigned long long)p->block);
		if (p->seq)
			printf(" seq %llu", (unsigned long long)p->seq);
		if (p->segment)
			printf(" segment %s offset %llu", seg,
			       (unsigned long long)p->offset);
		printf(": %s\n", p->what);
		return;
	}
	if (o->n == o->cap) {
		size_t nc = o->cap ? o->cap * 2 : 16;
		struct ix_problem *np = realloc(o->p, nc * sizeof(*np));
		char **nw = np ? realloc(o->what, nc * sizeof(*nw)) : NULL;
		if (np)
			o->p = np;
		if (nw)
			o->what = nw;
		char **nd = nw ? realloc(o->disk, nc * sizeof(*nd)) : NULL;
		if (nd)
			o->disk = nd;
		if (!np || !nw || !nd) {
			o->oom = true;
			return;
		}
		o->cap = nc;
	}
	o->p[o->n] = *p;
	o->what[o->n] = strdup(p->what);
	o->disk[o->n] = strdup(p->disk);
	if (!o->what[o->n] || !o->disk[o->n]) {
		free(o->what[o->n]);
		free(o->disk[o->n]);
		o->oom = true;
		return;
	}
	o->n++;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind verify [--store DIR] [--json] [NAME...]\n\n"
		"Checks that the index and the journals agree: every journal record is\n"
		"read in full (checksum, decompression) and must be indexed for each\n"
		"block it touches and in the time map; every index entry must point at\n"
		"a record that exists and carries that disk, block and seq.  Checks\n"
		"the named disks, or all of them.\n\n"
		"  --store DIR   the store (default $REWIND_STORE or ./rewind-store)\n"
		"  --json        print one JSON document\n"
		"  --help        this text\n\n"
		"Exit status: 0 consistent, 1 mismatches found or error, 2 usage.\n");
}

static int verify_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL;
	struct vout o = { 0 };
	struct ix_verify_report rep;
	struct ix *ix = NULL;
	int c, rc, status = 1;

	while ((c = getopt_long(argc, argv, "+s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': o.json = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("verify", "unknown option");
		}
	}
	store = cli_store_dir(store);
	rc = ix_open(&ix, store, 0);
	if (rc)
		return cli_fail(rc, "cannot open store '%s'", store);
	rc = ix_verify(ix, (const char *const *)argv + optind, argc - optind,
		       on_problem, &o, &rep);
	if (rc) {
		status = cli_fail(rc, "verify failed");
		goto out;
	}
	if (o.oom) {
		status = cli_fail(-ENOMEM, "verify");
		goto out;
	}
	if (o.json) {
		printf("{\"ok\":%s,\"disks\":%llu,\"records\":%llu,\"versions\":%llu,"
		       "\"segments\":%llu,\"time_entries\":%llu,\"unindexed\":%llu,"
		       "\"problems\":[",
		       rep.problems ? "false" : "true",
		       (unsigned long long)rep.disks, (unsigned long long)rep.records,
		       (unsigned long long)rep.versions, (unsigned long long)rep.segments,
		       (unsigned long long)rep.time_entries,
		       (unsigned long long)rep.unindexed);
		for (size_t i = 0; i < o.n; i++) {
			const struct ix_problem *p = &o.p[i];
			printf("%s{\"disk\":", i ? "," : "");
			cli_json_str(stdout, o.disk[i]);
			printf(",\"disk_id\":%u", p->disk_id);
			if (p->block != UINT64_MAX)
				printf(",\"block\":%llu", (unsigned long long)p->block);
			else
				printf(",\"block\":null");
			printf(",\"seq\":%llu,\"segment\":%llu,\"offset\":%llu,\"what\":",
			       (unsigned long long)p->seq, (unsigned long long)p->segment,
			       (unsigned long long)p->offset);
			cli_json_str(stdout, o.what[i]);
			printf("}");
		}
		printf("]}\n");
	} else {
		printf("verified %llu disk(s): %llu records, %llu block versions, %llu segments, %llu time entries",
		       (unsigned long long)rep.disks, (unsigned long long)rep.records,
		       (unsigned long long)rep.versions, (unsigned long long)rep.segments,
		       (unsigned long long)rep.time_entries);
		if (rep.unindexed)
			printf(" (%llu records not indexed yet)",
			       (unsigned long long)rep.unindexed);
		printf("\n%s: %llu mismatch(es)\n", rep.problems ? "FAILED" : "OK",
		       (unsigned long long)rep.problems);
	}
	status = rep.problems ? 1 : 0;
out:
	for (size_t i = 0; i < o.n; i++) {
		free(o.what[i]);
		free(o.disk[i]);
	}
	free(o.p);
	free(o.what);
	free(o.disk);
	ix_close(ix);
	return status;
}

CLI_COMMAND(verify, "verify", "check that the index and the journals agree", verify_run)
