/*
 * pg_durable.c — the second implementation of log.h: the records of a leader's rounds go to
 * the PostgreSQL table of log/pg_log.c. append keeps a copy of each record; sync sends all of
 * them as one statement and moves the tail only when COMMIT returned; tick keeps the leader's
 * session from idling past its lease; read_from replays the table in order.
 */
#include "log/pg_durable.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "base/clock.h"
#include "coffer.h"
#include "log/pg_log.h"

#define PG_READ_ROWS 1024
/* A round's records go in statements of at most this many bytes (one record may be more): 64
 * full batches could make one of most of a GiB, near PostgreSQL's limit for a message. */
#define PG_STATEMENT_BYTES_MAX ((size_t)64 << 20)

typedef struct pg_durable {
    pg_log *log;
    uint8_t *pending[PG_LOG_APPEND_RECORDS_MAX]; /* appended, not yet sent */
    size_t pending_lengths[PG_LOG_APPEND_RECORDS_MAX];
    size_t pending_count, pending_bytes;
    wal_tip appended, durable;
    uint64_t active_at_ns; /* the session's last statement, for the heartbeat */
    uint32_t lease_ms;
    bool read_only;            /* pg_durable_open_read: appends and syncs are refused */
    pg_durable_read last_read; /* what the last read_from visited */
    int failed_status;         /* a pg_log status; PG_LOG_OK until the first failure */
    char failure[600];
} pg_durable;

bool pg_durable_is_location(const char *location)
{
    return location && (strncmp(location, "postgresql://", 13) == 0 ||
                        strncmp(location, "postgres://", 11) == 0 || strchr(location, '='));
}

static void pending_clear(pg_durable *d)
{
    for (size_t i = 0; i < d->pending_count; i++)
        free(d->pending[i]);
    d->pending_count = d->pending_bytes = 0;
}

/* Makes a failure sticky: every later append and sync is refused. */
static int fail(pg_durable *d, int status, const char *what)
{
    d->last_read.status = status;
    if (d->failed_status == PG_LOG_OK) {
        d->failed_status = status;
        snprintf(d->failure, sizeof d->failure, "%s: %s (%.400s)", what, pg_log_status_name(status),
                 pg_log_error(d->log));
    }
    pending_clear(d);
    return COFFER_STORAGE_FAILED;
}

/* Sends the pending records as one statement: durable when it returns OK. */
static int pending_send(pg_durable *d)
{
    int status = pg_log_append_many(d->log, (const uint8_t *const *)d->pending, d->pending_lengths,
                                    d->pending_count);
    if (status != PG_LOG_OK)
        return fail(d, status, "appending to the PostgreSQL log");
    pending_clear(d);
    d->active_at_ns = clock_monotonic_ns();
    return COFFER_OK;
}

static int pg_append(void *state, const uint8_t *bytes, size_t length, const wal_tip *before,
                     const wal_tip *after)
{
    pg_durable *d = state;
    if (d->failed_status != PG_LOG_OK || d->read_only)
        return COFFER_STORAGE_FAILED;
    COFFER_ASSERT(before->last_seq == d->appended.last_seq && after->last_seq > before->last_seq);
    COFFER_ASSERT(d->pending_count < PG_LOG_APPEND_RECORDS_MAX);
    /* A round too large for one statement sends what it has first. Those records may then be
     * durable while the round fails: its requests are answered storage_failed all the same,
     * and a retry learns their outcome, as after a COMMIT of unknown outcome. */
    if (d->pending_count > 0 && d->pending_bytes + length > PG_STATEMENT_BYTES_MAX) {
        int code = pending_send(d);
        if (code != COFFER_OK)
            return code;
    }
    uint8_t *copy = malloc(length);
    if (!copy)
        return COFFER_OUT_OF_MEMORY;
    memcpy(copy, bytes, length);
    d->pending[d->pending_count] = copy;
    d->pending_lengths[d->pending_count++] = length;
    d->pending_bytes += length;
    d->appended = *after;
    return COFFER_OK;
}

/* The round's records in one statement (two or more only past PG_STATEMENT_BYTES_MAX): the
 * round is durable when it returns OK. */
