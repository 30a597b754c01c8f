/*
 * test_cold.c — the core answering retries from records memory no longer holds. Store A keeps
 * a random workload in memory; store B holds only its accounts (same state) and finds every
 * transfer through ledger_set_cold, read back from A. Every retry, changed retry, atomic
 * replay and post or void of a resolved hold must get the same result from both.
 */
/* cmocka needs these before its own header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/ledger.h"
#include "store/store.h"

#define TEST_CLOCK_START_NS 1700000000000000000ULL
#define TEST_NS_PER_MS 1000000ULL

#define ACCOUNTS 14
#define WORKLOAD_STEPS 700
#define EVENTS_MAX 2048
#define NAME_MAX 48

/* One side of the comparison: a store, the core applying to it, and its seq and clock. */
typedef struct side {
    store store;
    ledger ledger;
    uint64_t seq, timestamp;
} side;

/* An event whose strings live with it, so it can be submitted again later. */
typedef struct owned_event {
    coffer_event event;
    char id[NAME_MAX], from[NAME_MAX], to[NAME_MAX], hold_id[NAME_MAX], metadata[64];
    char currency[8];
} owned_event;

typedef struct workload {
    owned_event accounts[ACCOUNTS];
    owned_event *events; /* every transfer, post and void submitted, in order */
    size_t count;
    int codes_seen[64]; /* by code: how often the workload produced it (0: expiries) */
    uint64_t rng;
} workload;

