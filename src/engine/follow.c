/*
 * follow.c — an instance of a ledger whose log is in PostgreSQL. At the open it leads when the
 * lease is free, else it follows; a follow thread then reads the leader's rows as they come
 * (NOTIFY wakes it, a bounded wait polls), hands them to the writer to apply with the same core
 * as recovery, tries for the lease every quarter of it, and keeps the members table. A leader
 * whose log fails steps down on the writer and rebuilds as a follower from its snapshot.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/check.h"
#include "base/clock.h"
#include "engine/engine.h"
#include "log/pg_durable.h"

#define FOLLOW_WAIT_MS 100u            /* a follower polls the log at least this often */
#define FOLLOW_READ_ROWS 1024u         /* rows handed to the writer at a time, at most */
#define MEMBERS_EVERY_NS 1000000000ull /* this instance says it is alive that often */
#define MEMBERS_WITHIN_MS 10000u       /* members seen that recently are listed */
/* A follower that won the lease waits this long at most for its index, when memory is full,
 * to catch up to its term row. */
#define FOLLOW_PROMOTE_WAIT_NS 30000000000ull

/* Rows read from the log, copied (pg_log's are valid only during the visit) for the writer. */
typedef struct follow_row {
    int kind;
    uint64_t term;
    size_t offset, length;
    pg_log_point point; /* the log's point once this row is applied */
} follow_row;

typedef struct follow_rows {
    follow_row *rows;
    size_t count, capacity;
    uint8_t *bytes;
    size_t used, bytes_capacity;
    bool out_of_memory;
    bool at_open;        /* applied at the open (recovery), not on the running writer */
    size_t applied_rows; /* the rows of this page applied: all of them unless paused */
    bool paused;         /* memory is full until the index holds more: the rest waits */
    uint64_t records;    /* records applied, for the open's log line */
} follow_rows;

/* What the follow thread keeps between rounds. */
typedef struct follow_state {
    uint64_t sessions; /* pg_log_sessions of the watch session when last located */
    bool listening;
    bool relocate; /* find where the store stands in the log before reading on */
    uint64_t next_try_ns, next_members_ns;
    int lease_status; /* the last try's pg_log status, to log a change once */
} follow_state;

/* ---- the cluster's status, for coffer_cluster_get -------------------------------------------- */

static void note_leader(engine_cluster *c, uint64_t term, const char *name, size_t length)
{
    pthread_mutex_lock(&c->mutex);
    c->term = term;
    snprintf(c->leader, sizeof c->leader, "%.*s", (int)length, name);
    pthread_mutex_unlock(&c->mutex);
}

static const char *own_name(const coffer *db)
{
    return db->options.log_name ? db->options.log_name : "";
}

/* ---- applying rows --------------------------------------------------------------------------- */

static int rows_add(const pg_log_row *row, void *context)
{
    follow_rows *rows = context;
    if (rows->count == rows->capacity) {
        size_t capacity = rows->capacity ? 2 * rows->capacity : 64;
        follow_row *grown = realloc(rows->rows, capacity * sizeof *grown);
        if (!grown)
            return rows->out_of_memory = true;
        rows->rows = grown;
        rows->capacity = capacity;
    }
    if (rows->used + row->length > rows->bytes_capacity) {
        size_t capacity = 2 * (rows->used + row->length) + 4096;
        uint8_t *grown = realloc(rows->bytes, capacity);
        if (!grown)
            return rows->out_of_memory = true;
        rows->bytes = grown;
        rows->bytes_capacity = capacity;
    }
    memcpy(rows->bytes + rows->used, row->bytes, row->length);
    follow_row *kept = &rows->rows[rows->count++];
    *kept = (follow_row){row->kind,
                         row->term,
                         rows->used,
                         row->length,
                         {.position = row->position, .last_seq = row->last_seq, .term = row->term}};
    memcpy(kept->point.hash, row->hash, RECORD_HASH_BYTES);
    rows->used += row->length;
    return 0;
}

/* On the writer (or at the open, before it runs): replays each record with the same core as
 * recovery and notes each term row's leader. A record that does not replay means this store
 * and the log disagree: nothing more is served (storage_failed) rather than a wrong state.
 * With the index on, memory evicts what the index holds as it fills, as in recovery; on the
 * running writer the index may not hold enough yet, and the rest of the page then waits. */
