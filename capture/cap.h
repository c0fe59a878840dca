/*
 * cap.h — capture: the NBD server that journals every guest write.
 *
 * `rewind serve` is one struct cap_server: it opens a store exclusively,
 * recovers it (journal tails, index, head.img), then serves every disk of
 * the store as an NBD export named after the disk, on a unix socket and/or
 * a TCP address, until cap_server_stop() is called.
 *
 * Invariants (DESIGN.md §4, §5)
 * - Write path: validate -> jr_writer_append -> jr_writer_write_out -> the
 *   same bytes into head.img -> reply, for a whole batch of pipelined
 *   requests at a time (one write out, one reply sendmsg, one fdatasync
 *   for all its FLUSH / FUA requests).  A record is in the journal file
 *   (the kernel's page cache at least) before its reply leaves, so a
 *   process crash (kill -9) loses no acknowledged write, and a write issued
 *   after another write's reply has the larger seq.
 * - FLUSH, and every request with FUA, replies only after jr_writer_flush()
 *   returned 0: every record appended before is on stable storage.  All
 *   connections to a disk share one jr_writer, so a FLUSH covers writes
 *   completed on any connection (NBD_FLAG_CAN_MULTI_CONN is advertised).
 * - head.img is never synced on the flush path.  A housekeeping thread
 *   fsyncs it every few seconds and records head_synced_seq, so recovery
 *   replays only the journal tail after it into head.
 * - Overlapping writes to one disk are applied to head in seq order (a
 *   range lock spans append + head write), so head always equals the
 *   journal replayed in seq order.
 * - Every number from the wire is bounds-checked before use; no buffer is
 *   allocated from a length above the advertised maximum payload
 *   (JR_MAX_WRITE); a half-received write is never journaled.
 * - A failed journal write or fdatasync is sticky (jr.h): that disk answers
 *   every later write and flush with NBD_EIO (NBD_ENOSPC for a full
 *   filesystem) until the server is restarted, which re-runs recovery.
 *
 * Thread model: cap_server_open/run/close from one thread;
 * cap_server_stop() from anywhere, including a signal handler.  Inside,
 * one accept loop, one thread per connection that reads requests and
 * executes small writes and flushes itself, plus a few workers per
 * connection for reads and large writes (replies may go out of order;
 * one mutex serialises a connection's reply writes), and one
 * housekeeping thread (indexing, journal writeback, head sync);
 * with metrics_addr, libmicrohttpd's thread serving /metrics and /healthz,
 * and with thresholds a watcher thread logging their crossings (both
 * capture/metrics.c, stopped first by cap_server_close).
 *
 * Error model: 0 or a negative code (-errno / RW_E*) with rw_err_msg()
 * naming the store, disk or address.  The server loop logs through
 * rw_log() (it is the boundary); everything else only returns errors.
 */
#ifndef RW_CAPTURE_H
#define RW_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ix;
struct ix_disk;

/*
 * A read-only export whose bytes come from a callback instead of a disk's
 * head (rewind export serves a disk as-of a moment this way).  read() is
 * called from several threads at once and must be thread-safe; it returns
 * 0 or a negative error.
 */
struct cap_ro_export {
	const char *name;
	uint64_t size;
	uint32_t block_size;
	int (*read)(void *arg, void *buf, uint64_t off, uint32_t len);
	/*
	 * Optional: block status for the base:allocation metadata context.
	 * Calls fn for consecutive extents covering [off, off+len) in order,
	 * flags NBD_STATE_HOLE (1) | NBD_STATE_ZERO (2) or 0 for data; fn
	 * returns 0 to go on or 1 to stop early.  Thread-safe like read().
	 * Returns 0, fn's 1, or a negative error.  NULL: the export offers no
	 * metadata context.
	 */
	int (*extents)(void *arg, uint64_t off, uint64_t len,
		       int (*fn)(void *fa, uint64_t off, uint64_t len,
				 unsigned flags),
		       void *fa);
	void *arg;
};

