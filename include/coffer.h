/*
 * coffer.h — the public embedded API of coffer, a ledger engine for balances, holds and
 * inventory that cannot race. If it is not in this file, it is not API.
 *
 * Lifecycle: coffer_open() -> coffer_submit() / lookups -> coffer_close().
 * Every function returns an int code from COFFER_CODE_MAP (0 is COFFER_OK); outputs come last.
 * Passing NULL for the handle (or a required output) returns COFFER_INVALID_ARGUMENT.
 * All functions are safe to call from any number of threads at once; one writer thread inside
 * the engine applies every event in one total order, so no two calls ever race on state.
 */
#ifndef COFFER_H
#define COFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The one table of result codes: X(NAME, name, value, http_status, message).
 * Names, values, HTTP statuses, messages, docs and metrics all come from here. Values are
 * stable forever: never renumber, only append.
 */
#define COFFER_CODE_MAP(X)                                                                         \
    X(OK, ok, 0, 200, "success")                                                                   \
    X(CREATED, created, 1, 201, "created")                                                         \
    X(EXISTS, exists, 2, 200,                                                                      \
      "already applied with the same content; this is the original outcome")                       \
    X(INVALID_JSON, invalid_json, 10, 400, "the request body is not valid JSON")                   \
    X(INVALID_FIELD, invalid_field, 11, 400,                                                       \
      "a field is missing, of the wrong type or out of range")                                     \
    X(BATCH_TOO_LARGE, batch_too_large, 12, 400, "a batch holds more than 8190 events")            \
    X(BODY_TOO_LARGE, body_too_large, 13, 413, "the request body is larger than the limit")        \
    X(INVALID_ARGUMENT, invalid_argument, 14, 400, "an argument of the call is invalid")           \
    X(ROUTE_NOT_FOUND, route_not_found, 15, 404, "no such endpoint")                               \
    X(METHOD_NOT_ALLOWED, method_not_allowed, 16, 405, "the endpoint does not take this method")   \
    X(ACCOUNT_NOT_FOUND, account_not_found, 20, 422, "the account does not exist")                 \
    X(HOLD_NOT_FOUND, hold_not_found, 21, 422, "the hold does not exist")                          \
    X(CURRENCY_MISMATCH, currency_mismatch, 22, 422, "the accounts have different currencies")     \
    X(SAME_ACCOUNT, same_account, 23, 422, "from and to are the same account")                     \
    X(TRANSFER_NOT_FOUND, transfer_not_found, 24, 404, "the transfer does not exist")              \
    X(ID_REUSED, id_reused, 30, 422, "the id was already used with different content")             \
    X(REQUEST_IN_PROGRESS, request_in_progress, 31, 409, "a request with this id is in progress")  \
    X(INSUFFICIENT_BALANCE, insufficient_balance, 40, 409,                                         \
      "the debit would take the account below its minimum balance")                                \
    X(EXCEEDS_MAX_BALANCE, exceeds_max_balance, 41, 409,                                           \
      "the credit would take the account above its maximum balance")                               \
    X(VERSION_MISMATCH, version_mismatch, 42, 409, "the account version is not the expected one")  \
    X(HOLD_EXPIRED, hold_expired, 43, 409, "the hold has expired")                                 \
    X(HOLD_ALREADY_POSTED, hold_already_posted, 44, 409, "the hold was already posted")            \
    X(HOLD_ALREADY_VOIDED, hold_already_voided, 45, 409, "the hold was already voided")            \
    X(HOLD_AMOUNT_EXCEEDED, hold_amount_exceeded, 46, 409, "the amount is larger than the hold")   \
    X(BATCH_FAILED, batch_failed, 47, 409, "another event of the atomic batch failed")             \
    X(OVERFLOW, overflow, 48, 409, "the result does not fit a signed 64-bit integer")              \
    X(OVERLOADED, overloaded, 50, 503, "the request queue is full; retry later")                   \
    X(STORAGE_FAILED, storage_failed, 51, 503, "storage failed; the engine refuses writes")        \
    X(SHUTTING_DOWN, shutting_down, 52, 503, "the engine is shutting down")                        \
    X(CAPACITY_EXCEEDED, capacity_exceeded, 53, 503, "the configured capacity is full")            \
    X(OUT_OF_MEMORY, out_of_memory, 54, 503, "memory could not be allocated")                      \
    X(INTERNAL, internal, 55, 500, "internal error")

