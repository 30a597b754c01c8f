/*
 * test_trim.c — store_trim (horizon trim): a random workload through the core's ledger_apply
 * (accounts, transfers, rejections, holds posted, voided and expired, metadata, expected
 * versions, atomic batches) fed to two stores alike; one is trimmed at growing horizons, the
 * other never. Every answer memory gives past the horizon is the same before and after a trim
 * and the same as the twin's, evicted ids are gone, pending holds stay, the budget goes down,
 * and the workload goes on over the trimmed store (rollback included) with the same results.
 */
#include "support.h"

#include <sodium.h>
#include <unistd.h>

#include "core/ledger.h"
#include "log/snapshot.h"
#include "store/store.h"

/* verify.c's scan of one store (behind coffer_verify). The engine's headers are private and no
 * engine trims yet, so the scan of a trimmed store is reached through its one declaration. */
int engine_verify_store(const store *s, coffer_verify_report *report);

#define ACCOUNTS 12
#define IDS_MAX 40000
#define BATCH_MAX 4
#define HOLD_TIMEOUT_MS_MAX 40

/* One store with the core applying to it. */
typedef struct ledger_side {
    store s;
    ledger l;
} ledger_side;

typedef struct world {
    ledger_side trimmed, twin;
    uint64_t seq, timestamp, random;
    char (*ids)[24]; /* every transfer id issued, in order */
    uint64_t ids_count;
    uint64_t compared; /* results compared, so a test that compares nothing fails */
    /* atomic batches rolled back (one event refused) on a store already trimmed: the marks
     * and rollback of the store after a trim */
    uint64_t rollbacks_after_trim;
} world;

static uint64_t next_random(world *w)
{
    w->random ^= w->random << 13;
    w->random ^= w->random >> 7;
    w->random ^= w->random << 17;
    return w->random;
}

static uint64_t below(world *w, uint64_t bound)
{
    return next_random(w) % bound;
}

static const char *account_name(unsigned i)
{
    static const char *const names[ACCOUNTS] = {"bank", "a1", "a2", "a3", "a4",  "a5",
                                                "a6",   "a7", "a8", "a9", "jar", "pot"};
    return names[i];
}

/* The core asks a trimmed store's caller about ids it does not hold. This workload never
 * retries an evicted id (test_cold covers that), so every id it asks about is new: were one not,
 * its result would differ from the twin's. */
static bool nothing_cold(void *context, const char *id, size_t length, uint64_t hash,
                         ledger_cold *out)
{
    (void)context, (void)id, (void)length, (void)hash, (void)out;
    return false;
}

static void side_open(ledger_side *side)
{
    store_limits limits = {64, IDS_MAX, 256ULL << 20};
    assert_int_equal(store_init(&side->s, &limits), COFFER_OK);
    assert_int_equal(ledger_init(&side->l, &side->s), COFFER_OK);
    ledger_set_cold(&side->l, nothing_cold, 0);
}

static void side_close(ledger_side *side)
{
    ledger_free(&side->l);
    store_free(&side->s);
}

static void assert_after_equal(coffer_account_after x, coffer_account_after y)
{
    assert_int_equal(x.balance, y.balance);
    assert_int_equal(x.available, y.available);
    assert_int_equal(x.version, y.version);
}

static void assert_results_equal(const coffer_result *x, const coffer_result *y)
{
    assert_int_equal(x->code, y->code);
    assert_int_equal(x->replayed, y->replayed);
    assert_int_equal(x->state, y->state);
    assert_true((x->field == 0) == (y->field == 0));
    if (x->field)
        assert_string_equal(x->field, y->field);
    assert_int_equal(x->seq, y->seq);
    assert_int_equal(x->timestamp, y->timestamp);
    assert_int_equal(x->amount, y->amount);
    assert_int_equal(x->expires_at, y->expires_at);
    assert_int_equal(x->actual_version, y->actual_version);
    assert_int_equal(x->available, y->available);
    assert_after_equal(x->from, y->from);
    assert_after_equal(x->to, y->to);
    assert_string_equal(x->hold_from, y->hold_from);
    assert_string_equal(x->hold_to, y->hold_to);
}

static void side_apply(ledger_side *side, const coffer_event *events, size_t count, bool atomic,
                       const char *submitter, uint64_t seq, uint64_t timestamp,
                       coffer_result *results)
{
    ledger_needs needs = {0};
    ledger_needs_add(&needs, events, count);
    assert_int_equal(store_reserve(&side->s, needs.accounts, needs.transfers, needs.history,
                                   needs.arena_bytes, needs.holds),
                     COFFER_OK);
    if (submitter)
        assert_int_equal(store_submitter_room(&side->s, submitter, strlen(submitter)), COFFER_OK);
    ledger_apply(&side->l, events, count, atomic, submitter, seq, timestamp, results);
}

