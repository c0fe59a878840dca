/*
 * test_capture.c — capture's request validation, error mapping and
 * advertised flags (pure functions), and an in-process server: handshake
 * by NBD_OPT_EXPORT_NAME and NBD_OPT_GO over a real unix socket, a write
 * with FUA read back, a second server refused on the locked store, and a
 * stop/close/reopen cycle that keeps the data (LSan checks the shutdown
 * path of the whole server in this process).
 */
#include "capture/cap.h"
#include "capture/nbd-protocol.h"
#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"
#include "tests/testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MIB (1024u * 1024u)
#define SIZE (16ull * MIB)

static uint32_t check(uint16_t type, uint16_t flags, uint64_t off,
		      uint32_t count, bool sr)
{
	struct cap_req r = { .type = type, .flags = flags, .offset = off,
			     .count = count };
	return cap_req_check(&r, SIZE, sr, JR_MAX_WRITE);
}

static void test_req_check(void)
{
	/* valid */
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0, 0, 4096, false), 0);
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, SIZE - 512, 512,
			      false), 0);
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE |
			      NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA, 0,
			      (uint32_t)SIZE, false), 0);
	CU_ASSERT_EQUAL(check(NBD_CMD_TRIM, 0, 4096, 4096, false), 0);
	CU_ASSERT_EQUAL(check(NBD_CMD_FLUSH, 0, 0, 0, false), 0);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, true), 0);
	struct cap_req max = { .type = NBD_CMD_WRITE, .count = JR_MAX_WRITE };
	CU_ASSERT_EQUAL(cap_req_check(&max, 64ull * MIB, false, JR_MAX_WRITE), 0);
	/* ranges: writes past the end are ENOSPC, reads EINVAL */
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, 0, SIZE - 512, 1024, false), NBD_ENOSPC);
	CU_ASSERT_EQUAL(check(NBD_CMD_TRIM, 0, SIZE, 1, false), NBD_ENOSPC);
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE_ZEROES, 0, SIZE + 1, 1, false), NBD_ENOSPC);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0, SIZE, 1, false), NBD_EINVAL);
	/* offset + length overflow 64 bits */
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0, UINT64_MAX, 2, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, 0, UINT64_MAX - 100, 4096, false),
			NBD_ENOSPC);
	CU_ASSERT_EQUAL(check(NBD_CMD_TRIM, 0, UINT64_MAX, UINT32_MAX, false),
			NBD_ENOSPC);
	/* payload limits */
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, 0, 0, JR_MAX_WRITE + 1, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0, 0, UINT32_MAX, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0, 0, 0, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, 0, 0, 0, false), NBD_EINVAL);
	/* flags not documented for the command */
	CU_ASSERT_EQUAL(check(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_TRIM, NBD_CMD_FLAG_FAST_ZERO, 0, 512, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_READ, 0x8000, 0, 512, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_FLUSH, NBD_CMD_FLAG_NO_HOLE, 0, 0, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_DISC, 1, 0, 0, false), NBD_EINVAL);
	/* flush with reserved fields set */
	CU_ASSERT_EQUAL(check(NBD_CMD_FLUSH, 0, 1, 0, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_FLUSH, 0, 0, 1, false), NBD_EINVAL);
	/* unknown and unsupported commands */
	CU_ASSERT_EQUAL(check(NBD_CMD_CACHE, 0, 0, 512, false), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(NBD_CMD_BLOCK_STATUS, 0, 0, 512, true), NBD_EINVAL);
	CU_ASSERT_EQUAL(check(0xffff, 0, 0, 512, false), NBD_EINVAL);
}

