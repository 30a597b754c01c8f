/*
 * snapshot.c — writing and loading store images (format in snapshot.h). The writer runs in a
 * forked child, so it allocates nothing and takes no lock: it encodes the tables field by field
 * through a static buffer, the hash and into the file.
 */
#include "log/snapshot.h"

#include "base/check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coffer.h"

#define SNAPSHOT_VERSION 4
#define SNAPSHOT_VERSION_SUBMITTERS 3 /* the first to keep who submitted each transfer */
#define SNAPSHOT_VERSION_TRIMMED 4    /* the first to keep the store's trimmed_seq */
#define SNAPSHOT_VERSION_RAW 1        /* the tables as the structs lay them out in memory */
#define SNAPSHOT_ALIGN 4096
#define SNAPSHOT_HEADER_BYTES 4096
#define SNAPSHOT_TABLES 7
#define SNAPSHOT_TABLES_FIRST 6 /* versions 1 and 2 had no submitters table */
#define SNAPSHOT_ARENA 5        /* the table of raw bytes */
#define SNAPSHOT_BUFFER_BYTES (1u << 20)

/* Field values are copied as little-endian integers with memcpy. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "snapshots assume a little-endian host");
/* The arena holds store_aux records as they are in memory, so their layout is the format. */
_Static_assert(sizeof(store_aux) == 32 && offsetof(store_aux, expect_to_version) == 8 &&
                   offsetof(store_aux, metadata_len) == 16 && offsetof(store_aux, from_len) == 20 &&
                   offsetof(store_aux, to_len) == 21 && offsetof(store_aux, hold_len) == 22 &&
                   offsetof(store_aux, reserved_2) == 24,
               "store_aux is stored in the arena of snapshots: change SNAPSHOT_VERSION with it");

static const char snapshot_magic[8] = {'C', 'O', 'F', 'F', 'E', 'R', 'S', 'N'};

/* Header offsets (the same in every version; version 1 wrote a struct with this layout). */
enum {
    HEADER_MAGIC = 0,
    HEADER_VERSION = 8,
    HEADER_BYTES = 12,
    HEADER_TIP_SEQ = 16,
    HEADER_TIP_TIMESTAMP = 24,
    HEADER_TIP_HASH = 32,
    HEADER_LAST_SEQ = 64,
    HEADER_LAST_TIMESTAMP = 72,
    HEADER_COUNTS = 80,             /* u64 per table: records (arena: bytes) */
    HEADER_HOLDS_PENDING = 128,     /* u64 */
    HEADER_RECORD_SIZES = 136,      /* u32 per table: bytes per record on disk */
    HEADER_LAYOUT = 160,            /* from version 2: u64, a fingerprint of the field lists */
    HEADER_COUNTS_MORE = 168,       /* from version 3: u64 per table past the first six */
    HEADER_RECORD_SIZES_MORE = 232, /* from version 3: u32 per table past the first six */
    HEADER_TRIMMED_SEQ = 240,       /* version 4: u64, the store's trimmed_seq */
};

static uint32_t header_counts_at(int table)
{
    return table < SNAPSHOT_TABLES_FIRST
               ? HEADER_COUNTS + 8 * (uint32_t)table
               : HEADER_COUNTS_MORE + 8 * (uint32_t)(table - SNAPSHOT_TABLES_FIRST);
}

static uint32_t header_record_size_at(int table)
{
    return table < SNAPSHOT_TABLES_FIRST
               ? HEADER_RECORD_SIZES + 4 * (uint32_t)table
               : HEADER_RECORD_SIZES_MORE + 4 * (uint32_t)(table - SNAPSHOT_TABLES_FIRST);
}

/*
 * One field of a record. On disk (versions 2 to 4) a record is its fields in list order, each
 * `width` bytes, little-endian, no padding; version 1 had them at `raw_offset` of the struct
 * as it was then. In memory the member is at `offset` with `size` bytes, so a reordered
 * member is still found and a resized one is converted (or refused when a value does not fit).
 * A field added by a later version comes last in its list and names that version in `since`
 * (0: in every version); files of earlier versions do not hold it and it reads as zero.
 */
typedef struct snapshot_field {
    const char *name;
    uint16_t offset, size;
    uint16_t raw_offset;
    uint8_t width;
    bool is_signed, is_bytes;
    uint8_t since;
} snapshot_field;

