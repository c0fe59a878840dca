/*
 * ix.h — the store and its index: LMDB maps every block version and every
 * moment to the journal record that holds it.
 *
 * A store is one directory (DESIGN.md §3):
 *     STORE/rewind.store          store identity (magic, version, store id)
 *     STORE/lock                  flock()ed by the one process that writes
 *     STORE/index/                LMDB environment (derived, rebuildable)
 *     STORE/disks/NAME/disk.meta  disk identity (id, size, block size, ctime)
 *     STORE/disks/NAME/head.img   current contents, sparse
 *     STORE/disks/NAME/base.img   contents at the horizon, sparse
 *     STORE/disks/NAME/journal/   segments (journal/jr.h)
 * FORMAT.md documents every byte of rewind.store, disk.meta and every LMDB
 * key and value.
 *
 * Invariants
 * - The journal is the source of truth; everything in LMDB can be rebuilt
 *   from rewind.store, the disk.meta files and the journals
 *   (ix_rebuild).  last_indexed_seq of a disk moves in the same write
 *   transaction as that disk's entries, so after a crash at any point the
 *   index is a prefix and ix_catch_up() completes it to what a rebuild
 *   gives.
 * - Block versions live in chunks keyed (disk id, group of 256 blocks,
 *   first seq) big-endian, with a block map per chunk in a small side
 *   table, so "newest version of block B with seq <= S" is one seek in the
 *   maps plus a scan of at most a few chunks of B's group.  The chunks
 *   depend only on the versions, never on how they were batched.
 * - The time map holds one (timestamp -> seq) entry per record, packed in
 *   buckets of 64 seqs; timestamps are strictly increasing in seq (jr.h),
 *   so resolving T is one seek and a scan of one bucket.
 * - MDB_WRITEMAP is never used; mdb_reader_check runs at open; MDB_MAP_FULL
 *   grows the map and replays the batch, losing nothing.
 *
 * Thread model: one struct ix per process, shared by its threads.  Write
 * batches are serialised by LMDB (one writer at a time, across processes
 * too).  A struct ix_read is a read transaction owned by one thread; keep
 * it short (long scans re-open in slices).
 *
 * Error model: 0 / counts, or -errno / RW_E* with rw_err_msg() naming the
 * store, disk, block or seq.  A full filesystem is -ENOSPC naming the store.
 *
 * Ownership: _open/_close, _new/_free, _begin/_commit|_abort pairs; every
 * release function accepts NULL.
 */
#ifndef RW_INDEX_H
#define RW_INDEX_H

#include "journal/jr.h"

#include <stdbool.h>
#include <stdint.h>

#define IX_NAME_MAX 64          /* disk names: [A-Za-z0-9._-], 1..64 chars,
				 * not starting with '.' */
#define IX_LABEL_MAX 128        /* mark labels: printable, no '/' */
#define IX_BLOCK_SIZE_DEFAULT 4096u

/* ---------------------------------------------------------------- store */

/*
 * Creates a new store in dir (created if missing; must be empty otherwise).
 * Returns 0, RW_EEXIST when dir already holds a store, or -errno.
 */
int ix_store_init(const char *dir);

/* Returns true when name is a valid disk name (see IX_NAME_MAX). */
bool ix_name_valid(const char *name);

enum {
	IX_RDONLY = 0x01,  /* read-only: no lock, no catch-up, no writes */
	IX_LOCK = 0x02,    /* take STORE/lock exclusively (RW_EBUSY if held) */
};

struct ix;

/*
 * Opens the store at dir: checks rewind.store, opens (creating if needed)
 * the LMDB environment, runs mdb_reader_check, registers every
 * disks/NAME/disk.meta that the index does not know yet.  Does not replay
 * journals: call ix_catch_up() (writers do; readers need not) — except
 * that an index of the previous format (FORMAT.md, state.format) is
 * rebuilt from the journals here, keeping marks, when IX_LOCK is given.
 * Returns 0 and *out, RW_ENOTFOUND when dir is not a store, RW_EVERSION
 * (an unknown format, or the previous one without IX_LOCK), RW_EBUSY
 * (IX_LOCK and another process holds the lock), -errno.
 */
