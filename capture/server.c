/*
 * server.c — `rewind serve`: open and recover a store, listen, accept,
 * keep the index and head.img close behind the journal, shut down cleanly.
 *
 * Startup: ix_open(IX_LOCK) makes this the store's only writer.  One
 * jr_writer per disk is opened on one shared jr_clock; the clock observes
 * every journal's recovery report and the index's newest (seq, ts), so a
 * seq is never handed out twice even if the index is ahead of a journal
 * whose unsynced tail was lost.  Then each disk's journal tail after its
 * head_synced_seq is replayed into head.img (journal reader, in seq
 * order), head is fsynced, and ix_catch_up() indexes what the index lacks.
 * The replay reads the journal itself rather than riding on
 * ix_catch_up()'s callback, so it does not depend on how far the index got:
 * head_synced_seq and last_indexed_seq move independently.
 *
 * Running: the accept loop polls the listening sockets and a self-pipe
 * that cap_server_stop() writes (async-signal-safe).  Each connection gets
 * a thread (handshake, then conn.c).  Above max_conns a new connection is
 * closed at once.  A housekeeping thread wakes every index_interval
 * (50 ms): it ticks the writers (segment age) and syncs the segments they
 * sealed without a sync once there are many or they are old (disk.c,
 * cap_disk_sync_sealed),
 * indexes new records, and every head_sync_interval fsyncs each head.img
 * and records head_synced_seq (disk.c).  Indexing takes the record
 * headers the write path queued as jr_writer_append returned them
 * (cap_disk_ix_take: only once no older record of the disk can still be
 * in flight, in seq order) and commits all disks in one LMDB
 * transaction: the index trails acknowledged writes by about one
 * interval.  Should the queue ever fail to grow (ENOMEM), that disk is
 * indexed from its journal files instead, with one long-lived jr_reader
 * (headers only) up to exactly the writer's written_seq — never past it:
 * the writer may be writing the bytes beyond it at that moment, and a
 * reader racing that write can misjudge a record still being written (we
 * saw ix_catch_up() report such a tail as corrupt while a 1 GiB nbdcopy
 * ran).
 *
 * Shutdown: stop accepting, shut the read side of every connection (their
 * readers see EOF, workers answer what was in flight), join them, then
 * write out, flush, index, sync heads and close.
 *
 * Why the queue and not the files: the journal reader moves whole
 * 1 MiB windows through memory even for headers only, so indexing from
 * the files copied every written byte a second time (perf: ~8% of the
 * server's CPU at 64 KiB writes, a third of the housekeeping thread at
 * 4 KiB).  The danger of indexing from append results is that
 * concurrent appends finish out of seq order while ix_batch_commit skips
 * seqs at or below a disk's last_indexed_seq, so a straggler could
 * silently never be indexed; the in-flight lower bounds (the range locks'
 * seq_lb, also an empty range around each FLUSH marker's append) close
 * that hole: a record is taken only when nothing below it is in flight.
 *
 * Rejected alternative: calling ix_catch_up() every tick re-seeks every
 * journal each time and reads to the end of the file (see above).
 */
#include "capture/cap-int.h"
#include "common/rw.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 2

struct cap_server {
	struct cap_server_opts o;
	char *store_dir, *socket_path, *listen;
	char addr[512];
	struct ix *ix;
	struct jr_clock *clock;
	struct cap_disk *disks;
	size_t ndisks, nopen;

	int lfd[MAX_LISTEN];
	int nl;
	int stop_pipe[2];
	atomic_bool stopping;

	pthread_mutex_t mu;            /* conns, nconns, conn fds */
	struct cap_conn *conns;
	unsigned nconns;

	pthread_mutex_t idx_mu;        /* one hk_index() at a time */
	bool ro;                       /* read-only exports only */

	pthread_t hk;
	bool hk_started;
	pthread_mutex_t hk_mu;
	pthread_cond_t hk_cv;
	bool hk_stop;
	int hk_last_err;

	struct cap_metrics *metrics;   /* metrics.c: HTTP + thresholds */
};

void cap_server_opts_default(struct cap_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_conns = 100;
	o->handshake_timeout_ns = 10ull * 1000000000ull;
	o->workers = 4;
	o->zstd_level = JR_ZSTD_LEVEL_DEFAULT;
	o->index_interval_ns = 50ull * 1000000ull;
	o->head_sync_interval_ns = 5ull * 1000000000ull;
}

struct cap_disk *cap_server_find_disk(struct cap_server *s, const char *name)
{
	for (size_t i = 0; i < s->ndisks; i++)
		if (!strcmp(s->disks[i].meta.name, name))
			return &s->disks[i];
	return NULL;
}

size_t cap_server_ndisks(struct cap_server *s)
{
	return s->ndisks;
}

struct cap_disk *cap_server_disk(struct cap_server *s, size_t i)
{
	return i < s->ndisks ? &s->disks[i] : NULL;
}

const struct cap_server_opts *cap_server_get_opts(struct cap_server *s)
{
	return &s->o;
}

bool cap_server_stopping(struct cap_server *s)
{
	return atomic_load(&s->stopping);
}

