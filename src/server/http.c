/*
 * http.c — the transport of `coffer serve` (libmicrohttpd): connections, bodies and their
 * limits, request ids, suspend/resume around the engine, sending, signals and draining. What
 * each route does is handlers.c's; the table is routes.c's. Each request carries one context
 * from its first callback to MHD's completion notice.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "server/deadline.h"
#include "server/framing_socket.h"
#include "server/handlers.h"
#include "server/routes.h"

uint64_t http_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* ---- responses ----------------------------------------------------------------------------- */

void http_add_headers(request *r, struct MHD_Response *reply)
{
    MHD_add_response_header(reply, "X-Request-Id", r->request_id);
    /* Read when answering: the answer reflects no change after it, and a write's own changes
     * are at or below it. One atomic load. */
    char seq[24];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)coffer_durable_seq(r->server->db));
    MHD_add_response_header(reply, "Coffer-Seq", seq);
}

enum MHD_Result http_send(request *r, encoded *response)
{
    if (!response->body)
        return MHD_NO; /* out of memory even for a problem: drop the connection */
    struct MHD_Response *reply =
        MHD_create_response_from_buffer(response->length, response->body, MHD_RESPMEM_MUST_FREE);
    if (!reply) {
        free(response->body);
        return MHD_NO;
    }
    MHD_add_response_header(reply, MHD_HTTP_HEADER_CONTENT_TYPE, response->content_type);
    http_add_headers(r, reply);
    /* Draining: let clients move on rather than reuse us. An oversized upload: its answer
     * ends the connection, which may still hold the rest of the body. A framing problem: what
     * follows on the connection cannot be trusted. */
    if (atomic_load(&r->server->draining) || r->close_connection ||
        response->code == COFFER_BODY_TOO_LARGE)
        MHD_add_response_header(reply, MHD_HTTP_HEADER_CONNECTION, "close");
    if (response->replayed)
        MHD_add_response_header(reply, "Idempotent-Replayed", "true");
    if (response->code == COFFER_OVERLOADED || response->code == COFFER_NO_LEADER ||
        response->code == COFFER_SEQ_NOT_APPLIED)
        MHD_add_response_header(reply, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (r->location)
        MHD_add_response_header(reply, MHD_HTTP_HEADER_LOCATION, r->location);
    if (response->code == COFFER_UNAUTHORIZED)
        MHD_add_response_header(reply, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"coffer\"");
    if (response->code == COFFER_METHOD_NOT_ALLOWED)
        MHD_add_response_header(reply, MHD_HTTP_HEADER_ALLOW, routes_methods(r->route));
    enum MHD_Result queued = MHD_queue_response(r->connection, response->status, reply);
    MHD_destroy_response(reply);
    http_count(r, response->status, response->code);
    return queued;
}

void http_count(request *r, unsigned status, int code)
{
    metrics_request(&r->server->metrics, r->route, code, status, http_now_ns() - r->started_ns);
    if (r->server->options->log_requests)
        fprintf(stderr, "coffer: request %s %s %u %s %.3f ms\n", r->request_id,
                routes_name(r->route), status, coffer_code_name(code),
                (double)(http_now_ns() - r->started_ns) / 1e6);
}

enum MHD_Result http_problem(request *r, int code, const char *field, const char *detail)
{
    encoded response;
    encode_problem(&response, code, field, detail);
    return http_send(r, &response);
}

const char *http_header(request *r, const char *name)
{
    return MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND, name);
}

