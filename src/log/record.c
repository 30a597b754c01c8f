/*
 * record.c — encoding and decoding of log records (format in record.h). The decoder treats
 * its input as hostile: every length is checked against what remains, so a fuzzer can feed it
 * anything.
 */
#include "log/record.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding ------------------------------------------------------------------------------ */

void record_buffer_free(record_buffer *buffer)
{
    free(buffer->bytes);
    memset(buffer, 0, sizeof *buffer);
}

static uint8_t *buffer_grow(record_buffer *out, size_t more)
{
    if (out->failed)
        return 0;
    if (out->length + more > out->capacity) {
        size_t capacity = out->capacity ? out->capacity : 4096;
        while (capacity < out->length + more)
            capacity *= 2;
        uint8_t *grown = realloc(out->bytes, capacity);
        if (!grown) {
            out->failed = true;
            return 0;
        }
        out->bytes = grown;
        out->capacity = capacity;
    }
    uint8_t *at = out->bytes + out->length;
    out->length += more;
    return at;
}

static void put_bytes(record_buffer *out, const void *bytes, size_t length)
{
    uint8_t *at = buffer_grow(out, length);
    if (at && length)
        memcpy(at, bytes, length);
}

/* x86-64 and every platform we build for are little-endian; the format is too. */
static void put_u8(record_buffer *out, uint8_t value)
{
    put_bytes(out, &value, 1);
}

static void put_u16(record_buffer *out, uint16_t value)
{
    put_bytes(out, &value, 2);
}

static void put_u32(record_buffer *out, uint32_t value)
{
    put_bytes(out, &value, 4);
}

static void put_u64(record_buffer *out, uint64_t value)
{
    put_bytes(out, &value, 8);
}

static size_t text_length(const char *text)
{
    return text ? strlen(text) : 0;
}

void record_begin(record_buffer *out, uint64_t seq_base, uint64_t ts0,
                  const uint8_t previous_hash[RECORD_HASH_BYTES])
{
    out->length = 0;
    out->failed = false;
    put_u32(out, RECORD_MAGIC);
    put_u16(out, RECORD_VERSION);
    put_u16(out, 0);
    put_u32(out, 0); /* length, filled by record_finish */
    put_u32(out, 0); /* entries */
    put_u64(out, seq_base);
    put_u64(out, ts0);
    put_u64(out, 0); /* last seq */
    put_bytes(out, previous_hash, RECORD_HASH_BYTES);
}

static void count_entry(record_buffer *out)
{
    if (out->failed)
        return;
    uint32_t entries;
    memcpy(&entries, out->bytes + 12, 4);
    entries++;
    memcpy(out->bytes + 12, &entries, 4);
}

/* Events reaching the log were validated by the core, so every length fits its field. */
static void put_event(record_buffer *out, const coffer_event *e)
{
    size_t id_len = text_length(e->id);
    put_u8(out, e->op);
    put_u8(out, e->flags);
    put_u8(out, (uint8_t)id_len);
    put_u16(out, (uint16_t)e->metadata_len);
    const char *first = 0, *second = 0;
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        first = e->currency;
        put_u8(out, (uint8_t)text_length(first));
        put_u64(out, (uint64_t)e->min_balance);
        put_u64(out, (uint64_t)e->max_balance);
    } else if (e->op == COFFER_OP_TRANSFER) {
        first = e->from;
        second = e->to;
        put_u8(out, (uint8_t)text_length(first));
        put_u8(out, (uint8_t)text_length(second));
        put_u64(out, (uint64_t)e->amount);
        put_u64(out, e->hold_timeout_ms);
        put_u64(out, e->expect_from_version);
        put_u64(out, e->expect_to_version);
    } else {
        first = e->hold_id;
        put_u8(out, (uint8_t)text_length(first));
        if (e->op == COFFER_OP_POST)
            put_u64(out, (uint64_t)e->amount);
    }
    put_bytes(out, e->id, id_len);
    put_bytes(out, first, text_length(first));
    put_bytes(out, second, text_length(second));
    put_bytes(out, e->metadata, e->metadata_len);
}

void record_add_expire(record_buffer *out, uint64_t seq, const char *hold_id, size_t hold_len)
{
    put_u8(out, RECORD_EXPIRE);
    put_u64(out, seq);
    put_u8(out, (uint8_t)hold_len);
    put_bytes(out, hold_id, hold_len);
    count_entry(out);
}

void record_add_event(record_buffer *out, uint64_t seq, const coffer_event *event)
{
    put_u8(out, RECORD_EVENT);
    put_u64(out, seq);
    put_event(out, event);
    count_entry(out);
}

void record_add_atomic(record_buffer *out, uint64_t seq0, const coffer_event *events, size_t count)
{
    put_u8(out, RECORD_ATOMIC);
    put_u64(out, seq0);
    put_u32(out, (uint32_t)count);
    for (size_t i = 0; i < count; i++)
        put_event(out, &events[i]);
    count_entry(out);
}