int ix_open(struct ix **out, const char *dir, unsigned flags);
void ix_close(struct ix *ix);

/* The store directory this handle was opened on (owned by ix). */
const char *ix_store_dir(const struct ix *ix);

/* ---------------------------------------------------------------- disks */

struct ix_disk {
	uint32_t id;                 /* >= 1, never reused in a store */
	char name[IX_NAME_MAX + 1];
	uint64_t size;               /* bytes */
	uint32_t block_size;         /* power of two, 512 .. 1 MiB */
	uint64_t ctime_ns;
	uint64_t horizon_seq;        /* oldest restorable seq (0 = creation) */
	uint64_t horizon_ts;
	uint64_t last_indexed_seq;   /* newest seq of this disk in the index */
	uint64_t head_synced_seq;    /* head.img holds every record <= this */
	uint64_t base_seq;           /* base.img holds every record <= this
				      * (folded by compaction; 0 = none) */
};

/*
 * Creates disk name of size bytes: writes disks/NAME/disk.meta, an empty
 * sparse head.img and base.img of that size, the journal directory, and
 * registers it.  base_src (may be NULL) is a raw image copied into base
 * and head, holes kept (import).  Returns 0 and *out (may be NULL),
 * RW_EEXIST, -EINVAL (bad name, size or block size, message says which),
 * -errno naming the file.
 */
int ix_disk_create(struct ix *ix, const char *name, uint64_t size,
		   uint32_t block_size, const char *base_src,
		   struct ix_disk *out);

/* Looks a disk up by name or id.  0, or RW_ENOTFOUND naming it. */
int ix_disk_get(struct ix *ix, const char *name, struct ix_disk *out);
int ix_disk_get_id(struct ix *ix, uint32_t id, struct ix_disk *out);

/* Lists disks sorted by name; *out malloc'ed (caller frees).  Count or error. */
int ix_disk_list(struct ix *ix, struct ix_disk **out);

/* Path helpers: write "STORE/disks/NAME/<what>" into buf. 0 or -ENAMETOOLONG. */
int ix_disk_path(const struct ix *ix, const char *name, const char *what,
		 char *buf, size_t bufsz);

/* Updates the mutable per-disk fields (horizon, head_synced_seq). */
int ix_disk_set_horizon(struct ix *ix, uint32_t id, uint64_t seq, uint64_t ts);
int ix_disk_set_head_synced(struct ix *ix, uint32_t id, uint64_t seq);

/* ------------------------------------------------------------- indexing */

struct ix_batch;

/*
 * Starts a batch of records to index.  Records are buffered in memory;
 * nothing touches LMDB before ix_batch_commit.  Returns 0 or -ENOMEM.
 */
int ix_batch_new(struct ix *ix, struct ix_batch **out);

/*
 * Adds a journal record (as read from the journal or returned by an
 * append).  Records of one disk must come in increasing seq; records of
 * several disks may mix.  SEAL records are ignored.  0 or -ENOMEM/-EINVAL.
 */
int ix_batch_add(struct ix_batch *b, const struct jr_rec *rec,
		 const struct jr_loc *loc);

/*
 * Writes the batch in one LMDB write transaction: block versions, time
 * map, segment summaries and each disk's last_indexed_seq.  Records with
 * seq <= a disk's last_indexed_seq are skipped (idempotent replay).
 * Grows the map on MDB_MAP_FULL and retries.  The batch is emptied and
 * may be reused.  Returns 0 or error (nothing of the batch is visible then).
 */
int ix_batch_commit(struct ix_batch *b);

/*
 * ix_batch_commit() (without its page-recycling transaction) and
 * ix_disk_set_head_synced(b's store, id, seq) in one transaction: for a
 * writer whose last records reach head and the index together, one
 * commit (two syncs) instead of two.  The batch is emptied either way.
 * Returns 0 or error (nothing of either is visible then); RW_ENOTFOUND
 * for an unknown id.
 */
