/*
 * handshake.c — the fixed newstyle handshake: greeting, client flags and
 * option haggling up to NBD_OPT_GO / NBD_OPT_EXPORT_NAME.
 *
 * How: a loop reads one option header, bounds its length before anything
 * else (more than OPT_MAX bytes is answered NBD_REP_ERR_TOO_BIG and the
 * connection dropped: a 4 GiB claim is never read, let alone allocated),
 * reads the data into a fixed buffer, and answers.  Export names are
 * parsed as counted strings, capped at NBD_MAX_STRING (4096) bytes, and
 * looked up as keys in the server's disk table — never used as paths.
 * The whole handshake runs against one absolute deadline (wire.c).
 *
 * Supported: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
 * LIST_META_CONTEXT and SET_META_CONTEXT (base:allocation on read-only
 * exports that can tell holes).  Everything else (STARTTLS, extended
 * headers) is
 * NBD_REP_ERR_UNSUP with its data skipped, which every client handles by
 * falling back.  The empty export name means the store's only disk when
 * it has exactly one.
 *
 * Rejected alternative: a malloc'ed buffer sized from optlen.  Even with
 * a cap it invites "allocate first, check later" mistakes; a stack buffer
 * of the largest valid option makes the bound structural.
 */
#include "capture/cap-int.h"
#include "capture/nbd-protocol.h"
#include "common/rw.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Largest option we read: a GO/INFO with a 4096-byte name and a generous
 * list of info requests. */
#define OPT_MAX (4 + NBD_MAX_STRING + 2 + 2 * 64)

static int send_reply(struct cap_conn *c, uint32_t opt, uint32_t reply,
		      const void *data, uint32_t len)
{
	struct nbd_fixed_new_option_reply h = {
		.magic = htobe64(NBD_REP_MAGIC),
		.option = htobe32(opt),
		.reply = htobe32(reply),
		.replylen = htobe32(len),
	};
	struct iovec v[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	return cap_send_iov(c->fd, v, len ? 2 : 1);
}

static int send_error(struct cap_conn *c, uint32_t opt, uint32_t reply,
		      const char *msg)
{
	return send_reply(c, opt, reply, msg, (uint32_t)strlen(msg));
}

static struct cap_disk *lookup(struct cap_conn *c, const char *name)
{
	if (!*name && cap_server_ndisks(c->srv) == 1)
		return cap_server_disk(c->srv, 0);
	return cap_server_find_disk(c->srv, name);
}

static int send_info_export(struct cap_conn *c, uint32_t opt,
			    const struct cap_disk *d)
{
	struct nbd_info_export ie = {
		.info = htobe16(NBD_INFO_EXPORT),
		.exportsize = htobe64(d->meta.size),
		.eflags = htobe16(c->eflags),
	};
	return send_reply(c, opt, NBD_REP_INFO, &ie, sizeof(ie));
}

static int send_info_block_size(struct cap_conn *c, uint32_t opt)
{
	struct nbd_info_block_size bs = {
		.info = htobe16(NBD_INFO_BLOCK_SIZE),
		.minimum = htobe32(512),
		.preferred = htobe32(4096),
		.maximum = htobe32(JR_MAX_WRITE),
	};
	return send_reply(c, opt, NBD_REP_INFO, &bs, sizeof(bs));
}

static int send_info_name(struct cap_conn *c, uint32_t opt, const char *name)
{
	uint8_t buf[2 + IX_NAME_MAX];
	size_t n = strlen(name);

	rw_put_be16(buf, NBD_INFO_NAME);
	memcpy(buf + 2, name, n);
	return send_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + n));
}

/*
 * The counted export name that starts an option's data, which must be
 * followed by at least `after` more bytes: copied into name (NUL-ended).
 * Returns 0 with *nlen, 1 when an error reply was sent (keep haggling), or
 * a negative socket error.
 */
