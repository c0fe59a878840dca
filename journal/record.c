/*
 * record.c — the bytes of a journal record and of a segment header, and
 * the zstd compression context.
 *
 * Both headers are 64 bytes written field by field with the little-endian
 * helpers (FORMAT.md has the tables); nothing is ever written as a C
 * struct.  Decoding is a validator first: every field a later step uses
 * to size a buffer or compute an offset is bounds-checked here, so the
 * scanner and the readers can trust a decoded jr_rec as far as lengths go
 * (the crc still has to be checked against the payload).
 *
 * The crc is one CRC32C over header bytes 0..59 followed by the stored
 * payload (a PAD's crc covers its header only: its body is a hole).
 * Rejected alternative: separate header and payload crcs.  They
 * would let a reader skip payload verification cheaply, but the
 * JR_READ_HEADERS mode already trades that off explicitly, and one crc
 * keeps the classification rules in FORMAT.md simple.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* ------------------------------------------------------------- records */

uint32_t jr_rec_encode(struct jr_rec *rec, uint8_t hdr[JR_HDR_SIZE],
		       const void *payload)
{
	memset(hdr, 0, JR_HDR_SIZE);
	rw_put_le32(hdr + 0, JR_REC_MAGIC);
	hdr[4] = rec->type;
	hdr[5] = rec->flags;
	rw_put_le16(hdr + 6, JR_HDR_SIZE);
	rw_put_le64(hdr + 8, rec->seq);
	rw_put_le64(hdr + 16, rec->ts_ns);
	rw_put_le64(hdr + 24, rec->prev_seq);
	rw_put_le64(hdr + 32, rec->offset);
	rw_put_le32(hdr + 40, rec->length);
	rw_put_le32(hdr + 44, rec->stored_len);
	rw_put_le32(hdr + 48, rec->disk_id);
	/* 52..59 reserved, zero */
	uint32_t crc = rw_crc32c(0, hdr, 60);
	if (rec->stored_len && payload && rec->type != JR_PAD)
		crc = rw_crc32c(crc, payload, rec->stored_len);
	rw_put_le32(hdr + 60, crc);
	rec->crc = crc;
	return crc;
}

int jr_rec_decode_why(const uint8_t hdr[JR_HDR_SIZE], struct jr_rec *rec,
		      const char **why)
{
	const char *w = NULL;

	memset(rec, 0, sizeof(*rec));
	if (rw_get_le32(hdr) != JR_REC_MAGIC) {
		w = "bad record magic";
		goto out;
	}
	if (rw_get_le16(hdr + 6) != JR_HDR_SIZE) {
		w = "bad record header length";
		goto out;
	}
	rec->type = hdr[4];
	rec->flags = hdr[5];
	rec->seq = rw_get_le64(hdr + 8);
	rec->ts_ns = rw_get_le64(hdr + 16);
	rec->prev_seq = rw_get_le64(hdr + 24);
	rec->offset = rw_get_le64(hdr + 32);
	rec->length = rw_get_le32(hdr + 40);
	rec->stored_len = rw_get_le32(hdr + 44);
	rec->disk_id = rw_get_le32(hdr + 48);
	rec->crc = rw_get_le32(hdr + 60);
	for (int i = 52; i < 60; i++)
		if (hdr[i]) {
			w = "reserved record bytes are not zero";
			goto out;
		}
	if (rec->seq == 0) {
		w = "record seq is 0";
		goto out;
	}
	if (rec->stored_len > JR_MAX_STORED) {
		w = "stored length exceeds the maximum";
		goto out;
	}
	if (rec->flags & ~(unsigned)JR_F_ZSTD) {
		w = "unknown record flags";
		goto out;
	}
	switch (rec->type) {
	case JR_WRITE:
		if (rec->length == 0 || rec->length > JR_MAX_WRITE) {
			w = "write length out of range";
			goto out;
		}
		if (rec->flags & JR_F_ZSTD) {
			if (rec->stored_len == 0 || rec->stored_len > rec->length) {
				w = "compressed length out of range";
				goto out;
			}
		} else if (rec->stored_len != rec->length) {
			w = "stored length differs from length of a raw write";
			goto out;
		}
		break;
	case JR_ZERO:
	case JR_TRIM:
		if (rec->length == 0 || rec->stored_len != 0 || rec->flags) {
			w = "bad length or payload for a zero/trim record";
			goto out;
		}
		break;
	case JR_FLUSH:
		if (rec->length || rec->stored_len || rec->flags || rec->offset) {
			w = "malformed flush record";
			goto out;
		}
		break;
	case JR_SEAL:
		if (rec->length || rec->stored_len || rec->flags ||
		    rec->offset || rec->prev_seq != rec->seq) {
			w = "malformed seal record";
			goto out;
		}
		break;
	case JR_PAD:
		/* stored_len is the body (bounded above like any payload). */
		if (rec->length || rec->flags || rec->offset ||
		    rec->prev_seq != rec->seq) {
			w = "malformed pad record";
			goto out;
		}
		break;
	default:
		w = "unknown record type";
		goto out;
	}
	if (rec->prev_seq >= rec->seq && rec->type != JR_SEAL &&
	    rec->type != JR_PAD) {
		w = "prev_seq is not below seq";
		goto out;
	}
	if (!rw_range_ok(rec->offset, rec->length, JR_MAX_DISK_END)) {
		w = "offset + length overflows";
		goto out;
	}
out:
	if (why)
		*why = w;
	return w ? RW_ECORRUPT : 0;
}