static void test_errno_and_flags(void)
{
	CU_ASSERT_EQUAL(cap_nbd_errno(0), 0);
	CU_ASSERT_EQUAL(cap_nbd_errno(-ENOSPC), NBD_ENOSPC);
	CU_ASSERT_EQUAL(cap_nbd_errno(-EDQUOT), NBD_ENOSPC);
	CU_ASSERT_EQUAL(cap_nbd_errno(-EFBIG), NBD_ENOSPC);
	CU_ASSERT_EQUAL(cap_nbd_errno(-EIO), NBD_EIO);
	CU_ASSERT_EQUAL(cap_nbd_errno(RW_EFAILED), NBD_EIO);
	CU_ASSERT_EQUAL(cap_nbd_errno(RW_ECORRUPT), NBD_EIO);
	CU_ASSERT_EQUAL(cap_nbd_errno(-ENOTSUP), NBD_ENOTSUP);
	CU_ASSERT_EQUAL(cap_nbd_errno(-EINVAL), NBD_EINVAL);

	uint16_t f = cap_export_flags(false);
	CU_ASSERT(f & NBD_FLAG_HAS_FLAGS);
	CU_ASSERT(f & NBD_FLAG_SEND_FLUSH);
	CU_ASSERT(f & NBD_FLAG_SEND_FUA);
	CU_ASSERT(f & NBD_FLAG_SEND_TRIM);
	CU_ASSERT(f & NBD_FLAG_SEND_WRITE_ZEROES);
	CU_ASSERT(f & NBD_FLAG_SEND_FAST_ZERO);
	CU_ASSERT(f & NBD_FLAG_CAN_MULTI_CONN);
	CU_ASSERT_FALSE(f & NBD_FLAG_READ_ONLY);
	CU_ASSERT_FALSE(f & NBD_FLAG_SEND_DF); /* only with structured replies */
	CU_ASSERT(cap_export_flags(true) & NBD_FLAG_SEND_DF);
}

/* ------------------------------------------------------ in-process server */

static int xfer(int fd, void *buf, size_t n, bool out)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t k = out ? write(fd, p, n) : read(fd, p, n);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int dial(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Greeting + client flags.  Returns the handshake flags or -1. */
static int greet(int fd, uint32_t cflags)
{
	uint8_t h[18], c[4];
	if (xfer(fd, h, sizeof(h), false))
		return -1;
	if (rw_get_be64(h) != NBD_MAGIC || rw_get_be64(h + 8) != NBD_IHAVEOPT)
		return -1;
	rw_put_be32(c, cflags);
	if (xfer(fd, c, 4, true))
		return -1;
	return rw_get_be16(h + 16);
}

static int send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];
	rw_put_be64(h, NBD_IHAVEOPT);
	rw_put_be32(h + 8, opt);
	rw_put_be32(h + 12, len);
	if (xfer(fd, h, 16, true))
		return -1;
	return len ? xfer(fd, (void *)data, len, true) : 0;
}

/* Reads one option reply; returns its type, payload into buf (<= cap). */
static int64_t opt_reply(int fd, uint8_t *buf, size_t cap, uint32_t *len)
{
	uint8_t h[20];
	if (xfer(fd, h, 20, false) || rw_get_be64(h) != NBD_REP_MAGIC)
		return -1;
	*len = rw_get_be32(h + 16);
	if (*len > cap || xfer(fd, buf, *len, false))
		return -1;
	return rw_get_be32(h + 12);
}

static int request(int fd, uint16_t flags, uint16_t type, uint64_t handle,
		   uint64_t off, uint32_t count, const void *data)
{
	uint8_t h[28];
	rw_put_be32(h, NBD_REQUEST_MAGIC);
	rw_put_be16(h + 4, flags);
	rw_put_be16(h + 6, type);
	rw_put_be64(h + 8, handle);
	rw_put_be64(h + 16, off);
	rw_put_be32(h + 24, count);
	if (xfer(fd, h, 28, true))
		return -1;
	return data ? xfer(fd, (void *)data, count, true) : 0;
}

/* Simple reply: returns the error field, or -1; checks the handle. */
static int64_t simple_reply(int fd, uint64_t handle, void *data, uint32_t n)
{
	uint8_t h[16];
	if (xfer(fd, h, 16, false) || rw_get_be32(h) != NBD_SIMPLE_REPLY_MAGIC ||
	    rw_get_be64(h + 8) != handle)
		return -1;
	uint32_t err = rw_get_be32(h + 4);
	if (!err && data && xfer(fd, data, n, false))
		return -1;
	return err;
}

struct srv {
	struct cap_server *s;
	pthread_t th;
	int rc;
};

static void *run_main(void *arg)
{
	struct srv *v = arg;
	v->rc = cap_server_run(v->s);
	return NULL;
}

static int srv_start(struct srv *v, const char *store, const char *sock)
{
	struct cap_server_opts o;
	cap_server_opts_default(&o);
	o.store_dir = store;
	o.socket_path = sock;
	o.handshake_timeout_ns = 2000000000ull;
	int err = cap_server_open(&v->s, &o);
	if (err)
		return err;
	return pthread_create(&v->th, NULL, run_main, v) ? -1 : 0;
}

