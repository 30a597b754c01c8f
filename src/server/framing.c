/*
 * framing.c — the framing scanner (framing.h): one state per place in a request, one byte at
 * a time through heads and chunk-size lines, whole stretches at a time through bodies.
 */
#include "server/framing.h"

#include <string.h>
#include <strings.h>

#include "coffer.h"
#include "server/head.h"

enum framing_state {
    AT_REQUEST, /* before a request line (an empty line here is skipped) */
    IN_METHOD,  /* the request line's parts */
    AT_TARGET,
    IN_TARGET,
    IN_VERSION,
    AT_FIELD, /* at the start of a header or trailer line, or the empty line */
    IN_NAME,
    IN_VALUE,
    AT_LF,   /* a CR was read: only LF may follow, then `after_line` */
    IN_BODY, /* Content-Length bytes */
    IN_CHUNK_SIZE,
    IN_CHUNK_EXTENSION,
    IN_CHUNK_DATA,
    AT_CHUNK_END, /* the CR after a chunk's data */
    REFUSED,
};

/* What the LF after a CR ends. */
enum line_end { BLANK_BEFORE_REQUEST, REQUEST_LINE, FIELD_LINE, SECTION, CHUNK_LINE, CHUNK };

static const char bare_lf[] =
    "a line of the head ends with a bare LF or holds a NUL: every line must end with CRLF";
static const char nul_byte[] = "a NUL byte in the head: every line must end with CRLF";
static const char bare_cr[] = "a bare CR (a control character) where only CRLF may end a line";
static const char fields_too_many[] = "more than 256 header lines";
static const char extra_space[] =
    "a space in the request target, or an extra space in the request line: it must be "
    "METHOD SP TARGET SP VERSION";

/* tchar (RFC 9110): DIGIT, ALPHA and !#$%&'*+-.^_`|~, one bit per byte value. */
static const uint64_t token_bytes[4] = {0x03ff6cfa00000000ull, 0x57ffffffc7fffffeull, 0, 0};

static bool is_token_byte(uint8_t byte)
{
    return (token_bytes[byte >> 6] >> (byte & 63)) & 1;
}

static bool is_visible(uint8_t byte)
{
    return byte >= 0x21 && byte != 0x7f; /* VCHAR and obs-text */
}

static int hex_value(uint8_t byte)
{
    if (byte >= '0' && byte <= '9')
        return byte - '0';
    byte |= 0x20;
    return byte >= 'a' && byte <= 'f' ? byte - 'a' + 10 : -1;
}

void framing_init(framing *f)
{
    memset(f, 0, sizeof *f);
    f->state = AT_REQUEST;
}

static bool refuse(framing *f, framing_refusal *refusal, int code, const char *detail)
{
    f->state = REFUSED;
    refusal->code = code;
    refusal->detail = detail;
    return false;
}

/* A line's bad byte: the detail that names what it is. */
static const char *bad_byte(uint8_t byte, const char *otherwise)
{
    if (byte == '\n')
        return bare_lf;
    return byte == 0 ? nul_byte : otherwise;
}

static void start_request(framing *f)
{
    uint64_t requests = f->requests;
    framing_init(f);
    f->requests = requests;
}

static bool name_is(const framing *f, const char *name)
{
    size_t length = strlen(name);
    return f->name_length == length && memcmp(f->name, name, length) == 0;
}

/* A header line has ended: count what framing depends on. NULL, or why it is refused. */
static const char *field_done(framing *f)
{
    if (f->in_trailer)
        return 0;
    bool too_long = f->value_length > sizeof f->value;
    if (name_is(f, "host"))
        f->hosts++;
    else if (name_is(f, "content-length")) {
        f->lengths++;
        if (f->value_spaces) /* legal, but the parser behind this one would take it as malformed */
            return "a Content-Length with white space after its digits";
        if (too_long || f->value_length == 0 || f->value_length > 19)
            return "a Content-Length that is not a number of bytes";
        uint64_t value = 0;
        for (size_t i = 0; i < f->value_length; i++) {
            if (f->value[i] < '0' || f->value[i] > '9')
                return "a Content-Length that is not a number of bytes";
            value = value * 10 + (uint64_t)(f->value[i] - '0');
        }
        f->content_length = value;
    } else if (name_is(f, "transfer-encoding")) {
        f->encodings++;
        if (too_long || f->value_length != 7 || strncasecmp(f->value, "chunked", 7) != 0)
            return "a Transfer-Encoding other than one 'chunked'";
        f->chunked = true;
    }
    return 0;
}

