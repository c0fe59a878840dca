/*
 * lookup.c — read transactions and every lookup: block versions as-of a
 * seq, version ranges, the time map, segments and marks.
 *
 * How: an ix_read is one LMDB read transaction with its cursors kept open
 * (a cursor seek is the unit of cost; opening a cursor per lookup would
 * double it).  "Newest version of block B with seq <= S" is one
 * MDB_SET_RANGE to the newest chunk of B's group that starts at or below S
 * (chunk.c), a scan of its entries for B, and MDB_PREV to older chunks only
 * while B was not found or its versions found are partial.  The disk's
 * base_seq is cached in the ix_read (it cannot change inside one
 * snapshot): versions at or below it are folded into base.img and never
 * returned — filtering by base_seq, not by the horizon, keeps views exact
 * while compaction folds (restore/compact.c).  ix_versions_range decodes
 * the disk's chunks in key order and sorts each group's versions by
 * (block, seq) before handing them out.
 *
 * ix_seq_to_time binary-searches the time map by timestamp (timestamps
 * increase with seq): about 64 seeks, fine for resolving one user input;
 * a second seq -> ts table would cost ~26 bytes per record for that.
 */
#include "index/ix_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ix_read_begin(struct ix *ix, struct ix_read **out)
{
	struct ix_read *rd = calloc(1, sizeof(*rd));
	int rc;

	*out = NULL;
	if (!rd)
		return -ENOMEM;
	rd->ix = ix;
	rc = ix_txn_begin(ix, MDB_RDONLY, &rd->txn);
	if (rc) {
		free(rd);
		return ix_fail(ix, rc, "beginning a read transaction");
	}
	rd->locked = true;
	ix_tl_reads++;
	*out = rd;
	return 0;
}

void ix_read_end(struct ix_read *rd)
{
	if (!rd)
		return;
	if (rd->cv)
		mdb_cursor_close(rd->cv);
	if (rd->cm)
		mdb_cursor_close(rd->cm);
	if (rd->ct)
		mdb_cursor_close(rd->ct);
	if (rd->txn) {
		if (rd->locked) {
			ix_txn_abort(rd->ix, rd->txn);
			ix_tl_reads--;
		} else {
			mdb_txn_abort(rd->txn);
		}
	}
	free(rd);
}

int ix_read_renew(struct ix_read *rd)
{
	struct ix *ix = rd->ix;
	int rc;

	mdb_txn_reset(rd->txn);
	rd->hz_valid = false;
	if (rd->locked) {
		pthread_rwlock_unlock(&ix->txlock);
		rd->locked = false;
		ix_tl_reads--;
	}
	for (int tries = 0;; tries++) {
		pthread_rwlock_rdlock(&ix->txlock);
		rc = mdb_txn_renew(rd->txn);
		if (rc == 0)
			break;
		pthread_rwlock_unlock(&ix->txlock);
		if (rc != MDB_MAP_RESIZED || tries > 8)
			return ix_fail(ix, rc, "renewing a read transaction");
		if (ix_tl_reads > 0)
			return rw_err_set(-EDEADLK, "store '%s': the map was resized; end this thread's other read transactions first",
					  ix->dir);
		pthread_rwlock_wrlock(&ix->txlock);
		mdb_env_set_mapsize(ix->env, 0);
		pthread_rwlock_unlock(&ix->txlock);
	}
	rd->locked = true;
	ix_tl_reads++;
	if (rd->cv && (rc = mdb_cursor_renew(rd->txn, rd->cv)))
		return ix_fail(ix, rc, "renewing a cursor");
	if (rd->cm && (rc = mdb_cursor_renew(rd->txn, rd->cm)))
		return ix_fail(ix, rc, "renewing a cursor");
	if (rd->ct && (rc = mdb_cursor_renew(rd->txn, rd->ct)))
		return ix_fail(ix, rc, "renewing a cursor");
	return 0;
}

