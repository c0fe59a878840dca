/*
 * timemap.c — the time map: timestamp -> seq, packed by seq buckets.
 *
 * Every indexed record has an entry (ts, seq); timestamps strictly
 * increase with seq, store-wide.  Entries are kept in buckets of
 * IX_TBUCKET consecutive seqs (seq / IX_TBUCKET): one LMDB key per bucket,
 * the timestamp of its oldest entry, and a value holding that entry's seq
 * and the others delta-coded (FORMAT.md, "time").  A bucket's bytes
 * depend only on which entries it holds — not on the order they came in
 * (disks are caught up one after the other, so their records arrive out
 * of seq order) — so an index caught up after a crash is still byte for
 * byte a rebuilt one.  Resolving a time is one seek plus a scan of at most
 * IX_TBUCKET entries.
 *
 * Why: one key per record cost 26 bytes per record (8-byte node header,
 * 8-byte key, 8-byte value, slot); a bucket costs about 3–4 bytes per
 * record, of which the seq step (nearly always 1) is one bit.
 */
#include "index/ix_int.h"

#include <errno.h>
#include <string.h>

int ix_tm_decode(const MDB_val *k, const MDB_val *v, struct ix_tent *out,
		 size_t *n)
{
	const uint8_t *p = v->mv_data;
	size_t len = v->mv_size, pos = 8, m = 1;
	uint64_t seq, ts;

	if (k->mv_size != 8 || len < 8)
		return RW_ECORRUPT;
	ts = rw_get_be64(k->mv_data);
	seq = rw_get_le64(p);
	out[0].seq = seq;
	out[0].ts = ts;
	while (pos < len) {
		uint64_t ds = 1, dt;
		if (m == IX_TBUCKET || ix_get_varint(p, len, &pos, &dt) ||
		    ((dt & 1u) && (ix_get_varint(p, len, &pos, &ds) || ds < 2)))
			return RW_ECORRUPT;
		dt >>= 1;
		if (dt == 0 || ds > UINT64_MAX - seq || dt > UINT64_MAX - ts)
			return RW_ECORRUPT;
		seq += ds;
		ts += dt;
		if (seq / IX_TBUCKET != out[0].seq / IX_TBUCKET)
			return RW_ECORRUPT;
		out[m].seq = seq;
		out[m].ts = ts;
		m++;
	}
	*n = m;
	return 0;
}

/*
 * Encodes e[0..n) (one bucket, ascending).  Returns the value length, or
 * 0 when two timestamps are 2^63 ns or more apart (not representable).
 * Seqs are gap-free store-wide, so an entry is nearly always the next seq:
 * that case costs no byte of its own, only the low bit of the ts delta.
 */
static size_t tm_encode(uint8_t *out, const struct ix_tent *e, size_t n)
{
	size_t len = 8;

	rw_put_le64(out, e[0].seq);
	for (size_t i = 1; i < n; i++) {
		uint64_t ds = e[i].seq - e[i - 1].seq;
		uint64_t dt = e[i].ts - e[i - 1].ts;
		if (dt > UINT64_MAX >> 1)
			return 0;
		len += ix_put_varint(out + len, dt << 1 | (ds != 1));
		if (ds != 1)
			len += ix_put_varint(out + len, ds);
	}
	return len;
}

/*
 * Finds the chunk of bucket `bucket` near timestamp ts: it is the last
 * chunk keyed at or below ts or the first one above it.  Returns 0 with
 * k/v on it, MDB_NOTFOUND, or an error.
 */
static int tm_find_bucket(MDB_cursor *c, uint64_t bucket, uint64_t ts,
			  MDB_val *k, MDB_val *v)
{
	uint8_t kb[8];
	int rc;

	rw_put_be64(kb, ts);
	k->mv_size = 8;
	k->mv_data = kb;
	rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
	if (rc == 0 && v->mv_size >= 8 &&
	    rw_get_le64(v->mv_data) / IX_TBUCKET == bucket)
		return 0;
	if (rc == 0)
		rc = mdb_cursor_get(c, k, v, MDB_PREV);
	else if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, k, v, MDB_LAST);
	if (rc)
		return rc;
	if (v->mv_size >= 8 && rw_get_le64(v->mv_data) / IX_TBUCKET == bucket)
		return 0;
	return MDB_NOTFOUND;
}

