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
#include "journal/jr_int.h"
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
	bool pending;   /* queued to the writer's workers: loc, stored and
			 * flags are filled by read_all */
	bool flushed;
	bool seen;      /* set by read_all */
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
	r->pending = out.pending;
	return 0;
}

static void model_mark_flushed(struct model *m)
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
	for (size_t i = 0; i < m->n; i++)
		m->v[i].seen = false;
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
		e->seen = true;
		if (e->pending) {
			e->pending = false;
			e->loc = loc;
			e->stored = rec.stored_len;
			e->flags = rec.flags;
		}
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

/* Compression workers of the writers open_writer opens (0 = none). */
static unsigned g_pool;
static bool g_raw_behind;      /* jr_writer_opts.raw_when_behind */

static struct jr_writer *open_writer(const char *dir, enum jr_backend b,
				     uint64_t seg_bytes, struct jr_clock *clk,
				     struct jr_recovery *rep, int *errp)
{
	struct jr_writer_opts o;
	struct jr_writer *w = NULL;

	jr_writer_opts_default(&o);
	o.disk_id = 7;
	o.backend = b;
	o.compress_threads = g_pool;
	o.raw_when_behind = g_raw_behind;
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

static void seg_path(const char *dir, uint64_t first, char *buf, size_t sz)
{
	char name[32];
	jr_segment_name(first, name);
	snprintf(buf, sz, "%s/%s", dir, name);
}

static uint8_t *slurp(const char *path, size_t *len)
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

static void spit(const char *path, const uint8_t *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || (len && write(fd, b, len) != (ssize_t)len))
		abort();
	close(fd);
}

static uint64_t file_len(const char *path)
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
		{ JR_FLUSH, 0, 0, 0 },
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
		in.offset = c[i].type == JR_SEAL || c[i].type == JR_FLUSH ?
			    0 : 4096 * (i + 1);
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
		{ "flush with a length", 11 }, { "flush with an offset", 12 },
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
		case 11: in.type = JR_FLUSH; in.stored_len = 0; break;
		case 12: in.type = JR_FLUSH; in.stored_len = 0; in.length = 0;
			in.offset = 4096; break;
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
		/* Only with workers is a record pending. */
		CU_ASSERT(!m.v[m.n - 1].pending || g_pool);
		if (i % 37 == 0) {
			CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
		} else if (i % 11 == 0) {
			CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
		}
	}
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
	for (size_t i = 0; i < m.n; i++) {
		if (m.v[i].type != JR_WRITE)
			continue;
		if (m.v[i].flags & JR_F_ZSTD)
			nzstd++;
		else
			nraw++;
	}
	CU_ASSERT(nzstd > 10);
	CU_ASSERT(nraw > 10);
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

static void test_roundtrip_pool(void)
{
	g_pool = 2;
	roundtrip(JR_BACKEND_SYNC);
	roundtrip(uring_or_sync());
	g_pool = 0;
}

/* ------------------------------------------- 3. torn tail at every byte */

static void test_truncate_every_byte(void)
{
	char *tmp = tu_tmpdir("jr-cut");
	char *dir = jdir(tmp);
	char path[1024];
	struct jr_clock *clk;
	struct jr_cctx *cc;
	struct model m = { 0 };
	uint64_t st = 3;
	int err;

	jr_clock_new(&clk, 100, 0);
	jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 8; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, cc, &m, 2000), 0);
	/* The last three: a raw write, a zero, a compressed write. */
	uint8_t raw[700], text[900];
	tu_fill_random(&st, raw, sizeof(raw));
	memset(text, 'x', sizeof(text));
	struct jr_append a1 = { JR_WRITE, 4096, sizeof(raw), raw };
	struct jr_append a2 = { JR_ZERO, 8192, 65536, NULL };
	struct jr_append a3 = { JR_WRITE, 1 << 20, sizeof(text), text };
	struct jr_appended o[3];
	CU_ASSERT_EQUAL(jr_writer_append(w, &a1, cc, &o[0]), 0);
	CU_ASSERT_EQUAL(jr_writer_append(w, &a2, cc, &o[1]), 0);
	CU_ASSERT_EQUAL(jr_writer_append(w, &a3, cc, &o[2]), 0);
	CU_ASSERT_EQUAL(o[0].flags, 0);
	CU_ASSERT_EQUAL(o[2].flags, JR_F_ZSTD);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	seg_path(dir, o[0].loc.segment, path, sizeof(path));
	size_t len;
	uint8_t *orig = slurp(path, &len);
	/* ends[k]: file end after record k (k = -1 .. 2) */
	uint64_t ends[4] = { o[0].loc.offset, o[1].loc.offset, o[2].loc.offset,
			     len };
	uint64_t seqs[4] = { o[0].seq - 1, o[0].seq, o[1].seq, o[2].seq };
	CU_ASSERT_EQUAL(ends[3], o[2].loc.offset + 64 + o[2].stored_len);
	size_t bad_rep = 0, bad_append = 0, cuts = 0;
	for (uint64_t cut = ends[0]; cut < len; cut++) {
		int k = 0;
		while (k < 3 && ends[k + 1] <= cut)
			k++;
		spit(path, orig, (size_t)cut);
		struct jr_recovery rep;
		w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, &rep, &err);
		CU_ASSERT_EQUAL(err, 0);
		if (!w)
			break;
		cuts++;
		uint64_t torn = cut - ends[k];
		if (rep.last_seq != seqs[k] || rep.truncated_bytes != torn ||
		    rep.torn_segment != (torn ? o[0].loc.segment : 0) ||
		    rep.segments != 1 || file_len(path) != ends[k])
			bad_rep++;
		struct jr_append z = { JR_TRIM, 0, 512, NULL };
		struct jr_appended zo;
		uint64_t next = jr_clock_peek(clk);
		if (jr_writer_append(w, &z, NULL, &zo) || zo.seq != next ||
		    zo.loc.offset != ends[k])
			bad_append++;
		CU_ASSERT_EQUAL(jr_writer_close(w), 0);
		if (cut % 16 == 0) {
			struct jr_reader *r = NULL;
			struct jr_rec rec;
			CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
			if (jr_reader_read_at(r, &zo.loc, &rec, NULL, 0) ||
			    rec.prev_seq != seqs[k] || rec.seq != zo.seq)
				bad_append++;
			size_t n = 0;
			while ((err = jr_reader_next(r, &rec, NULL, NULL)) == 1)
				n++;
			if (err || n != m.n + (size_t)k + 1)
				bad_append++;
			jr_reader_close(r);
		}
	}
	CU_ASSERT_EQUAL(cuts, len - ends[0]);
	CU_ASSERT_EQUAL(bad_rep, 0);
	CU_ASSERT_EQUAL(bad_append, 0);
	free(orig);
	jr_cctx_free(cc);
	jr_clock_free(clk);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* --------------------------------------------------------- 4. bit flips */

struct region {
	uint64_t seg;
	uint64_t off;
	uint64_t len;
	bool last_seg;
};

static void flip_bit(const char *path, uint64_t off, int bit)
{
	uint8_t b;
	int fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, &b, 1, (off_t)off) != 1)
		abort();
	b ^= (uint8_t)(1u << bit);
	if (pwrite(fd, &b, 1, (off_t)off) != 1)
		abort();
	close(fd);
}

/*
 * durable_seq (records the caller knows synced): recovery takes records
 * up to it on their headers and chain alone, but still checks every
 * record after it — a final record damaged after durable_seq is still cut
 * as a torn tail — and readers still catch damage in the trusted prefix.
 */
