/*
 * handlers.c — each route's work between the transport and the engine: decode the body or
 * the query, start the engine job, and encode its answer. Nothing here touches a socket or
 * builds a response by hand: http.c sends, encode.c shapes.
 */
#include "server/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "server/http.h"
#include "server/parse.h"
#include "server/routes.h"

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

/* Decodes the body of the request's route into r->batch. */
static int decode_write(request *r, decode_error *error)
{
    switch (r->route) {
    case ROUTE_ACCOUNTS:
        return decode_accounts(r->body, r->body_length, &r->batch, error);
    case ROUTE_TRANSFERS:
        return decode_transfers(r->body, r->body_length, r->idempotency_key, &r->batch, error);
    case ROUTE_HOLD_POST:
    case ROUTE_HOLD_VOID:
        return decode_resolution(r->body, r->body_length,
                                 r->route == ROUTE_HOLD_POST ? COFFER_OP_POST : COFFER_OP_VOID,
                                 r->path_id, r->idempotency_key, &r->batch, error);
    }
    COFFER_UNREACHABLE();
    return COFFER_INTERNAL;
}

/* Decodes the write, checks it against the token and makes room for its results. False with
 * the answer in *problem when it is refused. On a network thread or a bulk worker. */
static bool write_prepare(request *r, encoded *problem)
{
    decode_error error;
    int code = decode_write(r, &error);
    if (code != COFFER_OK) {
        encode_problem(problem, error.code, error.field, error.detail);
        return false;
    }
    const char *refused;
    if (guard_check_events(r, &refused) != COFFER_OK) {
        encode_problem(problem, COFFER_FORBIDDEN, 0, refused);
        return false;
    }
    r->results = calloc(r->batch.count, sizeof *r->results);
    if (!r->results) {
        encode_problem(problem, COFFER_OUT_OF_MEMORY, 0, 0);
        return false;
    }
    return true;
}

static int write_submit(request *r)
{
    return coffer_submit_as_async(r->server->db, &r->job, submitter(r), r->batch.events,
                                  r->batch.count, r->batch.atomic, r->results);
}

/* not_leader or no_leader when a follower refused the whole write (nothing applied), as the
 * job's status or as its events' results; else COFFER_OK. */
static int write_refusal(const request *r)
{
    if (cluster_refuses(r->job.status))
        return r->job.status;
    bool answered = r->job.status == COFFER_OK && r->results;
    return answered && cluster_refuses(r->results[0].code) ? r->results[0].code : COFFER_OK;
}

/* The engine's answer to a write, or the problem it failed with. */
static void write_answer(request *r, encoded *response)
{
    int refusal = write_refusal(r);
    if (refusal != COFFER_OK) /* answered 307 or 503 by answer_write, on the network thread */
        encode_problem(response, refusal, 0, 0);
    else if (r->job.status == COFFER_OVERLOADED)
        encode_problem(response, r->job.status, 0,
                       "the engine cannot take this write now: its queue is full, or memory is "
                       "at its budget until the on-disk index catches up and memory can evict "
                       "what the index holds; retry after the Retry-After delay");
    else if (r->job.status == COFFER_CAPACITY_EXCEEDED) {
        char detail[192]; /* which limit was reached, and what the ledger holds */
        coffer_capacity_detail(r->server->db, detail, sizeof detail);
        encode_problem(response, r->job.status, 0, detail);
    } else if (r->job.status != COFFER_OK)
        encode_problem(response, r->job.status, 0, 0);
    else
        encode_write(response, r->batch.events, r->results, r->batch.count, r->batch.batch,
                     r->batch.atomic);
}

/* A large body's start, on a bulk worker (its connection is suspended already). */
static bool write_start_bulk(request *r, encoded *problem)
{
    if (!write_prepare(r, problem))
        return false;
    int code = write_submit(r);
    if (code == COFFER_OK)
        return true; /* the engine's now: r is not touched again here */
    r->job.status = code;
    encode_problem(problem, code, 0, 0);
    return false;
}