static int option_name(struct cap_conn *c, uint32_t opt, const uint8_t *data,
		       uint32_t len, uint32_t after,
		       char name[NBD_MAX_STRING + 1], uint32_t *nlen)
{
	int err;

	if (len < 4 + after) {
		err = send_error(c, opt, NBD_REP_ERR_INVALID, "option too short");
	} else if ((*nlen = rw_get_be32(data)) > NBD_MAX_STRING ||
		   *nlen > len - 4 - after) {
		err = send_error(c, opt, NBD_REP_ERR_INVALID,
				 "export name length out of range");
	} else {
		memcpy(name, data + 4, *nlen);
		name[*nlen] = '\0';
		if (!memchr(name, '\0', *nlen))
			return 0;
		err = send_error(c, opt, NBD_REP_ERR_INVALID,
				 "export name contains NUL");
	}
	return err ? err : 1;
}

/* The NBD_REP_ERR_UNKNOWN answer for an export name no disk has. */
static int send_unknown(struct cap_conn *c, uint32_t opt, const char *name,
			uint32_t nlen)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "no such disk '%.64s'%s", name,
		 nlen > 64 ? "..." : "");
	return send_error(c, opt, NBD_REP_ERR_UNKNOWN, msg);
}

/* NBD_OPT_INFO / NBD_OPT_GO.  Returns 1 when GO succeeded (transmission
 * starts), 0 to keep haggling, negative on a socket error. */
static int opt_info_go(struct cap_conn *c, uint32_t opt, const uint8_t *data,
		       uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	struct cap_disk *d;
	uint32_t nlen;
	int err = option_name(c, opt, data, len, 2, name, &nlen);

	if (err)
		return err > 0 ? 0 : err;
	uint16_t nreq = rw_get_be16(data + 4 + nlen);
	if ((uint32_t)nreq * 2 != len - 6 - nlen)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "info request count does not match length");
	d = lookup(c, name);
	if (!d)
		return send_unknown(c, opt, name, nlen);

	/*
	 * GO takes the disk before anything is acknowledged, so a rollback
	 * that claimed it is never raced by a client that slips in.
	 */
	if (opt == NBD_OPT_GO && cap_disk_attach(d)) {
		char msg[200];
		snprintf(msg, sizeof(msg), "%s", rw_err_msg());
		return send_error(c, opt, NBD_REP_ERR_POLICY, msg);
	}
	bool want_name = false;
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t = rw_get_be16(data + 6 + nlen + 2 * i);
		if (t == NBD_INFO_NAME)
			want_name = true;
	}
	c->eflags = cap_disk_eflags(d, c->structured);
	err = send_info_export(c, opt, d);
	if (!err)
		err = send_info_block_size(c, opt);
	if (!err && want_name)
		err = send_info_name(c, opt, d->meta.name);
	if (!err)
		err = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (err) {
		if (opt == NBD_OPT_GO)
			cap_disk_detach(d);
		return err;
	}
	if (opt == NBD_OPT_GO) {
		c->disk = d;
		/* A context selected for another export does not carry over. */
		if (c->base_alloc && strcmp(c->meta_export, d->meta.name))
			c->base_alloc = false;
		return 1;
	}
	return 0;
}

/* NBD_OPT_EXPORT_NAME: no way to answer an error, so an unknown name ends
 * the session (the protocol says so). */
static int opt_export_name(struct cap_conn *c, const uint8_t *data,
			   uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	uint8_t pad[NBD_EXPORT_NAME_PAD] = { 0 };
	int err;

	if (len > NBD_MAX_STRING)
		return rw_err_set(-EINVAL, "export name too long");
	memcpy(name, data, len);
	name[len] = '\0';
	if (memchr(name, '\0', len))
		return rw_err_set(-EINVAL, "export name contains NUL");
	struct cap_disk *d = lookup(c, name);
	if (!d)
		return rw_err_set(RW_ENOTFOUND, "no such disk '%.64s'", name);
	if ((err = cap_disk_attach(d)))
		return err;
	c->eflags = cap_disk_eflags(d, c->structured);
	struct nbd_export_name_reply r = {
		.exportsize = htobe64(d->meta.size),
		.eflags = htobe16(c->eflags),
	};
	struct iovec v[2] = {
		{ .iov_base = &r, .iov_len = sizeof(r) },
		{ .iov_base = pad, .iov_len = sizeof(pad) },
	};
	err = cap_send_iov(c->fd, v, c->no_zeroes ? 1 : 2);
	if (err) {
		cap_disk_detach(d);
		return err;
	}
	c->disk = d;
	return 1;
}

