/*
 * cmd_serve.c — `rewind serve`: serve every disk of a store over NBD.
 *
 * How: parse options into cap_server_opts, open the server (which locks
 * and recovers the store), install SIGTERM/SIGINT handlers that only call
 * the async-signal-safe cap_server_stop(), run in the foreground, then
 * close (flush journals, index, fsync heads, record head_synced_seq).
 * Logs go to stderr with timestamps.  Exit 0 after a clean stop, 1 when
 * the store could not be opened or the shutdown could not make everything
 * durable.
 *
 * Rejected alternative: daemonising (fork, pidfile).  Service managers and
 * tests both want a foreground process they can signal by PID.
 */
#include "capture/cap.h"
#include "cli/cli.h"
#include "cli/control.h"
#include "common/rw.h"
#include "journal/jr.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct cap_server *volatile the_server;

/* Scheduled compaction (cli/serve_compact.c). */
struct cli_compact_job;
int cli_compact_job_start(struct cli_compact_job **out, const char *store,
			  const char *retain, const char *max_journal,
			  const char *over_budget, uint64_t every_ns);
void cli_compact_job_stop(struct cli_compact_job *j);

static void on_signal(int sig)
{
	(void)sig;
	cap_server_stop(the_server);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind serve [--store DIR] [--socket PATH] "
		"[--listen HOST:PORT] [OPTIONS]\n\n"
		"Serves every disk of the store as an NBD export named after "
		"the disk and\njournals every write.  Runs in the foreground; "
		"SIGTERM or SIGINT stops it\ncleanly (journals flushed, heads "
		"synced).\n\n"
		"  --socket PATH       unix socket (default STORE/rewind.sock; "
		"'' for none)\n"
		"  --listen HOST:PORT  also listen on TCP, e.g. 127.0.0.1:10809\n"
		"  --max-conns N       connection cap (default 100)\n"
		"  --handshake-timeout DURATION   (default 10s)\n"
		"  --workers N         request workers per connection (default 4)\n"
		"  --zstd-level N      0 disables compression (default %d)\n"
		"  --skip-unchanged    acknowledge a write of bytes the disk already\n"
		"                      holds without journaling it (a block copy onto\n"
		"                      the disk then adds no history; costs a read\n"
		"                      per write)\n"
		"  --head-sync DURATION   head.img fsync period (default 5s)\n"
		"  --retain DURATION   with --compact-every: compact history older\n"
		"                      than DURATION on a schedule (rewind compact)\n"
		"  --compact-every DURATION   how often (e.g. 10m)\n"
		"  --metrics HOST:PORT serve GET /metrics (Prometheus) and /healthz\n"
		"                      over HTTP, e.g. 127.0.0.1:9464 (loopback only\n"
		"                      unless --metrics-public)\n"
		"  --metrics-public    allow a non-loopback --metrics address\n"
		"  --lag-warn DURATION, --lag-crit DURATION   capture lag thresholds\n"
		"                      (logged; crit makes /healthz answer 503)\n"
		"  --history-warn PCT%% warn when compaction left less history than\n"
		"                      PCT%% of --retain\n"
		"  --max-journal SIZE  journal budget per disk (e.g. 50G), with:\n"
		"  --over-budget compact|refuse   what happens above it: 'compact'\n"
		"                      lets the scheduled compaction fold past\n"
		"                      --retain until the journal fits; 'refuse'\n"
		"                      keeps all history and answers writes with\n"
		"                      ENOSPC until a compaction frees space\n"
		"  --verbose           log every connection\n\n"
		"Clients: nbd+unix:///DISK?socket=STORE/rewind.sock, "
		"nbd://127.0.0.1:10809/DISK\n", JR_ZSTD_LEVEL_DEFAULT);
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "socket", required_argument, NULL, 'u' },
		{ "listen", required_argument, NULL, 'l' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "handshake-timeout", required_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "zstd-level", required_argument, NULL, 'z' },
		{ "skip-unchanged", no_argument, NULL, 'K' },
		{ "head-sync", required_argument, NULL, 'y' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "retain", required_argument, NULL, 'R' },
		{ "compact-every", required_argument, NULL, 'E' },
		{ "metrics", required_argument, NULL, 'M' },
		{ "metrics-public", no_argument, NULL, 'P' },
		{ "lag-warn", required_argument, NULL, 'W' },
		{ "lag-crit", required_argument, NULL, 'C' },
		{ "history-warn", required_argument, NULL, 'H' },
		{ "max-journal", required_argument, NULL, 'J' },
		{ "over-budget", required_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cap_server_opts o;
	struct cap_server *s = NULL;
	unsigned v;
	int c, err;
	const char *retain = NULL, *max_journal = NULL, *over_budget = NULL;
	uint64_t retain_ns = 0, every_ns = 0;
	struct cli_compact_job *job = NULL;

	cap_server_opts_default(&o);
	o.repair_head = cli_repair_head;
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:u:l:vh", opts, NULL)) != -1) {
		switch (c) {
		case 's': o.store_dir = optarg; break;
		case 'u': o.socket_path = optarg; break;
		case 'l': o.listen = optarg; break;
		case 'm':
			if (parse_uint(optarg, 100000, &v) || !v)
				return cli_usage_error("serve", "invalid "
						       "--max-conns '%s'", optarg);
			o.max_conns = v;
			break;
		case 't':
			if (rw_parse_duration(optarg, &o.handshake_timeout_ns) ||
			    !o.handshake_timeout_ns)
				return cli_usage_error("serve", "invalid "
						       "--handshake-timeout '%s'",
						       optarg);
			break;
		case 'w':
			if (parse_uint(optarg, 64, &v) || !v)
				return cli_usage_error("serve", "invalid "
						       "--workers '%s' (1..64)",
						       optarg);
			o.workers = v;
			break;
		case 'K':
			o.skip_unchanged = true;
			break;
		case 'z':
			if (parse_uint(optarg, 19, &v))
				return cli_usage_error("serve", "invalid "
						       "--zstd-level '%s' (0..19)",
						       optarg);
			o.zstd_level = (int)v;
			break;
		case 'y':
			if (rw_parse_duration(optarg, &o.head_sync_interval_ns) ||
			    !o.head_sync_interval_ns)
				return cli_usage_error("serve", "invalid "
						       "--head-sync '%s'", optarg);
			break;
		case 'v': rw_log_set_level(RW_LOG_DEBUG); break;
		case 'R':
			retain = optarg;
			if (rw_parse_duration(optarg, &retain_ns))
				return cli_usage_error("serve", "invalid --retain '%s'", optarg);
			break;
		case 'E':
			if (rw_parse_duration(optarg, &every_ns) || !every_ns)
				return cli_usage_error("serve", "invalid --compact-every '%s'", optarg);
			break;
		case 'M': o.metrics_addr = optarg; break;
		case 'P': o.metrics_public = true; break;
		case 'W':
			if (rw_parse_duration(optarg, &o.lag_warn_ns) || !o.lag_warn_ns)
				return cli_usage_error("serve", "invalid --lag-warn '%s'", optarg);
			break;
		case 'C':
			if (rw_parse_duration(optarg, &o.lag_crit_ns) || !o.lag_crit_ns)
				return cli_usage_error("serve", "invalid --lag-crit '%s'", optarg);
			break;
		case 'H': {
			char *end;
			unsigned long pct = strtoul(optarg, &end, 10);
			if (end == optarg || (*end && strcmp(end, "%")) || !pct || pct > 100)
				return cli_usage_error("serve", "invalid --history-warn '%s' (1%%..100%%)", optarg);
			o.history_warn_pct = (unsigned)pct;
			break;
		}
		case 'J':
			max_journal = optarg;
			if (rw_parse_size(optarg, &o.max_journal) || !o.max_journal)
				return cli_usage_error("serve", "invalid --max-journal '%s'", optarg);
			break;
		case 'O':
			over_budget = optarg;
			if (strcmp(optarg, "refuse") && strcmp(optarg, "compact"))
				return cli_usage_error("serve", "--over-budget is 'compact' or 'refuse'");
			o.refuse_over_budget = strcmp(optarg, "refuse") == 0;
			break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("serve", "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error("serve", "unexpected argument '%s'",
				       argv[optind]);
	if (!retain != !every_ns)
		return cli_usage_error("serve", "--retain and --compact-every go together");
	o.retain_ns = retain_ns;
	if (o.history_warn_pct && !retain)
		return cli_usage_error("serve", "--history-warn needs --retain");
	/* The policy over budget is the operator's choice, never implied. */
	if (!max_journal != !over_budget)
		return cli_usage_error("serve", "--max-journal and --over-budget go together");
	if (over_budget && !o.refuse_over_budget && !retain)
		return cli_usage_error("serve", "--over-budget compact needs the scheduled "
				       "compaction (--retain and --compact-every)");
	if (o.lag_warn_ns && o.lag_crit_ns && o.lag_warn_ns > o.lag_crit_ns)
		return cli_usage_error("serve", "--lag-warn is above --lag-crit");
	if (o.listen && !strchr(o.listen, ':'))
		return cli_usage_error("serve", "invalid --listen '%s' (use "
				       "HOST:PORT, e.g. 127.0.0.1:10809)", o.listen);
	o.store_dir = cli_store_dir(o.store_dir);
	rw_log_timestamps(true);

	/* Block the signals until the handler has a server to stop. */
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

	rw_err_clear();
	err = cap_server_open(&s, &o);
	if (err) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		return cli_fail(err, "cannot serve store '%s'", o.store_dir);
	}
	the_server = s;
	/* Threads the server started inherit the blocked mask, so signals
	 * land on this thread, which runs the accept loop. */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (retain && (err = cli_compact_job_start(&job, o.store_dir, retain,
						   max_journal, over_budget, every_ns)))
		rw_log(RW_LOG_ERROR, "cannot start scheduled compaction: %s", rw_strerror(err));
	else if (retain)
		rw_log(RW_LOG_INFO, "scheduled compaction: history older than %s, "
		       "every %.0f s", retain, (double)every_ns / 1e9);

	struct cli_control *ctl = NULL;
	rw_err_clear();
	if ((err = cli_control_start(&ctl, s, o.store_dir)))
		rw_log(RW_LOG_WARN, "no control socket (rollback while serving "
		       "is unavailable): %s", *rw_err_msg() ? rw_err_msg() :
		       rw_strerror(err));
	if (*cap_server_metrics_address(s))
		rw_log(RW_LOG_INFO, "metrics on http://%s/metrics and /healthz",
		       cap_server_metrics_address(s));
	rw_err_clear();
	err = cap_server_run(s);
	cli_control_stop(ctl);
	cli_compact_job_stop(job);
	if (err)
		cli_fail(err, "serving store '%s'", o.store_dir);
	the_server = NULL;
	rw_err_clear();
	int cerr = cap_server_close(s);
	if (cerr) {
		rw_log(RW_LOG_ERROR, "store '%s' was not closed cleanly: %s",
		       o.store_dir, rw_strerror(cerr));
		return 1;
	}
	rw_log(RW_LOG_INFO, "stopped; store '%s' closed cleanly", o.store_dir);
	return err ? 1 : 0;
}

CLI_COMMAND(serve, "serve", "serve the store's disks over NBD, journaling "
	    "every write", cmd_serve)
