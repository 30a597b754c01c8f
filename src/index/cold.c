/*
 * cold.c — reads across memory and the on-disk index (see cold.h). Memory's part is read as
 * the engine's reads always did; the index's part is what memory evicted. At the boundary the
 * first entry memory holds decides: an index entry at or after its seq is memory's to give.
 */
#include "index/cold.h"

#include <string.h>

#include "base/check.h"

static void copy_name(char *out, size_t out_size, const char *bytes, size_t length)
{
    COFFER_ASSERT(length < out_size);
    memcpy(out, bytes, length);
    out[length] = 0;
}

/* ---- history pages ------------------------------------------------------------------------- */

static void history_fill(const store *s, const store_history *found, coffer_history_entry *out)
{
    const store_transfer *transfer = &s->transfers[found->transfer];
    out->seq = found->seq;
    out->timestamp = store_history_timestamp(s, found);
    copy_name(out->transfer_id, sizeof out->transfer_id, store_transfer_id(s, transfer),
              transfer->id_len);
    out->kind = found->kind;
    out->delta = store_history_delta(s, found);
    out->balance = found->balance;
    out->available = found->available;
    out->version = found->ordinal + 2;
}

/* The account's entries older than memory's (seqs below hot_seq) after after_seq, from the
 * index into the page's start. */
static int history_cold(const store *s, index_db *index, uint32_t account, uint64_t hot_seq,
                        uint64_t after_seq, size_t limit, coffer_history_entry *entries,
                        size_t *count)
{
    if (!index)
        return COFFER_STORAGE_FAILED; /* trimmed, and the index is not (or no longer) readable */
    const store_account *a = &s->accounts[account];
    char id[COFFER_ACCOUNT_ID_MAX + 1];
    copy_name(id, sizeof id, store_account_id(s, a), a->id_len);
    int code = index_history_page(index, id, after_seq, limit, entries, count);
    if (code != COFFER_OK)
        return code;
    while (*count > 0 && entries[*count - 1].seq >= hot_seq)
        --*count; /* memory's own: they come from memory */
    return COFFER_OK;
}

int cold_history_page(const store *s, index_db *index, uint32_t account, uint32_t hot_from,
                      uint64_t after_seq, size_t limit, coffer_history_entry *entries,
                      size_t *count_out)
{
    uint64_t total = s->accounts[account].history_count;
    COFFER_ASSERT(hot_from <= total);
    *count_out = 0;
    if (limit == 0)
        return COFFER_OK;
    /* The page is the cold entries after after_seq (if any), then memory's from `first`. */
    size_t cold = 0;
    uint64_t hot_seq = hot_from < total
                           ? s->history[store_history_at_ordinal(s, account, hot_from)].seq
                           : UINT64_MAX;
    if (hot_from > 0 && after_seq < hot_seq - 1) {
        int code = history_cold(s, index, account, hot_seq, after_seq, limit, entries, &cold);
        if (code != COFFER_OK)
            return code;
    }
    uint32_t after = store_history_find_seq(s, account, after_seq);
    uint64_t first = after == STORE_NONE ? 0 : (uint64_t)s->history[after].ordinal + 1;
    if (first < hot_from)
        first = hot_from;
    *count_out = cold;
    if (first >= total || cold == limit)
        return COFFER_OK;
    uint64_t count = total - first < limit - cold ? total - first : limit - cold;
    /* Memory's part is the entries with ordinals first..last: find the last, walk back. */
    uint32_t entry = store_history_at_ordinal(s, account, (uint32_t)(first + count - 1));
    for (uint64_t i = count; i-- > 0; entry = s->history[entry].previous)
        history_fill(s, &s->history[entry], &entries[cold + i]);
    *count_out = cold + count;
    return COFFER_OK;
}

/* ---- past balances ------------------------------------------------------------------------- */

/* A past state from a history entry: balance and available after it (debits_held is their
 * difference), and the version after it. */
static void account_at_entry(int64_t balance, int64_t available, uint64_t version,
                             coffer_account *out)
{
    out->balance = balance;
    out->available = available;
    out->debits_held = balance - available;
    out->version = version;
}

int cold_account_at(const store *s, index_db *index, uint32_t account, uint32_t hot_from, int at,
                    uint64_t value, coffer_account *out)
{
    uint32_t entry = at == COFFER_AT_SEQ ? store_history_find_seq(s, account, value)
                                         : store_history_find_timestamp(s, account, value);
    account_at_entry(0, 0, 1, out);
    if (entry != STORE_NONE && s->history[entry].ordinal >= hot_from) {
        const store_history *found = &s->history[entry];
        account_at_entry(found->balance, found->available, found->ordinal + 2, out);
        return COFFER_OK;
    }
    if (hot_from == 0)
        return COFFER_OK; /* memory holds every entry: none is that old */
    if (!index)
        return COFFER_STORAGE_FAILED; /* trimmed, and the index is not (or no longer) readable */
    const store_account *a = &s->accounts[account];
    const char *id = store_account_id(s, a);
    coffer_history_entry cold;
    int code = at == COFFER_AT_SEQ ? index_history_at(index, id, a->id_len, value, &cold)
                                   : index_history_at_time(index, id, a->id_len, value, &cold);
    if (code == COFFER_OK)
        account_at_entry(cold.balance, cold.available, cold.version, out);
    return code == COFFER_TRANSFER_NOT_FOUND ? COFFER_OK : code;
}

/* ---- transfers ----------------------------------------------------------------------------- */

int cold_transfer_get(const store *s, index_db *index, const id_filter *filter, const char *id,
                      size_t length, coffer_transfer *out)
{
    if (s->trimmed_seq == 0 || length > COFFER_TRANSFER_ID_MAX)
        return COFFER_TRANSFER_NOT_FOUND;
    if (!index)
        return COFFER_STORAGE_FAILED; /* trimmed, and the index is not (or no longer) readable */
    if (filter && !filter_maybe(filter, store_hash(id, length)))
        return COFFER_TRANSFER_NOT_FOUND; /* most ids never recorded: no RocksDB read */
    index_transfer found;
    int code = index_get_transfer(index, id, length, &found);
    /* The index may run ahead of memory (a cluster follower rebuilt from an older snapshot):
     * a record past the eviction is memory's to answer for, and memory does not hold it yet. */
    if (code == COFFER_OK && found.transfer.seq > s->trimmed_seq)
        return COFFER_TRANSFER_NOT_FOUND;
    if (code == COFFER_OK)
        *out = found.transfer;
    return code;
}