static void test_durable_prefix(void)
{
	char *tmp = tu_tmpdir("jr-durable");
	char *dir = jdir(tmp);
	char path[1024];
	struct jr_clock *clk;
	struct jr_appended o[10];
	uint64_t st = 11;
	uint8_t buf[3000];
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 10; i++) {
		tu_fill_random(&st, buf, sizeof(buf));
		struct jr_append a = { JR_WRITE, 4096u * (uint64_t)i, sizeof(buf), buf };
		CU_ASSERT_FATAL(jr_writer_append(w, &a, NULL, &o[i]) == 0);
	}
	CU_ASSERT_FATAL(jr_writer_close(w) == 0);
	seg_path(dir, o[0].loc.segment, path, sizeof(path));
	size_t len;
	uint8_t *orig = slurp(path, &len);

	struct jr_writer_opts opt;
	struct jr_recovery rep;
	jr_writer_opts_default(&opt);
	opt.disk_id = 7;
	opt.backend = JR_BACKEND_SYNC;
	/* Damage in record 4's payload, inside the trusted prefix: the open
	 * does not read it (a full check would refuse the journal), a reader
	 * of the record does. */
	flip_bit(path, o[4].loc.offset + JR_HDR_SIZE + 100, 3);
	CU_ASSERT_EQUAL(jr_writer_open(&w, dir, &opt, clk, &rep), RW_ECORRUPT);
	opt.durable_seq = o[8].seq;
	CU_ASSERT_FATAL(jr_writer_open(&w, dir, &opt, clk, &rep) == 0);
	CU_ASSERT_EQUAL(rep.last_seq, o[9].seq);
	CU_ASSERT_EQUAL(rep.truncated_bytes, 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	CU_ASSERT_EQUAL(jr_reader_read_at(r, &o[4].loc, &rec, buf, sizeof(buf)),
			RW_ECORRUPT);
	jr_reader_close(r);
	/* Damage in the final record, after durable_seq: checked, and cut as
	 * a torn tail exactly at its start. */
	spit(path, orig, len);
	flip_bit(path, o[9].loc.offset + JR_HDR_SIZE + 7, 0);
	CU_ASSERT_FATAL(jr_writer_open(&w, dir, &opt, clk, &rep) == 0);
	CU_ASSERT_EQUAL(rep.last_seq, o[8].seq);
	CU_ASSERT_EQUAL(rep.truncated_bytes, len - o[9].loc.offset);
	CU_ASSERT_EQUAL(file_len(path), o[9].loc.offset);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	free(orig);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_bitflips(void)
{
	char *tmp = tu_tmpdir("jr-flip");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_cctx *cc;
	struct model m = { 0 };
	uint64_t st = 4;
	int err;

	jr_clock_new(&clk, 1, 0);
	jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 6000, clk,
					  NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 60; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, i % 2 ? cc : NULL, &m, 1500), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	/* Reopen with big segments so the last one holds many records. */
	w = open_writer(dir, JR_BACKEND_SYNC, 1 << 20, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 12; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, i % 2 ? cc : NULL, &m, 1500), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	struct jr_seginfo *segs = NULL;
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT_FATAL(ns >= 4);
	uint64_t last_first = segs[ns - 1].first_seq;
	struct region *rg = calloc(m.n + (size_t)ns, sizeof(*rg));
	size_t nr = 0;
	uint64_t total = 0;
	for (size_t i = 0; i + 1 < m.n; i++) {
		rg[nr] = (struct region){ m.v[i].loc.segment, m.v[i].loc.offset,
					  64 + m.v[i].stored,
					  m.v[i].loc.segment == last_first };
		total += rg[nr++].len;
	}
	CU_ASSERT_FATAL(m.v[m.n - 1].loc.segment == last_first);
	for (int i = 0; i + 1 < ns; i++) {   /* the seal records */
		rg[nr] = (struct region){ segs[i].first_seq, segs[i].bytes - 64,
					  64, false };
		total += rg[nr++].len;
	}
	/* Keep every file's bytes to restore after each flip. */
	uint8_t **orig = calloc((size_t)ns, sizeof(*orig));
	size_t *olen = calloc((size_t)ns, sizeof(*olen));
	char path[1024];
	for (int i = 0; i < ns; i++) {
		seg_path(dir, segs[i].first_seq, path, sizeof(path));
		orig[i] = slurp(path, &olen[i]);
	}
	size_t undetected = 0, silent_wrong = 0, bad_msg = 0, open_missed = 0;
	size_t in_last = 0;
	for (int f = 0; f < 1000; f++) {
		uint64_t pick = tu_rand(&st) % total;
		size_t ri = 0;
		while (pick >= rg[ri].len)
			pick -= rg[ri++].len;
		int bit = (int)(tu_rand(&st) % 8);
		int si = 0;
		while (segs[si].first_seq != rg[ri].seg)
			si++;
		seg_path(dir, rg[ri].seg, path, sizeof(path));
		char name[32];
		jr_segment_name(rg[ri].seg, name);
		flip_bit(path, rg[ri].off + pick, bit);

		size_t count, mism;
		err = read_all(dir, 0, &m, &count, &mism);
		if (mism)
			silent_wrong++;
		if (err != RW_ECORRUPT)
			undetected++;
		else if (!strstr(rw_err_msg(), name) || !strstr(rw_err_msg(), "seq"))
			bad_msg++;
		if (rg[ri].last_seg) {
			in_last++;
			struct jr_writer *w2 = open_writer(dir, JR_BACKEND_SYNC, 6000,
							   clk, NULL, &err);
			if (err != RW_ECORRUPT || !strstr(rw_err_msg(), name) ||
			    !strstr(rw_err_msg(), "seq"))
				open_missed++;
			jr_writer_close(w2);
		}
		spit(path, orig[si], olen[si]);
	}
	printf("[%zu of 1000 flips in the last segment] ", in_last);
	CU_ASSERT(in_last > 20);
	CU_ASSERT_EQUAL(silent_wrong, 0);
	CU_ASSERT_EQUAL(undetected, 0);
	CU_ASSERT_EQUAL(bad_msg, 0);
	CU_ASSERT_EQUAL(open_missed, 0);

	/* A flip in the final record is a torn tail: truncated exactly to
	 * the previous record. */
	const struct mrec *fin = &m.v[m.n - 1];
	seg_path(dir, last_first, path, sizeof(path));
	size_t bad_final = 0;
	for (int f = 0; f < 40; f++) {
		uint64_t off = fin->loc.offset + tu_rand(&st) % (64 + fin->stored);
		flip_bit(path, off, (int)(tu_rand(&st) % 8));
		struct jr_recovery rep;
		size_t count, mism;
		err = read_all(dir, 0, &m, &count, &mism);
		if (err != 0 || mism || count != m.n - 1)
			bad_final++;
		struct jr_writer *w2 = open_writer(dir, JR_BACKEND_SYNC, 6000, clk,
						   &rep, &err);
		if (!w2 || rep.last_seq != m.v[m.n - 2].seq ||
		    rep.truncated_bytes != 64 + fin->stored ||
		    rep.torn_segment != last_first ||
		    file_len(path) != fin->loc.offset)
			bad_final++;
		jr_writer_close(w2);
		spit(path, orig[ns - 1], olen[ns - 1]);
	}
	CU_ASSERT_EQUAL(bad_final, 0);

	for (int i = 0; i < ns; i++)
		free(orig[i]);
	free(orig);
	free(olen);
	free(rg);
	free(segs);
	jr_cctx_free(cc);
	jr_clock_free(clk);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* ----------------------------------------------------- 5. fault loop */

struct scen {
	int first_err;
	size_t sticky_bad;
};

/* Small segments, flushes every 4 records, rollovers; stops at the first
 * error after checking that it is sticky. */
static void run_scenario(const char *dir, enum jr_backend b, struct model *m,
			 uint64_t seed, struct scen *sc)
{
	struct jr_clock *clk;
	struct jr_cctx *cc;
	uint64_t st = seed;
	int err;

	memset(sc, 0, sizeof(*sc));
	jr_clock_new(&clk, 1, 0);
	jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
	struct jr_writer *w = open_writer(dir, b, 2048, clk, NULL, &err);
	if (!w) {
		sc->first_err = err;
		goto out;
	}
	for (int i = 0; i < 30 && !err; i++) {
		err = append_random(&st, w, i % 2 ? cc : NULL, m, 700);
		if (!err && i % 4 == 3) {
			err = jr_writer_flush(w);
			if (!err)
				model_mark_flushed(m);
		}
	}
	if (!err)
		err = jr_writer_flush(w);
	if (!err)
		model_mark_flushed(m);
	if (err) {
		sc->first_err = err;
		struct jr_append a = { JR_ZERO, 0, 512, NULL };
		if (jr_writer_append(w, &a, NULL, NULL) != err)
			sc->sticky_bad++;
		if (jr_writer_write_out(w) != err)
			sc->sticky_bad++;
		if (jr_writer_flush(w) != err)
			sc->sticky_bad++;
		if (jr_writer_tick(w) != err)
			sc->sticky_bad++;
		struct jr_writer_stats ws;
		jr_writer_stats(w, &ws);
		if (ws.error != err)
			sc->sticky_bad++;
	}
	err = jr_writer_close(w);
	if (err != sc->first_err)
		sc->sticky_bad++;
out:
	jr_cctx_free(cc);
	jr_clock_free(clk);
}

/* After a scenario: reopen recovers, every flushed record is there and
 * nothing read differs from what was appended. */
static size_t check_after(const char *dir, struct model *m)
{
	struct jr_clock *clk;
	size_t bad = 0, count, mism;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk,
					  NULL, &err);
	if (!w) {
		fprintf(stderr, "reopen after fault: %s (%s)\n",
			rw_strerror(err), rw_err_msg());
		bad++;
	}
	jr_writer_close(w);
	jr_clock_free(clk);
	err = read_all(dir, 0, m, &count, &mism);
	if (err || mism) {
		fprintf(stderr, "read after fault: %s (%s), %zu mismatches\n",
			rw_strerror(err), rw_err_msg(), mism);
		bad++;
	}
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].flushed && !m->v[i].seen)
			bad++;
	return bad;
}

static void fault_loop(enum jr_backend b)
{
	static const enum rw_sys_op ops[] = { RW_OP_WRITE, RW_OP_FSYNC,
					      RW_OP_OPEN, RW_OP_RENAME };
	char *tmp = tu_tmpdir("jr-fault");
	size_t runs = 0;

	for (size_t oi = 0; oi < sizeof(ops) / sizeof(ops[0]); oi++) {
		size_t bad = 0, sticky_bad = 0, no_err = 0, hits = 0;
		for (uint64_t n = 1; n < 1000; n++) {
			char *dir = NULL;
			struct model m = { 0 };
			struct scen sc;
			if (asprintf(&dir, "%s/j%zu-%llu", tmp, oi,
				     (unsigned long long)n) < 0)
				abort();
			rw_fault_reset();
			rw_fault_arm(ops[oi], n, -EIO, false);
			run_scenario(dir, b, &m, 77 + n, &sc);
			bool hit = rw_fault_count(ops[oi]) >= n;
			rw_fault_reset();
			runs++;
			if (hit) {
				hits++;
				if (!sc.first_err)
					no_err++;
			}
			sticky_bad += sc.sticky_bad;
			bad += check_after(dir, &m);
			tu_rmrf(dir);
			free(dir);
			model_free(&m);
			if (!hit)
				break;
		}
		printf("[%s: %zu faults] ", rw_sys_op_name(ops[oi]), hits);
		if (bad || sticky_bad || no_err)
			fprintf(stderr, "fault op %s: %zu lost/wrong, %zu not sticky, "
				"%zu hits without error\n", rw_sys_op_name(ops[oi]),
				bad, sticky_bad, no_err);
		CU_ASSERT(hits >= 3);
		CU_ASSERT_EQUAL(bad, 0);
		CU_ASSERT_EQUAL(sticky_bad, 0);
		CU_ASSERT_EQUAL(no_err, 0);
	}
	/* Short writes are completed, never an error. */
	size_t short_bad = 0, short_hits = 0;
	for (uint64_t n = 1; n < 1000; n++) {
		char *dir = NULL;
		struct model m = { 0 };
		struct scen sc;
		if (asprintf(&dir, "%s/s%llu", tmp, (unsigned long long)n) < 0)
			abort();
		rw_fault_reset();
		rw_fault_arm_short(RW_OP_WRITE, n, 1 + n % 13);
		run_scenario(dir, b, &m, 500 + n, &sc);
		bool hit = rw_fault_count(RW_OP_WRITE) >= n;
		rw_fault_reset();
		short_hits += hit;
		if (sc.first_err || sc.sticky_bad)
			short_bad++;
		short_bad += check_after(dir, &m);
		for (size_t i = 0; i < m.n; i++)
			if (!m.v[i].seen)
				short_bad++;
		tu_rmrf(dir);
		free(dir);
		model_free(&m);
		if (!hit)
			break;
	}
	printf("[%zu short writes] ", short_hits);
	CU_ASSERT(short_hits >= 3);
	CU_ASSERT_EQUAL(short_bad, 0);
	tu_rmrf(tmp);
	free(tmp);
	(void)runs;
}

static void test_faults_sync(void)
{
	fault_loop(JR_BACKEND_SYNC);
}

static void test_faults_uring(void)
{
	fault_loop(uring_or_sync());
}

/* The same with compression workers: a fault hit while a worker places
 * records or writes out a batch is as sticky as one hit by a flush. */
static void test_faults_pool(void)
{
	g_pool = 2;
	fault_loop(JR_BACKEND_SYNC);
	fault_loop(uring_or_sync());
	g_pool = 0;
}

