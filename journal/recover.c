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
 * Rejected alternative: verifying every sealed segment at open.  A full
 * read of a large journal would make every restart take minutes; sealed
 * segments were synced before their successor existed, and readers
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

	jr_writer_seg_path(w, si->first_seq, path, sizeof(path), "");
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
	jr_writer_seg_path(w, si->first_seq, path, sizeof(path), "");
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
