/*
 * test_compact.c — compaction against a brute-force model.
 *
 * A random workload goes through the real journal writer and index (small
 * segments, so there are many); the model keeps the disk after every
 * operation.  After compacting to H: every point >= H restores and reads
 * bit for bit as before, points < H are RW_ERANGE, base.img is exactly the
 * disk as-of H and sparse where it is zero, folded segments are gone, and
 * a lost index rebuilds from the files alone.  A step hook that fails
 * after each step, then a second run, reaches the same final state.  A dry
 * run changes no byte of the store.  Marks stop compaction unless dropped;
 * the size budget compacts early or refuses.  A view opened before a
 * compaction keeps reading exactly after its segments are unlinked.
 * Recompression of raw records rewrites sealed segments with every record
 * at its old location: readers, the index and every point see the same
 * bytes, and a failure at any write, sync or rename keeps the original.
 */
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_SIZE (256u * 1024)
#define BS 4096u
#define NOPS 120
#define HOP 60 /* compact to the state after op HOP */

struct world {
	char *dir;
	char store[4096];
	struct ix *ix;
	struct ix_disk d;
	struct jr_clock *clock;
	struct jr_writer *w;
	uint8_t *model;
	uint8_t *snap[NOPS + 1];
	uint64_t seq[NOPS + 1];
	uint64_t ts[NOPS + 1];
};