static int horizon(struct ix_read *rd, uint32_t disk, uint64_t *hz)
{
	struct ix_disk d;
	int rc;

	if (rd->hz_valid && rd->hz_disk == disk) {
		*hz = rd->hz_seq;
		return 0;
	}
	rc = ix_disk_load(rd->ix, rd->txn, disk, &d);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u",
				  rd->ix->dir, disk);
	if (rc)
		return ix_fail(rd->ix, rc, "reading a disk");
	rd->hz_disk = disk;
	rd->hz_seq = d.base_seq;
	rd->hz_last = d.last_indexed_seq;
	rd->hz_blocks = d.block_size ? d.size / d.block_size : 0;
	if (!rd->sum || rd->sum_disk != disk) {
		rd->sum = ix_sum_get(rd->ix, disk, rd->hz_blocks,
				     d.last_indexed_seq);
		rd->sum_disk = disk;
	}
	rd->hz_valid = true;
	*hz = d.base_seq;
	return 0;
}

static int vcursor(struct ix_read *rd)
{
	int rc;

	if (rd->cv)
		return 0;
	rc = mdb_cursor_open(rd->txn, rd->ix->db_versions, &rd->cv);
	if (rc == 0 && (rc = mdb_cursor_open(rd->txn, rd->ix->db_vmap, &rd->cm))) {
		mdb_cursor_close(rd->cv);
		rd->cv = NULL;
	}
	return rc ? ix_fail(rd->ix, rc, "opening a cursor") : 0;
}

static int corrupt_chunk(struct ix_read *rd, uint32_t disk, const MDB_val *k)
{
	return rw_err_set(RW_ECORRUPT, "store '%s': corrupt version chunk disk id %u blocks %llu.. seq %llu",
			  rd->ix->dir, disk,
			  (unsigned long long)(rw_get_be64((uint8_t *)k->mv_data + 4) *
					       IX_GROUP_BLOCKS),
			  (unsigned long long)rw_get_be64((uint8_t *)k->mv_data + 12));
}

/* Matches of one block inside one chunk, oldest first (a ring: only the
 * newest ASOF_RING can be returned from one chunk). */
#define ASOF_RING 256

int ix_block_asof(struct ix_read *rd, uint32_t disk, uint64_t block,
		  uint64_t seq, struct ix_version *out, int cap)
{
	struct ix_version ring[ASOF_RING];
	uint64_t g = block / IX_GROUP_BLOCKS;
	uint64_t hz = 0;
	MDB_val k, v, mv;
	int n = 0, rc;

	if ((rc = horizon(rd, disk, &hz)) || (rc = vcursor(rd)))
		return rc;
	/* Most blocks have no version at all: summary.c knows them. */
	if (rd->sum && block < rd->hz_blocks) {
		rc = ix_sum_test(rd->sum, rd->cm, rd->hz_last, block, seq);
		if (rc == 0)
			return 0;
		if (rc == RW_ECORRUPT)
			return rw_err_set(RW_ECORRUPT, "store '%s': corrupt block map of disk id %u blocks %llu..",
					  rd->ix->dir, disk,
					  (unsigned long long)(block / IX_GROUP_BLOCKS * IX_GROUP_BLOCKS));
		if (rc < 0 || rc > 1)
			return ix_fail(rd->ix, rc, "looking up a block");
	}
	/* Walk the small vmap; read a chunk only when its map has the block. */
	rc = ix_vers_seek_chunk(rd->cm, disk, g, seq, &k, &mv);
	while (rc == 0 && ix_chunk_is(&k, disk, g)) {
		uint64_t first = rw_get_be64((uint8_t *)k.mv_data + 12);
		size_t m = 0;

		if (mv.mv_size != IX_CMAP)
			return corrupt_chunk(rd, disk, &k);
		if (ix_chunk_has(&mv, block)) {
			MDB_val vk = k;
			rc = mdb_cursor_get(rd->cv, &vk, &v, MDB_SET_KEY);
			if (rc == MDB_NOTFOUND ||
			    (rc == 0 && ix_chunk_block(&vk, &v, block, seq, hz,
						       ring, ASOF_RING, &m)))
				return corrupt_chunk(rd, disk, &k);
			if (rc)
				break;
		}
		/* Newest first, while the versions found are partial. */
		for (size_t j = m; j > 0; j--) {
			if (m - j >= ASOF_RING || n >= cap)
				return rw_err_set(-ENOBUFS, "disk id %u block %llu as-of seq %llu needs more than %d versions",
						  disk, (unsigned long long)block,
						  (unsigned long long)seq,
						  n < cap ? ASOF_RING : cap);
			out[n++] = ring[(j - 1) % ASOF_RING];
			if (!out[n - 1].partial)
				return n;
		}
		if (first <= hz)
			return n; /* older chunks hold only folded versions */
		rc = mdb_cursor_get(rd->cm, &k, &mv, MDB_PREV);
	}
	if (rc && rc != MDB_NOTFOUND)
		return ix_fail(rd->ix, rc, "looking up a block");
	return n;
}

