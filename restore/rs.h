/*
 * rs.h — time travel: a disk as it was at any restorable moment.
 *
 * Contract
 * - A point in time (struct rw_when, common/rw.h) resolves to a seq S:
 *   the newest record with timestamp <= T (store-wide clock, so every disk
 *   of a VM resolves to the same instant).  A point before the disk's
 *   horizon or after the latest record is RW_ERANGE, with a message that
 *   states the restorable range.  "now" resolves to the latest record.
 * - As-of S, a block is its newest version with seq <= S applied over the
 *   older versions it only partly covers, over base; never a version with
 *   seq > S, never older than the horizon (invariant 5).
 * - Every journal record used is checksummed (jr_reader_read_at, or
 *   jr_reader_map_at in place); a bad one fails the operation with
 *   RW_ECORRUPT naming segment and offset — nothing silently wrong is
 *   ever written.
 * - Read transactions are short: a block map (restore, compaction,
 *   exports) is one scan of the disk's versions per window of at most
 *   4 Mi changed blocks, views renew theirs every few thousand blocks,
 *   so a long restore never pins LMDB pages while it writes.
 *
 * Thread model: a struct rs_view belongs to one thread.  Several views of
 * the same store may run in one or many processes, alongside a server.
 *
 * Errors: 0 / counts, or -errno / RW_E* with rw_err_msg() detail.
 * Ownership: rs_view_open/_close; results written into caller buffers.
 */
#ifndef RW_RESTORE_H
#define RW_RESTORE_H

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The restorable range of a disk. */
struct rs_range {
	uint64_t oldest_seq, oldest_ts;  /* horizon (or creation) */
	uint64_t latest_seq, latest_ts;  /* newest record in the index */
};

/* Fills r for disk d.  0 or error. */
int rs_range_get(struct ix *ix, const struct ix_disk *d, struct rs_range *r);

/*
 * Resolves w to a seq for disk d (and the timestamp of that point).
 * Returns 0, RW_ERANGE (message states the range), RW_ENOTFOUND (mark).
 */
int rs_resolve(struct ix *ix, const struct ix_disk *d, const struct rw_when *w,
	       uint64_t *seq, uint64_t *ts);

struct rs_view;

/* Opens a view of disk d as-of seq.  0 and *out, or error. */
int rs_view_open(struct rs_view **out, struct ix *ix, const struct ix_disk *d,
		 uint64_t seq);
void rs_view_close(struct rs_view *v);

/*
 * Reads len bytes at off of the disk as-of the view's seq into buf.
 * Returns 0, -EINVAL when the range is outside the disk, or error.
 */
int rs_view_read(struct rs_view *v, uint64_t off, uint64_t len, void *buf);

/*
 * Builds one block as-of the view's seq; *out points into the view and is
 * valid until the next call on it.  0 or error.
 */
int rs_view_block(struct rs_view *v, uint64_t block, const uint8_t **out);

/*
 * A shared as-of reader (asof.c): reads of disk d as-of seq from many
 * threads at once, for exports.  It builds a block map in a background
 * thread (reads go through views until it is ready) and shares decoded
 * records between threads, so a read costs a few large copies and at most
 * one record decode per record, not an index lookup and a record read per
 * block.  The caller keeps checking that the horizon stays <= seq (a
 * compaction past seq makes any as-of reader wrong).
 * rs_asof_open returns 0 and *out, or error; rs_asof_read is thread-safe
 * and returns 0, -EINVAL outside the disk, or error; close(NULL) is a
 * no-op and waits for the background thread.
 */
struct rs_asof;

enum {
	RS_ASOF_NO_MAP = 0x01, /* never build the map: views only (tests) */
};

int rs_asof_open(struct rs_asof **out, struct ix *ix, const struct ix_disk *d,
		 uint64_t seq, unsigned flags);
int rs_asof_read(struct rs_asof *x, uint64_t off, uint64_t len, void *buf);
void rs_asof_close(struct rs_asof *x);
/* True once the map serves reads; with wait, waits for the build first. */
bool rs_asof_mapped(struct rs_asof *x, bool wait);
/* Records decoded into the cache, and reads (or parts) served by views. */
void rs_asof_counters(struct rs_asof *x, uint64_t *loads, uint64_t *view_reads);

