/*
 * test_framing.c — the framing scanner (src/server/framing.c): streams RFC 9112 allows pass
 * whole, cut anywhere and a byte at a time, with their requests counted; every looser or
 * ambiguous framing is refused with its code and a detail naming it, and a refusal says where
 * the refused request began, so that the whole requests before it can still be answered.
 */
#include <string.h>

#include "server/framing.h"
#include "server/head.h"
#include "support.h"

typedef struct verdict {
    bool accepted;
    int code;
    const char *detail;
    uint64_t requests;
    size_t request_start; /* of the refused request, in the piece that held the problem */
} verdict;

/* Scans `text` (length bytes) in pieces of `piece` bytes (0: whole). */
static verdict scan(const char *text, size_t length, size_t piece)
{
    framing f;
    framing_init(&f);
    verdict v = {.accepted = true};
    size_t step = piece ? piece : length;
    for (size_t at = 0; at < length; at += step) {
        size_t n = length - at < step ? length - at : step;
        framing_refusal refusal;
        if (!framing_scan(&f, (const uint8_t *)text + at, n, &refusal))
            return (verdict){false, refusal.code, refusal.detail, f.requests,
                             refusal.request_start};
    }
    v.requests = f.requests;
    return v;
}

static verdict scan_text(const char *text)
{
    return scan(text, strlen(text), 0);
}

static void assert_passes(const char *text, uint64_t requests)
{
    size_t length = strlen(text);
    for (size_t piece = 0; piece <= length; piece = piece ? piece * 2 + 1 : 1) {
        verdict v = scan(text, length, piece);
        if (!v.accepted)
            fail_msg("refused in pieces of %zu: %s\n%s", piece, v.detail, text);
        assert_int_equal(v.requests, requests);
    }
}

static void assert_refused_bytes(const char *text, size_t length, int code, const char *said)
{
    for (size_t piece = 0; piece <= length; piece = piece ? piece * 2 + 1 : 1) {
        verdict v = scan(text, length, piece);
        if (v.accepted)
            fail_msg("accepted in pieces of %zu:\n%s", piece, text);
        assert_int_equal(v.code, code);
        if (!strstr(v.detail, said))
            fail_msg("\"%s\" does not say \"%s\"", v.detail, said);
    }
}

static void assert_refused(const char *text, int code, const char *said)
{
    assert_refused_bytes(text, strlen(text), code, said);
}

#define GET "GET /healthz HTTP/1.1\r\nHost: a\r\n"
#define POST "POST /v1/accounts HTTP/1.1\r\nHost: a\r\n"

static void test_what_rfc_9112_allows_passes(void **state)
{
    (void)state;
    assert_passes(GET "\r\n", 1);
    assert_passes("\r\nGET / HTTP/1.0\r\n\r\n", 1); /* an empty line before is skipped */
    assert_passes(GET "X-Empty:\r\nX-Note: \t a b \t\r\n\r\n", 1);
    assert_passes(POST "Content-Length: 2\r\n\r\n{}" GET "\r\n", 2);
    assert_passes(POST "Content-Length:\t 2\r\n\r\n{}", 1);
    assert_passes(POST "Transfer-Encoding: Chunked\r\n\r\n2;a=1;b=\"x y\"\r\n{}\r\n"
                       "1 ;x\r\n \r\n0\r\nX-Trailer: t\r\n\r\n" GET "\r\n",
                  2);
    assert_passes("GET /healthz HTTP/1.0\r\n\r\n", 1);        /* 1.0 needs no Host */
    assert_passes(GET "X-Utf8: caf\xc3\xa9\r\n\r\n", 1);      /* obs-text in a value */
    assert_passes(POST "Content-Length: 3\r\n\r\n\r\n\n", 1); /* a body is not a head */
}

