/*
 * guard.c — see guard.h. The checks run in the request's first callback, before any body byte
 * is kept, except those that need the decoded body (a batch's accounts) or the engine's answer
 * (a transfer's accounts).
 */
#include "server/guard.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "server/head.h"
#include "server/http.h"
#include "server/routes.h"

bool guard_open(guard *g, const char *path, char *error, size_t error_size)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    atomic_init(&g->body_bytes, 0);
    g->path = path;
    if (path && !(g->table = tokens_load(path, error, error_size)))
        return false;
    return true;
}

void guard_reload(guard *g)
{
    if (!g->path) {
        fprintf(stderr, "coffer: SIGHUP: no --tokens file to read again\n");
        return;
    }
    char error[512];
    tokens *table = tokens_load(g->path, error, sizeof error);
    if (!table) {
        fprintf(stderr, "coffer: SIGHUP: keeping the tokens in force: %s\n", error);
        return;
    }
    pthread_mutex_lock(&g->lock);
    tokens *old = g->table;
    g->table = table;
    pthread_mutex_unlock(&g->lock);
    tokens_release(old); /* freed once the last request that holds it completes */
    fprintf(stderr, "coffer: SIGHUP: %zu tokens in force from %s\n", tokens_count(table), g->path);
}

void guard_close(guard *g)
{
    tokens_release(g->table);
    g->table = NULL;
    pthread_mutex_destroy(&g->lock);
}

static tokens *guard_tokens(guard *g)
{
    pthread_mutex_lock(&g->lock);
    tokens *table = tokens_retain(g->table);
    pthread_mutex_unlock(&g->lock);
    return table;
}

/* ---- framing ------------------------------------------------------------------------------- */

typedef struct header_counts {
    unsigned content_length, transfer_encoding, host;
    bool transfer_encoding_not_chunked;
} header_counts;

static enum MHD_Result count_header(void *context, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    header_counts *counts = context;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        counts->content_length++;
    if (!strcasecmp(key, MHD_HTTP_HEADER_HOST))
        counts->host++;
    if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        counts->transfer_encoding++;
        counts->transfer_encoding_not_chunked |= !value || strcmp(value, "chunked") != 0;
    }
    return MHD_YES;
}

/* A request whose body length two parsers could read differently (RFC 9112 6.1, 6.3): the
 * bytes after it could run as a second, smuggled request. Answered 400, connection closed. */
static const char *framing_problem(request *r, const char *version)
{
    header_counts counts = {0};
    MHD_get_connection_values(r->connection, MHD_HEADER_KIND, count_header, &counts);
    if (counts.transfer_encoding && counts.content_length)
        return "Transfer-Encoding and Content-Length together";
    if (counts.content_length > 1)
        return "more than one Content-Length";
    if (counts.transfer_encoding > 1 || counts.transfer_encoding_not_chunked)
        return "a Transfer-Encoding other than one 'chunked'";
    if (counts.host > 1)
        return "more than one Host";
    /* Every HTTP/1.x but 1.0 requires Host (MHD takes 1.2 and up as 1.1). */
    if (!counts.host && strcmp(version, MHD_HTTP_VERSION_1_0) != 0)
        return "HTTP/1.1 without Host";
    return NULL;
}

/* ---- browsers ------------------------------------------------------------------------------ */

/* True when `value` is one of the comma-separated `list`. */
static bool listed(const char *list, const char *value)
{
    size_t length = strlen(value);
    for (const char *at = list; at && *at;) {
        const char *comma = strchr(at, ',');
        size_t item = comma ? (size_t)(comma - at) : strlen(at);
        if (item == length && !strncasecmp(at, value, length))
            return true;
        at = comma ? comma + 1 : NULL;
    }
    return false;
}

/* `host` is `name` or `name:port`, with the server's port. */
static bool host_is(const char *host, const char *name, unsigned port)
{
    size_t length = strlen(name);
    if (strncasecmp(host, name, length))
        return false;
    char port_text[8];
    snprintf(port_text, sizeof port_text, ":%u", port);
    return host[length] == 0 || !strcmp(host + length, port_text);
}

/* Without tokens anyone who reaches the port may write, so a browser must not be led there
 * by a foreign name (DNS rebinding): the Host must be ours. */
static bool host_allowed(const server_options *options, const char *host)
{
    if (!host)
        return true; /* HTTP/1.0 without Host; HTTP/1.1 without one was refused above */
    if (host_is(host, options->host, options->port) || host_is(host, "localhost", options->port) ||
        host_is(host, "127.0.0.1", options->port))
        return true;
    char name[256];
    const char *colon = strrchr(host, ':');
    size_t length = colon ? (size_t)(colon - host) : strlen(host);
    if (length >= sizeof name)
        return false;
    memcpy(name, host, length);
    name[length] = 0;
    return listed(options->allow_hosts, name) && host_is(host, name, options->port);
}

/* ---- tokens -------------------------------------------------------------------------------- */

/* The scope a route needs; 0 for the open probes. */
static int route_scope(const server_options *options, int route)
{
    switch (route) {
    case ROUTE_HEALTH:
    case ROUTE_READY:
        return 0;
    case ROUTE_METRICS:
        return options->metrics_open ? 0 : TOKEN_SCOPE_ADMIN;
    case ROUTE_VERIFY:
    case ROUTE_WEBHOOKS:
    case ROUTE_WEBHOOK:
    case ROUTE_WEBHOOK_ENABLE:
        return TOKEN_SCOPE_ADMIN;
    default:
        return routes_take_body(route) ? TOKEN_SCOPE_WRITE : TOKEN_SCOPE_READ;
    }
}

