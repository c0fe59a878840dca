/*
 * rewrite.c — recompressing sealed segments: WRITE records stored raw
 * (a flush found them before a compression worker did, raw_when_behind)
 * are replaced by their zstd form, and the space they gave up is freed.
 *
 * How: a sealed segment that has a successor is read and verified record
 * by record (crc, chain, seal), and a copy is written to <name>.rz.  The
 * copy has a version-2 segment header; each raw WRITE whose compressed
 * form frees at least one whole file-system block is written at its old
 * offset as a compressed record followed by a PAD record whose body runs
 * up to the next record.  That body is never written, so the blocks it
 * spans are holes of the copy: the space is freed while every record
 * keeps its (segment, offset), and the index, which names records by
 * location, stays valid untouched.  Every other record is copied byte for
 * byte.  Each compressed frame is decompressed and compared with the raw
 * payload before it is written; the copy is fdatasynced, read back and
 * checked (same records at the same offsets, every crc), then renamed
 * over the original and the directory fsynced.  A crash leaves the
 * original (plus an .rz leftover that the next run removes) or the copy;
 * a reader that opened the original keeps reading it (the inode lives
 * until it closes).  Which segments were examined is remembered in
 * journal/recompressed (a watermark, FORMAT.md) so a scheduled run reads
 * each segment once.
 *
 * Rejected alternatives: moving records together to free space between
 * small records too — every moved record would need its index entries
 * rewritten, and a concurrent reader holding a location from before
 * would find another record there; punching holes in the sealed file in
 * place — a sealed segment is never modified, and a crash halfway would
 * leave a file no reader can classify; recompressing records whose gain
 * stays inside one block — nothing is freed, readers only pay the
 * decompression.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define RZ_SUFFIX ".rz"
#define RZ_MARK "recompressed"
#define RZ_MARK_MAGIC "RWRECMP1"
#define RZ_MARK_SIZE 28u
#define RZ_OBUF (1u << 20)

/* One record of the original: where it is and which seq it holds. */
struct rz_rec {
	uint64_t off;
	uint64_t seq;
	uint8_t type;
};

struct rz {
	const char *path;
	char tmp[PATH_MAX + 8];
	int fd, out;
	uint64_t blk;
	struct jr_scan sc;
	struct jr_cctx *cc;
	ZSTD_DCtx *dctx;
	uint8_t *zbuf, *chk;
	size_t zcap, chkcap;
	uint8_t *obuf;          /* pending output: obuf[0..olen) goes at ooff */
	size_t olen;
	uint64_t ooff;
	struct rz_rec *recs;
	size_t nrecs, capr;
};

static int out_flush(struct rz *z)
{
	int err = 0;

	if (z->olen && z->out >= 0) {
		err = rw_sys_pwrite_full(z->out, z->obuf, z->olen, (off_t)z->ooff);
		if (err)
			err = rw_err_set(err, "cannot write '%s': %s", z->tmp,
					 rw_strerror(err));
	}
	z->ooff += z->olen;
	z->olen = 0;
	return err;
}

/* Queues n bytes for file offset off (>= what was queued before). */
static int out_put(struct rz *z, uint64_t off, const void *p, size_t n)
{
	int err;

	if (off != z->ooff + z->olen || z->olen + n > RZ_OBUF) {
		if ((err = out_flush(z)))
			return err;
		z->ooff = off;
	}
	if (n > RZ_OBUF) { /* a large record goes out on its own */
		if (z->out >= 0 &&
		    (err = rw_sys_pwrite_full(z->out, p, n, (off_t)off)))
			return rw_err_set(err, "cannot write '%s': %s", z->tmp,
					  rw_strerror(err));
		z->ooff = off + n;
		return 0;
	}
	memcpy(z->obuf + z->olen, p, n);
	z->olen += n;
	return 0;
}

static int grow(uint8_t **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	uint8_t *nb = realloc(*p, need);
	if (!nb)
		return -ENOMEM;
	*p = nb;
	*cap = need;
	return 0;
}

