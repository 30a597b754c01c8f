/*
 * test_pg_log.c — coffer's log in PostgreSQL (log/pg_log.h) against a real primary and
 * synchronous standby started by scripts/pg-cluster: the schema and its upgrade, the round
 * trip of records, the lease, fencing of a stale leader by the log, term rows, the presence
 * check, NOTIFY, an interrupted COMMIT, the change feed's cursor (from any seq, never past the
 * seq it is given, going on where it stopped, seeking again when its point was lost, read
 * rights only, bounded waits for a session and a query), and a kill -9 of the primary followed by a
 * promotion.
 * Each test uses its own PostgreSQL schema; the failover test runs last. Without PostgreSQL's
 * binaries the program says so and exits 77, which ctest reports as skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "log/log.h"
#include "log/pg_cursor.h"
#include "log/pg_durable.h"
#include "log/pg_log.h"
#include "log/record.h"
#include "pg_cluster.h"

enum {
    WATCHDOG_SECONDS = 85, /* the whole program, cluster start included (ctest allows 90) */
    WAIT_MS_MAX = 10000,   /* the longest any step waits for PostgreSQL */
    CONNINFO_BYTES = 512,
    RECORDS_MAX = 32, /* records a test keeps copies of */
};

/* The cluster's conninfos (its directory and script: pg_cluster.h). */
static char primary_conninfo[CONNINFO_BYTES];
static char multi_conninfo[CONNINFO_BYTES];

/* ---------------------------------------------------------------------------------------- */
/* The cluster and raw SQL                                                                  */

