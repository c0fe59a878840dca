/*
 * file.c — restoring a disk as-of a seq into a sparse raw image.
 *
 * Two directions (DESIGN.md §4): forward copies base and rebuilds every
 * block that has a version in (horizon, S]; backward copies head and
 * rebuilds only the blocks with a version after S.  Both copies skip holes
 * (SEEK_DATA/SEEK_HOLE) and all-zero blocks, so the output stays sparse.
 * The direction is chosen by estimated bytes moved: allocated bytes of the
 * source image plus a block per version to rebuild.
 *
 * Backward is only allowed when the caller holds the store lock (no server
 * is writing head): a live head may hold bytes whose records are still in
 * the server's queue, which a restore in another process cannot see.  A
 * forward restore reads only base (stable until compaction) and indexed
 * records, so it is exact while a server runs.
 *
 * The image is written to NAME.tmp, fsynced and renamed, so a crash or an
 * error never leaves a plausible-looking but wrong image under NAME.
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"
#include "journal/jr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (1u << 20)

/* Bytes allocated to an image (st_blocks), the cost of copying it. */
static uint64_t allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/*
 * Copies the data extents of src into out (same offsets), skipping blocks
 * of bs bytes that are all zero.  Adds to *copied.
 */
static int copy_sparse(const char *src_path, int out, uint64_t size,
		       uint32_t bs, uint8_t *buf, uint64_t *copied,
		       uint64_t *written, rs_progress_fn progress, void *arg,
		       uint64_t total)
{
	int fd = rw_sys_open(src_path, O_RDONLY, 0);
	int err = 0;

	if (fd < 0)
		return rw_err_set(fd, "cannot open '%s': %s", src_path,
				  rw_strerror(fd));
	off_t pos = 0;
	while ((uint64_t)pos < size) {
		off_t data = lseek(fd, pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break;
			err = rw_err_set(-errno, "cannot seek in '%s': %s",
					 src_path, strerror(errno));
			goto out;
		}
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		/* Align to blocks so zero detection sees whole blocks. */
		data -= data % bs;
		while (data < hole) {
			size_t n = COPY_CHUNK;
			if ((uint64_t)(hole - data) < n)
				n = (size_t)(hole - data);
			ssize_t got = rw_sys_pread_full(fd, buf, n, data);
			if (got < 0) {
				err = rw_err_set((int)got, "cannot read '%s' at %lld: %s",
						 src_path, (long long)data,
						 rw_strerror((int)got));
				goto out;
			}
			if (got == 0)
				break;
			for (size_t o = 0; o < (size_t)got; o += bs) {
				size_t part = (size_t)got - o < bs ? (size_t)got - o : bs;
				if (rs_all_zero(buf + o, part))
					continue;
				err = rw_sys_pwrite_full(out, buf + o, part,
							 data + (off_t)o);
				if (err) {
					rw_err_set(err, "cannot write the restored "
						   "image: %s", rw_strerror(err));
					goto out;
				}
				*written += part;
			}
			data += got;
			*copied += (uint64_t)got;
			if (progress)
				progress(arg, *copied, total);
		}
		pos = hole;
	}
out:
	close(fd);
	return err;
}

int rs_restore_file(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		    const char *out_path, unsigned flags,
		    rs_progress_fn progress, void *arg,
		    struct rs_restore_stats *st)
{
	struct rs_restore_stats s = { 0 };
	struct rs_blockset bm = { 0 };
	struct ix_read *rd = NULL;
	struct rs_view *v = NULL;
	uint8_t *buf = NULL;
	char tmp[4096], base[4096], head[4096];
	int out = -1, err;
	struct rs_range r;

	if (!(flags & RS_OVERWRITE) && access(out_path, F_OK) == 0)
		return rw_err_set(RW_EEXIST, "'%s' already exists (use --force "
				  "to replace it)", out_path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", out_path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	if ((err = ix_disk_path(ix, d->name, "base.img", base, sizeof(base))) ||
	    (err = ix_disk_path(ix, d->name, "head.img", head, sizeof(head))))
		return err;
	if ((err = rs_range_get(ix, d, &r)))
		return err;

	uint32_t bs = d->block_size;
	err = rs_blockset_init(&bm, d->size, bs);
	buf = malloc(COPY_CHUNK);
	if (err || !buf) {
		err = -ENOMEM;
		goto out;
	}