bool record_finish(record_buffer *out, uint64_t last_seq, uint8_t hash[RECORD_HASH_BYTES])
{
    buffer_grow(out, RECORD_HASH_BYTES);
    if (out->failed || out->length > RECORD_BYTES_MAX)
        return false;
    uint32_t length = (uint32_t)out->length;
    memcpy(out->bytes + 8, &length, 4);
    memcpy(out->bytes + 32, &last_seq, 8);
    size_t covered = out->length - RECORD_HASH_BYTES;
    crypto_generichash(hash, RECORD_HASH_BYTES, out->bytes, covered, 0, 0);
    memcpy(out->bytes + covered, hash, RECORD_HASH_BYTES);
    return true;
}

/* ---- decoding ------------------------------------------------------------------------------ */

const char *record_status_name(int status)
{
    switch (status) {
    case RECORD_OK:
        return "ok";
    case RECORD_SHORT:
        return "short (torn) record";
    case RECORD_BAD_MAGIC:
        return "no record magic";
    case RECORD_BAD_LENGTH:
        return "record length out of range";
    case RECORD_BAD_HASH:
        return "record hash mismatch";
    case RECORD_BAD_PAYLOAD:
        return "record payload malformed";
    default:
        return "unknown";
    }
}

/* The header fields, without the hash comparison (record_check does both). */
static int read_header(const uint8_t *bytes, size_t available, record_header *header)
{
    if (available < 4)
        return RECORD_SHORT;
    uint32_t magic;
    memcpy(&magic, bytes, 4);
    if (magic != RECORD_MAGIC)
        return RECORD_BAD_MAGIC;
    if (available < RECORD_HEADER_BYTES)
        return RECORD_SHORT;
    uint16_t version;
    memcpy(&version, bytes + 4, 2);
    memcpy(&header->length, bytes + 8, 4);
    if (version != RECORD_VERSION || header->length < RECORD_HEADER_BYTES + RECORD_HASH_BYTES ||
        header->length > RECORD_BYTES_MAX)
        return RECORD_BAD_LENGTH;
    memcpy(&header->entries, bytes + 12, 4);
    memcpy(&header->seq_base, bytes + 16, 8);
    memcpy(&header->ts0, bytes + 24, 8);
    memcpy(&header->last_seq, bytes + 32, 8);
    memcpy(header->previous_hash, bytes + 40, RECORD_HASH_BYTES);
    if (available < header->length)
        return RECORD_SHORT; /* the fixed fields above are filled: a reader may pass over it */
    memcpy(header->hash, bytes + header->length - RECORD_HASH_BYTES, RECORD_HASH_BYTES);
    return RECORD_OK;
}

int record_check(const uint8_t *bytes, size_t available, record_header *header)
{
    int status = read_header(bytes, available, header);
    if (status != RECORD_OK)
        return status;
    uint8_t computed[RECORD_HASH_BYTES];
    crypto_generichash(computed, RECORD_HASH_BYTES, bytes, header->length - RECORD_HASH_BYTES, 0,
                       0);
    if (sodium_memcmp(computed, header->hash, RECORD_HASH_BYTES) != 0)
        return RECORD_BAD_HASH;
    return RECORD_OK;
}

int record_check_fresh(const uint8_t *bytes, size_t length, const uint8_t hash[RECORD_HASH_BYTES],
                       record_header *header)
{
    int status = read_header(bytes, length, header);
    if (status != RECORD_OK)
        return status;
    if (header->length != length || memcmp(header->hash, hash, RECORD_HASH_BYTES) != 0)
        return RECORD_BAD_LENGTH;
    return RECORD_OK;
}

/* A cursor over the payload that refuses to read past its end. */
typedef struct reader {
    const uint8_t *at, *end;
    bool failed;
} reader;

static const uint8_t *take(reader *r, size_t length)
{
    if (r->failed || (size_t)(r->end - r->at) < length) {
        r->failed = true;
        return 0;
    }
    const uint8_t *at = r->at;
    r->at += length;
    return at;
}

static uint64_t take_u64(reader *r)
{
    uint64_t value = 0;
    const uint8_t *at = take(r, 8);
    if (at)
        memcpy(&value, at, 8);
    return value;
}

static uint32_t take_u32(reader *r)
{
    uint32_t value = 0;
    const uint8_t *at = take(r, 4);
    if (at)
        memcpy(&value, at, 4);
    return value;
}

static uint16_t take_u16(reader *r)
{
    uint16_t value = 0;
    const uint8_t *at = take(r, 2);
    if (at)
        memcpy(&value, at, 2);
    return value;
}

static uint8_t take_u8(reader *r)
{
    const uint8_t *at = take(r, 1);
    return at ? *at : 0;
}

/* Copies `length` bytes into the scratch strings as a C string; NULL on overrun. */
static const char *take_string(reader *r, record_scratch *scratch, size_t *used, size_t length)
{
    const uint8_t *bytes = take(r, length);
    if (!bytes || *used + length + 1 > scratch->strings_capacity) {
        r->failed = true;
        return 0;
    }
    char *copy = scratch->strings + *used;
    memcpy(copy, bytes, length);
    copy[length] = 0;
    *used += length + 1;
    return copy;
}

