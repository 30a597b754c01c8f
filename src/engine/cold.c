/*
 * cold.c — ids that memory no longer holds. Once the store has evicted what the on-disk index
 * holds (store_trim), an id missing from memory may still be a recorded transfer, and its
 * retry must replay the recorded outcome. Before a batch (or a replayed record) is applied,
 * the writer looks up each such id that the index's filter does not rule out and keeps what it
 * finds in a table; the core asks that table (ledger_set_cold). So the core never waits on the
 * disk, and a failed read refuses a submission before anything of it is applied instead of
 * halfway through it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "engine/engine.h"
#include "index/index.h"

/* A batch holds at most COFFER_BATCH_EVENTS_MAX events, each naming at most two ids (its own
 * and, for a post or void, the hold's): the table never needs more entries than that. */
#define COLD_ENTRIES_MAX (2 * (size_t)COFFER_BATCH_EVENTS_MAX)

typedef struct cold_entry {
    uint64_t hash;
    size_t length;
    ledger_cold cold; /* cold.transfer.id is the id */
} cold_entry;

struct engine_cold {
    cold_entry *entries;
    size_t count, capacity;
    index_transfer scratch;
};

static const cold_entry *cold_lookup(const engine_cold *table, const char *id, size_t length,
                                     uint64_t hash)
{
    for (size_t i = 0; i < table->count; i++) {
        const cold_entry *entry = &table->entries[i];
        if (entry->hash == hash && entry->length == length &&
            memcmp(entry->cold.transfer.id, id, length) == 0)
            return entry;
    }
    return 0;
}

/* The core's question (ledger_cold_fn): the table is filled before the batch, so this never
 * reads the disk. Few ids are cold in a batch; a linear search is enough. */
static bool cold_find(void *context, const char *id, size_t length, uint64_t hash, ledger_cold *out)
{
    const cold_entry *entry = cold_lookup(context, id, length, hash);
    if (entry)
        *out = entry->cold;
    return entry != 0;
}

int engine_cold_init(coffer *db)
{
    db->cold = calloc(1, sizeof *db->cold);
    if (!db->cold)
        return COFFER_OUT_OF_MEMORY;
    engine_cold_attach(db);
    return COFFER_OK;
}

void engine_cold_attach(coffer *db)
{
    ledger_set_cold(&db->ledger, cold_find, db->cold);
}

void engine_cold_free(coffer *db)
{
    index_close(db->cold_index); /* an open that failed after recovery */
    db->cold_index = 0;
    if (!db->cold)
        return;
    free(db->cold->entries);
    free(db->cold);
    db->cold = 0;
}

static cold_entry *cold_add(engine_cold *table)
{
    if (table->count == table->capacity) {
        size_t capacity = table->capacity ? 2 * table->capacity : 16;
        if (capacity > COLD_ENTRIES_MAX)
            capacity = COLD_ENTRIES_MAX;
        if (capacity == table->capacity)
            return 0;
        cold_entry *grown = realloc(table->entries, capacity * sizeof *grown);
        if (!grown)
            return 0;
        table->entries = grown;
        table->capacity = capacity;
    }
    return &table->entries[table->count++];
}

/* The index that answers: read-only during recovery, the indexer's afterwards. Recovery has no
 * filter (the indexer builds it), so every id absent from memory is read. */
static bool index_maybe(coffer *db, uint64_t hash)
{
    return db->cold_index ? true : engine_index_maybe(db, hash);
}

static int index_get(coffer *db, const char *id, size_t length, index_transfer *out)
{
    if (db->cold_index)
        return index_get_transfer(db->cold_index, id, length, out);
    return engine_index_get_transfer(db, id, length, out);
}

/* Looks one id up when memory does not hold it and the filter cannot rule it out, or (`own`:
 * the event's own id, which may be a replay) when memory holds it but not its accounts' states
 * right after it. */