const char *cap_server_address(const struct cap_server *s)
{
	return s->addr;
}

void cap_server_stop(struct cap_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopping, true);
	ssize_t n = write(s->stop_pipe[1], "x", 1);
	(void)n;
}

/* ------------------------------------------------------------ listening */

static int listen_unix(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(a.sun_path))
		return rw_err_set(-ENAMETOOLONG, "socket path '%s' is longer than "
				  "%zu bytes; choose a shorter --socket", path,
				  sizeof(a.sun_path) - 1);
	memcpy(a.sun_path, path, strlen(path) + 1);
	/* We hold the store lock, so a socket file left here is stale. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return rw_err_set(-EEXIST, "'%s' exists and is not a "
					  "socket", path);
		if (unlink(path))
			return rw_err_set(-errno, "cannot remove stale socket "
					  "'%s': %s", path, strerror(errno));
	}
	/* Bound and listening under a temporary name, then renamed into
	 * place: a client that sees the socket file can connect (bind alone
	 * creates the file, and a connect before listen is refused). */
	int n = snprintf(a.sun_path, sizeof(a.sun_path), "%s.%ld.tmp", path,
			 (long)getpid());
	bool tmp = n > 0 && (size_t)n < sizeof(a.sun_path);
	if (!tmp) /* no room for it: bind in place */
		memcpy(a.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return rw_err_set(-errno, "socket: %s", strerror(errno));
	if (tmp)
		unlink(a.sun_path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 128) ||
	    (tmp && rename(a.sun_path, path))) {
		int e = -errno;
		unlink(a.sun_path);
		close(fd);
		return rw_err_set(e, "cannot listen on '%s': %s", path,
				  strerror(-e));
	}
	return fd;
}

static int listen_tcp(const char *spec)
{
	char host[256];
	const char *port;
	size_t hl;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	int fd = -1, err = 0;

	int serr = cap_split_hostport(spec, "--listen", true, host,
				      sizeof(host), &port);
	if (serr)
		return serr;
	hl = strlen(host);
	int gai = getaddrinfo(hl ? host : NULL, port, &hints, &res);
	if (gai)
		return rw_err_set(RW_EPARSE, "cannot resolve --listen '%s': %s",
				  spec, gai_strerror(gai));
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
			err = -errno;
			close(fd);
			fd = -1;
			continue;
		}
		break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return rw_err_set(err ? err : -EADDRNOTAVAIL, "cannot listen on "
				  "'%s': %s", spec, rw_strerror(err));
	return fd;
}

/* ----------------------------------------------------------- housekeeping */

static void hk_error(struct cap_server *s, const char *what, const char *disk,
		     int err)
{
	if (s->hk_last_err == err)
		return;
	s->hk_last_err = err;
	const char *m = rw_err_msg();
	rw_log(RW_LOG_ERROR, "%s%s%s: %s", what, disk ? " of disk " : "",
	       disk ? disk : "", m && *m ? m : rw_strerror(err));
}

/*
 * Indexes every record written out so far, all disks in one LMDB
 * transaction.  A disk's records normally come from the queue its write
 * path fills (cap_disk_ix_take: record headers as jr_writer_append
 * returned them, in seq order, only once nothing older can still come);
 * a batch that fails to commit is kept and retried at the next tick.
 * A disk whose queue broke (out of memory) is indexed from its journal
 * files instead: a reader (headers only) positioned after the last record
 * indexed reads exactly up to the writer's written_seq, never into the
 * tail the writer may be writing at that moment; after an error the
 * readers are reopened at the next tick (seeking past what the index
 * holds), so nothing is skipped.
 */
static int hk_index(struct cap_server *s)
{
	struct ix_batch *b = NULL;
	size_t added = 0;
	int err;

	for (size_t i = 0; i < s->ndisks; i++) {
		struct cap_disk *d = &s->disks[i];
		bool current = false;
		if (!d->from_files && cap_disk_ix_take(d, &current) < 0) {
			/* the queue broke: what it held is in the files */
			d->from_files = true;
			d->ixw_n = 0;
		}
		d->hk_current = current;
		struct jr_writer_stats st;
		jr_writer_stats(d->w, &st);
		d->hk_snap = st.written_seq;
	}
	err = ix_batch_new(s->ix, &b);
	if (err)
		return err;
	for (size_t i = 0; !err && i < s->ndisks; i++) {
		struct cap_disk *d = &s->disks[i];
		if (!d->from_files) {
			for (size_t k = 0; !err && k < d->ixw_n; k++) {
				err = ix_batch_add(b, &d->ixw[k].rec, &d->ixw[k].loc);
				d->pending_seq = d->ixw[k].rec.seq;
				d->pending_n++;
				added++;
			}
			continue;
		}
		uint64_t upto = d->hk_snap;
		d->hk_current = true;
		if (d->indexed_seq >= upto)
			continue;
		if (!d->ixr) {
			err = jr_reader_open(&d->ixr, d->journal_dir,
					     JR_READ_HEADERS);
			if (!err)
				err = jr_reader_seek(d->ixr, d->indexed_seq + 1);
			if (err)
				break;
		}
		while (d->indexed_seq < upto) {
			struct jr_rec rec;
			struct jr_loc loc;
			const void *payload;
			err = jr_reader_next(d->ixr, &rec, &loc, &payload);
			if (err <= 0)
				break;
			err = ix_batch_add(b, &rec, &loc);
			if (err)
				break;
			d->pending_seq = rec.seq;
			d->pending_n++;
			added++;
			if (rec.seq >= upto)
				break;
		}
		if (err == 0 && d->pending_seq < upto)
			err = rw_err_set(RW_ECORRUPT, "disk '%s': journal reader "
					 "stopped at seq %llu before the written "
					 "seq %llu", d->meta.name,
					 (unsigned long long)d->pending_seq,
					 (unsigned long long)upto);
		if (err > 0)
			err = 0;
	}
	if (!err && added)
		err = ix_batch_commit(b);
	ix_batch_free(b);
	for (size_t i = 0; i < s->ndisks; i++) {
		struct cap_disk *d = &s->disks[i];
		if (err) {
			/* start over from what the index holds; a queued
			 * batch stays in ixw for the next try */
			jr_reader_close(d->ixr);
			d->ixr = NULL;
			d->pending_seq = d->indexed_seq;
		} else {
			d->ixw_n = 0;
			if (d->pending_seq > d->indexed_seq)
				d->indexed_seq = d->pending_seq;
			atomic_fetch_add(&d->n_indexed, d->pending_n);
			if (d->hk_current)
				atomic_store(&d->ix_current_ns, rw_clock_ns());
		}
		d->pending_n = 0;
	}
	return err;
}

