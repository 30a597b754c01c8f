/*
 * test_evict.c — a durable engine whose memory budget (16 MiB) is far smaller than its ledger
 * (a million transfers): memory evicts what the on-disk index holds, and still every id
 * replays its outcome, a changed retry is id_reused, old transfers, history pages and past
 * balances read back, verify passes, memory stays within its budget; a restart recovers from a
 * snapshot of the evicted state, a deleted index is rebuilt before recovery, and a kill -9
 * while the index is behind loses nothing acknowledged (its recovery evicting as it replays,
 * without evicting after every record).
 */
#include "unit/support.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "files.h"

#define BUDGET_BYTES (16ull << 20)
#define RESIDENT_OVERHEAD_BYTES (96ull << 20) /* what the process holds beside the budget */
#if defined(__SANITIZE_ADDRESS__)
#define RUNS_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RUNS_UNDER_ASAN 1
#endif
#endif
#ifndef RUNS_UNDER_ASAN
#define RUNS_UNDER_ASAN 0
#endif
#define ACCOUNTS 1000
#define TRANSFERS 1000000
#define BATCH 1000
#define SAMPLE_EVERY 997 /* transfers whose outcome the test keeps */
#define HOLD_EVERY 101   /* every 101st transfer is a hold that stays pending */
#define WATCHED_ACCOUNT 7
#define MORE_TRANSFERS (20 * BATCH) /* after a restart */
#define WATCHED_MAX ((TRANSFERS + MORE_TRANSFERS) / ACCOUNTS + 16)

typedef struct kept {
    uint32_t number; /* the transfer's number: its id, accounts and amount follow from it */
    uint64_t seq;
} kept;

typedef struct bulk {
    char dir[64];
    char index_path[96];
    uint64_t clock_ns;
    pthread_mutex_t log_mutex;
    char log[16384];
    kept *kept;
    size_t kept_count;
    /* The watched account's balance after each transfer to it, by seq, for past reads. */
    uint64_t *watched_seq;
    int64_t *watched_balance;
    size_t watched_count;
} bulk;

static uint64_t bulk_clock(void *context)
{
    return __atomic_load_n((uint64_t *)context, __ATOMIC_ACQUIRE);
}

static void bulk_log(void *context, const char *line)
{
    bulk *b = context;
    if (getenv("COFFER_TEST_LOG"))
        fprintf(stderr, "log: %s\n", line);
    pthread_mutex_lock(&b->log_mutex);
    size_t used = strlen(b->log);
    if (used + strlen(line) + 2 < sizeof b->log)
        snprintf(b->log + used, sizeof b->log - used, "%s\n", line);
    pthread_mutex_unlock(&b->log_mutex);
}

static bulk *bulk_create(void)
{
    bulk *b = calloc(1, sizeof *b);
    assert_non_null(b);
    snprintf(b->dir, sizeof b->dir, "/tmp/coffer-evict-XXXXXX");
    assert_non_null(mkdtemp(b->dir));
    snprintf(b->index_path, sizeof b->index_path, "%s/index", b->dir);
    b->clock_ns = TEST_CLOCK_START_NS;
    pthread_mutex_init(&b->log_mutex, 0);
    b->kept = calloc((TRANSFERS + MORE_TRANSFERS) / SAMPLE_EVERY + 2, sizeof *b->kept);
    b->watched_seq = calloc(WATCHED_MAX, sizeof *b->watched_seq);
    b->watched_balance = calloc(WATCHED_MAX, sizeof *b->watched_balance);
    assert_true(b->kept && b->watched_seq && b->watched_balance);
    return b;
}

static void bulk_free(bulk *b)
{
    remove_tree(b->dir);
    pthread_mutex_destroy(&b->log_mutex);
    free(b->kept);
    free(b->watched_seq);
    free(b->watched_balance);
    free(b);
}

static coffer *bulk_open(bulk *b)
{
    coffer_options options;
    coffer_options_init(&options);
    options.clock_ns = bulk_clock;
    options.clock_context = &b->clock_ns;
    options.log = bulk_log;
    options.log_context = b;
    options.index_on = true;
    options.memory_bytes_max = BUDGET_BYTES;
    options.fsync_never = true; /* kill -9 keeps the page cache; no machine crash here */
    pthread_mutex_lock(&b->log_mutex);
    b->log[0] = 0;
    pthread_mutex_unlock(&b->log_mutex);
    coffer *db = 0;
    assert_int_equal(coffer_open(b->dir, &options, &db), COFFER_OK);
    return db;
}

