/*
 * crash_test.c — kill -9 in the middle of a real load, then recover. Each iteration forks a
 * child that opens a durable engine and applies a seeded random load (accounts, transfers,
 * holds on the wall clock, posts, voids, atomic batches, retries) from 2-4 threads, writing
 * every batch it is about to submit and every answer it gets to a pipe. The parent SIGKILLs
 * the child's process group after 20-300 ms, reopens the directory itself and checks: every
 * acknowledged id is there with its code and seq, coffer_verify is ok, no atomic batch is
 * partly applied, and nothing found absent after an earlier crash ever reappears. About half
 * the iterations go on in the previous iteration's directory, so recovery follows recovery.
 *
 * --memory-max BYTES (a number with an optional K, M, G or T: 16M) opens both sides with that
 * memory budget and the on-disk index, so memory evicts what the index holds. Each child then
 * starts with a bulk fill, plain transfers from the bank in batches of 100, enough to pass
 * three quarters of the budget more than once, and is killed at a random answer of the fill
 * or 20-600 ms after it: before, during and after evictions, and while the index is behind.
 * Its retries also replay transfers of the fills of this directory, which memory has evicted.
 * Bulk ids are checked like every other, and read back with their content after the reopen;
 * a run in which neither the children nor the reopens ever evicted fails.
 *
 *   crash_test [--iterations N] [--seed S] [--memory-max BYTES] [--verbose] [--keep]
 * The seed fixes the load; the kill times come from it too, but thread timing does not.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "coffer.h"
#include "server/parse.h"
#include "files.h"

/* Limits: everything a child does and everything the parent reads is bounded by these. */
enum {
    ACCOUNTS_PER_ITERATION = 8,
    ACCOUNT_FUNDING = 1000,
    THREADS_MIN = 2,
    THREADS_MAX = 4,
    BATCH_EVENTS_MAX = 5,
    BATCHES_KEPT = 256, /* per thread: the ring retries pick from */
    HOLDS_KEPT = 64,    /* per thread: holds that posts and voids pick from */
    ID_BYTES = 40,
    KILL_MS_MIN = 20,
    KILL_MS_MAX = 300,
    CHILD_SECONDS_MAX = 30, /* a child nobody kills exits on its own (alarm) */
    LOAD_SECONDS_MAX = 10,  /* ...and stops submitting well before that */
    CHAIN_MAX = 4,          /* iterations in a row on one directory */
    LOG_LINES_KEPT = 32,
    PIPE_BYTES_MAX = 64 << 20,

    /* --memory-max. A fill of budget / BULK_BUDGET_BYTES_PER_TRANSFER transfers, 32,768 for
     * 16 MiB: memory passes three quarters of the budget early in it (the tables' look-ahead
     * windows count), and evicts each time the index has flushed since, a few times a fill. */
    BULK_BUDGET_BYTES_PER_TRANSFER = 512,
    BULK_BATCH_EVENTS = 100, /* a batch of the fill: its lines stay within PIPE_BUF */
    BULK_REFUSED_EVERY = 50, /* every 50th transfer of a fill is refused (exceeds_max_balance) */
    SINKS_PER_ITERATION = 4, /* the accounts a fill pays into */
    KILL_AFTER_FILL_MS_MAX = 600,   /* the eviction and the index go on after the fill */
    FILL_SECONDS_MAX = 60,          /* a fill slower than this is killed where it is */
    OVERLOADED_WAIT_MS_MAX = 20000, /* a submission answered overloaded is resubmitted */
    EVENTS_MAX = BULK_BATCH_EVENTS, /* the most events of any batch the child announces */
};

#define ACCOUNTS_MAX 65536
#define TRANSFERS_MAX (1u << 20)

/* ---- small helpers ------------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t random_below(uint64_t *state, uint64_t bound)
{
    return splitmix(state) % bound;
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

static void *allocate(size_t bytes)
{
    void *memory = calloc(1, bytes);
    if (!memory) {
        fprintf(stderr, "crash_test: out of memory\n");
        exit(2);
    }
    return memory;
}

/* The options of both sides: the same capacities, or a snapshot would not fit; with a memory
 * budget (--memory-max), the index that lets memory evict, which recovery needs as well. */
static void options_base(coffer_options *options, uint64_t memory_max)
{
    coffer_options_init(options);
    options->accounts_max = ACCOUNTS_MAX;
    options->transfers_max = TRANSFERS_MAX;
    if (memory_max) {
        options->memory_bytes_max = memory_max;
        options->index_on = true;
    }
}

/* ---- the child: load ----------------------------------------------------------------------- */

/* One batch with its own copies of every string, so it can be submitted again as a retry. */
typedef struct load_batch {
    coffer_event events[BATCH_EVENTS_MAX];
    char ids[BATCH_EVENTS_MAX][ID_BYTES];
    char holds[BATCH_EVENTS_MAX][ID_BYTES];
    char to[BATCH_EVENTS_MAX][ID_BYTES]; /* a retry of a bulk fill's transfers: their sinks */
    size_t count;
    bool atomic;
    bool acknowledged; /* a retry may pick it */
} load_batch;

/* A bulk fill on this directory (--memory-max): its iteration and how many of its transfers,
 * from the first, were acknowledged. A retry may submit any of them again. */
typedef struct bulk_fill_done {
    unsigned iteration;
    uint32_t acknowledged;
} bulk_fill_done;

typedef struct child_plan {
    const char *dir;
    unsigned iteration;
    uint64_t seed;
    unsigned threads;
    uint64_t segment_bytes_max;
    uint64_t snapshot_every_events;
    uint64_t memory_max;     /* --memory-max; 0: the default budget, no index */
    uint32_t bulk_transfers; /* the fill this child starts with (0: none) */
    /* The fills of this directory retries pick from: the earlier iterations' and, once it is
     * done, this one's (with bulk_transfers acknowledged). */
    bulk_fill_done fills[CHAIN_MAX];
    size_t fills_count;
} child_plan;

typedef struct load_thread {
    pthread_t thread;
    coffer *db;
    const child_plan *plan;
    int pipe_fd;
    unsigned iteration, index;
    uint64_t random;
    uint64_t batches_made, retries;
    load_batch *ring; /* BATCHES_KEPT */
    load_batch bulk_retry;
    char holds[HOLDS_KEPT][ID_BYTES];
    size_t holds_count;
} load_thread;

static char account_names[ACCOUNTS_PER_ITERATION + 1][ID_BYTES]; /* the last one is capped */

