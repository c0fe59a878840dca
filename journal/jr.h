/*
 * jr.h — the journal: sequenced, checksummed, compressed records in
 * append-only segment files.  The source of truth of a rewind store.
 *
 * One journal is one directory (STORE/disks/NAME/journal/) holding segment
 * files named by the seq of their first record, 20 decimal digits.  Every
 * byte is specified in FORMAT.md; this header is the programming contract.
 *
 * Invariants
 * - seq is store-wide: all journals of a store draw (seq, timestamp) pairs
 *   from one struct jr_clock, so seqs are strictly increasing inside a
 *   journal, and across journals they are gap-free as assigned.  Each
 *   record also names the seq of the previous record of the same journal
 *   (prev_seq), so a missing record is detectable without a global view.
 * - Timestamps (ns since the epoch) are strictly increasing in seq order,
 *   even when the wall clock steps backwards: jr_clock hands out
 *   max(now, last + 1).
 * - Records are appended in seq order; a segment is sealed (a SEAL record
 *   written and synced) before the next one is created, and never
 *   modified afterwards.
 * - Recovery (jr_writer_open) truncates a torn tail — only in the last
 *   segment, only when nothing valid follows the damage.  Anything bad
 *   elsewhere is RW_ECORRUPT naming the segment file and seq.
 *
 * Durability contract
 * - jr_writer_append() returns once the record holds a seq and sits in
 *   the writer's queue; it may not be in the file yet.
 * - jr_writer_flush() returns 0 only when every record appended before the
 *   call is on stable storage (one fdatasync covers a whole group: group
 *   commit).  jr_writer_write_out() pushes queued records into the file
 *   (readable by readers) without syncing.
 * - A failed write or fdatasync is sticky: that error (e.g. -EIO) is
 *   returned by every later append, write_out and flush until the journal
 *   is closed and reopened (which re-runs recovery).  It is never retried
 *   into a later success (DESIGN.md invariant 3).
 *
 * Thread model
 * - struct jr_clock and struct jr_writer are thread-safe: many threads may
 *   append and flush concurrently; concurrent flushes share one fdatasync.
 * - With jr_writer_opts.compress_threads > 0 the writer owns that many
 *   worker threads (started by _open, joined by _close) which compress
 *   queued payloads in parallel and place finished records into the file
 *   buffer in seq order; they may also do the write-out of a full batch.
 *   The contract above is unchanged: append returns once the record has
 *   a seq and is queued, flush covers every record appended before it.
 * - struct jr_reader and struct jr_cctx are single-threaded handles.
 *   Readers may run in other processes while a writer appends; they see
 *   records up to what the writer has written out.
 *
 * Error model: 0 or a count on success; -errno or RW_E* (common/rw.h) on
 * failure, with rw_err_msg() naming the file / seq involved.
 *
 * Ownership: handles are created by _open/_new and released by
 * _close/_free; _free(NULL) and _close(NULL) are no-ops.  Payload pointers
 * handed out by a reader belong to the reader until its next call.
 */
#ifndef RW_JOURNAL_H
#define RW_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- records */

#define JR_HDR_SIZE 64u
/* Largest logical length of a WRITE record, and so of an NBD write. */
#define JR_MAX_WRITE (32u * 1024 * 1024)
/* Largest logical length of ZERO / TRIM records (their payload is empty). */
#define JR_MAX_RANGE 0xFFFFFFFFu
/* Largest stored payload a reader will ever allocate for. */
#define JR_MAX_STORED JR_MAX_WRITE

enum jr_type {
	JR_WRITE = 1,   /* payload = the bytes written */
	JR_ZERO = 2,    /* range reads back as zeroes; no payload */
	JR_TRIM = 3,    /* range discarded (reads back as zeroes); no payload */
	JR_FLUSH = 4,   /* the guest flushed here: every earlier record of the
			 * journal was made durable by the flush that made this
			 * one durable; offset 0, length 0, no payload */
	JR_PAD = 14,    /* filler after a recompressed record, only in
			 * version-2 segments (journal/rewrite.c): no seq of
			 * its own, stored_len bytes of body (a hole) that no
			 * crc covers; readers skip it; see FORMAT.md */
	JR_SEAL = 15,   /* last record of a sealed segment; see FORMAT.md */
};

