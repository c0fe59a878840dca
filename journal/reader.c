/*
 * reader.c — sequential and random reads of a journal, possibly while a
 * writer (in this or another process) appends to it.
 *
 * A reader walks segments in name order through the shared scanner
 * (scan.c): every record is bounds-checked from its header before any
 * buffer is sized, crc-verified (unless JR_READ_HEADERS), chained (seq
 * increasing, prev_seq linking to the previous record) and decompressed
 * into a reader-owned buffer whose size is the checked logical length.
 * The end of the last segment is not an error: a record the writer has
 * not finished writing looks torn, so the reader returns 0 without moving
 * and a later call retries from the same offset.  The directory is
 * re-listed whenever the reader runs out of data, which is how it follows
 * rollover; a segment that has a successor but ends without a SEAL is
 * corrupt, but only after a fresh look at its bytes, because the writer
 * seals before it creates the successor.  PAD records (version-2
 * segments rewritten by rewrite.c) are skipped: they only fill the space
 * a recompressed record gave up, so every record keeps its offset.
 *
 * Rejected alternative: inotify to follow the writer.  It is Linux-only
 * plumbing for something a caller polling jr_reader_next() already does,
 * and it would still need the re-list logic for correctness.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

struct jr_reader {
	char *dir;
	unsigned flags;
	struct jr_seginfo *segs;
	int nsegs;

	bool has_cur;           /* cur_first names the current/last segment */
	uint64_t cur_first;
	int fd;                 /* open on cur_first, or -1 */
	struct jr_scan sc;
	struct jr_seghdr h;
	uint64_t pos;
	uint64_t seg_nrec;
	char path[PATH_MAX];

	bool have_last;
	uint64_t last_seq;
	uint64_t seek_to;

	ZSTD_DCtx *dctx;
	uint8_t *out;
	size_t outcap;

	int at_fd;
	uint64_t at_seg;
	uint8_t *at_buf;
	size_t at_cap;

	/* jr_reader_map_at(): read-only mappings of segments, kept until
	 * jr_reader_unmap() (a segment may be mapped twice when it grew). */
	struct jr_map *maps;
	size_t nmaps, mapcap;
};

struct jr_map {
	uint64_t seg;           /* first seq of the segment */
	uint8_t *addr;
	size_t len;
};

static int relist(struct jr_reader *r)
{
	struct jr_seginfo *v = NULL;
	int n = jr_segments_list(r->dir, &v);

	if (n < 0)
		return n;
	free(r->segs);
	r->segs = v;
	r->nsegs = n;
	return 0;
}

/* Index of the first listed segment after the current one, or -1. */
static int next_index(const struct jr_reader *r)
{
	for (int i = 0; i < r->nsegs; i++)
		if (!r->has_cur || r->segs[i].first_seq > r->cur_first)
			return i;
	return -1;
}

static void close_cur(struct jr_reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	jr_scan_invalidate(&r->sc);
	r->sc.fd = -1;
}

/* Opens the next segment.  1 when opened, 0 when there is none, or error. */
static int open_next(struct jr_reader *r)
{
	int i = next_index(r);
	int err;

	if (i < 0) {
		if ((err = relist(r)))
			return err;
		i = next_index(r);
		if (i < 0)
			return 0;
	}
	char name[32];
	jr_segment_name(r->segs[i].first_seq, name);
	snprintf(r->path, sizeof(r->path), "%s/%s", r->dir, name);
	int fd = rw_sys_open(r->path, O_RDONLY, 0);
	if (fd < 0)
		return rw_err_set(fd, "cannot open segment '%s': %s", r->path,
				  rw_strerror(fd));
	err = jr_segment_read_header(fd, r->path, r->segs[i].first_seq, &r->h);
	if (err) {
		close(fd);
		return err;
	}
	r->fd = fd;
	r->sc.fd = fd;
	jr_scan_invalidate(&r->sc);
	r->has_cur = true;
	r->cur_first = r->segs[i].first_seq;
	r->pos = JR_SEG_HDR_SIZE;
	r->seg_nrec = 0;
	return 1;
}

