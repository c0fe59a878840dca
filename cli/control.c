/*
 * control.c — the control socket of `rewind serve`, and rollback through a
 * server's write path.
 *
 * One thread accepts on STORE/control.sock and handles one request at a
 * time (rollbacks of one store are rare and must not interleave).  A
 * rollback claims the disk (refused while clients are connected; new
 * clients are refused while it runs), makes the index current, resolves
 * WHEN on the server's own index — so "a time just before the rollback"
 * sees every write acknowledged before it — and hands rs_rollback() a sink
 * that writes through cap_server_disk_write(): the rewrites become
 * ordinary journal records, and the rollback can itself be rolled back.
 *
 * Carrying the request over NBD (a client writing the blocks) was
 * rejected: the server could not refuse other clients for the duration,
 * and the CLI would need its own view of the index as of the server's.
 */
#include "cli/control.h"

#include "capture/cap.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "restore/rs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct sink_ctx {
	struct cap_server *s;
	const char *name;
};

static int sink(void *arg, uint64_t off, uint32_t len, const void *data)
{
	struct sink_ctx *c = arg;

	return cap_server_disk_write(c->s, c->name, data ? JR_WRITE : JR_ZERO,
				     off, len, data);
}

int cli_rollback_exec(struct cap_server *s, const char *name, const char *when,
		      struct cli_rollback_result *res)
{
	struct ix *ix = cap_server_ix(s);
	struct rw_when w;
	struct ix_disk d;
	struct rs_rollback_stats st;
	uint64_t ts;
	int err;

	memset(res, 0, sizeof(*res));
	if ((err = rw_parse_when(when, rw_clock_ns(), &w)))
		return err;
	if ((err = cap_server_disk_claim(s, name)))
		return err;
	if ((err = cap_server_index_now(s)) ||
	    (err = ix_disk_get(ix, name, &d)) ||
	    (err = rs_resolve(ix, &d, &w, &res->seq, &ts)))
		goto out;
	res->before_seq = d.last_indexed_seq;
	struct sink_ctx c = { s, name };
	err = rs_rollback(ix, &d, res->seq, d.last_indexed_seq, sink, &c, NULL,
			  NULL, &st);
	/* Whatever was rewritten is history: make it durable and indexed. */
	int e2 = cap_server_disk_flush(s, name);
	if (!err)
		err = e2;
	e2 = cap_server_index_now(s);
	if (!err)
		err = e2;
	if (!err && !(err = ix_disk_get(ix, name, &d))) {
		res->last_seq = d.last_indexed_seq;
		res->blocks = st.blocks;
		res->data_bytes = st.data_bytes;
		res->zero_bytes = st.zero_bytes;
	}
out:
	cap_server_disk_release(s, name);
	return err;
}

struct cli_control {
	struct cap_server *s;
	char path[4096];
	char store[4096];
	int fd;
	int stop_pipe[2];
	pthread_t thread;
};

/* Writes all len bytes.  0 or -errno (-EIO when the peer took nothing). */
static int write_all(int fd, const char *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t k = write(fd, p + off, len - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		off += (size_t)k;
	}
	return 0;
}

static void stats_reply(struct cli_control *cc, int fd, bool json,
			const char *disk)
{
	struct cap_store_figures fig;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	rw_err_clear();
	int err = cap_server_stats(cc->s, disk, &fig);
	if (err) {
		char resp[1200];
		const char *m = rw_err_msg();
		snprintf(resp, sizeof(resp), "error %d %s\n", err,
			 m && *m ? m : rw_strerror(err));
		write_all(fd, resp, strlen(resp));
		return;
	}
	if ((f = open_memstream(&buf, &len))) {
		fputs("ok\n", f);
		cli_stats_print(f, &fig, cc->store, json);
		fclose(f);
		write_all(fd, buf, len);
	}
	free(buf);
	cap_store_figures_free(&fig);
}

