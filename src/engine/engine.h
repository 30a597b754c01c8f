/*
 * engine.h — internals of the engine shared by engine.c (the writer thread, the request queue,
 * the clock, the expiry sweep), durability.c (the log thread, recovery), reads.c (lookups run
 * on the writer) and verify.c.
 */
#ifndef COFFER_ENGINE_H
#define COFFER_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "coffer.h"
#include "core/ledger.h"
#include "engine/prefault.h"
#include "engine/replay.h"
#include "index/index.h"
#include "log/log.h"
#include "log/pg_cursor.h"
#include "log/pg_log.h"
#include "log/record.h"
#include "log/snapshot.h"
#include "store/store.h"

/* The sweep reserves room for this many expiries at a time. */
#define ENGINE_EXPIRIES_PER_RESERVE 1024
/* Batches applied but not yet durable: the writer runs at most the open log's round depth
 * (log_round_records) ahead of it, and never more than this. */
#define ENGINE_TICKETS_MAX LOG_ROUND_RECORDS_MAX

typedef struct engine_request engine_request;
typedef struct engine_indexer engine_indexer;
typedef struct index_db index_db;   /* index/index.h */
typedef struct id_filter id_filter; /* index/filter.h */
typedef struct engine_cold engine_cold;

/* Runs on the writer thread, between batches' events, with exclusive access to the store. */
typedef int (*engine_read_fn)(coffer *db, void *context);

struct engine_request {
    engine_request *next;
    const coffer_event *events; /* a submission; NULL for a read */
    const char *submitted_by;   /* a submission's principal, for the log; NULL: none */
    size_t count;
    bool atomic;
    uint64_t seq0; /* the seq of the submission's first event */
    coffer_result *results;
    engine_read_fn read;
    void *context;
    bool diagnostic; /* a read answered even after a storage failure (stats) */
    int status;
    bool done;
    /* The public job this request is the engine's part of. With job->on_done set, the request
     * is answered by that callback on an engine thread; without, its caller waits on done_cond
     * (the blocking calls). */
    coffer_job *job;
    pthread_cond_t done_cond;
};

/* An expiry the sweep applied, with its outcome (seq included), for the log. */
typedef struct engine_expiry {
    uint32_t hold;
    coffer_result result;
} engine_expiry;

/* One applied batch on its way to disk: its requests are answered once it is durable. */
typedef struct engine_ticket {
    engine_request *requests;
    engine_expiry *expiries;
    size_t expiries_count, expiries_capacity;
    uint64_t seq_base, ts0;
} engine_ticket;

/* The live verify (verify.c): a thread that runs one full check at a time, in a child the
 * writer forks, for every caller waiting on it. A store of at most this many accounts and
 * transfers together is scanned on the writer instead: about a millisecond, less than a fork. */
#define ENGINE_VERIFY_INLINE_RECORDS_MAX 16384
/* The writer's part of a check (the fork, or the small scan) stalls every write: the next check
 * waits until the writer has spent at most this share of its time on checks, and at most
 * ENGINE_VERIFY_REST_MAX_NS. */
#define ENGINE_VERIFY_WRITER_PERCENT 1
#define ENGINE_VERIFY_REST_MAX_NS (10ull * 1000 * 1000 * 1000)

typedef struct engine_verify {
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* the verify thread waits here for callers */
    pthread_t thread;
    bool thread_started; /* by the first call */
    bool stopping;
    engine_request *waiters;     /* callers' requests, answered by the next report */
    uint64_t inline_records_max; /* ENGINE_VERIFY_INLINE_RECORDS_MAX; tests lower it to fork */
} engine_verify;

/* A ledger whose log is in PostgreSQL (follow.c): the thread that follows the leader's records,
 * tries to lead and keeps the members table, and what coffer_cluster_get says. */
