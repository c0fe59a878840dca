/*
 * testutil.h — shared helpers for the CUnit suites.
 *
 * tu_run() runs the registered suites in basic mode and returns the
 * process exit status: non-zero when any assertion failed or the registry
 * could not be built (CU_basic_run_tests() alone never fails a process).
 * tu_tmpdir() makes a fresh directory under $TMPDIR that tu_rmrf() removes.
 */
#ifndef RW_TESTUTIL_H
#define RW_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>

/* Runs all registered suites; returns 0 when every assertion passed. */
int tu_run(void);
/* Adds a suite with its tests (NULL-terminated name/function pairs). */
void tu_add_suite(const char *name, ...);
/* Creates a fresh temporary directory; returns a malloc'ed path. */
char *tu_tmpdir(const char *tag);
/* Removes a directory tree; returns 0 or -errno. */
int tu_rmrf(const char *path);
/* Deterministic pseudo-random numbers (xorshift64*), seeded per test. */
uint64_t tu_rand(uint64_t *state);
/* Fills buf with pseudo-random bytes. */
void tu_fill_random(uint64_t *state, void *buf, size_t len);

#endif
