/*
 * test_audit.c — damaged and tampered data directories: a flipped bit in a snapshot is skipped
 * by recovery (the log still has everything) and reported by coffer verify; a tampered log
 * record breaks the hash chain; a snapshot whose balance was edited and whose hash was
 * recomputed loads, but verify's replay shows it differs; a logged outcome edited and re-sealed
 * keeps the chain but fails the replay of recovery and of verify.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "coffer.h"
#include "store/store.h"

typedef struct fixture {
    char dir[64];
    char log[4096]; /* the engine's log lines, for assertions */
} fixture;

static void capture_log(void *context, const char *line)
{
    fixture *f = context;
    size_t used = strlen(f->log);
    snprintf(f->log + used, sizeof f->log - used, "%s\n", line);
}

static coffer *open_dir(fixture *f)
{
    coffer_options options;
    coffer_options_init(&options);
    options.log = capture_log;
    options.log_context = f;
    coffer *db = NULL;
    assert_int_equal(coffer_open(f->dir, &options, &db), COFFER_OK);
    return db;
}

/* bank (unbounded) pays alice 100 in ten transfers, one batch each: ten log records. */
static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/coffer-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    coffer *db = open_dir(f);
    coffer_event accounts[2] = {
        {.op = COFFER_OP_CREATE_ACCOUNT,
         .id = "bank",
         .currency = "KRW",
         .flags = COFFER_FLAG_MIN_UNBOUNDED},
        {.op = COFFER_OP_CREATE_ACCOUNT, .id = "alice", .currency = "KRW"},
    };
    coffer_result results[2];
    assert_int_equal(coffer_submit(db, accounts, 2, false, results), COFFER_OK);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "pay-%d", i);
        coffer_event pay = {
            .op = COFFER_OP_TRANSFER, .id = id, .from = "bank", .to = "alice", .amount = 10};
        assert_int_equal(coffer_submit(db, &pay, 1, false, results), COFFER_OK);
        assert_int_equal(results[0].code, COFFER_CREATED);
    }
    coffer_close(db); /* writes the snapshot */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", f->dir);
    assert_int_equal(system(command), 0);
    free(f);
    return 0;
}

/* The one snapshot file of the directory. */
static void snapshot_path(const fixture *f, char *out, size_t size)
{
    char command[256];
    snprintf(command, sizeof command, "ls %s/snapshot-*.cfs", f->dir);
    FILE *listing = popen(command, "r");
    assert_non_null(listing);
    assert_non_null(fgets(out, (int)size, listing));
    out[strcspn(out, "\n")] = 0;
    pclose(listing);
}

static void flip_byte(const char *path, long offset)
{
    FILE *file = fopen(path, "r+b");
    assert_non_null(file);
    assert_int_equal(fseek(file, offset, SEEK_SET), 0);
    int byte = fgetc(file);
    assert_int_not_equal(byte, EOF);
    assert_int_equal(fseek(file, offset, SEEK_SET), 0);
    fputc(byte ^ 0x10, file);
    fclose(file);
}

static int64_t balance(coffer *db, const char *id)
{
    coffer_account account;
    assert_int_equal(coffer_account_get(db, id, COFFER_AT_NOW, 0, &account), COFFER_OK);
    return account.balance;
}

static coffer_dir_report verify(const fixture *f)
{
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(f->dir, NULL, NULL, NULL, &report), COFFER_OK);
    return report;
}

static void test_intact_directory_verifies(void **state)
{
    fixture *f = *state;
    coffer_dir_report report = verify(f);
    assert_true(report.ok);
    assert_true(report.snapshot_found);
    assert_int_equal(report.records, 11);
}

static void test_flipped_bit_in_snapshot_falls_back_to_the_log(void **state)
{
    fixture *f = *state;
    char path[4096];
    snapshot_path(f, path, sizeof path);
    flip_byte(path, 4096 + 100); /* inside the accounts table */
    coffer_dir_report report = verify(f);
    assert_false(report.ok);
    assert_non_null(strstr(report.snapshot_error, "hash mismatch"));
    coffer *db = open_dir(f);
    assert_non_null(strstr(f->log, "skipped"));
    assert_int_equal(balance(db, "alice"), 100); /* rebuilt from the log alone */
    coffer_close(db);
}

static void test_tampered_record_breaks_the_chain(void **state)
{
    fixture *f = *state;
    char path[4096];
    snprintf(path, sizeof path, "%s/log-0000000001.cfl", f->dir);
    flip_byte(path, 64 + 80); /* inside the first record's entries */
    coffer_dir_report report = verify(f);
    assert_false(report.ok);
    assert_false(report.chain_ok);
    assert_non_null(strstr(report.chain_error, "log-0000000001.cfl at offset 64"));
}

