/*
 * pool.c — the writer's compression workers (jr_writer_opts.compress_threads).
 *
 * Why: one appending thread that compresses its own records is bound by
 * zstd on one core, while the file side (io_uring write + fdatasync) is
 * mostly waiting.  With workers, jr_writer_append copies the payload into
 * a queue slot, takes the seq under the writer's mutex and returns; the
 * workers compress queued payloads in parallel, each with its own zstd
 * context, and encode the record header (crc included) themselves.
 *
 * How the order is kept: the queue is a ring of jobs in seq order (the
 * seq is taken under the same mutex that appends to the ring).  Workers
 * claim jobs in ring order but finish in any order; the one that marks
 * a job done then calls jr_writer_place_ready(), which moves finished
 * jobs from the ring's head into the pending buffer and stops at the
 * first unfinished one, so the file still receives records in seq order.
 * Only one thread places at a time (w->placing); placing may write out a
 * full batch, so a worker can be the I/O leader and hit a write error,
 * which is recorded as the writer's sticky error like any other.
 *
 * Everything here is guarded by the writer's mutex; workers sleep on
 * their own condition variable (work_cv) so waking one for a job does
 * not wake every flusher.  The ring is bounded (slots and raw bytes):
 * a full ring makes append wait, which is the back-pressure on a fast
 * appender.  Payload buffers go back to a last-in first-out stack when
 * their job is placed, so the next append copies into memory that is
 * still in the cache (per-slot buffers cycled 16 MiB of 64 KiB records
 * through memory and doubled the time spent in memcpy).
 *
 * A thread waiting in flush for its records helps: it claims queued jobs
 * and, with raw_when_behind (the default), stores them raw — the flush
 * then waits for the disk, not for zstd, as capture requires — or else
 * compresses them with the pool's one helper context instead of
 * sleeping.  On a busy machine a worker's wake-up can take milliseconds,
 * while the flushing thread is already running; without the help, two
 * workers were slower than no workers under load.
 *
 * Rejected alternatives: compressing only in the flushing thread (a
 * single appender that flushes every megabyte would still use one core); a
 * per-record heap allocation handed to the workers (a malloc/free per
 * record and no bound on memory); zstd's own multithreading (it splits
 * one input into jobs of at least 512 KiB, our records are 4-64 KiB).
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Queue bounds: slots, and raw bytes beyond which append waits (a job
 * larger than that is still admitted when the queue is empty). */
#define JR_POOL_SLOTS 256u
#define JR_POOL_MIN_BYTES (1u << 20)

/* Tests only: while set, workers claim nothing (read under the mutex). */
bool jr_test_hold_workers;

struct worker_arg {
	struct jr_writer *w;
	unsigned idx;
};

/* Spares kept, and the largest kept (a 32 MiB write's buffer is not). */
#define JR_POOL_SPARES (2 * JR_POOL_SLOTS)
#define JR_POOL_SPARE_MAX (4u << 20)

int jr_pool_buf_get(struct jr_pool *p, size_t need, uint8_t **buf,
		    size_t *cap)
{
	uint8_t *b = NULL;
	size_t c = 0;

	if (*buf) /* never: jobs give their buffers back when placed */
		jr_pool_buf_put(p, buf, cap);
	if (p->nspare) {
		p->nspare--;
		b = p->spare[p->nspare].p;
		c = p->spare[p->nspare].cap;
	}
	if (c < need) {
		uint8_t *nb = realloc(b, need);
		if (!nb) {
			free(b);
			return -ENOMEM;
		}
		b = nb;
		c = need;
	}
	*buf = b;
	*cap = c;
	return 0;
}

void jr_pool_buf_put(struct jr_pool *p, uint8_t **buf, size_t *cap)
{
	if (!*buf)
		return;
	if (p->nspare < p->spare_cap && *cap <= JR_POOL_SPARE_MAX) {
		p->spare[p->nspare].p = *buf;
		p->spare[p->nspare].cap = *cap;
		p->nspare++;
	} else {
		free(*buf);
	}
	*buf = NULL;
	*cap = 0;
}

/* Compresses one claimed job (mutex not held) and encodes its header;
 * job->z was given by claim() (NULL: no memory, store raw); raw: store it
 * raw without trying. */
static void compress_job(struct jr_writer *w, struct jr_cctx *cc,
			 struct jr_job *job, bool raw)
{
	size_t n = 0;
	uint32_t len = job->rec.length;

	if (job->z && !raw)
		n = jr_zstd_compress(cc, job->level, job->z, job->z_cap,
				     job->raw, len);
	/* n == 0: no memory, or it did not pay: store raw. */
	if (n) {
		job->rec.flags = JR_F_ZSTD;
		job->rec.stored_len = (uint32_t)n;
		job->payload = job->z;
	} else {
		job->rec.flags = 0;
		job->rec.stored_len = len;
		job->payload = job->raw;
	}
	job->rec.disk_id = w->o.disk_id;
	jr_rec_encode(&job->rec, job->hdr, job->payload);
	job->hdr_ok = true;
}

/*
 * Claims the next jobs to compress (skipping ones queued as done): at
 * least one, then following ones while they add up to less than
 * JR_POOL_CLAIM_BYTES, so small records cost one lock round trip per
 * batch rather than per record.  Returns how many (0: none).
 */
#define JR_POOL_CLAIM_MAX 32u
#define JR_POOL_CLAIM_BYTES (64u << 10)