static int srv_stop(struct srv *v)
{
	cap_server_stop(v->s);
	pthread_join(v->th, NULL);
	int err = cap_server_close(v->s);
	return v->rc ? v->rc : err;
}

static void test_server_inprocess(void)
{
	char *dir = tu_tmpdir("cap");
	char store[512], sock[600];
	struct ix *ix = NULL;
	struct srv v = { 0 }, v2 = { 0 };
	uint8_t buf[4 + IX_NAME_MAX + 256], wbuf[4096], rbuf[4096];
	uint32_t len;
	uint64_t st = 7;

	snprintf(store, sizeof(store), "%s/s", dir);
	snprintf(sock, sizeof(sock), "%s/t.sock", dir);
	CU_ASSERT_EQUAL_FATAL(ix_store_init(store), 0);
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, store, IX_LOCK), 0);
	CU_ASSERT_EQUAL_FATAL(ix_disk_create(ix, "vm1", SIZE, 4096, NULL, NULL), 0);
	ix_close(ix);

	CU_ASSERT_EQUAL_FATAL(srv_start(&v, store, sock), 0);
	/* a second server on the same store is refused */
	CU_ASSERT_EQUAL(srv_start(&v2, store, ""), RW_EBUSY);

	/* 1: EXPORT_NAME with NO_ZEROES: size + flags, no padding */
	int fd = dial(sock);
	CU_ASSERT_FATAL(fd >= 0);
	int gf = greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	CU_ASSERT_EQUAL(gf, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	CU_ASSERT_EQUAL(send_opt(fd, NBD_OPT_EXPORT_NAME, "vm1", 3), 0);
	uint8_t er[10];
	CU_ASSERT_EQUAL(xfer(fd, er, 10, false), 0);
	CU_ASSERT_EQUAL(rw_get_be64(er), SIZE);
	CU_ASSERT_EQUAL(rw_get_be16(er + 8), cap_export_flags(false));
	tu_fill_random(&st, wbuf, sizeof(wbuf));
	CU_ASSERT_EQUAL(request(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1, 8192,
				4096, wbuf), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 1, NULL, 0), 0);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_READ, 2, 8192, 4096, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 2, rbuf, 4096), 0);
	CU_ASSERT_EQUAL(memcmp(wbuf, rbuf, 4096), 0);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_READ, 3, SIZE, 1, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 3, NULL, 0), NBD_EINVAL);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_FLUSH, 4, 0, 0, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 4, NULL, 0), 0);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_DISC, 5, 0, 0, NULL), 0);
	close(fd);

	/* 2: OPT_GO for an unknown disk, then for vm1 */
	fd = dial(sock);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE) >= 0);
	uint8_t go[4 + 8 + 2];
	rw_put_be32(go, 8);
	memcpy(go + 4, "nosuchvm", 8);
	rw_put_be16(go + 12, 0);
	CU_ASSERT_EQUAL(send_opt(fd, NBD_OPT_GO, go, sizeof(go)), 0);
	CU_ASSERT_EQUAL(opt_reply(fd, buf, sizeof(buf), &len), NBD_REP_ERR_UNKNOWN);
	rw_put_be32(go, 3);
	memcpy(go + 4, "vm1", 3);
	rw_put_be16(go + 7, 0);
	CU_ASSERT_EQUAL(send_opt(fd, NBD_OPT_GO, go, 9), 0);
	int64_t t;
	bool saw_export = false, saw_bs = false;
	while ((t = opt_reply(fd, buf, sizeof(buf), &len)) == NBD_REP_INFO) {
		uint16_t info = rw_get_be16(buf);
		if (info == NBD_INFO_EXPORT && len == 12) {
			saw_export = rw_get_be64(buf + 2) == SIZE;
		} else if (info == NBD_INFO_BLOCK_SIZE && len == 14) {
			saw_bs = rw_get_be32(buf + 2) == 512 &&
				 rw_get_be32(buf + 10) == JR_MAX_WRITE;
		}
	}
	CU_ASSERT_EQUAL(t, NBD_REP_ACK);
	CU_ASSERT(saw_export);
	CU_ASSERT(saw_bs);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_READ, 9, 8192, 4096, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 9, rbuf, 4096), 0);
	CU_ASSERT_EQUAL(memcmp(wbuf, rbuf, 4096), 0);
	close(fd); /* hard disconnect without DISC */

	CU_ASSERT_EQUAL(srv_stop(&v), 0);

	/* 3: reopen: the write is still there */
	memset(&v, 0, sizeof(v));
	CU_ASSERT_EQUAL_FATAL(srv_start(&v, store, sock), 0);
	fd = dial(sock);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE) >= 0);
	CU_ASSERT_EQUAL(send_opt(fd, NBD_OPT_EXPORT_NAME, "vm1", 3), 0);
	uint8_t er2[10 + NBD_EXPORT_NAME_PAD];
	CU_ASSERT_EQUAL(xfer(fd, er2, sizeof(er2), false), 0); /* with padding */
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_READ, 1, 8192, 4096, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 1, rbuf, 4096), 0);
	CU_ASSERT_EQUAL(memcmp(wbuf, rbuf, 4096), 0);
	close(fd);
	CU_ASSERT_EQUAL(srv_stop(&v), 0);

	tu_rmrf(dir);
	free(dir);
}

