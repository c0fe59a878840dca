/*
 * conn.c — the transmission phase of one connection: a reader that
 * receives and validates requests, a few workers that execute them, and
 * replies that may go out of order.
 *
 * How: the connection's thread is the reader.  It receives into a
 * RBUF_SIZE buffer (one recv() brings many pipelined requests), and for
 * each request checks the magic (bad magic: hard disconnect, the stream
 * cannot be resynchronised), runs cap_req_check(), and for a WRITE has
 * the whole payload before anything is journaled — a client that
 * disconnects mid-payload leaves nothing behind.  A WRITE longer than the
 * advertised maximum is never allocated: up to DISCARD_MAX its payload is
 * read into a fixed sink and answered EINVAL (the stream stays in sync);
 * beyond that the connection is dropped.  Invalid requests are answered by
 * the reader at once.
 *
 * Group commit: small WRITEs (payload <= INLINE_MAX, left in the receive
 * buffer, no copy), FLUSH, TRIM and WRITE_ZEROES are collected into a
 * batch that the reader executes itself when the input runs dry (before
 * it would block), when the buffer must be compacted, or at MAX_BATCH:
 * cap_disk_write_batch() appends every record, does ONE journal write out,
 * applies head in seq order; the writes that need no fdatasync are
 * answered at once with one sendmsg(); then one FLUSH marker + fdatasync
 * answers every FLUSH and FUA write of the batch (a second sendmsg()).
 * While a batch (or an fdatasync) runs, the client keeps sending, so the
 * next batch is larger: the busier the disk, the more one syscall covers.
 * Answering the plain writes before the fdatasync lets the client send
 * its next writes and flushes during it (4 KiB random writes QD32 with a
 * flush after each: 16-20 -> 22-25 writes per fdatasync).
 * READs and large WRITEs go to a FIFO served by `workers` threads (each
 * with its own zstd context), where a worker likewise takes the run of
 * non-read requests at the front as one batch, up to BATCH_BYTES of
 * payload: 1 MiB, so that large writes spread over the workers and their
 * journal write outs, head writes and replies overlap (1 MiB sequential
 * writes QD8: 125-226 -> 315-445 MiB/s, interleaved, load 5-6; with
 * 8 MiB one worker took every queued write and ran them one by one).  Admission control
 * bounds what the queue holds: at most MAX_INFLIGHT requests and BUDGET
 * bytes of payload/read buffers, so memory is bounded by the connection
 * cap.  Replies are written under one mutex per connection.
 *
 * Measured (perf, 4 KiB random writes QD32): with one worker hop, one
 * write out and one sendmsg per request, the server spent ~20% of its time
 * in the scheduler (futex wake-ups, io-wq hops); executing small writes in
 * the reader took 1 conn from ~27k to ~45k IOPS on the same machine.
 *
 * Compression policy ("compression never limits guest throughput"):
 * compression costs CPU in the worker that handles the write, so it may
 * only use spare CPU.  Three measured signals decide, per write:
 *  1. speed: the process keeps an estimate of how fast compression runs
 *     (bytes / time of jr_writer_append with a zstd context, EWMA) and of
 *     how fast write bytes arrive (all connections, 100 ms windows, EWMA).
 *     A write is compressed only while arrival < speed / 16, i.e. while
 *     compressing everything that arrives takes less than 1/16 of the
 *     time.  Only a write that is alone in its batch with nothing queued
 *     behind it is ever compressed (see 2 and execute_batch) — a guest
 *     at queue depth 1, which waits for every reply — so this bounds
 *     what compression adds to such a guest's wall time to ~6%.  (With
 *     speed / 2, a guest writing 4 KiB at QD1 with a flush after every
 *     write waited 20-50 us more per write, 61 against 42 us, and made
 *     ~4.0-5.3k instead of ~5.9k writes/s.)  When the guest writes faster
 *     than that, compression is skipped and the writes go to the journal
 *     raw at full speed; 1 in 64 skipped writes is still compressed to
 *     keep the speed estimate fresh.
 *  2. backlog: a request of this connection waiting for a worker means
 *     the guest already waits on us; that write is not compressed.
 *  3. payoff: after 8 writes in a row that zstd could not shrink (the
 *     journal stored them raw), the connection skips compression for the
 *     next 256 writes, then probes again.
 * The server log reports, per disk at shutdown, how many writes were
 * stored compressed.  Measured here (2 cores, fio 1 MiB sequential writes,
 * QD 4 x 2): always compressing halved throughput (338 -> 181 MiB/s);
 * with this policy the journal runs at the uncompressed rate and still
 * compresses writes of a guest that writes at a moderate pace.
 *
 * Rejected alternatives: a thread per request (or an unbounded queue).
 * A pipelining client could make us allocate QD x 32 MiB at once; the
 * bounded worker pool plus admission control caps memory and threads per
 * connection.  Executing large writes in the reader too: a 1 MiB write
 * then serialises receive, journal and head on one core, where the
 * workers overlap them.
 */