static void sleep_ms(uint32_t milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (long)(milliseconds % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

/* Connects to the primary (through the multi-host conninfo, so it also works after the
 * failover), waiting, bounded, while it restarts after a crash. */
static PGconn *connect_primary(void)
{
    PGconn *conn = NULL;
    for (int waited_ms = 0; waited_ms < WAIT_MS_MAX; waited_ms += 50) {
        conn = PQconnectdb(multi_conninfo);
        if (PQstatus(conn) == CONNECTION_OK)
            return conn;
        PQfinish(conn);
        sleep_ms(50);
    }
    fail_msg("cannot connect to the primary: %s", multi_conninfo);
    return NULL;
}

/* Runs one SQL statement on the primary; returns a copy of the first value (or NULL), which
 * the caller frees. */
static char *sql(const char *statement)
{
    PGconn *conn = connect_primary();
    PGresult *result = PQexec(conn, statement);
    ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
        fail_msg("%s: %s", statement, PQerrorMessage(conn));
    char *value = NULL;
    if (status == PGRES_TUPLES_OK && PQntuples(result) > 0 && !PQgetisnull(result, 0, 0))
        value = strdup(PQgetvalue(result, 0, 0));
    PQclear(result);
    PQfinish(conn);
    return value;
}

static void sql_expect(const char *statement, const char *expected)
{
    char *value = sql(statement);
    assert_non_null(value);
    assert_string_equal(value, expected);
    free(value);
}

/* A fresh PostgreSQL schema per test; the conninfo (primary or multi-host) uses it. */
static const char *conninfo_for(const char *schema, bool multi_host)
{
    static char conninfo[2][CONNINFO_BYTES + 64];
    char statement[96];
    snprintf(statement, sizeof(statement), "CREATE SCHEMA IF NOT EXISTS %s", schema);
    free(sql(statement));
    char *out = conninfo[multi_host];
    snprintf(out, sizeof(conninfo[0]), "%s options='-csearch_path=%s'",
             multi_host ? multi_conninfo : primary_conninfo, schema);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* Records: a small chain of real log records (expiry entries), kept for comparison.        */

typedef struct chain {
    uint64_t last_seq;
    uint8_t hash[RECORD_HASH_BYTES];
    size_t count;
    record_buffer records[RECORDS_MAX];
    uint8_t hashes[RECORDS_MAX][RECORD_HASH_BYTES];
} chain;

/* Builds the record that continues `from` with `events` entries into *out, its hash in hash. */
static void build_record(const chain *from, uint32_t events, record_buffer *out,
                         uint8_t hash[RECORD_HASH_BYTES])
{
    memset(out, 0, sizeof(*out));
    uint64_t first = from->last_seq + 1;
    record_begin(out, first, 1700000000000000000ULL + first, from->hash);
    for (uint32_t index = 0; index < events; index++) {
        char hold_id[32];
        int length = snprintf(hold_id, sizeof(hold_id), "hold-%" PRIu64, first + index);
        coffer_result expired = {.state = COFFER_STATE_EXPIRED, .seq = first + index};
        record_add_expire(out, first + index, hold_id, (size_t)length, &expired);
    }
    assert_true(record_finish(out, first + events - 1, hash));
}

/* Appends the next record of `events` entries; on PG_LOG_OK the chain moves on. */
static int append_next(pg_log *log, chain *to, uint32_t events)
{
    assert_true(to->count < RECORDS_MAX);
    record_buffer *record = &to->records[to->count];
    build_record(to, events, record, to->hashes[to->count]);
    int status = pg_log_append(log, record->bytes, record->length);
    if (status == PG_LOG_OK) {
        to->last_seq += events;
        memcpy(to->hash, to->hashes[to->count], RECORD_HASH_BYTES);
        to->count++;
    } else {
        record_buffer_free(record);
    }
    return status;
}

static void chain_free(chain *from)
{
    for (size_t index = 0; index < from->count; index++)
        record_buffer_free(&from->records[index]);
}

static pg_log *open_log(const char *conninfo, const char *name, uint32_t lease_ms)
{
    pg_log_options options;
    pg_log_options_init(&options);
    options.leader_name = name;
    if (lease_ms != 0)
        options.lease_ms = lease_ms;
    pg_log *log = NULL;
    char error[512] = "";
    int status = pg_log_open(conninfo, &options, &log, error, sizeof(error));
    if (status != PG_LOG_OK)
        fail_msg("pg_log_open: %s: %s", pg_log_status_name(status), error);
    return log;
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* Takes the lease, waiting (bounded) while a session that has ended may still hold it:
 * PostgreSQL frees a session's locks when its server process exits, a moment after. */
static void lead(pg_log *log, uint64_t expected_term)
{
    bool leading = false;
    for (uint64_t started_ms = now_ms(); !leading && now_ms() - started_ms < WAIT_MS_MAX;) {
        assert_int_equal(pg_log_try_lead(log, &leading), PG_LOG_OK);
        if (!leading)
            sleep_ms(20);
    }
    assert_true(leading);
    assert_true(pg_log_leading(log));
    assert_int_equal(pg_log_term(log), expected_term);
}

/* Collects the rows of a read (copies of the fields a test compares). */
typedef struct collected {
    size_t count;
    pg_log_row rows[RECORDS_MAX];
    uint8_t bytes[RECORDS_MAX][256];
} collected;

static int collect_row(const pg_log_row *row, void *context)
{
    collected *into = context;
    assert_true(into->count < RECORDS_MAX && row->length <= sizeof(into->bytes[0]));
    memcpy(into->bytes[into->count], row->bytes, row->length);
    into->rows[into->count] = *row;
    into->rows[into->count].bytes = into->bytes[into->count];
    into->rows[into->count].hash = NULL; /* not kept */
    into->count++;
    return 0;
}

static void assert_record_row(const collected *rows, size_t index, const chain *expected,
                              size_t record_index, uint64_t term)
{
    const pg_log_row *row = &rows->rows[index];
    const record_buffer *record = &expected->records[record_index];
    record_header header;
    assert_int_equal(record_check(record->bytes, record->length, &header), RECORD_OK);
    assert_int_equal(row->kind, PG_LOG_ROW_RECORD);
    assert_int_equal(row->seq, header.seq_base);
    assert_int_equal(row->last_seq, header.last_seq);
    assert_int_equal(row->term, term);
    assert_int_equal(row->length, record->length);
    assert_memory_equal(row->bytes, record->bytes, record->length);
}

static void assert_term_row(const collected *rows, size_t index, uint64_t term, uint64_t seq,
                            const char *name)
{
    const pg_log_row *row = &rows->rows[index];
    assert_int_equal(row->kind, PG_LOG_ROW_TERM);
    assert_int_equal(row->term, term);
    assert_int_equal(row->seq, seq);
    assert_int_equal(row->last_seq, seq - 1);
    assert_int_equal(row->length, strlen(name));
    assert_memory_equal(row->bytes, name, strlen(name));
}

/* ---------------------------------------------------------------------------------------- */
/* Schema                                                                                   */

static void test_schema_created_then_kept_and_newer_refused(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("schema_test", false);
    pg_log *log = open_log(conninfo, "http://a", 0);
    sql_expect("SELECT value FROM schema_test.coffer_meta WHERE key = 'schema_version'", "2");
    chain written = {0};
    lead(log, 1);
    assert_int_equal(append_next(log, &written, 3), PG_LOG_OK);
    pg_log_close(log);

    /* A database of version 1 (no coffer_members) is upgraded and keeps every row. */
    free(sql("DROP TABLE schema_test.coffer_members"));
    free(sql("UPDATE schema_test.coffer_meta SET value = '1' WHERE key = 'schema_version'"));
    log = open_log(conninfo, "http://a", 0);
    sql_expect("SELECT value FROM schema_test.coffer_meta WHERE key = 'schema_version'", "2");
    assert_int_equal(pg_log_member_seen(log, "http://a", 1, 3), PG_LOG_OK);
    pg_log_member members[2];
    size_t count = 0;
    assert_int_equal(pg_log_members(log, 10000, members, 2, &count), PG_LOG_OK);
    assert_int_equal(count, 1);
    assert_string_equal(members[0].advertise, "http://a");
    assert_int_equal(members[0].role, 1);
    assert_int_equal(members[0].applied_seq, 3);
    assert_true(members[0].seen_at_ms > 1600000000000ull);
    uint64_t term = 0;
    char name[64];
    assert_int_equal(pg_log_last_term(log, &term, name, sizeof name), PG_LOG_OK);
    assert_int_equal(term, 1);
    assert_string_equal(name, "http://a");
    sql_expect("SELECT count(*) FROM schema_test.coffer_log", "2");
    pg_log_point tail;
    assert_int_equal(pg_log_read_tail(log, &tail), PG_LOG_OK);
    assert_int_equal(tail.position, 2);
    assert_int_equal(tail.last_seq, 3);
    assert_memory_equal(tail.hash, written.hash, RECORD_HASH_BYTES);
    pg_log_close(log);

    /* A schema from a newer coffer is refused and left as it is. */
    free(sql("UPDATE schema_test.coffer_meta SET value = '3' WHERE key = 'schema_version'"));
    char error[512] = "";
    log = (pg_log *)&error; /* must be reset to NULL */
    assert_int_equal(pg_log_open(conninfo, NULL, &log, error, sizeof(error)), PG_LOG_SCHEMA_NEWER);
    assert_null(log);
    assert_non_null(strstr(error, "newer"));
    sql_expect("SELECT value FROM schema_test.coffer_meta WHERE key = 'schema_version'", "3");
    chain_free(&written);
}

/* ---------------------------------------------------------------------------------------- */
/* Appending and reading                                                                    */

static void test_append_then_read_back_every_byte(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("round_trip", false), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    assert_int_equal(append_next(log, &written, 1), PG_LOG_OK);
    assert_int_equal(append_next(log, &written, 5), PG_LOG_OK);
    assert_int_equal(append_next(log, &written, 2), PG_LOG_OK);

    collected rows = {0};
    uint32_t read = 0;
    pg_log_point from = {0};
    assert_int_equal(pg_log_read(log, &from, 10, collect_row, &rows, &read), PG_LOG_OK);
    assert_int_equal(read, 4);
    assert_term_row(&rows, 0, 1, 1, "http://a");
    for (size_t index = 0; index < 3; index++)
        assert_record_row(&rows, index + 1, &written, index, 1);
    assert_int_equal(rows.rows[3].position, 4);
    /* The reader's point moved to the end, which is the tail. */
    pg_log_point tail;
    assert_int_equal(pg_log_read_tail(log, &tail), PG_LOG_OK);
    assert_int_equal(tail.position, 4);
    assert_int_equal(tail.last_seq, 8);
    assert_int_equal(tail.term, 1);
    assert_memory_equal(tail.hash, written.hash, RECORD_HASH_BYTES);
    assert_memory_equal(&from, &tail, sizeof(tail));
    assert_int_equal(pg_log_read(log, &from, 10, collect_row, &rows, &read), PG_LOG_OK);
    assert_int_equal(read, 0);

    /* From the point after a record, at most rows_max rows. */
    bool present = false;
    assert_int_equal(pg_log_find(log, 1, written.hashes[0], &present, &from), PG_LOG_OK);
    assert_true(present);
    collected one = {0};
    assert_int_equal(pg_log_read(log, &from, 1, collect_row, &one, &read), PG_LOG_OK);
    assert_int_equal(read, 1);
    assert_int_equal(one.rows[0].position, 3);
    assert_record_row(&one, 0, &written, 1, 1);
    assert_int_equal(from.position, 3);
    assert_int_equal(from.last_seq, 6);
    pg_log_close(log);
    chain_free(&written);
}

/* A round's rows read back: each record row must hold the next of `records`, in order. */
typedef struct round_rows {
    const record_buffer *records;
    size_t next;
} round_rows;

static int check_round_row(const pg_log_row *row, void *context)
{
    round_rows *round = context;
    if (row->kind != PG_LOG_ROW_RECORD)
        return 0;
    const record_buffer *expected = &round->records[round->next++];
    assert_int_equal(row->length, expected->length);
    assert_memory_equal(row->bytes, expected->bytes, expected->length);
    return 0;
}

/* A leader's round: up to PG_LOG_APPEND_RECORDS_MAX records in one statement, durable together
 * and read back in order; one more than that is refused, leaving the log as it was and the
 * session leading. */
static void test_a_round_takes_up_to_its_most_records_at_once(void **state)
{
    (void)state;
    enum { COUNT = PG_LOG_APPEND_RECORDS_MAX + 1 };
    static record_buffer records[COUNT];
    const uint8_t *bytes[COUNT];
    size_t lengths[COUNT];
    uint8_t hashes[COUNT][RECORD_HASH_BYTES];
    chain at = {0};
    for (size_t index = 0; index < COUNT; index++) {
        build_record(&at, 2, &records[index], hashes[index]);
        at.last_seq += 2;
        memcpy(at.hash, hashes[index], RECORD_HASH_BYTES);
        bytes[index] = records[index].bytes;
        lengths[index] = records[index].length;
    }
    pg_log *log = open_log(conninfo_for("deep_round", false), "http://a", 0);
    lead(log, 1);
    assert_int_equal(pg_log_append_many(log, bytes, lengths, COUNT), PG_LOG_INVALID_RECORD);
    assert_non_null(strstr(pg_log_error(log), "65 records in one append (1 to 64)"));
    pg_log_point tail;
    assert_int_equal(pg_log_read_tail(log, &tail), PG_LOG_OK);
    assert_int_equal(tail.position, 1); /* the term row alone */
    assert_int_equal(tail.last_seq, 0);

    assert_int_equal(pg_log_append_many(log, bytes, lengths, COUNT - 1), PG_LOG_OK);
    assert_int_equal(pg_log_read_tail(log, &tail), PG_LOG_OK);
    assert_int_equal(tail.position, COUNT);
    assert_int_equal(tail.last_seq, 2 * (COUNT - 1));
    assert_memory_equal(tail.hash, hashes[COUNT - 2], RECORD_HASH_BYTES);
    round_rows round = {records, 0};
    pg_log_point from = {0};
    uint32_t read = 0;
    assert_int_equal(pg_log_read(log, &from, 2 * COUNT, check_round_row, &round, &read), PG_LOG_OK);
    assert_int_equal(read, COUNT);
    assert_int_equal(round.next, COUNT - 1);
    pg_log_close(log);
    for (size_t index = 0; index < COUNT; index++)
        record_buffer_free(&records[index]);
}

/* A leader's round too large for one statement (past 64 MiB) goes in two, and all of it is in
 * the log, in order, when the round's sync returns: three records of about 25 MiB, appended
 * and synced as one round through the durable log, are written by two transactions. */
static void test_a_round_past_64_mib_goes_in_two_statements(void **state)
{
    (void)state;
    enum { ROUND = 3 };
    static record_buffer records[ROUND];
    uint8_t hashes[ROUND][RECORD_HASH_BYTES];
    wal_tip tips[ROUND + 1] = {{0}};
    chain at = {0};
    record_buffer probe; /* entries of about one size: measure some, then scale */
    uint8_t probe_hash[RECORD_HASH_BYTES];
    build_record(&at, 1000, &probe, probe_hash);
    uint32_t events = (uint32_t)((25u << 20) / (probe.length / 1000));
    record_buffer_free(&probe);
    for (size_t index = 0; index < ROUND; index++) {
        build_record(&at, events, &records[index], hashes[index]);
        assert_true(records[index].length > (22u << 20) && records[index].length < (32u << 20));
        at.last_seq += events;
        memcpy(at.hash, hashes[index], RECORD_HASH_BYTES);
        tips[index + 1].last_seq = at.last_seq;
        memcpy(tips[index + 1].hash, at.hash, RECORD_HASH_BYTES);
    }
    pg_log *log = open_log(conninfo_for("big_round", false), "http://a", 0);
    lead(log, 1);
    durable_log round = {0};
    assert_int_equal(pg_durable_open(&round, log, 10000), COFFER_OK);
    for (size_t index = 0; index < ROUND; index++)
        assert_int_equal(log_append(&round, records[index].bytes, records[index].length,
                                    &tips[index], &tips[index + 1]),
                         COFFER_OK);
    assert_int_equal(log_sync(&round), COFFER_OK);
    wal_tip tail;
    log_tail(&round, &tail);
    assert_int_equal(tail.last_seq, (uint64_t)ROUND * events);
    assert_memory_equal(tail.hash, hashes[ROUND - 1], RECORD_HASH_BYTES);

    char *transactions =
        sql("SELECT count(*) || ' rows, ' || count(DISTINCT written_at) || ' transactions'"
            " FROM big_round.coffer_log WHERE kind = 1");
    assert_string_equal(transactions, "3 rows, 2 transactions");
    free(transactions);
    round_rows read_back = {records, 0};
    pg_log_point from = {0};
    for (uint32_t read = 1; read > 0;)
        assert_int_equal(pg_log_read(log, &from, ROUND + 1, check_round_row, &read_back, &read),
                         PG_LOG_OK);
    assert_int_equal(read_back.next, ROUND);
    log_close(&round, true); /* ends the session */
    for (size_t index = 0; index < ROUND; index++)
        record_buffer_free(&records[index]);
}

/* Counts the record rows whose bytes are those of `context` (a record_buffer). */
static int matched;
static int match_big_row(const pg_log_row *row, void *context)
{
    const record_buffer *expected = context;
    if (row->kind == PG_LOG_ROW_RECORD && row->length == expected->length &&
        memcmp(row->bytes, expected->bytes, row->length) == 0)
        matched++;
    return 0;
}

/* A big record is compressed with lz4 where nobody chose a method, with the method the conninfo
 * names otherwise, and reads back the same bytes either way. */
static void test_big_records_are_compressed_with_lz4_unless_told_otherwise(void **state)
{
    (void)state;
    static const char *const schemas[] = {"compress_default", "compress_told"};
    static const char *const methods[] = {"lz4", "pglz"};
    for (size_t told = 0; told < 2; told++) {
        char conninfo[CONNINFO_BYTES + 128];
        conninfo_for(schemas[told], false); /* creates the schema */
        snprintf(conninfo, sizeof(conninfo), "%s options='-csearch_path=%s%s'", primary_conninfo,
                 schemas[told], told ? " -cdefault_toast_compression=pglz" : "");
        pg_log *log = open_log(conninfo, "http://a", 0);
        lead(log, 1);
        chain written = {0};
        assert_int_equal(append_next(log, &written, 2000), PG_LOG_OK); /* tens of KiB */
        char statement[160];
        snprintf(statement, sizeof(statement),
                 "SELECT pg_column_compression(record) FROM %s.coffer_log WHERE kind = 1",
                 schemas[told]);
        sql_expect(statement, methods[told]);
        matched = 0;
        uint32_t read = 0;
        pg_log_point from = {0};
        assert_int_equal(pg_log_read(log, &from, 10, match_big_row, &written.records[0], &read),
                         PG_LOG_OK);
        assert_int_equal(read, 2);
        assert_int_equal(matched, 1);
        pg_log_close(log);
        chain_free(&written);
    }
}

static void test_append_refuses_a_record_that_does_not_continue_the_tail(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("chain_check", false), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    assert_int_equal(append_next(log, &written, 2), PG_LOG_OK);

    chain gap = written;
    gap.count = 0;
    gap.last_seq -= 1; /* would repeat seq 2 (skipping seqs is allowed; going back is not) */
    record_buffer record;
    uint8_t hash[RECORD_HASH_BYTES];
    build_record(&gap, 1, &record, hash);
    assert_int_equal(pg_log_append(log, record.bytes, record.length), PG_LOG_INVALID_RECORD);
    record_buffer_free(&record);

    chain wrong_link = written;
    wrong_link.count = 0;
    wrong_link.hash[0] ^= 1;
    build_record(&wrong_link, 1, &record, hash);
    assert_int_equal(pg_log_append(log, record.bytes, record.length), PG_LOG_INVALID_RECORD);
    record.bytes[RECORD_HEADER_BYTES] ^= 1; /* and bytes that do not match their hash */
    assert_int_equal(pg_log_append(log, record.bytes, record.length), PG_LOG_INVALID_RECORD);
    record_buffer_free(&record);

    /* Nothing was written and the leader goes on. */
    assert_true(pg_log_leading(log));
    sql_expect("SELECT max(position) FROM chain_check.coffer_log", "2");
    assert_int_equal(append_next(log, &written, 1), PG_LOG_OK);
    sql_expect("SELECT max(last_seq) FROM chain_check.coffer_log", "3");
    pg_log_close(log);
    chain_free(&written);
}

static void assert_read_refused(pg_log *log, pg_log_point *from, const char *reason)
{
    collected rows = {0};
    assert_int_equal(pg_log_read(log, from, 10, collect_row, &rows, NULL), PG_LOG_INVALID_RECORD);
    assert_non_null(strstr(pg_log_error(log), reason));
}

/* A reader checks every row it reads against the point it holds, and the rows themselves. */
static void test_read_checks_the_chain_and_every_record(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("read_check", false), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    assert_int_equal(append_next(log, &written, 2), PG_LOG_OK);
    assert_int_equal(append_next(log, &written, 2), PG_LOG_OK);

    pg_log_point from = {0};
    from.hash[0] = 1; /* a reader whose chain is not this log's */
    assert_read_refused(log, &from, "position 1 is a term row that breaks the hash chain");
    bool present = false;
    assert_int_equal(pg_log_find(log, 2, written.hashes[0], &present, &from), PG_LOG_OK);
    from.last_seq = 4; /* a reader that thinks it is further on */
    assert_read_refused(log, &from, "position 3 does not follow");

    free(sql("UPDATE read_check.coffer_log SET record = set_byte(record, 80,"
             " get_byte(record, 80) # 1) WHERE position = 3"));
    assert_int_equal(pg_log_find(log, 2, written.hashes[0], &present, &from), PG_LOG_OK);
    assert_read_refused(log, &from, "position 3 holds a record that does not match its hash");
    pg_log_close(log);
    chain_free(&written);
}

/* A reader whose session PostgreSQL ends (here pg_terminate_backend; on a standby a conflict
 * with recovery, an idle timeout) does not start another one, and says why it was lost. */
static void test_a_reader_that_loses_its_session_says_why(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("reader_lost", false);
    pg_log *writer = open_log(conninfo, "http://a", 0);
    lead(writer, 1);
    chain written = {0};
    assert_int_equal(append_next(writer, &written, 2), PG_LOG_OK);
    pg_log_close(writer);

    pg_log *reader = NULL;
    char error[256];
    assert_int_equal(pg_log_open_read(conninfo, &reader, error, sizeof(error)), PG_LOG_OK);
    int pid = pg_log_backend_pid(reader);
    char statement[128];
    snprintf(statement, sizeof(statement), "SELECT pg_terminate_backend(%d)", pid);
    free(sql(statement));
    /* Gone for certain before the reader is used again (bounded). */
    snprintf(statement, sizeof(statement), "SELECT count(*) FROM pg_stat_activity WHERE pid = %d",
             pid);
    for (int waited_ms = 0;; waited_ms += 20) {
        char *count = sql(statement);
        bool gone = count != NULL && strcmp(count, "0") == 0;
        free(count);
        if (gone)
            break;
        if (waited_ms >= WAIT_MS_MAX)
            fail_msg("backend %d still runs", pid);
        sleep_ms(20);
    }
    pg_log_point tail;
    assert_int_equal(pg_log_read_tail(reader, &tail), PG_LOG_DISCONNECTED);
    const char *why = pg_log_error(reader);
    if (!strstr(why, "lost during the read") || !strstr(why, "run it again") ||
        !strstr(why, "terminating connection due to administrator command"))
        fail_msg("the reason is not kept: '%s'", why);
    pg_log_close(reader);
    chain_free(&written);
}

/* ---------------------------------------------------------------------------------------- */
/* Leadership                                                                               */

static void test_one_of_two_sessions_leads_and_terms_count_up(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("two_leaders", false);
    pg_log *first = open_log(conninfo, "http://first", 0);
    pg_log *second = open_log(conninfo, "http://second", 0);
    lead(first, 1);
    bool leading = true;
    assert_int_equal(pg_log_try_lead(second, &leading), PG_LOG_OK);
    assert_false(leading);
    assert_false(pg_log_leading(second));
    chain written = {0};
    assert_int_equal(append_next(second, &written, 1), PG_LOG_NOT_LEADER);
    assert_int_equal(append_next(first, &written, 1), PG_LOG_OK);

    /* The first leader goes away: the second takes over in the next term, after seq 1. */
    pg_log_close(first);
    lead(second, 2);
    assert_int_equal(append_next(second, &written, 2), PG_LOG_OK);
    collected rows = {0};
    pg_log_point from = {0};
    assert_int_equal(pg_log_read(second, &from, 10, collect_row, &rows, NULL), PG_LOG_OK);
    assert_int_equal(rows.count, 4);
    assert_term_row(&rows, 0, 1, 1, "http://first");
    assert_record_row(&rows, 1, &written, 0, 1);
    assert_term_row(&rows, 2, 2, 2, "http://second");
    assert_record_row(&rows, 3, &written, 1, 2);

    /* Stepping down frees the lease for the next one. */
    pg_log *third = open_log(conninfo, "http://third", 0);
    assert_int_equal(pg_log_step_down(second), PG_LOG_OK);
    lead(third, 3);
    pg_log_close(second);
    pg_log_close(third);
    chain_free(&written);
}

static void test_stale_leader_is_fenced_by_the_log(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("fenced", false);
    pg_log *stale = open_log(conninfo, "http://stale", 0);
    lead(stale, 1);
    chain written = {0};
    assert_int_equal(append_next(stale, &written, 1), PG_LOG_OK);

    /* Another leader got in without the lease (as through a transaction pooler, where session
     * locks mean nothing) and wrote its term row at the next position. */
    free(sql("INSERT INTO fenced.coffer_log (position, kind, seq, last_seq, term, hash, record)"
             " SELECT 3, 2, 2, 1, 2, hash, 'http://other' FROM fenced.coffer_log"
             " WHERE position = 2"));
    assert_int_equal(append_next(stale, &written, 1), PG_LOG_NOT_LEADER);
    assert_false(pg_log_leading(stale));
    sql_expect("SELECT kind || ':' || term FROM fenced.coffer_log WHERE position = 3", "2:2");
    sql_expect("SELECT count(*) FROM fenced.coffer_log", "3");

    /* The stale leader gave up its lease: another session leads, after the foreign term. */
    pg_log *next = open_log(conninfo, "http://next", 0);
    lead(next, 3);
    pg_log_close(next);
    pg_log_close(stale);
    chain_free(&written);
}

static void test_paused_leader_loses_its_session_and_acknowledges_nothing(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("lease", false);
    pg_log *paused = open_log(conninfo, "http://paused", 1000);
    lead(paused, 1);
    chain written = {0};
    assert_int_equal(append_next(paused, &written, 1), PG_LOG_OK);
    /* Heartbeats keep the session past the lease ... */
    uint64_t last_beat_ms = 0;
    for (int beat = 0; beat < 6; beat++) {
        sleep_ms(250);
        assert_int_equal(pg_log_heartbeat(paused), PG_LOG_OK);
        last_beat_ms = now_ms();
    }
    pg_log *other = open_log(conninfo, "http://other", 1000);
    bool leading = true;
    assert_int_equal(pg_log_try_lead(other, &leading), PG_LOG_OK);
    assert_false(leading);

    /* ... and a pause longer than the lease ends it, which frees the lease: not before the
     * lease has run from the last heartbeat (the pause began then, not at this line). */
    lead(other, 2);
    assert_true(now_ms() - last_beat_ms >= 1000);
    assert_int_equal(append_next(paused, &written, 1), PG_LOG_NOT_LEADER);
    assert_false(pg_log_leading(paused));
    bool present = true;
    pg_log_point at;
    assert_int_equal(pg_log_find(paused, 2, written.hashes[1], &present, &at), PG_LOG_OK);
    assert_false(present);
    sql_expect("SELECT count(*) FROM lease.coffer_log", "3");
    pg_log_close(other);
    pg_log_close(paused);
    chain_free(&written);
}

/* ---------------------------------------------------------------------------------------- */
/* Following                                                                                */

static void test_find_tells_whether_a_record_is_in_the_log(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("find", false), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    assert_int_equal(append_next(log, &written, 4), PG_LOG_OK);
    assert_int_equal(append_next(log, &written, 1), PG_LOG_OK);

    bool present = false;
    pg_log_point at;
    assert_int_equal(pg_log_find(log, 4, written.hashes[0], &present, &at), PG_LOG_OK);
    assert_true(present);
    assert_int_equal(at.position, 2);
    assert_int_equal(at.last_seq, 4);
    assert_int_equal(at.term, 1);
    assert_memory_equal(at.hash, written.hashes[0], RECORD_HASH_BYTES);
    assert_int_equal(pg_log_find(log, 5, written.hashes[1], &present, &at), PG_LOG_OK);
    assert_true(present);
    assert_int_equal(at.position, 3);

    uint8_t other_hash[RECORD_HASH_BYTES];
    memcpy(other_hash, written.hashes[0], RECORD_HASH_BYTES);
    other_hash[31] ^= 0x80;
    assert_int_equal(pg_log_find(log, 4, other_hash, &present, &at), PG_LOG_OK);
    assert_false(present);
    assert_int_equal(pg_log_find(log, 3, written.hashes[0], &present, &at), PG_LOG_OK);
    assert_false(present); /* seq 3 is inside a record, not the end of one */
    assert_int_equal(pg_log_find(log, 6, written.hashes[1], &present, &at), PG_LOG_OK);
    assert_false(present);

    static const uint8_t start[RECORD_HASH_BYTES] = {0};
    assert_int_equal(pg_log_find(log, 0, start, &present, &at), PG_LOG_OK);
    assert_true(present);
    assert_int_equal(at.position, 0);
    assert_int_equal(pg_log_find(log, 0, other_hash, &present, &at), PG_LOG_OK);
    assert_false(present);
    pg_log_close(log);
    chain_free(&written);
}

static void test_follower_is_woken_by_an_append(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("follow", false);
    pg_log *leader = open_log(conninfo, "http://leader", 0);
    pg_log *follower = open_log(conninfo, "http://follower", 0);
    assert_int_equal(pg_log_listen(follower), PG_LOG_OK);
    bool woken = true;
    assert_int_equal(pg_log_wait(follower, 100, &woken), PG_LOG_OK);
    assert_false(woken);

    lead(leader, 1); /* the term row notifies too */
    assert_int_equal(pg_log_wait(follower, WAIT_MS_MAX, &woken), PG_LOG_OK);
    assert_true(woken);
    chain written = {0};
    assert_int_equal(append_next(leader, &written, 2), PG_LOG_OK);
    woken = false;
    assert_int_equal(pg_log_wait(follower, WAIT_MS_MAX, &woken), PG_LOG_OK);
    assert_true(woken);

    /* The follower reads on from where it got to: the term row, then the record. */
    collected rows = {0};
    pg_log_point applied = {0};
    assert_int_equal(pg_log_read(follower, &applied, 10, collect_row, &rows, NULL), PG_LOG_OK);
    assert_int_equal(rows.count, 2);
    assert_term_row(&rows, 0, 1, 1, "http://leader");
    assert_record_row(&rows, 1, &written, 0, 1);
    assert_int_equal(applied.last_seq, 2);
    pg_log_close(follower);
    pg_log_close(leader);
    chain_free(&written);
}

/* ---------------------------------------------------------------------------------------- */
/* Failures                                                                                 */

/* How a COMMIT waiting for the standby is cut off: politely (PostgreSQL warns that the
 * transaction committed locally, then ends the session) or by a crash (no word at all). */
enum interruption { TERMINATE_BACKEND, KILL_BACKEND };

typedef struct interrupter {
    enum interruption how;
    int backend_pid;
    bool interrupted;
} interrupter;

static bool backend_waits_for_standby(PGconn *conn, int backend_pid)
{
    char statement[128];
    snprintf(statement, sizeof(statement),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event = 'SyncRep'",
             backend_pid);
    PGresult *result = PQexec(conn, statement);
    bool waiting =
        PQresultStatus(result) == PGRES_TUPLES_OK && strcmp(PQgetvalue(result, 0, 0), "1") == 0;
    PQclear(result);
    return waiting;
}

/* Waits until the backend waits for the synchronous standby, then cuts it off. */
static void *interrupt_when_waiting(void *context)
{
    interrupter *job = context;
    for (int waited_ms = 0; waited_ms < WAIT_MS_MAX && !job->interrupted; waited_ms += 20) {
        PGconn *conn = PQconnectdb(primary_conninfo);
        if (backend_waits_for_standby(conn, job->backend_pid)) {
            char statement[64];
            snprintf(statement, sizeof(statement), "SELECT pg_terminate_backend(%d)",
                     job->backend_pid);
            if (job->how == TERMINATE_BACKEND)
                PQclear(PQexec(conn, statement));
            else
                kill(job->backend_pid, SIGKILL); /* PostgreSQL restarts and recovers */
            job->interrupted = true;
        }
        PQfinish(conn);
        sleep_ms(20);
    }
    return NULL;
}

static void set_synchronous_standby_names(const char *value)
{
    char statement[128];
    snprintf(statement, sizeof(statement), "ALTER SYSTEM SET synchronous_standby_names = '%s'",
             value);
    free(sql(statement));
    free(sql("SELECT pg_reload_conf()"));
    sleep_ms(300); /* the reload reaches every backend before its next statement */
}

/* Reads the tail, waiting, bounded, while PostgreSQL recovers from a crash. */
static void read_tail_when_up(pg_log *log, pg_log_point *tail)
{
    int status = PG_LOG_DISCONNECTED;
    for (int waited_ms = 0; waited_ms < WAIT_MS_MAX && status == PG_LOG_DISCONNECTED;
         waited_ms += 50) {
        if ((status = pg_log_read_tail(log, tail)) == PG_LOG_DISCONNECTED)
            sleep_ms(50);
    }
    assert_int_equal(status, PG_LOG_OK);
}

/* Appends a record whose COMMIT is cut off while it waits for the standby. */
static int append_interrupted(pg_log *log, chain *to, enum interruption how)
{
    char *standbys = sql("SHOW synchronous_standby_names");
    assert_non_null(standbys);
    set_synchronous_standby_names("nobody"); /* every COMMIT now waits */
    interrupter job = {.how = how, .backend_pid = pg_log_backend_pid(log)};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, interrupt_when_waiting, &job), 0);
    int status = append_next(log, to, 1);
    pthread_join(thread, NULL);
    set_synchronous_standby_names(standbys);
    free(standbys);
    assert_true(job.interrupted);
    return status;
}

/* ---------------------------------------------------------------------------------------- */
/* The change feed's cursor                                                                 */

/* The records a cursor visited: (first seq, last seq, position); stops after stop_after. */
typedef struct visited {
    size_t count, stop_after;
    uint64_t first[RECORDS_MAX], last[RECORDS_MAX], position[RECORDS_MAX];
} visited;

static int visit_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                        uint64_t offset, void *context)
{
    visited *into = context;
    assert_non_null(bytes);
    assert_int_equal(segment, 0);
    if (into->stop_after && into->count == into->stop_after)
        return 7;
    assert_true(into->count < RECORDS_MAX);
    into->first[into->count] = header->seq_base;
    into->last[into->count] = header->last_seq;
    into->position[into->count] = offset;
    into->count++;
    return 0;
}

/* Reads with `cursor` after `after` up to `durable`, and checks the records' last seqs. */
static void assert_cursor_reads(pg_cursor *cursor, uint64_t after, uint64_t durable,
                                size_t max_bytes, const uint64_t *lasts, size_t count)
{
    visited seen = {0};
    char error[512] = "";
    assert_int_equal(
        pg_cursor_read(cursor, after, durable, max_bytes, visit_record, &seen, error, sizeof error),
        COFFER_OK);
    assert_int_equal(seen.count, count);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(seen.last[i], lasts[i]);
}

static void test_cursor_reads_from_any_seq_and_never_past_durable(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("cursor", false);
    /* Rows: term 1, records 1, 2..6, 7..8, term 2, 9..11. */
    pg_log *first = open_log(conninfo, "http://a", 0);
    lead(first, 1);
    chain written = {0};
    assert_int_equal(append_next(first, &written, 1), PG_LOG_OK);
    assert_int_equal(append_next(first, &written, 5), PG_LOG_OK);
    assert_int_equal(append_next(first, &written, 2), PG_LOG_OK);
    pg_log_close(first);
    pg_log *second = open_log(conninfo, "http://b", 0);
    lead(second, 2);
    assert_int_equal(append_next(second, &written, 3), PG_LOG_OK);

    pg_read_pool *pool = NULL;
    assert_int_equal(pg_read_pool_open(conninfo, 0, &pool), COFFER_OK);
    pg_cursor *cursor = NULL;
    assert_int_equal(pg_cursor_open(pool, &cursor), COFFER_OK);
    const uint64_t all[] = {1, 6, 8, 11};
    assert_cursor_reads(cursor, 0, 11, SIZE_MAX, all, 4);
    /* Never past the seq it is given (what the instance has applied), even inside a record. */
    assert_cursor_reads(cursor, 0, 6, SIZE_MAX, all, 2);
    assert_cursor_reads(cursor, 0, 7, SIZE_MAX, all, 2);
    assert_cursor_reads(cursor, 6, 6, SIZE_MAX, all, 0);
    /* From inside a record: that record whole, then on; over the term row. */
    assert_cursor_reads(cursor, 3, 11, SIZE_MAX, all + 1, 3);
    assert_cursor_reads(cursor, 8, 11, SIZE_MAX, all + 3, 1);
    assert_cursor_reads(cursor, 11, 11, SIZE_MAX, all, 0);
    assert_cursor_reads(cursor, 40, 11, SIZE_MAX, all, 0);
    /* A byte bound stops after the record that reaches it. */
    assert_cursor_reads(cursor, 0, 11, 1, all, 1);

    /* A visitor that stops is given the same record again on the next read. */
    visited seen = {.stop_after = 1};
    char error[512] = "";
    assert_int_equal(
        pg_cursor_read(cursor, 0, 11, SIZE_MAX, visit_record, &seen, error, sizeof error), 7);
    assert_int_equal(seen.count, 1);
    assert_int_equal(seen.position[0], 2); /* after the term row */
    assert_cursor_reads(cursor, 3, 11, SIZE_MAX, all + 1, 3);

    /* A damaged record is refused with the reason, never skipped. */
    free(sql("UPDATE cursor.coffer_log SET record = set_byte(record, 80,"
             " get_byte(record, 80) # 1) WHERE position = 4"));
    seen = (visited){0};
    assert_int_equal(
        pg_cursor_read(cursor, 0, 11, SIZE_MAX, visit_record, &seen, error, sizeof error),
        COFFER_STORAGE_FAILED);
    assert_int_equal(seen.count, 2);
    assert_non_null(strstr(error, "position 4 holds a record that does not match its hash"));
    pg_cursor_close(cursor);
    pg_read_pool_close(pool);
    pg_log_close(second);
    chain_free(&written);
}

/* After a failover lost the rows a cursor read last and other rows took their positions, the
 * cursor's saved point continues nothing: it finds its seq again instead of failing. */
static void test_cursor_seeks_again_when_its_point_was_lost(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("cursor_lost", false);
    /* Rows: term 1, records 1, 2..3. */
    pg_log *first = open_log(conninfo, "http://a", 0);
    lead(first, 1);
    chain written = {0};
    assert_int_equal(append_next(first, &written, 1), PG_LOG_OK);
    assert_int_equal(append_next(first, &written, 2), PG_LOG_OK);
    pg_log_close(first);

    pg_read_pool *pool = NULL;
    assert_int_equal(pg_read_pool_open(conninfo, 0, &pool), COFFER_OK);
    pg_cursor *cursor = NULL;
    assert_int_equal(pg_cursor_open(pool, &cursor), COFFER_OK);
    const uint64_t before[] = {1, 3};
    assert_cursor_reads(cursor, 0, 3, SIZE_MAX, before, 2);

    /* The record 2..3 is lost; a new leader writes its term row at its position and 2..4. */
    free(sql("DELETE FROM cursor_lost.coffer_log WHERE position = 3"));
    pg_log *second = open_log(conninfo, "http://b", 0);
    lead(second, 2);
    chain rewritten = {.last_seq = 1};
    memcpy(rewritten.hash, written.hashes[0], RECORD_HASH_BYTES);
    assert_int_equal(append_next(second, &rewritten, 3), PG_LOG_OK);

    /* Going on from seq 3 (the saved point, now lost) finds 2..4 whole, not a broken chain. */
    visited seen = {0};
    char error[512] = "";
    assert_int_equal(
        pg_cursor_read(cursor, 3, 4, SIZE_MAX, visit_record, &seen, error, sizeof error),
        COFFER_OK);
    assert_int_equal(seen.count, 1);
    assert_int_equal(seen.first[0], 2);
    assert_int_equal(seen.last[0], 4);
    assert_int_equal(seen.position[0], 4);

    /* A log that is damaged still fails, after the one seek. */
    free(sql("UPDATE cursor_lost.coffer_log SET record = set_byte(record, 80,"
             " get_byte(record, 80) # 1) WHERE position = 4"));
    seen = (visited){0};
    assert_int_equal(
        pg_cursor_read(cursor, 1, 4, SIZE_MAX, visit_record, &seen, error, sizeof error),
        COFFER_STORAGE_FAILED);
    assert_int_equal(seen.count, 0);
    assert_non_null(strstr(error, "position 4 holds a record that does not match its hash"));
    pg_cursor_close(cursor);
    pg_read_pool_close(pool);
    pg_log_close(second);
    chain_free(&written);
    chain_free(&rewritten);
}

/* A pool's sessions are readers': a role that may only read the tables reads the feed (no
 * schema is created or upgraded, nothing written). */
static void test_cursor_needs_only_read_rights(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("cursor_read", false);
    pg_log *leader = open_log(conninfo, "http://a", 0);
    lead(leader, 1);
    chain written = {0};
    assert_int_equal(append_next(leader, &written, 2), PG_LOG_OK);
    free(sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'feed_reader')"
             " THEN CREATE ROLE feed_reader LOGIN; END IF; END $$"));
    free(sql("GRANT USAGE ON SCHEMA cursor_read TO feed_reader"));
    free(sql("GRANT SELECT ON ALL TABLES IN SCHEMA cursor_read TO feed_reader"));
    char reader_conninfo[2 * CONNINFO_BYTES + 192];
    snprintf(reader_conninfo, sizeof reader_conninfo, "%s user=feed_reader", conninfo);

    pg_read_pool *pool = NULL;
    assert_int_equal(pg_read_pool_open(reader_conninfo, 0, &pool), COFFER_OK);
    pg_cursor *cursor = NULL;
    assert_int_equal(pg_cursor_open(pool, &cursor), COFFER_OK);
    const uint64_t all[] = {2};
    assert_cursor_reads(cursor, 0, 2, SIZE_MAX, all, 1);
    pg_cursor_close(cursor);
    pg_read_pool_close(pool);
    pg_log_close(leader);
    chain_free(&written);
}

