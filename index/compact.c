/*
 * compact.c — the index side of compaction: each disk's horizon file
 * (horizon and base_seq, durable outside LMDB), and dropping the index
 * entries and segment files that compaction folded into base.img.
 *
 * How: disks/NAME/horizon (44 bytes, FORMAT.md) holds horizon_seq,
 * horizon_ts and base_seq; it is replaced atomically (tmp + fsync + rename
 * + directory fsync) and mirrored into the disk's LMDB entry afterwards, so
 * the file is never behind the index.  ix_open (and ix_horizon_sync) copies
 * a file that is ahead into LMDB, which repairs a crash between the two
 * writes and a lost or rebuilt index alike.
 *
 * Dropping (ix_compact_drop) works at or below base_seq only, so whatever it
 * removes is already in a synced base.img: time map entries of the disk's
 * records <= base_seq (found by reading the journal's headers), block
 * versions <= base_seq (in slices of IX_DROP_SLICE deletions per
 * transaction, so a huge history never makes one huge transaction),
 * sealed segment rows whose last_seq <= base_seq, and — on request —
 * marks below the horizon.  Every part is idempotent.  Segment files are
 * unlinked afterwards (ix_compact_unlink), only when their row is gone,
 * a header scan of the journal shows every record in them is <= base_seq,
 * and they are not the journal's last file (the writer's current one).
 *
 * Rejected: keeping horizon and base_seq only in LMDB (the index must stay
 * rebuildable from files alone: a lost index would otherwise re-index
 * records already folded, over a base that no longer matches them), and
 * bumping disk.meta's version to hold them (disk.meta is identity, written
 * once; a separate file keeps its rules simple and old stores readable).
 */
#include "index/ix_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IX_HORIZON_MAGIC "RWHORIZ1"
#define IX_HORIZON_SIZE 44u
#define IX_DROP_SLICE 65536u

/* ------------------------------------------------------- horizon file */

int ix_horizon_read(const struct ix *ix, const char *name, struct ix_horizon *h)
{
	uint8_t b[IX_HORIZON_SIZE + 1];
	char path[4096];
	ssize_t n;
	int fd, rc;

	memset(h, 0, sizeof(*h));
	if ((rc = ix_disk_path(ix, name, "horizon", path, sizeof(path))))
		return rc;
	fd = rw_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd == -ENOENT)
		return 0; /* never compacted */
	if (fd < 0)
		return rw_err_set(fd, "cannot open '%s': %s", path, strerror(-fd));
	n = rw_sys_pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n < 0)
		return rw_err_set((int)n, "cannot read '%s': %s", path,
				  strerror((int)-n));
	if (n != IX_HORIZON_SIZE || memcmp(b, IX_HORIZON_MAGIC, 8) != 0)
		return rw_err_set(RW_ECORRUPT, "'%s' is not a horizon file (bad size or magic)", path);
	if (rw_get_le32(b + 40) != rw_crc32c(0, b, 40))
		return rw_err_set(RW_ECORRUPT, "'%s': checksum mismatch", path);
	if (rw_get_le32(b + 8) != 1)
		return rw_err_set(RW_EVERSION, "'%s': unsupported version %u", path,
				  rw_get_le32(b + 8));
	h->disk_id = rw_get_le32(b + 12);
	h->horizon_seq = rw_get_le64(b + 16);
	h->horizon_ts = rw_get_le64(b + 24);
	h->base_seq = rw_get_le64(b + 32);
	if (h->base_seq > h->horizon_seq)
		return rw_err_set(RW_ECORRUPT, "'%s': base_seq %llu is past the horizon %llu",
				  path, (unsigned long long)h->base_seq,
				  (unsigned long long)h->horizon_seq);
	return 0;
}

