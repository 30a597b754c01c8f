/*
 * fuzz_parse.c — libFuzzer target for the query and time parsers (src/server/parse.c): any
 * bytes as a query value. An accepted number is within its bounds and written only then; an
 * accepted `at` is a seq only for digits and otherwise the time parse_time reads; and any
 * time the server writes (encode_time) parses back to the same nanosecond; an accepted list
 * of change types holds only known types; an accepted size (--memory-max) is the number its
 * digits and suffix say, within its bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coffer.h"
#include "server/encode.h"
#include "server/parse.h"

static void check_number(const char *text, uint64_t min, uint64_t max)
{
    uint64_t value = 7777;
    bool accepted = parse_number(text, min, max, &value);
    if (accepted && (value < min || value > max || text[0] == '-' || text[0] == '+'))
        abort(); /* out of bounds, or a sign taken */
    if (!accepted && value != 7777)
        abort(); /* a refused number must leave the output alone */
}

static void check_at(const char *text)
{
    int at = 0;
    uint64_t value = 0, time_value = 0;
    if (!parse_at(text, &at, &value))
        return;
    bool digits = text[0] >= '0' && text[0] <= '9';
    if (at == COFFER_AT_SEQ && !digits)
        abort(); /* a seq is digits */
    if (at == COFFER_AT_TIMESTAMP && (!parse_time(text, &time_value) || time_value != value))
        abort(); /* a time is what parse_time reads */
    if (at != COFFER_AT_SEQ && at != COFFER_AT_TIMESTAMP)
        abort();
}

/* An accepted list of change types names at least one type and only known ones. */
static void check_types(const char *text)
{
    uint32_t types = 0;
    if (!parse_change_types(text, &types))
        return;
    uint32_t known =
        COFFER_CHANGE_DEFAULT_TYPES | COFFER_CHANGE_BIT(COFFER_CHANGE_TRANSFER_REJECTED);
    if (types == 0 || (types & ~known) != 0)
        abort();
}

/* An accepted size is its digits times 1024 to the power its suffix says (computed here in
 * 128 bits, so an overflow the parser missed shows), and within bounds. */
static void check_size(const char *text, uint64_t min, uint64_t max)
{
    uint64_t value = 7777;
    bool accepted = parse_size(text, min, max, &value);
    if (!accepted) {
        if (value != 7777)
            abort(); /* a refused size must leave the output alone */
        return;
    }
    unsigned __int128 expected = 0;
    size_t i = 0;
    for (; text[i] >= '0' && text[i] <= '9'; i++)
        expected = expected * 10 + (unsigned)(text[i] - '0');
    const char *suffixes = "KMGT", *suffix = text[i] ? strchr(suffixes, text[i] & ~0x20) : 0;
    if (i == 0 || (text[i] && (!suffix || text[i + 1])))
        abort(); /* accepted something that is not digits and one suffix */
    for (int shift = suffix ? (int)(suffix - suffixes) + 1 : 0; shift > 0; shift--)
        expected *= 1024;
    if (expected != value || value < min || value > max)
        abort();
}

/* The first 8 bytes as a time below 2^62 ns (year 2116): written, then read back. */
static void check_round_trip(const uint8_t *data, size_t size)
{
    uint64_t ns = 0;
    for (size_t i = 0; i < 8 && i < size; i++)
        ns = ns << 8 | data[i];
    ns &= (1ULL << 62) - 1;
    char text[48];
    encode_time(text, sizeof text, ns);
    uint64_t parsed = 0;
    if (!parse_time(text, &parsed) || parsed != ns)
        abort(); /* the server could not read back a time it wrote */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0; /* query values are short; longer ones add nothing */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    check_number(text, 0, UINT64_MAX);
    check_number(text, 1, 1000);
    check_at(text);
    check_types(text);
    check_size(text, 0, UINT64_MAX);
    check_size(text, COFFER_MEMORY_BYTES_MIN, COFFER_MEMORY_BYTES_MAX);
    uint64_t ns;
    (void)parse_time(text, &ns);
    check_round_trip(data, size);
    free(text);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_parse", argc, argv);
}
#endif
