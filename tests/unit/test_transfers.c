/*
 * test_transfers.c — plain transfers through coffer_submit: one test per rejection code, each
 * checking the code, that no balance or version moved, and whether the id was recorded; then
 * up-to, overdraft, replays, id_reused field by field, invalid_field, versions and results.
 */
#include "support.h"

#define MINUTE_MS 60000ULL

/* The world: bank (KRW issuer), alice (KRW, 100), bob and dave (KRW, 0), carol (USD, 0). */
static int world_setup(void **state)
{
    ledger_setup(state);
    coffer *db = ((test_ledger *)*state)->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    create_account(db, "bob", "KRW");
    create_account(db, "dave", "KRW");
    create_account(db, "carol", "USD");
    fund(db, "fund-alice", "bank", "alice", 100);
    return 0;
}

typedef struct world_snapshot {
    coffer_account accounts[5];
} world_snapshot;

static const char *const world_ids[5] = {"bank", "alice", "bob", "dave", "carol"};

static world_snapshot world_read(coffer *db)
{
    world_snapshot snapshot;
    for (size_t i = 0; i < 5; i++)
        snapshot.accounts[i] = account_get(db, world_ids[i]);
    return snapshot;
}

static void assert_world_unchanged(coffer *db, const world_snapshot *before)
{
    world_snapshot now = world_read(db);
    for (size_t i = 0; i < 5; i++)
        assert_account_unchanged(&before->accounts[i], &now.accounts[i]);
}

/* Submits `event`, expects the rejection `code` recorded for its id, and no state change. */
static coffer_result expect_rejected(coffer *db, coffer_event event, int code)
{
    world_snapshot before = world_read(db);
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, code);
    assert_false(result.replayed);
    assert_int_equal(result.state, COFFER_STATE_REJECTED);
    assert_int_equal(result.amount, 0);
    assert_true(result.seq > 0);
    assert_world_unchanged(db, &before);
    assert_recorded(db, event.id, code);
    coffer_transfer record = transfer_get(db, event.id);
    assert_int_equal(record.seq, result.seq);
    assert_int_equal(record.amount, 0);
    assert_int_equal(record.amount_requested, event.amount);
    return result;
}

static void test_transfer_moves_and_reports(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result = transfer(db, "t1", "alice", "bob", 30);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_false(result.replayed);
    assert_int_equal(result.state, COFFER_STATE_POSTED);
    assert_int_equal(result.amount, 30);
    assert_int_equal(result.seq, 7);
    assert_int_equal(result.from.balance, 70);
    assert_int_equal(result.from.available, 70);
    assert_int_equal(result.from.version, 3);
    assert_int_equal(result.to.balance, 30);
    assert_int_equal(result.to.available, 30);
    assert_int_equal(result.to.version, 2);
    coffer_account alice = account_get(db, "alice");
    assert_int_equal(alice.debits_posted, 30);
    assert_int_equal(alice.credits_posted, 100);
    assert_int_equal(account_get(db, "bob").credits_posted, 30);
}

static void test_transfer_get_fields(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result =
        submit_event(db, with_metadata(transfer_event("t1", "alice", "bob", 30), "{\"n\":1}"));
    coffer_transfer record = transfer_get(db, "t1");
    assert_string_equal(record.id, "t1");
    assert_int_equal(record.op, COFFER_OP_TRANSFER);
    assert_int_equal(record.state, COFFER_STATE_POSTED);
    assert_int_equal(record.code, COFFER_CREATED);
    assert_string_equal(record.from, "alice");
    assert_string_equal(record.to, "bob");
    assert_int_equal(record.amount, 30);
    assert_int_equal(record.amount_requested, 30);
    assert_int_equal(record.seq, result.seq);
    assert_int_equal(record.timestamp, result.timestamp);
    assert_int_equal(record.hold_timeout_ms, 0);
    assert_int_equal(record.metadata_len, 7);
    assert_memory_equal(record.metadata, "{\"n\":1}", 7);
}

