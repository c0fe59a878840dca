/*
 * verify.c — ix_verify: cross-check the index against the journals.
 *
 * How, per disk, in two passes:
 *  1. Journal → index.  Read every record in full (payload crc and
 *     decompression: the reader verifies both).  Each indexed record
 *     (seq <= last_indexed_seq) must have, for every block it touches, a
 *     version entry with the record's location, type and partial flag, and
 *     a time map entry ts -> seq.  A table of (seq, location, range) of the
 *     records seen is kept for pass 2.  A corrupt record is reported and
 *     the scan resumes at the next segment file.
 *  2. Index → journal.  Every version entry of the disk must match a
 *     record of that table (same seq, same location, covering the block);
 *     when the table does not have the seq, the record is read at the
 *     entry's location with jr_reader_read_at to say exactly what is there
 *     (nothing, a corrupt record, or another record).
 * Then segment entries are matched with segment files and record counts,
 * and (when every disk is checked) every time map entry must name a
 * record seen in pass 1.
 *
 * Rejected: re-reading the record of every version entry with
 * jr_reader_read_at — correct but O(versions) random reads and
 * decompressions where pass 1 already verified each record once.
 */
#include "index/ix_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vrec {
	uint64_t seq, ts;
	struct jr_loc loc;
	uint64_t offset;
	uint32_t length;
	uint8_t type;
};

struct vctx {
	struct ix *ix;
	ix_verify_fn fn;
	void *arg;
	struct ix_verify_report *rep;
	const struct ix_disk *d;
	struct vrec *recs;
	size_t n, cap;
	struct ix_vcurs vcur;  /* versions and vmap cursors of the disk's txn */
	MDB_cursor *tcur;      /* time map cursor, same */
	uint64_t *allseq;      /* every record seq of every disk (time map check) */
	size_t nall, capall;
};

