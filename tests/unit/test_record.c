/*
 * test_record.c — the log record format (log/record.h): format 2 round trips with each event's
 * outcome and its submitter (failed atomic positions that recorded nothing, expiries,
 * rejections whose after-states are not kept), format 1 still decoding, malformed entries
 * refused, and the comparison replay makes of a logged outcome with the recomputed one
 * (test_audit.c sees recovery and verify stop at a tampered outcome).
 */
#include <libgen.h>
#include <sodium.h>

#include "support.h"

#include "log/record.h"

#define TS0 (TEST_CLOCK_START_NS + 5000)

static const uint8_t previous_hash[RECORD_HASH_BYTES] = {0xC0, 0xFF, 0xEE};

/* Everything record_each handed over, copied out of the scratch space. */
#define SEEN_MAX 1024
typedef struct seen_entry {
    uint8_t kind;
    uint64_t seq;
    size_t count;
    bool has_results;
    coffer_result results[4];
    char submitted_by[COFFER_SUBMITTER_MAX + 1]; /* "" for none */
    bool has_submitter;
    char first_id[COFFER_TRANSFER_ID_MAX + 1];
} seen_entry;

typedef struct seen {
    size_t count;
    seen_entry entries[SEEN_MAX];
} seen;

static int collect(const record_entry *entry, void *context)
{
    seen *out = context;
    assert_true(out->count < SEEN_MAX);
    seen_entry *e = &out->entries[out->count++];
    memset(e, 0, sizeof *e);
    e->kind = entry->kind;
    e->seq = entry->seq;
    e->count = entry->count;
    e->has_results = entry->results != NULL;
    for (size_t i = 0; entry->results && i < entry->count && i < 4; i++) {
        e->results[i] = entry->results[i];
        e->results[i].field = NULL; /* points into the scratch space */
    }
    e->has_submitter = entry->submitted_by != NULL;
    if (entry->submitted_by)
        snprintf(e->submitted_by, sizeof e->submitted_by, "%s", entry->submitted_by);
    const char *id = entry->kind == RECORD_EXPIRE ? entry->hold_id : entry->events[0].id;
    snprintf(e->first_id, sizeof e->first_id, "%s", id);
    return 0;
}

/* Finishes `record`, checks it and decodes every entry into *out; returns the status. */
static int decode_all(record_buffer *record, uint64_t last_seq, seen *out)
{
    uint8_t hash[RECORD_HASH_BYTES];
    assert_true(record_finish(record, last_seq, hash));
    record_header header;
    assert_int_equal(record_check(record->bytes, record->length, &header), RECORD_OK);
    record_scratch scratch = {0};
    out->count = 0;
    int status = record_each(record->bytes, &header, &scratch, collect, out);
    record_scratch_free(&scratch);
    return status;
}

/* A batch as the engine logs it: an account, a hold, a post, a refused transfer, a failed
 * atomic batch, and an expiry in front. */
static const coffer_event account = {
    .op = COFFER_OP_CREATE_ACCOUNT, .id = "carol", .currency = "USD"};
static const coffer_event hold_30 = {.op = COFFER_OP_TRANSFER,
                                     .id = "h-1",
                                     .from = "alice",
                                     .to = "bob",
                                     .amount = 30,
                                     .hold_timeout_ms = 60000};
static const coffer_event post = {.op = COFFER_OP_POST, .id = "p-1", .hold_id = "h-1"};
static const coffer_event too_much = {
    .op = COFFER_OP_TRANSFER, .id = "t-9", .from = "alice", .to = "bob", .amount = 900};
static const coffer_event atomic[2] = {
    {.op = COFFER_OP_CREATE_ACCOUNT, .id = "dave", .currency = "USD"},
    {.op = COFFER_OP_TRANSFER, .id = "a-1", .from = "alice", .to = "dave", .amount = 900}};

