/*
 * ledger.c — applies events to the store by the rules of docs/semantics.md. Each event checks
 * everything before it mutates anything, so a rejected event leaves no trace but its recorded
 * outcome; an atomic submission also logs before-images so it can undo earlier events.
 */
#include "core/ledger.h"

#include <stdlib.h>
#include <string.h>

#include "base/check.h"

enum undo_kind { UNDO_ACCOUNT = 1, UNDO_TRANSFER = 2 };

struct ledger_undo {
    uint32_t kind;
    uint32_t index;
    union {
        store_account account;
        store_transfer transfer;
    } image;
};

/* An event touches at most two accounts and one hold. */
#define UNDO_PER_EVENT 3

int ledger_init(ledger *l, store *s)
{
    memset(l, 0, sizeof *l);
    l->store = s;
    l->undo_capacity = (size_t)COFFER_BATCH_EVENTS_MAX * UNDO_PER_EVENT;
    l->undo = calloc(l->undo_capacity, sizeof *l->undo);
    l->new_holds = calloc(COFFER_BATCH_EVENTS_MAX, sizeof *l->new_holds);
    l->seen_mask = 16384 * 2 - 1; /* a power of two, at most 25% full */
    l->seen = calloc(l->seen_mask + 1, sizeof *l->seen);
    if (!l->undo || !l->new_holds || !l->seen) {
        ledger_free(l);
        return COFFER_OUT_OF_MEMORY;
    }
    return COFFER_OK;
}

void ledger_free(ledger *l)
{
    free(l->undo);
    free(l->new_holds);
    free(l->seen);
    memset(l, 0, sizeof *l);
}

void ledger_set_cold(ledger *l, ledger_cold_fn find, void *context)
{
    l->cold_find = find;
    l->cold_context = context;
}

static size_t bounded_length(const char *text, size_t max)
{
    return text ? strnlen(text, max + 1) : 0;
}

void ledger_needs_add(ledger_needs *needs, const coffer_event *events, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const coffer_event *event = &events[i];
        /* Upper bounds: lengths beyond the limits fail validation and store nothing. */
        uint64_t bytes = bounded_length(event->id, COFFER_TRANSFER_ID_MAX) + 8;
        bytes += event->metadata_len <= COFFER_METADATA_MAX ? event->metadata_len + 8 : 0;
        if (event->op == COFFER_OP_CREATE_ACCOUNT) {
            needs->accounts++;
        } else {
            /* A transfer, post or void records one outcome, changes at most two accounts
             * and may create one hold; its aux record may name unresolved ids. */
            bytes += sizeof(store_aux) + 8 + bounded_length(event->from, COFFER_ACCOUNT_ID_MAX) +
                     bounded_length(event->to, COFFER_ACCOUNT_ID_MAX) +
                     bounded_length(event->hold_id, COFFER_TRANSFER_ID_MAX);
            needs->transfers++;
            needs->history += 2;
            needs->holds++;
        }
        needs->arena_bytes += bytes;
    }
}

/* ---- reading state ------------------------------------------------------------------------- */

static int64_t account_balance(const store_account *account)
{
    return account->credits_posted - account->debits_posted;
}

static coffer_account_after account_now(const store_account *account)
{
    int64_t balance = account_balance(account);
    return (coffer_account_after){balance, balance - account->debits_held, account->version};
}

coffer_account_after ledger_account_after(const store *s, uint32_t account, uint64_t seq)
{
    uint32_t entry = store_history_find_seq(s, account, seq);
    if (entry == STORE_NONE)
        return (coffer_account_after){0, 0, 1};
    const store_history *found = &s->history[entry];
    return (coffer_account_after){found->balance, found->available, found->ordinal + 2};
}

static size_t id_length(const char *id)
{
    return strlen(id); /* validated: at most COFFER_TRANSFER_ID_MAX */
}

/* The hash and length of a validated id, from the memo when this submission saw it before. */
static uint64_t id_hash(ledger *l, const char *text, size_t *length)
{
    ledger_memo *memo = &l->memo[((uintptr_t)text >> 3) % LEDGER_MEMO_SIZE];
    if (memo->text != text || memo->generation != l->generation) {
        memo->text = text;
        memo->generation = l->generation;
        memo->length = strnlen(text, COFFER_TRANSFER_ID_MAX + 1);
        memo->hash = store_hash(text, memo->length);
    }
    *length = memo->length;
    return memo->hash;
}

static uint32_t account_lookup(ledger *l, const char *id)
{
    size_t length;
    uint64_t hash = id_hash(l, id, &length);
    return store_account_find(l->store, id, length, hash);
}

static uint32_t transfer_lookup(ledger *l, const char *id)
{
    size_t length;
    uint64_t hash = id_hash(l, id, &length);
    return store_transfer_find(l->store, id, length, hash);
}

/* ---- undo ---------------------------------------------------------------------------------- */

static void undo_account(ledger *l, uint32_t index)
{
    if (!l->atomic)
        return;
    COFFER_ASSERT(l->undo_count < l->undo_capacity);
    ledger_undo *undo = &l->undo[l->undo_count++];
    undo->kind = UNDO_ACCOUNT;
    undo->index = index;
    undo->image.account = l->store->accounts[index];
}

static void undo_transfer(ledger *l, uint32_t index)
{
    if (!l->atomic)
        return;
    COFFER_ASSERT(l->undo_count < l->undo_capacity);
    ledger_undo *undo = &l->undo[l->undo_count++];
    undo->kind = UNDO_TRANSFER;
    undo->index = index;
    undo->image.transfer = l->store->transfers[index];
}

/* Restores before-images newest first (so the oldest image wins), then truncates the tables. */
static void undo_all(ledger *l, const store_mark *mark)
{
    store *s = l->store;
    while (l->undo_count > 0) {
        const ledger_undo *undo = &l->undo[--l->undo_count];
        if (undo->kind == UNDO_ACCOUNT && undo->index < s->accounts_count)
            s->accounts[undo->index] = undo->image.account;
        else if (undo->kind == UNDO_TRANSFER && undo->index < s->transfers_count)
            s->transfers[undo->index] = undo->image.transfer;
    }
    store_rollback(s, mark);
    l->new_holds_count = 0;
}

/* ---- recording ----------------------------------------------------------------------------- */

/* A change to one account: bump its version and write its history entry. */
static void account_changed(ledger *l, uint32_t account, uint64_t seq, uint32_t transfer,
                            uint8_t kind, bool debit)
{
    l->store->accounts[account].version++;
    store_history_append(l->store, account, seq, transfer, kind, debit);
}

