/*
 * view.c — resolving points in time, and reading a disk as-of a seq.
 *
 * A block as-of S is assembled from the versions ix_block_asof() returns
 * (newest first, down to the first one that covers the whole block): start
 * from base when even the oldest of them is partial, else from zeroes, and
 * apply them oldest first.  Records are read with jr_reader_read_at(),
 * which checks their CRC; the last decoded record is kept, so the blocks of
 * one large write cost one read and one decompression, not one per block.
 *
 * A per-view block cache was rejected for now: restore and export read each
 * block once in order, so the record cache already removes the repeated
 * work, and a cache would need invalidation rules of its own.
 */
#include "restore/rs.h"

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Renew the read transaction after this many block lookups. */
#define RS_RENEW_EVERY 4096

struct rs_view {
	struct ix *ix;
	struct ix_disk d;
	uint64_t seq;
	struct ix_read *rd;
	unsigned since_renew;
	struct jr_reader *jr;
	int base_fd;
	/* The last record read, for large writes spanning many blocks. */
	bool have_rec;
	struct jr_loc rec_loc;
	struct jr_rec rec;
	uint8_t *rec_buf;
	/* Scratch. */
	uint8_t *blk;
	struct ix_version *vers;
	int vers_cap;
};

int rs_range_get(struct ix *ix, const struct ix_disk *d, struct rs_range *r)
{
	struct ix_read *rd = NULL;
	int err = ix_read_begin(ix, &rd);

	if (err)
		return err;
	r->oldest_seq = d->horizon_seq;
	r->oldest_ts = d->horizon_seq ? d->horizon_ts : d->ctime_ns;
	err = ix_latest(rd, &r->latest_seq, &r->latest_ts);
	if (err == RW_ENOTFOUND || (!err && r->latest_seq < r->oldest_seq)) {
		r->latest_seq = r->oldest_seq;
		r->latest_ts = r->oldest_ts;
		err = 0;
	}
	if (!err && r->latest_ts < r->oldest_ts)
		r->latest_ts = r->oldest_ts;
	ix_read_end(rd);
	return err;
}

static int out_of_range(const struct ix_disk *d, const struct rs_range *r,
			const char *what)
{
	char a[40], b[40];

	return rw_err_set(RW_ERANGE,
			  "%s is outside the restorable range of disk '%s': "
			  "%s (seq %" PRIu64 ") to %s (seq %" PRIu64 ")",
			  what, d->name, rs_fmt_time(r->oldest_ts, a),
			  r->oldest_seq, rs_fmt_time(r->latest_ts, b),
			  r->latest_seq);
}

char *rs_fmt_time(uint64_t ns, char buf[40])
{
	time_t s = (time_t)(ns / 1000000000ull);
	struct tm tm;

	gmtime_r(&s, &tm);
	size_t n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%06lluZ",
		 (unsigned long long)(ns % 1000000000ull / 1000));
	return buf;
}

int rs_resolve(struct ix *ix, const struct ix_disk *d, const struct rw_when *w,
	       uint64_t *seq, uint64_t *ts)
{
	struct rs_range r;
	struct ix_read *rd = NULL;
	char what[200];
	int err = rs_range_get(ix, d, &r);

	if (err)
		return err;
	if ((err = ix_read_begin(ix, &rd)))
		return err;
	switch (w->kind) {
	case RW_WHEN_TIME: {
		char tb[40];
		snprintf(what, sizeof(what), "time %s", rs_fmt_time(w->ts_ns, tb));
		uint64_t now = rw_clock_ns();
		if (w->ts_ns < r.oldest_ts || w->ts_ns > now) {
			err = out_of_range(d, &r, what);
			goto out;
		}
		/* A moment after the latest record is the current state. */
		uint64_t s = 0, t = 0;
		err = ix_time_to_seq(rd, w->ts_ns, &s, &t);
		if (err == RW_ENOTFOUND) {
			s = 0;
			t = r.oldest_ts;
			err = 0;
		}
		if (err)
			goto out;
		if (s < r.oldest_seq)
			s = r.oldest_seq;
		if (s > r.latest_seq)
			s = r.latest_seq;
		*seq = s;
		*ts = w->ts_ns;
		break;
	}
	case RW_WHEN_SEQ:
		snprintf(what, sizeof(what), "seq %" PRIu64, w->seq);
		if (w->seq < r.oldest_seq || w->seq > r.latest_seq) {
			err = out_of_range(d, &r, what);
			goto out;
		}
		*seq = w->seq;
		if (ix_seq_to_time(rd, w->seq, ts))
			*ts = w->seq == r.oldest_seq ? r.oldest_ts : 0;
		break;
	case RW_WHEN_MARK: {
		struct ix_mark m;
		err = ix_mark_get(rd, d->id, w->mark, &m);
		if (err)
			goto out;
		/*
		 * A mark is a moment: resolve its timestamp now, so a mark
		 * taken while the index lagged the journal still covers every
		 * write made before it.
		 */
		uint64_t s2, t2;
		if (!ix_time_to_seq(rd, m.ts_ns, &s2, &t2) && s2 > m.seq)
			m.seq = s2;
		snprintf(what, sizeof(what), "mark '%s' (seq %" PRIu64 ")",
			 w->mark, m.seq);
		if (m.seq < r.oldest_seq || m.seq > r.latest_seq) {
			err = out_of_range(d, &r, what);
			goto out;
		}
		*seq = m.seq;
		*ts = m.ts_ns;
		break;
	}
	default:
		err = -EINVAL;
	}
out:
	ix_read_end(rd);
	return err;
}

