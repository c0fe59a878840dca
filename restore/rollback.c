/*
 * rollback.c — setting a disk back to an earlier moment, in place.
 *
 * Only blocks with a version after the target seq differ from the target,
 * so only they are rewritten: the cost is the history undone, not the
 * disk.  Their content as-of the target is assembled in block order, a
 * step of up to 4 MiB of blocks at a time: inside a step each needed
 * record is read once (in journal order; from 8 records on, a second
 * thread with its own reader shares them — checksumming whole records is
 * a large part of a rollback's CPU time, and a host has more than one
 * core) where the page cache holds it (jr_reader_map_at: verified in
 * place, never copied), and a block's bytes are a pointer into it;
 * only blocks of compressed records, of a non-empty base (in large
 * reads) and blocks whose newest version is partial (through a view) are
 * copied, into slots of the window.  Blocks that are zero as-of the
 * target (a ZERO/TRIM, or base where base is empty) are only flagged —
 * never memset, never scanned.  Each step is handed over as one array of
 * runs (rs_rollback_runs), and the steps come in windows of up to
 * 64 MiB whose bytes stay valid until the window's last step was handed
 * over: the offline path (inplace.c) journals a step while the previous
 * one is synced and written into head; or run by run to a sink
 * (rs_rollback: a server's write path).  Either way the rewrites become
 * ordinary journal records, which is what makes a rollback undoable:
 * rolling back to a moment just before the rollback restores every
 * rewritten block.
 *
 * Steps inside windows, rather than one window of 64 MiB at a time: the
 * journal's and head's writes of a step then overlap the reading of the
 * next one; a window per step would keep the overlap but give up the
 * bound on the bytes held (mappings, slots) that a window is.  Copying
 * every block into the window (the old path) was rejected for cost: the
 * copies and the page faults of fresh buffers (pread of whole records,
 * then their blocks) were most of the reading.
 *
 * Rewriting through a private path (straight into head, with a special
 * "rollback" record type) was rejected: it would need its own recovery and
 * restore rules, while ordinary records already have both.  Building each
 * block through a view (the old path) was rejected for cost: an index
 * lookup and often a whole record read per block.
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RUN_MAX (1u << 20)
/* Records in a window from which a second thread reads half of them. */
#define PARALLEL_GROUPS 8
/* Entries of a window from which a second thread looks up half of them
 * (rs_int.h; tests lower it). */
size_t rs_rollback_parallel_lookups = 1024;
size_t rs_rollback_step_bytes = 4u << 20;
size_t rs_rollback_window_bytes = 64u << 20;

struct rb {
	struct ix *ix;
	const struct ix_disk *d;
	uint64_t seq;
	int base_fd;
	bool base_empty;
	struct jr_reader *jr;
	struct rs_view *v;
	uint8_t *rec;          /* JR_MAX_WRITE, a decompressed record */
	const uint8_t **src;   /* per window entry: its bytes as-of seq, in
				* a raw record's page cache (jr_reader_map_at)
				* or in a slot of win; NULL: zero */
	uint8_t *win;          /* slots of block_size for entries read from
				* base, views or compressed records */
	atomic_size_t nslot;   /* slots of win taken in this window */
	size_t *idx;           /* scratch: record entries of a window */
	size_t *grp;           /* scratch: where each record's entries start */
	bool *vanished;        /* scratch: per record, gone from the journal */
	struct rs_run *runs;   /* the runs of a window */
	const char *jdir;
	struct jr_reader *jr2; /* the second reader (PARALLEL_GROUPS) */
	uint8_t *rec2;
};

static int slot_cmp_seq(const void *a, const void *b, void *arg)
{
	const struct rs_ent *e = arg;
	const struct rs_ent *x = &e[*(const size_t *)a];
	const struct rs_ent *y = &e[*(const size_t *)b];

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->block < y->block ? -1 : x->block > y->block;
}

/*
 * Large scratch buffers (the window, the decoded records): 2 MiB aligned
 * and marked for transparent huge pages, so filling 5.5 MiB of window
 * costs three page faults, not 1400 (perf: page faults were a tenth of
 * a rollback's CPU time).  The window's data slots are packed (zero
 * entries take none), so only the pages holding data are touched.
 */
