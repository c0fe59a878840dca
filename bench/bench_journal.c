/*
 * bench_journal.c — how fast the journal takes a stream of writes.
 *
 * What is measured: the wall time from jr_writer_open() to the return of
 * jr_writer_close() while one thread appends TOTAL logical bytes as
 * JR_WRITE records of RECSIZE bytes and calls jr_writer_flush() after every
 * FLUSH logical bytes — the shape of an NBD client that writes sequentially
 * and issues a FLUSH every megabyte.  Throughput is logical (client) bytes
 * per second, so compression that saves I/O shows up as speed, and the
 * stored size gives the compression ratio.  The time spent inside append,
 * flush and close, and the CPU time of the process, are reported so a miss
 * can be attributed (compression and CRC are CPU; flush is I/O + fdatasync),
 * and so is the time the appending thread sat runnable without a CPU,
 * which on a shared machine is the usual reason for a slow run.
 *
 * How: the data file (bench/journal.sh builds an ext4 image of part of /usr
 * followed by random bytes) is read into memory before the clock starts, so
 * reading it is not measured; the records walk through it in order and wrap
 * around, and each record's disk offset is its position in the data, as if
 * the data were the disk being written.  With -v the journal is read back
 * afterwards (outside the timed region) and every payload is compared with
 * the data, so a fast but wrong journal cannot pass.
 *
 * With -t N, N threads append (each its own zstd context) and each flushes
 * after every FLUSH bytes of its own, as concurrent NBD requests would; the
 * flush count stays the same and group commit may merge fdatasyncs.  The
 * issue's figure is the single-threaded one; -t shows what parallel
 * compression buys on this machine.
 *
 * Mode zstd (-m zstd) skips the journal and runs ZSTD_compressCCtx on the
 * same records at the same level, single-threaded: the CPU ceiling that
 * compression alone puts on the journal, used to choose
 * JR_ZSTD_LEVEL_DEFAULT.  Like the journal, a record whose frame does not
 * save at least 1/16 is counted at its raw size.
 *
 * Output is one JSON object on stdout, parsed by bench/journal.sh.
 *
 * Rejected alternative: generating the records in the loop (random or
 * patterned bytes).  Synthetic data compresses either perfectly or not at
 * all, so it says nothing about the ratio or the cost of real disk blocks.
 */
#include "common/rw.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

struct bench {
	const char *mode;      /* "journal" or "zstd" */
	const char *dir;
	const char *data_path;
	uint8_t *data;
	size_t data_len;       /* rounded down to a multiple of rec */
	uint32_t rec;
	uint64_t total;
	uint64_t flush_every;  /* 0 = only at close */
	int level;             /* 0 = no compression */
	enum jr_backend backend;
	const char *backend_name;
	uint64_t batch_bytes;  /* 0 = writer default */
	uint64_t segment_bytes;/* 0 = writer default */
	int verify;
	unsigned threads;      /* appending threads, 1 = the shape */
	unsigned pool;         /* writer compression workers (-p), 0 = none */
	int compress_behind;   /* -c: a flush compresses queued records
				* itself (raw_when_behind off) */
};

struct result {
	uint64_t elapsed_ns;
	uint64_t append_ns;
	uint64_t flush_ns;
	uint64_t close_ns;
	double user_s;
	double sys_s;
	uint64_t runq_ns;     /* main thread runnable but waiting for a CPU */
	uint64_t records;
	uint64_t flushes;
	uint64_t logical;
	uint64_t stored;
	uint64_t file_bytes;
	uint64_t syncs;
	int uring;
	uint64_t verified;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_journal [-m journal|zstd] [-v] [-t threads] [-p workers]\n"
		"                     [-c] [-B batch_bytes] [-S segment_bytes] [--]\n"
		"                     DIR DATA RECSIZE TOTAL FLUSH LEVEL BACKEND\n"
		"  DIR      journal directory (created; should be empty)\n"
		"  DATA     file whose contents the records carry, looped over\n"
		"  RECSIZE  record size (e.g. 4096, 64K)\n"
		"  TOTAL    logical bytes to append (e.g. 1G)\n"
		"  FLUSH    jr_writer_flush every FLUSH logical bytes (0 = at close)\n"
		"  LEVEL    zstd level, 0 = no compression\n"
		"  BACKEND  uring | sync | auto\n"
		"  -c       with -p: a flush compresses the records no worker has\n"
		"           started instead of storing them raw\n");
}

