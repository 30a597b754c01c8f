/*
 * fuzz_codec.c — libFuzzer target for the HTTP request decoder (src/server/codec.c): any bytes
 * as the body of POST /v1/accounts, POST /v1/transfers (with and without an Idempotency-Key)
 * and a hold post/void. Whatever decodes must be events the core can validate without
 * crashing, and encoding their results must not crash either.
 */
#include <stdint.h>
#include <string.h>

#include "coffer.h"
#include "core/ledger.h"
#include "server/codec.h"

static void check_batch(const codec_batch *batch)
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
            json_decref(codec_event_success(event, &result));
            result.code = COFFER_INSUFFICIENT_BALANCE;
            result.field = "/amount";
            json_decref(codec_event_problem(event, &result, "/transfers/0"));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    codec_batch batch;
    codec_error error;
    if (codec_decode_accounts(body, size, &batch, &error) == COFFER_OK)
        check_batch(&batch);
    codec_batch_free(&batch);
    if (codec_decode_transfers(body, size, 0, &batch, &error) == COFFER_OK)
        check_batch(&batch);
    codec_batch_free(&batch);
    if (codec_decode_transfers(body, size, "key-1", &batch, &error) == COFFER_OK)
        check_batch(&batch);
    codec_batch_free(&batch);
    if (codec_decode_resolution(body, size, COFFER_OP_POST, "hold-1", "key-2", &batch, &error) ==
        COFFER_OK)
        check_batch(&batch);
    codec_batch_free(&batch);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_codec", argc, argv);
}
#endif
