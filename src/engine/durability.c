/*
 * durability.c — the log thread and recovery. The writer hands each applied batch over as a
 * ticket; the log thread encodes its recorded events as one record (chained to the previous
 * record's hash), checks the encoding, writes it, and after one fdatasync for every ticket it
 * took (group commit) answers their requests. A failed write or sync is sticky: the engine
 * refuses everything after it with storage_failed and never acknowledges what is not durable.
 * Recovery replays the log through the same core and checks each event records as it did.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "base/clock.h"
#include "engine/engine.h"
#include "engine/replay.h"
#include "log/checkpoint.h"
#include "log/pg_durable.h"
#include "log/snapshot.h"

/* ---- encoding a ticket --------------------------------------------------------------------- */

static bool result_recorded(const coffer_result *result)
{
    return result->seq != 0 && !result->replayed;
}

/* Adds the ticket's recorded events to db->record; returns the highest seq added (0: none). */
static uint64_t ticket_encode(coffer *db, const engine_ticket *ticket)
{
    const store *s = &db->store;
    record_buffer *out = &db->record;
    uint64_t last_seq = 0;
    record_begin(out, ticket->seq_base, ticket->ts0, db->tip.hash);
    for (size_t i = 0; i < ticket->expiries_count; i++) {
        const engine_expiry *expiry = &ticket->expiries[i];
        const store_transfer *hold = &s->transfers[expiry->hold];
        record_add_expire(out, expiry->result.seq, store_transfer_id(s, hold), hold->id_len,
                          &expiry->result);
        last_seq = expiry->result.seq;
    }
    for (const engine_request *request = ticket->requests; request; request = request->next) {
        if (!request->events || request->status != COFFER_OK)
            continue;
        if (request->atomic) {
            bool recorded = false;
            for (size_t i = 0; i < request->count; i++)
                recorded |= result_recorded(&request->results[i]);
            /* The entry spans every position of the submission, recorded or not (an account
             * in a failed batch records nothing but still has its seq). */
            if (recorded) {
                record_add_atomic(out, request->seq0, request->events, request->results,
                                  request->count, request->submitted_by);
                last_seq = request->seq0 + request->count - 1;
            }
            continue;
        }
        for (size_t i = 0; i < request->count; i++) {
            if (!result_recorded(&request->results[i]))
                continue;
            record_add_event(out, request->results[i].seq, &request->events[i],
                             &request->results[i], request->submitted_by);
            last_seq = request->results[i].seq;
        }
    }
    return last_seq;
}

/* Encodes, checks and writes one ticket's record (none when nothing was recorded). */
static int ticket_write(coffer *db, const engine_ticket *ticket, bool *wrote)
{
    uint64_t last_seq = ticket_encode(db, ticket);
    if (last_seq == 0)
        return COFFER_OK;
    uint8_t hash[RECORD_HASH_BYTES];
    if (!record_finish(&db->record, last_seq, hash))
        return COFFER_OUT_OF_MEMORY;
    /* Pair check: what we are about to write must read back as what we meant. */
    record_header header;
    COFFER_ASSERT(record_check_fresh(db->record.bytes, db->record.length, hash, &header) ==
                  RECORD_OK);
    COFFER_ASSERT(record_each(db->record.bytes, &header, &db->scratch, 0, 0) == RECORD_OK);
    wal_tip after = {last_seq, ticket->ts0 + (last_seq - ticket->seq_base), {0}};
    memcpy(after.hash, hash, RECORD_HASH_BYTES);
    int code = log_append(&db->log, db->record.bytes, db->record.length, &db->tip, &after);
    if (code != COFFER_OK)
        return code;
    db->tip = after;
    *wrote = true;
    return COFFER_OK;
}

/* ---- the durable tip ----------------------------------------------------------------------- */

static void tip_lock(coffer *db)
{
    while (atomic_exchange_explicit(&db->tip_busy, true, memory_order_acquire))
        ; /* held for a copy of 40 bytes */
}

static void tip_unlock(coffer *db)
{
    atomic_store_explicit(&db->tip_busy, false, memory_order_release);
}