static void test_same_account(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    expect_rejected(db, transfer_event("t1", "alice", "alice", 10), COFFER_SAME_ACCOUNT);
    /* Checked by id before lookup: a missing account to itself is still same_account. */
    expect_rejected(db, transfer_event("t2", "ghost", "ghost", 10), COFFER_SAME_ACCOUNT);
}

static void test_account_not_found_from(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result =
        expect_rejected(db, transfer_event("t1", "ghost", "bob", 10), COFFER_ACCOUNT_NOT_FOUND);
    assert_field(result.field, "/from");
    result =
        expect_rejected(db, transfer_event("t2", "ghost", "phantom", 10), COFFER_ACCOUNT_NOT_FOUND);
    assert_field(result.field, "/from");
}

static void test_account_not_found_to(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result =
        expect_rejected(db, transfer_event("t1", "alice", "ghost", 10), COFFER_ACCOUNT_NOT_FOUND);
    assert_field(result.field, "/to");
}

static void test_currency_mismatch(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    expect_rejected(db, transfer_event("t1", "alice", "carol", 10), COFFER_CURRENCY_MISMATCH);
    expect_rejected(db, transfer_event("t2", "carol", "alice", 10), COFFER_CURRENCY_MISMATCH);
}

static void test_insufficient_balance(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result result =
        expect_rejected(db, transfer_event("t1", "alice", "bob", 101), COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(result.available, 100);
    /* The accounts as the failing check saw them. */
    assert_int_equal(result.from.balance, 100);
    assert_int_equal(result.from.available, 100);
    assert_int_equal(result.from.version, 2);
    assert_int_equal(result.to.balance, 0);
    assert_int_equal(result.to.version, 1);
    /* Exactly down to the floor is allowed. */
    assert_int_equal(transfer(db, "t2", "alice", "bob", 100).code, COFFER_CREATED);
    result =
        expect_rejected(db, transfer_event("t3", "alice", "bob", 1), COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(result.available, 0);
}

static void test_exceeds_max_balance(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_capped(db, "jar", "KRW", 50);
    expect_rejected(db, transfer_event("t1", "alice", "jar", 51), COFFER_EXCEEDS_MAX_BALANCE);
    assert_int_equal(transfer(db, "t2", "alice", "jar", 50).code, COFFER_CREATED);
    expect_rejected(db, transfer_event("t3", "alice", "jar", 1), COFFER_EXCEEDS_MAX_BALANCE);
    assert_int_equal(balance_of(db, "jar"), 50);
}

static coffer_event expecting(coffer_event event, uint8_t flags, uint64_t from_version,
                              uint64_t to_version)
{
    event.flags |= flags;
    event.expect_from_version = from_version;
    event.expect_to_version = to_version;
    return event;
}

static void test_version_mismatch_from(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event event = expecting(transfer_event("t1", "alice", "bob", 10),
                                   COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO, 1, 7);
    coffer_result result = expect_rejected(db, event, COFFER_VERSION_MISMATCH);
    assert_field(result.field, "/expect/from_version");
    assert_int_equal(result.actual_version, 2);
    fund(db, "t2", "alice", "bob", 1);
    coffer_result again = submit_event(db, event);
    assert_int_equal(again.code, COFFER_VERSION_MISMATCH);
    assert_true(again.replayed);
    assert_field(again.field, "/expect/from_version");
    assert_int_equal(again.actual_version, 2);
}

static void test_version_mismatch_to(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event event = expecting(transfer_event("t1", "alice", "bob", 10),
                                   COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO, 2, 5);
    coffer_result result = expect_rejected(db, event, COFFER_VERSION_MISMATCH);
    assert_field(result.field, "/expect/to_version");
    assert_int_equal(result.actual_version, 1);
}

/* Compare-and-set chains: each success returns the versions the next write expects. */
static void test_version_chain(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result first = submit_event(
        db, expecting(transfer_event("t1", "alice", "bob", 10), COFFER_FLAG_EXPECT_FROM, 2, 0));
    assert_int_equal(first.code, COFFER_CREATED);
    coffer_result second =
        submit_event(db, expecting(transfer_event("t2", "alice", "bob", 10),
                                   COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO,
                                   first.from.version, first.to.version));
    assert_int_equal(second.code, COFFER_CREATED);
    assert_int_equal(second.from.version, 4);
    assert_int_equal(second.to.version, 3);
    /* The stale read loses. */
    coffer_result stale = expect_rejected(
        db, expecting(transfer_event("t3", "alice", "bob", 10), COFFER_FLAG_EXPECT_FROM, 3, 0),
        COFFER_VERSION_MISMATCH);
    assert_int_equal(stale.actual_version, 4);
}

/* A funding account with no floor sends near INT64_MAX twice: the second would overflow
 * its debits_posted (and the receiver's credits), so it is refused, never wrapped. */
static void test_overflow(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_account(db, "big-a", "KRW");
    fund(db, "big-1", "bank", "big-a", INT64_MAX - 200);
    expect_rejected(db, transfer_event("big-2", "bank", "bob", INT64_MAX - 200), COFFER_OVERFLOW);
    create_issuer(db, "mint", "KRW");
    expect_rejected(db, transfer_event("big-3", "mint", "big-a", 201), COFFER_OVERFLOW);
    assert_int_equal(transfer(db, "big-4", "mint", "big-a", 200).code, COFFER_CREATED);
    assert_int_equal(balance_of(db, "big-a"), INT64_MAX);
    verify_ok(db);
}

static void test_up_to_moves_partial(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event event = transfer_event("t1", "alice", "bob", 250);
    event.flags = COFFER_FLAG_UP_TO;
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.amount, 100);
    assert_int_equal(result.from.balance, 0);
    assert_int_equal(result.to.balance, 100);
    coffer_transfer record = transfer_get(db, "t1");
    assert_int_equal(record.amount, 100);
    assert_int_equal(record.amount_requested, 250);
}

static void test_up_to_limited_by_cap(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_capped(db, "jar", "KRW", 50);
    fund(db, "t0", "alice", "jar", 20);
    coffer_event event = transfer_event("t1", "alice", "jar", 80);
    event.flags = COFFER_FLAG_UP_TO;
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.amount, 30);
    assert_int_equal(balance_of(db, "jar"), 50);
    assert_int_equal(balance_of(db, "alice"), 50);
}

