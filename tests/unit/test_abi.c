/*
 * test_abi.c — what coffer.h promises a program built against other headers: the version
 * macros match the library, options and output structs are read and written only up to the
 * size the caller knows, code counters come through a function, and the offline entry points
 * (coffer_verify_dir, coffer_dump_dir) work from coffer.h alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coffer.h"
#include "support.h"

/* The first published coffer_options ended with `io`: a caller that old passes this size. */
#define OPTIONS_SIZE_FIRST (offsetof(coffer_options, io) + sizeof(const coffer_io *))

static void test_version_macros_match_the_library(void **state)
{
    (void)state;
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", COFFER_VERSION_MAJOR, COFFER_VERSION_MINOR,
             COFFER_VERSION_PATCH);
    assert_string_equal(COFFER_VERSION_STRING, expected);
    assert_string_equal(coffer_version(), COFFER_VERSION_STRING);
    assert_int_equal(COFFER_VERSION_NUMBER, COFFER_VERSION_MAJOR * 10000 +
                                                COFFER_VERSION_MINOR * 100 + COFFER_VERSION_PATCH);
}

static int open_with(const coffer_options *options)
{
    coffer *db = NULL;
    int code = coffer_open(NULL, options, &db);
    assert_true(code == COFFER_OK ? db != NULL : db == NULL);
    coffer_close(db);
    return code;
}

static void test_options_without_init_are_refused(void **state)
{
    (void)state;
    coffer_options options;
    memset(&options, 0, sizeof options);
    options.accounts_max = 100;
    options.transfers_max = 100;
    options.queue_events_max = 65536;
    assert_int_equal(open_with(&options), COFFER_INVALID_ARGUMENT); /* size 0 */
    coffer_options_init(&options);
    assert_int_equal(options.size, sizeof options);
    assert_int_equal(open_with(&options), COFFER_OK);
}

/* An older caller's struct is shorter: what it does not know keeps its default. */
static void test_an_older_callers_options_are_read_to_its_size(void **state)
{
    (void)state;
    unsigned char buffer[sizeof(coffer_options) + 16];
    memset(buffer, 0xA5, sizeof buffer); /* what lies beyond the caller's struct */
    coffer_options *options = (coffer_options *)buffer;
    coffer_options_init_sized(options, OPTIONS_SIZE_FIRST);
    assert_int_equal(options->size, OPTIONS_SIZE_FIRST);
    for (size_t i = OPTIONS_SIZE_FIRST; i < sizeof buffer; i++)
        assert_int_equal(buffer[i], 0xA5); /* init wrote nothing past the caller's size */
    assert_int_equal(open_with(options), COFFER_OK);
    coffer_options_init_sized(options, OPTIONS_SIZE_FIRST - 1);
    assert_int_equal(options->size, OPTIONS_SIZE_FIRST); /* too small: left alone */
}

/* A newer caller's struct is longer: zero in the fields unknown here is their default, and
 * anything else is a request this library cannot honour. */
static void test_a_newer_callers_unknown_fields_must_be_zero(void **state)
{
    (void)state;
    unsigned char buffer[sizeof(coffer_options) + 16];
    coffer_options *options = (coffer_options *)buffer;
    coffer_options_init_sized(options, sizeof buffer);
    assert_int_equal(options->size, sizeof buffer);
    assert_int_equal(options->queue_events_max, 64u * 1024);
    assert_int_equal(options->memory_bytes_max, 0); /* decided at open, from the machine */
    assert_int_equal(open_with(options), COFFER_OK);
    buffer[sizeof buffer - 1] = 1;
    assert_int_equal(open_with(options), COFFER_INVALID_ARGUMENT);
}

static void test_stats_are_written_only_to_the_callers_size(void **state)
{
    test_ledger *ledger = *state;
    unsigned char buffer[sizeof(coffer_stats) + 8];
    memset(buffer, 0xA5, sizeof buffer);
    size_t known = offsetof(coffer_stats, accounts) + sizeof(uint64_t);
    coffer_stats *stats = (coffer_stats *)buffer;
    assert_int_equal(coffer_stats_get_sized(ledger->db, stats, known), COFFER_OK);
    assert_int_equal(stats->accounts, 0);
    for (size_t i = known; i < sizeof buffer; i++)
        assert_int_equal(buffer[i], 0xA5);
    assert_int_equal(coffer_stats_get_sized(ledger->db, stats, 0), COFFER_INVALID_ARGUMENT);
}