enum coffer_code {
#define COFFER_CODE_ENUM(NAME, name, value, http, message) COFFER_##NAME = value,
    COFFER_CODE_MAP(COFFER_CODE_ENUM)
#undef COFFER_CODE_ENUM
};

/* One past the largest code value: arrays indexed by code have this many slots. */
#define COFFER_CODE_LIMIT 56

/* A static string describing `code` ("unknown code" for a value outside the table). */
const char *coffer_strerror(int code);
/* The stable snake_case name of `code` ("created"), or NULL for a value outside the table. */
const char *coffer_code_name(int code);
/* The HTTP status of `code`, or 500 for a value outside the table. */
int coffer_code_http_status(int code);
/* True for the codes that mean the event was applied or replays an applied one. */
bool coffer_code_is_success(int code);

/* Limits (DESIGN §7). Every one has an error: invalid_field or batch_too_large. */
#define COFFER_BATCH_EVENTS_MAX 8190
#define COFFER_ACCOUNT_ID_MAX 64
#define COFFER_TRANSFER_ID_MAX 128
#define COFFER_CURRENCY_MAX 12
#define COFFER_METADATA_MAX 1024
#define COFFER_HOLD_TIMEOUT_MS_MAX (366ULL * 24 * 3600 * 1000)

typedef struct coffer coffer; /* the opaque engine handle */

/* Where a past read points: now, after the event with a given seq, or at a wall time. */
enum coffer_at { COFFER_AT_NOW = 0, COFFER_AT_SEQ = 1, COFFER_AT_TIMESTAMP = 2 };

/* The log's write and sync calls, replaceable for fault-injection tests. Each returns 0, or
 * -1 with errno set (EIO, ENOSPC, ...); write_at writes all of `bytes` at `offset`. */
typedef struct coffer_io {
    int (*write_at)(int fd, const void *bytes, size_t length, uint64_t offset, void *context);
    int (*sync)(int fd, void *context);
    void *context;
} coffer_io;

typedef struct coffer_options {
    uint32_t accounts_max;     /* capacity; capacity_exceeded beyond it */
    uint32_t transfers_max;    /* ids with a recorded outcome, successes and rejections */
    uint32_t queue_events_max; /* events waiting for the writer; overloaded beyond it */
    /* The engine's clock in ns since the epoch; NULL means the wall clock. Tests inject one.
     * Whatever it returns, event timestamps never go back. With the wall clock the engine
     * expires due holds on its own; with an injected clock only at the start of each batch
     * of submitted events, so a test decides exactly when expiries happen. */
    uint64_t (*clock_ns)(void *context);
    void *clock_context;
    /* NOT DURABLE when true: records are written but never synced, so a crash of the machine
     * can lose acknowledged events. For tests and benchmarks only. */
    bool fsync_never;
    /* Log segments roll over at this size (bytes); 0: 512 MiB. */
    uint64_t segment_bytes_max;
    /* Take a snapshot after this many recorded events, or this many seconds when anything was
     * recorded (0: not by that measure); one is always taken at coffer_close(). */
    uint64_t snapshot_every_events;
    uint64_t snapshot_every_seconds;
    /* Where the engine's log lines go (start, recovery, storage errors); NULL: stderr. */
    void (*log)(void *context, const char *line);
    void *log_context;
    /* Fault injection for tests; NULL: the real write and sync. */
    const coffer_io *io;
    /* false: an open whose log lost acknowledged records (it ends before its checkpoint, or a
     * segment is missing or shortened) fails with COFFER_STORAGE_FAILED, the log line naming
     * the files, offsets and seqs. true: it opens anyway, and the loss is logged and appended
     * to DIR/data-loss.log. */
    bool accept_data_loss;
} coffer_options;

