/*
 * pg_log.c — coffer's log in a PostgreSQL table through libpq: the schema and its upgrades,
 * the lease and the term rows that fence a stale leader, appends acknowledged only after
 * COMMIT, ordered reads with NOTIFY as a wake-up, and reconnection after a failover.
 */
#include "log/pg_log.h"

#include <endian.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

/* Advisory lock keys (first half: which coffer lock; second: hashtext of the schema, so that
 * ledgers in different schemas of one database do not share a lease). */
#define LEASE_LOCK_KEY "1128680519"  /* "CFLG" */
#define SCHEMA_LOCK_KEY "1128682307" /* "CFSC" */
#define SCHEMA_LOCK_OBJECT "hashtext(coalesce(current_schema(), ''))"

#define ERROR_BYTES 512
#define TERM_ATTEMPTS_MAX                                                                          \
    3                      /* a term row loses the race to a finishing append at most this often   \
                            */
#define READ_ROWS_MAX 1024 /* rows per read, whatever the caller asks */
#define SQLSTATE_UNIQUE_VIOLATION "23505"
#define SQLSTATE_QUERY_CANCELED "57014" /* statement_timeout among others */

struct pg_log {
    PGconn *conn; /* NULL between a lost session and the next call */
    char *conninfo;
    uint32_t lease_ms;
    char leader_name[PG_LOG_NAME_BYTES_MAX + 1];
    bool leading;
    bool read_only; /* pg_log_open_read: one read-only transaction, never a second session */
    bool standby;   /* a reader's server was in recovery (a hot standby) when it opened */
    bool reader;    /* pg_log_open_reader: writes refused, statements bounded */
    uint32_t statement_timeout_ms; /* a reader's; 0: none */
    bool listening;
    bool notified;     /* a NOTIFY was drained while checking the session: the next wait returns */
    bool warned;       /* PostgreSQL sent a WARNING during the current statement */
    bool ending;       /* PostgreSQL said it is ending this session (FATAL) */
    uint64_t sessions; /* sessions opened so far */
    uint64_t prepared; /* bit N-1: this session has the append of N rows prepared */
    uint64_t term;
    pg_log_point tail;
    char error[ERROR_BYTES];
};

/* Each schema version's step, applied in order inside one transaction. */
static const char *const schema_steps[PG_LOG_SCHEMA_VERSION] = {
    "CREATE TABLE coffer_log ("
    " position bigint PRIMARY KEY CHECK (position > 0),"
    " kind smallint NOT NULL CHECK (kind IN (1, 2)),"
    " seq bigint NOT NULL CHECK (seq > 0),"
    " last_seq bigint NOT NULL,"
    " term bigint NOT NULL CHECK (term > 0),"
    " hash bytea NOT NULL CHECK (length(hash) = 32),"
    " record bytea NOT NULL,"
    " written_at timestamptz NOT NULL DEFAULT now(),"
    " CHECK ((kind = 1 AND last_seq >= seq) OR (kind = 2 AND last_seq = seq - 1)));"
    "CREATE UNIQUE INDEX coffer_log_record_last_seq ON coffer_log (last_seq) WHERE kind = 1;",
    "CREATE TABLE coffer_members ("
    " advertise text PRIMARY KEY,"
    " role smallint NOT NULL,"
    " applied_seq bigint NOT NULL,"
    " seen_at timestamptz NOT NULL DEFAULT now());",
};

#define ROW_COLUMNS 7
#define INSERT_SQL_BYTES (256 + PG_LOG_APPEND_RECORDS_MAX * 64)

