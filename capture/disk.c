/*
 * disk.c — one served disk: the write path (journal, then head), reads,
 * flushes, the periodic head sync and the recovery replay into head.
 *
 * Write path, for a batch of requests (cap_disk_write_batch): lock every
 * range of the batch -> jr_writer_append each record -> ONE
 * jr_writer_write_out -> apply the same changes to head.img in seq order
 * -> queue the record headers for the indexer and release the ranges ->
 * (any FUA: one jr_writer_flush) -> the caller replies.  write_out before
 * the reply puts the records into the kernel's page cache, so kill -9 of
 * the server cannot lose an acknowledged write (DESIGN.md §5.2); batches
 * of concurrent callers also share write outs inside the journal.
 *
 * Range locks: overlapping writes wait for each other across append and
 * head write, so head receives them in seq order and always equals the
 * journal replayed in order.  Without this two in-flight writes to one
 * block could get seq 10 and 11 and reach head as 11 then 10, leaving head
 * different from every restore of the journal.  Non-overlapping writes
 * (the common case) never wait.  Each lock also carries a lower bound of
 * the seq its write will get, which gives the head watermark: every
 * record of this disk below min(bounds) — or below the clock when nothing
 * is in flight — is already in head.  That is what a head fsync may
 * record as head_synced_seq.
 *
 * Zero and trim punch a hole (FALLOC_FL_PUNCH_HOLE | KEEP_SIZE), or with
 * NO_HOLE allocate zeroes (FALLOC_FL_ZERO_RANGE); both read back as zeroes.
 * When the filesystem refuses fallocate we write zero buffers and stop
 * promising fast zeroes (FAST_ZERO is then refused up front with ENOTSUP,
 * before anything is journaled).
 *
 * A head write that fails after its record is journaled leaves head
 * behind the journal: the disk then refuses writes (EIO) and never
 * records a later head_synced_seq, so the next start replays the record.
 *
 * Rejected alternative: one mutex per disk around the whole write path.
 * Simple, but it serialises every guest write behind one pwrite and kills
 * the parallelism a queue depth of 32 brings.
 */
#include "capture/cap-int.h"
#include "capture/nbd-protocol.h"
#include "common/rw.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static const uint8_t zero_buf[1 << 20];

static void disk_init_common(struct cap_disk *d, bool writable);

int cap_disk_open(struct cap_disk *d, struct ix *ix, const struct ix_disk *m,
		  struct jr_clock *clock, struct jr_recovery *rep)
{
	struct jr_writer_opts wo;
	int err;

	d->meta = *m;
	d->ro = NULL;
	d->skip_unchanged = false;
	d->clients = 0;
	d->claimed = false;
	d->head_fd = -1;
	d->ixq = d->ixw = NULL;
	d->ixq_n = d->ixq_cap = d->ixw_n = d->ixw_cap = 0;
	d->ixq_broken = d->from_files = false;
	d->w = NULL;
	d->clock = clock;
	d->ranges = NULL;
	d->head_synced_seq = m->head_synced_seq;
	d->ixr = NULL;
	d->indexed_seq = 0;
	d->pending_seq = 0;
	d->synced_ops = 0;
	disk_init_common(d, true);
	d->nreserved = (size_t)(((m->size >> CAP_CHUNK_SHIFT) + 64) / 64);
	d->reserved = calloc(d->nreserved, sizeof(*d->reserved));
	if (!d->reserved)
		d->nreserved = 0; /* reserve on every write instead */

	err = ix_disk_path(ix, m->name, "head.img", d->head_path,
			   sizeof(d->head_path));
	if (!err)
		err = ix_disk_path(ix, m->name, "journal", d->journal_dir,
				   sizeof(d->journal_dir));
	if (err)
		return rw_err_set(err, "disk '%s': path too long", m->name);

	err = rw_sys_open(d->head_path, O_RDWR | O_CLOEXEC, 0);
	if (err < 0)
		return rw_err_set(err, "cannot open '%s': %s", d->head_path,
				  rw_strerror(err));
	d->head_fd = err;