static int cold_resolve_id(coffer *db, const char *id, bool own)
{
    if (!id || !id[0])
        return COFFER_OK;
    store *s = &db->store;
    engine_cold *table = db->cold;
    size_t length = strnlen(id, COFFER_TRANSFER_ID_MAX + 1);
    if (length > COFFER_TRANSFER_ID_MAX)
        return COFFER_OK; /* invalid: the core refuses it before looking anything up */
    uint64_t hash = store_hash(id, length);
    uint32_t held = store_transfer_find(s, id, length, hash);
    /* A record memory holds answers for itself, unless an account's entry at or before it was
     * evicted: its replay takes the accounts after it from the index. */
    if ((held != STORE_NONE && (!own || store_transfer_after_held(s, &s->transfers[held]))) ||
        cold_lookup(table, id, length, hash))
        return COFFER_OK;
    atomic_fetch_add_explicit(&db->cold_checks, 1, memory_order_relaxed);
    if (held == STORE_NONE && !index_maybe(db, hash))
        return COFFER_OK; /* certainly new */
    atomic_fetch_add_explicit(&db->cold_reads, 1, memory_order_relaxed);
    int code = index_get(db, id, length, &table->scratch);
    if (code == COFFER_TRANSFER_NOT_FOUND)
        return COFFER_OK; /* the filter's false positive */
    if (code != COFFER_OK)
        return COFFER_STORAGE_FAILED;
    /* Past the eviction the index may run ahead of memory (recovery brings it to the log's end
     * before replaying): such a record is memory's to apply, not a cold one. */
    if (held == STORE_NONE && table->scratch.transfer.seq > s->trimmed_seq)
        return COFFER_OK;
    cold_entry *entry = cold_add(table);
    if (!entry)
        return COFFER_OUT_OF_MEMORY;
    const index_transfer *found = &table->scratch;
    entry->hash = hash;
    entry->length = length;
    entry->cold = (ledger_cold){
        .transfer = found->transfer,
        .available = found->available,
        .actual_version = found->actual_version,
        .field = ledger_field_index(found->field),
        .from_after = found->from_after,
        .to_after = found->to_after,
    };
    return COFFER_OK;
}

/* `recorded` (a replayed record's outcomes, or NULL): an event the log says was new when it was
 * applied needs no lookup of its own id, which the index, ahead of the replay, already holds. */
static int cold_prepare(coffer *db, const coffer_event *events, const coffer_result *recorded,
                        uint64_t seq0, size_t count)
{
    db->cold->count = 0; /* what the last submission needed */
    if (db->store.trimmed_seq == 0)
        return COFFER_OK;
    for (size_t i = 0; i < count; i++) {
        const coffer_event *event = &events[i];
        if (event->op == COFFER_OP_CREATE_ACCOUNT)
            continue;
        bool is_new = recorded && recorded[i].seq == seq0 + i && !recorded[i].replayed;
        int code = is_new ? COFFER_OK : cold_resolve_id(db, event->id, true);
        /* A post or void needs its hold from the index only when memory evicted it (then it is
         * not pending, and the core answers why it cannot be resolved). */
        if (code == COFFER_OK && (event->op == COFFER_OP_POST || event->op == COFFER_OP_VOID))
            code = cold_resolve_id(db, event->hold_id, false);
        if (code != COFFER_OK)
            return code;
    }
    return COFFER_OK;
}

int engine_cold_prepare(coffer *db, const coffer_event *events, size_t count)
{
    return cold_prepare(db, events, 0, 0, count);
}

int engine_cold_replay_prepare(void *context, const record_entry *entry)
{
    coffer *db = context;
    return cold_prepare(db, entry->events, entry->results, entry->seq, entry->count);
}

/* ---- recovery -------------------------------------------------------------------------------- */

/*
 * Recovery and the index. A snapshot taken after an eviction holds only what memory held, so
 * the replay of the log after it meets ids only the index holds; and a log after the snapshot
 * longer than memory holds (a crash long after the last snapshot) must evict while it replays.
 * In both cases the index is first brought to the end of the log (read through a reader of its
 * own), then the replay looks evicted ids up in it and evicts what it applied once memory passes
 * three quarters of its budget. Otherwise recovery does not wait for the index: the indexer
 * catches up behind, as before. An index that does not open, is of another format, or is not a
 * prefix of this log is rebuilt from the log, with the indexer's log lines. The index opened here
 * is handed over to the indexer (engine_cold_recovery_end).
 */