static int pg_sync(void *state)
{
    pg_durable *d = state;
    if (d->failed_status != PG_LOG_OK || d->read_only)
        return COFFER_STORAGE_FAILED;
    if (d->pending_count > 0) {
        int code = pending_send(d);
        if (code != COFFER_OK)
            return code;
    }
    d->durable = d->appended;
    return COFFER_OK;
}

/* The heartbeat: a leader's session idle for its lease is ended by PostgreSQL, so an idle
 * engine sends a statement every quarter of the lease. */
static int pg_tick(void *state, uint64_t now_ns, uint64_t *wake_ns)
{
    (void)now_ns; /* an injected test clock: the lease runs on the real one */
    pg_durable *d = state;
    *wake_ns = 0;
    if (d->failed_status != PG_LOG_OK || d->read_only)
        return COFFER_OK;
    uint64_t every_ns = (uint64_t)d->lease_ms * 1000000u / 4;
    uint64_t now = clock_monotonic_ns();
    if (now - d->active_at_ns >= every_ns) {
        int status = pg_log_heartbeat(d->log);
        if (status != PG_LOG_OK)
            return fail(d, status, "keeping the lease on the PostgreSQL log");
        d->active_at_ns = now;
    }
    *wake_ns = d->active_at_ns + every_ns - now;
    if (*wake_ns == 0)
        *wake_ns = 1;
    return COFFER_OK;
}

typedef struct read_visit {
    wal_record_fn visit;
    void *context;
    pg_durable_read *counts;
    int code; /* what visit stopped with, or a record that does not decode */
} read_visit;

static int visit_row(const pg_log_row *row, void *context)
{
    read_visit *read = context;
    read->counts->position = row->position;
    if (row->kind != PG_LOG_ROW_RECORD) {
        read->counts->term_rows++;
        return 0; /* a term row holds no seq */
    }
    read->counts->records++;
    read->counts->tip.last_seq = row->last_seq;
    memcpy(read->counts->tip.hash, row->hash, RECORD_HASH_BYTES);
    record_header header;
    if (record_check(row->bytes, row->length, &header) != RECORD_OK) {
        read->code = COFFER_STORAGE_FAILED; /* pg_log checked it: only memory could change it */
        return 1;
    }
    read->counts->tip.last_timestamp = header.ts0 + (header.last_seq - header.seq_base);
    read->code = read->visit(row->bytes, &header, 0, row->position, read->context);
    return read->code != 0;
}

/* Finds where the chain at after_seq (a snapshot's) is in the log, then reads on to the end. */
static int pg_read_from(void *state, uint64_t after_seq, const uint8_t *after_hash,
                        wal_record_fn visit, void *context)
{
    pg_durable *d = state;
    pg_log_point from = {0};
    uint64_t tail_position = d->last_read.tail_position;
    bool standby = d->last_read.standby;
    memset(&d->last_read, 0, sizeof d->last_read);
    d->last_read.tail_position = tail_position;
    d->last_read.standby = standby;
    d->last_read.tip.last_seq = after_seq;
    if (after_hash)
        memcpy(d->last_read.tip.hash, after_hash, RECORD_HASH_BYTES);
    if (after_seq > 0) {
        bool present = false;
        int status = pg_log_find(d->log, after_seq, after_hash, &present, &from);
        if (status != PG_LOG_OK)
            return fail(d, status, "finding the snapshot's record in the PostgreSQL log");
        if (!present) {
            snprintf(d->failure, sizeof d->failure,
                     "no record of the PostgreSQL log ends at seq %llu with the snapshot's hash "
                     "(a snapshot of another ledger, or of records the log lost)",
                     (unsigned long long)after_seq);
            d->failed_status = d->last_read.status = PG_LOG_INVALID_RECORD;
            return COFFER_STORAGE_FAILED;
        }
    }
    d->last_read.position = from.position;
    read_visit read = {visit, context, &d->last_read, 0};
    for (;;) {
        uint32_t rows = 0;
        int status = pg_log_read(d->log, &from, PG_READ_ROWS, visit_row, &read, &rows);
        if (status != PG_LOG_OK)
            return fail(d, status, "reading the PostgreSQL log");
        if (read.code != 0)
            return read.code;
        if (rows == 0)
            break;
        d->active_at_ns = clock_monotonic_ns();
    }
    if (d->read_only)
        d->durable = d->last_read.tip;
    return COFFER_OK;
}

