/*
 * model_test.c — the randomized model test. One seeded stream of batches goes to the engine
 * (with an injected fake clock) and to the reference ledger in reference.c; every result must
 * agree field by field, and every few batches the whole state must agree too (accounts now and
 * in the past, transfers, history pages, pending holds, verify, stats). A failure prints both
 * sides and the command that replays it.
 *
 *   model_test [--seeds N | --seed S] [--start S] [--events M] [--durable] [--verbose]
 *              [--skip NAME]...
 *
 * --durable runs each seed in a fresh data directory and closes and recovers the engine every
 * REOPEN_EVERY_BATCHES batches; --skip tolerates one known engine discrepancy (skip_names).
 * --memory-max BYTES (durable only) gives the engine that memory budget with its on-disk index
 * on, so that a long stream makes it evict what the index holds and answer retries, reads and
 * recovery from the index; --check-every and --reopen-every N space out the full state checks
 * and the reopens (in batches), which read every transfer and would make long streams slow.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coffer.h"
#include "files.h"
#include "model/generator.h"
#include "model/reference.h"

#define CLOCK_START_NS 1700000000000000000ULL
#define STATE_CHECK_EVERY_BATCHES 50
#define HISTORY_PAGE_ENTRIES 3 /* small, so that paging is exercised on every account */
#define HOLDS_LIST_MAX 512
#define PAST_READS_PER_CHECK 4
#define READ_CLOCK_JUMP_NS (200ULL * 1000 * 1000)
#define REOPEN_EVERY_BATCHES 100 /* --durable: close and recover this often */

/*
 * Known engine discrepancies that can be skipped with --skip NAME so that a run gets past them
 * and finds the next one. Every one is a failure by default: it disagrees with the docs.
 */
enum skip {
    SKIP_KIND_FIELD = 1 << 0, /* plain vs hold retry: engine names /from../amount first */
};

static const struct {
    const char *name;
    unsigned bit;
} skip_names[] = {
    {"kind-field", SKIP_KIND_FIELD},
};

/* What the command line asked for. */
typedef struct model_options {
    uint64_t first_seed;
    uint64_t seed_count;
    size_t events_max;
    bool verbose;
    bool durable;        /* a data directory per seed, closed and reopened every few batches */
    uint64_t memory_max; /* durable: the engine's memory budget with its index on; 0: default */
    size_t check_every;  /* batches between full state checks */
    size_t reopen_every; /* durable: batches between reopens */
    unsigned skips;      /* enum skip */
} model_options;

typedef struct run {
    const model_options *options;
    uint64_t seed;
    char dir[64]; /* durable: the seed's data directory; empty in memory */
    coffer_options engine_options;
    coffer *db;
    ref_ledger *reference;
    gen *generator;
    uint64_t clock_ns; /* the engine's clock: read by its writer thread through fake_clock() */
    size_t batch_index;
    uint64_t codes[COFFER_CODE_LIMIT]; /* reference results by code, for --verbose coverage */
    uint64_t replays;
    uint64_t expiries;
    uint64_t overloaded; /* submissions refused while the index caught up (--memory-max) */
    uint64_t trims, trimmed_transfers, cold_reads; /* the engine's, read before it closes */
} run;

static uint64_t fake_clock(void *context)
{
    return __atomic_load_n((const uint64_t *)context, __ATOMIC_ACQUIRE);
}

__attribute__((format(printf, 2, 3))) static bool fail(const run *r, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "model_test: seed %" PRIu64 ", batch %zu: ", r->seed, r->batch_index);
    vfprintf(stderr, format, arguments);
    fprintf(stderr, "\nrerun: model_test --seed %" PRIu64 " --events %zu%s", r->seed,
            r->options->events_max, r->options->durable ? " --durable" : "");
    for (size_t i = 0; i < sizeof skip_names / sizeof skip_names[0]; i++) {
        if (r->options->skips & skip_names[i].bit)
            fprintf(stderr, " --skip %s", skip_names[i].name);
    }
    fprintf(stderr, "\n");
    va_end(arguments);
    return false;
}

static const char *code_name(int code)
{
    const char *name = coffer_code_name(code);
    return name != NULL ? name : "?";
}

static const char *text(const char *string)
{
    return string != NULL ? string : "(null)";
}

