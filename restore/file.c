/*
 * file.c — restoring a disk as-of a seq into a sparse raw image.
 *
 * Two directions (DESIGN.md §4): forward copies base and rewrites every
 * block that has a version in (base_seq, S]; backward copies head and
 * rewrites only the blocks with a version after S.  Both copies skip holes
 * (SEEK_DATA/SEEK_HOLE) and all-zero blocks, so the output stays sparse.
 * One scan of the index builds the block map (map.c) that serves both the
 * choice and the work: the direction is chosen by estimated bytes moved,
 * allocated bytes of the source image plus a block per block to rewrite,
 * and the map is then written by apply.c — every needed record read once,
 * in journal order, runs of blocks written with one pwrite each.
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

/* Bytes allocated to an image (st_blocks), the cost of copying it. */
static uint64_t allocated(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/*
 * Copies the data extents of src into a's image (same offsets), leaving
 * all-zero blocks as holes.  Adds to *copied (bytes read).
 */
static int copy_sparse(struct rs_apply *a, const char *src_path,
		       uint64_t *copied)
{
	uint64_t size = a->d->size;
	uint32_t bs = a->d->block_size;
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
			size_t n = RS_APPLY_RUN;
			if ((uint64_t)(hole - data) < n)
				n = (size_t)(hole - data);
			ssize_t got = rw_sys_pread_full(fd, a->buf, n, data);
			if (got < 0) {
				err = rw_err_set((int)got, "cannot read '%s' at %lld: %s",
						 src_path, (long long)data,
						 rw_strerror((int)got));
				goto out;
			}
			if (got == 0)
				break;
			if ((err = rs_apply_write(a, (uint64_t)data, a->buf,
						  (size_t)got)))
				goto out;
			data += got;
			*copied += (uint64_t)got;
			a->done += (uint64_t)got;
			if (a->progress)
				a->progress(a->parg, a->done, a->total);
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
	struct rs_map m = { 0 };
	struct rs_apply a = { .fd = -1, .base_fd = -1 };
	bool apply_ready = false;
	char tmp[4096], base[4096], head[4096];
	int out = -1, base_fd = -1, err;
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
	uint64_t nblocks = (d->size + bs - 1) / bs;
	/* Head is only usable when it holds every indexed record of the disk. */
	if (d->head_synced_seq < d->last_indexed_seq)
		flags &= ~(unsigned)RS_ALLOW_BACKWARD;
	bool may_back = (flags & RS_ALLOW_BACKWARD) != 0;
	uint64_t upto = may_back && r.latest_seq > seq ? r.latest_seq : seq;

	/* As-of the latest record, head is the answer: no map needed. */
	bool backward = may_back && seq >= r.latest_seq;
	if (!backward) {
		/* One scan: what each block needs as-of seq, both ways. */
		if ((err = rs_map_fill(&m, ix, d, 0, d->base_seq, seq, upto,
				       rs_map_window, NULL)))
			goto out;
		if (may_back) {
			uint64_t fwd_cost = allocated(base) + m.asof_blocks * bs;
			uint64_t back_cost = allocated(head) + m.after_blocks * bs;
			backward = back_cost < fwd_cost;
		}
	}
	enum rs_pick pick = backward ? RS_PICK_AFTER : RS_PICK_ASOF;

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
	base_fd = rw_sys_open(base, O_RDONLY, 0);
	if (base_fd < 0) {
		err = rw_err_set(base_fd, "cannot open base image '%s': %s",
				 base, rw_strerror(base_fd));
		goto out;
	}
	if ((err = rs_apply_init(&a, ix, d, seq, out, tmp)))
		goto out;
	apply_ready = true;
	a.base_fd = base_fd;
	a.progress = progress;
	a.parg = arg;
	a.total = allocated(backward ? head : base) +
		  (backward ? m.after_blocks : m.asof_blocks) * bs;
	s.backward = backward;
	if ((err = copy_sparse(&a, backward ? head : base, &s.bytes_copied)))
		goto out;
	/* Whatever the copy put in the image may have to become a hole. */
	a.punch = a.data_bytes > 0;
	while (!backward || seq < r.latest_seq) {
		if ((err = rs_apply_map(&a, &m, pick)))
			goto out;
		if (m.next >= nblocks)
			break;
		if ((err = rs_map_fill(&m, ix, d, m.next, d->base_seq, seq, upto,
				       rs_map_window, NULL)))
			goto out;
	}
	s.blocks_fixed = a.blocks;
	s.bytes_written = a.data_bytes;
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
out:
	if (out >= 0) {
		close(out);
		unlink(tmp);
	} else if (err) {
		unlink(tmp);
	}
	if (apply_ready)
		rs_apply_fini(&a);
	if (base_fd >= 0)
		close(base_fd);
	rs_map_free(&m);
	return err;
}