/*
 * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.  Data: export
 * name, number of queries, queries (each a counted string that must start
 * with a namespace).  The one context is base:allocation, offered on the
 * read-only exports that can tell holes (an extents callback; rewind
 * export).  "base:allocation" selects or lists it, "base:" lists it, LIST
 * with no query lists everything; other namespaces match nothing.  SET
 * replaces the selection, which then holds for GO on that same export.
 * Both need structured replies first.  Returns 0 or a socket error.
 */
static int opt_meta_context(struct cap_conn *c, uint32_t opt,
			    const uint8_t *data, uint32_t len)
{
	char name[NBD_MAX_STRING + 1];
	bool want = false;
	uint32_t nlen, nq;
	size_t pos;
	int err;

	if (!c->structured)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "negotiate structured replies first");
	if ((err = option_name(c, opt, data, len, 4, name, &nlen)))
		return err > 0 ? 0 : err;
	nq = rw_get_be32(data + 4 + nlen);
	pos = 8 + (size_t)nlen;
	for (uint32_t i = 0; i < nq; i++) {
		if (len - pos < 4)
			return send_error(c, opt, NBD_REP_ERR_INVALID,
					  "query count does not match length");
		uint32_t ql = rw_get_be32(data + pos);
		pos += 4;
		if (ql > len - pos)
			return send_error(c, opt, NBD_REP_ERR_INVALID,
					  "query length out of range");
		const char *q = (const char *)data + pos;
		if (!memchr(q, ':', ql) || memchr(q, '\0', ql))
			return send_error(c, opt, NBD_REP_ERR_INVALID,
					  "a query must start with a namespace");
		if ((ql == sizeof(NBD_META_BASE_ALLOCATION) - 1 &&
		     !memcmp(q, NBD_META_BASE_ALLOCATION, ql)) ||
		    (opt == NBD_OPT_LIST_META_CONTEXT && ql == 5 &&
		     !memcmp(q, "base:", 5)))
			want = true;
		pos += ql;
	}
	if (pos != len)
		return send_error(c, opt, NBD_REP_ERR_INVALID,
				  "trailing data after the queries");
	if (opt == NBD_OPT_LIST_META_CONTEXT && nq == 0)
		want = true;
	struct cap_disk *d = lookup(c, name);
	if (!d)
		return send_unknown(c, opt, name, nlen);
	if (opt == NBD_OPT_SET_META_CONTEXT)
		c->base_alloc = false;
	if (want && d->ro && d->ro->extents) {
		uint8_t buf[4 + sizeof(NBD_META_BASE_ALLOCATION)];
		uint32_t id = 0;  /* LIST: reserved, zero */
		if (opt == NBD_OPT_SET_META_CONTEXT) {
			id = NBD_META_ID_BASE_ALLOC;
			c->base_alloc = true;
			snprintf(c->meta_export, sizeof(c->meta_export), "%s",
				 d->meta.name);
		}
		rw_put_be32(buf, id);
		memcpy(buf + 4, NBD_META_BASE_ALLOCATION,
		       sizeof(NBD_META_BASE_ALLOCATION) - 1);
		err = send_reply(c, opt, NBD_REP_META_CONTEXT, buf,
				 (uint32_t)(4 + sizeof(NBD_META_BASE_ALLOCATION) - 1));
		if (err)
			return err;
	}
	return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

