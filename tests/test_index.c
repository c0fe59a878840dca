/*
 * test_index.c — the store, disks, indexing and lookups of index/.
 *
 * The as-of test checks ix_block_asof against a brute-force model: random
 * overlapping writes, zeroes and trims on two disks go through the real
 * journal writer; for many (block, seq) the versions returned are applied
 * onto base (payloads read back with jr_reader_read_at) and must equal the
 * model replayed up to seq.  The crash test forks an indexer that _exit()s
 * at the N-th step of a catch-up (after an add, inside a commit, after a
 * commit); reopening and catching up must give byte-for-byte the index a
 * full rebuild gives.
 */
#include "index/ix_int.h"
#include "journal/jr.h"
#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BS 4096u

static char *new_store(const char *tag)
{
	char *t = tu_tmpdir(tag);
	char *s = NULL;

	if (asprintf(&s, "%s/store", t) < 0)
		abort();
	free(t);
	CU_ASSERT_EQUAL_FATAL(ix_store_init(s), 0);
	return s;
}

static void drop_store(char *s)
{
	char *parent = strdup(s);
	*strrchr(parent, '/') = 0;
	tu_rmrf(parent);
	free(parent);
	free(s);
}

/* ------------------------------------------------------------ 1. store */

static void test_store_and_disks(void)
{
	char *s = new_store("ixstore");
	struct ix *ix = NULL, *ix2 = NULL;
	struct ix_disk d, d2, *list = NULL;
	char p[4096];
	struct stat st;

	CU_ASSERT_EQUAL(ix_store_init(s), RW_EEXIST);
	/* A non-empty directory is refused too. */
	{
		char *t = tu_tmpdir("ixne");
		char f[4096];
		snprintf(f, sizeof(f), "%s/junk", t);
		int fd = open(f, O_CREAT | O_WRONLY, 0644);
		close(fd);
		CU_ASSERT_EQUAL(ix_store_init(t), RW_EEXIST);
		CU_ASSERT_EQUAL(ix_open(&ix, t, 0), RW_ENOTFOUND);
		tu_rmrf(t);
		free(t);
	}
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_STRING_EQUAL(ix_store_dir(ix), s);
	/* Lock contention: a second writer is refused, also in-process. */
	CU_ASSERT_EQUAL(ix_open(&ix2, s, IX_LOCK), RW_EBUSY);
	CU_ASSERT_PTR_NULL(ix2);
	CU_ASSERT_EQUAL(ix_open(&ix2, s, IX_RDONLY), 0);
	ix_close(ix2);
	ix2 = NULL;

	CU_ASSERT_TRUE(ix_name_valid("vm1"));
	CU_ASSERT_TRUE(ix_name_valid("a.b_c-D9"));
	CU_ASSERT_FALSE(ix_name_valid(""));
	CU_ASSERT_FALSE(ix_name_valid(".hidden"));
	CU_ASSERT_FALSE(ix_name_valid("a/b"));
	CU_ASSERT_FALSE(ix_name_valid("a b"));
	CU_ASSERT_FALSE(ix_name_valid(NULL));
	memset(p, 'x', 65);
	p[65] = 0;
	CU_ASSERT_FALSE(ix_name_valid(p));
	p[64] = 0;
	CU_ASSERT_TRUE(ix_name_valid(p));
	CU_ASSERT_EQUAL(ix_disk_create(ix, "a/b", 1 << 20, 0, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "ok", 1000, 0, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "ok", 0, 0, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "ok", 1 << 20, 3000, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "ok", 1 << 20, 256, NULL, NULL), -EINVAL);

	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "vm2", 8 << 20, 0, NULL, &d), 0);
	CU_ASSERT_EQUAL(d.id, 1);
	CU_ASSERT_EQUAL(d.block_size, IX_BLOCK_SIZE_DEFAULT);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "vm2", 8 << 20, 0, NULL, NULL), RW_EEXIST);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "vm1", 1 << 20, 512, NULL, &d2), 0);
	CU_ASSERT_EQUAL(d2.id, 2);
	CU_ASSERT_EQUAL(d2.block_size, 512);
	CU_ASSERT_EQUAL(ix_disk_path(ix, "vm2", "head.img", p, sizeof(p)), 0);
	CU_ASSERT_EQUAL_FATAL(stat(p, &st), 0);
	CU_ASSERT_EQUAL(st.st_size, 8 << 20);
	CU_ASSERT(st.st_blocks * 512 <= 64 * 1024);
	CU_ASSERT_EQUAL(ix_disk_path(ix, "vm2", "journal", p, sizeof(p)), 0);
	CU_ASSERT_EQUAL(stat(p, &st), 0);
	CU_ASSERT_TRUE(S_ISDIR(st.st_mode));
	CU_ASSERT_EQUAL(ix_disk_path(ix, "vm2", "disk.meta", p, sizeof(p)), 0);
	CU_ASSERT_EQUAL(stat(p, &st), 0);
	CU_ASSERT_EQUAL(st.st_size, IX_DISK_META_SIZE);

	CU_ASSERT_EQUAL(ix_disk_get(ix, "vm1", &d), 0);
	CU_ASSERT_EQUAL(d.id, 2);
	CU_ASSERT_EQUAL(d.size, 1 << 20);
	CU_ASSERT_EQUAL(ix_disk_get_id(ix, 1, &d), 0);
	CU_ASSERT_STRING_EQUAL(d.name, "vm2");
	CU_ASSERT_EQUAL(ix_disk_get(ix, "nope", &d), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(ix_disk_get_id(ix, 99, &d), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(ix_disk_list(ix, &list), 2);
	CU_ASSERT_STRING_EQUAL(list[0].name, "vm1");
	CU_ASSERT_STRING_EQUAL(list[1].name, "vm2");
	free(list);
	CU_ASSERT_EQUAL(ix_disk_set_head_synced(ix, 2, 77), 0);
	CU_ASSERT_EQUAL(ix_disk_set_horizon(ix, 2, 5, 55), 0);
	CU_ASSERT_EQUAL(ix_disk_get_id(ix, 2, &d), 0);
	CU_ASSERT_EQUAL(d.head_synced_seq, 77);
	CU_ASSERT_EQUAL(d.horizon_seq, 5);
	CU_ASSERT_EQUAL(d.horizon_ts, 55);
	CU_ASSERT_EQUAL(ix_disk_set_head_synced(ix, 9, 1), RW_ENOTFOUND);
	ix_close(ix);

	/* Losing the whole index: disks come back from disk.meta, same ids. */
	snprintf(p, sizeof(p), "%s/index", s);
	tu_rmrf(p);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_disk_get(ix, "vm1", &d), 0);
	CU_ASSERT_EQUAL(d.id, 2);
	CU_ASSERT_EQUAL(ix_disk_get(ix, "vm2", &d), 0);
	CU_ASSERT_EQUAL(d.id, 1);
	/* The next id is above every disk.meta id even with a fresh index. */
	CU_ASSERT_EQUAL(ix_disk_create(ix, "vm3", 1 << 20, 0, NULL, &d), 0);
	CU_ASSERT_EQUAL(d.id, 3);
	ix_close(ix);
	drop_store(s);
}

