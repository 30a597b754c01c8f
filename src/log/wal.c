/*
 * wal.c — segment files, appending, syncing and scanning (see wal.h).
 */
#include "log/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char segment_magic[8] = {'C', 'O', 'F', 'F', 'E', 'R', 'L', 'G'};
#define SEGMENT_VERSION 1

static int real_write_at(int fd, const void *bytes, size_t length, uint64_t offset, void *context)
{
    (void)context;
    const char *at = bytes;
    while (length > 0) {
        ssize_t written = pwrite(fd, at, length, (off_t)offset);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        at += written;
        length -= (size_t)written;
        offset += (uint64_t)written;
    }
    return 0;
}

static int real_sync(int fd, void *context)
{
    (void)context;
    return fdatasync(fd);
}

const wal_io wal_io_default = {real_write_at, real_sync, 0};

void wal_segment_path(char *out, size_t size, const char *dir, uint32_t segment)
{
    snprintf(out, size, "%s/log-%010u.cfl", dir, segment);
}

int wal_sync_directory(int dir_fd)
{
    return fsync(dir_fd);
}

/* ---- segment headers ----------------------------------------------------------------------- */

static void header_encode(uint8_t out[WAL_SEGMENT_HEADER_BYTES], uint32_t segment,
                          const wal_tip *before)
{
    memset(out, 0, WAL_SEGMENT_HEADER_BYTES);
    uint32_t version = SEGMENT_VERSION;
    memcpy(out, segment_magic, 8);
    memcpy(out + 8, &version, 4);
    memcpy(out + 12, &segment, 4);
    memcpy(out + 16, &before->last_seq, 8);
    memcpy(out + 24, before->hash, RECORD_HASH_BYTES);
    uint8_t hash[RECORD_HASH_BYTES];
    crypto_generichash(hash, sizeof hash, out, 56, 0, 0);
    memcpy(out + 56, hash, 8);
}

static bool header_decode(const uint8_t *bytes, size_t available, uint32_t segment, wal_tip *before)
{
    if (available < WAL_SEGMENT_HEADER_BYTES || memcmp(bytes, segment_magic, 8) != 0)
        return false;
    uint8_t hash[RECORD_HASH_BYTES];
    crypto_generichash(hash, sizeof hash, bytes, 56, 0, 0);
    uint32_t version, number;
    memcpy(&version, bytes + 8, 4);
    memcpy(&number, bytes + 12, 4);
    if (memcmp(hash, bytes + 56, 8) != 0 || version != SEGMENT_VERSION || number != segment)
        return false;
    memset(before, 0, sizeof *before);
    memcpy(&before->last_seq, bytes + 16, 8);
    memcpy(before->hash, bytes + 24, RECORD_HASH_BYTES);
    return true;
}

bool wal_segment_header_decode(const uint8_t *bytes, size_t available, uint32_t segment,
                               wal_tip *before)
{
    return header_decode(bytes, available, segment, before);
}

/* ---- scanning ------------------------------------------------------------------------------ */

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The segment numbers in `dir`, sorted; *count_out of them. NULL with count 0 when none. */
static uint32_t *list_segments(const char *dir, size_t *count_out, int *error)
{
    *count_out = 0;
    *error = 0;
    DIR *listing = opendir(dir);
    if (!listing) {
        *error = errno;
        return 0;
    }
    uint32_t *numbers = 0;
    size_t count = 0, capacity = 0;
    struct dirent *item;
    while ((item = readdir(listing))) {
        unsigned number;
        char tail;
        if (sscanf(item->d_name, "log-%10u.cf%c", &number, &tail) != 2 || tail != 'l' ||
            strlen(item->d_name) != 18)
            continue;
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 16;
            uint32_t *grown = realloc(numbers, capacity * sizeof *grown);
            if (!grown) {
                *error = ENOMEM;
                break;
            }
            numbers = grown;
        }
        numbers[count++] = number;
    }
    closedir(listing);
    if (*error) {
        free(numbers);
        return 0;
    }
    if (count)
        qsort(numbers, count, sizeof *numbers, compare_u32);
    *count_out = count;
    return numbers;
}