static bool field_in(const snapshot_field *field, uint32_t version)
{
    return field->since <= version;
}

#define FIELD_OF(type, member, width, raw_offset, is_signed, is_bytes)                             \
    {                                                                                              \
#member, offsetof(type, member), sizeof(((type *)0)->member), raw_offset, width,           \
            is_signed, is_bytes                                                                    \
    }
#define UNSIGNED(type, member, width, raw_offset) FIELD_OF(type, member, width, raw_offset, 0, 0)
#define SIGNED(type, member, width, raw_offset) FIELD_OF(type, member, width, raw_offset, 1, 0)
#define BYTES(type, member, width, raw_offset) FIELD_OF(type, member, width, raw_offset, 0, 1)
#define UNSIGNED_SINCE(type, member, width, since)                                                 \
    {                                                                                              \
#member, offsetof(type, member), sizeof(((type *)0)->member), 0, width, 0, 0, since        \
    }

static const snapshot_field account_fields[] = {
    BYTES(store_account, id, 64, 0),
    SIGNED(store_account, debits_posted, 8, 64),
    SIGNED(store_account, credits_posted, 8, 72),
    SIGNED(store_account, debits_held, 8, 80),
    SIGNED(store_account, credits_held, 8, 88),
    BYTES(store_account, currency, 16, 96),
    UNSIGNED(store_account, version, 8, 112),
    UNSIGNED(store_account, history_last, 4, 120),
    UNSIGNED(store_account, id_len, 1, 124),
    UNSIGNED(store_account, flags, 1, 125),
    SIGNED(store_account, min_balance, 8, 128),
    SIGNED(store_account, max_balance, 8, 136),
    UNSIGNED(store_account, history_count, 4, 144),
    UNSIGNED(store_account, history_jump, 4, 148),
    UNSIGNED(store_account, history_jump_ordinal, 4, 152),
    UNSIGNED(store_account, holds_pending, 4, 156),
    UNSIGNED(store_account, created_seq, 8, 160),
    UNSIGNED(store_account, created_at, 8, 168),
    UNSIGNED(store_account, metadata_offset, 8, 176),
    UNSIGNED(store_account, metadata_len, 4, 184),
};

static const snapshot_field transfer_fields[] = {
    UNSIGNED(store_transfer, seq, 8, 0),
    UNSIGNED(store_transfer, timestamp, 8, 8),
    SIGNED(store_transfer, amount, 8, 16),
    SIGNED(store_transfer, amount_requested, 8, 24),
    UNSIGNED(store_transfer, expires_at, 8, 32),
    UNSIGNED(store_transfer, id_offset, 8, 40),
    UNSIGNED(store_transfer, aux_offset, 8, 48),
    UNSIGNED(store_transfer, from, 4, 56),
    UNSIGNED(store_transfer, to, 4, 60),
    UNSIGNED(store_transfer, link, 4, 64),
    UNSIGNED(store_transfer, code, 2, 68),
    UNSIGNED(store_transfer, id_len, 1, 70),
    UNSIGNED(store_transfer, op, 1, 71),
    UNSIGNED(store_transfer, state, 1, 72),
    UNSIGNED(store_transfer, flags, 1, 73),
    UNSIGNED(store_transfer, field, 1, 74),
    UNSIGNED_SINCE(store_transfer, submitter, 2, SNAPSHOT_VERSION_SUBMITTERS),
};

static const snapshot_field history_fields[] = {
    UNSIGNED(store_history, seq, 8, 0),           SIGNED(store_history, balance, 8, 8),
    SIGNED(store_history, available, 8, 16),      UNSIGNED(store_history, transfer, 4, 24),
    UNSIGNED(store_history, previous, 4, 28),     UNSIGNED(store_history, jump, 4, 32),
    UNSIGNED(store_history, jump_ordinal, 4, 36), UNSIGNED(store_history, ordinal, 4, 40),
    UNSIGNED(store_history, kind, 1, 44),         UNSIGNED(store_history, debit, 1, 45),
};

static const snapshot_field expiry_fields[] = {
    UNSIGNED(store_expiry, seq, 8, 0),
    UNSIGNED(store_expiry, timestamp, 8, 8),
    UNSIGNED(store_expiry, hold, 4, 16),
};

