/*
 * test_pg_evict.c — a ledger whose log is in PostgreSQL, larger than its instances' memory
 * budget (16 MiB): the leader and a follower each keep the on-disk index and evict what it
 * holds. A follower that starts behind catches up through its budget (evicting as recovery
 * does), then follows the leader's writes evicting as it goes; on both, every sampled id
 * replays or reads back as recorded and an account's whole history reads back; a leader whose
 * session is killed steps down and rebuilds its evicted memory as a follower; when the leader
 * closes the follower takes over and answers retries of evicted ids with their original
 * outcome; a restart recovers from a snapshot taken after an eviction. A follower whose index
 * holds records a failover lost stops reading it and leaves the lease to others, and a restart
 * rebuilds it. Without PostgreSQL's binaries the program says so and exits 77 (skipped).
 */
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "files.h"
#include "pg_cluster.h"
#include "unit/pg_support.h"

enum {
    WATCHDOG_SECONDS = 170,
    TAKEOVER_BOUND_MS = 5000,  /* the lease (2 s), then 3 s */
    CATCH_UP_BOUND_MS = 30000, /* a follower applies what the leader wrote within this */
    ACCOUNTS = 100,
    BATCH = 1000,
    FIRST_WAVE = 150000,  /* before the follower starts: more than 16 MiB holds */
    SECOND_WAVE = 100000, /* while it follows */
    THIRD_WAVE = 5000,    /* after the takeover (and one id more, refused) */
    LOST_WAVE = 60000,    /* the second case: enough to evict */
    SAMPLE_EVERY = 997,
    WATCHED_ACCOUNT = 7,
};

#define BUDGET_BYTES (16ull << 20)

static char conninfo_base[640];
static char conninfo[700];

typedef struct kept {
    uint32_t number;
    uint64_t seq;
} kept;

static kept samples[(FIRST_WAVE + SECOND_WAVE + THIRD_WAVE) / SAMPLE_EVERY + 2];
static size_t samples_count;
static uint32_t watched_transfers; /* transfers to the watched account */

static bool sql(const char *statement)
{
    return pg_sql(conninfo_base, statement);
}

static void engine_log(void *context, const char *line)
{
    (void)context;
    fprintf(stderr, "  %s: %s\n", (const char *)context, line);
}

static coffer *engine_open(const char *dir, const char *name)
{
    coffer_options options;
    coffer_options_init(&options);
    options.log_location = conninfo;
    options.log_name = name;
    options.log = engine_log;
    options.log_context = (void *)name;
    options.index_on = true;
    options.memory_bytes_max = BUDGET_BYTES;
    coffer *db = NULL;
    assert_int_equal(coffer_open(dir, &options, &db), COFFER_OK);
    return db;
}

static coffer_stats stats_of(coffer *db)
{
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    return stats;
}

/* ---- the workload -------------------------------------------------------------------------- */

typedef struct names {
    char id[24], to[24];
} names;

static int64_t amount_of(uint32_t number)
{
    return 1 + number % 50;
}

static coffer_event numbered(uint32_t number, names *n)
{
    snprintf(n->id, sizeof n->id, "t-%u", number);
    snprintf(n->to, sizeof n->to, "acct-%u", number % ACCOUNTS);
    return (coffer_event){.op = COFFER_OP_TRANSFER,
                          .id = n->id,
                          .from = "bank",
                          .to = n->to,
                          .amount = amount_of(number)};
}

/* Until accepted: a full memory whose index is behind answers overloaded, and a client retries. */
static int submit_retrying(coffer *db, const coffer_event *events, size_t count,
                           coffer_result *results)
{
    for (int attempt = 0; attempt < 20000; attempt++) {
        int code = coffer_submit(db, events, count, false, results);
        if (code != COFFER_OVERLOADED)
            return code;
        usleep(2000);
    }
    return COFFER_OVERLOADED;
}

static void create_accounts(coffer *db)
{
    static coffer_event events[ACCOUNTS + 1];
    static coffer_result results[ACCOUNTS + 1];
    static char ids[ACCOUNTS][24];
    events[0] = (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT,
                               .id = "bank",
                               .currency = "USD",
                               .flags = COFFER_FLAG_MIN_UNBOUNDED};
    for (uint32_t i = 0; i < ACCOUNTS; i++) {
        snprintf(ids[i], sizeof ids[i], "acct-%u", i);
        events[i + 1] =
            (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT, .id = ids[i], .currency = "USD"};
    }
    assert_int_equal(coffer_submit(db, events, ACCOUNTS + 1, false, results), COFFER_OK);
    for (size_t i = 0; i <= ACCOUNTS; i++)
        assert_int_equal(results[i].code, COFFER_CREATED);
}