void engine_publish_tip(coffer *db, const wal_tip *tip)
{
    tip_lock(db);
    db->published_seq = tip->last_seq;
    memcpy(db->published_hash, tip->hash, RECORD_HASH_BYTES);
    tip_unlock(db);
    atomic_store(&db->durable_seq, tip->last_seq);
}

uint64_t engine_tip(coffer *db, uint8_t *hash)
{
    tip_lock(db);
    uint64_t seq = db->published_seq;
    memcpy(hash, db->published_hash, RECORD_HASH_BYTES);
    tip_unlock(db);
    return seq;
}

/* ---- the log thread ------------------------------------------------------------------------ */

/* Makes a failure of the log sticky: writes and reads are refused until a restart. */
static void storage_failed(coffer *db)
{
    if (atomic_exchange(&db->storage_failed, true))
        return;
    char what[1024], outcome[512];
    log_describe_failure(&db->log, what, sizeof what, outcome, sizeof outcome);
    /* A log in PostgreSQL tells what happened: its leader steps down and follows (follow.c). */
    engine_log(db, "storage failed: %s; %s; %s", what,
               db->cluster.on ? "acknowledging nothing more, stepping down"
                              : "refusing writes and reads until restart",
               outcome);
}

static int tickets_write(coffer *db, size_t first, size_t count)
{
    bool wrote = false;
    int code = COFFER_OK;
    for (size_t k = 0; k < count && code == COFFER_OK; k++)
        code = ticket_write(db, &db->tickets[(first + k) % ENGINE_TICKETS_MAX], &wrote);
    if (code == COFFER_OK && wrote) {
        uint64_t start_ns = clock_monotonic_ns();
        code = log_sync(&db->log); /* with fsync off the local log does not sync */
        uint64_t us = (clock_monotonic_ns() - start_ns) / 1000;
        if (!db->options.fsync_never) {
            atomic_fetch_add(&db->fsync_us[engine_bucket(us, 16)], 1);
            atomic_fetch_add(&db->fsync_us_total, us);
            atomic_fetch_add(&db->fsyncs, 1);
        }
    }
    if (code != COFFER_OK)
        storage_failed(db);
    if (code == COFFER_OK) {
        wal_tip durable;
        log_tail(&db->log, &durable);
        engine_publish_tip(db, &durable);
        feed_notify(db);
    }
    return code;
}

/* The clock log_tick reads: the injected one when tests drive time, else the monotonic one. */
static uint64_t log_clock_ns(const coffer *db)
{
    if (db->options.clock_ns)
        return db->options.clock_ns(db->options.clock_context);
    return clock_monotonic_ns();
}

/* The log's upkeep (the local log's checkpoint) after the replies of a round, so its sync is
 * shared by a second of batches and delays none of their answers. */
static void log_upkeep(coffer *db)
{
    if (log_tick(&db->log, log_clock_ns(db), &db->log_wake_ns) != COFFER_OK)
        storage_failed(db);
}

/* Waits (log_mutex held) for tickets; when the log asked for upkeep, wakes then for it. */
static void log_wait(coffer *db)
{
    db->log_idle = true;
    if (db->log_wake_ns == 0 || atomic_load(&db->storage_failed)) {
        pthread_cond_wait(&db->log_wake, &db->log_mutex);
    } else {
        uint64_t wait_ns = db->log_wake_ns;
        if (wait_ns < 1000000u || wait_ns > CHECKPOINT_INTERVAL_NS)
            wait_ns = wait_ns < 1000000u ? 1000000u : CHECKPOINT_INTERVAL_NS;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        uint64_t nanoseconds = (uint64_t)deadline.tv_nsec + wait_ns;
        deadline.tv_sec += (time_t)(nanoseconds / 1000000000u);
        deadline.tv_nsec = (long)(nanoseconds % 1000000000u);
        if (pthread_cond_timedwait(&db->log_wake, &db->log_mutex, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&db->log_mutex);
            log_upkeep(db); /* the log thread alone touches the log */
            pthread_mutex_lock(&db->log_mutex);
        }
    }
    db->log_idle = false;
}

