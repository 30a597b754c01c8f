/*
 * decode.c — JSON request bodies to events (see decode.h), through jansson. It treats bodies as
 * hostile: it checks every type and range, rejects unknown fields and embedded NULs, and bounds
 * everything it keeps. The core validates the values again (ids, currencies, limits).
 */
#include "server/decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- decoding helpers ---------------------------------------------------------------------- */

typedef struct decoder {
    decode_batch *batch;
    decode_error *error;
    char prefix[DECODE_FIELD_MAX / 2]; /* "/transfers/12" in a batch, "" for a single item */
} decoder;

static int fail(decoder *d, int code, const char *field, const char *detail)
{
    d->error->code = code;
    snprintf(d->error->field, sizeof d->error->field, "%s%s", d->prefix, field ? field : "");
    snprintf(d->error->detail, sizeof d->error->detail, "%s", detail);
    return code;
}

/* A string field: present, a string, no embedded NUL. *out NULL when absent and optional. */
static int take_string(decoder *d, json_t *object, const char *key, const char *field,
                       bool required, const char **out)
{
    json_t *value = json_object_get(object, key);
    *out = 0;
    if (!value)
        return required ? fail(d, COFFER_INVALID_FIELD, field, "required") : COFFER_OK;
    if (!json_is_string(value))
        return fail(d, COFFER_INVALID_FIELD, field, "must be a string");
    const char *text = json_string_value(value);
    if (strlen(text) != json_string_length(value))
        return fail(d, COFFER_INVALID_FIELD, field, "must not contain NUL");
    *out = text;
    return COFFER_OK;
}

/* An integer field; `null_ok`: null is allowed and sets *is_null. */
static int take_integer(decoder *d, json_t *object, const char *key, const char *field,
                        bool null_ok, int64_t *out, bool *present, bool *is_null)
{
    json_t *value = json_object_get(object, key);
    *present = value != 0;
    if (is_null)
        *is_null = false;
    if (!value)
        return COFFER_OK;
    if (json_is_null(value) && null_ok) {
        *is_null = true;
        return COFFER_OK;
    }
    if (!json_is_integer(value))
        return fail(d, COFFER_INVALID_FIELD, field,
                    null_ok ? "must be an integer or null" : "must be an integer");
    *out = (int64_t)json_integer_value(value);
    return COFFER_OK;
}

/* True when serialized JSON holds the escape \u0000: a NUL, which stored metadata must not
 * carry (a C reader of it would stop there). An escaped backslash before "u0000" is not one. */
static bool has_escaped_nul(const char *text)
{
    for (const char *c = text; *c; c++) {
        if (*c != '\\')
            continue;
        if (!strncmp(c + 1, "u0000", 5))
            return true;
        if (c[1])
            c++; /* the escaped character cannot start another escape */
    }
    return false;
}

static int take_metadata(decoder *d, json_t *object, coffer_event *event)
{
    json_t *value = json_object_get(object, "metadata");
    if (!value || json_is_null(value))
        return COFFER_OK;
    if (!json_is_object(value))
        return fail(d, COFFER_INVALID_FIELD, "/metadata", "must be an object");
    char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!text)
        return fail(d, COFFER_INVALID_FIELD, "/metadata", "cannot be serialized");
    size_t length = strlen(text);
    bool nul = has_escaped_nul(text);
    decode_batch *batch = d->batch;
    char **owned = realloc(batch->owned, (batch->owned_count + 1) * sizeof *owned);
    if (!owned) {
        free(text);
        return fail(d, COFFER_OUT_OF_MEMORY, "/metadata", "out of memory");
    }
    batch->owned = owned;
    batch->owned[batch->owned_count++] = text;
    if (length > COFFER_METADATA_MAX)
        return fail(d, COFFER_INVALID_FIELD, "/metadata", "larger than 1024 bytes serialized");
    if (nul)
        return fail(d, COFFER_INVALID_FIELD, "/metadata", "a NUL (\\u0000) in a key or string");
    event->metadata = text;
    event->metadata_len = (uint32_t)length;
    return COFFER_OK;
}