/* The head has ended: where its body ends, or why it is refused. */
static const char *head_done(framing *f)
{
    bool http_1_0 = f->version[7] == '0';
    if (f->hosts > 1)
        return "more than one Host";
    if (!http_1_0 && f->hosts == 0)
        return "HTTP/1.1 without Host";
    if (f->lengths > 1)
        return "more than one Content-Length";
    if (f->encodings && f->lengths)
        return "Transfer-Encoding and Content-Length together";
    if (f->encodings > 1)
        return "a Transfer-Encoding other than one 'chunked'";
    if (f->encodings && http_1_0)
        return "a Transfer-Encoding in an HTTP/1.0 request";
    return 0;
}

static const char *version_problem(const framing *f)
{
    const char *v = f->version;
    if (f->version_length != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' ||
        v[5] > '9' || v[7] < '0' || v[7] > '9')
        return "the request line's version is not HTTP/x.y";
    return v[5] == '1' ? 0 : "only HTTP/1.x is served here";
}

/* After the LF of a CRLF: moves on; NULL, or why the stream is refused. */
static const char *line_done(framing *f, bool *request_done)
{
    switch (f->after_line) {
    case BLANK_BEFORE_REQUEST:
        f->state = AT_REQUEST;
        return 0;
    case REQUEST_LINE:
        f->state = AT_FIELD;
        return version_problem(f);
    case FIELD_LINE:
        f->state = AT_FIELD;
        return field_done(f);
    case SECTION:
        if (f->in_trailer) {
            *request_done = true;
            return 0;
        }
        const char *problem = head_done(f);
        if (problem)
            return problem;
        f->head_bytes = 0;
        if (f->chunked)
            f->state = IN_CHUNK_SIZE;
        else if (f->content_length) {
            f->state = IN_BODY;
            f->remaining = f->content_length;
        } else
            *request_done = true;
        return 0;
    case CHUNK_LINE:
        f->line_bytes = 0;
        f->size_ended = false;
        if (f->remaining == 0) {
            f->in_trailer = true;
            f->fields = 0;
            f->state = AT_FIELD;
        } else
            f->state = IN_CHUNK_DATA;
        return 0;
    default: /* CHUNK */
        f->state = IN_CHUNK_SIZE;
        f->remaining = 0;
        return 0;
    }
}

static void crlf_ahead(framing *f, uint8_t after)
{
    f->state = AT_LF;
    f->after_line = after;
}

static void value_byte(framing *f, uint8_t byte)
{
    if (!f->value_started) {
        f->value_started = true;
        f->value_spaces = 0;
    }
    for (; f->value_spaces; f->value_spaces--) /* white space inside the value is kept */
        if (f->value_length < sizeof f->value)
            f->value[f->value_length++] = ' ';
        else
            f->value_length = sizeof f->value + 1;
    if (f->value_length < sizeof f->value)
        f->value[f->value_length++] = (char)byte;
    else
        f->value_length = sizeof f->value + 1;
}

/* One byte of the request line. NULL, or why it is refused. */
static const char *request_line_byte(framing *f, uint8_t byte)
{
    switch (f->state) {
    case AT_REQUEST:
        if (byte == '\r') {
            crlf_ahead(f, BLANK_BEFORE_REQUEST);
            return 0;
        }
        if (!is_token_byte(byte))
            return byte == ' ' ? extra_space : bad_byte(byte, "the method is not a token");
        f->state = IN_METHOD;
        return 0;
    case IN_METHOD:
        if (byte == ' ')
            f->state = AT_TARGET;
        else if (!is_token_byte(byte))
            return bad_byte(byte, "the method is not a token");
        return 0;
    case AT_TARGET:
    case IN_TARGET:
        if (byte == ' ' && f->state == IN_TARGET) {
            f->state = IN_VERSION;
            return 0;
        }
        if (byte == ' ')
            return extra_space;
        if (!is_visible(byte) || byte >= 0x80)
            return bad_byte(byte, "a control character in the request target, or no version");
        f->state = IN_TARGET;
        f->target_bytes++;
        return 0;
    default: /* IN_VERSION */
        if (byte == '\r') {
            crlf_ahead(f, REQUEST_LINE);
            return 0;
        }
        if (byte == ' ')
            return extra_space;
        if (!is_visible(byte))
            return bad_byte(byte, "a control character in the request line's version");
        if (f->version_length < sizeof f->version)
            f->version[f->version_length] = (char)byte;
        if (f->version_length < 255)
            f->version_length++;
        return 0;
    }
}

