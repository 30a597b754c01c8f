/*
 * test_holds.c — holds (pending transfers): reservation, limits, full and partial post, void,
 * resolving exactly once, the expiry boundary and sweep driven by the fake clock,
 * hold_not_found, and coffer_holds_list.
 */
#include "support.h"

#define MINUTE_MS 60000ULL

/* The world: bank (KRW issuer), alice (KRW, 100), bob, dave (KRW), jar (KRW, capped at 50). */
static int world_setup(void **state)
{
    ledger_setup(state);
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    create_account(db, "bob", "KRW");
    create_account(db, "dave", "KRW");
    create_capped(db, "jar", "KRW", 50);
    fund(db, "fund-alice", "bank", "alice", 100);
    return 0;
}

/* The hold most tests start from: alice reserves 30 for bob for a minute. */
static coffer_result hold_thirty(coffer *db)
{
    coffer_result result = hold(db, "h1", "alice", "bob", 30, MINUTE_MS);
    assert_int_equal(result.code, COFFER_CREATED);
    return result;
}

static void assert_held(coffer *db, int64_t alice_held, int64_t bob_held)
{
    coffer_account alice = account_get(db, "alice");
    coffer_account bob = account_get(db, "bob");
    assert_int_equal(alice.debits_held, alice_held);
    assert_int_equal(alice.available, alice.balance - alice_held);
    assert_int_equal(bob.credits_held, bob_held);
    assert_int_equal(bob.available, bob.balance - bob.debits_held);
}

static void test_hold_reserves(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result = hold_thirty(db);
    assert_int_equal(result.state, COFFER_STATE_PENDING);
    assert_int_equal(result.amount, 30);
    assert_int_equal(result.expires_at, result.timestamp + MINUTE_MS * TEST_NS_PER_MS);
    assert_int_equal(result.from.balance, 100);
    assert_int_equal(result.from.available, 70);
    assert_int_equal(result.from.version, 3);
    assert_int_equal(result.to.balance, 0);
    assert_int_equal(result.to.available, 0);
    assert_int_equal(result.to.version, 2);
    assert_held(db, 30, 30);
    assert_int_equal(balance_of(db, "alice"), 100);
    coffer_transfer record = transfer_get(db, "h1");
    assert_int_equal(record.state, COFFER_STATE_PENDING);
    assert_int_equal(record.hold_timeout_ms, MINUTE_MS);
    assert_int_equal(record.expires_at, result.expires_at);
    assert_int_equal(record.amount, 30);
    verify_ok(db);
}

static void test_zero_timeout_is_plain_transfer(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result = hold(db, "t1", "alice", "bob", 30, 0);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.state, COFFER_STATE_POSTED);
    assert_held(db, 0, 0);
    assert_int_equal(balance_of(db, "bob"), 30);
}