/*
 * Rewrites, in head_fd, every block of disk d that has an index version
 * in (after, upto] with its content as-of after, and sets *blocks to how
 * many.  0 or an error.  The server calls it (cap_server_opts.repair_head)
 * when a disk's journal ends at `after` but the index holds records up to
 * `upto`: records a power loss took before they were flushed, whose bytes
 * head.img may hold.  The CLI supplies restore's rollback (capture knows
 * nothing of as-of reads).
 */
typedef int (*cap_repair_fn)(void *arg, struct ix *ix, const struct ix_disk *d,
			     uint64_t after, uint64_t upto, int head_fd,
			     uint64_t *blocks);

struct cap_server_opts {
	const char *store_dir;          /* required */
	cap_repair_fn repair_head;      /* NULL: head.img is not repaired
					 * after a lost journal tail (logged) */
	void *repair_arg;
	const struct cap_ro_export *ro_exports; /* read-only mode when set:
					 * serve these and never open the
					 * store for writing */
	size_t n_ro_exports;
	bool skip_unchanged;            /* a WRITE whose bytes equal what the
					 * disk already holds is acknowledged
					 * without a journal record (it
					 * changes no restorable point); costs
					 * a read of head per write */
	bool no_listen;                 /* open and recover the store but
					 * listen nowhere (offline work such
					 * as a rollback through the write
					 * path) */
	const char *socket_path;        /* unix socket; NULL = STORE/rewind.sock,
					 * "" = none */
	const char *listen;             /* "HOST:PORT" for TCP, NULL = none */
	unsigned max_conns;             /* connection cap; default 100 */
	uint64_t handshake_timeout_ns;  /* whole handshake; default 10 s */
	unsigned workers;               /* request workers per connection; 4 */
	int zstd_level;                 /* 0 = no compression; default 1 */
	uint64_t index_interval_ns;     /* index lag target; default 50 ms */
	uint64_t head_sync_interval_ns; /* head.img fsync period; default 5 s */
	const char *metrics_addr;       /* "HOST:PORT": serve GET /metrics and
					 * /healthz there (capture/metrics.c);
					 * NULL = no HTTP endpoint */
	bool metrics_public;            /* allow a non-loopback metrics_addr */
	uint64_t retain_ns;             /* configured retention (compaction
					 * backlog, history threshold); 0 = none */
	uint64_t lag_warn_ns, lag_crit_ns; /* capture lag thresholds; 0 = off */
	unsigned history_warn_pct;      /* warn when compaction left less than
					 * this % of retain_ns; 0 = off */
	uint64_t max_journal;           /* journal budget per disk in bytes
					 * (sum of its segment files); 0 = none */
	bool refuse_over_budget;        /* over max_journal: refuse writes,
					 * trims and zeroes with ENOSPC until a
					 * compaction frees space */
};

/* Fills o with the defaults above (store_dir NULL). */
void cap_server_opts_default(struct cap_server_opts *o);

struct cap_server;

/*
 * Opens the store with IX_LOCK (RW_EBUSY when another server holds it),
 * opens one journal writer per disk on one shared clock, replays the
 * journal tails into the index and into head.img, then binds the
 * listening sockets (a stale unix socket file is replaced).  Logs what
 * recovery found.  Returns 0 and *out, or an error (nothing left open).
 */
int cap_server_open(struct cap_server **out, const struct cap_server_opts *o);

/*
 * Accepts and serves connections until cap_server_stop().  Returns 0 on a
 * requested stop, or an error of the accept loop.  Connections still open
 * are drained (in-flight requests answered) before it returns.
 */
int cap_server_run(struct cap_server *s);

/* Asks run() to return.  Async-signal-safe; s may be NULL. */
void cap_server_stop(struct cap_server *s);

/*
 * Shuts down: writes out and flushes every journal, indexes everything,
 * fsyncs every head.img and records head_synced_seq, closes the store and
 * removes the unix socket.  Returns 0 or the first error met (everything
 * is released either way).  NULL is a no-op.
 */
