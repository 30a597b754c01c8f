/*
 * test_feed.c — the change feed of coffer.h: type names, a feed refused without a log, pages
 * that advance to the durable seq and never past it, waiters woken by the next write (and
 * released at their timeout), and changes of every type whose after-states, replayed into a
 * mirror, give every account's balance, available and version as the engine reports them. Each test
 * opens a durable engine in its own temporary directory.
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
    assert_int_equal(
        COFFER_CHANGE_DEFAULT_TYPES & COFFER_CHANGE_BIT(COFFER_CHANGE_TRANSFER_REJECTED), 0);
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

/* ---- content (format 2 records) ------------------------------------------------------------ */

/* A durable engine on the test's clock, so a hold can be made to expire. */
typedef struct clocked_ledger {
    durable_ledger durable;
    test_ledger clock; /* only its clock_ns is used */
} clocked_ledger;

static int clocked_setup(void **state)
{
    clocked_ledger *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->clock.clock_ns = TEST_CLOCK_START_NS;
    snprintf(l->durable.dir, sizeof l->durable.dir, "/tmp/coffer-test-feed-XXXXXX");
    assert_non_null(mkdtemp(l->durable.dir));
    coffer_options options;
    coffer_options_init(&options);
    options.clock_ns = test_clock_read;
    options.clock_context = &l->clock;
    assert_int_equal(coffer_open(l->durable.dir, &options, &l->durable.db), COFFER_OK);
    *state = l;
    return 0;
}

/* Every change of the feed, all types, read in pages of three. */
static size_t read_all(coffer *db, const coffer_feed_filter *filter, coffer_change *all,
                       size_t capacity)
{
    coffer_feed *feed;
    assert_int_equal(coffer_feed_open(db, &feed), COFFER_OK);
    size_t total = 0;
    uint64_t after = 0, next;
    for (int pages = 0; pages < 100; pages++) {
        size_t count;
        assert_true(total + 3 <= capacity);
        assert_int_equal(coffer_feed_read(feed, after, filter, all + total, 3, &count, &next),
                         COFFER_OK);
        /* A change's strings live until the next read: keep what the test compares. */
        for (size_t i = 0; i < count; i++) {
            coffer_event *e = &all[total + i].event;
            e->id = strdup(e->id);
            e->from = e->from ? strdup(e->from) : 0;
            e->to = e->to ? strdup(e->to) : 0;
            all[total + i].submitted_by =
                all[total + i].submitted_by ? strdup(all[total + i].submitted_by) : 0;
        }
        total += count;
        if (next == after)
            break;
        after = next;
    }
    coffer_feed_close(feed);
    return total;
}

static void release(coffer_change *all, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free((char *)all[i].event.id);
        free((char *)all[i].event.from);
        free((char *)all[i].event.to);
        free((char *)all[i].submitted_by);
    }
}

/* The mirror: each account's balance, available and version from the changes alone. */
typedef struct mirrored {
    const char *id;
    int64_t balance, available;
    uint64_t version;
} mirrored;

static mirrored *mirror_find(mirrored *accounts, size_t count, const char *id)
{
    for (size_t i = 0; i < count; i++)
        if (!strcmp(accounts[i].id, id))
            return &accounts[i];
    fail_msg("change for an unknown account %s", id);
    return 0;
}

static void mirror_apply(mirrored *accounts, size_t count, const coffer_change *c)
{
    if (c->type == COFFER_CHANGE_ACCOUNT_CREATED || c->type == COFFER_CHANGE_TRANSFER_REJECTED)
        return;
    bool transfer = c->event.op == COFFER_OP_TRANSFER;
    mirrored *from = mirror_find(accounts, count, transfer ? c->event.from : c->result.hold_from);
    mirrored *to = mirror_find(accounts, count, transfer ? c->event.to : c->result.hold_to);
    *from = (mirrored){from->id, c->result.from.balance, c->result.from.available,
                       c->result.from.version};
    *to = (mirrored){to->id, c->result.to.balance, c->result.to.available, c->result.to.version};
}

