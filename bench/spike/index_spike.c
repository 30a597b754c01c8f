/* index_spike: the storage spike of issue 11 (LMDB or RocksDB as coffer's on-disk index).
 * Ingests transfers with coffer's key shapes the way a background index writer would (one
 * write transaction per group of 8,190-event log records, no sync per commit, a sync at each
 * checkpoint), then measures point lookups (present and absent ids, cold and warm) and history
 * range scans. Prints one JSON line per run. Not part of the coffer library.
 *
 *   index_spike --store lmdb|rocksdb --dir DIR [--transfers N] [--accounts A]
 *               [--workload uniform|hot] [--records-per-commit R] [--checkpoint-every C]
 *               [--sort] [--writemap] [--seed S] [--no-drop-caches]
 *
 * Keys: a transfer id is a random UUIDv4 in text (36 bytes) -> an 80-byte packed transfer
 * record; each transfer adds two history entries, (account u32 big-endian, seq u64 big-endian)
 * -> 40 bytes. "Cold" phases close the store, write 3 to /proc/sys/vm/drop_caches (needs root;
 * this empties the page cache of the whole machine) and reopen it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <rocksdb/c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    EVENTS_PER_RECORD = 8190, /* one full log record of coffer's write-ahead log */
    ID_BYTES = 36,
    TRANSFER_VALUE_BYTES = 80,
    HISTORY_KEY_BYTES = 12,
    HISTORY_VALUE_BYTES = 40,
    HISTORY_PAGE_ENTRIES = 100,
    COLD_LOOKUPS = 10000,
    WARM_LOOKUPS = 100000,
    COLD_SCANS = 1000,
    WARM_SCANS = 10000,
    MAX_TENTHS = 10,
};

#define ABSENT_ID_SALT UINT64_C(0x5bd1e9955bd1e995)

struct options {
    const char *store_name;
    const char *dir;
    uint64_t transfers;
    uint32_t accounts;
    bool hot;
    unsigned records_per_commit;
    uint64_t checkpoint_every;
    bool sort_batch;
    bool writemap;
    bool drop_caches;
    uint64_t seed;
};

struct transfer_entry {
    char id[ID_BYTES];
    uint8_t value[TRANSFER_VALUE_BYTES];
};

struct history_entry {
    uint8_t key[HISTORY_KEY_BYTES];
    uint8_t value[HISTORY_VALUE_BYTES];
};

/* What one commit writes: the transfers of R log records and their history entries. */
struct batch {
    size_t transfer_count;
    struct transfer_entry *transfers;
    struct history_entry *history; /* 2 per transfer */
};

/* The two candidates behind one interface, so that both run the same phases. */
struct store_interface {
    void *(*open)(const struct options *options);
    void (*write_batch)(void *store, const struct batch *batch);
    void (*checkpoint)(void *store); /* everything committed so far reaches the disk */
    bool (*get_transfer)(void *store, const char *id, uint8_t *value_out);
    unsigned (*scan_history)(void *store, const uint8_t *first_key, unsigned limit);
    void (*report)(void *store, FILE *out); /* store-specific JSON fields, each ",\"k\":v" */
    void (*close)(void *store);
};

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "index_spike: %s: %s\n", what, detail);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* splitmix64's finalizer: ids and workload choices are functions of (seed, index), so the
 * lookup phases can regenerate any ingested id without keeping them in memory. */
static uint64_t mix64(uint64_t value)
{
    value += UINT64_C(0x9e3779b97f4a7c15);
    value = (value ^ (value >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    value = (value ^ (value >> 27)) * UINT64_C(0x94d049bb133111eb);
    return value ^ (value >> 31);
}

static uint64_t random_next(uint64_t *state)
{
    *state += 1;
    return mix64(*state);
}

static void format_hex(char *out, uint64_t value, unsigned digits)
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = digits; i > 0; i--) {
        out[i - 1] = hex[value & 15];
        value >>= 4;
    }
}

/* The id a client would send for transfer number `index`: a UUIDv4 as 36 characters. */
static void transfer_id(uint64_t seed, uint64_t index, char *out)
{
    uint64_t high = mix64(seed ^ (index * 2));
    uint64_t low = mix64(seed ^ (index * 2 + 1));
    high = (high & ~UINT64_C(0xf000)) | UINT64_C(0x4000);     /* version 4 */
    low = (low & ~(UINT64_C(3) << 62)) | (UINT64_C(2) << 62); /* RFC 4122 variant */
    format_hex(out, high >> 32, 8);
    out[8] = '-';
    format_hex(out + 9, (high >> 16) & 0xffff, 4);
    out[13] = '-';
    format_hex(out + 14, high & 0xffff, 4);
    out[18] = '-';
    format_hex(out + 19, low >> 48, 4);
    out[23] = '-';
    format_hex(out + 24, low & UINT64_C(0xffffffffffff), 12);
}

static void put_u32_big_endian(uint8_t *out, uint32_t value)
{
    for (int i = 3; i >= 0; i--, value >>= 8)
        out[i] = (uint8_t)value;
}