static void problem(struct vctx *vc, uint64_t block, uint64_t seq,
		    const struct jr_loc *loc, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void problem(struct vctx *vc, uint64_t block, uint64_t seq,
		    const struct jr_loc *loc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	struct ix_problem p = {
		.disk = vc->d ? vc->d->name : "",
		.disk_id = vc->d ? vc->d->id : 0,
		.block = block,
		.seq = seq,
		.segment = loc ? loc->segment : 0,
		.offset = loc ? loc->offset : 0,
		.what = msg,
	};

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	vc->rep->problems++;
	if (vc->fn)
		vc->fn(vc->arg, &p);
}

static bool touches(const struct vrec *r, uint64_t block, uint32_t bs,
		    bool *partial)
{
	uint64_t first = r->offset / bs, last = (r->offset + r->length - 1) / bs;
	uint64_t bstart = block * bs;

	if (r->length == 0 || block < first || block > last)
		return false;
	*partial = r->offset > bstart || r->offset + r->length < bstart + bs;
	return true;
}

/* Notes a record seq the time map may name.  0 or -ENOMEM. */
static int allseq_push(struct vctx *vc, uint64_t seq)
{
	if (vc->nall == vc->capall) {
		size_t nc = vc->capall ? vc->capall * 2 : 4096;
		uint64_t *na = realloc(vc->allseq, nc * sizeof(*na));
		if (!na)
			return -ENOMEM;
		vc->allseq = na;
		vc->capall = nc;
	}
	vc->allseq[vc->nall++] = seq;
	return 0;
}

/* Pass 1 checks for one record. */
static int check_record(struct vctx *vc, MDB_txn *txn, const struct jr_rec *rec,
			const struct jr_loc *loc)
{
	const struct ix_disk *d = vc->d;
	struct vrec r = { rec->seq, rec->ts_ns, *loc, rec->offset, rec->length, rec->type };
	int rc;

	if (rec->disk_id != d->id) {
		problem(vc, UINT64_MAX, rec->seq, loc, "record carries disk id %u, expected %u",
			rec->disk_id, d->id);
		return 0;
	}
	if (!rw_range_ok(rec->offset, rec->length, d->size)) {
		problem(vc, UINT64_MAX, rec->seq, loc, "record range %llu+%u is outside the disk",
			(unsigned long long)rec->offset, rec->length);
		return 0;
	}
	if (rec->seq <= d->base_seq)
		return 0; /* folded into base.img by compaction: not indexed */
	if (vc->n == vc->cap) {
		size_t nc = vc->cap ? vc->cap * 2 : 4096;
		struct vrec *nr = realloc(vc->recs, nc * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		vc->recs = nr;
		vc->cap = nc;
	}
	vc->recs[vc->n++] = r;
	if ((rc = allseq_push(vc, rec->seq)))
		return rc;
	if (rec->seq > d->last_indexed_seq) {
		vc->rep->unindexed++;
		return 0;
	}
	for (uint64_t blk = rec->offset / d->block_size;
	     rec->length && blk <= (rec->offset + rec->length - 1) / d->block_size; blk++) {
		struct ix_version ver;
		bool partial = false;

		touches(&r, blk, d->block_size, &partial);
		if (!vc->vcur.v &&
		    ((rc = mdb_cursor_open(txn, vc->ix->db_versions, &vc->vcur.v)) ||
		     (rc = mdb_cursor_open(txn, vc->ix->db_vmap, &vc->vcur.m))))
			return ix_fail(vc->ix, rc, "verifying");
		rc = ix_vers_find(&vc->vcur, d->id, blk, rec->seq, &ver);
		if (rc == MDB_NOTFOUND) {
			problem(vc, blk, rec->seq, loc, "record is not indexed for block %llu",
				(unsigned long long)blk);
			continue;
		}
		if (rc == RW_ECORRUPT) {
			problem(vc, blk, rec->seq, loc, "version chunk of block %llu is undecodable",
				(unsigned long long)blk);
			continue;
		}
		if (rc)
			return ix_fail(vc->ix, rc, "verifying");
		if (ver.loc.segment != loc->segment || ver.loc.offset != loc->offset)
			problem(vc, blk, rec->seq, loc,
				"version entry points at segment %llu offset %llu, record is at segment %llu offset %llu",
				(unsigned long long)ver.loc.segment, (unsigned long long)ver.loc.offset,
				(unsigned long long)loc->segment, (unsigned long long)loc->offset);
		else if (ver.type != rec->type || ver.partial != partial)
			problem(vc, blk, rec->seq, loc,
				"version entry says %s%s, record is %s%s",
				jr_type_name(ver.type), ver.partial ? " (partial)" : "",
				jr_type_name(rec->type), partial ? " (partial)" : "");
	}
	struct ix_tent te;
	if (!vc->tcur && (rc = mdb_cursor_open(txn, vc->ix->db_time, &vc->tcur)))
		return ix_fail(vc->ix, rc, "verifying");
	rc = ix_tm_floor(vc->tcur, rec->ts_ns, &te);
	if (rc == MDB_NOTFOUND || (rc == 0 && te.ts != rec->ts_ns))
		problem(vc, UINT64_MAX, rec->seq, loc, "no time map entry for ts %llu",
			(unsigned long long)rec->ts_ns);
	else if (rc == RW_ECORRUPT)
		problem(vc, UINT64_MAX, rec->seq, loc, "time map entry near ts %llu is undecodable",
			(unsigned long long)rec->ts_ns);
	else if (rc)
		return ix_fail(vc->ix, rc, "verifying");
	else if (te.seq != rec->seq)
		problem(vc, UINT64_MAX, rec->seq, loc, "time map entry for ts %llu names another seq",
			(unsigned long long)rec->ts_ns);
	return 0;
}

static int journal_pass(struct vctx *vc, MDB_txn *txn, const char *jdir,
			struct jr_seginfo *segs, int nsegs)
{
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	uint64_t last_good_seg = 0, resumed_at = 0;
	bool failed_again = false;
	int rc = jr_reader_open(&r, jdir, 0);

	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	rc = jr_reader_seek(r, 1);
	while (rc == 0) {
		int n = jr_reader_next(r, &rec, &loc, &payload);
		if (n == 0)
			break;
		if (n < 0) {
			if (n != RW_ECORRUPT) {
				rc = n;
				break;
			}
			/* Report once per stretch of damage: resuming at a
			 * segment that is itself bad is the same damage. */
			if (!failed_again)
				problem(vc, UINT64_MAX, 0, NULL, "corrupt journal: %s", rw_err_msg());
			failed_again = true;
			/* Resume at the next segment after the damage. */
			uint64_t next = 0;
			for (int i = 0; i < nsegs; i++) {
				if (segs[i].first_seq > last_good_seg &&
				    segs[i].first_seq > resumed_at) {
					next = segs[i].first_seq;
					break;
				}
			}
			if (!next)
				break;
			resumed_at = next;
			jr_reader_close(r);
			r = NULL;
			if ((rc = jr_reader_open(&r, jdir, 0)) == 0)
				rc = jr_reader_seek(r, next);
			continue;
		}
		last_good_seg = loc.segment;
		failed_again = false;
		vc->rep->records++;
		rc = check_record(vc, txn, &rec, &loc);
	}
	jr_reader_close(r);
	return rc;
}

static int vrec_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct vrec *)a)->seq, y = ((const struct vrec *)b)->seq;

	return x < y ? -1 : x > y;
}