static int horizon_write(const struct ix *ix, const char *name,
			 const struct ix_horizon *h)
{
	uint8_t b[IX_HORIZON_SIZE];
	char dir[4096], tmp[4200], dst[4200];
	int fd = -1, rc;

	if ((rc = ix_disk_path(ix, name, NULL, dir, sizeof(dir))))
		return rc;
	snprintf(tmp, sizeof(tmp), "%s/.horizon.tmp", dir);
	snprintf(dst, sizeof(dst), "%s/horizon", dir);
	memset(b, 0, sizeof(b));
	memcpy(b, IX_HORIZON_MAGIC, 8);
	rw_put_le32(b + 8, 1);
	rw_put_le32(b + 12, h->disk_id);
	rw_put_le64(b + 16, h->horizon_seq);
	rw_put_le64(b + 24, h->horizon_ts);
	rw_put_le64(b + 32, h->base_seq);
	rw_put_le32(b + 40, rw_crc32c(0, b, 40));
	fd = rw_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rw_err_set(fd, "cannot create '%s': %s", tmp, strerror(-fd));
	if ((rc = rw_sys_pwrite_full(fd, b, sizeof(b), 0)) < 0) {
		rw_err_set(rc, "cannot write '%s': %s", tmp, strerror(-rc));
		goto fail;
	}
	if ((rc = rw_sys_fsync(fd)) < 0) {
		rw_err_set(rc, "cannot sync '%s': %s", tmp, strerror(-rc));
		goto fail;
	}
	close(fd);
	fd = -1;
	if ((rc = rw_sys_rename(tmp, dst)) < 0) {
		rw_err_set(rc, "cannot rename '%s' to '%s': %s", tmp, dst, strerror(-rc));
		goto fail;
	}
	if ((rc = rw_sys_fsync_dir(dir)) < 0) {
		rw_err_set(rc, "cannot sync directory '%s': %s", dir, strerror(-rc));
		return rc;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

struct hz_ctx {
	uint32_t id;
	struct ix_horizon h;
};

/* Copies h into the disk's entry where it is ahead (never moves back). */
static int hz_apply_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct hz_ctx *hc = arg;
	struct ix_disk d;
	int rc = ix_disk_load(ix, txn, hc->id, &d);

	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u", ix->dir, hc->id);
	if (rc)
		return rc;
	if (hc->h.horizon_seq > d.horizon_seq) {
		d.horizon_seq = hc->h.horizon_seq;
		d.horizon_ts = hc->h.horizon_ts;
	}
	if (hc->h.base_seq > d.base_seq)
		d.base_seq = hc->h.base_seq;
	/* Folded records count as indexed: never index them again. */
	if (d.last_indexed_seq < d.base_seq)
		d.last_indexed_seq = d.base_seq;
	return ix_disk_store(ix, txn, &d);
}

int ix_horizon_sync(struct ix *ix)
{
	struct ix_disk *ds = NULL;
	int n = ix_disk_list(ix, &ds), rc = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n && rc == 0; i++) {
		struct hz_ctx hc = { .id = ds[i].id };
		rc = ix_horizon_read(ix, ds[i].name, &hc.h);
		if (rc)
			break;
		if (hc.h.disk_id && hc.h.disk_id != ds[i].id) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': the horizon file of disk '%s' names disk id %u, not %u",
					ix->dir, ds[i].name, hc.h.disk_id, ds[i].id);
			break;
		}
		if (hc.h.horizon_seq > ds[i].horizon_seq ||
		    hc.h.base_seq > ds[i].base_seq)
			rc = ix_write(ix, hz_apply_fn, &hc, "loading a horizon");
	}
	free(ds);
	return rc;
}

/* Writes the file from d's fields with the changes, then mirrors it. */
static int horizon_store(struct ix *ix, const struct ix_disk *d,
			 const struct ix_horizon *h)
{
	struct hz_ctx hc = { .id = d->id, .h = *h };
	int rc = horizon_write(ix, d->name, h);

	if (rc)
		return rc;
	return ix_write(ix, hz_apply_fn, &hc, "storing a horizon");
}