/* ------------------------------------------------ 6. power loss */

/*
 * The history of a power-loss trial up to the crash: n1 random records
 * (compressed with cc unless NULL) with flushes at random, a flush, then
 * n2 records written out but never synced.  The crash is the first sync
 * of the close, which fails.  m marks what was flushed.  Returns the
 * writer's durable_seq just before the crash (a rollover may have synced
 * beyond the last flush).
 */
static uint64_t crash_after_history(uint64_t *st, const char *dir,
				    enum jr_backend b, uint64_t seg_bytes,
				    struct jr_clock *clk, struct jr_cctx *cc,
				    struct model *m, int n1, int n2,
				    uint32_t maxlen)
{
	struct jr_writer_stats ws;
	int err;
	struct jr_writer *w = open_writer(dir, b, seg_bytes, clk, NULL, &err);

	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < n1; i++) {
		CU_ASSERT_EQUAL(append_random(st, w, cc, m, maxlen), 0);
		if (tu_rand(st) % 5 == 0) {
			CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
			model_mark_flushed(m);
		}
	}
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	model_mark_flushed(m);
	for (int i = 0; i < n2; i++)
		CU_ASSERT_EQUAL(append_random(st, w, cc, m, maxlen), 0);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	jr_writer_stats(w, &ws);
	rw_fault_arm(RW_OP_FSYNC, 1, -EIO, true);
	CU_ASSERT_NOT_EQUAL(jr_writer_close(w), 0);
	rw_fault_reset();
	return ws.durable_seq;
}

/*
 * After the loss was simulated on the files: recovery opens dir, the
 * journal takes an append and closes, and every flushed record of m
 * reads back intact.  Returns the failures (each printed, naming trial t
 * of test `what`); adds the lost unflushed records to *lost and the
 * segments recovery set aside to *aside.
 */
static size_t recover_and_check(uint64_t *st, const char *dir,
				enum jr_backend b, uint64_t seg_bytes,
				struct jr_clock *clk, struct model *m,
				const char *what, int t, size_t *lost,
				size_t *aside)
{
	struct jr_recovery rep = { 0 };
	size_t bad = 0, count, mism;
	int err;
	struct jr_writer *w = open_writer(dir, b, seg_bytes, clk, &rep, &err);

	if (!w) {
		fprintf(stderr, "%s trial %d: %s (%s)\n", what, t,
			rw_strerror(err), rw_err_msg());
		bad++;
	}
	*aside += rep.set_aside;
	if (w && append_random(st, w, NULL, m, 500))
		bad++;
	if (w && jr_writer_close(w))
		bad++;
	err = read_all(dir, 0, m, &count, &mism);
	if (err || mism) {
		fprintf(stderr, "%s trial %d: read %s (%s), %zu mismatches\n",
			what, t, rw_strerror(err), rw_err_msg(), mism);
		bad++;
	}
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].flushed && !m->v[i].seen)
			bad++;
		if (!m->v[i].flushed && !m->v[i].seen)
			(*lost)++;
	}
	return bad;
}

static void test_power_loss(void)
{
	char *tmp = tu_tmpdir("jr-power");
	uint64_t st = 6;
	size_t bad = 0, trials = 0, lost_unflushed = 0, aside = 0;

	for (int t = 0; t < 120; t++) {
		char *dir = NULL;
		char path[1024];
		struct model m = { 0 };
		struct jr_clock *clk;
		struct jr_cctx *cc;

		if (asprintf(&dir, "%s/j%d", tmp, t) < 0)
			abort();
		jr_clock_new(&clk, 1, 0);
		jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
		enum jr_backend b = t % 2 ? uring_or_sync() : JR_BACKEND_SYNC;
		int n1 = 3 + (int)(tu_rand(&st) % 20);
		int n2 = 1 + (int)(tu_rand(&st) % 6);
		uint64_t durable = crash_after_history(&st, dir, b, 8192, clk, cc,
						       &m, n1, n2, 1200);
		jr_cctx_free(cc);
		for (size_t i = 0; i < m.n; i++)
			if (m.v[i].seq <= durable)
				m.v[i].flushed = true;
		/* The durable boundary inside the last segment. */
		const struct mrec *lastrec = &m.v[m.n - 1];
		seg_path(dir, lastrec->loc.segment, path, sizeof(path));
		uint64_t bnd = 64;
		for (size_t i = 0; i < m.n; i++)
			if (m.v[i].loc.segment == lastrec->loc.segment &&
			    m.v[i].flushed)
				bnd = m.v[i].loc.offset + 64 + m.v[i].stored;
		uint64_t size = file_len(path);
		CU_ASSERT(size >= bnd);
		uint64_t k = size > bnd ? tu_rand(&st) % (size - bnd + 1) : 0;
		int mode = (int)(tu_rand(&st) % 4);
		int fd = open(path, O_RDWR);
		CU_ASSERT_FATAL(fd >= 0);
		if (mode == 0) {            /* a prefix of the unsynced bytes */
			CU_ASSERT_EQUAL(ftruncate(fd, (off_t)(bnd + k)), 0);
		} else if (mode == 3) {     /* all of them lost */
			CU_ASSERT_EQUAL(ftruncate(fd, (off_t)bnd), 0);
		} else {                    /* garbage or zeroes from a point */
			size_t gl = (size_t)(size - bnd - k);
			uint8_t *g = calloc(1, gl + 1);
			if (mode == 1)
				tu_fill_random(&st, g, gl);
			CU_ASSERT_EQUAL(pwrite(fd, g, gl, (off_t)(bnd + k)),
					(ssize_t)gl);
			free(g);
		}
		close(fd);

		bad += recover_and_check(&st, dir, b, 8192, clk, &m,
					 "power loss", t, &lost_unflushed, &aside);
		trials++;
		jr_clock_free(clk);
		model_free(&m);
		tu_rmrf(dir);
		free(dir);
	}
	CU_ASSERT_EQUAL(trials, 120);
	CU_ASSERT(lost_unflushed > 0);
	CU_ASSERT_EQUAL(bad, 0);
	tu_rmrf(tmp);
	free(tmp);
}

/* ------------------------------------------- 7. clock stepped back */

static uint64_t fake_ns;
static unsigned fake_calls;
static uint64_t jumping_clock(void)
{
	/* Advances 1 µs per call, and jumps back an hour on call 20. */
	if (++fake_calls == 20)
		fake_ns -= 3600ull * 1000000000ull;
	fake_ns += 1000;
	return fake_ns;
}

static void test_clock_backwards(void)
{
	char *tmp = tu_tmpdir("jr-clock");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct model m = { 0 };
	uint64_t st = 7;
	int err;

	fake_ns = 1763806503000000000ull;
	fake_calls = 0;
	rw_clock_set_source(jumping_clock);
	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 60; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 300), 0);
	CU_ASSERT(fake_calls > 20);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	/* A fresh clock (as after a restart) learns the last ts at open. */
	jr_clock_free(clk);
	jr_clock_new(&clk, 1, 0);
	fake_ns -= 7200ull * 1000000000ull;
	w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 300), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	rw_clock_set_source(NULL);
	size_t nonmono = 0;
	for (size_t i = 1; i < m.n; i++)
		if (m.v[i].ts <= m.v[i - 1].ts || m.v[i].seq != m.v[i - 1].seq + 1)
			nonmono++;
	CU_ASSERT_EQUAL(nonmono, 0);
	size_t count, mism;
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(count, 70);
	CU_ASSERT_EQUAL(mism, 0);
	/* The clock alone: take after observe never goes back. */
	uint64_t s, ts;
	jr_clock_observe(clk, 1000, UINT64_MAX / 2);
	jr_clock_take(clk, &s, &ts);
	CU_ASSERT_EQUAL(s, 1001);
	CU_ASSERT_EQUAL(ts, UINT64_MAX / 2 + 1);
	CU_ASSERT_EQUAL(jr_clock_peek(clk), 1002);
	jr_clock_observe(clk, 5, 5);
	CU_ASSERT_EQUAL(jr_clock_peek(clk), 1002);
	jr_clock_free(clk);
	jr_clock_free(NULL);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* -------------------------------------------------- 8. group commit */

struct gc_arg {
	struct jr_writer *w;
	int id;
	int n;
	uint64_t seqs[200];
	int errs;
};

static void *gc_thread(void *p)
{
	struct gc_arg *a = p;
	uint8_t buf[600];

	memset(buf, a->id, sizeof(buf));
	for (int i = 0; i < a->n; i++) {
		struct jr_append ap = { JR_WRITE, (uint64_t)a->id << 20,
					sizeof(buf), buf };
		struct jr_appended o;
		if (jr_writer_append(a->w, &ap, NULL, &o))
			a->errs++;
		a->seqs[i] = o.seq;
		if (jr_writer_flush(a->w))
			a->errs++;
	}
	return NULL;
}