static int apply_rows(coffer *db, void *context)
{
    follow_rows *rows = context;
    engine_cluster *c = &db->cluster;
    COFFER_ASSERT(atomic_load(&db->role) != COFFER_ROLE_LEADER);
    rows->applied_rows = 0;
    rows->paused = false;
    for (size_t i = 0; i < rows->count; i++, rows->applied_rows = i) {
        const follow_row *row = &rows->rows[i];
        const uint8_t *bytes = rows->bytes + row->offset;
        if (row->kind == PG_LOG_ROW_TERM) {
            note_leader(c, row->term, (const char *)bytes, row->length);
            continue;
        }
        if (!rows->at_open && !engine_cold_follow_room(db, row->length)) {
            rows->paused = true;
            break;
        }
        record_header header;
        int code = record_check(bytes, row->length, &header) == RECORD_OK
                       ? durability_replay(db, &c->replayer, bytes, &header, &db->tip)
                       : COFFER_STORAGE_FAILED;
        if (code == COFFER_OK && rows->at_open)
            code = engine_cold_recovery_evict(db, header.last_seq);
        if (code != COFFER_OK) {
            atomic_store(&db->storage_failed, true);
            engine_log(db,
                       "following: the record ending at seq %llu does not apply here: %s (%s); "
                       "refusing reads until restart",
                       (unsigned long long)header.last_seq, c->replayer.problem,
                       coffer_code_name(code));
            return code;
        }
        db->recorded_since_snapshot += header.last_seq - header.seq_base + 1;
        rows->records++;
    }
    engine_publish_tip(db, &db->tip);
    if (db->feed_ready)
        feed_notify(db);
    return COFFER_OK;
}

static int run(coffer *db, engine_read_fn fn, void *context, bool on_writer)
{
    return on_writer ? engine_run_on_writer(db, fn, context, false) : fn(db, context);
}

/* Reads and applies the rows after c->applied up to the log's end. Returns a pg_log status
 * (PG_LOG_OK: the end was reached); *code is COFFER_OK or why applying failed. A leading lease
 * session is kept alive between pages, since the catch-up runs on the watch session. */
static int follow_read(coffer *db, bool on_writer, int *code, uint64_t *records)
{
    engine_cluster *c = &db->cluster;
    follow_rows rows = {.at_open = !on_writer};
    int status = PG_LOG_OK;
    *code = COFFER_OK;
    for (;;) {
        rows.count = rows.used = 0;
        pg_log_point point = c->applied; /* moved only once its rows are applied */
        uint32_t read = 0;
        status = pg_log_read(c->watch, &point, FOLLOW_READ_ROWS, rows_add, &rows, &read);
        if (status != PG_LOG_OK || read == 0)
            break;
        if (rows.out_of_memory) {
            *code = COFFER_OUT_OF_MEMORY;
            break;
        }
        *code = run(db, apply_rows, &rows, on_writer);
        if (*code != COFFER_OK)
            break;
        if (rows.paused) {
            /* Memory is full of what the index does not hold yet: the follow thread reads the
             * rest again after a wait (overloaded: not caught up). */
            if (rows.applied_rows > 0)
                c->applied = rows.rows[rows.applied_rows - 1].point;
            if (!c->paused)
                engine_log(db,
                           "following: memory is full until the on-disk index holds more "
                           "(applied up to seq %llu); waiting for it",
                           (unsigned long long)c->applied.last_seq);
            c->paused = true;
            *code = COFFER_OVERLOADED;
            break;
        }
        if (c->paused)
            engine_log(db, "following: memory has room again (seq %llu)",
                       (unsigned long long)point.last_seq);
        c->paused = false;
        c->applied = point;
        if (c->lease && pg_log_leading(c->lease))
            pg_log_heartbeat(c->lease);
    }
    if (records)
        *records = rows.records;
    free(rows.rows);
    free(rows.bytes);
    return status;
}

/* ---- reading for the index ------------------------------------------------------------------ */

typedef struct record_visit {
    wal_record_fn visit;
    void *context;
    int code;
} record_visit;

static int visit_row(const pg_log_row *row, void *context)
{
    record_visit *v = context;
    if (row->kind != PG_LOG_ROW_RECORD)
        return 0;
    record_header header;
    v->code = record_peek(row->bytes, row->length, &header) == RECORD_OK
                  ? v->visit(row->bytes, &header, 0, row->position, v->context)
                  : COFFER_STORAGE_FAILED; /* pg_log_read checked it: cannot happen */
    return v->code != 0;
}