/*
 * Creates a store under dir with a disk vm1 (SIZE bytes), starts an
 * in-process server on dir/t.sock and connects to vm1 (EXPORT_NAME, no
 * zeroes).  Fills store, sock and jdir (vm1's journal: 512, 600, 700
 * bytes).  Returns the connected socket, or -1 (then v is not running).
 */
static int vm1_serve(const char *dir, char *store, char *sock, char *jdir,
		     struct srv *v)
{
	struct ix *ix = NULL;
	uint8_t er[10];

	snprintf(store, 512, "%s/s", dir);
	snprintf(sock, 600, "%s/t.sock", dir);
	snprintf(jdir, 700, "%s/disks/vm1/journal", store);
	if (ix_store_init(store) || ix_open(&ix, store, IX_LOCK))
		return -1;
	int err = ix_disk_create(ix, "vm1", SIZE, 4096, NULL, NULL);
	ix_close(ix);
	if (err || srv_start(v, store, sock))
		return -1;
	int fd = dial(sock);
	if (fd >= 0 &&
	    (greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) < 0 ||
	     send_opt(fd, NBD_OPT_EXPORT_NAME, "vm1", 3) ||
	     xfer(fd, er, sizeof(er), false))) {
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		(void)srv_stop(v);
	return fd;
}

/* Disconnects fd (NBD_CMD_DISC) and stops v.  0 or the first error. */
static int vm1_stop(int fd, struct srv *v)
{
	int err = request(fd, 0, NBD_CMD_DISC, 99, 0, 0, NULL);
	close(fd);
	int e2 = srv_stop(v);
	return err ? err : e2;
}

static int count_version(void *arg, uint64_t block, const struct ix_version *v)
{
	(void)v;
	if (block == 2)
		(*(int *)arg)++;
	return 0;
}

/*
 * Regression test for the batched write path (capture/conn.c): many
 * pipelined writes to one block, a FLUSH among them and a FUA write at
 * the end, sent in one go so the server executes them in batches.
 * Every one is answered; head ends with the last; the journal holds them
 * in the order sent (seq order = array order within a batch); and the
 * index, filled from the write path's queue, holds every version before
 * any catch-up could add what it missed.
 */
