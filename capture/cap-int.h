/*
 * cap-int.h — capture's private structures, shared by its .c files only.
 *
 *   disk.c       one served disk: journal writer, head.img, the write path,
 *                range locks, head sync, recovery replay
 *   handshake.c  fixed newstyle option haggling
 *   conn.c       transmission phase: request reader, workers, replies
 *   wire.c       socket I/O with deadlines
 *   server.c     store open/recovery, listeners, accept loop,
 *                housekeeping thread, shutdown
 *   validate.c   request checks and error mapping (public in cap.h)
 */
#ifndef RW_CAPTURE_INT_H
#define RW_CAPTURE_INT_H

#include "capture/cap.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* One write in progress on a disk, from before its append until its bytes
 * are in head.  Lives on the worker's stack. */
struct cap_range {
	uint64_t off, end;      /* [off, end) */
	uint64_t seq_lb;        /* a lower bound of the seq it will get */
	struct cap_range *next;
};

/* A record written out, waiting for the indexer (disk.c -> server.c). */
struct cap_ixent {
	struct jr_rec rec;
	struct jr_loc loc;
};

/* Granule of head space reservation (disk.c). */
#define CAP_CHUNK_SHIFT 16

struct cap_disk {
	struct ix_disk meta;
	const struct cap_ro_export *ro;   /* read-only export: reads go here,
	                                   * no writer, no head */
	unsigned clients;                 /* connections using it (mu) */
	bool skip_unchanged;              /* see cap_server_opts */
	atomic_uint_fast64_t n_unchanged; /* writes skipped as unchanged */
	bool claimed;                     /* exclusive work running (mu) */
	char head_path[4096];
	char journal_dir[4096];
	int head_fd;
	struct jr_writer *w;
	struct jr_clock *clock;           /* the server's, shared */

	pthread_mutex_t mu;               /* guards ranges, range_waiters */
	pthread_cond_t cv;
	struct cap_range *ranges;
	unsigned range_waiters;           /* threads waiting on cv */
	struct cap_ixent *ixq;            /* (mu) records written out, not yet
	                                   * taken by the indexer */
	size_t ixq_n, ixq_cap;
	bool ixq_broken;                  /* (mu) a push failed (ENOMEM): the
	                                   * indexer reads the journal files */
	struct cap_ixent *ixw;            /* housekeeping only: taken, not yet
	                                   * committed (kept across a failed
	                                   * commit) */
	size_t ixw_n, ixw_cap;

	atomic_int head_failed;           /* head diverged: the error, refuse
	                                   * writes with it; 0 = fine */
	atomic_bool prealloc_ok;          /* fallocate(0) reserves head space */
	_Atomic uint64_t *reserved;       /* 1 bit per CAP_CHUNK of head known
	                                   * to have blocks; NULL = untracked */
	size_t nreserved;                 /* words in reserved */
	atomic_bool punch_ok;             /* fallocate punch/zero works */
	atomic_bool over_budget;          /* journal over its budget with the
	                                   * refuse policy: writes get ENOSPC */
	uint64_t budget;                  /* that budget (bytes), for messages;
	                                   * set before any thread starts */
	atomic_int last_err;              /* last journal error logged */
	uint64_t head_synced_seq;         /* housekeeping thread only */
	struct jr_reader *ixr;            /* indexer's reader, housekeeping only */
	uint64_t indexed_seq;             /* newest seq of this disk indexed */
	uint64_t pending_seq;             /* newest seq added to the open batch */
	uint64_t synced_ops;              /* housekeeping thread only */
	uint64_t hk_snap;                 /* housekeeping thread only */
	bool hk_current;                  /* housekeeping thread only */
	bool from_files;                  /* housekeeping thread only: index
	                                   * from the journal files (the
	                                   * queue broke) */

	atomic_uint_fast64_t n_reads, n_writes, n_zeroes, n_trims, n_flushes;
	atomic_uint_fast64_t n_presyncs;       /* cap_disk_presync calls */
	atomic_uint_fast64_t n_flushes_ahead;  /* flushes an earlier presync
	                                        * had covered already */
	atomic_bool presynced;                 /* a presync ran since the
	                                        * last flush */
	atomic_uint_fast64_t n_compressed, n_uncompressed;
	atomic_uint_fast64_t flush_marker_seq; /* seq of the newest FLUSH
	                                        * marker appended */
	/* metrics.c reads these; zero from calloc */
	atomic_uint_fast64_t write_bytes, zero_bytes, trim_bytes;
	atomic_uint_fast64_t err_journal, err_head;  /* failed requests */
	atomic_uint_fast64_t flush_ns, flush_hist[CAP_FLUSH_NBUCKETS + 1];
	uint64_t pending_n;               /* records in the open batch */
	atomic_uint_fast64_t n_indexed;   /* records indexed since open */
	atomic_uint_fast64_t ix_current_ns; /* rw_clock_ns when the index last
	                                     * held all that was written */
};

