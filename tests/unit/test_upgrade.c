/*
 * test_upgrade.c — a data directory written by an earlier format opens after an upgrade.
 * tests/data/v1/ was made by the code before snapshots had explicit fields (snapshot format 1,
 * the tables as their structs lay them out); its ledger is read back three ways (its newest
 * snapshot, an older snapshot plus the log, the log alone) and after a reopen in today's format.
 */
#include <libgen.h>
#include <sys/stat.h>

#include "files.h"
#include "support.h"

/* The ledger of tests/data/v1, as the code that wrote it reported it. */
typedef struct expected_account {
    const char *id;
    int64_t balance, available, debits_held;
    uint64_t version;
} expected_account;

static const expected_account expected_accounts[] = {
    {"bank", -15000, -15000, 0, 6},  {"capped", 0, 0, 0, 2},        {"user:0", 1182, 1157, 25, 21},
    {"user:1", 1985, 1985, 0, 21},   {"user:2", 2999, 2999, 0, 22}, {"user:3", 3842, 3842, 0, 20},
    {"user:4", 4992, 4692, 300, 19},
};

#define SNAPSHOT_OLD "snapshot-00000000000000000017.cfs"
#define SNAPSHOT_NEW "snapshot-00000000000000000060.cfs"

typedef struct upgrade {
    char dir[64];
    uint64_t clock_ns;
    char loaded[128]; /* the engine's "snapshot at seq N loaded" line, if any */
} upgrade;

static uint64_t upgrade_clock(void *context)
{
    return ((upgrade *)context)->clock_ns;
}

/* Keeps the line that says which snapshot recovery loaded: a snapshot it cannot read is
 * skipped in favour of the log, which would hide a broken reader. */
