/*
 * decode.h — JSON request bodies to coffer_events (fuzzed): decode.c reads every body through
 * jansson, decode_simple.c the common transfer bodies without a tree. Decoding is strict:
 * unknown fields, wrong types, embedded NULs and numbers out of range are invalid_field with
 * the JSON pointer of the offending field.
 */
#ifndef COFFER_SERVER_DECODE_H
#define COFFER_SERVER_DECODE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "coffer.h"

#define DECODE_BODY_MAX (4u << 20)
#define DECODE_FIELD_MAX 96

/* What a request body decoded to. Strings point into `root` or `owned`: keep the batch alive
 * until the events have been applied and the response encoded. */
typedef struct decode_batch {
    json_t *root;
    coffer_event *events;
    size_t count;
    bool batch;   /* the body was a list ({"accounts": [...]} or {"transfers": [...]}) */
    bool atomic;  /* {"atomic": true} */
    char **owned; /* serialized metadata */
    size_t owned_count;
    char *text; /* the simple decoder's copy of the body, which its strings point into */
} decode_batch;

typedef struct decode_error {
    int code;                     /* invalid_json, invalid_field, batch_too_large; out_of_memory */
    char field[DECODE_FIELD_MAX]; /* JSON pointer, for invalid_field */
    char detail[200];
} decode_error;

/* POST /v1/accounts: one account or {"accounts": [...]}. */
/* The first key of `object` not in `allowed` (NULL-terminated), or NULL. */
const char *decode_unknown_key(json_t *object, const char *const *allowed);

int decode_accounts(const char *body, size_t length, decode_batch *out, decode_error *error);
/* POST /v1/transfers: one transfer or {"atomic": b, "transfers": [...]}. `key` is the
 * Idempotency-Key header (single transfers only), NULL when absent. */
int decode_transfers(const char *body, size_t length, const char *key, decode_batch *out,
                     decode_error *error);
/* The same without trying decode_transfers_simple first: every body, through jansson. */
int decode_transfers_general(const char *body, size_t length, const char *key, decode_batch *out,
                             decode_error *error);
/* The common bodies without a JSON tree (decode_simple.c): a single transfer ({"id", "from",
 * "to", "amount"}, plain ASCII strings, a plain non-negative integer) or a batch
 * ({"atomic"?, "transfers": [...]}) of such transfers with ids. True when it took the body:
 * *code, `out` and `error` are then exactly what decode_transfers_general gives. False
 * when it declined (any other shape): nothing to free, use the general decoder. */
bool decode_transfers_simple(const char *body, size_t length, const char *key, decode_batch *out,
                             decode_error *error, int *code);
/* A single request's Idempotency-Key against its body's id (the shared last step). */
int decode_apply_key(coffer_event *event, const char *key, decode_error *error);
/* POST /v1/holds/{hold}/post|void: body {"id"?, "amount"? (post)} (may be empty when `key`
 * gives the id). */
int decode_resolution(const char *body, size_t length, int op, const char *hold, const char *key,
                      decode_batch *out, decode_error *error);
void decode_batch_free(decode_batch *batch);

#endif
