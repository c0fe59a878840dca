/*
 * test_journal.c — the journal: record encoding, writer→reader round trips
 * on both back ends, recovery of torn tails at every byte, bit-flip
 * detection, fault injection through the seam, simulated power loss,
 * monotonic timestamps, group commit and age sealing.
 *
 * Every test keeps a model of what it appended (seq, type, offset, data)
 * and checks what the reader returns against it byte for byte.  Seeds are
 * fixed so a failure reproduces.
 */
#include "common/rw.h"
#include "journal/jr.h"
#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

struct mrec {
	uint64_t seq;
	uint64_t ts;
	uint8_t type;
	uint64_t offset;
	uint32_t length;
	uint8_t *data;
	struct jr_loc loc;
	uint32_t stored;
	uint8_t flags;
	bool flushed;
};

struct model {
	struct mrec *v;
	size_t n, cap;
};

static void model_free(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].data);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

static struct mrec *model_find(struct model *m, uint64_t seq)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->v[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->n && m->v[lo].seq == seq ? &m->v[lo] : NULL;
}

static void fill_payload(uint64_t *st, uint8_t *p, size_t len)
{
	if (tu_rand(st) % 2) {
		tu_fill_random(st, p, len);
		return;
	}
	/* Compressible: a few repeated words with noise. */
	static const char *const words[] = { "rewind ", "journal ", "block ",
					     "\0\0\0\0\0\0\0\0", "seq " };
	size_t i = 0;
	while (i < len) {
		const char *w = words[tu_rand(st) % 5];
		size_t wl = w[0] ? strlen(w) : 8;
		for (size_t k = 0; k < wl && i < len; k++)
			p[i++] = (uint8_t)w[k];
	}
	if (len)
		p[tu_rand(st) % len] ^= 0x5a;
}

/*
 * Appends one random record (write up to maxlen, zero or trim) and
 * records it in the model.  Returns the append's result.
 */
static int append_random(uint64_t *st, struct jr_writer *w, struct jr_cctx *cc,
			 struct model *m, uint32_t maxlen)
{
	struct jr_append a = { 0 };
	struct jr_appended out;
	uint8_t *data = NULL;
	unsigned pick = (unsigned)(tu_rand(st) % 10);

	a.offset = (tu_rand(st) % (1u << 20)) * 512;
	if (pick < 7) {
		a.type = JR_WRITE;
		uint32_t len;
		switch (tu_rand(st) % 4) {
		case 0:
			len = 1 + (uint32_t)(tu_rand(st) % 100);
			break;
		case 1:
			len = 512 * (1 + (uint32_t)(tu_rand(st) % 8));
			break;
		default:
			len = 1 + (uint32_t)(tu_rand(st) % maxlen);
			break;
		}
		if (len > maxlen)
			len = maxlen;
		data = malloc(len);
		fill_payload(st, data, len);
		a.length = len;
		a.data = data;
	} else {
		a.type = pick < 9 ? JR_ZERO : JR_TRIM;
		a.length = 512 * (1 + (uint32_t)(tu_rand(st) % 4096));
	}
	int err = jr_writer_append(w, &a, cc, &out);
	if (err) {
		free(data);
		return err;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
	}
	struct mrec *r = &m->v[m->n++];
	memset(r, 0, sizeof(*r));
	r->seq = out.seq;
	r->ts = out.ts_ns;
	r->type = a.type;
	r->offset = a.offset;
	r->length = a.length;
	r->data = data;
	r->loc = out.loc;
	r->stored = out.stored_len;
	r->flags = out.flags;
	return 0;
}

__attribute__((unused)) static void model_mark_flushed(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		m->v[i].flushed = true;
}

static bool rec_matches(const struct mrec *e, const struct jr_rec *rec,
			const void *payload)
{
	if (rec->seq != e->seq || rec->ts_ns != e->ts || rec->type != e->type ||
	    rec->offset != e->offset || rec->length != e->length)
		return false;
	if (e->type == JR_WRITE)
		return payload && !memcmp(payload, e->data, e->length);
	return payload == NULL;
}

/*
 * Reads the whole journal and checks every record against the model.
 * Returns the reader's final result (0 = clean end) and the number of
 * records read in *count; *mismatch counts records that differ from the
 * model (must stay 0 whatever the result).
 */
