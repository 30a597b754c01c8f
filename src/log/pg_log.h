/*
 * pg_log.h — coffer's log kept in a PostgreSQL table (libpq), so that several instances share
 * one ledger and PostgreSQL's synchronous replication keeps it on several machines. The leader
 * appends records (log/record.h bytes, the same hash chain as the local segments) and learns
 * they are durable when COMMIT returns; followers read them in order, woken by NOTIFY.
 *
 * The table, one row per position (1, 2, 3, ... with no gaps):
 *   coffer_log(position bigint primary key, kind smallint, seq bigint, last_seq bigint,
 *              term bigint, hash bytea, record bytea, written_at timestamptz)
 *   kind 1, a record: seq..last_seq are the seqs it holds, hash its own hash, record its bytes.
 *   kind 2, a term row: a new leader's first row. term = the previous row's term + 1, seq = the
 *           next seq to write and last_seq = seq - 1 (it holds no seq), hash = the chain hash
 *           the next record links to, record = the leader's name (its advertised URL).
 *   coffer_meta(key text primary key, value text): schema_version, created and upgraded by
 *   pg_log_open (a database with a newer schema is refused).
 *   coffer_members(advertise text primary key, role smallint, applied_seq bigint,
 *                  seen_at timestamptz): each instance says about every second what it is and
 *                  how far it has applied (schema version 2).
 *
 * Who may append: the lease (a session-level advisory lock, and idle_session_timeout so that a
 * paused leader's session, and with it the lock, ends after lease_ms) only decides who tries.
 * The log decides who succeeds: every append inserts the next position, which a new leader's
 * term row takes first, so a stale leader's next append fails on the primary key and it steps
 * down, acknowledging nothing. Records never take a position a term row holds, and a record's
 * bytes must continue the chain from the tail this session read (pg_log_append checks both).
 *
 * One handle is one database session, used by one thread at a time. Every call first checks
 * that the session is alive and reconnects when it is not (a multi-host conninfo with
 * target_session_attrs=read-write finds the new primary after a failover); a reconnected
 * session never leads until pg_log_try_lead succeeds again.
 */
#ifndef COFFER_LOG_PG_LOG_H
#define COFFER_LOG_PG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log/record.h"

#define PG_LOG_SCHEMA_VERSION 2
#define PG_LOG_LEASE_MS_DEFAULT 2000u
#define PG_LOG_NAME_BYTES_MAX 256u        /* a leader's name, stored in its term row (cut there) */
#define PG_LOG_READ_BYTES_MAX (16u << 20) /* records one pg_log_read fetches, about */
#define PG_LOG_APPEND_RECORDS_MAX 64u     /* records one pg_log_append_many takes */

enum pg_log_status {
    PG_LOG_OK = 0,
    PG_LOG_NOT_LEADER,      /* this session does not lead, or another leader's row took the
                               position first: step down and follow */
    PG_LOG_OUTCOME_UNKNOWN, /* the connection failed after the append was sent (or PostgreSQL
                               warned while committing): the record may or may not be in the
                               log. Never acknowledge it; step down and read the log back. */
    PG_LOG_DISCONNECTED,    /* no server could be reached; nothing was sent. Try again later. */
    PG_LOG_INVALID_RECORD,  /* bytes that are not a record continuing the tail, or a row whose
                               record does not match its columns (corruption) */
    PG_LOG_SCHEMA_NEWER,    /* the database holds a schema newer than this coffer knows */
    PG_LOG_FAILED,          /* any other database error; pg_log_error() names it */
    PG_LOG_TIMED_OUT,       /* a feed reader's statement ran past its statement_timeout
                               (pg_log_open_reader); nothing else returns it. Try again later. */
};

typedef struct pg_log pg_log;

typedef struct pg_log_options {
    uint32_t lease_ms;       /* a leader's session idle this long is ended by PostgreSQL,
                                which frees the lease; the leader calls pg_log_heartbeat or
                                appends more often than that */
    const char *leader_name; /* written in term rows (the advertised URL); NULL: "" */
} pg_log_options;

typedef struct pg_log_point {
    uint64_t position;               /* the last row's; 0 for an empty log */
    uint64_t last_seq;               /* the last seq written; 0 for an empty log */
    uint64_t term;                   /* the last row's term; 0 before any leader */
    uint8_t hash[RECORD_HASH_BYTES]; /* the hash the next record links to; zeros at first */
} pg_log_point;

