/*
 * pg_cursor.h — the change feed's reader of a log in PostgreSQL: log/cursor.h's contract over
 * the rows of coffer_log instead of segment files. Every cursor of an instance borrows one of a
 * few database sessions (a pg_read_pool) for the length of one pg_cursor_read (a few queries),
 * so readers that wait (long-polls, streams, webhooks) hold no session, and the instance opens
 * at most a few more than it needs to follow or lead, however many readers it has. The
 * sessions are readers' (pg_log_open_reader): they need read rights only, and each statement
 * is bounded by a statement_timeout. Every wait here is bounded, but a read still waits for
 * the database: never call it on a thread that must not block (a network thread).
 */
#ifndef COFFER_LOG_PG_CURSOR_H
#define COFFER_LOG_PG_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "log/pg_log.h"
#include "log/wal.h"

/* Sessions a pool opens at most; a read that finds all of them busy waits for one, at most
 * wait_ms. */
#define PG_READ_POOL_SESSIONS_MAX 4
#define PG_READ_POOL_WAIT_MS_DEFAULT 2000u
#define PG_READ_POOL_STATEMENT_TIMEOUT_MS_DEFAULT 10000u

typedef struct pg_read_pool pg_read_pool;

typedef struct pg_read_pool_options {
    uint32_t wait_ms;              /* longest wait for a busy pool's next free session */
    uint32_t statement_timeout_ms; /* each query of a pool session, at most (0: no limit) */
} pg_read_pool_options;

/* The defaults above. */
void pg_read_pool_options_init(pg_read_pool_options *options);

/* A pool that connects with `conninfo` when a read first needs a session (nothing is opened
 * here); NULL options: the defaults. COFFER_OK or out_of_memory. */
int pg_read_pool_open(const char *conninfo, const pg_read_pool_options *options,
                      pg_read_pool **out);
/* Ends every session. No read may be under way. NULL is a no-op. */
void pg_read_pool_close(pg_read_pool *pool);

typedef struct pg_cursor pg_cursor;

int pg_cursor_open(pg_read_pool *pool, pg_cursor **out);
void pg_cursor_close(pg_cursor *cursor);

/*
 * As log_cursor_read: visits, in order, the records that hold seqs after `after_seq` and end at
 * or before `durable_seq` (the first may also hold earlier seqs: it is visited whole), until
 * `visit` returns non-zero or `max_bytes` of records were visited. Term rows are passed over.
 * Each record is checked against its hash and the row before it (pg_log_read). A call that asks
 * for the seq where the last one stopped goes on from there; any other seeks with one index
 * probe. `segment` is 0 and `offset` the record's position in coffer_log (a position is
 * reused when a failover loses rows: tell records apart by their hash too). When going on
 * from where the last read stopped meets a row that does not continue it (rows lost in a
 * failover and written again, so the point this cursor kept is gone), it seeks `after_seq`
 * again once before it fails.
 * Returns COFFER_OK, the visitor's non-zero code, overloaded with the reason in `error` (no
 * pool session was free within wait_ms, or a query ran past the statement timeout: retry
 * later), or storage_failed with the reason in `error` (the database cannot be reached, or a
 * row does not continue the one before it).
 */
int pg_cursor_read(pg_cursor *cursor, uint64_t after_seq, uint64_t durable_seq, size_t max_bytes,
                   wal_record_fn visit, void *context, char *error, size_t error_size);

#endif