enum {
	JR_F_ZSTD = 0x01, /* payload is one zstd frame of `length` bytes */
};

/* A decoded record header. */
struct jr_rec {
	uint8_t type;        /* enum jr_type */
	uint8_t flags;       /* JR_F_* */
	uint64_t seq;
	uint64_t ts_ns;      /* wall-clock ns since the epoch, monotonic */
	uint64_t prev_seq;   /* seq of the previous record in this journal, 0 = none */
	uint32_t disk_id;
	uint64_t offset;     /* byte offset on the disk */
	uint32_t length;     /* logical length in bytes */
	uint32_t stored_len; /* payload bytes in the file (0 for ZERO/TRIM/SEAL) */
	uint32_t crc;        /* CRC32C over header bytes 0..59 and the payload */
};

/* Where a record lives: its segment (named by first seq) and byte offset. */
struct jr_loc {
	uint64_t segment;
	uint64_t offset;
};

/*
 * Encodes rec into hdr, computing rec->crc over the header and the stored
 * payload (stored_len bytes at payload; may be NULL when stored_len is 0).
 * With payload NULL and stored_len > 0 the crc written covers the header
 * bytes only: the writer then replaces it with the crc combined with one
 * of the payload computed outside its lock (rw_crc32c_combine).
 * Does not validate; returns the crc it wrote.
 */
uint32_t jr_rec_encode(struct jr_rec *rec, uint8_t hdr[JR_HDR_SIZE],
		       const void *payload);

/*
 * Decodes and bounds-checks a header: magic, header length, type, flags,
 * stored_len <= JR_MAX_STORED, length/stored_len consistent with the type,
 * offset + length not overflowing.  Does not check the crc (the payload is
 * needed for that).  Returns 0 or RW_ECORRUPT.
 */
int jr_rec_decode(const uint8_t hdr[JR_HDR_SIZE], struct jr_rec *rec);

/* Checks rec->crc against hdr and the stored payload.  0 or RW_ECORRUPT. */
int jr_rec_verify(const struct jr_rec *rec, const uint8_t hdr[JR_HDR_SIZE],
		  const void *payload);

/* Writes the segment file name for first_seq ("%020llu") into buf[32]. */
void jr_segment_name(uint64_t first_seq, char buf[32]);

/* Returns "write", "zero", "trim", "flush", "pad", "seal" or "?". */
const char *jr_type_name(uint8_t type);

/* ---------------------------------------------------------- compression */

/*
 * A compression context, one per appending thread (zstd contexts are
 * not thread-safe).  level JR_ZSTD_LEVEL_MIN..JR_ZSTD_LEVEL_MAX except 0:
 * negative levels are zstd's fast modes (cheaper, slightly larger), 1..19
 * the regular ones.  jr_cctx_new returns 0, -EINVAL for a level out of
 * range, or -ENOMEM.
 */
struct jr_cctx;
int jr_cctx_new(struct jr_cctx **out, int level);
void jr_cctx_free(struct jr_cctx *cc);

#define JR_ZSTD_LEVEL_MIN (-7)
#define JR_ZSTD_LEVEL_MAX 19
/* The default zstd level, chosen by bench/ (see FORMAT.md). */
#define JR_ZSTD_LEVEL_DEFAULT 1

/* ---------------------------------------------------------------- clock */

/*
 * The store-wide (seq, timestamp) source.  next_seq is the seq the next
 * record gets (>= 1); last_ts the newest timestamp handed out so far.
 */
struct jr_clock;
int jr_clock_new(struct jr_clock **out, uint64_t next_seq, uint64_t last_ts);
void jr_clock_free(struct jr_clock *c);
/* Raises the clock so it never hands out seq <= seq or ts <= ts. */
void jr_clock_observe(struct jr_clock *c, uint64_t seq, uint64_t ts);
/* Takes the next pair atomically. */
void jr_clock_take(struct jr_clock *c, uint64_t *seq, uint64_t *ts);
/* Returns the seq the next take would hand out. */
uint64_t jr_clock_peek(struct jr_clock *c);

/* --------------------------------------------------------------- writer */

