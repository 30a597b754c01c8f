/*
 * http.c — the HTTP side of `coffer serve` (libmicrohttpd): routing, bodies, limits, request
 * ids, suspend/resume around the engine, responses, signals and draining. Each request carries
 * one context from its first callback to MHD's completion notice.
 */
#define _GNU_SOURCE /* strptime, timegm */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "server/codec.h"
#include "server/metrics.h"
#include "server/text.h"

typedef struct server {
    coffer *db;
    struct MHD_Daemon *daemon;
    const server_options *options;
    metrics metrics;
    atomic_uint_fast64_t request_counter;
    atomic_int active;    /* requests between their first callback and completion */
    atomic_int suspended; /* of those, requests handed to the engine and not yet completed */
    atomic_bool draining;
    char id_prefix[16];
} server;

enum request_state { STATE_NEW, STATE_RECEIVING, STATE_WAITING, STATE_ANSWERED };

typedef struct request {
    server *server;
    struct MHD_Connection *connection;
    enum request_state state;
    int route;
    char request_id[72];
    char *body;
    size_t body_length;
    bool body_too_large;
    uint64_t started_ns;
    int response_code; /* the coffer code the response reports, for metrics */
    bool engine_used;  /* counted in server.suspended until completion */
    /* The path's id and its query. */
    char *path_id;
    /* Writes. */
    codec_batch batch;
    coffer_result *results;
    /* Reads. */
    struct account_read account_read;
    struct history_read history_read;
    struct transfer_read transfer_read;
    struct holds_read holds_read;
    coffer_history_entry *history;
    coffer_transfer *holds;
    union { /* a request reads at most one of these */
        coffer_account account;
        coffer_transfer transfer;
        coffer_verify_report verify;
        coffer_stats stats;
    };
    engine_request engine;
} request;

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* ---- responses ----------------------------------------------------------------------------- */

static enum MHD_Result send_text(request *r, unsigned status, const char *content_type, char *text,
                                 size_t length, bool replayed)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(length, text, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, "X-Request-Id", r->request_id);
    if (atomic_load(&r->server->draining)) /* let clients move on rather than reuse us */
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    if (replayed)
        MHD_add_response_header(response, "Idempotent-Replayed", "true");
    if (r->response_code == COFFER_OVERLOADED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (r->response_code == COFFER_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, metrics_route_methods(r->route));
    enum MHD_Result queued = MHD_queue_response(r->connection, status, response);
    MHD_destroy_response(response);
    metrics_request(&r->server->metrics, r->route, r->response_code, status,
                    now_ns() - r->started_ns);
    if (r->server->options->log_requests)
        fprintf(stderr, "coffer: request %s %s %u %s %.3f ms\n", r->request_id,
                metrics_route_name(r->route), status, coffer_code_name(r->response_code),
                (double)(now_ns() - r->started_ns) / 1e6);
    return queued;
}

static enum MHD_Result send_json(request *r, unsigned status, json_t *body, bool replayed)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (!text)
        return MHD_NO;
    bool problem = status >= 400;
    return send_text(r, status, problem ? "application/problem+json" : "application/json", text,
                     strlen(text), replayed);
}

static enum MHD_Result send_problem(request *r, int code, const char *field, const char *detail)
{
    r->response_code = code;
    return send_json(r, (unsigned)coffer_code_http_status(code), codec_problem(code, field, detail),
                     false);
}

/* ---- engine round trips -------------------------------------------------------------------- */

static void engine_answered(void *context)
{
    request *r = context;
    r->state = STATE_ANSWERED;
    MHD_resume_connection(r->connection);
}

/* Suspends the connection and queues the engine request; it is answered after resume. */
static enum MHD_Result wait_for_engine(request *r)
{
    r->engine.on_done = engine_answered;
    r->engine.on_done_context = r;
    r->state = STATE_WAITING;
    r->engine_used = true;
    atomic_fetch_add(&r->server->suspended, 1);
    MHD_suspend_connection(r->connection); /* before enqueue: the answer may come at once */
    int code = engine_enqueue(r->server->db, &r->engine);
    if (code != COFFER_OK) {
        r->engine.status = code;
        r->state = STATE_ANSWERED;
        MHD_resume_connection(r->connection);
    }
    return MHD_YES;
}

static enum MHD_Result start_read(request *r, engine_read_fn read, void *context)
{
    r->engine.read = read;
    r->engine.context = context;
    return wait_for_engine(r);
}

/* ---- writes -------------------------------------------------------------------------------- */

