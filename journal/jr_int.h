/*
 * jr_int.h — private to journal/: the segment header, the record decoder
 * with a reason string, and the buffered segment scanner that writer
 * recovery and readers share.  Nothing here is part of the contract in
 * jr.h; FORMAT.md is the normative description of the bytes.
 */
#ifndef RW_JOURNAL_INT_H
#define RW_JOURNAL_INT_H

#include "common/rw.h"
#include "journal/jr.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------ segment header */

#define JR_SEG_MAGIC "RWJSEG\r\n"
#define JR_SEG_VERSION 1u      /* what the writer creates */
#define JR_SEG_VERSION_PAD 2u  /* a recompressed copy: may hold PAD records */
#define JR_SEG_HDR_SIZE 64u
/* Segment header flag: when this segment was created its predecessor was
 * sealed but not yet known durable (lazy seal, writer.c); cleared in
 * place once it is.  FORMAT.md, "Lazy seal". */
#define JR_SEGF_PRED_UNSYNCED 1u
#define JR_SEGF_KNOWN JR_SEGF_PRED_UNSYNCED
#define JR_REC_MAGIC 0x524A5752u /* "RWJR" as little-endian bytes */

/* Largest logical offset + length a record may describe (fits off_t). */
#define JR_MAX_DISK_END ((uint64_t)INT64_MAX)

struct jr_seghdr {
	uint32_t version;
	uint64_t first_seq;
	uint64_t created_ns;
	uint32_t disk_id;
	uint32_t flags;         /* JR_SEGF_* */
	uint64_t pred_first;    /* name of the segment before it when it was
				 * created; 0: none, or written before this
				 * field existed */
};

void jr_seghdr_encode(const struct jr_seghdr *h, uint8_t buf[JR_SEG_HDR_SIZE]);
/*
 * Decodes and checks a segment header (magic, version, length, reserved
 * bytes, crc).  Returns 0, RW_EVERSION or RW_ECORRUPT; *why names the
 * problem.
 */
int jr_seghdr_decode(const uint8_t buf[JR_SEG_HDR_SIZE], struct jr_seghdr *h,
		     const char **why);

/* jr_rec_decode() that also says why a header was refused. */
int jr_rec_decode_why(const uint8_t hdr[JR_HDR_SIZE], struct jr_rec *rec,
		      const char **why);

/* Total bytes of a record in the file. */
static inline uint64_t jr_rec_total(const struct jr_rec *r)
{
	return (uint64_t)JR_HDR_SIZE + r->stored_len;
}

/* True when name is a segment file name (exactly 20 decimal digits). */
bool jr_is_segment_name(const char *name, uint64_t *first_seq);

/* --------------------------------------------------------- compression */

/*
 * Compresses len bytes of src with cc when that saves at least 1/16.
 * Returns true and sets *out / *outlen (owned by cc until its next use)
 * when the compressed form should be stored.
 */
bool jr_cctx_compress(struct jr_cctx *cc, const void *src, uint32_t len,
		      const void **out, uint32_t *outlen);

/* Payloads below this are stored raw: a zstd frame costs ~12 bytes. */
#define JR_MIN_COMPRESS 64u

/* The level cc was created with. */
int jr_cctx_level(const struct jr_cctx *cc);

/*
 * Compresses len bytes of src at level into dst (dstcap bytes, at least
 * jr_zstd_bound(len)) using cc's zstd context.  Returns the frame size
 * when it saves at least 1/16 (FORMAT.md), else 0: store raw.
 */
size_t jr_zstd_compress(struct jr_cctx *cc, int level, void *dst,
			size_t dstcap, const void *src, uint32_t len);
size_t jr_zstd_bound(uint32_t len);

/* ---------------------------------------------------------- scanner */

/*
 * A read window over one segment file.  jr_scan_fill() makes n bytes at
 * off visible at *p and returns how many are there (fewer only at end of
 * file), or -errno.  Pointers stay valid until the next fill.
 */
struct jr_scan {
	int fd;
	uint8_t *buf;
	size_t cap;
	uint64_t boff;
	size_t blen;
	uint64_t fsize;     /* file size seen by the last fstat (a lower
			     * bound: append-only files only grow) */
	uint64_t hdr_off;   /* offset of the last header-only read */
};

#define JR_SCAN_WINDOW (1u << 20)
/* Window of a header-only read: big records are not copied just to find
 * the next header (64 KiB still holds a run of small records). */
#define JR_SCAN_HDR_WINDOW (64u << 10)
/* ... and after a header far behind (large records), just this one's page. */
#define JR_SCAN_HDR_MIN 4096u

void jr_scan_init(struct jr_scan *sc, int fd);
void jr_scan_fini(struct jr_scan *sc);
/* Forgets the window, so the next fill re-reads the file. */
void jr_scan_invalidate(struct jr_scan *sc);
ssize_t jr_scan_fill(struct jr_scan *sc, uint64_t off, size_t n,
		     const uint8_t **p);
