/*
 * cluster_http.c — see cluster_http.h. The leader is looked up (coffer_cluster_get, a few KiB
 * copied) only for a refused write, /v1/cluster and /readyz, never for every request; a read
 * that waits for its seq is suspended on the change feed's waiter thread like a long-poll.
 */
#include "server/cluster_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/percent.h"
#include "server/http.h"
#include "server/parse.h"
#include "server/routes.h"

/* ---- redirects ----------------------------------------------------------------------------- */

/* Appends text; bytes outside `keep` (and every byte outside printable ASCII) percent-encoded. */
static void location_append(cluster_location *location, const char *text, const char *keep)
{
    percent_append(location->text, sizeof location->text, &location->length, &location->overflow,
                   text, keep);
}

void cluster_location_start(cluster_location *location, const char *leader, const char *path)
{
    location->length = 0;
    location->overflow = location->has_query = false;
    location->text[0] = 0;
    size_t length = strlen(leader);
    while (length && leader[length - 1] == '/')
        length--;
    if (length >= sizeof location->text) {
        location->overflow = true;
        return;
    }
    memcpy(location->text, leader, length); /* the leader's URL as it advertised it */
    location->text[location->length = length] = 0;
    location_append(location, path, "/:@!$&'()*+,;="); /* a path segment's own characters */
}

void cluster_location_query(cluster_location *location, const char *name, const char *value)
{
    location_append(location, location->has_query ? "&" : "?", "?&");
    location->has_query = true;
    /* '+' stays escaped: the server reads it as itself, not as a space. */
    location_append(location, name, "/:@!$'()*,;");
    if (value) {
        location_append(location, "=", "=");
        location_append(location, value, "/:@!$'()*,;");
    }
}

bool cluster_refuses(int code)
{
    return code == COFFER_NOT_LEADER || code == COFFER_NO_LEADER;
}

int cluster_encode_refusal(encoded *out, int code, const char *leader)
{
    COFFER_ASSERT(cluster_refuses(code));
    if (code == COFFER_NOT_LEADER && leader[0]) {
        encode_redirect(out, leader);
        return COFFER_NOT_LEADER;
    }
    /* Refused as a follower, but the leader is gone by now: nowhere to send the client yet. */
    encode_problem(out, COFFER_NO_LEADER, 0,
                   "no instance leads the cluster right now; retry in a second");
    return COFFER_NO_LEADER;
}

static enum MHD_Result add_query_pair(void *context, enum MHD_ValueKind kind, const char *name,
                                      const char *value)
{
    (void)kind;
    cluster_location_query(context, name, value);
    return MHD_YES;
}

enum MHD_Result cluster_answer_refusal(request *r, int code)
{
    coffer_cluster_status *status = malloc(sizeof *status);
    cluster_location *location = malloc(sizeof *location);
    if (!status || !location || coffer_cluster_get(r->server->db, status) != COFFER_OK) {
        free(status);
        free(location);
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    }
    encoded response;
    if (cluster_encode_refusal(&response, code, status->leader) == COFFER_NOT_LEADER) {
        cluster_location_start(location, status->leader, r->url);
        MHD_get_connection_values(r->connection, MHD_GET_ARGUMENT_KIND, add_query_pair, location);
        /* A target too long to repeat (bounded by the head's limit, so it cannot happen):
         * the leader's root still tells the client where to go. */
        r->location = strdup(location->overflow ? status->leader : location->text);
    }
    free(status);
    free(location);
    return http_send(r, &response);
}

/* ---- reads that wait for a seq ------------------------------------------------------------- */

/* The read's min_seq (query or header) into r->min_seq: COFFER_OK, or invalid_field. */
static int min_seq_parse(request *r, const char **field, const char **detail)
{
    const char *query = http_query(r, "min_seq"), *header = http_header(r, "Coffer-Min-Seq");
    uint64_t from_query = 0, from_header = 0;
    *detail = "a seq (a whole number), as a response's Coffer-Seq header gives it";
    *field = "/min_seq";
    if (query && !parse_number(query, 0, UINT64_MAX, &from_query))
        return COFFER_INVALID_FIELD;
    *field = "Coffer-Min-Seq";
    if (header && !parse_number(header, 0, UINT64_MAX, &from_header))
        return COFFER_INVALID_FIELD;
    if (query && header && from_query != from_header) {
        *detail = "?min_seq and the Coffer-Min-Seq header differ: give one";
        return COFFER_INVALID_FIELD;
    }
    r->min_seq = query ? from_query : from_header;
    return COFFER_OK;
}