static void test_held_counts_against_min(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    coffer_result result = transfer(db, "t1", "alice", "dave", 71);
    assert_int_equal(result.code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(result.available, 70);
    assert_int_equal(hold(db, "h2", "alice", "dave", 71, MINUTE_MS).code,
                     COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(transfer(db, "t2", "alice", "dave", 70).code, COFFER_CREATED);
    assert_int_equal(available_of(db, "alice"), 0);
    assert_int_equal(balance_of(db, "alice"), 30);
}

static void test_held_counts_against_max(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    assert_int_equal(hold(db, "h1", "alice", "jar", 30, MINUTE_MS).code, COFFER_CREATED);
    assert_int_equal(transfer(db, "t1", "alice", "jar", 21).code, COFFER_EXCEEDS_MAX_BALANCE);
    assert_int_equal(hold(db, "h2", "alice", "jar", 21, MINUTE_MS).code,
                     COFFER_EXCEEDS_MAX_BALANCE);
    assert_int_equal(transfer(db, "t2", "alice", "jar", 20).code, COFFER_CREATED);
    assert_int_equal(balance_of(db, "jar"), 20);
    assert_int_equal(account_get(db, "jar").credits_held, 30);
}

/* Up-to room is what the limits leave after held amounts: available for `from`, and
 * balance plus credits_held for a capped `to`. */
static void test_up_to_leaves_held_amounts(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    assert_int_equal(hold(db, "h2", "alice", "jar", 30, MINUTE_MS).code, COFFER_CREATED);
    coffer_event to_jar = transfer_event("t1", "alice", "jar", 100);
    to_jar.flags = COFFER_FLAG_UP_TO;
    assert_int_equal(submit_event(db, to_jar).amount, 20);
    coffer_event to_dave = transfer_event("t2", "alice", "dave", 100);
    to_dave.flags = COFFER_FLAG_UP_TO;
    assert_int_equal(submit_event(db, to_dave).amount, 20);
    assert_int_equal(available_of(db, "alice"), 0);
    assert_int_equal(balance_of(db, "alice"), 60);
}

static void test_full_post(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result original = hold_thirty(db);
    coffer_result result = post_hold(db, "p1", "h1", 0);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.amount, 30);
    assert_int_equal(result.from.balance, 70);
    assert_int_equal(result.from.available, 70);
    assert_int_equal(result.from.version, 4);
    assert_int_equal(result.to.balance, 30);
    assert_int_equal(result.to.version, 3);
    assert_held(db, 0, 0);
    coffer_transfer held = transfer_get(db, "h1");
    assert_int_equal(held.state, COFFER_STATE_CAPTURED);
    assert_int_equal(held.captured, 30);
    coffer_result replay = hold(db, "h1", "alice", "bob", 30, MINUTE_MS);
    assert_int_equal(replay.code, COFFER_EXISTS);
    assert_true(replay.replayed);
    assert_int_equal(replay.state, COFFER_STATE_PENDING); /* as originally reported */
    assert_int_equal(replay.expires_at, original.expires_at);
    assert_int_equal(replay.amount, 30);
    coffer_transfer post = transfer_get(db, "p1");
    assert_int_equal(post.op, COFFER_OP_POST);
    assert_int_equal(post.code, COFFER_CREATED);
    assert_string_equal(post.hold_id, "h1");
    assert_int_equal(post.amount, 30);
    verify_ok(db);
}

static void test_full_post_with_explicit_amount(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    assert_int_equal(post_hold(db, "p1", "h1", 30).amount, 30);
    assert_int_equal(balance_of(db, "bob"), 30);
    assert_held(db, 0, 0);
}

static void test_partial_post_releases_rest(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    coffer_result result = post_hold(db, "p1", "h1", 10);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.amount, 10);
    assert_held(db, 0, 0);
    assert_int_equal(balance_of(db, "alice"), 90);
    assert_int_equal(available_of(db, "alice"), 90);
    assert_int_equal(balance_of(db, "bob"), 10);
    assert_int_equal(version_of(db, "alice"), 4);
    assert_int_equal(version_of(db, "bob"), 3);
    coffer_transfer held = transfer_get(db, "h1");
    assert_int_equal(held.state, COFFER_STATE_CAPTURED);
    assert_int_equal(held.captured, 10);
    verify_ok(db);
}

/* Submits a post/void that must be refused with `code`, leaving the hold as it was. */
static void expect_resolve_refused(coffer *db, coffer_event event, int code)
{
    coffer_account alice = account_get(db, "alice");
    coffer_account bob = account_get(db, "bob");
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, code);
    assert_false(result.replayed);
    coffer_account alice_after = account_get(db, "alice");
    coffer_account bob_after = account_get(db, "bob");
    assert_account_unchanged(&alice, &alice_after);
    assert_account_unchanged(&bob, &bob_after);
    assert_recorded(db, event.id, code);
}

static void test_post_more_than_hold(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    expect_resolve_refused(db, post_event("p1", "h1", 31), COFFER_HOLD_AMOUNT_EXCEEDED);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_PENDING);
    assert_held(db, 30, 30);
}

