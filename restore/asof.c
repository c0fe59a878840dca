/*
 * asof.c — a thread-safe reader of one disk as-of one seq, for exports.
 *
 * An NBD export answers many reads at once from several threads, mostly
 * large sequential ones.  Per read this reader walks a block map (map.c)
 * built once, in a background thread, when the reader opens: runs of
 * blocks with no version come from base in one pread (or are zero-filled
 * when base has no data at all), runs of zeroed blocks are zero-filled,
 * runs of blocks of one record are copied from that record, and only
 * blocks whose newest version is partial go through a view.  Decoded
 * records sit in a small cache shared by all threads (each record is read
 * and checksummed once, not once per read that touches it: a 1 MiB write
 * spans four 256 KiB reads that arrive on different threads).  Until the
 * map is ready — the first byte must not wait for a scan of the history —
 * reads go through views, one per thread, as before.
 *
 * The map is exact for the reader's lifetime: it lists every block with a
 * version in (base_seq, S] at open; a compaction to H <= S only rewrites
 * base for such blocks, so "no entry" keeps meaning "base's bytes, as they
 * were".  A record whose segment a compaction unlinked (RW_ENOTFOUND) is
 * read through a view instead, which renews its snapshot and finds the
 * bytes in base.  Callers still check that the horizon stays <= S.
 *
 * A history of more than RS_MAP_WINDOW changed blocks gets no map (it
 * would not fit the memory we allow ourselves); reads then use views.
 *
 * Rejected: a pool of views, each caching its last record (the old path):
 * consecutive reads land on different views, so a record was decoded
 * once per read touching it, and every block cost an index lookup.
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOTS 8        /* views / journal readers, one per busy thread */
#define CACHE 32       /* decoded records kept */
#define BIG_REC (4u << 20) /* a buffer that held more is freed on eviction */

enum { MAP_BUILDING = 0, MAP_READY = 1, MAP_NONE = -1 };
enum { C_EMPTY = 0, C_LOADING, C_READY };

struct slot {
	struct rs_view *v;
	struct jr_reader *jr;
	bool busy;
};

struct crec {
	struct jr_loc loc;
	struct jr_rec rec;
	uint8_t *buf;          /* JR_MAX_WRITE bytes of address space */
	int refs;
	int state;
	uint64_t used;         /* LRU tick */
};

struct rs_asof {
	struct ix *ix;
	struct ix_disk d;
	uint64_t seq;
	int base_fd;
	bool base_empty;       /* base.img had no data when opened */
	char jdir[4096];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct slot slots[SLOTS];
	struct crec cache[CACHE];
	uint64_t tick;
	unsigned waiting;      /* threads in wait(); wakeups only for them */
	pthread_t builder;
	bool builder_started;
	atomic_bool stop;
	atomic_int map_state;
	int map_err;           /* why there is no map (diagnostics) */
	struct rs_map map;
	/* counters (tests, diagnostics) */
	atomic_uint_fast64_t loads, view_reads;
};

static void *build_map(void *arg)
{
	struct rs_asof *x = arg;
	struct rs_map m = { 0 };
	uint64_t nblocks = (x->d.size + x->d.block_size - 1) / x->d.block_size;
	int err = rs_map_fill(&m, x->ix, &x->d, 0, x->d.base_seq, x->seq,
			      x->seq, RS_MAP_WINDOW, &x->stop);

	if (!err && m.next < nblocks)
		err = -E2BIG;
	if (err) {
		rs_map_free(&m);
		x->map_err = err;
		atomic_store_explicit(&x->map_state, MAP_NONE,
				      memory_order_release);
		return NULL;
	}
	x->map = m;
	atomic_store_explicit(&x->map_state, MAP_READY, memory_order_release);
	return NULL;
}

int rs_asof_open(struct rs_asof **out, struct ix *ix, const struct ix_disk *d,
		 uint64_t seq, unsigned flags)
{
	struct rs_asof *x = calloc(1, sizeof(*x));
	char path[4096];
	struct stat st;
	int err;

	if (!x)
		return -ENOMEM;
	x->ix = ix;
	x->d = *d;
	x->seq = seq;
	x->base_fd = -1;
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	atomic_init(&x->stop, false);
	atomic_init(&x->map_state, MAP_NONE);
	atomic_init(&x->loads, 0);
	atomic_init(&x->view_reads, 0);
	if ((err = ix_disk_path(ix, d->name, "base.img", path, sizeof(path))) ||
	    (err = ix_disk_path(ix, d->name, "journal", x->jdir,
				sizeof(x->jdir))))
		goto fail;
	x->base_fd = rw_sys_open(path, O_RDONLY, 0);
	if (x->base_fd < 0) {
		err = rw_err_set(x->base_fd, "cannot open base image '%s': %s",
				 path, rw_strerror(x->base_fd));
		x->base_fd = -1;
		goto fail;
	}
	x->base_empty = fstat(x->base_fd, &st) == 0 && st.st_blocks == 0;
	if (!(flags & RS_ASOF_NO_MAP)) {
		atomic_store(&x->map_state, MAP_BUILDING);
		if ((err = pthread_create(&x->builder, NULL, build_map, x))) {
			atomic_store(&x->map_state, MAP_NONE);
			err = rw_err_set(-err, "cannot start a thread: %s",
					 strerror(err));
			goto fail;
		}
		x->builder_started = true;
	}
	*out = x;
	return 0;
fail:
	rs_asof_close(x);
	return err;
}

