/*
 * feed_bench.h — the change feed's side of `coffer bench`: consumers that follow the feed while
 * the embedded bench writes (so the writer's rate with and without them can be compared), and
 * `--feed DIR`, one consumer reading a whole data directory's feed from the start.
 */
#ifndef COFFER_CLI_FEED_BENCH_H
#define COFFER_CLI_FEED_BENCH_H

#include <stdint.h>

#include "coffer.h"

typedef struct feed_consumers feed_consumers;

/* Starts `count` threads at nice value `nice`, each reading the feed of `db` from the start
 * and following it. NULL when one could not be started (an engine without a directory has no
 * feed). */
feed_consumers *feed_consumers_start(coffer *db, unsigned count, int nice);
/* Lets them catch up to the durable seq, stops them, frees them. *changes: what the first one
 * read in all; *catch_up_seconds: how long the slowest took to catch up after this call. */
int feed_consumers_stop(feed_consumers *consumers, uint64_t *changes, double *catch_up_seconds);

/* `coffer bench --feed DIR`: opens DIR and reads its whole feed once, in pages of 1,000. */
int cli_bench_feed(const char *dir);

#endif
