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

/* LEB128: small values (versions, most amounts and balances) take one to three bytes. */
static void put_varint(record_buffer *out, uint64_t value)
{
    uint8_t bytes[10];
    size_t length = 0;
    do {
        bytes[length] = (uint8_t)(value & 0x7f);
        value >>= 7;
        bytes[length] |= value ? 0x80 : 0;
        length++;
    } while (value);
    put_bytes(out, bytes, length);
}

/* Signed values near zero, either side, stay short: 0, -1, 1, -2, 2 ... */
static uint64_t zigzag(int64_t value)
{
    return ((uint64_t)value << 1) ^ (0 - ((uint64_t)value >> 63));
}

static int64_t unzigzag(uint64_t value)
{
    return (int64_t)((value >> 1) ^ (0 - (value & 1)));
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
    out->submitters_count = 0;
    out->submitters_replaced = 0;
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

/* The index of a submitter in this record, declaring it first when it is new here (0: none).
 * Names are compared by address first: one request's events share one string. */
static uint8_t submitter_index(record_buffer *out, const char *name)
{
    size_t length = name ? strnlen(name, COFFER_SUBMITTER_MAX + 1) : 0;
    if (length == 0)
        return 0;
    if (length > COFFER_SUBMITTER_MAX)
        length = COFFER_SUBMITTER_MAX; /* the engine refuses longer names before they get here */
    for (size_t i = 0; i < out->submitters_count; i++)
        if (out->submitters[i] == name)
            return (uint8_t)(i + 1);
    for (size_t i = 0; i < out->submitters_count; i++)
        if (strncmp(out->submitters[i], name, COFFER_SUBMITTER_MAX) == 0 &&
            strnlen(out->submitters[i], COFFER_SUBMITTER_MAX + 1) == length)
            return (uint8_t)(i + 1);
    size_t slot = out->submitters_count;
    if (slot < RECORD_SUBMITTERS_MAX)
        out->submitters_count++;
    else
        slot = out->submitters_replaced++ % RECORD_SUBMITTERS_MAX; /* declared again below */
    out->submitters[slot] = name;
    put_u8(out, RECORD_SUBMITTER);
    put_u8(out, (uint8_t)(slot + 1));
    put_u8(out, (uint8_t)length);
    put_bytes(out, name, length);
    count_entry(out);
    return (uint8_t)(slot + 1);
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

static bool after_is_zero(const coffer_account_after *after)
{
    return after->balance == 0 && after->available == 0 && after->version == 0;
}

/* The fields of a result the format keeps. A rejection changed no account, so its
 * after-states (the accounts as the core found them) are not kept. */
static unsigned outcome_flags(const coffer_result *r)
{
    bool changed = r->state != COFFER_STATE_REJECTED;
    unsigned flags = 0;
    flags |= r->seq != 0 && !r->replayed ? OUTCOME_RECORDED : 0;
    flags |= r->amount != 0 ? OUTCOME_AMOUNT : 0;
    flags |= r->expires_at != 0 ? OUTCOME_EXPIRES : 0;
    flags |= changed && !after_is_zero(&r->from) ? OUTCOME_FROM : 0;
    flags |= changed && !after_is_zero(&r->to) ? OUTCOME_TO : 0;
    flags |= r->hold_from[0] || r->hold_to[0] ? OUTCOME_HOLD_ACCOUNTS : 0;
    flags |= r->available != 0 ? OUTCOME_AVAILABLE : 0;
    flags |= r->actual_version != 0 ? OUTCOME_ACTUAL_VERSION : 0;
    flags |= r->field && r->field[0] ? OUTCOME_FIELD : 0;
    return flags;
}

/* available is written as what it lacks of the balance (the held amount): one byte for an
 * account without holds. Wrapping arithmetic keeps any pair of values exact. */
static void put_after(record_buffer *out, const coffer_account_after *after)
{
    put_varint(out, zigzag(after->balance));
    put_varint(out, zigzag((int64_t)((uint64_t)after->balance - (uint64_t)after->available)));
    put_varint(out, after->version);
}

static void put_outcome(record_buffer *out, const coffer_result *r)
{
    unsigned flags = outcome_flags(r);
    put_varint(out, flags);
    put_u8(out, (uint8_t)r->code);
    put_u8(out, r->state);
    if (flags & OUTCOME_AMOUNT)
        put_varint(out, zigzag(r->amount));
    if (flags & OUTCOME_EXPIRES)
        put_varint(out, r->expires_at);
    if (flags & OUTCOME_FROM)
        put_after(out, &r->from);
    if (flags & OUTCOME_TO)
        put_after(out, &r->to);
    if (flags & OUTCOME_HOLD_ACCOUNTS) {
        size_t from_len = strnlen(r->hold_from, COFFER_ACCOUNT_ID_MAX);
        size_t to_len = strnlen(r->hold_to, COFFER_ACCOUNT_ID_MAX);
        put_u8(out, (uint8_t)from_len);
        put_u8(out, (uint8_t)to_len);
        put_bytes(out, r->hold_from, from_len);
        put_bytes(out, r->hold_to, to_len);
    }
    if (flags & OUTCOME_AVAILABLE)
        put_varint(out, zigzag(r->available));
    if (flags & OUTCOME_ACTUAL_VERSION)
        put_varint(out, r->actual_version);
    if (flags & OUTCOME_FIELD) {
        size_t length = strnlen(r->field, UINT8_MAX);
        put_u8(out, (uint8_t)length);
        put_bytes(out, r->field, length);
    }
}

void record_add_expire(record_buffer *out, uint64_t seq, const char *hold_id, size_t hold_len,
                       const coffer_result *outcome)
{
    put_u8(out, RECORD_EXPIRE);
    put_u64(out, seq);
    put_u8(out, (uint8_t)hold_len);
    put_bytes(out, hold_id, hold_len);
    put_outcome(out, outcome);
    count_entry(out);
}

void record_add_event(record_buffer *out, uint64_t seq, const coffer_event *event,
                      const coffer_result *outcome, const char *submitted_by)
{
    uint8_t submitter = submitter_index(out, submitted_by);
    put_u8(out, RECORD_EVENT);
    put_u64(out, seq);
    put_u8(out, submitter);
    put_event(out, event);
    put_outcome(out, outcome);
    count_entry(out);
}

void record_add_atomic(record_buffer *out, uint64_t seq0, const coffer_event *events,
                       const coffer_result *outcomes, size_t count, const char *submitted_by)
{
    uint8_t submitter = submitter_index(out, submitted_by);
    put_u8(out, RECORD_ATOMIC);
    put_u64(out, seq0);
    put_u8(out, submitter);
    put_u32(out, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        put_event(out, &events[i]);
        put_outcome(out, &outcomes[i]);
    }
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
    memcpy(&header->version, bytes + 4, 2);
    memcpy(&header->length, bytes + 8, 4);
    if (header->version < 1 || header->version > RECORD_VERSION ||
        header->length < RECORD_HEADER_BYTES + RECORD_HASH_BYTES ||
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

static uint64_t take_varint(reader *r)
{
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t byte = take_u8(r);
        if (shift == 63 && byte > 1)
            break; /* more than 64 bits */
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return value;
    }
    r->failed = true;
    return 0;
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

static coffer_account_after take_after(reader *r)
{
    coffer_account_after after;
    after.balance = unzigzag(take_varint(r));
    uint64_t held = (uint64_t)unzigzag(take_varint(r));
    after.available = (int64_t)((uint64_t)after.balance - held);
    after.version = take_varint(r);
    return after;
}

/* An account id into a result's fixed array. */
static void take_account_id(reader *r, size_t length, char out[COFFER_ACCOUNT_ID_MAX + 1])
{
    const uint8_t *bytes = length <= COFFER_ACCOUNT_ID_MAX ? take(r, length) : 0;
    if (!bytes) {
        r->failed = true;
        return;
    }
    memcpy(out, bytes, length);
    out[length] = 0;
}

/* One outcome (format 2). result->seq is 1 for "recorded" until the caller knows the seq. */
static bool take_outcome(reader *r, record_scratch *scratch, size_t *used, coffer_result *result)
{
    memset(result, 0, sizeof *result);
    uint64_t flags = take_varint(r);
    if (flags & ~(uint64_t)OUTCOME_FLAGS_ALL)
        return false;
    result->code = take_u8(r);
    result->state = take_u8(r);
    result->seq = (flags & OUTCOME_RECORDED) ? 1 : 0;
    if (result->state == COFFER_STATE_REJECTED && (flags & (OUTCOME_FROM | OUTCOME_TO)))
        return false; /* a rejection changed no account */
    if (flags & OUTCOME_AMOUNT)
        result->amount = unzigzag(take_varint(r));
    if (flags & OUTCOME_EXPIRES)
        result->expires_at = take_varint(r);
    if (flags & OUTCOME_FROM)
        result->from = take_after(r);
    if (flags & OUTCOME_TO)
        result->to = take_after(r);
    if (flags & OUTCOME_HOLD_ACCOUNTS) {
        size_t from_len = take_u8(r), to_len = take_u8(r);
        take_account_id(r, from_len, result->hold_from);
        take_account_id(r, to_len, result->hold_to);
    }
    if (flags & OUTCOME_AVAILABLE)
        result->available = unzigzag(take_varint(r));
    if (flags & OUTCOME_ACTUAL_VERSION)
        result->actual_version = take_varint(r);
    if (flags & OUTCOME_FIELD)
        result->field = take_string(r, scratch, used, take_u8(r));
    return !r->failed;
}

void record_scratch_free(record_scratch *scratch)
{
    free(scratch->results);
    free(scratch->events);
    free(scratch->strings);
    memset(scratch, 0, sizeof *scratch);
}

/* A record's events all stay decoded until the next record (an entry's events and outcomes
 * follow the previous entry's, and each string is copied once). Every event has its own seq in
 * the record's range and takes at least 8 of its bytes; every string is shorter than the
 * record: so these bounds make the decoder allocation-free after one reserve. */
static bool scratch_reserve(record_scratch *scratch, const record_header *header)
{
    size_t record_length = header->length;
    uint64_t span =
        header->last_seq >= header->seq_base ? header->last_seq - header->seq_base + 1 : 1;
    size_t events = record_length / 8 + 1, strings = 2 * record_length + 64;
    if (span < events)
        events = (size_t)span;
    if (events > scratch->events_capacity) {
        coffer_event *grown = realloc(scratch->events, events * sizeof *grown);
        if (!grown)
            return false;
        scratch->events = grown;
        scratch->events_capacity = events;
    }
    /* One outcome per event. */
    size_t results = events;
    if (results > scratch->results_capacity) {
        coffer_result *grown = realloc(scratch->results, results * sizeof *grown);
        if (!grown)
            return false;
        scratch->results = grown;
        scratch->results_capacity = results;
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

/* What a record's entries share while they are decoded: the format and the submitters
 * declared so far (their names point into the record; index 0 is none). */
typedef struct entry_context {
    const record_header *header;
    record_scratch *scratch;
    size_t strings_used, events_used, results_used;    /* by the entries decoded so far */
    const char *submitters[RECORD_SUBMITTERS_MAX + 1]; /* copies in the scratch strings */
} entry_context;

/* RECORD_SUBMITTER: declares (or declares again) what an index stands for. */
static int take_submitter(reader *r, entry_context *context)
{
    uint8_t index = take_u8(r), length = take_u8(r);
    if (index == 0 || length == 0 || length > COFFER_SUBMITTER_MAX)
        return RECORD_BAD_PAYLOAD;
    context->submitters[index] = take_string(r, context->scratch, &context->strings_used, length);
    return context->submitters[index] ? RECORD_OK : RECORD_BAD_PAYLOAD;
}

/* A format 2 entry's submitter index: the name declared for it. */
static bool take_submitted_by(reader *r, entry_context *context, record_entry *entry)
{
    uint8_t index = take_u8(r);
    if (index == 0)
        return true;
    entry->submitted_by = context->submitters[index];
    return entry->submitted_by != 0;
}

/* The events (and in format 2 their outcomes) of a RECORD_EVENT or RECORD_ATOMIC entry. */
static int take_events(reader *r, entry_context *context, record_entry *entry)
{
    record_scratch *scratch = context->scratch;
    size_t *used = &context->strings_used;
    bool outcomes = context->header->version >= 2;
    if (outcomes && !take_submitted_by(r, context, entry))
        return RECORD_BAD_PAYLOAD;
    entry->count = entry->kind == RECORD_ATOMIC ? take_u32(r) : 1;
    if (entry->count == 0 || entry->count > COFFER_BATCH_EVENTS_MAX ||
        entry->count > scratch->events_capacity - context->events_used ||
        (outcomes && entry->count > scratch->results_capacity - context->results_used))
        return RECORD_BAD_PAYLOAD;
    entry->events = scratch->events + context->events_used;
    entry->results = outcomes ? scratch->results + context->results_used : 0;
    context->events_used += entry->count;
    context->results_used += outcomes ? entry->count : 0;
    for (size_t i = 0; i < entry->count; i++) {
        if (!take_event(r, scratch, used, &entry->events[i]))
            return RECORD_BAD_PAYLOAD;
        if (outcomes && !take_outcome(r, scratch, used, &entry->results[i]))
            return RECORD_BAD_PAYLOAD;
    }
    return RECORD_OK;
}

/* Parses one entry into *entry (strings copied into the scratch space). A RECORD_SUBMITTER
 * entry only updates the context. */
static int parse_entry(reader *r, entry_context *context, record_entry *entry)
{
    memset(entry, 0, sizeof *entry);
    entry->kind = take_u8(r);
    bool outcomes = context->header->version >= 2;
    if (entry->kind == RECORD_SUBMITTER && outcomes)
        return take_submitter(r, context);
    entry->seq = take_u64(r);
    if (entry->kind == RECORD_EXPIRE) {
        size_t length = take_u8(r);
        entry->hold_id = take_string(r, context->scratch, &context->strings_used, length);
        entry->count = 1;
        if (outcomes) {
            if (context->results_used == context->scratch->results_capacity)
                return RECORD_BAD_PAYLOAD;
            entry->results = context->scratch->results + context->results_used++;
            if (!take_outcome(r, context->scratch, &context->strings_used, &entry->results[0]))
                return RECORD_BAD_PAYLOAD;
        }
    } else if (entry->kind == RECORD_EVENT || entry->kind == RECORD_ATOMIC) {
        int status = take_events(r, context, entry);
        if (status != RECORD_OK)
            return status;
    } else {
        return RECORD_BAD_PAYLOAD;
    }
    return r->failed ? RECORD_BAD_PAYLOAD : RECORD_OK;
}

/* Gives recorded outcomes their seq and timestamp (the entry's seq is checked by then). Only
 * an atomic batch has positions that recorded nothing, and not all of them. */
static bool outcomes_stamp(const record_header *header, record_entry *entry)
{
    if (!entry->results)
        return true;
    size_t recorded = 0;
    for (size_t i = 0; i < entry->count; i++) {
        coffer_result *result = &entry->results[i];
        if (result->seq == 0)
            continue;
        result->seq = entry->seq + i;
        result->timestamp = header->ts0 + (result->seq - header->seq_base);
        if (result->seq == 0)
            return false;
        recorded++;
    }
    return recorded == entry->count || (entry->kind == RECORD_ATOMIC && recorded > 0);
}

int record_each(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                record_visit_fn visit, void *context)
{
    if (!scratch_reserve(scratch, header))
        return RECORD_BAD_PAYLOAD;
    reader r = {bytes + RECORD_HEADER_BYTES, bytes + header->length - RECORD_HASH_BYTES, false};
    entry_context entries = {.header = header, .scratch = scratch};
    uint64_t next_seq = header->seq_base; /* seqs rise through the record, within its range */
    for (uint32_t i = 0; i < header->entries; i++) {
        record_entry entry = {0};
        int status = parse_entry(&r, &entries, &entry);
        if (status != RECORD_OK)
            return status;
        if (entry.kind == RECORD_SUBMITTER)
            continue;
        if (entry.seq == 0 || entry.seq < next_seq || entry.seq > header->last_seq ||
            entry.count - 1 > header->last_seq - entry.seq || !outcomes_stamp(header, &entry))
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

/* ---- comparing outcomes -------------------------------------------------------------------- */

static bool after_equal(const coffer_account_after *a, const coffer_account_after *b)
{
    return a->balance == b->balance && a->available == b->available && a->version == b->version;
}

static const coffer_account_after no_after = {0, 0, 0};

const char *record_outcome_difference(const coffer_result *recorded, const coffer_result *computed)
{
    unsigned kept = outcome_flags(computed);
    if ((recorded->seq != 0) != ((kept & OUTCOME_RECORDED) != 0))
        return "recorded";
    if (recorded->code != computed->code)
        return "code";
    if (recorded->state != computed->state)
        return "state";
    if (recorded->amount != computed->amount)
        return "amount";
    if (recorded->expires_at != computed->expires_at)
        return "expires_at";
    if (!after_equal(&recorded->from, (kept & OUTCOME_FROM) ? &computed->from : &no_after))
        return "from";
    if (!after_equal(&recorded->to, (kept & OUTCOME_TO) ? &computed->to : &no_after))
        return "to";
    if (strncmp(recorded->hold_from, computed->hold_from, sizeof recorded->hold_from) != 0 ||
        strncmp(recorded->hold_to, computed->hold_to, sizeof recorded->hold_to) != 0)
        return "hold accounts";
    if (recorded->available != computed->available)
        return "available";
    if (recorded->actual_version != computed->actual_version)
        return "actual_version";
    const char *field = (kept & OUTCOME_FIELD) ? computed->field : "";
    if (strcmp(recorded->field ? recorded->field : "", field) != 0)
        return "field";
    return 0;
}

int record_peek(const uint8_t *bytes, size_t available, record_header *header)
{
    return read_header(bytes, available, header);
}
