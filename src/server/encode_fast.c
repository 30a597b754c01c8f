/*
 * encode_fast.c — the success object of a created transfer without metadata, nearly every
 * write's answer, and the change feed's commonest changes (a transfer posted or a hold
 * created, without metadata), written straight into the response text: no JSON tree, no
 * allocation per value. Each must give byte for byte what the general encoder gives
 * (fuzz_encode and test_codec compare them); anything it does not cover it declines.
 */
#include <string.h>

#include "server/encode.h"

static void put_text(text_buffer *t, const char *text)
{
    text_append(t, text, strlen(text));
}

static void put_i64(text_buffer *t, int64_t value)
{
    if (value < 0) {
        TEXT_PUT(t, "-");
        text_append_u64(t, (uint64_t)0 - (uint64_t)value);
        return;
    }
    text_append_u64(t, (uint64_t)value);
}

static void put_time(text_buffer *t, uint64_t ns)
{
    char text[48];
    encode_time(text, sizeof text, ns);
    put_text(t, text);
}

static void put_account_after(text_buffer *t, const char *id, const coffer_account_after *after)
{
    TEXT_PUT(t, "{\"id\":\"");
    put_text(t, id);
    TEXT_PUT(t, "\",\"balance\":");
    put_i64(t, after->balance);
    TEXT_PUT(t, ",\"available\":");
    put_i64(t, after->available);
    TEXT_PUT(t, ",\"version\":");
    text_append_u64(t, after->version);
    TEXT_PUT(t, "}");
}

/* The members of "transfer" after its id, state, amount, seq and time. */
static void put_transfer_terms(text_buffer *t, const coffer_event *e, const coffer_result *r)
{
    TEXT_PUT(t, ",\"from\":\"");
    put_text(t, e->from);
    TEXT_PUT(t, "\",\"to\":\"");
    put_text(t, e->to);
    TEXT_PUT(t, "\"");
    if (e->hold_timeout_ms) {
        TEXT_PUT(t, ",\"hold\":{\"timeout_ms\":");
        text_append_u64(t, e->hold_timeout_ms);
        TEXT_PUT(t, "},\"expires_at\":\"");
        put_time(t, r->expires_at);
        TEXT_PUT(t, "\"");
    }
    if (e->flags & COFFER_FLAG_UP_TO) {
        TEXT_PUT(t, ",\"up_to\":true,\"amount_requested\":");
        put_i64(t, e->amount);
    }
}

/* "transfer":{...},"accounts":{...}: a created transfer as its answer shows it. Ids and
 * account names are [A-Za-z0-9._:@/-] (validated), so they need no escaping. */
static void put_transfer_and_accounts(text_buffer *t, const coffer_event *e, const coffer_result *r)
{
    TEXT_PUT(t, "\"transfer\":{\"id\":\"");
    put_text(t, e->id);
    TEXT_PUT(t, "\",\"state\":\"");
    put_text(t, encode_state_name(r->state));
    TEXT_PUT(t, "\",\"amount\":");
    put_i64(t, r->amount);
    TEXT_PUT(t, ",\"seq\":");
    text_append_u64(t, r->seq);
    TEXT_PUT(t, ",\"timestamp\":\"");
    put_time(t, r->timestamp);
    TEXT_PUT(t, "\"");
    put_transfer_terms(t, e, r);
    TEXT_PUT(t, "},\"accounts\":{\"from\":");
    put_account_after(t, e->from, &r->from);
    TEXT_PUT(t, ",\"to\":");
    put_account_after(t, e->to, &r->to);
    TEXT_PUT(t, "}");
}

bool encode_success_fast(text_buffer *t, const coffer_event *e, const coffer_result *r, bool item)
{
    if (e->op != COFFER_OP_TRANSFER || e->metadata_len)
        return false;
    TEXT_PUT(t, "{\"code\":\"created\",");
    put_transfer_and_accounts(t, e, r);
    if (item) {
        TEXT_PUT(t, ",\"status\":");
        text_append_u64(t, (uint64_t)encode_result_status(r));
        if (r->replayed)
            TEXT_PUT(t, ",\"replayed\":true");
    }
    TEXT_PUT(t, "}");
    return true;
}

/* A submitter's name that JSON takes as it is (token names always are; a name given through
 * the C API may not be). */
static bool plain_text(const char *text)
{
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        if (*c < 0x20 || *c >= 0x7f || *c == '"' || *c == '\\')
            return false;
    return true;
}

bool encode_change_fast(text_buffer *t, const coffer_change *change)
{
    const coffer_event *e = &change->event;
    if ((change->type != COFFER_CHANGE_TRANSFER_POSTED &&
         change->type != COFFER_CHANGE_HOLD_CREATED) ||
        e->metadata_len || (change->submitted_by && !plain_text(change->submitted_by)))
        return false;
    TEXT_PUT(t, "{\"seq\":");
    text_append_u64(t, change->seq);
    TEXT_PUT(t, ",\"timestamp\":\"");
    put_time(t, change->timestamp);
    TEXT_PUT(t, "\",\"type\":\"");
    put_text(t, coffer_change_type_name(change->type));
    TEXT_PUT(t, "\",\"submitted_by\":");
    if (change->submitted_by) {
        TEXT_PUT(t, "\"");
        put_text(t, change->submitted_by);
        TEXT_PUT(t, "\"");
    } else {
        TEXT_PUT(t, "null");
    }
    TEXT_PUT(t, ",");
    put_transfer_and_accounts(t, e, &change->result);
    TEXT_PUT(t, "}");
    return true;
}