static int opt_list(struct cap_conn *c, uint32_t len)
{
	if (len)
		return send_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				  "NBD_OPT_LIST takes no data");
	for (size_t i = 0; i < cap_server_ndisks(c->srv); i++) {
		const struct cap_disk *d = cap_server_disk(c->srv, i);
		uint8_t buf[4 + IX_NAME_MAX];
		size_t n = strlen(d->meta.name);
		rw_put_be32(buf, (uint32_t)n);
		memcpy(buf + 4, d->meta.name, n);
		int err = send_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
				     (uint32_t)(4 + n));
		if (err)
			return err;
	}
	return send_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

int cap_handshake(struct cap_conn *c)
{
	struct nbd_hello hello = {
		.nbdmagic = htobe64(NBD_MAGIC),
		.version = htobe64(NBD_IHAVEOPT),
		.gflags = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
	};
	uint8_t cflags_be[4];
	static _Thread_local uint8_t data[OPT_MAX];
	int err;

	err = cap_send_full(c->fd, &hello, sizeof(hello));
	if (!err)
		err = cap_recv_full(c->fd, cflags_be, 4, c->deadline_ns);
	if (err)
		return err;
	uint32_t cflags = rw_get_be32(cflags_be);
	if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return rw_err_set(-EPROTO, "unknown client flags 0x%x", cflags);
	c->no_zeroes = (cflags & NBD_FLAG_C_NO_ZEROES) != 0;

	for (;;) {
		uint8_t hb[sizeof(struct nbd_option)];
		err = cap_recv_full(c->fd, hb, sizeof(hb), c->deadline_ns);
		if (err)
			return err;
		uint64_t magic = rw_get_be64(hb);
		uint32_t opt = rw_get_be32(hb + 8);
		uint32_t len = rw_get_be32(hb + 12);
		if (magic != NBD_IHAVEOPT)
			return rw_err_set(-EPROTO, "bad option magic 0x%016llx",
					  (unsigned long long)magic);
		if (len > OPT_MAX) {
			send_error(c, opt, NBD_REP_ERR_TOO_BIG, "option too large");
			return rw_err_set(-EMSGSIZE, "option %u claims %u bytes "
					  "(limit %u)", opt, len, OPT_MAX);
		}
		err = cap_recv_full(c->fd, data, len, c->deadline_ns);
		if (err)
			return err;
		if (cap_server_stopping(c->srv) && opt != NBD_OPT_ABORT) {
			err = send_error(c, opt, NBD_REP_ERR_SHUTDOWN,
					 "server is shutting down");
			if (err)
				return err;
			continue;
		}
		switch (opt) {
		case NBD_OPT_EXPORT_NAME:
			err = opt_export_name(c, data, len);
			return err == 1 ? 0 : err;
		case NBD_OPT_ABORT:
			send_reply(c, opt, NBD_REP_ACK, NULL, 0);
			return 1;
		case NBD_OPT_LIST:
			err = opt_list(c, len);
			break;
		case NBD_OPT_STRUCTURED_REPLY:
			if (len)
				err = send_error(c, opt, NBD_REP_ERR_INVALID,
						 "option takes no data");
			else if (c->structured)
				err = send_error(c, opt, NBD_REP_ERR_INVALID,
						 "already negotiated");
			else {
				c->structured = true;
				err = send_reply(c, opt, NBD_REP_ACK, NULL, 0);
			}
			break;
		case NBD_OPT_LIST_META_CONTEXT:
		case NBD_OPT_SET_META_CONTEXT:
			err = opt_meta_context(c, opt, data, len);
			break;
		case NBD_OPT_INFO:
		case NBD_OPT_GO:
			err = opt_info_go(c, opt, data, len);
			if (err == 1)
				return 0;
			break;
		default:
			err = send_error(c, opt, NBD_REP_ERR_UNSUP,
					 "option not supported");
			break;
		}
		if (err)
			return err;
	}
}