typedef struct index_feed {
    index_db *index;
    char error[512];
    bool unreachable; /* a log in PostgreSQL could not be read: nothing is known of the index */
    uint64_t records;
} index_feed;

static int index_feed_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                             uint64_t offset, void *context)
{
    (void)segment, (void)offset;
    index_feed *feed = context;
    feed->records++;
    return index_apply_record(feed->index, bytes, header, feed->error, sizeof feed->error) ==
                   COFFER_OK
               ? 0
               : COFFER_STORAGE_FAILED;
}

/* Applies the log after what the index holds (from the start when it is empty), and flushes.
 * COFFER_OK, or why not in `feed->error` (empty: the log does not join the index's last record). */
static int index_catch_up(coffer *db, index_feed *feed)
{
    if (db->cluster.on) {
        index_position at = index_position_get(feed->index);
        char error[512] = "";
        int code = follow_log_read(db, at.applied_seq, at.applied_seq ? at.applied_hash : 0,
                                   index_feed_record, feed, error, sizeof error);
        if (error[0]) {
            feed->unreachable = true;
            snprintf(feed->error, sizeof feed->error, "%s", error);
        }
        return code == COFFER_OK ? index_flush(feed->index, feed->error, sizeof feed->error) : code;
    }
    durable_log reader = {0};
    int code = local_log_open_read(&reader, db->dir, 0);
    index_position at = index_position_get(feed->index);
    if (code == COFFER_OK)
        code = log_read_from(&reader, at.applied_seq, at.applied_seq ? at.applied_hash : 0,
                             index_feed_record, feed);
    if (reader.ops)
        log_close(&reader, false);
    if (code == COFFER_OK)
        code = index_flush(feed->index, feed->error, sizeof feed->error);
    return code;
}

/* Opens the index and brings it to the end of the log, rebuilding it when it must be. */
static int index_open_caught_up(coffer *db, const char *why)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", db->dir, INDEX_DIRECTORY);
    FILE *probe = fopen(path, "r");
    if (probe)
        fclose(probe);
    else
        engine_log(db, "index: %s is missing; building it from the log", path);
    index_feed feed = {0};
    uint64_t started = clock_monotonic_ns();
    int code = index_open_cached(path, false, engine_index_cache_bytes(db), &feed.index, feed.error,
                                 sizeof feed.error);
    if (code == COFFER_OK) {
        index_set_staging_max(feed.index, engine_index_staging_max(db));
        code = index_catch_up(db, &feed);
    }
    /* A database that cannot be read says nothing about the index: keep it for the next try. */
    if (code != COFFER_OK && probe && !feed.unreachable) {
        engine_log(db, "index: %s is damaged (%s); rebuilding it from the log", path,
                   feed.error[0] ? feed.error : "its last record is not one of this log");
        index_close(feed.index);
        feed = (index_feed){0};
        code = index_destroy(path) == 0 ? COFFER_OK : COFFER_STORAGE_FAILED;
        if (code == COFFER_OK)
            code = index_open_cached(path, false, engine_index_cache_bytes(db), &feed.index,
                                     feed.error, sizeof feed.error);
        if (code == COFFER_OK) {
            index_set_staging_max(feed.index, engine_index_staging_max(db));
            code = index_catch_up(db, &feed);
        }
    }
    if (code != COFFER_OK) {
        engine_log(db, "recovery refused: the on-disk index, which %s, cannot be built: %s", why,
                   feed.error[0] ? feed.error : "the log could not be read");
        index_close(feed.index);
        return COFFER_STORAGE_FAILED;
    }
    engine_log(db,
               "index: brought to the log's end for recovery, which %s: %llu records in %llu ms",
               why, (unsigned long long)feed.records,
               (unsigned long long)((clock_monotonic_ns() - started) / 1000000u));
    db->cold_index = feed.index;
    return COFFER_OK;
}