int ix_batch_commit_head_synced(struct ix_batch *b, uint32_t id, uint64_t seq);
void ix_batch_free(struct ix_batch *b);

/*
 * Called for every record catch-up replays, so the caller can also apply
 * it to head.img.  Return 0 to continue, negative to stop with that error.
 */
typedef int (*ix_replay_fn)(void *arg, const struct ix_disk *d,
			    const struct jr_rec *rec, const void *payload);

/*
 * Replays every journal record of every disk after its last_indexed_seq
 * into the index (batched), calling fn (may be NULL) for each record with
 * seq > head_synced_seq (payload decoded for WRITEs).  Returns the number
 * of records replayed or an error (RW_ECORRUPT naming segment and seq).
 */
int ix_catch_up(struct ix *ix, ix_replay_fn fn, void *arg);

/* Drops the LMDB environment's contents and re-indexes every journal. */
int ix_rebuild(struct ix *ix);

/*
 * (Added.)  Re-indexes one disk: drops its block versions and segment
 * entries and resets its last_indexed_seq to 0 in one transaction, then
 * ix_catch_up() (without replay).  The time map is left in place (its
 * entries are re-put with the same values); marks, horizon and
 * head_synced_seq are kept.  0 or error; RW_ENOTFOUND for an unknown id.
 */
int ix_disk_reindex(struct ix *ix, uint32_t id);

/*
 * For a disk whose journal lost its tail (a power loss took records the
 * index had already taken in): in one transaction, removes the time map
 * entries with seq in (after, upto] except the seqs in keep[0..nkeep)
 * (ascending: other disks' records that survived), drops the disk's block
 * versions and segment entries, sets its last_indexed_seq to 0 and its
 * head_synced_seq to at most after; then ix_catch_up() (without replay)
 * re-indexes it from what the journal holds.  *deleted (may be NULL)
 * receives the number of time map entries removed.  Idempotent: a crash
 * in between leaves a state that running it again finishes.  0 or error;
 * RW_ENOTFOUND for an unknown id.  keep is borrowed.
 */
int ix_disk_drop_lost(struct ix *ix, uint32_t id, uint64_t after,
		      uint64_t upto, const uint64_t *keep, size_t nkeep,
		      uint64_t *deleted);

/* -------------------------------------------------------------- lookups */

/* One version of one block. */
struct ix_version {
	uint64_t seq;
	struct jr_loc loc;
	uint8_t type;     /* JR_WRITE, JR_ZERO, JR_TRIM */
	bool partial;     /* the record covers only part of the block */
};

struct ix_read;

/* Opens a read transaction.  0 and *out, or error. */
int ix_read_begin(struct ix *ix, struct ix_read **out);
/* Ends it (NULL ok). */
void ix_read_end(struct ix_read *rd);
/* Re-opens the snapshot (mdb_txn_reset + renew) so LMDB can reuse pages. */
int ix_read_renew(struct ix_read *rd);

/*
 * Fills out[] (capacity cap) with the versions of block of disk that a
 * reader as-of seq needs, newest first: the newest version with
 * seq' <= seq, then older ones while the newer are partial, stopping at
 * the first full one (or when history ends: then base underlies them).
 * Versions with seq <= the disk's base_seq (folded into base.img by
 * compaction) are never returned; the horizon does not filter (a view
 * as-of a point >= the horizon stays exact while compaction folds).
 * Returns the count (0 = block comes from base), -ENOBUFS when more than
 * cap are needed, or error.
 */
int ix_block_asof(struct ix_read *rd, uint32_t disk, uint64_t block,
		  uint64_t seq, struct ix_version *out, int cap);

/*
 * Calls fn for every version of every block of disk with seq in
 * (after, upto], in key order (block, then seq).  fn returns 0 to go on.
 * Returns 0 or the first error.
 */