static void *log_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-log"); /* as ps, top and perf show it */
    coffer *db = argument;
    pthread_mutex_lock(&db->log_mutex);
    for (;;) {
        while (db->tickets_count == 0 && !db->log_stopping)
            log_wait(db);
        if (db->tickets_count == 0)
            break; /* stopping, and everything is answered */
        size_t first = db->tickets_head, count = db->tickets_count;
        pthread_mutex_unlock(&db->log_mutex);
        /* Group commit: every ticket queued so far shares one sync. */
        int code = atomic_load(&db->storage_failed) ? COFFER_STORAGE_FAILED
                                                    : tickets_write(db, first, count);
        for (size_t k = 0; k < count; k++) {
            engine_ticket *ticket = &db->tickets[(first + k) % ENGINE_TICKETS_MAX];
            engine_release(db, ticket->requests, code);
            ticket->requests = 0;
        }
        if (code == COFFER_OK)
            log_upkeep(db);
        pthread_mutex_lock(&db->log_mutex);
        db->tickets_head = (first + count) % ENGINE_TICKETS_MAX;
        db->tickets_count -= count;
        pthread_cond_signal(&db->log_space);
    }
    pthread_mutex_unlock(&db->log_mutex);
    return 0;
}

engine_ticket *durability_ticket(coffer *db)
{
    pthread_mutex_lock(&db->log_mutex);
    while (db->tickets_count >= log_round_records(&db->log))
        pthread_cond_wait(&db->log_space, &db->log_mutex);
    engine_ticket *ticket =
        &db->tickets[(db->tickets_head + db->tickets_count) % ENGINE_TICKETS_MAX];
    pthread_mutex_unlock(&db->log_mutex);
    return ticket;
}

void durability_publish(coffer *db, engine_ticket *ticket, engine_request *requests)
{
    pthread_mutex_lock(&db->log_mutex);
    COFFER_ASSERT(ticket ==
                  &db->tickets[(db->tickets_head + db->tickets_count) % ENGINE_TICKETS_MAX]);
    ticket->requests = requests;
    db->tickets_count++;
    bool wake = db->log_idle; /* a busy log thread takes the ticket with its next round */
    db->log_idle = false;
    pthread_mutex_unlock(&db->log_mutex);
    if (wake)
        pthread_cond_signal(&db->log_wake);
}

/* ---- snapshots ----------------------------------------------------------------------------- */

#define SNAPSHOTS_KEPT 2

/* Waits until the log thread has made every published batch durable. */
static void log_drain(coffer *db)
{
    pthread_mutex_lock(&db->log_mutex);
    while (db->tickets_count > 0)
        pthread_cond_wait(&db->log_space, &db->log_mutex);
    pthread_mutex_unlock(&db->log_mutex);
}

void durability_drain(coffer *db)
{
    log_drain(db);
}

static snapshot_meta snapshot_meta_now(const coffer *db)
{
    return (snapshot_meta){db->tip, db->last_seq, db->last_timestamp};
}

static void snapshot_reaped(coffer *db, int status)
{
    db->snapshot_child = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        db->snapshots_taken++;
        snapshot_prune(db->dir, SNAPSHOTS_KEPT);
        engine_log(db, "snapshot at seq %llu written", (unsigned long long)db->snapshot_seq);
    } else {
        engine_log(db,
                   "snapshot at seq %llu failed (child status %d); the log still has "
                   "everything",
                   (unsigned long long)db->snapshot_seq, status);
    }
}

/* A snapshot must cover durable state only, so the log is drained first; then a child process
 * writes the image of its copy-on-write memory while the writer goes on. */