const char *decode_unknown_key(json_t *object, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value)
    {
        (void)value;
        bool known = false;
        for (const char *const *name = allowed; *name && !known; name++)
            known = !strcmp(key, *name);
        if (!known)
            return key;
    }
    return 0;
}

/* Every key of `object` must be in `allowed` (NULL-terminated). */
static int only_known(decoder *d, json_t *object, const char *const *allowed)
{
    const char *key = decode_unknown_key(object, allowed);
    if (!key)
        return COFFER_OK;
    char field[DECODE_FIELD_MAX / 2];
    snprintf(field, sizeof field, "/%.40s", key);
    return fail(d, COFFER_INVALID_FIELD, field, "unknown field");
}

/* The JSON pointer of the value at `position` in a body that is valid JSON up to there: a
 * small scan that tracks object keys and array indices (RFC 6901 escapes for ~ and /). */
static void pointer_at(const char *body, size_t position, char *out, size_t size)
{
    enum { DEPTH = 16 };
    struct frame {
        bool array, key_next;
        size_t index;
        char key[40];
    } stack[DEPTH];
    int depth = 0;
    for (size_t i = 0; i < position; i++) {
        char c = body[i];
        struct frame *top = depth > 0 && depth <= DEPTH ? &stack[depth - 1] : 0;
        if (c == '"') {
            size_t used = 0;
            char text[40];
            for (i++; i < position && body[i] != '"'; i++) {
                if (body[i] == '\\')
                    i++;
                if (used + 1 < sizeof text)
                    text[used++] = body[i];
            }
            text[used] = 0;
            if (top && !top->array && top->key_next) {
                memcpy(top->key, text, used + 1);
                top->key_next = false;
            }
        } else if (c == '{' || c == '[') {
            if (++depth <= DEPTH)
                stack[depth - 1] = (struct frame){c == '[', c == '{', 0, ""};
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && top) {
            if (top->array)
                top->index++;
            else
                top->key_next = true;
        }
    }
    size_t used = 0;
    out[0] = 0;
    for (int level = 0; level < depth && level < DEPTH && used + 1 < size; level++) {
        if (stack[level].array) {
            used += (size_t)snprintf(out + used, size - used, "/%zu", stack[level].index);
            continue;
        }
        used += (size_t)snprintf(out + used, size - used, "/");
        for (const char *k = stack[level].key; *k && used + 3 < size; k++) {
            if (*k == '~' || *k == '/') {
                out[used++] = '~';
                out[used++] = *k == '~' ? '0' : '1';
            } else {
                out[used++] = *k;
            }
        }
        out[used] = 0;
    }
}

static int parse_body(const char *body, size_t length, json_t **root, decode_error *error)
{
    json_error_t parse_error;
    /* NUL in strings parses (it is valid JSON), so the field check can name the field. */
    *root = length ? json_loadb(body, length, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &parse_error)
                   : 0;
    if (*root && json_is_object(*root))
        return COFFER_OK;
    if (!*root && length && json_error_code(&parse_error) == json_error_numeric_overflow) {
        /* Valid JSON whose number does not fit: the field is wrong, not the syntax. */
        error->code = COFFER_INVALID_FIELD;
        pointer_at(body, (size_t)parse_error.position, error->field, sizeof error->field);
        snprintf(error->detail, sizeof error->detail,
                 "a number outside the signed 64-bit range (line %d, column %d)", parse_error.line,
                 parse_error.column);
        return COFFER_INVALID_FIELD;
    }
    error->code = COFFER_INVALID_JSON;
    error->field[0] = 0;
    if (!length)
        snprintf(error->detail, sizeof error->detail, "the body is empty");
    else if (*root)
        snprintf(error->detail, sizeof error->detail, "the body must be a JSON object");
    else
        snprintf(error->detail, sizeof error->detail, "%s (line %d, column %d)", parse_error.text,
                 parse_error.line, parse_error.column);
    json_decref(*root);
    *root = 0;
    return COFFER_INVALID_JSON;
}

