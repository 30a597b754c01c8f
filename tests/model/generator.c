/*
 * generator.c — the model test's random event stream. Amounts are small and limits tight so
 * that floors, caps, overdrafts, expiries and version conflicts happen all the time; a few
 * percent of events are retries, malformed or near INT64_MAX. Same seed, same stream.
 */
#include "model/generator.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000ULL
#define GEN_ACCOUNTS_MAX 32
#define GEN_HOLD_TIMEOUT_MS_MAX 80 /* most holds expire within a few dozen batches */
#define ARENA_CHUNK_BYTES (64 * 1024)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    char data[ARENA_CHUNK_BYTES];
} arena_chunk;

/* Which accounts the stream creates: most up front, a few later, some never. */
enum account_stage { STAGE_SETUP, STAGE_LATE, STAGE_GHOST, STAGE_CREATED };

typedef struct gen_account {
    const char *id;
    const char *currency;
    uint8_t flags; /* COFFER_FLAG_MIN_UNBOUNDED, COFFER_FLAG_HAS_MAX */
    int64_t min_balance;
    int64_t max_balance;
    const char *metadata;
    int stage;
    bool id_used_by_transfer; /* account and transfer ids are separate namespaces */
} gen_account;

typedef struct gen_hold {
    const char *id;
    int64_t amount;
} gen_hold;

typedef struct gen_batch {
    size_t first; /* index into past */
    size_t count;
    bool atomic;
} gen_batch;

struct gen {
    uint64_t random_state;
    ref_ledger *reference;
    arena_chunk *arena;
    size_t capacity; /* of past, batches, holds and transfer_ids */

    gen_account accounts[GEN_ACCOUNTS_MAX];
    size_t account_count;
    const char *currencies[3];
    size_t currency_count;

    coffer_event *past; /* every event handed out, for retries */
    size_t past_count;
    gen_batch *batches;
    size_t batch_count;
    gen_hold *holds; /* every hold handed out, newest last */
    size_t hold_count;
    const char **transfer_ids;
    size_t transfer_id_count;

    uint64_t next_number;    /* makes fresh ids unique */
    const char *aimed_hold;  /* set by gen_next_clock: the next batch posts or voids it */
    uint64_t tie_timeout_ms; /* set by gen_next_clock: the next batch opens with a hold of this
                                timeout, which then expires in the same ns as another */
};

static void die(const char *message)
{
    fprintf(stderr, "generator: %s\n", message);
    abort();
}

/* ---------------------------------------------------------------------------------------- */
/* Randomness and strings                                                                    */