static void log_has(bulk *b, const char *text)
{
    pthread_mutex_lock(&b->log_mutex);
    bool found = strstr(b->log, text) != 0;
    pthread_mutex_unlock(&b->log_mutex);
    if (!found) {
        print_error("log lines:\n%s\nexpected: %s\n", b->log, text);
        fail();
    }
}

/* ---- the workload: everything follows from a transfer's number ------------------------------ */

typedef struct names {
    char id[40], to[24];
} names;

static void transfer_names(uint32_t number, names *n)
{
    /* Ids spread over the whole key space, as clients' ids do. */
    uint64_t mix = (uint64_t)number * 0x9e3779b97f4a7c15ull;
    snprintf(n->id, sizeof n->id, "t-%016llx-%u", (unsigned long long)mix, number);
    snprintf(n->to, sizeof n->to, "acct-%u", number % ACCOUNTS);
}

static int64_t transfer_amount(uint32_t number)
{
    return 1 + number % 97;
}

static bool transfer_is_hold(uint32_t number)
{
    return number % HOLD_EVERY == 0;
}

static coffer_event numbered_transfer(uint32_t number, names *n)
{
    transfer_names(number, n);
    coffer_event event = {.op = COFFER_OP_TRANSFER,
                          .id = n->id,
                          .from = "bank",
                          .to = n->to,
                          .amount = transfer_amount(number)};
    if (transfer_is_hold(number))
        event.hold_timeout_ms = 24ull * 3600 * 1000; /* pending for the whole test */
    return event;
}

/* Submits until accepted: with memory at its budget and the index behind, a batch is refused
 * whole with `overloaded`, and a client retries. */
static int submit_retrying(coffer *db, const coffer_event *events, size_t count,
                           coffer_result *results, uint64_t *overloaded)
{
    for (int attempt = 0; attempt < 120000; attempt++) {
        int code = coffer_submit(db, events, count, false, results);
        if (code != COFFER_OVERLOADED)
            return code;
        ++*overloaded;
        usleep(1000);
    }
    return COFFER_OVERLOADED;
}

static void create_accounts(coffer *db)
{
    coffer_event events[ACCOUNTS + 1];
    coffer_result results[ACCOUNTS + 1];
    char ids[ACCOUNTS][24];
    events[0] = (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT,
                               .id = "bank",
                               .currency = "USD",
                               .flags = COFFER_FLAG_MIN_UNBOUNDED};
    for (uint32_t i = 0; i < ACCOUNTS; i++) {
        snprintf(ids[i], sizeof ids[i], "acct-%u", i);
        events[i + 1] =
            (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT, .id = ids[i], .currency = "USD"};
    }
    assert_int_equal(coffer_submit(db, events, ACCOUNTS + 1, false, results), COFFER_OK);
    for (size_t i = 0; i <= ACCOUNTS; i++)
        assert_int_equal(results[i].code, COFFER_CREATED);
}

/* Transfers [first, last), keeping a sample of outcomes and the watched account's balances.
 * Returns how many submissions were answered overloaded. *acknowledged (if given) counts the
 * transfers whose batch came back, for a test that kills the process. */
static uint64_t run_transfers(bulk *b, coffer *db, uint32_t first, uint32_t last,
                              volatile uint32_t *acknowledged)
{
    static coffer_event events[BATCH];
    static coffer_result results[BATCH];
    static names n[BATCH];
    uint64_t overloaded = 0;
    int64_t watched = b->watched_count ? b->watched_balance[b->watched_count - 1] : 0;
    for (uint32_t start = first; start < last; start += BATCH) {
        uint32_t count = last - start < BATCH ? last - start : BATCH;
        for (uint32_t i = 0; i < count; i++)
            events[i] = numbered_transfer(start + i, &n[i]);
        __atomic_add_fetch(&b->clock_ns, TEST_NS_PER_MS, __ATOMIC_ACQ_REL);
        assert_int_equal(submit_retrying(db, events, count, results, &overloaded), COFFER_OK);
        for (uint32_t i = 0; i < count; i++) {
            uint32_t number = start + i;
            assert_int_equal(results[i].code, COFFER_CREATED);
            if (number % SAMPLE_EVERY == 0)
                b->kept[b->kept_count++] = (kept){number, results[i].seq};
            if (number % ACCOUNTS == WATCHED_ACCOUNT && !transfer_is_hold(number)) {
                watched += transfer_amount(number);
                assert_true(b->watched_count < WATCHED_MAX);
                b->watched_seq[b->watched_count] = results[i].seq;
                b->watched_balance[b->watched_count++] = watched;
            }
        }
        if (acknowledged)
            *acknowledged = start + count;
    }
    return overloaded;
}