/* A cursor read on its own thread (the pool's sessions all busy behind a lock). */
typedef struct blocked_read {
    pg_cursor *cursor;
    int code;
    pthread_t thread;
} blocked_read;

static void *read_blocked(void *context)
{
    blocked_read *job = context;
    visited seen = {0};
    char error[512] = "";
    job->code =
        pg_cursor_read(job->cursor, 0, 2, SIZE_MAX, visit_record, &seen, error, sizeof error);
    return NULL;
}

/* Holds an ACCESS EXCLUSIVE lock on `table` in an open transaction of its own session. */
static PGconn *lock_table(const char *table)
{
    PGconn *conn = connect_primary();
    char statement[128];
    snprintf(statement, sizeof statement, "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", table);
    PGresult *result = PQexec(conn, statement);
    assert_int_equal(PQresultStatus(result), PGRES_COMMAND_OK);
    PQclear(result);
    return conn;
}

/* How many sessions wait for a lock on coffer_log of `schema`, waiting (bounded) for `count`. */
static void wait_for_lock_waiters(const char *schema, int count)
{
    char statement[256], expected[16];
    snprintf(statement, sizeof statement,
             "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = '%s.coffer_log'"
             "::regclass",
             schema);
    snprintf(expected, sizeof expected, "%d", count);
    for (uint64_t started_ms = now_ms(); now_ms() - started_ms < WAIT_MS_MAX; sleep_ms(20)) {
        char *value = sql(statement);
        bool there = value && strcmp(value, expected) == 0;
        free(value);
        if (there)
            return;
    }
    fail_msg("%d sessions never waited for the lock", count);
}