int wal_segments(const char *dir, wal_segment_info **out, size_t *count)
{
    int error;
    uint32_t *numbers = list_segments(dir, count, &error);
    *out = calloc(*count + 1, sizeof **out);
    if (error || !*out) {
        free(numbers);
        free(*out);
        *out = 0;
        return COFFER_STORAGE_FAILED;
    }
    for (size_t i = 0; i < *count; i++) {
        wal_segment_info *info = &(*out)[i];
        char path[4096];
        wal_segment_path(path, sizeof path, dir, numbers[i]);
        info->number = numbers[i];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat status;
        uint8_t header[WAL_SEGMENT_HEADER_BYTES];
        wal_tip before;
        if (fd >= 0 && fstat(fd, &status) == 0) {
            info->bytes = (uint64_t)status.st_size;
            info->header_ok = pread(fd, header, sizeof header, 0) == (ssize_t)sizeof header &&
                              header_decode(header, sizeof header, numbers[i], &before);
            info->seq_before = info->header_ok ? before.last_seq : 0;
        }
        if (fd >= 0)
            close(fd);
    }
    free(numbers);
    return COFFER_OK;
}

/* After a bad record at `offset`, is there any valid record later in the segment? Then the
 * bad one is corruption, not a torn tail. */
static bool valid_record_after(const uint8_t *bytes, size_t size, uint64_t offset)
{
    for (uint64_t at = offset + 1; at + RECORD_HEADER_BYTES + RECORD_HASH_BYTES <= size; at++) {
        uint32_t magic;
        memcpy(&magic, bytes + at, 4);
        if (magic != RECORD_MAGIC)
            continue;
        record_header header;
        if (record_check(bytes + at, size - at, &header) == RECORD_OK)
            return true;
    }
    return false;
}

typedef struct scan_state {
    const wal_scan_options *options;
    wal_record_fn visit;
    void *context;
    wal_scan_result *result;
    uint64_t total_bytes, done_bytes;
} scan_state;

static int corrupt(wal_scan_result *result, const char *path, uint64_t offset, const char *what)
{
    snprintf(result->error, sizeof result->error, "%.700s at offset %llu: %.200s", path,
             (unsigned long long)offset, what);
    return COFFER_STORAGE_FAILED;
}

/* Walks the records of one mapped segment. *end_out: where its valid records end. */
static int scan_records(scan_state *state, const char *path, uint32_t segment, const uint8_t *bytes,
                        size_t size, bool last, uint64_t *end_out)
{
    wal_scan_result *result = state->result;
    uint64_t offset = WAL_SEGMENT_HEADER_BYTES;
    while (offset < size) {
        record_header header;
        int status = record_check(bytes + offset, size - offset, &header);
        if (status != RECORD_OK) {
            if (!last || valid_record_after(bytes, size, offset))
                return corrupt(result, path, offset, record_status_name(status));
            result->truncated_bytes = size - offset; /* torn: never acknowledged */
            break;
        }
        if (memcmp(header.previous_hash, result->tip.hash, RECORD_HASH_BYTES) != 0)
            return corrupt(result, path, offset, "hash chain broken (previous hash differs)");
        if (header.seq_base <= result->tip.last_seq || header.last_seq < header.seq_base)
            return corrupt(result, path, offset, "seq does not follow the previous record");
        if (header.last_seq > state->options->skip_through && state->visit) {
            int code = state->visit(bytes + offset, &header, segment, offset, state->context);
            if (code != 0)
                return code;
        }
        if (header.last_seq == state->options->skip_through && state->options->skip_hash &&
            memcmp(header.hash, state->options->skip_hash, RECORD_HASH_BYTES) != 0)
            return corrupt(result, path, offset, "record differs from the snapshot's chain hash");
        result->tip.last_seq = header.last_seq;
        result->tip.last_timestamp = header.ts0 + (header.last_seq - header.seq_base);
        memcpy(result->tip.hash, header.hash, RECORD_HASH_BYTES);
        result->records++;
        offset += header.length;
        state->done_bytes += header.length;
        if (state->options->progress)
            state->options->progress(state->done_bytes, state->total_bytes,
                                     state->options->progress_context);
    }
    *end_out = offset;
    return COFFER_OK;
}

