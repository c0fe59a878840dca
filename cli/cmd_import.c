/*
 * cmd_import.c — `rewind import NAME FILE`: a disk from a raw image.
 *
 * How: the image's size becomes the disk's size; ix_disk_create() copies
 * it into base.img and head.img keeping holes (SEEK_DATA/SEEK_HOLE), so a
 * sparse image stays sparse.  History starts empty: the imported content
 * is the horizon.
 *
 * Rejected alternative: journaling the image as ordinary writes.  That
 * would make the import itself restorable history, but doubles the space
 * used and takes as long as a full copy through the journal; base exists
 * precisely to hold "the state before history".
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int open_locked(const char *cmd, const char *store, struct ix **ix)
{
	rw_err_clear();
	int err = ix_open(ix, store, IX_LOCK);
	if (err == RW_EBUSY) {
		rw_log(RW_LOG_ERROR, "%s: store '%s' is in use (is `rewind "
		       "serve` running? stop it first)", cmd, store);
		return 1;
	}
	if (err == RW_ENOTFOUND) {
		rw_log(RW_LOG_ERROR, "%s: '%s' is not a rewind store (create "
		       "it with `rewind init`)", cmd, store);
		return 1;
	}
	if (err)
		return cli_fail(err, "%s: cannot open store '%s'", cmd, store);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rewind import [--store DIR] [--block-size N] NAME "
		   "FILE\n\n"
		   "Creates disk NAME from the raw image FILE (its size becomes "
		   "the disk's size;\nholes stay holes).  The store must not be "
		   "served meanwhile.\n");
}

static int cmd_import(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL, *bs_s = NULL;
	uint64_t bs = IX_BLOCK_SIZE_DEFAULT;
	struct ix *ix = NULL;
	struct ix_disk d;
	struct stat st;
	int c, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:b:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'b': bs_s = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("import", "unknown option");
		}
	}
	if (optind + 2 != argc)
		return cli_usage_error("import", "expected NAME and FILE");
	const char *name = argv[optind], *file = argv[optind + 1];
	if (bs_s && rw_parse_size(bs_s, &bs))
		return cli_usage_error("import", "%s", rw_err_msg());
	if (bs > UINT32_MAX)
		return cli_usage_error("import", "block size too large");
	if (!ix_name_valid(name))
		return cli_usage_error("import", "invalid disk name '%s'", name);
	if (stat(file, &st))
		return cli_fail(-errno, "import: cannot read image '%s'", file);
	if (!S_ISREG(st.st_mode))
		return cli_fail(-EINVAL, "import: '%s' is not a regular file "
				"(a raw image is expected)", file);
	store = cli_store_dir(store);
	if (open_locked("import", store, &ix))
		return 1;
	rw_err_clear();
	err = ix_disk_create(ix, name, (uint64_t)st.st_size, (uint32_t)bs,
			     file, &d);
	if (err) {
		cli_fail(err, "cannot import '%s' as disk '%s' into store '%s'",
			 file, name, store);
		ix_close(ix);
		return 1;
	}
	char sz[32];
	printf("imported '%s' as disk '%s' (id %u, %s) in store '%s'\n", file,
	       d.name, d.id, rw_fmt_size(d.size, sz, sizeof(sz)), store);
	ix_close(ix);
	return 0;
}

CLI_COMMAND(import, "import", "create a disk from a raw image", cmd_import)
