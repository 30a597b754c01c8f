/*
 * test_codec.c — the HTTP codec: the hand-written hot-path encoding of a created transfer is
 * byte for byte what the general jansson encoder writes (replays depend on one body), and
 * decoding names the field of out-of-range numbers with a JSON pointer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/codec.h"

static void assert_same_text(const coffer_event *event, const coffer_result *result)
{
    size_t length;
    char *fast = codec_transfer_created_text(event, result, &length);
    assert_non_null(fast);
    json_t *body = codec_event_success(event, result);
    char *general = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    assert_string_equal(fast, general);
    assert_int_equal(length, strlen(general));
    free(fast);
    free(general);
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
    coffer_event with_metadata = plain;
    with_metadata.metadata = "{\"a\":1}";
    with_metadata.metadata_len = 7;
    size_t length;
    assert_null(codec_transfer_created_text(&with_metadata, &result, &length));
}

static void expect_field(const char *body, const char *code_field)
{
    codec_batch batch;
    codec_error error;
    int code = codec_decode_transfers(body, strlen(body), 0, &batch, &error);
    assert_int_equal(code, COFFER_INVALID_FIELD);
    assert_string_equal(error.field, code_field);
    codec_batch_free(&batch);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_encoding_matches_jansson),
        cmocka_unit_test(test_out_of_range_numbers_name_their_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
