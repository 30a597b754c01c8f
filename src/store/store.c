/*
 * store.c — the in-memory tables. Memory is committed only in store_reserve(); every append
 * after it cannot fail, so the core applies a batch with no failure path for memory.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/check.h"

/* Indexes stay at most 70% full, so linear probing stays short; at 35% the next, twice as
 * large table is populated in the background so the rehash does not fault. */
#define INDEX_LOAD_PERCENT 70
#define INDEX_PREPARE_PERCENT 35
#define INDEX_MIN_SLOTS 1024

/* Worst-case arena bytes of one event and one account (ledger_needs_add counts the same). */
#define ARENA_PER_TRANSFER                                                                         \
    (COFFER_TRANSFER_ID_MAX + COFFER_METADATA_MAX + 2 * COFFER_ACCOUNT_ID_MAX +                    \
     COFFER_TRANSFER_ID_MAX + sizeof(store_aux) + 32)
#define ARENA_PER_ACCOUNT (COFFER_METADATA_MAX + 16)

enum {
    REGION_ACCOUNTS,
    REGION_TRANSFERS,
    REGION_HISTORY,
    REGION_EXPIRIES,
    REGION_HOLDS,
    REGION_ARENA
};

uint64_t store_hash(const char *bytes, size_t length)
{
    /* A small multiply-mix over 8-byte words: ids are short, and this is on every event. */
    const uint64_t multiplier = 0x9E3779B97F4A7C15ULL;
    uint64_t hash = 0x243F6A8885A308D3ULL ^ (length * multiplier);
    size_t offset = 0;
    for (; offset + 8 <= length; offset += 8) {
        uint64_t word;
        memcpy(&word, bytes + offset, 8);
        hash = (hash ^ word) * multiplier;
        hash ^= hash >> 29;
    }
    uint64_t tail = 0;
    memcpy(&tail, bytes + offset, length - offset);
    hash = (hash ^ tail) * multiplier;
    hash ^= hash >> 32;
    hash *= 0xD6E8FEB86659FD93ULL;
    hash ^= hash >> 32;
    return hash;
}

/* ---- id indexes ---------------------------------------------------------------------------- */

/* How an index reaches the key of a record: accounts and submitters keep it inline, transfers
 * in the arena. */
enum index_kind { INDEX_ACCOUNTS, INDEX_TRANSFERS, INDEX_SUBMITTERS };

typedef struct index_keys {
    const store *s;
    enum index_kind kind;
} index_keys;

static const char *key_of(const index_keys *keys, uint32_t record, size_t *length)
{
    if (keys->kind == INDEX_ACCOUNTS) {
        const store_account *account = &keys->s->accounts[record];
        *length = account->id_len;
        return account->id;
    }
    if (keys->kind == INDEX_SUBMITTERS) {
        const store_submitter *submitter = &keys->s->submitters[record];
        *length = submitter->length;
        return submitter->name;
    }
    const store_transfer *transfer = &keys->s->transfers[record];
    *length = transfer->id_len;
    return store_transfer_id(keys->s, transfer);
}

static uint32_t index_find(const store_index *index, const index_keys *keys, const char *id,
                           size_t id_len, uint64_t hash)
{
    if (!index->slots)
        return STORE_NONE;
    uint64_t fingerprint = hash >> 32;
    for (uint64_t position = hash & index->mask;; position = (position + 1) & index->mask) {
        uint64_t slot = index->slots[position];
        if (slot == 0)
            return STORE_NONE;
        if ((slot >> 32) != fingerprint)
            continue;
        uint32_t record = (uint32_t)(slot & 0xFFFFFFFFu) - 1;
        size_t length;
        const char *key = key_of(keys, record, &length);
        if (length == id_len && memcmp(key, id, id_len) == 0)
            return record;
    }
}

static void slots_insert(uint64_t *slots, uint64_t mask, uint64_t hash, uint32_t record)
{
    uint64_t position = hash & mask;
    while (slots[position] != 0)
        position = (position + 1) & mask;
    slots[position] = ((hash >> 32) << 32) | ((uint64_t)record + 1);
}

static void index_insert(store_index *index, uint64_t hash, uint32_t record)
{
    COFFER_ASSERT((index->count + 1) * 100 <= (index->mask + 1) * INDEX_LOAD_PERCENT);
    slots_insert(index->slots, index->mask, hash, record);
    index->count++;
}

/* Removes the most recently inserted record: clearing its slot restores the table exactly,
 * because no later insertion can have probed past it. Rollback removes in reverse order. */
static void index_remove_newest(store_index *index, uint64_t hash, uint32_t record)
{
    for (uint64_t position = hash & index->mask;; position = (position + 1) & index->mask) {
        uint64_t slot = index->slots[position];
        COFFER_ASSERT(slot != 0);
        if ((uint32_t)(slot & 0xFFFFFFFFu) == record + 1) {
            index->slots[position] = 0;
            index->count--;
            return;
        }
    }
}

/* Slots for `records` at most INDEX_LOAD_PERCENT full: a power of two. */
static uint64_t index_slots_for(uint64_t records)
{
    uint64_t slots = INDEX_MIN_SLOTS;
    while (records * 100 > slots * INDEX_LOAD_PERCENT)
        slots *= 2;
    return slots;
}

/* Reserves room for the slots of `records_max` records, or of what the budget can hold. */
static bool index_init(store_index *index, uint64_t records_max, region_budget *budget)
{
    memset(index, 0, sizeof *index);
    uint64_t bytes = index_slots_for(records_max) * sizeof(uint64_t), affordable = REGION_STEP;
    while (affordable < budget->max)
        affordable *= 2;
    if (bytes > affordable)
        bytes = affordable;
    if (!region_reserve(&index->regions[0], bytes) || !region_reserve(&index->regions[1], bytes))
        return false;
    if (region_ensure(&index->regions[0], INDEX_MIN_SLOTS * sizeof(uint64_t), budget) != REGION_OK)
        return false;
    index->slots = (uint64_t *)index->regions[0].base;
    index->mask = INDEX_MIN_SLOTS - 1;
    return true;
}

static void index_release(store_index *index, region_budget *budget)
{
    region_release(&index->regions[0], budget);
    region_release(&index->regions[1], budget);
    memset(index, 0, sizeof *index);
}