	jr_writer_opts_default(&wo);
	wo.disk_id = m->id;
	/*
	 * Plain pwritev + fdatasync in the calling thread.  The journal's
	 * io_uring back end hands a buffered ext4 write to an io-wq kernel
	 * thread: one more context switch per write out, which on a busy
	 * 2-core host cost more than the syscall it saves (perf: io_wq_worker
	 * scheduling ~2.5% of the server, 4 KiB QD32 writes).
	 */
	wo.backend = JR_BACKEND_SYNC;
	/* head_synced_seq is recorded only after a journal fdatasync covered
	 * it: recovery need not re-read those records' payloads. */
	wo.durable_seq = m->head_synced_seq;
	err = jr_writer_open(&d->w, d->journal_dir, &wo, clock, rep);
	if (err) {
		d->w = NULL;
		close(d->head_fd);
		d->head_fd = -1;
		return err; /* the journal named the segment */
	}
	return 0;
}

/* ------------------------------------------------------------- head */

static void chunks_mark(struct cap_disk *d, uint64_t c0, uint64_t c1, bool on);

static int head_zero(struct cap_disk *d, uint64_t off, uint64_t len,
		     bool no_hole)
{
	if (atomic_load(&d->punch_ok)) {
		int mode = no_hole ? FALLOC_FL_ZERO_RANGE
				   : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		if (fallocate(d->head_fd, mode, (off_t)off, (off_t)len) == 0) {
			/* the punch freed blocks: forget those chunks (after
			 * the punch, so a concurrent reservation cannot
			 * leave a stale bit behind it) */
			if (!no_hole && len)
				chunks_mark(d, off >> CAP_CHUNK_SHIFT,
					    (off + len - 1) >> CAP_CHUNK_SHIFT,
					    false);
			return 0;
		}
		if (errno != EOPNOTSUPP && errno != ENOSYS)
			return rw_err_set(-errno, "cannot zero %llu+%llu of '%s': %s",
					  (unsigned long long)off,
					  (unsigned long long)len, d->head_path,
					  strerror(errno));
		/* ZERO_RANGE may be missing where PUNCH_HOLE works. */
		if (no_hole && fallocate(d->head_fd, FALLOC_FL_PUNCH_HOLE |
					 FALLOC_FL_KEEP_SIZE, (off_t)off,
					 (off_t)len) == 0) {
			chunks_mark(d, off >> CAP_CHUNK_SHIFT,
				    (off + len - 1) >> CAP_CHUNK_SHIFT, false);
			return 0;
		}
		atomic_store(&d->punch_ok, false);
	}
	while (len) {
		size_t n = len > sizeof(zero_buf) ? sizeof(zero_buf) : (size_t)len;
		int err = rw_sys_pwrite_full(d->head_fd, zero_buf, n, (off_t)off);
		if (err)
			return rw_err_set(err, "cannot write zeroes to '%s' at %llu: %s",
					  d->head_path, (unsigned long long)off,
					  rw_strerror(err));
		off += n;
		len -= n;
	}
	return 0;
}

static int head_apply(struct cap_disk *d, uint8_t type, uint64_t off,
		      uint32_t len, const void *data, bool no_hole)
{
	if (type == JR_WRITE) {
		int err = rw_sys_pwrite_full(d->head_fd, data, len, (off_t)off);
		if (err)
			return rw_err_set(err, "cannot write '%s' at %llu: %s",
					  d->head_path, (unsigned long long)off,
					  rw_strerror(err));
		return 0;
	}
	return head_zero(d, off, len, no_hole);
}

/*
 * Makes sure head has blocks for [off, off+len) before the record is
 * journaled, so a full filesystem fails the write cleanly (ENOSPC, nothing
 * journaled) instead of after the journal already holds it.  Space is
 * reserved in 64 KiB chunks remembered in a bitmap (1 bit per chunk: 2 KiB
 * per GiB of disk), so only the first write into a chunk pays for the
 * fallocate; zero and trim, which punch holes, forget their chunks.
 * Measured: reserving on every write cost a third of 4 KiB random-write
 * IOPS (fallocate takes the inode lock that buffered writes take too).
 */
static bool chunk_known(struct cap_disk *d, uint64_t c)
{
	return d->reserved && c / 64 < d->nreserved &&
	       (atomic_load(&d->reserved[c / 64]) >> (c % 64)) & 1;
}

static void chunks_mark(struct cap_disk *d, uint64_t c0, uint64_t c1, bool on)
{
	for (uint64_t c = c0; d->reserved && c <= c1 && c / 64 < d->nreserved; c++) {
		uint64_t bit = 1ull << (c % 64);
		if (on)
			atomic_fetch_or(&d->reserved[c / 64], bit);
		else
			atomic_fetch_and(&d->reserved[c / 64], ~bit);
	}
}