void rs_asof_close(struct rs_asof *x)
{
	if (!x)
		return;
	if (x->builder_started) {
		atomic_store(&x->stop, true);
		pthread_join(x->builder, NULL);
	}
	for (int i = 0; i < SLOTS; i++) {
		rs_view_close(x->slots[i].v);
		jr_reader_close(x->slots[i].jr);
	}
	for (int i = 0; i < CACHE; i++)
		free(x->cache[i].buf);
	rs_map_free(&x->map);
	if (x->base_fd >= 0)
		close(x->base_fd);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
}

bool rs_asof_mapped(struct rs_asof *x, bool wait)
{
	if (wait && x->builder_started) {
		pthread_join(x->builder, NULL);
		x->builder_started = false;
	}
	return atomic_load_explicit(&x->map_state, memory_order_acquire) ==
	       MAP_READY;
}

void rs_asof_counters(struct rs_asof *x, uint64_t *loads, uint64_t *view_reads)
{
	*loads = atomic_load(&x->loads);
	*view_reads = atomic_load(&x->view_reads);
}

/* ---------------------------------------------------------------- slots */

/* Waits on x->cv (x->mu held). */
static void cv_wait(struct rs_asof *x)
{
	x->waiting++;
	pthread_cond_wait(&x->cv, &x->mu);
	x->waiting--;
}

/* Wakes the waiters, if any (x->mu held). */
static void cv_wake(struct rs_asof *x)
{
	if (x->waiting)
		pthread_cond_broadcast(&x->cv);
}

static struct slot *slot_get(struct rs_asof *x)
{
	struct slot *s = NULL;

	pthread_mutex_lock(&x->mu);
	for (;;) {
		for (int i = 0; i < SLOTS && !s; i++)
			if (!x->slots[i].busy)
				s = &x->slots[i];
		if (s)
			break;
		cv_wait(x);
	}
	s->busy = true;
	pthread_mutex_unlock(&x->mu);
	return s;
}

static void slot_put(struct rs_asof *x, struct slot *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&x->mu);
	s->busy = false;
	cv_wake(x);
	pthread_mutex_unlock(&x->mu);
}

/* Reads [off, off+len) through the slot's view (opened on first use). */
static int view_read(struct rs_asof *x, struct slot **sl, uint64_t off,
		     uint64_t len, uint8_t *p)
{
	int err;

	if (!*sl)
		*sl = slot_get(x);
	if (!(*sl)->v && (err = rs_view_open(&(*sl)->v, x->ix, &x->d, x->seq)))
		return err;
	atomic_fetch_add(&x->view_reads, 1);
	return rs_view_read((*sl)->v, off, len, p);
}

/* ---------------------------------------------------------------- cache */

static bool loc_eq(const struct jr_loc *a, const struct jr_loc *b)
{
	return a->segment == b->segment && a->offset == b->offset;
}

/*
 * Returns the cached, decoded record at loc with a reference held (put it
 * back with rec_put), loading it with the caller's slot (taken here if
 * needed) on a miss.  0, RW_ENOTFOUND (segment gone), or error.
 */
