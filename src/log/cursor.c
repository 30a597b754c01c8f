/*
 * cursor.c — the log read from where a reader stopped (log/cursor.h). Reads go through a window
 * of the current segment file (one pread fills it), so passing over records after a jump costs
 * a header each, and a record is hashed only when it is handed over.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/cursor.h"

#define CURSOR_WINDOW_BYTES (1u << 20)

struct log_cursor {
    char *dir;
    int fd; /* the segment being read, -1 before the first read or after a failure */
    uint32_t segment;
    uint64_t offset;       /* of the next record in the segment */
    uint64_t position_seq; /* every record before `offset` ends at or before this seq */
    uint8_t previous_hash[RECORD_HASH_BYTES]; /* what the record at `offset` must link to */
    /* The last record hashed: a reader that stopped inside it reads it again, unhashed. */
    bool hashed;
    uint32_t hashed_segment;
    uint64_t hashed_offset;
    uint8_t *window; /* bytes [window_start, window_start + window_length) of the file */
    uint64_t window_start;
    size_t window_length, window_capacity;
};

int log_cursor_open(const char *dir, log_cursor **out)
{
    log_cursor *cursor = calloc(1, sizeof *cursor);
    if (!cursor || !(cursor->dir = strdup(dir))) {
        free(cursor);
        return COFFER_OUT_OF_MEMORY;
    }
    cursor->fd = -1;
    *out = cursor;
    return COFFER_OK;
}

void log_cursor_close(log_cursor *cursor)
{
    if (!cursor)
        return;
    if (cursor->fd >= 0)
        close(cursor->fd);
    free(cursor->window);
    free(cursor->dir);
    free(cursor);
}

static int cursor_error(log_cursor *cursor, char *error, size_t error_size, const char *what)
{
    snprintf(error, error_size, "%.600s: segment %u, offset %llu: %.300s", cursor->dir,
             cursor->segment, (unsigned long long)cursor->offset, what);
    if (cursor->fd >= 0)
        close(cursor->fd);
    cursor->fd = -1; /* the next read finds its place again */
    return COFFER_STORAGE_FAILED;
}

/* The bytes [offset, offset + length) of the segment, or NULL when the file is shorter (not
 * written yet) or cannot be read (*failed). Valid until the next call. */
static const uint8_t *cursor_bytes(log_cursor *cursor, uint64_t offset, size_t length, bool *failed)
{
    if (offset >= cursor->window_start &&
        offset + length <= cursor->window_start + cursor->window_length)
        return cursor->window + (offset - cursor->window_start);
    size_t want = length > CURSOR_WINDOW_BYTES ? length : CURSOR_WINDOW_BYTES;
    if (want > cursor->window_capacity) {
        uint8_t *grown = realloc(cursor->window, want);
        if (!grown) {
            *failed = true;
            return 0;
        }
        cursor->window = grown;
        cursor->window_capacity = want;
    }
    ssize_t got = pread(cursor->fd, cursor->window, want, (off_t)offset);
    cursor->window_start = offset;
    cursor->window_length = got > 0 ? (size_t)got : 0;
    if (got < 0)
        *failed = true;
    return cursor->window_length >= length ? cursor->window : 0;
}

/* Opens segment `number` and reads its header. *exists false when there is no such file, or
 * when its header is not all there yet: the writer creates a segment, then writes and syncs its
 * header before any record, so a reader may find it empty for a moment. */
static int segment_enter(log_cursor *cursor, uint32_t number, wal_tip *before, bool *exists,
                         char *error, size_t error_size)
{
    char path[4096];
    wal_segment_path(path, sizeof path, cursor->dir, number);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *exists = false;
    if (fd < 0)
        return errno == ENOENT ? COFFER_OK
                               : cursor_error(cursor, error, error_size, strerror(errno));
    uint8_t header[WAL_SEGMENT_HEADER_BYTES];
    ssize_t got = pread(fd, header, sizeof header, 0);
    if (got >= 0 && (size_t)got < sizeof header) {
        close(fd);
        return COFFER_OK;
    }
    if (got < 0 || !wal_segment_header_decode(header, sizeof header, number, before)) {
        close(fd);
        return cursor_error(cursor, error, error_size, "bad segment header");
    }
    if (cursor->fd >= 0)
        close(cursor->fd);
    cursor->fd = fd;
    cursor->segment = number;
    cursor->offset = WAL_SEGMENT_HEADER_BYTES;
    cursor->window_length = 0;
    *exists = true;
    return COFFER_OK;
}