static void put_u64_big_endian(uint8_t *out, uint64_t value)
{
    for (int i = 7; i >= 0; i--, value >>= 8)
        out[i] = (uint8_t)value;
}

static void history_key(uint8_t *out, uint32_t account, uint64_t seq)
{
    put_u32_big_endian(out, account);
    put_u64_big_endian(out + 4, seq);
}

/* A packed transfer record: seq, timestamp, from, to, amount (128-bit), state, code, ledger,
 * user data; a history entry: the balance after it, the signed amount, the other account. */
static void fill_transfer(struct transfer_entry *entry, struct history_entry *history, uint64_t seq,
                          uint32_t from, uint32_t to, uint64_t amount)
{
    uint64_t timestamp_ns = UINT64_C(1764000000000000000) + seq * 1000;
    memset(entry->value, 0, sizeof entry->value);
    memcpy(entry->value, &seq, 8);
    memcpy(entry->value + 8, &timestamp_ns, 8);
    memcpy(entry->value + 16, &from, 4);
    memcpy(entry->value + 20, &to, 4);
    memcpy(entry->value + 24, &amount, 8);
    entry->value[40] = 1; /* state: posted */
    entry->value[44] = 1; /* code */
    for (int side = 0; side < 2; side++) {
        struct history_entry *item = &history[side];
        uint32_t account = side == 0 ? from : to;
        uint64_t balance = amount * (seq % 1000 + 1);
        history_key(item->key, account, seq);
        memset(item->value, 0, sizeof item->value);
        memcpy(item->value, &balance, 8);
        memcpy(item->value + 16, &amount, 8);
        item->value[31] = side == 0 ? 0xff : 0; /* sign of the amount */
        memcpy(item->value + 32, side == 0 ? &to : &from, 4);
    }
}

static int compare_transfers(const void *left, const void *right)
{
    return memcmp(((const struct transfer_entry *)left)->id,
                  ((const struct transfer_entry *)right)->id, ID_BYTES);
}

static int compare_history(const void *left, const void *right)
{
    return memcmp(((const struct history_entry *)left)->key,
                  ((const struct history_entry *)right)->key, HISTORY_KEY_BYTES);
}

/* Transfers first_index .. first_index+count-1 (seq = index + 1). `hot` debits account 0 every
 * time; otherwise from and to are two different uniform accounts. */
static void batch_fill(struct batch *batch, const struct options *options, uint64_t first_index,
                       size_t count, uint64_t *random_state)
{
    batch->transfer_count = count;
    for (size_t i = 0; i < count; i++) {
        uint64_t index = first_index + i;
        uint32_t from =
            options->hot ? 0 : (uint32_t)(random_next(random_state) % options->accounts);
        uint32_t to = from;
        while (to == from)
            to = (uint32_t)(random_next(random_state) % options->accounts);
        transfer_id(options->seed, index, batch->transfers[i].id);
        fill_transfer(&batch->transfers[i], &batch->history[2 * i], index + 1, from, to,
                      random_next(random_state) % 100000 + 1);
    }
    if (options->sort_batch) {
        qsort(batch->transfers, count, sizeof batch->transfers[0], compare_transfers);
        qsort(batch->history, 2 * count, sizeof batch->history[0], compare_history);
    }
}

/* ---- LMDB ---- */

struct lmdb_store {
    MDB_env *env;
    MDB_dbi transfers;
    MDB_dbi history;
    MDB_txn *read_txn; /* one read transaction for a whole lookup phase */
};

static void lmdb_check(int rc, const char *what)
{
    if (rc != MDB_SUCCESS)
        die(what, mdb_strerror(rc));
}

/* No sync per commit: the index is rebuilt from the log, so a commit only has to reach the
 * page cache; lmdb_checkpoint makes it durable. MDB_NORDAHEAD: lookups are random. */
static void *lmdb_open(const struct options *options)
{
    struct lmdb_store *store = calloc(1, sizeof *store);
    if (store == NULL)
        die("calloc", strerror(errno));
    unsigned flags = MDB_NOSYNC | MDB_NOMETASYNC | MDB_NORDAHEAD;
    if (options->writemap)
        flags |= MDB_WRITEMAP | MDB_MAPASYNC;
    size_t map_size = (size_t)options->transfers * 1024 + ((size_t)1 << 30);
    lmdb_check(mdb_env_create(&store->env), "mdb_env_create");
    lmdb_check(mdb_env_set_maxdbs(store->env, 2), "mdb_env_set_maxdbs");
    lmdb_check(mdb_env_set_mapsize(store->env, map_size), "mdb_env_set_mapsize");
    lmdb_check(mdb_env_open(store->env, options->dir, flags, 0644), "mdb_env_open");
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(store->env, NULL, 0, &txn), "mdb_txn_begin");
    lmdb_check(mdb_dbi_open(txn, "transfers", MDB_CREATE, &store->transfers), "mdb_dbi_open");
    lmdb_check(mdb_dbi_open(txn, "history", MDB_CREATE, &store->history), "mdb_dbi_open");
    lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    return store;
}

