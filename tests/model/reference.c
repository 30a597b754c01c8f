/*
 * reference.c — docs/semantics.md re-implemented independently of src/, as the model test's
 * oracle. Slow on purpose: fixed arrays, linear search by string id, every sum in __int128,
 * and an atomic batch rolled back by restoring a full copy of the state taken before it.
 */
#include "model/reference.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000ULL
#define REF_ACCOUNTS_MAX 256
/* The reference is only fed the model test's batches, which are short. */
#define REF_ATOMIC_EVENTS_MAX 64

typedef __int128 wide;

/* An account as coffer_account_get returns it, and the result its creation returned. */
typedef struct ref_account {
    coffer_account row;
    coffer_result result;
} ref_account;

/* A recorded id as coffer_transfer_get returns it, and the result a replay returns again. */
typedef struct ref_transfer {
    coffer_transfer row;
    coffer_result result;
} ref_transfer;

/* One history entry, with the account's four totals after it so past reads can be answered. */
typedef struct ref_change {
    char account_id[COFFER_ACCOUNT_ID_MAX + 1];
    coffer_history_entry entry;
    int64_t debits_posted;
    int64_t credits_posted;
    int64_t debits_held;
    int64_t credits_held;
} ref_change;

/* Everything an atomic batch may have to undo. Capacities are fixed at creation. */
typedef struct ref_state {
    ref_account *accounts;
    size_t account_count;
    ref_transfer *transfers;
    size_t transfer_count;
    ref_change *changes;
    size_t change_count;
} ref_state;

struct ref_ledger {
    ref_state state;
    ref_state saved; /* the copy an atomic batch restores when one of its events fails */
    size_t transfers_max;
    size_t changes_max;
    /* Slots are consumed even by events that record nothing, so these are never rolled back. */
    uint64_t last_seq;
    uint64_t last_timestamp;
    size_t last_sweep_count;
};

static void die(const char *message)
{
    fprintf(stderr, "reference: %s\n", message);
    abort();
}

static void *allocate(size_t count, size_t size)
{
    void *memory = calloc(count, size);
    if (memory == NULL)
        die("out of memory");
    return memory;
}

/* ---------------------------------------------------------------------------------------- */
/* State: allocation and whole copies                                                       */

static void state_allocate(ref_state *state, size_t transfers_max, size_t changes_max)
{
    state->accounts = allocate(REF_ACCOUNTS_MAX, sizeof(ref_account));
    state->transfers = allocate(transfers_max, sizeof(ref_transfer));
    state->changes = allocate(changes_max, sizeof(ref_change));
}

static void state_free(ref_state *state)
{
    free(state->accounts);
    free(state->transfers);
    free(state->changes);
}

/* Copies the used part of every array; both states have the same capacities. */
static void state_copy(ref_state *to, const ref_state *from)
{
    memcpy(to->accounts, from->accounts, from->account_count * sizeof(ref_account));
    memcpy(to->transfers, from->transfers, from->transfer_count * sizeof(ref_transfer));
    memcpy(to->changes, from->changes, from->change_count * sizeof(ref_change));
    to->account_count = from->account_count;
    to->transfer_count = from->transfer_count;
    to->change_count = from->change_count;
}

ref_ledger *ref_create(size_t events_max)
{
    ref_ledger *ledger = allocate(1, sizeof(ref_ledger));
    /* Every event records at most one id; it and every expiry touch at most two accounts. */
    ledger->transfers_max = events_max + 16;
    ledger->changes_max = 4 * ledger->transfers_max;
    state_allocate(&ledger->state, ledger->transfers_max, ledger->changes_max);
    state_allocate(&ledger->saved, ledger->transfers_max, ledger->changes_max);
    return ledger;
}

void ref_destroy(ref_ledger *ledger)
{
    if (ledger == NULL)
        return;
    state_free(&ledger->state);
    state_free(&ledger->saved);
    free(ledger);
}

uint64_t ref_last_seq(const ref_ledger *ledger)
{
    return ledger->last_seq;
}
uint64_t ref_last_timestamp(const ref_ledger *ledger)
{
    return ledger->last_timestamp;
}
size_t ref_last_sweep_count(const ref_ledger *ledger)
{
    return ledger->last_sweep_count;
}
size_t ref_history_total(const ref_ledger *ledger)
{
    return ledger->state.change_count;
}

static ref_account *account_find(ref_state *state, const char *id)
{
    for (size_t i = 0; i < state->account_count; i++) {
        if (strcmp(state->accounts[i].row.id, id) == 0)
            return &state->accounts[i];
    }
    return NULL;
}

static ref_transfer *transfer_find(ref_state *state, const char *id)
{
    for (size_t i = 0; i < state->transfer_count; i++) {
        if (strcmp(state->transfers[i].row.id, id) == 0)
            return &state->transfers[i];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Validation (semantics.md "Validation")                                                   */

static bool id_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("._:@/-", c) != NULL);
}

static bool id_ok(const char *id, size_t length_max)
{
    if (id == NULL)
        return false;
    size_t length = strnlen(id, length_max + 1);
    if (length < 1 || length > length_max)
        return false;
    for (size_t i = 0; i < length; i++) {
        if (!id_char_ok(id[i]))
            return false;
    }
    return true;
}

