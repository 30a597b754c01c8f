/*
 * region.c — reserved address ranges that grow in place (see region.h).
 */
#include "store/region.h"

#include <sys/mman.h>

#define REGION_STEP (2u << 20)          /* commit in 2 MiB steps: one huge page */
#define REGION_LOOKAHEAD_MIN (4u << 20) /* populate at least this far ahead of use */
#define REGION_LOOKAHEAD_SHARE 16       /* ...or 1/16 of what is used, if more */

static uint64_t round_up(uint64_t value, uint64_t step)
{
    return (value + step - 1) / step * step;
}

bool region_reserve(store_region *region, uint64_t bytes)
{
    *region = (store_region){0};
    bytes = round_up(bytes ? bytes : 1, REGION_STEP);
    void *base = mmap(0, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return false;
    /* Advice only: huge pages cut TLB misses on tables touched at random. */
    madvise(base, bytes, MADV_HUGEPAGE);
    region->base = base;
    region->reserved = bytes;
    return true;
}

void region_release(store_region *region)
{
    if (region->base)
        munmap(region->base, region->reserved);
    *region = (store_region){0};
}

static bool region_commit(store_region *region, uint64_t bytes)
{
    if (bytes <= region->committed)
        return true;
    bytes = round_up(bytes, REGION_STEP);
    if (bytes > region->reserved)
        bytes = region->reserved;
    if (bytes <= region->committed)
        return false;
    if (mprotect(region->base + region->committed, bytes - region->committed,
                 PROT_READ | PROT_WRITE) != 0)
        return false;
    region->committed = bytes;
    return true;
}

bool region_ensure(store_region *region, uint64_t used, uint64_t needed, store_ranges *ahead)
{
    uint64_t target = used + needed;
    if (target > region->reserved)
        return false;
    if (!region_commit(region, target))
        return false;
    uint64_t lookahead = used / REGION_LOOKAHEAD_SHARE;
    if (lookahead < REGION_LOOKAHEAD_MIN)
        lookahead = REGION_LOOKAHEAD_MIN;
    uint64_t window = target + lookahead;
    if (window > region->reserved)
        window = region->reserved;
    /* Refill when half the window is used up, so announcements come in large pieces. */
    if (region->announced >= target + lookahead / 2)
        return true;
    if (!region_commit(region, window))
        return true; /* the window is a bonus, not a need */
    uint64_t from = region->announced > used ? region->announced : used;
    from = from / 4096 * 4096;
    if (ahead && ahead->count < STORE_RANGES_MAX && region->committed > from) {
        ahead->items[ahead->count++] = (store_range){region->base + from, region->committed - from};
    }
    region->announced = region->committed;
    return true;
}

void region_discard(store_region *region, uint64_t bytes)
{
    if (bytes > region->committed)
        bytes = region->committed;
    if (bytes)
        madvise(region->base, bytes, MADV_DONTNEED);
    if (region->announced > 0)
        region->announced = 0;
}