static void set_error(pg_log *log, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void set_error(pg_log *log, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(log->error, sizeof(log->error), format, arguments);
    va_end(arguments);
    /* libpq's messages end in a newline; ours are one line. */
    size_t length = strlen(log->error);
    while (length > 0 && (log->error[length - 1] == '\n' || log->error[length - 1] == ' '))
        log->error[--length] = '\0';
}

static void set_database_error(pg_log *log, const char *doing, const PGresult *result)
{
    const char *message = result != NULL ? PQresultErrorMessage(result) : "";
    if (message[0] == '\0')
        message = PQerrorMessage(log->conn);
    char said[ERROR_BYTES];
    if (message[0] == '\0') {
        /* A session PostgreSQL ended (an idle timeout, a termination) may leave libpq nothing
         * to say: what the server said when it ended it (notice_receiver) is the reason. */
        snprintf(said, sizeof(said), "%s",
                 log->ending && log->error[0] ? log->error : "the server sent no answer");
        message = said;
    }
    set_error(log, "%s: %s", doing, message);
}

const char *pg_log_status_name(int status)
{
    switch (status) {
    case PG_LOG_OK:
        return "ok";
    case PG_LOG_NOT_LEADER:
        return "not_leader";
    case PG_LOG_OUTCOME_UNKNOWN:
        return "outcome_unknown";
    case PG_LOG_DISCONNECTED:
        return "disconnected";
    case PG_LOG_INVALID_RECORD:
        return "invalid_record";
    case PG_LOG_SCHEMA_NEWER:
        return "schema_newer";
    case PG_LOG_FAILED:
        return "failed";
    case PG_LOG_TIMED_OUT:
        return "timed_out";
    default:
        return "unknown_status";
    }
}

void pg_log_options_init(pg_log_options *options)
{
    memset(options, 0, sizeof(*options));
    options->lease_ms = PG_LOG_LEASE_MS_DEFAULT;
}

/* WARNINGs matter: a COMMIT whose wait for the synchronous standby was cancelled returns OK
 * with a WARNING, committed locally but maybe not replicated. FATAL: the session is ending. */
static void notice_receiver(void *context, const PGresult *notice)
{
    pg_log *log = context;
    const char *severity = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (severity == NULL)
        return;
    if (strcmp(severity, "WARNING") == 0) {
        log->warned = true;
        set_error(log, "PostgreSQL warned: %s", PQresultErrorMessage(notice));
    } else if (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0) {
        log->ending = true;
        set_error(log, "PostgreSQL ended the session: %s", PQresultErrorMessage(notice));
    }
}

static void drop_session(pg_log *log)
{
    PQfinish(log->conn);
    log->conn = NULL;
    log->leading = false;
    log->ending = false;
    log->prepared = 0;
}

/* Runs a statement without parameters; NULL (error set) unless it returned `expected`. */
static PGresult *run_simple(pg_log *log, const char *sql, ExecStatusType expected,
                            const char *doing)
{
    PGresult *result = PQexec(log->conn, sql);
    if (PQresultStatus(result) == expected)
        return result;
    set_database_error(log, doing, result);
    PQclear(result);
    return NULL;
}

static bool run_command(pg_log *log, const char *sql, const char *doing)
{
    PGresult *result = run_simple(log, sql, PGRES_COMMAND_OK, doing);
    PQclear(result);
    return result != NULL;
}

static bool connection_lost(const pg_log *log)
{
    return log->conn == NULL || PQstatus(log->conn) != CONNECTION_OK || log->ending;
}

/* PostgreSQL compresses a record of more than about 2 KiB (TOAST), with pglz unless told
 * otherwise. With lz4, appends of 8,190-transfer records went 1.7 times as fast on loopback with a
 * synchronous standby (docs/benchmarks.md), the table barely larger. Only where nobody chose a
 * method (not the server's configuration, not the conninfo's options) and the server has lz4;
 * else the session keeps what it has. A failure here is found by the next statement. */
static void prefer_lz4(pg_log *log)
{
    PQclear(PQexec(log->conn,
                   "SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings"
                   " WHERE name = 'default_toast_compression' AND source = 'default'"
                   " AND 'lz4' = ANY (enumvals)"));
}

/* Connects. Our defaults come before the user's conninfo, which overrides them: a bounded
 * connect, keepalives so that a dead server is noticed while we wait for a reply, and a bound
 * on data sent but never acknowledged (a server whose machine vanished mid-statement), which
 * keepalives do not cover and TCP alone retransmits for some fifteen minutes. */
static int connect_session(pg_log *log)
{
    drop_session(log);
    if (log->read_only && log->sessions > 0) {
        /* A new session would read another snapshot of the log: the reader starts again. Why
         * the session ended (a conflict with recovery on a standby, an idle timeout, a server
         * gone) is already in log->error: kept, it is what the operator needs. */
        char reason[ERROR_BYTES];
        snprintf(reason, sizeof(reason), "%s", log->error[0] ? log->error : "no reason given");
        set_error(log,
                  "the session was lost during the read (%s); nothing was changed: run it again",
                  reason);
        return PG_LOG_DISCONNECTED;
    }
    const char *const keywords[] = {"connect_timeout",
                                    "keepalives",
                                    "keepalives_idle",
                                    "keepalives_count",
                                    "keepalives_interval",
                                    "tcp_user_timeout",
                                    "application_name",
                                    "dbname",
                                    NULL};
    const char *const values[] = {"5", "1", "2", "3", "1", "5000", "coffer", log->conninfo, NULL};
    log->conn = PQconnectdbParams(keywords, values, 1);
    if (log->conn == NULL || PQstatus(log->conn) != CONNECTION_OK) {
        set_error(log, "cannot connect: %s",
                  log->conn != NULL ? PQerrorMessage(log->conn) : "out of memory");
        drop_session(log);
        return PG_LOG_DISCONNECTED;
    }
    PQsetNoticeReceiver(log->conn, notice_receiver, log);
    log->sessions++;
    if (!log->read_only && !log->reader)
        prefer_lz4(log);
    if (log->reader) {
        /* Every session, a reconnect's too: a feed reader writes nothing and waits bounded. */
        char settings[128];
        snprintf(settings, sizeof(settings),
                 "SET default_transaction_read_only = on; SET statement_timeout = %" PRIu32,
                 log->statement_timeout_ms);
        if (!run_command(log, settings, "setting the reader's limits")) {
            int status = connection_lost(log) ? PG_LOG_DISCONNECTED : PG_LOG_FAILED;
            drop_session(log);
            return status;
        }
    }
    /* A reader sees one snapshot of the log from its first statement to its close, and
     * PostgreSQL refuses any write it might attempt. */
    if (log->read_only &&
        !run_command(log, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "BEGIN")) {
        int status = connection_lost(log) ? PG_LOG_DISCONNECTED : PG_LOG_FAILED;
        drop_session(log);
        return status;
    }
    if (log->listening && !run_command(log, "LISTEN coffer_log", "LISTEN")) {
        drop_session(log);
        return PG_LOG_DISCONNECTED;
    }
    return PG_LOG_OK;
}

/* Makes sure the session is alive before a statement is sent, so that a session PostgreSQL
 * already ended (lease expired, server gone) is known for certain to have sent nothing.
 * *replaced is true when the session was replaced by a new one (which does not lead). */
static int session_ready(pg_log *log, bool *replaced)
{
    *replaced = false;
    bool known_lost = connection_lost(log); /* then whoever found it set the reason */
    if (!known_lost && PQconsumeInput(log->conn) == 1) {
        for (PGnotify *notify; (notify = PQnotifies(log->conn)) != NULL; PQfreemem(notify))
            log->notified = true;
        if (!connection_lost(log))
            return PG_LOG_OK;
    }
    *replaced = true;
    /* Found lost here: why, unless PostgreSQL said so (a FATAL: notice_receiver). */
    if (!known_lost && !log->ending) {
        const char *message = PQerrorMessage(log->conn);
        set_error(log, "%s", message[0] ? message : "the server closed the connection");
    }
    return connect_session(log);
}

/* Reads coffer_meta's schema_version; 0 when there is none yet. */
static int read_schema_version(pg_log *log, uint32_t *version)
{
    PGresult *result = run_simple(log, "SELECT value FROM coffer_meta WHERE key = 'schema_version'",
                                  PGRES_TUPLES_OK, "reading the schema version");
    if (result == NULL)
        return PG_LOG_FAILED;
    *version = 0;
    int status = PG_LOG_OK;
    if (PQntuples(result) == 1) {
        char *end = NULL;
        unsigned long value = strtoul(PQgetvalue(result, 0, 0), &end, 10);
        if (end == NULL || *end != '\0' || value > UINT32_MAX) {
            set_error(log, "coffer_meta holds a schema_version that is not a number: '%s'",
                      PQgetvalue(result, 0, 0));
            status = PG_LOG_FAILED;
        }
        *version = (uint32_t)value;
    }
    PQclear(result);
    return status;
}

/* Creates or upgrades the schema in one transaction, serialized by an advisory lock so that
 * instances starting together do not race on CREATE TABLE. */
static int ensure_schema(pg_log *log)
{
    if (!run_command(log, "BEGIN", "BEGIN"))
        return PG_LOG_FAILED;
    PGresult *locked =
        run_simple(log, "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ", " SCHEMA_LOCK_OBJECT ")",
                   PGRES_TUPLES_OK, "locking the schema");
    PQclear(locked);
    uint32_t version = 0;
    int status = PG_LOG_FAILED;
    if (locked == NULL ||
        !run_command(log,
                     "CREATE TABLE IF NOT EXISTS coffer_meta (key text PRIMARY KEY,"
                     " value text NOT NULL)",
                     "creating coffer_meta") ||
        (status = read_schema_version(log, &version)) != PG_LOG_OK)
        goto rollback;
    if (version > PG_LOG_SCHEMA_VERSION) {
        set_error(log,
                  "the database holds coffer schema version %" PRIu32
                  ", newer than this coffer's %d: upgrade coffer",
                  version, PG_LOG_SCHEMA_VERSION);
        status = PG_LOG_SCHEMA_NEWER;
        goto rollback;
    }
    status = PG_LOG_FAILED;
    for (uint32_t step = version; step < PG_LOG_SCHEMA_VERSION; step++)
        if (!run_command(log, schema_steps[step], "upgrading the schema"))
            goto rollback;
    char upsert[160];
    snprintf(upsert, sizeof(upsert),
             "INSERT INTO coffer_meta VALUES ('schema_version', '%d')"
             " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
             PG_LOG_SCHEMA_VERSION);
    if (version < PG_LOG_SCHEMA_VERSION && !run_command(log, upsert, "recording the version"))
        goto rollback;
    return run_command(log, "COMMIT", "COMMIT") ? PG_LOG_OK : PG_LOG_FAILED;
rollback:
    if (!connection_lost(log))
        PQclear(PQexec(log->conn, "ROLLBACK"));
    return status;
}

