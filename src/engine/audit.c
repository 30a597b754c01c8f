/*
 * audit.c — coffer_verify_dir() and coffer_dump_dir(): offline checks of a data directory and
 * its log event by event. Nothing is modified: the directory may belong to a running engine.
 *
 * verify: (1) the hash chain of every record from the first; (2) a full replay into fresh
 * state; (3) the newest snapshot compared with the replay at the snapshot's seq; (4) what
 * recovery would build (snapshot + log after it) compared with the full replay; (5) every
 * invariant of the replayed state; (6) the on-disk index against the log (index_audit.c). Records
 * are read through the log interface (log/log.h): the local log opened for reading, or the log in
 * PostgreSQL opened for reading (coffer_verify_log, coffer_dump_log: one read-only snapshot of the
 * table; the directory, when one is given, holds the snapshots only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coffer.h"

#include "core/ledger.h"
#include "engine/engine.h"
#include "engine/replay.h"
#include "log/checkpoint.h"
#include "log/log.h"
#include "log/pg_durable.h"
#include "log/snapshot.h"

/* A store with its core, rebuilt from files. */
typedef struct rebuilt {
    store store;
    ledger ledger;
    replayer replayer;
    bool ready;
} rebuilt;

static int rebuilt_init(rebuilt *r, const coffer_options *limits)
{
    memset(r, 0, sizeof *r);
    /* The caller's struct may be older and shorter: only the part it knows is read. */
    coffer_options options;
    coffer_options_init(&options);
    if (limits)
        memcpy(&options, limits, limits->size < sizeof options ? limits->size : sizeof options);
    store_limits capacities;
    int code = engine_store_limits(&options, &capacities, 0);
    if (code == COFFER_OK)
        code = store_init(&r->store, &capacities);
    if (code == COFFER_OK)
        code = ledger_init(&r->ledger, &r->store);
    if (code == COFFER_OK)
        code = replayer_init(&r->replayer, &r->store, &r->ledger);
    r->ready = code == COFFER_OK;
    return code;
}

static void rebuilt_free(rebuilt *r)
{
    replayer_free(&r->replayer);
    ledger_free(&r->ledger);
    store_free(&r->store);
}

static int hold_ref_order(const void *x, const void *y)
{
    const store_hold_ref *a = x, *b = y;
    if (a->expires_at != b->expires_at)
        return a->expires_at < b->expires_at ? -1 : 1;
    return a->transfer < b->transfer ? -1 : a->transfer > b->transfer;
}

/* The heap entries of pending holds, sorted: the heap also keeps stale entries of holds
 * resolved since, which the live sweep drops and a replay need not, so only these compare. */
static store_hold_ref *pending_holds(const store *s, size_t *count)
{
    store_hold_ref *out = malloc((s->holds_count + 1) * sizeof *out);
    *count = 0;
    if (!out)
        return 0;
    for (uint64_t i = 0; i < s->holds_count; i++)
        if (s->transfers[s->holds[i].transfer].state == COFFER_STATE_PENDING)
            out[(*count)++] = s->holds[i];
    qsort(out, *count, sizeof *out, hold_ref_order);
    return out;
}

static bool holds_differ(const store *a, const store *b, char *out, size_t size)
{
    size_t a_count, b_count;
    store_hold_ref *a_holds = pending_holds(a, &a_count), *b_holds = pending_holds(b, &b_count);
    bool differ = !a_holds || !b_holds || a_count != b_count;
    for (size_t i = 0; !differ && i < a_count; i++)
        differ = snapshot_records_differ(SNAPSHOT_HOLDS, &a_holds[i], &b_holds[i]);
    if (differ)
        snprintf(out, size, "pending holds by expiry: %zu against %zu, or in another order",
                 a_count, b_count);
    free(a_holds);
    free(b_holds);
    return differ;
}

