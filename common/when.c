/*
 * when.c — parsing the points in time users give to --at.
 *
 * Hand-written rather than strptime(3): strptime has no fractional seconds
 * and no "+01:00" zones, and silently accepts trailing garbage unless
 * checked with care; all three matter when the answer decides which bytes
 * a restored disk holds.  Local times go through mktime() with
 * tm_isdst = -1 so the TZ rules of that date apply.
 */
#include "rw.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char when_forms[] =
	"use ISO 8601 (2026-11-22T10:15:03.250Z, '2026-11-22 10:15:03'), "
	"@EPOCH_SECONDS, 'N{s,m,h,d} ago', now, seq:N or mark:LABEL";

/* Reads exactly n digits; returns -1 when they are not there. */
static int digits(const char **p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return v;
}

/* Parses ".ddddddddd" (1..9 digits) into nanoseconds; 0 when absent. */
static int fraction(const char **p, uint64_t *ns)
{
	uint64_t v = 0;
	int n = 0;

	*ns = 0;
	if (**p != '.' && **p != ',')
		return 0;
	(*p)++;
	while (isdigit((unsigned char)**p)) {
		if (n < 9) {
			v = v * 10 + (uint64_t)(**p - '0');
			n++;
		}
		(*p)++;
	}
	if (!n)
		return -1;
	while (n++ < 9)
		v *= 10;
	*ns = v;
	return 0;
}

static int parse_iso(const char *s, struct rw_when *out)
{
	const char *p = s;
	struct tm tm = { 0 };
	uint64_t frac = 0;
	int y, mo, d, h = 0, mi = 0, sec = 0;

	if ((y = digits(&p, 4)) < 0 || *p++ != '-' || (mo = digits(&p, 2)) < 0 ||
	    *p++ != '-' || (d = digits(&p, 2)) < 0)
		return -1;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if ((h = digits(&p, 2)) < 0 || *p++ != ':' ||
		    (mi = digits(&p, 2)) < 0)
			return -1;
		if (*p == ':') {
			p++;
			if ((sec = digits(&p, 2)) < 0 || fraction(&p, &frac))
				return -1;
		}
	}
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;

	time_t t;
	if (*p == 'Z' || *p == 'z') {
		p++;
		if (*p)
			return -1;
		t = timegm(&tm);
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;
		int zh = digits(&p, 2), zm = 0;
		if (zh < 0)
			return -1;
		if (*p == ':')
			p++;
		if (*p && (zm = digits(&p, 2)) < 0)
			return -1;
		if (*p || zh > 23 || zm > 59)
			return -1;
		t = timegm(&tm) - sign * (zh * 3600 + zm * 60);
	} else if (!*p) {
		tm.tm_isdst = -1;
		t = mktime(&tm);
	} else {
		return -1;
	}
	/* Reject dates that normalised (2026-02-31 -> March). */
	if (tm.tm_mday != d || tm.tm_mon != mo - 1)
		return -1;
	if (t < 0)
		return -1;
	out->kind = RW_WHEN_TIME;
	out->ts_ns = (uint64_t)t * 1000000000ull + frac;
	return 0;
}

int rw_parse_when(const char *s, uint64_t now_ns, struct rw_when *out)
{
	memset(out, 0, sizeof(*out));
	if (!s || !*s)
		return rw_err_set(RW_EPARSE, "empty time (%s)", when_forms);
	if (!strcmp(s, "now")) {
		out->kind = RW_WHEN_TIME;
		out->ts_ns = now_ns;
		return 0;
	}
	if (!strncmp(s, "seq:", 4)) {
		char *end;
		if (!isdigit((unsigned char)s[4]))
			goto bad;
		errno = 0;
		unsigned long long v = strtoull(s + 4, &end, 10);
		if (errno || *end)
			goto bad;
		out->kind = RW_WHEN_SEQ;
		out->seq = v;
		return 0;
	}
	if (!strncmp(s, "mark:", 5)) {
		size_t n = strlen(s + 5);
		if (!n || n >= sizeof(out->mark))
			goto bad;
		out->kind = RW_WHEN_MARK;
		memcpy(out->mark, s + 5, n + 1);
		return 0;
	}
	if (s[0] == '@') {
		const char *p = s + 1;
		uint64_t secs = 0, frac = 0;
		int n = 0;
		while (isdigit((unsigned char)*p)) {
			if (secs > 9000000000ull)
				goto bad;
			secs = secs * 10 + (uint64_t)(*p++ - '0');
			n++;
		}
		if (!n || fraction(&p, &frac) || *p)
			goto bad;
		out->kind = RW_WHEN_TIME;
		out->ts_ns = secs * 1000000000ull + frac;
		return 0;
	}
	size_t len = strlen(s);
	if (len > 4 && !strcmp(s + len - 4, " ago")) {
		char num[64];
		uint64_t d;
		if (len - 4 >= sizeof(num))
			goto bad;
		memcpy(num, s, len - 4);
		num[len - 4] = '\0';
		if (rw_parse_duration(num, &d))
			goto bad;
		if (d > now_ns)
			goto bad;
		out->kind = RW_WHEN_TIME;
		out->ts_ns = now_ns - d;
		return 0;
	}
	if (!parse_iso(s, out))
		return 0;
bad:
	return rw_err_set(RW_EPARSE, "cannot parse time '%s' (%s)", s, when_forms);
}