static const char *header(request *r, const char *name)
{
    return MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND, name);
}

static enum MHD_Result start_write(request *r, int decoded, const codec_error *error)
{
    if (decoded != COFFER_OK)
        return send_problem(r, error->code, error->field, error->detail);
    r->results = calloc(r->batch.count, sizeof *r->results);
    if (!r->results)
        return send_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    r->engine.events = r->batch.events;
    r->engine.count = r->batch.count;
    r->engine.atomic = r->batch.atomic;
    r->engine.results = r->results;
    return wait_for_engine(r);
}

static enum MHD_Result start_create_accounts(request *r)
{
    codec_error error;
    int code = codec_decode_accounts(r->body, r->body_length, &r->batch, &error);
    return start_write(r, code, &error);
}

static enum MHD_Result start_transfers(request *r)
{
    codec_error error;
    int code = codec_decode_transfers(r->body, r->body_length, header(r, "Idempotency-Key"),
                                      &r->batch, &error);
    return start_write(r, code, &error);
}

static enum MHD_Result start_resolution(request *r, int op)
{
    codec_error error;
    int code = codec_decode_resolution(r->body, r->body_length, op, r->path_id,
                                       header(r, "Idempotency-Key"), &r->batch, &error);
    return start_write(r, code, &error);
}

/* One item of a batch response. */
static json_t *batch_item(const coffer_event *event, const coffer_result *result, bool accounts,
                          size_t index)
{
    json_t *item;
    int status = codec_result_status(result);
    if (coffer_code_is_success(result->code)) {
        item = codec_event_success(event, result);
        json_object_set_new(item, "status", json_integer(status));
    } else {
        char prefix[40];
        snprintf(prefix, sizeof prefix, "/%s/%zu", accounts ? "accounts" : "transfers", index);
        item =
            json_pack("{s:i, s:s, s:o}", "status", status, "code", coffer_code_name(result->code),
                      "problem", codec_event_problem(event, result, prefix));
    }
    if (result->replayed)
        json_object_set_new(item, "replayed", json_true());
    return item;
}

/* A batch answer as text. Created transfers take the direct path (the general encoder's bytes,
 * with "status" and "replayed" after the same keys, as json_object_set_new would put them); the
 * rest of the items go through jansson. */
static enum MHD_Result answer_batch(request *r)
{
    bool accounts = r->route == ROUTE_ACCOUNTS;
    text_buffer t = {0};
    const char *head = accounts          ? "{\"results\":["
                       : r->batch.atomic ? "{\"atomic\":true,\"results\":["
                                         : "{\"atomic\":false,\"results\":[";
    text_append(&t, head, strlen(head));
    for (size_t i = 0; i < r->batch.count; i++) {
        if (i)
            text_append(&t, ",", 1);
        const coffer_event *event = &r->batch.events[i];
        const coffer_result *result = &r->results[i];
        size_t length;
        char *fast = coffer_code_is_success(result->code) && !accounts
                         ? codec_transfer_created_text(event, result, &length)
                         : 0;
        if (fast) {
            text_append(&t, fast, length - 1); /* without its closing brace */
            free(fast);
            const char *tail =
                result->replayed ? ",\"status\":201,\"replayed\":true}" : ",\"status\":201}";
            text_append(&t, tail, strlen(tail));
            continue;
        }
        json_t *item = batch_item(event, result, accounts, i);
        char *text = json_dumps(item, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(item);
        if (!text) {
            t.failed = true;
            break;
        }
        text_append(&t, text, strlen(text));
        free(text);
    }
    text_append(&t, "]}", 2);
    if (t.failed) {
        free(t.bytes);
        return send_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    }
    r->response_code = COFFER_OK;
    return send_text(r, 200, "application/json", t.bytes, t.length, false);
}

static enum MHD_Result answer_write(request *r)
{
    if (r->engine.status != COFFER_OK)
        return send_problem(r, r->engine.status, 0, 0);
    const coffer_event *events = r->batch.events;
    bool accounts = r->route == ROUTE_ACCOUNTS;
    if (r->batch.batch)
        return answer_batch(r);
    const coffer_result *result = &r->results[0];
    r->response_code = result->code;
    if (!coffer_code_is_success(result->code))
        return send_json(r, (unsigned)codec_result_status(result),
                         codec_event_problem(&events[0], result, ""), result->replayed);
    size_t length;
    char *text = accounts ? 0 : codec_transfer_created_text(&events[0], result, &length);
    if (text)
        return send_text(r, 201, "application/json", text, length, result->replayed);
    json_t *body = codec_event_success(&events[0], result);
    if (accounts) { /* a single account answers with the account object itself */
        json_t *account = json_incref(json_object_get(body, "account"));
        json_decref(body);
        body = account;
    }
    return send_json(r, 201, body, result->replayed);
}

/* ---- reads --------------------------------------------------------------------------------- */

/* A whole decimal number in [min, max] from a query parameter; false on anything else. */
static bool query_number(request *r, const char *name, uint64_t min, uint64_t max,
                         uint64_t fallback, uint64_t *out)
{
    const char *text = MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND, name);
    *out = fallback;
    if (!text)
        return true;
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

/* RFC 3339 UTC ("2026-11-24T23:38:00Z", optional fraction up to ns) to ns since the epoch. */
static bool parse_time(const char *text, uint64_t *out)
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

static enum MHD_Result start_account_get(request *r)
{
    const char *at = MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND, "at");
    struct account_read *read = &r->account_read;
    *read = (struct account_read){r->path_id, COFFER_AT_NOW, 0, &r->account};
    if (at) {
        char *end;
        errno = 0;
        unsigned long long seq = strtoull(at, &end, 10);
        if (*at >= '0' && *at <= '9' && !*end && !errno) {
            read->at = COFFER_AT_SEQ;
            read->at_value = seq;
        } else if (parse_time(at, &read->at_value)) {
            read->at = COFFER_AT_TIMESTAMP;
        } else {
            return send_problem(r, COFFER_INVALID_FIELD, "/at",
                                "a seq or an RFC 3339 UTC time like 2026-11-24T23:38:00Z");
        }
    }
    return start_read(r, engine_account_read, read);
}

