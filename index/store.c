/*
 * store.c — the store directory, rewind.store, the store lock and the LMDB
 * environment: opening it, transactions, and growing the map.
 *
 * How: rewind.store is a 44-byte file written once (tmp + fsync + rename +
 * directory fsync).  The LMDB environment lives in STORE/index/ with seven
 * named databases.  Every transaction of this process holds a rwlock
 * shared; growing the map (mdb_env_set_mapsize, which LMDB allows only
 * with no transaction live in the process) takes it exclusively.  A write
 * that hits MDB_MAP_FULL aborts, doubles the map and runs again from the
 * caller's buffered input (ix_write), so nothing is lost.
 *
 * Durability choice: the environment is opened with MDB_NOMETASYNC, never
 * MDB_NOSYNC and never MDB_WRITEMAP.  With NOMETASYNC LMDB syncs the data
 * pages at commit but not the meta page, so a power loss can undo the
 * last committed transactions but never corrupt the B-trees (LMDB keeps
 * two meta pages and picks the newest valid one).  Losing a transaction
 * is harmless here: last_indexed_seq moves in the same transaction as the
 * entries, so catch-up re-indexes from the journal.  MDB_NOSYNC was
 * rejected: without ordered writes (ext4/xfs give no such promise for
 * overwritten pages) a power loss can leave a meta page pointing at pages
 * that never reached the disk, i.e. a corrupt tree; a rebuild would fix it
 * but only if corruption is detected, and LMDB may crash on it instead.
 */
#include "index/ix_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

void (*ix_test_step_hook)(const char *step);
_Thread_local int ix_tl_reads;
uint64_t ix_grow_wait_ns = 10ull * 1000000000ull;

/* ------------------------------------------------------------ errors */

int ix_mdb_err(int rc)
{
	if (rc == 0)
		return 0;
	if (rc > 0)
		return -rc;
	switch (rc) {
	case MDB_NOTFOUND:
		return RW_ENOTFOUND;
	case MDB_KEYEXIST:
		return RW_EEXIST;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_BAD_VALSIZE:
		return RW_ECORRUPT;
	case MDB_VERSION_MISMATCH:
		return RW_EVERSION;
	case MDB_MAP_FULL:
		return -ENOSPC;
	case MDB_READERS_FULL:
		return RW_EBUSY;
	default:
		if (rc > -30800 && rc <= -30700)
			return -EIO;
		return rc; /* already a rewind code */
	}
}

static bool is_mdb_code(int rc)
{
	return rc > 0 || (rc <= -30700 && rc > -30800);
}

int ix_fail(struct ix *ix, int rc, const char *what)
{
	int err = ix_mdb_err(rc);

	if (!is_mdb_code(rc))
		return rc; /* keeps the detail already set */
	if (rc == EIO) {
		/*
		 * LMDB turns a short page write into EIO; on a full filesystem
		 * that short write is ENOSPC.  Tell them apart by the space
		 * left next to the index.
		 */
		char p[4096];
		struct statvfs sv;
		snprintf(p, sizeof(p), "%s/index", ix->dir);
		if (statvfs(p, &sv) == 0 &&
		    (uint64_t)sv.f_bavail * sv.f_frsize < (64ull << 20))
			err = -ENOSPC;
	}
	if (err == -ENOSPC)
		return rw_err_set(err, "store '%s': %s: no space left on device for the index",
				  ix->dir, what);
	return rw_err_set(err, "store '%s': index: %s: %s", ix->dir, what,
			  rc > 0 ? strerror(rc) : mdb_strerror(rc));
}

/* ------------------------------------------------------------- files */

static int write_file_atomic(const char *dir, const char *name,
			     const uint8_t *buf, size_t len)
{
	char tmp[4096], dst[4096];
	int fd = -1, rc;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp) ||
	    (size_t)snprintf(dst, sizeof(dst), "%s/%s", dir, name) >= sizeof(dst))
		return rw_err_set(-ENAMETOOLONG, "path too long in '%s'", dir);
	fd = rw_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = rw_err_set(fd, "cannot create '%s': %s", tmp, strerror(-fd));
		goto out;
	}
	rc = rw_sys_pwrite_full(fd, buf, len, 0);
	if (rc < 0) {
		rw_err_set(rc, "cannot write '%s': %s", tmp, strerror(-rc));
		goto out;
	}
	rc = rw_sys_fsync(fd);
	if (rc < 0) {
		rw_err_set(rc, "cannot sync '%s': %s", tmp, strerror(-rc));
		goto out;
	}
	close(fd);
	fd = -1;
	rc = rw_sys_rename(tmp, dst);
	if (rc < 0) {
		rw_err_set(rc, "cannot rename '%s' to '%s': %s", tmp, dst,
			   strerror(-rc));
		goto out;
	}
	rc = rw_sys_fsync_dir(dir);
	if (rc < 0)
		rw_err_set(rc, "cannot sync directory '%s': %s", dir, strerror(-rc));