/* Applies to both stores; results compared for every event. */
static void world_apply(world *w, const coffer_event *events, size_t count, bool atomic)
{
    const char *submitter = below(w, 3) == 0 ? "teller" : 0;
    coffer_result trimmed[BATCH_MAX], twin[BATCH_MAX];
    side_apply(&w->trimmed, events, count, atomic, submitter, w->seq, w->timestamp, trimmed);
    side_apply(&w->twin, events, count, atomic, submitter, w->seq, w->timestamp, twin);
    bool refused = false;
    for (size_t i = 0; i < count; i++) {
        assert_results_equal(&trimmed[i], &twin[i]);
        refused |= !coffer_code_is_success(trimmed[i].code);
        w->compared++;
    }
    if (atomic && refused && count > 1 && w->trimmed.s.trimmed_seq > 0)
        w->rollbacks_after_trim++;
    w->seq += count;
    w->timestamp += count;
}

/* The next pending hold due at the world's time on `side`, stale heap entries popped. */
static bool due_hold(ledger_side *side, uint64_t now, uint32_t *hold)
{
    store_hold_ref due;
    while (store_hold_peek(&side->s, &due) && due.expires_at <= now) {
        if (side->s.transfers[due.transfer].state == COFFER_STATE_PENDING) {
            *hold = due.transfer;
            return true;
        }
        store_hold_pop(&side->s);
    }
    return false;
}

/* The engine's sweep, on both stores in step: the same holds expire in the same order. */
static void world_expire(world *w)
{
    for (;;) {
        uint32_t x = 0, y = 0;
        bool due_trimmed = due_hold(&w->trimmed, w->timestamp, &x);
        bool due_twin = due_hold(&w->twin, w->timestamp, &y);
        assert_int_equal(due_trimmed, due_twin);
        if (!due_trimmed)
            return;
        const store_transfer *tx = &w->trimmed.s.transfers[x], *ty = &w->twin.s.transfers[y];
        assert_int_equal(tx->id_len, ty->id_len);
        assert_memory_equal(store_transfer_id(&w->trimmed.s, tx), store_transfer_id(&w->twin.s, ty),
                            tx->id_len);
        coffer_result results[2];
        ledger_side *sides[2] = {&w->trimmed, &w->twin};
        uint32_t holds[2] = {x, y};
        for (int i = 0; i < 2; i++) {
            assert_int_equal(store_reserve(&sides[i]->s, 0, 0, 2, 0, 1), COFFER_OK);
            store_hold_pop(&sides[i]->s);
            ledger_expire(&sides[i]->l, holds[i], w->seq, w->timestamp, &results[i]);
        }
        assert_results_equal(&results[0], &results[1]);
        w->compared++;
        w->seq++;
        w->timestamp++;
    }
}

static void world_open(world *w, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    side_open(&w->trimmed);
    side_open(&w->twin);
    w->ids = calloc(IDS_MAX, sizeof *w->ids);
    assert_non_null(w->ids);
    w->seq = 1;
    w->timestamp = TEST_CLOCK_START_NS;
    w->random = seed;
    for (unsigned i = 0; i < ACCOUNTS; i++) {
        coffer_event e = {.op = COFFER_OP_CREATE_ACCOUNT, .id = account_name(i), .currency = "KRW"};
        if (i == 0)
            e.flags = COFFER_FLAG_MIN_UNBOUNDED;
        if (i >= 10) {
            e.flags = COFFER_FLAG_HAS_MAX;
            e.max_balance = 500;
        }
        if (i % 3 == 1) {
            e.metadata = "{\"tier\":\"gold\"}";
            e.metadata_len = (uint32_t)strlen(e.metadata);
        }
        world_apply(w, &e, 1, false);
    }
}

static void world_close(world *w)
{
    side_close(&w->trimmed);
    side_close(&w->twin);
    free(w->ids);
}

/* An id the trimmed store still holds, with a seq past its horizon, or null: a replay of it
 * must answer as the twin does. (Ids it evicted are the index's, out of this test's reach.) */
static const char *hot_id(world *w)
{
    if (w->ids_count == 0)
        return 0;
    const char *id = w->ids[w->ids_count - 1 - below(w, w->ids_count < 200 ? w->ids_count : 200)];
    const store *s = &w->trimmed.s;
    uint32_t index = store_transfer_find(s, id, strlen(id), store_hash(id, strlen(id)));
    return index != STORE_NONE && s->transfers[index].seq > s->trimmed_seq ? id : 0;
}

/* A hold to post or void: a pending one (kept whatever its seq), a resolved one past the
 * horizon (a hold_already_* rejection), or one that never existed. */
static const char *hold_target(world *w)
{
    const store *s = &w->trimmed.s;
    uint64_t choice = below(w, 10);
    if (choice == 0)
        return "no-such-hold";
    if (s->holds_count > 0 && choice < 7) {
        uint32_t index = s->holds[below(w, s->holds_count)].transfer;
        const store_transfer *t = &s->transfers[index];
        if (t->state == COFFER_STATE_PENDING || t->seq > s->trimmed_seq) {
            static char name[COFFER_TRANSFER_ID_MAX + 1];
            memcpy(name, store_transfer_id(s, t), t->id_len);
            name[t->id_len] = 0;
            return name;
        }
    }
    return hot_id(w);
}