static enum MHD_Result start_history(request *r)
{
    uint64_t after, limit;
    if (!query_number(r, "after", 0, UINT64_MAX, 0, &after))
        return send_problem(r, COFFER_INVALID_FIELD, "/after", "a seq (a whole number)");
    if (!query_number(r, "limit", 1, 1000, 100, &limit))
        return send_problem(r, COFFER_INVALID_FIELD, "/limit", "1 to 1000");
    r->history = calloc(limit, sizeof *r->history);
    if (!r->history)
        return send_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    r->history_read = (struct history_read){r->path_id, after, limit, r->history, 0};
    return start_read(r, engine_history_read, &r->history_read);
}

static enum MHD_Result start_holds(request *r)
{
    uint64_t limit;
    if (!query_number(r, "limit", 1, 1000, 100, &limit))
        return send_problem(r, COFFER_INVALID_FIELD, "/limit", "1 to 1000");
    r->holds = calloc(limit, sizeof *r->holds);
    if (!r->holds)
        return send_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    const char *account =
        MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND, "account");
    r->holds_read = (struct holds_read){account, limit, r->holds, 0};
    return start_read(r, engine_holds_read, &r->holds_read);
}

static enum MHD_Result answer_read(request *r)
{
    int status = r->engine.status;
    if (status != COFFER_OK) {
        /* A missing resource read by GET is 404, not the 422 a write would get. */
        if (status == COFFER_ACCOUNT_NOT_FOUND) {
            r->response_code = status;
            return send_json(
                r, 404,
                json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "urn:coffer:error:account_not_found",
                          "title", coffer_strerror(status), "status", 404, "code",
                          "account_not_found", "detail", "no such account (at that point)"),
                false);
        }
        return send_problem(r, status, 0, 0);
    }
    r->response_code = COFFER_OK;
    json_t *body = 0;
    switch (r->route) {
    case ROUTE_ACCOUNT:
        body = codec_account(&r->account, r->account_read.at, r->account_read.at_value);
        break;
    case ROUTE_HISTORY: {
        json_t *entries = json_array();
        for (size_t i = 0; i < r->history_read.count; i++)
            json_array_append_new(entries, codec_history_entry(&r->history[i]));
        bool full = r->history_read.count == r->history_read.limit;
        json_t *next = full ? json_integer((json_int_t)r->history[r->history_read.count - 1].seq)
                            : json_null();
        body = json_pack("{s:o, s:o}", "entries", entries, "next_after", next);
        break;
    }
    case ROUTE_TRANSFER:
        body = codec_transfer(&r->transfer);
        break;
    case ROUTE_HOLDS: {
        json_t *holds = json_array();
        for (size_t i = 0; i < r->holds_read.count; i++)
            json_array_append_new(holds, codec_transfer(&r->holds[i]));
        body = json_pack("{s:o}", "holds", holds);
        break;
    }
    case ROUTE_VERIFY: {
        json_t *problems = json_array();
        for (uint32_t i = 0; i < r->verify.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++)
            json_array_append_new(problems, json_string(r->verify.problems[i]));
        body = json_pack("{s:b, s:o, s:I, s:I, s:I}", "ok", r->verify.ok, "problems", problems,
                         "problem_count", (json_int_t)r->verify.problem_count, "accounts_checked",
                         (json_int_t)r->verify.accounts_checked, "transfers_checked",
                         (json_int_t)r->verify.transfers_checked);
        break;
    }
    case ROUTE_METRICS: {
        size_t length;
        char *text = metrics_render(&r->server->metrics, &r->stats, &length);
        if (!text)
            return send_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
        return send_text(r, 200, "text/plain; version=0.0.4", text, length, false);
    }
    default:
        return send_problem(r, COFFER_INTERNAL, 0, "unexpected route");
    }
    return send_json(r, 200, body, false);
}

