/*
 * fuzz_tokens.c — libFuzzer target for the tokens file parser (src/server/tokens.c). Any input
 * is parsed; a table that parses must survive a round trip: every token formatted back to its
 * line and parsed again gives the same token, and authentication of garbage finds nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const tokens *table)
{
    static char text[64 * TOKEN_LINE_MAX];
    size_t length = (size_t)snprintf(text, sizeof text, "coffer-tokens 1\n");
    size_t count = tokens_count(table) < 64 ? tokens_count(table) : 64;
    for (size_t i = 0; i < count; i++) {
        if (!token_format_line(tokens_at(table, i), text + length, sizeof text - length))
            abort();
        length += strlen(text + length);
    }
    char error[200];
    tokens *again = tokens_parse(text, length, error, sizeof error);
    if (!again || tokens_count(again) != count)
        abort();
    for (size_t i = 0; i < count; i++) {
        const token *a = tokens_at(table, i), *b = tokens_at(again, i);
        if (strcmp(a->name, b->name) || a->scope != b->scope ||
            a->prefix_count != b->prefix_count || a->created_at_s != b->created_at_s ||
            memcmp(a->hash, b->hash, TOKEN_HASH_BYTES))
            abort();
        for (size_t p = 0; p < a->prefix_count; p++)
            if (strcmp(a->prefixes[p], b->prefixes[p]))
                abort();
    }
    tokens_release(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char error[200];
    tokens *table = tokens_parse((const char *)data, size, error, sizeof error);
    if (!table) {
        if (!error[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    round_trip(table);
    if (tokens_authenticate(
            table, "Bearer cft_0000000000000000000000000000000000000000000000000000000000000000"))
        abort(); /* no hash in a parsed file can be that secret's by chance */
    tokens_release(table);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_tokens", argc, argv);
}
#endif
