/*
 * chunk.c — the versions table: block versions packed into chunks.
 *
 * A chunk holds, for one disk and one group of IX_GROUP_BLOCKS adjacent
 * blocks, a run of versions in seq order (FORMAT.md, "versions").  Its key
 * is (disk, group, seq of its first entry); its value is the entries,
 * delta-coded: a head byte (type, partial) and the block within the
 * group, the seq delta, the seq's distance to its segment and the
 * record's offset in that segment as varints — or, for a later block of
 * the same record as the entry before, one byte.  A 4 KiB random write
 * costs about eleven bytes; each further block of a multi-block record
 * costs one.
 *
 * Appends go to the group's newest chunk until it would pass
 * IX_CHUNK_BYTES, then a new chunk starts at the entry that did not fit.
 * The decision is taken per entry, so the chunks of a group are the same
 * however the records were batched: an index caught up after a crash is
 * byte for byte a rebuilt one.
 *
 * Why chunks and not one LMDB key per version: each LMDB node costs its
 * 8-byte header, the 20-byte key and a 2-byte slot, which with the fill
 * of random inserts came to 56 bytes per version; a chunk spreads that
 * over every version of the group, and the smaller tree is shallower and
 * mostly cache-resident, so an as-of lookup is one seek plus a scan of a
 * few hundred bytes.  Measured in FORMAT.md.  The cost: a lookup of a
 * block whose group is hot but which itself is not walks the group's
 * chunks backwards until it finds the block (bounded by the history that
 * compaction keeps).
 */
#include "index/ix_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- codec */

int ix_cdec_init(struct ix_cdec *d, const MDB_val *k, const MDB_val *v)
{
	size_t pos = 0;
	uint64_t span;

	if (k->mv_size != IX_VKEY || v->mv_size == 0 ||
	    v->mv_size > IX_CHUNK_HARD)
		return RW_ECORRUPT;
	d->first_seq = rw_get_be64((const uint8_t *)k->mv_data + 12);
	if (ix_get_varint(v->mv_data, v->mv_size, &pos, &span) ||
	    pos == v->mv_size || span > UINT64_MAX - d->first_seq)
		return RW_ECORRUPT;
	d->p = (const uint8_t *)v->mv_data + pos;
	d->end = (const uint8_t *)v->mv_data + v->mv_size;
	d->disk = rw_get_be32(k->mv_data);
	d->group = rw_get_be64((const uint8_t *)k->mv_data + 4);
	d->last_seq = d->first_seq + span;
	d->n = 0;
	d->cur.seq = d->first_seq;
	d->cur.loc.segment = 0;
	d->cur.loc.offset = 0;
	d->cur.type = 0;
	d->cur.partial = false;
	d->block = 0;
	return 0;
}

int ix_cdec_next(struct ix_cdec *d)
{
	uint8_t h;
	unsigned type;
	uint64_t blk;

	if (d->p == d->end)
		return d->cur.seq == d->last_seq ? 0 : RW_ECORRUPT;
	h = *d->p++;
	type = h & 3u;
	if (h & 0xf8u & (type ? 0xffu : 0u))
		return RW_ECORRUPT; /* reserved bits of a full entry */
	if (type == 0) {
		/* A later block of the entry before's record. */
		if (d->n == 0)
			return RW_ECORRUPT;
		blk = d->block + 1 + (h >> 3);
		if (blk / IX_GROUP_BLOCKS != d->group)
			return RW_ECORRUPT;
	} else {
		uint64_t delta, segd, off;
		size_t pos = 1, len = (size_t)(d->end - d->p);
		if (len < 1 || ix_get_varint(d->p, len, &pos, &delta) ||
		    ix_get_varint(d->p, len, &pos, &segd) ||
		    ix_get_varint(d->p, len, &pos, &off))
			return RW_ECORRUPT;
		blk = d->group * IX_GROUP_BLOCKS + d->p[0];
		d->p += pos;
		if (d->n == 0 ? delta != 0 : delta == 0 && blk <= d->block)
			return RW_ECORRUPT;
		if (delta > UINT64_MAX - d->cur.seq)
			return RW_ECORRUPT;
		d->cur.seq += delta;
		if (d->cur.seq > d->last_seq || segd > d->cur.seq)
			return RW_ECORRUPT;
		d->cur.loc.segment = d->cur.seq - segd;
		d->cur.loc.offset = off;
		d->cur.type = (uint8_t)type;
	}
	d->cur.partial = (h & 4u) != 0;
	d->block = blk;
	d->n++;
	return 1;
}