/* Fills `e` with a random event; its id is new, or a hot replay. */
static void random_event(world *w, coffer_event *e, char *id)
{
    memset(e, 0, sizeof *e);
    const char *replay = below(w, 12) == 0 ? hot_id(w) : 0;
    if (replay) {
        strcpy(id, replay); /* the same event only when the op matches: else id_reused */
    } else {
        assert_true(w->ids_count < IDS_MAX);
        snprintf(id, 24, "t%llu", (unsigned long long)w->ids_count);
        strcpy(w->ids[w->ids_count++], id);
    }
    e->id = id;
    uint64_t kind = below(w, 10);
    if (kind < 2) {
        e->op = below(w, 2) ? COFFER_OP_POST : COFFER_OP_VOID;
        e->hold_id = hold_target(w);
        if (!e->hold_id)
            e->hold_id = "no-such-hold";
        if (e->op == COFFER_OP_POST && below(w, 2))
            e->amount = 1 + (int64_t)below(w, 60);
    } else {
        e->op = COFFER_OP_TRANSFER;
        unsigned from = (unsigned)below(w, ACCOUNTS), to = (unsigned)below(w, ACCOUNTS);
        if (below(w, 3) == 0)
            from = 0; /* the issuer funds the others */
        e->from = below(w, 40) == 0 ? "ghost" : account_name(from);
        e->to = account_name(to);
        e->amount = 1 + (int64_t)below(w, 120);
        if (kind < 5)
            e->hold_timeout_ms = 1 + below(w, HOLD_TIMEOUT_MS_MAX);
        if (below(w, 8) == 0)
            e->flags |= COFFER_FLAG_UP_TO;
        if (below(w, 10) == 0 && e->from[0] != 'g') {
            e->flags |= COFFER_FLAG_EXPECT_FROM;
            uint32_t account = store_account_find(&w->trimmed.s, e->from, strlen(e->from),
                                                  store_hash(e->from, strlen(e->from)));
            e->expect_from_version = w->trimmed.s.accounts[account].version + below(w, 2);
        }
    }
    if (below(w, 6) == 0) {
        e->metadata = "{\"note\":\"random\"}";
        e->metadata_len = (uint32_t)strlen(e->metadata);
    }
}

/* Some batches, with the clock moving so holds expire between them. */
static void world_run(world *w, unsigned batches)
{
    for (unsigned b = 0; b < batches; b++) {
        coffer_event events[BATCH_MAX];
        char ids[BATCH_MAX][24];
        size_t count = 1 + below(w, BATCH_MAX);
        for (size_t i = 0; i < count; i++)
            random_event(w, &events[i], ids[i]);
        world_apply(w, events, count, below(w, 5) == 0);
        if (below(w, 4) == 0) {
            w->timestamp += below(w, 10) * TEST_NS_PER_MS;
            world_expire(w);
        }
    }
}

/* ---- what memory answers, recorded before a trim ------------------------------------------- */

typedef struct seen_transfer {
    char id[COFFER_TRANSFER_ID_MAX + 1];
    char link[COFFER_TRANSFER_ID_MAX + 1]; /* the linked record's id, "" for none */
    store_transfer record;
    uint8_t aux[sizeof(store_aux) + COFFER_METADATA_MAX + 2 * COFFER_ACCOUNT_ID_MAX +
                COFFER_TRANSFER_ID_MAX];
    size_t aux_length;
} seen_transfer;

typedef struct seen_entry {
    uint64_t seq, timestamp;
    int64_t balance, available, delta;
    uint32_t ordinal;
    uint8_t kind, debit;
    char transfer[COFFER_TRANSFER_ID_MAX + 1];
} seen_entry;

typedef struct answers {
    seen_transfer *transfers;
    uint64_t transfers_count;
    seen_entry *entries; /* per account, its entries past the horizon */
    uint64_t entries_count;
    uint32_t first[ACCOUNTS + 1]; /* account i's entries: [first[i], first[i + 1]) */
    uint32_t hot_from[ACCOUNTS];  /* the lowest ordinal past the horizon */
    store_account accounts[ACCOUNTS];
    char metadata[ACCOUNTS][COFFER_METADATA_MAX];
    /* find_seq for every seq past the horizon: the ordinal found, or STORE_NONE when the
     * newest entry at that seq lies at or below the horizon (cold after the trim) */
    uint32_t *found;
    uint64_t found_from, found_count;
} answers;

static void copy_id(char *out, const store *s, uint32_t index)
{
    out[0] = 0;
    if (index == STORE_NONE)
        return;
    const store_transfer *t = &s->transfers[index];
    memcpy(out, store_transfer_id(s, t), t->id_len);
    out[t->id_len] = 0;
}

