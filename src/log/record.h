/*
 * record.h — the binary format of one log record: a batch's recorded events with their seq,
 * the batch's base timestamp, the previous record's hash and its own (BLAKE2b-256), so the log
 * is a tamper-evident chain. Encoding and decoding are pure functions (fuzzed).
 *
 * Layout, little-endian:
 *   0  u32 magic "CFR1"      4  u16 format version   6  u16 reserved (0)
 *   8  u32 length (whole record, hash included)       12 u32 entries
 *  16  u64 seq_base (the batch's first seq)           24 u64 ts0 (timestamp of seq_base)
 *  32  u64 last seq in the record                     40 u8[32] previous record's hash
 *  72  entries ...                                    length-32: u8[32] BLAKE2b-256 of [0,
 * length-32) An event's timestamp is ts0 + (seq - seq_base).
 *
 * Entries: u8 kind, then
 *   RECORD_EXPIRE: u64 seq, u8 hold id length, hold id
 *   RECORD_EVENT:  u64 seq, event               (an event applied on its own)
 *   RECORD_ATOMIC: u64 seq0, u32 count, count events (an atomic submission, whole)
 * Event: u8 op, u8 flags, u8 id_len, u16 metadata_len, then by op
 *   account:  u8 currency_len, i64 min_balance, i64 max_balance
 *   transfer: u8 from_len, u8 to_len, i64 amount, u64 timeout_ms, u64 expect_from, u64 expect_to
 *   post:     u8 hold_len, i64 amount        void: u8 hold_len
 * followed by the strings (id, currency | from, to | hold) and the metadata.
 */
#ifndef COFFER_LOG_RECORD_H
#define COFFER_LOG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"

#define RECORD_MAGIC 0x31524643u /* "CFR1" */
#define RECORD_VERSION 1
#define RECORD_HEADER_BYTES 72
#define RECORD_HASH_BYTES 32
/* A batch holds at most 8190 submitted events plus expiries; with the largest events (ids,
 * metadata at their limits) that is about 10 MiB. Records beyond this are refused as corrupt. */
#define RECORD_BYTES_MAX (64u << 20)

enum record_kind { RECORD_EXPIRE = 1, RECORD_EVENT = 2, RECORD_ATOMIC = 3 };

typedef struct record_header {
    uint32_t length;
    uint32_t entries;
    uint64_t seq_base;
    uint64_t ts0;
    uint64_t last_seq;
    uint8_t previous_hash[RECORD_HASH_BYTES];
    uint8_t hash[RECORD_HASH_BYTES];
} record_header;

/* A growable output buffer for encoding. */
typedef struct record_buffer {
    uint8_t *bytes;
    size_t length, capacity;
    bool failed; /* an allocation failed; the buffer is unusable */
} record_buffer;

void record_buffer_free(record_buffer *buffer);

/* Encoding, in order: begin, then entries, then finish (which fills length, hash). */
void record_begin(record_buffer *out, uint64_t seq_base, uint64_t ts0,
                  const uint8_t previous_hash[RECORD_HASH_BYTES]);
void record_add_expire(record_buffer *out, uint64_t seq, const char *hold_id, size_t hold_len);
void record_add_event(record_buffer *out, uint64_t seq, const coffer_event *event);
void record_add_atomic(record_buffer *out, uint64_t seq0, const coffer_event *events, size_t count);
/* Completes the record; last_seq is the highest seq it holds. Writes the hash to `hash`. */
bool record_finish(record_buffer *out, uint64_t last_seq, uint8_t hash[RECORD_HASH_BYTES]);

/* Outcomes of reading a record from bytes. */
enum record_status {
    RECORD_OK = 0,
    RECORD_SHORT,       /* fewer bytes than the header or the length says: maybe torn */
    RECORD_BAD_MAGIC,   /* not a record start */
    RECORD_BAD_LENGTH,  /* length outside the limits */
    RECORD_BAD_HASH,    /* the bytes do not match their hash: torn or corrupt */
    RECORD_BAD_PAYLOAD, /* hash fine but the entries do not parse: a bug or tampering */
};

const char *record_status_name(int status);

/* Checks the header and hash of the record at bytes[0..available) and fills *header.
 * Does not parse the entries (record_each does). */
int record_check(const uint8_t *bytes, size_t available, record_header *header);
/* Reads the header of the record at bytes[0..available) without checking its hash: its
 * length, seqs and both hashes, for a reader that only passes over it. RECORD_OK, or what the
 * header gets wrong, or RECORD_SHORT when fewer than `length` bytes are there (with at least
 * RECORD_HEADER_BYTES, every field but `hash` is filled then). */
int record_peek(const uint8_t *bytes, size_t available, record_header *header);
/* For a record just finished with `hash`: checks the header reads back (length, hash in place)
 * without hashing again, for the pair check before writing. */
int record_check_fresh(const uint8_t *bytes, size_t length, const uint8_t hash[RECORD_HASH_BYTES],
                       record_header *header);

/* One decoded entry. Strings point into the record bytes and are NOT NUL-terminated; the
 * decoder copies them into `names` so the events can be passed to the core as C strings. */
typedef struct record_entry {
    uint8_t kind;
    uint64_t seq;
    size_t count;         /* events in `events` */
    coffer_event *events; /* RECORD_EVENT: one; RECORD_ATOMIC: count */
    const char *hold_id;  /* RECORD_EXPIRE */
    /* Format 2: each event's outcome (count of them; one for RECORD_EXPIRE, whose event is the
     * expiry itself), result.seq 0 for an event that recorded nothing; NULL in a format 1
     * record. */
    coffer_result *results;
    const char *submitted_by; /* format 2: the submitter's name, or NULL */
} record_entry;

/* Scratch space for decoding: holds the events and NUL-terminated copies of strings. */
typedef struct record_scratch {
    coffer_event *events;
    size_t events_capacity;
    char *strings;
    size_t strings_capacity;
} record_scratch;

void record_scratch_free(record_scratch *scratch);

/* Calls visit() for each entry of a checked record, in order. Returns RECORD_OK, the status of
 * a malformed payload, or the first non-zero value visit() returns, as it is. */
typedef int (*record_visit_fn)(const record_entry *entry, void *context);
int record_each(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                record_visit_fn visit, void *context);

#endif
