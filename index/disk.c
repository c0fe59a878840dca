/*
 * disk.c — disks: creation and import, disk.meta, the disks and names
 * databases.
 *
 * How: a disk is built complete in a hidden directory disks/.NAME.tmp
 * (disk.meta, head.img, base.img, journal/) and renamed to disks/NAME in
 * one step, then the directory is synced and the disk registered in LMDB.
 * A crash before the rename leaves only a hidden leftover (removed by the
 * next create of that name); a crash after it leaves a disk.meta that
 * ix_open registers.  disk.meta is the durable identity; the LMDB entry is
 * derived from it plus the mutable fields (horizon, last indexed, head
 * synced).
 *
 * Import copies only data: the source's extents are found with
 * SEEK_DATA/SEEK_HOLE and all-zero blocks inside them are skipped, so a
 * sparse or mostly-zero image stays sparse in base.img and head.img.
 * Rejected: copy_file_range / reflinks — faster on some filesystems but
 * they copy zero-filled extents as data and give no control of holes.
 *
 * Disk ids: max(last id in the state DB, every id in the disks DB, every
 * id in a disk.meta) + 1, so an id is never reused even after an index
 * rebuild (disk.meta keeps the ids of live disks; the state DB keeps the
 * high-water mark across deletions).
 */
#include "index/ix_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ix_disk_path(const struct ix *ix, const char *name, const char *what,
		 char *buf, size_t bufsz)
{
	int n = what && *what
		? snprintf(buf, bufsz, "%s/disks/%s/%s", ix->dir, name, what)
		: snprintf(buf, bufsz, "%s/disks/%s", ix->dir, name);

	if (n < 0 || (size_t)n >= bufsz)
		return rw_err_set(-ENAMETOOLONG, "path too long for disk '%s'", name);
	return 0;
}

int ix_disk_load(struct ix *ix, MDB_txn *txn, uint32_t id, struct ix_disk *d)
{
	uint8_t kb[4];
	MDB_val k = { 4, kb }, v;
	int rc;

	rw_put_be32(kb, id);
	rc = mdb_get(txn, ix->db_disks, &k, &v);
	if (rc)
		return rc;
	if (ix_diskval_decode(v.mv_data, v.mv_size, id, d))
		return rw_err_set(RW_ECORRUPT, "store '%s': index entry of disk id %u is corrupt",
				  ix->dir, id);
	return 0;
}

int ix_disk_store(struct ix *ix, MDB_txn *txn, const struct ix_disk *d)
{
	uint8_t kb[4], vb[IX_DISKVAL_MIN + IX_NAME_MAX + 8];
	MDB_val k = { 4, kb }, v = { 0, vb };

	rw_put_be32(kb, d->id);
	v.mv_size = ix_diskval_encode(vb, sizeof(vb), d);
	return mdb_put(txn, ix->db_disks, &k, &v, 0);
}

/* Registers d (id, name) in disks and names unless the id is known. */
static int register_one(struct ix *ix, MDB_txn *txn, const struct ix_disk *d)
{
	struct ix_disk old;
	uint8_t idb[4];
	MDB_val nk = { strlen(d->name), (void *)d->name }, nv = { 4, idb };
	int rc = ix_disk_load(ix, txn, d->id, &old);

	if (rc == 0)
		return 0;
	if (rc != MDB_NOTFOUND)
		return rc;
	rw_put_be32(idb, d->id);
	rc = mdb_put(txn, ix->db_names, &nk, &nv, 0);
	return rc ? rc : ix_disk_store(ix, txn, d);
}

static int max_meta_id(struct ix *ix, uint32_t *max, const char *name,
		       bool *name_found)
{
	char p[4096];
	DIR *dd;
	struct dirent *de;

	snprintf(p, sizeof(p), "%s/disks", ix->dir);
	dd = opendir(p);
	if (!dd)
		return errno == ENOENT ? 0
			: rw_err_set(-errno, "cannot open '%s': %s", p, strerror(errno));
	while ((de = readdir(dd))) {
		struct ix_disk d;
		if (de->d_name[0] == '.')
			continue;
		if (name && name_found && strcmp(de->d_name, name) == 0)
			*name_found = true;
		if (snprintf(p, sizeof(p), "%s/disks/%s/disk.meta", ix->dir,
			     de->d_name) >= (int)sizeof(p))
			continue;
		if (ix_meta_read(p, &d) == 0 && d.id > *max)
			*max = d.id;
	}
	closedir(dd);
	return 0;
}

