/*
 * fuzz_record.c — the log record decoder (log/record.h) against hostile bytes. Each input is
 * tried twice: as a whole record (record_check, then record_each when the hash matches), and
 * as the payload of a record built around it with a correct hash (once for each format), so
 * the entry parser is reached on every input. Every decoded entry is encoded again (in the
 * current format) and must decode the same: its events, and its outcomes and submitter when
 * the record had them.
 *
 * Payload inputs: u8 entries, u64 seq_base, u64 last_seq (little-endian), then the entries.
 * With clang this is a libFuzzer target. Built with FUZZ_DRIVER (gcc) it has a main() that
 * runs each file of the given corpus directories, each also with every bit flipped and every
 * truncation; `fuzz_record --write-seeds DIR` writes the checked-in seed corpus.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "log/record.h"

#define PAYLOAD_PREFIX_BYTES 17 /* entries, seq_base, last_seq */

#define FUZZ_CHECK(condition)                                                                      \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            fprintf(stderr, "fuzz_record: check failed: %s (%s:%d)\n", #condition, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reused across inputs: reachable, so never reported as leaks. */
static record_scratch scratch, scratch_again;
static record_buffer encoded;
static coffer_result no_outcomes[COFFER_BATCH_EVENTS_MAX]; /* a format 1 entry, written again */

typedef struct walk {
    const record_header *header;
    uint64_t next_seq; /* entries must rise through the record */
    uint64_t checksum; /* every field goes in, so none can be skipped */
} walk;

static size_t text_length(const char *text)
{
    return text ? strlen(text) : 0;
}

static void touch_event(walk *w, const coffer_event *e)
{
    w->checksum += e->op + e->flags + (uint64_t)e->amount + (uint64_t)e->min_balance +
                   (uint64_t)e->max_balance + e->hold_timeout_ms + e->expect_from_version +
                   e->expect_to_version + e->metadata_len;
    w->checksum += text_length(e->id) + text_length(e->currency) + text_length(e->from) +
                   text_length(e->to) + text_length(e->hold_id);
    FUZZ_CHECK(e->metadata_len <= COFFER_METADATA_MAX);
    FUZZ_CHECK((e->metadata_len == 0) == (e->metadata == NULL));
    for (uint32_t i = 0; i < e->metadata_len; i++)
        w->checksum += (uint8_t)e->metadata[i];
    FUZZ_CHECK(e->op >= COFFER_OP_CREATE_ACCOUNT && e->op <= COFFER_OP_VOID);
    FUZZ_CHECK(e->id != NULL);
}

static bool same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0) || (!a && b && !*b) || (a && !b && !*a);
}

static void check_same_event(const coffer_event *a, const coffer_event *b)
{
    FUZZ_CHECK(a->op == b->op && a->flags == b->flags);
    FUZZ_CHECK(a->amount == b->amount && a->min_balance == b->min_balance);
    FUZZ_CHECK(a->max_balance == b->max_balance && a->hold_timeout_ms == b->hold_timeout_ms);
    FUZZ_CHECK(a->expect_from_version == b->expect_from_version);
    FUZZ_CHECK(a->expect_to_version == b->expect_to_version);
    FUZZ_CHECK(same_text(a->id, b->id) && same_text(a->currency, b->currency));
    FUZZ_CHECK(same_text(a->from, b->from) && same_text(a->to, b->to));
    FUZZ_CHECK(same_text(a->hold_id, b->hold_id));
    FUZZ_CHECK(a->metadata_len == b->metadata_len);
    FUZZ_CHECK(a->metadata_len == 0 || memcmp(a->metadata, b->metadata, a->metadata_len) == 0);
}

static bool same_after(const coffer_account_after *a, const coffer_account_after *b)
{
    return a->balance == b->balance && a->available == b->available && a->version == b->version;
}