/* One line to the parent, written whole: a pipe write of at most PIPE_BUF bytes is atomic,
 * so lines from several threads never interleave, and a kill never leaves half a line. */
static void pipe_line(int fd, const char *line, size_t length)
{
    if (length > PIPE_BUF)
        abort();
    if (write(fd, line, length) != (ssize_t)length)
        _exit(5);
}

static void announce(int fd, const char *key, bool atomic, const coffer_event *events, size_t count)
{
    char line[PIPE_BUF];
    int length = snprintf(line, sizeof line, "B %s %d %zu", key, atomic, count);
    for (size_t i = 0; i < count; i++)
        length += snprintf(line + length, sizeof line - (size_t)length, " %c:%s",
                           events[i].op == COFFER_OP_CREATE_ACCOUNT ? 'a' : 't', events[i].id);
    length += snprintf(line + length, sizeof line - (size_t)length, "\n");
    pipe_line(fd, line, (size_t)length);
}

static void report(int fd, const char *key, int status, const coffer_event *events, size_t count,
                   const coffer_result *results)
{
    char line[PIPE_BUF];
    int length = snprintf(line, sizeof line, "R %s %d %zu", key, status, count);
    for (size_t i = 0; i < count; i++)
        length += snprintf(line + length, sizeof line - (size_t)length, " %c:%s %d %" PRIu64 " %d",
                           events[i].op == COFFER_OP_CREATE_ACCOUNT ? 'a' : 't', events[i].id,
                           results[i].code, results[i].seq, results[i].replayed);
    length += snprintf(line + length, sizeof line - (size_t)length, "\n");
    pipe_line(fd, line, (size_t)length);
}

/* Announces, submits, reports. With a memory budget a submission may find memory full while
 * the index catches up: it is refused whole with overloaded, nothing of it applied, and is
 * submitted again, as a client would. */
static int submit_logged(int fd, coffer *db, const char *key, const coffer_event *events,
                         size_t count, bool atomic, coffer_result *results)
{
    announce(fd, key, atomic, events, count);
    int status = coffer_submit(db, events, count, atomic, results);
    for (unsigned waited_ms = 0; status == COFFER_OVERLOADED && waited_ms < OVERLOADED_WAIT_MS_MAX;
         waited_ms++) {
        usleep(1000);
        status = coffer_submit(db, events, count, atomic, results);
    }
    report(fd, key, status, events, count, results);
    return status;
}