/* Every write route: a large body goes to the bulk workers, so the network thread does not
 * spend milliseconds on it while its other connections wait. */
static enum MHD_Result start_write(request *r)
{
    r->idempotency_key = http_header(r, "Idempotency-Key");
    if (bulk_takes(r)) {
        if (bulk_submit(r->server->bulk, r, write_start_bulk, write_answer))
            return MHD_YES;
        return http_problem(r, COFFER_OVERLOADED, 0, "too many large bodies waiting to be decoded");
    }
    encoded problem;
    if (!write_prepare(r, &problem))
        return http_send(r, &problem);
    http_suspend(r);
    return http_started(r, write_submit(r));
}

enum MHD_Result handle_write(request *r)
{
    return start_write(r);
}

enum MHD_Result answer_write(request *r)
{
    encoded response;
    if (r->bulk.answered) { /* encoded by a bulk worker */
        r->bulk.answered = false;
        response = r->bulk.response;
    } else {
        write_answer(r, &response);
    }
    if (cluster_refuses(response.code)) { /* a follower: to the leader */
        free(response.body);
        return cluster_answer_refusal(r, response.code);
    }
    return http_send(r, &response);
}

/* ---- writes whose answer was lost ----------------------------------------------------------- */

/* What a connection's end was, for the log. */
static const char *termination_name(enum MHD_RequestTerminationCode reason)
{
    switch (reason) {
    case MHD_REQUEST_TERMINATED_WITH_ERROR:
        return "the connection failed while the answer was sent";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "the connection timed out";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "the server stopped";
    case MHD_REQUEST_TERMINATED_READ_ERROR:
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
        return "the client closed the connection";
    default:
        return "the connection ended";
    }
}

/* An id for the log: its bytes outside printable ASCII become '?' (a refused event's id may
 * hold anything), at most `size` - 1 of them; "(none)" for no id. */
static void loggable(char *out, size_t size, const char *text)
{
    size_t length = 0;
    for (; text && text[length] && length + 1 < size; length++)
        out[length] = text[length] > ' ' && text[length] < 127 ? text[length] : '?';
    out[length] = 0;
    if (!length)
        snprintf(out, size, "(none)");
}

void write_completed(request *r, enum MHD_RequestTerminationCode reason)
{
    if (r->bulk.answered) /* encoded, never sent */
        free(r->bulk.response.body);
    r->bulk.answered = false;
    /* Decided: the engine answered the write, so its outcome is in the log, durable. */
    bool decided = r->results && r->state == STATE_ANSWERED && r->job.status == COFFER_OK &&
                   write_refusal(r) == COFFER_OK;
    if (reason == MHD_REQUEST_TERMINATED_COMPLETED_OK || !decided)
        return;
    atomic_fetch_add(&r->server->metrics.writes_undelivered, 1);
    char first[COFFER_TRANSFER_ID_MAX + 1], last[COFFER_TRANSFER_ID_MAX + 1];
    char path_id[COFFER_TRANSFER_ID_MAX + 1], events[2 * COFFER_TRANSFER_ID_MAX + 64];
    loggable(first, sizeof first, r->batch.events[0].id);
    loggable(last, sizeof last, r->batch.events[r->batch.count - 1].id);
    loggable(path_id, sizeof path_id, r->path_id);
    if (r->batch.count == 1)
        snprintf(events, sizeof events, "1 event, id %s", first);
    else
        snprintf(events, sizeof events, "%zu events, ids %s .. %s", r->batch.count, first, last);
    const route_spec *route = &routes[r->route];
    fprintf(stderr,
            "coffer: request %s %s %s%s%s applied but its answer was not delivered (%s): %s; "
            "a retry with the same ids answers the outcome\n",
            r->request_id, r->method, route->path, r->path_id ? path_id : "",
            route->suffix ? route->suffix : "", termination_name(reason), events);
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
