/*
 * test_pg_engine.c — engines sharing a log kept in PostgreSQL (coffer_options.log_location)
 * against a primary and synchronous standby from scripts/pg-cluster: a random workload survives
 * a reopen from the snapshot and from the log alone; a second engine follows the leader, applies
 * its writes and refuses its own; when the leader closes the follower takes over with every
 * acknowledged write; a restarted follower catches up from its snapshot; a follower whose
 * records the log lost rebuilds, from the newest of its snapshots the log still holds; a feed
 * reader stopped inside a lost record reads the record that took its position; holds expire
 * only by the leader's log; a killed session fails the write in flight, and its engine steps down
 * and leads again having lost nothing acknowledged. Without PostgreSQL's binaries the program says
 * so and exits 77 (skipped).
 */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "files.h"
#include "pg_cluster.h"
#include "unit/pg_support.h"

enum {
    WATCHDOG_SECONDS = 170,
    LEASE_MS = 2000,           /* the log's default lease */
    TAKEOVER_BOUND_MS = 5000,  /* the lease, then 3 s */
    CATCH_UP_BOUND_MS = 10000, /* a follower applies what the leader wrote within this */
    ACCOUNTS = 12,
    TRANSFERS = 300,
};

static char conninfo_base[640];

static bool sql(const char *statement)
{
    return pg_sql(conninfo_base, statement);
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

/* An engine's log lines, kept for the test to look through (the engine logs from its threads). */
typedef struct kept_log {
    pthread_mutex_t mutex;
    char text[32768];
} kept_log;

static void keep_log(void *context, const char *line)
{
    kept_log *log = context;
    quiet_log(NULL, line);
    pthread_mutex_lock(&log->mutex);
    size_t used = strlen(log->text);
    snprintf(log->text + used, sizeof log->text - used, "%s\n", line);
    pthread_mutex_unlock(&log->mutex);
}

static bool log_has(kept_log *log, const char *text)
{
    pthread_mutex_lock(&log->mutex);
    bool has = strstr(log->text, text) != NULL;
    pthread_mutex_unlock(&log->mutex);
    return has;
}

static void log_clear(kept_log *log)
{
    pthread_mutex_lock(&log->mutex);
    log->text[0] = 0;
    pthread_mutex_unlock(&log->mutex);
}

/* Opens an engine on the test's log; its lines go to `log` when there is one. */
static int engine_open_logged(pg_engine *e, const char *dir, const char *name, kept_log *log,
                              coffer **db)
{
    coffer_options options;
    coffer_options_init(&options);
    options.log_location = e->conninfo;
    options.log_name = name;
    options.log = log ? keep_log : quiet_log;
    options.log_context = log;
    return coffer_open(dir, &options, db);
}

static int engine_open_named(pg_engine *e, const char *dir, const char *name, coffer **db)
{
    return engine_open_logged(e, dir, name, NULL, db);
}

static int engine_try_open(pg_engine *e, const char *dir, coffer **db)
{
    return engine_open_named(e, dir, "http://127.0.0.1:1", db);
}

/* Opens a second engine on the test's log (it follows while the first leads), named
 * http://127.0.0.1:2, in the first one's directory + "-follower" (written to follower_dir). */
static coffer *follower_open(pg_engine *e, char *follower_dir, size_t size, kept_log *log)
{
    snprintf(follower_dir, size, "%s-follower", e->dir);
    coffer *follower = NULL;
    assert_int_equal(engine_open_logged(e, follower_dir, "http://127.0.0.1:2", log, &follower),
                     COFFER_OK);
    return follower;
}

/* The running test's data directory, for engine_teardown. */
static char test_dir[64];

static void engine_setup(pg_engine *e, const char *schema)
{
    char statement[128];
    snprintf(statement, sizeof statement, "CREATE SCHEMA %s", schema);
    assert_true(sql(statement));
    snprintf(e->conninfo, sizeof e->conninfo, "%s options='-csearch_path=%s'", conninfo_base,
             schema);
    snprintf(e->dir, sizeof e->dir, "/tmp/coffer-pg-engine-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(test_dir, sizeof test_dir, "%s", e->dir);
    assert_int_equal(engine_try_open(e, e->dir, &e->db), COFFER_OK);
}

/* Removes the test's data directory and its second engine's, whether it passed or failed. */
static int engine_teardown(void **unused)
{
    (void)unused;
    static const char *const suffixes[] = {"", "-follower", "-other"};
    char path[80];
    for (size_t i = 0; test_dir[0] && i < sizeof suffixes / sizeof suffixes[0]; i++) {
        snprintf(path, sizeof path, "%s%s", test_dir, suffixes[i]);
        remove_tree(path);
    }
    test_dir[0] = 0;
    return 0;
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

/* Waits, bounded, until the follower has applied what `leader` has. */
static void wait_applied(coffer *follower, coffer *leader)
{
    uint64_t target = cluster_of(leader).applied_seq, start = now_ms();
    assert_true(target > 0);
    while (cluster_of(follower).applied_seq < target) {
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the follower applied %llu of %llu",
                     (unsigned long long)cluster_of(follower).applied_seq,
                     (unsigned long long)target);
        usleep(10 * 1000);
    }
    assert_int_equal(cluster_of(follower).applied_seq, target);
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

/* A write to a follower: the call and every event say not_leader, and nothing is applied. */
static void assert_follower_refuses(coffer *follower, coffer *leader)
{
    coffer_event events[2] = {transfer_event("to-follower-1", "account-0", "account-1", 5),
                              account_event("to-follower-account", "EUR")};
    coffer_result results[2];
    memset(results, 0xff, sizeof results);
    uint64_t before = cluster_of(follower).applied_seq;
    assert_int_equal(coffer_submit(follower, events, 2, false, results), COFFER_NOT_LEADER);
    assert_int_equal(results[0].code, COFFER_NOT_LEADER);
    assert_int_equal(results[1].code, COFFER_NOT_LEADER);
    assert_int_equal(results[0].seq, 0);
    assert_int_equal(coffer_submit(follower, events, 2, true, results), COFFER_NOT_LEADER);
    assert_int_equal(cluster_of(follower).applied_seq, before);
    coffer_transfer found;
    assert_int_equal(coffer_transfer_get(follower, "to-follower-1", &found),
                     COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(coffer_transfer_get(leader, "to-follower-1", &found),
                     COFFER_TRANSFER_NOT_FOUND);
}

/* The follower's state is the leader's: accounts, every transfer and each account's history. */
static void assert_same_ledger(coffer *a, coffer *b, const ledger_state *outcomes)
{
    static ledger_state state_a, state_b;
    memset(&state_a, 0, sizeof state_a);
    memset(&state_b, 0, sizeof state_b);
    read_state(a, &state_a, outcomes);
    read_state(b, &state_b, outcomes);
    assert_same_accounts(&state_a, &state_b);
    char id[32];
    for (int t = 0; t < TRANSFERS; t++) {
        snprintf(id, sizeof id, "transfer-%d", t);
        coffer_transfer from_a, from_b;
        int code = coffer_transfer_get(a, id, &from_a);
        assert_int_equal(coffer_transfer_get(b, id, &from_b), code);
        if (code == COFFER_OK) {
            assert_int_equal(from_a.amount, from_b.amount);
            assert_int_equal(from_a.seq, from_b.seq);
            assert_int_equal(from_a.seq, outcomes->seqs[t]);
        }
    }
    static coffer_history_entry history_a[TRANSFERS + 1], history_b[TRANSFERS + 1];
    for (int i = 0; i < ACCOUNTS; i++) {
        account_name(id, sizeof id, i);
        size_t count_a = 0, count_b = 0;
        assert_int_equal(coffer_history(a, id, 0, TRANSFERS + 1, history_a, &count_a), COFFER_OK);
        assert_int_equal(coffer_history(b, id, 0, TRANSFERS + 1, history_b, &count_b), COFFER_OK);
        assert_int_equal(count_a, count_b);
        assert_true(count_a > 0);
        for (size_t k = 0; k < count_a; k++) {
            assert_int_equal(history_a[k].seq, history_b[k].seq);
            assert_int_equal(history_a[k].balance, history_b[k].balance);
            assert_string_equal(history_a[k].transfer_id, history_b[k].transfer_id);
        }
    }
}

static bool member_listed(const coffer_cluster_status *status, const char *name, int role)
{
    for (size_t i = 0; i < status->members_count; i++)
        if (strcmp(status->members[i].advertise, name) == 0 && status->members[i].role == role)
            return true;
    return false;
}

/* Waits, bounded, until `db` lists both members in their roles. */
static void wait_members(coffer *db, const char *leader, const char *follower)
{
    uint64_t start = now_ms();
    for (;;) {
        coffer_cluster_status status = cluster_of(db);
        if (member_listed(&status, leader, COFFER_ROLE_LEADER) &&
            member_listed(&status, follower, COFFER_ROLE_FOLLOWER))
            return;
        if (now_ms() - start > 4000)
            fail_msg("members not listed after 4 s (%zu listed)", status.members_count);
        usleep(50 * 1000);
    }
}

static void test_second_engine_follows_and_tools_refuse(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "second");
    assert_int_equal(create_issuer(e.db, "account-0", "EUR").code, COFFER_CREATED);
    assert_int_equal(create_account(e.db, "account-1", "EUR").code, COFFER_CREATED);
    char other[80];
    snprintf(other, sizeof other, "%s-other", e.dir);
    coffer *second = NULL;
    assert_int_equal(engine_open_named(&e, other, "http://127.0.0.1:2", &second), COFFER_OK);
    coffer_cluster_status status = cluster_of(second);
    assert_int_equal(status.role, COFFER_ROLE_FOLLOWER);
    assert_string_equal(status.leader, "http://127.0.0.1:1");
    assert_int_equal(status.term, cluster_of(e.db).term);
    assert_int_equal(status.applied_seq, cluster_of(e.db).applied_seq); /* caught up at open */
    assert_follower_refuses(second, e.db);
    /* The change feed reads the log in PostgreSQL on the leader and on the follower alike. */
    coffer *both[2] = {e.db, second};
    for (int i = 0; i < 2; i++) {
        coffer_feed *feed = NULL;
        assert_int_equal(coffer_feed_open(both[i], &feed), COFFER_OK);
        coffer_change changes[4];
        size_t count = 0;
        uint64_t next_after = 0;
        assert_int_equal(coffer_feed_read(feed, 0, NULL, changes, 4, &count, &next_after),
                         COFFER_OK);
        assert_int_equal(count, 2);
        assert_int_equal(changes[0].type, COFFER_CHANGE_ACCOUNT_CREATED);
        assert_string_equal(changes[0].event.id, "account-0");
        assert_string_equal(changes[1].event.id, "account-1");
        assert_int_equal(next_after, coffer_durable_seq(both[i]));
        coffer_feed_close(feed);
    }
    sleep(3); /* idle past the 2 s lease: the heartbeat keeps it */
    assert_int_equal(cluster_of(second).role, COFFER_ROLE_FOLLOWER);
    assert_int_equal(create_account(e.db, "after-idle", "EUR").code, COFFER_CREATED);
    coffer_close(e.db);
    char error[256] = "";
    assert_int_equal(coffer_dump_dir(e.dir, NULL, NULL, error, sizeof error) == COFFER_OK, false);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(e.dir, NULL, NULL, NULL, &report), COFFER_NOT_SUPPORTED);
    assert_non_null(strstr(report.chain_error, "PostgreSQL"));
    /* Once the first closed, the second leads, with what the first wrote. */
    wait_role(second, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    assert_string_equal(cluster_of(second).leader, "http://127.0.0.1:2");
    assert_int_equal(submit_event(second, account_event("after-idle", "EUR")).code, COFFER_EXISTS);
    coffer_close(second);
}

/* Ends the session holding the lease, as a partition or a paused leader would have it ended. */
static void terminate_lease_session(void)
{
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = 1128680519 AND granted"));
}

static void test_follower_applies_then_takes_over_and_restarts(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "follow");
    char follower_dir[80];
    coffer *follower = follower_open(&e, follower_dir, sizeof follower_dir, NULL);
    static ledger_state written;
    workload(e.db, &written, 11);
    wait_applied(follower, e.db);
    assert_same_ledger(e.db, follower, &written);
    assert_follower_refuses(follower, e.db);
    coffer_cluster_status status = cluster_of(follower);
    assert_int_equal(status.role, COFFER_ROLE_FOLLOWER);
    assert_true(status.ready);
    assert_true(cluster_of(e.db).ready);
    /* Caught up, the follower stands on the leader's record: the same seq and chain hash. */
    coffer_cluster_status of_leader = cluster_of(e.db);
    assert_true(status.has_applied_hash && of_leader.has_applied_hash);
    assert_int_equal(status.applied_seq, of_leader.applied_seq);
    assert_memory_equal(status.applied_hash, of_leader.applied_hash, sizeof status.applied_hash);
    static const uint8_t zero[sizeof status.applied_hash];
    assert_memory_not_equal(status.applied_hash, zero, sizeof zero);
    wait_members(follower, "http://127.0.0.1:1", "http://127.0.0.1:2");

    /* The leader goes: the follower leads within the lease and 3 s, with every write. */
    read_state(e.db, &written, &written); /* the balances the leader acknowledged */
    coffer_close(e.db);
    uint64_t took_ms = wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    printf("takeover after a clean close: %llu ms\n", (unsigned long long)took_ms);
    static ledger_state after;
    memset(&after, 0, sizeof after);
    read_state(follower, &after, &written);
    assert_same_accounts(&after, &written);
    coffer_result again =
        transfer(follower, "transfer-20", written.from[20], written.to[20], written.amounts[20]);
    assert_int_equal(again.code,
                     written.outcomes[20] == COFFER_CREATED ? COFFER_EXISTS : written.outcomes[20]);
    if (written.outcomes[20] == COFFER_CREATED)
        assert_int_equal(again.seq, written.seqs[20]);
    assert_int_equal(transfer(follower, "after-takeover", "account-0", "account-1", 5).code,
                     COFFER_CREATED);

    /* The old leader restarts from its snapshot and follows; it catches up with new writes. */
    coffer *restarted = NULL;
    assert_int_equal(engine_open_named(&e, e.dir, "http://127.0.0.1:1", &restarted), COFFER_OK);
    assert_int_equal(cluster_of(restarted).role, COFFER_ROLE_FOLLOWER);
    assert_string_equal(cluster_of(restarted).leader, "http://127.0.0.1:2");
    assert_int_equal(transfer(follower, "after-restart", "account-0", "account-2", 7).code,
                     COFFER_CREATED);
    wait_applied(restarted, follower);
    assert_same_ledger(follower, restarted, &written);
    assert_int_equal(transfer_get(restarted, "after-restart").amount, 7);

    /* The leader's session is ended: it steps down; one of the two leads, the other follows. */
    uint64_t acknowledged = cluster_of(follower).applied_seq, term = cluster_of(follower).term;
    terminate_lease_session();
    uint64_t start = now_ms();
    coffer *leader = NULL, *other = NULL;
    while (!leader && now_ms() - start < TAKEOVER_BOUND_MS) {
        usleep(10 * 1000);
        coffer_cluster_status of_restarted = cluster_of(restarted),
                              of_follower = cluster_of(follower);
        if (of_restarted.role == COFFER_ROLE_LEADER && of_restarted.term > term)
            leader = restarted, other = follower;
        else if (of_follower.role == COFFER_ROLE_LEADER && of_follower.term > term)
            leader = follower, other = restarted;
    }
    assert_non_null(leader);
    printf("a leader again %llu ms after its session was ended\n",
           (unsigned long long)(now_ms() - start));
    assert_true(cluster_of(leader).applied_seq >= acknowledged);
    assert_int_equal(transfer_code(leader, "after-terminate", "account-0", "account-3"),
                     COFFER_CREATED);
    wait_role(other, COFFER_ROLE_FOLLOWER, TAKEOVER_BOUND_MS);
    wait_applied(other, leader);
    assert_same_ledger(leader, other, &written);
    assert_follower_refuses(other, leader);
    assert_int_equal(transfer_get(other, "after-terminate").amount, 10);
    coffer_close(restarted);
    coffer_close(follower);
}

/* A session of the test itself, on the test's schema, that queues for the log's lease: it gets
 * it as soon as the leader's session lets go, before any follower's next try. */
static void test_follower_rebuilds_when_the_log_lost_what_it_applied(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "lost");
    char follower_dir[80];
    coffer *follower = follower_open(&e, follower_dir, sizeof follower_dir, NULL);
    create_issuer(e.db, "issuer", "EUR");
    create_account(e.db, "shop", "EUR");
    char id[32];
    for (int t = 0; t < 10; t++) {
        snprintf(id, sizeof id, "payment-%d", t);
        fund(e.db, id, "issuer", "shop", 10);
    }
    wait_applied(follower, e.db);
    /* The leader goes, and the lease stays taken (by this test), so the follower follows on. */
    PGconn *lease = queue_for_lease(e.conninfo);
    coffer_close(e.db);
    lease_taken(lease);
    assert_int_equal(cluster_of(follower).role, COFFER_ROLE_FOLLOWER);
    /* A PostgreSQL failover that lost the last three records. */
    assert_true(sql("DELETE FROM lost.coffer_log WHERE position >"
                    " (SELECT max(position) - 3 FROM lost.coffer_log)"));
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'coffer'")); /* the follower reconnects */
    uint64_t start = now_ms();
    coffer_transfer found;
    while (coffer_transfer_get(follower, "payment-9", &found) != COFFER_TRANSFER_NOT_FOUND ||
           coffer_transfer_get(follower, "payment-6", &found) != COFFER_OK) {
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the follower did not rebuild to what the log holds");
        usleep(10 * 1000);
    }
    assert_int_equal(coffer_transfer_get(follower, "payment-7", &found), COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(balance_of(follower, "shop"), 70);
    /* The lease frees: the follower leads from what the log holds. */
    PQfinish(lease);
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    assert_int_equal(transfer(follower, "payment-7", "issuer", "shop", 10).code, COFFER_CREATED);
    assert_int_equal(balance_of(follower, "shop"), 80);
    coffer_close(follower);
}

/* Runs one query on the primary; its first value as a number. */
static uint64_t sql_number(const char *statement)
{
    PGconn *conn = PQconnectdb(conninfo_base);
    PGresult *result = PQexec(conn, statement);
    if (PQresultStatus(result) != PGRES_TUPLES_OK || PQntuples(result) != 1)
        fail_msg("%s: %s", statement, PQerrorMessage(conn));
    uint64_t value = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    PQfinish(conn);
    return value;
}

/* A feed reader stopped inside a record the log then lost, whose position another record
 * took: reading on gives the new record's changes, not the lost one's from its cache. */
static void test_feed_reads_the_record_that_took_a_lost_ones_position(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "retaken");
    char follower_dir[80];
    coffer *follower = follower_open(&e, follower_dir, sizeof follower_dir, NULL);
    assert_int_equal(create_account(e.db, "before", "EUR").code, COFFER_CREATED);
    const coffer_event lost[3] = {account_event("lost-0", "EUR"), account_event("lost-1", "EUR"),
                                  account_event("lost-2", "EUR")};
    coffer_result results[4];
    submit_batch(e.db, lost, 3, true, results); /* one record */
    uint64_t first = results[0].seq;
    uint64_t position = sql_number("SELECT max(position) FROM retaken.coffer_log");
    wait_applied(follower, e.db);
    coffer_feed *feed = NULL;
    assert_int_equal(coffer_feed_open(follower, &feed), COFFER_OK);
    coffer_change changes[4];
    size_t count = 0;
    uint64_t next_after = 0;
    assert_int_equal(coffer_feed_read(feed, first - 1, NULL, changes, 1, &count, &next_after),
                     COFFER_OK);
    assert_int_equal(count, 1);
    assert_string_equal(changes[0].event.id, "lost-0");
    assert_int_equal(next_after, first); /* it stopped inside the record */

    /* A failover loses the last two records; the follower rebuilds and then leads. */
    PGconn *lease = queue_for_lease(e.conninfo);
    coffer_close(e.db);
    lease_taken(lease);
    assert_true(sql("DELETE FROM retaken.coffer_log WHERE position >"
                    " (SELECT max(position) - 2 FROM retaken.coffer_log)"));
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'coffer'"));
    coffer_account found;
    for (uint64_t start = now_ms();
         coffer_account_get(follower, "lost-0", COFFER_AT_NOW, 0, &found) == COFFER_OK ||
         coffer_account_get(follower, "before", COFFER_AT_NOW, 0, &found) == COFFER_OK;
         usleep(10 * 1000))
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the follower did not rebuild to what the log holds");
    PQfinish(lease);
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    /* Its term row takes the first lost position, this record the second one. */
    const coffer_event kept[4] = {account_event("kept-0", "EUR"), account_event("kept-1", "EUR"),
                                  account_event("kept-2", "EUR"), account_event("kept-3", "EUR")};
    submit_batch(follower, kept, 4, true, results);
    assert_int_equal(results[0].seq, first - 1);
    char statement[160];
    snprintf(statement, sizeof statement,
             "SELECT count(*) FROM retaken.coffer_log WHERE position = %llu AND kind = 1 AND"
             " last_seq = %llu",
             (unsigned long long)position, (unsigned long long)results[3].seq);
    assert_int_equal(sql_number(statement), 1);

    assert_int_equal(coffer_feed_read(feed, first, NULL, changes, 4, &count, &next_after),
                     COFFER_OK);
    assert_int_equal(count, 2);
    assert_string_equal(changes[0].event.id, "kept-2");
    assert_string_equal(changes[1].event.id, "kept-3");
    assert_int_equal(next_after, results[3].seq);
    coffer_feed_close(feed);
    coffer_close(follower);
}

/* Payments first..first+count-1 of 10 on the leader, applied by the follower; the last's seq. */
static uint64_t payments(coffer *leader, coffer *follower, int first, int count)
{
    char id[32];
    uint64_t seq = 0;
    for (int t = first; t < first + count; t++) {
        snprintf(id, sizeof id, "payment-%d", t);
        coffer_result result = fund(leader, id, "issuer", "shop", 10);
        assert_int_equal(result.code, COFFER_CREATED);
        seq = result.seq;
    }
    wait_applied(follower, leader);
    return seq;
}

/* The follower closes (writing a snapshot of what it applied) and opens again. */
static void follower_restart(pg_engine *e, const char *dir, kept_log *log, coffer **follower)
{
    coffer_close(*follower);
    assert_int_equal(engine_open_logged(e, dir, "http://127.0.0.1:2", log, follower), COFFER_OK);
}

static void assert_snapshot_kept(const char *dir, uint64_t seq)
{
    char path[160];
    snprintf(path, sizeof path, "%s/snapshot-%020llu.cfs", dir, (unsigned long long)seq);
    assert_int_equal(access(path, R_OK), 0);
}

/* Waits, bounded, until the follower has payment-0..`last` and not payment-`last`+1. */
static void wait_payments_up_to(coffer *follower, int last)
{
    char kept[32], lost[32];
    snprintf(kept, sizeof kept, "payment-%d", last);
    snprintf(lost, sizeof lost, "payment-%d", last + 1);
    uint64_t start = now_ms();
    coffer_transfer found;
    while (coffer_transfer_get(follower, lost, &found) != COFFER_TRANSFER_NOT_FOUND ||
           coffer_transfer_get(follower, kept, &found) != COFFER_OK) {
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the follower did not rebuild to what the log holds");
        usleep(10 * 1000);
    }
    assert_int_equal(balance_of(follower, "shop"), 10 * (last + 1));
}

/* The follower keeps two snapshots; a failover loses records after the older one's: on
 * reconnect, and again at its next open, it starts over from the older one, not from nothing. */
static void test_follower_rebuilds_from_the_newest_snapshot_the_log_holds(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "older");
    char follower_dir[80], line[200];
    static kept_log log = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    coffer *follower = follower_open(&e, follower_dir, sizeof follower_dir, &log);
    create_issuer(e.db, "issuer", "EUR");
    create_account(e.db, "shop", "EUR");
    uint64_t older = payments(e.db, follower, 0, 4);
    follower_restart(&e, follower_dir, &log, &follower);
    uint64_t kept = payments(e.db, follower, 4, 2); /* payment-5 is the last the log keeps */
    uint64_t newer = payments(e.db, follower, 6, 2);
    follower_restart(&e, follower_dir, &log, &follower);
    payments(e.db, follower, 8, 2);
    assert_snapshot_kept(follower_dir, older);
    assert_snapshot_kept(follower_dir, newer);
    PGconn *lease = queue_for_lease(e.conninfo);
    coffer_close(e.db);
    lease_taken(lease);
    log_clear(&log);
    /* A PostgreSQL failover that lost every record after payment-5. */
    snprintf(line, sizeof line, "DELETE FROM older.coffer_log WHERE last_seq > %llu",
             (unsigned long long)kept);
    assert_true(sql(line));
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'coffer'"));
    wait_payments_up_to(follower, 5);
    snprintf(line, sizeof line, "passing over the local snapshot at seq %llu",
             (unsigned long long)newer);
    assert_true(log_has(&log, line));
    snprintf(line, sizeof line, "recovery: snapshot at seq %llu loaded", (unsigned long long)older);
    assert_true(log_has(&log, line));
    snprintf(line, sizeof line, "rebuilt from the local snapshot at seq %llu",
             (unsigned long long)older);
    assert_true(log_has(&log, line));
    assert_false(log_has(&log, "rebuilt from the log alone"));
    /* Closed, it keeps a snapshot at payment-5 and the newer one the log lost; it opens from
     * the one at payment-5. */
    log_clear(&log);
    follower_restart(&e, follower_dir, &log, &follower);
    assert_snapshot_kept(follower_dir, kept);
    snprintf(line, sizeof line, "passing over the local snapshot at seq %llu",
             (unsigned long long)newer);
    assert_true(log_has(&log, line));
    snprintf(line, sizeof line, "snapshot at seq %llu loaded", (unsigned long long)kept);
    assert_true(log_has(&log, line));
    wait_payments_up_to(follower, 5);
    /* The lease frees: the follower leads from what the log holds. */
    PQfinish(lease);
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    assert_int_equal(transfer(follower, "payment-6", "issuer", "shop", 10).code, COFFER_CREATED);
    assert_int_equal(balance_of(follower, "shop"), 70);
    coffer_close(follower);
}

