/*
 * replay.h — applying log records to a store through the core, as recovery and the offline
 * audit both do. An event that does not record as it did when it was logged means the log
 * and the code disagree: replay stops rather than guess.
 */
#ifndef COFFER_ENGINE_REPLAY_H
#define COFFER_ENGINE_REPLAY_H

#include "coffer.h"
#include "core/ledger.h"
#include "log/record.h"
#include "store/store.h"

typedef struct replayer {
    store *store;
    ledger *ledger;
    record_scratch scratch;
    coffer_result *results;
    const record_header *header;
    uint64_t last_seq; /* of the last record replayed */
    uint64_t last_timestamp;
    char problem[256]; /* why the last replay_record failed */
    /* Called before each entry of events is applied, or NULL: looks up the ids the store
     * evicted (the engine's cold table). Non-zero stops the replay. */
    int (*prepare)(void *context, const record_entry *entry);
    void *prepare_context;
} replayer;

int replayer_init(replayer *r, store *s, ledger *l);
void replayer_free(replayer *r);
/* Replays one checked record. COFFER_OK, CAPACITY_EXCEEDED/OUT_OF_MEMORY (room), or
 * STORAGE_FAILED when the record does not replay (r->problem says why). */
int replay_record(replayer *r, const uint8_t *bytes, const record_header *header);

/* A store loaded from a snapshot that kept no submitters (format 2) gets them from the log:
 * each transfer up to `snapshot_seq` that a record names a submitter for takes it, and the
 * names are numbered in log order, as a full replay numbers them. Reads the local log of
 * `dir`. COFFER_OK, or the code that stopped it with `problem` set. */
int replay_submitters(store *s, const char *dir, uint64_t snapshot_seq, char *problem,
                      size_t problem_size);

#endif