const char *http_query(request *r, const char *name)
{
    return MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- engine round trips -------------------------------------------------------------------- */

static void engine_answered(coffer_job *job)
{
    request *r = job->context;
    r->state = STATE_ANSWERED;
    MHD_resume_connection(r->connection);
}

void http_suspend(request *r)
{
    r->job.on_done = engine_answered;
    r->job.context = r;
    r->state = STATE_WAITING;
    if (!r->engine_used) /* counted once, though a read may wait for its min_seq first */
        atomic_fetch_add(&r->server->suspended, 1);
    r->engine_used = true;
    MHD_suspend_connection(r->connection);
}

enum MHD_Result http_started(request *r, int code)
{
    if (code != COFFER_OK) {
        r->job.status = code;
        r->state = STATE_ANSWERED;
        MHD_resume_connection(r->connection);
    }
    return MHD_YES;
}

/* ---- requests ------------------------------------------------------------------------------ */

/* The request is complete (body received): act on it. */
static enum MHD_Result dispatch(request *r, const char *method)
{
    if (r->route == ROUTE_UNKNOWN)
        return http_problem(r, COFFER_ROUTE_NOT_FOUND, 0, 0);
    if (!routes_allows(r->route, method))
        return http_problem(r, COFFER_METHOD_NOT_ALLOWED, 0, 0);
    if (r->body_too_large)
        return http_problem(r, COFFER_BODY_TOO_LARGE, 0, "at most 4 MiB");
    if (r->body_overloaded)
        return http_problem(r, COFFER_OVERLOADED, 0, "too many request body bytes in flight");
    enum MHD_Result waiting;
    if (!cluster_read_may_start(r, &waiting))
        return waiting;
    return routes[r->route].start(r);
}

/* The client's X-Request-Id when it is short and printable, else a new one. */
static void assign_request_id(server *s, request *r)
{
    const char *given = http_header(r, "X-Request-Id");
    size_t length = given ? strlen(given) : 0;
    bool usable = length > 0 && length < sizeof r->request_id;
    for (size_t i = 0; usable && i < length; i++)
        usable = given[i] > ' ' && given[i] < 127;
    if (usable) {
        memcpy(r->request_id, given, length + 1);
        return;
    }
    snprintf(r->request_id, sizeof r->request_id, "%s-%llu", s->id_prefix,
             (unsigned long long)atomic_fetch_add(&s->request_counter, 1));
}

/* MHD_OPTION_URI_LOG_CALLBACK: the one moment the request target is seen as sent, before MHD
 * unescapes it and cuts the query off. The request's context starts here; on_access completes
 * it. */
static void *on_request_line(void *context, const char *uri, struct MHD_Connection *connection)
{
    (void)context;
    (void)connection;
    request *r = calloc(1, sizeof *r);
    if (r)
        head_target_seen(&r->target, uri);
    return r;
}

static void request_start(request *r, server *s, struct MHD_Connection *connection, const char *url,
                          const char *method)
{
    r->server = s;
    r->connection = connection;
    r->started_ns = http_now_ns();
    r->route = routes_find(url, &r->path_id);
    r->method = method;
    r->url = url;
    r->state = STATE_RECEIVING;
    assign_request_id(s, r);
    atomic_fetch_add(&s->active, 1);
}

/*
 * An oversized body is still read, and dropped, before its 413 is sent: a client that is
 * still sending (Python's http.client, Node's fetch) would otherwise meet a reset instead of
 * the answer. Reading is bounded: past UPLOAD_DRAIN_MAX bytes or UPLOAD_DRAIN_NS the
 * connection is closed without an answer, and a Content-Length beyond the bound is answered
 * at once.
 */
#define UPLOAD_DRAIN_MAX ((uint64_t)64 << 20)
#define UPLOAD_DRAIN_NS (10ULL * 1000000000ULL)

/* Appends upload data, keeping at most the limit (the rest is counted and dropped). False
 * when an oversized upload has been drained for too long: close the connection. */
static bool receive(request *r, const char *data, size_t size)
{
    bool takes_body = routes_take_body(r->route);
    r->upload_length += size;
    if (r->body_too_large || !takes_body) {
        r->body_too_large |= takes_body;
        return r->upload_length <= UPLOAD_DRAIN_MAX &&
               http_now_ns() - r->started_ns <= UPLOAD_DRAIN_NS;
    }
    if (r->body_length + size > DECODE_BODY_MAX) {
        r->body_too_large = true;
        guard_body_release(&r->server->guard, r->body_length); /* what it reserved so far */
        free(r->body); /* what was kept is not needed any more */
        r->body = 0;
        r->body_length = r->body_capacity = 0;
        return true;
    }
    if (r->body_overloaded || !guard_body_reserve(&r->server->guard, size,
                                                  r->server->options->body_bytes_in_flight_max)) {
        /* Answered 503; the rest of the body is read and dropped, within the drain's bounds
         * (a body that stays small could otherwise trickle on for ever). */
        r->body_overloaded = true;
        return r->upload_length <= UPLOAD_DRAIN_MAX &&
               http_now_ns() - r->started_ns <= UPLOAD_DRAIN_NS;
    }
    if (r->body_length + size + 1 > r->body_capacity) {
        /* Doubling: MHD hands a body over in pieces of a few KiB, and growing by each piece
         * would copy a 4 MiB body hundreds of times. */
        size_t capacity = r->body_capacity ? r->body_capacity : 4096;
        while (capacity < r->body_length + size + 1)
            capacity *= 2;
        char *grown = realloc(r->body, capacity);
        if (!grown) {
            guard_body_release(&r->server->guard, size);
            r->body_too_large = true;
            return true;
        }
        r->body = grown;
        r->body_capacity = capacity;
    }
    memcpy(r->body + r->body_length, data, size);
    r->body_length += size;
    r->body[r->body_length] = 0;
    return true;
}

/* On a request's first callback: true when its announced body is to be refused at once,
 * because it is over the drain bound, or because the client waits for our word before
 * sending it (Expect: 100-continue). A smaller announced excess is drained first. */
static bool refuse_body_at_once(request *r)
{
    const char *length = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long announced = length ? strtoull(length, 0, 10) : 0;
    if (announced <= DECODE_BODY_MAX || !routes_take_body(r->route))
        return false;
    r->body_too_large = true;
    const char *expect = http_header(r, MHD_HTTP_HEADER_EXPECT);
    return announced > UPLOAD_DRAIN_MAX || (expect && !strcasecmp(expect, "100-continue"));
}

static enum MHD_Result on_access(void *context, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **request_context)
{
    server *s = context;
    request *r = *request_context;
    if (!r)
        return MHD_NO; /* on_request_line could not allocate it */
    if (!r->server) {
        request_start(r, s, connection, url, method);
        deadlines_headers_received(connection);
        const char *field, *detail;
        int refused = guard_check_request(r, version, &field, &detail);
        if (refused != COFFER_OK)
            return http_problem(r, refused, field, detail);
        if (refuse_body_at_once(r))
            return http_problem(r, COFFER_BODY_TOO_LARGE, 0, "at most 4 MiB");
        return MHD_YES;
    }
    if (*upload_data_size) {
        bool keep = receive(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return keep ? MHD_YES : MHD_NO;
    }
    if (r->state == STATE_ANSWERED) /* a read that waited for its seq starts now */
        return r->seq_waiting ? dispatch(r, method) : routes[r->route].answer(r);
    if (r->state != STATE_RECEIVING)
        return MHD_YES;
    deadlines_body_received(connection);
    /* Draining: new requests on open connections are refused; in-flight ones finish. */
    if (atomic_load(&s->draining) && r->route != ROUTE_HEALTH)
        return http_problem(r, COFFER_SHUTTING_DOWN, 0, "the server is stopping");
    return dispatch(r, method);
}

static void on_completed(void *context, struct MHD_Connection *connection, void **request_context,
                         enum MHD_RequestTerminationCode reason)
{
    server *s = context;
    deadlines_answered(connection);
    framing_socket_answered(connection);
    request *r = *request_context;
    *request_context = 0;
    if (!r || !r->server) { /* MHD ended it before its head was whole */
        free(r);
        return;
    }
    feed_request_done(r, reason);
    write_completed(r, reason);
    decode_batch_free(&r->batch);
    free(r->results);
    free(r->history);
    free(r->holds);
    guard_body_release(&s->guard, r->body_length);
    guard_request_done(r);
    free(r->body);
    free(r->path_id);
    free(r->location);
    if (r->engine_used)
        atomic_fetch_sub(&s->suspended, 1);
    free(r);
    atomic_fetch_sub(&s->active, 1);
}

/* ---- running ------------------------------------------------------------------------------- */

void server_block_signals(sigset_t *signals)
{
    sigemptyset(signals);
    sigaddset(signals, SIGTERM);
    sigaddset(signals, SIGINT);
    sigaddset(signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, signals, 0);
}

void server_options_init(server_options *options)
{
    memset(options, 0, sizeof *options);
    options->host = "127.0.0.1";
    options->port = 8080;
    options->listen_fd = -1;
    options->data_dir = "./coffer-data";
    options->threads = 1; /* on 2 cores the writer and the log thread need the other one */
    options->max_connections = 1024;
    options->timeout_seconds = 30;
    options->header_timeout_seconds = 30;
    options->body_timeout_seconds = 60;
    options->queue_events_max = 64 * 1024;
    options->snapshot_every_events = 10 * 1000 * 1000;
    options->snapshot_every_seconds = 3600;
    options->max_connections_per_client = 256;
    options->body_bytes_in_flight_max = (size_t)256 << 20;
    options->sse_keepalive_ms = 15000;
    options->sse_stall_seconds = 60;
    webhooks_options defaults;
    webhooks_options_init(&defaults);
    options->webhook_timeout_ms = defaults.timeout_ms;
    options->webhook_max_failures = defaults.max_failures;
}

static bool listen_address(const server_options *options, struct sockaddr_in *address)
{
    memset(address, 0, sizeof *address);
    address->sin_family = AF_INET;
    address->sin_port = htons(options->port);
    const char *host = !strcmp(options->host, "localhost") ? "127.0.0.1" : options->host;
    return inet_pton(AF_INET, host, &address->sin_addr) == 1;
}

static int open_engine(const server_options *options, coffer **db)
{
    coffer_options engine_options;
    coffer_options_init(&engine_options);
    engine_options.fsync_never = options->fsync_never;
    engine_options.queue_events_max = options->queue_events_max;
    engine_options.snapshot_every_events = options->snapshot_every_events;
    engine_options.snapshot_every_seconds = options->snapshot_every_seconds;
    engine_options.accept_data_loss = options->accept_data_loss;
    engine_options.memory_bytes_max = options->memory_bytes_max;
    engine_options.disk_reserve_bytes = options->disk_reserve_bytes;
    engine_options.index_on = options->index_on;
    engine_options.log_location = options->log_location;
    engine_options.log_name = options->advertise;
    int code = coffer_open(options->data_dir, &engine_options, db);
    if (code != COFFER_OK)
        fprintf(stderr, "coffer: cannot open %s (%s; the lines above say why)\n", options->data_dir,
                coffer_code_name(code));
    return code;
}

/* DATA_DIR/webhooks.json, and delivery started; false (after saying why) when it is damaged. */
static bool open_webhooks(server *s)
{
    webhooks_options options;
    webhooks_options_init(&options);
    options.timeout_ms = s->options->webhook_timeout_ms;
    options.max_failures = s->options->webhook_max_failures;
    char error[512];
    if (!webhooks_open(s->db, s->options->data_dir, &options, &s->webhooks, error, sizeof error)) {
        fprintf(stderr, "coffer: %s\n", error);
        return false;
    }
    webhooks_start(s->webhooks);
    return true;
}

/* MHD_OPTION_NOTIFY_CONNECTION: every connection's bytes are scanned for framing from its
 * first (a TLS connection's once decrypted), and every connection has receive deadlines. */
static void on_connection(void *context, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    server *s = context;
    framing_socket_notify(connection, code, s->options->tls_key_pem != NULL);
    deadlines_notify(s->deadlines, connection, socket_context, code);
}

static struct MHD_Daemon *start_daemon(server *s, const struct sockaddr_in *address)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    /* One network thread is the daemon's own polling thread; a pool option is only given for
     * more (MHD warns about a pool of one). */
    /* A socket bound by the caller (coffer serve binds before opening the data) is used as
     * is; otherwise the daemon binds `address`. */
    int listen_fd = s->options->listen_fd;
    struct MHD_OptionItem items[5];
    size_t count = 0;
    items[count++] = listen_fd >= 0
                         ? (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL}
                         : (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, (void *)address};
    if (s->options->threads > 1)
        items[count++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                                 (intptr_t)s->options->threads, NULL};
    /* TLS is GnuTLS inside libmicrohttpd; the key and certificate go in as PEM text. */
    if (s->options->tls_certificate_pem) {
        flags |= MHD_USE_TLS;
        items[count++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)s->options->tls_key_pem};
        items[count++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                                 (void *)s->options->tls_certificate_pem};
    }
    items[count] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return MHD_start_daemon(
        flags, s->options->port, 0, 0, on_access, s, MHD_OPTION_CONNECTION_LIMIT,
        s->options->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, s->options->timeout_seconds,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->options->max_connections_per_client,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEAD_CONNECTION_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, NULL, MHD_OPTION_UNESCAPE_CALLBACK,
        guard_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024,
        MHD_OPTION_ARRAY, items, MHD_OPTION_END);
}

