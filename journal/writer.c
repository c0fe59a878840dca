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
 * write out + SEAL the old segment, then create the next one (temp file,
 * header, rename).  Neither is synced there ("lazy seal"): the sealed
 * segment joins a list of segments waiting for their sync, and the next
 * flush fsyncs the directory, then each of them in order, then the
 * current segment, before it raises durable_seq — so a flush still
 * covers everything before it, across segments.  A segment created while
 * its predecessor waits carries JR_SEGF_PRED_UNSYNCED in its header,
 * cleared in place (and made durable by that segment's own fdatasync)
 * once everything before it is synced; recovery reads the flag to know
 * that the predecessor may have lost its end in a power loss, and that
 * nothing after that point was ever acknowledged (FORMAT.md, "Lazy
 * seal").  The housekeeping of a caller (capture) syncs the list in the
 * background with jr_writer_sync_sealed(), which appends never wait for.
 * Why: a rollover used to fdatasync the old segment and the new one and
 * the directory with the mutex held; with 64 KiB and 1 MiB guest writes
 * every append waited for it, and the journal ran at the disk's write
 * speed (~500 MiB/s here) although the guest never asked for
 * durability — the peers only filled the page cache.  Measured, 64 KiB
 * sequential writes QD8 through capture: 507 -> 943 MiB/s.
 * Rejected: syncing the old segment before creating its successor but
 * off the append path (appends would have to buffer in memory for as
 * long as the sync takes, and the journal would still run at disk speed).
 *
 * With compression workers (pool.c) an append that asks for compression
 * only copies the payload into the workers' queue and takes its seq
 * there; records then reach the pending buffer through
 * jr_writer_place_ready(), one placer at a time (`placing`), strictly in
 * queue order, and every other append queues behind them while the queue
 * is not empty.  placed_seq (not last_seq) is what the I/O leader can
 * write out.
 *
 * Pre-written tail: on ext4 (and most file systems) an fdatasync after
 * an append that grows the file, or that writes into blocks allocated
 * but never written, must commit the file system's journal (size and
 * extent state); an overwrite of written blocks only writes the data.
 * Measured here (fio, 4 KiB writes + fdatasync each): 3.1k/s appending
 * against 10.2k/s overwriting.  So when syncs are small and frequent
 * (a guest flushing after every write) the I/O leader that syncs also
 * writes zeroes ahead of the records, prezero_bytes at a time, which the
 * same fdatasync makes durable; the following small syncs then only
 * overwrite.  When syncs are large (bulk writes) it does nothing: there
 * the zeroes would double the bytes written for a commit that is cheap
 * beside the data.  The file then extends past its last record with
 * zeroes, a clean end for recovery and readers (FORMAT.md), and sealing
 * and close cut it back.  Rejected: zero-filling each segment at
 * creation (64 MiB written twice even by a guest that never flushes) and
 * a background zeroing thread (it would have to stay out of the range
 * the leader writes, and its fdatasync competes with the guest's).
 *
 * Checksums and copies off the lock: an append checksums its payload
 * before it takes the mutex, and under it only encodes the 64-byte
 * header, whose crc is combined with the payload's (rw_crc32c_combine),
 * so concurrent appenders serialise on a few hundred nanoseconds, not
 * on a pass over the payload.  A caller that keeps its buffer alive
 * until its own write out (jr_writer_append_borrowed: capture's path)
 * does not even have a large raw payload copied: the pending batch is a
 * list of pieces — runs of the buffer and borrowed payloads — written
 * with one pwritev.  Measured (perf, 64 KiB and 1 MiB guest writes): the
 * crc and the copy under the mutex were ~15% and ~8% of the server.
 *
 * Opening and recovery live in recover.c.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void jr_writer_opts_default(struct jr_writer_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->segment_bytes = 64ull << 20;
	o->segment_age_ns = 600ull * 1000000000ull;
	o->batch_bytes = 1u << 20;
	o->backend = JR_BACKEND_AUTO;
	o->raw_when_behind = true;
	o->prezero_bytes = 2ull << 20;
}

/* Zeroes for the pre-written tail (never written, so in .bss). */
static uint8_t zero_blk[256u << 10];

void jr_writer_seg_path(const struct jr_writer *w, uint64_t first, char *buf,
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
		jr_writer_seg_path(w, w->seg_first, path, sizeof(path), "");
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

	if (need <= w->cap[a] && w->npc[a] < w->pccap[a])
		return 0;
	if (w->npc[a] + 1 >= w->pccap[a]) {
		size_t np = w->pccap[a] ? 2 * w->pccap[a] : 64;
		struct jr_piece *v = realloc(w->pc[a], np * sizeof(*v));
		if (!v)
			return -ENOMEM;
		w->pc[a] = v;
		w->pccap[a] = np;
	}
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

/* Adds a run to the active side's pieces (room reserved by buf_reserve,
 * which keeps two free slots), merging buffer runs that touch. */
static void piece_add(struct jr_writer *w, const uint8_t *ext, size_t off,
		      size_t len)
{
	int a = w->active;
	struct jr_piece *last = w->npc[a] ? &w->pc[a][w->npc[a] - 1] : NULL;

	if (!len)
		return;
	if (!ext && last && !last->ext && last->off + last->len == off) {
		last->len += len;
		return;
	}
	w->pc[a][w->npc[a]++] = (struct jr_piece){ ext, off, len };
}

/*
 * Writes the pieces of side b (len bytes in all) at off of fd, then
 * fdatasyncs when sync.  One buffer run goes through the back end; with
 * borrowed payloads the sync back end writes them all with pwritev
 * (io_uring never gets borrowed payloads: see jr_writer_append).
 * 0 or -errno.
 */
static int write_pieces(struct jr_writer *w, int fd, int b, size_t len,
			uint64_t off, bool sync)
{
	const struct jr_piece *pc = w->pc[b];
	size_t n = w->npc[b];

	if (n <= 1 && (!n || !pc[0].ext))
		return jr_io_write(w->io, fd, n ? w->buf[b] + pc[0].off : w->buf[b],
				   len, off, sync);
	if (jr_io_is_uring(w->io)) {
		for (size_t i = 0; i < n; i++) {
			const uint8_t *p = pc[i].ext ? pc[i].ext : w->buf[b] + pc[i].off;
			int err = jr_io_write(w->io, fd, p, pc[i].len, off,
					      sync && i + 1 == n);
			if (err)
				return err;
			off += pc[i].len;
		}
		return 0;
	}
	size_t i = 0, skip = 0; /* first piece not written, bytes of it done */
	while (i < n) {
		struct iovec iov[64];
		int k = 0;
		for (size_t j = i; j < n && k < 64; j++, k++) {
			const uint8_t *p = pc[j].ext ? pc[j].ext : w->buf[b] + pc[j].off;
			size_t s0 = j == i ? skip : 0;
			iov[k] = (struct iovec){ (void *)(p + s0), pc[j].len - s0 };
		}
		ssize_t r = rw_sys_pwritev(fd, iov, k, (off_t)off);
		if (r == -EINTR)
			continue;
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		size_t done = (size_t)r;
		while (done && i < n) {
			size_t left = pc[i].len - skip;
			if (done >= left) {
				done -= left;
				i++;
				skip = 0;
			} else {
				skip += done;
				done = 0;
			}
		}
	}
	return sync ? rw_sys_fdatasync(fd) : 0;
}

/*
 * With the mutex held, for a sync whose write ends at file offset end:
 * decides whether to write zeroes ahead of the records (see the design
 * note) and reserves [*from, *to) for them by moving zend; *to == 0 when
 * not.  Only the I/O leader writes, so nothing lands there meanwhile.
 */
static void prezero_plan(struct jr_writer *w, uint64_t end, uint64_t *from,
			 uint64_t *to)
{
	uint64_t win = w->o.prezero_bytes;
	uint64_t lim = w->o.segment_bytes;

	*from = *to = 0;
	if (!win || w->fd < 0 || end < w->sync_end ||
	    end - w->sync_end > win / 16 || w->zend >= end + win / 2)
		return;
	uint64_t f = w->zend > end ? w->zend : end;
	uint64_t z = end + win < lim ? end + win : lim;
	if (z <= f)
		return;
	*from = f;
	*to = z;
	w->zend = z;
}

/* Writes zeroes over [from, to) of fd.  0 or -errno. */
static int prezero_write(struct jr_writer *w, int fd, uint64_t from,
			 uint64_t to)
{
	while (from < to) {
		size_t n = to - from < sizeof(zero_blk) ? (size_t)(to - from)
							: sizeof(zero_blk);
		int err = jr_io_write(w->io, fd, zero_blk, n, from, false);
		if (err)
			return err;
		from += n;
	}
	return 0;
}

int jr_seg_clear_pred_flag(int fd, uint64_t first)
{
	uint8_t b[JR_SEG_HDR_SIZE];
	struct jr_seghdr h;
	const char *why;
	ssize_t n = rw_sys_pread_full(fd, b, sizeof(b), 0);

	if (n < 0)
		return (int)n;
	if (n != (ssize_t)sizeof(b) || jr_seghdr_decode(b, &h, &why) ||
	    h.first_seq != first)
		return RW_ECORRUPT;
	h.flags &= ~JR_SEGF_PRED_UNSYNCED;
	jr_seghdr_encode(&h, b);
	return rw_sys_pwrite_full(fd, b, sizeof(b), 0);
}

/*
 * Without the mutex, by the one thread that set lazy_busy (or the I/O
 * leader, which keeps seals out): makes lazy entries v[0..n) durable in
 * order, after the directory when dir (their names), clearing each one's
 * flag once everything before it is synced.  On failure *bad is the
 * segment it failed on and *what the step.  0 or -errno.
 */
static int sync_lazy(struct jr_writer *w, const struct jr_lazy *v, size_t n,
		     bool dir, uint64_t *bad, const char **what,
		     unsigned *syncs)
{
	int err;

	*bad = n ? v[0].first : w->seg_first;
	if (dir) {
		*what = "fsync the directory of";
		if ((err = rw_sys_fsync_dir(w->dir)))
			return err;
	}
	for (size_t i = 0; i < n; i++) {
		*bad = v[i].first;
		*what = "clear the header flag of";
		if (v[i].flagged && (err = jr_seg_clear_pred_flag(v[i].fd, v[i].first)))
			return err;
		*what = "fdatasync sealed";
		if ((err = rw_sys_fdatasync(v[i].fd)))
			return err;
		(*syncs)++;
	}
	return 0;
}

/* With the mutex held, after a successful sync_lazy of the first n
 * entries: closes and drops them. */
static void drop_lazy(struct jr_writer *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(w->lazy[i].fd);
	memmove(w->lazy, w->lazy + n, (w->nlazy - n) * sizeof(*w->lazy));
	w->nlazy -= n;
	if (w->nlazy)
		w->lazy_since_ns = rw_mono_ns();
}

/* Records a failure of a step on segment `seg` (sticky). */
static void set_sticky_seg(struct jr_writer *w, int err, const char *what,
			   uint64_t seg)
{
	if (!w->err) {
		char path[PATH_MAX];
		jr_writer_seg_path(w, seg, path, sizeof(path), "");
		w->err = err;
		snprintf(w->errmsg, sizeof(w->errmsg),
			 "cannot %s segment '%s' (after seq %llu): %s", what,
			 path, (unsigned long long)w->durable_seq,
			 rw_strerror(err));
	}
}

int jr_writer_sync_sealed(struct jr_writer *w, size_t min_count,
			  uint64_t min_age_ns)
{
	struct jr_lazy v;
	size_t n;
	bool dir;
	int err;

	pthread_mutex_lock(&w->mu);
	while (w->lazy_busy && !w->err)
		pthread_cond_wait(&w->cv, &w->mu);
	if (w->err) {
		err = sticky(w);
		pthread_mutex_unlock(&w->mu);
		return err;
	}
	n = w->nlazy;
	if (!n || (n < min_count &&
		   rw_mono_ns() - w->lazy_since_ns < min_age_ns)) {
		pthread_mutex_unlock(&w->mu);
		return 0;
	}
	n = 1; /* the oldest: one segment's sync per call */
	v = w->lazy[0];
	dir = w->dir_dirty;
	w->dir_dirty = false;
	w->lazy_busy = true;
	pthread_mutex_unlock(&w->mu);

	uint64_t bad = 0;
	const char *what = "";
	unsigned syncs = 0;
	err = sync_lazy(w, &v, n, dir, &bad, &what, &syncs);

	pthread_mutex_lock(&w->mu);
	w->st.syncs += syncs;
	if (err) {
		set_sticky_seg(w, err, what, bad);
	} else {
		drop_lazy(w, n);
		/* Everything before it was durable already. */
		if (v.last > w->durable_seq)
			w->durable_seq = v.last;
		if (w->durable_seq == w->last_seq)
			w->covered_ns = w->fresh_ns = 0;
	}
	w->lazy_busy = false;
	pthread_cond_broadcast(&w->cv);
	err = w->err ? sticky(w) : 0;
	pthread_mutex_unlock(&w->mu);
	return err;
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
	uint64_t upto = w->placed_seq;
	uint64_t zfrom = 0, zto = 0;
	int fd = w->fd;
	int err = 0;
	/* A sync first makes the sealed segments durable (no seal can run
	 * while io_busy, and drain() waits out lazy_busy) and the current
	 * segment's flag, if any, is cleared under the same fdatasync. */
	size_t nlazy = sync ? w->nlazy : 0;
	bool dir = sync && w->dir_dirty;
	bool unflag = sync && fd >= 0 && w->seg_flagged;
	uint64_t bad = w->seg_first;
	const char *what = NULL;
	unsigned syncs = 0;

	if (sync)
		prezero_plan(w, off + len, &zfrom, &zto);
	if (dir)
		w->dir_dirty = false;
	if (nlazy || dir)
		w->lazy_busy = true;
	w->active ^= 1;
	w->plen = 0;
	w->bused = 0;
	w->poff += len;
	if (sync) {
		w->covered_ns = w->fresh_ns;
		w->fresh_ns = 0;
	}
	w->io_busy = true;
	pthread_mutex_unlock(&w->mu);
	if (nlazy || dir)
		err = sync_lazy(w, w->lazy, nlazy, dir, &bad, &what, &syncs);
	if (!err && unflag) {
		bad = w->seg_first;
		what = "clear the header flag of";
		err = jr_seg_clear_pred_flag(fd, w->seg_first);
	}
	if (!err) {
		what = NULL;
		if (zto)
			err = prezero_write(w, fd, zfrom, zto);
		if (!err && fd >= 0 && (len || sync))
			err = write_pieces(w, fd, b, len, off, sync);
	}
	pthread_mutex_lock(&w->mu);
	w->npc[b] = 0;
	w->io_busy = false;
	if (nlazy || dir)
		w->lazy_busy = false;
	w->st.syncs += syncs;
	if (err && what) {
		set_sticky_seg(w, err, what, bad);
	} else if (err) {
		set_sticky(w, err, sync ? "write+fdatasync" : "write");
	} else {
		if (nlazy)
			drop_lazy(w, nlazy);
		if (unflag)
			w->seg_flagged = false;
		w->written_seq = upto;
		w->st.prezero_bytes += zto - zfrom;
		if (sync) {
			w->durable_seq = upto;
			w->covered_ns = 0;
			if (fd >= 0) {
				w->st.syncs++;
				w->sync_end = off + len;
			}
		}
	}
	pthread_cond_broadcast(&w->cv);
}

/*
 * Seals the open segment: pending records + SEAL, written with the mutex
 * held (no leader may be running) but not synced: the segment joins the
 * lazy list, and the next sync (a flush, jr_writer_sync_sealed) makes it
 * durable before anything after it counts as durable.  See "Lazy seal".
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
		if (w->nlazy == w->lazycap) {
			size_t nc = w->lazycap ? 2 * w->lazycap : 8;
			struct jr_lazy *v = realloc(w->lazy, nc * sizeof(*v));
			if (!v)
				return set_sticky(w, -ENOMEM, "seal");
			w->lazy = v;
			w->lazycap = nc;
		}
		err = buf_reserve(w, w->bused + JR_HDR_SIZE);
		if (err)
			return set_sticky(w, err, "seal");
		jr_rec_encode(&s, w->buf[w->active] + w->bused, NULL);
		piece_add(w, NULL, w->bused, JR_HDR_SIZE);
		w->bused += JR_HDR_SIZE;
		w->plen += JR_HDR_SIZE;
		/* A pre-written tail goes first: a sealed segment ends with
		 * its SEAL, and a reader never sees zeroes after one (until
		 * the SEAL is written they are the clean end of the file). */
		uint64_t fin = w->poff + w->plen;
		if (w->zend > fin) {
			err = rw_sys_ftruncate(w->fd, (off_t)fin);
			if (err)
				return set_sticky(w, err, "seal (cut the "
						  "pre-written tail)");
			w->zend = fin;
		}
		err = write_pieces(w, w->fd, w->active, w->plen, w->poff, false);
		w->npc[w->active] = 0;
		w->bused = 0;
		if (err)
			return set_sticky(w, err, "seal (write)");
		w->written_seq = w->placed_seq;
		w->poff += w->plen;
		w->plen = 0;
		if (!w->nlazy)
			w->lazy_since_ns = rw_mono_ns();
		w->lazy[w->nlazy++] = (struct jr_lazy){
			.fd = w->fd, .first = w->seg_first,
			.last = w->seg_last_seq, .flagged = w->seg_flagged,
			.oldest_ns = w->covered_ns ? w->covered_ns : w->fresh_ns,
		};
		/* From here on fresh_ns is about the next segment. */
		w->covered_ns = w->fresh_ns = 0;
		w->fd = -1;
		w->seg_flagged = false;
		return 0;
	}
	close(w->fd);
	w->fd = -1;
	return 0;
}

/*
 * Creates segment `first` (temp name, header, rename).  Nothing is synced
 * here: the next sync fsyncs the directory and the segment before any of
 * its records counts as durable.  The header carries
 * JR_SEGF_PRED_UNSYNCED while a sealed predecessor waits for its sync.
 */
static int create_segment(struct jr_writer *w, uint64_t first)
{
	char tmp[PATH_MAX], fin[PATH_MAX];
	uint8_t hdr[JR_SEG_HDR_SIZE];
	uint64_t now = rw_clock_ns();
	struct jr_seghdr h = {
		.version = JR_SEG_VERSION, .first_seq = first,
		.created_ns = now, .disk_id = w->o.disk_id,
		.flags = w->nlazy ? JR_SEGF_PRED_UNSYNCED : 0,
		.pred_first = w->newest_seg,
	};
	const char *what = "create";
	int fd = -1, err;

	jr_writer_seg_path(w, first, tmp, sizeof(tmp), ".tmp");
	jr_writer_seg_path(w, first, fin, sizeof(fin), "");
	jr_seghdr_encode(&h, hdr);
	fd = rw_sys_open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		err = fd;
		goto out;
	}
	what = "write header of";
	if ((err = rw_sys_pwrite_full(fd, hdr, sizeof(hdr), 0)))
		goto out;
	what = "rename";
	if ((err = rw_sys_rename(tmp, fin)))
		goto out;
	w->dir_dirty = true;
	w->seg_flagged = h.flags != 0;
	w->newest_seg = first;
	w->fd = fd;
	fd = -1;
	w->seg_first = first;
	w->seg_end = JR_SEG_HDR_SIZE;
	w->zend = w->sync_end = JR_SEG_HDR_SIZE;
	w->seg_created_ns = now;
	w->seg_nrec = 0;
	w->poff = JR_SEG_HDR_SIZE;
	w->plen = 0;
	w->bused = 0;
	w->npc[w->active] = 0;
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

/*
 * With the mutex held: seals and replaces the current segment when a
 * record of total bytes appended at `now` does not belong in it, waiting
 * (mutex dropped) for a running leader first.  The new segment is named
 * by *seq, taken from the clock here when still 0.
 */
static int roll_if_needed(struct jr_writer *w, uint64_t total, uint64_t now,
			  uint64_t *seq, uint64_t *ts)
{
	int err;

	for (;;) {
		if (w->err)
			return sticky(w);
		if (!need_roll(w, total, now))
			return 0;
		if (w->io_busy) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		if ((err = seal_segment(w)))
			return err;
		if (!*seq)
			jr_clock_take(w->clock, seq, ts);
		/* On failure the seq is lost: journals tolerate gaps. */
		return create_segment(w, *seq);
	}
}

/*
 * With the mutex held, the segment chosen and no roll needed: copies job
 * (header + payload) to the end of the pending buffer and advances the
 * segment.  Fills loc.  0 or the (sticky) error.
 */
static int place_copy(struct jr_writer *w, struct jr_job *job,
		      struct jr_loc *loc)
{
	struct jr_rec *r = &job->rec;
	uint64_t total = JR_HDR_SIZE + (uint64_t)r->stored_len;
	bool borrow = job->borrowed && r->stored_len;
	size_t inbuf = JR_HDR_SIZE + (borrow ? 0 : r->stored_len);
	int err;

	if ((err = buf_reserve(w, w->bused + inbuf)))
		return set_sticky(w, err, "append (out of memory)");
	uint8_t *dst = w->buf[w->active] + w->bused;
	if (r->stored_len && !borrow)
		memcpy(dst + JR_HDR_SIZE, job->payload, r->stored_len);
	if (job->hdr_ok) {
		memcpy(dst, job->hdr, JR_HDR_SIZE);
	} else if (job->pcrc_ok) {
		/* Header crc (payload NULL: header bytes only), then the
		 * payload's, taken before the lock. */
		jr_rec_encode(r, dst, NULL);
		r->crc = rw_crc32c_combine(rw_crc32c(0, dst, 60), job->pcrc,
					   r->stored_len);
		rw_put_le32(dst + 60, r->crc);
	} else {
		jr_rec_encode(r, dst, dst + JR_HDR_SIZE);
	}
	piece_add(w, NULL, w->bused, inbuf);
	if (borrow)
		piece_add(w, job->payload, 0, r->stored_len);
	if (loc) {
		loc->segment = w->seg_first;
		loc->offset = w->seg_end;
	}
	w->bused += inbuf;
	w->plen += total;
	w->seg_end += total;
	w->seg_nrec++;
	w->seg_last_seq = w->placed_seq = r->seq;
	w->seg_last_ts = r->ts_ns;
	/* A FLUSH marker holds no guest data: one waiting for its sync
	 * (flush anticipation) is no write at risk (oldest_unsynced_ns). */
	if (!w->fresh_ns && r->type != JR_FLUSH)
		w->fresh_ns = job->now ? job->now : 1;
	w->st.stored_bytes += r->stored_len;
	return 0;
}

/* Batch full: write it out, or wait for the running leader first (which
 * is also the back-pressure on fast appenders). */
static void write_full_batches(struct jr_writer *w)
{
	while (w->plen >= w->o.batch_bytes && !w->err) {
		if (w->io_busy)
			pthread_cond_wait(&w->cv, &w->mu);
		else
			leader_io(w, false);
	}
}

/* With the mutex held and w->placing set: places one job with its seq
 * already taken.  May drop the mutex (rollover waits, batch write-out). */
static int place_job(struct jr_writer *w, struct jr_job *job,
		     struct jr_loc *loc)
{
	uint64_t total = JR_HDR_SIZE + (uint64_t)job->rec.stored_len;
	int err;

	if ((err = roll_if_needed(w, total, job->now, &job->rec.seq,
				  &job->rec.ts_ns)))
		return err;
	return place_copy(w, job, loc);
}

static inline struct jr_job *ring_at(struct jr_pool *p, uint64_t n)
{
	return &p->ring[n % p->cap];
}

void jr_writer_place_ready(struct jr_writer *w)
{
	struct jr_pool *p = w->pool;

	if (w->placing)
		return;
	w->placing = true;
	while (!w->err && p->head < p->tail &&
	       ring_at(p, p->head)->state == JR_JOB_DONE) {
		struct jr_job *job = ring_at(p, p->head);
		if (place_job(w, job, NULL))
			break;
		p->bytes -= job->rec.type == JR_WRITE ? job->rec.length : 0;
		job->state = JR_JOB_FREE;
		job->payload = NULL;
		jr_pool_buf_put(p, &job->raw, &job->raw_cap);
		jr_pool_buf_put(p, &job->z, &job->z_cap);
		p->head++;
		if (p->claim < p->head)
			p->claim = p->head;
		if (w->plen >= w->o.batch_bytes) {
			/* Wake appenders waiting for room before the batch
			 * write that may take a while. */
			pthread_cond_broadcast(&w->cv);
			write_full_batches(w);
		}
	}
	w->placing = false;
	/* Room in the queue, and placed_seq moved (drain waits for it). */
	pthread_cond_broadcast(&w->cv);
}

static bool pool_full(const struct jr_pool *p, uint32_t len)
{
	if (p->tail - p->head >= p->cap)
		return true;
	return p->tail > p->head && p->bytes + len > p->max_bytes;
}

/*
 * Pool mode, mutex held: queues a, taking its seq.  The payload is copied
 * (the caller may reuse its buffer once append returns).  level 0 queues
 * it as done (stored raw, placed in order behind the jobs before it).
 */
static int enqueue(struct jr_writer *w, const struct jr_append *a, int level,
		   uint64_t now, struct jr_appended *out)
{
	struct jr_pool *p = w->pool;
	uint32_t len = a->type == JR_WRITE ? a->length : 0;

	for (;;) {
		if (w->err)
			return sticky(w);
		if (!pool_full(p, len))
			break;
		pthread_cond_wait(&w->cv, &w->mu);
	}
	struct jr_job *job = ring_at(p, p->tail);
	/* Before taking a seq: a failed append leaves no gap. */
	if (len && jr_pool_buf_get(p, len, &job->raw, &job->raw_cap))
		return rw_err_set(-ENOMEM, "journal '%s': no memory to queue a "
				  "%u-byte write", w->dir, len);
	memset(&job->rec, 0, sizeof(job->rec));
	job->rec.type = a->type;
	job->rec.disk_id = w->o.disk_id;
	job->rec.offset = a->offset;
	job->rec.length = a->length;
	job->rec.stored_len = len;
	jr_clock_take(w->clock, &job->rec.seq, &job->rec.ts_ns);
	job->rec.prev_seq = w->last_seq;
	if (len)
		memcpy(job->raw, a->data, len);
	job->payload = job->raw;
	job->hdr_ok = false;
	job->pcrc_ok = false;
	job->borrowed = false;
	job->level = level;
	job->now = now ? now : 1;
	job->state = level ? JR_JOB_QUEUED : JR_JOB_DONE;
	p->tail++;
	p->bytes += len;
	w->last_seq = job->rec.seq;
	w->last_ts = job->rec.ts_ns;
	if (out) {
		memset(out, 0, sizeof(*out));
		out->seq = job->rec.seq;
		out->ts_ns = job->rec.ts_ns;
		out->pending = true;
	}
	if (level)
		pthread_cond_signal(&p->work_cv);
	else
		jr_writer_place_ready(w);
	return 0;
}

static int append(struct jr_writer *w, const struct jr_append *a,
		  struct jr_cctx *cc, struct jr_appended *out, bool borrow)
{
	struct jr_job job = { 0 };
	uint8_t flags = 0;
	int err = 0;

	if (a->type != JR_WRITE && a->type != JR_ZERO && a->type != JR_TRIM &&
	    a->type != JR_FLUSH)
		return rw_err_set(-EINVAL, "journal '%s': bad record type %u",
				  w->dir, a->type);
	if (a->type == JR_FLUSH ? (a->length || a->offset || a->data) :
	    (a->length == 0 || (a->type == JR_WRITE &&
			       (a->length > JR_MAX_WRITE || !a->data)) ||
	    !rw_range_ok(a->offset, a->length, JR_MAX_DISK_END)))
		return rw_err_set(-EINVAL, "journal '%s': bad %s length %u at "
				  "offset %llu", w->dir, jr_type_name(a->type),
				  a->length, (unsigned long long)a->offset);
	bool to_pool = w->pool && cc && a->type == JR_WRITE &&
		       a->length >= JR_MIN_COMPRESS;
	job.payload = a->data;
	job.rec.stored_len = a->type == JR_WRITE ? a->length : 0;
	if (a->type == JR_WRITE && !w->pool) {
		const void *z;
		uint32_t zlen;
		if (jr_cctx_compress(cc, a->data, a->length, &z, &zlen)) {
			flags = JR_F_ZSTD;
			job.payload = z;
			job.rec.stored_len = zlen;
		}
	}
	uint64_t total = JR_HDR_SIZE + (uint64_t)job.rec.stored_len;
	uint64_t now = rw_clock_ns();
	if (!to_pool && job.rec.stored_len >= JR_BORROW_MIN) {
		/* Off the lock: only the header's crc is taken under it.
		 * (Below 16 KiB the combine costs about what the crc of the
		 * payload does: those are checksummed under the lock.) */
		job.pcrc = rw_crc32c(0, job.payload, job.rec.stored_len);
		job.pcrc_ok = true;
		/* Borrow only the caller's own bytes (not a zstd frame in
		 * cc, which the next compression reuses), and never with
		 * io_uring, which writes one contiguous buffer. */
		job.borrowed = borrow && job.payload == a->data &&
			       a->length >= JR_BORROW_MIN &&
			       !jr_io_is_uring(w->io);
	}
	job.now = now;
	job.rec.type = a->type;
	job.rec.flags = flags;
	job.rec.disk_id = w->o.disk_id;
	job.rec.offset = a->offset;
	job.rec.length = a->length;

	pthread_mutex_lock(&w->mu);
	if (w->err) {
		err = sticky(w);
		goto out;
	}
	if (w->pool && (to_pool || w->placing || w->pool->tail > w->pool->head)) {
		/* Behind (or to) the workers: the queue keeps seq order. */
		err = enqueue(w, a, to_pool ? jr_cctx_level(cc) : 0, now, out);
		if (!err) {
			w->st.records++;
			if (a->type == JR_WRITE)
				w->st.logical_bytes += a->length;
		}
		goto out;
	}
	/*
	 * Directly into the pending buffer.  Without workers the roll comes
	 * first and the seq after (no one can slip in: the mutex is only
	 * dropped before the seq is taken), so the new segment is named by
	 * it.  With workers the seq comes first and `placing` is held: a
	 * roll may drop the mutex, and appenders meanwhile queue behind this
	 * record with larger seqs.
	 */
	struct jr_loc loc;
	if (w->pool) {
		w->placing = true;
		jr_clock_take(w->clock, &job.rec.seq, &job.rec.ts_ns);
		job.rec.prev_seq = w->last_seq;
		w->last_seq = job.rec.seq;
		w->last_ts = job.rec.ts_ns;
		err = roll_if_needed(w, total, now, &job.rec.seq, &job.rec.ts_ns);
	} else {
		err = roll_if_needed(w, total, now, &job.rec.seq, &job.rec.ts_ns);
		if (!err && !job.rec.seq)
			jr_clock_take(w->clock, &job.rec.seq, &job.rec.ts_ns);
		job.rec.prev_seq = w->last_seq;
	}
	if (!err)
		err = place_copy(w, &job, &loc);
	if (!err) {
		if (!w->pool) {
			/* (With workers, set above: others may have queued
			 * newer records while a roll waited.) */
			w->last_seq = job.rec.seq;
			w->last_ts = job.rec.ts_ns;
		}
		w->st.records++;
		if (a->type == JR_WRITE)
			w->st.logical_bytes += a->length;
		if (out) {
			memset(out, 0, sizeof(*out));
			out->seq = job.rec.seq;
			out->ts_ns = job.rec.ts_ns;
			out->loc = loc;
			out->stored_len = job.rec.stored_len;
			out->flags = flags;
		}
		write_full_batches(w);
	}
	if (w->pool) {
		w->placing = false;
		/* Jobs queued while the batch was written out. */
		jr_writer_place_ready(w);
	}
out:
	pthread_mutex_unlock(&w->mu);
	return err;
}

int jr_writer_append(struct jr_writer *w, const struct jr_append *a,
		     struct jr_cctx *cc, struct jr_appended *out)
{
	return append(w, a, cc, out, false);
}

int jr_writer_append_borrowed(struct jr_writer *w, const struct jr_append *a,
			      struct jr_cctx *cc, struct jr_appended *out)
{
	return append(w, a, cc, out, true);
}

/*
 * Waits until everything appended before the call is written out (sync:
 * durable), leading the I/O when nobody else is; one loop serves both.
 * Records still with the workers are waited for, or compressed here
 * (jr_pool_help) when some are still queued; once a quarter batch of
 * records is placed meanwhile it is written out early, so the copy into
 * the page cache overlaps compression.  (Writing out whatever is placed
 * would cost one write, and one wake-up, per record.)
 */
static int drain(struct jr_writer *w, bool sync)
{
	int err = 0;

	pthread_mutex_lock(&w->mu);
	uint64_t target = w->last_seq;
	for (;;) {
		if (w->err) {
			err = sticky(w);
			break;
		}
		if ((sync ? w->durable_seq : w->written_seq) >= target)
			break;
		if (!w->io_busy && w->placed_seq >= target &&
		    !(sync && w->lazy_busy))
			leader_io(w, sync);
		else if (!w->io_busy && w->plen && w->plen >= w->o.batch_bytes / 4)
			leader_io(w, false);
		else if (w->placed_seq >= target || !jr_pool_help(w))
			pthread_cond_wait(&w->cv, &w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

int jr_writer_write_out(struct jr_writer *w)
{
	return drain(w, false);
}

int jr_writer_flush(struct jr_writer *w)
{
	return drain(w, true);
}

int jr_writer_start_writeback(struct jr_writer *w)
{
	int err = 0;

	pthread_mutex_lock(&w->mu);
	/* The mutex keeps a seal from closing fd; a leader writing right
	 * now only adds pages that its own sync will write. */
	if (!w->err && w->fd >= 0 && w->poff > w->sync_end &&
	    sync_file_range(w->fd, (off_t)w->sync_end,
			    (off_t)(w->poff - w->sync_end),
			    SYNC_FILE_RANGE_WRITE))
		err = -errno;
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
	st->sealed_waiting = w->nlazy;
	st->oldest_unsynced_ns = w->covered_ns ? w->covered_ns : w->fresh_ns;
	for (size_t i = w->nlazy; i-- > 0;)
		if (w->lazy[i].oldest_ns)
			st->oldest_unsynced_ns = w->lazy[i].oldest_ns;
	if (!st->oldest_unsynced_ns && w->pool && w->pool->head < w->pool->tail)
		st->oldest_unsynced_ns = w->pool->ring[w->pool->head %
						       w->pool->cap].now;
	st->uring = w->io ? jr_io_is_uring(w->io) : false;
	st->error = w->err;
	pthread_mutex_unlock(&w->mu);
}

void jr_writer_free(struct jr_writer *w)
{
	if (!w)
		return;
	jr_pool_free(w);
	if (w->fd >= 0)
		close(w->fd);
	for (size_t i = 0; i < w->nlazy; i++)
		close(w->lazy[i].fd);
	free(w->lazy);
	jr_io_close(w->io);
	free(w->buf[0]);
	free(w->buf[1]);
	free(w->pc[0]);
	free(w->pc[1]);
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
	/* Cut the pre-written tail: the file ends at its last record.  Not
	 * synced: if the cut is lost the zeroes are a clean end. */
	if (!err && w->fd >= 0 && w->zend > w->seg_end) {
		err = rw_sys_ftruncate(w->fd, (off_t)w->seg_end);
		if (err) {
			char path[PATH_MAX];
			jr_writer_seg_path(w, w->seg_first, path, sizeof(path), "");
			err = rw_err_set(err, "cannot cut the pre-written tail "
					 "of '%s' at offset %llu: %s", path,
					 (unsigned long long)w->seg_end,
					 rw_strerror(err));
		}
	}
	jr_writer_free(w);
	return err;
}

