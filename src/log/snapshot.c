/*
 * snapshot.c — writing and loading store images (format in snapshot.h). The writer runs in a
 * forked child, so it allocates nothing and takes no lock: it streams the tables straight from
 * memory through the hash into the file.
 */
#include "log/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coffer.h"

#define SNAPSHOT_VERSION 1
#define SNAPSHOT_ALIGN 4096
#define SNAPSHOT_HEADER_BYTES 4096
#define SNAPSHOT_TABLES 6

static const char snapshot_magic[8] = {'C', 'O', 'F', 'F', 'E', 'R', 'S', 'N'};

/* The header as it is on disk (little-endian, padded to SNAPSHOT_HEADER_BYTES). */
typedef struct snapshot_header {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;
    uint64_t tip_seq;
    uint64_t tip_timestamp;
    uint8_t tip_hash[RECORD_HASH_BYTES];
    uint64_t last_seq;
    uint64_t last_timestamp;
    uint64_t counts[SNAPSHOT_TABLES]; /* records (arena: bytes) per table */
    uint64_t holds_pending;
    uint32_t record_sizes[SNAPSHOT_TABLES]; /* layout check: the same build reads it back */
} snapshot_header;

typedef struct table_view {
    const void *bytes;
    uint64_t length;
} table_view;

static void record_sizes(uint32_t sizes[SNAPSHOT_TABLES])
{
    sizes[0] = sizeof(store_account);
    sizes[1] = sizeof(store_transfer);
    sizes[2] = sizeof(store_history);
    sizes[3] = sizeof(store_expiry);
    sizes[4] = sizeof(store_hold_ref);
    sizes[5] = 1;
}

static void table_views(const store *s, table_view views[SNAPSHOT_TABLES])
{
    views[0] = (table_view){s->accounts, s->accounts_count * sizeof *s->accounts};
    views[1] = (table_view){s->transfers, s->transfers_count * sizeof *s->transfers};
    views[2] = (table_view){s->history, s->history_count * sizeof *s->history};
    views[3] = (table_view){s->expiries, s->expiries_count * sizeof *s->expiries};
    views[4] = (table_view){s->holds, s->holds_count * sizeof *s->holds};
    views[5] = (table_view){s->arena, s->arena_used};
}

static uint64_t aligned(uint64_t value)
{
    return (value + SNAPSHOT_ALIGN - 1) / SNAPSHOT_ALIGN * SNAPSHOT_ALIGN;
}

static void snapshot_path(char *out, size_t size, const char *dir, uint64_t seq, bool temp)
{
    snprintf(out, size, "%s/snapshot-%020llu.cfs%s", dir, (unsigned long long)seq,
             temp ? ".tmp" : "");
}

/* ---- writing ------------------------------------------------------------------------------- */

static bool write_all(int fd, const void *bytes, uint64_t length)
{
    const char *at = bytes;
    while (length > 0) {
        size_t step = length > (1u << 30) ? (1u << 30) : (size_t)length;
        ssize_t written = write(fd, at, step);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        at += written;
        length -= (uint64_t)written;
    }
    return true;
}

/* Writes and hashes `length` bytes, then zero padding up to the next boundary. */
static bool write_hashed(int fd, crypto_generichash_state *hash, const void *bytes, uint64_t length)
{
    static const uint8_t zeros[SNAPSHOT_ALIGN];
    uint64_t padding = aligned(length) - length;
    if (length &&
        (crypto_generichash_update(hash, bytes, length) != 0 || !write_all(fd, bytes, length)))
        return false;
    return crypto_generichash_update(hash, zeros, padding) == 0 && write_all(fd, zeros, padding);
}

static int write_failed(char *error, size_t error_size, const char *path, const char *what)
{
    snprintf(error, error_size, "snapshot %.700s: %s: %s", path, what, strerror(errno));
    return COFFER_STORAGE_FAILED;
}