/* A hold counts against credits_held, so it fits; capturing it would take the receiver's
 * credits_posted past INT64_MAX: the post is overflow and the hold stays pending. */
static void test_post_overflow(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "mint", "KRW");
    fund(db, "big", "mint", "bob", INT64_MAX - 5);
    assert_int_equal(hold(db, "h1", "alice", "bob", 10, MINUTE_MS).code, COFFER_CREATED);
    coffer_account alice = account_get(db, "alice");
    coffer_result result = post_hold(db, "p1", "h1", 0);
    assert_int_equal(result.code, COFFER_OVERFLOW);
    assert_recorded(db, "p1", COFFER_OVERFLOW);
    coffer_account alice_after = account_get(db, "alice");
    assert_account_unchanged(&alice, &alice_after);
    assert_int_equal(balance_of(db, "bob"), INT64_MAX - 5);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_PENDING);
    assert_int_equal(post_hold(db, "p2", "h1", 5).code, COFFER_CREATED);
    assert_int_equal(balance_of(db, "bob"), INT64_MAX);
}

static void test_void_releases(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    coffer_result result = void_hold(db, "v1", "h1");
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.from.available, 100);
    assert_int_equal(result.from.version, 4);
    assert_int_equal(result.to.version, 3);
    assert_held(db, 0, 0);
    assert_int_equal(balance_of(db, "alice"), 100);
    assert_int_equal(balance_of(db, "bob"), 0);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_VOIDED);
    assert_int_equal(transfer_get(db, "v1").op, COFFER_OP_VOID);
    verify_ok(db);
}

static void test_resolves_only_once(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    hold_thirty(db);
    assert_int_equal(void_hold(db, "v1", "h1").code, COFFER_CREATED);
    expect_resolve_refused(db, post_event("p1", "h1", 0), COFFER_HOLD_ALREADY_VOIDED);
    expect_resolve_refused(db, void_event("v2", "h1"), COFFER_HOLD_ALREADY_VOIDED);
    assert_int_equal(hold(db, "h2", "alice", "bob", 20, MINUTE_MS).code, COFFER_CREATED);
    assert_int_equal(post_hold(db, "p2", "h2", 5).code, COFFER_CREATED);
    expect_resolve_refused(db, void_event("v3", "h2"), COFFER_HOLD_ALREADY_POSTED);
    expect_resolve_refused(db, post_event("p3", "h2", 0), COFFER_HOLD_ALREADY_POSTED);
    assert_int_equal(balance_of(db, "bob"), 5);
}

/* One millisecond-hold whose expires_at the test then steers the clock around. */
static coffer_result short_hold(test_ledger *ledger)
{
    coffer_result result = hold(ledger->db, "h1", "alice", "bob", 30, 1);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.expires_at, result.timestamp + TEST_NS_PER_MS);
    return result;
}

static void test_post_just_before_expiry(void **state)
{
    test_ledger *ledger = *state;
    coffer_result held = short_hold(ledger);
    clock_set(ledger, held.expires_at - 1);
    coffer_result result = post_hold(ledger->db, "p1", "h1", 0);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.timestamp, held.expires_at - 1);
    assert_int_equal(balance_of(ledger->db, "bob"), 30);
}

/* The post lands at exactly expires_at inside a batch that started before it: the sweep has
 * not run, the hold is still pending, and the post is still hold_expired. */
static void test_post_at_expires_at(void **state)
{
    test_ledger *ledger = *state;
    coffer_result held = short_hold(ledger);
    clock_set(ledger, held.expires_at - 1);
    coffer_event events[2] = {transfer_event("filler", "bank", "dave", 1),
                              post_event("p1", "h1", 0)};
    coffer_result results[2];
    submit_batch(ledger->db, events, 2, false, results);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[0].timestamp, held.expires_at - 1);
    assert_int_equal(results[1].code, COFFER_HOLD_EXPIRED);
    assert_int_equal(results[1].timestamp, held.expires_at);
    assert_recorded(ledger->db, "p1", COFFER_HOLD_EXPIRED);
    assert_int_equal(transfer_get(ledger->db, "h1").state, COFFER_STATE_PENDING);
    assert_held(ledger->db, 30, 30);
}

