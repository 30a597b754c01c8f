/*
 * feed_http.c — see feed_http.h. With the log in local segments, pages are read on the network
 * thread that answers them (a read is bounded: at most 8 MiB of log from files); waiting is
 * never done there: a long-poll with nothing to send is suspended and handed to the waiter
 * thread, which resumes it. With the log in PostgreSQL a read waits for the database (a pool
 * session, a connect, a query), so a long-poll's pages are read on the filler thread while its
 * connection is suspended, and the network thread only encodes the page read. A stream's frames
 * are read and encoded on the filler thread while its connection is suspended; the network
 * thread only copies out the bytes ready.
 */
#define _GNU_SOURCE /* gettid, pthread_setname_np */
#include "server/feed_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/check.h"
#include "server/http.h"
#include "server/parse.h"

/* A long-poll or a stream reads at most this many pages in a row that the filter empties
 * before it answers (or waits): 32 MiB of log at most per turn of a network thread. */
#define FEED_READS_PER_TURN 4
/* The waiter thread sleeps at most this long, so that a deadline or a stop is seen soon. */
#define FEED_IDLE_SLEEP_MS 500
#define FEED_BUSY_SLEEP_MS 100
/* A stream reads pages of this many changes and stops encoding once its buffer holds this
 * much (one change is at most a few KiB), MHD pulls from it in blocks of this size. */
#define FEED_STREAM_PAGE 64
#define FEED_STREAM_BUFFER_MAX ((size_t)1 << 20)
#define FEED_STREAM_BLOCK ((size_t)32 << 10)
/* The filler reads pages into a stream's buffer until it holds this much (each hand-over
 * between the threads costs a suspend and a resume), or at most this many pages a turn, so
 * that one stream far behind does not keep the others waiting long. */
#define FEED_STREAM_FILL_BYTES ((size_t)256 << 10)
#define FEED_STREAM_FILL_PAGES 64

typedef struct feed_stream feed_stream;
static bool stream_fill(feed_stream *st, uint64_t now);

static const char keep_alive[] = ": keep-alive\n\n";

/* ---- the query ----------------------------------------------------------------------------- */

typedef struct feed_query {
    uint64_t after, limit, wait_ms;
    coffer_feed_filter filter;
} feed_query;

struct feed_poll {
    feed_waiter waiter;
    feed_query query;
    coffer_change *changes; /* query.limit of them */
    /* The log in PostgreSQL: the filler thread reads the pages, the network thread answers. */
    bool remote;
    bool ready;          /* a page was read (or the wait ended): answer it */
    int code;            /* the read's outcome */
    size_t count;        /* changes[0..count) */
    coffer_feed *reader; /* owns the page's strings until it is encoded; NULL: none */
};

/* The query of GET /v1/events into q; COFFER_OK, or the code with its field and detail. */
static int parse_query(request *r, feed_query *q, const char **field, const char **detail)
{
    const char *after = http_query(r, "after"), *limit = http_query(r, "limit"),
               *wait = http_query(r, "wait_ms"), *types = http_query(r, "types");
    *q = (feed_query){.limit = 100, .filter.account = http_query(r, "account")};
    *field = "/after", *detail = "a seq (a whole number)";
    if (after && !parse_number(after, 0, UINT64_MAX, &q->after))
        return COFFER_INVALID_FIELD;
    *field = "/limit", *detail = "1 to 1000";
    if (limit && !parse_number(limit, 1, 1000, &q->limit))
        return COFFER_INVALID_FIELD;
    *field = "/wait_ms", *detail = "0 to 30000 (milliseconds)";
    if (wait && !parse_number(wait, 0, FEED_WAIT_MS_MAX, &q->wait_ms))
        return COFFER_INVALID_FIELD;
    *field = "/types", *detail = "comma-separated change types, like hold.posted,hold.expired";
    if (types && !parse_change_types(types, &q->filter.types))
        return COFFER_INVALID_FIELD;
    const char *account = q->filter.account;
    *field = "/account", *detail = "an account id (1 to 64 bytes)";
    if (account && (!*account || strlen(account) > COFFER_ACCOUNT_ID_MAX))
        return COFFER_INVALID_FIELD;
    return COFFER_OK;
}

/* ---- idle readers -------------------------------------------------------------------------- */

