/*
 * inplace.c — rolling a disk back when no server holds its store: this
 * process writes the journal, head.img and the index itself.
 *
 * The old offline path opened the store the way `rewind serve` starts
 * (cap_server_open: the last segment of every journal read and
 * checksummed in full, then read again to find what to replay into head,
 * the index caught up) and pushed each run through the guest write path
 * (a write-out, a head reservation and a head write per run).  For the
 * rollback of the last minute of a large disk that cost several times the
 * rollback itself.  Here:
 *
 * - Open: the store lock, then every disk's journal with durable_seq set
 *   to the disk's head_synced_seq (jr.h), so a journal that was shut down
 *   cleanly costs one header read per record of its last segment — on a
 *   thread of its own, while the rollback reads the index and the records
 *   it needs; the first write waits for it.  Every
 *   journal is opened, not only the rolled back disk's, because seqs are
 *   store-wide: the clock must start after the newest record of any of
 *   them.  A store that was not shut down cleanly — a journal holds
 *   records its disk's head or the index lack — is left untouched (the
 *   caller recovers it the server's way), so replay and catch-up stay in
 *   one place (capture/).
 * - Per step of runs (rollback.c: up to 4 MiB of blocks): head space for
 *   the data runs is reserved first (fallocate), so a full file system
 *   fails before anything is journaled; the runs are appended as
 *   ordinary WRITE / ZERO records, borrowed (written from the bytes
 *   rollback.c found in the page cache, not copied into the writer),
 *   and queued for the applier thread, which takes the steps in order:
 *   writes them out and makes them durable (one pwritev, one fdatasync:
 *   the writer's batch is larger than a step, so the appends themselves
 *   write nothing on this thread), and only then writes them into
 *   head — zero runs first, adjacent ones with one fallocate
 *   (ZERO_RANGE, see zero()), then adjacent data runs with one pwritev
 *   each and their writeback started at once (sync_file_range) — while
 *   this thread reads and journals the next steps.
 * - The last step of a window: the window's other records go to the
 *   committer thread, which syncs the journal itself (a sync under way
 *   is shared) and indexes them (one transaction); this thread journals
 *   the step behind a FLUSH record (as after a server's rollback), syncs
 *   it, writes it into head alongside the applier's last steps, waits
 *   for the applier and starts head's fdatasync on a thread (most of
 *   head is on its way already) while the rollback lets go of its
 *   mappings and buffers.
 * - End: once head's sync and the committer returned, one transaction
 *   indexes the last step's records and moves head_synced_seq to the
 *   last record (after a window that is not the last, its last step is
 *   indexed before anything of the next window).
 *
 * Crash safety: head is written only after the records holding the same
 * bytes are durable (a step's fdatasync returns before its head writes
 * start), the index never holds a record before it is durable, and
 * head_synced_seq moves only after head's sync, so a crash anywhere
 * leaves a journal that is a prefix of the rollback plus a head and an
 * index at or behind it: the next open replays the tail into head and
 * indexes what the index lacks.  A partial rollback is journaled history
 * like any other; running the rollback again completes it
 * (tests/e2e/rollback_kill9.sh kills it at many instants).
 *
 * Records are stored raw, not compressed: a rollback rewrites a small
 * slice of history, and zstd over it would cost more time than the rest
 * of the rollback together.
 *
 * Why a sync per step: with one fdatasync per 64 MiB window, the disk
 * sat idle while the window was read and journaled, then the journal's
 * bytes and head's bytes went out one after the other, each behind a
 * sync the process waited for, then the window's index commit; now the
 * disk takes each step's journal and head bytes while later steps are
 * read, and what is left after the last step is its own sync and head
 * write, a small commit and the tail of head's sync (the benchmark's
 * rollback of 5.5 MiB of data and 16.7 MiB of zeroes: what followed the
 * reading of the last records took 24 ms, now 4-6 ms).  A step costs
 * one device cache flush more, which the overlap pays for many times.
 * Indexing each step on its own was tried and dropped: the commits'
 * CPU slowed the reading threads more than it shortened the end.
 *
 * Rejected: keeping the server's open for the offline case with a faster
 * write path behind it — the open alone (two full reads of the last
 * segment) cost more than the target for the whole command.  Writing
 * head right after the write-out (the guest path's order) — it would let
 * a power loss leave head ahead of the journal.  Starting the journal's
 * writeback early (sync_file_range) and syncing once per window — the
 * head writes then still waited for the whole window.
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_BATCH 256

/* A step's runs, queued for the applier (a copy: rs_runs_fn reuses its
 * array; the bytes they point at stay until the window ends). */