static void check_same_outcome(const coffer_result *a, const coffer_result *b)
{
    FUZZ_CHECK(a->code == b->code && a->state == b->state && a->replayed == b->replayed);
    FUZZ_CHECK(a->seq == b->seq && a->timestamp == b->timestamp);
    FUZZ_CHECK(a->amount == b->amount && a->expires_at == b->expires_at);
    FUZZ_CHECK(same_after(&a->from, &b->from) && same_after(&a->to, &b->to));
    FUZZ_CHECK(strcmp(a->hold_from, b->hold_from) == 0 && strcmp(a->hold_to, b->hold_to) == 0);
    FUZZ_CHECK(a->available == b->available && a->actual_version == b->actual_version);
    FUZZ_CHECK(same_text(a->field, b->field));
    FUZZ_CHECK(record_outcome_difference(a, b) == NULL);
}

/* The second decoding of an entry, compared with the first. */
static int compare_entry(const record_entry *again, void *context)
{
    const record_entry *first = context;
    FUZZ_CHECK(again->kind == first->kind && again->seq == first->seq);
    FUZZ_CHECK(again->count == first->count);
    FUZZ_CHECK(again->results != NULL && same_text(again->submitted_by, first->submitted_by));
    for (size_t i = 0; first->results && i < first->count; i++)
        check_same_outcome(&first->results[i], &again->results[i]);
    if (first->kind == RECORD_EXPIRE) {
        FUZZ_CHECK(same_text(again->hold_id, first->hold_id));
        return 0;
    }
    for (size_t i = 0; i < first->count; i++)
        check_same_event(&first->events[i], &again->events[i]);
    return 0;
}

/* Encodes one decoded entry as a record of its own (at the same timestamps) and decodes it
 * again. A format 1 entry has no outcomes: it is written with positions that recorded
 * nothing, except the first, which every entry needs. */
static void round_trip(const record_header *source, const record_entry *entry)
{
    static const uint8_t no_hash[RECORD_HASH_BYTES];
    uint8_t hash[RECORD_HASH_BYTES];
    coffer_result *outcomes = entry->results ? entry->results : no_outcomes;
    no_outcomes[0].seq = entry->seq;
    record_begin(&encoded, entry->seq, source->ts0 + (entry->seq - source->seq_base), no_hash);
    if (entry->kind == RECORD_EXPIRE)
        record_add_expire(&encoded, entry->seq, entry->hold_id, strlen(entry->hold_id), outcomes);
    else if (entry->kind == RECORD_EVENT)
        record_add_event(&encoded, entry->seq, &entry->events[0], outcomes, entry->submitted_by);
    else
        record_add_atomic(&encoded, entry->seq, entry->events, outcomes, entry->count,
                          entry->submitted_by);
    FUZZ_CHECK(record_finish(&encoded, entry->seq + entry->count - 1, hash));
    record_header header;
    FUZZ_CHECK(record_check(encoded.bytes, encoded.length, &header) == RECORD_OK);
    FUZZ_CHECK(memcmp(header.hash, hash, RECORD_HASH_BYTES) == 0);
    int status = record_each(encoded.bytes, &header, &scratch_again, compare_entry, (void *)entry);
    FUZZ_CHECK(status == RECORD_OK);
}

static int visit_entry(const record_entry *entry, void *context)
{
    walk *w = context;
    /* What record_each promises about every entry it hands out. */
    FUZZ_CHECK(entry->count >= 1 && entry->count <= COFFER_BATCH_EVENTS_MAX);
    FUZZ_CHECK(entry->seq >= w->next_seq && entry->seq >= w->header->seq_base);
    FUZZ_CHECK(entry->count - 1 <= w->header->last_seq - entry->seq);
    w->next_seq = entry->seq + entry->count;
    w->checksum += entry->kind + entry->seq;
    if (entry->kind == RECORD_EXPIRE) {
        FUZZ_CHECK(entry->hold_id != NULL && entry->count == 1);
        w->checksum += strlen(entry->hold_id);
    } else {
        FUZZ_CHECK(entry->kind == RECORD_EVENT || entry->kind == RECORD_ATOMIC);
        FUZZ_CHECK(entry->kind == RECORD_ATOMIC || entry->count == 1);
        for (size_t i = 0; i < entry->count; i++)
            touch_event(w, &entry->events[i]);
    }
    FUZZ_CHECK((entry->results != NULL) == (w->header->version >= 2));
    for (size_t i = 0; entry->results && i < entry->count; i++) {
        const coffer_result *result = &entry->results[i];
        FUZZ_CHECK(result->seq == 0 || result->seq == entry->seq + i);
        FUZZ_CHECK(strlen(result->hold_from) <= COFFER_ACCOUNT_ID_MAX);
        w->checksum += (uint64_t)result->code + result->state + (uint64_t)result->amount +
                       result->from.version + result->to.version + result->timestamp;
    }
    if (entry->submitted_by) {
        FUZZ_CHECK(strlen(entry->submitted_by) <= COFFER_SUBMITTER_MAX);
        w->checksum += strlen(entry->submitted_by);
    }
    round_trip(w->header, entry);
    return 0;
}

