/*
 * index.c — the on-disk index in RocksDB (see index.h): one column family with key prefixes
 * (derive.h), so that a flush persists transfers, history and meta together. With RocksDB's WAL
 * off, column families would flush one by one and a crash could keep a meta newer than the data
 * it describes; one memtable cannot.
 */
#define _GNU_SOURCE /* nftw, asprintf */
#include "index/index.h"

#include <errno.h>
#include <ftw.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/check.h"
#include "index/derive.h"
#include "index/staging.h"

/* The file a flush writes its table to, in the index's directory (RocksDB moves it in). */
#define INDEX_TABLE_FILE "staged.sst"
/* The meta value: u32 format, u64 applied seq, hash, u64 covers_from, u64 transfers, history. */
#define META_BYTES (4 + 8 + RECORD_HASH_BYTES + 8 + 8 + 8)

/* Staged records are flushed once they hold this much by default (index_set_staging_max), whatever
 * the indexer's own schedule: the staging's memory stays bounded, and each flush makes one table of
 * RocksDB's level 0 (about as large as a 64 MiB memtable would make). */
#define INDEX_STAGED_BYTES_MAX (64u << 20)

struct index_db {
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_filterpolicy_t *filter;
    rocksdb_readoptions_t *read_options;
    rocksdb_envoptions_t *env_options;
    rocksdb_ingestexternalfileoptions_t *ingest_options;
    char *table_path;      /* where a flush writes its table before RocksDB takes it in */
    index_staging staging; /* the records applied since the last flush */
    uint64_t staged_max;   /* a flush comes once the staging holds this much */
    record_scratch scratch;
    bool read_only;
    bool failed; /* a write failed: the handle refuses more */
    /* After the records applied (staged in memory) and flushed (in RocksDB, durable). */
    index_position position, flushed;
    id_filter *ids; /* the ids staged go into it too (index_filter_attach), or NULL */
    filter_hash_fn hash;
};

static void fail(char *error, size_t error_size, const char *what, char *message)
{
    snprintf(error, error_size, "%s: %s", what, message ? message : "failed");
    free(message);
}

/* The settings the spike measured (docs/benchmarks.md), in one column family. The memtable
 * settings matter only to a write outside index_flush: flushes hand RocksDB whole tables. */
