/*
 * codec.h — JSON request bodies to coffer_events (decoding, fuzzed) and results to JSON
 * responses (encoding). Decoding is strict: unknown fields, wrong types, embedded NULs and
 * numbers out of range are invalid_field with the JSON pointer of the offending field.
 */
#ifndef COFFER_SERVER_CODEC_H
#define COFFER_SERVER_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "coffer.h"

#define CODEC_BODY_MAX (4u << 20)
#define CODEC_FIELD_MAX 96

/* What a request body decoded to. Strings point into `root` or `owned`: keep the batch alive
 * until the events have been applied and the response encoded. */
typedef struct codec_batch {
    json_t *root;
    coffer_event *events;
    size_t count;
    bool batch;   /* the body was a list ({"accounts": [...]} or {"transfers": [...]}) */
    bool atomic;  /* {"atomic": true} */
    char **owned; /* serialized metadata */
    size_t owned_count;
    char *text; /* the simple decoder's copy of the body, which its strings point into */
} codec_batch;

typedef struct codec_error {
    int code;                    /* invalid_json, invalid_field, batch_too_large; out_of_memory */
    char field[CODEC_FIELD_MAX]; /* JSON pointer, for invalid_field */
    char detail[200];
} codec_error;

/* POST /v1/accounts: one account or {"accounts": [...]}. */
int codec_decode_accounts(const char *body, size_t length, codec_batch *out, codec_error *error);
/* POST /v1/transfers: one transfer or {"atomic": b, "transfers": [...]}. `key` is the
 * Idempotency-Key header (single transfers only), NULL when absent. */
int codec_decode_transfers(const char *body, size_t length, const char *key, codec_batch *out,
                           codec_error *error);
/* The same without trying codec_decode_simple_transfers first: every body, through jansson. */
int codec_decode_transfers_general(const char *body, size_t length, const char *key,
                                   codec_batch *out, codec_error *error);
/* The common bodies without a JSON tree (codec_simple.c): a single transfer ({"id", "from",
 * "to", "amount"}, plain ASCII strings, a plain non-negative integer) or a batch
 * ({"atomic"?, "transfers": [...]}) of such transfers with ids. True when it took the body:
 * *code, `out` and `error` are then exactly what codec_decode_transfers_general gives. False
 * when it declined (any other shape): nothing to free, use the general decoder. */
bool codec_decode_simple_transfers(const char *body, size_t length, const char *key,
                                   codec_batch *out, codec_error *error, int *code);
/* A single request's Idempotency-Key against its body's id (the shared last step). */
int codec_apply_key(coffer_event *event, const char *key, codec_error *error);
/* POST /v1/holds/{hold}/post|void: body {"id"?, "amount"? (post)} (may be empty when `key`
 * gives the id). */
int codec_decode_resolution(const char *body, size_t length, int op, const char *hold,
                            const char *key, codec_batch *out, codec_error *error);
void codec_batch_free(codec_batch *batch);

/* ---- encoding ------------------------------------------------------------------------------ */

/* RFC 3339 UTC with nanoseconds into out (at least 36 bytes). */
void codec_time(char *out, size_t size, uint64_t ns);

/* The response object for one applied (or replayed) event: {"code", "transfer"|"account",
 * "accounts"}. */
json_t *codec_event_success(const coffer_event *event, const coffer_result *result);
/* A problem object (RFC 9457) for a code; `field` and `detail` may be NULL. */
json_t *codec_problem(int code, const char *field, const char *detail);
/* The problem for a rejected event's result; `prefix` is prepended to its field (batches). */
json_t *codec_event_problem(const coffer_event *event, const coffer_result *result,
                            const char *prefix);
json_t *codec_account(const coffer_account *account, int at, uint64_t at_value);
json_t *codec_transfer(const coffer_transfer *transfer);
json_t *codec_history_entry(const coffer_history_entry *entry);
/* The same text codec_event_success encodes (compact, in order), written directly for the
 * common case of a transfer without metadata; NULL when the case is not covered (use the
 * general encoder then). The caller frees the text. */
char *codec_transfer_created_text(const coffer_event *event, const coffer_result *result,
                                  size_t *length);
/* The HTTP status a result answers with: 201 for success and its replay, else the code's. */
int codec_result_status(const coffer_result *result);

#endif