typedef struct engine_cluster {
    bool on;       /* the log is in PostgreSQL */
    pg_log *watch; /* the follow thread's session: LISTEN, reads of the log, members */
    pg_log *lease; /* the session that tries for the lease; the log takes it over once it wins */
    uint32_t lease_ms;
    replayer replayer;    /* applies the leader's records, on the writer */
    pg_log_point applied; /* the row of the log the store reflects (follow thread) */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mutex; /* guards stopping, wake and the fields below it */
    pthread_cond_t wake;   /* the follow thread sleeps here while this instance leads */
    bool stopping;
    char leader[COFFER_CLUSTER_URL_MAX]; /* the last term row's leader; "" when none is known */
    uint64_t term;
    uint64_t caught_up_at_ns; /* a follower last read the log to its end then (monotonic) */
    bool paused; /* follow thread: memory waits for the index (logged once when it starts) */
    coffer_cluster_member members[COFFER_CLUSTER_MEMBERS_MAX];
    size_t members_count;
} engine_cluster;

struct coffer {
    store store;
    ledger ledger;
    coffer_options options;
    prefault prefault;

    pthread_t writer;
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* the writer waits here for requests */
    bool writer_idle;    /* waiting on `wake`, and nobody has signalled it yet */
    engine_request *queue_head, *queue_tail;
    uint64_t queue_events;
    bool stopping;

    /* enum coffer_role: STANDALONE, or for a log in PostgreSQL who this instance is now. Only
     * the writer changes it, between batches (follow.c). */
    _Atomic int role;
    engine_cluster cluster;
    /* Asks the index thread to check its last record against the log (engine_index_recheck). */
    _Atomic uint64_t index_epoch;

    /* Owned by the writer thread. */
    uint64_t last_seq;
    uint64_t last_timestamp;
    uint64_t batches;
    uint64_t events_applied;
    _Atomic uint64_t codes[COFFER_CODE_LIMIT]; /* read by coffer_code_counts() at any time */
    uint64_t recorded_since_snapshot;

    /* Durability (dir != NULL). The log thread owns log, tip and record. */
    char *dir;
    /* The options' log location and name, copied at open (options points at these). */
    char *log_location, *log_name;
    int lock_fd;
    durable_log log;
    uint64_t log_wake_ns; /* log_tick wants another call this soon (0: after the next round) */
    wal_tip tip;
    record_buffer record;
    record_scratch scratch;
    pthread_t log_thread;
    bool log_started;
    bool log_ready; /* log_mutex and its conditions are set up (durability_open succeeded) */
    pthread_mutex_t log_mutex;
    pthread_cond_t log_wake;  /* the log thread waits for tickets */
    bool log_idle;            /* waiting on `log_wake`, and nobody has signalled it yet */
    pthread_cond_t log_space; /* the writer waits for a free ticket */
    engine_ticket tickets[ENGINE_TICKETS_MAX];
    size_t tickets_head, tickets_count;
    bool log_stopping;
    atomic_bool storage_failed;
    atomic_uint_fast64_t fsyncs;
    atomic_uint_fast64_t durable_seq;
    /* durable_seq with the hash of the record that ends at it, for coffer_cluster_get: written
     * together by engine_publish_tip, read together by engine_tip; tip_busy (false when
     * zeroed) keeps the pair whole. */
    atomic_bool tip_busy;
    uint64_t published_seq;
    uint8_t published_hash[RECORD_HASH_BYTES];
    atomic_uint_fast64_t batch_events[COFFER_HISTOGRAM_BUCKETS];
    atomic_uint_fast64_t fsync_us[COFFER_HISTOGRAM_BUCKETS];
    atomic_uint_fast64_t batch_events_total, fsync_us_total;
    pid_t snapshot_child;  /* a forked snapshot writer, 0 when none (writer thread) */
    uint64_t snapshot_seq; /* the tip the running or last snapshot covers */
    uint64_t snapshots_taken;
    uint64_t snapshot_taken_at_s; /* CLOCK_MONOTONIC seconds of the last scheduled snapshot */

    engine_verify verify;