static int head_reserve(struct cap_disk *d, uint64_t off, uint32_t len)
{
	uint64_t c0 = off >> CAP_CHUNK_SHIFT;
	uint64_t c1 = (off + len - 1) >> CAP_CHUNK_SHIFT;
	uint64_t c;

	if (!atomic_load(&d->prealloc_ok))
		return 0;
	for (c = c0; c <= c1 && chunk_known(d, c); c++)
		;
	if (c > c1)
		return 0;
	uint64_t start = c << CAP_CHUNK_SHIFT;
	uint64_t end = (c1 + 1) << CAP_CHUNK_SHIFT;
	if (end > d->meta.size)
		end = d->meta.size;
	if (fallocate(d->head_fd, 0, (off_t)start, (off_t)(end - start)) == 0) {
		chunks_mark(d, c, c1, true);
		return 0;
	}
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		atomic_store(&d->prealloc_ok, false);
		return 0;
	}
	return rw_err_set(-errno, "cannot reserve %u bytes at %llu in '%s': %s",
			  len, (unsigned long long)off, d->head_path,
			  strerror(errno));
}

/* ------------------------------------------------------- range locks */

static bool overlaps(const struct cap_range *a, const struct cap_range *b)
{
	return a->off < b->end && b->off < a->end;
}

/*
 * Queues a record that is written out for the indexer (d->mu held).  On
 * allocation failure the queue is marked broken and emptied; the indexer
 * then reads the journal files instead, which cannot miss anything.
 */
static void ixq_push(struct cap_disk *d, uint8_t type, uint64_t off,
		     uint32_t len, const struct jr_appended *out)
{
	if (d->ixq_broken)
		return;
	if (d->ixq_n == d->ixq_cap) {
		size_t nc = d->ixq_cap ? 2 * d->ixq_cap : 1024;
		struct cap_ixent *nq = realloc(d->ixq, nc * sizeof(*nq));
		if (!nq) {
			d->ixq_broken = true;
			free(d->ixq);
			d->ixq = NULL;
			d->ixq_n = d->ixq_cap = 0;
			return;
		}
		d->ixq = nq;
		d->ixq_cap = nc;
	}
	d->ixq[d->ixq_n++] = (struct cap_ixent){
		.rec = {
			.type = type, .flags = out->flags, .seq = out->seq,
			.ts_ns = out->ts_ns, .disk_id = d->meta.id,
			.offset = off, .length = len,
			.stored_len = out->stored_len,
		},
		.loc = out->loc,
	};
}

/* The lowest seq a record of d still in flight may get (d->mu held). */
static uint64_t inflight_lb(struct cap_disk *d)
{
	uint64_t lb = jr_clock_peek(d->clock);

	for (struct cap_range *x = d->ranges; x; x = x->next)
		if (x->seq_lb < lb)
			lb = x->seq_lb;
	return lb;
}

static int ixent_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct cap_ixent *)a)->rec.seq;
	uint64_t y = ((const struct cap_ixent *)b)->rec.seq;

	return x < y ? -1 : x > y;
}

ssize_t cap_disk_ix_take(struct cap_disk *d, bool *current)
{
	ssize_t moved = 0;

	*current = false;
	pthread_mutex_lock(&d->mu);
	if (d->ixq_broken) {
		pthread_mutex_unlock(&d->mu);
		return -1;
	}
	uint64_t lb = inflight_lb(d);
	size_t need = d->ixw_n + d->ixq_n;
	if (need > d->ixw_cap) {
		struct cap_ixent *nw = realloc(d->ixw, need * sizeof(*nw));
		if (!nw) {
			pthread_mutex_unlock(&d->mu);
			return 0; /* try again at the next tick */
		}
		d->ixw = nw;
		d->ixw_cap = need;
	}
	size_t first = d->ixw_n, keep = 0;
	for (size_t i = 0; i < d->ixq_n; i++) {
		if (d->ixq[i].rec.seq < lb)
			d->ixw[d->ixw_n++] = d->ixq[i];
		else
			d->ixq[keep++] = d->ixq[i];
	}
	d->ixq_n = keep;
	*current = !keep && !d->ranges;
	pthread_mutex_unlock(&d->mu);
	moved = (ssize_t)(d->ixw_n - first);
	/* Everything taken before has a lower seq than anything taken now
	 * (it was below an earlier bound); sort only the new part. */
	if (moved > 1)
		qsort(d->ixw + first, (size_t)moved, sizeof(*d->ixw), ixent_cmp);
	return moved;
}