int ix_disk_advance_horizon(struct ix *ix, uint32_t id, uint64_t seq, uint64_t ts)
{
	struct ix_disk d;
	struct ix_horizon h;
	int rc;

	if ((rc = ix_horizon_sync(ix)) || (rc = ix_disk_get_id(ix, id, &d)))
		return rc;
	if (seq < d.horizon_seq)
		return rw_err_set(-EINVAL, "disk '%s': the horizon cannot move back from seq %llu to %llu",
				  d.name, (unsigned long long)d.horizon_seq,
				  (unsigned long long)seq);
	if (seq == d.horizon_seq)
		return 0;
	h = (struct ix_horizon){ id, seq, ts, d.base_seq };
	return horizon_store(ix, &d, &h);
}

int ix_disk_set_base(struct ix *ix, uint32_t id, uint64_t base_seq)
{
	struct ix_disk d;
	struct ix_horizon h;
	int rc;

	if ((rc = ix_horizon_sync(ix)) || (rc = ix_disk_get_id(ix, id, &d)))
		return rc;
	if (base_seq > d.horizon_seq || base_seq < d.base_seq)
		return rw_err_set(-EINVAL, "disk '%s': base_seq %llu must lie in [%llu, horizon %llu]",
				  d.name, (unsigned long long)base_seq,
				  (unsigned long long)d.base_seq,
				  (unsigned long long)d.horizon_seq);
	if (base_seq == d.base_seq)
		return 0;
	h = (struct ix_horizon){ id, d.horizon_seq, d.horizon_ts, base_seq };
	return horizon_store(ix, &d, &h);
}

/* ------------------------------------------------------------- drop */

struct drop_ctx {
	uint32_t id;
	uint64_t base_seq, horizon_seq;
	bool drop_marks;
	/* versions: resume key */
	uint8_t from[IX_VKEY], next[IX_VKEY];
	bool done;
	/* time map */
	struct ix_tent *tm;
	size_t ntm, tm_pos, tm_next;
	uint64_t count; /* deletions made by the last successful run */
	struct ix_drop_stats *st;
};

/*
 * Drops the versions <= base_seq of dc->id from dc->from on: a chunk
 * wholly at or below base_seq is deleted; a chunk straddling it is
 * rewritten with the newer entries, keyed by the first of them; at the
 * first chunk starting above base_seq the rest of its group is skipped.
 * Stops after IX_DROP_SLICE dropped versions with the resume key in
 * dc->next.
 */