static void handle(struct cli_control *cc, int fd)
{
	char req[1024], resp[1200];
	size_t n = 0;

	/* One line, bounded, within a deadline. */
	while (n < sizeof(req) - 1) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 5000) <= 0)
			return;
		ssize_t k = read(fd, req + n, sizeof(req) - 1 - n);
		if (k <= 0)
			return;
		n += (size_t)k;
		if (memchr(req, '\n', n))
			break;
	}
	req[n] = '\0';
	char *nl = strchr(req, '\n');
	if (!nl) {
		snprintf(resp, sizeof(resp), "error %d request too long\n", -EINVAL);
		goto reply;
	}
	*nl = '\0';
	char *save = NULL, *verb = strtok_r(req, " ", &save);
	char *name = strtok_r(NULL, " ", &save);
	char *when = strtok_r(NULL, "", &save);
	if (verb && !strcmp(verb, "stats")) {
		/* "stats json|text [DISK]": the report itself, then EOF */
		stats_reply(cc, fd, name && !strcmp(name, "json"), when);
		return;
	}
	if (verb && !strcmp(verb, "index") && !name) {
		/* A reader in another process wants every acknowledged write
		 * indexed before it resolves a point in time. */
		rw_err_clear();
		int ierr = cap_server_index_now(cc->s);
		if (ierr)
			snprintf(resp, sizeof(resp), "error %d %s\n", ierr,
				 *rw_err_msg() ? rw_err_msg() : rw_strerror(ierr));
		else
			snprintf(resp, sizeof(resp), "ok\n");
		goto reply;
	}
	if (!verb || strcmp(verb, "rollback") || !name || !when) {
		snprintf(resp, sizeof(resp), "error %d unknown request\n", -EINVAL);
		goto reply;
	}
	struct cli_rollback_result r;
	rw_err_clear();
	uint64_t t0 = rw_mono_ns();
	int err = cli_rollback_exec(cc->s, name, when, &r);
	if (err) {
		const char *m = rw_err_msg();
		snprintf(resp, sizeof(resp), "error %d %s\n", err,
			 m && *m ? m : rw_strerror(err));
		rw_log(RW_LOG_WARN, "rollback of disk '%s' to %s refused: %s",
		       name, when, m && *m ? m : rw_strerror(err));
	} else {
		snprintf(resp, sizeof(resp), "ok %" PRIu64 " %" PRIu64 " %" PRIu64
			 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", r.blocks,
			 r.data_bytes, r.zero_bytes, r.seq, r.before_seq,
			 r.last_seq);
		rw_log(RW_LOG_INFO, "rolled disk '%s' back to seq %" PRIu64
		       ": %" PRIu64 " blocks rewritten as seq %" PRIu64 "..%"
		       PRIu64 " in %.3fs (undo: --at seq:%" PRIu64 ")", name,
		       r.seq, r.blocks, r.before_seq + 1, r.last_seq,
		       (double)(rw_mono_ns() - t0) / 1e9, r.before_seq);
	}
reply:;
	size_t len = strlen(resp), off = 0;
	while (off < len) {
		ssize_t k = write(fd, resp + off, len - off);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
}