out:
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	}
	return rc;
}

int ix_meta_write(const char *dir, const struct ix_disk *d)
{
	uint8_t b[IX_DISK_META_SIZE];
	size_t nl = strlen(d->name);

	memset(b, 0, sizeof(b));
	memcpy(b, IX_DISK_MAGIC, 8);
	rw_put_le32(b + 8, IX_FORMAT_VERSION);
	rw_put_le32(b + 12, d->id);
	rw_put_le64(b + 16, d->size);
	rw_put_le32(b + 24, d->block_size);
	rw_put_le32(b + 28, (uint32_t)nl);
	rw_put_le64(b + 32, d->ctime_ns);
	memcpy(b + 40, d->name, nl);
	rw_put_le32(b + 104, rw_crc32c(0, b, 104));
	return write_file_atomic(dir, "disk.meta", b, sizeof(b));
}

int ix_meta_read(const char *path, struct ix_disk *d)
{
	uint8_t b[IX_DISK_META_SIZE + 1];
	int fd = rw_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
	ssize_t n;
	uint32_t nl;

	if (fd < 0)
		return rw_err_set(fd == -ENOENT ? RW_ENOTFOUND : fd,
				  "cannot open '%s': %s", path, strerror(-fd));
	n = rw_sys_pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n < 0)
		return rw_err_set((int)n, "cannot read '%s': %s", path,
				  strerror((int)-n));
	if (n != IX_DISK_META_SIZE || memcmp(b, IX_DISK_MAGIC, 8) != 0)
		return rw_err_set(RW_ECORRUPT, "'%s' is not a disk.meta file (bad size or magic)", path);
	if (rw_get_le32(b + 104) != rw_crc32c(0, b, 104))
		return rw_err_set(RW_ECORRUPT, "'%s': checksum mismatch", path);
	if (rw_get_le32(b + 8) != IX_FORMAT_VERSION)
		return rw_err_set(RW_EVERSION, "'%s': unsupported version %u", path,
				  rw_get_le32(b + 8));
	memset(d, 0, sizeof(*d));
	d->id = rw_get_le32(b + 12);
	d->size = rw_get_le64(b + 16);
	d->block_size = rw_get_le32(b + 24);
	nl = rw_get_le32(b + 28);
	d->ctime_ns = rw_get_le64(b + 32);
	if (nl == 0 || nl > IX_NAME_MAX)
		return rw_err_set(RW_ECORRUPT, "'%s': bad name length %u", path, nl);
	for (uint32_t i = 40 + nl; i < 104; i++)
		if (b[i])
			return rw_err_set(RW_ECORRUPT, "'%s': name padding is not zero", path);
	memcpy(d->name, b + 40, nl);
	d->name[nl] = 0;
	if (!ix_name_valid(d->name) || d->id == 0 || d->block_size < 512 ||
	    d->block_size > (1u << 20) || (d->block_size & (d->block_size - 1)))
		return rw_err_set(RW_ECORRUPT, "'%s': invalid name, id or block size", path);
	return 0;
}

bool ix_name_valid(const char *name)
{
	size_t n = 0;

	if (!name || !*name || name[0] == '.')
		return false;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return false;
	}
	return n <= IX_NAME_MAX;
}

static int mkdir_p1(const char *path)
{
	int rc = rw_sys_mkdir(path, 0755);

	if (rc < 0 && rc != -EEXIST)
		return rw_err_set(rc, "cannot create directory '%s': %s", path,
				  strerror(-rc));
	return 0;
}

