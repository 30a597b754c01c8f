/*
 * routes.c — see routes.h. Adding an endpoint is one line here and its handlers in
 * handlers.c; routing, 405 answers and the metrics follow.
 */
#include "server/routes.h"

#include <stdlib.h>
#include <string.h>

#include "server/cluster_http.h"
#include "server/feed_http.h"
#include "server/handlers.h"

const route_spec routes[ROUTE_COUNT] = {
    [ROUTE_UNKNOWN] = {0, 0, false, "", "unknown", 0, 0},
    [ROUTE_ACCOUNTS] = {"/v1/accounts", 0, false, "POST", "create_accounts", handle_write,
                        answer_write},
    [ROUTE_ACCOUNT] = {"/v1/accounts/", 0, true, "GET", "get_account", handle_account,
                       answer_account},
    [ROUTE_HISTORY] = {"/v1/accounts/", "/history", true, "GET", "account_history", handle_history,
                       answer_history},
    [ROUTE_TRANSFERS] = {"/v1/transfers", 0, false, "POST", "create_transfers", handle_write,
                         answer_write},
    [ROUTE_TRANSFER] = {"/v1/transfers/", 0, true, "GET", "get_transfer", handle_transfer,
                        answer_transfer},
    [ROUTE_HOLD_POST] = {"/v1/holds/", "/post", true, "POST", "post_hold", handle_write,
                         answer_write},
    [ROUTE_HOLD_VOID] = {"/v1/holds/", "/void", true, "POST", "void_hold", handle_write,
                         answer_write},
    [ROUTE_HOLDS] = {"/v1/holds", 0, false, "GET", "list_holds", handle_holds, answer_holds},
    [ROUTE_EVENTS] = {"/v1/events", 0, false, "GET", "list_events", handle_events, answer_events},
    [ROUTE_VERIFY] = {"/v1/verify", 0, false, "GET", "verify", handle_verify, answer_verify},
    [ROUTE_METRICS] = {"/metrics", 0, false, "GET", "metrics", handle_metrics, answer_metrics},
    [ROUTE_HEALTH] = {"/healthz", 0, false, "GET", "healthz", handle_health, 0},
    [ROUTE_READY] = {"/readyz", 0, false, "GET", "readyz", handle_ready, 0},
    [ROUTE_WEBHOOKS] = {"/v1/webhooks", 0, false, "GET, POST", "webhooks", handle_webhooks, 0},
    [ROUTE_WEBHOOK] = {"/v1/webhooks/", 0, true, "GET, DELETE", "webhook", handle_webhook, 0},
    [ROUTE_WEBHOOK_ENABLE] = {"/v1/webhooks/", "/enable", true, "POST", "enable_webhook",
                              handle_webhook_enable, 0},
    [ROUTE_CLUSTER] = {"/v1/cluster", 0, false, "GET", "cluster", handle_cluster, 0},
};

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

int routes_find(const char *url, char **id)
{
    *id = 0;
    for (int route = 1; route < ROUTE_COUNT; route++)
        if (!routes[route].has_id && !strcmp(url, routes[route].path))
            return route;
    /* Routes with a suffix first: "/v1/accounts/a/history" is a history, not account "a/..". */
    for (int pass = 0; pass < 2; pass++)
        for (int route = 1; route < ROUTE_COUNT; route++) {
            const route_spec *spec = &routes[route];
            if (spec->has_id && (spec->suffix != 0) == (pass == 0) &&
                (*id = path_part(url, spec->path, spec->suffix)))
                return route;
        }
    return ROUTE_UNKNOWN;
}

const char *routes_name(int route)
{
    return route > 0 && route < ROUTE_COUNT ? routes[route].name : "unknown";
}

const char *routes_methods(int route)
{
    return route > 0 && route < ROUTE_COUNT ? routes[route].method : "";
}

/* Whether the route's list of methods ("GET, POST") holds `method`. */
static bool listed(int route, const char *method)
{
    size_t length = strlen(method);
    for (const char *at = routes_methods(route); length && (at = strstr(at, method)); at += length)
        if ((at == routes_methods(route) || at[-1] == ' ') && (at[length] == ',' || !at[length]))
            return true;
    return false;
}

bool routes_allows(int route, const char *method)
{
    return listed(route, method) || (!strcmp(method, "HEAD") && listed(route, "GET"));
}

bool routes_take_body(int route)
{
    return listed(route, "POST");
}
