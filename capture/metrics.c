/*
 * metrics.c — what `rewind stats` and GET /metrics report: figures about
 * capture, journal, index and compaction; the Prometheus text format
 * (0.0.4); the HTTP endpoint of `rewind serve --metrics HOST:PORT`; and
 * the threshold watcher (--lag-warn, --lag-crit, --history-warn).
 *
 * How: cap_metrics_collect() builds a struct cap_store_figures from the
 * store (segment file sizes, allocated bytes of base.img/head.img, the
 * index's segment table and horizon, STORE/compact.stats, statvfs) and,
 * when a server is running in this process, from its live counters
 * (jr_writer_stats, the atomics of struct cap_disk).  Everything is read
 * on demand: a scrape costs a few stat() calls and one LMDB read
 * transaction per disk, nothing is cached, so a figure is never stale.
 * The formatter turns figures into text; the same figures also feed
 * `rewind stats` (cli/cmd_stats.c), so both always agree.
 *
 * The endpoint lives in the server (started by cap_server_open when
 * opts.metrics_addr is set) rather than in cli/: it needs the disks'
 * private counters, and stopping it belongs to the server's own shutdown
 * order (before the disks go away).  HTTP is libmicrohttpd with its
 * internal polling thread on a socket we bind ourselves (so a busy port
 * or a non-loopback address is reported like --listen's errors); header
 * size is bounded by MHD's connection memory limit (431 beyond it).
 *
 * The watcher thread re-evaluates health every half second and logs each
 * change of a disk's state (warn, crit, back to ok), so a threshold
 * crossing is an event in the log, never silent.
 *
 * Rejected: a hand-written HTTP parser (the brief forbids it, and the
 * edge cases — pipelining, huge headers, slow clients — are what MHD is
 * for); pushing figures from the write path into a shared block (costs
 * every write; the atomics we read already exist or are one add each).
 */
#include "capture/cap-int.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/*
 * libmicrohttpd is opened with dlopen when a metrics endpoint is started,
 * not linked: with GnuTLS and its dependencies it cost every start of the
 * rewind binary ~2 ms of dynamic loading and library constructors, paid by
 * every command (a `rewind rollback` of the last minute included) and
 * used only by `rewind serve --metrics`.
 */
#define MH_FUNCS(X) \
	X(MHD_add_response_header) \
	X(MHD_create_response_from_buffer) \
	X(MHD_destroy_response) \
	X(MHD_queue_response) \
	X(MHD_start_daemon) \
	X(MHD_stop_daemon)

static struct {
#define X(f) __typeof__(&f) f;
	MH_FUNCS(X)
#undef X
} mh;
static pthread_once_t mh_once = PTHREAD_ONCE_INIT;
static char mh_error[512];

static void mh_load(void)
{
	static const struct rw_dlsym syms[] = {
#define X(f) { #f, (void **)&mh.f },
		MH_FUNCS(X)
#undef X
	};

	rw_dl_load("libmicrohttpd.so.12", syms, sizeof(syms) / sizeof(syms[0]),
		   mh_error, sizeof(mh_error));
}

/* Loads libmicrohttpd once.  0, or RW_EFAILED saying why it cannot be used. */
static int mh_ready(void)
{
	pthread_once(&mh_once, mh_load);
	if (mh_error[0])
		return rw_err_set(RW_EFAILED, "cannot load libmicrohttpd: %s",
				  mh_error);
	return 0;
}

const double cap_flush_buckets[CAP_FLUSH_NBUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
};

void cap_metrics_flush_observe(struct cap_disk *d, uint64_t ns)
{
	double s = (double)ns / 1e9;
	size_t i = 0;

	while (i < CAP_FLUSH_NBUCKETS && s > cap_flush_buckets[i])
		i++;
	atomic_fetch_add(&d->flush_hist[i], 1);
	atomic_fetch_add(&d->flush_ns, ns);
}

/* ------------------------------------------------------------ exposition */

static bool pb_reserve(struct cap_prom *p, size_t more)
{
	if (p->err)
		return false;
	if (p->len + more + 1 <= p->cap)
		return true;
	size_t n = p->cap ? p->cap : 4096;
	while (n < p->len + more + 1)
		n *= 2;
	char *b = realloc(p->buf, n);
	if (!b) {
		p->err = -ENOMEM;
		return false;
	}
	p->buf = b;
	p->cap = n;
	return true;
}

