/*
 * store.h — the in-memory tables the core applies to: accounts and transfers by id, a byte
 * arena for ids and metadata, per-account history, pending holds by expiry, and expiries.
 *
 * Growth happens only in store_reserve() (and store_submitter_room()), which the engine calls
 * before a batch; the core then appends without allocating. Rollback of an atomic batch truncates
 * the tables back to a mark. Records refer to each other by uint32 index (STORE_NONE for none),
 * never by pointer, because tables move when they grow.
 */
#ifndef COFFER_STORE_H
#define COFFER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "store/region.h"

#define STORE_NONE UINT32_MAX

/* Account flags: the public COFFER_FLAG_MIN_UNBOUNDED and COFFER_FLAG_HAS_MAX. */
/* Laid out by use: the id (compared on every lookup) fills the first cache line, what every
 * transfer reads and writes the second, the rest the third. */
typedef struct store_account {
    char id[COFFER_ACCOUNT_ID_MAX]; /* inline: the lookup that compares it reads this record */
    int64_t debits_posted;
    int64_t credits_posted;
    int64_t debits_held;
    int64_t credits_held;
    char currency[16]; /* zero padded, so two currencies compare with one memcmp */
    uint64_t version;
    uint32_t history_last; /* newest entry, STORE_NONE when none */
    uint8_t id_len;
    uint8_t flags;
    int64_t min_balance;
    int64_t max_balance;
    uint32_t history_count; /* entries so far; the newest has ordinal history_count - 1 */
    uint32_t history_jump;  /* the newest entry's jump and its ordinal, cached so an append */
    uint32_t history_jump_ordinal; /* reads one old entry instead of two */
    uint32_t holds_pending;        /* pending holds debiting or crediting this account */
    uint64_t created_seq;
    uint64_t created_at;
    uint64_t metadata_offset; /* into the arena; metadata_len 0: none */
    uint32_t metadata_len;
} store_account;

/*
 * One recorded outcome: a transfer, a hold, a post or a void, applied or rejected.
 * `amount` is what moved (held, captured); for a rejection it is the explaining figure
 * (available for insufficient_balance, actual version for version_mismatch).
 */
typedef struct store_transfer {
    uint64_t seq;
    uint64_t timestamp;
    int64_t amount;
    int64_t amount_requested;
    uint64_t expires_at; /* holds: timestamp + timeout, also when rejected (for replays) */
    uint64_t id_offset;  /* into the arena */
    uint64_t aux_offset; /* an aux record in the arena (see store_aux), 0 when none */
    uint32_t from;       /* account index, STORE_NONE when it did not resolve */
    uint32_t to;
    uint32_t link; /* post/void: the hold; a resolved hold: the post or void */
    uint16_t code; /* the recorded outcome: COFFER_CREATED or the rejection */
    uint8_t id_len;
    uint8_t op;    /* enum coffer_op */
    uint8_t state; /* enum coffer_transfer_state */
    uint8_t flags; /* COFFER_FLAG_UP_TO and the EXPECT flags */
    uint8_t field; /* a rejection's field, an index into ledger's field names */
    /* Who submitted it: an index into the submitters table, 0 for none. It sits in what was
     * padding, so naming the submitter costs a transfer no memory. */
    uint16_t submitter;
} store_transfer;

_Static_assert(sizeof(store_transfer) == 80, "store_transfer grew: it is held per transfer");

/*
 * The distinct names batches were submitted under (API tokens' names, or what an embedding
 * program passed to coffer_submit_as_async), each kept once: store_transfer.submitter is
 * index + 1 into this table. There are few of them (one per token), so the bound is the
 * uint16_t's; a new name past it is refused with capacity_exceeded (see store_submitter_room).
 */
#define STORE_SUBMITTERS_MAX 65535
typedef struct store_submitter {
    char name[COFFER_SUBMITTER_MAX];
    uint8_t length; /* 1..COFFER_SUBMITTER_MAX */
} store_submitter;

/*
 * Rarely present parts of a transfer, kept out of the hot record: expected versions, metadata,
 * and the names of accounts or holds that did not resolve (so a retry can still be compared).
 * Stored in the arena as this header followed by metadata, from, to, hold bytes.
 */
typedef struct store_aux {
    uint64_t expect_from_version;
    uint64_t expect_to_version;
    uint32_t metadata_len;
    uint8_t from_len;
    uint8_t to_len;
    uint8_t hold_len;
    uint8_t reserved;
    uint32_t reserved_2;
} store_aux;