static void decode(const uint8_t *bytes, size_t size)
{
    record_header header;
    int status = record_check(bytes, size, &header);
    FUZZ_CHECK(status >= RECORD_OK && status <= RECORD_BAD_PAYLOAD);
    if (status != RECORD_OK)
        return;
    FUZZ_CHECK(header.length <= size && header.length >= RECORD_HEADER_BYTES + RECORD_HASH_BYTES);
    walk w = {&header, header.seq_base, 0};
    status = record_each(bytes, &header, &scratch, visit_entry, &w);
    FUZZ_CHECK(status == RECORD_OK || status == RECORD_BAD_PAYLOAD);
}

/* Builds a record of format `version` whose payload is the input after its prefix, with a
 * correct hash (the layout of record.h, written out here so the payload can be anything). */
static void decode_as_payload(const uint8_t *data, size_t size, uint16_t version)
{
    uint8_t prefix[PAYLOAD_PREFIX_BYTES] = {0};
    memcpy(prefix, data, size < sizeof prefix ? size : sizeof prefix);
    size_t payload = size > sizeof prefix ? size - sizeof prefix : 0;
    uint32_t length = (uint32_t)(RECORD_HEADER_BYTES + payload + RECORD_HASH_BYTES);
    if (length > RECORD_BYTES_MAX)
        return;
    uint8_t *record = malloc(length); /* exact size, so ASan sees any overread */
    FUZZ_CHECK(record != NULL);
    uint32_t magic = RECORD_MAGIC, entries = prefix[0];
    uint16_t reserved = 0;
    uint64_t ts0 = 1700000000000000000ULL, last_seq;
    memcpy(&last_seq, prefix + 9, 8);
    memcpy(record, &magic, 4);
    memcpy(record + 4, &version, 2);
    memcpy(record + 6, &reserved, 2);
    memcpy(record + 8, &length, 4);
    memcpy(record + 12, &entries, 4);
    memcpy(record + 16, prefix + 1, 8); /* seq_base */
    memcpy(record + 24, &ts0, 8);
    memcpy(record + 32, &last_seq, 8);
    memset(record + 40, 0xAB, RECORD_HASH_BYTES); /* the previous record's hash */
    if (payload)
        memcpy(record + RECORD_HEADER_BYTES, data + sizeof prefix, payload);
    size_t covered = length - RECORD_HASH_BYTES;
    crypto_generichash(record + covered, RECORD_HASH_BYTES, record, covered, NULL, 0);
    record_header header;
    FUZZ_CHECK(record_check(record, length, &header) == RECORD_OK);
    FUZZ_CHECK(header.entries == entries && header.last_seq == last_seq);
    walk w = {&header, header.seq_base, 0};
    int status = record_each(record, &header, &scratch, visit_entry, &w);
    FUZZ_CHECK(status == RECORD_OK || status == RECORD_BAD_PAYLOAD);
    free(record);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode(data, size);
    for (uint16_t version = 1; version <= RECORD_VERSION; version++)
        decode_as_payload(data, size, version);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

/* ---- seeds ---------------------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const void *bytes, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *output = fopen(path, "wb");
    FUZZ_CHECK(output != NULL && fwrite(bytes, 1, size, output) == size);
    fclose(output);
}

/* Writes the record whole (record-N) and as a payload input (payload-N). */
static void write_seed(const char *dir, int number, record_buffer *record, uint64_t last_seq)
{
    uint8_t hash[RECORD_HASH_BYTES];
    FUZZ_CHECK(record_finish(record, last_seq, hash));
    record_header header;
    FUZZ_CHECK(record_check(record->bytes, record->length, &header) == RECORD_OK);
    FUZZ_CHECK(record_each(record->bytes, &header, &scratch, 0, 0) == RECORD_OK);
    char name[32];
    snprintf(name, sizeof name, "record-%d", number);
    write_file(dir, name, record->bytes, record->length);
    size_t payload = header.length - RECORD_HEADER_BYTES - RECORD_HASH_BYTES;
    uint8_t *input = malloc(PAYLOAD_PREFIX_BYTES + payload);
    FUZZ_CHECK(input != NULL);
    input[0] = (uint8_t)header.entries;
    memcpy(input + 1, &header.seq_base, 8);
    memcpy(input + 9, &header.last_seq, 8);
    memcpy(input + PAYLOAD_PREFIX_BYTES, record->bytes + RECORD_HEADER_BYTES, payload);
    snprintf(name, sizeof name, "payload-%d", number);
    write_file(dir, name, input, PAYLOAD_PREFIX_BYTES + payload);
    free(input);
}

static int write_seeds(const char *dir)
{
    static const uint8_t previous[RECORD_HASH_BYTES] = {0xC0, 0xFF, 0xEE};
    const uint64_t ts0 = 1700000000000000000ULL;
    record_buffer record = {0};
    coffer_event account = {.op = COFFER_OP_CREATE_ACCOUNT,
                            .id = "alice",
                            .currency = "USD",
                            .flags = COFFER_FLAG_HAS_MAX,
                            .max_balance = 500,
                            .metadata = "{\"kind\":\"wallet\"}",
                            .metadata_len = 17};
    coffer_event hold = {.op = COFFER_OP_TRANSFER,
                         .id = "h1",
                         .from = "alice",
                         .to = "bob",
                         .amount = 30,
                         .hold_timeout_ms = 60000,
                         .flags = COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO,
                         .expect_from_version = 3,
                         .expect_to_version = 2};
    coffer_event post = {.op = COFFER_OP_POST, .id = "p1", .hold_id = "h1", .amount = 10};
    coffer_event void_hold = {.op = COFFER_OP_VOID, .id = "v1", .hold_id = "h2"};
    coffer_event atomic[3] = {{.op = COFFER_OP_TRANSFER,
                               .id = "a-1",
                               .from = "alice",
                               .to = "bob",
                               .amount = 5,
                               .flags = COFFER_FLAG_EXPECT_FROM,
                               .expect_from_version = 11},
                              {.op = COFFER_OP_TRANSFER,
                               .id = "a-2",
                               .from = "bob",
                               .to = "carol",
                               .amount = 5,
                               .flags = COFFER_FLAG_UP_TO},
                              {.op = COFFER_OP_CREATE_ACCOUNT,
                               .id = "carol",
                               .currency = "EUR",
                               .flags = COFFER_FLAG_MIN_UNBOUNDED,
                               .min_balance = -7}};

    /* Outcomes as the core reports them, with every optional field somewhere. */
    coffer_result created = {
        .code = COFFER_CREATED, .state = COFFER_STATE_POSTED, .seq = 1, .from = {0, 0, 1}};
    coffer_result held = {.code = COFFER_CREATED,
                          .state = COFFER_STATE_PENDING,
                          .seq = 10,
                          .amount = 30,
                          .expires_at = ts0 + 60000000000ULL,
                          .from = {-70, -100, 4},
                          .to = {20, 20, 3}};
    coffer_result posted = {.code = COFFER_CREATED,
                            .state = COFFER_STATE_POSTED,
                            .seq = 12,
                            .amount = 10,
                            .from = {-80, -80, 5},
                            .to = {30, 30, 4},
                            .hold_from = "alice",
                            .hold_to = "bob"};
    coffer_result not_found = {
        .code = COFFER_HOLD_NOT_FOUND, .state = COFFER_STATE_REJECTED, .seq = 13, .field = "/void"};
    coffer_event too_much = {
        .op = COFFER_OP_TRANSFER, .id = "t-9", .from = "alice", .to = "bob", .amount = 1000};
    coffer_result refused = {.code = COFFER_INSUFFICIENT_BALANCE,
                             .state = COFFER_STATE_REJECTED,
                             .seq = 14,
                             .available = 7,
                             .from = {7, 7, 2} /* not kept: a rejection changed nothing */};
    coffer_result expired = {.code = COFFER_OK,
                             .state = COFFER_STATE_EXPIRED,
                             .seq = 100,
                             .amount = 25,
                             .expires_at = ts0 - 1,
                             .from = {0, 0, 9},
                             .to = {1, 1, 9},
                             .hold_from = "alice",
                             .hold_to = "bob"};
    coffer_result expired_later = expired;
    expired_later.seq = 101;
    /* A failed atomic batch: its transfers are recorded as rejected, its account records
     * nothing (seq 0). */
    coffer_result atomic_outcomes[3] = {
        {.code = COFFER_VERSION_MISMATCH,
         .state = COFFER_STATE_REJECTED,
         .seq = 102,
         .actual_version = 12,
         .field = "/expect_from_version"},
        {.code = COFFER_BATCH_FAILED, .state = COFFER_STATE_REJECTED, .seq = 103},
        {.code = COFFER_BATCH_FAILED, .state = COFFER_STATE_REJECTED}};

    record_begin(&record, 1, ts0, previous);
    record_add_event(&record, 1, &account, &created, "admin");
    write_seed(dir, 1, &record, 1);

    record_begin(&record, 10, ts0, previous);
    record_add_event(&record, 10, &hold, &held, "shop");
    record_add_event(&record, 12, &post, &posted, "shop");
    record_add_event(&record, 13, &void_hold, &not_found, "deposit-bot");
    record_add_event(&record, 14, &too_much, &refused, "shop");
    write_seed(dir, 2, &record, 14);

    record_begin(&record, 100, ts0, previous);
    record_add_expire(&record, 100, "h2", 2, &expired);
    record_add_expire(&record, 101, "h3", 2, &expired_later);
    record_add_atomic(&record, 102, atomic, atomic_outcomes, 3, NULL);
    write_seed(dir, 3, &record, 104);

    char long_id[COFFER_TRANSFER_ID_MAX + 1], long_account[COFFER_ACCOUNT_ID_MAX + 1];
    char metadata[COFFER_METADATA_MAX];
    memset(long_id, 'x', COFFER_TRANSFER_ID_MAX);
    long_id[COFFER_TRANSFER_ID_MAX] = 0;
    memset(long_account, 'y', COFFER_ACCOUNT_ID_MAX);
    long_account[COFFER_ACCOUNT_ID_MAX] = 0;
    memset(metadata, ' ', sizeof metadata);
    metadata[0] = '{';
    metadata[sizeof metadata - 1] = '}';
    coffer_event large = {.op = COFFER_OP_TRANSFER,
                          .id = long_id,
                          .from = long_account,
                          .to = "bob",
                          .amount = INT64_MAX,
                          .metadata = metadata,
                          .metadata_len = sizeof metadata};
    char long_name[COFFER_SUBMITTER_MAX + 1];
    memset(long_name, 'z', COFFER_SUBMITTER_MAX);
    long_name[COFFER_SUBMITTER_MAX] = 0;
    coffer_result moved = {.code = COFFER_CREATED,
                           .state = COFFER_STATE_POSTED,
                           .seq = 1000,
                           .amount = INT64_MAX,
                           .from = {INT64_MIN, INT64_MIN, UINT64_MAX},
                           .to = {INT64_MAX, INT64_MAX, UINT64_MAX}};
    record_begin(&record, 1000, ts0, previous);
    record_add_event(&record, 1000, &large, &moved, long_name);
    write_seed(dir, 4, &record, 1000);
    record_buffer_free(&record);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return write_seeds(argv[2]);
    int status = fuzz_driver_main("fuzz_record", argc, argv);
    record_scratch_free(&scratch);
    record_scratch_free(&scratch_again);
    record_buffer_free(&encoded);
    return status;
}
#endif