enum jr_backend {
	JR_BACKEND_AUTO = 0, /* io_uring, falling back to sync when refused */
	JR_BACKEND_URING,    /* io_uring or fail */
	JR_BACKEND_SYNC,     /* pwritev + fdatasync */
};

struct jr_writer_opts {
	uint32_t disk_id;          /* stamped into every record and segment */
	uint64_t segment_bytes;    /* seal at this size; default 64 MiB */
	uint64_t segment_age_ns;   /* seal at this age; default 10 min */
	size_t batch_bytes;        /* write out when this much is queued; 1 MiB */
	enum jr_backend backend;
	/*
	 * Records with seq <= durable_seq are known to be durable and intact
	 * (the caller saw them synced, e.g. the index recorded a head sync
	 * only after a journal flush): recovery checks their headers and the
	 * seq chain but not their payload checksums, so opening after a clean
	 * shutdown reads one header per record of the last segment instead
	 * of the whole segment.  0 (the default) verifies every record.
	 */
	uint64_t durable_seq;
	/*
	 * 0 (the default): a WRITE appended with a compression context is
	 * compressed by the appending thread before append returns.
	 * N > 0 (at most JR_MAX_COMPRESS_THREADS): the writer runs N
	 * compression workers; append copies the payload, takes the seq and
	 * returns, a worker compresses it and records still reach the file
	 * in seq order.  See jr_writer_append() for what changes for callers.
	 */
	unsigned compress_threads;
	/*
	 * With workers: a flush or write-out that finds records no worker
	 * has started stores them raw rather than compressing them itself,
	 * so a flush waits for the fdatasync and not for zstd — compression
	 * never limits the guest (the capture rule; raw records stay valid
	 * records, flagged as such).  Default true; false makes the flushing
	 * thread compress what is left, for the best ratio.
	 */
	bool raw_when_behind;
	/*
	 * Pre-written tail (FORMAT.md "Pre-written tail"): when a sync finds
	 * that at most prezero_bytes / 16 were appended since the previous
	 * one (small, frequent flushes), the writer also writes zeroes ahead
	 * of the end of the records so that the file holds written blocks
	 * up to prezero_bytes past it; later appends then overwrite blocks
	 * the file already has and its size does not change, so their
	 * fdatasync needs no file-system journal commit.  Refilled when
	 * less than half of it is left; never past segment_bytes; sealing
	 * and jr_writer_close cut the file back to the last record.
	 * Default 2 MiB; 0 turns it off.  Bulk appends with rare syncs
	 * never pay for it.
	 */
	uint64_t prezero_bytes;
};

#define JR_MAX_COMPRESS_THREADS 16u

/* Fills o with the defaults above (disk_id 0). */
void jr_writer_opts_default(struct jr_writer_opts *o);

/* What recovery found when the writer opened. */
struct jr_recovery {
	uint64_t segments;        /* segment files present after recovery */
	uint64_t last_seq;        /* seq of the newest record, 0 when empty */
	uint64_t last_ts;         /* its timestamp */
	uint64_t truncated_bytes; /* torn tail removed from the last segment */
	uint64_t torn_segment;    /* the segment that was truncated, or 0 */
	uint64_t zero_tail_bytes; /* all-zero pre-written tail cut from the
				   * last segment: a clean end, not a torn
				   * tail (not counted in truncated_bytes) */
	uint64_t set_aside;       /* segments moved to journal/unflushed-*:
				   * created after a lazily sealed segment
				   * that a power loss cut short, so never
				   * acknowledged durable (FORMAT.md) */
	uint64_t set_aside_first; /* the first of them, or 0 */
	char set_aside_dir[64];   /* their directory's name, or "" */
};

/* What the input to an append looks like. */
struct jr_append {
	uint8_t type;           /* JR_WRITE, JR_ZERO, JR_TRIM or JR_FLUSH */
	uint64_t offset;
	uint32_t length;        /* <= JR_MAX_WRITE for writes */
	const void *data;       /* length bytes for JR_WRITE, else NULL */
};

/* Smallest payload jr_writer_append_borrowed() writes from the caller's
 * memory: below it a copy costs less than one more iovec. */
