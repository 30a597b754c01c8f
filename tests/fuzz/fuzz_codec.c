/*
 * fuzz_codec.c — libFuzzer target for the HTTP request decoders (src/server/decode*.c): any bytes
 * as the body of POST /v1/accounts, POST /v1/transfers (with and without an Idempotency-Key)
 * and a hold post/void. Whatever decodes must be events the core can validate without
 * crashing, and encoding their results must not crash either. Whenever the simple decoder
 * takes a body, the general one must give the same code, error and event.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coffer.h"
#include "core/ledger.h"
#include "server/decode.h"
#include "server/encode.h"

static void check_batch(const decode_batch *batch)
{
    for (size_t i = 0; i < batch->count; i++) {
        const coffer_event *event = &batch->events[i];
        int field;
        (void)ledger_validate(event, &field);
        coffer_result result = {
            .code = COFFER_CREATED, .seq = 1, .timestamp = 1, .state = COFFER_STATE_POSTED};
        if (event->id && (event->op != COFFER_OP_TRANSFER || (event->from && event->to)) &&
            (event->op != COFFER_OP_CREATE_ACCOUNT || event->currency) &&
            ((event->op != COFFER_OP_POST && event->op != COFFER_OP_VOID) || event->hold_id)) {
            encoded response;
            encode_write(&response, event, &result, 1, false, false);
            free(response.body);
            result.code = COFFER_INSUFFICIENT_BALANCE;
            result.field = "/amount";
            encode_write(&response, event, &result, 1, true, false);
            free(response.body);
        }
    }
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static bool same_event(const coffer_event *a, const coffer_event *b)
{
    return a->op == b->op && a->flags == b->flags && a->amount == b->amount &&
           a->min_balance == b->min_balance && a->max_balance == b->max_balance &&
           a->hold_timeout_ms == b->hold_timeout_ms &&
           a->expect_from_version == b->expect_from_version &&
           a->expect_to_version == b->expect_to_version && a->metadata_len == b->metadata_len &&
           same_text(a->id, b->id) && same_text(a->from, b->from) && same_text(a->to, b->to) &&
           same_text(a->hold_id, b->hold_id) && same_text(a->currency, b->currency);
}

/* The simple decoder, where it takes the body, against the general one. */
static void check_simple(const char *body, size_t size, const char *key)
{
    decode_batch simple, general;
    decode_error simple_error, general_error;
    int simple_code;
    if (!decode_transfers_simple(body, size, key, &simple, &simple_error, &simple_code))
        return;
    int general_code = decode_transfers_general(body, size, key, &general, &general_error);
    bool same = simple_code == general_code && simple.count == general.count &&
                simple.batch == general.batch && simple.atomic == general.atomic &&
                simple_error.code == general_error.code &&
                !strcmp(simple_error.field, general_error.field) &&
                !strcmp(simple_error.detail, general_error.detail);
    for (size_t i = 0; same && i < simple.count; i++)
        same = same_event(&simple.events[i], &general.events[i]);
    if (!same)
        abort(); /* the decoders disagree on this body */
    decode_batch_free(&simple);
    decode_batch_free(&general);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    decode_batch batch;
    decode_error error;
    if (decode_accounts(body, size, &batch, &error) == COFFER_OK)
        check_batch(&batch);
    decode_batch_free(&batch);
    if (decode_transfers(body, size, 0, &batch, &error) == COFFER_OK)
        check_batch(&batch);
    decode_batch_free(&batch);
    if (decode_transfers(body, size, "key-1", &batch, &error) == COFFER_OK)
        check_batch(&batch);
    decode_batch_free(&batch);
    check_simple(body, size, 0);
    check_simple(body, size, "key-1");
    if (decode_resolution(body, size, COFFER_OP_POST, "hold-1", "key-2", &batch, &error) ==
        COFFER_OK)
        check_batch(&batch);
    decode_batch_free(&batch);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_codec", argc, argv);
}
#endif