int ix_store_init(const char *dir)
{
	char p[4096];
	uint8_t b[IX_STORE_FILE_SIZE];
	struct stat st;
	DIR *d = NULL;
	struct dirent *de;
	int rc;

	if ((size_t)snprintf(p, sizeof(p), "%s/rewind.store", dir) >= sizeof(p) - 16)
		return rw_err_set(-ENAMETOOLONG, "store path too long: '%s'", dir);
	if (stat(p, &st) == 0)
		return rw_err_set(RW_EEXIST, "'%s' already holds a store", dir);
	rc = mkdir_p1(dir);
	if (rc < 0)
		return rc;
	d = opendir(dir);
	if (!d)
		return rw_err_set(-errno, "cannot open '%s': %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			closedir(d);
			return rw_err_set(RW_EEXIST, "'%s' is not empty; a store needs an empty directory", dir);
		}
	}
	closedir(d);
	memset(b, 0, sizeof(b));
	memcpy(b, IX_STORE_MAGIC, 8);
	rw_put_le32(b + 8, IX_FORMAT_VERSION);
	rw_put_le32(b + 12, 0);
	if (getrandom(b + 16, 16, 0) != 16)
		return rw_err_set(-EIO, "cannot get random bytes for the store id");
	rw_put_le64(b + 32, rw_clock_ns());
	rw_put_le32(b + 40, rw_crc32c(0, b, 40));
	snprintf(p, sizeof(p), "%s/disks", dir);
	if ((rc = mkdir_p1(p)) < 0)
		return rc;
	snprintf(p, sizeof(p), "%s/index", dir);
	if ((rc = mkdir_p1(p)) < 0)
		return rc;
	rc = rw_sys_fsync_dir(dir);
	if (rc < 0)
		return rw_err_set(rc, "cannot sync '%s': %s", dir, strerror(-rc));
	/* rewind.store last: its presence means the store is complete. */
	return write_file_atomic(dir, "rewind.store", b, sizeof(b));
}

static int read_store_file(const char *dir, uint8_t id[16])
{
	char p[4096];
	uint8_t b[IX_STORE_FILE_SIZE + 1];
	int fd;
	ssize_t n;

	snprintf(p, sizeof(p), "%s/rewind.store", dir);
	fd = rw_sys_open(p, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return rw_err_set(fd == -ENOENT ? RW_ENOTFOUND : fd,
				  "'%s' is not a rewind store (cannot open '%s': %s)",
				  dir, p, strerror(-fd));
	n = rw_sys_pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n < 0)
		return rw_err_set((int)n, "cannot read '%s': %s", p, strerror((int)-n));
	if (n != IX_STORE_FILE_SIZE || memcmp(b, IX_STORE_MAGIC, 8) != 0)
		return rw_err_set(RW_ECORRUPT, "'%s': bad size or magic", p);
	if (rw_get_le32(b + 40) != rw_crc32c(0, b, 40))
		return rw_err_set(RW_ECORRUPT, "'%s': checksum mismatch", p);
	if (rw_get_le32(b + 8) != IX_FORMAT_VERSION)
		return rw_err_set(RW_EVERSION, "'%s': unsupported store version %u",
				  p, rw_get_le32(b + 8));
	if (rw_get_le32(b + 12) != 0)
		return rw_err_set(RW_ECORRUPT, "'%s': reserved flags are not zero", p);
	memcpy(id, b + 16, 16);
	return 0;
}

/* ------------------------------------------------------- transactions */

static int grow_map(struct ix *ix, size_t want)
{
	MDB_envinfo info;
	int rc;

	if (ix_tl_reads > 0)
		return EDEADLK; /* would wait for this thread's own ix_read */
	/* Bounded: an export holding a read for long must not hang indexing. */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += (time_t)(ix_grow_wait_ns / 1000000000ull);
	until.tv_nsec += (long)(ix_grow_wait_ns % 1000000000ull);
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	rc = pthread_rwlock_timedwrlock(&ix->txlock, &until);
	if (rc)
		return rc == ETIMEDOUT ? EBUSY : rc;
	mdb_env_info(ix->env, &info);
	if (want == 0)
		want = info.me_mapsize * 2;
	rc = want > info.me_mapsize ? mdb_env_set_mapsize(ix->env, want) : 0;
	pthread_rwlock_unlock(&ix->txlock);
	return rc;
}