void durability_snapshot_tick(coffer *db)
{
    int status;
    if (db->snapshot_child && waitpid(db->snapshot_child, &status, WNOHANG) == db->snapshot_child)
        snapshot_reaped(db, status);
    uint64_t every = db->options.snapshot_every_events;
    uint64_t seconds = db->options.snapshot_every_seconds;
    uint64_t now_s = clock_monotonic_ns() / 1000000000u;
    bool by_events = every && db->recorded_since_snapshot >= every;
    bool by_time =
        seconds && db->recorded_since_snapshot > 0 && now_s >= db->snapshot_taken_at_s + seconds;
    if ((!by_events && !by_time) || db->snapshot_child || atomic_load(&db->storage_failed))
        return;
    db->snapshot_taken_at_s = now_s;
    /* A snapshot takes about what the tables hold; it must not eat the disk's reserve. */
    uint64_t free_bytes;
    if (!engine_disk_room(db, db->store.budget.used, &free_bytes)) {
        char need[32], free_text[32], reserve[32];
        engine_format_bytes(db->store.budget.used, need, sizeof need);
        engine_format_bytes(free_bytes, free_text, sizeof free_text);
        engine_format_bytes(db->disk_reserve, reserve, sizeof reserve);
        engine_log(db,
                   "snapshot at seq %llu skipped: it needs about %s, and the filesystem of %s has "
                   "%s free, %s of it the reserve; the log still has everything",
                   (unsigned long long)db->last_seq, need, db->dir, free_text, reserve);
        db->recorded_since_snapshot = 0; /* tried again after as many events, or as long */
        return;
    }
    log_drain(db);
    if (atomic_load(&db->storage_failed))
        return;
    snapshot_meta meta = snapshot_meta_now(db);
    pid_t child = fork();
    if (child == 0) {
        char error[1024];
        int code = snapshot_write(&db->store, &meta, db->dir, error, sizeof error);
        if (code != COFFER_OK) {
            (void)!write(2, error, strlen(error));
            (void)!write(2, "\n", 1);
        }
        _exit(code == COFFER_OK ? 0 : 1);
    }
    if (child < 0) {
        engine_log(db, "snapshot: fork failed: %s", strerror(errno));
        return;
    }
    db->snapshot_child = child;
    db->snapshot_seq = meta.tip.last_seq;
    db->recorded_since_snapshot = 0;
}

/* At a clean close: wait for a running child, then write a final snapshot in this thread. */
static void snapshot_at_close(coffer *db)
{
    int status;
    if (db->snapshot_child && waitpid(db->snapshot_child, &status, 0) == db->snapshot_child)
        snapshot_reaped(db, status);
    if (atomic_load(&db->storage_failed) || db->tip.last_seq == db->snapshot_seq)
        return;
    snapshot_meta meta = snapshot_meta_now(db);
    char error[1024];
    if (snapshot_write(&db->store, &meta, db->dir, error, sizeof error) == COFFER_OK) {
        snapshot_prune(db->dir, SNAPSHOTS_KEPT);
        engine_log(db, "snapshot at seq %llu written at close",
                   (unsigned long long)meta.tip.last_seq);
    } else {
        engine_log(db, "%s", error);
    }
}

/* ---- recovery ------------------------------------------------------------------------------ */

/* What acknowledged records missing can take to say: one line each. */
#define RECOVERY_DAMAGE_BYTES 8192

typedef struct recovery {
    coffer *db;
    replayer replayer;
    wal_tip tip; /* the last record replayed */
    uint64_t records;
} recovery;

int durability_replay(coffer *db, replayer *r, const uint8_t *bytes, const record_header *header,
                      wal_tip *tip)
{
    int code = replay_record(r, bytes, header);
    if (code != COFFER_OK)
        return code;
    /* A snapshot's engine seq can be past its tip (seqs that recorded nothing). */
    if (header->last_seq > db->last_seq) {
        db->last_seq = r->last_seq;
        db->last_timestamp = r->last_timestamp;
    }
    tip->last_seq = header->last_seq;
    tip->last_timestamp = header->ts0 + (header->last_seq - header->seq_base);
    memcpy(tip->hash, header->hash, RECORD_HASH_BYTES);
    return COFFER_OK;
}

/* Replays each record the log hands over after the snapshot. */
static int recover_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                          uint64_t offset, void *context)
{
    recovery *r = context;
    int code = durability_replay(r->db, &r->replayer, bytes, header, &r->tip);
    if (code != COFFER_OK) {
        engine_log(r->db, "recovery: log segment %u offset %llu: %s (%s)", segment,
                   (unsigned long long)offset, r->replayer.problem, coffer_code_name(code));
        return code;
    }
    r->records++;
    return engine_cold_recovery_evict(r->db, header->last_seq);
}

