/*
 * ix_int.h — private to index/ (and to tests/test_index.c, which pokes at
 * the LMDB environment directly to corrupt it on purpose).
 *
 * Key and value layouts are documented byte by byte in FORMAT.md;
 * the encoders below are the only code that builds them.
 */
#ifndef RW_INDEX_INT_H
#define RW_INDEX_INT_H

#include "common/rw.h"
#include "index/ix.h"

#include <lmdb.h>
#include <pthread.h>

#define IX_FORMAT_VERSION 1u   /* rewind.store and disk.meta files */
#define IX_INDEX_FORMAT 3u     /* the LMDB index (2: chunked versions;
                                * 3: chunk span header, packed time map) */
#define IX_INDEX_FORMAT_MIN 2u /* older formats are rebuilt at open */
#define IX_STORE_MAGIC "RWSTORE1"  /* 8 bytes, no NUL */
#define IX_DISK_MAGIC "RWDISK01"   /* 8 bytes, no NUL */
#define IX_STORE_FILE_SIZE 44u
#define IX_DISK_META_SIZE 108u
/* Address space only (no MDB_WRITEMAP: the file grows as pages are used);
 * large so that growth — which must wait for every read transaction of
 * the process — is rare. */
#define IX_MAPSIZE_DEFAULT (64ull << 30)
/* How long a growth waits for read transactions before giving up (10 s;
 * tests shorten it). */
extern uint64_t ix_grow_wait_ns;

/* Key sizes. */
#define IX_VKEY 20u   /* disk u32 | group u64 | first seq u64 (a chunk) */
#define IX_SKEY 12u   /* disk u32 | first_seq u64 */
/* Versions chunks (chunk.c, FORMAT.md "versions"). */
#define IX_GROUP_BLOCKS 256u    /* blocks per group (a byte in an entry) */
#define IX_CHUNK_BYTES 512u     /* appends start a new chunk past this */
#define IX_CHUNK_HARD 65536u    /* a longer value is corrupt */
#define IX_CENT_MAX 32u         /* longest entry: 2 bytes + 3 varints */
#define IX_CHDR_MAX 10u         /* a chunk's header: one varint (its span) */
#define IX_CMAP (IX_GROUP_BLOCKS / 8u) /* a chunk's map of its blocks (vmap) */
#define IX_SEGVAL 49u
#define IX_DISKVAL_MIN 53u
#define IX_MARKVAL 24u

struct ix {
	char *dir;
	unsigned flags;
	int lock_fd;
	MDB_env *env;
	MDB_dbi db_state, db_disks, db_names, db_versions, db_vmap, db_time,
		db_segments, db_marks;
	uint8_t store_id[16];
	/*
	 * Held shared by every transaction of this process (for an ix_read,
	 * from begin to end), exclusively while the map is resized
	 * (mdb_env_set_mapsize requires no live txn in the process).  glibc
	 * rwlocks prefer readers, so shared re-entry never deadlocks; but a
	 * write that must grow the map waits for every ix_read of the process
	 * to end — a thread must not write while it holds an ix_read, or a
	 * map growth would wait for itself.
	 */
	pthread_rwlock_t txlock;
	pthread_mutex_t sum_lock;  /* guards the list of summaries */
	struct ix_sum *sums;       /* summary.c, one per disk looked up */
};

struct ix_read {
	struct ix *ix;
	MDB_txn *txn;
	MDB_cursor *cv;          /* versions cursor, opened lazily */
	MDB_cursor *cm;          /* vmap cursor, same */
	MDB_cursor *ct;          /* time map cursor, opened lazily */
	uint32_t hz_disk;        /* cached state of the last disk asked: */
	uint64_t hz_seq;         /* base_seq */
	uint64_t hz_last;        /* last_indexed_seq */
	uint64_t hz_blocks;      /* size in blocks */
	struct ix_sum *sum;      /* summary of disk sum_disk (NULL: none) */
	uint32_t sum_disk;
	bool hz_valid;
	bool locked;
};

/* ------------------------------------------------------- summary.c */

/*
 * The process's summary of disk (created on first use with valid_upto =
 * last_indexed, the caller's snapshot's last_indexed_seq of the disk).
 * Returns it (owned by ix, freed by ix_close) or NULL when out of memory
 * (lookups then take the exact path).
 */
struct ix_sum *ix_sum_get(struct ix *ix, uint32_t disk, uint64_t size_blocks,
			  uint64_t last_indexed);
/*
 * Whether block may have a version with seq <= seq: 0 = certainly none,
 * 1 = maybe (look it up), or an LMDB/rewind code from building the
 * block's group with cursor cm (vmap) of a snapshot whose disk
 * last_indexed_seq is snap_last.
 */
int ix_sum_test(struct ix_sum *s, MDB_cursor *cm, uint64_t snap_last,
		uint64_t block, uint64_t seq);
/* Frees every summary of ix (ix_close). */
void ix_sum_free_all(struct ix *ix);