static int drop_versions_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct drop_ctx *dc = arg;
	MDB_cursor *c = NULL;
	uint8_t kb[IX_VKEY];
	MDB_val k = { IX_VKEY, kb }, v;
	struct ix_ventry *keep = NULL;
	uint8_t *buf = NULL;
	uint64_t n = 0;
	int rc = mdb_cursor_open(txn, ix->db_versions, &c);

	if (rc)
		return rc;
	dc->done = false;
	memcpy(kb, dc->from, IX_VKEY);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0) {
		const uint8_t *kp = k.mv_data;
		struct ix_cdec d;
		size_t nk = 0;
		uint64_t dropped = 0;
		int e;

		if (k.mv_size != IX_VKEY || rw_get_be32(kp) != dc->id) {
			rc = MDB_NOTFOUND;
			break;
		}
		if (n >= IX_DROP_SLICE) {
			memcpy(dc->next, kp, IX_VKEY);
			break;
		}
		if (ix_cdec_init(&d, &k, &v)) {
			rc = RW_ECORRUPT;
			break;
		}
		if (d.first_seq > dc->base_seq) {
			/* Newer chunks of this group stay: go to the next group. */
			if (d.group >= UINT64_MAX / IX_GROUP_BLOCKS) {
				rc = MDB_NOTFOUND;
				break;
			}
			ix_vkey(kb, dc->id, d.group + 1, 0);
			k.mv_size = IX_VKEY;
			k.mv_data = kb;
			rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
			continue;
		}
		if (!keep && !(keep = malloc(2 * (size_t)IX_CHUNK_HARD * sizeof(*keep)))) {
			rc = -ENOMEM;
			break;
		}
		while ((e = ix_cdec_next(&d)) > 0) {
			if (d.cur.seq <= dc->base_seq) {
				dropped++;
				continue;
			}
			keep[nk].block = d.block;
			keep[nk].v = d.cur;
			nk++;
		}
		if (e < 0) {
			rc = RW_ECORRUPT;
			break;
		}
		{
			uint8_t dk[IX_VKEY];
			MDB_val mk = { IX_VKEY, dk };
			memcpy(dk, k.mv_data, IX_VKEY);
			rc = mdb_cursor_del(c, 0);
			if (rc == 0)
				rc = mdb_del(txn, ix->db_vmap, &mk, NULL);
			if (rc == MDB_NOTFOUND)
				rc = RW_ECORRUPT; /* a chunk without its map */
			if (rc)
				break;
		}
		n += dropped;
		if (nk) {
			/* The newer tail, re-encoded as a chunk of its own —
			 * unless its record straddles into the next chunk,
			 * which then starts at the same seq: the two merge. */
			MDB_val nv;
			if (!buf && !(buf = malloc(2 * (size_t)IX_CHUNK_HARD * IX_CENT_MAX))) {
				rc = -ENOMEM;
				break;
			}
			ix_vkey(kb, dc->id, d.group, keep[0].v.seq);
			k.mv_size = IX_VKEY;
			k.mv_data = kb;
			rc = mdb_get(txn, ix->db_versions, &k, &nv);
			if (rc == 0) {
				struct ix_cdec nd;
				if (ix_cdec_init(&nd, &k, &nv)) {
					rc = RW_ECORRUPT;
					break;
				}
				while ((e = ix_cdec_next(&nd)) > 0) {
					keep[nk].block = nd.block;
					keep[nk].v = nd.cur;
					nk++;
				}
				if (e < 0) {
					rc = RW_ECORRUPT;
					break;
				}
			} else if (rc != MDB_NOTFOUND) {
				break;
			}
			rc = ix_chunk_put(txn, ix->db_versions, ix->db_vmap, kb,
					  keep, nk, buf);
			if (rc == -EOVERFLOW) {
				rc = rw_err_set(-EOVERFLOW, "store '%s': disk id %u: merged version chunk of blocks %llu.. would pass %u bytes",
						ix->dir, dc->id,
						(unsigned long long)(d.group * IX_GROUP_BLOCKS),
						IX_CHUNK_HARD);
				break;
			}
			if (rc)
				break;
		}
		/* On to the next chunk (the rewritten one starts above
		 * base_seq and sends the walk to the next group). */
		ix_vkey(kb, dc->id, d.group, d.first_seq + 1);
		k.mv_size = IX_VKEY;
		k.mv_data = kb;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	}
	mdb_cursor_close(c);
	free(keep);
	free(buf);
	if (rc == RW_ECORRUPT)
		return rw_err_set(RW_ECORRUPT, "store '%s': corrupt version chunk of disk id %u",
				  ix->dir, dc->id);
	dc->count = n;
	if (rc == MDB_NOTFOUND) {
		dc->done = true;
		rc = 0;
	}
	return rc;
}

static int drop_time_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct drop_ctx *dc = arg;
	size_t end = dc->tm_pos + IX_DROP_SLICE;
	uint64_t n = 0;
	int rc;

	if (end > dc->ntm)
		end = dc->ntm;
	rc = ix_tm_del(txn, ix->db_time, dc->tm + dc->tm_pos,
		       end - dc->tm_pos, &n);
	if (rc)
		return rc;
	dc->tm_next = end;
	dc->count = n;
	return 0;
}