typedef struct resolved {
    uint32_t from, to, hold;
} resolved;

/* The submission's submitter, added to the store's names with its first recorded transfer: a
 * submission that records no transfer leaves the names as they were, as its replay does, so
 * the live store and a replay of its log number them alike. */
static uint16_t submitter_index(ledger *l)
{
    if (l->submitter_name && !l->submitter)
        l->submitter = store_submitter_intern(l->store, l->submitter_name, l->submitter_length);
    return l->submitter;
}

/* Records an event's id with its content; names that did not resolve go to the aux record. */
static uint32_t record_transfer(ledger *l, const coffer_event *event, const resolved *refs,
                                uint64_t seq, uint64_t timestamp)
{
    store *s = l->store;
    size_t length;
    uint64_t hash = id_hash(l, event->id, &length);
    uint32_t index = store_transfer_append(s, event->id, length, hash);
    store_transfer *transfer = &s->transfers[index];
    transfer->seq = seq;
    transfer->timestamp = timestamp;
    transfer->op = event->op;
    transfer->flags = event->flags;
    transfer->amount_requested = event->amount;
    transfer->from = refs->from;
    transfer->to = refs->to;
    transfer->link = refs->hold;
    transfer->submitter = submitter_index(l);
    if (event->op == COFFER_OP_TRANSFER && event->hold_timeout_ms > 0)
        transfer->expires_at = timestamp + event->hold_timeout_ms * 1000000ULL;

    bool from_missing = event->op == COFFER_OP_TRANSFER && refs->from == STORE_NONE;
    bool to_missing = event->op == COFFER_OP_TRANSFER && refs->to == STORE_NONE;
    bool hold_missing = event->op != COFFER_OP_TRANSFER && refs->hold == STORE_NONE;
    bool expects = event->flags & (COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO);
    if (!from_missing && !to_missing && !hold_missing && !expects && event->metadata_len == 0)
        return index;

    store_aux aux = {0};
    aux.expect_from_version = event->expect_from_version;
    aux.expect_to_version = event->expect_to_version;
    aux.metadata_len = event->metadata_len;
    aux.from_len = from_missing ? (uint8_t)id_length(event->from) : 0;
    aux.to_len = to_missing ? (uint8_t)id_length(event->to) : 0;
    aux.hold_len = hold_missing ? (uint8_t)id_length(event->hold_id) : 0;
    uint64_t offset = store_arena_append(s, &aux, sizeof aux);
    /* Contiguous after the header: store_arena_append aligns only its first byte. */
    if (aux.metadata_len)
        store_arena_append_raw(s, event->metadata, aux.metadata_len);
    if (aux.from_len)
        store_arena_append_raw(s, event->from, aux.from_len);
    if (aux.to_len)
        store_arena_append_raw(s, event->to, aux.to_len);
    if (aux.hold_len)
        store_arena_append_raw(s, event->hold_id, aux.hold_len);
    s->transfers[index].aux_offset = offset;
    return index;
}

static void result_rejected(coffer_result *result, int code, int field, uint64_t seq,
                            uint64_t timestamp)
{
    memset(result, 0, sizeof *result);
    result->code = code;
    result->field = ledger_field_name(field);
    result->seq = seq;
    result->timestamp = timestamp;
    result->state = COFFER_STATE_REJECTED;
}

/* Records a rejection: the id keeps this outcome forever (docs/semantics.md). */
static void record_rejection(ledger *l, const coffer_event *event, const coffer_result *result,
                             uint64_t seq, uint64_t timestamp)
{
    resolved refs = {STORE_NONE, STORE_NONE, STORE_NONE};
    if (event->op == COFFER_OP_TRANSFER) {
        refs.from = account_lookup(l, event->from);
        refs.to = account_lookup(l, event->to);
    } else {
        refs.hold = transfer_lookup(l, event->hold_id);
    }
    uint32_t index = record_transfer(l, event, &refs, seq, timestamp);
    store_transfer *transfer = &l->store->transfers[index];
    transfer->code = (uint16_t)result->code;
    transfer->state = COFFER_STATE_REJECTED;
    transfer->amount = result->code == COFFER_VERSION_MISMATCH ? (int64_t)result->actual_version
                       : result->code == COFFER_INSUFFICIENT_BALANCE ? result->available
                                                                     : 0;
    transfer->field = (uint8_t)ledger_field_index(result->field);
}

/* ---- idempotency --------------------------------------------------------------------------- */

static bool bytes_equal(const char *a, size_t a_length, const char *b, size_t b_length)
{
    return a_length == b_length && (a_length == 0 || memcmp(a, b, a_length) == 0);
}

/*
 * A recorded transfer as a retry reads it, filled from the store or from a cold record, so that
 * one comparison and one replay serve both. Names point into the store or into l->cold; `from`
 * and `to` are the named accounts (a post or void: the hold's, when it applied; else empty).
 */
typedef struct recorded {
    uint8_t op, flags, state;
    int code, field;
    uint64_t seq, timestamp, expires_at;
    int64_t amount; /* what moved; 0 for a rejection */
    int64_t amount_requested, available;
    uint64_t actual_version, expect_from_version, expect_to_version;
    const char *from, *to, *hold_id, *metadata;
    size_t from_length, to_length, hold_id_length, metadata_length;
} recorded;

static void recorded_name(const store *s, uint32_t account, const char *aux_name, size_t aux_length,
                          const char **name, size_t *length)
{
    if (account != STORE_NONE) {
        const store_account *a = &s->accounts[account];
        *name = store_account_id(s, a);
        *length = a->id_len;
    } else {
        *name = aux_name;
        *length = aux_length;
    }
}

