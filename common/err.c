/*
 * err.c — error codes and the thread-local error detail.
 *
 * Codes are plain ints (-errno or RW_E*) so they cross every layer without
 * wrapping.  The detail string is thread-local, like dlerror(): a failing
 * function records what it failed on, the CLI prints it.  A richer error
 * object passed through every call was rejected: it would add a parameter
 * to almost every function for the benefit of one printf at the top.
 */
#include "rw.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char err_detail[1024];

const char *rw_strerror(int err)
{
	switch (err) {
	case 0:
		return "Success";
	case RW_ECORRUPT:
		return "Corrupt data";
	case RW_ETORN:
		return "Torn record at journal tail";
	case RW_ENOTFOUND:
		return "Not found";
	case RW_EFAILED:
		return "Failed earlier (sticky error; reopen the store)";
	case RW_EVERSION:
		return "Unsupported format version";
	case RW_EEXIST:
		return "Already exists";
	case RW_ERANGE:
		return "Outside the restorable range";
	case RW_EPARSE:
		return "Cannot parse";
	case RW_EBUSY:
		return "In use";
	default:
		break;
	}
	if (err < 0 && err > -RW_E_BASE)
		return strerror(-err);
	return "Unknown error";
}

int rw_err_set(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err_detail, sizeof(err_detail), fmt, ap);
	va_end(ap);
	return err;
}

const char *rw_err_msg(void)
{
	return err_detail;
}

void rw_err_clear(void)
{
	err_detail[0] = '\0';
}
