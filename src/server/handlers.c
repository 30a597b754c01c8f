/*
 * handlers.c — each route's work between the transport and the engine: decode the body or
 * the query, start the engine job, and encode its answer. Nothing here touches a socket or
 * builds a response by hand: http.c sends, encode.c shapes.
 */
#include "server/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http.h"
#include "server/parse.h"

/* ---- writes -------------------------------------------------------------------------------- */

_Static_assert(TOKEN_NAME_MAX <= COFFER_SUBMITTER_MAX, "a token's name must fit the log's");

/* The authenticated token's name, copied into the request for the engine; NULL without
 * tokens. */
static const char *submitter(request *r)
{
    if (!r->token)
        return NULL;
    snprintf(r->submitted_by, sizeof r->submitted_by, "%s", r->token->name);
    return r->submitted_by;
}

static enum MHD_Result start_write(request *r, int decoded, const decode_error *error)
{
    if (decoded != COFFER_OK)
        return http_problem(r, error->code, error->field, error->detail);
    const char *refused;
    if (guard_check_events(r, &refused) != COFFER_OK)
        return http_problem(r, COFFER_FORBIDDEN, 0, refused);
    r->results = calloc(r->batch.count, sizeof *r->results);
    if (!r->results)
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    http_suspend(r);
    return http_started(r, coffer_submit_as_async(r->server->db, &r->job, submitter(r),
                                                  r->batch.events, r->batch.count, r->batch.atomic,
                                                  r->results));
}

enum MHD_Result handle_create_accounts(request *r)
{
    decode_error error;
    int code = decode_accounts(r->body, r->body_length, &r->batch, &error);
    return start_write(r, code, &error);
}

enum MHD_Result handle_transfers(request *r)
{
    decode_error error;
    int code = decode_transfers(r->body, r->body_length, http_header(r, "Idempotency-Key"),
                                &r->batch, &error);
    return start_write(r, code, &error);
}

static enum MHD_Result start_resolution(request *r, int op)
{
    decode_error error;
    int code = decode_resolution(r->body, r->body_length, op, r->path_id,
                                 http_header(r, "Idempotency-Key"), &r->batch, &error);
    return start_write(r, code, &error);
}

enum MHD_Result handle_hold_post(request *r)
{
    return start_resolution(r, COFFER_OP_POST);
}

enum MHD_Result handle_hold_void(request *r)
{
    return start_resolution(r, COFFER_OP_VOID);
}

enum MHD_Result answer_write(request *r)
{
    if (r->job.status == COFFER_CAPACITY_EXCEEDED) {
        char detail[192]; /* which limit was reached, and what the ledger holds */
        coffer_capacity_detail(r->server->db, detail, sizeof detail);
        return http_problem(r, r->job.status, 0, detail);
    }
    if (r->job.status != COFFER_OK)
        return http_problem(r, r->job.status, 0, 0);
    encoded response;
    encode_write(&response, r->batch.events, r->results, r->batch.count, r->batch.batch,
                 r->batch.atomic);
    return http_send(r, &response);
}

/* ---- reads --------------------------------------------------------------------------------- */

/* A query parameter that must be a whole number in [min, max]; `fallback` when absent. */
static bool query_number(request *r, const char *name, uint64_t min, uint64_t max,
                         uint64_t fallback, uint64_t *out)
{
    const char *text = http_query(r, name);
    *out = fallback;
    return !text || parse_number(text, min, max, out);
}

enum MHD_Result handle_account(request *r)
{
    const char *at = http_query(r, "at");
    r->at = COFFER_AT_NOW;
    if (at && !parse_at(at, &r->at, &r->at_value))
        return http_problem(r, COFFER_INVALID_FIELD, "/at",
                            "a seq or an RFC 3339 UTC time like 2026-11-24T23:38:00Z");
    http_suspend(r);
    return http_started(r, coffer_account_get_async(r->server->db, &r->job, r->path_id, r->at,
                                                    r->at_value, &r->account));
}

enum MHD_Result handle_history(request *r)
{
    uint64_t after, limit;
    if (!query_number(r, "after", 0, UINT64_MAX, 0, &after))
        return http_problem(r, COFFER_INVALID_FIELD, "/after", "a seq (a whole number)");
    if (!query_number(r, "limit", 1, 1000, 100, &limit))
        return http_problem(r, COFFER_INVALID_FIELD, "/limit", "1 to 1000");
    r->history = calloc(limit, sizeof *r->history);
    if (!r->history)
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    r->limit = limit;
    http_suspend(r);
    return http_started(r, coffer_history_async(r->server->db, &r->job, r->path_id, after, limit,
                                                r->history, &r->count));
}