static int drop_rest_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct drop_ctx *dc = arg;
	MDB_cursor *c = NULL;
	uint8_t kb[IX_SKEY];
	MDB_val k = { IX_SKEY, kb }, v;
	uint64_t segs = 0, marks = 0;
	int rc;

	if ((rc = mdb_cursor_open(txn, ix->db_segments, &c)))
		return rc;
	ix_skey(kb, dc->id, 0);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;) {
		struct ix_segment s;
		if (k.mv_size != IX_SKEY || rw_get_be32(k.mv_data) != dc->id)
			break;
		if (ix_segval_decode(v.mv_data, v.mv_size, &s)) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt segment entry of disk id %u",
					ix->dir, dc->id);
			break;
		}
		if (s.sealed && s.last_seq <= dc->base_seq) {
			if ((rc = mdb_cursor_del(c, 0)))
				break;
			segs++;
			rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
			if (rc == EINVAL)
				rc = MDB_NOTFOUND;
			continue;
		}
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	c = NULL;
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	if (dc->drop_marks) {
		uint8_t mk[4];
		MDB_val m = { 4, mk };
		if ((rc = mdb_cursor_open(txn, ix->db_marks, &c)))
			return rc;
		rw_put_be32(mk, dc->id);
		for (rc = mdb_cursor_get(c, &m, &v, MDB_SET_RANGE); rc == 0;) {
			if (m.mv_size < 4 || rw_get_be32(m.mv_data) != dc->id)
				break;
			if (v.mv_size == IX_MARKVAL &&
			    rw_get_le64((uint8_t *)v.mv_data + 8) < dc->horizon_seq) {
				if ((rc = mdb_cursor_del(c, 0)))
					break;
				marks++;
				rc = mdb_cursor_get(c, &m, &v, MDB_GET_CURRENT);
				if (rc == EINVAL)
					rc = MDB_NOTFOUND;
				continue;
			}
			rc = mdb_cursor_get(c, &m, &v, MDB_NEXT);
		}
		mdb_cursor_close(c);
		if (rc && rc != MDB_NOTFOUND)
			return rc;
	}
	if (dc->st) {
		dc->st->segment_rows = segs;
		dc->st->marks = marks;
	}
	return 0;
}

/* Collects (ts, seq) of the disk's journal records with seq <= upto. */
static int collect_times(struct ix *ix, const struct ix_disk *d, uint64_t upto,
			 struct ix_tent **out, size_t *nout)
{
	struct jr_reader *r = NULL;
	struct ix_tent *arr = NULL;
	size_t n = 0, cap = 0;
	char jdir[4096];
	int rc;

	*out = NULL;
	*nout = 0;
	if ((rc = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir))))
		return rc;
	rc = jr_reader_open(&r, jdir, JR_READ_HEADERS);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	rc = jr_reader_seek(r, 1);
	while (rc == 0) {
		struct jr_rec rec;
		struct jr_loc loc;
		const void *p;
		int k = jr_reader_next(r, &rec, &loc, &p);
		if (k <= 0) {
			rc = k;
			break;
		}
		if (rec.seq > upto)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			struct ix_tent *na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				rc = -ENOMEM;
				break;
			}
			arr = na;
		}
		arr[n].ts = rec.ts_ns;
		arr[n].seq = rec.seq;
		n++;
	}
	jr_reader_close(r);
	if (rc) {
		free(arr);
		return rc;
	}
	*out = arr;
	*nout = n;
	return 0;
}

int ix_compact_drop(struct ix *ix, uint32_t id, bool drop_marks,
		    struct ix_drop_stats *st)
{
	struct drop_ctx dc = { .id = id, .drop_marks = drop_marks };
	struct ix_drop_stats s = { 0 };
	struct ix_disk d;
	int rc;

	dc.st = &s;
	if ((rc = ix_horizon_sync(ix)) || (rc = ix_disk_get_id(ix, id, &d)))
		return rc;
	dc.base_seq = d.base_seq;
	dc.horizon_seq = d.horizon_seq;
	if (d.base_seq == 0 && !drop_marks)
		goto out;
	/* Time map entries of the folded records (their files still exist:
	 * files go only after their rows, which go last). */
	if (d.base_seq) {
		if ((rc = collect_times(ix, &d, d.base_seq, &dc.tm, &dc.ntm)))
			goto out;
		while (dc.tm_pos < dc.ntm) {
			if ((rc = ix_write(ix, drop_time_fn, &dc, "dropping time map entries")))
				goto out;
			s.time_entries += dc.count;
			dc.tm_pos = dc.tm_next;
		}
		ix_vkey(dc.from, id, 0, 0);
		for (;;) {
			if ((rc = ix_write(ix, drop_versions_fn, &dc, "dropping block versions")))
				goto out;
			s.versions += dc.count;
			if (dc.done)
				break;
			memcpy(dc.from, dc.next, IX_VKEY);
		}
	}
	{
		uint64_t tv = s.versions, tt = s.time_entries;
		if ((rc = ix_write(ix, drop_rest_fn, &dc, "dropping segment entries")))
			goto out;
		s.versions = tv;
		s.time_entries = tt;
	}
out:
	free(dc.tm);
	if (st && rc == 0)
		*st = s;
	return rc;
}