static void transfer_see(const store *s, uint32_t index, seen_transfer *out)
{
    const store_transfer *t = &s->transfers[index];
    copy_id(out->id, s, index);
    copy_id(out->link, s, t->link);
    out->record = *t;
    const store_aux *aux = store_transfer_aux(s, t);
    out->aux_length =
        aux ? sizeof *aux + aux->metadata_len + aux->from_len + aux->to_len + aux->hold_len : 0;
    if (aux)
        memcpy(out->aux, aux, out->aux_length);
}

static void entry_see(const store *s, uint32_t index, seen_entry *out)
{
    const store_history *h = &s->history[index];
    *out = (seen_entry){h->seq,
                        store_history_timestamp(s, h),
                        h->balance,
                        h->available,
                        store_history_delta(s, h),
                        h->ordinal,
                        h->kind,
                        h->debit,
                        {0}};
    copy_id(out->transfer, s, h->transfer);
}

static void see(const store *s, uint64_t horizon, uint64_t last_seq, answers *out)
{
    memset(out, 0, sizeof *out);
    out->transfers = calloc(s->transfers_count + 1, sizeof *out->transfers);
    out->entries = calloc(s->history_count + 1, sizeof *out->entries);
    assert_true(out->transfers && out->entries);
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        bool pending = t->op == COFFER_OP_TRANSFER && t->state == COFFER_STATE_PENDING;
        if (t->seq > horizon || pending)
            transfer_see(s, (uint32_t)i, &out->transfers[out->transfers_count++]);
    }
    for (uint32_t a = 0; a < ACCOUNTS; a++) {
        out->accounts[a] = s->accounts[a];
        memcpy(out->metadata[a], s->arena + s->accounts[a].metadata_offset,
               s->accounts[a].metadata_len);
        out->first[a] = (uint32_t)out->entries_count;
        /* What stays: the entries past the horizon, and the newest one at or before it. */
        uint32_t count = s->accounts[a].history_count, past = count;
        for (uint32_t ordinal = store_history_hot_from(s, a); ordinal < count; ordinal++) {
            uint32_t entry = store_history_at_ordinal(s, a, ordinal);
            assert_int_not_equal(entry, STORE_NONE);
            if (s->history[entry].seq > horizon && past == count)
                past = ordinal;
        }
        uint32_t hot_from = past > 0 ? past - 1 : past;
        for (uint32_t ordinal = hot_from; ordinal < count; ordinal++)
            entry_see(s, store_history_at_ordinal(s, a, ordinal),
                      &out->entries[out->entries_count++]);
        out->hot_from[a] = hot_from;
    }
    out->first[ACCOUNTS] = (uint32_t)out->entries_count;
    out->found_from = horizon + 1;
    out->found_count = last_seq > horizon ? last_seq - horizon : 0;
    out->found = calloc(ACCOUNTS * out->found_count + 1, sizeof *out->found);
    assert_non_null(out->found);
    for (uint32_t a = 0; a < ACCOUNTS; a++)
        for (uint64_t i = 0; i < out->found_count; i++) {
            /* Past the horizon every answer stays in memory (each account keeps its newest
             * entry at or before it). */
            uint32_t entry = store_history_find_seq(s, a, out->found_from + i);
            out->found[a * out->found_count + i] =
                entry != STORE_NONE ? s->history[entry].ordinal : STORE_NONE;
        }
}

static void seen_free(answers *seen)
{
    free(seen->transfers);
    free(seen->entries);
    free(seen->found);
}

static void assert_transfer_seen(const store *s, const seen_transfer *want)
{
    size_t length = strlen(want->id);
    uint32_t index = store_transfer_find(s, want->id, length, store_hash(want->id, length));
    assert_int_not_equal(index, STORE_NONE);
    seen_transfer got;
    transfer_see(s, index, &got);
    const store_transfer *x = &got.record, *y = &want->record;
    assert_int_equal(x->seq, y->seq);
    assert_int_equal(x->timestamp, y->timestamp);
    assert_int_equal(x->amount, y->amount);
    assert_int_equal(x->amount_requested, y->amount_requested);
    assert_int_equal(x->expires_at, y->expires_at);
    assert_int_equal(x->from, y->from);
    assert_int_equal(x->to, y->to);
    assert_int_equal(x->code, y->code);
    assert_int_equal(x->op, y->op);
    assert_int_equal(x->state, y->state);
    assert_int_equal(x->flags, y->flags);
    assert_int_equal(x->field, y->field);
    assert_int_equal(x->submitter, y->submitter);
    assert_int_equal(x->id_len, y->id_len);
    assert_int_equal(got.aux_length, want->aux_length);
    assert_memory_equal(got.aux, want->aux, want->aux_length);
    /* Whatever a kept record links to stays with it. */
    assert_string_equal(got.link, want->link);
}

