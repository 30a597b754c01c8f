/*
 * derive.h — what the on-disk index holds, derived from one log record alone: the keys and
 * packed values of its transfers and history entries, and the holds it resolves. Pure
 * functions (no RocksDB), shared by the writer (index.c) and the check (check.c), so both
 * derive the same bytes.
 *
 * Keys: 'T' id                                      → a transfer (TRANSFER_VALUE_*)
 *       'H' u8 account length, account, u64 seq big-endian, u8 side (0 from, 1 to)
 *                                                   → a history entry (HISTORY_VALUE_*)
 *       'R' hold id                                 → how a hold ended (RESOLUTION_VALUE_*)
 *       'M'                                         → the meta (index.c)
 * Values are little-endian and start with the format version. Every key is written once: a
 * hold's transfer keeps the state it was recorded with (pending), and its post, void or expiry
 * adds the 'R' key, so writing never has to read the index back.
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
#define INDEX_KEY_RESOLUTION 'R'

/* A transfer value: a fixed part, then from, to, hold id, field, metadata and submitter bytes. */
#define TRANSFER_VALUE_STATE 2 /* u8: as recorded; a hold's resolution key tells how it ended */
#define TRANSFER_VALUE_SUBMITTER_LENGTH 12 /* u8: the submitter's name (format 2 on) */
#define TRANSFER_VALUE_CAPTURED 56         /* i64: 0; a post's amount is in its resolution */
#define TRANSFER_VALUE_FIXED 144
#define TRANSFER_VALUE_MAX                                                                         \
    (TRANSFER_VALUE_FIXED + 2 * COFFER_ACCOUNT_ID_MAX + COFFER_TRANSFER_ID_MAX + 64 +              \
     COFFER_METADATA_MAX + COFFER_SUBMITTER_MAX)
#define HISTORY_VALUE_FIXED 48
#define HISTORY_VALUE_MAX (HISTORY_VALUE_FIXED + COFFER_TRANSFER_ID_MAX)
#define HISTORY_KEY_MAX (2 + COFFER_ACCOUNT_ID_MAX + 8 + 1)
#define TRANSFER_KEY_MAX (1 + COFFER_TRANSFER_ID_MAX)
/* A resolution value: u8 format, u8 the hold's new state, 6 zero bytes, i64 a post's amount. */
#define RESOLUTION_VALUE_BYTES 16

/* What one record makes the index do: its puts in seq order, by kind of key. Each callback
 * returns 0 to go on, or a code that stops the derivation and comes back from
 * index_derive_record. */
typedef int (*index_put_fn)(void *context, const uint8_t *key, size_t key_length,
                            const uint8_t *value, size_t value_length);
typedef struct index_sink {
    index_put_fn transfer, history, resolution;
    void *context;
} index_sink;

/* Derives a checked record's writes (nothing for a format-1 record: it has no outcomes).
 * RECORD_OK, a record status when the payload does not parse, or the sink's code. */
int index_derive_record(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                        const index_sink *sink);

size_t index_transfer_key(uint8_t *key, const char *id, size_t id_len);
size_t index_resolution_key(uint8_t *key, const char *hold_id, size_t id_len);
/* The history key of (account, seq, side); after_seq's page starts at side 0 of seq + 1. */
size_t index_history_key(uint8_t *key, const char *account, size_t account_len, uint64_t seq,
                         uint8_t side);

/* Reads packed values back; false for a value that is not one of this format. */
bool index_transfer_unpack(const uint8_t *value, size_t length, index_transfer *out);
/* A hold's transfer (unpacked) after its resolution value: false for a damaged value. */
bool index_resolution_apply(const uint8_t *value, size_t length, coffer_transfer *hold);
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