static void world_setup(struct world *W, uint64_t seed)
{
	char path[4096];
	uint64_t st = seed;

	memset(W, 0, sizeof(*W));
	W->dir = tu_tmpdir("compact");
	snprintf(W->store, sizeof(W->store), "%s/store", W->dir);
	CU_ASSERT_FATAL(ix_store_init(W->store) == 0);
	CU_ASSERT_FATAL(ix_open(&W->ix, W->store, IX_LOCK) == 0);
	CU_ASSERT_FATAL(ix_disk_create(W->ix, "d", DISK_SIZE, BS, NULL, &W->d) == 0);
	CU_ASSERT_FATAL(jr_clock_new(&W->clock, 1, 0) == 0);
	struct jr_writer_opts o;
	jr_writer_opts_default(&o);
	o.disk_id = W->d.id;
	o.segment_bytes = 32 * 1024;
	CU_ASSERT_FATAL(ix_disk_path(W->ix, "d", "journal", path, sizeof(path)) == 0);
	CU_ASSERT_FATAL(jr_writer_open(&W->w, path, &o, W->clock, NULL) == 0);
	W->model = calloc(1, DISK_SIZE);
	W->snap[0] = calloc(1, DISK_SIZE);
	uint8_t *buf = malloc(64 * 1024);
	for (int i = 1; i <= NOPS; i++) {
		uint64_t r = tu_rand(&st);
		uint32_t len;
		uint8_t type = JR_WRITE;
		switch (r % 8) {
		case 0: len = 1 + (uint32_t)(tu_rand(&st) % 3000); break;
		case 1: len = 1 + (uint32_t)(tu_rand(&st) % (40 * 1024)); break;
		case 2: type = JR_ZERO; len = 512 * (1 + (uint32_t)(tu_rand(&st) % 40)); break;
		case 3: type = JR_TRIM; len = 512 * (1 + (uint32_t)(tu_rand(&st) % 20)); break;
		default: len = BS * (1 + (uint32_t)(tu_rand(&st) % 4)); break;
		}
		uint64_t off = tu_rand(&st) % (DISK_SIZE - len + 1);
		if (type != JR_WRITE || r % 8 > 3)
			off -= off % (type == JR_WRITE ? BS : 512);
		tu_fill_random(&st, buf, len);
		if (tu_rand(&st) % 3 == 0)
			memset(buf, (int)(tu_rand(&st) & 0xff), len);
		struct jr_append a = { type, off, len, type == JR_WRITE ? buf : NULL };
		CU_ASSERT_FATAL(jr_writer_append(W->w, &a, NULL, NULL) == 0);
		if (type == JR_WRITE)
			memcpy(W->model + off, buf, len);
		else
			memset(W->model + off, 0, len);
		struct jr_writer_stats ws;
		jr_writer_stats(W->w, &ws);
		W->seq[i] = ws.last_seq;
		W->snap[i] = malloc(DISK_SIZE);
		memcpy(W->snap[i], W->model, DISK_SIZE);
	}
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

static void world_teardown(struct world *W)
{
	jr_writer_close(W->w);
	jr_clock_free(W->clock);
	ix_close(W->ix);
	for (int i = 0; i <= NOPS; i++)
		free(W->snap[i]);
	free(W->model);
	tu_rmrf(W->dir);
	free(W->dir);
}

/* Number of points >= from whose view or forward restore differs. */
static int check_points(struct world *W, int from)
{
	struct ix_disk d;
	char out[4200];
	uint8_t *buf = malloc(DISK_SIZE), *got = malloc(DISK_SIZE);
	int bad = 0;

	CU_ASSERT_FATAL(ix_disk_get(W->ix, "d", &d) == 0);
	snprintf(out, sizeof(out), "%s/out.img", W->dir);
	for (int i = from; i <= NOPS; i++) {
		struct rs_view *v;
		uint64_t s = i ? W->seq[i] : 0;
		if (rs_view_open(&v, W->ix, &d, s)) {
			bad++;
			continue;
		}
		if (rs_view_read(v, 0, DISK_SIZE, buf) || memcmp(buf, W->snap[i], DISK_SIZE))
			bad++;
		rs_view_close(v);
		if (i % 7 == 0 || i == from || i == NOPS) {
			int fd;
			if (rs_restore_file(W->ix, &d, s, out, RS_OVERWRITE, NULL, NULL, NULL) ||
			    (fd = open(out, O_RDONLY)) < 0) {
				bad++;
				continue;
			}
			if (pread(fd, got, DISK_SIZE, 0) != DISK_SIZE ||
			    memcmp(got, W->snap[i], DISK_SIZE))
				bad++;
			close(fd);
		}
	}
	free(buf);
	free(got);
	return bad;
}

static bool base_equals(struct world *W, const uint8_t *want, uint64_t *alloc)
{
	char p[4096];
	uint8_t *got = malloc(DISK_SIZE);
	struct stat sb;
	int fd;
	bool ok;

	ix_disk_path(W->ix, "d", "base.img", p, sizeof(p));
	fd = open(p, O_RDONLY);
	ok = fd >= 0 && pread(fd, got, DISK_SIZE, 0) == DISK_SIZE &&
	     !memcmp(got, want, DISK_SIZE) && fstat(fd, &sb) == 0;
	if (ok && alloc)
		*alloc = (uint64_t)sb.st_blocks * 512;
	if (fd >= 0)
		close(fd);
	free(got);
	return ok;
}

static int count_segments(struct world *W)
{
	char p[4096];
	struct jr_seginfo *s = NULL;
	int n;

	ix_disk_path(W->ix, "d", "journal", p, sizeof(p));
	n = jr_segments_list(p, &s);
	free(s);
	return n;
}

static uint64_t nonzero_blocks(const uint8_t *img)
{
	uint64_t n = 0;

	for (uint64_t b = 0; b < DISK_SIZE / BS; b++)
		for (uint32_t i = 0; i < BS; i++)
			if (img[b * BS + i]) {
				n++;
				break;
			}
	return n;
}

/* Blocks that are zero in img but hold data (not a hole) in base.img. */
static int zero_blocks_allocated(struct world *W, const uint8_t *img)
{
	char p[4096];
	int fd, bad = 0;
	static const uint8_t zero[BS];

	ix_disk_path(W->ix, "d", "base.img", p, sizeof(p));
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return -1;
	for (uint64_t b = 0; b < DISK_SIZE / BS; b++) {
		if (memcmp(img + b * BS, zero, BS))
			continue;
		off_t d = lseek(fd, (off_t)(b * BS), SEEK_DATA);
		if (d >= 0 && (uint64_t)d < (b + 1) * BS)
			bad++;
	}
	close(fd);
	return bad;
}

static int compact_to(struct world *W, int op, bool drop_marks,
		      struct rs_compact_stats *st)
{
	struct rw_when w = { .kind = RW_WHEN_SEQ, .seq = W->seq[op] };
	struct rs_compact_opts o = { .before = &w, .drop_marks = drop_marks };

	return rs_compact_run(W->ix, "d", &o, st);
}

static void test_compact_points_exact(void)
{
	struct world W;
	struct rs_compact_stats st;
	uint64_t alloc = 0, s, t;
	int segs0;

	world_setup(&W, 11);
	segs0 = count_segments(&W);
	CU_ASSERT(segs0 > 4);
	CU_ASSERT_EQUAL(check_points(&W, 0), 0);
	/* By time: the moment of op HOP resolves to seq[HOP]. */
	struct rw_when w = { .kind = RW_WHEN_TIME, .ts_ns = W.ts[HOP] };
	struct rs_compact_opts o = { .before = &w };
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_EQUAL(st.plan.horizon_seq, W.seq[HOP]);
	CU_ASSERT(st.blocks > 0);
	CU_ASSERT(st.segments_freed > 0);
	CU_ASSERT_EQUAL(count_segments(&W), segs0 - (int)st.segments_freed);
	CU_ASSERT_EQUAL(check_points(&W, HOP), 0);
	CU_ASSERT(base_equals(&W, W.snap[HOP], &alloc));
	/* (+2 blocks: ext4 counts its extent-tree blocks in st_blocks.) */
	CU_ASSERT(alloc <= (nonzero_blocks(W.snap[HOP]) + 2) * BS);
	CU_ASSERT_EQUAL(zero_blocks_allocated(&W, W.snap[HOP]), 0);
	/* Points before H are refused. */
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	CU_ASSERT_EQUAL(W.d.horizon_seq, W.seq[HOP]);
	CU_ASSERT_EQUAL(W.d.base_seq, W.seq[HOP]);
	for (int i = 1; i < HOP; i += 5) {
		struct rw_when q = { .kind = RW_WHEN_SEQ, .seq = W.seq[i] };
		CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &q, &s, &t), RW_ERANGE);
		q.kind = RW_WHEN_TIME;
		q.ts_ns = W.ts[i];
		CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &q, &s, &t), RW_ERANGE);
	}
	struct rw_when q = { .kind = RW_WHEN_TIME, .ts_ns = W.ts[HOP] };
	CU_ASSERT(rs_resolve(W.ix, &W.d, &q, &s, &t) == 0 && s == W.seq[HOP]);
	/* Again: nothing to do. */
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_TRUE(st.plan.noop);
	CU_ASSERT_EQUAL(st.blocks, 0);
	/* A second compaction further on. */
	CU_ASSERT_FATAL(compact_to(&W, 100, false, &st) == 0);
	CU_ASSERT_EQUAL(check_points(&W, 100), 0);
	CU_ASSERT(base_equals(&W, W.snap[100], NULL));
	struct ix_verify_report rep;
	CU_ASSERT(ix_verify(W.ix, NULL, 0, NULL, NULL, &rep) == 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	/* A lost index rebuilds from the files alone. */
	char p[4200];
	ix_close(W.ix);
	snprintf(p, sizeof(p), "%s/index", W.store);
	CU_ASSERT_FATAL(tu_rmrf(p) == 0);
	CU_ASSERT_FATAL(ix_open(&W.ix, W.store, IX_LOCK) == 0);
	CU_ASSERT_FATAL(ix_catch_up(W.ix, NULL, NULL) >= 0);
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	CU_ASSERT_EQUAL(W.d.horizon_seq, W.seq[100]);
	CU_ASSERT_EQUAL(W.d.base_seq, W.seq[100]);
	CU_ASSERT_EQUAL(check_points(&W, 100), 0);
	/* And so does an explicit rebuild. */
	CU_ASSERT_FATAL(ix_rebuild(W.ix) == 0);
	CU_ASSERT_EQUAL(check_points(&W, 100), 0);
	CU_ASSERT(ix_verify(W.ix, NULL, 0, NULL, NULL, &rep) == 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	world_teardown(&W);
}

struct failer {
	enum rs_compact_step at;
	int hits;
};

static int fail_hook(void *arg, enum rs_compact_step s)
{
	struct failer *f = arg;

	if (s != f->at)
		return 0;
	f->hits++;
	return rw_err_set(-EIO, "test: stop after step %d", (int)s);
}

/*
 * Every file of the store (names and contents; names only with
 * skip_index, as journals of two runs differ in their timestamps), for
 * equality checks.
 */
static uint64_t hash_tree(const char *dir, bool skip_index)
{
	DIR *dd = opendir(dir);
	struct dirent *de;
	uint64_t h = 1469598103934665603ull;
	char p[4096];
	char **names = NULL;
	size_t n = 0;

	if (!dd)
		return 0;
	while ((de = readdir(dd))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    !strcmp(de->d_name, "lock.mdb") || !strcmp(de->d_name, "compact.lock") ||
		    !strcmp(de->d_name, "lock") || (skip_index && !strcmp(de->d_name, "index")))
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		names[n++] = strdup(de->d_name);
	}
	closedir(dd);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(names[i], names[j]) > 0) {
				char *t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
	for (size_t i = 0; i < n; i++) {
		struct stat sb;
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		for (const char *c = names[i]; *c; c++)
			h = (h ^ (uint8_t)*c) * 1099511628211ull;
		if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			h = (h ^ hash_tree(p, skip_index)) * 1099511628211ull;
		} else if (!skip_index) {
			int fd = open(p, O_RDONLY);
			uint8_t b[65536];
			ssize_t k;
			while (fd >= 0 && (k = read(fd, b, sizeof(b))) > 0)
				for (ssize_t x = 0; x < k; x++)
					h = (h ^ b[x]) * 1099511628211ull;
			if (fd >= 0)
				close(fd);
		}
		free(names[i]);
	}
	free(names);
	return h;
}

