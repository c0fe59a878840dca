/*
 * writer.c — appending to a journal: sequencing, batching, group commit,
 * segment rollover and sticky errors.
 *
 * How: an append compresses its payload in the caller's thread (no lock),
 * then under the writer's mutex takes (seq, ts) from the shared clock,
 * encodes the header (crc over header + payload) and copies the record
 * into the active pending buffer.  Taking the seq under the same lock as
 * the copy makes file order equal seq order.  Getting bytes to the file
 * is done by one "I/O leader" at a time: it swaps the pending buffer with
 * the idle one, drops the lock, writes (and, for a flush, fdatasyncs)
 * through the back end, retakes the lock and publishes written_seq /
 * durable_seq.  Appenders keep filling the other buffer meanwhile; the
 * leader's buffer is untouched until its I/O completed (double
 * buffering).  Flushers whose target seq is already durable when they get
 * the lock return at once; the others wait for the running leader, and
 * the first to see it finish becomes the next one and syncs everything
 * appended so far (group commit).
 *
 * Rollover (size or age) runs under the mutex with no leader active:
 * write out + SEAL + fdatasync the old segment, then create the next one
 * (temp file, header, fdatasync, rename, fsync of the directory).  It is
 * rare (every 64 MiB or 10 minutes) and holding the mutex keeps records
 * from racing into the old file.  Rejected: pre-creating the next segment
 * in the background; it saves a few ms per 64 MiB at the price of empty
 * segments to reason about in recovery.
 *
 * Recovery (open): every segment but the last must carry a valid header
 * and end with a valid SEAL (only its last 64 bytes are read); the last
 * segment is scanned record by record and classified per FORMAT.md.
 */
#include "journal/jr_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

	uint64_t last_seq;      /* newest record of this journal */
	uint64_t last_ts;

	/* pending bytes: buf[active][0..plen) go to the file at poff */
	uint8_t *buf[2];
	size_t cap[2];
	int active;
	size_t plen;
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

void jr_writer_opts_default(struct jr_writer_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->segment_bytes = 64ull << 20;
	o->segment_age_ns = 600ull * 1000000000ull;
	o->batch_bytes = 1u << 20;
	o->backend = JR_BACKEND_AUTO;
}

static void seg_path(const struct jr_writer *w, uint64_t first, char *buf,
		     size_t sz, const char *suffix)
{
	char name[32];

	jr_segment_name(first, name);
	snprintf(buf, sz, "%s/%s%s", w->dir, name, suffix);
}

/* Records the first failure; later calls return it (sticky). */
static int set_sticky(struct jr_writer *w, int err, const char *what)
{
	if (!w->err) {
		char path[PATH_MAX];
		seg_path(w, w->seg_first, path, sizeof(path), "");
		w->err = err;
		snprintf(w->errmsg, sizeof(w->errmsg),
			 "%s failed on segment '%s' (after seq %llu): %s",
			 what, path,
			 (unsigned long long)w->durable_seq, rw_strerror(err));
	}
	return rw_err_set(w->err, "%s", w->errmsg);
}

static int sticky(struct jr_writer *w)
{
	return rw_err_set(w->err, "%s", w->errmsg);
}

static int buf_reserve(struct jr_writer *w, size_t need)
{
	int a = w->active;

	if (need <= w->cap[a])
		return 0;
	size_t nc = w->cap[a] ? w->cap[a] : 64 * 1024;
	while (nc < need)
		nc *= 2;
	uint8_t *nb = realloc(w->buf[a], nc);
	if (!nb)
		return -ENOMEM;
	w->buf[a] = nb;
	w->cap[a] = nc;
	return 0;
}

/*
 * The I/O leader: called with the mutex held and no I/O running; writes
 * the pending buffer (and syncs when asked) with the mutex released.
 */
