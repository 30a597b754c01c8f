/*
 * index.h — the on-disk index: every transfer's outcome by id and every history entry by
 * (account, seq), derived from the log's records alone and kept in RocksDB (DATA/index/). It is
 * written behind the writer and may lag: records are gathered in memory and each flush hands
 * them to RocksDB as one sorted table file with the meta (format, applied seq and that record's
 * hash), so the index always equals what a prefix of the log derives. RocksDB's memtable and
 * WAL are not used: the log is the truth, and after a crash the index replays the log from its
 * last flush.
 */
#ifndef COFFER_INDEX_INDEX_H
#define COFFER_INDEX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "index/filter.h"
#include "log/record.h"

/* The layout of keys and values; an index of another format is rebuilt, not read. Format 2
 * added each transfer's submitter; format 3 keeps how a hold ended under a key of its own
 * instead of rewriting the hold's transfer. */
#define INDEX_FORMAT_VERSION 3
/* The subdirectory of the data directory that holds the index. */
#define INDEX_DIRECTORY "index"

typedef struct index_db index_db;

/* Where the index stands: the last record it applied (seq and hash; 0 and zeroes when empty)
 * and the first seq of the first format-2 record it saw (0: none yet). Format-1 records carry
 * no outcomes, so the index holds nothing of the seqs before covers_from_seq. */
typedef struct index_position {
    uint64_t applied_seq;
    uint8_t applied_hash[RECORD_HASH_BYTES];
    uint64_t covers_from_seq;
    uint64_t transfers; /* transfer records written (a hold's resolution does not count) */
    uint64_t history;   /* history entries written */
} index_position;

/* A transfer as the index keeps it: what coffer_transfer_get answers, and what a replay of the
 * id needs besides (a rejection's explaining figures and field, an applied event's after-states).
 */
typedef struct index_transfer {
    coffer_transfer transfer;
    int64_t available;                         /* insufficient_balance */
    uint64_t actual_version;                   /* version_mismatch */
    char field[64];                            /* a rejection's JSON pointer, "" for none */
    coffer_account_after from_after, to_after; /* an applied event: its accounts after it */
} index_transfer;

/*
 * Opens the index at `path`: for writing (created when missing), or `read_only` (verify,
 * beside a running engine; a missing directory is then an error saying "missing").
 * COFFER_OK, out_of_memory, or storage_failed with the reason in `error` (RocksDB's message, a
 * meta of another format version, keys without a meta). *out owns the handle until index_close.
 */
int index_open(const char *path, bool read_only, index_db **out, char *error, size_t error_size);
/* The same with a block cache of `cache_bytes` (the tables' blocks, and their index and filter
 * blocks, that RocksDB keeps in memory); index_open's is INDEX_CACHE_BYTES. */
#define INDEX_CACHE_BYTES ((uint64_t)256 << 20)
int index_open_cached(const char *path, bool read_only, uint64_t cache_bytes, index_db **out,
                      char *error, size_t error_size);
/* Flushes (unless read-only) and closes. NULL is a no-op. */
void index_close(index_db *index);
/* Deletes the index directory at `path` and everything in it (a rebuild). 0 or -1 (errno). */
int index_destroy(const char *path);

/* Where the index stands after the records applied so far (in memory until the next flush). */
index_position index_position_get(const index_db *index);
/* Where the index stood at its last flush: what survives a crash. */
index_position index_position_flushed(const index_db *index);

/*
 * Applies one checked log record (bytes and header from record_check or a log cursor): its
 * transfers, its history entries and the holds it resolves are staged in memory, and written
 * with the meta in one atomic step by the next flush (or as soon as the staged records reach
 * 64 MiB). A record at or before the applied seq is skipped. COFFER_OK, out_of_memory, or
 * storage_failed with the reason in `error` (the handle then refuses further writes).
 */
int index_apply_record(index_db *index, const uint8_t *bytes, const record_header *header,
                       char *error, size_t error_size);
/* The memory the staging may take (keys and values, and the array that sorts them), which makes
 * index_apply_record flush by itself once the keys and values reach about two thirds of it:
 * 96 MiB by default; smaller under a small memory budget. */
void index_set_staging_max(index_db *index, uint64_t bytes);
/* Writes everything applied to RocksDB, durably: reads see the records flushed, not those
 * only applied. */
int index_flush(index_db *index, char *error, size_t error_size);

/*
 * Gives the index a filter to keep: it is filled with every transfer id the index holds (a scan
 * of its transfer keys, hashed by `hash`), and then each record applied adds its transfers' ids
 * as it stages them. Called on the index's writing thread right after index_open (before any
 * record is applied) and before other threads ask the filter, which must outlive the handle.
 * COFFER_OK, or storage_failed when the scan fails (an add that fails breaks the filter into
 * answering "maybe", see filter.h).
 */
int index_filter_attach(index_db *index, id_filter *filter, filter_hash_fn hash);

/* The transfer with this id: COFFER_OK, transfer_not_found, or storage_failed. */
int index_get_transfer(index_db *index, const char *id, size_t id_len, index_transfer *out);
/* Up to `limit` history entries of `account_id` with seq > after_seq, oldest first, into
 * entries; *count_out gets how many. COFFER_OK or storage_failed. */
int index_history_page(index_db *index, const char *account_id, uint64_t after_seq, size_t limit,
                       coffer_history_entry *entries, size_t *count_out);

/*
 * The newest history entry of `account_id` (`account_len` bytes) with seq <= `seq`
 * (index_history_at), or with timestamp <= `timestamp` (index_history_at_time): what a balance at
 * a past seq or time reads when memory no longer holds it. COFFER_OK, COFFER_TRANSFER_NOT_FOUND
 * when the account has no such entry, or storage_failed. An account is never both sides of one
 * seq (the core refuses same_account), so a seq has at most one entry per account; an account's
 * timestamps never decrease with its seqs, which the time lookup's binary search needs.
 */
int index_history_at(index_db *index, const char *account_id, size_t account_len, uint64_t seq,
                     coffer_history_entry *out);
int index_history_at_time(index_db *index, const char *account_id, size_t account_len,
                          uint64_t timestamp, coffer_history_entry *out);

/*
 * Checks the index against the log records given in order (every record of the log up to the
 * index's applied seq): each record's transfers, history entries and hold resolutions present
 * with the same content, and then (index_check_finish) that the index holds nothing else. The
 * first difference found goes to `error`; false then.
 */
typedef struct index_check index_check;
int index_check_begin(index_db *index, index_check **out);
bool index_check_record(index_check *check, const uint8_t *bytes, const record_header *header,
                        char *error, size_t error_size);
bool index_check_finish(index_check *check, char *error, size_t error_size);
void index_check_free(index_check *check);

/* For check.c: one raw value (COFFER_OK, transfer_not_found, storage_failed), and every key
 * with a given first byte in order, until `visit` returns non-zero. */
int index_read_value(index_db *index, const uint8_t *key, size_t key_length, uint8_t *value,
                     size_t capacity, size_t *length);
typedef int (*index_scan_fn)(void *context, const uint8_t *key, size_t key_length,
                             const uint8_t *value, size_t length);
int index_scan(index_db *index, uint8_t prefix, index_scan_fn visit, void *context);

#endif
