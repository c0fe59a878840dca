/*
 * cli.h — the rewind command line: subcommand registration and the helpers
 * every subcommand shares (store lookup, JSON output, progress bars).
 *
 * Each subcommand lives in its own cli/cmd_*.c and registers itself with
 * CLI_COMMAND(); main.c dispatches.  A command's run function gets argv
 * starting at its own name (so getopt_long works as usual), prints its
 * report to stdout, diagnostics to stderr through rw_log(), and returns
 * the process exit status: 0 success, 1 failure, 2 usage error.
 * Every command answers --help with its usage on stdout and exit 0.
 *
 * Library code never prints; this layer turns rw_strerror()/rw_err_msg()
 * into messages with cli_fail().
 */
#ifndef RW_CLI_H
#define RW_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct cli_cmd {
	const char *name;
	const char *summary;  /* one line for `rewind --help` */
	int (*run)(int argc, char **argv);
	struct cli_cmd *next;
};

void cli_register(struct cli_cmd *cmd);

#define CLI_COMMAND(ident, cname, csummary, fn)                              \
	static struct cli_cmd cli_cmd_##ident = { cname, csummary, fn, NULL }; \
	__attribute__((constructor)) static void cli_reg_##ident(void)       \
	{                                                                    \
		cli_register(&cli_cmd_##ident);                              \
	}

/*
 * The store directory: opt when given (--store), else $REWIND_STORE, else
 * "./rewind-store".  Returns a pointer owned by the caller's opt or a
 * static string.
 */
const char *cli_store_dir(const char *opt);

/*
 * Prints "rewind: error: <what>: <detail or strerror>" for error err and
 * returns 1 (the failure exit status).  When rw_err_msg() is set it is the
 * detail, else rw_strerror(err).
 */
int cli_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "rewind CMD: <msg>\nTry 'rewind CMD --help'." and returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct ix;
/*
 * Opens the store for a reader (cmd_restore.c).  Without a server it takes
 * the store's lock (*locked true), recovers the store first when a power
 * loss left a journal shorter than its index (as `rewind serve` would),
 * and catches the index up; with a server running it has the server index
 * everything it wrote and opens the index read-only (*locked false).
 * 0 and *ix (ix_close() it), or error.
 */
int cli_open_store_for_read(const char *store, struct ix **ix, bool *locked);

/* Writes s as a JSON string literal (with quotes) to f. */
void cli_json_str(FILE *f, const char *s);

/* Formats ns since the epoch as ISO 8601 UTC with microseconds into buf[40]. */
char *cli_fmt_time(uint64_t ns, char buf[40]);

/*
 * Progress bar on stderr, shown only when stderr is a terminal: label,
 * percentage, rate and ETA.  Updates are throttled to 10 per second.
 */
struct cli_progress {
	const char *label;
	uint64_t total;
	uint64_t start_ns;
	uint64_t last_ns;
	bool tty;
};
void cli_progress_start(struct cli_progress *p, const char *label, uint64_t total);
void cli_progress_update(struct cli_progress *p, uint64_t done);
void cli_progress_done(struct cli_progress *p);

#endif