static uint64_t next_random(workload *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static uint64_t below(workload *w, uint64_t bound)
{
    return next_random(w) % bound;
}

/* Points the event's strings at its own buffers (after a copy, or once filled). */
static void owned_bind(owned_event *o)
{
    o->event.id = o->id;
    o->event.from = o->from;
    o->event.to = o->to;
    o->event.hold_id = o->hold_id;
    o->event.currency = o->currency;
    o->event.metadata = o->event.metadata_len ? o->metadata : NULL;
}

static void side_open(side *s)
{
    store_limits limits = {1000, 200000, STORE_MEMORY_MIN};
    assert_int_equal(store_init(&s->store, &limits), COFFER_OK);
    assert_int_equal(ledger_init(&s->ledger, &s->store), COFFER_OK);
    s->seq = 1;
    s->timestamp = TEST_CLOCK_START_NS;
}

static void side_close(side *s)
{
    ledger_free(&s->ledger);
    store_free(&s->store);
}

static void side_submit(side *s, const coffer_event *events, size_t count, bool atomic,
                        coffer_result *results)
{
    ledger_needs needs = {0};
    ledger_needs_add(&needs, events, count);
    assert_int_equal(store_reserve(&s->store, needs.accounts, needs.transfers, needs.history,
                                   needs.arena_bytes, needs.holds),
                     COFFER_OK);
    ledger_apply(&s->ledger, events, count, atomic, NULL, s->seq, s->timestamp, results);
    s->seq += count;
    s->timestamp += count;
}

static uint32_t account_index(const store *s, const char *id)
{
    return store_account_find(s, id, strlen(id), store_hash(id, strlen(id)));
}

/* ---- the cold side's view of A (what the engine reads back from its index) ------------------ */

static void copy_name(char *out, size_t out_size, const char *bytes, size_t length)
{
    assert_true(length < out_size);
    memcpy(out, bytes, length);
    out[length] = 0;
}

/* As engine/reads.c fills coffer_transfer from the store. */
static void transfer_fill(const store *s, uint32_t index, coffer_transfer *out)
{
    const store_transfer *t = &s->transfers[index];
    const store_aux *aux = store_transfer_aux(s, t);
    const char *names = aux ? (const char *)(aux + 1) + aux->metadata_len : 0;
    memset(out, 0, sizeof *out);
    copy_name(out->id, sizeof out->id, store_transfer_id(s, t), t->id_len);
    out->op = t->op;
    out->state = t->state;
    out->flags = t->flags;
    out->code = t->code;
    out->amount = t->state == COFFER_STATE_REJECTED ? 0 : t->amount;
    out->amount_requested = t->amount_requested;
    out->seq = t->seq;
    out->timestamp = t->timestamp;
    out->expires_at = t->expires_at;
    if (t->expires_at)
        out->hold_timeout_ms = (t->expires_at - t->timestamp) / 1000000ULL;
    if (t->from != STORE_NONE)
        copy_name(out->from, sizeof out->from, s->accounts[t->from].id,
                  s->accounts[t->from].id_len);
    else if (aux && t->op == COFFER_OP_TRANSFER)
        copy_name(out->from, sizeof out->from, names, aux->from_len);
    if (t->to != STORE_NONE)
        copy_name(out->to, sizeof out->to, s->accounts[t->to].id, s->accounts[t->to].id_len);
    else if (aux && t->op == COFFER_OP_TRANSFER)
        copy_name(out->to, sizeof out->to, names + aux->from_len, aux->to_len);
    if (t->op == COFFER_OP_POST || t->op == COFFER_OP_VOID) {
        if (t->link != STORE_NONE) {
            const store_transfer *hold = &s->transfers[t->link];
            copy_name(out->hold_id, sizeof out->hold_id, store_transfer_id(s, hold), hold->id_len);
        } else if (aux) {
            copy_name(out->hold_id, sizeof out->hold_id, names + aux->from_len + aux->to_len,
                      aux->hold_len);
        }
    }
    if (t->state == COFFER_STATE_CAPTURED)
        out->captured = s->transfers[t->link].amount;
    if (aux) {
        out->expect_from_version = aux->expect_from_version;
        out->expect_to_version = aux->expect_to_version;
        out->metadata_len = aux->metadata_len;
        memcpy(out->metadata, aux + 1, aux->metadata_len);
    }
}

typedef struct cold_source {
    const store *memory; /* A: every record */
    uint64_t trimmed_seq;
    size_t calls;
} cold_source;

static bool find_in_a(void *context, const char *id, size_t length, uint64_t hash, ledger_cold *out)
{
    cold_source *source = context;
    const store *s = source->memory;
    source->calls++;
    assert_int_equal(hash, store_hash(id, length));
    uint32_t index = store_transfer_find(s, id, length, hash);
    if (index == STORE_NONE || s->transfers[index].seq > source->trimmed_seq)
        return false;
    const store_transfer *t = &s->transfers[index];
    memset(out, 0, sizeof *out);
    transfer_fill(s, index, &out->transfer);
    out->field = t->field;
    if (t->state == COFFER_STATE_REJECTED && t->code == COFFER_INSUFFICIENT_BALANCE)
        out->available = t->amount;
    if (t->state == COFFER_STATE_REJECTED && t->code == COFFER_VERSION_MISMATCH)
        out->actual_version = (uint64_t)t->amount;
    if (t->from != STORE_NONE)
        out->from_after = ledger_account_after(s, t->from, t->seq);
    if (t->to != STORE_NONE)
        out->to_after = ledger_account_after(s, t->to, t->seq);
    return true;
}

/* ---- comparing results ----------------------------------------------------------------------- */

static void results_equal(const coffer_result *a, const coffer_result *b, const char *what,
                          const char *id)
{
    const char *field_a = a->field ? a->field : "(none)", *field_b = b->field ? b->field : "(none)";
    bool same = a->code == b->code && a->replayed == b->replayed && a->state == b->state &&
                strcmp(field_a, field_b) == 0 && a->seq == b->seq && a->timestamp == b->timestamp &&
                a->amount == b->amount && a->expires_at == b->expires_at &&
                a->actual_version == b->actual_version && a->available == b->available &&
                a->from.balance == b->from.balance && a->from.available == b->from.available &&
                a->from.version == b->from.version && a->to.balance == b->to.balance &&
                a->to.available == b->to.available && a->to.version == b->to.version &&
                strcmp(a->hold_from, b->hold_from) == 0 && strcmp(a->hold_to, b->hold_to) == 0;
    if (same)
        return;
    print_error(
        "%s of %s differs:\n"
        "  memory: code %d replayed %d state %d field %s seq %llu ts %llu amount %lld "
        "expires %llu actual_version %llu available %lld from %lld/%lld/v%llu to "
        "%lld/%lld/v%llu hold %s->%s\n"
        "  cold:   code %d replayed %d state %d field %s seq %llu ts %llu amount %lld "
        "expires %llu actual_version %llu available %lld from %lld/%lld/v%llu to "
        "%lld/%lld/v%llu hold %s->%s\n",
        what, id, a->code, a->replayed, a->state, field_a, (unsigned long long)a->seq,
        (unsigned long long)a->timestamp, (long long)a->amount, (unsigned long long)a->expires_at,
        (unsigned long long)a->actual_version, (long long)a->available, (long long)a->from.balance,
        (long long)a->from.available, (unsigned long long)a->from.version, (long long)a->to.balance,
        (long long)a->to.available, (unsigned long long)a->to.version, a->hold_from, a->hold_to,
        b->code, b->replayed, b->state, field_b, (unsigned long long)b->seq,
        (unsigned long long)b->timestamp, (long long)b->amount, (unsigned long long)b->expires_at,
        (unsigned long long)b->actual_version, (long long)b->available, (long long)b->from.balance,
        (long long)b->from.available, (unsigned long long)b->from.version, (long long)b->to.balance,
        (long long)b->to.available, (unsigned long long)b->to.version, b->hold_from, b->hold_to);
    fail();
}

/* Submits the same events to both sides at the same seq and time; every result must match. */
static void both_submit(side *a, side *b, const coffer_event *events, size_t count, bool atomic,
                        const char *what, coffer_result *results_a)
{
    static coffer_result results_b[8];
    assert_true(count <= 8);
    assert_int_equal(a->seq, b->seq);
    assert_int_equal(a->timestamp, b->timestamp);
    side_submit(a, events, count, atomic, results_a);
    side_submit(b, events, count, atomic, results_b);
    for (size_t i = 0; i < count; i++)
        results_equal(&results_a[i], &results_b[i], what, events[i].id);
}

/* ---- the workload ---------------------------------------------------------------------------- */

static owned_event *workload_next(workload *w)
{
    assert_true(w->count < EVENTS_MAX);
    owned_event *o = &w->events[w->count++];
    memset(o, 0, sizeof *o);
    snprintf(o->id, sizeof o->id, "t-%zu", w->count);
    return o;
}

static const char *account_name(workload *w)
{
    /* Now and then a name no account has: account_not_found. */
    if (below(w, 25) == 0)
        return below(w, 2) ? "nobody" : "ghost";
    return w->accounts[below(w, ACCOUNTS)].id;
}

static void maybe_metadata(workload *w, owned_event *o)
{
    if (below(w, 4) != 0)
        return;
    int length = snprintf(o->metadata, sizeof o->metadata, "{\"n\":%llu}",
                          (unsigned long long)below(w, 1000));
    o->event.metadata_len = (uint32_t)length;
}

static void make_transfer(workload *w, const side *a, owned_event *o)
{
    coffer_event *e = &o->event;
    e->op = COFFER_OP_TRANSFER;
    snprintf(o->from, sizeof o->from, "%s", account_name(w));
    snprintf(o->to, sizeof o->to, "%s", below(w, 30) == 0 ? o->from : account_name(w));
    e->amount = (int64_t)below(w, 400) + 1;
    if (below(w, 3) == 0)
        e->hold_timeout_ms = below(w, 40) + 1;
    else if (below(w, 5) == 0)
        e->flags |= COFFER_FLAG_UP_TO; /* holds take definite amounts */
    /* Expected versions: right most of the time, wrong now and then. */
    uint32_t from = account_index(&a->store, o->from), to = account_index(&a->store, o->to);
    if (below(w, 6) == 0) {
        e->flags |= COFFER_FLAG_EXPECT_FROM;
        uint64_t version = from != STORE_NONE ? a->store.accounts[from].version : 1;
        e->expect_from_version = version + (below(w, 3) == 0);
    }
    if (below(w, 8) == 0) {
        e->flags |= COFFER_FLAG_EXPECT_TO;
        uint64_t version = to != STORE_NONE ? a->store.accounts[to].version : 1;
        e->expect_to_version = version + (below(w, 3) == 0);
    }
    maybe_metadata(w, o);
    owned_bind(o);
}

/* A post or void of an earlier hold (pending or not), a plain transfer, or no transfer. */
static void make_resolution(workload *w, owned_event *o)
{
    coffer_event *e = &o->event;
    e->op = below(w, 2) ? COFFER_OP_POST : COFFER_OP_VOID;
    const owned_event *target = NULL;
    for (int tries = 0; tries < 8 && w->count > 1 && !target; tries++) {
        /* Mostly recent ones, which may still be pending. */
        size_t back = below(w, 2) ? 1 + below(w, w->count - 1 < 16 ? w->count - 1 : 16)
                                  : 1 + below(w, w->count - 1);
        const owned_event *candidate = &w->events[w->count - 1 - back];
        if (candidate->event.op == COFFER_OP_TRANSFER &&
            (candidate->event.hold_timeout_ms > 0 || tries > 5))
            target = candidate;
    }
    snprintf(o->hold_id, sizeof o->hold_id, "%s", target ? target->id : "no-such-hold");
    if (e->op == COFFER_OP_POST && below(w, 2) == 0)
        e->amount = (int64_t)below(w, 500) + 1; /* partly, or more than held */
    maybe_metadata(w, o);
    owned_bind(o);
}

/* Expires every pending hold of A due by its clock, as the engine's sweep would. */
static void expire_due(side *a, workload *w)
{
    store *s = &a->store;
    for (uint32_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        if (t->state != COFFER_STATE_PENDING || t->expires_at > a->timestamp)
            continue;
        coffer_result result;
        ledger_expire(&a->ledger, i, a->seq++, a->timestamp++, &result);
        assert_int_equal(result.code, COFFER_OK);
        w->codes_seen[0]++;
    }
}

static void note_codes(workload *w, const coffer_result *results, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (results[i].code >= 0 && results[i].code < 64)
            w->codes_seen[results[i].code]++;
}

static void create_accounts(side *s, workload *w)
{
    coffer_event events[ACCOUNTS];
    coffer_result results[ACCOUNTS];
    for (int i = 0; i < ACCOUNTS; i++) {
        owned_event *o = &w->accounts[i];
        memset(o, 0, sizeof *o);
        snprintf(o->id, sizeof o->id, "acct-%d", i);
        snprintf(o->currency, sizeof o->currency, "%s", i == ACCOUNTS - 1 ? "EUR" : "USD");
        o->event.op = COFFER_OP_CREATE_ACCOUNT;
        if (i < 3)
            o->event.flags = COFFER_FLAG_MIN_UNBOUNDED; /* sources */
        if (i == 5 || i == 6) {
            o->event.flags |= COFFER_FLAG_HAS_MAX;
            o->event.max_balance = 500;
        }
        if (i % 4 == 1)
            o->event.metadata_len =
                (uint32_t)snprintf(o->metadata, sizeof o->metadata, "{\"owner\":\"%d\"}", i);
        owned_bind(o);
        events[i] = o->event;
    }
    side_submit(s, events, ACCOUNTS, false, results);
    for (int i = 0; i < ACCOUNTS; i++)
        assert_int_equal(results[i].code, COFFER_CREATED);
}

static void run_workload(side *a, workload *w)
{
    coffer_result results[4];
    for (int step = 0; step < WORKLOAD_STEPS; step++) {
        if (below(w, 10) == 0)
            a->timestamp += below(w, 15) * TEST_NS_PER_MS; /* time passes: holds come due */
        if (below(w, 5) == 0)
            expire_due(a, w);
        size_t count = below(w, 12) == 0 ? 2 + below(w, 2) : 1;
        bool atomic = count > 1 || below(w, 10) == 0;
        coffer_event events[4];
        for (size_t i = 0; i < count; i++) {
            owned_event *o = workload_next(w);
            if (below(w, 4) == 0)
                make_resolution(w, o);
            else
                make_transfer(w, a, o);
            events[i] = o->event;
        }
        side_submit(a, events, count, atomic, results);
        note_codes(w, results, count);
    }
    /* Everything still pending expires: a cold hold is never pending. */
    a->timestamp += 3600ULL * 1000 * TEST_NS_PER_MS;
    expire_due(a, w);
    assert_int_equal(a->store.holds_pending, 0);
}

/* B: the same accounts in the same state, no transfer in memory, everything up to now cold. */
static void build_cold_side(side *b, const side *a, workload *w, cold_source *source)
{
    create_accounts(b, w);
    for (int i = 0; i < ACCOUNTS; i++) {
        const store_account *from = &a->store.accounts[i];
        store_account *to = &b->store.accounts[i];
        assert_memory_equal(from->id, to->id, from->id_len);
        to->debits_posted = from->debits_posted;
        to->credits_posted = from->credits_posted;
        to->debits_held = from->debits_held;
        to->credits_held = from->credits_held;
        to->version = from->version;
        to->holds_pending = from->holds_pending;
    }
    assert_int_equal(b->store.transfers_count, 0);
    b->seq = a->seq;
    b->timestamp = a->timestamp;
    b->store.trimmed_seq = a->seq - 1;
    source->memory = &a->store;
    source->trimmed_seq = b->store.trimmed_seq;
    ledger_set_cold(&b->ledger, find_in_a, source);
}

/* ---- changed retries ------------------------------------------------------------------------- */

/* A copy of `original` with one field changed, picked by `which`. */
static void change_one(const owned_event *original, owned_event *changed, uint64_t which)
{
    *changed = *original;
    coffer_event *e = &changed->event;
    bool transfer = e->op == COFFER_OP_TRANSFER;
    switch (which % (transfer ? 9 : 5)) {
    case 0:
        e->amount += 1;
        break;
    case 1:
        if (e->metadata_len) {
            changed->metadata[e->metadata_len - 2] ^= 1; /* a digit before the brace */
        } else {
            e->metadata_len =
                (uint32_t)snprintf(changed->metadata, sizeof changed->metadata, "{\"other\":1}");
        }
        break;
    case 2:
        if (transfer)
            e->hold_timeout_ms = e->hold_timeout_ms ? e->hold_timeout_ms + 1 : 0;
        else
            e->op = e->op == COFFER_OP_POST ? COFFER_OP_VOID : COFFER_OP_POST;
        if (e->op == COFFER_OP_VOID)
            e->amount = 0;
        if (transfer && e->hold_timeout_ms == 0)
            e->hold_timeout_ms = 7; /* a plain transfer retried as a hold */
        break;
    case 3:
        if (transfer)
            snprintf(changed->from, sizeof changed->from, "%.40s-x", original->from);
        else
            snprintf(changed->hold_id, sizeof changed->hold_id, "%.40s-x", original->hold_id);
        break;
    case 4:
        if (transfer)
            snprintf(changed->to, sizeof changed->to, "%.40s-y", original->to);
        else
            e->amount = e->op == COFFER_OP_POST ? e->amount + 2 : 0;
        if (!transfer && e->op == COFFER_OP_VOID)
            snprintf(changed->hold_id, sizeof changed->hold_id, "x-%.40s", original->hold_id);
        break;
    case 5:
        e->flags ^= COFFER_FLAG_UP_TO;
        break;
    case 6:
        e->flags ^= COFFER_FLAG_EXPECT_FROM;
        e->expect_from_version = e->flags & COFFER_FLAG_EXPECT_FROM ? 3 : 0;
        break;
    case 7:
        if (e->flags & COFFER_FLAG_EXPECT_TO)
            e->expect_to_version += 1;
        else
            e->flags |= COFFER_FLAG_EXPECT_TO, e->expect_to_version = 2;
        break;
    default:
        if (e->hold_timeout_ms)
            e->hold_timeout_ms = 0; /* a hold retried as a plain transfer */
        else
            e->amount += 3;
        break;
    }
    owned_bind(changed);
    int field;
    if (ledger_validate(e, &field) == COFFER_OK)
        return;
    /* A change the event's kind does not allow (an up-to hold, a void with an amount): one it
     * does. */
    *changed = *original;
    if (e->op == COFFER_OP_VOID)
        snprintf(changed->hold_id, sizeof changed->hold_id, "v-%.40s", original->hold_id);
    else
        e->amount += 1;
    owned_bind(changed);
    assert_int_equal(ledger_validate(e, &field), COFFER_OK);
}

/* ---- the comparison -------------------------------------------------------------------------- */

static void every_code_was_provoked(const workload *w)
{
    static const int wanted[] = {
        COFFER_CREATED,
        COFFER_INSUFFICIENT_BALANCE,
        COFFER_VERSION_MISMATCH,
        COFFER_ACCOUNT_NOT_FOUND,
        COFFER_SAME_ACCOUNT,
        COFFER_CURRENCY_MISMATCH,
        COFFER_EXCEEDS_MAX_BALANCE,
        COFFER_HOLD_NOT_FOUND,
        COFFER_HOLD_ALREADY_POSTED,
        COFFER_HOLD_ALREADY_VOIDED,
        COFFER_HOLD_EXPIRED,
        COFFER_HOLD_AMOUNT_EXCEEDED,
        COFFER_BATCH_FAILED,
    };
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        if (w->codes_seen[wanted[i]] == 0)
            print_error("the workload never produced %s\n", coffer_code_name(wanted[i]));
        assert_true(w->codes_seen[wanted[i]] > 0);
    }
    assert_true(w->codes_seen[0] > 0); /* expiries */
}

