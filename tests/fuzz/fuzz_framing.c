/*
 * fuzz_framing.c — libFuzzer target for the framing scanner (src/server/framing.c). The input's
 * first byte picks where the stream is cut; the rest is scanned whole, in two pieces cut there,
 * and a byte at a time. Reading never depends on how the bytes arrive: all three must agree on
 * the verdict, the refusal's code and detail, the requests passed and where the refused request
 * began in the stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/framing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct outcome {
    bool accepted;
    int code;
    const char *detail;
    uint64_t requests;
    size_t refused_at; /* the refused request's first byte in the stream */
} outcome;

/* Scans `bytes` in pieces that end at each of `cuts` (ascending, the last one `length`). */
static outcome scan_in_pieces(const uint8_t *bytes, size_t length, const size_t *cuts,
                              size_t cut_count)
{
    framing f;
    framing_init(&f);
    outcome result = {.accepted = true};
    size_t start = 0, request_start = 0;
    for (size_t c = 0; c < cut_count && start < length; c++) {
        framing_refusal refusal;
        size_t end = cuts[c] < length ? cuts[c] : length;
        if (end <= start)
            continue;
        bool accepted = framing_scan(&f, bytes + start, end - start, &refusal);
        if (refusal.request_start)
            request_start = start + refusal.request_start;
        if (!accepted) {
            result = (outcome){false, refusal.code, refusal.detail, f.requests, request_start};
            return result;
        }
        if (refusal.request_start > end - start)
            abort(); /* a request cannot begin past the piece */
        start = end;
    }
    result.requests = f.requests;
    return result;
}

static void same(const outcome *a, const outcome *b)
{
    if (a->accepted != b->accepted || a->requests != b->requests)
        abort();
    if (!a->accepted &&
        (a->code != b->code || strcmp(a->detail, b->detail) || a->refused_at != b->refused_at))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    const uint8_t *bytes = data + 1;
    size_t length = size - 1;
    size_t whole[] = {length};
    outcome once = scan_in_pieces(bytes, length, whole, 1);
    size_t cut = length ? (size_t)data[0] * length / 256 : 0;
    size_t two[] = {cut, length};
    outcome twice = scan_in_pieces(bytes, length, two, 2);
    same(&once, &twice);
    if (length <= 4096) {
        size_t *each = malloc((length + 1) * sizeof *each);
        if (!each)
            return 0;
        for (size_t i = 0; i < length; i++)
            each[i] = i + 1;
        outcome bytewise = scan_in_pieces(bytes, length, each, length);
        free(each);
        same(&once, &bytewise);
    }
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_framing", argc, argv);
}
#endif