static void test_up_to_moves_zero(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    world_snapshot before = world_read(db);
    size_t bob_entries = history_count(db, "bob");
    size_t dave_entries = history_count(db, "dave");
    coffer_event event = transfer_event("t1", "bob", "dave", 10);
    event.flags = COFFER_FLAG_UP_TO;
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.amount, 0);
    assert_world_unchanged(db, &before);
    assert_int_equal(history_count(db, "bob"), bob_entries);
    assert_int_equal(history_count(db, "dave"), dave_entries);
    assert_recorded(db, "t1", COFFER_CREATED);
    assert_int_equal(transfer_get(db, "t1").amount, 0);
}

static void test_overdraft(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    create_account_with(db, "od", "KRW", 0, -100, 0);
    coffer_result result = transfer(db, "t1", "od", "bob", 100);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(result.from.balance, -100);
    assert_int_equal(result.from.available, -100);
    result = transfer(db, "t2", "od", "bob", 1);
    assert_int_equal(result.code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(result.available, -100);
    assert_int_equal(balance_of(db, "od"), -100);
    verify_ok(db);
}

static void test_replay_returns_original(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    coffer_result first = transfer(db, "t1", "alice", "bob", 30);
    fund(db, "t2", "alice", "bob", 5); /* the accounts move on after the original */
    clock_advance_ms(ledger, 1000);
    coffer_result again = transfer(db, "t1", "alice", "bob", 30);
    assert_int_equal(again.code, COFFER_EXISTS);
    assert_true(again.replayed);
    assert_int_equal(again.seq, first.seq);
    assert_int_equal(again.timestamp, first.timestamp);
    assert_int_equal(again.amount, 30);
    assert_int_equal(again.state, COFFER_STATE_POSTED);
    assert_int_equal(again.from.balance, first.from.balance);
    assert_int_equal(again.from.version, first.from.version);
    assert_int_equal(again.to.balance, first.to.balance);
    assert_int_equal(again.to.version, first.to.version);
    assert_int_equal(balance_of(db, "alice"), 65);
    assert_int_equal(balance_of(db, "bob"), 35);
}

/* A key names one attempt: after a rejection, the same key stays rejected even once the
 * transfer would succeed. */
static void test_replay_of_rejection(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_result first = transfer(db, "t1", "alice", "bob", 500);
    assert_int_equal(first.code, COFFER_INSUFFICIENT_BALANCE);
    fund(db, "t2", "bank", "alice", 1000);
    world_snapshot before = world_read(db);
    coffer_result again = transfer(db, "t1", "alice", "bob", 500);
    assert_int_equal(again.code, COFFER_INSUFFICIENT_BALANCE);
    assert_true(again.replayed);
    assert_int_equal(again.seq, first.seq);
    assert_int_equal(again.available, 100);
    assert_int_equal(again.amount, 0);
    assert_world_unchanged(db, &before);
    assert_recorded(db, "t1", COFFER_INSUFFICIENT_BALANCE);
    /* The rejected id still owns its content. */
    coffer_result changed = transfer(db, "t1", "alice", "bob", 50);
    assert_int_equal(changed.code, COFFER_ID_REUSED);
    assert_field(changed.field, "/amount");
}

static void test_replay_of_not_found_keeps_field(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    transfer(db, "t1", "alice", "ghost", 5);
    coffer_result again = transfer(db, "t1", "alice", "ghost", 5);
    assert_int_equal(again.code, COFFER_ACCOUNT_NOT_FOUND);
    assert_true(again.replayed);
    assert_field(again.field, "/to");
}

/* The transfer every id_reused case starts from. */
static coffer_event reuse_base(void)
{
    return with_metadata(transfer_event("reused", "alice", "bob", 10), "{\"a\":1}");
}

static void expect_transfer_id_reused(coffer *db, coffer_event original, coffer_event changed,
                                      const char *field)
{
    coffer_result first = submit_event(db, original); /* may itself be a replay */
    assert_true(coffer_code_is_success(first.code));
    world_snapshot before = world_read(db);
    coffer_result result = submit_event(db, changed);
    assert_int_equal(result.code, COFFER_ID_REUSED);
    assert_field(result.field, field);
    assert_false(result.replayed);
    assert_int_equal(result.seq, 0);
    assert_world_unchanged(db, &before);
    coffer_transfer record = transfer_get(db, original.id);
    assert_int_equal(record.code, COFFER_CREATED);
    assert_int_equal(record.seq, first.seq);
    assert_int_equal(record.op, original.op);
}

static void test_id_reused_from(void **state)
{
    coffer_event changed = reuse_base();
    changed.from = "dave";
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/from");
}

static void test_id_reused_to(void **state)
{
    coffer_event changed = reuse_base();
    changed.to = "dave";
    changed.amount = 11; /* differs too, but /to comes first */
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/to");
}

static void test_id_reused_amount(void **state)
{
    coffer_event changed = with_metadata(reuse_base(), "{\"a\":2}");
    changed.amount = 11;
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/amount");
}

static void test_id_reused_hold_timeout(void **state)
{
    coffer_event changed = reuse_base();
    changed.hold_timeout_ms = 60000;
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed,
                              "/hold/timeout_ms");
}

