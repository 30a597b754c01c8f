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

/* qsort has no context argument: the arena being sorted, for the comparison. */
static _Thread_local const uint8_t *sorting_arena;

static int put_compare(const void *left, const void *right)
{
    const staged_put *a = left, *b = right;
    size_t shorter = a->key_length < b->key_length ? a->key_length : b->key_length;
    int order = memcmp(sorting_arena + a->offset, sorting_arena + b->offset, shorter);
    if (order == 0)
        order = (a->key_length > b->key_length) - (a->key_length < b->key_length);
    if (order == 0)
        order = (a->order > b->order) - (a->order < b->order);
    return order;
}

void staging_sort(index_staging *staging)
{
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
