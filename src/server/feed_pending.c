/*
 * feed_pending.c — TEMPORARY stand-ins for the change feed (src/engine/feed.c on main soon), so
 * that webhooks build and their unit tests run before it lands: an empty feed.
 */
#include "server/feed_pending.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

static const char *const change_names[COFFER_CHANGE_TYPE_LIMIT] = {0,
                                                                   "account.created",
                                                                   "transfer.posted",
                                                                   "hold.created",
                                                                   "hold.posted",
                                                                   "hold.voided",
                                                                   "hold.expired",
                                                                   "transfer.rejected"};

const char *coffer_change_type_name(int type)
{
    return type > 0 && type < COFFER_CHANGE_TYPE_LIMIT ? change_names[type] : 0;
}

int coffer_change_type_parse(const char *name, size_t length)
{
    for (int type = 1; type < COFFER_CHANGE_TYPE_LIMIT; type++)
        if (strlen(change_names[type]) == length && !memcmp(change_names[type], name, length))
            return type;
    return 0;
}

int coffer_feed_open(coffer *db, coffer_feed **out)
{
    (void)db;
    *out = (coffer_feed *)1;
    return COFFER_OK;
}

int coffer_feed_read(coffer_feed *feed, uint64_t after_seq, const coffer_feed_filter *filter,
                     coffer_change *out, size_t max, size_t *count, uint64_t *next_after)
{
    (void)feed, (void)filter, (void)out, (void)max;
    *count = 0;
    *next_after = after_seq;
    return COFFER_OK;
}

void coffer_feed_close(coffer_feed *feed)
{
    (void)feed;
}

uint64_t coffer_durable_seq(coffer *db)
{
    (void)db;
    return 0;
}

uint64_t coffer_feed_wait(coffer *db, uint64_t after_seq, uint64_t timeout_ms)
{
    (void)db, (void)after_seq;
    usleep((useconds_t)(timeout_ms * 1000));
    return 0;
}

json_t *encode_change_json(const coffer_change *change)
{
    return json_pack("{s:I, s:s}", "seq", (json_int_t)change->seq, "type",
                     coffer_change_type_name(change->type));
}