int cap_server_close(struct cap_server *s);

/* Where the server listens: "unix:PATH" and/or "tcp:HOST:PORT". */
const char *cap_server_address(const struct cap_server *s);

/* ------------------------------------------------- work beside clients */

/*
 * Claims disk name for exclusive work (a rollback): fails with RW_EBUSY
 * (message says how many clients) while any client is connected to it;
 * once claimed, new connections to it are refused with a message until
 * cap_server_disk_release().  RW_ENOTFOUND for an unknown disk.
 */
int cap_server_disk_claim(struct cap_server *s, const char *name);
void cap_server_disk_release(struct cap_server *s, const char *name);

/*
 * Writes through the disk's ordinary write path (journal, then head), as
 * a client's WRITE (type JR_WRITE, data = len bytes) or WRITE_ZEROES
 * (JR_ZERO, data NULL) would.  0 or error.
 */
int cap_server_disk_write(struct cap_server *s, const char *name,
			  uint8_t type, uint64_t off, uint32_t len,
			  const void *data);
/* Makes everything written to disk name durable (as a client FLUSH). */
int cap_server_disk_flush(struct cap_server *s, const char *name);
/*
 * Writes out every journal and indexes everything written so far, so the
 * index holds every acknowledged write when it returns.  0 or error.
 */
int cap_server_index_now(struct cap_server *s);
/* The server's index handle (owned by the server; NULL in read-only mode). */
struct ix *cap_server_ix(struct cap_server *s);

/* ---------------------------------------------------------- requests */

/*
 * The result of validating one NBD request header against an export: 0
 * (valid) or the NBD error to answer with (NBD_EINVAL, NBD_ENOSPC, ...).
 * Pure: no I/O; exposed for unit tests.
 *   size          export size in bytes
 *   structured    structured replies were negotiated
 *   max_payload   largest READ / WRITE length accepted
 */
struct cap_req {
	uint16_t flags;
	uint16_t type;
	uint64_t offset;
	uint32_t count;
};
uint32_t cap_req_check(const struct cap_req *r, uint64_t size,
		       bool structured, uint32_t max_payload);

/* The transmission flags rewind advertises for a writable disk. */
uint16_t cap_export_flags(bool structured);

/* Maps a negative rewind/errno code to an NBD error value. */
uint32_t cap_nbd_errno(int err);

/* ------------------------------------------------------------ metrics */

/*
 * Figures for `rewind stats` and GET /metrics (capture/metrics.c; every
 * name and its meaning is in README.md (Metrics)).  cap_metrics_collect()
 * reads the store (segment files, images, the index, STORE/compact.stats)
 * and, when s is a running server, its live counters; without a server
 * the live-only figures are absent (live = false).  Thread-safe: the
 * HTTP thread, the control socket and the CLI call it.
 */
#define CAP_FLUSH_NBUCKETS 14
extern const double cap_flush_buckets[CAP_FLUSH_NBUCKETS]; /* seconds, le */

enum cap_health { CAP_OK = 0, CAP_WARN = 1, CAP_CRIT = 2 };

struct cap_disk_figures {
	char name[72];
	bool live;                    /* the fields marked (live) are set */
	/* live: from the server's counters since it started */
	double capture_lag_s;
	uint64_t sealed_unsynced;   /* journal segments sealed, not yet synced */
	uint64_t writes, write_bytes, flushes, zero_bytes, trim_bytes;
	uint64_t flushes_anticipated; /* flushes a presync had covered */
	uint64_t zeroes, trims;
	uint64_t errors_journal, errors_head;
	uint64_t flush_buckets[CAP_FLUSH_NBUCKETS + 1]; /* per bucket, last
						       * = above every bound */
	uint64_t flush_count;
	double flush_sum_s;
	double compression_ratio;     /* logical / stored WRITE payload bytes */
	bool accepting;               /* no sticky journal or head error */
	uint64_t over_budget;         /* 1 while writes are refused because
				       * the journal is over --max-journal */
	/* store */
	uint64_t index_lag_records;
	double index_lag_s;
	uint64_t journal_bytes, journal_records, journal_segments;
	uint64_t base_bytes, head_bytes; /* allocated (st_blocks * 512) */
	double history_s, oldest_ts, latest_ts;
	bool have_retain;
	uint64_t compaction_backlog_bytes;
	double compaction_last_success_ts; /* 0 = never */
	uint64_t compaction_ok, compaction_failed;
	enum cap_health health;
	char reason[256];             /* why health is not CAP_OK */
};

