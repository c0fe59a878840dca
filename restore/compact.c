/*
 * compact.c — compaction: fold old history into base.img and reclaim the
 * journal below a new horizon H, without ever breaking a restore point.
 *
 * How (DESIGN.md §4, invariant 6), each step durable before the next and
 * each idempotent, so a crash anywhere is finished by running again:
 *   1. plan H: the newest seq with ts <= cutoff (now - retain, or --before),
 *      capped at the disk's last indexed seq (records of the disk <= H are
 *      then all indexed), clamped at the oldest mark unless drop_marks, and
 *      raised to free enough segments when over the journal budget with the
 *      "compact" policy;
 *   2. horizon = H, durably (disks/NAME/horizon, then LMDB): points < H are
 *      refused from here on;
 *   3. fold: every block with a version in (base_seq, H] gets its bytes
 *      as-of H in base.img: one index scan builds the block map (map.c),
 *      then apply.c reads each needed record once, in journal order, and
 *      writes each run of its blocks with one pwrite (all-zero runs are
 *      punched as holes); blocks whose newest version is partial are
 *      built by an rs_view;
 *   4. fsync base.img, then base_seq = H durably;
 *   5. drop index entries <= base_seq (ix_compact_drop);
 *   6. unlink the released segment files, fsync the journal directory;
 *   7. (opts.recompress) recompress the raw WRITE records of the sealed
 *      segments that stay, each segment copied, synced and renamed over
 *      the original with every record at its old offset
 *      (journal/rewrite.c): the index is not touched, and a crash leaves
 *      each segment old or new, both valid.
 * A run that finds horizon > base_seq finishes that fold first (resume).
 *
 * Why views stay exact while this runs: lookups filter versions by
 * base_seq, not by the horizon.  Until step 4 a concurrent view as-of
 * P >= H reads base only for a block whose versions in (old base_seq, P]
 * are all partial (a full one ends its walk first); the fold writes such
 * a block once, with its as-of-H bytes, and re-applying those same
 * partial writes in order over them gives the same bytes (a byte covered
 * by a version ends as the newest such version, a byte covered by none is
 * the old base in both).  A block whose newest version <= H is full is
 * written from that record alone, and no view reads its base.  After
 * step 4 the snapshot says base_seq = H and base is synced.  A view whose
 * old snapshot names a segment unlinked in step 6 renews and retries
 * (restore/view.c).
 *
 * Two compactions never overlap: STORE/compact.lock is flock()ed.  The
 * server's STORE/lock is not needed: LMDB serialises writers across
 * processes, and compaction never writes to the journal (it only removes
 * whole files that no longer hold anything after base_seq).
 *
 * Rejected: folding by replaying every record into base in seq order
 * (each block written once per version) and rebuilding each block through
 * a view in block order (one index lookup per block, and a large record
 * read again for every run of its blocks); copying base to a new
 * file then renaming (doubles space, and a concurrent view would hold the
 * old file open).
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int step(const struct rs_compact_opts *o, enum rs_compact_step s)
{
	return o && o->step_hook ? o->step_hook(o->hook_arg, s) : 0;
}

/* ------------------------------------------------------------- plan */

static uint64_t journal_bytes(struct ix *ix, const struct ix_disk *d,
			      uint64_t *nseg)
{
	struct jr_seginfo *segs = NULL;
	char jdir[4096];
	uint64_t t = 0;
	int n;

	*nseg = 0;
	if (ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir)))
		return 0;
	n = jr_segments_list(jdir, &segs);
	for (int i = 0; i < n; i++)
		t += segs[i].bytes;
	*nseg = n > 0 ? (uint64_t)n : 0;
	free(segs);
	return t;
}