/* Names the first difference between two stores, or returns false when they are equal. */
static bool stores_differ(const store *a, const store *b, char *out, size_t size)
{
    struct {
        const char *name;
        const void *left, *right;
        uint64_t left_count, right_count;
        size_t record_size;
        int snapshot_table; /* compared field by field; -1: bytes (the arena) */
    } tables[] = {
        {"accounts", a->accounts, b->accounts, a->accounts_count, b->accounts_count,
         sizeof(store_account), SNAPSHOT_ACCOUNTS},
        {"transfers", a->transfers, b->transfers, a->transfers_count, b->transfers_count,
         sizeof(store_transfer), SNAPSHOT_TRANSFERS},
        {"history", a->history, b->history, a->history_count, b->history_count,
         sizeof(store_history), SNAPSHOT_HISTORY},
        {"expiries", a->expiries, b->expiries, a->expiries_count, b->expiries_count,
         sizeof(store_expiry), SNAPSHOT_EXPIRIES},
        {"ids and metadata", a->arena, b->arena, a->arena_used, b->arena_used, 1, -1},
        {"submitters", a->submitters, b->submitters, a->submitters_count, b->submitters_count,
         sizeof(store_submitter), SNAPSHOT_SUBMITTERS},
    };
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        if (tables[t].left_count != tables[t].right_count) {
            snprintf(out, size, "%s: %llu records against %llu", tables[t].name,
                     (unsigned long long)tables[t].left_count,
                     (unsigned long long)tables[t].right_count);
            return true;
        }
        for (uint64_t i = 0; i < tables[t].left_count; i++) {
            size_t at = (size_t)i * tables[t].record_size;
            const char *left = (const char *)tables[t].left + at;
            const char *right = (const char *)tables[t].right + at;
            if (tables[t].snapshot_table >= 0
                    ? !snapshot_records_differ(tables[t].snapshot_table, left, right)
                    : memcmp(left, right, tables[t].record_size) == 0)
                continue;
            if (t == 0)
                snprintf(out, size, "account %.64s differs", a->accounts[i].id);
            else
                snprintf(out, size, "%s: record %llu differs", tables[t].name,
                         (unsigned long long)i);
            return true;
        }
    }
    return holds_differ(a, b, out, size);
}

/* ---- a snapshot that evicted records ------------------------------------------------------ */

/* The id of a held transfer, for messages. */
static const char *transfer_name(const store *s, const store_transfer *t, char *out, size_t size)
{
    snprintf(out, size, "%.*s", (int)t->id_len, store_transfer_id(s, t));
    return out;
}

static bool account_differs(const store_account *a, const store_account *b)
{
    return memcmp(a->id, b->id, sizeof a->id) != 0 || a->debits_posted != b->debits_posted ||
           a->credits_posted != b->credits_posted || a->debits_held != b->debits_held ||
           a->credits_held != b->credits_held || memcmp(a->currency, b->currency, 16) != 0 ||
           a->version != b->version || a->flags != b->flags || a->min_balance != b->min_balance ||
           a->max_balance != b->max_balance || a->history_count != b->history_count ||
           a->holds_pending != b->holds_pending || a->created_seq != b->created_seq ||
           a->created_at != b->created_at || a->metadata_len != b->metadata_len;
}

static bool transfer_differs(const store_transfer *a, const store_transfer *b)
{
    return a->seq != b->seq || a->timestamp != b->timestamp || a->amount != b->amount ||
           a->amount_requested != b->amount_requested || a->expires_at != b->expires_at ||
           a->from != b->from || a->to != b->to || a->code != b->code || a->op != b->op ||
           a->state != b->state || a->flags != b->flags || a->field != b->field ||
           a->submitter != b->submitter;
}

static bool entry_differs(const store *full, const store_history *a, const store *trimmed,
                          const store_history *b)
{
    const store_transfer *at = &full->transfers[a->transfer],
                         *bt = &trimmed->transfers[b->transfer];
    return a->seq != b->seq || a->balance != b->balance || a->available != b->available ||
           a->ordinal != b->ordinal || a->kind != b->kind || a->debit != b->debit ||
           at->id_len != bt->id_len ||
           memcmp(store_transfer_id(full, at), store_transfer_id(trimmed, bt), at->id_len) != 0;
}

/*
 * A snapshot taken after memory evicted records holds part of what the full replay holds, and
 * at other places, so the two are compared by content rather than record by record: every
 * account's figures and metadata, every transfer the snapshot holds against the replay's of the
 * same id, every history entry it holds against the replay's at the same place in the account's
 * chain, and the pending holds (all held in memory). The evicted part is the index's, which
 * verify checks against the log on its own.
 */
