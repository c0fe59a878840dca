/*
 * nbd-protocol.h — the NBD wire format: magics, constants and the packed
 * structs of every message rewind sends or receives.
 *
 * Everything on the wire is big-endian (network order).  The structs are
 * packed and hold raw wire bytes: fill and read their integer fields only
 * through htobe*() / be*toh() (or the rw_put_be / rw_get_be helpers), never
 * by plain assignment.  Sizes are checked at compile time below.
 *
 * Source of truth: doc/proto.md of the NetworkBlockDevice/nbd project,
 * including the INFO, STRUCTURED_REPLY, WRITE_ZEROES and FAST_ZERO
 * extensions that were merged into it.  Only the fixed newstyle handshake
 * is spoken; oldstyle and TLS are not.
 */
#ifndef RW_NBD_PROTOCOL_H
#define RW_NBD_PROTOCOL_H

#include <stdint.h>

/* ------------------------------------------------------------ handshake */

#define NBD_MAGIC            0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_IHAVEOPT         0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC        0x0003e889045565a9ull /* option reply magic */

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)

/* Client flags (32 bits); any other bit set means: drop the connection. */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* S: first message of the fixed newstyle handshake (18 bytes). */
struct nbd_hello {
	uint64_t nbdmagic;   /* NBD_MAGIC */
	uint64_t version;    /* NBD_IHAVEOPT */
	uint16_t gflags;     /* handshake flags */
} __attribute__((packed));

/* C: header of every option (16 bytes), followed by optlen bytes of data. */
struct nbd_option {
	uint64_t magic;      /* NBD_IHAVEOPT */
	uint32_t option;     /* NBD_OPT_* */
	uint32_t optlen;     /* bytes of data that follow (untrusted) */
} __attribute__((packed));

/* S: header of every option reply (20 bytes), followed by replylen bytes. */
struct nbd_fixed_new_option_reply {
	uint64_t magic;      /* NBD_REP_MAGIC */
	uint32_t option;     /* the option this answers */
	uint32_t reply;      /* NBD_REP_* */
	uint32_t replylen;
} __attribute__((packed));

/* S: answer to NBD_OPT_EXPORT_NAME (10 bytes, then 124 zero bytes unless
 * both sides agreed on NO_ZEROES). */
struct nbd_export_name_reply {
	uint64_t exportsize;
	uint16_t eflags;     /* transmission flags */
} __attribute__((packed));
#define NBD_EXPORT_NAME_PAD 124

/* Options. */
#define NBD_OPT_EXPORT_NAME        1
#define NBD_OPT_ABORT              2
#define NBD_OPT_LIST               3
#define NBD_OPT_STARTTLS           5
#define NBD_OPT_INFO               6
#define NBD_OPT_GO                 7
#define NBD_OPT_STRUCTURED_REPLY   8
#define NBD_OPT_LIST_META_CONTEXT  9
#define NBD_OPT_SET_META_CONTEXT   10
#define NBD_OPT_EXTENDED_HEADERS   11

/* Option replies; errors have bit 31 set. */
#define NBD_REP_ACK                1
#define NBD_REP_SERVER             2
#define NBD_REP_INFO               3
#define NBD_REP_META_CONTEXT       4
/* base:allocation, the one metadata context served (read-only exports
 * with an extents callback), and its id; its status flags. */
#define NBD_META_BASE_ALLOCATION   "base:allocation"
#define NBD_META_ID_BASE_ALLOC     1u
#define NBD_STATE_HOLE             (1u << 0)
#define NBD_STATE_ZERO             (1u << 1)
#define NBD_REP_FLAG_ERROR         (1u << 31)
#define NBD_REP_ERR_UNSUP          (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY         (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID        (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM       (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD       (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN        (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN       (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG        (NBD_REP_FLAG_ERROR | 9)

/* NBD_INFO_* items, carried in NBD_REP_INFO replies to OPT_INFO / OPT_GO.
 * Each reply payload starts with the 16-bit info type. */
#define NBD_INFO_EXPORT            0
#define NBD_INFO_NAME              1
#define NBD_INFO_DESCRIPTION       2
#define NBD_INFO_BLOCK_SIZE        3

/* NBD_INFO_EXPORT payload (12 bytes). */
struct nbd_info_export {
	uint16_t info;       /* NBD_INFO_EXPORT */
	uint64_t exportsize;
	uint16_t eflags;
} __attribute__((packed));

