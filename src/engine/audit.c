/*
 * audit.c — offline verification and dumping of a data directory (see audit.h).
 */
#include "engine/audit.h"

#include <stdlib.h>
#include <string.h>

#include "core/ledger.h"
#include "engine/engine.h"
#include "engine/replay.h"
#include "log/checkpoint.h"
#include "log/snapshot.h"
#include "log/wal.h"

/* A store with its core, rebuilt from files. */
typedef struct rebuilt {
    store store;
    ledger ledger;
    replayer replayer;
    bool ready;
} rebuilt;

static int rebuilt_init(rebuilt *r, const coffer_options *limits)
{
    memset(r, 0, sizeof *r);
    coffer_options defaults;
    coffer_options_init(&defaults);
    if (!limits)
        limits = &defaults;
    store_limits capacities = {limits->accounts_max, limits->transfers_max};
    int code = store_init(&r->store, &capacities);
    if (code == COFFER_OK)
        code = ledger_init(&r->ledger, &r->store);
    if (code == COFFER_OK)
        code = replayer_init(&r->replayer, &r->store, &r->ledger);
    r->ready = code == COFFER_OK;
    return code;
}

static void rebuilt_free(rebuilt *r)
{
    replayer_free(&r->replayer);
    ledger_free(&r->ledger);
    store_free(&r->store);
}

static int hold_ref_order(const void *x, const void *y)
{
    const store_hold_ref *a = x, *b = y;
    if (a->expires_at != b->expires_at)
        return a->expires_at < b->expires_at ? -1 : 1;
    return a->transfer < b->transfer ? -1 : a->transfer > b->transfer;
}

/* The heap entries of pending holds, sorted: the heap also keeps stale entries of holds
 * resolved since, which the live sweep drops and a replay need not, so only these compare. */
static store_hold_ref *pending_holds(const store *s, size_t *count)
{
    store_hold_ref *out = malloc((s->holds_count + 1) * sizeof *out);
    *count = 0;
    if (!out)
        return 0;
    for (uint64_t i = 0; i < s->holds_count; i++)
        if (s->transfers[s->holds[i].transfer].state == COFFER_STATE_PENDING)
            out[(*count)++] = s->holds[i];
    qsort(out, *count, sizeof *out, hold_ref_order);
    return out;
}

static bool holds_differ(const store *a, const store *b, char *out, size_t size)
{
    size_t a_count, b_count;
    store_hold_ref *a_holds = pending_holds(a, &a_count), *b_holds = pending_holds(b, &b_count);
    bool differ = !a_holds || !b_holds || a_count != b_count ||
                  (a_count && memcmp(a_holds, b_holds, a_count * sizeof *a_holds) != 0);
    if (differ)
        snprintf(out, size, "pending holds by expiry: %zu against %zu, or in another order",
                 a_count, b_count);
    free(a_holds);
    free(b_holds);
    return differ;
}

/* Names the first difference between two stores, or returns false when they are equal. */
static bool stores_differ(const store *a, const store *b, char *out, size_t size)
{
    struct {
        const char *name;
        const void *left, *right;
        uint64_t left_count, right_count;
        size_t record_size;
    } tables[] = {
        {"accounts", a->accounts, b->accounts, a->accounts_count, b->accounts_count,
         sizeof(store_account)},
        {"transfers", a->transfers, b->transfers, a->transfers_count, b->transfers_count,
         sizeof(store_transfer)},
        {"history", a->history, b->history, a->history_count, b->history_count,
         sizeof(store_history)},
        {"expiries", a->expiries, b->expiries, a->expiries_count, b->expiries_count,
         sizeof(store_expiry)},
        {"ids and metadata", a->arena, b->arena, a->arena_used, b->arena_used, 1},
    };
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        if (tables[t].left_count != tables[t].right_count) {
            snprintf(out, size, "%s: %llu records against %llu", tables[t].name,
                     (unsigned long long)tables[t].left_count,
                     (unsigned long long)tables[t].right_count);
            return true;
        }
        for (uint64_t i = 0; i < tables[t].left_count; i++) {
            size_t at = (size_t)i * tables[t].record_size;
            if (memcmp((const char *)tables[t].left + at, (const char *)tables[t].right + at,
                       tables[t].record_size) == 0)
                continue;
            if (t == 0)
                snprintf(out, size, "account %.64s differs", a->accounts[i].id);
            else
                snprintf(out, size, "%s: record %llu differs", tables[t].name,
                         (unsigned long long)i);
            return true;
        }
    }
    return holds_differ(a, b, out, size);
}

typedef struct full_replay {
    rebuilt *state;
    const rebuilt *snapshot; /* compared when the replay reaches its seq; NULL: none */
    uint64_t snapshot_seq;
    audit_report *report;
    bool compared;
} full_replay;