/* The items of a batch body ("accounts" or "transfers"): their count, bounded. */
static int batch_items(decoder *d, json_t *list, const char *name, size_t *count)
{
    char field[32];
    snprintf(field, sizeof field, "/%s", name);
    if (!json_is_array(list))
        return fail(d, COFFER_INVALID_FIELD, field, "must be an array");
    *count = json_array_size(list);
    if (*count == 0)
        return fail(d, COFFER_INVALID_FIELD, field, "must not be empty");
    if (*count > COFFER_BATCH_EVENTS_MAX)
        return fail(d, COFFER_BATCH_TOO_LARGE, field, "more than 8190 items");
    d->batch->events = calloc(*count, sizeof *d->batch->events);
    if (!d->batch->events)
        return fail(d, COFFER_OUT_OF_MEMORY, field, "out of memory");
    return COFFER_OK;
}

/* A body of one event (not a list): out->events holds it. */
static int one_event(decoder *d)
{
    d->batch->events = calloc(1, sizeof *d->batch->events);
    if (!d->batch->events)
        return fail(d, COFFER_OUT_OF_MEMORY, "", "out of memory");
    d->batch->count = 1;
    return COFFER_OK;
}

/* ---- accounts ------------------------------------------------------------------------------ */

static int decode_account(decoder *d, json_t *object, coffer_event *event)
{
    static const char *const allowed[] = {"id",          "currency", "min_balance",
                                          "max_balance", "metadata", 0};
    if (!json_is_object(object))
        return fail(d, COFFER_INVALID_FIELD, "", "must be an object");
    int code = only_known(d, object, allowed);
    event->op = COFFER_OP_CREATE_ACCOUNT;
    if (!code)
        code = take_string(d, object, "id", "/id", true, &event->id);
    if (!code)
        code = take_string(d, object, "currency", "/currency", true, &event->currency);
    bool present, is_null;
    if (!code)
        code = take_integer(d, object, "min_balance", "/min_balance", true, &event->min_balance,
                            &present, &is_null);
    if (!code && is_null)
        event->flags |= COFFER_FLAG_MIN_UNBOUNDED;
    if (!code)
        code = take_integer(d, object, "max_balance", "/max_balance", true, &event->max_balance,
                            &present, &is_null);
    if (!code && present && !is_null)
        event->flags |= COFFER_FLAG_HAS_MAX;
    if (!code)
        code = take_metadata(d, object, event);
    return code;
}

int decode_accounts(const char *body, size_t length, decode_batch *out, decode_error *error)
{
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    int code = parse_body(body, length, &out->root, error);
    if (code)
        return code;
    decoder d = {out, error, ""};
    json_t *list = json_object_get(out->root, "accounts");
    if (!list) {
        code = one_event(&d);
        return code ? code : decode_account(&d, out->root, &out->events[0]);
    }
    out->batch = true;
    static const char *const allowed[] = {"accounts", 0};
    code = only_known(&d, out->root, allowed);
    if (!code)
        code = batch_items(&d, list, "accounts", &out->count);
    for (size_t i = 0; !code && i < out->count; i++) {
        snprintf(d.prefix, sizeof d.prefix, "/accounts/%zu", i);
        code = decode_account(&d, json_array_get(list, i), &out->events[i]);
    }
    return code;
}

/* ---- transfers ----------------------------------------------------------------------------- */

static int decode_hold(decoder *d, json_t *object, coffer_event *event)
{
    json_t *hold = json_object_get(object, "hold");
    if (!hold || json_is_null(hold))
        return COFFER_OK;
    static const char *const allowed[] = {"timeout_ms", 0};
    if (!json_is_object(hold))
        return fail(d, COFFER_INVALID_FIELD, "/hold", "must be an object");
    char saved[sizeof d->prefix];
    memcpy(saved, d->prefix, sizeof saved);
    snprintf(d->prefix, sizeof d->prefix, "%.40s/hold", saved);
    int code = only_known(d, hold, allowed);
    memcpy(d->prefix, saved, sizeof saved);
    if (code)
        return code;
    int64_t timeout = 0;
    bool present;
    code = take_integer(d, hold, "timeout_ms", "/hold/timeout_ms", false, &timeout, &present, 0);
    if (code)
        return code;
    if (!present || timeout < 1)
        return fail(d, COFFER_INVALID_FIELD, "/hold/timeout_ms", "must be an integer >= 1");
    event->hold_timeout_ms = (uint64_t)timeout;
    return COFFER_OK;
}