static void hk_sync_heads(struct cap_server *s)
{
	for (size_t i = 0; i < s->ndisks; i++) {
		rw_err_clear();
		int err = cap_disk_sync_head(&s->disks[i], s->ix);
		if (err)
			hk_error(s, "head sync", s->disks[i].meta.name, err);
	}
}

/*
 * --max-journal with --over-budget refuse: every 200 ms, sums each
 * disk's segment files and refuses its writes (ENOSPC) while that is at or
 * over the budget; a compaction that unlinks segments lifts it at the
 * next check.  Transitions are logged.
 */
static void hk_budget(struct cap_server *s)
{
	for (size_t i = 0; i < s->ndisks; i++) {
		struct cap_disk *d = &s->disks[i];
		struct jr_seginfo *segs = NULL;
		uint64_t bytes = 0;
		int n = jr_segments_list(d->journal_dir, &segs);

		if (n < 0) {
			hk_error(s, "measuring the journal", d->meta.name, n);
			continue;
		}
		for (int j = 0; j < n; j++)
			bytes += segs[j].bytes;
		free(segs);
		bool over = bytes >= s->o.max_journal;
		if (over != atomic_load(&d->over_budget))
			rw_log(over ? RW_LOG_WARN : RW_LOG_INFO,
			       "disk '%s': journal %llu bytes, budget %llu: %s",
			       d->meta.name, (unsigned long long)bytes,
			       (unsigned long long)s->o.max_journal,
			       over ? "refusing writes with ENOSPC until a compaction frees space"
				    : "accepting writes again");
		atomic_store(&d->over_budget, over);
	}
}

static void *hk_main(void *arg)
{
	struct cap_server *s = arg;
	uint64_t last_sync = rw_mono_ns(), last_budget = 0;

	pthread_setname_np(pthread_self(), "rw-housekeep");

	pthread_mutex_lock(&s->hk_mu);
	while (!s->hk_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t t = (uint64_t)ts.tv_sec * 1000000000ull +
			     (uint64_t)ts.tv_nsec + s->o.index_interval_ns;
		ts.tv_sec = (time_t)(t / 1000000000ull);
		ts.tv_nsec = (long)(t % 1000000000ull);
		pthread_cond_timedwait(&s->hk_cv, &s->hk_mu, &ts);
		if (s->hk_stop)
			break;
		pthread_mutex_unlock(&s->hk_mu);

		for (size_t i = 0; i < s->ndisks; i++) {
			rw_err_clear();
			int err = jr_writer_tick(s->disks[i].w);
			if (!err)
				err = cap_disk_sync_sealed(&s->disks[i]);
			if (err)
				hk_error(s, "segment rotation",
					 s->disks[i].meta.name, err);
		}
		rw_err_clear();
		pthread_mutex_lock(&s->idx_mu);
		int ierr = hk_index(s);
		pthread_mutex_unlock(&s->idx_mu);
		if (ierr)
			hk_error(s, "indexing", NULL, ierr);
		if (rw_mono_ns() - last_sync >= s->o.head_sync_interval_ns) {
			hk_sync_heads(s);
			last_sync = rw_mono_ns();
		}
		if (s->o.max_journal && s->o.refuse_over_budget &&
		    rw_mono_ns() - last_budget >= 200000000ull) {
			hk_budget(s);
			last_budget = rw_mono_ns();
		}
		pthread_mutex_lock(&s->hk_mu);
	}
	pthread_mutex_unlock(&s->hk_mu);
	return NULL;
}

/* ------------------------------------------------------------------ open */

