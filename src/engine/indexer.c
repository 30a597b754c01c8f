/*
 * indexer.c — the thread that keeps the on-disk index (src/index) behind the log: it reads
 * durable records through its own log cursor, as the change feed does (segment files, or the
 * rows of a log in PostgreSQL), and applies each in one batch, far from the writer and the
 * acknowledgements. At start it checks that the index is a prefix of this log (its applied seq
 * and that record's hash) and rebuilds it when not; afterwards every record it applies must
 * link to the one before. The index is derived data: its failures are logged and stop the
 * index, never the engine. With a log in PostgreSQL, rows can leave the log (a failover to a
 * standby that had not received them): each time the follow thread finds its place in the log
 * again it asks for a check (engine_index_recheck), and until the index's last record is found
 * in the log nothing reads it and memory evicts nothing. An index that holds a record the log
 * no longer has is worse than none: it is no longer read at all, and the next start rebuilds it.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "engine/engine.h"
#include "index/filter.h"
#include "index/index.h"
#include "log/cursor.h"
#include "log/pg_cursor.h"
#include "store/store.h"

/* A flush writes the applied records to RocksDB, where they survive a crash and can be read:
 * after this much log, or this long when something was applied. Between flushes they are
 * staged in memory (the index flushes by itself past 64 MiB of them). */
#define INDEXER_FLUSH_EVERY_BYTES (32u << 20)
#define INDEXER_FLUSH_EVERY_MS 30000u
/* Asked to flush soon (memory is filling), at most this often: each flush is one table file,
 * and many small ones cost RocksDB compactions. */
#define INDEXER_FLUSH_SOON_MS 200u
/* One cursor read applies at most this much log before the thread looks at its stop flag. */
#define INDEXER_READ_BYTES_MAX (8u << 20)
/* How long the thread sleeps when the index has caught up, at most (the flush timer). */
#define INDEXER_IDLE_WAIT_MS 1000
/* A log in PostgreSQL: the anchor check's read is bounded by the log's end, not a durable seq. */
#define INDEXER_LOG_END UINT64_MAX
/* A log in PostgreSQL: after a read that took everything applied, the next waits this long, so
 * that single requests' small records are read a batch at a time, not a query per commit. */
#define INDEXER_PG_READ_EVERY_MS 100u

struct engine_indexer {
    coffer *db;
    pthread_t thread;
    char *path;
    index_db *index;
    log_cursor *cursor; /* the segment files, or */
    pg_cursor *pg;      /* the rows of a log in PostgreSQL (on the change feed's sessions) */
    atomic_bool stopping;
    atomic_bool off; /* the thread gave up (logged): nothing more is indexed until a restart */
    /* The index holds a record the log no longer has: nothing reads it any more (logged). */
    atomic_bool lost;
    /* The db->index_epoch at which the index's last record was last found in the log: the
     * index is read only while it is the current one (always, with a local log). */
    _Atomic uint64_t checked_epoch;
    _Atomic uint64_t applied_seq, flushed_seq, records, events, write_ns;
    uint64_t bytes_since_flush, applied_at_flush;
    uint64_t flushed_at_ms;
    /* The ids the index holds, for the writer's "certainly new" (engine_index_maybe). */
    id_filter filter;
    /* The index and its filter can be read from other threads: set (release) once the filter is
     * filled, never cleared while the thread runs. */
    atomic_bool ready;
    atomic_bool opened; /* the index is open and readable (the filter may still be filling) */
    /* Memory is filling: the writer asks for a flush sooner than the schedule, so that what it
     * could evict is in RocksDB (engine_index_flush_soon). */
    atomic_bool flush_soon;
    char error[1024];
};

/* ---- checking the index against the log at start --------------------------------------------- */

typedef struct anchor_check {
    uint64_t seq;
    const uint8_t *hash;
    bool found, matches;
} anchor_check;

static int anchor_visit(const uint8_t *bytes, const record_header *header, uint32_t segment,
                        uint64_t offset, void *context)
{
    (void)bytes, (void)segment, (void)offset;
    anchor_check *check = context;
    check->found = header->last_seq == check->seq;
    check->matches = check->found && memcmp(header->hash, check->hash, RECORD_HASH_BYTES) == 0;
    return 1; /* only the first record */
}