/* The account a path or query names, checked against the token's prefixes. */
static const char *account_problem(request *r)
{
    const token *t = r->token;
    if (t->prefix_count == 0)
        return NULL;
    switch (r->route) {
    case ROUTE_ACCOUNT:
    case ROUTE_HISTORY:
        return token_allows_account(t, r->path_id) ? NULL
                                                   : "the account is outside the token's prefixes";
    case ROUTE_HOLDS:
    case ROUTE_EVENTS: {
        const char *account = http_query(r, "account");
        if (account && token_allows_account(t, account))
            return NULL;
        return r->route == ROUTE_HOLDS
                   ? "a token limited to account prefixes must list the holds of one of its "
                     "accounts (?account=)"
                   : "a token limited to account prefixes must read the changes of one of its "
                     "accounts (?account=)";
    }
    case ROUTE_HOLD_POST:
    case ROUTE_HOLD_VOID:
        return "a token limited to account prefixes cannot post or void a hold (its accounts "
               "are only known once applied); use a token for every account";
    default:
        return NULL;
    }
}

static int authorize(request *r, const char **detail)
{
    const server_options *options = r->server->options;
    int scope = route_scope(options, r->route);
    if (!r->tokens || scope == 0 || r->route == ROUTE_UNKNOWN)
        return COFFER_OK;
    r->token = tokens_authenticate(r->tokens, http_header(r, MHD_HTTP_HEADER_AUTHORIZATION));
    if (!r->token) {
        *detail = "send Authorization: Bearer TOKEN with a token of the server's tokens file";
        return COFFER_UNAUTHORIZED;
    }
    if (!token_allows_scope(r->token, scope)) {
        *detail = scope == TOKEN_SCOPE_ADMIN ? "this needs a token of scope admin"
                                             : "this needs a token of scope write";
        return COFFER_FORBIDDEN;
    }
    return (*detail = account_problem(r)) ? COFFER_FORBIDDEN : COFFER_OK;
}

int guard_check_request(request *r, const char *version, const char **field, const char **detail)
{
    const server_options *options = r->server->options;
    *field = NULL;
    /* What follows a head that breaks the rules cannot be trusted: closed after the answer. */
    int refused = head_check(r->connection, &r->target, r->method, version, detail);
    if (refused == COFFER_OK && (*detail = framing_problem(r, version)))
        refused = COFFER_INVALID_ARGUMENT;
    if (refused != COFFER_OK) {
        r->close_connection = true;
        return refused;
    }
    if (r->path_id && strstr(r->path_id, "%00")) { /* the unescaper keeps %00 as is */
        *field = "/id";
        *detail = "a NUL (%00) in the path";
        return COFFER_INVALID_FIELD;
    }
    const char *origin = http_header(r, "Origin");
    if (origin && !listed(options->allow_origins, origin)) {
        *detail = "the Origin is not allowed (--allow-origin)";
        return COFFER_FORBIDDEN;
    }
    r->tokens = guard_tokens(&r->server->guard);
    bool probe = r->route == ROUTE_HEALTH || r->route == ROUTE_READY; /* tell nothing */
    if (!r->tokens && !probe && !host_allowed(options, http_header(r, MHD_HTTP_HEADER_HOST))) {
        *detail = "the Host is not this server's address (--allow-host)";
        return COFFER_FORBIDDEN;
    }
    return authorize(r, detail);
}

void guard_request_done(request *r)
{
    tokens_release(r->tokens);
    r->tokens = NULL;
    r->token = NULL;
}

int guard_check_events(request *r, const char **detail)
{
    const token *t = r->token;
    *detail = NULL;
    if (!t || t->prefix_count == 0)
        return COFFER_OK;
    for (size_t i = 0; i < r->batch.count; i++) {
        const coffer_event *event = &r->batch.events[i];
        const char *accounts[] = {event->op == COFFER_OP_CREATE_ACCOUNT ? event->id : NULL,
                                  event->from, event->to};
        if (event->op == COFFER_OP_POST || event->op == COFFER_OP_VOID) {
            *detail = "a token limited to account prefixes cannot post or void a hold; nothing "
                      "was applied";
            return COFFER_FORBIDDEN;
        }
        for (size_t a = 0; a < sizeof accounts / sizeof *accounts; a++)
            if (accounts[a] && !token_allows_account(t, accounts[a])) {
                *detail = "an account is outside the token's prefixes; nothing was applied";
                return COFFER_FORBIDDEN;
            }
    }
    return COFFER_OK;
}

bool guard_allows_transfer(request *r, const coffer_transfer *transfer)
{
    const token *t = r->token;
    return !t || t->prefix_count == 0 || token_allows_account(t, transfer->from) ||
           token_allows_account(t, transfer->to);
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

size_t guard_unescape(void *context, struct MHD_Connection *connection, char *text)
{
    (void)context;
    (void)connection;
    char *out = text;
    for (const char *in = text; *in;) {
        int high = in[0] == '%' ? hex_value(in[1]) : -1, low = high >= 0 ? hex_value(in[2]) : -1;
        if (low >= 0 && (high | low) != 0) {
            *out++ = (char)(high * 16 + low);
            in += 3;
        } else {
            *out++ = *in++; /* not an escape, or %00: kept as is, for the check to refuse */
        }
    }
    *out = 0;
    return (size_t)(out - text);
}

bool guard_body_reserve(guard *g, size_t size, size_t bound)
{
    size_t before = atomic_fetch_add(&g->body_bytes, size);
    if (before + size <= bound)
        return true;
    atomic_fetch_sub(&g->body_bytes, size);
    return false;
}

void guard_body_release(guard *g, size_t size)
{
    atomic_fetch_sub(&g->body_bytes, size);
}