/*
 * Locks the ranges of every live request of v at once: waits until none
 * of them overlaps a range held by another thread, then inserts them all
 * under one d->mu.  Taking all or none means a thread never holds some
 * ranges while waiting for others, so two batches cannot deadlock.
 * Requests of the same batch may overlap each other: one thread applies
 * them in array (= seq) order.
 */
static void range_lock_many(struct cap_disk *d, struct cap_wreq *v, size_t n)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (size_t i = 0; i < n; i++) {
		if (!v[i].live)
			continue;
		if (v[i].r.off < lo)
			lo = v[i].r.off;
		if (v[i].r.end > hi)
			hi = v[i].r.end;
	}
	if (lo >= hi)
		return;
	pthread_mutex_lock(&d->mu);
	for (;;) {
		bool clash = false;
		for (struct cap_range *x = d->ranges; x && !clash; x = x->next) {
			if (x->end <= lo || hi <= x->off)
				continue;
			for (size_t i = 0; i < n && !clash; i++)
				clash = v[i].live && overlaps(x, &v[i].r);
		}
		if (!clash)
			break;
		d->range_waiters++;
		pthread_cond_wait(&d->cv, &d->mu);
		d->range_waiters--;
	}
	/* Under d->mu, so a watermark taken now sees either these ranges or
	 * a clock value below every seq they can get. */
	uint64_t lb = jr_clock_peek(d->clock);
	for (size_t i = 0; i < n; i++) {
		if (!v[i].live)
			continue;
		v[i].r.seq_lb = lb;
		v[i].r.next = d->ranges;
		d->ranges = &v[i].r;
	}
	pthread_mutex_unlock(&d->mu);
}

/* Releases every range of v that range_lock_many() inserted and queues
 * the appended records for the indexer. */
static void range_unlock_many(struct cap_disk *d, struct cap_wreq *v, size_t n)
{
	uintptr_t first = (uintptr_t)v, last = (uintptr_t)(v + n);

	pthread_mutex_lock(&d->mu);
	for (size_t i = 0; i < n; i++)
		if (v[i].appended)
			ixq_push(d, v[i].type, v[i].off, v[i].len, &v[i].out);
	struct cap_range **pp = &d->ranges;
	while (*pp) {
		uintptr_t x = (uintptr_t)*pp;
		if (x >= first && x < last)
			*pp = (*pp)->next;
		else
			pp = &(*pp)->next;
	}
	if (d->range_waiters)
		pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

uint64_t cap_disk_head_watermark(struct cap_disk *d)
{
	pthread_mutex_lock(&d->mu);
	uint64_t lb = jr_clock_peek(d->clock);
	for (struct cap_range *x = d->ranges; x; x = x->next)
		if (x->seq_lb < lb)
			lb = x->seq_lb;
	pthread_mutex_unlock(&d->mu);
	return lb ? lb - 1 : 0;
}

/* ------------------------------------------------------------ I/O path */

/* The state every disk starts with: counters, flags, lock. */
static void disk_init_common(struct cap_disk *d, bool writable)
{
	atomic_init(&d->head_failed, 0);
	atomic_init(&d->prealloc_ok, writable);
	atomic_init(&d->punch_ok, writable);
	atomic_init(&d->last_err, 0);
	atomic_init(&d->n_reads, 0);
	atomic_init(&d->n_writes, 0);
	atomic_init(&d->n_zeroes, 0);
	atomic_init(&d->n_trims, 0);
	atomic_init(&d->n_flushes, 0);
	atomic_init(&d->n_presyncs, 0);
	atomic_init(&d->n_flushes_ahead, 0);
	atomic_init(&d->presynced, false);
	atomic_init(&d->n_compressed, 0);
	atomic_init(&d->n_uncompressed, 0);
	atomic_init(&d->n_unchanged, 0);
	atomic_init(&d->flush_marker_seq, 0);
	d->range_waiters = 0;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
}

int cap_disk_open_ro(struct cap_disk *d, const struct cap_ro_export *ro)
{
	memset(d, 0, sizeof(*d));
	d->ro = ro;
	d->head_fd = -1;
	snprintf(d->meta.name, sizeof(d->meta.name), "%s", ro->name);
	d->meta.size = ro->size;
	d->meta.block_size = ro->block_size;
	disk_init_common(d, false);
	return 0;
}

int cap_disk_attach(struct cap_disk *d)
{
	int err = 0;

	pthread_mutex_lock(&d->mu);
	if (d->claimed)
		err = rw_err_set(RW_EBUSY, "disk '%s' is being rolled back; "
				 "try again when that is done", d->meta.name);
	else
		d->clients++;
	pthread_mutex_unlock(&d->mu);
	return err;
}

void cap_disk_detach(struct cap_disk *d)
{
	pthread_mutex_lock(&d->mu);
	if (d->clients)
		d->clients--;
	pthread_mutex_unlock(&d->mu);
}

uint16_t cap_disk_eflags(const struct cap_disk *d, bool structured)
{
	if (!d->ro)
		return cap_export_flags(structured);
	/* Read-only: writes are refused with EPERM; flush is harmless. */
	return NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH |
	       NBD_FLAG_CAN_MULTI_CONN | (structured ? NBD_FLAG_SEND_DF : 0);
}

int cap_disk_read(struct cap_disk *d, void *buf, uint64_t off, uint32_t len)
{
	if (d->ro) {
		atomic_fetch_add(&d->n_reads, 1);
		return d->ro->read(d->ro->arg, buf, off, len);
	}
	ssize_t n = rw_sys_pread_full(d->head_fd, buf, len, (off_t)off);

	atomic_fetch_add(&d->n_reads, 1);
	if (n < 0)
		return rw_err_set((int)n, "cannot read '%s' at %llu: %s",
				  d->head_path, (unsigned long long)off,
				  rw_strerror((int)n));
	if ((size_t)n < len) /* head shorter than the disk: reads as zeroes */
		memset((uint8_t *)buf + n, 0, len - (size_t)n);
	return 0;
}

int cap_disk_read_cached(struct cap_disk *d, void *buf, uint64_t off,
			 uint32_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };

	if (d->ro)
		return -EAGAIN;
	ssize_t n = preadv2(d->head_fd, &v, 1, (off_t)off, RWF_NOWAIT);
	if (n < 0 || (size_t)n != len)
		return -EAGAIN; /* not all cached, past head's end, or an
				 * error: cap_disk_read() will tell */
	atomic_fetch_add(&d->n_reads, 1);
	return 0;
}

