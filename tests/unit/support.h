/*
 * support.h — shared helpers for coffer's cmocka unit tests: an in-memory engine whose clock the
 * test drives (coffer_options.clock_ns), event builders, and one-call wrappers that submit one
 * event and hand back its result. Everything goes through the public API in coffer.h only.
 */
#ifndef COFFER_TESTS_UNIT_SUPPORT_H
#define COFFER_TESTS_UNIT_SUPPORT_H

#include <pthread.h>

/* cmocka needs these before its own header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coffer.h"

/* The fake clock starts at a fixed wall time (2023-11-14) so timestamps are predictable. */
#define TEST_CLOCK_START_NS 1700000000000000000ULL
#define TEST_NS_PER_MS 1000000ULL

/* The fixture every test gets as *state: an in-memory engine and the clock it reads. */
typedef struct test_ledger {
    coffer *db;
    uint64_t clock_ns; /* read by the engine's writer thread: only touch it atomically */
} test_ledger;

static inline uint64_t test_clock_read(void *context)
{
    test_ledger *ledger = context;
    return __atomic_load_n(&ledger->clock_ns, __ATOMIC_SEQ_CST);
}

static inline void clock_set(test_ledger *ledger, uint64_t now_ns)
{
    __atomic_store_n(&ledger->clock_ns, now_ns, __ATOMIC_SEQ_CST);
}

static inline void clock_advance_ms(test_ledger *ledger, uint64_t milliseconds)
{
    __atomic_add_fetch(&ledger->clock_ns, milliseconds * TEST_NS_PER_MS, __ATOMIC_SEQ_CST);
}

/* Opens an in-memory engine with the fake clock at TEST_CLOCK_START_NS; a capacity of 0
 * keeps the default. */
static inline test_ledger *ledger_open_sized(uint32_t accounts_max, uint32_t transfers_max)
{
    test_ledger *ledger = calloc(1, sizeof(*ledger));
    assert_non_null(ledger);
    ledger->clock_ns = TEST_CLOCK_START_NS;
    coffer_options options;
    coffer_options_init(&options);
    if (accounts_max != 0)
        options.accounts_max = accounts_max;
    if (transfers_max != 0)
        options.transfers_max = transfers_max;
    options.clock_ns = test_clock_read;
    options.clock_context = ledger;
    assert_int_equal(coffer_open(NULL, &options, &ledger->db), COFFER_OK);
    assert_non_null(ledger->db);
    return ledger;
}

static inline test_ledger *ledger_open(void)
{
    return ledger_open_sized(0, 0);
}

static inline void ledger_close(test_ledger *ledger)
{
    if (ledger == NULL)
        return;
    coffer_close(ledger->db);
    free(ledger);
}

/* cmocka setup/teardown pair: a fresh empty ledger per test. */
static inline int ledger_setup(void **state)
{
    *state = ledger_open();
    return 0;
}

