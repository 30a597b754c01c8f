/*
 * encode.c — every response the server sends (see encode.h), built with jansson and written
 * compact with keys in the order they were set. The shapes are docs/api.md's; this file is the
 * one place they live.
 */
#include "server/encode.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- values -------------------------------------------------------------------------------- */

/* "YYYY-MM-DDTHH:MM:SS" of a second and its length; the last one is kept per thread, as most
 * stamps in a row fall in the same second. */
static const char *utc_seconds(time_t seconds, size_t *length)
{
    static _Thread_local time_t cached_seconds = -1;
    static _Thread_local char cached[32];
    static _Thread_local size_t cached_length;
    if (seconds != cached_seconds) {
        struct tm utc;
        gmtime_r(&seconds, &utc);
        cached_length = strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &utc);
        cached_seconds = seconds;
    }
    *length = cached_length;
    return cached;
}

/* Copied by hand, not with snprintf: every change of the feed and every answer to a write
 * carries a stamp, and snprintf (here and in the webhook's envelope) took a fifth of a webhook
 * thread's time. */
void encode_time(char *out, size_t size, uint64_t ns)
{
    if (size == 0)
        return;
    char text[48];
    size_t used;
    const char *seconds = utc_seconds((time_t)(ns / 1000000000ULL), &used);
    memcpy(text, seconds, used);
    text[used++] = '.';
    uint64_t nanoseconds = ns % 1000000000ULL;
    for (size_t i = 9; i-- > 0; nanoseconds /= 10)
        text[used + i] = (char)('0' + nanoseconds % 10);
    used += 9;
    text[used++] = 'Z';
    if (used >= size)
        used = size - 1; /* cut as snprintf would */
    memcpy(out, text, used);
    out[used] = 0;
}

/* Times go out as RFC 3339 text only: integer nanoseconds pass 2^53, which JavaScript rounds. */
static void set_time(json_t *object, const char *key, uint64_t ns)
{
    char text[48];
    encode_time(text, sizeof text, ns);
    json_object_set_new(object, key, json_string(text));
}

static json_t *metadata_value(const char *text, size_t length)
{
    if (!length)
        return 0;
    json_t *value = json_loadb(text, length, JSON_DECODE_ANY, 0);
    return value ? value : json_stringn(text, length); /* not JSON (embedded API): as text */
}

const char *encode_state_name(int state)
{
    switch (state) {
    case COFFER_STATE_POSTED:
        return "posted";
    case COFFER_STATE_PENDING:
        return "pending";
    case COFFER_STATE_CAPTURED:
        return "captured";
    case COFFER_STATE_VOIDED:
        return "voided";
    case COFFER_STATE_EXPIRED:
        return "expired";
    case COFFER_STATE_REJECTED:
        return "rejected";
    default:
        return "none";
    }
}

static json_t *account_after(const char *id, const coffer_account_after *after)
{
    return json_pack("{s:s, s:I, s:I, s:I}", "id", id, "balance", (json_int_t)after->balance,
                     "available", (json_int_t)after->available, "version",
                     (json_int_t)after->version);
}

int encode_result_status(const coffer_result *result)
{
    if (result->code == COFFER_CREATED || result->code == COFFER_EXISTS)
        return 201;
    return coffer_code_http_status(result->code);
}

/* The account as created, for a create and its replays. */
static json_t *created_account(const coffer_event *e, const coffer_result *r)
{
    json_t *account = json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:I}", "id", e->id, "currency", e->currency,
        "balance", 0, "available", 0, "debits_posted", 0, "credits_posted", 0, "debits_held", 0,
        "credits_held", 0, "version", (json_int_t)1, "created_seq", (json_int_t)r->seq);
    json_object_set_new(account, "min_balance",
                        (e->flags & COFFER_FLAG_MIN_UNBOUNDED) ? json_null()
                                                               : json_integer(e->min_balance));
    json_object_set_new(account, "max_balance",
                        (e->flags & COFFER_FLAG_HAS_MAX) ? json_integer(e->max_balance)
                                                         : json_null());
    json_t *metadata = metadata_value(e->metadata, e->metadata_len);
    json_object_set_new(account, "metadata", metadata ? metadata : json_object());
    set_time(account, "created_at", r->timestamp);
    return account;
}