static void test_id_reused_up_to(void **state)
{
    coffer_event changed = reuse_base();
    changed.flags = COFFER_FLAG_UP_TO;
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/up_to");
}

static void test_id_reused_expect_from(void **state)
{
    coffer_event changed = expecting(reuse_base(), COFFER_FLAG_EXPECT_FROM, 2, 0);
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed,
                              "/expect/from_version");
}

static void test_id_reused_expect_to(void **state)
{
    coffer_event original = expecting(reuse_base(), COFFER_FLAG_EXPECT_TO, 0, 1);
    coffer_event changed = expecting(reuse_base(), COFFER_FLAG_EXPECT_TO, 0, 2);
    changed = with_metadata(changed, "{\"a\":3}");
    expect_transfer_id_reused(((test_ledger *)*state)->db, original, changed, "/expect/to_version");
}

static void test_id_reused_metadata(void **state)
{
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(),
                              with_metadata(reuse_base(), NULL), "/metadata");
}

static void test_id_reused_kind_post(void **state)
{
    coffer_event changed = post_event("reused", "some-hold", 0);
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/post");
}

static void test_id_reused_kind_void(void **state)
{
    coffer_event changed = void_event("reused", "some-hold");
    expect_transfer_id_reused(((test_ledger *)*state)->db, reuse_base(), changed, "/void");
}