#include "capture/cap-int.h"
#include "capture/nbd-protocol.h"
#include "common/rw.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_INFLIGHT 64
#define BUDGET (2ull * JR_MAX_WRITE)
#define DISCARD_MAX (4ull * JR_MAX_WRITE)
#define INCOMPRESSIBLE_STREAK 8
#define INCOMPRESSIBLE_BACKOFF 256
#define MAX_BATCH 64
#define BATCH_BYTES (1ull << 20)
#define RBUF_SIZE (512u << 10)
#define INLINE_MAX (128u << 10)

struct job {
	uint64_t handle;     /* raw wire bytes, echoed as they came */
	uint16_t flags, type;
	uint64_t off;
	uint32_t count;
	uint64_t cost;       /* bytes charged against BUDGET */
	void *data;          /* WRITE payload */
	struct job *next;
};

struct tx {
	struct cap_conn *c;
	struct cap_disk *d;
	pthread_mutex_t send_mu;
	pthread_mutex_t mu;
	pthread_cond_t work_cv, space_cv;
	struct job *head, *tail;
	unsigned waiting;    /* queued, not yet picked by a worker */
	unsigned inflight;   /* admitted and not yet answered */
	unsigned admit_waiting; /* reader waiting in admit() */
	uint64_t inflight_bytes;
	bool closing;
	atomic_bool broken;  /* a reply could not be sent */
	atomic_uint streak, backoff;
	atomic_uint_fast64_t requests;
};

/* Process-wide measurements for the compression policy (see above). */
static atomic_uint_fast64_t arrive_win_start;  /* rw_mono_ns() */
static atomic_uint_fast64_t arrive_win_bytes;
static atomic_uint_fast64_t arrive_bps;        /* EWMA, bytes per second */
static atomic_uint_fast64_t compress_bps;      /* EWMA; 0 = not measured */
static atomic_uint_fast64_t skipped;

static uint64_t ewma(uint64_t old, uint64_t sample)
{
	return old ? (old * 3 + sample) / 4 : sample;
}

static void note_arrival(uint32_t bytes)
{
	uint64_t now = rw_mono_ns();
	uint64_t start = atomic_load(&arrive_win_start);

	atomic_fetch_add(&arrive_win_bytes, bytes);
	if (now - start < 100000000ull)
		return;
	if (!atomic_compare_exchange_strong(&arrive_win_start, &start, now))
		return;
	uint64_t b = atomic_exchange(&arrive_win_bytes, 0);
	uint64_t dt = now - start;
	if (start == 0 || dt > 10ull * 1000000000ull) /* first / after idle */
		dt = 100000000ull;
	atomic_store(&arrive_bps, ewma(atomic_load(&arrive_bps),
				       (uint64_t)((double)b * 1e9 / (double)dt)));
}

/* Decides whether this write may spend CPU on compression. */
static bool compression_affordable(void)
{
	uint64_t speed = atomic_load(&compress_bps);
	uint64_t rate = atomic_load(&arrive_bps);

	if (!speed || rate < speed / 16)
		return true;
	return atomic_fetch_add(&skipped, 1) % 64 == 0; /* keep measuring */
}

static void note_compression(uint32_t bytes, uint64_t ns)
{
	if (!ns)
		ns = 1;
	atomic_store(&compress_bps, ewma(atomic_load(&compress_bps),
					 (uint64_t)((double)bytes * 1e9 / (double)ns)));
}

struct worker {
	struct tx *tx;
	struct jr_cctx *cc;
	pthread_t th;
	bool started;
};

/* ------------------------------------------------------------- replies */

static void send_locked(struct tx *tx, struct iovec *v, int n)
{
	pthread_mutex_lock(&tx->send_mu);
	if (!atomic_load(&tx->broken) && cap_send_iov(tx->c->fd, v, n))
		atomic_store(&tx->broken, true);
	pthread_mutex_unlock(&tx->send_mu);
}

static void reply_simple(struct tx *tx, uint64_t handle, uint32_t err,
			 const void *data, uint32_t len)
{
	struct nbd_simple_reply r = {
		.magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
		.error = htobe32(err),
		.handle = handle,
	};
	struct iovec v[2] = {
		{ .iov_base = &r, .iov_len = sizeof(r) },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	send_locked(tx, v, data && len ? 2 : 1);
}

static void reply_read_chunk(struct tx *tx, uint64_t handle, uint64_t off,
			     const void *data, uint32_t len)
{
	struct nbd_structured_reply h = {
		.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
		.flags = htobe16(NBD_REPLY_FLAG_DONE),
		.type = htobe16(NBD_REPLY_TYPE_OFFSET_DATA),
		.handle = handle,
		.length = htobe32(8 + len),
	};
	uint8_t offbe[8];
	rw_put_be64(offbe, off);
	struct iovec v[3] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = offbe, .iov_len = 8 },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	send_locked(tx, v, 3);
}

/* An error answer: a structured ERROR chunk with a message when
 * structured replies were negotiated, else a simple reply. */