/* The key that names the hold an event resolves. */
static const char *hold_op_name(int op)
{
    return op == COFFER_OP_POST ? "post" : op == COFFER_OP_VOID ? "void" : "expire";
}

static json_t *event_success_json(const coffer_event *e, const coffer_result *r)
{
    json_t *out = json_pack("{s:s}", "code", "created");
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        json_object_set_new(out, "account", created_account(e, r));
        return out;
    }
    json_t *transfer =
        json_pack("{s:s, s:s, s:I, s:I}", "id", e->id, "state", encode_state_name(r->state),
                  "amount", (json_int_t)r->amount, "seq", (json_int_t)r->seq);
    set_time(transfer, "timestamp", r->timestamp);
    if (e->op == COFFER_OP_TRANSFER) {
        json_object_set_new(transfer, "from", json_string(e->from));
        json_object_set_new(transfer, "to", json_string(e->to));
        if (e->hold_timeout_ms) {
            json_object_set_new(transfer, "hold",
                                json_pack("{s:I}", "timeout_ms", (json_int_t)e->hold_timeout_ms));
            set_time(transfer, "expires_at", r->expires_at);
        }
        if (e->flags & COFFER_FLAG_UP_TO) {
            json_object_set_new(transfer, "up_to", json_true());
            json_object_set_new(transfer, "amount_requested", json_integer(e->amount));
        }
    } else {
        json_object_set_new(transfer, hold_op_name(e->op), json_string(e->hold_id));
        json_object_set_new(transfer, "from", json_string(r->hold_from));
        json_object_set_new(transfer, "to", json_string(r->hold_to));
    }
    json_t *metadata = metadata_value(e->metadata, e->metadata_len);
    if (metadata)
        json_object_set_new(transfer, "metadata", metadata);
    json_object_set_new(out, "transfer", transfer);
    const char *from = e->op == COFFER_OP_TRANSFER ? e->from : r->hold_from;
    const char *to = e->op == COFFER_OP_TRANSFER ? e->to : r->hold_to;
    json_object_set_new(out, "accounts",
                        json_pack("{s:o, s:o}", "from", account_after(from, &r->from), "to",
                                  account_after(to, &r->to)));
    return out;
}

/* A problem object (RFC 9457) for a code, with the HTTP status it is sent with. */
static json_t *problem_json(int code, int status, const char *field, const char *detail)
{
    char type[64];
    snprintf(type, sizeof type, "urn:coffer:error:%s", coffer_code_name(code));
    json_t *problem =
        json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", coffer_strerror(code),
                  "status", status, "code", coffer_code_name(code), "detail",
                  detail && *detail ? detail : coffer_strerror(code));
    if (field && *field)
        json_object_set_new(problem, "field", json_string(field));
    return problem;
}

/* The problem for a rejected event's result; `prefix` is prepended to its field (batches). */
static json_t *event_problem_json(const coffer_event *e, const coffer_result *r, const char *prefix)
{
    char field[128], detail[200];
    field[0] = 0;
    if (r->field)
        snprintf(field, sizeof field, "%s%s", prefix ? prefix : "", r->field);
    snprintf(detail, sizeof detail, "%s", coffer_strerror(r->code));
    if (r->code == COFFER_INSUFFICIENT_BALANCE && e->from)
        snprintf(detail, sizeof detail, "account %s has %lld available", e->from,
                 (long long)r->available);
    if (r->code == COFFER_VERSION_MISMATCH)
        snprintf(detail, sizeof detail, "the account is at version %llu",
                 (unsigned long long)r->actual_version);
    if (r->code == COFFER_ID_REUSED && r->field)
        snprintf(detail, sizeof detail, "id %s was used with a different %s", e->id, r->field + 1);
    if (r->code == COFFER_ID_REUSED && !r->field) /* the item matches its record: see coffer.h */
        snprintf(detail, sizeof detail,
                 "the atomic batch mixes recorded and new items (%s is recorded); send it all "
                 "new, or exactly as recorded to replay it",
                 e->id);
    json_t *problem = problem_json(r->code, coffer_code_http_status(r->code), field, detail);
    if (r->code == COFFER_INSUFFICIENT_BALANCE)
        json_object_set_new(problem, "available", json_integer(r->available));
    if (r->code == COFFER_VERSION_MISMATCH)
        json_object_set_new(problem, "actual_version", json_integer((json_int_t)r->actual_version));
    if (e->id)
        json_object_set_new(problem, "id", json_string(e->id));
    if (r->seq)
        json_object_set_new(problem, "seq", json_integer((json_int_t)r->seq));
    return problem;
}