/* Grows (rehashing into the spare region) when `more` records would pass the load limit. */
static region_status index_reserve(store_index *index, const index_keys *keys, uint64_t records,
                                   uint64_t more, region_budget *budget)
{
    uint64_t slots = index->mask + 1, needed = index->count + more;
    if (needed * 100 <= slots * INDEX_LOAD_PERCENT)
        return REGION_OK;
    uint64_t grown = index_slots_for(needed);
    store_region *spare = &index->regions[1 - index->current];
    region_status status = region_ensure(spare, grown * sizeof(uint64_t), budget);
    if (status != REGION_OK)
        return status;
    uint64_t *fresh = (uint64_t *)spare->base;
    /* In record order, so ids are read sequentially; each slot is prefetched a few records
     * ahead of its insert, so the random writes overlap. */
    enum { AHEAD = 16 };
    uint64_t hashes[AHEAD];
    for (uint64_t record = 0; record < records + AHEAD; record++) {
        if (record >= AHEAD) {
            uint64_t earlier = record - AHEAD;
            slots_insert(fresh, grown - 1, hashes[earlier % AHEAD], (uint32_t)earlier);
        }
        if (record < records) {
            size_t length;
            const char *key = key_of(keys, (uint32_t)record, &length);
            hashes[record % AHEAD] = store_hash(key, length);
            __builtin_prefetch(&fresh[hashes[record % AHEAD] & (grown - 1)], 1);
        }
    }
    /* The old table's pages go back to the kernel (and the budget); they read as zero when it
     * is next the spare. */
    region_trim(&index->regions[index->current], 0, budget);
    index->current = 1 - index->current;
    index->slots = fresh;
    index->mask = grown - 1;
    return REGION_OK;
}

/* Once the table is INDEX_PREPARE_PERCENT full, commits the spare region at the next size and
 * announces it for populating, so the rehash does not fault. A bonus, like look-ahead. */