struct step {
	struct step *next;
	size_t n;
	struct rs_run runs[];
};

struct ip {
	struct ix *ix;
	struct ix_disk d;
	struct jr_writer *w;
	struct ix_batch *b;      /* records appended, not yet handed over */
	size_t bn;               /* how many */
	struct ix_batch *ba;     /* the committer's: a window's steps but
				  * its last */
	struct ix_batch *bl;     /* a window's last step: committed before
				  * the next window's, or at the end with
				  * head_synced_seq */
	int head_fd;
	char head_path[4096];
	bool prealloc_ok;
	atomic_int zero_mode;    /* zero(): first fallocate mode to try
				  * (the applier and this thread) */
	uint64_t last_seq;       /* newest record appended (0: none) */
	uint64_t records;
	/* The journals are opened on a thread of their own (opener()). */
	struct jr_clock *clk;
	const char *name;
	pthread_t opener;
	bool opening;            /* opener running, not joined yet */
	int open_err;            /* its result (1: not clean) */
	char open_msg[1024];
	/* Steps are applied (journal synced, then head written) by the
	 * applier thread, in order, while later steps are read: a queue
	 * under amu. */
	pthread_mutex_t amu;
	pthread_cond_t acv;
	struct step *qhead, **qtail;
	bool abusy;              /* the applier holds a step */
	bool aquit;              /* no more steps: the applier ends */
	bool astarted;           /* the applier runs, not joined yet */
	pthread_t applier;
	int apply_err;           /* its first error (then it skips steps) */
	char apply_msg[1024];
	/* Head is synced on a thread once a window is written, while the
	 * rollback lets go of its buffers and mappings. */
	pthread_t syncer;
	bool syncing;            /* syncer running, not joined yet */
	int sync_err;
	/* A window's records are indexed on a thread while head is written. */
	pthread_t committer;
	bool committing;         /* committer running, not joined yet */
	int commit_err;
	char commit_msg[1024];
};

static int head_err(struct ip *p, int err, const char *what, uint64_t off)
{
	return rw_err_set(err, "cannot %s '%s' at %" PRIu64 ": %s", what,
			  p->head_path, off, rw_strerror(err));
}

/* Reserves head blocks under every data run (ENOSPC before journaling). */
static int reserve(struct ip *p, const struct rs_run *runs, size_t n)
{
	for (size_t i = 0; i < n && p->prealloc_ok; i++) {
		if (!runs[i].data)
			continue;
		if (fallocate(p->head_fd, 0, (off_t)runs[i].off,
			      (off_t)runs[i].len) == 0)
			continue;
		if (errno == EOPNOTSUPP || errno == ENOSYS) {
			p->prealloc_ok = false;
			break;
		}
		return head_err(p, -errno, "reserve space in", runs[i].off);
	}
	return 0;
}

/* Appends one record and queues it for the index. */
static int journal(struct ip *p, uint8_t type, uint64_t off, uint32_t len,
		   const void *data)
{
	struct jr_append a = { .type = type, .offset = off, .length = len,
			       .data = data };
	struct jr_appended out;
	/* Borrowed: written straight from the window's bytes, which stay
	 * until the window's flush returned (no copy into the writer's
	 * buffer). */
	int err = jr_writer_append_borrowed(p->w, &a, NULL, &out);

	if (err)
		return err;
	struct jr_rec rec = {
		.type = type, .flags = out.flags, .seq = out.seq,
		.ts_ns = out.ts_ns, .disk_id = p->d.id, .offset = off,
		.length = len, .stored_len = out.stored_len,
	};
	if ((err = ix_batch_add(p->b, &rec, &out.loc)))
		return err;
	p->bn++;
	p->last_seq = out.seq;
	p->records++;
	return 0;
}

