/*
 * decode_simple.c — the bodies nearly every transfer request has, decoded in one pass without
 * building a JSON tree: a single transfer {"id": "…", "from": "…", "to": "…", "amount": N}
 * with plain ASCII strings, and a batch {"atomic": b, "transfers": [...]} of such transfers,
 * each with its id. Anything else — another key, an escape, a byte outside printable ASCII, a
 * number that is not a plain non-negative integer, a repeated or missing key, bytes after the
 * object — is declined and goes to the general decoder, so an answer never depends on which decoder
 * read the body. The fuzz target and test_codec check that both agree on every body this one
 * takes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/decode.h"

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

/* A literal (true, false) after optional space. */
static bool literal(cursor *c, const char *word)
{
    skip_space(c);
    size_t length = strlen(word);
    if ((size_t)(c->end - c->at) < length || memcmp(c->at, word, length) != 0)
        return false;
    c->at += length;
    return true;
}

/* The rest of a transfer object whose first key, `name`, has been read: true when it is the
 * simple shape, its closing brace included. */
static bool simple_members(cursor *c, const char *name, coffer_event *event)
{
    int seen = 0;
    for (;;) {
        int key = name ? key_of(name) : 0;
        if (!key || (seen & key) || !take(c, ':'))
            return false;
        seen |= key;
        if (key == KEY_AMOUNT) {
            if (!plain_integer(c, &event->amount))
                return false;
        } else {
            char *value = plain_string(c);
            if (!value)
                return false;
            *(key == KEY_ID ? &event->id : key == KEY_FROM ? &event->from : &event->to) = value;
        }
        if (!take(c, ','))
            break;
        name = plain_string(c);
    }
    event->op = COFFER_OP_TRANSFER;
    return take(c, '}') && (seen | KEY_ID) == (KEY_ID | KEY_FROM | KEY_TO | KEY_AMOUNT);
}

/* The array of a batch: simple transfers, each with its id, 1 to COFFER_BATCH_EVENTS_MAX. */
static bool simple_list(cursor *c, decode_batch *out)
{
    if (!take(c, '['))
        return false;
    size_t capacity = 0;
    do {
        if (out->count == COFFER_BATCH_EVENTS_MAX)
            return false; /* the general decoder answers batch_too_large */
        if (out->count == capacity) {
            capacity = capacity ? capacity * 4 : 16;
            if (capacity > COFFER_BATCH_EVENTS_MAX)
                capacity = COFFER_BATCH_EVENTS_MAX;
            coffer_event *grown = realloc(out->events, capacity * sizeof *grown);
            if (!grown)
                return false;
            memset(grown + out->count, 0, (capacity - out->count) * sizeof *grown);
            out->events = grown;
        }
        coffer_event *event = &out->events[out->count++];
        if (!take(c, '{') || !simple_members(c, plain_string(c), event) || !event->id)
            return false;
    } while (take(c, ','));
    return take(c, ']');
}

/* The rest of a batch body whose first key, `name`, has been read: "transfers" once, and
 * "atomic" (true or false) at most once. */
static bool simple_batch(cursor *c, const char *name, decode_batch *out)
{
    bool seen_atomic = false, seen_list = false;
    for (;;) {
        if (!name || !take(c, ':'))
            return false;
        if (!strcmp(name, "atomic") && !seen_atomic) {
            seen_atomic = true;
            out->atomic = literal(c, "true");
            if (!out->atomic && !literal(c, "false"))
                return false;
        } else if (!strcmp(name, "transfers") && !seen_list) {
            seen_list = true;
            if (!simple_list(c, out))
                return false;
        } else {
            return false;
        }
        if (!take(c, ','))
            break;
        name = plain_string(c);
    }
    out->batch = true;
    return take(c, '}') && seen_list;
}

bool decode_transfers_simple(const char *body, size_t length, const char *key, decode_batch *out,
                             decode_error *error, int *code)
{
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    if (length == 0 || length > DECODE_BODY_MAX)
        return false;
    char *text = malloc(length + 1);
    if (!text)
        return false; /* the general decoder reports it */
    memcpy(text, body, length);
    text[length] = 0;
    cursor c = {text, text + length};
    const char *name = take(&c, '{') ? plain_string(&c) : 0;
    bool batch = name && (!strcmp(name, "atomic") || !strcmp(name, "transfers"));
    bool simple;
    if (batch) {
        simple = !key && simple_batch(&c, name, out); /* a key with a batch is an error */
    } else {
        out->events = calloc(1, sizeof *out->events);
        out->count = 1;
        simple = out->events && simple_members(&c, name, &out->events[0]);
    }
    skip_space(&c);
    if (!simple || c.at != c.end) {
        free(text);
        free(out->events);
        memset(out, 0, sizeof *out);
        return false;
    }
    out->text = text;
    *code = batch ? COFFER_OK : decode_apply_key(&out->events[0], key, error);
    return true;
}