static const snapshot_field hold_fields[] = {
    UNSIGNED(store_hold_ref, expires_at, 8, 0),
    UNSIGNED(store_hold_ref, transfer, 4, 8),
};

static const snapshot_field submitter_fields[] = {
    BYTES(store_submitter, name, COFFER_SUBMITTER_MAX, 0),
    UNSIGNED(store_submitter, length, 1, 0),
};

typedef struct snapshot_table {
    const snapshot_field *fields; /* NULL: the arena, raw bytes */
    size_t field_count;
    uint32_t memory_size; /* bytes per record in memory */
    uint32_t raw_size;    /* bytes per record in version 1 */
    uint32_t since;       /* the first version with this table (0: every version) */
} snapshot_table;

#define TABLE(fields, type, raw_size, since)                                                       \
    {                                                                                              \
        fields, sizeof fields / sizeof fields[0], sizeof(type), raw_size, since                    \
    }

static const snapshot_table tables[SNAPSHOT_TABLES] = {
    TABLE(account_fields, store_account, 192, 0),
    TABLE(transfer_fields, store_transfer, 80, 0),
    TABLE(history_fields, store_history, 48, 0),
    TABLE(expiry_fields, store_expiry, 24, 0),
    TABLE(hold_fields, store_hold_ref, 16, 0),
    {0, 0, 1, 1, 0},
    TABLE(submitter_fields, store_submitter, 0, SNAPSHOT_VERSION_SUBMITTERS),
};

static bool table_in(const snapshot_table *table, uint32_t version)
{
    return table->since <= version;
}

bool snapshot_records_differ(int table, const void *left, const void *right)
{
    COFFER_ASSERT(table >= SNAPSHOT_ACCOUNTS && table < SNAPSHOT_TABLES && tables[table].fields);
    const uint8_t *a = left, *b = right;
    for (size_t i = 0; i < tables[table].field_count; i++) {
        const snapshot_field *field = &tables[table].fields[i];
        if (memcmp(a + field->offset, b + field->offset, field->size) != 0)
            return true;
    }
    return false;
}

/* Bytes per record on disk in `version`. */
static uint32_t record_size(const snapshot_table *table, uint32_t version)
{
    if (version == SNAPSHOT_VERSION_RAW || !table->fields)
        return table->raw_size;
    uint32_t size = 0;
    for (size_t i = 0; i < table->field_count; i++)
        size += field_in(&table->fields[i], version) ? table->fields[i].width : 0;
    return size;
}

/* A fingerprint of the field lists of `version` (names, widths, kinds): a file written by a
 * build whose lists differ is refused instead of misread, which forces a new version with the
 * change. */
static uint64_t layout_fingerprint(uint32_t version)
{
    crypto_generichash_state hash;
    crypto_generichash_init(&hash, 0, 0, sizeof(uint64_t));
    for (int t = 0; t < SNAPSHOT_TABLES; t++)
        for (size_t i = 0; table_in(&tables[t], version) && i < tables[t].field_count; i++) {
            const snapshot_field *field = &tables[t].fields[i];
            if (!field_in(field, version))
                continue;
            uint8_t kind[3] = {field->width, field->is_signed, field->is_bytes};
            crypto_generichash_update(&hash, (const uint8_t *)field->name, strlen(field->name) + 1);
            crypto_generichash_update(&hash, kind, sizeof kind);
        }
    uint64_t fingerprint;
    crypto_generichash_final(&hash, (uint8_t *)&fingerprint, sizeof fingerprint);
    return fingerprint;
}

/* The name of a field whose in-memory member is wider than its place on disk (values could be
 * cut), or NULL when every field fits. */
static const char *field_too_wide(void)
{
    for (int t = 0; t < SNAPSHOT_TABLES; t++)
        for (size_t i = 0; i < tables[t].field_count; i++)
            if (tables[t].fields[i].size > tables[t].fields[i].width)
                return tables[t].fields[i].name;
    return 0;
}

/* Sign-extends the low `bytes` bytes of `value` to 64 bits. */
static uint64_t sign_extend(uint64_t value, unsigned bytes)
{
    unsigned bits = bytes * 8;
    if (bits >= 64 || !((value >> (bits - 1)) & 1))
        return value;
    return value | (~0ull << bits);
}

