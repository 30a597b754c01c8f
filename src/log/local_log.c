/*
 * local_log.c — the log as segment files in the data directory (log/wal.c), with the checkpoint
 * and the manifest beside them (log/checkpoint.c): the first implementation of log.h.
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
} local_log;

static int local_append(void *state, const uint8_t *bytes, size_t length, const wal_tip *before,
                        const wal_tip *after)
{
    local_log *l = state;
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
    if (l->durable.last_seq == l->checkpoint.written.last_seq)
        return COFFER_OK;
    uint64_t due_ns = l->checkpoint_at_ns + CHECKPOINT_INTERVAL_NS;
    if (now_ns < due_ns) {
        *wake_ns = due_ns - now_ns;
        return COFFER_OK;
    }
    l->checkpoint_at_ns = now_ns;
    return checkpoint_write(&l->checkpoint, &l->durable, l->sync);
}

static int local_read_from(void *state, uint64_t after_seq, wal_record_fn visit, void *context)
{
    local_log *l = state;
    wal_scan_options options = {.skip_through = after_seq, .read_only = true};
    wal_scan_result result;
    return wal_scan(l->dir, &options, visit, context, &result);
}

static void local_tail(const void *state, wal_tip *tip)
{
    *tip = ((const local_log *)state)->durable;
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
    if (clean && !l->wal.failed && l->durable.last_seq != l->checkpoint.written.last_seq &&
        checkpoint_write(&l->checkpoint, &l->durable, l->sync) != COFFER_OK)
        fprintf(stderr, "coffer: cannot write %s/checkpoint at close: %s\n", l->dir,
                strerror(errno));
    checkpoint_close(&l->checkpoint);
    if (l->wal.dir)
        wal_stop(&l->wal);
    free(l->dir);
    free(l);
}

static const log_ops local_ops = {local_append,    local_sync, local_tick,
                                  local_read_from, local_tail, local_describe_failure,
                                  local_close};

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
    /* The log is known good from here on: list its segments and checkpoint its tail, so the
     * next open can tell whether anything acknowledged went missing. */
    if (code == COFFER_OK)
        code = manifest_write(dir, error, error_size);
    if (code == COFFER_OK && checkpoint_open(&l->checkpoint, dir, &scan->tip) != COFFER_OK) {
        snprintf(error, error_size, "cannot write %.700s/checkpoint: %s", dir, strerror(errno));
        code = COFFER_STORAGE_FAILED;
    }
    if (code != COFFER_OK) {
        local_close(l, false);
        return code;
    }
    *log = (durable_log){&local_ops, l};
    return COFFER_OK;
}