static void free_server(struct cap_server *s)
{
	cap_metrics_stop(s->metrics);
	for (size_t i = 0; i < s->nopen; i++)
		cap_disk_close(&s->disks[i]);
	free(s->disks);
	jr_clock_free(s->clock);
	ix_close(s->ix);
	for (int i = 0; i < s->nl; i++)
		close(s->lfd[i]);
	if (s->stop_pipe[0] >= 0)
		close(s->stop_pipe[0]);
	if (s->stop_pipe[1] >= 0)
		close(s->stop_pipe[1]);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->hk_mu);
	pthread_mutex_destroy(&s->idx_mu);
	pthread_cond_destroy(&s->hk_cv);
	free(s->store_dir);
	free(s->socket_path);
	free(s->listen);
	free(s);
}

/*
 * Seqs of the records other disks' journals hold in (after, upto], for
 * ix_disk_drop_lost's time map: the range belongs to every disk (one
 * clock), and only disk i lost its records there.  0 and *out (malloc'ed,
 * ascending; the caller frees) / *n, or error.
 */
static int other_seqs(struct cap_server *s, size_t i, uint64_t after,
		      uint64_t upto, uint64_t **out, size_t *n)
{
	uint64_t *v = NULL;
	size_t nv = 0, cap = 0;
	int err = 0;

	for (size_t j = 0; !err && j < s->ndisks; j++) {
		struct jr_reader *r = NULL;
		struct jr_rec rec;
		struct jr_loc loc;
		int k;

		if (j == i)
			continue;
		err = jr_reader_open(&r, s->disks[j].journal_dir,
				     JR_READ_HEADERS);
		if (!err)
			err = jr_reader_seek(r, after + 1);
		while (!err && (k = jr_reader_next(r, &rec, &loc, NULL)) != 0) {
			if (k < 0) {
				err = k;
				break;
			}
			if (rec.seq > upto)
				break;
			if (nv == cap) {
				size_t nc = cap ? cap * 2 : 64;
				uint64_t *nb = realloc(v, nc * sizeof(*nb));
				if (!nb) {
					err = -ENOMEM;
					break;
				}
				v = nb;
				cap = nc;
			}
			v[nv++] = rec.seq;
		}
		jr_reader_close(r);
	}
	if (err) {
		free(v);
		return err;
	}
	if (nv)
		qsort(v, nv, sizeof(*v), rw_u64_cmp);
	*out = v;
	*n = nv;
	return 0;
}

/*
 * Disk i's journal ends at seq jlast (after recovery), but the index may
 * hold records after it: a power loss took them before any flush covered
 * them (the index takes records in once they are written out, not once
 * they are durable), or recovery set their segments aside.  Their bytes
 * may have reached head.img, and the index would point restores at
 * records that no longer exist.  So: every block they touched is
 * rewritten in head.img as it was at the journal's end (o.repair_head),
 * head is fsynced, then the index forgets them (ix_disk_drop_lost, one
 * transaction) and re-indexes the disk from its journal.  Records folded
 * into base.img by compaction (seq <= base_seq) are not lost.  A crash
 * in the middle is repaired again by the next open: both steps are
 * idempotent and the index still names the lost records until the last.
 * Records written out but not yet indexed when the power went are not
 * seen here (at most an index interval of writes that no flush covered).
 */
static int repair_lost_tail(struct cap_server *s, size_t i, uint64_t jlast)
{
	struct cap_disk *d = &s->disks[i];
	uint64_t after = jlast > d->meta.base_seq ? jlast : d->meta.base_seq;
	uint64_t upto = d->meta.last_indexed_seq;
	uint64_t blocks = 0, deleted = 0, *keep = NULL;
	size_t nkeep = 0;
	int err;

	if (upto <= after)
		return 0;
	rw_log(RW_LOG_WARN, "disk '%s': the journal ends at seq %llu but the "
	       "index holds records up to seq %llu: a power loss took them "
	       "before any flush covered them; setting head.img back to seq "
	       "%llu and dropping them from the index", d->meta.name,
	       (unsigned long long)jlast, (unsigned long long)upto,
	       (unsigned long long)after);
	if (s->o.repair_head) {
		err = s->o.repair_head(s->o.repair_arg, s->ix, &d->meta, after,
				       upto, d->head_fd, &blocks);
		if (!err && (err = rw_sys_fsync(d->head_fd)))
			err = rw_err_set(err, "cannot fsync '%s': %s",
					 d->head_path, rw_strerror(err));
		if (err)
			return err;
	} else {
		rw_log(RW_LOG_WARN, "disk '%s': no head repair configured: "
		       "head.img may still hold bytes of the lost records",
		       d->meta.name);
	}
	err = other_seqs(s, i, after, upto, &keep, &nkeep);
	if (!err)
		err = ix_disk_drop_lost(s->ix, d->meta.id, after, upto, keep,
					nkeep, &deleted);
	free(keep);
	if (!err)
		err = ix_disk_get_id(s->ix, d->meta.id, &d->meta);
	if (err)
		return err;
	d->head_synced_seq = d->meta.head_synced_seq;
	rw_log(RW_LOG_INFO, "disk '%s': rewrote %llu blocks of head.img as of "
	       "seq %llu; the index dropped %llu time entries and now ends at "
	       "seq %llu", d->meta.name, (unsigned long long)blocks,
	       (unsigned long long)after, (unsigned long long)deleted,
	       (unsigned long long)d->meta.last_indexed_seq);
	return 0;
}