#define JR_BORROW_MIN (16u * 1024)

/* What an append produced. */
struct jr_appended {
	uint64_t seq;
	uint64_t ts_ns;
	/*
	 * true when the record was queued behind the compression workers
	 * (compress_threads > 0): its place in the file and its stored form
	 * are not decided yet, and loc, stored_len and flags are 0.  A reader
	 * finds the record by seq once it is written out.
	 */
	bool pending;
	struct jr_loc loc;
	uint32_t stored_len;
	uint8_t flags;
};

struct jr_writer_stats {
	uint64_t last_seq;          /* newest seq appended */
	uint64_t written_seq;       /* newest seq in the file */
	uint64_t durable_seq;       /* newest seq covered by an fdatasync */
	uint64_t oldest_unsynced_ns;/* append time (rw_clock_ns) of the oldest
				     * WRITE, ZERO or TRIM record not yet
				     * durable; 0 when none (a FLUSH marker
				     * carries no data and is not counted) */
	uint64_t records;           /* records appended since open */
	uint64_t logical_bytes;     /* logical bytes of WRITE records since open */
	uint64_t stored_bytes;      /* payload bytes stored since open */
	uint64_t syncs;             /* fdatasyncs issued since open */
	uint64_t raw_behind;        /* WRITE records a flush stored raw because
				     * no worker had started them */
	uint64_t prezero_bytes;     /* zero bytes written ahead of the tail
				     * since open (prezero_bytes option) */
	uint64_t sealed_waiting;    /* sealed segments not yet synced (lazy
				     * seal, jr_writer_sync_sealed) */
	bool uring;                 /* true when the io_uring back end is in use */
	int error;                  /* the sticky error, or 0 */
};

struct jr_writer;

/*
 * Opens (creating dir when missing) the journal in dir for appending:
 * removes leftover temporary files, checks every segment header and that
 * every segment but the last is sealed, scans the last segment and
 * truncates a torn tail, then observes the newest (seq, ts) on clock.
 * A segment sealed lazily (its successor's header says it may not be
 * durable) is scanned like the last one; if a power loss cut it short,
 * the journal ends there and the later segments are moved to
 * dir/unflushed-<ns>/ (rep->set_aside).  Everything kept is synced.
 * rep (may be NULL) receives what recovery found.
 * Returns 0 and *out, or RW_ECORRUPT (naming segment and seq), RW_EVERSION,
 * -errno.  The writer keeps a reference to clock, which must outlive it.
 */
int jr_writer_open(struct jr_writer **out, const char *dir,
		   const struct jr_writer_opts *opts, struct jr_clock *clock,
		   struct jr_recovery *rep);

/*
 * Appends one record.  cc (may be NULL) asks for a WRITE payload to be
 * compressed at cc's level, stored compressed when that saves space.
 * Without workers (compress_threads 0) that runs in the calling thread
 * before the writer lock.  With workers, append copies the payload into
 * the writer's queue, takes the seq and returns; cc is not used after the
 * call and out->pending is true.  Records appended without cc, and
 * ZERO/TRIM/FLUSH records, queue behind pending ones (file order stays
 * seq order).  The queue is bounded: append waits when it is full.
 * Returns 0 and fills out (may be NULL), -EINVAL for a bad type or length,
 * -ENOMEM (no seq taken), or the sticky error — including one hit by a
 * worker writing out records appended earlier.
 */
int jr_writer_append(struct jr_writer *w, const struct jr_append *a,
		     struct jr_cctx *cc, struct jr_appended *out);

/*
 * jr_writer_append(), except that a raw WRITE payload of JR_BORROW_MIN
 * bytes or more may be written to the file straight from a->data instead
 * of being copied into the writer's buffer (sync back end only; with
 * io_uring, compression or workers it is copied as by jr_writer_append).
 * The caller keeps a->data alive and unchanged until a
 * jr_writer_write_out() or jr_writer_flush() that it calls after this
 * append returned has itself returned (whatever its result), or until
 * jr_writer_close().  Same returns as jr_writer_append().
 */
int jr_writer_append_borrowed(struct jr_writer *w, const struct jr_append *a,
			      struct jr_cctx *cc, struct jr_appended *out);

