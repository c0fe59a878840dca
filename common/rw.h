/*
 * rw.h — rewind's common layer: errors, little-endian helpers, CRC32C,
 * logging, size parsing and the syscall seam.
 *
 * Contract
 * - Every library function in rewind returns 0 (or a non-negative count)
 *   on success and a negative code on failure: -errno for system errors,
 *   or one of the RW_E* codes below, which live in a reserved range
 *   (-10000 .. -10099) that no errno reaches.  rw_strerror() names both.
 * - A failing function may attach a human-readable detail naming the
 *   object involved (file, disk, seq) with rw_err_set(); the detail is
 *   thread-local and valid until the next rw_err_set() on that thread.
 *   The CLI prints rw_err_msg(); library code never prints or exits.
 * - All I/O of the journal and the index goes through the rw_sys_*()
 *   seam so tests can inject faults: fail the N-th call of an operation,
 *   delay it, or observe it.  Outside tests the seam is a thin wrapper.
 *   Faults can also be armed from the environment variable REWIND_FAULTS
 *   (see rw_fault_from_env()) so end-to-end tests can drive the real
 *   binary into error paths.
 * - The clock (rw_clock_ns) goes through the seam too, so tests can step
 *   it backwards.
 *
 * Thread model: everything here is thread-safe.  The fault table uses
 * atomics; arm faults before starting the threads that should hit them.
 */
#ifndef RW_COMMON_H
#define RW_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------- errors */

enum {
	RW_E_BASE = 10000,
	RW_ECORRUPT = -(RW_E_BASE + 1),   /* bad magic / checksum / structure */
	RW_ETORN = -(RW_E_BASE + 2),      /* incomplete data at a journal tail */
	RW_ENOTFOUND = -(RW_E_BASE + 3),  /* no such disk / mark / record */
	RW_EFAILED = -(RW_E_BASE + 4),    /* sticky failure: a sync failed earlier */
	RW_EVERSION = -(RW_E_BASE + 5),   /* unsupported format version */
	RW_EEXIST = -(RW_E_BASE + 6),     /* object already exists */
	RW_ERANGE = -(RW_E_BASE + 7),     /* point outside the restorable range */
	RW_EPARSE = -(RW_E_BASE + 8),     /* unparsable user input */
	RW_EBUSY = -(RW_E_BASE + 9),      /* locked or in use by someone else */
	RW_E_LAST = -(RW_E_BASE + 99),
};

/* Returns a static string for a negative code (-errno or RW_E*); never NULL. */
const char *rw_strerror(int err);

/*
 * Records a detail message for the calling thread and returns err, so a
 * failure site can write `return rw_err_set(-EIO, "cannot sync '%s'", p);`.
 * The message should name the object; rw_err_msg() appends nothing.
 */
int rw_err_set(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Returns the calling thread's last detail, or "" when none was set. */
const char *rw_err_msg(void);
/* Forgets the calling thread's detail. */
void rw_err_clear(void);

/* ------------------------------------------------------- little endian */

static inline void rw_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void rw_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void rw_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t rw_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t rw_get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t rw_get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Big-endian helpers, for LMDB keys (byte order = numeric order) and NBD. */
static inline void rw_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void rw_put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static inline void rw_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline uint16_t rw_get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rw_get_be32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t rw_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* True when the n bytes at p are all zero (word at a time). */
static inline bool rw_all_zero(const uint8_t *p, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w)
			return false;
	}
	for (; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Overflow-safe a + b <= limit test. */
static inline bool rw_range_ok(uint64_t off, uint64_t len, uint64_t limit)
{
	return off <= limit && len <= limit - off;
}

/* ---------------------------------------------------------------- CRC32C */

/*
 * CRC32C (Castagnoli), as in iSCSI (RFC 3720): init 0xFFFFFFFF, reflected,
 * final xor.  rw_crc32c(0, buf, n) gives the standard value; pass a previous
 * result as crc to continue over more bytes.  Uses the SSE4.2 instruction
 * when the CPU has it, a slicing table otherwise.
 */
uint32_t rw_crc32c(uint32_t crc, const void *buf, size_t len);
/* Same, forced through the portable table path (for tests). */
uint32_t rw_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/*
 * Returns rw_crc32c(0, A || B, ...) given crc1 = rw_crc32c(0, A, |A|),
 * crc2 = rw_crc32c(0, B, len2): lets a caller checksum B before it knows
 * A (the journal writer checksums payloads outside its lock and headers
 * under it).  About 25 small matrix-vector products; no allocation.
 */
uint32_t rw_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t len2);
/* True when rw_crc32c() uses the hardware instruction. */
bool rw_crc32c_hw(void);

