/*
 * derive.c — a log record's outcomes turned into the index's keys and values (see derive.h).
 * It renders a transfer as the engine's memory does (reads.c): a rejection keeps its code and
 * shows no amount, a post or void shows its hold's accounts only when it applied, a hold's
 * expires_at follows from its timeout even when refused. An expected version is kept only under
 * its flag (without it the version means nothing and is not shown).
 */
#include "index/derive.h"

#include <string.h>

typedef struct derive_state {
    const record_header *header;
    const index_sink *sink;
    const char *submitted_by; /* the entry's submitter, or NULL */
} derive_state;

/* A key of one byte of prefix and an id. */
static size_t id_key(uint8_t *key, uint8_t prefix, const char *id, size_t id_len)
{
    key[0] = prefix;
    memcpy(key + 1, id, id_len);
    return 1 + id_len;
}

size_t index_transfer_key(uint8_t *key, const char *id, size_t id_len)
{
    return id_key(key, INDEX_KEY_TRANSFER, id, id_len);
}

size_t index_resolution_key(uint8_t *key, const char *hold_id, size_t id_len)
{
    return id_key(key, INDEX_KEY_RESOLUTION, hold_id, id_len);
}

size_t index_history_key(uint8_t *key, const char *account, size_t account_len, uint64_t seq,
                         uint8_t side)
{
    key[0] = INDEX_KEY_HISTORY;
    key[1] = (uint8_t)account_len;
    memcpy(key + 2, account, account_len);
    for (int i = 0; i < 8; i++)
        key[2 + account_len + i] = (uint8_t)(seq >> (56 - 8 * i));
    key[10 + account_len] = side;
    return 11 + account_len;
}

static size_t text_length(const char *text)
{
    return text ? strlen(text) : 0;
}

static void put_after(uint8_t *at, const coffer_account_after *after)
{
    index_put_u64(at, (uint64_t)after->balance);
    index_put_u64(at + 8, (uint64_t)after->available);
    index_put_u64(at + 16, after->version);
}

static size_t put_text(uint8_t *value, size_t at, const char *text, size_t length)
{
    if (length)
        memcpy(value + at, text, length);
    return at + length;
}

/* The packed transfer of a recorded event, as the engine's memory renders it. */
static size_t transfer_pack(uint8_t *value, const coffer_event *event, const coffer_result *result,
                            const char *submitted_by)
{
    bool applied = coffer_code_is_success(result->code);
    bool hold = event->op == COFFER_OP_TRANSFER && event->hold_timeout_ms > 0;
    const char *from = event->op == COFFER_OP_TRANSFER ? event->from
                       : applied                       ? result->hold_from
                                                       : "";
    const char *to = event->op == COFFER_OP_TRANSFER ? event->to : applied ? result->hold_to : "";
    const char *hold_id = event->op == COFFER_OP_TRANSFER ? "" : event->hold_id;
    size_t lengths[5] = {text_length(from), text_length(to), text_length(hold_id),
                         text_length(result->field), event->metadata_len};
    size_t submitter_length = text_length(submitted_by);
    memset(value, 0, TRANSFER_VALUE_FIXED);
    value[0] = INDEX_FORMAT_VERSION;
    value[1] = event->op;
    value[TRANSFER_VALUE_STATE] = !applied ? COFFER_STATE_REJECTED
                                  : hold   ? COFFER_STATE_PENDING
                                           : COFFER_STATE_POSTED;
    value[3] = event->flags;
    value[4] = (uint8_t)result->code;
    for (int i = 0; i < 4; i++)
        value[6 + i] = (uint8_t)lengths[i];
    value[10] = (uint8_t)(lengths[4] & 0xff);
    value[11] = (uint8_t)(lengths[4] >> 8);
    value[TRANSFER_VALUE_SUBMITTER_LENGTH] = (uint8_t)submitter_length;
    index_put_u64(value + 16, result->seq);
    index_put_u64(value + 24, result->timestamp);
    index_put_u64(value + 32, applied ? (uint64_t)result->amount : 0);
    index_put_u64(value + 40, (uint64_t)event->amount);
    index_put_u64(value + 48, hold ? result->timestamp + event->hold_timeout_ms * 1000000ULL : 0);
    bool expect_from = event->flags & COFFER_FLAG_EXPECT_FROM;
    bool expect_to = event->flags & COFFER_FLAG_EXPECT_TO;
    index_put_u64(value + 64, expect_from ? event->expect_from_version : 0);
    index_put_u64(value + 72, expect_to ? event->expect_to_version : 0);
    index_put_u64(value + 80, (uint64_t)result->available);
    index_put_u64(value + 88, result->actual_version);
    put_after(value + 96, &result->from);
    put_after(value + 120, &result->to);
    size_t at = TRANSFER_VALUE_FIXED;
    at = put_text(value, at, from, lengths[0]);
    at = put_text(value, at, to, lengths[1]);
    at = put_text(value, at, hold_id, lengths[2]);
    at = put_text(value, at, result->field, lengths[3]);
    at = put_text(value, at, event->metadata, lengths[4]);
    return put_text(value, at, submitted_by, submitter_length);
}

