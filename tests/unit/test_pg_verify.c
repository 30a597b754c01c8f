/*
 * test_pg_verify.c — coffer_verify_log() and coffer_dump_log() on a log kept in PostgreSQL,
 * against a primary and synchronous standby from scripts/pg-cluster: a workload written by a
 * PostgreSQL-backed engine verifies (alone, and with the instance's snapshots) while the engine
 * still leads and writes, and dumps exactly what the same workload logs in a local data
 * directory; a record whose bytes were changed, and a middle row deleted, fail verify naming
 * their seqs, and dump stops there; an empty log verifies; a database without coffer's tables
 * is named as such and left without them. Without PostgreSQL's binaries the program says so and
 * exits 77 (skipped).
 */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "files.h"
#include "pg_cluster.h"
#include "unit/support.h"

enum {
    WATCHDOG_SECONDS = 110,
    ACCOUNTS = 6,
    TRANSFERS = 40,
};

static char conninfo_base[640];
static char standby_base[640];

/* Runs one statement on `base`'s server; its first value ("" for none), to be freed. */
static char *sql_on(const char *base, const char *statement)
{
    PGconn *conn = PQconnectdb(base);
    PGresult *result = PQexec(conn, statement);
    ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
        fail_msg("%s: %s", statement, PQerrorMessage(conn));
    char *value =
        strdup(status == PGRES_TUPLES_OK && PQntuples(result) > 0 ? PQgetvalue(result, 0, 0) : "");
    PQclear(result);
    PQfinish(conn);
    return value;
}

static char *sql(const char *statement)
{
    return sql_on(conninfo_base, statement);
}

/* Waits (bounded) until `statement` answers `expected` on `base`'s server. */
static void wait_for(const char *base, const char *statement, const char *expected)
{
    for (int waited_ms = 0;; waited_ms += 20) {
        char *value = sql_on(base, statement);
        bool done = strcmp(value, expected) == 0;
        free(value);
        if (done)
            return;
        if (waited_ms >= 20000)
            fail_msg("'%s' did not answer '%s'", statement, expected);
        usleep(20000);
    }
}

static uint64_t sql_number(const char *statement)
{
    char *value = sql(statement);
    uint64_t number = strtoull(value, NULL, 10);
    free(value);
    return number;
}

static void quiet_log(void *context, const char *line)
{
    (void)context;
    fprintf(stderr, "  engine: %s\n", line);
}

/* A schema of its own and its conninfo (a URI would do as well: the tests use key=value). */
static void schema_conninfo(const char *schema, char *out, size_t size)
{
    char statement[128];
    snprintf(statement, sizeof statement, "CREATE SCHEMA %s", schema);
    free(sql(statement));
    snprintf(out, size, "%s options='-csearch_path=%s'", conninfo_base, schema);
}

/* An engine on `log_location` (NULL: a local log) in a fresh directory written to `dir`. */
static coffer *engine_open(const char *log_location, char *dir, size_t dir_size)
{
    snprintf(dir, dir_size, "/tmp/coffer-pg-verify-XXXXXX");
    assert_non_null(mkdtemp(dir));
    coffer_options options;
    coffer_options_init(&options);
    options.log_location = log_location;
    options.log_name = log_location ? "http://127.0.0.1:1" : NULL;
    options.log = quiet_log;
    coffer *db = NULL;
    assert_int_equal(coffer_open(dir, &options, &db), COFFER_OK);
    return db;
}

/* The same events whatever the log: accounts, transfers (some refused), a hold posted, one
 * voided, an atomic batch that fails, metadata. One submit per step, so one record each. */