/*
 * Which parts of [off, off+len) read as zeroes as-of the reader's seq, for
 * NBD_CMD_BLOCK_STATUS (base:allocation): fn is called with consecutive
 * extents covering the range in order, flags RS_EXT_HOLE | RS_EXT_ZERO
 * for never-written, zeroed or trimmed blocks and base holes, 0 for data.
 * Until the map is ready (or without one) the whole range is data — always
 * a true answer.  Returns 0, -EINVAL outside the disk, or fn's error.
 * Thread-safe.  (Not wired yet: capture's read-only exports have no block
 * status callback.)
 */
enum {
	RS_EXT_HOLE = 0x1,  /* as NBD_STATE_HOLE */
	RS_EXT_ZERO = 0x2,  /* as NBD_STATE_ZERO */
};
typedef int (*rs_extent_fn)(void *arg, uint64_t off, uint64_t len,
			    unsigned flags);
int rs_asof_extents(struct rs_asof *x, uint64_t off, uint64_t len,
		    rs_extent_fn fn, void *arg);

/* Formats ns since the epoch as ISO 8601 UTC with microseconds into buf. */
char *rs_fmt_time(uint64_t ns, char buf[40]);

/* How rs_restore_file went. */
struct rs_restore_stats {
	bool backward;          /* true: copied head and undid newer blocks */
	uint64_t blocks_fixed;  /* blocks rebuilt from the journal */
	uint64_t bytes_copied;  /* bytes copied from base or head */
	uint64_t bytes_written; /* data bytes in the output (not holes) */
};

typedef void (*rs_progress_fn)(void *arg, uint64_t done, uint64_t total);

enum {
	RS_ALLOW_BACKWARD = 0x01, /* head may be used (no writer is live) */
	RS_OVERWRITE = 0x02,      /* replace an existing output file */
};

/*
 * Writes the disk as-of seq to out_path as a sparse raw image (zero blocks
 * become holes), choosing the cheaper of forward-from-base and
 * backward-from-head (only with RS_ALLOW_BACKWARD).  The file appears
 * under its name only when complete (written as out_path.tmp, fsynced,
 * renamed).  progress (may be NULL) is called with bytes done/total.
 * Returns 0 and fills st (may be NULL), RW_EEXIST when out_path exists
 * without RS_OVERWRITE, or error (the partial file is removed).
 */
int rs_restore_file(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		    const char *out_path, unsigned flags,
		    rs_progress_fn progress, void *arg,
		    struct rs_restore_stats *st);

/*
 * Receives the rewrites of a rollback, in increasing offset order: len
 * bytes at off, data NULL meaning zeroes.  The sink journals them as
 * ordinary records and applies them to head, so a rollback is history and
 * can itself be rolled back.  Returns 0 or an error that stops the
 * rollback.
 */
typedef int (*rs_sink_fn)(void *arg, uint64_t off, uint32_t len,
			  const void *data);

struct rs_rollback_stats {
	uint64_t blocks;        /* blocks rewritten (written after the point) */
	uint64_t data_bytes;    /* rewritten with data */
	uint64_t zero_bytes;    /* rewritten as zeroes */
};

/*
 * Sets disk d back to its state as-of seq by handing the sink every block
 * that has a version in (seq, upto] (upto: the newest indexed record the
 * caller has made sure head reflects), with its content as-of seq.
 * Adjacent blocks of the same kind are coalesced up to 1 MiB.  Touches
 * nothing else.  Returns 0 and fills st (may be NULL), or error (the sink
 * may have received part of the rewrites: a partial rollback is still
 * journaled history and can be completed by running it again).
 */
int rs_rollback(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		uint64_t upto, rs_sink_fn sink, void *arg,
		rs_progress_fn progress, void *parg,
		struct rs_rollback_stats *st);

/*
 * rs_rollback() for records the journal lost (a power loss after the
 * index took them in): the blocks come from the index's versions in
 * (seq, upto] instead of the journal's records, and each is handed to the
 * sink as-of seq, built from what the journal still holds.  Used to set
 * head.img back when a disk's journal ends at seq.  Same returns.
 */