static json_t *account_json(const coffer_account *a, int at, uint64_t at_value)
{
    json_t *out = json_pack(
        "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "id", a->id, "currency", a->currency,
        "balance", (json_int_t)a->balance, "available", (json_int_t)a->available, "debits_posted",
        (json_int_t)a->debits_posted, "credits_posted", (json_int_t)a->credits_posted,
        "debits_held", (json_int_t)a->debits_held, "credits_held", (json_int_t)a->credits_held,
        "version", (json_int_t)a->version, "created_seq", (json_int_t)a->created_seq);
    json_object_set_new(out, "min_balance",
                        a->min_unbounded ? json_null() : json_integer(a->min_balance));
    json_object_set_new(out, "max_balance",
                        a->has_max ? json_integer(a->max_balance) : json_null());
    json_t *metadata = metadata_value(a->metadata, a->metadata_len);
    json_object_set_new(out, "metadata", metadata ? metadata : json_object());
    set_time(out, "created_at", a->created_at);
    if (at != COFFER_AT_NOW) {
        json_object_set_new(out, "debits_posted", json_null());
        json_object_set_new(out, "credits_posted", json_null());
        json_object_set_new(out, "credits_held", json_null());
        json_t *where = json_object();
        if (at == COFFER_AT_SEQ)
            json_object_set_new(where, "seq", json_integer((json_int_t)at_value));
        else
            set_time(where, "timestamp", at_value);
        json_object_set_new(out, "at", where);
    }
    return out;
}

static json_t *transfer_json(const coffer_transfer *t)
{
    /* A rejection moved nothing; it shows what was asked. */
    int64_t amount = t->state == COFFER_STATE_REJECTED ? t->amount_requested : t->amount;
    json_t *out = json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", t->id, "state",
                            encode_state_name(t->state), "code", coffer_code_name(t->code),
                            "amount", (json_int_t)amount, "seq", (json_int_t)t->seq);
    set_time(out, "timestamp", t->timestamp);
    if (t->op == COFFER_OP_TRANSFER) {
        json_object_set_new(out, "from", json_string(t->from));
        json_object_set_new(out, "to", json_string(t->to));
        if (t->hold_timeout_ms) {
            json_object_set_new(out, "hold",
                                json_pack("{s:I}", "timeout_ms", (json_int_t)t->hold_timeout_ms));
            set_time(out, "expires_at", t->expires_at);
        }
        if (t->flags & COFFER_FLAG_UP_TO) {
            json_object_set_new(out, "up_to", json_true());
            json_object_set_new(out, "amount_requested", json_integer(t->amount_requested));
        }
        if (t->state == COFFER_STATE_CAPTURED)
            json_object_set_new(out, "captured", json_integer(t->captured));
        if (t->flags & (COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO)) {
            json_t *expect = json_object();
            if (t->flags & COFFER_FLAG_EXPECT_FROM)
                json_object_set_new(expect, "from_version",
                                    json_integer((json_int_t)t->expect_from_version));
            if (t->flags & COFFER_FLAG_EXPECT_TO)
                json_object_set_new(expect, "to_version",
                                    json_integer((json_int_t)t->expect_to_version));
            json_object_set_new(out, "expect", expect);
        }
    } else {
        json_object_set_new(out, t->op == COFFER_OP_POST ? "post" : "void",
                            json_string(t->hold_id));
        if (t->from[0])
            json_object_set_new(out, "from", json_string(t->from));
        if (t->to[0])
            json_object_set_new(out, "to", json_string(t->to));
    }
    json_t *metadata = metadata_value(t->metadata, t->metadata_len);
    if (metadata)
        json_object_set_new(out, "metadata", metadata);
    /* Always there, null for none, as in the change feed. */
    json_object_set_new(out, "submitted_by",
                        t->submitted_by[0] ? json_string(t->submitted_by) : json_null());
    return out;
}

