/*
 * cmd_create.c — `rewind create NAME --size SIZE`: add an empty disk.
 *
 * How: parse the size with rw_parse_size (binary suffixes, as qemu-img),
 * open the store with IX_LOCK and let ix_disk_create() write disk.meta,
 * sparse head.img/base.img and the journal directory.  A running server
 * holds the lock, so creating a disk under it is refused with a clear
 * message instead of racing its disk table.
 *
 * Rejected alternative: creating disks through the running server
 * (a control socket).  Useful later, but the lock makes the offline path
 * safe and simple today.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"

#include <getopt.h>
#include <stdio.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: rewind create [--store DIR] NAME --size SIZE "
		   "[--block-size N]\n\n"
		   "Creates an empty disk NAME of SIZE bytes (suffixes K, M, G, T: "
		   "512M, 20G).\nNAME: letters, digits, '.', '_', '-' (1..64, not "
		   "starting with '.').\nThe block size (power of two, 512..1M, "
		   "default 4096) is the unit of history.\nThe store must not "
		   "be served while disks are created.\n");
}

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

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'z' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL, *size_s = NULL, *bs_s = NULL;
	uint64_t size = 0, bs = IX_BLOCK_SIZE_DEFAULT;
	struct ix *ix = NULL;
	struct ix_disk d;
	int c, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:z:b:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'z': size_s = optarg; break;
		case 'b': bs_s = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("create", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("create", "expected one disk NAME");
	const char *name = argv[optind];
	if (!size_s)
		return cli_usage_error("create", "--size is required");
	if (rw_parse_size(size_s, &size))
		return cli_usage_error("create", "%s", rw_err_msg());
	if (bs_s && rw_parse_size(bs_s, &bs))
		return cli_usage_error("create", "%s", rw_err_msg());
	if (bs > UINT32_MAX)
		return cli_usage_error("create", "block size too large");
	if (!ix_name_valid(name))
		return cli_usage_error("create", "invalid disk name '%s' (use "
				       "letters, digits, '.', '_', '-'; at most "
				       "%d)", name, IX_NAME_MAX);
	store = cli_store_dir(store);
	if (open_locked("create", store, &ix))
		return 1;
	rw_err_clear();
	err = ix_disk_create(ix, name, size, (uint32_t)bs, NULL, &d);
	if (err) {
		cli_fail(err, "cannot create disk '%s' in store '%s'", name, store);
		ix_close(ix);
		return 1;
	}
	char sz[32];
	printf("created disk '%s' (id %u, %s, block size %u) in store '%s'\n",
	       d.name, d.id, rw_fmt_size(d.size, sz, sizeof(sz)), d.block_size,
	       store);
	ix_close(ix);
	return 0;
}

CLI_COMMAND(create, "create", "create an empty disk of a given size", cmd_create)