static bool trimmed_differs(const store *full, const store *trimmed, char *out, size_t size)
{
    char name[COFFER_TRANSFER_ID_MAX + 1];
    if (full->accounts_count != trimmed->accounts_count) {
        snprintf(out, size, "accounts: %llu records against %llu",
                 (unsigned long long)full->accounts_count,
                 (unsigned long long)trimmed->accounts_count);
        return true;
    }
    for (uint64_t i = 0; i < trimmed->accounts_count; i++) {
        const store_account *a = &full->accounts[i], *b = &trimmed->accounts[i];
        if (account_differs(a, b) ||
            memcmp(full->arena + a->metadata_offset, trimmed->arena + b->metadata_offset,
                   a->metadata_len) != 0) {
            snprintf(out, size, "account %.64s differs", a->id);
            return true;
        }
        /* Its history entries held in memory, newest first, against the replay's. */
        uint32_t x = a->history_last, y = b->history_last;
        for (; y != STORE_NONE; x = full->history[x].previous, y = trimmed->history[y].previous) {
            if (x == STORE_NONE ||
                entry_differs(full, &full->history[x], trimmed, &trimmed->history[y])) {
                snprintf(out, size, "account %.64s: its history entry at seq %llu differs", a->id,
                         (unsigned long long)trimmed->history[y].seq);
                return true;
            }
        }
    }
    uint64_t pending = 0;
    for (uint64_t i = 0; i < trimmed->transfers_count; i++) {
        const store_transfer *t = &trimmed->transfers[i];
        uint32_t j = store_transfer_find(full, store_transfer_id(trimmed, t), t->id_len,
                                         store_hash(store_transfer_id(trimmed, t), t->id_len));
        if (j == STORE_NONE || transfer_differs(&full->transfers[j], t)) {
            snprintf(out, size, "transfer %s %s", transfer_name(trimmed, t, name, sizeof name),
                     j == STORE_NONE ? "is not in the log" : "differs");
            return true;
        }
        pending += t->state == COFFER_STATE_PENDING;
    }
    if (pending != full->holds_pending || trimmed->holds_pending != full->holds_pending) {
        snprintf(out, size, "pending holds: %llu against %llu", (unsigned long long)pending,
                 (unsigned long long)full->holds_pending);
        return true;
    }
    return false;
}

typedef struct progress_forward {
    coffer_progress_fn progress;
    void *context;
    const char *stage;
} progress_forward;

typedef struct full_replay {
    rebuilt *state;
    const rebuilt *snapshot; /* compared when the replay reaches its seq; NULL: none */
    uint64_t snapshot_seq;
    coffer_dir_report *report;
    bool compared;
    bool postgresql;                 /* `offset` is a coffer_log position, not a byte offset */
    const progress_forward *forward; /* PostgreSQL: rows read of the tail's position */
    uint64_t rows_total;
} full_replay;

static int full_replay_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                              uint64_t offset, void *context)
{
    full_replay *run = context;
    if (run->postgresql && run->forward && run->forward->progress)
        run->forward->progress(run->forward->stage, offset, run->rows_total, run->forward->context);
    int code = replay_record(&run->state->replayer, bytes, header);
    if (code != COFFER_OK) {
        if (run->postgresql)
            snprintf(run->report->chain_error, sizeof run->report->chain_error,
                     "coffer_log row at position %llu (seq %llu..%llu) does not replay: %s",
                     (unsigned long long)offset, (unsigned long long)header->seq_base,
                     (unsigned long long)header->last_seq, run->state->replayer.problem);
        else
            snprintf(run->report->chain_error, sizeof run->report->chain_error,
                     "segment %u offset %llu does not replay: %s", segment,
                     (unsigned long long)offset, run->state->replayer.problem);
        return code;
    }
    if (run->snapshot && header->last_seq == run->snapshot_seq) {
        run->compared = true;
        const store *snapshot = &run->snapshot->store, *replayed = &run->state->store;
        char *error = run->report->snapshot_error;
        size_t error_size = sizeof run->report->snapshot_error;
        run->report->snapshot_matches =
            snapshot->trimmed_seq ? !trimmed_differs(replayed, snapshot, error, error_size)
                                  : !stores_differ(snapshot, replayed, error, error_size);
    }
    return 0;
}