/* ------------------------------------------------------- LMDB plumbing */

/* Maps an LMDB return code to a rewind code (0, -errno, RW_E*). */
int ix_mdb_err(int rc);
/* rw_err_set with the store named, for an LMDB failure. */
int ix_fail(struct ix *ix, int rc, const char *what);

/* ix_reads this thread holds (growing the map waits for none to be left). */
extern _Thread_local int ix_tl_reads;

/* Begins a txn holding the rwlock shared; handles MDB_MAP_RESIZED. */
int ix_txn_begin(struct ix *ix, unsigned flags, MDB_txn **out);
void ix_txn_abort(struct ix *ix, MDB_txn *txn);
/* Commits (or aborts on error) and drops the rwlock.  Returns mdb rc. */
int ix_txn_commit(struct ix *ix, MDB_txn *txn);

/*
 * Runs fn in a write transaction and commits it.  fn returns an LMDB code
 * (0, MDB_*, errno > 0) or a rewind code (< 0 but not an MDB code).  On
 * MDB_MAP_FULL (from fn or the commit) the txn is aborted, the map doubled
 * and fn run again.  Returns 0 or a rewind code.
 */
int ix_write(struct ix *ix, int (*fn)(struct ix *ix, MDB_txn *txn, void *arg),
	     void *arg, const char *what);

/* Key builders. */
static inline void ix_vkey(uint8_t k[IX_VKEY], uint32_t disk, uint64_t block,
			   uint64_t seq)
{
	rw_put_be32(k, disk);
	rw_put_be64(k + 4, block);
	rw_put_be64(k + 12, seq);
}

static inline void ix_skey(uint8_t k[IX_SKEY], uint32_t disk, uint64_t seq)
{
	rw_put_be32(k, disk);
	rw_put_be64(k + 4, seq);
}

/* Unsigned LEB128.  put returns bytes written (<= 10); get returns 0 or
 * RW_ECORRUPT and advances *pos. */
static inline size_t ix_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static inline int ix_get_varint(const uint8_t *p, size_t len, size_t *pos,
				uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*pos >= len)
			return RW_ECORRUPT;
		uint8_t b = p[(*pos)++];
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return RW_ECORRUPT;
}

/* One block version as chunks hold it. */
struct ix_ventry {
	uint64_t block;
	struct ix_version v;
};

/*
 * Chunk decoder: ix_cdec_init on a versions key/value (0 or RW_ECORRUPT),
 * then ix_cdec_next until it returns 0 (end) or RW_ECORRUPT; after a 1,
 * block and cur hold the entry.  Points into the value: valid only while
 * the transaction is.
 */
struct ix_cdec {
	const uint8_t *p, *end;
	uint32_t disk;
	uint64_t group, first_seq;
	uint64_t last_seq;       /* from the header: the last entry's seq */
	size_t n;                /* entries decoded so far */
	uint64_t block;
	struct ix_version cur;
};
int ix_cdec_init(struct ix_cdec *d, const MDB_val *k, const MDB_val *v);
int ix_cdec_next(struct ix_cdec *d);

/*
 * The versions of block in the chunk (k, v) with seq <= seq and seq >
 * above, oldest first, into ring (entry i at ring[i % ring_cap]; only the
 * newest ring_cap survive), *found = how many.  A lookup's scan: the
 * location varints are decoded only for the block's entries.  0 or
 * RW_ECORRUPT (bounds, reserved bits, seq order, the span).
 */
int ix_chunk_block(const MDB_val *k, const MDB_val *v, uint64_t block,
		   uint64_t seq, uint64_t above, struct ix_version *ring,
		   size_t ring_cap, size_t *found);
/* Encodes n >= 1 entries (one group, sorted by (seq, block)) as one chunk
 * value, header included, into out (room for IX_CHDR_MAX + n *
 * IX_CENT_MAX).  Returns its length. */
size_t ix_chunk_encode(uint8_t *out, const struct ix_ventry *e, size_t n);
/* The vmap value of those entries: a bit per block of the group. */
void ix_chunk_map(uint8_t map[IX_CMAP], const struct ix_ventry *e, size_t n);
/* Whether a vmap value names block. */
bool ix_chunk_has(const MDB_val *map, uint64_t block);
/* Puts a chunk of e[0..n) under key in versions (dv) and its map in vmap
 * (dm), buf being room for IX_CHDR_MAX + n * IX_CENT_MAX.  0, an LMDB code, or
 * -EOVERFLOW when the value would pass IX_CHUNK_HARD. */
int ix_chunk_put(MDB_txn *txn, MDB_dbi dv, MDB_dbi dm, const uint8_t *key,
		 const struct ix_ventry *e, size_t n, uint8_t *buf);
/* Deletes the chunk under key from both.  0 or an LMDB code. */
int ix_chunk_del(MDB_txn *txn, MDB_dbi dv, MDB_dbi dm, const uint8_t *key);