int rs_compact_plan(struct ix *ix, const char *name,
		    const struct rs_compact_opts *o, struct rs_compact_plan *p)
{
	struct ix_disk d;
	struct ix_read *rd = NULL;
	struct ix_mark *marks = NULL;
	struct ix_segment *rows = NULL;
	int nmarks = 0, nrows = 0, err;
	uint64_t now = o->now_ns ? o->now_ns : rw_clock_ns();
	uint64_t h = 0, h_ts = 0;

	memset(p, 0, sizeof(*p));
	if ((err = ix_horizon_sync(ix)) || (err = ix_disk_get(ix, name, &d)))
		return err;
	p->disk = d;
	p->old_horizon_seq = d.horizon_seq;
	p->old_base_seq = d.base_seq;
	p->resume = d.horizon_seq > d.base_seq;
	p->journal_bytes = journal_bytes(ix, &d, &p->journal_segments);
	if ((err = ix_read_begin(ix, &rd)))
		return err;

	/* 1. The cutoff. */
	if (o->recompress_only) {
		h = d.horizon_seq;
	} else if (o->before) {
		switch (o->before->kind) {
		case RW_WHEN_SEQ:
			h = o->before->seq;
			break;
		case RW_WHEN_MARK: {
			struct ix_mark m;
			if ((err = ix_mark_get(rd, d.id, o->before->mark, &m)))
				goto out;
			h = m.seq;
			break;
		}
		case RW_WHEN_TIME:
			err = ix_time_to_seq(rd, o->before->ts_ns, &h, &h_ts);
			if (err == RW_ENOTFOUND) {
				h = 0;
				err = 0;
			}
			if (err)
				goto out;
			break;
		}
	} else {
		uint64_t cut = now > o->retain_ns ? now - o->retain_ns : 0;
		err = ix_time_to_seq(rd, cut, &h, &h_ts);
		if (err == RW_ENOTFOUND) {
			h = 0;
			err = 0;
		}
		if (err)
			goto out;
	}
	if (h > d.last_indexed_seq)
		h = d.last_indexed_seq;
	if (o->recompress_only)
		h = d.horizon_seq;

	/* Over the journal budget: free whole segments, oldest first. */
	if (o->max_journal && p->journal_bytes > o->max_journal) {
		p->over_budget = true;
		nrows = ix_segment_list(rd, d.id, &rows);
		if (nrows < 0) {
			err = nrows;
			nrows = 0;
			goto out;
		}
		if (o->over_budget == RS_OVER_BUDGET_COMPACT) {
			uint64_t left = p->journal_bytes, hb = 0;
			for (int i = 0; i < nrows && left > o->max_journal; i++) {
				if (!rows[i].sealed)
					break;
				left -= rows[i].bytes < left ? rows[i].bytes : left;
				hb = rows[i].last_seq;
			}
			if (hb > h) {
				h = hb;
				p->budget_forced = true;
			}
		}
	}

	/* Marks stop compaction unless dropped. */
	nmarks = ix_mark_list(rd, d.id, &marks);
	if (nmarks < 0) {
		err = nmarks;
		nmarks = 0;
		goto out;
	}
	for (int i = 0; i < nmarks; i++) {
		if (marks[i].seq < d.horizon_seq || marks[i].seq >= h)
			continue;
		if (o->drop_marks) {
			p->marks_dropped++;
			continue;
		}
		if (!p->clamped_by_mark || marks[i].seq < h) {
			h = marks[i].seq;
			p->clamped_by_mark = true;
			snprintf(p->mark, sizeof(p->mark), "%s", marks[i].label);
		}
	}
	if (p->budget_forced && h < d.horizon_seq)
		p->budget_forced = false;

	if (h <= d.horizon_seq) {
		p->horizon_seq = d.horizon_seq;
		p->horizon_ts = d.horizon_ts;
		p->noop = !p->resume;
	} else {
		p->horizon_seq = h;
		if (ix_seq_to_time(rd, h, &p->horizon_ts))
			p->horizon_ts = h_ts ? h_ts : now;
	}

	/* What folding will touch (a real run counts while it folds: one
	 * scan of the versions saved). */
	if (o->dry_run && p->horizon_seq > d.base_seq) {
		struct rs_blockset b;
		if ((err = rs_blockset_init(&b, d.size, d.block_size)))
			goto out;
		err = ix_versions_range(rd, d.id, d.base_seq, p->horizon_seq,
					rs_blockset_add, &b);
		rs_blockset_free(&b);
		if (err)
			goto out;
		p->blocks = b.set;
		p->versions = b.versions;
	}
	if (!rows) {
		nrows = ix_segment_list(rd, d.id, &rows);
		if (nrows < 0) {
			err = nrows;
			nrows = 0;
			goto out;
		}
	}
	for (int i = 0; i < nrows; i++) {
		if (!rows[i].sealed || rows[i].last_seq > p->horizon_seq)
			continue;
		p->records += rows[i].records;
		p->segments++;
		p->bytes += rows[i].bytes;
	}
out:
	ix_read_end(rd);
	free(marks);
	free(rows);
	return err;
}

/* ------------------------------------------------------------- fold */