/* The same, reading at least `window` bytes when it must read. */
ssize_t jr_scan_fill_w(struct jr_scan *sc, uint64_t off, size_t n,
		       size_t window, const uint8_t **p);

enum jr_scan_res {
	JR_SCAN_OK,   /* a complete, valid record */
	JR_SCAN_END,  /* the file ends exactly here */
	JR_SCAN_TORN, /* the file ends inside the record */
	JR_SCAN_BAD,  /* bad magic / bounds / checksum */
};

/*
 * Reads the record at off.  With verify, checks the crc over the payload
 * and sets *payload to the stored bytes (valid until the next fill);
 * without, only checks that the payload is present in the file.
 * Returns a jr_scan_res (>= 0) or -errno; *why explains TORN and BAD.
 */
int jr_scan_record(struct jr_scan *sc, uint64_t off, bool verify,
		   struct jr_rec *rec, const uint8_t **payload,
		   const char **why);

/*
 * Looks for any valid record (header, bounds and crc) with seq > after_seq
 * starting at any byte offset >= from.  Returns 1 and *found_off, 0 when
 * none, or -errno.
 */
int jr_scan_find_valid(struct jr_scan *sc, uint64_t from, uint64_t after_seq,
		       uint64_t *found_off);

/* Reads and checks the segment header of fd; messages name path. */
int jr_segment_read_header(int fd, const char *path, uint64_t name_seq,
			   struct jr_seghdr *h);


/* ---------------------------------------------------------- back ends */

/*
 * The writer's I/O back end: io_uring or pwritev/fdatasync.  Used by one
 * thread at a time (the writer's I/O leader).
 */
struct jr_io;

/* Returns 0 and *out, -errno when io_uring is refused and b is URING. */
int jr_io_open(struct jr_io **out, enum jr_backend b);
void jr_io_close(struct jr_io *io);
bool jr_io_is_uring(const struct jr_io *io);
/*
 * Writes len bytes of buf at off in fd, completing short transfers, then
 * (when sync) fdatasyncs fd.  Returns 0 or -errno (injected faults too).
 */
int jr_io_write(struct jr_io *io, int fd, const void *buf, size_t len,
		uint64_t off, bool sync);

/* ------------------------------------------------------------- writer */

/*
 * One record on its way into the file: everything but loc is decided at
 * append (seq, ts, prev_seq), stored_len / flags / crc once compressed.
 * payload points at the bytes to store: the job's raw copy, its
 * compressed frame, or (direct placement) the caller's data.
 */
enum jr_job_state { JR_JOB_FREE, JR_JOB_QUEUED, JR_JOB_BUSY, JR_JOB_DONE };

struct jr_job {
	struct jr_rec rec;
	uint8_t hdr[JR_HDR_SIZE]; /* encoded, crc included, when hdr_ok */
	bool hdr_ok;
	int level;                /* zstd level for a QUEUED job */
	uint64_t now;             /* append time (rw_clock_ns) */
	const uint8_t *payload;
	uint8_t *raw;             /* from the pool's spares while queued */
	size_t raw_cap;
	uint8_t *z;               /* taken by the worker that claims the job */
	size_t z_cap;
	uint32_t pcrc;            /* crc32c of the stored payload alone, when
				   * pcrc_ok (computed before the lock) */
	bool pcrc_ok;
	bool borrowed;            /* payload is written from the caller's
				   * memory (jr_append.borrow), not copied */
	enum jr_job_state state;
};

/* A run of pending bytes: buf[side][off..off+len) when ext is NULL, else
 * len bytes at ext (a borrowed payload). */
struct jr_piece {
	const uint8_t *ext;
	size_t off;
	size_t len;
};

/* A spare payload buffer of the pool. */
struct jr_pbuf {
	uint8_t *p;
	size_t cap;
};

/*
 * The compression workers and their queue: a ring of jobs in seq order,
 * guarded by the writer's mutex.  head..tail are queued but not yet in
 * the pending buffer; claim is the next one a worker looks at.  Counters
 * are absolute; slot = counter % cap.
 */
struct jr_pool {
	pthread_cond_t work_cv;   /* a job to claim, or stop */
	pthread_t *th;
	unsigned nth;
	struct jr_cctx **cc;      /* one context per worker */
	struct jr_cctx *help_cc;  /* for a flushing thread that helps */
	bool helping;             /* help_cc is in use */
	struct jr_job *ring;
	unsigned cap;
	uint64_t head, claim, tail;
	size_t bytes;             /* raw bytes of queued jobs */
	size_t max_bytes;         /* append waits beyond this (one job always fits) */
	/* Buffers of placed jobs, reused last-in first-out so the next job
	 * copies into memory still in the cache. */
	struct jr_pbuf *spare;
	unsigned nspare, spare_cap;
	bool stop;
};

/*
 * With the writer's mutex held: gives *buf (a spare, grown to need bytes,
 * or a new one) and its capacity.  0 or -ENOMEM.
 */