/* Puts everything queued into the file without syncing.  0 or error. */
int jr_writer_write_out(struct jr_writer *w);

/*
 * Makes every record appended before the call durable (write out +
 * fdatasync, shared with concurrent callers).  0 or the sticky error.
 */
int jr_writer_flush(struct jr_writer *w);

/*
 * A hint ahead of a flush the caller expects: asks the kernel to start
 * writing what was written out to the current segment since its last
 * sync (sync_file_range SYNC_FILE_RANGE_WRITE), and returns without
 * waiting for it.  Nothing becomes durable by it and nothing is counted
 * as durable; the next jr_writer_flush then finds the data write under
 * way or done.  0, or -errno (harmless: the flush does the work).
 */
int jr_writer_start_writeback(struct jr_writer *w);

/* Seals the current segment if it is older than segment_age_ns.  0 or error. */
int jr_writer_tick(struct jr_writer *w);

/*
 * Makes the oldest sealed segment still waiting for its sync durable
 * (lazy seal: a rollover does not sync; FORMAT.md "Lazy seal"), when at
 * least min_count of them wait or the oldest waited min_age_ns (0, 0:
 * whenever one waits); one segment per call, so a caller's periodic
 * thread is held up for one segment's sync at most.  Appends continue
 * meanwhile; a flush waits for it.  Bounds what a crash leaves for
 * recovery to scan and the files the writer keeps open.  0 or the
 * sticky error (a failed sync is sticky like any other).
 */
int jr_writer_sync_sealed(struct jr_writer *w, size_t min_count,
			  uint64_t min_age_ns);

/* Copies the writer's counters into st. */
void jr_writer_stats(struct jr_writer *w, struct jr_writer_stats *st);

/*
 * Flushes, cuts a pre-written zero tail off the open segment (so the
 * file ends at its last record), closes files and frees.  Returns the
 * flush's or the cut's error, or 0; the writer is freed either way.
 */
int jr_writer_close(struct jr_writer *w);

/* --------------------------------------------------------------- reader */

enum {
	JR_READ_HEADERS = 0x01, /* skip payloads: no decompression, no payload
				 * crc (headers are still bounds-checked) */
};

struct jr_seginfo {
	uint64_t first_seq; /* from the file name, checked against the header */
	uint64_t bytes;     /* file size */
};

struct jr_reader;

/*
 * Opens a reader over the journal in dir (read-only; never truncates).
 * Returns 0 and *out, or -errno / RW_ECORRUPT for an unreadable directory.
 */
int jr_reader_open(struct jr_reader **out, const char *dir, unsigned flags);

/* Positions the reader at the first record with seq >= seq.  0 or error. */
int jr_reader_seek(struct jr_reader *r, uint64_t seq);

/*
 * Reads the next record.  Returns 1 with *rec and *loc filled and *payload
 * (may be NULL) pointing at the decompressed bytes of a WRITE (NULL for
 * other types, or with JR_READ_HEADERS), owned by the reader until the next
 * call; 0 at the clean end of the journal, which includes a torn tail of
 * the last segment; RW_ECORRUPT naming the segment and seq otherwise.
 * SEAL records are consumed silently and never returned.
 */
int jr_reader_next(struct jr_reader *r, struct jr_rec *rec,
		   struct jr_loc *loc, const void **payload);

/*
 * Reads and verifies the record at loc, decompressing a WRITE into buf
 * (bufsz >= rec->length required, else -ENOBUFS).  Returns 0,
 * RW_ENOTFOUND when no such segment, RW_ECORRUPT naming segment and
 * offset, or -errno.
 */
int jr_reader_read_at(struct jr_reader *r, const struct jr_loc *loc,
		      struct jr_rec *rec, void *buf, size_t bufsz);

/*
 * jr_reader_read_at() without copying: verifies the record at loc where
 * the page cache holds it, through a read-only mapping of its segment,
 * and sets *payload to a raw WRITE's bytes inside that mapping, or to buf
 * for a compressed WRITE (decompressed there; bufsz >= rec->length, else
 * -ENOBUFS), or to NULL for other types.  The bytes stay valid and
 * unchanged until jr_reader_unmap() or jr_reader_close() — also when the
 * segment is renamed over (recompression) or deleted meanwhile.  The
 * caller must not read records that someone may cut off the file (only
 * recovery truncates, and only a torn tail, past every record indexed).
 * Returns what jr_reader_read_at() returns; a read error comes back as
 * -errno naming the segment.
 */
