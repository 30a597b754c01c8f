/*
 * local_log.c — the log as segment files in the data directory (log/wal.c), with the checkpoint
 * and the manifest beside them (log/checkpoint.c): the first implementation of log.h. Opened for
 * writing it owns the files; opened for reading (recovery, verify, dump) it only reads them,
 * and tells what the checkpoint and the manifest say is missing from what it read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "log/checkpoint.h"
#include "log/log.h"

typedef struct local_log {
    char *dir;
    wal wal;
    wal_tip appended; /* the last record appended */
    wal_tip durable;  /* the last record synced */
    checkpoint checkpoint;
    uint64_t checkpoint_at_ns; /* when the checkpoint last moved */
    bool sync;
    bool manifest_failed;
    bool read_only;
    /* Reading: what the last read found, and the files beside the log as they were opened. */
    wal_scan_result last_read;
    uint64_t read_after_seq;
    bool read_done;
    wal_tip checkpoint_tip; /* the acknowledged position found beside the log */
    bool checkpoint_found, manifest_found;
    bool checkpoint_reached; /* a record read ended at the checkpoint's seq */
    uint8_t hash_at_checkpoint[RECORD_HASH_BYTES];
    char files_damage[8192]; /* what the manifest and checkpoint files say, one line each */
    int files_damage_count;
    local_log_read_options read_options;
    wal_record_fn visit; /* the reader's, while a read is under way */
    void *visit_context;
} local_log;

static int local_append(void *state, const uint8_t *bytes, size_t length, const wal_tip *before,
                        const wal_tip *after)
{
    local_log *l = state;
    if (l->read_only)
        return COFFER_STORAGE_FAILED;
    COFFER_ASSERT(before->last_seq == l->appended.last_seq && after->last_seq > before->last_seq);
    uint32_t segment = l->wal.segment;
    int code = wal_append(&l->wal, bytes, length, before);
    if (code != COFFER_OK)
        return code;
    l->appended = *after;
    /* A segment was sealed (and synced): the manifest records its length and last seq. */
    char error[1024];
    if (l->wal.segment != segment && manifest_write(l->dir, error, sizeof error) != COFFER_OK) {
        l->manifest_failed = true;
        return COFFER_STORAGE_FAILED;
    }
    return COFFER_OK;
}

static int local_sync(void *state)
{
    local_log *l = state;
    if (l->read_only)
        return COFFER_STORAGE_FAILED;
    int code = l->sync ? wal_sync(&l->wal) : COFFER_OK;
    if (code == COFFER_OK)
        l->durable = l->appended;
    return code;
}

/* Moves the checkpoint to the durable tail once a second is up since it last moved; until it
 * has caught up, asks to be called again when the second is up. */
static int local_tick(void *state, uint64_t now_ns, uint64_t *wake_ns)
{
    local_log *l = state;
    *wake_ns = 0;
    if (l->read_only || l->durable.last_seq == l->checkpoint.written.last_seq)
        return COFFER_OK;
    uint64_t due_ns = l->checkpoint_at_ns + CHECKPOINT_INTERVAL_NS;
    if (now_ns < due_ns) {
        *wake_ns = due_ns - now_ns;
        return COFFER_OK;
    }
    l->checkpoint_at_ns = now_ns;
    return checkpoint_write(&l->checkpoint, &l->durable, l->sync);
}

/* Notes the hash of the record that ends at the checkpoint's seq, then hands the record on. */
static int read_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    local_log *l = context;
    if (l->checkpoint_found && header->last_seq == l->checkpoint_tip.last_seq) {
        l->checkpoint_reached = true;
        memcpy(l->hash_at_checkpoint, header->hash, RECORD_HASH_BYTES);
    }
    return l->visit ? l->visit(bytes, header, segment, offset, l->visit_context) : 0;
}

/* A scan that never truncates: a torn tail is cut only when the log is opened for writing,
 * once the caller knows it holds nothing acknowledged. */
static int local_read_from(void *state, uint64_t after_seq, const uint8_t *after_hash,
                           wal_record_fn visit, void *context)
{
    local_log *l = state;
    wal_scan_options options = {.skip_through = after_seq,
                                .skip_hash = after_hash,
                                .read_only = true,
                                .progress = l->read_options.progress,
                                .progress_context = l->read_options.progress_context};
    l->visit = visit;
    l->visit_context = context;
    l->checkpoint_reached = false;
    int code = wal_scan(l->dir, &options, read_record, l, &l->last_read);
    l->visit = 0;
    l->read_after_seq = after_seq;
    l->read_done = code == COFFER_OK;
    return code;
}

static void local_tail(const void *state, wal_tip *tip)
{
    const local_log *l = state;
    *tip = l->read_only ? l->last_read.tip : l->durable;
}

static void local_describe_failure(const void *state, char *what, size_t what_size, char *outcome,
                                   size_t outcome_size)
{
    const local_log *l = state;
    if (l->manifest_failed)
        snprintf(what, what_size, "cannot write %.700s/manifest after sealing segment %u", l->dir,
                 l->wal.segment - 1);
    else
        snprintf(what, what_size, "%s (segment %u, offset %llu)",
                 l->wal.failed ? strerror(l->wal.error) : "cannot write the checkpoint",
                 l->wal.segment, (unsigned long long)l->wal.offset);
    snprintf(outcome, outcome_size, "%s",
             !l->wal.failed    ? "the log itself is intact up to the last answered batch"
             : l->wal.cut_back ? "the log was cut back to its last durable record, so nothing "
                                 "refused is in it"
                               : "the log could not be cut back: batches answered storage_failed "
                                 "may be in it after a restart (retry them with the same ids to "
                                 "learn their outcome)");
}