/* One byte of a header or trailer line. NULL, or why it is refused. */
static const char *field_byte(framing *f, uint8_t byte)
{
    switch (f->state) {
    case AT_FIELD:
        if (byte == '\r') {
            crlf_ahead(f, SECTION);
            return 0;
        }
        if (byte == ' ' || byte == '\t')
            return "a folded header line (obs-fold): a line must not start with SP or HT";
        if (!is_token_byte(byte))
            return bad_byte(byte, "a header name that is not a token");
        if (++f->fields > FRAMING_FIELDS_MAX)
            return fields_too_many;
        f->state = IN_NAME;
        f->name_length = 0;
        f->value_length = 0;
        f->value_started = false;
        f->value_spaces = 0;
        __attribute__((fallthrough)); /* the byte is the name's first */
    case IN_NAME:
        if (byte == ':') {
            f->state = IN_VALUE;
            f->keep_value =
                !f->in_trailer && (name_is(f, "content-length") || name_is(f, "transfer-encoding"));
            return 0;
        }
        if (!is_token_byte(byte))
            return bad_byte(byte,
                            "a header name that is not a token (white space before the colon?)");
        if (f->name_length < sizeof f->name)
            f->name[f->name_length++] = (char)(byte | (byte >= 'A' && byte <= 'Z' ? 0x20 : 0));
        else
            f->name_length = sizeof f->name + 1;
        return 0;
    default: /* IN_VALUE */
        if (byte == '\r')
            crlf_ahead(f, FIELD_LINE);
        else if (byte == ' ' || byte == '\t')
            f->value_spaces += f->value_spaces < 255;
        else if (is_visible(byte))
            value_byte(f, byte);
        else
            return bad_byte(byte, "a control character (such as a bare CR) in a header value");
        return 0;
    }
}

/* One byte of a chunk-size line. NULL, or why it is refused. */
static const char *chunk_line_byte(framing *f, uint8_t byte)
{
    if (++f->line_bytes > FRAMING_CHUNK_LINE_MAX)
        return "a chunk-size line longer than 1024 bytes";
    if (byte == '\r' && f->line_bytes > 1) {
        crlf_ahead(f, CHUNK_LINE);
        return 0;
    }
    if (byte == '\n')
        return "a chunk-size line that ends with a bare LF: it must end with CRLF";
    int digit = hex_value(byte);
    if (f->state == IN_CHUNK_EXTENSION) {
        if (byte != ' ' && byte != '\t' && !is_visible(byte))
            return "a control character in a chunk extension";
        return 0;
    }
    if (digit >= 0 && !f->size_ended) {
        if (f->remaining >> 60)
            return "a chunk size over 64 bits";
        f->remaining = f->remaining * 16 + (uint64_t)digit;
        return 0;
    }
    if (f->line_bytes == 1)
        return "a chunk-size line that does not start with a hexadecimal size";
    if (byte == ' ' || byte == '\t') { /* white space may come before an extension's ';' */
        f->size_ended = true;
        return 0;
    }
    if (byte != ';')
        return "a chunk-size line holds more than a size and extensions";
    f->state = IN_CHUNK_EXTENSION;
    return 0;
}

#define EVERY_BYTE(b) (0x0101010101010101ull * (b))

/* Eight bytes at once: whether any is below `bound` (at most 0x80) and not 0x80 or above. */
static bool any_below(uint64_t word, uint8_t bound)
{
    return ((word - EVERY_BYTE(bound)) & ~word & EVERY_BYTE(0x80)) != 0;
}

static bool any_equal(uint64_t word, uint8_t byte)
{
    word ^= EVERY_BYTE(byte);
    return ((word - EVERY_BYTE(1)) & ~word & EVERY_BYTE(0x80)) != 0;
}

/* How many bytes from the start of `bytes` (up to `length`) are plain in a value: no control
 * byte (a tab ends the fast part too) and no DEL; eight at a time, as far as that goes. */
static size_t plain_value_words(const uint8_t *bytes, size_t length)
{
    size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, sizeof word);
        if (any_below(word, 0x20) || any_equal(word, 0x7f))
            break;
    }
    return i;
}

/* The same for a target: visible ASCII only. */
static size_t plain_target_words(const uint8_t *bytes, size_t length)
{
    size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, sizeof word);
        if (any_below(word, 0x21) || any_equal(word, 0x7f) || (word & EVERY_BYTE(0x80)))
            break;
    }
    return i;
}

/* Passes the bytes from `bytes` on that are plain inside the current part of a line, at once:
 * a method's or name's token bytes (a name copied as far as it is kept), a target's visible
 * ASCII, and a value's bytes but controls when framing does not depend on it. Never past a
 * bound, so that the byte that crosses one is stepped over on its own and refused. Returns how
 * many bytes it passed. */