struct range_ent {
	uint64_t block;
	struct ix_version v;
};

static int range_cmp(const void *a, const void *b)
{
	const struct range_ent *x = a, *y = b;

	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->v.seq < y->v.seq ? -1 : x->v.seq > y->v.seq;
}

/* Emits the buffered versions of one group in (block, seq) order. */
static int range_flush(struct range_ent *e, size_t n,
		       int (*fn)(void *arg, uint64_t block,
				 const struct ix_version *v),
		       void *arg)
{
	int rc = 0;

	if (n > 1)
		qsort(e, n, sizeof(*e), range_cmp);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = fn(arg, e[i].block, &e[i].v);
	return rc;
}

int ix_versions_range(struct ix_read *rd, uint32_t disk, uint64_t after,
		      uint64_t upto,
		      int (*fn)(void *arg, uint64_t block,
				const struct ix_version *v),
		      void *arg)
{
	uint8_t kb[IX_VKEY];
	MDB_val k = { IX_VKEY, kb }, v;
	struct range_ent *buf = NULL;
	size_t n = 0, cap = 0;
	uint64_t group = 0;
	int rc;

	if ((rc = vcursor(rd)))
		return rc;
	ix_vkey(kb, disk, 0, 0);
	for (rc = mdb_cursor_get(rd->cv, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(rd->cv, &k, &v, MDB_NEXT)) {
		struct ix_cdec d;
		int e;

		if (k.mv_size != IX_VKEY || rw_get_be32(k.mv_data) != disk)
			break;
		if (ix_cdec_init(&d, &k, &v)) {
			rc = corrupt_chunk(rd, disk, &k);
			goto out;
		}
		if (d.group != group) {
			if ((rc = range_flush(buf, n, fn, arg)))
				goto out;
			n = 0;
			group = d.group;
		}
		while ((e = ix_cdec_next(&d)) > 0) {
			if (d.cur.seq <= after)
				continue;
			if (d.cur.seq > upto)
				break;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 256;
				struct range_ent *nb = realloc(buf, nc * sizeof(*nb));
				if (!nb) {
					rc = -ENOMEM;
					goto out;
				}
				buf = nb;
				cap = nc;
			}
			buf[n].block = d.block;
			buf[n].v = d.cur;
			n++;
		}
		if (e < 0) {
			rc = corrupt_chunk(rd, disk, &k);
			goto out;
		}
	}
	if (rc && rc != MDB_NOTFOUND) {
		rc = ix_fail(rd->ix, rc, "scanning versions");
		goto out;
	}
	rc = range_flush(buf, n, fn, arg);
out:
	free(buf);
	return rc;
}

/* ------------------------------------------------------------ time map */

static int tcursor(struct ix_read *rd)
{
	int rc;

	if (rd->ct)
		return 0;
	rc = mdb_cursor_open(rd->txn, rd->ix->db_time, &rd->ct);
	return rc ? ix_fail(rd->ix, rc, "opening a cursor") : 0;
}

static int time_err(struct ix_read *rd, int rc, const char *what)
{
	if (rc == RW_ECORRUPT)
		return rw_err_set(RW_ECORRUPT, "store '%s': corrupt time map entry", rd->ix->dir);
	return ix_fail(rd->ix, rc, what);
}

int ix_time_to_seq(struct ix_read *rd, uint64_t ts_ns, uint64_t *seq,
		   uint64_t *rec_ts)
{
	struct ix_tent e;
	int rc;

	if ((rc = tcursor(rd)))
		return rc;
	rc = ix_tm_floor(rd->ct, ts_ns, &e);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no record at or before %llu ns",
				  rd->ix->dir, (unsigned long long)ts_ns);
	if (rc)
		return time_err(rd, rc, "resolving a time");
	if (seq)
		*seq = e.seq;
	if (rec_ts)
		*rec_ts = e.ts;
	return 0;
}