/* A transfer's state, or COFFER_STATE_NONE while the instance does not have it. */
static int state_of(coffer *db, const char *id)
{
    coffer_transfer found;
    return coffer_transfer_get(db, id, &found) == COFFER_OK ? found.state : COFFER_STATE_NONE;
}

static void test_holds_expire_from_the_leaders_log_only(void **unused)
{
    (void)unused;
    pg_engine e;
    engine_setup(&e, "expiry");
    char follower_dir[80];
    coffer *follower = follower_open(&e, follower_dir, sizeof follower_dir, NULL);
    create_issuer(e.db, "issuer", "EUR");
    create_account(e.db, "shop", "EUR");
    fund(e.db, "funding", "issuer", "shop", 100);
    assert_int_equal(hold(e.db, "swept-by-leader", "shop", "issuer", 10, 200).code, COFFER_CREATED);
    uint64_t start = now_ms(); /* the leader's timer sweeps it; the follower applies that */
    while (state_of(follower, "swept-by-leader") != COFFER_STATE_EXPIRED) {
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the leader's expiry did not reach the follower");
        usleep(10 * 1000);
    }
    assert_int_equal(hold(e.db, "due-while-following", "shop", "issuer", 30, 500).code,
                     COFFER_CREATED);
    wait_applied(follower, e.db);
    /* The leader goes before the hold is due, and the lease stays taken: nobody leads. */
    PGconn *lease = queue_for_lease(e.conninfo);
    coffer_close(e.db);
    lease_taken(lease);
    usleep(1500 * 1000);
    assert_int_equal(transfer_get(follower, "due-while-following").state, COFFER_STATE_PENDING);
    assert_int_equal(available_of(follower, "shop"), 70);
    /* Once it leads, the follower sweeps it. */
    PQfinish(lease);
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    start = now_ms();
    while (state_of(follower, "due-while-following") != COFFER_STATE_EXPIRED) {
        if (now_ms() - start > 3000)
            fail_msg("the new leader did not sweep a due hold");
        usleep(10 * 1000);
    }
    assert_int_equal(available_of(follower, "shop"), 100);
    coffer_close(follower);
}