/* A reader for `after`: the idle one whose last read ended there, else the oldest idle one
 * (it seeks), else a new one. NULL with *code set when none can be opened. */
static coffer_feed *reader_take(feed_hub *hub, uint64_t after, int *code)
{
    pthread_mutex_lock(&hub->lock);
    size_t chosen = 0;
    for (size_t i = 0; i < hub->idle_count; i++)
        if (hub->idle[i].next_after == after)
            chosen = i;
    coffer_feed *feed = hub->idle_count ? hub->idle[chosen].feed : NULL;
    if (feed) {
        hub->idle_count--;
        memmove(&hub->idle[chosen], &hub->idle[chosen + 1],
                (hub->idle_count - chosen) * sizeof *hub->idle);
    }
    pthread_mutex_unlock(&hub->lock);
    *code = feed ? COFFER_OK : coffer_feed_open(hub->server->db, &feed);
    return feed;
}

/* Keeps a reader for the next read from `next_after`; the oldest idle one goes when full. */
static void reader_give(feed_hub *hub, coffer_feed *feed, uint64_t next_after)
{
    coffer_feed *evicted = NULL;
    pthread_mutex_lock(&hub->lock);
    if (hub->idle_count == FEED_READERS_IDLE_MAX) {
        evicted = hub->idle[0].feed;
        hub->idle_count--;
        memmove(&hub->idle[0], &hub->idle[1], hub->idle_count * sizeof *hub->idle);
    }
    hub->idle[hub->idle_count++] = (feed_reader_slot){feed, next_after};
    pthread_mutex_unlock(&hub->lock);
    coffer_feed_close(evicted);
}

/*
 * Reads changes after *after into out[0..max), up to FEED_READS_PER_TURN pages while a filter
 * leaves them empty and more is durable. *after becomes the position to read on from.
 */
static int read_some(coffer *db, coffer_feed *feed, uint64_t *after,
                     const coffer_feed_filter *filter, coffer_change *out, size_t max,
                     size_t *count)
{
    *count = 0;
    for (int turn = 0; turn < FEED_READS_PER_TURN && *count == 0; turn++) {
        uint64_t durable = coffer_durable_seq(db), next_after = *after;
        int code = coffer_feed_read(feed, *after, filter, out, max, count, &next_after);
        if (code != COFFER_OK)
            return code;
        *after = next_after;
        if (next_after >= durable)
            break; /* caught up */
    }
    return COFFER_OK;
}

/* ---- waiting ------------------------------------------------------------------------------- */

static void hub_due(feed_hub *hub, feed_waiter *waiter);

/* Suspends a long-poll (or a read waiting for its seq) for the waiter thread or, `read`, for
 * the filler thread to read its page. */
static int hub_suspend_poll(feed_hub *hub, feed_waiter *waiter, bool read)
{
    COFFER_ASSERT(waiter->poll);
    server *s = hub->server;
    pthread_mutex_lock(&hub->lock);
    int code = hub->stopping                            ? COFFER_SHUTTING_DOWN
               : hub->polls_waiting == FEED_WAITERS_MAX ? COFFER_OVERLOADED
                                                        : COFFER_OK;
    if (code == COFFER_OK) {
        /* A long-poll counts as suspended until it completes, so a drain waits for its
         * answer (a stream only while suspended, so a drain never waits for a slow reader). */
        if (!waiter->poll->engine_used)
            atomic_fetch_add(&s->suspended, 1);
        waiter->poll->engine_used = true;
        waiter->poll->state = STATE_WAITING;
        atomic_store(&s->metrics.feed_waiters, ++hub->polls_waiting);
        MHD_suspend_connection(waiter->connection);
        if (read) {
            hub_due(hub, waiter);
        } else {
            hub->waiting[hub->waiting_count++] = waiter;
            pthread_cond_signal(&hub->wake);
        }
    }
    pthread_mutex_unlock(&hub->lock);
    return code;
}

int feed_hub_wait(feed_hub *hub, feed_waiter *waiter)
{
    return hub_suspend_poll(hub, waiter, false);
}

/* The long-poll a waiter is, when its pages are read by the filler thread; else NULL. */
static struct feed_poll *remote_poll(const feed_waiter *waiter)
{
    struct feed_poll *p = waiter->poll ? waiter->poll->feed_poll : NULL;
    return p && p->remote ? p : NULL;
}