static void compare_retries(side *a, side *b, workload *w)
{
    coffer_result results[8];
    size_t replays = 0, reused = 0;
    for (size_t i = 0; i < w->count; i++) {
        const owned_event *o = &w->events[i];
        both_submit(a, b, &o->event, 1, false, "a retry", results);
        assert_true(results[0].replayed);
        both_submit(a, b, &o->event, 1, true, "an atomic retry", results);
        replays++;

        owned_event changed;
        change_one(o, &changed, i + w->rng % 7);
        both_submit(a, b, &changed.event, 1, false, "a changed retry", results);
        assert_int_equal(results[0].code, COFFER_ID_REUSED);
        assert_non_null(results[0].field);
        both_submit(a, b, &changed.event, 1, true, "a changed atomic retry", results);
        reused++;
    }
    /* Atomic batches of recorded events (an exact replay), with one changed, with a new one. */
    for (size_t i = 0; i + 3 <= w->count; i += 3) {
        coffer_event events[3] = {w->events[i].event, w->events[i + 1].event,
                                  w->events[i + 2].event};
        both_submit(a, b, events, 3, true, "an atomic replay", results);
        for (int k = 0; k < 3; k++)
            assert_true(results[k].replayed);
        owned_event changed;
        change_one(&w->events[i + 1], &changed, i / 3);
        events[1] = changed.event;
        both_submit(a, b, events, 3, true, "an atomic batch with a changed retry", results);
        assert_int_equal(results[1].code, COFFER_ID_REUSED);
        owned_event fresh = w->events[i + 2];
        snprintf(fresh.id, sizeof fresh.id, "fresh-%zu", i);
        owned_bind(&fresh);
        events[1] = w->events[i + 1].event;
        events[2] = fresh.event;
        both_submit(a, b, events, 3, true, "an atomic batch mixing old and new", results);
        assert_int_equal(results[0].code, COFFER_ID_REUSED);
    }
    assert_true(replays > 0 && reused > 0);
}

