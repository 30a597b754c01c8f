/*
 * test_disk_reserve.c — the free space kept on the data directory's filesystem
 * (coffer_options.disk_reserve_bytes): its default, none, and a reserve the disk cannot give:
 * submissions refused with capacity_exceeded naming the disk, nothing applied or logged, while
 * reads go on and a hold that falls due still expires. (Writes taken again once room returns:
 * tests/integration/test_lifecycle.py, which takes the room away for real.)
 */
#include <sys/statvfs.h>

#include "files.h"
#include "support.h"

#define MIB (1ULL << 20)
/* More than any filesystem holds: 4 EiB. */
#define RESERVE_UNREACHABLE (1ULL << 62)

typedef struct disk_fixture {
    char dir[64];
    coffer *db;
    uint64_t clock_ns;
    char log[4096]; /* the engine's log lines, one after another */
} disk_fixture;

static uint64_t fixture_clock(void *context)
{
    disk_fixture *f = context;
    return __atomic_load_n(&f->clock_ns, __ATOMIC_SEQ_CST);
}

static void fixture_log(void *context, const char *line)
{
    disk_fixture *f = context;
    size_t used = strlen(f->log);
    snprintf(f->log + used, sizeof f->log - used, "%s\n", line);
}

static int disk_open(disk_fixture *f, uint64_t reserve)
{
    coffer_options options;
    coffer_options_init(&options);
    options.fsync_never = true; /* durability is not what is tested here */
    options.clock_ns = fixture_clock;
    options.clock_context = f;
    options.log = fixture_log;
    options.log_context = f;
    options.disk_reserve_bytes = reserve;
    f->log[0] = 0;
    return coffer_open(f->dir, &options, &f->db);
}

static void disk_close(disk_fixture *f)
{
    coffer_close(f->db);
    f->db = NULL;
}

