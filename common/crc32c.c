/*
 * crc32c.c — CRC32C (Castagnoli), RFC 3720 parameters.
 *
 * The hardware path uses the SSE4.2 crc32 instruction 8 bytes at a time,
 * on three independent streams: the instruction has a latency of three
 * cycles but issues one per cycle, so a single chain runs at a third of
 * the possible rate (5 GB/s at 2 GHz — restore and rollback checksum every
 * record they read, so on a 2 GHz host a 24 MiB read set cost 4.5 ms of
 * CRC alone).  A buffer is cut into three equal blocks (8 KiB, then 256
 * bytes for the rest), checksummed in parallel, and the three results
 * are combined by shifting the first ones over the length of the blocks
 * that follow them: a multiplication by x^(8 * block) mod P, done with
 * four 256-entry tables per block size built once (Mark Adler's crc32c.c
 * method).  rw_crc32c_combine() moves a crc over any length the same way,
 * with one operator per power of two (the journal writer checksums
 * payloads before it takes its lock).  The portable path is slicing-by-8
 * over tables built once.
 * The choice is made on first use with __builtin_cpu_supports.
 */
#include "rw.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define RW_HAVE_X86_CRC 1
#endif

static uint32_t crc_table[8][256];
#define CRC_LONG 8192u
#define CRC_SHORT 256u
/* Shift a crc over CRC_LONG / CRC_SHORT zero bytes (see crc_shift()). */
static uint32_t crc_long[4][256], crc_short[4][256];
/* crc_pow[k]: the operator moving a crc over 2^k zero bytes
 * (rw_crc32c_combine). */
static uint32_t crc_pow[64][32];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_use_hw;

/* Multiplies the 32x32 GF(2) matrix mat by the vector vec. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;

	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		sq[n] = gf2_times(mat, mat[n]);
}

/*
 * Builds tables that move a crc over len zero bytes (len a power of two):
 * zeros[k][b] is the operator applied to byte b at position k.
 */
static void crc_zeros(uint32_t zeros[4][256], size_t len)
{
	uint32_t odd[32], even[32], row = 1;

	odd[0] = 0x82F63B78u; /* one zero bit: the polynomial */
	for (int n = 1; n < 32; n++, row <<= 1)
		odd[n] = row;
	gf2_square(even, odd); /* two zero bits */
	gf2_square(odd, even); /* four */
	/* odd holds the operator for 4 bits = len 0.5 bytes; square up to
	 * 8 * len bits: each squaring doubles the length. */
	const uint32_t *op = odd;
	for (size_t bits = 4; bits < 8 * len; bits <<= 1) {
		if (op == odd) {
			gf2_square(even, odd);
			op = even;
		} else {
			gf2_square(odd, even);
			op = odd;
		}
	}
	for (uint32_t n = 0; n < 256; n++) {
		zeros[0][n] = gf2_times(op, n);
		zeros[1][n] = gf2_times(op, n << 8);
		zeros[2][n] = gf2_times(op, n << 16);
		zeros[3][n] = gf2_times(op, n << 24);
	}
}

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = crc_table[0][i];
		for (int t = 1; t < 8; t++) {
			c = crc_table[0][c & 0xff] ^ (c >> 8);
			crc_table[t][i] = c;
		}
	}
	/* One zero bit, squared three times: one zero byte; then doubling. */
	uint32_t a[32], b[32], row = 1;
	a[0] = 0x82F63B78u;
	for (int n = 1; n < 32; n++, row <<= 1)
		a[n] = row;
	gf2_square(b, a);
	gf2_square(a, b);
	gf2_square(crc_pow[0], a);
	for (int k = 1; k < 64; k++)
		gf2_square(crc_pow[k], crc_pow[k - 1]);
#ifdef RW_HAVE_X86_CRC
	__builtin_cpu_init();
	crc_use_hw = __builtin_cpu_supports("sse4.2");
	if (crc_use_hw) {
		crc_zeros(crc_long, CRC_LONG);
		crc_zeros(crc_short, CRC_SHORT);
	}
#endif
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint32_t lo = crc ^ rw_get_le32(p);
		uint32_t hi = rw_get_le32(p + 4);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#ifdef RW_HAVE_X86_CRC
/* crc moved over the block size of zeros (crc_long or crc_short). */
static inline uint32_t crc_shift(uint32_t zeros[4][256], uint32_t crc)
{
	return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^
	       zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Three blocks of blk bytes at p in parallel; returns the crc after them. */
__attribute__((target("sse4.2")))
static uint64_t crc_hw3(uint64_t c0, const uint8_t *p, size_t blk,
			uint32_t zeros[4][256])
{
	uint64_t c1 = 0, c2 = 0;

	for (const uint8_t *end = p + blk; p < end; p += 8) {
		c0 = _mm_crc32_u64(c0, load64(p));
		c1 = _mm_crc32_u64(c1, load64(p + blk));
		c2 = _mm_crc32_u64(c2, load64(p + 2 * blk));
	}
	c0 = crc_shift(zeros, (uint32_t)c0) ^ c1;
	return crc_shift(zeros, (uint32_t)c0) ^ c2;
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;

	while (len >= 3 * CRC_LONG) {
		c = crc_hw3(c, p, CRC_LONG, crc_long);
		p += 3 * CRC_LONG;
		len -= 3 * CRC_LONG;
	}
	while (len >= 3 * CRC_SHORT) {
		c = crc_hw3(c, p, CRC_SHORT, crc_short);
		p += 3 * CRC_SHORT;
		len -= 3 * CRC_SHORT;
	}
	while (len >= 8) {
		c = _mm_crc32_u64(c, load64(p));
		p += 8;
		len -= 8;
	}
	crc = (uint32_t)c;
	while (len--)
		crc = _mm_crc32_u8(crc, *p++);
	return crc;
}
#endif

uint32_t rw_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
#ifdef RW_HAVE_X86_CRC
	if (crc_use_hw)
		return ~crc_hw(~crc, buf, len);
#endif
	return ~crc_sw(~crc, buf, len);
}

uint32_t rw_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t len2)
{
	pthread_once(&crc_once, crc_init);
	/* crc(A || B) = (crc1 moved over len2 zero bytes) ^ crc2: the pre-
	 * and post-inversions cancel (as in zlib's crc32_combine). */
	for (int k = 0; len2; k++, len2 >>= 1)
		if (len2 & 1)
			crc1 = gf2_times(crc_pow[k], crc1);
	return crc1 ^ crc2;
}

uint32_t rw_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, buf, len);
}

bool rw_crc32c_hw(void)
{
	pthread_once(&crc_once, crc_init);
	return crc_use_hw;
}