static void write_transfers(coffer *db, uint32_t first, uint32_t last)
{
    static coffer_event events[BATCH];
    static coffer_result results[BATCH];
    static names n[BATCH];
    for (uint32_t start = first; start < last; start += BATCH) {
        uint32_t count = last - start < BATCH ? last - start : BATCH;
        for (uint32_t i = 0; i < count; i++)
            events[i] = numbered(start + i, &n[i]);
        assert_int_equal(submit_retrying(db, events, count, results), COFFER_OK);
        for (uint32_t i = 0; i < count; i++) {
            assert_int_equal(results[i].code, COFFER_CREATED);
            if ((start + i) % SAMPLE_EVERY == 0) {
                assert_true(samples_count < sizeof samples / sizeof samples[0]);
                samples[samples_count++] = (kept){start + i, results[i].seq};
            }
            watched_transfers += (start + i) % ACCOUNTS == WATCHED_ACCOUNT;
        }
    }
}

/* ---- what every instance must answer --------------------------------------------------------- */

/* Every sampled transfer reads back as recorded, evicted or not. */
static void check_reads(coffer *db)
{
    names n;
    for (size_t i = 0; i < samples_count; i++) {
        coffer_event event = numbered(samples[i].number, &n);
        coffer_transfer found;
        assert_int_equal(coffer_transfer_get(db, event.id, &found), COFFER_OK);
        assert_int_equal(found.seq, samples[i].seq);
        assert_int_equal(found.amount, event.amount);
        assert_string_equal(found.to, event.to);
    }
    /* The watched account's whole history, page by page: every transfer to it, oldest first. */
    static coffer_history_entry page[256];
    uint64_t after = 0, entries = 0, last_seq = 0;
    for (;;) {
        size_t count = 0;
        char account[24];
        snprintf(account, sizeof account, "acct-%u", WATCHED_ACCOUNT);
        assert_int_equal(coffer_history(db, account, after, 256, page, &count), COFFER_OK);
        for (size_t i = 0; i < count; i++) {
            assert_true(page[i].seq > last_seq);
            last_seq = page[i].seq;
        }
        entries += count;
        if (count < 256)
            break;
        after = page[count - 1].seq;
    }
    assert_int_equal(entries, watched_transfers);
}

/* Every sampled id, submitted again, replays its original outcome (the leader only). */
static void check_retries(coffer *db)
{
    names n;
    for (size_t i = 0; i < samples_count; i++) {
        coffer_event event = numbered(samples[i].number, &n);
        coffer_result result;
        assert_int_equal(submit_retrying(db, &event, 1, &result), COFFER_OK);
        assert_int_equal(result.code, COFFER_EXISTS);
        assert_true(result.replayed);
        assert_int_equal(result.seq, samples[i].seq);
        event.amount += 1;
        assert_int_equal(submit_retrying(db, &event, 1, &result), COFFER_OK);
        assert_int_equal(result.code, COFFER_ID_REUSED);
    }
}

static void wait_applied(coffer *follower, uint64_t target)
{
    uint64_t start = now_ms();
    while (cluster_of(follower).applied_seq < target) {
        if (now_ms() - start > CATCH_UP_BOUND_MS) {
            coffer_stats stats = stats_of(follower);
            fail_msg("the follower applied %llu of %llu (its index applied %llu, flushed %llu; "
                     "evicted up to %llu; memory %llu of %llu)",
                     (unsigned long long)cluster_of(follower).applied_seq,
                     (unsigned long long)target, (unsigned long long)stats.index_applied_seq,
                     (unsigned long long)stats.index_flushed_seq,
                     (unsigned long long)stats.evicted_seq,
                     (unsigned long long)stats.memory_used_bytes,
                     (unsigned long long)stats.memory_budget_bytes);
        }
        usleep(20 * 1000);
    }
}