int snapshot_write(const store *s, const snapshot_meta *meta, const char *dir, char *error,
                   size_t error_size)
{
    char temp[4096], final[4096];
    snapshot_path(temp, sizeof temp, dir, meta->tip.last_seq, true);
    snapshot_path(final, sizeof final, dir, meta->tip.last_seq, false);
    static uint8_t header_bytes[SNAPSHOT_HEADER_BYTES]; /* static: no heap, no big stack */
    memset(header_bytes, 0, sizeof header_bytes);
    snapshot_header header = {0};
    memcpy(header.magic, snapshot_magic, 8);
    header.version = SNAPSHOT_VERSION;
    header.header_bytes = SNAPSHOT_HEADER_BYTES;
    header.tip_seq = meta->tip.last_seq;
    header.tip_timestamp = meta->tip.last_timestamp;
    memcpy(header.tip_hash, meta->tip.hash, RECORD_HASH_BYTES);
    header.last_seq = meta->last_seq;
    header.last_timestamp = meta->last_timestamp;
    table_view views[SNAPSHOT_TABLES];
    table_views(s, views);
    store_counts counts = store_counts_get(s);
    uint64_t count_values[SNAPSHOT_TABLES] = {counts.accounts, counts.transfers, counts.history,
                                              counts.expiries, counts.holds,     counts.arena_used};
    memcpy(header.counts, count_values, sizeof count_values);
    header.holds_pending = counts.holds_pending;
    record_sizes(header.record_sizes);
    memcpy(header_bytes, &header, sizeof header);

    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return write_failed(error, error_size, temp, "create");
    crypto_generichash_state hash;
    crypto_generichash_init(&hash, 0, 0, RECORD_HASH_BYTES);
    bool ok = write_hashed(fd, &hash, header_bytes, sizeof header_bytes);
    for (int i = 0; ok && i < SNAPSHOT_TABLES; i++)
        ok = write_hashed(fd, &hash, views[i].bytes, views[i].length);
    uint8_t digest[RECORD_HASH_BYTES];
    ok = ok && crypto_generichash_final(&hash, digest, sizeof digest) == 0 &&
         write_all(fd, digest, sizeof digest) && fsync(fd) == 0;
    if (close(fd) != 0)
        ok = false;
    if (!ok) {
        int code = write_failed(error, error_size, temp, "write");
        unlink(temp);
        return code;
    }
    if (rename(temp, final) != 0)
        return write_failed(error, error_size, final, "rename");
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0 || fsync(dir_fd) != 0) {
        if (dir_fd >= 0)
            close(dir_fd);
        return write_failed(error, error_size, dir, "sync directory");
    }
    close(dir_fd);
    return COFFER_OK;
}

/* ---- loading ------------------------------------------------------------------------------- */

static bool read_all(int fd, void *bytes, uint64_t length)
{
    char *at = bytes;
    while (length > 0) {
        size_t step = length > (1u << 30) ? (1u << 30) : (size_t)length;
        ssize_t got = read(fd, at, step);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        at += got;
        length -= (uint64_t)got;
    }
    return true;
}

/* Reads `length` bytes into place, hashing them and the padding after them. */
static bool read_hashed(int fd, crypto_generichash_state *hash, void *bytes, uint64_t length)
{
    static uint8_t padding[SNAPSHOT_ALIGN];
    uint64_t pad = aligned(length) - length;
    if (length &&
        (!read_all(fd, bytes, length) || crypto_generichash_update(hash, bytes, length) != 0))
        return false;
    return read_all(fd, padding, pad) && crypto_generichash_update(hash, padding, pad) == 0;
}

static int load_failed(char *error, size_t error_size, const char *path, const char *what)
{
    snprintf(error, error_size, "snapshot %.700s: %s", path, what);
    return COFFER_STORAGE_FAILED;
}

static bool header_valid(const snapshot_header *header, uint64_t file_size)
{
    uint32_t sizes[SNAPSHOT_TABLES];
    record_sizes(sizes);
    if (memcmp(header->magic, snapshot_magic, 8) != 0 || header->version != SNAPSHOT_VERSION ||
        header->header_bytes != SNAPSHOT_HEADER_BYTES ||
        memcmp(header->record_sizes, sizes, sizeof sizes) != 0)
        return false;
    uint64_t expected = SNAPSHOT_HEADER_BYTES + RECORD_HASH_BYTES;
    for (int i = 0; i < SNAPSHOT_TABLES; i++) {
        if (header->counts[i] > (1ull << 40))
            return false;
        expected += aligned(header->counts[i] * sizes[i]);
    }
    return expected == file_size;
}