static int scan_segment(scan_state *state, const char *dir, uint32_t segment, bool last, bool first)
{
    wal_scan_result *result = state->result;
    char path[4096];
    wal_segment_path(path, sizeof path, dir, segment);
    int fd = open(path, last && !state->options->read_only ? O_RDWR : O_RDONLY);
    if (fd < 0)
        return corrupt(result, path, 0, strerror(errno));
    struct stat info;
    if (fstat(fd, &info) != 0) {
        close(fd);
        return corrupt(result, path, 0, strerror(errno));
    }
    size_t size = (size_t)info.st_size;
    const uint8_t *bytes = size ? mmap(0, size, PROT_READ, MAP_PRIVATE, fd, 0) : 0;
    if (size && bytes == MAP_FAILED) {
        close(fd);
        return corrupt(result, path, 0, strerror(errno));
    }
    wal_tip before;
    int code = COFFER_OK;
    bool header_ok = header_decode(bytes, size, segment, &before);
    if (!header_ok) {
        /* A crash while creating the newest segment can leave its header torn (it is written
         * and synced before any record): torn only if no record follows it. */
        if (last && !valid_record_after(bytes, size, 0)) {
            result->truncated_bytes = size;
            result->end_offset = 0;
        } else {
            code = corrupt(result, path, 0, "bad segment header");
        }
    } else if (first) {
        result->tip.last_seq = before.last_seq;
        memcpy(result->tip.hash, before.hash, RECORD_HASH_BYTES);
    } else if (before.last_seq != result->tip.last_seq ||
               memcmp(before.hash, result->tip.hash, RECORD_HASH_BYTES) != 0) {
        code = corrupt(result, path, 0, "segment does not continue the previous one");
    }
    uint64_t end = WAL_SEGMENT_HEADER_BYTES;
    if (code == COFFER_OK && header_ok)
        code = scan_records(state, path, segment, bytes, size, last, &end);
    if (size)
        munmap((void *)bytes, size);
    if (code == COFFER_OK && last) {
        result->end_offset = header_ok ? end : 0;
        if (result->truncated_bytes && !state->options->read_only) {
            if (ftruncate(fd, (off_t)result->end_offset) != 0 || fsync(fd) != 0)
                code = corrupt(result, path, result->end_offset, strerror(errno));
        }
    }
    close(fd);
    return code;
}