/* Skips one varint of p[0..len) at *pos.  0 or RW_ECORRUPT. */
static inline int skip_varint(const uint8_t *p, size_t len, size_t *pos)
{
	size_t i = *pos, end = i + 10 < len ? i + 10 : len;

	for (; i < end; i++) {
		if (!(p[i] & 0x80)) {
			*pos = i + 1;
			return 0;
		}
	}
	return RW_ECORRUPT;
}

int ix_chunk_block(const MDB_val *k, const MDB_val *v, uint64_t block,
		   uint64_t seq, uint64_t above, struct ix_version *ring,
		   size_t ring_cap, size_t *found)
{
	const uint8_t *p = v->mv_data;
	size_t len = v->mv_size, pos = 0, locpos = 0, n = 0;
	uint64_t first, span, cur, group, blk = 0;
	unsigned type = 0, want = (unsigned)(block % IX_GROUP_BLOCKS);

	*found = 0;
	if (k->mv_size != IX_VKEY || len == 0 || len > IX_CHUNK_HARD ||
	    ix_get_varint(p, len, &pos, &span) || pos == len)
		return RW_ECORRUPT;
	first = rw_get_be64((const uint8_t *)k->mv_data + 12);
	group = rw_get_be64((const uint8_t *)k->mv_data + 4);
	if (block / IX_GROUP_BLOCKS != group || span > UINT64_MAX - first)
		return RW_ECORRUPT;
	cur = first;
	while (pos < len) {
		uint8_t h = p[pos++];
		bool hit;
		if ((h & 3u) == 0) {
			/* A later block of the record before: same seq, loc. */
			if (n == 0)
				return RW_ECORRUPT;
			blk += 1 + (h >> 3);
			if (blk >= IX_GROUP_BLOCKS)
				return RW_ECORRUPT;
		} else {
			uint64_t delta, prev = blk;
			if ((h & 0xf8u) || pos >= len)
				return RW_ECORRUPT;
			blk = p[pos++];
			if (ix_get_varint(p, len, &pos, &delta) ||
			    delta > UINT64_MAX - cur ||
			    (n == 0 ? delta != 0 : delta == 0 && blk <= prev))
				return RW_ECORRUPT;
			cur += delta;
			if (cur > first + span)
				return RW_ECORRUPT;
			if (cur > seq)
				break;
			type = h & 3u;
			locpos = pos; /* seq − segment, offset: decoded on a hit */
			if (skip_varint(p, len, &pos) || skip_varint(p, len, &pos))
				return RW_ECORRUPT;
		}
		n++;
		hit = blk == want && cur > above;
		if (hit) {
			struct ix_version *o = &ring[*found % ring_cap];
			uint64_t segd, off;
			size_t lp = locpos;
			if (ix_get_varint(p, len, &lp, &segd) ||
			    ix_get_varint(p, len, &lp, &off) || segd > cur)
				return RW_ECORRUPT;
			o->seq = cur;
			o->loc.segment = cur - segd;
			o->loc.offset = off;
			o->type = (uint8_t)type;
			o->partial = (h & 4u) != 0;
			(*found)++;
		}
	}
	return 0;
}