static void lmdb_write_batch(void *opaque, const struct batch *batch)
{
    struct lmdb_store *store = opaque;
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(store->env, NULL, 0, &txn), "mdb_txn_begin");
    for (size_t i = 0; i < batch->transfer_count; i++) {
        MDB_val key = {ID_BYTES, (void *)batch->transfers[i].id};
        MDB_val value = {TRANSFER_VALUE_BYTES, (void *)batch->transfers[i].value};
        lmdb_check(mdb_put(txn, store->transfers, &key, &value, 0), "mdb_put transfer");
    }
    for (size_t i = 0; i < 2 * batch->transfer_count; i++) {
        MDB_val key = {HISTORY_KEY_BYTES, (void *)batch->history[i].key};
        MDB_val value = {HISTORY_VALUE_BYTES, (void *)batch->history[i].value};
        lmdb_check(mdb_put(txn, store->history, &key, &value, 0), "mdb_put history");
    }
    lmdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
}

static void lmdb_checkpoint(void *opaque)
{
    struct lmdb_store *store = opaque;
    lmdb_check(mdb_env_sync(store->env, 1), "mdb_env_sync");
}

static MDB_txn *lmdb_read_txn(struct lmdb_store *store)
{
    if (store->read_txn == NULL)
        lmdb_check(mdb_txn_begin(store->env, NULL, MDB_RDONLY, &store->read_txn),
                   "mdb_txn_begin read");
    return store->read_txn;
}

static bool lmdb_get_transfer(void *opaque, const char *id, uint8_t *value_out)
{
    struct lmdb_store *store = opaque;
    MDB_val key = {ID_BYTES, (void *)id};
    MDB_val value;
    int rc = mdb_get(lmdb_read_txn(store), store->transfers, &key, &value);
    if (rc == MDB_NOTFOUND)
        return false;
    lmdb_check(rc, "mdb_get");
    memcpy(value_out, value.mv_data, TRANSFER_VALUE_BYTES);
    return true;
}

static unsigned lmdb_scan_history(void *opaque, const uint8_t *first_key, unsigned limit)
{
    struct lmdb_store *store = opaque;
    MDB_cursor *cursor;
    lmdb_check(mdb_cursor_open(lmdb_read_txn(store), store->history, &cursor), "cursor_open");
    MDB_val key = {HISTORY_KEY_BYTES, (void *)first_key};
    MDB_val value;
    unsigned found = 0;
    int rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && found < limit && memcmp(key.mv_data, first_key, 4) == 0) {
        found++;
        rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        lmdb_check(rc, "mdb_cursor_get");
    mdb_cursor_close(cursor);
    return found;
}

static void lmdb_report(void *opaque, FILE *out)
{
    struct lmdb_store *store = opaque;
    MDB_envinfo info;
    MDB_stat stat;
    lmdb_check(mdb_env_info(store->env, &info), "mdb_env_info");
    lmdb_check(mdb_env_stat(store->env, &stat), "mdb_env_stat");
    fprintf(out, ",\"lmdb_pages_used\":%zu,\"lmdb_page_size\":%u", info.me_last_pgno + 1,
            stat.ms_psize);
}

static void lmdb_close(void *opaque)
{
    struct lmdb_store *store = opaque;
    if (store->read_txn != NULL)
        mdb_txn_abort(store->read_txn);
    mdb_dbi_close(store->env, store->transfers);
    mdb_dbi_close(store->env, store->history);
    mdb_env_close(store->env);
    free(store);
}

static const struct store_interface lmdb_interface = {
    lmdb_open,         lmdb_write_batch, lmdb_checkpoint, lmdb_get_transfer,
    lmdb_scan_history, lmdb_report,      lmdb_close,
};

/* ---- RocksDB ---- */

enum { FAMILY_DEFAULT, FAMILY_TRANSFERS, FAMILY_HISTORY, FAMILY_COUNT };

struct rocksdb_store {
    rocksdb_t *db;
    rocksdb_options_t *options[FAMILY_COUNT];
    rocksdb_block_based_table_options_t *tables[FAMILY_COUNT];
    rocksdb_column_family_handle_t *families[FAMILY_COUNT];
    rocksdb_cache_t *block_cache;
    rocksdb_writeoptions_t *write_options;
    rocksdb_readoptions_t *read_options;
    rocksdb_flushoptions_t *flush_options;
    rocksdb_writebatch_t *write_batch;
};

static void rocksdb_check(char *error, const char *what)
{
    if (error != NULL)
        die(what, error);
}

/* Options of one column family: the transfers carry a bloom filter (10 bits per key, ~1%
 * false positives) so that an absent id rarely reads a data block; history is only scanned. */