static int recover(struct cap_server *s)
{
	struct ix_disk *list = NULL;
	int n, err;

	n = ix_disk_list(s->ix, &list);
	if (n < 0)
		return n;
	s->ndisks = (size_t)n;
	s->disks = calloc(s->ndisks ? s->ndisks : 1, sizeof(*s->disks));
	if (!s->disks) {
		free(list);
		return -ENOMEM;
	}
	uint64_t *jlast = calloc(s->ndisks ? s->ndisks : 1, sizeof(*jlast));
	err = jlast ? jr_clock_new(&s->clock, 1, 0) : -ENOMEM;
	for (size_t i = 0; !err && i < s->ndisks; i++) {
		struct jr_recovery rep = { 0 };
		err = cap_disk_open(&s->disks[i], s->ix, &list[i], s->clock, &rep);
		if (err)
			break;
		jlast[i] = rep.last_seq;
		s->disks[i].skip_unchanged = s->o.skip_unchanged;
		s->disks[i].budget = s->o.max_journal;
		s->nopen++;
		if (rep.set_aside)
			rw_log(RW_LOG_WARN, "disk '%s': the journal ends in a "
			       "segment a power loss cut short; moved the %llu "
			       "segments after it (from %020llu, never "
			       "flushed) to journal/%s", list[i].name,
			       (unsigned long long)rep.set_aside,
			       (unsigned long long)rep.set_aside_first,
			       rep.set_aside_dir);
		if (rep.truncated_bytes)
			rw_log(RW_LOG_WARN, "disk '%s': dropped a torn tail of "
			       "%llu bytes from segment %020llu (never flushed)",
			       list[i].name,
			       (unsigned long long)rep.truncated_bytes,
			       (unsigned long long)rep.torn_segment);
		rw_log(RW_LOG_INFO, "disk '%s' (id %u, %llu bytes): journal "
		       "has %llu segments, last seq %llu", list[i].name,
		       list[i].id, (unsigned long long)list[i].size,
		       (unsigned long long)rep.segments,
		       (unsigned long long)rep.last_seq);
	}
	free(list);
	if (err) {
		free(jlast);
		return err;
	}

	/* The clock continues after every seq the index ever named, lost
	 * ones included: a seq means one record, for good. */
	struct ix_read *rd = NULL;
	uint64_t seq, ts;
	err = ix_read_begin(s->ix, &rd);
	if (!err) {
		err = ix_latest(rd, &seq, &ts);
		ix_read_end(rd);
		if (!err)
			jr_clock_observe(s->clock, seq, ts);
		else if (err == RW_ENOTFOUND)
			err = 0;
	}
	for (size_t i = 0; !err && i < s->ndisks; i++)
		err = repair_lost_tail(s, i, jlast[i]);
	free(jlast);
	if (err)
		return err;

	for (size_t i = 0; i < s->ndisks; i++) {
		struct cap_disk *d = &s->disks[i];
		n = cap_disk_replay(d);
		if (n < 0)
			return n;
		if (n > 0) {
			rw_log(RW_LOG_INFO, "disk '%s': replayed %d journal "
			       "records after seq %llu into head.img",
			       d->meta.name, n,
			       (unsigned long long)d->head_synced_seq);
			uint64_t mark = cap_disk_head_watermark(d);
			err = ix_disk_set_head_synced(s->ix, d->meta.id, mark);
			if (err)
				return err;
			d->head_synced_seq = mark;
		}
	}
	n = ix_catch_up(s->ix, NULL, NULL);
	if (n < 0)
		return n;
	if (n > 0)
		rw_log(RW_LOG_INFO, "indexed %d journal records the index "
		       "lacked", n);
	for (size_t i = 0; i < s->ndisks; i++) {
		struct jr_writer_stats st;
		jr_writer_stats(s->disks[i].w, &st);
		s->disks[i].indexed_seq = st.written_seq;
		s->disks[i].pending_seq = st.written_seq;
		atomic_store(&s->disks[i].ix_current_ns, rw_clock_ns());
	}
	return 0;
}

