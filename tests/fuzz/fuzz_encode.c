/*
 * fuzz_encode.c — libFuzzer target for the response encoders (src/server/encode*.c): any bytes
 * become a transfer event and its result, in the ranges the engine can produce (validated ids,
 * times and versions below 2^62). Whenever the fast encoder takes the event, its text must be
 * byte for byte the general encoder's, as a body and as a batch item; the whole write answer
 * (single and batch) must encode without crashing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "coffer.h"
#include "server/encode.h"

/* Reads the input front to back; past its end every read gives zeros. */
typedef struct input {
    const uint8_t *at, *end;
} input;

static uint64_t take_u64(input *in)
{
    uint64_t value = 0;
    for (int i = 0; i < 8 && in->at < in->end; i++)
        value = value << 8 | *in->at++;
    return value;
}

/* An id of 1..max characters from the validated alphabet, written into `out`. */
static const char *take_id(input *in, char *out, size_t max)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789._:@/-";
    size_t length = 1 + (in->at < in->end ? *in->at++ : 0) % max;
    for (size_t i = 0; i < length; i++)
        out[i] = alphabet[(in->at < in->end ? *in->at++ : 0) % (sizeof alphabet - 1)];
    out[length] = 0;
    return out;
}

static void check_same(const coffer_event *event, const coffer_result *result, bool item)
{
    text_buffer fast = {0}, general = {0};
    bool took = encode_success_fast(&fast, event, result, item);
    if (event->metadata_len && took)
        abort(); /* the fast encoder does not write metadata: it must decline */
    if (took) {
        encode_success(&general, event, result, item);
        if (fast.failed || general.failed || fast.length != general.length ||
            memcmp(fast.bytes, general.bytes, fast.length) != 0)
            abort(); /* the encoders disagree on this event */
    }
    free(fast.bytes);
    free(general.bytes);
}

/* The same event as a change of the feed: whenever the fast change encoder takes it, its text
 * must be the tree's. */
static void check_same_change(const coffer_event *event, const coffer_result *result,
                              uint64_t shape)
{
    coffer_change change = {.seq = result->seq,
                            .timestamp = result->timestamp,
                            .type = shape & 32 ? COFFER_CHANGE_HOLD_CREATED
                                               : COFFER_CHANGE_TRANSFER_POSTED,
                            .submitted_by = shape & 64 ? "shop" : 0,
                            .event = *event,
                            .result = *result};
    text_buffer fast = {0};
    if (encode_change_fast(&fast, &change)) {
        json_t *tree = encode_change_json(&change);
        char *general = tree ? json_dumps(tree, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
        json_decref(tree);
        if (general && (fast.failed || strlen(general) != fast.length ||
                        memcmp(general, fast.bytes, fast.length) != 0))
            abort(); /* the change encoders disagree */
        free(general);
    } else if (!event->metadata_len) {
        abort(); /* a posted transfer or created hold without metadata is the fast one's */
    }
    free(fast.bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint64_t below_2_62 = (1ULL << 62) - 1;
    input in = {data, data + size};
    char id[COFFER_TRANSFER_ID_MAX + 1], from[COFFER_ACCOUNT_ID_MAX + 1],
        to[COFFER_ACCOUNT_ID_MAX + 1];
    uint64_t shape = take_u64(&in);
    coffer_event event = {.op = COFFER_OP_TRANSFER, .amount = (int64_t)take_u64(&in)};
    event.flags = shape & 1 ? COFFER_FLAG_UP_TO : 0;
    event.hold_timeout_ms = shape & 2 ? 1 + take_u64(&in) % COFFER_HOLD_TIMEOUT_MS_MAX : 0;
    if (shape & 4) {
        event.metadata = "{\"order\":7}";
        event.metadata_len = (uint32_t)strlen(event.metadata);
    }
    coffer_result result = {
        .code = shape & 8 ? COFFER_EXISTS : COFFER_CREATED,
        .replayed = (shape & 8) != 0,
        .state = (uint8_t)((shape >> 4) % 7),
        .seq = take_u64(&in) & below_2_62,
        .timestamp = take_u64(&in) & below_2_62,
        .amount = (int64_t)take_u64(&in),
        .expires_at = take_u64(&in) & below_2_62,
    };
    coffer_account_after *sides[2] = {&result.from, &result.to};
    for (int i = 0; i < 2; i++)
        *sides[i] = (coffer_account_after){(int64_t)take_u64(&in), (int64_t)take_u64(&in),
                                           take_u64(&in) & below_2_62};
    event.id = take_id(&in, id, COFFER_TRANSFER_ID_MAX);
    event.from = take_id(&in, from, COFFER_ACCOUNT_ID_MAX);
    event.to = take_id(&in, to, COFFER_ACCOUNT_ID_MAX);
    check_same(&event, &result, false);
    check_same(&event, &result, true);
    check_same_change(&event, &result, shape);
    for (int list = 0; list < 2; list++) {
        encoded response;
        encode_write(&response, &event, &result, 1, list, shape & 16);
        if (!response.body)
            abort(); /* only an allocation failure may leave no body */
        free(response.body);
    }
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_encode", argc, argv);
}
#endif
