/*
 * test_history.c — per-account history (every kind, with delta, balance, available, version),
 * paging by seq, past reads at a seq or a timestamp, coffer_verify on a busy ledger, and
 * coffer_stats counts.
 */
#include "support.h"

#define S TEST_CLOCK_START_NS

/*
 * Builds a ledger whose history holds every kind. Seqs: accounts 1-3, fund 4, h1 held 5,
 * cap (partial post of h1) 6, h2 held 7, v2 (void h2) 8, h3 held 9, then 2 s later the sweep
 * expires h3 at 10 and poke is 11.
 */
static int history_setup(void **state)
{
    ledger_setup(state);
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    create_account(db, "bob", "KRW");
    fund(db, "fund", "bank", "alice", 100);
    assert_int_equal(hold(db, "h1", "alice", "bob", 30, 60000).code, COFFER_CREATED);
    assert_int_equal(post_hold(db, "cap", "h1", 10).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h2", "alice", "bob", 20, 60000).code, COFFER_CREATED);
    assert_int_equal(void_hold(db, "v2", "h2").code, COFFER_CREATED);
    assert_int_equal(hold(db, "h3", "alice", "bob", 5, 1000).code, COFFER_CREATED);
    clock_advance_ms(ledger, 2000);
    coffer_result poke = fund(db, "poke", "bank", "bob", 1);
    assert_int_equal(poke.seq, 11);
    return 0;
}

static void assert_entries(const coffer_history_entry *actual, const coffer_history_entry *expected,
                           size_t count)
{
    for (size_t i = 0; i < count; i++) {
        assert_int_equal(actual[i].seq, expected[i].seq);
        assert_int_equal(actual[i].timestamp, expected[i].timestamp);
        assert_string_equal(actual[i].transfer_id, expected[i].transfer_id);
        assert_int_equal(actual[i].kind, expected[i].kind);
        assert_int_equal(actual[i].delta, expected[i].delta);
        assert_int_equal(actual[i].balance, expected[i].balance);
        assert_int_equal(actual[i].available, expected[i].available);
        assert_int_equal(actual[i].version, expected[i].version);
    }
}

static void test_history_of_debit_side(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    const coffer_history_entry expected[] = {
        {4, S + 3, "fund", COFFER_HISTORY_POSTED, 100, 100, 100, 2},
        {5, S + 4, "h1", COFFER_HISTORY_HELD, -30, 100, 70, 3},
        {6, S + 5, "cap", COFFER_HISTORY_CAPTURED, -10, 90, 90, 4},
        {7, S + 6, "h2", COFFER_HISTORY_HELD, -20, 90, 70, 5},
        {8, S + 7, "v2", COFFER_HISTORY_RELEASED, 20, 90, 90, 6},
        {9, S + 8, "h3", COFFER_HISTORY_HELD, -5, 90, 85, 7},
        {10, S + 2000000000, "h3", COFFER_HISTORY_EXPIRED, 5, 90, 90, 8},
    };
    coffer_history_entry entries[16];
    size_t count = 0;
    assert_int_equal(coffer_history(db, "alice", 0, 16, entries, &count), COFFER_OK);
    assert_int_equal(count, 7);
    assert_entries(entries, expected, 7);
    const coffer_history_entry bank[] = {
        {4, S + 3, "fund", COFFER_HISTORY_POSTED, -100, -100, -100, 2},
        {11, S + 2000000001, "poke", COFFER_HISTORY_POSTED, -1, -101, -101, 3},
    };
    assert_int_equal(coffer_history(db, "bank", 0, 16, entries, &count), COFFER_OK);
    assert_int_equal(count, 2);
    assert_entries(entries, bank, 2);
}

static void test_history_of_credit_side(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    const coffer_history_entry expected[] = {
        {5, S + 4, "h1", COFFER_HISTORY_HELD, 30, 0, 0, 2},
        {6, S + 5, "cap", COFFER_HISTORY_CAPTURED, 10, 10, 10, 3},
        {7, S + 6, "h2", COFFER_HISTORY_HELD, 20, 10, 10, 4},
        {8, S + 7, "v2", COFFER_HISTORY_RELEASED, -20, 10, 10, 5},
        {9, S + 8, "h3", COFFER_HISTORY_HELD, 5, 10, 10, 6},
        {10, S + 2000000000, "h3", COFFER_HISTORY_EXPIRED, -5, 10, 10, 7},
        {11, S + 2000000001, "poke", COFFER_HISTORY_POSTED, 1, 11, 11, 8},
    };
    coffer_history_entry entries[16];
    size_t count = 0;
    assert_int_equal(coffer_history(db, "bob", 0, 16, entries, &count), COFFER_OK);
    assert_int_equal(count, 7);
    assert_entries(entries, expected, 7);
}

static void test_history_paging(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_history_entry entries[3];
    size_t count = 0;
    const uint64_t pages[][3] = {{4, 5, 6}, {7, 8, 9}, {10, 0, 0}};
    const size_t page_sizes[] = {3, 3, 1};
    uint64_t after = 0;
    for (size_t page = 0; page < 3; page++) {
        assert_int_equal(coffer_history(db, "alice", after, 3, entries, &count), COFFER_OK);
        assert_int_equal(count, page_sizes[page]);
        for (size_t i = 0; i < count; i++)
            assert_int_equal(entries[i].seq, pages[page][i]);
        after = entries[count - 1].seq;
    }
    assert_int_equal(coffer_history(db, "alice", after, 3, entries, &count), COFFER_OK);
    assert_int_equal(count, 0);
    /* after_seq need not be one of the account's own seqs. */
    assert_int_equal(coffer_history(db, "bob", 2, 1, entries, &count), COFFER_OK);
    assert_int_equal(count, 1);
    assert_int_equal(entries[0].seq, 5);
}

static void test_history_of_unknown_account(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_history_entry entries[1];
    size_t count = 7;
    assert_int_equal(coffer_history(db, "ghost", 0, 1, entries, &count), COFFER_ACCOUNT_NOT_FOUND);
}

static coffer_account account_at(coffer *db, const char *id, int at, uint64_t value)
{
    coffer_account account;
    memset(&account, 0, sizeof(account));
    assert_int_equal(coffer_account_get(db, id, at, value, &account), COFFER_OK);
    return account;
}

static void assert_past(coffer_account account, int64_t balance, int64_t available,
                        uint64_t version)
{
    assert_int_equal(account.balance, balance);
    assert_int_equal(account.available, available);
    assert_int_equal(account.version, version);
}

static void test_account_at_seq(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_account account;
    assert_int_equal(coffer_account_get(db, "alice", COFFER_AT_SEQ, 1, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 2), 0, 0, 1);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 3), 0, 0, 1);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 4), 100, 100, 2);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 5), 100, 70, 3);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 9), 90, 85, 7);
    assert_past(account_at(db, "alice", COFFER_AT_SEQ, 1000), 90, 90, 8);
    assert_past(account_at(db, "bob", COFFER_AT_SEQ, 6), 10, 10, 3);
    coffer_account past = account_at(db, "alice", COFFER_AT_SEQ, 5);
    assert_string_equal(past.id, "alice");
    assert_string_equal(past.currency, "KRW");
    assert_int_equal(past.debits_held, 30);
    assert_int_equal(account_at(db, "alice", COFFER_AT_SEQ, 7).debits_held, 20);
    assert_int_equal(account_at(db, "alice", COFFER_AT_SEQ, 8).debits_held, 0);
}