static void test_server_pipelined_batch(void)
{
	enum { N = 16 };
	char *dir = tu_tmpdir("capb");
	char store[512], sock[600], jdir[700];
	struct ix *ix = NULL;
	struct srv v = { 0 };
	static uint8_t out[(N + 1) * (28 + 4096)];
	uint8_t rbuf[4096];
	size_t o = 0;

	int fd = vm1_serve(dir, store, sock, jdir, &v);
	CU_ASSERT_FATAL(fd >= 0);

	for (int i = 0; i < N; i++) {
		uint8_t *h = out + o;
		rw_put_be32(h, NBD_REQUEST_MAGIC);
		rw_put_be16(h + 4, i == N - 1 ? NBD_CMD_FLAG_FUA : 0);
		rw_put_be16(h + 6, NBD_CMD_WRITE);
		rw_put_be64(h + 8, 100 + (uint64_t)i);
		rw_put_be64(h + 16, 8192);
		rw_put_be32(h + 24, 4096);
		memset(h + 28, i + 1, 4096);
		o += 28 + 4096;
		if (i == N / 2) {
			h = out + o;
			rw_put_be32(h, NBD_REQUEST_MAGIC);
			rw_put_be16(h + 4, 0);
			rw_put_be16(h + 6, NBD_CMD_FLUSH);
			rw_put_be64(h + 8, 200);
			rw_put_be64(h + 16, 0);
			rw_put_be32(h + 24, 0);
			o += 28;
		}
	}
	CU_ASSERT_EQUAL_FATAL(xfer(fd, out, o, true), 0);
	bool seen[N + 1] = { false };
	int nseen = 0;
	for (int i = 0; i < N + 1; i++) {
		uint8_t r[16];
		if (xfer(fd, r, 16, false))
			break;
		CU_ASSERT_EQUAL(rw_get_be32(r), NBD_SIMPLE_REPLY_MAGIC);
		CU_ASSERT_EQUAL(rw_get_be32(r + 4), 0);
		uint64_t hd = rw_get_be64(r + 8);
		int k = hd == 200 ? N : (int)(hd - 100);
		CU_ASSERT_FATAL(k >= 0 && k <= N);
		CU_ASSERT_FALSE(seen[k]);
		if (!seen[k])
			nseen++;
		seen[k] = true;
	}
	CU_ASSERT_EQUAL(nseen, N + 1);
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_READ, 1, 8192, 4096, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 1, rbuf, 4096), 0);
	CU_ASSERT_EQUAL(rbuf[0], N);
	CU_ASSERT_EQUAL(rbuf[4095], N);
	CU_ASSERT_EQUAL(vm1_stop(fd, &v), 0);

	/* The journal: the writes in the order sent, and the flush. */
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	int nw = 0, nf = 0;
	uint64_t last = 0;
	CU_ASSERT_EQUAL_FATAL(jr_reader_open(&r, jdir, 0), 0);
	while (jr_reader_next(r, &rec, &loc, &payload) == 1) {
		CU_ASSERT(rec.seq > last);
		last = rec.seq;
		if (rec.type == JR_FLUSH)
			nf++;
		if (rec.type != JR_WRITE)
			continue;
		CU_ASSERT_EQUAL(rec.offset, 8192);
		CU_ASSERT_FATAL(payload != NULL);
		CU_ASSERT_EQUAL(((const uint8_t *)payload)[0], nw + 1);
		nw++;
	}
	jr_reader_close(r);
	CU_ASSERT_EQUAL(nw, N);
	CU_ASSERT(nf >= 1);

	/* The index, opened without catch-up: every version, up to the end. */
	struct ix_disk m;
	struct ix_read *rd = NULL;
	int nv = 0;
	CU_ASSERT_EQUAL_FATAL(ix_open(&ix, store, IX_RDONLY), 0);
	CU_ASSERT_EQUAL(ix_disk_get(ix, "vm1", &m), 0);
	CU_ASSERT_EQUAL(m.last_indexed_seq, last);
	CU_ASSERT_EQUAL_FATAL(ix_read_begin(ix, &rd), 0);
	CU_ASSERT_EQUAL(ix_versions_range(rd, m.id, 0, UINT64_MAX,
					  count_version, &nv), 0);
	CU_ASSERT_EQUAL(nv, N);
	ix_read_end(rd);
	ix_close(ix);

	tu_rmrf(dir);
	free(dir);
}

/* Writes 4 KiB of `byte` at block `block`, waits for the reply, then
 * (flush) sends a FLUSH and waits for its reply. */
static void write_4k(int fd, uint64_t block, uint8_t byte, bool flush)
{
	uint8_t b[4096];

	memset(b, byte, sizeof(b));
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_WRITE, 1, 4096 * block, 4096, b), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 1, NULL, 0), 0);
	if (!flush)
		return;
	CU_ASSERT_EQUAL(request(fd, 0, NBD_CMD_FLUSH, 2, 0, 0, NULL), 0);
	CU_ASSERT_EQUAL(simple_reply(fd, 2, NULL, 0), 0);
}

