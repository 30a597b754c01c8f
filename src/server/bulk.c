/*
 * bulk.c — see bulk.h. A request goes through the pool twice: once to be decoded and started
 * (its body just arrived), once to have the engine's answer encoded (the engine called back).
 * Workers take answers first: they finish requests and free what those hold.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "server/bulk.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/check.h"
#include "server/http.h"

typedef struct bulk_queue {
    request *head, *tail;
} bulk_queue;

struct bulk_pool {
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    bulk_queue starting;  /* bodies to decode and hand to the engine */
    bulk_queue answering; /* engine answers to encode */
    size_t waiting;       /* requests admitted and not yet taken from `starting` */
    bool stopping;
    pthread_t workers[BULK_WORKERS];
    size_t workers_started;
};

static void queue_push(bulk_queue *queue, request *r)
{
    r->bulk.next = 0;
    if (queue->tail)
        queue->tail->bulk.next = r;
    else
        queue->head = r;
    queue->tail = r;
}

static request *queue_pop(bulk_queue *queue)
{
    request *r = queue->head;
    if (r) {
        queue->head = r->bulk.next;
        if (!queue->head)
            queue->tail = 0;
        r->bulk.next = 0;
    }
    return r;
}

/* The response is ready: the network thread sends it once the connection resumes. */
static void resume_answered(request *r)
{
    r->bulk.answered = true;
    r->state = STATE_ANSWERED;
    MHD_resume_connection(r->connection);
}

/* The engine's callback (on the writer or the log thread): the encoding waits for a worker,
 * so that neither of those threads spends its time on JSON. */
static void engine_answered(coffer_job *job)
{
    request *r = job->context;
    bulk_pool *pool = r->server->bulk;
    pthread_mutex_lock(&pool->mutex);
    queue_push(&pool->answering, r);
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
}

/* One request's turn on a worker. After a successful start the request belongs to the
 * engine (its answer may already be queued for another worker): it is not touched again. */
static void work(request *r, bool answering)
{
    if (answering) {
        r->bulk.answer(r, &r->bulk.response);
        resume_answered(r);
    } else if (!r->bulk.start(r, &r->bulk.response)) {
        resume_answered(r);
    }
}

static void *worker_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-bulk"); /* as ps, top and perf show it */
    /* Below the threads that serve small requests (network, writer, log): on busy cores a
     * batch's decoding waits for them, not they for it. Linux sets nice per thread. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), BULK_NICE);
    bulk_pool *pool = argument;
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        while (!pool->answering.head && !pool->starting.head && !pool->stopping)
            pthread_cond_wait(&pool->wake, &pool->mutex);
        bool answering = pool->answering.head != 0;
        request *r = queue_pop(answering ? &pool->answering : &pool->starting);
        if (!r)
            break; /* stopping, and nothing is left */
        if (!answering)
            pool->waiting--;
        pthread_mutex_unlock(&pool->mutex);
        work(r, answering);
        pthread_mutex_lock(&pool->mutex);
    }
    pthread_mutex_unlock(&pool->mutex);
    return 0;
}

bulk_pool *bulk_open(void)
{
    bulk_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return 0;
    pthread_mutex_init(&pool->mutex, 0);
    pthread_cond_init(&pool->wake, 0);
    for (size_t i = 0; i < BULK_WORKERS; i++) {
        if (pthread_create(&pool->workers[i], 0, worker_main, pool) != 0) {
            bulk_close(pool);
            return 0;
        }
        pool->workers_started++;
    }
    return pool;
}

void bulk_close(bulk_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mutex);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (size_t i = 0; i < pool->workers_started; i++)
        pthread_join(pool->workers[i], 0);
    /* Workers leave only with both queues empty, and nothing is queued after the drain. */
    COFFER_ASSERT(!pool->starting.head && !pool->answering.head && pool->waiting == 0);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool);
}

bool bulk_takes(const request *r)
{
    return r->server->bulk && r->body_length >= BULK_BODY_MIN;
}

bool bulk_submit(bulk_pool *pool, request *r, bulk_start_fn start, bulk_answer_fn answer)
{
    COFFER_ASSERT(pool && start && answer && r->state == STATE_RECEIVING);
    pthread_mutex_lock(&pool->mutex);
    bool admitted = pool->waiting < BULK_WAITING_MAX && !pool->stopping;
    pool->waiting += admitted;
    pthread_mutex_unlock(&pool->mutex);
    if (!admitted)
        return false;
    r->bulk.start = start;
    r->bulk.answer = answer;
    /* Suspended before a worker can see it: its answer may come before this returns. MHD's
     * lock is not taken under the pool's. */
    http_suspend(r);
    r->job.on_done = engine_answered;
    pthread_mutex_lock(&pool->mutex);
    queue_push(&pool->starting, r);
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    return true;
}
