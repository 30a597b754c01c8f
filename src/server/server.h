/*
 * server.h — `coffer serve`: the HTTP/JSON API of docs/api.md on libmicrohttpd. Network threads
 * parse and validate; the engine's writer applies; a request is suspended (no thread blocked)
 * until its batch is durable, then resumed and answered.
 */
#ifndef COFFER_SERVER_H
#define COFFER_SERVER_H

#include <stdbool.h>
#include <signal.h>
#include <stdint.h>

#include "coffer.h"

typedef struct server_options {
    const char *host; /* listen address, an IPv4 literal or "localhost" */
    uint16_t port;
    int listen_fd; /* a socket already bound and listening (host and port name it), or -1 */
    const char *data_dir;
    bool fsync_never;
    unsigned threads; /* network threads */
    unsigned max_connections;
    unsigned timeout_seconds;        /* idle or slow connections are closed after this */
    unsigned header_timeout_seconds; /* a request's headers must arrive within this */
    unsigned body_timeout_seconds;   /* and its body within this of its headers */
    uint32_t queue_events_max;
    uint64_t snapshot_every_events;
    uint64_t snapshot_every_seconds;
    bool log_requests;         /* one stderr line per request */
    bool accept_data_loss;     /* open even when acknowledged records are missing (recorded) */
    uint64_t memory_bytes_max; /* --memory-max: the engine's memory budget; 0: its default */
    /* --disk-reserve: free space kept on the data directory's filesystem; 0: the engine's
     * default, COFFER_DISK_RESERVE_NONE: none. */
    uint64_t disk_reserve_bytes;
    bool index_on;            /* keep the on-disk index (coffer serve --index on) */
    const char *log_location; /* --log: a PostgreSQL conninfo; NULL: segments in data_dir */
    const char *advertise;    /* --advertise: this instance's URL, its name in the log */
    /* Security (guard.c). */
    const char *tokens_path;             /* --tokens: NULL, no authentication */
    const char *allow_origins;           /* comma-separated Origin values a browser may send */
    const char *allow_hosts;             /* comma-separated Host names besides our address */
    bool metrics_open;                   /* GET /metrics without a token */
    unsigned max_connections_per_client; /* per client address */
    size_t body_bytes_in_flight_max;     /* request body bytes held across all connections */
    /* Event streams of GET /v1/events: a keep-alive comment after this long without a change,
     * and a stream whose client takes nothing for this long is cut off. */
    unsigned sse_keepalive_ms;
    unsigned sse_stall_seconds;
    /* TLS: both PEM texts (read from --tls-cert and --tls-key), or both NULL for plain HTTP. */
    const char *tls_certificate_pem;
    const char *tls_key_pem;
    /* Webhooks (webhooks.h). */
    uint64_t webhook_timeout_ms;   /* per delivery attempt */
    uint32_t webhook_max_failures; /* consecutive failures before a webhook is marked failing */
} server_options;

void server_options_init(server_options *options);

/* Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it starts later), so
 * that server_run takes them with sigwait. */
void server_block_signals(sigset_t *signals);

/* Opens the engine, serves until SIGTERM or SIGINT (SIGHUP reads --tokens again), drains, closes
 * (snapshot) and returns the process exit status: 0 after a clean stop. */
int server_run(const server_options *options);

#endif
