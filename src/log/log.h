/*
 * log.h — the durability pipeline behind one narrow interface: append a finished record, make
 * what was appended durable, read records from a seq, and the durable tail's seq and hash. The
 * engine's log thread calls only these. The local segment files (log/local_log.c) are the first
 * implementation; another (a PostgreSQL table) fills the same table of operations.
 */
#ifndef COFFER_LOG_LOG_H
#define COFFER_LOG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log/record.h"
#include "log/wal.h"

typedef struct log_ops {
    /* Appends one finished, checked record that continues `before` and ends at `after`. Not
     * durable until sync. Errors are sticky: after one, every call fails. */
    int (*append)(void *state, const uint8_t *bytes, size_t length, const wal_tip *before,
                  const wal_tip *after);
    /* Makes every appended record durable; the tail moves to the last of them. */
    int (*sync)(void *state);
    /* Called by the log thread after answering a round and when it wakes idle: upkeep such as
     * advancing the local checkpoint. Sets *wake_ns to how soon it wants the next call (0:
     * only after the next round). */
    int (*tick)(void *state, uint64_t now_ns, uint64_t *wake_ns);
    /* Calls `visit` for every record that ends after `after_seq` (a record holding after_seq
     * and later seqs is visited whole), in order, checking the chain to the tail. `after_hash`
     * (or NULL): the chain hash at after_seq, such as a snapshot's; the record ending there must
     * have it, so what was saved elsewhere joins the log only where the chain agrees. Returns
     * COFFER_OK, STORAGE_FAILED for a damaged or missing record (never skipped), or the code
     * `visit` stopped with. */
    int (*read_from)(void *state, uint64_t after_seq, const uint8_t *after_hash,
                     wal_record_fn visit, void *context);
    /* The durable tail: the last record's seq, timestamp and hash. */
    void (*tail)(const void *state, wal_tip *tip);
    /* A sticky failure: what failed and where, and what the log could do about it (whether
     * what was refused can come back). */
    void (*describe_failure)(const void *state, char *what, size_t what_size, char *outcome,
                             size_t outcome_size);
    /* Releases everything; `clean`: the last tail is recorded as acknowledged first. */
    void (*close)(void *state, bool clean);
    /* How many records one round (the appends before a sync) should take at most, 1 to
     * LOG_ROUND_RECORDS_MAX: the group commit lets the writer run that many batches ahead of
     * what is durable. A log whose sync is a round trip to another machine wants them deep, so
     * that requests arriving during a round all join the next; a local one, shallow, so that
     * the writer, held back, gathers them into fewer and larger batches. */
    uint32_t round_records;
} log_ops;

#define LOG_ROUND_RECORDS_MAX 64u

/* A log: the operations and their implementation's state. */
typedef struct durable_log {
    const log_ops *ops;
    void *state;
} durable_log;

static inline int log_append(durable_log *log, const uint8_t *bytes, size_t length,
                             const wal_tip *before, const wal_tip *after)
{
    return log->ops->append(log->state, bytes, length, before, after);
}

static inline int log_sync(durable_log *log)
{
    return log->ops->sync(log->state);
}

static inline int log_tick(durable_log *log, uint64_t now_ns, uint64_t *wake_ns)
{
    return log->ops->tick(log->state, now_ns, wake_ns);
}

static inline int log_read_from(durable_log *log, uint64_t after_seq, const uint8_t *after_hash,
                                wal_record_fn visit, void *context)
{
    return log->ops->read_from(log->state, after_seq, after_hash, visit, context);
}

/* The round depth of an open log; 1 when none is open or it names none. */
static inline uint32_t log_round_records(const durable_log *log)
{
    return log->ops && log->ops->round_records ? log->ops->round_records : 1;
}

static inline void log_tail(const durable_log *log, wal_tip *tip)
{
    log->ops->tail(log->state, tip);
}

static inline void log_describe_failure(const durable_log *log, char *what, size_t what_size,
                                        char *outcome, size_t outcome_size)
{
    log->ops->describe_failure(log->state, what, what_size, outcome, outcome_size);
}

/* Closes (a log never opened, ops NULL, is a no-op). */
static inline void log_close(durable_log *log, bool clean)
{
    if (log->ops)
        log->ops->close(log->state, clean);
    log->ops = 0;
    log->state = 0;
}

/* The local implementation: segment files in `dir`, continuing after a recovery `scan` (which
 * checked the files). Writes the manifest and checkpoints the scan's tip. `sync` false: the
 * checkpoint is written but not synced (fsync off). `io` NULL: the real calls. */
typedef struct local_log_options {
    const wal_io *io;
    uint64_t segment_bytes_max;
    bool sync;
    uint64_t now_ns; /* the clock the checkpoint's schedule is read on */
} local_log_options;

int local_log_open(durable_log *log, const char *dir, const wal_scan_result *scan,
                   const local_log_options *options, char *error, size_t error_size);

/* The local log opened for reading only: log_read_from and log_tail work (the tail is where the
 * last read ended); appends and syncs are refused; nothing in `dir` is written or cut, so the
 * directory may belong to a running engine. Reads DIR/checkpoint and checks DIR/manifest at
 * once (local_log_damage reports what they say). `options` NULL: no progress reports. */
typedef struct local_log_read_options {
    void (*progress)(uint64_t done_bytes, uint64_t total_bytes, void *context);
    void *progress_context;
} local_log_read_options;

int local_log_open_read(durable_log *log, const char *dir, const local_log_read_options *options);

/* What the last read of a local log found: the tail, the records and segments it read, a torn
 * tail's bytes (reported, not cut), and on failure the error naming the file and offset. A
 * recovery passes it to local_log_open to continue the log. */
const wal_scan_result *local_log_last_read(const durable_log *log);

/* Whether the checkpoint or the manifest was found beside the log (a data directory from an
 * earlier version has neither). */
bool local_log_has_files(const durable_log *log);

/* Acknowledged records missing, by the checkpoint and the manifest of a log opened for reading:
 * one line each (naming the file, its seqs and sizes) into `lines`; returns how many. Before a
 * successful read, only the problems of the two files themselves; after one, also whether the
 * log reached the checkpoint (and through the same hash, when the read passed it). */
int local_log_damage(const durable_log *log, char *lines, size_t size);

#endif