static int full_replay_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                              uint64_t offset, void *context)
{
    full_replay *run = context;
    int code = replay_record(&run->state->replayer, bytes, header);
    if (code != COFFER_OK) {
        snprintf(run->report->chain_error, sizeof run->report->chain_error,
                 "segment %u offset %llu does not replay: %s", segment, (unsigned long long)offset,
                 run->state->replayer.problem);
        return code;
    }
    if (run->snapshot && header->last_seq == run->snapshot_seq) {
        run->compared = true;
        run->report->snapshot_matches =
            !stores_differ(&run->snapshot->store, &run->state->store, run->report->snapshot_error,
                           sizeof run->report->snapshot_error);
    }
    return 0;
}

static int tail_replay_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                              uint64_t offset, void *context)
{
    (void)segment;
    (void)offset;
    rebuilt *state = context;
    return replay_record(&state->replayer, bytes, header);
}

typedef struct progress_forward {
    const audit_options *options;
    const char *stage;
} progress_forward;

static void forward_progress(uint64_t done, uint64_t total, void *context)
{
    const progress_forward *forward = context;
    forward->options->progress(forward->stage, done, total, forward->options->progress_context);
}

static void hex(char *out, const uint8_t *bytes, size_t length)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < length; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * length] = 0;
}

/* Snapshot + the log after it, as recovery would build it, compared with the full replay. */
static void check_recovery(const char *dir, rebuilt *snapshot, const rebuilt *full,
                           const uint8_t *snapshot_hash, audit_report *report)
{
    wal_scan_options options = {
        .skip_through = report->snapshot_seq, .skip_hash = snapshot_hash, .read_only = true};
    wal_scan_result scan;
    int code = wal_scan(dir, &options, tail_replay_record, snapshot, &scan);
    if (code != COFFER_OK) {
        snprintf(report->snapshot_error, sizeof report->snapshot_error,
                 "recovery from the snapshot fails: %.900s",
                 scan.error[0] ? scan.error : snapshot->replayer.problem);
        return;
    }
    report->recovery_matches = !stores_differ(
        &full->store, &snapshot->store, report->snapshot_error, sizeof report->snapshot_error);
}

int audit_verify(const char *dir, const audit_options *options, audit_report *report)
{
    memset(report, 0, sizeof *report);
    rebuilt full, snapshot;
    int code = rebuilt_init(&full, options->limits);
    if (code == COFFER_OK)
        code = rebuilt_init(&snapshot, options->limits);
    if (code != COFFER_OK)
        return code;
    snapshot_meta meta = {0};
    code = snapshot_load_latest(&snapshot.store, dir, &meta, &report->snapshot_found,
                                report->snapshot_error, sizeof report->snapshot_error);
    report->snapshot_seq = meta.tip.last_seq;

    progress_forward forward = {options, "log"};
    wal_scan_options scan_options = {.read_only = true, .from_start = true};
    if (options->progress) {
        scan_options.progress = forward_progress;
        scan_options.progress_context = &forward;
    }
    full_replay run = {&full, report->snapshot_found ? &snapshot : 0, meta.tip.last_seq, report,
                       false};
    wal_scan_result scan;
    code = wal_scan(dir, &scan_options, full_replay_record, &run, &scan);
    report->chain_ok = code == COFFER_OK;
    if (!report->chain_ok && scan.error[0])
        snprintf(report->chain_error, sizeof report->chain_error, "%s", scan.error);
    /* Acknowledged records missing: a segment gone or shortened, a log cut before its
     * checkpoint. */
    if (log_files_check(dir, &scan, report->chain_error, sizeof report->chain_error) > 0)
        report->chain_ok = false;
    report->records = scan.records;
    report->segments = scan.segments;
    report->last_seq = scan.tip.last_seq;
    report->torn_bytes = scan.truncated_bytes;
    hex(report->tip_hash, scan.tip.hash, RECORD_HASH_BYTES);
    if (report->chain_ok && report->snapshot_found && !run.compared && meta.tip.last_seq > 0)
        snprintf(report->snapshot_error, sizeof report->snapshot_error,
                 "the snapshot's seq %llu is not the end of any log record",
                 (unsigned long long)meta.tip.last_seq);
    if (report->chain_ok && report->snapshot_found && run.compared && report->snapshot_matches)
        check_recovery(dir, &snapshot, &full, meta.tip.hash, report);
    if (!report->snapshot_found && !report->snapshot_error[0])
        report->snapshot_matches = report->recovery_matches = true; /* recovery = full replay */
    code = engine_verify_store(&full.store, &report->invariants);
    report->ok = report->chain_ok && report->snapshot_matches && report->recovery_matches &&
                 report->invariants.ok;
    rebuilt_free(&snapshot);
    rebuilt_free(&full);
    return code;
}