static void test_compact_resumable(void)
{
	struct world ref;
	struct rs_compact_stats st;
	char segs_ref[4096];
	uint64_t h_ref;

	/* The reference: one uninterrupted run. */
	world_setup(&ref, 23);
	CU_ASSERT_FATAL(compact_to(&ref, HOP, false, &st) == 0);
	h_ref = hash_tree(ref.store, true);
	snprintf(segs_ref, sizeof(segs_ref), "%d", count_segments(&ref));
	world_teardown(&ref);

	for (int at = RS_STEP_HORIZON; at <= RS_STEP_UNLINKED; at++) {
		struct world W;
		struct failer f = { (enum rs_compact_step)at, 0 };
		struct rw_when w;
		world_setup(&W, 23);
		w = (struct rw_when){ .kind = RW_WHEN_SEQ, .seq = W.seq[HOP] };
		struct rs_compact_opts o = { .before = &w, .step_hook = fail_hook,
					     .hook_arg = &f };
		CU_ASSERT_EQUAL(rs_compact_run(W.ix, "d", &o, &st), -EIO);
		CU_ASSERT_EQUAL(f.hits, 1);
		/* Interrupted: every point >= H is exact already. */
		CU_ASSERT_EQUAL(check_points(&W, HOP), 0);
		/* Reopen (as after a crash) and run again. */
		ix_close(W.ix);
		CU_ASSERT_FATAL(ix_open(&W.ix, W.store, IX_LOCK) == 0);
		o.step_hook = NULL;
		CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
		CU_ASSERT_EQUAL(check_points(&W, HOP), 0);
		CU_ASSERT(base_equals(&W, W.snap[HOP], NULL));
		char segs[32];
		snprintf(segs, sizeof(segs), "%d", count_segments(&W));
		CU_ASSERT_STRING_EQUAL(segs, segs_ref);
		CU_ASSERT_EQUAL(hash_tree(W.store, true), h_ref);
		world_teardown(&W);
	}
}