static bool currency_ok(const char *currency)
{
    if (currency == NULL)
        return false;
    size_t length = strnlen(currency, COFFER_CURRENCY_MAX + 1);
    if (length < 1 || length > COFFER_CURRENCY_MAX)
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = currency[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static const char *invalid_account_field(const coffer_event *event)
{
    bool unbounded = event->flags & COFFER_FLAG_MIN_UNBOUNDED;
    if (!id_ok(event->id, COFFER_ACCOUNT_ID_MAX))
        return "/id";
    if (!currency_ok(event->currency))
        return "/currency";
    if (!unbounded && event->min_balance > 0)
        return "/min_balance";
    if ((event->flags & COFFER_FLAG_HAS_MAX) &&
        (event->max_balance < 0 || (!unbounded && event->max_balance < event->min_balance))) {
        return "/max_balance";
    }
    return NULL;
}

/* The JSON pointer of the first invalid field (in the order of the table), or NULL. */
static const char *invalid_field(const coffer_event *event)
{
    const char *field = NULL;
    switch (event->op) {
    case COFFER_OP_CREATE_ACCOUNT:
        field = invalid_account_field(event);
        break;
    case COFFER_OP_TRANSFER:
        if (!id_ok(event->id, COFFER_TRANSFER_ID_MAX))
            field = "/id";
        else if (!id_ok(event->from, COFFER_ACCOUNT_ID_MAX))
            field = "/from";
        else if (!id_ok(event->to, COFFER_ACCOUNT_ID_MAX))
            field = "/to";
        else if (event->amount < 1)
            field = "/amount";
        else if (event->hold_timeout_ms > COFFER_HOLD_TIMEOUT_MS_MAX)
            field = "/hold/timeout_ms";
        break;
    case COFFER_OP_POST:
        if (!id_ok(event->id, COFFER_TRANSFER_ID_MAX))
            field = "/id";
        else if (event->amount < 0)
            field = "/amount";
        else if (!id_ok(event->hold_id, COFFER_TRANSFER_ID_MAX))
            field = "/post";
        break;
    case COFFER_OP_VOID:
        if (!id_ok(event->id, COFFER_TRANSFER_ID_MAX))
            field = "/id";
        else if (!id_ok(event->hold_id, COFFER_TRANSFER_ID_MAX))
            field = "/void";
        break;
    default:
        return "/op";
    }
    if (field == NULL && event->metadata_len > COFFER_METADATA_MAX)
        field = "/metadata";
    return field;
}

/* ---------------------------------------------------------------------------------------- */
/* Idempotency (semantics.md "Transfers" step 2 and "Accounts")                             */

enum event_kind { KIND_PLAIN, KIND_HOLD, KIND_POST, KIND_VOID };

static int event_kind(uint8_t op, uint64_t hold_timeout_ms)
{
    if (op == COFFER_OP_POST)
        return KIND_POST;
    if (op == COFFER_OP_VOID)
        return KIND_VOID;
    return hold_timeout_ms > 0 ? KIND_HOLD : KIND_PLAIN;
}

/* NULL and "" are the same absent string. */
static bool same_string(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

static bool same_metadata(const char *a, uint32_t a_len, const char *b, uint32_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

/* An absent expect version differs from any given one. */
static bool same_expect(uint8_t a_flags, uint64_t a_version, uint8_t b_flags, uint64_t b_version,
                        uint8_t flag)
{
    if ((a_flags & flag) != (b_flags & flag))
        return false;
    return !(a_flags & flag) || a_version == b_version;
}

static const char *kind_difference(int a, int b)
{
    if (a == KIND_POST || b == KIND_POST)
        return "/post";
    if (a == KIND_VOID || b == KIND_VOID)
        return "/void";
    return "/hold/timeout_ms";
}

/* The first field in which a retry differs from the recorded event, or NULL if identical. */
static const char *transfer_difference(const coffer_event *event, const coffer_transfer *row)
{
    int kind = event_kind(event->op, event->hold_timeout_ms);
    int recorded = event_kind(row->op, row->hold_timeout_ms);
    if (kind != recorded)
        return kind_difference(kind, recorded);
    bool moves = kind == KIND_PLAIN || kind == KIND_HOLD;
    if (moves && !same_string(event->from, row->from))
        return "/from";
    if (moves && !same_string(event->to, row->to))
        return "/to";
    if (kind != KIND_VOID && event->amount != row->amount_requested)
        return "/amount";
    if (kind == KIND_HOLD && event->hold_timeout_ms != row->hold_timeout_ms) {
        return "/hold/timeout_ms";
    }
    if (moves && (event->flags & COFFER_FLAG_UP_TO) != (row->flags & COFFER_FLAG_UP_TO)) {
        return "/up_to";
    }
    if (moves && !same_expect(event->flags, event->expect_from_version, row->flags,
                              row->expect_from_version, COFFER_FLAG_EXPECT_FROM)) {
        return "/expect/from_version";
    }
    if (moves && !same_expect(event->flags, event->expect_to_version, row->flags,
                              row->expect_to_version, COFFER_FLAG_EXPECT_TO)) {
        return "/expect/to_version";
    }
    if (kind == KIND_POST && !same_string(event->hold_id, row->hold_id))
        return "/post";
    if (kind == KIND_VOID && !same_string(event->hold_id, row->hold_id))
        return "/void";
    if (!same_metadata(event->metadata, event->metadata_len, row->metadata, row->metadata_len)) {
        return "/metadata";
    }
    return NULL;
}

/* Unbounded and capped are part of the field: they differ even when the numbers agree. */
static const char *account_difference(const coffer_event *event, const coffer_account *row)
{
    bool unbounded = event->flags & COFFER_FLAG_MIN_UNBOUNDED;
    bool has_max = event->flags & COFFER_FLAG_HAS_MAX;
    if (!same_string(event->currency, row->currency))
        return "/currency";
    if (unbounded != row->min_unbounded || (!unbounded && event->min_balance != row->min_balance)) {
        return "/min_balance";
    }
    if (has_max != row->has_max || (has_max && event->max_balance != row->max_balance)) {
        return "/max_balance";
    }
    if (!same_metadata(event->metadata, event->metadata_len, row->metadata, row->metadata_len)) {
        return "/metadata";
    }
    return NULL;
}

enum prior { PRIOR_NONE, PRIOR_SAME, PRIOR_DIFFERENT };

/* Looks the event's id up: new, an exact retry (with the original result), or a reuse
 * with different content (with the first differing field). */
static int prior_lookup(ref_state *state, const coffer_event *event, const coffer_result **original,
                        const char **field)
{
    if (event->op == COFFER_OP_CREATE_ACCOUNT) {
        ref_account *account = account_find(state, event->id);
        if (account == NULL)
            return PRIOR_NONE;
        *original = &account->result;
        *field = account_difference(event, &account->row);
    } else {
        ref_transfer *transfer = transfer_find(state, event->id);
        if (transfer == NULL)
            return PRIOR_NONE;
        *original = &transfer->result;
        *field = transfer_difference(event, &transfer->row);
    }
    return *field == NULL ? PRIOR_SAME : PRIOR_DIFFERENT;
}

/* A replay returns the original result; a replay never turns a rejection into a success. */
static void replay(const coffer_result *original, coffer_result *result)
{
    *result = *original;
    result->replayed = true;
    if (result->code == COFFER_CREATED)
        result->code = COFFER_EXISTS;
}

/* ---------------------------------------------------------------------------------------- */
/* Balances: 128-bit checks and the one place that changes an account                       */

static bool fits(wide value)
{
    return value >= INT64_MIN && value <= INT64_MAX;
}

/* True when the account's totals plus these changes, and the derived balance and available,
 * all stay inside the signed 64-bit range. */
static bool change_fits(const coffer_account *account, wide debits_posted, wide credits_posted,
                        wide debits_held, wide credits_held)
{
    wide new_debits_posted = account->debits_posted + debits_posted;
    wide new_credits_posted = account->credits_posted + credits_posted;
    wide new_debits_held = account->debits_held + debits_held;
    wide new_credits_held = account->credits_held + credits_held;
    wide balance = new_credits_posted - new_debits_posted;
    wide available = balance - new_debits_held;
    return fits(new_debits_posted) && fits(new_credits_posted) && fits(new_debits_held) &&
           fits(new_credits_held) && fits(balance) && fits(available);
}

/* What one event did to one account: the total changes and the history entry it adds. */
typedef struct account_change {
    int64_t debits_posted;
    int64_t credits_posted;
    int64_t debits_held;
    int64_t credits_held;
    uint8_t kind;
    int64_t delta;
    const char *transfer_id;
    uint64_t seq;
    uint64_t timestamp;
} account_change;

/* Applies a change that change_fits() accepted: totals, version, one history entry. */
static void change_apply(ref_ledger *ledger, coffer_account *account, const account_change *c)
{
    ref_state *state = &ledger->state;
    if (state->change_count == ledger->changes_max)
        die("history capacity");
    account->debits_posted += c->debits_posted;
    account->credits_posted += c->credits_posted;
    account->debits_held += c->debits_held;
    account->credits_held += c->credits_held;
    account->balance = account->credits_posted - account->debits_posted;
    account->available = account->balance - account->debits_held;
    account->version += 1;

    ref_change *entry = &state->changes[state->change_count++];
    memset(entry, 0, sizeof *entry);
    snprintf(entry->account_id, sizeof entry->account_id, "%s", account->id);
    entry->entry.seq = c->seq;
    entry->entry.timestamp = c->timestamp;
    snprintf(entry->entry.transfer_id, sizeof entry->entry.transfer_id, "%s", c->transfer_id);
    entry->entry.kind = c->kind;
    entry->entry.delta = c->delta;
    entry->entry.balance = account->balance;
    entry->entry.available = account->available;
    entry->entry.version = account->version;
    entry->debits_posted = account->debits_posted;
    entry->credits_posted = account->credits_posted;
    entry->debits_held = account->debits_held;
    entry->credits_held = account->credits_held;
}

static coffer_account_after account_after(const coffer_account *account)
{
    coffer_account_after after = {account->balance, account->available, account->version};
    return after;
}

/* ---------------------------------------------------------------------------------------- */
/* Applying new events                                                                      */

static void create_account(ref_ledger *ledger, const coffer_event *event, uint64_t seq,
                           uint64_t timestamp, coffer_result *result)
{
    ref_state *state = &ledger->state;
    if (state->account_count == REF_ACCOUNTS_MAX)
        die("account capacity");
    ref_account *account = &state->accounts[state->account_count++];
    memset(account, 0, sizeof *account);
    coffer_account *row = &account->row;
    snprintf(row->id, sizeof row->id, "%s", event->id);
    snprintf(row->currency, sizeof row->currency, "%s", event->currency);
    row->min_unbounded = event->flags & COFFER_FLAG_MIN_UNBOUNDED;
    row->has_max = event->flags & COFFER_FLAG_HAS_MAX;
    row->min_balance = row->min_unbounded ? 0 : event->min_balance;
    row->max_balance = row->has_max ? event->max_balance : 0;
    row->version = 1;
    row->created_seq = seq;
    row->created_at = timestamp;
    row->metadata_len = event->metadata_len;
    if (event->metadata_len > 0)
        memcpy(row->metadata, event->metadata, event->metadata_len);

    result->code = COFFER_CREATED;
    result->state = COFFER_STATE_POSTED;
    result->seq = seq;
    result->timestamp = timestamp;
    account->result = *result;
}

/* Step 7: compare-and-set on the versions the client read. */
static bool versions_match(const coffer_event *event, const coffer_account *from,
                           const coffer_account *to, coffer_result *result)
{
    if ((event->flags & COFFER_FLAG_EXPECT_FROM) && event->expect_from_version != from->version) {
        result->code = COFFER_VERSION_MISMATCH;
        result->field = "/expect/from_version";
        result->actual_version = from->version;
        return false;
    }
    if ((event->flags & COFFER_FLAG_EXPECT_TO) && event->expect_to_version != to->version) {
        result->code = COFFER_VERSION_MISMATCH;
        result->field = "/expect/to_version";
        result->actual_version = to->version;
        return false;
    }
    return true;
}

static wide wide_min(wide a, wide b)
{
    return a < b ? a : b;
}

/* Step 8: the amount to move; with up_to, as much as both limits allow (possibly 0). */
static int64_t transfer_amount(const coffer_event *event, const coffer_account *from,
                               const coffer_account *to)
{
    if (!(event->flags & COFFER_FLAG_UP_TO))
        return event->amount;
    wide amount = event->amount;
    if (!from->min_unbounded)
        amount = wide_min(amount, (wide)from->available - from->min_balance);
    if (to->has_max) {
        amount = wide_min(amount, (wide)to->max_balance - ((wide)to->balance + to->credits_held));
    }
    /* The limits are kept by every change, so a room below zero means the model is broken. */
    if (amount < 0)
        die("negative up_to room");
    return (int64_t)amount;
}

/* Steps 9 and 10: overflow, then the floor of `from`, then the cap of `to`. */
static bool amount_allowed(const coffer_account *from, const coffer_account *to, int64_t amount,
                           bool hold, coffer_result *result)
{
    bool fit = hold ? change_fits(from, 0, 0, amount, 0) && change_fits(to, 0, 0, 0, amount)
                    : change_fits(from, amount, 0, 0, 0) && change_fits(to, 0, amount, 0, 0);
    if (!fit) {
        result->code = COFFER_OVERFLOW;
        return false;
    }
    if (!from->min_unbounded && (wide)from->available - amount < from->min_balance) {
        result->code = COFFER_INSUFFICIENT_BALANCE;
        result->available = from->available;
        return false;
    }
    if (to->has_max && (wide)to->balance + to->credits_held + amount > to->max_balance) {
        result->code = COFFER_EXCEEDS_MAX_BALANCE;
        return false;
    }
    return true;
}

/* Steps 4 to 11 of a transfer or hold. Fills the result; the caller records it. */
static void apply_transfer(ref_ledger *ledger, const coffer_event *event, uint64_t seq,
                           uint64_t timestamp, coffer_result *result)
{
    if (strcmp(event->from, event->to) == 0) {
        result->code = COFFER_SAME_ACCOUNT;
        return;
    }
    ref_account *from = account_find(&ledger->state, event->from);
    ref_account *to = account_find(&ledger->state, event->to);
    if (from == NULL || to == NULL) {
        result->code = COFFER_ACCOUNT_NOT_FOUND;
        result->field = from == NULL ? "/from" : "/to";
        return;
    }
    if (strcmp(from->row.currency, to->row.currency) != 0) {
        result->code = COFFER_CURRENCY_MISMATCH;
        return;
    }
    if (!versions_match(event, &from->row, &to->row, result))
        return;
    int64_t amount = transfer_amount(event, &from->row, &to->row);
    bool hold = event->hold_timeout_ms > 0;
    if (!amount_allowed(&from->row, &to->row, amount, hold, result))
        return;

    if (amount > 0) {
        uint8_t kind = hold ? COFFER_HISTORY_HELD : COFFER_HISTORY_POSTED;
        account_change debit = {.kind = kind,
                                .delta = -amount,
                                .transfer_id = event->id,
                                .seq = seq,
                                .timestamp = timestamp};
        account_change credit = debit;
        credit.delta = amount;
        if (hold) {
            debit.debits_held = amount;
            credit.credits_held = amount;
        } else {
            debit.debits_posted = amount;
            credit.credits_posted = amount;
        }
        change_apply(ledger, &from->row, &debit);
        change_apply(ledger, &to->row, &credit);
    }
    result->code = COFFER_CREATED;
    result->state = hold ? COFFER_STATE_PENDING : COFFER_STATE_POSTED;
    result->amount = amount;
    if (hold)
        result->expires_at = timestamp + event->hold_timeout_ms * NS_PER_MS;
    result->from = account_after(&from->row);
    result->to = account_after(&to->row);
}

/* Post/void steps 2 to 4: the hold must exist, be pending and not be past its expiry. */
static ref_transfer *pending_hold(ref_ledger *ledger, const coffer_event *event, uint64_t timestamp,
                                  coffer_result *result)
{
    ref_transfer *hold = transfer_find(&ledger->state, event->hold_id);
    if (hold == NULL || hold->row.op != COFFER_OP_TRANSFER || hold->row.hold_timeout_ms == 0 ||
        hold->row.code != COFFER_CREATED) {
        result->code = COFFER_HOLD_NOT_FOUND;
        return NULL;
    }
    switch (hold->row.state) {
    case COFFER_STATE_CAPTURED:
        result->code = COFFER_HOLD_ALREADY_POSTED;
        return NULL;
    case COFFER_STATE_VOIDED:
        result->code = COFFER_HOLD_ALREADY_VOIDED;
        return NULL;
    case COFFER_STATE_EXPIRED:
        result->code = COFFER_HOLD_EXPIRED;
        return NULL;
    case COFFER_STATE_PENDING:
        break;
    default:
        die("hold in an impossible state");
    }
    /* The race between a post and the expiry has one answer, whether or not the sweep ran. */
    if (timestamp >= hold->row.expires_at) {
        result->code = COFFER_HOLD_EXPIRED;
        return NULL;
    }
    return hold;
}

/* Ends a pending hold: held amounts drop by all of it, posted amounts grow by `captured`.
 * Used by post (kind captured), void (released) and the expiry sweep (expired). */
static bool resolve_hold(ref_ledger *ledger, ref_transfer *hold, int64_t captured, uint8_t kind,
                         const char *event_id, uint64_t seq, uint64_t timestamp)
{
    coffer_account *from = &account_find(&ledger->state, hold->row.from)->row;
    coffer_account *to = &account_find(&ledger->state, hold->row.to)->row;
    int64_t held = hold->row.amount;
    if (!change_fits(from, captured, 0, -(wide)held, 0) ||
        !change_fits(to, 0, captured, 0, -(wide)held)) {
        return false;
    }
    /* Captured deltas are balance changes; released and expired deltas are held-amount
     * changes, negated on the debit side (semantics.md "History and versions"). */
    bool capture = kind == COFFER_HISTORY_CAPTURED;
    account_change debit = {.debits_posted = captured,
                            .debits_held = -held,
                            .kind = kind,
                            .delta = capture ? -captured : held,
                            .transfer_id = event_id,
                            .seq = seq,
                            .timestamp = timestamp};
    account_change credit = {.credits_posted = captured,
                             .credits_held = -held,
                             .kind = kind,
                             .delta = capture ? captured : -held,
                             .transfer_id = event_id,
                             .seq = seq,
                             .timestamp = timestamp};
    change_apply(ledger, from, &debit);
    change_apply(ledger, to, &credit);
    return true;
}

/* Post and void steps 2 to 7. Fills the result; the caller records it. */
static void apply_post_or_void(ref_ledger *ledger, const coffer_event *event, uint64_t seq,
                               uint64_t timestamp, coffer_result *result)
{
    ref_transfer *hold = pending_hold(ledger, event, timestamp, result);
    if (hold == NULL)
        return;
    bool post = event->op == COFFER_OP_POST;
    int64_t captured = 0;
    if (post) {
        captured = event->amount == 0 ? hold->row.amount : event->amount;
        if (captured > hold->row.amount) {
            result->code = COFFER_HOLD_AMOUNT_EXCEEDED;
            return;
        }
    }
    uint8_t kind = post ? COFFER_HISTORY_CAPTURED : COFFER_HISTORY_RELEASED;
    if (!resolve_hold(ledger, hold, captured, kind, event->id, seq, timestamp)) {
        result->code = COFFER_OVERFLOW;
        return;
    }
    hold->row.state = post ? COFFER_STATE_CAPTURED : COFFER_STATE_VOIDED;
    hold->row.captured = captured;
    result->code = COFFER_CREATED;
    result->state = COFFER_STATE_POSTED;
    result->amount = post ? captured : hold->row.amount;
    result->from = account_after(&account_find(&ledger->state, hold->row.from)->row);
    result->to = account_after(&account_find(&ledger->state, hold->row.to)->row);
}

/* Records the outcome of a transfer, post or void under its id, forever. */
static void record_transfer(ref_ledger *ledger, const coffer_event *event,
                            const coffer_result *result)
{
    ref_state *state = &ledger->state;
    if (state->transfer_count == ledger->transfers_max)
        die("transfer capacity");
    ref_transfer *transfer = &state->transfers[state->transfer_count++];
    memset(transfer, 0, sizeof *transfer);
    coffer_transfer *row = &transfer->row;
    snprintf(row->id, sizeof row->id, "%s", event->id);
    row->op = event->op;
    row->state = result->state;
    row->flags = event->flags;
    row->code = result->code;
    snprintf(row->from, sizeof row->from, "%s", event->from != NULL ? event->from : "");
    snprintf(row->to, sizeof row->to, "%s", event->to != NULL ? event->to : "");
    snprintf(row->hold_id, sizeof row->hold_id, "%s", event->hold_id != NULL ? event->hold_id : "");
    row->amount = result->amount;
    row->amount_requested = event->amount;
    row->seq = result->seq;
    row->timestamp = result->timestamp;
    row->hold_timeout_ms = event->op == COFFER_OP_TRANSFER ? event->hold_timeout_ms : 0;
    row->expires_at = result->expires_at;
    row->expect_from_version = event->expect_from_version;
    row->expect_to_version = event->expect_to_version;
    row->metadata_len = event->metadata_len;
    if (event->metadata_len > 0)
        memcpy(row->metadata, event->metadata, event->metadata_len);
    transfer->result = *result;
}

/* Applies an event whose id is new and records its outcome (rejections included). */
static void apply_new(ref_ledger *ledger, const coffer_event *event, uint64_t seq,
                      uint64_t timestamp, coffer_result *result)
{
    if (event->op == COFFER_OP_CREATE_ACCOUNT) {
        create_account(ledger, event, seq, timestamp, result);
        return;
    }
    if (event->op == COFFER_OP_TRANSFER)
        apply_transfer(ledger, event, seq, timestamp, result);
    else
        apply_post_or_void(ledger, event, seq, timestamp, result);
    result->seq = seq;
    result->timestamp = timestamp;
    if (result->code != COFFER_CREATED)
        result->state = COFFER_STATE_REJECTED;
    record_transfer(ledger, event, result);
}

/* ---------------------------------------------------------------------------------------- */
/* Expiry sweep                                                                              */

/* The pending hold that expires soonest at or before ts0 (ties: the older hold), or NULL. */
static ref_transfer *next_expiring(ref_state *state, uint64_t ts0)
{
    ref_transfer *soonest = NULL;
    for (size_t i = 0; i < state->transfer_count; i++) {
        ref_transfer *t = &state->transfers[i];
        if (t->row.state != COFFER_STATE_PENDING || t->row.expires_at > ts0)
            continue;
        if (soonest == NULL || t->row.expires_at < soonest->row.expires_at ||
            (t->row.expires_at == soonest->row.expires_at && t->row.seq < soonest->row.seq)) {
            soonest = t;
        }
    }
    return soonest;
}

/* Expires every due hold, one expire event each, taking slots from *seq and *timestamp. */
static size_t sweep(ref_ledger *ledger, uint64_t ts0, uint64_t *seq, uint64_t *timestamp)
{
    size_t expired = 0;
    ref_transfer *hold;
    while ((hold = next_expiring(&ledger->state, ts0)) != NULL) {
        /* Releasing a hold only lowers held totals, so it always fits. */
        if (!resolve_hold(ledger, hold, 0, COFFER_HISTORY_EXPIRED, hold->row.id, *seq,
                          *timestamp)) {
            die("expiry overflow");
        }
        hold->row.state = COFFER_STATE_EXPIRED;
        *seq += 1;
        *timestamp += 1;
        expired++;
    }
    return expired;
}

/* ---------------------------------------------------------------------------------------- */
/* Submissions                                                                               */

/* One event of a non-atomic batch: validation, idempotency, then apply. */
static void submit_one(ref_ledger *ledger, const coffer_event *event, uint64_t seq,
                       uint64_t timestamp, coffer_result *result)
{
    const char *field = invalid_field(event);
    if (field != NULL) {
        result->code = COFFER_INVALID_FIELD;
        result->field = field;
        return;
    }
    const coffer_result *original = NULL;
    int prior = prior_lookup(&ledger->state, event, &original, &field);
    if (prior == PRIOR_SAME) {
        replay(original, result);
    } else if (prior == PRIOR_DIFFERENT) {
        result->code = COFFER_ID_REUSED;
        result->field = field;
    } else {
        apply_new(ledger, event, seq, timestamp, result);
    }
}

/* An atomic batch refused before applying anything: `code` on one event, batch_failed on the
 * others, nothing recorded. */
static void fail_unrecorded(coffer_result *results, size_t count, size_t failing, int code,
                            const char *field)
{
    for (size_t i = 0; i < count; i++)
        results[i].code = COFFER_BATCH_FAILED;
    results[failing].code = code;
    results[failing].field = field;
}

static bool same_namespace(const coffer_event *a, const coffer_event *b)
{
    return (a->op == COFFER_OP_CREATE_ACCOUNT) == (b->op == COFFER_OP_CREATE_ACCOUNT);
}

/* Validation of a whole atomic batch, including ids repeated within it. */
static bool batch_invalid(const coffer_event *events, size_t count, size_t *failing,
                          const char **field)
{
    for (size_t i = 0; i < count; i++) {
        *failing = i;
        *field = invalid_field(&events[i]);
        if (*field != NULL)
            return true;
        for (size_t j = 0; j < i; j++) {
            if (same_namespace(&events[i], &events[j]) && strcmp(events[i].id, events[j].id) == 0) {
                *field = "/id";
                return true;
            }
        }
    }
    return false;
}

enum batch_verdict { BATCH_NEW, BATCH_REPLAY, BATCH_CONFLICT };

/* All new, an exact replay, or a conflict on the first event that is "such" in the words of
 * semantics.md: an id that exists with different content, or any existing id when others are
 * new. Its field is the first differing one, or none for an identical id in a mix. */
static int batch_idempotency(ref_state *state, const coffer_event *events, size_t count,
                             size_t *failing, const char **field)
{
    int prior[REF_ATOMIC_EVENTS_MAX];
    const char *difference[REF_ATOMIC_EVENTS_MAX];
    size_t new_count = 0, same_count = 0;
    for (size_t i = 0; i < count; i++) {
        const coffer_result *original = NULL;
        difference[i] = NULL;
        prior[i] = prior_lookup(state, &events[i], &original, &difference[i]);
        new_count += prior[i] == PRIOR_NONE;
        same_count += prior[i] == PRIOR_SAME;
    }
    if (same_count == count)
        return BATCH_REPLAY;
    if (new_count == count)
        return BATCH_NEW;
    for (size_t i = 0; i < count; i++) {
        if (prior[i] == PRIOR_DIFFERENT || (prior[i] == PRIOR_SAME && new_count > 0)) {
            *failing = i;
            *field = prior[i] == PRIOR_DIFFERENT ? difference[i] : NULL; /* a mix */
            return BATCH_CONFLICT;
        }
    }
    die("batch neither new, replay nor conflict");
    return BATCH_CONFLICT;
}

/* After a failed atomic batch was rolled back: the failing event keeps its code, every other
 * transfer is recorded as batch_failed, and account creations record nothing. */
static void record_failed_batch(ref_ledger *ledger, const coffer_event *events, size_t count,
                                size_t failing, uint64_t seq0, uint64_t ts0, coffer_result *results)
{
    for (size_t i = 0; i < count; i++) {
        if (i == failing) {
            record_transfer(ledger, &events[i], &results[i]);
            continue;
        }
        memset(&results[i], 0, sizeof results[i]);
        results[i].code = COFFER_BATCH_FAILED;
        if (events[i].op == COFFER_OP_CREATE_ACCOUNT)
            continue;
        results[i].state = COFFER_STATE_REJECTED;
        results[i].seq = seq0 + i;
        results[i].timestamp = ts0 + i;
        record_transfer(ledger, &events[i], &results[i]);
    }
}

static void submit_atomic(ref_ledger *ledger, const coffer_event *events, size_t count,
                          uint64_t seq0, uint64_t ts0, coffer_result *results)
{
    if (count > REF_ATOMIC_EVENTS_MAX)
        die("atomic batch too long for the reference");
    size_t failing = 0;
    const char *field = NULL;
    if (batch_invalid(events, count, &failing, &field)) {
        fail_unrecorded(results, count, failing, COFFER_INVALID_FIELD, field);
        return;
    }
    int verdict = batch_idempotency(&ledger->state, events, count, &failing, &field);
    if (verdict == BATCH_CONFLICT) {
        fail_unrecorded(results, count, failing, COFFER_ID_REUSED, field);
        return;
    }
    for (size_t i = 0; verdict == BATCH_REPLAY && i < count; i++) {
        const coffer_result *original = NULL;
        prior_lookup(&ledger->state, &events[i], &original, &field);
        replay(original, &results[i]);
    }
    if (verdict == BATCH_REPLAY)
        return;

    state_copy(&ledger->saved, &ledger->state);
    for (size_t i = 0; i < count; i++) {
        apply_new(ledger, &events[i], seq0 + i, ts0 + i, &results[i]);
        if (results[i].code == COFFER_CREATED)
            continue;
        state_copy(&ledger->state, &ledger->saved); /* every effect undone */
        record_failed_batch(ledger, events, count, i, seq0, ts0, results);
        return;
    }
}

void ref_submit(ref_ledger *ledger, const coffer_event *events, size_t count, bool atomic,
                uint64_t clock_ns, coffer_result *results)
{
    if (count == 0)
        die("empty batch");
    uint64_t ts0 = clock_ns > ledger->last_timestamp ? clock_ns : ledger->last_timestamp + 1;
    uint64_t seq = ledger->last_seq + 1;
    uint64_t timestamp = ts0;
    ledger->last_sweep_count = sweep(ledger, ts0, &seq, &timestamp);

    memset(results, 0, count * sizeof *results);
    if (atomic) {
        submit_atomic(ledger, events, count, seq, timestamp, results);
    } else {
        for (size_t i = 0; i < count; i++) {
            submit_one(ledger, &events[i], seq + i, timestamp + i, &results[i]);
        }
    }
    /* Every submitted event consumes its slot, recorded or not. */
    ledger->last_seq = seq + count - 1;
    ledger->last_timestamp = timestamp + count - 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Reads                                                                                     */

static bool change_visible(const ref_change *change, int at, uint64_t at_value)
{
    uint64_t when = at == COFFER_AT_SEQ ? change->entry.seq : change->entry.timestamp;
    return when <= at_value;
}

int ref_account_get(ref_ledger *ledger, const char *id, int at, uint64_t at_value,
                    coffer_account *out)
{
    ref_account *account = account_find(&ledger->state, id);
    if (account == NULL)
        return COFFER_ACCOUNT_NOT_FOUND;
    *out = account->row;
    if (at == COFFER_AT_NOW)
        return COFFER_OK;
    uint64_t created = at == COFFER_AT_SEQ ? account->row.created_seq : account->row.created_at;
    if (created > at_value)
        return COFFER_ACCOUNT_NOT_FOUND;

    /* Before its first history entry an account is as created: all zero, version 1. */
    out->debits_posted = out->credits_posted = out->debits_held = out->credits_held = 0;
    out->version = 1;
    for (size_t i = 0; i < ledger->state.change_count; i++) {
        const ref_change *change = &ledger->state.changes[i];
        if (strcmp(change->account_id, id) != 0 || !change_visible(change, at, at_value))
            continue;
        out->debits_posted = change->debits_posted;
        out->credits_posted = change->credits_posted;
        out->debits_held = change->debits_held;
        out->credits_held = change->credits_held;
        out->version = change->entry.version;
    }
    out->balance = out->credits_posted - out->debits_posted;
    out->available = out->balance - out->debits_held;
    /* coffer.h: a past read is exact for balance, available, debits_held and version only;
     * the posted totals and credits_held are not kept per history entry and read as 0. */
    out->debits_posted = out->credits_posted = out->credits_held = 0;
    return COFFER_OK;
}

int ref_transfer_get(ref_ledger *ledger, const char *id, coffer_transfer *out)
{
    ref_transfer *transfer = transfer_find(&ledger->state, id);
    if (transfer == NULL)
        return COFFER_TRANSFER_NOT_FOUND;
    *out = transfer->row;
    return COFFER_OK;
}

size_t ref_transfer_count(const ref_ledger *ledger)
{
    return ledger->state.transfer_count;
}

void ref_transfer_at(const ref_ledger *ledger, size_t index, coffer_transfer *out)
{
    if (index >= ledger->state.transfer_count)
        die("transfer index out of range");
    *out = ledger->state.transfers[index].row;
}

int ref_history(ref_ledger *ledger, const char *account_id, uint64_t after_seq, size_t limit,
                coffer_history_entry *entries, size_t *count_out)
{
    *count_out = 0;
    if (account_find(&ledger->state, account_id) == NULL)
        return COFFER_ACCOUNT_NOT_FOUND;
    for (size_t i = 0; i < ledger->state.change_count && *count_out < limit; i++) {
        const ref_change *change = &ledger->state.changes[i];
        if (strcmp(change->account_id, account_id) != 0 || change->entry.seq <= after_seq)
            continue;
        entries[(*count_out)++] = change->entry;
    }
    return COFFER_OK;
}

static bool hold_touches(const coffer_transfer *hold, const char *account_id)
{
    return account_id == NULL || strcmp(hold->from, account_id) == 0 ||
           strcmp(hold->to, account_id) == 0;
}

static bool expires_before(const coffer_transfer *a, const coffer_transfer *b)
{
    return a->expires_at < b->expires_at || (a->expires_at == b->expires_at && a->seq < b->seq);
}

/* Pending holds, soonest expiry first (ties: the older hold first), by repeated selection. */
int ref_holds_list(ref_ledger *ledger, const char *account_id, size_t limit, coffer_transfer *out,
                   size_t *count_out)
{
    ref_state *state = &ledger->state;
    const coffer_transfer *previous = NULL;
    *count_out = 0;
    /* As for history: an account that does not exist is an error, not an empty list. */
    if (account_id != NULL && account_find(state, account_id) == NULL) {
        return COFFER_ACCOUNT_NOT_FOUND;
    }
    while (*count_out < limit) {
        const coffer_transfer *next = NULL;
        for (size_t i = 0; i < state->transfer_count; i++) {
            const coffer_transfer *hold = &state->transfers[i].row;
            if (hold->state != COFFER_STATE_PENDING || !hold_touches(hold, account_id))
                continue;
            if (previous != NULL && !expires_before(previous, hold))
                continue;
            if (next == NULL || expires_before(hold, next))
                next = hold;
        }
        if (next == NULL)
            break;
        out[(*count_out)++] = *next;
        previous = next;
    }
    return COFFER_OK;
}
