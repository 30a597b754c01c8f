/*
 * store.c — the in-memory tables. Growth is confined to store_reserve(); every append after it
 * is allocation-free, so the core can apply a batch without a failure path for memory.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "coffer.h"
#include "core/check.h"

/* Indexes stay at most 70% full: linear probing stays short and growth is rare. */
#define INDEX_LOAD_PERCENT 70
#define INDEX_MIN_SLOTS 1024

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

static bool grow_array(void **array, uint64_t *capacity, uint64_t needed, size_t element_size)
{
    if (needed <= *capacity) return true;
    uint64_t grown = *capacity ? *capacity : 64;
    while (grown < needed) grown *= 2;
    void *moved = realloc(*array, grown * element_size);
    if (!moved) return false;
    *array = moved;
    *capacity = grown;
    return true;
}

/* ---- id indexes ---------------------------------------------------------------------------- */

typedef struct index_keys {
    const char *arena;
    const void *records;
    size_t stride;
    size_t id_offset_field; /* offsetof the record's id_offset */
    size_t id_len_field;    /* offsetof the record's id_len */
} index_keys;

static index_keys account_keys(const store *s)
{
    return (index_keys){s->arena, s->accounts, sizeof(store_account),
                        offsetof(store_account, id_offset), offsetof(store_account, id_len)};
}

static index_keys transfer_keys(const store *s)
{
    return (index_keys){s->arena, s->transfers, sizeof(store_transfer),
                        offsetof(store_transfer, id_offset), offsetof(store_transfer, id_len)};
}

static bool key_equals(const index_keys *keys, uint32_t record, const char *id, size_t id_len)
{
    const char *base = (const char *)keys->records + (size_t)record * keys->stride;
    uint8_t length = *(const uint8_t *)(base + keys->id_len_field);
    uint64_t offset;
    memcpy(&offset, base + keys->id_offset_field, sizeof offset);
    return length == id_len && memcmp(keys->arena + offset, id, id_len) == 0;
}

static uint32_t index_find(const store_index *index, const index_keys *keys, const char *id,
                           size_t id_len, uint64_t hash)
{
    if (!index->slots) return STORE_NONE;
    uint64_t fingerprint = hash >> 32;
    for (uint64_t position = hash & index->mask;; position = (position + 1) & index->mask) {
        uint64_t slot = index->slots[position];
        if (slot == 0) return STORE_NONE;
        uint32_t record = (uint32_t)(slot & 0xFFFFFFFFu) - 1;
        if ((slot >> 32) == fingerprint && key_equals(keys, record, id, id_len)) return record;
    }
}

