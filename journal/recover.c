/*
 * recover.c — opening a journal for appending: the recovery rules of
 * FORMAT.md.
 *
 * Every segment but the last must carry a valid header and end with a
 * valid SEAL; only its last 64 bytes are read, so opening a journal costs
 * one small read per sealed segment plus a scan of the last one (at most
 * segment_bytes).  The last segment is scanned record by record through
 * the shared scanner; the first record that is not valid ends the scan,
 * and a search for any valid record after it decides between a torn tail
 * (truncate, report) and corruption (refuse, name segment and seq).
 * A last segment may end in a pre-written tail (zeroes the writer put
 * ahead of its records, writer.c): when everything from the first record
 * that is not valid to the end of the file is zero, that is where the
 * journal ends — no search, nothing reported as torn — and the zeroes
 * are cut off.
 * Records the caller knows durable (opts.durable_seq) are taken on their
 * headers and the seq chain alone, without reading their payloads.
 *
 * Lazy seal (writer.c): a sealed segment whose successor's header still
 * says PRED_UNSYNCED may have lost its end in a power loss; it is scanned
 * like a last segment, and when it turns out cut short the journal ends
 * there and the later segments (never acknowledged durable) are moved to
 * unflushed-<ns>/.  FORMAT.md, "Recovery", step 2.
 *
 * Rejected alternative: verifying every sealed segment at open.  A full
 * read of a large journal would make every restart take minutes; a
 * segment whose successor's flag is clear was synced in full, and readers
 * verify every record they use anyway.
 */
#include "journal/jr_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Opens segment `first` of w's journal (its path into path, PATH_MAX
 * bytes) with flags.  The fd, or an error naming the segment. */