static void *big_alloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 2u << 20, n))
		return NULL;
	(void)madvise(p, n, MADV_HUGEPAGE);
	return p;
}

/*
 * Reads records and copies their blocks into the window, taking the next
 * group (the window entries of one record, r->idx[grp[g]..grp[g+1])) from
 * a counter shared with the other reader, so the two stay busy whatever
 * the sizes of the records (4 KiB to 32 MiB).  A record that vanished is
 * only flagged.
 */
struct part {
	struct rb *r;
	const struct rs_ent *w;
	struct jr_reader *jr;
	uint8_t *rec;
	atomic_size_t *next;    /* the next group to read */
	size_t ngrp;
	int err;                /* part_main: the error, message in msg */
	char msg[512];
};

static int part_read(struct part *p)
{
	struct rb *r = p->r;
	const struct ix_disk *d = r->d;
	uint64_t bs = d->block_size;
	int err;

	for (size_t g; (g = atomic_fetch_add(p->next, 1)) < p->ngrp;) {
		size_t j = r->grp[g], k = r->grp[g + 1];
		const uint8_t *pl;
		struct jr_rec rec;
		err = jr_reader_map_at(p->jr, &p->w[r->idx[j]].loc, &rec, &pl,
				       p->rec, JR_MAX_WRITE);
		if (err == RW_ENOTFOUND || err == -ENOENT) {
			rw_err_clear();
			r->vanished[g] = true;
			continue;
		}
		if (err)
			return err;
		/* A decompressed record lives in p->rec until the next one:
		 * its blocks are copied into slots, which stay. */
		uint8_t *slots = NULL;
		if (pl == p->rec)
			slots = r->win + atomic_fetch_add(&r->nslot, k - j) * bs;
		for (size_t t = j; t < k; t++) {
			const struct rs_ent *e = &p->w[r->idx[t]];
			uint64_t boff = e->block * bs;
			uint64_t part = d->size - boff < bs ? d->size - boff : bs;
			if ((err = rs_rec_check(d, e, &rec, part)))
				return err;
			const uint8_t *b = pl + (boff - rec.offset);
			if (slots) {
				memcpy(slots, b, part);
				b = slots;
				slots += bs;
			}
			r->src[r->idx[t]] = b;
		}
	}
	return 0;
}

static void *part_main(void *arg)
{
	struct part *p = arg;

	p->err = part_read(p);
	if (p->err)
		snprintf(p->msg, sizeof(p->msg), "%s", rw_err_msg());
	return NULL;
}

/* A slot of the window, for the bytes of one entry. */
static uint8_t *slot_take(struct rb *r, size_t n)
{
	return r->win + atomic_fetch_add(&r->nslot, n) * r->d->block_size;
}

/*
 * Points r->src[i] at the bytes of each entry w[i] of the window (n of
 * them): raw records are read where the page cache holds them, other
 * sources are copied into slots.  The bytes stay valid until
 * window_release().  0 or error.
 */