static void test_import_keeps_holes(void)
{
	char *s = new_store("iximp");
	char *t = tu_tmpdir("iximpsrc");
	char src[4096], bad[4096], p[4096];
	struct ix *ix = NULL;
	struct ix_disk d;
	uint64_t st_ = 7;
	uint8_t *data = malloc(16 << 20), *got = malloc(16 << 20);
	struct stat st;
	int fd;

	CU_ASSERT_FATAL(data && got);
	memset(data, 0, 16 << 20);
	tu_fill_random(&st_, data + (1 << 20) + 512, 8192);   /* unaligned data */
	tu_fill_random(&st_, data + (16 << 20) - 4096, 4096); /* last block */
	snprintf(src, sizeof(src), "%s/src.img", t);
	fd = open(src, O_CREAT | O_RDWR | O_TRUNC, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(ftruncate(fd, 16 << 20), 0);
	CU_ASSERT_EQUAL(pwrite(fd, data + (1 << 20), 3 * 4096, 1 << 20), 3 * 4096);
	/* Explicitly written zeroes: allocated in the source, not in the copy. */
	CU_ASSERT_EQUAL(pwrite(fd, data + (5 << 20), 65536, 5 << 20), 65536);
	CU_ASSERT_EQUAL(pwrite(fd, data + (16 << 20) - 4096, 4096, (16 << 20) - 4096), 4096);
	close(fd);
	snprintf(bad, sizeof(bad), "%s/bad.img", t);
	fd = open(bad, O_CREAT | O_RDWR | O_TRUNC, 0644);
	CU_ASSERT_EQUAL(ftruncate(fd, 1000), 0);
	close(fd);

	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "bad", 0, 0, bad, NULL), -EINVAL);
	CU_ASSERT_EQUAL(ix_disk_get(ix, "bad", &d), RW_ENOTFOUND);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "imp", 0, 0, src, &d), 0);
	CU_ASSERT_EQUAL(d.size, 16 << 20);
	CU_ASSERT_EQUAL(ix_disk_create(ix, "imp", 0, 0, src, NULL), RW_EEXIST);
	for (int i = 0; i < 2; i++) {
		ix_disk_path(ix, "imp", i ? "head.img" : "base.img", p, sizeof(p));
		fd = open(p, O_RDONLY);
		CU_ASSERT_FATAL(fd >= 0);
		CU_ASSERT_EQUAL(fstat(fd, &st), 0);
		CU_ASSERT_EQUAL(st.st_size, 16 << 20);
		/* 3 data blocks + the last one; allow some filesystem slack. */
		CU_ASSERT(st.st_blocks * 512 <= 6 * 4096);
		CU_ASSERT(st.st_blocks * 512 >= 4 * 4096);
		CU_ASSERT_EQUAL(pread(fd, got, 16 << 20, 0), 16 << 20);
		CU_ASSERT_EQUAL(memcmp(got, data, 16 << 20), 0);
		close(fd);
	}
	ix_close(ix);
	free(data);
	free(got);
	tu_rmrf(t);
	free(t);
	drop_store(s);
}

/* ------------------------------------------------- a journaled workload */

struct mrec {
	uint32_t disk;      /* index into the workload's disks */
	uint8_t type;
	uint64_t seq, ts, offset;
	uint32_t length;
	uint8_t *data;
	struct jr_loc loc;
};

struct workload {
	char *store;
	int ndisks;
	struct ix_disk disks[2];
	uint8_t *base[2];
	uint64_t size;
	struct mrec *recs;
	size_t n;
};

/* Creates a store with two disks (the first imported from a random base)
 * and writes nrec random records through the journal writer. */
static void workload_make(struct workload *w, const char *tag, size_t nrec,
			  uint64_t seed, uint64_t seg_bytes)
{
	struct ix *ix = NULL;
	struct jr_clock *clk = NULL;
	struct jr_writer *wr[2] = { NULL, NULL };
	struct jr_cctx *cc = NULL;
	uint64_t st = seed;
	char p[4096];

	memset(w, 0, sizeof(*w));
	w->store = new_store(tag);
	w->ndisks = 2;
	w->size = 64 * BS;
	for (int i = 0; i < 2; i++) {
		w->base[i] = calloc(1, w->size);
		CU_ASSERT_FATAL(w->base[i] != NULL);
	}
	tu_fill_random(&st, w->base[0], w->size);
	for (uint64_t b = 0; b < 64; b += 3)
		memset(w->base[0] + b * BS, 0, BS);
	snprintf(p, sizeof(p), "%s/../base0.img", w->store);
	int fd = open(p, O_CREAT | O_RDWR | O_TRUNC, 0644);
	CU_ASSERT_EQUAL_FATAL((size_t)pwrite(fd, w->base[0], w->size, 0), w->size);
	close(fd);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w->store, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "alpha", 0, BS, p, &w->disks[0]), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "beta", w->size, BS, NULL, &w->disks[1]), 0);
	CU_ASSERT_EQUAL_FATAL(jr_clock_new(&clk, 1, 0), 0);
	CU_ASSERT_EQUAL_FATAL(jr_cctx_new(&cc, 1), 0);
	for (int i = 0; i < 2; i++) {
		struct jr_writer_opts o;
		jr_writer_opts_default(&o);
		o.disk_id = w->disks[i].id;
		o.segment_bytes = seg_bytes;
		o.backend = JR_BACKEND_SYNC;
		ix_disk_path(ix, w->disks[i].name, "journal", p, sizeof(p));
		CU_ASSERT_EQUAL_FATAL(jr_writer_open(&wr[i], p, &o, clk, NULL), 0);
	}
	w->recs = calloc(nrec, sizeof(*w->recs));
	uint8_t *buf = malloc(8 * BS);
	for (size_t i = 0; i < nrec; i++) {
		struct mrec *r = &w->recs[i];
		uint64_t x = tu_rand(&st);
		struct jr_append a = { 0 };
		struct jr_appended out;

		r->disk = (uint32_t)(x & 1);
		unsigned kind = (unsigned)((x >> 1) % 100);
		r->type = kind < 70 ? JR_WRITE : kind < 85 ? JR_ZERO : JR_TRIM;
		uint64_t sectors = w->size / 512;
		uint64_t len = 1 + tu_rand(&st) % (r->type == JR_WRITE ? 24 : 64);
		uint64_t off = tu_rand(&st) % sectors;
		if (off + len > sectors)
			len = sectors - off;
		r->offset = off * 512;
		r->length = (uint32_t)(len * 512);
		a.type = r->type;
		a.offset = r->offset;
		a.length = r->length;
		if (r->type == JR_WRITE) {
			r->data = malloc(r->length);
			/* Half compressible, half random. */
			if (x & 0x100)
				memset(r->data, (int)(x >> 16), r->length);
			else
				tu_fill_random(&st, r->data, r->length);
			a.data = r->data;
		}
		CU_ASSERT_EQUAL_FATAL(jr_writer_append(wr[r->disk], &a, (x & 0x200) ? cc : NULL, &out), 0);
		r->seq = out.seq;
		r->ts = out.ts_ns;
		r->loc = out.loc;
	}
	free(buf);
	w->n = nrec;
	for (int i = 0; i < 2; i++)
		CU_ASSERT_EQUAL(jr_writer_close(wr[i]), 0);
	jr_cctx_free(cc);
	jr_clock_free(clk);
	ix_close(ix);
}

static void workload_free(struct workload *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->recs[i].data);
	free(w->recs);
	free(w->base[0]);
	free(w->base[1]);
	drop_store(w->store);
}

static void apply(uint8_t *img, const struct mrec *r)
{
	if (r->type == JR_WRITE)
		memcpy(img + r->offset, r->data, r->length);
	else
		memset(img + r->offset, 0, r->length);
}

/* ------------------------------------------------------------ 2. as-of */

struct qry {
	uint32_t disk;
	uint64_t block, seq;
};