/* A pg_log of `conninfo` with no session yet; NULL with "out of memory" in `error`. */
static pg_log *log_new(const char *conninfo, char *error, size_t error_size)
{
    pg_log *log = calloc(1, sizeof(*log));
    if (log == NULL || (log->conninfo = strdup(conninfo)) == NULL) {
        free(log);
        if (error != NULL && error_size > 0)
            snprintf(error, error_size, "out of memory");
        return NULL;
    }
    return log;
}

/* The end of an open: *out = log when `status` is OK, else the reason into `error` and the log
 * closed. Returns `status`. */
static int open_finish(pg_log *log, int status, pg_log **out, char *error, size_t error_size)
{
    if (status == PG_LOG_OK) {
        *out = log;
        return status;
    }
    if (error != NULL && error_size > 0)
        snprintf(error, error_size, "%s", log->error);
    pg_log_close(log);
    return status;
}

int pg_log_open(const char *conninfo, const pg_log_options *options, pg_log **out, char *error,
                size_t error_size)
{
    *out = NULL;
    pg_log_options defaults;
    if (options == NULL) {
        pg_log_options_init(&defaults);
        options = &defaults;
    }
    pg_log *log = log_new(conninfo, error, error_size);
    if (log == NULL)
        return PG_LOG_FAILED;
    log->lease_ms = options->lease_ms > 0 ? options->lease_ms : PG_LOG_LEASE_MS_DEFAULT;
    snprintf(log->leader_name, sizeof(log->leader_name), "%s",
             options->leader_name != NULL ? options->leader_name : "");
    int status = connect_session(log);
    if (status == PG_LOG_OK)
        status = ensure_schema(log);
    if (status == PG_LOG_OK)
        status = pg_log_read_tail(log, &log->tail);
    if (status == PG_LOG_OK)
        log->term = log->tail.term;
    return open_finish(log, status, out, error, error_size);
}

/* A reader's check of the schema: it creates nothing, so a database without coffer's tables
 * is named as such rather than created. */
static int check_schema_read(pg_log *log)
{
    PGresult *result = run_simple(log,
                                  "SELECT to_regclass('coffer_meta') IS NOT NULL,"
                                  " to_regclass('coffer_log') IS NOT NULL",
                                  PGRES_TUPLES_OK, "looking for coffer's tables");
    if (result == NULL)
        return PG_LOG_FAILED;
    bool found =
        strcmp(PQgetvalue(result, 0, 0), "t") == 0 && strcmp(PQgetvalue(result, 0, 1), "t") == 0;
    PQclear(result);
    if (!found) {
        set_error(log, "this database holds no coffer log (no tables coffer_meta and coffer_log in"
                       " its search path)");
        return PG_LOG_FAILED;
    }
    uint32_t version = 0;
    int status = read_schema_version(log, &version);
    if (status == PG_LOG_OK && version > PG_LOG_SCHEMA_VERSION) {
        set_error(log,
                  "the database holds coffer schema version %" PRIu32
                  ", newer than this coffer's %d: upgrade coffer",
                  version, PG_LOG_SCHEMA_VERSION);
        status = PG_LOG_SCHEMA_NEWER;
    }
    return status;
}

