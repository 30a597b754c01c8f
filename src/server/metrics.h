/*
 * metrics.h — routes and the Prometheus text of GET /metrics: requests by route and code,
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

enum route {
    ROUTE_UNKNOWN,
    ROUTE_ACCOUNTS,  /* POST /v1/accounts */
    ROUTE_ACCOUNT,   /* GET /v1/accounts/{id} */
    ROUTE_HISTORY,   /* GET /v1/accounts/{id}/history */
    ROUTE_TRANSFERS, /* POST /v1/transfers */
    ROUTE_TRANSFER,  /* GET /v1/transfers/{id} */
    ROUTE_HOLD_POST, /* POST /v1/holds/{id}/post */
    ROUTE_HOLD_VOID, /* POST /v1/holds/{id}/void */
    ROUTE_HOLDS,     /* GET /v1/holds */
    ROUTE_VERIFY,    /* GET /v1/verify */
    ROUTE_METRICS,   /* GET /metrics */
    ROUTE_HEALTH,    /* GET /healthz */
    ROUTE_READY,     /* GET /readyz */
    ROUTE_COUNT
};

#define METRICS_LATENCY_BUCKETS 12

typedef struct metrics {
    atomic_uint_fast64_t requests[ROUTE_COUNT][COFFER_CODE_LIMIT];
    atomic_uint_fast64_t latency[METRICS_LATENCY_BUCKETS + 1]; /* the last: above all bounds */
    atomic_uint_fast64_t latency_sum_us;
} metrics;

void metrics_init(metrics *m);
const char *metrics_route_name(int route);
/* The methods a route takes, as an Allow header value. */
const char *metrics_route_methods(int route);
bool metrics_route_allows(int route, const char *method);
void metrics_request(metrics *m, int route, int code, unsigned status, uint64_t latency_ns);
/* The exposition text (malloc'd; *length set), or NULL when out of memory. */
char *metrics_render(const metrics *m, coffer *db, const coffer_stats *stats, size_t *length);

#endif
