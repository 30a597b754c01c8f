/*
 * test_log.c — the log interface (log/log.h) on the local segment files: records appended with
 * log_append and made durable with log_sync read back through log_read_from in order and byte
 * for byte, from the first seq, from inside a record, from the tail and across segments; a read
 * from a joining position checks its hash; a damaged record in the middle stops the read there
 * and is reported, never skipped. The cursor (log/cursor.h) the change feed reads through gives
 * the same records from any seq, goes on where it stopped, never passes the durable seq it is
 * given, and reports a damaged record. Each test runs in its own temporary directory.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "files.h"
#include "log/cursor.h"
#include "log/log.h"
#include "log/record.h"

enum {
    RECORDS = 40,        /* records each test appends */
    SMALL_SEGMENT = 600, /* bytes: a few records a segment, so the log rolls over often */
};

#define TS0 1700000000000000000ULL

/* A data directory with a log of RECORDS records; record i holds i % 3 + 1 expiry entries. */
typedef struct fixture {
    char dir[64];
    durable_log log;
    record_buffer records[RECORDS];
    wal_tip tips[RECORDS + 1]; /* tips[i]: the chain before record i; tips[RECORDS]: the tail */
} fixture;

/* What a read visited. */
typedef struct visited {
    const fixture *f;
    size_t count;
    size_t first;  /* the index of the first record visited */
    bool in_order; /* each visited record is the appended one that follows the previous */
    uint32_t last_segment;
} visited;

static void record_build(fixture *f, size_t i)
{
    const wal_tip *before = &f->tips[i];
    uint64_t first = before->last_seq + 1, events = i % 3 + 1;
    record_buffer *out = &f->records[i];
    record_begin(out, first, TS0 + first, before->hash);
    for (uint64_t k = 0; k < events; k++) {
        char hold_id[32];
        int length =
            snprintf(hold_id, sizeof hold_id, "hold-%llu", (unsigned long long)(first + k));
        coffer_result expired = {
            .code = COFFER_OK, .state = COFFER_STATE_EXPIRED, .seq = first + k};
        record_add_expire(out, first + k, hold_id, (size_t)length, &expired);
    }
    wal_tip *after = &f->tips[i + 1];
    after->last_seq = first + events - 1;
    after->last_timestamp = TS0 + after->last_seq;
    assert_true(record_finish(out, after->last_seq, after->hash));
}

/* Opens the local log for writing in the fixture's (empty) directory and appends every record,
 * syncing every fourth and at the end. */
static void log_fill(fixture *f, uint64_t segment_bytes_max)
{
    wal_scan_options scan_options = {.read_only = true};
    wal_scan_result scan;
    assert_int_equal(wal_scan(f->dir, &scan_options, 0, 0, &scan), COFFER_OK);
    local_log_options options = {0, segment_bytes_max, true, 0};
    char error[1024];
    assert_int_equal(local_log_open(&f->log, f->dir, &scan, &options, error, sizeof error),
                     COFFER_OK);
    for (size_t i = 0; i < RECORDS; i++) {
        record_build(f, i);
        assert_int_equal(log_append(&f->log, f->records[i].bytes, f->records[i].length, &f->tips[i],
                                    &f->tips[i + 1]),
                         COFFER_OK);
        if (i % 4 == 3 || i + 1 == RECORDS)
            assert_int_equal(log_sync(&f->log), COFFER_OK);
    }
    wal_tip tail;
    log_tail(&f->log, &tail);
    assert_int_equal(tail.last_seq, f->tips[RECORDS].last_seq);
    assert_memory_equal(tail.hash, f->tips[RECORDS].hash, RECORD_HASH_BYTES);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/coffer-test-log-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    log_close(&f->log, true);
    for (size_t i = 0; i < RECORDS; i++)
        record_buffer_free(&f->records[i]);
    remove_tree(f->dir);
    free(f);
    return 0;
}

/* The index of the appended record whose seqs hold `seq`. */
static size_t record_holding(const fixture *f, uint64_t seq)
{
    for (size_t i = 0; i < RECORDS; i++)
        if (seq <= f->tips[i + 1].last_seq)
            return i;
    fail_msg("seq %llu is past the log", (unsigned long long)seq);
    return 0;
}

static int visit_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                        uint64_t offset, void *context)
{
    (void)offset;
    visited *seen = context;
    size_t i = record_holding(seen->f, header->seq_base);
    if (seen->count == 0)
        seen->first = i;
    const record_buffer *appended = &seen->f->records[i];
    seen->in_order &= i == seen->first + seen->count && header->length == appended->length &&
                      memcmp(bytes, appended->bytes, appended->length) == 0;
    seen->last_segment = segment;
    seen->count++;
    return 0;
}