static void index_look_ahead(store_index *index, store_ranges *ahead, region_budget *budget)
{
    uint64_t slots = index->mask + 1;
    if (index->count * 100 <= slots * INDEX_PREPARE_PERCENT)
        return;
    store_region *spare = &index->regions[1 - index->current];
    uint64_t bytes = 2 * slots * sizeof(uint64_t);
    if (region_ensure(spare, bytes, budget) == REGION_OK)
        region_look_ahead(spare, 0, bytes, ahead, budget);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static uint64_t smaller(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

int store_init(store *s, const store_limits *limits)
{
    memset(s, 0, sizeof *s);
    if (limits->accounts_max == 0 || limits->accounts_max > STORE_RECORDS_MAX ||
        limits->transfers_max == 0 || limits->transfers_max > STORE_RECORDS_MAX ||
        limits->memory_max < STORE_MEMORY_MIN || limits->memory_max > STORE_MEMORY_MAX)
        return COFFER_INVALID_ARGUMENT;
    s->limits = *limits;
    s->budget.max = limits->memory_max;
    uint64_t transfers = limits->transfers_max, accounts = limits->accounts_max;
    /* Every record (transfer, post or void) writes at most two history entries and every
     * expiry two more; each hold is in the heap and expires at most once. No table can commit
     * more than the budget, so none reserves more address space than that. */
    uint64_t sizes[6] = {
        [REGION_ACCOUNTS] = accounts * sizeof(store_account),
        [REGION_TRANSFERS] = transfers * sizeof(store_transfer),
        [REGION_HISTORY] = smaller(4 * transfers, STORE_RECORDS_MAX) * sizeof(store_history),
        [REGION_EXPIRIES] = transfers * sizeof(store_expiry),
        [REGION_HOLDS] = transfers * sizeof(store_hold_ref),
        [REGION_ARENA] = 64 + transfers * ARENA_PER_TRANSFER + accounts * ARENA_PER_ACCOUNT,
    };
    bool ok = index_init(&s->account_index, accounts, &s->budget) &&
              index_init(&s->transfer_index, transfers, &s->budget) &&
              index_init(&s->submitter_index, STORE_SUBMITTERS_MAX, &s->budget) &&
              region_reserve(&s->submitters_region, STORE_SUBMITTERS_MAX * sizeof(store_submitter));
    for (int i = 0; ok && i < 6; i++)
        ok = region_reserve(&s->regions[i], smaller(sizes[i], limits->memory_max));
    if (!ok) {
        store_free(s);
        return COFFER_OUT_OF_MEMORY;
    }
    s->accounts = (store_account *)s->regions[REGION_ACCOUNTS].base;
    s->transfers = (store_transfer *)s->regions[REGION_TRANSFERS].base;
    s->history = (store_history *)s->regions[REGION_HISTORY].base;
    s->expiries = (store_expiry *)s->regions[REGION_EXPIRIES].base;
    s->holds = (store_hold_ref *)s->regions[REGION_HOLDS].base;
    s->arena = s->regions[REGION_ARENA].base;
    s->submitters = (store_submitter *)s->submitters_region.base;
    int code = store_reserve(s, 0, 0, 0, 64, 0);
    s->arena_used = 8; /* offset 0 means "none" */
    return code;
}

void store_free(store *s)
{
    for (int i = 0; i < 6; i++)
        region_release(&s->regions[i], &s->budget);
    index_release(&s->account_index, &s->budget);
    index_release(&s->transfer_index, &s->budget);
    region_release(&s->submitters_region, &s->budget);
    index_release(&s->submitter_index, &s->budget);
    COFFER_ASSERT(s->budget.used == 0);
    memset(s, 0, sizeof *s);
}

void store_capacity_estimate(uint64_t memory_bytes, uint64_t *accounts, uint64_t *transfers)
{
    /* An index slot is 8 bytes at 35% to 70% load, and twice that while it grows: about 24
     * bytes a record. Each region also keeps up to a step committed ahead of use. */
    uint64_t usable = memory_bytes > REGION_STEP ? memory_bytes - REGION_STEP : 0;
    uint64_t per_transfer = sizeof(store_transfer) + 2 * sizeof(store_history) + 32 + 24;
    uint64_t per_account = sizeof(store_account) + 24;
    *transfers = usable / per_transfer;
    *accounts = usable / per_account;
    if (*transfers > STORE_RECORDS_MAX)
        *transfers = STORE_RECORDS_MAX;
    if (*accounts > STORE_RECORDS_MAX)
        *accounts = STORE_RECORDS_MAX;
}

/* What each table region must hold after a reservation: in use now, and in use after. */
typedef struct table_need {
    uint64_t used, target;
    size_t record_size;
    uint64_t *capacity;
} table_need;

static const char *const table_names[6] = {
    [REGION_ACCOUNTS] = "accounts",       [REGION_TRANSFERS] = "transfers",
    [REGION_HISTORY] = "history entries", [REGION_EXPIRIES] = "expiries",
    [REGION_HOLDS] = "pending holds",     [REGION_ARENA] = "id and metadata bytes",
};

/* Commits what the tables and indexes need, looking ahead nowhere. On failure *table is the
 * table that could not grow. */
static region_status reserve_needs(store *s, const table_need needs[6], uint64_t accounts,
                                   uint64_t transfers, const char **table)
{
    for (int i = 0; i < 6; i++) {
        region_status status = region_ensure(&s->regions[i], needs[i].target, &s->budget);
        if (status != REGION_OK) {
            *table = table_names[i];
            return status;
        }
    }
    index_keys keys = {s, INDEX_ACCOUNTS};
    region_status status =
        index_reserve(&s->account_index, &keys, s->accounts_count, accounts, &s->budget);
    *table = table_names[REGION_ACCOUNTS];
    if (status != REGION_OK)
        return status;
    keys = (index_keys){s, INDEX_TRANSFERS};
    *table = table_names[REGION_TRANSFERS];
    return index_reserve(&s->transfer_index, &keys, s->transfers_count, transfers, &s->budget);
}

/* Gives back everything committed beyond what is in use: look-ahead windows and prepared
 * spare indexes. Only when the budget is short, since they are then committed again. */
static void trim_to_use(store *s, const table_need needs[6])
{
    for (int i = 0; i < 6; i++)
        region_trim(&s->regions[i], needs[i].used, &s->budget);
    store_index *indexes[2] = {&s->account_index, &s->transfer_index};
    for (int i = 0; i < 2; i++)
        region_trim(&indexes[i]->regions[1 - indexes[i]->current], 0, &s->budget);
}

static int refuse(store *s, region_status status, const char *table)
{
    s->ahead.count = 0;
    s->refusal = status == REGION_OVER_BUDGET ? STORE_REFUSAL_MEMORY
                 : status == REGION_FULL      ? STORE_REFUSAL_TABLE
                                              : STORE_REFUSAL_KERNEL;
    s->refusal_table = status == REGION_FULL ? table : 0;
    return status == REGION_REFUSED ? COFFER_OUT_OF_MEMORY : COFFER_CAPACITY_EXCEEDED;
}

int store_reserve(store *s, uint64_t accounts, uint64_t transfers, uint64_t history,
                  uint64_t arena_bytes, uint64_t holds)
{
    s->ahead.count = 0;
    table_need needs[6] = {
        [REGION_ACCOUNTS] = {s->accounts_count, accounts, sizeof *s->accounts,
                             &s->accounts_capacity},
        [REGION_TRANSFERS] = {s->transfers_count, transfers, sizeof *s->transfers,
                              &s->transfers_capacity},
        [REGION_HISTORY] = {s->history_count, history, sizeof *s->history, &s->history_capacity},
        [REGION_EXPIRIES] = {s->expiries_count, holds, sizeof *s->expiries, &s->expiries_capacity},
        [REGION_HOLDS] = {s->holds_count, holds, sizeof *s->holds, &s->holds_capacity},
        [REGION_ARENA] = {s->arena_used, arena_bytes + 8, 1, &s->arena_capacity},
    };
    for (int i = 0; i < 6; i++) {
        needs[i].used *= needs[i].record_size;
        needs[i].target = needs[i].used + needs[i].target * needs[i].record_size;
    }
    const char *table = 0;
    region_status status = reserve_needs(s, needs, accounts, transfers, &table);
    if (status == REGION_OVER_BUDGET) {
        trim_to_use(s, needs);
        status = reserve_needs(s, needs, accounts, transfers, &table);
    }
    if (status != REGION_OK)
        return refuse(s, status, table);
    s->refusal = STORE_REFUSAL_NONE;
    for (int i = 0; i < 6; i++) {
        region_look_ahead(&s->regions[i], needs[i].used, needs[i].target, &s->ahead, &s->budget);
        *needs[i].capacity = s->regions[i].committed / needs[i].record_size;
    }
    index_look_ahead(&s->account_index, &s->ahead, &s->budget);
    index_look_ahead(&s->transfer_index, &s->ahead, &s->budget);
    return COFFER_OK;
}

uint64_t store_bytes_held(const store *s)
{
    uint64_t used[6] = {
        [REGION_ACCOUNTS] = s->accounts_count * sizeof *s->accounts,
        [REGION_TRANSFERS] = s->transfers_count * sizeof *s->transfers,
        [REGION_HISTORY] = s->history_count * sizeof *s->history,
        [REGION_EXPIRIES] = s->expiries_count * sizeof *s->expiries,
        [REGION_HOLDS] = s->holds_count * sizeof *s->holds,
        [REGION_ARENA] = s->arena_used,
    };
    uint64_t held = s->submitters_region.committed;
    for (int i = 0; i < 6; i++)
        held += region_commit_size(used[i]);
    const store_index *indexes[3] = {&s->account_index, &s->transfer_index, &s->submitter_index};
    for (int i = 0; i < 3; i++)
        held += indexes[i]->regions[indexes[i]->current].committed;
    return held;
}

/* ---- records ------------------------------------------------------------------------------- */

uint32_t store_account_find(const store *s, const char *id, size_t id_len, uint64_t hash)
{
    index_keys keys = {s, INDEX_ACCOUNTS};
    return index_find(&s->account_index, &keys, id, id_len, hash);
}

uint32_t store_transfer_find(const store *s, const char *id, size_t id_len, uint64_t hash)
{
    index_keys keys = {s, INDEX_TRANSFERS};
    return index_find(&s->transfer_index, &keys, id, id_len, hash);
}

uint64_t store_arena_append_raw(store *s, const void *bytes, size_t length)
{
    uint64_t offset = s->arena_used;
    COFFER_ASSERT(offset + length <= s->arena_capacity);
    memcpy(s->arena + offset, bytes, length);
    s->arena_used = offset + length;
    return offset;
}

uint64_t store_arena_append(store *s, const void *bytes, size_t length)
{
    s->arena_used = (s->arena_used + 7) & ~(uint64_t)7; /* aux records are read in place */
    return store_arena_append_raw(s, bytes, length);
}

uint32_t store_account_append(store *s, const char *id, size_t id_len, uint64_t hash)
{
    COFFER_ASSERT(s->accounts_count < s->accounts_capacity);
    COFFER_ASSERT(id_len <= COFFER_ACCOUNT_ID_MAX);
    uint32_t index = (uint32_t)s->accounts_count++;
    store_account *account = &s->accounts[index];
    memset(account, 0, sizeof *account);
    memcpy(account->id, id, id_len);
    account->id_len = (uint8_t)id_len;
    account->history_last = account->history_jump = STORE_NONE;
    index_insert(&s->account_index, hash, index);
    return index;
}

uint32_t store_transfer_append(store *s, const char *id, size_t id_len, uint64_t hash)
{
    COFFER_ASSERT(s->transfers_count < s->transfers_capacity);
    COFFER_ASSERT(id_len <= COFFER_TRANSFER_ID_MAX);
    uint32_t index = (uint32_t)s->transfers_count++;
    store_transfer *transfer = &s->transfers[index];
    memset(transfer, 0, sizeof *transfer);
    transfer->id_offset = store_arena_append_raw(s, id, id_len);
    transfer->id_len = (uint8_t)id_len;
    transfer->from = transfer->to = transfer->link = STORE_NONE;
    index_insert(&s->transfer_index, hash, index);
    return index;
}

/* ---- submitters ---------------------------------------------------------------------------- */

uint16_t store_submitter_find(const store *s, const char *name, size_t length)
{
    COFFER_ASSERT(length >= 1 && length <= COFFER_SUBMITTER_MAX);
    index_keys keys = {s, INDEX_SUBMITTERS};
    uint32_t record =
        index_find(&s->submitter_index, &keys, name, length, store_hash(name, length));
    return record == STORE_NONE ? 0 : (uint16_t)(record + 1);
}

int store_submitter_room(store *s, const char *name, size_t length)
{
    if (store_submitter_find(s, name, length))
        return COFFER_OK;
    if (s->submitters_count >= STORE_SUBMITTERS_MAX) {
        s->refusal = STORE_REFUSAL_TABLE;
        s->refusal_table = "submitter names";
        return COFFER_CAPACITY_EXCEEDED;
    }
    region_status status = region_ensure(
        &s->submitters_region, (s->submitters_count + 1) * sizeof *s->submitters, &s->budget);
    if (status == REGION_OK) {
        index_keys keys = {s, INDEX_SUBMITTERS};
        status = index_reserve(&s->submitter_index, &keys, s->submitters_count, 1, &s->budget);
    }
    if (status != REGION_OK)
        return refuse(s, status, "submitter names");
    s->submitters_capacity = s->submitters_region.committed / sizeof *s->submitters;
    return COFFER_OK;
}

uint16_t store_submitter_intern(store *s, const char *name, size_t length)
{
    uint16_t known = store_submitter_find(s, name, length);
    if (known)
        return known;
    COFFER_ASSERT(s->submitters_count < s->submitters_capacity);
    COFFER_ASSERT(s->submitters_count < STORE_SUBMITTERS_MAX);
    uint32_t record = (uint32_t)s->submitters_count++;
    store_submitter *submitter = &s->submitters[record];
    memset(submitter, 0, sizeof *submitter);
    memcpy(submitter->name, name, length);
    submitter->length = (uint8_t)length;
    index_insert(&s->submitter_index, store_hash(name, length), record);
    return (uint16_t)(record + 1);
}

const char *store_submitter_name(const store *s, uint16_t index, size_t *length)
{
    COFFER_ASSERT(index <= s->submitters_count);
    if (index == 0) {
        *length = 0;
        return 0;
    }
    *length = s->submitters[index - 1].length;
    return s->submitters[index - 1].name;
}

/* ---- history ------------------------------------------------------------------------------- */

uint32_t store_history_append(store *s, uint32_t account_index, uint64_t seq, uint32_t transfer,
                              uint8_t kind, bool debit)
{
    COFFER_ASSERT(s->history_count < s->history_capacity);
    store_account *account = &s->accounts[account_index];
    uint32_t index = (uint32_t)s->history_count++;
    store_history *entry = &s->history[index];
    entry->seq = seq;
    entry->balance = account->credits_posted - account->debits_posted;
    entry->available = entry->balance - account->debits_held;
    entry->transfer = transfer;
    entry->kind = kind;
    entry->debit = debit;
    entry->previous = account->history_last;
    entry->ordinal = account->history_count;
    entry->jump = STORE_NONE;
    entry->jump_ordinal = 0;
    if (account->history_last != STORE_NONE) {
        /* Myers: when the parent's jump spans as far as its jump's jump, leap both at once;
         * otherwise jump to the parent. Spans then double, like skew binary numbers. */
        uint32_t parent_ordinal = entry->ordinal - 1;
        const store_history *parent_jump =
            account->history_jump != STORE_NONE ? &s->history[account->history_jump] : 0;
        if (parent_jump && parent_jump->jump != STORE_NONE &&
            parent_ordinal - account->history_jump_ordinal ==
                account->history_jump_ordinal - parent_jump->jump_ordinal) {
            entry->jump = parent_jump->jump;
            entry->jump_ordinal = parent_jump->jump_ordinal;
        } else {
            entry->jump = account->history_last;
            entry->jump_ordinal = parent_ordinal;
        }
    }
    account->history_last = index;
    account->history_count++;
    account->history_jump = entry->jump;
    account->history_jump_ordinal = entry->jump_ordinal;
    return index;
}

uint32_t store_history_at_ordinal(const store *s, uint32_t account, uint32_t ordinal)
{
    if (ordinal >= s->accounts[account].history_count)
        return STORE_NONE;
    /* On a trimmed store the chain ends (STORE_NONE) where memory stops holding it. */
    uint32_t entry = s->accounts[account].history_last;
    while (entry != STORE_NONE && s->history[entry].ordinal > ordinal) {
        const store_history *walk = &s->history[entry];
        entry =
            walk->jump != STORE_NONE && walk->jump_ordinal >= ordinal ? walk->jump : walk->previous;
    }
    COFFER_ASSERT(entry == STORE_NONE || s->history[entry].ordinal == ordinal);
    return entry;
}

uint32_t store_history_hot_from(const store *s, uint32_t account)
{
    /* The entries in memory are a suffix of the chain, and a jump into the cold part is
     * STORE_NONE: leaping whenever a jump is there is the walk towards the oldest one. */
    uint32_t entry = s->accounts[account].history_last;
    if (entry == STORE_NONE)
        return s->accounts[account].history_count;
    for (;;) {
        const store_history *walk = &s->history[entry];
        uint32_t next = walk->jump != STORE_NONE ? walk->jump : walk->previous;
        if (next == STORE_NONE)
            return walk->ordinal;
        entry = next;
    }
}

bool store_history_holds_seq(const store *s, uint32_t account, uint64_t seq)
{
    return store_history_find_seq(s, account, seq) != STORE_NONE ||
           store_history_hot_from(s, account) == 0;
}

bool store_transfer_after_held(const store *s, const store_transfer *t)
{
    return (t->from == STORE_NONE || store_history_holds_seq(s, t->from, t->seq)) &&
           (t->to == STORE_NONE || store_history_holds_seq(s, t->to, t->seq));
}

uint64_t store_history_timestamp(const store *s, const store_history *entry)
{
    if (entry->kind != COFFER_HISTORY_EXPIRED)
        return s->transfers[entry->transfer].timestamp;
    /* Expiries have no record of their own; their seq and timestamp are kept in order. */
    uint64_t low = 0, high = s->expiries_count;
    while (low < high) {
        uint64_t middle = low + (high - low) / 2;
        if (s->expiries[middle].seq < entry->seq)
            low = middle + 1;
        else
            high = middle;
    }
    COFFER_ASSERT(low < s->expiries_count && s->expiries[low].seq == entry->seq);
    return s->expiries[low].timestamp;
}

int64_t store_history_delta(const store *s, const store_history *entry)
{
    const store_transfer *transfer = &s->transfers[entry->transfer];
    int64_t magnitude;
    switch (entry->kind) {
    case COFFER_HISTORY_POSTED:
    case COFFER_HISTORY_HELD:
    case COFFER_HISTORY_EXPIRED:
    case COFFER_HISTORY_CAPTURED: /* the post's own amount is what it captured */
        magnitude = transfer->amount;
        break;
    case COFFER_HISTORY_RELEASED:
        magnitude = s->transfers[transfer->link].amount;
        break;
    default:
        COFFER_UNREACHABLE();
        return 0;
    }
    /* A debit lowers the balance (posted, captured) or raises what is held (held); releases
     * and expiries reverse a hold, so their debit side gets the held amount back. */
    bool negative = entry->debit;
    if (entry->kind == COFFER_HISTORY_RELEASED || entry->kind == COFFER_HISTORY_EXPIRED)
        negative = !entry->debit;
    return negative ? -magnitude : magnitude;
}

/* Newest entry whose key (seq or timestamp) is <= limit. Keys grow along the chain, so when
 * an entry's jump target is still too new, everything between them is too, and we leap. */
static uint32_t history_find(const store *s, uint32_t account_index, uint64_t limit,
                             bool by_timestamp)
{
    uint32_t entry = s->accounts[account_index].history_last;
    while (entry != STORE_NONE) {
        const store_history *walk = &s->history[entry];
        uint64_t key = by_timestamp ? store_history_timestamp(s, walk) : walk->seq;
        if (key <= limit)
            return entry;
        if (walk->jump != STORE_NONE) {
            const store_history *far = &s->history[walk->jump];
            uint64_t far_key = by_timestamp ? store_history_timestamp(s, far) : far->seq;
            if (far_key > limit) {
                entry = walk->jump;
                continue;
            }
        }
        entry = walk->previous;
    }
    return STORE_NONE;
}

uint32_t store_history_find_seq(const store *s, uint32_t account, uint64_t seq)
{
    return history_find(s, account, seq, false);
}

uint32_t store_history_find_timestamp(const store *s, uint32_t account, uint64_t timestamp)
{
    return history_find(s, account, timestamp, true);
}

void store_expiry_append(store *s, uint64_t seq, uint64_t timestamp, uint32_t hold)
{
    COFFER_ASSERT(s->expiries_count < s->expiries_capacity);
    COFFER_ASSERT(s->expiries_count == 0 || s->expiries[s->expiries_count - 1].seq < seq);
    s->expiries[s->expiries_count++] = (store_expiry){seq, timestamp, hold};
}

/* ---- pending holds by expiry --------------------------------------------------------------- */

static bool hold_before(const store_hold_ref *a, const store_hold_ref *b)
{
    return a->expires_at < b->expires_at ||
           (a->expires_at == b->expires_at && a->transfer < b->transfer);
}

void store_hold_push(store *s, uint64_t expires_at, uint32_t transfer)
{
    COFFER_ASSERT(s->holds_count < s->holds_capacity);
    uint64_t position = s->holds_count++;
    store_hold_ref added = {expires_at, transfer};
    while (position > 0) {
        uint64_t parent = (position - 1) / 2;
        if (!hold_before(&added, &s->holds[parent]))
            break;
        s->holds[position] = s->holds[parent];
        position = parent;
    }
    s->holds[position] = added;
}

bool store_hold_peek(const store *s, store_hold_ref *out)
{
    if (s->holds_count == 0)
        return false;
    *out = s->holds[0];
    return true;
}

void store_hold_pop(store *s)
{
    COFFER_ASSERT(s->holds_count > 0);
    store_hold_ref last = s->holds[--s->holds_count];
    uint64_t position = 0, count = s->holds_count;
    for (;;) {
        uint64_t child = position * 2 + 1;
        if (child >= count)
            break;
        if (child + 1 < count && hold_before(&s->holds[child + 1], &s->holds[child]))
            child++;
        if (!hold_before(&s->holds[child], &last))
            break;
        s->holds[position] = s->holds[child];
        position = child;
    }
    if (count > 0)
        s->holds[position] = last;
}

/* ---- horizon trim -------------------------------------------------------------------------- */

/* What a transfer's kept-or-not hangs on: a pending hold stays whatever its seq. */
static bool transfer_pending_hold(const store_transfer *t)
{
    return t->op == COFFER_OP_TRANSFER && t->expires_at != 0 && t->state == COFFER_STATE_PENDING;
}

/* Fills transfer_map[i] with 1 for every transfer that stays and 0 for the rest, history_map
 * likewise for history entries. */
/* The expiry recorded at `seq` (expiries are in seq order), or STORE_NONE. */
static uint32_t expiry_at(const store *s, uint64_t seq)
{
    uint64_t low = 0, high = s->expiries_count;
    while (low < high) {
        uint64_t middle = low + (high - low) / 2;
        if (s->expiries[middle].seq < seq)
            low = middle + 1;
        else
            high = middle;
    }
    return low < s->expiries_count && s->expiries[low].seq == seq ? (uint32_t)low : STORE_NONE;
}

static void trim_mark(const store *s, uint64_t horizon, uint32_t *transfer_map,
                      uint32_t *history_map, uint32_t *expiry_map)
{
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        transfer_map[i] = t->seq > horizon || transfer_pending_hold(t);
    }
    for (uint64_t i = 0; i < s->expiries_count; i++)
        expiry_map[i] = s->expiries[i].seq > horizon;
    for (uint64_t i = 0; i < s->history_count; i++)
        history_map[i] = s->history[i].seq > horizon;
    /* Each account keeps its newest entry at or before the horizon: the state right after any
     * later seq is then always in memory (a replay of a transfer that changed nothing reads it),
     * and the chain stays whole from there on. An expiry entry keeps its expiry (its time). */
    for (uint64_t a = 0; a < s->accounts_count; a++) {
        uint32_t entry = s->accounts[a].history_last;
        while (entry != STORE_NONE && s->history[entry].seq > horizon)
            entry = s->history[entry].previous;
        if (entry == STORE_NONE)
            continue;
        history_map[entry] = 1;
        if (s->history[entry].kind == COFFER_HISTORY_EXPIRED) {
            uint32_t expiry = expiry_at(s, s->history[entry].seq);
            COFFER_ASSERT(expiry != STORE_NONE);
            expiry_map[expiry] = 1;
        }
    }
    for (uint64_t i = 0; i < s->history_count; i++)
        if (history_map[i])
            transfer_map[s->history[i].transfer] = 1; /* an expiry entry's hold */
    for (uint64_t i = 0; i < s->expiries_count; i++)
        if (expiry_map[i])
            transfer_map[s->expiries[i].hold] = 1;
    /* A kept post or void answers replays by its hold's id, and a release's delta is the
     * hold's amount. The record it names may itself be a post or void (a rejected one named
     * it), so links are followed newest first: such a link names an older record, which the
     * same pass then reaches. A kept resolved hold keeps its post or void too (a reader takes
     * a captured hold's amount from its post); that newer record's own link is this hold. */
    for (uint64_t i = s->transfers_count; i-- > 0;) {
        const store_transfer *t = &s->transfers[i];
        if (!transfer_map[i] || t->link == STORE_NONE)
            continue;
        COFFER_ASSERT(t->op == COFFER_OP_TRANSFER ? t->link > i : t->link < i);
        transfer_map[t->link] = 1;
    }
}

/* Turns the marks into new indexes (kept records in their order) or STORE_NONE; the count. */
static uint64_t trim_number(uint32_t *map, uint64_t count)
{
    uint64_t kept = 0;
    for (uint64_t i = 0; i < count; i++)
        map[i] = map[i] ? (uint32_t)kept++ : STORE_NONE;
    return kept;
}

static uint32_t remapped(const uint32_t *map, uint32_t index)
{
    return index == STORE_NONE ? STORE_NONE : map[index];
}

/*
 * The arena's pieces (accounts' metadata, transfers' ids and aux records) were appended in the
 * order of their records, so accounts by index merged with transfers by index, by offset, walk
 * them in offset order. A first walk checks that (moving nothing); the second moves every kept
 * piece down to `cursor`, which never passes the piece it moves, so memmove in place suffices.
 */
typedef struct arena_walk {
    store *s;
    const uint32_t *transfer_map;
    bool moving;
    bool ordered;    /* checking: every piece started at or past the end of the one before */
    uint64_t cursor; /* checking: the end of the last piece; moving: where the next one goes */
} arena_walk;

static uint64_t arena_piece(arena_walk *walk, uint64_t offset, uint64_t length, uint64_t align,
                            bool keep)
{
    if (!walk->moving) {
        if (offset < walk->cursor || offset > walk->s->arena_used ||
            length > walk->s->arena_used - offset)
            walk->ordered = false;
        walk->cursor = offset + length;
        return offset;
    }
    if (!keep)
        return 0;
    uint64_t to = (walk->cursor + align - 1) & ~(align - 1);
    COFFER_ASSERT(to <= offset);
    memmove(walk->s->arena + to, walk->s->arena + offset, length);
    walk->cursor = to + length;
    return to;
}

static uint64_t aux_length(const store *s, const store_transfer *t)
{
    const store_aux *aux = store_transfer_aux(s, t);
    return sizeof *aux + (uint64_t)aux->metadata_len + aux->from_len + aux->to_len + aux->hold_len;
}

static void arena_walk_all(arena_walk *walk)
{
    store *s = walk->s;
    uint64_t a = 0, t = 0;
    while (a < s->accounts_count || t < s->transfers_count) {
        store_account *account = a < s->accounts_count ? &s->accounts[a] : 0;
        if (account && account->metadata_len == 0) {
            if (walk->moving)
                account->metadata_offset = 0; /* its old offset may lie past the new end */
            a++;
            continue;
        }
        store_transfer *transfer = t < s->transfers_count ? &s->transfers[t] : 0;
        if (account && (!transfer || account->metadata_offset < transfer->id_offset)) {
            uint64_t offset =
                arena_piece(walk, account->metadata_offset, account->metadata_len, 1, true);
            if (walk->moving)
                account->metadata_offset = offset;
            a++;
            continue;
        }
        bool keep = walk->transfer_map[t] != STORE_NONE;
        uint64_t id = arena_piece(walk, transfer->id_offset, transfer->id_len, 1, keep);
        uint64_t aux = transfer->aux_offset;
        if (aux && (walk->moving || walk->ordered))
            aux = arena_piece(walk, aux, aux_length(s, transfer), 8, keep);
        if (walk->moving && keep) {
            transfer->id_offset = id;
            transfer->aux_offset = aux;
        }
        t++;
    }
}

/* Moves kept transfers down, remapping their links (every record linked to is kept). */
static void trim_transfers(store *s, const uint32_t *map)
{
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        if (map[i] == STORE_NONE)
            continue;
        store_transfer moved = s->transfers[i];
        moved.link = remapped(map, moved.link);
        COFFER_ASSERT((moved.link == STORE_NONE) == (s->transfers[i].link == STORE_NONE));
        s->transfers[map[i]] = moved;
    }
}