static bool take_event(reader *r, record_scratch *scratch, size_t *used, coffer_event *e)
{
    memset(e, 0, sizeof *e);
    e->op = take_u8(r);
    e->flags = take_u8(r);
    size_t id_len = take_u8(r);
    e->metadata_len = take_u16(r);
    size_t first_len = 0, second_len = 0;
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        first_len = take_u8(r);
        e->min_balance = (int64_t)take_u64(r);
        e->max_balance = (int64_t)take_u64(r);
    } else if (e->op == COFFER_OP_TRANSFER) {
        first_len = take_u8(r);
        second_len = take_u8(r);
        e->amount = (int64_t)take_u64(r);
        e->hold_timeout_ms = take_u64(r);
        e->expect_from_version = take_u64(r);
        e->expect_to_version = take_u64(r);
    } else if (e->op == COFFER_OP_POST || e->op == COFFER_OP_VOID) {
        first_len = take_u8(r);
        if (e->op == COFFER_OP_POST)
            e->amount = (int64_t)take_u64(r);
    } else {
        return false;
    }
    if (e->metadata_len > COFFER_METADATA_MAX)
        return false;
    e->id = take_string(r, scratch, used, id_len);
    const char *first = take_string(r, scratch, used, first_len);
    const char *second =
        e->op == COFFER_OP_TRANSFER ? take_string(r, scratch, used, second_len) : 0;
    e->metadata = e->metadata_len ? take_string(r, scratch, used, e->metadata_len) : 0;
    if (e->op == COFFER_OP_CREATE_ACCOUNT)
        e->currency = first;
    if (e->op == COFFER_OP_TRANSFER) {
        e->from = first;
        e->to = second;
    }
    if (e->op == COFFER_OP_POST || e->op == COFFER_OP_VOID)
        e->hold_id = first;
    return !r->failed;
}

void record_scratch_free(record_scratch *scratch)
{
    free(scratch->events);
    free(scratch->strings);
    memset(scratch, 0, sizeof *scratch);
}

/* Every string of a record is shorter than the record, and every event takes at least 8 of
 * its bytes, so these bounds make the decoder allocation-free after one reserve. */
static bool scratch_reserve(record_scratch *scratch, size_t record_length)
{
    size_t events = record_length / 8 + 1, strings = 2 * record_length + 64;
    if (events > scratch->events_capacity) {
        coffer_event *grown = realloc(scratch->events, events * sizeof *grown);
        if (!grown)
            return false;
        scratch->events = grown;
        scratch->events_capacity = events;
    }
    if (strings > scratch->strings_capacity) {
        char *grown = realloc(scratch->strings, strings);
        if (!grown)
            return false;
        scratch->strings = grown;
        scratch->strings_capacity = strings;
    }
    return true;
}

/* Parses one entry into *entry (strings copied into the scratch space). */
static int parse_entry(reader *r, record_scratch *scratch, record_entry *entry)
{
    size_t used = 0;
    memset(entry, 0, sizeof *entry);
    entry->kind = take_u8(r);
    entry->seq = take_u64(r);
    if (entry->kind == RECORD_EXPIRE) {
        size_t length = take_u8(r);
        entry->hold_id = take_string(r, scratch, &used, length);
        entry->count = 1;
    } else if (entry->kind == RECORD_EVENT) {
        entry->count = 1;
        entry->events = scratch->events;
        if (!take_event(r, scratch, &used, &scratch->events[0]))
            return RECORD_BAD_PAYLOAD;
    } else if (entry->kind == RECORD_ATOMIC) {
        entry->count = take_u32(r);
        if (entry->count == 0 || entry->count > COFFER_BATCH_EVENTS_MAX ||
            entry->count > scratch->events_capacity)
            return RECORD_BAD_PAYLOAD;
        entry->events = scratch->events;
        for (size_t i = 0; i < entry->count; i++)
            if (!take_event(r, scratch, &used, &scratch->events[i]))
                return RECORD_BAD_PAYLOAD;
    } else {
        return RECORD_BAD_PAYLOAD;
    }
    return r->failed ? RECORD_BAD_PAYLOAD : RECORD_OK;
}

int record_each(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                record_visit_fn visit, void *context)
{
    if (!scratch_reserve(scratch, header->length))
        return RECORD_BAD_PAYLOAD;
    reader r = {bytes + RECORD_HEADER_BYTES, bytes + header->length - RECORD_HASH_BYTES, false};
    uint64_t next_seq = header->seq_base; /* seqs rise through the record, within its range */
    for (uint32_t i = 0; i < header->entries; i++) {
        record_entry entry = {0};
        int status = parse_entry(&r, scratch, &entry);
        if (status != RECORD_OK)
            return status;
        if (entry.seq < next_seq || entry.seq > header->last_seq ||
            entry.count - 1 > header->last_seq - entry.seq)
            return RECORD_BAD_PAYLOAD;
        next_seq = entry.seq + entry.count;
        if (visit) {
            status = visit(&entry, context);
            if (status != 0)
                return status;
        }
    }
    return r.at == r.end ? RECORD_OK : RECORD_BAD_PAYLOAD;
}

int record_peek(const uint8_t *bytes, size_t available, record_header *header)
{
    return read_header(bytes, available, header);
}