static int read_after(fixture *f, uint64_t after_seq, const uint8_t *after_hash, visited *seen)
{
    *seen = (visited){.f = f, .in_order = true};
    return log_read_from(&f->log, after_seq, after_hash, visit_record, seen);
}

static void test_read_back_in_order(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    visited seen;
    assert_int_equal(read_after(f, 0, 0, &seen), COFFER_OK);
    assert_int_equal(seen.count, RECORDS);
    assert_int_equal(seen.first, 0);
    assert_true(seen.in_order);
}

static void test_read_from_inside_a_record(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    /* Record 20 holds three seqs: reading after its first one visits it whole, then the rest. */
    uint64_t after = f->tips[20].last_seq + 1;
    assert_true(f->tips[21].last_seq > after);
    visited seen;
    assert_int_equal(read_after(f, after, 0, &seen), COFFER_OK);
    assert_int_equal(seen.first, 20);
    assert_int_equal(seen.count, RECORDS - 20);
    assert_true(seen.in_order);
    /* After the last seq of record 20: from record 21. */
    assert_int_equal(read_after(f, f->tips[21].last_seq, f->tips[21].hash, &seen), COFFER_OK);
    assert_int_equal(seen.first, 21);
    assert_int_equal(seen.count, RECORDS - 21);
    assert_true(seen.in_order);
}

static void test_read_from_the_tail_visits_nothing(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    visited seen;
    assert_int_equal(read_after(f, f->tips[RECORDS].last_seq, f->tips[RECORDS].hash, &seen),
                     COFFER_OK);
    assert_int_equal(seen.count, 0);
}

static void test_read_across_segments(void **state)
{
    fixture *f = *state;
    log_fill(f, SMALL_SEGMENT);
    visited seen;
    assert_int_equal(read_after(f, 0, 0, &seen), COFFER_OK);
    assert_int_equal(seen.count, RECORDS);
    assert_true(seen.in_order);
    assert_true(seen.last_segment >= 5);
    /* From the middle of a later segment too: the read starts at the segment that holds it. */
    assert_int_equal(read_after(f, f->tips[30].last_seq, f->tips[30].hash, &seen), COFFER_OK);
    assert_int_equal(seen.first, 30);
    assert_int_equal(seen.count, RECORDS - 30);
    assert_true(seen.in_order);
}

static void test_read_checks_the_joining_hash(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    uint8_t other[RECORD_HASH_BYTES];
    memcpy(other, f->tips[10].hash, sizeof other);
    other[0] ^= 1;
    visited seen;
    assert_int_equal(read_after(f, f->tips[10].last_seq, other, &seen), COFFER_STORAGE_FAILED);
    assert_non_null(strstr(local_log_last_read(&f->log)->error, "snapshot's chain hash"));
}

/* Flips one byte of record `i` where the log file holds it. */
static void record_damage(fixture *f, size_t i)
{
    char path[4096];
    wal_segment_path(path, sizeof path, f->dir, 1);
    uint64_t offset = WAL_SEGMENT_HEADER_BYTES;
    for (size_t k = 0; k < i; k++)
        offset += f->records[k].length;
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    off_t at = (off_t)(offset + f->records[i].length / 2);
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
}

static void test_damaged_record_reported(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    record_damage(f, 17);
    /* A reader of its own, as recovery and verify open one. */
    durable_log reader;
    assert_int_equal(local_log_open_read(&reader, f->dir, 0), COFFER_OK);
    visited seen = {.f = f, .in_order = true};
    assert_int_equal(log_read_from(&reader, 0, 0, visit_record, &seen), COFFER_STORAGE_FAILED);
    assert_int_equal(seen.count, 17); /* the records before it, and nothing after */
    assert_true(seen.in_order);
    const wal_scan_result *read = local_log_last_read(&reader);
    assert_non_null(strstr(read->error, "log-0000000001.cfl at offset"));
    wal_tip tail;
    log_tail(&reader, &tail);
    assert_int_equal(tail.last_seq, f->tips[17].last_seq);
    /* The reader never writes. */
    assert_int_equal(log_append(&reader, f->records[0].bytes, f->records[0].length,
                                &f->tips[RECORDS], &f->tips[RECORDS]),
                     COFFER_STORAGE_FAILED);
    log_close(&reader, true);
}

/* Stops after `stop_after` records (0: never), as a feed page that is full does. */
typedef struct cursor_visit {
    visited seen;
    size_t stop_after;
} cursor_visit;

static int visit_until(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    cursor_visit *v = context;
    if (v->stop_after && v->seen.count == v->stop_after)
        return COFFER_EXISTS; /* any non-zero code */
    return visit_record(bytes, header, segment, offset, &v->seen);
}