int follow_log_read(coffer *db, uint64_t after_seq, const uint8_t *after_hash, wal_record_fn visit,
                    void *context, char *error, size_t error_size)
{
    static const uint8_t start[RECORD_HASH_BYTES] = {0};
    engine_cluster *c = &db->cluster;
    error[0] = 0;
    bool present = false;
    pg_log_point point;
    int status =
        pg_log_find(c->watch, after_seq, after_hash ? after_hash : start, &present, &point);
    if (status == PG_LOG_OK && !present)
        return COFFER_STORAGE_FAILED; /* no reason: the log does not hold that record */
    record_visit v = {visit, context, 0};
    while (status == PG_LOG_OK && v.code == 0) {
        uint32_t read = 0;
        status = pg_log_read(c->watch, &point, FOLLOW_READ_ROWS, visit_row, &v, &read);
        if (read == 0)
            break;
        if (c->lease && pg_log_leading(c->lease))
            pg_log_heartbeat(c->lease); /* a leader's open: its lease must outlast the read */
    }
    if (status != PG_LOG_OK) {
        snprintf(error, error_size, "the log in PostgreSQL: %s (%s)", pg_log_error(c->watch),
                 pg_log_status_name(status));
        return COFFER_STORAGE_FAILED;
    }
    return v.code;
}

/* ---- rebuilding ------------------------------------------------------------------------------ */

/* Empties the store (and the engine's seq and clock) for a rebuild. */
static int store_reset(coffer *db)
{
    bool prefaulting = db->prefault.started; /* it may be touching the store's memory */
    if (prefaulting)
        prefault_stop(&db->prefault);
    store_limits limits = db->store.limits;
    ledger_free(&db->ledger);
    store_free(&db->store);
    int code = store_init(&db->store, &limits);
    if (code == COFFER_OK)
        code = ledger_init(&db->ledger, &db->store);
    if (code == COFFER_OK)
        engine_cold_attach(db); /* a new ledger asks the cold table again */
    if (prefaulting)
        prefault_start(&db->prefault);
    db->last_seq = db->last_timestamp = 0;
    db->tip = (wal_tip){0};
    db->snapshot_seq = 0;
    db->recorded_since_snapshot = 0;
    return code;
}

/* Where a rebuild starts: the newest local snapshot (when `in_log`, the newest whose record
 * the log holds, looked up on the watch session, which the follow thread leaves alone
 * meanwhile), or nothing. Afterwards, whether a snapshot was loaded and its seq. */
typedef struct rebuild_plan {
    coffer *db;
    bool from_snapshot, in_log;
    int status; /* a pg_log status: once a look-up fails, every snapshot is passed over */
    bool found;
    uint64_t snapshot_seq;
} rebuild_plan;

/* Takes a snapshot whose record the log holds, and says why a newer one is passed over: state
 * past what the log holds could disappear without this instance noticing. */
static bool snapshot_in_log(const wal_tip *tip, void *context)
{
    rebuild_plan *plan = context;
    if (plan->status != PG_LOG_OK)
        return false;
    bool present = false;
    pg_log_point at;
    plan->status = pg_log_find(plan->db->cluster.watch, tip->last_seq, tip->hash, &present, &at);
    if (plan->status == PG_LOG_OK && !present)
        engine_log(plan->db,
                   "following: passing over the local snapshot at seq %llu: the log in "
                   "PostgreSQL does not hold the record it ends with",
                   (unsigned long long)tip->last_seq);
    return plan->status == PG_LOG_OK && present;
}

/* On the writer (or at the open): the store as the snapshot `context` (a rebuild_plan) asks for
 * has it, or empty when there is none; c->applied is then its tip (position unknown). */
static int rebuild(coffer *db, void *context)
{
    rebuild_plan *plan = context;
    snapshot_meta meta = {0};
    plan->found = false;
    int code = store_reset(db);
    if (code == COFFER_OK && plan->from_snapshot)
        code = durability_load_snapshot(db, plan->in_log ? snapshot_in_log : 0, plan, &meta,
                                        &plan->found);
    if (code != COFFER_OK) {
        atomic_store(&db->storage_failed, true);
        engine_log(db, "following: rebuilding the store failed (%s); refusing reads until restart",
                   coffer_code_name(code));
        return code;
    }
    if (plan->found)
        db->tip = meta.tip;
    plan->snapshot_seq = db->tip.last_seq;
    engine_cluster *c = &db->cluster;
    c->applied = (pg_log_point){.last_seq = db->tip.last_seq};
    memcpy(c->applied.hash, db->tip.hash, RECORD_HASH_BYTES);
    engine_publish_tip(db, &db->tip);
    return COFFER_OK;
}