/* Names that did not resolve when it was recorded are read from its aux record. */
static void recorded_from_store(const store *s, const store_transfer *t, recorded *r)
{
    const store_aux *aux = store_transfer_aux(s, t);
    const char *aux_bytes = aux ? (const char *)(aux + 1) : 0;
    uint32_t metadata_len = aux ? aux->metadata_len : 0;
    const char *from_name = aux ? aux_bytes + metadata_len : 0;
    const char *to_name = aux ? from_name + aux->from_len : 0;
    const char *hold_name = aux ? to_name + aux->to_len : 0;
    bool rejected = t->state == COFFER_STATE_REJECTED;
    *r = (recorded){
        .op = t->op,
        .flags = t->flags,
        .state = t->state,
        .code = t->code,
        .field = t->field,
        .seq = t->seq,
        .timestamp = t->timestamp,
        .expires_at = t->expires_at,
        .amount = rejected ? 0 : t->amount,
        .amount_requested = t->amount_requested,
        .available = rejected && t->code == COFFER_INSUFFICIENT_BALANCE ? t->amount : 0,
        .actual_version = rejected && t->code == COFFER_VERSION_MISMATCH ? (uint64_t)t->amount : 0,
        .expect_from_version = aux ? aux->expect_from_version : 0,
        .expect_to_version = aux ? aux->expect_to_version : 0,
        .metadata = aux_bytes,
        .metadata_length = metadata_len,
    };
    recorded_name(s, t->from, from_name, aux ? aux->from_len : 0, &r->from, &r->from_length);
    recorded_name(s, t->to, to_name, aux ? aux->to_len : 0, &r->to, &r->to_length);
    if (t->link != STORE_NONE && t->op != COFFER_OP_TRANSFER) {
        const store_transfer *hold = &s->transfers[t->link];
        r->hold_id = store_transfer_id(s, hold);
        r->hold_id_length = hold->id_len;
    } else if (aux) {
        r->hold_id = hold_name;
        r->hold_id_length = aux->hold_len;
    }
}

static size_t cold_length(const char *text, size_t max)
{
    size_t length = strnlen(text, max + 1);
    COFFER_ASSERT(length <= max);
    return length;
}

static void recorded_from_cold(const ledger_cold *cold, recorded *r)
{
    const coffer_transfer *t = &cold->transfer;
    COFFER_ASSERT(t->metadata_len <= COFFER_METADATA_MAX);
    *r = (recorded){
        .op = t->op,
        .flags = t->flags,
        .state = t->state,
        .code = t->code,
        .field = cold->field,
        .seq = t->seq,
        .timestamp = t->timestamp,
        .expires_at = t->expires_at,
        .amount = t->amount,
        .amount_requested = t->amount_requested,
        .available = cold->available,
        .actual_version = cold->actual_version,
        .expect_from_version = t->expect_from_version,
        .expect_to_version = t->expect_to_version,
        .from = t->from,
        .from_length = cold_length(t->from, COFFER_ACCOUNT_ID_MAX),
        .to = t->to,
        .to_length = cold_length(t->to, COFFER_ACCOUNT_ID_MAX),
        .hold_id = t->hold_id,
        .hold_id_length = cold_length(t->hold_id, COFFER_TRANSFER_ID_MAX),
        .metadata = t->metadata,
        .metadata_length = t->metadata_len,
    };
}

/* The first field in which a retry differs from the recorded event, FIELD_NONE if identical.
 * Order: docs/semantics.md "Transfers", step 2. */
static int transfer_difference(const recorded *r, const coffer_event *e)
{
    if (r->op != e->op)
        return (r->op == COFFER_OP_POST || e->op == COFFER_OP_POST) ? FIELD_POST : FIELD_VOID;
    /* A plain transfer retried as a hold (or the reverse) differs in kind, named first. */
    if (r->op == COFFER_OP_TRANSFER && (r->expires_at != 0) != (e->hold_timeout_ms > 0))
        return FIELD_HOLD_TIMEOUT;
    if (r->op == COFFER_OP_TRANSFER) {
        if (!bytes_equal(r->from, r->from_length, e->from, id_length(e->from)))
            return FIELD_FROM;
        if (!bytes_equal(r->to, r->to_length, e->to, id_length(e->to)))
            return FIELD_TO;
    }
    if (r->amount_requested != e->amount)
        return FIELD_AMOUNT;
    if (r->op == COFFER_OP_TRANSFER) {
        uint64_t timeout_ms = r->expires_at ? (r->expires_at - r->timestamp) / 1000000ULL : 0;
        if (timeout_ms != e->hold_timeout_ms)
            return FIELD_HOLD_TIMEOUT;
        if ((r->flags ^ e->flags) & COFFER_FLAG_UP_TO)
            return FIELD_UP_TO;
        if ((r->flags ^ e->flags) & COFFER_FLAG_EXPECT_FROM)
            return FIELD_EXPECT_FROM;
        if ((r->flags & COFFER_FLAG_EXPECT_FROM) &&
            r->expect_from_version != e->expect_from_version)
            return FIELD_EXPECT_FROM;
        if ((r->flags ^ e->flags) & COFFER_FLAG_EXPECT_TO)
            return FIELD_EXPECT_TO;
        if ((r->flags & COFFER_FLAG_EXPECT_TO) && r->expect_to_version != e->expect_to_version)
            return FIELD_EXPECT_TO;
    } else if (!bytes_equal(r->hold_id, r->hold_id_length, e->hold_id, id_length(e->hold_id))) {
        return r->op == COFFER_OP_POST ? FIELD_POST : FIELD_VOID;
    }
    if (!bytes_equal(r->metadata, r->metadata_length, e->metadata, e->metadata_len))
        return FIELD_METADATA;
    return FIELD_NONE;
}

static int account_difference(const store *s, const store_account *a, const coffer_event *e)
{
    if (memcmp(a->currency, e->currency, strlen(e->currency) + 1) != 0)
        return FIELD_CURRENCY;
    if ((a->flags ^ e->flags) & COFFER_FLAG_MIN_UNBOUNDED)
        return FIELD_MIN_BALANCE;
    if (!(a->flags & COFFER_FLAG_MIN_UNBOUNDED) && a->min_balance != e->min_balance)
        return FIELD_MIN_BALANCE;
    if ((a->flags ^ e->flags) & COFFER_FLAG_HAS_MAX)
        return FIELD_MAX_BALANCE;
    if ((a->flags & COFFER_FLAG_HAS_MAX) && a->max_balance != e->max_balance)
        return FIELD_MAX_BALANCE;
    if (!bytes_equal(s->arena + a->metadata_offset, a->metadata_len, e->metadata, e->metadata_len))
        return FIELD_METADATA;
    return FIELD_NONE;
}

/* Where an event's id stands: new, an identical replay, or reused with other content. */
typedef struct prior {
    bool recorded;  /* the id has an outcome: in memory (index) or cold (in l->cold) */
    uint32_t index; /* the recorded account or transfer, STORE_NONE when new or cold */
    int difference; /* FIELD_NONE: identical */
} prior;

/* A transfer id the store does not hold: cold when the store was trimmed and `find` knows it.
 * Fills l->cold. Only a trimmed store pays for this. */