static int fill_window(struct rb *r, const struct rs_ent *w, size_t n)
{
	const struct ix_disk *d = r->d;
	uint64_t bs = d->block_size;
	size_t nrec = 0;
	int err;

	for (size_t i = 0; i < n; i++) {
		uint64_t boff = w[i].block * bs;
		uint64_t part = d->size - boff < bs ? d->size - boff : bs;
		r->src[i] = NULL;
		switch (w[i].src) {
		case RS_SRC_REC:
			r->idx[nrec++] = i;
			break;
		case RS_SRC_ZERO:
			break;
		case RS_SRC_MIXED: {
			const uint8_t *blk;
			if (!r->v && (err = rs_view_open(&r->v, r->ix, d, r->seq)))
				return err;
			if ((err = rs_view_block(r->v, w[i].block, &blk)))
				return err;
			uint8_t *slot = slot_take(r, 1);
			memcpy(slot, blk, part);
			r->src[i] = slot;
			break;
		}
		default: {
			/* Base: one read for the run of base blocks here. */
			size_t k = i + 1;
			while (k < n && w[k].src == RS_SRC_BASE &&
			       w[k].block == w[k - 1].block + 1)
				k++;
			uint64_t end = (w[k - 1].block + 1) * bs;
			if (end > d->size)
				end = d->size;
			for (size_t t = i; t < k; t++)
				r->src[t] = NULL;
			if (!r->base_empty) {
				uint8_t *slot = slot_take(r, k - i);
				ssize_t got = rw_sys_pread_full(r->base_fd, slot,
								end - boff,
								(off_t)boff);
				if (got < 0)
					return rw_err_set((int)got, "cannot read "
							  "base image of disk '%s' at %"
							  PRIu64 ": %s", d->name, boff,
							  rw_strerror((int)got));
				if ((uint64_t)got < (k - i) * bs)
					memset(slot + got, 0, (k - i) * bs - (size_t)got);
				for (size_t t = i; t < k; t++)
					r->src[t] = slot + (t - i) * bs;
			}
			i = k - 1;
			break;
		}
		}
	}
	/* Records in journal order, each read once for the window. */
	qsort_r(r->idx, nrec, sizeof(*r->idx), slot_cmp_seq, (void *)w);
	size_t ngrp = 0;
	for (size_t j = 0; j < nrec; j++)
		if (!j || w[r->idx[j]].seq != w[r->idx[j - 1]].seq)
			r->grp[ngrp++] = j;
	r->grp[ngrp] = nrec;
	memset(r->vanished, 0, ngrp * sizeof(*r->vanished));
	atomic_size_t ticket;
	atomic_init(&ticket, 0);
	struct part p0 = { .r = r, .w = w, .jr = r->jr, .rec = r->rec,
			   .next = &ticket, .ngrp = ngrp };
	struct part p1 = p0;
	pthread_t th;
	bool two = false;
	if (ngrp >= PARALLEL_GROUPS) {
		/* A second reader on the other core shares the records. */
		if (!r->jr2 && jr_reader_open(&r->jr2, r->jdir, 0) == 0)
			r->rec2 = big_alloc(JR_MAX_WRITE);
		if (r->jr2 && r->rec2) {
			p1.jr = r->jr2;
			p1.rec = r->rec2;
			two = pthread_create(&th, NULL, part_main, &p1) == 0;
		}
		rw_err_clear();
	}
	err = part_read(&p0);
	if (two) {
		pthread_join(th, NULL);
		if (!err && p1.err)
			err = rw_err_set(p1.err, "%s", p1.msg);
	}
	if (err)
		return err;
	/* Records folded into base under us: a view finds them there. */
	for (size_t g = 0; g < ngrp; g++) {
		if (!r->vanished[g])
			continue;
		if (!r->v && (err = rs_view_open(&r->v, r->ix, d, r->seq)))
			return err;
		for (size_t t = r->grp[g]; t < r->grp[g + 1]; t++) {
			const uint8_t *blk;
			const struct rs_ent *e = &w[r->idx[t]];
			uint64_t boff = e->block * bs;
			if ((err = rs_view_block(r->v, e->block, &blk)))
				return err;
			uint8_t *slot = slot_take(r, 1);
			memcpy(slot, blk, d->size - boff < bs ? d->size - boff : bs);
			r->src[r->idx[t]] = slot;
		}
	}
	return 0;
}

/* Lets go of the bytes fill_window() found for a window's steps. */
static void window_release(struct rb *r)
{
	jr_reader_unmap(r->jr);
	jr_reader_unmap(r->jr2);
	atomic_store(&r->nslot, 0);
}

/*
 * Marks in c the blocks of d that records in (seq, upto] touch, reading
 * only the journal's record headers from seq on: the cost is the history
 * undone (plus part of one segment), not the disk's whole history, which
 * an index scan (ix_versions_range walks every version) would cost.
 */
