/*
 * test_restore.c — time travel against a brute-force model.
 *
 * A random workload (partial-block, multi-block and unaligned writes,
 * zeroes, trims) goes through the real journal writer and index; the model
 * keeps a full copy of the disk after every operation.  Restoring as-of
 * each point, forward and backward, and reading through a view must match
 * the copy bit for bit; points between two records resolve to the earlier
 * one; rollback rewrites only the blocks written after the point and can
 * be undone; a corrupt record fails the restore and leaves no file.
 */
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"
#include "restore/rs_int.h"
#include "tests/testutil.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_SIZE (256u * 1024)
#define BS 4096u
#define NOPS 120

struct world {
	char *dir;
	struct ix *ix;
	struct ix_disk d;
	struct jr_clock *clock;
	struct jr_writer *w;
	int head_fd;
	uint8_t *model;                 /* current contents */
	uint8_t *snap[NOPS + 1];        /* contents after op i (0 = empty) */
	uint64_t seq[NOPS + 1];
	uint64_t ts[NOPS + 1];
	int nops;
};

/* When set, every other write of a new world is offered for compression
 * (so the world's journal holds zstd records too). */
static bool world_compress;

static int apply(struct world *W, uint8_t type, uint64_t off, uint32_t len,
		 const void *data)
{
	static struct jr_cctx *cc;
	static unsigned nth;
	struct jr_append a = { type, off, len, data };
	struct jr_appended out;
	if (world_compress && !cc)
		CU_ASSERT_FATAL(jr_cctx_new(&cc, 1) == 0);
	if (!world_compress && cc) {
		jr_cctx_free(cc);
		cc = NULL;
	}
	int err = jr_writer_append(W->w, &a, cc && nth++ % 2 ? cc : NULL, &out);

	if (err)
		return err;
	if (type == JR_WRITE) {
		memcpy(W->model + off, data, len);
		err = rw_sys_pwrite_full(W->head_fd, data, len, (off_t)off);
	} else {
		memset(W->model + off, 0, len);
		uint8_t *z = calloc(1, len);
		err = rw_sys_pwrite_full(W->head_fd, z, len, (off_t)off);
		free(z);
	}
	return err;
}

/*
 * Builds a store with disk "d" and runs the workload.  With imported, the
 * disk starts from a random base image (every block allocated), so that
 * partial writes land over real base data and forward restores are costly.
 */
static void world_setup_base(struct world *W, uint64_t seed, bool imported)
{
	char path[4096], src[4096];
	uint64_t st = seed;
	uint8_t *init = calloc(1, DISK_SIZE);

	memset(W, 0, sizeof(*W));
	W->dir = tu_tmpdir("restore");
	snprintf(path, sizeof(path), "%s/store", W->dir);
	snprintf(src, sizeof(src), "%s/src.img", W->dir);
	if (imported) {
		tu_fill_random(&st, init, DISK_SIZE);
		int fd = open(src, O_WRONLY | O_CREAT, 0644);
		CU_ASSERT_FATAL(fd >= 0 && pwrite(fd, init, DISK_SIZE, 0) == DISK_SIZE);
		close(fd);
	}
	CU_ASSERT_FATAL(ix_store_init(path) == 0);
	CU_ASSERT_FATAL(ix_open(&W->ix, path, IX_LOCK) == 0);
	CU_ASSERT_FATAL(ix_disk_create(W->ix, "d", DISK_SIZE, BS,
				       imported ? src : NULL, &W->d) == 0);
	CU_ASSERT_FATAL(jr_clock_new(&W->clock, 1, 0) == 0);
	struct jr_writer_opts o;
	jr_writer_opts_default(&o);
	o.disk_id = W->d.id;
	o.segment_bytes = 64 * 1024;
	CU_ASSERT_FATAL(ix_disk_path(W->ix, "d", "journal", path, sizeof(path)) == 0);
	CU_ASSERT_FATAL(jr_writer_open(&W->w, path, &o, W->clock, NULL) == 0);
	CU_ASSERT_FATAL(ix_disk_path(W->ix, "d", "head.img", path, sizeof(path)) == 0);
	W->head_fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(W->head_fd >= 0);
	W->model = init;
	W->snap[0] = malloc(DISK_SIZE);
	memcpy(W->snap[0], init, DISK_SIZE);
	uint8_t *buf = malloc(64 * 1024);
	for (int i = 1; i <= NOPS; i++) {
		uint64_t r = tu_rand(&st);
		uint32_t len;
		uint64_t off;
		uint8_t type = JR_WRITE;
		switch (r % 8) {
		case 0: /* sub-block, unaligned */
			len = 1 + (uint32_t)(tu_rand(&st) % 3000);
			break;
		case 1: /* several blocks, unaligned */
			len = 1 + (uint32_t)(tu_rand(&st) % (40 * 1024));
			break;
		case 2:
			type = JR_ZERO;
			len = 512 * (1 + (uint32_t)(tu_rand(&st) % 40));
			break;
		case 3:
			type = JR_TRIM;
			len = 512 * (1 + (uint32_t)(tu_rand(&st) % 20));
			break;
		default: /* aligned blocks */
			len = BS * (1 + (uint32_t)(tu_rand(&st) % 4));
			break;
		}
		off = tu_rand(&st) % (DISK_SIZE - len + 1);
		if (type != JR_WRITE || r % 8 > 3)
			off -= off % (type == JR_WRITE ? BS : 512);
		tu_fill_random(&st, buf, len);
		if (tu_rand(&st) % 3 == 0)
			memset(buf, (int)(tu_rand(&st) & 0xff), len); /* compressible */
		CU_ASSERT_FATAL(apply(W, type, off, len, type == JR_WRITE ? buf : NULL) == 0);
		struct jr_writer_stats ws;
		jr_writer_stats(W->w, &ws);
		W->seq[i] = ws.last_seq;
		W->snap[i] = malloc(DISK_SIZE);
		memcpy(W->snap[i], W->model, DISK_SIZE);
		if (i % 10 == 0)
			CU_ASSERT_FATAL(jr_writer_flush(W->w) == 0);
	}
	W->nops = NOPS;
	free(buf);
	CU_ASSERT_FATAL(jr_writer_flush(W->w) == 0);
	CU_ASSERT_FATAL(ix_catch_up(W->ix, NULL, NULL) >= 0);
	CU_ASSERT_FATAL(ix_disk_get(W->ix, "d", &W->d) == 0);
	struct ix_read *rd;
	CU_ASSERT_FATAL(ix_read_begin(W->ix, &rd) == 0);
	for (int i = 1; i <= NOPS; i++)
		CU_ASSERT(ix_seq_to_time(rd, W->seq[i], &W->ts[i]) == 0);
	ix_read_end(rd);
}

