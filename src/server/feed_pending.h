/*
 * feed_pending.h — TEMPORARY: the change feed's declarations as the lead's notes give them,
 * until include/coffer.h has them on main. Removed by the merge that brings src/engine/feed.c.
 */
#ifndef COFFER_SERVER_FEED_PENDING_H
#define COFFER_SERVER_FEED_PENDING_H

#include <jansson.h>

#include "coffer.h"

#ifndef COFFER_CHANGE_TYPE_LIMIT
/* ---------------------------------------------------------------------------------------- */
/* The change feed: every change the log holds, in seq order, read from the log on the
 * caller's thread (never the writer's), and only once it is durable. A durable engine only:
 * an engine without a directory answers not_supported.                                     */

enum coffer_change_type {
    COFFER_CHANGE_ACCOUNT_CREATED = 1,   /* account.created */
    COFFER_CHANGE_TRANSFER_POSTED = 2,   /* transfer.posted: a plain transfer applied */
    COFFER_CHANGE_HOLD_CREATED = 3,      /* hold.created */
    COFFER_CHANGE_HOLD_POSTED = 4,       /* hold.posted: a post event captured a hold */
    COFFER_CHANGE_HOLD_VOIDED = 5,       /* hold.voided */
    COFFER_CHANGE_HOLD_EXPIRED = 6,      /* hold.expired: written by the expiry sweep */
    COFFER_CHANGE_TRANSFER_REJECTED = 7, /* a recorded rejection (any op but an account) */
};
#define COFFER_CHANGE_TYPE_LIMIT 8
/* The bit of a type in coffer_feed_filter.types. */
#define COFFER_CHANGE_BIT(type) (1u << (type))
/* Every type but transfer.rejected: what a filter with types == 0 selects. */
#define COFFER_CHANGE_DEFAULT_TYPES                                                                \
    (COFFER_CHANGE_BIT(1) | COFFER_CHANGE_BIT(2) | COFFER_CHANGE_BIT(3) | COFFER_CHANGE_BIT(4) |   \
     COFFER_CHANGE_BIT(5) | COFFER_CHANGE_BIT(6))

/* "account.created", ... for a type; NULL for anything else. */
const char *coffer_change_type_name(int type);
/* The type named by `name` (length bytes, not NUL-terminated), or 0. */
int coffer_change_type_parse(const char *name, size_t length);

/*
 * One change. `event` is the event as submitted; for hold.expired, op is COFFER_OP_EXPIRE and
 * id and hold_id name the hold. `result` is its outcome as the submitter was answered: code,
 * state, amount (moved, held, captured, or released by a void or an expiry), expires_at for a
 * hold, both accounts' balance, available and version after the change in `from` and `to`,
 * and for post, void and expiry the hold's accounts in hold_from and hold_to. An account
 * creation has neither account after state (its version is 1, its balances 0). Everything a
 * change points to belongs to the feed and stays valid until its next read or its close.
 */
typedef struct coffer_change {
    uint64_t seq;
    uint64_t timestamp;       /* ns since the epoch */
    int type;                 /* enum coffer_change_type */
    const char *submitted_by; /* the name the batch was submitted under, or NULL */
    coffer_event event;
    coffer_result result;
} coffer_change;

typedef struct coffer_feed_filter {
    uint32_t types;      /* COFFER_CHANGE_BIT()s; 0: COFFER_CHANGE_DEFAULT_TYPES */
    const char *account; /* only changes that touch this account; NULL: every account */
} coffer_feed_filter;

/* A reader of the feed: its own position in the log, for one thread at a time. Any number may
 * be open; each holds a file descriptor and its buffers. */
typedef struct coffer_feed coffer_feed;

/* Opens a reader. OK, not_supported (no directory), out_of_memory, storage_failed. */
int coffer_feed_open(coffer *db, coffer_feed **out);
/*
 * Fills out[0..*count) with at most `max` changes of seq > after_seq that `filter` (or NULL:
 * the default types, every account) selects, oldest first, all durable. Reads a bounded
 * amount of log per call, so a page may hold fewer than `max` changes, or none, while more
 * follow: *next_after is the seq to pass next (past every change read, selected or not; equal
 * to after_seq only when the durable log holds nothing after it). Returns OK, or
 * storage_failed when the log cannot be read (a damaged record is never skipped).
 */
int coffer_feed_read(coffer_feed *feed, uint64_t after_seq, const coffer_feed_filter *filter,
                     coffer_change *out, size_t max, size_t *count, uint64_t *next_after);
void coffer_feed_close(coffer_feed *feed);

/* The highest durable seq: every change up to it can be read. 0 for an empty log or an engine
 * without a directory. */
uint64_t coffer_durable_seq(coffer *db);
/* Blocks until the durable seq is above after_seq, timeout_ms passes, or the engine starts
 * closing (every waiter is released then; no wait may outlive coffer_close). Returns the
 * durable seq. Cheap for the writer: the log thread wakes waiters only when there are some. */
uint64_t coffer_feed_wait(coffer *db, uint64_t after_seq, uint64_t timeout_ms);

#endif

/* One change as JSON (src/server/encode.c on main soon). */
json_t *encode_change_json(const coffer_change *change);

#endif