static void leader_io(struct jr_writer *w, bool sync)
{
	int b = w->active;
	size_t len = w->plen;
	uint64_t off = w->poff;
	uint64_t upto = w->last_seq;
	int fd = w->fd;
	int err = 0;

	w->active ^= 1;
	w->plen = 0;
	w->poff += len;
	if (sync) {
		w->covered_ns = w->fresh_ns;
		w->fresh_ns = 0;
	}
	w->io_busy = true;
	pthread_mutex_unlock(&w->mu);
	if (fd >= 0 && (len || sync))
		err = jr_io_write(w->io, fd, w->buf[b], len, off, sync);
	pthread_mutex_lock(&w->mu);
	w->io_busy = false;
	if (err) {
		set_sticky(w, err, sync ? "write+fdatasync" : "write");
	} else {
		w->written_seq = upto;
		if (sync) {
			w->durable_seq = upto;
			w->covered_ns = 0;
			if (fd >= 0)
				w->st.syncs++;
		}
	}
	pthread_cond_broadcast(&w->cv);
}

/*
 * Seals the open segment: pending records + SEAL, written and synced with
 * the mutex held (no leader may be running).  Closes the fd.
 */
static int seal_segment(struct jr_writer *w)
{
	int err = 0;

	if (w->fd < 0)
		return 0;
	if (w->seg_nrec) {
		struct jr_rec s = {
			.type = JR_SEAL, .seq = w->seg_last_seq,
			.prev_seq = w->seg_last_seq, .ts_ns = w->seg_last_ts,
			.disk_id = w->o.disk_id,
		};
		err = buf_reserve(w, w->plen + JR_HDR_SIZE);
		if (err)
			return set_sticky(w, err, "seal");
		jr_rec_encode(&s, w->buf[w->active] + w->plen, NULL);
		w->plen += JR_HDR_SIZE;
		err = jr_io_write(w->io, w->fd, w->buf[w->active], w->plen,
				  w->poff, true);
		if (err)
			return set_sticky(w, err, "seal (write+fdatasync)");
		w->st.syncs++;
		w->written_seq = w->durable_seq = w->last_seq;
		w->covered_ns = w->fresh_ns = 0;
		w->poff += w->plen;
		w->plen = 0;
	}
	close(w->fd);
	w->fd = -1;
	return 0;
}

/* Creates segment `first` (temp name, header, sync, rename, dir sync). */
static int create_segment(struct jr_writer *w, uint64_t first)
{
	char tmp[PATH_MAX], fin[PATH_MAX];
	uint8_t hdr[JR_SEG_HDR_SIZE];
	uint64_t now = rw_clock_ns();
	struct jr_seghdr h = {
		.version = JR_SEG_VERSION, .first_seq = first,
		.created_ns = now, .disk_id = w->o.disk_id,
	};
	const char *what = "create";
	int fd = -1, err;

	seg_path(w, first, tmp, sizeof(tmp), ".tmp");
	seg_path(w, first, fin, sizeof(fin), "");
	jr_seghdr_encode(&h, hdr);
	fd = rw_sys_open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		err = fd;
		goto out;
	}
	what = "write header of";
	if ((err = rw_sys_pwrite_full(fd, hdr, sizeof(hdr), 0)))
		goto out;
	what = "fdatasync";
	if ((err = rw_sys_fdatasync(fd)))
		goto out;
	what = "rename";
	if ((err = rw_sys_rename(tmp, fin)))
		goto out;
	what = "fsync the directory of";
	if ((err = rw_sys_fsync_dir(w->dir)))
		goto out;
	w->fd = fd;
	fd = -1;
	w->seg_first = first;
	w->seg_end = JR_SEG_HDR_SIZE;
	w->seg_created_ns = now;
	w->seg_nrec = 0;
	w->poff = JR_SEG_HDR_SIZE;
	w->plen = 0;
	w->st.syncs++;
out:
	if (fd >= 0) {
		close(fd);
		rw_sys_unlink(tmp); /* best effort; open removes leftovers */
	}
	if (err && !w->err) {
		w->err = err;
		snprintf(w->errmsg, sizeof(w->errmsg),
			 "cannot %s segment '%s': %s", what, fin,
			 rw_strerror(err));
	}
	return err ? sticky(w) : 0;
}

static bool seg_too_old(const struct jr_writer *w, uint64_t now)
{
	return w->fd >= 0 && w->seg_nrec && w->o.segment_age_ns &&
	       now >= w->seg_created_ns &&
	       now - w->seg_created_ns >= w->o.segment_age_ns;
}

static bool need_roll(const struct jr_writer *w, uint64_t total, uint64_t now)
{
	if (w->fd < 0)
		return true;
	if (!w->seg_nrec)
		return false;
	if (w->seg_end + total + JR_HDR_SIZE > w->o.segment_bytes)
		return true;
	return seg_too_old(w, now);
}

