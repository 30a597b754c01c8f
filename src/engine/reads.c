/*
 * reads.c — lookups and the live invariant check. Each runs on the writer thread between
 * batches (as a job's read), so it sees one consistent state and needs no lock on any record.
 * Every answer is copied into caller-owned structs. Once memory has been trimmed
 * (s->trimmed_seq > 0), what it no longer holds is read from the on-disk index, which holds
 * every seq up to trimmed_seq: a transfer by id, an account's oldest history entries, a
 * balance at a past seq or time.
 */
#include <stdlib.h>
#include <string.h>

#include "base/check.h"
#include "engine/engine.h"
#include "index/cold.h"

static void copy_name(char *out, size_t out_size, const char *bytes, size_t length)
{
    COFFER_ASSERT(length < out_size);
    memcpy(out, bytes, length);
    out[length] = 0;
}

static uint32_t find_account(const store *s, const char *id)
{
    size_t length = strnlen(id, COFFER_ACCOUNT_ID_MAX + 1);
    if (length > COFFER_ACCOUNT_ID_MAX)
        return STORE_NONE;
    return store_account_find(s, id, length, store_hash(id, length));
}

static uint32_t find_transfer(const store *s, const char *id)
{
    size_t length = strnlen(id, COFFER_TRANSFER_ID_MAX + 1);
    if (length > COFFER_TRANSFER_ID_MAX)
        return STORE_NONE;
    return store_transfer_find(s, id, length, store_hash(id, length));
}

/* The index for what memory evicted: only once it holds every seq memory may have evicted (a
 * rebuilt index starts empty and catches up behind); NULL makes such a read storage_failed. */
static index_db *cold_index(const coffer *db)
{
    if (engine_index_flushed_seq(db) < db->store.trimmed_seq)
        return 0;
    return engine_index_reader(db);
}

/* ---- accounts ------------------------------------------------------------------------------ */

static void account_fill(const store *s, const store_account *account, coffer_account *out)
{
    memset(out, 0, sizeof *out);
    copy_name(out->id, sizeof out->id, store_account_id(s, account), account->id_len);
    memcpy(out->currency, account->currency, COFFER_CURRENCY_MAX);
    out->min_unbounded = account->flags & COFFER_FLAG_MIN_UNBOUNDED;
    out->has_max = account->flags & COFFER_FLAG_HAS_MAX;
    out->min_balance = account->min_balance;
    out->max_balance = account->max_balance;
    out->debits_posted = account->debits_posted;
    out->credits_posted = account->credits_posted;
    out->debits_held = account->debits_held;
    out->credits_held = account->credits_held;
    out->balance = account->credits_posted - account->debits_posted;
    out->available = out->balance - account->debits_held;
    out->version = account->version;
    out->created_seq = account->created_seq;
    out->created_at = account->created_at;
    out->metadata_len = account->metadata_len;
    memcpy(out->metadata, s->arena + account->metadata_offset, account->metadata_len);
}

/* A past state: history keeps balance and available after each change, so those (and
 * debits_held, their difference) and the version are exact; the posted and credit-held totals
 * are not kept per entry and read as 0. What memory evicted comes from the index. */
static int account_at(coffer *db, uint32_t index, int at, uint64_t at_value, coffer_account *out)
{
    const store *s = &db->store;
    const store_account *account = &s->accounts[index];
    uint64_t created = at == COFFER_AT_SEQ ? account->created_seq : account->created_at;
    if (created > at_value)
        return COFFER_ACCOUNT_NOT_FOUND;
    out->debits_posted = out->credits_posted = out->credits_held = 0;
    return cold_account_at(s, cold_index(db), index, store_history_hot_from(s, index), at, at_value,
                           out);
}

int engine_account_read(coffer *db, void *context)
{
    struct account_read *read = context;
    const store *s = &db->store;
    uint32_t index = find_account(s, read->id);
    if (index == STORE_NONE)
        return COFFER_ACCOUNT_NOT_FOUND;
    account_fill(s, &s->accounts[index], read->out);
    if (read->at == COFFER_AT_NOW)
        return COFFER_OK;
    return account_at(db, index, read->at, read->at_value, read->out);
}