	/* Choose the direction: count blocks to rebuild each way. */
	if ((err = ix_read_begin(ix, &rd)))
		goto out;
	if ((err = ix_versions_range(rd, d->id, d->base_seq, seq, rs_blockset_add, &bm)))
		goto out;
	uint64_t fwd_blocks = bm.set;
	uint64_t back_blocks = 0;
	bool backward = false;
	/* Head is only usable when it holds every indexed record of the disk. */
	if (d->head_synced_seq < d->last_indexed_seq)
		flags &= ~(unsigned)RS_ALLOW_BACKWARD;
	if ((flags & RS_ALLOW_BACKWARD) && seq < r.latest_seq) {
		struct rs_blockset b2;
		if ((err = rs_blockset_init(&b2, d->size, bs)))
			goto out;
		err = ix_versions_range(rd, d->id, seq, r.latest_seq,
					rs_blockset_add, &b2);
		back_blocks = b2.set;
		uint64_t fwd_cost = allocated(base) + fwd_blocks * bs;
		uint64_t back_cost = allocated(head) + back_blocks * bs;
		if (!err && back_cost < fwd_cost) {
			backward = true;
			rs_blockset_free(&bm);
			bm = b2;
		} else {
			rs_blockset_free(&b2);
		}
		if (err)
			goto out;
	} else if ((flags & RS_ALLOW_BACKWARD) && seq >= r.latest_seq) {
		/* As-of the latest record: head is the answer. */
		backward = true;
		memset(bm.w, 0, (bm.nbits + 63) / 64 * 8);
		bm.set = 0;
	}
	ix_read_end(rd);
	rd = NULL;

	out = rw_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0) {
		err = rw_err_set(out, "cannot create '%s': %s", tmp,
				 rw_strerror(out));
		goto out;
	}
	if ((err = rw_sys_ftruncate(out, (off_t)d->size))) {
		rw_err_set(err, "cannot size '%s': %s", tmp, rw_strerror(err));
		goto out;
	}
	s.backward = backward;
	uint64_t src_bytes = allocated(backward ? head : base);
	uint64_t total = src_bytes + bm.set * bs;
	if ((err = copy_sparse(backward ? head : base, out, d->size, bs, buf,
			       &s.bytes_copied, &s.bytes_written, progress, arg,
			       total)))
		goto out;

	if ((err = rs_view_open(&v, ix, d, seq)))
		goto out;
	uint64_t done = s.bytes_copied;
	for (uint64_t w = 0; w < (bm.nbits + 63) / 64; w++) {
		uint64_t word = bm.w[w];
		while (word) {
			uint64_t block = w * 64 + (uint64_t)__builtin_ctzll(word);
			word &= word - 1;
			const uint8_t *blk;
			if ((err = rs_view_block(v, block, &blk)))
				goto out;
			uint64_t off = block * bs;
			size_t part = d->size - off < bs ? (size_t)(d->size - off) : bs;
			if (rs_all_zero(blk, part)) {
				/* Whatever the copy put there must go. */
				if (fallocate(out, FALLOC_FL_PUNCH_HOLE |
					      FALLOC_FL_KEEP_SIZE, (off_t)off,
					      (off_t)part) < 0 &&
				    (err = rw_sys_pwrite_full(out, blk, part,
							      (off_t)off)))
					goto write_err;
			} else {
				if ((err = rw_sys_pwrite_full(out, blk, part,
							      (off_t)off)))
					goto write_err;
				s.bytes_written += part;
			}
			s.blocks_fixed++;
			done += bs;
			if (progress)
				progress(arg, done, total);
		}
	}
	if ((err = rw_sys_fsync(out))) {
		rw_err_set(err, "cannot sync '%s': %s", tmp, rw_strerror(err));
		goto out;
	}
	{
		/* A compaction past seq that began while we copied may have
		 * folded newer data into base under us: refuse (compact.c). */
		struct ix_disk now;
		if ((err = ix_disk_get(ix, d->name, &now)))
			goto out;
		if (now.horizon_seq > seq) {
			err = rw_err_set(RW_ERANGE, "seq %" PRIu64 " of disk '%s' was compacted away while it was being restored (horizon is now seq %" PRIu64 ")",
					 seq, d->name, now.horizon_seq);
			goto out;
		}
	}
	close(out);
	out = -1;
	if ((err = rw_sys_rename(tmp, out_path))) {
		rw_err_set(err, "cannot rename '%s' to '%s': %s", tmp, out_path,
			   rw_strerror(err));
		goto out;
	}
	if (st)
		*st = s;
	err = 0;
	goto out;
write_err:
	rw_err_set(err, "cannot write '%s': %s", tmp, rw_strerror(err));
out:
	if (out >= 0) {
		close(out);
		unlink(tmp);
	} else if (err) {
		unlink(tmp);
	}
	rs_view_close(v);
	ix_read_end(rd);
	rs_blockset_free(&bm);
	free(buf);
	return err;
}