int ix_latest(struct ix_read *rd, uint64_t *seq, uint64_t *ts_ns)
{
	struct ix_tent e;
	int rc;

	if ((rc = tcursor(rd)))
		return rc;
	rc = ix_tm_last(rd->ct, &e);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s' has no records", rd->ix->dir);
	if (rc)
		return time_err(rd, rc, "reading the time map");
	if (seq)
		*seq = e.seq;
	if (ts_ns)
		*ts_ns = e.ts;
	return 0;
}

/* First entry with ts >= t: 0, or MDB_NOTFOUND. */
static int time_ceil(struct ix_read *rd, uint64_t t, uint64_t *seq, uint64_t *ts)
{
	struct ix_tent e;
	int rc = ix_tm_ceil(rd->ct, t, &e);

	if (rc)
		return rc;
	*seq = e.seq;
	*ts = e.ts;
	return 0;
}

int ix_seq_to_time(struct ix_read *rd, uint64_t seq, uint64_t *ts_ns)
{
	MDB_val k, v;
	uint64_t lo = 0, hi = 0, s = 0, t = 0;
	int rc;

	if ((rc = tcursor(rd)))
		return rc;
	rc = mdb_cursor_get(rd->ct, &k, &v, MDB_FIRST);
	if (rc == 0) {
		if (k.mv_size != 8)
			return time_err(rd, RW_ECORRUPT, "");
		lo = rw_get_be64(k.mv_data);
		struct ix_tent e = { 0, 0 };
		rc = ix_tm_last(rd->ct, &e);
		hi = e.ts;
	}
	/* Smallest ts whose entry has seq >= the one asked. */
	while (rc == 0 && lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		rc = time_ceil(rd, mid, &s, &t);
		if (rc)
			break;
		if (s >= seq)
			hi = mid;
		else
			lo = t + 1;
	}
	if (rc == 0)
		rc = time_ceil(rd, lo, &s, &t);
	if (rc == 0 && s == seq) {
		*ts_ns = t;
		return 0;
	}
	if (rc == 0 || rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no record with seq %llu in the time map",
				  rd->ix->dir, (unsigned long long)seq);
	return time_err(rd, rc, "reading the time map");
}

/* ------------------------------------------------------------ segments */

int ix_segment_list(struct ix_read *rd, uint32_t disk, struct ix_segment **out)
{
	MDB_cursor *c = NULL;
	uint8_t kb[IX_SKEY];
	MDB_val k = { IX_SKEY, kb }, v;
	struct ix_segment *arr = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*out = NULL;
	rc = mdb_cursor_open(rd->txn, rd->ix->db_segments, &c);
	if (rc)
		return ix_fail(rd->ix, rc, "listing segments");
	ix_skey(kb, disk, 0);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != IX_SKEY || rw_get_be32(k.mv_data) != disk)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			struct ix_segment *na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				rc = -ENOMEM;
				break;
			}
			arr = na;
		}
		if (ix_segval_decode(v.mv_data, v.mv_size, &arr[n])) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt entry of segment %llu of disk id %u",
					rd->ix->dir,
					(unsigned long long)rw_get_be64((uint8_t *)k.mv_data + 4), disk);
			break;
		}
		n++;
	}
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND) {
		free(arr);
		return ix_fail(rd->ix, rc, "listing segments");
	}
	*out = arr;
	return (int)n;
}

/* ------------------------------------------------------------ marks */

static bool label_valid(const char *l)
{
	size_t n = 0;

	if (!l || !*l)
		return false;
	for (const unsigned char *p = (const unsigned char *)l; *p; p++, n++)
		if (*p < 0x20 || *p == 0x7f || *p == '/')
			return false;
	return n <= IX_LABEL_MAX;
}

static size_t mkey(uint8_t *kb, uint32_t disk, const char *label)
{
	size_t n = strlen(label);

	rw_put_be32(kb, disk);
	memcpy(kb + 4, label, n);
	return 4 + n;
}

struct mark_ctx {
	uint32_t disk;
	const struct ix_mark *m;
	const char *label;
};

static int mark_put_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct mark_ctx *mc = arg;
	uint8_t kb[4 + IX_LABEL_MAX], vb[IX_MARKVAL];
	MDB_val k = { mkey(kb, mc->disk, mc->m->label), kb }, v = { IX_MARKVAL, vb };
	struct ix_disk d;
	int rc = ix_disk_load(ix, txn, mc->disk, &d);

	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u", ix->dir, mc->disk);
	if (rc)
		return rc;
	rw_put_le64(vb, mc->m->ts_ns);
	rw_put_le64(vb + 8, mc->m->seq);
	rw_put_le64(vb + 16, mc->m->created_ns);
	return mdb_put(txn, ix->db_marks, &k, &v, 0);
}

