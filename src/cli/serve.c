/*
 * serve.c — `coffer serve`: flags to server options, the listening socket bound first (so a
 * busy port fails before the data directory is opened), then the server runs until a signal.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "server/parse.h"
#include "server/server.h"

#define SERVE_LISTEN_BACKLOG 1024
#define SERVE_PEM_BYTES_MAX ((size_t)1 << 20)

enum {
    SERVE_LISTEN,
    SERVE_DATA,
    SERVE_FSYNC,
    SERVE_THREADS,
    SERVE_MAX_CONNECTIONS,
    SERVE_TIMEOUT,
    SERVE_HEADER_TIMEOUT,
    SERVE_BODY_TIMEOUT,
    SERVE_QUEUE_EVENTS,
    SERVE_SNAPSHOT_EVERY,
    SERVE_SNAPSHOT_SECONDS,
    SERVE_LOG_REQUESTS,
    SERVE_ACCEPT_DATA_LOSS,
    SERVE_TOKENS,
    SERVE_INSECURE_NO_AUTH,
    SERVE_METRICS_OPEN,
    SERVE_ALLOW_ORIGIN,
    SERVE_ALLOW_HOST,
    SERVE_MAX_CONNECTIONS_PER_CLIENT,
    SERVE_MAX_BODY_BYTES_IN_FLIGHT,
    SERVE_TLS_CERT,
    SERVE_TLS_KEY,
    SERVE_SSE_KEEPALIVE_MS,
    SERVE_SSE_STALL_SECONDS,
    SERVE_WEBHOOK_TIMEOUT,
    SERVE_WEBHOOK_MAX_FAILURES,
    SERVE_MEMORY_MAX,
    SERVE_INDEX,
    SERVE_DISK_RESERVE,
    SERVE_LOG_LOCATION,
    SERVE_ADVERTISE,
};

static const cli_option serve_options[] = {
    {SERVE_LISTEN, "--listen", "HOST:PORT",
     "address to serve on (default 127.0.0.1:8080); port 0 picks a\nfree one"},
    {SERVE_DATA, "--data", "DIR", "data directory (default ./coffer-data; created if missing)"},
    {SERVE_LOG_LOCATION, "--log", "postgresql://CONNINFO",
     "keep the log in this PostgreSQL database (any libpq URI or\nconninfo; the tables are "
     "created on first start) and lead it, or\nfollow the instance that leads it; DIR then "
     "keeps snapshots\nand the index only (check them with coffer verify DIR --log "
     "CONNINFO)"},
    {SERVE_ADVERTISE, "--advertise", "URL",
     "this instance's URL, written in the log as its leader's name\n(with --log)"},
    {SERVE_FSYNC, "--fsync", "always|never",
     "sync the log before answering (default always); 'never' is\nNOT DURABLE: for tests and "
     "benchmarks only"},
    {SERVE_THREADS, "--threads", "N",
     "network threads, 1-64 (default 1: on 2 cores the writer and\nthe log thread need the "
     "other; raise on bigger machines)"},
    {SERVE_MAX_CONNECTIONS, "--max-connections", "N", "connections at once (default 1024)"},
    {SERVE_TIMEOUT, "--timeout", "SECONDS",
     "close idle or slow connections after this (default 30)"},
    {SERVE_HEADER_TIMEOUT, "--header-timeout", "SECONDS",
     "a request's headers must arrive within this of the connection\nbeing ready for them "
     "(accepted, or the last answer sent;\ndefault 30), however slowly they trickle"},
    {SERVE_BODY_TIMEOUT, "--body-timeout", "SECONDS",
     "a request's body must arrive within this of its headers\n(default 60)"},
    {SERVE_QUEUE_EVENTS, "--queue-events", "N",
     "events waiting for the writer before 503 overloaded\n(default 65536)"},
    {SERVE_MEMORY_MAX, "--memory-max", "SIZE",
     "memory budget of the ledger's tables, with a K, M, G or T suffix\n(e.g. 48M, 2G; 16M to 4T; "
     "default half of the machine's memory).\nWhen reached, writes get 503 capacity_exceeded "
     "and reads go\non; see docs/operations.md"},
    {SERVE_DISK_RESERVE, "--disk-reserve", "SIZE",
     "free space to keep on DIR's filesystem, with a K, M, G or T\nsuffix (default 256M, or a "
     "twentieth of a smaller filesystem;\n0: none). Below it, writes get 503 capacity_exceeded "
     "and reads\ngo on; they are taken again once there is room"},
    {SERVE_SNAPSHOT_EVERY, "--snapshot-every", "N",
     "snapshot after N recorded events (default 10000000; 0: off)"},
    {SERVE_SNAPSHOT_SECONDS, "--snapshot-seconds", "S",
     "snapshot every S seconds when anything was recorded (default\n3600; 0: off). One is always "
     "taken at shutdown."},
    {SERVE_LOG_REQUESTS, "--log-requests", NULL, "one stderr line per request"},
    {SERVE_ACCEPT_DATA_LOSS, "--accept-data-loss", NULL,
     "start even when acknowledged records are missing from the log\n(a segment deleted or cut); "
     "the loss is logged and recorded in\nDIR/data-loss.log. Without it such a start is refused."},
    {SERVE_TOKENS, "--tokens", "FILE",
     "require bearer tokens from this file (coffer token create);\nSIGHUP reads it again"},
    {SERVE_INSECURE_NO_AUTH, "--insecure-no-auth", NULL,
     "allow a non-loopback --listen without --tokens: anyone who\nreaches the port can move money"},
    {SERVE_METRICS_OPEN, "--metrics-open", NULL, "serve GET /metrics without a token"},
    {SERVE_ALLOW_ORIGIN, "--allow-origin", "ORIGIN,...",
     "browser origins allowed (default none: a request with an\nOrigin header is refused)"},
    {SERVE_ALLOW_HOST, "--allow-host", "NAME,...",
     "Host names allowed besides the listen address, localhost and\n127.0.0.1 (checked without "
     "--tokens)"},
    {SERVE_MAX_CONNECTIONS_PER_CLIENT, "--max-connections-per-client", "N",
     "connections at once from one client address (default 256)"},
    {SERVE_MAX_BODY_BYTES_IN_FLIGHT, "--max-body-bytes-in-flight", "BYTES",
     "request body bytes held across all connections before 503\noverloaded (default 268435456)"},
    {SERVE_TLS_CERT, "--tls-cert", "FILE",
     "serve HTTPS with this PEM certificate (chain); needs --tls-key"},
    {SERVE_TLS_KEY, "--tls-key", "FILE", "the PEM private key of --tls-cert"},
    {SERVE_SSE_KEEPALIVE_MS, "--sse-keepalive-ms", "MS",
     "event streams (GET /v1/events): a keep-alive comment after\nthis long without a change "
     "(default 15000)"},
    {SERVE_SSE_STALL_SECONDS, "--sse-stall-seconds", "S",
     "cut off an event stream whose client reads nothing for this\nlong (default 60; more than "
     "the keep-alive)"},
    {SERVE_WEBHOOK_TIMEOUT, "--webhook-timeout-ms", "MS",
     "a webhook delivery attempt (connect and exchange) fails after\nthis (default 10000)"},
    {SERVE_WEBHOOK_MAX_FAILURES, "--webhook-max-failures", "N",
     "consecutive failed attempts before a webhook is marked failing\n(default 10; POST "
     "/v1/webhooks/{id}/enable resumes it)"},
    {SERVE_INDEX, "--index", "on|off",
     "keep the on-disk index DIR/index (default on): every transfer\nand "
     "history entry, derived from the log behind the\nwriter. Memory evicts what it holds when "
     "it nears --memory-max;\nwith it off, a full budget refuses writes (capacity_exceeded)"},
};

static const cli_spec serve_spec = {
    .name = "serve",
    .synopsis = "[options]",
    .description =
        "Serves the HTTP/JSON API (docs/api.md). The address is bound before the data directory\n"
        "is opened: a busy port fails at once and leaves the directory alone. Once bound, the\n"
        "server's URL is printed on stdout as one line (http://HOST:PORT, https:// with\n"
        "--tls-cert, with the port picked for :0); connections wait in the backlog until recovery "
        "is done, and GET /readyz\n"
        "tells when it is.\n",
    .options = serve_options,
    .option_count = sizeof serve_options / sizeof *serve_options,
    .epilog = "SIGTERM or SIGINT: stop accepting, answer what is in flight, snapshot, exit "
              "0.\nSIGHUP: read the --tokens file again.\n",
};

/* HOST:PORT with an IPv4 literal or "localhost"; port 0 asks the kernel for a free one. */
static bool parse_listen(const char *text, server_options *options, struct sockaddr_in *address)
{
    static char host[64];
    const char *colon = strrchr(text, ':');
    uint64_t port;
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof host ||
        !cli_parse_u64(colon + 1, 0, 65535, &port))
        return false;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    *address = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    const char *literal = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, literal, &address->sin_addr) != 1)
        return false;
    options->host = host;
    options->port = (uint16_t)port;
    return true;
}