static int changed_blocks(const struct ix_disk *d, const char *jdir,
			  uint64_t seq, uint64_t upto, struct rs_blockset *c)
{
	struct jr_reader *jr = NULL;
	struct jr_rec rec;
	uint64_t bs = d->block_size;
	int n, err;

	if ((err = jr_reader_open(&jr, jdir, JR_READ_HEADERS)) ||
	    (err = jr_reader_seek(jr, seq + 1)))
		goto out;
	while ((n = jr_reader_next(jr, &rec, NULL, NULL)) == 1) {
		if (rec.seq > upto)
			break;
		if (rec.seq <= seq || !rec.length ||
		    (rec.type != JR_WRITE && rec.type != JR_ZERO &&
		     rec.type != JR_TRIM))
			continue;
		if (!rw_range_ok(rec.offset, rec.length, d->size)) {
			err = rw_err_set(RW_ECORRUPT, "record seq %" PRIu64 " of "
					 "disk '%s' writes [%" PRIu64 ", +%u), "
					 "beyond its %" PRIu64 " bytes", rec.seq,
					 d->name, rec.offset, rec.length, d->size);
			goto out;
		}
		for (uint64_t b = rec.offset / bs;
		     b <= (rec.offset + rec.length - 1) / bs; b++) {
			uint64_t bit = 1ull << (b % 64);
			if (!(c->w[b / 64] & bit)) {
				c->w[b / 64] |= bit;
				c->set++;
			}
		}
	}
	if (n < 0)
		err = n;
out:
	jr_reader_close(jr);
	return err;
}

/* The entry of block (its source as-of r->seq), from the index. */
static int block_entry(struct rb *r, struct ix_read *rd, uint64_t block,
		       struct rs_ent *e)
{
	struct ix_version v[2];
	int n = ix_block_asof(rd, r->d->id, block, r->seq, v, 2);

	if (n == -ENOBUFS) {
		rw_err_clear();
		n = 2; /* more than one partial version: mixed */
	}
	if (n < 0)
		return n;
	memset(e, 0, sizeof(*e));
	e->block = block;
	e->after = true;
	if (n == 0) {
		e->src = RS_SRC_BASE;
	} else if (n == 1 && !v[0].partial) {
		e->seq = v[0].seq;
		e->loc = v[0].loc;
		e->src = v[0].type == JR_WRITE ? RS_SRC_REC : RS_SRC_ZERO;
	} else {
		e->src = RS_SRC_MIXED;
	}
	return 0;
}

/* Looks up the entries w[first], w[first + step], ... (blocks set). */
struct lookup {
	struct rb *r;
	struct rs_ent *w;
	size_t n, first, step;
	int err;                /* lookup_main: the error, message in msg */
	char msg[512];
};

static int lookup_run(struct lookup *l)
{
	struct ix_read *rd = NULL;
	unsigned k = 0;
	int err;

	if ((err = ix_read_begin(l->r->ix, &rd)))
		return err;
	for (size_t i = l->first; i < l->n && !err; i += l->step) {
		if (++k % 4096 == 0 && (err = ix_read_renew(rd)))
			break;
		err = block_entry(l->r, rd, l->w[i].block, &l->w[i]);
	}
	ix_read_end(rd);
	return err;
}

static void *lookup_main(void *arg)
{
	struct lookup *l = arg;

	l->err = lookup_run(l);
	if (l->err)
		snprintf(l->msg, sizeof(l->msg), "%s", rw_err_msg());
	return NULL;
}

/*
 * Fills the entries w[0..n) (their blocks set) from the index: one B-tree
 * lookup each, a fifth of a rollback's CPU time, so from
 * rs_rollback_parallel_lookups entries on a second thread with its own read transaction takes every
 * other one.  0 or error.
 */
static int window_entries(struct rb *r, struct rs_ent *w, size_t n)
{
	struct lookup l0 = { .r = r, .w = w, .n = n, .first = 0, .step = 1 };
	struct lookup l1 = l0;
	pthread_t th;
	bool two = false;
	int err;

	if (n >= rs_rollback_parallel_lookups) {
		l0.step = l1.step = 2;
		l1.first = 1;
		two = pthread_create(&th, NULL, lookup_main, &l1) == 0;
		if (!two)
			l0.step = 1;
	}
	err = lookup_run(&l0);
	if (two) {
		pthread_join(th, NULL);
		if (!err && l1.err)
			err = rw_err_set(l1.err, "%s", l1.msg);
	}
	return err;
}