static bool cold_find(ledger *l, const char *id, size_t length, uint64_t hash)
{
    if (l->store->trimmed_seq == 0)
        return false;
    COFFER_ASSERT(l->cold_find != 0);
    if (!l->cold_find(l->cold_context, id, length, hash, &l->cold))
        return false;
    COFFER_ASSERT(l->cold.transfer.seq != 0 && l->cold.transfer.seq <= l->store->trimmed_seq);
    return true;
}

static prior prior_find(ledger *l, const coffer_event *event)
{
    const store *s = l->store;
    size_t length;
    uint64_t hash = id_hash(l, event->id, &length);
    prior found = {false, STORE_NONE, FIELD_NONE};
    recorded r;
    if (event->op == COFFER_OP_CREATE_ACCOUNT) {
        found.index = store_account_find(s, event->id, length, hash);
        if (found.index != STORE_NONE)
            found.difference = account_difference(s, &s->accounts[found.index], event);
    } else {
        found.index = store_transfer_find(s, event->id, length, hash);
        if (found.index != STORE_NONE) {
            recorded_from_store(s, &s->transfers[found.index], &r);
            found.difference = transfer_difference(&r, event);
        } else if (cold_find(l, event->id, length, hash)) {
            recorded_from_cold(&l->cold, &r);
            found.recorded = true;
            found.difference = transfer_difference(&r, event);
        }
    }
    found.recorded = found.recorded || found.index != STORE_NONE;
    return found;
}

/* The original outcome of a recorded transfer, as its first result reported it, given its
 * accounts right after it. */
static void result_replay_transfer(const recorded *r, coffer_account_after from,
                                   coffer_account_after to, coffer_result *result)
{
    memset(result, 0, sizeof *result);
    result->replayed = true;
    result->seq = r->seq;
    result->timestamp = r->timestamp;
    result->from = from;
    result->to = to;
    if (r->op != COFFER_OP_TRANSFER && r->from_length > 0) {
        memcpy(result->hold_from, r->from, r->from_length);
        memcpy(result->hold_to, r->to, r->to_length);
    }
    if (r->state == COFFER_STATE_REJECTED) {
        result->code = r->code;
        result->state = COFFER_STATE_REJECTED;
        result->field = ledger_field_name(r->field);
        if (r->code == COFFER_VERSION_MISMATCH)
            result->actual_version = r->actual_version;
        if (r->code == COFFER_INSUFFICIENT_BALANCE)
            result->available = r->available;
        return;
    }
    result->code = COFFER_EXISTS;
    result->amount = r->amount;
    result->expires_at = r->expires_at;
    bool hold = r->op == COFFER_OP_TRANSFER && r->expires_at != 0;
    result->state = hold ? COFFER_STATE_PENDING : COFFER_STATE_POSTED;
}

/* The original outcome of a recorded id (`found` by prior_find just before), as its first
 * result reported it. */
static void result_replay(ledger *l, const coffer_event *event, prior found, coffer_result *result)
{
    const store *s = l->store;
    recorded r;
    if (found.index == STORE_NONE) {
        recorded_from_cold(&l->cold, &r);
        result_replay_transfer(&r, l->cold.from_after, l->cold.to_after, result);
        return;
    }
    if (event->op == COFFER_OP_CREATE_ACCOUNT) {
        const store_account *account = &s->accounts[found.index];
        memset(result, 0, sizeof *result);
        result->replayed = true;
        result->code = COFFER_EXISTS;
        result->state = COFFER_STATE_POSTED;
        result->seq = account->created_seq;
        result->timestamp = account->created_at;
        result->from = (coffer_account_after){0, 0, 1};
        return;
    }
    const store_transfer *t = &s->transfers[found.index];
    coffer_account_after from = {0}, to = {0};
    if (!store_transfer_after_held(s, t)) {
        /* Held in memory, but an account's entry at or before it was evicted (a pending hold
         * older than the eviction, or a transfer that changed nothing after one): the accounts
         * right after it come from the index, like a cold id's. */
        size_t length;
        uint64_t hash = id_hash(l, event->id, &length);
        bool known = cold_find(l, event->id, length, hash);
        COFFER_ASSERT(known && l->cold.transfer.seq == t->seq);
        from = l->cold.from_after;
        to = l->cold.to_after;
    } else {
        if (t->from != STORE_NONE)
            from = ledger_account_after(s, t->from, t->seq);
        if (t->to != STORE_NONE)
            to = ledger_account_after(s, t->to, t->seq);
    }
    recorded_from_store(s, t, &r);
    result_replay_transfer(&r, from, to, result);
}

/* ---- applying new events ------------------------------------------------------------------- */

static int reject(coffer_result *result, int code, int field)
{
    result->code = code;
    result->field = ledger_field_name(field);
    result->state = COFFER_STATE_REJECTED;
    return code;
}

static bool has_floor(const store_account *account)
{
    return !(account->flags & COFFER_FLAG_MIN_UNBOUNDED);
}

static bool has_cap(const store_account *account)
{
    return account->flags & COFFER_FLAG_HAS_MAX;
}

static void hold_created(ledger *l, uint32_t hold)
{
    store *s = l->store;
    const store_transfer *transfer = &s->transfers[hold];
    s->holds_pending++;
    s->accounts[transfer->from].holds_pending++;
    s->accounts[transfer->to].holds_pending++;
    /* The heap cannot be rolled back cheaply, so an atomic submission indexes its holds only
     * once it commits. */
    if (l->atomic)
        l->new_holds[l->new_holds_count++] = hold;
    else
        store_hold_push(s, transfer->expires_at, hold);
}

static void hold_resolved(store *s, const store_transfer *hold)
{
    COFFER_ASSERT(s->holds_pending > 0);
    s->holds_pending--;
    s->accounts[hold->from].holds_pending--;
    s->accounts[hold->to].holds_pending--;
}

static int apply_account(ledger *l, const coffer_event *e, uint64_t seq, uint64_t timestamp,
                         coffer_result *result)
{
    store *s = l->store;
    size_t length;
    uint64_t hash = id_hash(l, e->id, &length);
    uint32_t index = store_account_append(s, e->id, length, hash);
    store_account *account = &s->accounts[index];
    memcpy(account->currency, e->currency, strlen(e->currency));
    account->flags = e->flags;
    account->min_balance = (e->flags & COFFER_FLAG_MIN_UNBOUNDED) ? 0 : e->min_balance;
    account->max_balance = (e->flags & COFFER_FLAG_HAS_MAX) ? e->max_balance : 0;
    account->version = 1;
    account->created_seq = seq;
    account->created_at = timestamp;
    if (e->metadata_len) {
        account->metadata_offset = store_arena_append_raw(s, e->metadata, e->metadata_len);
        account->metadata_len = e->metadata_len;
    }
    result->code = COFFER_CREATED;
    result->state = COFFER_STATE_POSTED;
    result->from = account_now(account);
    return COFFER_CREATED;
}