/* One account's side of a change: its key and packed entry. */
static int history_emit(derive_state *state, const char *account, uint64_t seq, uint8_t side,
                        uint8_t kind, int64_t delta, const coffer_account_after *after,
                        uint64_t timestamp, const char *transfer_id)
{
    uint8_t key[HISTORY_KEY_MAX], value[HISTORY_VALUE_MAX];
    size_t key_length = index_history_key(key, account, strlen(account), seq, side);
    size_t id_len = strlen(transfer_id);
    memset(value, 0, HISTORY_VALUE_FIXED);
    value[0] = INDEX_FORMAT_VERSION;
    value[1] = kind;
    value[2] = (uint8_t)id_len;
    index_put_u64(value + 8, (uint64_t)delta);
    index_put_u64(value + 16, (uint64_t)after->balance);
    index_put_u64(value + 24, (uint64_t)after->available);
    index_put_u64(value + 32, after->version);
    index_put_u64(value + 40, timestamp);
    memcpy(value + HISTORY_VALUE_FIXED, transfer_id, id_len);
    return state->sink->history(state->sink->context, key, key_length, value,
                                HISTORY_VALUE_FIXED + id_len);
}

/* Both sides of a change. `debit_sign` is the from side's sign: -1 where money leaves it
 * (posted, held, captured), +1 where a hold's reservation returns (released, expired). */
static int history_pair(derive_state *state, const char *from, const char *to, uint8_t kind,
                        int debit_sign, const coffer_result *result, const char *transfer_id)
{
    int64_t delta = debit_sign < 0 ? -result->amount : result->amount;
    int code = history_emit(state, from, result->seq, 0, kind, delta, &result->from,
                            result->timestamp, transfer_id);
    if (code == 0)
        code = history_emit(state, to, result->seq, 1, kind, -delta, &result->to, result->timestamp,
                            transfer_id);
    return code;
}

static int resolve_emit(derive_state *state, const char *hold_id, uint8_t hold_state,
                        int64_t captured)
{
    uint8_t key[TRANSFER_KEY_MAX], value[RESOLUTION_VALUE_BYTES] = {INDEX_FORMAT_VERSION};
    size_t key_length = index_resolution_key(key, hold_id, strlen(hold_id));
    value[1] = hold_state;
    index_put_u64(value + 8, (uint64_t)captured);
    return state->sink->resolution(state->sink->context, key, key_length, value, sizeof value);
}

/* A recorded transfer, post or void: its record, its history, the hold it resolves. */
static int derive_event(derive_state *state, const coffer_event *event, const coffer_result *result)
{
    if (result->seq == 0 || event->op == COFFER_OP_CREATE_ACCOUNT)
        return 0; /* recorded nothing, or an account (not a transfer) */
    uint8_t key[TRANSFER_KEY_MAX], value[TRANSFER_VALUE_MAX];
    size_t key_length = index_transfer_key(key, event->id, strlen(event->id));
    size_t value_length = transfer_pack(value, event, result, state->submitted_by);
    int code = state->sink->transfer(state->sink->context, key, key_length, value, value_length);
    if (code != 0 || !coffer_code_is_success(result->code))
        return code;
    if (event->op == COFFER_OP_TRANSFER) {
        if (result->amount == 0)
            return 0; /* nothing moved: no account changed */
        uint8_t kind = event->hold_timeout_ms ? COFFER_HISTORY_HELD : COFFER_HISTORY_POSTED;
        return history_pair(state, event->from, event->to, kind, -1, result, event->id);
    }
    bool post = event->op == COFFER_OP_POST;
    code = history_pair(state, result->hold_from, result->hold_to,
                        post ? COFFER_HISTORY_CAPTURED : COFFER_HISTORY_RELEASED, post ? -1 : 1,
                        result, event->id);
    if (code == 0)
        code =
            resolve_emit(state, event->hold_id, post ? COFFER_STATE_CAPTURED : COFFER_STATE_VOIDED,
                         post ? result->amount : 0);
    return code;
}

static int derive_entry(const record_entry *entry, void *context)
{
    derive_state *state = context;
    if (!entry->results)
        return 0; /* format 1: no outcomes to derive from */
    state->submitted_by = entry->submitted_by;
    if (entry->kind == RECORD_EXPIRE) {
        const coffer_result *result = &entry->results[0];
        int code = history_pair(state, result->hold_from, result->hold_to, COFFER_HISTORY_EXPIRED,
                                1, result, entry->hold_id);
        if (code == 0)
            code = resolve_emit(state, entry->hold_id, COFFER_STATE_EXPIRED, 0);
        return code;
    }
    for (size_t i = 0; i < entry->count; i++) {
        int code = derive_event(state, &entry->events[i], &entry->results[i]);
        if (code != 0)
            return code;
    }
    return 0;
}