static void test_changes_mirror_the_ledger(void **state)
{
    clocked_ledger *l = *state;
    coffer *db = l->durable.db;
    coffer_event accounts[4] = {account_event("a", "EUR"), account_event("b", "EUR"),
                                account_event("c", "EUR"), account_event("d", "USD")};
    accounts[0].flags |= COFFER_FLAG_MIN_UNBOUNDED;
    coffer_result results[4];
    submit_batch(db, accounts, 4, false, results);
    assert_int_equal(transfer(db, "t1", "a", "b", 100).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h1", "a", "c", 50, 1000).code, COFFER_CREATED);
    assert_int_equal(post_hold(db, "p1", "h1", 30).code, COFFER_CREATED);
    assert_int_equal(hold(db, "h2", "b", "c", 20, 1000).code, COFFER_CREATED);
    assert_int_equal(void_hold(db, "v2", "h2").code, COFFER_CREATED);
    assert_int_equal(hold(db, "h3", "b", "a", 10, 1000).code, COFFER_CREATED);
    assert_int_equal(transfer(db, "t2", "c", "b", 1000000).code, COFFER_INSUFFICIENT_BALANCE);
    coffer_event failing[2] = {transfer_event("t3", "a", "b", 5),
                               transfer_event("t4", "c", "d", 1)};
    coffer_result atomic[2];
    submit_batch(db, failing, 2, true, atomic);
    assert_int_equal(atomic[1].code, COFFER_CURRENCY_MISMATCH);
    clock_advance_ms(&l->clock, 2000);
    assert_int_equal(transfer(db, "t5", "b", "c", 1).code, COFFER_CREATED); /* h3 expires first */

    coffer_change all[64];
    coffer_feed_filter everything = {.types = 0xFE};
    size_t count = read_all(db, &everything, all, 64);
    static const int expected[] = {
        COFFER_CHANGE_ACCOUNT_CREATED,   COFFER_CHANGE_ACCOUNT_CREATED,
        COFFER_CHANGE_ACCOUNT_CREATED,   COFFER_CHANGE_ACCOUNT_CREATED,
        COFFER_CHANGE_TRANSFER_POSTED,   COFFER_CHANGE_HOLD_CREATED,
        COFFER_CHANGE_HOLD_POSTED,       COFFER_CHANGE_HOLD_CREATED,
        COFFER_CHANGE_HOLD_VOIDED,       COFFER_CHANGE_HOLD_CREATED,
        COFFER_CHANGE_TRANSFER_REJECTED, COFFER_CHANGE_TRANSFER_REJECTED,
        COFFER_CHANGE_TRANSFER_REJECTED, COFFER_CHANGE_HOLD_EXPIRED,
        COFFER_CHANGE_TRANSFER_POSTED,
    };
    size_t expected_count = sizeof expected / sizeof *expected;
    for (size_t i = 0; i < count && i < expected_count; i++)
        if (all[i].type != expected[i])
            fail_msg("change %zu (seq %llu, %s) is %s, not %s", i, (unsigned long long)all[i].seq,
                     all[i].event.id, coffer_change_type_name(all[i].type),
                     coffer_change_type_name(expected[i]));
    assert_int_equal(count, expected_count);
    for (size_t i = 1; i < count; i++)
        assert_true(all[i].seq > all[i - 1].seq && all[i].timestamp > all[i - 1].timestamp);
    assert_string_equal(all[13].event.id, "h3");
    assert_int_equal(all[13].result.amount, 10);
    assert_int_equal(all[10].result.code, COFFER_INSUFFICIENT_BALANCE);

    mirrored mirror[4] = {{"a", 0, 0, 1}, {"b", 0, 0, 1}, {"c", 0, 0, 1}, {"d", 0, 0, 1}};
    for (size_t i = 0; i < count; i++)
        mirror_apply(mirror, 4, &all[i]);
    for (size_t i = 0; i < 4; i++) {
        coffer_account account;
        assert_int_equal(coffer_account_get(db, mirror[i].id, COFFER_AT_NOW, 0, &account),
                         COFFER_OK);
        assert_int_equal(mirror[i].balance, account.balance);
        assert_int_equal(mirror[i].available, account.available);
        assert_int_equal(mirror[i].version, account.version);
    }
    release(all, count);

    /* The default types leave the rejections out; an account filter keeps its own changes. */
    count = read_all(db, 0, all, 64);
    assert_int_equal(count, expected_count - 3);
    release(all, count);
    coffer_feed_filter only_d = {.types = 0xFE, .account = "d"};
    count = read_all(db, &only_d, all, 64);
    assert_int_equal(count, 2); /* its creation and the refused t4 */
    assert_string_equal(all[1].event.id, "t4");
    release(all, count);
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
        cmocka_unit_test_setup_teardown(test_changes_mirror_the_ledger, clocked_setup,
                                        durable_teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