static int disk_setup(void **state)
{
    disk_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->clock_ns = TEST_CLOCK_START_NS;
    snprintf(f->dir, sizeof f->dir, "/tmp/coffer-disk-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int disk_teardown(void **state)
{
    disk_fixture *f = *state;
    coffer_close(f->db);
    remove_tree(f->dir);
    free(f);
    return 0;
}

static coffer_stats stats_of(coffer *db)
{
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    return stats;
}

static void test_default_reserve_and_none(void **state)
{
    disk_fixture *f = *state;
    struct statvfs fs;
    assert_int_equal(statvfs(f->dir, &fs), 0);
    uint64_t expected = (uint64_t)fs.f_blocks * fs.f_frsize / 20;
    if (expected > 256 * MIB)
        expected = 256 * MIB;
    assert_int_equal(disk_open(f, 0), COFFER_OK);
    coffer_stats stats = stats_of(f->db);
    assert_int_equal(stats.disk_reserve_bytes, expected);
    assert_true(stats.disk_free_bytes > 0);
    assert_int_equal(stats.refused_disk, 0);
    assert_non_null(strstr(f->log, "(the default reserve)"));
    disk_close(f);

    assert_int_equal(disk_open(f, COFFER_DISK_RESERVE_NONE), COFFER_OK);
    assert_int_equal(stats_of(f->db).disk_reserve_bytes, 0);
    assert_non_null(strstr(f->log, "disk: no reserve kept"));
    create_account(f->db, "alice", "EUR");
    disk_close(f);

    assert_int_equal(disk_open(f, 512 * MIB), COFFER_OK);
    assert_int_equal(stats_of(f->db).disk_reserve_bytes, 512 * MIB);
    assert_non_null(strstr(f->log, "writes are refused while less than 512 MiB (as configured)"));
}

static void test_in_memory_keeps_no_reserve(void **state)
{
    (void)state;
    coffer_options options;
    coffer_options_init(&options);
    options.disk_reserve_bytes = RESERVE_UNREACHABLE; /* ignored without a directory */
    coffer *db = NULL;
    assert_int_equal(coffer_open(NULL, &options, &db), COFFER_OK);
    create_account(db, "alice", "EUR");
    coffer_stats stats = stats_of(db);
    assert_int_equal(stats.disk_reserve_bytes, 0);
    assert_int_equal(stats.disk_free_bytes, 0);
    coffer_close(db);
}

static void test_unreachable_reserve_refuses_writes_only(void **state)
{
    disk_fixture *f = *state;
    assert_int_equal(disk_open(f, 0), COFFER_OK);
    create_issuer(f->db, "bank", "EUR");
    create_account(f->db, "shop", "EUR");
    fund(f->db, "t1", "bank", "shop", 100);
    assert_int_equal(hold(f->db, "h1", "shop", "bank", 30, 1000).code, COFFER_CREATED);
    assert_int_equal(available_of(f->db, "shop"), 70);
    disk_close(f);

    assert_int_equal(disk_open(f, RESERVE_UNREACHABLE), COFFER_OK);
    assert_non_null(strstr(f->log, ": refusing them now"));
    coffer_stats before = stats_of(f->db);
    assert_int_equal(before.disk_reserve_bytes, RESERVE_UNREACHABLE);

    /* The hold falls due; a batch of submissions comes: it is refused whole, atomic or not,
     * and the hold expires all the same (expiries are the ledger's own, and small). */
    __atomic_add_fetch(&f->clock_ns, 2000 * TEST_NS_PER_MS, __ATOMIC_SEQ_CST);
    coffer_event events[2] = {transfer_event("t2", "bank", "shop", 5),
                              transfer_event("t3", "shop", "bank", 1)};
    coffer_result results[2];
    assert_int_equal(coffer_submit(f->db, events, 2, false, results), COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(coffer_submit(f->db, events, 2, true, results), COFFER_CAPACITY_EXCEEDED);
    char detail[192], expected[192];
    assert_int_equal(coffer_capacity_detail(f->db, detail, sizeof detail), COFFER_OK);
    snprintf(expected, sizeof expected, "disk reserve of 4194304 TiB reached: ");
    assert_memory_equal(detail, expected, strlen(expected));
    assert_non_null(strstr(detail, " free on the filesystem of "));
    assert_non_null(strstr(detail, f->dir));

    coffer_stats after = stats_of(f->db);
    assert_int_equal(after.refused_disk, 2);
    assert_int_equal(after.seq, before.seq + 1); /* the expiry, and nothing else */
    coffer_transfer info;
    assert_int_equal(coffer_transfer_get(f->db, "t2", &info), COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(coffer_transfer_get(f->db, "h1", &info), COFFER_OK);
    assert_int_equal(info.state, COFFER_STATE_EXPIRED);
    assert_int_equal(balance_of(f->db, "shop"), 100);
    assert_int_equal(available_of(f->db, "shop"), 100);
    coffer_verify_report report;
    assert_int_equal(coffer_verify(f->db, &report), COFFER_OK);
    assert_true(report.ok);
    disk_close(f);

    /* The expiry was logged, and nothing else: a reopen replays it; what was refused was never
     * recorded, so the same ids are new once there is room. */
    assert_int_equal(disk_open(f, 0), COFFER_OK);
    assert_int_equal(stats_of(f->db).seq, after.seq);
    assert_int_equal(coffer_transfer_get(f->db, "h1", &info), COFFER_OK);
    assert_int_equal(info.state, COFFER_STATE_EXPIRED);
    assert_int_equal(available_of(f->db, "shop"), 100);
    assert_int_equal(coffer_submit(f->db, events, 2, true, results), COFFER_OK);
    assert_int_equal(results[0].code, COFFER_CREATED);
    assert_int_equal(results[1].code, COFFER_CREATED);
    assert_int_equal(balance_of(f->db, "shop"), 104);
    assert_int_equal(stats_of(f->db).refused_disk, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_reserve_and_none, disk_setup, disk_teardown),
        cmocka_unit_test(test_in_memory_keeps_no_reserve),
        cmocka_unit_test_setup_teardown(test_unreachable_reserve_refuses_writes_only, disk_setup,
                                        disk_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