/* Encodes e after prev (NULL for a chunk's first entry).  Returns bytes. */
static size_t enc_entry(uint8_t out[IX_CENT_MAX], const struct ix_ventry *e,
			const struct ix_ventry *prev)
{
	uint8_t partial = e->v.partial ? 4u : 0u;
	size_t n = 2;

	if (prev && prev->v.seq == e->v.seq && prev->v.type == e->v.type &&
	    prev->v.loc.segment == e->v.loc.segment &&
	    prev->v.loc.offset == e->v.loc.offset &&
	    e->block > prev->block && e->block - prev->block <= 32) {
		out[0] = (uint8_t)(((e->block - prev->block - 1) << 3) | partial);
		return 1;
	}
	out[0] = (uint8_t)((e->v.type & 3u) | partial);
	out[1] = (uint8_t)(e->block % IX_GROUP_BLOCKS);
	n += ix_put_varint(out + n, prev ? e->v.seq - prev->v.seq : 0);
	n += ix_put_varint(out + n, e->v.seq - e->v.loc.segment);
	n += ix_put_varint(out + n, e->v.loc.offset);
	return n;
}

static void map_set(uint8_t *map, uint64_t block)
{
	unsigned i = (unsigned)(block % IX_GROUP_BLOCKS);

	map[i / 8] |= (uint8_t)(1u << (i % 8));
}

size_t ix_chunk_encode(uint8_t *out, const struct ix_ventry *e, size_t n)
{
	size_t len = ix_put_varint(out, e[n - 1].v.seq - e[0].v.seq);

	for (size_t i = 0; i < n; i++)
		len += enc_entry(out + len, &e[i], i ? &e[i - 1] : NULL);
	return len;
}

void ix_chunk_map(uint8_t map[IX_CMAP], const struct ix_ventry *e, size_t n)
{
	memset(map, 0, IX_CMAP);
	for (size_t i = 0; i < n; i++)
		map_set(map, e[i].block);
}

bool ix_chunk_has(const MDB_val *map, uint64_t block)
{
	unsigned i = (unsigned)(block % IX_GROUP_BLOCKS);

	return map->mv_size == IX_CMAP &&
	       (((const uint8_t *)map->mv_data)[i / 8] & (1u << (i % 8)));
}

int ix_chunk_put(MDB_txn *txn, MDB_dbi dv, MDB_dbi dm, const uint8_t *key,
		 const struct ix_ventry *e, size_t n, uint8_t *buf)
{
	uint8_t map[IX_CMAP];
	MDB_val k = { IX_VKEY, (void *)key }, v = { 0, buf }, m = { IX_CMAP, map };
	int rc;

	v.mv_size = ix_chunk_encode(buf, e, n);
	if (v.mv_size > IX_CHUNK_HARD)
		return -EOVERFLOW;
	ix_chunk_map(map, e, n);
	rc = mdb_put(txn, dv, &k, &v, 0);
	if (rc == 0)
		rc = mdb_put(txn, dm, &k, &m, 0);
	return rc;
}

int ix_chunk_del(MDB_txn *txn, MDB_dbi dv, MDB_dbi dm, const uint8_t *key)
{
	MDB_val k = { IX_VKEY, (void *)key };
	int rc = mdb_del(txn, dv, &k, NULL);

	if (rc == 0 || rc == MDB_NOTFOUND) {
		int r2 = mdb_del(txn, dm, &k, NULL);
		if (rc == 0 && r2 != MDB_NOTFOUND)
			rc = r2;
	}
	return rc;
}

/* ------------------------------------------------------ chunk builder */

/*
 * The chunk being extended: its key, its entries (body) and its last
 * entry.  The header (the span varint) is written by cb_put.  A chunk
 * opened from the table gives only its last seq (from the header, so the
 * entries are never decoded to append): new entries are always of newer
 * records (a record is indexed whole, in one batch), so the continuation
 * form never applies to that last entry.  Puts go through the caller's
 * cursors.
 */
struct cbuild {
	uint8_t key[IX_VKEY];
	uint8_t map[IX_CMAP];
	uint8_t buf[IX_CHUNK_BYTES + IX_CENT_MAX];
	uint8_t val[IX_CHDR_MAX + IX_CHUNK_BYTES + IX_CENT_MAX];
	size_t len;         /* body bytes in buf */
	uint64_t first;     /* seq of the first entry */
	bool have;          /* a chunk is open */
	bool at_cursor;     /* both cursors are on this chunk's key */
	struct ix_ventry last;
};