static void group_commit(enum jr_backend b)
{
	char *tmp = tu_tmpdir("jr-gc");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct gc_arg args[6];
	pthread_t th[6];
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, b, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	/* A slow disk: every sync takes 2 ms, so flushes pile up. */
	rw_fault_reset();
	rw_fault_delay(RW_OP_FSYNC, 2);
	for (int i = 0; i < 6; i++) {
		args[i] = (struct gc_arg){ .w = w, .id = i + 1, .n = 100 };
		pthread_create(&th[i], NULL, gc_thread, &args[i]);
	}
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	uint64_t syncs = rw_fault_count(RW_OP_FSYNC);
	rw_fault_reset();
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	printf("[%llu fdatasyncs for 600 flushes] ", (unsigned long long)syncs);
	CU_ASSERT(syncs > 0);
	CU_ASSERT(syncs < 600);
	CU_ASSERT(ws.syncs <= syncs);
	CU_ASSERT_EQUAL(ws.records, 600);
	CU_ASSERT_EQUAL(ws.durable_seq, ws.last_seq);
	for (int i = 0; i < 6; i++) {
		CU_ASSERT_EQUAL(args[i].errs, 0);
		for (int k = 1; k < args[i].n; k++)
			CU_ASSERT(args[i].seqs[k] > args[i].seqs[k - 1]);
	}
	/* All 600 present, ordered, each with its thread's bytes. */
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	const void *p;
	size_t n = 0, wrong = 0;
	uint64_t last = 0;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	while ((err = jr_reader_next(r, &rec, NULL, &p)) == 1) {
		const uint8_t *d = p;
		uint8_t id = (uint8_t)(rec.offset >> 20);
		if (rec.seq <= last || rec.length != 600 || d[0] != id ||
		    d[599] != id)
			wrong++;
		last = rec.seq;
		n++;
	}
	CU_ASSERT_EQUAL(err, 0);
	CU_ASSERT_EQUAL(n, 600);
	CU_ASSERT_EQUAL(wrong, 0);
	jr_reader_close(r);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_group_commit_sync(void)
{
	group_commit(JR_BACKEND_SYNC);
}

static void test_group_commit_uring(void)
{
	group_commit(uring_or_sync());
}

/* ------------------------------------------------- 9. age sealing */

static uint64_t age_now;
static uint64_t age_clock(void)
{
	return age_now;
}

/* FLUSH markers: appended, read back in order, malformed ones refused. */
static void test_flush_records(void)
{
	char *tmp = tu_tmpdir("jr-flush");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_writer_opts o;
	struct jr_writer *w = NULL;
	struct jr_reader *r = NULL;
	static const uint8_t data[512] = { 1, 2, 3 };
	struct jr_append wr = { JR_WRITE, 4096, sizeof(data), data };
	struct jr_append fl = { JR_FLUSH, 0, 0, NULL };
	struct jr_append bad1 = { JR_FLUSH, 0, 512, NULL };
	struct jr_append bad2 = { JR_FLUSH, 4096, 0, NULL };
	struct jr_append bad3 = { JR_WRITE, 0, 0, data };

	CU_ASSERT_FATAL(jr_clock_new(&clk, 1, 0) == 0);
	jr_writer_opts_default(&o);
	CU_ASSERT_FATAL(jr_writer_open(&w, dir, &o, clk, NULL) == 0);
	CU_ASSERT_EQUAL(jr_writer_append(w, &wr, NULL, NULL), 0);
	CU_ASSERT_EQUAL(jr_writer_append(w, &fl, NULL, NULL), 0);
	CU_ASSERT_EQUAL(jr_writer_append(w, &bad1, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(jr_writer_append(w, &bad2, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(jr_writer_append(w, &bad3, NULL, NULL), -EINVAL);
	CU_ASSERT_EQUAL(jr_writer_append(w, &wr, NULL, NULL), 0);
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	static const uint8_t want[] = { JR_WRITE, JR_FLUSH, JR_WRITE };
	struct jr_rec rec;
	struct jr_loc loc;
	const void *p;
	int n = 0;
	while (jr_reader_next(r, &rec, &loc, &p) == 1) {
		CU_ASSERT(n < 3);
		if (n < 3)
			CU_ASSERT_EQUAL(rec.type, want[n]);
		CU_ASSERT_EQUAL(rec.seq, (uint64_t)n + 1);
		if (rec.type == JR_FLUSH) {
			CU_ASSERT_PTR_NULL(p);
			CU_ASSERT_EQUAL(rec.length, 0);
			CU_ASSERT_STRING_EQUAL(jr_type_name(rec.type), "flush");
		}
		n++;
	}
	CU_ASSERT_EQUAL(n, 3);
	jr_reader_close(r);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_age_sealing(void)
{
	char *tmp = tu_tmpdir("jr-age");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_writer_opts o;
	struct jr_writer *w = NULL;
	struct jr_seginfo *segs = NULL;
	struct jr_append a = { JR_ZERO, 0, 4096, NULL };
	const uint64_t sec = 1000000000ull;

	age_now = 1763806503ull * sec;
	rw_clock_set_source(age_clock);
	jr_clock_new(&clk, 1, 0);
	jr_writer_opts_default(&o);
	CU_ASSERT_EQUAL(o.segment_bytes, 64ull << 20);
	CU_ASSERT_EQUAL(o.segment_age_ns, 600 * sec);
	CU_ASSERT_EQUAL(o.batch_bytes, 1u << 20);
	o.segment_age_ns = 10 * sec;
	CU_ASSERT_FATAL(jr_writer_open(&w, dir, &o, clk, NULL) == 0);
	CU_ASSERT_EQUAL(jr_writer_tick(w), 0);   /* empty: nothing to seal */
	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), 0);
	free(segs);
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.uring, uring_available()); /* AUTO picks io_uring */
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, 0);
	uint64_t t_first = age_now;
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, NULL), 0);
		age_now += sec / 10;
	}
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, t_first);
	CU_ASSERT_EQUAL(ws.durable_seq, 0);
	CU_ASSERT_EQUAL(ws.written_seq, 0);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.written_seq, 3);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, t_first);
	age_now += 9 * sec - 3 * (sec / 10);
	CU_ASSERT_EQUAL(jr_writer_tick(w), 0);
	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), 1);
	uint64_t size_before = segs[0].bytes;
	free(segs);
	age_now += 2 * sec;
	CU_ASSERT_EQUAL(jr_writer_tick(w), 0);   /* 11 s old: sealed */
	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), 1);
	CU_ASSERT_EQUAL(segs[0].bytes, 64 + 3 * 64 + 64);
	CU_ASSERT(segs[0].bytes > size_before);
	free(segs);
	/* Sealed lazily: durable only once synced. */
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, 0);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, t_first);
	CU_ASSERT_EQUAL(jr_writer_sync_sealed(w, 2, 30 * sec), 0); /* not yet */
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, 0);
	CU_ASSERT_EQUAL(jr_writer_sync_sealed(w, 1, 0), 0);
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, 3);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, 0);
	/* The next append opens segment 4. */
	struct jr_appended out;
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, &out), 0);
	CU_ASSERT_EQUAL(out.seq, 4);
	CU_ASSERT_EQUAL(out.loc.segment, 4);
	CU_ASSERT_EQUAL(out.loc.offset, 64);
	/* Sealing on append when the segment is too old. */
	age_now += 20 * sec;
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, &out), 0);
	CU_ASSERT_EQUAL(out.loc.segment, 5);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), 3);
	free(segs);
	/* A reopened writer sees segments 1 and 4 sealed. */
	struct jr_recovery rep;
	CU_ASSERT_EQUAL(jr_writer_open(&w, dir, &o, clk, &rep), 0);
	CU_ASSERT_EQUAL(rep.segments, 3);
	CU_ASSERT_EQUAL(rep.last_seq, 5);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	rw_clock_set_source(NULL);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* ----------------------------------------- directory-level checks */

static void test_segments_and_tmp_files(void)
{
	char *tmp = tu_tmpdir("jr-dir");
	char *dir = jdir(tmp);
	char path[1024];
	struct jr_clock *clk;
	struct jr_seginfo *segs = NULL;
	struct model m = { 0 };
	uint64_t st = 10;
	int err;

	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), dir));
	struct jr_reader *r = NULL;
	CU_ASSERT_EQUAL(jr_reader_open(&r, dir, 0), -ENOENT);
	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 3000, clk, NULL,
					  &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 30; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 900), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	/* Leftovers and strangers. */
	snprintf(path, sizeof(path), "%s/00000000000000000999.tmp", dir);
	spit(path, (const uint8_t *)"junk", 4);
	snprintf(path, sizeof(path), "%s/README", dir);
	spit(path, (const uint8_t *)"hi", 2);
	snprintf(path, sizeof(path), "%s/0000000000000000000x", dir);
	spit(path, (const uint8_t *)"hi", 2);
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT(ns >= 3);
	uint64_t sum = 0;
	for (int i = 0; i < ns; i++) {
		seg_path(dir, segs[i].first_seq, path, sizeof(path));
		CU_ASSERT_EQUAL(segs[i].bytes, file_len(path));
		sum += segs[i].bytes;
		if (i)
			CU_ASSERT(segs[i].first_seq > segs[i - 1].first_seq);
	}
	CU_ASSERT(sum > 30 * 64);
	struct jr_recovery rep;
	w = open_writer(dir, JR_BACKEND_SYNC, 3000, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.segments, (uint64_t)ns);
	jr_writer_close(w);
	snprintf(path, sizeof(path), "%s/00000000000000000999.tmp", dir);
	CU_ASSERT_EQUAL(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/README", dir);
	CU_ASSERT_EQUAL(access(path, F_OK), 0);

	/* A middle segment without its seal: refused, naming it. */
	char name[32];
	seg_path(dir, segs[1].first_seq, path, sizeof(path));
	jr_segment_name(segs[1].first_seq, name);
	size_t len;
	uint8_t *orig = slurp(path, &len);
	spit(path, orig, len - 64);
	w = open_writer(dir, JR_BACKEND_SYNC, 3000, clk, NULL, &err);
	CU_ASSERT_PTR_NULL(w);
	CU_ASSERT_EQUAL(err, RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	size_t count, mism;
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "seq"));
	CU_ASSERT_EQUAL(mism, 0);
	spit(path, orig, len);

	/* A segment header from the future: RW_EVERSION. */
	uint8_t hdr[64];
	memcpy(hdr, orig, 64);
	rw_put_le32(hdr + 8, 3); /* 2 is a recompressed segment */
	rw_put_le32(hdr + 60, rw_crc32c(0, hdr, 60));
	memcpy(orig, hdr, 64);
	spit(path, orig, len);
	w = open_writer(dir, JR_BACKEND_SYNC, 3000, clk, NULL, &err);
	CU_ASSERT_PTR_NULL(w);
	CU_ASSERT_EQUAL(err, RW_EVERSION);
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), RW_EVERSION);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	/* A damaged header: RW_ECORRUPT. */
	hdr[20] ^= 4;
	memcpy(orig, hdr, 64);
	rw_put_le32(orig + 8, 1);
	spit(path, orig, len);
	w = open_writer(dir, JR_BACKEND_SYNC, 3000, clk, NULL, &err);
	CU_ASSERT_EQUAL(err, RW_ECORRUPT);
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), RW_ECORRUPT);
	free(orig);

	free(segs);
	jr_clock_free(clk);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* A reader following a writer: sees records as they are written out,
 * across rollovers, and never reports the writer's tail as corrupt. */
static void test_reader_follows_writer(void)
{
	char *tmp = tu_tmpdir("jr-follow");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct model m = { 0 };
	struct jr_reader *r = NULL;
	uint64_t st = 11;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 4096, clk, NULL,
					  &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	struct jr_rec rec;
	const void *p;
	CU_ASSERT_EQUAL(jr_reader_next(r, &rec, NULL, &p), 0);
	size_t got = 0, wrong = 0;
	for (int round = 0; round < 40; round++) {
		for (int i = 0; i < 3; i++)
			CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 1000), 0);
		CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
		while ((err = jr_reader_next(r, &rec, NULL, &p)) == 1) {
			if (got >= m.n || !rec_matches(&m.v[got], &rec, p))
				wrong++;
			got++;
		}
		CU_ASSERT_EQUAL(err, 0);
		CU_ASSERT_EQUAL(got, m.n);
	}
	/* A half-written record at the tail is a clean end, then readable. */
	CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 1000), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	const struct mrec *e = &m.v[m.n - 1];
	char path[1024];
	seg_path(dir, e->loc.segment, path, sizeof(path));
	size_t len;
	uint8_t *orig = slurp(path, &len);
	spit(path, orig, len - 10);
	CU_ASSERT_EQUAL(jr_reader_next(r, &rec, NULL, &p), 0);
	spit(path, orig, len);
	CU_ASSERT_EQUAL(jr_reader_next(r, &rec, NULL, &p), 1);
	CU_ASSERT(rec_matches(e, &rec, p));
	CU_ASSERT_EQUAL(wrong, 0);
	free(orig);
	jr_reader_close(r);
	jr_clock_free(clk);
	model_free(&m);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* A reader racing a writer thread that appends, writes out and rolls
 * over: every record it returns is complete and correct, it never
 * reports the moving tail as corruption, and it ends up seeing all. */