static void test_killed_session_fails_the_write_then_leads_again(void **unused)
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
    uint64_t term = cluster_of(e.db).term;
    terminate_lease_session();
    /* The write in flight is never acknowledged: the session that would log it is gone. */
    assert_int_not_equal(transfer_code(e.db, "after-kill", "issuer", "shop"), COFFER_CREATED);
    /* The engine steps down, rebuilds from its snapshot and the log, and leads again. */
    uint64_t start = now_ms();
    while (cluster_of(e.db).role != COFFER_ROLE_LEADER || cluster_of(e.db).term <= term) {
        if (now_ms() - start > TAKEOVER_BOUND_MS)
            fail_msg("not leading again after %d ms", TAKEOVER_BOUND_MS);
        usleep(10 * 1000);
    }
    assert_int_equal(coffer_health(e.db), COFFER_OK);
    coffer_account shop;
    assert_int_equal(coffer_account_get(e.db, "shop", COFFER_AT_NOW, 0, &shop), COFFER_OK);
    assert_int_equal(shop.balance, 200); /* every acknowledged write, nothing refused */
    coffer_transfer found;
    assert_int_equal(coffer_transfer_get(e.db, "after-kill", &found), COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(transfer(e.db, "after-lead-again", "issuer", "shop", 10).code, COFFER_CREATED);
    engine_reopen(&e);
    assert_int_equal(coffer_account_get(e.db, "shop", COFFER_AT_NOW, 0, &shop), COFFER_OK);
    assert_int_equal(shop.balance, 210);
    coffer_close(e.db);
}

