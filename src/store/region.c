/*
 * region.c — reserved address ranges that grow in place, charged to a budget (see region.h).
 */
#include "store/region.h"

#include <sys/mman.h>

#include "base/check.h"

#define REGION_LOOKAHEAD_MIN (4u << 20) /* populate at least this far ahead of use */
#define REGION_LOOKAHEAD_SHARE 16       /* ...or 1/16 of what is used, if more */

static uint64_t round_up(uint64_t value, uint64_t step)
{
    return (value + step - 1) / step * step;
}

/* `bytes` rounded up to the step a region of that size commits in. */
static uint64_t commit_round(uint64_t bytes)
{
    return bytes < REGION_STEP ? round_up(bytes, REGION_SMALL_STEP) : round_up(bytes, REGION_STEP);
}

uint64_t region_commit_size(uint64_t bytes)
{
    return bytes ? commit_round(bytes) : 0;
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

void region_release(store_region *region, region_budget *budget)
{
    if (region->base) {
        munmap(region->base, region->reserved);
        COFFER_ASSERT(budget->used >= region->committed);
        budget->used -= region->committed;
    }
    *region = (store_region){0};
}

/* Commits [0, bytes) rounded up to a step (at most the reservation). */
/* What the budget has left. Its max can drop below what is used (the engine lowers it as the
 * index's filter grows): then nothing, not a difference that wraps around to everything. */
static uint64_t budget_left(const region_budget *budget)
{
    return budget->used < budget->max ? budget->max - budget->used : 0;
}

static region_status region_commit(store_region *region, uint64_t bytes, region_budget *budget)
{
    if (bytes <= region->committed)
        return REGION_OK;
    bytes = commit_round(bytes);
    if (bytes > region->reserved)
        bytes = region->reserved;
    if (bytes <= region->committed)
        return REGION_FULL;
    uint64_t more = bytes - region->committed;
    if (more > budget_left(budget))
        return REGION_OVER_BUDGET;
    if (mprotect(region->base + region->committed, more, PROT_READ | PROT_WRITE) != 0)
        return REGION_REFUSED;
    region->committed = bytes;
    budget->used += more;
    return REGION_OK;
}

region_status region_ensure(store_region *region, uint64_t bytes, region_budget *budget)
{
    /* Reservations are at most the budget: a need past one is past the other. */
    if (bytes > region->reserved)
        return bytes > budget->max ? REGION_OVER_BUDGET : REGION_FULL;
    return region_commit(region, bytes, budget);
}

void region_look_ahead(store_region *region, uint64_t used, uint64_t target, store_ranges *ahead,
                       region_budget *budget)
{
    if (target == 0)
        return; /* a table never used (holds, in a ledger without them) costs nothing */
    uint64_t lookahead = used / REGION_LOOKAHEAD_SHARE;
    if (lookahead < REGION_LOOKAHEAD_MIN)
        lookahead = REGION_LOOKAHEAD_MIN;
    /* Refill when half the window is used up, so announcements come in large pieces. */
    if (region->announced >= target + lookahead / 2)
        return;
    /* Rounded down to a step, so that the commit's rounding up adds no step of its own. */
    uint64_t window = (target + lookahead) / REGION_STEP * REGION_STEP;
    if (window > region->reserved)
        window = region->reserved;
    /* Near the budget the window shrinks to what is left of it, down to nothing. */
    uint64_t left = budget_left(budget) / REGION_SMALL_STEP * REGION_SMALL_STEP;
    if (window > region->committed + left)
        window = region->committed + left;
    if (region_commit(region, window, budget) != REGION_OK)
        return;
    uint64_t from = region->announced > used ? region->announced : used;
    from = from / 4096 * 4096;
    if (ahead && ahead->count < STORE_RANGES_MAX && region->committed > from) {
        ahead->items[ahead->count++] = (store_range){region->base + from, region->committed - from};
    }
    region->announced = region->committed;
}

void region_trim(store_region *region, uint64_t keep, region_budget *budget)
{
    keep = commit_round(keep);
    if (keep >= region->committed)
        return;
    uint64_t dropped = region->committed - keep;
    /* Inaccessible first, so a populate still running on another thread cannot fault the
     * pages back in behind the budget's back; then the pages go back to the kernel. */
    mprotect(region->base + keep, dropped, PROT_NONE);
    madvise(region->base + keep, dropped, MADV_DONTNEED);
    region->committed = keep;
    if (region->announced > keep)
        region->announced = keep;
    COFFER_ASSERT(budget->used >= dropped);
    budget->used -= dropped;
}