/* Places the cursor at the start of the segment that holds after_seq + 1. */
static int cursor_seek(log_cursor *cursor, uint64_t after_seq, char *error, size_t error_size)
{
    wal_segment_info *segments;
    size_t count;
    if (wal_segments(cursor->dir, &segments, &count) != COFFER_OK)
        return cursor_error(cursor, error, error_size, "cannot list the log's segments");
    size_t chosen = count;
    for (size_t i = 0; i < count && segments[i].header_ok && segments[i].seq_before <= after_seq;
         i++)
        chosen = i;
    uint32_t number = chosen < count ? segments[chosen].number : 0;
    bool starts_after = count > 0 && chosen == count;
    free(segments);
    if (count == 0)
        return COFFER_OK; /* an empty log: nothing to read yet */
    if (starts_after)
        return cursor_error(cursor, error, error_size, "the log starts after the seq asked for");
    wal_tip before;
    bool exists;
    int code = segment_enter(cursor, number, &before, &exists, error, error_size);
    if (code != COFFER_OK)
        return code;
    if (!exists)
        return cursor_error(cursor, error, error_size, "segment vanished");
    cursor->position_seq = before.last_seq;
    memcpy(cursor->previous_hash, before.hash, RECORD_HASH_BYTES);
    return COFFER_OK;
}

/* At the end of a segment: moves to the next one when it exists and continues this one. */
static int segment_next(log_cursor *cursor, bool *moved, char *error, size_t error_size)
{
    wal_tip before;
    uint32_t previous = cursor->segment;
    int code = segment_enter(cursor, previous + 1, &before, moved, error, error_size);
    if (code != COFFER_OK || !*moved)
        return code;
    if (before.last_seq != cursor->position_seq ||
        memcmp(before.hash, cursor->previous_hash, RECORD_HASH_BYTES) != 0)
        return cursor_error(cursor, error, error_size,
                            "segment does not continue the previous one");
    return COFFER_OK;
}

int log_cursor_read(log_cursor *cursor, uint64_t after_seq, uint64_t durable_seq, size_t max_bytes,
                    wal_record_fn visit, void *context, char *error, size_t error_size)
{
    int code = COFFER_OK;
    if (cursor->fd < 0 || after_seq < cursor->position_seq)
        code = cursor_seek(cursor, after_seq, error, error_size);
    size_t visited = 0;
    while (code == COFFER_OK && cursor->fd >= 0 && visited < max_bytes) {
        bool failed = false;
        record_header header;
        const uint8_t *bytes = cursor_bytes(cursor, cursor->offset, RECORD_HEADER_BYTES, &failed);
        if (!bytes) {
            bool moved = false;
            if (failed)
                return cursor_error(cursor, error, error_size, "cannot read the segment");
            /* A short read: the end of this segment, or a record still being written. */
            code = segment_next(cursor, &moved, error, error_size);
            if (!moved)
                break;
            continue;
        }
        int status = record_peek(bytes, RECORD_HEADER_BYTES, &header);
        if (status != RECORD_OK && status != RECORD_SHORT)
            return cursor_error(cursor, error, error_size, record_status_name(status));
        if (header.last_seq > durable_seq)
            break; /* not durable yet: it may still be cut */
        bytes = cursor_bytes(cursor, cursor->offset, header.length, &failed);
        if (!bytes)
            return cursor_error(cursor, error, error_size, "a durable record is cut short");
        bool wanted = header.last_seq > after_seq;
        bool hashed = cursor->hashed && cursor->hashed_segment == cursor->segment &&
                      cursor->hashed_offset == cursor->offset;
        status = wanted && !hashed ? record_check(bytes, header.length, &header)
                                   : record_peek(bytes, header.length, &header);
        if (status != RECORD_OK)
            return cursor_error(cursor, error, error_size, record_status_name(status));
        if (memcmp(header.previous_hash, cursor->previous_hash, RECORD_HASH_BYTES) != 0)
            return cursor_error(cursor, error, error_size, "the hash chain is broken");
        if (wanted) {
            cursor->hashed = true;
            cursor->hashed_segment = cursor->segment;
            cursor->hashed_offset = cursor->offset;
            code = visit(bytes, &header, cursor->segment, cursor->offset, context);
            if (code != 0)
                break; /* the visitor may want this record again: stay before it */
            visited += header.length;
        }
        cursor->offset += header.length;
        cursor->position_seq = header.last_seq;
        memcpy(cursor->previous_hash, header.hash, RECORD_HASH_BYTES);
    }
    return code;
}