static int die(const char *what, int err)
{
	const char *detail = rw_err_msg();

	fprintf(stderr, "bench_journal: %s: %s\n", what,
		detail && *detail ? detail : rw_strerror(err));
	return 1;
}

/*
 * Nanoseconds the calling thread has spent runnable but waiting for a CPU
 * (second field of /proc/thread-self/schedstat), or 0 when unavailable.
 * On a shared machine this separates "the journal is slow" from "the
 * journal did not get a CPU".
 */
static uint64_t runq_wait_ns(void)
{
	unsigned long long run = 0, wait = 0;
	FILE *f = fopen("/proc/thread-self/schedstat", "re");

	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	fclose(f);
	return wait;
}

static double cpu_s(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Reads the whole file into a malloc'ed buffer.  0 or -errno. */
static int load_data(struct bench *b)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, err = 0;

	fd = open(b->data_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rw_err_set(-errno, "cannot open '%s'", b->data_path);
	if (fstat(fd, &st) < 0) {
		err = rw_err_set(-errno, "cannot stat '%s'", b->data_path);
		goto out;
	}
	if ((uint64_t)st.st_size < b->rec) {
		err = rw_err_set(-EINVAL, "'%s' is smaller than one record",
				 b->data_path);
		goto out;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got,
				  (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = rw_err_set(-errno, "cannot read '%s'", b->data_path);
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	b->data = buf;
	b->data_len = got - got % b->rec;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return err;
}

/* The data offset of record i: records walk the data in order and wrap. */
static inline uint64_t rec_pos(const struct bench *b, uint64_t i)
{
	return (i * b->rec) % b->data_len;
}

static int run_zstd(const struct bench *b, struct result *r)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(b->rec);
	uint8_t *dst = malloc(cap);
	uint64_t n = b->total / b->rec, t0;
	struct rusage ru0, ru1;
	int err = 0;

	if (!cc || !dst) {
		err = -ENOMEM;
		goto out;
	}
	getrusage(RUSAGE_SELF, &ru0);
	r->runq_ns = runq_wait_ns();
	t0 = rw_mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		size_t c = ZSTD_compressCCtx(cc, dst, cap, b->data + rec_pos(b, i),
					     b->rec, b->level);
		if (ZSTD_isError(c)) {
			err = rw_err_set(-EINVAL, "zstd level %d: %s", b->level,
					 ZSTD_getErrorName(c));
			goto out;
		}
		/* Mirrors jr_cctx_compress(): keep the frame if it saves 1/16. */
		r->stored += c <= b->rec - b->rec / 16 ? c : b->rec;
		r->logical += b->rec;
		r->records++;
	}
	r->elapsed_ns = rw_mono_ns() - t0;
	r->runq_ns = runq_wait_ns() - r->runq_ns;
	getrusage(RUSAGE_SELF, &ru1);
	r->append_ns = r->elapsed_ns;
	r->user_s = cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime);
	r->sys_s = cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime);
out:
	free(dst);
	ZSTD_freeCCtx(cc);
	return err;
}

/*
 * Reads the journal back and compares every payload with the data at the
 * record's offset.  One thread appends in data order, so then the offsets
 * must also come in order; with several, they interleave.
 */