int jr_writer_append(struct jr_writer *w, const struct jr_append *a,
		     struct jr_cctx *cc, struct jr_appended *out)
{
	const void *payload = NULL;
	uint32_t stored = 0;
	uint8_t flags = 0;
	int err = 0;

	if (a->type != JR_WRITE && a->type != JR_ZERO && a->type != JR_TRIM)
		return rw_err_set(-EINVAL, "journal '%s': bad record type %u",
				  w->dir, a->type);
	if (a->length == 0 || (a->type == JR_WRITE &&
			       (a->length > JR_MAX_WRITE || !a->data)) ||
	    !rw_range_ok(a->offset, a->length, JR_MAX_DISK_END))
		return rw_err_set(-EINVAL, "journal '%s': bad %s length %u at "
				  "offset %llu", w->dir, jr_type_name(a->type),
				  a->length, (unsigned long long)a->offset);
	if (a->type == JR_WRITE) {
		payload = a->data;
		stored = a->length;
		if (jr_cctx_compress(cc, a->data, a->length, &payload, &stored))
			flags = JR_F_ZSTD;
		else
			payload = a->data, stored = a->length;
	}
	uint64_t total = JR_HDR_SIZE + (uint64_t)stored;
	uint64_t now = rw_clock_ns();
	struct jr_rec r = {
		.type = a->type, .flags = flags, .disk_id = w->o.disk_id,
		.offset = a->offset, .length = a->length, .stored_len = stored,
	};

	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->err) {
			err = sticky(w);
			goto out;
		}
		if (!need_roll(w, total, now))
			break;
		if (w->io_busy) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		if ((err = seal_segment(w)))
			goto out;
		jr_clock_take(w->clock, &r.seq, &r.ts_ns);
		if ((err = create_segment(w, r.seq)))
			goto out; /* the seq is lost: journals tolerate gaps */
		break;
	}
	if (!r.seq)
		jr_clock_take(w->clock, &r.seq, &r.ts_ns);
	if ((err = buf_reserve(w, w->plen + total))) {
		set_sticky(w, err, "append (out of memory)");
		goto out;
	}
	r.prev_seq = w->last_seq;
	uint8_t *dst = w->buf[w->active] + w->plen;
	if (stored)
		memcpy(dst + JR_HDR_SIZE, payload, stored);
	jr_rec_encode(&r, dst, dst + JR_HDR_SIZE);
	if (out) {
		out->seq = r.seq;
		out->ts_ns = r.ts_ns;
		out->loc.segment = w->seg_first;
		out->loc.offset = w->seg_end;
		out->stored_len = stored;
		out->flags = flags;
	}
	w->plen += total;
	w->seg_end += total;
	w->seg_nrec++;
	w->seg_last_seq = w->last_seq = r.seq;
	w->seg_last_ts = w->last_ts = r.ts_ns;
	if (!w->fresh_ns)
		w->fresh_ns = now ? now : 1;
	w->st.records++;
	if (a->type == JR_WRITE)
		w->st.logical_bytes += a->length;
	w->st.stored_bytes += stored;
	/* Batch full: write it out, or wait for the running leader first
	 * (which is also the back-pressure on fast appenders). */
	while (w->plen >= w->o.batch_bytes && !w->err) {
		if (w->io_busy)
			pthread_cond_wait(&w->cv, &w->mu);
		else
			leader_io(w, false);
	}
out:
	pthread_mutex_unlock(&w->mu);
	return err;
}

