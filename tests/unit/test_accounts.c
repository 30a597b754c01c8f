/*
 * test_accounts.c — create_account through coffer_submit: creation, identical replay, id_reused
 * naming the first differing field, invalid_field for each bad field, coffer_account_get, and
 * the NULL-handle contract of every API function.
 */
#include "support.h"

#define META_A "{\"tier\":\"gold\"}"
#define META_B "{\"tier\":\"silver\"}"

/* The account every id_reused test starts from: capped, with a floor and metadata. */
static coffer_event full_account_event(void)
{
    coffer_event event = with_metadata(account_event("user:42", "KRW"), META_A);
    event.flags = COFFER_FLAG_HAS_MAX;
    event.min_balance = -500;
    event.max_balance = 10000;
    return event;
}

static void test_create_returns_created(void **state)
{
    test_ledger *ledger = *state;
    coffer_result result = submit_event(ledger->db, account_event("user:1", "KRW"));
    assert_int_equal(result.code, COFFER_CREATED);
    assert_false(result.replayed);
    assert_int_equal(result.state, COFFER_STATE_POSTED);
    assert_int_equal(result.seq, 1);
    assert_int_equal(result.timestamp, TEST_CLOCK_START_NS);
}

static void test_get_returns_every_field(void **state)
{
    test_ledger *ledger = *state;
    coffer_result created = submit_event(ledger->db, full_account_event());
    assert_int_equal(created.code, COFFER_CREATED);
    coffer_account account = account_get(ledger->db, "user:42");
    assert_string_equal(account.id, "user:42");
    assert_string_equal(account.currency, "KRW");
    assert_false(account.min_unbounded);
    assert_true(account.has_max);
    assert_int_equal(account.min_balance, -500);
    assert_int_equal(account.max_balance, 10000);
    assert_int_equal(account.debits_posted, 0);
    assert_int_equal(account.credits_posted, 0);
    assert_int_equal(account.debits_held, 0);
    assert_int_equal(account.credits_held, 0);
    assert_int_equal(account.balance, 0);
    assert_int_equal(account.available, 0);
    assert_int_equal(account.version, 1);
    assert_int_equal(account.created_seq, created.seq);
    assert_int_equal(account.created_at, created.timestamp);
    assert_int_equal(account.metadata_len, strlen(META_A));
    assert_memory_equal(account.metadata, META_A, strlen(META_A));
}

static void test_get_issuer_flags(void **state)
{
    test_ledger *ledger = *state;
    create_issuer(ledger->db, "bank", "KRW");
    coffer_account account = account_get(ledger->db, "bank");
    assert_true(account.min_unbounded);
    assert_false(account.has_max);
    assert_int_equal(account.metadata_len, 0);
    assert_int_equal(account.version, 1);
}

static void test_identical_replay_is_exists(void **state)
{
    test_ledger *ledger = *state;
    coffer_result first = submit_event(ledger->db, full_account_event());
    clock_advance_ms(ledger, 5);
    coffer_result again = submit_event(ledger->db, full_account_event());
    assert_int_equal(again.code, COFFER_EXISTS);
    assert_true(again.replayed);
    assert_int_equal(again.seq, first.seq);
    assert_int_equal(again.timestamp, first.timestamp);
    coffer_account account = account_get(ledger->db, "user:42");
    assert_int_equal(account.version, 1);
    assert_int_equal(account.created_seq, first.seq);
}

/* Submits `changed` over the full account and expects id_reused naming `field`. */
static void expect_account_id_reused(test_ledger *ledger, coffer_event changed, const char *field)
{
    submit_event(ledger->db, full_account_event());
    coffer_account before = account_get(ledger->db, "user:42");
    coffer_result result = submit_event(ledger->db, changed);
    assert_int_equal(result.code, COFFER_ID_REUSED);
    assert_field(result.field, field);
    assert_int_equal(result.seq, 0);
    coffer_account after = account_get(ledger->db, "user:42");
    assert_account_unchanged(&before, &after);
    assert_string_equal(after.currency, "KRW");
    assert_int_equal(after.min_balance, -500);
    assert_int_equal(after.max_balance, 10000);
}

