/*
 * pg_durable.h — the log.h operations over the log in PostgreSQL (log/pg_log.h): a leader's
 * rounds are appended as one transaction each (group commit carries over), and the tail is
 * durable only once COMMIT returned. Losing the lease or a COMMIT of unknown outcome is a
 * sticky failure, never an acknowledgement.
 */
#ifndef COFFER_LOG_PG_DURABLE_H
#define COFFER_LOG_PG_DURABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "log/log.h"
#include "log/pg_log.h"

/* The file in a data directory whose log is in PostgreSQL (it holds snapshots only). */
#define PG_DURABLE_MARKER "log-in-postgresql"

/* Does `location` name a PostgreSQL log ("postgresql://", "postgres://" or a key=value
 * conninfo) rather than nothing? */
bool pg_durable_is_location(const char *location);

/* Leads through `leading`, a session that has just won pg_log_try_lead (its term row is the
 * log's last row): the durable_log takes the session over and ends it at log_close, which
 * frees the lease. `lease_ms`: the lease the session was taken with (the heartbeat sends a
 * statement every quarter of it). COFFER_OK or OUT_OF_MEMORY (the session is then the
 * caller's still). */
int pg_durable_open(durable_log *log, pg_log *leading, uint32_t lease_ms);

/* Opens the log for reading only (coffer verify, coffer dump): a session of pg_log_open_read,
 * one read-only snapshot of the log until log_close. log_read_from works (the tail is where the
 * last read ended); appends and syncs are refused; the lease is never taken. On failure
 * (COFFER_STORAGE_FAILED, or OUT_OF_MEMORY) `error` says why. */
int pg_durable_open_read(durable_log *log, const char *conninfo, char *error, size_t error_size);

/* Is `log` this implementation (rather than the local segments)? */
bool pg_durable_is_log(const durable_log *log);

/* What the last log_read_from visited: rows by kind, the last row's position, the chain tip it
 * ended at (the after_seq it started from when it visited no record), and the pg_log status it
 * failed with (PG_LOG_OK when it did not; INVALID_RECORD: damage; any other: the session or
 * a query failed, which says nothing about the log). tail_position: the last row's position
 * when the reader opened (its snapshot of the table ends there); standby: the reader's server
 * was a hot standby then (pg_log_reads_a_standby). */
typedef struct pg_durable_read {
    uint64_t records, term_rows;
    uint64_t position;
    wal_tip tip;
    int status;
    uint64_t tail_position;
    bool standby;
} pg_durable_read;

const pg_durable_read *pg_durable_last_read(const durable_log *log);

/* The chain position the log ends at (after the term row): what recovery must reach. */
void pg_durable_log_tail(const durable_log *log, uint64_t *last_seq, uint8_t *hash);

/* The server process of the log's session, for tests (0 when not connected). */
int pg_durable_backend_pid(const durable_log *log);

#endif
