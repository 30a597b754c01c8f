/*
 * replay.c — see replay.h.
 */
#include "engine/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "log/log.h"

int replayer_init(replayer *r, store *s, ledger *l)
{
    memset(r, 0, sizeof *r);
    r->store = s;
    r->ledger = l;
    r->results = calloc(COFFER_BATCH_EVENTS_MAX, sizeof *r->results);
    return r->results ? COFFER_OK : COFFER_OUT_OF_MEMORY;
}

void replayer_free(replayer *r)
{
    record_scratch_free(&r->scratch);
    free(r->results);
    memset(r, 0, sizeof *r);
}

static uint64_t entry_timestamp(const record_header *header, uint64_t seq)
{
    return header->ts0 + (seq - header->seq_base);
}

static bool result_recorded(const coffer_result *result)
{
    return result->seq != 0 && !result->replayed;
}

/* A format 2 record says what each event did: the replay must do the same, or the log and the
 * code disagree (a tampered record, or a core that is no longer deterministic). */
static int outcome_check(replayer *r, const record_entry *entry, size_t position,
                         const coffer_result *computed)
{
    if (!entry->results)
        return 0;
    const char *difference = record_outcome_difference(&entry->results[position], computed);
    if (!difference)
        return 0;
    const char *id = entry->kind == RECORD_EXPIRE ? entry->hold_id : entry->events[position].id;
    snprintf(r->problem, sizeof r->problem,
             "%s %.128s at seq %llu replays with another outcome than the logged one (%s)",
             entry->kind == RECORD_EXPIRE ? "expiry of hold" : "event", id,
             (unsigned long long)(entry->seq + position), difference);
    return -1;
}

static int replay_expire(replayer *r, const record_entry *entry, uint64_t timestamp)
{
    store *s = r->store;
    size_t length = strlen(entry->hold_id);
    uint32_t hold =
        store_transfer_find(s, entry->hold_id, length, store_hash(entry->hold_id, length));
    if (hold == STORE_NONE || s->transfers[hold].state != COFFER_STATE_PENDING ||
        s->transfers[hold].expires_at > timestamp) {
        snprintf(r->problem, sizeof r->problem, "expiry of hold %s at seq %llu does not apply",
                 entry->hold_id, (unsigned long long)entry->seq);
        return -1;
    }
    ledger_expire(r->ledger, hold, entry->seq, timestamp, &r->results[0]);
    return outcome_check(r, entry, 0, &r->results[0]);
}

static int replay_entry(const record_entry *entry, void *context)
{
    replayer *r = context;
    uint64_t timestamp = entry_timestamp(r->header, entry->seq);
    if (entry->kind == RECORD_EXPIRE)
        return replay_expire(r, entry, timestamp);
    bool atomic = entry->kind == RECORD_ATOMIC;
    if (entry->submitted_by && store_submitter_room(r->store, entry->submitted_by,
                                                    strlen(entry->submitted_by)) != COFFER_OK) {
        snprintf(r->problem, sizeof r->problem,
                 "event %.128s at seq %llu names one submitter more than the %d kept",
                 entry->events[0].id, (unsigned long long)entry->seq, STORE_SUBMITTERS_MAX);
        return -1;
    }
    if (r->prepare && r->prepare(r->prepare_context, entry) != COFFER_OK) {
        snprintf(r->problem, sizeof r->problem,
                 "the on-disk index could not be read for the evicted ids of seq %llu",
                 (unsigned long long)entry->seq);
        return -1;
    }
    ledger_apply(r->ledger, entry->events, entry->count, atomic, entry->submitted_by, entry->seq,
                 timestamp, r->results);
    bool recorded = false;
    for (size_t i = 0; i < entry->count; i++)
        recorded |= result_recorded(&r->results[i]) && r->results[i].seq == entry->seq + i;
    if (!recorded) {
        snprintf(r->problem, sizeof r->problem, "event %.128s at seq %llu did not record on replay",
                 entry->events[0].id, (unsigned long long)entry->seq);
        return -1;
    }
    for (size_t i = 0; i < entry->count; i++)
        if (outcome_check(r, entry, i, &r->results[i]) != 0)
            return -1;
    return 0;
}