/* True when head already holds exactly data at [off, off+len). */
static bool unchanged(struct cap_disk *d, uint64_t off, uint32_t len,
		      const void *data)
{
	uint8_t *cur = malloc(len);
	bool same = false;

	if (cur) {
		ssize_t n = rw_sys_pread_full(d->head_fd, cur, len, (off_t)off);
		if (n >= 0) {
			/* Past head's end reads as zeroes. */
			if ((size_t)n < len)
				memset(cur + n, 0, len - (size_t)n);
			same = !memcmp(cur, data, len);
		}
		free(cur);
	}
	return same;
}

/* Records a failure of request q: its error and, for the reply, what
 * failed (rw_err_msg() of this thread, set by whoever failed). */
static void wreq_fail(struct cap_wreq *q, int err)
{
	const char *m = rw_err_msg();

	q->err = err;
	free(q->msg);
	q->msg = m && *m ? strdup(m) : NULL;
	q->live = false;
}

void cap_disk_write_batch(struct cap_disk *d, struct cap_wreq *v, size_t n)
{
	int herr = atomic_load(&d->head_failed);
	size_t nappended = 0;
	bool fua = false;
	int err;

	for (size_t i = 0; i < n; i++) {
		struct cap_wreq *q = &v[i];
		q->err = 0;
		q->msg = NULL;
		q->compressed = false;
		q->append_ns = 0;
		q->appended = q->skipped = false;
		q->live = true;
		q->r = (struct cap_range){ .off = q->off, .end = q->off + q->len };
		if (herr) {
			wreq_fail(q, rw_err_set(herr, "disk '%s': writing head.img "
						"failed earlier (%s); restart the "
						"server to recover", d->meta.name,
						rw_strerror(herr)));
		} else if (atomic_load(&d->over_budget)) {
			/* --over-budget refuse: history is kept, new writes wait
			 * for a compaction to free journal space. */
			wreq_fail(q, rw_err_set(-ENOSPC, "disk '%s': the journal is over "
						"its budget of %llu bytes (--over-budget "
						"refuse); compact to free space",
						d->meta.name,
						(unsigned long long)d->budget));
		} else if (q->type == JR_ZERO &&
			   (q->flags & NBD_CMD_FLAG_FAST_ZERO) &&
			   !atomic_load(&d->punch_ok)) {
			/* would be slow: refuse before journaling */
			q->err = -ENOTSUP;
			q->live = false;
		}
	}
	range_lock_many(d, v, n);

	/* Append every record; the journal gives them seqs in array order. */
	for (size_t i = 0; i < n; i++) {
		struct cap_wreq *q = &v[i];
		if (!q->live)
			continue;
		if (q->type == JR_WRITE && d->skip_unchanged &&
		    unchanged(d, q->off, q->len, q->data)) {
			/*
			 * Head equals the journal replayed in order, so these
			 * bytes are already what every point from now on
			 * holds: a record would change no restorable point.
			 * (FUA below still makes the earlier records that
			 * wrote them durable.)
			 */
			q->skipped = true;
			continue;
		}
		if (q->type == JR_WRITE) {
			rw_err_clear();
			err = head_reserve(d, q->off, q->len);
			if (err) {
				wreq_fail(q, err);
				continue;
			}
		}
		struct jr_append a = {
			.type = q->type, .offset = q->off, .length = q->len,
			.data = q->type == JR_WRITE ? q->data : NULL,
		};
		struct jr_appended out;
		uint64_t t0 = rw_mono_ns();
		rw_err_clear();
		/* q->data outlives the batch's write out below. */
		err = jr_writer_append_borrowed(d->w, &a, q->cc, &out);
		q->out = out;
		q->append_ns = rw_mono_ns() - t0;
		if (err) {
			atomic_fetch_add(&d->err_journal, 1);
			wreq_fail(q, err);
			continue;
		}
		q->compressed = (out.flags & JR_F_ZSTD) != 0;
		q->appended = true;
		nappended++;
	}
	/* One write out for the whole batch: no reply before its record is
	 * in the file (kill -9 loses no acknowledged write). */
	if (nappended) {
		rw_err_clear();
		err = jr_writer_write_out(d->w);
		for (size_t i = 0; err && i < n; i++) {
			if (!v[i].appended)
				continue;
			atomic_fetch_add(&d->err_journal, 1);
			v[i].appended = false;
			wreq_fail(&v[i], err);
		}
		/* The device writes the record while head and the reply
		 * take their turn (flush anticipation, conn.c). */
		if (!err && v[0].kick)
			(void)jr_writer_start_writeback(d->w);
	}
	/* Head, in seq order.  After a failure head has diverged: the rest
	 * of the batch fails with the same error (head_failed is sticky). */
	herr = 0;
	for (size_t i = 0; i < n; i++) {
		struct cap_wreq *q = &v[i];
		if (!q->appended)
			continue;
		if (!herr) {
			rw_err_clear();
			herr = head_apply(d, q->type, q->off, q->len, q->data,
					  (q->flags & NBD_CMD_FLAG_NO_HOLE) != 0);
			if (herr) {
				atomic_store(&d->head_failed, herr);
				atomic_fetch_add(&d->err_head, 1);
				wreq_fail(q, herr);
				continue;
			}
		} else {
			atomic_fetch_add(&d->err_head, 1);
			wreq_fail(q, rw_err_set(herr, "disk '%s': writing "
						"head.img failed (%s)",
						d->meta.name, rw_strerror(herr)));
			continue;
		}
	}
	range_unlock_many(d, v, n);

	for (size_t i = 0; i < n; i++) {
		struct cap_wreq *q = &v[i];
		if (q->err || !q->live)
			continue;
		if (q->type == JR_WRITE) {
			atomic_fetch_add(&d->n_writes, 1);
			atomic_fetch_add(&d->write_bytes, q->len);
			if (q->skipped)
				atomic_fetch_add(&d->n_unchanged, 1);
			else
				atomic_fetch_add(q->compressed ? &d->n_compressed :
						 &d->n_uncompressed, 1);
		} else {
			bool z = q->type == JR_ZERO;
			atomic_fetch_add(z ? &d->n_zeroes : &d->n_trims, 1);
			atomic_fetch_add(z ? &d->zero_bytes : &d->trim_bytes,
					 q->len);
		}
		if (q->flags & NBD_CMD_FLAG_FUA)
			fua = true;
	}
	if (!fua)
		return;
	/* One fdatasync makes every FUA request of the batch durable. */
	rw_err_clear();
	err = jr_writer_flush(d->w);
	for (size_t i = 0; err && i < n; i++)
		if (!v[i].err && v[i].live && (v[i].flags & NBD_CMD_FLAG_FUA))
			wreq_fail(&v[i], err);
}

