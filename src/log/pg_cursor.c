/*
 * pg_cursor.c — the change feed's reader of a log in PostgreSQL (log/pg_cursor.h): a point of
 * the log per cursor, pages of rows fetched on a session borrowed from the pool.
 */
#include "log/pg_cursor.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coffer.h"

/* Rows and bytes one query fetches at most: a page of the feed is 8 MiB of log at most, and a
 * reader holds no more than this in memory at once. */
#define PG_CURSOR_ROWS 256
#define PG_CURSOR_BYTES (1u << 20)

struct pg_read_pool {
    char *conninfo;
    pg_read_pool_options options;
    pthread_mutex_t lock;
    pthread_cond_t freed; /* on CLOCK_MONOTONIC */
    pg_log *idle[PG_READ_POOL_SESSIONS_MAX];
    size_t idle_count, open_count; /* open_count: idle or lent */
};

struct pg_cursor {
    pg_read_pool *pool;
    bool placed;            /* `point` is a point of the log this cursor read or sought */
    pg_log_point point;     /* the row every record before it ended at or before point.last_seq */
    uint64_t held_last_seq; /* the record after `point` that a visitor stopped on, 0: none */
};

void pg_read_pool_options_init(pg_read_pool_options *options)
{
    *options =
        (pg_read_pool_options){.wait_ms = PG_READ_POOL_WAIT_MS_DEFAULT,
                               .statement_timeout_ms = PG_READ_POOL_STATEMENT_TIMEOUT_MS_DEFAULT};
}

int pg_read_pool_open(const char *conninfo, const pg_read_pool_options *options, pg_read_pool **out)
{
    *out = 0;
    pg_read_pool *pool = calloc(1, sizeof *pool);
    if (!pool || !(pool->conninfo = strdup(conninfo))) {
        free(pool);
        return COFFER_OUT_OF_MEMORY;
    }
    if (options)
        pool->options = *options;
    else
        pg_read_pool_options_init(&pool->options);
    pthread_mutex_init(&pool->lock, 0);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->freed, &attributes);
    pthread_condattr_destroy(&attributes);
    *out = pool;
    return COFFER_OK;
}

void pg_read_pool_close(pg_read_pool *pool)
{
    if (!pool)
        return;
    for (size_t i = 0; i < pool->idle_count; i++)
        pg_log_close(pool->idle[i]);
    pthread_cond_destroy(&pool->freed);
    pthread_mutex_destroy(&pool->lock);
    free(pool->conninfo);
    free(pool);
}

/* An idle session, else a new one while fewer than the most are open, else the next one given
 * back within wait_ms. NULL with *code set: overloaded (none freed in time) or storage_failed
 * (a new one cannot connect), the reason in `error`. */
static pg_log *session_take(pg_read_pool *pool, int *code, char *error, size_t error_size)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    uint64_t nanoseconds = (uint64_t)deadline.tv_nsec + (uint64_t)pool->options.wait_ms * 1000000u;
    deadline.tv_sec += (time_t)(nanoseconds / 1000000000u);
    deadline.tv_nsec = (long)(nanoseconds % 1000000000u);
    pthread_mutex_lock(&pool->lock);
    int waited = 0;
    while (pool->idle_count == 0 && pool->open_count == PG_READ_POOL_SESSIONS_MAX && waited == 0)
        waited = pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline);
    bool busy = pool->idle_count == 0 && pool->open_count == PG_READ_POOL_SESSIONS_MAX;
    pg_log *session = !busy && pool->idle_count ? pool->idle[--pool->idle_count] : 0;
    if (!busy && !session)
        pool->open_count++;
    pthread_mutex_unlock(&pool->lock);
    if (busy) {
        snprintf(error, error_size,
                 "the log in PostgreSQL: all %d feed sessions stayed busy for %" PRIu32 " ms",
                 PG_READ_POOL_SESSIONS_MAX, pool->options.wait_ms);
        *code = COFFER_OVERLOADED;
        return 0;
    }
    if (session)
        return session;
    char reason[512] = "";
    int status = pg_log_open_reader(pool->conninfo, pool->options.statement_timeout_ms, &session,
                                    reason, sizeof reason);
    if (status == PG_LOG_OK)
        return session;
    snprintf(error, error_size, "the log in PostgreSQL: %s (%s)", reason,
             pg_log_status_name(status));
    *code = status == PG_LOG_TIMED_OUT ? COFFER_OVERLOADED : COFFER_STORAGE_FAILED;
    pthread_mutex_lock(&pool->lock);
    pool->open_count--;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

