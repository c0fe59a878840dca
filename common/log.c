/*
 * log.c — the one place that writes diagnostics to stderr.
 *
 * Only the CLI and the server loop call it.  A line is assembled in one
 * buffer and written with a single write(2) so concurrent threads never
 * interleave inside a line (stdio locking would also do, but a single
 * write also keeps lines whole when several processes share stderr).
 */
#include "rw.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum rw_log_level log_level = RW_LOG_INFO;
static bool log_ts;

void rw_log_set_level(enum rw_log_level lvl)
{
	log_level = lvl;
}

void rw_log_timestamps(bool on)
{
	log_ts = on;
}

void rw_log(enum rw_log_level lvl, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[2048];
	size_t n = 0;
	va_list ap;

	if (lvl > log_level)
		return;
	if (log_ts) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ",
				      ts.tv_nsec / 1000000);
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "rewind: %s: ",
			      names[lvl]);
	va_start(ap, fmt);
	if (n < sizeof(line)) {
		int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (k > 0)
			n += (size_t)k;
	}
	va_end(ap);
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}