static int tail_replay_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                              uint64_t offset, void *context)
{
    (void)segment;
    (void)offset;
    rebuilt *state = context;
    return replay_record(&state->replayer, bytes, header);
}

static void forward_progress(uint64_t done, uint64_t total, void *context)
{
    const progress_forward *forward = context;
    forward->progress(forward->stage, done, total, forward->context);
}

static void hex(char *out, const uint8_t *bytes, size_t length)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < length; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * length] = 0;
}

/* Where the log is read: the segment files of `dir`, or the log in PostgreSQL at `conninfo`
 * (then `dir`, when not NULL, holds the snapshots to check against it). */
typedef struct log_source {
    const char *dir;
    const char *conninfo;
    const local_log_read_options *local_options;
    const progress_forward *forward; /* the PostgreSQL log's progress; NULL: none */
} log_source;

static int source_open(const log_source *source, durable_log *reader, char *error,
                       size_t error_size)
{
    error[0] = 0;
    if (source->conninfo)
        return pg_durable_open_read(reader, source->conninfo, error, error_size);
    return local_log_open_read(reader, source->dir, source->local_options);
}

/* Why the last read of `reader` stopped ("" when the reader said nothing: the visit did). */
static void source_read_error(const durable_log *reader, char *out, size_t size)
{
    out[0] = 0;
    if (!reader->ops)
        return;
    if (pg_durable_is_log(reader)) {
        char outcome[256];
        log_describe_failure(reader, out, size, outcome, sizeof outcome);
    } else {
        snprintf(out, size, "%s", local_log_last_read(reader)->error);
    }
}

/* Snapshot + the log after it, as recovery would build it, compared with the full replay. A
 * local log is opened again; `shared`, a PostgreSQL reader, is read again in the same
 * snapshot of the table as the full replay, so a leader appending meanwhile changes nothing. */
static void check_recovery(const log_source *source, durable_log *shared, rebuilt *snapshot,
                           const rebuilt *full, const uint8_t *snapshot_hash,
                           coffer_dir_report *report)
{
    durable_log own = {0};
    durable_log *reader = shared;
    char error[1024] = "";
    int code = COFFER_OK;
    if (!reader) {
        reader = &own;
        code = source_open(source, reader, error, sizeof error);
    }
    if (code == COFFER_OK)
        code = log_read_from(reader, report->snapshot_seq, snapshot_hash, tail_replay_record,
                             snapshot);
    if (code != COFFER_OK) {
        if (!error[0])
            source_read_error(reader, error, sizeof error);
        snprintf(report->snapshot_error, sizeof report->snapshot_error,
                 "recovery from the snapshot fails: %.900s",
                 error[0] ? error : snapshot->replayer.problem);
        log_close(&own, false);
        return;
    }
    log_close(&own, false);
    report->recovery_matches = !stores_differ(
        &full->store, &snapshot->store, report->snapshot_error, sizeof report->snapshot_error);
}

/* The newest snapshot of `dir` into `snapshot`, with what the report says about it. */
static int load_snapshot(const log_source *source, rebuilt *snapshot, snapshot_meta *meta,
                         coffer_dir_report *report)
{
    int code = snapshot_load_latest(&snapshot->store, source->dir, meta, &report->snapshot_found,
                                    report->snapshot_error, sizeof report->snapshot_error);
    if (code != COFFER_OK || !report->snapshot_found || meta->submitters_kept)
        return code;
    if (source->conninfo) {
        /* An older snapshot format names no submitters; they are rebuilt from a local log
         * only. Not damage: a warning, and the instance's next snapshot is checked. */
        snprintf(report->snapshot_error, sizeof report->snapshot_error,
                 "the snapshot at seq %llu is of a format older than 3 (without submitters): "
                 "not checked against a PostgreSQL log (warning; the instance's next snapshot "
                 "is of the current format)",
                 (unsigned long long)meta->tip.last_seq);
        report->snapshot_unchecked = true;
        return COFFER_OK;
    }
    return replay_submitters(&snapshot->store, source->dir, meta->tip.last_seq,
                             report->snapshot_error, sizeof report->snapshot_error);
}