static int qry_cmp(const void *a, const void *b)
{
	const struct qry *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static struct ix_disk replay_disks[2];
static uint8_t *replay_img[2];
static size_t replay_calls;

static int replay_fn(void *arg, const struct ix_disk *d, const struct jr_rec *rec,
		     const void *payload)
{
	(void)arg;
	int i = d->id == replay_disks[0].id ? 0 : 1;
	replay_calls++;
	if (rec->type == JR_WRITE) {
		if (!payload)
			return -EINVAL;
		memcpy(replay_img[i] + rec->offset, payload, rec->length);
	} else {
		memset(replay_img[i] + rec->offset, 0, rec->length);
	}
	return 0;
}

struct rcount {
	uint64_t n, after, upto;
	bool bad;
};

static int range_cb(void *arg, uint64_t block, const struct ix_version *v)
{
	struct rcount *rc = arg;
	(void)block;
	rc->n++;
	if (v->seq <= rc->after || v->seq > rc->upto)
		rc->bad = true;
	return 0;
}

static void test_asof_model(void)
{
	struct workload w;
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct jr_reader *jr[2] = { NULL, NULL };
	uint8_t *model[2], *blk = malloc(BS), *rbuf = malloc(JR_MAX_WRITE / 64);
	size_t nq = 4000, applied = 0;
	struct qry *q = calloc(nq, sizeof(*q));
	uint64_t st = 99;
	char p[4096];
	int maxv = 0;

	workload_make(&w, "ixasof", 1500, 1234, 48 * 1024);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	/* Catch-up with replay: head from base must reach the final state. */
	for (int i = 0; i < 2; i++) {
		replay_disks[i] = w.disks[i];
		replay_img[i] = malloc(w.size);
		memcpy(replay_img[i], w.base[i], w.size);
		model[i] = malloc(w.size);
		memcpy(model[i], w.base[i], w.size);
	}
	replay_calls = 0;
	ix_catchup_batch_records = 300;
	CU_ASSERT_EQUAL(ix_catch_up(ix, replay_fn, NULL), (int)w.n);
	ix_catchup_batch_records = 4096;
	CU_ASSERT_EQUAL(replay_calls, w.n);
	for (size_t i = 0; i < w.n; i++)
		apply(model[w.recs[i].disk], &w.recs[i]);
	for (int i = 0; i < 2; i++)
		CU_ASSERT_EQUAL(memcmp(model[i], replay_img[i], w.size), 0);
	/* Idempotent: nothing more to do. */
	CU_ASSERT_EQUAL(ix_catch_up(ix, NULL, NULL), 0);

	for (int i = 0; i < 2; i++) {
		memcpy(model[i], w.base[i], w.size);
		ix_disk_path(ix, w.disks[i].name, "journal", p, sizeof(p));
		CU_ASSERT_EQUAL_FATAL(jr_reader_open(&jr[i], p, 0), 0);
	}
	uint64_t maxseq = w.recs[w.n - 1].seq;
	for (size_t i = 0; i < nq; i++) {
		q[i].disk = (uint32_t)(tu_rand(&st) & 1);
		q[i].block = tu_rand(&st) % 64;
		q[i].seq = tu_rand(&st) % (maxseq + 2);
	}
	qsort(q, nq, sizeof(*q), qry_cmp);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	size_t bad = 0;
	for (size_t i = 0; i < nq; i++) {
		while (applied < w.n && w.recs[applied].seq <= q[i].seq) {
			apply(model[w.recs[applied].disk], &w.recs[applied]);
			applied++;
		}
		const struct ix_disk *d = &w.disks[q[i].disk];
		struct ix_version v[64];
		int n = ix_block_asof(rd, d->id, q[i].block, q[i].seq, v, 64);
		CU_ASSERT_FATAL(n >= 0);
		if (n > maxv)
			maxv = n;
		memcpy(blk, w.base[q[i].disk] + q[i].block * BS, BS);
		for (int k = n - 1; k >= 0; k--) {
			struct jr_rec rec;
			CU_ASSERT(v[k].seq <= q[i].seq);
			if (k > 0)
				CU_ASSERT(v[k].seq < v[k - 1].seq);
			CU_ASSERT((k == n - 1) || v[k].partial);
			CU_ASSERT_EQUAL_FATAL(jr_reader_read_at(jr[q[i].disk], &v[k].loc, &rec, rbuf, JR_MAX_WRITE / 64), 0);
			CU_ASSERT_EQUAL(rec.seq, v[k].seq);
			CU_ASSERT_EQUAL(rec.type, v[k].type);
			uint64_t bs = q[i].block * BS, be = bs + BS;
			uint64_t rs = rec.offset, re = rec.offset + rec.length;
			uint64_t lo = rs > bs ? rs : bs, hi = re < be ? re : be;
			CU_ASSERT_FATAL(lo < hi);
			CU_ASSERT_EQUAL(v[k].partial, !(rs <= bs && re >= be));
			if (rec.type == JR_WRITE)
				memcpy(blk + (lo - bs), rbuf + (lo - rs), hi - lo);
			else
				memset(blk + (lo - bs), 0, hi - lo);
		}
		if (memcmp(blk, model[q[i].disk] + q[i].block * BS, BS) != 0)
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT(maxv >= 3); /* the workload does produce partial chains */

	/* base_seq (what compaction folded into base) hides older versions;
	 * the horizon alone does not (restore/compact.c explains why). */
	{
		uint64_t hseq = w.recs[w.n / 2].seq;
		struct ix_version v[64];
		ix_read_end(rd);
		rd = NULL;
		CU_ASSERT_EQUAL(ix_disk_advance_horizon(ix, w.disks[0].id, hseq, 1), 0);
		CU_ASSERT_EQUAL(ix_disk_set_base(ix, w.disks[0].id, hseq), 0);
		CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
		for (uint64_t b = 0; b < 64; b++) {
			int n = ix_block_asof(rd, w.disks[0].id, b, maxseq, v, 64);
			CU_ASSERT(n >= 0);
			for (int k = 0; k < n; k++)
				CU_ASSERT(v[k].seq > hseq);
		}
		CU_ASSERT_EQUAL(ix_block_asof(rd, 999, 0, 1, v, 64), RW_ENOTFOUND);
		/* -ENOBUFS when the caller's array is too small for a chain. */
		int found = 0;
		for (uint64_t b = 0; b < 64 && !found; b++)
			for (size_t k = 0; k < w.n && !found; k += 7) {
				int n = ix_block_asof(rd, w.disks[1].id, b, w.recs[k].seq, v, 64);
				if (n >= 2) {
					CU_ASSERT_EQUAL(ix_block_asof(rd, w.disks[1].id, b, w.recs[k].seq, v, 1), -ENOBUFS);
					found = 1;
				}
			}
		CU_ASSERT(found);
		CU_ASSERT_EQUAL(ix_read_renew(rd), 0);
	}
	/* versions_range visits exactly the versions in (after, upto]. */
	{
		struct rcount rc = { 0, w.recs[100].seq, w.recs[900].seq, false };
		uint64_t expect = 0;
		for (size_t i = 0; i < w.n; i++)
			if (w.recs[i].disk == 1 && w.recs[i].seq > rc.after && w.recs[i].seq <= rc.upto)
				expect += (w.recs[i].offset + w.recs[i].length - 1) / BS - w.recs[i].offset / BS + 1;
		CU_ASSERT_EQUAL(ix_versions_range(rd, w.disks[1].id, rc.after, rc.upto, range_cb, &rc), 0);
		CU_ASSERT_EQUAL(rc.n, expect);
		CU_ASSERT_FALSE(rc.bad);
	}
	ix_read_end(rd);
	for (int i = 0; i < 2; i++) {
		jr_reader_close(jr[i]);
		free(model[i]);
		free(replay_img[i]);
	}
	free(q);
	free(blk);
	free(rbuf);
	ix_close(ix);
	workload_free(&w);
}


/* ----------------------------------------------------- canonical dump */

struct dump {
	uint8_t *p;
	size_t n, cap;
};

static void dump_put(struct dump *d, const void *x, size_t n)
{
	if (d->n + n + 8 > d->cap) {
		d->cap = (d->cap + n + 8) * 2;
		d->p = realloc(d->p, d->cap);
	}
	rw_put_le64(d->p + d->n, n);
	memcpy(d->p + d->n + 8, x, n);
	d->n += n + 8;
}

/* Every DB but the map-size bookkeeping, as one byte string. */
static struct dump dump_index(const char *store)
{
	struct ix *ix = NULL;
	struct dump d = { 0 };
	MDB_txn *txn = NULL;

	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, store, IX_RDONLY), 0);
	MDB_dbi dbs[] = { ix->db_state, ix->db_disks, ix->db_names, ix->db_versions, ix->db_vmap,
			  ix->db_time, ix->db_segments, ix->db_marks };
	CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), 0);
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		MDB_cursor *c;
		MDB_val k, v;
		dump_put(&d, "DB", 2);
		mdb_cursor_open(txn, dbs[i], &c);
		for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			if (i == 0 && k.mv_size == 7 && !memcmp(k.mv_data, "mapsize", 7))
				continue;
			dump_put(&d, k.mv_data, k.mv_size);
			dump_put(&d, v.mv_data, v.mv_size);
		}
		mdb_cursor_close(c);
	}
	mdb_txn_abort(txn);
	ix_close(ix);
	return d;
}

