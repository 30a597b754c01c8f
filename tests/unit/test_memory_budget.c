/*
 * test_memory_budget.c — the memory budget that bounds the in-memory tables: sizes as
 * `--memory-max` reads them, the bounds coffer_open enforces, and a ledger that fills its
 * budget: capacity_exceeded naming the budget, nothing applied, reads unaffected, and writes
 * resuming after a reopen with a larger budget.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "server/parse.h"
#include "support.h"

#define MIB (1ULL << 20)
#define FILL_BATCH 1000

/* ---- sizes --------------------------------------------------------------------------------- */

static void expect_size(const char *text, uint64_t expected)
{
    uint64_t value = 0;
    if (!parse_size(text, 0, UINT64_MAX, &value))
        fail_msg("'%s' refused", text);
    assert_int_equal(value, expected);
}

static void expect_no_size(const char *text)
{
    uint64_t value = 12345;
    if (parse_size(text, 0, UINT64_MAX, &value))
        fail_msg("'%s' accepted as %llu", text, (unsigned long long)value);
    assert_int_equal(value, 12345); /* left alone */
}

static void test_sizes_with_suffixes(void **state)
{
    (void)state;
    expect_size("0", 0);
    expect_size("1048576", MIB);
    expect_size("16K", 16 * 1024);
    expect_size("48M", 48 * MIB);
    expect_size("48m", 48 * MIB);
    expect_size("2G", 2048 * MIB);
    expect_size("4T", 4ULL << 40);
    expect_size("0048M", 48 * MIB);
    expect_size("18446744073709551615", UINT64_MAX);
    expect_size("16777215T", 16777215ULL << 40); /* the largest T that fits in 64 bits */
}

static void test_sizes_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "M",
                         "48MB",
                         "48 M",
                         " 48M",
                         "48M ",
                         "-1",
                         "+5",
                         "4.5G",
                         "0x10",
                         "48Q",
                         "1e6",
                         "48MM",
                         "18446744073709551616",
                         "99999999999999999999",
                         "16777216T",
                         "17179869184G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect_no_size(bad[i]);
    uint64_t value = 0;
    assert_false(parse_size("15M", 16 * MIB, 32 * MIB, &value)); /* below min */
    assert_false(parse_size("33M", 16 * MIB, 32 * MIB, &value)); /* above max */
    assert_true(parse_size("32M", 16 * MIB, 32 * MIB, &value));
    assert_int_equal(value, 32 * MIB);
}

/* ---- bounds at open ------------------------------------------------------------------------ */

static int open_with_budget(uint64_t bytes)
{
    coffer_options options;
    coffer_options_init(&options);
    options.memory_bytes_max = bytes;
    coffer *db = NULL;
    int code = coffer_open(NULL, &options, &db);
    if (code == COFFER_OK) {
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
        assert_true(stats.memory_budget_bytes >= COFFER_MEMORY_BYTES_MIN);
        if (bytes)
            assert_int_equal(stats.memory_budget_bytes, bytes);
        assert_true(stats.memory_used_bytes > 0);
        assert_true(stats.memory_used_bytes <= stats.memory_budget_bytes);
    }
    coffer_close(db);
    return code;
}

static void test_budget_bounds(void **state)
{
    (void)state;
    assert_int_equal(open_with_budget(COFFER_MEMORY_BYTES_MIN - 1), COFFER_INVALID_ARGUMENT);
    assert_int_equal(open_with_budget(COFFER_MEMORY_BYTES_MAX + 1), COFFER_INVALID_ARGUMENT);
    assert_int_equal(open_with_budget(COFFER_MEMORY_BYTES_MIN), COFFER_OK);
    assert_int_equal(open_with_budget(0), COFFER_OK); /* the default, from the machine */
}

/* ---- a ledger that fills its budget -------------------------------------------------------- */

typedef struct budget_fixture {
    char dir[64];
    coffer *db;
    char ids[FILL_BATCH][40];
    coffer_event events[FILL_BATCH];
    coffer_result results[FILL_BATCH];
    int batches; /* batches of transfers submitted so far, for fresh ids */
} budget_fixture;

static void budget_open(budget_fixture *f, uint64_t budget_bytes)
{
    coffer_options options;
    coffer_options_init(&options);
    options.memory_bytes_max = budget_bytes;
    options.fsync_never = true; /* durability is not what is tested here */
    options.log = NULL;
    assert_int_equal(coffer_open(f->dir, &options, &f->db), COFFER_OK);
}

static int budget_setup(void **state)
{
    budget_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/coffer-budget-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    budget_open(f, 16 * MIB);
    create_account_with(f->db, "alice", "USD", COFFER_FLAG_MIN_UNBOUNDED, 0, 0);
    create_account(f->db, "bob", "USD");
    *state = f;
    return 0;
}