static unsigned claim(struct jr_pool *p, struct jr_job **jobs)
{
	unsigned n = 0;
	size_t bytes = 0;

	while (p->claim < p->tail && n < JR_POOL_CLAIM_MAX) {
		struct jr_job *job = &p->ring[p->claim % p->cap];
		if (job->state != JR_JOB_QUEUED) {
			p->claim++;
			continue;
		}
		if (n && bytes + job->rec.length > JR_POOL_CLAIM_BYTES)
			break;
		p->claim++;
		job->state = JR_JOB_BUSY;
		if (jr_pool_buf_get(p, jr_zstd_bound(job->rec.length), &job->z,
				    &job->z_cap))
			job->z = NULL;
		bytes += job->rec.length;
		jobs[n++] = job;
	}
	return n;
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct jr_writer *w = wa->w;
	struct jr_pool *p = w->pool;
	struct jr_cctx *cc = p->cc[wa->idx];
	struct jr_job *jobs[JR_POOL_CLAIM_MAX];

	free(wa);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		unsigned n = 0;
		while (!p->stop && (__atomic_load_n(&jr_test_hold_workers, __ATOMIC_SEQ_CST) ||
					   !(n = claim(p, jobs))))
			pthread_cond_wait(&p->work_cv, &w->mu);
		if (!n)
			break; /* stop, and nothing claimed */
		pthread_mutex_unlock(&w->mu);
		for (unsigned i = 0; i < n; i++)
			compress_job(w, cc, jobs[i], false);
		pthread_mutex_lock(&w->mu);
		for (unsigned i = 0; i < n; i++)
			jobs[i]->state = JR_JOB_DONE;
		/* After a sticky error nothing is placed any more; the jobs
		 * stay in the ring until the writer is freed. */
		jr_writer_place_ready(w);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

bool jr_pool_help(struct jr_writer *w)
{
	struct jr_pool *p = w->pool;
	struct jr_job *jobs[JR_POOL_CLAIM_MAX];
	unsigned n;

	bool raw = w->o.raw_when_behind;

	if (!p || p->helping || p->stop || !(n = claim(p, jobs)))
		return false;
	p->helping = true;
	if (raw)
		for (unsigned i = 0; i < n; i++)
			w->st.raw_behind += jobs[i]->rec.type == JR_WRITE;
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = 0; i < n; i++)
		compress_job(w, p->help_cc, jobs[i], raw);
	pthread_mutex_lock(&w->mu);
	for (unsigned i = 0; i < n; i++)
		jobs[i]->state = JR_JOB_DONE;
	p->helping = false;
	jr_writer_place_ready(w);
	return true;
}

int jr_pool_start(struct jr_writer *w)
{
	unsigned n = w->o.compress_threads;
	struct jr_pool *p;
	int err = 0;

	if (n == 0)
		return 0;
	if (n > JR_MAX_COMPRESS_THREADS)
		return rw_err_set(-EINVAL, "journal '%s': %u compression threads "
				  "(at most %u)", w->dir, n,
				  JR_MAX_COMPRESS_THREADS);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_cond_init(&p->work_cv, NULL);
	w->pool = p;
	p->cap = JR_POOL_SLOTS;
	p->max_bytes = 4 * w->o.batch_bytes; /* 4 MiB by default */
	if (p->max_bytes < JR_POOL_MIN_BYTES)
		p->max_bytes = JR_POOL_MIN_BYTES;
	p->ring = calloc(p->cap, sizeof(*p->ring));
	p->spare_cap = JR_POOL_SPARES;
	p->spare = calloc(p->spare_cap, sizeof(*p->spare));
	p->cc = calloc(n, sizeof(*p->cc));
	p->th = calloc(n, sizeof(*p->th));
	if (!p->ring || !p->spare || !p->cc || !p->th)
		return -ENOMEM; /* the caller frees w, and so p */
	for (unsigned i = 0; i < n; i++)
		if ((err = jr_cctx_new(&p->cc[i], JR_ZSTD_LEVEL_DEFAULT)))
			return err;
	if ((err = jr_cctx_new(&p->help_cc, JR_ZSTD_LEVEL_DEFAULT)))
		return err;
	for (unsigned i = 0; i < n; i++) {
		struct worker_arg *wa = malloc(sizeof(*wa));
		if (!wa)
			return -ENOMEM;
		*wa = (struct worker_arg){ .w = w, .idx = i };
		err = -pthread_create(&p->th[i], NULL, worker_main, wa);
		if (err) {
			free(wa);
			return rw_err_set(err, "journal '%s': cannot start a "
					  "compression thread: %s", w->dir,
					  rw_strerror(err));
		}
		p->nth++;
	}
	return 0;
}

void jr_pool_free(struct jr_writer *w)
{
	struct jr_pool *p = w->pool;

	if (!p)
		return;
	pthread_mutex_lock(&w->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->work_cv);
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = 0; i < p->nth; i++)
		pthread_join(p->th[i], NULL);
	if (p->cc)
		for (unsigned i = 0; i < w->o.compress_threads; i++)
			jr_cctx_free(p->cc[i]);
	jr_cctx_free(p->help_cc);
	if (p->ring)
		for (unsigned i = 0; i < p->cap; i++) {
			free(p->ring[i].raw);
			free(p->ring[i].z);
		}
	for (unsigned i = 0; i < p->nspare; i++)
		free(p->spare[i].p);
	free(p->spare);
	free(p->ring);
	free(p->cc);
	free(p->th);
	pthread_cond_destroy(&p->work_cv);
	free(p);
	w->pool = NULL;
}