/* How much an up-to transfer can move: what both limits allow, at most the amount. */
static int64_t up_to_amount(const store_account *from, const store_account *to, int64_t amount)
{
    __int128 movable = amount;
    if (has_floor(from)) {
        __int128 room = (__int128)account_balance(from) - from->debits_held - from->min_balance;
        if (room < movable)
            movable = room;
    }
    if (has_cap(to)) {
        __int128 room = (__int128)to->max_balance - account_balance(to) - to->credits_held;
        if (room < movable)
            movable = room;
    }
    return movable > 0 ? (int64_t)movable : 0;
}

/* The checks of docs/semantics.md steps 9 and 10; COFFER_OK when the transfer may apply. */
static int transfer_limits(const store_account *from, const store_account *to, int64_t amount,
                           bool hold, coffer_result *result)
{
    __int128 from_debits = (__int128)(hold ? from->debits_held : from->debits_posted) + amount;
    __int128 to_credits = (__int128)(hold ? to->credits_held : to->credits_posted) + amount;
    __int128 available = (__int128)account_balance(from) - from->debits_held;
    if (from_debits > INT64_MAX || to_credits > INT64_MAX || available - amount < INT64_MIN)
        return reject(result, COFFER_OVERFLOW, FIELD_AMOUNT);
    if (has_floor(from) && available - amount < from->min_balance) {
        result->available = (int64_t)available;
        return reject(result, COFFER_INSUFFICIENT_BALANCE, FIELD_NONE);
    }
    if (has_cap(to) && (__int128)account_balance(to) + to->credits_held + amount > to->max_balance)
        return reject(result, COFFER_EXCEEDS_MAX_BALANCE, FIELD_NONE);
    return COFFER_OK;
}

static int apply_transfer(ledger *l, const coffer_event *e, uint64_t seq, uint64_t timestamp,
                          coffer_result *result)
{
    store *s = l->store;
    if (strcmp(e->from, e->to) == 0)
        return reject(result, COFFER_SAME_ACCOUNT, FIELD_NONE);
    resolved refs = {account_lookup(l, e->from), account_lookup(l, e->to), STORE_NONE};
    if (refs.from == STORE_NONE)
        return reject(result, COFFER_ACCOUNT_NOT_FOUND, FIELD_FROM);
    if (refs.to == STORE_NONE)
        return reject(result, COFFER_ACCOUNT_NOT_FOUND, FIELD_TO);
    store_account *from = &s->accounts[refs.from];
    store_account *to = &s->accounts[refs.to];
    result->from = account_now(from);
    result->to = account_now(to);
    if (memcmp(from->currency, to->currency, sizeof from->currency) != 0)
        return reject(result, COFFER_CURRENCY_MISMATCH, FIELD_NONE);
    if ((e->flags & COFFER_FLAG_EXPECT_FROM) && from->version != e->expect_from_version) {
        result->actual_version = from->version;
        return reject(result, COFFER_VERSION_MISMATCH, FIELD_EXPECT_FROM);
    }
    if ((e->flags & COFFER_FLAG_EXPECT_TO) && to->version != e->expect_to_version) {
        result->actual_version = to->version;
        return reject(result, COFFER_VERSION_MISMATCH, FIELD_EXPECT_TO);
    }
    bool hold = e->hold_timeout_ms > 0;
    int64_t amount = (e->flags & COFFER_FLAG_UP_TO) ? up_to_amount(from, to, e->amount) : e->amount;
    int code = transfer_limits(from, to, amount, hold, result);
    if (code != COFFER_OK)
        return code;

    uint32_t index = record_transfer(l, e, &refs, seq, timestamp);
    store_transfer *transfer = &s->transfers[index];
    transfer->code = COFFER_CREATED;
    transfer->amount = amount;
    transfer->state = hold ? COFFER_STATE_PENDING : COFFER_STATE_POSTED;
    if (amount > 0) {
        undo_account(l, refs.from);
        undo_account(l, refs.to);
        if (hold) {
            from->debits_held += amount;
            to->credits_held += amount;
            hold_created(l, index);
        } else {
            from->debits_posted += amount;
            to->credits_posted += amount;
        }
        uint8_t kind = hold ? COFFER_HISTORY_HELD : COFFER_HISTORY_POSTED;
        account_changed(l, refs.from, seq, index, kind, true);
        account_changed(l, refs.to, seq, index, kind, false);
    }
    result->code = COFFER_CREATED;
    result->state = transfer->state;
    result->amount = amount;
    result->expires_at = transfer->expires_at;
    result->from = account_now(from);
    result->to = account_now(to);
    return COFFER_CREATED;
}

/* A post or void reports the hold's accounts: their state and their ids. */
static void result_hold_accounts(const store *s, const store_transfer *hold, coffer_result *result)
{
    const store_account *from = &s->accounts[hold->from], *to = &s->accounts[hold->to];
    result->from = account_now(from);
    result->to = account_now(to);
    memcpy(result->hold_from, from->id, from->id_len);
    result->hold_from[from->id_len] = 0;
    memcpy(result->hold_to, to->id, to->id_len);
    result->hold_to[to->id_len] = 0;
}