struct reg_ctx {
	struct ix_disk *disks;
	size_t n;
	const struct ix_disk *keep; /* rebuild: old mutable fields */
	size_t nkeep;
	bool clear;                 /* rebuild: drop the derived DBs first */
};

static int clear_fn(struct ix *ix, MDB_txn *txn)
{
	int rc;

	if ((rc = mdb_drop(txn, ix->db_versions, 0)) ||
	    (rc = mdb_drop(txn, ix->db_vmap, 0)) ||
	    (rc = mdb_drop(txn, ix->db_time, 0)) ||
	    (rc = mdb_drop(txn, ix->db_segments, 0)) ||
	    (rc = mdb_drop(txn, ix->db_names, 0)) ||
	    (rc = mdb_drop(txn, ix->db_disks, 0)))
		return rc;
	return 0;
}

static int register_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct reg_ctx *rc_ = arg;
	int rc;

	if (rc_->clear && (rc = clear_fn(ix, txn)))
		return rc;
	for (size_t i = 0; i < rc_->n; i++) {
		struct ix_disk d = rc_->disks[i];
		for (size_t j = 0; j < rc_->nkeep; j++) {
			if (rc_->keep[j].id == d.id) {
				d.horizon_seq = rc_->keep[j].horizon_seq;
				d.horizon_ts = rc_->keep[j].horizon_ts;
				d.head_synced_seq = rc_->keep[j].head_synced_seq;
				d.base_seq = rc_->keep[j].base_seq;
			}
		}
		rc = register_one(ix, txn, &d);
		if (rc)
			return rc;
	}
	return 0;
}

static int register_with(struct ix *ix, const struct ix_disk *keep, size_t nkeep,
			 bool clear)
{
	char p[4096];
	DIR *dd = NULL;
	struct dirent *de;
	struct reg_ctx ctx = { .keep = keep, .nkeep = nkeep, .clear = clear };
	size_t cap = 0;
	int rc = 0;

	snprintf(p, sizeof(p), "%s/disks", ix->dir);
	dd = opendir(p);
	if (!dd)
		return errno == ENOENT ? 0
			: rw_err_set(-errno, "cannot open '%s': %s", p, strerror(errno));
	while ((de = readdir(dd))) {
		struct ix_disk d;
		if (de->d_name[0] == '.')
			continue;
		if (snprintf(p, sizeof(p), "%s/disks/%s/disk.meta", ix->dir,
			     de->d_name) >= (int)sizeof(p))
			continue;
		rc = ix_meta_read(p, &d);
		if (rc == RW_ENOTFOUND) {
			rc = 0;
			continue;
		}
		if (rc)
			goto out;
		if (strcmp(d.name, de->d_name) != 0) {
			rc = rw_err_set(RW_ECORRUPT, "'%s' names disk '%s', not '%s'",
					p, d.name, de->d_name);
			goto out;
		}
		if (ctx.n == cap) {
			cap = cap ? cap * 2 : 8;
			struct ix_disk *nd = realloc(ctx.disks, cap * sizeof(*nd));
			if (!nd) {
				rc = -ENOMEM;
				goto out;
			}
			ctx.disks = nd;
		}
		ctx.disks[ctx.n++] = d;
	}
	if (ctx.n || clear)
		rc = ix_write(ix, register_fn, &ctx, "registering disks");
out:
	closedir(dd);
	free(ctx.disks);
	return rc;
}

int ix_register_meta(struct ix *ix)
{
	return register_with(ix, NULL, 0, false);
}

int ix_clear_derived(struct ix *ix)
{
	struct ix_disk *old = NULL;
	int n = ix_disk_list(ix, &old);
	int rc;

	if (n < 0)
		return n;
	/* One txn: drop and re-register, so a crash leaves either index. */
	rc = register_with(ix, old, (size_t)n, true);
	free(old);
	return rc;
}

/* ------------------------------------------------------------ create */

static int rm_tree(const char *path)
{
	DIR *dd = opendir(path);
	struct dirent *de;
	char p[4096];

	if (!dd)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(dd))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			rm_tree(p);
		else
			unlink(p);
	}
	closedir(dd);
	return rmdir(path) ? -errno : 0;
}