static const char *history_kind_name(int kind)
{
    switch (kind) {
    case COFFER_HISTORY_POSTED:
        return "posted";
    case COFFER_HISTORY_HELD:
        return "held";
    case COFFER_HISTORY_CAPTURED:
        return "captured";
    case COFFER_HISTORY_RELEASED:
        return "released";
    case COFFER_HISTORY_EXPIRED:
        return "expired";
    default:
        return "unknown";
    }
}

static json_t *history_entry_json(const coffer_history_entry *h)
{
    json_t *out =
        json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:I}", "seq", (json_int_t)h->seq, "transfer_id",
                  h->transfer_id, "kind", history_kind_name(h->kind), "delta", (json_int_t)h->delta,
                  "balance", (json_int_t)h->balance, "available", (json_int_t)h->available,
                  "version", (json_int_t)h->version);
    set_time(out, "timestamp", h->timestamp);
    return out;
}

/* ---- responses ----------------------------------------------------------------------------- */

/* `body` (taken) as the compact text of a response with this status and code. */
static void finish_json(encoded *out, unsigned status, int code, json_t *body, bool replayed)
{
    out->status = status;
    out->code = code;
    out->content_type = status >= 400 ? "application/problem+json" : "application/json";
    out->replayed = replayed;
    out->body = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
    out->length = out->body ? strlen(out->body) : 0;
    json_decref(body);
}

void encode_problem(encoded *out, int code, const char *field, const char *detail)
{
    int status = coffer_code_http_status(code);
    finish_json(out, (unsigned)status, code, problem_json(code, status, field, detail), false);
}

void encode_text(encoded *out, const char *content_type, char *text, size_t length)
{
    if (!text) {
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return;
    }
    *out = (encoded){200, COFFER_OK, content_type, false, text, length};
}

