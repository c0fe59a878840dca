/*
 * batch.c — indexing: batches, catch-up from the journals, rebuild.
 *
 * How: ix_batch_add only copies the header fields it needs into a growing
 * array.  ix_batch_commit runs one LMDB write transaction (ix_write): it
 * loads each disk's state, drops records at or below last_indexed_seq
 * (idempotent replay), expands every record into one block version per
 * touched block, sorts them by (disk, group, seq, block) — chunk order
 * (a radix sort, vent_sort),
 * so each group's newest chunk is read and rewritten once per batch — and
 * appends them to the chunks (chunk.c), adds the time map entries
 * (timemap.c), folds the records into their segment
 * summaries, seals earlier segments, and stores last_indexed_seq — all in
 * that one transaction.  MDB_MAP_FULL anywhere re-runs the whole function
 * from the buffered records after the map grew.
 *
 * Rejected: writing each record as it is appended (one txn per record):
 * LMDB commits cost a page-tree copy and an fdatasync each, which caps
 * indexing at a few thousand records per second.
 *
 * Catch-up reads each journal from last_indexed_seq + 1 with headers only
 * (no payload decompression); when a replay function must bring head up
 * to date, records after head_synced_seq are read with their payloads.
 */
#include "index/ix_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct brec {
	uint32_t disk;
	uint8_t type;
	uint32_t length;
	uint32_t stored_len;
	uint64_t seq, ts, offset;
	struct jr_loc loc;
};

struct vent {
	uint32_t disk;
	uint32_t rank;     /* the disk's place in the batch's disk table */
	uint64_t block, seq;
	uint32_t rec;      /* index into recs */
	bool partial;
};

struct bdisk {
	struct ix_disk d;
	uint64_t batch_last;   /* newest seq added for this disk */
};

struct ix_batch {
	struct ix *ix;
	struct brec *recs;
	size_t n, cap;
	struct vent *v;
	size_t nv, capv;
	struct bdisk *disks;
	size_t nd, capd;
};

int ix_batch_new(struct ix *ix, struct ix_batch **out)
{
	struct ix_batch *b = calloc(1, sizeof(*b));

	*out = NULL;
	if (!b)
		return -ENOMEM;
	b->ix = ix;
	*out = b;
	return 0;
}

void ix_batch_free(struct ix_batch *b)
{
	if (!b)
		return;
	free(b->recs);
	free(b->v);
	free(b->disks);
	free(b);
}

static struct bdisk *bdisk_find(struct ix_batch *b, uint32_t id, bool add)
{
	for (size_t i = 0; i < b->nd; i++)
		if (b->disks[i].d.id == id)
			return &b->disks[i];
	if (!add)
		return NULL;
	if (b->nd == b->capd) {
		size_t nc = b->capd ? b->capd * 2 : 4;
		struct bdisk *nd = realloc(b->disks, nc * sizeof(*nd));
		if (!nd)
			return NULL;
		b->disks = nd;
		b->capd = nc;
	}
	memset(&b->disks[b->nd], 0, sizeof(b->disks[0]));
	b->disks[b->nd].d.id = id;
	return &b->disks[b->nd++];
}

int ix_batch_add(struct ix_batch *b, const struct jr_rec *rec,
		 const struct jr_loc *loc)
{
	struct bdisk *bd;
	struct brec *r;

	if (rec->type == JR_SEAL)
		return 0;
	/* FLUSH markers have length 0: time map and segment summary only. */
	if (rec->type != JR_WRITE && rec->type != JR_ZERO && rec->type != JR_TRIM &&
	    rec->type != JR_FLUSH)
		return rw_err_set(-EINVAL, "disk id %u seq %llu: cannot index record type %u",
				  rec->disk_id, (unsigned long long)rec->seq, rec->type);
	if (rec->seq == 0 || loc->segment > rec->seq)
		return rw_err_set(-EINVAL, "disk id %u seq %llu: bad seq or segment %llu",
				  rec->disk_id, (unsigned long long)rec->seq,
				  (unsigned long long)loc->segment);
	bd = bdisk_find(b, rec->disk_id, true);
	if (!bd)
		return -ENOMEM;
	if (rec->seq <= bd->batch_last)
		return rw_err_set(-EINVAL, "disk id %u: seq %llu added after seq %llu",
				  rec->disk_id, (unsigned long long)rec->seq,
				  (unsigned long long)bd->batch_last);
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		struct brec *nr = realloc(b->recs, nc * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		b->recs = nr;
		b->cap = nc;
	}
	bd->batch_last = rec->seq;
	r = &b->recs[b->n++];
	r->disk = rec->disk_id;
	r->type = rec->type;
	r->length = rec->length;
	r->stored_len = rec->stored_len;
	r->seq = rec->seq;
	r->ts = rec->ts_ns;
	r->offset = rec->offset;
	r->loc = *loc;
	ix_step("add");
	return 0;
}