/*
 * One change to one account. Timestamps come from the event (see store_history_timestamp).
 * An account's entries form a chain newest to oldest through `previous`, with Myers' jump
 * pointers ("An applicative random-access stack", 1983) so that finding the entry at an
 * ordinal, seq or time takes O(log n) steps and an append reads one old entry.
 */
typedef struct store_history {
    uint64_t seq;
    int64_t balance;       /* after */
    int64_t available;     /* after */
    uint32_t transfer;     /* the event; for an expiry, the hold */
    uint32_t previous;     /* older entry of the same account */
    uint32_t jump;         /* a far older entry of the same account */
    uint32_t jump_ordinal; /* its ordinal */
    uint32_t ordinal;      /* 0 for the account's first entry; version after = ordinal + 2 */
    uint8_t kind;          /* enum coffer_history_kind */
    uint8_t debit;         /* 1: the debited side of the event, its delta is negative */
} store_history;

typedef struct store_hold_ref {
    uint64_t expires_at;
    uint32_t transfer;
} store_hold_ref;

typedef struct store_expiry {
    uint64_t seq;
    uint64_t timestamp;
    uint32_t hold;
} store_expiry;

/* An open-addressing index from id bytes to a record index. It grows by rehashing into the
 * other of two reserved regions, which is populated ahead of time once the table is 35% full. */
typedef struct store_index {
    uint64_t *slots; /* (hash high 32 bits << 32) | (index + 1); 0 is empty */
    uint64_t mask;
    uint64_t count;
    store_region regions[2];
    int current; /* which region holds slots */
} store_index;

/* Records refer to each other by uint32 index and STORE_NONE is UINT32_MAX, so no table holds
 * more records than this, whatever the memory budget. */
#define STORE_RECORDS_MAX (UINT32_MAX - 1)
/* The memory budget's bounds (see coffer.h). */
#define STORE_MEMORY_MIN COFFER_MEMORY_BYTES_MIN
#define STORE_MEMORY_MAX COFFER_MEMORY_BYTES_MAX

typedef struct store_limits {
    uint32_t accounts_max;  /* records, 1..STORE_RECORDS_MAX (the core checks them per event) */
    uint32_t transfers_max; /* records with an outcome, 1..STORE_RECORDS_MAX */
    /* Bytes the tables and id indexes may commit together, STORE_MEMORY_MIN..STORE_MEMORY_MAX:
     * store_reserve() refuses growth past it. */
    uint64_t memory_max;
} store_limits;

/* Which limit the last refused store_reserve() hit. */
typedef enum store_refusal {
    STORE_REFUSAL_NONE = 0,
    STORE_REFUSAL_MEMORY, /* the memory budget */
    STORE_REFUSAL_TABLE,  /* a table's record limit (refusal_table names it) */
    STORE_REFUSAL_KERNEL, /* the kernel would not commit memory */
} store_refusal;

typedef struct store {
    store_limits limits;
    store_account *accounts;
    uint64_t accounts_count, accounts_capacity;
    store_transfer *transfers;
    uint64_t transfers_count, transfers_capacity;
    store_history *history;
    uint64_t history_count, history_capacity;
    store_expiry *expiries;
    uint64_t expiries_count, expiries_capacity;
    store_hold_ref *holds; /* min-heap by (expires_at, transfer); may hold stale entries */
    uint64_t holds_count, holds_capacity;
    uint64_t holds_pending;
    char *arena; /* ids and metadata; offset 0 is never used, so 0 means none */
    uint64_t arena_used, arena_capacity;
    store_index account_index;
    store_index transfer_index;
    /* The regions under accounts, transfers, history, expiries, holds and the arena. */
    store_region regions[6];
    store_submitter *submitters; /* submitter index i is submitters[i - 1] */
    uint64_t submitters_count, submitters_capacity;
    store_index submitter_index;
    store_region submitters_region; /* under the submitters, charged to the budget too */
    /* What every region above and the indexes' commit together, against limits.memory_max. */
    region_budget budget;
    store_refusal refusal;
    const char *refusal_table; /* STORE_REFUSAL_TABLE: "transfers", "history entries", ... */
    /* Ranges the last store_reserve() asks the engine to populate ahead of use. */
    store_ranges ahead;
    /* The highest horizon store_trim() evicted up to, 0 when never trimmed. Everything with a
     * seq past it is in memory; what has a seq at or below it may be only in the index. */
    uint64_t trimmed_seq;
} store;