static int account_get_start(coffer *db, coffer_job *job, const char *id, int at, uint64_t at_value,
                             coffer_account *out)
{
    if (!db || !id || !out)
        return COFFER_INVALID_ARGUMENT;
    if (at != COFFER_AT_NOW && at != COFFER_AT_SEQ && at != COFFER_AT_TIMESTAMP)
        return COFFER_INVALID_ARGUMENT;
    struct account_read *read = &engine_job_of(job)->read.account;
    *read = (struct account_read){id, at, at_value, out};
    engine_job_request(job, engine_account_read, read);
    return engine_start(db, job);
}

int coffer_account_get(coffer *db, const char *id, int at, uint64_t at_value, coffer_account *out)
{
    coffer_job job = {.on_done = 0};
    return account_get_start(db, &job, id, at, at_value, out);
}

int coffer_account_get_async(coffer *db, coffer_job *job, const char *id, int at, uint64_t at_value,
                             coffer_account *out)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return account_get_start(db, job, id, at, at_value, out);
}

/* ---- history ------------------------------------------------------------------------------- */

int engine_history_read(coffer *db, void *context)
{
    struct history_read *read = context;
    const store *s = &db->store;
    uint32_t account = find_account(s, read->id);
    if (account == STORE_NONE)
        return COFFER_ACCOUNT_NOT_FOUND;
    return cold_history_page(s, cold_index(db), account, store_history_hot_from(s, account),
                             read->after_seq, read->limit, read->entries, read->count_out);
}

static int history_start(coffer *db, coffer_job *job, const char *account_id, uint64_t after_seq,
                         size_t limit, coffer_history_entry *entries, size_t *count_out)
{
    if (!db || !account_id || (!entries && limit) || !count_out)
        return COFFER_INVALID_ARGUMENT;
    *count_out = 0;
    struct history_read *read = &engine_job_of(job)->read.history;
    *read = (struct history_read){account_id, after_seq, limit, entries, count_out};
    engine_job_request(job, engine_history_read, read);
    return engine_start(db, job);
}

int coffer_history(coffer *db, const char *account_id, uint64_t after_seq, size_t limit,
                   coffer_history_entry *entries, size_t *count_out)
{
    coffer_job job = {.on_done = 0};
    return history_start(db, &job, account_id, after_seq, limit, entries, count_out);
}

int coffer_history_async(coffer *db, coffer_job *job, const char *account_id, uint64_t after_seq,
                         size_t limit, coffer_history_entry *entries, size_t *count_out)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return history_start(db, job, account_id, after_seq, limit, entries, count_out);
}

/* ---- transfers and holds ------------------------------------------------------------------- */

static void transfer_fill(const store *s, uint32_t index, coffer_transfer *out)
{
    const store_transfer *t = &s->transfers[index];
    const store_aux *aux = store_transfer_aux(s, t);
    const char *names = aux ? (const char *)(aux + 1) + aux->metadata_len : 0;
    memset(out, 0, sizeof *out);
    copy_name(out->id, sizeof out->id, store_transfer_id(s, t), t->id_len);
    out->op = t->op;
    out->state = t->state;
    out->flags = t->flags;
    out->code = t->code;
    out->amount = t->state == COFFER_STATE_REJECTED ? 0 : t->amount;
    out->amount_requested = t->amount_requested;
    out->seq = t->seq;
    out->timestamp = t->timestamp;
    out->expires_at = t->expires_at;
    if (t->expires_at)
        out->hold_timeout_ms = (t->expires_at - t->timestamp) / 1000000ULL;
    if (t->from != STORE_NONE) {
        const store_account *a = &s->accounts[t->from];
        copy_name(out->from, sizeof out->from, store_account_id(s, a), a->id_len);
    } else if (aux && t->op == COFFER_OP_TRANSFER) {
        copy_name(out->from, sizeof out->from, names, aux->from_len);
    }
    if (t->to != STORE_NONE) {
        const store_account *a = &s->accounts[t->to];
        copy_name(out->to, sizeof out->to, store_account_id(s, a), a->id_len);
    } else if (aux && t->op == COFFER_OP_TRANSFER) {
        copy_name(out->to, sizeof out->to, names + aux->from_len, aux->to_len);
    }
    if (t->op == COFFER_OP_POST || t->op == COFFER_OP_VOID) {
        if (t->link != STORE_NONE) {
            const store_transfer *hold = &s->transfers[t->link];
            copy_name(out->hold_id, sizeof out->hold_id, store_transfer_id(s, hold), hold->id_len);
        } else if (aux) {
            copy_name(out->hold_id, sizeof out->hold_id, names + aux->from_len + aux->to_len,
                      aux->hold_len);
        }
    }
    if (t->state == COFFER_STATE_CAPTURED)
        out->captured = s->transfers[t->link].amount;
    if (aux) {
        out->expect_from_version = aux->expect_from_version;
        out->expect_to_version = aux->expect_to_version;
        out->metadata_len = aux->metadata_len;
        memcpy(out->metadata, aux + 1, aux->metadata_len);
    }
    size_t submitter_length;
    const char *submitter = store_submitter_name(s, t->submitter, &submitter_length);
    if (submitter)
        copy_name(out->submitted_by, sizeof out->submitted_by, submitter, submitter_length);
}

