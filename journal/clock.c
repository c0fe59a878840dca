/*
 * clock.c — the store-wide (seq, timestamp) source.
 *
 * One mutex guards two integers: take() hands out seq = next++ and
 * ts = max(wall clock, last + 1), so timestamps are strictly increasing
 * in seq order even when the wall clock steps back (DESIGN.md invariant
 * 7).  A lock-free version (a 128-bit CAS over both fields) was rejected:
 * take() runs under the writer's lock once per record, where a short
 * uncontended mutex costs nothing measurable, and the mutex version is
 * obviously correct.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct jr_clock {
	pthread_mutex_t mu;
	uint64_t next_seq;
	uint64_t last_ts;
};

int jr_clock_new(struct jr_clock **out, uint64_t next_seq, uint64_t last_ts)
{
	struct jr_clock *c;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	c->next_seq = next_seq ? next_seq : 1;
	c->last_ts = last_ts;
	*out = c;
	return 0;
}

void jr_clock_free(struct jr_clock *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->mu);
	free(c);
}

void jr_clock_observe(struct jr_clock *c, uint64_t seq, uint64_t ts)
{
	pthread_mutex_lock(&c->mu);
	if (seq != UINT64_MAX && c->next_seq <= seq)
		c->next_seq = seq + 1;
	if (c->last_ts < ts)
		c->last_ts = ts;
	pthread_mutex_unlock(&c->mu);
}

void jr_clock_take(struct jr_clock *c, uint64_t *seq, uint64_t *ts)
{
	uint64_t now = rw_clock_ns();

	pthread_mutex_lock(&c->mu);
	*seq = c->next_seq++;
	if (now <= c->last_ts)
		now = c->last_ts + 1;
	c->last_ts = now;
	*ts = now;
	pthread_mutex_unlock(&c->mu);
}

uint64_t jr_clock_peek(struct jr_clock *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t s = c->next_seq;
	pthread_mutex_unlock(&c->mu);
	return s;
}