int index_derive_record(const uint8_t *bytes, const record_header *header, record_scratch *scratch,
                        const index_sink *sink)
{
    derive_state state = {header, sink, 0};
    return record_each(bytes, header, scratch, derive_entry, &state);
}

static void take_text(char *out, const uint8_t *value, size_t *at, size_t length)
{
    memcpy(out, value + *at, length);
    out[length] = 0;
    *at += length;
}

static void take_after(const uint8_t *at, coffer_account_after *after)
{
    after->balance = (int64_t)index_get_u64(at);
    after->available = (int64_t)index_get_u64(at + 8);
    after->version = index_get_u64(at + 16);
}

bool index_transfer_unpack(const uint8_t *value, size_t length, index_transfer *out)
{
    if (length < TRANSFER_VALUE_FIXED || value[0] != INDEX_FORMAT_VERSION)
        return false;
    size_t lengths[6] = {value[6],
                         value[7],
                         value[8],
                         value[9],
                         value[10] | (size_t)value[11] << 8,
                         value[TRANSFER_VALUE_SUBMITTER_LENGTH]};
    if (lengths[0] > COFFER_ACCOUNT_ID_MAX || lengths[1] > COFFER_ACCOUNT_ID_MAX ||
        lengths[2] > COFFER_TRANSFER_ID_MAX || lengths[3] >= sizeof out->field ||
        lengths[4] > COFFER_METADATA_MAX || lengths[5] > COFFER_SUBMITTER_MAX ||
        TRANSFER_VALUE_FIXED + lengths[0] + lengths[1] + lengths[2] + lengths[3] + lengths[4] +
                lengths[5] !=
            length)
        return false;
    memset(out, 0, sizeof *out);
    coffer_transfer *t = &out->transfer;
    t->op = value[1];
    t->state = value[TRANSFER_VALUE_STATE];
    t->flags = value[3];
    t->code = value[4];
    t->seq = index_get_u64(value + 16);
    t->timestamp = index_get_u64(value + 24);
    t->amount = (int64_t)index_get_u64(value + 32);
    t->amount_requested = (int64_t)index_get_u64(value + 40);
    t->expires_at = index_get_u64(value + 48);
    if (t->expires_at)
        t->hold_timeout_ms = (t->expires_at - t->timestamp) / 1000000ULL;
    t->captured = (int64_t)index_get_u64(value + TRANSFER_VALUE_CAPTURED);
    t->expect_from_version = index_get_u64(value + 64);
    t->expect_to_version = index_get_u64(value + 72);
    out->available = (int64_t)index_get_u64(value + 80);
    out->actual_version = index_get_u64(value + 88);
    take_after(value + 96, &out->from_after);
    take_after(value + 120, &out->to_after);
    size_t at = TRANSFER_VALUE_FIXED;
    take_text(t->from, value, &at, lengths[0]);
    take_text(t->to, value, &at, lengths[1]);
    take_text(t->hold_id, value, &at, lengths[2]);
    take_text(out->field, value, &at, lengths[3]);
    take_text(t->metadata, value, &at, lengths[4]);
    t->metadata_len = (uint32_t)lengths[4];
    take_text(t->submitted_by, value, &at, lengths[5]);
    return true;
}

bool index_resolution_apply(const uint8_t *value, size_t length, coffer_transfer *hold)
{
    if (length != RESOLUTION_VALUE_BYTES || value[0] != INDEX_FORMAT_VERSION)
        return false;
    hold->state = value[1];
    hold->captured = (int64_t)index_get_u64(value + 8);
    return true;
}

bool index_history_unpack(const uint8_t *key, size_t key_length, const uint8_t *value,
                          size_t length, coffer_history_entry *out)
{
    if (key_length < 11 || key[0] != INDEX_KEY_HISTORY || key_length != 11u + key[1] ||
        length < HISTORY_VALUE_FIXED || value[0] != INDEX_FORMAT_VERSION ||
        length != HISTORY_VALUE_FIXED + (size_t)value[2] || value[2] > COFFER_TRANSFER_ID_MAX)
        return false;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 8; i++)
        out->seq = out->seq << 8 | key[2 + key[1] + i];
    out->kind = value[1];
    out->delta = (int64_t)index_get_u64(value + 8);
    out->balance = (int64_t)index_get_u64(value + 16);
    out->available = (int64_t)index_get_u64(value + 24);
    out->version = index_get_u64(value + 32);
    out->timestamp = index_get_u64(value + 40);
    memcpy(out->transfer_id, value + HISTORY_VALUE_FIXED, value[2]);
    out->transfer_id[value[2]] = 0;
    return true;
}