/* Whether window entry i is zero as-of the target (flagged or all-zero bytes). */
static bool entry_zero(const struct rb *r, size_t i, uint64_t part)
{
	return !r->src[i] || rw_all_zero(r->src[i], part);
}

/* Marks in c the blocks of d with an index version in (seq, upto]: for
 * records the journal no longer holds.  0 or error. */
static int indexed_blocks(struct ix *ix, const struct ix_disk *d,
			  uint64_t seq, uint64_t upto, struct rs_blockset *c)
{
	struct ix_read *rd = NULL;
	int err = ix_read_begin(ix, &rd);

	if (!err)
		err = ix_versions_range(rd, d->id, seq, upto, rs_blockset_add, c);
	ix_read_end(rd);
	return err;
}

static int rollback_runs(struct ix *ix, const struct ix_disk *d, uint64_t seq,
			 uint64_t upto, bool lost, rs_runs_fn fn, void *arg,
			 rs_progress_fn progress, void *parg,
			 struct rs_rollback_stats *st)
{
	struct rs_rollback_stats s = { 0 };
	struct rs_blockset c = { 0 };
	struct rb r = { .ix = ix, .d = d, .seq = seq, .base_fd = -1 };
	struct rs_ent *w = NULL;
	char path[4096], jdir[4096];
	struct stat sb;
	int err;

	if (seq < d->horizon_seq)
		return rw_err_set(RW_ERANGE, "seq %" PRIu64 " of disk '%s' is "
				  "before its horizon (seq %" PRIu64 ")", seq,
				  d->name, d->horizon_seq);
	uint32_t bs = d->block_size;
	size_t wmax = rs_rollback_window_bytes / bs;
	size_t smax = rs_rollback_step_bytes / bs;
	size_t in_window = 0;  /* blocks of the open window handed over */
	atomic_init(&r.nslot, 0);
	if ((err = rs_blockset_init(&c, d->size, bs)))
		return err;
	if ((err = ix_disk_path(ix, d->name, "journal", jdir, sizeof(jdir))) ||
	    (err = lost ? indexed_blocks(ix, d, seq, upto, &c) :
			  changed_blocks(d, jdir, seq, upto, &c)))
		goto out;
	if (!c.set)
		goto done;
	if (!wmax)
		wmax = 1;
	if (wmax > c.set)
		wmax = (size_t)c.set;
	if (!smax || smax > wmax)
		smax = wmax;
	/* Slots for a whole window, the rest for one step. */
	r.win = big_alloc(wmax * bs);
	r.src = malloc(smax * sizeof(*r.src));
	r.idx = malloc(smax * sizeof(*r.idx));
	r.grp = malloc((smax + 1) * sizeof(*r.grp));
	r.vanished = malloc(smax * sizeof(*r.vanished));
	r.runs = malloc(smax * sizeof(*r.runs));
	r.jdir = jdir;
	r.rec = big_alloc(JR_MAX_WRITE);
	w = malloc(smax * sizeof(*w));
	if (!r.win || !r.src || !r.idx || !r.grp || !r.vanished || !r.runs ||
	    !r.rec || !w) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = ix_disk_path(ix, d->name, "base.img", path, sizeof(path))))
		goto out;
	r.base_fd = rw_sys_open(path, O_RDONLY, 0);
	if (r.base_fd < 0) {
		err = rw_err_set(r.base_fd, "cannot open base image '%s': %s",
				 path, rw_strerror(r.base_fd));
		goto out;
	}
	r.base_empty = fstat(r.base_fd, &sb) == 0 && sb.st_blocks == 0;
	if ((err = jr_reader_open(&r.jr, jdir, 0)))
		goto out;

	/*
	 * Steps of the changed blocks, in block order, in windows of up to
	 * wmax blocks: a window's bytes (mapped records, slots) are kept
	 * until its last step was handed over.
	 */
	uint64_t done = 0, block = 0;
	for (;;) {
		size_t n = 0;
		for (; block < c.nbits && n < smax; block++) {
			if (!(c.w[block / 64] >> (block % 64))) {
				block |= 63; /* nothing more in this word */
				continue;
			}
			if (rs_blockset_has(&c, block))
				w[n++].block = block;
		}
		if (!n)
			break;
		if ((err = window_entries(&r, w, n)))
			goto out;
		if ((err = fill_window(&r, w, n)))
			goto out;
		/* Runs: contiguous blocks, all data or all zero. */
		size_t nruns = 0;
		for (size_t a = 0; a < n;) {
			uint64_t off = w[a].block * bs;
			uint64_t part0 = d->size - off < bs ? d->size - off : bs;
			bool z = entry_zero(&r, a, part0);
			uint64_t len = part0;
			size_t b = a + 1;
			/* A data run's bytes must follow each other in
			 * memory too: blocks of one record, or of one base
			 * read. */
			while (b < n && w[b].block == w[b - 1].block + 1 &&
			       len + bs <= RUN_MAX) {
				uint64_t o = w[b].block * bs;
				uint64_t part = d->size - o < bs ? d->size - o : bs;
				if (entry_zero(&r, b, part) != z ||
				    (!z && r.src[b] != r.src[b - 1] + bs))
					break;
				len += part;
				b++;
			}
			r.runs[nruns++] = (struct rs_run){
				.off = off, .len = (uint32_t)len,
				.data = z ? NULL : r.src[a],
			};
			s.blocks += b - a;
			if (z)
				s.zero_bytes += len;
			else
				s.data_bytes += len;
			a = b;
		}
		/* The last step of a window: none left, or the next would
		 * not fit (slots are taken for the whole window). */
		in_window += n;
		uint64_t left = c.set - done - n;
		bool last = !left ||
			    in_window + (left < smax ? left : smax) > wmax;
		err = fn(arg, r.runs, nruns, last);
		if (err)
			goto out;
		if (last) {
			window_release(&r);
			in_window = 0;
		}
		done += n;
		if (progress)
			progress(parg, done, c.set);
	}