static void assert_entry_seen(const seen_entry *x, const seen_entry *y)
{
    assert_int_equal(x->seq, y->seq);
    assert_int_equal(x->timestamp, y->timestamp);
    assert_int_equal(x->balance, y->balance);
    assert_int_equal(x->available, y->available);
    assert_int_equal(x->delta, y->delta);
    assert_int_equal(x->ordinal, y->ordinal);
    assert_int_equal(x->kind, y->kind);
    assert_int_equal(x->debit, y->debit);
    assert_string_equal(x->transfer, y->transfer);
}

static void assert_account_seen(const store *s, uint32_t a, const answers *seen)
{
    const store_account *x = &s->accounts[a], *y = &seen->accounts[a];
    assert_int_equal(x->debits_posted, y->debits_posted);
    assert_int_equal(x->credits_posted, y->credits_posted);
    assert_int_equal(x->debits_held, y->debits_held);
    assert_int_equal(x->credits_held, y->credits_held);
    assert_int_equal(x->version, y->version);
    assert_int_equal(x->history_count, y->history_count);
    assert_int_equal(x->holds_pending, y->holds_pending);
    assert_int_equal(x->metadata_len, y->metadata_len);
    assert_memory_equal(s->arena + x->metadata_offset, seen->metadata[a], y->metadata_len);
}

/* Everything recorded is answered the same, and nothing colder is. */
static void assert_seen(const store *s, const answers *seen)
{
    for (uint64_t i = 0; i < seen->transfers_count; i++)
        assert_transfer_seen(s, &seen->transfers[i]);
    for (uint32_t a = 0; a < ACCOUNTS; a++) {
        assert_account_seen(s, a, seen);
        assert_int_equal(store_history_hot_from(s, a), seen->hot_from[a]);
        if (seen->hot_from[a] > 0)
            assert_int_equal(store_history_at_ordinal(s, a, seen->hot_from[a] - 1), STORE_NONE);
        for (uint32_t i = seen->first[a]; i < seen->first[a + 1]; i++) {
            const seen_entry *want = &seen->entries[i];
            uint32_t entry = store_history_at_ordinal(s, a, want->ordinal);
            assert_int_not_equal(entry, STORE_NONE);
            seen_entry got;
            entry_see(s, entry, &got);
            assert_entry_seen(&got, want);
            /* By time as by seq: the newest entry at its own timestamp is itself or newer
             * with the same one; at its seq, itself. */
            uint32_t at_time = store_history_find_timestamp(s, a, want->timestamp);
            assert_int_not_equal(at_time, STORE_NONE);
            assert_int_equal(store_history_timestamp(s, &s->history[at_time]), want->timestamp);
        }
        for (uint64_t i = 0; i < seen->found_count; i++) {
            uint32_t entry = store_history_find_seq(s, a, seen->found_from + i);
            uint32_t want = seen->found[a * seen->found_count + i];
            assert_int_equal(entry == STORE_NONE ? STORE_NONE : s->history[entry].ordinal, want);
        }
    }
}

/* Every transfer still held is past the horizon, a pending hold, or needed by one that is. */
static void assert_only_needed_kept(const store *s, uint64_t horizon)
{
    bool *needed = calloc(s->transfers_count + 1, sizeof *needed);
    assert_non_null(needed);
    for (uint64_t i = 0; i < s->history_count; i++)
        needed[s->history[i].transfer] = true;
    for (uint64_t i = 0; i < s->expiries_count; i++)
        needed[s->expiries[i].hold] = true;
    /* Newest first: a post or void names an older record, itself kept when it is named; a
     * kept hold keeps its newer post or void, marked in the pass before. */
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        const store_transfer *t = &s->transfers[i];
        if (t->op == COFFER_OP_TRANSFER && t->link != STORE_NONE)
            needed[t->link] = true;
    }
    for (uint64_t i = s->transfers_count; i-- > 0;) {
        const store_transfer *t = &s->transfers[i];
        bool pending = t->op == COFFER_OP_TRANSFER && t->state == COFFER_STATE_PENDING;
        assert_true(t->seq > horizon || pending || needed[i]);
        if (t->op != COFFER_OP_TRANSFER && t->link != STORE_NONE)
            needed[t->link] = true;
        if (pending)
            assert_true(t->expires_at != 0);
    }
    uint64_t pending = 0;
    for (uint64_t i = 0; i < s->holds_count; i++)
        pending += s->transfers[s->holds[i].transfer].state == COFFER_STATE_PENDING;
    assert_int_equal(pending, s->holds_pending);
    assert_int_equal(s->holds_count, s->holds_pending); /* rebuilt without stale entries */
    /* At or before the horizon, each account keeps its newest entry only (and that entry's
     * expiry, for its time). */
    for (uint64_t a = 0; a < s->accounts_count; a++) {
        uint32_t entry = s->accounts[a].history_last;
        while (entry != STORE_NONE && s->history[entry].seq > horizon)
            entry = s->history[entry].previous;
        if (entry != STORE_NONE)
            assert_int_equal(s->history[entry].previous, STORE_NONE);
    }
    for (uint64_t i = 0; i < s->expiries_count; i++) {
        bool named = false;
        for (uint64_t j = 0; j < s->history_count && !named; j++)
            named = s->history[j].seq == s->expiries[i].seq;
        assert_true(s->expiries[i].seq > horizon || named);
    }
    free(needed);
}

