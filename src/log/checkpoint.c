/*
 * checkpoint.c — the acknowledged position and the list of segments beside the log (format in
 * checkpoint.h), and the checks recovery and coffer verify run against them.
 */
#include "log/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/check.h"

#define SLOT_BYTES 128
#define SLOT_MAGIC 0x4b434643u /* "CFCK" */
#define SLOT_VERSION 1
#define SLOT_CHECKED_BYTES 64 /* the check covers [0, 64); it is stored at 64 */
#define MANIFEST_LINE_MAX 160

/* Slot layout: 0 u32 magic, 4 u32 version, 8 u64 counter, 16 u64 seq, 24 u64 timestamp,
 * 32 u8[32] hash, 64 u8[8] the first bytes of BLAKE2b-256 of [0, 64). */
static void slot_encode(uint8_t slot[SLOT_BYTES], uint64_t counter, const wal_tip *tip)
{
    uint32_t magic = SLOT_MAGIC, version = SLOT_VERSION;
    memset(slot, 0, SLOT_BYTES);
    memcpy(slot, &magic, 4);
    memcpy(slot + 4, &version, 4);
    memcpy(slot + 8, &counter, 8);
    memcpy(slot + 16, &tip->last_seq, 8);
    memcpy(slot + 24, &tip->last_timestamp, 8);
    memcpy(slot + 32, tip->hash, RECORD_HASH_BYTES);
    uint8_t check[RECORD_HASH_BYTES];
    crypto_generichash(check, sizeof check, slot, SLOT_CHECKED_BYTES, 0, 0);
    memcpy(slot + SLOT_CHECKED_BYTES, check, 8);
}

static bool slot_decode(const uint8_t slot[SLOT_BYTES], uint64_t *counter, wal_tip *tip)
{
    uint8_t check[RECORD_HASH_BYTES];
    crypto_generichash(check, sizeof check, slot, SLOT_CHECKED_BYTES, 0, 0);
    uint32_t magic, version;
    memcpy(&magic, slot, 4);
    memcpy(&version, slot + 4, 4);
    if (magic != SLOT_MAGIC || version != SLOT_VERSION ||
        memcmp(check, slot + SLOT_CHECKED_BYTES, 8) != 0)
        return false;
    memcpy(counter, slot + 8, 8);
    memcpy(&tip->last_seq, slot + 16, 8);
    memcpy(&tip->last_timestamp, slot + 24, 8);
    memcpy(tip->hash, slot + 32, RECORD_HASH_BYTES);
    return true;
}

static void checkpoint_path(char *out, size_t size, const char *dir)
{
    snprintf(out, size, "%s/checkpoint", dir);
}

/* The newest intact slot of an open file: false when neither is. */
static bool slots_read(int fd, uint64_t *counter, wal_tip *tip)
{
    uint8_t slots[2][SLOT_BYTES];
    ssize_t got = pread(fd, slots, sizeof slots, 0);
    bool found = false;
    for (int i = 0; got >= (ssize_t)(SLOT_BYTES * (i + 1)) && i < 2; i++) {
        uint64_t slot_counter;
        wal_tip slot_tip;
        if (slot_decode(slots[i], &slot_counter, &slot_tip) &&
            (!found || slot_counter > *counter)) {
            *counter = slot_counter;
            *tip = slot_tip;
            found = true;
        }
    }
    return found;
}

int checkpoint_read(const char *dir, wal_tip *tip, bool *found, char *error, size_t error_size)
{
    char path[4096];
    checkpoint_path(path, sizeof path, dir);
    *found = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return COFFER_OK;
        snprintf(error, error_size, "%.700s: %s", path, strerror(errno));
        return COFFER_STORAGE_FAILED;
    }
    uint64_t counter = 0;
    *found = slots_read(fd, &counter, tip);
    close(fd);
    if (!*found) {
        snprintf(error, error_size, "%.700s: damaged (no intact slot)", path);
        return COFFER_STORAGE_FAILED;
    }
    return COFFER_OK;
}

int checkpoint_write(checkpoint *c, const wal_tip *tip, bool sync)
{
    COFFER_ASSERT(c->fd >= 0);
    COFFER_ASSERT(tip->last_seq >= c->written.last_seq);
    uint8_t slot[SLOT_BYTES];
    c->counter++;
    slot_encode(slot, c->counter, tip);
    off_t offset = (off_t)(c->counter % 2) * SLOT_BYTES;
    if (pwrite(c->fd, slot, sizeof slot, offset) != (ssize_t)sizeof slot ||
        (sync && fdatasync(c->fd) != 0))
        return COFFER_STORAGE_FAILED;
    c->written = *tip;
    return COFFER_OK;
}