/* ------------------------------------------------------------ 3. crash */

static uint64_t crash_at;
static const char *crash_step;
static uint64_t crash_seen;

static void crash_hook(const char *step)
{
	if (strcmp(step, crash_step) == 0 && ++crash_seen == crash_at)
		_exit(42);
}

static void test_crash_consistency(void)
{
	struct workload w;
	struct ix *ix = NULL;
	char p[4096];
	static const char *const steps[] = { "add", "put", "commit" };
	static const uint64_t at[] = { 1, 2, 299, 300, 301, 777, 1500, 2999, 3001 };
	static const uint64_t at_commit[] = { 1, 2, 3, 5, 8, 11 };
	/* Puts are per chunk and per time bucket: a few dozen per batch. */
	static const uint64_t at_put[] = { 1, 2, 3, 5, 8, 13, 21, 34, 55 };
	int crashed = 0, finished = 0;

	workload_make(&w, "ixcrash", 1600, 4321, 32 * 1024);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_rebuild(ix), 0);
	struct ix_mark m = { "kept", 1, 2, 3 };
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &m), 0);
	ix_close(ix);
	struct dump ref = dump_index(w.store);

	for (size_t s = 0; s < 3; s++) {
		const uint64_t *ats = s == 0 ? at : s == 1 ? at_put : at_commit;
		size_t nat = s == 0 ? sizeof(at) / sizeof(at[0])
			   : s == 1 ? sizeof(at_put) / sizeof(at_put[0])
				    : sizeof(at_commit) / sizeof(at_commit[0]);
		for (size_t a = 0; a < nat; a++) {
			/* Start from an index that has only the marks and disks. */
			CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
			CU_ASSERT_EQUAL(ix_clear_derived(ix), 0);
			ix_close(ix);
			fflush(NULL);
			pid_t pid = fork();
			CU_ASSERT_FATAL(pid >= 0);
			if (pid == 0) {
				struct ix *cix = NULL;
				if (ix_open(&cix, w.store, IX_LOCK))
					_exit(1);
				ix_catchup_batch_records = 300;
				crash_step = steps[s];
				crash_at = ats[a];
				crash_seen = 0;
				ix_test_step_hook = crash_hook;
				int rc = ix_catch_up(cix, NULL, NULL);
				_exit(rc < 0 ? 2 : 0);
			}
			int status = 0;
			CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
			CU_ASSERT_TRUE(WIFEXITED(status));
			int code = WEXITSTATUS(status);
			CU_ASSERT(code == 42 || code == 0);
			crashed += code == 42;
			finished += code == 0;
			/* Recover: reopen and catch up. */
			CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
			CU_ASSERT(ix_catch_up(ix, NULL, NULL) >= 0);
			ix_close(ix);
			struct dump got = dump_index(w.store);
			CU_ASSERT_EQUAL(got.n, ref.n);
			if (got.n == ref.n)
				CU_ASSERT_EQUAL(memcmp(got.p, ref.p, ref.n), 0);
			free(got.p);
		}
	}
	CU_ASSERT(crashed >= 15);
	/* A crashed writer's stale reader slots and lock do not block us. */
	snprintf(p, sizeof(p), "%s/lock", w.store);
	CU_ASSERT_EQUAL(access(p, F_OK), 0);
	(void)finished;
	free(ref.p);
	workload_free(&w);
}

/* ------------------------------------------------------------ 4. map full */

struct holder {
	struct ix *ix;
	int state; /* 0 starting, 1 holding, 2 release */
};

static void *hold_read(void *arg)
{
	struct holder *h = arg;
	struct ix_read *rd = NULL;

	if (ix_read_begin(h->ix, &rd) == 0) {
		__atomic_store_n(&h->state, 1, __ATOMIC_RELEASE);
		while (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != 2)
			usleep(1000);
		ix_read_end(rd);
	} else {
		__atomic_store_n(&h->state, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void test_map_full_grows(void)
{
	char *s;
	struct ix *ix = NULL;
	struct ix_batch *b = NULL;
	struct ix_disk d;
	struct ix_read *rd = NULL;
	MDB_envinfo info;
	const size_t n = 30000;
	uint64_t st = 5;
	uint64_t *blocks = malloc(n * sizeof(*blocks));

	setenv("REWIND_MAPSIZE", "131072", 1);
	s = new_store("ixmap");
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "big", 1ull << 36, 0, NULL, &d), 0);
	mdb_env_info(ix->env, &info);
	size_t initial = info.me_mapsize;
	CU_ASSERT(initial <= 131072);
	CU_ASSERT_EQUAL_FATAL(ix_batch_new(ix, &b), 0);
	/* A thread holding a read cannot wait for itself: growth refuses. */
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	for (size_t i = 0; i < 30000; i++) {
		struct jr_rec r = { .type = JR_WRITE, .seq = i + 1, .ts_ns = 1000 + i * 10,
				    .disk_id = d.id, .offset = i * 4096, .length = 4096 };
		struct jr_loc l = { 1, 0 };
		CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
	}
	CU_ASSERT_EQUAL(ix_batch_commit(b), -EDEADLK);
	ix_read_end(rd);
	rd = NULL;
	CU_ASSERT_EQUAL(ix_disk_get(ix, "big", &d), 0);
	CU_ASSERT_EQUAL(d.last_indexed_seq, 0);
	/* Another thread's long read: growth gives up after the wait. */
	{
		struct holder h = { ix, 0 };
		pthread_t th;
		ix_grow_wait_ns = 200 * 1000000ull;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, hold_read, &h), 0);
		while (!__atomic_load_n(&h.state, __ATOMIC_ACQUIRE))
			usleep(1000);
		for (size_t i = 0; i < 30000; i++) {
			struct jr_rec r = { .type = JR_WRITE, .seq = i + 1, .ts_ns = 1000 + i * 10,
					    .disk_id = d.id, .offset = i * 4096, .length = 4096 };
			struct jr_loc l = { 1, 0 };
			CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
		}
		CU_ASSERT_EQUAL(ix_batch_commit(b), RW_EBUSY);
		__atomic_store_n(&h.state, 2, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
		ix_grow_wait_ns = 10ull * 1000000000ull;
	}
	for (size_t i = 0; i < n; i++) {
		struct jr_rec r = { 0 };
		struct jr_loc l = { 1 + (i / 1000) * 1000, (i % 1000) * 4160 };
		blocks[i] = tu_rand(&st) % (1u << 24);
		r.type = JR_WRITE;
		r.seq = i + 1;
		r.ts_ns = 1000 + i * 10;
		r.disk_id = d.id;
		r.offset = blocks[i] * 4096;
		r.length = 4096;
		r.stored_len = 4096;
		CU_ASSERT_EQUAL_FATAL(ix_batch_add(b, &r, &l), 0);
		if ((i + 1) % 5000 == 0)
			CU_ASSERT_EQUAL_FATAL(ix_batch_commit(b), 0);
	}
	ix_batch_free(b);
	mdb_env_info(ix->env, &info);
	CU_ASSERT(info.me_mapsize > initial * 8);
	ix_close(ix);
	/* Reopen with the tiny default still set: the grown size is adopted. */
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	size_t missing = 0;
	for (size_t i = 0; i < n; i++) {
		struct ix_version v[4];
		int k = ix_block_asof(rd, d.id, blocks[i], i + 1, v, 4);
		if (k != 1 || v[0].seq != i + 1 || v[0].loc.segment != 1 + (i / 1000) * 1000 ||
		    v[0].loc.offset != (i % 1000) * 4160 || v[0].partial)
			missing++;
	}
	CU_ASSERT_EQUAL(missing, 0);
	uint64_t seq = 0, ts = 0;
	CU_ASSERT_EQUAL(ix_latest(rd, &seq, &ts), 0);
	CU_ASSERT_EQUAL(seq, n);
	ix_read_end(rd);
	/* The index keeps growing after the reopen. */
	CU_ASSERT_EQUAL(ix_disk_get(ix, "big", &d), 0);
	CU_ASSERT_EQUAL(d.last_indexed_seq, n);
	ix_close(ix);
	unsetenv("REWIND_MAPSIZE");
	free(blocks);
	drop_store(s);
}