/* Resumed: the seq is applied, or the wait is over (or the server stops). */
static bool wait_ended(request *r, enum MHD_Result *result)
{
    r->seq_waiting = false;
    if (coffer_durable_seq(r->server->db) >= r->min_seq)
        return true;
    if (atomic_load(&r->server->draining))
        *result = http_problem(r, COFFER_SHUTTING_DOWN, 0, "the server is stopping");
    else
        *result = http_problem(r, COFFER_SEQ_NOT_APPLIED, 0,
                               "this instance has not applied min_seq within the wait; retry, "
                               "or read from the leader");
    return false;
}

bool cluster_read_may_start(request *r, enum MHD_Result *result)
{
    if (r->seq_waiting)
        return wait_ended(r, result);
    if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD"))
        return true; /* a write is applied on the latest state: it has nothing to wait for */
    if (r->route == ROUTE_HEALTH || r->route == ROUTE_READY || r->route == ROUTE_METRICS)
        return true; /* probes and metrics say how this instance is now */
    const char *field, *detail;
    if (min_seq_parse(r, &field, &detail) != COFFER_OK) {
        *result = http_problem(r, COFFER_INVALID_FIELD, field, detail);
        return false;
    }
    if (coffer_durable_seq(r->server->db) >= r->min_seq)
        return true;
    r->seq_waiter = (feed_waiter){
        .connection = r->connection,
        .poll = r,
        .after = r->min_seq - 1,
        .deadline_ns = r->started_ns + (uint64_t)CLUSTER_MIN_SEQ_WAIT_MS * 1000000u,
    };
    r->seq_waiting = true;
    int code = feed_hub_wait(&r->server->feed, &r->seq_waiter);
    if (code == COFFER_OK) {
        *result = MHD_YES;
        return false;
    }
    r->seq_waiting = false;
    *result = http_problem(r, code, 0,
                           code == COFFER_OVERLOADED ? "too many requests waiting; retry later"
                                                     : "the server is stopping");
    return false;
}

/* ---- the routes ---------------------------------------------------------------------------- */

enum MHD_Result handle_cluster(request *r)
{
    coffer_cluster_status *status = malloc(sizeof *status);
    if (!status || coffer_cluster_get(r->server->db, status) != COFFER_OK) {
        free(status);
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    }
    encoded response;
    encode_cluster(&response, status);
    free(status);
    return http_send(r, &response);
}

/* Why an instance that is not ready is not, as its code and a sentence. */
static int not_ready(const coffer_cluster_status *status, const char **detail)
{
    switch (status->role) {
    case COFFER_ROLE_FOLLOWER:
        *detail = "a follower behind the log by more than the bound: catching up";
        return COFFER_SEQ_NOT_APPLIED;
    case COFFER_ROLE_CANDIDATE:
        *detail = "no leader is known: an election is under way";
        return COFFER_NO_LEADER;
    default:
        *detail = "it cannot append to its log; restart it";
        return COFFER_STORAGE_FAILED;
    }
}

enum MHD_Result handle_ready(request *r)
{
    coffer_cluster_status *status = malloc(sizeof *status);
    if (!status || coffer_cluster_get(r->server->db, status) != COFFER_OK) {
        free(status);
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    }
    const char *role = coffer_role_name(status->role) ? coffer_role_name(status->role) : "unknown";
    const char *detail = 0;
    int code = COFFER_OK;
    if (atomic_load(&r->server->draining)) {
        code = COFFER_SHUTTING_DOWN;
        detail = "the server is stopping";
    } else if (coffer_health(r->server->db) == COFFER_STORAGE_FAILED) {
        code = COFFER_STORAGE_FAILED;
        detail = "a write or sync failed; restart";
    } else if (!status->ready) {
        code = not_ready(status, &detail);
    }
    free(status);
    encoded response;
    encode_readiness(&response, code, role, detail);
    return http_send(r, &response);
}