/* Writes iov[0..n) at off, all of it.  0 or error naming head. */
static int pwritev_full(struct ip *p, struct iovec *iov, int n, uint64_t off)
{
	uint64_t at = off;

	while (n > 0) {
		ssize_t k = rw_sys_pwritev(p->head_fd, iov, n, (off_t)at);
		if (k < 0)
			return head_err(p, (int)k, "write", at);
		if (k == 0)
			return head_err(p, -EIO, "write", at);
		at += (uint64_t)k;
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
	return 0;
}

/*
 * Makes [off, off+len) of head read as zeroes.  FALLOC_FL_ZERO_RANGE
 * first: the blocks stay allocated (they held the data written after the
 * point, so no space is taken that was not taken before) and only their
 * extents change.  A hole punch frees them, which on ext4 costs a journal
 * transaction per range that waits behind any other commit of the file
 * system — measured 8 to 100 ms for the 64 ranges of the benchmark's
 * rollback, against 2 to 6 ms — and an undo would allocate them again.
 * Then the punch, then plain zeroes, for file systems without either.
 */
static int zero(struct ip *p, uint64_t off, uint64_t len)
{
	static const uint8_t zeroes[64 * 1024];
	static const int modes[2] = {
		FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
		FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	};

	for (int m = atomic_load(&p->zero_mode); m < 2; m++) {
		if (fallocate(p->head_fd, modes[m], (off_t)off, (off_t)len) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != ENOSYS)
			return head_err(p, -errno, "zero", off);
		atomic_store(&p->zero_mode, m + 1);
	}
	for (uint64_t o = 0; o < len; o += sizeof(zeroes)) {
		size_t k = len - o < sizeof(zeroes) ? (size_t)(len - o)
						    : sizeof(zeroes);
		int err = rw_sys_pwrite_full(p->head_fd, zeroes, k,
					     (off_t)(off + o));
		if (err)
			return head_err(p, err, "write zeroes to", off + o);
	}
	return 0;
}

/*
 * Applies a step's runs to head: adjacent runs of a kind merged, zero
 * runs first.  The writeback of each data write is started at once
 * (sync_file_range), so the disk works while the rest is written and the
 * final fdatasync waits for the tail only; the zero runs go first
 * because an ext4 fallocate waits for writeback under way in the file
 * (measured on the benchmark's rollback: head written and synced in
 * 5-6 ms, against 7-8.5 ms without the early writeback and 7-10 ms with
 * it but zero runs interleaved).
 */
static int head_write(struct ip *p, const struct rs_run *runs, size_t n)
{
	struct iovec iov[IOV_BATCH];
	int err;

	for (int pass = 0; pass < 2; pass++) {
		bool want_data = pass == 1;
		for (size_t i = 0; i < n;) {
			size_t k = i + 1;
			uint64_t end = runs[i].off + runs[i].len;
			bool data = runs[i].data != NULL;
			while (k < n && runs[k].off == end &&
			       (runs[k].data != NULL) == data &&
			       (!data || k - i < IOV_BATCH)) {
				end += runs[k].len;
				k++;
			}
			if (data != want_data) {
				i = k;
				continue;
			}
			if (data) {
				for (size_t t = i; t < k; t++)
					iov[t - i] = (struct iovec){
						.iov_base = (void *)runs[t].data,
						.iov_len = runs[t].len,
					};
				err = pwritev_full(p, iov, (int)(k - i),
						   runs[i].off);
				if (!err)
					(void)sync_file_range(p->head_fd,
							      (off_t)runs[i].off,
							      (off_t)(end - runs[i].off),
							      SYNC_FILE_RANGE_WRITE);
			} else {
				err = zero(p, runs[i].off, end - runs[i].off);
			}
			if (err)
				return err;
			i = k;
		}
	}
	return 0;
}

static int journals_ready(struct ip *p);

/*
 * Indexes p->ba once its records are durable: it syncs the journal
 * itself (sharing the applier's sync when one runs: group commit)
 * rather than wait for the applier, whose head writes it does not need.
 */
static void *committer(void *arg)
{
	struct ip *p = arg;

	p->commit_err = jr_writer_flush(p->w);
	if (!p->commit_err)
		p->commit_err = ix_batch_commit(p->ba);
	if (p->commit_err)
		snprintf(p->commit_msg, sizeof(p->commit_msg), "%s",
			 rw_err_msg());
	return NULL;
}

/* Waits for the committer (or takes the result of a run in this
 * thread).  0 or its error. */
static int committer_join(struct ip *p)
{
	if (p->committing) {
		pthread_join(p->committer, NULL);
		p->committing = false;
	}
	ix_batch_free(p->ba);
	p->ba = NULL;
	int err = p->commit_err;
	p->commit_err = 0;
	if (err)
		return rw_err_set(err, "%s", p->commit_msg);
	return 0;
}

/*
 * Waits for the committer, then indexes a previous window's last step
 * (p->bl) — in seq order, before anything later.  0 or error.
 */
static int commit_join(struct ip *p)
{
	int err = committer_join(p);

	if (!err && p->bl) {
		err = ix_batch_commit(p->bl);
		ix_batch_free(p->bl);
		p->bl = NULL;
	}
	return err;
}

/* Hands p->b over as *to (a fresh batch takes its place).  0 or error. */
static int batch_handover(struct ip *p, struct ix_batch **to)
{
	struct ix_batch *nb;
	int err = ix_batch_new(p->ix, &nb);

	if (err)
		return err;
	*to = p->b;
	p->b = nb;
	p->bn = 0;
	return 0;
}

/*
 * Applies a step: makes every record appended so far durable, then
 * writes the step's runs into head.  0 or error.  (The window's records
 * are indexed in one transaction at its end: a commit per step cost
 * more CPU, which the reading threads need, than it took off the end.)
 */
static int apply(struct ip *p, const struct step *st)
{
	int err = jr_writer_flush(p->w);

	return err ? err : head_write(p, st->runs, st->n);
}

/* The applier: applies queued steps in order until told to quit. */
static void *applier(void *arg)
{
	struct ip *p = arg;

	pthread_mutex_lock(&p->amu);
	for (;;) {
		while (!p->qhead && !p->aquit)
			pthread_cond_wait(&p->acv, &p->amu);
		struct step *st = p->qhead;
		if (!st)
			break;
		p->qhead = st->next;
		if (!p->qhead)
			p->qtail = &p->qhead;
		p->abusy = true;
		/* After an error, or once told to quit (the steps' bytes may
		 * be gone), steps are only dropped. */
		bool skip = p->apply_err != 0 || p->aquit;
		pthread_mutex_unlock(&p->amu);
		int err = skip ? 0 : apply(p, st);
		free(st);
		pthread_mutex_lock(&p->amu);
		p->abusy = false;
		if (err && !p->apply_err) {
			p->apply_err = err;
			snprintf(p->apply_msg, sizeof(p->apply_msg), "%s",
				 rw_err_msg());
		}
		pthread_cond_broadcast(&p->acv);
	}
	pthread_mutex_unlock(&p->amu);
	return NULL;
}

/* The applier's error so far, set again in this thread.  0 or error. */
static int apply_err(struct ip *p)
{
	pthread_mutex_lock(&p->amu);
	int err = p->apply_err;
	if (err)
		rw_err_set(err, "%s", p->apply_msg);
	pthread_mutex_unlock(&p->amu);
	return err;
}

/*
 * Queues a copy of a step's runs for the applier (started on the first
 * step; without a thread the step is applied here).  0 or error.
 */
static int apply_queue(struct ip *p, const struct rs_run *runs, size_t n)
{
	struct step *st = malloc(sizeof(*st) + n * sizeof(*runs));

	if (!st)
		return -ENOMEM;
	st->next = NULL;
	st->n = n;
	memcpy(st->runs, runs, n * sizeof(*runs));
	if (!p->astarted) {
		p->qtail = &p->qhead;
		p->astarted = pthread_create(&p->applier, NULL, applier, p) == 0;
		if (!p->astarted) {
			int err = apply(p, st);
			free(st);
			return err;
		}
	}
	pthread_mutex_lock(&p->amu);
	*p->qtail = st;
	p->qtail = &st->next;
	pthread_cond_broadcast(&p->acv);
	pthread_mutex_unlock(&p->amu);
	return 0;
}

/* Waits until every queued step is applied.  0 or the applier's error. */
static int apply_drain(struct ip *p)
{
	if (!p->astarted)
		return 0;
	pthread_mutex_lock(&p->amu);
	while (p->qhead || p->abusy)
		pthread_cond_wait(&p->acv, &p->amu);
	pthread_mutex_unlock(&p->amu);
	return apply_err(p);
}

/* Ends the applier; steps still queued are dropped, not applied. */
static void apply_stop(struct ip *p)
{
	if (!p->astarted)
		return;
	pthread_mutex_lock(&p->amu);
	p->aquit = true;
	pthread_cond_broadcast(&p->acv);
	pthread_mutex_unlock(&p->amu);
	pthread_join(p->applier, NULL);
	p->astarted = false;
}

static void *syncer(void *arg)
{
	struct ip *p = arg;

	p->sync_err = rw_sys_fdatasync(p->head_fd);
	return NULL;
}

/*
 * Waits for the head sync started at the end of a window.  0 or an
 * error naming head.
 */
static int sync_join(struct ip *p)
{
	if (!p->syncing)
		return 0;
	pthread_join(p->syncer, NULL);
	p->syncing = false;
	if (p->sync_err)
		return rw_err_set(p->sync_err, "cannot fdatasync '%s': %s",
				  p->head_path, rw_strerror(p->sync_err));
	return 0;
}

/*
 * rs_runs_fn: journals a step's runs and queues them for the applier,
 * which makes them durable and writes them into head while later steps
 * are read; the window's last step, behind a FLUSH record, is applied
 * here once the applier is done, and the window's records are then
 * indexed (see the design note).
 */
static int window(void *arg, const struct rs_run *runs, size_t n, bool last)
{
	struct ip *p = arg;
	int err;

	if (!n)
		return apply_drain(p); /* the rollback stops (rs_runs_fn) */
	if ((err = journals_ready(p)) || (err = commit_join(p)) ||
	    (err = apply_err(p)) || (err = reserve(p, runs, n)))
		return err;
	if (last && p->bn) {
		/* The window's earlier steps are indexed on a thread as soon
		 * as the applier made them durable, while the last step is
		 * journaled, applied and head synced. */
		if ((err = batch_handover(p, &p->ba)))
			return err;
		p->committing = pthread_create(&p->committer, NULL, committer,
					       p) == 0;
		if (!p->committing) {
			committer(p);
			if ((err = committer_join(p)))
				return err;
		}
	}
	for (size_t i = 0; i < n; i++)
		if ((err = journal(p, runs[i].data ? JR_WRITE : JR_ZERO,
				   runs[i].off, runs[i].len, runs[i].data)))
			return err;
	if (!last)
		return apply_queue(p, runs, n);
	/*
	 * The window's records are marked durable in the history as a
	 * server's rollback marks its own: a FLUSH record, covered by the
	 * window's last sync.
	 */
	if ((err = journal(p, JR_FLUSH, 0, 0, NULL)) ||
	    (err = jr_writer_flush(p->w)) || (err = batch_handover(p, &p->bl)))
		return err;
	/* Durable: into head alongside the applier's last steps (other
	 * blocks), which head's sync must follow. */
	if ((err = head_write(p, runs, n)) || (err = apply_drain(p)) ||
	    (err = sync_join(p)))
		return err;
	/* Head durable (fdatasync: the size never changes, and the extents
	 * it must write it writes); a later window syncs again. */
	p->syncing = pthread_create(&p->syncer, NULL, syncer, p) == 0;
	if (!p->syncing)
		syncer(p);
	return p->syncing ? 0 : sync_join(p);
}

/*
 * Opens every journal of the store on one clock (recovering their tails),
 * keeping the writer of disk `name` in *w.  Returns 0, 1 when a journal
 * holds records its disk's head or the index lack, or error.
 */
static int open_journals(struct ix *ix, const char *name, struct jr_clock *clk,
			 struct jr_writer **w)
{
	struct ix_disk *list = NULL;
	int n = ix_disk_list(ix, &list), err = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n && !err; i++) {
		struct jr_writer_opts o;
		struct jr_recovery rep = { 0 };
		struct jr_writer *jw = NULL;
		char jdir[4096];
		jr_writer_opts_default(&o);
		o.disk_id = list[i].id;
		o.backend = JR_BACKEND_SYNC;
		o.durable_seq = list[i].head_synced_seq;
		/* Each step is synced whatever its size: zeroes written
		 * ahead of the records would only add to every sync. */
		o.prezero_bytes = 0;
		/* Steps are written out by their sync (on the applier), not
		 * by the appends (on the reading thread). */
		o.batch_bytes = 256u << 20;
		if ((err = ix_disk_path(ix, list[i].name, "journal", jdir,
					sizeof(jdir))) ||
		    (err = jr_writer_open(&jw, jdir, &o, clk, &rep)))
			break;
		if (rep.last_seq != list[i].head_synced_seq ||
		    rep.last_seq != list[i].last_indexed_seq)
			err = 1;
		if (!err && !strcmp(list[i].name, name)) {
			*w = jw;
			continue;
		}
		int e = jr_writer_close(jw);
		if (!err)
			err = e;
	}
	free(list);
	return err;
}

