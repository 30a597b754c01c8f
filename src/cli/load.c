/*
 * load.c — `coffer bench --server URL`: keep-alive HTTP load on a running server from one
 * epoll thread (a minimal HTTP/1.1 client, so the generator costs little of the machine),
 * closed loop with one request in flight per connection. Reports requests/s, transfers/s,
 * latency percentiles and results by code, then checks the invariants through /v1/verify.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include "coffer.h"

#define RESPONSE_MAX (8u << 20)
#define LATENCY_SLOTS 2000000 /* microseconds, 1 µs resolution up to 2 s; the last: above */
#define RETRY_RING 4096

enum workload { LOAD_UNIFORM, LOAD_HOT, LOAD_SEATS, LOAD_RETRIES };

typedef struct connection {
    int fd;
    char *request;
    size_t request_length, sent;
    char *response;
    size_t received;
    uint64_t started_ns;
    size_t transfers; /* in the request */
} connection;

typedef struct load {
    struct sockaddr_in address;
    char host_header[64];
    enum workload workload;
    uint64_t accounts, seats, connections, duration_s, batch, seed, random;
    uint64_t next_id;
    char run[16]; /* a prefix that keeps ids of separate runs apart */
    uint32_t *latency_us;
    uint64_t requests, transfers, transfers_created, replays;
    uint64_t statuses[600];
    uint64_t codes[COFFER_CODE_LIMIT];
    uint64_t failures; /* connection errors */
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

/* ---- a blocking request, for setup and the final check ---------------------------------- */

static int open_connection(const load *l, bool blocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&l->address, sizeof l->address) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static size_t format_request(const load *l, char *out, size_t size, const char *method,
                             const char *path, const char *body)
{
    size_t body_length = body ? strlen(body) : 0;
    int length = snprintf(out, size,
                          "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n%s",
                          method, path, l->host_header, body_length, body ? body : "");
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

/* One request on a fresh connection; the response body (malloc'd) and status. */
static char *request_blocking(const load *l, const char *method, const char *path, const char *body,
                              int *status)
{
    size_t size = (body ? strlen(body) : 0) + 512;
    char *text = malloc(size), *response = malloc(RESPONSE_MAX + 1);
    int fd = open_connection(l, true);
    size_t length = text ? format_request(l, text, size, method, path, body) : 0;
    *status = 0;
    bool ok = fd >= 0 && response && length && write(fd, text, length) == (ssize_t)length;
    size_t received = 0, body_start = 0, total = 0;
    while (ok && !(total = response_complete(response, received, &body_start))) {
        ssize_t got = read(fd, response + received, RESPONSE_MAX - received);
        ok = got > 0;
        if (ok)
            received += (size_t)got;
    }
    if (fd >= 0)
        close(fd);
    free(text);
    if (!ok) {
        free(response);
        return 0;
    }
    *status = atoi(response + 9);
    memmove(response, response + body_start, total - body_start);
    response[total - body_start] = 0;
    return response;
}

static bool request_ok(const load *l, const char *path, const char *body)
{
    int status;
    char *response = request_blocking(l, "POST", path, body, &status);
    bool ok = response && status / 100 == 2;
    if (!ok)
        fprintf(stderr, "coffer bench: setup %s failed (%d): %.300s\n", path, status,
                response ? response : "no response");
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
        ssize_t wrote = write(c->fd, c->request + c->sent, c->request_length - c->sent);
        if (wrote < 0)
            return errno == EAGAIN; /* EPOLLOUT says when to go on */
        c->sent += (size_t)wrote;
    }
    return true;
}

/* Advances one connection on an epoll event; false when it broke. */
static bool drive(load *l, connection *c, bool running)
{
    if (!send_rest(c))
        return false;
    for (;;) {
        ssize_t got = read(c->fd, c->response + c->received, RESPONSE_MAX - c->received);
        if (got < 0)
            return errno == EAGAIN;
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

static bool run_load(load *l, double *seconds)
{
    int epoll = epoll_create1(0);
    connection *connections = calloc(l->connections, sizeof *connections);
    if (epoll < 0 || !connections)
        return false;
    for (uint64_t i = 0; i < l->connections; i++) {
        connection *c = &connections[i];
        c->response = malloc(RESPONSE_MAX);
        c->fd = open_connection(l, false);
        if (c->fd < 0 || !c->response || !prepare(l, c))
            return false;
        struct epoll_event event = {EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
        epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &event);
    }
    uint64_t start = now_ns(), stop = start + l->duration_s * 1000000000ULL;
    uint64_t deadline = stop + 10000000000ULL; /* in-flight requests get 10 s after the end */
    struct epoll_event events[256];
    uint64_t open = l->connections;
    while (open > 0 && now_ns() < deadline) {
        bool running = now_ns() < stop;
        int ready = epoll_wait(epoll, events, 256, 100);
        for (int i = 0; i < ready; i++) {
            connection *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            bool idle_after_stop = !running && c->request_length == 0;
            if (idle_after_stop || !drive(l, c, running)) {
                if (!idle_after_stop && running)
                    l->failures++;
                close(c->fd);
                c->fd = -1;
                open--;
            } else if (!running && c->request_length == 0) {
                close(c->fd);
                c->fd = -1;
                open--;
            }
        }
        if (!running) /* connections idle at the stop have nothing in flight */
            for (uint64_t i = 0; i < l->connections; i++)
                if (connections[i].fd >= 0 && connections[i].request_length == 0) {
                    close(connections[i].fd);
                    connections[i].fd = -1;
                    open--;
                }
    }
    *seconds = (double)(now_ns() - start) / 1e9;
    if (*seconds > (double)l->duration_s)
        *seconds = (double)l->duration_s + 0.0;
    for (uint64_t i = 0; i < l->connections; i++) {
        if (connections[i].fd >= 0)
            close(connections[i].fd);
        free(connections[i].request);
        free(connections[i].response);
    }
    free(connections);
    close(epoll);
    return true;
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

static bool verify_ok(const load *l)
{
    int status;
    char *body = request_blocking(l, "GET", "/v1/verify", 0, &status);
    bool ok = body && status == 200 && strstr(body, "\"ok\":true");
    if (!ok)
        fprintf(stderr, "coffer bench: verify: %.300s\n", body ? body : "no response");
    free(body);
    return ok;
}

static void report(const load *l, double seconds, bool verified)
{
    double rps = (double)l->requests / seconds, tps = (double)l->transfers / seconds;
    uint64_t p50 = percentile(l, 0.5), p99 = percentile(l, 0.99), p999 = percentile(l, 0.999);
    printf("workload %s: %" PRIu64 " connections, %" PRIu64 " s, batch %" PRIu64 "\n",
           workload_name(l->workload), l->connections, l->duration_s, l->batch);
    printf("  %.0f requests/s, %.0f transfers/s (%" PRIu64 " created, %" PRIu64 " replays)\n", rps,
           tps, l->transfers_created, l->replays);
    printf("  latency p50 %.3f ms, p99 %.3f ms, p999 %.3f ms\n", (double)p50 / 1000,
           (double)p99 / 1000, (double)p999 / 1000);
    printf("  verify through the API: %s; connection failures: %" PRIu64 "\n",
           verified ? "ok" : "FAILED", l->failures);
    printf("{\"mode\":\"http\",\"workload\":\"%s\",\"connections\":%" PRIu64 ",\"batch\":%" PRIu64
           ",\"seconds\":%.3f,\"requests\":%" PRIu64 ",\"requests_per_second\":%.0f,"
           "\"replays\":%" PRIu64 ","
           "\"transfers\":%" PRIu64 ",\"transfers_per_second\":%.0f,\"latency_ms\":{\"p50\":%.3f,"
           "\"p99\":%.3f,\"p999\":%.3f},\"verify_ok\":%s,\"connection_failures\":%" PRIu64
           ",\"codes\":{",
           workload_name(l->workload), l->connections, l->batch, seconds, l->requests, rps,
           l->replays, l->transfers, tps, (double)p50 / 1000, (double)p99 / 1000,
           (double)p999 / 1000, verified ? "true" : "false", l->failures);
    const char *separator = "";
    for (int code = 0; code < COFFER_CODE_LIMIT; code++)
        if (l->codes[code]) {
            printf("%s\"%s\":%" PRIu64, separator, coffer_code_name(code), l->codes[code]);
            separator = ",";
        }
    printf("}}\n");
}

/* ---- options ----------------------------------------------------------------------------- */

static bool parse_url(load *l, const char *url)
{
    unsigned a, b, c, d, port = 80;
    char rest[8];
    const char *host = !strncmp(url, "http://", 7) ? url + 7 : url;
    if (!strncmp(host, "localhost", 9)) {
        a = 127, b = 0, c = 0, d = 1;
        if (host[9] == ':' && sscanf(host + 10, "%u%1s", &port, rest) < 1)
            return false;
    } else if (sscanf(host, "%u.%u.%u.%u:%u", &a, &b, &c, &d, &port) < 4) {
        return false;
    }
    if (a > 255 || b > 255 || c > 255 || d > 255 || port == 0 || port > 65535)
        return false;
    l->address.sin_family = AF_INET;
    l->address.sin_port = htons((uint16_t)port);
    l->address.sin_addr.s_addr = htonl((a << 24) | (b << 16) | (c << 8) | d);
    snprintf(l->host_header, sizeof l->host_header, "%u.%u.%u.%u:%u", a, b, c, d, port);
    return true;
}

int cli_bench_server(const load_arguments *arguments)
{
    static load l;
    memset(&l, 0, sizeof l);
    if (!strncasecmp(arguments->url, "https://", 8))
        return cli_usage_error("bench: --server https:// is not supported: the load generator "
                               "speaks plain HTTP only; bench a plain-HTTP listener");
    if (!parse_url(&l, arguments->url))
        return cli_usage_error("bench: --server needs http://IPV4:PORT (or localhost:PORT)");
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
    l.latency_us = calloc(LATENCY_SLOTS, sizeof *l.latency_us);
    l.retry_bodies = calloc(RETRY_RING, sizeof *l.retry_bodies);
    if (!l.latency_us || !l.retry_bodies)
        return 1;
    fprintf(stderr, "coffer bench: setting up %" PRIu64 " %s on %s\n",
            l.workload == LOAD_SEATS ? l.seats : l.accounts,
            l.workload == LOAD_SEATS ? "seats" : "accounts", arguments->url);
    if (!setup_accounts(&l))
        return 1;
    if (l.workload == LOAD_SEATS)
        l.accounts = l.seats;
    fprintf(stderr, "coffer bench: running for %" PRIu64 " s with %" PRIu64 " connections\n",
            l.duration_s, l.connections);
    double seconds;
    if (!run_load(&l, &seconds)) {
        fprintf(stderr, "coffer bench: cannot connect to %s\n", arguments->url);
        return 1;
    }
    bool verified = verify_ok(&l);
    report(&l, seconds, verified);
    free(l.latency_us);
    free(l.retry_bodies);
    return verified && l.failures == 0 ? 0 : 1;
}