__attribute__((format(printf, 2, 3)))
static void pb_printf(struct cap_prom *p, const char *fmt, ...)
{
	va_list ap;
	char tmp[256];

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || !pb_reserve(p, (size_t)n))
		return;
	if ((size_t)n < sizeof(tmp)) {
		memcpy(p->buf + p->len, tmp, (size_t)n + 1);
	} else {
		va_start(ap, fmt);
		vsnprintf(p->buf + p->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	p->len += (size_t)n;
}

static void pb_putc(struct cap_prom *p, char c)
{
	if (!pb_reserve(p, 1))
		return;
	p->buf[p->len++] = c;
	p->buf[p->len] = '\0';
}

/* Escapes \ and newline (and " in label values). */
static void pb_escaped(struct cap_prom *p, const char *s, bool label)
{
	for (; *s; s++) {
		if (*s == '\\')
			pb_printf(p, "\\\\");
		else if (*s == '\n')
			pb_printf(p, "\\n");
		else if (*s == '"' && label)
			pb_printf(p, "\\\"");
		else
			pb_putc(p, *s);
	}
}

static void pb_labels(struct cap_prom *p, const char *const *labels,
		      const char *k2, const char *v2)
{
	bool any = false;

	for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
		pb_printf(p, "%s%s=\"", any ? "," : "{", labels[i]);
		pb_escaped(p, labels[i + 1], true);
		pb_putc(p, '"');
		any = true;
	}
	if (k2) {
		pb_printf(p, "%s%s=\"", any ? "," : "{", k2);
		pb_escaped(p, v2, true);
		pb_putc(p, '"');
		any = true;
	}
	if (any)
		pb_putc(p, '}');
}

static void pb_value(struct cap_prom *p, double v)
{
	if (isnan(v))
		pb_printf(p, " NaN\n");
	else if (isinf(v))
		pb_printf(p, " %s\n", v > 0 ? "+Inf" : "-Inf");
	else if (fabs(v) < 9007199254740992.0 && (double)(int64_t)v == v)
		pb_printf(p, " %" PRId64 "\n", (int64_t)v);
	else
		pb_printf(p, " %.17g\n", v);
}

void cap_prom_family(struct cap_prom *p, const char *name, const char *type,
		     const char *help)
{
	pb_printf(p, "# HELP %s ", name);
	pb_escaped(p, help, false);
	pb_printf(p, "\n# TYPE %s %s\n", name, type);
}

void cap_prom_sample(struct cap_prom *p, const char *name,
		     const char *const *labels, double v)
{
	pb_printf(p, "%s", name);
	pb_labels(p, labels, NULL, NULL);
	pb_value(p, v);
}

void cap_prom_sample_u64(struct cap_prom *p, const char *name,
			 const char *const *labels, uint64_t v)
{
	pb_printf(p, "%s", name);
	pb_labels(p, labels, NULL, NULL);
	pb_printf(p, " %" PRIu64 "\n", v);
}