int engine_cold_recovery_begin(coffer *db)
{
    uint64_t trimmed = db->store.trimmed_seq;
    if (trimmed == 0)
        return COFFER_OK;
    if (!db->options.index_on) {
        engine_log(db,
                   "recovery refused: the snapshot evicted records up to seq %llu that only "
                   "the on-disk index holds, and the index is off",
                   (unsigned long long)trimmed);
        return COFFER_STORAGE_FAILED;
    }
    return index_open_caught_up(db, "starts from a snapshot taken after an eviction");
}

static uint64_t records_held(const store *s)
{
    return s->transfers_count + s->history_count + s->expiries_count;
}

/* Recovery evicts once memory passes three quarters of the budget and has taken in an eighth of
 * it since the last eviction (counted as history entries, the commonest record, two per
 * transfer), or once it nears the budget.
 * The budget's use counts pages populated ahead, which the next record takes back right after
 * an eviction gave them up: on use alone, a small budget evicted after every record (a replay
 * of 14,000 records at 16 MiB took 5.8 s, against 0.4 s with room). */
static bool recovery_evict_due(const coffer *db)
{
    const store *s = &db->store;
    uint64_t max = s->budget.max, used = s->budget.used;
    if (used < max / 4 * 3)
        return false;
    uint64_t held = records_held(s), kept = db->recovery_kept_records;
    uint64_t taken_in = held > kept ? (held - kept) * sizeof(store_history) : 0;
    return taken_in >= max / 8 || used >= max - max / 16;
}

/* Evicts what the index holds up to `horizon`, counted, and notes what memory kept (the next
 * eviction is due once it has taken in more: recovery_evict_due). */
static int evict_to(coffer *db, uint64_t horizon)
{
    store *s = &db->store;
    store_trim_stats stats;
    int code = store_trim(s, horizon, &stats);
    if (code == COFFER_OK) {
        db->recovery_kept_records = records_held(s);
        atomic_fetch_add(&db->trims, 1);
        atomic_fetch_add(&db->trimmed_transfers, stats.transfers_evicted);
        atomic_fetch_add(&db->trimmed_history, stats.history_evicted);
    }
    return code;
}

int engine_cold_recovery_evict(coffer *db, uint64_t replayed_seq)
{
    store *s = &db->store;
    if (replayed_seq <= s->trimmed_seq || !db->options.index_on || !recovery_evict_due(db))
        return COFFER_OK;
    if (!db->cold_index) {
        int code = index_open_caught_up(db, "replays more of the log than memory holds");
        if (code != COFFER_OK)
            return code;
    }
    return evict_to(db, replayed_seq);
}

/* What applying a record of this many bytes may take in memory, at most: a transfer takes
 * about 90 bytes in the log and 210 in the tables (the record, two history entries, its id and
 * index slot), and a table that grows commits up to a step more. */
static uint64_t record_memory(size_t record_bytes)
{
    return (uint64_t)record_bytes * 4 + (2u << 20);
}

bool engine_cold_follow_room(coffer *db, size_t record_bytes)
{
    store *s = &db->store;
    if (!engine_index_expected(db))
        return true; /* nothing evicts: the budget refuses what does not fit, as it always did */
    s->budget.max = engine_tables_budget(db);
    uint64_t need = record_memory(record_bytes);
    /* What the tables hold, not what they commit ahead of use (given back before a refusal). */
    bool full = store_bytes_held(s) + need > s->budget.max;
    if (!full && !recovery_evict_due(db))
        return true;
    uint64_t flushed = engine_index_flushed_seq(db);
    uint64_t horizon = flushed < db->tip.last_seq ? flushed : db->tip.last_seq;
    if (flushed < db->tip.last_seq)
        engine_index_flush_soon(db);
    if (engine_index_usable(db) && horizon > s->trimmed_seq)
        (void)evict_to(db, horizon); /* a failure changes nothing: the room check below says */
    /* When memory holds nothing the index does not (only accounts, pending holds and the
     * newest entries), waiting cannot help: the record is applied, and the budget decides. */
    return horizon >= db->tip.last_seq || store_bytes_held(s) + need <= s->budget.max;
}

index_db *engine_cold_recovery_end(coffer *db)
{
    index_db *index = db->cold_index;
    db->cold_index = 0;
    return index;
}