/* ---- what the ledger must still answer ---------------------------------------------------- */

static void check_kept(bulk *b, coffer *db)
{
    uint64_t overloaded = 0;
    coffer_event event;
    coffer_result result;
    names n;
    for (size_t i = 0; i < b->kept_count; i++) {
        uint32_t number = b->kept[i].number;
        /* An identical retry replays the original outcome. */
        event = numbered_transfer(number, &n);
        assert_int_equal(submit_retrying(db, &event, 1, &result, &overloaded), COFFER_OK);
        assert_true(result.replayed);
        assert_int_equal(result.code, COFFER_EXISTS);
        assert_int_equal(result.seq, b->kept[i].seq);
        assert_int_equal(result.amount, transfer_amount(number));
        /* The same id with another amount is id_reused, naming the field. */
        event.amount += 1;
        assert_int_equal(submit_retrying(db, &event, 1, &result, &overloaded), COFFER_OK);
        assert_int_equal(result.code, COFFER_ID_REUSED);
        assert_string_equal(result.field, "/amount");
        /* It reads back as recorded. */
        coffer_transfer transfer;
        assert_int_equal(coffer_transfer_get(db, n.id, &transfer), COFFER_OK);
        assert_int_equal(transfer.seq, b->kept[i].seq);
        assert_int_equal(transfer.amount, transfer_amount(number));
        assert_string_equal(transfer.to, n.to);
        assert_int_equal(transfer.state,
                         transfer_is_hold(number) ? COFFER_STATE_PENDING : COFFER_STATE_POSTED);
    }
}

/* The watched account's whole history, page by page across what memory and the index hold,
 * and its balance at past seqs. */
static void check_watched(bulk *b, coffer *db)
{
    char id[24];
    snprintf(id, sizeof id, "acct-%u", WATCHED_ACCOUNT);
    coffer_history_entry page[64];
    size_t seen = 0;
    for (uint64_t after = 0;;) {
        size_t count = 0;
        assert_int_equal(coffer_history(db, id, after, 64, page, &count), COFFER_OK);
        for (size_t i = 0; i < count; i++) {
            if (page[i].kind != COFFER_HISTORY_POSTED)
                continue; /* holds: pending, not in the balance */
            assert_true(seen < b->watched_count);
            if (page[i].seq != b->watched_seq[seen])
                print_error("history of %s after seq %llu: entry %zu of %zu has seq %llu, expected "
                            "%llu (entry %zu of %zu)\n",
                            id, (unsigned long long)after, i, count,
                            (unsigned long long)page[i].seq,
                            (unsigned long long)b->watched_seq[seen], seen, b->watched_count);
            assert_int_equal(page[i].seq, b->watched_seq[seen]);
            assert_int_equal(page[i].balance, b->watched_balance[seen]);
            seen++;
        }
        if (count < 64)
            break;
        after = page[count - 1].seq;
    }
    assert_int_equal(seen, b->watched_count);
    for (size_t i = 0; i < b->watched_count; i += b->watched_count / 16 + 1) {
        coffer_account account;
        assert_int_equal(coffer_account_get(db, id, COFFER_AT_SEQ, b->watched_seq[i], &account),
                         COFFER_OK);
        assert_int_equal(account.balance, b->watched_balance[i]);
    }
}

static void check_verify(coffer *db)
{
    coffer_verify_report report;
    memset(&report, 0, sizeof report);
    assert_int_equal(coffer_verify(db, &report), COFFER_OK);
    if (!report.ok)
        print_error("verify: %s\n", report.problems[0]);
    assert_true(report.ok);
}

static void check_all(bulk *b, coffer *db)
{
    check_kept(b, db);
    check_watched(b, db);
    check_verify(db);
}