static void local_close(void *state, bool clean)
{
    local_log *l = state;
    if (clean && !l->read_only && !l->wal.failed &&
        l->durable.last_seq != l->checkpoint.written.last_seq &&
        checkpoint_write(&l->checkpoint, &l->durable, l->sync) != COFFER_OK)
        fprintf(stderr, "coffer: cannot write %s/checkpoint at close: %s\n", l->dir,
                strerror(errno));
    if (!l->read_only)
        checkpoint_close(&l->checkpoint);
    if (l->wal.dir)
        wal_stop(&l->wal);
    free(l->dir);
    free(l);
}

/* Four records a round: measured with one transfer per request and 64 connections, a round of
 * up to 64 made the server 11% slower (33.0k-34.6k transfers/s against 29.8k-30.4k), since a
 * writer never held back applies and records many more, smaller batches on a CPU that is the
 * limit (docs/benchmarks.md). */
static const log_ops local_ops = {.append = local_append,
                                  .sync = local_sync,
                                  .tick = local_tick,
                                  .read_from = local_read_from,
                                  .tail = local_tail,
                                  .describe_failure = local_describe_failure,
                                  .close = local_close,
                                  .round_records = 4};

int local_log_open(durable_log *log, const char *dir, const wal_scan_result *scan,
                   const local_log_options *options, char *error, size_t error_size)
{
    local_log *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        return COFFER_OUT_OF_MEMORY;
    }
    l->checkpoint.fd = -1;
    l->sync = options->sync;
    l->appended = l->durable = scan->tip;
    l->checkpoint_at_ns = options->now_ns;
    int code = wal_start(&l->wal, dir, scan, options->io, options->segment_bytes_max);
    if (code != COFFER_OK)
        snprintf(error, error_size, "cannot start the log in %.700s: %s", dir,
                 strerror(l->wal.error ? l->wal.error : errno));
    /* The log is known good from here on: checkpoint its tail and list its segments, so the
     * next open can tell whether anything acknowledged went missing. The checkpoint first: a
     * crash between the two leaves a checkpoint at the log's very tail and no manifest, which
     * the next open tells from damage (see local_log_damage). */
    if (code == COFFER_OK && checkpoint_open(&l->checkpoint, dir, &scan->tip) != COFFER_OK) {
        snprintf(error, error_size, "cannot write %.700s/checkpoint: %s", dir, strerror(errno));
        code = COFFER_STORAGE_FAILED;
    }
    if (code == COFFER_OK)
        code = manifest_write(dir, error, error_size);
    if (code != COFFER_OK) {
        local_close(l, false);
        return code;
    }
    *log = (durable_log){&local_ops, l};
    return COFFER_OK;
}

/* ---- reading ------------------------------------------------------------------------------- */

static void damage_add(char *lines, size_t size, int *count, const char *line)
{
    size_t used = strlen(lines);
    snprintf(lines + used, size - used, "%s%s", used ? "\n" : "", line);
    (*count)++;
}

int local_log_open_read(durable_log *log, const char *dir, const local_log_read_options *options)
{
    local_log *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        return COFFER_OUT_OF_MEMORY;
    }
    l->read_only = true;
    l->checkpoint.fd = -1;
    l->wal.fd = l->wal.dir_fd = -1;
    if (options)
        l->read_options = *options;
    char problems[sizeof l->files_damage];
    if (manifest_check(dir, &l->manifest_found, problems, sizeof problems) > 0)
        damage_add(l->files_damage, sizeof l->files_damage, &l->files_damage_count, problems);
    if (checkpoint_read(dir, &l->checkpoint_tip, &l->checkpoint_found, problems, sizeof problems) !=
        COFFER_OK)
        damage_add(l->files_damage, sizeof l->files_damage, &l->files_damage_count, problems);
    *log = (durable_log){&local_ops, l};
    return COFFER_OK;
}

const wal_scan_result *local_log_last_read(const durable_log *log)
{
    COFFER_ASSERT(log->ops == &local_ops);
    return &((const local_log *)log->state)->last_read;
}

bool local_log_has_files(const durable_log *log)
{
    const local_log *l = log->state;
    return l->checkpoint_found || l->manifest_found;
}

/* A data directory from before the checkpoint and the manifest existed has neither; one
 * without the other was damaged. After a whole read, the log must reach the checkpoint. */
int local_log_damage(const durable_log *log, char *lines, size_t size)
{
    COFFER_ASSERT(log->ops == &local_ops);
    const local_log *l = log->state;
    int count = l->files_damage_count;
    snprintf(lines, size, "%s", l->files_damage);
    if (!l->read_done)
        return count;
    char line[2048];
    if (l->manifest_found && !l->checkpoint_found && !count) {
        snprintf(line, sizeof line, "%.700s/checkpoint is missing (the manifest is there)", l->dir);
        damage_add(lines, size, &count, line);
    }
    /* Without a manifest, a checkpoint at the log's very tail is an open that stopped between
     * writing the two (nothing was appended after it); the chain check below still holds. */
    if (l->checkpoint_found && !l->manifest_found &&
        l->checkpoint_tip.last_seq != l->last_read.tip.last_seq) {
        snprintf(line, sizeof line, "%.700s/manifest is missing (the checkpoint is there)", l->dir);
        damage_add(lines, size, &count, line);
    }
    if (l->checkpoint_found &&
        !checkpoint_check(l->dir, &l->checkpoint_tip, &l->last_read, l->read_after_seq,
                          l->checkpoint_reached ? l->hash_at_checkpoint : 0, line, sizeof line))
        damage_add(lines, size, &count, line);
    return count;
}