int jr_rec_decode(const uint8_t hdr[JR_HDR_SIZE], struct jr_rec *rec)
{
	return jr_rec_decode_why(hdr, rec, NULL);
}

int jr_rec_verify(const struct jr_rec *rec, const uint8_t hdr[JR_HDR_SIZE],
		  const void *payload)
{
	uint32_t crc = rw_crc32c(0, hdr, 60);

	/* A PAD's body is a punched hole: its crc covers the header only. */
	if (rec->stored_len && rec->type != JR_PAD) {
		if (!payload)
			return RW_ECORRUPT;
		crc = rw_crc32c(crc, payload, rec->stored_len);
	}
	if (crc != rec->crc || crc != rw_get_le32(hdr + 60))
		return RW_ECORRUPT;
	return 0;
}

void jr_segment_name(uint64_t first_seq, char buf[32])
{
	snprintf(buf, 32, "%020llu", (unsigned long long)first_seq);
}

bool jr_is_segment_name(const char *name, uint64_t *first_seq)
{
	uint64_t v = 0;

	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		uint64_t d = (uint64_t)(name[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (name[20] != '\0')
		return false;
	if (first_seq)
		*first_seq = v;
	return true;
}

const char *jr_type_name(uint8_t type)
{
	switch (type) {
	case JR_WRITE:
		return "write";
	case JR_ZERO:
		return "zero";
	case JR_TRIM:
		return "trim";
	case JR_FLUSH:
		return "flush";
	case JR_PAD:
		return "pad";
	case JR_SEAL:
		return "seal";
	default:
		return "?";
	}
}

/* ------------------------------------------------------ segment header */

void jr_seghdr_encode(const struct jr_seghdr *h, uint8_t buf[JR_SEG_HDR_SIZE])
{
	memset(buf, 0, JR_SEG_HDR_SIZE);
	memcpy(buf, JR_SEG_MAGIC, 8);
	rw_put_le32(buf + 8, h->version);
	rw_put_le32(buf + 12, JR_SEG_HDR_SIZE);
	rw_put_le64(buf + 16, h->first_seq);
	rw_put_le64(buf + 24, h->created_ns);
	rw_put_le32(buf + 32, h->disk_id);
	rw_put_le32(buf + 36, h->flags);
	rw_put_le64(buf + 40, h->pred_first);
	/* 48..59 reserved, zero */
	rw_put_le32(buf + 60, rw_crc32c(0, buf, 60));
}

int jr_seghdr_decode(const uint8_t buf[JR_SEG_HDR_SIZE], struct jr_seghdr *h,
		     const char **why)
{
	bool crc_ok = rw_crc32c(0, buf, 60) == rw_get_le32(buf + 60);

	memset(h, 0, sizeof(*h));
	*why = NULL;
	if (memcmp(buf, JR_SEG_MAGIC, 8)) {
		*why = "bad segment magic";
		return RW_ECORRUPT;
	}
	h->version = rw_get_le32(buf + 8);
	h->first_seq = rw_get_le64(buf + 16);
	h->created_ns = rw_get_le64(buf + 24);
	h->disk_id = rw_get_le32(buf + 32);
	/*
	 * A newer version may lay the header out differently (and put its
	 * crc elsewhere), so an unknown version wins over a crc mismatch,
	 * except for the obviously damaged version 0.
	 */
	bool known = h->version == JR_SEG_VERSION ||
		     h->version == JR_SEG_VERSION_PAD;
	if (!known && (crc_ok || h->version > JR_SEG_VERSION_PAD)) {
		*why = "unsupported segment version";
		return RW_EVERSION;
	}
	if (!crc_ok) {
		*why = "segment header checksum mismatch";
		return RW_ECORRUPT;
	}
	if (rw_get_le32(buf + 12) != JR_SEG_HDR_SIZE) {
		*why = "bad segment header length";
		return RW_ECORRUPT;
	}
	h->flags = rw_get_le32(buf + 36);
	h->pred_first = rw_get_le64(buf + 40);
	if (h->flags & ~JR_SEGF_KNOWN) {
		*why = "unknown segment header flags";
		return RW_ECORRUPT;
	}
	for (int i = 48; i < 60; i++)
		if (buf[i]) {
			*why = "reserved segment header bytes are not zero";
			return RW_ECORRUPT;
		}
	return 0;
}

/* --------------------------------------------------------- compression */

struct jr_cctx {
	ZSTD_CCtx *z;
	int level;
	uint8_t *buf;
	size_t cap;
};

int jr_cctx_new(struct jr_cctx **out, int level)
{
	struct jr_cctx *cc = NULL;
	int err = 0;

	*out = NULL;
	/* 0 would mean zstd's own default (3); refuse it so a caller's 0
	 * ("no compression" in most of this project) never compresses. */
	if (level < JR_ZSTD_LEVEL_MIN || level > JR_ZSTD_LEVEL_MAX || level == 0)
		return rw_err_set(-EINVAL, "zstd level %d out of range %d..%d "
				  "(not 0)", level, JR_ZSTD_LEVEL_MIN,
				  JR_ZSTD_LEVEL_MAX);
	cc = calloc(1, sizeof(*cc));
	if (!cc) {
		err = -ENOMEM;
		goto out;
	}
	cc->level = level;
	cc->z = ZSTD_createCCtx();
	if (!cc->z) {
		err = -ENOMEM;
		goto out;
	}
	*out = cc;
	cc = NULL;
out:
	jr_cctx_free(cc);
	return err;
}

void jr_cctx_free(struct jr_cctx *cc)
{
	if (!cc)
		return;
	ZSTD_freeCCtx(cc->z);
	free(cc->buf);
	free(cc);
}

int jr_cctx_level(const struct jr_cctx *cc)
{
	return cc->level;
}

size_t jr_zstd_bound(uint32_t len)
{
	return ZSTD_compressBound(len);
}

/*
 * Early abort for incompressible payloads (already-compressed files,
 * encrypted or random blocks): zstd still spends ~10% of its time on
 * them at 64 KiB.  A sample of 64 chunks of 16 bytes spread over the
 * payload goes into a byte histogram; its collision rate sum(h^2) is
 * compared with what uniformly random bytes give (scaled to 1000).  Real
 * disk data that compresses sits far above (text, code and zero-filled
 * blocks repeat bytes); random data sits at 1000 +- 22.  On the
 * benchmark data (ext4 image of /usr + random) the check skips 99% of the
 * records zstd would have stored raw and stores raw 5 of 8,000 that would
 * have saved 1/16, the ratio unchanged to 4 digits; CPU -7..9% at 64 KiB.
 * Only payloads >= 16 KiB are checked: the sample must stay a small part
 * of the work.  Known blind spot, accepted: a random pattern repeated at
 * a period that the sample does not hit twice looks random.
 * (Rejected: Shannon entropy of the sample, as btrfs does — log2 per bin
 * cost more than it saved at 4 KiB — and compressing a prefix first.)
 */
#define JR_SAMPLE_MIN (16u << 10)
#define JR_SAMPLE_CHUNKS 64u
#define JR_SAMPLE_CHUNK 16u
#define JR_SAMPLE_RANDOM_MAX 1100u

static bool looks_incompressible(const uint8_t *p, uint32_t len)
{
	uint32_t h[256] = { 0 };
	const uint32_t n = JR_SAMPLE_CHUNKS * JR_SAMPLE_CHUNK;
	uint32_t stride = len / JR_SAMPLE_CHUNKS;
	uint64_t sq = 0;

	for (uint32_t c = 0; c < JR_SAMPLE_CHUNKS; c++)
		for (uint32_t k = 0; k < JR_SAMPLE_CHUNK; k++)
			h[p[(size_t)c * stride + k]]++;
	for (int i = 0; i < 256; i++)
		sq += (uint64_t)h[i] * h[i];
	/* Pairs of equal bytes, relative to 1/256 of all pairs. */
	uint64_t rate = (sq - n) * 256 * 1000 / ((uint64_t)n * (n - 1));
	return rate < JR_SAMPLE_RANDOM_MAX;
}

size_t jr_zstd_compress(struct jr_cctx *cc, int level, void *dst,
			size_t dstcap, const void *src, uint32_t len)
{
	if (len < JR_MIN_COMPRESS)
		return 0;
	if (len >= JR_SAMPLE_MIN && looks_incompressible(src, len))
		return 0;
	size_t n = ZSTD_compressCCtx(cc->z, dst, dstcap, src, len, level);
	if (ZSTD_isError(n) || n > (size_t)len - len / 16)
		return 0;
	return n;
}

bool jr_cctx_compress(struct jr_cctx *cc, const void *src, uint32_t len,
		      const void **out, uint32_t *outlen)
{
	if (!cc || len < JR_MIN_COMPRESS)
		return false;
	size_t bound = ZSTD_compressBound(len);
	if (bound > cc->cap) {
		uint8_t *nb = realloc(cc->buf, bound);
		if (!nb)
			return false; /* store raw: correct, just bigger */
		cc->buf = nb;
		cc->cap = bound;
	}
	size_t n = jr_zstd_compress(cc, cc->level, cc->buf, cc->cap, src, len);
	if (!n)
		return false;
	*out = cc->buf;
	*outlen = (uint32_t)n;
	return true;
}
