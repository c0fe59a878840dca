/*
 * cmd_export.c — `rewind export`: serve a disk as-of a moment, read-only,
 * over NBD, with no copy ("instant restore").
 *
 * Every read is answered by an as-of view (restore/rs.h): index lookups,
 * journal records and base, so the first byte is available as soon as the
 * socket is.  One process serves one point in time under the disk's own
 * export name; several points are several processes on several sockets —
 * simpler to reason about (each stops on its own) than NAME@WHEN names,
 * which would put user time syntax into export names.  The store is
 * opened read-only: exports run beside `rewind serve` and compaction.
 *
 * Capture's worker threads call the read callback concurrently; one
 * shared as-of reader (restore/asof.c) serves them all: a block map built
 * in the background once, base read in large runs, and decoded records
 * shared between threads, so a record is decoded once however many reads
 * touch it.  (LMDB read transactions may move between threads: the index
 * uses MDB_NOTLS.)
 */
#include "cli/cli.h"
#include "cli/control.h"
#include "capture/cap.h"
#include "common/rw.h"
#include "index/ix.h"
#include "restore/rs.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool {
	struct rs_asof *x;
	struct ix *ix;
	struct ix_disk d;
	uint64_t seq;
};

/*
 * A concurrent compaction may move the horizon past this export's point.
 * It makes the new horizon durable in the index before it touches base,
 * so a read that sees the horizon at or below the point both before and
 * after it did not overlap a fold: checking twice makes every answer
 * either exact or an error, never silently wrong.
 */
static int horizon_ok(struct pool *p)
{
	struct ix_disk d;
	int err = ix_disk_get(p->ix, p->d.name, &d);

	if (err)
		return err;
	if (d.horizon_seq > p->seq)
		return rw_err_set(RW_ERANGE, "disk '%s' was compacted past seq %"
				  PRIu64 " (now restorable from seq %" PRIu64
				  "); this export can no longer be served",
				  p->d.name, p->seq, d.horizon_seq);
	return 0;
}

static int pool_read(void *arg, void *buf, uint64_t off, uint32_t len)
{
	struct pool *p = arg;
	int err = horizon_ok(p);

	if (!err)
		err = rs_asof_read(p->x, off, len, buf);
	if (!err)
		err = horizon_ok(p);
	if (err)
		rw_log(RW_LOG_ERROR, "export of disk '%s': read of [%" PRIu64
		       ", +%u) failed: %s", p->d.name, off, len,
		       *rw_err_msg() ? rw_err_msg() : rw_strerror(err));
	return err;
}

/* Block status (base:allocation): holes and zeroes as-of the point, with
 * the same horizon check around it as a read. */
static int pool_extents(void *arg, uint64_t off, uint64_t len,
			int (*fn)(void *fa, uint64_t off, uint64_t len,
				  unsigned flags),
			void *fa)
{
	struct pool *p = arg;
	int err = horizon_ok(p);

	if (!err)
		err = rs_asof_extents(p->x, off, len, fn, fa);
	if (err >= 0) {
		int e2 = horizon_ok(p);
		if (e2)
			err = e2;
	}
	return err;
}

static struct cap_server *volatile the_server;

static void on_signal(int sig)
{
	(void)sig;
	cap_server_stop(the_server);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind export [--store DIR] NAME --at WHEN [--socket PATH | --listen HOST:PORT]\n\n"
		"Serve disk NAME as it was at WHEN, read-only, over NBD, with no copy.\n"
		"The export is named NAME; writes, trims and zeroes get EPERM.  Runs in\n"
		"the foreground until SIGINT/SIGTERM.  To export several moments, run\n"
		"one export per moment, each on its own socket.\n\n"
		"  --at WHEN         ISO 8601, @EPOCH_SECONDS, '10m ago', now, seq:N or mark:LABEL\n"
		"  --socket PATH     unix socket (default STORE/export-NAME-SEQ.sock)\n"
		"  --listen H:P      TCP address instead (e.g. 127.0.0.1:10810)\n");
}

