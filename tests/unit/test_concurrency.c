/*
 * test_concurrency.c — many threads on one engine: a shared account never goes below its floor
 * and advances its version once per debit, concurrent retries of the same ids apply each id
 * once, atomic purchases never oversell, and a post racing expiry resolves the hold once.
 * Worker threads only count outcomes; the main thread asserts.
 */
#include <pthread.h>

#include "support.h"

enum { THREADS = 8, TRANSFERS_PER_THREAD = 1000, SHARED_BALANCE = 5000 };

typedef struct worker {
    pthread_t thread;
    coffer *db;
    int index;
    int created;
    int refused;
    int replayed;
    int other; /* any other code, or a failed call: must stay 0 */
} worker;

static int world_setup(void **state)
{
    ledger_setup(state);
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "shared", "KRW");
    create_account(db, "sink", "KRW");
    fund(db, "fund-shared", "bank", "shared", SHARED_BALANCE);
    return 0;
}

static void *spend_one_at_a_time(void *argument)
{
    worker *self = argument;
    for (int i = 0; i < TRANSFERS_PER_THREAD; i++) {
        char id[32];
        snprintf(id, sizeof(id), "w%d-%d", self->index, i);
        coffer_event event = transfer_event(id, "shared", "sink", 1);
        coffer_result result;
        if (coffer_submit(self->db, &event, 1, false, &result) != COFFER_OK) {
            self->other++;
        } else if (result.code == COFFER_CREATED) {
            self->created++;
        } else if (result.code == COFFER_INSUFFICIENT_BALANCE) {
            self->refused++;
        } else {
            self->other++;
        }
    }
    return NULL;
}

static void run_workers(worker *workers, int count, coffer *db, void *(*body)(void *))
{
    for (int i = 0; i < count; i++) {
        workers[i] = (worker){.db = db, .index = i};
        assert_int_equal(pthread_create(&workers[i].thread, NULL, body, &workers[i]), 0);
    }
    for (int i = 0; i < count; i++)
        assert_int_equal(pthread_join(workers[i].thread, NULL), 0);
}

static void test_shared_account_never_overdraws(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    worker workers[THREADS];
    run_workers(workers, THREADS, db, spend_one_at_a_time);
    int created = 0, refused = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(workers[i].other, 0);
        created += workers[i].created;
        refused += workers[i].refused;
    }
    assert_int_equal(created, SHARED_BALANCE);
    assert_int_equal(refused, THREADS * TRANSFERS_PER_THREAD - SHARED_BALANCE);
    coffer_account shared = account_get(db, "shared");
    assert_int_equal(shared.balance, 0);
    assert_int_equal(shared.available, 0);
    /* Created at 1, funded at 2, then one version per successful debit. */
    assert_int_equal(shared.version, 2 + SHARED_BALANCE);
    assert_int_equal(balance_of(db, "sink"), SHARED_BALANCE);
    assert_int_equal(version_of(db, "sink"), 1 + SHARED_BALANCE);
    verify_ok(db);
}

enum { RETRY_THREADS = 4, RETRY_IDS = 300 };

/* Every thread submits the same ids with the same content, each starting at its own offset so
 * the threads collide on ids in different orders. */
static void *retry_same_ids(void *argument)
{
    worker *self = argument;
    for (int n = 0; n < RETRY_IDS; n++) {
        int i = (n + self->index * (RETRY_IDS / RETRY_THREADS)) % RETRY_IDS;
        char id[32];
        snprintf(id, sizeof(id), "retry-%d", i);
        coffer_event event = transfer_event(id, "shared", "sink", 2);
        coffer_result result;
        if (coffer_submit(self->db, &event, 1, false, &result) != COFFER_OK) {
            self->other++;
        } else if (result.code == COFFER_CREATED && !result.replayed) {
            self->created++;
        } else if (result.code == COFFER_EXISTS && result.replayed && result.amount == 2) {
            self->replayed++;
        } else {
            self->other++;
        }
    }
    return NULL;
}