/* A new post and a new void of every recorded transfer (resolved holds, rejected holds, plain
 * transfers), alone and in an atomic batch; then their retries, which memory holds on both. */
static void compare_resolutions(side *a, side *b, workload *w)
{
    coffer_result results[2];
    size_t already = 0;
    for (size_t i = 0; i < w->count; i++) {
        const owned_event *target = &w->events[i];
        if (target->event.op != COFFER_OP_TRANSFER)
            continue;
        owned_event post = {0}, void_ = {0};
        snprintf(post.id, sizeof post.id, "again-post-%zu", i);
        snprintf(void_.id, sizeof void_.id, "again-void-%zu", i);
        snprintf(post.hold_id, sizeof post.hold_id, "%s", target->id);
        snprintf(void_.hold_id, sizeof void_.hold_id, "%s", target->id);
        post.event.op = COFFER_OP_POST;
        post.event.amount = i % 3 ? 0 : 1;
        void_.event.op = COFFER_OP_VOID;
        owned_bind(&post);
        owned_bind(&void_);
        both_submit(a, b, &post.event, 1, false, "a post of a resolved transfer", results);
        assert_int_not_equal(results[0].code, COFFER_CREATED);
        already += results[0].code == COFFER_HOLD_ALREADY_POSTED ||
                   results[0].code == COFFER_HOLD_ALREADY_VOIDED ||
                   results[0].code == COFFER_HOLD_EXPIRED;
        both_submit(a, b, &post.event, 1, false, "a retry of that post", results);
        coffer_event pair[2] = {void_.event, post.event};
        both_submit(a, b, pair, 2, true, "an atomic void of a resolved transfer", results);
        both_submit(a, b, &void_.event, 1, false, "a retry of that void", results);
    }
    assert_true(already > 0);
}