static void options_make(index_db *index, uint64_t cache_bytes)
{
    index->cache = rocksdb_cache_create_lru(cache_bytes);
    index->filter = rocksdb_filterpolicy_create_bloom_full(10);
    index->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(index->table, index->cache);
    rocksdb_block_based_options_set_filter_policy(index->table, index->filter);
    /* Index and filter blocks live in the block cache, not beside it: held beside it, every
     * table's whole filter and index stay in memory for as long as the table is open, and that
     * grows with the ledger (about 1.3 bytes per key), outside any budget. Partitioned, a lookup
     * loads the 4 KiB partitions it needs instead of a table's whole filter; the top levels and
     * level 0 (ingested tables, read on every lookup) stay pinned. */
    rocksdb_block_based_options_set_index_type(
        index->table, rocksdb_block_based_table_index_type_two_level_index_search);
    rocksdb_block_based_options_set_partition_filters(index->table, 1);
    rocksdb_block_based_options_set_metadata_block_size(index->table, 4096);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(index->table, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(index->table,
                                                                                     1);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(index->table, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(index->table, 1);
    index->options = rocksdb_options_create();
    rocksdb_options_set_block_based_table_factory(index->options, index->table);
    rocksdb_options_increase_parallelism(index->options, 2);
    rocksdb_options_set_max_background_jobs(index->options, 2);
    rocksdb_options_set_create_if_missing(index->options, 1);
    rocksdb_options_set_write_buffer_size(index->options, 64u << 20);
    rocksdb_options_set_max_write_buffer_number(index->options, 3);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(index->options, 1);
    rocksdb_options_set_compression(index->options, rocksdb_lz4_compression);
    rocksdb_options_set_max_open_files(index->options, -1);
    rocksdb_options_set_bytes_per_sync(index->options, 1u << 20);
    /* RocksDB's own log of its work (LOG files): kept small, it is not the ledger's. */
    rocksdb_options_set_keep_log_file_num(index->options, 2);
    rocksdb_options_set_max_log_file_size(index->options, 1u << 20);
    index->read_options = rocksdb_readoptions_create();
    index->env_options = rocksdb_envoptions_create();
    index->ingest_options = rocksdb_ingestexternalfileoptions_create();
    rocksdb_ingestexternalfileoptions_set_move_files(index->ingest_options, 1);
}

static void handle_free(index_db *index)
{
    if (index->db)
        rocksdb_close(index->db);
    rocksdb_ingestexternalfileoptions_destroy(index->ingest_options);
    rocksdb_envoptions_destroy(index->env_options);
    rocksdb_readoptions_destroy(index->read_options);
    rocksdb_options_destroy(index->options);
    rocksdb_block_based_options_destroy(index->table); /* frees the filter policy too */
    rocksdb_cache_destroy(index->cache);
    free(index->table_path);
    staging_free(&index->staging);
    record_scratch_free(&index->scratch);
    free(index);
}

/* Reads the meta into index->position; an index without one is empty (just created) unless
 * it holds keys, which only a damaged index does. */
static int meta_read(index_db *index, char *error, size_t error_size)
{
    char *message = 0;
    size_t length = 0;
    char *value = rocksdb_get(index->db, index->read_options, "M", 1, &length, &message);
    if (message) {
        fail(error, error_size, "reading the meta", message);
        return COFFER_STORAGE_FAILED;
    }
    index_position *p = &index->position;
    memset(p, 0, sizeof *p);
    if (!value) {
        rocksdb_iterator_t *iterator = rocksdb_create_iterator(index->db, index->read_options);
        rocksdb_iter_seek_to_first(iterator);
        bool empty = !rocksdb_iter_valid(iterator);
        rocksdb_iter_destroy(iterator);
        if (empty)
            return COFFER_OK;
        snprintf(error, error_size, "it has keys but no meta");
        return COFFER_STORAGE_FAILED;
    }
    const uint8_t *bytes = (const uint8_t *)value;
    uint32_t format =
        bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
    int code = COFFER_OK;
    if (length != META_BYTES || format != INDEX_FORMAT_VERSION) {
        snprintf(error, error_size, "its format is %u (%zu bytes of meta), this build reads %d",
                 format, length, INDEX_FORMAT_VERSION);
        code = COFFER_STORAGE_FAILED;
    } else {
        p->applied_seq = index_get_u64(bytes + 4);
        memcpy(p->applied_hash, bytes + 12, RECORD_HASH_BYTES);
        p->covers_from_seq = index_get_u64(bytes + 12 + RECORD_HASH_BYTES);
        p->transfers = index_get_u64(bytes + 20 + RECORD_HASH_BYTES);
        p->history = index_get_u64(bytes + 28 + RECORD_HASH_BYTES);
    }
    rocksdb_free(value);
    return code;
}

int index_open(const char *path, bool read_only, index_db **out, char *error, size_t error_size)
{
    return index_open_cached(path, read_only, INDEX_CACHE_BYTES, out, error, error_size);
}

int index_open_cached(const char *path, bool read_only, uint64_t cache_bytes, index_db **out,
                      char *error, size_t error_size)
{
    *out = 0;
    struct stat status;
    if (read_only && stat(path, &status) != 0) {
        snprintf(error, error_size, "missing (%s: %s)", path, strerror(errno));
        return COFFER_STORAGE_FAILED;
    }
    index_db *index = calloc(1, sizeof *index);
    if (!index)
        return COFFER_OUT_OF_MEMORY;
    options_make(index, cache_bytes);
    index->read_only = read_only;
    index_set_staging_max(index, INDEX_STAGED_BYTES_MAX / 2 * 3);
    char *message = 0;
    if (read_only)
        index->db = rocksdb_open_for_read_only(index->options, path, 0, &message);
    else
        index->db = rocksdb_open(index->options, path, &message);
    int code = COFFER_OK;
    if (message) {
        fail(error, error_size, "RocksDB cannot open it", message);
        code = COFFER_STORAGE_FAILED;
    }
    if (code == COFFER_OK)
        code = meta_read(index, error, error_size);
    if (asprintf(&index->table_path, "%s/%s", path, INDEX_TABLE_FILE) < 0) {
        index->table_path = 0;
        code = COFFER_OUT_OF_MEMORY;
    }
    if (code != COFFER_OK) {
        handle_free(index);
        return code;
    }
    index->flushed = index->position;
    *out = index;
    return COFFER_OK;
}

void index_close(index_db *index)
{
    if (!index)
        return;
    bool unflushed = index->position.applied_seq != index->flushed.applied_seq;
    if (!index->read_only && !index->failed && unflushed) {
        char error[256];
        index_flush(index, error, sizeof error); /* a failure costs a replay at the next open */
    }
    handle_free(index);
}

static int remove_entry(const char *path, const struct stat *status, int type, struct FTW *walk)
{
    (void)status, (void)type, (void)walk;
    return remove(path);
}

int index_destroy(const char *path)
{
    struct stat status;
    if (lstat(path, &status) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

index_position index_position_get(const index_db *index)
{
    return index->position;
}

index_position index_position_flushed(const index_db *index)
{
    return index->flushed;
}

/* ---- writing ------------------------------------------------------------------------------- */

/* One derived key and value staged, counted in `count`. */
static int stage(index_db *index, uint64_t *count, const uint8_t *key, size_t key_length,
                 const uint8_t *value, size_t value_length)
{
    int code = staging_put(&index->staging, key, key_length, value, value_length);
    if (code == 0)
        (*count)++;
    return code;
}

/* The id of a transfer key, into the filter: a failed add breaks the filter, not the index. */
static void filter_put(index_db *index, const uint8_t *key, size_t key_length)
{
    if (index->ids)
        filter_add(index->ids, index->hash((const char *)key + 1, key_length - 1));
}

static int stage_transfer(void *context, const uint8_t *key, size_t key_length,
                          const uint8_t *value, size_t value_length)
{
    index_db *index = context;
    int code = stage(index, &index->position.transfers, key, key_length, value, value_length);
    if (code == 0)
        filter_put(index, key, key_length);
    return code;
}

static int stage_history(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                         size_t value_length)
{
    index_db *index = context;
    return stage(index, &index->position.history, key, key_length, value, value_length);
}

static int stage_resolution(void *context, const uint8_t *key, size_t key_length,
                            const uint8_t *value, size_t value_length)
{
    uint64_t uncounted = 0;
    return stage(context, &uncounted, key, key_length, value, value_length);
}

static int meta_stage(index_db *index)
{
    const index_position *p = &index->position;
    uint8_t meta[META_BYTES];
    for (int i = 0; i < 4; i++)
        meta[i] = (uint8_t)(INDEX_FORMAT_VERSION >> (8 * i));
    index_put_u64(meta + 4, p->applied_seq);
    memcpy(meta + 12, p->applied_hash, RECORD_HASH_BYTES);
    index_put_u64(meta + 12 + RECORD_HASH_BYTES, p->covers_from_seq);
    index_put_u64(meta + 20 + RECORD_HASH_BYTES, p->transfers);
    index_put_u64(meta + 28 + RECORD_HASH_BYTES, p->history);
    return staging_put(&index->staging, (const uint8_t *)"M", 1, meta, sizeof meta);
}

#define TABLE_PREFETCH_AHEAD 8

/* The staged puts, sorted, into a table file at table_path (of a key put twice, the last). */
static int table_write(index_db *index, char **message)
{
    index_staging *staging = &index->staging;
    staging_sort(staging);
    rocksdb_sstfilewriter_t *writer =
        rocksdb_sstfilewriter_create(index->env_options, index->options);
    rocksdb_sstfilewriter_open(writer, index->table_path, message);
    for (size_t i = 0; !*message && i < staging->count; i++) {
        const staged_put *put = &staging->puts[i], *next = put + 1;
        /* Sorted, the puts point all over the arena: ask for the keys a few puts ahead. */
        if (i + TABLE_PREFETCH_AHEAD < staging->count)
            __builtin_prefetch(staged_key(staging, put + TABLE_PREFETCH_AHEAD));
        if (i + 1 < staging->count && next->key_length == put->key_length &&
            memcmp(staged_key(staging, next), staged_key(staging, put), put->key_length) == 0)
            continue; /* a later put of the same key follows */
        rocksdb_sstfilewriter_put(writer, (const char *)staged_key(staging, put), put->key_length,
                                  (const char *)staged_value(staging, put), put->value_length,
                                  message);
    }
    if (!*message)
        rocksdb_sstfilewriter_finish(writer, message);
    rocksdb_sstfilewriter_destroy(writer);
    return *message ? COFFER_STORAGE_FAILED : COFFER_OK;
}

/* Flushing writes the staged records, sorted, as one table file with the meta, and has RocksDB
 * take the file in: one atomic and durable step, where inserting into a memtable cost a walk of
 * its skip list per key (most of the index's time) and a later flush of the memtable. */
int index_flush(index_db *index, char *error, size_t error_size)
{
    if (index->read_only || index->position.applied_seq == index->flushed.applied_seq)
        return COFFER_OK;
    if (index->failed) {
        snprintf(error, error_size, "the index refuses writes after a failure");
        return COFFER_STORAGE_FAILED;
    }
    char *message = 0;
    int code = meta_stage(index);
    if (code == COFFER_OK && table_write(index, &message) == COFFER_OK) {
        const char *files[] = {index->table_path};
        rocksdb_ingest_external_file(index->db, files, 1, index->ingest_options, &message);
    }
    staging_rewind(&index->staging, (staging_mark){0, 0});
    if (code != COFFER_OK || message) {
        index->failed = true;
        if (message)
            fail(error, error_size, "writing a table", message);
        else
            snprintf(error, error_size, "out of memory");
        return code != COFFER_OK ? code : COFFER_STORAGE_FAILED;
    }
    index->flushed = index->position;
    return COFFER_OK;
}

/* A record that cannot be derived: what was staged before it is flushed, then the handle
 * refuses writes. */
static int record_failed(index_db *index, const record_header *header, int code, char *error,
                         size_t error_size)
{
    int flushed = index_flush(index, error, error_size);
    index->failed = true;
    if (flushed == COFFER_OK)
        snprintf(error, error_size, "the record ending at seq %llu: %s",
                 (unsigned long long)header->last_seq,
                 code == COFFER_OUT_OF_MEMORY ? "out of memory" : record_status_name(code));
    return code == COFFER_OUT_OF_MEMORY ? code : COFFER_STORAGE_FAILED;
}

int index_apply_record(index_db *index, const uint8_t *bytes, const record_header *header,
                       char *error, size_t error_size)
{
    if (index->read_only || index->failed) {
        snprintf(error, error_size, "the index refuses writes after a failure");
        return COFFER_STORAGE_FAILED;
    }
    if (header->last_seq <= index->position.applied_seq)
        return COFFER_OK;
    index_position before = index->position;
    staging_mark mark = staging_mark_get(&index->staging);
    index_sink sink = {stage_transfer, stage_history, stage_resolution, index};
    int code = index_derive_record(bytes, header, &index->scratch, &sink);
    if (code != RECORD_OK) {
        staging_rewind(&index->staging, mark);
        index->position = before;
        return record_failed(index, header, code, error, error_size);
    }
    index_position *p = &index->position;
    p->applied_seq = header->last_seq;
    memcpy(p->applied_hash, header->hash, RECORD_HASH_BYTES);
    if (p->covers_from_seq == 0 && header->version >= 2)
        p->covers_from_seq = header->seq_base;
    if (index->staging.arena_length >= index->staged_max)
        return index_flush(index, error, error_size);
    return COFFER_OK;
}

void index_set_staging_max(index_db *index, uint64_t bytes)
{
    /* Keys and values are about three quarters of a staging's memory at its limit, the array of
     * puts (12 bytes for every 40 or more) the rest. The flush comes after the record that
     * passes the max: room for one record more. */
    index->staged_max = bytes / 3 * 2;
    staging_set_limit(&index->staging, index->staged_max + index->staged_max / 8);
}

/* ---- reading ------------------------------------------------------------------------------- */

int index_read_value(index_db *index, const uint8_t *key, size_t key_length, uint8_t *value,
                     size_t capacity, size_t *length)
{
    char *message = 0;
    rocksdb_pinnableslice_t *slice =
        rocksdb_get_pinned(index->db, index->read_options, (const char *)key, key_length, &message);
    if (message) {
        free(message);
        return COFFER_STORAGE_FAILED;
    }
    if (!slice)
        return COFFER_TRANSFER_NOT_FOUND;
    const char *bytes = rocksdb_pinnableslice_value(slice, length);
    int code = *length <= capacity ? COFFER_OK : COFFER_STORAGE_FAILED;
    if (code == COFFER_OK)
        memcpy(value, bytes, *length);
    rocksdb_pinnableslice_destroy(slice);
    return code;
}

int index_get_transfer(index_db *index, const char *id, size_t id_len, index_transfer *out)
{
    if (id_len > COFFER_TRANSFER_ID_MAX)
        return COFFER_TRANSFER_NOT_FOUND;
    uint8_t key[TRANSFER_KEY_MAX], value[TRANSFER_VALUE_MAX];
    size_t key_length = index_transfer_key(key, id, id_len), length = 0;
    int code = index_read_value(index, key, key_length, value, sizeof value, &length);
    if (code != COFFER_OK)
        return code;
    if (!index_transfer_unpack(value, length, out))
        return COFFER_STORAGE_FAILED;
    if (out->transfer.state == COFFER_STATE_PENDING) {
        /* A hold: how it ended, if it has, is under its resolution key. */
        key_length = index_resolution_key(key, id, id_len);
        code = index_read_value(index, key, key_length, value, sizeof value, &length);
        if (code == COFFER_OK && !index_resolution_apply(value, length, &out->transfer))
            code = COFFER_STORAGE_FAILED;
        if (code != COFFER_OK && code != COFFER_TRANSFER_NOT_FOUND)
            return code;
    }
    memcpy(out->transfer.id, id, id_len);
    out->transfer.id[id_len] = 0;
    return COFFER_OK;
}

int index_history_page(index_db *index, const char *account_id, uint64_t after_seq, size_t limit,
                       coffer_history_entry *entries, size_t *count_out)
{
    *count_out = 0;
    size_t account_len = strnlen(account_id, COFFER_ACCOUNT_ID_MAX + 1);
    if (account_len > COFFER_ACCOUNT_ID_MAX || after_seq == UINT64_MAX)
        return COFFER_OK;
    uint8_t start[HISTORY_KEY_MAX];
    size_t start_length = index_history_key(start, account_id, account_len, after_seq + 1, 0);
    size_t prefix = 2 + account_len;
    rocksdb_iterator_t *iterator = rocksdb_create_iterator(index->db, index->read_options);
    int code = COFFER_OK;
    rocksdb_iter_seek(iterator, (const char *)start, start_length);
    for (; rocksdb_iter_valid(iterator) && *count_out < limit; rocksdb_iter_next(iterator)) {
        size_t key_length, length;
        const uint8_t *key = (const uint8_t *)rocksdb_iter_key(iterator, &key_length);
        if (key_length < prefix || memcmp(key, start, prefix) != 0)
            break;
        const uint8_t *value = (const uint8_t *)rocksdb_iter_value(iterator, &length);
        if (!index_history_unpack(key, key_length, value, length, &entries[*count_out])) {
            code = COFFER_STORAGE_FAILED;
            break;
        }
        ++*count_out;
    }
    char *message = 0;
    rocksdb_iter_get_error(iterator, &message);
    if (message) {
        free(message);
        code = COFFER_STORAGE_FAILED;
    }
    rocksdb_iter_destroy(iterator);
    return code;
}

/* Positions `iterator` on the newest entry of the account with seq <= `seq` and unpacks it:
 * COFFER_OK, COFFER_TRANSFER_NOT_FOUND for none, storage_failed. */
static int history_seek(rocksdb_iterator_t *iterator, const char *account_id, size_t account_len,
                        uint64_t seq, coffer_history_entry *out)
{
    uint8_t key[HISTORY_KEY_MAX];
    /* Past both sides of `seq`: SeekForPrev then lands on the last key at or before it. */
    size_t key_length = index_history_key(key, account_id, account_len, seq, UINT8_MAX);
    size_t prefix = 2 + account_len;
    rocksdb_iter_seek_for_prev(iterator, (const char *)key, key_length);
    if (!rocksdb_iter_valid(iterator)) {
        char *message = 0;
        rocksdb_iter_get_error(iterator, &message);
        bool failed = message != 0;
        free(message);
        return failed ? COFFER_STORAGE_FAILED : COFFER_TRANSFER_NOT_FOUND;
    }
    size_t found_length, length;
    const uint8_t *found = (const uint8_t *)rocksdb_iter_key(iterator, &found_length);
    if (found_length < prefix || memcmp(found, key, prefix) != 0)
        return COFFER_TRANSFER_NOT_FOUND; /* another account's key, or another prefix */
    const uint8_t *value = (const uint8_t *)rocksdb_iter_value(iterator, &length);
    if (!index_history_unpack(found, found_length, value, length, out))
        return COFFER_STORAGE_FAILED;
    COFFER_ASSERT(out->seq <= seq);
    return COFFER_OK;
}

static bool history_account_ok(const char *account_id, size_t account_len)
{
    return account_id && account_len > 0 && account_len <= COFFER_ACCOUNT_ID_MAX;
}

int index_history_at(index_db *index, const char *account_id, size_t account_len, uint64_t seq,
                     coffer_history_entry *out)
{
    if (!history_account_ok(account_id, account_len))
        return COFFER_TRANSFER_NOT_FOUND;
    rocksdb_iterator_t *iterator = rocksdb_create_iterator(index->db, index->read_options);
    int code = history_seek(iterator, account_id, account_len, seq, out);
    rocksdb_iter_destroy(iterator);
    return code;
}

/* A binary search over seqs, one SeekForPrev per step on one iterator: each step finds the
 * newest entry at or before the middle seq and keeps the half that can hold the answer, so it
 * takes at most 64 seeks and no key besides the history's. */
int index_history_at_time(index_db *index, const char *account_id, size_t account_len,
                          uint64_t timestamp, coffer_history_entry *out)
{
    if (!history_account_ok(account_id, account_len))
        return COFFER_TRANSFER_NOT_FOUND;
    rocksdb_iterator_t *iterator = rocksdb_create_iterator(index->db, index->read_options);
    coffer_history_entry entry;
    int code = history_seek(iterator, account_id, account_len, UINT64_MAX, &entry);
    bool found = code == COFFER_OK && entry.timestamp <= timestamp;
    if (found)
        *out = entry;
    /* The answer, if any, has a seq in low..high: the newest entry is too late. */
    uint64_t low = 0, high = code == COFFER_OK && !found && entry.seq > 0 ? entry.seq - 1 : 0;
    bool searching = code == COFFER_OK && !found && entry.seq > 0;
    while (searching && low <= high) {
        uint64_t middle = low + (high - low) / 2;
        code = history_seek(iterator, account_id, account_len, middle, &entry);
        if (code == COFFER_TRANSFER_NOT_FOUND) {
            code = COFFER_OK;
            low = middle + 1; /* nothing at or before middle */
        } else if (code != COFFER_OK) {
            break;
        } else if (entry.timestamp <= timestamp) {
            *out = entry; /* a candidate; a newer one can only come after middle */
            found = true;
            low = middle + 1;
        } else if (entry.seq == 0) {
            break;
        } else {
            high = entry.seq - 1;
        }
        if (middle == UINT64_MAX)
            break;
    }
    rocksdb_iter_destroy(iterator);
    if (code != COFFER_OK && code != COFFER_TRANSFER_NOT_FOUND)
        return code;
    return found ? COFFER_OK : COFFER_TRANSFER_NOT_FOUND;
}

static int scan(index_db *index, const rocksdb_readoptions_t *options, uint8_t prefix,
                index_scan_fn visit, void *context);

static int filter_visit(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                        size_t length)
{
    (void)value, (void)length;
    filter_put(context, key, key_length);
    return COFFER_OK;
}

int index_filter_attach(index_db *index, id_filter *filter, filter_hash_fn hash)
{
    /* Nothing staged yet: the scan of RocksDB's keys sees every id the index holds. */
    COFFER_ASSERT(filter && hash && !index->ids && index->staging.count == 0);
    index->ids = filter;
    index->hash = hash;
    /* A scan of every transfer once: its blocks would only push the reads' out of the cache,
     * and reading ahead in large steps saves a read per block. */
    rocksdb_readoptions_t *options = rocksdb_readoptions_create();
    rocksdb_readoptions_set_fill_cache(options, 0);
    rocksdb_readoptions_set_readahead_size(options, 4u << 20);
    int code = scan(index, options, INDEX_KEY_TRANSFER, filter_visit, index);
    rocksdb_readoptions_destroy(options);
    if (code != COFFER_OK)
        atomic_store(&filter->broken, true);
    return code;
}

/* Every key with a first byte `prefix`, read with `options`. */
static int scan(index_db *index, const rocksdb_readoptions_t *options, uint8_t prefix,
                index_scan_fn visit, void *context)
{
    rocksdb_iterator_t *iterator = rocksdb_create_iterator(index->db, options);
    char first = (char)prefix;
    int code = COFFER_OK;
    rocksdb_iter_seek(iterator, &first, 1);
    for (; code == COFFER_OK && rocksdb_iter_valid(iterator); rocksdb_iter_next(iterator)) {
        size_t key_length, length;
        const uint8_t *key = (const uint8_t *)rocksdb_iter_key(iterator, &key_length);
        if (key_length == 0 || key[0] != prefix)
            break;
        const uint8_t *value = (const uint8_t *)rocksdb_iter_value(iterator, &length);
        code = visit(context, key, key_length, value, length);
    }
    char *message = 0;
    rocksdb_iter_get_error(iterator, &message);
    if (message) {
        free(message);
        code = COFFER_STORAGE_FAILED;
    }
    rocksdb_iter_destroy(iterator);
    return code;
}

int index_scan(index_db *index, uint8_t prefix, index_scan_fn visit, void *context)
{
    return scan(index, index->read_options, prefix, visit, context);
}