/* Finds the row of the log the store stands at. When the log no longer holds the record the
 * store ends with (a PostgreSQL failover lost it, or the snapshot is of another ledger), the
 * store is rebuilt from the newest local snapshot the log holds, or from nothing when it holds
 * none (or loses that one too meanwhile). A pg_log status; the store always stands on a point
 * of the log when it is OK. */
static int follow_locate(coffer *db, bool on_writer)
{
    engine_cluster *c = &db->cluster;
    /* A reconnect may follow a failover that lost rows the index holds, even when the store's
     * own last record is still in the log (the index runs ahead of a rebuilt store). */
    engine_index_recheck(db);
    for (int attempt = 0; attempt < 3; attempt++) {
        bool present = false;
        pg_log_point at;
        int status = pg_log_find(c->watch, c->applied.last_seq, c->applied.hash, &present, &at);
        if (status != PG_LOG_OK)
            return status;
        if (present) {
            c->applied = at;
            return PG_LOG_OK;
        }
        rebuild_plan plan = {
            .db = db, .from_snapshot = attempt == 0, .in_log = true, .status = PG_LOG_OK};
        engine_log(db,
                   "following: the log in PostgreSQL does not hold the record ending at seq "
                   "%llu that this instance has applied (lost in a PostgreSQL failover, or of "
                   "another ledger): rebuilding from %s",
                   (unsigned long long)c->applied.last_seq,
                   plan.from_snapshot ? "the newest local snapshot it holds" : "the log alone");
        if (run(db, rebuild, &plan, on_writer) != COFFER_OK)
            return PG_LOG_FAILED;
        if (plan.status != PG_LOG_OK)
            return plan.status;
        if (plan.found)
            engine_log(db, "following: rebuilt from the local snapshot at seq %llu",
                       (unsigned long long)plan.snapshot_seq);
        else
            engine_log(db, "following: rebuilt from the log alone (%s)",
                       plan.from_snapshot ? "the log holds no local snapshot's record"
                                          : "a second rebuild");
    }
    return PG_LOG_FAILED; /* the empty store's point (seq 0) is always in the log */
}

/* ---- leading --------------------------------------------------------------------------------- */

/* On the writer (or at the open): the lease session leads and the store has applied the log up
 * to its term row: the log thread takes the session over and writes are accepted. */
static int promote(coffer *db, void *context)
{
    (void)context;
    engine_cluster *c = &db->cluster;
    const pg_log_point *tail = pg_log_known_tail(c->lease);
    if (tail->last_seq != db->tip.last_seq ||
        memcmp(tail->hash, db->tip.hash, RECORD_HASH_BYTES) != 0) {
        engine_log(db, "not leading: the store ends at seq %llu, the log at %llu",
                   (unsigned long long)db->tip.last_seq, (unsigned long long)tail->last_seq);
        return COFFER_STORAGE_FAILED;
    }
    uint64_t term = pg_log_term(c->lease);
    int code = pg_durable_open(&db->log, c->lease, c->lease_ms);
    if (code != COFFER_OK)
        return code;
    c->lease = 0; /* the log's now: closing it ends the session and frees the lease */
    if (db->log_ready && durability_start_log(db) != COFFER_OK) {
        log_close(&db->log, false);
        return COFFER_INTERNAL;
    }
    const char *name = own_name(db);
    note_leader(c, term, name, strlen(name));
    engine_publish_tip(db, &db->tip);
    atomic_store(&db->role, COFFER_ROLE_LEADER);
    engine_log(db, "leading the log in PostgreSQL: term %llu, from seq %llu",
               (unsigned long long)term, (unsigned long long)db->tip.last_seq);
    return COFFER_OK;
}

/* A session that tries for the lease (another after the log took the last one over). */
static int lease_session(coffer *db, char *error, size_t error_size)
{
    engine_cluster *c = &db->cluster;
    if (c->lease)
        return PG_LOG_OK;
    pg_log_options options;
    pg_log_options_init(&options);
    options.lease_ms = c->lease_ms;
    options.leader_name = db->options.log_name;
    return pg_log_open(db->options.log_location, &options, &c->lease, error, error_size);
}