/* ------------------------------------------------------------ 5. verify */

struct vseen {
	size_t n;
	uint64_t block, seq;
	bool hit;
};

static void on_problem(void *arg, const struct ix_problem *p)
{
	struct vseen *v = arg;
	v->n++;
	if (p->block == v->block && p->seq == v->seq)
		v->hit = true;
}

static void test_verify_detects(void)
{
	struct workload w;
	struct ix *ix = NULL;
	struct ix_verify_report rep;
	struct vseen seen = { 0 };
	char p[4096];

	workload_make(&w, "ixverify", 400, 777, 16 * 1024);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_catch_up(ix, NULL, NULL), (int)w.n);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	CU_ASSERT_EQUAL(seen.n, 0);
	CU_ASSERT_EQUAL(rep.disks, 2);
	CU_ASSERT_EQUAL(rep.records, w.n);
	CU_ASSERT(rep.versions >= w.n);
	CU_ASSERT(rep.segments >= 4);
	CU_ASSERT_EQUAL(rep.time_entries, w.n);
	const char *one[] = { "beta" };
	CU_ASSERT_EQUAL(ix_verify(ix, one, 1, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.disks, 1);
	CU_ASSERT_EQUAL(rep.problems, 0);
	const char *none[] = { "nope" };
	CU_ASSERT_EQUAL(ix_verify(ix, none, 1, NULL, NULL, &rep), RW_ENOTFOUND);

	/* (a) An entry pointing at the wrong record. */
	const struct mrec *r1 = NULL, *r2 = NULL;
	for (size_t i = 10; i < w.n && !r2; i++) {
		if (w.recs[i].disk != 0)
			continue;
		if (!r1)
			r1 = &w.recs[i];
		else
			r2 = &w.recs[i];
	}
	if (!r1 || !r2) {
		CU_FAIL("workload has too few records");
		return;
	}
	{
		MDB_txn *txn;
		struct ix_version ver = { r1->seq, r2->loc, r1->type, false };
		uint64_t blk = r1->offset / BS;
		ver.loc.segment = r2->loc.segment <= r1->seq ? r2->loc.segment : r1->loc.segment;
		ver.loc.offset = r2->loc.offset;
		if (ver.loc.segment == r1->loc.segment && ver.loc.offset == r1->loc.offset)
			ver.loc.offset += 1;
		CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(ix->env, NULL, 0, &txn), 0);
		CU_ASSERT_EQUAL(ix_vers_test_put(txn, ix->db_versions, ix->db_vmap, w.disks[0].id, blk, &ver), 0);
		CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
		memset(&seen, 0, sizeof(seen));
		seen.block = blk;
		seen.seq = r1->seq;
		CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
		CU_ASSERT(rep.problems >= 1);
		CU_ASSERT(seen.n >= 1);
		CU_ASSERT_TRUE(seen.hit);
	}
	/* An extra entry for a block the record does not touch. */
	CU_ASSERT_EQUAL(ix_rebuild(ix), 0);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	{
		MDB_txn *txn;
		struct ix_version ver = { r1->seq, r1->loc, r1->type, false };
		uint64_t blk = (r1->offset / BS + 20) % 64;
		CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(ix->env, NULL, 0, &txn), 0);
		CU_ASSERT_EQUAL(ix_vers_test_put(txn, ix->db_versions, ix->db_vmap, w.disks[0].id, blk, &ver), 0);
		CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
		memset(&seen, 0, sizeof(seen));
		seen.block = blk;
		seen.seq = r1->seq;
		CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
		CU_ASSERT_TRUE(seen.hit);
	}
	CU_ASSERT_EQUAL(ix_rebuild(ix), 0);
	/* A chunk whose block map (vmap) went missing, and one whose map is
	 * wrong. */
	{
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, v;
		uint8_t kb[IX_VKEY], zero[IX_CMAP] = { 0 };
		CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(ix->env, NULL, 0, &txn), 0);
		CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, ix->db_vmap, &c), 0);
		CU_ASSERT_EQUAL_FATAL(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
		memcpy(kb, k.mv_data, IX_VKEY);
		CU_ASSERT_EQUAL(mdb_cursor_del(c, 0), 0);
		CU_ASSERT_EQUAL_FATAL(mdb_cursor_get(c, &k, &v, MDB_LAST), 0);
		MDB_val zv = { IX_CMAP, zero };
		CU_ASSERT_EQUAL(mdb_cursor_put(c, &k, &zv, MDB_CURRENT), 0);
		mdb_cursor_close(c);
		CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
		memset(&seen, 0, sizeof(seen));
		seen.block = rw_get_be64(kb + 4) * IX_GROUP_BLOCKS;
		seen.seq = rw_get_be64(kb + 12);
		CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
		CU_ASSERT(rep.problems >= 2);
		CU_ASSERT_TRUE(seen.hit);
	}
	CU_ASSERT_EQUAL(ix_rebuild(ix), 0);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);

	/* (b) A corrupted record: flip a payload byte of a record in the middle. */
	const struct mrec *rc = NULL;
	for (size_t i = w.n / 3; i < w.n && !rc; i++)
		if (w.recs[i].disk == 0 && w.recs[i].type == JR_WRITE)
			rc = &w.recs[i];
	if (!rc) {
		CU_FAIL("workload has no write");
		return;
	}
	char seg[32];
	jr_segment_name(rc->loc.segment, seg);
	snprintf(p, sizeof(p), "%s/disks/alpha/journal/%s", w.store, seg);
	int fd = open(p, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	uint8_t byte;
	off_t at = (off_t)rc->loc.offset + JR_HDR_SIZE + 3;
	CU_ASSERT_EQUAL(pread(fd, &byte, 1, at), 1);
	byte ^= 0x5a;
	CU_ASSERT_EQUAL(pwrite(fd, &byte, 1, at), 1);
	memset(&seen, 0, sizeof(seen));
	seen.block = rc->offset / BS;
	seen.seq = rc->seq;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
	CU_ASSERT(rep.problems >= 1);
	CU_ASSERT_TRUE(seen.hit); /* the entry pointing at it is named */
	byte ^= 0x5a;
	CU_ASSERT_EQUAL(pwrite(fd, &byte, 1, at), 1);
	close(fd);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);

	/* (c) A missing record: truncate a middle segment. */
	CU_ASSERT_EQUAL(truncate(p, (off_t)rc->loc.offset), 0);
	memset(&seen, 0, sizeof(seen));
	seen.block = rc->offset / BS;
	seen.seq = rc->seq;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
	CU_ASSERT(rep.problems >= 1);
	CU_ASSERT_TRUE(seen.hit);
	/* ... and a deleted segment file. */
	CU_ASSERT_EQUAL(unlink(p), 0);
	memset(&seen, 0, sizeof(seen));
	seen.block = rc->offset / BS;
	seen.seq = rc->seq;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, on_problem, &seen, &rep), 0);
	CU_ASSERT(rep.problems >= 1);
	CU_ASSERT_TRUE(seen.hit);
	ix_close(ix);
	workload_free(&w);
}