int cap_disk_write(struct cap_disk *d, uint8_t type, uint64_t off,
		   uint32_t len, const void *data, uint16_t flags,
		   struct jr_cctx *cc, bool *compressed, uint64_t *append_ns)
{
	struct cap_wreq q = {
		.type = type, .flags = flags, .off = off, .len = len,
		.data = data, .cc = cc,
	};

	cap_disk_write_batch(d, &q, 1);
	if (compressed)
		*compressed = q.compressed;
	if (append_ns)
		*append_ns = q.append_ns;
	if (q.err && q.msg)
		rw_err_set(q.err, "%s", q.msg); /* for the caller's message */
	free(q.msg);
	return q.err;
}

/*
 * A guest flush appends a FLUSH marker (journal/jr.h) that the same
 * fdatasync makes durable, so the journal shows where the guest asked for
 * durability: the points worth rewinding to.  No marker when nothing was
 * appended since the last one, so an idle guest's flushes cost nothing.
 */
int cap_disk_flush(struct cap_disk *d)
{
	return cap_disk_flush_n(d, 1);
}

/*
 * Answers a flush whose marker was just appended: every record up to
 * `before` (the newest one appended before the marker) must be durable.
 * When an earlier sync covered them already (cap_disk_presync), the
 * marker is only written out and becomes durable with the next sync: a
 * lost marker loses no data, only the note that the guest flushed there
 * (FORMAT.md, FLUSH).  Otherwise one fdatasync covers both.
 */