static int corrupt(struct jr_reader *r, const char *why)
{
	return rw_err_set(RW_ECORRUPT, "corrupt record in segment '%s' at "
			  "offset %llu (after seq %llu): %s", r->path,
			  (unsigned long long)r->pos,
			  (unsigned long long)r->last_seq, why);
}

static int decompress(ZSTD_DCtx **dctx, const struct jr_rec *rec,
		      const uint8_t *src, void *dst, const char **why)
{
	if (!*dctx) {
		*dctx = ZSTD_createDCtx();
		if (!*dctx)
			return -ENOMEM;
	}
	unsigned long long fcs = ZSTD_getFrameContentSize(src, rec->stored_len);
	if (fcs != rec->length) {
		*why = "zstd frame size differs from the record length";
		return RW_ECORRUPT;
	}
	if (ZSTD_findFrameCompressedSize(src, rec->stored_len) !=
	    rec->stored_len) {
		*why = "zstd frame does not fill the payload";
		return RW_ECORRUPT;
	}
	size_t n = ZSTD_decompressDCtx(*dctx, dst, rec->length, src,
				       rec->stored_len);
	if (ZSTD_isError(n) || n != rec->length) {
		*why = "zstd frame does not decompress";
		return RW_ECORRUPT;
	}
	return 0;
}

static bool later_segment_exists(const struct jr_reader *r)
{
	return next_index(r) >= 0;
}

/* Returns 1 with a record, 0 at the clean end, or an error. */
static int next_rec(struct jr_reader *r, struct jr_rec *rec,
		    struct jr_loc *loc, const void **payload)
{
	bool verify = !(r->flags & JR_READ_HEADERS);
	bool looked_again = false, rechecked = false;
	const uint8_t *p;
	const char *why;
	int err;