static int vent_cmp(const void *a, const void *b)
{
	const struct vent *x = a, *y = b;

	uint64_t gx = x->block / IX_GROUP_BLOCKS, gy = y->block / IX_GROUP_BLOCKS;

	if (x->disk != y->disk)
		return x->disk < y->disk ? -1 : 1;
	if (gx != gy)
		return gx < gy ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->block < y->block ? -1 : x->block > y->block;
}

static int brec_seq_cmp(const void *a, const void *b)
{
	uint64_t x = (*(const struct brec *const *)a)->seq;
	uint64_t y = (*(const struct brec *const *)b)->seq;

	return x < y ? -1 : x > y;
}

/*
 * Sorts b->v into chunk order, (disk, group, seq, block).  Each disk's
 * versions are expanded from its records in (seq, block) order already
 * (ix_batch_add refuses a disk's records out of order), so a stable sort
 * by (disk, group) is enough: an LSD radix sort of (disk rank, group) in
 * 11-bit digits — two passes for a 64 GiB disk — instead of qsort, whose
 * comparisons took a fifth of the indexing time.  Keys wider than 64 bits
 * (a huge disk and many disks in one batch) fall back to qsort.  0 or
 * -ENOMEM.
 */
struct vkey {
	uint64_t key;
	size_t i;
};

