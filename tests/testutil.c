/*
 * testutil.c — CUnit runner and helpers shared by every suite.
 */
#include "tests/testutil.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int tu_run(void)
{
	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (CU_basic_run_tests() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit error: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 2;
	}
	unsigned failures = CU_get_number_of_failures();
	unsigned failed_tests = CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	return failures > 0 || failed_tests > 0 ? 1 : 0;
}

void tu_add_suite(const char *name, ...)
{
	va_list ap;

	if (!CU_get_registry() && CU_initialize_registry() != CUE_SUCCESS) {
		fprintf(stderr, "cannot initialise CUnit\n");
		exit(2);
	}
	CU_pSuite s = CU_add_suite(name, NULL, NULL);
	if (!s) {
		fprintf(stderr, "cannot add suite %s\n", name);
		exit(2);
	}
	va_start(ap, name);
	for (;;) {
		const char *tname = va_arg(ap, const char *);
		if (!tname)
			break;
		CU_TestFunc fn = va_arg(ap, CU_TestFunc);
		if (!CU_add_test(s, tname, fn)) {
			fprintf(stderr, "cannot add test %s\n", tname);
			exit(2);
		}
	}
	va_end(ap);
}

char *tu_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *p = NULL;

	if (!base || !*base)
		base = "/tmp";
	if (asprintf(&p, "%s/rewind-%s-XXXXXX", base, tag) < 0)
		abort();
	if (!mkdtemp(p)) {
		perror("mkdtemp");
		abort();
	}
	return p;
}

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path) ? -errno : 0;
}

int tu_rmrf(const char *path)
{
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t tu_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void tu_fill_random(uint64_t *s, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t v = tu_rand(s);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = tu_rand(s);
		memcpy(p, &v, len);
	}
}