/*
 * Replaces the bucket's chunk (old key okey if had) with entries e[0..n)
 * (ascending; n == 0 deletes it).  0 or an LMDB code.
 */
static int tm_store(MDB_txn *txn, MDB_dbi dbi, bool had, uint64_t okey,
		    const struct ix_tent *e, size_t n)
{
	uint8_t kb[8], vb[8 + 20 * IX_TBUCKET];
	MDB_val k = { 8, kb }, v = { 0, vb };
	int rc;

	if (had && (n == 0 || e[0].ts != okey)) {
		rw_put_be64(kb, okey);
		if ((rc = mdb_del(txn, dbi, &k, NULL)))
			return rc;
	}
	if (n == 0)
		return 0;
	rw_put_be64(kb, e[0].ts);
	v.mv_size = tm_encode(vb, e, n);
	if (v.mv_size == 0)
		return rw_err_set(-EOVERFLOW, "seq %llu: timestamps 2^63 ns apart within one time map bucket",
				  (unsigned long long)e[0].seq);
	rc = mdb_put(txn, dbi, &k, &v, 0);
	if (rc == 0)
		ix_step("put");
	return rc;
}

int ix_tm_add(MDB_txn *txn, MDB_dbi dbi, const struct ix_tent *e, size_t n)
{
	struct ix_tent cur[IX_TBUCKET], merged[IX_TBUCKET];
	MDB_cursor *c = NULL;
	int rc = mdb_cursor_open(txn, dbi, &c);

	if (rc)
		return rc;
	for (size_t i = 0; i < n && rc == 0;) {
		uint64_t bucket = e[i].seq / IX_TBUCKET, okey = 0;
		size_t j = i, ncur = 0, m = 0, a = 0;
		MDB_val k, v;
		bool had;

		while (j < n && e[j].seq / IX_TBUCKET == bucket)
			j++;
		rc = tm_find_bucket(c, bucket, e[i].ts, &k, &v);
		had = rc == 0;
		if (rc == MDB_NOTFOUND)
			rc = 0;
		if (rc)
			break;
		if (had) {
			okey = rw_get_be64(k.mv_data);
			if (ix_tm_decode(&k, &v, cur, &ncur)) {
				rc = rw_err_set(RW_ECORRUPT, "corrupt time map entry at ts %llu",
						(unsigned long long)okey);
				break;
			}
		}
		/* Merge by seq; a seq already there must carry the same ts. */
		for (size_t b = i; rc == 0 && (a < ncur || b < j);) {
			const struct ix_tent *x;
			if (b == j || (a < ncur && cur[a].seq < e[b].seq)) {
				x = &cur[a++];
			} else if (a < ncur && cur[a].seq == e[b].seq) {
				if (cur[a].ts != e[b].ts)
					rc = rw_err_set(RW_ECORRUPT, "time map: seq %llu has ts %llu, record says %llu",
							(unsigned long long)e[b].seq,
							(unsigned long long)cur[a].ts,
							(unsigned long long)e[b].ts);
				x = &cur[a++];
				b++;
			} else {
				x = &e[b++];
			}
			if (m && (x->seq <= merged[m - 1].seq || x->ts <= merged[m - 1].ts))
				rc = rw_err_set(RW_ECORRUPT, "time map: seq %llu at ts %llu is not after seq %llu at ts %llu",
						(unsigned long long)x->seq, (unsigned long long)x->ts,
						(unsigned long long)merged[m - 1].seq,
						(unsigned long long)merged[m - 1].ts);
			else if (m == IX_TBUCKET)
				rc = RW_ECORRUPT;
			else
				merged[m++] = *x;
		}
		if (rc == 0)
			rc = tm_store(txn, dbi, had, okey, merged, m);
		i = j;
	}
	mdb_cursor_close(c);
	return rc;
}