/* Ids issued that the trimmed store no longer finds were all at or below the horizon. */
static uint64_t assert_evicted_cold(world *w)
{
    const store *s = &w->trimmed.s, *twin = &w->twin.s;
    uint64_t gone = 0;
    for (uint64_t i = 0; i < w->ids_count; i++) {
        const char *id = w->ids[i];
        size_t length = strlen(id);
        uint64_t hash = store_hash(id, length);
        uint32_t there = store_transfer_find(twin, id, length, hash);
        uint32_t here = store_transfer_find(s, id, length, hash);
        if (there == STORE_NONE) { /* an atomic batch's rollback took it back */
            assert_int_equal(here, STORE_NONE);
            continue;
        }
        if (here == STORE_NONE) {
            assert_true(twin->transfers[there].seq <= s->trimmed_seq);
            gone++;
        }
    }
    return gone;
}

static void assert_verified(const store *s)
{
    coffer_verify_report report;
    assert_int_equal(engine_verify_store(s, &report), COFFER_OK);
    if (!report.ok)
        fail_msg("verify: %s", report.problems[0]);
    assert_true(store_check_references(s));
}

/* Trims `w`'s store at `horizon`, checking everything above. */
static void world_trim(world *w, uint64_t horizon, bool expect_eviction)
{
    store *s = &w->trimmed.s;
    answers before;
    see(s, horizon > s->trimmed_seq ? horizon : s->trimmed_seq, w->seq - 1, &before);
    uint64_t used = s->budget.used, transfers = s->transfers_count;
    store_trim_stats stats;
    assert_int_equal(store_trim(s, horizon, &stats), COFFER_OK);
    assert_true(s->trimmed_seq >= horizon);
    assert_int_equal(stats.transfers_kept, s->transfers_count);
    assert_int_equal(stats.transfers_kept + stats.transfers_evicted, transfers);
    assert_true(stats.transfers_kept >= before.transfers_count);
    assert_seen(s, &before);
    assert_only_needed_kept(s, s->trimmed_seq);
    assert_verified(s);
    if (expect_eviction) {
        assert_true(stats.transfers_evicted > 0 && stats.history_evicted > 0);
        assert_true(stats.arena_bytes_freed > 0);
        assert_true(stats.bytes_freed > 0 && s->budget.used < used);
        assert_true(assert_evicted_cold(w) > 0);
    } else {
        assert_evicted_cold(w);
    }
    assert_int_equal(stats.bytes_freed, used - s->budget.used);
    seen_free(&before);
}

/* The stores agree on everything the trimmed one holds; the twin holds the rest. */
static void assert_twins(world *w)
{
    const store *s = &w->trimmed.s, *twin = &w->twin.s;
    for (uint64_t i = 0; i < s->transfers_count; i++) {
        seen_transfer here, there;
        transfer_see(s, (uint32_t)i, &here);
        uint32_t index = store_transfer_find(twin, here.id, strlen(here.id),
                                             store_hash(here.id, strlen(here.id)));
        assert_int_not_equal(index, STORE_NONE);
        transfer_see(twin, index, &there);
        assert_transfer_seen(s, &there);
    }
    answers all;
    see(twin, s->trimmed_seq, w->seq - 1, &all);
    for (uint32_t a = 0; a < ACCOUNTS; a++)
        assert_account_seen(s, a, &all);
    assert_seen(s, &all);
    seen_free(&all);
    assert_int_equal(s->holds_pending, twin->holds_pending);
    assert_verified(twin);
}

static void test_trim_matches_an_untrimmed_twin(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        world *w = calloc(1, sizeof *w);
        assert_non_null(w);
        world_open(w, seed * 0x9E3779B97F4A7C15ULL);
        world_run(w, 2000);
        assert_verified(&w->trimmed.s);
        /* Nothing evictable yet: a trim at 0 changes nothing. */
        world_trim(w, 0, false);
        assert_int_equal(w->trimmed.s.trimmed_seq, 0);
        world_trim(w, w->seq * 3 / 4, true);
        assert_twins(w);
        /* The same horizon again: only what resolved since may go. */
        world_trim(w, w->trimmed.s.trimmed_seq, false);
        world_run(w, 1500);
        assert_twins(w);
        world_trim(w, w->seq - 200, true);
        assert_twins(w);
        /* A lower horizon than before trims at the old one. */
        world_trim(w, 5, false);
        world_run(w, 800);
        world_trim(w, w->seq - 1, true);
        assert_twins(w);
        world_run(w, 300);
        assert_twins(w);
        assert_true(w->compared > 4000);
        assert_true(w->rollbacks_after_trim > 10);
        world_close(w);
        free(w);
    }
}

static uint32_t find(const store *s, const char *id)
{
    return store_transfer_find(s, id, strlen(id), store_hash(id, strlen(id)));
}