int ix_mark_put(struct ix *ix, uint32_t disk, const struct ix_mark *m)
{
	struct mark_ctx mc = { disk, m, NULL };

	if (!label_valid(m->label))
		return rw_err_set(-EINVAL, "invalid mark label '%s' (1..%d printable characters, no '/')",
				  m->label, IX_LABEL_MAX);
	return ix_write(ix, mark_put_fn, &mc, "adding a mark");
}

static int mark_del_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct mark_ctx *mc = arg;
	uint8_t kb[4 + IX_LABEL_MAX];
	MDB_val k = { mkey(kb, mc->disk, mc->label), kb };
	int rc = mdb_del(txn, ix->db_marks, &k, NULL);

	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': disk id %u has no mark '%s'",
				  ix->dir, mc->disk, mc->label);
	return rc;
}

int ix_mark_del(struct ix *ix, uint32_t disk, const char *label)
{
	struct mark_ctx mc = { disk, NULL, label };

	if (!label_valid(label))
		return rw_err_set(RW_ENOTFOUND, "store '%s': disk id %u has no mark '%s'",
				  ix->dir, disk, label ? label : "");
	return ix_write(ix, mark_del_fn, &mc, "deleting a mark");
}

static int mark_decode(const MDB_val *k, const MDB_val *v, struct ix_mark *m)
{
	size_t ln = k->mv_size - 4;

	if (k->mv_size < 5 || ln > IX_LABEL_MAX || v->mv_size != IX_MARKVAL)
		return RW_ECORRUPT;
	memcpy(m->label, (uint8_t *)k->mv_data + 4, ln);
	m->label[ln] = 0;
	m->ts_ns = rw_get_le64(v->mv_data);
	m->seq = rw_get_le64((uint8_t *)v->mv_data + 8);
	m->created_ns = rw_get_le64((uint8_t *)v->mv_data + 16);
	return 0;
}

int ix_mark_get(struct ix_read *rd, uint32_t disk, const char *label,
		struct ix_mark *out)
{
	uint8_t kb[4 + IX_LABEL_MAX];
	MDB_val k, v;
	int rc;

	if (!label_valid(label))
		return rw_err_set(RW_ENOTFOUND, "store '%s': disk id %u has no mark '%s'",
				  rd->ix->dir, disk, label ? label : "");
	k.mv_size = mkey(kb, disk, label);
	k.mv_data = kb;
	rc = mdb_get(rd->txn, rd->ix->db_marks, &k, &v);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': disk id %u has no mark '%s'",
				  rd->ix->dir, disk, label);
	if (rc)
		return ix_fail(rd->ix, rc, "reading a mark");
	if (mark_decode(&k, &v, out))
		return rw_err_set(RW_ECORRUPT, "store '%s': corrupt mark '%s' of disk id %u",
				  rd->ix->dir, label, disk);
	return 0;
}

static int mark_seq_cmp(const void *a, const void *b)
{
	const struct ix_mark *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return strcmp(x->label, y->label);
}

int ix_mark_list(struct ix_read *rd, uint32_t disk, struct ix_mark **out)
{
	MDB_cursor *c = NULL;
	uint8_t kb[4];
	MDB_val k = { 4, kb }, v;
	struct ix_mark *arr = NULL;
	size_t n = 0, cap = 0;
	int rc;

	*out = NULL;
	rc = mdb_cursor_open(rd->txn, rd->ix->db_marks, &c);
	if (rc)
		return ix_fail(rd->ix, rc, "listing marks");
	rw_put_be32(kb, disk);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 4 || rw_get_be32(k.mv_data) != disk)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			struct ix_mark *na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				rc = -ENOMEM;
				break;
			}
			arr = na;
		}
		if (mark_decode(&k, &v, &arr[n])) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt mark entry of disk id %u",
					rd->ix->dir, disk);
			break;
		}
		n++;
	}
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND) {
		free(arr);
		return ix_fail(rd->ix, rc, "listing marks");
	}
	if (n)
		qsort(arr, n, sizeof(*arr), mark_seq_cmp);
	*out = arr;
	return (int)n;
}