static void pg_tail(const void *state, wal_tip *tip)
{
    const pg_durable *d = state;
    *tip = d->durable;
}

static void pg_describe_failure(const void *state, char *what, size_t what_size, char *outcome,
                                size_t outcome_size)
{
    const pg_durable *d = state;
    snprintf(what, what_size, "%s", d->failure);
    const char *said =
        d->failed_status == PG_LOG_OUTCOME_UNKNOWN
            ? "the connection was lost while committing: the batches answered storage_failed "
              "may be in the log (restart, then retry them with the same ids to learn their "
              "outcome)"
        : d->failed_status == PG_LOG_NOT_LEADER
            ? "this instance no longer holds the lease (another may lead): nothing refused was "
              "written"
            : "nothing refused was written";
    snprintf(outcome, outcome_size, "%s", said);
}

static void pg_close(void *state, bool clean)
{
    (void)clean; /* every answered round is committed already: nothing to record */
    pg_durable *d = state;
    pending_clear(d);
    pg_log_close(d->log); /* ends the session, and the lease with it */
    free(d);
}

/* A round is one INSERT of up to PG_LOG_APPEND_RECORDS_MAX rows whose COMMIT waits for the
 * primary's flush and the standby's: deep rounds let every request that arrives during one join
 * the next, rather than wait a round more behind a writer held back (docs/benchmarks.md). */
static const log_ops pg_ops = {.append = pg_append,
                               .sync = pg_sync,
                               .tick = pg_tick,
                               .read_from = pg_read_from,
                               .tail = pg_tail,
                               .describe_failure = pg_describe_failure,
                               .close = pg_close,
                               .round_records = PG_LOG_APPEND_RECORDS_MAX};
_Static_assert(PG_LOG_APPEND_RECORDS_MAX <= LOG_ROUND_RECORDS_MAX, "a round fits the tickets");

int pg_durable_open(durable_log *log, pg_log *leading, uint32_t lease_ms)
{
    COFFER_ASSERT(pg_log_leading(leading));
    pg_durable *d = calloc(1, sizeof *d);
    if (!d)
        return COFFER_OUT_OF_MEMORY;
    d->log = leading;
    d->lease_ms = lease_ms;
    const pg_log_point *tail = pg_log_known_tail(d->log);
    d->durable.last_seq = tail->last_seq;
    memcpy(d->durable.hash, tail->hash, RECORD_HASH_BYTES);
    d->appended = d->durable;
    d->active_at_ns = clock_monotonic_ns();
    *log = (durable_log){&pg_ops, d};
    return COFFER_OK;
}

int pg_durable_open_read(durable_log *log, const char *conninfo, char *error, size_t error_size)
{
    pg_durable *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(error, error_size, "out of memory");
        return COFFER_OUT_OF_MEMORY;
    }
    int status = pg_log_open_read(conninfo, &d->log, error, error_size);
    if (status != PG_LOG_OK) {
        free(d);
        return COFFER_STORAGE_FAILED;
    }
    d->read_only = true;
    d->lease_ms = PG_LOG_LEASE_MS_DEFAULT;
    d->last_read.tail_position = pg_log_known_tail(d->log)->position;
    d->last_read.standby = pg_log_reads_a_standby(d->log);
    d->active_at_ns = clock_monotonic_ns();
    *log = (durable_log){&pg_ops, d};
    return COFFER_OK;
}

bool pg_durable_is_log(const durable_log *log)
{
    return log->ops == &pg_ops;
}

const pg_durable_read *pg_durable_last_read(const durable_log *log)
{
    COFFER_ASSERT(log->ops == &pg_ops);
    return &((const pg_durable *)log->state)->last_read;
}

void pg_durable_log_tail(const durable_log *log, uint64_t *last_seq, uint8_t *hash)
{
    COFFER_ASSERT(log->ops == &pg_ops);
    const pg_log_point *tail = pg_log_known_tail(((const pg_durable *)log->state)->log);
    *last_seq = tail->last_seq;
    memcpy(hash, tail->hash, RECORD_HASH_BYTES);
}

int pg_durable_backend_pid(const durable_log *log)
{
    COFFER_ASSERT(log->ops == &pg_ops);
    return pg_log_backend_pid(((const pg_durable *)log->state)->log);
}