int ix_versions_range(struct ix_read *rd, uint32_t disk, uint64_t after,
		      uint64_t upto,
		      int (*fn)(void *arg, uint64_t block,
				const struct ix_version *v),
		      void *arg);

/*
 * Resolves a timestamp: the newest record (any disk) with ts <= ts_ns.
 * Returns 0 with *seq and *rec_ts, or RW_ENOTFOUND when every record is
 * newer (or the store has none).
 */
int ix_time_to_seq(struct ix_read *rd, uint64_t ts_ns, uint64_t *seq,
		   uint64_t *rec_ts);
/* The timestamp of seq (exact).  0 or RW_ENOTFOUND. */
int ix_seq_to_time(struct ix_read *rd, uint64_t seq, uint64_t *ts_ns);
/* The newest (seq, ts) in the time map.  0 or RW_ENOTFOUND when empty. */
int ix_latest(struct ix_read *rd, uint64_t *seq, uint64_t *ts_ns);

/* -------------------------------------------------------------- segments */

struct ix_segment {
	uint64_t first_seq, last_seq;
	uint64_t first_ts, last_ts;
	uint64_t bytes;       /* bytes of records indexed from it */
	uint64_t records;
	bool sealed;
};

/* Lists a disk's segments in order; *out malloc'ed.  Count or error. */
int ix_segment_list(struct ix_read *rd, uint32_t disk, struct ix_segment **out);

/* ---------------------------------------------------------------- marks */

struct ix_mark {
	char label[IX_LABEL_MAX + 1];
	uint64_t ts_ns;
	uint64_t seq;
	uint64_t created_ns;
};

/* Adds or replaces a mark.  0, -EINVAL for a bad label, or error. */
int ix_mark_put(struct ix *ix, uint32_t disk, const struct ix_mark *m);
/* 0, or RW_ENOTFOUND naming disk and label. */
int ix_mark_get(struct ix_read *rd, uint32_t disk, const char *label,
		struct ix_mark *out);
int ix_mark_del(struct ix *ix, uint32_t disk, const char *label);
/* Lists marks by seq; *out malloc'ed.  Count or error. */
int ix_mark_list(struct ix_read *rd, uint32_t disk, struct ix_mark **out);

/*
 * (Added.)  Notes that complete the contract above:
 * - Map growth (MDB_MAP_FULL) needs every transaction of the process to
 *   end.  A write from a thread that holds an ix_read fails with -EDEADLK
 *   when it must grow the map; a write waiting more than 10 s for other
 *   threads' reads fails with RW_EBUSY.  Either way nothing of it is
 *   applied.  The map starts at 64 GiB of address space, so growth is
 *   rare; REWIND_MAPSIZE (a size) overrides that start, for tests.
 * - ix_versions_range scans every version of the disk (cost: all its
 *   versions, not only those in the range).
 */

/* ----------------------------------------------------------- compaction */

/*
 * (Added, index/compact.c.)  Each disk's horizon and base_seq live in
 * disks/NAME/horizon (FORMAT.md), written atomically BEFORE they are
 * mirrored into the disk's LMDB entry, so the index can always be rebuilt
 * from files: ix_open (read-write) and ix_horizon_sync copy a file that is
 * ahead of LMDB into it.  Both numbers only move forward, and
 * base_seq <= horizon_seq always.  Records with seq <= base_seq are in
 * base.img: they are never indexed again, never returned by lookups.
 * None of these functions needs STORE/lock; callers serialise compactions
 * of a store themselves (STORE/compact.lock, restore/compact.c).
 */
struct ix_horizon {
	uint32_t disk_id;       /* 0 when the file does not exist */
	uint64_t horizon_seq;   /* oldest restorable point */
	uint64_t horizon_ts;
	uint64_t base_seq;      /* base.img holds every record <= this */
};

/* Reads disks/NAME/horizon; all zero when absent.  0, RW_ECORRUPT, -errno. */
int ix_horizon_read(const struct ix *ix, const char *name, struct ix_horizon *h);