/* Fills `options` with the defaults (sized for a 2-core, 24 GiB machine). */
void coffer_options_init(coffer_options *options);

/*
 * Opens an engine. `dir` NULL: in memory, nothing durable. Otherwise the data directory
 * (created if missing, locked against a second process): the latest snapshot is loaded and the
 * log after it replayed. A torn record at the very end of the log was never acknowledged and is
 * truncated (logged with its size); a bad record followed by good ones is corruption and the
 * open fails with COFFER_STORAGE_FAILED, the log line naming the file and offset.
 * `options` NULL: the defaults. On success *db_out owns a running engine that coffer_close()
 * must release.
 */
int coffer_open(const char *dir, const coffer_options *options, coffer **db_out);
/* Stops the writer after the queued events are applied and frees everything. NULL is a no-op. */
void coffer_close(coffer *db);

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                   */

enum coffer_op {
    COFFER_OP_CREATE_ACCOUNT = 1,
    COFFER_OP_TRANSFER = 2, /* a plain transfer, or a hold when hold_timeout_ms > 0 */
    COFFER_OP_POST = 3,     /* capture a pending hold, fully or partly */
    COFFER_OP_VOID = 4,     /* release a pending hold */
    COFFER_OP_EXPIRE = 5,   /* written by the engine's expiry sweep; not accepted from callers */
};

/* Flags of coffer_event.flags. */
#define COFFER_FLAG_UP_TO 0x01         /* move at most `amount`, as much as the limits allow */
#define COFFER_FLAG_EXPECT_FROM 0x02   /* require `from` at version expect_from_version */
#define COFFER_FLAG_EXPECT_TO 0x04     /* require `to` at version expect_to_version */
#define COFFER_FLAG_MIN_UNBOUNDED 0x08 /* account: no floor (min_balance ignored) */
#define COFFER_FLAG_HAS_MAX 0x10       /* account: max_balance is a cap */

/*
 * One event. Strings are NUL-terminated and borrowed only for the duration of the call.
 * CREATE_ACCOUNT uses id, currency, min_balance, max_balance, metadata and the MIN/MAX flags.
 * TRANSFER uses id, from, to, amount, hold_timeout_ms, the expect versions, metadata, flags.
 * POST uses id, hold_id and amount (0: the whole hold). VOID uses id and hold_id. Posts and
 * voids take no flags. A NULL where a string is required is invalid_field for that field.
 */
typedef struct coffer_event {
    uint8_t op;
    uint8_t flags;
    const char *id;
    const char *currency;
    const char *from;
    const char *to;
    const char *hold_id;
    int64_t amount;
    int64_t min_balance;
    int64_t max_balance;
    uint64_t hold_timeout_ms;
    uint64_t expect_from_version;
    uint64_t expect_to_version;
    const char *metadata; /* a JSON object as text, stored verbatim; NULL for none */
    uint32_t metadata_len;
} coffer_event;

/* The state of an account right after an event, as the event's result reports it. */
typedef struct coffer_account_after {
    int64_t balance;
    int64_t available;
    uint64_t version;
} coffer_account_after;

enum coffer_transfer_state {
    COFFER_STATE_NONE = 0,
    COFFER_STATE_POSTED = 1,   /* a plain transfer, or a post/void/expire event that applied */
    COFFER_STATE_PENDING = 2,  /* a hold not yet resolved */
    COFFER_STATE_CAPTURED = 3, /* a hold resolved by a post */
    COFFER_STATE_VOIDED = 4,   /* a hold resolved by a void */
    COFFER_STATE_EXPIRED = 5,  /* a hold resolved by expiry */
    COFFER_STATE_REJECTED = 6, /* refused: recorded with its code when the result's seq != 0 */
};

