/*
 * serve_compact.c — `rewind serve --retain D --compact-every I`: the
 * server compacts its own store on a schedule.
 *
 * How: a thread wakes every I (monotonic condvar) and runs the same job
 * as `rewind compact --store STORE --retain D --background` (idle I/O and
 * CPU priority, paced writeback: the guest comes first) in a child process
 * (posix_spawn of /proc/self/exe), waits for it, and logs a failure; the
 * child logs what it folded and freed.  Stopping wakes the thread, sends
 * SIGTERM to a running child (compaction is crash-safe: the next run
 * finishes it) and joins.
 *
 * Why a child process and not rs_compact_run() on a second struct ix in
 * this thread: LMDB forbids opening one environment twice in a process
 * (its lock file uses POSIX record locks, which are per process: a second
 * open believes it is alone and resets the reader table under the
 * server's readers, and closing it drops the server's locks).  The server
 * keeps its single handle; the child has its own process, and LMDB
 * serialises its writes with the server's as between any two processes.
 * Rejected too: fork() without exec from this multi-threaded process.
 */
#include "cli/cli.h"
#include "common/rw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct cli_compact_job;
int cli_compact_job_start(struct cli_compact_job **out, const char *store,
			  const char *retain, const char *max_journal,
			  const char *over_budget, uint64_t every_ns);
void cli_compact_job_stop(struct cli_compact_job *j);

extern char **environ;

struct cli_compact_job {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pid_t child;
	char *store, *retain;
	char *max_journal, *over_budget;   /* both or neither */
	uint64_t every_ns;
};

static void run_once(struct cli_compact_job *j)
{
	char *argv[] = { (char *)"rewind", (char *)"compact", (char *)"--store",
			 j->store, (char *)"--retain", j->retain,
			 (char *)"--background",
			 j->max_journal ? (char *)"--max-journal" : NULL,
			 j->max_journal, (char *)"--over-budget", j->over_budget,
			 NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	pid_t pid;
	int st = 0, e;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGPIPE);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pthread_mutex_lock(&j->mu);
	e = j->stop ? ECANCELED
		: posix_spawn(&pid, "/proc/self/exe", &fa, &at, argv, environ);
	if (!e)
		j->child = pid;
	pthread_mutex_unlock(&j->mu);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (e) {
		if (e != ECANCELED)
			rw_log(RW_LOG_WARN, "scheduled compaction of store '%s' could not start: %s",
			       j->store, strerror(e));
		return;
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&j->mu);
	j->child = 0;
	pthread_mutex_unlock(&j->mu);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
		rw_log(RW_LOG_WARN, "scheduled compaction of store '%s': a journal is over "
		       "--max-journal and --over-budget refuse keeps its history",
		       j->store);
	else if (WIFEXITED(st))
		rw_log(RW_LOG_WARN, "scheduled compaction of store '%s' exited with status %d",
		       j->store, WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		rw_log(RW_LOG_WARN, "scheduled compaction of store '%s' was stopped by signal %d",
		       j->store, WTERMSIG(st));
}

static void *job_main(void *arg)
{
	struct cli_compact_job *j = arg;
	sigset_t set;

	/* Signals are for the accept loop's thread. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + j->every_ns;
		ts.tv_sec += (time_t)(ns / 1000000000u);
		ts.tv_nsec = (long)(ns % 1000000000u);
		pthread_mutex_lock(&j->mu);
		while (!j->stop &&
		       pthread_cond_timedwait(&j->cv, &j->mu, &ts) != ETIMEDOUT)
			;
		bool stop = j->stop;
		pthread_mutex_unlock(&j->mu);
		if (stop)
			break;
		run_once(j);
	}
	return NULL;
}

int cli_compact_job_start(struct cli_compact_job **out, const char *store,
			  const char *retain, const char *max_journal,
			  const char *over_budget, uint64_t every_ns)
{
	struct cli_compact_job *j = calloc(1, sizeof(*j));
	pthread_condattr_t ca;
	int e;

	*out = NULL;
	if (!j)
		return -ENOMEM;
	j->store = strdup(store);
	j->retain = strdup(retain);
	j->every_ns = every_ns;
	if (max_journal && over_budget) {
		j->max_journal = strdup(max_journal);
		j->over_budget = strdup(over_budget);
		if (!j->max_journal || !j->over_budget) {
			e = -ENOMEM;
			goto fail;
		}
	}
	if (!j->store || !j->retain) {
		e = -ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&j->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((e = pthread_create(&j->th, NULL, job_main, j))) {
		pthread_cond_destroy(&j->cv);
		pthread_mutex_destroy(&j->mu);
		e = -e;
		goto fail;
	}
	*out = j;
	return 0;
fail:
	free(j->store);
	free(j->retain);
	free(j->max_journal);
	free(j->over_budget);
	free(j);
	return e;
}

void cli_compact_job_stop(struct cli_compact_job *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->mu);
	j->stop = true;
	if (j->child > 0)
		kill(j->child, SIGTERM);
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	pthread_join(j->th, NULL);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j->store);
	free(j->retain);
	free(j->max_journal);
	free(j->over_budget);
	free(j);
}
