/*
 * prefault.h — a helper thread that populates memory the store will need soon
 * (madvise MADV_POPULATE_WRITE), so page faults and page zeroing happen off the writer.
 * Purely an optimisation: if it falls behind, the writer faults the pages in itself.
 */
#ifndef COFFER_ENGINE_PREFAULT_H
#define COFFER_ENGINE_PREFAULT_H

#include <pthread.h>
#include <stdbool.h>

#include "store/region.h"

#define PREFAULT_QUEUE_MAX 64

typedef struct prefault {
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    store_range queue[PREFAULT_QUEUE_MAX];
    size_t head, count;
    bool stopping;
    bool started;
} prefault;

int prefault_start(prefault *p);
/* Queues ranges; drops what does not fit (the writer will fault those pages itself). */
void prefault_post(prefault *p, const store_ranges *ranges);
/* Stops the thread; call before the memory it may be populating is released. */
void prefault_stop(prefault *p);

#endif