/*
 * The result of one event. For a replay (`replayed`), code is EXISTS when the original
 * succeeded, or the original rejection code when it was refused: a replay never turns a
 * rejection into a success. All the other fields describe the original outcome.
 */
typedef struct coffer_result {
    int code;
    bool replayed;
    uint8_t state;           /* enum coffer_transfer_state; for accounts POSTED on success */
    const char *field;       /* invalid_field, id_reused, version_mismatch: a static JSON pointer */
    uint64_t seq;            /* the event's seq; 0 when nothing was recorded */
    uint64_t timestamp;      /* ns since the epoch */
    int64_t amount;          /* moved, held or captured; 0 when rejected */
    uint64_t expires_at;     /* holds */
    uint64_t actual_version; /* version_mismatch */
    int64_t available;       /* insufficient_balance: the available amount of `from` */
    coffer_account_after from, to;
    /* Post and void: the accounts of the hold (a transfer's caller already knows them). */
    char hold_from[COFFER_ACCOUNT_ID_MAX + 1];
    char hold_to[COFFER_ACCOUNT_ID_MAX + 1];
} coffer_result;

/*
 * Applies `count` events (1..COFFER_BATCH_EVENTS_MAX) in order and blocks until they are
 * applied (and durable, for a durable engine). `atomic`: all succeed or none is applied.
 * Fills results[0..count). Returns OK when every event got a result (look at each code),
 * or a service code (overloaded, shutting_down, batch_too_large, invalid_argument) when none
 * was applied. storage_failed means the log could not make the batch durable: it is not
 * acknowledged, the engine refuses everything after it, and it tries to cut the log back so
 * the batch cannot reappear (its log line says whether it could); if it could not, the
 * outcome is unknown until a restart, where a retry with the same ids tells.
 */
int coffer_submit(coffer *db, const coffer_event *events, size_t count, bool atomic,
                  coffer_result *results);

/* ---------------------------------------------------------------------------------------- */
/* Reads. Every output is a copy the caller owns; nothing points into the engine.           */

typedef struct coffer_account {
    char id[COFFER_ACCOUNT_ID_MAX + 1];
    char currency[COFFER_CURRENCY_MAX + 1];
    bool min_unbounded;
    bool has_max;
    int64_t min_balance;
    int64_t max_balance;
    int64_t debits_posted;
    int64_t credits_posted;
    int64_t debits_held;
    int64_t credits_held;
    int64_t balance;   /* credits_posted - debits_posted */
    int64_t available; /* balance - debits_held */
    uint64_t version;
    uint64_t created_seq;
    uint64_t created_at; /* ns since the epoch */
    uint32_t metadata_len;
    char metadata[COFFER_METADATA_MAX + 1];
} coffer_account;

/* The account now (at COFFER_AT_NOW), or as it was after the last change at or before the
 * given seq or timestamp; account_not_found if it did not exist then. A past read fills
 * balance, available, debits_held (their difference) and version exactly, and reads
 * debits_posted, credits_posted and credits_held as 0: history keeps only what it needs. */
int coffer_account_get(coffer *db, const char *id, int at, uint64_t at_value, coffer_account *out);

enum coffer_history_kind {
    COFFER_HISTORY_POSTED = 1,   /* a plain transfer moved money */
    COFFER_HISTORY_HELD = 2,     /* a hold reserved money */
    COFFER_HISTORY_CAPTURED = 3, /* a post captured (part of) a hold; the rest is released */
    COFFER_HISTORY_RELEASED = 4, /* a void released the hold */
    COFFER_HISTORY_EXPIRED = 5,  /* a hold's reservation ended by expiry */
};

