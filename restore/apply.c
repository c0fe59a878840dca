/*
 * apply.c — writing a block map into an image: restore's output file, or
 * base.img when compaction folds.
 *
 * Records first, in journal order: the map's record entries are sorted by
 * seq, each record is read (and its checksum verified) once, and every run
 * of its blocks that the map picks is written with one pwrite straight
 * from the decoded payload.  Blocks that come out all zero are left as
 * holes (punched when the image may hold data there).  Then, in block
 * order: ZERO/TRIM blocks (holes), base blocks (read in runs of up to
 * 1 MiB) and mixed blocks (assembled by a view from partial versions).
 * Each block of the map is written exactly once, so the order between
 * these passes does not matter.
 *
 * Writeback is started every 32 MiB (sync_file_range, no wait) when those
 * were written in large runs: the disk writes while the CPU decodes the
 * next records, and the caller's final fsync has little left to do.
 *
 * A record that vanished under us (RW_ENOTFOUND: a concurrent compaction
 * folded it into base and unlinked its segment) is rebuilt block by block
 * by a view, which renews its snapshot and finds the bytes in base.
 *
 * Rejected: block order with a cache of the last record (the old path):
 * on a disk of interleaved writes the same large record is read and
 * checksummed once per run of its blocks, i.e. many times.
 */
#include "restore/rs_int.h"

#include "common/rw.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KICK_BYTES (32u << 20)
#define KICK_MIN_RUN (64u << 10) /* average write that earns a kick */

static const uint8_t zeroes[64 * 1024];

int rs_apply_init(struct rs_apply *a, struct ix *ix, const struct ix_disk *d,
		  uint64_t seq, int fd, const char *path)
{
	char jdir[4096];
	int err;

	memset(a, 0, sizeof(*a));
	a->ix = ix;
	a->d = d;
	a->seq = seq;
	a->fd = fd;
	a->path = path;
	a->base_fd = -1;
	a->buf = malloc(RS_APPLY_RUN);
	if (!a->buf)
		return -ENOMEM;
	if ((err = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir))) ||
	    (err = jr_reader_open(&a->jr, jdir, 0))) {
		rs_apply_fini(a);
		return err;
	}
	return 0;
}

void rs_apply_fini(struct rs_apply *a)
{
	rs_view_close(a->v);
	jr_reader_close(a->jr);
	free(a->rec);
	free(a->buf);
	a->v = NULL;
	a->jr = NULL;
	a->rec = a->buf = NULL;
}

static void progress(struct rs_apply *a)
{
	if (a->progress)
		a->progress(a->parg, a->done, a->total);
}

