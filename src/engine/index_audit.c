/*
 * index_audit.c — coffer verify's check of the on-disk index (DATA/index) against the log: its
 * applied seq must end a record of this log with the same hash, and every record up to it must
 * be in the index as derive.c makes it, with nothing else there. The log is the directory's
 * segment files, or the rows of a log in PostgreSQL. A missing index is reported but is not
 * damage: the next open of the engine builds it from the log.
 */
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "index/index.h"
#include "log/cursor.h"
#include "log/pg_cursor.h"

/* The log read per cursor call: bounded, so a long log is read in steps. */
#define INDEX_AUDIT_READ_BYTES (8u << 20)

typedef struct index_audit {
    index_check *check;
    index_position position;
    uint64_t last_seq; /* of the last record checked */
    bool anchor_matches;
    char *error;
    size_t error_size;
} index_audit;

static int audit_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                        uint64_t offset, void *context)
{
    (void)segment, (void)offset;
    index_audit *audit = context;
    if (header->last_seq <= audit->last_seq)
        return 0;
    if (!index_check_record(audit->check, bytes, header, audit->error, audit->error_size))
        return COFFER_STORAGE_FAILED;
    audit->last_seq = header->last_seq;
    if (header->last_seq == audit->position.applied_seq)
        audit->anchor_matches =
            memcmp(header->hash, audit->position.applied_hash, RECORD_HASH_BYTES) == 0;
    return 0;
}

/* Reads every record up to the applied seq into the check, from the segment files of `dir` or
 * the log in PostgreSQL at `conninfo`. false with the reason. */
static bool audit_log(const char *dir, const char *conninfo, index_audit *audit)
{
    log_cursor *cursor = 0;
    pg_read_pool *pool = 0;
    pg_cursor *rows = 0;
    int code = conninfo ? pg_read_pool_open(conninfo, 0, &pool) : log_cursor_open(dir, &cursor);
    if (code == COFFER_OK && pool)
        code = pg_cursor_open(pool, &rows);
    if (code != COFFER_OK) {
        snprintf(audit->error, audit->error_size, "out of memory");
        pg_read_pool_close(pool);
        return false;
    }
    char error[1024] = "";
    while (code == COFFER_OK && audit->last_seq < audit->position.applied_seq) {
        uint64_t before = audit->last_seq;
        code =
            rows
                ? pg_cursor_read(rows, audit->last_seq, audit->position.applied_seq,
                                 INDEX_AUDIT_READ_BYTES, audit_record, audit, error, sizeof error)
                : log_cursor_read(cursor, audit->last_seq, audit->position.applied_seq,
                                  INDEX_AUDIT_READ_BYTES, audit_record, audit, error, sizeof error);
        if (code == COFFER_OK && audit->last_seq == before)
            break; /* no record ends between here and the applied seq */
    }
    log_cursor_close(cursor);
    pg_cursor_close(rows);
    pg_read_pool_close(pool);
    if (code != COFFER_OK && !audit->error[0])
        snprintf(audit->error, audit->error_size, "the log cannot be read: %.900s", error);
    if (code == COFFER_OK && !audit->anchor_matches)
        snprintf(audit->error, audit->error_size,
                 "its applied seq %llu is not the end of a log record with its hash",
                 (unsigned long long)audit->position.applied_seq);
    return code == COFFER_OK && audit->anchor_matches;
}

void engine_audit_index(const char *dir, const char *conninfo, coffer_dir_report *report)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, INDEX_DIRECTORY);
    index_db *index = 0;
    char error[1024] = "";
    int code = index_open(path, true, &index, error, sizeof error);
    report->index_found = code == COFFER_OK || !strstr(error, "missing");
    if (code != COFFER_OK) {
        snprintf(report->index_error, sizeof report->index_error, "%s", error);
        return;
    }
    index_audit audit = {.position = index_position_get(index),
                         .error = report->index_error,
                         .error_size = sizeof report->index_error};
    report->index_applied_seq = audit.position.applied_seq;
    report->index_covers_from_seq = audit.position.covers_from_seq;
    if (audit.position.applied_seq > report->last_seq) {
        snprintf(report->index_error, sizeof report->index_error,
                 "its applied seq %llu is past the log's last seq %llu",
                 (unsigned long long)audit.position.applied_seq,
                 (unsigned long long)report->last_seq);
    } else if (index_check_begin(index, &audit.check) != COFFER_OK) {
        snprintf(report->index_error, sizeof report->index_error, "out of memory");
    } else {
        audit.anchor_matches = audit.position.applied_seq == 0;
        report->index_ok =
            audit_log(dir, conninfo, &audit) &&
            index_check_finish(audit.check, report->index_error, sizeof report->index_error);
    }
    index_check_free(audit.check);
    index_close(index);
}