static int vent_sort(struct ix_batch *b)
{
	size_t n = b->nv, cnt[2048];
	uint64_t maxg = 0;
	unsigned gbits = 0, rbits = 0, bits;
	struct vkey *a = NULL, *t = NULL;
	struct vent *nv = NULL;

	if (n < 2)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (b->v[i].block / IX_GROUP_BLOCKS > maxg)
			maxg = b->v[i].block / IX_GROUP_BLOCKS;
	while (gbits < 64 && (maxg >> gbits))
		gbits++;
	while (rbits < 32 && ((uint64_t)(b->nd - 1) >> rbits))
		rbits++;
	bits = gbits + rbits;
	if (bits > 64) {
		qsort(b->v, n, sizeof(*b->v), vent_cmp);
		return 0;
	}
	a = malloc(n * sizeof(*a));
	t = malloc(n * sizeof(*t));
	nv = malloc(b->capv * sizeof(*nv));
	if (!a || !t || !nv) {
		free(a);
		free(t);
		free(nv);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t g = b->v[i].block / IX_GROUP_BLOCKS;
		a[i].key = rbits ? (uint64_t)b->v[i].rank << gbits | g : g;
		a[i].i = i;
	}
	for (unsigned shift = 0; shift < bits; shift += 11) {
		struct vkey *x;
		size_t sum = 0;
		memset(cnt, 0, sizeof(cnt));
		for (size_t i = 0; i < n; i++)
			cnt[(a[i].key >> shift) & 2047]++;
		for (size_t d = 0; d < 2048; d++) {
			size_t c = cnt[d];
			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			t[cnt[(a[i].key >> shift) & 2047]++] = a[i];
		x = a;
		a = t;
		t = x;
	}
	for (size_t i = 0; i < n; i++)
		nv[i] = b->v[a[i].i];
	free(b->v);
	b->v = nv;
	free(a);
	free(t);
	return 0;
}

static int vent_push(struct ix_batch *b, const struct vent *v)
{
	if (b->nv == b->capv) {
		size_t nc = b->capv ? b->capv * 2 : 1024;
		struct vent *nv = realloc(b->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		b->v = nv;
		b->capv = nc;
	}
	b->v[b->nv++] = *v;
	return 0;
}

/* Seals every unsealed segment of disk before first_seq. */
static int seal_before(struct ix *ix, MDB_txn *txn, MDB_cursor *c,
		       uint32_t disk, uint64_t first_seq)
{
	uint8_t kb[IX_SKEY];
	MDB_val k = { IX_SKEY, kb }, v;
	int rc;

	ix_skey(kb, disk, first_seq);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	else if (rc == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	while (rc == 0) {
		struct ix_segment s;
		if (k.mv_size != IX_SKEY || rw_get_be32(k.mv_data) != disk)
			return 0;
		if (rw_get_be64((uint8_t *)k.mv_data + 4) >= first_seq) {
			rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
			continue;
		}
		if (ix_segval_decode(v.mv_data, v.mv_size, &s))
			return rw_err_set(RW_ECORRUPT, "store '%s': corrupt segment entry of disk id %u",
					  ix->dir, disk);
		if (s.sealed)
			return 0;
		s.sealed = true;
		uint8_t vb[IX_SEGVAL];
		MDB_val nv = { IX_SEGVAL, vb };
		ix_segval_encode(vb, &s);
		rc = mdb_put(txn, ix->db_segments, &k, &nv, 0);
		if (rc)
			return rc;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
		if (rc == 0)
			rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	}
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_segment(struct ix *ix, MDB_txn *txn, uint32_t disk,
		       const struct ix_segment *s)
{
	uint8_t kb[IX_SKEY], vb[IX_SEGVAL];
	MDB_val k = { IX_SKEY, kb }, v = { IX_SEGVAL, vb };

	ix_skey(kb, disk, s->first_seq);
	ix_segval_encode(vb, s);
	return mdb_put(txn, ix->db_segments, &k, &v, 0);
}

static int segments_update(struct ix *ix, MDB_txn *txn, struct ix_batch *b,
			   struct bdisk *bd, const bool *keep)
{
	MDB_cursor *c = NULL;
	struct ix_segment s;
	bool have = false;
	int rc = mdb_cursor_open(txn, ix->db_segments, &c);

	if (rc)
		return rc;
	for (size_t i = 0; i < b->n; i++) {
		struct brec *r = &b->recs[i];
		if (r->disk != bd->d.id || !keep[i])
			continue;
		if (!have || s.first_seq != r->loc.segment) {
			if (have && (rc = put_segment(ix, txn, bd->d.id, &s)))
				goto out;
			uint8_t kb[IX_SKEY];
			MDB_val k = { IX_SKEY, kb }, v;
			ix_skey(kb, bd->d.id, r->loc.segment);
			rc = mdb_get(txn, ix->db_segments, &k, &v);
			if (rc == 0) {
				if (ix_segval_decode(v.mv_data, v.mv_size, &s)) {
					rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt entry of segment %llu of disk '%s'",
							ix->dir, (unsigned long long)r->loc.segment, bd->d.name);
					goto out;
				}
			} else if (rc == MDB_NOTFOUND) {
				memset(&s, 0, sizeof(s));
				s.first_seq = r->loc.segment;
				s.first_ts = r->ts;
			} else {
				goto out;
			}
			rc = seal_before(ix, txn, c, bd->d.id, r->loc.segment);
			if (rc)
				goto out;
			have = true;
		}
		s.last_seq = r->seq;
		s.last_ts = r->ts;
		if (s.records == 0)
			s.first_ts = r->ts;
		s.records++;
		s.bytes += JR_HDR_SIZE + r->stored_len;
	}
	rc = have ? put_segment(ix, txn, bd->d.id, &s) : 0;
out:
	mdb_cursor_close(c);
	return rc;
}

static int commit_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct ix_batch *b = arg;
	MDB_cursor *c = NULL, *cm = NULL;
	bool *keep = NULL;
	struct brec **tm = NULL;
	struct ix_ventry *ents = NULL;
	struct ix_tent *tents = NULL;
	size_t ntm = 0;
	int rc = 0;

	b->nv = 0;
	keep = calloc(b->n ? b->n : 1, sizeof(*keep));
	tm = calloc(b->n ? b->n : 1, sizeof(*tm));
	if (!keep || !tm) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < b->nd; i++) {
		struct bdisk *bd = &b->disks[i];
		uint32_t id = bd->d.id;
		rc = ix_disk_load(ix, txn, id, &bd->d);
		if (rc == MDB_NOTFOUND) {
			rc = rw_err_set(RW_ENOTFOUND, "store '%s': cannot index records of unknown disk id %u",
					ix->dir, id);
			goto out;
		}
		if (rc)
			goto out;
	}
	/* Expand records into versions. */
	for (size_t i = 0; i < b->n; i++) {
		struct brec *r = &b->recs[i];
		struct bdisk *bd = bdisk_find(b, r->disk, false);
		uint64_t bs, first, last;

		if (!bd || r->seq <= bd->d.last_indexed_seq ||
		    r->seq <= bd->d.base_seq)
			continue; /* indexed already, or folded into base */
		if (!rw_range_ok(r->offset, r->length, bd->d.size)) {
			rc = rw_err_set(RW_ECORRUPT, "disk '%s' seq %llu (segment %llu offset %llu): range %llu+%u outside the disk (%llu bytes)",
					bd->d.name, (unsigned long long)r->seq,
					(unsigned long long)r->loc.segment,
					(unsigned long long)r->loc.offset,
					(unsigned long long)r->offset, r->length,
					(unsigned long long)bd->d.size);
			goto out;
		}
		keep[i] = true;
		tm[ntm++] = r;
		if (r->length == 0)
			continue; /* touches no block; still a moment in time */
		bs = bd->d.block_size;
		first = r->offset / bs;
		last = (r->offset + r->length - 1) / bs;
		for (uint64_t blk = first; blk <= last; blk++) {
			struct vent v = { r->disk, (uint32_t)(bd - b->disks), blk,
					  r->seq, (uint32_t)i, false };
			uint64_t bstart = blk * bs;
			v.partial = r->offset > bstart ||
				    r->offset + r->length < bstart + bs;
			if ((rc = vent_push(b, &v)))
				goto out;
		}
	}
	if ((rc = vent_sort(b)))
		goto out;
	rc = mdb_cursor_open(txn, ix->db_versions, &c);
	if (rc == 0)
		rc = mdb_cursor_open(txn, ix->db_vmap, &cm);
	if (rc)
		goto out;
	if (b->nv && !(ents = malloc(b->nv * sizeof(*ents)))) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < b->nv;) {
		uint32_t disk = b->v[i].disk;
		size_t n = 0;
		for (; i < b->nv && b->v[i].disk == disk; i++) {
			const struct vent *e = &b->v[i];
			const struct brec *r = &b->recs[e->rec];
			ents[n].block = e->block;
			ents[n].v.seq = r->seq;
			ents[n].v.loc = r->loc;
			ents[n].v.type = r->type;
			ents[n].v.partial = e->partial;
			n++;
		}
		struct ix_vcurs vc = { c, cm };
		rc = ix_vers_append(&vc, disk, ents, n);
		if (rc)
			goto out;
		ix_step("put");
	}
	mdb_cursor_close(c);
	mdb_cursor_close(cm);
	c = cm = NULL;
	/* Time map, in seq order (timestamps increase with seq). */
	if (ntm) {
		size_t sorted = 1;
		while (sorted < ntm && tm[sorted - 1]->seq < tm[sorted]->seq)
			sorted++;
		if (sorted < ntm) /* several disks caught up one by one */
			qsort(tm, ntm, sizeof(*tm), brec_seq_cmp);
		if (!(tents = malloc(ntm * sizeof(*tents)))) {
			rc = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < ntm; i++) {
			tents[i].seq = tm[i]->seq;
			tents[i].ts = tm[i]->ts;
		}
		rc = ix_tm_add(txn, ix->db_time, tents, ntm);
		if (rc)
			goto out;
		ix_step("put");
	}
	for (size_t i = 0; i < b->nd; i++) {
		struct bdisk *bd = &b->disks[i];
		rc = segments_update(ix, txn, b, bd, keep);
		if (rc)
			goto out;
		if (bd->batch_last > bd->d.last_indexed_seq) {
			bd->d.last_indexed_seq = bd->batch_last;
			rc = ix_disk_store(ix, txn, &bd->d);
			if (rc)
				goto out;
		}
		ix_step("put");
	}
out:
	if (c)
		mdb_cursor_close(c);
	if (cm)
		mdb_cursor_close(cm);
	free(keep);
	free(tm);
	free(ents);
	free(tents);
	return rc;
}