int cap_server_open(struct cap_server **out, const struct cap_server_opts *o)
{
	struct cap_server *s;
	int err;

	*out = NULL;
	if (!o->store_dir)
		return rw_err_set(-EINVAL, "no store given");
	/*
	 * Payloads of large writes are malloc'ed per request (conn.c).
	 * glibc serves blocks over its (adaptive) mmap threshold with a
	 * fresh mmap, and trims freed heap tops, so every 1 MiB write paid
	 * page faults and page clearing (perf: ~5% of the server at 1 MiB
	 * QD8).  Keep payloads up to 4 MiB in the heap and trim only past
	 * 32 MiB of free top: RSS stays bounded by the admission budget.
	 */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	atomic_init(&s->stopping, false);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->hk_mu, NULL);
	pthread_mutex_init(&s->idx_mu, NULL);
	/* hk_main waits with CLOCK_MONOTONIC deadlines */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->hk_cv, &ca);
	pthread_condattr_destroy(&ca);
	s->store_dir = strdup(o->store_dir);
	if (o->socket_path)
		s->socket_path = strdup(o->socket_path);
	else if (asprintf(&s->socket_path, "%s/rewind.sock", o->store_dir) < 0)
		s->socket_path = NULL;
	if (o->listen)
		s->listen = strdup(o->listen);
	if (!s->store_dir || !s->socket_path || (o->listen && !s->listen)) {
		free_server(s);
		return -ENOMEM;
	}
	s->o.store_dir = s->store_dir;
	s->o.socket_path = s->socket_path;
	s->o.listen = s->listen;
	if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK)) {
		err = -errno;
		free_server(s);
		return err;
	}

	if (o->ro_exports) {
		/* Read-only exports: no store lock, no writers, no recovery. */
		s->ro = true;
		s->disks = calloc(o->n_ro_exports ? o->n_ro_exports : 1,
				  sizeof(*s->disks));
		if (!s->disks) {
			free_server(s);
			return -ENOMEM;
		}
		s->ndisks = o->n_ro_exports;
		for (size_t i = 0; i < s->ndisks; i++, s->nopen++)
			cap_disk_open_ro(&s->disks[i], &o->ro_exports[i]);
		goto listen;
	}
	err = ix_open(&s->ix, s->store_dir, IX_LOCK);
	if (err) {
		s->ix = NULL;
		if (err == RW_EBUSY)
			rw_err_set(err, "store '%s' is in use by another rewind "
				   "server (its lock is held)", s->store_dir);
		free_server(s);
		return err;
	}
	err = recover(s);
	if (!err) /* HTTP endpoint and threshold watcher (metrics.c) */
		err = cap_metrics_start(&s->metrics, s);
	if (err) {
		free_server(s);
		return err;
	}

listen:;
	size_t an = 0;
	if (o->no_listen && !s->ro)
		goto started;
	if (*s->socket_path) {
		int fd = listen_unix(s->socket_path);
		if (fd < 0) {
			free_server(s);
			return fd;
		}
		s->lfd[s->nl++] = fd;
		an += (size_t)snprintf(s->addr + an, sizeof(s->addr) - an,
				       "unix:%s", s->socket_path);
	}
	if (s->listen) {
		int fd = listen_tcp(s->listen);
		if (fd < 0) {
			free_server(s);
			return fd;
		}
		s->lfd[s->nl++] = fd;
		if (an < sizeof(s->addr))
			snprintf(s->addr + an, sizeof(s->addr) - an, "%stcp:%s",
				 an ? " " : "", s->listen);
	}
	if (!s->nl) {
		free_server(s);
		return rw_err_set(-EINVAL, "nothing to listen on (give --socket "
				  "or --listen)");
	}

started:
	if (!s->ro) {
		err = pthread_create(&s->hk, NULL, hk_main, s);
		if (err) {
			free_server(s);
			return rw_err_set(-err, "cannot start the housekeeping "
					  "thread");
		}
		s->hk_started = true;
	}
	*out = s;
	return 0;
}

/* ------------------------------------------------------------------- run */

static void *conn_main(void *arg)
{
	struct cap_conn *c = arg;
	struct cap_server *s = c->srv;

	pthread_setname_np(pthread_self(), "rw-conn");
	rw_err_clear();
	int err = cap_handshake(c);
	if (err == 0) {
		rw_log(RW_LOG_DEBUG, "%s: serving disk '%s'%s", c->peer,
		       c->disk->meta.name,
		       c->structured ? " (structured replies)" : "");
		cap_conn_serve(c);
		cap_disk_detach(c->disk);
	} else if (err < 0 && err != -ECONNRESET) {
		const char *m = rw_err_msg();
		rw_log(RW_LOG_WARN, "%s: handshake failed: %s", c->peer,
		       err == -ETIMEDOUT ? "deadline passed" :
		       m && *m ? m : rw_strerror(err));
	}
	pthread_mutex_lock(&s->mu);
	close(c->fd);
	c->fd = -1;
	s->nconns--;
	pthread_mutex_unlock(&s->mu);
	atomic_store(&c->done, true);
	return NULL;
}

/* Joins and frees finished connections; with all, waits for every one. */
static void reap(struct cap_server *s, bool all)
{
	pthread_mutex_lock(&s->mu);
	struct cap_conn **pp = &s->conns;
	while (*pp) {
		struct cap_conn *c = *pp;
		if (all || atomic_load(&c->done)) {
			*pp = c->next;
			pthread_mutex_unlock(&s->mu);
			pthread_join(c->thread, NULL);
			free(c);
			pthread_mutex_lock(&s->mu);
			pp = &s->conns;
			continue;
		}
		pp = &c->next;
	}
	pthread_mutex_unlock(&s->mu);
}

static void peer_name(int fd, char *buf, size_t n, bool unix_sock)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	char h[128], p[32];

	if (unix_sock || getpeername(fd, (struct sockaddr *)&a, &al) ||
	    getnameinfo((struct sockaddr *)&a, al, h, sizeof(h), p, sizeof(p),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(buf, n, "client %d (unix)", fd);
		return;
	}
	snprintf(buf, n, "client %s:%s", h, p);
}

