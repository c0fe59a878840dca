/*
 * test_common.c — CRC32C vectors (RFC 3720 B.4), endian helpers, size and
 * duration parsing, the fault seam and error strings.
 */
#include "common/rw.h"
#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

static void test_crc_rfc3720(void)
{
	uint8_t buf[48];

	/* RFC 3720 B.4: 32 bytes of zeroes, of ones, incrementing, decrementing. */
	memset(buf, 0, 32);
	CU_ASSERT_EQUAL(rw_crc32c(0, buf, 32), 0x8A9136AAu);
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, 32);
	CU_ASSERT_EQUAL(rw_crc32c(0, buf, 32), 0x62A8AB43u);
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, buf, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	CU_ASSERT_EQUAL(rw_crc32c(0, buf, 32), 0x46DD794Eu);
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, buf, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	CU_ASSERT_EQUAL(rw_crc32c(0, buf, 32), 0x113FDB5Cu);
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, buf, 32), 0x113FDB5Cu);
	/* An iSCSI read PDU from B.4. */
	static const uint8_t pdu[48] = {
		0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x14, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
		0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0,
	};
	CU_ASSERT_EQUAL(rw_crc32c(0, pdu, 48), 0xD9963A56u);
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, pdu, 48), 0xD9963A56u);
	/* "123456789" check value. */
	CU_ASSERT_EQUAL(rw_crc32c(0, "123456789", 9), 0xE3069283u);
}