void cap_prom_histogram(struct cap_prom *p, const char *name,
			const char *const *labels, const double *bounds,
			const uint64_t *counts, size_t nbounds, double sum)
{
	uint64_t cum = 0;
	char le[64];

	for (size_t i = 0; i <= nbounds; i++) {
		cum += counts[i];
		if (i < nbounds)
			snprintf(le, sizeof(le), "%.17g", bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		/* %.17g spells 0.0005 as 0.00050000000000000001: prefer the
		 * shortest form that reads back as the same double */
		for (int prec = 1; i < nbounds && prec <= 17; prec++) {
			char t[64];
			snprintf(t, sizeof(t), "%.*g", prec, bounds[i]);
			if (strtod(t, NULL) == bounds[i] && !strchr(t, 'e')) {
				memcpy(le, t, sizeof(le));
				break;
			}
		}
		pb_printf(p, "%s_bucket", name);
		pb_labels(p, labels, "le", le);
		pb_printf(p, " %" PRIu64 "\n", cum);
	}
	pb_printf(p, "%s_sum", name);
	pb_labels(p, labels, NULL, NULL);
	pb_value(p, sum);
	pb_printf(p, "%s_count", name);
	pb_labels(p, labels, NULL, NULL);
	pb_printf(p, " %" PRIu64 "\n", cum);
}

void cap_prom_free(struct cap_prom *p)
{
	if (!p)
		return;
	free(p->buf);
	memset(p, 0, sizeof(*p));
}

/* One per-disk family: where its value sits in struct cap_disk_figures. */
struct fam {
	const char *name, *type, *help;
	size_t off;
	char kind;          /* 'u' uint64_t, 'd' double */
	bool live;          /* only while a server runs */
};

#define U(f) offsetof(struct cap_disk_figures, f), 'u'
#define D(f) offsetof(struct cap_disk_figures, f), 'd'
static const struct fam fams[] = {
	{ "rewind_capture_lag_seconds", "gauge", "Age of the oldest acknowledged write not yet durable (0 when all are durable).", D(capture_lag_s), true },
	{ "rewind_journal_sealed_unsynced_segments", "gauge", "Journal segments sealed but not yet synced (synced by the next flush, or in the background at 16 or after 10 s).", U(sealed_unsynced), true },
	{ "rewind_index_lag_records", "gauge", "Journal records not yet in the index.", U(index_lag_records), false },
	{ "rewind_index_lag_seconds", "gauge", "How long records have been waiting for the index (0 when none waits).", D(index_lag_s), false },
	{ "rewind_journal_bytes", "gauge", "Sum of the sizes of the disk's journal segment files.", U(journal_bytes), false },
	{ "rewind_journal_records", "gauge", "Records in the disk's journal segment files.", U(journal_records), false },
	{ "rewind_journal_segments", "gauge", "Journal segment files of the disk.", U(journal_segments), false },
	{ "rewind_base_bytes", "gauge", "Bytes allocated on the filesystem by base.img.", U(base_bytes), false },
	{ "rewind_head_bytes", "gauge", "Bytes allocated on the filesystem by head.img.", U(head_bytes), false },
	{ "rewind_history_seconds", "gauge", "Now minus the oldest restorable time.", D(history_s), false },
	{ "rewind_oldest_restorable_timestamp_seconds", "gauge", "Oldest restorable time (horizon, or creation).", D(oldest_ts), false },
	{ "rewind_latest_timestamp_seconds", "gauge", "Newest restorable time (newest indexed record).", D(latest_ts), false },
	{ "rewind_compaction_last_success_timestamp_seconds", "gauge", "When compaction of the disk last succeeded (0 = never).", D(compaction_last_success_ts), false },
	{ "rewind_writes_total", "counter", "WRITE requests journaled since the server started.", U(writes), true },
	{ "rewind_write_bytes_total", "counter", "Bytes of WRITE requests journaled since the server started.", U(write_bytes), true },
	{ "rewind_flushes_total", "counter", "FLUSH requests since the server started.", U(flushes), true },
	{ "rewind_flushes_anticipated_total", "counter", "FLUSH requests whose writes were already durable when they came: the server synced right after the write, expecting the flush (a guest flushing after every write at queue depth 1).", U(flushes_anticipated), true },
	{ "rewind_zero_bytes_total", "counter", "Bytes of WRITE_ZEROES requests journaled since the server started.", U(zero_bytes), true },
	{ "rewind_trim_bytes_total", "counter", "Bytes of TRIM requests journaled since the server started.", U(trim_bytes), true },
	{ "rewind_journal_over_budget", "gauge", "1 while writes are refused with ENOSPC because the journal is over its budget (serve --max-journal with --over-budget refuse).", U(over_budget), true },
	{ "rewind_compression_ratio", "gauge", "Logical over stored payload bytes of WRITE records since the server started (1 when none).", D(compression_ratio), true },
	{ "rewind_health", "gauge", "Threshold state of the disk: 0 ok, 1 warning, 2 critical.", offsetof(struct cap_disk_figures, health), 'e', false },
};
#undef U
#undef D

static double fam_value(const struct fam *fm, const struct cap_disk_figures *d)
{
	const char *b = (const char *)d + fm->off;

	if (fm->kind == 'u')
		return (double)*(const uint64_t *)(const void *)b;
	if (fm->kind == 'e')
		return (double)*(const enum cap_health *)(const void *)b;
	return *(const double *)(const void *)b;
}

void cap_prom_figures(struct cap_prom *p, const struct cap_store_figures *f)
{
	cap_prom_family(p, "rewind_up", "gauge", "1 while the rewind server answers.");
	cap_prom_sample(p, "rewind_up", NULL, 1);
	cap_prom_family(p, "rewind_disk_free_bytes", "gauge",
			"Bytes available to the server on the store's filesystem (statvfs).");
	cap_prom_sample_u64(p, "rewind_disk_free_bytes", NULL, f->disk_free_bytes);
	for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++) {
		const struct fam *fm = &fams[k];
		bool any = false;
		for (size_t i = 0; i < f->ndisks; i++) {
			const struct cap_disk_figures *d = &f->disks[i];
			if (fm->live && !d->live)
				continue;
			if (!any)
				cap_prom_family(p, fm->name, fm->type, fm->help);
			any = true;
			const char *l[] = { "disk", d->name, NULL };
			if (fm->kind == 'u')
				cap_prom_sample_u64(p, fm->name, l,
						    *(const uint64_t *)(const void *)
						    ((const char *)d + fm->off));
			else
				cap_prom_sample(p, fm->name, l, fam_value(fm, d));
		}
	}
	bool any = false;
	for (size_t i = 0; i < f->ndisks; i++) {
		const struct cap_disk_figures *d = &f->disks[i];
		if (!d->have_retain)
			continue;
		if (!any)
			cap_prom_family(p, "rewind_compaction_backlog_bytes", "gauge",
					"Journal segment bytes whose newest record is older than the retention.");
		any = true;
		const char *l[] = { "disk", d->name, NULL };
		cap_prom_sample_u64(p, "rewind_compaction_backlog_bytes", l,
				    d->compaction_backlog_bytes);
	}
	if (f->ndisks)
		cap_prom_family(p, "rewind_compaction_runs_total", "counter",
				"Compaction runs of the disk by result (STORE/compact.stats).");
	for (size_t i = 0; i < f->ndisks; i++) {
		const struct cap_disk_figures *d = &f->disks[i];
		const char *ok[] = { "disk", d->name, "result", "ok", NULL };
		const char *ko[] = { "disk", d->name, "result", "failed", NULL };
		cap_prom_sample_u64(p, "rewind_compaction_runs_total", ok, d->compaction_ok);
		cap_prom_sample_u64(p, "rewind_compaction_runs_total", ko, d->compaction_failed);
	}
	if (f->live && f->ndisks) {
		cap_prom_family(p, "rewind_errors_total", "counter",
				"Failed requests by kind: journal (append, write or fdatasync) or head (head.img write).");
		for (size_t i = 0; i < f->ndisks; i++) {
			const struct cap_disk_figures *d = &f->disks[i];
			const char *j[] = { "disk", d->name, "kind", "journal", NULL };
			const char *h[] = { "disk", d->name, "kind", "head", NULL };
			cap_prom_sample_u64(p, "rewind_errors_total", j, d->errors_journal);
			cap_prom_sample_u64(p, "rewind_errors_total", h, d->errors_head);
		}
		cap_prom_family(p, "rewind_flush_duration_seconds", "histogram",
				"Time to answer a FLUSH (marker append and fdatasync).");
		for (size_t i = 0; i < f->ndisks; i++) {
			const struct cap_disk_figures *d = &f->disks[i];
			const char *l[] = { "disk", d->name, NULL };
			cap_prom_histogram(p, "rewind_flush_duration_seconds", l,
					   cap_flush_buckets, d->flush_buckets,
					   CAP_FLUSH_NBUCKETS, d->flush_sum_s);
		}
	}
}