static void test_id_reused_post_fields(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    assert_int_equal(hold(db, "h1", "alice", "bob", 40, 60000).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h2", "alice", "bob", 40, 60000).code, COFFER_CREATED);
    coffer_event original = post_event("p1", "h1", 10);
    expect_transfer_id_reused(db, original, post_event("p1", "h1", 11), "/amount");
    expect_transfer_id_reused(db, original, post_event("p1", "h2", 10), "/post");
    expect_transfer_id_reused(db, original, void_event("p1", "h1"), "/post");
    expect_transfer_id_reused(db, void_event("v2", "h2"), void_event("v2", "h1"), "/void");
    expect_transfer_id_reused(db, void_event("v2", "h2"), transfer_event("v2", "alice", "bob", 1),
                              "/void");
}

/* Submits one event that must be invalid_field on `field`, recording nothing. */
static void expect_transfer_invalid(coffer *db, coffer_event event, const char *field)
{
    world_snapshot before = world_read(db);
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, COFFER_INVALID_FIELD);
    assert_field(result.field, field);
    assert_int_equal(result.seq, 0);
    assert_world_unchanged(db, &before);
    coffer_transfer record;
    assert_int_not_equal(coffer_transfer_get(db, event.id, &record), COFFER_OK);
}

static void test_invalid_transfer_id(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    char long_id[COFFER_TRANSFER_ID_MAX + 2];
    const char *bad[] = {"", "pay 1", "pay#1", "pay\n",
                         repeat_char(long_id, 'p', COFFER_TRANSFER_ID_MAX + 1)};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_transfer_invalid(db, transfer_event(bad[i], "alice", "bob", 1), "/id");
    }
    assert_not_recorded(db, "pay 1");
    repeat_char(long_id, 'p', COFFER_TRANSFER_ID_MAX);
    assert_int_equal(transfer(db, long_id, "alice", "bob", 1).code, COFFER_CREATED);
}

static void test_invalid_transfer_accounts(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    char long_id[COFFER_ACCOUNT_ID_MAX + 2];
    repeat_char(long_id, 'a', COFFER_ACCOUNT_ID_MAX + 1);
    expect_transfer_invalid(db, transfer_event("ok-id", "", "bob", 1), "/from");
    expect_transfer_invalid(db, transfer_event("ok-id", "ali ce", "bob", 1), "/from");
    expect_transfer_invalid(db, transfer_event("ok-id", long_id, "bob", 1), "/from");
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", "", 1), "/to");
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", "bob!", 1), "/to");
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", long_id, 1), "/to");
}