static void cold_answers_as_memory_does(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        side *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        workload *w = calloc(1, sizeof *w);
        assert_true(a && b && w);
        w->events = calloc(EVENTS_MAX, sizeof *w->events);
        assert_non_null(w->events);
        w->rng = 0x9E3779B97F4A7C15ULL * seed;
        side_open(a);
        side_open(b);
        create_accounts(a, w);
        run_workload(a, w);
        every_code_was_provoked(w);

        cold_source source = {0};
        build_cold_side(b, a, w, &source);
        compare_retries(a, b, w);
        compare_resolutions(a, b, w);
        assert_true(source.calls >= w->count);

        side_close(a);
        side_close(b);
        free(w->events);
        free(w);
        free(a);
        free(b);
    }
}

/* With nothing trimmed, the core never asks (the in-memory path is unchanged). */
static void an_untrimmed_store_never_asks(void **state)
{
    (void)state;
    side *a = calloc(1, sizeof *a);
    workload *w = calloc(1, sizeof *w);
    assert_true(a && w);
    w->events = calloc(EVENTS_MAX, sizeof *w->events);
    w->rng = 42;
    side_open(a);
    cold_source source = {&a->store, UINT64_MAX, 0};
    ledger_set_cold(&a->ledger, find_in_a, &source);
    create_accounts(a, w);
    run_workload(a, w);
    assert_int_equal(source.calls, 0);
    side_close(a);
    free(w->events);
    free(w);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cold_answers_as_memory_does),
        cmocka_unit_test(an_untrimmed_store_never_asks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