static void workload(coffer *db)
{
    char id[32], from[32], to[32];
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(id, sizeof id, "account-%d", i);
        coffer_result result =
            i == 0 ? create_issuer(db, id, "EUR") : create_account(db, id, "EUR");
        assert_int_equal(result.code, COFFER_CREATED);
    }
    unsigned seed = 11;
    for (int t = 0; t < TRANSFERS; t++) {
        int a = t < ACCOUNTS ? 0 : rand_r(&seed) % ACCOUNTS;
        int b = t < ACCOUNTS ? t % (ACCOUNTS - 1) + 1 : (a + 1 + rand_r(&seed) % 5) % ACCOUNTS;
        snprintf(from, sizeof from, "account-%d", a);
        snprintf(to, sizeof to, "account-%d", b);
        snprintf(id, sizeof id, "transfer-%d", t);
        transfer(db, id, from, to, t < ACCOUNTS ? 1000 : 1 + rand_r(&seed) % 700);
    }
    assert_int_equal(hold(db, "hold-1", "account-0", "account-1", 50, 600000).code, COFFER_CREATED);
    assert_int_equal(post_hold(db, "post-1", "hold-1", 30).code, COFFER_CREATED);
    assert_int_equal(hold(db, "hold-2", "account-0", "account-2", 70, 600000).code, COFFER_CREATED);
    assert_int_equal(void_hold(db, "void-2", "hold-2").code, COFFER_CREATED);
    coffer_event atomic[2] = {transfer_event("atomic-1", "account-0", "account-3", 5),
                              transfer_event("atomic-2", "account-1", "account-3", 1000000)};
    coffer_result results[2];
    memset(results, 0, sizeof results);
    assert_int_equal(coffer_submit(db, atomic, 2, true, results), COFFER_OK);
    assert_int_equal(
        submit_event(db, with_metadata(transfer_event("meta-1", "account-0", "account-4", 9),
                                       "{\"note\":\"x\"}"))
            .code,
        COFFER_CREATED);
}

/* A dump as text, without what differs between two runs of the same workload (timestamps,
 * expiries, and where each record is kept). */
typedef struct dumped {
    char text[65536];
    size_t used;
    int entries;
    uint64_t last_seq;
} dumped;

static int remember(const coffer_log_entry *entry, void *context)
{
    dumped *d = context;
    const coffer_event *e = entry->event;
    const coffer_result *r = entry->outcome;
    int written = snprintf(
        d->text + d->used, sizeof d->text - d->used,
        "%llu op=%d id=%s from=%s to=%s hold=%s amount=%lld meta=%.*s atomic=%llu/%llu by=%s "
        "code=%d state=%d amount=%lld from=%lld/%llu to=%lld/%llu\n",
        (unsigned long long)entry->seq, e->op, e->id ? e->id : "-", e->from ? e->from : "-",
        e->to ? e->to : "-", e->hold_id ? e->hold_id : "-", (long long)e->amount,
        (int)e->metadata_len, e->metadata ? e->metadata : "",
        (unsigned long long)entry->atomic_first_seq, (unsigned long long)entry->atomic_events,
        entry->submitted_by ? entry->submitted_by : "-", r ? r->code : -1, r ? r->state : -1,
        r ? (long long)r->amount : 0, r ? (long long)r->from.balance : 0,
        r ? (unsigned long long)r->from.version : 0, r ? (long long)r->to.balance : 0,
        r ? (unsigned long long)r->to.version : 0);
    assert_true(written > 0 && (size_t)written < sizeof d->text - d->used);
    d->used += (size_t)written;
    d->entries++;
    d->last_seq = entry->seq;
    return 0;
}

static void assert_verifies(const char *log_location, const char *dir, coffer_dir_report *report)
{
    int code = coffer_verify_log(log_location, dir, NULL, NULL, NULL, report);
    if (code != COFFER_OK || !report->ok)
        fail_msg("verify: code %d, chain '%s', snapshot '%s', invariants %d", code,
                 report->chain_error, report->snapshot_error, report->invariants.ok);
    assert_true(report->log_postgresql);
    assert_true(report->chain_ok);
    assert_int_equal(report->segments, 0);
}