/*
 * A transaction that changes nothing but still commits (a key put and
 * deleted): LMDB lets a transaction reuse the pages freed two commits
 * before it, never the ones the previous commit freed.  A batch of random
 * blocks copies most of the versions tree, so back-to-back batches kept
 * two freed copies of it in the file; with this small commit between
 * them each batch reuses the pages the batch before it freed, and the
 * file holds one.  It leaves the index byte for byte the same.
 */
static int recycle_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	MDB_val k = { 7, (void *)"recycle" }, v = { 1, (void *)"" };
	int rc = mdb_put(txn, ix->db_state, &k, &v, 0);

	(void)arg;
	return rc ? rc : mdb_del(txn, ix->db_state, &k, NULL);
}

#define RECYCLE_VERSIONS 256 /* below this a batch copies few pages */

int ix_batch_commit(struct ix_batch *b)
{
	int rc = 0;

	if (b->n)
		rc = ix_write(b->ix, commit_fn, b, "committing an index batch");
	/* Only an optimisation: the batch is committed whatever it returns
	 * (a full disk fails the next batch, which says so). */
	if (rc == 0 && b->nv >= RECYCLE_VERSIONS)
		(void)ix_write(b->ix, recycle_fn, NULL, "recycling freed pages");
	b->n = 0;
	b->nv = 0;
	b->nd = 0;
	return rc;
}