static bool start_cluster(void)
{
    return pg_cluster_start("test_pg_engine", WATCHDOG_SECONDS) &&
           pg_cluster_env("CONNINFO", conninfo_base, sizeof conninfo_base);
}

#define ENGINE_TEST(f) cmocka_unit_test_teardown(f, engine_teardown)

int main(void)
{
    if (!start_cluster()) {
        fprintf(stderr, "test_pg_engine: the cluster did not start\n");
        pg_cluster_run("stop", NULL);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        ENGINE_TEST(test_workload_survives_reopen_from_snapshot_and_from_log),
        ENGINE_TEST(test_second_engine_follows_and_tools_refuse),
        ENGINE_TEST(test_follower_applies_then_takes_over_and_restarts),
        ENGINE_TEST(test_follower_rebuilds_when_the_log_lost_what_it_applied),
        ENGINE_TEST(test_follower_rebuilds_from_the_newest_snapshot_the_log_holds),
        ENGINE_TEST(test_feed_reads_the_record_that_took_a_lost_ones_position),
        ENGINE_TEST(test_holds_expire_from_the_leaders_log_only),
        ENGINE_TEST(test_killed_session_fails_the_write_then_leads_again),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    alarm(0);
    if (pg_cluster_run("stop", NULL) != 0)
        failed++;
    return failed;
}