static void reply_error(struct tx *tx, uint64_t handle, uint32_t err,
			const char *msg)
{
	if (!tx->c->structured) {
		reply_simple(tx, handle, err, NULL, 0);
		return;
	}
	size_t n = strlen(msg);
	if (n > 1024)
		n = 1024;
	struct nbd_structured_reply h = {
		.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
		.flags = htobe16(NBD_REPLY_FLAG_DONE),
		.type = htobe16(NBD_REPLY_TYPE_ERROR),
		.handle = handle,
		.length = htobe32((uint32_t)(6 + n)),
	};
	struct nbd_structured_reply_error e = {
		.error = htobe32(err),
		.len = htobe16((uint16_t)n),
	};
	struct iovec v[3] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = &e, .iov_len = sizeof(e) },
		{ .iov_base = (void *)msg, .iov_len = n },
	};
	send_locked(tx, v, n ? 3 : 2);
}

static const char *cmd_name(uint16_t t)
{
	switch (t) {
	case NBD_CMD_READ: return "read";
	case NBD_CMD_WRITE: return "write";
	case NBD_CMD_DISC: return "disconnect";
	case NBD_CMD_FLUSH: return "flush";
	case NBD_CMD_TRIM: return "trim";
	case NBD_CMD_WRITE_ZEROES: return "write-zeroes";
	case NBD_CMD_CACHE: return "cache";
	case NBD_CMD_BLOCK_STATUS: return "block-status";
	default: return "unknown command";
	}
}

/* Why cap_req_check() refused r, for the error chunk's message. */
static void why(const struct tx *tx, const struct cap_req *r, char *buf,
		size_t n)
{
	struct cap_req probe = { .type = r->type, .flags = r->flags };
	bool known = r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE ||
		     r->type == NBD_CMD_FLUSH || r->type == NBD_CMD_TRIM ||
		     r->type == NBD_CMD_WRITE_ZEROES;

	if (!known) {
		snprintf(buf, n, "unsupported command %u (%s)", r->type,
			 cmd_name(r->type));
		return;
	}
	probe.count = r->type == NBD_CMD_FLUSH ? 0 : 1;
	if (cap_req_check(&probe, UINT64_MAX, tx->c->structured, JR_MAX_WRITE))
		snprintf(buf, n, "invalid flags 0x%x for %s", r->flags,
			 cmd_name(r->type));
	else if (r->type == NBD_CMD_FLUSH)
		snprintf(buf, n, "flush with nonzero offset or length");
	else if (r->count == 0)
		snprintf(buf, n, "zero-length %s", cmd_name(r->type));
	else if (r->count > JR_MAX_WRITE &&
		 (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE))
		snprintf(buf, n, "%s of %u bytes exceeds the maximum of %u",
			 cmd_name(r->type), r->count, JR_MAX_WRITE);
	else
		snprintf(buf, n, "%s at offset %llu length %u is beyond the end "
			 "of disk '%s' (%llu bytes)", cmd_name(r->type),
			 (unsigned long long)r->offset, r->count,
			 tx->d->meta.name, (unsigned long long)tx->d->meta.size);
}

/* ------------------------------------------------------- block status */

/* Descriptors of one BLOCK_STATUS reply, coalesced as they come. */
#define BS_MAX_DESC 2048u

struct bs_ctx {
	uint8_t *p;          /* 4-byte context id, then (length, flags) pairs */
	uint32_t n;          /* descriptors so far */
	uint32_t last_flags;
	uint64_t left;       /* bytes of the request not described yet */
	bool one;            /* NBD_CMD_FLAG_REQ_ONE */
};

/* rs/cap extents callback: appends or extends a descriptor.  Lengths fit
 * in 32 bits: together they never pass the request's 32-bit length. */
static int bs_extent(void *arg, uint64_t off, uint64_t len, unsigned flags)
{
	struct bs_ctx *b = arg;

	(void)off;
	flags &= NBD_STATE_HOLE | NBD_STATE_ZERO;
	if (len > b->left)
		len = b->left;
	if (!len)
		return 1;
	if (b->n && flags == b->last_flags) {
		uint8_t *last = b->p + 4 + 8 * (size_t)(b->n - 1);
		rw_put_be32(last, (uint32_t)(rw_get_be32(last) + len));
	} else {
		if (b->n == BS_MAX_DESC || (b->one && b->n == 1))
			return 1; /* enough: the client asks again from there */
		uint8_t *e = b->p + 4 + 8 * (size_t)b->n;
		rw_put_be32(e, (uint32_t)len);
		rw_put_be32(e + 4, flags);
		b->last_flags = flags;
		b->n++;
	}
	b->left -= len;
	return 0;
}

/*
 * NBD_CMD_BLOCK_STATUS for the base:allocation context (read-only exports
 * with an extents callback; handshake.c): one BLOCK_STATUS chunk of at
 * most BS_MAX_DESC descriptors (one with REQ_ONE) covering a prefix of
 * the range, as the protocol allows.
 */