/* Sleeps FOLLOW_WAIT_MS, or until the close (c->wake). */
static void follow_sleep(engine_cluster *c)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += FOLLOW_WAIT_MS * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mutex);
    if (!c->stopping)
        pthread_cond_timedwait(&c->wake, &c->mutex, &deadline);
    pthread_mutex_unlock(&c->mutex);
}

static bool follow_stopping(engine_cluster *c)
{
    pthread_mutex_lock(&c->mutex);
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mutex);
    return stopping;
}

/* Every quarter of the lease: a follower tries to lead. Having won, it catches up with the log
 * to its own term row and the writer promotes it; otherwise it learns that a leader lives. */
static void follow_try_lead(coffer *db, follow_state *state)
{
    engine_cluster *c = &db->cluster;
    bool leading = false;
    char error[512] = "";
    int status = lease_session(db, error, sizeof error);
    if (status == PG_LOG_OK && (status = pg_log_try_lead(c->lease, &leading)) != PG_LOG_OK)
        snprintf(error, sizeof error, "%s", pg_log_error(c->lease));
    if (status != state->lease_status) /* once per change, not every half second */
        engine_log(db, "following: trying for the lease: %s%s%s", pg_log_status_name(status),
                   error[0] ? ": " : "", error);
    state->lease_status = status;
    if (status != PG_LOG_OK || !leading) {
        /* Both refuse writes: the one says where the leader is, the other that none is known. */
        atomic_store(&db->role, status == PG_LOG_OK ? COFFER_ROLE_FOLLOWER : COFFER_ROLE_CANDIDATE);
        return;
    }
    atomic_store(&db->role, COFFER_ROLE_CANDIDATE);
    int code = COFFER_OK;
    status = follow_read(db, true, &code, 0);
    /* Memory full of what the index does not hold yet: the catch-up to the term row waits for
     * it, keeping the lease, rather than give the lease up (bounded). */
    uint64_t deadline_ns = clock_monotonic_ns() + FOLLOW_PROMOTE_WAIT_NS;
    while (status == PG_LOG_OK && code == COFFER_OVERLOADED && clock_monotonic_ns() < deadline_ns &&
           !follow_stopping(c) && pg_log_heartbeat(c->lease) == PG_LOG_OK) {
        follow_sleep(c);
        status = follow_read(db, true, &code, 0);
    }
    if (status == PG_LOG_OK && code == COFFER_OK)
        code = engine_run_on_writer(db, promote, 0, false);
    if (status != PG_LOG_OK || code != COFFER_OK) {
        engine_log(db, "following: won the lease but could not lead (%s, %s): stepping down",
                   pg_log_status_name(status), coffer_code_name(code));
        if (c->lease)
            pg_log_step_down(c->lease);
        state->relocate = true;
    }
}

/* On the writer, between batches: a leader whose log failed (its lease lost, an append refused
 * or of unknown outcome) acknowledges nothing more. It answers what the log thread holds, ends
 * its session, rebuilds the store from its snapshot (the batches applied in memory may never
 * have become durable) and follows; the follow thread reads the log on from there. */
void follow_writer_tick(coffer *db)
{
    if (!follow_step_down_due(db))
        return;
    durability_stop_log(db); /* answers its tickets: storage_failed, never acknowledged */
    log_close(&db->log, false);
    engine_log(db, "stepping down: no longer leading the log in PostgreSQL; rebuilding from the "
                   "local snapshot and the log as a follower");
    engine_cluster *c = &db->cluster;
    note_leader(c, c->term, "", 0);
    rebuild_plan plan = {.db = db, .from_snapshot = true, .status = PG_LOG_OK};
    /* No longer leading either way: writes are refused without a ticket, since no log thread
     * is left to answer one. */
    atomic_store(&db->role, COFFER_ROLE_CANDIDATE);
    if (rebuild(db, &plan) != COFFER_OK)
        return; /* storage_failed stays: nothing is served */
    atomic_store(&db->storage_failed, false);
    pthread_mutex_lock(&c->mutex);
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mutex);
}

/* ---- members --------------------------------------------------------------------------------- */