static int cursor_read(fixture *f, log_cursor *cursor, uint64_t after_seq, uint64_t durable_seq,
                       size_t stop_after, cursor_visit *v)
{
    *v = (cursor_visit){.seen = {.f = f, .in_order = true}, .stop_after = stop_after};
    char error[1024];
    return log_cursor_read(cursor, after_seq, durable_seq, SIZE_MAX, visit_until, v, error,
                           sizeof error);
}

static void test_cursor_reads_on_from_any_seq(void **state)
{
    fixture *f = *state;
    log_fill(f, SMALL_SEGMENT);
    log_cursor *cursor;
    assert_int_equal(log_cursor_open(f->dir, &cursor), COFFER_OK);
    uint64_t tail = f->tips[RECORDS].last_seq;
    cursor_visit v;
    /* Page by page: 7 records at a time, each page after the last seq of the one before. */
    uint64_t after = 0;
    size_t total = 0;
    for (int page = 0; page < 10 && after < tail; page++) {
        int code = cursor_read(f, cursor, after, tail, 7, &v);
        assert_true(code == COFFER_OK || code == COFFER_EXISTS);
        assert_int_equal(v.seen.first, total);
        assert_true(v.seen.in_order);
        total += v.seen.count;
        after = f->tips[total].last_seq;
    }
    assert_int_equal(total, RECORDS);
    /* A jump back, into the middle of a record (20 holds three seqs) in an earlier segment. */
    assert_int_equal(cursor_read(f, cursor, f->tips[20].last_seq + 1, tail, 0, &v), COFFER_OK);
    assert_int_equal(v.seen.first, 20);
    assert_int_equal(v.seen.count, RECORDS - 20);
    assert_true(v.seen.in_order);
    /* Nothing past the durable seq it is given, then the rest once it moves. */
    assert_int_equal(cursor_read(f, cursor, 0, f->tips[25].last_seq, 0, &v), COFFER_OK);
    assert_int_equal(v.seen.count, 25);
    assert_int_equal(cursor_read(f, cursor, f->tips[25].last_seq, tail, 0, &v), COFFER_OK);
    assert_int_equal(v.seen.first, 25);
    assert_int_equal(v.seen.count, RECORDS - 25);
    assert_int_equal(cursor_read(f, cursor, tail, tail, 0, &v), COFFER_OK);
    assert_int_equal(v.seen.count, 0);
    log_cursor_close(cursor);
}

/* The writer creates a segment, then writes its header: a reader at the end of the segment
 * before finds the next one empty or with part of its header, which is not yet there rather
 * than damage; a whole header that does not decode is damage. */
static void test_cursor_waits_for_a_segment_being_created(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    char path[4096];
    wal_segment_path(path, sizeof path, f->dir, 2);
    log_cursor *cursor;
    assert_int_equal(log_cursor_open(f->dir, &cursor), COFFER_OK);
    uint64_t tail = f->tips[RECORDS].last_seq;
    cursor_visit v;
    static const uint8_t garbage[WAL_SEGMENT_HEADER_BYTES] = {'C', 'O', 'F', 'F', 'E', 'R'};
    size_t lengths[] = {0, 10, WAL_SEGMENT_HEADER_BYTES};
    for (size_t i = 0; i < 3; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, garbage, lengths[i]), (ssize_t)lengths[i]);
        close(fd);
        int code = cursor_read(f, cursor, 0, tail, 0, &v);
        assert_int_equal(code, i < 2 ? COFFER_OK : COFFER_STORAGE_FAILED);
        assert_int_equal(v.seen.count, RECORDS);
    }
    log_cursor_close(cursor);
}

static void test_cursor_reports_a_damaged_record(void **state)
{
    fixture *f = *state;
    log_fill(f, 0);
    record_damage(f, 17);
    log_cursor *cursor;
    assert_int_equal(log_cursor_open(f->dir, &cursor), COFFER_OK);
    cursor_visit v = {0};
    char error[1024];
    v.seen = (visited){.f = f, .in_order = true};
    assert_int_equal(log_cursor_read(cursor, 0, f->tips[RECORDS].last_seq, SIZE_MAX, visit_until,
                                     &v, error, sizeof error),
                     COFFER_STORAGE_FAILED);
    assert_int_equal(v.seen.count, 17);
    assert_non_null(strstr(error, "segment 1, offset"));
    /* Asked again from past it, the cursor finds the damage again rather than skipping it. */
    v.seen = (visited){.f = f, .in_order = true};
    assert_int_equal(log_cursor_read(cursor, f->tips[17].last_seq, f->tips[RECORDS].last_seq,
                                     SIZE_MAX, visit_until, &v, error, sizeof error),
                     COFFER_STORAGE_FAILED);
    assert_int_equal(v.seen.count, 0);
    log_cursor_close(cursor);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_back_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_from_inside_a_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_from_the_tail_visits_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_across_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_checks_the_joining_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_record_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_reads_on_from_any_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_reports_a_damaged_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_waits_for_a_segment_being_created, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