	for (;;) {
		if (r->fd < 0) {
			err = open_next(r);
			if (err <= 0)
				return err;
			looked_again = false;
		}
		int res = jr_scan_record(&r->sc, r->pos, verify, rec, &p, &why);
		if (res < 0)
			return rw_err_set(res, "cannot read segment '%s': %s",
					  r->path, rw_strerror(res));
		if (res == JR_SCAN_OK && rec->type == JR_PAD) {
			/* Filler after a recompressed record: no seq of its
			 * own, skipped like free space. */
			const char *bad = NULL;
			if (r->h.version < JR_SEG_VERSION_PAD)
				bad = "pad record in a version-1 segment";
			else if (rec->disk_id != r->h.disk_id)
				bad = "disk id differs from the segment's";
			else if (!r->seg_nrec || rec->seq != r->last_seq)
				bad = "pad does not follow the last record";
			if (bad)
				return corrupt(r, bad);
			r->pos += jr_rec_total(rec);
			continue;
		}
		if (res == JR_SCAN_OK) {
			const char *bad = NULL;
			if (rec->disk_id != r->h.disk_id)
				bad = "disk id differs from the segment's";
			else if (rec->seq < r->cur_first)
				bad = "seq below the segment's first seq";
			else if (rec->type == JR_SEAL &&
				 (!r->seg_nrec || rec->seq != r->last_seq))
				bad = "seal does not follow the last record";
			else if (rec->type != JR_SEAL && r->have_last &&
				 rec->seq <= r->last_seq)
				bad = "seq not increasing";
			else if (rec->type != JR_SEAL && r->have_last &&
				 rec->prev_seq != r->last_seq)
				bad = "prev_seq does not link to the previous record";
			if (bad)
				return corrupt(r, bad);
			if (rec->type == JR_SEAL) {
				const uint8_t *q;
				ssize_t n = jr_scan_fill(&r->sc, r->pos + JR_HDR_SIZE,
							 1, &q);
				if (n < 0)
					return rw_err_set((int)n, "cannot read "
							  "segment '%s': %s", r->path,
							  rw_strerror((int)n));
				if (n > 0)
					return corrupt(r, "data after the seal record");
				close_cur(r);
				continue;
			}
			loc->segment = r->cur_first;
			loc->offset = r->pos;
			*payload = NULL;
			if (verify && rec->type == JR_WRITE &&
			    rec->seq >= r->seek_to) {
				if (rec->flags & JR_F_ZSTD) {
					if (rec->length > r->outcap) {
						uint8_t *nb = realloc(r->out, rec->length);
						if (!nb)
							return -ENOMEM;
						r->out = nb;
						r->outcap = rec->length;
					}
					err = decompress(&r->dctx, rec, p, r->out, &why);
					if (err == RW_ECORRUPT)
						return corrupt(r, why);
					if (err)
						return err;
					*payload = r->out;
				} else {
					*payload = p;
				}
			}
			r->have_last = true;
			r->last_seq = rec->seq;
			r->seg_nrec++;
			r->pos += jr_rec_total(rec);
			return 1;
		}
		/* END, TORN or BAD. */
		if (!later_segment_exists(r) && !looked_again) {
			if ((err = relist(r)))
				return err;
			if (later_segment_exists(r)) {
				/* Rolled over meanwhile: its seal is written
				 * now, so look at the bytes once more. */
				looked_again = true;
				jr_scan_invalidate(&r->sc);
				continue;
			}
		}
		if (later_segment_exists(r))
			return corrupt(r, res == JR_SCAN_BAD ? why :
				       "segment ends without a seal record but "
				       "a later segment exists");
		if (res != JR_SCAN_END) {
			uint64_t found;
			int f = jr_scan_find_valid(&r->sc, r->pos + 1,
						   r->have_last ? r->last_seq : 0,
						   &found);
			if (f < 0)
				return rw_err_set(f, "cannot read segment '%s': %s",
						  r->path, rw_strerror(f));
			if (f && !rechecked) {
				/* The writer may have completed this record
				 * since we read it: the file fills in order,
				 * so one fresh look decides. */
				rechecked = true;
				jr_scan_invalidate(&r->sc);
				continue;
			}
			if (f) {
				char msg[256];
				snprintf(msg, sizeof(msg), "%s; a valid record "
					 "follows at offset %llu", why,
					 (unsigned long long)found);
				return corrupt(r, msg);
			}
		}
		/* Clean end (or torn tail): retry from here next time. */
		jr_scan_invalidate(&r->sc);
		return 0;
	}
}

int jr_reader_next(struct jr_reader *r, struct jr_rec *rec,
		   struct jr_loc *loc, const void **payload)
{
	struct jr_rec tr;
	struct jr_loc tl;
	const void *tp = NULL;
	int err;

	if (!rec)
		rec = &tr;
	if (!loc)
		loc = &tl;
	/* After a seek, records below the target are checked, not returned. */
	while ((err = next_rec(r, rec, loc, &tp)) == 1 && rec->seq < r->seek_to)
		;
	if (err == 1)
		r->seek_to = 0;
	if (payload)
		*payload = err == 1 ? tp : NULL;
	return err;
}

int jr_reader_seek(struct jr_reader *r, uint64_t seq)
{
	int err = relist(r);

	if (err)
		return err;
	close_cur(r);
	r->has_cur = false;
	r->have_last = false;
	r->last_seq = 0;
	for (int i = r->nsegs - 1; i >= 0; i--) {
		if (r->segs[i].first_seq <= seq) {
			if (r->segs[i].first_seq > 0) {
				r->has_cur = true;
				r->cur_first = r->segs[i].first_seq - 1;
			}
			break;
		}
	}
	r->seek_to = seq;
	return 0;
}

