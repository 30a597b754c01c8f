/*
 * head.c — see head.h. libmicrohttpd 0.9.75 takes a bare LF as a line end, joins a line that
 * starts with SP or HT to the header before it (to its name), and keeps a bare CR inside a
 * line, with no option to refuse any of them. A proxy that reads such a head differently lets
 * a header through that one side sees and the other does not (request smuggling).
 *
 * It parses the head in place, in one buffer that only grows forward: each line end becomes
 * NUL bytes (two for CRLF, one for a bare LF), a header's colon becomes a NUL, and the method,
 * version, names and values it hands out point into that buffer; the head's length is
 * MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE. So every byte of the head can be accounted for from
 * those pointers: the request line, each header line exactly where the line before it ended,
 * then the empty line, ending exactly at the head's length. A bare LF leaves one NUL where
 * CRLF leaves two, a folded line sits where the next header's name should be (and moves the
 * name it joins out of the buffer), a NUL inside a line cuts a value short of where the next
 * line begins: each of them breaks the count and is refused. A bare CR stays in the value or
 * name it is in. The one sequence the buffer cannot tell from CRLF is a NUL byte followed by
 * a bare LF (both leave two NULs); it passes.
 *
 * A libmicrohttpd that parses otherwise (copies names or values out of the buffer) breaks the
 * count of every request, so it would refuse all of them, visibly, rather than let one through.
 */
#include "server/head.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "coffer.h"

static const char line_end_problem[] =
    "a line of the head ends with a bare LF or holds a NUL: every line must end with CRLF";

/* RFC 9110 5.6.2: a token's characters. */
static bool is_token(const char *text, size_t length)
{
    static const char symbols[] = "!#$%&'*+-.^_`|~";
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        bool alphanumeric =
            (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alphanumeric && (c == 0 || !strchr(symbols, c)))
            return false;
    }
    return length > 0;
}

/* A control byte other than HT (RFC 5234 CTL): a bare CR above all, which another parser may
 * take for a line end. */
static bool is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

void head_target_seen(head_target *target, const char *uri)
{
    target->length = uri ? strlen(uri) : 0;
    target->problem = target->length ? NULL : "the request line has no target";
    for (size_t i = 0; i < target->length && !target->problem; i++)
        if ((unsigned char)uri[i] <= ' ' || uri[i] == 0x7f)
            target->problem = "a control character or a space in the request target";
}

/* The head as libmicrohttpd left it, [start, end), and where the next line must begin. */
typedef struct head_walk {
    uintptr_t start, end, at;
    const char *problem;
} head_walk;

static char byte_at(uintptr_t address)
{
    return *(const char *)address;
}

/* The line whose text ends at w->at (a NUL, by construction) must end with CRLF, now two NULs;
 * moves on to the next line. */
static bool line_ended(head_walk *w)
{
    if (w->at + 2 > w->end || byte_at(w->at) != 0 || byte_at(w->at + 1) != 0) {
        w->problem = line_end_problem;
        return false;
    }
    w->at += 2;
    return true;
}

/* METHOD SP TARGET SP VERSION CRLF. libmicrohttpd skips extra spaces after the method and
 * before the version: either puts the version elsewhere than single spaces would. */
static bool request_line_ended(head_walk *w, const head_target *target, const char *method,
                               const char *version)
{
    size_t method_length = strlen(method);
    if (!is_token(method, method_length)) {
        w->problem = "the method is not a token";
        return false;
    }
    uintptr_t version_at = w->start + method_length + 1 + target->length + 1;
    if ((uintptr_t)version != version_at || version_at > w->end) {
        w->problem = "the request line is not METHOD SP TARGET SP VERSION";
        return false;
    }
    w->at = version_at + strlen(version);
    return line_ended(w);
}

/* MHD_get_connection_values' iterator over the headers, in the order they came. */
static enum MHD_Result header_line_ended(void *context, enum MHD_ValueKind kind, const char *name,
                                         const char *value)
{
    (void)kind;
    head_walk *w = context;
    if ((uintptr_t)name != w->at) {
        w->problem = "a folded header line (obs-fold): a line must not start with SP or HT";
        return MHD_NO;
    }
    size_t name_length = strlen(name);
    if (!is_token(name, name_length)) {
        w->problem = "a header name that is not a token (white space before the colon?)";
        return MHD_NO;
    }
    /* Between the colon and the value: optional white space only. */
    uintptr_t value_at = (uintptr_t)value, after_colon = w->at + name_length + 1;
    bool placed = value && value_at >= after_colon && value_at <= w->end;
    for (uintptr_t at = after_colon; placed && at < value_at; at++)
        placed = byte_at(at) == ' ' || byte_at(at) == '\t';
    if (!placed) {
        w->problem = line_end_problem;
        return MHD_NO;
    }
    size_t value_length = strlen(value);
    for (size_t i = 0; i < value_length; i++)
        if (is_control((unsigned char)value[i])) {
            w->problem = "a control character (such as a bare CR) in a header value";
            return MHD_NO;
        }
    w->at = value_at + value_length;
    return line_ended(w) ? MHD_YES : MHD_NO;
}

int head_check(struct MHD_Connection *connection, const head_target *target, const char *method,
               const char *version, const char **detail)
{
    *detail = NULL;
    if (target->length > HEAD_TARGET_MAX) {
        *detail = "the request target (path and query) is over 8192 bytes";
        return COFFER_URI_TOO_LONG;
    }
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (info && info->header_size > HEAD_BYTES_MAX) {
        *detail = "the request line and headers are over 32 KiB";
        return COFFER_HEADERS_TOO_LARGE;
    }
    if (!info || target->problem) {
        *detail = info ? target->problem : "the request's head could not be checked";
        return COFFER_INVALID_ARGUMENT;
    }
    head_walk w = {.start = (uintptr_t)method, .end = (uintptr_t)method + info->header_size};
    if (request_line_ended(&w, target, method, version))
        MHD_get_connection_values(connection, MHD_HEADER_KIND, header_line_ended, &w);
    /* The empty line, and the head ends with it. */
    if (!w.problem && line_ended(&w) && w.at != w.end)
        w.problem = line_end_problem;
    *detail = w.problem;
    return w.problem ? COFFER_INVALID_ARGUMENT : COFFER_OK;
}