int jr_writer_write_out(struct jr_writer *w)
{
	int err = 0;

	pthread_mutex_lock(&w->mu);
	uint64_t target = w->last_seq;
	for (;;) {
		if (w->err) {
			err = sticky(w);
			break;
		}
		if (w->written_seq >= target)
			break;
		if (w->io_busy)
			pthread_cond_wait(&w->cv, &w->mu);
		else
			leader_io(w, false);
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

int jr_writer_flush(struct jr_writer *w)
{
	int err = 0;

	pthread_mutex_lock(&w->mu);
	uint64_t target = w->last_seq;
	for (;;) {
		if (w->err) {
			err = sticky(w);
			break;
		}
		if (w->durable_seq >= target)
			break;
		if (w->io_busy)
			pthread_cond_wait(&w->cv, &w->mu);
		else
			leader_io(w, true);
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

int jr_writer_tick(struct jr_writer *w)
{
	int err = 0;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->err) {
			err = sticky(w);
			break;
		}
		if (!seg_too_old(w, rw_clock_ns()))
			break;
		if (w->io_busy) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		/* The successor is created by the next append. */
		err = seal_segment(w);
		break;
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

void jr_writer_stats(struct jr_writer *w, struct jr_writer_stats *st)
{
	pthread_mutex_lock(&w->mu);
	*st = w->st;
	st->last_seq = w->last_seq;
	st->written_seq = w->written_seq;
	st->durable_seq = w->durable_seq;
	st->oldest_unsynced_ns = w->covered_ns ? w->covered_ns : w->fresh_ns;
	st->uring = w->io ? jr_io_is_uring(w->io) : false;
	st->error = w->err;
	pthread_mutex_unlock(&w->mu);
}

static void writer_free(struct jr_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	jr_io_close(w->io);
	free(w->buf[0]);
	free(w->buf[1]);
	free(w->dir);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

int jr_writer_close(struct jr_writer *w)
{
	if (!w)
		return 0;
	int err = jr_writer_flush(w);
	writer_free(w);
	return err;
}

/* ------------------------------------------------------------ recovery */

/* Removes *.tmp leftovers of an interrupted segment creation. */
static int remove_tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	bool removed = false;
	int err = 0;

	if (!d)
		return rw_err_set(-errno, "cannot open journal '%s': %s", dir,
				  strerror(errno));
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (!e) {
			if (errno)
				err = rw_err_set(-errno, "cannot list journal "
						 "'%s': %s", dir, strerror(errno));
			break;
		}
		size_t n = strlen(e->d_name);
		if (n == 24 && !strcmp(e->d_name + 20, ".tmp")) {
			char name[32];
			memcpy(name, e->d_name, 20);
			name[20] = '\0';
			if (!jr_is_segment_name(name, NULL))
				continue;
			char p[PATH_MAX];
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			err = rw_sys_unlink(p);
			if (err && err != -ENOENT) {
				err = rw_err_set(err, "cannot remove '%s': %s", p,
						 rw_strerror(err));
				break;
			}
			err = 0;
			removed = true;
		}
	}
	closedir(d);
	if (!err && removed) {
		err = rw_sys_fsync_dir(dir);
		if (err)
			rw_err_set(err, "cannot fsync journal '%s': %s", dir,
				   rw_strerror(err));
	}
	return err;
}

/* A non-last segment: header, and a valid SEAL as its last 64 bytes. */
static int check_sealed(struct jr_writer *w, const struct jr_seginfo *si,
			uint64_t next_first, uint64_t *seal_seq,
			uint64_t *seal_ts)
{
	char path[PATH_MAX];
	uint8_t hdr[JR_HDR_SIZE];
	struct jr_seghdr h;
	struct jr_rec r;
	struct stat st;
	const char *why = NULL;
	int fd, err;

	seg_path(w, si->first_seq, path, sizeof(path), "");
	fd = rw_sys_open(path, O_RDONLY, 0);
	if (fd < 0)
		return rw_err_set(fd, "cannot open segment '%s': %s", path,
				  rw_strerror(fd));
	if ((err = jr_segment_read_header(fd, path, si->first_seq, &h)))
		goto out;
	if (fstat(fd, &st) < 0) {
		err = rw_err_set(-errno, "cannot stat '%s': %s", path,
				 strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size < 2 * JR_HDR_SIZE + JR_SEG_HDR_SIZE) {
		err = rw_err_set(RW_ECORRUPT, "segment '%s' is not sealed (%lld "
				 "bytes, no records) but a later segment exists",
				 path, (long long)st.st_size);
		goto out;
	}
	ssize_t n = rw_sys_pread_full(fd, hdr, JR_HDR_SIZE,
				      st.st_size - (off_t)JR_HDR_SIZE);
	if (n < 0) {
		err = rw_err_set((int)n, "cannot read '%s': %s", path,
				 rw_strerror((int)n));
		goto out;
	}
	if (n < (ssize_t)JR_HDR_SIZE || jr_rec_decode_why(hdr, &r, &why) ||
	    r.type != JR_SEAL || jr_rec_verify(&r, hdr, NULL) ||
	    r.seq < si->first_seq || r.seq >= next_first ||
	    r.disk_id != h.disk_id) {
		err = rw_err_set(RW_ECORRUPT, "segment '%s' does not end with a "
				 "valid seal record (%s) but a later segment "
				 "exists", path,
				 why ? why : r.type != JR_SEAL ? "last record is "
				 "not a seal" : "bad seal checksum or seq");
		goto out;
	}
	*seal_seq = r.seq;
	*seal_ts = r.ts_ns;
out:
	close(fd);
	return err;
}

/*
 * Scans the last segment; keeps complete valid records, truncates a torn
 * tail, refuses corruption.  On success leaves w->fd open on it (or -1
 * when it ended sealed or was a torn creation that got removed).
 */
static int recover_last(struct jr_writer *w, const struct jr_seginfo *si,
			uint64_t prev_seq, struct jr_recovery *rep)
{
	char path[PATH_MAX];
	struct jr_seghdr h;
	struct jr_scan sc;
	struct jr_rec rec;
	const uint8_t *payload;
	const char *why = NULL;
	uint64_t pos = JR_SEG_HDR_SIZE, nrec = 0;
	uint64_t last = prev_seq, last_ts = w->last_ts;
	bool sealed = false;
	int fd = -1, err = 0;

	jr_scan_init(&sc, -1);
	seg_path(w, si->first_seq, path, sizeof(path), "");
	fd = rw_sys_open(path, O_RDWR, 0);
	if (fd < 0) {
		err = rw_err_set(fd, "cannot open segment '%s': %s", path,
				 rw_strerror(fd));
		goto out;
	}
	sc.fd = fd;
	if (si->bytes < JR_SEG_HDR_SIZE) {
		/* Torn creation (cannot happen with the tmp+rename protocol,
		 * but a damaged file system can do it): nothing in it. */
		close(fd);
		fd = -1;
		if ((err = rw_sys_unlink(path)) || (err = rw_sys_fsync_dir(w->dir))) {
			err = rw_err_set(err, "cannot remove torn segment '%s': %s",
					 path, rw_strerror(err));
			goto out;
		}
		rep->truncated_bytes = si->bytes;
		rep->torn_segment = si->first_seq;
		rep->segments--;
		goto out;
	}
	if ((err = jr_segment_read_header(fd, path, si->first_seq, &h)))
		goto out;
	if (h.disk_id != w->o.disk_id) {
		err = rw_err_set(-EINVAL, "segment '%s' belongs to disk id %u, "
				 "not %u", path, h.disk_id, w->o.disk_id);
		goto out;
	}
	for (;;) {
		int res = jr_scan_record(&sc, pos, true, &rec, &payload, &why);
		if (res < 0) {
			err = rw_err_set(res, "cannot read segment '%s': %s", path,
					 rw_strerror(res));
			goto out;
		}
		if (res == JR_SCAN_END)
			break;
		if (res == JR_SCAN_OK && sealed) {
			err = rw_err_set(RW_ECORRUPT, "corrupt record in segment "
					 "'%s' at offset %llu (after seq %llu): "
					 "record after the seal", path,
					 (unsigned long long)pos,
					 (unsigned long long)last);
			goto out;
		}
		if (res == JR_SCAN_OK) {
			const char *bad = NULL;
			if (rec.disk_id != h.disk_id)
				bad = "disk id differs from the segment's";
			else if (rec.seq < si->first_seq)
				bad = "seq below the segment's first seq";
			else if (rec.type == JR_SEAL && (rec.seq != last || !nrec))
				bad = "seal does not follow the last record";
			else if (rec.type != JR_SEAL && rec.seq <= last)
				bad = "seq not increasing";
			else if (rec.type != JR_SEAL && last &&
				 rec.prev_seq != last)
				bad = "prev_seq does not link to the previous record";
			if (bad) {
				err = rw_err_set(RW_ECORRUPT, "corrupt record in "
						 "segment '%s' at offset %llu (after "
						 "seq %llu): %s", path,
						 (unsigned long long)pos,
						 (unsigned long long)last, bad);
				goto out;
			}
			if (rec.type == JR_SEAL) {
				sealed = true;
			} else {
				last = rec.seq;
				last_ts = rec.ts_ns;
				nrec++;
			}
			pos += jr_rec_total(&rec);
			continue;
		}
		/* TORN or BAD: a tail only if nothing valid follows. */
		uint64_t found;
		int f = jr_scan_find_valid(&sc, pos + 1, last, &found);
		if (f < 0) {
			err = rw_err_set(f, "cannot read segment '%s': %s", path,
					 rw_strerror(f));
			goto out;
		}
		if (f) {
			err = rw_err_set(RW_ECORRUPT, "corrupt record in segment "
					 "'%s' at offset %llu (after seq %llu): %s; "
					 "a valid record follows at offset %llu",
					 path, (unsigned long long)pos,
					 (unsigned long long)last, why,
					 (unsigned long long)found);
			goto out;
		}
		uint64_t size = si->bytes;
		struct stat st;
		if (fstat(fd, &st) == 0)
			size = (uint64_t)st.st_size;
		err = rw_sys_ftruncate(fd, (off_t)pos);
		if (err) {
			err = rw_err_set(err, "cannot truncate torn tail of '%s' "
					 "at offset %llu: %s", path,
					 (unsigned long long)pos, rw_strerror(err));
			goto out;
		}
		rep->truncated_bytes = size - pos;
		rep->torn_segment = si->first_seq;
		break;
	}
	/* Make what we keep durable, truncation or not. */
	err = rw_sys_fdatasync(fd);
	if (err) {
		err = rw_err_set(err, "cannot fdatasync '%s': %s", path,
				 rw_strerror(err));
		goto out;
	}
	w->last_seq = last;
	w->last_ts = last_ts;
	if (sealed) {
		close(fd);
		fd = -1;
		goto out;
	}
	w->fd = fd;
	fd = -1;
	w->seg_first = si->first_seq;
	w->seg_end = pos;
	w->poff = pos;
	w->seg_created_ns = h.created_ns;
	w->seg_nrec = nrec;
	w->seg_last_seq = last;
	w->seg_last_ts = last_ts;
out:
	if (fd >= 0)
		close(fd);
	jr_scan_fini(&sc);
	return err;
}

int jr_writer_open(struct jr_writer **out, const char *dir,
		   const struct jr_writer_opts *opts, struct jr_clock *clock,
		   struct jr_recovery *rep)
{
	struct jr_writer *w = NULL;
	struct jr_seginfo *segs = NULL;
	struct jr_recovery rec = { 0 };
	int n = 0, err = 0;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->fd = -1;
	w->clock = clock;
	if (opts)
		w->o = *opts;
	else
		jr_writer_opts_default(&w->o);
	if (!w->o.segment_bytes)
		w->o.segment_bytes = 64ull << 20;
	if (!w->o.batch_bytes)
		w->o.batch_bytes = 1u << 20;
	w->dir = strdup(dir);
	if (!w->dir) {
		err = -ENOMEM;
		goto out;
	}
	err = rw_sys_mkdir(dir, 0755);
	if (err && err != -EEXIST) {
		err = rw_err_set(err, "cannot create journal '%s': %s", dir,
				 rw_strerror(err));
		goto out;
	}
	if ((err = remove_tmp_files(dir)))
		goto out;
	n = jr_segments_list(dir, &segs);
	if (n < 0) {
		err = n;
		goto out;
	}
	rec.segments = (uint64_t)n;
	for (int i = 0; i + 1 < n; i++) {
		uint64_t s = 0, ts = 0;
		if ((err = check_sealed(w, &segs[i], segs[i + 1].first_seq, &s,
					&ts)))
			goto out;
		w->last_seq = s;
		w->last_ts = ts;
	}
	if (n > 0 && (err = recover_last(w, &segs[n - 1], w->last_seq, &rec)))
		goto out;
	if ((err = jr_io_open(&w->io, w->o.backend)))
		goto out;
	w->written_seq = w->durable_seq = w->last_seq;
	rec.last_seq = w->last_seq;
	rec.last_ts = w->last_ts;
	if (w->last_seq)
		jr_clock_observe(clock, w->last_seq, w->last_ts);
	if (rep)
		*rep = rec;
	*out = w;
	w = NULL;
out:
	free(segs);
	writer_free(w);
	return err;
}