static void test_invalid_transfer_amount_and_hold(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", "bob", 0), "/amount");
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", "bob", -5), "/amount");
    expect_transfer_invalid(db, transfer_event("ok-id", "alice", "bob", INT64_MIN), "/amount");
    expect_transfer_invalid(db,
                            hold_event("ok-id", "alice", "bob", 1, COFFER_HOLD_TIMEOUT_MS_MAX + 1),
                            "/hold/timeout_ms");
    coffer_result longest = hold(db, "h-max", "alice", "bob", 1, COFFER_HOLD_TIMEOUT_MS_MAX);
    assert_int_equal(longest.code, COFFER_CREATED);
    assert_int_equal(longest.expires_at,
                     longest.timestamp + COFFER_HOLD_TIMEOUT_MS_MAX * TEST_NS_PER_MS);
}

static void test_invalid_transfer_metadata_and_op(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    char metadata[COFFER_METADATA_MAX + 2];
    memset(metadata, ' ', sizeof(metadata));
    metadata[0] = '{';
    metadata[COFFER_METADATA_MAX] = '}';
    metadata[COFFER_METADATA_MAX + 1] = '\0';
    expect_transfer_invalid(db, with_metadata(transfer_event("ok-id", "alice", "bob", 1), metadata),
                            "/metadata");
    const uint8_t bad_ops[] = {0, COFFER_OP_EXPIRE, 9};
    for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
        coffer_event event = transfer_event("ok-id", "alice", "bob", 1);
        event.op = bad_ops[i];
        expect_transfer_invalid(db, event, "/op");
    }
}

static void test_invalid_post_and_void(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    assert_int_equal(hold(db, "h1", "alice", "bob", 10, 60000).code, COFFER_CREATED);
    expect_transfer_invalid(db, post_event("ok-id", "h1", -1), "/amount");
    expect_transfer_invalid(db, post_event("ok-id", "", 0), "/post");
    expect_transfer_invalid(db, post_event("ok-id", "h 1", 0), "/post");
    expect_transfer_invalid(db, void_event("ok-id", ""), "/void");
    expect_transfer_invalid(db, void_event("ok-id", "h#1"), "/void");
    expect_transfer_invalid(db, post_event("", "h1", 0), "/id");
    assert_int_equal(transfer_get(db, "h1").state, COFFER_STATE_PENDING);
}

/* transfers_max counts recorded ids, rejections included: beyond it an event is
 * capacity_exceeded and records nothing, while replays of recorded ids still answer. */
