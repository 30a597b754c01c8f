/*
 * verify.c — the live invariant check (coffer_verify): per currency the balances sum to zero,
 * every account within its limits, held totals equal the sum of pending holds, versions and
 * history agree, and every id maps to exactly one recorded outcome. The scan runs in a forked
 * child, off the writer.
 */
#define _GNU_SOURCE /* pipe2, pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "base/clock.h"
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

/* The entries memory holds of one account, newest to oldest: ordinals one apart, seqs going
 * down. The oldest held has ordinal 0 unless the store was trimmed, and then it is newer than
 * the horizon. Bounded by the table's size, so a looping chain is a problem, not a hang. */
static bool history_chain_ok(const store *s, const store_account *a)
{
    uint64_t steps = 0;
    for (uint32_t entry = a->history_last; entry != STORE_NONE; steps++) {
        if (entry >= s->history_count || steps > s->history_count)
            return false;
        const store_history *h = &s->history[entry];
        if (h->previous == STORE_NONE)
            return h->ordinal == 0 || s->trimmed_seq > 0; /* older ones evicted */
        if (h->previous >= s->history_count)
            return false;
        const store_history *older = &s->history[h->previous];
        if (older->ordinal + 1 != h->ordinal || older->seq >= h->seq)
            return false;
        entry = h->previous;
    }
    return true;
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
    /* A trimmed store may hold none of an account's entries, never some of the newest. */
    bool chain_ok = a->history_last == STORE_NONE
                        ? entries == 0 || s->trimmed_seq > 0
                        : entries == (uint64_t)s->history[a->history_last].ordinal + 1;
    if (!chain_ok || !history_chain_ok(s, a))
        engine_problem(report, "account %.*s: history chain and count disagree", length, id);
    if (a->version != entries + 1)
        engine_problem(report, "account %.*s: version %llu but %llu history entries", length, id,
                       (unsigned long long)a->version, (unsigned long long)entries);
    if (a->history_last != STORE_NONE && (s->history[a->history_last].balance != balance ||
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

/* Room for the held totals a scan adds up: two per account. */
static __int128 *held_totals_new(const store *s)
{
    return calloc(2 * s->accounts_count + 2, sizeof(__int128));
}

/* The scan itself, into `held` (zeroed, from held_totals_new): allocates nothing, so that a
 * forked child can run it whatever allocator the host process uses. */
static void verify_scan(const store *s, __int128 *held, coffer_verify_report *report)
{
    memset(report, 0, sizeof *report);
    check_currencies(s, report);
    check_transfers(s, held, report);
    for (uint64_t i = 0; i < s->accounts_count; i++)
        check_account(s, i, held, report);
    report->accounts_checked = s->accounts_count;
    report->transfers_checked = s->transfers_count;
    report->ok = report->problem_count == 0;
}

int engine_verify_store(const store *s, coffer_verify_report *report)
{
    __int128 *held = held_totals_new(s);
    if (!held) {
        memset(report, 0, sizeof *report);
        return COFFER_OUT_OF_MEMORY;
    }
    verify_scan(s, held, report);
    free(held);
    return COFFER_OK;
}

/* ---- the live check, off the writer -------------------------------------------------------- */
/*
 * A full scan reads every account and transfer: seconds on a ledger of millions, during which
 * the writer could apply nothing if the scan ran on it. Instead the writer only forks, between
 * batches, as it does for snapshots: the child scans its copy-on-write image of the store at
 * that seq and sends the report through a pipe, while the writer goes on. The writer pays for
 * the fork (copying page tables) and for the pages it writes first after it, not for the scan.
 *
 * One scan at a time, run by a verify thread the first call starts: a call that arrives while
 * a scan runs joins it and gets the same report, so any number of callers cost one scan, and a
 * client looping on verify keeps at most one child alive. The fork itself still stalls the
 * writer (6 ms for 200,000 transfers on a small VM), so checks are also paced: the next waits
 * until the writer's share of time spent on checks is down to ENGINE_VERIFY_WRITER_PERCENT;
 * without that, a looping client made every write wait on a fork several times a second. A joining
 * caller's report may describe a state a few batches older than its call: the invariants hold at
 * every seq, so a problem they show is a problem all the same.
 *
 * No counter is kept incrementally on the writer for this: a per-currency sum updated by the
 * same code that updates the balances would restate that code, not check it. The scan
 * recomputes every total from the accounts and transfers themselves.
 */

/* What the child sends back: the scan's status and its report. */
typedef struct verify_message {
    int status;
    coffer_verify_report report;
} verify_message;

/* What the writer leaves the verify thread: a report it made itself, or a child to wait for. */
typedef struct verify_fork {
    coffer_verify_report *report;
    pid_t child; /* 0 when the writer scanned without forking */
    int report_fd;
    uint64_t writer_ns; /* how long the writer spent on it (the fork, or the scan) */
} verify_fork;

static void write_all(int fd, const void *bytes, size_t length)
{
    const char *next = bytes;
    while (length > 0) {
        ssize_t written = write(fd, next, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            _exit(1);
        next += written;
        length -= (size_t)written;
    }
}

/* In the child: only the scan, a write and _exit (no atexit handlers, no stdio flush, no
 * allocation: `held` was allocated before the fork). The data directory's lock is let go, so
 * that a parent that dies mid-scan can be restarted at once. */
static void verify_child(coffer *db, __int128 *held, int report_fd)
{
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    verify_message message;
    memset(&message, 0, sizeof message);
    message.status = COFFER_OK;
    verify_scan(&db->store, held, &message.report);
    write_all(report_fd, &message, sizeof message);
    _exit(0);
}

/* On the writer, between batches: forks the child that scans the store as it is now. A small
 * store is scanned here instead: that takes less than a fork, and spares the writer the page
 * faults that follow one (the first write to every page shared with the child). */
static int verify_fork_or_scan(coffer *db, verify_fork *forked)
{
    const store *s = &db->store;
    if (s->accounts_count + s->transfers_count <= db->verify.inline_records_max)
        return engine_verify_store(s, forked->report);
    /* Zeroed pages mapped lazily: cheap here, and the child writes its own copies. */
    __int128 *held = held_totals_new(s);
    if (!held)
        return COFFER_OUT_OF_MEMORY;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        engine_log(db, "verify: pipe failed: %s", strerror(errno));
        free(held);
        return COFFER_INTERNAL;
    }
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        verify_child(db, held, fds[1]);
    }
    free(held);
    close(fds[1]); /* the read end sees end-of-file once the child exits */
    if (child < 0) {
        engine_log(db, "verify: fork failed: %s", strerror(errno));
        close(fds[0]);
        return COFFER_OUT_OF_MEMORY;
    }
    forked->child = child;
    forked->report_fd = fds[0];
    return COFFER_OK;
}

static int verify_fork_read(coffer *db, void *context)
{
    verify_fork *forked = context;
    uint64_t started_ns = clock_monotonic_ns();
    int status = verify_fork_or_scan(db, forked);
    forked->writer_ns = clock_monotonic_ns() - started_ns;
    return status;
}

/* Reads the child's report and reaps it: internal if it died before sending it all. */
static int verify_collect(verify_fork *forked)
{
    verify_message message;
    size_t received = 0;
    while (received < sizeof message) {
        ssize_t got =
            read(forked->report_fd, (char *)&message + received, sizeof message - received);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        received += (size_t)got;
    }
    close(forked->report_fd);
    int status = 0;
    while (waitpid(forked->child, &status, 0) < 0 && errno == EINTR)
        ;
    if (received != sizeof message || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return COFFER_INTERNAL;
    *forked->report = message.report;
    return message.status;
}

/* One full check: the writer forks (queued like any read, so it sees every batch before it),
 * this thread waits for the child. */
static int verify_run(coffer *db, coffer_verify_report *report, uint64_t *writer_ns)
{
    coffer_job job = {.on_done = 0};
    verify_fork forked = {.report = report, .child = 0, .report_fd = -1};
    engine_job_request(&job, verify_fork_read, &forked);
    int status = engine_start(db, &job); /* blocks: this is not an engine thread */
    /* A fork whose batch then failed to be durable still leaves a child to reap. */
    int collected = forked.child ? verify_collect(&forked) : COFFER_OK;
    *writer_ns = forked.writer_ns;
    return status != COFFER_OK ? status : collected;
}

/* Waits (verify->mutex held) until a caller is waiting and the writer has had its rest since
 * the last check; false when stopping with nobody waiting. */
static bool verify_wait_turn(engine_verify *verify, uint64_t resume_ns)
{
    for (;;) {
        uint64_t now_ns = clock_monotonic_ns();
        if (verify->stopping || (verify->waiters && now_ns >= resume_ns))
            return verify->waiters != 0;
        if (!verify->waiters) {
            pthread_cond_wait(&verify->wake, &verify->mutex);
            continue;
        }
        struct timespec deadline; /* the condition waits on the realtime clock */
        clock_gettime(CLOCK_REALTIME, &deadline);
        uint64_t until_ns = (uint64_t)deadline.tv_nsec + (resume_ns - now_ns);
        deadline.tv_sec += (time_t)(until_ns / 1000000000u);
        deadline.tv_nsec = (long)(until_ns % 1000000000u);
        pthread_cond_timedwait(&verify->wake, &verify->mutex, &deadline);
    }
}

/* Answers every waiting caller with the report of one run, then waits for the next caller. */
static void *verify_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-verify");
    coffer *db = argument;
    engine_verify *verify = &db->verify;
    uint64_t resume_ns = 0;
    pthread_mutex_lock(&verify->mutex);
    while (verify_wait_turn(verify, resume_ns)) {
        pthread_mutex_unlock(&verify->mutex);
        coffer_verify_report report;
        memset(&report, 0, sizeof report);
        uint64_t writer_ns = 0;
        int status = verify_run(db, &report, &writer_ns);
        /* A client looping on verify gets at most ENGINE_VERIFY_WRITER_PERCENT of the writer. */
        uint64_t rest_ns = writer_ns * (100 / ENGINE_VERIFY_WRITER_PERCENT - 1);
        resume_ns = clock_monotonic_ns() +
                    (rest_ns < ENGINE_VERIFY_REST_MAX_NS ? rest_ns : ENGINE_VERIFY_REST_MAX_NS);
        pthread_mutex_lock(&verify->mutex);
        engine_request *answered = verify->waiters; /* those who came during the run join it */
        verify->waiters = 0;
        pthread_mutex_unlock(&verify->mutex);
        for (engine_request *request = answered; request; request = request->next) {
            request->status = status;
            if (status == COFFER_OK)
                memcpy(request->context, &report, sizeof report);
        }
        engine_release(db, answered, COFFER_OK); /* calls on_done outside every lock */
        pthread_mutex_lock(&verify->mutex);
    }
    pthread_mutex_unlock(&verify->mutex);
    return 0;
}

void engine_verify_init(coffer *db)
{
    memset(&db->verify, 0, sizeof db->verify);
    pthread_mutex_init(&db->verify.mutex, 0);
    pthread_cond_init(&db->verify.wake, 0);
    db->verify.inline_records_max = ENGINE_VERIFY_INLINE_RECORDS_MAX;
}

void engine_verify_stop(coffer *db)
{
    engine_verify *verify = &db->verify;
    pthread_mutex_lock(&verify->mutex);
    verify->stopping = true;
    pthread_cond_signal(&verify->wake);
    bool started = verify->thread_started;
    pthread_mutex_unlock(&verify->mutex);
    if (started)
        pthread_join(verify->thread, 0);
    COFFER_ASSERT(!verify->waiters); /* no call may run concurrently with coffer_close */
    pthread_cond_destroy(&verify->wake);
    pthread_mutex_destroy(&verify->mutex);
}

int coffer_verify_async(coffer *db, coffer_job *job, coffer_verify_report *out)
{
    if (!db || !out || !engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    engine_verify *verify = &db->verify;
    engine_request *request = engine_job_request(job, 0, out);
    int status = COFFER_OK;
    pthread_mutex_lock(&verify->mutex);
    if (verify->stopping)
        status = COFFER_SHUTTING_DOWN;
    else if (!verify->thread_started && pthread_create(&verify->thread, 0, verify_main, db) != 0)
        status = COFFER_INTERNAL;
    if (status == COFFER_OK) {
        verify->thread_started = true;
        request->next = verify->waiters;
        verify->waiters = request;
        pthread_cond_signal(&verify->wake);
    }
    pthread_mutex_unlock(&verify->mutex);
    return status;
}

/* The blocking call waits for its own job's on_done. */
typedef struct verify_wait {
    pthread_mutex_t mutex;
    pthread_cond_t answered;
    bool done;
} verify_wait;

static void verify_wait_done(coffer_job *job)
{
    verify_wait *wait = job->context;
    pthread_mutex_lock(&wait->mutex);
    wait->done = true;
    pthread_cond_signal(&wait->answered);
    pthread_mutex_unlock(&wait->mutex);
}

int coffer_verify(coffer *db, coffer_verify_report *out)
{
    verify_wait wait = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    coffer_job job = {.on_done = verify_wait_done, .context = &wait};
    int status = coffer_verify_async(db, &job, out);
    if (status != COFFER_OK)
        return status;
    pthread_mutex_lock(&wait.mutex);
    while (!wait.done)
        pthread_cond_wait(&wait.answered, &wait.mutex);
    pthread_mutex_unlock(&wait.mutex);
    pthread_cond_destroy(&wait.answered);
    pthread_mutex_destroy(&wait.mutex);
    return job.status;
}