/* A retry of a post, refused after the horizon, keeps the hold it names, which keeps the post
 * that captured it (a read of the hold shows the captured amount from there); a post of a
 * plain transfer, refused, keeps what it named too. */
static void test_trim_keeps_what_a_refusal_names(void **state)
{
    (void)state;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    world_open(w, 3);
    coffer_event fund = {
        .op = COFFER_OP_TRANSFER, .id = "fund", .from = "bank", .to = "a1", .amount = 100};
    coffer_event hold = {.op = COFFER_OP_TRANSFER,
                         .id = "h",
                         .from = "a1",
                         .to = "a2",
                         .amount = 40,
                         .hold_timeout_ms = 60000};
    coffer_event post = {.op = COFFER_OP_POST, .id = "p", .hold_id = "h", .amount = 25};
    coffer_event filler = {
        .op = COFFER_OP_TRANSFER, .id = "f", .from = "bank", .to = "a3", .amount = 1};
    world_apply(w, &fund, 1, false);
    world_apply(w, &hold, 1, false);
    world_apply(w, &post, 1, false);
    world_apply(w, &filler, 1, false);
    /* The newest entry of bank and a3 at the horizon: it stays, "f" goes. */
    coffer_event newest = {
        .op = COFFER_OP_TRANSFER, .id = "g", .from = "bank", .to = "a3", .amount = 1};
    world_apply(w, &newest, 1, false);
    uint64_t horizon = w->seq - 1;
    coffer_event retry = {.op = COFFER_OP_POST, .id = "p2", .hold_id = "h"};
    coffer_event wrong = {.op = COFFER_OP_VOID, .id = "v", .hold_id = "fund"};
    world_apply(w, &retry, 1, false);
    world_apply(w, &wrong, 1, false);
    const char *const ids[] = {"fund", "h", "p", "f", "g", "p2", "v"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        strcpy(w->ids[w->ids_count++], ids[i]);
    const store *s = &w->trimmed.s;
    assert_int_equal(s->transfers[find(s, "p2")].code, COFFER_HOLD_ALREADY_POSTED);
    assert_int_not_equal(s->transfers[find(s, "v")].code, COFFER_CREATED);
    world_trim(w, horizon, true);
    assert_int_equal(find(s, "f"), STORE_NONE);
    uint32_t h = find(s, "h"), p = find(s, "p");
    assert_int_not_equal(h, STORE_NONE);
    assert_int_not_equal(p, STORE_NONE);
    assert_int_equal(s->transfers[h].link, p);
    assert_int_equal(s->transfers[p].link, h);
    assert_int_equal(s->transfers[s->transfers[h].link].amount, 25);
    assert_int_equal(s->transfers[find(s, "v")].link, find(s, "fund"));
    assert_int_not_equal(find(s, "fund"), STORE_NONE);
    assert_twins(w);
    world_close(w);
    free(w);
}

/* A trim of everything: every account's history cold, nothing but pending holds left, and
 * appends start again from the absolute ordinals. */
static void test_trim_everything_then_append(void **state)
{
    (void)state;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    world_open(w, 77);
    world_run(w, 600);
    w->timestamp += 1000 * TEST_NS_PER_MS;
    world_expire(w); /* every hold expired: nothing pending */
    assert_int_equal(w->trimmed.s.holds_pending, 0);
    world_trim(w, w->seq - 1, true);
    const store *s = &w->trimmed.s;
    /* Each account keeps its newest entry (and the event it names, an expiry its time). */
    assert_true(s->history_count <= ACCOUNTS);
    assert_true(s->transfers_count <= ACCOUNTS);
    assert_true(s->expiries_count <= ACCOUNTS);
    for (uint32_t a = 0; a < ACCOUNTS; a++) {
        uint32_t count = s->accounts[a].history_count, last = s->accounts[a].history_last;
        if (count == 0) {
            assert_int_equal(last, STORE_NONE);
            continue;
        }
        assert_int_not_equal(last, STORE_NONE);
        assert_int_equal(s->history[last].previous, STORE_NONE);
        assert_int_equal(s->history[last].ordinal, count - 1);
        assert_int_equal(store_history_hot_from(s, a), count - 1);
        assert_int_equal(store_history_find_seq(s, a, w->seq), last);
    }
    world_run(w, 400);
    assert_twins(w);
    world_close(w);
    free(w);
}

/* Sets a snapshot's format version to 3 and seals it again (header offset 8; the hash, the
 * last 32 bytes, covers everything before it). */
static void rewrite_as_format_3(const char *path)
{
    FILE *file = fopen(path, "r+b");
    assert_non_null(file);
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long size = ftell(file);
    uint8_t *bytes = malloc((size_t)size);
    assert_non_null(bytes);
    rewind(file);
    assert_int_equal(fread(bytes, 1, (size_t)size, file), (size_t)size);
    assert_int_equal(bytes[8], 4);
    bytes[8] = 3;
    crypto_generichash(bytes + size - 32, 32, bytes, (unsigned long long)size - 32, 0, 0);
    rewind(file);
    assert_int_equal(fwrite(bytes, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    free(bytes);
}

/* A snapshot of a trimmed store keeps trimmed_seq and loads as what memory held. */
static void test_trim_snapshot_round_trip(void **state)
{
    (void)state;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    world_open(w, 5);
    world_run(w, 800);
    world_trim(w, w->seq / 2, true);
    char dir[] = "/tmp/coffer-test-trim-XXXXXX";
    assert_non_null(mkdtemp(dir));
    snapshot_meta meta = {{w->seq - 1, w->timestamp - 1, {0}}, w->seq - 1, w->timestamp - 1};
    char error[1024];
    assert_int_equal(snapshot_write(&w->trimmed.s, &meta, dir, error, sizeof error), COFFER_OK);
    ledger_side loaded;
    side_open(&loaded);
    snapshot_meta read;
    bool found = false;
    char skipped[1024] = {0};
    assert_int_equal(snapshot_load_latest(&loaded.s, dir, &read, &found, skipped, sizeof skipped),
                     COFFER_OK);
    assert_true(found);
    assert_int_equal(loaded.s.trimmed_seq, w->trimmed.s.trimmed_seq);
    answers all;
    see(&w->trimmed.s, w->trimmed.s.trimmed_seq, w->seq - 1, &all);
    assert_seen(&loaded.s, &all);
    seen_free(&all);
    assert_verified(&loaded.s);
    side_close(&loaded);
    /* The same file as format 3 (the records are laid out alike): read as never trimmed. */
    char path[256];
    snprintf(path, sizeof path, "%s/snapshot-%020llu.cfs", dir, (unsigned long long)(w->seq - 1));
    rewrite_as_format_3(path);
    side_open(&loaded);
    assert_int_equal(snapshot_load(&loaded.s, path, &read, error, sizeof error), COFFER_OK);
    assert_int_equal(loaded.s.trimmed_seq, 0);
    side_close(&loaded);
    snapshot_prune(dir, 0);
    rmdir(dir);
    world_close(w);
    free(w);
}

/* verify still finds a broken chain on an untrimmed store, and a missing entry on a trimmed
 * one that claims none were evicted. */
static void test_verify_catches_chain_damage(void **state)
{
    (void)state;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    world_open(w, 11);
    world_run(w, 200);
    store *s = &w->twin.s;
    coffer_verify_report report;
    uint32_t last = s->accounts[1].history_last;
    uint32_t previous = s->history[last].previous;
    s->history[last].previous = STORE_NONE;
    assert_int_equal(engine_verify_store(s, &report), COFFER_OK);
    assert_false(report.ok);
    s->history[last].previous = previous;
    assert_int_equal(engine_verify_store(s, &report), COFFER_OK);
    assert_true(report.ok);
    world_trim(w, w->seq / 2, true);
    s = &w->trimmed.s;
    s->trimmed_seq = 0; /* as if nothing had been evicted: the chains are short */
    assert_int_equal(engine_verify_store(s, &report), COFFER_OK);
    assert_false(report.ok);
    world_close(w);
    free(w);
}

/* The engine lowers the budget as the index's filter grows, possibly below what the tables
 * already use: then nothing more is committed until an eviction makes room (the difference
 * once wrapped around, and the tables grew to nearly twice the budget). */
static void test_budget_lowered_below_use_refuses_growth(void **state)
{
    (void)state;
    store s;
    store_limits limits = {64, 1u << 20, 64ULL << 20};
    assert_int_equal(store_init(&s, &limits), COFFER_OK);
    assert_int_equal(store_reserve(&s, 0, 1000, 0, 0, 0), COFFER_OK);
    uint64_t used = s.budget.used, capacity = s.transfers_capacity;
    assert_true(used > 0 && capacity >= 1000 && capacity < limits.transfers_max / 2);
    s.budget.max = 4096; /* below even the indexes' first tables, which stay committed */
    assert_int_equal(store_reserve(&s, 0, capacity + 1000, 0, 0, 0), COFFER_CAPACITY_EXCEEDED);
    assert_int_equal(s.refusal, STORE_REFUSAL_MEMORY);
    assert_true(s.budget.used <= used && s.budget.used > s.budget.max);
    assert_true(s.transfers_capacity <= capacity);
    s.budget.max = limits.memory_max; /* room again: the same reservation goes through */
    assert_int_equal(store_reserve(&s, 0, capacity + 1000, 0, 0, 0), COFFER_OK);
    assert_true(s.budget.used > used);
    store_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trim_matches_an_untrimmed_twin),
        cmocka_unit_test(test_trim_keeps_what_a_refusal_names),
        cmocka_unit_test(test_trim_everything_then_append),
        cmocka_unit_test(test_trim_snapshot_round_trip),
        cmocka_unit_test(test_verify_catches_chain_damage),
        cmocka_unit_test(test_budget_lowered_below_use_refuses_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
