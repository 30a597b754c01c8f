/*
 * test_verify.c — the live check of a ledger too large to scan on the writer (it runs in a
 * forked child): its report arrives whole, callers that arrive during a check all get one
 * report, on_done may start the next check, and checks taken while others write always see a
 * state between two batches.
 */
#include <pthread.h>
#include <string.h>

#include "support.h"

/* More accounts and transfers than the engine scans on its writer (16,384): checked in a child. */
#define FORKED_TRANSFERS 17000

/* bank -> alice transfers t<first>..., in batches; every third a hold. */
static void fill(coffer *db, int first, int count)
{
    static coffer_event events[COFFER_BATCH_EVENTS_MAX];
    static coffer_result results[COFFER_BATCH_EVENTS_MAX];
    static char ids[COFFER_BATCH_EVENTS_MAX][24];
    for (int done = 0; done < count;) {
        int batch = count - done < COFFER_BATCH_EVENTS_MAX ? count - done : COFFER_BATCH_EVENTS_MAX;
        for (int i = 0; i < batch; i++) {
            snprintf(ids[i], sizeof ids[i], "t%d", first + done + i);
            events[i] = (first + done + i) % 3 == 2 ? hold_event(ids[i], "bank", "alice", 5, 60000)
                                                    : transfer_event(ids[i], "bank", "alice", 2);
        }
        submit_batch(db, events, (size_t)batch, true, results);
        done += batch;
    }
}

static void open_large(coffer *db)
{
    create_issuer(db, "bank", "KRW");
    create_account(db, "alice", "KRW");
    fill(db, 0, FORKED_TRANSFERS);
}

static void test_large_ledger_report_arrives_whole(void **state)
{
    test_ledger *fixture = *state;
    open_large(fixture->db);
    coffer_verify_report report;
    memset(&report, 0xAA, sizeof report);
    assert_int_equal(coffer_verify(fixture->db, &report), COFFER_OK);
    assert_true(report.ok);
    assert_int_equal(report.problem_count, 0);
    assert_int_equal(report.accounts_checked, 2);
    assert_int_equal(report.transfers_checked, FORKED_TRANSFERS);
}

/* A clock that stops the writer inside a batch until the test lets it go. */
typedef struct gate {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    bool closed, writer_waiting;
} gate;

static uint64_t gate_clock(void *context)
{
    gate *g = context;
    pthread_mutex_lock(&g->mutex);
    while (g->closed) {
        g->writer_waiting = true;
        pthread_cond_broadcast(&g->changed);
        pthread_cond_wait(&g->changed, &g->mutex);
    }
    pthread_mutex_unlock(&g->mutex);
    return TEST_CLOCK_START_NS;
}

typedef struct answers {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    int count;
    coffer *db;
    coffer_job *next; /* started by the first on_done, when set */
    coffer_verify_report *next_report;
} answers;

static void answered(coffer_job *job)
{
    answers *a = job->context;
    if (a->next) {
        coffer_job *next = a->next;
        a->next = 0;
        assert_int_equal(coffer_verify_async(a->db, next, a->next_report), COFFER_OK);
    }
    pthread_mutex_lock(&a->mutex);
    a->count++;
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->mutex);
}

static void wait_answers(answers *a, int count)
{
    pthread_mutex_lock(&a->mutex);
    while (a->count < count)
        pthread_cond_wait(&a->changed, &a->mutex);
    pthread_mutex_unlock(&a->mutex);
}

#define JOINERS 8