static void members_refresh(coffer *db)
{
    engine_cluster *c = &db->cluster;
    if (db->options.log_name && db->options.log_name[0])
        pg_log_member_seen(c->watch, db->options.log_name, atomic_load(&db->role),
                           atomic_load(&db->durable_seq));
    pg_log_member found[COFFER_CLUSTER_MEMBERS_MAX];
    size_t count = 0;
    if (pg_log_members(c->watch, MEMBERS_WITHIN_MS, found, COFFER_CLUSTER_MEMBERS_MAX, &count) !=
        PG_LOG_OK)
        return;
    pthread_mutex_lock(&c->mutex);
    for (size_t i = 0; i < count; i++) {
        coffer_cluster_member *member = &c->members[i];
        snprintf(member->advertise, sizeof member->advertise, "%.*s",
                 (int)sizeof member->advertise - 1, found[i].advertise);
        member->role = found[i].role;
        member->applied_seq = found[i].applied_seq;
        member->seen_at = found[i].seen_at_ms;
    }
    c->members_count = count;
    pthread_mutex_unlock(&c->mutex);
}

/* ---- the follow thread ----------------------------------------------------------------------- */

/* One round of a follower: find where the store stands after a reconnect or a step down, apply
 * what is new, and every quarter of the lease try to lead. */
static void follow_round(coffer *db, follow_state *state, uint64_t now_ns)
{
    engine_cluster *c = &db->cluster;
    if (!state->listening)
        state->listening = pg_log_listen(c->watch) == PG_LOG_OK;
    if (state->relocate || pg_log_sessions(c->watch) != state->sessions) {
        state->sessions = pg_log_sessions(c->watch);
        if (follow_locate(db, true) != PG_LOG_OK)
            return;
        state->relocate = false;
    }
    int code = COFFER_OK;
    int status = follow_read(db, true, &code, 0);
    if (status == PG_LOG_INVALID_RECORD)
        state->relocate = true; /* rows that do not continue the store: where does it stand? */
    if (status == PG_LOG_OK && code == COFFER_OK) {
        pthread_mutex_lock(&c->mutex);
        c->caught_up_at_ns = clock_monotonic_ns();
        pthread_mutex_unlock(&c->mutex);
    }
    if (code != COFFER_OK)
        return;
    /* An instance whose index holds what the log lost could not answer for evicted ids: it
     * leaves the lease to the others until a restart rebuilds its index. */
    if (now_ns >= state->next_try_ns && !engine_index_lost(db)) {
        state->next_try_ns = now_ns + (uint64_t)c->lease_ms * 1000000u / 4;
        follow_try_lead(db, state);
    }
}

/* While this instance leads: sleeps (woken at close or by a step down), and hurries the writer
 * when the log has failed so that it steps down now rather than at its next batch. */
static void lead_round(coffer *db, follow_state *state)
{
    engine_cluster *c = &db->cluster;
    if (state->listening) {
        /* A leader does not read the log: its session must not pile up notifications. */
        pg_log_unlisten(c->watch);
        state->listening = false;
    }
    state->relocate = true; /* should it step down, it starts over from its snapshot */
    if (atomic_load(&db->storage_failed)) {
        pthread_mutex_lock(&db->mutex);
        db->writer_idle = false;
        pthread_cond_signal(&db->wake);
        pthread_mutex_unlock(&db->mutex);
    }
    follow_sleep(c);
}

static void *follow_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-follow"); /* as ps, top and perf show it */
    coffer *db = argument;
    engine_cluster *c = &db->cluster;
    follow_state state = {.sessions = pg_log_sessions(c->watch), .lease_status = PG_LOG_OK};
    while (!follow_stopping(c)) {
        uint64_t now_ns = clock_monotonic_ns();
        if (now_ns >= state.next_members_ns) {
            state.next_members_ns = now_ns + MEMBERS_EVERY_NS;
            members_refresh(db);
        }
        if (atomic_load(&db->role) == COFFER_ROLE_LEADER) {
            lead_round(db, &state);
            continue;
        }
        if (!atomic_load(&db->storage_failed))
            follow_round(db, &state, now_ns);
        bool woken = false;
        if (c->paused)
            follow_sleep(c); /* memory waits for the index: a NOTIFY would only read it again */
        else if (atomic_load(&db->role) != COFFER_ROLE_LEADER)
            pg_log_wait(c->watch, FOLLOW_WAIT_MS, &woken);
    }
    return 0;
}

/* ---- open, start, stop ----------------------------------------------------------------------- */

/* The store caught up with the log at the open: the newest local snapshot the log holds, then
 * every row after it. A leader's catch-up must end at its own term row. */