static void test_post_after_expiry(void **state)
{
    test_ledger *ledger = *state;
    coffer_result held = short_hold(ledger);
    clock_set(ledger, held.expires_at + 5 * TEST_NS_PER_MS);
    coffer_result result = post_hold(ledger->db, "p1", "h1", 0);
    assert_int_equal(result.code, COFFER_HOLD_EXPIRED);
    assert_int_equal(transfer_get(ledger->db, "h1").state, COFFER_STATE_EXPIRED);
    assert_int_equal(void_hold(ledger->db, "v1", "h1").code, COFFER_HOLD_EXPIRED);
    coffer_result again = post_hold(ledger->db, "p1", "h1", 0);
    assert_int_equal(again.code, COFFER_HOLD_EXPIRED);
    assert_true(again.replayed);
    assert_int_equal(again.seq, result.seq);
    assert_held(ledger->db, 0, 0);
    assert_int_equal(balance_of(ledger->db, "bob"), 0);
    assert_int_equal(balance_of(ledger->db, "alice"), 100);
}

static void test_expiry_sweep(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    coffer_result held = hold(db, "h1", "alice", "bob", 30, 1000);
    clock_advance_ms(ledger, 999);
    assert_int_equal(transfer(db, "t1", "bank", "dave", 1).code, COFFER_CREATED);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_PENDING);
    clock_set(ledger, held.expires_at + 1);
    coffer_result poke = transfer(db, "t2", "bank", "dave", 1);
    assert_int_equal(poke.code, COFFER_CREATED);
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_EXPIRED);
    assert_held(db, 0, 0);
    assert_int_equal(available_of(db, "alice"), 100);
    assert_int_equal(version_of(db, "alice"), 4);
    assert_int_equal(version_of(db, "bob"), 3);
    coffer_history_entry entry = history_last(db, "alice");
    assert_int_equal(entry.kind, COFFER_HISTORY_EXPIRED);
    assert_string_equal(entry.transfer_id, "h1");
    assert_int_equal(entry.delta, 30);
    assert_int_equal(entry.balance, 100);
    assert_int_equal(entry.available, 100);
    assert_int_equal(entry.version, 4);
    assert_int_equal(entry.seq, poke.seq - 1); /* the expire event leads the batch */
    entry = history_last(db, "bob");
    assert_int_equal(entry.kind, COFFER_HISTORY_EXPIRED);
    assert_int_equal(entry.delta, -30);
    verify_ok(db);
}

/* The sweep takes every hold with expires_at <= ts0, so a batch at exactly expires_at
 * expires it. */
static void test_sweep_at_exactly_expires_at(void **state)
{
    test_ledger *ledger = *state;
    coffer_result held = short_hold(ledger);
    clock_set(ledger, held.expires_at);
    coffer_result poke = transfer(ledger->db, "t1", "bank", "dave", 1);
    assert_int_equal(poke.timestamp, held.expires_at + 1);
    assert_int_equal(transfer_get(ledger->db, "h1").state, COFFER_STATE_EXPIRED);
    coffer_history_entry entry = history_last(ledger->db, "alice");
    assert_int_equal(entry.kind, COFFER_HISTORY_EXPIRED);
    assert_int_equal(entry.timestamp, held.expires_at);
    assert_held(ledger->db, 0, 0);
}

