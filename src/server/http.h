/*
 * http.h — the transport (http.c) as the route handlers see it: the server, the request being
 * answered with everything it keeps until completion, its headers and query, the suspension
 * around an engine job, and sending an encoded response.
 */
#ifndef COFFER_SERVER_HTTP_H
#define COFFER_SERVER_HTTP_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "coffer.h"
#include "server/bulk.h"
#include "server/cluster_http.h"
#include "server/decode.h"
#include "server/encode.h"
#include "server/feed_http.h"
#include "server/guard.h"
#include "server/head.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/webhooks.h"

typedef struct server {
    coffer *db;
    struct MHD_Daemon *daemon;
    const server_options *options;
    metrics metrics;
    atomic_uint_fast64_t request_counter;
    atomic_int active;    /* requests between their first callback and completion */
    atomic_int suspended; /* of those, requests handed to the engine and not yet completed */
    atomic_bool draining;
    guard guard;
    webhooks *webhooks;
    struct deadlines *deadlines; /* the receive deadlines' watcher */
    feed_hub feed;
    bulk_pool *bulk; /* large write bodies (bulk.h) */
    char id_prefix[16];
} server;

enum request_state { STATE_NEW, STATE_RECEIVING, STATE_WAITING, STATE_ANSWERED };

struct request {
    server *server;
    struct MHD_Connection *connection;
    enum request_state state;
    int route;
    const char *method; /* MHD's, valid until completion */
    const char *url;    /* the path as MHD unescaped it, valid until completion */
    head_target target; /* the request target as sent */
    char request_id[72];
    char *body;
    size_t body_length;
    size_t body_capacity; /* allocated for body */
    bool body_too_large;
    bool body_overloaded;   /* past the bound of body bytes in flight: 503 */
    bool close_connection;  /* a framing problem: close after answering */
    tokens *tokens;         /* the table in force when the request came (NULL: none) */
    const token *token;     /* its token, once authenticated */
    uint64_t upload_length; /* bytes of body received, kept or not */
    uint64_t started_ns;
    bool engine_used; /* counted in server.suspended until completion */
    char *path_id;    /* the path's id, for the routes that have one */
    char *location;   /* a redirect's Location header (malloc'd; cluster_http.c) */
    /* A read that waits until this instance has applied ?min_seq (cluster_http.c). */
    uint64_t min_seq;
    bool seq_waiting; /* suspended for it, or resumed and not yet started */
    feed_waiter seq_waiter;
    /* The change feed (feed_http.c). */
    struct feed_poll *feed_poll; /* a page or long-poll of GET /v1/events */
    bool streaming;              /* answered with an event stream */
    /* Writes. */
    decode_batch batch;
    coffer_result *results;
    /* The token's name, logged with the batch: a copy, so it lives until the engine answers
     * whatever the token table does meanwhile. */
    char submitted_by[COFFER_SUBMITTER_MAX + 1];
    const char *idempotency_key; /* MHD's header value, looked up on the network thread */
    bulk_item bulk;              /* a large body's trip through the workers */
    /* Reads. */
    int at; /* the account read: now, at a seq or at a time */
    uint64_t at_value;
    size_t limit; /* of a history or holds page, and how much of it was filled */
    size_t count;
    coffer_history_entry *history;
    coffer_transfer *holds;
    union { /* a request reads at most one of these */
        coffer_account account;
        coffer_transfer transfer;
        coffer_verify_report verify;
        coffer_stats stats;
    };
    coffer_job job; /* the engine round trip; its status is the answer's */
};

/* A request header's value, or NULL. */
const char *http_header(request *r, const char *name);
/* A query parameter's value, or NULL. */
const char *http_query(request *r, const char *name);

/* Suspends the connection before its engine job starts (the answer may come before the
 * _async call returns); the route's answer handler runs after resume. Then give what the
 * _async call returned to http_started: a job that was not queued is answered at once. */
void http_suspend(request *r);
enum MHD_Result http_started(request *r, int code);

/* Monotonic nanoseconds. */
uint64_t http_now_ns(void);
/* Counts an answer in the metrics (and logs it with --log-requests). */
void http_count(request *r, unsigned status, int code);
/* The headers of every response: X-Request-Id and Coffer-Seq. */
void http_add_headers(request *r, struct MHD_Response *reply);
/* Sends a response (its body is taken) and counts it. */
enum MHD_Result http_send(request *r, encoded *response);
/* Sends encode_problem(code, field, detail). */
enum MHD_Result http_problem(request *r, int code, const char *field, const char *detail);

#endif