/* ------------------------------------------- 6. time map, segments, marks */

static void test_time_segments_marks(void)
{
	struct workload w;
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	uint64_t seq, ts;
	char p[4096];

	workload_make(&w, "ixtime", 600, 55, 16 * 1024);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_latest(rd, &seq, &ts), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(ix_time_to_seq(rd, 1ull << 62, &seq, &ts), RW_ENOTFOUND);
	ix_read_end(rd);
	CU_ASSERT_EQUAL(ix_catch_up(ix, NULL, NULL), (int)w.n);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_latest(rd, &seq, &ts), 0);
	CU_ASSERT_EQUAL(seq, w.recs[w.n - 1].seq);
	CU_ASSERT_EQUAL(ts, w.recs[w.n - 1].ts);
	CU_ASSERT_EQUAL(ix_time_to_seq(rd, w.recs[0].ts - 1, &seq, &ts), RW_ENOTFOUND);
	size_t bad = 0;
	for (size_t i = 0; i < w.n; i++) {
		uint64_t t2 = 0;
		if (ix_time_to_seq(rd, w.recs[i].ts, &seq, &ts) || seq != w.recs[i].seq ||
		    ts != w.recs[i].ts)
			bad++;
		if (i > 0 && (ix_time_to_seq(rd, w.recs[i].ts - 1, &seq, &ts) ||
			      seq != w.recs[i - 1].seq))
			bad++;
		if (ix_seq_to_time(rd, w.recs[i].seq, &t2) || t2 != w.recs[i].ts)
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(ix_time_to_seq(rd, UINT64_MAX, &seq, &ts), 0);
	CU_ASSERT_EQUAL(seq, w.recs[w.n - 1].seq);
	CU_ASSERT_EQUAL(ix_seq_to_time(rd, w.recs[w.n - 1].seq + 5, &ts), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(ix_seq_to_time(rd, 0, &ts), RW_ENOTFOUND);

	/* Segments agree with the files, earlier ones sealed. */
	for (int i = 0; i < 2; i++) {
		struct ix_segment *segs = NULL;
		struct jr_seginfo *files = NULL;
		ix_disk_path(ix, w.disks[i].name, "journal", p, sizeof(p));
		int nf = jr_segments_list(p, &files);
		int ns = ix_segment_list(rd, w.disks[i].id, &segs);
		CU_ASSERT(nf >= 3);
		CU_ASSERT_EQUAL(ns, nf);
		uint64_t recs = 0, nrec = 0, bytes = 0;
		for (size_t k = 0; k < w.n; k++) {
			if (w.recs[k].disk != (uint32_t)i)
				continue;
			nrec++;
		}
		for (int k = 0; k < ns && k < nf; k++) {
			CU_ASSERT_EQUAL(segs[k].first_seq, files[k].first_seq);
			CU_ASSERT_EQUAL(segs[k].sealed, k < ns - 1);
			CU_ASSERT(segs[k].last_seq >= segs[k].first_seq);
			CU_ASSERT(segs[k].last_ts >= segs[k].first_ts);
			CU_ASSERT(segs[k].bytes <= files[k].bytes);
			if (k + 1 < ns)
				CU_ASSERT(segs[k].last_seq < segs[k + 1].first_seq);
			recs += segs[k].records;
			bytes += segs[k].bytes;
		}
		CU_ASSERT_EQUAL(recs, nrec);
		CU_ASSERT(bytes >= nrec * JR_HDR_SIZE);
		free(segs);
		free(files);
	}
	ix_read_end(rd);

	/* Marks. */
	struct ix_mark m1 = { "before-upgrade", 100, 10, 1000 }, m2 = { "after", 200, 5, 2000 };
	struct ix_mark bad_m = { "a/b", 1, 1, 1 }, got, *list = NULL;
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &m1), 0);
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &m2), 0);
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[1].id, &m1), 0);
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &bad_m), -EINVAL);
	bad_m.label[0] = 0;
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &bad_m), -EINVAL);
	CU_ASSERT_EQUAL(ix_mark_put(ix, 999, &m1), RW_ENOTFOUND);
	m1.seq = 11; /* replace */
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &m1), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_mark_get(rd, w.disks[0].id, "before-upgrade", &got), 0);
	CU_ASSERT_EQUAL(got.seq, 11);
	CU_ASSERT_EQUAL(got.ts_ns, 100);
	CU_ASSERT_EQUAL(got.created_ns, 1000);
	CU_ASSERT_EQUAL(ix_mark_get(rd, w.disks[0].id, "nope", &got), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(ix_mark_list(rd, w.disks[0].id, &list), 2);
	CU_ASSERT_STRING_EQUAL(list[0].label, "after");  /* by seq */
	CU_ASSERT_STRING_EQUAL(list[1].label, "before-upgrade");
	free(list);
	ix_read_end(rd);
	CU_ASSERT_EQUAL(ix_mark_del(ix, w.disks[0].id, "after"), 0);
	CU_ASSERT_EQUAL(ix_mark_del(ix, w.disks[0].id, "after"), RW_ENOTFOUND);
	/* Marks survive a rebuild and a per-disk reindex. */
	CU_ASSERT_EQUAL(ix_rebuild(ix), 0);
	CU_ASSERT_EQUAL(ix_disk_reindex(ix, w.disks[1].id), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_mark_list(rd, w.disks[0].id, &list), 1);
	free(list);
	CU_ASSERT_EQUAL(ix_mark_list(rd, w.disks[1].id, &list), 1);
	free(list);
	CU_ASSERT_EQUAL(ix_latest(rd, &seq, &ts), 0);
	CU_ASSERT_EQUAL(seq, w.recs[w.n - 1].seq);
	ix_read_end(rd);
	struct ix_verify_report rep;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);

	/* Replaying a batch of already-indexed records changes nothing. */
	ix_close(ix);
	struct dump before = dump_index(w.store);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	struct ix_batch *b = NULL;
	CU_ASSERT_EQUAL_FATAL(ix_batch_new(ix, &b), 0);
	for (size_t i = 0; i < w.n; i++) {
		struct jr_rec r = { 0 };
		r.type = w.recs[i].type;
		r.seq = w.recs[i].seq;
		r.ts_ns = w.recs[i].ts + 1;  /* would show in the time map */
		r.disk_id = w.disks[w.recs[i].disk].id;
		r.offset = 0;
		r.length = BS;
		CU_ASSERT_EQUAL(ix_batch_add(b, &r, &w.recs[i].loc), 0);
	}
	CU_ASSERT_EQUAL(ix_batch_commit(b), 0);
	/* Out of order within one disk is refused. */
	struct jr_rec r = { .type = JR_WRITE, .seq = 10, .disk_id = w.disks[0].id, .length = 512 };
	struct jr_loc l = { 1, 0 };
	CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
	CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), -EINVAL);
	ix_batch_free(b);
	ix_close(ix);
	struct dump after = dump_index(w.store);
	CU_ASSERT_EQUAL(before.n, after.n);
	if (before.n == after.n)
		CU_ASSERT_EQUAL(memcmp(before.p, after.p, before.n), 0);
	free(before.p);
	free(after.p);
	workload_free(&w);
}

/* ------------------------------------------------------- lookup summary */

#define SUM_BLOCKS 4096u     /* 16 groups */
#define SUM_RECS 3000u

struct sum_model {
	uint32_t first[SUM_RECS]; /* record i: blocks first..first+len-1 */
	uint8_t len[SUM_RECS];
};

/* The newest seq <= seq touching block (0: none), records being seq i+1. */
static uint64_t sum_expect(const struct sum_model *m, uint64_t block,
			   uint64_t seq)
{
	uint64_t best = 0;

	for (uint64_t i = 0; i < SUM_RECS && i + 1 <= seq; i++)
		if (block >= m->first[i] && block < m->first[i] + m->len[i])
			best = i + 1;
	return best;
}

/* Queries every block of groups [g0, g1) as-of seqs from `seqs`; returns
 * the number of wrong answers. */