static void test_compact_dry_run(void)
{
	struct world W;
	struct rs_compact_stats st;
	int lock;

	world_setup(&W, 31);
	CU_ASSERT_FATAL(rs_compact_lock(W.ix, &lock) == 0);
	close(lock);
	uint64_t h0 = hash_tree(W.store, false);
	struct rw_when w = { .kind = RW_WHEN_SEQ, .seq = W.seq[HOP] };
	struct rs_compact_opts o = { .before = &w, .dry_run = true };
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_EQUAL(st.plan.horizon_seq, W.seq[HOP]);
	CU_ASSERT(st.plan.blocks > 0);
	CU_ASSERT(st.plan.segments > 0);
	CU_ASSERT(st.plan.bytes > 0 && st.plan.records > 0);
	CU_ASSERT_EQUAL(st.blocks, 0);
	CU_ASSERT_EQUAL(hash_tree(W.store, false), h0);
	CU_ASSERT_EQUAL(check_points(&W, 0), 0);
	/* The plan's counts match the real run. */
	uint64_t blocks = st.plan.blocks, segments = st.plan.segments;
	o.dry_run = false;
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_EQUAL(st.blocks, blocks);
	CU_ASSERT_EQUAL(st.segments_freed, segments);
	world_teardown(&W);
}

static void test_compact_marks(void)
{
	struct world W;
	struct rs_compact_stats st;
	struct ix_mark m = { .seq = 0 };

	world_setup(&W, 41);
	snprintf(m.label, sizeof(m.label), "keep");
	m.seq = W.seq[30];
	m.ts_ns = W.ts[30];
	CU_ASSERT_FATAL(ix_mark_put(W.ix, W.d.id, &m) == 0);
	CU_ASSERT_FATAL(compact_to(&W, HOP, false, &st) == 0);
	CU_ASSERT_TRUE(st.plan.clamped_by_mark);
	CU_ASSERT_STRING_EQUAL(st.plan.mark, "keep");
	CU_ASSERT_EQUAL(st.plan.horizon_seq, W.seq[30]);
	CU_ASSERT_EQUAL(check_points(&W, 30), 0);
	/* The mark still resolves. */
	struct rw_when q = { .kind = RW_WHEN_MARK };
	uint64_t s, t;
	snprintf(q.mark, sizeof(q.mark), "keep");
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	CU_ASSERT(rs_resolve(W.ix, &W.d, &q, &s, &t) == 0 && s == W.seq[30]);
	/* Past it only with drop_marks, which deletes it. */
	CU_ASSERT_FATAL(compact_to(&W, HOP, true, &st) == 0);
	CU_ASSERT_FALSE(st.plan.clamped_by_mark);
	CU_ASSERT_EQUAL(st.plan.horizon_seq, W.seq[HOP]);
	CU_ASSERT_EQUAL(st.marks_dropped, 1);
	CU_ASSERT_EQUAL(check_points(&W, HOP), 0);
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	CU_ASSERT_EQUAL(rs_resolve(W.ix, &W.d, &q, &s, &t), RW_ENOTFOUND);
	world_teardown(&W);
}

static void test_compact_budget(void)
{
	struct world W;
	struct rs_compact_stats st;

	world_setup(&W, 53);
	/* Retention keeps everything (cutoff before the first record). */
	struct rw_when w = { .kind = RW_WHEN_SEQ, .seq = 0 };
	struct rs_compact_opts o = { .before = &w, .max_journal = 64 * 1024,
				     .over_budget = RS_OVER_BUDGET_REFUSE };
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_TRUE(st.plan.over_budget);
	CU_ASSERT_FALSE(st.plan.budget_forced);
	CU_ASSERT_TRUE(st.plan.noop);
	CU_ASSERT_EQUAL(st.segments_freed, 0);
	CU_ASSERT_EQUAL(check_points(&W, 0), 0);
	/* compact: history shrinks until the journal fits. */
	o.over_budget = RS_OVER_BUDGET_COMPACT;
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_TRUE(st.plan.over_budget);
	CU_ASSERT_TRUE(st.plan.budget_forced);
	CU_ASSERT(st.segments_freed > 0);
	CU_ASSERT_FATAL(ix_disk_get(W.ix, "d", &W.d) == 0);
	int from = 0;
	while (from < NOPS && W.seq[from] < W.d.horizon_seq)
		from++;
	CU_ASSERT(from > 0);
	CU_ASSERT_EQUAL(check_points(&W, from), 0);
	/* Under budget now (the journal's last segments may stay). */
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT(!st.plan.over_budget || st.plan.journal_segments <= 2);
	world_teardown(&W);
}

/* A view opened before a compaction reads exactly after its segments went. */
static void test_compact_view_across(void)
{
	struct world W;
	struct rs_compact_stats st;
	struct rs_view *v1, *v2;
	uint8_t *buf = malloc(DISK_SIZE);

	world_setup(&W, 67);
	CU_ASSERT_FATAL(rs_view_open(&v1, W.ix, &W.d, W.seq[HOP]) == 0);
	CU_ASSERT_FATAL(rs_view_open(&v2, W.ix, &W.d, W.seq[90]) == 0);
	/* Half read before. */
	CU_ASSERT(rs_view_read(v1, 0, DISK_SIZE / 2, buf) == 0);
	CU_ASSERT(memcmp(buf, W.snap[HOP], DISK_SIZE / 2) == 0);
	CU_ASSERT_FATAL(compact_to(&W, HOP, false, &st) == 0);
	CU_ASSERT(st.segments_freed > 0);
	CU_ASSERT(rs_view_read(v1, 0, DISK_SIZE, buf) == 0);
	CU_ASSERT(memcmp(buf, W.snap[HOP], DISK_SIZE) == 0);
	CU_ASSERT(rs_view_read(v2, 0, DISK_SIZE, buf) == 0);
	CU_ASSERT(memcmp(buf, W.snap[90], DISK_SIZE) == 0);
	rs_view_close(v1);
	rs_view_close(v2);
	free(buf);
	world_teardown(&W);
}