static int read_all(const char *dir, unsigned flags, struct model *m,
		    size_t *count, size_t *mismatch)
{
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	struct jr_loc loc;
	const void *payload;
	uint64_t last_seq = 0, last_ts = 0;
	int err;

	*count = 0;
	*mismatch = 0;
	err = jr_reader_open(&r, dir, flags);
	if (err)
		return err;
	while ((err = jr_reader_next(r, &rec, &loc, &payload)) == 1) {
		struct mrec *e = model_find(m, rec.seq);
		(*count)++;
		if (!e || rec.seq <= last_seq || rec.ts_ns <= last_ts ||
		    (last_seq && rec.prev_seq != last_seq)) {
			(*mismatch)++;
			continue;
		}
		last_seq = rec.seq;
		last_ts = rec.ts_ns;
		if (flags & JR_READ_HEADERS) {
			if (rec.type != e->type || rec.length != e->length ||
			    payload != NULL)
				(*mismatch)++;
		} else if (!rec_matches(e, &rec, payload)) {
			(*mismatch)++;
		}
		if (loc.segment != e->loc.segment || loc.offset != e->loc.offset)
			(*mismatch)++;
	}
	jr_reader_close(r);
	return err;
}

static struct jr_writer *open_writer(const char *dir, enum jr_backend b,
				     uint64_t seg_bytes, struct jr_clock *clk,
				     struct jr_recovery *rep, int *errp)
{
	struct jr_writer_opts o;
	struct jr_writer *w = NULL;

	jr_writer_opts_default(&o);
	o.disk_id = 7;
	o.backend = b;
	if (seg_bytes)
		o.segment_bytes = seg_bytes;
	o.batch_bytes = 16 * 1024;
	int err = jr_writer_open(&w, dir, &o, clk, rep);
	if (errp)
		*errp = err;
	return err ? NULL : w;
}

static char *jdir(const char *tmp)
{
	char *p = NULL;
	if (asprintf(&p, "%s/journal", tmp) < 0)
		abort();
	return p;
}

__attribute__((unused)) static void seg_path(const char *dir, uint64_t first, char *buf, size_t sz)
{
	char name[32];
	jr_segment_name(first, name);
	snprintf(buf, sz, "%s/%s", dir, name);
}

__attribute__((unused)) static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		abort();
	uint8_t *b = malloc((size_t)st.st_size + 1);
	if (pread(fd, b, (size_t)st.st_size, 0) != st.st_size)
		abort();
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

__attribute__((unused)) static void spit(const char *path, const uint8_t *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || (len && write(fd, b, len) != (ssize_t)len))
		abort();
	close(fd);
}