/* Two holds due at the same instant expire older first (not by id). */
static void test_sweep_ties_older_first(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    uint64_t start = ledger->clock_ns + 1000;
    clock_set(ledger, start);
    coffer_result older = hold(db, "zz-older", "alice", "bob", 10, 2000);
    clock_set(ledger, start + 1000 * TEST_NS_PER_MS);
    coffer_result newer = hold(db, "aa-newer", "alice", "dave", 10, 1000);
    assert_int_equal(older.expires_at, newer.expires_at);
    clock_set(ledger, older.expires_at);
    coffer_result poke = transfer(db, "t1", "bank", "jar", 1);
    coffer_history_entry first = history_last(db, "bob");
    coffer_history_entry second = history_last(db, "dave");
    assert_string_equal(first.transfer_id, "zz-older");
    assert_int_equal(first.seq, poke.seq - 2);
    assert_string_equal(second.transfer_id, "aa-newer");
    assert_int_equal(second.seq, poke.seq - 1);
}

static void test_sweep_soonest_first(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    assert_int_equal(hold(db, "late", "alice", "bob", 10, 3000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "early", "alice", "dave", 10, 2000).code, COFFER_CREATED);
    clock_advance_ms(ledger, 10000);
    coffer_result poke = transfer(db, "t1", "bank", "bob", 1);
    coffer_history_entry early = history_last(db, "dave");
    assert_string_equal(early.transfer_id, "early");
    assert_int_equal(early.kind, COFFER_HISTORY_EXPIRED);
    assert_int_equal(early.seq, poke.seq - 2);
    coffer_history_entry alice_last = history_last(db, "alice");
    assert_string_equal(alice_last.transfer_id, "late");
    assert_int_equal(alice_last.seq, poke.seq - 1);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.holds_expired, 2);
    assert_int_equal(stats.holds_pending, 0);
}

/* More holds fall due at once than any internal chunk size: the sweep still expires every
 * one of them before the batch's own events, so their funds are free for those events. */
enum { MANY_HOLDS = 3000 };

static void test_sweep_expires_every_due_hold(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    fund(db, "fund-many", "bank", "alice", MANY_HOLDS - 100);
    char(*ids)[16] = calloc(MANY_HOLDS, sizeof(*ids));
    coffer_event *events = calloc(MANY_HOLDS, sizeof(*events));
    coffer_result *results = calloc(MANY_HOLDS, sizeof(*results));
    assert_true(ids != NULL && events != NULL && results != NULL);
    for (size_t i = 0; i < MANY_HOLDS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "m%u", (unsigned)i);
        events[i] = hold_event(ids[i], "alice", "bob", 1, 1000);
    }
    submit_batch(db, events, MANY_HOLDS, true, results);
    assert_int_equal(results[MANY_HOLDS - 1].code, COFFER_CREATED);
    assert_int_equal(available_of(db, "alice"), 0);
    clock_advance_ms(ledger, 2000);
    coffer_result spend = transfer(db, "spend-all", "alice", "dave", MANY_HOLDS);
    assert_int_equal(spend.code, COFFER_CREATED);
    assert_int_equal(transfer_get(db, "m2999").state, COFFER_STATE_EXPIRED);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_int_equal(stats.holds_expired, MANY_HOLDS);
    assert_int_equal(stats.holds_pending, 0);
    assert_int_equal(spend.seq, results[MANY_HOLDS - 1].seq + MANY_HOLDS + 1);
    free(ids);
    free(events);
    free(results);
}

static void test_hold_not_found(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    expect_resolve_refused(db, post_event("p1", "nope", 0), COFFER_HOLD_NOT_FOUND);
    expect_resolve_refused(db, void_event("v1", "nope"), COFFER_HOLD_NOT_FOUND);
    /* A plain transfer is not a hold. */
    expect_resolve_refused(db, post_event("p2", "fund-alice", 0), COFFER_HOLD_NOT_FOUND);
    /* A rejected hold never reserved anything. */
    assert_int_equal(hold(db, "h-big", "alice", "bob", 1000, MINUTE_MS).code,
                     COFFER_INSUFFICIENT_BALANCE);
    expect_resolve_refused(db, post_event("p3", "h-big", 0), COFFER_HOLD_NOT_FOUND);
    expect_resolve_refused(db, void_event("v3", "h-big"), COFFER_HOLD_NOT_FOUND);
}