static void test_capacity_exceeded(void **state)
{
    (void)state;
    test_ledger *ledger = ledger_open_sized(0, 3);
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    fund(db, "t1", "bank", "alice", 10);
    assert_int_equal(transfer(db, "t2", "alice", "bank", 11).code, COFFER_INSUFFICIENT_BALANCE);
    fund(db, "t3", "alice", "bank", 1);
    coffer_result result = transfer(db, "t4", "alice", "bank", 1);
    assert_int_equal(result.code, COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(result.seq, 0);
    assert_not_recorded(db, "t4");
    assert_int_equal(balance_of(db, "alice"), 9);
    assert_int_equal(transfer(db, "t1", "bank", "alice", 10).code, COFFER_EXISTS);
    assert_int_equal(transfer(db, "t2", "alice", "bank", 11).code, COFFER_INSUFFICIENT_BALANCE);
    assert_int_equal(transfer(db, "t5", "alice", "bank", 0).code, COFFER_INVALID_FIELD);
    ledger_close(ledger);
}

/* Each op accepts only its own flags; a hold cannot be up-to; a void carries no amount; a
 * metadata length needs metadata. */
static void test_invalid_flags_and_combinations(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    coffer_event foreign = transfer_event("ok-id", "alice", "bob", 1);
    foreign.flags = COFFER_FLAG_MIN_UNBOUNDED;
    expect_transfer_invalid(db, foreign, "/flags");
    foreign.flags = 0x80;
    expect_transfer_invalid(db, foreign, "/flags");
    coffer_event post = post_event("ok-id", "h1", 0);
    post.flags = COFFER_FLAG_UP_TO;
    expect_transfer_invalid(db, post, "/flags");
    coffer_event up_to_hold = hold_event("ok-id", "alice", "bob", 10, MINUTE_MS);
    up_to_hold.flags = COFFER_FLAG_UP_TO;
    expect_transfer_invalid(db, up_to_hold, "/up_to");
    coffer_event void_amount = void_event("ok-id", "h1");
    void_amount.amount = 5;
    expect_transfer_invalid(db, void_amount, "/amount");
    coffer_event missing = transfer_event("ok-id", "alice", "bob", 1);
    missing.metadata_len = 5;
    expect_transfer_invalid(db, missing, "/metadata");
}

/* Several bad fields: the first in the documented order is the one reported. */
static void test_validation_order(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    char metadata[COFFER_METADATA_MAX + 2];
    repeat_char(metadata, ' ', COFFER_METADATA_MAX + 1);
    coffer_event event = with_metadata(transfer_event("bad id", "bad from", "", 0), metadata);
    event.op = 0;
    event.flags = 0x80;
    event.hold_timeout_ms = COFFER_HOLD_TIMEOUT_MS_MAX + 1;
    expect_transfer_invalid(db, event, "/metadata");
    event = with_metadata(event, NULL);
    expect_transfer_invalid(db, event, "/op");
    event.op = COFFER_OP_TRANSFER;
    expect_transfer_invalid(db, event, "/id");
    event.id = "ok-id";
    expect_transfer_invalid(db, event, "/flags");
    event.flags = COFFER_FLAG_UP_TO;
    expect_transfer_invalid(db, event, "/from");
    event.from = "alice";
    expect_transfer_invalid(db, event, "/to");
    event.to = "bob";
    expect_transfer_invalid(db, event, "/amount");
    event.amount = 1;
    expect_transfer_invalid(db, event, "/hold/timeout_ms");
    event.hold_timeout_ms = 1000;
    expect_transfer_invalid(db, event, "/up_to");
    coffer_event post = post_event("ok-id", "bad hold", -1);
    expect_transfer_invalid(db, post, "/post");
}

/* One change, one version: a transfer bumps both sides once; a rejection, an up-to of 0 and a
 * replay bump nothing. */
static void test_versions_advance_by_one(void **state)
{
    coffer *db = ((test_ledger *)*state)->db;
    assert_int_equal(version_of(db, "alice"), 2);
    assert_int_equal(version_of(db, "bank"), 2);
    fund(db, "t1", "alice", "bob", 1);
    fund(db, "t2", "alice", "bob", 1);
    transfer(db, "t2", "alice", "bob", 1);
    transfer(db, "t3", "alice", "bob", 1000);
    coffer_event zero = transfer_event("t4", "dave", "bob", 5);
    zero.flags = COFFER_FLAG_UP_TO;
    submit_event(db, zero);
    assert_int_equal(version_of(db, "alice"), 4);
    assert_int_equal(version_of(db, "bob"), 3);
    assert_int_equal(version_of(db, "dave"), 1);
    assert_int_equal(version_of(db, "bank"), 2);
    assert_int_equal(hold(db, "h1", "alice", "dave", 1, 1000).code, COFFER_CREATED);
    assert_int_equal(version_of(db, "alice"), 5);
    assert_int_equal(version_of(db, "dave"), 2);
}

#define WORLD_TEST(f) cmocka_unit_test_setup_teardown(f, world_setup, ledger_teardown)

/* A full account table does not stop transfers: room is reserved per kind of event (a batch
 * of transfers needs no account room), so 1,000 transfers apply when every account slot is
 * taken. */
static void test_full_account_table_still_transfers(void **state)
{
    (void)state;
    enum { ACCOUNTS = 10000, TRANSFERS = 1000 };
    test_ledger *ledger = ledger_open_sized(ACCOUNTS, 100000);
    coffer *db = ledger->db;
    static char ids[ACCOUNTS][16];
    static coffer_event events[ACCOUNTS];
    static coffer_result results[ACCOUNTS];
    for (size_t done = 0; done < ACCOUNTS; done += 5000) {
        for (size_t i = 0; i < 5000; i++) {
            snprintf(ids[done + i], sizeof ids[0], "a%zu", done + i);
            events[i] = account_event(ids[done + i], "KRW");
            if (done + i == 0)
                events[i].flags = COFFER_FLAG_MIN_UNBOUNDED;
        }
        submit_batch(db, events, 5000, false, results);
        assert_int_equal(results[4999].code, COFFER_CREATED);
    }
    static char transfer_ids[TRANSFERS][16];
    for (size_t i = 0; i < TRANSFERS; i++) {
        snprintf(transfer_ids[i], sizeof transfer_ids[0], "t%zu", i);
        events[i] = transfer_event(transfer_ids[i], "a0", ids[1 + i], 1);
    }
    submit_batch(db, events, TRANSFERS, false, results);
    for (size_t i = 0; i < TRANSFERS; i++)
        assert_int_equal(results[i].code, COFFER_CREATED);
    assert_int_equal(submit_event(db, account_event("one-more", "KRW")).code,
                     COFFER_CAPACITY_EXCEEDED);
    ledger_close(ledger);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        WORLD_TEST(test_transfer_moves_and_reports),
        WORLD_TEST(test_transfer_get_fields),
        WORLD_TEST(test_same_account),
        WORLD_TEST(test_account_not_found_from),
        WORLD_TEST(test_account_not_found_to),
        WORLD_TEST(test_currency_mismatch),
        WORLD_TEST(test_insufficient_balance),
        WORLD_TEST(test_exceeds_max_balance),
        WORLD_TEST(test_version_mismatch_from),
        WORLD_TEST(test_version_mismatch_to),
        WORLD_TEST(test_version_chain),
        WORLD_TEST(test_overflow),
        WORLD_TEST(test_up_to_moves_partial),
        WORLD_TEST(test_up_to_limited_by_cap),
        WORLD_TEST(test_up_to_moves_zero),
        WORLD_TEST(test_overdraft),
        WORLD_TEST(test_replay_returns_original),
        WORLD_TEST(test_replay_of_rejection),
        WORLD_TEST(test_replay_of_not_found_keeps_field),
        WORLD_TEST(test_id_reused_from),
        WORLD_TEST(test_id_reused_to),
        WORLD_TEST(test_id_reused_amount),
        WORLD_TEST(test_id_reused_hold_timeout),
        WORLD_TEST(test_id_reused_up_to),
        WORLD_TEST(test_id_reused_expect_from),
        WORLD_TEST(test_id_reused_expect_to),
        WORLD_TEST(test_id_reused_metadata),
        WORLD_TEST(test_id_reused_kind_post),
        WORLD_TEST(test_id_reused_kind_void),
        WORLD_TEST(test_id_reused_post_fields),
        WORLD_TEST(test_invalid_transfer_id),
        WORLD_TEST(test_invalid_transfer_accounts),
        WORLD_TEST(test_invalid_transfer_amount_and_hold),
        WORLD_TEST(test_invalid_transfer_metadata_and_op),
        WORLD_TEST(test_invalid_post_and_void),
        WORLD_TEST(test_invalid_flags_and_combinations),
        WORLD_TEST(test_validation_order),
        WORLD_TEST(test_versions_advance_by_one),
        cmocka_unit_test(test_capacity_exceeded),
        cmocka_unit_test(test_full_account_table_still_transfers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
