/*
 * ledger.h — the deterministic state machine. Given events, their seq and timestamps, it
 * applies every rule of docs/semantics.md to a store. No I/O, no clock, no threads, and no
 * allocation while applying: the undo log is allocated once at init and the store's room is
 * reserved by the caller (ledger_reserve_needs) before each submission.
 */
#ifndef COFFER_CORE_LEDGER_H
#define COFFER_CORE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "store/store.h"

/* Field names of results (JSON pointers); store_transfer.field holds the index. */
enum ledger_field {
    FIELD_NONE = 0,
    FIELD_ID,
    FIELD_OP,
    FIELD_FLAGS,
    FIELD_CURRENCY,
    FIELD_MIN_BALANCE,
    FIELD_MAX_BALANCE,
    FIELD_FROM,
    FIELD_TO,
    FIELD_AMOUNT,
    FIELD_HOLD_TIMEOUT,
    FIELD_UP_TO,
    FIELD_EXPECT_FROM,
    FIELD_EXPECT_TO,
    FIELD_POST,
    FIELD_VOID,
    FIELD_METADATA,
    FIELD_COUNT
};

const char *ledger_field_name(int field);
/* The inverse, for a name that ledger_field_name returned or one read back as text (from a log
 * record or the on-disk index); FIELD_NONE for NULL, "" or an unknown name. */
int ledger_field_index(const char *name);

/* Checks an event's fields (docs/semantics.md "Validation"). COFFER_OK or INVALID_FIELD with
 * *field set. Pure: callers may run it on any thread. */
int ledger_validate(const coffer_event *event, int *field);

typedef struct ledger_undo ledger_undo;

/*
 * A recorded transfer that memory no longer holds (the store trimmed it: its seq is at most
 * store.trimmed_seq), as the caller read it back. The core compares a retry with it, replays
 * it, and answers a post or void naming it, exactly as it would from memory.
 */
typedef struct ledger_cold {
    coffer_transfer transfer; /* as coffer_transfer_get answers (state after resolution) */
    int64_t available;        /* insufficient_balance: the explaining figure */
    uint64_t actual_version;  /* version_mismatch */
    int field;                /* a rejection's enum ledger_field, FIELD_NONE for none */
    /* The accounts right after the event (ledger_account_after at its seq), for each account
     * the event resolved when it was recorded; zero for one it did not (a rejected post or
     * void resolves none): what a replay reports as from and to. */
    coffer_account_after from_after, to_after;
} ledger_cold;

/* True and *out filled when `id` (`length` bytes, store_hash `hash`) is a recorded transfer
 * that memory does not hold; false when it has no recorded outcome. It cannot fail: the
 * caller has read what a submission may ask before applying it. */
typedef bool (*ledger_cold_fn)(void *context, const char *id, size_t length, uint64_t hash,
                               ledger_cold *out);

/* A memo of id hashes for the submission being applied: the prefetch pass and the apply both
 * need them, and the strings stay put for the whole call. Keyed by address and generation. */
#define LEDGER_MEMO_SIZE 256
typedef struct ledger_memo {
    const char *text;
    uint64_t generation;
    uint64_t hash;
    size_t length;
} ledger_memo;

typedef struct ledger {
    store *store;
    ledger_undo *undo; /* before-images of records an atomic submission modified */
    size_t undo_count, undo_capacity;
    uint32_t *new_holds; /* holds created by an atomic submission, indexed once it commits */
    size_t new_holds_count;
    uint64_t *seen; /* a scratch set to find repeated ids inside one atomic submission */
    size_t seen_mask;
    bool atomic;
    /* The submission's submitter (NULL: none) and its index in the store's names, found or
     * added with its first recorded transfer (0 until then). */
    const char *submitter_name;
    size_t submitter_length;
    uint16_t submitter;
    uint64_t generation;
    ledger_memo memo[LEDGER_MEMO_SIZE];
    /* Where recorded transfers that memory no longer holds are found (ledger_set_cold), and
     * the one being looked at. */
    ledger_cold_fn cold_find;
    void *cold_context;
    ledger_cold cold;
} ledger;

int ledger_init(ledger *l, store *s);
void ledger_free(ledger *l);

/* Sets how the core finds a transfer id the store trimmed. It asks only for an id the store
 * does not hold while store.trimmed_seq > 0: an event's own id (a retry) and the hold a post
 * or void names. A trimmed store without one is a programmer error (asserted). */
void ledger_set_cold(ledger *l, ledger_cold_fn find, void *context);

/* Room a submission may need; pass to store_reserve() before ledger_apply(). */
typedef struct ledger_needs {
    uint64_t accounts, transfers, history, arena_bytes, holds;
} ledger_needs;
void ledger_needs_add(ledger_needs *needs, const coffer_event *events, size_t count);

/*
 * Applies one submission: event i gets seq0 + i and ts0 + i. Fills results[0..count).
 * `atomic`: all or none (docs/semantics.md "Atomic batches"). `submitted_by` (NULL or "":
 * none) is kept with every transfer the submission records; when it names one, the caller
 * has made room for it with store_submitter_room().
 */
void ledger_apply(ledger *l, const coffer_event *events, size_t count, bool atomic,
                  const char *submitted_by, uint64_t seq0, uint64_t ts0, coffer_result *results);

/* Expires a pending hold (the engine's sweep decides which and when). Fills *result as a post
 * or void reports itself: code ok, state expired, seq, timestamp, the released amount, the
 * hold's expires_at, both accounts after the release and their ids (hold_from, hold_to). */
void ledger_expire(ledger *l, uint32_t hold, uint64_t seq, uint64_t timestamp,
                   coffer_result *result);

/* The account's state right after `seq` (balance, available, version); zero and version 1 if
 * it had no change by then. */
coffer_account_after ledger_account_after(const store *s, uint32_t account, uint64_t seq);

#endif