struct race_arg {
	struct jr_writer *w;
	int n;
	int errs;
};

static void race_data(uint32_t i, uint8_t *buf, uint32_t *len)
{
	uint64_t s = i + 1;
	*len = 100 + i % 3000;
	tu_fill_random(&s, buf, *len);
	if (i % 2)
		memset(buf, (int)(i & 0xff), *len / 2);
}

static void *race_writer(void *p)
{
	struct race_arg *a = p;
	struct jr_cctx *cc;
	uint8_t buf[3100];

	jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT);
	for (int i = 0; i < a->n; i++) {
		uint32_t len;
		race_data((uint32_t)i, buf, &len);
		struct jr_append ap = { JR_WRITE, (uint64_t)i * 4096, len, buf };
		if (jr_writer_append(a->w, &ap, cc, NULL))
			a->errs++;
		if (i % 7 == 0 && jr_writer_write_out(a->w))
			a->errs++;
	}
	if (jr_writer_flush(a->w))
		a->errs++;
	jr_cctx_free(cc);
	return NULL;
}

static void test_reader_races_writer(void)
{
	char *tmp = tu_tmpdir("jr-race");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct race_arg a;
	pthread_t th;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 16384, clk, NULL,
					  &err);
	CU_ASSERT_FATAL(w != NULL);
	a = (struct race_arg){ .w = w, .n = 3000 };
	struct jr_reader *r = NULL;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	pthread_create(&th, NULL, race_writer, &a);
	uint8_t want[3100];
	size_t got = 0, wrong = 0, errors = 0, empty_polls = 0;
	uint64_t t0 = rw_mono_ns();
	while (got < (size_t)a.n && rw_mono_ns() - t0 < 60ull * 1000000000ull) {
		struct jr_rec rec;
		const void *p;
		err = jr_reader_next(r, &rec, NULL, &p);
		if (err == 0) {
			empty_polls++;
			usleep(100);
			continue;
		}
		if (err < 0) {
			fprintf(stderr, "reader: %s (%s)\n", rw_strerror(err),
				rw_err_msg());
			errors++;
			break;
		}
		uint32_t i = (uint32_t)(rec.offset / 4096), len;
		race_data(i, want, &len);
		if (i != got || rec.length != len || memcmp(p, want, len))
			wrong++;
		got++;
	}
	pthread_join(th, NULL);
	CU_ASSERT_EQUAL(a.errs, 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_EQUAL(errors, 0);
	CU_ASSERT_EQUAL(wrong, 0);
	CU_ASSERT_EQUAL(got, (size_t)a.n);
	CU_ASSERT(empty_polls > 0);
	struct jr_seginfo *segs = NULL;
	CU_ASSERT(jr_segments_list(dir, &segs) > 20);
	free(segs);
	jr_reader_close(r);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* ------------------------------------------- 10. compression workers */

/* zstd levels: fast (negative) levels are accepted, 0 and out of range
 * are not, and a record compressed at a fast level reads back. */
static void test_zstd_levels(void)
{
	static const int ok[] = { JR_ZSTD_LEVEL_MIN, -3, -1, 1, 3,
				  JR_ZSTD_LEVEL_MAX };
	static const int bad[] = { JR_ZSTD_LEVEL_MIN - 1, 0,
				   JR_ZSTD_LEVEL_MAX + 1 };
	struct jr_cctx *cc = NULL;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		CU_ASSERT_EQUAL(jr_cctx_new(&cc, ok[i]), 0);
		CU_ASSERT_PTR_NOT_NULL(cc);
		jr_cctx_free(cc);
		cc = NULL;
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_EQUAL(jr_cctx_new(&cc, bad[i]), -EINVAL);
		CU_ASSERT_PTR_NULL(cc);
	}

	char *tmp = tu_tmpdir("jr-lvl");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	uint8_t data[8192];
	struct jr_appended out;
	int err;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)("rewind journal "[i % 15] + (i % 61 == 0));
	jr_clock_new(&clk, 1, 0);
	CU_ASSERT_FATAL(jr_cctx_new(&cc, -1) == 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL,
					  &err);
	CU_ASSERT_FATAL(w != NULL);
	struct jr_append a = { JR_WRITE, 4096, sizeof(data), data };
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, cc, &out), 0);
	CU_ASSERT_EQUAL(out.flags, JR_F_ZSTD);
	CU_ASSERT(out.stored_len < sizeof(data) / 4);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	const void *p = NULL;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	CU_ASSERT_EQUAL(jr_reader_next(r, &rec, NULL, &p), 1);
	CU_ASSERT_EQUAL(rec.flags, JR_F_ZSTD);
	CU_ASSERT(p && memcmp(p, data, sizeof(data)) == 0);
	jr_reader_close(r);
	jr_cctx_free(cc);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/*
 * The early abort for incompressible payloads (record.c) skips random
 * data but not payloads that only look random in part, or that repeat a
 * random block.
 */
static void test_incompressible_skip(void)
{
	char *tmp = tu_tmpdir("jr-skip");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_cctx *cc;
	const uint32_t len = 64 * 1024;
	uint8_t *d = malloc(len);
	uint64_t st = 99;
	int err;

	jr_clock_new(&clk, 1, 0);
	CU_ASSERT_FATAL(jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT) == 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL,
					  &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int kind = 0; kind < 5; kind++) {
		switch (kind) {
		case 0: /* random: stored raw */
			tu_fill_random(&st, d, len);
			break;
		case 1: /* random, then zeroes */
			tu_fill_random(&st, d, len / 2);
			memset(d + len / 2, 0, len / 2);
			break;
		case 2: /* one random 4 KiB block, repeated */
			tu_fill_random(&st, d, 4096);
			for (uint32_t o = 4096; o < len; o += 4096)
				memcpy(d + o, d, 4096);
			break;
		case 3: /* text-like: words picked at random */
			for (uint32_t i = 0; i < len;) {
				static const char *const words[] = {
					"rewind ", "journal ", "block ", "seq " };
				const char *wd = words[tu_rand(&st) % 4];
				while (*wd && i < len)
					d[i++] = (uint8_t)*wd++;
			}
			break;
		default: /* random bytes over a 16-letter alphabet */
			tu_fill_random(&st, d, len);
			for (uint32_t i = 0; i < len; i++)
				d[i] &= 0x0f;
			break;
		}
		struct jr_append a = { JR_WRITE, (uint64_t)kind * len, len, d };
		struct jr_appended out;
		CU_ASSERT_EQUAL(jr_writer_append(w, &a, cc, &out), 0);
		CU_ASSERT_EQUAL(out.flags, kind == 0 ? 0 : JR_F_ZSTD);
		if (kind == 0)
			CU_ASSERT_EQUAL(out.stored_len, len);
	}
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	jr_cctx_free(cc);
	jr_clock_free(clk);
	free(d);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

struct pool_arg {
	struct jr_writer *w;
	const char *dir;
	int id;
	int n;
	struct model m;     /* this thread's records */
	uint64_t st;
	int errs;
	int not_durable;    /* flush returned before an earlier append was durable */
	int not_readable;   /* ... or before it could be read back */
};

static void *pool_thread(void *p)
{
	struct pool_arg *a = p;
	struct jr_cctx *cc = NULL;

	/* Threads compress at different levels, one not at all. */
	if (a->id % 3 != 2 &&
	    jr_cctx_new(&cc, a->id % 3 == 0 ? JR_ZSTD_LEVEL_DEFAULT : -1))
		a->errs++;
	for (int i = 0; i < a->n; i++) {
		if (append_random(&a->st, a->w, i % 5 ? cc : NULL, &a->m,
				  i % 40 == 0 ? 200000 : 20000)) {
			a->errs++;
			break;
		}
		struct mrec *last = &a->m.v[a->m.n - 1];
		/* Tag the offset with the thread so the merge can find it. */
		if (tu_rand(&a->st) % 8 == 0) {
			if (jr_writer_flush(a->w)) {
				a->errs++;
				break;
			}
			struct jr_writer_stats ws;
			jr_writer_stats(a->w, &ws);
			if (ws.durable_seq < last->seq)
				a->not_durable++;
			/* Every few flushes: the record is in the file. */
			if (i % 16 == 0) {
				struct jr_reader *r = NULL;
				struct jr_rec rec;
				if (jr_reader_open(&r, a->dir, JR_READ_HEADERS) ||
				    jr_reader_seek(r, last->seq) ||
				    jr_reader_next(r, &rec, NULL, NULL) != 1 ||
				    rec.seq != last->seq)
					a->not_readable++;
				jr_reader_close(r);
			}
		}
	}
	jr_cctx_free(cc);
	return NULL;
}

/*
 * Several appenders, two compression workers, records of very different
 * sizes (so workers finish out of order): the file holds every record in
 * seq order with an unbroken prev_seq chain, and every flush covered all
 * that its thread appended before it.
 */