static void assert_listed(const coffer_transfer *holds, size_t count, const char *const *ids)
{
    for (size_t i = 0; i < count; i++) {
        assert_string_equal(holds[i].id, ids[i]);
        assert_int_equal(holds[i].state, COFFER_STATE_PENDING);
        if (i > 0)
            assert_true(holds[i - 1].expires_at <= holds[i].expires_at);
    }
}

static void test_holds_list_soonest_first(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    assert_int_equal(hold(db, "h5", "alice", "bob", 5, 5000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h1", "alice", "bob", 1, 1000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h3", "alice", "bob", 3, 3000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h9", "alice", "bob", 9, 9000).code, COFFER_CREATED);
    assert_int_equal(void_hold(db, "v9", "h9").code, COFFER_CREATED);
    coffer_transfer holds[8];
    size_t count = 99;
    assert_int_equal(coffer_holds_list(db, NULL, 8, holds, &count), COFFER_OK);
    assert_int_equal(count, 3);
    assert_listed(holds, count, (const char *const[]){"h1", "h3", "h5"});
    assert_int_equal(holds[0].amount, 1);
    assert_int_equal(coffer_holds_list(db, NULL, 2, holds, &count), COFFER_OK);
    assert_int_equal(count, 2);
    assert_listed(holds, count, (const char *const[]){"h1", "h3"});
}

static void test_holds_list_by_account(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    fund(db, "fund-dave", "bank", "dave", 50);
    assert_int_equal(hold(db, "a1", "alice", "bob", 1, 4000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "d1", "dave", "jar", 1, 2000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "a2", "bob", "alice", 1, 1000).code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(hold(db, "a3", "alice", "dave", 1, 3000).code, COFFER_CREATED);
    coffer_transfer holds[8];
    size_t count = 0;
    assert_int_equal(coffer_holds_list(db, "alice", 8, holds, &count), COFFER_OK);
    assert_int_equal(count, 2);
    assert_listed(holds, count, (const char *const[]){"a3", "a1"});
    assert_int_equal(coffer_holds_list(db, "dave", 8, holds, &count), COFFER_OK);
    assert_int_equal(count, 2);
    assert_listed(holds, count, (const char *const[]){"d1", "a3"});
    assert_int_equal(coffer_holds_list(db, "jar", 8, holds, &count), COFFER_OK);
    assert_int_equal(count, 1);
    assert_int_equal(coffer_holds_list(db, "bank", 8, holds, &count), COFFER_OK);
    assert_int_equal(count, 0);
}

#define WORLD_TEST(f) cmocka_unit_test_setup_teardown(f, world_setup, ledger_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(test_hold_reserves),
        WORLD_TEST(test_zero_timeout_is_plain_transfer),
        WORLD_TEST(test_held_counts_against_min),
        WORLD_TEST(test_held_counts_against_max),
        WORLD_TEST(test_up_to_leaves_held_amounts),
        WORLD_TEST(test_full_post),
        WORLD_TEST(test_full_post_with_explicit_amount),
        WORLD_TEST(test_partial_post_releases_rest),
        WORLD_TEST(test_post_more_than_hold),
        WORLD_TEST(test_post_overflow),
        WORLD_TEST(test_void_releases),
        WORLD_TEST(test_resolves_only_once),
        WORLD_TEST(test_post_just_before_expiry),
        WORLD_TEST(test_post_at_expires_at),
        WORLD_TEST(test_post_after_expiry),
        WORLD_TEST(test_expiry_sweep),
        WORLD_TEST(test_sweep_at_exactly_expires_at),
        WORLD_TEST(test_sweep_ties_older_first),
        WORLD_TEST(test_sweep_soonest_first),
        WORLD_TEST(test_sweep_expires_every_due_hold),
        WORLD_TEST(test_hold_not_found),
        WORLD_TEST(test_holds_list_soonest_first),
        WORLD_TEST(test_holds_list_by_account),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
