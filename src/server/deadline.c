/*
 * deadline.c — the receive deadlines (deadline.h). Each connection has a watched entry in a
 * list from MHD's "started" notice to its "closed" one, with a duplicate of its socket: a
 * shutdown() through the duplicate ends the connection on MHD's own thread (it reads an end of
 * stream), and the duplicate keeps the socket from being reused by another connection while
 * the watcher may still touch it.
 */
#include "server/deadline.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How often the watcher looks: a deadline is enforced within this much past it. */
#define DEADLINES_TICK_NS (250ull * 1000 * 1000)

enum watched_phase { WAIT_HEADERS, WAIT_BODY, ANSWERING, SHUT };

typedef struct watched {
    struct watched *previous, *next;
    int fd; /* our duplicate of the connection's socket */
    atomic_int phase;
    _Atomic uint64_t since_ns; /* when the current phase began */
} watched;

struct deadlines {
    uint64_t header_ns, body_ns;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    bool stopping;
    watched *list;
    pthread_t thread;
    atomic_uint_fast64_t *closed;
};

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static watched *watched_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : 0;
}

static void enter(struct MHD_Connection *connection, int phase)
{
    watched *w = watched_of(connection);
    if (!w)
        return;
    atomic_store(&w->since_ns, monotonic_ns());
    int current = atomic_load(&w->phase);
    if (current != SHUT) /* a connection already shut stays so */
        atomic_compare_exchange_strong(&w->phase, &current, phase);
}

void deadlines_headers_received(struct MHD_Connection *connection)
{
    enter(connection, WAIT_BODY);
}

void deadlines_body_received(struct MHD_Connection *connection)
{
    enter(connection, ANSWERING);
}

void deadlines_answered(struct MHD_Connection *connection)
{
    enter(connection, WAIT_HEADERS);
}

void deadlines_notify(void *closure, struct MHD_Connection *connection, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    deadlines *d = closure;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        watched *w = calloc(1, sizeof *w);
        if (!w)
            return; /* unwatched: MHD's idle timeout still applies */
        w->fd = info ? fcntl(info->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
        atomic_store(&w->since_ns, monotonic_ns());
        pthread_mutex_lock(&d->mutex);
        w->next = d->list;
        if (d->list)
            d->list->previous = w;
        d->list = w;
        pthread_mutex_unlock(&d->mutex);
        *socket_context = w;
        return;
    }
    watched *w = *socket_context;
    if (!w)
        return;
    pthread_mutex_lock(&d->mutex);
    if (w->previous)
        w->previous->next = w->next;
    else
        d->list = w->next;
    if (w->next)
        w->next->previous = w->previous;
    pthread_mutex_unlock(&d->mutex);
    if (w->fd >= 0)
        close(w->fd);
    free(w);
    *socket_context = 0;
}

/* Shuts down every connection past its deadline; returns how many. */
static unsigned enforce(deadlines *d, uint64_t now)
{
    unsigned shut = 0;
    for (watched *w = d->list; w; w = w->next) {
        int phase = atomic_load(&w->phase);
        uint64_t bound = phase == WAIT_HEADERS ? d->header_ns : phase == WAIT_BODY ? d->body_ns : 0;
        if (bound == 0 || now - atomic_load(&w->since_ns) <= bound || w->fd < 0)
            continue;
        if (!atomic_compare_exchange_strong(&w->phase, &phase, SHUT))
            continue; /* it moved on meanwhile */
        shutdown(w->fd, SHUT_RDWR);
        shut++;
    }
    return shut;
}

static void *watch(void *argument)
{
    deadlines *d = argument;
    pthread_mutex_lock(&d->mutex);
    while (!d->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t nanoseconds = (uint64_t)until.tv_nsec + DEADLINES_TICK_NS;
        until.tv_sec += (time_t)(nanoseconds / 1000000000u);
        until.tv_nsec = (long)(nanoseconds % 1000000000u);
        pthread_cond_timedwait(&d->wake, &d->mutex, &until);
        unsigned shut = enforce(d, monotonic_ns());
        if (shut) {
            atomic_fetch_add(d->closed, shut);
            /* One line per round, not per connection: an attack must not flood the log. */
            fprintf(stderr,
                    "coffer: closed %u connection(s) that did not send a request's headers "
                    "or body in time\n",
                    shut);
        }
    }
    pthread_mutex_unlock(&d->mutex);
    return 0;
}

deadlines *deadlines_start(uint64_t header_ns, uint64_t body_ns, atomic_uint_fast64_t *closed)
{
    deadlines *d = calloc(1, sizeof *d);
    if (!d)
        return 0;
    d->header_ns = header_ns;
    d->body_ns = body_ns;
    d->closed = closed;
    pthread_mutex_init(&d->mutex, 0);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&d->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    if (pthread_create(&d->thread, 0, watch, d) != 0) {
        pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->mutex);
        free(d);
        return 0;
    }
    return d;
}

void deadlines_stop(deadlines *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mutex);
    d->stopping = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->mutex);
    pthread_join(d->thread, 0);
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->mutex);
    free(d);
}