static void pool_order(enum jr_backend b, bool raw_behind)
{
	char *tmp = tu_tmpdir("jr-pool");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct pool_arg args[4];
	pthread_t th[4];
	struct model all = { 0 };
	int err;

	jr_clock_new(&clk, 1, 0);
	g_pool = 2;
	g_raw_behind = raw_behind;
	struct jr_writer *w = open_writer(dir, b, 512 * 1024, clk, NULL, &err);
	g_pool = 0;
	g_raw_behind = false;
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct pool_arg){ .w = w, .dir = dir, .id = i,
					     .n = 300, .st = 1000 + (uint64_t)i };
		pthread_create(&th[i], NULL, pool_thread, &args[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.records, 1200);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	size_t pending = 0;
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(args[i].errs, 0);
		CU_ASSERT_EQUAL(args[i].not_durable, 0);
		CU_ASSERT_EQUAL(args[i].not_readable, 0);
		for (size_t k = 0; k < args[i].m.n; k++) {
			if (all.n == all.cap) {
				all.cap = all.cap ? all.cap * 2 : 256;
				all.v = realloc(all.v, all.cap * sizeof(*all.v));
			}
			all.v[all.n++] = args[i].m.v[k];
			pending += args[i].m.v[k].pending;
		}
		free(args[i].m.v);
	}
	CU_ASSERT(pending > 300);
	/* Seqs are unique: sort the merged model by seq. */
	for (size_t i = 1; i < all.n; i++)
		for (size_t k = i; k > 0 && all.v[k - 1].seq > all.v[k].seq; k--) {
			struct mrec t = all.v[k];
			all.v[k] = all.v[k - 1];
			all.v[k - 1] = t;
		}
	for (size_t i = 1; i < all.n; i++)
		CU_ASSERT_FATAL(all.v[i].seq == all.v[i - 1].seq + 1);
	size_t count, mism, nzstd = 0;
	err = read_all(dir, 0, &all, &count, &mism);
	if (err)
		fprintf(stderr, "read back: %s (%s)\n", rw_strerror(err),
			rw_err_msg());
	CU_ASSERT_EQUAL(err, 0);
	CU_ASSERT_EQUAL(count, all.n);
	CU_ASSERT_EQUAL(mism, 0);
	for (size_t i = 0; i < all.n; i++) {
		CU_ASSERT(all.v[i].seen);
		nzstd += (all.v[i].flags & JR_F_ZSTD) != 0;
	}
	/* Flushing threads compress what they meet; or, raw_when_behind,
	 * store it raw: then every raw-behind record is one that is not
	 * compressed. */
	if (!raw_behind) {
		CU_ASSERT(nzstd > 100);
	} else {
		CU_ASSERT(nzstd + ws.raw_behind <= all.n);
	}
	model_free(&all);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/*
 * raw_when_behind, deterministically: with the workers held, a flush
 * meets every queued record and stores it raw (flagged raw, counted in
 * raw_behind, bytes intact); released, the workers compress again.
 */
static void test_pool_raw_behind(void)
{
	char *tmp = tu_tmpdir("jr-rawb");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_cctx *cc = NULL;
	struct jr_writer_stats ws;
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	const void *payload;
	uint8_t buf[16384];
	int err, nraw = 0, n = 0;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)("rewind journal "[i % 15]);
	jr_clock_new(&clk, 1, 0);
	CU_ASSERT_EQUAL_FATAL(jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT), 0);
	g_pool = 2;
	g_raw_behind = true;
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	g_pool = 0;
	g_raw_behind = false;
	CU_ASSERT_FATAL(w != NULL);
	for (int round = 0; round < 2; round++) {
		__atomic_store_n(&jr_test_hold_workers, round == 0, __ATOMIC_SEQ_CST);
		for (int i = 0; i < 20; i++) {
			struct jr_append a = { JR_WRITE, (uint64_t)i * sizeof(buf),
					       sizeof(buf), buf };
			struct jr_appended out;
			CU_ASSERT_EQUAL(jr_writer_append(w, &a, cc, &out), 0);
		}
		CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
		if (round == 0) {
			jr_writer_stats(w, &ws);
			CU_ASSERT_EQUAL(ws.raw_behind, 20);
		}
	}
	jr_writer_stats(w, &ws);
	CU_ASSERT(ws.raw_behind >= 20 && ws.raw_behind <= 40);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_EQUAL_FATAL(jr_reader_open(&r, dir, 0), 0);
	while (jr_reader_next(r, &rec, NULL, &payload) == 1) {
		if (rec.type != JR_WRITE)
			continue;
		CU_ASSERT_EQUAL(rec.length, sizeof(buf));
		CU_ASSERT(payload && memcmp(payload, buf, sizeof(buf)) == 0);
		if (n++ < 20)
			nraw += !(rec.flags & JR_F_ZSTD);
	}
	jr_reader_close(r);
	CU_ASSERT_EQUAL(n, 40);
	CU_ASSERT_EQUAL(nraw, 20);  /* held: the flush stored all of them raw */
	jr_cctx_free(cc);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_pool_order(void)
{
	pool_order(JR_BACKEND_SYNC, false);
	pool_order(uring_or_sync(), false);
	pool_order(JR_BACKEND_SYNC, true);
	pool_order(uring_or_sync(), true);
}

/*
 * A write fault hit by a worker (the appender never writes: every record
 * goes to the workers and only they write out full batches) is sticky:
 * append, write_out, flush, tick and close all return it, and reopening
 * keeps a gap-free prefix of what was appended.
 */
static void pool_worker_fault(enum jr_backend b, uint64_t nth)
{
	char *tmp = tu_tmpdir("jr-pfault");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_cctx *cc;
	struct model m = { 0 };
	uint64_t st = 4242 + nth;
	int err = 0, n = 0;

	jr_clock_new(&clk, 1, 0);
	CU_ASSERT_FATAL(jr_cctx_new(&cc, JR_ZSTD_LEVEL_DEFAULT) == 0);
	g_pool = 2;
	struct jr_writer *w = open_writer(dir, b, 0, clk, NULL, &err);
	g_pool = 0;
	CU_ASSERT_FATAL(w != NULL);
	rw_fault_reset();
	rw_fault_arm(RW_OP_WRITE, nth, -EIO, false);
	/* batch_bytes is 16 KiB: a few records fill a batch. */
	for (n = 0; n < 100000; n++) {
		struct jr_append a = { JR_WRITE, (uint64_t)n * 4096, 4096, NULL };
		struct jr_appended out;
		uint8_t *data = malloc(4096);
		fill_payload(&st, data, 4096);
		a.data = data;
		err = jr_writer_append(w, &a, cc, &out);
		if (err) {
			free(data);
			break;
		}
		CU_ASSERT(out.pending);
		if (m.n == m.cap) {
			m.cap = m.cap ? m.cap * 2 : 256;
			m.v = realloc(m.v, m.cap * sizeof(*m.v));
		}
		m.v[m.n++] = (struct mrec){ .seq = out.seq, .ts = out.ts_ns,
					    .type = JR_WRITE, .offset = a.offset,
					    .length = 4096, .data = data,
					    .pending = true };
	}
	uint64_t hits = rw_fault_count(RW_OP_WRITE);
	rw_fault_reset();
	CU_ASSERT(hits >= nth);
	CU_ASSERT_EQUAL(err, -EIO);
	struct jr_append z = { JR_ZERO, 0, 512, NULL };
	CU_ASSERT_EQUAL(jr_writer_append(w, &z, NULL, NULL), -EIO);
	CU_ASSERT_EQUAL(jr_writer_append(w, &z, cc, NULL), -EIO);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), -EIO);
	CU_ASSERT_EQUAL(jr_writer_flush(w), -EIO);
	CU_ASSERT_EQUAL(jr_writer_tick(w), -EIO);
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.error, -EIO);
	CU_ASSERT_EQUAL(jr_writer_close(w), -EIO);

	/* Reopen: what survived is a gap-free prefix, byte for byte. */
	struct jr_recovery rep;
	w = open_writer(dir, b, 0, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	size_t count, mism;
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(mism, 0);
	CU_ASSERT(count < m.n);
	for (size_t i = 0; i < m.n; i++)
		CU_ASSERT_EQUAL(m.v[i].seen, i < count);
	jr_cctx_free(cc);
	model_free(&m);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_pool_worker_fault(void)
{
	for (uint64_t nth = 1; nth <= 3; nth++) {
		pool_worker_fault(JR_BACKEND_SYNC, nth);
		pool_worker_fault(uring_or_sync(), nth);
	}
}

/* -------------------------------------------------------- main */

/* ----------------------------------------------- pre-written zero tail */

/* Appends one 512-byte write at off and flushes; returns its record. */
static struct jr_appended small_flushed(struct jr_writer *w, uint64_t off)
{
	uint8_t b[512];
	struct jr_appended o;
	memset(b, (int)(off & 0xff) | 1, sizeof(b));
	struct jr_append a = { JR_WRITE, off, sizeof(b), b };
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, &o), 0);
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	return o;
}

/*
 * Regression: small flushes make the writer write zeroes ahead of its
 * records (prezero_bytes), so a crash leaves a last segment that ends in
 * zeroes.  Recovery must take them for the clean end of the journal —
 * no torn tail reported, every record kept, the zeroes cut — while a
 * torn record in front of them is still a torn tail, and sealing leaves
 * no zeroes after the SEAL.
 */
/* ------------------------------------------------------- lazy seal */

/* The flags and predecessor of a segment's header, read from the file. */
static void seg_hdr_of(const char *dir, uint64_t first, uint32_t *flags,
		       uint64_t *pred)
{
	char path[1024];
	size_t len;
	seg_path(dir, first, path, sizeof(path));
	uint8_t *b = slurp(path, &len);
	CU_ASSERT_FATAL(b != NULL && len >= 64);
	*flags = rw_get_le32(b + 36);
	*pred = rw_get_le64(b + 40);
	free(b);
}

/*
 * A rollover does not sync: the sealed segment waits, its successor's
 * header says so and names it; a flush (or jr_writer_sync_sealed, oldest
 * first) makes them durable and clears the flags; close leaves none.
 */