int rs_undo_lost(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		 uint64_t upto, rs_sink_fn sink, void *arg,
		 struct rs_rollback_stats *st);

/* One rewrite of a rollback: len bytes at off, data NULL meaning zeroes. */
struct rs_run {
	uint64_t off;
	uint32_t len;
	const uint8_t *data;
};

/*
 * Receives a rollback's rewrites a step (up to 4 MiB of blocks) at a
 * time: n runs in increasing offset order.  Steps come in windows (up to
 * 64 MiB of blocks); last is true for the last step of a window, and the
 * data of every run of the window stays valid and unchanged until that
 * call returns.  Same duty as rs_sink_fn (journal them as ordinary
 * records, apply them to head), but so that a window can be journaled
 * with one sync: the records of early steps are written out while later
 * steps are read, and head is written once the window's records are
 * durable.  When the rollback stops on an error while a window is open
 * (the error of a call included), fn is called once more with n == 0 and
 * last true, its result ignored: by its return the callee must have
 * stopped using the window's bytes.  Returns 0 or an error that stops
 * the rollback.
 */
typedef int (*rs_runs_fn)(void *arg, const struct rs_run *runs, size_t n,
			  bool last);

/*
 * rs_rollback() handing the sink steps and windows (see rs_runs_fn);
 * progress is reported once per step, in blocks.  Same returns.
 */
int rs_rollback_runs(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		     uint64_t upto, rs_runs_fn fn, void *arg,
		     rs_progress_fn progress, void *parg,
		     struct rs_rollback_stats *st);

/* What rs_rollback_store() did. */
struct rs_rollback_result {
	uint64_t seq;         /* the point rolled back to */
	uint64_t before_seq;  /* newest record before the rollback: undo point */
	uint64_t last_seq;    /* newest record after it */
	struct rs_rollback_stats st;
};

/*
 * Rolls disk name of the store in dir back to when, in place, from this
 * process: takes the store's lock, appends the rewrites to the disk's
 * journal as ordinary records (one fdatasync per step of up to 4 MiB of
 * blocks, on a thread while the next step is read), writes each step
 * into head.img once its records are durable, fdatasyncs head once, and
 * indexes the new records — the same history `rewind serve` would have written, so the
 * rollback is undone by rolling back to res->before_seq.
 * Only for a store that was shut down cleanly: when any disk's journal
 * holds records its head or the index lack (a crash), nothing is changed
 * and 1 is returned — recover the store (cap_server_open) and roll back
 * through it.  Returns 0 and fills res, 1, RW_EBUSY (the store's lock is
 * held: a server runs), RW_ERANGE / RW_ENOTFOUND (when), or error with
 * rw_err_msg().  An error after the first journal flush leaves a partial
 * rollback that is journaled history (running it again completes it).
 */
int rs_rollback_store(const char *dir, const char *name,
		      const struct rw_when *when, struct rs_rollback_result *res);

/* ----------------------------------------------------------- compaction */

/*
 * Compaction (restore/compact.c): folds a disk's history older than a new
 * horizon H into base.img and reclaims the journal below it.  Every point
 * >= H stays exact throughout, also for views and restores running
 * concurrently in other processes; points < H are refused (RW_ERANGE) as
 * soon as H is durable.  A crash at any instant leaves every restorable
 * point exact; running again finishes the job.  Does not need STORE/lock
 * (runs beside `rewind serve`); two compactions of one store exclude each
 * other with STORE/compact.lock (RW_EBUSY).
 */

enum rs_over_budget {
	RS_OVER_BUDGET_REFUSE = 0, /* keep history; report over_budget */
	RS_OVER_BUDGET_COMPACT,    /* move H forward until under budget */
};

/* Where rs_compact_run stands; the test hook is called after each. */
enum rs_compact_step {
	RS_STEP_HORIZON = 1,  /* horizon durable (file + index) */
	RS_STEP_FOLDED,       /* base.img written, not yet synced */
	RS_STEP_BASE,         /* base.img synced, base_seq durable */
	RS_STEP_DROPPED,      /* index entries <= base_seq deleted */
	RS_STEP_UNLINKED,     /* segment files removed */
	RS_STEP_RECOMPRESSED, /* raw records of kept segments recompressed */
};

