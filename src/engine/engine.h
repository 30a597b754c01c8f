/*
 * engine.h — internals of the engine shared by engine.c (the writer thread, the request queue,
 * the clock, the expiry sweep) and reads.c (lookups and verification run on the writer).
 */
#ifndef COFFER_ENGINE_H
#define COFFER_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "coffer.h"
#include "core/ledger.h"
#include "engine/prefault.h"
#include "store/store.h"

/* The sweep reserves room for this many expiries at a time. */
#define ENGINE_EXPIRIES_PER_RESERVE 1024

typedef struct engine_request engine_request;

/* Runs on the writer thread, between batches' events, with exclusive access to the store. */
typedef int (*engine_read_fn)(coffer *db, void *context);

struct engine_request {
    engine_request *next;
    const coffer_event *events; /* a submission; NULL for a read */
    size_t count;
    bool atomic;
    coffer_result *results;
    engine_read_fn read;
    void *context;
    int status;
    bool done;
    pthread_cond_t done_cond;
};

struct coffer {
    store store;
    ledger ledger;
    coffer_options options;
    prefault prefault;

    pthread_t writer;
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* the writer waits here for requests */
    engine_request *queue_head, *queue_tail;
    uint64_t queue_events;
    bool stopping;

    /* Owned by the writer thread. */
    uint64_t last_seq;
    uint64_t last_timestamp;
    uint64_t batches;
    uint64_t events_applied;
    uint64_t codes[COFFER_CODE_LIMIT];
};

/* Queues a read to run on the writer and waits for its status. */
int engine_read(coffer *db, engine_read_fn read, void *context);

#endif
