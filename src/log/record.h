/*
 * record.h — the binary format of one log record: a batch's recorded events with their seq and
 * what each did (its outcome), who submitted them, the batch's base timestamp, the previous
 * record's hash and its own (BLAKE2b-256), so the log is a tamper-evident chain that readers
 * (recovery, verify, dump, the change feed) understand without the engine's memory. Encoding
 * and decoding are pure functions (fuzzed).
 *
 * Layout, little-endian:
 *   0  u32 magic "CFR1"      4  u16 format version   6  u16 reserved (0)
 *   8  u32 length (whole record, hash included)       12 u32 entries
 *  16  u64 seq_base (the batch's first seq)           24 u64 ts0 (timestamp of seq_base)
 *  32  u64 last seq in the record                     40 u8[32] previous record's hash
 *  72  entries ...                                    length-32: u8[32] BLAKE2b-256 of [0,
 * length-32) An event's timestamp is ts0 + (seq - seq_base).
 *
 * Entries (format 2; format 1, written before, has no submitter, outcome or RECORD_SUBMITTER):
 *   RECORD_SUBMITTER: u8 kind, u8 index (1..255), u8 length (1..COFFER_SUBMITTER_MAX), name:
 *                     the index stands for the name in the entries after it (until declared
 *                     again). Counted in `entries`; not handed to the visitor.
 *   RECORD_EXPIRE: u8 kind, u64 seq, u8 hold id length, hold id, outcome
 *   RECORD_EVENT:  u8 kind, u64 seq, u8 submitter, event, outcome  (an event applied alone)
 *   RECORD_ATOMIC: u8 kind, u64 seq0, u8 submitter, u32 count, count x (event, outcome)
 *                  (an atomic submission whole: its positions that recorded nothing too)
 * A submitter of 0 is none.
 * Event: u8 op, u8 flags, u8 id_len, u16 metadata_len, then by op
 *   account:  u8 currency_len, i64 min_balance, i64 max_balance
 *   transfer: u8 from_len, u8 to_len, i64 amount, u64 timeout_ms, u64 expect_from, u64 expect_to
 *   post:     u8 hold_len, i64 amount        void: u8 hold_len
 * followed by the strings (id, currency | from, to | hold) and the metadata.
 * Outcome: varint flags (OUTCOME_*), u8 code, u8 state, then the fields the flags name, in the
 * order of the flags: zigzag varint amount; varint expires_at; from and to after the event
 * (each zigzag balance, zigzag balance - available, varint version); the hold's accounts (u8
 * from_len, u8 to_len, the ids); zigzag available and varint actual_version (rejections); u8 length
 * and the field's JSON pointer. A recorded outcome's seq is the event's, its timestamp the event's;
 * one that recorded nothing (a position of a failed atomic batch) has neither. Varints are LEB128,
 * at most 10 bytes; zigzag maps signed to unsigned (0, -1, 1, -2, ...).
 */
#ifndef COFFER_LOG_RECORD_H
#define COFFER_LOG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"

#define RECORD_MAGIC 0x31524643u /* "CFR1" */
/* The format written; every format from 1 up to it is read. */
#define RECORD_VERSION 2
#define RECORD_HEADER_BYTES 72
#define RECORD_HASH_BYTES 32
/* A batch holds at most 8190 submitted events plus expiries; with the largest events (ids,
 * metadata at their limits) that is about 10 MiB. Records beyond this are refused as corrupt. */
#define RECORD_BYTES_MAX (64u << 20)

enum record_kind {
    RECORD_EXPIRE = 1,
    RECORD_EVENT = 2,
    RECORD_ATOMIC = 3,
    RECORD_SUBMITTER = 4, /* format 2 */
};

/* Which optional fields an outcome carries; what is absent reads as 0 (or an empty string). */
enum record_outcome_flag {
    OUTCOME_RECORDED = 0x001,       /* result.seq != 0: the event took its seq */
    OUTCOME_AMOUNT = 0x002,         /* moved, held, captured or released */
    OUTCOME_EXPIRES = 0x004,        /* a hold's expires_at */
    OUTCOME_FROM = 0x008,           /* from's after-state: not for a rejection */
    OUTCOME_TO = 0x010,             /* to's after-state: not for a rejection */
    OUTCOME_HOLD_ACCOUNTS = 0x020,  /* post, void, expiry: the hold's from and to ids */
    OUTCOME_AVAILABLE = 0x040,      /* insufficient_balance: what from had available */
    OUTCOME_ACTUAL_VERSION = 0x080, /* version_mismatch */
    OUTCOME_FIELD = 0x100,          /* the JSON pointer of a rejection */
    OUTCOME_FLAGS_ALL = 0x1ff,
};

/* Submitters one record can name at a time (the u8 index, 0 being none). */
#define RECORD_SUBMITTERS_MAX 255

typedef struct record_header {
    uint16_t version; /* 1 or 2 */
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
    /* The submitters declared in the record being built: submitters[i] is index i + 1. */
    const char *submitters[RECORD_SUBMITTERS_MAX];
    size_t submitters_count;
    size_t submitters_replaced; /* past RECORD_SUBMITTERS_MAX names, slots are reused in turn */
} record_buffer;

void record_buffer_free(record_buffer *buffer);

/* Encoding, in order: begin, then entries, then finish (which fills length, hash). Each event
 * is written with its outcome (the result the core gave it); `submitted_by` is a name of at
 * most COFFER_SUBMITTER_MAX bytes, or NULL / "" for none (declared once per record: the
 * string must stay as it is until record_finish). */
void record_begin(record_buffer *out, uint64_t seq_base, uint64_t ts0,
                  const uint8_t previous_hash[RECORD_HASH_BYTES]);
void record_add_expire(record_buffer *out, uint64_t seq, const char *hold_id, size_t hold_len,
                       const coffer_result *outcome);
void record_add_event(record_buffer *out, uint64_t seq, const coffer_event *event,
                      const coffer_result *outcome, const char *submitted_by);
void record_add_atomic(record_buffer *out, uint64_t seq0, const coffer_event *events,
                       const coffer_result *outcomes, size_t count, const char *submitted_by);
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

/* Scratch space for decoding: holds the events, their outcomes and NUL-terminated copies of
 * strings. */
typedef struct record_scratch {
    coffer_event *events;
    size_t events_capacity;
    coffer_result *results;
    size_t results_capacity;
    char *strings;
    size_t strings_capacity;
} record_scratch;

void record_scratch_free(record_scratch *scratch);

/* Calls visit() for each entry of a checked record, in order. What every entry points to (its
 * events, outcomes and strings) stays valid until the next call with the same scratch, so a
 * caller may keep a record's entries and go back to them. Returns RECORD_OK, the status of
 * a malformed payload, or the first non-zero value visit() returns, as it is. */
typedef int (*record_visit_fn)(const record_entry *entry, void *context);
int record_each(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                record_visit_fn visit, void *context);

/* Compares an outcome read from a record with the one the core computes for the same event
 * again, on what the format keeps (a rejection's after-states are not kept, so they do not
 * count). NULL when they agree, else the name of the first field that differs. */
const char *record_outcome_difference(const coffer_result *recorded, const coffer_result *computed);

#endif
