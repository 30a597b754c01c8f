/*
 * test_pg_engine.c — the engine leading a log kept in PostgreSQL (coffer_options.log_location)
 * against a primary and synchronous standby from scripts/pg-cluster: a random workload survives
 * a reopen from the snapshot and from the log alone; a killed session fails writes with
 * storage_failed and loses nothing acknowledged; a second engine cannot lead the same log.
 * Without PostgreSQL's binaries the program says so and exits 77 (ctest: skipped).
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "files.h"
#include "pg_cluster.h"
#include "unit/support.h"

enum {
    SKIPPED_EXIT_CODE = 77,
    WATCHDOG_SECONDS = 110,
    ACCOUNTS = 12,
    TRANSFERS = 300,
};

static char conninfo_base[640];

/* Runs one statement on the primary; returns whether it succeeded. */
static bool sql(const char *statement)
{
    PGconn *conn = PQconnectdb(conninfo_base);
    PGresult *result = PQexec(conn, statement);
    ExecStatusType status = PQresultStatus(result);
    bool ok = status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "%s: %s", statement, PQerrorMessage(conn));
    PQclear(result);
    PQfinish(conn);
    return ok;
}

/* A fresh schema per test, and a data directory. */
typedef struct pg_engine {
    char conninfo[700];
    char dir[64];
    coffer *db;
} pg_engine;

static void quiet_log(void *context, const char *line)
{
    (void)context;
    fprintf(stderr, "  engine: %s\n", line);
}

static int engine_try_open(pg_engine *e, const char *dir, coffer **db)
{
    coffer_options options;
    coffer_options_init(&options);
    options.log_location = e->conninfo;
    options.log_name = "http://127.0.0.1:1";
    options.log = quiet_log;
    return coffer_open(dir, &options, db);
}

static void engine_setup(pg_engine *e, const char *schema)
{
    char statement[128];
    snprintf(statement, sizeof statement, "CREATE SCHEMA %s", schema);
    assert_true(sql(statement));
    snprintf(e->conninfo, sizeof e->conninfo, "%s options='-csearch_path=%s'", conninfo_base,
             schema);
    snprintf(e->dir, sizeof e->dir, "/tmp/coffer-pg-engine-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    assert_int_equal(engine_try_open(e, e->dir, &e->db), COFFER_OK);
}

static void engine_reopen(pg_engine *e)
{
    coffer_close(e->db);
    e->db = NULL;
    assert_int_equal(engine_try_open(e, e->dir, &e->db), COFFER_OK);
}

/* What the workload left: each account's balance and version, each transfer's outcome. */
typedef struct ledger_state {
    coffer_account accounts[ACCOUNTS];
    int outcomes[TRANSFERS];
    uint64_t seqs[TRANSFERS];
    int64_t amounts[TRANSFERS];
    char from[TRANSFERS][32], to[TRANSFERS][32];
} ledger_state;

static void account_name(char *out, size_t size, int index)
{
    snprintf(out, size, "account-%d", index);
}

/* Accounts (the first an issuer), then random transfers, some of which are refused. */
static void workload(coffer *db, ledger_state *state, unsigned seed)
{
    char id[32], from[32], to[32];
    for (int i = 0; i < ACCOUNTS; i++) {
        account_name(id, sizeof id, i);
        coffer_result result =
            i == 0 ? create_issuer(db, id, "EUR") : create_account(db, id, "EUR");
        assert_int_equal(result.code, COFFER_CREATED);
    }
    for (int t = 0; t < TRANSFERS; t++) {
        int a = rand_r(&seed) % ACCOUNTS, b = (a + 1 + rand_r(&seed) % (ACCOUNTS - 1)) % ACCOUNTS;
        account_name(from, sizeof from, t < ACCOUNTS ? 0 : a);
        account_name(to, sizeof to, t < ACCOUNTS ? t % (ACCOUNTS - 1) + 1 : b);
        snprintf(id, sizeof id, "transfer-%d", t);
        state->amounts[t] = 1 + rand_r(&seed) % 500;
        snprintf(state->from[t], sizeof state->from[t], "%s", from);
        snprintf(state->to[t], sizeof state->to[t], "%s", to);
        coffer_result result = transfer(db, id, from, to, state->amounts[t]);
        state->outcomes[t] = result.code;
        state->seqs[t] = result.seq;
    }
}

/* Reads back every account and outcome (a retry answers the original outcome). */
static void read_state(coffer *db, ledger_state *state, const ledger_state *outcomes)
{
    char id[32];
    for (int i = 0; i < ACCOUNTS; i++) {
        account_name(id, sizeof id, i);
        assert_int_equal(coffer_account_get(db, id, COFFER_AT_NOW, 0, &state->accounts[i]),
                         COFFER_OK);
    }
    for (int t = 0; t < TRANSFERS && outcomes; t++) {
        snprintf(id, sizeof id, "transfer-%d", t);
        coffer_transfer found;
        if (outcomes->outcomes[t] == COFFER_CREATED)
            assert_int_equal(coffer_transfer_get(db, id, &found), COFFER_OK);
    }
}

static void assert_same_accounts(const ledger_state *a, const ledger_state *b)
{
    int64_t sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        assert_int_equal(a->accounts[i].balance, b->accounts[i].balance);
        assert_int_equal(a->accounts[i].version, b->accounts[i].version);
        sum += a->accounts[i].balance;
    }
    assert_int_equal(sum, 0);
}