static void accept_one(struct cap_server *s, int lfd, bool unix_sock)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			rw_log(RW_LOG_WARN, "accept: %s", strerror(errno));
		if (errno == EMFILE || errno == ENFILE)
			usleep(100000);
		return;
	}
	pthread_mutex_lock(&s->mu);
	if (s->nconns >= s->o.max_conns) {
		pthread_mutex_unlock(&s->mu);
		rw_log(RW_LOG_WARN, "connection cap (%u) reached; refusing a "
		       "new client", s->o.max_conns);
		close(fd);
		return;
	}
	pthread_mutex_unlock(&s->mu);
	if (!unix_sock) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct cap_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->deadline_ns = rw_mono_ns() + s->o.handshake_timeout_ns;
	atomic_init(&c->done, false);
	peer_name(fd, c->peer, sizeof(c->peer), unix_sock);
	pthread_mutex_lock(&s->mu);
	int e = pthread_create(&c->thread, NULL, conn_main, c);
	if (e) {
		pthread_mutex_unlock(&s->mu);
		rw_log(RW_LOG_WARN, "cannot start a connection thread: %s",
		       strerror(e));
		close(fd);
		free(c);
		return;
	}
	s->nconns++;
	c->next = s->conns;
	s->conns = c;
	pthread_mutex_unlock(&s->mu);
}

int cap_server_run(struct cap_server *s)
{
	struct pollfd p[MAX_LISTEN + 1];

	rw_log(RW_LOG_INFO, "serving %zu disk%s of store '%s' on %s",
	       s->ndisks, s->ndisks == 1 ? "" : "s", s->store_dir, s->addr);
	while (!atomic_load(&s->stopping)) {
		for (int i = 0; i < s->nl; i++)
			p[i] = (struct pollfd){ .fd = s->lfd[i], .events = POLLIN };
		p[s->nl] = (struct pollfd){ .fd = s->stop_pipe[0], .events = POLLIN };
		int n = poll(p, (nfds_t)s->nl + 1, 1000);
		reap(s, false);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return rw_err_set(-errno, "poll: %s", strerror(errno));
		}
		if (p[s->nl].revents)
			break;
		for (int i = 0; i < s->nl; i++)
			if (p[i].revents & POLLIN)
				accept_one(s, s->lfd[i],
					   i == 0 && *s->socket_path);
	}

	/* Drain: readers see EOF, workers answer what was in flight. */
	pthread_mutex_lock(&s->mu);
	unsigned live = s->nconns;
	for (struct cap_conn *c = s->conns; c; c = c->next)
		if (c->fd >= 0)
			shutdown(c->fd, SHUT_RD);
	pthread_mutex_unlock(&s->mu);
	if (live)
		rw_log(RW_LOG_INFO, "closing %u connection%s", live,
		       live == 1 ? "" : "s");
	uint64_t until = rw_mono_ns() + 10ull * 1000000000ull;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		live = s->nconns;
		if (live && rw_mono_ns() >= until)
			for (struct cap_conn *c = s->conns; c; c = c->next)
				if (c->fd >= 0)
					shutdown(c->fd, SHUT_RDWR);
		pthread_mutex_unlock(&s->mu);
		if (!live || rw_mono_ns() >= until)
			break;
		usleep(10000);
	}
	reap(s, true);
	return 0;
}

/* ----------------------------------------------------------------- close */