/* Header bytes of a chunk whose entries span first..last. */
static size_t hdr_len(uint64_t first, uint64_t last)
{
	uint8_t tmp[IX_CHDR_MAX];

	return ix_put_varint(tmp, last - first);
}

static int cb_put(struct ix_vcurs *c, struct cbuild *cb)
{
	MDB_val k = { IX_VKEY, cb->key }, v = { 0, cb->val };
	MDB_val m = { IX_CMAP, cb->map };
	unsigned flags;
	int rc;

	if (!cb->have || cb->len == 0)
		return 0;
	v.mv_size = ix_put_varint(cb->val, cb->last.v.seq - cb->first);
	memcpy(cb->val + v.mv_size, cb->buf, cb->len);
	v.mv_size += cb->len;
	/* Rewriting the chunk cb_open positioned both cursors on: in place,
	 * without a second descent (LMDB moves the node when it grew). */
	flags = cb->at_cursor ? MDB_CURRENT : 0;
	cb->at_cursor = false;
	rc = mdb_cursor_put(c->v, &k, &v, flags);
	if (rc == 0)
		rc = mdb_cursor_put(c->m, &k, &m, flags);
	if (rc == 0)
		ix_step("put");
	return rc;
}

static int cb_add(struct ix_vcurs *c, struct cbuild *cb, uint32_t disk,
		  const struct ix_ventry *e)
{
	uint8_t tmp[IX_CENT_MAX];
	size_t n;
	int rc;

	if (cb->have) {
		if (e->v.seq < cb->last.v.seq ||
		    (e->v.seq == cb->last.v.seq &&
		     e->block <= cb->last.block))
			return rw_err_set(RW_ECORRUPT, "disk id %u block %llu: version seq %llu is not newer than the indexed seq %llu",
					  disk, (unsigned long long)e->block,
					  (unsigned long long)e->v.seq,
					  (unsigned long long)cb->last.v.seq);
		n = enc_entry(tmp, e, &cb->last);
		if (hdr_len(cb->first, e->v.seq) + cb->len + n <= IX_CHUNK_BYTES) {
			memcpy(cb->buf + cb->len, tmp, n);
			cb->len += n;
			map_set(cb->map, e->block);
			cb->last = *e;
			return 0;
		}
		if ((rc = cb_put(c, cb)))
			return rc;
	}
	ix_vkey(cb->key, disk, e->block / IX_GROUP_BLOCKS, e->v.seq);
	cb->len = enc_entry(cb->buf, e, NULL);
	cb->first = e->v.seq;
	memset(cb->map, 0, IX_CMAP);
	map_set(cb->map, e->block);
	cb->last = *e;
	cb->have = true;
	cb->at_cursor = false;
	return 0;
}

/*
 * Opens the newest chunk of (disk, group) for appending.  0 (cb->have
 * tells whether one exists), or an LMDB/rewind code.
 */