    /* The change feed's waiters (feed.c): the log thread wakes them after a sync. */
    pthread_mutex_t feed_mutex;
    pthread_cond_t feed_wake;
    atomic_uint feed_waiters;
    bool feed_closing;
    bool feed_ready;
    pg_read_pool *feed_pool; /* a log in PostgreSQL: the readers' sessions */

    /* Why the last submission refused for room was refused (coffer_capacity_detail): written
     * by the writer and read by callers, both under `mutex`. */
    char capacity_detail[192];
    /* The on-disk index's thread (indexer.c); NULL without a directory or index_on. */
    engine_indexer *indexer;
    /* Ids that memory evicted, looked up in the index before each batch (cold.c); counters of
     * ids checked against the index's filter and of reads the filter could not rule out. */
    engine_cold *cold;
    /* The index recovery opened and brought to the log's end (cold.c), until the indexer takes
     * it over (indexer_start). */
    index_db *cold_index;
    /* The records memory held after recovery's last eviction (engine_cold_recovery_evict). */
    uint64_t recovery_kept_records;
    atomic_uint_fast64_t cold_checks, cold_reads;
    /* Evictions (engine.c memory_upkeep): how many, and what they freed. */
    atomic_uint_fast64_t trims, trimmed_transfers, trimmed_history, trim_us_total;
    /* Submissions answered `overloaded` because memory was full while the index caught up. */
    atomic_uint_fast64_t overloaded_memory;
    bool evict_due; /* a submission found no room: evict after this batch (writer thread) */
    /* Room on the data directory's filesystem (disk.c): the reserve resolved at open (0: none),
     * its free bytes when last looked at (0 until then, or when it cannot be read) and when
     * (writer thread), whether submissions are refused for it, and how many were. */
    uint64_t disk_reserve;
    atomic_uint_fast64_t disk_free;
    uint64_t disk_checked_ns;
    bool disk_low;
    atomic_uint_fast64_t refused_disk;
};

/* Reads, as engine_read_fn: each runs on the writer between batches, for a job. */
struct account_read {
    const char *id;
    int at;
    uint64_t at_value;
    coffer_account *out;
};
int engine_account_read(coffer *db, void *context); /* struct account_read */

struct history_read {
    const char *id;
    uint64_t after_seq;
    size_t limit;
    coffer_history_entry *entries;
    size_t *count_out; /* how many entries were filled */
};
int engine_history_read(coffer *db, void *context); /* struct history_read */

struct transfer_read {
    const char *id;
    coffer_transfer *out;
};
int engine_transfer_read(coffer *db, void *context); /* struct transfer_read */

struct holds_read {
    const char *account_id;
    size_t limit;
    coffer_transfer *out;
    size_t *count_out; /* how many holds were filled */
};
int engine_holds_read(coffer *db, void *context); /* struct holds_read */
int engine_stats_read(coffer *db, void *context); /* coffer_stats */

/* What the engine keeps in a coffer_job's reserved words: the queued request and the
 * arguments of a read, which must live as long as the job. engine.c checks that it fits. */
typedef struct engine_job {
    engine_request request;
    union {
        struct account_read account;
        struct history_read history;
        struct transfer_read transfer;
        struct holds_read holds;
    } read;
} engine_job;

static inline engine_job *engine_job_of(coffer_job *job)
{
    return (engine_job *)(void *)job->reserved_;
}

/* Clears the job's request and makes it run `read` on `context` on the writer (a read), or
 * prepares an empty submission when `read` is NULL. */
engine_request *engine_job_request(coffer_job *job, engine_read_fn read, void *context);

/* Starts a prepared job. With job->on_done set (the _async calls) it is queued and this
 * returns at once: COFFER_OK, after which on_done is called exactly once when the job is
 * answered, or overloaded / shutting_down, in which case on_done is never called. With
 * on_done NULL (the blocking calls) it waits for the answer and returns its status. */
int engine_start(coffer *db, coffer_job *job);