static void *control_main(void *arg)
{
	struct cli_control *cc = arg;

	for (;;) {
		struct pollfd p[2] = { { cc->fd, POLLIN, 0 },
				       { cc->stop_pipe[0], POLLIN, 0 } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		int fd = accept4(cc->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		handle(cc, fd);
		close(fd);
	}
	return NULL;
}

static int control_path(const char *store_dir, char *buf, size_t n)
{
	struct sockaddr_un sa;

	if ((size_t)snprintf(buf, n, "%s/control.sock", store_dir) >= n ||
	    strlen(buf) >= sizeof(sa.sun_path))
		return rw_err_set(-ENAMETOOLONG, "control socket path '%s/"
				  "control.sock' is too long", store_dir);
	return 0;
}

int cli_control_start(struct cli_control **out, struct cap_server *s,
		      const char *store_dir)
{
	struct cli_control *cc = calloc(1, sizeof(*cc));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int err;

	if (!cc)
		return -ENOMEM;
	cc->s = s;
	snprintf(cc->store, sizeof(cc->store), "%s", store_dir);
	cc->fd = cc->stop_pipe[0] = cc->stop_pipe[1] = -1;
	if ((err = control_path(store_dir, cc->path, sizeof(cc->path))))
		goto fail;
	memcpy(sa.sun_path, cc->path, strlen(cc->path) + 1);
	/* We hold the store lock: a socket file left here is stale. */
	unlink(cc->path);
	cc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	mode_t old = umask(077);
	if (cc->fd < 0 || bind(cc->fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(cc->fd, 8)) {
		err = rw_err_set(-errno, "cannot listen on '%s': %s", cc->path,
				 strerror(errno));
		umask(old);
		goto fail;
	}
	umask(old);
	if (pipe2(cc->stop_pipe, O_CLOEXEC)) {
		err = -errno;
		goto fail;
	}
	if ((err = -pthread_create(&cc->thread, NULL, control_main, cc)))
		goto fail;
	*out = cc;
	return 0;
fail:
	if (cc->fd >= 0) {
		close(cc->fd);
		unlink(cc->path);
	}
	if (cc->stop_pipe[0] >= 0) {
		close(cc->stop_pipe[0]);
		close(cc->stop_pipe[1]);
	}
	free(cc);
	return err;
}

void cli_control_stop(struct cli_control *cc)
{
	if (!cc)
		return;
	ssize_t k = write(cc->stop_pipe[1], "x", 1);
	(void)k;
	pthread_join(cc->thread, NULL);
	close(cc->fd);
	unlink(cc->path);
	close(cc->stop_pipe[0]);
	close(cc->stop_pipe[1]);
	free(cc);
}

/*
 * Connects to STORE/control.sock (its path into path) and sends req.
 * Returns the socket, or -errno.
 */
static int control_send(const char *store_dir, const char *req,
			char path[4096])
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int err, fd;

	if ((err = control_path(store_dir, path, 4096)))
		return err;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		err = -errno;
	else
		err = write_all(fd, req, strlen(req));
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

int cli_control_call(const char *store_dir, const char *req, char *resp,
		     size_t respsz)
{
	char path[4096];
	int fd = control_send(store_dir, req, path);

	if (fd < 0)
		return fd;
	size_t n = 0;
	for (;;) {
		ssize_t k = read(fd, resp + n, respsz - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
		if (memchr(resp, '\n', n) || n == respsz - 1)
			break;
	}
	close(fd);
	resp[n] = '\0';
	if (!n)
		return rw_err_set(-EIO, "the server closed the control socket "
				  "'%s' without an answer", path);
	return 0;
}

int cli_control_fetch(const char *store_dir, const char *req, char **out)
{
	char path[4096];
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int err = 0, fd;

	*out = NULL;
	fd = control_send(store_dir, req, path);
	if (fd < 0)
		return fd;
	for (;;) {
		if (cap - n < 4096) {
			char *b = realloc(buf, cap ? cap * 2 : 16384);
			if (!b) {
				err = -ENOMEM;
				break;
			}
			buf = b;
			cap = cap ? cap * 2 : 16384;
		}
		ssize_t k = read(fd, buf + n, cap - n - 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			err = -errno;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (!err && !n)
		err = rw_err_set(-EIO, "the server closed the control socket "
				 "'%s' without an answer", path);
	if (err) {
		free(buf);
		return err;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

int cli_control_index(const char *store_dir)
{
	char resp[1200];
	int err = cli_control_call(store_dir, "index\n", resp, sizeof(resp));

	if (err == -ENOENT || err == -ECONNREFUSED)
		return 1;
	if (err)
		return err;
	if (!strncmp(resp, "ok", 2))
		return 0;
	char *nl = strchr(resp, '\n');
	if (nl)
		*nl = '\0';
	return rw_err_set(-EIO, "the server could not bring its index up to "
			  "date: %s", resp);
}

/* ------------------------------------------------- lost tail: head repair */

struct repair_sink {
	int fd;
	const char *name;
};

static int repair_write(void *arg, uint64_t off, uint32_t len, const void *data)
{
	static const uint8_t zeroes[64 << 10];
	struct repair_sink *rs = arg;

	if (!data && fallocate(rs->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       (off_t)off, (off_t)len) == 0)
		return 0;
	for (uint32_t done = 0; done < len;) {
		uint32_t n = len - done;
		const void *p = data ? (const uint8_t *)data + done : zeroes;
		if (!data && n > sizeof(zeroes))
			n = sizeof(zeroes);
		int err = rw_sys_pwrite_full(rs->fd, p, n, (off_t)(off + done));
		if (err)
			return rw_err_set(err, "disk '%s': cannot rewrite head.img "
					  "at offset %" PRIu64 ": %s", rs->name,
					  off + done, rw_strerror(err));
		done += n;
	}
	return 0;
}

int cli_repair_head(void *arg, struct ix *ix, const struct ix_disk *d,
		    uint64_t after, uint64_t upto, int head_fd,
		    uint64_t *blocks)
{
	struct repair_sink rs = { head_fd, d->name };
	struct rs_rollback_stats st = { 0 };
	int err;

	(void)arg;
	err = rs_undo_lost(ix, d, after, upto, repair_write, &rs, &st);
	*blocks = st.blocks;
	return err;
}

int cli_open_offline(struct cap_server **out, const char *store_dir)
{
	struct cap_server_opts o;

	cap_server_opts_default(&o);
	o.store_dir = store_dir;
	o.no_listen = true;
	o.repair_head = cli_repair_head;
	return cap_server_open(out, &o);
}
