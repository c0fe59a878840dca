/*
 * rs_int.h — restore/'s private helpers, shared by its .c files only.
 *
 * A block set records which blocks of a disk have versions in a seq range
 * (filled by ix_versions_range through rs_blockset_add); restore, rollback
 * and compaction each walk such a set in block order.
 */
#ifndef RW_RESTORE_INT_H
#define RW_RESTORE_INT_H

#include "index/ix.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rs_blockset {
	uint64_t nbits;     /* blocks of the disk */
	uint64_t *w;        /* one bit per block */
	uint64_t set;       /* blocks with at least one version */
	uint64_t versions;  /* versions seen */
};

/* Sizes s for a disk of size bytes in blocks of bs.  0 or -ENOMEM. */
int rs_blockset_init(struct rs_blockset *s, uint64_t size, uint32_t bs);
/* Releases s (safe on a zeroed or freed set). */
void rs_blockset_free(struct rs_blockset *s);
/* ix_versions_range callback: adds block; RW_ECORRUPT past the disk's end. */
int rs_blockset_add(void *arg, uint64_t block, const struct ix_version *v);

static inline bool rs_blockset_has(const struct rs_blockset *s, uint64_t block)
{
	return s->w[block / 64] & (1ull << (block % 64));
}

/* True when the n bytes at p are all zero. */
bool rs_all_zero(const uint8_t *p, size_t n);

#endif