static int cursor_read(engine_indexer *indexer, uint64_t after_seq, uint64_t durable_seq,
                       size_t max_bytes, wal_record_fn visit, void *context, char *error,
                       size_t error_size)
{
    return indexer->pg ? pg_cursor_read(indexer->pg, after_seq, durable_seq, max_bytes, visit,
                                        context, error, error_size)
                       : log_cursor_read(indexer->cursor, after_seq, durable_seq, max_bytes, visit,
                                         context, error, error_size);
}

/* Why the opened index is not a prefix of the log, or NULL when it is. A log in PostgreSQL
 * holds more than this instance may have applied yet (a follower restarted from an older
 * snapshot): its index may be ahead of the store, and is checked against the log's rows. */
static const char *index_mismatch(engine_indexer *indexer, char *why, size_t why_size,
                                  bool *unreadable)
{
    index_position position = index_position_get(indexer->index);
    uint64_t durable = indexer->pg ? INDEXER_LOG_END : atomic_load(&indexer->db->durable_seq);
    if (position.applied_seq == 0)
        return 0;
    if (position.applied_seq > durable) {
        snprintf(why, why_size, "it holds seqs up to %llu but the log ends at %llu",
                 (unsigned long long)position.applied_seq, (unsigned long long)durable);
        return why;
    }
    anchor_check check = {position.applied_seq, position.applied_hash, false, false};
    char error[512] = "";
    int code = cursor_read(indexer, position.applied_seq - 1, durable, RECORD_BYTES_MAX,
                           anchor_visit, &check, error, sizeof error);
    *unreadable = code != COFFER_OK && code != 1;
    if (*unreadable)
        snprintf(why, why_size, "the log cannot be read at its seq %llu: %s",
                 (unsigned long long)position.applied_seq, error);
    else if (!check.found)
        snprintf(why, why_size, "no record of the log ends at its seq %llu",
                 (unsigned long long)position.applied_seq);
    else if (!check.matches)
        snprintf(why, why_size, "the log's record at seq %llu has another hash",
                 (unsigned long long)position.applied_seq);
    else
        return 0;
    return why;
}

/* Opens the index, or rebuilds it from nothing when it is missing, unreadable, of another
 * format or not a prefix of this log; says which. false when even a new one cannot open, or
 * (*retry) when a log in PostgreSQL could not be read to check it. */
static bool indexer_open(engine_indexer *indexer, bool *retry)
{
    *retry = false;
    coffer *db = indexer->db;
    char why[1024] = "";
    FILE *probe = fopen(indexer->path, "r");
    if (!probe)
        engine_log(db, "index: %s is missing; building it from the log", indexer->path);
    else
        fclose(probe);
    int code = index_open_cached(indexer->path, false, engine_index_cache_bytes(db),
                                 &indexer->index, why, sizeof why);
    bool unreadable = false;
    if (code == COFFER_OK && !index_mismatch(indexer, why, sizeof why, &unreadable))
        return true;
    if (code == COFFER_OUT_OF_MEMORY)
        return false;
    if (unreadable && indexer->pg) {
        /* The database, not the index: close it, and check again after a wait. */
        engine_log(db, "index: %s; checking again in a second", why);
        index_close(indexer->index);
        indexer->index = 0;
        *retry = true;
        return false;
    }
    engine_log(db, "index: %s is damaged (%s); rebuilding it from the log", indexer->path, why);
    index_close(indexer->index);
    indexer->index = 0;
    if (index_destroy(indexer->path) != 0) {
        engine_log(db, "index: cannot delete %s; the index is off", indexer->path);
        return false;
    }
    code = index_open_cached(indexer->path, false, engine_index_cache_bytes(db), &indexer->index,
                             why, sizeof why);
    if (code != COFFER_OK) {
        engine_log(db, "index: cannot create %s (%s); the index is off", indexer->path, why);
        return false;
    }
    return true;
}

/* ---- following the log ------------------------------------------------------------------------
 */

/* indexer_visit's code for a record that does not follow the index's last (not a coffer code,
 * nor a cursor's). */
#define INDEXER_LOST (-2)