/*
 * Flush anticipation (capture/conn.c rd_run, disk.c flush_behind): a
 * client writing and flushing one request at a time.  After FLUSH_HIST
 * (4) writes each followed by a flush the server syncs right after each
 * write, and the flush that follows only appends its marker.  Every
 * write and every marker is in the journal, in the order sent; the
 * metric counts the flushes found covered; writes without flushes in
 * between never start it.
 */
static void test_flush_anticipation(void)
{
	enum { N = 12 };
	char *dir = tu_tmpdir("capf");
	char store[512], sock[600], jdir[700];
	struct srv v = { 0 };
	struct cap_store_figures f;

	int fd = vm1_serve(dir, store, sock, jdir, &v);
	CU_ASSERT_FATAL(fd >= 0);
	/* writes alone first: no flush follows them, nothing anticipated */
	for (int i = 0; i < N; i++)
		write_4k(fd, (uint64_t)i, (uint8_t)(0x80 + i), i == N - 1);
	CU_ASSERT_EQUAL_FATAL(cap_server_stats(v.s, "vm1", &f), 0);
	CU_ASSERT_EQUAL_FATAL(f.ndisks, 1);
	CU_ASSERT_EQUAL(f.disks[0].flushes_anticipated, 0);
	cap_store_figures_free(&f);
	/* then write + flush pairs, one request at a time; once a flush is
	 * answered its write is durable, anticipated or not (DESIGN.md
	 * invariant 2): no data record is left waiting for a sync */
	for (int i = 0; i < N; i++) {
		write_4k(fd, (uint64_t)i, (uint8_t)(i + 1), true);
		CU_ASSERT_EQUAL_FATAL(cap_server_stats(v.s, "vm1", &f), 0);
		CU_ASSERT_EQUAL(f.disks[0].capture_lag_s, 0);
		cap_store_figures_free(&f);
	}
	CU_ASSERT_EQUAL_FATAL(cap_server_stats(v.s, "vm1", &f), 0);
	CU_ASSERT_EQUAL_FATAL(f.ndisks, 1);
	/* The flush after the lone writes followed the last of them: with
	 * pairs 1-3 that makes four, so pairs 4..N are anticipated. */
	CU_ASSERT_EQUAL(f.disks[0].flushes_anticipated, N - 3);
	CU_ASSERT_EQUAL(f.disks[0].flushes, N + 1);
	/* Still no lag: the last marker waiting for the next sync is no
	 * capture lag (a guest idle after it never alarms). */
	CU_ASSERT_EQUAL(f.disks[0].capture_lag_s, 0);
	cap_store_figures_free(&f);
	CU_ASSERT_EQUAL(vm1_stop(fd, &v), 0);

	/* N writes, a marker, then N (write, marker) pairs, in seq order */
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	uint8_t want[2 * N + N + 1];
	size_t n = 0;
	for (int i = 0; i < N; i++)
		want[n++] = JR_WRITE;
	want[n++] = JR_FLUSH;
	for (int i = 0; i < N; i++) {
		want[n++] = JR_WRITE;
		want[n++] = JR_FLUSH;
	}
	size_t k = 0;
	uint64_t last = 0;
	CU_ASSERT_EQUAL_FATAL(jr_reader_open(&r, jdir, 0), 0);
	while (jr_reader_next(r, &rec, &loc, &payload) == 1) {
		CU_ASSERT(rec.seq > last);
		last = rec.seq;
		CU_ASSERT_FATAL(k < n);
		CU_ASSERT_EQUAL(rec.type, want[k]);
		if (k > N && rec.type == JR_WRITE) {
			CU_ASSERT_FATAL(payload != NULL);
			CU_ASSERT_EQUAL(((const uint8_t *)payload)[0], (k - N) / 2 + 1);
		}
		k++;
	}
	jr_reader_close(r);
	CU_ASSERT_EQUAL(k, n);
	tu_rmrf(dir);
	free(dir);
}

int main(void)
{
	rw_log_set_level(RW_LOG_ERROR);
	tu_add_suite("capture",
		     "request validation", test_req_check,
		     "error mapping and export flags", test_errno_and_flags,
		     "in-process server: handshake, write, reopen",
		     test_server_inprocess,
		     "pipelined writes to one block sent in one go: journal and "
		     "index in send order", test_server_pipelined_batch,
		     "flush anticipation: write+flush pairs at queue depth 1",
		     test_flush_anticipation,
		     NULL);
	return tu_run();
}