static void block_status(struct tx *tx, uint64_t handle,
			 const struct cap_req *r)
{
	struct cap_disk *d = tx->d;
	struct cap_conn *c = tx->c;
	char msg[256];

	if (!c->structured || !c->base_alloc || !d->ro || !d->ro->extents) {
		reply_error(tx, handle, NBD_EINVAL,
			    "block status needs the base:allocation metadata "
			    "context (NBD_OPT_SET_META_CONTEXT)");
		return;
	}
	if (r->flags & ~(uint16_t)(NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FUA)) {
		snprintf(msg, sizeof(msg), "invalid flags 0x%x for block-status",
			 r->flags);
		reply_error(tx, handle, NBD_EINVAL, msg);
		return;
	}
	if (!r->count || !rw_range_ok(r->offset, r->count, d->meta.size)) {
		snprintf(msg, sizeof(msg), "block-status at offset %llu length %u "
			 "is %s disk '%s' (%llu bytes)",
			 (unsigned long long)r->offset, r->count,
			 r->count ? "beyond the end of" : "empty on",
			 d->meta.name, (unsigned long long)d->meta.size);
		reply_error(tx, handle, NBD_EINVAL, msg);
		return;
	}
	struct bs_ctx b = {
		.p = malloc(4 + 8 * (size_t)BS_MAX_DESC),
		.left = r->count,
		.one = (r->flags & NBD_CMD_FLAG_REQ_ONE) != 0,
	};
	if (!b.p) {
		reply_error(tx, handle, NBD_ENOMEM, "out of memory");
		return;
	}
	rw_err_clear();
	int err = d->ro->extents(d->ro->arg, r->offset, r->count, bs_extent, &b);
	if (err < 0 || b.n == 0) {
		snprintf(msg, sizeof(msg), "block-status on disk '%s' failed: %s",
			 d->meta.name, err < 0 && *rw_err_msg() ? rw_err_msg()
			 : rw_strerror(err < 0 ? err : -EIO));
		reply_error(tx, handle, NBD_EIO, msg);
		free(b.p);
		return;
	}
	rw_put_be32(b.p, NBD_META_ID_BASE_ALLOC);
	struct nbd_structured_reply h = {
		.magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC),
		.flags = htobe16(NBD_REPLY_FLAG_DONE),
		.type = htobe16(NBD_REPLY_TYPE_BLOCK_STATUS),
		.handle = handle,
		.length = htobe32(4 + 8 * b.n),
	};
	struct iovec v[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = b.p, .iov_len = 4 + 8 * (size_t)b.n },
	};
	send_locked(tx, v, 2);
	free(b.p);
}

/* Logs a failure of the disk once per distinct error, naming the disk;
 * the detail comes from the journal (segment, seq) or the head file. */
static void log_disk_error(struct tx *tx, const char *what, int err,
			   const char *m)
{
	struct cap_disk *d = tx->d;

	if (atomic_exchange(&d->last_err, err) == err)
		return;
	rw_log(RW_LOG_ERROR, "disk '%s': %s failed: %s", d->meta.name, what,
	       m && *m ? m : rw_strerror(err));
}

/* ------------------------------------------------------------- workers */

/* Answers a failed request of the write path: a message naming the disk
 * and what failed (msg, else the error's name). */
static void reply_failure(struct tx *tx, const struct job *j, int err,
			  const char *detail)
{
	struct cap_disk *d = tx->d;
	char msg[256];

	if (err == -ENOTSUP) {
		reply_error(tx, j->handle, NBD_ENOTSUP,
			    "fast zero is not possible on this disk");
		return;
	}
	log_disk_error(tx, cmd_name(j->type), err, detail);
	snprintf(msg, sizeof(msg), "%s on disk '%s' failed: %s",
		 cmd_name(j->type), d->meta.name,
		 detail && *detail ? detail : rw_strerror(err));
	reply_error(tx, j->handle, cap_nbd_errno(err), msg);
}

static void execute_read(struct tx *tx, struct job *j)
{
	struct cap_disk *d = tx->d;
	char msg[256];
	void *buf = malloc(j->count ? j->count : 1);

	if (!buf) {
		reply_error(tx, j->handle, NBD_ENOMEM, "out of memory");
		return;
	}
	rw_err_clear();
	int err = cap_disk_read(d, buf, j->off, j->count);
	if (err) {
		log_disk_error(tx, "read", err, rw_err_msg());
		snprintf(msg, sizeof(msg), "read of disk '%s' failed: %s",
			 d->meta.name, rw_strerror(err));
		reply_error(tx, j->handle, cap_nbd_errno(err), msg);
	} else if (tx->c->structured) {
		reply_read_chunk(tx, j->handle, j->off, buf, j->count);
	} else {
		reply_simple(tx, j->handle, 0, buf, j->count);
	}
	free(buf);
}

/*
 * Executes a batch of WRITE / TRIM / WRITE_ZEROES / FLUSH requests taken
 * together (group commit, see the design note): one journal write out for
 * all the writes, whose successful replies go out in one sendmsg() at
 * once, then one fdatasync for all the flushes and FUA writes, answered
 * in a second sendmsg().
 * backlog: requests still queued behind the batch.
 */