int engine_transfer_read(coffer *db, void *context)
{
    struct transfer_read *read = context;
    uint32_t index = find_transfer(&db->store, read->id);
    if (index == STORE_NONE) /* unknown, or evicted: then the index has it */
        return cold_transfer_get(&db->store, cold_index(db), engine_index_filter(db), read->id,
                                 strnlen(read->id, COFFER_TRANSFER_ID_MAX + 1), read->out);
    transfer_fill(&db->store, index, read->out);
    return COFFER_OK;
}

static int transfer_get_start(coffer *db, coffer_job *job, const char *id, coffer_transfer *out)
{
    if (!db || !id || !out)
        return COFFER_INVALID_ARGUMENT;
    struct transfer_read *read = &engine_job_of(job)->read.transfer;
    *read = (struct transfer_read){id, out};
    engine_job_request(job, engine_transfer_read, read);
    return engine_start(db, job);
}

int coffer_transfer_get(coffer *db, const char *id, coffer_transfer *out)
{
    coffer_job job = {.on_done = 0};
    return transfer_get_start(db, &job, id, out);
}

int coffer_transfer_get_async(coffer *db, coffer_job *job, const char *id, coffer_transfer *out)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return transfer_get_start(db, job, id, out);
}

static int hold_order(const void *a, const void *b)
{
    const store_hold_ref *x = a, *y = b;
    if (x->expires_at != y->expires_at)
        return x->expires_at < y->expires_at ? -1 : 1;
    return x->transfer < y->transfer ? -1 : x->transfer > y->transfer;
}

/* The heap holds every pending hold (and stale entries for resolved ones): filter, then sort. */
int engine_holds_read(coffer *db, void *context)
{
    struct holds_read *read = context;
    const store *s = &db->store;
    uint32_t account = STORE_NONE;
    if (read->account_id) {
        account = find_account(s, read->account_id);
        if (account == STORE_NONE)
            return COFFER_ACCOUNT_NOT_FOUND;
    }
    store_hold_ref *pending = malloc((s->holds_count + 1) * sizeof *pending);
    if (!pending)
        return COFFER_OUT_OF_MEMORY;
    size_t found = 0;
    for (uint64_t i = 0; i < s->holds_count; i++) {
        const store_transfer *hold = &s->transfers[s->holds[i].transfer];
        if (hold->state != COFFER_STATE_PENDING)
            continue;
        if (account != STORE_NONE && hold->from != account && hold->to != account)
            continue;
        pending[found++] = s->holds[i];
    }
    qsort(pending, found, sizeof *pending, hold_order);
    size_t count = found < read->limit ? found : read->limit;
    for (size_t i = 0; i < count; i++)
        transfer_fill(s, pending[i].transfer, &read->out[i]);
    *read->count_out = count;
    free(pending);
    return COFFER_OK;
}

static int holds_list_start(coffer *db, coffer_job *job, const char *account_id, size_t limit,
                            coffer_transfer *out, size_t *count_out)
{
    if (!db || (!out && limit) || !count_out)
        return COFFER_INVALID_ARGUMENT;
    *count_out = 0;
    struct holds_read *read = &engine_job_of(job)->read.holds;
    *read = (struct holds_read){account_id, limit, out, count_out};
    engine_job_request(job, engine_holds_read, read);
    return engine_start(db, job);
}

int coffer_holds_list(coffer *db, const char *account_id, size_t limit, coffer_transfer *out,
                      size_t *count_out)
{
    coffer_job job = {.on_done = 0};
    return holds_list_start(db, &job, account_id, limit, out, count_out);
}