/* Resumes a suspended waiter (the lock held). */
static void waiter_resume(feed_hub *hub, feed_waiter *waiter)
{
    struct feed_poll *p = remote_poll(waiter);
    if (p && !p->ready) { /* its time is up, or draining: the empty page is the answer */
        p->ready = true;
        p->code = COFFER_OK;
        p->count = 0;
    }
    if (waiter->poll) {
        waiter->poll->state = STATE_ANSWERED;
        atomic_store(&hub->server->metrics.feed_waiters, --hub->polls_waiting);
    } else {
        atomic_fetch_sub(&hub->server->suspended, 1);
    }
    MHD_resume_connection(waiter->connection);
}

/* Puts a suspended stream, or a long-poll whose page is to be read, in the filler's queue (the
 * lock held). */
static void hub_due(feed_hub *hub, feed_waiter *waiter)
{
    COFFER_ASSERT(hub->due_count < sizeof hub->due / sizeof hub->due[0]);
    hub->due[hub->due_count++] = waiter;
    pthread_cond_signal(&hub->filler_wake);
}

/* Takes waiting[index] out: a long-poll, or anything when draining, is resumed (it answers
 * what it has); a stream otherwise goes to the filler, and so does a long-poll whose pages the
 * filler reads when the durable seq `moved` past it before its deadline (the lock held). */
static void hub_resume(feed_hub *hub, size_t index, bool moved)
{
    feed_waiter *waiter = hub->waiting[index];
    hub->waiting[index] = hub->waiting[--hub->waiting_count];
    if (hub->stopping || (waiter->poll && !(moved && remote_poll(waiter))))
        waiter_resume(hub, waiter);
    else
        hub_due(hub, waiter);
}

/* Suspends a stream whose buffer is empty and queues it for the filler. COFFER_OK, or
 * shutting_down (draining) with nothing suspended. */
static int hub_fill(feed_hub *hub, feed_waiter *waiter)
{
    pthread_mutex_lock(&hub->lock);
    int code = hub->stopping ? COFFER_SHUTTING_DOWN : COFFER_OK;
    if (code == COFFER_OK) {
        atomic_fetch_add(&hub->server->suspended, 1);
        MHD_suspend_connection(waiter->connection);
        hub_due(hub, waiter);
    }
    pthread_mutex_unlock(&hub->lock);
    return code;
}

static struct timespec clock_after_ms(uint64_t ms)
{
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    uint64_t nanoseconds = (uint64_t)at.tv_nsec + ms * 1000000u;
    at.tv_sec += (time_t)(nanoseconds / 1000000000u);
    at.tv_nsec = (long)(nanoseconds % 1000000000u);
    return at;
}

/* The waiter thread: resumes whatever the durable seq has passed or whose deadline came,
 * then sleeps until the next sync, the next deadline, or at most FEED_BUSY_SLEEP_MS. */
static void *waiter_main(void *context)
{
    feed_hub *hub = context;
    coffer *db = hub->server->db;
    pthread_mutex_lock(&hub->lock);
    while (!hub->stopped) {
        uint64_t now = http_now_ns(), durable = coffer_durable_seq(db);
        uint64_t next_deadline = now + (uint64_t)FEED_BUSY_SLEEP_MS * 1000000u;
        for (size_t i = hub->waiting_count; i-- > 0;) {
            const feed_waiter *waiter = hub->waiting[i];
            if (hub->stopping || waiter->after < durable || waiter->deadline_ns <= now)
                hub_resume(hub, i, waiter->after < durable && waiter->deadline_ns > now);
            else if (waiter->deadline_ns < next_deadline)
                next_deadline = waiter->deadline_ns;
        }
        if (hub->waiting_count == 0) {
            struct timespec until = clock_after_ms(FEED_IDLE_SLEEP_MS);
            pthread_cond_timedwait(&hub->wake, &hub->lock, &until);
            continue;
        }
        pthread_mutex_unlock(&hub->lock);
        coffer_feed_wait(db, durable, (next_deadline - now + 999999u) / 1000000u);
        pthread_mutex_lock(&hub->lock);
    }
    pthread_mutex_unlock(&hub->lock);
    return NULL;
}

static bool poll_fill(feed_hub *hub, struct feed_poll *p);