int durability_load_snapshot(coffer *db, snapshot_accept_fn *accept, void *context,
                             snapshot_meta *meta, bool *found)
{
    char skipped[2048];
    int code = snapshot_load_newest(&db->store, db->dir, accept, context, meta, found, skipped,
                                    sizeof skipped);
    if (skipped[0])
        engine_log(db, "recovery: %s%s", skipped,
                   code == COFFER_OK ? " (skipped; using an older snapshot or the log)" : "");
    if (code != COFFER_OK)
        return code;
    if (*found) {
        db->last_seq = meta->last_seq;
        db->last_timestamp = meta->last_timestamp;
        db->snapshot_seq = meta->tip.last_seq;
        engine_log(db, "recovery: snapshot at seq %llu loaded",
                   (unsigned long long)meta->tip.last_seq);
    }
    if (*found && !meta->submitters_kept) {
        char problem[1024];
        code = replay_submitters(&db->store, db->dir, meta->tip.last_seq, problem, sizeof problem);
        engine_log(db, "recovery: the snapshot is of a format that kept no submitters: %s",
                   code == COFFER_OK ? "taken from the log" : problem);
    }
    return code;
}

/* Appends the accepted loss to DIR/data-loss.log, so it stays on record after the log lines. */
static void damage_record(coffer *db, const char *damage)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data-loss.log", db->dir);
    FILE *file = fopen(path, "a");
    if (!file) {
        engine_log(db, "cannot record the accepted data loss in %s: %s", path, strerror(errno));
        return;
    }
    fprintf(file, "%llu: opened with accept_data_loss at seq %llu:\n%s\n",
            (unsigned long long)time(0), (unsigned long long)db->last_seq, damage);
    fflush(file);
    (void)fsync(fileno(file));
    fclose(file);
}

/* Logs each line of `damage` after `verdict`. */
static void damage_log(coffer *db, const char *damage, const char *verdict)
{
    char lines[RECOVERY_DAMAGE_BYTES];
    snprintf(lines, sizeof lines, "%s", damage);
    for (char *line = strtok(lines, "\n"); line; line = strtok(0, "\n"))
        engine_log(db, "%s: %s", verdict, line);
}

/* Refuses the open when acknowledged records are missing, unless the options accept it. */
static int damage_verdict(coffer *db, const char *damage, int damage_count)
{
    if (damage_count == 0)
        return COFFER_OK;
    if (!db->options.accept_data_loss) {
        damage_log(db, damage, "recovery refused");
        engine_log(db, "recovery refused: acknowledged records are missing; put the files back, "
                       "or open with accept_data_loss (coffer serve --accept-data-loss) to "
                       "start without them");
        return COFFER_STORAGE_FAILED;
    }
    damage_log(db, damage, "DATA LOSS ACCEPTED");
    damage_record(db, damage);
    return COFFER_OK;
}

/* Replays the log after the snapshot through `reader` (the local log opened for reading: a
 * damaged tail is cut only once it is known not to hold acknowledged records, when the log is
 * opened for writing, so a refused open leaves the evidence in place). */
static int recover_log(coffer *db, durable_log *reader, const snapshot_meta *meta, bool found)
{
    recovery r = {db, {0}, {0}, 0};
    int code = replayer_init(&r.replayer, &db->store, &db->ledger);
    r.replayer.prepare = engine_cold_replay_prepare;
    r.replayer.prepare_context = db;
    if (code == COFFER_OK)
        code = engine_cold_recovery_begin(db);
    if (code == COFFER_OK)
        code = log_read_from(reader, found ? meta->tip.last_seq : 0, found ? meta->tip.hash : 0,
                             recover_record, &r);
    replayer_free(&r.replayer);
    const wal_scan_result *scan = local_log_last_read(reader);
    char damage[RECOVERY_DAMAGE_BYTES];
    int damage_count = local_log_damage(reader, damage, sizeof damage);
    if (code == COFFER_STORAGE_FAILED && scan->error[0]) {
        engine_log(db, "recovery refused: %s", scan->error);
        damage_log(db, damage, "recovery refused"); /* a missing segment, say, explains it */
    }
    if (code == COFFER_OK)
        code = damage_verdict(db, damage, damage_count);
    return code;
}