static int cb_open(struct ix_vcurs *vc, struct cbuild *cb, uint32_t disk,
		   uint64_t group)
{
	uint8_t kb[IX_VKEY];
	MDB_val k = { IX_VKEY, kb }, v, m;
	MDB_cursor *c = vc->v;
	size_t pos = 0;
	uint64_t span;
	int rc;

	cb->have = false;
	cb->at_cursor = false;
	cb->len = 0;
	if (group == UINT64_MAX / IX_GROUP_BLOCKS) {
		rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	} else {
		ix_vkey(kb, disk, group + 1, 0);
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (rc == 0)
			rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
		else if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	}
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (k.mv_size != IX_VKEY || rw_get_be32(k.mv_data) != disk ||
	    rw_get_be64((uint8_t *)k.mv_data + 4) != group)
		return 0;
	cb->first = rw_get_be64((uint8_t *)k.mv_data + 12);
	if (v.mv_size > IX_CHUNK_HARD ||
	    ix_get_varint(v.mv_data, v.mv_size, &pos, &span) ||
	    pos == v.mv_size || span > UINT64_MAX - cb->first)
		goto corrupt;
	if (v.mv_size > IX_CHUNK_BYTES)
		return 0; /* over-full (merged by compaction): start a new one */
	m = k;
	if ((rc = mdb_cursor_get(vc->m, &m, &v, MDB_SET_KEY)) == MDB_NOTFOUND ||
	    (rc == 0 && v.mv_size != IX_CMAP))
		goto corrupt;
	if (rc)
		return rc;
	memcpy(cb->map, v.mv_data, IX_CMAP);
	rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
	if (rc)
		return rc;
	memcpy(cb->key, k.mv_data, IX_VKEY);
	cb->len = v.mv_size - pos;
	memcpy(cb->buf, (const uint8_t *)v.mv_data + pos, cb->len);
	/* Only its seq is known: a block above every block refuses an entry
	 * of the same seq (that record is indexed already). */
	memset(&cb->last, 0, sizeof(cb->last));
	cb->last.v.seq = cb->first + span;
	cb->last.block = UINT64_MAX;
	cb->have = true;
	cb->at_cursor = true;
	return 0;
corrupt:
	return rw_err_set(RW_ECORRUPT, "disk id %u: corrupt version chunk of blocks %llu.. (seq %llu)",
			  disk, (unsigned long long)(group * IX_GROUP_BLOCKS),
			  (unsigned long long)rw_get_be64((uint8_t *)k.mv_data + 12));
}

int ix_vers_append(struct ix_vcurs *c, uint32_t disk,
		   const struct ix_ventry *e, size_t n)
{
	struct cbuild *cb = malloc(sizeof(*cb));
	int rc = 0;

	if (!cb)
		return -ENOMEM;
	for (size_t i = 0; i < n && rc == 0;) {
		uint64_t g = e[i].block / IX_GROUP_BLOCKS;
		rc = cb_open(c, cb, disk, g);
		for (; rc == 0 && i < n && e[i].block / IX_GROUP_BLOCKS == g; i++)
			rc = cb_add(c, cb, disk, &e[i]);
		if (rc == 0)
			rc = cb_put(c, cb);
	}
	free(cb);
	return rc;
}

/* -------------------------------------------------------- lookups */

int ix_vers_seek_chunk(MDB_cursor *c, uint32_t disk, uint64_t group,
		       uint64_t seq, MDB_val *k, MDB_val *v)
{
	uint8_t kb[IX_VKEY];
	int rc;

	k->mv_size = IX_VKEY;
	k->mv_data = kb;
	if (seq == UINT64_MAX) {
		if (group == UINT64_MAX / IX_GROUP_BLOCKS)
			return mdb_cursor_get(c, k, v, MDB_LAST);
		ix_vkey(kb, disk, group + 1, 0);
	} else {
		ix_vkey(kb, disk, group, seq + 1);
	}
	rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
	if (rc == 0)
		return mdb_cursor_get(c, k, v, MDB_PREV);
	if (rc == MDB_NOTFOUND)
		return mdb_cursor_get(c, k, v, MDB_LAST);
	return rc;
}

bool ix_chunk_is(const MDB_val *k, uint32_t disk, uint64_t group)
{
	return k->mv_size == IX_VKEY && rw_get_be32(k->mv_data) == disk &&
	       rw_get_be64((const uint8_t *)k->mv_data + 4) == group;
}