int ix_txn_begin(struct ix *ix, unsigned flags, MDB_txn **out)
{
	int rc;

	for (int tries = 0;; tries++) {
		pthread_rwlock_rdlock(&ix->txlock);
		rc = mdb_txn_begin(ix->env, NULL, flags, out);
		if (rc == 0)
			return 0;
		pthread_rwlock_unlock(&ix->txlock);
		if (rc != MDB_MAP_RESIZED || tries > 8)
			return rc;
		if (ix_tl_reads > 0)
			return EDEADLK;
		/* Another process grew the map: adopt its size. */
		pthread_rwlock_wrlock(&ix->txlock);
		rc = mdb_env_set_mapsize(ix->env, 0);
		pthread_rwlock_unlock(&ix->txlock);
		if (rc)
			return rc;
	}
}

void ix_txn_abort(struct ix *ix, MDB_txn *txn)
{
	if (!txn)
		return;
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&ix->txlock);
}

int ix_txn_commit(struct ix *ix, MDB_txn *txn)
{
	int rc = mdb_txn_commit(txn);

	pthread_rwlock_unlock(&ix->txlock);
	return rc;
}

static int put_mapsize(struct ix *ix, MDB_txn *txn)
{
	MDB_envinfo info;
	uint8_t v[8];
	MDB_val k = { 7, (void *)"mapsize" }, d = { 8, v };

	mdb_env_info(ix->env, &info);
	rw_put_le64(v, info.me_mapsize);
	return mdb_put(txn, ix->db_state, &k, &d, 0);
}

int ix_write(struct ix *ix, int (*fn)(struct ix *ix, MDB_txn *txn, void *arg),
	     void *arg, const char *what)
{
	MDB_txn *txn = NULL;
	int rc;

	if (ix->flags & IX_RDONLY)
		return rw_err_set(-EROFS, "store '%s' is open read-only (%s)",
				  ix->dir, what);
	for (int grows = 0;; grows++) {
		rc = ix_txn_begin(ix, 0, &txn);
		if (rc)
			return ix_fail(ix, rc, what);
		rc = fn(ix, txn, arg);
		if (rc == 0 && grows > 0)
			rc = put_mapsize(ix, txn);
		if (rc == 0) {
			rc = ix_txn_commit(ix, txn);
			txn = NULL;
		}
		if (rc != 0 && txn) {
			ix_txn_abort(ix, txn);
			txn = NULL;
		}
		if (rc != MDB_MAP_FULL)
			break;
		if (grows > 40)
			return rw_err_set(-ENOSPC, "store '%s': index map cannot grow further (%s)",
					  ix->dir, what);
		rc = grow_map(ix, 0);
		if (rc == EBUSY)
			return rw_err_set(RW_EBUSY, "store '%s': the index map is full and cannot grow while read transactions stay open (%s); retry when they end",
					  ix->dir, what);
		if (rc == EDEADLK)
			return rw_err_set(-EDEADLK, "store '%s': the index map must grow (%s) but this thread holds a read transaction; end it first",
					  ix->dir, what);
		if (rc)
			return ix_fail(ix, rc, "growing the index map");
	}
	if (rc == 0)
		ix_step("commit");
	return rc ? ix_fail(ix, rc, what) : 0;
}

/* ------------------------------------------------------------ open */

/*
 * The versions table's comparator: the same order as memcmp on the
 * big-endian 20-byte keys (so the file is what any LMDB tool expects),
 * computed with three word loads instead of a libc memcmp call — a third
 * of the cost of a lookup was memcmp.
 */