static void *opener(void *arg)
{
	struct ip *p = arg;

	p->open_err = open_journals(p->ix, p->name, p->clk, &p->w);
	if (p->open_err < 0)
		snprintf(p->open_msg, sizeof(p->open_msg), "%s", rw_err_msg());
	return NULL;
}

/*
 * Waits for the journals (opener()) and moves the clock past the newest
 * seq the index holds — seqs are store-wide.  Returns 0, 1 when the
 * store is not clean, or error.
 */
static int journals_ready(struct ip *p)
{
	struct ix_read *rd = NULL;
	uint64_t lseq, lts;
	int err;

	if (!p->opening)
		return p->open_err;
	pthread_join(p->opener, NULL);
	p->opening = false;
	if (p->open_err < 0)
		return rw_err_set(p->open_err, "%s", p->open_msg);
	if (p->open_err)
		return p->open_err;
	if (!p->w)
		return p->open_err = rw_err_set(RW_ENOTFOUND, "disk '%s' has "
						"no journal", p->name);
	if ((err = ix_read_begin(p->ix, &rd)))
		return p->open_err = err;
	err = ix_latest(rd, &lseq, &lts);
	ix_read_end(rd);
	if (!err)
		jr_clock_observe(p->clk, lseq, lts);
	else if (err != RW_ENOTFOUND)
		return p->open_err = err;
	rw_err_clear();
	return 0;
}