int jr_reader_open(struct jr_reader **out, const char *dir, unsigned flags)
{
	struct jr_reader *r = NULL;
	int err = 0;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	r->at_fd = -1;
	r->flags = flags;
	jr_scan_init(&r->sc, -1);
	r->dir = strdup(dir);
	if (!r->dir) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = relist(r)))
		goto out;
	*out = r;
	r = NULL;
out:
	jr_reader_close(r);
	return err;
}

void jr_reader_close(struct jr_reader *r)
{
	if (!r)
		return;
	close_cur(r);
	jr_scan_fini(&r->sc);
	if (r->at_fd >= 0)
		close(r->at_fd);
	jr_reader_unmap(r);
	free(r->maps);
	ZSTD_freeDCtx(r->dctx);
	free(r->out);
	free(r->at_buf);
	free(r->segs);
	free(r->dir);
	free(r);
}

/* Opens r->at_fd on segment seg (path) unless it is open.  0 or error. */
static int at_open_seg(struct jr_reader *r, uint64_t seg, const char *path)
{
	struct jr_seghdr h;

	if (r->at_fd >= 0 && r->at_seg == seg)
		return 0;
	if (r->at_fd >= 0)
		close(r->at_fd);
	r->at_fd = -1;
	int fd = rw_sys_open(path, O_RDONLY, 0);
	if (fd == -ENOENT)
		return rw_err_set(RW_ENOTFOUND, "no segment '%s'", path);
	if (fd < 0)
		return rw_err_set(fd, "cannot open segment '%s': %s", path,
				  rw_strerror(fd));
	int err = jr_segment_read_header(fd, path, seg, &h);
	if (err) {
		close(fd);
		return err;
	}
	r->at_fd = fd;
	r->at_seg = seg;
	return 0;
}

/*
 * The common start of the read_at functions: clears rec, names loc's
 * segment in path (PATH_MAX bytes), opens it (see at_open_seg) and checks
 * that its offset can hold a record of the largest size at all.  0, the
 * open's error, or RW_ECORRUPT with *why (for at_done).
 */
static int at_open(struct jr_reader *r, const struct jr_loc *loc,
		   char path[PATH_MAX], struct jr_rec *rec, const char **why)
{
	char name[32];

	memset(rec, 0, sizeof(*rec));
	jr_segment_name(loc->segment, name);
	snprintf(path, PATH_MAX, "%s/%s", r->dir, name);
	int err = at_open_seg(r, loc->segment, path);
	if (err)
		return err;
	if (loc->offset >= JR_SEG_HDR_SIZE &&
	    loc->offset <= (uint64_t)INT64_MAX - JR_HDR_SIZE - JR_MAX_STORED)
		return 0;
	*why = "offset out of range";
	return RW_ECORRUPT;
}

/* Decodes the header at loc into rec and checks that a record (not a PAD)
 * of this segment starts there.  0 or RW_ECORRUPT with *why. */
static int at_check_header(const struct jr_loc *loc, const uint8_t *hdr,
			   struct jr_rec *rec, const char **why)
{
	if (jr_rec_decode_why(hdr, rec, why))
		return RW_ECORRUPT;
	if (rec->type == JR_PAD)
		*why = "a pad record, not a record, at this offset";
	else if (rec->seq < loc->segment)
		*why = "seq below the segment's first seq";
	else
		return 0;
	return RW_ECORRUPT;
}

/* The common end of the read_at functions: names the record in the
 * message of a corruption.  Returns err. */
static int at_done(int err, const char *why, const char *path,
		   const struct jr_loc *loc, const struct jr_rec *rec)
{
	if (err == RW_ECORRUPT && why)
		rw_err_set(err, "corrupt record in segment '%s' at offset %llu "
			   "(seq %llu): %s", path,
			   (unsigned long long)loc->offset,
			   (unsigned long long)rec->seq, why);
	return err;
}