int ix_vers_find(struct ix_vcurs *c, uint32_t disk, uint64_t block,
		 uint64_t seq, struct ix_version *out)
{
	uint64_t g = block / IX_GROUP_BLOCKS;
	MDB_val k, m, v;
	int rc = ix_vers_seek_chunk(c->m, disk, g, seq, &k, &m);

	/* A record's entries may straddle chunks that start at its seq. */
	while (rc == 0 && ix_chunk_is(&k, disk, g)) {
		uint64_t first = rw_get_be64((uint8_t *)k.mv_data + 12);
		if (m.mv_size != IX_CMAP)
			return RW_ECORRUPT;
		if (ix_chunk_has(&m, block)) {
			struct ix_cdec d;
			MDB_val vk = k;
			rc = mdb_cursor_get(c->v, &vk, &v, MDB_SET_KEY);
			if (rc == MDB_NOTFOUND)
				return RW_ECORRUPT; /* a map without its chunk */
			if (rc)
				return rc;
			if (ix_cdec_init(&d, &vk, &v))
				return RW_ECORRUPT;
			while ((rc = ix_cdec_next(&d)) > 0) {
				if (d.cur.seq > seq)
					break;
				if (d.cur.seq == seq && d.block == block) {
					*out = d.cur;
					return 0;
				}
			}
			if (rc < 0)
				return rc;
		}
		if (first < seq)
			return MDB_NOTFOUND;
		rc = mdb_cursor_get(c->m, &k, &m, MDB_PREV);
	}
	return rc == 0 ? MDB_NOTFOUND : rc;
}

/* --------------------------------------------------------- test hook */

static int ent_cmp(const void *a, const void *b)
{
	const struct ix_ventry *x = a, *y = b;

	if (x->v.seq != y->v.seq)
		return x->v.seq < y->v.seq ? -1 : 1;
	return x->block < y->block ? -1 : x->block > y->block;
}

int ix_vers_test_put(MDB_txn *txn, MDB_dbi dbi, MDB_dbi dmap, uint32_t disk,
		     uint64_t block, const struct ix_version *ver)
{
	uint64_t g = block / IX_GROUP_BLOCKS;
	struct ix_ventry *e = NULL;
	size_t n = 0, cap = 0;
	MDB_cursor *c = NULL;
	MDB_val k, v;
	uint8_t *buf = NULL;
	int rc = mdb_cursor_open(txn, dbi, &c);

	if (rc)
		return rc;
	/* Collect every entry of the group, drop the group's chunks. */
	rc = ix_vers_seek_chunk(c, disk, g, UINT64_MAX, &k, &v);
	while (rc == 0 && ix_chunk_is(&k, disk, g)) {
		struct ix_cdec d;
		if (ix_cdec_init(&d, &k, &v)) {
			rc = RW_ECORRUPT;
			break;
		}
		while ((rc = ix_cdec_next(&d)) > 0) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				struct ix_ventry *ne = realloc(e, cap * sizeof(*e));
				if (!ne) {
					rc = -ENOMEM;
					goto out;
				}
				e = ne;
			}
			e[n].block = d.block;
			e[n].v = d.cur;
			if (!(d.cur.seq == ver->seq && d.block == block))
				n++;
		}
		if (rc < 0)
			goto out;
		{
			uint8_t dk[IX_VKEY];
			memcpy(dk, k.mv_data, IX_VKEY);
			if ((rc = ix_chunk_del(txn, dbi, dmap, dk)))
				goto out;
		}
		rc = ix_vers_seek_chunk(c, disk, g, UINT64_MAX, &k, &v);
	}
	if (rc && rc != MDB_NOTFOUND)
		goto out;
	struct ix_ventry *ne = realloc(e, (n + 1) * sizeof(*e));
	if (!ne) {
		rc = -ENOMEM;
		goto out;
	}
	e = ne;
	e[n].block = block;
	e[n].v = *ver;
	n++;
	qsort(e, n, sizeof(*e), ent_cmp);
	/* One chunk, whatever its size: tests want exactly this content. */
	buf = malloc(n * IX_CENT_MAX);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	{
		uint8_t kb[IX_VKEY];
		ix_vkey(kb, disk, g, e[0].v.seq);
		rc = ix_chunk_put(txn, dbi, dmap, kb, e, n, buf);
	}
out:
	mdb_cursor_close(c);
	free(e);
	free(buf);
	return rc;
}