/* Nothing reads the index any more: it holds what the log lost. */
static void indexer_lose(engine_indexer *indexer, const char *why)
{
    if (atomic_exchange(&indexer->lost, true))
        return;
    engine_log(indexer->db,
               "index: %s; the index is no longer read (reads and retries of evicted records are "
               "refused with storage_failed) and is rebuilt from the log at the next start",
               why);
}

static int indexer_visit(const uint8_t *bytes, const record_header *header, uint32_t segment,
                         uint64_t offset, void *context)
{
    (void)segment, (void)offset;
    engine_indexer *indexer = context;
    uint64_t started = clock_monotonic_ns();
    index_position at = index_position_get(indexer->index);
    uint64_t before = at.applied_seq;
    /* The log's next record after the index's last must link to it. It does not when a
     * PostgreSQL failover lost that record and others took its seqs. */
    if (before > 0 && header->last_seq > before &&
        memcmp(header->previous_hash, at.applied_hash, RECORD_HASH_BYTES) != 0) {
        snprintf(indexer->error, sizeof indexer->error,
                 "the log's record after seq %llu does not follow the one the index holds there%s",
                 (unsigned long long)before,
                 indexer->pg ? " (the log lost it: a PostgreSQL failover)" : "");
        return INDEXER_LOST;
    }
    int code =
        index_apply_record(indexer->index, bytes, header, indexer->error, sizeof indexer->error);
    if (code != COFFER_OK)
        return code;
    uint64_t applied = index_position_get(indexer->index).applied_seq;
    if (applied != before) {
        atomic_fetch_add(&indexer->records, 1);
        atomic_fetch_add(&indexer->events, applied - before); /* seqs, recorded or not */
        indexer->bytes_since_flush += header->length;
    }
    atomic_fetch_add(&indexer->write_ns, clock_monotonic_ns() - started);
    atomic_store(&indexer->applied_seq, applied);
    return 0;
}

static bool indexer_flush_due(const engine_indexer *indexer, uint64_t now_ms)
{
    uint64_t applied = index_position_get(indexer->index).applied_seq;
    if (applied == indexer->applied_at_flush)
        return false;
    return indexer->bytes_since_flush >= INDEXER_FLUSH_EVERY_BYTES ||
           now_ms - indexer->flushed_at_ms >= INDEXER_FLUSH_EVERY_MS ||
           (atomic_load(&indexer->flush_soon) &&
            now_ms - indexer->flushed_at_ms >= INDEXER_FLUSH_SOON_MS);
}

static int indexer_flush(engine_indexer *indexer)
{
    uint64_t started = clock_monotonic_ns();
    int code = index_flush(indexer->index, indexer->error, sizeof indexer->error);
    atomic_fetch_add(&indexer->write_ns, clock_monotonic_ns() - started);
    indexer->bytes_since_flush = 0;
    indexer->applied_at_flush = index_position_get(indexer->index).applied_seq;
    indexer->flushed_at_ms = clock_monotonic_ns() / 1000000u;
    atomic_store(&indexer->flush_soon, false);
    if (code == COFFER_OK)
        atomic_store(&indexer->flushed_seq, indexer->applied_at_flush);
    return code;
}

/* Sleeps until the log has a durable seq after `applied`, a stop, the timeout, or (when
 * `recheck_wakes`) a check asked by engine_index_recheck. The log thread signals feed_wake after
 * each sync when someone counts in feed_waiters. UINT64_MAX: a plain sleep. */
static void indexer_wait(engine_indexer *indexer, uint64_t applied, uint64_t timeout_ms,
                         bool recheck_wakes)
{
    coffer *db = indexer->db;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    uint64_t nanoseconds = (uint64_t)deadline.tv_nsec + timeout_ms * 1000000u;
    deadline.tv_sec += (time_t)(nanoseconds / 1000000000u);
    deadline.tv_nsec = (long)(nanoseconds % 1000000000u);
    pthread_mutex_lock(&db->feed_mutex);
    atomic_fetch_add(&db->feed_waiters, 1);
    int status = 0;
    while (
        atomic_load(&db->durable_seq) <= applied && !atomic_load(&indexer->stopping) &&
        (!recheck_wakes || atomic_load(&db->index_epoch) == atomic_load(&indexer->checked_epoch)) &&
        status == 0)
        status = pthread_cond_timedwait(&db->feed_wake, &db->feed_mutex, &deadline);
    atomic_fetch_sub(&db->feed_waiters, 1);
    pthread_mutex_unlock(&db->feed_mutex);
}