/* Binds and listens; sets the port the kernel picked. -1 after saying why. */
static int listen_socket(const struct sockaddr_in *address, server_options *options)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    struct sockaddr_in bound;
    socklen_t length = sizeof bound;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, (const struct sockaddr *)address, sizeof *address) != 0 ||
        listen(fd, SERVE_LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &length) != 0) {
        int error = errno;
        fprintf(stderr, "coffer: cannot listen on %s:%u: %s%s; %s was not opened\n", options->host,
                options->port, strerror(error),
                error == EADDRINUSE ? " (another server there? pick another --listen)" : "",
                options->data_dir);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    options->port = ntohs(bound.sin_port);
    return fd;
}

/* The whole of a PEM file named by `flag`, which must hold `marker` ("CERTIFICATE",
 * "PRIVATE KEY"); NULL after the usage line naming the file. Kept for the life of the server. */
static char *read_pem(const char *flag, const char *path, const char *marker)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        cli_usage(&serve_spec, "%s %s: %s", flag, path, strerror(errno));
        return NULL;
    }
    char *text = malloc(SERVE_PEM_BYTES_MAX + 1);
    size_t length = text ? fread(text, 1, SERVE_PEM_BYTES_MAX + 1, file) : 0;
    bool failed = ferror(file) != 0;
    fclose(file);
    const char *problem = !text                          ? "out of memory"
                          : failed                       ? "cannot be read"
                          : length > SERVE_PEM_BYTES_MAX ? "is larger than 1 MiB"
                                                         : NULL;
    if (!problem) {
        text[length] = 0;
        if (!strstr(text, "-----BEGIN ") || !strstr(text, marker))
            problem = !strcmp(marker, "CERTIFICATE") ? "holds no PEM certificate"
                                                     : "holds no PEM private key";
    }
    if (problem) {
        cli_usage(&serve_spec, "%s %s: %s", flag, path, problem);
        free(text);
        return NULL;
    }
    return text;
}

