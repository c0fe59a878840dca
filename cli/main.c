/*
 * main.c — the rewind command: dispatch to self-registered subcommands, and
 * the helpers of cli.h.
 *
 * Subcommands register from constructors (CLI_COMMAND) rather than from a
 * central table so that adding one touches exactly one file.  This works
 * because cli/ objects are linked directly, never through an archive that
 * would drop unreferenced members.
 */
#include "cli/cli.h"
#include "common/rw.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct cli_cmd *commands;

void cli_register(struct cli_cmd *cmd)
{
	struct cli_cmd **pp = &commands;

	while (*pp && strcmp((*pp)->name, cmd->name) < 0)
		pp = &(*pp)->next;
	cmd->next = *pp;
	*pp = cmd;
}

const char *cli_store_dir(const char *opt)
{
	const char *env = getenv("REWIND_STORE");

	if (opt && *opt)
		return opt;
	if (env && *env)
		return env;
	return "./rewind-store";
}

int cli_fail(int err, const char *fmt, ...)
{
	char what[1024];
	va_list ap;
	const char *detail = rw_err_msg();

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (detail && *detail)
		rw_log(RW_LOG_ERROR, "%s: %s", what, detail);
	else
		rw_log(RW_LOG_ERROR, "%s: %s", what, rw_strerror(err));
	return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "rewind %s: %s\nTry 'rewind %s --help'.\n", cmd, msg, cmd);
	return 2;
}

void cli_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\t': fputs("\\t", f); break;
		case '\r': fputs("\\r", f); break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

char *cli_fmt_time(uint64_t ns, char buf[40])
{
	time_t s = (time_t)(ns / 1000000000ull);
	struct tm tm;

	gmtime_r(&s, &tm);
	size_t n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%06lluZ",
		 (unsigned long long)(ns % 1000000000ull / 1000));
	return buf;
}

void cli_progress_start(struct cli_progress *p, const char *label, uint64_t total)
{
	p->label = label;
	p->total = total;
	p->start_ns = rw_mono_ns();
	p->last_ns = 0;
	p->tty = isatty(STDERR_FILENO);
}

void cli_progress_update(struct cli_progress *p, uint64_t done)
{
	uint64_t now = rw_mono_ns();
	char rate[32], eta[32];

	if (!p->tty || (now - p->last_ns < 100000000ull && done < p->total))
		return;
	p->last_ns = now;
	double secs = (double)(now - p->start_ns) / 1e9;
	double frac = p->total ? (double)done / (double)p->total : 1.0;
	double bps = secs > 0 ? (double)done / secs : 0;
	int width = 30, fill = (int)(frac * width);
	rw_fmt_size((uint64_t)bps, rate, sizeof(rate));
	if (bps > 0 && done < p->total)
		snprintf(eta, sizeof(eta), "%.0fs", (double)(p->total - done) / bps);
	else
		snprintf(eta, sizeof(eta), "-");
	fprintf(stderr, "\r%s [%.*s%*s] %5.1f%% %s/s ETA %s ", p->label, fill,
		"##############################", width - fill, "",
		frac * 100, rate, eta);
	fflush(stderr);
}

void cli_progress_done(struct cli_progress *p)
{
	if (!p->tty)
		return;
	cli_progress_update(p, p->total);
	fputc('\n', stderr);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rewind COMMAND [OPTIONS] [ARGS]\n\n"
		   "Continuous data protection for virtual-machine disks.\n\n"
		   "Commands:\n");
	for (struct cli_cmd *c = commands; c; c = c->next)
		fprintf(f, "  %-10s %s\n", c->name, c->summary);
	fprintf(f, "\nEvery command takes --help.  The store is --store DIR, "
		   "else $REWIND_STORE, else ./rewind-store.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("rewind 0.1\n");
		return 0;
	}
	int err = rw_fault_from_env(NULL);
	if (err)
		return cli_fail(err, "REWIND_FAULTS");
	for (struct cli_cmd *c = commands; c; c = c->next)
		if (!strcmp(c->name, argv[1]))
			return c->run(argc - 1, argv + 1);
	fprintf(stderr, "rewind: unknown command '%s' (see rewind --help)\n", argv[1]);
	return 2;
}
