/*
 * derive.h — what the on-disk index holds, derived from one log record alone: the keys and
 * packed values of its transfers and history entries, and the holds it resolves. Pure
 * functions (no RocksDB), shared by the writer (index.c) and the check (check.c), so both
 * derive the same bytes.
 *
 * Keys: 'T' id                                      → a transfer (TRANSFER_VALUE_*)
 *       'H' u8 account length, account, u64 seq big-endian, u8 side (0 from, 1 to)
 *                                                   → a history entry (HISTORY_VALUE_*)
 *       'M'                                         → the meta (index.c)
 * Values are little-endian and start with the format version.
 */
#ifndef COFFER_INDEX_DERIVE_H
#define COFFER_INDEX_DERIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index/index.h"
#include "log/record.h"

#define INDEX_KEY_TRANSFER 'T'
#define INDEX_KEY_HISTORY 'H'
#define INDEX_KEY_META 'M'

/* A transfer value: a fixed part, then from, to, hold id, field, metadata and submitter bytes. */
#define TRANSFER_VALUE_STATE 2 /* u8: changes when a post, void or expiry resolves a hold */
#define TRANSFER_VALUE_SUBMITTER_LENGTH 12 /* u8: the submitter's name (format 2 on) */
#define TRANSFER_VALUE_CAPTURED 56         /* i64: set by a post */
#define TRANSFER_VALUE_FIXED 144
#define TRANSFER_VALUE_MAX                                                                         \
    (TRANSFER_VALUE_FIXED + 2 * COFFER_ACCOUNT_ID_MAX + COFFER_TRANSFER_ID_MAX + 64 +              \
     COFFER_METADATA_MAX + COFFER_SUBMITTER_MAX)
#define HISTORY_VALUE_FIXED 48
#define HISTORY_VALUE_MAX (HISTORY_VALUE_FIXED + COFFER_TRANSFER_ID_MAX)
#define HISTORY_KEY_MAX (2 + COFFER_ACCOUNT_ID_MAX + 8 + 1)
#define TRANSFER_KEY_MAX (1 + COFFER_TRANSFER_ID_MAX)

/* What one record makes the index do, handed over in seq order. Each callback returns 0 to go
 * on, or a code that stops the derivation and comes back from index_derive_record. */
typedef struct index_sink {
    int (*transfer)(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                    size_t value_length);
    int (*history)(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                   size_t value_length);
    /* A hold (key) took `state`; `captured` is a post's amount (0 otherwise). */
    int (*resolve)(void *context, const uint8_t *key, size_t key_length, uint8_t state,
                   int64_t captured);
    void *context;
} index_sink;

/* Derives a checked record's writes (nothing for a format-1 record: it has no outcomes).
 * RECORD_OK, a record status when the payload does not parse, or the sink's code. */
int index_derive_record(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                        const index_sink *sink);

size_t index_transfer_key(uint8_t *key, const char *id, size_t id_len);
/* The history key of (account, seq, side); after_seq's page starts at side 0 of seq + 1. */
size_t index_history_key(uint8_t *key, const char *account, size_t account_len, uint64_t seq,
                         uint8_t side);

/* Reads packed values back; false for a value that is not one of this format. */
bool index_transfer_unpack(const uint8_t *value, size_t length, index_transfer *out);
bool index_history_unpack(const uint8_t *key, size_t key_length, const uint8_t *value,
                          size_t length, coffer_history_entry *out);

/* Fixed-width little-endian fields. */
static inline void index_put_u64(uint8_t *at, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        at[i] = (uint8_t)(value >> (8 * i));
}

static inline uint64_t index_get_u64(const uint8_t *at)
{
    uint64_t value = 0;
    for (int i = 0; i < 8; i++)
        value |= (uint64_t)at[i] << (8 * i);
    return value;
}

#endif