static int open_seg(struct jr_writer *w, uint64_t first, int flags, char *path)
{
	jr_writer_seg_path(w, first, path, PATH_MAX, "");
	int fd = rw_sys_open(path, flags, 0);
	if (fd < 0)
		return rw_err_set(fd, "cannot open segment '%s': %s", path,
				  rw_strerror(fd));
	return fd;
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

	if ((fd = open_seg(w, si->first_seq, O_RDONLY, path)) < 0)
		return fd;
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
 * Whether every byte of fd from `from` to `size` is zero (a pre-written
 * tail).  Returns 1, 0, or -errno.
 */
static int tail_is_zero(int fd, uint64_t from, uint64_t size)
{
	static const uint8_t zero[4096];
	uint8_t *buf = malloc(1u << 20);
	int res = 1;

	if (!buf)
		return -ENOMEM;
	while (from < size && res == 1) {
		size_t want = size - from < (1u << 20) ? (size_t)(size - from)
						       : (1u << 20);
		ssize_t n = rw_sys_pread_full(fd, buf, want, (off_t)from);
		if (n < 0) {
			res = (int)n;
			break;
		}
		if (n == 0)
			break; /* shrank meanwhile: nothing more to look at */
		for (ssize_t i = 0; i < n && res == 1; i += (ssize_t)sizeof(zero)) {
			size_t k = (size_t)(n - i) < sizeof(zero) ? (size_t)(n - i)
								  : sizeof(zero);
			if (memcmp(buf + i, zero, k))
				res = 0;
		}
		from += (uint64_t)n;
	}
	free(buf);
	return res;
}

/*
 * Whether a segment file's header never reached the disk: shorter than a
 * header, or a header of zeroes (the size was persisted, the block not).
 * The writer creates segments without a sync (lazy seal), and a segment
 * whose records were ever synced has its header synced with them, so
 * such a file holds nothing that was acknowledged.  1, 0 or -errno.
 */
static int header_unwritten(int fd, uint64_t bytes)
{
	static const uint8_t zero[JR_SEG_HDR_SIZE];
	uint8_t b[JR_SEG_HDR_SIZE];
	ssize_t got;

	if (bytes < JR_SEG_HDR_SIZE)
		return 1;
	got = rw_sys_pread_full(fd, b, sizeof(b), 0);
	if (got < 0)
		return (int)got;
	return got < (ssize_t)sizeof(b) || !memcmp(b, zero, sizeof(b));
}

/*
 * Scans the last segment — or a lazily sealed one whose successor says it
 * may have lost its end — record by record; keeps complete valid records,
 * truncates a torn tail, refuses corruption.  On success leaves w->fd
 * open on it (or -1 when it ended sealed or was a torn creation that got
 * removed); *sealed tells whether it ends with its SEAL.
 */
static int recover_seg(struct jr_writer *w, const struct jr_seginfo *si,
		       uint64_t prev_seq, struct jr_recovery *rep,
		       bool *sealed_out)
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
	if ((fd = open_seg(w, si->first_seq, O_RDWR, path)) < 0) {
		err = fd;
		goto out;
	}
	sc.fd = fd;
	int unw = header_unwritten(fd, si->bytes);
	if (unw < 0) {
		err = rw_err_set(unw, "cannot read segment '%s': %s", path,
				 rw_strerror(unw));
		goto out;
	}
	if (unw) {
		/* Torn creation (segments are created without a sync): nothing
		 * in it was ever acknowledged. */
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
		*sealed_out = false;
		goto out;
	}
	if ((err = jr_segment_read_header(fd, path, si->first_seq, &h)))
		goto out;
	if (h.disk_id != w->o.disk_id) {
		err = rw_err_set(-EINVAL, "segment '%s' belongs to disk id %u, "
				 "not %u", path, h.disk_id, w->o.disk_id);
		goto out;
	}
	/* Known durable (opts.durable_seq): the header and the chain suffice;
	 * anything else is verified in full.  Seqs grow along the segment, so
	 * once past durable_seq every later record is read in full only. */
	bool trust = w->o.durable_seq != 0;
	for (;;) {
		int res = JR_SCAN_BAD;
		if (trust)
			res = jr_scan_record(&sc, pos, false, &rec, &payload, &why);
		if (res != JR_SCAN_OK || rec.type == JR_SEAL ||
		    rec.seq > w->o.durable_seq) {
			trust = false;
			res = jr_scan_record(&sc, pos, true, &rec, &payload, &why);
		}
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
		uint64_t size = si->bytes;
		struct stat st;
		if (fstat(fd, &st) == 0)
			size = (uint64_t)st.st_size;
		/* Only zeroes from here on: the pre-written tail, the clean
		 * end of the journal. */
		int z = tail_is_zero(fd, pos, size);
		if (z < 0) {
			err = rw_err_set(z, "cannot read segment '%s': %s", path,
					 rw_strerror(z));
			goto out;
		}
		if (z) {
			err = rw_sys_ftruncate(fd, (off_t)pos);
			if (err) {
				err = rw_err_set(err, "cannot cut the pre-written "
						 "tail of '%s' at offset %llu: %s",
						 path, (unsigned long long)pos,
						 rw_strerror(err));
				goto out;
			}
			rep->zero_tail_bytes = size - pos;
			break;
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
	*sealed_out = sealed;
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
	w->zend = w->sync_end = pos;
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

/*
 * The flags and predecessor of segment si's header, for the decision
 * about its predecessor: *flags, *pred, or *never = true when the file is
 * shorter than a header (its creation never reached the disk; nothing in
 * it or after it was synced).  0, or an error naming the segment (a
 * damaged header; an all-zero one counts as never written).
 */
static int seg_flags(struct jr_writer *w, const struct jr_seginfo *si,
		     uint32_t *flags, uint64_t *pred, bool *never)
{
	char path[PATH_MAX];
	struct jr_seghdr h;
	int fd, err;

	*flags = 0;
	*pred = 0;
	*never = false;
	if ((fd = open_seg(w, si->first_seq, O_RDONLY, path)) < 0)
		return fd;
	int unw = header_unwritten(fd, si->bytes);
	if (unw) {
		close(fd);
		*never = unw > 0;
		return unw < 0 ? rw_err_set(unw, "cannot read segment '%s': %s",
					    path, rw_strerror(unw)) : 0;
	}
	err = jr_segment_read_header(fd, path, si->first_seq, &h);
	close(fd);
	*flags = h.flags;
	*pred = h.pred_first;
	return err;
}

/* Clears the flag of segment `first` (its predecessor is durable now) and
 * syncs it.  0 or an error naming the segment. */
static int unflag_seg(struct jr_writer *w, uint64_t first)
{
	char path[PATH_MAX];
	int fd, err;

	if ((fd = open_seg(w, first, O_RDWR, path)) < 0)
		return fd;
	err = jr_seg_clear_pred_flag(fd, first);
	if (!err)
		err = rw_sys_fdatasync(fd);
	close(fd);
	if (err)
		return rw_err_set(err, "cannot clear the header flag of segment "
				  "'%s': %s", path, rw_strerror(err));
	return 0;
}

/*
 * Moves segments v[0..n) into a new directory unflushed-<ns> of the
 * journal: they follow a lazily sealed segment that a power loss cut
 * short, so none of their records was ever acknowledged durable, and the
 * journal cannot continue after a gap.  They are kept, not deleted, for
 * an operator to inspect.  0 or an error naming the file.
 */
static int set_aside(struct jr_writer *w, const struct jr_seginfo *v, int n,
		     struct jr_recovery *rep)
{
	char sub[PATH_MAX + 64], from[PATH_MAX], to[PATH_MAX + 128], name[32];
	int err;

	snprintf(rep->set_aside_dir, sizeof(rep->set_aside_dir),
		 "unflushed-%020llu", (unsigned long long)rw_clock_ns());
	snprintf(sub, sizeof(sub), "%s/%s", w->dir, rep->set_aside_dir);
	if ((err = rw_sys_mkdir(sub, 0755)))
		return rw_err_set(err, "cannot create '%s': %s", sub,
				  rw_strerror(err));
	for (int i = 0; i < n; i++) {
		jr_segment_name(v[i].first_seq, name);
		jr_writer_seg_path(w, v[i].first_seq, from, sizeof(from), "");
		snprintf(to, sizeof(to), "%s/%s", sub, name);
		if ((err = rw_sys_rename(from, to)))
			return rw_err_set(err, "cannot move '%s' to '%s': %s",
					  from, to, rw_strerror(err));
	}
	if ((err = rw_sys_fsync_dir(sub)) || (err = rw_sys_fsync_dir(w->dir)))
		return rw_err_set(err, "cannot fsync journal '%s': %s", w->dir,
				  rw_strerror(err));
	rep->set_aside = (uint64_t)n;
	rep->set_aside_first = v[0].first_seq;
	rep->segments -= (uint64_t)n;
	return 0;
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
	/* Every segment but the last: sealed, checked on its last record —
	 * unless its successor says it was sealed lazily and not known
	 * durable yet, when it is scanned like a last segment; if it turns
	 * out cut short, the journal ends there (see set_aside). */
	bool ended = false, sealed = false;
	for (int i = 0; i + 1 < n; i++) {
		uint64_t s = 0, ts = 0, pred;
		uint32_t fl;
		bool never;
		if ((err = seg_flags(w, &segs[i + 1], &fl, &pred, &never)))
			goto out;
		/* A segment between the two that never reached the disk. */
		bool gap = pred && pred != segs[i].first_seq;
		bool lazy = (fl & JR_SEGF_PRED_UNSYNCED) || never;
		if (!lazy && gap) {
			char path[PATH_MAX];
			jr_writer_seg_path(w, segs[i + 1].first_seq, path,
					   sizeof(path), "");
			err = rw_err_set(RW_ECORRUPT, "segment '%s' was created "
					 "after segment %020llu, which is missing "
					 "(the next older one is %020llu)", path,
					 (unsigned long long)pred,
					 (unsigned long long)segs[i].first_seq);
			goto out;
		}
		if (!lazy) {
			if ((err = check_sealed(w, &segs[i], segs[i + 1].first_seq,
						&s, &ts)))
				goto out;
			w->last_seq = s;
			w->last_ts = ts;
			continue;
		}
		if ((err = recover_seg(w, &segs[i], w->last_seq, &rec, &sealed)))
			goto out;
		if (!sealed || never || gap) {
			if ((err = set_aside(w, &segs[i + 1], n - i - 1, &rec)))
				goto out;
			w->newest_seg = w->fd >= 0 || sealed ? segs[i].first_seq
				: i ? segs[i - 1].first_seq : 0;
			ended = true;
			break;
		}
		if ((err = unflag_seg(w, segs[i + 1].first_seq)))
			goto out;
	}
	if (n > 0 && !ended) {
		if ((err = recover_seg(w, &segs[n - 1], w->last_seq, &rec,
				       &sealed)))
			goto out;
		/* (a torn creation was removed: fd < 0, not sealed) */
		w->newest_seg = w->fd >= 0 || sealed ? segs[n - 1].first_seq
			: n > 1 ? segs[n - 2].first_seq : 0;
	}
	if ((err = jr_io_open(&w->io, w->o.backend)))
		goto out;
	w->written_seq = w->durable_seq = w->placed_seq = w->last_seq;
	if ((err = jr_pool_start(w)))
		goto out;
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
	jr_writer_free(w);
	return err;
}