static int rec_push(struct rz *z, uint64_t off, uint64_t seq, uint8_t type)
{
	if (z->nrecs == z->capr) {
		size_t nc = z->capr ? z->capr * 2 : 4096;
		struct rz_rec *nv = realloc(z->recs, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		z->recs = nv;
		z->capr = nc;
	}
	z->recs[z->nrecs++] = (struct rz_rec){ off, seq, type };
	return 0;
}

static int bad(const struct rz *z, uint64_t off, uint64_t seq, const char *why)
{
	return rw_err_set(RW_ECORRUPT, "corrupt record in segment '%s' at "
			  "offset %llu (after seq %llu): %s", z->path,
			  (unsigned long long)off, (unsigned long long)seq, why);
}

/*
 * Whether the raw WRITE rec could free a whole block at all: its
 * compressed form (a frame is at least a few bytes) plus a PAD header
 * must leave a block's worth of the payload.  A 4 KiB record never does:
 * it is not even compressed to find out.
 */
static bool could_free(const struct rz *z, const struct jr_rec *rec)
{
	return rec->type == JR_WRITE && !(rec->flags & JR_F_ZSTD) &&
	       rec->length >= z->blk + JR_HDR_SIZE + 16;
}

/*
 * Tries the raw WRITE rec (payload p) at off: when its compressed form
 * frees a whole block, queues the compressed record and its PAD, adds
 * the freed bytes to *freed and returns 1; 0 to copy it as it is.
 */
static int try_record(struct rz *z, int level, uint64_t off,
		      const struct jr_rec *rec, const uint8_t *p, uint64_t *freed,
		      uint32_t *new_len)
{
	size_t bound = jr_zstd_bound(rec->length);
	int err;

	if (!could_free(z, rec))
		return 0;
	if ((err = grow(&z->zbuf, &z->zcap, bound)))
		return err;
	size_t n = jr_zstd_compress(z->cc, level, z->zbuf, z->zcap, p,
				    rec->length);
	if (!n)
		return 0;
	uint64_t end = off + JR_HDR_SIZE + rec->length;        /* next record */
	uint64_t used = off + 2 * (uint64_t)JR_HDR_SIZE + n;   /* + PAD header */
	uint64_t hole_lo = (used + z->blk - 1) / z->blk * z->blk;
	uint64_t hole_hi = end / z->blk * z->blk;
	if (used > end || hole_hi <= hole_lo)
		return 0; /* nothing whole to free: keep it raw */
	/* The frame must give back exactly the payload. */
	if ((err = grow(&z->chk, &z->chkcap, rec->length)))
		return err;
	if (!z->dctx && !(z->dctx = ZSTD_createDCtx()))
		return -ENOMEM;
	size_t d = ZSTD_decompressDCtx(z->dctx, z->chk, rec->length, z->zbuf, n);
	if (ZSTD_isError(d) || d != rec->length || memcmp(z->chk, p, d))
		return rw_err_set(-EIO, "zstd round trip of seq %llu in '%s' "
				  "does not give the payload back",
				  (unsigned long long)rec->seq, z->path);
	struct jr_rec c = *rec, pad = { 0 };
	uint8_t h[2 * JR_HDR_SIZE];
	c.flags = JR_F_ZSTD;
	c.stored_len = (uint32_t)n;
	pad.type = JR_PAD;
	pad.seq = pad.prev_seq = rec->seq;
	pad.ts_ns = rec->ts_ns;
	pad.disk_id = rec->disk_id;
	pad.stored_len = (uint32_t)(end - used);
	jr_rec_encode(&c, h, z->zbuf);
	if ((err = out_put(z, off, h, JR_HDR_SIZE)) ||
	    (err = out_put(z, off + JR_HDR_SIZE, z->zbuf, n)))
		return err;
	jr_rec_encode(&pad, h + JR_HDR_SIZE, NULL);
	if ((err = out_put(z, used - JR_HDR_SIZE, h + JR_HDR_SIZE, JR_HDR_SIZE)))
		return err;
	*freed += hole_hi - hole_lo;
	*new_len = (uint32_t)n;
	return 1;
}

/*
 * Reads the copy back: the same records at the same offsets (PADs only
 * right after a record), every crc, the seal last.
 */
static int check_copy(struct rz *z, uint64_t first_seq, uint64_t size)
{
	struct jr_scan sc;
	struct jr_seghdr h;
	struct jr_rec rec;
	const uint8_t *p;
	const char *why;
	uint64_t pos = JR_SEG_HDR_SIZE;
	size_t i = 0;
	int err;

	if ((err = jr_segment_read_header(z->out, z->tmp, first_seq, &h)))
		return err;
	if (h.version != JR_SEG_VERSION_PAD)
		return rw_err_set(-EIO, "copy '%s' has version %u", z->tmp,
				  h.version);
	jr_scan_init(&sc, z->out);
	for (;;) {
		int res = jr_scan_record(&sc, pos, true, &rec, &p, &why);
		if (res < 0) {
			err = rw_err_set(res, "cannot read '%s': %s", z->tmp,
					 rw_strerror(res));
			break;
		}
		if (res == JR_SCAN_END) {
			err = i == z->nrecs && pos == size ? 0 :
				rw_err_set(-EIO, "copy '%s' ends early at %llu",
					   z->tmp, (unsigned long long)pos);
			break;
		}
		if (res != JR_SCAN_OK) {
			err = rw_err_set(-EIO, "copy '%s' at offset %llu: %s",
					 z->tmp, (unsigned long long)pos, why);
			break;
		}
		if (rec.type == JR_PAD) {
			if (!i || rec.seq != z->recs[i - 1].seq) {
				err = rw_err_set(-EIO, "copy '%s': misplaced pad "
						 "at %llu", z->tmp,
						 (unsigned long long)pos);
				break;
			}
		} else if (i >= z->nrecs || z->recs[i].off != pos ||
			   z->recs[i].seq != rec.seq || z->recs[i].type != rec.type) {
			err = rw_err_set(-EIO, "copy '%s': record at %llu differs "
					 "from the original", z->tmp,
					 (unsigned long long)pos);
			break;
		} else {
			i++;
		}
		pos += jr_rec_total(&rec);
	}
	jr_scan_fini(&sc);
	return err;
}

static void rz_fini(struct rz *z)
{
	if (z->out >= 0) {
		close(z->out);
		unlink(z->tmp); /* only reached when the copy was not renamed */
	}
	if (z->fd >= 0)
		close(z->fd);
	jr_scan_fini(&z->sc);
	jr_cctx_free(z->cc);
	ZSTD_freeDCtx(z->dctx);
	free(z->zbuf);
	free(z->chk);
	free(z->obuf);
	free(z->recs);
}

static uint64_t alloc_bytes(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512u;
}

int jr_segment_recompress(const char *dir, uint64_t first_seq,
			  const struct jr_recompress_opts *o,
			  struct jr_recompress_stats *st)
{
	struct jr_recompress_opts dflt = { 0 };
	struct jr_recompress_stats s = { 0 };
	struct jr_seginfo *segs = NULL;
	struct rz z = { .fd = -1, .out = -1 };
	char path[PATH_MAX], name[32];
	struct jr_seghdr h;
	struct stat sb;
	uint64_t pos = JR_SEG_HDR_SIZE, last = 0, freed = 0;
	bool sealed = false, successor = false;
	int level, n, err = 0;

	if (!o)
		o = &dflt;
	level = o->level ? o->level : JR_ZSTD_LEVEL_DEFAULT;
	jr_segment_name(first_seq, name);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	snprintf(z.tmp, sizeof(z.tmp), "%s%s", path, RZ_SUFFIX);
	z.path = path;
	jr_scan_init(&z.sc, -1);

	/* Only a segment with a successor: it is sealed for good, and
	 * recovery (which scans the last segment) never meets a PAD. */
	n = jr_segments_list(dir, &segs);
	if (n < 0) {
		err = n;
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (segs[i].first_seq > first_seq)
			successor = true;
	free(segs);
	if (!successor) {
		err = rw_err_set(RW_EBUSY, "segment '%s' is the journal's last; "
				 "only segments with a successor are rewritten",
				 path);
		goto out;
	}
	z.fd = rw_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (z.fd < 0) {
		err = rw_err_set(z.fd == -ENOENT ? RW_ENOTFOUND : z.fd,
				 "cannot open segment '%s': %s", path,
				 rw_strerror(z.fd));
		goto out;
	}
	if ((err = jr_segment_read_header(z.fd, path, first_seq, &h)))
		goto out;
	if (fstat(z.fd, &sb) < 0) {
		err = rw_err_set(-errno, "cannot stat '%s': %s", path,
				 strerror(errno));
		goto out;
	}
	s.segments = 1;
	s.alloc_before = s.alloc_after = alloc_bytes(&sb);
	if (h.version != JR_SEG_VERSION) {
		s.already = 1; /* rewritten before */
		goto out;
	}
	z.blk = sb.st_blksize > 0 ? (uint64_t)sb.st_blksize : 4096;
	z.sc.fd = z.fd;
	if ((err = jr_cctx_new(&z.cc, level)))
		goto out;
	if (!(z.obuf = malloc(RZ_OBUF))) {
		err = -ENOMEM;
		goto out;
	}
	/* A header-only pass first: most segments of small random writes
	 * hold no record that could free a block, and are only counted. */
	{
		bool any = false, clean = false;
		uint8_t prev = 0;
		struct jr_rec rec;
		const uint8_t *p;
		const char *why;
		for (uint64_t q = JR_SEG_HDR_SIZE;;) {
			int res = jr_scan_record(&z.sc, q, false, &rec, &p, &why);
			if (res < 0) {
				err = rw_err_set(res, "cannot read segment '%s': %s",
						 path, rw_strerror(res));
				goto out;
			}
			if (res != JR_SCAN_OK) {
				/* Anything but a seal at the end: the verifying
				 * pass below says what is wrong. */
				clean = res == JR_SCAN_END && prev == JR_SEAL;
				break;
			}
			prev = rec.type;
			if (could_free(&z, &rec)) {
				any = true;
				break;
			}
			if (rec.type == JR_WRITE) {
				s.writes++;
				s.raw += !(rec.flags & JR_F_ZSTD);
				s.logical += rec.length;
				s.stored_before += rec.stored_len;
				s.stored_after += rec.stored_len;
			}
			q += jr_rec_total(&rec);
		}
		if (!any && clean)
			goto out; /* nothing to gain: counted, left as it is */
		s.writes = s.raw = s.logical = s.stored_before = s.stored_after = 0;
		jr_scan_invalidate(&z.sc);
	}
	if (!o->dry_run) {
		(void)unlink(z.tmp); /* leftover of an interrupted run */
		z.out = rw_sys_open(z.tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
				    0644);
		if (z.out < 0) {
			err = rw_err_set(z.out, "cannot create '%s': %s", z.tmp,
					 rw_strerror(z.out));
			goto out;
		}
		uint8_t hb[JR_SEG_HDR_SIZE];
		struct jr_seghdr nh = h;
		nh.version = JR_SEG_VERSION_PAD;
		jr_seghdr_encode(&nh, hb);
		if ((err = out_put(&z, 0, hb, sizeof(hb))))
			goto out;
	}

	for (;;) {
		struct jr_rec rec;
		const uint8_t *p;
		const char *why;
		int res = jr_scan_record(&z.sc, pos, true, &rec, &p, &why);
		if (res < 0) {
			err = rw_err_set(res, "cannot read segment '%s': %s", path,
					 rw_strerror(res));
			goto out;
		}
		if (res == JR_SCAN_END)
			break;
		if (res != JR_SCAN_OK) {
			err = bad(&z, pos, last, why);
			goto out;
		}
		if (sealed) {
			err = bad(&z, pos, last, "record after the seal");
			goto out;
		}
		if (rec.disk_id != h.disk_id || rec.seq < first_seq ||
		    rec.type == JR_PAD ||
		    (rec.type == JR_SEAL ? rec.seq != last || !z.nrecs :
		     rec.seq <= last || (last && rec.prev_seq != last))) {
			err = bad(&z, pos, last, "record out of order, of another "
				  "disk, or a pad in a version-1 segment");
			goto out;
		}
		uint64_t total = jr_rec_total(&rec);
		int done = 0;
		uint32_t nl = rec.stored_len;
		if (rec.type == JR_WRITE) {
			s.writes++;
			s.logical += rec.length;
			s.stored_before += rec.stored_len;
			if (!(rec.flags & JR_F_ZSTD)) {
				s.raw++;
				done = try_record(&z, level, pos, &rec, p,
						  &freed, &nl);
				if (done < 0) {
					err = done;
					goto out;
				}
			}
			s.stored_after += nl;
			s.recompressed += (uint64_t)done;
		}
		/* The window may have moved: header and payload are
		 * contiguous in it again after a fill of the whole record. */
		if (!done && z.out >= 0) {
			const uint8_t *q;
			ssize_t got = jr_scan_fill(&z.sc, pos, (size_t)total, &q);
			if (got < 0 || (uint64_t)got < total) {
				err = rw_err_set(got < 0 ? (int)got : -EIO,
						 "cannot read segment '%s'", path);
				goto out;
			}
			if ((err = out_put(&z, pos, q, (size_t)total)))
				goto out;
		}
		if ((err = rec_push(&z, pos, rec.seq, rec.type)))
			goto out;
		if (rec.type == JR_SEAL)
			sealed = true;
		else
			last = rec.seq;
		pos += total;
	}
	if (!sealed) {
		err = bad(&z, pos, last, "segment has a successor but no seal");
		goto out;
	}
	s.alloc_after = s.alloc_before > freed ? s.alloc_before - freed : 0;
	if (o->dry_run || !s.recompressed)
		goto out; /* nothing to gain: the original stays */
	if ((err = out_flush(&z)))
		goto out;
	if (o->hook && (err = o->hook(o->hook_arg, JR_RZ_WRITTEN)))
		goto out;
	if ((err = rw_sys_fdatasync(z.out))) {
		err = rw_err_set(err, "cannot sync '%s': %s", z.tmp,
				 rw_strerror(err));
		goto out;
	}
	if ((err = check_copy(&z, first_seq, (uint64_t)sb.st_size)))
		goto out;
	if (o->hook && (err = o->hook(o->hook_arg, JR_RZ_SYNCED)))
		goto out;
	if ((err = rw_sys_rename(z.tmp, path))) {
		err = rw_err_set(err, "cannot rename '%s' to '%s': %s", z.tmp,
				 path, rw_strerror(err));
		goto out;
	}
	if (fstat(z.out, &sb) == 0)
		s.alloc_after = alloc_bytes(&sb);
	close(z.out);
	z.out = -1;
	s.rewritten = 1;
	if ((err = rw_sys_fsync_dir(dir)))
		err = rw_err_set(err, "cannot fsync journal '%s': %s", dir,
				 rw_strerror(err));
out:
	rz_fini(&z);
	if (st)
		*st = s;
	return err;
}

/* ------------------------------------------------------- the watermark */

int jr_recompress_mark_get(const char *dir, uint64_t *through)
{
	uint8_t b[RZ_MARK_SIZE + 1];
	char path[PATH_MAX];
	int fd;
	ssize_t n;

	*through = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, RZ_MARK);
	fd = rw_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return rw_err_set(fd, "cannot open '%s': %s", path, rw_strerror(fd));
	n = rw_sys_pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n < 0)
		return rw_err_set((int)n, "cannot read '%s': %s", path,
				  rw_strerror((int)n));
	/* A damaged watermark only costs a re-examination: start over. */
	if (n != RZ_MARK_SIZE || memcmp(b, RZ_MARK_MAGIC, 8) ||
	    rw_get_le32(b + 24) != rw_crc32c(0, b, 24) ||
	    rw_get_le32(b + 8) != 1 || rw_get_le32(b + 12) != 0)
		return 0;
	*through = rw_get_le64(b + 16);
	return 0;
}

