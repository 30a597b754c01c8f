/*
 * test_submitters.c — who submitted each transfer: the store's table of distinct names (each
 * kept once, numbered from 1, bounded, rolled back with a failed batch) and what
 * coffer_transfer_get() reports of it, in memory and after a reopen from the log or from a
 * snapshot.
 */
#include <dirent.h>
#include <unistd.h>

#include "files.h"
#include "store/store.h"
#include "support.h"

/* ---- the store's table ---------------------------------------------------------------------- */

static int store_setup(void **state)
{
    store *s = calloc(1, sizeof *s);
    assert_non_null(s);
    store_limits limits = {16, 16, STORE_MEMORY_MIN};
    assert_int_equal(store_init(s, &limits), COFFER_OK);
    *state = s;
    return 0;
}

static int store_teardown(void **state)
{
    store_free(*state);
    free(*state);
    return 0;
}

static uint16_t intern(store *s, const char *name)
{
    assert_int_equal(store_submitter_room(s, name, strlen(name)), COFFER_OK);
    return store_submitter_intern(s, name, strlen(name));
}

static void names_are_kept_once_and_numbered_from_one(void **state)
{
    store *s = *state;
    assert_int_equal(store_submitter_find(s, "alice", 5), 0);
    assert_int_equal(intern(s, "alice"), 1);
    assert_int_equal(intern(s, "bob"), 2);
    assert_int_equal(intern(s, "alice"), 1);
    assert_int_equal(s->submitters_count, 2);
    assert_int_equal(store_submitter_find(s, "bob", 3), 2);
    assert_int_equal(store_submitter_find(s, "bo", 2), 0); /* a prefix is another name */
    size_t length;
    const char *name = store_submitter_name(s, 2, &length);
    assert_int_equal(length, 3);
    assert_memory_equal(name, "bob", 3);
    assert_null(store_submitter_name(s, 0, &length));
    assert_int_equal(length, 0);
    char longest[COFFER_SUBMITTER_MAX + 1];
    memset(longest, 'x', COFFER_SUBMITTER_MAX);
    longest[COFFER_SUBMITTER_MAX] = 0;
    assert_int_equal(intern(s, longest), 3);
    assert_memory_equal(store_submitter_name(s, 3, &length), longest, COFFER_SUBMITTER_MAX);
}

static void a_rollback_forgets_names_added_after_its_mark(void **state)
{
    store *s = *state;
    assert_int_equal(intern(s, "alice"), 1);
    store_mark mark = store_mark_get(s);
    assert_int_equal(intern(s, "bob"), 2);
    store_rollback(s, &mark);
    assert_int_equal(s->submitters_count, 1);
    assert_int_equal(store_submitter_find(s, "bob", 3), 0);
    assert_int_equal(store_submitter_find(s, "alice", 5), 1);
    assert_int_equal(intern(s, "carol"), 2); /* the number is free again */
}

/* Past STORE_SUBMITTERS_MAX names a new one is refused; the known ones still work. */
static void the_table_is_bounded(void **state)
{
    store *s = *state;
    char name[16];
    for (unsigned i = 0; i < STORE_SUBMITTERS_MAX; i++) {
        int length = snprintf(name, sizeof name, "token-%u", i);
        assert_int_equal(store_submitter_room(s, name, (size_t)length), COFFER_OK);
        assert_int_equal(store_submitter_intern(s, name, (size_t)length), i + 1);
    }
    assert_int_equal(store_submitter_room(s, "one-more", 8), COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(store_submitter_room(s, "token-7", 7), COFFER_OK);
    assert_int_equal(store_submitter_find(s, "token-65534", 11), STORE_SUBMITTERS_MAX);
}

/* ---- through coffer.h ----------------------------------------------------------------------- */

static void a_transfer_reports_its_submitter(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "user", "KRW");
    coffer_result result;
    coffer_event paid = transfer_event("paid", "bank", "user", 10);
    submit_as(db, "alice", &paid, &result);
    assert_int_equal(result.code, COFFER_CREATED);
    coffer_event refused = transfer_event("refused", "user", "bank", 1000);
    submit_as(db, "bob", &refused, &result);
    assert_int_equal(result.code, COFFER_INSUFFICIENT_BALANCE);
    transfer(db, "anonymous", "bank", "user", 1);
    coffer_event held = hold_event("held", "bank", "user", 5, 60000);
    submit_as(db, "alice", &held, &result);
    coffer_event captured = post_event("captured", "held", 0);
    submit_as(db, "bob", &captured, &result);
    assert_int_equal(result.code, COFFER_CREATED);

    assert_string_equal(transfer_get(db, "paid").submitted_by, "alice");
    assert_string_equal(transfer_get(db, "refused").submitted_by, "bob");
    assert_string_equal(transfer_get(db, "anonymous").submitted_by, "");
    assert_string_equal(transfer_get(db, "held").submitted_by, "alice"); /* not its post's */
    assert_string_equal(transfer_get(db, "captured").submitted_by, "bob");
    /* A retry under another name replays the original, which keeps its submitter. */
    submit_as(db, "carol", &paid, &result);
    assert_int_equal(result.code, COFFER_EXISTS);
    assert_string_equal(transfer_get(db, "paid").submitted_by, "alice");
}