static const struct vrec *find_rec(struct vctx *vc, uint64_t seq)
{
	struct vrec key = { .seq = seq };

	if (!vc->n)
		return NULL;
	return bsearch(&key, vc->recs, vc->n, sizeof(key), vrec_cmp);
}

/* Pass 2 for one version entry. */
static int check_entry(struct vctx *vc, const char *jdir, struct jr_reader **rp,
		       uint8_t **bufp, uint64_t blk, const struct ix_version *ver)
{
	const struct ix_disk *d = vc->d;
	const struct vrec *vr;
	uint64_t seq = ver->seq;
	bool partial = false;
	struct jr_rec rec;
	int rc;

	vc->rep->versions++;
	vr = find_rec(vc, seq);
	if (vr && vr->loc.segment == ver->loc.segment &&
	    vr->loc.offset == ver->loc.offset) {
		if (!touches(vr, blk, d->block_size, &partial))
			problem(vc, blk, seq, &ver->loc, "version entry for block %llu, but record %llu+%u does not touch it",
				(unsigned long long)blk, (unsigned long long)vr->offset, vr->length);
		return 0; /* type/partial mismatches were reported in pass 1 */
	}
	/* Not what pass 1 saw: read what is really at that location. */
	if (!*rp && (rc = jr_reader_open(rp, jdir, 0)))
		return rc;
	if (!*bufp && !(*bufp = malloc(JR_MAX_WRITE)))
		return -ENOMEM;
	rw_err_clear();
	int e = jr_reader_read_at(*rp, &ver->loc, &rec, *bufp, JR_MAX_WRITE);
	if (e < 0) {
		problem(vc, blk, seq, &ver->loc, "version entry points at a missing or unreadable record: %s",
			*rw_err_msg() ? rw_err_msg() : rw_strerror(e));
		return 0;
	}
	struct vrec got = { rec.seq, rec.ts_ns, ver->loc, rec.offset, rec.length, rec.type };
	if (rec.seq == seq && rec.disk_id == d->id && !vr) {
		/* A good record pass 1 could not reach (it skipped past
		 * damage): it exists, so the time map may name it. */
		if ((rc = allseq_push(vc, seq)))
			return rc;
	}
	if (rec.seq != seq || rec.disk_id != d->id)
		problem(vc, blk, seq, &ver->loc, "version entry points at the wrong record (disk id %u seq %llu)",
			rec.disk_id, (unsigned long long)rec.seq);
	else if (!touches(&got, blk, d->block_size, &partial))
		problem(vc, blk, seq, &ver->loc, "record %llu+%u does not touch block %llu",
			(unsigned long long)rec.offset, rec.length, (unsigned long long)blk);
	else if (vr)
		problem(vc, blk, seq, &ver->loc, "version entry location differs from the journal's (segment %llu offset %llu)",
			(unsigned long long)vr->loc.segment, (unsigned long long)vr->loc.offset);
	return 0;
}