/* Fills the id filter from the index's transfer keys, before anyone may ask it; the filter is
 * not persisted, as a scan at open costs little beside the log replay it often follows. */
static bool indexer_filter_fill(engine_indexer *indexer)
{
    uint64_t started = clock_monotonic_ns();
    int code = index_filter_attach(indexer->index, &indexer->filter, store_hash);
    uint64_t elapsed_ms = (clock_monotonic_ns() - started) / 1000000u;
    if (code != COFFER_OK) {
        engine_log(indexer->db, "index: its transfer ids cannot be read; the index is off");
        return false;
    }
    uint64_t ids = filter_ids(&indexer->filter);
    if (ids > 0)
        engine_log(
            indexer->db, "index: %llu transfer ids read into its filter (%llu MiB) in %llu ms",
            (unsigned long long)ids, (unsigned long long)(filter_bytes(&indexer->filter) >> 20),
            (unsigned long long)elapsed_ms);
    return true;
}

/* With a log in PostgreSQL, once the follow thread asked (a new db->index_epoch): is the
 * index's last record still in the log? COFFER_OK (it is, or nothing was asked), INDEXER_LOST
 * (it is not: indexer->error says why), or overloaded (the log cannot be read now). */
static int indexer_recheck(engine_indexer *indexer)
{
    uint64_t epoch = atomic_load(&indexer->db->index_epoch);
    if (atomic_load(&indexer->checked_epoch) == epoch)
        return COFFER_OK;
    char why[1024] = "";
    bool unreadable = false;
    if (index_mismatch(indexer, why, sizeof why, &unreadable)) {
        if (unreadable)
            return COFFER_OVERLOADED;
        snprintf(indexer->error, sizeof indexer->error,
                 "its last record is no longer in the log in PostgreSQL: %s", why);
        return INDEXER_LOST;
    }
    atomic_store(&indexer->checked_epoch, epoch);
    return COFFER_OK;
}

