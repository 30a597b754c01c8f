/*
 * snapshot.h — full images of the store, so recovery replays only the log after them. A
 * snapshot is written to a temp file, synced, renamed into place, and the directory synced;
 * a damaged one is detected by its hash and recovery falls back to an older one or the log.
 *
 * File DIR/snapshot-SSSSSSSSSSSSSSSSSSSS.cfs (S: the chain's last seq, 20 digits), little-endian:
 *   a 4096-byte header: 0 "COFFERSN", 8 u32 format version, 12 u32 header bytes, 16 u64 tip
 *   seq, 24 u64 tip timestamp, 32 u8[32] tip hash, 64 u64 engine seq, 72 u64 engine clock,
 *   80 u64[6] table counts, 128 u64 pending holds, 136 u32[6] bytes per record, 160 u64 a
 *   fingerprint of the field lists (from version 2), 168 u64 the submitters table's count
 *   and 232 u32 its bytes per record (from version 3), 240 u64 the store's trimmed_seq
 *   (version 4); then the tables (accounts, transfers, history, expiries, holds, arena, and
 *   from version 3 submitters), each starting on a 4096-byte boundary; then the 32-byte
 *   BLAKE2b-256 of everything before it.
 * Versions 2 to 4 write every record field by field, fixed width, in the order snapshot.c
 * lists them, so a struct reordered or resized in memory is still read right (or refused when
 * a value does not fit). Version 3 adds who submitted each transfer (the submitters table and
 * a transfer's index into it); a version 2 file is still read, its transfers naming no
 * submitter (snapshot_meta.submitters_kept false: recovery takes them from the log). Version 4
 * adds the store's trimmed_seq (a snapshot of a trimmed store holds only what memory held, the
 * rest is in the index); older versions read as never trimmed (0). Version
 * 1 dumped the structs as laid out then; it is still read, through the offsets it had. The
 * arena is raw bytes: ids, metadata and store_aux records, whose layout is pinned at compile
 * time.
 */
#ifndef COFFER_LOG_SNAPSHOT_H
#define COFFER_LOG_SNAPSHOT_H

#include <stdint.h>

#include "log/wal.h"
#include "store/store.h"

typedef struct snapshot_meta {
    wal_tip tip;       /* the log record the snapshot ends with */
    uint64_t last_seq; /* the engine's seq and clock, which can be past the tip */
    uint64_t last_timestamp;
    bool submitters_kept; /* loaded: false for a format older than 3, which kept none */
} snapshot_meta;

/* Writes a snapshot of `s` into `dir`. Uses no heap and no locks, so it is safe in a child
 * process forked from a threaded parent. COFFER_OK or COFFER_STORAGE_FAILED (error set). */
int snapshot_write(const store *s, const snapshot_meta *meta, const char *dir, char *error,
                   size_t error_size);

/* Loads the newest snapshot of `dir` that is intact into an empty store (sized by its limits).
 * COFFER_OK with *found false when there is none; damaged snapshots are skipped and named in
 * `skipped`. Other codes: a snapshot larger than the limits (CAPACITY_EXCEEDED) or I/O. */
int snapshot_load_latest(store *s, const char *dir, snapshot_meta *meta, bool *found, char *skipped,
                         size_t skipped_size);

/* Whether the snapshot ending at `tip` may be loaded (its header read, its tables not yet). */
typedef bool snapshot_accept_fn(const wal_tip *tip, void *context);

/* As snapshot_load_latest, of the snapshots `accept` takes (every one when it is null): the
 * newest taken that is intact. Those it does not take are passed over, not named in
 * `skipped`. */
int snapshot_load_newest(store *s, const char *dir, snapshot_accept_fn *accept, void *context,
                         snapshot_meta *meta, bool *found, char *skipped, size_t skipped_size);

/* Loads one snapshot file (for coffer verify). */
int snapshot_load(store *s, const char *path, snapshot_meta *meta, char *error, size_t error_size);

/* Removes all but the newest `keep` snapshots (and stray temp files). */
void snapshot_prune(const char *dir, unsigned keep);

/* The tables whose records a snapshot lists field by field. */
enum snapshot_table_id {
    SNAPSHOT_ACCOUNTS = 0,
    SNAPSHOT_TRANSFERS = 1,
    SNAPSHOT_HISTORY = 2,
    SNAPSHOT_EXPIRIES = 3,
    SNAPSHOT_HOLDS = 4,
    SNAPSHOT_SUBMITTERS = 6, /* 5 is the arena, raw bytes */
};

/* Whether two in-memory records of `table` differ in any field a snapshot keeps. Padding
 * between fields is not compared: it is not state, and a record loaded from a snapshot has
 * it zeroed while one built in memory may not. */
bool snapshot_records_differ(int table, const void *left, const void *right);

#endif