int rs_rollback_store(const char *dir, const char *name,
		      const struct rw_when *when, struct rs_rollback_result *res)
{
	struct ip p = { .head_fd = -1, .prealloc_ok = true, .name = name,
			.amu = PTHREAD_MUTEX_INITIALIZER,
			.acv = PTHREAD_COND_INITIALIZER };
	uint64_t ts;
	int err;

	memset(res, 0, sizeof(*res));
	if ((err = ix_open(&p.ix, dir, IX_LOCK))) {
		p.ix = NULL;
		goto out;
	}
	if ((err = ix_disk_get(p.ix, name, &p.d)) ||
	    (err = jr_clock_new(&p.clk, 1, 0)))
		goto out;
	/*
	 * Recovering the journals (a header read per record of each last
	 * segment) needs nothing the rollback computes, and the rollback's
	 * reads need only the index: overlap them.  The first window joins
	 * (journals_ready) before anything is written, so a store found not
	 * clean is left untouched.
	 */
	p.opening = pthread_create(&p.opener, NULL, opener, &p) == 0;
	if (!p.opening)
		opener(&p);
	if ((err = rs_resolve(p.ix, &p.d, when, &res->seq, &ts)))
		goto out;
	res->before_seq = res->last_seq = p.d.last_indexed_seq;

	if ((err = ix_disk_path(p.ix, name, "head.img", p.head_path,
				sizeof(p.head_path))))
		goto out;
	p.head_fd = rw_sys_open(p.head_path, O_RDWR | O_CLOEXEC, 0);
	if (p.head_fd < 0) {
		err = rw_err_set(p.head_fd, "cannot open '%s': %s", p.head_path,
				 rw_strerror(p.head_fd));
		p.head_fd = -1;
		goto out;
	}
	if ((err = ix_batch_new(p.ix, &p.b)))
		goto out;
	if ((err = rs_rollback_runs(p.ix, &p.d, res->seq, p.d.last_indexed_seq,
				    window, &p, NULL, NULL, &res->st)) ||
	    (err = journals_ready(&p)) || !p.records)
		goto out;
	/* Head durable (the last window's sync), then head_synced_seq
	 * says so. */
	if ((err = sync_join(&p)))
		goto out;
	/* Head synced: the last step's records are indexed with
	 * head_synced_seq, in one transaction after the earlier steps'. */
	if ((err = committer_join(&p)) ||
	    (err = ix_batch_commit_head_synced(p.bl, p.d.id, p.last_seq)))
		goto out;
	res->last_seq = p.last_seq;
out:
	sync_join(&p);
	committer_join(&p);
	if (p.opening) {
		pthread_join(p.opener, NULL);
		p.opening = false;
	}
	apply_stop(&p);
	ix_batch_free(p.b);
	ix_batch_free(p.ba);
	ix_batch_free(p.bl);
	if (p.head_fd >= 0)
		close(p.head_fd);
	if (p.w) {
		int e = jr_writer_close(p.w);
		if (!err)
			err = e;
	}
	jr_clock_free(p.clk);
	ix_close(p.ix);
	return err;
}