int checkpoint_open(checkpoint *c, const char *dir, const wal_tip *tip)
{
    char path[4096];
    checkpoint_path(path, sizeof path, dir);
    c->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    c->counter = 0;
    memset(&c->written, 0, sizeof c->written);
    if (c->fd < 0)
        return COFFER_STORAGE_FAILED;
    wal_tip old;
    (void)slots_read(c->fd, &c->counter, &old);
    /* Both slots get the new position, so an older one can never win again; the file is
     * synced once so its length and name are durable. */
    int code = checkpoint_write(c, tip, false);
    if (code == COFFER_OK)
        code = checkpoint_write(c, tip, true);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (code == COFFER_OK && (dir_fd < 0 || wal_sync_directory(dir_fd) != 0))
        code = COFFER_STORAGE_FAILED;
    if (dir_fd >= 0)
        close(dir_fd);
    if (code != COFFER_OK)
        checkpoint_close(c);
    return code;
}

void checkpoint_close(checkpoint *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* ---- the manifest -------------------------------------------------------------------------- */

static void manifest_path(char *out, size_t size, const char *dir, bool temp)
{
    snprintf(out, size, "%s/manifest%s", dir, temp ? ".tmp" : "");
}

static void hash_hex(const char *text, size_t length, char hex[2 * RECORD_HASH_BYTES + 1])
{
    uint8_t hash[RECORD_HASH_BYTES];
    crypto_generichash(hash, sizeof hash, (const uint8_t *)text, length, 0, 0);
    sodium_bin2hex(hex, 2 * RECORD_HASH_BYTES + 1, hash, sizeof hash);
}

/* The manifest's text for `segments` (malloc'ed), or NULL when out of memory. */
static char *manifest_text(const wal_segment_info *segments, size_t count)
{
    size_t capacity = (count + 3) * MANIFEST_LINE_MAX, used = 0;
    char *text = malloc(capacity);
    if (!text)
        return 0;
    used += (size_t)snprintf(text, capacity, "coffer-manifest 1\n");
    for (size_t i = 0; i < count; i++) {
        const wal_segment_info *segment = &segments[i];
        if (i + 1 < count)
            used += (size_t)snprintf(
                text + used, capacity - used, "log-%010u.cfl first %llu last %llu bytes %llu\n",
                segment->number, (unsigned long long)segment->seq_before + 1,
                (unsigned long long)segments[i + 1].seq_before, (unsigned long long)segment->bytes);
        else
            used +=
                (size_t)snprintf(text + used, capacity - used, "log-%010u.cfl first %llu open\n",
                                 segment->number, (unsigned long long)segment->seq_before + 1);
    }
    char hex[2 * RECORD_HASH_BYTES + 1];
    hash_hex(text, used, hex);
    snprintf(text + used, capacity - used, "blake2b %s\n", hex);
    return text;
}

int manifest_write(const char *dir, char *error, size_t error_size)
{
    wal_segment_info *segments;
    size_t count;
    char temp[4096], final[4096];
    manifest_path(temp, sizeof temp, dir, true);
    manifest_path(final, sizeof final, dir, false);
    if (wal_segments(dir, &segments, &count) != COFFER_OK) {
        snprintf(error, error_size, "%.700s: cannot list the log segments", dir);
        return COFFER_STORAGE_FAILED;
    }
    char *text = manifest_text(segments, count);
    free(segments);
    if (!text)
        return COFFER_OUT_OF_MEMORY;
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t length = strlen(text);
    bool ok = fd >= 0 && write(fd, text, length) == (ssize_t)length && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    free(text);
    ok = ok && rename(temp, final) == 0;
    int dir_fd = ok ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    ok = ok && dir_fd >= 0 && wal_sync_directory(dir_fd) == 0;
    if (dir_fd >= 0)
        close(dir_fd);
    if (!ok) {
        snprintf(error, error_size, "%.700s: cannot write: %s", final, strerror(errno));
        return COFFER_STORAGE_FAILED;
    }
    return COFFER_OK;
}

/* Appends one problem line to `problems`. */
static void problem_add(char *problems, size_t size, int *count, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static void problem_add(char *problems, size_t size, int *count, const char *format, ...)
{
    size_t used = strlen(problems);
    if (used + 2 < size) {
        va_list arguments;
        va_start(arguments, format);
        if (used)
            problems[used++] = '\n';
        vsnprintf(problems + used, size - used, format, arguments);
        va_end(arguments);
    }
    (*count)++;
}

/* Checks one manifest line against the file it names. */
static void manifest_check_line(const char *dir, const char *line, char *problems, size_t size,
                                int *count)
{
    char name[32];
    unsigned long long first, last, bytes;
    bool sealed =
        sscanf(line, "%31s first %llu last %llu bytes %llu", name, &first, &last, &bytes) == 4;
    if (!sealed && sscanf(line, "%31s first %llu open", name, &first) != 2) {
        problem_add(problems, size, count, "%.700s/manifest: unreadable line \"%.80s\"", dir, line);
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat status;
    if (stat(path, &status) != 0) {
        if (sealed)
            problem_add(problems, size, count,
                        "%.700s is missing (it held seqs %llu to %llu, %llu bytes)", path, first,
                        last, bytes);
        else
            problem_add(problems, size, count,
                        "%.700s is missing (the open segment, from seq %llu)", path, first);
    } else if (sealed && (uint64_t)status.st_size != bytes) {
        problem_add(problems, size, count,
                    "%.700s has %llu bytes, %llu when it was sealed (seqs %llu to %llu)%s", path,
                    (unsigned long long)status.st_size, bytes, first, last,
                    (uint64_t)status.st_size < bytes ? ": shortened" : "");
    }
}

int manifest_check(const char *dir, bool *found, char *problems, size_t problems_size)
{
    char path[4096];
    manifest_path(path, sizeof path, dir, false);
    problems[0] = 0;
    int count = 0;
    FILE *file = fopen(path, "r");
    *found = file != 0;
    if (!file)
        return 0;
    char line[MANIFEST_LINE_MAX * 2], hex[2 * RECORD_HASH_BYTES + 1], stored[80] = {0};
    crypto_generichash_state hash;
    crypto_generichash_init(&hash, 0, 0, RECORD_HASH_BYTES);
    bool first_line = true;
    while (fgets(line, sizeof line, file)) {
        if (sscanf(line, "blake2b %79s", stored) == 1)
            break;
        crypto_generichash_update(&hash, (const uint8_t *)line, strlen(line));
        if (first_line && strcmp(line, "coffer-manifest 1\n") != 0)
            problem_add(problems, problems_size, &count, "%.700s: not a manifest of version 1",
                        path);
        else if (!first_line)
            manifest_check_line(dir, line, problems, problems_size, &count);
        first_line = false;
    }
    fclose(file);
    uint8_t digest[RECORD_HASH_BYTES];
    crypto_generichash_final(&hash, digest, sizeof digest);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    if (strcmp(hex, stored) != 0)
        problem_add(problems, problems_size, &count, "%.700s: damaged (its hash does not match)",
                    path);
    return count;
}

/* ---- the checkpoint against the log -------------------------------------------------------- */

bool checkpoint_check(const char *dir, const wal_tip *checkpoint_tip, const wal_scan_result *scan,
                      uint64_t covered_through, const uint8_t *hash_at_checkpoint, char *problem,
                      size_t problem_size)
{
    char path[4096] = "no log segment";
    if (scan->last_segment)
        wal_segment_path(path, sizeof path, dir, scan->last_segment);
    unsigned long long wanted = checkpoint_tip->last_seq, reached = scan->tip.last_seq;
    if (reached < wanted) {
        snprintf(problem, problem_size,
                 "the log ends at seq %llu (%.700s, offset %llu%s) but seqs up to %llu were "
                 "acknowledged (%.700s/checkpoint): seqs %llu to %llu are missing",
                 reached, path, (unsigned long long)scan->end_offset,
                 scan->truncated_bytes ? ", followed by a damaged record" : "", wanted, dir,
                 reached + 1, wanted);
        return false;
    }
    if (wanted <= covered_through)
        return true; /* the snapshot the scan started from is past it */
    if (!hash_at_checkpoint) {
        snprintf(problem, problem_size,
                 "no record of the log ends at seq %llu, where %.700s/checkpoint says the "
                 "acknowledged log ended",
                 wanted, dir);
        return false;
    }
    if (memcmp(hash_at_checkpoint, checkpoint_tip->hash, RECORD_HASH_BYTES) != 0) {
        snprintf(problem, problem_size,
                 "the log's record ending at seq %llu differs from the one acknowledged "
                 "(%.700s/checkpoint holds another hash)",
                 wanted, dir);
        return false;
    }
    return true;
}

int log_files_check(const char *dir, const wal_scan_result *scan, char *problems,
                    size_t problems_size)
{
    size_t used = strlen(problems);
    char found_problems[8192];
    bool manifest_found, checkpoint_found;
    int count = manifest_check(dir, &manifest_found, found_problems, sizeof found_problems);
    wal_tip tip;
    char line[2048];
    if (checkpoint_read(dir, &tip, &checkpoint_found, line, sizeof line) != COFFER_OK)
        problem_add(found_problems, sizeof found_problems, &count, "%s", line);
    else if (checkpoint_found && !manifest_found && tip.last_seq != scan->tip.last_seq)
        problem_add(found_problems, sizeof found_problems, &count, "%.700s/manifest is missing",
                    dir);
    else if (!checkpoint_found && manifest_found)
        problem_add(found_problems, sizeof found_problems, &count, "%.700s/checkpoint is missing",
                    dir);
    /* The chain through the checkpoint is the scan's to check; here only that it reaches it. */
    if (checkpoint_found && !checkpoint_check(dir, &tip, scan, tip.last_seq, 0, line, sizeof line))
        problem_add(found_problems, sizeof found_problems, &count, "%s", line);
    if (count > 0)
        snprintf(problems + used, problems_size - used, "%s%s", used ? "\n" : "", found_problems);
    return count;
}