void encode_success(text_buffer *t, const coffer_event *event, const coffer_result *result,
                    bool item)
{
    json_t *object = event_success_json(event, result);
    if (item) {
        json_object_set_new(object, "status", json_integer(encode_result_status(result)));
        if (result->replayed)
            json_object_set_new(object, "replayed", json_true());
    }
    char *text = json_dumps(object, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(object);
    if (!text) {
        t->failed = true;
        return;
    }
    text_append(t, text, strlen(text));
    free(text);
}

/* A rejected item of a batch answer: its status, code and problem. */
static void append_rejected_item(text_buffer *t, const coffer_event *event,
                                 const coffer_result *result, size_t index)
{
    char prefix[40];
    bool accounts = event->op == COFFER_OP_CREATE_ACCOUNT;
    snprintf(prefix, sizeof prefix, "/%s/%zu", accounts ? "accounts" : "transfers", index);
    json_t *item = json_pack("{s:i, s:s, s:o}", "status", encode_result_status(result), "code",
                             coffer_code_name(result->code), "problem",
                             event_problem_json(event, result, prefix));
    if (result->replayed)
        json_object_set_new(item, "replayed", json_true());
    char *text = json_dumps(item, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(item);
    if (!text) {
        t->failed = true;
        return;
    }
    text_append(t, text, strlen(text));
    free(text);
}

/* The code an atomic batch failed with: the first item's own code that is not batch_failed
 * (the engine gives one such item), or OK when the batch applied or was replayed. */
static int atomic_failure(const coffer_result *results, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!coffer_code_is_success(results[i].code) && results[i].code != COFFER_BATCH_FAILED)
            return results[i].code;
    for (size_t i = 0; i < count; i++) /* not expected: every item batch_failed */
        if (!coffer_code_is_success(results[i].code))
            return results[i].code;
    return COFFER_OK;
}

/* A list's answer: one item per event, in order; 200, or 409 with the failure's code at the
 * top level for an atomic batch that failed (it applied nothing, so a client that reads only
 * the status must not take it for a success). */
static void encode_batch(encoded *out, const coffer_event *events, const coffer_result *results,
                         size_t count, bool atomic)
{
    bool accounts = events[0].op == COFFER_OP_CREATE_ACCOUNT;
    int failure = atomic && !accounts ? atomic_failure(results, count) : COFFER_OK;
    text_buffer t = {0};
    if (failure != COFFER_OK) {
        const char *name = coffer_code_name(failure);
        const char *open = "{\"atomic\":true,\"code\":\"", *results_key = "\",\"results\":[";
        text_append(&t, open, strlen(open));
        text_append(&t, name, strlen(name));
        text_append(&t, results_key, strlen(results_key));
    } else {
        const char *head = accounts ? "{\"results\":["
                           : atomic ? "{\"atomic\":true,\"results\":["
                                    : "{\"atomic\":false,\"results\":[";
        text_append(&t, head, strlen(head));
    }
    for (size_t i = 0; i < count && !t.failed; i++) {
        if (i)
            text_append(&t, ",", 1);
        if (!coffer_code_is_success(results[i].code))
            append_rejected_item(&t, &events[i], &results[i], i);
        else if (!encode_success_fast(&t, &events[i], &results[i], true))
            encode_success(&t, &events[i], &results[i], true);
    }
    text_append(&t, "]}", 2);
    if (t.failed) {
        free(t.bytes);
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return;
    }
    *out = (encoded){
        failure != COFFER_OK ? 409 : 200, failure, "application/json", false, t.bytes, t.length};
}

void encode_write(encoded *out, const coffer_event *events, const coffer_result *results,
                  size_t count, bool list, bool atomic)
{
    if (list) {
        encode_batch(out, events, results, count, atomic);
        return;
    }
    const coffer_result *result = &results[0];
    if (!coffer_code_is_success(result->code)) {
        finish_json(out, (unsigned)encode_result_status(result), result->code,
                    event_problem_json(&events[0], result, ""), result->replayed);
        return;
    }
    if (events[0].op == COFFER_OP_CREATE_ACCOUNT) { /* the account object itself */
        json_t *body = event_success_json(&events[0], result);
        json_t *account = json_incref(json_object_get(body, "account"));
        json_decref(body);
        finish_json(out, 201, result->code, account, result->replayed);
        return;
    }
    text_buffer t = {0};
    if (!encode_success_fast(&t, &events[0], result, false))
        encode_success(&t, &events[0], result, false);
    if (t.failed) {
        free(t.bytes);
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return;
    }
    *out = (encoded){201, result->code, "application/json", result->replayed, t.bytes, t.length};
}

void encode_read_failure(encoded *out, int code)
{
    if (code != COFFER_ACCOUNT_NOT_FOUND) {
        encode_problem(out, code, 0, 0);
        return;
    }
    /* A missing resource read by GET is 404, not the 422 a write would get. */
    finish_json(out, 404, code, problem_json(code, 404, 0, "no such account (at that point)"),
                false);
}

void encode_account(encoded *out, const coffer_account *account, int at, uint64_t at_value)
{
    finish_json(out, 200, COFFER_OK, account_json(account, at, at_value), false);
}

void encode_history(encoded *out, const coffer_history_entry *entries, size_t count, size_t limit)
{
    json_t *list = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(list, history_entry_json(&entries[i]));
    /* A full page may have more after it; a short one is the end. */
    json_t *next = count > 0 && count == limit ? json_integer((json_int_t)entries[count - 1].seq)
                                               : json_null();
    finish_json(out, 200, COFFER_OK, json_pack("{s:o, s:o}", "entries", list, "next_after", next),
                false);
}

void encode_transfer(encoded *out, const coffer_transfer *transfer)
{
    finish_json(out, 200, COFFER_OK, transfer_json(transfer), false);
}

void encode_holds(encoded *out, const coffer_transfer *holds, size_t count)
{
    json_t *list = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(list, transfer_json(&holds[i]));
    finish_json(out, 200, COFFER_OK, json_pack("{s:o}", "holds", list), false);
}

void encode_verify(encoded *out, const coffer_verify_report *report)
{
    json_t *problems = json_array();
    for (uint32_t i = 0; i < report->problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++)
        json_array_append_new(problems, json_string(report->problems[i]));
    json_t *body = json_pack("{s:b, s:o, s:I, s:I, s:I}", "ok", report->ok, "problems", problems,
                             "problem_count", (json_int_t)report->problem_count, "accounts_checked",
                             (json_int_t)report->accounts_checked, "transfers_checked",
                             (json_int_t)report->transfers_checked);
    finish_json(out, 200, COFFER_OK, body, false);
}

void encode_probe(encoded *out, const char *word)
{
    finish_json(out, 200, COFFER_OK, json_pack("{s:s}", "status", word), false);
}

void encode_readiness(encoded *out, int code, const char *role, const char *detail)
{
    if (code == COFFER_OK) {
        finish_json(out, 200, COFFER_OK, json_pack("{s:s, s:s}", "status", "ready", "role", role),
                    false);
        return;
    }
    int status = coffer_code_http_status(code);
    json_t *problem = problem_json(code, status, 0, detail);
    json_object_set_new(problem, "role", json_string(role));
    finish_json(out, (unsigned)status, code, problem, false);
}

/* ---- the cluster --------------------------------------------------------------------------- */

void encode_redirect(encoded *out, const char *leader)
{
    char detail[COFFER_CLUSTER_URL_MAX + 64];
    snprintf(detail, sizeof detail, "this instance follows; send writes to the leader, %s", leader);
    json_t *problem = problem_json(COFFER_NOT_LEADER, 307, 0, detail);
    json_object_set_new(problem, "leader", json_string(leader));
    finish_json(out, 307, COFFER_NOT_LEADER, problem, false);
    out->content_type = "application/problem+json";
}

/* A role as its name; "unknown" for a value this build does not know (a newer peer's). */
static const char *role_name(int role)
{
    const char *name = coffer_role_name(role);
    return name ? name : "unknown";
}

static json_t *member_json(const coffer_cluster_member *member)
{
    json_t *object =
        json_pack("{s:s, s:s, s:I}", "advertise", member->advertise, "role",
                  role_name(member->role), "applied_seq", (json_int_t)member->applied_seq);
    set_time(object, "seen_at", member->seen_at * 1000000ULL);
    return object;
}

void encode_cluster(encoded *out, const coffer_cluster_status *status)
{
    json_t *members = json_array();
    for (size_t i = 0; i < status->members_count && i < COFFER_CLUSTER_MEMBERS_MAX; i++)
        json_array_append_new(members, member_json(&status->members[i]));
    json_t *leader = status->leader[0] ? json_string(status->leader) : json_null();
    char hash[2 * sizeof status->applied_hash + 1];
    for (size_t i = 0; i < sizeof status->applied_hash; i++)
        snprintf(hash + 2 * i, 3, "%02x", status->applied_hash[i]);
    json_t *body = json_pack("{s:s, s:o, s:I, s:I, s:o, s:b, s:o}", "role", role_name(status->role),
                             "leader", leader, "term", (json_int_t)status->term, "applied_seq",
                             (json_int_t)status->applied_seq, "applied_hash",
                             status->has_applied_hash ? json_string(hash) : json_null(), "ready",
                             status->ready, "members", members);
    finish_json(out, 200, COFFER_OK, body, false);
}

/* ---- the change feed ----------------------------------------------------------------------- */

/* What a refused event asked for, with the code it was refused with (nothing moved). */
static json_t *rejected_transfer_json(const coffer_event *e, const coffer_result *r)
{
    json_t *transfer = json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", e->id, "state", "rejected",
                                 "code", coffer_code_name(r->code), "amount", (json_int_t)e->amount,
                                 "seq", (json_int_t)r->seq);
    set_time(transfer, "timestamp", r->timestamp);
    if (e->op == COFFER_OP_TRANSFER) {
        json_object_set_new(transfer, "from", json_string(e->from));
        json_object_set_new(transfer, "to", json_string(e->to));
    } else {
        json_object_set_new(transfer, hold_op_name(e->op), json_string(e->hold_id));
    }
    json_t *metadata = metadata_value(e->metadata, e->metadata_len);
    if (metadata)
        json_object_set_new(transfer, "metadata", metadata);
    return transfer;
}

