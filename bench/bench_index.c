/*
 * bench_index.c — how fast the index takes block versions, how fast it
 * answers "block B as-of seq S", and how many bytes a version costs.
 *
 * What: 5,000,000 single-block versions on random blocks of a 64 GiB disk
 * (16M blocks of 4 KiB), through the real ix_batch_* path (durable
 * commits), in the batches capture's housekeeping would commit under a
 * write load of 300,000 versions/s: everything written since the previous
 * commit began — 50 ms worth (one tick), or the previous commit's duration
 * worth when that was longer.  That run's versions / time spent committing
 * cannot pass the offered load (a batch is what arrived during the
 * previous commit, and commits grow with the tree), so the index rate is
 * measured on a second store the same way at a load a third higher
 * (400,000/s): at or above 300,000 there, the index absorbs more than the
 * target; below, its batches (and lag) would keep growing (-H skips that
 * run and reports the first).  Then random as-of lookups from one thread (a fresh read handle: the
 * time includes building the lookup summary of every group it lands in,
 * index/summary.c); then the LMDB data file size divided by the
 * versions.  A second part compares the two candidate
 * layouts of the versions table in bare LMDB (one key per version vs
 * MDB_DUPSORT), on random blocks and on a hot set, which is how the
 * layout in FORMAT.md was chosen.
 *
 * Options: -n VERSIONS (default 5000000), -l LOOKUPS (2000000),
 * -c VERSIONS for the layout comparison (1000000, 0 = skip), -d DIR,
 * -s to measure with MDB_NOSYNC (not the shipped setting; shows how much
 * of the indexing time is waiting for the disk), -f for fixed random
 * batches of 256..4096 records instead of the capture model (a light,
 * bursty load: the cost per version is highest there).
 * It prints a table with targets and PASS/MISS and exits 0 unless
 * something fails to run.
 */
#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <stdbool.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* CPU time of this thread: on a shared machine, what the lookups cost
 * when they are not waiting for a core. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void rmrf(const char *dir)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

static uint64_t file_size(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ------------------------------------------------- layout comparison */

struct layout_result {
	double rate;
	double bytes_per;
};

static void put_varint(uint8_t *p, size_t *n, uint64_t v)
{
	while (v >= 0x80) {
		p[(*n)++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[(*n)++] = (uint8_t)v;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* dup: 0 = one key per version, 1 = MDB_DUPSORT. */
static int layout_run(const char *dir, int dup, uint64_t nver, uint64_t nblocks,
		      struct layout_result *res)
{
	MDB_env *env = NULL;
	MDB_dbi dbi;
	MDB_txn *txn = NULL;
	uint64_t st = 42, seq = 1;
	char p[4200];
	int rc;
	uint64_t *batch = malloc(4096 * sizeof(*batch));

	rmrf(dir);
	mkdir(dir, 0755);
	if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_mapsize(env, 16ull << 30)) ||
	    (rc = mdb_env_set_maxdbs(env, 4)) ||
	    (rc = mdb_env_open(env, dir, MDB_NOMETASYNC, 0644)))
		goto out;
	uint64_t t0 = rw_mono_ns();
	for (uint64_t done = 0; done < nver;) {
		size_t n = 256 + rnd(&st) % 3841;
		if (n > nver - done)
			n = (size_t)(nver - done);
		/* (block << 24 | i) sorts the batch by block like ix does. */
		for (size_t i = 0; i < n; i++)
			batch[i] = (rnd(&st) % nblocks) << 24 | i;
		qsort(batch, n, sizeof(*batch), cmp_u64);
		if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) ||
		    (rc = mdb_dbi_open(txn, "v", MDB_CREATE | (dup ? MDB_DUPSORT : 0), &dbi)))
			goto out;
		for (size_t i = 0; i < n; i++) {
			uint8_t kb[20], vb[32];
			size_t vn = 0;
			uint64_t blk = batch[i] >> 24, s = seq + (batch[i] & 0xffffff);
			MDB_val k, v;
			rw_put_be32(kb, 1);
			rw_put_be64(kb + 4, blk);
			if (dup) {
				rw_put_be64(vb, s);
				vn = 8;
				k.mv_size = 12;
			} else {
				rw_put_be64(kb + 12, s);
				k.mv_size = 20;
			}
			vb[vn++] = 1;
			put_varint(vb, &vn, s % 16000);
			put_varint(vb, &vn, (s % 16000) * 4160);
			k.mv_data = kb;
			v.mv_size = vn;
			v.mv_data = vb;
			if ((rc = mdb_put(txn, dbi, &k, &v, 0)))
				goto out;
		}
		seq += n;
		done += n;
		rc = mdb_txn_commit(txn);
		txn = NULL;
		if (rc)
			goto out;
	}
	res->rate = (double)nver / ((double)(rw_mono_ns() - t0) / 1e9);
	snprintf(p, sizeof(p), "%s/data.mdb", dir);
	res->bytes_per = (double)file_size(p) / (double)nver;
out:
	if (txn)
		mdb_txn_abort(txn);
	if (env)
		mdb_env_close(env);
	free(batch);
	rmrf(dir);
	return rc;
}