static void test_workload_survives_reopen_from_snapshot_and_from_log(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "reopen");
    static ledger_state before, after;
    workload(e.db, &before, 7);
    int refused = 0;
    for (int t = 0; t < TRANSFERS; t++)
        refused += before.outcomes[t] == COFFER_INSUFFICIENT_BALANCE;
    assert_true(refused > 0); /* the workload exercises refusals too */
    read_state(e.db, &before, &before);
    engine_reopen(&e); /* the close wrote a snapshot */
    read_state(e.db, &after, &before);
    assert_same_accounts(&before, &after);
    coffer_close(e.db);
    assert_true(remove_snapshots(e.dir) > 0);
    assert_int_equal(engine_try_open(&e, e.dir, &e.db), COFFER_OK); /* the log alone */
    memset(&after, 0, sizeof after);
    read_state(e.db, &after, &before);
    assert_same_accounts(&before, &after);
    /* Writes go on after both reopens, and a retry answers the original outcome. */
    coffer_result again =
        transfer(e.db, "transfer-20", before.from[20], before.to[20], before.amounts[20]);
    assert_int_equal(again.code,
                     before.outcomes[20] == COFFER_CREATED ? COFFER_EXISTS : before.outcomes[20]);
    assert_int_equal(transfer(e.db, "after-reopen", "account-0", "account-1", 5).code,
                     COFFER_CREATED);
    coffer_close(e.db);
}

static void test_second_engine_cannot_lead_and_tools_refuse(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "second");
    char other[80];
    snprintf(other, sizeof other, "%s-other", e.dir);
    coffer *second = NULL;
    assert_int_equal(engine_try_open(&e, other, &second), COFFER_STORAGE_FAILED);
    assert_null(second);
    coffer_feed *feed = NULL;
    assert_int_equal(coffer_feed_open(e.db, &feed), COFFER_NOT_SUPPORTED);
    sleep(3); /* idle past the 2 s lease: the heartbeat keeps it */
    assert_int_equal(create_account(e.db, "after-idle", "EUR").code, COFFER_CREATED);
    coffer_close(e.db);
    char error[256] = "";
    assert_int_equal(coffer_dump_dir(e.dir, NULL, NULL, error, sizeof error) == COFFER_OK, false);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(e.dir, NULL, NULL, NULL, &report), COFFER_NOT_SUPPORTED);
    assert_non_null(strstr(report.chain_error, "PostgreSQL"));
    /* Once the first closed, the second leads, and finds what the first wrote. */
    assert_int_equal(engine_try_open(&e, other, &second), COFFER_OK);
    coffer_close(second);
}