/* A read never waits without bound: not for a free session of a busy pool, not for a query. */
static void test_cursor_waits_bounded_for_a_session_and_a_query(void **state)
{
    (void)state;
    const char *conninfo = conninfo_for("cursor_busy", false);
    pg_log *leader = open_log(conninfo, "http://a", 0);
    lead(leader, 1);
    chain written = {0};
    assert_int_equal(append_next(leader, &written, 2), PG_LOG_OK);

    /* All sessions busy (their queries wait behind a lock): the next read is told so. */
    pg_read_pool_options options = {.wait_ms = 50, .statement_timeout_ms = 60000};
    pg_read_pool *pool = NULL;
    assert_int_equal(pg_read_pool_open(conninfo, &options, &pool), COFFER_OK);
    blocked_read jobs[PG_READ_POOL_SESSIONS_MAX + 1];
    for (size_t i = 0; i <= PG_READ_POOL_SESSIONS_MAX; i++)
        assert_int_equal(pg_cursor_open(pool, &jobs[i].cursor), COFFER_OK);
    PGconn *holder = lock_table("cursor_busy.coffer_log");
    for (size_t i = 0; i < PG_READ_POOL_SESSIONS_MAX; i++)
        assert_int_equal(pthread_create(&jobs[i].thread, NULL, read_blocked, &jobs[i]), 0);
    wait_for_lock_waiters("cursor_busy", PG_READ_POOL_SESSIONS_MAX);
    visited seen = {0};
    char error[512] = "";
    assert_int_equal(pg_cursor_read(jobs[PG_READ_POOL_SESSIONS_MAX].cursor, 0, 2, SIZE_MAX,
                                    visit_record, &seen, error, sizeof error),
                     COFFER_OVERLOADED);
    assert_non_null(strstr(error, "feed sessions stayed busy"));
    PQclear(PQexec(holder, "COMMIT"));
    for (size_t i = 0; i < PG_READ_POOL_SESSIONS_MAX; i++) {
        pthread_join(jobs[i].thread, NULL);
        assert_int_equal(jobs[i].code, COFFER_OK);
    }
    for (size_t i = 0; i <= PG_READ_POOL_SESSIONS_MAX; i++)
        pg_cursor_close(jobs[i].cursor);
    pg_read_pool_close(pool);

    /* A query that waits past the statement timeout is cancelled: overloaded, try again. */
    options = (pg_read_pool_options){.wait_ms = 50, .statement_timeout_ms = 100};
    assert_int_equal(pg_read_pool_open(conninfo, &options, &pool), COFFER_OK);
    pg_cursor *cursor = NULL;
    assert_int_equal(pg_cursor_open(pool, &cursor), COFFER_OK);
    PQclear(PQexec(holder, "BEGIN; LOCK TABLE cursor_busy.coffer_log IN ACCESS EXCLUSIVE MODE"));
    seen = (visited){0};
    assert_int_equal(
        pg_cursor_read(cursor, 0, 2, SIZE_MAX, visit_record, &seen, error, sizeof error),
        COFFER_OVERLOADED);
    assert_non_null(strstr(error, "statement timeout"));
    PQclear(PQexec(holder, "COMMIT"));
    const uint64_t all[] = {2};
    assert_cursor_reads(cursor, 0, 2, SIZE_MAX, all, 1); /* the same session, on again */
    PQfinish(holder);
    pg_cursor_close(cursor);
    pg_read_pool_close(pool);
    pg_log_close(leader);
    chain_free(&written);
}

