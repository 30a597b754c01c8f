/*
 * cursor.h — a reader of the local log that goes on where it stopped: the change feed's
 * readers each hold one, beside the log thread that appends. It reads only what the caller
 * says is durable, checks every record it hands over (its hash, and that it links to the
 * record before it), and after a jump finds its place by the records' headers alone.
 */
#ifndef COFFER_LOG_CURSOR_H
#define COFFER_LOG_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "log/record.h"
#include "log/wal.h"

typedef struct log_cursor log_cursor;

/* A cursor on the segment files of `dir`: COFFER_OK or out_of_memory. */
int log_cursor_open(const char *dir, log_cursor **out);
void log_cursor_close(log_cursor *cursor);

/*
 * Visits, in order, the records that hold seqs after `after_seq` and end at or before
 * `durable_seq` (the first one may also hold after_seq and earlier seqs: it is visited whole),
 * until `visit` returns non-zero or `max_bytes` of records were visited. A call that asks for
 * the seq where the last one stopped goes on from there without searching. Returns COFFER_OK,
 * the visitor's non-zero code, or storage_failed with the reason in `error` (a damaged record,
 * a broken chain, a missing segment: never skipped).
 */
int log_cursor_read(log_cursor *cursor, uint64_t after_seq, uint64_t durable_seq, size_t max_bytes,
                    wal_record_fn visit, void *context, char *error, size_t error_size);

#endif