/* One transfer; the submit's own code when it refused the whole call, else the result's. */
static int transfer_code(coffer *db, const char *id, const char *from, const char *to)
{
    coffer_event event = transfer_event(id, from, to, 10);
    coffer_result result;
    memset(&result, 0, sizeof result);
    int code = coffer_submit(db, &event, 1, false, &result);
    return code != COFFER_OK ? code : result.code;
}

static void test_killed_session_fails_writes_and_loses_nothing_acknowledged(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "killed");
    create_issuer(e.db, "issuer", "EUR");
    create_account(e.db, "shop", "EUR");
    char id[32];
    for (int t = 0; t < 20; t++) {
        snprintf(id, sizeof id, "before-%d", t);
        fund(e.db, id, "issuer", "shop", 10);
    }
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'coffer'"));
    usleep(100 * 1000);
    assert_int_equal(transfer_code(e.db, "after-kill", "issuer", "shop"), COFFER_STORAGE_FAILED);
    assert_int_equal(coffer_health(e.db), COFFER_STORAGE_FAILED);
    assert_int_equal(transfer_code(e.db, "after-kill-2", "issuer", "shop"), COFFER_STORAGE_FAILED);
    engine_reopen(&e);
    coffer_account shop;
    assert_int_equal(coffer_account_get(e.db, "shop", COFFER_AT_NOW, 0, &shop), COFFER_OK);
    assert_int_equal(shop.balance, 200); /* every acknowledged write, nothing refused */
    coffer_transfer found;
    assert_int_equal(coffer_transfer_get(e.db, "after-kill", &found), COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(transfer(e.db, "after-reopen", "issuer", "shop", 10).code, COFFER_CREATED);
    coffer_close(e.db);
}

static bool start_cluster(void)
{
    const char *pg_bin = getenv("PG_BIN") ? getenv("PG_BIN") : "/usr/lib/postgresql/15/bin";
    char initdb[300];
    snprintf(initdb, sizeof initdb, "%s/initdb", pg_bin);
    if (access(initdb, X_OK) != 0) {
        printf("test_pg_engine: SKIPPED: PostgreSQL 15 is not installed (%s not found)\n", initdb);
        exit(SKIPPED_EXIT_CODE);
    }
    pg_cluster_script = getenv("COFFER_PG_CLUSTER");
    snprintf(pg_cluster_dir, sizeof pg_cluster_dir, "/tmp/coffer-pg-XXXXXX");
    if (!pg_cluster_script || !mkdtemp(pg_cluster_dir))
        return false;
    pg_cluster_test = "test_pg_engine";
    signal(SIGALRM, pg_cluster_watchdog);
    alarm(WATCHDOG_SECONDS);
    if (pg_cluster_run("start", NULL) != 0)
        return false;
    char path[128], line[600];
    snprintf(path, sizeof path, "%s/cluster.env", pg_cluster_dir);
    FILE *file = fopen(path, "r");
    while (file && fgets(line, sizeof line, file))
        if (strncmp(line, "CONNINFO='", 10) == 0 && strrchr(line, '\''))
            *strrchr(line, '\'') = 0,
                           snprintf(conninfo_base, sizeof conninfo_base, "%s", line + 10);
    if (file)
        fclose(file);
    return conninfo_base[0] != 0;
}

int main(void)
{
    if (!start_cluster()) {
        fprintf(stderr, "test_pg_engine: the cluster did not start\n");
        pg_cluster_run("stop", NULL);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload_survives_reopen_from_snapshot_and_from_log),
        cmocka_unit_test(test_second_engine_cannot_lead_and_tools_refuse),
        cmocka_unit_test(test_killed_session_fails_writes_and_loses_nothing_acknowledged),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    alarm(0);
    if (pg_cluster_run("stop", NULL) != 0)
        failed++;
    return failed;
}