/* The replay never reached the snapshot's seq: says why in the report. A log that ends before
 * the snapshot is missing acknowledged records (the snapshot was written after them), unless it
 * was read from a hot standby, which may just be behind its primary: then it is a warning and
 * the operator checks against the primary. */
static void snapshot_not_reached(coffer_dir_report *report, uint64_t snapshot_seq)
{
    char *out = report->snapshot_error;
    size_t size = sizeof report->snapshot_error;
    unsigned long long seq = snapshot_seq, last = report->last_seq;
    if (snapshot_seq <= report->last_seq)
        snprintf(out, size, "the snapshot's seq %llu is not the end of any log record", seq);
    else if (report->log_standby) {
        snprintf(out, size,
                 "the log ends at seq %llu, before this snapshot (seq %llu): read from a hot "
                 "standby, which may be behind its primary (or rows were lost); not checked "
                 "(warning): run it against the primary, where this is a problem",
                 last, seq);
        report->snapshot_unchecked = true;
    } else if (report->log_postgresql)
        snprintf(out, size,
                 "the log ends at seq %llu, before this snapshot (seq %llu): acknowledged records "
                 "are missing (rows lost, or the database restored to an earlier point); this "
                 "server is not a standby, so it is not lag",
                 last, seq);
    else
        snprintf(out, size,
                 "the log ends at seq %llu, before this snapshot (seq %llu): acknowledged records "
                 "are missing",
                 last, seq);
}

/* The whole audit into a report of this library's size. */
static int verify_source(const log_source *source, const coffer_options *limits,
                         coffer_dir_report *report)
{
    memset(report, 0, sizeof *report);
    report->log_postgresql = source->conninfo != 0;
    rebuilt full, snapshot;
    memset(&snapshot, 0, sizeof snapshot); /* freed below even when `full` fails first */
    int code = rebuilt_init(&full, limits);
    if (code == COFFER_OK)
        code = rebuilt_init(&snapshot, limits);
    if (code != COFFER_OK) {
        rebuilt_free(&snapshot);
        rebuilt_free(&full);
        return code;
    }
    snapshot_meta meta = {0};
    if (source->dir)
        code = load_snapshot(source, &snapshot, &meta, report);
    report->snapshot_seq = meta.tip.last_seq;

    full_replay run = {&full,
                       report->snapshot_found && !report->snapshot_unchecked ? &snapshot : 0,
                       meta.tip.last_seq,
                       report,
                       false,
                       source->conninfo != 0,
                       source->forward,
                       0};
    durable_log reader = {0};
    wal_scan_result scan = {0};
    char error[sizeof report->chain_error];
    code = source_open(source, &reader, error, sizeof error);
    if (code != COFFER_OK) {
        /* Nothing was read (no connection, no coffer log there): the checks did not run. */
        snprintf(report->chain_error, sizeof report->chain_error, "%s", error);
        rebuilt_free(&snapshot);
        rebuilt_free(&full);
        return code;
    }
    if (pg_durable_is_log(&reader))
        run.rows_total = pg_durable_last_read(&reader)->tail_position;
    code = log_read_from(&reader, 0, 0, full_replay_record, &run);
    if (run.postgresql && run.forward && run.forward->progress && code == COFFER_OK)
        run.forward->progress(run.forward->stage, run.rows_total, run.rows_total,
                              run.forward->context);
    source_read_error(&reader, error, sizeof error);
    if (pg_durable_is_log(&reader)) {
        const pg_durable_read *read = pg_durable_last_read(&reader);
        if (read->status != PG_LOG_OK && read->status != PG_LOG_INVALID_RECORD) {
            /* The session or the query failed: that says nothing about the log. */
            snprintf(report->chain_error, sizeof report->chain_error, "%s", error);
            log_close(&reader, false);
            rebuilt_free(&snapshot);
            rebuilt_free(&full);
            return COFFER_STORAGE_FAILED;
        }
        scan.records = read->records;
        scan.tip = read->tip;
        report->term_rows = read->term_rows;
        report->log_standby = read->standby;
    } else {
        scan = *local_log_last_read(&reader);
        log_close(&reader, false);
    }
    report->chain_ok = code == COFFER_OK;
    if (!report->chain_ok && error[0])
        snprintf(report->chain_error, sizeof report->chain_error, "%s", error);
    /* Acknowledged records missing: a segment gone or shortened, a log cut before its
     * checkpoint. */
    if (!source->conninfo &&
        log_files_check(source->dir, &scan, report->chain_error, sizeof report->chain_error) > 0)
        report->chain_ok = false;
    report->records = scan.records;
    report->segments = scan.segments;
    report->last_seq = scan.tip.last_seq;
    report->torn_bytes = scan.truncated_bytes;
    hex(report->tip_hash, scan.tip.hash, RECORD_HASH_BYTES);
    if (report->chain_ok && run.snapshot && !run.compared && meta.tip.last_seq > 0)
        snapshot_not_reached(report, meta.tip.last_seq);
    /* Recovery from a snapshot that evicted records reads them from the index, which an offline
     * replay does not: the snapshot was compared by content, and the index is checked below. */
    if (report->chain_ok && report->snapshot_found && run.compared && report->snapshot_matches &&
        snapshot.store.trimmed_seq)
        report->recovery_matches = true;
    else if (report->chain_ok && report->snapshot_found && run.compared && report->snapshot_matches)
        check_recovery(source, reader.ops ? &reader : 0, &snapshot, &full, meta.tip.hash, report);
    log_close(&reader, false);
    if ((!report->snapshot_found && !report->snapshot_error[0]) || report->snapshot_unchecked)
        report->snapshot_matches = report->recovery_matches = true; /* recovery = full replay */
    code = engine_verify_store(&full.store, &report->invariants);
    if (report->chain_ok && source->dir)
        engine_audit_index(source->dir, source->conninfo, report);
    report->ok = report->chain_ok && report->snapshot_matches && report->recovery_matches &&
                 report->invariants.ok && (!report->index_found || report->index_ok);
    rebuilt_free(&snapshot);
    rebuilt_free(&full);
    return code;
}

