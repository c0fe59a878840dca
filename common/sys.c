/*
 * sys.c — the syscall seam and the clock.
 *
 * Every journal and index I/O call goes through here so that tests can
 * fail the N-th write, fsync, open or rename, inject short writes, delay
 * syncs (to watch capture lag grow) or step the clock backwards.  The
 * fault table is a handful of atomics checked on every call: cheap enough
 * to leave in production builds, which is the point — end-to-end tests
 * arm it in the real binary through REWIND_FAULTS.  Link-time wrapping
 * (-Wl,--wrap) was rejected: it cannot reach io_uring submissions and
 * cannot be switched on in a shipped binary.
 */
#include "rw.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fault {
	_Atomic uint64_t calls;
	_Atomic uint64_t fail_at;   /* 0 = disarmed */
	_Atomic int err;
	_Atomic bool sticky;
	_Atomic size_t short_bytes;
	_Atomic unsigned delay_ms;
};

static struct fault faults[RW_OP__COUNT];

static const char *const op_names[RW_OP__COUNT] = {
	"open", "write", "read", "fsync", "rename", "unlink", "truncate", "mkdir",
};

const char *rw_sys_op_name(enum rw_sys_op op)
{
	return (unsigned)op < RW_OP__COUNT ? op_names[op] : "?";
}

void rw_fault_arm(enum rw_sys_op op, uint64_t n, int err, bool sticky)
{
	struct fault *f = &faults[op];

	atomic_store(&f->err, err);
	atomic_store(&f->sticky, sticky);
	atomic_store(&f->short_bytes, 0);
	atomic_store(&f->fail_at, n ? atomic_load(&f->calls) + n : 0);
}

void rw_fault_arm_short(enum rw_sys_op op, uint64_t n, size_t short_bytes)
{
	struct fault *f = &faults[op];

	atomic_store(&f->err, 0);
	atomic_store(&f->sticky, false);
	atomic_store(&f->short_bytes, short_bytes);
	atomic_store(&f->fail_at, n ? atomic_load(&f->calls) + n : 0);
}

void rw_fault_delay(enum rw_sys_op op, unsigned ms)
{
	atomic_store(&faults[op].delay_ms, ms);
}

void rw_fault_reset(void)
{
	for (int i = 0; i < RW_OP__COUNT; i++) {
		atomic_store(&faults[i].fail_at, 0);
		atomic_store(&faults[i].calls, 0);
		atomic_store(&faults[i].err, 0);
		atomic_store(&faults[i].sticky, false);
		atomic_store(&faults[i].short_bytes, 0);
		atomic_store(&faults[i].delay_ms, 0);
	}
}

uint64_t rw_fault_count(enum rw_sys_op op)
{
	return atomic_load(&faults[op].calls);
}