static int budget_teardown(void **state)
{
    budget_fixture *f = *state;
    coffer_close(f->db);
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* Submits the next batch of fresh transfers of 1 from alice to bob; the submission's code. */
static int submit_fresh(budget_fixture *f, bool atomic)
{
    for (int i = 0; i < FILL_BATCH; i++) {
        snprintf(f->ids[i], sizeof f->ids[i], "transfer-%d-%d", f->batches, i);
        f->events[i] = transfer_event(f->ids[i], "alice", "bob", 1);
    }
    f->batches++;
    memset(f->results, 0, sizeof f->results);
    return coffer_submit(f->db, f->events, FILL_BATCH, atomic, f->results);
}

static coffer_stats stats_of(coffer *db)
{
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    return stats;
}

/* Fills the ledger until a batch is refused; returns the transfers held then. */
static uint64_t fill(budget_fixture *f)
{
    for (int batch = 0; batch < 1000; batch++) {
        int code = submit_fresh(f, false);
        if (code == COFFER_CAPACITY_EXCEEDED)
            return stats_of(f->db).transfers;
        assert_int_equal(code, COFFER_OK);
        assert_int_equal(f->results[FILL_BATCH - 1].code, COFFER_CREATED);
    }
    fail_msg("1,000,000 transfers fit in a budget of 16 MiB");
    return 0;
}

static void test_budget_reached_refuses_writes_only(void **state)
{
    budget_fixture *f = *state;
    uint64_t held = fill(f);
    /* 16 MiB holds tens of thousands of transfers of ~200 bytes, and no more than it can. */
    assert_true(held >= 40000 && held <= 16 * MIB / 150);
    coffer_stats before = stats_of(f->db);
    assert_int_equal(before.memory_budget_bytes, 16 * MIB);
    assert_true(before.memory_used_bytes <= 16 * MIB);
    assert_int_equal(before.memory_used_bytes > 15 * MIB, true); /* it was filled */
    char detail[192], expected[192];
    assert_int_equal(coffer_capacity_detail(f->db, detail, sizeof detail), COFFER_OK);
    snprintf(expected, sizeof expected,
             "memory budget of 16 MiB reached: 2 accounts, %llu transfers held",
             (unsigned long long)held);
    assert_string_equal(detail, expected);

    /* Atomic or not, nothing of a refused submission is applied or recorded. */
    assert_int_equal(submit_fresh(f, true), COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(submit_fresh(f, false), COFFER_CAPACITY_EXCEEDED);
    coffer_stats after = stats_of(f->db);
    assert_int_equal(after.seq, before.seq);
    assert_int_equal(after.transfers, held);
    coffer_transfer info;
    assert_int_equal(coffer_transfer_get(f->db, f->ids[0], &info), COFFER_TRANSFER_NOT_FOUND);

    /* Reads go on: balances, an old transfer, the invariants. */
    assert_int_equal(balance_of(f->db, "bob"), (int64_t)held);
    assert_int_equal(coffer_transfer_get(f->db, "transfer-0-0", &info), COFFER_OK);
    coffer_verify_report report;
    assert_int_equal(coffer_verify(f->db, &report), COFFER_OK);
    assert_true(report.ok);
}

static void test_larger_budget_after_restart_resumes_writes(void **state)
{
    budget_fixture *f = *state;
    uint64_t held = fill(f);
    coffer_close(f->db);
    budget_open(f, 16 * MIB); /* the same budget: everything recovered, still full */
    assert_int_equal(stats_of(f->db).transfers, held);
    assert_int_equal(submit_fresh(f, false), COFFER_CAPACITY_EXCEEDED);
    coffer_close(f->db);
    budget_open(f, 32 * MIB);
    assert_int_equal(submit_fresh(f, true), COFFER_OK);
    assert_int_equal(f->results[0].code, COFFER_CREATED);
    assert_int_equal(stats_of(f->db).transfers, held + FILL_BATCH);
    assert_int_equal(balance_of(f->db, "bob"), (int64_t)(held + FILL_BATCH));
    /* A bigger budget holds more: about twice as much. */
    uint64_t held_larger = fill(f);
    assert_true(held_larger > held * 3 / 2);
    char detail[192];
    assert_int_equal(coffer_capacity_detail(f->db, detail, sizeof detail), COFFER_OK);
    assert_non_null(strstr(detail, "memory budget of 32 MiB reached"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_with_suffixes),
        cmocka_unit_test(test_sizes_refused),
        cmocka_unit_test(test_budget_bounds),
        cmocka_unit_test_setup_teardown(test_budget_reached_refuses_writes_only, budget_setup,
                                        budget_teardown),
        cmocka_unit_test_setup_teardown(test_larger_budget_after_restart_resumes_writes,
                                        budget_setup, budget_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