/* The caller's buffer must hold rec's logical bytes.  0 or -ENOBUFS. */
static int at_room(const struct jr_rec *rec, const char *path, size_t bufsz)
{
	if (bufsz >= rec->length)
		return 0;
	return rw_err_set(-ENOBUFS, "record seq %llu in '%s' needs %u bytes, "
			  "buffer has %zu", (unsigned long long)rec->seq, path,
			  rec->length, bufsz);
}

int jr_reader_read_at(struct jr_reader *r, const struct jr_loc *loc,
		      struct jr_rec *rec, void *buf, size_t bufsz)
{
	char path[PATH_MAX];
	uint8_t hdr[JR_HDR_SIZE];
	const char *why = NULL;
	ssize_t n;
	int err = 0;

	if ((err = at_open(r, loc, path, rec, &why)))
		goto out;
	n = rw_sys_pread_full(r->at_fd, hdr, JR_HDR_SIZE, (off_t)loc->offset);
	if (n < 0) {
		err = rw_err_set((int)n, "cannot read segment '%s': %s", path,
				 rw_strerror((int)n));
		goto out;
	}
	if (n < (ssize_t)JR_HDR_SIZE) {
		why = "no record header at this offset";
		err = RW_ECORRUPT;
		goto out;
	}
	if ((err = at_check_header(loc, hdr, rec, &why)))
		goto out;
	/* A raw WRITE is read straight into the caller's buffer: restores
	 * and rollbacks read tens of MiB of records, and the copy out of
	 * at_buf was a third of their memory traffic. */
	bool direct = rec->type == JR_WRITE && !(rec->flags & JR_F_ZSTD) &&
		      buf && bufsz >= rec->stored_len;
	uint8_t *dst = direct ? buf : r->at_buf;
	if (!direct && rec->stored_len > r->at_cap) {
		uint8_t *nb = realloc(r->at_buf, rec->stored_len);
		if (!nb) {
			err = -ENOMEM;
			goto out;
		}
		r->at_buf = dst = nb;
		r->at_cap = rec->stored_len;
	}
	if (rec->stored_len) {
		n = rw_sys_pread_full(r->at_fd, dst, rec->stored_len,
				      (off_t)(loc->offset + JR_HDR_SIZE));
		if (n < 0) {
			err = rw_err_set((int)n, "cannot read segment '%s': %s",
					 path, rw_strerror((int)n));
			goto out;
		}
		if ((size_t)n < rec->stored_len) {
			why = "record extends past the end of the segment";
			err = RW_ECORRUPT;
			goto out;
		}
	}
	if (jr_rec_verify(rec, hdr, dst)) {
		why = "record checksum mismatch";
		err = RW_ECORRUPT;
		goto out;
	}
	if (rec->type != JR_WRITE)
		goto out;
	if ((err = at_room(rec, path, bufsz)))
		goto out;
	if (rec->flags & JR_F_ZSTD)
		err = decompress(&r->dctx, rec, r->at_buf, buf, &why);
	else if (!direct)
		memcpy(buf, r->at_buf, rec->length);
out:
	return at_done(err, why, path, loc, rec);
}

/* ------------------------------------------------------------ mapped reads */

/*
 * jr_reader_map_at() reads a record where the page cache holds it: the
 * segment is mapped read-only once, the record's pages are populated in
 * one call (MADV_POPULATE_READ, which returns a read error instead of
 * raising SIGBUS later) and its crc is verified in place.  A rollback
 * needs a few blocks out of records of up to 1 MiB: pread copied each
 * whole record into a fresh buffer first (perf: the copies and the
 * page faults of the buffers were most of the rollback's reading).
 * Rejected: reading only the needed blocks with pread — the crc covers
 * the whole payload, and a record is verified before any of it is used.
 */

void jr_reader_unmap(struct jr_reader *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nmaps; i++)
		munmap(r->maps[i].addr, r->maps[i].len);
	r->nmaps = 0;
}

/*
 * Sets *base to a mapping of segment seg (open on r->at_fd) at least end
 * bytes long.  Returns 0, 1 when the file is shorter than end, or error.
 */