__attribute__((unused)) static uint64_t file_len(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static bool uring_available(void)
{
	static int avail = -1;
	if (avail < 0) {
		char *tmp = tu_tmpdir("jr-probe");
		char *dir = jdir(tmp);
		struct jr_clock *clk;
		int err;
		jr_clock_new(&clk, 1, 0);
		struct jr_writer *w = open_writer(dir, JR_BACKEND_URING, 0, clk,
						  NULL, &err);
		avail = w != NULL;
		if (!w)
			printf("\n*** io_uring is REFUSED on this machine (%s): "
			       "uring tests run the sync back end instead ***\n",
			       rw_strerror(err));
		jr_writer_close(w);
		jr_clock_free(clk);
		tu_rmrf(tmp);
		free(dir);
		free(tmp);
	}
	return avail == 1;
}

static enum jr_backend uring_or_sync(void)
{
	return uring_available() ? JR_BACKEND_URING : JR_BACKEND_SYNC;
}

/* ------------------------------------------------------ 1. encoding */

static void test_encode_decode(void)
{
	uint8_t hdr[JR_HDR_SIZE], h2[JR_HDR_SIZE];
	uint8_t payload[300];
	struct jr_rec in, out;
	uint64_t st = 1;

	tu_fill_random(&st, payload, sizeof(payload));
	/* A flipped stored_len may claim up to JR_MAX_STORED bytes. */
	uint8_t *big = calloc(1, JR_MAX_STORED);
	memcpy(big, payload, sizeof(payload));
	static const struct { uint8_t type, flags; uint32_t len, stored; } c[] = {
		{ JR_WRITE, 0, 300, 300 },
		{ JR_WRITE, JR_F_ZSTD, 4096, 300 },
		{ JR_ZERO, 0, 1u << 20, 0 },
		{ JR_TRIM, 0, 0xFFFFFFFFu, 0 },
		{ JR_SEAL, 0, 0, 0 },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		memset(&in, 0, sizeof(in));
		in.type = c[i].type;
		in.flags = c[i].flags;
		in.seq = 1000 + i;
		in.prev_seq = c[i].type == JR_SEAL ? in.seq : 999;
		in.ts_ns = 1763806503250000000ull + i;
		in.disk_id = 42;
		in.offset = c[i].type == JR_SEAL ? 0 : 4096 * (i + 1);
		in.length = c[i].len;
		in.stored_len = c[i].stored;
		uint32_t crc = jr_rec_encode(&in, hdr, c[i].stored ? payload : NULL);
		CU_ASSERT_EQUAL(crc, in.crc);
		CU_ASSERT_EQUAL(rw_get_le32(hdr + 60), crc);
		CU_ASSERT_EQUAL(jr_rec_decode(hdr, &out), 0);
		CU_ASSERT_EQUAL(out.type, in.type);
		CU_ASSERT_EQUAL(out.flags, in.flags);
		CU_ASSERT_EQUAL(out.seq, in.seq);
		CU_ASSERT_EQUAL(out.ts_ns, in.ts_ns);
		CU_ASSERT_EQUAL(out.prev_seq, in.prev_seq);
		CU_ASSERT_EQUAL(out.disk_id, in.disk_id);
		CU_ASSERT_EQUAL(out.offset, in.offset);
		CU_ASSERT_EQUAL(out.length, in.length);
		CU_ASSERT_EQUAL(out.stored_len, in.stored_len);
		CU_ASSERT_EQUAL(out.crc, crc);
		CU_ASSERT_EQUAL(jr_rec_verify(&out, hdr, c[i].stored ? payload : NULL), 0);
		if (c[i].stored) {
			payload[7] ^= 1;
			CU_ASSERT_EQUAL(jr_rec_verify(&out, hdr, payload), RW_ECORRUPT);
			payload[7] ^= 1;
		}
		/* Every single-bit flip of the header is refused by decode
		 * or by verify. */
		for (int bit = 0; bit < 64 * 8; bit++) {
			memcpy(h2, hdr, sizeof(h2));
			h2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			bool refused = jr_rec_decode(h2, &out) != 0 ||
				       jr_rec_verify(&out, h2, big) != 0;
			CU_ASSERT(refused);
		}
	}
	free(big);
	CU_ASSERT_STRING_EQUAL(jr_type_name(JR_WRITE), "write");
	CU_ASSERT_STRING_EQUAL(jr_type_name(JR_SEAL), "seal");
	CU_ASSERT_STRING_EQUAL(jr_type_name(99), "?");
	char name[32];
	jr_segment_name(42, name);
	CU_ASSERT_STRING_EQUAL(name, "00000000000000000042");

	/* Targeted refusals, each with a valid crc so only decode decides. */
	struct { const char *what; int patch; } bad[] = {
		{ "magic", 0 }, { "header_len", 1 }, { "type", 2 },
		{ "stored_len > max", 3 }, { "offset+length overflow", 4 },
		{ "raw stored != length", 5 }, { "zero with payload", 6 },
		{ "unknown flag", 7 }, { "write length 0", 8 },
		{ "reserved byte", 9 }, { "seq 0", 10 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&in, 0, sizeof(in));
		in.type = JR_WRITE;
		in.seq = 5;
		in.prev_seq = 4;
		in.length = 100;
		in.stored_len = 100;
		in.offset = 512;
		switch (bad[i].patch) {
		case 2: in.type = 9; break;
		case 3: in.flags = JR_F_ZSTD; in.length = JR_MAX_WRITE;
			in.stored_len = JR_MAX_STORED + 1; break;
		case 4: in.offset = UINT64_MAX - 50; break;
		case 5: in.stored_len = 99; break;
		case 6: in.type = JR_ZERO; break;
		case 7: in.flags = 0x80; break;
		case 8: in.length = 0; in.stored_len = 0; break;
		case 10: in.seq = 0; in.prev_seq = 0; break;
		default: break;
		}
		jr_rec_encode(&in, hdr, in.stored_len <= sizeof(payload) ?
			      payload : NULL);
		if (bad[i].patch == 0)
			hdr[0] ^= 0xff;
		if (bad[i].patch == 1)
			rw_put_le16(hdr + 6, 128);
		if (bad[i].patch == 9)
			hdr[55] = 1;
		if (bad[i].patch <= 1 || bad[i].patch == 9)
			rw_put_le32(hdr + 60, rw_crc32c(rw_crc32c(0, hdr, 60),
							payload, in.stored_len));
		int err = jr_rec_decode(hdr, &out);
		if (err != RW_ECORRUPT)
			fprintf(stderr, "decode accepted bad %s\n", bad[i].what);
		CU_ASSERT_EQUAL(err, RW_ECORRUPT);
	}
	/* JR_MAX_RANGE zero at the very top of the range is fine. */
	memset(&in, 0, sizeof(in));
	in.type = JR_ZERO;
	in.seq = 2;
	in.prev_seq = 1;
	in.length = JR_MAX_RANGE;
	in.offset = 1ull << 40;
	jr_rec_encode(&in, hdr, NULL);
	CU_ASSERT_EQUAL(jr_rec_decode(hdr, &out), 0);

	/* cctx: level bounds. */
	struct jr_cctx *cc = NULL;
	CU_ASSERT_EQUAL(jr_cctx_new(&cc, 0), -EINVAL);
	CU_ASSERT_EQUAL(jr_cctx_new(&cc, 20), -EINVAL);
	CU_ASSERT_EQUAL(jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT), 0);
	jr_cctx_free(cc);
	jr_cctx_free(NULL);
}