static int recover(coffer *db, durable_log *reader)
{
    snapshot_meta meta = {0};
    bool found = false;
    int code = durability_load_snapshot(db, 0, 0, &meta, &found);
    if (code == COFFER_OK)
        code = recover_log(db, reader, &meta, found);
    const wal_scan_result *scan = local_log_last_read(reader);
    if (code == COFFER_OK && found && scan->tip.last_seq < meta.tip.last_seq) {
        char path[4096];
        wal_segment_path(path, sizeof path, db->dir, scan->last_segment);
        engine_log(db,
                   "recovery refused: the log ends at seq %llu (%s, offset %llu), before the "
                   "snapshot at %llu",
                   (unsigned long long)scan->tip.last_seq, path,
                   (unsigned long long)scan->end_offset, (unsigned long long)meta.tip.last_seq);
        code = COFFER_STORAGE_FAILED;
    }
    if (code == COFFER_OK && !local_log_has_files(reader) && scan->last_segment)
        engine_log(db, "recovery: no checkpoint or manifest yet (a data directory from an "
                       "earlier version): starting them");
    return code;
}

static void recover_report(coffer *db, const wal_scan_result *scan)
{
    if (scan->truncated_bytes)
        engine_log(
            db,
            "recovery: truncated a torn tail of %llu bytes at the end of segment %u, after the "
            "acknowledged position (never acknowledged, or less than a second before a "
            "crash)",
            (unsigned long long)scan->truncated_bytes, scan->last_segment);
    engine_log(db, "recovered to seq %llu: %llu log records read from %llu segments",
               (unsigned long long)scan->tip.last_seq, (unsigned long long)scan->records,
               (unsigned long long)scan->segments);
}

/* ---- open and close ------------------------------------------------------------------------ */

