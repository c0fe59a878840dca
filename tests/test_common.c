/*
 * test_common.c — CRC32C vectors (RFC 3720 B.4), endian helpers, size and
 * duration parsing, the fault seam and error strings.
 */
#include "common/rw.h"
#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

int main(void)
{
	tu_add_suite("common",
		     "crc32c RFC 3720 vectors", test_crc_rfc3720,
		     "crc32c incremental/unaligned", test_crc_incremental_and_unaligned,
		     "endian helpers", test_endian,
		     "parse sizes", test_parse_size,
		     "parse durations", test_parse_duration,
		     "error strings", test_strerror,
		     "fault seam", test_fault_seam,
		     "clock source", test_clock_source,
		     NULL);
	return tu_run();
}