enum MHD_Result handle_transfer(request *r)
{
    http_suspend(r);
    return http_started(
        r, coffer_transfer_get_async(r->server->db, &r->job, r->path_id, &r->transfer));
}

enum MHD_Result handle_holds(request *r)
{
    uint64_t limit;
    if (!query_number(r, "limit", 1, 1000, 100, &limit))
        return http_problem(r, COFFER_INVALID_FIELD, "/limit", "1 to 1000");
    r->holds = calloc(limit, sizeof *r->holds);
    if (!r->holds)
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    r->limit = limit;
    http_suspend(r);
    return http_started(r, coffer_holds_list_async(r->server->db, &r->job, http_query(r, "account"),
                                                   limit, r->holds, &r->count));
}

enum MHD_Result handle_verify(request *r)
{
    http_suspend(r);
    return http_started(r, coffer_verify_async(r->server->db, &r->job, &r->verify));
}

/* Readable after a storage failure: it is how one learns of it. */
enum MHD_Result handle_metrics(request *r)
{
    http_suspend(r);
    return http_started(r, coffer_stats_get_async(r->server->db, &r->job, &r->stats));
}

/* The engine's answer to a read: the encoded page, or the problem it failed with. */
static enum MHD_Result answer_read(request *r, void (*encode)(encoded *out, request *r))
{
    encoded response;
    if (r->job.status != COFFER_OK)
        encode_read_failure(&response, r->job.status);
    else
        encode(&response, r);
    return http_send(r, &response);
}

static void encode_account_of(encoded *out, request *r)
{
    encode_account(out, &r->account, r->at, r->at_value);
}

static void encode_history_of(encoded *out, request *r)
{
    encode_history(out, r->history, r->count, r->limit);
}

static void encode_transfer_of(encoded *out, request *r)
{
    encode_transfer(out, &r->transfer);
}

static void encode_holds_of(encoded *out, request *r)
{
    encode_holds(out, r->holds, r->count);
}

static void encode_verify_of(encoded *out, request *r)
{
    encode_verify(out, &r->verify);
}

static void encode_metrics_of(encoded *out, request *r)
{
    size_t length = 0;
    char *text =
        metrics_render(&r->server->metrics, r->server->db, &r->stats, r->server->webhooks, &length);
    encode_text(out, "text/plain; version=0.0.4", text, length);
}

enum MHD_Result answer_account(request *r)
{
    return answer_read(r, encode_account_of);
}

enum MHD_Result answer_history(request *r)
{
    return answer_read(r, encode_history_of);
}

enum MHD_Result answer_transfer(request *r)
{
    if (r->job.status == COFFER_OK && !guard_allows_transfer(r, &r->transfer))
        return http_problem(r, COFFER_FORBIDDEN, 0,
                            "the transfer's accounts are outside the token's prefixes");
    return answer_read(r, encode_transfer_of);
}

enum MHD_Result answer_holds(request *r)
{
    return answer_read(r, encode_holds_of);
}

enum MHD_Result answer_verify(request *r)
{
    return answer_read(r, encode_verify_of);
}

enum MHD_Result answer_metrics(request *r)
{
    return answer_read(r, encode_metrics_of);
}

/* ---- webhooks (webhooks.c answers at once: the registry is the server's, not the engine's) - */

enum MHD_Result handle_webhooks(request *r)
{
    encoded response;
    if (!strcmp(r->method, "POST"))
        webhooks_create(r->server->webhooks, r->body, r->body_length, &response);
    else
        webhooks_list(r->server->webhooks, &response);
    return http_send(r, &response);
}

enum MHD_Result handle_webhook(request *r)
{
    encoded response;
    if (!strcmp(r->method, "DELETE"))
        webhooks_delete(r->server->webhooks, r->path_id, &response);
    else
        webhooks_get(r->server->webhooks, r->path_id, &response);
    return http_send(r, &response);
}

enum MHD_Result handle_webhook_enable(request *r)
{
    encoded response;
    webhooks_enable(r->server->webhooks, r->path_id, &response);
    return http_send(r, &response);
}

/* ---- probes -------------------------------------------------------------------------------- */

enum MHD_Result handle_health(request *r)
{
    encoded response;
    encode_probe(&response, "ok");
    return http_send(r, &response);
}

enum MHD_Result handle_ready(request *r)
{
    if (atomic_load(&r->server->draining))
        return http_problem(r, COFFER_SHUTTING_DOWN, 0, 0);
    if (coffer_health(r->server->db) == COFFER_STORAGE_FAILED)
        return http_problem(r, COFFER_STORAGE_FAILED, 0, "a write or sync failed; restart");
    encoded response;
    encode_probe(&response, "ready");
    return http_send(r, &response);
}