static void trim_history(store *s, const uint32_t *transfer_map, const uint32_t *map)
{
    for (uint64_t i = 0; i < s->history_count; i++) {
        if (map[i] == STORE_NONE)
            continue;
        store_history moved = s->history[i];
        moved.transfer = transfer_map[moved.transfer];
        COFFER_ASSERT(moved.transfer != STORE_NONE);
        /* Ordinals stay absolute, and so does jump_ordinal: an append past an evicted jump
         * target sees STORE_NONE and links to its parent instead. */
        moved.previous = remapped(map, moved.previous);
        moved.jump = remapped(map, moved.jump);
        s->history[map[i]] = moved;
    }
    for (uint64_t i = 0; i < s->accounts_count; i++) {
        store_account *account = &s->accounts[i];
        account->history_last = remapped(map, account->history_last);
        account->history_jump = remapped(map, account->history_jump);
    }
}

static uint64_t trim_expiries(store *s, const uint32_t *transfer_map, const uint32_t *expiry_map)
{
    uint64_t kept = 0;
    for (uint64_t i = 0; i < s->expiries_count; i++) {
        if (!expiry_map[i])
            continue;
        store_expiry moved = s->expiries[i];
        moved.hold = transfer_map[moved.hold];
        COFFER_ASSERT(moved.hold != STORE_NONE);
        s->expiries[kept++] = moved;
    }
    return kept;
}