static int mark_put(const char *dir, uint64_t through)
{
	uint8_t b[RZ_MARK_SIZE] = { 0 };
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd, err;

	snprintf(path, sizeof(path), "%s/%s", dir, RZ_MARK);
	snprintf(tmp, sizeof(tmp), "%s/%s.new", dir, RZ_MARK);
	memcpy(b, RZ_MARK_MAGIC, 8);
	rw_put_le32(b + 8, 1);
	rw_put_le64(b + 16, through);
	rw_put_le32(b + 24, rw_crc32c(0, b, 24));
	fd = rw_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rw_err_set(fd, "cannot create '%s': %s", tmp, rw_strerror(fd));
	err = rw_sys_pwrite_full(fd, b, sizeof(b), 0);
	if (!err)
		err = rw_sys_fdatasync(fd);
	close(fd);
	if (!err)
		err = rw_sys_rename(tmp, path);
	if (!err)
		err = rw_sys_fsync_dir(dir);
	if (err) {
		unlink(tmp);
		return rw_err_set(err, "cannot write '%s': %s", path, rw_strerror(err));
	}
	return 0;
}

int jr_recompress_cleanup(const char *dir)
{
	struct jr_seginfo *segs = NULL;
	char p[PATH_MAX], name[32];
	int n = jr_segments_list(dir, &segs);

	if (n < 0)
		return n;
	/* Leftovers are named after a segment; one whose segment was
	 * unlinked meanwhile is found by name too. */
	for (int i = -1; i < n; i++) {
		if (i < 0)
			snprintf(p, sizeof(p), "%s/%s.new", dir, RZ_MARK);
		else {
			jr_segment_name(segs[i].first_seq, name);
			snprintf(p, sizeof(p), "%s/%s%s", dir, name, RZ_SUFFIX);
		}
		int e = rw_sys_unlink(p);
		if (e && e != -ENOENT) {
			free(segs);
			return rw_err_set(e, "cannot remove '%s': %s", p,
					  rw_strerror(e));
		}
	}
	free(segs);
	return 0;
}