static int index_pass(struct vctx *vc, MDB_txn *txn, const char *jdir)
{
	const struct ix_disk *d = vc->d;
	struct jr_reader *r = NULL;
	MDB_cursor *c = NULL;
	uint8_t kb[IX_VKEY];
	MDB_val k = { IX_VKEY, kb }, v;
	uint8_t *buf = NULL;
	int rc;

	if (vc->n)
		qsort(vc->recs, vc->n, sizeof(*vc->recs), vrec_cmp);
	rc = mdb_cursor_open(txn, vc->ix->db_versions, &c);
	if (rc)
		return ix_fail(vc->ix, rc, "verifying");
	ix_vkey(kb, d->id, 0, 0);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct ix_cdec dec;
		int e;

		if (k.mv_size != IX_VKEY || rw_get_be32(k.mv_data) != d->id)
			break;
		if (ix_cdec_init(&dec, &k, &v)) {
			problem(vc, rw_get_be64((uint8_t *)k.mv_data + 4) * IX_GROUP_BLOCKS,
				rw_get_be64((uint8_t *)k.mv_data + 12), NULL,
				"version chunk is undecodable");
			continue;
		}
		uint8_t want[IX_CMAP] = { 0 };
		while ((e = ix_cdec_next(&dec)) > 0) {
			unsigned bi = (unsigned)(dec.block % IX_GROUP_BLOCKS);
			want[bi / 8] |= (uint8_t)(1u << (bi % 8));
			if ((rc = check_entry(vc, jdir, &r, &buf, dec.block, &dec.cur)))
				break;
		}
		if (rc)
			break;
		if (e < 0) {
			problem(vc, dec.block, dec.cur.seq, NULL,
				"version chunk is undecodable after %zu entries", dec.n);
			continue;
		}
		/* Its block map (vmap) must name exactly its blocks. */
		MDB_val mk = k, mv;
		int mrc = mdb_get(txn, vc->ix->db_vmap, &mk, &mv);
		if (mrc && mrc != MDB_NOTFOUND) {
			rc = mrc;
			break;
		}
		if (mrc == MDB_NOTFOUND || mv.mv_size != IX_CMAP ||
		    memcmp(mv.mv_data, want, IX_CMAP) != 0)
			problem(vc, dec.group * IX_GROUP_BLOCKS, dec.first_seq, NULL,
				"block map of the version chunk of blocks %llu.. (seq %llu) is %s",
				(unsigned long long)(dec.group * IX_GROUP_BLOCKS),
				(unsigned long long)dec.first_seq,
				mrc == MDB_NOTFOUND ? "missing" : "wrong");
	}
	/* And no block map without its chunk. */
	if (rc == 0 || rc == MDB_NOTFOUND) {
		MDB_cursor *mc = NULL;
		rc = mdb_cursor_open(txn, vc->ix->db_vmap, &mc);
		ix_vkey(kb, d->id, 0, 0);
		k.mv_size = IX_VKEY;
		k.mv_data = kb;
		for (rc = rc ? rc : mdb_cursor_get(mc, &k, &v, MDB_SET_RANGE); rc == 0;
		     rc = mdb_cursor_get(mc, &k, &v, MDB_NEXT)) {
			MDB_val vk = k, vv;
			if (k.mv_size != IX_VKEY || rw_get_be32(k.mv_data) != d->id)
				break;
			int grc = mdb_get(txn, vc->ix->db_versions, &vk, &vv);
			if (grc == MDB_NOTFOUND)
				problem(vc, rw_get_be64((uint8_t *)k.mv_data + 4) * IX_GROUP_BLOCKS,
					rw_get_be64((uint8_t *)k.mv_data + 12), NULL,
					"block map without a version chunk");
			else if (grc) {
				rc = grc;
				break;
			}
		}
		if (mc)
			mdb_cursor_close(mc);
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	else if (rc > 0 || (rc < -30000 && rc > -31000))
		rc = ix_fail(vc->ix, rc, "verifying");
	mdb_cursor_close(c);
	jr_reader_close(r);
	free(buf);
	return rc;
}

static int segment_pass(struct vctx *vc, MDB_txn *txn, struct jr_seginfo *segs,
			int nsegs)
{
	const struct ix_disk *d = vc->d;
	MDB_cursor *c = NULL;
	uint8_t kb[IX_SKEY];
	MDB_val k = { IX_SKEY, kb }, v;
	int rc = mdb_cursor_open(txn, vc->ix->db_segments, &c);

	if (rc)
		return ix_fail(vc->ix, rc, "verifying");
	ix_skey(kb, d->id, 0);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct ix_segment s;
		struct jr_loc loc = { 0, 0 };
		uint64_t count = 0;
		bool found = false;

		if (k.mv_size != IX_SKEY || rw_get_be32(k.mv_data) != d->id)
			break;
		loc.segment = rw_get_be64((uint8_t *)k.mv_data + 4);
		vc->rep->segments++;
		if (ix_segval_decode(v.mv_data, v.mv_size, &s) || s.first_seq != loc.segment) {
			problem(vc, UINT64_MAX, 0, &loc, "segment entry is corrupt");
			continue;
		}
		for (int i = 0; i < nsegs; i++)
			if (segs[i].first_seq == s.first_seq)
				found = true;
		if (!found) {
			problem(vc, UINT64_MAX, s.first_seq, &loc, "segment file %llu is missing",
				(unsigned long long)s.first_seq);
			continue;
		}
		for (size_t i = 0; i < vc->n; i++)
			if (vc->recs[i].loc.segment == s.first_seq &&
			    vc->recs[i].seq <= d->last_indexed_seq)
				count++;
		/* A segment straddling base_seq also counts its folded records. */
		if (count != s.records &&
		    !(s.first_seq <= d->base_seq && count <= s.records))
			problem(vc, UINT64_MAX, s.first_seq, &loc,
				"segment entry counts %llu records, the journal has %llu readable indexed ones",
				(unsigned long long)s.records, (unsigned long long)count);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : ix_fail(vc->ix, rc, "verifying");
}