/* A directory whose log is in PostgreSQL holds no segments to read: says so in `error`. */
static bool log_in_postgresql(const char *dir, char *error, size_t error_size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" PG_DURABLE_MARKER, dir);
    if (access(path, F_OK) != 0)
        return false;
    snprintf(error, error_size,
             "%.600s holds snapshots only: its log is in PostgreSQL. Read the log with coffer "
             "verify (or dump) CONNINFO, and check these snapshots against it with coffer "
             "verify %.200s --log CONNINFO",
             dir, dir);
    return true;
}

/* Runs the audit of `source` and hands the caller the part of the report it knows. */
static int verify_sized(const log_source *source, const coffer_options *options,
                        coffer_dir_report *report, size_t size_bytes)
{
    coffer_dir_report *full = calloc(1, sizeof *full);
    if (!full)
        return COFFER_OUT_OF_MEMORY;
    int code = COFFER_NOT_SUPPORTED;
    if (source->conninfo ||
        !log_in_postgresql(source->dir, full->chain_error, sizeof full->chain_error))
        code = verify_source(source, options, full);
    /* A caller built with an older header knows a shorter report: give it what it knows. */
    memset(report, 0, size_bytes);
    memcpy(report, full, size_bytes < sizeof *full ? size_bytes : sizeof *full);
    free(full);
    return code;
}

static bool limits_readable(const coffer_options *options)
{
    return !options ||
           options->size >= offsetof(coffer_options, transfers_max) + sizeof options->transfers_max;
}

int coffer_verify_dir_sized(const char *dir, const coffer_options *options,
                            coffer_progress_fn progress, void *progress_context,
                            coffer_dir_report *report, size_t size_bytes)
{
    if (!dir || !report || size_bytes == 0 || !limits_readable(options))
        return COFFER_INVALID_ARGUMENT;
    progress_forward forward = {progress, progress_context, "log"};
    local_log_read_options read_options = {progress ? forward_progress : 0, &forward};
    log_source source = {dir, 0, &read_options, 0};
    return verify_sized(&source, options, report, size_bytes);
}

