/*
 * summary.c — a process's memory of which blocks have no version at all,
 * so an as-of lookup of such a block ends without touching LMDB.
 *
 * What: per disk, the union of the block maps (vmap) of every chunk of a
 * group — one bit per block, 32 bytes per group of 256 blocks — built
 * lazily, one group at a time, by the first lookup that lands in it, and
 * kept for the life of the ix handle.  A clear bit means "no version of
 * this block with seq <= valid_upto exists, nor ever will": valid_upto is
 * the disk's last_indexed_seq in the snapshot that created the summary,
 * every record indexed later has a larger seq (seqs only grow and the
 * index takes a disk's records in seq order), compaction and reindexing
 * only ever remove versions, and a group is built only from a snapshot
 * that has indexed at least up to valid_upto.  So the summary is a
 * superset for every lookup as-of seq <= valid_upto in any later
 * snapshot, and lookups past valid_upto simply take the exact path.  A
 * set bit proves nothing (the version may be newer than the seq asked,
 * or folded): the lookup goes on to the vmap and the chunk.
 *
 * Why: a random lookup was bound by cache misses in LMDB's binary
 * searches (half its time on loads of node and page headers); most blocks
 * of a disk have no version at a given moment, and answering those from
 * 32 bytes kept in memory costs one or two cache misses instead of a
 * root-to-leaf descent.  The writer does not maintain the summary —
 * keeping writer and readers in step would need the commit and the
 * bitmap updates ordered under one lock; a summary that is only valid up
 * to a fixed seq needs neither.
 *
 * Memory: groups are kept in slabs of IX_SUM_SLAB groups (32 KiB of maps
 * plus their built bits), allocated when a lookup first lands in them:
 * 32 bytes per MiB of disk that lookups touch.  Threads share a summary:
 * built bits are published with release stores after the map bytes, and
 * slabs are installed with a compare-and-swap.
 *
 * Rejected: a Bloom filter over (block) — it costs hashing and still
 * needs its size chosen per disk; the group maps are already the vmap's
 * own data, exact, and ordered like the disk.
 */
#include "index/ix_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IX_SUM_SLAB 1024u /* groups per slab (1 GiB of disk at 4 KiB) */

struct sum_slab {
	uint64_t map[IX_SUM_SLAB][IX_CMAP / 8]; /* bit per block, as vmap */
	uint64_t built[IX_SUM_SLAB / 64];       /* bit per group */
};

struct ix_sum {
	uint32_t disk;
	uint64_t valid_upto;
	uint64_t nslabs;
	struct sum_slab **slabs;   /* entries installed by CAS */
	struct ix_sum *next;
};

struct ix_sum *ix_sum_get(struct ix *ix, uint32_t disk, uint64_t size_blocks,
			  uint64_t last_indexed)
{
	struct ix_sum *s;
	uint64_t groups = size_blocks / IX_GROUP_BLOCKS + 1;

	pthread_mutex_lock(&ix->sum_lock);
	for (s = ix->sums; s; s = s->next)
		if (s->disk == disk)
			break;
	if (!s && (s = calloc(1, sizeof(*s)))) {
		s->disk = disk;
		s->valid_upto = last_indexed;
		s->nslabs = groups / IX_SUM_SLAB + 1;
		s->slabs = calloc(s->nslabs, sizeof(*s->slabs));
		if (!s->slabs) {
			free(s);
			s = NULL;
		} else {
			s->next = ix->sums;
			ix->sums = s;
		}
	}
	pthread_mutex_unlock(&ix->sum_lock);
	return s;
}

void ix_sum_free_all(struct ix *ix)
{
	struct ix_sum *s = ix->sums, *n;

	for (; s; s = n) {
		n = s->next;
		for (uint64_t i = 0; i < s->nslabs; i++)
			free(s->slabs[i]);
		free(s->slabs);
		free(s);
	}
	ix->sums = NULL;
}

static struct sum_slab *slab_of(struct ix_sum *s, uint64_t group)
{
	uint64_t i = group / IX_SUM_SLAB;
	struct sum_slab *sl, *none = NULL;

	if (i >= s->nslabs)
		return NULL;
	sl = __atomic_load_n(&s->slabs[i], __ATOMIC_ACQUIRE);
	if (sl)
		return sl;
	sl = calloc(1, sizeof(*sl));
	if (!sl)
		return NULL;
	if (!__atomic_compare_exchange_n(&s->slabs[i], &none, sl, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		free(sl);
		return none; /* another thread installed one */
	}
	return sl;
}

/* Builds the group's map from the snapshot's vmap.  0 or a code. */
static int build(struct sum_slab *sl, MDB_cursor *cm, uint32_t disk,
		 uint64_t group)
{
	uint64_t acc[IX_CMAP / 8] = { 0 };
	unsigned j = (unsigned)(group % IX_SUM_SLAB);
	MDB_val k, m;
	int rc = ix_vers_seek_chunk(cm, disk, group, UINT64_MAX, &k, &m);

	while (rc == 0 && ix_chunk_is(&k, disk, group)) {
		if (m.mv_size != IX_CMAP)
			return RW_ECORRUPT;
		/* vmap: bit i % 8 of byte i / 8 — bit i % 64 of LE word i / 64 */
		for (unsigned i = 0; i < IX_CMAP / 8; i++)
			acc[i] |= rw_get_le64((const uint8_t *)m.mv_data + 8 * i);
		rc = mdb_cursor_get(cm, &k, &m, MDB_PREV);
	}
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	for (unsigned i = 0; i < IX_CMAP / 8; i++)
		__atomic_fetch_or(&sl->map[j][i], acc[i], __ATOMIC_RELAXED);
	__atomic_fetch_or(&sl->built[j / 64], 1ull << (j % 64),
			  __ATOMIC_RELEASE);
	return 0;
}

int ix_sum_test(struct ix_sum *s, MDB_cursor *cm, uint64_t snap_last,
		uint64_t block, uint64_t seq)
{
	uint64_t group = block / IX_GROUP_BLOCKS;
	unsigned j = (unsigned)(group % IX_SUM_SLAB);
	unsigned b = (unsigned)(block % IX_GROUP_BLOCKS);
	struct sum_slab *sl;
	int rc;

	if (seq > s->valid_upto || !(sl = slab_of(s, group)))
		return 1;
	if (!(__atomic_load_n(&sl->built[j / 64], __ATOMIC_ACQUIRE) &
	      (1ull << (j % 64)))) {
		/* An older snapshot than the summary's may lack versions. */
		if (snap_last < s->valid_upto)
			return 1;
		if ((rc = build(sl, cm, s->disk, group)))
			return rc;
	}
	return (__atomic_load_n(&sl->map[j][b / 64], __ATOMIC_RELAXED) >>
		(b % 64)) & 1;
}