/* The first segment to read: the newest whose start is at or before the snapshot. */
static size_t first_segment(const char *dir, const uint32_t *numbers, size_t count,
                            const wal_scan_options *options)
{
    if (options->from_start || options->skip_through == 0)
        return 0;
    for (size_t i = count; i-- > 0;) {
        char path[4096];
        wal_segment_path(path, sizeof path, dir, numbers[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        uint8_t header[WAL_SEGMENT_HEADER_BYTES];
        wal_tip before;
        bool ok = pread(fd, header, sizeof header, 0) == (ssize_t)sizeof header &&
                  header_decode(header, sizeof header, numbers[i], &before);
        close(fd);
        if (ok && before.last_seq <= options->skip_through)
            return i;
    }
    return 0;
}

int wal_scan(const char *dir, const wal_scan_options *options, wal_record_fn visit, void *context,
             wal_scan_result *result)
{
    memset(result, 0, sizeof *result);
    int error;
    size_t count;
    uint32_t *numbers = list_segments(dir, &count, &error);
    if (error) {
        snprintf(result->error, sizeof result->error, "%.700s: %.200s", dir, strerror(error));
        return COFFER_STORAGE_FAILED;
    }
    scan_state state = {options, visit, context, result, 0, 0};
    size_t start = first_segment(dir, numbers, count, options);
    for (size_t i = start; i < count; i++) {
        char path[4096];
        struct stat info;
        wal_segment_path(path, sizeof path, dir, numbers[i]);
        if (stat(path, &info) == 0)
            state.total_bytes += (uint64_t)info.st_size;
    }
    int code = COFFER_OK;
    for (size_t i = start; code == COFFER_OK && i < count; i++) {
        if (i > 0 && numbers[i] != numbers[i - 1] + 1) {
            snprintf(result->error, sizeof result->error, "%.700s: segment %u is missing", dir,
                     numbers[i - 1] + 1);
            code = COFFER_STORAGE_FAILED;
            break;
        }
        code = scan_segment(&state, dir, numbers[i], i + 1 == count, i == start);
        result->segments++;
    }
    if (code == COFFER_OK && count > 0)
        result->last_segment = numbers[count - 1];
    free(numbers);
    return code;
}

/* ---- appending ----------------------------------------------------------------------------- */

/* Makes the failure sticky, and tries to cut the segment back to its last durable record so
 * that what was refused cannot come back at the next open (best effort: the disk just failed,
 * so the cut is made with the real calls and its success is reported in cut_back). */
static int fail(wal *w, int error)
{
    w->failed = true;
    w->error = error;
    if (w->fd >= 0)
        w->cut_back = ftruncate(w->fd, (off_t)w->durable_offset) == 0 && fsync(w->fd) == 0;
    return COFFER_STORAGE_FAILED;
}

/* Creates segment `number` beginning after `before`, and makes its name durable. */
static int segment_create(wal *w, uint32_t number, const wal_tip *before)
{
    char path[4096];
    wal_segment_path(path, sizeof path, w->dir, number);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(w, errno);
    uint8_t header[WAL_SEGMENT_HEADER_BYTES];
    header_encode(header, number, before);
    if (w->io.write_at(fd, header, sizeof header, 0, w->io.context) != 0 ||
        w->io.sync(fd, w->io.context) != 0 || wal_sync_directory(w->dir_fd) != 0) {
        int error = errno;
        close(fd);
        return fail(w, error);
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    w->segment = number;
    w->offset = w->durable_offset = WAL_SEGMENT_HEADER_BYTES;
    return COFFER_OK;
}

int wal_start(wal *w, const char *dir, const wal_scan_result *scan, const wal_io *io,
              uint64_t segment_bytes_max)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->io = io ? *io : wal_io_default;
    w->segment_bytes_max = segment_bytes_max ? segment_bytes_max : WAL_SEGMENT_BYTES_DEFAULT;
    w->dir = strdup(dir);
    w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!w->dir || w->dir_fd < 0) {
        wal_stop(w);
        return COFFER_STORAGE_FAILED;
    }
    if (scan->last_segment == 0 || scan->end_offset < WAL_SEGMENT_HEADER_BYTES) {
        /* No segment yet, or the newest one's header was torn: (re)create it. */
        uint32_t number = scan->last_segment ? scan->last_segment : 1;
        if (scan->last_segment) {
            char path[4096];
            wal_segment_path(path, sizeof path, dir, number);
            unlink(path);
        }
        int code = segment_create(w, number, &scan->tip);
        if (code != COFFER_OK)
            wal_stop(w);
        return code;
    }
    char path[4096];
    wal_segment_path(path, sizeof path, dir, scan->last_segment);
    w->fd = open(path, O_RDWR | O_CLOEXEC);
    if (w->fd < 0) {
        wal_stop(w);
        return COFFER_STORAGE_FAILED;
    }
    /* A torn tail the scan reported (read-only) is cut before anything is appended after it. */
    struct stat status;
    bool cut = fstat(w->fd, &status) == 0 && (uint64_t)status.st_size > scan->end_offset;
    if (cut && (ftruncate(w->fd, (off_t)scan->end_offset) != 0 || fsync(w->fd) != 0)) {
        wal_stop(w);
        return COFFER_STORAGE_FAILED;
    }
    w->segment = scan->last_segment;
    w->offset = w->durable_offset = scan->end_offset;
    return COFFER_OK;
}

void wal_stop(wal *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    free(w->dir);
    w->fd = w->dir_fd = -1;
    w->dir = 0;
}

int wal_append(wal *w, const uint8_t *bytes, size_t length, const wal_tip *tip_before)
{
    if (w->failed)
        return COFFER_STORAGE_FAILED;
    if (w->offset > WAL_SEGMENT_HEADER_BYTES && w->offset + length > w->segment_bytes_max) {
        /* The full segment must be durable before the next one starts. */
        if (w->io.sync(w->fd, w->io.context) != 0)
            return fail(w, errno);
        int code = segment_create(w, w->segment + 1, tip_before);
        if (code != COFFER_OK)
            return code;
    }
    if (w->io.write_at(w->fd, bytes, length, w->offset, w->io.context) != 0)
        return fail(w, errno);
    w->offset += length;
    return COFFER_OK;
}

int wal_sync(wal *w)
{
    if (w->failed)
        return COFFER_STORAGE_FAILED;
    if (w->io.sync(w->fd, w->io.context) != 0)
        return fail(w, errno);
    w->durable_offset = w->offset;
    return COFFER_OK;
}
