/*
 * blockset.c — sets of changed blocks, and zero detection, for restore,
 * rollback and compaction.
 *
 * A plain bitmap (one bit per block: 128 KiB for a 4 GiB disk of 4 KiB
 * blocks) walked word by word; a sorted list of block numbers was
 * rejected because ix_versions_range reports a block once per version and
 * deduplicating a list costs more than setting a bit.
 */
#include "restore/rs_int.h"

#include "common/rw.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int rs_blockset_init(struct rs_blockset *s, uint64_t size, uint32_t bs)
{
	memset(s, 0, sizeof(*s));
	s->nbits = (size + bs - 1) / bs;
	s->w = calloc((size_t)((s->nbits + 63) / 64) + 1, sizeof(uint64_t));
	return s->w ? 0 : -ENOMEM;
}

void rs_blockset_free(struct rs_blockset *s)
{
	free(s->w);
	s->w = NULL;
}

int rs_blockset_add(void *arg, uint64_t block, const struct ix_version *v)
{
	struct rs_blockset *s = arg;

	(void)v;
	s->versions++;
	if (block >= s->nbits)
		return rw_err_set(RW_ECORRUPT, "index holds block %" PRIu64
				  " beyond the disk's %" PRIu64 " blocks",
				  block, s->nbits);
	uint64_t bit = 1ull << (block % 64);
	if (!(s->w[block / 64] & bit)) {
		s->w[block / 64] |= bit;
		s->set++;
	}
	return 0;
}