static void upgrade_log(void *context, const char *line)
{
    upgrade *u = context;
    if (strstr(line, "loaded"))
        snprintf(u->loaded, sizeof u->loaded, "%s", line);
    fprintf(stderr, "coffer: %s\n", line);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buffer[4096];
    size_t got;
    while ((got = fread(buffer, 1, sizeof buffer, in)) > 0)
        assert_int_equal(fwrite(buffer, 1, got, out), got);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* Copies tests/data/v1 into a fresh temp directory, leaving out the files named in `skip`. */
static void upgrade_prepare(upgrade *u, const char *const *skip, size_t skip_count)
{
    char source[4096], here[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(source, sizeof source, "%s/../data/v1", dirname(here));
    snprintf(u->dir, sizeof u->dir, "/tmp/coffer-upgrade-XXXXXX");
    assert_non_null(mkdtemp(u->dir));
    u->clock_ns = TEST_CLOCK_START_NS + 2000000000ULL; /* after the last event, before expiries */
    DIR *listing = opendir(source);
    assert_non_null(listing);
    struct dirent *item;
    while ((item = readdir(listing))) {
        bool skipped = item->d_name[0] == '.';
        for (size_t i = 0; i < skip_count; i++)
            skipped |= strcmp(item->d_name, skip[i]) == 0;
        if (skipped)
            continue;
        char from[8192], to[8192];
        snprintf(from, sizeof from, "%s/%s", source, item->d_name);
        snprintf(to, sizeof to, "%s/%s", u->dir, item->d_name);
        copy_file(from, to);
    }
    closedir(listing);
}

static coffer *upgrade_open(upgrade *u)
{
    coffer_options options;
    coffer_options_init(&options);
    options.accounts_max = 1000;
    options.transfers_max = 10000;
    options.clock_ns = upgrade_clock;
    options.clock_context = u;
    options.log = upgrade_log;
    options.log_context = u;
    u->loaded[0] = 0;
    coffer *db = NULL;
    assert_int_equal(coffer_open(u->dir, &options, &db), COFFER_OK);
    return db;
}

static void assert_transfer(coffer *db, const char *id, int code, uint8_t state, int64_t amount)
{
    coffer_transfer transfer;
    assert_int_equal(coffer_transfer_get(db, id, &transfer), COFFER_OK);
    assert_int_equal(transfer.code, code);
    assert_int_equal(transfer.state, state);
    assert_int_equal(transfer.amount, amount);
}

static void assert_v1_ledger(coffer *db)
{
    for (size_t i = 0; i < sizeof expected_accounts / sizeof expected_accounts[0]; i++) {
        const expected_account *want = &expected_accounts[i];
        coffer_account account;
        assert_int_equal(coffer_account_get(db, want->id, 0, 0, &account), COFFER_OK);
        assert_int_equal(account.balance, want->balance);
        assert_int_equal(account.available, want->available);
        assert_int_equal(account.debits_held, want->debits_held);
        assert_int_equal(account.version, want->version);
    }
    coffer_account capped;
    assert_int_equal(coffer_account_get(db, "capped", 0, 0, &capped), COFFER_OK);
    assert_true(capped.has_max);
    assert_int_equal(capped.max_balance, 500);
    assert_string_equal(capped.metadata, "{\"kind\":\"capped\"}");
    assert_transfer(db, "deposit-4", COFFER_CREATED, COFFER_STATE_POSTED, 5000);
    assert_transfer(db, "hold-1", COFFER_CREATED, COFFER_STATE_PENDING, 300);
    assert_transfer(db, "hold-2", COFFER_CREATED, COFFER_STATE_CAPTURED, 200);
    assert_transfer(db, "post-1", COFFER_CREATED, COFFER_STATE_POSTED, 150);
    assert_transfer(db, "hold-3", COFFER_CREATED, COFFER_STATE_VOIDED, 50);
    assert_transfer(db, "too-much", COFFER_INSUFFICIENT_BALANCE, COFFER_STATE_REJECTED, 0);
    coffer_transfer with_meta;
    assert_int_equal(coffer_transfer_get(db, "with-meta", &with_meta), COFFER_OK);
    assert_string_equal(with_meta.metadata, "{\"note\":\"v1\"}");
    assert_int_equal(with_meta.expect_from_version, 2);
    coffer_history_entry entries[32];
    size_t count = 0;
    assert_int_equal(coffer_history(db, "user:4", 0, 32, entries, &count), COFFER_OK);
    assert_int_equal(count, 18); /* versions 2..19 */
    assert_int_equal(entries[count - 1].version, 19);
    coffer_verify_report report;
    assert_int_equal(coffer_verify(db, &report), COFFER_OK);
    assert_true(report.ok);
}

/* Opens the prepared copy (recovery starting from `snapshot`, or the log alone when NULL),
 * checks it, closes (which writes today's snapshot unless one covers it all), opens and checks
 * again. */
static void upgrade_check(upgrade *u, const char *snapshot)
{
    coffer *db = upgrade_open(u);
    if (snapshot)
        assert_non_null(strstr(u->loaded, snapshot));
    else
        assert_string_equal(u->loaded, "");
    assert_v1_ledger(db);
    coffer_close(db);
    db = upgrade_open(u);
    assert_v1_ledger(db);
    coffer_close(db);
    remove_tree(u->dir);
}

static void test_v1_newest_snapshot(void **state)
{
    (void)state;
    upgrade u;
    upgrade_prepare(&u, NULL, 0);
    upgrade_check(&u, "snapshot at seq 60 loaded");
}

static void test_v1_older_snapshot_and_log(void **state)
{
    (void)state;
    static const char *const skip[] = {SNAPSHOT_NEW};
    upgrade u;
    upgrade_prepare(&u, skip, 1);
    upgrade_check(&u, "snapshot at seq 17 loaded");
}

static void test_v1_log_alone(void **state)
{
    (void)state;
    static const char *const skip[] = {SNAPSHOT_NEW, SNAPSHOT_OLD};
    upgrade u;
    upgrade_prepare(&u, skip, 2);
    upgrade_check(&u, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_newest_snapshot),
        cmocka_unit_test(test_v1_older_snapshot_and_log),
        cmocka_unit_test(test_v1_log_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