static void test_concurrent_retries_apply_once(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    worker workers[RETRY_THREADS];
    run_workers(workers, RETRY_THREADS, db, retry_same_ids);
    int created = 0, replayed = 0;
    for (int i = 0; i < RETRY_THREADS; i++) {
        assert_int_equal(workers[i].other, 0);
        created += workers[i].created;
        replayed += workers[i].replayed;
    }
    assert_int_equal(created, RETRY_IDS);
    assert_int_equal(replayed, (RETRY_THREADS - 1) * RETRY_IDS);
    coffer_account shared = account_get(db, "shared");
    assert_int_equal(shared.balance, SHARED_BALANCE - 2 * RETRY_IDS);
    assert_int_equal(shared.version, 2 + RETRY_IDS);
    assert_int_equal(balance_of(db, "sink"), 2 * RETRY_IDS);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.transfers, 1 + RETRY_IDS);
    verify_ok(db);
}

/* Story 3: buying a share is atomic (price out of the wallet, share out of the round's pool).
 * The pool has 60 shares and each user may hold at most 10; 8 users try 30 buys each. */
enum { BUYERS = 8, BUYS_PER_BUYER = 30, POOL_SHARES = 60, SHARES_MAX = 10, PRICE = 7 };

static void lottery_world(coffer *db)
{
    create_issuer(db, "shares", "SHARE");
    create_account(db, "round:1", "SHARE");
    create_account(db, "house", "KRW");
    fund(db, "stock", "shares", "round:1", POOL_SHARES);
    for (int i = 0; i < BUYERS; i++) {
        char wallet[32], holding[32], grant[32];
        snprintf(wallet, sizeof(wallet), "wallet:%d", i);
        snprintf(holding, sizeof(holding), "shares:%d", i);
        snprintf(grant, sizeof(grant), "grant:%d", i);
        create_account(db, wallet, "KRW");
        create_capped(db, holding, "SHARE", SHARES_MAX);
        fund(db, grant, "bank", wallet, 1000);
    }
}

static void *buy_shares(void *argument)
{
    worker *self = argument;
    char wallet[32], holding[32];
    snprintf(wallet, sizeof(wallet), "wallet:%d", self->index);
    snprintf(holding, sizeof(holding), "shares:%d", self->index);
    for (int i = 0; i < BUYS_PER_BUYER; i++) {
        char pay_id[48], share_id[48];
        snprintf(pay_id, sizeof(pay_id), "buy:%d:%d:pay", self->index, i);
        snprintf(share_id, sizeof(share_id), "buy:%d:%d:share", self->index, i);
        coffer_event events[2] = {transfer_event(pay_id, wallet, "house", PRICE),
                                  transfer_event(share_id, "round:1", holding, 1)};
        coffer_result results[2];
        if (coffer_submit(self->db, events, 2, true, results) != COFFER_OK) {
            self->other++;
        } else if (results[0].code == COFFER_CREATED && results[1].code == COFFER_CREATED) {
            self->created++;
        } else if (results[0].code == COFFER_BATCH_FAILED &&
                   (results[1].code == COFFER_INSUFFICIENT_BALANCE ||
                    results[1].code == COFFER_EXCEEDS_MAX_BALANCE)) {
            self->refused++;
        } else {
            self->other++;
        }
    }
    return NULL;
}

static void test_atomic_purchases_never_oversell(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    lottery_world(db);
    worker workers[BUYERS];
    run_workers(workers, BUYERS, db, buy_shares);
    int bought = 0;
    for (int i = 0; i < BUYERS; i++) {
        char wallet[32], holding[32];
        snprintf(wallet, sizeof(wallet), "wallet:%d", i);
        snprintf(holding, sizeof(holding), "shares:%d", i);
        assert_int_equal(workers[i].other, 0);
        assert_int_equal(workers[i].created + workers[i].refused, BUYS_PER_BUYER);
        assert_int_equal(balance_of(db, holding), workers[i].created);
        assert_int_equal(balance_of(db, wallet), 1000 - PRICE * workers[i].created);
        assert_true(workers[i].created <= SHARES_MAX);
        bought += workers[i].created;
    }
    assert_int_equal(bought, POOL_SHARES);
    assert_int_equal(balance_of(db, "round:1"), 0);
    assert_int_equal(balance_of(db, "house"), PRICE * POOL_SHARES);
    verify_ok(db);
}

