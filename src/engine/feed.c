/*
 * feed.c — the change feed (coffer_feed_*): every change the log holds, read from the log on
 * the reader's own thread through a log cursor (the local segments' or, with the log in
 * PostgreSQL, coffer_log's), never from the writer's state, and only up to the durable seq
 * (a follower's applied seq). Each recorded event becomes one change, typed by its op and its
 * outcome (format 2 records carry both). Waiters for the next change sleep on a condition the
 * log thread signals after a sync (a follower's writer, after applying), only when someone
 * waits.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "log/cursor.h"
#include "log/pg_cursor.h"

/* A read stops after this many events or this many bytes of log, selected or not, so a
 * filter that matches nothing cannot make one call read the whole log. */
#define FEED_SCAN_EVENTS_MAX 65536
#define FEED_SCAN_BYTES_MAX (8u << 20)
/* The visitors' "page full": stop, and read from here next time. Apart from every record
 * status and coffer code, since record_each and the cursor hand it back as it is. */
#define FEED_PAGE_FULL 1000

/* The strings of one change, copied out of the record (the scratch is reused per record). */
typedef struct feed_strings {
    char id[COFFER_TRANSFER_ID_MAX + 1];
    char currency[COFFER_CURRENCY_MAX + 1];
    char from[COFFER_ACCOUNT_ID_MAX + 1];
    char to[COFFER_ACCOUNT_ID_MAX + 1];
    char hold_id[COFFER_TRANSFER_ID_MAX + 1];
    char submitted_by[COFFER_SUBMITTER_MAX + 1];
    char metadata[COFFER_METADATA_MAX + 1];
} feed_strings;

/* The entries of the record read last, decoded once: a reader that stopped inside a record
 * (a full page) goes on from them instead of decoding it again. They point into `scratch`.
 * Known by its place and its hash: a position of a log in PostgreSQL is reused when a failover
 * loses rows, so the same place may hold another record later. */
typedef struct feed_record_cache {
    bool valid;
    uint32_t segment;
    uint64_t offset;
    record_header header;
    record_entry *entries;
    size_t count, capacity;
} feed_record_cache;

struct coffer_feed {
    coffer *db;
    log_cursor *cursor; /* the local log's segments, or */
    pg_cursor *pg;      /* the rows of a log in PostgreSQL */
    record_scratch scratch;
    feed_record_cache record;
    uint64_t read_to; /* the next_after of the last read: a read from elsewhere seeks */
    feed_strings *strings;
    size_t strings_capacity;
};

/* One call of coffer_feed_read. */
typedef struct feed_page {
    coffer_feed *feed;
    uint64_t after_seq;
    uint32_t types;
    const char *account;
    coffer_change *out;
    size_t max, count, scanned;
    size_t kept; /* out[0..kept) have their strings in the feed's slots */
    uint64_t next_after;
    const record_header *header; /* of the record being read */
} feed_page;

static const char *const type_names[COFFER_CHANGE_TYPE_LIMIT] = {
    [COFFER_CHANGE_ACCOUNT_CREATED] = "account.created",
    [COFFER_CHANGE_TRANSFER_POSTED] = "transfer.posted",
    [COFFER_CHANGE_HOLD_CREATED] = "hold.created",
    [COFFER_CHANGE_HOLD_POSTED] = "hold.posted",
    [COFFER_CHANGE_HOLD_VOIDED] = "hold.voided",
    [COFFER_CHANGE_HOLD_EXPIRED] = "hold.expired",
    [COFFER_CHANGE_TRANSFER_REJECTED] = "transfer.rejected",
};

const char *coffer_change_type_name(int type)
{
    return type > 0 && type < COFFER_CHANGE_TYPE_LIMIT ? type_names[type] : 0;
}

int coffer_change_type_parse(const char *name, size_t length)
{
    for (int type = 1; name && type < COFFER_CHANGE_TYPE_LIMIT; type++)
        if (strlen(type_names[type]) == length && memcmp(type_names[type], name, length) == 0)
            return type;
    return 0;
}

/* The change a recorded event makes, or 0 for none (a position that recorded nothing, or a
 * refused account creation, which changes no transfer). */