/* The heap again, of pending holds only: they are at most as many as its entries were. */
static void trim_holds(store *s)
{
    uint64_t pending = 0;
    s->holds_count = 0;
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        if (!transfer_pending_hold(&s->transfers[i]))
            continue;
        store_hold_push(s, s->transfers[i].expires_at, (uint32_t)i);
        pending++;
    }
    COFFER_ASSERT(pending == s->holds_pending);
}

/* Indexes the kept transfers afresh, in a table sized for them when that is smaller (built in
 * the spare region, the old one given back), else in place. */
static void trim_transfer_index(store *s)
{
    store_index *index = &s->transfer_index;
    store_region *spare = &index->regions[1 - index->current];
    region_trim(spare, 0, &s->budget); /* a prepared look-ahead; it reads as zero from now */
    uint64_t slots = index_slots_for(s->transfers_count);
    if (slots < index->mask + 1 &&
        region_ensure(spare, slots * sizeof(uint64_t), &s->budget) == REGION_OK) {
        region_trim(&index->regions[index->current], 0, &s->budget);
        index->current = 1 - index->current;
        index->slots = (uint64_t *)spare->base;
        index->mask = slots - 1;
    } else {
        memset(index->slots, 0, (index->mask + 1) * sizeof(uint64_t));
    }
    index->count = 0;
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        index_insert(index, store_hash(store_transfer_id(s, t), t->id_len), (uint32_t)i);
    }
}

