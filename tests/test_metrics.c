/*
 * test_metrics.c — the Prometheus text exposition formatter
 * (capture/metrics.c): escaping of HELP text and label values, number
 * spelling, cumulative histogram buckets with +Inf, _sum and _count, and
 * a whole exposition from figures that every line of which has the
 * 0.0.4 shape.  The e2e script tests/e2e/metrics.sh parses real scrapes
 * with prometheus_client's parser.
 */
#include "capture/cap.h"
#include "tests/testutil.h"

#include <CUnit/CUnit.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_escaping(void)
{
	struct cap_prom p = { 0 };
	const char *l[] = { "disk", "a\"b\\c\nd", "x", "", NULL };

	cap_prom_family(&p, "m_x", "gauge", "help with \\ and\nnewline \"kept\"");
	cap_prom_sample(&p, "m_x", l, 1.5);
	CU_ASSERT_EQUAL(p.err, 0);
	CU_ASSERT_STRING_EQUAL(p.buf,
		"# HELP m_x help with \\\\ and\\nnewline \"kept\"\n"
		"# TYPE m_x gauge\n"
		"m_x{disk=\"a\\\"b\\\\c\\nd\",x=\"\"} 1.5\n");
	cap_prom_free(&p);
}

static void test_numbers(void)
{
	struct cap_prom p = { 0 };

	cap_prom_sample(&p, "a", NULL, 0);
	cap_prom_sample(&p, "b", NULL, 42);
	cap_prom_sample(&p, "c", NULL, NAN);
	cap_prom_sample(&p, "d", NULL, INFINITY);
	cap_prom_sample(&p, "e", NULL, -INFINITY);
	cap_prom_sample(&p, "f", NULL, 0.25);
	cap_prom_sample_u64(&p, "g", NULL, 18446744073709551615ull);
	CU_ASSERT_STRING_EQUAL(p.buf, "a 0\nb 42\nc NaN\nd +Inf\ne -Inf\nf 0.25\n"
			       "g 18446744073709551615\n");
	cap_prom_free(&p);
	cap_prom_free(NULL);
}

static void test_histogram(void)
{
	struct cap_prom p = { 0 };
	const double bounds[] = { 0.0005, 0.1, 2.5 };
	const uint64_t counts[] = { 1, 0, 3, 2 };   /* last: above 2.5 */
	const char *l[] = { "disk", "vm1", NULL };

	cap_prom_histogram(&p, "h", l, bounds, counts, 3, 12.5);
	CU_ASSERT_STRING_EQUAL(p.buf,
		"h_bucket{disk=\"vm1\",le=\"0.0005\"} 1\n"
		"h_bucket{disk=\"vm1\",le=\"0.1\"} 1\n"
		"h_bucket{disk=\"vm1\",le=\"2.5\"} 4\n"
		"h_bucket{disk=\"vm1\",le=\"+Inf\"} 6\n"
		"h_sum{disk=\"vm1\"} 12.5\n"
		"h_count{disk=\"vm1\"} 6\n");
	cap_prom_free(&p);
}

/* Every line: a comment of the two kinds, or name{labels} value. */
static bool line_ok(const char *s, size_t n)
{
	char line[1024];

	if (n >= sizeof(line))
		return false;
	memcpy(line, s, n);
	line[n] = '\0';
	if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7))
		return true;
	size_t i = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789");
	if (!i || (line[0] >= '0' && line[0] <= '9'))
		return false;
	if (line[i] == '{') {
		char *end = strstr(line + i, "} ");
		if (!end)
			return false;
		i = (size_t)(end - line) + 1;
	}
	if (line[i] != ' ')
		return false;
	char *e;
	const char *v = line + i + 1;
	if (!strcmp(v, "NaN") || !strcmp(v, "+Inf") || !strcmp(v, "-Inf"))
		return true;
	strtod(v, &e);
	return e != v && !*e;
}

static void test_figures(void)
{
	struct cap_disk_figures d[2];
	struct cap_store_figures f = { .live = true, .disk_free_bytes = 1000,
				       .ndisks = 2, .disks = d };
	struct cap_prom p = { 0 };

	memset(d, 0, sizeof(d));
	strcpy(d[0].name, "vm1");
	strcpy(d[1].name, "vm2");
	d[0].live = d[1].live = true;
	d[0].writes = 7;
	d[0].write_bytes = 7 * 4096;
	d[0].flush_buckets[0] = 2;
	d[0].flush_buckets[CAP_FLUSH_NBUCKETS] = 1;
	d[0].flush_sum_s = 12.001;
	d[1].have_retain = true;
	d[1].compaction_backlog_bytes = 123;
	cap_prom_figures(&p, &f);
	CU_ASSERT_EQUAL(p.err, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "rewind_writes_total{disk=\"vm1\"} 7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "rewind_write_bytes_total{disk=\"vm1\"} 28672\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p.buf,
		"rewind_flush_duration_seconds_bucket{disk=\"vm1\",le=\"10\"} 2\n"
		"rewind_flush_duration_seconds_bucket{disk=\"vm1\",le=\"+Inf\"} 3\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "rewind_flush_duration_seconds_count{disk=\"vm1\"} 3\n"));
	/* backlog only for the disk that has a retention */
	CU_ASSERT_PTR_NOT_NULL(strstr(p.buf, "rewind_compaction_backlog_bytes{disk=\"vm2\"} 123\n"));
	CU_ASSERT_PTR_NULL(strstr(p.buf, "rewind_compaction_backlog_bytes{disk=\"vm1\"}"));
	/* one HELP and one TYPE per family */
	const char *t = "# TYPE rewind_writes_total counter\n";
	char *first = strstr(p.buf, t);
	CU_ASSERT_PTR_NOT_NULL(first);
	if (first)
		CU_ASSERT_PTR_NULL(strstr(first + 1, t));
	for (const char *s = p.buf; *s;) {
		const char *nl = strchr(s, '\n');
		CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
		CU_ASSERT(line_ok(s, (size_t)(nl - s)));
		s = nl + 1;
	}
	cap_prom_free(&p);
}

int main(void)
{
	tu_add_suite("metrics",
		     "escaping of HELP and label values", test_escaping,
		     "number spelling", test_numbers,
		     "histogram: cumulative, +Inf, _sum, _count", test_histogram,
		     "whole exposition from figures", test_figures,
		     NULL);
	return tu_run();
}