/* NULL and "" are the same absent string. */
static bool same_string(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                   */

static void print_event(size_t index, const coffer_event *e)
{
    static const char *const ops[] = {"op0",  "create_account", "transfer",
                                      "post", "void",           "expire"};
    const char *op = e->op <= COFFER_OP_EXPIRE ? ops[e->op] : "op?";
    fprintf(stderr, "  [%zu] %s id=%.40s", index, op, text(e->id));
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        fprintf(stderr, " currency=%s min=%" PRId64 " max=%" PRId64, text(e->currency),
                e->min_balance, e->max_balance);
    } else if (e->op == COFFER_OP_POST || e->op == COFFER_OP_VOID) {
        fprintf(stderr, " hold=%.40s amount=%" PRId64, text(e->hold_id), e->amount);
    } else {
        fprintf(stderr, " from=%.30s to=%.30s amount=%" PRId64 " timeout_ms=%" PRIu64,
                text(e->from), text(e->to), e->amount, e->hold_timeout_ms);
        fprintf(stderr, " expect=%" PRIu64 "/%" PRIu64, e->expect_from_version,
                e->expect_to_version);
    }
    fprintf(stderr, " flags=0x%x metadata_len=%u\n", e->flags, e->metadata_len);
}

static void print_result(const char *label, const coffer_result *r)
{
    fprintf(stderr,
            "      %-9s %s%s state=%u field=%s seq=%" PRIu64 " ts=%" PRIu64 " amount=%" PRId64
            " expires_at=%" PRIu64 " actual_version=%" PRIu64 " available=%" PRId64
            " from=(%" PRId64 ",%" PRId64 ",v%" PRIu64 ") to=(%" PRId64 ",%" PRId64 ",v%" PRIu64
            ")\n",
            label, code_name(r->code), r->replayed ? " (replayed)" : "", r->state, text(r->field),
            r->seq, r->timestamp, r->amount, r->expires_at, r->actual_version, r->available,
            r->from.balance, r->from.available, r->from.version, r->to.balance, r->to.available,
            r->to.version);
}

static bool same_after(const coffer_account_after *a, const coffer_account_after *b)
{
    return a->balance == b->balance && a->available == b->available && a->version == b->version;
}

/* The codes whose `field` the docs define; for others the engine may name a field or not. */
static bool field_documented(int code)
{
    return code == COFFER_INVALID_FIELD || code == COFFER_ID_REUSED ||
           code == COFFER_VERSION_MISMATCH || code == COFFER_ACCOUNT_NOT_FOUND;
}

static bool field_compared(const run *r, const coffer_result *expected)
{
    if (!field_documented(expected->code))
        return false;
    bool kind_change =
        expected->code == COFFER_ID_REUSED && same_string(expected->field, "/hold/timeout_ms");
    return !(kind_change && (r->options->skips & SKIP_KIND_FIELD));
}

/*
 * The first field in which the engine's result differs from the reference's, or NULL.
 * Compared only where docs/semantics.md and coffer.h pin the value down: `field` for the codes
 * that carry one, the timestamp and
 * state of events that recorded something, expires_at of holds, actual_version and available
 * with the codes that carry them, and the accounts after a success.
 */
static const char *result_difference(const run *r, const coffer_event *event,
                                     const coffer_result *expected, const coffer_result *actual)
{
    if (actual->code != expected->code)
        return "code";
    if (actual->replayed != expected->replayed)
        return "replayed";
    if (field_compared(r, expected) && !same_string(actual->field, expected->field)) {
        return "field";
    }
    if (actual->seq != expected->seq)
        return "seq";
    if (expected->seq != 0 && actual->timestamp != expected->timestamp)
        return "timestamp";
    if (expected->seq != 0 && actual->state != expected->state)
        return "state";
    if (actual->amount != expected->amount)
        return "amount";
    if (expected->expires_at != 0 && actual->expires_at != expected->expires_at) {
        return "expires_at";
    }
    if (expected->code == COFFER_VERSION_MISMATCH &&
        actual->actual_version != expected->actual_version) {
        return "actual_version";
    }
    if (expected->code == COFFER_INSUFFICIENT_BALANCE && actual->available != expected->available) {
        return "available";
    }
    bool success = expected->code == COFFER_CREATED || expected->code == COFFER_EXISTS;
    if (success && event->op != COFFER_OP_CREATE_ACCOUNT) {
        if (!same_after(&actual->from, &expected->from))
            return "from";
        if (!same_after(&actual->to, &expected->to))
            return "to";
    }
    return NULL;
}

