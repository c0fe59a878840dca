/*
 * map.c — block maps: where each block's bytes as-of a seq come from.
 *
 * One ordered scan of the disk's block versions (ix_versions_range walks
 * keys (block, seq) in order) gives, per block, the newest version <= S
 * and whether a newer one exists.  A full newest version means one record
 * holds the whole block; a partial one means the block is a mix that only
 * a view (view.c) assembles.  Consumers then read each needed record once,
 * in journal order (apply.c, rollback.c) or through a cache (asof.c),
 * instead of doing one index lookup and one record read per block.
 *
 * Maps are windowed: a window holds at most `max` entries (RS_MAP_WINDOW,
 * 160 MiB), and the next window re-scans from the start because the index
 * API has no seek.  A disk with fewer changed blocks than that (every disk
 * up to 16 GiB of 4 KiB blocks) is one window and one scan.
 *
 * Rejected: one ix_block_asof() per block (the old path) — it costs one
 * B-tree descent per block and leads to reading a large record again for
 * every block when blocks of different records interleave on disk.
 */
#include "restore/rs_int.h"

#include "common/rw.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

size_t rs_map_window = RS_MAP_WINDOW;

struct fill {
	struct rs_map *m;
	const struct ix_disk *d;
	uint64_t nblocks, from, seq;
	size_t max;
	const atomic_bool *stop;
	unsigned polls;
	bool full;              /* the window is full: only count */
	uint64_t cur;           /* block being counted (UINT64_MAX: none) */
	bool cur_asof, cur_after;
};

static void count_block(struct fill *f)
{
	if (f->cur == UINT64_MAX)
		return;
	f->m->asof_blocks += f->cur_asof;
	f->m->after_blocks += f->cur_after;
}

static int map_add(void *arg, uint64_t block, const struct ix_version *v)
{
	struct fill *f = arg;
	struct rs_map *m = f->m;
	struct rs_ent *e;

	if (f->stop && !(++f->polls & 4095) &&
	    atomic_load_explicit(f->stop, memory_order_relaxed))
		return -ECANCELED;
	if (block < f->from)
		return 0;
	if (block >= f->nblocks)
		return rw_err_set(RW_ECORRUPT, "index holds block %" PRIu64
				  " of disk '%s', beyond its %" PRIu64 " blocks",
				  block, f->d->name, f->nblocks);
	if (block != f->cur) {
		if (f->cur != UINT64_MAX && block < f->cur)
			return rw_err_set(RW_ECORRUPT, "index returned block %"
					  PRIu64 " of disk '%s' out of order",
					  block, f->d->name);
		count_block(f);
		f->cur = block;
		f->cur_asof = f->cur_after = false;
		if (!f->full && m->n == f->max) {
			f->full = true;
			m->next = block;
		}
		if (!f->full) {
			if (m->n == m->cap) {
				size_t nc = m->cap ? 2 * m->cap : 4096;
				if (nc > f->max)
					nc = f->max;
				struct rs_ent *ne = realloc(m->e, nc * sizeof(*ne));
				if (!ne)
					return -ENOMEM;
				m->e = ne;
				m->cap = nc;
			}
			e = &m->e[m->n++];
			memset(e, 0, sizeof(*e));
			e->block = block;
			e->src = RS_SRC_BASE;
		}
	}
	if (v->seq <= f->seq)
		f->cur_asof = true;
	else
		f->cur_after = true;
	if (f->full)
		return 0;
	e = &m->e[m->n - 1];
	m->versions++;
	if (v->seq <= f->seq) {
		/* Versions of a block come oldest first: the last wins. */
		e->seq = v->seq;
		e->loc = v->loc;
		e->src = v->partial ? RS_SRC_MIXED
			: v->type == JR_WRITE ? RS_SRC_REC : RS_SRC_ZERO;
	} else {
		e->after = true;
	}
	return 0;
}

int rs_map_fill(struct rs_map *m, struct ix *ix, const struct ix_disk *d,
		uint64_t from, uint64_t after, uint64_t seq, uint64_t upto,
		size_t max, const atomic_bool *stop)
{
	struct ix_read *rd = NULL;
	struct fill f = {
		.m = m, .d = d, .from = from, .seq = seq,
		.nblocks = (d->size + d->block_size - 1) / d->block_size,
		.max = max ? max : 1, .stop = stop, .cur = UINT64_MAX,
	};
	int err;

	m->n = 0;
	m->versions = 0;
	m->asof_blocks = m->after_blocks = 0;
	m->next = f.nblocks;
	if ((err = ix_read_begin(ix, &rd)))
		return err;
	err = ix_versions_range(rd, d->id, after, upto, map_add, &f);
	ix_read_end(rd);
	count_block(&f);
	return err;
}

void rs_map_free(struct rs_map *m)
{
	free(m->e);
	memset(m, 0, sizeof(*m));
}

size_t rs_map_lower(const struct rs_map *m, uint64_t b)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->e[mid].block < b)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int rs_rec_check(const struct ix_disk *d, const struct rs_ent *e,
		 const struct jr_rec *rec, uint64_t part)
{
	uint64_t boff = e->block * d->block_size;

	if (rec->seq == e->seq && rec->disk_id == d->id &&
	    rec->type == JR_WRITE && rec->offset <= boff &&
	    rec->offset + rec->length >= boff + part)
		return 0;
	return rw_err_set(RW_ECORRUPT, "index entry of disk '%s' block %" PRIu64
			  " seq %" PRIu64 " points at segment %020" PRIu64
			  " offset %" PRIu64 ", which holds seq %" PRIu64
			  " of disk %u (%s of [%" PRIu64 ", +%u)); run "
			  "'rewind reindex'", d->name, e->block, e->seq,
			  e->loc.segment, e->loc.offset, rec->seq, rec->disk_id,
			  jr_type_name(rec->type), rec->offset, rec->length);
}