static void *indexer_main(void *argument)
{
    engine_indexer *indexer = argument;
    coffer *db = indexer->db;
    pthread_setname_np(pthread_self(), "coffer-index"); /* as ps, top and perf show it */
    while (!indexer->index) {
        uint64_t epoch = atomic_load(&db->index_epoch); /* what the open's check answers */
        bool retry = false;
        if (indexer_open(indexer, &retry)) {
            atomic_store(&indexer->checked_epoch, epoch);
            break;
        }
        if (!retry || atomic_load(&indexer->stopping)) {
            atomic_store(&indexer->off, true);
            return 0;
        }
        indexer_wait(indexer, UINT64_MAX, INDEXER_IDLE_WAIT_MS, false);
    }
    index_set_staging_max(indexer->index, engine_index_staging_max(db));
    indexer->applied_at_flush = index_position_get(indexer->index).applied_seq;
    atomic_store(&indexer->applied_seq, indexer->applied_at_flush);
    atomic_store(&indexer->flushed_seq, indexer->applied_at_flush);
    /* Readable from here on, so that reads and retries of evicted ids work while the filter
     * fills (until it is ready, every id absent from memory is looked up). */
    atomic_store_explicit(&indexer->opened, true, memory_order_release);
    if (!indexer_filter_fill(indexer)) {
        atomic_store(&indexer->off, true);
        return 0;
    }
    atomic_store_explicit(&indexer->ready, true, memory_order_release);
    indexer->flushed_at_ms = clock_monotonic_ns() / 1000000u;
    int code = COFFER_OK;
    bool retrying = false; /* a log in PostgreSQL could not be read: said once, tried again */
    while (!atomic_load(&indexer->stopping) && !atomic_load(&indexer->lost) && code == COFFER_OK) {
        if (indexer->pg && (code = indexer_recheck(indexer)) != COFFER_OK) {
            if (code != COFFER_OVERLOADED)
                break;
            code = COFFER_OK; /* the log cannot be read now: check again after a wait */
            indexer_wait(indexer, UINT64_MAX, INDEXER_IDLE_WAIT_MS, false);
            continue;
        }
        uint64_t applied = index_position_get(indexer->index).applied_seq;
        uint64_t durable = atomic_load(&db->durable_seq);
        if (durable > applied) {
            char error[1024] = "";
            code = cursor_read(indexer, applied, durable, INDEXER_READ_BYTES_MAX, indexer_visit,
                               indexer, error, sizeof error);
            /* error: the cursor's reason; a failed index write leaves it empty. */
            if (indexer->pg && error[0] &&
                (code == COFFER_STORAGE_FAILED || code == COFFER_OVERLOADED)) {
                /* The database is unreachable or slow for now (a failover, say): the index
                 * waits, as the follow thread does, and reads again. */
                if (!retrying)
                    engine_log(db, "index: waiting for the log: %s", error);
                retrying = true;
                code = COFFER_OK;
                indexer_wait(indexer, UINT64_MAX, INDEXER_IDLE_WAIT_MS, false);
                continue;
            }
            if (code == COFFER_OK)
                retrying = false;
            if (code == COFFER_STORAGE_FAILED && error[0])
                snprintf(indexer->error, sizeof indexer->error, "the log: %s", error);
            uint64_t now = index_position_get(indexer->index).applied_seq;
            /* Nothing ended where it could read (a store ahead of the log it follows), or a
             * log in PostgreSQL read to what is applied: wait rather than query again now. */
            if (code == COFFER_OK && (now == applied || (indexer->pg && now >= durable &&
                                                         !atomic_load(&indexer->flush_soon))))
                indexer_wait(indexer, UINT64_MAX, INDEXER_PG_READ_EVERY_MS, true);
        } else {
            indexer_wait(indexer, applied, INDEXER_IDLE_WAIT_MS, true);
        }
        if (code == COFFER_OK && indexer_flush_due(indexer, clock_monotonic_ns() / 1000000u))
            code = indexer_flush(indexer);
    }
    if (code == INDEXER_LOST)
        indexer_lose(indexer, indexer->error);
    atomic_store(&indexer->off, code != COFFER_OK || atomic_load(&indexer->lost));
    if (code != COFFER_OK && code != INDEXER_LOST)
        engine_log(db, "index: stopped at seq %llu: %s",
                   (unsigned long long)index_position_get(indexer->index).applied_seq,
                   indexer->error);
    else if (code == COFFER_OK && !atomic_load(&indexer->lost) &&
             index_position_get(indexer->index).applied_seq != indexer->applied_at_flush &&
             indexer_flush(indexer) != COFFER_OK)
        engine_log(db, "index: the last flush failed: %s", indexer->error);
    return 0;
}

/* ---- the engine's side -------------------------------------------------------------------- */

static void indexer_free(engine_indexer *indexer)
{
    index_close(indexer->index);
    filter_free(&indexer->filter);
    log_cursor_close(indexer->cursor);
    pg_cursor_close(indexer->pg);
    free(indexer->path);
    free(indexer);
}

void indexer_start(coffer *db)
{
    if (!db->dir || !db->options.index_on)
        return;
    engine_indexer *indexer = calloc(1, sizeof *indexer);
    size_t path_size = strlen(db->dir) + sizeof "/" INDEX_DIRECTORY;
    if (indexer)
        indexer->path = malloc(path_size);
    /* A log in PostgreSQL is read on the change feed's sessions (feed_init opened the pool). */
    int opened = !indexer || !indexer->path ? COFFER_OUT_OF_MEMORY
                 : db->feed_pool            ? pg_cursor_open(db->feed_pool, &indexer->pg)
                                            : log_cursor_open(db->dir, &indexer->cursor);
    if (opened != COFFER_OK) {
        engine_log(db, "index: out of memory; the index is off");
        if (indexer)
            indexer_free(indexer);
        return;
    }
    snprintf(indexer->path, path_size, "%s/%s", db->dir, INDEX_DIRECTORY);
    indexer->db = db;
    filter_init(&indexer->filter, 0);
    /* Recovery opened the index and brought it to the log's end already: readable at once. */
    indexer->index = engine_cold_recovery_end(db);
    if (indexer->index) {
        /* Recovery checked it against the log. */
        atomic_store(&indexer->checked_epoch, atomic_load(&db->index_epoch));
        uint64_t applied = index_position_get(indexer->index).applied_seq;
        atomic_store(&indexer->applied_seq, applied);
        atomic_store(&indexer->flushed_seq, applied);
        atomic_store_explicit(&indexer->opened, true, memory_order_release);
    }
    if (pthread_create(&indexer->thread, 0, indexer_main, indexer) != 0) {
        engine_log(db, "index: cannot start its thread; the index is off");
        indexer_free(indexer);
        return;
    }
    db->indexer = indexer;
}