int rw_fault_check(enum rw_sys_op op, size_t *short_out)
{
	struct fault *f = &faults[op];
	uint64_t n = atomic_fetch_add(&f->calls, 1) + 1;
	uint64_t at = atomic_load(&f->fail_at);
	unsigned delay = atomic_load(&f->delay_ms);

	if (short_out)
		*short_out = 0;
	if (delay) {
		struct timespec ts = { delay / 1000, (long)(delay % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
	}
	if (!at || n < at)
		return 0;
	if (n > at && !atomic_load(&f->sticky))
		return 0;
	size_t sb = atomic_load(&f->short_bytes);
	if (sb && n == at) {
		if (short_out)
			*short_out = sb;
		return 0;
	}
	return atomic_load(&f->err);
}

static int parse_errno(const char *s)
{
	static const struct { const char *name; int val; } tab[] = {
		{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
		{ "EPERM", EPERM }, { "EACCES", EACCES }, { "EROFS", EROFS },
		{ "ENOENT", ENOENT }, { "EINTR", EINTR }, { "ENOMEM", ENOMEM },
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (!strcmp(s, tab[i].name))
			return -tab[i].val;
	return 0;
}

int rw_fault_from_env(const char *spec)
{
	char buf[512];
	char *save = NULL;

	if (!spec)
		spec = getenv("REWIND_FAULTS");
	if (!spec || !*spec)
		return 0;
	if (strlen(spec) >= sizeof(buf))
		return rw_err_set(RW_EPARSE, "REWIND_FAULTS is too long");
	strcpy(buf, spec);
	for (char *item = strtok_r(buf, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		char *f[4] = { 0 };
		int nf = 0;
		char *s2 = NULL;
		for (char *t = strtok_r(item, ":", &s2); t && nf < 4;
		     t = strtok_r(NULL, ":", &s2))
			f[nf++] = t;
		int op = -1;
		for (int i = 0; f[0] && i < RW_OP__COUNT; i++)
			if (!strcmp(f[0], op_names[i]))
				op = i;
		if (op < 0 || nf < 3)
			goto bad;
		char *end;
		unsigned long long v = strtoull(f[2], &end, 10);
		if (!strcmp(f[1], "delay")) {
			if (*end)
				goto bad;
			rw_fault_delay((enum rw_sys_op)op, (unsigned)v);
			continue;
		}
		unsigned long long n = strtoull(f[1], &end, 10);
		if (*end || !n)
			goto bad;
		int err = parse_errno(f[2]);
		if (!err)
			goto bad;
		rw_fault_arm((enum rw_sys_op)op, n, err,
			     f[3] && !strcmp(f[3], "sticky"));
	}
	return 0;
bad:
	return rw_err_set(RW_EPARSE, "bad REWIND_FAULTS spec '%s' "
			  "(want op:N:ERRNO[:sticky] or op:delay:MS)", spec);
}

#define SEAM(op)                                                   \
	do {                                                       \
		int seam_err_ = rw_fault_check((op), NULL);        \
		if (seam_err_)                                     \
			return seam_err_;                          \
	} while (0)

int rw_sys_open(const char *path, int flags, mode_t mode)
{
	SEAM(RW_OP_OPEN);
	int fd = open(path, flags | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int rw_sys_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	SEAM(RW_OP_OPEN);
	int fd = openat(dirfd, path, flags | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

ssize_t rw_sys_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	size_t sb;
	int err = rw_fault_check(RW_OP_WRITE, &sb);

	if (err)
		return err;
	if (sb && sb < len)
		len = sb;
	ssize_t n = pwrite(fd, buf, len, off);
	return n < 0 ? -errno : n;
}

ssize_t rw_sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	size_t sb;
	int err = rw_fault_check(RW_OP_WRITE, &sb);

	if (err)
		return err;
	if (sb) {
		/* Emulate a short transfer: write only the first sb bytes. */
		size_t done = 0;
		for (int i = 0; i < iovcnt && done < sb; i++) {
			size_t part = iov[i].iov_len;
			if (part > sb - done)
				part = sb - done;
			ssize_t n = pwrite(fd, iov[i].iov_base, part,
					   off + (off_t)done);
			if (n < 0)
				return -errno;
			done += (size_t)n;
			if ((size_t)n < part)
				break;
		}
		return (ssize_t)done;
	}
	ssize_t n = pwritev(fd, iov, iovcnt, off);
	return n < 0 ? -errno : n;
}

int rw_sys_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = rw_sys_pwrite(fd, p, len, off);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

ssize_t rw_sys_pread(int fd, void *buf, size_t len, off_t off)
{
	SEAM(RW_OP_READ);
	ssize_t n = pread(fd, buf, len, off);
	return n < 0 ? -errno : n;
}

ssize_t rw_sys_pread_full(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = rw_sys_pread(fd, p + done, len - done,
					 off + (off_t)done);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return n;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int rw_sys_fdatasync(int fd)
{
	SEAM(RW_OP_FSYNC);
	return fdatasync(fd) < 0 ? -errno : 0;
}

int rw_sys_fsync(int fd)
{
	SEAM(RW_OP_FSYNC);
	return fsync(fd) < 0 ? -errno : 0;
}

int rw_sys_rename(const char *from, const char *to)
{
	SEAM(RW_OP_RENAME);
	return rename(from, to) < 0 ? -errno : 0;
}

int rw_sys_renameat(int dirfd, const char *from, const char *to)
{
	SEAM(RW_OP_RENAME);
	return renameat(dirfd, from, dirfd, to) < 0 ? -errno : 0;
}

int rw_sys_unlink(const char *path)
{
	SEAM(RW_OP_UNLINK);
	return unlink(path) < 0 ? -errno : 0;
}

int rw_sys_unlinkat(int dirfd, const char *path, int flags)
{
	SEAM(RW_OP_UNLINK);
	return unlinkat(dirfd, path, flags) < 0 ? -errno : 0;
}

int rw_sys_ftruncate(int fd, off_t len)
{
	SEAM(RW_OP_TRUNCATE);
	return ftruncate(fd, len) < 0 ? -errno : 0;
}

int rw_sys_mkdir(const char *path, mode_t mode)
{
	SEAM(RW_OP_MKDIR);
	return mkdir(path, mode) < 0 ? -errno : 0;
}

int rw_sys_fsync_dir(const char *path)
{
	int fd = rw_sys_open(path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	int err = rw_sys_fsync(fd);
	close(fd);
	return err;
}

static uint64_t real_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t (*_Atomic clock_src)(void) = real_clock;

uint64_t rw_clock_ns(void)
{
	return atomic_load(&clock_src)();
}

void rw_clock_set_source(uint64_t (*fn)(void))
{
	atomic_store(&clock_src, fn ? fn : real_clock);
}

uint64_t rw_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
