/*
 * cold.h — reads across memory and the on-disk index, once memory has been trimmed: what the
 * store (src/store) no longer holds, the index does (everything with seq <= s->trimmed_seq).
 * An account's history in memory is its ordinals from `hot_from` on (store_history_hot_from;
 * passed in, so a test can read a store that holds everything as if its older part were
 * evicted); the older ones are the index's. The engine calls these on its writer thread.
 */
#ifndef COFFER_INDEX_COLD_H
#define COFFER_INDEX_COLD_H

#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "index/filter.h"
#include "index/index.h"
#include "store/store.h"

/*
 * Up to `limit` history entries of `account` with seq > after_seq, oldest first: the index's
 * entries below ordinal hot_from, then memory's, without a gap or a duplicate at the boundary.
 * *count_out gets how many. COFFER_OK, or storage_failed (the index failed, or is NULL while
 * the page needs it).
 */
int cold_history_page(const store *s, index_db *index, uint32_t account, uint32_t hot_from,
                      uint64_t after_seq, size_t limit, coffer_history_entry *entries,
                      size_t *count_out);

/*
 * `account`'s balance, available, debits_held and version right after the newest change with
 * seq (COFFER_AT_SEQ) or timestamp (COFFER_AT_TIMESTAMP) <= `value`, into *out; none: 0 and
 * version 1. From memory when its ordinals from hot_from on hold it, else from the index.
 * COFFER_OK or storage_failed (as above).
 */
int cold_account_at(const store *s, index_db *index, uint32_t account, uint32_t hot_from, int at,
                    uint64_t value, coffer_account *out);

/*
 * A transfer memory does not hold, from the index when memory was trimmed (s->trimmed_seq > 0):
 * COFFER_OK, transfer_not_found (also when never trimmed, or when `filter`, if given, says the
 * id was never indexed), storage_failed (the index failed, or is NULL).
 */
int cold_transfer_get(const store *s, index_db *index, const id_filter *filter, const char *id,
                      size_t length, coffer_transfer *out);

#endif
