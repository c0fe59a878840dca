/*
 * validate.c — the checks every NBD request passes before it touches a
 * buffer, a file or the journal, and the error mapping of the server.
 *
 * How: one pure function, cap_req_check(), looks only at the request
 * header and the export's parameters and answers 0 or the NBD error to
 * send.  Order matters: the command is checked first (unknown -> EINVAL),
 * then its flags (any flag not documented for that command -> EINVAL),
 * then the length (a payload above the maximum -> EINVAL, before anything
 * is allocated), then the range with overflow-safe arithmetic (past the
 * end: ENOSPC for writes, as the protocol asks, EINVAL otherwise).
 *
 * Rejected alternative: validating inside each command handler, as many
 * small servers do.  It scatters the rules, and one forgotten check is a
 * heap overflow; a single table-like function is also unit-testable
 * without sockets (tests/test_capture.c).
 */
#include "capture/cap.h"
#include "capture/nbd-protocol.h"
#include "common/rw.h"

#include <errno.h>

uint16_t cap_export_flags(bool structured)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
		     NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO |
		     NBD_FLAG_CAN_MULTI_CONN;

	/* We always answer a READ with one data chunk, so "don't fragment"
	 * costs nothing; the flag is only allowed with structured replies. */
	if (structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

uint32_t cap_req_check(const struct cap_req *r, uint64_t size,
		       bool structured, uint32_t max_payload)
{
	uint16_t allowed;
	bool writes = false, payload = false;

	switch (r->type) {
	case NBD_CMD_READ:
		allowed = NBD_CMD_FLAG_FUA;
		if (structured)
			allowed |= NBD_CMD_FLAG_DF;
		payload = true;
		break;
	case NBD_CMD_WRITE:
		allowed = NBD_CMD_FLAG_FUA;
		writes = payload = true;
		break;
	case NBD_CMD_TRIM:
		allowed = NBD_CMD_FLAG_FUA;
		writes = true;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
			  NBD_CMD_FLAG_FAST_ZERO;
		writes = true;
		break;
	case NBD_CMD_FLUSH:
		allowed = NBD_CMD_FLAG_FUA;
		if (r->flags & ~allowed)
			return NBD_EINVAL;
		/* offset and length are reserved and must be zero. */
		return (r->offset || r->count) ? NBD_EINVAL : 0;
	case NBD_CMD_DISC:
		return r->flags ? NBD_EINVAL : 0;
	default:
		return NBD_EINVAL;
	}
	if (r->flags & ~allowed)
		return NBD_EINVAL;
	if (r->count == 0)
		return NBD_EINVAL;
	if (payload && r->count > max_payload)
		return NBD_EINVAL;
	if (!rw_range_ok(r->offset, r->count, size))
		return writes ? NBD_ENOSPC : NBD_EINVAL;
	return 0;
}

uint32_t cap_nbd_errno(int err)
{
	switch (err) {
	case 0:
		return NBD_SUCCESS;
	case -ENOSPC:
	case -EDQUOT:
	case -EFBIG:
		return NBD_ENOSPC;
	case -EINVAL:
		return NBD_EINVAL;
	case -EPERM:
	case -EROFS:
		return NBD_EPERM;
	case -ENOMEM:
		return NBD_ENOMEM;
	case -ENOTSUP:
		return NBD_ENOTSUP;
	case -ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}
