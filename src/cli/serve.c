/*
 * serve.c — `coffer serve`: flags to server options, then the server runs until a signal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "server/server.h"

static const char serve_usage[] =
    "usage: coffer serve [options]\n"
    "\n"
    "  --listen HOST:PORT      address to serve on (default 127.0.0.1:8080)\n"
    "  --data DIR              data directory (default ./coffer-data; created if missing)\n"
    "  --fsync always|never    sync the log before answering (default always); 'never' is\n"
    "                          NOT DURABLE: for tests and benchmarks only\n"
    "  --threads N             network threads (default 1: on 2 cores the writer and the\n"
    "                          log thread need the other; raise on bigger machines)\n"
    "  --max-connections N     connections at once (default 1024)\n"
    "  --timeout SECONDS       close idle or slow connections after this (default 30)\n"
    "  --queue-events N        events waiting for the writer before 503 overloaded\n"
    "                          (default 65536)\n"
    "  --snapshot-every N      snapshot after N recorded events (default 10000000; 0: off)\n"
    "  --snapshot-seconds S    snapshot every S seconds when anything was recorded (default\n"
    "                          3600; 0: off). One is always taken at shutdown.\n"
    "  --log-requests          one stderr line per request\n"
    "  --accept-data-loss      start even when acknowledged records are missing from the log\n"
    "                          (a segment deleted or cut); the loss is logged and recorded in\n"
    "                          DIR/data-loss.log. Without it such a start is refused.\n"
    "\n"
    "SIGTERM or SIGINT: stop accepting, answer what is in flight, snapshot, exit 0.\n";

static bool parse_listen(const char *text, server_options *options)
{
    static char host[64];
    const char *colon = text ? strrchr(text, ':') : 0;
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof host)
        return false;
    uint64_t port;
    if (!cli_parse_u64(colon + 1, 1, 65535, &port))
        return false;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    options->host = host;
    options->port = (uint16_t)port;
    return true;
}

static bool parse_count(const char *text, uint64_t min, uint64_t max, unsigned *out)
{
    uint64_t value;
    if (!cli_parse_u64(text, min, max, &value))
        return false;
    *out = (unsigned)value;
    return true;
}

int cli_serve(int argc, char **argv)
{
    sigset_t signals;
    server_block_signals(&signals); /* a SIGTERM during start-up is taken once serving */
    server_options options;
    server_options_init(&options);
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : 0;
        bool ok = true;
        uint64_t number;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            fputs(serve_usage, stdout);
            return 0;
        } else if (!strcmp(flag, "--log-requests")) {
            options.log_requests = true;
            continue;
        } else if (!strcmp(flag, "--accept-data-loss")) {
            options.accept_data_loss = true;
            continue;
        } else if (!strcmp(flag, "--listen")) {
            ok = parse_listen(value, &options);
        } else if (!strcmp(flag, "--data")) {
            ok = value && *value;
            options.data_dir = value;
        } else if (!strcmp(flag, "--fsync")) {
            ok = value && (!strcmp(value, "always") || !strcmp(value, "never"));
            options.fsync_never = ok && !strcmp(value, "never");
        } else if (!strcmp(flag, "--threads")) {
            ok = parse_count(value, 1, 64, &options.threads);
        } else if (!strcmp(flag, "--max-connections")) {
            ok = parse_count(value, 1, 100000, &options.max_connections);
        } else if (!strcmp(flag, "--timeout")) {
            ok = parse_count(value, 1, 3600, &options.timeout_seconds);
        } else if (!strcmp(flag, "--queue-events")) {
            ok = cli_parse_u64(value, 8190, 100000000, &number);
            options.queue_events_max = (uint32_t)number;
        } else if (!strcmp(flag, "--snapshot-every")) {
            ok = cli_parse_u64(value, 0, UINT64_MAX, &options.snapshot_every_events);
        } else if (!strcmp(flag, "--snapshot-seconds")) {
            ok = cli_parse_u64(value, 0, 100000000, &options.snapshot_every_seconds);
        } else {
            return cli_usage_error("serve: unknown option '%s' (try 'coffer serve --help')", flag);
        }
        if (!ok)
            return cli_usage_error("serve: %s needs a valid value", flag);
        i++;
    }
    return server_run(&options);
}
