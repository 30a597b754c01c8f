/*
 * test_codec.c — the HTTP codec: the hand-written hot-path encoding of a created transfer (and
 * of the feed's commonest changes) is byte for byte what the general jansson encoder writes,
 * as a body and as a batch item
 * (replays depend on one body), the simple decoder takes exactly the plain shapes (single and
 * batch) and then agrees with the general decoder, decoding names the field of out-of-range
 * numbers with a JSON pointer, times go out as RFC 3339 text only, and a failed atomic batch
 * answers 409 with its failure's code (a mix of recorded and new items said as such).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/decode.h"
#include "server/encode.h"

/* The fast encoder's text against the general one's, as a body and as a batch item. */
static void assert_same_text(const coffer_event *event, const coffer_result *result)
{
    for (int item = 0; item < 2; item++) {
        text_buffer fast = {0}, general = {0};
        assert_true(encode_success_fast(&fast, event, result, item));
        encode_success(&general, event, result, item);
        assert_false(fast.failed || general.failed);
        assert_string_equal(fast.bytes, general.bytes);
        assert_int_equal(fast.length, general.length);
        free(fast.bytes);
        free(general.bytes);
    }
}

static void test_fast_encoding_matches_jansson(void **state)
{
    (void)state;
    coffer_event plain = {.op = COFFER_OP_TRANSFER,
                          .id = "pay-1",
                          .from = "user:42",
                          .to = "shop/main",
                          .amount = 500};
    coffer_result result = {.code = COFFER_CREATED,
                            .state = COFFER_STATE_POSTED,
                            .seq = 18,
                            .timestamp = 1795564080238899084ULL,
                            .amount = 500,
                            .from = {-500, -700, 9},
                            .to = {500, 500, 2}};
    assert_same_text(&plain, &result);
    coffer_event hold = plain;
    hold.hold_timeout_ms = 300000;
    result.state = COFFER_STATE_PENDING;
    result.expires_at = result.timestamp + 300000ULL * 1000000ULL;
    assert_same_text(&hold, &result);
    coffer_event up_to = plain;
    up_to.flags = COFFER_FLAG_UP_TO;
    result.state = COFFER_STATE_POSTED;
    result.amount = 0;
    result.expires_at = 0;
    assert_same_text(&up_to, &result);
    coffer_event extreme = plain;
    extreme.amount = INT64_MAX;
    coffer_result extremes = {.code = COFFER_CREATED,
                              .state = COFFER_STATE_POSTED,
                              .seq = INT64_MAX,       /* jansson's integers are signed */
                              .timestamp = 999999999, /* the first second of 1970 */
                              .amount = INT64_MAX,
                              .from = {INT64_MIN, INT64_MIN, INT64_MAX},
                              .to = {INT64_MAX, 0, 0}};
    assert_same_text(&extreme, &extremes);
    coffer_event with_metadata = plain;
    with_metadata.metadata = "{\"a\":1}";
    with_metadata.metadata_len = 7;
    text_buffer declined = {0};
    assert_false(encode_success_fast(&declined, &with_metadata, &result, false));
    assert_int_equal(declined.length, 0);
    coffer_result replayed = result;
    replayed.code = COFFER_EXISTS;
    replayed.replayed = true;
    assert_same_text(&plain, &replayed);
}

