/*
 * test_snapshot.c — record comparison as the offline verify uses it: two records are equal
 * when every field a snapshot keeps is, whatever the padding between fields holds (a record
 * loaded from a snapshot has it zeroed; one built in memory may not).
 */
#include "log/snapshot.h"
#include "store/store.h"
#include "support.h"

static void padding_is_not_state(void **state)
{
    (void)state;
    store_hold_ref a, b;
    memset(&a, 0x00, sizeof a);
    memset(&b, 0xAB, sizeof b);
    a.expires_at = b.expires_at = 1796581731000000000ull;
    a.transfer = b.transfer = 42;
    assert_true(sizeof a > sizeof a.expires_at + sizeof a.transfer); /* there is padding */
    assert_false(snapshot_records_differ(SNAPSHOT_HOLDS, &a, &b));
    b.transfer = 43;
    assert_true(snapshot_records_differ(SNAPSHOT_HOLDS, &a, &b));
    b.transfer = 42;
    b.expires_at++;
    assert_true(snapshot_records_differ(SNAPSHOT_HOLDS, &a, &b));
}

static void every_account_field_counts(void **state)
{
    (void)state;
    store_account a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    assert_false(snapshot_records_differ(SNAPSHOT_ACCOUNTS, &a, &b));
    b.debits_held = 1;
    assert_true(snapshot_records_differ(SNAPSHOT_ACCOUNTS, &a, &b));
    b.debits_held = 0;
    b.version = 2;
    assert_true(snapshot_records_differ(SNAPSHOT_ACCOUNTS, &a, &b));
    b.version = 0;
    b.id[63] = 'x';
    assert_true(snapshot_records_differ(SNAPSHOT_ACCOUNTS, &a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(padding_is_not_state),
        cmocka_unit_test(every_account_field_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
