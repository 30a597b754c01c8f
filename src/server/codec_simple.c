/*
 * codec_simple.c — the body nearly every single transfer has, {"id": "…", "from": "…",
 * "to": "…", "amount": N} with plain ASCII strings, decoded in one pass without building a
 * JSON tree. Anything else — another key, an escape, a byte outside printable ASCII, a number
 * that is not a plain non-negative integer, a repeated or missing key, bytes after the object —
 * is declined and goes to the general decoder, so an answer never depends on which decoder
 * read the body. The fuzz target and test_codec check that both agree on every body this one
 * takes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/codec.h"

typedef struct cursor {
    char *at;
    const char *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r'))
        c->at++;
}

static bool take(cursor *c, char expected)
{
    skip_space(c);
    if (c->at == c->end || *c->at != expected)
        return false;
    c->at++;
    return true;
}

/* A string of printable ASCII without escapes. Its closing quote becomes its NUL. */
static char *plain_string(cursor *c)
{
    if (!take(c, '"'))
        return 0;
    char *start = c->at;
    while (c->at < c->end && *c->at != '"') {
        unsigned char byte = (unsigned char)*c->at;
        if (byte < 0x20 || byte > 0x7e || byte == '\\')
            return 0;
        c->at++;
    }
    if (c->at == c->end)
        return 0;
    *c->at++ = 0;
    return start;
}

/* A non-negative JSON integer that fits in int64_t (no sign, fraction, exponent or leading 0). */
static bool plain_integer(cursor *c, int64_t *out)
{
    skip_space(c);
    const char *digits = c->at;
    uint64_t value = 0;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9') {
        uint64_t digit = (uint64_t)(*c->at - '0');
        if (value > ((uint64_t)INT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
        c->at++;
    }
    size_t length = (size_t)(c->at - digits);
    if (length == 0 || (digits[0] == '0' && length > 1))
        return false;
    if (c->at < c->end && (*c->at == '.' || *c->at == 'e' || *c->at == 'E'))
        return false;
    *out = (int64_t)value;
    return true;
}

enum { KEY_ID = 1, KEY_FROM = 2, KEY_TO = 4, KEY_AMOUNT = 8 };

static int key_of(const char *name)
{
    if (!strcmp(name, "id"))
        return KEY_ID;
    if (!strcmp(name, "from"))
        return KEY_FROM;
    if (!strcmp(name, "to"))
        return KEY_TO;
    if (!strcmp(name, "amount"))
        return KEY_AMOUNT;
    return 0;
}

/* The members of the object after its '{': true when they are the simple shape. */
static bool simple_members(cursor *c, coffer_event *event)
{
    int seen = 0;
    do {
        char *name = plain_string(c);
        int key = name ? key_of(name) : 0;
        if (!key || (seen & key) || !take(c, ':'))
            return false;
        seen |= key;
        if (key == KEY_AMOUNT) {
            if (!plain_integer(c, &event->amount))
                return false;
            continue;
        }
        char *value = plain_string(c);
        if (!value)
            return false;
        *(key == KEY_ID ? &event->id : key == KEY_FROM ? &event->from : &event->to) = value;
    } while (take(c, ','));
    return take(c, '}') && (seen | KEY_ID) == (KEY_ID | KEY_FROM | KEY_TO | KEY_AMOUNT);
}

bool codec_decode_simple_transfer(const char *body, size_t length, const char *key,
                                  codec_batch *out, codec_error *error, int *code)
{
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    if (length == 0 || length > 1024)
        return false;
    char *text = malloc(length + 1);
    coffer_event *event = calloc(1, sizeof *event);
    if (!text || !event) {
        free(text);
        free(event);
        return false; /* the general decoder reports it */
    }
    memcpy(text, body, length);
    text[length] = 0;
    cursor c = {text, text + length};
    event->op = COFFER_OP_TRANSFER;
    bool simple = take(&c, '{') && simple_members(&c, event);
    skip_space(&c);
    if (!simple || c.at != c.end) {
        free(text);
        free(event);
        return false;
    }
    out->text = text;
    out->events = event;
    out->count = 1;
    *code = codec_apply_key(event, key, error);
    return true;
}