enum pg_log_row_kind { PG_LOG_ROW_RECORD = 1, PG_LOG_ROW_TERM = 2 };

/* One row as read. Pointers are valid only during the visit. For a record, bytes/length are
 * the record (already checked against its hash and columns); for a term row, the leader name
 * (not NUL-terminated). */
typedef struct pg_log_row {
    uint64_t position;
    int kind;
    uint64_t seq, last_seq, term;
    const uint8_t *hash;
    const uint8_t *bytes;
    size_t length;
} pg_log_row;

/* Return 0 to go on, anything else to stop the read (pg_log_read then returns PG_LOG_OK). */
typedef int (*pg_log_row_fn)(const pg_log_row *row, void *context);

void pg_log_options_init(pg_log_options *options);
const char *pg_log_status_name(int status);

/* Connects (any libpq conninfo or URI), creates or upgrades the schema, reads the tail.
 * On failure *out is NULL; with error/error_size the reason is copied there. */
int pg_log_open(const char *conninfo, const pg_log_options *options, pg_log **out, char *error,
                size_t error_size);
/* Opens a reader (coffer verify, coffer dump): connects, checks that the database holds a
 * coffer log of a schema this coffer knows (creating and upgrading nothing), reads the tail.
 * The session runs one REPEATABLE READ, READ ONLY transaction until its close, so every read
 * sees the same snapshot of the log and nothing can be written; it never takes the lease
 * (pg_log_try_lead refuses), and a lost session is not replaced (reads then fail with
 * PG_LOG_DISCONNECTED). Works on a hot standby too. */
int pg_log_open_read(const char *conninfo, pg_log **out, char *error, size_t error_size);
/* Whether a reader's server was a hot standby (in recovery) when the reader opened: its log may
 * end before the primary's. */
bool pg_log_reads_a_standby(const pg_log *log);
/* Opens a session for the change feed's readers: connects and checks the schema as
 * pg_log_open_read does (creating and upgrading nothing, so read rights are enough), and every
 * session it opens, a reconnect's too, refuses writes (default_transaction_read_only) and
 * cancels any statement that runs longer than statement_timeout_ms (0: no limit), which then
 * fails with PG_LOG_TIMED_OUT. Unlike pg_log_open_read it holds no transaction open: each
 * statement sees the rows committed before it, and a lost session is replaced. It never takes
 * the lease and reads no tail. */
int pg_log_open_reader(const char *conninfo, uint32_t statement_timeout_ms, pg_log **out,
                       char *error, size_t error_size);
/* Ends the session (and with it any lease). NULL is a no-op. */
void pg_log_close(pg_log *log);
/* The last failure's message ("" when none); valid until the next call on `log`. */
const char *pg_log_error(const pg_log *log);

/* Reads the tail from the database into *tail. */
int pg_log_read_tail(pg_log *log, pg_log_point *tail);

/* Tries to take the lease; when it is free, reads the tail and appends a term row, after which
 * this session leads (*leading true) in pg_log_term(log). A leading session stays leading. */
int pg_log_try_lead(pg_log *log, bool *leading);
bool pg_log_leading(const pg_log *log);
/* The term this session leads in, or the last term it saw. */
uint64_t pg_log_term(const pg_log *log);
/* The tail this session knows: after try_lead or an append, the log's tail. */
const pg_log_point *pg_log_known_tail(const pg_log *log);
/* Keeps the leader's session from going idle past the lease; PG_LOG_NOT_LEADER if it is gone. */
int pg_log_heartbeat(pg_log *log);
/* Steps down: frees the lease (the session stays). */
int pg_log_step_down(pg_log *log);

/* Appends one finished record (record_finish's bytes) at the next position, in its own
 * transaction; PG_LOG_OK only after COMMIT returned, so the record is then durable on the
 * synchronous standbys too.
 * The record must start after tail.last_seq (seqs may skip) and link to tail.hash.
 * Any outcome but OK and INVALID_RECORD leaves this session not leading. */