int jr_recompress_journal(const char *dir, const struct jr_recompress_opts *o,
			  struct jr_recompress_stats *total)
{
	struct jr_recompress_stats t = { 0 };
	struct jr_seginfo *segs = NULL;
	uint64_t through = 0, done = 0;
	int n, err;

	if ((err = jr_recompress_mark_get(dir, &through)))
		goto out;
	if (!(o && o->dry_run) && (err = jr_recompress_cleanup(dir)))
		goto out;
	n = jr_segments_list(dir, &segs);
	if (n < 0) {
		err = n;
		goto out;
	}
	for (int i = 0; i + 1 < n; i++) {
		struct jr_recompress_stats s;
		if (segs[i].first_seq <= through)
			continue;
		err = jr_segment_recompress(dir, segs[i].first_seq, o, &s);
		if (err == RW_ENOTFOUND) { /* unlinked by a compaction meanwhile */
			err = 0;
			continue;
		}
		if (err)
			break;
		t.segments += s.segments;
		t.already += s.already;
		t.writes += s.writes;
		t.raw += s.raw;
		t.recompressed += s.recompressed;
		t.logical += s.logical;
		t.stored_before += s.stored_before;
		t.stored_after += s.stored_after;
		t.alloc_before += s.alloc_before;
		t.alloc_after += s.alloc_after;
		t.rewritten += s.rewritten;
		done = segs[i].first_seq;
	}
	if (!err && done && !(o && o->dry_run))
		err = mark_put(dir, done);
out:
	free(segs);
	if (total)
		*total = t;
	return err;
}