/* A COMMIT cut off while it waits for the standby is committed on the primary but maybe not
 * replicated: the append must not be acknowledged, and reading the log back tells. */
static void test_interrupted_commit_is_outcome_unknown(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("unknown", false), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    assert_int_equal(append_next(log, &written, 1), PG_LOG_OK);
    const enum interruption ways[] = {TERMINATE_BACKEND, KILL_BACKEND};
    for (uint64_t way = 0; way < 2; way++) {
        assert_int_equal(append_interrupted(log, &written, ways[way]), PG_LOG_OUTCOME_UNKNOWN);
        assert_false(pg_log_leading(log));
        /* The log tells: here the record was flushed on the primary before the wait, so it is
         * there (and the chain written by this test does not include it). */
        pg_log_point tail;
        read_tail_when_up(log, &tail);
        assert_int_equal(tail.position, 3 + 2 * way);
        assert_int_equal(tail.last_seq, 2 + way);
        lead(log, 2 + way);
        memcpy(written.hash, tail.hash, RECORD_HASH_BYTES);
        written.last_seq = tail.last_seq;
    }
    pg_log_close(log);
    chain_free(&written);
}

/* kill -9 of the primary, then the standby promoted: every acknowledged append is on the new
 * primary, and the same handle reaches it by itself through the multi-host conninfo. */