/* Counts what a record's entries need in the store (a first pass over it). */
static int count_needs(const record_entry *entry, void *context)
{
    ledger_needs *needs = context;
    if (entry->kind == RECORD_EXPIRE) {
        needs->history += 2;
        needs->holds++; /* an expiry entry */
        return 0;
    }
    ledger_needs_add(needs, entry->events, entry->count);
    return 0;
}

int replay_record(replayer *r, const uint8_t *bytes, const record_header *header)
{
    r->problem[0] = 0;
    ledger_needs needs = {0};
    int status = record_each(bytes, header, &r->scratch, count_needs, &needs);
    if (status != RECORD_OK) {
        snprintf(r->problem, sizeof r->problem, "%s", record_status_name(status));
        return COFFER_STORAGE_FAILED;
    }
    int code = store_reserve(r->store, needs.accounts, needs.transfers, needs.history,
                             needs.arena_bytes, needs.holds);
    if (code != COFFER_OK) {
        snprintf(r->problem, sizeof r->problem, "needs more room than the configured limits");
        return code;
    }
    r->header = header;
    status = record_each(bytes, header, &r->scratch, replay_entry, r);
    if (status != RECORD_OK) {
        if (status > 0)
            snprintf(r->problem, sizeof r->problem, "%s", record_status_name(status));
        return COFFER_STORAGE_FAILED;
    }
    r->last_seq = header->last_seq;
    r->last_timestamp = entry_timestamp(header, header->last_seq);
    return COFFER_OK;
}

/* ---- submitters of an old snapshot --------------------------------------------------------- */

typedef struct submitters_fill {
    store *store;
    uint64_t snapshot_seq;
    record_scratch scratch;
    bool full; /* a new name past STORE_SUBMITTERS_MAX */
} submitters_fill;

static int fill_entry(const record_entry *entry, void *context)
{
    submitters_fill *fill = context;
    store *s = fill->store;
    if (entry->kind == RECORD_EXPIRE || !entry->submitted_by)
        return 0;
    size_t name_length = strlen(entry->submitted_by);
    for (size_t i = 0; i < entry->count && entry->seq + i <= fill->snapshot_seq; i++) {
        const char *id = entry->events[i].id;
        if (entry->events[i].op == COFFER_OP_CREATE_ACCOUNT || !id)
            continue;
        size_t length = strlen(id);
        uint32_t index = store_transfer_find(s, id, length, store_hash(id, length));
        /* Only the record that recorded the transfer names its submitter. */
        if (index == STORE_NONE || s->transfers[index].seq != entry->seq + i)
            continue;
        if (store_submitter_room(s, entry->submitted_by, name_length) != COFFER_OK) {
            fill->full = true;
            return -1;
        }
        s->transfers[index].submitter = store_submitter_intern(s, entry->submitted_by, name_length);
    }
    return 0;
}

static int fill_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    (void)segment;
    (void)offset;
    submitters_fill *fill = context;
    if (header->seq_base > fill->snapshot_seq)
        return 0; /* after the snapshot: recovery replays it */
    int status = record_each(bytes, header, &fill->scratch, fill_entry, fill);
    if (fill->full)
        return COFFER_CAPACITY_EXCEEDED;
    return status == RECORD_OK ? 0 : COFFER_STORAGE_FAILED;
}

int replay_submitters(store *s, const char *dir, uint64_t snapshot_seq, char *problem,
                      size_t problem_size)
{
    COFFER_ASSERT(s->submitters_count == 0);
    submitters_fill fill = {s, snapshot_seq, {0}, false};
    durable_log reader = {0};
    int code = local_log_open_read(&reader, dir, 0);
    if (code == COFFER_OK)
        code = log_read_from(&reader, 0, 0, fill_record, &fill);
    if (code != COFFER_OK)
        snprintf(problem, problem_size, "the submitters of the snapshot's transfers: %s",
                 fill.full ? "more distinct names than the store keeps"
                 : reader.ops && local_log_last_read(&reader)->error[0]
                     ? local_log_last_read(&reader)->error
                     : "a log record does not decode");
    if (reader.ops)
        log_close(&reader, false);
    record_scratch_free(&fill.scratch);
    return code;
}