static void test_code_counts_come_through_a_function(void **state)
{
    test_ledger *ledger = *state;
    coffer_event events[3] = {account_event("a", "KRW"), account_event("a", "KRW"),
                              account_event("", "KRW")};
    coffer_result results[3];
    assert_int_equal(coffer_submit(ledger->db, events, 3, false, results), COFFER_OK);
    uint64_t counts[COFFER_CODE_LIMIT + 4];
    memset(counts, 0xFF, sizeof counts);
    assert_int_equal(coffer_code_counts(ledger->db, counts, COFFER_CODE_LIMIT + 4), COFFER_OK);
    assert_int_equal(counts[COFFER_CREATED], 1);
    assert_int_equal(counts[COFFER_EXISTS], 1);
    assert_int_equal(counts[COFFER_INVALID_FIELD], 1);
    assert_int_equal(counts[COFFER_OK], 0);
    for (size_t code = COFFER_CODE_LIMIT; code < COFFER_CODE_LIMIT + 4; code++)
        assert_int_equal(counts[code], 0); /* beyond the table: zero, not garbage */
    uint64_t first_two[2] = {7, 7};
    assert_int_equal(coffer_code_counts(ledger->db, first_two, 2), COFFER_OK);
    assert_int_equal(first_two[COFFER_CREATED], 1);
    assert_int_equal(coffer_code_counts(ledger->db, NULL, 0), COFFER_OK);
    assert_int_equal(coffer_code_counts(ledger->db, NULL, 1), COFFER_INVALID_ARGUMENT);
    assert_int_equal(coffer_code_counts(NULL, counts, 1), COFFER_INVALID_ARGUMENT);
}

/* ---- verify and dump through coffer.h ------------------------------------------------------ */

typedef struct dump_seen {
    uint64_t seqs[8];
    char ids[8][16];
    size_t count;
    size_t stop_after; /* 0: never stop */
} dump_seen;

static int remember_entry(const coffer_log_entry *entry, void *context)
{
    dump_seen *seen = context;
    assert_true(seen->count < 8);
    seen->seqs[seen->count] = entry->seq;
    snprintf(seen->ids[seen->count], sizeof seen->ids[0], "%s", entry->event->id);
    seen->count++;
    return seen->count == seen->stop_after ? 77 : 0;
}

static void write_directory(const char *dir)
{
    coffer_options options;
    coffer_options_init(&options);
    options.fsync_never = true;
    coffer *db = NULL;
    assert_int_equal(coffer_open(dir, &options, &db), COFFER_OK);
    coffer_event bank = account_event("bank", "KRW");
    bank.flags = COFFER_FLAG_MIN_UNBOUNDED;
    coffer_event events[3] = {bank, account_event("alice", "KRW"),
                              transfer_event("pay", "bank", "alice", 5)};
    coffer_result results[3];
    for (size_t i = 0; i < 3; i++) /* three batches: three records */
        assert_int_equal(coffer_submit(db, &events[i], 1, false, &results[i]), COFFER_OK);
    coffer_close(db);
}

static void test_verify_and_dump_a_directory(void **state)
{
    (void)state;
    char dir[] = "/tmp/coffer-abi-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_directory(dir);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(dir, NULL, NULL, NULL, &report), COFFER_OK);
    assert_true(report.ok);
    assert_int_equal(report.last_seq, 3);
    assert_int_equal(report.records, 3);

    dump_seen seen = {0};
    char error[256];
    assert_int_equal(coffer_dump_dir(dir, remember_entry, &seen, error, sizeof error), COFFER_OK);
    assert_int_equal(seen.count, 3);
    assert_int_equal(seen.seqs[2], 3);
    assert_string_equal(seen.ids[0], "bank");
    assert_string_equal(seen.ids[2], "pay");
    dump_seen stopping = {.stop_after = 2};
    assert_int_equal(coffer_dump_dir(dir, remember_entry, &stopping, error, sizeof error), 77);
    assert_int_equal(stopping.count, 2);
    assert_int_equal(coffer_dump_dir(dir, NULL, NULL, error, sizeof error),
                     COFFER_INVALID_ARGUMENT);

    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    assert_int_equal(system(command), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_macros_match_the_library),
        cmocka_unit_test(test_options_without_init_are_refused),
        cmocka_unit_test(test_an_older_callers_options_are_read_to_its_size),
        cmocka_unit_test(test_a_newer_callers_unknown_fields_must_be_zero),
        cmocka_unit_test_setup_teardown(test_stats_are_written_only_to_the_callers_size,
                                        ledger_setup, ledger_teardown),
        cmocka_unit_test_setup_teardown(test_code_counts_come_through_a_function, ledger_setup,
                                        ledger_teardown),
        cmocka_unit_test(test_verify_and_dump_a_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