/* Rewrites the snapshot's trailing hash so that it matches its (edited) contents. */
static void rehash(const char *path)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat info;
    assert_int_equal(fstat(fd, &info), 0);
    size_t size = (size_t)info.st_size;
    uint8_t *bytes = malloc(size);
    assert_int_equal(pread(fd, bytes, size, 0), (ssize_t)size);
    uint8_t hash[32];
    crypto_generichash(hash, sizeof hash, bytes, size - 32, NULL, 0);
    assert_int_equal(pwrite(fd, hash, sizeof hash, (off_t)(size - 32)), 32);
    free(bytes);
    close(fd);
}

static void test_edited_balance_is_found_by_replay(void **state)
{
    fixture *f = *state;
    char path[4096];
    snapshot_path(f, path, sizeof path);
    /* alice is the second account: add 1,000,000 to its credits_posted and re-seal the file.
     * On disk (snapshot format 2) an account is 186 bytes, its credits_posted after the 64-byte
     * id and the 8-byte debits_posted. */
    long credits = 4096 + 186 + 64 + 8;
    int fd = open(path, O_RDWR);
    int64_t value;
    assert_int_equal(pread(fd, &value, 8, credits), 8);
    assert_int_equal(value, 100);
    value += 1000000;
    assert_int_equal(pwrite(fd, &value, 8, credits), 8);
    close(fd);
    rehash(path);
    coffer_dir_report report = verify(f);
    assert_false(report.ok);
    assert_true(report.chain_ok);
    assert_true(report.snapshot_found);
    assert_false(report.snapshot_matches);
    assert_non_null(strstr(report.snapshot_error, "account alice differs"));
}

static void remove_in(const fixture *f, const char *pattern)
{
    char command[256];
    snprintf(command, sizeof command, "rm -f %s/%s", f->dir, pattern);
    assert_int_equal(system(command), 0);
}

/* Edits the amount in the outcome of the log's last record (pay-9, which moved 10 and left
 * bank at -100 and alice at 100, both at version 11) and re-seals the record's hash. It is the
 * last record, so no later one names its hash; without the snapshot, checkpoint and manifest
 * (which do), the directory reads as one from before they existed and replays from seq 1. */
static void tamper_last_outcome(const fixture *f)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/log-0000000001.cfl", f->dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat info;
    assert_int_equal(fstat(fd, &info), 0);
    size_t size = (size_t)info.st_size, at = 64, last = 0;
    uint8_t *bytes = malloc(size);
    assert_int_equal(pread(fd, bytes, size, 0), (ssize_t)size);
    while (at < size) {
        uint32_t length;
        memcpy(&length, bytes + at + 8, 4);
        last = at;
        at += length;
    }
    assert_int_equal(at, size);
    uint32_t length;
    memcpy(&length, bytes + last + 8, 4);
    /* The outcome ends the record: flags, code, state, amount (zigzag 10 = 20), then from
     * (balance -100, none held, version 11) and to (100, none held, 11), 2 + 1 + 1 bytes each. */
    size_t amount = last + length - 32 - 8 - 1;
    assert_int_equal(bytes[amount - 3], 0x1b); /* recorded, amount, from, to */
    assert_int_equal(bytes[amount], 20);
    bytes[amount] = 22; /* 11 */
    crypto_generichash(bytes + last + length - 32, 32, bytes + last, length - 32, NULL, 0);
    assert_int_equal(pwrite(fd, bytes + last, length, (off_t)last), (ssize_t)length);
    free(bytes);
    close(fd);
    remove_in(f, "snapshot-*");
    remove_in(f, "checkpoint");
    remove_in(f, "manifest");
}

static void test_tampered_outcome_fails_the_replay(void **state)
{
    fixture *f = *state;
    tamper_last_outcome(f);
    coffer_dir_report report = verify(f);
    assert_false(report.ok);
    assert_false(report.chain_ok);
    assert_non_null(strstr(report.chain_error, "event pay-9 at seq 12 replays with another "
                                               "outcome than the logged one (amount)"));
    coffer_options options;
    coffer_options_init(&options);
    options.log = capture_log;
    options.log_context = f;
    coffer *db = NULL;
    assert_int_equal(coffer_open(f->dir, &options, &db), COFFER_STORAGE_FAILED);
    assert_null(db);
    assert_non_null(strstr(f->log, "pay-9 at seq 12"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_intact_directory_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bit_in_snapshot_falls_back_to_the_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tampered_record_breaks_the_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edited_balance_is_found_by_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_outcome_fails_the_replay, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