/* splitmix64: tiny, fast, and the same everywhere, so a seed reproduces on any machine. */
uint64_t gen_random(gen *g)
{
    uint64_t z = (g->random_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t below(gen *g, uint64_t bound)
{
    return gen_random(g) % bound;
}
static bool chance(gen *g, unsigned percent)
{
    return below(g, 100) < percent;
}
static int64_t between(gen *g, int64_t low, int64_t high)
{
    return low + (int64_t)below(g, (uint64_t)(high - low) + 1);
}

/* Strings live in an arena freed with the generator: events and retries point into it. */
static char *arena_allocate(gen *g, size_t size)
{
    if (size > ARENA_CHUNK_BYTES)
        die("string too large");
    if (g->arena == NULL || ARENA_CHUNK_BYTES - g->arena->used < size) {
        arena_chunk *chunk = calloc(1, sizeof *chunk);
        if (chunk == NULL)
            die("out of memory");
        chunk->next = g->arena;
        g->arena = chunk;
    }
    char *memory = g->arena->data + g->arena->used;
    g->arena->used += size;
    return memory;
}

__attribute__((format(printf, 2, 3))) static const char *arena_printf(gen *g, const char *format,
                                                                      ...)
{
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(NULL, 0, format, arguments);
    va_end(arguments);
    char *text = arena_allocate(g, (size_t)length + 1);
    va_start(arguments, format);
    vsnprintf(text, (size_t)length + 1, format, arguments);
    va_end(arguments);
    return text;
}

/* A string of `length` copies of `fill` after `prefix` (for ids and metadata at the limits). */
static const char *padded(gen *g, const char *prefix, char fill, size_t length)
{
    char *text = arena_allocate(g, length + 1);
    memset(text, fill, length);
    memcpy(text, prefix, strlen(prefix) < length ? strlen(prefix) : length);
    text[length] = '\0';
    return text;
}

static void set_metadata(coffer_event *event, const char *metadata)
{
    event->metadata = metadata;
    event->metadata_len = metadata != NULL ? (uint32_t)strlen(metadata) : 0;
}

/* Small JSON metadata, sometimes exactly at the 1024-byte limit. */
static const char *random_metadata(gen *g)
{
    if (chance(g, 5)) {
        char *text = (char *)padded(g, "{\"pad\":\"", 'x', COFFER_METADATA_MAX);
        memcpy(text + COFFER_METADATA_MAX - 2, "\"}", 2);
        return text;
    }
    return arena_printf(g, "{\"note\":%llu}", (unsigned long long)below(g, 1000));
}

/* A fresh, valid, never used transfer id, remembered for the state checks. Now and then it is
 * an account's id: accounts and transfers have separate ids. */
static const char *fresh_id(gen *g, const char *prefix)
{
    uint64_t number = g->next_number++;
    gen_account *account = &g->accounts[below(g, g->account_count)];
    const char *id;
    if (chance(g, 1) && !account->id_used_by_transfer) {
        account->id_used_by_transfer = true;
        id = account->id;
    } else if (chance(g, 2)) {
        /* Exactly the 128-byte limit, unique through its tail. */
        const char *tail = arena_printf(g, "%s%llu", prefix, (unsigned long long)number);
        char *text = (char *)padded(g, "long.", 'x', COFFER_TRANSFER_ID_MAX);
        memcpy(text + COFFER_TRANSFER_ID_MAX - strlen(tail), tail, strlen(tail));
        id = text;
    } else {
        static const char *const styles[] = {"%s%llu", "%s:%llu", "%s-%llu@app", "%s/%llu.x"};
        id = arena_printf(g, styles[below(g, 4)], prefix, (unsigned long long)number);
    }
    if (g->transfer_id_count == g->capacity)
        die("transfer id capacity");
    g->transfer_ids[g->transfer_id_count++] = id;
    return id;
}

/* ---------------------------------------------------------------------------------------- */
/* Accounts                                                                                  */

static void account_limits(gen *g, gen_account *account)
{
    unsigned kind = (unsigned)below(g, 100);
    if (kind < 40)
        return; /* floor 0, no cap */
    if (kind < 60) {
        account->min_balance = -between(g, 1, 60); /* overdraft line */
    } else if (kind < 85) {
        account->flags = COFFER_FLAG_HAS_MAX;
        account->max_balance = between(g, 5, 150);
    } else if (kind < 95) {
        account->min_balance = -between(g, 1, 30);
        account->flags = COFFER_FLAG_HAS_MAX;
        account->max_balance = between(g, 0, 100);
    } else {
        account->flags = COFFER_FLAG_MIN_UNBOUNDED | COFFER_FLAG_HAS_MAX; /* capped issuer */
        account->max_balance = between(g, 50, 500);
    }
}

static const char *account_name(gen *g, size_t index)
{
    if (index == 3)
        return padded(g, "acct:exactly.64.bytes.", 'z', COFFER_ACCOUNT_ID_MAX);
    static const char *const styles[] = {"user:%zu", "seat:C1/A%zu", "pool.round-%zu",
                                         "shop-%zu@mall", "u%zu"};
    return arena_printf(g, styles[below(g, 5)], index);
}

static gen_account *add_account(gen *g, const char *id, const char *currency, int stage)
{
    if (g->account_count == GEN_ACCOUNTS_MAX)
        die("account pool");
    gen_account *account = &g->accounts[g->account_count++];
    memset(account, 0, sizeof *account);
    account->id = id;
    account->currency = currency;
    account->stage = stage;
    return account;
}

/* One funding account per currency, 6-20 accounts in all, two created late, two never. */
static void accounts_plan(gen *g)
{
    static const char *const currencies[] = {"KRW", "POINT", "SEAT_A1"};
    g->currency_count = 2 + below(g, 2);
    for (size_t i = 0; i < g->currency_count; i++) {
        g->currencies[i] = currencies[i];
        gen_account *bank =
            add_account(g, arena_printf(g, "bank@%s", currencies[i]), currencies[i], STAGE_SETUP);
        bank->flags = COFFER_FLAG_MIN_UNBOUNDED;
    }
    size_t total = 6 + below(g, 15);
    for (size_t i = g->account_count; i < total + 4; i++) {
        int stage = i >= total + 2 ? STAGE_GHOST : i >= total ? STAGE_LATE : STAGE_SETUP;
        gen_account *account =
            add_account(g, account_name(g, i), g->currencies[below(g, g->currency_count)], stage);
        account_limits(g, account);
        if (chance(g, 30))
            account->metadata = random_metadata(g);
    }
}

static void account_event(const gen_account *account, coffer_event *event)
{
    memset(event, 0, sizeof *event);
    event->op = COFFER_OP_CREATE_ACCOUNT;
    event->id = account->id;
    event->currency = account->currency;
    event->flags = account->flags;
    event->min_balance = account->min_balance;
    event->max_balance = account->max_balance;
    set_metadata(event, account->metadata);
}

static gen_account *random_account(gen *g)
{
    return &g->accounts[below(g, g->account_count)];
}

/* An account of `currency` that the stream uses (not a ghost), or NULL. */
static gen_account *account_in(gen *g, const char *currency)
{
    for (int attempt = 0; attempt < 64; attempt++) {
        gen_account *account = random_account(g);
        if (account->stage != STAGE_GHOST && strcmp(account->currency, currency) == 0) {
            return account;
        }
    }
    return NULL;
}

static gen_account *bank_of(gen *g, const char *currency)
{
    for (size_t i = 0; i < g->currency_count; i++) {
        if (strcmp(g->currencies[i], currency) == 0)
            return &g->accounts[i];
    }
    die("no bank");
    return NULL;
}

/* From and to: mostly two accounts of one currency (often the bank paying out), sometimes
 * the same account, a ghost, or two currencies. */
static void pick_pair(gen *g, const char **from, const char **to)
{
    unsigned kind = (unsigned)below(g, 100);
    if (kind < 4) {
        *from = *to = random_account(g)->id;
        return;
    }
    if (kind < 14) {
        *from = random_account(g)->id;
        *to = random_account(g)->id;
        return;
    }
    const char *currency = g->currencies[below(g, g->currency_count)];
    gen_account *payer = chance(g, 45) ? bank_of(g, currency) : account_in(g, currency);
    gen_account *payee = account_in(g, currency);
    for (int attempt = 0; attempt < 8 && payee == payer; attempt++)
        payee = account_in(g, currency);
    *from = payer != NULL ? payer->id : random_account(g)->id;
    *to = payee != NULL ? payee->id : random_account(g)->id;
}

/* The version the reference holds now; stale or future a third of the time. */
static uint64_t expected_version(gen *g, const char *account_id)
{
    coffer_account account;
    uint64_t version = 1;
    if (ref_account_get(g->reference, account_id, COFFER_AT_NOW, 0, &account) == COFFER_OK) {
        version = account.version;
    }
    if (chance(g, 67))
        return version;
    return chance(g, 70) && version > 1 ? version - 1 - below(g, version - 1) : version + 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Fresh events                                                                              */

static int64_t random_amount(gen *g)
{
    unsigned kind = (unsigned)below(g, 100);
    if (kind < 80)
        return between(g, 1, 20);
    if (kind < 96)
        return between(g, 1, 200);
    /* Near INT64_MAX: the first from a bank may fit, the next must overflow. */
    if (kind < 98)
        return INT64_MAX - (int64_t)below(g, 1000);
    return INT64_MAX / 2 + (int64_t)below(g, 1000);
}

/* A transfer, or a hold when hold_timeout_ms > 0, with a fresh id. */
static void make_transfer_with(gen *g, coffer_event *event, uint64_t hold_timeout_ms)
{
    memset(event, 0, sizeof *event);
    event->op = COFFER_OP_TRANSFER;
    pick_pair(g, &event->from, &event->to);
    event->amount = random_amount(g);
    event->hold_timeout_ms = hold_timeout_ms;
    /* Up-to only on plain transfers: the docs do not say what an up-to hold is (one of 0?)
     * and the engine refuses it with invalid_field /up_to. */
    if (hold_timeout_ms == 0 && chance(g, 14)) {
        event->flags |= COFFER_FLAG_UP_TO;
        event->amount = chance(g, 90) ? between(g, 1, 400) : INT64_MAX;
    }
    if (chance(g, 12)) {
        event->flags |= COFFER_FLAG_EXPECT_FROM;
        event->expect_from_version = expected_version(g, event->from);
    }
    if (chance(g, 8)) {
        event->flags |= COFFER_FLAG_EXPECT_TO;
        event->expect_to_version = expected_version(g, event->to);
    }
    if (chance(g, 10))
        set_metadata(event, random_metadata(g));
    event->id = fresh_id(g, hold_timeout_ms > 0 ? "hold" : "t");
    if (hold_timeout_ms > 0) {
        if (g->hold_count == g->capacity)
            die("hold capacity");
        g->holds[g->hold_count++] = (gen_hold){event->id, event->amount};
    }
}

static void make_transfer(gen *g, coffer_event *event)
{
    uint64_t hold_timeout_ms = 0;
    if (chance(g, 35)) {
        hold_timeout_ms = chance(g, 3) ? COFFER_HOLD_TIMEOUT_MS_MAX
                                       : (uint64_t)between(g, 1, GEN_HOLD_TIMEOUT_MS_MAX);
    }
    make_transfer_with(g, event, hold_timeout_ms);
}

/* A hold to post or void: usually a recent one; sometimes an id that is not a hold. */
static gen_hold pick_hold(gen *g)
{
    unsigned kind = (unsigned)below(g, 100);
    if (g->hold_count == 0 || kind < 6) {
        return (gen_hold){arena_printf(g, "nohold:%llu", (unsigned long long)below(g, 50)), 1};
    }
    if (kind < 11 && g->transfer_id_count > 0) {
        return (gen_hold){g->transfer_ids[below(g, g->transfer_id_count)], 5};
    }
    size_t recent = g->hold_count < 12 ? g->hold_count : 12;
    if (kind < 80)
        return g->holds[g->hold_count - 1 - below(g, recent)];
    return g->holds[below(g, g->hold_count)];
}

/* Post amounts: the whole hold (0), a part, exactly all, more than the hold, or anything. */
static int64_t post_amount(gen *g, int64_t held)
{
    unsigned kind = (unsigned)below(g, 100);
    int64_t small_held = held < 1000 ? held : 1000;
    if (kind < 35)
        return 0;
    if (kind < 70)
        return between(g, 1, small_held);
    if (kind < 85)
        return held;
    if (kind < 95)
        return held < INT64_MAX - 5 ? held + between(g, 1, 5) : held;
    return between(g, 1, 300);
}

static void make_resolution(gen *g, coffer_event *event, uint8_t op, gen_hold hold)
{
    memset(event, 0, sizeof *event);
    event->op = op;
    event->hold_id = hold.id;
    if (op == COFFER_OP_POST)
        event->amount = post_amount(g, hold.amount);
    event->id = fresh_id(g, op == COFFER_OP_POST ? "post" : "void");
}

static void mutate_account(gen *g, coffer_event *event);

/* A late account's creation, or an account created again: identical (exists) or not. */
static void make_account_event(gen *g, coffer_event *event)
{
    for (size_t i = 0; i < g->account_count; i++) {
        if (g->accounts[i].stage == STAGE_LATE && chance(g, 50)) {
            g->accounts[i].stage = STAGE_CREATED;
            account_event(&g->accounts[i], event);
            return;
        }
    }
    gen_account *account = random_account(g);
    if (account->stage == STAGE_GHOST)
        account = &g->accounts[0]; /* ghosts are never created */
    account_event(account, event);
    if (chance(g, 30))
        mutate_account(g, event);
}

/* ---------------------------------------------------------------------------------------- */
/* Malformed events: each has exactly one invalid field, so the expected pointer is certain. */

static void make_invalid_account(gen *g, coffer_event *event, unsigned kind)
{
    account_event(&g->accounts[below(g, g->account_count)], event);
    event->id = arena_printf(g, "badacct:%llu", (unsigned long long)g->next_number++);
    switch (kind) {
    case 0:
        event->id = padded(g, "acct:65.", 'q', COFFER_ACCOUNT_ID_MAX + 1);
        break;
    case 1:
        event->currency = chance(g, 50) ? "krw" : "ABCDEFGHIJKLM";
        break;
    case 2:
        event->flags = 0;
        event->min_balance = 1;
        break;
    default:
        event->flags = COFFER_FLAG_HAS_MAX;
        event->min_balance = -5;
        event->max_balance = chance(g, 50) ? -6 : -1;
        break;
    }
}

static void make_invalid_transfer(gen *g, coffer_event *event, unsigned kind)
{
    make_transfer(g, event);
    switch (kind) {
    case 0:
        event->id = chance(g, 50) ? "t#1" : "t 2";
        break;
    case 1:
        event->id = chance(g, 50) ? "" : NULL;
        break;
    case 2:
        event->id = padded(g, "t129.", 'x', COFFER_TRANSFER_ID_MAX + 1);
        break;
    case 3:
        event->amount = 0;
        break;
    case 4:
        event->amount = chance(g, 50) ? -1 : INT64_MIN;
        break;
    case 5: /* no up_to: a retry that shortens the timeout would make an up-to hold */
        event->flags &= (uint8_t)~COFFER_FLAG_UP_TO;
        event->hold_timeout_ms = COFFER_HOLD_TIMEOUT_MS_MAX + 1;
        break;
    case 6:
        event->metadata = padded(g, "{", ' ', COFFER_METADATA_MAX + 1);
        event->metadata_len = COFFER_METADATA_MAX + 1;
        break;
    case 7:
        event->from = chance(g, 50) ? "bad id!" : NULL;
        break;
    case 8:
        event->to = padded(g, "to65.", 'y', COFFER_ACCOUNT_ID_MAX + 1);
        break;
    default:
        event->op = chance(g, 50) ? COFFER_OP_EXPIRE : (uint8_t)(chance(g, 50) ? 0 : 9);
    }
}

static void make_invalid(gen *g, coffer_event *event)
{
    unsigned kind = (unsigned)below(g, 17);
    if (kind < 10) {
        make_invalid_transfer(g, event, kind);
    } else if (kind < 13) {
        uint8_t op = kind == 12 ? COFFER_OP_VOID : COFFER_OP_POST;
        make_resolution(g, event, op, pick_hold(g));
        if (kind == 10)
            event->amount = -1;
        else
            event->hold_id = chance(g, 50) ? "no such hold" : NULL;
    } else {
        make_invalid_account(g, event, kind - 13);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Retries: an earlier event again, identical or with one field changed                     */

static void mutate_account(gen *g, coffer_event *event)
{
    switch (below(g, 4)) {
    case 0:
        event->currency = g->currencies[below(g, g->currency_count)];
        break;
    case 1:
        if (event->flags & COFFER_FLAG_MIN_UNBOUNDED) {
            event->flags &= (uint8_t)~COFFER_FLAG_MIN_UNBOUNDED;
        } else if (chance(g, 50)) {
            event->flags |= COFFER_FLAG_MIN_UNBOUNDED;
        } else {
            event->min_balance -= 1;
        }
        break;
    case 2:
        event->flags ^= COFFER_FLAG_HAS_MAX;
        event->max_balance += 1;
        break;
    default:
        set_metadata(event, random_metadata(g));
        break;
    }
}

/* Turns an event into another kind under the same id (the kind is compared first). */
static void change_kind(gen *g, coffer_event *event)
{
    int choice = (int)below(g, 3);
    if (event->op == COFFER_OP_TRANSFER && choice == 2) {
        event->hold_timeout_ms = event->hold_timeout_ms > 0 ? 0 : 5;
        event->flags &= (uint8_t)~COFFER_FLAG_UP_TO;
        return;
    }
    static const uint8_t ops[] = {COFFER_OP_TRANSFER, COFFER_OP_POST, COFFER_OP_VOID};
    uint8_t op = ops[choice];
    if (op == event->op)
        op = op == COFFER_OP_VOID ? COFFER_OP_POST : COFFER_OP_VOID;
    coffer_event changed;
    const char *id = event->id;
    if (op == COFFER_OP_TRANSFER) {
        make_transfer(g, &changed);
    } else {
        make_resolution(g, &changed, op, pick_hold(g));
    }
    /* The fresh id made above is not used (a hold under it stays in `holds`, and posting it
     * is simply hold_not_found). */
    g->transfer_id_count--;
    *event = changed;
    event->id = id;
}

static void mutate_transfer(gen *g, coffer_event *event)
{
    switch (below(g, 8)) {
    case 0:
        event->from = random_account(g)->id;
        break;
    case 1:
        event->to = random_account(g)->id;
        break;
    case 2:
        event->amount = event->amount < INT64_MAX ? event->amount + 1 : 1;
        break;
    case 3:
        if (event->hold_timeout_ms > 0)
            event->hold_timeout_ms = (event->hold_timeout_ms % 90) + 1;
        else
            event->flags ^= COFFER_FLAG_UP_TO;
        break;
    case 4:
        event->flags ^= COFFER_FLAG_EXPECT_FROM;
        event->expect_from_version = 1;
        break;
    case 5:
        event->flags |= COFFER_FLAG_EXPECT_TO;
        event->expect_to_version += 1;
        break;
    case 6:
        set_metadata(event, random_metadata(g));
        break;
    default:
        change_kind(g, event);
        break;
    }
}

static void mutate_resolution(gen *g, coffer_event *event)
{
    unsigned kind = (unsigned)below(g, 3);
    if (kind == 0) {
        change_kind(g, event);
    } else if (kind == 1 || event->op == COFFER_OP_VOID) {
        event->hold_id = pick_hold(g).id;
    } else {
        event->amount = event->amount == 0 ? 1 : event->amount < INT64_MAX ? event->amount + 1 : 0;
    }
}

static void make_retry(gen *g, coffer_event *event)
{
    if (g->past_count == 0) {
        make_transfer(g, event);
        return;
    }
    size_t recent = g->past_count < 30 ? g->past_count : 30;
    *event = chance(g, 70) ? g->past[g->past_count - 1 - below(g, recent)]
                           : g->past[below(g, g->past_count)];
    if (chance(g, 65))
        return;
    if (event->op == COFFER_OP_CREATE_ACCOUNT)
        mutate_account(g, event);
    else if (event->op == COFFER_OP_TRANSFER)
        mutate_transfer(g, event);
    else if (event->op == COFFER_OP_POST || event->op == COFFER_OP_VOID)
        mutate_resolution(g, event);
}

/* ---------------------------------------------------------------------------------------- */
/* Batches and the clock                                                                     */

static void make_event(gen *g, coffer_event *event)
{
    unsigned kind = (unsigned)below(g, 100);
    if (kind < 3)
        make_account_event(g, event);
    else if (kind < 58)
        make_transfer(g, event);
    else if (kind < 72)
        make_resolution(g, event, COFFER_OP_POST, pick_hold(g));
    else if (kind < 79)
        make_resolution(g, event, COFFER_OP_VOID, pick_hold(g));
    else if (kind < 96)
        make_retry(g, event);
    else
        make_invalid(g, event);
}

/* Creates the setup accounts, up to eight per batch. */
static size_t setup_batch(gen *g, coffer_event *events)
{
    size_t count = 0;
    for (size_t i = 0; i < g->account_count && count < 8; i++) {
        if (g->accounts[i].stage != STAGE_SETUP)
            continue;
        g->accounts[i].stage = STAGE_CREATED;
        account_event(&g->accounts[i], &events[count++]);
    }
    return count;
}

/* An earlier batch again: an exact replay, or (atomic) with one new event, a mix. */
static size_t repeat_batch(gen *g, coffer_event *events, bool *atomic)
{
    const gen_batch *batch = &g->batches[below(g, g->batch_count)];
    memcpy(events, &g->past[batch->first], batch->count * sizeof *events);
    *atomic = batch->atomic;
    size_t count = batch->count;
    if (chance(g, 30))
        make_transfer(g, &events[count++]);
    return count;
}

static size_t random_batch(gen *g, coffer_event *events, bool *atomic)
{
    /* Atomic batches are shorter: one failure fails them all, and successes matter too. */
    *atomic = chance(g, 30);
    size_t count = 1 + below(g, *atomic ? 4 : 8);
    for (size_t i = 0; i < count; i++)
        make_event(g, &events[i]);
    if (count > 1 && chance(g, 3)) {
        size_t copy = below(g, count - 1);
        events[count - 1] = events[copy]; /* an id twice in one batch */
        uint8_t op = events[copy].op;
        bool has_amount = op == COFFER_OP_TRANSFER || op == COFFER_OP_POST; /* not void */
        if (has_amount && events[copy].amount < INT64_MAX && chance(g, 50)) {
            events[count - 1].amount += 1;
        }
    }
    if (g->aimed_hold != NULL) {
        size_t racing = below(g, count);
        uint8_t op = chance(g, 70) ? COFFER_OP_POST : COFFER_OP_VOID;
        make_resolution(g, &events[racing], op, (gen_hold){g->aimed_hold, 1});
        events[racing].amount = 0; /* the whole hold */
    }
    if (g->tie_timeout_ms > 0) {
        *atomic = false; /* the hold must be the batch's first event and not be undone */
        make_transfer_with(g, &events[0], g->tie_timeout_ms);
    }
    return count;
}

static void remember_batch(gen *g, const coffer_event *events, size_t count, bool atomic)
{
    if (g->past_count + count > g->capacity)
        die("event capacity");
    memcpy(&g->past[g->past_count], events, count * sizeof *events);
    g->batches[g->batch_count++] = (gen_batch){g->past_count, count, atomic};
    g->past_count += count;
}

size_t gen_next_batch(gen *g, coffer_event *events, bool *atomic)
{
    size_t count = setup_batch(g, events);
    *atomic = false;
    if (count == 0 && g->batch_count > 0 && chance(g, 5))
        count = repeat_batch(g, events, atomic);
    if (count == 0)
        count = random_batch(g, events, atomic);
    g->aimed_hold = NULL;
    g->tie_timeout_ms = 0;
    remember_batch(g, events, count, *atomic);
    return count;
}

/* Aims the clock a few ns before a pending hold's expiry, or returns false if none. */
static bool aim_at_expiry(gen *g, uint64_t *clock_ns)
{
    coffer_transfer holds[32];
    size_t count = 0;
    ref_holds_list(g->reference, NULL, 32, holds, &count);
    if (count == 0)
        return false;
    const coffer_transfer *hold = &holds[below(g, count)];
    g->aimed_hold = arena_printf(g, "%s", hold->id);
    *clock_ns = hold->expires_at - below(g, 8);
    return true;
}

/* How many pending holds the sweep of a batch starting at ts0 expires. */
static size_t due_holds(const coffer_transfer *holds, size_t count, uint64_t ts0)
{
    size_t due = 0;
    while (due < count && holds[due].expires_at <= ts0)
        due++;
    return due;
}

/* Aims the clock so that a hold of timeout T opening the next batch expires in exactly the
 * same ns as a pending hold: ts0 + sweep count + T ms must equal its expires_at. */
static bool aim_at_tie(gen *g, uint64_t *clock_ns)
{
    coffer_transfer holds[64];
    size_t count = 0;
    ref_holds_list(g->reference, NULL, 64, holds, &count);
    if (count == 0 || count == 64)
        return false;
    uint64_t timeout_ms = (uint64_t)between(g, 1, 10);
    uint64_t expires_at = holds[below(g, count)].expires_at;
    uint64_t ts0 = expires_at - timeout_ms * NS_PER_MS;
    size_t due = due_holds(holds, count, ts0);
    ts0 -= due;
    if (due_holds(holds, count, ts0) != due || ts0 <= ref_last_timestamp(g->reference)) {
        return false;
    }
    g->tie_timeout_ms = timeout_ms;
    *clock_ns = ts0;
    return true;
}

uint64_t gen_next_clock(gen *g, uint64_t clock_ns)
{
    unsigned kind = (unsigned)below(g, 100);
    g->aimed_hold = NULL;
    g->tie_timeout_ms = 0;
    if (kind < 3 && aim_at_tie(g, &clock_ns))
        return clock_ns;
    if (kind < 5 && aim_at_expiry(g, &clock_ns))
        return clock_ns;
    if (kind < 8)
        return clock_ns - below(g, 2 * NS_PER_MS); /* the wall clock stepped back */
    if (kind < 30)
        return clock_ns;
    if (kind < 90)
        return clock_ns + below(g, 3 * NS_PER_MS / 2);
    if (kind < 96)
        return clock_ns + (uint64_t)between(g, 2, 10) * NS_PER_MS;
    return clock_ns + (uint64_t)between(g, 30, 150) * NS_PER_MS; /* past most timeouts */
}

/* ---------------------------------------------------------------------------------------- */
/* Lifecycle and the ids the state checks walk                                              */

gen *gen_create(uint64_t seed, size_t events_max, ref_ledger *reference)
{
    gen *g = calloc(1, sizeof *g);
    if (g == NULL)
        die("out of memory");
    g->random_state = seed;
    g->reference = reference;
    g->capacity = events_max + 64 + 2 * GEN_BATCH_MAX;
    g->past = calloc(g->capacity, sizeof *g->past);
    g->batches = calloc(g->capacity, sizeof *g->batches);
    g->holds = calloc(g->capacity, sizeof *g->holds);
    g->transfer_ids = calloc(g->capacity, sizeof *g->transfer_ids);
    if (!g->past || !g->batches || !g->holds || !g->transfer_ids)
        die("out of memory");
    accounts_plan(g);
    return g;
}

void gen_destroy(gen *g)
{
    if (g == NULL)
        return;
    while (g->arena != NULL) {
        arena_chunk *next = g->arena->next;
        free(g->arena);
        g->arena = next;
    }
    free(g->past);
    free(g->batches);
    free(g->holds);
    free(g->transfer_ids);
    free(g);
}

size_t gen_account_count(const gen *g)
{
    return g->account_count;
}
const char *gen_account_id(const gen *g, size_t index)
{
    return g->accounts[index].id;
}
size_t gen_transfer_count(const gen *g)
{
    return g->transfer_id_count;
}
const char *gen_transfer_id(const gen *g, size_t index)
{
    return g->transfer_ids[index];
}