/* Copies the data of src into both fds, keeping holes. */
static int import_copy(const char *src, int sfd, uint64_t size, uint32_t bs,
		       int fd1, int fd2, const char *dst1, const char *dst2)
{
	const size_t chunk = 1u << 20;
	uint8_t *buf = malloc(chunk);
	off_t pos = 0;
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while ((uint64_t)pos < size) {
		off_t data = lseek(sfd, pos, SEEK_DATA), hole;
		if (data < 0) {
			if (errno == ENXIO)
				break; /* only a hole remains */
			if (errno != EINVAL) {
				rc = rw_err_set(-errno, "cannot seek in '%s': %s", src,
						strerror(errno));
				goto out;
			}
			data = pos; /* no SEEK_DATA support: all data */
			hole = (off_t)size;
		} else {
			hole = lseek(sfd, data, SEEK_HOLE);
			if (hole < 0 || (uint64_t)hole > size)
				hole = (off_t)size;
		}
		/* Align the extent start down to a block. */
		data -= data % bs;
		for (off_t o = data; o < hole;) {
			size_t want = (size_t)((uint64_t)(hole - o) < chunk ? (uint64_t)(hole - o) : chunk);
			ssize_t n = rw_sys_pread_full(sfd, buf, want, o);
			if (n < 0) {
				rc = rw_err_set((int)n, "cannot read '%s' at %lld: %s", src,
						(long long)o, strerror((int)-n));
				goto out;
			}
			if (n == 0)
				break;
			for (size_t b = 0; b < (size_t)n; b += bs) {
				size_t len = (size_t)n - b < bs ? (size_t)n - b : bs;
				if (rw_all_zero(buf + b, len))
					continue;
				rc = rw_sys_pwrite_full(fd1, buf + b, len, o + (off_t)b);
				if (rc < 0) {
					rw_err_set(rc, "cannot write '%s': %s", dst1, strerror(-rc));
					goto out;
				}
				rc = rw_sys_pwrite_full(fd2, buf + b, len, o + (off_t)b);
				if (rc < 0) {
					rw_err_set(rc, "cannot write '%s': %s", dst2, strerror(-rc));
					goto out;
				}
			}
			o += n;
		}
		pos = hole;
	}
out:
	free(buf);
	return rc;
}

static int make_img(const char *path, uint64_t size, int *fdout)
{
	int fd = rw_sys_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int rc;

	if (fd < 0)
		return rw_err_set(fd, "cannot create '%s': %s", path, strerror(-fd));
	rc = rw_sys_ftruncate(fd, (off_t)size);
	if (rc < 0) {
		close(fd);
		return rw_err_set(rc, "cannot size '%s': %s", path, strerror(-rc));
	}
	*fdout = fd;
	return 0;
}

struct create_ctx {
	struct ix_disk *d;
	uint32_t meta_max;
};

static int alloc_id_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct create_ctx *cc = arg;
	MDB_cursor *c = NULL;
	MDB_val k = { 12, (void *)"last_disk_id" }, v;
	MDB_val nk = { strlen(cc->d->name), (void *)cc->d->name };
	uint32_t max = cc->meta_max;
	uint8_t idb[4];
	int rc;

	rc = mdb_get(txn, ix->db_names, &nk, &v);
	if (rc == 0)
		return rw_err_set(RW_EEXIST, "disk '%s' already exists in store '%s'",
				  cc->d->name, ix->dir);
	if (rc != MDB_NOTFOUND)
		return rc;
	rc = mdb_get(txn, ix->db_state, &k, &v);
	if (rc == 0 && v.mv_size == 4 && rw_get_le32(v.mv_data) > max)
		max = rw_get_le32(v.mv_data);
	else if (rc && rc != MDB_NOTFOUND)
		return rc;
	rc = mdb_cursor_open(txn, ix->db_disks, &c);
	if (rc)
		return rc;
	MDB_val ck, cv;
	rc = mdb_cursor_get(c, &ck, &cv, MDB_LAST);
	mdb_cursor_close(c);
	if (rc == 0 && ck.mv_size == 4 && rw_get_be32(ck.mv_data) > max)
		max = rw_get_be32(ck.mv_data);
	else if (rc && rc != MDB_NOTFOUND)
		return rc;
	if (max == UINT32_MAX)
		return rw_err_set(-EOVERFLOW, "store '%s': no disk ids left", ix->dir);
	cc->d->id = max + 1;
	rw_put_le32(idb, cc->d->id);
	v.mv_size = 4;
	v.mv_data = idb;
	return mdb_put(txn, ix->db_state, &k, &v, 0);
}

static int register_fn1(struct ix *ix, MDB_txn *txn, void *arg)
{
	return register_one(ix, txn, arg);
}

int ix_disk_create(struct ix *ix, const char *name, uint64_t size,
		   uint32_t block_size, const char *base_src,
		   struct ix_disk *out)
{
	char tmpdir[4000], final[4096], p1[4096], p2[4096];
	struct ix_disk d;
	struct create_ctx cc = { .d = &d };
	bool exists = false;
	int sfd = -1, hfd = -1, bfd = -1, rc;
	struct stat st;