struct rs_compact_opts {
	uint64_t retain_ns;            /* keep this much history (if !before) */
	const struct rw_when *before;  /* or: fold everything before this point */
	uint64_t now_ns;               /* 0: rw_clock_ns() */
	bool drop_marks;               /* may compact past marks (deletes them) */
	bool dry_run;                  /* plan only; change nothing */
	uint64_t max_journal;          /* journal size budget in bytes, 0 = none */
	enum rs_over_budget over_budget;
	/*
	 * Step 7: recompress raw WRITE records of the sealed segments that
	 * stay (jr_recompress_journal; a dry run measures what it would
	 * free).  recompress_only: keep the horizon where it is (an
	 * interrupted fold is still finished) and only recompress.
	 */
	bool recompress, recompress_only;
	/* Background work (the scheduled job; implied by the idle I/O
	 * class): the fold writes base out in small paced steps. */
	bool background;
	int zstd_level;                /* for recompression; 0 = default */
	/* Tests: called after each step; a non-zero return stops the run
	 * with that error (as a crash would, minus the process exit). */
	int (*step_hook)(void *arg, enum rs_compact_step s);
	void *hook_arg;
};

struct rs_compact_plan {
	struct ix_disk disk;           /* as found (after loading its horizon file) */
	uint64_t old_horizon_seq, old_base_seq;
	uint64_t horizon_seq, horizon_ts; /* the horizon after the run */
	bool noop;                     /* nothing to fold or advance */
	bool resume;                   /* an earlier run's fold is unfinished */
	bool clamped_by_mark;          /* H stopped at mark `mark` */
	char mark[IX_LABEL_MAX + 1];
	uint64_t marks_dropped;        /* marks below H (drop_marks) */
	bool over_budget;              /* journal larger than max_journal */
	bool budget_forced;            /* H moved past retention for the budget */
	uint64_t blocks, versions;     /* to fold: distinct blocks, versions
					(dry run: counted up front; a real
					run counts them as it folds) */
	uint64_t records, bytes, segments; /* sealed segments <= H: to free */
	uint64_t journal_bytes, journal_segments; /* journal now */
};

struct rs_compact_stats {
	struct rs_compact_plan plan;
	uint64_t blocks;               /* blocks folded into base */
	uint64_t data_bytes;           /* written to base as data */
	uint64_t hole_bytes;           /* punched as holes (folded zeroes) */
	uint64_t versions_dropped, time_entries_dropped, marks_dropped;
	uint64_t segments_freed, bytes_freed;
	uint64_t elapsed_ns;
	uint64_t fold_ns, sync_ns, drop_ns; /* time in steps 3, 4 and 5 */
	struct jr_recompress_stats rz; /* step 7 (dry run: what it would do) */
	uint64_t rz_ns;
};

/*
 * Computes what compacting disk name with o would do (no lock, no
 * change).  0 or error (RW_ENOTFOUND for an unknown disk or mark).
 */
int rs_compact_plan(struct ix *ix, const char *name,
		    const struct rs_compact_opts *o, struct rs_compact_plan *p);

/*
 * Compacts disk name: takes STORE/compact.lock (RW_EBUSY when held),
 * plans, and unless o->dry_run runs the steps (horizon, fold, sync +
 * base_seq, drop index entries, unlink segments, and with o->recompress
 * recompress the segments that stay), each durable before the next.  Also finishes a previous interrupted run.  Returns 0 and fills st
 * (may be NULL; filled on error too, as far as the run went), or error.
 * ix may be opened with flags 0 (no STORE/lock) while a server runs.
 */
int rs_compact_run(struct ix *ix, const char *name,
		   const struct rs_compact_opts *o, struct rs_compact_stats *st);

/* Takes STORE/compact.lock; *fd to close() to release.  0 or RW_EBUSY. */
int rs_compact_lock(struct ix *ix, int *fd);

#endif /* RW_RESTORE_H */