/* A change's fast text against the tree's compact text (or that the fast one declines). */
static void assert_same_change(const coffer_change *change, bool taken)
{
    text_buffer fast = {0};
    assert_int_equal(encode_change_fast(&fast, change), taken);
    if (!taken) {
        assert_int_equal(fast.length, 0);
        return;
    }
    json_t *tree = encode_change_json(change);
    char *general = json_dumps(tree, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(tree);
    assert_false(fast.failed);
    assert_string_equal(fast.bytes, general);
    free(general);
    free(fast.bytes);
}

static void test_fast_change_encoding_matches_jansson(void **state)
{
    (void)state;
    coffer_change change = {
        .seq = 41,
        .timestamp = 1795564080238899084ULL,
        .type = COFFER_CHANGE_TRANSFER_POSTED,
        .event = {.op = COFFER_OP_TRANSFER, .id = "t-1", .from = "a", .to = "b/2", .amount = 7},
        .result = {.code = COFFER_CREATED,
                   .state = COFFER_STATE_POSTED,
                   .seq = 41,
                   .timestamp = 1795564080238899084ULL,
                   .amount = 7,
                   .from = {-7, -9, 4},
                   .to = {7, 7, 2}},
    };
    assert_same_change(&change, true);
    change.submitted_by = "shop";
    assert_same_change(&change, true);
    change.type = COFFER_CHANGE_HOLD_CREATED;
    change.event.hold_timeout_ms = 1000;
    change.result.state = COFFER_STATE_PENDING;
    change.result.expires_at = change.result.timestamp + 1000000000ULL;
    change.event.flags = COFFER_FLAG_UP_TO;
    assert_same_change(&change, true);
    /* Declined: a name JSON must escape (the C API takes any), metadata, other types. */
    change.submitted_by = "say \"hi\"";
    assert_same_change(&change, false);
    change.submitted_by = 0;
    change.event.metadata = "{}";
    change.event.metadata_len = 2;
    assert_same_change(&change, false);
    change.event.metadata = 0;
    change.event.metadata_len = 0;
    change.type = COFFER_CHANGE_TRANSFER_REJECTED;
    assert_same_change(&change, false);
}

static void expect_field(const char *body, const char *code_field)
{
    decode_batch batch;
    decode_error error;
    int code = decode_transfers(body, strlen(body), 0, &batch, &error);
    assert_int_equal(code, COFFER_INVALID_FIELD);
    assert_string_equal(error.field, code_field);
    decode_batch_free(&batch);
}

static void test_out_of_range_numbers_name_their_field(void **state)
{
    (void)state;
    expect_field("{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":9223372036854775808}",
                 "/amount");
    expect_field("{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1,"
                 "\"hold\":{\"timeout_ms\":1e400}}",
                 "/hold/timeout_ms");
    expect_field("{\"atomic\":true,\"transfers\":[{\"id\":\"x\",\"from\":\"a\",\"to\":\"b\","
                 "\"amount\":1},{\"id\":\"y\",\"from\":\"a\",\"to\":\"b\","
                 "\"amount\":-99999999999999999999}]}",
                 "/transfers/1/amount");
    expect_field("{\"id\":\"a\\u0000b\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}", "/id");
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* Decodes `body` with both decoders: the simple one must take it iff `taken`, and then give
 * the general decoder's code, error and events. */
static void expect_simple(const char *body, const char *key, bool taken)
{
    decode_batch simple, general;
    decode_error simple_error, general_error;
    int simple_code = -1;
    bool took =
        decode_transfers_simple(body, strlen(body), key, &simple, &simple_error, &simple_code);
    assert_int_equal(took, taken);
    if (took)
        decode_batch_free(&simple); /* decoded again below, by whichever decoder takes it */
    int general_code = decode_transfers_general(body, strlen(body), key, &general, &general_error);
    int code = decode_transfers(body, strlen(body), key, &simple, &simple_error);
    assert_int_equal(code, general_code); /* whichever decoder took it */
    assert_int_equal(simple_error.code, general_error.code);
    assert_string_equal(simple_error.field, general_error.field);
    assert_string_equal(simple_error.detail, general_error.detail);
    if (code == COFFER_OK) {
        assert_int_equal(simple.count, general.count);
        assert_int_equal(simple.batch, general.batch);
        assert_int_equal(simple.atomic, general.atomic);
        for (size_t i = 0; i < simple.count; i++) {
            const coffer_event *a = &simple.events[i], *b = &general.events[i];
            assert_int_equal(a->op, b->op);
            assert_int_equal(a->flags, b->flags);
            assert_int_equal(a->amount, b->amount);
            assert_true(same_text(a->id, b->id));
            assert_true(same_text(a->from, b->from));
            assert_true(same_text(a->to, b->to));
            assert_true(same_text(a->hold_id, b->hold_id));
        }
    }
    decode_batch_free(&simple);
    decode_batch_free(&general);
}

/* {"atomic": ..., "transfers": [n plain transfers]} */
static char *plain_batch(const char *atomic, size_t n)
{
    size_t size = 64 + n * 64;
    char *body = malloc(size);
    assert_non_null(body);
    int used = snprintf(body, size, "{%s\"transfers\":[", atomic);
    for (size_t i = 0; i < n; i++)
        used += snprintf(body + used, size - (size_t)used,
                         "%s{\"id\":\"t-%zu\",\"from\":\"a\",\"to\":\"b\",\"amount\":%zu}",
                         i ? "," : "", i, i + 1);
    snprintf(body + used, size - (size_t)used, "]}");
    return body;
}

static void test_simple_decoder_takes_only_the_plain_shape(void **state)
{
    (void)state;
    expect_simple("{\"id\":\"t-1\",\"from\":\"a\",\"to\":\"b\",\"amount\":250}", 0, true);
    expect_simple(" {\n \"amount\" : 9223372036854775807,\t\"to\":\"shop/main\", "
                  "\"from\":\"user:42\"}\r\n",
                  "key-1", true);
    expect_simple("{\"from\":\"a\",\"to\":\"b\",\"amount\":0}", 0, true); /* id required */
    expect_simple("{\"id\":\"x\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}", "y", true);
    expect_simple("{\"id\":\"\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}", 0, true);
    /* Declined: the general decoder answers these. */
    const char *declined[] = {
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":-1}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1.0}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1e2}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":01}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":9223372036854775808}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":\"1\"}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\"}",
        "{\"id\":\"t\",\"from\":\"a\",\"amount\":1}",
        "{\"id\":\"t\",\"id\":\"u\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"up_to\":true}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"hold\":{\"timeout_ms\":5}}",
        "{\"id\":\"t\\u0031\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}",
        "{\"id\":\"caf\xc3\xa9\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}",
        "{\"id\":null,\"from\":\"a\",\"to\":\"b\",\"amount\":1}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1,}",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1} x",
        "{\"id\":\"t\",\"from\":\"a\",\"to\":\"b\",\"amount\":1",
        "{}",
    };
    for (size_t i = 0; i < sizeof declined / sizeof *declined; i++)
        expect_simple(declined[i], 0, false);
    /* Batches of plain transfers, each with an id. */
    const char *prefixes[] = {"", "\"atomic\":true,", "\"atomic\":false,"};
    for (size_t p = 0; p < 3; p++)
        for (size_t n = 1; n <= 100; n *= 10) {
            char *body = plain_batch(prefixes[p], n);
            expect_simple(body, 0, true);
            expect_simple(body, "key-1", false); /* a key with a batch is an error */
            free(body);
        }
    char *full = plain_batch("", COFFER_BATCH_EVENTS_MAX), *over = plain_batch("", 8191);
    expect_simple(full, 0, true);
    expect_simple(over, 0, false); /* batch_too_large, from the general decoder */
    free(full);
    free(over);
    const char *duplicate_atomic = "{\"atomic\":true,\"atomic\":true,\"transfers\":[{\"id\":\"x\","
                                   "\"from\":\"a\",\"to\":\"b\",\"amount\":1}]}";
    const char *declined_batches[] = {
        "{\"transfers\":[]}",
        "{\"transfers\":[{\"from\":\"a\",\"to\":\"b\",\"amount\":1}]}",
        "{\"transfers\":[{\"id\":\"x\",\"post\":\"h\"}]}",
        "{\"atomic\":1,\"transfers\":[{\"id\":\"x\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}]}",
        duplicate_atomic,
        "{\"transfers\":[{\"id\":\"x\",\"from\":\"a\",\"to\":\"b\",\"amount\":1}],\"extra\":1}",
        "{\"atomic\":true}",
        "{\"transfers\":{}}",
    };
    for (size_t i = 0; i < sizeof declined_batches / sizeof *declined_batches; i++)
        expect_simple(declined_batches[i], 0, false);
}