/* ---- routing ------------------------------------------------------------------------------- */

/* The id between a prefix and an optional suffix of the path, copied. NULL if empty. */
static char *path_part(const char *url, const char *prefix, const char *suffix)
{
    size_t prefix_length = strlen(prefix), length = strlen(url);
    if (strncmp(url, prefix, prefix_length) != 0)
        return 0;
    size_t suffix_length = suffix ? strlen(suffix) : 0;
    if (length < prefix_length + suffix_length + 1)
        return 0;
    if (suffix && strcmp(url + length - suffix_length, suffix) != 0)
        return 0;
    return strndup(url + prefix_length, length - prefix_length - suffix_length);
}

/* Finds the route of a path (and its id). Ids may contain '/', so suffixes are matched first. */
static int route_of(const char *url, char **id)
{
    *id = 0;
    if (!strcmp(url, "/v1/accounts"))
        return ROUTE_ACCOUNTS;
    if (!strcmp(url, "/v1/transfers"))
        return ROUTE_TRANSFERS;
    if (!strcmp(url, "/v1/holds"))
        return ROUTE_HOLDS;
    if (!strcmp(url, "/v1/verify"))
        return ROUTE_VERIFY;
    if (!strcmp(url, "/metrics"))
        return ROUTE_METRICS;
    if (!strcmp(url, "/healthz"))
        return ROUTE_HEALTH;
    if (!strcmp(url, "/readyz"))
        return ROUTE_READY;
    if ((*id = path_part(url, "/v1/accounts/", "/history")))
        return ROUTE_HISTORY;
    if ((*id = path_part(url, "/v1/accounts/", 0)))
        return ROUTE_ACCOUNT;
    if ((*id = path_part(url, "/v1/transfers/", 0)))
        return ROUTE_TRANSFER;
    if ((*id = path_part(url, "/v1/holds/", "/post")))
        return ROUTE_HOLD_POST;
    if ((*id = path_part(url, "/v1/holds/", "/void")))
        return ROUTE_HOLD_VOID;
    return ROUTE_UNKNOWN;
}

static enum MHD_Result answer_ready(request *r)
{
    if (atomic_load(&r->server->draining))
        return send_problem(r, COFFER_SHUTTING_DOWN, 0, 0);
    if (atomic_load(&r->server->db->storage_failed))
        return send_problem(r, COFFER_STORAGE_FAILED, 0, "a write or sync failed; restart");
    r->response_code = COFFER_OK;
    return send_json(r, 200, json_pack("{s:s}", "status", "ready"), false);
}

/* The request is complete (body received): act on it. */
static enum MHD_Result dispatch(request *r, const char *method)
{
    if (r->route == ROUTE_UNKNOWN)
        return send_problem(r, COFFER_ROUTE_NOT_FOUND, 0, 0);
    if (!metrics_route_allows(r->route, method))
        return send_problem(r, COFFER_METHOD_NOT_ALLOWED, 0, 0);
    if (r->body_too_large)
        return send_problem(r, COFFER_BODY_TOO_LARGE, 0, "at most 4 MiB");
    switch (r->route) {
    case ROUTE_ACCOUNTS:
        return start_create_accounts(r);
    case ROUTE_TRANSFERS:
        return start_transfers(r);
    case ROUTE_HOLD_POST:
        return start_resolution(r, COFFER_OP_POST);
    case ROUTE_HOLD_VOID:
        return start_resolution(r, COFFER_OP_VOID);
    case ROUTE_ACCOUNT:
        return start_account_get(r);
    case ROUTE_HISTORY:
        return start_history(r);
    case ROUTE_TRANSFER:
        r->transfer_read = (struct transfer_read){r->path_id, &r->transfer};
        return start_read(r, engine_transfer_read, &r->transfer_read);
    case ROUTE_HOLDS:
        return start_holds(r);
    case ROUTE_VERIFY:
        return start_read(r, engine_verify_read, &r->verify);
    case ROUTE_METRICS: /* readable after a storage failure: it is how one learns of it */
        r->engine.diagnostic = true;
        return start_read(r, engine_stats_read, &r->stats);
    case ROUTE_HEALTH:
        r->response_code = COFFER_OK;
        return send_json(r, 200, json_pack("{s:s}", "status", "ok"), false);
    case ROUTE_READY:
        return answer_ready(r);
    default:
        return send_problem(r, COFFER_INTERNAL, 0, 0);
    }
}

