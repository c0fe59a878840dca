/*
 * scan.c — reading segment files: a buffered window, record classification
 * (ok / end / torn / bad), the forward search that tells a torn tail from
 * mid-journal corruption, segment headers and the directory listing.
 *
 * The window is one buffer (1 MiB, grown only for a record whose header
 * was already bounds-checked) refilled with pread at the offset asked for.
 * Both writer recovery and readers use it, so the torn-versus-corrupt
 * rules of FORMAT.md are implemented exactly once.  mmap was rejected: a
 * file truncated or still being appended by another process turns reads
 * into SIGBUS, and errors must come back as codes.
 */
#include "journal/jr_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void jr_scan_init(struct jr_scan *sc, int fd)
{
	memset(sc, 0, sizeof(*sc));
	sc->fd = fd;
}

void jr_scan_fini(struct jr_scan *sc)
{
	free(sc->buf);
	sc->buf = NULL;
	sc->cap = 0;
	sc->blen = 0;
}

void jr_scan_invalidate(struct jr_scan *sc)
{
	sc->blen = 0;
	sc->boff = 0;
	sc->fsize = 0;
}

ssize_t jr_scan_fill(struct jr_scan *sc, uint64_t off, size_t n,
		     const uint8_t **p)
{
	return jr_scan_fill_w(sc, off, n, JR_SCAN_WINDOW, p);
}

ssize_t jr_scan_fill_w(struct jr_scan *sc, uint64_t off, size_t n,
		       size_t window, const uint8_t **p)
{
	if (off >= sc->boff && n <= sc->blen && off - sc->boff <= sc->blen - n) {
		*p = sc->buf + (off - sc->boff);
		return (ssize_t)n;
	}
	size_t want = n > window ? n : window;
	if (want > sc->cap) {
		uint8_t *nb = realloc(sc->buf, want);
		if (!nb)
			return -ENOMEM;
		sc->buf = nb;
		sc->cap = want;
	}
	sc->blen = 0;
	ssize_t r = rw_sys_pread_full(sc->fd, sc->buf, want, (off_t)off);
	if (r < 0)
		return r;
	sc->boff = off;
	sc->blen = (size_t)r;
	*p = sc->buf;
	return (size_t)r < n ? r : (ssize_t)n;
}

static int file_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

int jr_scan_record(struct jr_scan *sc, uint64_t off, bool verify,
		   struct jr_rec *rec, const uint8_t **payload,
		   const char **why)
{
	const uint8_t *p;
	uint8_t hdr[JR_HDR_SIZE];
	ssize_t n;

	*why = NULL;
	*payload = NULL;
	size_t win = JR_SCAN_WINDOW;
	if (!verify) {
		/* Headers only: 64 KiB holds a run of small records' headers,
		 * but after a large record (the last header far behind) it
		 * would copy 64 KiB to find one — rollback's header scans
		 * were 17% of its CPU time. */
		win = off - sc->hdr_off > JR_SCAN_HDR_WINDOW / 2
			? JR_SCAN_HDR_MIN : JR_SCAN_HDR_WINDOW;
		sc->hdr_off = off;
	}
	n = jr_scan_fill_w(sc, off, JR_HDR_SIZE, win, &p);
	if (n < 0)
		return (int)n;
	if (n == 0)
		return JR_SCAN_END;
	if (n < (ssize_t)JR_HDR_SIZE) {
		*why = "file ends inside a record header";
		return JR_SCAN_TORN;
	}
	memcpy(hdr, p, JR_HDR_SIZE);
	if (jr_rec_decode_why(hdr, rec, why))
		return JR_SCAN_BAD;
	size_t total = (size_t)jr_rec_total(rec);
	if (!verify) {
		/* Headers only: the payload must be in the file, which the
		 * cached size usually proves without a syscall. */
		uint64_t size = sc->fsize;
		if (size < off || size - off < total) {
			int err = file_size(sc->fd, &size);
			if (err)
				return err;
			sc->fsize = size;
		}
		if (size < off || size - off < total) {
			*why = "file ends inside a record payload";
			return JR_SCAN_TORN;
		}
		return JR_SCAN_OK;
	}
	n = jr_scan_fill(sc, off, total, &p);
	if (n < 0)
		return (int)n;
	if ((size_t)n < total) {
		*why = "file ends inside a record payload";
		return JR_SCAN_TORN;
	}
	if (jr_rec_verify(rec, p, p + JR_HDR_SIZE)) {
		*why = "record checksum mismatch";
		return JR_SCAN_BAD;
	}
	*payload = p + JR_HDR_SIZE;
	return JR_SCAN_OK;
}