/* The filler thread: fills the due streams' buffers and reads the due long-polls' pages,
 * oldest first, and resumes those that have something to send; one with nothing waits for the
 * next change (or keep-alive, or its deadline), one still behind (its pages all filtered out)
 * goes to the back of the queue. */
static void *filler_main(void *context)
{
    feed_hub *hub = context;
    pthread_setname_np(pthread_self(), "coffer-feed"); /* as ps, top and perf show it */
    /* Streams yield to the writer: they catch up on the idle CPU after a burst. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), FEED_NICE);
    pthread_mutex_lock(&hub->lock);
    while (!hub->stopped) {
        if (hub->due_count == 0) {
            pthread_cond_wait(&hub->filler_wake, &hub->lock);
            continue;
        }
        feed_waiter *waiter = hub->due[0];
        hub->due_count--;
        memmove(&hub->due[0], &hub->due[1], hub->due_count * sizeof *hub->due);
        pthread_mutex_unlock(&hub->lock);
        /* It is suspended: nothing else touches it while it is filled. */
        struct feed_poll *p = remote_poll(waiter);
        bool ready = p ? poll_fill(hub, p) : stream_fill((feed_stream *)waiter, http_now_ns());
        uint64_t durable = coffer_durable_seq(hub->server->db);
        pthread_mutex_lock(&hub->lock);
        if (ready || hub->stopping)
            waiter_resume(hub, waiter);
        else if (waiter->after < durable)
            hub_due(hub, waiter);
        else { /* caught up: the waiter thread hands it back on the next change */
            hub->waiting[hub->waiting_count++] = waiter;
            pthread_cond_signal(&hub->wake);
        }
    }
    pthread_mutex_unlock(&hub->lock);
    return NULL;
}

