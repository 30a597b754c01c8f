/*
 * test_async.c — the asynchronous calls of coffer.h: each answers through on_done exactly once,
 * with the status and outputs its blocking twin gives; a call refused at once returns its code
 * and never calls on_done; on_done may start another job; coffer_health reports writability.
 */
#include <pthread.h>

#include "support.h"

/* What a test waits for: how many jobs have called on_done. */
typedef struct waiter {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int done;
} waiter;

static void job_done(coffer_job *job)
{
    waiter *w = job->context;
    pthread_mutex_lock(&w->mutex);
    w->done++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

static void wait_for(waiter *w, int done)
{
    pthread_mutex_lock(&w->mutex);
    while (w->done < done)
        pthread_cond_wait(&w->cond, &w->mutex);
    pthread_mutex_unlock(&w->mutex);
}

static coffer_job new_job(waiter *w)
{
    coffer_job job = {.on_done = job_done, .context = w, .status = -1};
    return job;
}

static void test_submit_and_reads_answer_through_on_done(void **state)
{
    test_ledger *ledger = *state;
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    coffer_event accounts[2] = {account_event("a", "EUR"), account_event("b", "EUR")};
    accounts[0].flags |= COFFER_FLAG_MIN_UNBOUNDED;
    coffer_result results[2];
    coffer_job job = new_job(&w);
    assert_int_equal(coffer_submit_async(ledger->db, &job, accounts, 2, false, results), COFFER_OK);
    wait_for(&w, 1);
    assert_int_equal(job.status, COFFER_OK);
    assert_int_equal(results[1].code, COFFER_CREATED);
    transfer(ledger->db, "t1", "a", "b", 40);
    coffer_account account;
    job = new_job(&w);
    assert_int_equal(coffer_account_get_async(ledger->db, &job, "b", COFFER_AT_NOW, 0, &account),
                     COFFER_OK);
    wait_for(&w, 2);
    assert_int_equal(job.status, COFFER_OK);
    assert_int_equal(account.balance, 40);
    coffer_history_entry entries[4];
    size_t count = 99;
    job = new_job(&w);
    assert_int_equal(coffer_history_async(ledger->db, &job, "b", 0, 4, entries, &count), COFFER_OK);
    wait_for(&w, 3);
    assert_int_equal(count, 1);
    assert_string_equal(entries[0].transfer_id, "t1");
    coffer_transfer found;
    job = new_job(&w);
    assert_int_equal(coffer_transfer_get_async(ledger->db, &job, "nope", &found), COFFER_OK);
    wait_for(&w, 4);
    assert_int_equal(job.status, COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(w.done, 4); /* exactly once each */
}

static void test_remaining_reads_match_their_blocking_twins(void **state)
{
    test_ledger *ledger = *state;
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    coffer_event a = account_event("a", "EUR");
    a.flags |= COFFER_FLAG_MIN_UNBOUNDED;
    submit_event(ledger->db, a);
    submit_event(ledger->db, account_event("b", "EUR"));
    hold(ledger->db, "h1", "a", "b", 5, 60000);
    coffer_transfer holds[2];
    size_t count = 99;
    coffer_job job = new_job(&w);
    assert_int_equal(coffer_holds_list_async(ledger->db, &job, "zz", 2, holds, &count), COFFER_OK);
    wait_for(&w, 1);
    assert_int_equal(job.status, COFFER_ACCOUNT_NOT_FOUND);
    assert_int_equal(count, 0);
    job = new_job(&w);
    assert_int_equal(coffer_holds_list_async(ledger->db, &job, "a", 2, holds, &count), COFFER_OK);
    wait_for(&w, 2);
    assert_int_equal(count, 1);
    assert_string_equal(holds[0].id, "h1");
    coffer_verify_report report;
    job = new_job(&w);
    assert_int_equal(coffer_verify_async(ledger->db, &job, &report), COFFER_OK);
    wait_for(&w, 3);
    assert_true(report.ok);
    assert_int_equal(report.accounts_checked, 2);
    coffer_stats stats;
    job = new_job(&w);
    assert_int_equal(coffer_stats_get_async(ledger->db, &job, &stats), COFFER_OK);
    wait_for(&w, 4);
    assert_int_equal(stats.holds_pending, 1);
    assert_int_equal(coffer_health(ledger->db), COFFER_OK);
    assert_int_equal(coffer_health(NULL), COFFER_INVALID_ARGUMENT);
}

static void test_refused_calls_never_call_on_done(void **state)
{
    test_ledger *ledger = *state;
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    coffer_event event = account_event("a", "EUR");
    coffer_result result;
    coffer_job job = new_job(&w);
    assert_int_equal(coffer_submit_async(ledger->db, &job, &event, 0, false, &result),
                     COFFER_INVALID_ARGUMENT);
    assert_int_equal(
        coffer_submit_async(ledger->db, &job, &event, COFFER_BATCH_EVENTS_MAX + 1, false, &result),
        COFFER_BATCH_TOO_LARGE);
    assert_int_equal(coffer_submit_async(NULL, &job, &event, 1, false, &result),
                     COFFER_INVALID_ARGUMENT);
    coffer_account account;
    assert_int_equal(coffer_account_get_async(ledger->db, &job, "a", 9, 0, &account),
                     COFFER_INVALID_ARGUMENT);
    coffer_job no_callback = {0};
    assert_int_equal(coffer_submit_async(ledger->db, &no_callback, &event, 1, false, &result),
                     COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_stats_get_async(ledger->db, NULL, 0), COFFER_INVALID_ARGUMENT);
    char too_long[COFFER_SUBMITTER_MAX + 2];
    memset(too_long, 'n', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = 0;
    assert_int_equal(coffer_submit_as_async(ledger->db, &job, too_long, &event, 1, false, &result),
                     COFFER_INVALID_ARGUMENT);
    /* A job that was queued afterwards is the first and only one answered. */
    too_long[COFFER_SUBMITTER_MAX] = 0; /* at the limit: accepted */
    assert_int_equal(coffer_submit_as_async(ledger->db, &job, too_long, &event, 1, false, &result),
                     COFFER_OK);
    wait_for(&w, 1);
    assert_int_equal(w.done, 1);
    assert_int_equal(result.code, COFFER_CREATED);
}

/* on_done of the first job starts the second: allowed, since it does not wait. */
typedef struct chain {
    waiter *w;
    coffer *db;
    coffer_job second;
    coffer_account account;
    int started;
} chain;

static void start_second(coffer_job *job)
{
    chain *c = job->context;
    c->started = coffer_account_get_async(c->db, &c->second, "a", COFFER_AT_NOW, 0, &c->account);
    if (c->started != COFFER_OK)
        job_done(&c->second); /* let the test see the refusal rather than hang */
}

static void test_on_done_may_start_another_job(void **state)
{
    test_ledger *ledger = *state;
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    chain c = {&w, ledger->db, new_job(&w), {{0}}, -1};
    coffer_event event = account_event("a", "EUR");
    coffer_result result;
    coffer_job first = {.on_done = start_second, .context = &c};
    assert_int_equal(coffer_submit_async(ledger->db, &first, &event, 1, false, &result), COFFER_OK);
    wait_for(&w, 1);
    assert_int_equal(c.started, COFFER_OK);
    assert_int_equal(c.second.status, COFFER_OK);
    assert_string_equal(c.account.id, "a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit_and_reads_answer_through_on_done, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test_setup_teardown(test_remaining_reads_match_their_blocking_twins,
                                        ledger_setup, ledger_teardown),
        cmocka_unit_test_setup_teardown(test_refused_calls_never_call_on_done, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test_setup_teardown(test_on_done_may_start_another_job, ledger_setup,
                                        ledger_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