static int time_pass(struct vctx *vc, MDB_txn *txn)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, vc->ix->db_time, &c);

	if (rc)
		return ix_fail(vc->ix, rc, "verifying");
	if (vc->nall)
		qsort(vc->allseq, vc->nall, sizeof(*vc->allseq), rw_u64_cmp);
	vc->d = NULL;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct ix_tent e[IX_TBUCKET];
		size_t n = 0;
		if (ix_tm_decode(&k, &v, e, &n)) {
			problem(vc, UINT64_MAX, 0, NULL, "corrupt time map entry at ts %llu",
				k.mv_size == 8 ? (unsigned long long)rw_get_be64(k.mv_data) : 0ull);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t seq = e[i].seq;
			vc->rep->time_entries++;
			if (!vc->nall || !bsearch(&seq, vc->allseq, vc->nall, sizeof(seq), rw_u64_cmp))
				problem(vc, UINT64_MAX, seq, NULL,
					"time map entry ts %llu -> seq %llu names no readable journal record",
					(unsigned long long)e[i].ts, (unsigned long long)seq);
		}
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : ix_fail(vc->ix, rc, "verifying");
}

int ix_verify(struct ix *ix, const char *const *names, int nnames,
	      ix_verify_fn fn, void *arg, struct ix_verify_report *rep)
{
	struct vctx vc = { .ix = ix, .fn = fn, .arg = arg, .rep = rep };
	struct ix_disk *disks = NULL;
	int n, rc = 0;

	memset(rep, 0, sizeof(*rep));
	n = ix_disk_list(ix, &disks);
	if (n < 0)
		return n;
	for (int i = 0; i < nnames; i++) {
		bool found = false;
		for (int j = 0; j < n; j++)
			if (strcmp(disks[j].name, names[i]) == 0)
				found = true;
		if (!found) {
			rc = rw_err_set(RW_ENOTFOUND, "store '%s': no disk named '%s'",
					ix->dir, names[i]);
			goto out;
		}
	}
	for (int j = 0; j < n && rc == 0; j++) {
		const struct ix_disk *d = &disks[j];
		struct jr_seginfo *segs = NULL;
		char jdir[4096];
		MDB_txn *txn = NULL;
		int nsegs;
		bool want = nnames == 0;

		for (int i = 0; i < nnames; i++)
			if (strcmp(d->name, names[i]) == 0)
				want = true;
		if (!want)
			continue;
		vc.d = d;
		vc.n = 0;
		rep->disks++;
		rc = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir));
		if (rc)
			break;
		nsegs = jr_segments_list(jdir, &segs);
		if (nsegs == -ENOENT)
			nsegs = 0;
		if (nsegs < 0) {
			rc = nsegs;
			break;
		}
		rc = ix_txn_begin(ix, MDB_RDONLY, &txn);
		if (rc) {
			free(segs);
			rc = ix_fail(ix, rc, "verifying");
			break;
		}
		rc = journal_pass(&vc, txn, jdir, segs, nsegs);
		if (rc == 0)
			rc = index_pass(&vc, txn, jdir);
		if (rc == 0)
			rc = segment_pass(&vc, txn, segs, nsegs);
		if (vc.vcur.v)
			mdb_cursor_close(vc.vcur.v);
		if (vc.vcur.m)
			mdb_cursor_close(vc.vcur.m);
		if (vc.tcur)
			mdb_cursor_close(vc.tcur);
		vc.vcur.v = vc.vcur.m = vc.tcur = NULL;
		ix_txn_abort(ix, txn);
		free(segs);
	}
	if (rc == 0 && nnames == 0) {
		MDB_txn *txn = NULL;
		rc = ix_txn_begin(ix, MDB_RDONLY, &txn);
		if (rc == 0) {
			rc = time_pass(&vc, txn);
			ix_txn_abort(ix, txn);
		} else {
			rc = ix_fail(ix, rc, "verifying");
		}
	}
out:
	free(disks);
	free(vc.recs);
	free(vc.allseq);
	return rc;
}