/* Gives back the pages past what each shrunk table uses. */
static void trim_regions(store *s)
{
    struct {
        int region;
        uint64_t used;
        size_t record_size;
        uint64_t *capacity;
    } tables[] = {
        {REGION_TRANSFERS, s->transfers_count, sizeof *s->transfers, &s->transfers_capacity},
        {REGION_HISTORY, s->history_count, sizeof *s->history, &s->history_capacity},
        {REGION_EXPIRIES, s->expiries_count, sizeof *s->expiries, &s->expiries_capacity},
        {REGION_HOLDS, s->holds_count, sizeof *s->holds, &s->holds_capacity},
        {REGION_ARENA, s->arena_used, 1, &s->arena_capacity},
    };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        store_region *region = &s->regions[tables[i].region];
        region_trim(region, tables[i].used * tables[i].record_size, &s->budget);
        *tables[i].capacity = region->committed / tables[i].record_size;
    }
    s->ahead.count = 0; /* ranges announced before may now be given back */
}

int store_trim(store *s, uint64_t horizon, store_trim_stats *stats)
{
    if (horizon < s->trimmed_seq)
        horizon = s->trimmed_seq;
    /* The one allocation, outside the memory budget: a uint32 per transfer, history entry and
     * expiry (4 * (transfers_count + history_count + expiries_count) bytes), freed before
     * returning. */
    uint64_t records = s->transfers_count + s->history_count + s->expiries_count;
    uint32_t *transfer_map = malloc((records ? records : 1) * sizeof(uint32_t));
    if (!transfer_map)
        return COFFER_OUT_OF_MEMORY;
    uint32_t *history_map = transfer_map + s->transfers_count;
    uint32_t *expiry_map = history_map + s->history_count;
    arena_walk walk = {s, transfer_map, false, true, 0};
    arena_walk_all(&walk);
    if (!walk.ordered) {
        free(transfer_map);
        return COFFER_INTERNAL;
    }
    store_trim_stats done = {0};
    uint64_t used_before = s->budget.used, arena_before = s->arena_used;
    trim_mark(s, horizon, transfer_map, history_map, expiry_map);
    uint64_t transfers_kept = trim_number(transfer_map, s->transfers_count);
    uint64_t history_kept = trim_number(history_map, s->history_count);

    walk = (arena_walk){s, transfer_map, true, true, 8}; /* offset 0 means "none" */
    arena_walk_all(&walk);
    s->arena_used = walk.cursor;
    trim_transfers(s, transfer_map);
    trim_history(s, transfer_map, history_map);
    uint64_t expiries_kept = trim_expiries(s, transfer_map, expiry_map);

    done.transfers_kept = transfers_kept;
    done.transfers_evicted = s->transfers_count - transfers_kept;
    done.history_kept = history_kept;
    done.history_evicted = s->history_count - history_kept;
    done.expiries_kept = expiries_kept;
    done.expiries_evicted = s->expiries_count - expiries_kept;
    s->transfers_count = transfers_kept;
    s->history_count = history_kept;
    s->expiries_count = expiries_kept;
    free(transfer_map);

    trim_holds(s);
    trim_regions(s);
    trim_transfer_index(s);
    s->trimmed_seq = horizon;
    done.arena_bytes_freed = arena_before - s->arena_used;
    done.bytes_freed = used_before > s->budget.used ? used_before - s->budget.used : 0;
    if (stats)
        *stats = done;
    return COFFER_OK;
}