/* ix_batch_commit_head_synced(): the batch and head_synced_seq in one
 * transaction. */
struct commit_synced {
	struct ix_batch *b;
	uint32_t id;
	uint64_t seq;
};

static int commit_synced_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct commit_synced *cs = arg;
	struct ix_disk d;
	int rc = cs->b->n ? commit_fn(ix, txn, cs->b) : 0;

	if (rc)
		return rc;
	rc = ix_disk_load(ix, txn, cs->id, &d);
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u",
				  ix->dir, cs->id);
	if (rc)
		return rc;
	d.head_synced_seq = cs->seq;
	return ix_disk_store(ix, txn, &d);
}

int ix_batch_commit_head_synced(struct ix_batch *b, uint32_t id, uint64_t seq)
{
	struct commit_synced cs = { b, id, seq };
	int rc = ix_write(b->ix, commit_synced_fn, &cs,
			  "committing an index batch and head_synced_seq");

	b->n = 0;
	b->nv = 0;
	b->nd = 0;
	return rc;
}

/* ------------------------------------------------------------ catch-up */

#define CATCHUP_BYTES (8u << 20)
size_t ix_catchup_batch_records = 4096;

/*
 * Reads the journal of d from seq `from` up to `upto` (inclusive; 0 = to
 * the end) with reader flags, indexing records after last_indexed_seq and
 * calling fn for records after head_synced_seq.
 */