static int decode_expect(decoder *d, json_t *object, coffer_event *event)
{
    json_t *expect = json_object_get(object, "expect");
    if (!expect || json_is_null(expect))
        return COFFER_OK;
    if (!json_is_object(expect))
        return fail(d, COFFER_INVALID_FIELD, "/expect", "must be an object");
    struct {
        const char *key, *field;
        uint8_t flag;
        uint64_t *out;
    } versions[2] = {
        {"from_version", "/expect/from_version", COFFER_FLAG_EXPECT_FROM,
         &event->expect_from_version},
        {"to_version", "/expect/to_version", COFFER_FLAG_EXPECT_TO, &event->expect_to_version},
    };
    const char *key;
    json_t *value;
    json_object_foreach(expect, key, value)
    {
        if (strcmp(key, "from_version") && strcmp(key, "to_version")) {
            char field[DECODE_FIELD_MAX / 2];
            snprintf(field, sizeof field, "/expect/%.30s", key);
            return fail(d, COFFER_INVALID_FIELD, field, "unknown field");
        }
    }
    for (int i = 0; i < 2; i++) {
        int64_t version = 0;
        bool present;
        int code = take_integer(d, expect, versions[i].key, versions[i].field, false, &version,
                                &present, 0);
        if (code)
            return code;
        if (!present)
            continue;
        if (version < 0)
            return fail(d, COFFER_INVALID_FIELD, versions[i].field, "must be >= 0");
        event->flags |= versions[i].flag;
        *versions[i].out = (uint64_t)version;
    }
    return COFFER_OK;
}

static int decode_transfer(decoder *d, json_t *object, coffer_event *event)
{
    static const char *const allowed[] = {"id",     "from",  "to",       "amount", "hold",
                                          "expect", "up_to", "metadata", 0};
    event->op = COFFER_OP_TRANSFER;
    int code = only_known(d, object, allowed);
    if (!code)
        code = take_string(d, object, "id", "/id", false, &event->id);
    if (!code)
        code = take_string(d, object, "from", "/from", true, &event->from);
    if (!code)
        code = take_string(d, object, "to", "/to", true, &event->to);
    bool present;
    if (!code)
        code = take_integer(d, object, "amount", "/amount", false, &event->amount, &present, 0);
    if (!code && !present)
        code = fail(d, COFFER_INVALID_FIELD, "/amount", "required");
    if (!code)
        code = decode_hold(d, object, event);
    if (!code)
        code = decode_expect(d, object, event);
    json_t *up_to = json_object_get(object, "up_to");
    if (!code && up_to && !json_is_boolean(up_to))
        code = fail(d, COFFER_INVALID_FIELD, "/up_to", "must be a boolean");
    if (!code && json_is_true(up_to))
        event->flags |= COFFER_FLAG_UP_TO;
    if (!code)
        code = take_metadata(d, object, event);
    return code;
}

/* {"id", "post": HOLD, "amount"?} or {"id", "void": HOLD}: a batch item resolving a hold. */
static int decode_resolution_item(decoder *d, json_t *object, coffer_event *event)
{
    bool post = json_object_get(object, "post") != 0;
    static const char *const post_allowed[] = {"id", "post", "amount", "metadata", 0};
    static const char *const void_allowed[] = {"id", "void", "metadata", 0};
    event->op = post ? COFFER_OP_POST : COFFER_OP_VOID;
    int code = only_known(d, object, post ? post_allowed : void_allowed);
    if (!code)
        code = take_string(d, object, "id", "/id", false, &event->id);
    if (!code)
        code = take_string(d, object, post ? "post" : "void", post ? "/post" : "/void", true,
                           &event->hold_id);
    bool present;
    if (!code && post)
        code = take_integer(d, object, "amount", "/amount", false, &event->amount, &present, 0);
    if (!code)
        code = take_metadata(d, object, event);
    return code;
}

static int decode_item(decoder *d, json_t *object, coffer_event *event)
{
    if (!json_is_object(object))
        return fail(d, COFFER_INVALID_FIELD, "", "must be an object");
    int code = json_object_get(object, "post") || json_object_get(object, "void")
                   ? decode_resolution_item(d, object, event)
                   : decode_transfer(d, object, event);
    if (!code && !event->id)
        code = fail(d, COFFER_INVALID_FIELD, "/id", "required");
    return code;
}