static rocksdb_options_t *rocksdb_family_options(struct rocksdb_store *store, int family)
{
    rocksdb_options_t *options = rocksdb_options_create();
    rocksdb_block_based_table_options_t *table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(table, store->block_cache);
    if (family == FAMILY_TRANSFERS)
        rocksdb_block_based_options_set_filter_policy(table,
                                                      rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(options, table);
    /* Two cores: at most two background jobs (one flush, one compaction) beside the writer. */
    rocksdb_options_increase_parallelism(options, 2);
    rocksdb_options_set_max_background_jobs(options, 2);
    rocksdb_options_set_create_if_missing(options, 1);
    rocksdb_options_set_create_missing_column_families(options, 1);
    rocksdb_options_set_write_buffer_size(options, 64 << 20);
    rocksdb_options_set_max_write_buffer_number(options, 3);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(options, 1);
    rocksdb_options_set_compression(options, rocksdb_lz4_compression);
    rocksdb_options_set_max_open_files(options, -1);
    rocksdb_options_set_bytes_per_sync(options, 1 << 20);
    store->tables[family] = table;
    store->options[family] = options;
    return options;
}

static void *rocksdb_store_open(const struct options *options)
{
    struct rocksdb_store *store = calloc(1, sizeof *store);
    if (store == NULL)
        die("calloc", strerror(errno));
    store->block_cache = rocksdb_cache_create_lru(256 << 20);
    const char *names[FAMILY_COUNT] = {"default", "transfers", "history"};
    for (int family = 0; family < FAMILY_COUNT; family++)
        rocksdb_family_options(store, family);
    char *error = NULL;
    store->db = rocksdb_open_column_families(
        store->options[FAMILY_DEFAULT], options->dir, FAMILY_COUNT, names,
        (const rocksdb_options_t *const *)store->options, store->families, &error);
    rocksdb_check(error, "rocksdb_open");
    /* No write-ahead log of its own: coffer's log is the truth; a checkpoint flushes. */
    store->write_options = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(store->write_options, 1);
    store->read_options = rocksdb_readoptions_create();
    store->flush_options = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(store->flush_options, 1);
    store->write_batch = rocksdb_writebatch_create();
    return store;
}

static void rocksdb_store_write_batch(void *opaque, const struct batch *batch)
{
    struct rocksdb_store *store = opaque;
    rocksdb_writebatch_t *write = store->write_batch;
    rocksdb_writebatch_clear(write);
    for (size_t i = 0; i < batch->transfer_count; i++)
        rocksdb_writebatch_put_cf(write, store->families[FAMILY_TRANSFERS], batch->transfers[i].id,
                                  ID_BYTES, (const char *)batch->transfers[i].value,
                                  TRANSFER_VALUE_BYTES);
    for (size_t i = 0; i < 2 * batch->transfer_count; i++)
        rocksdb_writebatch_put_cf(write, store->families[FAMILY_HISTORY],
                                  (const char *)batch->history[i].key, HISTORY_KEY_BYTES,
                                  (const char *)batch->history[i].value, HISTORY_VALUE_BYTES);
    char *error = NULL;
    rocksdb_write(store->db, store->write_options, write, &error);
    rocksdb_check(error, "rocksdb_write");
}

static void rocksdb_store_checkpoint(void *opaque)
{
    struct rocksdb_store *store = opaque;
    for (int family = FAMILY_TRANSFERS; family < FAMILY_COUNT; family++) {
        char *error = NULL;
        rocksdb_flush_cf(store->db, store->flush_options, store->families[family], &error);
        rocksdb_check(error, "rocksdb_flush_cf");
    }
}

static bool rocksdb_store_get_transfer(void *opaque, const char *id, uint8_t *value_out)
{
    struct rocksdb_store *store = opaque;
    char *error = NULL;
    rocksdb_pinnableslice_t *slice = rocksdb_get_pinned_cf(
        store->db, store->read_options, store->families[FAMILY_TRANSFERS], id, ID_BYTES, &error);
    rocksdb_check(error, "rocksdb_get");
    if (slice == NULL)
        return false;
    size_t length;
    const char *value = rocksdb_pinnableslice_value(slice, &length);
    if (length != TRANSFER_VALUE_BYTES)
        die("rocksdb_get", "value of the wrong length");
    memcpy(value_out, value, TRANSFER_VALUE_BYTES);
    rocksdb_pinnableslice_destroy(slice);
    return true;
}

/* One iterator per scan, bounded above by the next account, as a history page would do. */
static unsigned rocksdb_store_scan_history(void *opaque, const uint8_t *first_key, unsigned limit)
{
    struct rocksdb_store *store = opaque;
    uint8_t upper_bound[4];
    uint32_t account = (uint32_t)first_key[0] << 24 | (uint32_t)first_key[1] << 16 |
                       (uint32_t)first_key[2] << 8 | first_key[3];
    put_u32_big_endian(upper_bound, account + 1);
    rocksdb_readoptions_t *read_options = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_upper_bound(read_options, (const char *)upper_bound, 4);
    rocksdb_iterator_t *iterator =
        rocksdb_create_iterator_cf(store->db, read_options, store->families[FAMILY_HISTORY]);
    unsigned found = 0;
    rocksdb_iter_seek(iterator, (const char *)first_key, HISTORY_KEY_BYTES);
    while (found < limit && rocksdb_iter_valid(iterator)) {
        size_t length;
        (void)rocksdb_iter_value(iterator, &length);
        found++;
        rocksdb_iter_next(iterator);
    }
    char *error = NULL;
    rocksdb_iter_get_error(iterator, &error);
    rocksdb_check(error, "rocksdb_iter");
    rocksdb_iter_destroy(iterator);
    rocksdb_readoptions_destroy(read_options);
    return found;
}

static void rocksdb_report_property(struct rocksdb_store *store, FILE *out, const char *property,
                                    const char *field)
{
    uint64_t total = 0;
    for (int family = FAMILY_TRANSFERS; family < FAMILY_COUNT; family++) {
        char *value = rocksdb_property_value_cf(store->db, store->families[family], property);
        if (value != NULL)
            total += strtoull(value, NULL, 10);
        free(value);
    }
    fprintf(out, ",\"%s\":%" PRIu64, field, total);
}

static void rocksdb_store_report(void *opaque, FILE *out)
{
    struct rocksdb_store *store = opaque;
    rocksdb_report_property(store, out, "rocksdb.estimate-pending-compaction-bytes",
                            "rocksdb_pending_compaction_bytes");
    rocksdb_report_property(store, out, "rocksdb.num-running-compactions",
                            "rocksdb_running_compactions");
    rocksdb_report_property(store, out, "rocksdb.estimate-table-readers-mem",
                            "rocksdb_table_readers_bytes");
}

static void rocksdb_store_close(void *opaque)
{
    struct rocksdb_store *store = opaque;
    rocksdb_writebatch_destroy(store->write_batch);
    for (int family = 0; family < FAMILY_COUNT; family++)
        rocksdb_column_family_handle_destroy(store->families[family]);
    rocksdb_close(store->db);
    for (int family = 0; family < FAMILY_COUNT; family++) {
        rocksdb_options_destroy(store->options[family]);
        rocksdb_block_based_options_destroy(store->tables[family]);
    }
    rocksdb_cache_destroy(store->block_cache);
    rocksdb_writeoptions_destroy(store->write_options);
    rocksdb_readoptions_destroy(store->read_options);
    rocksdb_flushoptions_destroy(store->flush_options);
    free(store);
}

static const struct store_interface rocksdb_interface = {
    rocksdb_store_open,         rocksdb_store_write_batch,  rocksdb_store_checkpoint,
    rocksdb_store_get_transfer, rocksdb_store_scan_history, rocksdb_store_report,
    rocksdb_store_close,
};

/* ---- measurements ---- */

struct ingest_result {
    double seconds;
    double tenth_rates[MAX_TENTHS]; /* transfers/s within each tenth of the run */
    unsigned checkpoints;
    double checkpoint_ms_median;
    double checkpoint_ms_max;
    double checkpoint_seconds_total;
};

struct latency_summary {
    double p50_us;
    double p99_us;
    double mean_entries; /* scans only: entries returned per scan */
};

static int compare_u64(const void *left, const void *right)
{
    uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
    return a < b ? -1 : a > b;
}

static double percentile_us(uint64_t *latencies_ns, size_t count, unsigned percent)
{
    qsort(latencies_ns, count, sizeof latencies_ns[0], compare_u64);
    return (double)latencies_ns[count * percent / 100] / 1000.0;
}

static void record_checkpoint(const struct store_interface *interface, void *store,
                              uint64_t *durations_ns, struct ingest_result *result)
{
    uint64_t started = now_ns();
    interface->checkpoint(store);
    durations_ns[result->checkpoints++] = now_ns() - started;
}

static void summarize_checkpoints(uint64_t *durations_ns, struct ingest_result *result)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < result->checkpoints; i++)
        total += durations_ns[i];
    result->checkpoint_seconds_total = (double)total / 1e9;
    qsort(durations_ns, result->checkpoints, sizeof durations_ns[0], compare_u64);
    result->checkpoint_ms_median = (double)durations_ns[result->checkpoints / 2] / 1e6;
    result->checkpoint_ms_max = (double)durations_ns[result->checkpoints - 1] / 1e6;
}