/* ------------------------------------------------------------ indexing */

struct irun {
	uint64_t batches, bmin, bmax;
	uint64_t longest_ns;  /* the longest commit: the index's lag */
	double secs, rate;
};

/*
 * Indexes nver random single-block versions into disk d through
 * ix_batch_*.  fixed: batches of 256..4096 records; else the capture
 * model at `offered` versions/s: every record written since the previous
 * commit began — one tick's worth, or the previous commit's duration's
 * worth when that was longer.  0 or a code.
 */
static int index_run(struct ix *ix, const struct ix_disk *d, uint64_t nver,
		     bool fixed, double offered, uint64_t *st, struct irun *out)
{
	const double tick_s = 0.050;
	const uint64_t nblocks = 16ull << 20;
	const uint64_t seg_records = 16000; /* ~64 MiB segments of 4 KiB writes */
	uint64_t seq = 1, ts = 1700000000000000000ull, last_ns = 0;
	struct ix_batch *b = NULL;
	uint64_t t0 = rw_mono_ns();
	int rc = ix_batch_new(ix, &b);

	memset(out, 0, sizeof(*out));
	out->bmin = UINT64_MAX;
	while (rc == 0 && seq <= nver) {
		uint64_t n;
		if (fixed) {
			n = 256 + rnd(st) % 3841;
		} else {
			double span = (double)last_ns / 1e9;
			n = (uint64_t)(offered * (span > tick_s ? span : tick_s));
		}
		if (n > nver - seq + 1)
			n = nver - seq + 1;
		out->bmin = n < out->bmin ? n : out->bmin;
		out->bmax = n > out->bmax ? n : out->bmax;
		uint64_t tb = rw_mono_ns();
		for (uint64_t i = 0; rc == 0 && i < n && seq <= nver; i++, seq++) {
			struct jr_rec r = { 0 };
			uint64_t segfirst = (seq - 1) / seg_records * seg_records + 1;
			struct jr_loc l = { segfirst, (seq - segfirst) * (JR_HDR_SIZE + 4096) };
			r.type = JR_WRITE;
			r.seq = seq;
			r.ts_ns = ts += 1000 + rnd(st) % 50000;
			r.disk_id = d->id;
			r.offset = (rnd(st) % nblocks) * 4096;
			r.length = 4096;
			r.stored_len = 4096;
			rc = ix_batch_add(b, &r, &l);
		}
		if (rc == 0)
			rc = ix_batch_commit(b);
		last_ns = rw_mono_ns() - tb;
		if (last_ns > out->longest_ns)
			out->longest_ns = last_ns;
		out->batches++;
	}
	ix_batch_free(b);
	out->secs = (double)(rw_mono_ns() - t0) / 1e9;
	out->rate = (double)nver / out->secs;
	return rc;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	uint64_t nver = 5000000, nlook = 2000000, ncmp = 1000000;
	const char *base = getenv("TMPDIR");
	char dir[4096], store[4200], p[4300];
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct ix_disk d;
	uint64_t st = 0x9e3779b97f4a7c15ull;
	int opt, rc, status = 1;

	bool nosync = false, fixed = false, heavy_load = true;
	/* The capture model's offered write load: the target's. */
	const double offered = 300000.0;

	while ((opt = getopt(argc, argv, "n:l:c:d:sfH")) != -1) {
		switch (opt) {
		case 'H': heavy_load = false; break;
		case 's': nosync = true; setenv("REWIND_INDEX_NOSYNC", "1", 1); break;
		case 'f': fixed = true; break;
		case 'n': nver = strtoull(optarg, NULL, 0); break;
		case 'l': nlook = strtoull(optarg, NULL, 0); break;
		case 'c': ncmp = strtoull(optarg, NULL, 0); break;
		case 'd': base = optarg; break;
		default:
			fprintf(stderr, "usage: bench_index [-n versions] [-l lookups] [-c compare-versions] [-d tmpdir] [-s] [-f] [-H]\n");
			return 2;
		}
	}
	snprintf(dir, sizeof(dir), "%s/rewind-bench-index-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(store, sizeof(store), "%s/store", dir);
	if ((rc = ix_store_init(store)) || (rc = ix_open(&ix, store, IX_LOCK)) ||
	    (rc = ix_disk_create(ix, "bench", 64ull << 30, 4096, NULL, &d))) {
		fprintf(stderr, "setup: %s: %s\n", rw_strerror(rc), rw_err_msg());
		goto out;
	}

	/* 1. Indexing, at the target's load (this store is measured below),
	 * then, on a store of its own, at a third more. */
	struct irun at, heavy = { 0 };
	if ((rc = index_run(ix, &d, nver, fixed, offered, &st, &at)))
		goto fail;
	if (!fixed && heavy_load) {
		char hstore[4300];
		struct ix *hix = NULL;
		struct ix_disk hd;
		snprintf(hstore, sizeof(hstore), "%s/heavy", dir);
		if ((rc = ix_store_init(hstore)) || (rc = ix_open(&hix, hstore, IX_LOCK)) ||
		    (rc = ix_disk_create(hix, "bench", 64ull << 30, 4096, NULL, &hd)) ||
		    (rc = index_run(hix, &hd, nver, false, offered * 4 / 3, &st, &heavy))) {
			ix_close(hix);
			goto fail;
		}
		ix_close(hix);
		rmrf(hstore);
	}
	const uint64_t nblocks = 16ull << 20;
	double idx_rate = heavy.batches ? heavy.rate : at.rate;

	/* 2. Lookups. */
	uint64_t hits = 0, versions = 0;
	struct ix_version v[16];
	if ((rc = ix_read_begin(ix, &rd)))
		goto fail;
	uint64_t t0 = rw_mono_ns();
	uint64_t c0 = thread_cpu_ns();
	for (uint64_t i = 0; i < nlook; i++) {
		int n = ix_block_asof(rd, d.id, rnd(&st) % nblocks, 1 + rnd(&st) % nver, v, 16);
		if (n < 0) {
			rc = n;
			goto fail;
		}
		hits += n > 0;
		versions += (uint64_t)n;
	}
	double look_s = (double)(rw_mono_ns() - t0) / 1e9;
	double look_rate = (double)nlook / look_s;
	double look_cpu_rate = (double)nlook / ((double)(thread_cpu_ns() - c0) / 1e9);
	/* A restore's pattern: ascending blocks, one point in time. */
	uint64_t seq_hits = 0, S = nver / 2, nseq = nlook < nblocks ? nlook : nblocks;
	t0 = rw_mono_ns();
	for (uint64_t blk = 0; blk < nseq; blk++) {
		int n = ix_block_asof(rd, d.id, blk, S, v, 16);
		if (n < 0) {
			rc = n;
			goto fail;
		}
		seq_hits += n > 0;
	}
	double seq_rate = (double)nseq / ((double)(rw_mono_ns() - t0) / 1e9);
	ix_read_end(rd);
	rd = NULL;

	/* 3. Bytes per version. */
	ix_close(ix);
	ix = NULL;
	snprintf(p, sizeof(p), "%s/index/data.mdb", store);
	uint64_t fsz = file_size(p);
	double bpv = (double)fsz / (double)nver;
	/* Where the bytes go: pages per database, read with bare LMDB. */
	char breakdown[1024] = "";
	{
		MDB_env *env = NULL;
		MDB_txn *t = NULL;
		size_t off = 0;
		snprintf(p, sizeof(p), "%s/index", store);
		if (mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 16) == 0 &&
		    mdb_env_set_mapsize(env, 64ull << 30) == 0 &&
		    mdb_env_open(env, p, MDB_RDONLY, 0644) == 0 &&
		    mdb_txn_begin(env, NULL, MDB_RDONLY, &t) == 0) {
			static const char *const dbs[] = { "versions", "vmap", "time", "segments", "disks" };
			MDB_envinfo ei;
			MDB_stat ms;
			uint64_t used = 0;
			for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
				MDB_dbi dbi;
				if (mdb_dbi_open(t, dbs[i], 0, &dbi) || mdb_stat(t, dbi, &ms))
					continue;
				uint64_t pages = ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
				used += pages;
				off += (size_t)snprintf(breakdown + off, sizeof(breakdown) - off,
					"  %-9s %9llu pages %7.1f bytes/version (depth %u, %llu entries)\n",
					dbs[i], (unsigned long long)pages,
					(double)pages * ms.ms_psize / (double)nver, ms.ms_depth,
					(unsigned long long)ms.ms_entries);
			}
			mdb_env_info(env, &ei);
			mdb_env_stat(env, &ms);
			uint64_t total = ei.me_last_pgno + 1;
			snprintf(breakdown + off, sizeof(breakdown) - off,
				 "  other     %9llu pages %7.1f bytes/version (free pages kept for reuse, meta, catalog)\n",
				 (unsigned long long)(total - used),
				 (double)(total - used) * ms.ms_psize / (double)nver);
		}
		if (t)
			mdb_txn_abort(t);
		if (env)
			mdb_env_close(env);
	}

	/* 4. Layout comparison. */
	struct layout_result one_rand = { 0, 0 }, dup_rand = { 0, 0 }, one_hot = { 0, 0 }, dup_hot = { 0, 0 };
	if (ncmp) {
		snprintf(p, sizeof(p), "%s/layout", dir);
		if ((rc = layout_run(p, 0, ncmp, nblocks, &one_rand)) ||
		    (rc = layout_run(p, 1, ncmp, nblocks, &dup_rand)) ||
		    (rc = layout_run(p, 0, ncmp, 65536, &one_hot)) ||
		    (rc = layout_run(p, 1, ncmp, 65536, &dup_hot))) {
			fprintf(stderr, "layout comparison: %s\n", mdb_strerror(rc));
			goto out;
		}
	}

	printf("\nrewind index benchmark: %llu single-block versions, random blocks of a 64 GiB disk\n"
	       "(%s; %s)\n",
	       (unsigned long long)nver,
	       fixed ? "fixed random batches of 256..4096 records"
		     : "batches formed as capture forms them: everything written while the previous commit ran",
	       nosync ? "MDB_NOSYNC: NOT the shipped setting, measurement only"
		      : "durable commits, MDB_NOMETASYNC");
	if (!fixed)
		printf("  at %.0f versions/s offered: %llu batches of %llu..%llu records, longest commit (the index's lag) %.2f s,\n"
		       "    %.0f versions/s indexed (at most the offered load, by construction)\n",
		       offered, (unsigned long long)at.batches,
		       (unsigned long long)at.bmin, (unsigned long long)at.bmax,
		       (double)at.longest_ns / 1e9, at.rate);
	if (heavy.batches)
		printf("  at %.0f versions/s offered (a third more): %llu batches of %llu..%llu records, longest commit %.2f s\n",
		       offered * 4 / 3, (unsigned long long)heavy.batches,
		       (unsigned long long)heavy.bmin, (unsigned long long)heavy.bmax,
		       (double)heavy.longest_ns / 1e9);
	printf("\n%-34s %14s %14s  %s\n", "figure", "measured", "target", "result");
	printf("%-34s %14.0f %14s  %s\n",
	       heavy.batches ? "index rate (versions/s, 400k load)" : "index rate (versions/s)",
	       idx_rate, ">= 300000", idx_rate >= 300000 ? "PASS" : "MISS");
	printf("%-34s %14.0f %14s  %s\n", "as-of lookups (lookups/s, 1 thr)", look_rate,
	       ">= 1000000", look_rate >= 1000000 ? "PASS" : "MISS");
	printf("%-34s %14.1f %14s  %s\n", "index bytes per version", bpv, "<= 64",
	       bpv <= 64 ? "PASS" : "MISS");
	printf("\n  lookups per second of the thread's CPU time: %.0f (the wall-clock rate above\n"
	       "  is lower when other processes share the cores)\n", look_cpu_rate);
	printf("  in a restore's order (blocks 0..%llu ascending, as-of seq %llu): %.0f lookups/s, %.1f%% hit\n",
	       (unsigned long long)nseq - 1, (unsigned long long)S, seq_rate,
	       100.0 * (double)seq_hits / (double)nseq);
	printf("\n  lookups: %.1f%% hit a version, %.2f versions/hit;\n"
	       "  data.mdb %llu bytes (the store indexed at the target's load)\n", 100.0 * (double)hits / (double)nlook,
	       hits ? (double)versions / (double)hits : 0.0, (unsigned long long)fsz);
	printf("%s", breakdown);
	if (ncmp) {
		printf("\nversions table layout, bare LMDB, %llu versions (bytes/version incl. B-tree overhead):\n",
		       (unsigned long long)ncmp);
		printf("  %-40s %12s %12s\n", "layout / workload", "versions/s", "bytes/ver");
		printf("  %-40s %12.0f %12.1f\n", "one key per version, 16M random blocks", one_rand.rate, one_rand.bytes_per);
		printf("  %-40s %12.0f %12.1f\n", "MDB_DUPSORT,         16M random blocks", dup_rand.rate, dup_rand.bytes_per);
		printf("  %-40s %12.0f %12.1f\n", "one key per version, 64K hot blocks", one_hot.rate, one_hot.bytes_per);
		printf("  %-40s %12.0f %12.1f\n", "MDB_DUPSORT,         64K hot blocks", dup_hot.rate, dup_hot.bytes_per);
	}
	status = 0;
	goto out;
fail:
	fprintf(stderr, "bench_index: %s: %s\n", rw_strerror(rc), rw_err_msg());
out:
	ix_read_end(rd);
	ix_close(ix);
	rmrf(dir);
	return status;
}