static void test_verify_and_dump_match_a_local_log(void **unused)
{
    (void)unused;
    char conninfo[800], pg_dir[64], local_dir[64];
    schema_conninfo("same", conninfo, sizeof conninfo);
    coffer *pg = engine_open(conninfo, pg_dir, sizeof pg_dir);
    coffer *local = engine_open(NULL, local_dir, sizeof local_dir);
    workload(pg);
    workload(local);

    /* While the engine leads and may write: verify takes no lease and writes nothing. */
    uint64_t rows = sql_number("SELECT count(*) FROM same.coffer_log");
    coffer_dir_report report;
    assert_verifies(conninfo, NULL, &report);
    assert_int_equal(sql_number("SELECT count(*) FROM same.coffer_log"), rows);
    assert_int_equal(report.records, rows - 1); /* and one term row */
    assert_int_equal(report.term_rows, 1);
    assert_false(report.snapshot_found);
    assert_int_equal(report.invariants.accounts_checked, ACCOUNTS);
    assert_int_equal(transfer(pg, "after-verify", "account-0", "account-5", 3).code,
                     COFFER_CREATED);
    assert_int_equal(transfer(local, "after-verify", "account-0", "account-5", 3).code,
                     COFFER_CREATED);

    coffer_dir_report local_report;
    assert_int_equal(coffer_verify_dir(local_dir, NULL, NULL, NULL, &local_report), COFFER_OK);
    assert_true(local_report.ok);
    assert_verifies(conninfo, NULL, &report);
    assert_int_equal(report.last_seq, local_report.last_seq);
    assert_int_equal(report.records, local_report.records);
    assert_int_equal(report.invariants.transfers_checked,
                     local_report.invariants.transfers_checked);

    static dumped from_pg, from_local;
    char error[1024];
    assert_int_equal(coffer_dump_log(conninfo, remember, &from_pg, error, sizeof error), COFFER_OK);
    assert_int_equal(coffer_dump_dir(local_dir, remember, &from_local, error, sizeof error),
                     COFFER_OK);
    assert_true(from_pg.entries > TRANSFERS + ACCOUNTS);
    assert_int_equal(from_pg.entries, from_local.entries);
    assert_string_equal(from_pg.text, from_local.text);

    /* The instance's snapshots, checked against the log; the directory alone refuses. */
    coffer_close(pg);
    coffer_close(local);
    assert_verifies(conninfo, pg_dir, &report);
    assert_true(report.snapshot_found);
    assert_int_equal(report.snapshot_seq, report.last_seq);
    assert_true(report.snapshot_matches && report.recovery_matches);
    assert_int_equal(coffer_verify_dir(pg_dir, NULL, NULL, NULL, &report), COFFER_NOT_SUPPORTED);
    assert_non_null(strstr(report.chain_error, "--log"));
    assert_int_equal(coffer_dump_dir(pg_dir, remember, &from_pg, error, sizeof error),
                     COFFER_NOT_SUPPORTED);

    /* Another ledger's log does not hold the snapshot's record: a problem, named. */
    char other[800], other_dir[64];
    schema_conninfo("other", other, sizeof other);
    coffer *db = engine_open(other, other_dir, sizeof other_dir);
    assert_int_equal(create_account(db, "someone", "EUR").code, COFFER_CREATED);
    coffer_close(db);
    assert_int_equal(coffer_verify_log(other, pg_dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_false(report.ok);
    assert_true(report.chain_ok);
    assert_false(report.log_standby || report.snapshot_unchecked);
    assert_true(report.snapshot_seq > report.last_seq);
    /* It ends before the snapshot: on the primary, acknowledged records missing. */
    assert_non_null(strstr(report.snapshot_error, "before this snapshot"));
    assert_non_null(strstr(report.snapshot_error, "acknowledged records are missing"));

    /* Only a conninfo or URI is a PostgreSQL log. */
    assert_int_equal(coffer_verify_log(pg_dir, NULL, NULL, NULL, NULL, &report),
                     COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_dump_log(pg_dir, remember, &from_pg, error, sizeof error),
                     COFFER_INVALID_ARGUMENT);
    remove_tree(pg_dir);
    remove_tree(local_dir);
    remove_tree(other_dir);
}

/* The position and seqs of the n-th record row. */
static void record_row(const char *schema, int n, uint64_t *position, uint64_t *seq,
                       uint64_t *last_seq)
{
    char statement[256];
    snprintf(statement, sizeof statement,
             "SELECT position || ' ' || seq || ' ' || last_seq FROM %s.coffer_log WHERE kind = 1 "
             "ORDER BY position OFFSET %d LIMIT 1",
             schema, n);
    char *row = sql(statement);
    unsigned long long p = 0, s = 0, l = 0;
    assert_int_equal(sscanf(row, "%llu %llu %llu", &p, &s, &l), 3);
    free(row);
    *position = p, *seq = s, *last_seq = l;
}

static void flip_byte(const char *schema, uint64_t position)
{
    char statement[256];
    snprintf(statement, sizeof statement,
             "UPDATE %s.coffer_log SET record = set_byte(record, 80, get_byte(record, 80) # 1)"
             " WHERE position = %llu",
             schema, (unsigned long long)position);
    free(sql(statement));
}

static void assert_broken(const char *conninfo, const char *names, const char *also)
{
    coffer_dir_report report;
    assert_int_equal(coffer_verify_log(conninfo, NULL, NULL, NULL, NULL, &report), COFFER_OK);
    assert_false(report.ok);
    assert_false(report.chain_ok);
    if (!strstr(report.chain_error, names) || !strstr(report.chain_error, also))
        fail_msg("'%s' does not name '%s' and '%s'", report.chain_error, names, also);
}

static void test_a_damaged_or_missing_row_fails_naming_its_seq(void **unused)
{
    (void)unused;
    char conninfo[800], dir[64];
    schema_conninfo("damage", conninfo, sizeof conninfo);
    coffer *db = engine_open(conninfo, dir, sizeof dir);
    workload(db);
    coffer_close(db);
    coffer_dir_report report;
    assert_verifies(conninfo, NULL, &report);
    uint64_t records = report.records;

    uint64_t position, seq, last_seq, before_position, before_seq, before_last;
    record_row("damage", 9, &position, &seq, &last_seq);
    record_row("damage", 8, &before_position, &before_seq, &before_last);
    char names[64], also[64];
    snprintf(names, sizeof names, "position %llu", (unsigned long long)position);
    snprintf(also, sizeof also, "seq %llu..%llu", (unsigned long long)seq,
             (unsigned long long)last_seq);

    /* One bit of one record's bytes. */
    flip_byte("damage", position);
    assert_broken(conninfo, names, also);
    assert_broken(conninfo, "does not match its hash", also);
    assert_int_equal(coffer_verify_log(conninfo, NULL, NULL, NULL, NULL, &report), COFFER_OK);
    assert_int_equal(report.records, 9); /* those before it */
    assert_int_equal(report.last_seq, before_last);
    static dumped partial;
    char error[1024] = "";
    assert_int_equal(coffer_dump_log(conninfo, remember, &partial, error, sizeof error),
                     COFFER_STORAGE_FAILED);
    assert_non_null(strstr(error, also));
    assert_int_equal(partial.last_seq, before_last); /* everything before it was printed */

    /* Put back, it verifies again: the check looks at that byte. */
    flip_byte("damage", position);
    assert_verifies(conninfo, NULL, &report);
    assert_int_equal(report.records, records);

    /* A middle row deleted: the gap is named with the seq it follows. */
    char statement[128];
    snprintf(statement, sizeof statement, "DELETE FROM damage.coffer_log WHERE position = %llu",
             (unsigned long long)position);
    free(sql(statement));
    snprintf(names, sizeof names, "no row at position %llu", (unsigned long long)position);
    snprintf(also, sizeof also, "after seq %llu", (unsigned long long)before_last);
    assert_broken(conninfo, names, also);
    remove_tree(dir);
}

static void test_an_empty_log_verifies_and_a_database_without_one_is_named(void **unused)
{
    (void)unused;
    char conninfo[800], dir[64];
    schema_conninfo("empty", conninfo, sizeof conninfo);
    coffer_close(engine_open(conninfo, dir, sizeof dir)); /* a term row, no record */
    coffer_dir_report report;
    assert_verifies(conninfo, NULL, &report);
    assert_int_equal(report.records, 0);
    assert_int_equal(report.term_rows, 1);
    assert_int_equal(report.last_seq, 0);
    assert_int_equal(report.invariants.accounts_checked, 0);
    static dumped none;
    char error[1024];
    assert_int_equal(coffer_dump_log(conninfo, remember, &none, error, sizeof error), COFFER_OK);
    assert_int_equal(none.entries, 0);
    remove_tree(dir);

    /* A schema that holds no coffer log: refused by name, and still empty after. */
    char bare[800];
    schema_conninfo("bare", bare, sizeof bare);
    assert_int_equal(coffer_verify_log(bare, NULL, NULL, NULL, NULL, &report),
                     COFFER_STORAGE_FAILED);
    assert_non_null(strstr(report.chain_error, "holds no coffer log"));
    assert_int_equal(coffer_dump_log(bare, remember, &none, error, sizeof error),
                     COFFER_STORAGE_FAILED);
    assert_non_null(strstr(error, "holds no coffer log"));
    assert_int_equal(sql_number("SELECT count(*) FROM pg_tables WHERE schemaname = 'bare'"), 0);
    /* Nothing listens there: a clear failure, not a hang (connect_timeout=2 in the base). */
    assert_int_equal(coffer_verify_log("host=127.0.0.1 port=1 dbname=coffer connect_timeout=2",
                                       NULL, NULL, NULL, NULL, &report),
                     COFFER_STORAGE_FAILED);
    assert_non_null(strstr(report.chain_error, "cannot connect"));
}

/* A hot standby whose replay is paused is behind the instance's snapshot: a warning naming the
 * standby, not a problem; the primary checks the same snapshot. */
static void test_a_standby_behind_the_snapshot_is_a_warning(void **unused)
{
    (void)unused;
    char conninfo[800], standby[800], dir[64];
    schema_conninfo("lagging", conninfo, sizeof conninfo);
    snprintf(standby, sizeof standby, "%s options='-csearch_path=lagging'", standby_base);
    coffer *db = engine_open(conninfo, dir, sizeof dir);
    assert_int_equal(create_issuer(db, "issuer", "EUR").code, COFFER_CREATED);
    assert_int_equal(create_account(db, "someone", "EUR").code, COFFER_CREATED);
    char *rows = sql("SELECT count(*) FROM lagging.coffer_log");
    wait_for(standby_base, "SELECT count(*) FROM lagging.coffer_log", rows);
    free(rows);
    free(sql_on(standby_base, "SELECT pg_wal_replay_pause()"));
    wait_for(standby_base, "SELECT pg_get_wal_replay_pause_state()", "paused");
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "lag-%d", i);
        assert_int_equal(transfer(db, id, "issuer", "someone", 10).code, COFFER_CREATED);
    }
    coffer_close(db); /* a snapshot at the last seq, which the standby has not replayed */

    coffer_dir_report report;
    int code = coffer_verify_log(standby, dir, NULL, NULL, NULL, &report);
    free(sql_on(standby_base, "SELECT pg_wal_replay_resume()"));
    assert_int_equal(code, COFFER_OK);
    if (!report.ok || !report.log_standby || !report.snapshot_unchecked)
        fail_msg("standby: ok %d, standby %d, unchecked %d: '%s'", report.ok, report.log_standby,
                 report.snapshot_unchecked, report.snapshot_error);
    assert_true(report.snapshot_found);
    assert_true(report.snapshot_seq > report.last_seq);
    assert_non_null(strstr(report.snapshot_error, "hot standby"));
    assert_non_null(strstr(report.snapshot_error, "run it against the primary"));

    assert_verifies(conninfo, dir, &report);
    assert_false(report.log_standby || report.snapshot_unchecked);
    assert_int_equal(report.snapshot_seq, report.last_seq);
    remove_tree(dir);
}