void indexer_stop(coffer *db)
{
    engine_indexer *indexer = db->indexer;
    if (!indexer)
        return;
    atomic_store(&indexer->stopping, true);
    pthread_mutex_lock(&db->feed_mutex);
    pthread_cond_broadcast(&db->feed_wake);
    pthread_mutex_unlock(&db->feed_mutex);
    pthread_join(indexer->thread, 0);
    indexer_free(indexer);
    db->indexer = 0;
}

void indexer_stats(const coffer *db, coffer_stats *out)
{
    const engine_indexer *indexer = db->indexer;
    out->index_on = indexer && !atomic_load(&indexer->off);
    if (!indexer)
        return;
    out->index_applied_seq = atomic_load(&indexer->applied_seq);
    out->index_flushed_seq = atomic_load(&indexer->flushed_seq);
    out->index_records = atomic_load(&indexer->records);
    out->index_events = atomic_load(&indexer->events);
    out->index_write_us_total = atomic_load(&indexer->write_ns) / 1000u;
    out->index_filter_bytes = engine_index_filter_bytes(db);
}

/* Nothing the log lost, as far as is known: its last record was found in the log since the
 * follow thread last asked. */
static bool indexer_checked(const engine_indexer *indexer)
{
    return !atomic_load(&indexer->lost) &&
           atomic_load(&indexer->checked_epoch) == atomic_load(&indexer->db->index_epoch);
}

/* The index usable from the writer's thread: its thread has opened it and filled the filter,
 * and it holds nothing the log lost. */
static engine_indexer *indexer_ready(const coffer *db)
{
    engine_indexer *indexer = db->indexer;
    if (!indexer || !atomic_load_explicit(&indexer->ready, memory_order_acquire) ||
        !indexer_checked(indexer))
        return 0;
    return indexer;
}

bool engine_index_maybe(const coffer *db, uint64_t hash)
{
    const engine_indexer *indexer = indexer_ready(db);
    return !indexer || filter_maybe(&indexer->filter, hash);
}

/* The index readable from other threads, its filter maybe still filling. */
static engine_indexer *indexer_opened(const coffer *db)
{
    engine_indexer *indexer = db->indexer;
    if (!indexer || !atomic_load_explicit(&indexer->opened, memory_order_acquire) ||
        !indexer_checked(indexer))
        return 0;
    return indexer;
}

bool engine_index_lost(const coffer *db)
{
    return db->indexer && atomic_load(&db->indexer->lost);
}

void engine_index_recheck(coffer *db)
{
    atomic_fetch_add(&db->index_epoch, 1);
    if (!db->feed_ready)
        return; /* at the open: the index is not running yet */
    pthread_mutex_lock(&db->feed_mutex);
    pthread_cond_broadcast(&db->feed_wake); /* the index thread waits there */
    pthread_mutex_unlock(&db->feed_mutex);
}

uint64_t engine_index_flushed_seq(const coffer *db)
{
    const engine_indexer *indexer = indexer_opened(db);
    return indexer ? atomic_load_explicit(&indexer->flushed_seq, memory_order_acquire) : 0;
}

index_db *engine_index_reader(const coffer *db)
{
    engine_indexer *indexer = indexer_opened(db);
    return indexer ? indexer->index : 0;
}

const id_filter *engine_index_filter(const coffer *db)
{
    const engine_indexer *indexer = indexer_ready(db);
    return indexer ? &indexer->filter : 0;
}

