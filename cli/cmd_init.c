/*
 * cmd_init.c — `rewind init`: create a new, empty store.
 *
 * How: resolve the store directory (--store, $REWIND_STORE, ./rewind-store)
 * and hand it to ix_store_init(), which creates the directory layout and
 * the store identity.  An existing store is refused rather than reused, so
 * a typo can never reset anyone's history.
 *
 * Rejected alternative: `init` that silently succeeds on an existing
 * store (idempotent).  Convenient for scripts, but it hides a wrong path;
 * scripts can test for STORE/rewind.store themselves.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"

#include <getopt.h>
#include <stdio.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: rewind init [--store DIR]\n\n"
		   "Creates an empty store in DIR (default $REWIND_STORE, else "
		   "./rewind-store).\nRefuses a directory that already holds a "
		   "store or other files.\n");
}

static int cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("init", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("init", "unexpected argument '%s'",
				       argv[optind]);
	store = cli_store_dir(store);
	rw_err_clear();
	int err = ix_store_init(store);
	if (err == RW_EEXIST)
		return cli_fail(err, "cannot create store '%s' (it already "
				"exists)", store);
	if (err)
		return cli_fail(err, "cannot create store '%s'", store);
	printf("created store '%s'\n", store);
	return 0;
}

CLI_COMMAND(init, "init", "create an empty store", cmd_init)