static int map_get(struct jr_reader *r, uint64_t seg, const char *path,
		   uint64_t end, const uint8_t **base)
{
	struct stat st;

	for (size_t i = r->nmaps; i-- > 0;) {
		if (r->maps[i].seg == seg && r->maps[i].len >= end) {
			*base = r->maps[i].addr;
			return 0;
		}
	}
	if (fstat(r->at_fd, &st)) {
		int e = -errno;
		return rw_err_set(e, "cannot stat segment '%s': %s", path,
				  rw_strerror(e));
	}
	if (st.st_size < 0 || (uint64_t)st.st_size < end)
		return 1;
	if (r->nmaps == r->mapcap) {
		size_t nc = r->mapcap ? 2 * r->mapcap : 8;
		struct jr_map *v = realloc(r->maps, nc * sizeof(*v));
		if (!v)
			return -ENOMEM;
		r->maps = v;
		r->mapcap = nc;
	}
	void *a = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED,
		       r->at_fd, 0);
	if (a == MAP_FAILED) {
		int e = -errno;
		return rw_err_set(e, "cannot map segment '%s': %s", path,
				  rw_strerror(e));
	}
	r->maps[r->nmaps++] = (struct jr_map){ seg, a, (size_t)st.st_size };
	*base = a;
	return 0;
}

/* Faults in [p, p + n) of a mapping; a read error comes back as -errno. */
static int populate(const uint8_t *p, size_t n)
{
#ifdef MADV_POPULATE_READ
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)p & ~(pg - 1);
	if (madvise((void *)a, (uintptr_t)p + n - a, MADV_POPULATE_READ) &&
	    errno != EINVAL)
		return -errno;
#else
	(void)p;
	(void)n;
#endif
	return 0;
}

int jr_reader_map_at(struct jr_reader *r, const struct jr_loc *loc,
		     struct jr_rec *rec, const uint8_t **payload, void *buf,
		     size_t bufsz)
{
	char path[PATH_MAX];
	const uint8_t *base = NULL;
	const char *why = NULL;
	int err;

	*payload = NULL;
	if ((err = at_open(r, loc, path, rec, &why)))
		goto out;
	err = map_get(r, loc->segment, path, loc->offset + JR_HDR_SIZE, &base);
	if (err == 1) {
		why = "no record header at this offset";
		err = RW_ECORRUPT;
	}
	if (err)
		goto out;
	const uint8_t *hdr = base + loc->offset;
	if ((err = populate(hdr, JR_HDR_SIZE)))
		goto read_err;
	if ((err = at_check_header(loc, hdr, rec, &why)))
		goto out;
	uint64_t end = loc->offset + JR_HDR_SIZE + rec->stored_len;
	err = map_get(r, loc->segment, path, end, &base);
	if (err == 1) {
		why = "record extends past the end of the segment";
		err = RW_ECORRUPT;
	}
	if (err)
		goto out;
	hdr = base + loc->offset;
	const uint8_t *stored = hdr + JR_HDR_SIZE;
	if (rec->stored_len && (err = populate(stored, rec->stored_len)))
		goto read_err;
	if (jr_rec_verify(rec, hdr, stored)) {
		why = "record checksum mismatch";
		err = RW_ECORRUPT;
		goto out;
	}
	if (rec->type != JR_WRITE)
		goto out;
	if (!(rec->flags & JR_F_ZSTD)) {
		*payload = stored;
		goto out;
	}
	if ((err = at_room(rec, path, bufsz)))
		goto out;
	if (!(err = decompress(&r->dctx, rec, stored, buf, &why)))
		*payload = buf;
out:
	return at_done(err, why, path, loc, rec);
read_err:
	return rw_err_set(err, "cannot read segment '%s' at offset %llu: %s",
			  path, (unsigned long long)loc->offset,
			  rw_strerror(err));
}