static bool is_write(int route)
{
    return route == ROUTE_ACCOUNTS || route == ROUTE_TRANSFERS || route == ROUTE_HOLD_POST ||
           route == ROUTE_HOLD_VOID;
}

/* The client's X-Request-Id when it is short and printable, else a new one. */
static void assign_request_id(server *s, request *r)
{
    const char *given = header(r, "X-Request-Id");
    size_t length = given ? strlen(given) : 0;
    bool usable = length > 0 && length < sizeof r->request_id;
    for (size_t i = 0; usable && i < length; i++)
        usable = given[i] > ' ' && given[i] < 127;
    if (usable) {
        memcpy(r->request_id, given, length + 1);
        return;
    }
    snprintf(r->request_id, sizeof r->request_id, "%s-%llu", s->id_prefix,
             (unsigned long long)atomic_fetch_add(&s->request_counter, 1));
}

static request *request_new(server *s, struct MHD_Connection *connection, const char *url)
{
    request *r = calloc(1, sizeof *r);
    if (!r)
        return 0;
    r->server = s;
    r->connection = connection;
    r->started_ns = now_ns();
    r->route = route_of(url, &r->path_id);
    r->state = STATE_RECEIVING;
    assign_request_id(s, r);
    atomic_fetch_add(&s->active, 1);
    return r;
}

/* Appends upload data, keeping at most the limit (the rest is counted and dropped). */
static void receive(request *r, const char *data, size_t size)
{
    if (r->body_too_large || !is_write(r->route)) {
        r->body_too_large |= is_write(r->route);
        return;
    }
    if (r->body_length + size > CODEC_BODY_MAX) {
        r->body_too_large = true;
        return;
    }
    char *grown = realloc(r->body, r->body_length + size + 1);
    if (!grown) {
        r->body_too_large = true;
        return;
    }
    r->body = grown;
    memcpy(r->body + r->body_length, data, size);
    r->body_length += size;
    r->body[r->body_length] = 0;
}

static enum MHD_Result on_access(void *context, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **request_context)
{
    (void)version;
    server *s = context;
    request *r = *request_context;
    if (!r) {
        r = request_new(s, connection, url);
        if (!r)
            return MHD_NO;
        *request_context = r;
        const char *length = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, 0, 10) > CODEC_BODY_MAX)
            r->body_too_large = true;
        /* Refuse an announced oversized body before it is sent; MHD then closes. */
        if (r->body_too_large)
            return send_problem(r, COFFER_BODY_TOO_LARGE, 0, "at most 4 MiB");
        return MHD_YES;
    }
    if (*upload_data_size) {
        receive(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->state == STATE_ANSWERED)
        return is_write(r->route) ? answer_write(r) : answer_read(r);
    if (r->state != STATE_RECEIVING)
        return MHD_YES;
    /* Draining: new requests on open connections are refused; in-flight ones finish. */
    if (atomic_load(&s->draining) && r->route != ROUTE_HEALTH)
        return send_problem(r, COFFER_SHUTTING_DOWN, 0, "the server is stopping");
    return dispatch(r, method);
}

static void on_completed(void *context, struct MHD_Connection *connection, void **request_context,
                         enum MHD_RequestTerminationCode reason)
{
    (void)connection;
    (void)reason;
    server *s = context;
    request *r = *request_context;
    if (!r)
        return;
    codec_batch_free(&r->batch);
    free(r->results);
    free(r->history);
    free(r->holds);
    free(r->body);
    free(r->path_id);
    if (r->engine_used)
        atomic_fetch_sub(&s->suspended, 1);
    free(r);
    *request_context = 0;
    atomic_fetch_sub(&s->active, 1);
}