/* The Idempotency-Key header gives a single request's id; both given and different is an error. */
static int apply_key(decoder *d, coffer_event *event, const char *key)
{
    if (!key)
        return event->id ? COFFER_OK
                         : fail(d, COFFER_INVALID_FIELD, "/id",
                                "required "
                                "(in the body or the Idempotency-Key header)");
    if (event->id && strcmp(event->id, key) != 0)
        return fail(d, COFFER_INVALID_FIELD, "/id", "differs from the Idempotency-Key header");
    event->id = key;
    return COFFER_OK;
}

int decode_apply_key(coffer_event *event, const char *key, decode_error *error)
{
    decoder d = {0, error, ""};
    return apply_key(&d, event, key);
}

int decode_transfers(const char *body, size_t length, const char *key, decode_batch *out,
                     decode_error *error)
{
    int code;
    if (decode_transfers_simple(body, length, key, out, error, &code))
        return code;
    return decode_transfers_general(body, length, key, out, error);
}

int decode_transfers_general(const char *body, size_t length, const char *key, decode_batch *out,
                             decode_error *error)
{
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    int code = parse_body(body, length, &out->root, error);
    if (code)
        return code;
    decoder d = {out, error, ""};
    json_t *list = json_object_get(out->root, "transfers");
    if (!list) {
        code = one_event(&d);
        if (code)
            return code;
        json_t *item = out->root;
        bool resolution = json_object_get(item, "post") || json_object_get(item, "void");
        code = resolution ? decode_resolution_item(&d, item, &out->events[0])
                          : decode_transfer(&d, item, &out->events[0]);
        return code ? code : apply_key(&d, &out->events[0], key);
    }
    out->batch = true;
    if (key)
        return fail(&d, COFFER_INVALID_FIELD, "/transfers",
                    "Idempotency-Key is for single requests; give each item an id");
    static const char *const allowed[] = {"atomic", "transfers", 0};
    code = only_known(&d, out->root, allowed);
    json_t *atomic = json_object_get(out->root, "atomic");
    if (!code && atomic && !json_is_boolean(atomic))
        code = fail(&d, COFFER_INVALID_FIELD, "/atomic", "must be a boolean");
    out->atomic = json_is_true(atomic);
    if (!code)
        code = batch_items(&d, list, "transfers", &out->count);
    for (size_t i = 0; !code && i < out->count; i++) {
        snprintf(d.prefix, sizeof d.prefix, "/transfers/%zu", i);
        code = decode_item(&d, json_array_get(list, i), &out->events[i]);
    }
    return code;
}

int decode_resolution(const char *body, size_t length, int op, const char *hold, const char *key,
                      decode_batch *out, decode_error *error)
{
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    decoder d = {out, error, ""};
    int code = one_event(&d);
    if (code)
        return code;
    coffer_event *event = &out->events[0];
    event->op = (uint8_t)op;
    event->hold_id = hold;
    if (length > 0) {
        code = parse_body(body, length, &out->root, error);
        if (code)
            return code;
        static const char *const post_allowed[] = {"id", "amount", "metadata", 0};
        static const char *const void_allowed[] = {"id", "metadata", 0};
        code = only_known(&d, out->root, op == COFFER_OP_POST ? post_allowed : void_allowed);
        if (!code)
            code = take_string(&d, out->root, "id", "/id", false, &event->id);
        bool present;
        if (!code && op == COFFER_OP_POST)
            code = take_integer(&d, out->root, "amount", "/amount", false, &event->amount, &present,
                                0);
        if (!code)
            code = take_metadata(&d, out->root, event);
        if (code)
            return code;
    }
    return apply_key(&d, event, key);
}

void decode_batch_free(decode_batch *batch)
{
    for (size_t i = 0; i < batch->owned_count; i++)
        free(batch->owned[i]);
    free(batch->owned);
    free(batch->events);
    free(batch->text);
    json_decref(batch->root);
    memset(batch, 0, sizeof *batch);
}