static void test_account_at_timestamp(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_account account;
    assert_int_equal(coffer_account_get(db, "alice", COFFER_AT_TIMESTAMP, S, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
    assert_past(account_at(db, "alice", COFFER_AT_TIMESTAMP, S + 1), 0, 0, 1);
    assert_past(account_at(db, "alice", COFFER_AT_TIMESTAMP, S + 3), 100, 100, 2);
    assert_past(account_at(db, "alice", COFFER_AT_TIMESTAMP, S + 4), 100, 70, 3);
    assert_past(account_at(db, "alice", COFFER_AT_TIMESTAMP, S + 1000000000), 90, 85, 7);
    assert_past(account_at(db, "alice", COFFER_AT_TIMESTAMP, S + 2000000000), 90, 90, 8);
    assert_past(account_at(db, "bob", COFFER_AT_TIMESTAMP, S + 2000000001), 11, 11, 8);
}

/* A small deterministic generator so the busy ledger is the same on every run. */
static uint64_t next_random(uint64_t *seed)
{
    *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return *seed >> 33;
}

enum { BUSY_ACCOUNTS = 20, BUSY_EVENTS = 1500 };

/* One random event: a transfer (maybe up-to), a hold, a post or void of an earlier event's id
 * (often not a hold at all), or a clock tick that lets holds expire. */
static void busy_step(test_ledger *ledger, uint64_t *seed, int step)
{
    char id[32], from[16], to[16], target[32];
    snprintf(id, sizeof(id), "e%d", step);
    snprintf(from, sizeof(from), "u%u", (unsigned)(next_random(seed) % BUSY_ACCOUNTS));
    snprintf(to, sizeof(to), "u%u", (unsigned)(next_random(seed) % BUSY_ACCOUNTS));
    snprintf(target, sizeof(target), "e%u", (unsigned)(next_random(seed) % (unsigned)(step + 1)));
    int64_t amount = (int64_t)(next_random(seed) % 400) + 1;
    uint64_t extra = next_random(seed);
    coffer_event event = transfer_event(id, from, to, amount);
    switch (next_random(seed) % 6) {
    case 0:
        break;
    case 1:
        event.hold_timeout_ms = extra % 3000 + 1;
        break;
    case 2:
        event = post_event(id, target, (int64_t)(extra % 50));
        break;
    case 3:
        event = void_event(id, target);
        break;
    case 4:
        clock_advance_ms(ledger, extra % 500);
        return;
    default:
        event.flags = COFFER_FLAG_UP_TO;
        break;
    }
    submit_event(ledger->db, event);
}

static void assert_books_balance(coffer *db)
{
    int64_t total = account_get(db, "bank").balance, held = 0;
    for (unsigned i = 0; i < BUSY_ACCOUNTS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "u%u", i);
        coffer_account account = account_get(db, id);
        assert_true(account.available >= 0);
        total += account.balance;
        held += account.debits_held;
    }
    assert_int_equal(total, 0);
    static coffer_transfer holds[BUSY_EVENTS];
    size_t count = 0;
    assert_int_equal(coffer_holds_list(db, NULL, BUSY_EVENTS, holds, &count), COFFER_OK);
    for (size_t i = 0; i < count; i++)
        held -= holds[i].amount;
    assert_int_equal(held, 0);
}

static void test_verify_busy_ledger(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    for (unsigned i = 0; i < BUSY_ACCOUNTS; i++) {
        char id[16], fund_id[16];
        snprintf(id, sizeof(id), "u%u", i);
        snprintf(fund_id, sizeof(fund_id), "f%u", i);
        create_account(db, id, "KRW");
        fund(db, fund_id, "bank", id, 1000);
    }
    uint64_t seed = 42;
    for (int step = 0; step < BUSY_EVENTS; step++)
        busy_step(ledger, &seed, step);
    assert_books_balance(db);
    coffer_verify_report report;
    assert_int_equal(coffer_verify(db, &report), COFFER_OK);
    assert_true(report.ok);
    assert_int_equal(report.problem_count, 0);
    assert_int_equal(report.accounts_checked, BUSY_ACCOUNTS + 1);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(report.transfers_checked, stats.transfers);
    assert_true(stats.holds_expired > 0);
}

static void test_stats_counts(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.seq, 0);
    assert_int_equal(stats.accounts, 0);
    assert_int_equal(stats.transfers, 0);
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    create_account(db, "bob", "KRW");
    fund(db, "fund", "bank", "alice", 100);                                            /* seq 4 */
    assert_int_equal(transfer(db, "fund", "bank", "alice", 100).code, COFFER_EXISTS);  /* 5 */
    assert_int_equal(transfer(db, "", "bank", "alice", 1).code, COFFER_INVALID_FIELD); /* 6 */
    assert_int_equal(hold(db, "h1", "alice", "bob", 10, 60000).code, COFFER_CREATED);  /* 7 */
    coffer_result last = transfer(db, "t1", "alice", "bob", 1000);                     /* 8 */
    assert_int_equal(last.code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.seq, 8);
    assert_int_equal(last.seq, 8);
    assert_int_equal(stats.accounts, 3);
    assert_int_equal(stats.transfers, 3);
    assert_int_equal(stats.holds_pending, 1);
    assert_int_equal(stats.holds_expired, 0);
    assert_int_equal(stats.queue_events, 0);
    assert_in_range(stats.batches, 1, 8);
    assert_in_range(stats.events_applied, 5, 8);
    uint64_t codes[COFFER_CODE_LIMIT];
    assert_int_equal(coffer_code_counts(db, codes, COFFER_CODE_LIMIT), COFFER_OK);
    assert_int_equal(codes[COFFER_CREATED], 5);
    assert_int_equal(codes[COFFER_EXISTS], 1);
    assert_int_equal(codes[COFFER_INVALID_FIELD], 1);
    assert_int_equal(codes[COFFER_INSUFFICIENT_BALANCE], 1);
    assert_int_equal(codes[COFFER_BATCH_FAILED], 0);
}

#define HISTORY_TEST(f) cmocka_unit_test_setup_teardown(f, history_setup, ledger_teardown)
#define LEDGER_TEST(f) cmocka_unit_test_setup_teardown(f, ledger_setup, ledger_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        HISTORY_TEST(test_history_of_debit_side), HISTORY_TEST(test_history_of_credit_side),
        HISTORY_TEST(test_history_paging),        HISTORY_TEST(test_history_of_unknown_account),
        HISTORY_TEST(test_account_at_seq),        HISTORY_TEST(test_account_at_timestamp),
        LEDGER_TEST(test_verify_busy_ledger),     LEDGER_TEST(test_stats_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