/* A position the tables can be truncated back to (rollback of an atomic batch). */
typedef struct store_mark {
    uint64_t accounts_count, transfers_count, history_count, expiries_count, arena_used;
    uint64_t holds_pending, submitters_count;
} store_mark;

/* COFFER_OK; INVALID_ARGUMENT for limits out of their ranges; OUT_OF_MEMORY when address space
 * cannot be reserved. */
int store_init(store *s, const store_limits *limits);
void store_free(store *s);

/* Makes room so that the next appends of up to these counts cannot fail. COFFER_OK, or
 * CAPACITY_EXCEEDED (the memory budget or a table's record limit: s->refusal says which) or
 * OUT_OF_MEMORY (the kernel refused), with no record changed. Once it has succeeded for a
 * batch, the core's own per-event checks of accounts_max and transfers_max are the only
 * capacity checks left on the batch's path. Fills s->ahead. */
int store_reserve(store *s, uint64_t accounts, uint64_t transfers, uint64_t history,
                  uint64_t arena_bytes, uint64_t holds);

/* Roughly how many transfers (of 32-byte ids, between accounts that exist), or else accounts,
 * fit in `memory_bytes`: for the operator's sizing, not a limit. */
void store_capacity_estimate(uint64_t memory_bytes, uint64_t *accounts, uint64_t *transfers);

uint64_t store_hash(const char *bytes, size_t length);

uint32_t store_account_find(const store *s, const char *id, size_t id_len, uint64_t hash);
uint32_t store_transfer_find(const store *s, const char *id, size_t id_len, uint64_t hash);

/* Appends (capacity reserved beforehand). The id is copied (accounts: inline; transfers: into
 * the arena) and indexed. */
uint32_t store_account_append(store *s, const char *id, size_t id_len, uint64_t hash);
uint32_t store_transfer_append(store *s, const char *id, size_t id_len, uint64_t hash);
/* Copies bytes into the arena: _raw packs them, store_arena_append aligns to 8 (aux records). */
uint64_t store_arena_append(store *s, const void *bytes, size_t length);
uint64_t store_arena_append_raw(store *s, const void *bytes, size_t length);

/* Appends a history entry for `account` and links it into the account's chain. */
uint32_t store_history_append(store *s, uint32_t account, uint64_t seq, uint32_t transfer,
                              uint8_t kind, bool debit);
/*
 * Lookups in an account's chain. Each answers STORE_NONE when the entry does not exist, and
 * also when it is not in memory (evicted by store_trim): a caller that gets STORE_NONE from a
 * trimmed store (s->trimmed_seq > 0) for an ordinal below store_history_hot_from(), or a seq or
 * time that may lie in the cold part, asks the index.
 */
/* The entry of `account` with this ordinal (STORE_NONE if it has fewer entries, or is cold). */
uint32_t store_history_at_ordinal(const store *s, uint32_t account, uint32_t ordinal);
/* The newest entry of `account` with seq <= `seq` (STORE_NONE if none in memory). O(log n). */
uint32_t store_history_find_seq(const store *s, uint32_t account, uint64_t seq);
/* The newest entry of `account` with timestamp <= `timestamp` (STORE_NONE if none in memory). */
uint32_t store_history_find_timestamp(const store *s, uint32_t account, uint64_t timestamp);
/* The lowest ordinal of `account` held in memory: 0 on an untrimmed store, the account's
 * history_count when none is. The entries in memory are always the newest ones. O(log n). */
uint32_t store_history_hot_from(const store *s, uint32_t account);
/* Whether memory can tell the newest entry of `account` at or before `seq` (or that there is
 * none): false when that entry was evicted. */
bool store_history_holds_seq(const store *s, uint32_t account, uint64_t seq);
/* Whether memory can tell both accounts' states right after `t` (what a replay reports). */
bool store_transfer_after_held(const store *s, const store_transfer *t);
uint64_t store_history_timestamp(const store *s, const store_history *entry);
int64_t store_history_delta(const store *s, const store_history *entry);

void store_expiry_append(store *s, uint64_t seq, uint64_t timestamp, uint32_t hold);

/* The index of a submitter's name (`length` bytes, 1..COFFER_SUBMITTER_MAX), or 0 when it has
 * none yet. */