static int flush_behind(struct cap_disk *d, uint64_t before)
{
	struct jr_writer_stats st;

	/* Counted as anticipated only when a presync did the work: a flush
	 * with nothing new to cover (right after open, say) is not. */
	bool pre = atomic_exchange(&d->presynced, false);

	jr_writer_stats(d->w, &st);
	if (!st.error && st.durable_seq >= before) {
		if (pre)
			atomic_fetch_add(&d->n_flushes_ahead, 1);
		return jr_writer_write_out(d->w);
	}
	return jr_writer_flush(d->w);
}

int cap_disk_presync(struct cap_disk *d)
{
	atomic_fetch_add(&d->n_presyncs, 1);
	int err = jr_writer_flush(d->w);
	atomic_store(&d->presynced, true);
	return err;
}

int cap_disk_flush_n(struct cap_disk *d, unsigned nreq)
{
	struct jr_writer_stats st;

	uint64_t t0 = rw_mono_ns();
	int err = 0;

	atomic_fetch_add(&d->n_flushes, nreq);
	jr_writer_stats(d->w, &st);
	if (st.last_seq && st.last_seq != atomic_load(&d->flush_marker_seq)) {
		struct jr_append a = { JR_FLUSH, 0, 0, NULL };
		struct jr_appended out;
		/* An empty range overlaps nothing but holds the indexer's
		 * bound below the marker's seq until it is queued. */
		struct cap_range r = { .off = 0, .end = 0 };
		pthread_mutex_lock(&d->mu);
		r.seq_lb = jr_clock_peek(d->clock);
		r.next = d->ranges;
		d->ranges = &r;
		pthread_mutex_unlock(&d->mu);
		err = jr_writer_append(d->w, &a, NULL, &out);
		if (!err) {
			atomic_store(&d->flush_marker_seq, out.seq);
			err = flush_behind(d, st.last_seq);
		}
		pthread_mutex_lock(&d->mu);
		struct cap_range **pp = &d->ranges;
		while (*pp && *pp != &r)
			pp = &(*pp)->next;
		if (*pp)
			*pp = r.next;
		if (!err)
			ixq_push(d, JR_FLUSH, 0, 0, &out);
		pthread_mutex_unlock(&d->mu);
	} else {
		err = jr_writer_flush(d->w);
	}
	if (err)
		atomic_fetch_add(&d->err_journal, 1);
	uint64_t dt = rw_mono_ns() - t0;
	for (unsigned i = 0; i < nreq; i++)
		cap_metrics_flush_observe(d, dt);
	return err;
}

