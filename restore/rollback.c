/*
 * rollback.c — setting a disk back to an earlier moment, in place.
 *
 * Only blocks with a version after the target seq differ from the target,
 * so only they are rewritten: the cost is the history undone, not the
 * disk.  Their content as-of the target comes from an rs_view; the writes
 * go to a sink that journals them as ordinary records (capture's write
 * path), which is what makes a rollback undoable: rolling back to a moment
 * just before the rollback restores every rewritten block.
 *
 * Rewriting through a private path (straight into head, with a special
 * "rollback" record type) was rejected: it would need its own recovery and
 * restore rules, while ordinary records already have both.
 */
#include "restore/rs.h"
#include "restore/rs_int.h"

#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define RUN_MAX (1u << 20)

int rs_rollback(struct ix *ix, const struct ix_disk *d, uint64_t seq,
		uint64_t upto, rs_sink_fn sink, void *arg,
		rs_progress_fn progress, void *parg,
		struct rs_rollback_stats *st)
{
	struct rs_rollback_stats s = { 0 };
	struct rs_blockset c = { 0 };
	struct ix_read *rd = NULL;
	struct rs_view *v = NULL;
	uint8_t *run = NULL;
	int err;

	if (seq < d->horizon_seq)
		return rw_err_set(RW_ERANGE, "seq %" PRIu64 " of disk '%s' is "
				  "before its horizon (seq %" PRIu64 ")", seq,
				  d->name, d->horizon_seq);
	uint32_t bs = d->block_size;
	err = rs_blockset_init(&c, d->size, bs);
	run = malloc(RUN_MAX);
	if (err || !run) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = ix_read_begin(ix, &rd)))
		goto out;
	err = ix_versions_range(rd, d->id, seq, upto, rs_blockset_add, &c);
	ix_read_end(rd);
	rd = NULL;
	if (err)
		goto out;
	if ((err = rs_view_open(&v, ix, d, seq)))
		goto out;

	/* A run: contiguous blocks, all data or all zero, up to RUN_MAX. */
	uint64_t run_off = 0;
	uint32_t run_len = 0;
	bool run_zero = false;
	uint64_t done = 0;
	for (uint64_t block = 0; block < c.nbits; block++) {
		bool changed = rs_blockset_has(&c, block);
		const uint8_t *blk;
		uint64_t off = block * bs;
		uint32_t part = d->size - off < bs ? (uint32_t)(d->size - off) : bs;
		if (changed) {
			if ((err = rs_view_block(v, block, &blk)))
				goto out;
		}
		bool z = changed && rs_all_zero(blk, part);
		if (run_len && (!changed || z != run_zero ||
				run_off + run_len != off || run_len + part > RUN_MAX)) {
			if ((err = sink(arg, run_off, run_len, run_zero ? NULL : run)))
				goto out;
			run_len = 0;
		}
		if (!changed)
			continue;
		if (!run_len) {
			run_off = off;
			run_zero = z;
		}
		if (!z)
			memcpy(run + run_len, blk, part);
		run_len += part;
		s.blocks++;
		if (z)
			s.zero_bytes += part;
		else
			s.data_bytes += part;
		done++;
		if (progress)
			progress(parg, done, c.set);
	}
	if (run_len && (err = sink(arg, run_off, run_len, run_zero ? NULL : run)))
		goto out;
	if (st)
		*st = s;
	err = 0;
out:
	rs_view_close(v);
	ix_read_end(rd);
	rs_blockset_free(&c);
	free(run);
	return err;
}