static int rec_get(struct rs_asof *x, struct slot **sl,
		   const struct jr_loc *loc, struct crec **out)
{
	struct crec *c;
	int err;

	pthread_mutex_lock(&x->mu);
again:
	c = NULL;
	for (int i = 0; i < CACHE; i++) {
		if (x->cache[i].state != C_EMPTY &&
		    loc_eq(&x->cache[i].loc, loc)) {
			c = &x->cache[i];
			break;
		}
	}
	if (c && c->state == C_LOADING) {
		cv_wait(x);
		goto again;
	}
	if (c) {
		c->refs++;
		c->used = ++x->tick;
		pthread_mutex_unlock(&x->mu);
		*out = c;
		return 0;
	}
	if (!*sl) {
		/* Take a slot without holding the lock, then look again. */
		pthread_mutex_unlock(&x->mu);
		*sl = slot_get(x);
		pthread_mutex_lock(&x->mu);
		goto again;
	}
	for (int i = 0; i < CACHE; i++) {
		struct crec *k = &x->cache[i];
		if (k->state == C_EMPTY) {
			c = k;
			break;
		}
		if (k->state == C_READY && !k->refs && (!c || k->used < c->used))
			c = k;
	}
	if (!c) {
		/* Every entry is in use for a moment: wait for one. */
		cv_wait(x);
		goto again;
	}
	if (c->state == C_READY && c->rec.length > BIG_REC) {
		/* Give back the memory a huge record made resident. */
		free(c->buf);
		c->buf = NULL;
	}
	c->state = C_LOADING;
	c->loc = *loc;
	c->refs = 1;
	c->used = ++x->tick;
	pthread_mutex_unlock(&x->mu);

	err = 0;
	if (!c->buf && !(c->buf = malloc(JR_MAX_WRITE)))
		err = -ENOMEM;
	if (!err && !(*sl)->jr)
		err = jr_reader_open(&(*sl)->jr, x->jdir, 0);
	if (!err)
		err = jr_reader_read_at((*sl)->jr, loc, &c->rec, c->buf,
					JR_MAX_WRITE);
	pthread_mutex_lock(&x->mu);
	if (err) {
		c->state = C_EMPTY;
		c->refs = 0;
	} else {
		c->state = C_READY;
		atomic_fetch_add(&x->loads, 1);
	}
	cv_wake(x);
	pthread_mutex_unlock(&x->mu);
	if (err)
		return err;
	*out = c;
	return 0;
}

static void rec_put(struct rs_asof *x, struct crec *c)
{
	pthread_mutex_lock(&x->mu);
	if (!--c->refs)
		cv_wake(x);
	pthread_mutex_unlock(&x->mu);
}

/* ----------------------------------------------------------------- read */

/* Base's bytes of [off, off+len) (past base's end reads zeroes). */
static int base_read(struct rs_asof *x, uint64_t off, uint64_t len, uint8_t *p)
{
	if (x->base_empty) {
		memset(p, 0, len);
		return 0;
	}
	ssize_t n = rw_sys_pread_full(x->base_fd, p, len, (off_t)off);
	if (n < 0)
		return rw_err_set((int)n, "cannot read base image of disk '%s' "
				  "at offset %" PRIu64 ": %s", x->d.name, off,
				  rw_strerror((int)n));
	if ((uint64_t)n < len)
		memset(p + n, 0, len - (uint64_t)n);
	return 0;
}

/* A read through the map: runs of blocks of one kind at a time. */
static int map_read(struct rs_asof *x, struct slot **sl, uint64_t off,
		    uint64_t len, uint8_t *p)
{
	const struct rs_map *m = &x->map;
	uint64_t bs = x->d.block_size, end = off + len;
	size_t k = rs_map_lower(m, off / bs);
	int err;

	while (off < end) {
		uint64_t b = off / bs;
		while (k < m->n && m->e[k].block < b)
			k++;
		const struct rs_ent *e = k < m->n && m->e[k].block == b ?
					 &m->e[k] : NULL;
		/* The run [off, run_end): blocks of the same source. */
		uint64_t run_end = (b + 1) * bs;
		size_t kk = k;
		if (!e) {
			uint64_t next = k < m->n ? m->e[k].block * bs : end;
			run_end = next;
		} else if (e->src == RS_SRC_ZERO || e->src == RS_SRC_REC) {
			while (kk + 1 < m->n && m->e[kk + 1].block ==
			       m->e[kk].block + 1 && m->e[kk + 1].src == e->src &&
			       (e->src == RS_SRC_ZERO ||
				loc_eq(&m->e[kk + 1].loc, &e->loc)))
				kk++;
			run_end = (m->e[kk].block + 1) * bs;
		}
		if (run_end > end)
			run_end = end;
		uint64_t n = run_end - off;
		if (!e) {
			err = base_read(x, off, n, p);
		} else if (e->src == RS_SRC_ZERO) {
			memset(p, 0, n);
			err = 0;
		} else if (e->src == RS_SRC_REC) {
			struct crec *c;
			err = rec_get(x, sl, &e->loc, &c);
			if (err == RW_ENOTFOUND || err == -ENOENT) {
				/* Folded and unlinked under us: a view
				 * finds the bytes in base. */
				rw_err_clear();
				err = view_read(x, sl, off, n, p);
			} else if (!err) {
				for (size_t t = k; !err && t <= kk &&
				     m->e[t].block * bs < run_end; t++) {
					uint64_t bo = m->e[t].block * bs;
					uint64_t part = x->d.size - bo < bs ?
							x->d.size - bo : bs;
					err = rs_rec_check(&x->d, &m->e[t],
							   &c->rec, part);
				}
				if (!err)
					memcpy(p, c->buf + (off - c->rec.offset), n);
				rec_put(x, c);
			}
		} else {
			err = view_read(x, sl, off, n, p);
		}
		if (err)
			return err;
		p += n;
		off += n;
	}
	return 0;
}