int cap_disk_sync_head(struct cap_disk *d, struct ix *ix)
{
	uint64_t ops = atomic_load(&d->n_writes) + atomic_load(&d->n_zeroes) +
		       atomic_load(&d->n_trims);
	uint64_t mark = cap_disk_head_watermark(d);
	int err;

	if (atomic_load(&d->head_failed))
		return 0; /* keep head_synced_seq where it is: replay fixes it */
	if (mark <= d->head_synced_seq || ops == d->synced_ops)
		return 0;
	/* The journal must be durable up to mark before head may claim it:
	 * otherwise a power loss could leave head ahead of the journal.
	 * While sealed segments wait for their sync (a guest writing fast
	 * without flushing) a flush here would sync all of them and hold up
	 * every append that rolls a segment meanwhile (seconds, at 1 GiB/s):
	 * head then claims only what is durable already, and the rest
	 * waits for the next round. */
	struct jr_writer_stats st;
	bool partial = false;
	jr_writer_stats(d->w, &st);
	if (st.sealed_waiting) {
		if (st.durable_seq < mark) {
			mark = st.durable_seq;
			partial = true; /* the next round claims the rest */
		}
		if (mark <= d->head_synced_seq)
			return 0;
	} else if ((err = jr_writer_flush(d->w))) {
		return err;
	}
	err = rw_sys_fsync(d->head_fd);
	if (err)
		return rw_err_set(err, "cannot fsync '%s': %s", d->head_path,
				  rw_strerror(err));
	err = ix_disk_set_head_synced(ix, d->meta.id, mark);
	if (err)
		return err;
	d->head_synced_seq = mark;
	if (!partial)
		d->synced_ops = ops;
	return 0;
}

/* ------------------------------------------------------ sealed segments */

/*
 * A segment is sealed without a sync (journal/writer.c, "lazy seal"), so
 * 64 KiB and 1 MiB guest writes run at the speed of the page cache, not
 * of the disk, as with the peers: a guest that never flushes never
 * waits for an fdatasync.  What stays unsynced is bounded here, off the
 * write path: 16 sealed segments (1 GiB at the default size) or 10 s.
 * (This replaces a writeback thread that started the kernel's writeback
 * of every MiB and fdatasynced every 16 MiB so that a seal under the
 * journal's lock had less to wait for: it made the journal run at disk
 * speed.)
 */
#define CAP_LAZY_MAX 16
#define CAP_LAZY_AGE (10ull * 1000000000ull)

int cap_disk_sync_sealed(struct cap_disk *d)
{
	if (d->ro || !d->w)
		return 0;
	return jr_writer_sync_sealed(d->w, CAP_LAZY_MAX, CAP_LAZY_AGE);
}

/* -------------------------------------------------------------- replay */

int cap_disk_replay(struct cap_disk *d)
{
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	int err, n = 0;

	err = jr_reader_open(&r, d->journal_dir, 0);
	if (err)
		return err;
	err = jr_reader_seek(r, d->head_synced_seq + 1);
	while (!err) {
		err = jr_reader_next(r, &rec, &loc, &payload);
		if (err <= 0)
			break;
		err = 0;
		if (rec.seq <= d->head_synced_seq)
			continue;
		if (rec.type == JR_WRITE && !payload) {
			err = rw_err_set(RW_ECORRUPT, "disk '%s': seq %llu has no "
					 "payload", d->meta.name,
					 (unsigned long long)rec.seq);
			break;
		}
		if (!rw_range_ok(rec.offset, rec.length, d->meta.size)) {
			err = rw_err_set(RW_ECORRUPT, "disk '%s': seq %llu lies "
					 "past the end of the disk", d->meta.name,
					 (unsigned long long)rec.seq);
			break;
		}
		if (rec.type != JR_WRITE && rec.type != JR_ZERO &&
		    rec.type != JR_TRIM)
			continue;
		err = head_apply(d, rec.type, rec.offset, rec.length, payload,
				 false);
		n++;
	}
	jr_reader_close(r);
	if (err < 0)
		return err;
	if (!n)
		return 0;
	err = rw_sys_fsync(d->head_fd);
	if (err)
		return rw_err_set(err, "cannot fsync '%s': %s", d->head_path,
				  rw_strerror(err));
	return n;
}

int cap_disk_close(struct cap_disk *d)
{
	int err = 0, e;

	jr_reader_close(d->ixr);
	d->ixr = NULL;
	if (d->w) {
		e = jr_writer_close(d->w);
		if (e && !err)
			err = e;
		d->w = NULL;
	}
	if (d->head_fd >= 0) {
		if (close(d->head_fd) && !err)
			err = -errno;
		d->head_fd = -1;
	}
	free(d->ixq);
	free(d->ixw);
	d->ixq = d->ixw = NULL;
	d->ixq_n = d->ixw_n = 0;
	free(d->reserved);
	d->reserved = NULL;
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	return err;
}
