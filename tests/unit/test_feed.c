/*
 * test_feed.c — the change feed of coffer.h: type names, a feed refused without a log, pages
 * that advance to the durable seq and never past it, and waiters woken by the next write (and
 * released at their timeout). Each test opens a durable engine in its own temporary directory.
 */
#include <pthread.h>
#include <unistd.h>

#include "files.h"
#include "support.h"

typedef struct durable_ledger {
    char dir[64];
    coffer *db;
} durable_ledger;

static int durable_setup(void **state)
{
    durable_ledger *l = calloc(1, sizeof *l);
    assert_non_null(l);
    snprintf(l->dir, sizeof l->dir, "/tmp/coffer-test-feed-XXXXXX");
    assert_non_null(mkdtemp(l->dir));
    coffer_options options;
    coffer_options_init(&options);
    assert_int_equal(coffer_open(l->dir, &options, &l->db), COFFER_OK);
    *state = l;
    return 0;
}

static int durable_teardown(void **state)
{
    durable_ledger *l = *state;
    coffer_close(l->db);
    remove_tree(l->dir);
    free(l);
    return 0;
}

static void submit(coffer *db, coffer_event event)
{
    coffer_result result;
    assert_int_equal(coffer_submit(db, &event, 1, false, &result), COFFER_OK);
}

static void test_type_names_round_trip(void **state)
{
    (void)state;
    for (int type = 1; type < COFFER_CHANGE_TYPE_LIMIT; type++) {
        const char *name = coffer_change_type_name(type);
        assert_non_null(name);
        assert_int_equal(coffer_change_type_parse(name, strlen(name)), type);
    }
    assert_null(coffer_change_type_name(0));
    assert_null(coffer_change_type_name(COFFER_CHANGE_TYPE_LIMIT));
    assert_int_equal(coffer_change_type_parse("hold.posted", 4), 0); /* "hold" alone */
    assert_int_equal(coffer_change_type_parse("account.deleted", 15), 0);
    assert_int_equal(COFFER_CHANGE_DEFAULT_TYPES & COFFER_CHANGE_BIT(COFFER_CHANGE_TRANSFER_REJECTED),
                     0);
}

static void test_no_feed_without_a_log(void **state)
{
    (void)state;
    test_ledger *ledger = ledger_open();
    coffer_feed *feed = (coffer_feed *)1;
    assert_int_equal(coffer_feed_open(ledger->db, &feed), COFFER_NOT_SUPPORTED);
    assert_null(feed);
    assert_int_equal(coffer_durable_seq(ledger->db), 0);
    assert_int_equal(coffer_feed_wait(ledger->db, 0, 10000), 0); /* at once */
    ledger_close(ledger);
}

static void test_pages_end_at_the_durable_seq(void **state)
{
    durable_ledger *l = *state;
    coffer_feed *feed;
    assert_int_equal(coffer_feed_open(l->db, &feed), COFFER_OK);
    coffer_change changes[4];
    size_t count = 99;
    uint64_t next = 99;
    /* An empty log: nothing, and next_after stays where it was asked. */
    assert_int_equal(coffer_feed_read(feed, 0, 0, changes, 4, &count, &next), COFFER_OK);
    assert_int_equal(count, 0);
    assert_int_equal(next, 0);
    coffer_event a = account_event("a", "EUR");
    a.flags |= COFFER_FLAG_MIN_UNBOUNDED;
    submit(l->db, a);
    submit(l->db, account_event("b", "EUR"));
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "t%d", i);
        submit(l->db, transfer_event(id, "a", "b", 10));
    }
    uint64_t durable = coffer_durable_seq(l->db);
    assert_int_equal(durable, 7);
    uint64_t after = 0;
    for (int page = 0; page < 10 && after < durable; page++) {
        assert_int_equal(coffer_feed_read(feed, after, 0, changes, 4, &count, &next), COFFER_OK);
        assert_true(next > after);
        assert_true(next <= durable);
        after = next;
    }
    assert_int_equal(after, durable);
    assert_int_equal(coffer_feed_read(feed, 0, 0, changes, 0, &count, &next),
                     COFFER_INVALID_ARGUMENT);
    coffer_feed_close(feed);
}

typedef struct late_writer {
    coffer *db;
} late_writer;

static void *write_later(void *argument)
{
    late_writer *w = argument;
    usleep(50 * 1000);
    submit(w->db, account_event("late", "EUR"));
    return 0;
}

static void test_wait_wakes_on_the_next_write(void **state)
{
    durable_ledger *l = *state;
    submit(l->db, account_event("a", "EUR"));
    uint64_t durable = coffer_durable_seq(l->db);
    /* Nothing comes: the wait ends at its timeout with the same seq. */
    assert_int_equal(coffer_feed_wait(l->db, durable, 20), durable);
    /* Already past: at once. */
    assert_int_equal(coffer_feed_wait(l->db, durable - 1, 60000), durable);
    late_writer w = {l->db};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, 0, write_later, &w), 0);
    /* A minute of timeout: the test would hang visibly if the write did not wake it. */
    assert_true(coffer_feed_wait(l->db, durable, 60000) > durable);
    pthread_join(thread, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names_round_trip),
        cmocka_unit_test(test_no_feed_without_a_log),
        cmocka_unit_test_setup_teardown(test_pages_end_at_the_durable_seq, durable_setup,
                                        durable_teardown),
        cmocka_unit_test_setup_teardown(test_wait_wakes_on_the_next_write, durable_setup,
                                        durable_teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