/* The checks of a post or void against its hold; COFFER_OK when it may apply. */
static int resolution_checks(const store *s, const coffer_event *e, const store_transfer *hold,
                             uint64_t timestamp, int64_t *captured, coffer_result *result)
{
    int field = e->op == COFFER_OP_POST ? FIELD_POST : FIELD_VOID;
    if (!hold)
        return reject(result, COFFER_HOLD_NOT_FOUND, field);
    if (hold->op != COFFER_OP_TRANSFER || hold->expires_at == 0 ||
        hold->state == COFFER_STATE_REJECTED)
        return reject(result, COFFER_HOLD_NOT_FOUND, field);
    result_hold_accounts(s, hold, result);
    if (hold->state == COFFER_STATE_CAPTURED)
        return reject(result, COFFER_HOLD_ALREADY_POSTED, field);
    if (hold->state == COFFER_STATE_VOIDED)
        return reject(result, COFFER_HOLD_ALREADY_VOIDED, field);
    /* At or past expires_at the hold is expired, whether or not the sweep has run yet. */
    if (hold->state == COFFER_STATE_EXPIRED || timestamp >= hold->expires_at)
        return reject(result, COFFER_HOLD_EXPIRED, field);
    COFFER_ASSERT(hold->state == COFFER_STATE_PENDING);
    *captured = (e->op == COFFER_OP_POST && e->amount != 0) ? e->amount : hold->amount;
    if (e->op == COFFER_OP_VOID)
        return COFFER_OK;
    if (*captured > hold->amount)
        return reject(result, COFFER_HOLD_AMOUNT_EXCEEDED, FIELD_AMOUNT);
    const store_account *from = &s->accounts[hold->from];
    const store_account *to = &s->accounts[hold->to];
    if ((__int128)from->debits_posted + *captured > INT64_MAX ||
        (__int128)to->credits_posted + *captured > INT64_MAX)
        return reject(result, COFFER_OVERFLOW, FIELD_AMOUNT);
    return COFFER_OK;
}

/* Releases a pending hold's reservation from both accounts. */
static void hold_release(store *s, const store_transfer *hold)
{
    s->accounts[hold->from].debits_held -= hold->amount;
    s->accounts[hold->to].credits_held -= hold->amount;
    COFFER_ASSERT(s->accounts[hold->from].debits_held >= 0);
    COFFER_ASSERT(s->accounts[hold->to].credits_held >= 0);
}

/* The hold a post or void names when the store trimmed it, as the checks read a hold: enough
 * of a record to say why it cannot be resolved (a cold hold is never pending). NULL when the
 * id has no recorded outcome. */
static const store_transfer *hold_cold(ledger *l, const char *hold_id, store_transfer *out)
{
    size_t length;
    uint64_t hash = id_hash(l, hold_id, &length);
    if (!cold_find(l, hold_id, length, hash))
        return 0;
    const coffer_transfer *t = &l->cold.transfer;
    *out = (store_transfer){.seq = t->seq,
                            .timestamp = t->timestamp,
                            .amount = t->amount,
                            .expires_at = t->expires_at,
                            .from = STORE_NONE,
                            .to = STORE_NONE,
                            .link = STORE_NONE,
                            .code = (uint16_t)t->code,
                            .op = t->op,
                            .state = t->state,
                            .flags = t->flags};
    if (t->op != COFFER_OP_TRANSFER || t->expires_at == 0 || t->state == COFFER_STATE_REJECTED)
        return out; /* hold_not_found, as in memory */
    COFFER_ASSERT(t->state != COFFER_STATE_PENDING);
    /* An applied hold named accounts that existed, and accounts are never trimmed. Their
     * names are hashed here, not memoized: l->cold is refilled in place. */
    size_t from_length = cold_length(t->from, COFFER_ACCOUNT_ID_MAX);
    size_t to_length = cold_length(t->to, COFFER_ACCOUNT_ID_MAX);
    out->from =
        store_account_find(l->store, t->from, from_length, store_hash(t->from, from_length));
    out->to = store_account_find(l->store, t->to, to_length, store_hash(t->to, to_length));
    COFFER_ASSERT(out->from != STORE_NONE && out->to != STORE_NONE);
    return out;
}

static int apply_resolution(ledger *l, const coffer_event *e, uint64_t seq, uint64_t timestamp,
                            coffer_result *result)
{
    store *s = l->store;
    uint32_t hold_index = transfer_lookup(l, e->hold_id);
    store_transfer cold;
    const store_transfer *found =
        hold_index != STORE_NONE ? &s->transfers[hold_index] : hold_cold(l, e->hold_id, &cold);
    int64_t captured = 0;
    int code = resolution_checks(s, e, found, timestamp, &captured, result);
    if (code != COFFER_OK)
        return code;
    COFFER_ASSERT(hold_index != STORE_NONE); /* only a pending hold passes the checks */

    store_transfer *hold = &s->transfers[hold_index];
    resolved refs = {hold->from, hold->to, hold_index};
    uint32_t index = record_transfer(l, e, &refs, seq, timestamp);
    undo_transfer(l, hold_index);
    undo_account(l, refs.from);
    undo_account(l, refs.to);
    hold_release(s, hold);
    hold_resolved(s, hold);
    uint8_t kind = COFFER_HISTORY_RELEASED;
    if (e->op == COFFER_OP_POST) {
        s->accounts[refs.from].debits_posted += captured;
        s->accounts[refs.to].credits_posted += captured;
        hold->state = COFFER_STATE_CAPTURED;
        kind = COFFER_HISTORY_CAPTURED;
    } else {
        hold->state = COFFER_STATE_VOIDED;
    }
    hold->link = index;
    store_transfer *transfer = &s->transfers[index];
    transfer->code = COFFER_CREATED;
    transfer->state = COFFER_STATE_POSTED;
    transfer->amount = e->op == COFFER_OP_POST ? captured : hold->amount;
    account_changed(l, refs.from, seq, index, kind, true);
    account_changed(l, refs.to, seq, index, kind, false);
    result->code = COFFER_CREATED;
    result->state = COFFER_STATE_POSTED;
    result->amount = transfer->amount;
    result_hold_accounts(s, hold, result);
    return COFFER_CREATED;
}

void ledger_expire(ledger *l, uint32_t hold_index, uint64_t seq, uint64_t timestamp,
                   coffer_result *result)
{
    store *s = l->store;
    COFFER_ASSERT(!l->atomic);
    store_transfer *hold = &s->transfers[hold_index];
    COFFER_ASSERT(hold->state == COFFER_STATE_PENDING && timestamp >= hold->expires_at);
    hold_release(s, hold);
    hold_resolved(s, hold);
    hold->state = COFFER_STATE_EXPIRED;
    store_expiry_append(s, seq, timestamp, hold_index);
    account_changed(l, hold->from, seq, hold_index, COFFER_HISTORY_EXPIRED, true);
    account_changed(l, hold->to, seq, hold_index, COFFER_HISTORY_EXPIRED, false);
    memset(result, 0, sizeof *result);
    result->code = COFFER_OK;
    result->state = COFFER_STATE_EXPIRED;
    result->seq = seq;
    result->timestamp = timestamp;
    result->amount = hold->amount;
    result->expires_at = hold->expires_at;
    result_hold_accounts(s, hold, result);
}