/* --tls-cert and --tls-key come together; both files are read now, so that a wrong path is
 * told before anything is bound or opened. */
static bool tls_values(const cli_parsed *parsed, server_options *options)
{
    const char *certificate = parsed->values[SERVE_TLS_CERT], *key = parsed->values[SERVE_TLS_KEY];
    if (!certificate && !key)
        return true;
    if (!certificate || !key) {
        cli_usage(&serve_spec, "%s needs %s too", certificate ? "--tls-cert" : "--tls-key",
                  certificate ? "--tls-key" : "--tls-cert");
        return false;
    }
    options->tls_certificate_pem = read_pem("--tls-cert", certificate, "CERTIFICATE");
    options->tls_key_pem =
        options->tls_certificate_pem ? read_pem("--tls-key", key, "PRIVATE KEY") : NULL;
    return options->tls_key_pem != NULL;
}

/* Frees what tls_values read; the key's bytes are wiped first. */
static void tls_free(server_options *options)
{
    char *key = (char *)options->tls_key_pem, *certificate = (char *)options->tls_certificate_pem;
    if (key)
        explicit_bzero(key, strlen(key));
    free(key);
    free(certificate);
    options->tls_key_pem = options->tls_certificate_pem = NULL;
}

/* Without tokens anyone who reaches the port can move money: only loopback, unless told. */
static bool security_values(const cli_parsed *parsed, server_options *options,
                            const struct sockaddr_in *address)
{
    uint64_t per_client = options->max_connections_per_client,
             in_flight = options->body_bytes_in_flight_max;
    if (!cli_value_u64(&serve_spec, parsed, SERVE_MAX_CONNECTIONS_PER_CLIENT, 1, 100000,
                       &per_client) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_MAX_BODY_BYTES_IN_FLIGHT, 4096,
                       UINT32_MAX * 16ULL, &in_flight))
        return false;
    options->max_connections_per_client = (unsigned)per_client;
    options->body_bytes_in_flight_max = (size_t)in_flight;
    options->tokens_path = parsed->values[SERVE_TOKENS];
    options->allow_origins = parsed->values[SERVE_ALLOW_ORIGIN];
    options->allow_hosts = parsed->values[SERVE_ALLOW_HOST];
    options->metrics_open = parsed->values[SERVE_METRICS_OPEN] != NULL;
    bool loopback = (ntohl(address->sin_addr.s_addr) >> 24) == 127;
    if (!options->tokens_path && !loopback && !parsed->values[SERVE_INSECURE_NO_AUTH]) {
        cli_usage(&serve_spec,
                  "--listen %s:%u is not loopback: give --tokens FILE (or "
                  "--insecure-no-auth to serve anyone without tokens)",
                  options->host, options->port);
        return false;
    }
    return true;
}