static void index_insert(store_index *index, uint64_t hash, uint32_t record)
{
    COFFER_ASSERT((index->count + 1) * 100 <= (index->mask + 1) * INDEX_LOAD_PERCENT);
    uint64_t position = hash & index->mask;
    while (index->slots[position] != 0) position = (position + 1) & index->mask;
    index->slots[position] = ((hash >> 32) << 32) | ((uint64_t)record + 1);
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

static bool index_reserve(store_index *index, const index_keys *keys, uint64_t records,
                          uint64_t more)
{
    uint64_t needed = index->count + more;
    uint64_t slots = index->slots ? index->mask + 1 : 0;
    if (slots && needed * 100 <= slots * INDEX_LOAD_PERCENT) return true;
    uint64_t grown = slots ? slots : INDEX_MIN_SLOTS;
    while (needed * 100 > grown * INDEX_LOAD_PERCENT) grown *= 2;
    uint64_t *fresh = calloc(grown, sizeof *fresh);
    if (!fresh) return false;
    free(index->slots);
    *index = (store_index){fresh, grown - 1, 0};
    for (uint64_t record = 0; record < records; record++) {
        const char *base = (const char *)keys->records + record * keys->stride;
        uint8_t length = *(const uint8_t *)(base + keys->id_len_field);
        uint64_t offset;
        memcpy(&offset, base + keys->id_offset_field, sizeof offset);
        index_insert(index, store_hash(keys->arena + offset, length), (uint32_t)record);
    }
    return true;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

int store_init(store *s, const store_limits *limits)
{
    memset(s, 0, sizeof *s);
    s->limits = *limits;
    s->arena_used = 8; /* offset 0 means "none" */
    return store_reserve(s, 0, 0, 0, 4096, 0);
}

void store_free(store *s)
{
    free(s->accounts);
    free(s->transfers);
    free(s->history);
    free(s->expiries);
    free(s->holds);
    free(s->arena);
    free(s->account_index.slots);
    free(s->transfer_index.slots);
    memset(s, 0, sizeof *s);
}

int store_reserve(store *s, uint64_t accounts, uint64_t transfers, uint64_t history,
                  uint64_t arena_bytes, uint64_t holds)
{
    bool ok = grow_array((void **)&s->accounts, &s->accounts_capacity,
                         s->accounts_count + accounts, sizeof *s->accounts) &&
              grow_array((void **)&s->transfers, &s->transfers_capacity,
                         s->transfers_count + transfers, sizeof *s->transfers) &&
              grow_array((void **)&s->history, &s->history_capacity,
                         s->history_count + history, sizeof *s->history) &&
              grow_array((void **)&s->expiries, &s->expiries_capacity,
                         s->expiries_count + holds, sizeof *s->expiries) &&
              grow_array((void **)&s->holds, &s->holds_capacity, s->holds_count + holds,
                         sizeof *s->holds) &&
              grow_array((void **)&s->arena, &s->arena_capacity, s->arena_used + arena_bytes, 1);
    if (!ok) return COFFER_OUT_OF_MEMORY;
    index_keys keys = account_keys(s);
    if (!index_reserve(&s->account_index, &keys, s->accounts_count, accounts))
        return COFFER_OUT_OF_MEMORY;
    keys = transfer_keys(s);
    if (!index_reserve(&s->transfer_index, &keys, s->transfers_count, transfers))
        return COFFER_OUT_OF_MEMORY;
    return COFFER_OK;
}

/* ---- records ------------------------------------------------------------------------------- */

uint32_t store_account_find(const store *s, const char *id, size_t id_len, uint64_t hash)
{
    index_keys keys = account_keys(s);
    return index_find(&s->account_index, &keys, id, id_len, hash);
}

uint32_t store_transfer_find(const store *s, const char *id, size_t id_len, uint64_t hash)
{
    index_keys keys = transfer_keys(s);
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
    account->id_offset = store_arena_append_raw(s, id, id_len);
    account->id_len = (uint8_t)id_len;
    account->history_first = account->history_last = STORE_NONE;
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

/* ---- history ------------------------------------------------------------------------------- */

/* The skip list of Bitcoin's block index: each entry points to an older one whose ordinal is
 * chosen so that walking back to any ordinal takes O(log n) steps. */
static uint32_t clear_lowest_bit(uint32_t n)
{
    return n & (n - 1);
}

static uint32_t skip_ordinal(uint32_t ordinal)
{
    if (ordinal < 2) return 0;
    return (ordinal & 1) ? clear_lowest_bit(clear_lowest_bit(ordinal - 1)) + 1
                         : clear_lowest_bit(ordinal);
}

static uint32_t history_ancestor(const store *s, uint32_t entry, uint32_t ordinal)
{
    while (entry != STORE_NONE && s->history[entry].ordinal > ordinal) {
        const store_history *walk = &s->history[entry];
        uint32_t skip = walk->skip;
        if (skip != STORE_NONE && s->history[skip].ordinal >= ordinal)
            entry = skip;
        else
            entry = walk->previous;
    }
    return entry;
}

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
    entry->next = STORE_NONE;
    entry->previous = account->history_last;
    if (account->history_last == STORE_NONE) {
        entry->ordinal = 0;
        entry->skip = STORE_NONE;
        account->history_first = index;
    } else {
        store_history *previous = &s->history[account->history_last];
        COFFER_ASSERT(previous->seq < seq);
        previous->next = index;
        entry->ordinal = previous->ordinal + 1;
        entry->skip = history_ancestor(s, account->history_last, skip_ordinal(entry->ordinal));
    }
    account->history_last = index;
    return index;
}

uint64_t store_history_timestamp(const store *s, const store_history *entry)
{
    if (entry->kind != COFFER_HISTORY_EXPIRED) return s->transfers[entry->transfer].timestamp;
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
        magnitude = transfer->amount;
        break;
    case COFFER_HISTORY_CAPTURED:
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

/* Newest entry whose key (seq or timestamp) is <= limit. Keys grow with the chain, so an
 * entry whose key is still too new lets us jump over everything between it and its skip. */
static uint32_t history_find(const store *s, uint32_t account_index, uint64_t limit,
                             bool by_timestamp)
{
    uint32_t entry = s->accounts[account_index].history_last;
    while (entry != STORE_NONE) {
        const store_history *walk = &s->history[entry];
        uint64_t key = by_timestamp ? store_history_timestamp(s, walk) : walk->seq;
        if (key <= limit) return entry;
        uint32_t skip = walk->skip;
        if (skip != STORE_NONE) {
            const store_history *far = &s->history[skip];
            uint64_t far_key = by_timestamp ? store_history_timestamp(s, far) : far->seq;
            if (far_key > limit) {
                entry = skip;
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
        if (!hold_before(&added, &s->holds[parent])) break;
        s->holds[position] = s->holds[parent];
        position = parent;
    }
    s->holds[position] = added;
}

bool store_hold_peek(const store *s, store_hold_ref *out)
{
    if (s->holds_count == 0) return false;
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
        if (child >= count) break;
        if (child + 1 < count && hold_before(&s->holds[child + 1], &s->holds[child])) child++;
        if (!hold_before(&s->holds[child], &last)) break;
        s->holds[position] = s->holds[child];
        position = child;
    }
    if (count > 0) s->holds[position] = last;
}

/* ---- rollback ------------------------------------------------------------------------------ */

store_mark store_mark_get(const store *s)
{
    return (store_mark){s->accounts_count, s->transfers_count, s->history_count,
                        s->expiries_count, s->arena_used, s->holds_pending};
}

void store_rollback(store *s, const store_mark *mark)
{
    while (s->history_count > mark->history_count) {
        const store_history *entry = &s->history[--s->history_count];
        if (entry->previous != STORE_NONE) s->history[entry->previous].next = STORE_NONE;
    }
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
    s->expiries_count = mark->expiries_count;
    s->arena_used = mark->arena_used;
    s->holds_pending = mark->holds_pending;
}
