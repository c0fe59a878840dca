/*
 * rs_int.h — restore/'s private helpers, shared by its .c files only.
 *
 * A block set records which blocks of a disk have versions in a seq range
 * (filled by ix_versions_range through rs_blockset_add).
 *
 * A block map (map.c) says, for every block with a version in (after,
 * upto], where its bytes as-of a seq S come from: one record, zeroes, base,
 * or a mix that only a view can assemble.  Restore, rollback, compaction
 * and the shared as-of reader (asof.c) all work from such a map, so each
 * needed journal record is read once, in journal order, instead of once
 * per block.  apply.c writes a map into an image file.
 */
#ifndef RW_RESTORE_INT_H
#define RW_RESTORE_INT_H

#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rs_blockset {
	uint64_t nbits;     /* blocks of the disk */
	uint64_t *w;        /* one bit per block */
	uint64_t set;       /* blocks with at least one version */
	uint64_t versions;  /* versions seen */
};

/* Sizes s for a disk of size bytes in blocks of bs.  0 or -ENOMEM. */
int rs_blockset_init(struct rs_blockset *s, uint64_t size, uint32_t bs);
/* Releases s (safe on a zeroed or freed set). */
void rs_blockset_free(struct rs_blockset *s);
/* ix_versions_range callback: adds block; RW_ECORRUPT past the disk's end. */
int rs_blockset_add(void *arg, uint64_t block, const struct ix_version *v);

static inline bool rs_blockset_has(const struct rs_blockset *s, uint64_t block)
{
	return s->w[block / 64] & (1ull << (block % 64));
}

/* ------------------------------------------------------------ block map */

/* Where one block's bytes as-of S come from. */
enum rs_src {
	RS_SRC_BASE = 0,  /* no version in (after, S]: base.img */
	RS_SRC_REC,       /* a WRITE covering the whole block: its bytes */
	RS_SRC_ZERO,      /* a ZERO or TRIM covering the whole block */
	RS_SRC_MIXED,     /* the newest version is partial: rs_view_block */
};

struct rs_ent {
	uint64_t block;
	uint64_t seq;        /* newest version <= S (0 with RS_SRC_BASE) */
	struct jr_loc loc;   /* its record */
	uint8_t src;         /* enum rs_src */
	bool after;          /* the block has a version in (S, upto] too */
};

/*
 * One window of a map: entries in block order, one per block that has a
 * version in (after, upto], for blocks in [from, next).
 */
struct rs_map {
	struct rs_ent *e;
	size_t n, cap;
	uint64_t versions;   /* versions scanned into this window */
	uint64_t next;       /* first block after the window (nblocks: done) */
	/* Over every block >= the window's first, this window and later: */
	uint64_t asof_blocks;  /* blocks with a version <= S */
	uint64_t after_blocks; /* blocks with a version > S */
};

/* Largest window, in entries (40 bytes each): 160 MiB. */
#define RS_MAP_WINDOW ((size_t)4 << 20)
/* The window restore and compaction use; tests lower it. */
extern size_t rs_map_window;
/* Window entries from which a rollback looks them up on two threads
 * (1024; tests lower it to cover that path). */
extern size_t rs_rollback_parallel_lookups;
/* A rollback's step and window, in bytes of blocks (rollback.c: 4 MiB and
 * 64 MiB; tests lower them to cover many steps and windows). */
extern size_t rs_rollback_step_bytes;
extern size_t rs_rollback_window_bytes;

/*
 * Fills m (emptied first) with the entries of disk d for blocks >= from,
 * versions in (after, upto] resolved as-of seq, at most max entries; then
 * m->next is the first block left out (d's block count when none), and
 * asof_blocks / after_blocks count the blocks >= from with a version <= S
 * and > S, in this window and beyond.  One read transaction per call; a
 * map of more than max entries costs one scan of the disk's versions per
 * window (ix_versions_range cannot seek).
 * stop (may be NULL) is polled; when it turns true the fill ends with
 * -ECANCELED.  Returns 0, RW_ECORRUPT (a block past the disk's end),
 * -ENOMEM or an index error.
 */
int rs_map_fill(struct rs_map *m, struct ix *ix, const struct ix_disk *d,
		uint64_t from, uint64_t after, uint64_t seq, uint64_t upto,
		size_t max, const atomic_bool *stop);

/* Releases m's entries (safe on a zeroed map). */
void rs_map_free(struct rs_map *m);

/* The first entry with block >= b (m->n when none). */
size_t rs_map_lower(const struct rs_map *m, uint64_t b);

/*
 * Checks that rec (read from e's loc) is e's version: same seq and disk,
 * and a WRITE covering [boff, boff + part).  0 or RW_ECORRUPT naming
 * disk, block, seq, segment and offset.
 */
int rs_rec_check(const struct ix_disk *d, const struct rs_ent *e,
		 const struct jr_rec *rec, uint64_t part);

/* Which entries of a map a writer applies. */
enum rs_pick {
	RS_PICK_ASOF = 1,  /* every block with a version <= S (forward, fold) */
	RS_PICK_AFTER,     /* every block with a version > S (backward) */
};

/* Writes a map's entries into an image file (apply.c). */
struct rs_apply {
	/* in */
	struct ix *ix;
	const struct ix_disk *d;
	uint64_t seq;            /* as-of */
	int fd;                  /* the image written */
	const char *path;        /* its name, for messages */
	int base_fd;             /* base.img (RS_PICK_AFTER needs it) */
	bool punch;              /* the image may hold data where a block
				  * must become zero: punch holes there */
	bool no_kick;            /* never start writeback early (background
				  * work: leave the disk to the guest) */
	rs_progress_fn progress; /* may be NULL; bytes done of total */
	void *parg;
	uint64_t total;
	/* state */
	struct jr_reader *jr;
	struct rs_view *v;       /* opened on first need */
	uint8_t *rec;            /* JR_MAX_WRITE */
	uint8_t *buf;            /* RS_APPLY_RUN */
	uint64_t since_kick;     /* bytes written since the last writeback kick */
	uint64_t kick_writes;    /* pwrites since then */
	/* out */
	uint64_t done;           /* progress counter (bytes) */
	uint64_t blocks;         /* blocks written or punched */
	uint64_t data_bytes;     /* written as data */
	uint64_t hole_bytes;     /* punched or left as holes (zeroes) */
	uint64_t records;        /* journal records read */
};

#define RS_APPLY_RUN (1u << 20)

/* Sets a up for writing into fd (other fields set by the caller). 0 or error. */
int rs_apply_init(struct rs_apply *a, struct ix *ix, const struct ix_disk *d,
		  uint64_t seq, int fd, const char *path);
/*
 * Writes the entries of m that pick selects: records in journal order,
 * each read once, runs of blocks written with one pwrite, zero blocks
 * left as holes (punched when a->punch); then zero, base and mixed
 * blocks in block order.  Kicks writeback every 32 MiB written in large
 * runs, so that the final fsync has little left.  0 or error.
 */
int rs_apply_map(struct rs_apply *a, const struct rs_map *m, enum rs_pick pick);
void rs_apply_fini(struct rs_apply *a);

/* Writes or punches [off, off+len) of fd; counts into a.  0 or error. */
int rs_apply_write(struct rs_apply *a, uint64_t off, const uint8_t *p,
		   size_t len);

#endif
