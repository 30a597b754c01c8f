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

/* The chain position the log ends at (after the term row): what recovery must reach. */
void pg_durable_log_tail(const durable_log *log, uint64_t *last_seq, uint8_t *hash);

/* The server process of the log's session, for tests (0 when not connected). */
int pg_durable_backend_pid(const durable_log *log);

#endif