int pg_log_open_read(const char *conninfo, pg_log **out, char *error, size_t error_size)
{
    *out = NULL;
    pg_log *log = log_new(conninfo, error, error_size);
    if (log == NULL)
        return PG_LOG_FAILED;
    log->read_only = true;
    log->lease_ms = PG_LOG_LEASE_MS_DEFAULT;
    int status = connect_session(log);
    if (status == PG_LOG_OK)
        status = check_schema_read(log);
    if (status == PG_LOG_OK)
        status = pg_log_read_tail(log, &log->tail);
    if (status == PG_LOG_OK) {
        PGresult *result = run_simple(log, "SELECT pg_is_in_recovery()", PGRES_TUPLES_OK,
                                      "asking whether the server is a standby");
        if (result == NULL)
            status = connection_lost(log) ? PG_LOG_DISCONNECTED : PG_LOG_FAILED;
        else
            log->standby = PQntuples(result) == 1 && strcmp(PQgetvalue(result, 0, 0), "t") == 0;
        PQclear(result);
    }
    if (status == PG_LOG_OK)
        log->term = log->tail.term;
    return open_finish(log, status, out, error, error_size);
}

int pg_log_open_reader(const char *conninfo, uint32_t statement_timeout_ms, pg_log **out,
                       char *error, size_t error_size)
{
    *out = NULL;
    pg_log *log = log_new(conninfo, error, error_size);
    if (log == NULL)
        return PG_LOG_FAILED;
    log->reader = true;
    log->statement_timeout_ms = statement_timeout_ms;
    log->lease_ms = PG_LOG_LEASE_MS_DEFAULT;
    int status = connect_session(log);
    if (status == PG_LOG_OK)
        status = check_schema_read(log);
    return open_finish(log, status, out, error, error_size);
}

void pg_log_close(pg_log *log)
{
    if (log == NULL)
        return;
    drop_session(log);
    free(log->conninfo);
    free(log);
}

bool pg_log_reads_a_standby(const pg_log *log)
{
    return log->standby;
}

const char *pg_log_error(const pg_log *log)
{
    return log->error;
}

bool pg_log_leading(const pg_log *log)
{
    return log->leading;
}

uint64_t pg_log_term(const pg_log *log)
{
    return log->term;
}

const pg_log_point *pg_log_known_tail(const pg_log *log)
{
    return &log->tail;
}

int pg_log_backend_pid(const pg_log *log)
{
    return log->conn != NULL ? PQbackendPID(log->conn) : 0;
}

/* Binary results: int8 and int2 in network order, bytea as raw bytes. */
static uint64_t column_u64(const PGresult *result, int row, int column)
{
    uint64_t value;
    memcpy(&value, PQgetvalue(result, row, column), sizeof(value));
    return be64toh(value);
}

static int column_i16(const PGresult *result, int row, int column)
{
    uint16_t value;
    memcpy(&value, PQgetvalue(result, row, column), sizeof(value));
    return (int16_t)be16toh(value);
}

/* Runs a read-only query with text parameters and binary results. A session found lost
 * (before or during the query) is replaced and the query run once more: reads are safe to
 * repeat. NULL (error set) on failure. */
static PGresult *run_read(pg_log *log, const char *sql, int parameters, const char *const *values,
                          const char *doing, int *status)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool replaced;
        if ((*status = session_ready(log, &replaced)) != PG_LOG_OK)
            return NULL;
        PGresult *result = PQexecParams(log->conn, sql, parameters, NULL, values, NULL, NULL, 1);
        if (PQresultStatus(result) == PGRES_TUPLES_OK)
            return result;
        const char *sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
        bool timed_out = log->statement_timeout_ms > 0 && sqlstate != NULL &&
                         strcmp(sqlstate, SQLSTATE_QUERY_CANCELED) == 0;
        set_database_error(log, doing, result);
        PQclear(result);
        if (timed_out && !connection_lost(log)) {
            *status = PG_LOG_TIMED_OUT;
            return NULL;
        }
        if (!connection_lost(log))
            break;
    }
    *status = connection_lost(log) ? PG_LOG_DISCONNECTED : PG_LOG_FAILED;
    return NULL;
}

int pg_log_read_tail(pg_log *log, pg_log_point *tail)
{
    int status;
    PGresult *result = run_read(
        log, "SELECT position, last_seq, term, hash FROM coffer_log ORDER BY position DESC LIMIT 1",
        0, NULL, "reading the tail", &status);
    if (result == NULL)
        return status;
    memset(tail, 0, sizeof(*tail));
    if (PQntuples(result) == 1) {
        if (PQgetlength(result, 0, 3) != RECORD_HASH_BYTES) {
            set_error(log, "the last row's hash is not %d bytes", RECORD_HASH_BYTES);
            PQclear(result);
            return PG_LOG_INVALID_RECORD;
        }
        tail->position = column_u64(result, 0, 0);
        tail->last_seq = column_u64(result, 0, 1);
        tail->term = column_u64(result, 0, 2);
        memcpy(tail->hash, PQgetvalue(result, 0, 3), RECORD_HASH_BYTES);
    }
    PQclear(result);
    return PG_LOG_OK;
}

enum insert_outcome { INSERTED, POSITION_TAKEN, INSERT_UNKNOWN, INSERT_FAILED };

/* The statement inserting `count` rows with one NOTIFY naming the last position: one
 * statement is one transaction and one round trip, whatever the count. */
static void insert_sql(char *sql, size_t size, size_t count)
{
    size_t used = (size_t)snprintf(sql, size,
                                   "WITH inserted AS (INSERT INTO coffer_log"
                                   " (position, kind, seq, last_seq, term, hash, record) VALUES ");
    for (size_t row = 0; row < count; row++) {
        int first = (int)(row * ROW_COLUMNS);
        used += (size_t)snprintf(sql + used, size - used, "%s($%d, $%d, $%d, $%d, $%d, $%d, $%d)",
                                 row ? ", " : "", first + 1, first + 2, first + 3, first + 4,
                                 first + 5, first + 6, first + 7);
    }
    snprintf(sql + used, size - used,
             " RETURNING position) SELECT pg_notify('coffer_log', max(position)::text)"
             " FROM inserted");
}

_Static_assert(PG_LOG_APPEND_RECORDS_MAX <= 64, "one bit a row count in pg_log.prepared");

/* The append of `count` rows is parsed and planned once a session, as `name`, not once a
 * round: with rounds of up to 64 rows that was about a fifth of PostgreSQL's CPU per round
 * (docs/benchmarks.md). NULL when it is prepared; else the failed PREPARE's result, which
 * insert_rows reads as its own. */