/* ---------------------------------------------------------------- logging */

enum rw_log_level { RW_LOG_ERROR, RW_LOG_WARN, RW_LOG_INFO, RW_LOG_DEBUG };

/*
 * Logging for the CLI and server boundary only (library code returns
 * errors instead).  Lines go to stderr as "rewind: LEVEL: message" with a
 * timestamp when rw_log_timestamps(true) was called (the server does).
 */
void rw_log(enum rw_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void rw_log_set_level(enum rw_log_level lvl);
void rw_log_timestamps(bool on);

/* ---------------------------------------------------------- parsing */

/*
 * Parses a size: plain bytes or a number with K, M, G, T, P (binary,
 * optionally followed by "iB" or "B").  Returns 0 and sets *out, or
 * RW_EPARSE (with detail) on garbage, overflow or a negative number.
 */
int rw_parse_size(const char *s, uint64_t *out);

/* qsort/bsearch comparator of two uint64_t: -1, 0 or 1. */
int rw_u64_cmp(const void *a, const void *b);

/*
 * Parses a duration like "90s", "10m", "2h", "7d", "1w", "250ms" or plain
 * seconds, into nanoseconds.  Returns 0 or RW_EPARSE.
 */
int rw_parse_duration(const char *s, uint64_t *out_ns);

/*
 * A point in time as users write it (--at WHEN):
 *   ISO 8601 with or without zone and fraction: 2026-11-22T10:15:03.250Z,
 *     2026-11-22 10:15:03 (no zone = local time, per TZ), +01:00 / -0530;
 *   epoch seconds in GNU date form: @1763806503.25;
 *   relative: "90s ago", "10m ago", "2h ago", "1d ago";
 *   now;  seq:N;  mark:LABEL.
 * Times resolve to nanoseconds since the epoch (now_ns anchors relative
 * forms); seq and mark are passed through for the store to resolve.
 */
enum rw_when_kind { RW_WHEN_TIME, RW_WHEN_SEQ, RW_WHEN_MARK };

struct rw_when {
	enum rw_when_kind kind;
	uint64_t ts_ns;     /* RW_WHEN_TIME */
	uint64_t seq;       /* RW_WHEN_SEQ */
	char mark[129];     /* RW_WHEN_MARK */
};

/* Parses s; returns 0, or RW_EPARSE with a detail listing accepted forms. */
int rw_parse_when(const char *s, uint64_t now_ns, struct rw_when *out);

/* Formats n bytes as "1.5 GiB" into buf (at least 16 bytes); returns buf. */
char *rw_fmt_size(uint64_t n, char *buf, size_t bufsz);

/* ---------------------------------------------------------- syscall seam */

enum rw_sys_op {
	RW_OP_OPEN,
	RW_OP_WRITE,     /* pwrite, pwritev and io_uring write submissions */
	RW_OP_READ,      /* pread and io_uring reads */
	RW_OP_FSYNC,     /* fsync, fdatasync and io_uring fsync submissions */
	RW_OP_RENAME,
	RW_OP_UNLINK,
	RW_OP_TRUNCATE,
	RW_OP_MKDIR,
	RW_OP__COUNT
};

/* Returns "open", "write", ... for an operation. */
const char *rw_sys_op_name(enum rw_sys_op op);

/*
 * Arms a fault: the nth call (1-based, counted from now) of op fails with
 * err (a negative errno); when sticky, every call after it fails as well.
 * n == 0 disarms.  Short writes: with err == 0 and short_bytes > 0, the nth
 * write transfers only short_bytes bytes.
 */
void rw_fault_arm(enum rw_sys_op op, uint64_t n, int err, bool sticky);
void rw_fault_arm_short(enum rw_sys_op op, uint64_t n, size_t short_bytes);
/* Delays every call of op by ms milliseconds (0 = none). */
void rw_fault_delay(enum rw_sys_op op, unsigned ms);
/* Disarms everything and zeroes the counters. */
void rw_fault_reset(void);
/* Number of calls of op seen since the last reset. */
uint64_t rw_fault_count(enum rw_sys_op op);

/*
 * Called by code that issues an operation by other means (io_uring): counts
 * the call, applies delays, and returns 0 or the injected error.  *short_out
 * (may be NULL) receives an injected short-transfer length or 0.
 */
int rw_fault_check(enum rw_sys_op op, size_t *short_out);

/*
 * Arms faults from a spec like "fsync:3:EIO,write:10:ENOSPC:sticky,
 * fsync:delay:200".  Reads getenv("REWIND_FAULTS") when spec is NULL.
 * Returns 0, or RW_EPARSE for a malformed spec.
 */
int rw_fault_from_env(const char *spec);

/*
 * The seam proper.  Each returns what the system call returns, except that
 * errors come back as -errno instead of -1/errno.  rw_sys_pwrite_full and
 * rw_sys_pread_full loop over short transfers and EINTR; pread_full returns
 * the bytes read (short only at end of file).
 */
int rw_sys_open(const char *path, int flags, mode_t mode);
int rw_sys_openat(int dirfd, const char *path, int flags, mode_t mode);
ssize_t rw_sys_pwrite(int fd, const void *buf, size_t len, off_t off);
ssize_t rw_sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
int rw_sys_pwrite_full(int fd, const void *buf, size_t len, off_t off);
ssize_t rw_sys_pread(int fd, void *buf, size_t len, off_t off);
ssize_t rw_sys_pread_full(int fd, void *buf, size_t len, off_t off);
int rw_sys_fdatasync(int fd);
int rw_sys_fsync(int fd);
int rw_sys_rename(const char *from, const char *to);
int rw_sys_renameat(int dirfd, const char *from, const char *to);
int rw_sys_unlink(const char *path);
int rw_sys_unlinkat(int dirfd, const char *path, int flags);
int rw_sys_ftruncate(int fd, off_t len);
int rw_sys_mkdir(const char *path, mode_t mode);
/* fsync of a directory, so that creates/renames/unlinks in it are durable. */
int rw_sys_fsync_dir(const char *path);

/* ------------------------------------------------------ optional libraries */

/* One symbol to resolve: its name and the function pointer it fills. */
struct rw_dlsym {
	const char *name;
	void **slot;
};
/*
 * dlopens soname (RTLD_NOW | RTLD_LOCAL; the handle stays open for the
 * life of the process) and fills every slot of syms[0..n).  err (errlen
 * bytes) is left "" on success, else says what is missing; slots after a
 * missing symbol are left as they were.  Call it once, under the caller's
 * pthread_once.
 */
void rw_dl_load(const char *soname, const struct rw_dlsym *syms, size_t n,
		char *err, size_t errlen);

/* ---------------------------------------------------------------- clock */

/*
 * Wall-clock time in nanoseconds since the epoch (CLOCK_REALTIME), through
 * the seam: tests replace it with rw_clock_set_source().  May go backwards;
 * the journal makes its own timestamps monotonic.
 */
uint64_t rw_clock_ns(void);
/* Monotonic nanoseconds (CLOCK_MONOTONIC), for deadlines and durations. */
uint64_t rw_mono_ns(void);
/* Replaces the wall clock (NULL restores the real one). */
void rw_clock_set_source(uint64_t (*fn)(void));

#endif /* RW_COMMON_H */