static int open_catch_up(coffer *db, bool leading)
{
    engine_cluster *c = &db->cluster;
    snapshot_meta meta = {0};
    bool found = false;
    rebuild_plan plan = {.db = db, .from_snapshot = true, .in_log = true, .status = PG_LOG_OK};
    int code = durability_load_snapshot(db, snapshot_in_log, &plan, &meta, &found);
    if (code != COFFER_OK)
        return code;
    db->tip = found ? meta.tip : (wal_tip){0};
    c->applied = (pg_log_point){.last_seq = db->tip.last_seq};
    memcpy(c->applied.hash, db->tip.hash, RECORD_HASH_BYTES);
    int status = plan.status == PG_LOG_OK ? follow_locate(db, false) : plan.status;
    uint64_t records = 0;
    /* A snapshot taken after an eviction: the index first, brought to the log's end. */
    if (status == PG_LOG_OK && (code = engine_cold_recovery_begin(db)) != COFFER_OK)
        return code;
    if (status == PG_LOG_OK)
        status = follow_read(db, false, &code, &records);
    if (status != PG_LOG_OK || code != COFFER_OK) {
        engine_log(db, "recovery refused: reading the log in PostgreSQL: %s",
                   status != PG_LOG_OK ? pg_log_error(c->watch) : coffer_code_name(code));
        return code != COFFER_OK ? code : COFFER_STORAGE_FAILED;
    }
    engine_log(db, "recovered to seq %llu: %llu records read from the PostgreSQL log",
               (unsigned long long)db->tip.last_seq, (unsigned long long)records);
    return leading ? promote(db, 0) : COFFER_OK;
}

int follow_open(coffer *db, wal_tip *tip)
{
    engine_cluster *c = &db->cluster;
    c->on = true;
    pthread_mutex_init(&c->mutex, 0);
    pthread_cond_init(&c->wake, 0);
    pg_log_options options;
    pg_log_options_init(&options);
    options.leader_name = db->options.log_name;
    c->lease_ms = options.lease_ms;
    char error[512] = "";
    int status = pg_log_open(db->options.log_location, &options, &c->watch, error, sizeof error);
    if (status == PG_LOG_OK)
        status = pg_log_open(db->options.log_location, &options, &c->lease, error, sizeof error);
    bool leading = false;
    if (status == PG_LOG_OK && (status = pg_log_try_lead(c->lease, &leading)) != PG_LOG_OK)
        snprintf(error, sizeof error, "%s", pg_log_error(c->lease));
    if (status != PG_LOG_OK) {
        engine_log(db, "cannot open the log in PostgreSQL: %s", error);
        return COFFER_STORAGE_FAILED;
    }
    if (replayer_init(&c->replayer, &db->store, &db->ledger) != COFFER_OK)
        return COFFER_OUT_OF_MEMORY;
    /* What memory evicted is looked up in the index, as recovery does. */
    c->replayer.prepare = engine_cold_replay_prepare;
    c->replayer.prepare_context = db;
    if (!leading) {
        char leader[COFFER_CLUSTER_URL_MAX] = "";
        uint64_t term = 0;
        pg_log_last_term(c->watch, &term, leader, sizeof leader);
        note_leader(c, term, leader, strlen(leader));
        atomic_store(&db->role, COFFER_ROLE_FOLLOWER);
        engine_log(db, "another instance leads the log in PostgreSQL (%s, term %llu): following",
                   leader[0] ? leader : "unnamed", (unsigned long long)term);
    }
    int code = open_catch_up(db, leading);
    *tip = db->tip;
    return code;
}

int follow_start(coffer *db)
{
    engine_cluster *c = &db->cluster;
    if (pthread_create(&c->thread, 0, follow_main, db) != 0)
        return COFFER_INTERNAL;
    c->thread_started = true;
    return COFFER_OK;
}

void follow_stop(coffer *db)
{
    engine_cluster *c = &db->cluster;
    if (!c->thread_started)
        return;
    pthread_mutex_lock(&c->mutex);
    c->stopping = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mutex);
    pthread_join(c->thread, 0);
    c->thread_started = false;
}

void follow_close(coffer *db)
{
    engine_cluster *c = &db->cluster;
    if (!c->on)
        return;
    follow_stop(db);
    pg_log_close(c->watch);
    pg_log_close(c->lease);
    c->watch = c->lease = 0;
    replayer_free(&c->replayer);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->mutex);
    c->on = false;
}
