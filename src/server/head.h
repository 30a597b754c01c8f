/*
 * head.h — a request's head held to the letter of HTTP/1.1 (RFC 9112), where libmicrohttpd
 * 0.9.75 is lenient: every line ended by CRLF, no folded lines, no control bytes inside a
 * line, one space between the parts of the request line, no white space before a colon, and
 * bounds on the target and on the whole head that are answered in problem+json.
 */
#ifndef COFFER_SERVER_HEAD_H
#define COFFER_SERVER_HEAD_H

#include <microhttpd.h>
#include <stddef.h>

/* A request target (path and query) longer than this is answered 414 uri_too_long. */
#define HEAD_TARGET_MAX 8192
/* A head (request line and header lines) longer than this is answered 431 headers_too_large. */
#define HEAD_BYTES_MAX (32 * 1024)
/* libmicrohttpd's memory per connection (MHD_OPTION_CONNECTION_MEMORY_LIMIT), which holds the
 * head while it is parsed: far above the bounds, so that a head over them still arrives whole
 * and is answered here. Past it libmicrohttpd answers on its own (HTML 414 or 431). */
#define HEAD_CONNECTION_MEMORY (128 * 1024)

/* The request target as the client sent it, seen before libmicrohttpd unescapes it and cuts
 * the query off. */
typedef struct head_target {
    size_t length;
    const char *problem; /* why it is refused, or NULL */
} head_target;

/* Records `uri` (MHD_OPTION_URI_LOG_CALLBACK's argument; NULL when the line had none). */
void head_target_seen(head_target *target, const char *uri);

/* Checks the head of the request on `connection` whose first callback this is, from the bytes
 * libmicrohttpd parsed it in (`method` and `version` are its pointers). COFFER_OK, or
 * COFFER_URI_TOO_LONG, COFFER_HEADERS_TOO_LARGE or COFFER_INVALID_ARGUMENT with the reason in
 * *detail; the connection is to be closed after any of those. */
int head_check(struct MHD_Connection *connection, const head_target *target, const char *method,
               const char *version, const char **detail);

#endif
