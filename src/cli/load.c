/*
 * load.c — `coffer bench --server URL`: keep-alive HTTP load on a running server from one
 * epoll thread (a minimal HTTP/1.1 client, so the generator costs little of the machine),
 * closed loop with one request in flight per connection, over plain TCP or TLS (tls_client.h).
 * Reports requests/s, transfers/s, latency percentiles and results by code, then checks the
 * invariants through /v1/verify.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/load.h"
#include "cli/options.h"
#include "cli/tls_client.h"
#include "coffer.h"

#define RESPONSE_MAX (8u << 20)
#define LATENCY_SLOTS 2000000 /* microseconds, 1 µs resolution up to 2 s; the last: above */
#define RETRY_RING 4096
#define BLOCKING_TIMEOUT_S 60 /* a setup request or the final check that gets no answer */
#define TOKEN_BYTES_MAX 1024
#define REASON_BYTES 512
#define ADDRESSES_MAX 8

enum workload { LOAD_UNIFORM, LOAD_HOT, LOAD_SEATS, LOAD_RETRIES };

typedef struct connection {
    stream stream;
    char *request;
    size_t request_length, sent;
    char *response;
    size_t received;
    uint64_t started_ns;
    size_t transfers; /* in the request */
} connection;

typedef struct load {
    const char *url;
    struct sockaddr_storage addresses[ADDRESSES_MAX]; /* the host's, in getaddrinfo's order */
    socklen_t address_lengths[ADDRESSES_MAX];
    size_t address_count, address_chosen; /* chosen: the one that accepted, once known */
    bool chosen;
    char host_header[256]; /* the URL's HOST[:PORT] */
    bool token_given;
    /* Host, Authorization (with a token) and Content-Type: the same on every request, so
     * formatted once. */
    char headers[TOKEN_BYTES_MAX + 512];
    bool https;
    tls_client tls;
    enum workload workload;
    uint64_t accounts, seats, connections, duration_s, batch, seed, random;
    uint64_t next_id;
    char run[16]; /* a prefix that keeps ids of separate runs apart */
    uint32_t *latency_us;
    uint64_t requests, transfers, transfers_created, replays;
    uint64_t statuses[600];
    uint64_t codes[COFFER_CODE_LIMIT];
    uint64_t failures; /* connection errors */
    char first_failure[REASON_BYTES];
    char (*retry_bodies)[256];
    uint64_t retry_count;
} load;

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

