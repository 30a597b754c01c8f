/*
 * pg_cursor.c — the change feed's reader of a log in PostgreSQL (log/pg_cursor.h): a point of
 * the log per cursor, pages of rows fetched on a session borrowed from the pool.
 */
#include "log/pg_cursor.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coffer.h"

/* Rows and bytes one query fetches at most: a page of the feed is 8 MiB of log at most, and a
 * reader holds no more than this in memory at once. */
#define PG_CURSOR_ROWS 256
#define PG_CURSOR_BYTES (1u << 20)

struct pg_read_pool {
    char *conninfo;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    pg_log *idle[PG_READ_POOL_SESSIONS_MAX];
    size_t idle_count, open_count; /* open_count: idle or lent */
};

struct pg_cursor {
    pg_read_pool *pool;
    bool placed;            /* `point` is a point of the log this cursor read or sought */
    pg_log_point point;     /* the row every record before it ended at or before point.last_seq */
    uint64_t held_last_seq; /* the record after `point` that a visitor stopped on, 0: none */
};

int pg_read_pool_open(const char *conninfo, pg_read_pool **out)
{
    *out = 0;
    pg_read_pool *pool = calloc(1, sizeof *pool);
    if (!pool || !(pool->conninfo = strdup(conninfo))) {
        free(pool);
        return COFFER_OUT_OF_MEMORY;
    }
    pthread_mutex_init(&pool->lock, 0);
    pthread_cond_init(&pool->freed, 0);
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
 * back. NULL (the reason in `error`) when a new one cannot connect. */
static pg_log *session_take(pg_read_pool *pool, char *error, size_t error_size)
{
    pthread_mutex_lock(&pool->lock);
    while (pool->idle_count == 0 && pool->open_count == PG_READ_POOL_SESSIONS_MAX)
        pthread_cond_wait(&pool->freed, &pool->lock);
    pg_log *session = pool->idle_count ? pool->idle[--pool->idle_count] : 0;
    if (!session)
        pool->open_count++;
    pthread_mutex_unlock(&pool->lock);
    if (session)
        return session;
    int status = pg_log_open(pool->conninfo, 0, &session, error, error_size);
    if (status == PG_LOG_OK)
        return session;
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

int pg_cursor_read(pg_cursor *cursor, uint64_t after_seq, uint64_t durable_seq, size_t max_bytes,
                   wal_record_fn visit, void *context, char *error, size_t error_size)
{
    if (after_seq >= durable_seq)
        return COFFER_OK; /* nothing durable to read: no round trip */
    pg_log *session = session_take(cursor->pool, error, error_size);
    if (!session)
        return COFFER_STORAGE_FAILED;
    int status = PG_LOG_OK;
    /* Goes on from the point where the last read stopped when it is where this one starts (or
     * inside the record it stopped on); anywhere else, one index probe finds the place. */
    bool here = cursor->placed &&
                (after_seq == cursor->point.last_seq ||
                 (after_seq > cursor->point.last_seq && after_seq < cursor->held_last_seq));
    if (!here) {
        cursor->placed = false;
        cursor->held_last_seq = 0;
        status = pg_log_seek(session, after_seq, &cursor->point);
        cursor->placed = status == PG_LOG_OK;
    }
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
        if (rows == 0 || cursor->point.last_seq >= durable_seq)
            break; /* at the end of what is durable here */
    }
    if (status != PG_LOG_OK) {
        snprintf(error, error_size, "the log in PostgreSQL: %s (%s)", pg_log_error(session),
                 pg_log_status_name(status));
        cursor->placed = false; /* the next read seeks again */
        page.code = COFFER_STORAGE_FAILED;
    }
    session_give(cursor->pool, session);
    return page.code;
}