int ix_compact_unlink(struct ix *ix, uint32_t id, struct ix_unlink_stats *st)
{
	struct ix_unlink_stats s = { 0 };
	struct jr_seginfo *segs = NULL;
	struct ix_read *rd = NULL;
	struct ix_segment *rows = NULL;
	struct ix_disk d;
	char jdir[4096];
	int dfd = -1, nseg, nrows = 0, rc;

	if ((rc = ix_disk_get_id(ix, id, &d)) ||
	    (rc = ix_disk_path(ix, d.name, "journal", jdir, sizeof(jdir))))
		return rc;
	nseg = jr_segments_list(jdir, &segs);
	if (nseg < 0)
		return rw_err_set(nseg, "cannot list segments of '%s': %s", jdir,
				  rw_strerror(nseg));
	if ((rc = ix_read_begin(ix, &rd)))
		goto out;
	nrows = ix_segment_list(rd, id, &rows);
	ix_read_end(rd);
	rd = NULL;
	if (nrows < 0) {
		rc = nrows;
		nrows = 0;
		goto out;
	}
	/*
	 * The segment holding the first record after base_seq, read from the
	 * journal itself: only files before it are wholly folded.  (The
	 * segment entries alone would not do: a reindex drops them for a
	 * while, and compaction does not take STORE/lock.)
	 */
	uint64_t limit = UINT64_MAX;
	{
		struct jr_reader *r = NULL;
		struct jr_rec rec;
		struct jr_loc loc;
		const void *pl;
		int k = 0;
		if ((rc = jr_reader_open(&r, jdir, JR_READ_HEADERS)))
			goto out;
		rc = jr_reader_seek(r, 1);
		while (rc == 0 && (k = jr_reader_next(r, &rec, &loc, &pl)) > 0) {
			if (rec.seq > d.base_seq) {
				limit = loc.segment;
				break;
			}
		}
		if (rc == 0 && k < 0)
			rc = k;
		jr_reader_close(r);
		if (rc)
			goto out;
	}
	dfd = rw_sys_open(jdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (dfd < 0) {
		rc = rw_err_set(dfd, "cannot open '%s': %s", jdir, rw_strerror(dfd));
		goto out;
	}
	/* The last file is the writer's current segment: never removed. */
	for (int i = 0; i + 1 < nseg; i++) {
		uint64_t first = segs[i].first_seq;
		bool has_row = false;
		if (first > d.base_seq || first >= limit)
			break;
		for (int j = 0; j < nrows; j++)
			if (rows[j].first_seq == first)
				has_row = true;
		if (has_row)
			continue; /* holds records newer than base_seq */
		char name[32];
		jr_segment_name(first, name);
		rc = rw_sys_unlinkat(dfd, name, 0);
		if (rc == -ENOENT) {
			rc = 0;
			continue;
		}
		if (rc < 0) {
			rw_err_set(rc, "cannot remove segment '%s/%s': %s", jdir, name,
				   rw_strerror(rc));
			goto out;
		}
		s.segments++;
		s.bytes += segs[i].bytes;
	}
	if (s.segments && (rc = rw_sys_fsync(dfd)) < 0) {
		rw_err_set(rc, "cannot sync directory '%s': %s", jdir, rw_strerror(rc));
		goto out;
	}
	rc = 0;
out:
	if (dfd >= 0)
		close(dfd);
	free(rows);
	free(segs);
	if (st && rc == 0)
		*st = s;
	return rc;
}