static void test_id_reused_currency(void **state)
{
    coffer_event changed = full_account_event();
    changed.currency = "USD";
    expect_account_id_reused(*state, changed, "/currency");
}

static void test_id_reused_min_balance(void **state)
{
    coffer_event changed = full_account_event();
    changed.min_balance = -499;
    expect_account_id_reused(*state, changed, "/min_balance");
}

static void test_id_reused_min_unbounded(void **state)
{
    coffer_event changed = full_account_event();
    changed.flags |= COFFER_FLAG_MIN_UNBOUNDED;
    expect_account_id_reused(*state, changed, "/min_balance");
}

static void test_id_reused_max_balance(void **state)
{
    coffer_event changed = full_account_event();
    changed.max_balance = 10001;
    expect_account_id_reused(*state, changed, "/max_balance");
}

static void test_id_reused_max_uncapped(void **state)
{
    coffer_event changed = full_account_event();
    changed.flags &= (uint8_t)~COFFER_FLAG_HAS_MAX;
    expect_account_id_reused(*state, changed, "/max_balance");
}

static void test_id_reused_metadata(void **state)
{
    expect_account_id_reused(*state, with_metadata(full_account_event(), META_B), "/metadata");
}

static void test_id_reused_metadata_absent(void **state)
{
    expect_account_id_reused(*state, with_metadata(full_account_event(), NULL), "/metadata");
}

/* Currency comes before everything else when several fields differ. */
static void test_id_reused_names_first_field(void **state)
{
    coffer_event changed = with_metadata(full_account_event(), META_B);
    changed.currency = "USD";
    changed.max_balance = 7;
    expect_account_id_reused(*state, changed, "/currency");
}

/* Submits one account event that must be invalid_field on `field` and record nothing. */
static void expect_account_invalid(test_ledger *ledger, coffer_event event, const char *field)
{
    coffer_result result = submit_event(ledger->db, event);
    assert_int_equal(result.code, COFFER_INVALID_FIELD);
    assert_field(result.field, field);
    assert_int_equal(result.seq, 0);
    assert_false(result.replayed);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(ledger->db, &stats), COFFER_OK);
    assert_int_equal(stats.accounts, 0);
}

static void test_invalid_id(void **state)
{
    test_ledger *ledger = *state;
    char long_id[COFFER_ACCOUNT_ID_MAX + 2];
    const char *bad_ids[] = {
        "",        "user 42",     "user#42",
        "user,42", "caf\xc3\xa9", repeat_char(long_id, 'a', COFFER_ACCOUNT_ID_MAX + 1)};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        expect_account_invalid(ledger, account_event(bad_ids[i], "KRW"), "/id");
    }
    coffer_account account;
    assert_int_equal(coffer_account_get(ledger->db, "user 42", COFFER_AT_NOW, 0, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
}

static void test_id_charset_and_length_accepted(void **state)
{
    test_ledger *ledger = *state;
    char long_id[COFFER_ACCOUNT_ID_MAX + 1];
    create_account(ledger->db, repeat_char(long_id, 'z', COFFER_ACCOUNT_ID_MAX), "KRW");
    create_account(ledger->db, "Az09._:@/-", "KRW");
    create_account(ledger->db, "x", "KRW");
    assert_int_equal(account_get(ledger->db, long_id).version, 1);
}

static void test_invalid_currency(void **state)
{
    test_ledger *ledger = *state;
    const char *bad[] = {"", "krw", "Krw", "KRW-1", "KRW 1", "ABCDEFGHIJKLM"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_account_invalid(ledger, account_event("user:1", bad[i]), "/currency");
    }
    create_account(ledger->db, "user:1", "ABCDEFGHIJ_9");
}

static void test_invalid_min_balance(void **state)
{
    test_ledger *ledger = *state;
    coffer_event event = account_event("user:1", "KRW");
    event.min_balance = 1;
    expect_account_invalid(ledger, event, "/min_balance");
    /* Unbounded ignores the value. */
    event.flags = COFFER_FLAG_MIN_UNBOUNDED;
    assert_int_equal(submit_event(ledger->db, event).code, COFFER_CREATED);
}

static void test_invalid_max_balance(void **state)
{
    test_ledger *ledger = *state;
    coffer_event event = account_event("user:1", "KRW");
    event.flags = COFFER_FLAG_HAS_MAX;
    event.max_balance = -1;
    expect_account_invalid(ledger, event, "/max_balance");
    event.max_balance = 0;
    assert_int_equal(submit_event(ledger->db, event).code, COFFER_CREATED);
}

static void test_invalid_metadata_length(void **state)
{
    test_ledger *ledger = *state;
    char metadata[COFFER_METADATA_MAX + 2];
    memset(metadata, ' ', sizeof(metadata));
    metadata[0] = '{';
    metadata[COFFER_METADATA_MAX] = '}';
    metadata[COFFER_METADATA_MAX + 1] = '\0';
    expect_account_invalid(ledger, with_metadata(account_event("user:1", "KRW"), metadata),
                           "/metadata");
    metadata[COFFER_METADATA_MAX - 1] = '}';
    metadata[COFFER_METADATA_MAX] = '\0';
    coffer_result result =
        submit_event(ledger->db, with_metadata(account_event("user:1", "KRW"), metadata));
    assert_int_equal(result.code, COFFER_CREATED);
    assert_int_equal(account_get(ledger->db, "user:1").metadata_len, COFFER_METADATA_MAX);
}

static void test_invalid_flags(void **state)
{
    test_ledger *ledger = *state;
    const uint8_t bad_flags[] = {COFFER_FLAG_UP_TO, COFFER_FLAG_EXPECT_FROM, COFFER_FLAG_EXPECT_TO,
                                 0x20, 0x80};
    for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
        coffer_event event = account_event("user:1", "KRW");
        event.flags = bad_flags[i] | COFFER_FLAG_HAS_MAX;
        event.max_balance = 10;
        expect_account_invalid(ledger, event, "/flags");
    }
}