/* Times are RFC 3339 text only: no member ends in _ns, in writes and reads alike. */
static void test_time_text_is_exact_and_cut_as_snprintf_cuts(void **state)
{
    (void)state;
    char text[48];
    encode_time(text, sizeof text, 0);
    assert_string_equal(text, "1970-01-01T00:00:00.000000000Z");
    encode_time(text, sizeof text, 1000000001ULL);
    assert_string_equal(text, "1970-01-01T00:00:01.000000001Z");
    encode_time(text, sizeof text, 1796593953123456789ULL);
    assert_string_equal(text, "2026-12-06T21:52:33.123456789Z");
    /* The same second again (kept per thread), another fraction. */
    encode_time(text, sizeof text, 1796593953000000450ULL);
    assert_string_equal(text, "2026-12-06T21:52:33.000000450Z");
    /* A buffer too small gets what fits, terminated; exactly enough gets it all. */
    encode_time(text, 5, 1796593953123456789ULL);
    assert_string_equal(text, "2026");
    encode_time(text, 30, 1796593953123456789ULL);
    assert_string_equal(text, "2026-12-06T21:52:33.123456789");
    encode_time(text, 31, 1796593953123456789ULL);
    assert_string_equal(text, "2026-12-06T21:52:33.123456789Z");
    text[0] = 'x';
    encode_time(text, 1, 1796593953123456789ULL);
    assert_string_equal(text, "");
}