/* disk.c */
int cap_disk_open(struct cap_disk *d, struct ix *ix, const struct ix_disk *m,
		  struct jr_clock *clock, struct jr_recovery *rep);
/* Replays journal records with seq > head_synced_seq into head.img, then
 * fsyncs it.  Returns the number of records applied or an error. */
int cap_disk_replay(struct cap_disk *d);
int cap_disk_read(struct cap_disk *d, void *buf, uint64_t off, uint32_t len);
/*
 * Reads from head only what the page cache holds, never blocking on the
 * disk (preadv2 RWF_NOWAIT): 0 when all len bytes were read, -EAGAIN
 * otherwise (the caller then uses cap_disk_read from a worker).
 */
int cap_disk_read_cached(struct cap_disk *d, void *buf, uint64_t off,
			 uint32_t len);
/*
 * The write path for WRITE (data != NULL), WRITE_ZEROES and TRIM.
 * type: JR_WRITE / JR_ZERO / JR_TRIM; flags: NBD_CMD_FLAG_*; cc may be NULL.
 * *compressed (may be NULL) tells whether the record was stored zstd;
 * *append_ns (may be NULL) receives how long jr_writer_append took.
 */
int cap_disk_write(struct cap_disk *d, uint8_t type, uint64_t off,
		   uint32_t len, const void *data, uint16_t flags,
		   struct jr_cctx *cc, bool *compressed, uint64_t *append_ns);
/*
 * One request of a batch given to cap_disk_write_batch().  The caller
 * fills the inputs; the batch fills the outputs.
 */
struct cap_wreq {
	/* in */
	uint8_t type;                     /* JR_WRITE / JR_ZERO / JR_TRIM */
	uint16_t flags;                   /* NBD_CMD_FLAG_* */
	uint64_t off;
	uint32_t len;
	const void *data;                 /* len bytes for JR_WRITE */
	struct jr_cctx *cc;               /* may be NULL */
	bool kick;                        /* a flush is expected next: start
	                                   * the journal's data write at once
	                                   * (jr_writer_start_writeback) */
	/* out */
	int err;                          /* 0 or the request's error */
	char *msg;                        /* with err: what failed (malloc'ed,
	                                   * may be NULL; the caller frees) */
	bool compressed;                  /* stored zstd */
	uint64_t append_ns;               /* time spent in jr_writer_append */
	/* private to disk.c */
	struct jr_appended out;
	struct cap_range r;
	bool live, appended, skipped;
};
/*
 * The write path for n requests at once: every range is locked together
 * (all or none, so batches never deadlock), each record is appended in
 * array order, ONE jr_writer_write_out() covers the batch, head receives
 * the bytes in array order, then the locks go; one jr_writer_flush()
 * covers every FUA request of the batch.  Each request gets its own
 * result in v[i].err (and v[i].msg).  Overlapping requests within one
 * batch are applied in array order, which is their seq order.
 */
void cap_disk_write_batch(struct cap_disk *d, struct cap_wreq *v, size_t n);
/*
 * Answers nreq FLUSH requests with one FLUSH marker and one journal
 * fdatasync (group commit).  0 or the journal's error.
 */
int cap_disk_flush_n(struct cap_disk *d, unsigned nreq);
/*
 * Makes every record of d appended so far durable (one journal sync, no
 * FLUSH marker), ahead of a FLUSH the connection expects next: that
 * flush then only appends its marker (see flush_behind in disk.c).
 * Returns 0 or the journal's error (sticky: the next flush reports it).
 */
int cap_disk_presync(struct cap_disk *d);
int cap_disk_flush(struct cap_disk *d);
/* Sets d up as a read-only export (no journal, no head).  0 or error. */
int cap_disk_open_ro(struct cap_disk *d, const struct cap_ro_export *ro);
/* A connection starts using d: 0, or RW_EBUSY while d is claimed. */
int cap_disk_attach(struct cap_disk *d);
void cap_disk_detach(struct cap_disk *d);
/* The transmission flags for d (read-only exports advertise READ_ONLY). */
uint16_t cap_disk_eflags(const struct cap_disk *d, bool structured);
/* Highest seq such that every record of this disk <= it is in head. */
uint64_t cap_disk_head_watermark(struct cap_disk *d);
/* Flushes the journal up to the watermark, fsyncs head, records
 * head_synced_seq in the index.  0 or error. */