static int change_type(const coffer_event *event, const coffer_result *result)
{
    if (result->seq == 0)
        return 0;
    if (!coffer_code_is_success(result->code))
        return event->op == COFFER_OP_CREATE_ACCOUNT ? 0 : COFFER_CHANGE_TRANSFER_REJECTED;
    switch (event->op) {
    case COFFER_OP_CREATE_ACCOUNT:
        return COFFER_CHANGE_ACCOUNT_CREATED;
    case COFFER_OP_TRANSFER:
        return event->hold_timeout_ms ? COFFER_CHANGE_HOLD_CREATED : COFFER_CHANGE_TRANSFER_POSTED;
    case COFFER_OP_POST:
        return COFFER_CHANGE_HOLD_POSTED;
    case COFFER_OP_VOID:
        return COFFER_CHANGE_HOLD_VOIDED;
    case COFFER_OP_EXPIRE:
        return COFFER_CHANGE_HOLD_EXPIRED;
    default:
        return 0;
    }
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static bool touches(const coffer_event *event, const coffer_result *result, const char *account)
{
    if (event->op == COFFER_OP_CREATE_ACCOUNT)
        return same(event->id, account);
    return same(event->from, account) || same(event->to, account) ||
           same(result->hold_from, account) || same(result->hold_to, account);
}

/* Copies `text` (or NULL) into `into`, which has room for the longest such string. */
static const char *keep(char *into, size_t size, const char *text, size_t length)
{
    if (!text)
        return 0;
    if (length >= size)
        length = size - 1; /* cannot happen for a record that decoded: the limits are checked */
    memcpy(into, text, length);
    into[length] = 0;
    return into;
}

static void change_fill(feed_page *page, uint64_t seq, int type, const coffer_event *event,
                        const coffer_result *result, const char *submitted_by)
{
    /* Its strings stay in the decoded record until the page moves to another record. */
    coffer_change *change = &page->out[page->count];
    change->seq = seq;
    change->timestamp = page->header->ts0 + (seq - page->header->seq_base);
    change->type = type;
    change->event = *event;
    change->result = *result;
    change->submitted_by = submitted_by;
    page->count++;
}

/* Copies the strings of the changes that still point into the decoded record into their
 * slots: before another record is decoded over it. */
static void page_keep_strings(feed_page *page)
{
    for (; page->kept < page->count; page->kept++) {
        coffer_event *e = &page->out[page->kept].event;
        feed_strings *s = &page->feed->strings[page->kept];
        e->id = keep(s->id, sizeof s->id, e->id, e->id ? strlen(e->id) : 0);
        e->currency = keep(s->currency, sizeof s->currency, e->currency,
                           e->currency ? strlen(e->currency) : 0);
        e->from = keep(s->from, sizeof s->from, e->from, e->from ? strlen(e->from) : 0);
        e->to = keep(s->to, sizeof s->to, e->to, e->to ? strlen(e->to) : 0);
        e->hold_id =
            keep(s->hold_id, sizeof s->hold_id, e->hold_id, e->hold_id ? strlen(e->hold_id) : 0);
        e->metadata = keep(s->metadata, sizeof s->metadata, e->metadata, e->metadata_len);
        const char *by = page->out[page->kept].submitted_by;
        page->out[page->kept].submitted_by =
            keep(s->submitted_by, sizeof s->submitted_by, by, by ? strlen(by) : 0);
    }
}

/* One event position of a record: a change when it made one the filter selects. */
static int feed_event(feed_page *page, uint64_t seq, const coffer_event *event,
                      const coffer_result *result, const char *submitted_by)
{
    if (seq <= page->after_seq)
        return 0;
    if (page->count == page->max || page->scanned == FEED_SCAN_EVENTS_MAX)
        return FEED_PAGE_FULL;
    page->scanned++;
    page->next_after = seq;
    int type = result ? change_type(event, result) : 0; /* format 1: no outcome, no change */
    if (type && (page->types & COFFER_CHANGE_BIT(type)) &&
        (!page->account || touches(event, result, page->account)))
        change_fill(page, seq, type, event, result, submitted_by);
    return 0;
}

static int feed_entry(const record_entry *entry, void *context)
{
    feed_page *page = context;
    if (entry->kind == RECORD_EXPIRE) {
        coffer_event expiry = {
            .op = COFFER_OP_EXPIRE, .id = entry->hold_id, .hold_id = entry->hold_id};
        return feed_event(page, entry->seq, &expiry, entry->results, entry->submitted_by);
    }
    for (size_t i = 0; i < entry->count; i++) {
        const coffer_result *result = entry->results ? &entry->results[i] : 0;
        int code = feed_event(page, entry->seq + i, &entry->events[i], result, entry->submitted_by);
        if (code != 0)
            return code;
    }
    return 0;
}

static int keep_entry(const record_entry *entry, void *context)
{
    feed_record_cache *cache = context;
    if (cache->count == cache->capacity) {
        size_t capacity = cache->capacity ? 2 * cache->capacity : 64;
        record_entry *grown = realloc(cache->entries, capacity * sizeof *grown);
        if (!grown)
            return COFFER_OUT_OF_MEMORY;
        cache->entries = grown;
        cache->capacity = capacity;
    }
    cache->entries[cache->count++] = *entry;
    return 0;
}

/* Decodes the record at (segment, offset) into the cache, unless it is there already. */
static int record_cached(feed_page *page, const uint8_t *bytes, const record_header *header,
                         uint32_t segment, uint64_t offset)
{
    coffer_feed *feed = page->feed;
    feed_record_cache *cache = &feed->record;
    if (cache->valid && cache->segment == segment && cache->offset == offset &&
        memcmp(cache->header.hash, header->hash, RECORD_HASH_BYTES) == 0)
        return COFFER_OK;
    page_keep_strings(page); /* the decode below reuses the scratch they point into */
    cache->valid = false;
    cache->count = 0;
    int status = record_each(bytes, header, &feed->scratch, keep_entry, cache);
    if (status == COFFER_OUT_OF_MEMORY)
        return status;
    if (status != RECORD_OK)
        return COFFER_STORAGE_FAILED;
    cache->valid = true;
    cache->segment = segment;
    cache->offset = offset;
    cache->header = *header;
    return COFFER_OK;
}

static int feed_record(const uint8_t *bytes, const record_header *header, uint32_t segment,
                       uint64_t offset, void *context)
{
    feed_page *page = context;
    feed_record_cache *cache = &page->feed->record;
    int code = record_cached(page, bytes, header, segment, offset);
    if (code != COFFER_OK)
        return code;
    page->header = &cache->header;
    for (size_t i = 0; i < cache->count; i++) {
        const record_entry *entry = &cache->entries[i];
        uint64_t last = entry->seq + (entry->count ? entry->count - 1 : 0);
        if (last <= page->after_seq)
            continue; /* read by an earlier page */
        code = feed_entry(entry, page);
        if (code != 0)
            return code;
    }
    if (header->last_seq > page->next_after)
        page->next_after = header->last_seq;
    return 0;
}

int coffer_feed_open(coffer *db, coffer_feed **out)
{
    if (!db || !out)
        return COFFER_INVALID_ARGUMENT;
    *out = 0;
    if (!db->dir)
        return COFFER_NOT_SUPPORTED;
    coffer_feed *feed = calloc(1, sizeof *feed);
    if (!feed)
        return COFFER_OUT_OF_MEMORY;
    feed->db = db;
    int code = db->feed_pool ? pg_cursor_open(db->feed_pool, &feed->pg)
                             : log_cursor_open(db->dir, &feed->cursor);
    if (code != COFFER_OK) {
        free(feed);
        return code;
    }
    *out = feed;
    return COFFER_OK;
}

void coffer_feed_close(coffer_feed *feed)
{
    if (!feed)
        return;
    log_cursor_close(feed->cursor);
    pg_cursor_close(feed->pg);
    record_scratch_free(&feed->scratch);
    free(feed->record.entries);
    free(feed->strings);
    free(feed);
}

int coffer_feed_read(coffer_feed *feed, uint64_t after_seq, const coffer_feed_filter *filter,
                     coffer_change *out, size_t max, size_t *count, uint64_t *next_after)
{
    if (!feed || !out || max == 0 || !count || !next_after)
        return COFFER_INVALID_ARGUMENT;
    *count = 0;
    *next_after = after_seq;
    if (max > feed->strings_capacity) {
        feed_strings *grown = realloc(feed->strings, max * sizeof *grown);
        if (!grown)
            return COFFER_OUT_OF_MEMORY;
        feed->strings = grown;
        feed->strings_capacity = max;
    }
    feed_page page = {
        .feed = feed,
        .after_seq = after_seq,
        .types = filter && filter->types ? filter->types : COFFER_CHANGE_DEFAULT_TYPES,
        .account = filter ? filter->account : 0,
        .out = out,
        .max = max,
        .next_after = after_seq,
    };
    if (after_seq != feed->read_to)
        feed->record.valid = false; /* the cursor seeks: decode what it finds afresh */
    char error[1024] = "";          /* the cursor's reason; none when a record did not decode */
    uint64_t durable = atomic_load(&feed->db->durable_seq);
    /* On a follower durable_seq is what it has applied: it never shows a change before that. */
    int code = feed->pg ? pg_cursor_read(feed->pg, after_seq, durable, FEED_SCAN_BYTES_MAX,
                                         feed_record, &page, error, sizeof error)
                        : log_cursor_read(feed->cursor, after_seq, durable, FEED_SCAN_BYTES_MAX,
                                          feed_record, &page, error, sizeof error);
    if (code != COFFER_OK && code != FEED_PAGE_FULL) {
        feed->record.valid = false;
        if (code == COFFER_STORAGE_FAILED || code == COFFER_OVERLOADED)
            engine_log(feed->db, "change feed: %s", error[0] ? error : "a record does not decode");
        return code;
    }
    *count = page.count;
    *next_after = feed->read_to = page.next_after;
    return COFFER_OK;
}

uint64_t coffer_durable_seq(coffer *db)
{
    return db && db->dir ? atomic_load(&db->durable_seq) : 0;
}

int feed_init(coffer *db)
{
    /* A log in PostgreSQL: the readers share a few sessions of their own. */
    if (db->options.log_location &&
        pg_read_pool_open(db->options.log_location, 0, &db->feed_pool) != COFFER_OK)
        return COFFER_OUT_OF_MEMORY;
    pthread_mutex_init(&db->feed_mutex, 0);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&db->feed_wake, &attributes);
    pthread_condattr_destroy(&attributes);
    db->feed_ready = true;
    return COFFER_OK;
}