json_t *encode_change_json(const coffer_change *change)
{
    const coffer_event *e = &change->event;
    const coffer_result *r = &change->result;
    json_t *out = json_pack("{s:I}", "seq", (json_int_t)change->seq);
    set_time(out, "timestamp", change->timestamp);
    json_object_set_new(out, "type", json_string(coffer_change_type_name(change->type)));
    json_object_set_new(out, "submitted_by",
                        change->submitted_by ? json_string(change->submitted_by) : json_null());
    if (change->type == COFFER_CHANGE_ACCOUNT_CREATED) {
        json_object_set_new(out, "account", created_account(e, r));
    } else if (change->type == COFFER_CHANGE_TRANSFER_REJECTED) {
        json_object_set_new(out, "transfer", rejected_transfer_json(e, r));
    } else {
        json_t *success = event_success_json(e, r);
        json_object_set(out, "transfer", json_object_get(success, "transfer"));
        json_object_set(out, "accounts", json_object_get(success, "accounts"));
        json_decref(success);
    }
    return out;
}

void encode_change_text(text_buffer *t, const coffer_change *change)
{
    if (encode_change_fast(t, change))
        return;
    json_t *tree = encode_change_json(change);
    char *text = tree ? json_dumps(tree, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
    json_decref(tree);
    if (!text) {
        t->failed = true;
        return;
    }
    text_append(t, text, strlen(text));
    free(text);
}

void encode_events(encoded *out, const coffer_change *changes, size_t count, uint64_t next_after,
                   uint64_t durable_seq)
{
    /* Written change by change (a tree, when one is needed, freed at once: a page of 1,000
     * changes built as one tree would hold hundreds of thousands of small allocations). */
    text_buffer t = {0};
    text_append(&t, "{\"events\":[", 11);
    for (size_t i = 0; i < count && !t.failed; i++) {
        if (i)
            text_append(&t, ",", 1);
        encode_change_text(&t, &changes[i]);
    }
    text_printf(&t, "],\"next_after\":%llu,\"durable_seq\":%llu}", (unsigned long long)next_after,
                (unsigned long long)durable_seq);
    if (t.failed) {
        free(t.bytes);
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return;
    }
    *out = (encoded){200, COFFER_OK, "application/json", false, t.bytes, t.length};
}

/* A JSON value on one line (compact JSON escapes every newline), appended as an SSE data
 * field. */
static void append_data_line(text_buffer *t, json_t *value)
{
    char *data = value ? json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
    json_decref(value);
    if (!data) {
        t->failed = true;
        return;
    }
    text_printf(t, "data: %s\n\n", data);
    free(data);
}

void encode_change_frame(text_buffer *t, const coffer_change *change)
{
    const char *type = coffer_change_type_name(change->type);
    TEXT_PUT(t, "id: ");
    text_append_u64(t, change->seq);
    TEXT_PUT(t, "\nevent: ");
    text_append(t, type, strlen(type));
    TEXT_PUT(t, "\ndata: ");
    encode_change_text(t, change); /* compact JSON: one line */
    text_append(t, "\n\n", 2);
}

void encode_problem_frame(text_buffer *t, int code, const char *detail)
{
    text_printf(t, "event: error\n");
    append_data_line(t, problem_json(code, coffer_code_http_status(code), 0, detail));
}