int cap_disk_sync_head(struct cap_disk *d, struct ix *ix);
/*
 * Syncs the journal segments sealed but not yet synced (lazy seal,
 * journal/writer.c) once there are CAP_LAZY_MAX of them or the oldest
 * waited CAP_LAZY_AGE: bounds what recovery after a crash scans and the
 * files the journal keeps open, without the guest's writes waiting.
 * Housekeeping thread only.  0 or the journal's (sticky) error.
 */
int cap_disk_sync_sealed(struct cap_disk *d);
/*
 * For the indexer (housekeeping thread): moves the records of d that are
 * safe to index from d->ixq to the end of d->ixw, in seq order, and
 * returns how many.  Safe means every record of d with a lower seq has
 * been written out and queued too: the write path queues a batch's
 * records in the same d->mu section that drops its ranges, and each
 * range carries a lower bound of the seqs it may still get, so records
 * below the lowest bound (or the clock, when nothing is in flight) can no
 * longer be overtaken.  *current: nothing else is queued or in flight.
 * Returns -1 when the queue is broken (a push failed for memory): the
 * caller then indexes d from the journal files.
 */
ssize_t cap_disk_ix_take(struct cap_disk *d, bool *current);
/* Closes writer and head (journal flushed first).  Returns first error. */
int cap_disk_close(struct cap_disk *d);

/*
 * Splits "HOST:PORT" or "[V6]:PORT" into host (NUL-terminated, at most
 * hostsz - 1 bytes) and *port (pointing into spec).  opt names the option
 * in messages ("--listen"); an empty host is accepted only with empty_ok.
 * Returns 0 or RW_EPARSE with a message.
 */
int cap_split_hostport(const char *spec, const char *opt, bool empty_ok,
		       char *host, size_t hostsz, const char **port);

/* wire.c — socket I/O.  deadline_ns is a rw_mono_ns() time, 0 = none.
 * recv_full returns 0, -ECONNRESET at EOF (even mid-message), -ETIMEDOUT
 * or -errno. */
int cap_recv_full(int fd, void *buf, size_t len, uint64_t deadline_ns);
int cap_recv_discard(int fd, uint64_t len, uint64_t deadline_ns);
int cap_send_iov(int fd, struct iovec *iov, int n);
int cap_send_full(int fd, const void *buf, size_t len);

struct cap_server;
struct cap_conn {
	struct cap_server *srv;
	int fd;
	char peer[192];
	uint64_t deadline_ns;             /* handshake deadline */
	struct cap_disk *disk;            /* chosen export */
	bool structured;
	bool no_zeroes;
	bool base_alloc;                  /* base:allocation selected (SET_META
	                                   * _CONTEXT) for meta_export */
	char meta_export[IX_NAME_MAX + 1];
	uint16_t eflags;

	pthread_t thread;
	atomic_bool done;                 /* thread finished; join me */
	struct cap_conn *next;            /* server's list */
};

/* handshake.c: 0 when an export was chosen (c->disk set), 1 when the
 * client ended the handshake cleanly, negative on error (logged by caller). */
int cap_handshake(struct cap_conn *c);
/* conn.c: serves transmission until the client leaves or the socket is
 * shut down.  Returns 0 or an error (already logged). */
int cap_conn_serve(struct cap_conn *c);

/* server.c: what connections need from the server. */
struct cap_disk *cap_server_find_disk(struct cap_server *s, const char *name);
size_t cap_server_ndisks(struct cap_server *s);
struct cap_disk *cap_server_disk(struct cap_server *s, size_t i);
const struct cap_server_opts *cap_server_get_opts(struct cap_server *s);
bool cap_server_stopping(struct cap_server *s);

/* metrics.c: the HTTP endpoint and threshold watcher of a server. */
struct cap_metrics;
int cap_metrics_start(struct cap_metrics **out, struct cap_server *s);
void cap_metrics_stop(struct cap_metrics *m);
/* Counts one flush of d that took ns (histogram). */
void cap_metrics_flush_observe(struct cap_disk *d, uint64_t ns);

#endif /* RW_CAPTURE_INT_H */