/* The index writer's loop: fill a commit group from the "log", write it in one transaction,
 * checkpoint every `checkpoint_every` transfers and at the end. The checkpoints are inside the
 * measured time because the real writer pays for them too. */
static void ingest(const struct store_interface *interface, void *store,
                   const struct options *options, struct ingest_result *result)
{
    size_t group = (size_t)options->records_per_commit * EVENTS_PER_RECORD;
    struct batch batch = {0, calloc(group, sizeof(struct transfer_entry)),
                          calloc(2 * group, sizeof(struct history_entry))};
    uint64_t *checkpoint_ns = calloc(options->transfers / options->checkpoint_every + 2, 8);
    if (batch.transfers == NULL || batch.history == NULL || checkpoint_ns == NULL)
        die("calloc", strerror(errno));
    uint64_t random_state = options->seed, done = 0, since_checkpoint = 0;
    uint64_t started = now_ns(), tenth_started = started, tenth_first = 0;
    unsigned tenth = 0;
    while (done < options->transfers) {
        size_t count = options->transfers - done < group ? options->transfers - done : group;
        batch_fill(&batch, options, done, count, &random_state);
        interface->write_batch(store, &batch);
        done += count;
        since_checkpoint += count;
        if (since_checkpoint >= options->checkpoint_every || done == options->transfers) {
            record_checkpoint(interface, store, checkpoint_ns, result);
            since_checkpoint = 0;
        }
        if (done >= options->transfers * (tenth + 1) / MAX_TENTHS) {
            uint64_t now = now_ns();
            result->tenth_rates[tenth] = (double)(done - tenth_first) * 1e9 / (now - tenth_started);
            while (tenth < MAX_TENTHS && done >= options->transfers * (tenth + 1) / MAX_TENTHS)
                tenth++;
            tenth_started = now;
            tenth_first = done;
        }
    }
    result->seconds = (double)(now_ns() - started) / 1e9;
    summarize_checkpoints(checkpoint_ns, result);
    free(checkpoint_ns);
    free(batch.transfers);
    free(batch.history);
}