/* A snapshot of format 2 (tests/data/v2: no submitters) cannot be checked against a PostgreSQL
 * log: a warning, and the verdict says OK as the wording does. */
static void test_an_older_snapshot_format_is_a_warning(void **unused)
{
    (void)unused;
    char conninfo[800], dir[64], snapshot[] = "snapshot-00000000000000000010.cfs";
    schema_conninfo("older", conninfo, sizeof conninfo);
    coffer *db = engine_open(conninfo, dir, sizeof dir);
    assert_int_equal(create_account(db, "someone", "EUR").code, COFFER_CREATED);
    coffer_close(db);
    assert_true(remove_snapshots(dir) >= 0);
    char here[4096], command[8192];
    snprintf(here, sizeof here, "%s", __FILE__);
    *strrchr(here, '/') = 0;
    snprintf(command, sizeof command, "cp '%s/../data/v2/%s' '%s/'", here, snapshot, dir);
    assert_int_equal(system(command), 0);

    coffer_dir_report report;
    assert_int_equal(coffer_verify_log(conninfo, dir, NULL, NULL, NULL, &report), COFFER_OK);
    if (!report.ok || !report.snapshot_found || !report.snapshot_unchecked)
        fail_msg("ok %d, found %d, unchecked %d: '%s'", report.ok, report.snapshot_found,
                 report.snapshot_unchecked, report.snapshot_error);
    assert_int_equal(report.snapshot_seq, 10);
    assert_non_null(strstr(report.snapshot_error, "format older than 3"));
    assert_non_null(strstr(report.snapshot_error, "warning"));
    remove_tree(dir);
}

static bool start_cluster(void)
{
    return pg_cluster_start("test_pg_verify", WATCHDOG_SECONDS) &&
           pg_cluster_env("CONNINFO", conninfo_base, sizeof conninfo_base) &&
           pg_cluster_env("STANDBY_CONNINFO", standby_base, sizeof standby_base);
}

int main(void)
{
    if (!start_cluster()) {
        fprintf(stderr, "test_pg_verify: the cluster did not start\n");
        pg_cluster_run("stop", NULL);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_and_dump_match_a_local_log),
        cmocka_unit_test(test_a_damaged_or_missing_row_fails_naming_its_seq),
        cmocka_unit_test(test_an_empty_log_verifies_and_a_database_without_one_is_named),
        cmocka_unit_test(test_a_standby_behind_the_snapshot_is_a_warning),
        cmocka_unit_test(test_an_older_snapshot_format_is_a_warning),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    alarm(0);
    if (pg_cluster_run("stop", NULL) != 0)
        failed++;
    return failed;
}