static uint64_t next_random(load *l)
{
    uint64_t x = l->random;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    l->random = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- connections ------------------------------------------------------------------------ */

/* A socket connected (or connecting, when not blocking) to the server: the first time (the
 * first setup request, blocking), to the first of its addresses that accepts, as localhost may
 * name ::1 and 127.0.0.1 with the server listening on one. -1 with errno. */
static int connect_socket(load *l, bool blocking)
{
    size_t first = l->chosen ? l->address_chosen : 0;
    size_t end = l->chosen ? first + 1 : l->address_count;
    for (size_t i = first; i < end; i++) {
        int fd = socket(l->addresses[i].ss_family, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
        if (fd < 0)
            return -1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (blocking) { /* a blocked read or write then says STREAM_AGAIN */
            struct timeval timeout = {BLOCKING_TIMEOUT_S, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        }
        if (connect(fd, (const struct sockaddr *)&l->addresses[i], l->address_lengths[i]) == 0 ||
            errno == EINPROGRESS) {
            l->chosen = true;
            l->address_chosen = i;
            return fd;
        }
        int error = errno;
        close(fd);
        errno = error;
    }
    return -1;
}

/* A connection to the server under a plain or TLS stream. False with the reason. */
static bool connect_stream(load *l, stream *s, bool blocking, char *why, size_t why_size)
{
    *s = (stream){.fd = -1};
    int fd = connect_socket(l, blocking);
    if (fd < 0) {
        snprintf(why, why_size, "%s", strerror(errno));
        return false;
    }
    if (!stream_open(s, fd, l->https ? &l->tls : NULL)) {
        snprintf(why, why_size, "cannot start a TLS session");
        close(fd);
        return false;
    }
    return true;
}

/* Why a stream broke, with what to do about a certificate that is not trusted. */
static void stream_reason(const stream *s, char *why, size_t why_size)
{
    char reason[REASON_BYTES / 2];
    stream_error(s, reason, sizeof reason);
    if (stream_error_is_certificate(s))
        snprintf(why, why_size,
                 "the server's certificate is not trusted (%s): name its CA (or the "
                 "certificate itself) with --cacert FILE or COFFER_CACERT",
                 reason);
    else
        snprintf(why, why_size, "%s", reason);
}

static size_t format_request(const load *l, char *out, size_t size, const char *method,
                             const char *path, const char *body)
{
    size_t body_length = body ? strlen(body) : 0;
    int length = snprintf(out, size, "%s %s HTTP/1.1\r\n%sContent-Length: %zu\r\n\r\n%s", method,
                          path, l->headers, body_length, body ? body : "");
    return length > 0 && (size_t)length < size ? (size_t)length : 0;
}

/* Where the body starts and how long the whole response is; 0 while incomplete. */
static size_t response_complete(const char *response, size_t received, size_t *body_start)
{
    const char *end = memmem(response, received, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t header_length = (size_t)(end - response) + 4;
    size_t content_length = 0;
    for (const char *line = response; line < end;) {
        const char *next = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!next)
            next = end;
        if ((size_t)(next - line) > 15 && strncasecmp(line, "Content-Length:", 15) == 0)
            content_length = strtoull(line + 15, 0, 10);
        line = next + 2;
    }
    if (received < header_length + content_length)
        return 0;
    *body_start = header_length;
    return header_length + content_length;
}

/* Sends a whole request on a blocking stream, after the TLS handshake. */
static bool send_blocking(stream *s, const char *text, size_t length)
{
    int handshake = stream_handshake(s);
    if (handshake != 1)
        return false;
    for (size_t sent = 0; sent < length;) {
        ssize_t wrote = stream_write(s, text + sent, length - sent);
        if (wrote <= 0)
            return false;
        sent += (size_t)wrote;
    }
    return true;
}

/* Reads one whole response from a blocking stream: its length (0: none) and where its body
 * starts. */
static size_t receive_blocking(stream *s, char *response, size_t *body_start)
{
    size_t received = 0, total;
    while (!(total = response_complete(response, received, body_start))) {
        ssize_t got = stream_read(s, response + received, RESPONSE_MAX - received);
        if (got <= 0)
            return 0;
        received += (size_t)got;
    }
    return total;
}

/* One request on a fresh connection: the response body (malloc'd) and its status; NULL with
 * the reason in `why` when no answer came. */
static char *request_blocking(load *l, const char *method, const char *path, const char *body,
                              int *status, char *why, size_t why_size)
{
    size_t size = (body ? strlen(body) : 0) + 512 + sizeof l->headers;
    char *text = malloc(size), *response = malloc(RESPONSE_MAX + 1);
    size_t length = text ? format_request(l, text, size, method, path, body) : 0;
    size_t body_start = 0, total = 0;
    stream s = {.fd = -1};
    *status = 0;
    snprintf(why, why_size, "out of memory");
    if (response && length && connect_stream(l, &s, true, why, why_size)) {
        if (send_blocking(&s, text, length))
            total = receive_blocking(&s, response, &body_start);
        if (!total && (s.tls_error || s.system_error))
            stream_reason(&s, why, why_size);
        else if (!total)
            snprintf(why, why_size, "no answer (the connection closed, or %d s passed)",
                     BLOCKING_TIMEOUT_S);
        stream_close(&s);
    }
    free(text);
    if (!total) {
        free(response);
        return 0;
    }
    *status = atoi(response + 9);
    memmove(response, response + body_start, total - body_start);
    response[total - body_start] = 0;
    return response;
}

/* A setup request that was not answered 2xx: why, and for 401 and 403 what to do. */
static void report_setup_failure(const load *l, const char *path, int status, const char *body,
                                 const char *why)
{
    if (!body)
        fprintf(stderr, "coffer bench: cannot reach the server at %s: %s\n", l->url, why);
    else if (status == 401 && l->token_given)
        fprintf(stderr, "coffer bench: the server does not accept the token given (401 "
                        "unauthorized): check --token TOKEN or COFFER_TOKEN\n");
    else if (status == 401)
        fprintf(stderr, "coffer bench: the server asks for a token (401 unauthorized): give one "
                        "with --token TOKEN or COFFER_TOKEN ('coffer token create --scope "
                        "write')\n");
    else if (status == 403)
        fprintf(stderr, "coffer bench: the token may not create the bench's accounts and "
                        "transfers (403 forbidden): it needs the write or admin scope, without "
                        "--accounts prefixes\n");
    else
        fprintf(stderr, "coffer bench: setup %s failed (%d): %.300s\n", path, status, body);
}

static bool request_ok(load *l, const char *path, const char *body)
{
    int status;
    char why[REASON_BYTES];
    char *response = request_blocking(l, "POST", path, body, &status, why, sizeof why);
    bool ok = response && status / 100 == 2;
    if (!ok)
        report_setup_failure(l, path, status, response, why);
    free(response);
    return ok;
}

/* ---- setup ----------------------------------------------------------------------------------- */

static void account_name(const load *l, char *out, size_t size, uint64_t index)
{
    snprintf(out, size, "%s-u%" PRIu64, l->run, index);
}

/* Creates the accounts (in batches) and funds them from an unbounded bank. */
static bool setup_accounts(load *l)
{
    size_t capacity = 8190 * 160 + 256;
    char *body = malloc(capacity);
    bool ok = body != 0;
    const char *currency = l->workload == LOAD_SEATS ? "SEAT" : "KRW";
    snprintf(body, capacity,
             "{\"accounts\":[{\"id\":\"%s-bank\",\"currency\":\"%s\",\"min_balance\":null},"
             "{\"id\":\"%s-hot\",\"currency\":\"%s\"}]}",
             l->run, currency, l->run, currency);
    ok = ok && request_ok(l, "/v1/accounts", body);
    uint64_t total = l->workload == LOAD_SEATS ? l->seats : l->accounts;
    for (uint64_t done = 0; ok && done < total;) {
        uint64_t count = total - done < 4000 ? total - done : 4000;
        size_t used = (size_t)snprintf(body, capacity, "{\"accounts\":[");
        for (uint64_t i = 0; i < count; i++) {
            char name[48];
            account_name(l, name, sizeof name, done + i);
            used += (size_t)snprintf(body + used, capacity - used,
                                     "%s{\"id\":\"%s\",\"currency\":\"%s\"}", i ? "," : "", name,
                                     currency);
        }
        snprintf(body + used, capacity - used, "]}");
        ok = request_ok(l, "/v1/accounts", body);
        used = (size_t)snprintf(body, capacity, "{\"transfers\":[");
        for (uint64_t i = 0; ok && i < count; i++) {
            char name[48];
            account_name(l, name, sizeof name, done + i);
            /* Seats hold one unit each; wallets a lot. */
            used += (size_t)snprintf(body + used, capacity - used,
                                     "%s{\"id\":\"%s-f%" PRIu64 "\",\"from\":\"%s-bank\",\"to\":"
                                     "\"%s\",\"amount\":%s}",
                                     i ? "," : "", l->run, done + i, l->run, name,
                                     l->workload == LOAD_SEATS ? "1" : "1000000000000");
        }
        snprintf(body + used, capacity - used, "]}");
        ok = ok && request_ok(l, "/v1/transfers", body);
        done += count;
    }
    snprintf(body, capacity,
             "{\"id\":\"%s-fhot\",\"from\":\"%s-bank\",\"to\":\"%s-hot\",\"amount\":%s}", l->run,
             l->run, l->run, "1000000000000000");
    ok = ok && request_ok(l, "/v1/transfers", body);
    free(body);
    return ok;
}

/* ---- the load ---------------------------------------------------------------------------- */

/* One transfer (or seat hold) as a JSON object into out. */
static int format_transfer(load *l, char *out, size_t size)
{
    uint64_t id = l->next_id++;
    char from[48], to[48];
    uint64_t a = next_random(l) % l->accounts, b = next_random(l) % l->accounts;
    if (a == b)
        b = (b + 1) % l->accounts;
    int amount = 1 + (int)(next_random(l) % 100);
    switch (l->workload) {
    case LOAD_HOT:
        snprintf(from, sizeof from, "%s-hot", l->run);
        account_name(l, to, sizeof to, b);
        break;
    case LOAD_SEATS:
        account_name(l, from, sizeof from, next_random(l) % l->seats);
        snprintf(to, sizeof to, "%s-hot", l->run);
        return snprintf(out, size,
                        "{\"id\":\"%s-s%" PRIu64 "\",\"from\":\"%s\",\"to\":\"%s\",\"amount\":1,"
                        "\"hold\":{\"timeout_ms\":1000}}",
                        l->run, id, from, to);
    default:
        account_name(l, from, sizeof from, a);
        account_name(l, to, sizeof to, b);
    }
    return snprintf(out, size,
                    "{\"id\":\"%s-t%" PRIu64 "\",\"from\":\"%s\",\"to\":\"%s\","
                    "\"amount\":%d}",
                    l->run, id, from, to, amount);
}

/* Builds the next request of a connection: one transfer, a retry of an earlier one, or a batch. */
static bool prepare(load *l, connection *c)
{
    static char body[8190 * 160 + 64];
    size_t used = 0;
    if (l->batch > 1) {
        used = (size_t)snprintf(body, sizeof body, "{\"transfers\":[");
        for (uint64_t i = 0; i < l->batch; i++) {
            if (i)
                body[used++] = ',';
            used += (size_t)format_transfer(l, body + used, sizeof body - used);
        }
        used += (size_t)snprintf(body + used, sizeof body - used, "]}");
        c->transfers = l->batch;
    } else if (l->workload == LOAD_RETRIES && l->retry_count > 0 && next_random(l) % 3 == 0) {
        /* A third of the requests retry an earlier key with the same content. */
        uint64_t pick =
            l->retry_count - 1 -
            next_random(l) % (l->retry_count < RETRY_RING ? l->retry_count : RETRY_RING);
        used = (size_t)snprintf(body, sizeof body, "%s", l->retry_bodies[pick % RETRY_RING]);
        c->transfers = 1;
    } else {
        used = (size_t)format_transfer(l, body, sizeof body);
        if (l->workload == LOAD_RETRIES)
            snprintf(l->retry_bodies[l->retry_count++ % RETRY_RING], 256, "%.255s", body);
        c->transfers = 1;
    }
    size_t size = used + 512;
    char *request = realloc(c->request, size);
    if (!request)
        return false;
    c->request = request;
    c->request_length = format_request(l, c->request, size, "POST", "/v1/transfers", body);
    c->sent = 0;
    c->received = 0;
    c->started_ns = now_ns();
    return c->request_length > 0;
}

static int code_of(const char *name, size_t length)
{
    for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
        const char *known = coffer_code_name(code);
        if (known && strlen(known) == length && memcmp(known, name, length) == 0)
            return code;
    }
    return COFFER_INTERNAL;
}

static size_t count_occurrences(const char *text, size_t length, const char *needle)
{
    size_t count = 0, needle_length = strlen(needle);
    for (const char *at = text;
         (at = memmem(at, length - (size_t)(at - text), needle, needle_length));
         at += needle_length)
        count++;
    return count;
}

static void account_response(load *l, connection *c, size_t body_start, size_t total)
{
    uint64_t latency = (now_ns() - c->started_ns) / 1000;
    l->latency_us[latency < LATENCY_SLOTS ? latency : LATENCY_SLOTS - 1]++;
    int status = atoi(c->response + 9);
    l->statuses[status >= 0 && status < 600 ? status : 0]++;
    l->requests++;
    l->transfers += c->transfers;
    const char *body = c->response + body_start;
    size_t body_length = total - body_start;
    if (memmem(c->response, body_start, "Idempotent-Replayed: true", 25))
        l->replays++;
    if (c->transfers > 1 && status == 200) {
        size_t created = count_occurrences(body, body_length, "\"status\":201");
        l->transfers_created += created;
        l->codes[COFFER_CREATED] += created;
        l->codes[COFFER_BATCH_FAILED] += c->transfers - created; /* refused items */
        return;
    }
    const char *code = memmem(body, body_length, "\"code\":\"", 8);
    if (code) {
        const char *name = code + 8, *end = memchr(name, '"', body_length - (size_t)(name - body));
        if (end)
            l->codes[code_of(name, (size_t)(end - name))]++;
    }
    if (status == 201)
        l->transfers_created++;
}

/* Writes what is left of the request; false when the connection broke. */
static bool send_rest(connection *c)
{
    while (c->sent < c->request_length) {
        ssize_t wrote = stream_write(&c->stream, c->request + c->sent, c->request_length - c->sent);
        if (wrote < 0)
            return wrote == STREAM_AGAIN; /* EPOLLOUT says when to go on */
        c->sent += (size_t)wrote;
    }
    return true;
}

/* Advances one connection on an epoll event; false when it broke. Both directions are watched
 * edge-triggered, so whichever way the TLS handshake waits, its next event comes. */
static bool drive(load *l, connection *c, bool running)
{
    int handshake = stream_handshake(&c->stream);
    if (handshake != 1)
        return handshake == STREAM_AGAIN;
    if (!send_rest(c))
        return false;
    for (;;) {
        ssize_t got =
            stream_read(&c->stream, c->response + c->received, RESPONSE_MAX - c->received);
        if (got < 0)
            return got == STREAM_AGAIN;
        if (got == 0)
            return false;
        c->received += (size_t)got;
        size_t body_start, total = response_complete(c->response, c->received, &body_start);
        if (!total)
            continue;
        account_response(l, c, body_start, total);
        if (!running) {
            c->request_length = c->sent = 0;
            return true;
        }
        /* The next request, and no read after it: the last response was read whole, so the
         * next answer comes as a new edge (a read now would only say EAGAIN). */
        return prepare(l, c) && send_rest(c);
    }
}

/* Opens the connections, each with its first request ready; false with the reason. */
static bool open_connections(load *l, connection *connections, int epoll, char *why,
                             size_t why_size)
{
    for (uint64_t i = 0; i < l->connections; i++) {
        connection *c = &connections[i];
        if (!connect_stream(l, &c->stream, false, why, why_size))
            return false;
        c->response = malloc(RESPONSE_MAX);
        if (!c->response || !prepare(l, c)) {
            snprintf(why, why_size, "out of memory");
            return false;
        }
        struct epoll_event event = {EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
        epoll_ctl(epoll, EPOLL_CTL_ADD, c->stream.fd, &event);
    }
    return true;
}

/* Closes a connection; one that broke while the load ran is a failure, the first one said. */
static void end_connection(load *l, connection *c, bool broke, uint64_t *open)
{
    if (broke && l->failures++ == 0)
        stream_reason(&c->stream, l->first_failure, sizeof l->first_failure);
    stream_close(&c->stream);
    (*open)--;
}

static bool run_load(load *l, double *seconds, char *why, size_t why_size)
{
    int epoll = epoll_create1(0);
    connection *connections = calloc(l->connections, sizeof *connections);
    for (uint64_t i = 0; connections && i < l->connections; i++)
        connections[i].stream.fd = -1;
    bool opened =
        epoll >= 0 && connections && open_connections(l, connections, epoll, why, why_size);
    uint64_t start = now_ns(), stop = start + l->duration_s * 1000000000ULL;
    uint64_t deadline = stop + 10000000000ULL; /* in-flight requests get 10 s after the end */
    struct epoll_event events[256];
    uint64_t open = opened ? l->connections : 0;
    while (open > 0 && now_ns() < deadline) {
        bool running = now_ns() < stop;
        int ready = epoll_wait(epoll, events, 256, 100);
        for (int i = 0; i < ready; i++) {
            connection *c = events[i].data.ptr;
            if (c->stream.fd < 0)
                continue;
            bool idle_after_stop = !running && c->request_length == 0;
            if (idle_after_stop || !drive(l, c, running))
                end_connection(l, c, !idle_after_stop && running, &open);
            else if (!running && c->request_length == 0)
                end_connection(l, c, false, &open);
        }
        if (!running) /* connections idle at the stop have nothing in flight */
            for (uint64_t i = 0; i < l->connections; i++)
                if (connections[i].stream.fd >= 0 && connections[i].request_length == 0)
                    end_connection(l, &connections[i], false, &open);
    }
    *seconds = (double)(now_ns() - start) / 1e9;
    if (*seconds > (double)l->duration_s)
        *seconds = (double)l->duration_s + 0.0;
    for (uint64_t i = 0; connections && i < l->connections; i++) {
        stream_close(&connections[i].stream);
        free(connections[i].request);
        free(connections[i].response);
    }
    free(connections);
    if (epoll >= 0)
        close(epoll);
    return opened;
}

/* ---- report ------------------------------------------------------------------------------ */

static uint64_t percentile(const load *l, double fraction)
{
    uint64_t target = (uint64_t)((double)l->requests * fraction), seen = 0;
    for (uint64_t us = 0; us < LATENCY_SLOTS; us++) {
        seen += l->latency_us[us];
        if (seen > target)
            return us;
    }
    return LATENCY_SLOTS;
}

static const char *workload_name(enum workload w)
{
    static const char *names[] = {"uniform", "hot", "seats", "retries"};
    return names[w];
}

/* A token without the admin scope may not ask for /v1/verify (403): the run is then reported
 * unchecked rather than failed, since the load itself ran. */
enum verify_outcome { VERIFY_OK, VERIFY_FAILED, VERIFY_NOT_ALLOWED };

/* The final check of the invariants, through the API. */
static enum verify_outcome verify(load *l)
{
    int status;
    char why[REASON_BYTES];
    char *body = request_blocking(l, "GET", "/v1/verify", 0, &status, why, sizeof why);
    enum verify_outcome outcome = body && status == 200 && strstr(body, "\"ok\":true") ? VERIFY_OK
                                  : body && status == 403 ? VERIFY_NOT_ALLOWED
                                                          : VERIFY_FAILED;
    if (outcome == VERIFY_NOT_ALLOWED)
        fprintf(stderr, "coffer bench: /v1/verify not checked: the token may not call it (403 "
                        "forbidden; it takes the admin scope)\n");
    else if (outcome == VERIFY_FAILED)
        fprintf(stderr, "coffer bench: verify: %.300s\n", body ? body : why);
    free(body);
    return outcome;
}

static void report(const load *l, double seconds, enum verify_outcome verified)
{
    static const char *said[] = {"ok", "FAILED", "not checked (the token is not admin)"};
    static const char *json[] = {"true", "false", "null"};
    double rps = (double)l->requests / seconds, tps = (double)l->transfers / seconds;
    uint64_t p50 = percentile(l, 0.5), p99 = percentile(l, 0.99), p999 = percentile(l, 0.999);
    printf("workload %s: %" PRIu64 " connections%s, %" PRIu64 " s, batch %" PRIu64 "\n",
           workload_name(l->workload), l->connections, l->https ? " over TLS" : "", l->duration_s,
           l->batch);
    printf("  %.0f requests/s, %.0f transfers/s (%" PRIu64 " created, %" PRIu64 " replays)\n", rps,
           tps, l->transfers_created, l->replays);
    printf("  latency p50 %.3f ms, p99 %.3f ms, p999 %.3f ms\n", (double)p50 / 1000,
           (double)p99 / 1000, (double)p999 / 1000);
    printf("  verify through the API: %s; connection failures: %" PRIu64 "\n", said[verified],
           l->failures);
    if (l->failures)
        printf("  the first connection failure: %s\n", l->first_failure);
    printf("{\"mode\":\"http\",\"tls\":%s,\"workload\":\"%s\",\"connections\":%" PRIu64
           ",\"batch\":%" PRIu64 ",\"seconds\":%.3f,\"requests\":%" PRIu64
           ",\"requests_per_second\":%.0f,"
           "\"replays\":%" PRIu64 ","
           "\"transfers\":%" PRIu64 ",\"transfers_per_second\":%.0f,\"latency_ms\":{\"p50\":%.3f,"
           "\"p99\":%.3f,\"p999\":%.3f},\"verify_ok\":%s,\"connection_failures\":%" PRIu64
           ",\"codes\":{",
           l->https ? "true" : "false", workload_name(l->workload), l->connections, l->batch,
           seconds, l->requests, rps, l->replays, l->transfers, tps, (double)p50 / 1000,
           (double)p99 / 1000, (double)p999 / 1000, json[verified], l->failures);
    const char *separator = "";
    for (int code = 0; code < COFFER_CODE_LIMIT; code++)
        if (l->codes[code]) {
            printf("%s\"%s\":%" PRIu64, separator, coffer_code_name(code), l->codes[code]);
            separator = ",";
        }
    printf("}}\n");
}

/* Setup, the load, the final check and the report: the exit code. */
static int run_bench(load *l)
{
    l->latency_us = calloc(LATENCY_SLOTS, sizeof *l->latency_us);
    l->retry_bodies = calloc(RETRY_RING, sizeof *l->retry_bodies);
    if (!l->latency_us || !l->retry_bodies)
        return 1;
    fprintf(stderr, "coffer bench: setting up %" PRIu64 " %s on %s\n",
            l->workload == LOAD_SEATS ? l->seats : l->accounts,
            l->workload == LOAD_SEATS ? "seats" : "accounts", l->url);
    if (!setup_accounts(l))
        return 1;
    if (l->workload == LOAD_SEATS)
        l->accounts = l->seats;
    fprintf(stderr, "coffer bench: running for %" PRIu64 " s with %" PRIu64 " connections\n",
            l->duration_s, l->connections);
    double seconds;
    char why[REASON_BYTES];
    if (!run_load(l, &seconds, why, sizeof why)) {
        fprintf(stderr, "coffer bench: cannot connect to %s: %s\n", l->url, why);
        return 1;
    }
    enum verify_outcome verified = verify(l);
    report(l, seconds, verified);
    free(l->latency_us);
    free(l->retry_bodies);
    return verified != VERIFY_FAILED && l->failures == 0 ? 0 : 1;
}

/* ---- options ----------------------------------------------------------------------------- */

/* Splits [http[s]://]HOST[:PORT][/] (HOST a name, IPv4 or [IPv6]): sets https and the Host
 * header, and returns the host (no brackets) and port as text. */
static bool parse_url(load *l, const char *url, char host[256], char port[8])
{
    l->https = !strncasecmp(url, "https://", 8);
    const char *authority = l->https ? url + 8 : !strncasecmp(url, "http://", 7) ? url + 7 : url;
    size_t length = strcspn(authority, "/");
    if (length == 0 || length >= 256 || (authority[length] && strcmp(authority + length, "/")))
        return false;
    snprintf(l->host_header, sizeof l->host_header, "%.*s", (int)length, authority);
    const char *end = authority + length, *host_end, *colon;
    if (authority[0] == '[') {
        host_end = memchr(authority, ']', length);
        if (!host_end || (host_end + 1 < end && host_end[1] != ':'))
            return false;
        colon = host_end + 1 < end ? host_end + 1 : NULL;
        authority++;
    } else {
        colon = memchr(authority, ':', length);
        host_end = colon ? colon : end;
    }
    snprintf(host, 256, "%.*s", (int)(host_end - authority), authority);
    uint64_t number = l->https ? 443 : 80;
    char digits[8] = "";
    if (colon && ((size_t)(end - colon - 1) >= sizeof digits || colon + 1 == end))
        return false;
    if (colon)
        snprintf(digits, sizeof digits, "%.*s", (int)(end - colon - 1), colon + 1);
    if ((colon && !cli_parse_u64(digits, 1, 65535, &number)) || !host[0])
        return false;
    snprintf(port, 8, "%" PRIu64, number);
    return true;
}

/* The host's addresses; which one accepts is learnt by the first connection. */
static bool resolve(load *l, const char *host, const char *port, char *why, size_t why_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
    int status = getaddrinfo(host, port, &hints, &found);
    if (status != 0) {
        snprintf(why, why_size, "%s: %s", host, gai_strerror(status));
        return false;
    }
    for (struct addrinfo *at = found; at && l->address_count < ADDRESSES_MAX; at = at->ai_next)
        if (at->ai_addrlen <= sizeof l->addresses[0]) {
            memcpy(&l->addresses[l->address_count], at->ai_addr, at->ai_addrlen);
            l->address_lengths[l->address_count++] = at->ai_addrlen;
        }
    freeaddrinfo(found);
    snprintf(why, why_size, "%s: no address", host);
    return l->address_count > 0;
}

/* The server, its trust for https:// and the token: CLI_GO_ON or an exit code. */
static int connect_options(load *l, const load_arguments *arguments)
{
    char host[256], port[8], why[REASON_BYTES];
    if (!parse_url(l, arguments->url, host, port))
        return cli_usage_error("bench: --server needs http://HOST:PORT or https://HOST:PORT, "
                               "not '%s'",
                               arguments->url);
    const char *token = arguments->token;
    if (token && (strlen(token) > TOKEN_BYTES_MAX || strpbrk(token, "\r\n") || !*token))
        return cli_usage_error("bench: the token must be one line of at most %d bytes",
                               TOKEN_BYTES_MAX);
    l->token_given = token != NULL;
    snprintf(l->headers, sizeof l->headers, "Host: %s\r\n%s%s%sContent-Type: application/json\r\n",
             l->host_header, token ? "Authorization: Bearer " : "", token ? token : "",
             token ? "\r\n" : "");
    const char *cacert = arguments->cacert && *arguments->cacert ? arguments->cacert : NULL;
    if (l->https && cacert && access(cacert, R_OK) != 0)
        return cli_usage_error("--cacert %s: %s", cacert, strerror(errno));
    if (l->https && !tls_client_open(&l->tls, cacert, host, why, sizeof why))
        return cli_usage_error("bench: %s", why);
    if (!resolve(l, host, port, why, sizeof why)) {
        fprintf(stderr, "coffer bench: cannot reach the server at %s: %s\n", l->url, why);
        return 1;
    }
    return CLI_GO_ON;
}

int cli_bench_server(const load_arguments *arguments)
{
    static load l;
    memset(&l, 0, sizeof l);
    l.url = arguments->url;
    signal(SIGPIPE, SIG_IGN); /* a server that closes a connection is counted, not fatal */
    int status = connect_options(&l, arguments);
    if (status != CLI_GO_ON) {
        tls_client_close(&l.tls);
        return status;
    }
    const char *names[] = {"uniform", "hot", "seats", "retries"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(arguments->workload, names[i]))
            l.workload = (enum workload)i;
    l.accounts = arguments->accounts;
    l.seats = arguments->seats;
    l.connections = arguments->connections;
    l.duration_s = arguments->duration_s;
    l.batch = arguments->batch;
    l.random = arguments->seed * 0x9E3779B97F4A7C15ULL + 1;
    snprintf(l.run, sizeof l.run, "b%llx", (unsigned long long)(now_ns() / 1000 % 0xFFFFFFFF));
    status = run_bench(&l);
    tls_client_close(&l.tls);
    return status;
}