static int catch_up_range(struct ix_batch *b,
			  const struct ix_disk *d, const char *jdir,
			  unsigned flags, uint64_t from, uint64_t upto,
			  ix_replay_fn fn, void *arg, uint64_t *count)
{
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	uint64_t bytes = 0;
	int rc;

	rc = jr_reader_open(&r, jdir, flags);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	rc = jr_reader_seek(r, from);
	while (rc == 0) {
		int n = jr_reader_next(r, &rec, &loc, &payload);
		if (n <= 0) {
			rc = n;
			break;
		}
		if (upto && rec.seq > upto)
			break;
		if (rec.disk_id != d->id) {
			rc = rw_err_set(RW_ECORRUPT, "segment %llu of disk '%s': record seq %llu carries disk id %u, expected %u",
					(unsigned long long)loc.segment, d->name,
					(unsigned long long)rec.seq, rec.disk_id, d->id);
			break;
		}
		if (rec.seq > d->last_indexed_seq) {
			rc = ix_batch_add(b, &rec, &loc);
			if (rc)
				break;
			bytes += JR_HDR_SIZE + rec.stored_len;
		}
		if (fn && rec.seq > d->head_synced_seq) {
			rc = fn(arg, d, &rec, payload);
			if (rc)
				break;
		}
		(*count)++;
		if (b->n >= ix_catchup_batch_records || bytes >= CATCHUP_BYTES) {
			rc = ix_batch_commit(b);
			bytes = 0;
		}
	}
	if (rc == 0)
		rc = ix_batch_commit(b);
	else
		(void)ix_batch_commit(b); /* keep what was read before the error */
	jr_reader_close(r);
	return rc;
}

int ix_catch_up(struct ix *ix, ix_replay_fn fn, void *arg)
{
	struct ix_disk *disks = NULL;
	struct ix_batch *b = NULL;
	uint64_t count = 0;
	int n, rc;

	n = ix_disk_list(ix, &disks);
	if (n < 0)
		return n;
	rc = ix_batch_new(ix, &b);
	for (int i = 0; rc == 0 && i < n; i++) {
		const struct ix_disk *d = &disks[i];
		char jdir[4096];
		rc = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir));
		if (rc)
			break;
		if (!fn || d->head_synced_seq >= UINT64_MAX - 1) {
			rc = catch_up_range(b, d, jdir, JR_READ_HEADERS,
					    d->last_indexed_seq + 1, 0, NULL, NULL, &count);
			continue;
		}
		/* Headers only up to what head already holds, payloads after. */
		uint64_t lo = d->last_indexed_seq < d->head_synced_seq
			? d->last_indexed_seq : d->head_synced_seq;
		if (d->last_indexed_seq < d->head_synced_seq)
			rc = catch_up_range(b, d, jdir, JR_READ_HEADERS, lo + 1,
					    d->head_synced_seq, NULL, NULL, &count);
		if (rc == 0)
			rc = catch_up_range(b, d, jdir, 0, d->head_synced_seq + 1,
					    0, fn, arg, &count);
	}
	ix_batch_free(b);
	free(disks);
	if (rc)
		return rc;
	return count > INT32_MAX ? INT32_MAX : (int)count;
}

int ix_rebuild(struct ix *ix)
{
	int rc = ix_clear_derived(ix);

	if (rc)
		return rc;
	rc = ix_catch_up(ix, NULL, NULL);
	return rc < 0 ? rc : 0;
}

static int drop_prefix(MDB_txn *txn, MDB_dbi dbi, uint32_t disk, size_t keylen)
{
	MDB_cursor *c = NULL;
	uint8_t kb[IX_VKEY] = { 0 };
	MDB_val k = { keylen, kb }, v;
	int rc = mdb_cursor_open(txn, dbi, &c);

	if (rc)
		return rc;
	rw_put_be32(kb, disk);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT)) {
		if (k.mv_size < 4 || rw_get_be32(k.mv_data) != disk)
			break;
		rc = mdb_cursor_del(c, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : rc;
}

/* A disk's block versions and segment entries, all of them.  0 or an
 * LMDB code. */
static int drop_disk_entries(struct ix *ix, MDB_txn *txn, uint32_t id)
{
	int rc = drop_prefix(txn, ix->db_versions, id, IX_VKEY);

	if (!rc)
		rc = drop_prefix(txn, ix->db_vmap, id, IX_VKEY);
	if (!rc)
		rc = drop_prefix(txn, ix->db_segments, id, IX_SKEY);
	return rc;
}

static int reindex_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	uint32_t id = *(uint32_t *)arg;
	struct ix_disk d;
	int rc = ix_disk_load(ix, txn, id, &d);

	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u", ix->dir, id);
	if (rc || (rc = drop_disk_entries(ix, txn, id)))
		return rc;
	d.last_indexed_seq = 0;
	return ix_disk_store(ix, txn, &d);
}