/* ------------------------------------------------------------ collection */

static uint64_t allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512u;
}

/* Counts journal records after seq `after` (no server runs: headers). */
static int unindexed_tail(const char *dir, uint64_t after, uint64_t *n,
			  uint64_t *oldest_ts)
{
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *pl;
	int err;

	*n = 0;
	*oldest_ts = 0;
	if ((err = jr_reader_open(&r, dir, JR_READ_HEADERS)))
		return err;
	err = jr_reader_seek(r, after + 1);
	while (!err && (err = jr_reader_next(r, &rec, &loc, &pl)) == 1) {
		if (rec.seq <= after)
			continue;
		if (!*n)
			*oldest_ts = rec.ts_ns;
		(*n)++;
		err = 0;
	}
	jr_reader_close(r);
	return err < 0 ? err : 0;
}

struct cstat {
	char name[72];
	uint64_t last_ok_ns, ok, failed;
};

/* Reads STORE/compact.stats: "NAME LAST_SUCCESS_NS OK FAILED" lines. */
static size_t compact_stats_read(const char *store, struct cstat *out, size_t max)
{
	char path[4096], line[256];
	size_t n = 0;
	FILE *f;

	if ((size_t)snprintf(path, sizeof(path), "%s/compact.stats", store) >= sizeof(path))
		return 0;
	if (!(f = fopen(path, "re")))
		return 0;
	while (n < max && fgets(line, sizeof(line), f)) {
		struct cstat c = { 0 };
		if (line[0] == '#')
			continue;
		if (sscanf(line, "%71s %" SCNu64 " %" SCNu64 " %" SCNu64, c.name,
			   &c.last_ok_ns, &c.ok, &c.failed) == 4)
			out[n++] = c;
	}
	fclose(f);
	return n;
}