static PGresult *prepare_insert(pg_log *log, size_t count, const char *name)
{
    uint64_t bit = UINT64_C(1) << (count - 1);
    if (log->prepared & bit)
        return NULL;
    char sql[INSERT_SQL_BYTES];
    insert_sql(sql, sizeof(sql), count);
    PGresult *result = PQprepare(log->conn, name, sql, (int)(count * ROW_COLUMNS), NULL);
    if (PQresultStatus(result) != PGRES_COMMAND_OK)
        return result;
    PQclear(result);
    log->prepared |= bit;
    return NULL;
}

/* Inserts `count` rows (at most PG_LOG_APPEND_RECORDS_MAX) at their positions with NOTIFY,
 * all or none. A unique violation means another session wrote there first. */
static enum insert_outcome insert_rows(pg_log *log, const pg_log_row *rows, size_t count)
{
    char numbers[PG_LOG_APPEND_RECORDS_MAX][5][24];
    const char *values[PG_LOG_APPEND_RECORDS_MAX * ROW_COLUMNS];
    int lengths[PG_LOG_APPEND_RECORDS_MAX * ROW_COLUMNS] = {0};
    int formats[PG_LOG_APPEND_RECORDS_MAX * ROW_COLUMNS] = {0};
    for (size_t index = 0; index < count; index++) {
        const pg_log_row *row = &rows[index];
        const uint64_t columns[5] = {row->position, (uint64_t)row->kind, row->seq, row->last_seq,
                                     row->term};
        size_t first = index * ROW_COLUMNS;
        for (size_t column = 0; column < 5; column++) {
            snprintf(numbers[index][column], sizeof(numbers[index][column]), "%" PRIu64,
                     columns[column]);
            values[first + column] = numbers[index][column];
        }
        values[first + 5] = (const char *)row->hash;
        values[first + 6] = (const char *)row->bytes;
        lengths[first + 5] = RECORD_HASH_BYTES;
        lengths[first + 6] = (int)row->length;
        formats[first + 5] = formats[first + 6] = 1;
    }
    log->warned = false;
    char name[40];
    snprintf(name, sizeof(name), "coffer_append_%zu", count);
    PGresult *result = prepare_insert(log, count, name);
    if (result == NULL)
        result = PQexecPrepared(log->conn, name, (int)(count * ROW_COLUMNS), values, lengths,
                                formats, 0);
    ExecStatusType status = PQresultStatus(result);
    const char *sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
    enum insert_outcome outcome = INSERT_FAILED;
    if (connection_lost(log) || log->warned)
        outcome = INSERT_UNKNOWN;
    else if (status == PGRES_TUPLES_OK && PQntuples(result) == 1)
        outcome = INSERTED;
    else if (sqlstate != NULL && strcmp(sqlstate, SQLSTATE_UNIQUE_VIOLATION) == 0)
        outcome = POSITION_TAKEN;
    if (outcome != INSERTED && !log->warned)
        set_database_error(log, "appending", result);
    PQclear(result);
    return outcome;
}

static enum insert_outcome insert_row(pg_log *log, const pg_log_row *row)
{
    return insert_rows(log, row, 1);
}

int pg_log_step_down(pg_log *log)
{
    bool was_leading = log->leading;
    log->leading = false;
    if (!was_leading || connection_lost(log))
        return PG_LOG_OK;
    /* Also lifts the idle limit, which only a leader's session needs. */
    PGresult *result = run_simple(
        log, "SELECT pg_advisory_unlock_all(), set_config('idle_session_timeout', '0', false)",
        PGRES_TUPLES_OK, "stepping down");
    PQclear(result);
    if (result != NULL)
        return PG_LOG_OK;
    drop_session(log); /* the lease ends with the session */
    return PG_LOG_FAILED;
}

/* Takes the advisory lock with the idle limit set first, so that the lease can never be held
 * by a session that may idle forever. *taken false: another session holds it. */
static int take_lease(pg_log *log, bool *taken)
{
    char lease[24];
    snprintf(lease, sizeof(lease), "%" PRIu32, log->lease_ms);
    const char *values[1] = {lease};
    int status;
    PGresult *result = run_read(log,
                                "SELECT set_config('idle_session_timeout', $1, false),"
                                " pg_try_advisory_lock(" LEASE_LOCK_KEY ", " SCHEMA_LOCK_OBJECT ")",
                                1, values, "taking the lease", &status);
    if (result == NULL)
        return status;
    *taken = PQgetvalue(result, 0, 1)[0] == 1;
    PQclear(result);
    if (*taken)
        return PG_LOG_OK;
    PQclear(run_simple(log, "SELECT set_config('idle_session_timeout', '0', false)",
                       PGRES_TUPLES_OK, "lifting the idle limit"));
    return PG_LOG_OK;
}

/* With the lease held: reads the tail and appends this leader's term row after it. The row
 * may lose the position to the previous leader's last append; then read again. */
static int append_term_row(pg_log *log)
{
    for (int attempt = 0; attempt < TERM_ATTEMPTS_MAX; attempt++) {
        pg_log_point tail;
        int status = pg_log_read_tail(log, &tail);
        if (status != PG_LOG_OK)
            return status;
        pg_log_row row = {.position = tail.position + 1,
                          .kind = PG_LOG_ROW_TERM,
                          .seq = tail.last_seq + 1,
                          .last_seq = tail.last_seq,
                          .term = tail.term + 1,
                          .hash = tail.hash,
                          .bytes = (const uint8_t *)log->leader_name,
                          .length = strlen(log->leader_name)};
        enum insert_outcome outcome = insert_row(log, &row);
        if (outcome == INSERTED) {
            log->tail = tail;
            log->tail.position = row.position;
            log->tail.term = row.term;
            log->term = row.term;
            return PG_LOG_OK;
        }
        if (outcome != POSITION_TAKEN)
            return outcome == INSERT_UNKNOWN ? PG_LOG_OUTCOME_UNKNOWN : PG_LOG_FAILED;
    }
    return PG_LOG_NOT_LEADER;
}