/* ---- dump ---------------------------------------------------------------------------------- */

static void json_string(FILE *out, const char *text, size_t length)
{
    fputc('"', out);
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static const char *op_name(uint8_t op)
{
    switch (op) {
    case COFFER_OP_CREATE_ACCOUNT:
        return "create_account";
    case COFFER_OP_TRANSFER:
        return "transfer";
    case COFFER_OP_POST:
        return "post";
    case COFFER_OP_VOID:
        return "void";
    default:
        return "unknown";
    }
}

static void dump_event(FILE *out, const coffer_event *e)
{
    fprintf(out, ",\"op\":\"%s\",\"id\":", op_name(e->op));
    json_string(out, e->id, strlen(e->id));
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        fputs(",\"currency\":", out);
        json_string(out, e->currency, strlen(e->currency));
        if (e->flags & COFFER_FLAG_MIN_UNBOUNDED)
            fputs(",\"min_balance\":null", out);
        else
            fprintf(out, ",\"min_balance\":%lld", (long long)e->min_balance);
        if (e->flags & COFFER_FLAG_HAS_MAX)
            fprintf(out, ",\"max_balance\":%lld", (long long)e->max_balance);
    } else if (e->op == COFFER_OP_TRANSFER) {
        fputs(",\"from\":", out);
        json_string(out, e->from, strlen(e->from));
        fputs(",\"to\":", out);
        json_string(out, e->to, strlen(e->to));
        fprintf(out, ",\"amount\":%lld", (long long)e->amount);
        if (e->hold_timeout_ms)
            fprintf(out, ",\"hold_timeout_ms\":%llu", (unsigned long long)e->hold_timeout_ms);
        if (e->flags & COFFER_FLAG_UP_TO)
            fputs(",\"up_to\":true", out);
        if (e->flags & COFFER_FLAG_EXPECT_FROM)
            fprintf(out, ",\"expect_from_version\":%llu",
                    (unsigned long long)e->expect_from_version);
        if (e->flags & COFFER_FLAG_EXPECT_TO)
            fprintf(out, ",\"expect_to_version\":%llu", (unsigned long long)e->expect_to_version);
    } else {
        fputs(e->op == COFFER_OP_POST ? ",\"post\":" : ",\"void\":", out);
        json_string(out, e->hold_id, strlen(e->hold_id));
        if (e->op == COFFER_OP_POST && e->amount)
            fprintf(out, ",\"amount\":%lld", (long long)e->amount);
    }
    if (e->metadata_len) {
        fputs(",\"metadata\":", out);
        json_string(out, e->metadata, e->metadata_len);
    }
}

typedef struct dump_state {
    FILE *out;
    const record_header *header;
    uint32_t segment;
    uint64_t offset;
    record_scratch scratch;
} dump_state;

static int dump_entry(const record_entry *entry, void *context)
{
    dump_state *state = context;
    for (size_t i = 0; i < entry->count; i++) {
        uint64_t seq = entry->seq + i;
        fprintf(state->out, "{\"seq\":%llu,\"timestamp\":%llu,\"segment\":%u,\"offset\":%llu",
                (unsigned long long)seq,
                (unsigned long long)(state->header->ts0 + (seq - state->header->seq_base)),
                state->segment, (unsigned long long)state->offset);
        if (entry->kind == RECORD_EXPIRE) {
            fputs(",\"op\":\"expire\",\"hold\":", state->out);
            json_string(state->out, entry->hold_id, strlen(entry->hold_id));
        } else {
            if (entry->kind == RECORD_ATOMIC)
                fprintf(state->out, ",\"atomic\":{\"first_seq\":%llu,\"events\":%zu}",
                        (unsigned long long)entry->seq, entry->count);
            dump_event(state->out, &entry->events[i]);
        }
        fputs("}\n", state->out);
    }
    return 0;
}

static int dump_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    dump_state *state = context;
    state->header = header;
    state->segment = segment;
    state->offset = offset;
    int status = record_each(bytes, header, &state->scratch, dump_entry, state);
    return status == RECORD_OK ? 0 : COFFER_STORAGE_FAILED;
}

int audit_dump(const char *dir, FILE *out, char *error, size_t error_size)
{
    dump_state state = {out, 0, 0, 0, {0}};
    wal_scan_options options = {.read_only = true, .from_start = true};
    wal_scan_result scan;
    int code = wal_scan(dir, &options, dump_record, &state, &scan);
    record_scratch_free(&state.scratch);
    if (code != COFFER_OK)
        snprintf(error, error_size, "%s", scan.error[0] ? scan.error : "a record does not parse");
    return code;
}