static void test_callers_during_a_check_join_it(void **state)
{
    (void)state;
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    coffer_options options;
    coffer_options_init(&options);
    options.clock_ns = gate_clock;
    options.clock_context = &g;
    coffer *db;
    assert_int_equal(coffer_open(NULL, &options, &db), COFFER_OK);
    open_large(db);
    pthread_mutex_lock(&g.mutex);
    g.closed = true;
    pthread_mutex_unlock(&g.mutex);
    answers a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, db, 0, 0};
    coffer_event second = account_event("carol", "KRW");
    coffer_result result;
    coffer_job jobs[JOINERS + 1];
    coffer_verify_report reports[JOINERS];
    jobs[JOINERS] = (coffer_job){.on_done = answered, .context = &a};
    assert_int_equal(coffer_submit_async(db, &jobs[JOINERS], &second, 1, false, &result),
                     COFFER_OK);
    pthread_mutex_lock(&g.mutex);
    while (!g.writer_waiting)
        pthread_cond_wait(&g.changed, &g.mutex);
    pthread_mutex_unlock(&g.mutex);
    /* The writer is stopped inside the batch that creates carol: no check can finish yet. */
    for (int i = 0; i < JOINERS; i++) {
        jobs[i] = (coffer_job){.on_done = answered, .context = &a};
        assert_int_equal(coffer_verify_async(db, &jobs[i], &reports[i]), COFFER_OK);
    }
    pthread_mutex_lock(&g.mutex);
    g.closed = false;
    pthread_cond_broadcast(&g.changed);
    pthread_mutex_unlock(&g.mutex);
    wait_answers(&a, JOINERS + 1);
    for (int i = 0; i < JOINERS; i++) {
        assert_int_equal(jobs[i].status, COFFER_OK);
        assert_true(reports[i].ok);
        assert_int_equal(reports[i].accounts_checked, 3); /* queued after carol: it sees her */
        assert_memory_equal(&reports[i], &reports[0], sizeof reports[0]);
    }
    coffer_close(db);
}

static void test_on_done_may_start_the_next_check(void **state)
{
    test_ledger *fixture = *state;
    coffer *db = fixture->db;
    open_large(db);
    coffer_verify_report first, second;
    coffer_job second_job;
    answers a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, db, &second_job, &second};
    second_job = (coffer_job){.on_done = answered, .context = &a};
    coffer_job first_job = {.on_done = answered, .context = &a};
    assert_int_equal(coffer_verify_async(db, &first_job, &first), COFFER_OK);
    wait_answers(&a, 2);
    assert_int_equal(first_job.status, COFFER_OK);
    assert_int_equal(second_job.status, COFFER_OK);
    assert_true(first.ok && second.ok);
}

#define WRITER_BATCHES 200
#define WRITER_BATCH_EVENTS 10
#define CHECKS_DURING_WRITES 6 /* each waits for the writer's rest after the one before */

static void *write_transfers(void *argument)
{
    coffer *db = argument;
    for (int batch = 0; batch < WRITER_BATCHES; batch++) {
        coffer_event events[WRITER_BATCH_EVENTS];
        char ids[WRITER_BATCH_EVENTS][32];
        for (int i = 0; i < WRITER_BATCH_EVENTS; i++) {
            snprintf(ids[i], sizeof ids[i], "t%d-%d", batch, i);
            events[i] = i % 3 == 2 ? hold_event(ids[i], "bank", "alice", 5, 60000)
                                   : transfer_event(ids[i], "bank", "alice", 1 + i);
        }
        coffer_result results[WRITER_BATCH_EVENTS];
        submit_batch(db, events, WRITER_BATCH_EVENTS, true, results);
    }
    return 0;
}

static void test_checks_during_writes_see_whole_batches(void **state)
{
    test_ledger *fixture = *state;
    coffer *db = fixture->db;
    open_large(db);
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, 0, write_transfers, db), 0);
    uint64_t checked_before = 0;
    for (int i = 0; i < CHECKS_DURING_WRITES; i++) {
        coffer_verify_report report;
        assert_int_equal(coffer_verify(db, &report), COFFER_OK);
        assert_true(report.ok);
        assert_int_equal(report.transfers_checked % WRITER_BATCH_EVENTS, 0); /* whole batches */
        assert_true(report.transfers_checked >= checked_before);
        checked_before = report.transfers_checked;
    }
    pthread_join(writer, 0);
    verify_ok(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_large_ledger_report_arrives_whole, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test(test_callers_during_a_check_join_it),
        cmocka_unit_test_setup_teardown(test_on_done_may_start_the_next_check, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test_setup_teardown(test_checks_during_writes_see_whole_batches, ledger_setup,
                                        ledger_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