bool feed_hub_start(feed_hub *hub, server *s)
{
    memset(hub, 0, sizeof *hub);
    hub->server = s;
    pthread_mutex_init(&hub->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&hub->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    pthread_cond_init(&hub->filler_wake, NULL);
    hub->thread_started = pthread_create(&hub->thread, NULL, waiter_main, hub) == 0;
    hub->filler_started = pthread_create(&hub->filler, NULL, filler_main, hub) == 0;
    return hub->thread_started && hub->filler_started;
}

void feed_hub_drain(feed_hub *hub)
{
    pthread_mutex_lock(&hub->lock);
    hub->stopping = true;
    while (hub->waiting_count > 0)
        hub_resume(hub, hub->waiting_count - 1, false);
    /* The streams in the filler's queue end; the one in its hands is resumed when filled. */
    while (hub->due_count > 0)
        waiter_resume(hub, hub->due[--hub->due_count]);
    pthread_mutex_unlock(&hub->lock);
}

void feed_hub_stop(feed_hub *hub)
{
    pthread_mutex_lock(&hub->lock);
    hub->stopping = hub->stopped = true;
    pthread_cond_signal(&hub->wake);
    pthread_cond_signal(&hub->filler_wake);
    pthread_mutex_unlock(&hub->lock);
    if (hub->thread_started)
        pthread_join(hub->thread, NULL);
    if (hub->filler_started)
        pthread_join(hub->filler, NULL);
    for (size_t i = 0; i < hub->idle_count; i++)
        coffer_feed_close(hub->idle[i].feed);
    hub->idle_count = 0;
    pthread_cond_destroy(&hub->wake);
    pthread_cond_destroy(&hub->filler_wake);
    pthread_mutex_destroy(&hub->lock);
}

/* ---- pages and long-polls ------------------------------------------------------------------ */

/* Answers the page read (encoded before the reader, which owns its strings, goes back). */
static enum MHD_Result poll_send(request *r, coffer_feed *reader, size_t count, uint64_t after)
{
    struct feed_poll *p = r->feed_poll;
    atomic_fetch_add(&r->server->metrics.feed_events_read, count);
    encoded response;
    encode_events(&response, p->changes, count, after, coffer_durable_seq(r->server->db));
    if (reader)
        reader_give(&r->server->feed, reader, after);
    return http_send(r, &response);
}

/* On the filler thread, the long-poll suspended (the log in PostgreSQL): reads its page. True
 * when it is to be answered: changes, a failure, or its time is up. */
static bool poll_fill(feed_hub *hub, struct feed_poll *p)
{
    int code;
    coffer_feed *reader = reader_take(hub, p->waiter.after, &code);
    size_t count = 0;
    uint64_t after = p->waiter.after;
    if (reader)
        code = read_some(hub->server->db, reader, &after, &p->query.filter, p->changes,
                         p->query.limit, &count);
    if (code != COFFER_OK) {
        coffer_feed_close(reader);
        *p = (struct feed_poll){.waiter = p->waiter,
                                .query = p->query,
                                .changes = p->changes,
                                .remote = true,
                                .ready = true,
                                .code = code};
        return true;
    }
    p->query.after = p->waiter.after = after;
    if (count > 0 || http_now_ns() >= p->waiter.deadline_ns) {
        p->reader = reader;
        p->count = count;
        p->code = COFFER_OK;
        p->ready = true;
        return true;
    }
    reader_give(hub, reader, after);
    return false;
}

static enum MHD_Result poll_failed(request *r, int code)
{
    return http_problem(r, code, 0,
                        code == COFFER_OVERLOADED
                            ? "the change feed's database is busy; retry later"
                            : "the change feed cannot be read");
}

/* Reads a page; answers it, or waits when it is empty and the long-poll's time is not up. With
 * the log in PostgreSQL the filler thread reads it: this answers what it read. */
static enum MHD_Result poll_answer(request *r)
{
    struct feed_poll *p = r->feed_poll;
    feed_hub *hub = &r->server->feed;
    int code;
    if (p->ready) {
        p->ready = false;
        if (p->code != COFFER_OK)
            return poll_failed(r, p->code);
        coffer_feed *read_by = p->reader;
        p->reader = NULL;
        return poll_send(r, read_by, p->count, p->waiter.after);
    }
    if (p->remote) {
        code = hub_suspend_poll(hub, &p->waiter, true);
        if (code == COFFER_OVERLOADED)
            return http_problem(r, code, 0, "too many long-polls waiting; retry later");
        return code == COFFER_OK ? MHD_YES : http_problem(r, code, 0, "the server is stopping");
    }
    coffer_feed *reader = reader_take(hub, p->query.after, &code);
    if (!reader)
        return http_problem(r, code, 0, "the change feed cannot be read");
    size_t count = 0;
    uint64_t after = p->query.after;
    code = read_some(r->server->db, reader, &after, &p->query.filter, p->changes, p->query.limit,
                     &count);
    if (code != COFFER_OK) {
        coffer_feed_close(reader);
        return poll_failed(r, code);
    }
    if (count > 0 || http_now_ns() >= p->waiter.deadline_ns)
        return poll_send(r, reader, count, after);
    reader_give(hub, reader, after);
    p->query.after = p->waiter.after = after;
    code = feed_hub_wait(hub, &p->waiter);
    if (code == COFFER_OVERLOADED)
        return http_problem(r, code, 0, "too many long-polls waiting; retry later");
    /* Waiting, or draining: then the empty page is the answer. */
    return code == COFFER_OK ? MHD_YES : poll_send(r, NULL, 0, after);
}

enum MHD_Result answer_events(request *r)
{
    return poll_answer(r);
}

static enum MHD_Result poll_start(request *r, const feed_query *query)
{
    struct feed_poll *p = calloc(1, sizeof *p);
    coffer_change *changes = calloc(query->limit, sizeof *changes);
    if (!p || !changes) {
        free(p);
        free(changes);
        return http_problem(r, COFFER_OUT_OF_MEMORY, 0, 0);
    }
    r->feed_poll = p;
    p->query = *query;
    p->changes = changes;
    p->remote = r->server->options->log_location != NULL;
    p->waiter = (feed_waiter){.connection = r->connection,
                              .after = query->after,
                              .poll = r,
                              .deadline_ns = r->started_ns + query->wait_ms * 1000000u};
    return poll_answer(r);
}

/* ---- streams ------------------------------------------------------------------------------- */

struct feed_stream {
    /* First, so that the filler finds the stream from its waiter. waiter.after: the stream's
     * position (the last seq read). */
    feed_waiter waiter;
    server *server;
    coffer_feed *feed; /* its own: a stream never loses its place */
    coffer_feed_filter filter;
    char account[COFFER_ACCOUNT_ID_MAX + 1];
    char request_id[72];
    coffer_change changes[FEED_STREAM_PAGE];
    text_buffer out; /* frames not yet handed to MHD: out.bytes[sent..out.length) */
    size_t sent;
    uint64_t last_write_ns; /* when something was last put in `out` (keep-alives) */
    uint64_t last_pull_ns;  /* when MHD last took bytes while more were pending; 0 on resume */
    bool ending;            /* end once `out` is drained */
};

/* Ends the stream with an "error" event saying why, after the frames already pending (and
 * counts it when it is a cut-off). */
static void stream_end_with(feed_stream *st, int code, const char *detail)
{
    encode_problem_frame(&st->out, code, detail);
    st->ending = true;
    if (code == COFFER_OVERLOADED)
        atomic_fetch_add(&st->server->metrics.feed_streams_cut, 1);
    fprintf(stderr, "coffer: event stream %s ended: %s\n", st->request_id, detail);
}

/* Encodes changes[0..count) while the buffer has room; moves the position past the last one
 * encoded, or to next_after when all were. */
static void stream_encode(feed_stream *st, size_t count, uint64_t next_after)
{
    size_t encoded_count = 0;
    while (encoded_count < count && st->out.length < FEED_STREAM_BUFFER_MAX - FEED_STREAM_BLOCK)
        encode_change_frame(&st->out, &st->changes[encoded_count++]);
    st->waiter.after = encoded_count == count ? next_after : st->changes[encoded_count - 1].seq;
    atomic_fetch_add(&st->server->metrics.feed_events_read, encoded_count);
}

/* On the filler thread, the stream suspended: fills the empty buffer with changes, else a
 * keep-alive when one is due. False when there is nothing to send (the stream's deadline is
 * then its next keep-alive). */
static bool stream_fill(feed_stream *st, uint64_t now)
{
    st->out.length = st->sent = 0;
    coffer *db = st->server->db;
    int empty_pages = 0;
    for (int page = 0; page < FEED_STREAM_FILL_PAGES && st->out.length < FEED_STREAM_FILL_BYTES;
         page++) {
        uint64_t durable = coffer_durable_seq(db), next_after = st->waiter.after;
        size_t count = 0;
        int code = coffer_feed_read(st->feed, st->waiter.after, &st->filter, st->changes,
                                    FEED_STREAM_PAGE, &count, &next_after);
        if (code == COFFER_OVERLOADED)
            break; /* the database is busy: the stream tries again on its next turn */
        if (code != COFFER_OK) {
            stream_end_with(st, code, "the change feed cannot be read");
            return true;
        }
        stream_encode(st, count, next_after);
        if (next_after >= durable || (count == 0 && ++empty_pages == FEED_READS_PER_TURN))
            break;
    }
    if (st->out.failed) {
        stream_end_with(st, COFFER_OUT_OF_MEMORY, "out of memory");
        return true;
    }
    uint64_t keep_alive_ns = (uint64_t)st->server->options->sse_keepalive_ms * 1000000u;
    if (st->out.length == 0 && now - st->last_write_ns >= keep_alive_ns)
        text_append(&st->out, keep_alive, sizeof keep_alive - 1);
    if (st->out.length > 0) {
        st->last_write_ns = now;
        return true;
    }
    st->waiter.deadline_ns = st->last_write_ns + keep_alive_ns;
    return false;
}

/* MHD pulls the stream's bytes as the socket drains. None ready: the stream is suspended for
 * the filler, which resumes it once some are (0 returned meanwhile). */
static ssize_t stream_read(void *context, uint64_t position, char *buffer, size_t max)
{
    (void)position;
    feed_stream *st = context;
    uint64_t now = http_now_ns();
    uint64_t stall_ns = (uint64_t)st->server->options->sse_stall_seconds * 1000000000u;
    if (st->sent < st->out.length && st->last_pull_ns && now - st->last_pull_ns > stall_ns &&
        !st->ending)
        stream_end_with(st, COFFER_OVERLOADED,
                        "the client was too slow: it read nothing for longer than the bound");
    if (st->sent == st->out.length) {
        if (st->ending || atomic_load(&st->server->draining))
            return MHD_CONTENT_READER_END_OF_STREAM;
        st->last_pull_ns = 0;
        if (hub_fill(&st->server->feed, &st->waiter) == COFFER_OK)
            return 0;
        return MHD_CONTENT_READER_END_OF_STREAM; /* draining */
    }
    size_t length = st->out.length - st->sent < max ? st->out.length - st->sent : max;
    memcpy(buffer, st->out.bytes + st->sent, length);
    st->sent += length;
    st->last_pull_ns = now;
    return (ssize_t)length;
}

static void stream_free(void *context)
{
    feed_stream *st = context;
    atomic_fetch_sub(&st->server->metrics.feed_streams, 1);
    coffer_feed_close(st->feed);
    free(st->out.bytes);
    free(st);
}

/* A new stream after `after`, or NULL with *code set. Counted in feed_streams until freed. */
static feed_stream *stream_new(request *r, const feed_query *query, uint64_t after, int *code)
{
    server *s = r->server;
    if (atomic_fetch_add(&s->metrics.feed_streams, 1) >= FEED_STREAMS_MAX) {
        atomic_fetch_sub(&s->metrics.feed_streams, 1);
        *code = COFFER_OVERLOADED;
        return NULL;
    }
    feed_stream *st = calloc(1, sizeof *st);
    *code = st ? coffer_feed_open(s->db, &st->feed) : COFFER_OUT_OF_MEMORY;
    if (*code != COFFER_OK) {
        free(st);
        atomic_fetch_sub(&s->metrics.feed_streams, 1);
        return NULL;
    }
    st->server = s;
    st->waiter = (feed_waiter){.connection = r->connection, .after = after};
    st->filter.types = query->filter.types;
    if (query->filter.account) {
        snprintf(st->account, sizeof st->account, "%s", query->filter.account);
        st->filter.account = st->account;
    }
    snprintf(st->request_id, sizeof st->request_id, "%s", r->request_id);
    /* It opens with a comment, so that the client has the headers at once. */
    text_append(&st->out, keep_alive, sizeof keep_alive - 1);
    st->last_write_ns = http_now_ns();
    return st;
}

static enum MHD_Result stream_start(request *r, const feed_query *query)
{
    uint64_t after = query->after;
    const char *last_event_id = http_header(r, "Last-Event-ID");
    if (last_event_id && !parse_number(last_event_id, 0, UINT64_MAX, &after))
        return http_problem(r, COFFER_INVALID_FIELD, "Last-Event-ID", "a seq (a whole number)");
    int code;
    feed_stream *st = stream_new(r, query, after, &code);
    if (!st)
        return http_problem(r, code, 0,
                            code == COFFER_OVERLOADED ? "too many event streams open; retry later"
                                                      : "the change feed cannot be read");
    struct MHD_Response *reply = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, FEED_STREAM_BLOCK, stream_read, st, stream_free);
    if (!reply) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(reply, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(reply, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    http_add_headers(r, reply);
    /* A stream is never idle for longer than a keep-alive; one whose bytes stay unsent past
     * the stall bound is closed by MHD (counted as cut off on completion). */
    MHD_set_connection_option(r->connection, MHD_CONNECTION_OPTION_TIMEOUT,
                              r->server->options->sse_stall_seconds);
    r->streaming = true;
    enum MHD_Result queued = MHD_queue_response(r->connection, MHD_HTTP_OK, reply);
    MHD_destroy_response(reply);
    http_count(r, MHD_HTTP_OK, COFFER_OK);
    return queued;
}

/* ---- the route ----------------------------------------------------------------------------- */

enum MHD_Result handle_events(request *r)
{
    feed_query query;
    const char *field, *detail;
    int code = parse_query(r, &query, &field, &detail);
    if (code != COFFER_OK)
        return http_problem(r, code, field, detail);
    const char *accept = http_header(r, MHD_HTTP_HEADER_ACCEPT);
    if (accept && strstr(accept, "text/event-stream"))
        return stream_start(r, &query);
    return poll_start(r, &query);
}

void feed_request_done(request *r, enum MHD_RequestTerminationCode reason)
{
    if (r->streaming && reason == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED) {
        atomic_fetch_add(&r->server->metrics.feed_streams_cut, 1);
        fprintf(stderr, "coffer: event stream %s cut off: its client read nothing for %u s\n",
                r->request_id, r->server->options->sse_stall_seconds);
    }
    if (r->feed_poll) {
        coffer_feed_close(r->feed_poll->reader);
        free(r->feed_poll->changes);
        free(r->feed_poll);
        r->feed_poll = NULL;
    }
}