/* Several bad fields: metadata, op, id, flags, currency, min_balance, max_balance. */
static void test_validation_order(void **state)
{
    test_ledger *ledger = *state;
    char metadata[COFFER_METADATA_MAX + 2];
    repeat_char(metadata, ' ', COFFER_METADATA_MAX + 1);
    coffer_event event = with_metadata(account_event("bad id", "krw"), metadata);
    event.op = 0;
    event.flags = COFFER_FLAG_UP_TO | COFFER_FLAG_HAS_MAX;
    event.min_balance = 5;
    event.max_balance = -5;
    expect_account_invalid(ledger, event, "/metadata");
    event = with_metadata(event, "{}");
    expect_account_invalid(ledger, event, "/op");
    event.op = COFFER_OP_CREATE_ACCOUNT;
    expect_account_invalid(ledger, event, "/id");
    event.id = "user:1";
    expect_account_invalid(ledger, event, "/flags");
    event.flags = COFFER_FLAG_HAS_MAX;
    expect_account_invalid(ledger, event, "/currency");
    event.currency = "KRW";
    expect_account_invalid(ledger, event, "/min_balance");
    event.min_balance = 0;
    expect_account_invalid(ledger, event, "/max_balance");
    event.max_balance = 0;
    assert_int_equal(submit_event(ledger->db, event).code, COFFER_CREATED);
}

/* A metadata length without metadata is malformed. */
static void test_metadata_length_without_bytes(void **state)
{
    coffer_event event = account_event("user:1", "KRW");
    event.metadata_len = 3;
    expect_account_invalid(*state, event, "/metadata");
}

static void test_invalid_op(void **state)
{
    test_ledger *ledger = *state;
    const uint8_t bad_ops[] = {0, COFFER_OP_EXPIRE, 6, 200};
    for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
        coffer_event event = account_event("user:1", "KRW");
        event.op = bad_ops[i];
        expect_account_invalid(ledger, event, "/op");
    }
}

/* With room for two accounts the third is capacity_exceeded and creates nothing; a replay of
 * an existing one (idempotency runs first) and an invalid one (validation runs first) keep
 * their own answers. */