int snapshot_load(store *s, const char *path, snapshot_meta *meta, char *error, size_t error_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return load_failed(error, error_size, path, strerror(errno));
    static uint8_t header_bytes[SNAPSHOT_HEADER_BYTES];
    snapshot_header header;
    struct stat info;
    int code = COFFER_OK;
    if (fstat(fd, &info) != 0 || !read_all(fd, header_bytes, sizeof header_bytes)) {
        code = load_failed(error, error_size, path, "unreadable or too short");
    } else {
        memcpy(&header, header_bytes, sizeof header);
        if (!header_valid(&header, (uint64_t)info.st_size))
            code = load_failed(error, error_size, path, "bad header (or a different format)");
    }
    store_counts counts = {0};
    if (code == COFFER_OK) {
        counts = (store_counts){header.counts[0],    header.counts[1], header.counts[2],
                                header.counts[3],    header.counts[4], header.counts[5],
                                header.holds_pending};
        code = store_restore_begin(s, &counts);
        if (code != COFFER_OK)
            snprintf(error, error_size, "snapshot %.700s: larger than the configured limits", path);
    }
    if (code == COFFER_OK) {
        crypto_generichash_state hash;
        crypto_generichash_init(&hash, 0, 0, RECORD_HASH_BYTES);
        crypto_generichash_update(&hash, header_bytes, sizeof header_bytes);
        table_view views[SNAPSHOT_TABLES];
        table_views(s, views);
        bool ok = true;
        for (int i = 0; ok && i < SNAPSHOT_TABLES; i++)
            ok = read_hashed(fd, &hash, (void *)views[i].bytes, views[i].length);
        uint8_t digest[RECORD_HASH_BYTES], stored[RECORD_HASH_BYTES];
        ok = ok && crypto_generichash_final(&hash, digest, sizeof digest) == 0 &&
             read_all(fd, stored, sizeof stored) &&
             sodium_memcmp(digest, stored, sizeof digest) == 0;
        if (!ok)
            code = load_failed(error, error_size, path, "hash mismatch (damaged)");
    }
    close(fd);
    if (code == COFFER_OK && !store_check_references(s))
        code = load_failed(error, error_size, path, "a record refers outside its tables");
    if (code == COFFER_OK)
        code = store_restore_finish(s);
    if (code == COFFER_OK) {
        meta->tip.last_seq = header.tip_seq;
        meta->tip.last_timestamp = header.tip_timestamp;
        memcpy(meta->tip.hash, header.tip_hash, RECORD_HASH_BYTES);
        meta->last_seq = header.last_seq;
        meta->last_timestamp = header.last_timestamp;
    }
    return code;
}

/* ---- listing ------------------------------------------------------------------------------- */

static int compare_seq_descending(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* Snapshot seqs in `dir`, newest first. Temp files are removed when `prune_temp`. */
static uint64_t *list_snapshots(const char *dir, size_t *count_out, bool prune_temp)
{
    *count_out = 0;
    DIR *listing = opendir(dir);
    if (!listing)
        return 0;
    uint64_t *seqs = 0;
    size_t count = 0, capacity = 0;
    struct dirent *item;
    while ((item = readdir(listing))) {
        unsigned long long seq;
        char tail[8] = {0};
        if (sscanf(item->d_name, "snapshot-%20llu.cf%7s", &seq, tail) != 2)
            continue;
        if (!strcmp(tail, "s.tmp")) {
            if (prune_temp) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", dir, item->d_name);
                unlink(path);
            }
            continue;
        }
        if (strcmp(tail, "s") != 0)
            continue;
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 8;
            uint64_t *grown = realloc(seqs, capacity * sizeof *grown);
            if (!grown)
                break;
            seqs = grown;
        }
        seqs[count++] = seq;
    }
    closedir(listing);
    if (count)
        qsort(seqs, count, sizeof *seqs, compare_seq_descending);
    *count_out = count;
    return seqs;
}

int snapshot_load_latest(store *s, const char *dir, snapshot_meta *meta, bool *found, char *skipped,
                         size_t skipped_size)
{
    *found = false;
    skipped[0] = 0;
    size_t count;
    uint64_t *seqs = list_snapshots(dir, &count, false);
    int code = COFFER_OK;
    for (size_t i = 0; i < count; i++) {
        char path[4096], error[1024];
        snapshot_path(path, sizeof path, dir, seqs[i], false);
        code = snapshot_load(s, path, meta, error, sizeof error);
        if (code == COFFER_OK) {
            *found = true;
            break;
        }
        if (code == COFFER_CAPACITY_EXCEEDED) {
            snprintf(skipped, skipped_size, "%s", error);
            break;
        }
        /* Damaged: note it, reset the store and try the next older one (or the log alone). */
        size_t used = strlen(skipped);
        snprintf(skipped + used, skipped_size - used, "%s%s", used ? "; " : "", error);
        store_limits limits = s->limits;
        store_free(s);
        code = store_init(s, &limits);
        if (code != COFFER_OK)
            break;
    }
    free(seqs);
    /* Every snapshot damaged: the log alone still holds the whole history. */
    if (!*found && code == COFFER_STORAGE_FAILED)
        code = COFFER_OK;
    return code;
}

void snapshot_prune(const char *dir, unsigned keep)
{
    size_t count;
    uint64_t *seqs = list_snapshots(dir, &count, true);
    for (size_t i = keep; i < count; i++) {
        char path[4096];
        snapshot_path(path, sizeof path, dir, seqs[i], false);
        unlink(path);
    }
    free(seqs);
}