static void test_failover_keeps_every_acknowledged_append(void **state)
{
    (void)state;
    pg_log *log = open_log(conninfo_for("failover", true), "http://a", 0);
    lead(log, 1);
    chain written = {0};
    for (uint32_t index = 0; index < 20; index++)
        assert_int_equal(append_next(log, &written, 1 + index % 3), PG_LOG_OK);

    assert_int_equal(pg_cluster_run("kill", "primary"), 0);
    /* The session is gone and no primary answers yet: nothing is sent, nothing acknowledged. */
    assert_int_equal(append_next(log, &written, 1), PG_LOG_NOT_LEADER);
    assert_false(pg_log_leading(log));
    assert_int_equal(pg_cluster_run("promote", NULL), 0);

    pg_log_point tail;
    assert_int_equal(pg_log_read_tail(log, &tail), PG_LOG_OK);
    assert_int_equal(tail.position, 21);
    assert_int_equal(tail.last_seq, written.last_seq);
    assert_memory_equal(tail.hash, written.hash, RECORD_HASH_BYTES);
    collected rows = {0};
    pg_log_point from = {0};
    assert_int_equal(pg_log_read(log, &from, RECORDS_MAX, collect_row, &rows, NULL), PG_LOG_OK);
    assert_int_equal(rows.count, 21);
    for (size_t index = 0; index < 20; index++)
        assert_record_row(&rows, index + 1, &written, index, 1);

    lead(log, 2);
    assert_int_equal(append_next(log, &written, 1), PG_LOG_OK);
    char last_seq[24];
    snprintf(last_seq, sizeof(last_seq), "%" PRIu64, written.last_seq);
    sql_expect("SELECT max(last_seq) FROM failover.coffer_log", last_seq);
    pg_log_close(log);
    chain_free(&written);
}