static int verify_journal(const struct bench *b, struct result *r)
{
	struct jr_reader *rd = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	uint64_t i = 0;
	int ret;

	ret = jr_reader_open(&rd, b->dir, 0);
	if (ret < 0)
		return ret;
	while ((ret = jr_reader_next(rd, &rec, &loc, &payload)) == 1) {
		uint64_t want = b->threads == 1 ? rec_pos(b, i) : rec.offset;

		if (rec.type != JR_WRITE || rec.length != b->rec ||
		    rec.offset != want || want % b->rec != 0 ||
		    want >= b->data_len || !payload ||
		    memcmp(payload, b->data + want, b->rec) != 0) {
			ret = rw_err_set(RW_ECORRUPT,
					 "record %" PRIu64 " (seq %" PRIu64 ") does not "
					 "match the data at offset %" PRIu64,
					 i, rec.seq, want);
			goto out;
		}
		i++;
	}
	if (ret < 0)
		goto out;
	if (i != r->records) {
		ret = rw_err_set(RW_ECORRUPT, "read back %" PRIu64 " records of %"
				 PRIu64, i, r->records);
		goto out;
	}
	r->verified = i;
	ret = 0;
out:
	jr_reader_close(rd);
	return ret;
}

/*
 * One appending thread: records tid, tid + nthreads, ... with its own
 * compression context, flushing after every flush_every bytes of its own
 * appends, so the number of flush calls stays TOTAL / FLUSH whatever the
 * thread count (concurrent flushes share an fdatasync: group commit).
 */
struct worker {
	const struct bench *b;
	struct jr_writer *w;
	unsigned tid;
	pthread_t th;
	uint64_t append_ns;
	uint64_t flush_ns;
	uint64_t runq_ns;
	uint64_t records;
	uint64_t flushes;
	int ret;
};

static void *worker_run(void *arg)
{
	struct worker *k = arg;
	const struct bench *b = k->b;
	struct jr_cctx *cc = NULL;
	uint64_t n = b->total / b->rec, since_flush = 0, t;
	int ret = 0;

	if (b->level != 0) {
		ret = jr_cctx_new(&cc, b->level);
		if (ret < 0)
			goto out;
	}
	k->runq_ns = runq_wait_ns();
	for (uint64_t i = k->tid; i < n; i += b->threads) {
		uint64_t pos = rec_pos(b, i);
		struct jr_append a = {
			.type = JR_WRITE,
			.offset = pos,
			.length = b->rec,
			.data = b->data + pos,
		};

		t = rw_mono_ns();
		ret = jr_writer_append(k->w, &a, cc, NULL);
		k->append_ns += rw_mono_ns() - t;
		if (ret < 0)
			goto out;
		k->records++;
		since_flush += b->rec;
		if (b->flush_every && since_flush >= b->flush_every) {
			t = rw_mono_ns();
			ret = jr_writer_flush(k->w);
			k->flush_ns += rw_mono_ns() - t;
			if (ret < 0)
				goto out;
			k->flushes++;
			since_flush = 0;
		}
	}
out:
	k->runq_ns = runq_wait_ns() - k->runq_ns;
	jr_cctx_free(cc);
	k->ret = ret;
	return NULL;
}