/* The process's resident memory (VmRSS), or its peak so far (VmHWM), in KiB. */
static uint64_t status_kib(const char *field)
{
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kib = 0;
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, field, strlen(field)) == 0 &&
            sscanf(line + strlen(field), ": %llu kB", &kib) == 1)
            break;
    if (status)
        fclose(status);
    return kib;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void ledger_larger_than_memory(void **state)
{
    (void)state;
    bulk *b = bulk_create();
    coffer *db = bulk_open(b);
    create_accounts(db);
    uint64_t overloaded = run_transfers(b, db, 0, TRANSFERS, 0);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    print_message("evictions %llu, transfers evicted %llu, overloaded %llu, memory %llu of %llu, "
                  "filter %llu bytes\n",
                  (unsigned long long)stats.evictions, (unsigned long long)stats.evicted_transfers,
                  (unsigned long long)overloaded, (unsigned long long)stats.memory_used_bytes,
                  (unsigned long long)stats.memory_budget_bytes,
                  (unsigned long long)stats.index_filter_bytes);
    /* A million transfers do not fit 16 MiB: memory evicted, several times, most of them. */
    assert_true(stats.evictions >= 3);
    assert_true(stats.evicted_transfers > TRANSFERS / 2);
    assert_true(stats.memory_used_bytes + stats.index_filter_bytes <= stats.memory_budget_bytes);
    /* Memory beyond the budget: RocksDB's caches and buffers, the index's staging (4 MiB under
     * this budget), thread stacks, the allocator's arenas, this test. */
    uint64_t peak_kib = status_kib("VmHWM");
    print_message("resident: %llu KiB, at most %llu KiB\n", (unsigned long long)status_kib("VmRSS"),
                  (unsigned long long)peak_kib);
    /* Under AddressSanitizer its shadow memory and quarantine dwarf the figure. */
    if (!RUNS_UNDER_ASAN)
        assert_true(peak_kib * 1024 <= BUDGET_BYTES + RESIDENT_OVERHEAD_BYTES);
    log_has(b, "memory: evicted");
    check_all(b, db);
    coffer_close(db);

    /* coffer verify DIR: the log replays, the snapshot of the evicted state matches it on what
     * it holds, the index matches the log. */
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(b->dir, 0, 0, 0, &report), COFFER_OK);
    if (!report.ok)
        print_error("verify DIR: %s / %s\n", report.chain_error, report.snapshot_error);
    assert_true(report.ok && report.snapshot_found && report.snapshot_matches);

    /* A restart recovers from the snapshot of the evicted state, reading evicted ids from the
     * index while it replays. */
    db = bulk_open(b);
    check_all(b, db);
    run_transfers(b, db, TRANSFERS, TRANSFERS + MORE_TRANSFERS, 0);
    coffer_close(db);

    /* Without its index, recovery first rebuilds it from the log. */
    remove_tree(b->index_path);
    db = bulk_open(b);
    log_has(b, "is missing; building it from the log");
    check_all(b, db);
    coffer_close(db);
    bulk_free(b);
}

/* kill -9 while the index is behind the log: nothing acknowledged is lost, the index catches
 * up, every kept outcome replays. */
static void kill_while_index_behind(void **state)
{
    (void)state;
    bulk *b = bulk_create();
    /* The child's progress, shared with the parent. */
    volatile uint32_t *acknowledged =
        mmap(0, sizeof *acknowledged, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(acknowledged != MAP_FAILED);
    *acknowledged = 0;
    uint32_t total = TRANSFERS / 2;
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        coffer *db = bulk_open(b);
        create_accounts(db);
        run_transfers(b, db, 0, total, acknowledged);
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
        if (stats.evictions == 0 || stats.index_flushed_seq >= stats.durable_seq)
            _exit(3); /* the test needs both: say so instead of passing on nothing */
        raise(SIGKILL);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(*acknowledged, total);

    /* The child's results died with it: every outcome follows from the transfer's number. */
    coffer *db = bulk_open(b);
    /* Recovery replayed the log's records (one per batch: no snapshot was taken) through the
     * same budget, evicting as it went, but not after every record: each eviction waits for
     * an eighth of the budget to come in (about a dozen batches here). */
    coffer_stats recovered;
    assert_int_equal(coffer_stats_get(db, &recovered), COFFER_OK);
    assert_true(recovered.evictions > 0);
    assert_true(recovered.evictions < total / BATCH / 4);
    uint64_t overloaded = 0;
    coffer_event event;
    coffer_result result;
    names n;
    for (uint32_t number = 0; number < total; number += SAMPLE_EVERY) {
        event = numbered_transfer(number, &n);
        assert_int_equal(submit_retrying(db, &event, 1, &result, &overloaded), COFFER_OK);
        assert_true(result.replayed);
        assert_int_equal(result.code, COFFER_EXISTS);
        assert_int_equal(result.amount, transfer_amount(number));
    }
    for (int waited_ms = 0;; waited_ms++) {
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
        if (stats.index_applied_seq == stats.durable_seq)
            break;
        assert_true(waited_ms < 60000);
        usleep(1000);
    }
    check_verify(db);
    coffer_close(db);
    munmap((void *)acknowledged, sizeof *acknowledged);
    bulk_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ledger_larger_than_memory),
        cmocka_unit_test(kill_while_index_behind),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