/* Compaction holds STORE/compact.lock: a second one is RW_EBUSY. */
static void test_compact_lock(void)
{
	struct world W;
	int lock;

	world_setup(&W, 71);
	CU_ASSERT_FATAL(rs_compact_lock(W.ix, &lock) == 0);
	CU_ASSERT_EQUAL(compact_to(&W, HOP, false, NULL), RW_EBUSY);
	close(lock);
	CU_ASSERT_EQUAL(compact_to(&W, HOP, false, NULL), 0);
	world_teardown(&W);
}

/*
 * Two disks share the clock and the time map: compacting one leaves every
 * point of the other exact (by seq and by time) and the index verifiable.
 */
#define N2 80
static void test_compact_two_disks(void)
{
	char *dir = tu_tmpdir("compact2"), store[4096], path[4096];
	struct ix *ix;
	struct ix_disk d[2];
	struct jr_clock *clock;
	struct jr_writer *w[2];
	uint8_t *model[2], *snap[2][N2 + 1];
	uint64_t seq[N2 + 1], ts[N2 + 1], st = 99;
	int who[N2 + 1];
	uint8_t buf[8192];

	snprintf(store, sizeof(store), "%s/store", dir);
	CU_ASSERT_FATAL(ix_store_init(store) == 0);
	CU_ASSERT_FATAL(ix_open(&ix, store, IX_LOCK) == 0);
	CU_ASSERT_FATAL(ix_disk_create(ix, "a", DISK_SIZE, BS, NULL, &d[0]) == 0);
	CU_ASSERT_FATAL(ix_disk_create(ix, "b", DISK_SIZE, BS, NULL, &d[1]) == 0);
	CU_ASSERT_FATAL(jr_clock_new(&clock, 1, 0) == 0);
	for (int k = 0; k < 2; k++) {
		struct jr_writer_opts o;
		jr_writer_opts_default(&o);
		o.disk_id = d[k].id;
		o.segment_bytes = 16 * 1024;
		CU_ASSERT_FATAL(ix_disk_path(ix, d[k].name, "journal", path, sizeof(path)) == 0);
		CU_ASSERT_FATAL(jr_writer_open(&w[k], path, &o, clock, NULL) == 0);
		model[k] = calloc(1, DISK_SIZE);
		snap[k][0] = calloc(1, DISK_SIZE);
	}
	for (int i = 1; i <= N2; i++) {
		int k = (int)(tu_rand(&st) % 2);
		uint32_t len = 512 * (1 + (uint32_t)(tu_rand(&st) % 16));
		uint64_t off = (tu_rand(&st) % (DISK_SIZE / 512 - 16)) * 512;
		tu_fill_random(&st, buf, len);
		struct jr_append ap = { JR_WRITE, off, len, buf };
		struct jr_appended out;
		CU_ASSERT_FATAL(jr_writer_append(w[k], &ap, NULL, &out) == 0);
		memcpy(model[k] + off, buf, len);
		who[i] = k;
		seq[i] = out.seq;
		ts[i] = out.ts_ns;
		for (int j = 0; j < 2; j++) {
			snap[j][i] = malloc(DISK_SIZE);
			memcpy(snap[j][i], model[j], DISK_SIZE);
		}
	}
	for (int k = 0; k < 2; k++)
		CU_ASSERT_FATAL(jr_writer_flush(w[k]) == 0);
	CU_ASSERT_FATAL(ix_catch_up(ix, NULL, NULL) >= 0);
	int hop = N2 / 2;
	struct rw_when wh = { .kind = RW_WHEN_SEQ, .seq = seq[hop] };
	struct rs_compact_opts o = { .before = &wh };
	struct rs_compact_stats cs;
	CU_ASSERT_FATAL(rs_compact_run(ix, "a", &o, &cs) == 0);
	CU_ASSERT(cs.segments_freed > 0);
	uint8_t *got = malloc(DISK_SIZE);
	int bad = 0, refused = 0;
	for (int k = 0; k < 2; k++) {
		struct ix_disk dk;
		CU_ASSERT_FATAL(ix_disk_get(ix, d[k].name, &dk) == 0);
		for (int i = 1; i <= N2; i++) {
			struct rw_when q = { .kind = RW_WHEN_TIME, .ts_ns = ts[i] };
			uint64_t s, t;
			struct rs_view *v;
			int err = rs_resolve(ix, &dk, &q, &s, &t);
			if (k == 0 && i < hop) {
				refused += err == RW_ERANGE;
				continue;
			}
			if (err || rs_view_open(&v, ix, &dk, s)) {
				bad++;
				continue;
			}
			if (rs_view_read(v, 0, DISK_SIZE, got) ||
			    memcmp(got, snap[k][i], DISK_SIZE))
				bad++;
			rs_view_close(v);
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(refused, hop - 1);
	struct ix_verify_report rep;
	CU_ASSERT(ix_verify(ix, NULL, 0, NULL, NULL, &rep) == 0);
	CU_ASSERT_EQUAL(rep.problems, 0);
	(void)who;
	free(got);
	for (int k = 0; k < 2; k++) {
		jr_writer_close(w[k]);
		free(model[k]);
		for (int i = 0; i <= N2; i++)
			free(snap[k][i]);
	}
	jr_clock_free(clock);
	ix_close(ix);
	tu_rmrf(dir);
	free(dir);
}

/* ------------------------------------------------------- recompression */

/* Every record of the journal as a reader returns it. */
struct jrec {
	uint64_t seq, seg, off, h;
	uint8_t type;
	uint32_t length;
};

static uint64_t fnv(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

static bool same_records(const struct jrec *a, const struct jrec *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i].seq != b[i].seq || a[i].seg != b[i].seg ||
		    a[i].off != b[i].off || a[i].h != b[i].h ||
		    a[i].type != b[i].type || a[i].length != b[i].length)
			return false;
	return true;
}

/* Reads the whole journal (payloads verified); returns the count or -1. */
static int read_journal(const char *jdir, struct jrec **out)
{
	struct jr_reader *r;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *p;
	struct jrec *v = NULL;
	int n = 0, k;

	*out = NULL;
	if (jr_reader_open(&r, jdir, 0))
		return -1;
	while ((k = jr_reader_next(r, &rec, &loc, &p)) == 1) {
		v = realloc(v, (size_t)(n + 1) * sizeof(*v));
		v[n++] = (struct jrec){ rec.seq, loc.segment, loc.offset,
					p ? fnv(p, rec.length) : 0, rec.type,
					rec.length };
	}
	jr_reader_close(r);
	if (k < 0) {
		free(v);
		return -1;
	}
	*out = v;
	return n;
}

static uint64_t journal_alloc(const char *jdir)
{
	struct jr_seginfo *s = NULL;
	char p[4200], name[32];
	uint64_t t = 0;
	int n = jr_segments_list(jdir, &s);

	for (int i = 0; i < n; i++) {
		struct stat sb;
		jr_segment_name(s[i].first_seq, name);
		snprintf(p, sizeof(p), "%s/%s", jdir, name);
		if (stat(p, &sb) == 0)
			t += (uint64_t)sb.st_blocks * 512;
	}
	free(s);
	return t;
}

static uint32_t seg_version(const char *jdir, uint64_t first)
{
	char p[4200], name[32];
	uint8_t h[64];
	int fd;

	jr_segment_name(first, name);
	snprintf(p, sizeof(p), "%s/%s", jdir, name);
	fd = open(p, O_RDONLY);
	if (fd < 0 || pread(fd, h, 64, 0) != 64) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	return rw_get_le32(h + 8);
}

static void count_problem(void *arg, const struct ix_problem *pr)
{
	(void)pr;
	(*(int *)arg)++;
}

/*
 * The world's writer stores everything raw (no compression context), a
 * third of the payloads are one repeated byte: recompression must leave
 * every record readable at its old location with the same bytes, the
 * index untouched (same file bytes, verify clean, every point exact),
 * free blocks, and improve the stored ratio; a dry run changes nothing;
 * a second run has nothing left to examine.
 */
static void test_compact_recompress(void)
{
	struct world W;
	struct rs_compact_stats st, dry;
	struct jrec *before = NULL, *after = NULL;
	char jdir[4096], idx[4200];
	int nb, na, problems = 0;

	world_setup(&W, 41);
	ix_disk_path(W.ix, "d", "journal", jdir, sizeof(jdir));
	snprintf(idx, sizeof(idx), "%s/index", W.store);
	nb = read_journal(jdir, &before);
	CU_ASSERT_FATAL(nb > NOPS / 2);
	uint64_t h_store = hash_tree(W.store, false);
	uint64_t h_index = hash_tree(idx, false);
	uint64_t alloc0 = journal_alloc(jdir);
	int nseg = count_segments(&W);

	struct rs_compact_opts o = { .recompress = true, .recompress_only = true,
				     .dry_run = true };
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &dry) == 0);
	CU_ASSERT(dry.rz.recompressed > 0);
	CU_ASSERT(dry.rz.alloc_after < dry.rz.alloc_before);
	CU_ASSERT_EQUAL(dry.rz.rewritten, 0);
	CU_ASSERT_EQUAL(hash_tree(W.store, false), h_store);

	o.dry_run = false;
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT(st.plan.noop);
	CU_ASSERT_EQUAL(st.rz.recompressed, dry.rz.recompressed);
	CU_ASSERT_EQUAL(st.rz.stored_after, dry.rz.stored_after);
	CU_ASSERT(st.rz.rewritten > 0);
	CU_ASSERT_EQUAL(st.rz.raw, st.rz.writes); /* all were stored raw */
	CU_ASSERT(st.rz.stored_after < st.rz.stored_before); /* ratio improves */
	CU_ASSERT(st.rz.alloc_after < st.rz.alloc_before);
	uint64_t alloc1 = journal_alloc(jdir);
	CU_ASSERT(alloc1 < alloc0);
	CU_ASSERT_EQUAL(alloc0 - alloc1, st.rz.alloc_before - st.rz.alloc_after);
	CU_ASSERT_EQUAL(count_segments(&W), nseg);

	/* The same records at the same places with the same bytes. */
	na = read_journal(jdir, &after);
	CU_ASSERT_EQUAL_FATAL(na, nb);
	CU_ASSERT(same_records(before, after, nb));
	/* The index was not touched and still agrees with the journal. */
	CU_ASSERT_EQUAL(hash_tree(idx, false), h_index);
	struct ix_verify_report rep;
	CU_ASSERT_EQUAL(ix_verify(W.ix, NULL, 0, count_problem, &problems, &rep), 0);
	CU_ASSERT_EQUAL(problems, 0);
	CU_ASSERT_EQUAL(check_points(&W, 0), 0);

	/* Nothing left: the watermark covers every sealed segment. */
	CU_ASSERT_FATAL(rs_compact_run(W.ix, "d", &o, &st) == 0);
	CU_ASSERT_EQUAL(st.rz.segments, 0);
	/* The writer goes on appending after the rewritten segments. */
	uint8_t b[BS];
	memset(b, 7, sizeof(b));
	struct jr_append a = { JR_WRITE, 0, BS, b };
	CU_ASSERT_EQUAL(jr_writer_append(W.w, &a, NULL, NULL), 0);
	CU_ASSERT_EQUAL(jr_writer_flush(W.w), 0);
	free(after);
	CU_ASSERT_EQUAL(read_journal(jdir, &after), nb + 1);

	/* Folding afterwards over rewritten segments stays exact. */
	CU_ASSERT_FATAL(compact_to(&W, HOP, false, &st) == 0);
	CU_ASSERT_EQUAL(check_points(&W, HOP), 0);
	CU_ASSERT(base_equals(&W, W.snap[HOP], NULL));
	free(before);
	free(after);
	world_teardown(&W);
}