static size_t sum_check(struct ix_read *rd, uint32_t disk,
			const struct sum_model *m, uint64_t g0, uint64_t g1,
			const uint64_t *seqs, size_t nseqs)
{
	size_t bad = 0;

	for (uint64_t b = g0 * 256; b < g1 * 256; b++) {
		for (size_t i = 0; i < nseqs; i++) {
			struct ix_version v[8];
			int n = ix_block_asof(rd, disk, b, seqs[i], v, 8);
			uint64_t want = sum_expect(m, b, seqs[i]);
			if (n < 0 || (n > 0) != (want > 0) ||
			    (n > 0 && v[0].seq != want))
				bad++;
		}
	}
	return bad;
}

/*
 * summary.c answers "no version" from memory.  It must stay exact when
 * snapshots of different ages share it: one created by a newer snapshot
 * and then used (and built from) by an older one, and lookups past the
 * seq it was built for.  Half of every group is never written.
 */
static void test_lookup_summary(void)
{
	char *store = new_store("ixsum");
	struct sum_model *m = calloc(1, sizeof(*m));
	struct ix *ix = NULL;
	struct ix_read *ra = NULL, *rb = NULL;
	struct ix_batch *b = NULL;
	struct ix_disk d;
	uint64_t st = 4242, ts = 1000;
	static const uint64_t old_seqs[] = { 1, 7, 300, 1499, 1500 };
	static const uint64_t new_seqs[] = { 2, 1500, 1501, 2222, 3000, 9999 };

	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, store, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "sum", (uint64_t)SUM_BLOCKS * BS, BS, NULL, &d), 0);
	for (uint32_t i = 0; i < SUM_RECS; i++) {
		uint64_t g = tu_rand(&st) % (SUM_BLOCKS / 256);
		m->len[i] = (uint8_t)(1 + tu_rand(&st) % 4);
		m->first[i] = (uint32_t)(g * 256 + tu_rand(&st) % (128 - 4));
	}
	CU_ASSERT_EQUAL_FATAL(ix_batch_new(ix, &b), 0);
	for (uint32_t i = 0; i < SUM_RECS; i++) {
		struct jr_rec r = { 0 };
		struct jr_loc l = { 1, (uint64_t)i * 64 };
		r.type = JR_WRITE;
		r.seq = i + 1;
		r.ts_ns = ts += 1000;
		r.disk_id = d.id;
		r.offset = (uint64_t)m->first[i] * BS;
		r.length = m->len[i] * BS;
		r.stored_len = r.length;
		CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
		if (i + 1 == SUM_RECS / 2) {
			CU_ASSERT_EQUAL(ix_batch_commit(b), 0);
			CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &ra), 0); /* at 1500 */
		}
	}
	CU_ASSERT_EQUAL(ix_batch_commit(b), 0);
	ix_batch_free(b);
	/* The newer snapshot creates the summary (valid up to 3000) and
	 * builds groups 0..7; the older one may use those but must not build
	 * 8..15 from its snapshot; then the newer one builds them. */
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rb), 0);
	CU_ASSERT_EQUAL(sum_check(rb, d.id, m, 0, 8, new_seqs, 6), 0);
	CU_ASSERT_EQUAL(sum_check(ra, d.id, m, 0, 16, old_seqs, 5), 0);
	CU_ASSERT_EQUAL(sum_check(rb, d.id, m, 8, 16, new_seqs, 6), 0);
	CU_ASSERT_EQUAL(sum_check(ra, d.id, m, 8, 16, old_seqs, 5), 0);
	ix_read_end(ra);
	ix_read_end(rb);
	ix_close(ix);

	/* A summary created by an older snapshot: lookups past it stay exact. */
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, store, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &ra), 0);
	CU_ASSERT_EQUAL(sum_check(ra, d.id, m, 0, 16, old_seqs, 5), 0);
	CU_ASSERT_EQUAL_FATAL(ix_batch_new(ix, &b), 0);
	{
		struct jr_rec r = { 0 };
		struct jr_loc l = { 1, 1 << 20 };
		r.type = JR_WRITE;
		r.seq = SUM_RECS + 1;
		r.ts_ns = ts + 1000;
		r.disk_id = d.id;
		r.offset = 200 * BS; /* a block never written before */
		r.length = BS;
		CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
	}
	CU_ASSERT_EQUAL(ix_batch_commit(b), 0);
	ix_batch_free(b);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rb), 0);
	struct ix_version v[8];
	CU_ASSERT_EQUAL(ix_block_asof(rb, d.id, 200, SUM_RECS + 1, v, 8), 1);
	CU_ASSERT_EQUAL(ix_block_asof(rb, d.id, 200, SUM_RECS, v, 8), 0);
	ix_read_end(rb);
	ix_read_end(ra);
	ix_close(ix);
	free(m);
	drop_store(store);
}

/* ------------------------------------------------------ format upgrade */

static int put_format_fn(struct ix *ix, MDB_txn *txn, void *arg)
{
	uint8_t fv[4];
	MDB_val fk = { 6, (void *)"format" }, fd = { 4, fv };
	int rc;

	rw_put_le32(fv, *(const uint32_t *)arg);
	rc = mdb_put(txn, ix->db_state, &fk, &fd, 0);
	/* Old-format tables: whatever they hold must not survive. */
	if (rc == 0)
		rc = mdb_drop(txn, ix->db_versions, 0);
	return rc;
}

/*
 * An index of the previous format is rebuilt from the journals by the
 * first open that holds the store lock, keeping the marks; read-only and
 * unlocked opens refuse it; a newer format is refused by every open.
 */
static void test_format_upgrade(void)
{
	struct workload w;
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct ix_mark m = { "kept", 1, 2, 3 }, got;
	uint32_t fmt;

	workload_make(&w, "ixupgrade", 400, 99, 16 * 1024);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_catch_up(ix, NULL, NULL), (int)w.n);
	CU_ASSERT_EQUAL(ix_mark_put(ix, w.disks[0].id, &m), 0);
	ix_close(ix);
	struct dump want = dump_index(w.store);

	fmt = 2;
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_write(ix, put_format_fn, &fmt, "test"), 0);
	ix_close(ix);
	CU_ASSERT_EQUAL(ix_open(&ix, w.store, IX_RDONLY), RW_EVERSION);
	CU_ASSERT_EQUAL(ix_open(&ix, w.store, 0), RW_EVERSION);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	/* The open re-indexed everything: a catch-up finds nothing left. */
	CU_ASSERT_EQUAL(ix_catch_up(ix, NULL, NULL), 0);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_mark_get(rd, w.disks[0].id, "kept", &got), 0);
	ix_read_end(rd);
	struct ix_verify_report rep;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	ix_close(ix);
	struct dump got_d = dump_index(w.store);
	CU_ASSERT_EQUAL(want.n, got_d.n);
	if (want.n == got_d.n)
		CU_ASSERT_EQUAL(memcmp(want.p, got_d.p, want.n), 0);

	fmt = IX_INDEX_FORMAT + 1;
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_EQUAL(ix_write(ix, put_format_fn, &fmt, "test"), 0);
	ix_close(ix);
	CU_ASSERT_EQUAL(ix_open(&ix, w.store, IX_LOCK), RW_EVERSION);
	free(want.p);
	free(got_d.p);
	workload_free(&w);
}

/* ------------------------------------------------- chunks and compaction */

/*
 * A record whose blocks straddle two chunks (the first one filled up
 * mid-record), then compaction to just below it: the folded chunk's tail
 * and the next chunk start at the same seq and must merge, not overwrite
 * each other.  Also: versions above base_seq stay exact in every chunk.
 */
