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
 * appender.  Slots keep their buffers between uses.
 *
 * Rejected alternatives: compressing in the flushing thread (a single
 * appender that flushes every megabyte would still use one core); a
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
#define JR_POOL_MIN_BYTES (8u << 20)

struct worker_arg {
	struct jr_writer *w;
	unsigned idx;
};

/* Compresses one claimed job (mutex not held) and encodes its header. */
static void compress_job(struct jr_writer *w, struct jr_cctx *cc,
			 struct jr_job *job)
{
	size_t n = 0;
	uint32_t len = job->rec.length;
	size_t bound = jr_zstd_bound(len);

	if (bound > job->z_cap) {
		uint8_t *nb = realloc(job->z, bound);
		if (nb) {
			job->z = nb;
			job->z_cap = bound;
		}
	}
	if (bound <= job->z_cap)
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

/* Next job to compress, skipping ones queued as done; NULL when none. */
static struct jr_job *claim(struct jr_pool *p)
{
	while (p->claim < p->tail) {
		struct jr_job *job = &p->ring[p->claim % p->cap];
		p->claim++;
		if (job->state == JR_JOB_QUEUED) {
			job->state = JR_JOB_BUSY;
			return job;
		}
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct worker_arg *wa = arg;
	struct jr_writer *w = wa->w;
	struct jr_pool *p = w->pool;
	struct jr_cctx *cc = p->cc[wa->idx];

	free(wa);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct jr_job *job = NULL;
		while (!p->stop && !(job = claim(p)))
			pthread_cond_wait(&p->work_cv, &w->mu);
		if (!job)
			break; /* stop, and nothing claimed */
		pthread_mutex_unlock(&w->mu);
		compress_job(w, cc, job);
		pthread_mutex_lock(&w->mu);
		job->state = JR_JOB_DONE;
		/* After a sticky error nothing is placed any more; the job
		 * stays in the ring until the writer is freed. */
		jr_writer_place_ready(w);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
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
	p->max_bytes = 4 * w->o.batch_bytes;
	if (p->max_bytes < JR_POOL_MIN_BYTES)
		p->max_bytes = JR_POOL_MIN_BYTES;
	p->ring = calloc(p->cap, sizeof(*p->ring));
	p->cc = calloc(n, sizeof(*p->cc));
	p->th = calloc(n, sizeof(*p->th));
	if (!p->ring || !p->cc || !p->th)
		return -ENOMEM; /* the caller frees w, and so p */
	for (unsigned i = 0; i < n; i++)
		if ((err = jr_cctx_new(&p->cc[i], JR_ZSTD_LEVEL_DEFAULT)))
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
	if (p->ring)
		for (unsigned i = 0; i < p->cap; i++) {
			free(p->ring[i].raw);
			free(p->ring[i].z);
		}
	free(p->ring);
	free(p->cc);
	free(p->th);
	pthread_cond_destroy(&p->work_cv);
	free(p);
	w->pool = NULL;
}
