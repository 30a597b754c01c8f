/*
 * wal.h — the write-ahead log on disk: numbered segment files of records (log/record.h) in
 * the data directory. Appending and syncing go through an I/O seam so tests can inject write
 * and sync failures. Scanning checks every record and the hash chain, and tells a torn tail
 * (never acknowledged: truncated) from corruption (a bad record followed by good ones).
 *
 * Segment file DIR/log-NNNNNNNNNN.cfl starts with a 64-byte header:
 *   0 u8[8] "COFFERLG"   8 u32 format version   12 u32 segment number
 *  16 u64 last seq before this segment          24 u8[32] chain hash before this segment
 *  56 u8[8] the first 8 bytes of BLAKE2b-256 of bytes [0, 56)
 */
#ifndef COFFER_LOG_WAL_H
#define COFFER_LOG_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "coffer.h"
#include "log/record.h"

#define WAL_SEGMENT_HEADER_BYTES 64
#define WAL_SEGMENT_BYTES_DEFAULT (512ull << 20)

/* The I/O seam: the public coffer_io (write all bytes at an offset; fdatasync). */
typedef coffer_io wal_io;

/* The real calls (pwrite in a loop, fdatasync). */
extern const wal_io wal_io_default;

/* The position of the chain: what the next record must link to. */
typedef struct wal_tip {
    uint64_t last_seq;
    uint64_t last_timestamp;
    uint8_t hash[RECORD_HASH_BYTES];
} wal_tip;

typedef struct wal {
    char *dir;
    int dir_fd;
    int fd; /* the segment being appended to, -1 before wal_start */
    uint32_t segment;
    uint64_t offset;
    uint64_t segment_bytes_max;
    wal_io io;
    bool failed;             /* sticky: after a failed write or sync nothing more is written */
    int error;               /* errno of the failure */
    uint64_t durable_offset; /* in the current segment: where the last sync left it */
    bool cut_back;           /* after a failure: the segment was cut back to durable_offset */
} wal;

/* What a scan found. */
typedef struct wal_scan_result {
    wal_tip tip;
    uint32_t last_segment;    /* 0 when there are no segments */
    uint64_t end_offset;      /* where the last segment's valid records end */
    uint64_t truncated_bytes; /* a torn tail cut off (or, read-only, that would be) */
    uint64_t records;
    uint64_t segments;
    char error[1024]; /* corruption: names the file and offset */
} wal_scan_result;

/* Called for each record with seq > skip_through, in order. Return 0 to go on, or a COFFER
 * code to stop the scan with that code. */
typedef int (*wal_record_fn)(const uint8_t *bytes, const record_header *header, uint32_t segment,
                             uint64_t offset, void *context);

typedef struct wal_scan_options {
    uint64_t skip_through;    /* records entirely at or below this seq are checked, not visited */
    const uint8_t *skip_hash; /* the chain hash at skip_through (from a snapshot), or NULL */
    bool read_only;           /* report a torn tail without truncating it */
    bool from_start;          /* verify the whole chain rather than start near skip_through */
    void (*progress)(uint64_t done_bytes, uint64_t total_bytes, void *context);
    void *progress_context;
} wal_scan_options;

/* Scans the log of `dir`. COFFER_OK, or COFFER_STORAGE_FAILED with result->error set
 * (corruption, unreadable file), or the code a visitor returned. */
int wal_scan(const char *dir, const wal_scan_options *options, wal_record_fn visit, void *context,
             wal_scan_result *result);

/* Opens for appending after a scan: continues the last segment at end_offset (cutting a torn
 * tail after it), or creates segment 1. `io` NULL: the real calls. */
int wal_start(wal *w, const char *dir, const wal_scan_result *scan, const wal_io *io,
              uint64_t segment_bytes_max);
void wal_stop(wal *w);

/* Appends a finished record (rotating to a new segment first when this one is full). The
 * record is not durable until wal_sync. Errors are sticky (COFFER_STORAGE_FAILED). */
int wal_append(wal *w, const uint8_t *bytes, size_t length, const wal_tip *tip_before);
int wal_sync(wal *w);

/* One segment file as its header and size describe it. */
typedef struct wal_segment_info {
    uint32_t number;
    uint64_t seq_before; /* last seq before it: its records start at seq_before + 1 */
    uint64_t bytes;
    bool header_ok;
} wal_segment_info;

/* The segments of `dir` in order (malloc'ed into *out, the caller frees). COFFER_OK or
 * STORAGE_FAILED (unreadable directory, out of memory). */
int wal_segments(const char *dir, wal_segment_info **out, size_t *count);

/* Reads segment `segment`'s header (WAL_SEGMENT_HEADER_BYTES at the file's start): false
 * when it is damaged or names another segment; else the chain before the segment. */
bool wal_segment_header_decode(const uint8_t *bytes, size_t available, uint32_t segment,
                               wal_tip *before);

/* The file name of a segment: DIR/log-NNNNNNNNNN.cfl into `out`. */
void wal_segment_path(char *out, size_t size, const char *dir, uint32_t segment);

/* Fsyncs a directory (after creating or renaming files in it). */
int wal_sync_directory(int dir_fd);

#endif
