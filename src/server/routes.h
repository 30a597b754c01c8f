/*
 * routes.h — the one table of the HTTP API's endpoints: path, method, the name metrics and
 * logs use, and the handlers that start a request and answer it once the engine has. Routing
 * (routes_find), the Allow header and the metrics all read it.
 */
#ifndef COFFER_SERVER_ROUTES_H
#define COFFER_SERVER_ROUTES_H

#include <microhttpd.h>
#include <stdbool.h>

enum route {
    ROUTE_UNKNOWN,
    ROUTE_ACCOUNTS,       /* POST /v1/accounts */
    ROUTE_ACCOUNT,        /* GET /v1/accounts/{id} */
    ROUTE_HISTORY,        /* GET /v1/accounts/{id}/history */
    ROUTE_TRANSFERS,      /* POST /v1/transfers */
    ROUTE_TRANSFER,       /* GET /v1/transfers/{id} */
    ROUTE_HOLD_POST,      /* POST /v1/holds/{id}/post */
    ROUTE_HOLD_VOID,      /* POST /v1/holds/{id}/void */
    ROUTE_HOLDS,          /* GET /v1/holds */
    ROUTE_EVENTS,         /* GET /v1/events */
    ROUTE_VERIFY,         /* GET /v1/verify */
    ROUTE_METRICS,        /* GET /metrics */
    ROUTE_HEALTH,         /* GET /healthz */
    ROUTE_READY,          /* GET /readyz */
    ROUTE_WEBHOOKS,       /* GET, POST /v1/webhooks */
    ROUTE_WEBHOOK,        /* GET, DELETE /v1/webhooks/{id} */
    ROUTE_WEBHOOK_ENABLE, /* POST /v1/webhooks/{id}/enable */
    ROUTE_CLUSTER,        /* GET /v1/cluster */
    ROUTE_COUNT
};

typedef struct request request; /* http.h */
typedef enum MHD_Result (*route_handler)(request *r);

typedef struct route_spec {
    const char *path;   /* the whole path, or what comes before the id */
    const char *suffix; /* what comes after the id; NULL when there is none */
    bool has_id;
    const char *method; /* or several, as "GET, POST"; GET routes also take HEAD */
    const char *name;
    route_handler start;  /* the request is complete (body received): act on it */
    route_handler answer; /* the engine has answered (NULL: start answers at once) */
} route_spec;

extern const route_spec routes[ROUTE_COUNT];

/* The route of a path, and its id (malloc'd; NULL for a route without one). Ids may contain
 * '/', so a route with a suffix is tried before the route of the bare id. */
int routes_find(const char *url, char **id);
/* The route's name ("unknown" outside the table). */
const char *routes_name(int route);
/* The methods a route takes, as an Allow header value. */
const char *routes_methods(int route);
bool routes_allows(int route, const char *method);
/* True for the routes that take a body (POST, or one of their methods is). */
bool routes_take_body(int route);

#endif
