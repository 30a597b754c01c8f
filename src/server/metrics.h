/*
 * metrics.h — the Prometheus text of GET /metrics: requests by route and code,
 * request latency, and the engine's own figures (batch sizes, fsync latency, queue depth,
 * holds, results by code).
 */
#ifndef COFFER_SERVER_METRICS_H
#define COFFER_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "server/routes.h"

#define METRICS_LATENCY_BUCKETS 12

typedef struct metrics {
    atomic_uint_fast64_t requests[ROUTE_COUNT][COFFER_CODE_LIMIT];
    atomic_uint_fast64_t latency[METRICS_LATENCY_BUCKETS + 1]; /* the last: above all bounds */
    atomic_uint_fast64_t latency_sum_us;
    atomic_uint_fast64_t deadline_closed; /* connections shut for a missed receive deadline */
} metrics;

void metrics_init(metrics *m);
void metrics_request(metrics *m, int route, int code, unsigned status, uint64_t latency_ns);
/* The exposition text (malloc'd; *length set), or NULL when out of memory. */
char *metrics_render(const metrics *m, coffer *db, const coffer_stats *stats, size_t *length);

#endif