struct cap_store_figures {
	bool live;
	uint64_t disk_free_bytes;
	size_t ndisks;
	struct cap_disk_figures *disks;  /* owned; cap_store_figures_free() */
	enum cap_health health;          /* the worst disk's */
	uint64_t now_ns;
};

/* Thresholds and retention when no server gives them (rewind stats). */
struct cap_metrics_cfg {
	uint64_t retain_ns, lag_warn_ns, lag_crit_ns;
	unsigned history_warn_pct;
};

/*
 * Collects the figures of every disk of the store ix is open on (only disk
 * name when name != NULL: RW_ENOTFOUND if unknown).  s may be NULL (no
 * server; thresholds from cfg, which may be NULL) or the server that
 * owns ix (its options give the thresholds).  0 and *out filled (release
 * with cap_store_figures_free), or error.
 */
int cap_metrics_collect(struct ix *ix, struct cap_server *s, const char *name,
			const struct cap_metrics_cfg *cfg,
			struct cap_store_figures *out);
void cap_store_figures_free(struct cap_store_figures *f);
/* Collects through the server's own index handle (all disks or name). */
int cap_server_stats(struct cap_server *s, const char *name,
		     struct cap_store_figures *out);

/*
 * The Prometheus text exposition format 0.0.4, into a growing buffer.
 * Every call is a no-op after an allocation failure (err = -ENOMEM).
 */
struct cap_prom {
	char *buf;
	size_t len, cap;
	int err;
};
/* "# HELP name help" (\\ and \n escaped) and "# TYPE name type". */
void cap_prom_family(struct cap_prom *p, const char *name, const char *type,
		     const char *help);
/*
 * One sample: name{k="v",...} value.  labels: NULL or key, value pairs
 * ending with NULL; values escaped (\\, \", \n).  Integral values
 * below 2^53 print exactly, NaN as NaN, infinities as +Inf / -Inf.
 */
void cap_prom_sample(struct cap_prom *p, const char *name,
		     const char *const *labels, double v);
void cap_prom_sample_u64(struct cap_prom *p, const char *name,
			 const char *const *labels, uint64_t v);
/*
 * A histogram's samples: name_bucket{...,le="b"} cumulative for each bound
 * and le="+Inf" (= count), then name_sum and name_count.  counts has
 * nbounds + 1 per-bucket (not cumulative) entries.
 */
void cap_prom_histogram(struct cap_prom *p, const char *name,
			const char *const *labels, const double *bounds,
			const uint64_t *counts, size_t nbounds, double sum);
/* Formats f as a whole exposition into p (metric families documented in
 * README.md (Metrics)). */
void cap_prom_figures(struct cap_prom *p, const struct cap_store_figures *f);
void cap_prom_free(struct cap_prom *p);

/*
 * Persists one compaction result of disk name (ok, and the time) in
 * STORE/compact.stats (rewritten atomically under STORE/compact.stats.lock)
 * so that every process sees runs by result and the last success.  0 or
 * error (callers log it; compaction itself is not affected).
 */
int cap_compact_stats_record(const char *store_dir, const char *name, bool ok,
			     uint64_t now_ns);

/* Where the metrics endpoint listens ("" when none). */
const char *cap_server_metrics_address(const struct cap_server *s);

#endif /* RW_CAPTURE_H */