static void test_leader_and_follower_evict_what_the_index_holds(void **unused)
{
    (void)unused;
    assert_true(sql("CREATE SCHEMA evict"));
    snprintf(conninfo, sizeof conninfo, "%s options='-csearch_path=evict'", conninfo_base);
    char leader_dir[64] = "/tmp/coffer-pg-evict-XXXXXX", follower_dir[96];
    assert_non_null(mkdtemp(leader_dir));
    snprintf(follower_dir, sizeof follower_dir, "%s-follower", leader_dir);

    coffer *leader = engine_open(leader_dir, "http://127.0.0.1:1");
    create_accounts(leader);
    write_transfers(leader, 0, FIRST_WAVE);
    coffer_stats stats = stats_of(leader);
    assert_true(stats.evicted_seq > 0); /* the ledger outgrew the budget */
    assert_true(stats.index_on);

    /* A follower that starts behind: the open replays the whole log through its budget. */
    coffer *follower = engine_open(follower_dir, "http://127.0.0.1:2");
    assert_int_equal(cluster_of(follower).role, COFFER_ROLE_FOLLOWER);
    uint64_t evicted_at_open = stats_of(follower).evicted_seq;
    assert_true(evicted_at_open > 0);
    /* Then it follows, evicting as it goes. */
    write_transfers(leader, FIRST_WAVE, FIRST_WAVE + SECOND_WAVE);
    wait_applied(follower, cluster_of(leader).applied_seq);
    uint64_t deadline = now_ms() + CATCH_UP_BOUND_MS;
    while (stats_of(follower).evicted_seq <= evicted_at_open && now_ms() < deadline)
        usleep(20 * 1000);
    assert_true(stats_of(follower).evicted_seq > evicted_at_open);
    assert_true(stats_of(follower).index_on);

    check_reads(leader);
    check_retries(leader);
    check_reads(follower);

    /* The leader's session is killed: it steps down and rebuilds its memory, which needs its
     * index, as a follower; one of the two leads again. */
    uint64_t term = cluster_of(leader).term;
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = 1128680519 AND granted"));
    names n;
    coffer_event after_kill = numbered(FIRST_WAVE + SECOND_WAVE + THIRD_WAVE, &n);
    coffer_result refused;
    assert_int_not_equal(coffer_submit(leader, &after_kill, 1, false, &refused), COFFER_OK);
    uint64_t start = now_ms();
    while (cluster_of(leader).term <= term || cluster_of(follower).term <= term ||
           (cluster_of(leader).role != COFFER_ROLE_LEADER &&
            cluster_of(follower).role != COFFER_ROLE_LEADER)) {
        if (now_ms() - start > TAKEOVER_BOUND_MS)
            fail_msg("no leader of a new term within %d ms", TAKEOVER_BOUND_MS);
        usleep(10 * 1000);
    }
    const char *last_dir = follower_dir; /* the instance that leads at the end */
    if (cluster_of(follower).role == COFFER_ROLE_LEADER) {
        coffer *swap = leader;
        leader = follower;
        follower = swap;
        last_dir = leader_dir;
    }
    wait_applied(follower, cluster_of(leader).applied_seq);
    check_reads(follower);
    check_retries(leader);

    /* The leader goes: the follower takes over and answers retries of evicted ids. */
    coffer_close(leader);
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    check_retries(follower);
    write_transfers(follower, FIRST_WAVE + SECOND_WAVE, FIRST_WAVE + SECOND_WAVE + THIRD_WAVE);

    /* A restart recovers from the snapshot written at close, taken after evictions. */
    coffer_close(follower);
    follower = engine_open(last_dir, "http://127.0.0.1:2");
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    assert_true(stats_of(follower).evicted_seq > 0);
    check_reads(follower);
    check_retries(follower);
    coffer_close(follower);
    /* coffer verify DIR --log CONNINFO: the chain, the snapshot, and the index against the log. */
    coffer_options options;
    coffer_options_init(&options);
    options.memory_bytes_max = 1ull << 30;
    static coffer_dir_report report;
    assert_int_equal(coffer_verify_log(conninfo, last_dir, &options, NULL, NULL, &report),
                     COFFER_OK);
    if (!report.ok)
        fail_msg("verify: %s %s %s", report.chain_error, report.snapshot_error, report.index_error);
    assert_true(report.index_found && report.index_ok);
    assert_true(report.index_applied_seq > FIRST_WAVE);
    remove_tree(leader_dir);
    remove_tree(follower_dir);
}