static void build_batch(record_buffer *record, coffer_result atomic_outcomes[2])
{
    coffer_result expired = {.code = COFFER_OK,
                             .state = COFFER_STATE_EXPIRED,
                             .seq = 10,
                             .amount = 25,
                             .expires_at = TS0 - 7,
                             .from = {100, 100, 6},
                             .to = {-100, -100, 5},
                             .hold_from = "alice",
                             .hold_to = "bob"};
    coffer_result created = {
        .code = COFFER_CREATED, .state = COFFER_STATE_POSTED, .seq = 11, .from = {0, 0, 1}};
    coffer_result held = {.code = COFFER_CREATED,
                          .state = COFFER_STATE_PENDING,
                          .seq = 12,
                          .amount = 30,
                          .expires_at = TS0 + 2 + 60000 * TEST_NS_PER_MS,
                          .from = {100, 70, 7},
                          .to = {-100, -100, 6}};
    coffer_result posted = {.code = COFFER_CREATED,
                            .state = COFFER_STATE_POSTED,
                            .seq = 13,
                            .amount = 30,
                            .from = {70, 70, 8},
                            .to = {-70, -70, 7},
                            .hold_from = "alice",
                            .hold_to = "bob"};
    coffer_result refused = {.code = COFFER_INSUFFICIENT_BALANCE,
                             .state = COFFER_STATE_REJECTED,
                             .seq = 14,
                             .available = 70,
                             .from = {70, 70, 8}, /* as found: a rejection's are not kept */
                             .to = {-70, -70, 7}};
    /* The account of a failed atomic batch records nothing; its transfer is recorded. */
    atomic_outcomes[0] =
        (coffer_result){.code = COFFER_BATCH_FAILED, .state = COFFER_STATE_REJECTED};
    atomic_outcomes[1] = (coffer_result){.code = COFFER_INSUFFICIENT_BALANCE,
                                         .state = COFFER_STATE_REJECTED,
                                         .seq = 16,
                                         .available = 70};
    record_begin(record, 10, TS0, previous_hash);
    record_add_expire(record, 10, "h-0", 3, &expired);
    record_add_event(record, 11, &account, &created, "admin");
    record_add_event(record, 12, &hold_30, &held, "shop");
    record_add_event(record, 13, &post, &posted, "shop");
    record_add_event(record, 14, &too_much, &refused, NULL);
    record_add_atomic(record, 15, atomic, atomic_outcomes, 2, "admin");
}

static void assert_after(const coffer_account_after *after, int64_t balance, int64_t available,
                         uint64_t version)
{
    assert_int_equal(after->balance, balance);
    assert_int_equal(after->available, available);
    assert_int_equal(after->version, version);
}