int rs_asof_read(struct rs_asof *x, uint64_t off, uint64_t len, void *buf)
{
	struct slot *sl = NULL;
	int err;

	if (!rw_range_ok(off, len, x->d.size))
		return rw_err_set(-EINVAL, "read of [%" PRIu64 ", +%" PRIu64
				  ") is outside disk '%s' (%" PRIu64 " bytes)",
				  off, len, x->d.name, x->d.size);
	if (atomic_load_explicit(&x->map_state, memory_order_acquire) ==
	    MAP_READY)
		err = map_read(x, &sl, off, len, buf);
	else
		err = view_read(x, &sl, off, len, buf);
	slot_put(x, sl);
	return err;
}

/* ------------------------------------------------------------- extents */

/* Emits [off, off+len) with flags, merging with the pending extent. */
struct ext {
	rs_extent_fn fn;
	void *arg;
	uint64_t off, len;
	unsigned flags;
};

static int ext_put(struct ext *e, uint64_t off, uint64_t len, unsigned flags)
{
	int err;

	if (!len)
		return 0;
	if (e->len && e->off + e->len == off && e->flags == flags) {
		e->len += len;
		return 0;
	}
	if (e->len && (err = e->fn(e->arg, e->off, e->len, e->flags)))
		return err;
	e->off = off;
	e->len = len;
	e->flags = flags;
	return 0;
}

/* Base's bytes of [off, end): holes (zero) and data, from SEEK_DATA. */
static int ext_base(struct rs_asof *x, struct ext *e, uint64_t off,
		    uint64_t end)
{
	const unsigned hz = RS_EXT_HOLE | RS_EXT_ZERO;

	if (x->base_empty)
		return ext_put(e, off, end - off, hz);
	while (off < end) {
		off_t d = lseek(x->base_fd, (off_t)off, SEEK_DATA);
		if (d < 0 && errno != ENXIO)
			return ext_put(e, off, end - off, 0); /* unknown: data */
		uint64_t data = d < 0 || (uint64_t)d > end ? end : (uint64_t)d;
		int err = ext_put(e, off, data - off, hz);
		if (err || data == end)
			return err;
		off_t h = lseek(x->base_fd, (off_t)data, SEEK_HOLE);
		uint64_t hole = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
		if ((err = ext_put(e, data, hole - data, 0)))
			return err;
		off = hole;
	}
	return 0;
}

int rs_asof_extents(struct rs_asof *x, uint64_t off, uint64_t len,
		    rs_extent_fn fn, void *arg)
{
	struct ext e = { .fn = fn, .arg = arg };
	uint64_t bs = x->d.block_size, end = off + len;
	int err = 0;

	if (!rw_range_ok(off, len, x->d.size))
		return rw_err_set(-EINVAL, "extents of [%" PRIu64 ", +%" PRIu64
				  ") are outside disk '%s' (%" PRIu64 " bytes)",
				  off, len, x->d.name, x->d.size);
	if (atomic_load_explicit(&x->map_state, memory_order_acquire) !=
	    MAP_READY) {
		/* Not known yet: all data, which is always a true answer. */
		err = ext_put(&e, off, len, 0);
		goto out;
	}
	const struct rs_map *m = &x->map;
	size_t k = rs_map_lower(m, off / bs);
	while (off < end) {
		uint64_t b = off / bs;
		while (k < m->n && m->e[k].block < b)
			k++;
		const struct rs_ent *en = k < m->n && m->e[k].block == b ?
					  &m->e[k] : NULL;
		uint64_t next;
		if (!en) {
			next = k < m->n ? m->e[k].block * bs : end;
			if (next > end)
				next = end;
			err = ext_base(x, &e, off, next);
		} else {
			next = (b + 1) * bs;
			if (next > end)
				next = end;
			err = ext_put(&e, off, next - off,
				      en->src == RS_SRC_ZERO ?
				      RS_EXT_HOLE | RS_EXT_ZERO : 0);
		}
		if (err)
			return err;
		off = next;
	}
out:
	if (!err && e.len)
		err = fn(arg, e.off, e.len, e.flags);
	return err;
}