int cap_compact_stats_record(const char *store_dir, const char *name, bool ok,
			     uint64_t now_ns)
{
	enum { MAXC = 1024 };
	char path[4096], tmp[4200], lock[4200];
	struct cstat *c = NULL;
	size_t n, i;
	int lfd = -1, err = 0;
	FILE *f = NULL;

	if ((size_t)snprintf(path, sizeof(path), "%s/compact.stats", store_dir) >= sizeof(path))
		return -ENAMETOOLONG;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0 || flock(lfd, LOCK_EX)) {
		err = rw_err_set(-errno, "cannot lock '%s': %s", lock, strerror(errno));
		goto out;
	}
	if (!(c = calloc(MAXC + 1, sizeof(*c)))) {
		err = -ENOMEM;
		goto out;
	}
	n = compact_stats_read(store_dir, c, MAXC);
	for (i = 0; i < n && strcmp(c[i].name, name); i++)
		;
	if (i == n) {
		snprintf(c[n].name, sizeof(c[n].name), "%s", name);
		n++;
	}
	if (ok) {
		c[i].ok++;
		c[i].last_ok_ns = now_ns;
	} else {
		c[i].failed++;
	}
	if (!(f = fopen(tmp, "we"))) {
		err = rw_err_set(-errno, "cannot write '%s': %s", tmp, strerror(errno));
		goto out;
	}
	fprintf(f, "# rewind compaction results: disk last_success_ns ok failed\n");
	for (i = 0; i < n; i++)
		fprintf(f, "%s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", c[i].name,
			c[i].last_ok_ns, c[i].ok, c[i].failed);
	if (fflush(f) || fsync(fileno(f))) {
		err = rw_err_set(-errno, "cannot write '%s': %s", tmp, strerror(errno));
		goto out;
	}
	fclose(f);
	f = NULL;
	if (rename(tmp, path))
		err = rw_err_set(-errno, "cannot rename '%s': %s", tmp, strerror(errno));
out:
	if (f) {
		fclose(f);
		unlink(tmp);
	}
	free(c);
	if (lfd >= 0)
		close(lfd);
	return err;
}