static bool report_batch(const run *r, const coffer_event *events, size_t count, bool atomic,
                         const coffer_result *expected, const coffer_result *actual)
{
    fprintf(stderr,
            "batch: %s, %zu events after %zu expire events; reference seq now %" PRIu64
            ", clock %" PRIu64 "\n",
            atomic ? "atomic" : "non-atomic", count, ref_last_sweep_count(r->reference),
            ref_last_seq(r->reference), r->clock_ns);
    for (size_t i = 0; i < count; i++) {
        print_event(i, &events[i]);
        print_result("reference", &expected[i]);
        print_result("engine", &actual[i]);
    }
    return false;
}

static void print_transfer(const char *label, const coffer_transfer *t);

/* The recorded outcome of an event's id on both sides, to see what a retry is compared with. */
static void print_recorded(run *r, const coffer_event *event)
{
    coffer_transfer expected, actual;
    if (event->id == NULL || event->op == COFFER_OP_CREATE_ACCOUNT)
        return;
    fprintf(stderr, "recorded under %.40s:\n", event->id);
    if (ref_transfer_get(r->reference, event->id, &expected) == COFFER_OK) {
        print_transfer("reference", &expected);
    }
    if (coffer_transfer_get(r->db, event->id, &actual) == COFFER_OK) {
        print_transfer("engine", &actual);
    }
}

