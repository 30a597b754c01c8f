/*
 * generator.h — the model test's random event stream, deterministic for a seed: a small pool
 * of accounts in two or three currencies, and batches of transfers, holds, posts, voids,
 * retries, malformed events and huge amounts chosen so that every rule of docs/semantics.md
 * is hit often. It peeks at the reference ledger to aim compare-and-set versions and expiries.
 */
#ifndef COFFER_MODEL_GENERATOR_H
#define COFFER_MODEL_GENERATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "model/reference.h"

/* The most events gen_next_batch() writes (a retried batch plus one new event, and room). */
#define GEN_BATCH_MAX 16

typedef struct gen gen;

/* A generator for at most `events_max` events (it may overshoot by one batch). */
gen *gen_create(uint64_t seed, size_t events_max, ref_ledger *reference);
void gen_destroy(gen *generator);

/* A random number from the seed's stream, for the test's own choices. */
uint64_t gen_random(gen *generator);

/* The fake clock's next value: mostly small steps, sometimes none, a step back, a jump past
 * every hold timeout, or just before a pending hold's expiry (the next batch then posts or
 * voids that hold, to race the sweep). */
uint64_t gen_next_clock(gen *generator, uint64_t clock_ns);

/* Writes the next batch into events[0..GEN_BATCH_MAX) and returns its length. The strings
 * stay valid until gen_destroy(). */
size_t gen_next_batch(gen *generator, coffer_event *events, bool *atomic);

/* Every account id the stream uses, created or not (some are never created). */
size_t gen_account_count(const gen *generator);
const char *gen_account_id(const gen *generator, size_t index);

/* Every valid transfer, post and void id the stream has used (some were never recorded). */
size_t gen_transfer_count(const gen *generator);
const char *gen_transfer_id(const gen *generator, size_t index);

#endif /* COFFER_MODEL_GENERATOR_H */
