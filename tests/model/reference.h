/*
 * reference.h — the model test's oracle: docs/semantics.md re-implemented as plainly as possible
 * (plain arrays, linear search by id, 128-bit sums, whole-state copies for atomic rollback).
 * It takes the same coffer_event structs as the engine and answers in the engine's own types.
 */
#ifndef COFFER_MODEL_REFERENCE_H
#define COFFER_MODEL_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"

typedef struct ref_ledger ref_ledger;

/* A ledger with room for `events_max` submitted events; running past that aborts the test
 * (capacity is not modelled, so the reference simply never runs out). */
ref_ledger *ref_create(size_t events_max);
void ref_destroy(ref_ledger *ledger);

/*
 * Applies one submission the way the engine's writer applies one writer batch: ts0 =
 * max(clock_ns, last timestamp + 1), the expiry sweep's expire events first, then `events`.
 * Fills results[0..count).
 */
void ref_submit(ref_ledger *ledger, const coffer_event *events, size_t count, bool atomic,
                uint64_t clock_ns, coffer_result *results);

uint64_t ref_last_seq(const ref_ledger *ledger);
uint64_t ref_last_timestamp(const ref_ledger *ledger);
/* How many history entries all accounts have together: room for any one account's history. */
size_t ref_history_total(const ref_ledger *ledger);
/* How many expire events the sweep of the last ref_submit() put in front of its batch. */
size_t ref_last_sweep_count(const ref_ledger *ledger);

/* Reads with the contract of the engine call of the same name (coffer_account_get, ...). */
int ref_account_get(ref_ledger *ledger, const char *id, int at, uint64_t at_value,
                    coffer_account *out);
int ref_transfer_get(ref_ledger *ledger, const char *id, coffer_transfer *out);
int ref_history(ref_ledger *ledger, const char *account_id, uint64_t after_seq, size_t limit,
                coffer_history_entry *entries, size_t *count_out);
/* The recorded ids in the order they were recorded, for walking all of them in O(n). */
size_t ref_transfer_count(const ref_ledger *ledger);
void ref_transfer_at(const ref_ledger *ledger, size_t index, coffer_transfer *out);
int ref_holds_list(ref_ledger *ledger, const char *account_id, size_t limit, coffer_transfer *out,
                   size_t *count_out);

#endif /* COFFER_MODEL_REFERENCE_H */