static void execute_batch(struct worker *wk, struct job **v, size_t n,
			  unsigned backlog, bool kick)
{
	struct tx *tx = wk->tx;
	struct cap_disk *d = tx->d;
	struct cap_wreq q[MAX_BATCH];
	struct nbd_simple_reply ok[MAX_BATCH];
	size_t nw = 0, nok = 0;
	unsigned nflush = 0;
	int ferr = 0;
	char *fmsg = NULL;

	for (size_t i = 0; i < n; i++) {
		struct job *j = v[i];
		if (j->type == NBD_CMD_FLUSH) {
			nflush++;
			continue;
		}
		if (d->ro)
			continue;
		uint8_t type = j->type == NBD_CMD_WRITE ? JR_WRITE :
			       j->type == NBD_CMD_TRIM ? JR_TRIM : JR_ZERO;
		struct jr_cctx *cc = NULL;
		if (type == JR_WRITE && wk->cc && n == 1 && backlog == 0) {
			unsigned b = atomic_load(&tx->backoff);
			if (b)
				atomic_store(&tx->backoff, b - 1);
			else if (compression_affordable())
				cc = wk->cc;
		}
		/* FUA is honoured below, with the batch's one fdatasync. */
		q[nw++] = (struct cap_wreq){
			.type = type,
			.flags = (uint16_t)(j->flags & ~NBD_CMD_FLAG_FUA),
			.off = j->off, .len = j->count, .data = j->data, .cc = cc,
			.kick = kick,
		};
	}
	if (nw)
		cap_disk_write_batch(d, q, nw);
	for (size_t i = 0; i < nw; i++) {
		if (q[i].err || !q[i].cc)
			continue;
		note_compression(q[i].len, q[i].append_ns);
		if (q[i].compressed)
			atomic_store(&tx->streak, 0);
		else if (atomic_fetch_add(&tx->streak, 1) + 1 >=
			 INCOMPRESSIBLE_STREAK) {
			atomic_store(&tx->streak, 0);
			atomic_store(&tx->backoff, INCOMPRESSIBLE_BACKOFF);
		}
	}

	/*
	 * First answer everything that needs no fdatasync: the client can
	 * send its next requests while we sync, and they make the next
	 * batch (and the next group commit) larger.
	 */
	bool sync = nflush > 0;
	int wi[MAX_BATCH];    /* v[i] -> q index, -1: answered already */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct job *j = v[i];
		wi[i] = -1;
		if (j->type == NBD_CMD_FLUSH) {
			continue;
		} else if (d->ro) {
			char msg[256];
			snprintf(msg, sizeof(msg), "disk '%s' is a read-only "
				 "export of a point in time", d->meta.name);
			reply_error(tx, j->handle, NBD_EPERM, msg);
			continue;
		}
		struct cap_wreq *w = &q[k++];
		if (w->err) {
			reply_failure(tx, j, w->err, w->msg);
		} else if (j->flags & NBD_CMD_FLAG_FUA) {
			wi[i] = (int)(k - 1);
			sync = true;
		} else {
			ok[nok++] = (struct nbd_simple_reply){
				.magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
				.handle = j->handle,
			};
		}
	}
	if (nok) {
		struct iovec iv = { .iov_base = ok, .iov_len = nok * sizeof(ok[0]) };
		send_locked(tx, &iv, 1);
		nok = 0;
	}
	if (sync && !d->ro) {
		/* Every write of the batch is written out: one fdatasync
		 * answers its FUA writes, and with one marker its flushes. */
		rw_err_clear();
		ferr = nflush ? cap_disk_flush_n(d, nflush) : jr_writer_flush(d->w);
		if (ferr) {
			const char *m = rw_err_msg();
			fmsg = m && *m ? strdup(m) : NULL;
		}
	}
	for (size_t i = 0; sync && i < n; i++) {
		struct job *j = v[i];
		if (j->type != NBD_CMD_FLUSH && wi[i] < 0)
			continue;
		if (ferr) {
			reply_failure(tx, j, ferr, fmsg);
			continue;
		}
		ok[nok++] = (struct nbd_simple_reply){
			.magic = htobe32(NBD_SIMPLE_REPLY_MAGIC),
			.handle = j->handle,
		};
	}
	for (size_t i = 0; i < nw; i++)
		free(q[i].msg);
	free(fmsg);
	if (nok) {
		struct iovec iv = { .iov_base = ok, .iov_len = nok * sizeof(ok[0]) };
		send_locked(tx, &iv, 1);
	}
}

/*
 * Takes work from the queue (tx->mu held, queue not empty): a READ alone,
 * or the run of non-READ requests at the front, at most MAX_BATCH of them
 * and BATCH_BYTES of payload (a single larger one still goes alone).
 */
static size_t take_batch(struct tx *tx, struct job **v)
{
	size_t n = 0;
	uint64_t bytes = 0;

	while (tx->head && n < MAX_BATCH) {
		struct job *j = tx->head;
		bool rd = j->type == NBD_CMD_READ;
		if (n && (rd || bytes + j->cost > BATCH_BYTES))
			break;
		tx->head = j->next;
		if (!tx->head)
			tx->tail = NULL;
		tx->waiting--;
		v[n++] = j;
		bytes += j->cost;
		if (rd)
			break;
	}
	return n;
}

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	struct tx *tx = wk->tx;
	struct job *v[MAX_BATCH];

	pthread_setname_np(pthread_self(), "rw-worker");
	for (;;) {
		pthread_mutex_lock(&tx->mu);
		while (!tx->head && !tx->closing)
			pthread_cond_wait(&tx->work_cv, &tx->mu);
		if (!tx->head) {
			pthread_mutex_unlock(&tx->mu);
			break;
		}
		size_t n = take_batch(tx, v);
		unsigned backlog = tx->waiting;
		pthread_mutex_unlock(&tx->mu);

		rw_err_clear();
		if (v[0]->type == NBD_CMD_READ)
			execute_read(tx, v[0]);
		else
			execute_batch(wk, v, n, backlog, false);

		uint64_t cost = 0;
		for (size_t i = 0; i < n; i++)
			cost += v[i]->cost;
		pthread_mutex_lock(&tx->mu);
		tx->inflight -= (unsigned)n;
		tx->inflight_bytes -= cost;
		if (tx->admit_waiting)
			pthread_cond_broadcast(&tx->space_cv);
		pthread_mutex_unlock(&tx->mu);
		for (size_t i = 0; i < n; i++) {
			free(v[i]->data);
			free(v[i]);
		}
	}
	return NULL;
}

