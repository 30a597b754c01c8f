/*
 * framing.h — the bytes of a plain-HTTP connection held to the letter of HTTP/1.1's message
 * framing (RFC 9112) as they are read, before libmicrohttpd parses them: request lines and
 * header lines ended by CRLF with nothing folded and no control bytes, one Content-Length of
 * digits or one Transfer-Encoding "chunked" (never both), strict chunk-size lines and trailers,
 * and the bounds on the target and the head. libmicrohttpd 0.9.75 is lenient in places no
 * option reaches (a bare LF in a chunk-size line, "Content-Length: -1" answered twice, its own
 * errors in HTML); a scanner in front of it decides where each request ends, so that both agree
 * or the connection is refused.
 *
 * The scanner is a pure state machine over a byte stream, fed in pieces of any size; it keeps
 * no bytes, only counts and the few header values framing depends on.
 */
#ifndef COFFER_SERVER_FRAMING_H
#define COFFER_SERVER_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Header lines (or trailer lines) one request may have: past them 431 headers_too_large, well
 * before libmicrohttpd's memory for the connection, where it keeps a record per line, runs out. */
#define FRAMING_FIELDS_MAX 256
/* A chunk-size line (size and extensions) longer than this is refused. */
#define FRAMING_CHUNK_LINE_MAX 1024

typedef struct framing {
    uint8_t state, after_line; /* where the scanner is; where a CRLF in progress leads */
    bool size_ended;           /* white space after a chunk's size: only ';' may follow */
    uint8_t version_length;
    char version[8];      /* "HTTP/1.x" as read */
    char name[20];        /* a field name's first bytes, lower-cased */
    uint8_t name_length;  /* up to sizeof name + 1 (longer names are none of ours) */
    char value[24];       /* a Content-Length's or Transfer-Encoding's value, trimmed */
    uint8_t value_length; /* up to sizeof value + 1 (too long) */
    bool keep_value;      /* a value framing depends on (Content-Length, Transfer-Encoding) */
    bool value_started;   /* past the white space after the colon */
    uint8_t value_spaces; /* white space read but not yet known to be inside the value */
    bool in_trailer;      /* field lines after the last chunk */
    uint8_t hosts, lengths, encodings;
    uint16_t fields; /* header (or trailer) lines so far */
    bool chunked;
    uint64_t content_length; /* the request's Content-Length */
    uint64_t remaining;      /* body or chunk bytes still to pass */
    uint32_t head_bytes;     /* of the current head or trailer section */
    uint32_t target_bytes;
    uint32_t line_bytes; /* of a chunk-size line */
    uint64_t requests;   /* requests whose last byte has passed */
} framing;

/* What a scan found wrong. */
typedef struct framing_refusal {
    int code;           /* COFFER_INVALID_ARGUMENT, COFFER_URI_TOO_LONG, COFFER_HEADERS_TOO_LARGE */
    const char *detail; /* static */
    /* Where, in the piece just scanned, the request holding the problem began: the bytes before
     * it are whole requests (and parts of earlier ones) that may still be passed on. 0 when it
     * began in an earlier piece. After a scan that refused nothing: where the last request that
     * ended in the piece ended (0 when none did). */
    size_t request_start;
} framing_refusal;

void framing_init(framing *f);

/* Scans the next `length` bytes of the stream. True when they hold nothing wrong; false with
 * *refusal filled (its request_start is filled either way), after which the connection is refused
 * and the scanner is not to be fed again. */
bool framing_scan(framing *f, const uint8_t *bytes, size_t length, framing_refusal *refusal);

#endif