int coffer_holds_list_async(coffer *db, coffer_job *job, const char *account_id, size_t limit,
                            coffer_transfer *out, size_t *count_out)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return holds_list_start(db, job, account_id, limit, out, count_out);
}

/* ---- stats --------------------------------------------------------------------------------- */

int engine_stats_read(coffer *db, void *context)
{
    coffer_stats *out = context;
    memset(out, 0, sizeof *out);
    out->seq = db->last_seq;
    out->accounts = db->store.accounts_count;
    out->transfers = db->store.transfers_count;
    out->holds_pending = db->store.holds_pending;
    out->holds_expired = db->store.expiries_count;
    out->batches = db->batches;
    out->events_applied = db->events_applied;
    out->fsyncs = atomic_load(&db->fsyncs);
    for (int i = 0; i < COFFER_HISTOGRAM_BUCKETS; i++) {
        out->batch_events[i] = atomic_load(&db->batch_events[i]);
        out->fsync_us[i] = atomic_load(&db->fsync_us[i]);
    }
    out->batch_events_total = atomic_load(&db->batch_events_total);
    out->fsync_us_total = atomic_load(&db->fsync_us_total);
    out->durable_seq = db->dir ? atomic_load(&db->durable_seq) : db->last_seq;
    out->storage_failed = atomic_load(&db->storage_failed);
    out->memory_used_bytes = db->store.budget.used;
    out->memory_budget_bytes = db->store.limits.memory_max;
    indexer_stats(db, out);
    out->evictions = atomic_load(&db->trims);
    out->evicted_transfers = atomic_load(&db->trimmed_transfers);
    out->evicted_history = atomic_load(&db->trimmed_history);
    out->evicted_seq = db->store.trimmed_seq;
    out->eviction_us_total = atomic_load(&db->trim_us_total);
    out->cold_checks = atomic_load(&db->cold_checks);
    out->cold_reads = atomic_load(&db->cold_reads);
    out->overloaded_memory = atomic_load(&db->overloaded_memory);
    if (db->dir)
        engine_disk_look(db); /* stats run on the writer, like the look before a batch */
    out->disk_free_bytes = atomic_load(&db->disk_free);
    out->disk_reserve_bytes = db->disk_reserve;
    out->refused_disk = atomic_load(&db->refused_disk);
    pthread_mutex_lock(&db->mutex); /* the queue belongs to the callers' side of the lock */
    out->queue_events = db->queue_events;
    pthread_mutex_unlock(&db->mutex);
    return COFFER_OK;
}

static int stats_get_start(coffer *db, coffer_job *job, coffer_stats *out)
{
    if (!db || !out)
        return COFFER_INVALID_ARGUMENT;
    engine_request *request = engine_job_request(job, engine_stats_read, out);
    request->diagnostic = true; /* stats explain a storage failure, so they stay readable */
    return engine_start(db, job);
}

/* Reads into a full struct of this library's size, then gives the caller the part it knows. */
int coffer_stats_get_sized(coffer *db, coffer_stats *out, size_t size_bytes)
{
    if (!db || !out || size_bytes == 0)
        return COFFER_INVALID_ARGUMENT;
    coffer_stats stats;
    coffer_job job = {.on_done = 0};
    int status = stats_get_start(db, &job, &stats);
    memset(out, 0, size_bytes);
    memcpy(out, &stats, size_bytes < sizeof stats ? size_bytes : sizeof stats);
    return status;
}

/* The engine writes the whole struct from its own thread, so it must be this library's size:
 * an older caller gets invalid_argument and can use the blocking call. */
int coffer_stats_get_async_sized(coffer *db, coffer_job *job, coffer_stats *out, size_t size_bytes)
{
    if (!engine_job_usable(job) || size_bytes != sizeof *out)
        return COFFER_INVALID_ARGUMENT;
    return stats_get_start(db, job, out);
}

int coffer_code_counts(coffer *db, uint64_t *counts, size_t count)
{
    if (!db || (!counts && count))
        return COFFER_INVALID_ARGUMENT;
    for (size_t code = 0; code < count; code++)
        counts[code] = code < COFFER_CODE_LIMIT
                           ? atomic_load_explicit(&db->codes[code], memory_order_relaxed)
                           : 0;
    return COFFER_OK;
}