static int run_journal(const struct bench *b, struct result *r)
{
	struct jr_clock *clock = NULL;
	struct jr_writer *w = NULL;
	struct jr_writer_opts opts;
	struct jr_writer_stats st;
	struct jr_seginfo *segs = NULL;
	struct worker *ks = NULL;
	struct rusage ru0, ru1;
	unsigned started = 0;
	uint64_t t0, t;
	int ret, nseg;

	ret = jr_clock_new(&clock, 1, 0);
	if (ret < 0)
		return ret;
	ks = calloc(b->threads, sizeof(*ks));
	if (!ks) {
		ret = -ENOMEM;
		goto out;
	}
	jr_writer_opts_default(&opts);
	opts.backend = b->backend;
	if (b->batch_bytes)
		opts.batch_bytes = (size_t)b->batch_bytes;
	if (b->segment_bytes)
		opts.segment_bytes = b->segment_bytes;
	opts.compress_threads = b->pool;
	opts.raw_when_behind = !b->compress_behind;

	getrusage(RUSAGE_SELF, &ru0);
	t0 = rw_mono_ns();
	ret = jr_writer_open(&w, b->dir, &opts, clock, NULL);
	if (ret < 0)
		goto out;
	for (unsigned i = 0; i < b->threads; i++) {
		ks[i] = (struct worker){ .b = b, .w = w, .tid = i };
		if (b->threads == 1) {
			worker_run(&ks[i]);
			started++;
			continue;
		}
		ret = -pthread_create(&ks[i].th, NULL, worker_run, &ks[i]);
		if (ret < 0)
			break;
		started++;
	}
	if (b->threads > 1)
		for (unsigned i = 0; i < started; i++)
			pthread_join(ks[i].th, NULL);
	for (unsigned i = 0; i < started; i++) {
		r->append_ns += ks[i].append_ns;
		r->flush_ns += ks[i].flush_ns;
		r->runq_ns += ks[i].runq_ns;
		r->records += ks[i].records;
		r->flushes += ks[i].flushes;
		if (ret == 0 && ks[i].ret < 0)
			ret = ks[i].ret;
	}
	if (ret < 0)
		goto out;
	jr_writer_stats(w, &st);
	t = rw_mono_ns();
	ret = jr_writer_close(w);
	w = NULL;
	r->close_ns = rw_mono_ns() - t;
	r->elapsed_ns = rw_mono_ns() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	if (ret < 0)
		goto out;
	r->user_s = cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime);
	r->sys_s = cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime);
	r->logical = st.logical_bytes;
	r->stored = st.stored_bytes;
	/* close flushes once more; count it when there was anything left. */
	r->syncs = st.syncs + (st.durable_seq != st.last_seq);
	r->uring = st.uring;
	if (r->logical != (uint64_t)b->rec * r->records) {
		ret = rw_err_set(RW_ECORRUPT, "writer counted %" PRIu64 " logical "
				 "bytes for %" PRIu64 " records", r->logical,
				 r->records);
		goto out;
	}

	nseg = jr_segments_list(b->dir, &segs);
	if (nseg < 0) {
		ret = nseg;
		goto out;
	}
	for (int i = 0; i < nseg; i++)
		r->file_bytes += segs[i].bytes;
	if (b->verify)
		ret = verify_journal(b, r);
out:
	free(segs);
	if (w)
		jr_writer_close(w);
	free(ks);
	jr_clock_free(clock);
	return ret;
}

/* True when jr_cctx_new() takes the level. */
static bool level_accepted(int level)
{
	struct jr_cctx *cc = NULL;
	int ret = jr_cctx_new(&cc, level);

	jr_cctx_free(cc);
	return ret == 0;
}

static int parse_u64(const char *s, const char *what, uint64_t *out)
{
	int ret = rw_parse_size(s, out);

	if (ret < 0)
		fprintf(stderr, "bench_journal: bad %s '%s'\n", what, s);
	return ret;
}

static void print_result(const struct bench *b, const struct result *r)
{
	double secs = (double)r->elapsed_ns / 1e9;
	double mib_s = secs > 0 ? (double)r->logical / secs / 1048576.0 : 0;
	double ratio = r->stored ? (double)r->logical / (double)r->stored : 0;

	printf("{\"mode\":\"%s\",\"record\":%u,\"total\":%" PRIu64
	       ",\"flush_every\":%" PRIu64 ",\"threads\":%u,\"pool\":%u,\"level\":%d,\"backend\":\"%s\""
	       ",\"uring\":%s,\"seconds\":%.4f,\"mib_s\":%.1f"
	       ",\"logical_bytes\":%" PRIu64 ",\"stored_bytes\":%" PRIu64
	       ",\"file_bytes\":%" PRIu64 ",\"ratio\":%.3f,\"records\":%" PRIu64
	       ",\"flushes\":%" PRIu64 ",\"syncs\":%" PRIu64
	       ",\"append_s\":%.4f,\"flush_s\":%.4f,\"close_s\":%.4f"
	       ",\"user_s\":%.3f,\"sys_s\":%.3f,\"runq_s\":%.3f"
	       ",\"verified\":%" PRIu64 "}\n",
	       b->mode, b->rec, b->total, b->flush_every, b->threads, b->pool,
	       b->level,
	       b->backend_name, r->uring ? "true" : "false", secs, mib_s,
	       r->logical, r->stored, r->file_bytes, ratio, r->records,
	       r->flushes, r->syncs, (double)r->append_ns / 1e9,
	       (double)r->flush_ns / 1e9, (double)r->close_ns / 1e9,
	       r->user_s, r->sys_s, (double)r->runq_ns / 1e9, r->verified);
}