/* ---- rollback ------------------------------------------------------------------------------ */

store_mark store_mark_get(const store *s)
{
    return (store_mark){s->accounts_count,  s->transfers_count, s->history_count,
                        s->expiries_count,  s->arena_used,      s->holds_pending,
                        s->submitters_count};
}

void store_rollback(store *s, const store_mark *mark)
{
    /* Accounts' chain heads are restored from the caller's before-images. */
    s->history_count = mark->history_count;
    while (s->transfers_count > mark->transfers_count) {
        uint32_t index = (uint32_t)(s->transfers_count - 1);
        const store_transfer *transfer = &s->transfers[index];
        index_remove_newest(&s->transfer_index,
                            store_hash(store_transfer_id(s, transfer), transfer->id_len), index);
        s->transfers_count--;
    }
    while (s->accounts_count > mark->accounts_count) {
        uint32_t index = (uint32_t)(s->accounts_count - 1);
        const store_account *account = &s->accounts[index];
        index_remove_newest(&s->account_index,
                            store_hash(store_account_id(s, account), account->id_len), index);
        s->accounts_count--;
    }
    while (s->submitters_count > mark->submitters_count) {
        uint32_t index = (uint32_t)(s->submitters_count - 1);
        const store_submitter *submitter = &s->submitters[index];
        index_remove_newest(&s->submitter_index, store_hash(submitter->name, submitter->length),
                            index);
        s->submitters_count--;
    }
    s->expiries_count = mark->expiries_count;
    s->arena_used = mark->arena_used;
    s->holds_pending = mark->holds_pending;
}

/* ---- snapshots ----------------------------------------------------------------------------- */

store_counts store_counts_get(const store *s)
{
    return (store_counts){s->accounts_count, s->transfers_count, s->history_count,
                          s->expiries_count, s->holds_count,     s->arena_used,
                          s->holds_pending,  s->submitters_count};
}