static void test_crc_incremental_and_unaligned(void)
{
	uint64_t st = 42;
	uint8_t buf[4099];

	tu_fill_random(&st, buf, sizeof(buf));
	uint32_t whole = rw_crc32c(0, buf, sizeof(buf));
	CU_ASSERT_EQUAL(rw_crc32c_sw(0, buf, sizeof(buf)), whole);
	for (size_t cut = 0; cut < 40; cut++) {
		uint32_t c = rw_crc32c(0, buf, cut);
		c = rw_crc32c(c, buf + cut, sizeof(buf) - cut);
		CU_ASSERT_EQUAL(c, whole);
	}
	/* Unaligned starts agree between the two paths. */
	for (size_t o = 1; o < 9; o++)
		CU_ASSERT_EQUAL(rw_crc32c(0, buf + o, 1000),
				rw_crc32c_sw(0, buf + o, 1000));
	/* Lengths around the 3-way blocks (3 x 256 and 3 x 8192 bytes). */
	static const size_t lens[] = { 767, 768, 769, 1543, 24575, 24576,
				       24577, 24576 + 768 + 13, 49152, 81920 };
	uint8_t *big = malloc(81920 + 8);
	CU_ASSERT_FATAL(big != NULL);
	tu_fill_random(&st, big, 81920 + 8);
	size_t bad = 0;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		for (size_t o = 0; o < 8; o++)
			if (rw_crc32c(7, big + o, lens[i]) !=
			    rw_crc32c_sw(7, big + o, lens[i]))
				bad++;
	CU_ASSERT_EQUAL(bad, 0);
	/* combine(crc(A), crc(B), |B|) == crc(A || B) at every split. */
	static const size_t cuts[] = { 0, 1, 7, 60, 64, 4096, 65536, 81920 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		size_t a = cuts[i] < 81920 ? 81920 - cuts[i] : 0;
		for (size_t k = 0; k < 2; k++) {
			size_t la = k ? 60 : a, lb = 81920 - la;
			uint32_t ca = rw_crc32c(0, big, la);
			uint32_t cb = rw_crc32c(0, big + la, lb);
			if (rw_crc32c_combine(ca, cb, lb) != rw_crc32c(0, big, 81920))
				bad++;
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	free(big);
}

/*
 * The hardware path checksums three blocks in parallel (8 KiB blocks from
 * 24 KiB up, 256-byte blocks from 768 bytes) and combines them: every
 * length around those thresholds, at several alignments and with a
 * non-zero starting crc, must agree with the table-driven path.
 */
static void test_crc_interleaved_lengths(void)
{
	uint64_t st = 7;
	size_t cap = 4 * 24576 + 64;
	uint8_t *buf = malloc(cap);
	int bad = 0;

	CU_ASSERT_FATAL(buf != NULL);
	tu_fill_random(&st, buf, cap);
	static const size_t base[] = { 0, 768, 24576, 2 * 24576, 3 * 24576 + 768 };
	for (size_t b = 0; b < sizeof(base) / sizeof(base[0]); b++)
		for (size_t d = 0; d < 40; d++)
			for (size_t o = 0; o < 3; o++) {
				size_t len = base[b] + d * 7 - (b ? 20 : 0);
				if (len > cap - o)
					continue;
				bad += rw_crc32c(0x1234u, buf + o, len) !=
				       rw_crc32c_sw(0x1234u, buf + o, len);
			}
	CU_ASSERT_EQUAL(bad, 0);
	/* One large buffer, and the same split at a block edge. */
	uint32_t whole = rw_crc32c(0, buf, cap);
	CU_ASSERT_EQUAL(whole, rw_crc32c_sw(0, buf, cap));
	CU_ASSERT_EQUAL(rw_crc32c(rw_crc32c(0, buf, 24576), buf + 24576,
				  cap - 24576), whole);
	free(buf);
}

static void test_endian(void)
{
	uint8_t b[8];

	rw_put_le64(b, 0x0102030405060708ull);
	CU_ASSERT_EQUAL(b[0], 0x08);
	CU_ASSERT_EQUAL(b[7], 0x01);
	CU_ASSERT_EQUAL(rw_get_le64(b), 0x0102030405060708ull);
	rw_put_be64(b, 0x0102030405060708ull);
	CU_ASSERT_EQUAL(b[0], 0x01);
	CU_ASSERT_EQUAL(rw_get_be64(b), 0x0102030405060708ull);
	rw_put_le32(b, 0xdeadbeef);
	CU_ASSERT_EQUAL(rw_get_le32(b), 0xdeadbeef);
	rw_put_be32(b, 0xdeadbeef);
	CU_ASSERT_EQUAL(b[0], 0xde);
	CU_ASSERT_EQUAL(rw_get_be32(b), 0xdeadbeef);
	rw_put_le16(b, 0xbeef);
	CU_ASSERT_EQUAL(rw_get_le16(b), 0xbeef);
	rw_put_be16(b, 0xbeef);
	CU_ASSERT_EQUAL(rw_get_be16(b), 0xbeef);
	CU_ASSERT_TRUE(rw_range_ok(10, 20, 30));
	CU_ASSERT_FALSE(rw_range_ok(10, 21, 30));
	CU_ASSERT_FALSE(rw_range_ok(UINT64_MAX, 2, UINT64_MAX));
	CU_ASSERT_FALSE(rw_range_ok(2, UINT64_MAX, UINT64_MAX));
}

static void test_parse_size(void)
{
	static const struct { const char *in; uint64_t out; } ok[] = {
		{ "0", 0 }, { "512", 512 }, { "4K", 4096 }, { "512M", 512ull << 20 },
		{ "20G", 20ull << 30 }, { "1T", 1ull << 40 }, { "2GiB", 2ull << 30 },
		{ "3MB", 3ull << 20 }, { "7b", 7 }, { "1g", 1ull << 30 },
	};
	static const char *const bad[] = {
		"", "G", "-1", "1X", "1GG", "12 G", "99999999999999999999",
		"16384P", " 1", "1.5G",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 1;
		CU_ASSERT_EQUAL(rw_parse_size(ok[i].in, &v), 0);
		CU_ASSERT_EQUAL(v, ok[i].out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v;
		CU_ASSERT_EQUAL(rw_parse_size(bad[i], &v), RW_EPARSE);
		CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "size"));
	}
}

static void test_parse_duration(void)
{
	uint64_t v;

	CU_ASSERT_EQUAL(rw_parse_duration("90s", &v), 0);
	CU_ASSERT_EQUAL(v, 90000000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("10m", &v), 0);
	CU_ASSERT_EQUAL(v, 600000000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("2h", &v), 0);
	CU_ASSERT_EQUAL(v, 7200000000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("7d", &v), 0);
	CU_ASSERT_EQUAL(v, 7ull * 86400 * 1000000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("250ms", &v), 0);
	CU_ASSERT_EQUAL(v, 250000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("1.5", &v), 0);
	CU_ASSERT_EQUAL(v, 1500000000ull);
	CU_ASSERT_EQUAL(rw_parse_duration("", &v), RW_EPARSE);
	CU_ASSERT_EQUAL(rw_parse_duration("10x", &v), RW_EPARSE);
	CU_ASSERT_EQUAL(rw_parse_duration("-3s", &v), RW_EPARSE);
	CU_ASSERT_EQUAL(rw_parse_duration("1e30d", &v), RW_EPARSE);
}

static void test_strerror(void)
{
	CU_ASSERT_STRING_EQUAL(rw_strerror(-ENOENT), strerror(ENOENT));
	CU_ASSERT_STRING_EQUAL(rw_strerror(RW_ECORRUPT), "Corrupt data");
	CU_ASSERT_PTR_NOT_NULL(rw_strerror(-123456));
	CU_ASSERT_EQUAL(rw_err_set(RW_ENOTFOUND, "no disk '%s'", "vm1"),
			RW_ENOTFOUND);
	CU_ASSERT_STRING_EQUAL(rw_err_msg(), "no disk 'vm1'");
	rw_err_clear();
	CU_ASSERT_STRING_EQUAL(rw_err_msg(), "");
}

static void test_fault_seam(void)
{
	char *dir = tu_tmpdir("seam");
	char path[512];
	snprintf(path, sizeof(path), "%s/f", dir);

	rw_fault_reset();
	int fd = rw_sys_open(path, O_RDWR | O_CREAT, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	rw_fault_arm(RW_OP_WRITE, 2, -EIO, false);
	CU_ASSERT_EQUAL(rw_sys_pwrite(fd, "a", 1, 0), 1);
	CU_ASSERT_EQUAL(rw_sys_pwrite(fd, "b", 1, 1), -EIO);
	CU_ASSERT_EQUAL(rw_sys_pwrite(fd, "c", 1, 1), 1);
	rw_fault_arm(RW_OP_FSYNC, 1, -EIO, true);
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), -EIO);
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), -EIO);
	rw_fault_arm_short(RW_OP_WRITE, 1, 3);
	CU_ASSERT_EQUAL(rw_sys_pwrite(fd, "hello", 5, 0), 3);
	rw_fault_reset();
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), 0);
	CU_ASSERT_EQUAL(rw_fault_count(RW_OP_FSYNC), 1);
	CU_ASSERT_EQUAL(rw_fault_from_env("fsync:2:ENOSPC:sticky,write:delay:1"), 0);
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), 0);
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), -ENOSPC);
	CU_ASSERT_EQUAL(rw_sys_fdatasync(fd), -ENOSPC);
	CU_ASSERT_EQUAL(rw_fault_from_env("bogus:1:EIO"), RW_EPARSE);
	CU_ASSERT_EQUAL(rw_fault_from_env("fsync:x:EIO"), RW_EPARSE);
	rw_fault_reset();
	close(fd);
	tu_rmrf(dir);
	free(dir);
}