static int lock_directory(coffer *db)
{
    if (mkdir(db->dir, 0755) != 0 && errno != EEXIST) {
        engine_log(db, "cannot create data directory %s: %s", db->dir, strerror(errno));
        return COFFER_STORAGE_FAILED;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", db->dir);
    db->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (db->lock_fd < 0 || flock(db->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        engine_log(db, "data directory %s is in use by another process (or unwritable: %s)",
                   db->dir, strerror(errno));
        return COFFER_STORAGE_FAILED;
    }
    return COFFER_OK;
}

/* The local log: recovery reads it; once it is known good, it is opened for writing after
 * it. *tip: where it ends. */
static int open_local_log(coffer *db, wal_tip *tip)
{
    if (access(db->dir, F_OK) == 0) {
        char marker[4096];
        snprintf(marker, sizeof marker, "%s/" PG_DURABLE_MARKER, db->dir);
        if (access(marker, F_OK) == 0) {
            engine_log(db,
                       "%s holds snapshots of a ledger whose log is in PostgreSQL: open it "
                       "with that log (coffer serve --log)",
                       db->dir);
            return COFFER_STORAGE_FAILED;
        }
    }
    durable_log reader = {0};
    wal_scan_result scan = {0};
    int code = local_log_open_read(&reader, db->dir, 0);
    if (code == COFFER_OK) {
        code = recover(db, &reader);
        scan = *local_log_last_read(&reader);
    }
    log_close(&reader, false);
    if (code == COFFER_OK) {
        local_log_options options = {db->options.io, db->options.segment_bytes_max,
                                     !db->options.fsync_never, log_clock_ns(db)};
        char error[1024];
        code = local_log_open(&db->log, db->dir, &scan, &options, error, sizeof error);
        if (code != COFFER_OK)
            engine_log(db, "%s", error);
    }
    if (code == COFFER_OK)
        recover_report(db, &scan);
    *tip = scan.tip;
    return code;
}

/* Marks the directory as holding snapshots only, so that the tools reading local segments
 * (and an open without the log) say why there are none instead of finding an empty ledger. */
static int mark_postgresql_directory(coffer *db)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" PG_DURABLE_MARKER, db->dir);
    FILE *file = fopen(path, "w");
    if (file) {
        fputs("This directory holds snapshots only: the ledger's log is in PostgreSQL.\n", file);
        if (fclose(file) == 0)
            return COFFER_OK;
    }
    engine_log(db, "cannot write %s: %s", path, strerror(errno));
    return COFFER_STORAGE_FAILED;
}

/* The log in PostgreSQL: this instance leads it or follows its leader (follow.c). */
static int open_postgresql_log(coffer *db, wal_tip *tip)
{
    int code = mark_postgresql_directory(db);
    if (code == COFFER_OK)
        code = follow_open(db, tip);
    return code;
}

int durability_start_log(coffer *db)
{
    COFFER_ASSERT(db->log_ready && !db->log_started && db->log.ops);
    db->log_stopping = false;
    /* A PostgreSQL log's lease needs its heartbeat from the start, before any round. */
    db->log_wake_ns = db->cluster.on ? 1 : 0;
    if (pthread_create(&db->log_thread, 0, log_main, db) != 0)
        return COFFER_INTERNAL;
    db->log_started = true;
    return COFFER_OK;
}

void durability_stop_log(coffer *db)
{
    if (!db->log_started)
        return;
    pthread_mutex_lock(&db->log_mutex);
    db->log_stopping = true;
    pthread_cond_signal(&db->log_wake);
    pthread_mutex_unlock(&db->log_mutex);
    pthread_join(db->log_thread, 0); /* it answers every ticket first */
    db->log_started = false;
}

int durability_open(coffer *db, const char *dir)
{
    db->dir = strdup(dir);
    if (!db->dir)
        return COFFER_OUT_OF_MEMORY;
    int code = lock_directory(db);
    wal_tip tip = {0};
    if (code == COFFER_OK)
        code = db->options.log_location ? open_postgresql_log(db, &tip) : open_local_log(db, &tip);
    if (code != COFFER_OK) {
        durability_close(db);
        return code;
    }
    db->tip = tip;
    engine_publish_tip(db, &tip);
    /* the time schedule counts from the open */
    db->snapshot_taken_at_s = clock_monotonic_ns() / 1000000000u;
    if (db->options.fsync_never)
        engine_log(db, "WARNING: fsync is off; acknowledged events can be lost in a crash");
    if (feed_init(db) != COFFER_OK) {
        durability_close(db);
        return COFFER_OUT_OF_MEMORY;
    }
    pthread_mutex_init(&db->log_mutex, 0);
    pthread_cond_init(&db->log_wake, 0);
    pthread_cond_init(&db->log_space, 0);
    db->log_ready = true;
    /* A follower has no log to write until it takes over. */
    if (db->log.ops && durability_start_log(db) != COFFER_OK) {
        durability_close(db);
        return COFFER_INTERNAL;
    }
    return COFFER_OK;
}

void durability_close(coffer *db)
{
    if (!db->dir)
        return;
    bool clean = db->log_ready;
    feed_stop(db);
    durability_stop_log(db);
    if (db->log_ready) {
        pthread_cond_destroy(&db->log_wake);
        pthread_cond_destroy(&db->log_space);
        pthread_mutex_destroy(&db->log_mutex);
        db->log_ready = false;
    }
    if (clean)
        snapshot_at_close(db);
    log_close(&db->log, clean && !atomic_load(&db->storage_failed));
    follow_close(db);
    for (size_t i = 0; i < ENGINE_TICKETS_MAX; i++)
        free(db->tickets[i].expiries);
    record_buffer_free(&db->record);
    record_scratch_free(&db->scratch);
    feed_destroy(db);
    if (db->lock_fd >= 0)
        close(db->lock_fd); /* releases the lock */
    db->lock_fd = -1;
    free(db->dir);
    db->dir = 0;
}
