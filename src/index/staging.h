/*
 * staging.h — the index's puts gathered in memory over the records applied since the last
 * flush, and sorted by key for it: a flush writes them as one RocksDB table file, whose keys
 * must come in order (keys in log order are random ids and accounts all over).
 */
#ifndef COFFER_INDEX_STAGING_H
#define COFFER_INDEX_STAGING_H

#include <stddef.h>
#include <stdint.h>

/* One put: its key and value bytes in the arena, and its place in the order of the puts (a
 * later put of the same key wins, as it would in RocksDB). */
typedef struct staged_put {
    uint32_t offset;
    uint16_t key_length;
    uint16_t value_length;
    uint32_t order;
} staged_put;

typedef struct index_staging {
    uint8_t *arena;
    size_t arena_length, arena_capacity;
    staged_put *puts;
    size_t count, capacity;
    /* What the arena grows to at most while a put still fits (0: no limit), so that a staging
     * flushed at N bytes does not double to 2N on its way there; a larger record still fits. */
    size_t arena_limit;
} index_staging;

/* Where the staging stands, to drop what a record staged when the record turns out bad. */
typedef struct staging_mark {
    size_t arena_length, count;
} staging_mark;

/* Copies one put in. 0, or COFFER_OUT_OF_MEMORY. */
int staging_put(index_staging *staging, const uint8_t *key, size_t key_length, const uint8_t *value,
                size_t value_length);
/* Sorts the puts by key (bytewise, as RocksDB orders them), equal keys in put order. */
void staging_sort(index_staging *staging);
static inline const uint8_t *staged_key(const index_staging *staging, const staged_put *put)
{
    return staging->arena + put->offset;
}
static inline const uint8_t *staged_value(const index_staging *staging, const staged_put *put)
{
    return staging->arena + put->offset + put->key_length;
}
static inline staging_mark staging_mark_get(const index_staging *staging)
{
    return (staging_mark){staging->arena_length, staging->count};
}
/* Forgets every put after `mark` (a zero mark: all of them); keeps the memory. */
void staging_rewind(index_staging *staging, staging_mark mark);
/* The arena's limit (index_staging.arena_limit); what it holds now stays. */
void staging_set_limit(index_staging *staging, size_t arena_bytes);
void staging_free(index_staging *staging);

#endif
