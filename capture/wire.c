/*
 * wire.c — socket I/O for the NBD server: exact-length receives with an
 * optional deadline, bounded discards, and complete vectored sends.
 *
 * How: receives loop over recv() until the length is met; with a
 * deadline, each step first poll()s for the remaining time, so a client
 * that stalls inside the handshake is cut off when the deadline passes no
 * matter how it dribbles bytes.  Sends use sendmsg(MSG_NOSIGNAL) so a
 * vanished client is an -EPIPE, never a SIGPIPE, and loop over partial
 * transfers by advancing the iovec.
 *
 * Rejected alternative: SO_RCVTIMEO.  It bounds each recv() separately, so
 * a client sending one byte every 9 s would hold a handshake forever; a
 * per-connection absolute deadline does not have that hole.
 */
#include "capture/cap-int.h"
#include "common/rw.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

static int wait_readable(int fd, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = rw_mono_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		uint64_t ms = (deadline_ns - now + 999999) / 1000000;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n = poll(&p, 1, ms > 60000 ? 60000 : (int)ms);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

int cap_recv_full(int fd, void *buf, size_t len, uint64_t deadline_ns)
{
	uint8_t *p = buf;

	while (len) {
		if (deadline_ns) {
			int err = wait_readable(fd, deadline_ns);
			if (err)
				return err;
		}
		ssize_t n = recv(fd, p, len, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int cap_recv_discard(int fd, uint64_t len, uint64_t deadline_ns)
{
	static _Thread_local uint8_t sink[65536];

	while (len) {
		size_t n = len > sizeof(sink) ? sizeof(sink) : (size_t)len;
		int err = cap_recv_full(fd, sink, n, deadline_ns);
		if (err)
			return err;
		len -= n;
	}
	return 0;
}

int cap_send_iov(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		size_t left = (size_t)k;
		while (n > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0 && left) {
			iov->iov_base = (uint8_t *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

int cap_send_full(int fd, const void *buf, size_t len)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	return cap_send_iov(fd, &v, 1);
}

int cap_split_hostport(const char *spec, const char *opt, bool empty_ok,
		       char *host, size_t hostsz, const char **port)
{
	const char *h = spec;
	size_t hl;

	if (*h == '[') {
		const char *end = strchr(h, ']');
		if (!end || end[1] != ':')
			return rw_err_set(RW_EPARSE, "invalid %s '%s' (use "
					  "HOST:PORT or [V6]:PORT)", opt, spec);
		h++;
		hl = (size_t)(end - h);
		*port = end + 2;
	} else {
		const char *colon = strrchr(h, ':');
		if (!colon)
			return rw_err_set(RW_EPARSE, "invalid %s '%s' (use "
					  "HOST:PORT)", opt, spec);
		hl = (size_t)(colon - h);
		*port = colon + 1;
	}
	if ((!hl && !empty_ok) || hl >= hostsz || !**port)
		return rw_err_set(RW_EPARSE, "invalid %s '%s' (use HOST:PORT, "
				  "e.g. 127.0.0.1:10809)", opt, spec);
	memcpy(host, h, hl);
	host[hl] = '\0';
	return 0;
}