static void test_chunk_straddle_compaction(void)
{
	struct ix *ix = NULL;
	struct ix_batch *b = NULL;
	struct ix_read *rd = NULL;
	struct ix_disk d;
	char *s = new_store("ixchunk");
	uint64_t seq = 0, big = 0, bigs[4];

	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, s, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "c", 1ull << 30, 4096, NULL, &d), 0);
	CU_ASSERT_EQUAL_FATAL(ix_batch_new(ix, &b), 0);
	/* Single-block writes spread over the group fill most of a chunk,
	 * then one 200-block write cannot fit in what is left. */
	for (int round = 0; round < 4; round++) {
		for (uint64_t i = 0; i < 45; i++) {
			struct jr_rec r = { .type = JR_WRITE, .seq = ++seq, .ts_ns = 1000 + seq,
					    .disk_id = d.id, .offset = ((i * 37) % 256) * 4096,
					    .length = 4096 };
			struct jr_loc l = { 1, seq * 4200 };
			CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
		}
		struct jr_rec r = { .type = JR_WRITE, .seq = ++seq, .ts_ns = 1000 + seq,
				    .disk_id = d.id, .offset = 10 * 4096, .length = 200 * 4096 };
		struct jr_loc l = { 1, seq * 4200 };
		CU_ASSERT_EQUAL(ix_batch_add(b, &r, &l), 0);
		bigs[round] = seq;
		if (round == 1)
			big = seq;
		CU_ASSERT_EQUAL_FATAL(ix_batch_commit(b), 0);
	}
	ix_batch_free(b);
	/* Several chunks, and some start at the seq of a straddling record. */
	{
		MDB_txn *txn;
		MDB_cursor *c;
		MDB_val k, v;
		int chunks = 0, straddles = 0;
		uint64_t prev_last = 0;
		CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), 0);
		CU_ASSERT_EQUAL_FATAL(mdb_cursor_open(txn, ix->db_versions, &c), 0);
		for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			struct ix_cdec dc;
			CU_ASSERT_EQUAL_FATAL(ix_cdec_init(&dc, &k, &v), 0);
			straddles += chunks && dc.first_seq == prev_last;
			while (ix_cdec_next(&dc) > 0)
				prev_last = dc.cur.seq;
			chunks++;
		}
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
		CU_ASSERT(chunks >= 3);
		CU_ASSERT(straddles >= 1);
	}
	/* Fold everything below each straddling record in turn: the chunk
	 * holding its first blocks keeps only those. */
	for (int r = 0; r < 4; r++) {
		uint64_t base = bigs[r] - 1;
		struct ix_drop_stats st;
		CU_ASSERT_EQUAL_FATAL(ix_disk_advance_horizon(ix, d.id, base, 1000 + base), 0);
		CU_ASSERT_EQUAL_FATAL(ix_disk_set_base(ix, d.id, base), 0);
		CU_ASSERT_EQUAL_FATAL(ix_compact_drop(ix, d.id, false, &st), 0);
		CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
		/* Each block of the big record of round 1, as of it. */
		for (uint64_t blk = 10; blk < 210 && base < big; blk++) {
			struct ix_version v[4];
			int n = ix_block_asof(rd, d.id, blk, big, v, 4);
			CU_ASSERT_EQUAL(n, 1);
			if (n == 1)
				CU_ASSERT_EQUAL(v[0].seq, big);
		}
		/* And every block as of the end: the newest record touching it. */
		for (uint64_t blk = 0; blk < 256; blk++) {
			struct ix_version v[4];
			int n = ix_block_asof(rd, d.id, blk, seq, v, 4);
			CU_ASSERT(n >= 0 && n <= 1);
			if (n == 1)
				CU_ASSERT(v[0].seq > base);
			if (blk >= 10 && blk < 210)
				CU_ASSERT(n == 1 && v[0].seq == seq);
		}
		ix_read_end(rd);
		rd = NULL;
	}
	ix_close(ix);
	free(s);
}

/*
 * A journal that lost its tail after the index took the records in (what
 * a power loss does to records no flush covered): beta's journal is cut
 * ~300 records before the end, so the lost range spans several time map
 * buckets and holds alpha's records too.  ix_disk_drop_lost must remove
 * exactly beta's lost time entries, keep alpha's, re-index beta from
 * what its journal holds and leave an index that verifies clean.
 */
static void test_drop_lost_tail(void)
{
	struct workload w;
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	char p[4096], seg[4200];

	workload_make(&w, "lost", 900, 41, 64ull << 20);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, w.store, IX_LOCK), 0);
	CU_ASSERT_FATAL(ix_catch_up(ix, NULL, NULL) > 0);

	size_t cut = w.n - 300;
	while (w.recs[cut].disk != 1)
		cut++;
	uint64_t after = w.recs[cut].seq - 1, upto = 0, nlost = 0;
	uint64_t *keep = calloc(w.n, sizeof(*keep));
	size_t nkeep = 0;
	CU_ASSERT_FATAL(keep != NULL);
	for (size_t i = cut; i < w.n; i++)
		if (w.recs[i].disk == 1) {
			upto = w.recs[i].seq;
			nlost++;
		}
	for (size_t i = cut; i < w.n; i++)
		if (w.recs[i].disk == 0 && w.recs[i].seq <= upto)
			keep[nkeep++] = w.recs[i].seq;
	CU_ASSERT(upto - after > 3 * 64);  /* several buckets */
	CU_ASSERT(nkeep > 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_path(ix, "beta", "journal", p, sizeof(p)), 0);
	snprintf(seg, sizeof(seg), "%s/%020" PRIu64, p, w.recs[cut].loc.segment);
	CU_ASSERT_EQUAL_FATAL(truncate(seg, (off_t)w.recs[cut].loc.offset), 0);

	/* Before: the index names records beta's journal no longer has. */
	struct ix_verify_report rep;
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT(rep.problems > 0);

	uint64_t deleted = 0;
	CU_ASSERT_EQUAL(ix_disk_drop_lost(ix, w.disks[1].id, after, upto, keep,
					  nkeep, &deleted), 0);
	CU_ASSERT_EQUAL(deleted, nlost);
	struct ix_disk d;
	CU_ASSERT_EQUAL(ix_disk_get_id(ix, w.disks[1].id, &d), 0);
	CU_ASSERT(d.last_indexed_seq <= after);
	CU_ASSERT(d.head_synced_seq <= after);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	/* Alpha's records in the range still resolve by time. */
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	for (size_t i = cut; i < w.n; i++) {
		uint64_t seq = 0, ts = 0;
		int rc = ix_seq_to_time(rd, w.recs[i].seq, &ts);
		if (w.recs[i].disk == 0) {
			CU_ASSERT_EQUAL(rc, 0);
			CU_ASSERT_EQUAL(ix_time_to_seq(rd, w.recs[i].ts, &seq, &ts), 0);
			CU_ASSERT_EQUAL(seq, w.recs[i].seq);
		} else {
			CU_ASSERT_EQUAL(rc, RW_ENOTFOUND);
		}
	}
	ix_read_end(rd);
	/* Nothing lost any more: a second run changes nothing. */
	CU_ASSERT_EQUAL(ix_disk_drop_lost(ix, w.disks[1].id, after, upto, keep,
					  nkeep, &deleted), 0);
	CU_ASSERT_EQUAL(deleted, 0);
	CU_ASSERT_EQUAL(ix_verify(ix, NULL, 0, NULL, NULL, &rep), 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	free(keep);
	ix_close(ix);
	workload_free(&w);
}

int main(void)
{
	tu_add_suite("index",
		     "store_and_disks", test_store_and_disks,
		     "import_keeps_holes", test_import_keeps_holes,
		     "asof_model", test_asof_model,
		     "crash_consistency", test_crash_consistency,
		     "map_full_grows", test_map_full_grows,
		     "verify_detects", test_verify_detects,
		     "time_segments_marks", test_time_segments_marks,
		     "chunk_straddle_compaction", test_chunk_straddle_compaction,
		     "format_upgrade", test_format_upgrade,
		     "lookup_summary", test_lookup_summary,
		     "drop_lost_tail", test_drop_lost_tail,
		     NULL);
	return tu_run();
}