/* A field as wide in memory as in the file is copied as it is (the host is little-endian, as
 * the general path below also assumes). Fixed sizes let the compiler emit single moves: this is
 * the path of nearly every field, run once per field of every record of a snapshot. */
static bool field_copy(const uint8_t *from, uint8_t *to, unsigned width)
{
    switch (width) {
    case 1:
        *to = *from;
        return true;
    case 2:
        memcpy(to, from, 2);
        return true;
    case 4:
        memcpy(to, from, 4);
        return true;
    case 8:
        memcpy(to, from, 8);
        return true;
    default:
        return false;
    }
}

static void field_encode(const snapshot_field *field, const uint8_t *record, uint8_t *out)
{
    if (field->size == field->width && field_copy(record + field->offset, out, field->width))
        return;
    if (field->is_bytes) {
        memcpy(out, record + field->offset, field->width);
        return;
    }
    uint64_t value = 0;
    memcpy(&value, record + field->offset, field->size);
    if (field->is_signed)
        value = sign_extend(value, field->size);
    memcpy(out, &value, field->width);
}

/* False when the stored value does not fit the member in memory. */
static bool field_decode(const snapshot_field *field, const uint8_t *in, uint8_t *record)
{
    if (field->size == field->width && field_copy(in, record + field->offset, field->width))
        return true;
    if (field->is_bytes) {
        memcpy(record + field->offset, in, field->width);
        return field->width <= field->size;
    }
    uint64_t value = 0;
    memcpy(&value, in, field->width);
    if (field->is_signed)
        value = sign_extend(value, field->width);
    uint64_t kept = 0;
    memcpy(&kept, &value, field->size);
    if (field->is_signed ? sign_extend(kept, field->size) != value : kept != value)
        return false;
    memcpy(record + field->offset, &value, field->size);
    return true;
}

/* Fields that sit next to each other in memory, each as wide as in the file, are one copy. A
 * table's runs are worked out once per snapshot and serve all its records: a record then costs
 * one or two memcpy calls instead of one conversion per field. */
#define SNAPSHOT_RUNS_MAX 32

typedef struct copy_run {
    uint16_t memory_offset, file_offset, length;
} copy_run;

typedef struct table_runs {
    bool usable; /* every field as wide in memory as in the file */
    size_t count;
    copy_run runs[SNAPSHOT_RUNS_MAX];
} table_runs;

/* The runs of records as `version` lays them out (the fields it holds). */
static void runs_build(const snapshot_table *table, uint32_t version, table_runs *out)
{
    COFFER_ASSERT(table->field_count <= SNAPSHOT_RUNS_MAX);
    out->usable = true;
    out->count = 0;
    uint16_t file_offset = 0;
    for (size_t i = 0; i < table->field_count; i++) {
        const snapshot_field *field = &table->fields[i];
        if (!field_in(field, version))
            continue;
        if (field->size != field->width) {
            out->usable = false;
            return;
        }
        copy_run *last = out->count ? &out->runs[out->count - 1] : 0;
        if (last && last->memory_offset + last->length == field->offset)
            last->length += field->width;
        else
            out->runs[out->count++] = (copy_run){field->offset, file_offset, field->width};
        file_offset += field->width;
    }
}

static void record_encode(const snapshot_table *table, const table_runs *runs,
                          const uint8_t *record, uint8_t *out)
{
    if (runs->usable) {
        for (size_t i = 0; i < runs->count; i++)
            memcpy(out + runs->runs[i].file_offset, record + runs->runs[i].memory_offset,
                   runs->runs[i].length);
        return;
    }
    for (size_t i = 0; i < table->field_count; i++) {
        field_encode(&table->fields[i], record, out);
        out += table->fields[i].width;
    }
}

static bool record_decode(const snapshot_table *table, const table_runs *runs, uint32_t version,
                          const uint8_t *in, uint8_t *record)
{
    memset(record, 0, table->memory_size);
    if (runs->usable && version != SNAPSHOT_VERSION_RAW) {
        for (size_t i = 0; i < runs->count; i++)
            memcpy(record + runs->runs[i].memory_offset, in + runs->runs[i].file_offset,
                   runs->runs[i].length);
        return true;
    }
    uint32_t at = 0;
    bool ok = true;
    for (size_t i = 0; i < table->field_count; i++) {
        const snapshot_field *field = &table->fields[i];
        if (!field_in(field, version))
            continue; /* added later: zero, as memset left it */
        ok &= field_decode(field, in + (version == SNAPSHOT_VERSION_RAW ? field->raw_offset : at),
                           record);
        at += field->width;
    }
    return ok;
}