int jr_scan_find_valid(struct jr_scan *sc, uint64_t from, uint64_t after_seq,
		       uint64_t *found_off)
{
	uint64_t size = 0;
	const uint8_t *p;
	struct jr_rec rec;
	uint8_t magic[4];
	int err = file_size(sc->fd, &size);

	if (err)
		return err;
	rw_put_le32(magic, JR_REC_MAGIC);
	for (uint64_t off = from; off + JR_HDR_SIZE <= size; off++) {
		ssize_t n = jr_scan_fill(sc, off, JR_HDR_SIZE, &p);
		if (n < 0)
			return (int)n;
		if (n < (ssize_t)JR_HDR_SIZE)
			break;
		/* Skip ahead to the next magic inside the window. */
		size_t avail = sc->blen - (size_t)(off - sc->boff);
		const uint8_t *m = memmem(p, avail, magic, 4);
		if (!m) {
			off += avail >= 4 ? avail - 4 : 0;
			continue;
		}
		off += (uint64_t)(m - p);
		n = jr_scan_fill(sc, off, JR_HDR_SIZE, &p);
		if (n < 0)
			return (int)n;
		if (n < (ssize_t)JR_HDR_SIZE)
			break;
		if (jr_rec_decode(p, &rec) || rec.seq <= after_seq)
			continue;
		uint64_t total = jr_rec_total(&rec);
		if (size - off < total)
			continue;
		n = jr_scan_fill(sc, off, (size_t)total, &p);
		if (n < 0)
			return (int)n;
		if ((uint64_t)n < total)
			continue;
		if (jr_rec_verify(&rec, p, p + JR_HDR_SIZE) == 0) {
			*found_off = off;
			return 1;
		}
	}
	return 0;
}

int jr_segment_read_header(int fd, const char *path, uint64_t name_seq,
			   struct jr_seghdr *h)
{
	uint8_t buf[JR_SEG_HDR_SIZE];
	const char *why = NULL;
	ssize_t n = rw_sys_pread_full(fd, buf, sizeof(buf), 0);
	int err;

	if (n < 0)
		return rw_err_set((int)n, "cannot read segment '%s': %s", path,
				  rw_strerror((int)n));
	if (n < (ssize_t)sizeof(buf))
		return rw_err_set(RW_ECORRUPT, "segment '%s' is shorter than "
				  "its header (%zd bytes)", path, n);
	err = jr_seghdr_decode(buf, h, &why);
	if (err)
		return rw_err_set(err, "segment '%s': %s", path, why);
	if (h->first_seq != name_seq)
		return rw_err_set(RW_ECORRUPT, "segment '%s': header says first "
				  "seq %llu, name says %llu", path,
				  (unsigned long long)h->first_seq,
				  (unsigned long long)name_seq);
	return 0;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct jr_seginfo *x = a, *y = b;
	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

int jr_segments_list(const char *dir, struct jr_seginfo **out)
{
	DIR *d = NULL;
	struct jr_seginfo *v = NULL;
	size_t n = 0, cap = 0;
	int err = 0;

	*out = NULL;
	d = opendir(dir);
	if (!d) {
		err = rw_err_set(-errno, "cannot open journal '%s': %s", dir,
				 strerror(errno));
		goto out;
	}
	for (;;) {
		struct dirent *e;
		struct stat st;
		uint64_t seq;

		errno = 0;
		e = readdir(d);
		if (!e) {
			if (errno)
				err = rw_err_set(-errno, "cannot list journal "
						 "'%s': %s", dir, strerror(errno));
			break;
		}
		if (!jr_is_segment_name(e->d_name, &seq))
			continue;
		if (fstatat(dirfd(d), e->d_name, &st, 0) < 0) {
			if (errno == ENOENT)
				continue; /* removed by compaction meanwhile */
			err = rw_err_set(-errno, "cannot stat segment '%s/%s': %s",
					 dir, e->d_name, strerror(errno));
			goto out;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct jr_seginfo *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				err = -ENOMEM;
				goto out;
			}
			v = nv;
			cap = nc;
		}
		v[n].first_seq = seq;
		v[n].bytes = (uint64_t)st.st_size;
		n++;
	}
	if (err)
		goto out;
	if (n > (size_t)INT32_MAX) {
		err = -EOVERFLOW;
		goto out;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_seg);
	*out = v;
	v = NULL;
out:
	if (d)
		closedir(d);
	free(v);
	return err ? err : (int)n;
}