int rs_view_open(struct rs_view **out, struct ix *ix, const struct ix_disk *d,
		 uint64_t seq)
{
	struct rs_view *v = calloc(1, sizeof(*v));
	char path[4096];
	int err;

	if (!v)
		return -ENOMEM;
	v->ix = ix;
	v->d = *d;
	v->seq = seq;
	v->base_fd = -1;
	v->vers_cap = 64;
	v->vers = calloc((size_t)v->vers_cap, sizeof(*v->vers));
	v->blk = malloc(d->block_size);
	if (!v->vers || !v->blk) {
		err = -ENOMEM;
		goto fail;
	}
	if ((err = ix_disk_path(ix, d->name, "base.img", path, sizeof(path))))
		goto fail;
	v->base_fd = rw_sys_open(path, O_RDONLY, 0);
	if (v->base_fd < 0) {
		err = rw_err_set(v->base_fd, "cannot open base image '%s': %s",
				 path, rw_strerror(v->base_fd));
		goto fail;
	}
	if ((err = ix_disk_path(ix, d->name, "journal", path, sizeof(path))))
		goto fail;
	if ((err = jr_reader_open(&v->jr, path, 0)))
		goto fail;
	if ((err = ix_read_begin(ix, &v->rd)))
		goto fail;
	*out = v;
	return 0;
fail:
	rs_view_close(v);
	return err;
}

void rs_view_close(struct rs_view *v)
{
	if (!v)
		return;
	ix_read_end(v->rd);
	jr_reader_close(v->jr);
	if (v->base_fd >= 0)
		close(v->base_fd);
	free(v->rec_buf);
	free(v->blk);
	free(v->vers);
	free(v);
}

/* Reads base's bytes of [off, off+len) (past base's end reads zeroes). */
static int base_read(struct rs_view *v, uint64_t off, size_t len, uint8_t *buf)
{
	ssize_t n = rw_sys_pread_full(v->base_fd, buf, len, (off_t)off);

	if (n < 0)
		return rw_err_set((int)n, "cannot read base image of disk '%s' "
				  "at offset %" PRIu64 ": %s", v->d.name, off,
				  rw_strerror((int)n));
	if ((size_t)n < len)
		memset(buf + n, 0, len - (size_t)n);
	return 0;
}