typedef struct table_view {
    uint8_t *bytes; /* the table in memory */
    uint64_t count; /* records (arena: bytes) */
} table_view;

static void table_views(const store *s, table_view views[SNAPSHOT_TABLES])
{
    views[0] = (table_view){(uint8_t *)s->accounts, s->accounts_count};
    views[1] = (table_view){(uint8_t *)s->transfers, s->transfers_count};
    views[2] = (table_view){(uint8_t *)s->history, s->history_count};
    views[3] = (table_view){(uint8_t *)s->expiries, s->expiries_count};
    views[4] = (table_view){(uint8_t *)s->holds, s->holds_count};
    views[5] = (table_view){(uint8_t *)s->arena, s->arena_used};
    views[6] = (table_view){(uint8_t *)s->submitters, s->submitters_count};
}

static uint64_t aligned(uint64_t value)
{
    return (value + SNAPSHOT_ALIGN - 1) / SNAPSHOT_ALIGN * SNAPSHOT_ALIGN;
}

static void put_u32(uint8_t *at, uint32_t value)
{
    memcpy(at, &value, sizeof value);
}

static void put_u64(uint8_t *at, uint64_t value)
{
    memcpy(at, &value, sizeof value);
}

static uint32_t get_u32(const uint8_t *at)
{
    uint32_t value;
    memcpy(&value, at, sizeof value);
    return value;
}

static uint64_t get_u64(const uint8_t *at)
{
    uint64_t value;
    memcpy(&value, at, sizeof value);
    return value;
}

static void snapshot_path(char *out, size_t size, const char *dir, uint64_t seq, bool temp)
{
    snprintf(out, size, "%s/snapshot-%020llu.cfs%s", dir, (unsigned long long)seq,
             temp ? ".tmp" : "");
}

/* ---- writing ------------------------------------------------------------------------------- */

/* Bytes on their way to the file through the hash; `position` counts everything put so far. */
typedef struct output {
    int fd;
    crypto_generichash_state hash;
    uint8_t *buffer; /* SNAPSHOT_BUFFER_BYTES, static: the writer may run in a forked child */
    size_t used;
    uint64_t position;
    bool ok;
} output;

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

static void output_flush(output *out)
{
    out->ok = out->ok && crypto_generichash_update(&out->hash, out->buffer, out->used) == 0 &&
              write_all(out->fd, out->buffer, out->used);
    out->used = 0;
}

/* Room for `length` (at most the buffer) contiguous bytes; the caller fills them. */
static uint8_t *output_reserve(output *out, size_t length)
{
    if (out->used + length > SNAPSHOT_BUFFER_BYTES)
        output_flush(out);
    uint8_t *at = out->buffer + out->used;
    out->used += length;
    out->position += length;
    return at;
}

static void output_bytes(output *out, const uint8_t *bytes, uint64_t length)
{
    while (length > 0) {
        size_t step = length > SNAPSHOT_BUFFER_BYTES ? SNAPSHOT_BUFFER_BYTES : (size_t)length;
        memcpy(output_reserve(out, step), bytes, step);
        bytes += step;
        length -= step;
    }
}

/* Zeros up to the next SNAPSHOT_ALIGN boundary. */
static void output_align(output *out)
{
    size_t padding = (size_t)(aligned(out->position) - out->position);
    memset(output_reserve(out, padding), 0, padding);
}

static void output_table(output *out, const snapshot_table *table, const table_view *view)
{
    if (!table->fields) {
        output_bytes(out, view->bytes, view->count);
    } else {
        uint32_t size = record_size(table, SNAPSHOT_VERSION);
        table_runs runs;
        runs_build(table, SNAPSHOT_VERSION, &runs);
        for (uint64_t i = 0; i < view->count; i++)
            record_encode(table, &runs, view->bytes + i * table->memory_size,
                          output_reserve(out, size));
    }
    output_align(out);
}