/* A failed atomic batch records its ids as rejections, still under the batch's name. */
static void a_failed_atomic_batch_keeps_its_name(void **state)
{
    test_ledger *ledger = *state;
    coffer *db = ledger->db;
    create_issuer(db, "bank", "KRW");
    create_account(db, "user", "KRW");
    coffer_event batch[2] = {transfer_event("first", "bank", "user", 1),
                             transfer_event("second", "user", "bank", 1000)};
    coffer_result results[2];
    assert_int_equal(submit_batch_as(db, "dave", batch, 2, true, results), COFFER_OK);
    assert_int_equal(results[0].code, COFFER_BATCH_FAILED);
    assert_int_equal(results[1].code, COFFER_INSUFFICIENT_BALANCE);
    assert_string_equal(transfer_get(db, "first").submitted_by, "dave");
    assert_string_equal(transfer_get(db, "second").submitted_by, "dave");
}

/* ---- durable: the log and snapshots keep it -------------------------------------------------- */

static uint64_t fixed_clock_ns = TEST_CLOCK_START_NS;

static uint64_t fixed_clock(void *context)
{
    (void)context;
    return __atomic_add_fetch(&fixed_clock_ns, 1000, __ATOMIC_SEQ_CST);
}

static coffer *open_durable(const char *dir)
{
    coffer_options options;
    coffer_options_init(&options);
    options.accounts_max = 100;
    options.transfers_max = 100;
    options.clock_ns = fixed_clock;
    coffer *db = NULL;
    assert_int_equal(coffer_open(dir, &options, &db), COFFER_OK);
    return db;
}

static void assert_durable_submitters(coffer *db)
{
    assert_string_equal(transfer_get(db, "paid").submitted_by, "alice");
    assert_string_equal(transfer_get(db, "refused").submitted_by, "bob");
    assert_string_equal(transfer_get(db, "anonymous").submitted_by, "");
}

static void submitters_survive_a_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/coffer-submitters-XXXXXX";
    assert_non_null(mkdtemp(dir));
    coffer *db = open_durable(dir);
    create_issuer(db, "bank", "KRW");
    create_account(db, "user", "KRW");
    coffer_result result;
    coffer_event paid = transfer_event("paid", "bank", "user", 10);
    submit_as(db, "alice", &paid, &result);
    coffer_event refused = transfer_event("refused", "user", "bank", 1000);
    submit_as(db, "bob", &refused, &result);
    transfer(db, "anonymous", "bank", "user", 1);
    coffer_close(db); /* writes a snapshot */

    db = open_durable(dir); /* from the snapshot */
    assert_durable_submitters(db);
    coffer_close(db);
    assert_true(remove_snapshots(dir) > 0);
    db = open_durable(dir); /* from the log alone */
    assert_durable_submitters(db);
    coffer_close(db);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_true(report.ok);
    remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(names_are_kept_once_and_numbered_from_one, store_setup,
                                        store_teardown),
        cmocka_unit_test_setup_teardown(a_rollback_forgets_names_added_after_its_mark, store_setup,
                                        store_teardown),
        cmocka_unit_test_setup_teardown(the_table_is_bounded, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(a_transfer_reports_its_submitter, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test_setup_teardown(a_failed_atomic_batch_keeps_its_name, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test(submitters_survive_a_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