/* Writes len bytes of data at off, or makes them zero (p == NULL). */
static int put(struct rs_apply *a, uint64_t off, const uint8_t *p, size_t len)
{
	int err;

	if (!len)
		return 0;
	if (!p) {
		a->hole_bytes += len;
		if (!a->punch)
			return 0;
		if (fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
		/* No hole punching here: write the zeroes. */
		for (size_t o = 0; o < len; o += sizeof(zeroes)) {
			size_t n = len - o < sizeof(zeroes) ? len - o : sizeof(zeroes);
			if ((err = rw_sys_pwrite_full(a->fd, zeroes, n,
						      (off_t)(off + o))))
				goto fail;
		}
		return 0;
	}
	if ((err = rw_sys_pwrite_full(a->fd, p, len, (off_t)off)))
		goto fail;
	a->data_bytes += len;
	a->since_kick += len;
	a->kick_writes++;
	if (a->since_kick >= KICK_BYTES) {
		/*
		 * Start writeback, do not wait for it (advisory: errors show
		 * up in the caller's fsync) — but only when the writes since
		 * the last kick were large runs.  Scattered small blocks (a
		 * fold of 4 KiB random writes) gain nothing from early
		 * writeback and lose the merging of one sorted flush at the
		 * end, while a guest's writes compete for the disk.
		 */
		if (!a->no_kick && a->since_kick / a->kick_writes >= KICK_MIN_RUN)
			(void)sync_file_range(a->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		a->since_kick = 0;
		a->kick_writes = 0;
	}
	return 0;
fail:
	return rw_err_set(err, "cannot write '%s' at %" PRIu64 ": %s", a->path,
			  off, rw_strerror(err));
}

int rs_apply_write(struct rs_apply *a, uint64_t off, const uint8_t *p,
		   size_t len)
{
	uint32_t bs = a->d->block_size;
	size_t run = 0;     /* start of the pending run in p */
	bool run_zero = false;
	int err;

	for (size_t o = 0; o < len; o += bs) {
		size_t part = len - o < bs ? len - o : bs;
		bool z = rw_all_zero(p + o, part);
		if (o > run && z != run_zero) {
			if ((err = put(a, off + run, run_zero ? NULL : p + run,
				       o - run)))
				return err;
			run = o;
		}
		if (o == run)
			run_zero = z;
	}
	return put(a, off + run, run_zero ? NULL : p + run, len - run);
}

static uint64_t block_part(const struct ix_disk *d, uint64_t block)
{
	uint64_t off = block * d->block_size;

	return d->size - off < d->block_size ? d->size - off : d->block_size;
}

/* Writes one block as built by a view (mixed blocks, vanished records). */
static int view_block(struct rs_apply *a, uint64_t block)
{
	const uint8_t *blk;
	int err;

	if (!a->v && (err = rs_view_open(&a->v, a->ix, a->d, a->seq)))
		return err;
	if ((err = rs_view_block(a->v, block, &blk)))
		return err;
	return rs_apply_write(a, block * a->d->block_size, blk,
			      block_part(a->d, block));
}

struct rec_ref {
	uint64_t seq;
	size_t i;
};

static int ref_cmp(const void *x, const void *y)
{
	const struct rec_ref *a = x, *b = y;

	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return a->i < b->i ? -1 : a->i > b->i;
}

static bool picked(const struct rs_ent *e, enum rs_pick pick)
{
	return pick == RS_PICK_ASOF ? e->src != RS_SRC_BASE : e->after;
}

/* The record entries refs[j..k) (one seq, increasing blocks). */
static int apply_record(struct rs_apply *a, const struct rs_map *m,
			const struct rec_ref *refs, size_t j, size_t k)
{
	const struct ix_disk *d = a->d;
	const struct rs_ent *e0 = &m->e[refs[j].i];
	struct jr_rec rec;
	int err;

	if (!a->rec && !(a->rec = malloc(JR_MAX_WRITE)))
		return -ENOMEM;
	err = jr_reader_read_at(a->jr, &e0->loc, &rec, a->rec, JR_MAX_WRITE);
	if (err == RW_ENOTFOUND || err == -ENOENT) {
		rw_err_clear();
		for (size_t t = j; t < k; t++) {
			if ((err = view_block(a, m->e[refs[t].i].block)))
				return err;
			a->blocks++;
		}
		return 0;
	}
	if (err)
		return err;
	a->records++;
	for (size_t t = j; t < k;) {
		/* A run of consecutive blocks: contiguous in the payload. */
		size_t u = t;
		uint64_t bytes = 0;
		for (;;) {
			const struct rs_ent *e = &m->e[refs[u].i];
			uint64_t part = block_part(d, e->block);
			if ((err = rs_rec_check(d, e, &rec, part)))
				return err;
			bytes += part;
			u++;
			if (u == k || m->e[refs[u].i].block != e->block + 1)
				break;
		}
		uint64_t off = m->e[refs[t].i].block * d->block_size;
		if ((err = rs_apply_write(a, off, a->rec + (off - rec.offset),
					  (size_t)bytes)))
			return err;
		a->blocks += u - t;
		a->done += bytes;
		t = u;
	}
	progress(a);
	return 0;
}

/* A run of base blocks [b, b + n): copied from base.img. */
static int apply_base(struct rs_apply *a, uint64_t b, uint64_t n)
{
	const struct ix_disk *d = a->d;
	uint64_t off = b * d->block_size;
	uint64_t end = (b + n) * d->block_size;
	int err;

	if (end > d->size)
		end = d->size;
	while (off < end) {
		size_t len = end - off < RS_APPLY_RUN ? (size_t)(end - off)
						      : RS_APPLY_RUN;
		ssize_t got = rw_sys_pread_full(a->base_fd, a->buf, len,
						(off_t)off);
		if (got < 0)
			return rw_err_set((int)got, "cannot read base image of "
					  "disk '%s' at %" PRIu64 ": %s",
					  d->name, off, rw_strerror((int)got));
		if ((size_t)got < len)
			memset(a->buf + got, 0, len - (size_t)got);
		if ((err = rs_apply_write(a, off, a->buf, len)))
			return err;
		off += len;
		a->done += len;
	}
	a->blocks += n;
	return 0;
}

int rs_apply_map(struct rs_apply *a, const struct rs_map *m, enum rs_pick pick)
{
	const struct ix_disk *d = a->d;
	struct rec_ref *refs = NULL;
	size_t nrefs = 0;
	int err = 0;

	if (pick == RS_PICK_AFTER && a->base_fd < 0)
		return -EINVAL;
	for (size_t i = 0; i < m->n; i++)
		nrefs += picked(&m->e[i], pick) && m->e[i].src == RS_SRC_REC;
	if (nrefs && !(refs = malloc(nrefs * sizeof(*refs))))
		return -ENOMEM;
	nrefs = 0;
	for (size_t i = 0; i < m->n; i++)
		if (picked(&m->e[i], pick) && m->e[i].src == RS_SRC_REC)
			refs[nrefs++] = (struct rec_ref){ m->e[i].seq, i };
	if (nrefs)
		qsort(refs, nrefs, sizeof(*refs), ref_cmp);
	for (size_t j = 0; j < nrefs;) {
		size_t k = j + 1;
		while (k < nrefs && refs[k].seq == refs[j].seq)
			k++;
		if ((err = apply_record(a, m, refs, j, k)))
			goto out;
		j = k;
	}

	/* Zero, base and mixed blocks, in block order. */
	for (size_t i = 0; i < m->n;) {
		const struct rs_ent *e = &m->e[i];
		if (!picked(e, pick) || e->src == RS_SRC_REC) {
			i++;
			continue;
		}
		if (e->src == RS_SRC_MIXED) {
			if ((err = view_block(a, e->block)))
				goto out;
			a->blocks++;
			a->done += d->block_size;
			i++;
			continue;
		}
		/* A run of ZERO (or of BASE) blocks. */
		size_t k = i + 1;
		while (k < m->n && m->e[k].src == e->src &&
		       picked(&m->e[k], pick) &&
		       m->e[k].block == m->e[k - 1].block + 1 &&
		       (e->src == RS_SRC_ZERO ||
			(k - i) * d->block_size < RS_APPLY_RUN))
			k++;
		if (e->src == RS_SRC_ZERO) {
			uint64_t off = e->block * d->block_size;
			uint64_t end = (e->block + (k - i)) * d->block_size;
			if (end > d->size)
				end = d->size;
			if ((err = put(a, off, NULL, (size_t)(end - off))))
				goto out;
			a->blocks += k - i;
			a->done += end - off;
		} else if ((err = apply_base(a, e->block, k - i))) {
			goto out;
		}
		i = k;
		progress(a);
	}
out:
	free(refs);
	return err;
}