typedef struct coffer_history_entry {
    uint64_t seq;
    uint64_t timestamp;
    char transfer_id[COFFER_TRANSFER_ID_MAX + 1]; /* the event; for an expiry, the hold */
    uint8_t kind;                                 /* enum coffer_history_kind */
    int64_t delta;     /* signed change of balance (posted, captured) or of held amounts */
    int64_t balance;   /* after the change */
    int64_t available; /* after the change */
    uint64_t version;  /* the account's version after the change */
} coffer_history_entry;

/* Up to `limit` entries with seq > after_seq, oldest first. *count_out gets how many.
 * account_not_found for an unknown account. */
int coffer_history(coffer *db, const char *account_id, uint64_t after_seq, size_t limit,
                   coffer_history_entry *entries, size_t *count_out);

typedef struct coffer_transfer {
    char id[COFFER_TRANSFER_ID_MAX + 1];
    uint8_t op;    /* enum coffer_op */
    uint8_t state; /* enum coffer_transfer_state */
    uint8_t flags;
    int code; /* the recorded outcome: created, or the rejection */
    char from[COFFER_ACCOUNT_ID_MAX + 1];
    char to[COFFER_ACCOUNT_ID_MAX + 1];
    char hold_id[COFFER_TRANSFER_ID_MAX + 1]; /* post/void: the hold */
    int64_t amount;                           /* moved, held or captured */
    int64_t amount_requested;                 /* as submitted */
    uint64_t seq;
    uint64_t timestamp;
    uint64_t hold_timeout_ms;
    uint64_t expires_at;
    int64_t captured; /* a captured hold: the posted amount */
    uint64_t expect_from_version;
    uint64_t expect_to_version;
    uint32_t metadata_len;
    char metadata[COFFER_METADATA_MAX + 1];
} coffer_transfer;

/* The transfer (or post/void) with this id and its outcome; transfer_not_found if none. */
int coffer_transfer_get(coffer *db, const char *id, coffer_transfer *out);

/* Pending holds, soonest expiry first; only those touching `account_id` unless it is NULL
 * (account_not_found for an unknown account). */
int coffer_holds_list(coffer *db, const char *account_id, size_t limit, coffer_transfer *out,
                      size_t *count_out);

#define COFFER_VERIFY_PROBLEMS_MAX 16
typedef struct coffer_verify_report {
    bool ok;
    uint32_t problem_count; /* all found; only the first COFFER_VERIFY_PROBLEMS_MAX are kept */
    char problems[COFFER_VERIFY_PROBLEMS_MAX][160];
    uint64_t accounts_checked;
    uint64_t transfers_checked;
} coffer_verify_report;

/* Checks the invariants on live state: per currency balances sum to zero, every account
 * within its limits, held totals equal the sum of pending holds, every id has one outcome. */
int coffer_verify(coffer *db, coffer_verify_report *out);

#define COFFER_HISTOGRAM_BUCKETS 16
typedef struct coffer_stats {
    uint64_t seq; /* the last applied event */
    uint64_t accounts;
    uint64_t transfers;
    uint64_t holds_pending;
    uint64_t holds_expired;
    uint64_t batches;
    uint64_t events_applied;
    uint64_t queue_events;
    uint64_t codes[COFFER_CODE_LIMIT]; /* results by code since open */
    uint64_t fsyncs;                   /* log syncs since open */
    /* batch_events[i]: batches of at most 2^i events (the last bucket: more);
     * fsync_us[i]: log syncs taking at most 16 * 2^i microseconds (the last: longer). */
    uint64_t batch_events[COFFER_HISTOGRAM_BUCKETS];
    uint64_t fsync_us[COFFER_HISTOGRAM_BUCKETS];
    uint64_t batch_events_total; /* the sums of the two histograms */
    uint64_t fsync_us_total;
    uint64_t durable_seq; /* the last seq known durable */
    bool storage_failed;  /* a write or sync failed: writes are refused until restart */
} coffer_stats;

int coffer_stats_get(coffer *db, coffer_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* COFFER_H */