/* The event stream bounds: a keep-alive must come well within the stall bound, or an idle
 * stream would look stalled. */
static bool stream_values(const cli_parsed *parsed, server_options *options)
{
    uint64_t keep_alive_ms = options->sse_keepalive_ms, stall_seconds = options->sse_stall_seconds;
    if (!cli_value_u64(&serve_spec, parsed, SERVE_SSE_KEEPALIVE_MS, 10, 3600000, &keep_alive_ms) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_SSE_STALL_SECONDS, 1, 3600, &stall_seconds))
        return false;
    if (keep_alive_ms >= stall_seconds * 1000) {
        cli_usage(&serve_spec, "--sse-keepalive-ms must be less than --sse-stall-seconds");
        return false;
    }
    options->sse_keepalive_ms = (unsigned)keep_alive_ms;
    options->sse_stall_seconds = (unsigned)stall_seconds;
    return true;
}

/* --memory-max SIZE, within the engine's bounds. */
static bool memory_value(const cli_parsed *parsed, server_options *options)
{
    const char *text = parsed->values[SERVE_MEMORY_MAX];
    if (!text || parse_size(text, COFFER_MEMORY_BYTES_MIN, COFFER_MEMORY_BYTES_MAX,
                            &options->memory_bytes_max))
        return true;
    cli_usage(&serve_spec,
              "--memory-max needs a size from 16M to 4T, digits with an optional K, M, G or T "
              "(like 48M or 2G), not '%s'",
              text);
    return false;
}

/* --disk-reserve SIZE; 0 keeps none. */
static bool disk_value(const cli_parsed *parsed, server_options *options)
{
    const char *text = parsed->values[SERVE_DISK_RESERVE];
    uint64_t bytes = 0;
    if (!text)
        return true;
    if (!parse_size(text, 0, COFFER_DISK_RESERVE_NONE - 1, &bytes)) {
        cli_usage(&serve_spec,
                  "--disk-reserve needs a size, digits with an optional K, M, G or T (like 256M "
                  "or 2G; 0: none), not '%s'",
                  text);
        return false;
    }
    options->disk_reserve_bytes = bytes ? bytes : COFFER_DISK_RESERVE_NONE;
    return true;
}

