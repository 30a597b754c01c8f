/*
 * prefault.c — see prefault.h.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "engine/prefault.h"

#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it and nothing happens */
#endif

#define PREFAULT_CHUNK (2u << 20) /* one huge page per call, so stop requests are seen soon */

static void *prefault_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-prefault"); /* as ps, top and perf show it */
    prefault *p = argument;
    pthread_mutex_lock(&p->mutex);
    for (;;) {
        while (p->count == 0 && !p->stopping)
            pthread_cond_wait(&p->wake, &p->mutex);
        if (p->stopping)
            break;
        store_range range = p->queue[p->head];
        size_t step = range.length < PREFAULT_CHUNK ? range.length : PREFAULT_CHUNK;
        p->queue[p->head].start = (char *)range.start + step;
        p->queue[p->head].length -= step;
        if (p->queue[p->head].length == 0) {
            p->head = (p->head + 1) % PREFAULT_QUEUE_MAX;
            p->count--;
        }
        pthread_mutex_unlock(&p->mutex);
        madvise(range.start, step, MADV_POPULATE_WRITE); /* failure only costs speed */
        pthread_mutex_lock(&p->mutex);
    }
    pthread_mutex_unlock(&p->mutex);
    return 0;
}

int prefault_start(prefault *p)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mutex, 0);
    pthread_cond_init(&p->wake, 0);
    if (pthread_create(&p->thread, 0, prefault_main, p) != 0)
        return -1;
    p->started = true;
    return 0;
}

void prefault_post(prefault *p, const store_ranges *ranges)
{
    if (!p->started || ranges->count == 0)
        return;
    pthread_mutex_lock(&p->mutex);
    for (size_t i = 0; i < ranges->count && p->count < PREFAULT_QUEUE_MAX; i++) {
        p->queue[(p->head + p->count) % PREFAULT_QUEUE_MAX] = ranges->items[i];
        p->count++;
    }
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mutex);
}

void prefault_stop(prefault *p)
{
    if (!p->started)
        return;
    pthread_mutex_lock(&p->mutex);
    p->stopping = true;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    pthread_join(p->thread, 0);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    p->started = false;
}