int pg_log_try_lead(pg_log *log, bool *leading)
{
    *leading = false;
    if (log->read_only) {
        set_error(log, "a reader never takes the lease");
        return PG_LOG_FAILED;
    }
    bool replaced;
    if (log->leading && session_ready(log, &replaced) == PG_LOG_OK && !replaced) {
        *leading = true;
        return PG_LOG_OK;
    }
    bool taken = false;
    int status = take_lease(log, &taken);
    if (status != PG_LOG_OK || !taken)
        return status;
    log->leading = true;
    status = append_term_row(log);
    if (status == PG_LOG_OUTCOME_UNKNOWN) {
        drop_session(log); /* maybe written: a later try reads it and takes the next term */
    } else if (status != PG_LOG_OK) {
        pg_log_step_down(log);
    }
    *leading = log->leading;
    return status;
}

int pg_log_heartbeat(pg_log *log)
{
    bool replaced;
    if (!log->leading || session_ready(log, &replaced) != PG_LOG_OK || replaced) {
        set_error(log, "this session does not hold the lease");
        log->leading = false;
        return PG_LOG_NOT_LEADER;
    }
    PGresult *result = run_simple(log, "SELECT 1", PGRES_TUPLES_OK, "heartbeat");
    PQclear(result);
    if (result != NULL)
        return PG_LOG_OK;
    drop_session(log);
    return PG_LOG_NOT_LEADER;
}

/* The pair check before writing: the bytes are a whole record continuing `tail`. */
static int check_continues_tail(pg_log *log, const pg_log_point *tail, const uint8_t *record,
                                size_t length, record_header *header)
{
    int checked = record_check(record, length, header);
    if (checked != RECORD_OK || header->length != length) {
        set_error(log, "not a whole record (%s)", record_status_name(checked));
        return PG_LOG_INVALID_RECORD;
    }
    if (header->seq_base <= tail->last_seq ||
        memcmp(header->previous_hash, tail->hash, RECORD_HASH_BYTES) != 0) {
        set_error(log,
                  "the record (seq %" PRIu64 "..%" PRIu64 ") does not continue the tail"
                  " (last seq %" PRIu64 ")",
                  header->seq_base, header->last_seq, tail->last_seq);
        return PG_LOG_INVALID_RECORD;
    }
    return PG_LOG_OK;
}

/* The rows for `count` records after the known tail; *after is the tail once they are in. */
static int rows_for_records(pg_log *log, const uint8_t *const *records, const size_t *lengths,
                            size_t count, pg_log_row *rows, uint8_t (*hashes)[RECORD_HASH_BYTES],
                            pg_log_point *after)
{
    *after = log->tail;
    for (size_t index = 0; index < count; index++) {
        record_header header;
        int status = check_continues_tail(log, after, records[index], lengths[index], &header);
        if (status != PG_LOG_OK)
            return status;
        memcpy(hashes[index], header.hash, RECORD_HASH_BYTES);
        rows[index] = (pg_log_row){.position = after->position + 1,
                                   .kind = PG_LOG_ROW_RECORD,
                                   .seq = header.seq_base,
                                   .last_seq = header.last_seq,
                                   .term = log->term,
                                   .hash = hashes[index],
                                   .bytes = records[index],
                                   .length = lengths[index]};
        after->position++;
        after->last_seq = header.last_seq;
        memcpy(after->hash, header.hash, RECORD_HASH_BYTES);
    }
    return PG_LOG_OK;
}

int pg_log_append_many(pg_log *log, const uint8_t *const *records, const size_t *lengths,
                       size_t count)
{
    if (!log->leading) {
        set_error(log, "this session does not lead");
        return PG_LOG_NOT_LEADER;
    }
    if (count == 0 || count > PG_LOG_APPEND_RECORDS_MAX) {
        set_error(log, "%zu records in one append (1 to %u)", count, PG_LOG_APPEND_RECORDS_MAX);
        return PG_LOG_INVALID_RECORD;
    }
    pg_log_row rows[PG_LOG_APPEND_RECORDS_MAX];
    uint8_t hashes[PG_LOG_APPEND_RECORDS_MAX][RECORD_HASH_BYTES];
    pg_log_point after;
    int status = rows_for_records(log, records, lengths, count, rows, hashes, &after);
    if (status != PG_LOG_OK)
        return status;
    bool replaced;
    if (session_ready(log, &replaced) != PG_LOG_OK || replaced) {
        set_error(log, "the session holding the lease is gone; nothing was sent");
        log->leading = false;
        return PG_LOG_NOT_LEADER;
    }
    switch (insert_rows(log, rows, count)) {
    case INSERTED:
        log->tail = after;
        return PG_LOG_OK;
    case POSITION_TAKEN:
        pg_log_step_down(log);
        return PG_LOG_NOT_LEADER;
    case INSERT_UNKNOWN:
        drop_session(log); /* ends the lease too, if the session was still alive */
        return PG_LOG_OUTCOME_UNKNOWN;
    case INSERT_FAILED:
        break;
    }
    pg_log_step_down(log);
    return PG_LOG_FAILED;
}

int pg_log_append(pg_log *log, const uint8_t *record, size_t length)
{
    return pg_log_append_many(log, &record, &length, 1);
}

/* Decodes row `index` of a read and checks it continues `from`: the next position, the next
 * seq, the chain hash, and for a record its bytes against their hash and its columns. */