/*
 * True when this process runs with the idle I/O class (ionice -c 3, as
 * rewind-compact@.service runs compaction; `serve --compact-every` passes
 * --background, which sets it): then the fold does not start writeback
 * early without waiting (unbounded writeback raised a concurrent guest's
 * p99 write latency, bench-compact (b)); it paces it (pace_fn).  A
 * foreground compaction keeps the overlap, which is fastest.
 */
static bool io_idle(void)
{
#ifdef SYS_ioprio_get
	long prio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
	return prio >= 0 && (prio >> 13) == 3 /* IOPRIO_CLASS_IDLE */;
#else
	return false;
#endif
}

/*
 * Background pacing of the fold (o->background: the scheduled job, or a
 * run under the idle I/O class).  Every PACE_STEP bytes written to base,
 * the fold writes them out itself and waits (sync_file_range), under its
 * idle I/O class, then rests as long as the whole step took (at most
 * 200 ms): at most PACE_STEP of base is ever in flight and the fold works
 * at most half the time, so a guest's writes and its journal's
 * fdatasyncs never queue behind a whole fold's writeback (as they did
 * behind the one fsync at the end: p99 of a concurrent fio 1.4-2.7x).
 * Resting only as long as the writeback took measured the same within
 * the noise of the shared machine.  A foreground run is not paced.
 */
#define PACE_STEP (8u << 20)

struct pace {
	struct rs_apply *a;
	uint64_t next;          /* data_bytes at which the next step is due */
	uint64_t ns;            /* time spent waiting for writeback */
	uint64_t rest_ns;       /* and resting */
	uint64_t last;          /* when the last rest ended */
};

static void pace_sleep(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
			       (long)(ns % 1000000000u) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void pace_fn(void *arg, uint64_t done, uint64_t total)
{
	struct pace *p = arg;
	uint64_t t0;

	(void)done;
	(void)total;
	if (p->a->data_bytes < p->next)
		return;
	p->next = p->a->data_bytes + PACE_STEP;
	t0 = rw_mono_ns();
	/* Advisory: an error shows up again in the final fsync. */
	(void)sync_file_range(p->a->fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
			      SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
	uint64_t took = rw_mono_ns() - t0;
	p->ns += took;
	/* Rest as long as the whole step took (reading and decoding
	 * records too): at most half the time, of CPU and disk alike. */
	took = rw_mono_ns() - p->last;
	if (took > 200000000u)
		took = 200000000u;
	pace_sleep(took);
	p->rest_ns += took;
	p->last = rw_mono_ns();
}

static int fold(struct ix *ix, const struct ix_disk *d, uint64_t h,
		const struct rs_compact_opts *o, struct rs_compact_stats *st)
{
	struct pace pace = { 0 };
	struct rs_map m = { 0 };
	struct rs_apply a;
	bool apply_ready = false;
	char path[4096];
	uint64_t t0 = rw_mono_ns();
	uint64_t nblocks = (d->size + d->block_size - 1) / d->block_size;
	int fd = -1, err;

	if ((err = ix_disk_path(ix, d->name, "base.img", path, sizeof(path))))
		return err;
	fd = rw_sys_open(path, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return rw_err_set(fd, "cannot open base image '%s': %s", path,
				  rw_strerror(fd));
	if ((err = rs_apply_init(&a, ix, d, h, fd, path)))
		goto out;
	apply_ready = true;
	a.punch = true; /* base holds data anywhere */
	a.no_kick = o->background || io_idle();
	if (a.no_kick) {
		pace.a = &a;
		pace.next = PACE_STEP;
		pace.last = rw_mono_ns();
		a.progress = pace_fn;
		a.parg = &pace;
	}
	for (uint64_t from = 0; from < nblocks; from = m.next) {
		if ((err = rs_map_fill(&m, ix, d, from, d->base_seq, h, h,
				       rs_map_window, NULL)))
			goto out;
		st->plan.versions += m.versions;
		if ((err = rs_apply_map(&a, &m, RS_PICK_ASOF)))
			goto out;
	}
	st->blocks = st->plan.blocks = a.blocks;
	st->data_bytes = a.data_bytes;
	st->hole_bytes = a.hole_bytes;
	st->fold_ns = rw_mono_ns() - t0;
	if ((err = step(o, RS_STEP_FOLDED)))
		goto out;
	t0 = rw_mono_ns();
	if ((err = rw_sys_fsync(fd))) {
		rw_err_set(err, "cannot sync '%s': %s", path, rw_strerror(err));
		goto out;
	}
	st->sync_ns = rw_mono_ns() - t0;
out:
	if (apply_ready)
		rs_apply_fini(&a);
	rs_map_free(&m);
	close(fd);
	return err;
}

/* ------------------------------------------------------- recompress */

static int recompress(struct ix *ix, const struct ix_disk *d,
		      const struct rs_compact_opts *o, struct rs_compact_stats *st)
{
	struct jr_recompress_opts ro = { .level = o->zstd_level,
					 .dry_run = o->dry_run };
	uint64_t t0 = rw_mono_ns();
	char jdir[4096];
	int err;

	if ((err = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir))))
		return err;
	err = jr_recompress_journal(jdir, &ro, &st->rz);
	st->rz_ns = rw_mono_ns() - t0;
	return err;
}

/* ------------------------------------------------------------- run */

int rs_compact_lock(struct ix *ix, int *fd_out)
{
	char p[4096];
	int fd;

	*fd_out = -1;
	if ((size_t)snprintf(p, sizeof(p), "%s/compact.lock", ix_store_dir(ix)) >= sizeof(p))
		return -ENAMETOOLONG;
	fd = rw_sys_open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return rw_err_set(fd, "cannot open '%s': %s", p, rw_strerror(fd));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		return e == EWOULDBLOCK
			? rw_err_set(RW_EBUSY, "another compaction of store '%s' is running ('%s' is locked)",
				     ix_store_dir(ix), p)
			: rw_err_set(-e, "cannot lock '%s': %s", p, strerror(e));
	}
	*fd_out = fd;
	return 0;
}