/* Stop accepting, refuse new requests on open connections (503 shutting_down), wait until
 * every request handed to the engine has been answered and its response completed, then stop
 * the daemon. MHD must not be stopped with a suspended connection, and none can remain: the
 * engine answers everything it was given, and nothing new reaches it. */
static void drain(server *s)
{
    atomic_store(&s->draining, true);
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    feed_hub_drain(&s->feed);
    while (atomic_load(&s->suspended) > 0)
        usleep(5000);
    MHD_stop_daemon(s->daemon);
    feed_hub_stop(&s->feed);
}

int server_run(const server_options *options)
{
    /* Signals are taken by sigwait in this thread only: blocked before any thread starts
     * (main() blocks them even earlier, so one that comes during start-up waits too). */
    sigset_t signals;
    server_block_signals(&signals);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in address;
    if (!listen_address(options, &address)) {
        fprintf(stderr, "coffer: --listen needs an IPv4 address and a port, like 127.0.0.1:8080\n");
        return 2;
    }
    static server s;
    s.options = options;
    snprintf(s.id_prefix, sizeof s.id_prefix, "%x", (unsigned)(http_now_ns() ^ (uint64_t)getpid()));
    metrics_init(&s.metrics);
    char error[512];
    if (!guard_open(&s.guard, options->tokens_path, error, sizeof error)) {
        fprintf(stderr, "coffer: --tokens: %s\n", error);
        return 1;
    }
    if (!framing_sockets_start()) {
        fprintf(stderr, "coffer: out of memory for the table of scanned connections\n");
        return 1;
    }
    s.deadlines =
        deadlines_start(options->header_timeout_seconds * 1000000000ull,
                        options->body_timeout_seconds * 1000000000ull, &s.metrics.deadline_closed);
    if (!s.deadlines) {
        fprintf(stderr, "coffer: cannot start the thread that enforces receive deadlines\n");
        return 1;
    }
    if (open_engine(options, &s.db) != COFFER_OK) {
        deadlines_stop(s.deadlines);
        return 1;
    }
    if (!open_webhooks(&s)) {
        coffer_close(s.db);
        deadlines_stop(s.deadlines);
        return 1;
    }
    if (!feed_hub_start(&s.feed, &s)) {
        fprintf(stderr, "coffer: cannot start the change feed's thread\n");
        webhooks_close(s.webhooks);
        coffer_close(s.db);
        deadlines_stop(s.deadlines);
        return 1;
    }
    s.bulk = bulk_open(); /* without it (no threads), large bodies are decoded where they arrive */
    s.daemon = start_daemon(&s, &address);
    if (!s.daemon) {
        bulk_close(s.bulk);
        feed_hub_stop(&s.feed);
        if (options->tls_certificate_pem)
            fprintf(stderr,
                    "coffer: cannot serve HTTPS on %s:%u: --tls-cert or --tls-key was "
                    "refused (the lines above say why)\n",
                    options->host, options->port);
        else
            fprintf(stderr, "coffer: cannot listen on %s:%u: %s\n", options->host, options->port,
                    strerror(errno));
        webhooks_close(s.webhooks);
        coffer_close(s.db);
        deadlines_stop(s.deadlines);
        return 1;
    }
    fprintf(stderr, "coffer: serving on %s://%s:%u with data in %s%s%s\n",
            options->tls_certificate_pem ? "https" : "http", options->host, options->port,
            options->data_dir, options->log_location ? " and the log in PostgreSQL" : "",
            options->fsync_never ? " (fsync never: NOT DURABLE)" : "");
    int received = 0;
    while (sigwait(&signals, &received) == 0 && received == SIGHUP)
        guard_reload(&s.guard);
    fprintf(stderr, "coffer: %s received: draining\n", received == SIGTERM ? "SIGTERM" : "SIGINT");
    drain(&s);
    bulk_close(s.bulk);         /* after the drain: every request it was handed is answered */
    webhooks_close(s.webhooks); /* its threads read the feed: before the engine closes */
    deadlines_stop(s.deadlines);
    coffer_close(s.db);
    guard_close(&s.guard);
    fprintf(stderr, "coffer: stopped cleanly\n");
    return 0;
}
