/*
 * bulk.h — large write bodies off the network threads (bulk.c): a small, bounded pool of
 * workers decodes them, hands them to the engine and encodes the engine's answer while their
 * connection is suspended, so a thread that received a 4 MiB batch keeps serving its other
 * connections' small requests meanwhile.
 */
#ifndef COFFER_SERVER_BULK_H
#define COFFER_SERVER_BULK_H

#include <stdbool.h>
#include <stddef.h>

#include "server/encode.h"

/* Bodies of at least this many bytes go to the pool (about 200 transfers): below it the
 * decoding and the answer cost less than the two hand-overs between threads. */
#define BULK_BODY_MIN ((size_t)16 << 10)
/* Workers: decoding is the network threads' heaviest work, and the machine's other cores
 * run the writer and the log thread. */
#define BULK_WORKERS 2
/* The workers' nice value (0 is the others'). */
#define BULK_NICE 5
/* Requests waiting for a worker to decode them; past it, 503 overloaded. Each also holds its
 * body, which the bound of body bytes in flight counts. */
#define BULK_WAITING_MAX 64

typedef struct request request; /* http.h */
typedef struct bulk_pool bulk_pool;

/* On a worker: decodes the request and starts its engine job with r->job (whose on_done the
 * pool has set). False when it was not started: *problem is the answer to send. */
typedef bool (*bulk_start_fn)(request *r, encoded *problem);
/* On a worker: the engine's answer to the request as a response. */
typedef void (*bulk_answer_fn)(request *r, encoded *response);

/* A request's part in the pool, inside its request. */
typedef struct bulk_item {
    request *next; /* in the pool's queue */
    bulk_start_fn start;
    bulk_answer_fn answer;
    bool answered; /* `response` is ready to send (and owned until sent) */
    encoded response;
} bulk_item;

/* Starts the workers; NULL when they cannot be started. */
bulk_pool *bulk_open(void);
/* Stops the workers. Every request handed to the pool must have been answered (the server
 * drains before closing). */
void bulk_close(bulk_pool *pool);

/* True when the request's body is to be handled by the pool. */
bool bulk_takes(const request *r);
/*
 * Hands a complete request to the pool (on its network thread, from the route's start
 * handler): suspends its connection and queues it. When the connection resumes, the route's
 * answer handler sends r->bulk.response (http_send). False, with nothing done, when
 * BULK_WAITING_MAX requests already wait: answer 503 overloaded.
 */
bool bulk_submit(bulk_pool *pool, request *r, bulk_start_fn start, bulk_answer_fn answer);

#endif
