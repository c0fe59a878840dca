/*
 * util.c — parsing and formatting of sizes and durations.
 *
 * Sizes are binary (K = 1024), the convention of qemu-img and truncate(1),
 * which is what people type next to those tools.  Parsing is strict: the
 * whole string must be consumed and overflow is an error, because a typo
 * in --size should never become a 16 EiB sparse file.
 */
#include "rw.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rw_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int rw_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	char *end;
	int shift = 0;

	if (!s || !*s || !isdigit((unsigned char)*s))
		return rw_err_set(RW_EPARSE, "invalid size '%s'", s ? s : "");
	errno = 0;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno)
		return rw_err_set(RW_EPARSE, "size '%s' is too large", s);
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'B': shift = 0; end++; break;
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	case 'T': shift = 40; end++; break;
	case 'P': shift = 50; end++; break;
	default:
		return rw_err_set(RW_EPARSE, "invalid size '%s' (use bytes or "
				  "a suffix K, M, G, T, P)", s);
	}
	if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end)
		return rw_err_set(RW_EPARSE, "invalid size '%s' (use bytes or "
				  "a suffix K, M, G, T, P)", s);
	if (shift && v > (UINT64_MAX >> shift))
		return rw_err_set(RW_EPARSE, "size '%s' is too large", s);
	*out = (uint64_t)v << shift;
	return 0;
}

int rw_parse_duration(const char *s, uint64_t *out_ns)
{
	char *end;
	double v;
	double mult = 1e9;

	if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '.'))
		return rw_err_set(RW_EPARSE, "invalid duration '%s'", s ? s : "");
	errno = 0;
	v = strtod(s, &end);
	if (errno || v < 0)
		return rw_err_set(RW_EPARSE, "invalid duration '%s'", s);
	if (!strcmp(end, "") || !strcmp(end, "s"))
		mult = 1e9;
	else if (!strcmp(end, "ms"))
		mult = 1e6;
	else if (!strcmp(end, "us"))
		mult = 1e3;
	else if (!strcmp(end, "m") || !strcmp(end, "min"))
		mult = 60e9;
	else if (!strcmp(end, "h"))
		mult = 3600e9;
	else if (!strcmp(end, "d"))
		mult = 86400e9;
	else if (!strcmp(end, "w"))
		mult = 7 * 86400e9;
	else
		return rw_err_set(RW_EPARSE, "invalid duration '%s' (use a "
				  "number with s, m, h, d or w)", s);
	double ns = v * mult;
	if (ns >= 1.8e19)
		return rw_err_set(RW_EPARSE, "duration '%s' is too long", s);
	*out_ns = (uint64_t)ns;
	return 0;
}

char *rw_fmt_size(uint64_t n, char *buf, size_t bufsz)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, bufsz, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, bufsz, "%.1f %s", v, units[u]);
	return buf;
}
