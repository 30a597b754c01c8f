/*
 * parse.c — see parse.h. Every input comes from the network: the parsers read only up to the
 * string's NUL and reject rather than guess.
 */
#define _GNU_SOURCE /* strptime, timegm */
#include "server/parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coffer.h"

bool parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*text || *text == '-' || *text == '+')
        return false;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *end || value < min || value > max)
        return false;
    *out = value;
    return true;
}

bool parse_size(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    static const char suffixes[] = "KMGTkmgt";
    size_t digits = strspn(text, "0123456789");
    if (digits == 0)
        return false;
    const char *suffix = text[digits] ? strchr(suffixes, text[digits]) : 0;
    if (text[digits] && (!suffix || text[digits + 1]))
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < digits; i++) {
        uint64_t digit = (uint64_t)(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    for (int shift = suffix ? (int)(suffix - suffixes) % 4 + 1 : 0; shift > 0; shift--) {
        if (value > UINT64_MAX / 1024)
            return false;
        value *= 1024;
    }
    if (value < min || value > max)
        return false;
    *out = value;
    return true;
}

bool parse_time(const char *text, uint64_t *out)
{
    struct tm parts = {0};
    const char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &parts);
    if (!rest)
        return false;
    uint64_t fraction = 0, scale = 1000000000ULL;
    if (*rest == '.') {
        rest++;
        int digits = 0;
        for (; *rest >= '0' && *rest <= '9'; rest++, digits++) {
            if (digits == 9)
                return false;
            scale /= 10;
            fraction = fraction * 10 + (uint64_t)(*rest - '0');
        }
        if (!digits)
            return false;
        fraction *= scale;
    }
    if (strcmp(rest, "Z") != 0)
        return false;
    time_t seconds = timegm(&parts);
    if (seconds < 0)
        return false;
    *out = (uint64_t)seconds * 1000000000ULL + fraction;
    return true;
}

bool parse_at(const char *text, int *at, uint64_t *at_value)
{
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(text, &end, 10);
    if (*text >= '0' && *text <= '9' && !*end && !errno) {
        *at = COFFER_AT_SEQ;
        *at_value = seq;
        return true;
    }
    if (!parse_time(text, at_value))
        return false;
    *at = COFFER_AT_TIMESTAMP;
    return true;
}

bool parse_change_types(const char *text, uint32_t *types)
{
    *types = 0;
    for (const char *at = text;;) {
        const char *comma = strchr(at, ',');
        size_t length = comma ? (size_t)(comma - at) : strlen(at);
        int type = coffer_change_type_parse(at, length);
        if (type == 0)
            return false;
        *types |= COFFER_CHANGE_BIT(type);
        if (!comma)
            return true;
        at = comma + 1;
    }
}