/* NBD_INFO_BLOCK_SIZE payload (14 bytes). */
struct nbd_info_block_size {
	uint16_t info;       /* NBD_INFO_BLOCK_SIZE */
	uint32_t minimum;
	uint32_t preferred;
	uint32_t maximum;    /* largest READ/WRITE payload */
} __attribute__((packed));

/* Largest string the protocol allows (export names, messages). */
#define NBD_MAX_STRING             4096

/* -------------------------------------------------- transmission flags */

#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* ------------------------------------------------------------ requests */

#define NBD_REQUEST_MAGIC          0x25609513u

/* C: every request (28 bytes); WRITE is followed by count bytes of data. */
struct nbd_request {
	uint32_t magic;      /* NBD_REQUEST_MAGIC */
	uint16_t flags;      /* NBD_CMD_FLAG_* */
	uint16_t type;       /* NBD_CMD_* */
	uint64_t handle;     /* opaque, echoed in the reply (never swapped) */
	uint64_t offset;
	uint32_t count;
} __attribute__((packed));

#define NBD_CMD_READ               0
#define NBD_CMD_WRITE              1
#define NBD_CMD_DISC               2
#define NBD_CMD_FLUSH              3
#define NBD_CMD_TRIM               4
#define NBD_CMD_CACHE              5
#define NBD_CMD_WRITE_ZEROES       6
#define NBD_CMD_BLOCK_STATUS       7

#define NBD_CMD_FLAG_FUA           (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE       (1u << 1)
#define NBD_CMD_FLAG_DF            (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE       (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO     (1u << 4)

/* ------------------------------------------------------------- replies */

#define NBD_SIMPLE_REPLY_MAGIC     0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* S: simple reply (16 bytes); a successful READ is followed by its data. */
struct nbd_simple_reply {
	uint32_t magic;      /* NBD_SIMPLE_REPLY_MAGIC */
	uint32_t error;      /* NBD_E* */
	uint64_t handle;
} __attribute__((packed));

/* S: structured reply chunk header (20 bytes), then length bytes. */
struct nbd_structured_reply {
	uint32_t magic;      /* NBD_STRUCTURED_REPLY_MAGIC */
	uint16_t flags;      /* NBD_REPLY_FLAG_* */
	uint16_t type;       /* NBD_REPLY_TYPE_* */
	uint64_t handle;
	uint32_t length;
} __attribute__((packed));

#define NBD_REPLY_FLAG_DONE        (1u << 0)

#define NBD_REPLY_TYPE_NONE        0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR       ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* OFFSET_DATA payload starts with the 64-bit offset, then the data. */
struct nbd_structured_reply_offset_data {
	uint64_t offset;
} __attribute__((packed));

/* ERROR payload: error, message length, then the message. */
struct nbd_structured_reply_error {
	uint32_t error;
	uint16_t len;
} __attribute__((packed));

/* Error values: a fixed subset of errno numbers, defined by the protocol
 * itself (not by the host's errno.h). */
#define NBD_SUCCESS     0
#define NBD_EPERM       1
#define NBD_EIO         5
#define NBD_ENOMEM      12
#define NBD_EINVAL      22
#define NBD_ENOSPC      28
#define NBD_EOVERFLOW   75
#define NBD_ENOTSUP     95
#define NBD_ESHUTDOWN   108

/* The wire sizes the code relies on. */
_Static_assert(sizeof(struct nbd_hello) == 18, "nbd_hello");
_Static_assert(sizeof(struct nbd_option) == 16, "nbd_option");
_Static_assert(sizeof(struct nbd_fixed_new_option_reply) == 20, "opt reply");
_Static_assert(sizeof(struct nbd_export_name_reply) == 10, "export reply");
_Static_assert(sizeof(struct nbd_info_export) == 12, "info export");
_Static_assert(sizeof(struct nbd_info_block_size) == 14, "info block size");
_Static_assert(sizeof(struct nbd_request) == 28, "nbd_request");
_Static_assert(sizeof(struct nbd_simple_reply) == 16, "simple reply");
_Static_assert(sizeof(struct nbd_structured_reply) == 20, "structured reply");
_Static_assert(sizeof(struct nbd_structured_reply_error) == 6, "error chunk");

#endif /* RW_NBD_PROTOCOL_H */
