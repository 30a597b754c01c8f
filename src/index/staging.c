/*
 * staging.c — the index's puts kept in one arena and sorted by key before they are written
 * (see staging.h).
 */
#include "index/staging.h"

#include <stdlib.h>
#include <string.h>

#include "coffer.h"

/* Grows `*buffer` (of `*capacity` elements of `size` bytes) to hold `needed`, doubling, but to
 * no more than `limit` elements when that holds it (0: no limit). */
static int reserve(void **buffer, size_t *capacity, size_t needed, size_t size, size_t limit)
{
    if (needed <= *capacity)
        return 0;
    size_t grown = *capacity ? *capacity : 4096;
    while (grown < needed)
        grown *= 2;
    if (limit && grown > limit && needed <= limit)
        grown = limit;
    void *larger = realloc(*buffer, grown * size);
    if (!larger)
        return COFFER_OUT_OF_MEMORY;
    *buffer = larger;
    *capacity = grown;
    return 0;
}

int staging_put(index_staging *staging, const uint8_t *key, size_t key_length, const uint8_t *value,
                size_t value_length)
{
    size_t length = key_length + value_length;
    if (staging->arena_length + length > UINT32_MAX)
        return COFFER_OUT_OF_MEMORY; /* offsets are 32 bits: the index commits long before */
    /* Most puts are 40 bytes or more (a history entry's); smaller ones grow the array past it. */
    if (reserve((void **)&staging->arena, &staging->arena_capacity, staging->arena_length + length,
                1, staging->arena_limit) != 0 ||
        reserve((void **)&staging->puts, &staging->capacity, staging->count + 1,
                sizeof *staging->puts, staging->arena_limit / 40) != 0)
        return COFFER_OUT_OF_MEMORY;
    uint8_t *at = staging->arena + staging->arena_length;
    memcpy(at, key, key_length);
    memcpy(at + key_length, value, value_length);
    staging->puts[staging->count] =
        (staged_put){(uint32_t)staging->arena_length, (uint16_t)key_length, (uint16_t)value_length,
                     (uint32_t)staging->count};
    staging->arena_length += length;
    staging->count++;
    return 0;
}

/* Puts below this many are sorted by insertion; above, by their next byte. */
#define RADIX_MIN 32
/* One bucket per byte value, after bucket 0 for the keys that end at this depth. */
#define RADIX_BUCKETS 257

/* The bucket of `put` at byte `depth`: 0 when its key ends before it. */
static inline unsigned bucket_of(const uint8_t *arena, const staged_put *put, size_t depth)
{
    return depth < put->key_length ? (unsigned)arena[put->offset + depth] + 1 : 0;
}

/* Keys equal in their first `depth` bytes: bytewise from there, then shorter first. Equal keys
 * compare equal, so a stable sort leaves them in put order. */
static int suffix_compare(const uint8_t *arena, const staged_put *a, const staged_put *b,
                          size_t depth)
{
    size_t shorter = a->key_length < b->key_length ? a->key_length : b->key_length;
    int order = memcmp(arena + a->offset + depth, arena + b->offset + depth, shorter - depth);
    if (order == 0)
        order = (a->key_length > b->key_length) - (a->key_length < b->key_length);
    return order;
}

static void insertion_sort(const uint8_t *arena, staged_put *puts, size_t count, size_t depth)
{
    for (size_t i = 1; i < count; i++) {
        staged_put moving = puts[i];
        size_t j = i;
        for (; j > 0 && suffix_compare(arena, &puts[j - 1], &moving, depth) > 0; j--)
            puts[j] = puts[j - 1];
        puts[j] = moving;
    }
}

/*
 * A stable most-significant-byte radix sort of puts whose keys agree in their first `depth`
 * bytes, through `aux` (as many puts). Each pass reads one byte of each key: a byte all the keys
 * share costs one counting pass and no move, so long common prefixes (ids from one client's
 * counter, accounts named alike) cost little, where a comparison sort compared them again at
 * every step (close to a third of the index thread's time under qsort, docs/benchmarks.md).
 */
static void radix_sort(const uint8_t *arena, staged_put *puts, staged_put *aux, size_t count,
                       size_t depth)
{
    for (;;) {
        if (count < RADIX_MIN) {
            insertion_sort(arena, puts, count, depth);
            return;
        }
        size_t sizes[RADIX_BUCKETS] = {0};
        for (size_t i = 0; i < count; i++)
            sizes[bucket_of(arena, &puts[i], depth)]++;
        if (sizes[0] == count)
            return; /* every key ends here: all equal, in put order */
        unsigned only = bucket_of(arena, &puts[0], depth);
        if (sizes[only] == count) {
            depth++; /* one byte shared by all: nothing moves */
            continue;
        }
        size_t at[RADIX_BUCKETS], next = 0; /* where each bucket's next put goes */
        for (unsigned b = 0; b < RADIX_BUCKETS; b++) {
            at[b] = next;
            next += sizes[b];
        }
        for (size_t i = 0; i < count; i++)
            aux[at[bucket_of(arena, &puts[i], depth)]++] = puts[i];
        memcpy(puts, aux, count * sizeof *puts);
        /* Each bucket now ends at at[b]. Bucket 0 holds equal keys, in put order already. The
         * recursion is at most a key's length deep (130 bytes), 4 KiB a level. */
        for (unsigned b = 1; b < RADIX_BUCKETS; b++)
            if (sizes[b] > 1) {
                size_t start = at[b] - sizes[b];
                radix_sort(arena, puts + start, aux + start, sizes[b], depth + 1);
            }
        return;
    }
}

/* qsort has no context argument: the arena being sorted, for the comparison. */
static _Thread_local const uint8_t *sorting_arena;

static int put_compare(const void *left, const void *right)
{
    const staged_put *a = left, *b = right;
    int order = suffix_compare(sorting_arena, a, b, 0);
    if (order == 0)
        order = (a->order > b->order) - (a->order < b->order);
    return order;
}

void staging_sort(index_staging *staging)
{
    if (staging->count < 2)
        return;
    staged_put *aux = malloc(staging->count * sizeof *aux);
    if (aux) {
        radix_sort(staging->arena, staging->puts, aux, staging->count, 0);
        free(aux);
        return;
    }
    /* No room for the radix sort's second array: qsort, slower, needs none (or finds its own). */
    sorting_arena = staging->arena;
    qsort(staging->puts, staging->count, sizeof *staging->puts, put_compare);
}

void staging_rewind(index_staging *staging, staging_mark mark)
{
    staging->arena_length = mark.arena_length;
    staging->count = mark.count;
}

void staging_set_limit(index_staging *staging, size_t arena_bytes)
{
    staging->arena_limit = arena_bytes;
}

void staging_free(index_staging *staging)
{
    free(staging->arena);
    free(staging->puts);
    memset(staging, 0, sizeof *staging);
}