static void world_setup(struct world *W, uint64_t seed)
{
	world_setup_base(W, seed, false);
}

static void world_teardown(struct world *W)
{
	jr_writer_close(W->w);
	jr_clock_free(W->clock);
	ix_close(W->ix);
	if (W->head_fd >= 0)
		close(W->head_fd);
	for (int i = 0; i <= NOPS; i++)
		free(W->snap[i]);
	free(W->model);
	tu_rmrf(W->dir);
	free(W->dir);
}

static bool file_equals(const char *path, const uint8_t *want)
{
	uint8_t *got = malloc(DISK_SIZE);
	int fd = open(path, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, got, DISK_SIZE, 0) == DISK_SIZE &&
		  !memcmp(got, want, DISK_SIZE);
	struct stat st;
	if (fd >= 0 && (fstat(fd, &st) || st.st_size != DISK_SIZE))
		ok = false;
	if (fd >= 0)
		close(fd);
	free(got);
	return ok;
}

static void restore_every_point(bool imported)
{
	struct world W;
	char out[4096];
	int bad_fwd = 0, bad_back = 0, bad_view = 0;

	world_setup_base(&W, 7, imported);
	snprintf(out, sizeof(out), "%s/out.img", W.dir);
	/* Head holds everything: backward restores are allowed. */
	CU_ASSERT_FATAL(ix_disk_set_head_synced(W.ix, W.d.id, W.seq[NOPS]) == 0);
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	struct rs_view *v;
	uint8_t *buf = malloc(DISK_SIZE);
	for (int i = 0; i <= NOPS; i++) {
		struct rs_restore_stats st;
		uint64_t s = i ? W.seq[i] : 0;
		CU_ASSERT(rs_restore_file(W.ix, &W.d, s, out, RS_OVERWRITE, NULL,
					  NULL, &st) == 0);
		bad_fwd += !file_equals(out, W.snap[i]);
		CU_ASSERT_FALSE(st.backward);
		CU_ASSERT(rs_restore_file(W.ix, &W.d, s, out,
					  RS_OVERWRITE | RS_ALLOW_BACKWARD, NULL,
					  NULL, &st) == 0);
		bad_back += !file_equals(out, W.snap[i]);
		if (i == NOPS)
			CU_ASSERT_TRUE(st.backward);
		CU_ASSERT_FATAL(rs_view_open(&v, W.ix, &W.d, s) == 0);
		CU_ASSERT(rs_view_read(v, 0, DISK_SIZE, buf) == 0);
		bad_view += memcmp(buf, W.snap[i], DISK_SIZE) != 0;
		/* An unaligned slice too. */
		CU_ASSERT(rs_view_read(v, 4095, 9000, buf) == 0);
		bad_view += memcmp(buf, W.snap[i] + 4095, 9000) != 0;
		rs_view_close(v);
	}
	CU_ASSERT_EQUAL(bad_fwd, 0);
	CU_ASSERT_EQUAL(bad_back, 0);
	CU_ASSERT_EQUAL(bad_view, 0);
	struct rs_restore_stats st;
	if (imported) {
		/*
		 * Base is fully allocated: a late point costs a few blocks
		 * backward and the whole disk forward, so backward is chosen
		 * and rebuilds only what the last operation touched.
		 */
		CU_ASSERT(rs_restore_file(W.ix, &W.d, W.seq[NOPS - 1], out,
					  RS_OVERWRITE | RS_ALLOW_BACKWARD, NULL,
					  NULL, &st) == 0);
		CU_ASSERT_TRUE(st.backward);
		CU_ASSERT(st.blocks_fixed <= 11);
		CU_ASSERT(file_equals(out, W.snap[NOPS - 1]));
		/* Without permission to use head, it goes forward. */
		CU_ASSERT(rs_restore_file(W.ix, &W.d, W.seq[NOPS - 1], out,
					  RS_OVERWRITE, NULL, NULL, &st) == 0);
		CU_ASSERT_FALSE(st.backward);
	} else {
		/* Sparse output: an empty disk restores to an unallocated file. */
		CU_ASSERT(rs_restore_file(W.ix, &W.d, 0, out, RS_OVERWRITE, NULL,
					  NULL, NULL) == 0);
		struct stat sb;
		CU_ASSERT(stat(out, &sb) == 0 && sb.st_blocks == 0);
		/* Zero blocks in the middle of history stay holes too. */
		CU_ASSERT(rs_restore_file(W.ix, &W.d, W.seq[NOPS], out,
					  RS_OVERWRITE, NULL, NULL, &st) == 0);
		CU_ASSERT(stat(out, &sb) == 0);
		CU_ASSERT((uint64_t)sb.st_blocks * 512 <= st.bytes_written + BS);
	}
	/* Refuses to replace without RS_OVERWRITE. */
	CU_ASSERT_EQUAL(rs_restore_file(W.ix, &W.d, 0, out, 0, NULL, NULL, NULL),
			RW_EEXIST);
	free(buf);
	world_teardown(&W);
}

static void test_restore_every_point(void)
{
	restore_every_point(false);
}

static void test_restore_every_point_over_base(void)
{
	restore_every_point(true);
}

