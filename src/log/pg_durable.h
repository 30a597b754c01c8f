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

/* The file in a data directory whose log is in PostgreSQL (it holds snapshots only). */
#define PG_DURABLE_MARKER "log-in-postgresql"

/* Does `location` name a PostgreSQL log ("postgresql://", "postgres://" or a key=value
 * conninfo) rather than nothing? */
bool pg_durable_is_location(const char *location);

/* Connects to the log at `conninfo` (creating or upgrading its tables) and takes the lease:
 * on success this instance leads, its term row (naming `leader_name`, NULL: "") is the log's
 * last row, and log_read_from replays the log up to it. COFFER_STORAGE_FAILED with `error`
 * set when the database cannot be reached or another instance leads. */
int pg_durable_open(durable_log *log, const char *conninfo, const char *leader_name, char *error,
                    size_t error_size);

/* The chain position the log ends at (after the term row): what recovery must reach. */
void pg_durable_log_tail(const durable_log *log, uint64_t *last_seq, uint8_t *hash);

/* The server process of the log's session, for tests (0 when not connected). */
int pg_durable_backend_pid(const durable_log *log);

#endif