static void test_outcomes_and_submitters_round_trip(void **state)
{
    (void)state;
    record_buffer record = {0};
    coffer_result atomic_outcomes[2];
    build_batch(&record, atomic_outcomes);
    static seen out;
    assert_int_equal(decode_all(&record, 16, &out), RECORD_OK);
    assert_int_equal(out.count, 6); /* the submitter declarations are not handed over */

    const seen_entry *expiry = &out.entries[0];
    assert_int_equal(expiry->kind, RECORD_EXPIRE);
    assert_string_equal(expiry->first_id, "h-0");
    assert_true(expiry->has_results && !expiry->has_submitter);
    assert_int_equal(expiry->results[0].code, COFFER_OK);
    assert_int_equal(expiry->results[0].state, COFFER_STATE_EXPIRED);
    assert_int_equal(expiry->results[0].seq, 10);
    assert_int_equal(expiry->results[0].timestamp, TS0);
    assert_int_equal(expiry->results[0].amount, 25);
    assert_int_equal(expiry->results[0].expires_at, TS0 - 7);
    assert_after(&expiry->results[0].from, 100, 100, 6);
    assert_after(&expiry->results[0].to, -100, -100, 5);
    assert_string_equal(expiry->results[0].hold_from, "alice");
    assert_string_equal(expiry->results[0].hold_to, "bob");

    assert_string_equal(out.entries[1].submitted_by, "admin");
    assert_after(&out.entries[1].results[0].from, 0, 0, 1);
    assert_int_equal(out.entries[1].results[0].timestamp, TS0 + 1);

    const seen_entry *held = &out.entries[2];
    assert_string_equal(held->submitted_by, "shop");
    assert_int_equal(held->results[0].state, COFFER_STATE_PENDING);
    assert_int_equal(held->results[0].expires_at, TS0 + 2 + 60000 * TEST_NS_PER_MS);
    assert_after(&held->results[0].from, 100, 70, 7);
    assert_string_equal(held->results[0].hold_from, "");

    const seen_entry *posted = &out.entries[3];
    assert_string_equal(posted->submitted_by, "shop");
    assert_int_equal(posted->results[0].amount, 30);
    assert_string_equal(posted->results[0].hold_to, "bob");
    assert_after(&posted->results[0].to, -70, -70, 7);

    const seen_entry *refused = &out.entries[4];
    assert_false(refused->has_submitter);
    assert_int_equal(refused->results[0].code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(refused->results[0].available, 70);
    assert_after(&refused->results[0].from, 0, 0, 0); /* not kept */

    const seen_entry *batch = &out.entries[5];
    assert_int_equal(batch->kind, RECORD_ATOMIC);
    assert_int_equal(batch->count, 2);
    assert_string_equal(batch->submitted_by, "admin");
    assert_int_equal(batch->results[0].seq, 0); /* recorded nothing */
    assert_int_equal(batch->results[0].timestamp, 0);
    assert_int_equal(batch->results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(batch->results[1].seq, 16);
    assert_int_equal(batch->results[1].timestamp, TS0 + 6);
    assert_null(record_outcome_difference(&batch->results[1], &atomic_outcomes[1]));
    record_buffer_free(&record);
}

/* More distinct submitters than one record can index: slots are declared again in turn. A
 * name is declared once however many entries use it, by whatever address. */
static void test_many_submitters_in_one_record(void **state)
{
    (void)state;
    enum { NAMES = 300 };
    static char names[NAMES][16], copies[NAMES][16];
    static coffer_event events[2 * NAMES];
    static coffer_result results[2 * NAMES];
    record_buffer record = {0};
    record_begin(&record, 1, TS0, previous_hash);
    for (int i = 0; i < 2 * NAMES; i++) {
        int name = i / 2;
        snprintf(names[name], sizeof names[name], "token-%d", name);
        snprintf(copies[name], sizeof copies[name], "token-%d", name);
        events[i] = (coffer_event){.op = COFFER_OP_VOID, .id = names[name], .hold_id = "h"};
        results[i] = (coffer_result){.code = COFFER_HOLD_NOT_FOUND,
                                     .state = COFFER_STATE_REJECTED,
                                     .seq = (uint64_t)i + 1,
                                     .field = "/void"};
        record_add_event(&record, (uint64_t)i + 1, &events[i], &results[i],
                         i % 2 ? copies[name] : names[name]);
    }
    static seen out;
    assert_int_equal(decode_all(&record, 2 * NAMES, &out), RECORD_OK);
    record_header header;
    assert_int_equal(record_check(record.bytes, record.length, &header), RECORD_OK);
    assert_int_equal(header.entries, 2 * NAMES + NAMES);
    assert_int_equal(out.count, 2 * NAMES);
    for (int i = 0; i < 2 * NAMES; i++)
        assert_string_equal(out.entries[i].submitted_by, names[i / 2]);
    record_buffer_free(&record);
}

/* Replaces the byte at `offset` and makes the hash right again, as tampering would. */
static void patch(record_buffer *record, size_t offset, uint8_t value)
{
    record->bytes[offset] = value;
    size_t covered = record->length - RECORD_HASH_BYTES;
    crypto_generichash(record->bytes + covered, RECORD_HASH_BYTES, record->bytes, covered, NULL, 0);
}

static int decode_patched(record_buffer *record)
{
    record_header header;
    assert_int_equal(record_check(record->bytes, record->length, &header), RECORD_OK);
    record_scratch scratch = {0};
    int status = record_each(record->bytes, &header, &scratch, NULL, NULL);
    record_scratch_free(&scratch);
    return status;
}

static void test_malformed_entries_are_refused(void **state)
{
    (void)state;
    coffer_result rejected = {
        .code = COFFER_HOLD_NOT_FOUND, .state = COFFER_STATE_REJECTED, .seq = 1};
    record_buffer record = {0};
    uint8_t hash[RECORD_HASH_BYTES];
    /* kind, index, length, "bot", then the event entry: kind, seq, submitter index. */
    record_begin(&record, 1, TS0, previous_hash);
    record_add_event(&record, 1, &post, &rejected, "bot");
    assert_true(record_finish(&record, 1, hash));
    size_t submitter_at = RECORD_HEADER_BYTES + 3 + 3 + 1 + 8;
    assert_int_equal(record.bytes[submitter_at], 1);
    assert_int_equal(decode_patched(&record), RECORD_OK);
    patch(&record, submitter_at, 2); /* an index never declared */
    assert_int_equal(decode_patched(&record), RECORD_BAD_PAYLOAD);
    patch(&record, submitter_at, 1);
    assert_int_equal(decode_patched(&record), RECORD_OK);
    /* The outcome's flags are its first byte after the event: a rejection with an after-state
     * and an event alone that recorded nothing are refused. */
    size_t outcome_at = record.length - RECORD_HASH_BYTES - 3;
    assert_int_equal(record.bytes[outcome_at], OUTCOME_RECORDED);
    patch(&record, outcome_at, OUTCOME_RECORDED | OUTCOME_FROM);
    assert_int_equal(decode_patched(&record), RECORD_BAD_PAYLOAD);
    patch(&record, outcome_at, 0); /* an event alone that recorded nothing */
    assert_int_equal(decode_patched(&record), RECORD_BAD_PAYLOAD);
    record_buffer_free(&record);

    record_begin(&record, 1, TS0, previous_hash);
    record_add_event(&record, 1, &post, &rejected, NULL);
    assert_true(record_finish(&record, 1, hash));
    outcome_at = record.length - RECORD_HASH_BYTES - 3;
    patch(&record, outcome_at, 0x80); /* a varint whose flags go past the known ones */
    assert_int_equal(decode_patched(&record), RECORD_BAD_PAYLOAD);
    record_buffer_free(&record);
}

/* A format 1 record (the fuzz corpus keeps the ones written before format 2) still decodes:
 * its events, and no outcomes or submitter. */
static void test_format_1_still_decodes(void **state)
{
    (void)state;
    char here[4096], path[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(path, sizeof path, "%s/../fuzz/corpus/record/v1-record-3", dirname(here));
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    uint8_t bytes[4096];
    size_t size = fread(bytes, 1, sizeof bytes, file);
    fclose(file);
    record_header header;
    assert_int_equal(record_check(bytes, size, &header), RECORD_OK);
    assert_int_equal(header.version, 1);
    record_scratch scratch = {0};
    static seen out;
    assert_int_equal(record_each(bytes, &header, &scratch, collect, &out), RECORD_OK);
    record_scratch_free(&scratch);
    assert_int_equal(out.count, 3); /* two expiries and an atomic batch */
    for (size_t i = 0; i < out.count; i++)
        assert_false(out.entries[i].has_results || out.entries[i].has_submitter);
    assert_string_equal(out.entries[2].first_id, "a-1");
}

static void test_outcome_difference_names_the_field(void **state)
{
    (void)state;
    coffer_result logged = {.code = COFFER_CREATED,
                            .state = COFFER_STATE_POSTED,
                            .seq = 4,
                            .amount = 10,
                            .from = {-10, -10, 2},
                            .to = {10, 10, 2}};
    coffer_result computed = logged;
    computed.timestamp = 99; /* not compared: the record's timestamps are the engine's */
    assert_null(record_outcome_difference(&logged, &computed));
    computed.amount = 11;
    assert_string_equal(record_outcome_difference(&logged, &computed), "amount");
    computed = logged;
    computed.to.version = 3;
    assert_string_equal(record_outcome_difference(&logged, &computed), "to");
    computed = logged;
    computed.code = COFFER_INSUFFICIENT_BALANCE;
    assert_string_equal(record_outcome_difference(&logged, &computed), "code");
    computed = logged;
    computed.seq = 0;
    assert_string_equal(record_outcome_difference(&logged, &computed), "recorded");
    /* A rejection's after-states are not logged, so they cannot differ. */
    coffer_result refused = {.code = COFFER_SAME_ACCOUNT, .state = COFFER_STATE_REJECTED, .seq = 5};
    coffer_result refused_computed = refused;
    refused_computed.from = (coffer_account_after){3, 3, 3};
    assert_null(record_outcome_difference(&refused, &refused_computed));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes_and_submitters_round_trip),
        cmocka_unit_test(test_many_submitters_in_one_record),
        cmocka_unit_test(test_malformed_entries_are_refused),
        cmocka_unit_test(test_format_1_still_decodes),
        cmocka_unit_test(test_outcome_difference_names_the_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