	memset(&d, 0, sizeof(d));
	if (!ix_name_valid(name))
		return rw_err_set(-EINVAL, "invalid disk name '%s' (use 1..%d of [A-Za-z0-9._-], not starting with '.')",
				  name ? name : "", IX_NAME_MAX);
	if (block_size == 0)
		block_size = IX_BLOCK_SIZE_DEFAULT;
	if (block_size < 512 || block_size > (1u << 20) ||
	    (block_size & (block_size - 1)))
		return rw_err_set(-EINVAL, "disk '%s': block size %u is not a power of two in 512..1048576",
				  name, block_size);
	if (base_src) {
		sfd = rw_sys_open(base_src, O_RDONLY | O_CLOEXEC, 0);
		if (sfd < 0)
			return rw_err_set(sfd, "cannot open '%s': %s", base_src,
					  strerror(-sfd));
		if (fstat(sfd, &st) < 0) {
			rc = rw_err_set(-errno, "cannot stat '%s': %s", base_src, strerror(errno));
			goto out;
		}
		if (S_ISBLK(st.st_mode)) {
			off_t e = lseek(sfd, 0, SEEK_END);
			size = e > 0 ? (uint64_t)e : 0;
		} else {
			size = (uint64_t)st.st_size;
		}
	}
	if (size == 0 || size % 512 || size > (1ull << 62)) {
		if (base_src)
			rc = rw_err_set(-EINVAL, "disk '%s': size of '%s' (%llu bytes) is not a positive multiple of 512",
					name, base_src, (unsigned long long)size);
		else
			rc = rw_err_set(-EINVAL, "disk '%s': size %llu is not a positive multiple of 512",
					name, (unsigned long long)size);
		goto out;
	}
	if ((rc = ix_disk_path(ix, name, NULL, final, sizeof(final))) ||
	    (size_t)snprintf(tmpdir, sizeof(tmpdir), "%s/disks/.%s.tmp", ix->dir, name) >= sizeof(tmpdir))
		goto out;
	rc = max_meta_id(ix, &cc.meta_max, name, &exists);
	if (rc)
		goto out;
	if (exists || access(final, F_OK) == 0) {
		rc = rw_err_set(RW_EEXIST, "disk '%s' already exists in store '%s'", name, ix->dir);
		goto out;
	}
	snprintf(d.name, sizeof(d.name), "%s", name);
	d.size = size;
	d.block_size = block_size;
	d.ctime_ns = rw_clock_ns();
	rc = ix_write(ix, alloc_id_fn, &cc, "allocating a disk id");
	if (rc)
		goto out;
	rm_tree(tmpdir);
	rc = rw_sys_mkdir(tmpdir, 0755);
	if (rc < 0) {
		rw_err_set(rc, "cannot create '%s': %s", tmpdir, strerror(-rc));
		goto out;
	}
	snprintf(p1, sizeof(p1), "%s/journal", tmpdir);
	rc = rw_sys_mkdir(p1, 0755);
	if (rc < 0) {
		rw_err_set(rc, "cannot create '%s': %s", p1, strerror(-rc));
		goto out;
	}
	snprintf(p1, sizeof(p1), "%s/base.img", tmpdir);
	snprintf(p2, sizeof(p2), "%s/head.img", tmpdir);
	if ((rc = make_img(p1, size, &bfd)) || (rc = make_img(p2, size, &hfd)))
		goto out;
	if (sfd >= 0) {
		rc = import_copy(base_src, sfd, size, block_size, bfd, hfd, p1, p2);
		if (rc)
			goto out;
	}
	if ((rc = rw_sys_fsync(bfd)) < 0 || (rc = rw_sys_fsync(hfd)) < 0) {
		rw_err_set(rc, "cannot sync the images of disk '%s': %s", name, strerror(-rc));
		goto out;
	}
	rc = ix_meta_write(tmpdir, &d);
	if (rc)
		goto out;
	rc = rw_sys_rename(tmpdir, final);
	if (rc < 0) {
		rw_err_set(rc == -ENOTEMPTY || rc == -EEXIST ? RW_EEXIST : rc,
			   "cannot rename '%s' to '%s': %s", tmpdir, final, strerror(-rc));
		rc = rc == -ENOTEMPTY || rc == -EEXIST ? RW_EEXIST : rc;
		goto out;
	}
	snprintf(p1, sizeof(p1), "%s/disks", ix->dir);
	rc = rw_sys_fsync_dir(p1);
	if (rc < 0) {
		rw_err_set(rc, "cannot sync '%s': %s", p1, strerror(-rc));
		goto out;
	}
	rc = ix_write(ix, register_fn1, &d, "registering a disk");
	if (rc)
		goto out;
	if (out)
		*out = d;
out:
	if (sfd >= 0)
		close(sfd);
	if (hfd >= 0)
		close(hfd);
	if (bfd >= 0)
		close(bfd);
	if (rc && access(tmpdir, F_OK) == 0)
		rm_tree(tmpdir);
	return rc;
}