int jr_pool_buf_get(struct jr_pool *p, size_t need, uint8_t **buf,
		    size_t *cap);
/* With the mutex held: takes *buf back as a spare (or frees it); NULL ok. */
void jr_pool_buf_put(struct jr_pool *p, uint8_t **buf, size_t *cap);

/* Starts w->o.compress_threads workers (none when 0).  0 or -errno. */
int jr_pool_start(struct jr_writer *w);
/*
 * With the writer's mutex held (dropped while compressing): a thread that
 * would wait for the workers compresses queued jobs itself and places
 * what is done.  Returns false when there was nothing it could do (no
 * pool, no queued job, or the helper context is busy).
 */
bool jr_pool_help(struct jr_writer *w);
/* Stops and joins the workers and frees the queue; NULL pool is a no-op.
 * Call without the writer's mutex. */
void jr_pool_free(struct jr_writer *w);
/*
 * Called with the writer's mutex held: moves finished jobs from the
 * queue head into the pending buffer, in order, until one is not done
 * (writer.c).  Returns at once when another thread is placing.
 */
void jr_writer_place_ready(struct jr_writer *w);

/* The writer's state, shared by writer.c (appending) and recover.c. */
struct jr_writer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *dir;
	struct jr_clock *clock;
	struct jr_writer_opts o;
	struct jr_io *io;

	/* current segment; fd < 0 when none is open (empty journal, or the
	 * last segment is sealed and its successor not created yet) */
	int fd;
	uint64_t seg_first;
	uint64_t seg_end;       /* file offset of the next record */
	uint64_t seg_created_ns;
	uint64_t seg_nrec;
	uint64_t seg_last_seq;
	uint64_t seg_last_ts;
	uint64_t zend;          /* the file holds written blocks (records or
				 * pre-written zeroes) up to here; >= the
				 * end of the records (prezero_bytes) */
	uint64_t sync_end;      /* file end covered by the last sync of this
				 * segment (bytes appended per sync) */
	bool seg_flagged;       /* its header carries JR_SEGF_PRED_UNSYNCED */
	uint64_t newest_seg;    /* name of the newest segment file, 0: none */

	/* Lazy seal (writer.c): sealed segments not yet known durable,
	 * oldest first, their fds kept open until a sync covers them.  Only
	 * a seal appends (mutex held, no leader running); only the thread
	 * that set lazy_busy syncs and removes entries. */
	struct jr_lazy {
		int fd;
		uint64_t first;     /* segment name */
		uint64_t last;      /* seq of its SEAL (its last record) */
		uint64_t oldest_ns; /* append time of its oldest record not
				     * yet synced (0: none) */
		bool flagged;       /* its header carries the flag */
	} *lazy;
	size_t nlazy, lazycap;
	bool lazy_busy;
	uint64_t lazy_since_ns; /* rw_mono_ns() of the oldest entry's seal */
	bool dir_dirty;         /* a segment was created since the last
				 * fsync of the directory */

	uint64_t last_seq;      /* newest record of this journal (seq taken) */
	uint64_t last_ts;
	uint64_t placed_seq;    /* newest record in the pending buffer or the
				 * file (= last_seq unless jobs are queued) */
	struct jr_pool *pool;   /* NULL when compress_threads is 0 */
	bool placing;           /* a thread is moving records into the buffer
				 * (it may have dropped the mutex for I/O) */

	/* pending bytes: the pieces pc[active][0..npc) — runs of
	 * buf[active][0..bused) and borrowed payloads — plen bytes in all,
	 * go to the file at poff */
	uint8_t *buf[2];
	size_t cap[2];
	int active;
	size_t plen;
	size_t bused;
	struct jr_piece *pc[2];
	size_t npc[2], pccap[2];
	uint64_t poff;
	bool io_busy;

	uint64_t written_seq;
	uint64_t durable_seq;
	uint64_t covered_ns;    /* oldest append time in the running sync */
	uint64_t fresh_ns;      /* oldest append time not yet in any sync */

	struct jr_writer_stats st;
	int err;
	char errmsg[PATH_MAX + 256];
};

/*
 * Clears JR_SEGF_PRED_UNSYNCED in the header of segment `first`, open
 * read-write as fd: everything before it is durable now (writer.c).  Not
 * synced here; the caller's fdatasync of fd follows.  0, -errno, or
 * RW_ECORRUPT when the header is not a valid one for `first`.
 */
int jr_seg_clear_pred_flag(int fd, uint64_t first);

/* Path of segment `first` of w's journal, with suffix ("" or ".tmp"). */
void jr_writer_seg_path(const struct jr_writer *w, uint64_t first, char *buf,
			size_t sz, const char *suffix);
/* Releases w's resources without flushing; NULL is a no-op. */
void jr_writer_free(struct jr_writer *w);

/* Tests only: while true, the compression workers claim no job, so a
 * flush meets every record still queued (pool.c). */
extern bool jr_test_hold_workers;

#endif /* RW_JOURNAL_INT_H */