/* Point lookups of random ids: ingested ones (each must come back with its own seq) or ids
 * never written (each must be absent). */
static struct latency_summary measure_lookups(const struct store_interface *interface, void *store,
                                              const struct options *options, size_t count,
                                              bool absent, uint64_t *random_state)
{
    uint64_t *latencies_ns = malloc(count * sizeof *latencies_ns);
    if (latencies_ns == NULL)
        die("malloc", strerror(errno));
    for (size_t i = 0; i < count; i++) {
        uint64_t index = random_next(random_state) % options->transfers;
        char id[ID_BYTES];
        uint8_t value[TRANSFER_VALUE_BYTES];
        transfer_id(absent ? options->seed ^ ABSENT_ID_SALT : options->seed, index, id);
        uint64_t started = now_ns();
        bool found = interface->get_transfer(store, id, value);
        latencies_ns[i] = now_ns() - started;
        uint64_t seq;
        memcpy(&seq, value, 8);
        if (found == absent || (found && seq != index + 1))
            die("lookup", absent ? "an absent id was found" : "an ingested id is wrong");
    }
    struct latency_summary summary = {percentile_us(latencies_ns, count, 50),
                                      percentile_us(latencies_ns, count, 99), 0};
    free(latencies_ns);
    return summary;
}

/* A history page: the first 100 entries of a random account. */
static struct latency_summary measure_scans(const struct store_interface *interface, void *store,
                                            const struct options *options, size_t count,
                                            uint64_t *random_state)
{
    uint64_t *latencies_ns = malloc(count * sizeof *latencies_ns);
    if (latencies_ns == NULL)
        die("malloc", strerror(errno));
    uint64_t entries = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t first_key[HISTORY_KEY_BYTES];
        history_key(first_key, (uint32_t)(random_next(random_state) % options->accounts), 0);
        uint64_t started = now_ns();
        entries += interface->scan_history(store, first_key, HISTORY_PAGE_ENTRIES);
        latencies_ns[i] = now_ns() - started;
    }
    struct latency_summary summary = {percentile_us(latencies_ns, count, 50),
                                      percentile_us(latencies_ns, count, 99),
                                      (double)entries / (double)count};
    free(latencies_ns);
    return summary;
}

/* ---- the machine ---- */

/* Empties the page cache of the whole machine (root only); returns false when not allowed. */
static bool drop_page_cache(const struct options *options)
{
    if (!options->drop_caches)
        return false;
    sync();
    FILE *control = fopen("/proc/sys/vm/drop_caches", "w");
    if (control == NULL)
        return false;
    bool dropped = fputs("3\n", control) >= 0;
    return fclose(control) == 0 && dropped;
}

/* Calls `visit` on every regular file of the store's directory (both stores keep it flat). */
static void for_each_file(const char *dir, void (*visit)(const char *path, void *context),
                          void *context)
{
    DIR *listing = opendir(dir);
    if (listing == NULL)
        die(dir, strerror(errno));
    struct dirent *entry;
    while ((entry = readdir(listing)) != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        struct stat status;
        if (stat(path, &status) == 0 && S_ISREG(status.st_mode))
            visit(path, context);
    }
    closedir(listing);
}

static void add_allocated_bytes(const char *path, void *context)
{
    struct stat status;
    if (stat(path, &status) == 0)
        *(uint64_t *)context += (uint64_t)status.st_blocks * 512;
}

/* Reads a file through so that it sits in the page cache: the "warm" phases. */
static void read_through(const char *path, void *context)
{
    static char buffer[1 << 20];
    (void)context;
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return;
    while (fread(buffer, 1, sizeof buffer, file) == sizeof buffer)
        continue;
    fclose(file);
}