/* ---------------------------------------------------------------------------------------- */

static bool start_cluster(void)
{
    if (!pg_cluster_start("test_pg_log", WATCHDOG_SECONDS))
        return false;
    if (!pg_cluster_env("CONNINFO", primary_conninfo, sizeof(primary_conninfo)) ||
        !pg_cluster_env("MULTI_CONNINFO", multi_conninfo, sizeof(multi_conninfo))) {
        fprintf(stderr, "test_pg_log: the cluster's cluster.env lacks a conninfo\n");
        pg_cluster_run("stop", NULL);
        return false;
    }
    return true;
}

int main(void)
{
    if (!start_cluster())
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_created_then_kept_and_newer_refused),
        cmocka_unit_test(test_append_then_read_back_every_byte),
        cmocka_unit_test(test_a_round_takes_up_to_its_most_records_at_once),
        cmocka_unit_test(test_a_round_past_64_mib_goes_in_two_statements),
        cmocka_unit_test(test_big_records_are_compressed_with_lz4_unless_told_otherwise),
        cmocka_unit_test(test_append_refuses_a_record_that_does_not_continue_the_tail),
        cmocka_unit_test(test_read_checks_the_chain_and_every_record),
        cmocka_unit_test(test_a_reader_that_loses_its_session_says_why),
        cmocka_unit_test(test_one_of_two_sessions_leads_and_terms_count_up),
        cmocka_unit_test(test_stale_leader_is_fenced_by_the_log),
        cmocka_unit_test(test_paused_leader_loses_its_session_and_acknowledges_nothing),
        cmocka_unit_test(test_find_tells_whether_a_record_is_in_the_log),
        cmocka_unit_test(test_follower_is_woken_by_an_append),
        cmocka_unit_test(test_cursor_reads_from_any_seq_and_never_past_durable),
        cmocka_unit_test(test_cursor_seeks_again_when_its_point_was_lost),
        cmocka_unit_test(test_cursor_needs_only_read_rights),
        cmocka_unit_test(test_cursor_waits_bounded_for_a_session_and_a_query),
        cmocka_unit_test(test_interrupted_commit_is_outcome_unknown),
        /* Last: it kills the primary. */
        cmocka_unit_test(test_failover_keeps_every_acknowledged_append),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    alarm(0);
    if (pg_cluster_run("stop", NULL) != 0)
        failed++;
    return failed;
}