done:
	if (st)
		*st = s;
	err = 0;
out:
	if (err && in_window)
		(void)fn(arg, NULL, 0, true); /* stop using the window's bytes */
	rs_view_close(r.v);
	jr_reader_close(r.jr);
	jr_reader_close(r.jr2);
	free(r.rec2);
	free(r.grp);
	free(r.vanished);
	if (r.base_fd >= 0)
		close(r.base_fd);
	free(r.win);
	free(r.src);
	free(r.idx);
	free(r.runs);
	free(r.rec);
	free(w);
	rs_blockset_free(&c);
	return err;
}

struct one_by_one {
	rs_sink_fn sink;
	void *arg;
};

static int runs_to_sink(void *arg, const struct rs_run *runs, size_t n,
			bool last)
{
	struct one_by_one *o = arg;
	int err;

	(void)last; /* the sink takes each run as it comes */
	for (size_t i = 0; i < n; i++)
		if ((err = o->sink(o->arg, runs[i].off, runs[i].len,
				   runs[i].data)))
			return err;
	return 0;
}

int rs_rollback_runs(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		     uint64_t upto, rs_runs_fn fn, void *arg,
		     rs_progress_fn progress, void *parg,
		     struct rs_rollback_stats *st)
{
	return rollback_runs(ix, d, seq, upto, false, fn, arg, progress, parg,
			     st);
}

int rs_rollback(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		uint64_t upto, rs_sink_fn sink, void *arg,
		rs_progress_fn progress, void *parg,
		struct rs_rollback_stats *st)
{
	struct one_by_one o = { sink, arg };

	return rollback_runs(ix, d, seq, upto, false, runs_to_sink, &o,
			     progress, parg, st);
}

int rs_undo_lost(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		 uint64_t upto, rs_sink_fn sink, void *arg,
		 struct rs_rollback_stats *st)
{
	struct one_by_one o = { sink, arg };

	return rollback_runs(ix, d, seq, upto, true, runs_to_sink, &o, NULL,
			     NULL, st);
}