int coffer_verify_log_sized(const char *log_location, const char *dir,
                            const coffer_options *options, coffer_progress_fn progress,
                            void *progress_context, coffer_dir_report *report, size_t size_bytes)
{
    if (!log_location || !pg_durable_is_location(log_location) || !report || size_bytes == 0 ||
        !limits_readable(options))
        return COFFER_INVALID_ARGUMENT;
    progress_forward forward = {progress, progress_context, "log"};
    log_source source = {dir, log_location, 0, &forward};
    return verify_sized(&source, options, report, size_bytes);
}

/* ---- dump ---------------------------------------------------------------------------------- */

typedef struct dump_state {
    coffer_log_entry_fn visit;
    void *context;
    int stopped; /* the callback's non-zero answer */
    const record_header *header;
    uint32_t segment;
    uint64_t offset;
    record_scratch scratch;
} dump_state;

static int dump_entry(const record_entry *entry, void *context)
{
    dump_state *state = context;
    for (size_t i = 0; i < entry->count; i++) {
        uint64_t seq = entry->seq + i;
        coffer_log_entry out = {
            .seq = seq,
            .timestamp = state->header->ts0 + (seq - state->header->seq_base),
            .segment = state->segment,
            .offset = state->offset,
            .outcome = entry->results ? &entry->results[i] : 0,
            .submitted_by = entry->submitted_by,
        };
        coffer_event expiry = {.op = COFFER_OP_EXPIRE, .hold_id = entry->hold_id};
        if (entry->kind == RECORD_EXPIRE) {
            out.event = &expiry;
        } else {
            out.event = &entry->events[i];
            if (entry->kind == RECORD_ATOMIC) {
                out.atomic_first_seq = entry->seq;
                out.atomic_events = entry->count;
            }
        }
        state->stopped = state->visit(&out, state->context);
        if (state->stopped)
            return state->stopped;
    }
    return 0;
}

static int dump_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    dump_state *state = context;
    state->header = header;
    state->segment = segment;
    state->offset = offset;
    int status = record_each(bytes, header, &state->scratch, dump_entry, state);
    if (state->stopped)
        return state->stopped;
    return status == RECORD_OK ? 0 : COFFER_STORAGE_FAILED;
}

/* Every event of the log of `source`, in seq order. */
static int dump_source(const log_source *source, coffer_log_entry_fn visit, void *context,
                       char *error, size_t error_size)
{
    dump_state state = {visit, context, 0, 0, 0, 0, {0}};
    durable_log reader = {0};
    char read_error[1024];
    int code = source_open(source, &reader, read_error, sizeof read_error);
    if (code != COFFER_OK) {
        if (error_size)
            snprintf(error, error_size, "%s", read_error);
        return code;
    }
    code = log_read_from(&reader, 0, 0, dump_record, &state);
    record_scratch_free(&state.scratch);
    source_read_error(&reader, read_error, sizeof read_error);
    if (!state.stopped && code != COFFER_OK && error_size)
        snprintf(error, error_size, "%s", read_error[0] ? read_error : "a record does not parse");
    log_close(&reader, false);
    return state.stopped ? state.stopped : code;
}

int coffer_dump_dir(const char *dir, coffer_log_entry_fn visit, void *context, char *error,
                    size_t error_size)
{
    if (!dir || !visit || (!error && error_size))
        return COFFER_INVALID_ARGUMENT;
    if (error_size)
        error[0] = 0;
    char refused[1024];
    if (log_in_postgresql(dir, refused, sizeof refused)) {
        if (error_size)
            snprintf(error, error_size, "%s", refused);
        return COFFER_NOT_SUPPORTED;
    }
    log_source source = {dir, 0, 0, 0};
    return dump_source(&source, visit, context, error, error_size);
}

int coffer_dump_log(const char *log_location, coffer_log_entry_fn visit, void *context, char *error,
                    size_t error_size)
{
    if (!log_location || !pg_durable_is_location(log_location) || !visit || (!error && error_size))
        return COFFER_INVALID_ARGUMENT;
    if (error_size)
        error[0] = 0;
    log_source source = {0, log_location, 0, 0};
    return dump_source(&source, visit, context, error, error_size);
}