/* The parsed values into server options; false after the usage line. */
static bool serve_values(const cli_parsed *parsed, server_options *options,
                         struct sockaddr_in *address)
{
    const char *listen =
        parsed->values[SERVE_LISTEN] ? parsed->values[SERVE_LISTEN] : "127.0.0.1:8080";
    if (!parse_listen(listen, options, address)) {
        cli_usage(&serve_spec,
                  "--listen needs an IPv4 address and a port, like 127.0.0.1:8080, "
                  "not '%s'",
                  listen);
        return false;
    }
    if (parsed->values[SERVE_DATA] && !parsed->values[SERVE_DATA][0]) {
        cli_usage(&serve_spec, "--data needs a directory");
        return false;
    }
    if (parsed->values[SERVE_DATA])
        options->data_dir = parsed->values[SERVE_DATA];
    static const char *const fsync_modes[] = {"always", "never", NULL};
    static const char *const index_modes[] = {"off", "on", NULL};
    /* The index is what lets memory evict. */
    int fsync_mode = 0, index_mode = 1;
    uint64_t threads = options->threads, connections = options->max_connections,
             timeout = options->timeout_seconds, queue = options->queue_events_max,
             header_timeout = options->header_timeout_seconds,
             body_timeout = options->body_timeout_seconds,
             webhook_failures = options->webhook_max_failures;
    if (!cli_value_choice(&serve_spec, parsed, SERVE_FSYNC, fsync_modes, &fsync_mode) ||
        !cli_value_choice(&serve_spec, parsed, SERVE_INDEX, index_modes, &index_mode) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_THREADS, 1, 64, &threads) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_MAX_CONNECTIONS, 1, 100000, &connections) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_TIMEOUT, 1, 3600, &timeout) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_HEADER_TIMEOUT, 1, 3600, &header_timeout) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_BODY_TIMEOUT, 1, 3600, &body_timeout) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_QUEUE_EVENTS, 8190, 100000000, &queue) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_SNAPSHOT_EVERY, 0, UINT64_MAX,
                       &options->snapshot_every_events) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_SNAPSHOT_SECONDS, 0, 100000000,
                       &options->snapshot_every_seconds) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_WEBHOOK_TIMEOUT, 10, 600000,
                       &options->webhook_timeout_ms) ||
        !cli_value_u64(&serve_spec, parsed, SERVE_WEBHOOK_MAX_FAILURES, 1, 1000000,
                       &webhook_failures))
        return false;
    options->webhook_max_failures = (uint32_t)webhook_failures;
    options->fsync_never = fsync_mode == 1;
    options->index_on = index_mode == 1;
    options->threads = (unsigned)threads;
    options->max_connections = (unsigned)connections;
    options->timeout_seconds = (unsigned)timeout;
    options->header_timeout_seconds = (unsigned)header_timeout;
    options->body_timeout_seconds = (unsigned)body_timeout;
    options->queue_events_max = (uint32_t)queue;
    options->log_requests = parsed->values[SERVE_LOG_REQUESTS] != NULL;
    options->log_location = parsed->values[SERVE_LOG_LOCATION];
    options->advertise = parsed->values[SERVE_ADVERTISE];
    if (options->log_location && !options->log_location[0]) {
        cli_usage(&serve_spec, "--log needs a PostgreSQL conninfo, like postgresql://HOST/DB");
        return false;
    }
    if (options->advertise && !options->log_location) {
        cli_usage(&serve_spec, "--advertise names this instance in a PostgreSQL log: give --log");
        return false;
    }
    options->accept_data_loss = parsed->values[SERVE_ACCEPT_DATA_LOSS] != NULL;
    return memory_value(parsed, options) && disk_value(parsed, options) &&
           stream_values(parsed, options) && tls_values(parsed, options) &&
           security_values(parsed, options, address);
}

int cli_serve(int argc, char **argv, const cli_globals *globals)
{
    (void)globals;
    sigset_t signals;
    server_block_signals(&signals); /* a SIGTERM during start-up is taken once serving */
    cli_parsed parsed;
    int status = cli_parse(&serve_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    server_options options;
    server_options_init(&options);
    struct sockaddr_in address;
    if (!serve_values(&parsed, &options, &address)) {
        tls_free(&options);
        return CLI_EXIT_USAGE;
    }
    options.listen_fd = listen_socket(&address, &options);
    if (options.listen_fd < 0) {
        tls_free(&options);
        return CLI_EXIT_ERROR;
    }
    printf("%s://%s:%u\n", options.tls_certificate_pem ? "https" : "http", options.host,
           options.port);
    fflush(stdout);
    status = server_run(&options);
    tls_free(&options);
    return status;
}