/* Bytes this process (all its threads) caused to be written to storage, and its CPU seconds:
 * on a shared machine these vary less than the wall-clock rate does. */
static uint64_t storage_write_bytes(void)
{
    FILE *io = fopen("/proc/self/io", "r");
    char line[256];
    unsigned long long bytes = 0;
    while (io != NULL && fgets(line, sizeof line, io) != NULL)
        if (sscanf(line, "write_bytes: %llu", &bytes) == 1)
            break;
    if (io != NULL)
        fclose(io);
    return bytes;
}

static double cpu_seconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + (double)usage.ru_stime.tv_sec +
           (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static double load_average(void)
{
    double load = -1;
    FILE *file = fopen("/proc/loadavg", "r");
    if (file != NULL && fscanf(file, "%lf", &load) != 1)
        load = -1;
    if (file != NULL)
        fclose(file);
    return load;
}

static uint64_t disk_bytes(const char *dir)
{
    uint64_t total = 0;
    for_each_file(dir, add_allocated_bytes, &total);
    return total;
}

/* VmRSS, RssAnon (heap: memtables, block cache) and RssFile (LMDB's map) in bytes. */
static void resident_bytes(uint64_t *total, uint64_t *anonymous, uint64_t *file_backed)
{
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    *total = *anonymous = *file_backed = 0;
    while (status != NULL && fgets(line, sizeof line, status) != NULL) {
        unsigned long long kilobytes;
        if (sscanf(line, "VmRSS: %llu", &kilobytes) == 1)
            *total = kilobytes * 1024;
        else if (sscanf(line, "RssAnon: %llu", &kilobytes) == 1)
            *anonymous = kilobytes * 1024;
        else if (sscanf(line, "RssFile: %llu", &kilobytes) == 1)
            *file_backed = kilobytes * 1024;
    }
    if (status != NULL)
        fclose(status);
}

/* ---- the run ---- */

struct read_results {
    bool caches_dropped;
    double reopen_ms; /* the last cold reopen: open after the page cache was emptied */
    struct latency_summary cold_present, cold_absent, cold_scans;
    struct latency_summary warm_present, warm_absent, warm_scans;
};

static void *reopen_cold(const struct store_interface *interface, void *store,
                         const struct options *options, struct read_results *results)
{
    interface->close(store);
    results->caches_dropped = drop_page_cache(options);
    uint64_t started = now_ns();
    store = interface->open(options);
    results->reopen_ms = (double)(now_ns() - started) / 1e6;
    return store;
}

/* Each cold phase starts from a closed store and an empty page cache; the warm phases follow
 * with every file of the store read once into the page cache. */
static void *measure_reads(const struct store_interface *interface, void *store,
                           const struct options *options, struct read_results *results)
{
    uint64_t random_state = options->seed ^ UINT64_C(0xabcdef);
    store = reopen_cold(interface, store, options, results);
    results->cold_present =
        measure_lookups(interface, store, options, COLD_LOOKUPS, false, &random_state);
    store = reopen_cold(interface, store, options, results);
    results->cold_absent =
        measure_lookups(interface, store, options, COLD_LOOKUPS, true, &random_state);
    store = reopen_cold(interface, store, options, results);
    results->cold_scans = measure_scans(interface, store, options, COLD_SCANS, &random_state);
    for_each_file(options->dir, read_through, NULL);
    results->warm_present =
        measure_lookups(interface, store, options, WARM_LOOKUPS, false, &random_state);
    results->warm_absent =
        measure_lookups(interface, store, options, WARM_LOOKUPS, true, &random_state);
    results->warm_scans = measure_scans(interface, store, options, WARM_SCANS, &random_state);
    return store;
}

static void print_latency(FILE *out, const char *name, const struct latency_summary *summary)
{
    fprintf(out, ",\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f", name, summary->p50_us, name,
            summary->p99_us);
}

static void print_ingest(FILE *out, const struct options *options,
                         const struct ingest_result *ingested)
{
    fprintf(out,
            "{\"store\":\"%s\",\"workload\":\"%s\",\"transfers\":%" PRIu64
            ",\"accounts\":%u,\"records_per_commit\":%u,\"sorted\":%s,\"writemap\":%s"
            ",\"seconds\":%.2f,\"transfers_per_second\":%.0f,\"last_tenth_per_second\":%.0f"
            ",\"tenths\":[",
            options->store_name, options->hot ? "hot" : "uniform", options->transfers,
            options->accounts, options->records_per_commit, options->sort_batch ? "true" : "false",
            options->writemap ? "true" : "false", ingested->seconds,
            (double)options->transfers / ingested->seconds, ingested->tenth_rates[MAX_TENTHS - 1]);
    for (int tenth = 0; tenth < MAX_TENTHS; tenth++)
        fprintf(out, "%s%.0f", tenth ? "," : "", ingested->tenth_rates[tenth]);
    fprintf(out,
            "],\"checkpoint_every\":%" PRIu64 ",\"checkpoints\":%u,\"checkpoint_ms_median\":%.1f"
            ",\"checkpoint_ms_max\":%.1f,\"checkpoint_seconds_total\":%.2f",
            options->checkpoint_every, ingested->checkpoints, ingested->checkpoint_ms_median,
            ingested->checkpoint_ms_max, ingested->checkpoint_seconds_total);
}

static void print_reads(FILE *out, const struct read_results *reads)
{
    fprintf(out, ",\"caches_dropped\":%s,\"reopen_ms\":%.1f",
            reads->caches_dropped ? "true" : "false", reads->reopen_ms);
    print_latency(out, "cold_present", &reads->cold_present);
    print_latency(out, "cold_absent", &reads->cold_absent);
    print_latency(out, "cold_scan", &reads->cold_scans);
    print_latency(out, "warm_present", &reads->warm_present);
    print_latency(out, "warm_absent", &reads->warm_absent);
    print_latency(out, "warm_scan", &reads->warm_scans);
    fprintf(out, ",\"scan_entries_mean\":%.1f}\n", reads->warm_scans.mean_entries);
}

static uint64_t parse_count(const char *text, const char *name)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value == 0)
        die(name, "expects a positive integer");
    return value;
}

