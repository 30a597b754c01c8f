/*
 * clock.h — the monotonic clock, for durations and pacing (sync timing, checkpoint and snapshot
 * schedules). Event timestamps come from the engine's own clock, never from here.
 */
#ifndef COFFER_BASE_CLOCK_H
#define COFFER_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC: only differences mean anything. */
static inline uint64_t clock_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

#endif