static int vkey_cmp(const MDB_val *a, const MDB_val *b)
{
	if (a->mv_size == IX_VKEY && b->mv_size == IX_VKEY) {
		const uint8_t *x = a->mv_data, *y = b->mv_data;
		uint64_t p, q;
		uint32_t r, t;

		memcpy(&p, x, 8);
		memcpy(&q, y, 8);
		if (p != q)
			return __builtin_bswap64(p) < __builtin_bswap64(q) ? -1 : 1;
		memcpy(&p, x + 8, 8);
		memcpy(&q, y + 8, 8);
		if (p != q)
			return __builtin_bswap64(p) < __builtin_bswap64(q) ? -1 : 1;
		memcpy(&r, x + 16, 4);
		memcpy(&t, y + 16, 4);
		if (r != t)
			return __builtin_bswap32(r) < __builtin_bswap32(t) ? -1 : 1;
		return 0;
	}
	size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
	int c = memcmp(a->mv_data, b->mv_data, n);
	if (c)
		return c;
	return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

struct open_ctx {
	const uint8_t *id;
	bool fresh;
	unsigned upgrade_from; /* an older index format found: rebuild it */
};

static int open_dbs(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct open_ctx *oc = arg;
	static const char *const names[] = {
		"state", "disks", "names", "versions", "vmap", "time", "segments",
		"marks",
	};
	MDB_dbi *dbis[] = {
		&ix->db_state, &ix->db_disks, &ix->db_names, &ix->db_versions,
		&ix->db_vmap, &ix->db_time, &ix->db_segments, &ix->db_marks,
	};
	MDB_val k = { 8, (void *)"store_id" }, d;
	int rc;

	for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
		rc = mdb_dbi_open(txn, names[i], MDB_CREATE, dbis[i]);
		if (rc)
			return rc;
	}
	rc = mdb_set_compare(txn, ix->db_versions, vkey_cmp);
	if (rc == 0)
		rc = mdb_set_compare(txn, ix->db_vmap, vkey_cmp);
	if (rc)
		return rc;
	rc = mdb_get(txn, ix->db_state, &k, &d);
	if (rc == MDB_NOTFOUND) {
		uint8_t fv[4];
		MDB_val fk = { 6, (void *)"format" }, fd = { 4, fv };

		rw_put_le32(fv, IX_INDEX_FORMAT);
		d.mv_size = 16;
		d.mv_data = (void *)oc->id;
		if ((rc = mdb_put(txn, ix->db_state, &k, &d, 0)) ||
		    (rc = mdb_put(txn, ix->db_state, &fk, &fd, 0)) ||
		    (rc = put_mapsize(ix, txn)))
			return rc;
		oc->fresh = true;
		return 0;
	}
	if (rc)
		return rc;
	if (d.mv_size != 16 || memcmp(d.mv_data, oc->id, 16) != 0)
		return rw_err_set(RW_ECORRUPT,
				  "store '%s': index belongs to another store (store id differs from rewind.store); remove '%s/index' and reindex",
				  ix->dir, ix->dir);
	k.mv_size = 6;
	k.mv_data = (void *)"format";
	rc = mdb_get(txn, ix->db_state, &k, &d);
	if (rc == 0 && d.mv_size == 4 && rw_get_le32(d.mv_data) < IX_INDEX_FORMAT &&
	    rw_get_le32(d.mv_data) >= IX_INDEX_FORMAT_MIN) {
		oc->upgrade_from = rw_get_le32(d.mv_data);
		return 0;
	}
	if (rc == 0 && (d.mv_size != 4 || rw_get_le32(d.mv_data) != IX_INDEX_FORMAT))
		return rw_err_set(RW_EVERSION, "store '%s': index format %u, this rewind reads %u; remove '%s/index' and run 'rewind reindex' to rebuild it from the journals (marks live only in the index: note them first with an older rewind)",
				  ix->dir, d.mv_size == 4 ? rw_get_le32(d.mv_data) : 0,
				  IX_INDEX_FORMAT, ix->dir);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_format(struct ix *ix, MDB_txn *txn, void *arg)
{
	uint8_t fv[4];
	MDB_val fk = { 6, (void *)"format" }, fd = { 4, fv };

	(void)arg;
	rw_put_le32(fv, IX_INDEX_FORMAT);
	return mdb_put(txn, ix->db_state, &fk, &fd, 0);
}

/*
 * An index of an older format (>= IX_INDEX_FORMAT_MIN): its derived tables
 * are dropped (one transaction, marks and disk state kept), the format is
 * recorded, and they are rebuilt from the journals before the open
 * returns.  A crash between the two steps leaves the old format number
 * over empty tables, and the next open drops them again.  Only an open
 * holding the store lock may do this (a server of an older rewind may be
 * using the index); others say what to run.
 */
static int upgrade(struct ix *ix, unsigned from)
{
	int rc;

	if ((ix->flags & IX_RDONLY) || !(ix->flags & IX_LOCK))
		return rw_err_set(RW_EVERSION, "store '%s': index format %u, this rewind reads %u; 'rewind reindex' (or any command that locks the store, such as 'rewind serve') rebuilds it from the journals, keeping the marks",
				  ix->dir, from, IX_INDEX_FORMAT);
	rc = ix_clear_derived(ix);
	if (rc == 0)
		rc = ix_write(ix, put_format, NULL, "recording the index format");
	return rc;
}

static uint64_t initial_mapsize(void)
{
	const char *e = getenv("REWIND_MAPSIZE");
	uint64_t v;

	if (e && *e && rw_parse_size(e, &v) == 0 && v >= 65536)
		return v;
	return IX_MAPSIZE_DEFAULT;
}

int ix_open(struct ix **out, const char *dir, unsigned flags)
{
	struct ix *ix = NULL;
	char p[4096];
	struct open_ctx oc = { 0 };
	int rc;

	*out = NULL;
	ix = calloc(1, sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	ix->lock_fd = -1;
	pthread_rwlock_init(&ix->txlock, NULL);
	pthread_mutex_init(&ix->sum_lock, NULL);
	ix->flags = flags;
	ix->dir = strdup(dir);
	if (!ix->dir) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_store_file(dir, ix->store_id);
	if (rc)
		goto out;
	if ((flags & IX_LOCK) && !(flags & IX_RDONLY)) {
		snprintf(p, sizeof(p), "%s/lock", dir);
		ix->lock_fd = rw_sys_open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (ix->lock_fd < 0) {
			rc = rw_err_set(ix->lock_fd, "cannot open '%s': %s", p,
					strerror(-ix->lock_fd));
			goto out;
		}
		if (flock(ix->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			rc = errno == EWOULDBLOCK
				? rw_err_set(RW_EBUSY, "store '%s' is locked by another process (a running server?)", dir)
				: rw_err_set(-errno, "cannot lock '%s': %s", p, strerror(errno));
			goto out;
		}
	}
	snprintf(p, sizeof(p), "%s/index", dir);
	rc = mkdir_p1(p);
	if (rc)
		goto out;
	rc = mdb_env_create(&ix->env);
	if (rc) {
		ix->env = NULL;
		rc = ix_fail(ix, rc, "creating the environment");
		goto out;
	}
	mdb_env_set_maxdbs(ix->env, 16);
	mdb_env_set_maxreaders(ix->env, 1022);
	mdb_env_set_mapsize(ix->env, initial_mapsize());
	/* REWIND_INDEX_NOSYNC=1: measurement only (bench_index -s); unsafe on
	 * power loss, see the design note. */
	const char *ns = getenv("REWIND_INDEX_NOSYNC");
	rc = mdb_env_open(ix->env, p, MDB_NOTLS | MDB_NOMETASYNC |
			  (ns && *ns == '1' ? MDB_NOSYNC : 0), 0644);
	if (rc) {
		rc = ix_fail(ix, rc, "opening the environment");
		goto out;
	}
	{
		int dead = 0;
		mdb_reader_check(ix->env, &dead);
	}
	{
		/* Adopt the map size recorded by whoever grew it last. */
		MDB_envinfo info;
		mdb_env_info(ix->env, &info);
		MDB_txn *t;
		if (mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &t) == 0) {
			MDB_dbi sdb;
			MDB_val k = { 7, (void *)"mapsize" }, d;
			if (mdb_dbi_open(t, "state", 0, &sdb) == 0 &&
			    mdb_get(t, sdb, &k, &d) == 0 && d.mv_size == 8 &&
			    rw_get_le64(d.mv_data) > info.me_mapsize) {
				uint64_t want = rw_get_le64(d.mv_data);
				mdb_txn_abort(t);
				mdb_env_set_mapsize(ix->env, want);
			} else {
				mdb_txn_abort(t);
			}
		}
	}
	oc.id = ix->store_id;
	{
		/* Opening the DBs needs a write txn the first time, even read-only. */
		unsigned saved = ix->flags;
		ix->flags &= ~(unsigned)IX_RDONLY;
		rc = ix_write(ix, open_dbs, &oc, "opening databases");
		ix->flags = saved;
	}
	if (rc)
		goto out;
	if (oc.upgrade_from) {
		rc = upgrade(ix, oc.upgrade_from);
		if (rc)
			goto out;
	}
	if (!(flags & IX_RDONLY)) {
		rc = ix_register_meta(ix);
		if (rc == 0)
			rc = ix_horizon_sync(ix); /* index/compact.c */
		if (rc)
			goto out;
	}
	if (oc.upgrade_from) {
		/* Rebuilt now, with the disks' state synced: no opener sees
		 * the tables empty. */
		rc = ix_catch_up(ix, NULL, NULL);
		if (rc < 0)
			goto out;
		rc = 0;
	}
	*out = ix;
	ix = NULL;
out:
	ix_close(ix);
	return rc;
}

void ix_close(struct ix *ix)
{
	if (!ix)
		return;
	if (ix->env)
		mdb_env_close(ix->env);
	if (ix->lock_fd >= 0)
		close(ix->lock_fd);
	pthread_rwlock_destroy(&ix->txlock);
	ix_sum_free_all(ix);
	pthread_mutex_destroy(&ix->sum_lock);
	free(ix->dir);
	free(ix);
}

const char *ix_store_dir(const struct ix *ix)
{
	return ix->dir;
}

/* ------------------------------------------------------------ codecs */

size_t ix_diskval_encode(uint8_t *v, size_t cap, const struct ix_disk *d)
{
	size_t nl = strlen(d->name);

	if (cap < IX_DISKVAL_MIN + nl)
		return 0;
	rw_put_le64(v, d->size);
	rw_put_le32(v + 8, d->block_size);
	rw_put_le64(v + 12, d->ctime_ns);
	rw_put_le64(v + 20, d->horizon_seq);
	rw_put_le64(v + 28, d->horizon_ts);
	rw_put_le64(v + 36, d->last_indexed_seq);
	rw_put_le64(v + 44, d->head_synced_seq);
	v[52] = (uint8_t)nl;
	memcpy(v + 53, d->name, nl);
	if (!d->base_seq)
		return IX_DISKVAL_MIN + nl;
	if (cap < IX_DISKVAL_MIN + nl + 8)
		return 0;
	/* Compacted disks only: base_seq after the name (FORMAT.md). */
	rw_put_le64(v + 53 + nl, d->base_seq);
	return IX_DISKVAL_MIN + nl + 8;
}

int ix_diskval_decode(const uint8_t *v, size_t n, uint32_t id,
		      struct ix_disk *d)
{
	if (n < IX_DISKVAL_MIN || v[52] == 0 || v[52] > IX_NAME_MAX ||
	    (n != IX_DISKVAL_MIN + v[52] && n != IX_DISKVAL_MIN + v[52] + 8u))
		return RW_ECORRUPT;
	memset(d, 0, sizeof(*d));
	d->id = id;
	d->size = rw_get_le64(v);
	d->block_size = rw_get_le32(v + 8);
	d->ctime_ns = rw_get_le64(v + 12);
	d->horizon_seq = rw_get_le64(v + 20);
	d->horizon_ts = rw_get_le64(v + 28);
	d->last_indexed_seq = rw_get_le64(v + 36);
	d->head_synced_seq = rw_get_le64(v + 44);
	memcpy(d->name, v + 53, v[52]);
	d->name[v[52]] = 0;
	if (n == IX_DISKVAL_MIN + v[52] + 8u)
		d->base_seq = rw_get_le64(v + 53 + v[52]);
	if (d->block_size < 512 || (d->block_size & (d->block_size - 1)))
		return RW_ECORRUPT;
	return 0;
}

void ix_segval_encode(uint8_t v[IX_SEGVAL], const struct ix_segment *s)
{
	rw_put_le64(v, s->first_seq);
	rw_put_le64(v + 8, s->last_seq);
	rw_put_le64(v + 16, s->first_ts);
	rw_put_le64(v + 24, s->last_ts);
	rw_put_le64(v + 32, s->bytes);
	rw_put_le64(v + 40, s->records);
	v[48] = s->sealed ? 1 : 0;
}

int ix_segval_decode(const uint8_t *v, size_t n, struct ix_segment *s)
{
	if (n != IX_SEGVAL)
		return RW_ECORRUPT;
	s->first_seq = rw_get_le64(v);
	s->last_seq = rw_get_le64(v + 8);
	s->first_ts = rw_get_le64(v + 16);
	s->last_ts = rw_get_le64(v + 24);
	s->bytes = rw_get_le64(v + 32);
	s->records = rw_get_le64(v + 40);
	s->sealed = v[48] != 0;
	return 0;
}