static void test_capacity_exceeded(void **state)
{
    (void)state;
    test_ledger *ledger = ledger_open_sized(2, 0);
    create_account(ledger->db, "a", "KRW");
    create_account(ledger->db, "b", "KRW");
    coffer_result result = submit_event(ledger->db, account_event("c", "KRW"));
    assert_int_equal(result.code, COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(result.seq, 0);
    assert_int_equal(submit_event(ledger->db, account_event("a", "KRW")).code, COFFER_EXISTS);
    assert_int_equal(submit_event(ledger->db, account_event("", "KRW")).code, COFFER_INVALID_FIELD);
    coffer_account account;
    assert_int_equal(coffer_account_get(ledger->db, "c", COFFER_AT_NOW, 0, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
    ledger_close(ledger);
}

static void test_get_unknown_account(void **state)
{
    test_ledger *ledger = *state;
    create_account(ledger->db, "user:1", "KRW");
    coffer_account account;
    assert_int_equal(coffer_account_get(ledger->db, "user:2", COFFER_AT_NOW, 0, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
}

static void test_null_handle_everywhere(void **state)
{
    (void)state;
    coffer_event event = account_event("user:1", "KRW");
    coffer_result result;
    coffer_account account;
    coffer_history_entry entry;
    coffer_transfer record;
    coffer_verify_report report;
    coffer_stats stats;
    size_t count = 0;
    assert_int_equal(coffer_open(NULL, NULL, NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_submit(NULL, &event, 1, false, &result), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_account_get(NULL, "user:1", COFFER_AT_NOW, 0, &account),
                     COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_history(NULL, "user:1", 0, 1, &entry, &count), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_transfer_get(NULL, "t1", &record), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_holds_list(NULL, NULL, 1, &record, &count), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_verify(NULL, &report), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_stats_get(NULL, &stats), COFFER_INVALID_ARGUMENT);
    coffer_close(NULL);
}

static void test_null_outputs(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    coffer_event event = account_event("user:1", "KRW");
    coffer_result result;
    coffer_history_entry entry;
    coffer_transfer record;
    assert_int_equal(coffer_submit(db, NULL, 1, false, &result), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_submit(db, &event, 1, false, NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_account_get(db, "user:1", COFFER_AT_NOW, 0, NULL),
                     COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_history(db, "user:1", 0, 1, &entry, NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_transfer_get(db, "t1", NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_holds_list(db, NULL, 1, &record, NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_verify(db, NULL), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_stats_get(db, NULL), COFFER_INVALID_ARGUMENT);
    /* Nothing above was applied. */
    coffer_account account;
    assert_int_equal(coffer_account_get(db, "user:1", COFFER_AT_NOW, 0, &account),
                     COFFER_ACCOUNT_NOT_FOUND);
}

#define LEDGER_TEST(f) cmocka_unit_test_setup_teardown(f, ledger_setup, ledger_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        LEDGER_TEST(test_create_returns_created),
        LEDGER_TEST(test_get_returns_every_field),
        LEDGER_TEST(test_get_issuer_flags),
        LEDGER_TEST(test_identical_replay_is_exists),
        LEDGER_TEST(test_id_reused_currency),
        LEDGER_TEST(test_id_reused_min_balance),
        LEDGER_TEST(test_id_reused_min_unbounded),
        LEDGER_TEST(test_id_reused_max_balance),
        LEDGER_TEST(test_id_reused_max_uncapped),
        LEDGER_TEST(test_id_reused_metadata),
        LEDGER_TEST(test_id_reused_metadata_absent),
        LEDGER_TEST(test_id_reused_names_first_field),
        LEDGER_TEST(test_invalid_id),
        LEDGER_TEST(test_id_charset_and_length_accepted),
        LEDGER_TEST(test_invalid_currency),
        LEDGER_TEST(test_invalid_min_balance),
        LEDGER_TEST(test_invalid_max_balance),
        LEDGER_TEST(test_invalid_metadata_length),
        LEDGER_TEST(test_invalid_op),
        LEDGER_TEST(test_invalid_flags),
        LEDGER_TEST(test_validation_order),
        LEDGER_TEST(test_metadata_length_without_bytes),
        cmocka_unit_test(test_capacity_exceeded),
        LEDGER_TEST(test_get_unknown_account),
        LEDGER_TEST(test_null_handle_everywhere),
        LEDGER_TEST(test_null_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