/* True when `job` may be given to an _async call: it names its on_done. */
static inline bool engine_job_usable(const coffer_job *job)
{
    return job && job->on_done;
}

/* The histogram bucket of a value: the smallest i with value <= base * 2^i (capped). */
static inline int engine_bucket(uint64_t value, uint64_t base)
{
    int bucket = 0;
    while (bucket + 1 < COFFER_HISTOGRAM_BUCKETS && value > (base << bucket))
        bucket++;
    return bucket;
}

/* Writes one line to the engine's log (options.log, or stderr). */
void engine_log(coffer *db, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* The store's limits for `options` (coffer_options_init'ed): the caps, or the record limit
 * where they are 0, and the memory budget, or its default where it is 0. COFFER_OK, or
 * INVALID_ARGUMENT for a value out of range. `*defaulted` tells whether the budget is the
 * default (may be NULL). */
int engine_store_limits(const coffer_options *options, store_limits *out, bool *defaulted);

/* Releases answered requests: wakes the callers that wait, and calls the jobs' on_done. */
void engine_release(coffer *db, engine_request *requests, int failure);

/* verify.c: the invariant check on any store (live or rebuilt offline), and a way to add a
 * problem line to a report. engine_verify_init before the first coffer_verify call;
 * engine_verify_stop joins the verify thread (none may be waiting). */