static void test_times_are_text_only(void **state)
{
    (void)state;
    coffer_event hold = {.op = COFFER_OP_TRANSFER,
                         .id = "h-1",
                         .from = "a",
                         .to = "b",
                         .amount = 5,
                         .hold_timeout_ms = 1000};
    coffer_result held = {.code = COFFER_CREATED,
                          .state = COFFER_STATE_PENDING,
                          .seq = 7,
                          .timestamp = 1795564080238899084ULL,
                          .expires_at = 1795564081238899084ULL,
                          .amount = 5};
    encoded written;
    encode_write(&written, &hold, &held, 1, false, false);
    assert_non_null(strstr(written.body, "\"timestamp\":\"2026-11-24T23:48:00.238899084Z\""));
    assert_non_null(strstr(written.body, "\"expires_at\":\"2026-11-24T23:48:01.238899084Z\""));
    assert_null(strstr(written.body, "_ns"));
    free(written.body);
    coffer_transfer transfer = {.id = "h-1",
                                .op = COFFER_OP_TRANSFER,
                                .from = "a",
                                .to = "b",
                                .timestamp = held.timestamp,
                                .expires_at = held.expires_at,
                                .hold_timeout_ms = 1000};
    encoded read;
    encode_transfer(&read, &transfer);
    assert_non_null(strstr(read.body, "\"expires_at\":\"2026-11-24T23:48:01.238899084Z\""));
    assert_null(strstr(read.body, "_ns"));
    free(read.body);
    coffer_account account = {.id = "a", .currency = "KRW", .version = 2, .created_at = 1};
    encode_account(&read, &account, COFFER_AT_TIMESTAMP, held.timestamp);
    assert_non_null(strstr(read.body, "\"created_at\":\"1970-01-01T00:00:00.000000001Z\""));
    assert_non_null(strstr(read.body, "\"at\":{\"timestamp\":\"2026-11-24T23:48:00.238899084Z\"}"));
    assert_null(strstr(read.body, "_ns"));
    free(read.body);
}