/* ------------------------------------------------------------ lookups */

int ix_disk_get_id(struct ix *ix, uint32_t id, struct ix_disk *out)
{
	MDB_txn *txn;
	int rc = ix_txn_begin(ix, MDB_RDONLY, &txn);

	if (rc)
		return ix_fail(ix, rc, "reading a disk");
	rc = ix_disk_load(ix, txn, id, out);
	ix_txn_abort(ix, txn);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u", ix->dir, id);
	return ix_fail(ix, rc, "reading a disk");
}

int ix_disk_get(struct ix *ix, const char *name, struct ix_disk *out)
{
	MDB_txn *txn;
	MDB_val k = { name ? strlen(name) : 0, (void *)name }, v;
	uint32_t id = 0;
	int rc;

	if (!name || !ix_name_valid(name))
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk named '%s'",
				  ix->dir, name ? name : "");
	rc = ix_txn_begin(ix, MDB_RDONLY, &txn);
	if (rc)
		return ix_fail(ix, rc, "reading a disk");
	rc = mdb_get(txn, ix->db_names, &k, &v);
	if (rc == 0) {
		if (v.mv_size != 4) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': names entry of '%s' is corrupt", ix->dir, name);
		} else {
			id = rw_get_be32(v.mv_data);
			rc = ix_disk_load(ix, txn, id, out);
		}
	}
	ix_txn_abort(ix, txn);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk named '%s'", ix->dir, name);
	return ix_fail(ix, rc, "reading a disk");
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct ix_disk *)a)->name, ((const struct ix_disk *)b)->name);
}

int ix_disk_list(struct ix *ix, struct ix_disk **out)
{
	MDB_txn *txn = NULL;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	struct ix_disk *arr = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*out = NULL;
	rc = ix_txn_begin(ix, MDB_RDONLY, &txn);
	if (rc)
		return ix_fail(ix, rc, "listing disks");
	rc = mdb_cursor_open(txn, ix->db_disks, &c);
	for (int op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
		rc = mdb_cursor_get(c, &k, &v, (MDB_cursor_op)op);
		if (rc)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			struct ix_disk *na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				rc = -ENOMEM;
				break;
			}
			arr = na;
		}
		if (k.mv_size != 4 ||
		    ix_diskval_decode(v.mv_data, v.mv_size, rw_get_be32(k.mv_data), &arr[n])) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt disks entry", ix->dir);
			break;
		}
		n++;
	}
	if (c)
		mdb_cursor_close(c);
	ix_txn_abort(ix, txn);
	if (rc != MDB_NOTFOUND) {
		free(arr);
		return ix_fail(ix, rc, "listing disks");
	}
	if (n)
		qsort(arr, n, sizeof(*arr), cmp_name);
	*out = arr;
	return (int)n;
}

struct set_ctx {
	uint32_t id;
	int what; /* 0 horizon, 1 head */
	uint64_t seq, ts;
};

static int set_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct set_ctx *sc = arg;
	struct ix_disk d;
	int rc = ix_disk_load(ix, txn, sc->id, &d);

	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u", ix->dir, sc->id);
	if (rc)
		return rc;
	if (sc->what == 0) {
		d.horizon_seq = sc->seq;
		d.horizon_ts = sc->ts;
	} else {
		d.head_synced_seq = sc->seq;
	}
	return ix_disk_store(ix, txn, &d);
}

int ix_disk_set_horizon(struct ix *ix, uint32_t id, uint64_t seq, uint64_t ts)
{
	struct set_ctx sc = { id, 0, seq, ts };

	return ix_write(ix, set_fn, &sc, "setting the horizon");
}

int ix_disk_set_head_synced(struct ix *ix, uint32_t id, uint64_t seq)
{
	struct set_ctx sc = { id, 1, seq, 0 };

	return ix_write(ix, set_fn, &sc, "setting head_synced_seq");
}