static int decode_row(pg_log *log, const PGresult *result, int index, const pg_log_point *from,
                      pg_log_row *row)
{
    row->position = column_u64(result, index, 0);
    row->kind = column_i16(result, index, 1);
    row->seq = column_u64(result, index, 2);
    row->last_seq = column_u64(result, index, 3);
    row->term = column_u64(result, index, 4);
    row->hash = (const uint8_t *)PQgetvalue(result, index, 5);
    row->bytes = (const uint8_t *)PQgetvalue(result, index, 6);
    row->length = (size_t)PQgetlength(result, index, 6);
    const char *wrong = NULL;
    record_header header;
    /* Seqs rise from record to record but may skip (a seq taken by nothing recorded); a term
     * row names the seq after the last one written. Each message names the seqs involved, so
     * an operator can tell which records are damaged or missing. */
    if (row->position != from->position + 1) {
        set_error(log,
                  "coffer_log has no row at position %" PRIu64
                  ": rows are missing after seq %" PRIu64 " (the next row, at position %" PRIu64
                  ", holds seq %" PRIu64 "..%" PRIu64 ")",
                  from->position + 1, from->last_seq, row->position, row->seq, row->last_seq);
        return PG_LOG_INVALID_RECORD;
    }
    if (row->seq <= from->last_seq ||
        (row->kind == PG_LOG_ROW_TERM && row->last_seq != from->last_seq))
        wrong = "does not follow the row before it (seqs going back)";
    else if (PQgetlength(result, index, 5) != RECORD_HASH_BYTES || row->term < from->term)
        wrong = "has a malformed hash or a term going back";
    else if (row->kind == PG_LOG_ROW_TERM && memcmp(row->hash, from->hash, RECORD_HASH_BYTES) != 0)
        wrong = "is a term row that breaks the hash chain";
    else if (row->kind != PG_LOG_ROW_TERM &&
             (row->kind != PG_LOG_ROW_RECORD ||
              record_check(row->bytes, row->length, &header) != RECORD_OK ||
              header.length != row->length || header.seq_base != row->seq ||
              header.last_seq != row->last_seq ||
              memcmp(header.hash, row->hash, RECORD_HASH_BYTES) != 0))
        wrong = "holds a record that does not match its hash or its columns (damaged)";
    else if (row->kind == PG_LOG_ROW_RECORD &&
             memcmp(header.previous_hash, from->hash, RECORD_HASH_BYTES) != 0)
        wrong = "holds a record that breaks the hash chain";
    if (wrong == NULL)
        return PG_LOG_OK;
    set_error(log,
              "coffer_log row at position %" PRIu64 " %s (the row holds seq %" PRIu64 "..%" PRIu64
              "; the log before it ends at seq %" PRIu64 ")",
              row->position, wrong, row->seq, row->last_seq, from->last_seq);
    return PG_LOG_INVALID_RECORD;
}

int pg_log_read(pg_log *log, pg_log_point *from, uint32_t rows_max, pg_log_row_fn visit,
                void *context, uint32_t *rows_read)
{
    return pg_log_read_bounded(log, from, rows_max, PG_LOG_READ_BYTES_MAX, UINT64_MAX, visit,
                               context, rows_read);
}

int pg_log_read_bounded(pg_log *log, pg_log_point *from, uint32_t rows_max, uint32_t bytes_max,
                        uint64_t last_seq_max, pg_log_row_fn visit, void *context,
                        uint32_t *rows_read)
{
    if (rows_read != NULL)
        *rows_read = 0;
    char after[24], limit[16], bytes[16], until[24];
    snprintf(after, sizeof(after), "%" PRIu64, from->position);
    snprintf(limit, sizeof(limit), "%" PRIu32, rows_max < READ_ROWS_MAX ? rows_max : READ_ROWS_MAX);
    snprintf(bytes, sizeof(bytes), "%" PRIu32,
             bytes_max < PG_LOG_READ_BYTES_MAX ? bytes_max : PG_LOG_READ_BYTES_MAX);
    /* bigint's largest: "no bound" */
    snprintf(until, sizeof(until), "%" PRIu64, last_seq_max < INT64_MAX ? last_seq_max : INT64_MAX);
    const char *values[4] = {after, limit, bytes, until};
    int status;
    /* The byte budget stops the page before the row that would pass it (never the first).
     * Rows are in seq order too, so the seq bound only cuts the page's end. */
    PGresult *result = run_read(log,
                                "SELECT position, kind, seq, last_seq, term, hash, record FROM"
                                " (SELECT position, kind, seq, last_seq, term, hash, record,"
                                " sum(length(record)) OVER (ORDER BY position) AS running"
                                " FROM coffer_log WHERE position > $1 AND last_seq <= $4"
                                " ORDER BY position LIMIT $2) AS page"
                                " WHERE running - length(record) < $3 ORDER BY position",
                                4, values, "reading", &status);
    if (result == NULL)
        return status;
    status = PG_LOG_OK;
    for (int index = 0; index < PQntuples(result); index++) {
        pg_log_row row;
        if ((status = decode_row(log, result, index, from, &row)) != PG_LOG_OK)
            break;
        from->position = row.position;
        from->last_seq = row.last_seq;
        from->term = row.term;
        memcpy(from->hash, row.hash, RECORD_HASH_BYTES);
        if (rows_read != NULL)
            (*rows_read)++;
        if (visit(&row, context) != 0)
            break;
    }
    PQclear(result);
    return status;
}

int pg_log_find(pg_log *log, uint64_t last_seq, const uint8_t hash[RECORD_HASH_BYTES],
                bool *present, pg_log_point *at)
{
    static const uint8_t start_hash[RECORD_HASH_BYTES] = {0};
    *present = false;
    memset(at, 0, sizeof(*at));
    if (last_seq == 0) {
        *present = memcmp(hash, start_hash, RECORD_HASH_BYTES) == 0;
        return PG_LOG_OK;
    }
    char seq[24];
    snprintf(seq, sizeof(seq), "%" PRIu64, last_seq);
    const char *values[1] = {seq};
    int status;
    PGresult *result = run_read(
        log, "SELECT position, term, hash FROM coffer_log WHERE kind = 1 AND last_seq = $1", 1,
        values, "finding a record", &status);
    if (result == NULL)
        return status;
    if (PQntuples(result) == 1 && PQgetlength(result, 0, 2) == RECORD_HASH_BYTES &&
        memcmp(PQgetvalue(result, 0, 2), hash, RECORD_HASH_BYTES) == 0) {
        *present = true;
        at->position = column_u64(result, 0, 0);
        at->last_seq = last_seq;
        at->term = column_u64(result, 0, 1);
        memcpy(at->hash, hash, RECORD_HASH_BYTES);
    }
    PQclear(result);
    return PG_LOG_OK;
}