/* -------------------------------------------------------------- reader */

/* Waits until the connection may hold one more request and `cost` more
 * bytes (a request alone may always be admitted), then charges them. */
static void admit(struct tx *tx, uint64_t cost)
{
	pthread_mutex_lock(&tx->mu);
	while (tx->inflight >= MAX_INFLIGHT ||
	       (tx->inflight && tx->inflight_bytes + cost > BUDGET)) {
		tx->admit_waiting++;
		pthread_cond_wait(&tx->space_cv, &tx->mu);
		tx->admit_waiting--;
	}
	tx->inflight++;
	tx->inflight_bytes += cost;
	pthread_mutex_unlock(&tx->mu);
}

static void unadmit(struct tx *tx, uint64_t cost)
{
	pthread_mutex_lock(&tx->mu);
	tx->inflight--;
	tx->inflight_bytes -= cost;
	pthread_cond_broadcast(&tx->space_cv);
	pthread_mutex_unlock(&tx->mu);
}

static void enqueue(struct tx *tx, struct job *j)
{
	pthread_mutex_lock(&tx->mu);
	j->next = NULL;
	if (tx->tail)
		tx->tail->next = j;
	else
		tx->head = j;
	tx->tail = j;
	tx->waiting++;
	pthread_cond_signal(&tx->work_cv);
	pthread_mutex_unlock(&tx->mu);
}

/*
 * The reader's receive buffer and the batch it executes itself.  Small
 * WRITEs (payload <= INLINE_MAX), FLUSH, TRIM and WRITE_ZEROES are never
 * copied out of rb: their jobs point into it, and the batch runs (in the
 * reader's thread) before the reader blocks for more input, before rb is
 * compacted, and when it is full.  READs and large WRITEs go to the
 * workers as before.
 */
struct rd {
	struct tx *tx;
	struct worker wk;      /* the reader's own compression context */
	uint8_t *p;            /* RBUF_SIZE bytes */
	uint8_t *rdbuf;        /* INLINE_MAX bytes: cached reads */
	size_t start, end;     /* unparsed input: p[start, end) */
	struct job jobs[MAX_BATCH];
	struct job *v[MAX_BATCH];
	size_t n;
	bool lone_write;       /* the last batch was one plain WRITE */
	unsigned flush_hist;   /* last FLUSH_HIST lone writes: bit set when
	                        * the next batch began with a FLUSH */
};

#define FLUSH_HIST 4

static void rd_run(struct rd *rd)
{
	if (!rd->n)
		return;
	unsigned backlog = rd->end > rd->start; /* more input already here */
	const struct job *j0 = rd->v[0];
	if (rd->lone_write)
		rd->flush_hist = ((rd->flush_hist << 1) |
				  (j0->type == NBD_CMD_FLUSH)) &
				 ((1u << FLUSH_HIST) - 1);
	rd->lone_write = rd->n == 1 && !backlog && !rd->tx->d->ro &&
			 j0->type == NBD_CMD_WRITE &&
			 !(j0->flags & NBD_CMD_FLAG_FUA);
	bool expect = rd->lone_write &&
		      rd->flush_hist == (1u << FLUSH_HIST) - 1;
	execute_batch(&rd->wk, rd->v, rd->n, backlog, expect);
	rd->n = 0;
	/*
	 * Flush anticipation: a guest at queue depth 1 that flushed after
	 * each of its last FLUSH_HIST writes will flush after this one too.
	 * The write's record went to the device as soon as it was written
	 * out (cap_wreq.kick: head.img and the reply overlap that write);
	 * sync now, while the reply travels and the FLUSH comes back: the
	 * flush then finds its writes durable and only appends its marker.
	 * One miss stops it for FLUSH_HIST writes.  Measured, interleaved
	 * 4 KiB QD1 write+flush: sync after the reply +12-29%; starting the
	 * data write before head and the reply another +0-22% (median 7%).
	 */
	if (expect && rd->end == rd->start)
		(void)cap_disk_presync(rd->tx->d); /* sticky: the flush says */
}

/*
 * Makes need (<= RBUF_SIZE) bytes available at rd->p + rd->start.  Reads
 * without blocking while input is there; before it would block, runs the
 * pending batch (a request never waits for input that may not come).
 * Returns 0, -ECONNRESET at EOF, or -errno.
 */