static void set_health(struct cap_disk_figures *d, enum cap_health h,
		       const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_health(struct cap_disk_figures *d, enum cap_health h,
		       const char *fmt, ...)
{
	va_list ap;

	if (h <= d->health && d->health != CAP_OK)
		return;
	d->health = h;
	va_start(ap, fmt);
	vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
	va_end(ap);
}

static int collect_disk(struct ix *ix, struct cap_server *s,
			const struct ix_disk *m, const struct cap_metrics_cfg *cfg,
			const struct cstat *cs, size_t ncs, uint64_t now,
			struct cap_disk_figures *f)
{
	char dir[4096], path[4096];
	struct jr_seginfo *files = NULL;
	struct ix_segment *segs = NULL;
	struct ix_read *rd = NULL;
	struct rs_range r;
	int nf, ns = 0, err;

	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", m->name);
	if ((err = ix_disk_path(ix, m->name, "journal", dir, sizeof(dir))))
		return err;
	nf = jr_segments_list(dir, &files);
	if (nf < 0)
		return rw_err_set(nf, "cannot list the journal of disk '%s': %s",
				  m->name, rw_strerror(nf));
	f->journal_segments = (uint64_t)nf;
	for (int i = 0; i < nf; i++)
		f->journal_bytes += files[i].bytes;
	if (!ix_disk_path(ix, m->name, "base.img", path, sizeof(path)))
		f->base_bytes = allocated(path);
	if (!ix_disk_path(ix, m->name, "head.img", path, sizeof(path)))
		f->head_bytes = allocated(path);

	if ((err = ix_read_begin(ix, &rd)))
		goto out;
	ns = ix_segment_list(rd, m->id, &segs);
	ix_read_end(rd);
	if (ns < 0) {
		err = ns;
		ns = 0;
		goto out;
	}
	f->have_retain = cfg->retain_ns != 0;
	uint64_t cutoff = now > cfg->retain_ns ? now - cfg->retain_ns : 0;
	for (int i = 0; i < ns; i++) {
		f->journal_records += segs[i].records;
		if (!f->have_retain || !segs[i].records || segs[i].last_ts >= cutoff)
			continue;
		for (int k = 0; k < nf; k++)
			if (files[k].first_seq == segs[i].first_seq)
				f->compaction_backlog_bytes += files[k].bytes;
	}
	if ((err = rs_range_get(ix, m, &r)))
		goto out;
	f->oldest_ts = (double)r.oldest_ts / 1e9;
	f->latest_ts = (double)r.latest_ts / 1e9;
	f->history_s = now > r.oldest_ts ? (double)(now - r.oldest_ts) / 1e9 : 0;
	for (size_t i = 0; i < ncs; i++)
		if (!strcmp(cs[i].name, m->name)) {
			f->compaction_last_success_ts = (double)cs[i].last_ok_ns / 1e9;
			f->compaction_ok = cs[i].ok;
			f->compaction_failed = cs[i].failed;
		}

	struct cap_disk *d = s ? cap_server_find_disk(s, m->name) : NULL;
	if (d && d->w) {
		struct jr_writer_stats st;
		jr_writer_stats(d->w, &st);
		f->live = true;
		f->accepting = !st.error && !atomic_load(&d->head_failed);
		f->capture_lag_s = st.oldest_unsynced_ns && now > st.oldest_unsynced_ns
			? (double)(now - st.oldest_unsynced_ns) / 1e9 : 0;
		f->sealed_unsynced = st.sealed_waiting;
		f->writes = atomic_load(&d->n_writes);
		f->write_bytes = atomic_load(&d->write_bytes);
		f->zeroes = atomic_load(&d->n_zeroes);
		f->zero_bytes = atomic_load(&d->zero_bytes);
		f->trims = atomic_load(&d->n_trims);
		f->trim_bytes = atomic_load(&d->trim_bytes);
		f->flushes = atomic_load(&d->n_flushes);
		f->flushes_anticipated = atomic_load(&d->n_flushes_ahead);
		f->errors_journal = atomic_load(&d->err_journal);
		f->errors_head = atomic_load(&d->err_head);
		for (size_t i = 0; i <= CAP_FLUSH_NBUCKETS; i++) {
			f->flush_buckets[i] = atomic_load(&d->flush_hist[i]);
			f->flush_count += f->flush_buckets[i];
		}
		f->flush_sum_s = (double)atomic_load(&d->flush_ns) / 1e9;
		f->compression_ratio = st.stored_bytes
			? (double)st.logical_bytes / (double)st.stored_bytes : 1;
		uint64_t idx = atomic_load(&d->n_indexed);
		f->index_lag_records = st.records > idx ? st.records - idx : 0;
		uint64_t cur = atomic_load(&d->ix_current_ns);
		f->index_lag_s = f->index_lag_records && now > cur
			? (double)(now - cur) / 1e9 : 0;
		/* records appended but not yet in the index's segment table */
		f->journal_records += f->index_lag_records;
		f->over_budget = atomic_load(&d->over_budget);
		if (!f->accepting)
			set_health(f, CAP_CRIT, "disk '%s' refuses writes: %s",
				   m->name, rw_strerror(st.error ? st.error :
				   atomic_load(&d->head_failed)));
		else if (f->over_budget)
			set_health(f, CAP_CRIT, "disk '%s' refuses writes: its journal is "
				   "over the budget of %llu bytes (--over-budget refuse)",
				   m->name, (unsigned long long)d->budget);
		if (cfg->lag_crit_ns && f->capture_lag_s * 1e9 >= (double)cfg->lag_crit_ns)
			set_health(f, CAP_CRIT, "disk '%s': capture lag %.1fs is "
				   "over the critical threshold %.1fs", m->name,
				   f->capture_lag_s, (double)cfg->lag_crit_ns / 1e9);
		else if (cfg->lag_warn_ns && f->capture_lag_s * 1e9 >= (double)cfg->lag_warn_ns)
			set_health(f, CAP_WARN, "disk '%s': capture lag %.1fs is "
				   "over the warning threshold %.1fs", m->name,
				   f->capture_lag_s, (double)cfg->lag_warn_ns / 1e9);
	} else {
		uint64_t n, ts;
		if ((err = unindexed_tail(dir, m->last_indexed_seq > m->base_seq ?
					  m->last_indexed_seq : m->base_seq, &n, &ts)))
			goto out;
		f->index_lag_records = n;
		f->index_lag_s = n && now > ts ? (double)(now - ts) / 1e9 : 0;
		f->journal_records += n;
	}
	/* History cut below the configured share of the retention by
	 * compaction (the horizon moved: a fresh store is not an event). */
	if (cfg->retain_ns && cfg->history_warn_pct && m->horizon_seq &&
	    f->history_s * 1e9 < (double)cfg->retain_ns * cfg->history_warn_pct / 100.0)
		set_health(f, CAP_WARN, "disk '%s': history %.0fs is below %u%% "
			   "of the retention %.0fs", m->name, f->history_s,
			   cfg->history_warn_pct, (double)cfg->retain_ns / 1e9);
out:
	free(files);
	free(segs);
	return err;
}

int cap_metrics_collect(struct ix *ix, struct cap_server *s, const char *name,
			const struct cap_metrics_cfg *cfg,
			struct cap_store_figures *out)
{
	struct cap_metrics_cfg c = { 0 };
	struct ix_disk *list = NULL;
	struct cstat *cs = NULL;
	struct statvfs sv;
	size_t ncs = 0;
	int n, err = 0;

	memset(out, 0, sizeof(*out));
	if (s) {
		const struct cap_server_opts *o = cap_server_get_opts(s);
		c.retain_ns = o->retain_ns;
		c.lag_warn_ns = o->lag_warn_ns;
		c.lag_crit_ns = o->lag_crit_ns;
		c.history_warn_pct = o->history_warn_pct;
	} else if (cfg) {
		c = *cfg;
	}
	out->live = s != NULL;
	out->now_ns = rw_clock_ns();
	if (!statvfs(ix_store_dir(ix), &sv))
		out->disk_free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	n = ix_disk_list(ix, &list);
	if (n < 0)
		return n;
	if ((cs = calloc(1024, sizeof(*cs))))
		ncs = compact_stats_read(ix_store_dir(ix), cs, 1024);
	out->disks = calloc((size_t)n + 1, sizeof(*out->disks));
	if (!out->disks) {
		err = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (name && strcmp(name, list[i].name))
			continue;
		struct cap_disk_figures *f = &out->disks[out->ndisks];
		rw_err_clear();
		if ((err = collect_disk(ix, s, &list[i], &c, cs, ncs, out->now_ns, f)))
			goto out;
		if (f->health > out->health)
			out->health = f->health;
		out->ndisks++;
	}
	if (name && !out->ndisks)
		err = rw_err_set(RW_ENOTFOUND, "no disk '%s' in store '%s'", name,
				 ix_store_dir(ix));
out:
	free(cs);
	free(list);
	if (err)
		cap_store_figures_free(out);
	return err;
}

void cap_store_figures_free(struct cap_store_figures *f)
{
	if (!f)
		return;
	free(f->disks);
	f->disks = NULL;
	f->ndisks = 0;
}

/* ----------------------------------------------------------------- HTTP */

struct cap_metrics {
	struct cap_server *s;
	struct MHD_Daemon *mhd;

	pthread_t watch;
	bool watching;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	enum cap_health *last;       /* per disk, watcher only */
	size_t nlast;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
			     const char *ctype, char *body, size_t len)
{
	struct MHD_Response *r =
		mh.MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	mh.MHD_add_response_header(r, "Content-Type", ctype);
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		mh.MHD_add_response_header(r, "Allow", "GET, HEAD");
	enum MHD_Result ret = mh.MHD_queue_response(c, code, r);
	mh.MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned code,
			    const char *msg)
{
	char *b = strdup(msg);

	return b ? reply(c, code, "text/plain; charset=utf-8", b, strlen(b))
		 : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **req_cls)
{
	struct cap_metrics *m = cls;
	struct cap_store_figures f;
	struct cap_prom p = { 0 };

	(void)version;
	(void)upload;
	(void)upload_size;
	(void)req_cls;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	bool metrics = !strcmp(url, "/metrics");
	if (!metrics && strcmp(url, "/healthz"))
		return text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
	rw_err_clear();
	int err = cap_server_stats(m->s, NULL, &f);
	if (err) {
		char msg[512];
		snprintf(msg, sizeof(msg), "cannot collect figures: %s\n",
			 *rw_err_msg() ? rw_err_msg() : rw_strerror(err));
		return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, msg);
	}
	unsigned code = MHD_HTTP_OK;
	if (metrics) {
		cap_prom_figures(&p, &f);
	} else {
		pb_printf(&p, "%s\n", f.health == CAP_OK ? "ok" :
			  f.health == CAP_WARN ? "ok (warning)" : "critical");
		for (size_t i = 0; i < f.ndisks; i++)
			if (f.disks[i].health != CAP_OK)
				pb_printf(&p, "%s: %s\n", f.disks[i].health ==
					  CAP_CRIT ? "critical" : "warning",
					  f.disks[i].reason);
		if (f.health == CAP_CRIT)
			code = MHD_HTTP_SERVICE_UNAVAILABLE;
	}
	cap_store_figures_free(&f);
	if (p.err) {
		cap_prom_free(&p);
		return MHD_NO;
	}
	if (!p.buf)
		pb_printf(&p, "%s", "");
	return reply(c, code, metrics ? "text/plain; version=0.0.4; charset=utf-8"
		     : "text/plain; charset=utf-8", p.buf, p.len);
}