static void header_encode(uint8_t *header, const store *s, const snapshot_meta *meta)
{
    memset(header, 0, SNAPSHOT_HEADER_BYTES);
    memcpy(header + HEADER_MAGIC, snapshot_magic, sizeof snapshot_magic);
    put_u32(header + HEADER_VERSION, SNAPSHOT_VERSION);
    put_u32(header + HEADER_BYTES, SNAPSHOT_HEADER_BYTES);
    put_u64(header + HEADER_TIP_SEQ, meta->tip.last_seq);
    put_u64(header + HEADER_TIP_TIMESTAMP, meta->tip.last_timestamp);
    memcpy(header + HEADER_TIP_HASH, meta->tip.hash, RECORD_HASH_BYTES);
    put_u64(header + HEADER_LAST_SEQ, meta->last_seq);
    put_u64(header + HEADER_LAST_TIMESTAMP, meta->last_timestamp);
    table_view views[SNAPSHOT_TABLES];
    table_views(s, views);
    for (int t = 0; t < SNAPSHOT_TABLES; t++) {
        put_u64(header + header_counts_at(t), views[t].count);
        put_u32(header + header_record_size_at(t), record_size(&tables[t], SNAPSHOT_VERSION));
    }
    put_u64(header + HEADER_HOLDS_PENDING, s->holds_pending);
    put_u64(header + HEADER_LAYOUT, layout_fingerprint(SNAPSHOT_VERSION));
    put_u64(header + HEADER_TRIMMED_SEQ, s->trimmed_seq);
}

static int write_failed(char *error, size_t error_size, const char *path, const char *what)
{
    snprintf(error, error_size, "snapshot %.700s: %s: %s", path, what, strerror(errno));
    return COFFER_STORAGE_FAILED;
}

/* Writes the whole image to `fd`: header, tables, then the hash of all of it. */
static bool write_image(int fd, const store *s, const snapshot_meta *meta)
{
    static uint8_t buffer[SNAPSHOT_BUFFER_BYTES]; /* static: no heap, no big stack */
    output out = {fd, {{0}}, buffer, 0, 0, true};
    crypto_generichash_init(&out.hash, 0, 0, RECORD_HASH_BYTES);
    header_encode(output_reserve(&out, SNAPSHOT_HEADER_BYTES), s, meta);
    table_view views[SNAPSHOT_TABLES];
    table_views(s, views);
    for (int t = 0; t < SNAPSHOT_TABLES; t++)
        output_table(&out, &tables[t], &views[t]);
    output_flush(&out);
    uint8_t digest[RECORD_HASH_BYTES];
    return out.ok && crypto_generichash_final(&out.hash, digest, sizeof digest) == 0 &&
           write_all(fd, digest, sizeof digest);
}