static struct options parse_options(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"store", required_argument, NULL, 's'},
        {"dir", required_argument, NULL, 'd'},
        {"transfers", required_argument, NULL, 'n'},
        {"accounts", required_argument, NULL, 'a'},
        {"workload", required_argument, NULL, 'w'},
        {"records-per-commit", required_argument, NULL, 'r'},
        {"checkpoint-every", required_argument, NULL, 'c'},
        {"seed", required_argument, NULL, 'e'},
        {"sort", no_argument, NULL, 'o'},
        {"writemap", no_argument, NULL, 'm'},
        {"no-drop-caches", no_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    struct options options = {NULL,    NULL,  5000000, 100000, false, 1,
                              1000000, false, false,   true,   1};
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 's':
            options.store_name = optarg;
            break;
        case 'd':
            options.dir = optarg;
            break;
        case 'n':
            options.transfers = parse_count(optarg, "--transfers");
            break;
        case 'a':
            options.accounts = (uint32_t)parse_count(optarg, "--accounts");
            break;
        case 'w':
            options.hot = strcmp(optarg, "hot") == 0;
            break;
        case 'r':
            options.records_per_commit = (unsigned)parse_count(optarg, "--records-per-commit");
            break;
        case 'c':
            options.checkpoint_every = parse_count(optarg, "--checkpoint-every");
            break;
        case 'e':
            options.seed = parse_count(optarg, "--seed");
            break;
        case 'o':
            options.sort_batch = true;
            break;
        case 'm':
            options.writemap = true;
            break;
        case 'k':
            options.drop_caches = false;
            break;
        default:
            die("usage", "see the comment at the top of bench/spike/index_spike.c");
        }
    }
    if (options.store_name == NULL || options.dir == NULL || options.accounts < 2)
        die("usage", "--store lmdb|rocksdb and --dir DIR are required; --accounts >= 2");
    return options;
}

int main(int argc, char **argv)
{
    struct options options = parse_options(argc, argv);
    const struct store_interface *interface = NULL;
    if (strcmp(options.store_name, "lmdb") == 0)
        interface = &lmdb_interface;
    else if (strcmp(options.store_name, "rocksdb") == 0)
        interface = &rocksdb_interface;
    else
        die("--store", "lmdb or rocksdb");
    if (mkdir(options.dir, 0755) != 0 && errno != EEXIST)
        die(options.dir, strerror(errno));
    double load_before = load_average();
    void *store = interface->open(&options);
    struct ingest_result ingested = {0};
    ingest(interface, store, &options, &ingested);
    double cpu = cpu_seconds();
    uint64_t written = storage_write_bytes();
    uint64_t rss, rss_anonymous, rss_file;
    resident_bytes(&rss, &rss_anonymous, &rss_file);
    uint64_t disk = disk_bytes(options.dir);
    print_ingest(stdout, &options, &ingested);
    printf(",\"rss_bytes\":%" PRIu64 ",\"rss_anonymous_bytes\":%" PRIu64
           ",\"rss_file_bytes\":%" PRIu64 ",\"disk_bytes\":%" PRIu64
           ",\"disk_bytes_per_transfer\":%.1f,\"cpu_us_per_transfer\":%.2f"
           ",\"written_bytes_per_transfer\":%.0f,\"load_before\":%.1f,\"load_after\":%.1f",
           rss, rss_anonymous, rss_file, disk, (double)disk / (double)options.transfers,
           cpu * 1e6 / (double)options.transfers, (double)written / (double)options.transfers,
           load_before, load_average());
    interface->report(store, stdout);
    struct read_results reads = {0};
    store = measure_reads(interface, store, &options, &reads);
    print_reads(stdout, &reads);
    interface->close(store);
    return 0;
}