int jr_reader_map_at(struct jr_reader *r, const struct jr_loc *loc,
		     struct jr_rec *rec, const uint8_t **payload, void *buf,
		     size_t bufsz);

/* Drops the mappings jr_reader_map_at() made; its payloads become invalid.
 * No-op on NULL. */
void jr_reader_unmap(struct jr_reader *r);

/*
 * Lists the segments (sorted by first seq).  *out is malloc'ed and owned by
 * the caller (free()).  Returns the count (>= 0) or -errno.
 */
int jr_segments_list(const char *dir, struct jr_seginfo **out);

void jr_reader_close(struct jr_reader *r);

/* -------------------------------------------------------- recompression */

/*
 * Recompression of sealed segments (journal/rewrite.c, FORMAT.md "PAD
 * record"): a raw WRITE whose zstd form frees at least one whole
 * file-system block is rewritten at the same offset as a compressed
 * record followed by a PAD record whose body is a hole, in a copy of the
 * segment (version 2) that is verified, synced and renamed over the
 * original.  Every record keeps its (segment, offset): locations held by
 * the index and by readers stay valid.  A crash leaves the original or
 * the copy.  Only segments that have a successor are rewritten.
 */
enum jr_rz_stage {
	JR_RZ_WRITTEN = 1, /* the copy is written, not yet synced */
	JR_RZ_SYNCED,      /* synced and checked, not yet renamed */
};

struct jr_recompress_opts {
	int level;      /* zstd level, 0 = JR_ZSTD_LEVEL_DEFAULT */
	bool dry_run;   /* measure what would be freed; write nothing */
	/* Tests: called at each stage; a non-zero return aborts with it. */
	int (*hook)(void *arg, enum jr_rz_stage stage);
	void *hook_arg;
};

struct jr_recompress_stats {
	uint64_t segments;      /* segments examined */
	uint64_t already;       /* of which rewritten by an earlier run */
	uint64_t rewritten;     /* of which replaced by a copy (a dry run: 0) */
	uint64_t writes;        /* WRITE records examined */
	uint64_t raw;           /* of which stored raw */
	uint64_t recompressed;  /* of which now (dry run: would be) compressed */
	uint64_t logical;       /* logical bytes of the WRITE records */
	uint64_t stored_before; /* their stored payload bytes, before */
	uint64_t stored_after;  /* and after */
	uint64_t alloc_before;  /* bytes allocated to the files (st_blocks) */
	uint64_t alloc_after;   /* after (a dry run: the estimate) */
};

/*
 * Recompresses segment first_seq of the journal in dir (see above); o
 * may be NULL.  A segment rewritten before (version 2) is only counted
 * (st->already).  Returns 0 with *st filled (may be NULL), RW_EBUSY when
 * the segment has no successor, RW_ENOTFOUND when it does not exist,
 * RW_ECORRUPT naming the segment and offset when a record is bad (the
 * segment is left as it is), or -errno; on failure the original stays.
 */
int jr_segment_recompress(const char *dir, uint64_t first_seq,
			  const struct jr_recompress_opts *o,
			  struct jr_recompress_stats *st);

/*
 * Recompresses every segment but the last that the watermark file
 * (dir/recompressed) does not list as examined, oldest first, then
 * advances the watermark (not in a dry run).  Removes leftovers of an
 * interrupted run first.  *total (may be NULL) sums the segments' stats.
 * 0 or the first error (the segments done before it stay done).
 */
int jr_recompress_journal(const char *dir, const struct jr_recompress_opts *o,
			  struct jr_recompress_stats *total);

/* Removes <segment>.rz copies an interrupted run left.  0 or -errno. */
int jr_recompress_cleanup(const char *dir);

/* The watermark: first seq of the newest segment examined, 0 if none. */
int jr_recompress_mark_get(const char *dir, uint64_t *through);

#endif /* RW_JOURNAL_H */