static bool submit_and_compare(run *r, const coffer_event *events, size_t count, bool atomic)
{
    coffer_result actual[GEN_BATCH_MAX], expected[GEN_BATCH_MAX];
    memset(actual, 0, sizeof actual);
    int code = coffer_submit(r->db, events, count, atomic, actual);
    /* With a memory budget, a batch may find memory full while the index catches up: it is
     * refused whole (nothing applied) and retried, as a client would. */
    for (int waited_ms = 0;
         code == COFFER_OVERLOADED && r->options->memory_max && waited_ms < 60000; waited_ms++) {
        r->overloaded++;
        usleep(1000);
        memset(actual, 0, sizeof actual);
        code = coffer_submit(r->db, events, count, atomic, actual);
    }
    ref_submit(r->reference, events, count, atomic, r->clock_ns, expected);
    if (code != COFFER_OK) {
        report_batch(r, events, count, atomic, expected, actual);
        return fail(r, "coffer_submit returned %s", code_name(code));
    }
    for (size_t i = 0; i < count; i++) {
        const char *difference = result_difference(r, &events[i], &expected[i], &actual[i]);
        if (difference == NULL)
            continue;
        report_batch(r, events, count, atomic, expected, actual);
        print_recorded(r, &events[i]);
        return fail(r, "event %zu: results differ in %s", i, difference);
    }
    for (size_t i = 0; i < count; i++) {
        r->codes[expected[i].code < COFFER_CODE_LIMIT ? expected[i].code : 0]++;
        r->replays += expected[i].replayed;
    }
    r->expiries += ref_last_sweep_count(r->reference);
    if (r->options->verbose) {
        fprintf(stderr, "batch %zu: %zu events%s, %zu expired, seq %" PRIu64 "\n", r->batch_index,
                count, atomic ? " atomic" : "", ref_last_sweep_count(r->reference),
                ref_last_seq(r->reference));
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* State: accounts                                                                           */

#define DIFFERENT(name) (expected->name != actual->name)

static const char *account_difference(const coffer_account *expected, const coffer_account *actual)
{
    if (strcmp(expected->id, actual->id) != 0)
        return "id";
    if (strcmp(expected->currency, actual->currency) != 0)
        return "currency";
    if (DIFFERENT(min_unbounded))
        return "min_unbounded";
    if (DIFFERENT(has_max))
        return "has_max";
    /* The number behind an unbounded floor or an absent cap means nothing. */
    if (!expected->min_unbounded && DIFFERENT(min_balance))
        return "min_balance";
    if (expected->has_max && DIFFERENT(max_balance))
        return "max_balance";
    if (DIFFERENT(debits_posted))
        return "debits_posted";
    if (DIFFERENT(credits_posted))
        return "credits_posted";
    if (DIFFERENT(debits_held))
        return "debits_held";
    if (DIFFERENT(credits_held))
        return "credits_held";
    if (DIFFERENT(balance))
        return "balance";
    if (DIFFERENT(available))
        return "available";
    if (DIFFERENT(version))
        return "version";
    if (DIFFERENT(created_seq))
        return "created_seq";
    if (DIFFERENT(created_at))
        return "created_at";
    if (DIFFERENT(metadata_len))
        return "metadata_len";
    if (memcmp(expected->metadata, actual->metadata, expected->metadata_len) != 0) {
        return "metadata";
    }
    return NULL;
}

static void print_account(const char *label, const coffer_account *a)
{
    fprintf(stderr,
            "  %-9s posted -%" PRId64 "/+%" PRId64 " held -%" PRId64 "/+%" PRId64
            " balance %" PRId64 " available %" PRId64 " version %" PRIu64 " created %" PRIu64
            "@%" PRIu64 " min %s%" PRId64 " max %s%" PRId64 "\n",
            label, a->debits_posted, a->credits_posted, a->debits_held, a->credits_held, a->balance,
            a->available, a->version, a->created_seq, a->created_at,
            a->min_unbounded ? "unbounded/" : "", a->min_balance, a->has_max ? "" : "none/",
            a->max_balance);
}

static const char *at_name(int at)
{
    return at == COFFER_AT_NOW ? "now" : at == COFFER_AT_SEQ ? "seq" : "timestamp";
}

static bool check_account(run *r, const char *id, int at, uint64_t at_value)
{
    coffer_account expected, actual;
    memset(&actual, 0, sizeof actual);
    int expected_code = ref_account_get(r->reference, id, at, at_value, &expected);
    int actual_code = coffer_account_get(r->db, id, at, at_value, &actual);
    if (actual_code != expected_code) {
        return fail(r, "coffer_account_get(%s, at %s %" PRIu64 "): %s, reference %s", id,
                    at_name(at), at_value, code_name(actual_code), code_name(expected_code));
    }
    if (expected_code != COFFER_OK)
        return true;
    const char *difference = account_difference(&expected, &actual);
    if (difference == NULL)
        return true;
    print_account("reference", &expected);
    print_account("engine", &actual);
    return fail(r, "account %s at %s %" PRIu64 ": %s differs", id, at_name(at), at_value,
                difference);
}

/* Every account now, and at a few past seqs and timestamps (including before it existed). */
static bool check_accounts(run *r)
{
    uint64_t last_seq = ref_last_seq(r->reference);
    uint64_t last_timestamp = ref_last_timestamp(r->reference);
    uint64_t seqs[PAST_READS_PER_CHECK] = {0, 1 + gen_random(r->generator) % (last_seq + 1),
                                           last_seq / 2, last_seq};
    uint64_t span = last_timestamp - CLOCK_START_NS + 1;
    uint64_t stamps[PAST_READS_PER_CHECK] = {CLOCK_START_NS - 1,
                                             CLOCK_START_NS + gen_random(r->generator) % span,
                                             CLOCK_START_NS + span / 2, last_timestamp};
    for (size_t i = 0; i < gen_account_count(r->generator); i++) {
        const char *id = gen_account_id(r->generator, i);
        if (!check_account(r, id, COFFER_AT_NOW, 0))
            return false;
        for (size_t k = 0; k < PAST_READS_PER_CHECK; k++) {
            if (!check_account(r, id, COFFER_AT_SEQ, seqs[k]))
                return false;
            if (!check_account(r, id, COFFER_AT_TIMESTAMP, stamps[k]))
                return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* State: transfers and holds                                                                */

#define FLAGS_OF_A_TRANSFER (COFFER_FLAG_UP_TO | COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO)

/* Fields of a transfer record; those the docs leave open for an op are skipped (the accounts
 * of a post or void, expires_at of a rejected hold). */
static const char *transfer_difference(const coffer_transfer *expected,
                                       const coffer_transfer *actual)
{
    if (strcmp(expected->id, actual->id) != 0)
        return "id";
    if (DIFFERENT(op))
        return "op";
    if (DIFFERENT(code))
        return "code";
    if (DIFFERENT(state))
        return "state";
    if (DIFFERENT(seq))
        return "seq";
    if (DIFFERENT(timestamp))
        return "timestamp";
    if (DIFFERENT(amount))
        return "amount";
    if (DIFFERENT(amount_requested))
        return "amount_requested";
    if ((expected->flags & FLAGS_OF_A_TRANSFER) != (actual->flags & FLAGS_OF_A_TRANSFER)) {
        return "flags";
    }
    if ((expected->flags & COFFER_FLAG_EXPECT_FROM) && DIFFERENT(expect_from_version)) {
        return "expect_from_version";
    }
    if ((expected->flags & COFFER_FLAG_EXPECT_TO) && DIFFERENT(expect_to_version)) {
        return "expect_to_version";
    }
    if (expected->op == COFFER_OP_TRANSFER) {
        if (strcmp(expected->from, actual->from) != 0)
            return "from";
        if (strcmp(expected->to, actual->to) != 0)
            return "to";
        if (DIFFERENT(hold_timeout_ms))
            return "hold_timeout_ms";
        if (expected->code == COFFER_CREATED && DIFFERENT(expires_at))
            return "expires_at";
        if (expected->state == COFFER_STATE_CAPTURED && DIFFERENT(captured))
            return "captured";
    } else if (strcmp(expected->hold_id, actual->hold_id) != 0) {
        return "hold_id";
    }
    if (DIFFERENT(metadata_len))
        return "metadata_len";
    if (memcmp(expected->metadata, actual->metadata, expected->metadata_len) != 0) {
        return "metadata";
    }
    return NULL;
}

static void print_transfer(const char *label, const coffer_transfer *t)
{
    fprintf(stderr,
            "  %-9s %.40s op=%u state=%u code=%s seq=%" PRIu64 " ts=%" PRIu64 " amount=%" PRId64
            " requested=%" PRId64 " from=%.30s to=%.30s hold=%.40s timeout_ms=%" PRIu64
            " expires_at=%" PRIu64 " captured=%" PRId64 " flags=0x%x\n",
            label, t->id, t->op, t->state, code_name(t->code), t->seq, t->timestamp, t->amount,
            t->amount_requested, t->from, t->to, t->hold_id, t->hold_timeout_ms, t->expires_at,
            t->captured, t->flags);
}

static bool compare_transfer(run *r, const char *context, const coffer_transfer *expected,
                             const coffer_transfer *actual)
{
    const char *difference = transfer_difference(expected, actual);
    if (difference == NULL)
        return true;
    print_transfer("reference", expected);
    print_transfer("engine", actual);
    return fail(r, "%s %s: %s differs", context, expected->id, difference);
}

/* Every recorded id must read back the same from the engine. */
static bool check_recorded(run *r)
{
    coffer_transfer expected, actual;
    for (size_t i = 0; i < ref_transfer_count(r->reference); i++) {
        ref_transfer_at(r->reference, i, &expected);
        memset(&actual, 0, sizeof actual);
        int code = coffer_transfer_get(r->db, expected.id, &actual);
        if (code != COFFER_OK) {
            return fail(r, "coffer_transfer_get(%s): %s, reference ok", expected.id,
                        code_name(code));
        }
        if (!compare_transfer(r, "transfer", &expected, &actual))
            return false;
    }
    return true;
}

/* Every id the stream used but the reference never recorded must be unknown to the engine
 * too. O(n^2) against the linear reference, so only once per seed. */
static bool check_unrecorded(run *r)
{
    coffer_transfer expected, actual;
    for (size_t i = 0; i < gen_transfer_count(r->generator); i++) {
        const char *id = gen_transfer_id(r->generator, i);
        if (ref_transfer_get(r->reference, id, &expected) == COFFER_OK)
            continue;
        int code = coffer_transfer_get(r->db, id, &actual);
        if (code != COFFER_TRANSFER_NOT_FOUND) {
            print_transfer("engine", &actual);
            return fail(r, "coffer_transfer_get(%s): %s, reference transfer_not_found", id,
                        code_name(code));
        }
    }
    return true;
}

/* Pending holds, soonest first, for one account or (NULL) all, with a limit that cuts. */
static bool check_holds_of(run *r, const char *account_id, size_t limit, coffer_transfer *expected,
                           coffer_transfer *actual)
{
    size_t expected_count = 0, actual_count = 0;
    int expected_code = ref_holds_list(r->reference, account_id, limit, expected, &expected_count);
    int actual_code = coffer_holds_list(r->db, account_id, limit, actual, &actual_count);
    if (actual_code != expected_code || actual_count != expected_count) {
        return fail(r, "coffer_holds_list(%s, %zu): %s with %zu holds, reference %s with %zu",
                    text(account_id), limit, code_name(actual_code), actual_count,
                    code_name(expected_code), expected_count);
    }
    for (size_t i = 0; i < expected_count; i++) {
        if (!compare_transfer(r, "pending hold", &expected[i], &actual[i]))
            return false;
    }
    return true;
}

static bool check_holds(run *r)
{
    coffer_transfer *expected = calloc(HOLDS_LIST_MAX, sizeof *expected);
    coffer_transfer *actual = calloc(HOLDS_LIST_MAX, sizeof *actual);
    if (expected == NULL || actual == NULL)
        abort();
    bool ok = check_holds_of(r, NULL, HOLDS_LIST_MAX, expected, actual) &&
              check_holds_of(r, NULL, 2, expected, actual);
    for (size_t i = 0; ok && i < gen_account_count(r->generator); i++) {
        ok = check_holds_of(r, gen_account_id(r->generator, i), HOLDS_LIST_MAX, expected, actual);
    }
    free(expected);
    free(actual);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* State: history, verify, stats                                                             */

static const char *entry_difference(const coffer_history_entry *expected,
                                    const coffer_history_entry *actual)
{
    if (DIFFERENT(seq))
        return "seq";
    if (DIFFERENT(timestamp))
        return "timestamp";
    if (strcmp(expected->transfer_id, actual->transfer_id) != 0)
        return "transfer_id";
    if (DIFFERENT(kind))
        return "kind";
    if (DIFFERENT(delta))
        return "delta";
    if (DIFFERENT(balance))
        return "balance";
    if (DIFFERENT(available))
        return "available";
    if (DIFFERENT(version))
        return "version";
    return NULL;
}

static void print_entry(const char *label, const coffer_history_entry *e)
{
    fprintf(stderr,
            "  %-9s seq=%" PRIu64 " ts=%" PRIu64 " id=%.40s kind=%u delta=%" PRId64
            " balance=%" PRId64 " available=%" PRId64 " version=%" PRIu64 "\n",
            label, e->seq, e->timestamp, e->transfer_id, e->kind, e->delta, e->balance,
            e->available, e->version);
}

/* The engine's history of an account, walked in pages of HISTORY_PAGE_ENTRIES, must be the
 * reference's, which is read whole (paging the slow reference would cost O(n^2)). */
static bool check_history(run *r, const char *account_id, coffer_history_entry *expected)
{
    size_t expected_count = 0, seen = 0;
    int expected_code = ref_history(r->reference, account_id, 0, ref_history_total(r->reference),
                                    expected, &expected_count);
    uint64_t after_seq = 0;
    for (;;) {
        coffer_history_entry actual[HISTORY_PAGE_ENTRIES];
        size_t actual_count = 0;
        int actual_code = coffer_history(r->db, account_id, after_seq, HISTORY_PAGE_ENTRIES, actual,
                                         &actual_count);
        size_t left = expected_count - seen;
        size_t page = left < HISTORY_PAGE_ENTRIES ? left : HISTORY_PAGE_ENTRIES;
        if (actual_code != expected_code || actual_count != page) {
            return fail(r,
                        "coffer_history(%s, after %" PRIu64 "): %s with %zu, reference %s with %zu",
                        account_id, after_seq, code_name(actual_code), actual_count,
                        code_name(expected_code), page);
        }
        if (expected_code != COFFER_OK || page == 0)
            return true;
        for (size_t i = 0; i < page; i++, seen++) {
            const char *difference = entry_difference(&expected[seen], &actual[i]);
            if (difference == NULL)
                continue;
            print_entry("reference", &expected[seen]);
            print_entry("engine", &actual[i]);
            return fail(r, "history of %s, entry %zu: %s differs", account_id, seen, difference);
        }
        after_seq = expected[seen - 1].seq;
    }
}

static bool check_verify(run *r)
{
    coffer_verify_report report;
    memset(&report, 0, sizeof report);
    int code = coffer_verify(r->db, &report);
    if (code == COFFER_OK && report.ok)
        return true;
    for (uint32_t i = 0; i < report.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++) {
        fprintf(stderr, "  problem: %s\n", report.problems[i]);
    }
    return fail(r, "coffer_verify: %s, ok=%d, %u problems", code_name(code), report.ok,
                report.problem_count);
}

/* The engine's last seq counts every slot, expiries and unrecorded events included. */
static bool check_stats(run *r)
{
    coffer_stats stats;
    memset(&stats, 0, sizeof stats);
    int code = coffer_stats_get(r->db, &stats);
    if (code != COFFER_OK)
        return fail(r, "coffer_stats_get: %s", code_name(code));
    if (stats.seq != ref_last_seq(r->reference)) {
        return fail(r, "stats.seq %" PRIu64 ", reference %" PRIu64, stats.seq,
                    ref_last_seq(r->reference));
    }
    return true;
}

static bool check_state(run *r)
{
    if (!check_accounts(r) || !check_recorded(r) || !check_holds(r) || !check_verify(r) ||
        !check_stats(r)) {
        return false;
    }
    coffer_history_entry *entries = calloc(ref_history_total(r->reference) + 1, sizeof *entries);
    if (entries == NULL)
        abort();
    bool ok = true;
    for (size_t i = 0; ok && i < gen_account_count(r->generator); i++) {
        ok = check_history(r, gen_account_id(r->generator, i), entries);
    }
    free(entries);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* Seeds                                                                                     */

/* Reads must neither sweep nor take a seq: move the clock past many expiries first, so that
 * a read that swept would leave the engine's holds, history and seq ahead of the reference. */
static bool check_state_later(run *r)
{
    uint64_t clock_ns = r->clock_ns + gen_random(r->generator) % READ_CLOCK_JUMP_NS;
    __atomic_store_n(&r->clock_ns, clock_ns, __ATOMIC_RELEASE);
    return check_state(r);
}

/* Adds the eviction counters of the engine about to close (they count from its open). */
static void collect_stats(run *r)
{
    coffer_stats stats;
    if (coffer_stats_get(r->db, &stats) != COFFER_OK)
        return;
    r->trims += stats.evictions;
    r->trimmed_transfers += stats.evicted_transfers;
    r->cold_reads += stats.cold_reads;
}

static bool open_engine(run *r)
{
    int code = coffer_open(r->dir[0] != '\0' ? r->dir : NULL, &r->engine_options, &r->db);
    if (code != COFFER_OK)
        return fail(r, "coffer_open(%s): %s", r->dir[0] != '\0' ? r->dir : "NULL", code_name(code));
    return true;
}

/* Durable runs only: what recovery rebuilds from the directory must be the state the engine
 * had, and the engine must go on from the same seq and timestamp. */
static bool reopen(run *r)
{
    collect_stats(r);
    coffer_close(r->db);
    r->db = NULL;
    return open_engine(r) && check_state(r);
}

static bool run_batches(run *r)
{
    coffer_event events[GEN_BATCH_MAX];
    size_t submitted = 0;
    while (submitted < r->options->events_max) {
        uint64_t clock_ns = gen_next_clock(r->generator, r->clock_ns);
        __atomic_store_n(&r->clock_ns, clock_ns, __ATOMIC_RELEASE);
        bool atomic = false;
        size_t count = gen_next_batch(r->generator, events, &atomic);
        if (!submit_and_compare(r, events, count, atomic))
            return false;
        submitted += count;
        r->batch_index++;
        if (r->batch_index % r->options->check_every == 0 && !check_state_later(r))
            return false;
        if (r->options->durable && r->batch_index % r->options->reopen_every == 0 && !reopen(r))
            return false;
    }
    return check_state_later(r) && check_unrecorded(r);
}

/* What the seed's stream exercised: a stream that never hits a code tests nothing about it. */
static void print_coverage(const run *r)
{
    fprintf(stderr, "seed %" PRIu64 ": ok, %zu batches, %" PRIu64 " replays, %" PRIu64 " expiries;",
            r->seed, r->batch_index, r->replays, r->expiries);
    for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
        if (r->codes[code] > 0)
            fprintf(stderr, " %s %" PRIu64, code_name(code), r->codes[code]);
    }
    fprintf(stderr, "\n");
}

/* A fresh data directory for a durable seed. */
static bool make_directory(run *r)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/coffer-model-XXXXXX");
    if (mkdtemp(r->dir) != NULL)
        return true;
    r->dir[0] = '\0';
    return fail(r, "mkdtemp failed");
}

/* --memory-max: a run that never evicted tested nothing of eviction. The engine is closed
 * here; its stats were read before. */
static bool check_evicted(run *r)
{
    fprintf(stderr,
            "seed %" PRIu64 ": %" PRIu64 " evictions, %" PRIu64 " transfers evicted, %" PRIu64
            " cold lookups, %" PRIu64 " submissions overloaded\n",
            r->seed, r->trims, r->trimmed_transfers, r->cold_reads, r->overloaded);
    if (r->trims < 2)
        return fail(r,
                    "the engine evicted %" PRIu64 " times: the stream is too short for the "
                    "memory budget",
                    r->trims);
    return true;
}

static bool run_seed(const model_options *options, uint64_t seed)
{
    run r = {.options = options, .seed = seed};
    r.clock_ns = CLOCK_START_NS + seed % 1000;
    coffer_options_init(&r.engine_options);
    /* Capacity is not modelled: give the engine more room than a seed can use. */
    r.engine_options.accounts_max = 1024;
    r.engine_options.transfers_max = (uint32_t)(2 * options->events_max + 1024);
    r.engine_options.clock_ns = fake_clock;
    r.engine_options.clock_context = &r.clock_ns;
    if (options->memory_max) {
        r.engine_options.memory_bytes_max = options->memory_max;
        r.engine_options.index_on = true;
        r.engine_options.fsync_never = true; /* no machine crash here; speed */
    }
    if (options->durable && !make_directory(&r))
        return false;
    if (!open_engine(&r))
        return false;

    r.reference = ref_create(options->events_max + 2 * GEN_BATCH_MAX);
    r.generator = gen_create(seed, options->events_max + GEN_BATCH_MAX, r.reference);
    bool ok = run_batches(&r);
    collect_stats(&r);
    gen_destroy(r.generator);
    ref_destroy(r.reference);
    coffer_close(r.db);
    if (ok && options->durable)
        remove_tree(r.dir); /* a failed seed's stays, to be looked at */
    else if (options->durable)
        fprintf(stderr, "data directory kept: %s\n", r.dir);
    if (ok && options->verbose)
        print_coverage(&r);
    if (ok && options->memory_max && !check_evicted(&r))
        ok = false;
    return ok;
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr,
            "usage: model_test [--seeds N | --seed S] [--start S] [--events M] "
            "[--durable [--memory-max BYTES]] [--check-every N] [--reopen-every N] [--verbose] "
            "[--skip NAME]...\n  --skip names a known engine discrepancy to "
            "tolerate:");
    for (size_t i = 0; i < sizeof skip_names / sizeof skip_names[0]; i++) {
        fprintf(stderr, " %s", skip_names[i].name);
    }
    fprintf(stderr, "\n");
    exit(2);
}

static unsigned skip_argument(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage();
    const char *name = argv[++*i];
    for (size_t k = 0; k < sizeof skip_names / sizeof skip_names[0]; k++) {
        if (strcmp(name, skip_names[k].name) == 0)
            return skip_names[k].bit;
    }
    usage();
}

static uint64_t number_argument(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        usage();
    char *end = NULL;
    unsigned long long value = strtoull(argv[++*i], &end, 10);
    if (end == NULL || *end != '\0')
        usage();
    return value;
}

int main(int argc, char **argv)
{
    model_options options = {.first_seed = 1,
                             .seed_count = 40,
                             .events_max = 4000,
                             .check_every = STATE_CHECK_EVERY_BATCHES,
                             .reopen_every = REOPEN_EVERY_BATCHES};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0) {
            options.seed_count = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--seed") == 0) {
            options.first_seed = number_argument(argc, argv, &i);
            options.seed_count = 1;
        } else if (strcmp(argv[i], "--start") == 0) {
            options.first_seed = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--events") == 0) {
            options.events_max = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--skip") == 0) {
            options.skips |= skip_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--durable") == 0) {
            options.durable = true;
        } else if (strcmp(argv[i], "--memory-max") == 0) {
            options.memory_max = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--check-every") == 0) {
            options.check_every = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--reopen-every") == 0) {
            options.reopen_every = number_argument(argc, argv, &i);
        } else if (strcmp(argv[i], "--verbose") == 0) {
            options.verbose = true;
        } else {
            usage();
        }
    }
    if (options.events_max == 0 || options.events_max > 10000000 || options.check_every == 0 ||
        options.reopen_every == 0 || (options.memory_max && !options.durable))
        usage();
    for (uint64_t seed = options.first_seed; seed < options.first_seed + options.seed_count;
         seed++) {
        if (!run_seed(&options, seed))
            return 1;
    }
    printf("model_test: %" PRIu64 " seeds x %zu events%s: ok\n", options.seed_count,
           options.events_max, options.durable ? " (durable)" : "");
    return 0;
}