static void test_lazy_seal(void)
{
	char *tmp = tu_tmpdir("jr-lazy");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_seginfo *segs = NULL;
	struct jr_writer_stats ws;
	struct model m = { 0 };
	uint64_t st = 17, pred;
	uint32_t fl;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk,
					  NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 40; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 700), 0);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT_FATAL(ns >= 4);
	seg_hdr_of(dir, segs[0].first_seq, &fl, &pred);
	CU_ASSERT_EQUAL(fl, 0);
	CU_ASSERT_EQUAL(pred, 0);
	for (int i = 1; i < ns; i++) {
		seg_hdr_of(dir, segs[i].first_seq, &fl, &pred);
		CU_ASSERT_EQUAL(fl, 1);
		CU_ASSERT_EQUAL(pred, segs[i - 1].first_seq);
	}
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, 0);
	CU_ASSERT(ws.written_seq > 0);
	CU_ASSERT_EQUAL(ws.sealed_waiting, (uint64_t)ns - 1);
	uint64_t oldest = ws.oldest_unsynced_ns;
	CU_ASSERT(oldest != 0);
	/* The oldest waiting segment alone: durable up to its seal. */
	CU_ASSERT_EQUAL(jr_writer_sync_sealed(w, 0, 0), 0);
	jr_writer_stats(w, &ws);
	CU_ASSERT(ws.durable_seq >= segs[0].first_seq);
	CU_ASSERT(ws.durable_seq < segs[1].first_seq);
	CU_ASSERT_EQUAL(ws.sealed_waiting, (uint64_t)ns - 2);
	CU_ASSERT(ws.oldest_unsynced_ns > oldest); /* the next segment's */
	seg_hdr_of(dir, segs[1].first_seq, &fl, &pred);
	CU_ASSERT_EQUAL(fl, 1); /* cleared by its own sync */
	/* A flush covers every segment. */
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.durable_seq, ws.last_seq);
	CU_ASSERT_EQUAL(ws.sealed_waiting, 0);
	CU_ASSERT_EQUAL(ws.oldest_unsynced_ns, 0);
	for (int i = 1; i < ns; i++) {
		seg_hdr_of(dir, segs[i].first_seq, &fl, &pred);
		CU_ASSERT_EQUAL(fl, 0);
		CU_ASSERT_EQUAL(pred, segs[i - 1].first_seq);
	}
	free(segs);
	/* More rollovers, then close: no flag left, nothing set aside. */
	for (int i = 0; i < 20; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 700), 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	ns = jr_segments_list(dir, &segs);
	for (int i = 1; i < ns; i++) {
		seg_hdr_of(dir, segs[i].first_seq, &fl, &pred);
		CU_ASSERT_EQUAL(fl, 0);
	}
	struct jr_recovery rep;
	w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.set_aside, 0);
	CU_ASSERT_EQUAL(rep.segments, (uint64_t)ns);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	size_t count, mism;
	CU_ASSERT_EQUAL(read_all(dir, 0, &m, &count, &mism), 0);
	CU_ASSERT_EQUAL(count, m.n);
	CU_ASSERT_EQUAL(mism, 0);
	free(segs);
	model_free(&m);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/*
 * Power loss with lazily sealed segments: everything after the last
 * flush may be lost from any segment on — the rest of the segment the
 * flush ended in, and each later segment whole (never created),
 * shortened (header included), zeroed, or cut short.  Recovery keeps
 * every flushed record, sets aside what follows a cut-short segment,
 * and the journal takes appends again.
 */
static void test_lazy_power_loss(void)
{
	char *tmp = tu_tmpdir("jr-lazy-power");
	uint64_t st = 61;
	size_t bad = 0, trials = 0, lost = 0, aside = 0;

	for (int t = 0; t < 150; t++) {
		char *dir = NULL;
		char path[1024];
		struct model m = { 0 };
		struct jr_seginfo *segs = NULL;
		struct jr_clock *clk;

		if (asprintf(&dir, "%s/j%d", tmp, t) < 0)
			abort();
		jr_clock_new(&clk, 1, 0);
		enum jr_backend b = t % 2 ? uring_or_sync() : JR_BACKEND_SYNC;
		int n1 = 3 + (int)(tu_rand(&st) % 12);
		int n2 = 4 + (int)(tu_rand(&st) % 30);
		/* Nothing after the last flush was synced (no rollover syncs). */
		(void)crash_after_history(&st, dir, b, 2048, clk, NULL, &m, n1,
					  n2, 700);
		/* The durable boundary: the end of the last flushed record. */
		const struct mrec *lf = NULL;
		for (size_t i = 0; i < m.n; i++)
			if (m.v[i].flushed)
				lf = &m.v[i];
		CU_ASSERT_FATAL(lf != NULL);
		if (!lf)
			abort();
		uint64_t bseg = lf->loc.segment;
		uint64_t bnd = lf->loc.offset + 64 + lf->stored;
		int ns = jr_segments_list(dir, &segs);
		for (int i = 0; i < ns; i++) {
			if (segs[i].first_seq < bseg)
				continue;
			seg_path(dir, segs[i].first_seq, path, sizeof(path));
			uint64_t size = file_len(path);
			uint64_t from = segs[i].first_seq == bseg ? bnd : 0;
			int mode = (int)(tu_rand(&st) % 5);
			if (mode == 0 || size <= from)
				continue;                   /* all of it made it */
			if (mode == 1 && from == 0) {       /* never created */
				CU_ASSERT_EQUAL(unlink(path), 0);
				continue;
			}
			uint64_t k = from + tu_rand(&st) % (size - from + 1);
			int fd = open(path, O_RDWR);
			CU_ASSERT_FATAL(fd >= 0);
			if (mode <= 2) {                    /* cut short */
				CU_ASSERT_EQUAL(ftruncate(fd, (off_t)k), 0);
			} else {            /* zeroes (or garbage past the header) */
				/* a sector is written whole: the header is
				 * either there or not at all */
				if (k < 64)
					k = mode == 4 ? 64 : 0;
				size_t gl = (size_t)(size - k);
				uint8_t *g = calloc(1, gl + 1);
				if (mode == 4)
					tu_fill_random(&st, g, gl);
				CU_ASSERT_EQUAL(pwrite(fd, g, gl, (off_t)k),
						(ssize_t)gl);
				free(g);
			}
			close(fd);
		}
		free(segs);

		bad += recover_and_check(&st, dir, b, 2048, clk, &m,
					 "lazy power loss", t, &lost, &aside);
		trials++;
		jr_clock_free(clk);
		model_free(&m);
		tu_rmrf(dir);
		free(dir);
	}
	CU_ASSERT_EQUAL(trials, 150);
	CU_ASSERT(lost > 0);
	CU_ASSERT(aside > 0);
	CU_ASSERT_EQUAL(bad, 0);
	tu_rmrf(tmp);
	free(tmp);
}

/*
 * DESIGN.md invariants 3 and 4 with lazily sealed segments: a failed
 * background sync (jr_writer_sync_sealed) is sticky like any other; and
 * damage in the middle of a lazily sealed segment, with valid records
 * after it, is reported naming the segment — not taken for a cut-short
 * end and set aside.
 */
static void test_lazy_sticky_and_corrupt(void)
{
	char *tmp = tu_tmpdir("jr-lazy-err");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	struct jr_seginfo *segs = NULL;
	struct model m = { 0 };
	uint64_t st = 23;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk,
					  NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 30; i++)
		CU_ASSERT_EQUAL(append_random(&st, w, NULL, &m, 700), 0);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	rw_fault_arm(RW_OP_FSYNC, 1, -EIO, true);
	CU_ASSERT_EQUAL(jr_writer_sync_sealed(w, 0, 0), -EIO);
	rw_fault_reset();
	struct jr_append a = { JR_ZERO, 0, 512, NULL };
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, NULL), -EIO);
	CU_ASSERT_EQUAL(jr_writer_flush(w), -EIO);
	CU_ASSERT_EQUAL(jr_writer_sync_sealed(w, 0, 0), -EIO);
	struct jr_writer_stats ws;
	jr_writer_stats(w, &ws);
	CU_ASSERT_EQUAL(ws.error, -EIO);
	CU_ASSERT_EQUAL(ws.durable_seq, 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), -EIO);

	/* The first segment's successor still says it may be cut short.
	 * Damage its first record: valid ones follow, so it is corruption. */
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT_FATAL(ns >= 3);
	uint32_t fl;
	uint64_t pred;
	seg_hdr_of(dir, segs[1].first_seq, &fl, &pred);
	CU_ASSERT_EQUAL(fl, 1);
	char path[1024], name[32];
	seg_path(dir, segs[0].first_seq, path, sizeof(path));
	jr_segment_name(segs[0].first_seq, name);
	size_t len;
	uint8_t *orig = slurp(path, &len);
	CU_ASSERT_FATAL(orig != NULL && len > 200);
	uint8_t *bad = malloc(len);
	memcpy(bad, orig, len);
	bad[64 + 20] ^= 0x40;
	spit(path, bad, len);
	struct jr_recovery rep;
	w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk, &rep, &err);
	CU_ASSERT_PTR_NULL(w);
	CU_ASSERT_EQUAL(err, RW_ECORRUPT);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), name));
	free(segs);
	CU_ASSERT_EQUAL(jr_segments_list(dir, &segs), ns); /* nothing moved */
	/* Undamaged, it recovers whole: nothing set aside, flags cleared. */
	spit(path, orig, len);
	w = open_writer(dir, JR_BACKEND_SYNC, 2048, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.set_aside, 0);
	CU_ASSERT_EQUAL(rep.last_seq, m.v[m.n - 1].seq);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	seg_hdr_of(dir, segs[1].first_seq, &fl, &pred);
	CU_ASSERT_EQUAL(fl, 0);
	free(orig);
	free(bad);
	free(segs);
	model_free(&m);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