void feed_notify(coffer *db)
{
    if (atomic_load(&db->feed_waiters) == 0)
        return;
    pthread_mutex_lock(&db->feed_mutex);
    pthread_cond_broadcast(&db->feed_wake);
    pthread_mutex_unlock(&db->feed_mutex);
}

void feed_stop(coffer *db)
{
    if (!db->feed_ready)
        return;
    pthread_mutex_lock(&db->feed_mutex);
    db->feed_closing = true;
    pthread_cond_broadcast(&db->feed_wake);
    pthread_mutex_unlock(&db->feed_mutex);
}

void feed_destroy(coffer *db)
{
    if (!db->feed_ready)
        return;
    pthread_cond_destroy(&db->feed_wake);
    pthread_mutex_destroy(&db->feed_mutex);
    pg_read_pool_close(db->feed_pool);
    db->feed_pool = 0;
    db->feed_ready = false;
}

uint64_t coffer_feed_wait(coffer *db, uint64_t after_seq, uint64_t timeout_ms)
{
    if (!db || !db->dir || !db->feed_ready)
        return 0;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    uint64_t nanoseconds = (uint64_t)deadline.tv_nsec + (timeout_ms % 1000) * 1000000u;
    deadline.tv_sec += (time_t)(timeout_ms / 1000 + nanoseconds / 1000000000u);
    deadline.tv_nsec = (long)(nanoseconds % 1000000000u);
    pthread_mutex_lock(&db->feed_mutex);
    atomic_fetch_add(&db->feed_waiters, 1);
    /* The log thread stores durable_seq before it looks at feed_waiters, and this thread
     * counts itself before it looks at durable_seq: one of the two sees the other. */
    int status = 0;
    while (atomic_load(&db->durable_seq) <= after_seq && !db->feed_closing && status == 0)
        status = pthread_cond_timedwait(&db->feed_wake, &db->feed_mutex, &deadline);
    atomic_fetch_sub(&db->feed_waiters, 1);
    pthread_mutex_unlock(&db->feed_mutex);
    return atomic_load(&db->durable_seq);
}
