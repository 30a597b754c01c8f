/*
 * feed_bench.c — change feed consumers for `coffer bench` (feed_bench.h). A consumer reads
 * pages of up to 1,000 changes and, at the tail, waits for the next sync; it only counts what
 * it reads, so what it costs the writer is the feed's own work: reading and decoding the log.
 */
#include "cli/feed_bench.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FEED_BENCH_PAGE 1000

typedef struct consumer {
    coffer *db;
    int nice;
    pthread_t thread;
    atomic_bool stopping; /* stop once caught up with `until` */
    _Atomic uint64_t until;
    uint64_t changes;
    int status;
} consumer;

struct feed_consumers {
    unsigned count;
    consumer *threads;
};

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* Reads the feed from after `*after` until it is at `until` (or, with `follow`, until told to
 * stop once there); counts the changes. */
static int feed_drain(coffer *db, coffer_feed *feed, coffer_change *page, uint64_t *after,
                      uint64_t *changes, consumer *follow)
{
    for (;;) {
        size_t count;
        uint64_t next;
        int code = coffer_feed_read(feed, *after, 0, page, FEED_BENCH_PAGE, &count, &next);
        if (code != COFFER_OK)
            return code;
        *changes += count;
        if (next != *after) {
            *after = next;
            continue;
        }
        /* At the durable tail. */
        if (!follow)
            return COFFER_OK;
        if (atomic_load(&follow->stopping) && *after >= atomic_load(&follow->until))
            return COFFER_OK;
        coffer_feed_wait(db, *after, 100);
    }
}

static void *consume(void *argument)
{
    consumer *self = argument;
    /* Linux keeps a nice value per thread: this one only. */
    if (self->nice && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), self->nice) != 0)
        perror("coffer bench: setpriority");
    coffer_change *page = calloc(FEED_BENCH_PAGE, sizeof *page);
    coffer_feed *feed = 0;
    self->status = page ? coffer_feed_open(self->db, &feed) : COFFER_OUT_OF_MEMORY;
    uint64_t after = 0;
    if (self->status == COFFER_OK)
        self->status = feed_drain(self->db, feed, page, &after, &self->changes, self);
    coffer_feed_close(feed);
    free(page);
    return 0;
}

feed_consumers *feed_consumers_start(coffer *db, unsigned count, int nice)
{
    feed_consumers *c = calloc(1, sizeof *c);
    if (!c || !(c->threads = calloc(count ? count : 1, sizeof *c->threads))) {
        free(c);
        return 0;
    }
    for (unsigned i = 0; i < count; i++) {
        c->threads[i].db = db;
        c->threads[i].nice = nice;
        if (pthread_create(&c->threads[i].thread, 0, consume, &c->threads[i]) != 0) {
            feed_consumers_stop(c, &(uint64_t){0}, &(double){0});
            return 0;
        }
        c->count = i + 1;
    }
    return c;
}

int feed_consumers_stop(feed_consumers *c, uint64_t *changes, double *catch_up_seconds)
{
    double start = seconds_now();
    int status = COFFER_OK;
    *changes = 0;
    for (unsigned i = 0; i < c->count; i++) {
        consumer *self = &c->threads[i];
        atomic_store(&self->until, coffer_durable_seq(self->db));
        atomic_store(&self->stopping, true);
    }
    for (unsigned i = 0; i < c->count; i++) {
        pthread_join(c->threads[i].thread, 0);
        if (c->threads[i].status != COFFER_OK)
            status = c->threads[i].status;
    }
    *catch_up_seconds = seconds_now() - start;
    if (c->count)
        *changes = c->threads[0].changes;
    free(c->threads);
    free(c);
    return status;
}

int cli_bench_feed(const char *dir)
{
    coffer_options options;
    coffer_options_init(&options);
    coffer *db;
    int code = coffer_open(dir, &options, &db);
    if (code != COFFER_OK) {
        fprintf(stderr, "coffer bench: open %s: %s\n", dir, coffer_strerror(code));
        return 1;
    }
    coffer_change *page = calloc(FEED_BENCH_PAGE, sizeof *page);
    coffer_feed *feed = 0;
    code = page ? coffer_feed_open(db, &feed) : COFFER_OUT_OF_MEMORY;
    uint64_t after = 0, changes = 0;
    double start = seconds_now();
    if (code == COFFER_OK)
        code = feed_drain(db, feed, page, &after, &changes, 0);
    double seconds = seconds_now() - start;
    coffer_feed_close(feed);
    free(page);
    coffer_close(db);
    if (code != COFFER_OK) {
        fprintf(stderr, "coffer bench: feed of %s: %s\n", dir, coffer_strerror(code));
        return 1;
    }
    double rate = seconds > 0 ? (double)changes / seconds : 0;
    printf("feed of %s: %" PRIu64 " changes up to seq %" PRIu64 " in %.3f s, %.0f changes/s\n", dir,
           changes, after, seconds, rate);
    printf("{\"mode\":\"feed\",\"changes\":%" PRIu64 ",\"seq\":%" PRIu64
           ",\"seconds\":%.6f,\"changes_per_second\":%.0f}\n",
           changes, after, seconds, rate);
    return 0;
}