static void test_prezero_tail(void)
{
	char *tmp = tu_tmpdir("jr-prezero");
	char *dir = jdir(tmp);
	char path[1024];
	struct jr_clock *clk;
	struct jr_writer_stats ws;
	struct jr_recovery rep;
	int err;

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	struct jr_appended o = { 0 };
	for (int i = 0; i < 5; i++)
		o = small_flushed(w, 4096u * (unsigned)i);
	uint64_t end = o.loc.offset + JR_HDR_SIZE + o.stored_len;
	seg_path(dir, o.loc.segment, path, sizeof(path));
	jr_writer_stats(w, &ws);
	CU_ASSERT(ws.prezero_bytes >= (2u << 20) - end);
	CU_ASSERT(file_len(path) > end + (1u << 20));
	/* A reader of the live journal stops at the zeroes, cleanly. */
	struct jr_reader *r = NULL;
	struct jr_rec rec;
	size_t n = 0;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	while ((err = jr_reader_next(r, &rec, NULL, NULL)) == 1)
		n++;
	CU_ASSERT_EQUAL(err, 0);
	CU_ASSERT_EQUAL(n, 5);
	jr_reader_close(r);

	/* The crash: the file as the running writer left it. */
	size_t len;
	uint8_t *crashed = slurp(path, &len);
	CU_ASSERT(len > end);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_EQUAL(file_len(path), end); /* close cuts the zeroes */
	spit(path, crashed, len);
	w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.last_seq, o.seq);
	CU_ASSERT_EQUAL(rep.truncated_bytes, 0);
	CU_ASSERT_EQUAL(rep.torn_segment, 0);
	CU_ASSERT_EQUAL(rep.zero_tail_bytes, len - end);
	CU_ASSERT_EQUAL(file_len(path), end);
	/* Appending continues right after the last record. */
	struct jr_appended o2 = small_flushed(w, 1u << 20);
	CU_ASSERT_EQUAL(o2.loc.offset, end);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);

	/* A torn record in front of the zeroes is still a torn tail. */
	uint64_t end2 = o2.loc.offset + JR_HDR_SIZE + o2.stored_len;
	uint8_t *full = slurp(path, &len);
	CU_ASSERT_EQUAL(len, end2);
	uint8_t *img = calloc(1, (size_t)end2 + 65536);
	memcpy(img, full, (size_t)end2);
	memcpy(img + end2, full + o2.loc.offset, 40); /* half a header */
	spit(path, img, (size_t)end2 + 65536);
	w = open_writer(dir, JR_BACKEND_SYNC, 0, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.last_seq, o2.seq);
	CU_ASSERT_EQUAL(rep.truncated_bytes, 65536);
	CU_ASSERT_EQUAL(rep.torn_segment, o2.loc.segment);
	CU_ASSERT_EQUAL(rep.zero_tail_bytes, 0);
	CU_ASSERT_EQUAL(file_len(path), end2);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	free(img);
	free(full);
	free(crashed);
	tu_rmrf(dir);

	/* Small segments, a flush after every record: every rollover seals
	 * a segment that had a pre-written tail. */
	w = open_writer(dir, JR_BACKEND_SYNC, 16384, clk, NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	for (int i = 0; i < 100; i++)
		o = small_flushed(w, 4096u * (unsigned)i);
	jr_writer_stats(w, &ws);
	CU_ASSERT(ws.prezero_bytes > 0);
	struct jr_seginfo *segs = NULL;
	int ns = jr_segments_list(dir, &segs);
	CU_ASSERT(ns > 3);
	for (int i = 0; i + 1 < ns; i++) {
		seg_path(dir, segs[i].first_seq, path, sizeof(path));
		uint8_t *b = slurp(path, &len);
		struct jr_rec sr;
		CU_ASSERT_FATAL(len >= 128);
		CU_ASSERT_EQUAL(jr_rec_decode(b + len - 64, &sr), 0);
		CU_ASSERT_EQUAL(sr.type, JR_SEAL);
		free(b);
	}
	free(segs);
	/* Crash copy of the open segment, then recovery of the whole. */
	seg_path(dir, o.loc.segment, path, sizeof(path));
	crashed = slurp(path, &len);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	spit(path, crashed, len);
	free(crashed);
	w = open_writer(dir, JR_BACKEND_SYNC, 16384, clk, &rep, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(rep.last_seq, o.seq);
	CU_ASSERT_EQUAL(rep.truncated_bytes, 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	n = 0;
	while ((err = jr_reader_next(r, &rec, NULL, NULL)) == 1)
		n++;
	CU_ASSERT_EQUAL(err, 0);
	CU_ASSERT_EQUAL(n, 100);
	jr_reader_close(r);

	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/* ------------------------------------------------- borrowed payloads */

/*
 * jr_writer_append_borrowed() writes large raw payloads from the
 * caller's memory: once write_out returns the caller may reuse it, and
 * what is in the file is what was appended — across rollovers (the seal
 * writes borrowed pieces too) and short writes that end inside a piece.
 */
static void test_borrowed_payloads(void)
{
	char *tmp = tu_tmpdir("jr-borrow");
	char *dir = jdir(tmp);
	struct jr_clock *clk;
	uint64_t st = 11;
	int err;
	enum { N = 60 };
	uint32_t lens[N];
	uint8_t seeds[N];

	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 256 * 1024, clk,
					  NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	uint8_t *buf = malloc(3 * 100000);
	CU_ASSERT_FATAL(buf != NULL);
	size_t shorts = 0;
	for (int i = 0; i < N; i += 3) {
		/* Three appends share a write out: two borrowed, one copied. */
		for (int k = 0; k < 3; k++) {
			int j = i + k;
			lens[j] = k == 2 ? 700 : JR_BORROW_MIN +
				  (uint32_t)(tu_rand(&st) % 80000);
			seeds[j] = (uint8_t)(j * 37 + 1);
			uint8_t *p = buf + (size_t)k * 100000;
			for (uint32_t b = 0; b < lens[j]; b++)
				p[b] = (uint8_t)(seeds[j] + b * 7);
			struct jr_append a = { JR_WRITE, (uint64_t)j << 20, lens[j], p };
			CU_ASSERT_EQUAL(jr_writer_append_borrowed(w, &a, NULL, NULL), 0);
		}
		if (i % 9 == 0) {
			/* The write out ends inside a borrowed payload. */
			rw_fault_arm_short(RW_OP_WRITE, 1, 64 + 5000);
			shorts++;
		}
		CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
		rw_fault_reset();
		memset(buf, 0xEE, 3 * 100000); /* no longer the writer's */
	}
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	CU_ASSERT(shorts > 0);

	struct jr_reader *r = NULL;
	struct jr_rec rec;
	const void *pl;
	size_t n = 0, bad = 0;
	CU_ASSERT_FATAL(jr_reader_open(&r, dir, 0) == 0);
	while ((err = jr_reader_next(r, &rec, NULL, &pl)) == 1) {
		int j = (int)(rec.offset >> 20);
		if (j >= N || rec.length != lens[j] || !pl) {
			bad++;
			continue;
		}
		const uint8_t *p = pl;
		for (uint32_t b = 0; b < rec.length; b++)
			if (p[b] != (uint8_t)(seeds[j] + b * 7)) {
				bad++;
				break;
			}
		n++;
	}
	CU_ASSERT_EQUAL(err, 0);
	CU_ASSERT_EQUAL(n, N);
	CU_ASSERT_EQUAL(bad, 0);
	jr_reader_close(r);
	struct jr_seginfo *segs = NULL;
	CU_ASSERT(jr_segments_list(dir, &segs) > 3); /* rollovers happened */
	free(segs);
	free(buf);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(dir);
	free(tmp);
}

/*
 * jr_writer_start_writeback (the capture's hint ahead of an expected
 * flush): returns 0, never counts anything as durable and issues no
 * fdatasync; the flush after it still makes everything durable.
 */
static void test_start_writeback(void)
{
	char *tmp = tu_tmpdir("jwb");
	char dir[512];
	struct jr_clock *clk = NULL;
	struct jr_writer_stats st;
	uint8_t data[4096];
	int err = 0;

	snprintf(dir, sizeof(dir), "%s/j", tmp);
	memset(data, 0x5a, sizeof(data));
	jr_clock_new(&clk, 1, 0);
	struct jr_writer *w = open_writer(dir, JR_BACKEND_SYNC, 1u << 20, clk,
					  NULL, &err);
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_EQUAL(jr_writer_start_writeback(w), 0); /* nothing yet */
	struct jr_append a = { .type = JR_WRITE, .offset = 0, .length = 4096,
			       .data = data };
	struct jr_appended out;
	for (int i = 0; i < 3; i++) {
		a.offset = 4096 * (uint64_t)i;
		CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, &out), 0);
	}
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	jr_writer_stats(w, &st);
	uint64_t syncs = st.syncs;
	CU_ASSERT_EQUAL(jr_writer_start_writeback(w), 0);
	jr_writer_stats(w, &st);
	CU_ASSERT_EQUAL(st.syncs, syncs);
	CU_ASSERT(st.durable_seq < out.seq);
	CU_ASSERT(st.oldest_unsynced_ns != 0);
	CU_ASSERT_EQUAL(jr_writer_flush(w), 0);
	jr_writer_stats(w, &st);
	CU_ASSERT_EQUAL(st.durable_seq, out.seq);
	CU_ASSERT_EQUAL(st.oldest_unsynced_ns, 0);
	CU_ASSERT_EQUAL(jr_writer_start_writeback(w), 0); /* all synced */
	/* A FLUSH marker waiting for its sync holds no data: not counted. */
	struct jr_append fm = { .type = JR_FLUSH };
	CU_ASSERT_EQUAL(jr_writer_append(w, &fm, NULL, &out), 0);
	CU_ASSERT_EQUAL(jr_writer_write_out(w), 0);
	jr_writer_stats(w, &st);
	CU_ASSERT(st.durable_seq < out.seq);
	CU_ASSERT_EQUAL(st.oldest_unsynced_ns, 0);
	a.offset = 0;
	CU_ASSERT_EQUAL(jr_writer_append(w, &a, NULL, &out), 0);
	jr_writer_stats(w, &st);
	CU_ASSERT(st.oldest_unsynced_ns != 0);
	CU_ASSERT_EQUAL(jr_writer_close(w), 0);
	jr_clock_free(clk);
	tu_rmrf(tmp);
	free(tmp);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	tu_add_suite("journal",
		     "record encode/decode", test_encode_decode,
		     "round trip, sync back end", test_roundtrip_sync,
		     "round trip, io_uring back end", test_roundtrip_uring,
		     "torn tail at every byte of the last three records",
		     test_truncate_every_byte,
		     "durable_seq: trusted prefix on headers, the rest checked",
		     test_durable_prefix,
		     "1000 bit flips are detected; final record is a torn tail",
		     test_bitflips,
		     "fault loop (write/fsync/open/rename, short), sync",
		     test_faults_sync,
		     "fault loop (write/fsync/open/rename, short), io_uring",
		     test_faults_uring,
		     "simulated power loss keeps flushed records", test_power_loss,
		     "timestamps monotonic when the clock steps back",
		     test_clock_backwards,
		     "group commit, sync back end", test_group_commit_sync,
		     "group commit, io_uring back end", test_group_commit_uring,
		     "segments sealed by age (tick and append)", test_age_sealing,
		     "flush marker records", test_flush_records,
		     "segment list, tmp cleanup, unsealed/foreign segments",
		     test_segments_and_tmp_files,
		     "reader follows a writer", test_reader_follows_writer,
		     "reader races a writer thread", test_reader_races_writer,
		     "zstd levels, fast (negative) ones included", test_zstd_levels,
		     "incompressible payloads are not compressed, partly random "
		     "ones are", test_incompressible_skip,
		     "round trip with compression workers", test_roundtrip_pool,
		     "workers: a flush stores raw what no worker started", test_pool_raw_behind,
		     "workers: many appenders, seq order, flush covers earlier "
		     "appends", test_pool_order,
		     "workers: a write fault hit by a worker is sticky",
		     test_pool_worker_fault,
		     "fault loop with compression workers", test_faults_pool,
		     "pre-written zero tail: a clean end, cut at seal and close",
		     test_prezero_tail,
		     "borrowed payloads: written from the caller's memory",
		     test_borrowed_payloads,
		     "lazy seal: flags, sync of sealed segments, flush covers all",
		     test_lazy_seal,
		     "lazy seal: power loss across segments keeps flushed records",
		     test_lazy_power_loss,
		     "lazy seal: a failed background sync is sticky; damage in a "
		     "lazily sealed segment is reported", test_lazy_sticky_and_corrupt,
		     "start_writeback makes nothing durable; markers are no capture lag",
		     test_start_writeback,
		     NULL);
	return tu_run();
}