/* Copies every horizon file that is ahead of LMDB into LMDB.  0 or error. */
int ix_horizon_sync(struct ix *ix);

/*
 * Moves disk id's horizon forward to (seq, ts): the file durably, then
 * LMDB.  From then on points < seq are refused (rs_resolve).  0 (also when
 * already there), -EINVAL when seq is below the current horizon, or error.
 */
int ix_disk_advance_horizon(struct ix *ix, uint32_t id, uint64_t seq,
			    uint64_t ts);

/*
 * Records that base.img (already synced by the caller) holds every record
 * <= base_seq: the file durably, then LMDB.  base_seq must lie in
 * [current base_seq, horizon_seq].  0, -EINVAL or error.
 */
int ix_disk_set_base(struct ix *ix, uint32_t id, uint64_t base_seq);

struct ix_drop_stats {
	uint64_t versions;      /* block versions deleted */
	uint64_t time_entries;  /* time map entries deleted */
	uint64_t segment_rows;  /* segment entries deleted */
	uint64_t marks;         /* marks deleted (drop_marks) */
};

/*
 * Deletes what base.img now holds: the disk's time map entries and block
 * versions with seq <= base_seq, its sealed segment entries whose last_seq
 * <= base_seq, and with drop_marks its marks below the horizon.  Several
 * transactions (slices of 64Ki deletions); each part idempotent.  Reads
 * the journal's headers (the files must still exist).  0 or error.
 */
int ix_compact_drop(struct ix *ix, uint32_t id, bool drop_marks,
		    struct ix_drop_stats *st);

struct ix_unlink_stats {
	uint64_t segments;      /* files removed */
	uint64_t bytes;         /* their sizes */
};

/*
 * Removes the segment files of disk id that ix_compact_drop released:
 * no segment entry left, every record in the file <= base_seq (checked by
 * a header scan of the journal, independent of the index), and never the
 * last file (the writer's current one); then fsyncs the journal
 * directory.  0 or error.
 */
int ix_compact_unlink(struct ix *ix, uint32_t id, struct ix_unlink_stats *st);

/* ---------------------------------------------------------------- verify */

/* One inconsistency found by ix_verify (pointers valid during the call). */
struct ix_problem {
	const char *disk;     /* disk name */
	uint32_t disk_id;
	uint64_t block;       /* UINT64_MAX when not about one block */
	uint64_t seq;         /* 0 when unknown */
	uint64_t segment;     /* segment (first seq), 0 when unknown */
	uint64_t offset;      /* byte offset of the record in its segment */
	const char *what;     /* what is wrong, one line */
};

struct ix_verify_report {
	uint64_t disks;        /* disks checked */
	uint64_t records;      /* journal records read and verified */
	uint64_t versions;     /* block-version entries checked */
	uint64_t segments;     /* segment files / entries checked */
	uint64_t time_entries; /* time map entries checked */
	uint64_t unindexed;    /* records after last_indexed_seq (not errors) */
	uint64_t problems;     /* inconsistencies reported through fn */
};

/*
 * Cross-checks the index against the journals of the disks named in
 * names[0..nnames) (all disks when nnames == 0): every journal record is
 * read in full (crc, decompression) and must have a block version for
 * each block it touches and a time map entry; every block version must
 * point at a record (read with jr_reader_read_at when the journal pass
 * did not see it) that carries that disk, block and seq; every segment
 * entry must match a segment file and its record count; with all disks,
 * every time map entry must name a record.  Calls fn (may be NULL) per
 * problem.  Returns 0 when the check ran (rep->problems says whether it
 * passed), RW_ENOTFOUND for an unknown disk name, or another error.
 * Keeps one read transaction per disk open while it scans.
 */
typedef void (*ix_verify_fn)(void *arg, const struct ix_problem *p);
int ix_verify(struct ix *ix, const char *const *names, int nnames,
	      ix_verify_fn fn, void *arg, struct ix_verify_report *rep);

#endif /* RW_INDEX_H */