static int apply_new(ledger *l, const coffer_event *e, uint64_t seq, uint64_t timestamp,
                     coffer_result *result)
{
    memset(result, 0, sizeof *result);
    result->seq = seq;
    result->timestamp = timestamp;
    switch (e->op) {
    case COFFER_OP_CREATE_ACCOUNT:
        return apply_account(l, e, seq, timestamp, result);
    case COFFER_OP_TRANSFER:
        return apply_transfer(l, e, seq, timestamp, result);
    default:
        return apply_resolution(l, e, seq, timestamp, result);
    }
}

/* ---- submissions --------------------------------------------------------------------------- */

static bool capacity_full(const store *s, const coffer_event *e, uint64_t accounts_pending,
                          uint64_t transfers_pending)
{
    if (e->op == COFFER_OP_CREATE_ACCOUNT)
        return s->accounts_count + accounts_pending >= s->limits.accounts_max;
    return s->transfers_count + transfers_pending >= s->limits.transfers_max;
}

static bool rejection_recorded(const coffer_event *e, int code)
{
    return e->op != COFFER_OP_CREATE_ACCOUNT && !coffer_code_is_success(code);
}

static void apply_single(ledger *l, const coffer_event *e, uint64_t seq, uint64_t timestamp,
                         coffer_result *result)
{
    int field;
    int code = ledger_validate(e, &field);
    if (code != COFFER_OK) {
        result_rejected(result, code, field, 0, 0);
        return;
    }
    prior found = prior_find(l, e);
    if (found.recorded) {
        if (found.difference != FIELD_NONE)
            result_rejected(result, COFFER_ID_REUSED, found.difference, 0, 0);
        else
            result_replay(l, e, found, result);
        return;
    }
    if (capacity_full(l->store, e, 0, 0)) {
        result_rejected(result, COFFER_CAPACITY_EXCEEDED, FIELD_NONE, 0, 0);
        return;
    }
    code = apply_new(l, e, seq, timestamp, result);
    if (rejection_recorded(e, code))
        record_rejection(l, e, result, seq, timestamp);
}

/* An atomic submission refused before anything applied: `failed` carries the reason, the rest
 * batch_failed, and nothing is recorded. */
static void refuse_all(coffer_result *results, size_t count, size_t failed, int code, int field)
{
    for (size_t i = 0; i < count; i++)
        if (i == failed)
            result_rejected(&results[i], code, field, 0, 0);
        else
            result_rejected(&results[i], COFFER_BATCH_FAILED, FIELD_NONE, 0, 0);
}

static bool same_id(const coffer_event *a, const coffer_event *b)
{
    return (a->op == COFFER_OP_CREATE_ACCOUNT) == (b->op == COFFER_OP_CREATE_ACCOUNT) &&
           strcmp(a->id, b->id) == 0;
}

/* True when the id of events[i] already appeared earlier in the submission. Small submissions
 * compare pairwise; large ones use the scratch set. */
static bool id_repeated(ledger *l, const coffer_event *events, size_t count, size_t i)
{
    const coffer_event *e = &events[i];
    if (count <= 32) {
        for (size_t earlier = 0; earlier < i; earlier++)
            if (same_id(&events[earlier], e))
                return true;
        return false;
    }
    bool account = e->op == COFFER_OP_CREATE_ACCOUNT;
    size_t length;
    uint64_t hash = id_hash(l, e->id, &length) ^ (account ? 0x5bd1e995u : 0);
    for (size_t position = hash & l->seen_mask;; position = (position + 1) & l->seen_mask) {
        uint64_t slot = l->seen[position];
        if (slot == 0) {
            l->seen[position] = i + 1;
            return false;
        }
        if (same_id(&events[slot - 1], e))
            return true;
    }
}

/* Validation and repeated ids; returns the index of the first bad event or count. */
static size_t atomic_validate(ledger *l, const coffer_event *events, size_t count, int *code,
                              int *field)
{
    if (count > 32)
        memset(l->seen, 0, (l->seen_mask + 1) * sizeof *l->seen);
    for (size_t i = 0; i < count; i++) {
        *code = ledger_validate(&events[i], field);
        if (*code != COFFER_OK)
            return i;
        if (id_repeated(l, events, count, i)) {
            *code = COFFER_INVALID_FIELD;
            *field = FIELD_ID;
            return i;
        }
    }
    return count;
}

/* All new, an exact replay, or refused (docs/semantics.md "Atomic batches"). Returns true when
 * the submission was answered here (replayed or refused). */
static bool atomic_prior(ledger *l, const coffer_event *events, size_t count,
                         coffer_result *results)
{
    size_t existing = 0, first_existing = count, first_different = count;
    int existing_field = FIELD_NONE, different_field = FIELD_NONE;
    for (size_t i = 0; i < count; i++) {
        prior found = prior_find(l, &events[i]);
        if (!found.recorded)
            continue;
        if (existing++ == 0) {
            first_existing = i;
            existing_field = found.difference; /* FIELD_NONE when it matches its record */
        }
        if (found.difference != FIELD_NONE && first_different == count) {
            first_different = i;
            different_field = found.difference;
        }
    }
    if (existing == 0)
        return false;
    if (existing < count) {
        /* A mix of recorded and new events. When the first recorded one matches its record,
         * nothing about it is wrong but the mix: id_reused without a field says so. */
        refuse_all(results, count, first_existing, COFFER_ID_REUSED, existing_field);
    } else if (first_different < count) {
        refuse_all(results, count, first_different, COFFER_ID_REUSED, different_field);
    } else {
        for (size_t i = 0; i < count; i++) {
            /* Found again: l->cold holds one cold record at a time. */
            prior found = prior_find(l, &events[i]);
            result_replay(l, &events[i], found, &results[i]);
        }
    }
    return true;
}

static bool atomic_capacity(const store *s, const coffer_event *events, size_t count)
{
    uint64_t accounts = 0, transfers = 0;
    for (size_t i = 0; i < count; i++)
        *(events[i].op == COFFER_OP_CREATE_ACCOUNT ? &accounts : &transfers) += 1;
    return s->accounts_count + accounts <= s->limits.accounts_max &&
           s->transfers_count + transfers <= s->limits.transfers_max;
}

/* Undoes a failed atomic submission and records every transfer id of it as rejected: the
 * failing one with its own code, the rest batch_failed. */