static int file_hash(const char *path, uint64_t *h)
{
	int fd = open(path, O_RDONLY);
	uint8_t b[65536];
	ssize_t k;

	*h = 1469598103934665603ull;
	if (fd < 0)
		return -1;
	while ((k = read(fd, b, sizeof(b))) > 0)
		for (ssize_t x = 0; x < k; x++)
			*h = (*h ^ b[x]) * 1099511628211ull;
	close(fd);
	return 0;
}

static int stop_at(void *arg, enum jr_rz_stage s)
{
	return s == *(enum jr_rz_stage *)arg ? -EIO : 0;
}

/*
 * Failures at every write, sync and rename of a rewrite, and a stop after
 * each stage, leave the original segment byte for byte (and no copy);
 * a copy left by a crash is removed by the next run; a reader that had
 * the original open keeps reading it; a bad record stops the rewrite; the
 * last segment is refused; a PAD in a version-1 segment is corruption.
 */
static void test_compact_recompress_faults(void)
{
	struct world W;
	struct jr_recompress_stats rs;
	struct jr_seginfo *segs = NULL;
	struct jrec *before = NULL, *after = NULL;
	char jdir[4096], p[4200], name[32];
	uint64_t cand[8];
	int ncand = 0, nseg, nb;

	world_setup(&W, 43);
	ix_disk_path(W.ix, "d", "journal", jdir, sizeof(jdir));
	nb = read_journal(jdir, &before);
	nseg = jr_segments_list(jdir, &segs);
	CU_ASSERT_FATAL(nseg > 4);
	/* Segments a rewrite would change. */
	for (int i = 0; i + 1 < nseg && ncand < 8; i++) {
		struct jr_recompress_opts dry = { .dry_run = true };
		CU_ASSERT_EQUAL(jr_segment_recompress(jdir, segs[i].first_seq, &dry, &rs), 0);
		if (rs.recompressed)
			cand[ncand++] = segs[i].first_seq;
	}
	CU_ASSERT_FATAL(ncand >= 6);
	CU_ASSERT_EQUAL(jr_segment_recompress(jdir, segs[nseg - 1].first_seq, NULL, &rs),
			RW_EBUSY);

	/* Fail the n-th write / sync / rename for every n until it passes. */
	const enum rw_sys_op ops[3] = { RW_OP_WRITE, RW_OP_FSYNC, RW_OP_RENAME };
	for (int k = 0; k < 3; k++) {
		uint64_t h0, h1;
		int fails = 0, err = -1;
		jr_segment_name(cand[k], name);
		snprintf(p, sizeof(p), "%s/%s", jdir, name);
		CU_ASSERT_FATAL(file_hash(p, &h0) == 0);
		for (uint64_t n = 1; n < 1000 && err; n++) {
			rw_fault_reset();
			rw_fault_arm(ops[k], n, -EIO, false);
			err = jr_segment_recompress(jdir, cand[k], NULL, &rs);
			rw_fault_reset();
			if (!err)
				break;
			fails++;
			/* The original, or (a failed directory fsync after
			 * the rename) the complete copy; never a copy left. */
			CU_ASSERT_EQUAL(file_hash(p, &h1), 0);
			if (seg_version(jdir, cand[k]) == 1) {
				CU_ASSERT_EQUAL(h1, h0);
			} else {
				struct jrec *now = NULL;
				CU_ASSERT_EQUAL(seg_version(jdir, cand[k]), 2);
				CU_ASSERT_EQUAL(read_journal(jdir, &now), nb);
				CU_ASSERT(now && same_records(before, now, nb));
				free(now);
				err = 0;
			}
			snprintf(p + strlen(p), 8, ".rz");
			CU_ASSERT_EQUAL(access(p, F_OK), -1);
			p[strlen(p) - 3] = '\0';
		}
		CU_ASSERT_EQUAL(err, 0);
		CU_ASSERT(fails >= 1);
		CU_ASSERT_EQUAL(seg_version(jdir, cand[k]), 2);
	}
	/* Stopped after each stage (as a crash would, minus the exit). */
	for (enum jr_rz_stage s = JR_RZ_WRITTEN; s <= JR_RZ_SYNCED; s++) {
		struct jr_recompress_opts o = { .hook = stop_at, .hook_arg = &s };
		uint64_t h0, h1;
		jr_segment_name(cand[3], name);
		snprintf(p, sizeof(p), "%s/%s", jdir, name);
		CU_ASSERT_FATAL(file_hash(p, &h0) == 0);
		CU_ASSERT_EQUAL(jr_segment_recompress(jdir, cand[3], &o, &rs), -EIO);
		CU_ASSERT_EQUAL(file_hash(p, &h1), 0);
		CU_ASSERT_EQUAL(h1, h0);
	}
	/* A copy a crash left behind goes at the next run. */
	snprintf(p, sizeof(p), "%s/%s.rz", jdir, name);
	int fd = open(p, O_WRONLY | O_CREAT, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, "junk", 4), 4);
	close(fd);
	CU_ASSERT_EQUAL(jr_recompress_cleanup(jdir), 0);
	CU_ASSERT_EQUAL(access(p, F_OK), -1);

	/* A reader with the original open reads on across the rename. */
	struct jr_reader *r;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *pl;
	int i0 = 0;
	while (i0 < nb && before[i0].seg != cand[4])
		i0++;
	CU_ASSERT_FATAL(i0 < nb);
	CU_ASSERT_FATAL(jr_reader_open(&r, jdir, 0) == 0);
	CU_ASSERT_FATAL(jr_reader_seek(r, before[i0].seq) == 0);
	CU_ASSERT_EQUAL_FATAL(jr_reader_next(r, &rec, &loc, &pl), 1);
	CU_ASSERT_EQUAL(rec.seq, before[i0].seq);
	CU_ASSERT_EQUAL(jr_segment_recompress(jdir, cand[4], NULL, &rs), 0);
	CU_ASSERT(rs.rewritten);
	for (int i = i0 + 1; i < nb; i++) {
		CU_ASSERT_EQUAL_FATAL(jr_reader_next(r, &rec, &loc, &pl), 1);
		CU_ASSERT_EQUAL(rec.seq, before[i].seq);
		CU_ASSERT_EQUAL(loc.offset, before[i].off);
		CU_ASSERT_EQUAL(pl ? fnv(pl, rec.length) : 0, before[i].h);
	}
	jr_reader_close(r);

	/* A bad record: the rewrite stops, the segment stays as it was. */
	int ib = 0;
	while (ib < nb && !(before[ib].seg == cand[5] && before[ib].type == JR_WRITE))
		ib++;
	CU_ASSERT_FATAL(ib < nb);
	jr_segment_name(cand[5], name);
	snprintf(p, sizeof(p), "%s/%s", jdir, name);
	fd = open(p, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	uint8_t c;
	off_t at = (off_t)before[ib].off + JR_HDR_SIZE + 1;
	CU_ASSERT_EQUAL(pread(fd, &c, 1, at), 1);
	c ^= 0x10;
	CU_ASSERT_EQUAL(pwrite(fd, &c, 1, at), 1);
	CU_ASSERT_EQUAL(jr_segment_recompress(jdir, cand[5], NULL, &rs), RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	CU_ASSERT_EQUAL(seg_version(jdir, cand[5]), 1);
	c ^= 0x10;
	CU_ASSERT_EQUAL(pwrite(fd, &c, 1, at), 1);
	close(fd);

	/* Everything reads back as before; every point is exact. */
	CU_ASSERT_EQUAL(read_journal(jdir, &after), nb);
	CU_ASSERT(after && same_records(before, after, nb));
	CU_ASSERT_EQUAL(check_points(&W, 0), 0);

	/* A PAD in a version-1 segment is corruption, named. */
	jr_segment_name(cand[0], name);
	snprintf(p, sizeof(p), "%s/%s", jdir, name);
	fd = open(p, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	uint8_t h[64];
	CU_ASSERT_EQUAL(pread(fd, h, 64, 0), 64);
	rw_put_le32(h + 8, 1);
	rw_put_le32(h + 60, rw_crc32c(0, h, 60));
	CU_ASSERT_EQUAL(pwrite(fd, h, 64, 0), 64);
	close(fd);
	free(after);
	CU_ASSERT_EQUAL(read_journal(jdir, &after), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "pad record in a version-1 segment"));
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));

	free(before);
	free(after);
	free(segs);
	world_teardown(&W);
}

int main(void)
{
	tu_add_suite("compact",
		     "every point >= H exact, < H refused, base sparse, rebuildable",
		     test_compact_points_exact,
		     "interrupted after each step, then resumed", test_compact_resumable,
		     "dry run changes nothing", test_compact_dry_run,
		     "marks stop compaction unless dropped", test_compact_marks,
		     "size budget: refuse or compact early", test_compact_budget,
		     "a view open across a compaction stays exact", test_compact_view_across,
		     "compact.lock excludes a second compaction", test_compact_lock,
		     "two disks: the other disk stays exact, verify passes", test_compact_two_disks,
		     "recompression: same records at the same places, index untouched, blocks freed",
		     test_compact_recompress,
		     "recompression: faults, stops and crashes leave the old or the new segment",
		     test_compact_recompress_faults,
		     NULL);
	return tu_run();
}