/* ---- running ------------------------------------------------------------------------------- */

void server_block_signals(sigset_t *signals)
{
    sigemptyset(signals);
    sigaddset(signals, SIGTERM);
    sigaddset(signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, signals, 0);
}

void server_options_init(server_options *options)
{
    memset(options, 0, sizeof *options);
    options->host = "127.0.0.1";
    options->port = 8080;
    options->data_dir = "./coffer-data";
    options->threads = 1; /* on 2 cores the writer and the log thread need the other one */
    options->max_connections = 1024;
    options->timeout_seconds = 30;
    options->queue_events_max = 64 * 1024;
    options->snapshot_every_events = 10 * 1000 * 1000;
    options->snapshot_every_seconds = 3600;
}

static bool listen_address(const server_options *options, struct sockaddr_in *address)
{
    memset(address, 0, sizeof *address);
    address->sin_family = AF_INET;
    address->sin_port = htons(options->port);
    const char *host = !strcmp(options->host, "localhost") ? "127.0.0.1" : options->host;
    return inet_pton(AF_INET, host, &address->sin_addr) == 1;
}

static int open_engine(const server_options *options, coffer **db)
{
    coffer_options engine_options;
    coffer_options_init(&engine_options);
    engine_options.fsync_never = options->fsync_never;
    engine_options.queue_events_max = options->queue_events_max;
    engine_options.snapshot_every_events = options->snapshot_every_events;
    engine_options.snapshot_every_seconds = options->snapshot_every_seconds;
    engine_options.accept_data_loss = options->accept_data_loss;
    int code = coffer_open(options->data_dir, &engine_options, db);
    if (code != COFFER_OK)
        fprintf(stderr, "coffer: cannot open %s (%s; the lines above say why)\n", options->data_dir,
                coffer_code_name(code));
    return code;
}

static struct MHD_Daemon *start_daemon(server *s, const struct sockaddr_in *address)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    /* One network thread is the daemon's own polling thread; a pool option is only given for
     * more (MHD warns about a pool of one). */
    struct MHD_OptionItem pool[] = {
        {s->options->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)s->options->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    return MHD_start_daemon(
        flags, s->options->port, 0, 0, on_access, s, MHD_OPTION_SOCK_ADDR, address,
        MHD_OPTION_CONNECTION_LIMIT, s->options->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        s->options->timeout_seconds, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, MHD_OPTION_ARRAY, pool, MHD_OPTION_END);
}

/* Stop accepting, refuse new requests on open connections (503 shutting_down), wait until
 * every request handed to the engine has been answered and its response completed, then stop
 * the daemon. MHD must not be stopped with a suspended connection, and none can remain: the
 * engine answers everything it was given, and nothing new reaches it. */
static void drain(server *s)
{
    atomic_store(&s->draining, true);
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    while (atomic_load(&s->suspended) > 0)
        usleep(5000);
    MHD_stop_daemon(s->daemon);
}

int server_run(const server_options *options)
{
    /* Signals are taken by sigwait in this thread only: blocked before any thread starts
     * (main() blocks them even earlier, so one that comes during start-up waits too). */
    sigset_t signals;
    server_block_signals(&signals);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in address;
    if (!listen_address(options, &address)) {
        fprintf(stderr, "coffer: --listen needs an IPv4 address and a port, like 127.0.0.1:8080\n");
        return 2;
    }
    static server s;
    s.options = options;
    snprintf(s.id_prefix, sizeof s.id_prefix, "%x", (unsigned)(now_ns() ^ (uint64_t)getpid()));
    metrics_init(&s.metrics);
    if (open_engine(options, &s.db) != COFFER_OK)
        return 1;
    s.daemon = start_daemon(&s, &address);
    if (!s.daemon) {
        fprintf(stderr, "coffer: cannot listen on %s:%u: %s\n", options->host, options->port,
                strerror(errno));
        coffer_close(s.db);
        return 1;
    }
    fprintf(stderr, "coffer: serving on http://%s:%u with data in %s%s\n", options->host,
            options->port, options->data_dir,
            options->fsync_never ? " (fsync never: NOT DURABLE)" : "");
    int received = 0;
    sigwait(&signals, &received);
    fprintf(stderr, "coffer: %s received: draining\n", received == SIGTERM ? "SIGTERM" : "SIGINT");
    drain(&s);
    coffer_close(s.db);
    fprintf(stderr, "coffer: stopped cleanly\n");
    return 0;
}
