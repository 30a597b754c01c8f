/*
 * metrics.h — the Prometheus text of GET /metrics: requests by route and code,
 * request latency, the engine's own figures (batch sizes, fsync latency, queue depth,
 * holds, results by code) and each webhook's deliveries, failures and lag.
 */
#ifndef COFFER_SERVER_METRICS_H
#define COFFER_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "server/routes.h"
#include "server/webhooks.h"

#define METRICS_LATENCY_BUCKETS 12

typedef struct metrics {
    atomic_uint_fast64_t requests[ROUTE_COUNT][COFFER_CODE_LIMIT];
    atomic_uint_fast64_t latency[METRICS_LATENCY_BUCKETS + 1]; /* the last: above all bounds */
    atomic_uint_fast64_t latency_sum_us;
    /* The change feed (feed_http.c). */
    atomic_uint_fast64_t feed_events_read; /* changes answered in pages and streams */
    atomic_int feed_streams;               /* event streams open */
    atomic_size_t feed_waiters;            /* long-polls waiting */
    atomic_uint_fast64_t feed_streams_cut; /* streams ended because their client was too slow */
    atomic_uint_fast64_t deadline_closed;  /* connections shut for a missed receive deadline */
    /* Writes applied whose answer did not reach the client (handlers.c's write_completed). */
    atomic_uint_fast64_t writes_undelivered;
} metrics;

void metrics_init(metrics *m);
void metrics_request(metrics *m, int route, int code, unsigned status, uint64_t latency_ns);
/* The exposition text (malloc'd; *length set), or NULL when out of memory. */
char *metrics_render(const metrics *m, coffer *db, const coffer_stats *stats, webhooks *hooks,
                     size_t *length);

#endif