int main(int argc, char **argv)
{
	struct bench b = { .mode = "journal", .threads = 1 };
	struct result r = { 0 };
	uint64_t v;
	char *end;
	long lvl;
	int opt, ret;

	while ((opt = getopt(argc, argv, "+m:vt:p:B:S:ch")) != -1) {
		switch (opt) {
		case 'c':
			b.compress_behind = 1;
			break;
		case 'm':
			b.mode = optarg;
			break;
		case 'v':
			b.verify = 1;
			break;
		case 't':
			if (parse_u64(optarg, "thread count", &v) < 0)
				return 2;
			if (v < 1 || v > 64) {
				fprintf(stderr, "bench_journal: threads must be 1..64\n");
				return 2;
			}
			b.threads = (unsigned)v;
			break;
		case 'p':
			if (parse_u64(optarg, "compression threads", &v) < 0)
				return 2;
			if (v > JR_MAX_COMPRESS_THREADS) {
				fprintf(stderr, "bench_journal: at most %u compression "
					"threads\n", JR_MAX_COMPRESS_THREADS);
				return 2;
			}
			b.pool = (unsigned)v;
			break;
		case 'B':
			if (parse_u64(optarg, "batch size", &b.batch_bytes) < 0)
				return 2;
			break;
		case 'S':
			if (parse_u64(optarg, "segment size", &b.segment_bytes) < 0)
				return 2;
			break;
		default:
			usage();
			return opt == 'h' ? 0 : 2;
		}
	}
	if (argc - optind != 7 ||
	    (strcmp(b.mode, "journal") != 0 && strcmp(b.mode, "zstd") != 0)) {
		usage();
		return 2;
	}
	b.dir = argv[optind];
	b.data_path = argv[optind + 1];
	if (parse_u64(argv[optind + 2], "record size", &v) < 0)
		return 2;
	if (v == 0 || v > JR_MAX_WRITE) {
		fprintf(stderr, "bench_journal: record size must be 1..%u\n",
			JR_MAX_WRITE);
		return 2;
	}
	b.rec = (uint32_t)v;
	if (parse_u64(argv[optind + 3], "total", &b.total) < 0 ||
	    parse_u64(argv[optind + 4], "flush cadence", &b.flush_every) < 0)
		return 2;
	errno = 0;
	lvl = strtol(argv[optind + 5], &end, 10);
	if (errno || *end || end == argv[optind + 5] || lvl < -131072 ||
	    lvl > 22) {
		fprintf(stderr, "bench_journal: bad level '%s'\n", argv[optind + 5]);
		return 2;
	}
	b.level = (int)lvl;
	b.backend_name = argv[optind + 6];
	if (strcmp(b.backend_name, "uring") == 0)
		b.backend = JR_BACKEND_URING;
	else if (strcmp(b.backend_name, "sync") == 0)
		b.backend = JR_BACKEND_SYNC;
	else if (strcmp(b.backend_name, "auto") == 0)
		b.backend = JR_BACKEND_AUTO;
	else {
		usage();
		return 2;
	}

	ret = load_data(&b);
	if (ret < 0)
		return die("cannot load the data", ret);
	if (strcmp(b.mode, "zstd") == 0) {
		if (b.level == 0) {
			fprintf(stderr, "bench_journal: -m zstd needs a level\n");
			ret = 2;
			goto out;
		}
		ret = run_zstd(&b, &r);
	} else if (b.level != 0 && !level_accepted(b.level)) {
		/* Exit 3 tells journal.sh the API refuses the level. */
		printf("{\"mode\":\"journal\",\"level\":%d,\"rejected\":true}\n",
		       b.level);
		ret = 3;
		goto out;
	} else {
		ret = run_journal(&b, &r);
	}
	if (ret < 0) {
		ret = die(strcmp(b.mode, "zstd") == 0 ? "zstd" : b.dir, ret);
		goto out;
	}
	print_result(&b, &r);
	ret = 0;
out:
	free(b.data);
	return ret;
}