/* Two transfers of an atomic batch, with these results (the rest as a created transfer). */
static encoded two_item_batch(bool atomic, int first, int second, const char *second_field)
{
    coffer_event events[2] = {
        {.op = COFFER_OP_TRANSFER, .id = "t-1", .from = "a", .to = "b", .amount = 1},
        {.op = COFFER_OP_TRANSFER, .id = "t-2", .from = "a", .to = "b", .amount = 1}};
    coffer_result results[2] = {{.code = first, .state = COFFER_STATE_POSTED, .seq = 1},
                                {.code = second, .state = COFFER_STATE_POSTED, .seq = 2}};
    results[1].field = second_field;
    encoded out;
    encode_write(&out, events, results, 2, true, atomic);
    return out;
}

/* A failed atomic batch is 409 with its failure's code first; anything else a batch is 200. */
static void test_failed_atomic_batch_is_409(void **state)
{
    (void)state;
    encoded failed = two_item_batch(true, COFFER_BATCH_FAILED, COFFER_INSUFFICIENT_BALANCE, 0);
    assert_int_equal(failed.status, 409);
    assert_int_equal(failed.code, COFFER_INSUFFICIENT_BALANCE);
    assert_string_equal(failed.content_type, "application/json");
    const char *head = "{\"atomic\":true,\"code\":\"insufficient_balance\",\"results\":[";
    assert_memory_equal(failed.body, head, strlen(head));
    free(failed.body);
    encoded invalid = two_item_batch(true, COFFER_BATCH_FAILED, COFFER_INVALID_FIELD, "/amount");
    assert_int_equal(invalid.status, 409);
    assert_int_equal(invalid.code, COFFER_INVALID_FIELD);
    assert_non_null(strstr(invalid.body, "\"field\":\"/transfers/1/amount\""));
    free(invalid.body);
    encoded applied = two_item_batch(true, COFFER_CREATED, COFFER_CREATED, 0);
    assert_int_equal(applied.status, 200);
    assert_null(strstr(applied.body, "\"atomic\":true,\"code\""));
    free(applied.body);
    encoded each = two_item_batch(false, COFFER_CREATED, COFFER_INSUFFICIENT_BALANCE, 0);
    assert_int_equal(each.status, 200);
    assert_null(strstr(each.body, "\"atomic\":false,\"code\""));
    free(each.body);
}

/* id_reused on an item that matches its record (no field): the batch mixes recorded and new
 * items, and the problem says so instead of naming a field that does not differ. */
static void test_mixed_atomic_batch_says_so(void **state)
{
    (void)state;
    encoded mixed = two_item_batch(true, COFFER_BATCH_FAILED, COFFER_ID_REUSED, 0);
    assert_int_equal(mixed.status, 409);
    assert_non_null(strstr(mixed.body, "mixes recorded and new items (t-2 is recorded)"));
    assert_null(strstr(mixed.body, "\"field\""));
    assert_null(strstr(mixed.body, "with a different"));
    free(mixed.body);
    encoded changed = two_item_batch(true, COFFER_BATCH_FAILED, COFFER_ID_REUSED, "/amount");
    assert_non_null(strstr(changed.body, "id t-2 was used with a different amount"));
    assert_non_null(strstr(changed.body, "\"field\":\"/transfers/1/amount\""));
    free(changed.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_encoding_matches_jansson),
        cmocka_unit_test(test_fast_change_encoding_matches_jansson),
        cmocka_unit_test(test_out_of_range_numbers_name_their_field),
        cmocka_unit_test(test_simple_decoder_takes_only_the_plain_shape),
        cmocka_unit_test(test_time_text_is_exact_and_cut_as_snprintf_cuts),
        cmocka_unit_test(test_times_are_text_only),
        cmocka_unit_test(test_failed_atomic_batch_is_409),
        cmocka_unit_test(test_mixed_atomic_batch_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
