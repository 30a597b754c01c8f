/*
 * region.h — the memory under the store's tables. Each table owns a fixed range of address
 * space reserved at open (sized generously, costing nothing until used), so it never moves; it
 * is committed in steps as it grows, every committed byte charged to the store's memory budget,
 * and the steps ahead of use are handed to the engine to populate on another thread, keeping
 * page faults off the writer.
 */
#ifndef COFFER_STORE_REGION_H
#define COFFER_STORE_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Commit granularity: one huge page; a region smaller than that grows in small steps, so that
 * a table barely used (holds, expiries, a few accounts) costs little of a small budget. */
#define REGION_STEP ((uint64_t)2 << 20)
#define REGION_SMALL_STEP ((uint64_t)64 << 10)

/* The bytes every region of one store may hold together. */
typedef struct region_budget {
    uint64_t max;
    uint64_t used; /* the sum of the regions' committed bytes */
} region_budget;

typedef struct store_region {
    char *base;
    uint64_t reserved;  /* bytes of address space */
    uint64_t committed; /* bytes readable and writable from base, charged to the budget */
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

/* Why a region could not grow. */
typedef enum region_status {
    REGION_OK = 0,
    REGION_FULL,        /* its reservation (the table's record limit) is exhausted */
    REGION_OVER_BUDGET, /* committing would pass the budget */
    REGION_REFUSED,     /* the kernel refused (out of memory) */
} region_status;

bool region_reserve(store_region *region, uint64_t bytes);
/* Unmaps the region, giving its committed bytes back to `budget`. */
void region_release(store_region *region, region_budget *budget);
/* Makes [0, bytes) writable. */
region_status region_ensure(store_region *region, uint64_t bytes, region_budget *budget);
/* What a region holding `bytes` commits at least (its step's rounding). */
uint64_t region_commit_size(uint64_t bytes);
/* Commits a look-ahead window past `target` bytes (of which `used` are in use) as far as the
 * budget allows, and announces it in `ahead` for populating. A bonus: it never fails. */
void region_look_ahead(store_region *region, uint64_t used, uint64_t target, store_ranges *ahead,
                       region_budget *budget);
/* Gives the pages past `keep` bytes (rounded up to a step) back to the kernel and to the
 * budget; they read as zero when committed again. region_trim(r, 0, b) empties the region. */
void region_trim(store_region *region, uint64_t keep, region_budget *budget);

#endif