int rs_compact_run(struct ix *ix, const char *name,
		   const struct rs_compact_opts *o, struct rs_compact_stats *st)
{
	struct rs_compact_stats s = { 0 };
	struct ix_drop_stats ds = { 0 };
	struct ix_unlink_stats us = { 0 };
	uint64_t t0 = rw_mono_ns();
	struct ix_disk d;
	int lock = -1, err;

	if ((err = rs_compact_lock(ix, &lock)))
		return err;
	if ((err = rs_compact_plan(ix, name, o, &s.plan)))
		goto out;
	if (o->dry_run) {
		if (o->recompress)
			err = recompress(ix, &s.plan.disk, o, &s);
		goto out;
	}
	d = s.plan.disk;
	/* 2. The new horizon, durably, before anything is folded. */
	if (s.plan.horizon_seq > d.horizon_seq) {
		if ((err = ix_disk_advance_horizon(ix, d.id, s.plan.horizon_seq,
						   s.plan.horizon_ts)))
			goto out;
	}
	if ((err = step(o, RS_STEP_HORIZON)))
		goto out;
	/* 3-4. Fold over the OLD base_seq, sync, then advance base_seq. */
	if ((err = ix_disk_get_id(ix, d.id, &d)))
		goto out;
	if (d.horizon_seq > d.base_seq) {
		if ((err = fold(ix, &d, d.horizon_seq, o, &s)) ||
		    (err = ix_disk_set_base(ix, d.id, d.horizon_seq)))
			goto out;
	}
	if ((err = step(o, RS_STEP_BASE)))
		goto out;
	/* 5. Index entries below base_seq. */
	uint64_t t5 = rw_mono_ns();
	if ((err = ix_compact_drop(ix, d.id, o->drop_marks, &ds)))
		goto out;
	s.drop_ns = rw_mono_ns() - t5;
	s.versions_dropped = ds.versions;
	s.time_entries_dropped = ds.time_entries;
	s.marks_dropped = ds.marks;
	if ((err = step(o, RS_STEP_DROPPED)))
		goto out;
	/* 6. Files. */
	if ((err = ix_compact_unlink(ix, d.id, &us)))
		goto out;
	s.segments_freed = us.segments;
	s.bytes_freed = us.bytes;
	if ((err = step(o, RS_STEP_UNLINKED)))
		goto out;
	/* 7. Raw records of the segments that stay. */
	if (o->recompress) {
		if ((err = recompress(ix, &d, o, &s)))
			goto out;
		if ((err = step(o, RS_STEP_RECOMPRESSED)))
			goto out;
	}
out:
	if (lock >= 0)
		close(lock);
	s.elapsed_ns = rw_mono_ns() - t0;
	if (st)
		*st = s;
	return err;
}