static void test_resolve(void)
{
	struct world W;
	struct rw_when w;
	uint64_t s, t;

	world_setup(&W, 11);
	/* Exactly at a record, a nanosecond before, between two records. */
	for (int i = 2; i <= NOPS; i += 7) {
		w.kind = RW_WHEN_TIME;
		w.ts_ns = W.ts[i];
		CU_ASSERT(rs_resolve(W.ix, &W.d, &w, &s, &t) == 0);
		CU_ASSERT_EQUAL(s, W.seq[i]);
		w.ts_ns = W.ts[i] - 1;
		CU_ASSERT(rs_resolve(W.ix, &W.d, &w, &s, &t) == 0);
		CU_ASSERT_EQUAL(s, W.seq[i - 1]);
		if (i < NOPS && W.ts[i + 1] > W.ts[i] + 1) {
			w.ts_ns = W.ts[i] + (W.ts[i + 1] - W.ts[i]) / 2;
			CU_ASSERT(rs_resolve(W.ix, &W.d, &w, &s, &t) == 0);
			CU_ASSERT_EQUAL(s, W.seq[i]);
		}
	}
	/* Before the disk existed, and in the future: refused with the range. */
	w.kind = RW_WHEN_TIME;
	w.ts_ns = W.d.ctime_ns - 1000000000ull;
	CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &w, &s, &t), RW_ERANGE);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "restorable range"));
	w.ts_ns = rw_clock_ns() + 3600ull * 1000000000ull;
	CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &w, &s, &t), RW_ERANGE);
	/* seq: inside and outside. */
	w.kind = RW_WHEN_SEQ;
	w.seq = W.seq[5];
	CU_ASSERT(rs_resolve(W.ix, &W.d, &w, &s, &t) == 0);
	CU_ASSERT_EQUAL(s, W.seq[5]);
	CU_ASSERT_EQUAL(t, W.ts[5]);
	w.seq = W.seq[NOPS] + 1;
	CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &w, &s, &t), RW_ERANGE);
	/* mark: resolves, unknown mark is not found. */
	struct ix_mark m = { .ts_ns = W.ts[9], .seq = W.seq[9], .created_ns = 1 };
	strcpy(m.label, "nine");
	CU_ASSERT(ix_mark_put(W.ix, W.d.id, &m) == 0);
	w.kind = RW_WHEN_MARK;
	strcpy(w.mark, "nine");
	CU_ASSERT(rs_resolve(W.ix, &W.d, &w, &s, &t) == 0);
	CU_ASSERT_EQUAL(s, W.seq[9]);
	strcpy(w.mark, "ten");
	CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &w, &s, &t), RW_ENOTFOUND);
	world_teardown(&W);
}

struct sink_ctx {
	struct world *W;
	uint64_t bytes;
};

static int sink(void *arg, uint64_t off, uint32_t len, const void *data)
{
	struct sink_ctx *c = arg;

	c->bytes += len;
	return apply(c->W, data ? JR_WRITE : JR_ZERO, off, len, data);
}

static void test_rollback_and_undo(void)
{
	struct world W;
	int k = 70;

	world_setup(&W, 23);
	uint64_t expect_blocks = 0;
	struct sink_ctx c = { &W, 0 };
	struct rs_rollback_stats st;
	uint64_t before_rollback = W.seq[NOPS];
	CU_ASSERT_FATAL(rs_rollback(W.ix, &W.d, W.seq[k], W.seq[NOPS], sink, &c,
				    NULL, NULL, &st) == 0);
	CU_ASSERT(memcmp(W.model, W.snap[k], DISK_SIZE) == 0);
	/* Only blocks touched by records after k: count them from the journal. */
	char path[4096];
	struct jr_reader *r;
	CU_ASSERT_FATAL(ix_disk_path(W.ix, "d", "journal", path, sizeof(path)) == 0);
	CU_ASSERT_FATAL(jr_reader_open(&r, path, JR_READ_HEADERS) == 0);
	CU_ASSERT(jr_reader_seek(r, W.seq[k] + 1) >= 0);
	uint8_t touched[DISK_SIZE / BS] = { 0 };
	struct jr_rec rec;
	struct jr_loc loc;
	while (jr_reader_next(r, &rec, &loc, NULL) == 1 && rec.seq <= before_rollback)
		for (uint64_t b = rec.offset / BS; b <= (rec.offset + rec.length - 1) / BS; b++)
			touched[b] = 1;
	jr_reader_close(r);
	for (size_t b = 0; b < sizeof(touched); b++)
		expect_blocks += touched[b];
	CU_ASSERT_EQUAL(st.blocks, expect_blocks);
	CU_ASSERT_EQUAL(c.bytes, expect_blocks * BS);

	/* The rollback is history: undo it by rolling back to just before. */
	CU_ASSERT_FATAL(jr_writer_flush(W.w) == 0);
	CU_ASSERT_FATAL(ix_catch_up(W.ix, NULL, NULL) >= 0);
	struct jr_writer_stats ws;
	jr_writer_stats(W.w, &ws);
	CU_ASSERT_FATAL(rs_rollback(W.ix, &W.d, before_rollback, ws.last_seq, sink,
				    &c, NULL, NULL, &st) == 0);
	CU_ASSERT(memcmp(W.model, W.snap[NOPS], DISK_SIZE) == 0);
	CU_ASSERT_EQUAL(st.blocks, expect_blocks);
	/* Head (what a server serves) matches the model too. */
	uint8_t *h = malloc(DISK_SIZE);
	CU_ASSERT(pread(W.head_fd, h, DISK_SIZE, 0) == DISK_SIZE);
	CU_ASSERT(memcmp(h, W.model, DISK_SIZE) == 0);
	free(h);
	/* Before the horizon is refused. */
	W.d.horizon_seq = W.seq[3];
	CU_ASSERT_EQUAL(rs_rollback(W.ix, &W.d, W.seq[2], ws.last_seq, sink, &c,
				    NULL, NULL, NULL), RW_ERANGE);
	world_teardown(&W);
}