int snapshot_write(const store *s, const snapshot_meta *meta, const char *dir, char *error,
                   size_t error_size)
{
    char temp[4096], final[4096];
    snapshot_path(temp, sizeof temp, dir, meta->tip.last_seq, true);
    snapshot_path(final, sizeof final, dir, meta->tip.last_seq, false);
    const char *too_wide = field_too_wide();
    if (too_wide) {
        snprintf(error, error_size,
                 "snapshot: field %s is wider in memory than on disk; a new format version "
                 "must hold it",
                 too_wide);
        return COFFER_INTERNAL;
    }
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return write_failed(error, error_size, temp, "create");
    bool ok = write_image(fd, s, meta) && fsync(fd) == 0;
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

static bool read_hashed(int fd, crypto_generichash_state *hash, void *bytes, uint64_t length)
{
    return read_all(fd, bytes, length) && crypto_generichash_update(hash, bytes, length) == 0;
}

/* The header as read back, whichever version wrote it. */
typedef struct header_fields {
    uint32_t version;
    uint64_t counts[SNAPSHOT_TABLES];
    snapshot_meta meta;
    uint64_t holds_pending;
    uint64_t trimmed_seq; /* 0 for a format older than 4: those stores held everything */
} header_fields;

/* NULL when the header is one this build reads and matches the file's size; else why not. */
static const char *header_decode(const uint8_t *header, uint64_t file_size, header_fields *out)
{
    out->version = get_u32(header + HEADER_VERSION);
    if (memcmp(header + HEADER_MAGIC, snapshot_magic, sizeof snapshot_magic) != 0)
        return "not a snapshot (bad magic)";
    if (out->version < SNAPSHOT_VERSION_RAW || out->version > SNAPSHOT_VERSION)
        return "a format version this build does not read";
    if (get_u32(header + HEADER_BYTES) != SNAPSHOT_HEADER_BYTES)
        return "bad header size";
    if (out->version != SNAPSHOT_VERSION_RAW &&
        get_u64(header + HEADER_LAYOUT) != layout_fingerprint(out->version))
        return "records laid out differently from what this build reads for the file's version "
               "(a format change without a new version)";
    uint64_t expected = SNAPSHOT_HEADER_BYTES + RECORD_HASH_BYTES;
    for (int t = 0; t < SNAPSHOT_TABLES; t++) {
        out->counts[t] = 0;
        if (!table_in(&tables[t], out->version))
            continue;
        uint32_t size = record_size(&tables[t], out->version);
        out->counts[t] = get_u64(header + header_counts_at(t));
        if (get_u32(header + header_record_size_at(t)) != size)
            return "record sizes differ from the format version's";
        if (out->counts[t] > (1ull << 40))
            return "a table count out of range";
        expected += aligned(out->counts[t] * size);
    }
    if (expected != file_size)
        return "file size does not match its tables (truncated or extended)";
    out->meta.tip.last_seq = get_u64(header + HEADER_TIP_SEQ);
    out->meta.tip.last_timestamp = get_u64(header + HEADER_TIP_TIMESTAMP);
    memcpy(out->meta.tip.hash, header + HEADER_TIP_HASH, RECORD_HASH_BYTES);
    out->meta.last_seq = get_u64(header + HEADER_LAST_SEQ);
    out->meta.last_timestamp = get_u64(header + HEADER_LAST_TIMESTAMP);
    out->holds_pending = get_u64(header + HEADER_HOLDS_PENDING);
    out->meta.submitters_kept = out->version >= SNAPSHOT_VERSION_SUBMITTERS;
    out->trimmed_seq =
        out->version >= SNAPSHOT_VERSION_TRIMMED ? get_u64(header + HEADER_TRIMMED_SEQ) : 0;
    return 0;
}

/* Reads one table (and its padding) into place, decoding records of `version`. False on a
 * short read or a value that does not fit its member. */
static bool read_table(int fd, crypto_generichash_state *hash, const snapshot_table *table,
                       uint32_t version, const table_view *view)
{
    static uint8_t buffer[SNAPSHOT_BUFFER_BYTES];
    uint32_t size = record_size(table, version);
    uint64_t length = view->count * size, padding = aligned(length) - length;
    if (!table->fields)
        return read_hashed(fd, hash, view->bytes, length) && read_hashed(fd, hash, buffer, padding);
    uint64_t per_chunk = SNAPSHOT_BUFFER_BYTES / size;
    table_runs runs;
    runs_build(table, version, &runs);
    for (uint64_t done = 0; done < view->count;) {
        uint64_t records = view->count - done < per_chunk ? view->count - done : per_chunk;
        if (!read_hashed(fd, hash, buffer, records * size))
            return false;
        for (uint64_t i = 0; i < records; i++)
            if (!record_decode(table, &runs, version, buffer + i * size,
                               view->bytes + (done + i) * table->memory_size))
                return false;
        done += records;
    }
    return read_hashed(fd, hash, buffer, padding);
}

static int load_failed(char *error, size_t error_size, const char *path, const char *what)
{
    snprintf(error, error_size, "snapshot %.700s: %s", path, what);
    return COFFER_STORAGE_FAILED;
}

/* Reads the tables after the header and checks the hash over everything. */
static int load_tables(int fd, store *s, const uint8_t *header, uint32_t version, const char *path,
                       char *error, size_t error_size)
{
    crypto_generichash_state hash;
    crypto_generichash_init(&hash, 0, 0, RECORD_HASH_BYTES);
    crypto_generichash_update(&hash, header, SNAPSHOT_HEADER_BYTES);
    table_view views[SNAPSHOT_TABLES];
    table_views(s, views);
    bool ok = true;
    for (int t = 0; ok && t < SNAPSHOT_TABLES; t++)
        ok =
            !table_in(&tables[t], version) || read_table(fd, &hash, &tables[t], version, &views[t]);
    uint8_t digest[RECORD_HASH_BYTES], stored[RECORD_HASH_BYTES];
    ok = ok && crypto_generichash_final(&hash, digest, sizeof digest) == 0 &&
         read_all(fd, stored, sizeof stored) && sodium_memcmp(digest, stored, sizeof digest) == 0;
    return ok ? COFFER_OK : load_failed(error, error_size, path, "hash mismatch (damaged)");
}

/* Reads and decodes the header of the open snapshot `fd`; null, or what is wrong with it. */
static const char *header_read(int fd, uint8_t *header, header_fields *fields)
{
    struct stat info;
    if (fstat(fd, &info) != 0 || !read_all(fd, header, SNAPSHOT_HEADER_BYTES))
        return "unreadable or too short";
    return header_decode(header, (uint64_t)info.st_size, fields);
}

int snapshot_load(store *s, const char *path, snapshot_meta *meta, char *error, size_t error_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return load_failed(error, error_size, path, strerror(errno));
    static uint8_t header[SNAPSHOT_HEADER_BYTES];
    header_fields fields;
    const char *problem = header_read(fd, header, &fields);
    int code = problem ? load_failed(error, error_size, path, problem) : COFFER_OK;
    if (code == COFFER_OK) {
        const uint64_t *c = fields.counts;
        store_counts counts = {
            c[0], c[1], c[2], c[3], c[4], c[SNAPSHOT_ARENA], fields.holds_pending, c[6]};
        code = store_restore_begin(s, &counts);
        if (code != COFFER_OK)
            snprintf(error, error_size, "snapshot %.700s: larger than the configured limits", path);
        s->trimmed_seq = fields.trimmed_seq;
    }
    if (code == COFFER_OK)
        code = load_tables(fd, s, header, fields.version, path, error, error_size);
    close(fd);
    if (code == COFFER_OK && !store_check_references(s))
        code = load_failed(error, error_size, path, "a record refers outside its tables");
    if (code == COFFER_OK)
        code = store_restore_finish(s);
    if (code == COFFER_OK)
        *meta = fields.meta;
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

/* The tip a snapshot's header names, read without loading the tables (nor checking the hash,
 * which the load does). COFFER_OK, or COFFER_STORAGE_FAILED with `error` set. */
static int snapshot_read_tip(const char *path, wal_tip *tip, char *error, size_t error_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return load_failed(error, error_size, path, strerror(errno));
    uint8_t header[SNAPSHOT_HEADER_BYTES];
    header_fields fields;
    const char *problem = header_read(fd, header, &fields);
    close(fd);
    if (problem)
        return load_failed(error, error_size, path, problem);
    *tip = fields.meta.tip;
    return COFFER_OK;
}

/* Loads the snapshot at `path` when `accept` (if any) takes the tip its header names; *passed
 * is set when it does not. */
static int load_accepted(store *s, const char *path, snapshot_accept_fn *accept, void *context,
                         snapshot_meta *meta, bool *passed, char *error, size_t error_size)
{
    *passed = false;
    if (accept) {
        wal_tip tip;
        int code = snapshot_read_tip(path, &tip, error, error_size);
        if (code != COFFER_OK)
            return code;
        if (!accept(&tip, context)) {
            *passed = true;
            return COFFER_OK;
        }
    }
    return snapshot_load(s, path, meta, error, error_size);
}

int snapshot_load_latest(store *s, const char *dir, snapshot_meta *meta, bool *found, char *skipped,
                         size_t skipped_size)
{
    return snapshot_load_newest(s, dir, 0, 0, meta, found, skipped, skipped_size);
}

int snapshot_load_newest(store *s, const char *dir, snapshot_accept_fn *accept, void *context,
                         snapshot_meta *meta, bool *found, char *skipped, size_t skipped_size)
{
    *found = false;
    skipped[0] = 0;
    size_t count;
    uint64_t *seqs = list_snapshots(dir, &count, false);
    int code = COFFER_OK;
    for (size_t i = 0; i < count; i++) {
        char path[4096], error[1024];
        bool passed;
        snapshot_path(path, sizeof path, dir, seqs[i], false);
        code = load_accepted(s, path, accept, context, meta, &passed, error, sizeof error);
        if (code == COFFER_OK && passed)
            continue;
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
