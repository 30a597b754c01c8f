/*
 * load.h — the HTTP load generator behind `coffer bench --server URL`.
 */
#ifndef COFFER_CLI_LOAD_H
#define COFFER_CLI_LOAD_H

#include <stdint.h>

typedef struct load_arguments {
    const char *url;
    const char *workload; /* uniform, hot, seats, retries */
    const char *token;    /* sent as Authorization: Bearer; NULL: none */
    const char *cacert;   /* for https://: the trusted CAs (PEM); NULL: the system's */
    uint64_t accounts, seats, connections, duration_s, batch, seed;
} load_arguments;

int cli_bench_server(const load_arguments *arguments);

#endif