/* ------------------------------------------------- 2. round trip */

static void roundtrip(enum jr_backend b)
{
	char *tmp = tu_tmpdir("jr-rt");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_cctx *cc;
	struct model m = { 0 };
	struct jr_recovery rep;
	uint64_t st = 0xC0FFEE + (uint64_t)b;
	int err;

	jr_clock_new(&clk, 1, 0);
	jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
	struct jr_writer *w = open_writer(dir, b, 256 * 1024, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.segments, 0);
	CU_ASSERT_EQUAL(rep.last_seq, 0);
	size_t nzstd = 0, nraw = 0;
	for (int i = 0; i < 400; i++) {
		uint32_t maxlen = i % 50 == 0 ? (1u << 20) : 64 * 1024;
		CU_ASSERT_EQUAL_FATAL(append_random(&st, w, i % 3 ? cc : NULL,
						    &m, maxlen), 0);
		if (m.v[m.n - 1].type == JR_WRITE) {
			if (m.v[m.n - 1].flags & JR_F_ZSTD)
				nzstd++;
			else
				nraw++;
		}
		if (i % 37 == 0) {
			CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
		} else if (i % 11 == 0) {
			CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
		}
	}
	CU_ASSERT(nzstd > 10);
	CU_ASSERT(nraw > 10);
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.uring, b == JR_BACKEND_URING);
	CU_ASSERT_EQUAL(ws.records, 400);
	CU_ASSERT_EQUAL(ws.last_seq, m.v[m.n - 1].seq);
	CU_ASSERT(ws.stored_bytes < ws.logical_bytes);
	CU_ASSERT_EQUAL(ws.error, 0);
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, ws.last_seq);
	CU_ASSERT_EQUAL(ws.written_seq, ws.last_seq);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	/* seq/ts strictly increasing in append order, chain by the model. */
	for (size_t i = 1; i < m.n; i++) {
		CU_ASSERT(m.v[i].seq == m.v[i - 1].seq + 1);
		CU_ASSERT(m.v[i].ts > m.v[i - 1].ts);
	}
	struct jr_seginfo *segs = NULL;
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT(ns > 10);
	for (int i = 1; i < ns; i++)
		CU_ASSERT(segs[i].first_seq > segs[i - 1].first_seq);
	if (ns > 0)
		CU_ASSERT_EQUAL(segs[0].first_seq, 1);
	free(segs);

	size_t count, mism;
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(count, m.n);
	CU_ASSERT_EQUAL(mism, 0);
	CU_ASSERT_EQUAL(read_all(dir, JR_READ_HEADERS, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(count, m.n);
	CU_ASSERT_EQUAL(mism, 0);

	/* read_at every location. */
	struct jr_reader *r = NULL;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	uint8_t *buf = malloc(1u << 20);
	size_t bad = 0;
	for (size_t i = 0; i < m.n; i++) {
		struct jr_rec rec;
		memset(buf, 0xee, 16);
		err = jr_reader_read_at(r, &m.v[i].loc, &rec, buf, 1u << 20);
		if (err || rec.seq != m.v[i].seq || rec.type != m.v[i].type ||
		    rec.length != m.v[i].length ||
		    (rec.type == JR_WRITE && memcmp(buf, m.v[i].data, rec.length)))
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
	/* Buffer too small, missing segment, wrong offset. */
	for (size_t i = 0; i < m.n; i++) {
		if (m.v[i].type != JR_WRITE || m.v[i].length < 2)
			continue;
		struct jr_rec rec;
		CU_ASSERT_EQUAL(jr_reader_read_at(r, &m.v[i].loc, &rec, buf,
						  m.v[i].length - 1), -ENOBUFS);
		struct jr_loc l = m.v[i].loc;
		l.offset += 1;
		CU_ASSERT_EQUAL(jr_reader_read_at(r, &l, &rec, buf, 1u << 20),
				RW_ECORRUPT);
		CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "offset"));
		break;
	}
	struct jr_loc nol = { 999999999, 64 };
	struct jr_rec rec;
	CU_ASSERT_EQUAL(jr_reader_read_at(r, &nol, &rec, buf, 1u << 20),
			RW_ENOTFOUND);

	/* Seek to every 17th seq, and past the end. */
	for (size_t i = 0; i < m.n; i += 17) {
		const void *p;
		struct jr_loc loc;
		CU_ASSERT_EQUAL(jr_reader_seek(r, m.v[i].seq), 0);
		CU_ASSERT_EQUAL(jr_reader_next(r, &rec, &loc, &p), 1);
		CU_ASSERT(rec_matches(&m.v[i], &rec, p));
		CU_ASSERT_EQUAL(jr_reader_next(r, &rec, &loc, &p),
				i + 1 < m.n ? 1 : 0);
		if (i + 1 < m.n)
			CU_ASSERT(rec_matches(&m.v[i + 1], &rec, p));
	}
	CU_ASSERT_EQUAL(jr_reader_seek(r, m.v[m.n - 1].seq + 1), 0);
	CU_ASSERT_EQUAL(jr_reader_next(r, &rec, NULL, NULL), 0);
	free(buf);
	jr_reader_close(r);

	/* Reopen continues the seq and the chain. */
	jr_clock_free(clk);
	jr_clock_new(&clk, 1, 0);
	w = open_writer(dir, b, 256 * 1024, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.last_seq, m.v[m.n - 1].seq);
	CU_ASSERT_EQUAL(rep.last_ts, m.v[m.n - 1].ts);
	CU_ASSERT_EQUAL(rep.truncated_bytes, 0);
	CU_ASSERT_EQUAL(rep.segments, (uint64_t)ns);
	CU_ASSERT_EQUAL(jr_clock_peek(clk), m.v[m.n - 1].seq + 1);
	CU_ASSERT_EQUAL(append_random(&st, w, cc, &m, 4096), 0);
	CU_ASSERT_EQUAL(m.v[m.n - 1].seq, m.v[m.n - 2].seq + 1);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(count, m.n);
	CU_ASSERT_EQUAL(mism, 0);

	/* Bad appends. */
	w = open_writer(dir, b, 256 * 1024, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	struct jr_append a = { .type = JR_SEAL, .length = 1 };
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, NULL), -EINVAL);
	a.type = JR_WRITE;
	a.length = JR_MAX_WRITE + 1;
	a.data = &st;
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, NULL), -EINVAL);
	a.type = JR_ZERO;
	a.length = 4096;
	a.offset = UINT64_MAX - 100;
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	jr_cctx_free(cc);
	jr_clock_free(clk);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_roundtrip_sync(void)
{
	roundtrip(JR_BACKEND_SYNC);
}

static void test_roundtrip_uring(void)
{
	roundtrip(uring_or_sync());
}

/* -------------------------------------------------------- main */

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	tu_add_suite("journal",
		     "record encode/decode", test_encode_decode,
		     "round trip, sync back end", test_roundtrip_sync,
		     "round trip, io_uring back end", test_roundtrip_uring,
		     NULL);
	return tu_run();
}
