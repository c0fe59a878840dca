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

#define IX_FORMAT_VERSION 1u
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
#define IX_VKEY 20u   /* disk u32 | block u64 | seq u64 */
#define IX_SKEY 12u   /* disk u32 | first_seq u64 */
#define IX_VVAL_MAX 21u
#define IX_SEGVAL 49u
#define IX_DISKVAL_MIN 53u
#define IX_MARKVAL 24u

struct ix {
	char *dir;
	unsigned flags;
	int lock_fd;
	MDB_env *env;
	MDB_dbi db_state, db_disks, db_names, db_versions, db_time,
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
};

struct ix_read {
	struct ix *ix;
	MDB_txn *txn;
	MDB_cursor *cv;          /* versions cursor, opened lazily */
	MDB_cursor *ct;          /* time map cursor, opened lazily */
	uint32_t hz_disk;        /* cached horizon of the last disk asked */
	uint64_t hz_seq;
	bool hz_valid;
	bool locked;
};

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

/* Block-version value: type/partial byte, varint(seq - segment), varint(offset). */
size_t ix_vval_encode(uint8_t v[IX_VVAL_MAX], uint64_t seq,
		      const struct ix_version *ver);
int ix_vval_decode(const uint8_t *v, size_t n, uint64_t seq,
		   struct ix_version *ver);

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