static int rd_fill(struct rd *rd, size_t need)
{
	if (rd->start + need > RBUF_SIZE) {
		rd_run(rd); /* its jobs point into the bytes about to move */
		memmove(rd->p, rd->p + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	while (rd->end - rd->start < need) {
		ssize_t k = recv(rd->tx->c->fd, rd->p + rd->end,
				 RBUF_SIZE - rd->end, MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			rd_run(rd);
			k = recv(rd->tx->c->fd, rd->p + rd->end,
				 RBUF_SIZE - rd->end, 0);
		}
		if (k == 0)
			return -ECONNRESET;
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		rd->end += (size_t)k;
	}
	return 0;
}

/* Takes up to len bytes of payload out of rb into dst (NULL: dropped);
 * returns how many. */
static size_t rd_take(struct rd *rd, void *dst, size_t len)
{
	size_t k = rd->end - rd->start;

	if (k > len)
		k = len;
	if (dst && k)
		memcpy(dst, rd->p + rd->start, k);
	rd->start += k;
	return k;
}

static void rd_add(struct rd *rd, uint64_t handle, const struct cap_req *r,
		   void *data)
{
	struct job *j = &rd->jobs[rd->n];

	*j = (struct job){
		.handle = handle, .flags = r->flags, .type = r->type,
		.off = r->offset, .count = r->count, .data = data,
	};
	rd->v[rd->n++] = j;
	if (rd->n == MAX_BATCH)
		rd_run(rd);
}

/* Reads requests until EOF, DISC, a protocol violation or shutdown.
 * Returns 0 for a clean end, or an error (with detail) for a violation. */
static int read_loop(struct rd *rd)
{
	struct tx *tx = rd->tx;
	struct cap_conn *c = tx->c;
	struct cap_disk *d = tx->d;
	char msg[256];
	int err;

	for (;;) {
		err = rd_fill(rd, sizeof(struct nbd_request));
		if (err)
			return err == -ECONNRESET ? 0 : err;
		const uint8_t *h = rd->p + rd->start;
		uint32_t magic = rw_get_be32(h);
		if (magic != NBD_REQUEST_MAGIC)
			return rw_err_set(-EPROTO, "bad request magic 0x%08x",
					  magic);
		struct cap_req r = {
			.flags = rw_get_be16(h + 4),
			.type = rw_get_be16(h + 6),
			.offset = rw_get_be64(h + 16),
			.count = rw_get_be32(h + 24),
		};
		uint64_t handle;
		memcpy(&handle, h + 8, 8);
		atomic_fetch_add(&tx->requests, 1);

		if (r.type == NBD_CMD_DISC)
			return 0;
		if (r.type == NBD_CMD_BLOCK_STATUS) {
			rd->start += sizeof(struct nbd_request);
			block_status(tx, handle, &r);
			continue;
		}
		uint32_t e = cap_req_check(&r, d->meta.size, c->structured,
					   JR_MAX_WRITE);
		if (!e && !d->ro && r.type == NBD_CMD_WRITE &&
		    r.count <= INLINE_MAX) {
			/* Header and payload stay in rb until the batch ran.
			 * A client leaving mid-payload: nothing journaled. */
			err = rd_fill(rd, sizeof(struct nbd_request) + r.count);
			if (err == -ECONNRESET)
				return rw_err_set(-ECONNRESET, "client left in "
						  "the middle of a %u-byte write",
						  r.count);
			if (err)
				return err;
			void *data = rd->p + rd->start + sizeof(struct nbd_request);
			rd->start += sizeof(struct nbd_request) + r.count;
			note_arrival(r.count);
			rd_add(rd, handle, &r, data);
			continue;
		}
		rd->start += sizeof(struct nbd_request);
		if (!e && r.type == NBD_CMD_READ && r.count <= INLINE_MAX &&
		    !cap_disk_read_cached(d, rd->rdbuf, r.offset, r.count)) {
			/* Cached: answered here, no worker hop. */
			if (c->structured)
				reply_read_chunk(tx, handle, r.offset, rd->rdbuf,
						 r.count);
			else
				reply_simple(tx, handle, 0, rd->rdbuf, r.count);
			continue;
		}
		if (!e && !d->ro && (r.type == NBD_CMD_FLUSH ||
				     r.type == NBD_CMD_TRIM ||
				     r.type == NBD_CMD_WRITE_ZEROES)) {
			rd_add(rd, handle, &r, NULL);
			continue;
		}
		/* Everything else may block the reader: run the batch first. */
		rd_run(rd);
		if (r.type == NBD_CMD_WRITE && r.count > JR_MAX_WRITE) {
			if (r.count > DISCARD_MAX)
				return rw_err_set(-EMSGSIZE, "write of %u bytes "
						  "(limit %u); disconnecting",
						  r.count, JR_MAX_WRITE);
			size_t got = rd_take(rd, NULL, r.count);
			err = cap_recv_discard(c->fd, r.count - got, 0);
			if (err)
				return err == -ECONNRESET ? 0 : err;
			why(tx, &r, msg, sizeof(msg));
			reply_error(tx, handle, NBD_EINVAL, msg);
			continue;
		}
		uint64_t cost = !e && (r.type == NBD_CMD_READ ||
				       r.type == NBD_CMD_WRITE) ? r.count : 0;
		admit(tx, cost);
		void *data = NULL;
		if (r.type == NBD_CMD_WRITE) {
			/* Validated: count <= JR_MAX_WRITE. */
			data = malloc(r.count ? r.count : 1);
			if (!data) {
				size_t got = rd_take(rd, NULL, r.count);
				err = cap_recv_discard(c->fd, r.count - got, 0);
				unadmit(tx, cost);
				if (err)
					return err == -ECONNRESET ? 0 : err;
				reply_error(tx, handle, NBD_ENOMEM,
					    "out of memory");
				continue;
			}
			size_t got = rd_take(rd, data, r.count);
			err = cap_recv_full(c->fd, (uint8_t *)data + got,
					    r.count - got, 0);
			if (!err)
				note_arrival(r.count);
			if (err) {
				/* Mid-payload disconnect: nothing journaled. */
				free(data);
				unadmit(tx, cost);
				if (err == -ECONNRESET)
					return rw_err_set(-ECONNRESET, "client "
							  "left in the middle of "
							  "a %u-byte write",
							  r.count);
				return err;
			}
		}
		if (e) {
			free(data);
			unadmit(tx, cost);
			why(tx, &r, msg, sizeof(msg));
			reply_error(tx, handle, e, msg);
			continue;
		}
		struct job *j = calloc(1, sizeof(*j));
		if (!j) {
			free(data);
			unadmit(tx, cost);
			reply_error(tx, handle, NBD_ENOMEM, "out of memory");
			continue;
		}
		j->handle = handle;
		j->flags = r.flags;
		j->type = r.type;
		j->off = r.offset;
		j->count = r.count;
		j->cost = cost;
		j->data = data;
		enqueue(tx, j);
	}
}

int cap_conn_serve(struct cap_conn *c)
{
	const struct cap_server_opts *o = cap_server_get_opts(c->srv);
	unsigned nw = o->workers ? o->workers : 1;
	struct tx tx = { .c = c, .d = c->disk };
	struct worker *wk;
	int err = 0;

	wk = calloc(nw, sizeof(*wk));
	if (!wk)
		return -ENOMEM;
	pthread_mutex_init(&tx.send_mu, NULL);
	pthread_mutex_init(&tx.mu, NULL);
	pthread_cond_init(&tx.work_cv, NULL);
	pthread_cond_init(&tx.space_cv, NULL);
	atomic_init(&tx.broken, false);
	atomic_init(&tx.streak, 0);
	atomic_init(&tx.backoff, 0);
	atomic_init(&tx.requests, 0);

	unsigned started = 0;
	for (unsigned i = 0; i < nw; i++) {
		wk[i].tx = &tx;
		if (o->zstd_level > 0 && jr_cctx_new(&wk[i].cc, o->zstd_level))
			wk[i].cc = NULL; /* run uncompressed rather than fail */
		int e = pthread_create(&wk[i].th, NULL, worker_main, &wk[i]);
		if (e) {
			jr_cctx_free(wk[i].cc);
			wk[i].cc = NULL;
			break;
		}
		wk[i].started = true;
		started++;
	}
	struct rd *rd = calloc(1, sizeof(*rd));
	if (rd) {
		rd->p = malloc(RBUF_SIZE);
		rd->rdbuf = malloc(INLINE_MAX);
	}
	if (!started) {
		err = rw_err_set(-EAGAIN, "cannot start worker threads");
	} else if (!rd || !rd->p || !rd->rdbuf) {
		err = rw_err_set(-ENOMEM, "cannot allocate the receive buffer");
	} else {
		rd->tx = &tx;
		rd->wk.tx = &tx;
		if (o->zstd_level > 0 && jr_cctx_new(&rd->wk.cc, o->zstd_level))
			rd->wk.cc = NULL;
		err = read_loop(rd);
		/* Requests received in full before the end are executed. */
		rd_run(rd);
		jr_cctx_free(rd->wk.cc);
	}
	if (rd) {
		free(rd->p);
		free(rd->rdbuf);
	}
	free(rd);
	if (err) {
		const char *m = rw_err_msg();
		rw_log(RW_LOG_WARN, "%s: disk '%s': %s; closing the connection",
		       c->peer, tx.d->meta.name, m && *m ? m : rw_strerror(err));
	}

	pthread_mutex_lock(&tx.mu);
	tx.closing = true;
	pthread_cond_broadcast(&tx.work_cv);
	pthread_mutex_unlock(&tx.mu);
	for (unsigned i = 0; i < nw; i++) {
		if (wk[i].started)
			pthread_join(wk[i].th, NULL);
		jr_cctx_free(wk[i].cc);
	}
	free(wk);
	rw_log(RW_LOG_DEBUG, "%s: disk '%s': %llu requests", c->peer,
	       tx.d->meta.name, (unsigned long long)atomic_load(&tx.requests));
	pthread_cond_destroy(&tx.space_cv);
	pthread_cond_destroy(&tx.work_cv);
	pthread_mutex_destroy(&tx.mu);
	pthread_mutex_destroy(&tx.send_mu);
	return err;
}