int ix_tm_del(MDB_txn *txn, MDB_dbi dbi, const struct ix_tent *e, size_t n,
	      uint64_t *deleted)
{
	struct ix_tent cur[IX_TBUCKET];
	MDB_cursor *c = NULL;
	int rc = mdb_cursor_open(txn, dbi, &c);

	*deleted = 0;
	if (rc)
		return rc;
	for (size_t i = 0; i < n && rc == 0;) {
		uint64_t bucket = e[i].seq / IX_TBUCKET, okey;
		size_t j = i, ncur = 0, m = 0;
		MDB_val k, v;

		while (j < n && e[j].seq / IX_TBUCKET == bucket)
			j++;
		rc = tm_find_bucket(c, bucket, e[i].ts, &k, &v);
		if (rc == MDB_NOTFOUND) {
			rc = 0;
			i = j;
			continue;
		}
		if (rc)
			break;
		okey = rw_get_be64(k.mv_data);
		if (ix_tm_decode(&k, &v, cur, &ncur)) {
			rc = rw_err_set(RW_ECORRUPT, "corrupt time map entry at ts %llu",
					(unsigned long long)okey);
			break;
		}
		/* Keep what is not asked for (both lists ascend by seq). */
		for (size_t a = 0, b = i; a < ncur; a++) {
			while (b < j && e[b].seq < cur[a].seq)
				b++;
			if (b < j && e[b].seq == cur[a].seq && e[b].ts == cur[a].ts) {
				(*deleted)++;
				continue;
			}
			cur[m++] = cur[a];
		}
		if (m != ncur)
			rc = tm_store(txn, dbi, true, okey, cur, m);
		i = j;
	}
	mdb_cursor_close(c);
	return rc;
}

int ix_tm_floor(MDB_cursor *c, uint64_t ts, struct ix_tent *out)
{
	struct ix_tent cur[IX_TBUCKET];
	uint8_t kb[8];
	MDB_val k = { 8, kb }, v;
	size_t n = 0;
	int rc;

	rw_put_be64(kb, ts);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == MDB_NOTFOUND)
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	else if (rc == 0 && rw_get_be64(k.mv_data) != ts)
		rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
	if (rc)
		return rc;
	if (ix_tm_decode(&k, &v, cur, &n))
		return RW_ECORRUPT;
	/* The chunk's key is its oldest ts, so at least cur[0] qualifies. */
	while (n > 1 && cur[n - 1].ts > ts)
		n--;
	if (cur[n - 1].ts > ts)
		return MDB_NOTFOUND;
	*out = cur[n - 1];
	return 0;
}

int ix_tm_ceil(MDB_cursor *c, uint64_t ts, struct ix_tent *out)
{
	struct ix_tent cur[IX_TBUCKET];
	uint8_t kb[8];
	MDB_val k = { 8, kb }, v;
	size_t n = 0;
	int rc;

	/* The chunk keyed at or below ts may hold newer entries. */
	rc = ix_tm_floor(c, ts, out);
	if (rc == 0 && out->ts == ts)
		return 0;
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	if (rc == 0) {
		MDB_val ck, cv;
		if ((rc = mdb_cursor_get(c, &ck, &cv, MDB_GET_CURRENT)))
			return rc;
		if (ix_tm_decode(&ck, &cv, cur, &n))
			return RW_ECORRUPT;
		for (size_t i = 0; i < n; i++)
			if (cur[i].ts >= ts) {
				*out = cur[i];
				return 0;
			}
	}
	rw_put_be64(kb, ts);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc)
		return rc;
	if (ix_tm_decode(&k, &v, cur, &n))
		return RW_ECORRUPT;
	*out = cur[0];
	return 0;
}

int ix_tm_last(MDB_cursor *c, struct ix_tent *out)
{
	struct ix_tent cur[IX_TBUCKET];
	MDB_val k, v;
	size_t n = 0;
	int rc = mdb_cursor_get(c, &k, &v, MDB_LAST);

	if (rc)
		return rc;
	if (ix_tm_decode(&k, &v, cur, &n))
		return RW_ECORRUPT;
	*out = cur[n - 1];
	return 0;
}