int pg_log_append(pg_log *log, const uint8_t *record, size_t length);
/* Appends 1 to PG_LOG_APPEND_RECORDS_MAX records, each continuing the one before, in one
 * statement (one transaction, one round trip): all are durable when it returns PG_LOG_OK, none
 * when it returns NOT_LEADER or INVALID_RECORD, and any of them may be after OUTCOME_UNKNOWN.
 * A leader's group commit: one call per round. */
int pg_log_append_many(pg_log *log, const uint8_t *const *records, const size_t *lengths,
                       size_t count);

/* Reads the rows after *from, in order: at most rows_max, and no more than about
 * PG_LOG_READ_BYTES_MAX of records (always at least one row). *from is a point of the log the
 * caller has applied up to: zeroed for the log's start, or what pg_log_find returned. Each row
 * is checked to continue the one before it (next position, next seq, the hash chain; a record
 * against its hash and columns), else PG_LOG_INVALID_RECORD; *from moves past each row
 * visited. *rows_read (may be NULL) counts them. */
int pg_log_read(pg_log *log, pg_log_point *from, uint32_t rows_max, pg_log_row_fn visit,
                void *context, uint32_t *rows_read);
/* pg_log_read with a smaller byte budget (at most PG_LOG_READ_BYTES_MAX; always at least one
 * row within the bound) and without the rows whose last_seq passes last_seq_max (UINT64_MAX: no
 * bound): a reader that may not go past what its instance has applied does not fetch what
 * follows. */
int pg_log_read_bounded(pg_log *log, pg_log_point *from, uint32_t rows_max, uint32_t bytes_max,
                        uint64_t last_seq_max, pg_log_row_fn visit, void *context,
                        uint32_t *rows_read);
/* The point to read the seqs after `after_seq` from: after the last record ending at or before
 * it (its position, seq, term and hash, as the log holds them), or the log's start (zeros) when
 * none does. The record holding after_seq + 1 and any term rows before it come next. */
int pg_log_seek(pg_log *log, uint64_t after_seq, pg_log_point *at);
/* Is the record ending at last_seq with this hash in the log? (A follower's check after a
 * reconnect: a record it applied could have been lost in a failover.) When present, *at is the
 * point after that record, to read on from; last_seq 0 with a zero hash is the log's start. */
int pg_log_find(pg_log *log, uint64_t last_seq, const uint8_t hash[RECORD_HASH_BYTES],
                bool *present, pg_log_point *at);

/* Subscribes this session to the appenders' NOTIFY (again after any reconnect). */
int pg_log_listen(pg_log *log);
/* Ends the subscription (a leader reads no notifications; they must not pile up). */
int pg_log_unlisten(pg_log *log);
/* Waits up to timeout_ms for a NOTIFY; *woken true when one came or the session was replaced
 * (either way: read again). A wake-up says nothing by itself; reading the log does. */
int pg_log_wait(pg_log *log, uint32_t timeout_ms, bool *woken);

/* The server process of this session (for tests and diagnostics), 0 when not connected. */
int pg_log_backend_pid(const pg_log *log);
/* How many sessions this handle has opened so far: a follower that sees it change has been
 * reconnected, maybe to another primary, and checks that what it applied is still there. */
uint64_t pg_log_sessions(const pg_log *log);

/* The newest term row: *term (0 when there is none yet) and the leader name it holds, cut to
 * name_size and NUL-terminated. */
int pg_log_last_term(pg_log *log, uint64_t *term, char *name, size_t name_size);

/* One instance of the ledger as it last described itself in coffer_members. */
typedef struct pg_log_member {
    char advertise[PG_LOG_NAME_BYTES_MAX + 1];
    int role;             /* the caller's own numbering; pg_log only stores it */
    uint64_t applied_seq; /* the seq it had applied */
    uint64_t seen_at_ms;  /* when it said so, by the database's clock, ms since the epoch */
} pg_log_member;

/* Records that the instance named `advertise` is alive now, in `role`, at `applied_seq`. */
int pg_log_member_seen(pg_log *log, const char *advertise, int role, uint64_t applied_seq);
/* The members seen in the last `within_ms`, by name, at most `max` of them, into out[];
 * *count says how many. */
int pg_log_members(pg_log *log, uint32_t within_ms, pg_log_member *out, size_t max, size_t *count);

#endif