struct lost_ctx {
	uint32_t id;
	uint64_t after, upto;
	const uint64_t *keep;
	size_t nkeep;
	uint64_t deleted;
};

static bool seq_kept(const struct lost_ctx *lc, uint64_t seq)
{
	return lc->nkeep && bsearch(&seq, lc->keep, lc->nkeep, sizeof(seq),
				    rw_u64_cmp);
}

/* Time map entries in (after, upto] not kept, ascending: the buckets are
 * read from the newest back to the first one that starts at or below
 * after (lost records are at the tail).  0 and *out, *n, or error. */
static int lost_times(struct ix *ix, MDB_txn *txn, const struct lost_ctx *lc,
		      struct ix_tent **out, size_t *n)
{
	struct ix_tent cur[IX_TBUCKET], *v = NULL;
	size_t nv = 0, cap = 0;
	MDB_cursor *c = NULL;
	MDB_val k, val;
	int rc = mdb_cursor_open(txn, ix->db_time, &c);

	*out = NULL;
	*n = 0;
	if (rc)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &val, MDB_LAST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &val, MDB_PREV)) {
		size_t m = 0;
		if (ix_tm_decode(&k, &val, cur, &m)) {
			rc = rw_err_set(RW_ECORRUPT, "store '%s': corrupt time "
					"map entry", ix->dir);
			break;
		}
		for (size_t i = m; i-- > 0;) {
			if (cur[i].seq <= lc->after || cur[i].seq > lc->upto ||
			    seq_kept(lc, cur[i].seq))
				continue;
			if (nv == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct ix_tent *nb = realloc(v, nc * sizeof(*nb));
				if (!nb) {
					rc = -ENOMEM;
					goto out;
				}
				v = nb;
				cap = nc;
			}
			v[nv++] = cur[i];
		}
		if (cur[0].seq <= lc->after)
			break;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
out:
	mdb_cursor_close(c);
	if (rc) {
		free(v);
		return rc;
	}
	/* Collected newest first: ix_tm_del wants them ascending. */
	for (size_t i = 0; i < nv / 2; i++) {
		struct ix_tent t = v[i];
		v[i] = v[nv - 1 - i];
		v[nv - 1 - i] = t;
	}
	*out = v;
	*n = nv;
	return 0;
}

static int drop_lost_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	struct lost_ctx *lc = arg;
	struct ix_tent *e = NULL;
	size_t n = 0;
	struct ix_disk d;
	int rc = ix_disk_load(ix, txn, lc->id, &d);

	lc->deleted = 0;
	if (rc == MDB_NOTFOUND)
		return rw_err_set(RW_ENOTFOUND, "store '%s': no disk with id %u",
				  ix->dir, lc->id);
	if (rc || (rc = lost_times(ix, txn, lc, &e, &n)))
		return rc;
	rc = ix_tm_del(txn, ix->db_time, e, n, &lc->deleted);
	free(e);
	if (rc || (rc = drop_disk_entries(ix, txn, lc->id)))
		return rc;
	d.last_indexed_seq = 0;
	if (d.head_synced_seq > lc->after)
		d.head_synced_seq = lc->after;
	return ix_disk_store(ix, txn, &d);
}

int ix_disk_drop_lost(struct ix *ix, uint32_t id, uint64_t after,
		      uint64_t upto, const uint64_t *keep, size_t nkeep,
		      uint64_t *deleted)
{
	struct lost_ctx lc = { id, after, upto, keep, nkeep, 0 };
	int rc = ix_write(ix, drop_lost_fn, &lc,
			  "dropping records the journal lost");

	if (deleted)
		*deleted = lc.deleted;
	if (rc)
		return rc;
	rc = ix_catch_up(ix, NULL, NULL);
	return rc < 0 ? rc : 0;
}

int ix_disk_reindex(struct ix *ix, uint32_t id)
{
	int rc = ix_write(ix, reindex_fn, &id, "dropping a disk's index");

	if (rc)
		return rc;
	rc = ix_catch_up(ix, NULL, NULL);
	return rc < 0 ? rc : 0;
}