uint64_t engine_index_filter_bytes(const coffer *db)
{
    const engine_indexer *indexer = indexer_ready(db);
    return indexer ? filter_bytes(&indexer->filter) : 0;
}

bool engine_index_usable(const coffer *db)
{
    const engine_indexer *indexer = indexer_opened(db);
    return indexer && !atomic_load(&indexer->off);
}

bool engine_index_expected(const coffer *db)
{
    const engine_indexer *indexer = db->indexer;
    return indexer && !atomic_load(&indexer->off) && !atomic_load(&indexer->lost);
}

void engine_index_flush_soon(coffer *db)
{
    if (db->indexer)
        atomic_store(&db->indexer->flush_soon, true);
}

int engine_index_get_transfer(const coffer *db, const char *id, size_t length, index_transfer *out)
{
    index_db *index = engine_index_usable(db) ? engine_index_reader(db) : 0;
    return index ? index_get_transfer(index, id, length, out) : COFFER_STORAGE_FAILED;
}

/* x clamped to [low, high]. */
static uint64_t clamped(uint64_t x, uint64_t low, uint64_t high)
{
    return x < low ? low : x > high ? high : x;
}

uint64_t engine_index_staging_max(const coffer *db)
{
    /* What the index stages between flushes: a sixteenth of the budget, from 4 to 64 MiB. */
    return clamped(db->store.limits.memory_max / 16, 4u << 20, 64u << 20);
}

uint64_t engine_index_cache_bytes(const coffer *db)
{
    /* RocksDB's block cache, with the index and filter blocks of its tables: a sixteenth of
     * the budget, from 8 to 256 MiB. */
    return clamped(db->store.limits.memory_max / 16, 8u << 20, INDEX_CACHE_BYTES);
}

uint64_t engine_process_allowance(const coffer *db)
{
    /* The memory the process needs beside what the budget sizes: code and libraries, RocksDB's
     * compaction and read buffers, the log's and the index's scratch, threads' stacks, the
     * allocator's arenas: 60 to 100 MiB for a small budget, 360 to 430 MiB with the index's
     * share at 1 GiB and fifty million transfers, varying from run to run (docs/operations.md).
     * Five sixteenths of the budget, at most 320 MiB. */
    return clamped(db->store.limits.memory_max / 16 * 5, 0, 320u << 20);
}

/* The tables keep 1/this of their share free for an eviction's map (engine_tables_budget). */
#define ENGINE_EVICTION_MAP_SHARE 12

/* The part of a budget that the index's staging and cache and the allowance do not come out of:
 * see engine_tables_budget. */
#define ENGINE_BUDGET_BESIDE (64ULL << 20)

uint64_t engine_budget_taken(const coffer *db)
{
    uint64_t max = db->store.limits.memory_max;
    uint64_t rest =
        engine_index_staging_max(db) + engine_index_cache_bytes(db) + engine_process_allowance(db);
    uint64_t affordable = max > ENGINE_BUDGET_BESIDE ? (max - ENGINE_BUDGET_BESIDE) / 2 : 0;
    return rest < affordable ? rest : affordable;
}

uint64_t engine_tables_budget(const coffer *db)
{
    uint64_t max = db->store.limits.memory_max;
    if (!db->options.index_on)
        return max; /* nothing evicts: the tables have it all, as they always had */
    /* With the index on, the budget covers the whole process: the tables get what the index
     * (its filter, staging and cache) and the allowance leave, and at least a quarter. The
     * staging, cache and allowance come out of the budget past its first 64 MiB, at most half
     * of that part: a small budget cannot hold the process's fixed needs (60 MiB and more) and
     * still leave the tables room to work in, so below 256 MiB they are partly beside it. */
    uint64_t others = engine_index_filter_bytes(db) + engine_budget_taken(db);
    uint64_t floor = max / 4;
    uint64_t share = others < max - floor ? max - others : floor;
    /* An eviction allocates a map of 4 bytes per record the tables hold, for as long as it
     * runs. An event's records take at least twelve times that (a transfer of 80 bytes and its
     * history entries of 48; an expiry of 24 comes with its hold and their entries), so a
     * twelfth of the share stays free for it. */
    return share - share / ENGINE_EVICTION_MAP_SHARE;
}