static void test_line_ends_and_control_bytes(void **state)
{
    (void)state;
    assert_refused("GET /healthz HTTP/1.1\nHost: a\r\n\r\n", COFFER_INVALID_ARGUMENT, "bare LF");
    assert_refused(GET "\n", COFFER_INVALID_ARGUMENT, "bare LF");
    assert_refused(GET "X: a\rb\r\n\r\n", COFFER_INVALID_ARGUMENT, "bare CR");
    static const char nul_then_lf[] = GET "X: a\0\n\r\n";
    assert_refused_bytes(nul_then_lf, sizeof nul_then_lf - 1, COFFER_INVALID_ARGUMENT, "NUL");
    assert_refused(GET "X: a\x01\r\n\r\n", COFFER_INVALID_ARGUMENT, "control");
    assert_refused(GET "X: a\x7f\r\n\r\n", COFFER_INVALID_ARGUMENT, "control");
    assert_refused(GET "X: a\r\n b\r\n\r\n", COFFER_INVALID_ARGUMENT, "folded");
    assert_refused(GET "X : a\r\n\r\n", COFFER_INVALID_ARGUMENT, "not a token");
    assert_refused(GET "X\r\n\r\n", COFFER_INVALID_ARGUMENT, "not a token");
}

static void test_the_request_line(void **state)
{
    (void)state;
    assert_refused("GET  / HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "METHOD SP TARGET");
    assert_refused("GET / x HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "space");
    assert_refused("GE\rT / HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "method");
    assert_refused("GET /\x01 HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "target");
    assert_refused("GET /\xc3\xa9 HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "target");
    assert_refused("GET /\r\n\r\n", COFFER_INVALID_ARGUMENT, "no version");
    assert_refused("GET / HTTP/1\r\n\r\n", COFFER_INVALID_ARGUMENT, "HTTP/x.y");
    assert_refused("GET / HTTP/2.0\r\n\r\n", COFFER_INVALID_ARGUMENT, "HTTP/1.x");
    assert_refused("\x16\x03\x01\x02", COFFER_INVALID_ARGUMENT, "method");
}

static void test_how_a_body_is_framed(void **state)
{
    (void)state;
    assert_refused(POST "Content-Length: -1\r\n\r\n", COFFER_INVALID_ARGUMENT, "number of bytes");
    assert_refused(POST "Content-Length: 1e3\r\n\r\n", COFFER_INVALID_ARGUMENT, "number of bytes");
    assert_refused(POST "Content-Length:\r\n\r\n", COFFER_INVALID_ARGUMENT, "number of bytes");
    assert_refused(POST "Content-Length: 12345678901234567890\r\n\r\n", COFFER_INVALID_ARGUMENT,
                   "number of bytes");
    assert_refused(POST "Content-Length: 2 \r\n\r\n", COFFER_INVALID_ARGUMENT, "white space");
    assert_refused(POST "Content-Length: 2\r\nContent-Length: 2\r\n\r\n", COFFER_INVALID_ARGUMENT,
                   "more than one Content-Length");
    assert_refused(POST "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                   COFFER_INVALID_ARGUMENT, "together");
    assert_refused(POST "Transfer-Encoding: gzip, chunked\r\n\r\n", COFFER_INVALID_ARGUMENT,
                   "other than one 'chunked'");
    assert_refused(POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                   COFFER_INVALID_ARGUMENT, "other than one 'chunked'");
    assert_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", COFFER_INVALID_ARGUMENT,
                   "HTTP/1.0");
    assert_refused("GET / HTTP/1.1\r\n\r\n", COFFER_INVALID_ARGUMENT, "without Host");
    assert_refused(GET "Host: b\r\n\r\n", COFFER_INVALID_ARGUMENT, "more than one Host");
}

static void test_chunks(void **state)
{
    (void)state;
#define CHUNKED POST "Transfer-Encoding: chunked\r\n\r\n"
    assert_refused(CHUNKED "2\n{}\r\n0\r\n\r\n", COFFER_INVALID_ARGUMENT, "bare LF");
    assert_refused(CHUNKED "2\r\n{}\r\n0\n\r\n", COFFER_INVALID_ARGUMENT, "bare LF");
    assert_refused(CHUNKED "2\r\n{}XY", COFFER_INVALID_ARGUMENT, "not followed by CRLF");
    assert_refused(CHUNKED "x\r\n", COFFER_INVALID_ARGUMENT, "hexadecimal");
    assert_refused(CHUNKED "\r\n", COFFER_INVALID_ARGUMENT, "hexadecimal");
    assert_refused(CHUNKED "2 2\r\n", COFFER_INVALID_ARGUMENT, "more than a size");
    assert_refused(CHUNKED "2;a\x01\r\n", COFFER_INVALID_ARGUMENT, "control");
    assert_refused(CHUNKED "11111111111111111\r\n", COFFER_INVALID_ARGUMENT, "64 bits");
    assert_refused(CHUNKED "0\r\nX: a\r\n b\r\n\r\n", COFFER_INVALID_ARGUMENT, "folded");
    assert_refused(CHUNKED "0\r\nX: a\n\r\n", COFFER_INVALID_ARGUMENT, "bare LF");
#undef CHUNKED
}

static void test_bounds(void **state)
{
    (void)state;
    static char text[80 * 1024];
    /* The target: 8192 bytes pass, one more is 414. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t target = HEAD_TARGET_MAX + (size_t)extra;
        size_t n = (size_t)snprintf(text, sizeof text, "GET /");
        memset(text + n, 'a', target - 1);
        n += target - 1;
        snprintf(text + n, sizeof text - n, " HTTP/1.1\r\nHost: a\r\n\r\n");
        verdict v = scan_text(text);
        assert_int_equal(v.accepted, extra == 0);
        if (extra)
            assert_int_equal(v.code, COFFER_URI_TOO_LONG);
    }
    /* The head: 32 KiB pass (the empty line included), one byte more is 431. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(text, sizeof text, GET "X-Pad: ");
        size_t pad = HEAD_BYTES_MAX + (size_t)extra - n - 4;
        memset(text + n, 'p', pad);
        snprintf(text + n + pad, sizeof text - n - pad, "\r\n\r\n");
        verdict v = scan_text(text);
        assert_int_equal(v.accepted, extra == 0);
        if (extra)
            assert_int_equal(v.code, COFFER_HEADERS_TOO_LARGE);
    }
    /* Header lines: 256 pass, 257 are 431. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(text, sizeof text, GET);
        for (int i = 1; i < FRAMING_FIELDS_MAX + extra; i++)
            n += (size_t)snprintf(text + n, sizeof text - n, "X%d: v\r\n", i);
        snprintf(text + n, sizeof text - n, "\r\n");
        verdict v = scan_text(text);
        assert_int_equal(v.accepted, extra == 0);
        if (extra)
            assert_int_equal(v.code, COFFER_HEADERS_TOO_LARGE);
    }
}

static void test_a_refusal_says_where_its_request_began(void **state)
{
    (void)state;
    /* Two whole requests, then a bad one: in one piece, it began after them. */
    const char *text = GET "\r\n" POST "Content-Length: 2\r\n\r\n{}" GET "X: a\n\r\n";
    verdict v = scan_text(text);
    assert_false(v.accepted);
    assert_int_equal(v.requests, 2);
    assert_int_equal(v.request_start, strlen(GET "\r\n" POST "Content-Length: 2\r\n\r\n{}"));
    /* Its first bytes in an earlier piece: 0, nothing of this piece may pass. */
    size_t cut = strlen(GET "\r\n" POST "Content-Length: 2\r\n\r\n{}GET");
    framing f;
    framing_init(&f);
    framing_refusal refusal;
    assert_true(framing_scan(&f, (const uint8_t *)text, cut, &refusal));
    assert_false(framing_scan(&f, (const uint8_t *)text + cut, strlen(text) - cut, &refusal));
    assert_int_equal(refusal.request_start, 0);
    /* A scanner that refused refuses whatever comes next. */
    assert_false(framing_scan(&f, (const uint8_t *)GET "\r\n", strlen(GET "\r\n"), &refusal));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_what_rfc_9112_allows_passes),
        cmocka_unit_test(test_line_ends_and_control_bytes),
        cmocka_unit_test(test_the_request_line),
        cmocka_unit_test(test_how_a_body_is_framed),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_a_refusal_says_where_its_request_began),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
