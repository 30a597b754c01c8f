/*
 * verify.c — the live invariant check (coffer_verify): per currency the balances sum to zero,
 * every account within its limits, held totals equal the sum of pending holds, versions and
 * history agree, and every id maps to exactly one recorded outcome.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

__attribute__((format(printf, 2, 3))) void engine_problem(coffer_verify_report *report,
                                                          const char *format, ...)
{
    if (report->problem_count < COFFER_VERIFY_PROBLEMS_MAX) {
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(report->problems[report->problem_count], sizeof report->problems[0], format,
                  arguments);
        va_end(arguments);
    }
    report->problem_count++;
}

typedef struct currency_sum {
    char currency[16];
    __int128 balance;
} currency_sum;

static void check_currencies(const store *s, coffer_verify_report *report)
{
    currency_sum sums[64];
    size_t count = 0;
    for (uint64_t i = 0; i < s->accounts_count; i++) {
        const store_account *a = &s->accounts[i];
        size_t slot = 0;
        while (slot < count && memcmp(sums[slot].currency, a->currency, 16) != 0)
            slot++;
        if (slot == count) {
            if (count == 64) {
                engine_problem(report, "more than 64 currencies: sums not checked");
                return;
            }
            memcpy(sums[count].currency, a->currency, 16);
            sums[count++].balance = 0;
        }
        sums[slot].balance += (__int128)a->credits_posted - a->debits_posted;
    }
    for (size_t slot = 0; slot < count; slot++)
        if (sums[slot].balance != 0)
            engine_problem(report, "currency %.12s: balances sum to %lld, not 0",
                           sums[slot].currency, (long long)sums[slot].balance);
}

static void check_account(const store *s, uint64_t index, const __int128 *held,
                          coffer_verify_report *report)
{
    const store_account *a = &s->accounts[index];
    const char *id = store_account_id(s, a);
    int length = a->id_len;
    __int128 balance = (__int128)a->credits_posted - a->debits_posted;
    __int128 available = balance - a->debits_held;
    if (a->debits_posted < 0 || a->credits_posted < 0 || a->debits_held < 0 || a->credits_held < 0)
        engine_problem(report, "account %.*s: a negative total", length, id);
    if (!(a->flags & COFFER_FLAG_MIN_UNBOUNDED) && available < a->min_balance)
        engine_problem(report, "account %.*s: available %lld below min_balance %lld", length, id,
                       (long long)available, (long long)a->min_balance);
    if ((a->flags & COFFER_FLAG_HAS_MAX) && balance + a->credits_held > a->max_balance)
        engine_problem(report, "account %.*s: balance with credits held above max_balance", length,
                       id);
    if (held[2 * index] != a->debits_held || held[2 * index + 1] != a->credits_held)
        engine_problem(report, "account %.*s: held totals differ from the sum of pending holds",
                       length, id);
    uint64_t entries = a->history_count;
    if (entries != (a->history_last == STORE_NONE ? 0 : s->history[a->history_last].ordinal + 1))
        engine_problem(report, "account %.*s: history chain and count disagree", length, id);
    if (a->version != entries + 1)
        engine_problem(report, "account %.*s: version %llu but %llu history entries", length, id,
                       (unsigned long long)a->version, (unsigned long long)entries);
    if (entries && (s->history[a->history_last].balance != balance ||
                    s->history[a->history_last].available != available))
        engine_problem(report, "account %.*s: last history entry differs from the balance", length,
                       id);
}

static void check_transfers(const store *s, __int128 *held, coffer_verify_report *report)
{
    uint64_t pending = 0;
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        const char *id = store_transfer_id(s, t);
        if (store_transfer_find(s, id, t->id_len, store_hash(id, t->id_len)) != i)
            engine_problem(report, "transfer %.*s: its id does not map to exactly one outcome",
                           (int)t->id_len, id);
        if ((t->state == COFFER_STATE_REJECTED) == (t->code == COFFER_CREATED))
            engine_problem(report, "transfer %.*s: state and outcome disagree", (int)t->id_len, id);
        if (t->state != COFFER_STATE_PENDING)
            continue;
        pending++;
        held[2 * (uint64_t)t->from] += t->amount;
        held[2 * (uint64_t)t->to + 1] += t->amount;
    }
    if (pending != s->holds_pending)
        engine_problem(report, "%llu pending holds but the count says %llu",
                       (unsigned long long)pending, (unsigned long long)s->holds_pending);
}

int engine_verify_store(const store *s, coffer_verify_report *report)
{
    memset(report, 0, sizeof *report);
    __int128 *held = calloc(2 * s->accounts_count + 2, sizeof *held);
    if (!held)
        return COFFER_OUT_OF_MEMORY;
    check_currencies(s, report);
    check_transfers(s, held, report);
    for (uint64_t i = 0; i < s->accounts_count; i++)
        check_account(s, i, held, report);
    free(held);
    report->accounts_checked = s->accounts_count;
    report->transfers_checked = s->transfers_count;
    report->ok = report->problem_count == 0;
    return COFFER_OK;
}

int engine_verify_read(coffer *db, void *context)
{
    return engine_verify_store(&db->store, context);
}

static int verify_start(coffer *db, coffer_job *job, coffer_verify_report *out)
{
    if (!db || !out)
        return COFFER_INVALID_ARGUMENT;
    engine_job_request(job, engine_verify_read, out);
    return engine_start(db, job);
}

int coffer_verify(coffer *db, coffer_verify_report *out)
{
    coffer_job job = {.on_done = 0};
    return verify_start(db, &job, out);
}

int coffer_verify_async(coffer *db, coffer_job *job, coffer_verify_report *out)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return verify_start(db, job, out);
}
