/*
 * filter.c — the index's id filter (see filter.h). Each id sets FILTER_PROBES bits in one
 * 64-byte block of each slice it lands in, so a lookup reads one cache line per slice. Bits are
 * set with atomic ORs and read with relaxed loads: the adder publishes through a release the
 * reader acquires (the slice count here, the index's flushed seq in the engine), after which
 * every bit an earlier add set is visible.
 */
#include "index/filter.h"

#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "coffer.h"

/* Bits per id in its block: with ~10 bits per id, 7 probes is the standard Bloom optimum; a
 * blocked filter loses a little of it (measured in tests/unit/test_filter.c). */
#define FILTER_PROBES 7
#define FILTER_BLOCK_WORDS 8 /* 512 bits, one cache line */

/* The engine's id hash is a fast multiply-mix: its bits are spread again (SplitMix64's
 * finalizer) before they choose a block and the bits in it. */
static uint64_t mix(uint64_t hash)
{
    hash ^= hash >> 30;
    hash *= 0xbf58476d1ce4e5b9ULL;
    hash ^= hash >> 27;
    hash *= 0x94d049bb133111ebULL;
    return hash ^ (hash >> 31);
}

/* The block of `slice` the mixed hash falls in: its high 32 bits scaled to the block count. */
static _Atomic uint64_t *block_of(const filter_slice *slice, uint64_t mixed)
{
    uint64_t block = ((mixed >> 32) * slice->blocks) >> 32;
    return slice->words + block * FILTER_BLOCK_WORDS;
}

/* The block's words for an id: FILTER_PROBES bit positions of 9 bits each from a second mix. */
static void block_masks(uint64_t mixed, uint64_t masks[FILTER_BLOCK_WORDS])
{
    uint64_t bits = mix(mixed ^ 0x9e3779b97f4a7c15ULL);
    memset(masks, 0, FILTER_BLOCK_WORDS * sizeof masks[0]);
    for (int i = 0; i < FILTER_PROBES; i++, bits >>= 9)
        masks[(bits >> 6) & 7] |= 1ULL << (bits & 63);
}

void filter_init(id_filter *filter, uint64_t slice_ids)
{
    memset(filter, 0, sizeof *filter);
    filter->slice_ids = slice_ids ? slice_ids : FILTER_SLICE_IDS;
    atomic_init(&filter->slices_count, 0);
    atomic_init(&filter->broken, false);
    atomic_init(&filter->ids, 0);
    atomic_init(&filter->bytes, 0);
}

void filter_free(id_filter *filter)
{
    unsigned count = atomic_load(&filter->slices_count);
    for (unsigned i = 0; i < count; i++) {
        free((void *)filter->slices[i]->words);
        free(filter->slices[i]);
    }
    memset(filter, 0, sizeof *filter);
}

/* A zeroed slice, twice the last one (up to slice_ids ids), published to readers. */
static int slice_add(id_filter *filter)
{
    unsigned count = atomic_load_explicit(&filter->slices_count, memory_order_relaxed);
    if (count == FILTER_SLICES_MAX)
        return COFFER_OUT_OF_MEMORY;
    uint64_t ids_max =
        filter->slice_ids < FILTER_FIRST_SLICE_IDS ? filter->slice_ids : FILTER_FIRST_SLICE_IDS;
    if (count > 0)
        ids_max = 2 * filter->slices[count - 1]->ids_max;
    if (ids_max > filter->slice_ids)
        ids_max = filter->slice_ids;
    uint64_t bits = ids_max * FILTER_BITS_PER_ID;
    uint64_t blocks = (bits + 511) / 512;
    size_t bytes = (size_t)blocks * FILTER_BLOCK_WORDS * sizeof(uint64_t);
    filter_slice *slice = calloc(1, sizeof *slice);
    void *words = slice ? aligned_alloc(64, bytes) : 0;
    if (!words) {
        free(slice);
        return COFFER_OUT_OF_MEMORY;
    }
    memset(words, 0, bytes);
    slice->words = words;
    slice->blocks = blocks;
    slice->ids_max = ids_max;
    filter->slices[count] = slice;
    atomic_fetch_add_explicit(&filter->bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&filter->slices_count, count + 1, memory_order_release);
    return COFFER_OK;
}

int filter_add(id_filter *filter, uint64_t hash)
{
    if (atomic_load_explicit(&filter->broken, memory_order_relaxed))
        return COFFER_OUT_OF_MEMORY;
    unsigned count = atomic_load_explicit(&filter->slices_count, memory_order_relaxed);
    if (count == 0 || filter->slices[count - 1]->ids >= filter->slices[count - 1]->ids_max) {
        if (slice_add(filter) != COFFER_OK) {
            atomic_store(&filter->broken, true);
            return COFFER_OUT_OF_MEMORY;
        }
        count++;
    }
    filter_slice *slice = filter->slices[count - 1];
    uint64_t mixed = mix(hash), masks[FILTER_BLOCK_WORDS];
    block_masks(mixed, masks);
    _Atomic uint64_t *block = block_of(slice, mixed);
    for (int i = 0; i < FILTER_BLOCK_WORDS; i++)
        if (masks[i])
            atomic_fetch_or_explicit(&block[i], masks[i], memory_order_relaxed);
    slice->ids++;
    atomic_fetch_add_explicit(&filter->ids, 1, memory_order_relaxed);
    return COFFER_OK;
}

bool filter_maybe(const id_filter *filter, uint64_t hash)
{
    if (atomic_load_explicit(&filter->broken, memory_order_acquire))
        return true;
    unsigned count = atomic_load_explicit(&filter->slices_count, memory_order_acquire);
    COFFER_ASSERT(count <= FILTER_SLICES_MAX);
    uint64_t mixed = mix(hash), masks[FILTER_BLOCK_WORDS];
    block_masks(mixed, masks);
    for (unsigned s = 0; s < count; s++) {
        const _Atomic uint64_t *block = block_of(filter->slices[s], mixed);
        bool all = true;
        for (int i = 0; i < FILTER_BLOCK_WORDS && all; i++)
            all = (atomic_load_explicit(&block[i], memory_order_relaxed) & masks[i]) == masks[i];
        if (all)
            return true;
    }
    return false;
}

uint64_t filter_bytes(const id_filter *filter)
{
    return atomic_load_explicit(&filter->bytes, memory_order_relaxed);
}

uint64_t filter_ids(const id_filter *filter)
{
    return atomic_load_explicit(&filter->ids, memory_order_relaxed);
}