static size_t pass_run(framing *f, const uint8_t *bytes, size_t length)
{
    size_t room = HEAD_BYTES_MAX - f->head_bytes, i = 0;
    if (f->state == IN_TARGET && HEAD_TARGET_MAX - f->target_bytes < room)
        room = HEAD_TARGET_MAX - f->target_bytes;
    length = length < room ? length : room;
    switch (f->state) {
    case IN_METHOD:
        while (i < length && is_token_byte(bytes[i]))
            i++;
        break;
    case IN_NAME:
        for (; i < length && is_token_byte(bytes[i]); i++)
            if (f->name_length < sizeof f->name)
                f->name[f->name_length++] =
                    (char)(bytes[i] | (bytes[i] >= 'A' && bytes[i] <= 'Z' ? 0x20 : 0));
            else
                f->name_length = sizeof f->name + 1;
        break;
    case IN_TARGET:
        i = plain_target_words(bytes, length);
        while (i < length && bytes[i] > 0x20 && bytes[i] < 0x7f)
            i++;
        f->target_bytes += (uint32_t)i;
        break;
    case IN_VALUE:
        if (f->keep_value)
            break;
        i = plain_value_words(bytes, length);
        while (i < length && ((bytes[i] >= 0x20 && bytes[i] != 0x7f) || bytes[i] == '\t'))
            i++;
        break;
    default:
        break;
    }
    f->head_bytes += (uint32_t)i;
    return i;
}

/* Whole stretches of body or chunk data at once: how many bytes at `bytes` were passed. */
static size_t skip_data(framing *f, size_t length)
{
    size_t taken = length < f->remaining ? length : (size_t)f->remaining;
    f->remaining -= taken;
    return taken;
}

/* One byte of a head (request line, header, trailer), CRLF or chunk line. */
static const char *step(framing *f, uint8_t byte, bool *request_done)
{
    switch (f->state) {
    case AT_LF:
        if (byte != '\n')
            return bare_cr;
        return line_done(f, request_done);
    case AT_REQUEST:
    case IN_METHOD:
    case AT_TARGET:
    case IN_TARGET:
    case IN_VERSION:
        return request_line_byte(f, byte);
    case AT_FIELD:
    case IN_NAME:
    case IN_VALUE:
        return field_byte(f, byte);
    case IN_CHUNK_SIZE:
    case IN_CHUNK_EXTENSION:
        return chunk_line_byte(f, byte);
    default: /* AT_CHUNK_END */
        if (byte != '\r')
            return "a chunk's data is not followed by CRLF";
        crlf_ahead(f, CHUNK);
        return 0;
    }
}

/* Whether the byte just stepped over belongs to a head (counted against its bound). */
static bool in_head(const framing *f)
{
    return f->state <= IN_VALUE || (f->state == AT_LF && f->after_line <= SECTION);
}

bool framing_scan(framing *f, const uint8_t *bytes, size_t length, framing_refusal *refusal)
{
    refusal->request_start = 0;
    if (f->state == REFUSED)
        return refuse(f, refusal, COFFER_INVALID_ARGUMENT, "the connection was refused before");
    size_t i = 0;
    while (i < length) {
        if (f->state == IN_BODY || f->state == IN_CHUNK_DATA) {
            i += skip_data(f, length - i);
            if (f->remaining)
                continue;
            if (f->state == IN_CHUNK_DATA) {
                f->state = AT_CHUNK_END;
                continue;
            }
            f->requests++;
            start_request(f);
            refusal->request_start = i;
            continue;
        }
        size_t run = pass_run(f, bytes + i, length - i);
        if (run) {
            i += run;
            continue;
        }
        if (in_head(f) && ++f->head_bytes > HEAD_BYTES_MAX)
            return refuse(f, refusal, COFFER_HEADERS_TOO_LARGE,
                          f->in_trailer ? "the trailer section is over 32 KiB"
                                        : "the request line and headers are over 32 KiB");
        bool request_done = false;
        const char *problem = step(f, bytes[i], &request_done);
        i++;
        if (problem)
            return refuse(f, refusal,
                          problem == fields_too_many ? COFFER_HEADERS_TOO_LARGE
                                                     : COFFER_INVALID_ARGUMENT,
                          problem);
        if (f->target_bytes > HEAD_TARGET_MAX)
            return refuse(f, refusal, COFFER_URI_TOO_LONG,
                          "the request target (path and query) is over 8192 bytes");
        if (request_done) {
            f->requests++;
            start_request(f);
            refusal->request_start = i;
        }
    }
    return true;
}
