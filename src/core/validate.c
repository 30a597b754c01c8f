/*
 * validate.c — field rules every event must meet before it can touch the ledger
 * (docs/semantics.md "Validation"). An invalid event records nothing.
 */
#include <string.h>

#include "core/ledger.h"

static const char *const field_names[FIELD_COUNT] = {
    [FIELD_NONE] = "",
    [FIELD_ID] = "/id",
    [FIELD_OP] = "/op",
    [FIELD_FLAGS] = "/flags",
    [FIELD_CURRENCY] = "/currency",
    [FIELD_MIN_BALANCE] = "/min_balance",
    [FIELD_MAX_BALANCE] = "/max_balance",
    [FIELD_FROM] = "/from",
    [FIELD_TO] = "/to",
    [FIELD_AMOUNT] = "/amount",
    [FIELD_HOLD_TIMEOUT] = "/hold/timeout_ms",
    [FIELD_UP_TO] = "/up_to",
    [FIELD_EXPECT_FROM] = "/expect/from_version",
    [FIELD_EXPECT_TO] = "/expect/to_version",
    [FIELD_POST] = "/post",
    [FIELD_VOID] = "/void",
    [FIELD_METADATA] = "/metadata",
};

const char *ledger_field_name(int field)
{
    return field > FIELD_NONE && field < FIELD_COUNT ? field_names[field] : 0;
}

int ledger_field_index(const char *name)
{
    for (int field = FIELD_NONE + 1; name && field < FIELD_COUNT; field++)
        if (field_names[field] == name || strcmp(field_names[field], name) == 0)
            return field;
    return FIELD_NONE;
}

/* The bytes ids may hold, [A-Za-z0-9._:@/-], as a table: this runs for three ids per event. */
#define ID_RANGE(low, high) [low... high] = 1
static const uint8_t id_chars[256] = {
    ID_RANGE('a', 'z'), ID_RANGE('A', 'Z'), ID_RANGE('0', '9'), ['.'] = 1, ['_'] = 1,
    [':'] = 1,          ['@'] = 1,          ['/'] = 1,          ['-'] = 1};

/* Ids are 1..max bytes of [A-Za-z0-9._:@/-]; reads at most max + 1 bytes. */
static bool id_valid(const char *id, size_t max)
{
    if (!id)
        return false;
    size_t length = 0;
    for (; id[length]; length++)
        if (length == max || !id_chars[(unsigned char)id[length]])
            return false;
    return length > 0;
}

static bool currency_valid(const char *currency)
{
    if (!currency)
        return false;
    size_t length = 0;
    for (; currency[length]; length++) {
        unsigned char c = (unsigned char)currency[length];
        if (length == COFFER_CURRENCY_MAX)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return length > 0;
}

static int invalid(int *field, int which)
{
    *field = which;
    return COFFER_INVALID_FIELD;
}

static int validate_account(const coffer_event *event, int *field)
{
    if (!id_valid(event->id, COFFER_ACCOUNT_ID_MAX))
        return invalid(field, FIELD_ID);
    if (event->flags & ~(COFFER_FLAG_MIN_UNBOUNDED | COFFER_FLAG_HAS_MAX))
        return invalid(field, FIELD_FLAGS);
    if (!currency_valid(event->currency))
        return invalid(field, FIELD_CURRENCY);
    bool bounded = !(event->flags & COFFER_FLAG_MIN_UNBOUNDED);
    /* A floor above zero would put a new, empty account outside its own limits. */
    if (bounded && event->min_balance > 0)
        return invalid(field, FIELD_MIN_BALANCE);
    if (event->flags & COFFER_FLAG_HAS_MAX) {
        if (event->max_balance < 0)
            return invalid(field, FIELD_MAX_BALANCE);
        if (bounded && event->max_balance < event->min_balance)
            return invalid(field, FIELD_MAX_BALANCE);
    }
    return COFFER_OK;
}

static int validate_transfer(const coffer_event *event, int *field)
{
    const uint8_t allowed = COFFER_FLAG_UP_TO | COFFER_FLAG_EXPECT_FROM | COFFER_FLAG_EXPECT_TO;
    if (event->flags & ~allowed)
        return invalid(field, FIELD_FLAGS);
    if (!id_valid(event->from, COFFER_ACCOUNT_ID_MAX))
        return invalid(field, FIELD_FROM);
    if (!id_valid(event->to, COFFER_ACCOUNT_ID_MAX))
        return invalid(field, FIELD_TO);
    if (event->amount < 1)
        return invalid(field, FIELD_AMOUNT);
    if (event->hold_timeout_ms > COFFER_HOLD_TIMEOUT_MS_MAX)
        return invalid(field, FIELD_HOLD_TIMEOUT);
    /* A hold reserves a definite amount; "as much as possible" is for sweeps and resets. */
    if (event->hold_timeout_ms > 0 && (event->flags & COFFER_FLAG_UP_TO))
        return invalid(field, FIELD_UP_TO);
    return COFFER_OK;
}

static int validate_resolution(const coffer_event *event, int *field)
{
    int target_field = event->op == COFFER_OP_POST ? FIELD_POST : FIELD_VOID;
    if (event->flags)
        return invalid(field, FIELD_FLAGS);
    if (!id_valid(event->hold_id, COFFER_TRANSFER_ID_MAX))
        return invalid(field, target_field);
    if (event->amount < 0 || (event->op == COFFER_OP_VOID && event->amount != 0))
        return invalid(field, FIELD_AMOUNT);
    return COFFER_OK;
}

int ledger_validate(const coffer_event *event, int *field)
{
    *field = FIELD_NONE;
    if (event->metadata_len > COFFER_METADATA_MAX || (event->metadata_len && !event->metadata))
        return invalid(field, FIELD_METADATA);
    switch (event->op) {
    case COFFER_OP_CREATE_ACCOUNT:
        return validate_account(event, field);
    case COFFER_OP_TRANSFER:
    case COFFER_OP_POST:
    case COFFER_OP_VOID:
        if (!id_valid(event->id, COFFER_TRANSFER_ID_MAX))
            return invalid(field, FIELD_ID);
        return event->op == COFFER_OP_TRANSFER ? validate_transfer(event, field)
                                               : validate_resolution(event, field);
    default:
        return invalid(field, FIELD_OP);
    }
}