void engine_verify_init(coffer *db);
void engine_verify_stop(coffer *db);
int engine_verify_store(const store *s, coffer_verify_report *report);
void engine_problem(coffer_verify_report *report, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* feed.c: the waiters of coffer_feed_wait. feed_init with the log; feed_notify after the
 * durable seq moved; feed_stop releases every waiter for good (at close); feed_destroy. */
int feed_init(coffer *db);
void feed_notify(coffer *db);
void feed_stop(coffer *db);
void feed_destroy(coffer *db);

/* indexer.c: the thread that keeps DATA/index behind the log. indexer_start after the log is
 * open (a failure is logged, and the engine runs without an index); indexer_stop before the
 * log closes; indexer_stats fills the index's part of coffer_stats. */
void indexer_start(coffer *db);
void indexer_stop(coffer *db);
void indexer_stats(const coffer *db, coffer_stats *out);
/*
 * For the writer's thread. engine_index_maybe and engine_index_filter wait for the indexer to
 * have filled its id filter (before that, and without an index: "maybe" for every id, NULL);
 * the flushed seq and the reader only for it to have opened the index (before: 0, NULL).
 * engine_index_maybe: false when the id of this store_hash was certainly never indexed; asked
 * only for ids of seqs <= engine_index_flushed_seq (whose acquire makes their adds visible).
 * engine_index_flushed_seq: the seq up to which the index is in RocksDB, 0 until it is open.
 * engine_index_reader: the index for reads of what memory evicted, NULL until it is open
 * (readable while its filter still fills).
 * engine_index_filter_bytes: the filter's memory (metrics, the memory budget).
 */
/* engine_index_usable: open and not stopped by a failure (what eviction needs).
 * engine_index_flush_soon: asks the index thread to flush sooner than its schedule.
 * engine_index_get_transfer: index_get_transfer on the open index; storage_failed without. */
bool engine_index_usable(const coffer *db);
/* engine_index_expected: the index is on and has not failed, maybe still opening (a full memory
 * then waits for it rather than being out of room). */
bool engine_index_expected(const coffer *db);
/* The staging limit the index is given (index_set_staging_max) under this memory budget. */
uint64_t engine_index_staging_max(const coffer *db);
/* The index's block cache under this memory budget (index_open_cached). */
uint64_t engine_index_cache_bytes(const coffer *db);
/* What the budget leaves for the process's memory that nothing sizes (code, RocksDB's work). */
uint64_t engine_process_allowance(const coffer *db);
/* What the index's staging and cache and the allowance take from the budget: all of them from
 * 256 MiB up, part of them below, nothing below 64 MiB (engine_tables_budget says why). */
uint64_t engine_budget_taken(const coffer *db);
/* The in-memory tables' share of the budget (store.budget.max): all of it without the index;
 * with it, what the index's filter, staging and cache and the process allowance leave. */
uint64_t engine_tables_budget(const coffer *db);
void engine_index_flush_soon(coffer *db);
int engine_index_get_transfer(const coffer *db, const char *id, size_t length, index_transfer *out);
bool engine_index_maybe(const coffer *db, uint64_t hash);
uint64_t engine_index_flushed_seq(const coffer *db);
index_db *engine_index_reader(const coffer *db);
const id_filter *engine_index_filter(const coffer *db); /* the filter itself, NULL when not ready */
uint64_t engine_index_filter_bytes(const coffer *db);
/* engine_index_recheck: rows may have left the log in PostgreSQL (the follow thread finds its
 * place again): until the index thread has found the index's last record in the log, nothing
 * reads the index and memory evicts nothing; when it is gone the index is no longer read, and
 * the next start rebuilds it. */
void engine_index_recheck(coffer *db);
bool engine_index_lost(const coffer *db); /* the index holds a record the log lost */

/* cold.c: answers for ids the store evicted. engine_cold_init registers the table with the
 * core; engine_cold_prepare empties it and looks up in the index every id of `events` (and
 * every hold a post or void names) that memory does not hold and the filter cannot rule out:
 * COFFER_OK, or STORAGE_FAILED / OUT_OF_MEMORY, and then the submission must not be applied. */
int engine_cold_init(coffer *db);
void engine_cold_free(coffer *db);
int engine_cold_prepare(coffer *db, const coffer_event *events, size_t count);
/* The same for a replayer's `prepare` (context: the coffer). */
int engine_cold_replay_prepare(void *context, const record_entry *entry);
/* Points the ledger at the cold table (engine_cold_init does; so must a ledger made anew). */
void engine_cold_attach(coffer *db);
/* Recovery and the index (cold.c): _begin, after the snapshot is loaded, opens the index and
 * brings it to the log's end when the snapshot evicted records; _evict, after each replayed
 * record, evicts what the replay applied once memory passes 3/4 of its budget (bringing the
 * index to the log's end first). COFFER_OK, or why recovery cannot go on (logged). */
int engine_cold_recovery_begin(coffer *db);
int engine_cold_recovery_evict(coffer *db, uint64_t replayed_seq);
/* A follower, on the running writer, before it applies a record of `record_bytes`: evicts what
 * the index holds once memory fills; false when the record would not fit before the index holds
 * more (the follow thread waits and reads it again). */
bool engine_cold_follow_room(coffer *db, size_t record_bytes);
/* The index recovery opened, for the indexer to take over (NULL when none). */
index_db *engine_cold_recovery_end(coffer *db);

/* index_audit.c: coffer_verify_dir's check of DIR/index, into the report's index fields. */
void engine_audit_index(const char *dir, const char *conninfo, coffer_dir_report *report);

/* "48 MiB", "1.5 GiB": a size as people give it (engine.c). */
void engine_format_bytes(uint64_t bytes, char *out, size_t size);

/* disk.c: room on the filesystem of the data directory. engine_disk_open resolves the reserve
 * (coffer_options.disk_reserve_bytes) and logs it; engine_disk_look, on the writer, looks at the
 * free space again when the last look is 100 ms old (a crossing of the reserve is logged; the
 * stats ask too, so that the metric stays fresh on an idle engine); engine_disk_low, before a
 * batch with submissions, says whether it is below the reserve (never in memory: no reserve);
 * engine_disk_refuse notes why `submissions` are refused (coffer_capacity_detail) and counts
 * them; engine_disk_room says whether
 * `bytes` more would still leave the reserve free (a snapshot asks before it starts). */
void engine_disk_open(coffer *db);
void engine_disk_look(coffer *db);
bool engine_disk_low(coffer *db);
void engine_disk_refuse(coffer *db, uint64_t submissions);
bool engine_disk_room(coffer *db, uint64_t bytes, uint64_t *free_bytes);

/* durability.c */
int durability_open(coffer *db, const char *dir);
/* Makes `tip` the durable tip readers see: durable_seq and, with it, its record's hash. Called by
 * the thread that owns the log at the time (the log thread, or the follow thread). */
void engine_publish_tip(coffer *db, const wal_tip *tip);
/* The last published tip: its seq, and its hash into `hash` (RECORD_HASH_BYTES). */
uint64_t engine_tip(coffer *db, uint8_t *hash);
void durability_close(coffer *db);
/* Starts the log thread over db->log (at the open of a leader, or when a follower takes over);
 * durability_stop_log answers everything handed to it and joins it (a leader stepping down). */
int durability_start_log(coffer *db);
void durability_stop_log(coffer *db);
/* Replays one checked record through `r` into the store, as recovery and a follower do: the
 * engine's seq and clock move past it and *tip becomes the record's. */
int durability_replay(coffer *db, replayer *r, const uint8_t *bytes, const record_header *header,
                      wal_tip *tip);
/* Loads the newest intact snapshot that `accept` takes (any when it is null) into the (empty)
 * store; *found tells whether there was one. */
int durability_load_snapshot(coffer *db, snapshot_accept_fn *accept, void *context,
                             snapshot_meta *meta, bool *found);
/* Waits until the log thread has written every ticket handed to it (writer thread). */
void durability_drain(coffer *db);
/* A free ticket for the next batch (waits while the log is its round depth behind). */
engine_ticket *durability_ticket(coffer *db);
/* Hands an applied batch to the log thread, which answers its requests once durable. */
void durability_publish(coffer *db, engine_ticket *ticket, engine_request *requests);
/* On the writer between batches: reaps a finished snapshot child and starts a new one when
 * options.snapshot_every_events have been recorded since the last. */
void durability_snapshot_tick(coffer *db);

/* follow.c: a log in PostgreSQL. follow_open at the open (durability_open): leads when the
 * lease is free, else follows; either way the store is caught up with the log when it returns.
 * follow_start once the writer runs; follow_stop before it stops. On the writer, before each
 * batch: follow_writer_tick (a leader whose log failed steps down there), then
 * engine_write_refusal says whether submissions may be applied. */
int follow_open(coffer *db, wal_tip *tip);
/* At the open, on the follow thread's session: visits the log's records after the one ending at
 * (after_seq, after_hash; NULL at seq 0) to its end. COFFER_OK, the visitor's code, or
 * storage_failed: with the reason in `error`, or with none when the log does not hold that
 * record. */
int follow_log_read(coffer *db, uint64_t after_seq, const uint8_t *after_hash, wal_record_fn visit,
                    void *context, char *error, size_t error_size);
int follow_start(coffer *db);
void follow_stop(coffer *db);
void follow_close(coffer *db); /* ends its sessions (durability_close) */
void follow_writer_tick(coffer *db);
/* A leader whose log in PostgreSQL failed: the writer steps it down without waiting for work. */
static inline bool follow_step_down_due(coffer *db)
{
    return db->cluster.on && atomic_load(&db->role) == COFFER_ROLE_LEADER &&
           atomic_load(&db->storage_failed);
}
/* COFFER_OK when this instance applies writes; NOT_LEADER or NO_LEADER when it follows. */
static inline int engine_write_refusal(const coffer *db)
{
    int role = atomic_load(&db->role);
    if (role == COFFER_ROLE_FOLLOWER)
        return COFFER_NOT_LEADER;
    return role == COFFER_ROLE_CANDIDATE ? COFFER_NO_LEADER : COFFER_OK;
}
/* Runs `read` on the writer, between batches, and waits for it: its status, or
 * SHUTTING_DOWN. `diagnostic`: runs even after a storage failure. */
int engine_run_on_writer(coffer *db, engine_read_fn read, void *context, bool diagnostic);

#endif
