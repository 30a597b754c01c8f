/*
 * test_batches.c — batches: atomic all-or-none, later events seeing earlier ones, whole-batch
 * replay and id_reused, duplicate ids, non-atomic independence, the daily reset pattern,
 * pay-and-confirm, the size limits, and how seq and timestamp slots are handed out.
 */
#include "support.h"

#define MINUTE_MS 60000ULL

/* The world: bank (KRW issuer), alice (KRW, 100), bob (KRW). */
static int world_setup(void **state)
{
    ledger_setup(state);
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    create_account(db, "bob", "KRW");
    fund(db, "fund-alice", "bank", "alice", 100);
    return 0;
}

static coffer_event *many_transfers(size_t count, char (*ids)[16]);

static size_t count_code(const coffer_result *results, size_t count, int code)
{
    size_t found = 0;
    for (size_t i = 0; i < count; i++)
        found += results[i].code == code;
    return found;
}

/* The one failing event has its own code, the rest batch_failed, every id recorded. */
static void test_atomic_all_or_none(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_account alice = account_get(db, "alice");
    coffer_account bob = account_get(db, "bob");
    coffer_event events[3] = {transfer_event("t1", "alice", "bob", 10),
                              transfer_event("t2", "alice", "bob", 200),
                              transfer_event("t3", "alice", "bob", 5)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(results[1].available, 90);
    assert_int_equal(results[2].code, COFFER_BATCH_FAILED);
    coffer_account alice_after = account_get(db, "alice");
    coffer_account bob_after = account_get(db, "bob");
    assert_account_unchanged(&alice, &alice_after);
    assert_account_unchanged(&bob, &bob_after);
    assert_recorded(db, "t1", COFFER_BATCH_FAILED);
    assert_recorded(db, "t2", COFFER_INSUFFICIENT_BALANCE);
    assert_recorded(db, "t3", COFFER_BATCH_FAILED);
    verify_ok(db);
}

static void test_atomic_sees_earlier_events(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[3] = {account_event("newbie", "KRW"),
                              transfer_event("grant", "bank", "newbie", 50),
                              transfer_event("spend", "newbie", "bob", 30)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(results[i].code, COFFER_CREATED);
    assert_int_equal(results[1].to.balance, 50);
    assert_int_equal(results[2].from.balance, 20);
    assert_int_equal(results[2].from.version, 3);
    assert_int_equal(results[1].seq + 1, results[2].seq);
    assert_int_equal(balance_of(db, "newbie"), 20);
    assert_int_equal(balance_of(db, "bob"), 30);
}

/* An account created inside a failed atomic batch is undone and, like every account
 * rejection, not recorded: the same id can be created later. */
static void test_atomic_failure_undoes_account(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[3] = {account_event("newbie", "KRW"),
                              transfer_event("grant", "bank", "newbie", 10),
                              transfer_event("spend", "newbie", "bob", 30)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[2].code, COFFER_INSUFFICIENT_BALANCE);
    coffer_account account;
    assert_int_equal(coffer_account_get(db, "newbie", COFFER_AT_NOW, 0, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
    assert_int_equal(balance_of(db, "bank"), -100);
    create_account(db, "newbie", "KRW");
}

static void test_atomic_replay(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[2] = {transfer_event("t1", "alice", "bob", 10),
                              transfer_event("t2", "bob", "alice", 4)};
    coffer_result first[2], again[2];
    submit_batch(db, events, 2, true, first);
    submit_batch(db, events, 2, true, again);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(first[i].code, COFFER_CREATED);
        assert_int_equal(again[i].code, COFFER_EXISTS);
        assert_true(again[i].replayed);
        assert_int_equal(again[i].seq, first[i].seq);
        assert_int_equal(again[i].amount, first[i].amount);
    }
    assert_int_equal(balance_of(db, "alice"), 94);
    assert_int_equal(balance_of(db, "bob"), 6);
}

static void test_atomic_replay_of_failure(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[2] = {transfer_event("t1", "alice", "bob", 10),
                              transfer_event("t2", "alice", "bob", 1000)};
    coffer_result first[2], again[2];
    submit_batch(db, events, 2, true, first);
    fund(db, "top-up", "bank", "alice", 5000);
    submit_batch(db, events, 2, true, again);
    assert_int_equal(again[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(again[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_true(again[0].replayed && again[1].replayed);
    assert_int_equal(again[1].seq, first[1].seq);
    assert_int_equal(balance_of(db, "bob"), 0);
}

/* Some ids old, some new: id_reused on the first existing one, batch_failed on the rest,
 * nothing applied and the new ids not recorded. The existing one matches its record, so no
 * field of it is wrong: the result names none (the mix is the problem). */
static void test_atomic_mix_of_old_and_new(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    fund(db, "t1", "alice", "bob", 10);
    coffer_event events[3] = {transfer_event("t2", "alice", "bob", 10),
                              transfer_event("t1", "alice", "bob", 10),
                              transfer_event("t3", "alice", "bob", 10)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_ID_REUSED);
    assert_null(results[1].field);
    assert_int_equal(results[1].seq, 0);
    assert_int_equal(results[2].code, COFFER_BATCH_FAILED);
    assert_not_recorded(db, "t2");
    assert_not_recorded(db, "t3");
    assert_int_equal(balance_of(db, "bob"), 10);
    assert_recorded(db, "t1", COFFER_CREATED);
}

/* In a mix, an existing id that also differs names its first differing field. */
static void test_atomic_mix_with_changed_old_id(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    fund(db, "t1", "alice", "bob", 10);
    coffer_event events[2] = {transfer_event("t2", "alice", "bob", 10),
                              transfer_event("t1", "alice", "bob", 12)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_ID_REUSED);
    assert_field(results[1].field, "/amount");
    assert_not_recorded(db, "t2");
}

static void test_atomic_old_id_with_new_content(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    fund(db, "t1", "alice", "bob", 10);
    fund(db, "t2", "alice", "bob", 10);
    coffer_event events[2] = {transfer_event("t1", "alice", "bob", 10),
                              transfer_event("t2", "alice", "bob", 11)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_ID_REUSED);
    assert_field(results[1].field, "/amount");
    assert_int_equal(balance_of(db, "bob"), 20);
}

static void test_atomic_duplicate_id(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[3] = {transfer_event("dup", "alice", "bob", 1),
                              transfer_event("other", "alice", "bob", 2),
                              transfer_event("dup", "alice", "bob", 1)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    assert_int_equal(count_code(results, 3, COFFER_INVALID_FIELD), 1);
    assert_int_equal(count_code(results, 3, COFFER_BATCH_FAILED), 2);
    for (size_t i = 0; i < 3; i++) {
        if (results[i].code == COFFER_INVALID_FIELD)
            assert_field(results[i].field, "/id");
        assert_int_equal(results[i].seq, 0);
    }
    assert_not_recorded(db, "dup");
    assert_not_recorded(db, "other");
    assert_int_equal(balance_of(db, "bob"), 0);
}

/* The same rule in a batch large enough that the engine may track ids differently. */
static void test_atomic_duplicate_id_in_large_batch(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    enum { count = 200 };
    char ids[count][16];
    coffer_event *events = many_transfers(count, ids);
    events[count - 1].id = "b7";
    coffer_result results[count];
    submit_batch(db, events, count, true, results);
    assert_int_equal(count_code(results, count, COFFER_INVALID_FIELD), 1);
    assert_int_equal(count_code(results, count, COFFER_BATCH_FAILED), count - 1);
    assert_not_recorded(db, "b7");
    assert_not_recorded(db, "b0");
    assert_int_equal(balance_of(db, "bob"), 0);
    free(events);
}

static void test_atomic_invalid_event_records_nothing(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[2] = {transfer_event("t1", "alice", "bob", 1),
                              transfer_event("t2", "alice", "bob", 0)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_INVALID_FIELD);
    assert_field(results[1].field, "/amount");
    assert_not_recorded(db, "t1");
    assert_not_recorded(db, "t2");
    assert_int_equal(balance_of(db, "bob"), 0);
}

static void test_non_atomic_is_independent(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[4] = {
        transfer_event("t1", "alice", "bob", 60), transfer_event("t2", "alice", "bob", 60),
        transfer_event("t3", "alice", "bob", 40), transfer_event("t4", "alice", "bob", 0)};
    coffer_result results[4];
    submit_batch(db, events, 4, false, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(results[1].available, 40);
    assert_int_equal(results[2].code, COFFER_CREATED);
    assert_int_equal(results[3].code, COFFER_INVALID_FIELD);
    assert_int_equal(balance_of(db, "alice"), 0);
    /* In a non-atomic batch a repeated id is a retry of the earlier event. */
    coffer_event twice[2] = {transfer_event("t5", "bob", "alice", 7),
                             transfer_event("t5", "bob", "alice", 7)};
    submit_batch(db, twice, 2, false, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_EXISTS);
    assert_true(results[1].replayed);
    assert_int_equal(results[1].seq, results[0].seq);
    assert_int_equal(balance_of(db, "alice"), 7);
    assert_int_equal(balance_of(db, "bob"), 93);
    assert_recorded(db, "t2", COFFER_INSUFFICIENT_BALANCE);
}

/* Story 3's reset: sweep the free entries back to the issuer (up to), then grant n. */
static void daily_reset(coffer *db, int day, int64_t n, int64_t expect_swept)
{
    char sweep_id[32], grant_id[32];
    snprintf(sweep_id, sizeof(sweep_id), "reset:%d:sweep", day);
    snprintf(grant_id, sizeof(grant_id), "reset:%d:grant", day);
    coffer_event events[2] = {transfer_event(sweep_id, "free:u1", "entries", INT64_MAX),
                              transfer_event(grant_id, "entries", "free:u1", n)};
    events[0].flags = COFFER_FLAG_UP_TO;
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[0].amount, expect_swept);
    assert_int_equal(results[1].code, COFFER_CREATED);
    assert_int_equal(balance_of(db, "free:u1"), n);
}

static void test_daily_reset(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "entries", "ENTRY");
    create_account(db, "free:u1", "ENTRY");
    daily_reset(db, 1, 5, 0);
    fund(db, "play-1", "free:u1", "entries", 3);
    daily_reset(db, 2, 5, 2);
    daily_reset(db, 3, 5, 5);
    fund(db, "bonus", "entries", "free:u1", 7);
    daily_reset(db, 4, 5, 12);
    assert_int_equal(balance_of(db, "entries"), -5);
    verify_ok(db);
}

/* Concert seats: the seat is held, then "pay and confirm" is one atomic batch. */
static void seat_world(coffer *db)
{
    create_issuer(db, "venue", "SEAT");
    create_account(db, "seat:C1:A12", "SEAT");
    create_account(db, "seats:alice", "SEAT");
    fund(db, "stock", "venue", "seat:C1:A12", 1);
    coffer_result held = hold(db, "seat-hold", "seat:C1:A12", "seats:alice", 1, 5 * MINUTE_MS);
    assert_int_equal(held.code, COFFER_CREATED);
}

static void test_post_and_pay_atomic(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    seat_world(db);
    coffer_event events[2] = {transfer_event("pay", "alice", "bob", 40),
                              post_event("confirm", "seat-hold", 0)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_CREATED);
    assert_int_equal(balance_of(db, "alice"), 60);
    assert_int_equal(balance_of(db, "seats:alice"), 1);
    assert_int_equal(balance_of(db, "seat:C1:A12"), 0);
    assert_int_equal(transfer_get(db, "seat-hold").state, COFFER_STATE_CAPTURED);
}

static void test_post_and_pay_atomic_fails_together(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    seat_world(db);
    coffer_event events[2] = {post_event("confirm", "seat-hold", 0),
                              transfer_event("pay", "alice", "bob", 400)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(transfer_get(db, "seat-hold").state, COFFER_STATE_PENDING);
    assert_int_equal(account_get(db, "seat:C1:A12").debits_held, 1);
    assert_int_equal(balance_of(db, "seats:alice"), 0);
    assert_int_equal(balance_of(db, "alice"), 100);
}

/* A hold created earlier in an atomic batch can be posted later in it. */
static void test_atomic_hold_then_post(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event events[2] = {hold_event("h1", "alice", "bob", 30, MINUTE_MS),
                              post_event("p1", "h1", 10)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_CREATED);
    assert_int_equal(results[1].amount, 10);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_CAPTURED);
    assert_int_equal(balance_of(db, "alice"), 90);
    assert_int_equal(available_of(db, "alice"), 90);
    assert_int_equal(account_get(db, "bob").credits_held, 0);
    verify_ok(db);
}

/* A hold undone with its failed batch reserves nothing, is not listed and never expires. */
static void test_atomic_failure_undoes_hold(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    coffer_event events[2] = {hold_event("h1", "alice", "bob", 30, 1000),
                              transfer_event("t1", "alice", "bob", 71)};
    coffer_result results[2];
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(results[1].available, 70);
    assert_int_equal(account_get(db, "alice").debits_held, 0);
    assert_int_equal(account_get(db, "bob").credits_held, 0);
    coffer_transfer holds[2];
    size_t count = 9;
    assert_int_equal(coffer_holds_list(db, NULL, 2, holds, &count), COFFER_OK);
    assert_int_equal(count, 0);
    clock_advance_ms(ledger, 5000);
    fund(db, "poke", "bank", "bob", 1);
    assert_recorded(db, "h1", COFFER_BATCH_FAILED);
    assert_int_equal(post_hold(db, "p1", "h1", 0).code, COFFER_HOLD_NOT_FOUND);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.holds_expired, 0);
    verify_ok(db);
}

/* An atomic batch that does not fit the remaining capacity records nothing at all. */
static void test_atomic_capacity_exceeded(void **state)
{
    (void)state;
    test_ledger *ledger = ledger_open_sized(0, 3);
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "bob", "KRW");
    fund(db, "t1", "bank", "bob", 1);
    coffer_event events[3] = {transfer_event("t2", "bank", "bob", 1),
                              transfer_event("t3", "bank", "bob", 1),
                              transfer_event("t4", "bank", "bob", 1)};
    coffer_result results[3];
    submit_batch(db, events, 3, true, results);
    assert_int_equal(count_code(results, 3, COFFER_CAPACITY_EXCEEDED), 1);
    assert_int_equal(count_code(results, 3, COFFER_BATCH_FAILED), 2);
    assert_not_recorded(db, "t2");
    assert_not_recorded(db, "t4");
    assert_int_equal(balance_of(db, "bob"), 1);
    submit_batch(db, events, 2, true, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_CREATED);
    ledger_close(ledger);
}

/* `count` transfers of 1 from bank to bob with ids b<i>. */
static coffer_event *many_transfers(size_t count, char (*ids)[16])
{
    coffer_event *events = calloc(count, sizeof(*events));
    assert_non_null(events);
    for (size_t i = 0; i < count; i++) {
        snprintf(ids[i], sizeof(ids[i]), "b%u", (unsigned)(i % 100000000u));
        events[i] = transfer_event(ids[i], "bank", "bob", 1);
    }
    return events;
}

static void test_batch_limits(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    size_t count = COFFER_BATCH_EVENTS_MAX + 1;
    char(*ids)[16] = calloc(count, sizeof(*ids));
    coffer_result *results = calloc(count, sizeof(*results));
    assert_non_null(ids);
    assert_non_null(results);
    coffer_event *events = many_transfers(count, ids);
    assert_int_equal(coffer_submit(db, events, count, true, results), COFFER_BATCH_TOO_LARGE);
    assert_int_equal(coffer_submit(db, events, count, false, results), COFFER_BATCH_TOO_LARGE);
    assert_not_recorded(db, "b0");
    assert_int_equal(coffer_submit(db, events, 0, false, results), COFFER_INVALID_ARGUMENT);
    assert_int_equal(balance_of(db, "bob"), 0);
    submit_batch(db, events, COFFER_BATCH_EVENTS_MAX, true, results);
    for (size_t i = 0; i < COFFER_BATCH_EVENTS_MAX; i++) {
        if (results[i].code != COFFER_CREATED)
            fail_msg("event %zu: %d", i, results[i].code);
    }
    assert_int_equal(balance_of(db, "bob"), COFFER_BATCH_EVENTS_MAX);
    free(events);
    free(results);
    free(ids);
}

/* Event i of a batch gets seq0 + i and ts0 + i, even when it records nothing; ts0 is
 * max(clock, last timestamp + 1), so time never goes back. */
static void test_seq_and_timestamp_slots(void **state)
{
    test_ledger *ledger = ledger_open();
    (void)state;
    const uint64_t start = TEST_CLOCK_START_NS;
    coffer_result first = submit_event(ledger->db, account_event("a", "KRW"));
    assert_int_equal(first.seq, 1);
    assert_int_equal(first.timestamp, start);
    coffer_event events[3] = {account_event("b", "KRW"), account_event("", "KRW"),
                              account_event("c", "KRW")};
    coffer_result results[3];
    submit_batch(ledger->db, events, 3, false, results);
    assert_int_equal(results[0].seq, 2);
    assert_int_equal(results[0].timestamp, start + 1);
    assert_int_equal(results[1].seq, 0);
    assert_int_equal(results[2].seq, 4);
    assert_int_equal(results[2].timestamp, start + 3);
    clock_set(ledger, start - 1000000);
    coffer_result back = submit_event(ledger->db, account_event("d", "KRW"));
    assert_int_equal(back.seq, 5);
    assert_int_equal(back.timestamp, start + 4);
    /* A refused atomic batch and a replay still use their slots (seq 6-8). */
    submit_batch(ledger->db, events, 3, true, results);
    assert_int_equal(submit_event(ledger->db, account_event("d", "KRW")).code, COFFER_EXISTS);
    clock_set(ledger, start + 1000000000);
    coffer_result later = submit_event(ledger->db, account_event("e", "KRW"));
    assert_int_equal(later.seq, 10);
    assert_int_equal(later.timestamp, start + 1000000000);
    ledger_close(ledger);
}

#define WORLD_TEST(f) cmocka_unit_test_setup_teardown(f, world_setup, ledger_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(test_atomic_all_or_none),
        WORLD_TEST(test_atomic_sees_earlier_events),
        WORLD_TEST(test_atomic_failure_undoes_account),
        WORLD_TEST(test_atomic_replay),
        WORLD_TEST(test_atomic_replay_of_failure),
        WORLD_TEST(test_atomic_mix_of_old_and_new),
        WORLD_TEST(test_atomic_mix_with_changed_old_id),
        WORLD_TEST(test_atomic_old_id_with_new_content),
        WORLD_TEST(test_atomic_duplicate_id),
        WORLD_TEST(test_atomic_duplicate_id_in_large_batch),
        WORLD_TEST(test_atomic_invalid_event_records_nothing),
        WORLD_TEST(test_non_atomic_is_independent),
        WORLD_TEST(test_daily_reset),
        WORLD_TEST(test_post_and_pay_atomic),
        WORLD_TEST(test_post_and_pay_atomic_fails_together),
        WORLD_TEST(test_atomic_hold_then_post),
        WORLD_TEST(test_atomic_failure_undoes_hold),
        cmocka_unit_test(test_atomic_capacity_exceeded),
        WORLD_TEST(test_batch_limits),
        cmocka_unit_test(test_seq_and_timestamp_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