int pg_log_seek(pg_log *log, uint64_t after_seq, pg_log_point *at)
{
    memset(at, 0, sizeof(*at));
    if (after_seq == 0)
        return PG_LOG_OK;
    char seq[24];
    snprintf(seq, sizeof(seq), "%" PRIu64, after_seq < INT64_MAX ? after_seq : INT64_MAX);
    const char *values[1] = {seq};
    int status;
    /* coffer_log_record_last_seq, read backwards from after_seq: one index probe. */
    PGresult *result = run_read(log,
                                "SELECT position, last_seq, term, hash FROM coffer_log"
                                " WHERE kind = 1 AND last_seq <= $1 ORDER BY last_seq DESC LIMIT 1",
                                1, values, "seeking a seq", &status);
    if (result == NULL)
        return status;
    status = PG_LOG_OK;
    if (PQntuples(result) == 1) {
        if (PQgetlength(result, 0, 3) != RECORD_HASH_BYTES) {
            set_error(log, "a record row's hash is not %d bytes", RECORD_HASH_BYTES);
            status = PG_LOG_INVALID_RECORD;
        } else {
            at->position = column_u64(result, 0, 0);
            at->last_seq = column_u64(result, 0, 1);
            at->term = column_u64(result, 0, 2);
            memcpy(at->hash, PQgetvalue(result, 0, 3), RECORD_HASH_BYTES);
        }
    }
    PQclear(result);
    return status;
}

int pg_log_listen(pg_log *log)
{
    bool replaced;
    log->listening = true; /* a reconnect inside session_ready listens already */
    int status = session_ready(log, &replaced);
    if (status != PG_LOG_OK || replaced)
        return status;
    return run_command(log, "LISTEN coffer_log", "LISTEN") ? PG_LOG_OK : PG_LOG_FAILED;
}

int pg_log_unlisten(pg_log *log)
{
    log->listening = false;
    log->notified = false;
    if (connection_lost(log))
        return PG_LOG_OK; /* a new session does not listen */
    return run_command(log, "UNLISTEN coffer_log", "UNLISTEN") ? PG_LOG_OK : PG_LOG_FAILED;
}

int pg_log_wait(pg_log *log, uint32_t timeout_ms, bool *woken)
{
    bool replaced;
    int status = session_ready(log, &replaced);
    *woken = replaced || log->notified;
    log->notified = false;
    if (status != PG_LOG_OK || *woken)
        return status;
    struct pollfd ready = {.fd = PQsocket(log->conn), .events = POLLIN};
    if (poll(&ready, 1, (int)timeout_ms) <= 0)
        return PG_LOG_OK;
    if (PQconsumeInput(log->conn) == 1)
        for (PGnotify *notify; (notify = PQnotifies(log->conn)) != NULL; PQfreemem(notify))
            *woken = true;
    if (connection_lost(log))
        *woken = true; /* the next call reconnects; whatever happened, read again */
    return PG_LOG_OK;
}

uint64_t pg_log_sessions(const pg_log *log)
{
    return log->sessions;
}

int pg_log_last_term(pg_log *log, uint64_t *term, char *name, size_t name_size)
{
    int status;
    PGresult *result = run_read(log,
                                "SELECT term, record FROM coffer_log WHERE kind = 2"
                                " ORDER BY position DESC LIMIT 1",
                                0, NULL, "reading the last term", &status);
    if (result == NULL)
        return status;
    *term = 0;
    if (name_size > 0)
        name[0] = '\0';
    if (PQntuples(result) == 1) {
        *term = column_u64(result, 0, 0);
        int length = PQgetlength(result, 0, 1);
        snprintf(name, name_size, "%.*s", length, PQgetvalue(result, 0, 1));
    }
    PQclear(result);
    return PG_LOG_OK;
}

int pg_log_member_seen(pg_log *log, const char *advertise, int role, uint64_t applied_seq)
{
    char role_text[16], seq_text[24];
    snprintf(role_text, sizeof(role_text), "%d", role);
    snprintf(seq_text, sizeof(seq_text), "%" PRIu64, applied_seq);
    const char *values[3] = {advertise, role_text, seq_text};
    int status;
    /* An upsert is safe to repeat, so it may go through the retrying read path. */
    PGresult *result = run_read(log,
                                "INSERT INTO coffer_members (advertise, role, applied_seq)"
                                " VALUES ($1, $2, $3) ON CONFLICT (advertise) DO UPDATE SET"
                                " role = EXCLUDED.role, applied_seq = EXCLUDED.applied_seq,"
                                " seen_at = now() RETURNING 1",
                                3, values, "recording this member", &status);
    PQclear(result);
    return result != NULL ? PG_LOG_OK : status;
}

int pg_log_members(pg_log *log, uint32_t within_ms, pg_log_member *out, size_t max, size_t *count)
{
    *count = 0;
    char within[16], limit[24];
    snprintf(within, sizeof(within), "%" PRIu32, within_ms);
    snprintf(limit, sizeof(limit), "%zu", max);
    const char *values[2] = {within, limit};
    int status;
    PGresult *result =
        run_read(log,
                 "SELECT advertise, role, applied_seq,"
                 " (extract(epoch FROM seen_at) * 1000)::bigint FROM coffer_members"
                 " WHERE seen_at > now() - make_interval(secs => $1::double precision / 1000)"
                 " ORDER BY advertise LIMIT $2",
                 2, values, "reading the members", &status);
    if (result == NULL)
        return status;
    for (int row = 0; row < PQntuples(result) && *count < max; row++) {
        pg_log_member *member = &out[(*count)++];
        snprintf(member->advertise, sizeof(member->advertise), "%.*s", PQgetlength(result, row, 0),
                 PQgetvalue(result, row, 0));
        member->role = column_i16(result, row, 1);
        member->applied_seq = column_u64(result, row, 2);
        member->seen_at_ms = column_u64(result, row, 3);
    }
    PQclear(result);
    return PG_LOG_OK;
}
