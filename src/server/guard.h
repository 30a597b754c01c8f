/*
 * guard.h — who may ask what of `coffer serve`, checked before a request reaches the engine:
 * HTTP framing libmicrohttpd lets through (smuggling), browsers (Origin, Host), bearer tokens
 * and their scopes and account prefixes, and the bound on request body bytes in flight.
 */
#ifndef COFFER_SERVER_GUARD_H
#define COFFER_SERVER_GUARD_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "coffer.h"
#include "server/tokens.h"

typedef struct request request; /* http.h */

/* The tokens in force, swapped whole on SIGHUP while requests hold the table they started
 * with (tokens_retain/release). */
typedef struct guard {
    pthread_mutex_t lock; /* guards `table` between a load and its retain */
    tokens *table;        /* NULL: no --tokens, no authentication */
    const char *path;
    atomic_size_t body_bytes; /* request body bytes held by all connections */
} guard;

/* Loads --tokens (when `path` is not NULL). False with the reason in `error`. */
bool guard_open(guard *g, const char *path, char *error, size_t error_size);
/* Reads the tokens file again; a file that does not parse keeps the old table (logged). */
void guard_reload(guard *g);
void guard_close(guard *g);

/* The checks of a request whose headers have arrived (its first callback): framing, Host,
 * Origin, the token and its scope, and the account a path or query names. COFFER_OK, or the
 * code to answer with (its field and detail in *field and *detail). Takes a reference to the
 * tokens table for the request's lifetime (released by guard_request_done). */
int guard_check_request(request *r, const char *version, const char **field, const char **detail);
void guard_request_done(request *r);
/* A decoded write: every account an event names within the token's prefixes. */
int guard_check_events(request *r, const char **detail);
/* A transfer read: allowed when its from or to is within the token's prefixes. */
bool guard_allows_transfer(request *r, const coffer_transfer *transfer);

/* libmicrohttpd's unescaper for paths and query values, except that "%00" stays as is: a NUL
 * would cut an id short ("a%00b" read as "a"); guard_check_request refuses it instead. */
size_t guard_unescape(void *context, struct MHD_Connection *connection, char *text);

/* Counts `size` more body bytes in flight; false (nothing counted) past the bound. */
bool guard_body_reserve(guard *g, size_t size, size_t bound);
void guard_body_release(guard *g, size_t size);

#endif
