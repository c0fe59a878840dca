/*
 * cmd_reindex.c — `rewind reindex`: rebuild the index from the journals.
 *
 * Takes the store lock (a running server holds it, and two indexers must
 * not race a rebuild), then ix_rebuild() for the whole store or
 * ix_disk_reindex() per named disk.  Marks survive (they are not in the
 * journal; see FORMAT.md).
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind reindex [--store DIR] [NAME...]\n\n"
		"Rebuilds the index (block versions, time map, segments) from the\n"
		"journals, for the named disks or the whole store.  Marks are kept.\n"
		"Refuses while another process (a server) holds the store lock.\n\n"
		"  --store DIR   the store (default $REWIND_STORE or ./rewind-store)\n"
		"  --help        this text\n");
}

static int reindex_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL;
	struct ix *ix = NULL;
	uint64_t t0 = rw_mono_ns();
	int c, rc;

	while ((c = getopt_long(argc, argv, "+s:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("reindex", "unknown option");
		}
	}
	store = cli_store_dir(store);
	rc = ix_open(&ix, store, IX_LOCK);
	if (rc == RW_EBUSY)
		return cli_fail(rc, "cannot reindex store '%s' while it is in use (stop the server first)", store);
	if (rc)
		return cli_fail(rc, "cannot open store '%s'", store);
	if (optind == argc) {
		rc = ix_rebuild(ix);
		if (rc) {
			ix_close(ix);
			return cli_fail(rc, "reindex of store '%s' failed", store);
		}
	} else {
		for (int i = optind; i < argc; i++) {
			struct ix_disk d;
			rc = ix_disk_get(ix, argv[i], &d);
			if (rc == 0)
				rc = ix_disk_reindex(ix, d.id);
			if (rc) {
				ix_close(ix);
				return cli_fail(rc, "reindex of disk '%s' failed", argv[i]);
			}
		}
	}
	struct ix_disk *disks = NULL;
	int n = ix_disk_list(ix, &disks);
	for (int i = 0; i < n; i++)
		printf("%-20s last indexed seq %llu\n", disks[i].name,
		       (unsigned long long)disks[i].last_indexed_seq);
	free(disks);
	printf("reindexed in %.2f s\n", (double)(rw_mono_ns() - t0) / 1e9);
	ix_close(ix);
	return n < 0 ? cli_fail(n, "listing disks") : 0;
}

CLI_COMMAND(reindex, "reindex", "rebuild the index from the journals", reindex_run)