/* The engine's eviction counters, for the parent: a run that never evicted fails. */
static void report_evictions(int fd, coffer *db)
{
    coffer_stats stats;
    if (coffer_stats_get(db, &stats) != COFFER_OK)
        return;
    char line[128];
    int length =
        snprintf(line, sizeof line, "S %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                 stats.evictions, stats.evicted_transfers, stats.evicted_seq, stats.cold_reads);
    pipe_line(fd, line, (size_t)length);
}

/* ---- the child: the bulk fill (--memory-max) ----------------------------------------------- */

typedef struct bulk_names {
    char id[ID_BYTES], to[ID_BYTES];
} bulk_names;

/* Transfer `number` of an iteration's fill: everything follows from the two numbers, so a
 * retry, in this iteration or a later one on the directory, submits exactly the same event.
 * From the bank to a sink (accounts the random load never touches), so always created, except
 * every BULK_REFUSED_EVERY-th, which the capped account refuses whatever its balance. */
static coffer_event bulk_event(unsigned iteration, uint32_t number, bulk_names *names)
{
    bool refused = number % BULK_REFUSED_EVERY == 0;
    snprintf(names->id, ID_BYTES, "i%u-b%" PRIu32, iteration, number);
    if (refused)
        snprintf(names->to, ID_BYTES, "i%u-cap%d", iteration, ACCOUNTS_PER_ITERATION);
    else
        snprintf(names->to, ID_BYTES, "i%u-s%" PRIu32, iteration, number % SINKS_PER_ITERATION);
    return (coffer_event){.op = COFFER_OP_TRANSFER,
                          .id = names->id,
                          .from = "bank",
                          .to = names->to,
                          .amount = refused ? 100000 : 1 + (int64_t)(number % 7)};
}

/* Whether `id` is a transfer of a bulk fill, and which. */
static bool bulk_number(const char *id, unsigned *iteration, uint32_t *number)
{
    int consumed = 0;
    return sscanf(id, "i%u-b%" SCNu32 "%n", iteration, number, &consumed) == 2 && id[consumed] == 0;
}

/* Large batches of plain transfers, one after the other, then a "D" line: memory passes three
 * quarters of its budget and evicts what the index has flushed, the index falling behind. */
static void bulk_fill(coffer *db, int fd, const child_plan *plan)
{
    static coffer_event events[BULK_BATCH_EVENTS];
    static coffer_result results[BULK_BATCH_EVENTS];
    static bulk_names names[BULK_BATCH_EVENTS];
    for (uint32_t first = 0; first < plan->bulk_transfers; first += BULK_BATCH_EVENTS) {
        size_t count = plan->bulk_transfers - first < BULK_BATCH_EVENTS
                           ? plan->bulk_transfers - first
                           : BULK_BATCH_EVENTS;
        for (size_t i = 0; i < count; i++)
            events[i] = bulk_event(plan->iteration, first + (uint32_t)i, &names[i]);
        char key[32];
        snprintf(key, sizeof key, "bulk.%" PRIu32, first);
        if (submit_logged(fd, db, key, events, count, false, results) != COFFER_OK)
            _exit(6);
        report_evictions(fd, db);
    }
    pipe_line(fd, "D\n", 2);
}

/* A retry of one to five transfers of a fill of this directory, most likely evicted from
 * memory by now: the answer must be the original outcome, read back from the index. */
static load_batch *bulk_retry(load_thread *t)
{
    const bulk_fill_done *fill = &t->plan->fills[random_below(&t->random, t->plan->fills_count)];
    if (fill->acknowledged == 0)
        return NULL;
    load_batch *batch = &t->bulk_retry;
    memset(batch, 0, sizeof *batch);
    uint32_t first = (uint32_t)random_below(&t->random, fill->acknowledged);
    size_t count = 1 + random_below(&t->random, BATCH_EVENTS_MAX);
    for (uint32_t number = first; batch->count < count && number < fill->acknowledged; number++) {
        bulk_names names;
        coffer_event event = bulk_event(fill->iteration, number, &names);
        size_t i = batch->count++;
        memcpy(batch->ids[i], names.id, ID_BYTES);
        memcpy(batch->to[i], names.to, ID_BYTES);
        event.id = batch->ids[i];
        event.to = batch->to[i];
        batch->events[i] = event;
    }
    return batch;
}

/* ---- the child: the random load ------------------------------------------------------------ */

static const char *some_account(load_thread *t)
{
    return account_names[random_below(&t->random, ACCOUNTS_PER_ITERATION + 1)];
}

/* A transfer (or a hold when timeout_ms > 0) between two different accounts of this
 * iteration; sometimes more than either can give, so rejections are recorded too. */
static void add_transfer(load_thread *t, load_batch *batch, uint64_t timeout_ms)
{
    size_t i = batch->count++;
    snprintf(batch->ids[i], ID_BYTES, "i%u-t%u-%" PRIu64 "-%zu", t->iteration, t->index,
             t->batches_made, i);
    const char *from = some_account(t), *to = some_account(t);
    while (to == from)
        to = some_account(t);
    int64_t amount = 1 + (int64_t)random_below(&t->random, 60);
    if (random_below(&t->random, 20) == 0)
        amount = 100000;
    batch->events[i] = (coffer_event){.op = COFFER_OP_TRANSFER,
                                      .id = batch->ids[i],
                                      .from = from,
                                      .to = to,
                                      .amount = amount,
                                      .hold_timeout_ms = timeout_ms};
}

static void add_resolution(load_thread *t, load_batch *batch, uint8_t op)
{
    if (t->holds_count == 0) {
        add_transfer(t, batch, 0);
        return;
    }
    size_t i = batch->count++;
    size_t pick =
        random_below(&t->random, t->holds_count < HOLDS_KEPT ? t->holds_count : HOLDS_KEPT);
    snprintf(batch->ids[i], ID_BYTES, "i%u-t%u-%" PRIu64 "-%zu", t->iteration, t->index,
             t->batches_made, i);
    memcpy(batch->holds[i], t->holds[pick], ID_BYTES);
    batch->events[i] = (coffer_event){.op = op, .id = batch->ids[i], .hold_id = batch->holds[i]};
    if (op == COFFER_OP_POST && random_below(&t->random, 2))
        batch->events[i].amount = 1 + (int64_t)random_below(&t->random, 5);
}

/* Builds the next batch in the ring, or returns an acknowledged one to retry: with a bulk fill
 * on the directory, half the time transfers of a fill instead. */
static load_batch *next_batch(load_thread *t, bool *retry)
{
    uint64_t choice = random_below(&t->random, 100);
    *retry = false;
    if (choice < 10) {
        if (t->plan->fills_count && random_below(&t->random, 2) == 0) {
            load_batch *old = bulk_retry(t);
            if (old) {
                *retry = true;
                return old;
            }
        }
        load_batch *old = &t->ring[random_below(&t->random, BATCHES_KEPT)];
        if (old->acknowledged && old != &t->ring[t->batches_made % BATCHES_KEPT]) {
            *retry = true;
            return old;
        }
    }
    load_batch *batch = &t->ring[t->batches_made % BATCHES_KEPT];
    memset(batch, 0, sizeof *batch);
    if (choice < 35) { /* plain transfers, one to three */
        size_t count = 1 + random_below(&t->random, 3);
        while (batch->count < count)
            add_transfer(t, batch, 0);
    } else if (choice < 55) { /* a hold on the wall clock, often due within the run */
        add_transfer(t, batch, 5 + random_below(&t->random, 200));
    } else if (choice < 65) {
        add_resolution(t, batch, COFFER_OP_POST);
    } else if (choice < 73) {
        add_resolution(t, batch, COFFER_OP_VOID);
    } else if (choice < 93) { /* an atomic batch, which a large amount fails whole */
        batch->atomic = true;
        size_t count = 2 + random_below(&t->random, BATCH_EVENTS_MAX - 1);
        while (batch->count < count)
            add_transfer(t, batch, random_below(&t->random, 4) == 0 ? 50 : 0);
    } else { /* a mixed batch */
        add_transfer(t, batch, 0);
        add_transfer(t, batch, 20);
        add_resolution(t, batch, COFFER_OP_POST);
    }
    return batch;
}

static void note_holds(load_thread *t, const load_batch *batch, const coffer_result *results)
{
    for (size_t i = 0; i < batch->count; i++) {
        if (batch->events[i].hold_timeout_ms == 0 || results[i].code != COFFER_CREATED)
            continue;
        memcpy(t->holds[t->holds_count % HOLDS_KEPT], batch->ids[i], ID_BYTES);
        t->holds_count++;
    }
}

static void *load_main(void *argument)
{
    load_thread *t = argument;
    uint64_t stop_ms = now_ms() + LOAD_SECONDS_MAX * 1000;
    while (now_ms() < stop_ms) {
        bool retry;
        load_batch *batch = next_batch(t, &retry);
        char key[32];
        if (retry)
            snprintf(key, sizeof key, "%u.retry.%" PRIu64, t->index, t->retries++);
        else
            snprintf(key, sizeof key, "%u.%" PRIu64, t->index, t->batches_made++);
        coffer_result results[BATCH_EVENTS_MAX];
        int status = submit_logged(t->pipe_fd, t->db, key, batch->events, batch->count,
                                   batch->atomic, results);
        if (status != COFFER_OK)
            _exit(6); /* a healthy disk refuses nothing; the parent sees it */
        if (batch == &t->bulk_retry)
            report_evictions(t->pipe_fd, t->db);
        if (!retry) {
            batch->acknowledged = true;
            note_holds(t, batch, results);
        }
    }
    return NULL;
}

/* Accounts of this iteration (the bank is shared by all), each funded from the bank; with a
 * bulk fill to come, its sinks too. */
static void setup_accounts(coffer *db, int fd, unsigned iteration, bool sinks)
{
    enum { ACCOUNT_EVENTS_MAX = ACCOUNTS_PER_ITERATION + 2 + SINKS_PER_ITERATION };
    static char sink_names[SINKS_PER_ITERATION][ID_BYTES];
    coffer_event accounts[ACCOUNT_EVENTS_MAX] = {{.op = COFFER_OP_CREATE_ACCOUNT,
                                                  .id = "bank",
                                                  .currency = "USD",
                                                  .flags = COFFER_FLAG_MIN_UNBOUNDED}};
    size_t account_events = 1;
    for (size_t i = 0; i <= ACCOUNTS_PER_ITERATION; i++) {
        bool capped = i == ACCOUNTS_PER_ITERATION;
        snprintf(account_names[i], ID_BYTES, "i%u-%s%zu", iteration, capped ? "cap" : "a", i);
        accounts[account_events++] = (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT,
                                                    .id = account_names[i],
                                                    .currency = "USD",
                                                    .flags = capped ? COFFER_FLAG_HAS_MAX : 0,
                                                    .max_balance = capped ? 1500 : 0};
    }
    for (size_t i = 0; sinks && i < SINKS_PER_ITERATION; i++) {
        snprintf(sink_names[i], ID_BYTES, "i%u-s%zu", iteration, i);
        accounts[account_events++] =
            (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT, .id = sink_names[i], .currency = "USD"};
    }
    load_batch *batch = allocate(sizeof *batch);
    coffer_result results[BATCH_EVENTS_MAX];
    char key[32];
    for (size_t first = 0; first < account_events; first += BATCH_EVENTS_MAX) {
        memset(batch, 0, sizeof *batch);
        while (batch->count < BATCH_EVENTS_MAX && first + batch->count < account_events) {
            batch->events[batch->count] = accounts[first + batch->count];
            batch->count++;
        }
        snprintf(key, sizeof key, "accounts.%zu", first);
        if (submit_logged(fd, db, key, batch->events, batch->count, false, results) != COFFER_OK)
            _exit(6);
    }
    for (size_t i = 0; i <= ACCOUNTS_PER_ITERATION; i++) {
        memset(batch, 0, sizeof *batch);
        snprintf(batch->ids[0], ID_BYTES, "i%u-fund-%zu", iteration, i);
        batch->events[0] = (coffer_event){.op = COFFER_OP_TRANSFER,
                                          .id = batch->ids[0],
                                          .from = "bank",
                                          .to = account_names[i],
                                          .amount = ACCOUNT_FUNDING};
        batch->count = 1;
        snprintf(key, sizeof key, "fund.%zu", i);
        if (submit_logged(fd, db, key, batch->events, 1, false, results) != COFFER_OK)
            _exit(6);
    }
    free(batch);
}

static void quiet_log(void *context, const char *line)
{
    (void)context;
    (void)line;
}

static void child_main(const child_plan *plan, int fd)
{
    alarm(CHILD_SECONDS_MAX + (plan->bulk_transfers ? FILL_SECONDS_MAX : 0)); /* the fill's too */
    coffer_options options;
    options_base(&options, plan->memory_max);
    options.log = quiet_log; /* the parent's recovery logs what matters */
    options.segment_bytes_max = plan->segment_bytes_max;
    options.snapshot_every_events = plan->snapshot_every_events;
    coffer *db = NULL;
    int code = coffer_open(plan->dir, &options, &db);
    if (code != COFFER_OK) {
        char line[64];
        int length = snprintf(line, sizeof line, "F open %d\n", code);
        pipe_line(fd, line, (size_t)length);
        _exit(4);
    }
    setup_accounts(db, fd, plan->iteration, plan->bulk_transfers > 0);
    if (plan->bulk_transfers)
        bulk_fill(db, fd, plan);
    load_thread *threads = allocate(plan->threads * sizeof *threads);
    for (unsigned i = 0; i < plan->threads; i++) {
        load_thread *t = &threads[i];
        t->db = db;
        t->plan = plan;
        t->pipe_fd = fd;
        t->iteration = plan->iteration;
        t->index = i;
        t->random = plan->seed ^ (0xD1B54A32D192ED03ULL * (i + 1));
        t->ring = allocate(BATCHES_KEPT * sizeof *t->ring);
        if (pthread_create(&t->thread, NULL, load_main, t) != 0)
            _exit(7);
    }
    for (unsigned i = 0; i < plan->threads; i++)
        pthread_join(threads[i].thread, NULL);
    _exit(0); /* not killed in time: no close, as if it had been */
}

/* ---- the parent: bookkeeping --------------------------------------------------------------- */

/* What the parent knows about an id: acknowledged (or found) with this outcome, or found
 * absent after a crash — which it must stay, since later iterations never reuse ids. */
typedef struct outcome {
    char id[ID_BYTES];
    char kind; /* 'a' account, 't' transfer, post or void */
    bool absent;
    int code; /* as recorded: a replayed success is stored as created */
    uint64_t seq;
} outcome;

/* An open-addressing index from id to outcome, growing at half full. */
typedef struct outcomes {
    outcome *items;
    size_t count, capacity;
    uint32_t *slots; /* index + 1; 0 is empty */
    size_t slots_count;
} outcomes;

static uint64_t text_hash(const char *text)
{
    uint64_t hash = 1469598103934665603ULL;
    for (; *text; text++)
        hash = (hash ^ (uint8_t)*text) * 1099511628211ULL;
    return hash;
}

static uint32_t *outcome_slot(outcomes *table, const char *id)
{
    size_t mask = table->slots_count - 1;
    for (size_t at = text_hash(id) & mask;; at = (at + 1) & mask) {
        uint32_t *slot = &table->slots[at];
        if (*slot == 0 || strcmp(table->items[*slot - 1].id, id) == 0)
            return slot;
    }
}

static void outcomes_grow(outcomes *table)
{
    if (2 * (table->count + 1) <= table->slots_count && table->count < table->capacity)
        return;
    if (table->count == table->capacity) {
        table->capacity = table->capacity ? 2 * table->capacity : 4096;
        outcome *grown = realloc(table->items, table->capacity * sizeof *grown);
        if (!grown)
            exit(2);
        table->items = grown;
    }
    if (2 * (table->count + 1) > table->slots_count) {
        free(table->slots);
        table->slots_count = table->slots_count ? 2 * table->slots_count : 8192;
        table->slots = allocate(table->slots_count * sizeof *table->slots);
        for (size_t i = 0; i < table->count; i++)
            *outcome_slot(table, table->items[i].id) = (uint32_t)i + 1;
    }
}

static outcome *outcome_find(outcomes *table, const char *id)
{
    if (!table->slots_count)
        return NULL;
    uint32_t slot = *outcome_slot(table, id);
    return slot ? &table->items[slot - 1] : NULL;
}

static outcome *outcome_add(outcomes *table, const char *id)
{
    outcomes_grow(table);
    outcome *item = &table->items[table->count++];
    memset(item, 0, sizeof *item);
    memcpy(item->id, id, strnlen(id, ID_BYTES - 1)); /* callers pass ids that fit */
    *outcome_slot(table, id) = (uint32_t)table->count;
    return item;
}

static void outcomes_clear(outcomes *table)
{
    free(table->items);
    free(table->slots);
    memset(table, 0, sizeof *table);
}

/* An event of an announced batch: its kind ('a' or 't') and id. */
typedef struct announced_event {
    char kind;
    char id[ID_BYTES];
} announced_event;

/* A batch the child announced, and whether its answer came. Its events are
 * run.events[first, first + count). */
typedef struct announced {
    char key[32];
    bool atomic, answered;
    size_t count, first;
} announced;

typedef struct run {
    uint64_t seed;
    const char *dir; /* the data directory in use, kept after a violation */
    unsigned iterations, iteration;
    bool verbose;
    outcomes known;     /* for the current directory */
    announced *batches; /* this iteration's */
    size_t batches_count, batches_capacity;
    announced_event *events; /* of this iteration's batches */
    size_t events_count, events_capacity;
    /* --memory-max */
    uint64_t memory_max;
    bulk_fill_done fills[CHAIN_MAX]; /* of the current directory */
    size_t fills_count;
    uint32_t bulk_acknowledged; /* this iteration's fill: the acknowledged prefix */
    /* this child's counters, as its last "S" line before the kill says */
    uint64_t child_evictions, child_evicted_transfers, child_evicted_seq, child_cold_reads;
    char log[LOG_LINES_KEPT][1024];
    size_t log_count;
    uint64_t truncations; /* torn tails cut by the parent's recoveries */
    /* totals for the summary */
    uint64_t checked, acknowledged_batches, unanswered_atomic, unanswered_applied, absent;
    uint64_t bulk_checked, evictions, evicted_transfers, cold_reads, reopen_evictions;
    uint64_t evicted_replays; /* replays of bulk transfers the child had evicted by then */
} run;

static void parent_log(void *context, const char *line)
{
    run *r = context;
    snprintf(r->log[r->log_count % LOG_LINES_KEPT], sizeof r->log[0], "%s", line);
    r->log_count++;
    if (strstr(line, "truncat"))
        r->truncations++;
}

__attribute__((format(printf, 2, 3))) static void violation(run *r, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fprintf(stderr, "crash_test: VIOLATION (seed %" PRIu64 ", iteration %u): ", r->seed,
            r->iteration);
    vfprintf(stderr, format, arguments);
    va_end(arguments);
    fprintf(stderr, "\n");
    size_t first = r->log_count > LOG_LINES_KEPT ? r->log_count - LOG_LINES_KEPT : 0;
    for (size_t i = first; i < r->log_count; i++)
        fprintf(stderr, "  engine log: %s\n", r->log[i % LOG_LINES_KEPT]);
    fprintf(stderr, "crash_test: the data directory is kept: %s\n", r->dir ? r->dir : "-");
    fprintf(stderr, "crash_test: rerun: crash_test --seed %" PRIu64 " --iterations %u\n", r->seed,
            r->iterations);
    exit(1);
}

/* Ids are written by the child from ID_BYTES buffers: a longer one is a garbled line. */
static void copy_id(run *r, char out[ID_BYTES], const char *id)
{
    size_t length = strlen(id);
    if (length >= ID_BYTES)
        violation(r, "an id longer than %d bytes: %s", ID_BYTES - 1, id);
    memcpy(out, id, length + 1);
}

static int normalized_code(int code, bool replayed)
{
    return replayed && code == COFFER_EXISTS ? COFFER_CREATED : code;
}

/* An answer from the child: remember each result, and check a replay against the original. */
static void parse_answer(run *r, char *rest)
{
    char key[32];
    int status, consumed;
    size_t count;
    if (sscanf(rest, "%31s %d %zu%n", key, &status, &count, &consumed) != 3)
        violation(r, "unreadable answer line: %s", rest);
    if (status != COFFER_OK)
        violation(r, "submit of batch %s returned %s", key, coffer_code_name(status));
    rest += consumed;
    for (size_t i = 0; i < count; i++) {
        char token[ID_BYTES + 4];
        int code, replayed;
        uint64_t seq;
        if (sscanf(rest, " %43s %d %" SCNu64 " %d%n", token, &code, &seq, &replayed, &consumed) !=
                4 ||
            token[1] != ':')
            violation(r, "unreadable result in batch %s", key);
        rest += consumed;
        char id[ID_BYTES];
        copy_id(r, id, token + 2);
        int recorded = normalized_code(code, replayed);
        outcome *known = outcome_find(&r->known, id);
        if (token[0] == 'a') {
            if (code != COFFER_CREATED && code != COFFER_EXISTS)
                violation(r, "account %s answered %s", id, coffer_code_name(code));
            if (!known)
                known = outcome_add(&r->known, id);
            known->kind = 'a';
            known->absent = false; /* the shared bank may be created after an earlier crash */
            continue;
        }
        if (seq == 0)
            violation(r, "%s answered %s with no seq", id, coffer_code_name(code));
        if (known && !known->absent && (known->code != recorded || known->seq != seq))
            violation(r, "%s answered %s seq %" PRIu64 " but was %s seq %" PRIu64, id,
                      coffer_code_name(code), seq, coffer_code_name(known->code), known->seq);
        if (known && known->absent)
            violation(r, "%s was absent after a crash, now answered", id);
        unsigned fill;
        uint32_t number;
        if (replayed && seq <= r->child_evicted_seq && bulk_number(id, &fill, &number))
            r->evicted_replays++; /* evicted before this retry: its answer came from the index */
        if (!known)
            known = outcome_add(&r->known, id);
        known->kind = 't';
        known->code = recorded;
        known->seq = seq;
    }
    uint32_t first;
    if (sscanf(key, "bulk.%" SCNu32, &first) == 1 && first + count > r->bulk_acknowledged)
        r->bulk_acknowledged = first + (uint32_t)count; /* the fill submits one at a time */
    for (size_t i = r->batches_count; i-- > 0;)
        if (strcmp(r->batches[i].key, key) == 0 && !r->batches[i].answered) {
            r->batches[i].answered = true;
            break;
        }
    r->acknowledged_batches++;
}

static void parse_announcement(run *r, char *rest)
{
    if (r->batches_count == r->batches_capacity) {
        r->batches_capacity = r->batches_capacity ? 2 * r->batches_capacity : 1024;
        announced *grown = realloc(r->batches, r->batches_capacity * sizeof *grown);
        if (!grown)
            exit(2);
        r->batches = grown;
    }
    announced *batch = &r->batches[r->batches_count++];
    memset(batch, 0, sizeof *batch);
    int atomic, consumed;
    if (sscanf(rest, "%31s %d %zu%n", batch->key, &atomic, &batch->count, &consumed) != 3 ||
        batch->count > EVENTS_MAX)
        violation(r, "unreadable announcement: %s", rest);
    batch->atomic = atomic;
    rest += consumed;
    if (r->events_count + batch->count > r->events_capacity) {
        r->events_capacity = r->events_capacity ? 2 * r->events_capacity : 8192;
        announced_event *grown = realloc(r->events, r->events_capacity * sizeof *grown);
        if (!grown)
            exit(2);
        r->events = grown;
    }
    batch->first = r->events_count;
    r->events_count += batch->count;
    for (size_t i = 0; i < batch->count; i++) {
        char token[ID_BYTES + 4];
        if (sscanf(rest, " %43s%n", token, &consumed) != 1 || token[1] != ':')
            violation(r, "unreadable announcement of %s", batch->key);
        rest += consumed;
        r->events[batch->first + i].kind = token[0];
        copy_id(r, r->events[batch->first + i].id, token + 2);
    }
}

/* The child's eviction counters: the highest seen is what it did before the kill. */
static void parse_evictions(run *r, const char *rest)
{
    uint64_t evictions, evicted_transfers, evicted_seq, cold_reads;
    if (sscanf(rest, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, &evictions, &evicted_transfers,
               &evicted_seq, &cold_reads) != 4)
        violation(r, "unreadable counters: %s", rest);
    if (evicted_seq > r->child_evicted_seq)
        r->child_evicted_seq = evicted_seq;
    if (evictions > r->child_evictions)
        r->child_evictions = evictions;
    if (evicted_transfers > r->child_evicted_transfers)
        r->child_evicted_transfers = evicted_transfers;
    if (cold_reads > r->child_cold_reads)
        r->child_cold_reads = cold_reads;
}

static void parse_lines(run *r, char *bytes, size_t length)
{
    char *line = bytes, *end = bytes + length;
    while (line < end) {
        char *newline = memchr(line, '\n', (size_t)(end - line));
        if (!newline)
            break; /* a pipe write is whole, so this never happens */
        *newline = 0;
        if (line[0] == 'B' && line[1] == ' ')
            parse_announcement(r, line + 2);
        else if (line[0] == 'R' && line[1] == ' ')
            parse_answer(r, line + 2);
        else if (line[0] == 'S' && line[1] == ' ')
            parse_evictions(r, line + 2);
        else if (line[0] == 'D' && line[1] == 0) {
            /* the bulk fill is done: read_until saw it */
        } else if (line[0] == 'F')
            violation(r, "the child could not open the directory: %s", line);
        else
            violation(r, "unexpected line from the child: %s", line);
        line = newline + 1;
    }
}

/* ---- the parent: checks -------------------------------------------------------------------- */

static bool exists(run *r, coffer *db, char kind, const char *id, coffer_transfer *record)
{
    int code;
    if (kind == 'a') {
        coffer_account account;
        code = coffer_account_get(db, id, COFFER_AT_NOW, 0, &account);
        if (code != COFFER_OK && code != COFFER_ACCOUNT_NOT_FOUND)
            violation(r, "reading account %s: %s", id, coffer_code_name(code));
    } else {
        code = coffer_transfer_get(db, id, record);
        if (code != COFFER_OK && code != COFFER_TRANSFER_NOT_FOUND)
            violation(r, "reading transfer %s: %s", id, coffer_code_name(code));
    }
    return code == COFFER_OK;
}

/* A transfer of a bulk fill reads back as it was submitted: from memory, or from the index
 * once evicted. */
static void check_bulk_content(run *r, const char *id, const coffer_transfer *record)
{
    unsigned iteration;
    uint32_t number;
    if (!bulk_number(id, &iteration, &number))
        return;
    bulk_names names;
    coffer_event event = bulk_event(iteration, number, &names);
    if (strcmp(record->from, event.from) != 0 || strcmp(record->to, event.to) != 0 ||
        record->amount_requested != event.amount)
        violation(r, "%s reads back %s -> %s %" PRId64 ", submitted %s -> %s %" PRId64, id,
                  record->from, record->to, record->amount_requested, event.from, event.to,
                  event.amount);
    r->bulk_checked++;
}

/* Every outcome known for this directory holds after the recovery. */
static void check_known(run *r, coffer *db)
{
    for (size_t i = 0; i < r->known.count; i++) {
        const outcome *known = &r->known.items[i];
        coffer_transfer record;
        bool there = exists(r, db, known->kind, known->id, &record);
        if (known->absent) {
            if (there)
                violation(r, "%s was absent after an earlier crash and is back", known->id);
            continue;
        }
        if (!there)
            violation(r, "acknowledged %s is missing", known->id);
        if (known->kind == 't' && (record.code != known->code || record.seq != known->seq))
            violation(r, "%s was acknowledged %s seq %" PRIu64 ", recovered %s seq %" PRIu64,
                      known->id, coffer_code_name(known->code), known->seq,
                      coffer_code_name(record.code), record.seq);
        if (known->kind == 't')
            check_bulk_content(r, known->id, &record);
        r->checked++;
    }
}

/* Batches announced and never answered: an atomic one is all there or not at all; whatever
 * is found becomes known, present or absent, for the next iterations to hold to. */
static void check_unanswered(run *r, coffer *db)
{
    for (size_t b = 0; b < r->batches_count; b++) {
        const announced *batch = &r->batches[b];
        if (batch->answered)
            continue;
        const announced_event *events = &r->events[batch->first];
        size_t there = 0;
        coffer_transfer record;
        int codes[EVENTS_MAX];
        uint64_t seqs[EVENTS_MAX];
        bool present[EVENTS_MAX];
        for (size_t i = 0; i < batch->count; i++) {
            present[i] = exists(r, db, events[i].kind, events[i].id, &record);
            there += present[i];
            codes[i] = present[i] ? record.code : 0;
            seqs[i] = present[i] ? record.seq : 0;
        }
        if (batch->atomic) {
            if (there != 0 && there != batch->count)
                violation(r, "atomic batch %s is partly applied: %zu of %zu events", batch->key,
                          there, batch->count);
            r->unanswered_atomic++;
            r->unanswered_applied += there != 0;
        }
        for (size_t i = 0; i < batch->count; i++) {
            if (outcome_find(&r->known, events[i].id))
                continue; /* a retry of a known one */
            outcome *found = outcome_add(&r->known, events[i].id);
            found->kind = events[i].kind;
            found->absent = !present[i];
            r->absent += !present[i];
            if (present[i] && found->kind == 't') {
                found->code = codes[i];
                found->seq = seqs[i];
            }
        }
    }
}

static void recover_and_check(run *r, const char *dir)
{
    coffer_options options;
    options_base(&options, r->memory_max);
    options.log = parent_log;
    options.log_context = r;
    coffer *db = NULL;
    int code = coffer_open(dir, &options, &db);
    if (code != COFFER_OK)
        violation(r, "reopen after the kill: %s", coffer_code_name(code));
    coffer_stats stats;
    if (coffer_stats_get(db, &stats) == COFFER_OK)
        r->reopen_evictions += stats.evictions; /* recovery evicts what it replayed */
    check_known(r, db);
    check_unanswered(r, db);
    coffer_verify_report report;
    code = coffer_verify(db, &report);
    if (code != COFFER_OK || !report.ok)
        violation(r, "verify after recovery: %s, %u problems, first: %s", coffer_code_name(code),
                  report.problem_count, report.problem_count ? report.problems[0] : "-");
    coffer_close(db);
}

/* ---- the parent: one iteration ------------------------------------------------------------- */

/* What read_until looks for in the lines of a bulk fill: it returns once `answers_target`
 * batches of the fill were answered (0: never), or once the fill is done. */
typedef struct fill_watch {
    size_t scanned; /* bytes of the buffer looked at */
    size_t answers, answers_target;
    bool done;
} fill_watch;

static bool fill_watch_stops(fill_watch *watch, const char *buffer, size_t length)
{
    const char *newline;
    while (watch->scanned < length &&
           (newline = memchr(buffer + watch->scanned, '\n', length - watch->scanned))) {
        const char *line = buffer + watch->scanned;
        if (strncmp(line, "R bulk.", 7) == 0)
            watch->answers++;
        else if (strncmp(line, "D\n", 2) == 0)
            watch->done = true;
        watch->scanned = (size_t)(newline - buffer) + 1;
        if (watch->answers_target && watch->answers >= watch->answers_target)
            return true;
    }
    return watch->done;
}

/* Reads what the child writes until the deadline (or its end), into *buffer; with a watch,
 * until it says stop. */
static void read_until(run *r, int fd, uint64_t deadline_ms, char **buffer, size_t *length,
                       size_t *capacity, bool *ended, fill_watch *watch)
{
    for (;;) {
        if (watch && fill_watch_stops(watch, *buffer, *length))
            return;
        int wait_ms = -1;
        if (deadline_ms) {
            uint64_t now = now_ms();
            if (now >= deadline_ms)
                return;
            wait_ms = (int)(deadline_ms - now);
        }
        struct pollfd item = {fd, POLLIN, 0};
        int ready = poll(&item, 1, wait_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return;
        if (*length + 65536 > *capacity) {
            *capacity = *capacity ? 2 * *capacity : 1 << 20;
            if (*capacity > PIPE_BYTES_MAX)
                violation(r, "the child wrote too much");
            char *grown = realloc(*buffer, *capacity);
            if (!grown)
                exit(2);
            *buffer = grown;
        }
        ssize_t got = read(fd, *buffer + *length, *capacity - *length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            *ended = true;
            return;
        }
        *length += (size_t)got;
    }
}

/* Kills the child's whole group (the engine may have forked a snapshot writer) and reaps
 * every process of it: as a subreaper this process inherits the orphans. */
static void kill_group(pid_t child, int *status)
{
    if (kill(-child, SIGKILL) != 0)
        kill(child, SIGKILL); /* no group: the child alone */
    while (waitpid(child, status, 0) < 0 && errno == EINTR) {
    }
    for (;;) {
        pid_t reaped = waitpid(-child, NULL, 0);
        if (reaped > 0 || (reaped < 0 && errno == EINTR))
            continue;
        break; /* ECHILD: nobody of the group is left */
    }
}

static void iterate(run *r, const char *dir, uint64_t *random)
{
    child_plan plan = {.dir = dir, .iteration = r->iteration, .seed = splitmix(random)};
    plan.threads = THREADS_MIN + (unsigned)random_below(random, THREADS_MAX - THREADS_MIN + 1);
    static const uint64_t segment_sizes[] = {16 << 10, 256 << 10, 0};
    static const uint64_t snapshot_every[] = {0, 300, 3000};
    plan.segment_bytes_max = segment_sizes[random_below(random, 3)];
    plan.snapshot_every_events = snapshot_every[random_below(random, 3)];
    uint64_t kill_ms = KILL_MS_MIN + random_below(random, KILL_MS_MAX - KILL_MS_MIN + 1);
    /* --memory-max: a bulk fill first, killed at a random answer of it half the time, else a
     * while after it, when the eviction and the index may still be at work. */
    fill_watch watch = {0};
    if (r->memory_max) {
        plan.memory_max = r->memory_max;
        plan.bulk_transfers = (uint32_t)(r->memory_max / BULK_BUDGET_BYTES_PER_TRANSFER);
        memcpy(plan.fills, r->fills, r->fills_count * sizeof *r->fills);
        plan.fills[r->fills_count] = (bulk_fill_done){r->iteration, plan.bulk_transfers};
        plan.fills_count = r->fills_count + 1;
        size_t bulk_batches = (plan.bulk_transfers + BULK_BATCH_EVENTS - 1) / BULK_BATCH_EVENTS;
        if (random_below(random, 2))
            watch.answers_target = 1 + random_below(random, bulk_batches);
        kill_ms = KILL_MS_MIN + random_below(random, KILL_AFTER_FILL_MS_MAX - KILL_MS_MIN + 1);
    }

    int fds[2];
    if (pipe(fds) != 0)
        violation(r, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t child = fork();
    if (child < 0)
        violation(r, "fork: %s", strerror(errno));
    if (child == 0) {
        close(fds[0]);
        setpgid(0, 0);
        child_main(&plan, fds[1]);
        _exit(0);
    }
    setpgid(child, child); /* also here: the kill must not race the child's own call */
    close(fds[1]);
    char *buffer = NULL;
    size_t length = 0, capacity = 0;
    bool ended = false;
    if (plan.bulk_transfers)
        read_until(r, fds[0], now_ms() + FILL_SECONDS_MAX * 1000, &buffer, &length, &capacity,
                   &ended, &watch);
    if (!ended && (!plan.bulk_transfers || (watch.done && !watch.answers_target)))
        read_until(r, fds[0], now_ms() + kill_ms, &buffer, &length, &capacity, &ended, NULL);
    int status = 0;
    kill_group(child, &status);
    if (!ended)
        read_until(r, fds[0], 0, &buffer, &length, &capacity, &ended, NULL);
    close(fds[0]);
    /* Killed by us, or (never in practice) done with its load. An abort from a failed engine
     * assertion or a sanitizer, or any other end, is a failure of its own. */
    bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (!killed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        parse_lines(r, buffer, length); /* an 'F' line explains an open failure */
        violation(r, "the child failed on its own (%s %d)",
                  WIFSIGNALED(status) ? "signal" : "exit status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    r->batches_count = 0;
    r->events_count = 0;
    r->bulk_acknowledged = 0;
    r->child_evictions = r->child_evicted_transfers = r->child_cold_reads = 0;
    r->child_evicted_seq = 0;
    parse_lines(r, buffer, length);
    free(buffer);
    uint64_t truncations = r->truncations, reopen_evictions = r->reopen_evictions;
    uint64_t reopened_ms = now_ms();
    recover_and_check(r, dir);
    reopened_ms = now_ms() - reopened_ms;
    r->evictions += r->child_evictions;
    r->evicted_transfers += r->child_evicted_transfers;
    r->cold_reads += r->child_cold_reads;
    if (plan.bulk_transfers) /* the later iterations on this directory retry its fill too */
        r->fills[r->fills_count++] = (bulk_fill_done){r->iteration, r->bulk_acknowledged};
    if (r->verbose && plan.bulk_transfers)
        printf("crash_test: iteration %u: killed %s %zu of %zu answers of the fill%s; the child "
               "evicted %" PRIu64 " times (%" PRIu64 " transfers), read %" PRIu64
               " ids it lacked from the index; the reopen evicted %" PRIu64 " times\n",
               r->iteration, watch.answers_target ? "at" : "after", watch.answers,
               (size_t)(plan.bulk_transfers + BULK_BATCH_EVENTS - 1) / BULK_BATCH_EVENTS,
               watch.answers_target ? "" : " and the kill time", r->child_evictions,
               r->child_evicted_transfers, r->child_cold_reads,
               r->reopen_evictions - reopen_evictions);
    if (r->verbose)
        printf("crash_test: iteration %u: %u threads, killed after %" PRIu64 " ms, %zu batches "
               "announced, %zu ids known%s, reopen and checks %" PRIu64 " ms\n",
               r->iteration, plan.threads, kill_ms, r->batches_count, r->known.count,
               r->truncations > truncations ? ", torn tail truncated" : "", reopened_ms);
}

static void usage(void)
{
    fprintf(stderr, "usage: crash_test [--iterations N] [--seed S] [--memory-max BYTES] "
                    "[--verbose] [--keep]\n"
                    "  BYTES: a number with an optional K, M, G or T (16M), at least 16M\n"
                    "  a soak run: crash_test --iterations 100\n");
    exit(2);
}

/* --memory-max: bytes, or KiB, MiB or GiB with a K, M or G. */
/* --memory-max: a run in which nothing was ever evicted tested nothing of eviction. */
static bool check_evicted(const run *r)
{
    if (!r->memory_max || r->evictions + r->reopen_evictions > 0)
        return true;
    fprintf(stderr,
            "crash_test: FAILED (seed %" PRIu64 "): with --memory-max %" PRIu64 " no child and "
            "no reopen ever evicted: the bulk fill does not pass three quarters of the budget, "
            "or the children were killed before it did\n",
            r->seed, r->memory_max);
    return false;
}

int main(int argc, char **argv)
{
    run *r = allocate(sizeof *r);
    r->iterations = 25;
    r->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            r->iterations = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            r->seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--memory-max") == 0 && i + 1 < argc) {
            if (!parse_size(argv[++i], COFFER_MEMORY_BYTES_MIN, COFFER_MEMORY_BYTES_MAX,
                            &r->memory_max))
                usage();
        } else if (strcmp(argv[i], "--verbose") == 0)
            r->verbose = true;
        else if (strcmp(argv[i], "--keep") == 0)
            keep = true;
        else
            usage();
    }
    /* Orphaned snapshot writers of a killed child come back to this process to be reaped. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        fprintf(stderr, "crash_test: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
        return 2;
    }
    char root[] = "/tmp/coffer-crash-XXXXXX";
    if (!mkdtemp(root)) {
        fprintf(stderr, "crash_test: mkdtemp: %s\n", strerror(errno));
        return 2;
    }
    uint64_t started = now_ms(), random = r->seed;
    char dir[sizeof root + 32] = "";
    unsigned chain = 0, directories = 0;
    for (r->iteration = 0; r->iteration < r->iterations; r->iteration++) {
        bool fresh = chain == 0 || chain >= CHAIN_MAX || random_below(&random, 2) == 0;
        if (fresh) {
            if (dir[0] && !keep)
                remove_tree(dir);
            snprintf(dir, sizeof dir, "%s/run-%u", root, r->iteration);
            outcomes_clear(&r->known);
            r->fills_count = 0;
            chain = 0;
            directories++;
        }
        chain++;
        r->dir = dir;
        iterate(r, dir, &random);
    }
    if (!keep)
        remove_tree(root);
    if (r->memory_max)
        printf("crash_test: memory budget %" PRIu64 " bytes: the children evicted %" PRIu64
               " times (%" PRIu64 " transfers) and read %" PRIu64
               " ids they lacked from the index, "
               "the reopens evicted %" PRIu64 " times; %" PRIu64 " replays of evicted bulk "
               "transfers, %" PRIu64 " checks of bulk transfers after reopens\n",
               r->memory_max, r->evictions, r->evicted_transfers, r->cold_reads,
               r->reopen_evictions, r->evicted_replays, r->bulk_checked);
    bool evicted = check_evicted(r);
    printf("crash_test: %s: %u iterations on %u directories (seed %" PRIu64 "), %" PRIu64
           " acknowledged batches, %" PRIu64 " id checks, %" PRIu64 " unanswered atomic batches "
           "(%" PRIu64 " applied whole), %" PRIu64 " ids absent, %" PRIu64
           " torn tails cut, %.1f s\n",
           evicted ? "ok" : "FAILED", r->iterations, directories, r->seed, r->acknowledged_batches,
           r->checked, r->unanswered_atomic, r->unanswered_applied, r->absent, r->truncations,
           (double)(now_ms() - started) / 1000.0);
    outcomes_clear(&r->known);
    free(r->batches);
    free(r->events);
    free(r);
    return evicted ? 0 : 1;
}
