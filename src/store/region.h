/*
 * region.h — the memory under the store's tables. Each table owns a fixed range of address
 * space reserved at open (sized by the configured limits, costing nothing until used), so it
 * never moves; it is committed in steps as it grows, and the steps ahead of use are handed to
 * the engine to populate on another thread, keeping page faults off the writer.
 */
#ifndef COFFER_STORE_REGION_H
#define COFFER_STORE_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store_region {
    char *base;
    uint64_t reserved;  /* bytes of address space */
    uint64_t committed; /* bytes readable and writable from base */
    uint64_t announced; /* bytes handed out for populating so far */
} store_region;

/* A range the engine may populate ahead of use (madvise MADV_POPULATE_WRITE). */
typedef struct store_range {
    void *start;
    size_t length;
} store_range;

#define STORE_RANGES_MAX 32

typedef struct store_ranges {
    store_range items[STORE_RANGES_MAX];
    size_t count;
} store_ranges;

bool region_reserve(store_region *region, uint64_t bytes);
void region_release(store_region *region);
/* Makes [0, used + needed) writable and announces a look-ahead window past it. False when
 * the reservation is exhausted or the kernel refuses. */
bool region_ensure(store_region *region, uint64_t used, uint64_t needed, store_ranges *ahead);
/* Gives the pages of [0, bytes) back to the kernel; they read as zero afterwards. */
void region_discard(store_region *region, uint64_t bytes);

#endif