/* Story 5: payment confirmation races hold expiry. Hold i expires (i + 1) ms after it was
 * made; two threads post the holds while a third moves the clock 1 ms at a time and pokes the
 * engine so the sweep runs. Each hold resolves exactly once, and a post succeeds exactly for
 * the holds that end captured. */
enum { RACE_HOLDS = 200, RACE_POSTERS = 2, RACE_TICKS = RACE_HOLDS + 50 };

typedef struct race {
    test_ledger *ledger;
    int poster;
    int codes[RACE_HOLDS]; /* posters: the code of each of their posts */
    int failures;          /* ticker: pokes that were not created */
} race;

static void *post_holds(void *argument)
{
    race *self = argument;
    for (int i = self->poster; i < RACE_HOLDS; i += RACE_POSTERS) {
        char id[32], hold_id[32];
        snprintf(id, sizeof(id), "post-%d", i);
        snprintf(hold_id, sizeof(hold_id), "hold-%d", i);
        coffer_event event = post_event(id, hold_id, 0);
        coffer_result result;
        int status = coffer_submit(self->ledger->db, &event, 1, false, &result);
        self->codes[i] = status == COFFER_OK ? result.code : -status;
    }
    return NULL;
}

static void *tick_clock(void *argument)
{
    race *self = argument;
    for (int tick = 0; tick < RACE_TICKS; tick++) {
        char id[32];
        snprintf(id, sizeof(id), "tick-%d", tick);
        clock_advance_ms(self->ledger, 1);
        coffer_event event = transfer_event(id, "bank", "dave", 1);
        coffer_result result;
        int status = coffer_submit(self->ledger->db, &event, 1, false, &result);
        if (status != COFFER_OK || result.code != COFFER_CREATED)
            self->failures++;
    }
    return NULL;
}

static void make_race_holds(coffer *db)
{
    for (int i = 0; i < RACE_HOLDS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "hold-%d", i);
        assert_int_equal(hold(db, id, "shared", "sink", 1, (uint64_t)i + 1).code, COFFER_CREATED);
    }
}

static int check_race_outcome(coffer *db, const race *posters)
{
    int captured = 0;
    for (int i = 0; i < RACE_HOLDS; i++) {
        char hold_id[32];
        snprintf(hold_id, sizeof(hold_id), "hold-%d", i);
        int code = posters[i % RACE_POSTERS].codes[i];
        uint8_t state = transfer_get(db, hold_id).state;
        if (code == COFFER_CREATED) {
            assert_int_equal(state, COFFER_STATE_CAPTURED);
            captured++;
        } else {
            assert_int_equal(code, COFFER_HOLD_EXPIRED);
            assert_int_equal(state, COFFER_STATE_EXPIRED);
        }
    }
    return captured;
}

static void test_post_races_expiry(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    create_account(db, "dave", "KRW");
    make_race_holds(db);
    race posters[RACE_POSTERS], ticker = {.ledger = ledger};
    pthread_t threads[RACE_POSTERS + 1];
    for (int i = 0; i < RACE_POSTERS; i++) {
        posters[i] = (race){.ledger = ledger, .poster = i};
        assert_int_equal(pthread_create(&threads[i], NULL, post_holds, &posters[i]), 0);
    }
    assert_int_equal(pthread_create(&threads[RACE_POSTERS], NULL, tick_clock, &ticker), 0);
    for (int i = 0; i <= RACE_POSTERS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(ticker.failures, 0);
    int captured = check_race_outcome(db, posters);
    coffer_account shared = account_get(db, "shared");
    assert_int_equal(shared.debits_held, 0);
    assert_int_equal(shared.balance, SHARED_BALANCE - captured);
    assert_int_equal(balance_of(db, "sink"), captured);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.holds_expired, (uint64_t)(RACE_HOLDS - captured));
    assert_int_equal(stats.holds_pending, 0);
    verify_ok(db);
}

#define WORLD_TEST(f) cmocka_unit_test_setup_teardown(f, world_setup, ledger_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(test_shared_account_never_overdraws),
        WORLD_TEST(test_concurrent_retries_apply_once),
        WORLD_TEST(test_atomic_purchases_never_oversell),
        WORLD_TEST(test_post_races_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