/* Cursors on versions (v) and vmap (m) of one transaction. */
struct ix_vcurs {
	MDB_cursor *v, *m;
};
/*
 * Appends versions of one disk, sorted by (group, seq, block), each newer
 * than everything its group holds, through cursor c on the versions
 * table.  0, an LMDB code, or a rewind code (RW_ECORRUPT when a version is
 * not newer, -ENOMEM).
 */
int ix_vers_append(struct ix_vcurs *c, uint32_t disk,
		   const struct ix_ventry *e, size_t n);
/*
 * Positions c on the newest chunk of (disk, group) whose first seq is
 * <= seq (UINT64_MAX: the newest chunk).  Returns an mdb_cursor_get code;
 * on 0 the caller must still check ix_chunk_is(k, disk, group).
 */
int ix_vers_seek_chunk(MDB_cursor *c, uint32_t disk, uint64_t group,
		       uint64_t seq, MDB_val *k, MDB_val *v);
bool ix_chunk_is(const MDB_val *k, uint32_t disk, uint64_t group);
/* The version (block, seq) exactly: 0 and *out, MDB_NOTFOUND, RW_ECORRUPT
 * or an LMDB code. */
int ix_vers_find(struct ix_vcurs *c, uint32_t disk, uint64_t block,
		 uint64_t seq, struct ix_version *out);
/* ------------------------------------------------ time map (timemap.c) */

#define IX_TBUCKET 64u   /* seqs per time map bucket (one LMDB key) */

struct ix_tent {
	uint64_t seq, ts;
};

/* Decodes a time map key/value into out[IX_TBUCKET], *n entries
 * ascending.  0 or RW_ECORRUPT. */
int ix_tm_decode(const MDB_val *k, const MDB_val *v, struct ix_tent *out,
		 size_t *n);
/* Adds entries (ascending by seq, hence by ts); entries already there
 * are skipped when identical.  0, an LMDB code or RW_ECORRUPT. */
int ix_tm_add(MDB_txn *txn, MDB_dbi dbi, const struct ix_tent *e, size_t n);
/* Removes the listed entries (ascending) that are there; *deleted counts
 * them.  0 or an error. */
int ix_tm_del(MDB_txn *txn, MDB_dbi dbi, const struct ix_tent *e, size_t n,
	      uint64_t *deleted);
/* Newest entry with ts' <= ts / oldest with ts' >= ts / the newest of
 * all, through cursor c.  0 and *out, MDB_NOTFOUND, RW_ECORRUPT or an
 * LMDB code.  ix_tm_floor leaves c on the entry's chunk. */
int ix_tm_floor(MDB_cursor *c, uint64_t ts, struct ix_tent *out);
int ix_tm_ceil(MDB_cursor *c, uint64_t ts, struct ix_tent *out);
int ix_tm_last(MDB_cursor *c, struct ix_tent *out);

/*
 * Tests only: puts version ver of block into the group's chunks, replacing
 * an entry with the same (block, seq), rewriting the group as one chunk.
 * 0 or an LMDB/rewind code.
 */
int ix_vers_test_put(MDB_txn *txn, MDB_dbi dbi, MDB_dbi dmap, uint32_t disk,
		     uint64_t block, const struct ix_version *ver);

/* Per-disk state value. */
size_t ix_diskval_encode(uint8_t *v, size_t cap, const struct ix_disk *d);
int ix_diskval_decode(const uint8_t *v, size_t n, uint32_t id,
		      struct ix_disk *d);

void ix_segval_encode(uint8_t v[IX_SEGVAL], const struct ix_segment *s);
int ix_segval_decode(const uint8_t *v, size_t n, struct ix_segment *s);

/* Disk state inside a txn.  0, MDB_NOTFOUND, or mdb/rewind error. */
int ix_disk_load(struct ix *ix, MDB_txn *txn, uint32_t id, struct ix_disk *d);
int ix_disk_store(struct ix *ix, MDB_txn *txn, const struct ix_disk *d);

/* disk.meta files. */
int ix_meta_read(const char *path, struct ix_disk *d);
int ix_meta_write(const char *dir, const struct ix_disk *d);

/* Registers every disks/NAME/disk.meta unknown to the index (write txn). */
int ix_register_meta(struct ix *ix);

/* Clears the derived DBs (versions, time, segments, names, disks) keeping
 * marks, state and each disk's horizon/head_synced; then re-registers. */
int ix_clear_derived(struct ix *ix);

/*
 * Test hook: when set, called at each step of indexing (step names:
 * "add" after each ix_batch_add, "put" after each LMDB put inside a
 * commit, "commit" after each successful commit).  Crash tests _exit()
 * from it.  NULL in production.
 */
extern void (*ix_test_step_hook)(const char *step);
/* Records per catch-up batch (4096; tests lower it to get many batches). */
extern size_t ix_catchup_batch_records;

static inline void ix_step(const char *step)
{
	if (ix_test_step_hook)
		ix_test_step_hook(step);
}

#endif
