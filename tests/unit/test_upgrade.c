/*
 * test_upgrade.c — a data directory written by an earlier format opens after an upgrade.
 * tests/data/v1/ was made by the code before snapshots had explicit fields (snapshot format 1,
 * the tables as their structs lay them out); its ledger is read back three ways (its newest
 * snapshot, an older snapshot plus the log, the log alone) and after a reopen in today's format.
 * Its log is in record format 1: today's records (format 2) are appended after it, and the mix
 * replays, verifies and dumps. tests/data/v2/ was made by the code before snapshots kept who
 * submitted each transfer (snapshot format 2, record format 2): its transfers get their
 * submitters back from the log, whichever snapshot recovery starts from.
 */
#include <libgen.h>
#include <pthread.h>
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

/* Copies tests/data/`version` into a fresh temp directory, leaving out the files named in
 * `skip`. */
static void upgrade_prepare_from(upgrade *u, const char *version, const char *const *skip,
                                 size_t skip_count)
{
    char source[4096], here[4096];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(source, sizeof source, "%s/../data/%s", dirname(here), version);
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

static void upgrade_prepare(upgrade *u, const char *const *skip, size_t skip_count)
{
    upgrade_prepare_from(u, "v1", skip, skip_count);
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

/* ---- format 1 records followed by format 2 ------------------------------------------------- */

/* What coffer_dump_dir() showed of the log. */
typedef struct dumped {
    uint64_t format_1, format_2; /* events without and with an outcome */
    bool order_ok;               /* no event without an outcome after one with */
    coffer_result expiry, transfer;
    bool expiry_seen, transfer_seen;
    char transfer_submitter[COFFER_SUBMITTER_MAX + 1];
    bool expiry_has_submitter;
} dumped;

static int dump_visit(const coffer_log_entry *entry, void *context)
{
    dumped *d = context;
    if (!entry->outcome) {
        d->format_1++;
        d->order_ok &= d->format_2 == 0;
        return 0;
    }
    d->format_2++;
    if (entry->event->op == COFFER_OP_EXPIRE && strcmp(entry->event->hold_id, "hold-1") == 0) {
        d->expiry = *entry->outcome;
        d->expiry_seen = true;
        d->expiry_has_submitter = entry->submitted_by != NULL;
    }
    if (entry->event->op == COFFER_OP_TRANSFER && strcmp(entry->event->id, "after-upgrade") == 0) {
        d->transfer = *entry->outcome;
        d->transfer_seen = true;
        snprintf(d->transfer_submitter, sizeof d->transfer_submitter, "%s",
                 entry->submitted_by ? entry->submitted_by : "(none)");
    }
    return 0;
}

static void test_v1_log_continues_in_format_2(void **state)
{
    (void)state;
    static const char *const skip[] = {SNAPSHOT_NEW, SNAPSHOT_OLD};
    upgrade u;
    upgrade_prepare(&u, skip, 2);
    coffer *db = upgrade_open(&u);
    assert_v1_ledger(db);
    /* A day later: the next batch first expires hold-1 (user:4 -> bank, 300), then applies. */
    u.clock_ns += 24ULL * 3600 * 1000000000ULL;
    coffer_event transfer = {.op = COFFER_OP_TRANSFER,
                             .id = "after-upgrade",
                             .from = "user:1",
                             .to = "user:2",
                             .amount = 5};
    coffer_result result;
    submit_as(db, "shop", &transfer, &result);
    assert_int_equal(result.code, COFFER_CREATED);
    coffer_close(db);

    /* The whole log again, format 1 then 2, each format 2 outcome checked on replay. */
    assert_true(remove_snapshots(u.dir) > 0);
    db = upgrade_open(&u);
    assert_string_equal(u.loaded, "");
    assert_transfer(db, "hold-1", COFFER_CREATED, COFFER_STATE_EXPIRED, 300);
    assert_transfer(db, "after-upgrade", COFFER_CREATED, COFFER_STATE_POSTED, 5);
    coffer_close(db);

    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(u.dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_true(report.ok);

    dumped d = {.order_ok = true};
    char error[256];
    assert_int_equal(coffer_dump_dir(u.dir, dump_visit, &d, error, sizeof error), COFFER_OK);
    assert_true(d.order_ok);
    assert_true(d.format_1 > 0 && d.format_2 >= 2);
    assert_true(d.expiry_seen && d.transfer_seen);
    assert_int_equal(d.expiry.state, COFFER_STATE_EXPIRED);
    assert_int_equal(d.expiry.amount, 300);
    assert_string_equal(d.expiry.hold_from, "user:4");
    assert_int_equal(d.expiry.from.available, 4992); /* 300 no longer held */
    assert_false(d.expiry_has_submitter);
    assert_string_equal(d.transfer_submitter, "shop");
    assert_int_equal(d.transfer.code, COFFER_CREATED);
    assert_int_equal(d.transfer.amount, 5);
    assert_int_equal(d.transfer.from.balance, 1980);
    assert_int_equal(d.transfer.to.balance, 3004);
    assert_int_equal(d.transfer.seq, result.seq);
    assert_int_equal(d.transfer.timestamp, result.timestamp);
    remove_tree(u.dir);
}

/* ---- snapshot format 2: submitters from the log -------------------------------------------- */

/* tests/data/v2: accounts created under "admin", then deposit-1 (alice), deposit-2 (no name),
 * the atomic pay-1 and pay-2 (bob) and the rejected too-much (alice) before the snapshot at
 * seq 8; after-snapshot (carol) and after-snapshot-2 (alice) before the one at seq 10. */
static const char *const v2_submitters[][2] = {
    {"deposit-1", "alice"},
    {"deposit-2", ""},
    {"pay-1", "bob"},
    {"pay-2", "bob"},
    {"too-much", "alice"},
    {"after-snapshot", "carol"},
    {"after-snapshot-2", "alice"},
};

static void assert_v2_submitters(coffer *db)
{
    for (size_t i = 0; i < sizeof v2_submitters / sizeof v2_submitters[0]; i++) {
        coffer_transfer transfer;
        assert_int_equal(coffer_transfer_get(db, v2_submitters[i][0], &transfer), COFFER_OK);
        assert_string_equal(transfer.submitted_by, v2_submitters[i][1]);
    }
    assert_int_equal(balance_of(db, "user:1"), 1000 - 100 + 50 + 10 + 7);
}

/* Opens the v2 copy from `snapshot`, checks it and verifies the directory; then a write under
 * a new name and a close write a format 3 snapshot, and the reopen from it checks again. */
static void upgrade_check_v2(upgrade *u, const char *snapshot)
{
    coffer *db = upgrade_open(u);
    assert_non_null(strstr(u->loaded, snapshot));
    assert_v2_submitters(db);
    coffer_close(db);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(u->dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_true(report.ok);
    assert_true(report.snapshot_matches);

    db = upgrade_open(u);
    coffer_event transfer = {.op = COFFER_OP_TRANSFER,
                             .id = "after-upgrade",
                             .from = "bank",
                             .to = "user:2",
                             .amount = 1};
    coffer_result result;
    submit_as(db, "dave", &transfer, &result);
    assert_int_equal(result.code, COFFER_CREATED);
    coffer_close(db);
    db = upgrade_open(u);
    assert_non_null(strstr(u->loaded, "snapshot at seq 11 loaded"));
    assert_v2_submitters(db);
    assert_string_equal(transfer_get(db, "after-upgrade").submitted_by, "dave");
    coffer_close(db);
    assert_int_equal(coffer_verify_dir(u->dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_true(report.ok);
    remove_tree(u->dir);
}

static void test_v2_newest_snapshot(void **state)
{
    (void)state;
    upgrade u;
    upgrade_prepare_from(&u, "v2", NULL, 0);
    upgrade_check_v2(&u, "snapshot at seq 10 loaded");
}

static void test_v2_older_snapshot_and_log(void **state)
{
    (void)state;
    static const char *const skip[] = {"snapshot-00000000000000000010.cfs"};
    upgrade u;
    upgrade_prepare_from(&u, "v2", skip, 1);
    upgrade_check_v2(&u, "snapshot at seq 8 loaded");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_newest_snapshot),
        cmocka_unit_test(test_v1_older_snapshot_and_log),
        cmocka_unit_test(test_v1_log_alone),
        cmocka_unit_test(test_v1_log_continues_in_format_2),
        cmocka_unit_test(test_v2_newest_snapshot),
        cmocka_unit_test(test_v2_older_snapshot_and_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
