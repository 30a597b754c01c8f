/*
 * feed_http.h — GET /v1/events over HTTP: pages of the change feed, long-polls and
 * Server-Sent Event streams. One "feed waiter" thread resumes the suspended requests and
 * streams when the durable seq moves or their deadline comes, so no network thread ever blocks
 * waiting; one "stream filler" thread, at FEED_NICE, reads and encodes the streams' frames, so
 * that a stream's work yields to the writer, and reads the long-polls' pages when the log is in
 * PostgreSQL (a network thread never waits for the database); idle feed readers are pooled by
 * position so sequential paging does not seek.
 */
#ifndef COFFER_SERVER_FEED_HTTP_H
#define COFFER_SERVER_FEED_HTTP_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "coffer.h"

/* Bounds: long-polls waiting at once, streams open at once, idle readers kept, and the
 * longest long-poll wait. Past the first two, 503 overloaded. */
#define FEED_WAITERS_MAX 1024
#define FEED_STREAMS_MAX 256
#define FEED_READERS_IDLE_MAX 16
#define FEED_WAIT_MS_MAX 30000
/* The nice value of the threads that read the feed for consumers (webhook deliveries, the
 * stream filler): on a busy machine they yield to the writer, the log thread and the request
 * threads (nice 0) and take the idle CPU, catching up after a burst. Linux sets it per thread. */
#define FEED_NICE 10

typedef struct request request; /* http.h */
typedef struct server server;   /* http.h */

/* A suspended long-poll or stream, until the waiter thread resumes it. */
typedef struct feed_waiter {
    struct MHD_Connection *connection;
    request *poll;        /* the long-poll's request; NULL for a stream */
    uint64_t after;       /* resumed once the durable seq is above this ... */
    uint64_t deadline_ns; /* ... or at this monotonic time */
} feed_waiter;

typedef struct feed_reader_slot {
    coffer_feed *feed;
    uint64_t next_after; /* where its last read ended: reading on from here needs no seek */
} feed_reader_slot;

typedef struct feed_hub {
    server *server;
    pthread_t thread, filler;
    bool thread_started, filler_started;
    pthread_mutex_t lock;       /* guards everything below */
    pthread_cond_t wake;        /* the waiter thread sleeps on it while nothing waits */
    pthread_cond_t filler_wake; /* the filler thread sleeps on it while no stream is due */
    bool stopping;              /* draining: nothing new waits, everything waiting is resumed */
    bool stopped;               /* the threads end */
    feed_waiter *waiting[FEED_WAITERS_MAX + FEED_STREAMS_MAX];
    size_t waiting_count;
    /* Suspended streams whose buffer the filler thread is to fill, and long-polls whose page
     * it is to read (the log in PostgreSQL), oldest first. Each is in one place at a time:
     * here, in the filler's hands, in `waiting`, or with MHD. */
    feed_waiter *due[FEED_WAITERS_MAX + FEED_STREAMS_MAX];
    size_t due_count;
    size_t polls_waiting;
    feed_reader_slot idle[FEED_READERS_IDLE_MAX]; /* oldest first */
    size_t idle_count;
} feed_hub;

/* Starts the waiter and filler threads; false when it cannot. */
bool feed_hub_start(feed_hub *hub, server *s);
/* Draining: resumes everything that waits; long-polls answer what they have, streams end. */
void feed_hub_drain(feed_hub *hub);
/* After the daemon stopped: ends the threads and closes the idle readers. */
void feed_hub_stop(feed_hub *hub);

/* Suspends a request's connection (waiter->poll) and registers it with the waiter thread,
 * which resumes it (its state STATE_ANSWERED) once the durable seq is above waiter->after or
 * at waiter->deadline_ns: a long-poll, or a read that waits for its min_seq. COFFER_OK, or
 * shutting_down (draining) or overloaded (FEED_WAITERS_MAX wait already) with nothing
 * suspended. */
int feed_hub_wait(feed_hub *hub, feed_waiter *waiter);

/* The route GET /v1/events (routes.c) and its completion (http.c's on_completed). */
enum MHD_Result handle_events(request *r);
enum MHD_Result answer_events(request *r);
void feed_request_done(request *r, enum MHD_RequestTerminationCode reason);

#endif
