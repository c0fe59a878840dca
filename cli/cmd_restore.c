/*
 * cmd_restore.c — `rewind restore`: write a disk as-of a moment to a file.
 *
 * Opens the store with its lock when it can (no server running): then the
 * index is caught up first and head may be used for a backward restore;
 * a store whose journal lost records its index names (a power loss) is
 * recovered first, as `rewind serve` would.
 * When a server holds the lock the store is opened read-only and the
 * restore goes forward from base over indexed records, which is exact for
 * any point up to when the command started.
 */
#include "capture/cap.h"
#include "cli/cli.h"
#include "cli/control.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind restore [--store DIR] NAME --at WHEN --out FILE [--force] [--json]\n\n"
		"Write disk NAME as it was at WHEN to FILE, a sparse raw image.\n\n"
		"  --at WHEN   ISO 8601 ('2026-11-22T10:15:03.250Z', '2026-11-22 10:15:03'),\n"
		"              @EPOCH_SECONDS, '10m ago', now, seq:N or mark:LABEL\n"
		"  --out FILE  the image to write (not replaced unless --force)\n"
		"  --force     replace FILE if it exists\n"
		"  --json      print the result as JSON\n\n"
		"Works while 'rewind serve' runs.  A progress bar is shown on a terminal.\n");
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
	cli_progress_update(arg, done > total ? total : done);
}

/*
 * True when some disk's journal ends before the newest record its index
 * names (a power loss took records the index had taken in; see
 * capture/server.c, repair_lost_tail): head.img and the index then show
 * writes the journal no longer has, until a server recovers the store.
 * Reads record headers from the segment holding that record only.
 * Returns 1, 0, or error.
 */
static int lost_tail(struct ix *ix)
{
	struct ix_disk *list = NULL;
	int n = ix_disk_list(ix, &list), lost = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n && !lost; i++) {
		struct jr_reader *r = NULL;
		struct jr_rec rec;
		char jdir[4096];
		uint64_t want = list[i].last_indexed_seq;

		if (want <= list[i].base_seq)
			continue;
		int err = ix_disk_path(ix, list[i].name, "journal", jdir,
				       sizeof(jdir));
		if (!err)
			err = jr_reader_open(&r, jdir, JR_READ_HEADERS);
		if (!err)
			err = jr_reader_seek(r, want);
		if (!err) {
			int k = jr_reader_next(r, &rec, NULL, NULL);
			if (k < 0)
				err = k;
			else if (k == 0 || rec.seq != want)
				lost = 1;
		}
		jr_reader_close(r);
		if (err)
			lost = err;
	}
	free(list);
	return lost;
}

/* Recovers a store a crash left unclean as `rewind serve` would, then
 * closes it cleanly.  0 or error. */
static int recover_store(const char *store)
{
	struct cap_server *s = NULL;
	int err = cli_open_offline(&s, store);

	return err ? err : cap_server_close(s);
}

int cli_open_store_for_read(const char *store, struct ix **ix, bool *locked)
{
	int err = ix_open(ix, store, IX_LOCK);

	/* A journal that lost its tail is repaired before anything reads
	 * head.img or the index (the repair needs the lock too). */
	if (!err) {
		int lost = lost_tail(*ix);
		if (lost == 1) {
			ix_close(*ix);
			*ix = NULL;
			rw_log(RW_LOG_INFO, "store '%s': a journal ends before "
			       "records its index names (a power loss): "
			       "recovering the store first", store);
			if ((err = recover_store(store)))
				return err;
			err = ix_open(ix, store, IX_LOCK);
		} else if (lost < 0) {
			ix_close(*ix);
			*ix = NULL;
			return lost;
		}
	}

	*locked = false;
	if (err == RW_EBUSY) {
		/*
		 * A server holds the store.  Its index trails its journal by a
		 * housekeeping interval; have it index everything it wrote, so
		 * a point resolved now covers every write acknowledged before
		 * this command started (DESIGN.md invariant 5).
		 */
		rw_err_clear();
		err = cli_control_index(store);
		if (err < 0)
			return err;
		/*
		 * err > 0: the lock holder is not a server (another restore,
		 * a reindex): no guest writes are being acknowledged, so the
		 * index as it stands is exact for every point it holds.
		 */
		return ix_open(ix, store, IX_RDONLY);
	}
	if (err)
		return err;
	*locked = true;
	err = ix_catch_up(*ix, NULL, NULL);
	if (err < 0) {
		ix_close(*ix);
		*ix = NULL;
		return err;
	}
	return 0;
}

static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "at", required_argument, NULL, 'a' },
		{ "out", required_argument, NULL, 'o' },
		{ "force", no_argument, NULL, 'f' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *at = NULL, *outp = NULL;
	bool force = false, json = false, locked;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:a:o:fjh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'a': at = optarg; break;
		case 'o': outp = optarg; break;
		case 'f': force = true; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("restore", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("restore", "expected one disk NAME");
	if (!at || !outp)
		return cli_usage_error("restore", "--at WHEN and --out FILE are required");
	const char *name = argv[optind];
	struct rw_when w;
	if ((err = rw_parse_when(at, rw_clock_ns(), &w)))
		return cli_fail(err, "--at");

	struct ix *ix = NULL;
	store = cli_store_dir(store);
	if ((err = cli_open_store_for_read(store, &ix, &locked)))
		return cli_fail(err, "cannot open store '%s'", store);
	struct ix_disk d;
	if ((err = ix_disk_get(ix, name, &d))) {
		rc = cli_fail(err, "disk '%s'", name);
		goto out;
	}
	uint64_t seq, ts;
	if ((err = rs_resolve(ix, &d, &w, &seq, &ts))) {
		rc = cli_fail(err, "cannot restore '%s' as of '%s'", name, at);
		goto out;
	}
	struct cli_progress pb;
	struct rs_restore_stats st;
	uint64_t t0 = rw_mono_ns();
	cli_progress_start(&pb, "restore", d.size);
	err = rs_restore_file(ix, &d, seq, outp,
			      (locked ? RS_ALLOW_BACKWARD : 0u) |
			      (force ? RS_OVERWRITE : 0u), progress, &pb, &st);
	cli_progress_done(&pb);
	if (err) {
		rc = cli_fail(err, "cannot restore disk '%s' to '%s'", name, outp);
		goto out;
	}
	double secs = (double)(rw_mono_ns() - t0) / 1e9;
	char tb[40], a[32];
	if (json) {
		printf("{\"disk\":");
		cli_json_str(stdout, name);
		printf(",\"out\":");
		cli_json_str(stdout, outp);
		printf(",\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64
		       ",\"direction\":\"%s\",\"blocks_rebuilt\":%" PRIu64
		       ",\"bytes_copied\":%" PRIu64 ",\"bytes_written\":%" PRIu64
		       ",\"seconds\":%.3f}\n", seq, ts,
		       st.backward ? "backward" : "forward", st.blocks_fixed,
		       st.bytes_copied, st.bytes_written, secs);
	} else {
		printf("restored disk '%s' as of %s (seq %" PRIu64 ") to '%s': "
		       "%s of data, %" PRIu64 " blocks rebuilt from the journal "
		       "(%s from %s), %.2fs\n", name, cli_fmt_time(ts, tb), seq,
		       outp, rw_fmt_size(st.bytes_written, a, sizeof(a)),
		       st.blocks_fixed, st.backward ? "backward" : "forward",
		       st.backward ? "head" : "base", secs);
	}
	rc = 0;
out:
	ix_close(ix);
	return rc;
}

CLI_COMMAND(restore, "restore", "write a disk as it was at a moment to a sparse image", cmd_restore)