static inline int ledger_teardown(void **state)
{
    ledger_close(*state);
    *state = NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Event builders: plain values the test may tweak before submitting.                       */

static inline coffer_event account_event(const char *id, const char *currency)
{
    coffer_event event = {0};
    event.op = COFFER_OP_CREATE_ACCOUNT;
    event.id = id;
    event.currency = currency;
    return event;
}

static inline coffer_event transfer_event(const char *id, const char *from, const char *to,
                                          int64_t amount)
{
    coffer_event event = {0};
    event.op = COFFER_OP_TRANSFER;
    event.id = id;
    event.from = from;
    event.to = to;
    event.amount = amount;
    return event;
}

static inline coffer_event hold_event(const char *id, const char *from, const char *to,
                                      int64_t amount, uint64_t timeout_ms)
{
    coffer_event event = transfer_event(id, from, to, amount);
    event.hold_timeout_ms = timeout_ms;
    return event;
}

static inline coffer_event post_event(const char *id, const char *hold_id, int64_t amount)
{
    coffer_event event = {0};
    event.op = COFFER_OP_POST;
    event.id = id;
    event.hold_id = hold_id;
    event.amount = amount;
    return event;
}

static inline coffer_event void_event(const char *id, const char *hold_id)
{
    coffer_event event = {0};
    event.op = COFFER_OP_VOID;
    event.id = id;
    event.hold_id = hold_id;
    return event;
}

static inline coffer_event with_metadata(coffer_event event, const char *metadata)
{
    event.metadata = metadata;
    event.metadata_len = metadata == NULL ? 0 : (uint32_t)strlen(metadata);
    return event;
}

/* ---------------------------------------------------------------------------------------- */
/* Submitting.                                                                              */

/* Submits `count` events and asserts the call itself succeeded (each result has its code). */
static inline void submit_batch(coffer *db, const coffer_event *events, size_t count, bool atomic,
                                coffer_result *results)
{
    memset(results, 0, count * sizeof(*results));
    assert_int_equal(coffer_submit(db, events, count, atomic, results), COFFER_OK);
}

static inline coffer_result submit_event(coffer *db, coffer_event event)
{
    coffer_result result;
    submit_batch(db, &event, 1, false, &result);
    return result;
}

static inline coffer_result transfer(coffer *db, const char *id, const char *from, const char *to,
                                     int64_t amount)
{
    return submit_event(db, transfer_event(id, from, to, amount));
}

static inline coffer_result hold(coffer *db, const char *id, const char *from, const char *to,
                                 int64_t amount, uint64_t timeout_ms)
{
    return submit_event(db, hold_event(id, from, to, amount, timeout_ms));
}

static inline coffer_result post_hold(coffer *db, const char *id, const char *hold_id,
                                      int64_t amount)
{
    return submit_event(db, post_event(id, hold_id, amount));
}

static inline coffer_result void_hold(coffer *db, const char *id, const char *hold_id)
{
    return submit_event(db, void_event(id, hold_id));
}

/* Creates an account with the given floor/cap flags and asserts it was created. */
static inline coffer_result create_account_with(coffer *db, const char *id, const char *currency,
                                                uint8_t flags, int64_t min_balance,
                                                int64_t max_balance)
{
    coffer_event event = account_event(id, currency);
    event.flags = flags;
    event.min_balance = min_balance;
    event.max_balance = max_balance;
    coffer_result result = submit_event(db, event);
    assert_int_equal(result.code, COFFER_CREATED);
    return result;
}

/* An ordinary account: floor 0, no cap. */
static inline coffer_result create_account(coffer *db, const char *id, const char *currency)
{
    return create_account_with(db, id, currency, 0, 0, 0);
}

/* A funding/issuer account: no floor, so it can go as negative as it issues. */
static inline coffer_result create_issuer(coffer *db, const char *id, const char *currency)
{
    return create_account_with(db, id, currency, COFFER_FLAG_MIN_UNBOUNDED, 0, 0);
}

static inline coffer_result create_capped(coffer *db, const char *id, const char *currency,
                                          int64_t max_balance)
{
    return create_account_with(db, id, currency, COFFER_FLAG_HAS_MAX, 0, max_balance);
}

/* A plain transfer that must succeed (setting up balances). */
static inline coffer_result fund(coffer *db, const char *id, const char *from, const char *to,
                                 int64_t amount)
{
    coffer_result result = transfer(db, id, from, to, amount);
    assert_int_equal(result.code, COFFER_CREATED);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading and asserting.                                                                   */

static inline coffer_account account_get(coffer *db, const char *id)
{
    coffer_account account;
    memset(&account, 0, sizeof(account));
    assert_int_equal(coffer_account_get(db, id, COFFER_AT_NOW, 0, &account), COFFER_OK);
    return account;
}

static inline int64_t balance_of(coffer *db, const char *id)
{
    return account_get(db, id).balance;
}

static inline int64_t available_of(coffer *db, const char *id)
{
    return account_get(db, id).available;
}

static inline uint64_t version_of(coffer *db, const char *id)
{
    return account_get(db, id).version;
}

static inline coffer_transfer transfer_get(coffer *db, const char *id)
{
    coffer_transfer record;
    memset(&record, 0, sizeof(record));
    assert_int_equal(coffer_transfer_get(db, id, &record), COFFER_OK);
    return record;
}

/* The id has a recorded outcome with this code (and REJECTED state for a rejection). */
static inline void assert_recorded(coffer *db, const char *id, int code)
{
    coffer_transfer record = transfer_get(db, id);
    assert_int_equal(record.code, code);
    assert_string_equal(record.id, id);
    if (!coffer_code_is_success(code))
        assert_int_equal(record.state, COFFER_STATE_REJECTED);
}

static inline void assert_not_recorded(coffer *db, const char *id)
{
    coffer_transfer record;
    assert_int_equal(coffer_transfer_get(db, id, &record), COFFER_TRANSFER_NOT_FOUND);
}

static inline void assert_field(const char *actual, const char *expected)
{
    assert_non_null(actual);
    assert_string_equal(actual, expected);
}

/* Two reads of the same account show no change to money or version. */
static inline void assert_account_unchanged(const coffer_account *before,
                                            const coffer_account *after)
{
    assert_string_equal(before->id, after->id);
    assert_int_equal(before->debits_posted, after->debits_posted);
    assert_int_equal(before->credits_posted, after->credits_posted);
    assert_int_equal(before->debits_held, after->debits_held);
    assert_int_equal(before->credits_held, after->credits_held);
    assert_int_equal(before->balance, after->balance);
    assert_int_equal(before->available, after->available);
    assert_int_equal(before->version, after->version);
}

/* The number of history entries of an account (at most `limit` looked at). */
static inline size_t history_count(coffer *db, const char *account_id)
{
    enum { limit = 256 };
    coffer_history_entry entries[limit];
    size_t count = 0;
    assert_int_equal(coffer_history(db, account_id, 0, limit, entries, &count), COFFER_OK);
    return count;
}

/* The newest history entry of an account, which must have at least one. */
static inline coffer_history_entry history_last(coffer *db, const char *account_id)
{
    enum { limit = 256 };
    coffer_history_entry entries[limit];
    size_t count = 0;
    assert_int_equal(coffer_history(db, account_id, 0, limit, entries, &count), COFFER_OK);
    assert_true(count > 0 && count < limit);
    return entries[count - 1];
}

/* A string of `length` copies of `c` in a caller buffer of at least length + 1 bytes. */
static inline const char *repeat_char(char *buffer, char c, size_t length)
{
    memset(buffer, c, length);
    buffer[length] = '\0';
    return buffer;
}

static inline void verify_ok(coffer *db)
{
    coffer_verify_report report;
    memset(&report, 0, sizeof(report));
    assert_int_equal(coffer_verify(db, &report), COFFER_OK);
    for (uint32_t i = 0; i < report.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++) {
        print_error("verify problem: %s\n", report.problems[i]);
    }
    assert_int_equal(report.problem_count, 0);
    assert_true(report.ok);
}

/* ---- submitting under a name (coffer_submit_as_async, waited for) -------------------------- */

typedef struct submitted {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool done;
} submitted;

static inline void submit_done(coffer_job *job)
{
    submitted *s = job->context;
    pthread_mutex_lock(&s->mutex);
    s->done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mutex);
}

/* Submits `count` events under `submitted_by` and waits: the job's status (OK when every
 * event has its result). */
static inline int submit_batch_as(coffer *db, const char *submitted_by, const coffer_event *events,
                                  size_t count, bool atomic, coffer_result *results)
{
    submitted s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    coffer_job job = {.on_done = submit_done, .context = &s};
    assert_int_equal(coffer_submit_as_async(db, &job, submitted_by, events, count, atomic, results),
                     COFFER_OK);
    pthread_mutex_lock(&s.mutex);
    while (!s.done)
        pthread_cond_wait(&s.cond, &s.mutex);
    pthread_mutex_unlock(&s.mutex);
    return job.status;
}

/* One event under `submitted_by`, which the engine must take. */
static inline void submit_as(coffer *db, const char *submitted_by, const coffer_event *event,
                             coffer_result *result)
{
    assert_int_equal(submit_batch_as(db, submitted_by, event, 1, false, result), COFFER_OK);
}

#endif /* COFFER_TESTS_UNIT_SUPPORT_H */
