/*
 * checkpoint.h — what the ledger knows it acknowledged, kept beside the log so that recovery can
 * tell acknowledged records that went missing from a torn tail that was never acknowledged.
 *
 * DIR/checkpoint holds the newest acknowledged position (seq, timestamp, chain hash) in two
 * 128-byte slots written in turn in place (each with a counter and a BLAKE2b check, so a torn
 * write leaves the other intact); the log thread advances it at most once a second, after the
 * replies of that round, and at a clean close. DIR/manifest lists the segments the ledger has:
 * for each sealed one its first and last seq and its length, for the open one its first seq.
 * It is rewritten (temp file, sync, rename, sync the directory) when a segment is sealed and
 * at every open. Text, one line per segment, then a line with the hash of the lines before:
 *   coffer-manifest 1
 *   log-0000000001.cfl first 1 last 17 bytes 1942
 *   log-0000000002.cfl first 18 open
 *   blake2b <64 hex digits>
 */
#ifndef COFFER_LOG_CHECKPOINT_H
#define COFFER_LOG_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log/wal.h"

#define CHECKPOINT_INTERVAL_NS 1000000000ull /* the checkpoint trails the log by at most this */

typedef struct checkpoint {
    int fd; /* -1 when closed */
    uint64_t counter;
    wal_tip written; /* the position the file holds */
} checkpoint;

/* Reads DIR/checkpoint: COFFER_OK with *found false when there is none, or with *tip the newest
 * intact slot; STORAGE_FAILED with `error` set when the file exists but no slot is intact. */
int checkpoint_read(const char *dir, wal_tip *tip, bool *found, char *error, size_t error_size);

/* Opens (creating) DIR/checkpoint and writes `tip` into it, synced. */
int checkpoint_open(checkpoint *c, const char *dir, const wal_tip *tip);
/* Writes `tip` into the older slot; synced unless `sync` is false (fsync off). */
int checkpoint_write(checkpoint *c, const wal_tip *tip, bool sync);
void checkpoint_close(checkpoint *c);

/* Rewrites DIR/manifest from the segments now in `dir` (call it when they are known good). */
int manifest_write(const char *dir, char *error, size_t error_size);

/* Checks the segments of `dir` against DIR/manifest: every listed segment present, sealed ones
 * at their recorded length. Writes one line per problem (naming the file, its seqs and sizes)
 * into `problems` and returns how many; *found false (and 0) when there is no manifest. */
int manifest_check(const char *dir, bool *found, char *problems, size_t problems_size);

/* Checks a scanned log against the checkpoint: the log must reach the checkpoint's seq and, when
 * the scan visited the record that ends there (`covered_through`: the seq the scan started
 * after, a snapshot's), pass through it with the same hash (`hash_at_checkpoint`: the hash of
 * the visited record whose last seq is the checkpoint's, NULL when none ended there). False
 * with the problem (file, offset, seqs) written into `problem`. */
bool checkpoint_check(const char *dir, const wal_tip *checkpoint_tip, const wal_scan_result *scan,
                      uint64_t covered_through, const uint8_t *hash_at_checkpoint, char *problem,
                      size_t problem_size);

/* For coffer verify, after a read-only scan of the whole log: the manifest's problems, and
 * whether the log reaches the checkpoint. Appends one line per problem to `problems` (after
 * what it holds) and returns how many. */
int log_files_check(const char *dir, const wal_scan_result *scan, char *problems,
                    size_t problems_size);

#endif