/* Binds HOST:PORT; refuses a non-loopback address unless allowed. */
static int bind_addr(const char *spec, bool public_ok)
{
	char host[256];
	const char *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int fd = -1, err = 0;

	int serr = cap_split_hostport(spec, "--metrics", false, host,
				      sizeof(host), &port);
	if (serr)
		return serr;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai)
		return rw_err_set(RW_EPARSE, "cannot resolve --metrics '%s': %s",
				  spec, gai_strerror(gai));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		bool lo = (ai->ai_family == AF_INET &&
			   (ntohl(((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
			  (ai->ai_family == AF_INET6 &&
			   IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr));
		if (!lo && !public_ok) {
			err = rw_err_set(-EPERM, "refusing to serve metrics on "
					 "'%s': not a loopback address (add "
					 "--metrics-public to expose it)", spec);
			continue;
		}
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)) {
			err = rw_err_set(-errno, "cannot listen on --metrics '%s': %s",
					 spec, strerror(errno));
			close(fd);
			fd = -1;
			continue;
		}
		break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err ? err : rw_err_set(-EADDRNOTAVAIL, "cannot listen on "
					      "--metrics '%s'", spec);
	return fd;
}

static void *watch_main(void *arg)
{
	struct cap_metrics *m = arg;

	pthread_mutex_lock(&m->mu);
	while (!m->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 500000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&m->cv, &m->mu, &ts);
		if (m->stop)
			break;
		pthread_mutex_unlock(&m->mu);
		struct cap_store_figures f;
		rw_err_clear();
		if (!cap_server_stats(m->s, NULL, &f)) {
			for (size_t i = 0; i < f.ndisks && i < m->nlast; i++) {
				struct cap_disk_figures *d = &f.disks[i];
				if (d->health == m->last[i])
					continue;
				if (d->health == CAP_OK)
					rw_log(RW_LOG_INFO, "disk '%s': back to normal "
					       "(capture lag %.1fs, history %.0fs)",
					       d->name, d->capture_lag_s, d->history_s);
				else
					rw_log(d->health == CAP_CRIT ? RW_LOG_ERROR
					       : RW_LOG_WARN, "%s: %s",
					       d->health == CAP_CRIT ? "critical"
					       : "warning", d->reason);
				m->last[i] = d->health;
			}
			cap_store_figures_free(&f);
		}
		pthread_mutex_lock(&m->mu);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

int cap_metrics_start(struct cap_metrics **out, struct cap_server *s)
{
	const struct cap_server_opts *o = cap_server_get_opts(s);
	struct cap_metrics *m;
	int fd = -1, err = 0;

	*out = NULL;
	bool watch = o->lag_warn_ns || o->lag_crit_ns ||
		     (o->history_warn_pct && o->retain_ns);
	if (!o->metrics_addr && !watch)
		return 0;
	if (!(m = calloc(1, sizeof(*m))))
		return -ENOMEM;
	m->s = s;
	pthread_mutex_init(&m->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (o->metrics_addr) {
		if ((err = mh_ready()))
			goto fail;
		if ((fd = bind_addr(o->metrics_addr, o->metrics_public)) < 0) {
			err = fd;
			goto fail;
		}
		m->mhd = mh.MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD |
					  MHD_USE_POLL, 0, NULL, NULL,
					  on_request, m,
					  MHD_OPTION_LISTEN_SOCKET, fd,
					  MHD_OPTION_CONNECTION_LIMIT, 32u,
					  MHD_OPTION_CONNECTION_TIMEOUT, 10u,
					  MHD_OPTION_CONNECTION_MEMORY_LIMIT,
					  (size_t)16384,
					  MHD_OPTION_END);
		if (!m->mhd) {
			close(fd);
			err = rw_err_set(-EIO, "cannot start the metrics HTTP "
					 "server on '%s'", o->metrics_addr);
			goto fail;
		}
	}
	if (watch) {
		m->nlast = cap_server_ndisks(s);
		m->last = calloc(m->nlast + 1, sizeof(*m->last));
		if (!m->last || (err = -pthread_create(&m->watch, NULL, watch_main, m))) {
			err = m->last ? err : -ENOMEM;
			goto fail;
		}
		m->watching = true;
	}
	*out = m;
	return 0;
fail:
	if (m->mhd)
		mh.MHD_stop_daemon(m->mhd);
	free(m->last);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	free(m);
	return err;
}

void cap_metrics_stop(struct cap_metrics *m)
{
	if (!m)
		return;
	if (m->watching) {
		pthread_mutex_lock(&m->mu);
		m->stop = true;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->mu);
		pthread_join(m->watch, NULL);
	}
	if (m->mhd)
		mh.MHD_stop_daemon(m->mhd);
	free(m->last);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