static void session_give(pg_read_pool *pool, pg_log *session)
{
    pthread_mutex_lock(&pool->lock);
    pool->idle[pool->idle_count++] = session; /* it reconnects by itself when next used */
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

int pg_cursor_open(pg_read_pool *pool, pg_cursor **out)
{
    pg_cursor *cursor = calloc(1, sizeof *cursor);
    *out = cursor;
    if (!cursor)
        return COFFER_OUT_OF_MEMORY;
    cursor->pool = pool;
    return COFFER_OK;
}

void pg_cursor_close(pg_cursor *cursor)
{
    free(cursor);
}

/* One read's rows: where the cursor stands after each row it has finished with. */
typedef struct cursor_page {
    pg_cursor *cursor;
    uint64_t after_seq;
    wal_record_fn visit;
    void *context;
    size_t visited, max_bytes;
    int code; /* the visitor's non-zero code, or storage_failed */
} cursor_page;

static int page_row(const pg_log_row *row, void *context)
{
    cursor_page *page = context;
    pg_cursor *cursor = page->cursor;
    if (row->kind == PG_LOG_ROW_RECORD && row->last_seq > page->after_seq) {
        record_header header;
        if (record_peek(row->bytes, row->length, &header) != RECORD_OK) {
            page->code = COFFER_STORAGE_FAILED; /* pg_log_read checked it: cannot happen */
            return 1;
        }
        int code = page->visit(row->bytes, &header, 0, row->position, page->context);
        if (code != 0) {
            page->code = code; /* the visitor may want this record again: stay before it */
            cursor->held_last_seq = row->last_seq;
            return 1;
        }
        page->visited += row->length;
    }
    cursor->point =
        (pg_log_point){.position = row->position, .last_seq = row->last_seq, .term = row->term};
    memcpy(cursor->point.hash, row->hash, RECORD_HASH_BYTES);
    cursor->held_last_seq = 0;
    return page->visited >= page->max_bytes; /* the next read goes on from here */
}

/* Places the cursor at `after_seq` with one index probe. */
static int cursor_seek(pg_cursor *cursor, pg_log *session, uint64_t after_seq)
{
    cursor->placed = false;
    cursor->held_last_seq = 0;
    int status = pg_log_seek(session, after_seq, &cursor->point);
    cursor->placed = status == PG_LOG_OK;
    return status;
}

int pg_cursor_read(pg_cursor *cursor, uint64_t after_seq, uint64_t durable_seq, size_t max_bytes,
                   wal_record_fn visit, void *context, char *error, size_t error_size)
{
    if (after_seq >= durable_seq)
        return COFFER_OK; /* nothing durable to read: no round trip */
    int code = COFFER_OK;
    pg_log *session = session_take(cursor->pool, &code, error, error_size);
    if (!session)
        return code;
    int status = PG_LOG_OK;
    /* Goes on from the point where the last read stopped when it is where this one starts (or
     * inside the record it stopped on); anywhere else, one index probe finds the place. */
    bool here = cursor->placed &&
                (after_seq == cursor->point.last_seq ||
                 (after_seq > cursor->point.last_seq && after_seq < cursor->held_last_seq));
    if (!here)
        status = cursor_seek(cursor, session, after_seq);
    cursor_page page = {.cursor = cursor,
                        .after_seq = after_seq,
                        .visit = visit,
                        .context = context,
                        .max_bytes = max_bytes};
    while (status == PG_LOG_OK && page.code == 0 && page.visited < max_bytes) {
        pg_log_point from = cursor->point;
        uint32_t rows = 0;
        status = pg_log_read_bounded(session, &from, PG_CURSOR_ROWS, PG_CURSOR_BYTES, durable_seq,
                                     page_row, &page, &rows);
        if (status == PG_LOG_INVALID_RECORD && here && page.visited == 0 && page.code == 0) {
            /* The point kept from the last read may be a row a failover lost (rows written
             * again at its position and after): find after_seq again, once, before calling
             * the log damaged. Nothing was visited yet, so nothing is visited twice. */
            here = false;
            status = cursor_seek(cursor, session, after_seq);
            continue;
        }
        if (rows == 0 || cursor->point.last_seq >= durable_seq)
            break; /* at the end of what is durable here */
    }
    if (status != PG_LOG_OK) {
        snprintf(error, error_size, "the log in PostgreSQL: %s (%s)", pg_log_error(session),
                 pg_log_status_name(status));
        cursor->placed = false; /* the next read seeks again */
        page.code = status == PG_LOG_TIMED_OUT ? COFFER_OVERLOADED : COFFER_STORAGE_FAILED;
    }
    session_give(cursor->pool, session);
    return page.code;
}