/* Makes v->rec / v->rec_buf hold the record at loc; checks it is ver's. */
static int load_record(struct rs_view *v, uint64_t block,
		       const struct ix_version *ver)
{
	if (v->have_rec && v->rec_loc.segment == ver->loc.segment &&
	    v->rec_loc.offset == ver->loc.offset)
		goto check;
	if (!v->rec_buf && !(v->rec_buf = malloc(JR_MAX_WRITE)))
		return -ENOMEM;
	v->have_rec = false;
	int err = jr_reader_read_at(v->jr, &ver->loc, &v->rec, v->rec_buf,
				    JR_MAX_WRITE);
	if (err)
		return err;
	v->have_rec = true;
	v->rec_loc = ver->loc;
check:;
	uint64_t bs = v->d.block_size;
	uint64_t boff = block * bs;
	if (v->rec.seq != ver->seq || v->rec.disk_id != v->d.id ||
	    v->rec.offset >= boff + bs || v->rec.offset + v->rec.length <= boff)
		return rw_err_set(RW_ECORRUPT,
				  "index entry of disk '%s' block %" PRIu64
				  " seq %" PRIu64 " points at segment %020" PRIu64
				  " offset %" PRIu64 ", which holds seq %" PRIu64
				  " of disk %u at [%" PRIu64 ", +%u); run "
				  "'rewind reindex'", v->d.name, block, ver->seq,
				  ver->loc.segment, ver->loc.offset, v->rec.seq,
				  v->rec.disk_id, v->rec.offset, v->rec.length);
	return 0;
}

/* Builds block as-of the view's seq into v->blk, from one snapshot. */
static int build_once(struct rs_view *v, uint64_t block)
{
	uint64_t bs = v->d.block_size;
	uint64_t boff = block * bs;
	int n, err;

	for (;;) {
		n = ix_block_asof(v->rd, v->d.id, block, v->seq, v->vers,
				  v->vers_cap);
		if (n != -ENOBUFS)
			break;
		if (v->vers_cap >= 1 << 20)
			return rw_err_set(-ENOBUFS, "block %" PRIu64 " of disk '%s' "
					  "has more than %d partial versions",
					  block, v->d.name, v->vers_cap);
		struct ix_version *nv = realloc(v->vers, 2 * (size_t)v->vers_cap *
						sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		v->vers = nv;
		v->vers_cap *= 2;
	}
	if (n < 0)
		return n;
	if (n == 0 || v->vers[n - 1].partial) {
		if ((err = base_read(v, boff, bs, v->blk)))
			return err;
	} else {
		memset(v->blk, 0, bs);
	}
	for (int i = n - 1; i >= 0; i--) {
		if ((err = load_record(v, block, &v->vers[i])))
			return err;
		uint64_t lo = v->rec.offset > boff ? v->rec.offset : boff;
		uint64_t hi = v->rec.offset + v->rec.length;
		if (hi > boff + bs)
			hi = boff + bs;
		if (v->rec.type == JR_WRITE)
			memcpy(v->blk + (lo - boff), v->rec_buf + (lo - v->rec.offset),
			       hi - lo);
		else
			memset(v->blk + (lo - boff), 0, hi - lo);
	}
	return 0;
}

/*
 * Builds block as-of the view's seq into v->blk.  A record that vanished
 * (RW_ENOTFOUND: its segment was unlinked by a compaction after our
 * snapshot was taken) means base.img already holds it and the index says
 * so in a newer snapshot: renew and build once more (restore/compact.c).
 */
static int build_block(struct rs_view *v, uint64_t block)
{
	int err;

	if (++v->since_renew >= RS_RENEW_EVERY) {
		if ((err = ix_read_renew(v->rd)))
			return err;
		v->since_renew = 0;
	}
	err = build_once(v, block);
	if (err != RW_ENOTFOUND && err != -ENOENT)
		return err;
	rw_err_clear();
	v->have_rec = false;
	if ((err = ix_read_renew(v->rd)))
		return err;
	v->since_renew = 0;
	return build_once(v, block);
}

int rs_view_read(struct rs_view *v, uint64_t off, uint64_t len, void *buf)
{
	uint64_t bs = v->d.block_size;
	uint8_t *p = buf;

	if (!rw_range_ok(off, len, v->d.size))
		return rw_err_set(-EINVAL, "read of [%" PRIu64 ", +%" PRIu64
				  ") is outside disk '%s' (%" PRIu64 " bytes)",
				  off, len, v->d.name, v->d.size);
	while (len) {
		uint64_t block = off / bs, in = off % bs;
		uint64_t part = bs - in < len ? bs - in : len;
		int err = build_block(v, block);
		if (err)
			return err;
		memcpy(p, v->blk + in, part);
		p += part;
		off += part;
		len -= part;
	}
	return 0;
}

int rs_view_block(struct rs_view *v, uint64_t block, const uint8_t **out)
{
	int err = build_block(v, block);

	if (err)
		return err;
	*out = v->blk;
	return 0;
}