/* ---- an index that holds what the log lost -----------------------------------------------------
 */

static void wait_index(coffer *db, bool on, uint64_t applied_seq)
{
    uint64_t start = now_ms();
    for (;;) {
        coffer_stats stats = stats_of(db);
        if (stats.index_on == on && (!on || stats.index_applied_seq >= applied_seq))
            return;
        if (now_ms() - start > CATCH_UP_BOUND_MS)
            fail_msg("the index is %s at seq %llu, not %s at %llu", stats.index_on ? "on" : "off",
                     (unsigned long long)stats.index_applied_seq, on ? "on" : "off",
                     (unsigned long long)applied_seq);
        usleep(20 * 1000);
    }
}

static void test_an_index_that_holds_what_the_log_lost_is_rebuilt(void **unused)
{
    (void)unused;
    assert_true(sql("CREATE SCHEMA lost"));
    snprintf(conninfo, sizeof conninfo, "%s options='-csearch_path=lost'", conninfo_base);
    samples_count = 0;
    watched_transfers = 0;
    char leader_dir[64] = "/tmp/coffer-pg-evict-XXXXXX", follower_dir[96];
    assert_non_null(mkdtemp(leader_dir));
    snprintf(follower_dir, sizeof follower_dir, "%s-follower", leader_dir);
    coffer *leader = engine_open(leader_dir, "http://127.0.0.1:1");
    coffer *follower = engine_open(follower_dir, "http://127.0.0.1:2");
    create_accounts(leader);
    write_transfers(leader, 0, LOST_WAVE);
    uint64_t written = cluster_of(leader).applied_seq;
    wait_applied(follower, written);
    wait_index(follower, true, written); /* it indexed the records about to be lost */
    assert_true(stats_of(follower).evicted_seq > 0);

    /* The leader goes while this test holds the lease; a failover loses the last three records. */
    PGconn *lease = queue_for_lease(conninfo);
    coffer_close(leader);
    lease_taken(lease);
    assert_true(sql("DELETE FROM lost.coffer_log WHERE position >"
                    " (SELECT max(position) - 3 FROM lost.coffer_log)"));
    assert_true(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'coffer'")); /* the follower reconnects */
    /* It no longer reads an index that holds more than the log, nor leads with it. */
    wait_index(follower, false, 0);
    PQfinish(lease);
    usleep(TAKEOVER_BOUND_MS * 1000);
    assert_int_not_equal(cluster_of(follower).role, COFFER_ROLE_LEADER);

    /* A restart rebuilds the index from the log: it leads, a lost id is new again, and an
     * evicted one replays. */
    coffer_close(follower);
    follower = engine_open(follower_dir, "http://127.0.0.1:2");
    wait_role(follower, COFFER_ROLE_LEADER, TAKEOVER_BOUND_MS);
    wait_index(follower, true, cluster_of(follower).applied_seq);
    write_transfers(follower, LOST_WAVE, LOST_WAVE + LOST_WAVE / 2); /* so that memory evicts */
    assert_true(stats_of(follower).evicted_seq > 0);
    names n;
    coffer_event lost = numbered(LOST_WAVE - 1, &n);
    coffer_result result;
    assert_int_equal(submit_retrying(follower, &lost, 1, &result), COFFER_OK);
    assert_int_equal(result.code, COFFER_CREATED);
    coffer_event first = numbered(samples[0].number, &n);
    assert_int_equal(submit_retrying(follower, &first, 1, &result), COFFER_OK);
    assert_int_equal(result.code, COFFER_EXISTS);
    assert_int_equal(result.seq, samples[0].seq);
    coffer_close(follower);
    remove_tree(leader_dir);
    remove_tree(follower_dir);
}

static bool start_cluster(void)
{
    return pg_cluster_start("test_pg_evict", WATCHDOG_SECONDS) &&
           pg_cluster_env("CONNINFO", conninfo_base, sizeof conninfo_base);
}

int main(void)
{
    if (!start_cluster()) {
        fprintf(stderr, "test_pg_evict: the cluster did not start\n");
        pg_cluster_run("stop", NULL);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leader_and_follower_evict_what_the_index_holds),
        cmocka_unit_test(test_an_index_that_holds_what_the_log_lost_is_rebuilt),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    alarm(0);
    if (pg_cluster_run("stop", NULL) != 0)
        failed++;
    return failed;
}