static uint64_t fake_now = 1000;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static void test_clock_source(void)
{
	rw_clock_set_source(fake_clock);
	CU_ASSERT_EQUAL(rw_clock_ns(), 1000);
	rw_clock_set_source(NULL);
	CU_ASSERT(rw_clock_ns() > 1700000000ull * 1000000000ull);
}

static void test_parse_when(void)
{
	const uint64_t now = 1763806503250000000ull; /* 2025-11-22T10:15:03.25Z */
	static const struct { const char *in; uint64_t ns; } ok[] = {
		{ "2026-11-22T10:15:03.250Z", 1795342503250000000ull },
		{ "2026-11-22T10:15:03Z", 1795342503000000000ull },
		{ "2026-11-22t10:15:03.000000001z", 1795342503000000001ull },
		{ "2026-11-22T11:15:03.25+01:00", 1795342503250000000ull },
		{ "2026-11-22T04:45:03.25-0530", 1795342503250000000ull },
		{ "2026-11-22 10:15:03.250Z", 1795342503250000000ull },
		{ "2026-11-22T10:15Z", 1795342500000000000ull },
		{ "@1763806503.25", 1763806503250000000ull },
		{ "@1763806503", 1763806503000000000ull },
		{ "@0.5", 500000000ull },
		{ "now", 1763806503250000000ull },
		{ "90s ago", 1763806413250000000ull },
		{ "10m ago", 1763805903250000000ull },
		{ "2h ago", 1763799303250000000ull },
		{ "1d ago", 1763720103250000000ull },
	};
	static const char *const bad[] = {
		"", "yesterday", "2026-13-01T00:00:00Z", "2026-02-31T00:00:00Z",
		"2026-11-22T25:00:00Z", "2026-11-22T10:15:03.Z", "2026-11-22T10:15:03Zjunk",
		"@", "@abc", "@1.2.3", "10 parsecs ago", "ago", "seq:", "seq:x1",
		"seq:-1", "mark:", "2026-11-22T10:15:03+25:00", "99999999999999 ago",
	};
	struct rw_when w;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int err = rw_parse_when(ok[i].in, now, &w);
		CU_ASSERT_EQUAL(err, 0);
		CU_ASSERT_EQUAL(w.kind, RW_WHEN_TIME);
		if (err || w.ts_ns != ok[i].ns)
			printf("\n  parse_when('%s') = %d, %llu (want %llu)\n", ok[i].in,
			       err, (unsigned long long)w.ts_ns,
			       (unsigned long long)ok[i].ns);
		CU_ASSERT_EQUAL(w.ts_ns, ok[i].ns);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int err = rw_parse_when(bad[i], now, &w);
		if (err != RW_EPARSE)
			printf("\n  parse_when('%s') accepted\n", bad[i]);
		CU_ASSERT_EQUAL(err, RW_EPARSE);
		CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "ISO 8601"));
	}
	CU_ASSERT_EQUAL(rw_parse_when("seq:42", now, &w), 0);
	CU_ASSERT_EQUAL(w.kind, RW_WHEN_SEQ);
	CU_ASSERT_EQUAL(w.seq, 42);
	CU_ASSERT_EQUAL(rw_parse_when("mark:before-upgrade", now, &w), 0);
	CU_ASSERT_EQUAL(w.kind, RW_WHEN_MARK);
	CU_ASSERT_STRING_EQUAL(w.mark, "before-upgrade");

	/* Local time follows TZ, including its offset on that date. */
	char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
	setenv("TZ", "Europe/Berlin", 1);
	tzset();
	CU_ASSERT_EQUAL(rw_parse_when("2026-11-22 11:15:03.25", now, &w), 0);
	CU_ASSERT_EQUAL(w.ts_ns, 1795342503250000000ull);
	CU_ASSERT_EQUAL(rw_parse_when("2026-07-01 12:00:00", now, &w), 0);
	CU_ASSERT_EQUAL(w.ts_ns, 1782900000000000000ull); /* 10:00Z, CEST */
	if (old) {
		setenv("TZ", old, 1);
		free(old);
	} else {
		unsetenv("TZ");
	}
	tzset();
}

int main(void)
{
	tu_add_suite("common",
		     "crc32c RFC 3720 vectors", test_crc_rfc3720,
		     "crc32c incremental/unaligned", test_crc_incremental_and_unaligned,
		     "crc32c interleaved hardware path, all lengths", test_crc_interleaved_lengths,
		     "endian helpers", test_endian,
		     "parse sizes", test_parse_size,
		     "parse durations", test_parse_duration,
		     "error strings", test_strerror,
		     "fault seam", test_fault_seam,
		     "clock source", test_clock_source,
		     "parse --at times", test_parse_when,
		     NULL);
	return tu_run();
}