static void atomic_fail(ledger *l, const coffer_event *events, size_t count, size_t failed,
                        const store_mark *mark, uint64_t seq0, uint64_t ts0, coffer_result *results)
{
    coffer_result reason = results[failed];
    undo_all(l, mark);
    l->atomic = false;
    l->submitter = 0; /* a name the batch added is gone with it; the rejections add it again */
    for (size_t i = 0; i < count; i++) {
        if (i == failed) {
            results[i] = reason;
        } else {
            result_rejected(&results[i], COFFER_BATCH_FAILED, FIELD_NONE, seq0 + i, ts0 + i);
        }
        if (events[i].op == COFFER_OP_CREATE_ACCOUNT) {
            results[i].seq = results[i].timestamp = 0; /* account rejections are not recorded */
            continue;
        }
        record_rejection(l, &events[i], &results[i], seq0 + i, ts0 + i);
    }
}

static void apply_atomic(ledger *l, const coffer_event *events, size_t count, uint64_t seq0,
                         uint64_t ts0, coffer_result *results)
{
    int code, field;
    size_t bad = atomic_validate(l, events, count, &code, &field);
    if (bad < count) {
        refuse_all(results, count, bad, code, field);
        return;
    }
    if (atomic_prior(l, events, count, results))
        return;
    if (!atomic_capacity(l->store, events, count)) {
        refuse_all(results, count, 0, COFFER_CAPACITY_EXCEEDED, FIELD_NONE);
        return;
    }
    store_mark mark = store_mark_get(l->store);
    l->atomic = true;
    l->undo_count = 0;
    l->new_holds_count = 0;
    for (size_t i = 0; i < count; i++) {
        code = apply_new(l, &events[i], seq0 + i, ts0 + i, &results[i]);
        if (!coffer_code_is_success(code)) {
            atomic_fail(l, events, count, i, &mark, seq0, ts0, results);
            return;
        }
    }
    l->atomic = false;
    for (size_t i = 0; i < l->new_holds_count; i++) {
        const store_transfer *hold = &l->store->transfers[l->new_holds[i]];
        store_hold_push(l->store, hold->expires_at, l->new_holds[i]);
    }
    l->new_holds_count = 0;
    l->undo_count = 0;
}

/* ---- prefetching --------------------------------------------------------------------------- */

/* Index slots and records are scattered over gigabytes: one event's lookups are cache misses
 * that stall the writer. Looking a few events ahead, we ask for the index slots first, then
 * (once those have arrived) for the records they point to, so the misses overlap. */
#define PREFETCH_DISTANCE 8

static void prefetch_slot(ledger *l, const store_index *index, const char *id)
{
    if (!id || strnlen(id, COFFER_TRANSFER_ID_MAX + 1) > COFFER_TRANSFER_ID_MAX)
        return;
    size_t length;
    __builtin_prefetch(&index->slots[id_hash(l, id, &length) & index->mask]);
}

static void prefetch_slots(ledger *l, const coffer_event *e)
{
    if (e->op == COFFER_OP_TRANSFER) {
        prefetch_slot(l, &l->store->account_index, e->from);
        prefetch_slot(l, &l->store->account_index, e->to);
    }
    prefetch_slot(l, &l->store->transfer_index, e->id);
}

/* The account an id's first probe points to, if its fingerprint matches (a guess: enough to
 * prefetch, never used to decide anything). */
static const store_account *account_guess(ledger *l, const char *id)
{
    const store *s = l->store;
    if (!id || strnlen(id, COFFER_ACCOUNT_ID_MAX + 1) > COFFER_ACCOUNT_ID_MAX)
        return 0;
    size_t length;
    uint64_t hash = id_hash(l, id, &length);
    uint64_t slot = s->account_index.slots[hash & s->account_index.mask];
    if (!slot || (slot >> 32) != (hash >> 32))
        return 0;
    return &s->accounts[(uint32_t)slot - 1];
}

static void prefetch_records(ledger *l, const coffer_event *e)
{
    if (e->op != COFFER_OP_TRANSFER)
        return;
    const store_account *guesses[2] = {account_guess(l, e->from), account_guess(l, e->to)};
    for (int i = 0; i < 2; i++)
        if (guesses[i])
            for (size_t line = 0; line < sizeof(store_account); line += 64)
                __builtin_prefetch((const char *)guesses[i] + line);
}

/* The old entry a history append reads (see store_history_append). */
static void prefetch_history(ledger *l, const coffer_event *e)
{
    if (e->op != COFFER_OP_TRANSFER)
        return;
    const store_account *guesses[2] = {account_guess(l, e->from), account_guess(l, e->to)};
    for (int i = 0; i < 2; i++)
        if (guesses[i] && guesses[i]->history_jump != STORE_NONE &&
            guesses[i]->history_jump < l->store->history_count)
            __builtin_prefetch(&l->store->history[guesses[i]->history_jump]);
}

static void apply_independent(ledger *l, const coffer_event *events, size_t count, uint64_t seq0,
                              uint64_t ts0, coffer_result *results)
{
    for (size_t i = 0; i < count && i < PREFETCH_DISTANCE; i++)
        prefetch_slots(l, &events[i]);
    for (size_t i = 0; i < count; i++) {
        if (i + PREFETCH_DISTANCE < count)
            prefetch_slots(l, &events[i + PREFETCH_DISTANCE]);
        if (i + PREFETCH_DISTANCE / 2 < count)
            prefetch_records(l, &events[i + PREFETCH_DISTANCE / 2]);
        if (i + PREFETCH_DISTANCE / 4 < count)
            prefetch_history(l, &events[i + PREFETCH_DISTANCE / 4]);
        apply_single(l, &events[i], seq0 + i, ts0 + i, &results[i]);
    }
}

void ledger_apply(ledger *l, const coffer_event *events, size_t count, bool atomic,
                  const char *submitted_by, uint64_t seq0, uint64_t ts0, coffer_result *results)
{
    COFFER_ASSERT(count > 0 && count <= COFFER_BATCH_EVENTS_MAX);
    COFFER_ASSERT(!l->atomic);
    l->generation++; /* the memo forgets the previous submission's strings */
    l->submitter_name = submitted_by && submitted_by[0] ? submitted_by : 0;
    l->submitter_length = l->submitter_name ? strlen(l->submitter_name) : 0;
    l->submitter = 0;
    COFFER_ASSERT(l->submitter_length <= COFFER_SUBMITTER_MAX);
    if (atomic)
        apply_atomic(l, events, count, seq0, ts0, results);
    else
        apply_independent(l, events, count, seq0, ts0, results);
}
