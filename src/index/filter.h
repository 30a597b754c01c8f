/*
 * filter.h — a blocked Bloom filter of the ids the index holds, so that the writer can tell an
 * id it has certainly never seen (most new events) from one it must look up in the index
 * when memory no longer holds every transfer. One thread adds; any thread asks, without a lock.
 */
#ifndef COFFER_INDEX_FILTER_H
#define COFFER_INDEX_FILTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Ids a slice is sized for at most. The filter grows by whole slices (a full slice is never
 * resized, so a reader never sees bits move); each slice costs ~FILTER_BITS_PER_ID bits per id.
 * The first holds FILTER_FIRST_SLICE_IDS (1.25 MiB: a small ledger pays little for its filter
 * out of a small memory budget), and each next one twice its predecessor, up to the largest. */
#define FILTER_SLICE_IDS (1u << 24)
#define FILTER_FIRST_SLICE_IDS (1u << 20)
#define FILTER_BITS_PER_ID 10
/* Slices at most: enough to number every id the store can (2^32 - 1). */
#define FILTER_SLICES_MAX 264

/* One slice: blocks of one cache line (512 bits), each id setting its bits in one block. */
typedef struct filter_slice {
    _Atomic uint64_t *words;
    uint64_t blocks;
    uint64_t ids_max; /* what it is sized for */
    uint64_t ids;     /* added so far (the adding thread's count) */
} filter_slice;

typedef struct id_filter {
    uint64_t slice_ids;                      /* ids per slice, fixed at filter_init */
    filter_slice *slices[FILTER_SLICES_MAX]; /* written before slices_count publishes them */
    atomic_uint slices_count;                /* release by the adder, acquire by readers */
    atomic_bool broken;                      /* an add failed: every id is "maybe" */
    _Atomic uint64_t ids, bytes;             /* for metrics and the memory budget */
} id_filter;

/* The hash of an id's bytes (the engine's store_hash: the index layer is given it). */
typedef uint64_t (*filter_hash_fn)(const char *bytes, size_t length);

/* An empty filter of slices sized for `slice_ids` ids each (0: FILTER_SLICE_IDS); its first
 * slice is allocated by the first add. */
void filter_init(id_filter *filter, uint64_t slice_ids);
void filter_free(id_filter *filter);

/* Adds an id by its 64-bit hash; the adding thread only. COFFER_OK, or out_of_memory when a
 * new slice cannot be allocated (or the slices run out): the filter is then broken and
 * answers "maybe" for every id, which stays correct. */
int filter_add(id_filter *filter, uint64_t hash);

/* false when the id with this hash was certainly never added; true when it may have been.
 * Any thread: an add that happened before a release the caller acquired (the index's flushed
 * seq) is seen. */
bool filter_maybe(const id_filter *filter, uint64_t hash);

/* The bytes the slices hold, and the ids added (readable from any thread). */
uint64_t filter_bytes(const id_filter *filter);
uint64_t filter_ids(const id_filter *filter);

#endif