uint16_t store_submitter_find(const store *s, const char *name, size_t length);
/* Makes room so that store_submitter_intern() of this name cannot fail: COFFER_OK when it is
 * known or there is room for one more, CAPACITY_EXCEEDED when it is new and the table holds
 * STORE_SUBMITTERS_MAX names. Called before applying each submission that names one. */
int store_submitter_room(store *s, const char *name, size_t length);
/* The name's index, adding it when new (room made by store_submitter_room). */
uint16_t store_submitter_intern(store *s, const char *name, size_t length);
/* The name of submitter `index` (1..submitters_count) and its length; NULL for 0. */
const char *store_submitter_name(const store *s, uint16_t index, size_t *length);

void store_hold_push(store *s, uint64_t expires_at, uint32_t transfer);
/* The soonest entry of the heap, or false when empty. Entries may be stale (not pending). */
bool store_hold_peek(const store *s, store_hold_ref *out);
void store_hold_pop(store *s);

/* The sizes of every table, for snapshots. */
typedef struct store_counts {
    uint64_t accounts, transfers, history, expiries, holds, arena_used, holds_pending;
    uint64_t submitters;
} store_counts;

store_counts store_counts_get(const store *s);
/* Restoring from a snapshot: _begin makes an empty store's tables the given sizes (their bytes
 * are then copied in by the caller), _finish rebuilds the id and name indexes. COFFER_OK, or
 * CAPACITY_EXCEEDED when the counts do not fit the configured limits or memory budget. */
int store_restore_begin(store *s, const store_counts *counts);
int store_restore_finish(store *s);
/* After restoring: every reference a record holds (ids and metadata in the arena, indexes of
 * accounts, transfers, history entries and holds) is in bounds, so a snapshot that passed its
 * hash but holds nonsense (a bug, or tampering) is refused instead of read out of bounds.
 * Semantic consistency is coffer verify's job. */
bool store_check_references(const store *s);

/* What one store_trim() did. */
typedef struct store_trim_stats {
    uint64_t transfers_kept, transfers_evicted;
    uint64_t history_kept, history_evicted;
    uint64_t expiries_kept, expiries_evicted;
    uint64_t arena_bytes_freed; /* bytes of ids, metadata and aux records no longer held */
    uint64_t bytes_freed;       /* committed memory given back: budget.used before - after */
} store_trim_stats;

/*
 * Evicts, in place, every transfer, history entry and expiry with seq <= `horizon` that nothing
 * kept needs: pending holds stay whatever their seq, and so does a transfer a kept record refers
 * to (a post's or void's hold or, for a rejected one, whatever record it named; a resolved
 * hold's post or void; a history entry's transfer; an expiry's hold). Accounts stay. Kept
 * records keep their order, moved towards index 0, and every reference to them is remapped;
 * a reference to an evicted record becomes STORE_NONE (a kept history entry's previous or
 * jump, an account's newest entry when all of its entries went); a transfer's link never does. The
 * arena is compacted, the holds heap and the transfers' id index rebuilt, and the pages freed go
 * back to the kernel and the budget. s->trimmed_seq becomes the higher of itself and `horizon`, and
 * everything at or below it that is still evictable goes, so a repeated trim also takes holds
 * resolved since the last.
 *
 * Writer thread, between batches (marks taken before it are void). COFFER_OK with `stats`
 * filled (it may be null); OUT_OF_MEMORY when its temporary map cannot be allocated, or
 * INTERNAL when the arena is not laid out in record order (a tampered snapshot), both with
 * nothing changed.
 */
int store_trim(store *s, uint64_t horizon, store_trim_stats *stats);

/* What the tables and indexes would commit with nothing populated ahead of use (budget.used
 * counts those windows too, which a reservation gives back before it refuses). */
uint64_t store_bytes_held(const store *s);

store_mark store_mark_get(const store *s);
/* Truncates every table back to `mark`, unlinking history and unindexing ids appended after it.
 * Records modified in place (accounts, holds) are restored by the caller's undo log. */
void store_rollback(store *s, const store_mark *mark);

static inline const char *store_account_id(const store *s, const store_account *account)
{
    (void)s;
    return account->id;
}

static inline const char *store_transfer_id(const store *s, const store_transfer *transfer)
{
    return s->arena + transfer->id_offset;
}

static inline const store_aux *store_transfer_aux(const store *s, const store_transfer *transfer)
{
    return transfer->aux_offset ? (const store_aux *)(s->arena + transfer->aux_offset) : 0;
}

#endif