int cap_server_close(struct cap_server *s)
{
	int err = 0, e;

	if (!s)
		return 0;
	cap_metrics_stop(s->metrics);
	s->metrics = NULL;
	if (s->hk_started) {
		pthread_mutex_lock(&s->hk_mu);
		s->hk_stop = true;
		pthread_cond_signal(&s->hk_cv);
		pthread_mutex_unlock(&s->hk_mu);
		pthread_join(s->hk, NULL);
	}
	reap(s, true);
	if (s->ro) {
		if (s->socket_path && *s->socket_path)
			unlink(s->socket_path);
		free_server(s);
		return 0;
	}
	for (size_t i = 0; i < s->nopen; i++) {
		struct cap_disk *d = &s->disks[i];
		rw_err_clear();
		e = jr_writer_flush(d->w);
		if (e) {
			rw_log(RW_LOG_ERROR, "disk '%s': final journal flush "
			       "failed: %s", d->meta.name,
			       *rw_err_msg() ? rw_err_msg() : rw_strerror(e));
			if (!err)
				err = e;
		}
	}
	rw_err_clear();
	pthread_mutex_lock(&s->idx_mu);
	e = hk_index(s);
	pthread_mutex_unlock(&s->idx_mu);
	if (e < 0) {
		rw_log(RW_LOG_ERROR, "final indexing failed: %s",
		       *rw_err_msg() ? rw_err_msg() : rw_strerror(e));
		if (!err)
			err = e;
	}
	for (size_t i = 0; i < s->nopen; i++) {
		struct cap_disk *d = &s->disks[i];
		struct jr_writer_stats st;
		rw_err_clear();
		e = cap_disk_sync_head(d, s->ix);
		if (e) {
			rw_log(RW_LOG_ERROR, "disk '%s': head sync failed: %s",
			       d->meta.name,
			       *rw_err_msg() ? rw_err_msg() : rw_strerror(e));
			if (!err)
				err = e;
		}
		jr_writer_stats(d->w, &st);
		rw_log(RW_LOG_INFO, "disk '%s': %llu writes (%llu compressed), "
		       "%llu zeroes, %llu trims, %llu flushes (%llu anticipated "
		       "by %llu early syncs), %llu reads; "
		       "journal %llu records, %llu bytes logical, %llu stored, "
		       "durable to seq %llu, head synced to seq %llu",
		       d->meta.name,
		       (unsigned long long)atomic_load(&d->n_writes),
		       (unsigned long long)atomic_load(&d->n_compressed),
		       (unsigned long long)atomic_load(&d->n_zeroes),
		       (unsigned long long)atomic_load(&d->n_trims),
		       (unsigned long long)atomic_load(&d->n_flushes),
		       (unsigned long long)atomic_load(&d->n_flushes_ahead),
		       (unsigned long long)atomic_load(&d->n_presyncs),
		       (unsigned long long)atomic_load(&d->n_reads),
		       (unsigned long long)st.records,
		       (unsigned long long)st.logical_bytes,
		       (unsigned long long)st.stored_bytes,
		       (unsigned long long)st.durable_seq,
		       (unsigned long long)d->head_synced_seq);
	}
	for (size_t i = 0; i < s->nopen; i++) {
		e = cap_disk_close(&s->disks[i]);
		if (e && !err)
			err = e;
	}
	s->nopen = 0;
	if (s->socket_path && *s->socket_path)
		unlink(s->socket_path);
	free_server(s);
	return err;
}

/* ------------------------------------------------- work beside clients */

static struct cap_disk *writable_disk(struct cap_server *s, const char *name)
{
	struct cap_disk *d = s->ro ? NULL : cap_server_find_disk(s, name);

	if (!d)
		rw_err_set(RW_ENOTFOUND, "no disk '%s' in store '%s'", name,
			   s->store_dir);
	return d;
}

int cap_server_disk_claim(struct cap_server *s, const char *name)
{
	struct cap_disk *d = writable_disk(s, name);
	int err = 0;

	if (!d)
		return RW_ENOTFOUND;
	pthread_mutex_lock(&d->mu);
	if (d->claimed)
		err = rw_err_set(RW_EBUSY, "disk '%s' is already being rolled "
				 "back", name);
	else if (d->clients)
		err = rw_err_set(RW_EBUSY, "disk '%s' has %u client%s connected;"
				 " disconnect %s first (shut the VM down)", name,
				 d->clients, d->clients == 1 ? "" : "s",
				 d->clients == 1 ? "it" : "them");
	else
		d->claimed = true;
	pthread_mutex_unlock(&d->mu);
	return err;
}

void cap_server_disk_release(struct cap_server *s, const char *name)
{
	struct cap_disk *d = writable_disk(s, name);

	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	d->claimed = false;
	pthread_mutex_unlock(&d->mu);
}

int cap_server_disk_write(struct cap_server *s, const char *name,
			  uint8_t type, uint64_t off, uint32_t len,
			  const void *data)
{
	struct cap_disk *d = writable_disk(s, name);

	if (!d)
		return RW_ENOTFOUND;
	if ((type == JR_WRITE) != (data != NULL) ||
	    (type != JR_WRITE && type != JR_ZERO) ||
	    !rw_range_ok(off, len, d->meta.size) || !len ||
	    (type == JR_WRITE && len > JR_MAX_WRITE))
		return rw_err_set(-EINVAL, "bad write of [%llu, +%u) to disk '%s'",
				  (unsigned long long)off, len, name);
	return cap_disk_write(d, type, off, len, data, 0, NULL, NULL, NULL);
}

int cap_server_disk_flush(struct cap_server *s, const char *name)
{
	struct cap_disk *d = writable_disk(s, name);

	return d ? cap_disk_flush(d) : RW_ENOTFOUND;
}

int cap_server_index_now(struct cap_server *s)
{
	int err = 0;

	if (s->ro)
		return 0;
	for (size_t i = 0; !err && i < s->ndisks; i++)
		err = jr_writer_write_out(s->disks[i].w);
	if (err)
		return err;
	pthread_mutex_lock(&s->idx_mu);
	err = hk_index(s);
	pthread_mutex_unlock(&s->idx_mu);
	return err;
}

struct ix *cap_server_ix(struct cap_server *s)
{
	return s->ix;
}

const char *cap_server_metrics_address(const struct cap_server *s)
{
	return s->o.metrics_addr && !s->ro ? s->o.metrics_addr : "";
}

int cap_server_stats(struct cap_server *s, const char *name,
		     struct cap_store_figures *out)
{
	if (s->ro)
		return rw_err_set(-EINVAL, "a read-only export server has no "
				  "store figures");
	return cap_metrics_collect(s->ix, s, name, NULL, out);
}