static void test_corrupt_record_fails(void)
{
	struct world W;
	char out[4096], path[4096];

	world_setup(&W, 31);
	snprintf(out, sizeof(out), "%s/out.img", W.dir);
	/* Damage one payload byte in the first segment's first write record. */
	struct jr_seginfo *segs;
	CU_ASSERT_FATAL(ix_disk_path(W.ix, "d", "journal", path, sizeof(path)) == 0);
	int n = jr_segments_list(path, &segs);
	CU_ASSERT_FATAL(n > 0);
	char seg[4200], name[32];
	uint64_t first_seg = segs[0].first_seq;
	jr_segment_name(first_seg, name);
	snprintf(seg, sizeof(seg), "%s/%s", path, name);
	free(segs);
	struct jr_reader *r;
	CU_ASSERT_FATAL(jr_reader_open(&r, path, JR_READ_HEADERS) == 0);
	struct jr_rec rec;
	struct jr_loc loc;
	uint64_t victim_seq = 0;
	while (jr_reader_next(r, &rec, &loc, NULL) == 1) {
		if (rec.type == JR_WRITE && rec.stored_len > 16 &&
		    loc.segment == first_seg) {
			int fd = open(seg, O_RDWR);
			uint8_t b;
			off_t at = (off_t)loc.offset + JR_HDR_SIZE + 5;
			CU_ASSERT(pread(fd, &b, 1, at) == 1);
			b ^= 0x10;
			CU_ASSERT(pwrite(fd, &b, 1, at) == 1);
			close(fd);
			victim_seq = rec.seq;
			break;
		}
	}
	jr_reader_close(r);
	CU_ASSERT_FATAL(victim_seq != 0);
	/* As-of the damaged record itself, it is the newest version. */
	int err = rs_restore_file(W.ix, &W.d, victim_seq, out, 0, NULL, NULL, NULL);
	CU_ASSERT_EQUAL(err, RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "segment"));
	CU_ASSERT(access(out, F_OK) != 0);
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	CU_ASSERT(access(tmp, F_OK) != 0);
	world_teardown(&W);
}

/*
 * The block map says where each block's bytes as-of a point come from;
 * check it against the model at every point, and that windows of any size
 * partition the same entries.
 */
static void test_block_map(void)
{
	struct world W;
	int bad = 0;

	world_setup_base(&W, 19, true);
	uint64_t nblocks = DISK_SIZE / BS;
	for (int i = 0; i <= NOPS; i += 7) {
		uint64_t s = i ? W.seq[i] : 0;
		struct rs_map m = { 0 }, w = { 0 };
		CU_ASSERT_FATAL(rs_map_fill(&m, W.ix, &W.d, 0, W.d.base_seq, s,
					    W.seq[NOPS], RS_MAP_WINDOW, NULL) == 0);
		CU_ASSERT_EQUAL(m.next, nblocks);
		uint64_t asof = 0, after = 0;
		for (size_t k = 0; k < m.n; k++) {
			const struct rs_ent *e = &m.e[k];
			const uint8_t *want = W.snap[i] + e->block * BS;
			asof += e->src != RS_SRC_BASE;
			after += e->after;
			if (k && e->block <= m.e[k - 1].block)
				bad++;
			/* Never written up to s: base's bytes. */
			if (e->src == RS_SRC_BASE &&
			    memcmp(want, W.snap[0] + e->block * BS, BS))
				bad++;
			if (e->src == RS_SRC_ZERO && !rw_all_zero(want, BS))
				bad++;
			if (e->src != RS_SRC_BASE && (e->seq == 0 || e->seq > s))
				bad++;
			if (i == NOPS && e->after)
				bad++;
		}
		CU_ASSERT_EQUAL(asof, m.asof_blocks);
		CU_ASSERT_EQUAL(after, m.after_blocks);
		/* Windows of 3 entries: the same entries, in order. */
		size_t at = 0;
		for (uint64_t from = 0; from < nblocks; from = w.next) {
			CU_ASSERT_FATAL(rs_map_fill(&w, W.ix, &W.d, from,
						    W.d.base_seq, s, W.seq[NOPS],
						    3, NULL) == 0);
			CU_ASSERT(w.n <= 3);
			CU_ASSERT_FATAL(w.n > 0 || w.next == nblocks);
			for (size_t k = 0; k < w.n; k++, at++)
				bad += at >= m.n || memcmp(&w.e[k], &m.e[at],
							   sizeof(w.e[k])) != 0;
		}
		CU_ASSERT_EQUAL(at, m.n);
		rs_map_free(&w);
		rs_map_free(&m);
	}
	CU_ASSERT_EQUAL(bad, 0);
	world_teardown(&W);
}

/* Restores and folds through tiny map windows stay exact. */
static void test_restore_small_windows(void)
{
	struct world W;
	char out[4096];
	int bad = 0;

	world_setup_base(&W, 23, true);
	snprintf(out, sizeof(out), "%s/out.img", W.dir);
	CU_ASSERT_FATAL(ix_disk_set_head_synced(W.ix, W.d.id, W.seq[NOPS]) == 0);
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	rs_map_window = 5;
	for (int i = 0; i <= NOPS; i += 3) {
		uint64_t s = i ? W.seq[i] : 0;
		CU_ASSERT(rs_restore_file(W.ix, &W.d, s, out, RS_OVERWRITE, NULL,
					  NULL, NULL) == 0);
		bad += !file_equals(out, W.snap[i]);
		CU_ASSERT(rs_restore_file(W.ix, &W.d, s, out,
					  RS_OVERWRITE | RS_ALLOW_BACKWARD, NULL,
					  NULL, NULL) == 0);
		bad += !file_equals(out, W.snap[i]);
	}
	rs_map_window = RS_MAP_WINDOW;
	CU_ASSERT_EQUAL(bad, 0);
	world_teardown(&W);
}