int store_restore_begin(store *s, const store_counts *counts)
{
    COFFER_ASSERT(s->accounts_count == 0 && s->transfers_count == 0);
    if (counts->accounts > s->limits.accounts_max || counts->transfers > s->limits.transfers_max) {
        s->refusal = STORE_REFUSAL_TABLE;
        s->refusal_table = counts->accounts > s->limits.accounts_max ? "accounts" : "transfers";
        return COFFER_CAPACITY_EXCEEDED;
    }
    if (counts->submitters > STORE_SUBMITTERS_MAX) {
        s->refusal = STORE_REFUSAL_TABLE;
        s->refusal_table = "submitter names";
        return COFFER_CAPACITY_EXCEEDED;
    }
    int code =
        store_reserve(s, counts->accounts, counts->transfers, counts->history, counts->arena_used,
                      counts->holds > counts->expiries ? counts->holds : counts->expiries);
    if (code != COFFER_OK)
        return code;
    region_status status = region_ensure(&s->submitters_region,
                                         counts->submitters * sizeof *s->submitters, &s->budget);
    if (status != REGION_OK)
        return refuse(s, status, "submitter names");
    s->submitters_capacity = s->submitters_region.committed / sizeof *s->submitters;
    s->submitters_count = counts->submitters;
    s->accounts_count = counts->accounts;
    s->transfers_count = counts->transfers;
    s->history_count = counts->history;
    s->expiries_count = counts->expiries;
    s->holds_count = counts->holds;
    s->arena_used = counts->arena_used;
    s->holds_pending = counts->holds_pending;
    return COFFER_OK;
}

static const char *const index_names[] = {
    [INDEX_ACCOUNTS] = "accounts",
    [INDEX_TRANSFERS] = "transfers",
    [INDEX_SUBMITTERS] = "submitter names",
};

/* Indexes the first `records` records of an empty index. */
static int index_rebuild(store *s, store_index *index, const index_keys *keys, uint64_t records)
{
    COFFER_ASSERT(index->count == 0);
    if (records * 100 > (index->mask + 1) * INDEX_LOAD_PERCENT) {
        /* Rehashes them all. */
        region_status status = index_reserve(index, keys, records, records, &s->budget);
        if (status != REGION_OK)
            return refuse(s, status, index_names[keys->kind]);
        index->count = records;
        return COFFER_OK;
    }
    for (uint64_t record = 0; record < records; record++) {
        size_t length;
        const char *key = key_of(keys, (uint32_t)record, &length);
        index_insert(index, store_hash(key, length), (uint32_t)record);
    }
    return COFFER_OK;
}

int store_restore_finish(store *s)
{
    index_keys account_keys = {s, INDEX_ACCOUNTS}, transfer_keys = {s, INDEX_TRANSFERS};
    index_keys submitter_keys = {s, INDEX_SUBMITTERS};
    int code = index_rebuild(s, &s->account_index, &account_keys, s->accounts_count);
    if (code == COFFER_OK)
        code = index_rebuild(s, &s->transfer_index, &transfer_keys, s->transfers_count);
    if (code == COFFER_OK)
        code = index_rebuild(s, &s->submitter_index, &submitter_keys, s->submitters_count);
    return code;
}

/* ---- checking restored tables -------------------------------------------------------------- */

static bool index_ok(uint32_t index, uint64_t count)
{
    return index == STORE_NONE || index < count;
}

static bool span_ok(uint64_t offset, uint64_t length, uint64_t used)
{
    return offset <= used && length <= used - offset;
}

static bool account_ok(const store *s, const store_account *a)
{
    return a->id_len >= 1 && a->id_len <= COFFER_ACCOUNT_ID_MAX &&
           a->metadata_len <= COFFER_METADATA_MAX &&
           span_ok(a->metadata_offset, a->metadata_len, s->arena_used) &&
           index_ok(a->history_last, s->history_count) &&
           index_ok(a->history_jump, s->history_count);
}

static bool aux_ok(const store *s, const store_transfer *t)
{
    if (!t->aux_offset)
        return true;
    if (!span_ok(t->aux_offset, sizeof(store_aux), s->arena_used) || t->aux_offset % 8)
        return false;
    const store_aux *aux = store_transfer_aux(s, t);
    uint64_t names = (uint64_t)aux->metadata_len + aux->from_len + aux->to_len + aux->hold_len;
    return aux->metadata_len <= COFFER_METADATA_MAX && aux->from_len <= COFFER_ACCOUNT_ID_MAX &&
           aux->to_len <= COFFER_ACCOUNT_ID_MAX && aux->hold_len <= COFFER_TRANSFER_ID_MAX &&
           span_ok(t->aux_offset + sizeof(store_aux), names, s->arena_used);
}

static bool transfer_ok(const store *s, const store_transfer *t)
{
    return t->id_len >= 1 && t->id_len <= COFFER_TRANSFER_ID_MAX &&
           span_ok(t->id_offset, t->id_len, s->arena_used) && aux_ok(s, t) &&
           index_ok(t->from, s->accounts_count) && index_ok(t->to, s->accounts_count) &&
           index_ok(t->link, s->transfers_count) && t->submitter <= s->submitters_count &&
           t->op >= COFFER_OP_CREATE_ACCOUNT && t->op <= COFFER_OP_VOID &&
           t->state <= COFFER_STATE_REJECTED &&
           (t->state == COFFER_STATE_REJECTED || (t->from != STORE_NONE && t->to != STORE_NONE));
}

static bool history_ok(const store *s, const store_history *h)
{
    return h->transfer < s->transfers_count && index_ok(h->previous, s->history_count) &&
           index_ok(h->jump, s->history_count) && h->kind >= COFFER_HISTORY_POSTED &&
           h->kind <= COFFER_HISTORY_EXPIRED;
}

bool store_check_references(const store *s)
{
    if (s->arena_used < 8 || s->arena_used > s->arena_capacity)
        return false;
    for (uint64_t i = 0; i < s->accounts_count; i++)
        if (!account_ok(s, &s->accounts[i]))
            return false;
    for (uint64_t i = 0; i < s->transfers_count; i++)
        if (!transfer_ok(s, &s->transfers[i]))
            return false;
    for (uint64_t i = 0; i < s->history_count; i++)
        if (!history_ok(s, &s->history[i]))
            return false;
    for (uint64_t i = 0; i < s->expiries_count; i++)
        if (s->expiries[i].hold >= s->transfers_count)
            return false;
    for (uint64_t i = 0; i < s->holds_count; i++)
        if (s->holds[i].transfer >= s->transfers_count)
            return false;
    for (uint64_t i = 0; i < s->submitters_count; i++)
        if (s->submitters[i].length < 1 || s->submitters[i].length > COFFER_SUBMITTER_MAX)
            return false;
    return true;
}