static int cmd_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "at", required_argument, NULL, 'a' },
		{ "socket", required_argument, NULL, 'S' },
		{ "listen", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *at = NULL, *sock = NULL, *listen = NULL;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:a:S:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'a': at = optarg; break;
		case 'S': sock = optarg; break;
		case 'l': listen = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("export", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("export", "expected one disk NAME");
	if (!at)
		return cli_usage_error("export", "--at WHEN is required");
	if (listen && !strchr(listen, ':'))
		return cli_usage_error("export", "invalid --listen '%s' (use "
				       "HOST:PORT)", listen);
	const char *name = argv[optind];
	struct rw_when w;
	if ((err = rw_parse_when(at, rw_clock_ns(), &w)))
		return cli_fail(err, "--at");

	struct pool p = { 0 };
	char sockbuf[4096];
	uint64_t ts;
	store = cli_store_dir(store);
	/* As restore: with a server running, make its index current first;
	 * without one, recover a store a power loss left unclean and catch
	 * the index up.  Then let go of the lock: an export runs for long and
	 * must not keep a server from starting. */
	bool locked;
	if ((err = cli_open_store_for_read(store, &p.ix, &locked))) {
		rc = cli_fail(err, "cannot export '%s'", name);
		goto out;
	}
	if (locked) {
		ix_close(p.ix);
		p.ix = NULL;
		err = ix_open(&p.ix, store, IX_RDONLY);
	}
	if (err) {
		rc = cli_fail(err, "cannot open store '%s'", store);
		goto out;
	}
	if ((err = ix_disk_get(p.ix, name, &p.d))) {
		rc = cli_fail(err, "disk '%s'", name);
		goto out;
	}
	if ((err = rs_resolve(p.ix, &p.d, &w, &p.seq, &ts))) {
		rc = cli_fail(err, "cannot export '%s' as of '%s'", name, at);
		goto out;
	}
	if ((err = rs_asof_open(&p.x, p.ix, &p.d, p.seq, 0))) {
		rc = cli_fail(err, "cannot export '%s'", name);
		goto out;
	}
	if (!sock && !listen) {
		snprintf(sockbuf, sizeof(sockbuf), "%s/export-%s-%" PRIu64 ".sock",
			 store, name, p.seq);
		sock = sockbuf;
	}
	struct cap_ro_export ex = { p.d.name, p.d.size, p.d.block_size,
				    pool_read, pool_extents, &p };
	struct cap_server_opts o;
	cap_server_opts_default(&o);
	o.store_dir = store;
	o.ro_exports = &ex;
	o.n_ro_exports = 1;
	o.socket_path = sock ? sock : "";
	o.listen = listen;
	rw_log_timestamps(true);

	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct cap_server *s = NULL;
	rw_err_clear();
	err = cap_server_open(&s, &o);
	if (err) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		rc = cli_fail(err, "cannot export disk '%s'", name);
		goto out;
	}
	the_server = s;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	char tb[40];
	if (sock)
		printf("exporting disk '%s' as of %s (seq %" PRIu64 "), read-only: "
		       "nbd+unix:///%s?socket=%s\n", name, cli_fmt_time(ts, tb),
		       p.seq, name, sock);
	else
		printf("exporting disk '%s' as of %s (seq %" PRIu64 "), read-only: "
		       "nbd://%s/%s\n", name, cli_fmt_time(ts, tb), p.seq, listen,
		       name);
	fflush(stdout);
	err = cap_server_run(s);
	the_server = NULL;
	int cerr = cap_server_close(s);
	rc = err || cerr ? cli_fail(err ? err : cerr, "export of disk '%s'", name) : 0;
out:
	if (p.x) {
		uint64_t loads, views;
		rs_asof_counters(p.x, &loads, &views);
		rw_log(RW_LOG_INFO, "export of disk '%s' as of seq %" PRIu64
		       ": %" PRIu64 " journal records decoded, %" PRIu64
		       " reads through views (map %s)", name, p.seq, loads, views,
		       rs_asof_mapped(p.x, false) ? "used" : "not built");
	}
	rs_asof_close(p.x);
	ix_close(p.ix);
	return rc;
}

CLI_COMMAND(export, "export", "serve a disk as it was at a moment, read-only over NBD", cmd_export)