/* The shared as-of reader, with and without its map, equals the model. */
static void test_asof_reader(void)
{
	struct world W;
	uint8_t *buf = malloc(DISK_SIZE);
	int bad = 0;

	world_setup_base(&W, 29, true);
	for (int i = 0; i <= NOPS; i += 5) {
		uint64_t s = i ? W.seq[i] : 0;
		for (unsigned flags = 0; flags <= RS_ASOF_NO_MAP; flags++) {
			struct rs_asof *x;
			CU_ASSERT_FATAL(rs_asof_open(&x, W.ix, &W.d, s, flags) == 0);
			CU_ASSERT_EQUAL(rs_asof_mapped(x, true), flags == 0);
			CU_ASSERT(rs_asof_read(x, 0, DISK_SIZE, buf) == 0);
			bad += memcmp(buf, W.snap[i], DISK_SIZE) != 0;
			/* Unaligned slices crossing blocks of every kind. */
			for (uint64_t off = 1; off + 9000 < DISK_SIZE; off += 7777) {
				CU_ASSERT(rs_asof_read(x, off, 9000, buf) == 0);
				bad += memcmp(buf, W.snap[i] + off, 9000) != 0;
			}
			CU_ASSERT(rs_asof_read(x, DISK_SIZE - 1, 2, buf) == -EINVAL);
			uint64_t loads, views;
			rs_asof_counters(x, &loads, &views);
			/* Views only: no record goes through the cache. */
			if (flags)
				CU_ASSERT(loads == 0 && views > 0);
			rs_asof_close(x);
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	free(buf);
	world_teardown(&W);
}

struct asof_thread {
	struct rs_asof *x;
	const uint8_t *want;
	uint64_t seed;
	int bad;
};

static void *asof_reader(void *arg)
{
	struct asof_thread *t = arg;
	uint8_t *buf = malloc(64 * 1024);

	for (int k = 0; k < 300; k++) {
		uint64_t len = 1 + tu_rand(&t->seed) % (64 * 1024);
		uint64_t off = tu_rand(&t->seed) % (DISK_SIZE - len + 1);
		if (rs_asof_read(t->x, off, len, buf) ||
		    memcmp(buf, t->want + off, len))
			t->bad++;
	}
	free(buf);
	return NULL;
}

/* Many threads reading one reader at once (the record cache is shared). */
static void test_asof_threads(void)
{
	struct world W;
	struct asof_thread t[12];
	pthread_t th[12];

	world_setup_base(&W, 37, false);
	struct rs_asof *x;
	CU_ASSERT_FATAL(rs_asof_open(&x, W.ix, &W.d, W.seq[NOPS - 9], 0) == 0);
	for (int i = 0; i < 12; i++) {
		t[i] = (struct asof_thread){ x, W.snap[NOPS - 9], 100 + (uint64_t)i, 0 };
		CU_ASSERT_FATAL(pthread_create(&th[i], NULL, asof_reader, &t[i]) == 0);
	}
	int bad = 0;
	for (int i = 0; i < 12; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_TRUE(rs_asof_mapped(x, true));
	rs_asof_close(x);
	world_teardown(&W);
}

/* Rollback over an imported base: base bytes and partial versions. */
static void test_rollback_over_base(void)
{
	struct world W;
	int bad = 0;

	/* Every window's lookups on two threads (the path of large ones). */
	rs_rollback_parallel_lookups = 2;

	world_setup_base(&W, 41, true);
	struct sink_ctx c = { &W, 0 };
	uint64_t last = W.seq[NOPS];
	for (int k = NOPS - 1; k >= 0; k -= 13) {
		struct rs_rollback_stats st;
		struct jr_writer_stats ws;
		CU_ASSERT_FATAL(rs_rollback(W.ix, &W.d, k ? W.seq[k] : 0, last,
					    sink, &c, NULL, NULL, &st) == 0);
		bad += memcmp(W.model, W.snap[k], DISK_SIZE) != 0;
		CU_ASSERT_FATAL(jr_writer_flush(W.w) == 0);
		CU_ASSERT_FATAL(ix_catch_up(W.ix, NULL, NULL) >= 0);
		jr_writer_stats(W.w, &ws);
		/* And forward again to the end of the workload. */
		CU_ASSERT_FATAL(rs_rollback(W.ix, &W.d, last, ws.last_seq, sink,
					    &c, NULL, NULL, &st) == 0);
		bad += memcmp(W.model, W.snap[NOPS], DISK_SIZE) != 0;
		CU_ASSERT_FATAL(jr_writer_flush(W.w) == 0);
		CU_ASSERT_FATAL(ix_catch_up(W.ix, NULL, NULL) >= 0);
		jr_writer_stats(W.w, &ws);
		last = ws.last_seq;
		/* The image as of every later point is still exact. */
		uint8_t *h = malloc(DISK_SIZE);
		CU_ASSERT(pread(W.head_fd, h, DISK_SIZE, 0) == DISK_SIZE);
		bad += memcmp(h, W.snap[NOPS], DISK_SIZE) != 0;
		free(h);
	}
	CU_ASSERT_EQUAL(bad, 0);
	world_teardown(&W);
	rs_rollback_parallel_lookups = 1024;
}

struct ext_check {
	const uint8_t *want;
	uint64_t next;      /* where the next extent must start */
	uint64_t zero_bytes;
	int bad;
};

static int ext_cb(void *arg, uint64_t off, uint64_t len, unsigned flags)
{
	struct ext_check *c = arg;

	if (off != c->next || !len)
		c->bad++;
	c->next = off + len;
	if (flags & RS_EXT_ZERO) {
		c->zero_bytes += len;
		if (!rw_all_zero(c->want + off, len))
			c->bad++;
	}
	return 0;
}

/* Block status as-of a point: extents tile the range; zero ones are. */
static void test_asof_extents(void)
{
	for (int imported = 0; imported < 2; imported++) {
		struct world W;
		int bad = 0;
		uint64_t zero_total = 0;
		world_setup_base(&W, 43 + (uint64_t)imported, imported);
		for (int i = 0; i <= NOPS; i += 6) {
			struct rs_asof *x;
			CU_ASSERT_FATAL(rs_asof_open(&x, W.ix, &W.d,
						     i ? W.seq[i] : 0, 0) == 0);
			CU_ASSERT_TRUE(rs_asof_mapped(x, true));
			struct ext_check c = { W.snap[i], 0, 0, 0 };
			CU_ASSERT(rs_asof_extents(x, 0, DISK_SIZE, ext_cb, &c) == 0);
			bad += c.bad + (c.next != DISK_SIZE);
			zero_total += c.zero_bytes;
			struct ext_check u = { W.snap[i], 5000, 0, 0 };
			CU_ASSERT(rs_asof_extents(x, 5000, 70000, ext_cb, &u) == 0);
			bad += u.bad + (u.next != 75000);
			rs_asof_close(x);
		}
		/* Without the map: one data extent. */
		struct rs_asof *x;
		CU_ASSERT_FATAL(rs_asof_open(&x, W.ix, &W.d, W.seq[NOPS],
					     RS_ASOF_NO_MAP) == 0);
		struct ext_check c = { W.snap[NOPS], 0, 0, 0 };
		CU_ASSERT(rs_asof_extents(x, 0, DISK_SIZE, ext_cb, &c) == 0);
		CU_ASSERT(c.next == DISK_SIZE && c.zero_bytes == 0 && !c.bad);
		rs_asof_close(x);
		CU_ASSERT_EQUAL(bad, 0);
		/* An empty base is mostly holes; the extents must say so. */
		if (!imported)
			CU_ASSERT(zero_total > 0);
		world_teardown(&W);
	}
}

/*
 * Leaves the world's store as a server leaves it on a clean shutdown:
 * journal flushed, head synced and recorded, index current, lock free.
 */
static void world_shut_down(struct world *W, char *store, size_t n)
{
	CU_ASSERT_FATAL(jr_writer_flush(W->w) == 0);
	CU_ASSERT_FATAL(fsync(W->head_fd) == 0);
	CU_ASSERT_FATAL(ix_disk_set_head_synced(W->ix, W->d.id, W->seq[NOPS]) == 0);
	CU_ASSERT_FATAL(jr_writer_close(W->w) == 0);
	W->w = NULL;
	snprintf(store, n, "%s", ix_store_dir(W->ix));
	ix_close(W->ix);
	W->ix = NULL;
}

static bool head_equals(struct world *W, const uint8_t *want)
{
	uint8_t *h = malloc(DISK_SIZE);
	bool ok = pread(W->head_fd, h, DISK_SIZE, 0) == DISK_SIZE &&
		  !memcmp(h, want, DISK_SIZE);

	free(h);
	return ok;
}

/*
 * Marks in set[] the blocks that records of the journal of disk "d" with
 * seq in (after, upto] write; returns how many are marked.
 */
static uint64_t blocks_written(const char *store, uint64_t after,
			       uint64_t upto, uint8_t *set)
{
	char path[4096];
	struct jr_reader *r;
	struct jr_rec rec;
	struct jr_loc loc;
	uint64_t n = 0;

	memset(set, 0, DISK_SIZE / BS);
	snprintf(path, sizeof(path), "%s/disks/d/journal", store);
	CU_ASSERT_FATAL(jr_reader_open(&r, path, JR_READ_HEADERS) == 0);
	CU_ASSERT(jr_reader_seek(r, after + 1) >= 0);
	while (jr_reader_next(r, &rec, &loc, NULL) == 1 && rec.seq <= upto) {
		if (!rec.length || rec.type == JR_FLUSH)
			continue;
		for (uint64_t b = rec.offset / BS;
		     b <= (rec.offset + rec.length - 1) / BS; b++) {
			n += !set[b];
			set[b] = 1;
		}
	}
	jr_reader_close(r);
	return n;
}

/* The disk's state in the index of store (opened and closed here). */
static struct ix_disk disk_state(const char *store)
{
	struct ix *ix;
	struct ix_disk d = { 0 };

	CU_ASSERT_FATAL(ix_open(&ix, store, IX_RDONLY) == 0);
	CU_ASSERT(ix_disk_get(ix, "d", &d) == 0);
	ix_close(ix);
	return d;
}

/*
 * The offline rollback (rs_rollback_store, what `rewind rollback` does
 * with no server): it writes exactly the blocks written after the point,
 * as journal records of its own, leaves head equal to the model as-of the
 * point and the store clean (head synced and indexed up to its last
 * record, so the next one takes the same path); rolling back to just
 * before it undoes it bit for bit.  A store a crash left unclean is not
 * touched (1), and a held store lock is RW_EBUSY.
 */
static void test_rollback_store_and_undo(bool imported)
{
	struct world W;
	struct rs_rollback_result res;
	struct rw_when when = { .kind = RW_WHEN_SEQ };
	char store[4096];
	uint8_t want[DISK_SIZE / BS], got[DISK_SIZE / BS];
	int k = 61;

	world_setup_base(&W, imported ? 53 : 47, imported);
	world_shut_down(&W, store, sizeof(store));
	uint64_t expect = blocks_written(store, W.seq[k], W.seq[NOPS], want);
	CU_ASSERT_FATAL(expect > 0);

	when.seq = W.seq[k];
	CU_ASSERT_FATAL(rs_rollback_store(store, "d", &when, &res) == 0);
	CU_ASSERT(head_equals(&W, W.snap[k]));
	CU_ASSERT_EQUAL(res.seq, W.seq[k]);
	CU_ASSERT_EQUAL(res.before_seq, W.seq[NOPS]);
	CU_ASSERT(res.last_seq > res.before_seq);
	CU_ASSERT_EQUAL(res.st.blocks, expect);
	CU_ASSERT_EQUAL(res.st.data_bytes + res.st.zero_bytes, expect * BS);
	/* Its records rewrite exactly the blocks written after the point. */
	CU_ASSERT_EQUAL(blocks_written(store, res.before_seq, res.last_seq, got),
			expect);
	CU_ASSERT(memcmp(got, want, sizeof(want)) == 0);
	struct ix_disk d = disk_state(store);
	CU_ASSERT_EQUAL(d.last_indexed_seq, res.last_seq);
	CU_ASSERT_EQUAL(d.head_synced_seq, res.last_seq);

	/* Undo: roll back to just before the rollback. */
	uint64_t rb_last = res.last_seq;
	when.seq = res.before_seq;
	CU_ASSERT_FATAL(rs_rollback_store(store, "d", &when, &res) == 0);
	CU_ASSERT(head_equals(&W, W.snap[NOPS]));
	CU_ASSERT_EQUAL(res.before_seq, rb_last);
	CU_ASSERT_EQUAL(res.st.blocks, expect);
	d = disk_state(store);
	CU_ASSERT_EQUAL(d.head_synced_seq, res.last_seq);
	/* Every point stays restorable: the rollback's own point too. */
	char out[4096];
	snprintf(out, sizeof(out), "%s/out.img", W.dir);
	struct ix *ix;
	CU_ASSERT_FATAL(ix_open(&ix, store, IX_RDONLY) == 0);
	CU_ASSERT_FATAL(ix_disk_get(ix, "d", &d) == 0);
	CU_ASSERT(rs_restore_file(ix, &d, rb_last, out, RS_OVERWRITE, NULL,
				  NULL, NULL) == 0);
	CU_ASSERT(file_equals(out, W.snap[k]));

	/* Held lock: refused. */
	struct ix *locked;
	CU_ASSERT_FATAL(ix_open(&locked, store, IX_LOCK) == 0);
	CU_ASSERT_EQUAL(rs_rollback_store(store, "d", &when, &res), RW_EBUSY);
	ix_close(locked);

	/* A record in the journal that neither head nor the index has (a
	 * crash): nothing is touched, the caller must recover first. */
	char jdir[4096];
	struct jr_writer_opts o;
	struct jr_writer *w;
	struct jr_appended ap;
	uint8_t blk[BS];
	memset(blk, 0x5a, sizeof(blk));
	jr_writer_opts_default(&o);
	o.disk_id = d.id;
	o.segment_bytes = 64 * 1024;
	CU_ASSERT_FATAL(ix_disk_path(ix, "d", "journal", jdir, sizeof(jdir)) == 0);
	ix_close(ix);
	CU_ASSERT_FATAL(jr_writer_open(&w, jdir, &o, W.clock, NULL) == 0);
	struct jr_append a = { JR_WRITE, 0, BS, blk };
	CU_ASSERT_FATAL(jr_writer_append(w, &a, NULL, &ap) == 0);
	CU_ASSERT_FATAL(jr_writer_close(w) == 0);
	when.seq = W.seq[k];
	CU_ASSERT_EQUAL(rs_rollback_store(store, "d", &when, &res), 1);
	CU_ASSERT(head_equals(&W, W.snap[NOPS]));
	d = disk_state(store);
	CU_ASSERT(d.last_indexed_seq < ap.seq);
	CU_ASSERT_EQUAL(blocks_written(store, ap.seq, UINT64_MAX, got), 0);
	world_teardown(&W);
}

static void test_rollback_store(void)
{
	test_rollback_store_and_undo(false);
}

static void test_rollback_store_over_base(void)
{
	rs_rollback_parallel_lookups = 2;
	test_rollback_store_and_undo(true);
	rs_rollback_parallel_lookups = 1024;
}

/*
 * Reads records through jr_reader_map_at (the rollback's reader): every
 * record of the journal, raw and compressed, gives the same header and
 * payload as jr_reader_read_at; a payload byte damaged is RW_ECORRUPT
 * naming the segment; a location past the end of its segment is
 * RW_ECORRUPT; after jr_reader_unmap the reader maps again.
 */
/*
 * Flips the bits `mask` of payload byte `at` of the record at loc in
 * journal directory jdir (a second call undoes it); names the segment
 * file in name.
 */
static void flip_payload_bits(const char *jdir, const struct jr_loc *loc,
			      unsigned at, uint8_t mask, char name[32])
{
	char seg[4200];
	uint8_t x;

	jr_segment_name(loc->segment, name);
	snprintf(seg, sizeof(seg), "%s/%s", jdir, name);
	int fd = open(seg, O_RDWR);
	off_t o = (off_t)(loc->offset + JR_HDR_SIZE + at);
	CU_ASSERT_FATAL(fd >= 0 && pread(fd, &x, 1, o) == 1);
	x ^= mask;
	CU_ASSERT(pwrite(fd, &x, 1, o) == 1);
	close(fd);
}

static void test_map_at(void)
{
	struct world W;
	char path[4096];
	struct jr_reader *seq_r, *r1, *r2;
	struct jr_rec rec, a, b;
	struct jr_loc loc;
	uint8_t *buf1 = malloc(JR_MAX_WRITE), *buf2 = malloc(JR_MAX_WRITE);
	unsigned raw = 0, zstd = 0, bad = 0;

	world_compress = true;
	world_setup(&W, 41);
	world_compress = false;
	CU_ASSERT_FATAL(jr_writer_flush(W.w) == 0);
	CU_ASSERT_FATAL(ix_disk_path(W.ix, "d", "journal", path, sizeof(path)) == 0);
	CU_ASSERT_FATAL(jr_reader_open(&seq_r, path, JR_READ_HEADERS) == 0);
	CU_ASSERT_FATAL(jr_reader_open(&r1, path, 0) == 0);
	CU_ASSERT_FATAL(jr_reader_open(&r2, path, 0) == 0);
	struct jr_loc victim = { 0 };
	while (jr_reader_next(seq_r, &rec, &loc, NULL) == 1) {
		const uint8_t *pl;
		CU_ASSERT_FATAL(jr_reader_read_at(r1, &loc, &a, buf1, JR_MAX_WRITE) == 0);
		CU_ASSERT_FATAL(jr_reader_map_at(r2, &loc, &b, &pl, buf2, JR_MAX_WRITE) == 0);
		bad += a.seq != b.seq || a.type != b.type || a.offset != b.offset ||
		       a.length != b.length || a.flags != b.flags;
		if (a.type != JR_WRITE) {
			bad += pl != NULL;
			continue;
		}
		bad += !pl || memcmp(pl, buf1, a.length) != 0;
		if (a.flags & JR_F_ZSTD) {
			zstd++;
			bad += pl != buf2;
		} else {
			raw++;
			bad += pl == buf2;
			if (!victim.segment && a.length > 16)
				victim = loc;
		}
		if ((raw + zstd) % 16 == 0)
			jr_reader_unmap(r2);
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT(raw > 0);
	CU_ASSERT(zstd > 0);
	jr_reader_unmap(r2);

	/* A damaged payload byte. */
	CU_ASSERT_FATAL(victim.segment != 0);
	char name[32];
	flip_payload_bits(path, &victim, 5, 0x10, name);
	const uint8_t *pl;
	CU_ASSERT_EQUAL(jr_reader_map_at(r2, &victim, &b, &pl, buf2, JR_MAX_WRITE),
			RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	flip_payload_bits(path, &victim, 5, 0x10, name); /* undone */
	CU_ASSERT(jr_reader_map_at(r2, &victim, &b, &pl, buf2, JR_MAX_WRITE) == 0);
	/* Past the end of the segment. */
	char seg[4200];
	struct stat st;
	snprintf(seg, sizeof(seg), "%s/%s", path, name);
	CU_ASSERT_FATAL(stat(seg, &st) == 0);
	struct jr_loc past = { victim.segment, (uint64_t)st.st_size - 8 };
	CU_ASSERT_EQUAL(jr_reader_map_at(r2, &past, &b, &pl, buf2, JR_MAX_WRITE),
			RW_ECORRUPT);
	rw_err_clear();
	jr_reader_close(seq_r);
	jr_reader_close(r1);
	jr_reader_close(r2);
	free(buf1);
	free(buf2);
	world_teardown(&W);
}

/*
 * The offline rollback in steps of 2 blocks and windows of 8 (the
 * defaults are 4 MiB and 64 MiB): each step journaled and applied on the
 * applier thread while the next is read, many windows, over records
 * stored raw and compressed.  Same checks as test_rollback_store.
 */
static void test_rollback_store_steps(void)
{
	rs_rollback_step_bytes = 2 * BS;
	rs_rollback_window_bytes = 8 * BS;
	world_compress = true;
	test_rollback_store_and_undo(false);
	test_rollback_store_and_undo(true);
	world_compress = false;
	rs_rollback_step_bytes = 4u << 20;
	rs_rollback_window_bytes = 64u << 20;
}

/*
 * An offline rollback that meets a corrupt record in a late step, after
 * earlier steps were handed to the applier thread: RW_ECORRUPT naming
 * the segment, no step's bytes used after they were released (a crash
 * or a sanitizer report otherwise), and the store is left for recovery
 * (its journal holds records the index lacks: the next call returns 1).
 */
static void test_rollback_store_corrupt_late(void)
{
	struct world W;
	struct rs_rollback_result res;
	struct rw_when when = { .kind = RW_WHEN_SEQ };
	char store[4096], path[4096];
	uint8_t set[DISK_SIZE / BS];
	int k = 40;

	world_setup(&W, 59);
	/*
	 * The victim: a record that some blocks written after the point need
	 * for their content as-of the point (a view reads every version
	 * down to the newest full one), none of them among the first two
	 * such blocks (the first step): the one first needed the latest.
	 */
	enum { NB = DISK_SIZE / BS, NV = 16 };
	struct ix_read *rd;
	struct ix_version v[NV];
	struct jr_loc victim = { 0 };
	int best = -1, n = 0;
	struct need { struct jr_loc loc; int first; } need[NB * NV];
	int nneed = 0;
	world_shut_down(&W, store, sizeof(store));
	CU_ASSERT_FATAL(blocks_written(store, W.seq[k], W.seq[NOPS], set) > 8);
	CU_ASSERT_FATAL(ix_open(&W.ix, store, IX_RDONLY) == 0);
	CU_ASSERT_FATAL(ix_read_begin(W.ix, &rd) == 0);
	for (int blk = 0; blk < NB; blk++) {
		if (!set[blk])
			continue;
		int m = ix_block_asof(rd, W.d.id, (uint64_t)blk, W.seq[k], v, NV);
		CU_ASSERT_FATAL(m >= 0);
		for (int j = 0; j < m; j++) {
			int t = 0;
			while (t < nneed && (need[t].loc.segment != v[j].loc.segment ||
					     need[t].loc.offset != v[j].loc.offset))
				t++;
			if (t == nneed)
				need[nneed++] = (struct need){ v[j].loc, n };
		}
		n++;
	}
	ix_read_end(rd);
	for (int t = 0; t < nneed; t++) {
		if (need[t].first > best) {
			best = need[t].first;
			victim = need[t].loc;
		}
	}
	CU_ASSERT_FATAL(best >= 2);
	CU_ASSERT_FATAL(ix_disk_path(W.ix, "d", "journal", path, sizeof(path)) == 0);
	ix_close(W.ix);
	W.ix = NULL;
	CU_ASSERT_FATAL(victim.segment != 0);
	char name[32];
	flip_payload_bits(path, &victim, 1, 0x01, name);

	rs_rollback_step_bytes = 2 * BS;
	rs_rollback_window_bytes = 64 * BS;
	when.seq = W.seq[k];
	CU_ASSERT_EQUAL(rs_rollback_store(store, "d", &when, &res), RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	rw_err_clear();
	struct ix_disk d = disk_state(store);
	CU_ASSERT_EQUAL(d.head_synced_seq, W.seq[NOPS]);
	CU_ASSERT_EQUAL(d.last_indexed_seq, W.seq[NOPS]);
	CU_ASSERT_EQUAL(rs_rollback_store(store, "d", &when, &res), 1);
	rw_err_clear();
	rs_rollback_step_bytes = 4u << 20;
	rs_rollback_window_bytes = 64u << 20;
	world_teardown(&W);
}

int main(void)
{
	tu_add_suite("restore",
		     "restore and view as-of every point", test_restore_every_point,
		     "same, over an imported base", test_restore_every_point_over_base,
		     "resolve times, seqs and marks", test_resolve,
		     "rollback touches only newer blocks and undoes", test_rollback_and_undo,
		     "corrupt record fails the restore", test_corrupt_record_fails,
		     "block map matches the model; windows partition it", test_block_map,
		     "restore through tiny map windows", test_restore_small_windows,
		     "shared as-of reader, map and views", test_asof_reader,
		     "shared as-of reader from many threads", test_asof_threads,
		     "block status of the as-of reader", test_asof_extents,
		     "rollback and roll forward over an imported base", test_rollback_over_base,
		     "offline rollback in place, undo, unclean store refused", test_rollback_store,
		     "same, over an imported base", test_rollback_store_over_base,
		     "records read through mappings match, corrupt ones fail", test_map_at,
		     "offline rollback in small steps and windows, compressed records", test_rollback_store_steps,
		     "offline rollback stops cleanly on a corrupt record in a late step", test_rollback_store_corrupt_late,
		     NULL);
	return tu_run();
}
