/*
 * bench.c — `coffer bench --embedded`: drives the engine in-process with batches of generated
 * transfers from a few submitter threads, then checks the invariants. Prints a human summary
 * and, last, one JSON line for scripts (docs/benchmarks.md).
 */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/feed_bench.h"
#include "cli/load.h"
#include "cli/options.h"
#include "coffer.h"
#include "server/parse.h"

enum {
    BENCH_EMBEDDED,
    BENCH_SERVER,
    BENCH_REOPEN,
    BENCH_FEED,
    BENCH_WORKLOAD,
    BENCH_ACCOUNTS,
    BENCH_TRANSFERS,
    BENCH_BATCH,
    BENCH_SUBMITTERS,
    BENCH_SEED,
    BENCH_DURABLE,
    BENCH_FSYNC,
    BENCH_KEEP,
    BENCH_CONNECTIONS,
    BENCH_DURATION,
    BENCH_SEATS,
    BENCH_CONSUMERS,
    BENCH_TOKEN,
    BENCH_CACERT,
    BENCH_CONSUMER_NICE,
    BENCH_INDEX,
    BENCH_LOG,
    BENCH_MEMORY_MAX,
    BENCH_OPTION_COUNT
};

static const cli_option bench_options[] = {
    {BENCH_EMBEDDED, "--embedded", NULL, "run the engine in this process"},
    {BENCH_SERVER, "--server", "URL",
     "keep-alive HTTP load on a running server (http:// or\nhttps://); several instances: "
     "comma separated or repeated,\nthe load goes to their leader",
     true},
    {BENCH_REOPEN, "--reopen", "DIR",
     "time recovery of a data directory (e.g. one kept by\n--embedded --durable DIR --keep)"},
    {BENCH_FEED, "--feed", "DIR",
     "read a data directory's whole change feed once, from the start,\nand time it"},
    {BENCH_WORKLOAD, "--workload", "NAME",
     "uniform: random pairs of accounts; hot: every transfer debits\none account; with "
     "--server also seats (holds on N seats that\nexpire after 1 s) and retries (a third of "
     "the requests repeat\nan earlier key). Default uniform."},
    {BENCH_ACCOUNTS, "--accounts", "N", "funded accounts (default 100000)"},
    {BENCH_TRANSFERS, "--transfers", "M", "--embedded: transfers to apply (default 10000000)"},
    {BENCH_BATCH, "--batch", "B",
     "events per submission, 1..8190 (default 8190; with --server\ntransfers per request, "
     "default 1)"},
    {BENCH_SUBMITTERS, "--submitters", "T",
     "--embedded: threads submitting at once, 1..64 (default 2)"},
    {BENCH_SEED, "--seed", "S", "random seed (default 1)"},
    {BENCH_DURABLE, "--durable", "DIR",
     "--embedded: run durably with its data in DIR (must not exist\nyet; removed afterwards "
     "unless --keep)"},
    {BENCH_FSYNC, "--fsync", "always|never",
     "with --durable: sync every batch (default) or never (NOT\ndurable)"},
    {BENCH_KEEP, "--keep", NULL, "keep the --durable directory"},
    {BENCH_CONNECTIONS, "--connections", "C", "--server: connections (default 64)"},
    {BENCH_DURATION, "--duration", "S", "--server: seconds of load (default 10)"},
    {BENCH_SEATS, "--seats", "N", "--server with seats: seats (default 10000)"},
    {BENCH_CONSUMERS, "--consumers", "N",
     "--embedded --durable: change feed consumers following the log\nwhile it is written "
     "(default 0)"},
    {BENCH_TOKEN, "--token", "TOKEN",
     "--server: the bearer token sent with every request (default:\n$COFFER_TOKEN); the "
     "write scope, admin for the final /v1/verify"},
    {BENCH_CACERT, "--cacert", "FILE",
     "--server https://: trust the CA certificates (PEM) in FILE\ninstead of the system's "
     "(default: $COFFER_CACERT)"},
    {BENCH_CONSUMER_NICE, "--consumer-nice", "N",
     "run the --consumers at this nice value, 0-19 (default 0): on\nbusy cores they then lag "
     "and catch up rather than slow the writer"},
    {BENCH_INDEX, "--index", "on|off",
     "with --durable: keep the on-disk index (default off); at the\nend its lag and the time it "
     "takes to catch up are printed"},
    {BENCH_LOG, "--log", "postgresql://CONNINFO",
     "with --durable: keep the log in this PostgreSQL database (the\nengine leads it; the "
     "directory keeps snapshots)"},
    {BENCH_MEMORY_MAX, "--memory-max", "SIZE",
     "--embedded: the engine's memory budget (16M to 4T); with\n--durable and --index on, "
     "memory evicts what the index holds: the\nrun reports the rate of its last tenth, the "
     "evictions, resident\nmemory, disk bytes per transfer and the latency of replays of\n"
     "old ids. --reopen: recover within this budget"},
};

static const cli_spec bench_spec = {
    .name = "bench",
    .synopsis = "--embedded | --server URL | --reopen DIR | --feed DIR [options]",
    .description =
        "--embedded drives the engine in-process with batches of generated transfers from a few\n"
        "submitter threads, then checks the invariants; without --durable it runs in memory.\n"
        "--server runs C keep-alive connections against a server for S seconds, then prints\n"
        "requests/s, transfers/s, latency p50/p99/p999 and results by code and checks\n"
        "/v1/verify. Both end with one JSON line for scripts (docs/benchmarks.md).\n",
    .options = bench_options,
    .option_count = sizeof bench_options / sizeof *bench_options,
};

/* The options each mode takes, besides the one naming it. */
#define BENCH_BIT(id) (1u << (id))
#define BENCH_EMBEDDED_TAKES                                                                       \
    (BENCH_BIT(BENCH_WORKLOAD) | BENCH_BIT(BENCH_ACCOUNTS) | BENCH_BIT(BENCH_TRANSFERS) |          \
     BENCH_BIT(BENCH_BATCH) | BENCH_BIT(BENCH_SUBMITTERS) | BENCH_BIT(BENCH_SEED) |                \
     BENCH_BIT(BENCH_DURABLE) | BENCH_BIT(BENCH_FSYNC) | BENCH_BIT(BENCH_KEEP) |                   \
     BENCH_BIT(BENCH_CONSUMERS) | BENCH_BIT(BENCH_CONSUMER_NICE) | BENCH_BIT(BENCH_INDEX) |        \
     BENCH_BIT(BENCH_LOG) | BENCH_BIT(BENCH_MEMORY_MAX))
#define BENCH_SERVER_TAKES                                                                         \
    (BENCH_BIT(BENCH_WORKLOAD) | BENCH_BIT(BENCH_ACCOUNTS) | BENCH_BIT(BENCH_BATCH) |              \
     BENCH_BIT(BENCH_SEED) | BENCH_BIT(BENCH_CONNECTIONS) | BENCH_BIT(BENCH_DURATION) |            \
     BENCH_BIT(BENCH_SEATS) | BENCH_BIT(BENCH_TOKEN) | BENCH_BIT(BENCH_CACERT))

enum workload { WORKLOAD_UNIFORM, WORKLOAD_HOT };

typedef struct bench {
    coffer *db;
    enum workload workload;
    uint64_t accounts, transfers, batch, submitters, seed, consumers, consumer_nice;
    const char *durable_dir;
    const char *log_location; /* --log: a PostgreSQL log */
    bool fsync_never, keep, index_on;
    uint64_t memory_max; /* --memory-max, 0: the engine's default */
    char (*account_ids)[24];
    atomic_uint_fast64_t next_batch;
    atomic_uint_fast64_t overloaded; /* submissions retried after `overloaded` */
    _Atomic double last_tenth_start; /* when the batch starting the run's last tenth was taken */
    double finished;                 /* when the last batch was answered */
    atomic_uint_fast64_t codes[COFFER_CODE_LIMIT];
    atomic_int failure; /* a coffer_submit status other than OK */
} bench;

typedef struct submitter {
    bench *run;
    uint64_t random;
    coffer_event *events;
    coffer_result *results;
    char (*ids)[24];
} submitter;

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64*: fast, and good enough to spread transfers over accounts. */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void format_id(char *out, char prefix, uint64_t number)
{
    static const char digits[] = "0123456789abcdef";
    out[0] = prefix;
    out[1] = ':';
    for (int i = 0; i < 16; i++)
        out[2 + i] = digits[(number >> (60 - 4 * i)) & 15];
    out[18] = 0;
}

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static int remove_entry(const char *path, const struct stat *status, int type, struct FTW *walk)
{
    (void)status, (void)type, (void)walk;
    remove(path);
    return 0;
}

/* Removes the bench's own data directory, the index's directory in it included (it was left
 * behind, holding gigabytes after a long run). */
static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A field of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (the peak). */
static uint64_t status_bytes(const char *field)
{
    FILE *status = fopen("/proc/self/status", "r");
    if (!status)
        return 0;
    char line[256];
    uint64_t kib = 0;
    size_t length = strlen(field);
    while (fgets(line, sizeof line, status))
        if (strncmp(line, field, length) == 0 && sscanf(line + length, ": %" SCNu64, &kib) == 1)
            break;
    fclose(status);
    return kib * 1024;
}

static uint64_t rss_bytes(void)
{
    return status_bytes("VmRSS");
}

static uint64_t peak_rss_bytes(void)
{
    return status_bytes("VmHWM");
}

/* The data directory's bytes, summed by nftw's callback. */
static uint64_t bench_disk_bytes;

/* coffer_submit, again after a millisecond while the answer is overloaded: with a memory
 * budget, memory may be full while the index catches up. */
static int submit_retrying(bench *run, coffer_event *events, size_t count, coffer_result *results)
{
    int status = coffer_submit(run->db, events, count, false, results);
    while (status == COFFER_OVERLOADED && run->memory_max) {
        atomic_fetch_add(&run->overloaded, 1);
        usleep(1000);
        status = coffer_submit(run->db, events, count, false, results);
    }
    return status;
}

static int submit_or_fail(bench *run, coffer_event *events, size_t count, coffer_result *results)
{
    int status = submit_retrying(run, events, count, results);
    if (status != COFFER_OK) {
        fprintf(stderr, "coffer bench: submit failed: %s\n", coffer_code_name(status));
        return status;
    }
    for (size_t i = 0; i < count; i++)
        if (results[i].code != COFFER_CREATED) {
            fprintf(stderr, "coffer bench: setup event %zu: %s\n", i,
                    coffer_code_name(results[i].code));
            return results[i].code;
        }
    return COFFER_OK;
}

/* Creates the bank (unbounded), the hot account and the users, and funds every one. */
static int bench_setup(bench *run)
{
    size_t total = run->accounts + 2;
    coffer_event *events = calloc(COFFER_BATCH_EVENTS_MAX, sizeof *events);
    coffer_result *results = calloc(COFFER_BATCH_EVENTS_MAX, sizeof *results);
    char(*funding_ids)[24] = calloc(COFFER_BATCH_EVENTS_MAX, sizeof *funding_ids);
    int status = events && results && funding_ids ? COFFER_OK : COFFER_OUT_OF_MEMORY;
    for (size_t done = 0; status == COFFER_OK && done < total;) {
        size_t count =
            total - done < COFFER_BATCH_EVENTS_MAX ? total - done : COFFER_BATCH_EVENTS_MAX;
        for (size_t i = 0; i < count; i++) {
            events[i] = (coffer_event){.op = COFFER_OP_CREATE_ACCOUNT,
                                       .id = run->account_ids[done + i],
                                       .currency = "KRW"};
            if (done + i == 0)
                events[i].flags = COFFER_FLAG_MIN_UNBOUNDED;
        }
        status = submit_or_fail(run, events, count, results);
        for (size_t i = 0; status == COFFER_OK && i < count; i++) {
            format_id(funding_ids[i], 'f', done + i);
            events[i] = (coffer_event){.op = COFFER_OP_TRANSFER,
                                       .id = funding_ids[i],
                                       .from = run->account_ids[0],
                                       .to = run->account_ids[done + i],
                                       .amount = 1000000000000LL};
        }
        size_t skip = done == 0; /* the bank does not fund itself */
        if (status == COFFER_OK)
            status = submit_or_fail(run, events + skip, count - skip, results);
        done += count;
    }
    free(events);
    free(results);
    free(funding_ids);
    return status;
}

static void fill_batch(submitter *self, uint64_t first, size_t count)
{
    bench *run = self->run;
    for (size_t i = 0; i < count; i++) {
        coffer_event *event = &self->events[i];
        format_id(self->ids[i], 't', first + i);
        uint64_t to = 2 + next_random(&self->random) % run->accounts;
        uint64_t from = 1; /* the hot account */
        if (run->workload == WORKLOAD_UNIFORM) {
            do
                from = 2 + next_random(&self->random) % run->accounts;
            while (from == to && run->accounts > 1);
        }
        *event = (coffer_event){.op = COFFER_OP_TRANSFER,
                                .id = self->ids[i],
                                .from = run->account_ids[from],
                                .to = run->account_ids[to],
                                .amount = 1 + (int64_t)(next_random(&self->random) % 100)};
    }
}

static void *submitter_main(void *argument)
{
    submitter *self = argument;
    bench *run = self->run;
    uint64_t batches = (run->transfers + run->batch - 1) / run->batch;
    uint64_t local[COFFER_CODE_LIMIT] = {0};
    for (;;) {
        uint64_t index = atomic_fetch_add(&run->next_batch, 1);
        if (index >= batches || atomic_load(&run->failure))
            break;
        uint64_t first = index * run->batch;
        size_t count = run->transfers - first < run->batch ? run->transfers - first : run->batch;
        fill_batch(self, first, count);
        if (index == batches - batches / 10 && batches >= 10)
            atomic_store(&run->last_tenth_start, now_seconds());
        int status = submit_retrying(run, self->events, count, self->results);
        if (status != COFFER_OK) {
            atomic_store(&run->failure, status);
            break;
        }
        for (size_t i = 0; i < count; i++)
            local[self->results[i].code]++;
    }
    for (int code = 0; code < COFFER_CODE_LIMIT; code++)
        atomic_fetch_add(&run->codes[code], local[code]);
    return 0;
}

/* --memory-max, when given, into *out; false after printing the usage line. */
static bool bench_memory_max(const cli_parsed *parsed, uint64_t *out)
{
    const char *memory = parsed->values[BENCH_MEMORY_MAX];
    if (!memory || parse_size(memory, COFFER_MEMORY_BYTES_MIN, COFFER_MEMORY_BYTES_MAX, out))
        return true;
    cli_usage(&bench_spec, "--memory-max needs a size from 16M to 4T (like 48M or 2G)");
    return false;
}

static bool bench_embedded_values(bench *run, const cli_parsed *parsed)
{
    static const char *const workloads[] = {"uniform", "hot", NULL};
    static const char *const fsync_modes[] = {"always", "never", NULL};
    static const char *const index_modes[] = {"off", "on", NULL};
    int workload = WORKLOAD_UNIFORM, fsync_mode = 0, index_mode = 0;
    bool ok =
        cli_value_choice(&bench_spec, parsed, BENCH_WORKLOAD, workloads, &workload) &&
        cli_value_u64(&bench_spec, parsed, BENCH_ACCOUNTS, 2, 5000000, &run->accounts) &&
        cli_value_u64(&bench_spec, parsed, BENCH_TRANSFERS, 1, 1000000000, &run->transfers) &&
        cli_value_u64(&bench_spec, parsed, BENCH_BATCH, 1, COFFER_BATCH_EVENTS_MAX, &run->batch) &&
        cli_value_u64(&bench_spec, parsed, BENCH_SUBMITTERS, 1, 64, &run->submitters) &&
        cli_value_u64(&bench_spec, parsed, BENCH_SEED, 0, UINT64_MAX, &run->seed) &&
        cli_value_u64(&bench_spec, parsed, BENCH_CONSUMERS, 0, 16, &run->consumers) &&
        cli_value_u64(&bench_spec, parsed, BENCH_CONSUMER_NICE, 0, 19, &run->consumer_nice) &&
        cli_value_choice(&bench_spec, parsed, BENCH_FSYNC, fsync_modes, &fsync_mode) &&
        cli_value_choice(&bench_spec, parsed, BENCH_INDEX, index_modes, &index_mode);
    ok = ok && bench_memory_max(parsed, &run->memory_max);
    if (ok && parsed->values[BENCH_DURABLE] && !parsed->values[BENCH_DURABLE][0]) {
        cli_usage(&bench_spec, "--durable needs a directory");
        ok = false;
    }
    if (ok && run->consumers && !parsed->values[BENCH_DURABLE]) {
        cli_usage(&bench_spec, "--consumers needs --durable: the feed is read from the log");
        ok = false;
    }
    run->workload = (enum workload)workload;
    run->fsync_never = fsync_mode == 1;
    run->index_on = index_mode == 1;
    run->log_location = parsed->values[BENCH_LOG];
    run->durable_dir = parsed->values[BENCH_DURABLE];
    run->keep = parsed->values[BENCH_KEEP] != NULL;
    return ok;
}

static void bench_report(const bench *run, double seconds, uint64_t rss_before, uint64_t rss_after,
                         const coffer_verify_report *verify, uint64_t fsyncs)
{
    const char *mode = !run->durable_dir  ? "embedded-memory"
                       : run->fsync_never ? "embedded-durable-fsync-never"
                                          : "embedded-durable";
    const char *workload = run->workload == WORKLOAD_HOT ? "hot" : "uniform";
    double rate = (double)run->transfers / seconds;
    uint64_t created = atomic_load(&run->codes[COFFER_CREATED]);
    printf("workload %s: %" PRIu64 " transfers over %" PRIu64 " accounts in batches of %" PRIu64
           ", %" PRIu64 " submitters\n",
           workload, run->transfers, run->accounts, run->batch, run->submitters);
    printf("  %s: %.3f s, %.0f transfers/s, %" PRIu64 " created, %" PRIu64 " fsyncs\n", mode,
           seconds, rate, created, fsyncs);
    printf("  memory: %.1f MiB more resident, %.0f bytes per transfer\n",
           (double)(rss_after - rss_before) / 1048576.0,
           (double)(rss_after - rss_before) / (double)run->transfers);
    printf("  verify: %s (%u problems)\n", verify->ok ? "ok" : "FAILED", verify->problem_count);
    for (uint32_t i = 0; i < verify->problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++)
        printf("    %s\n", verify->problems[i]);
    printf("{\"mode\":\"%s\",\"workload\":\"%s\",\"accounts\":%" PRIu64 ",\"batch\":%" PRIu64
           ",\"submitters\":%" PRIu64 ",\"consumers\":%" PRIu64 ",\"transfers\":%" PRIu64
           ",\"seconds\":%.6f,\"transfers_per_second\":%.0f,\"rss_bytes_per_transfer\":%.1f,"
           "\"fsyncs\":%" PRIu64 ",\"verify_ok\":%s,\"errors\":{",
           mode, workload, run->accounts, run->batch, run->submitters, run->consumers,
           run->transfers, seconds, rate, (double)(rss_after - rss_before) / (double)run->transfers,
           fsyncs, verify->ok ? "true" : "false");
    const char *separator = "";
    for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
        uint64_t count = atomic_load(&run->codes[code]);
        if (count == 0 || code == COFFER_CREATED)
            continue;
        printf("%s\"%s\":%" PRIu64, separator, coffer_code_name(code), count);
        separator = ",";
    }
    printf("}}\n");
}

static int bench_run(bench *run)
{
    submitter *submitters = calloc(run->submitters, sizeof *submitters);
    pthread_t *threads = calloc(run->submitters, sizeof *threads);
    for (uint64_t i = 0; submitters && i < run->submitters; i++) {
        submitters[i] =
            (submitter){run, run->seed * 0x9E3779B97F4A7C15ULL + i + 1,
                        calloc(run->batch, sizeof(coffer_event)),
                        calloc(run->batch, sizeof(coffer_result)), calloc(run->batch, 24)};
        if (!submitters[i].events || !submitters[i].results || !submitters[i].ids)
            return 1;
    }
    if (!threads)
        return 1;
    feed_consumers *consumers = 0;
    if (run->consumers && !(consumers = feed_consumers_start(run->db, (unsigned)run->consumers,
                                                             (int)run->consumer_nice)))
        return 1;
    uint64_t rss_before = rss_bytes();
    double start = now_seconds();
    for (uint64_t i = 0; i < run->submitters; i++)
        pthread_create(&threads[i], 0, submitter_main, &submitters[i]);
    for (uint64_t i = 0; i < run->submitters; i++)
        pthread_join(threads[i], 0);
    run->finished = now_seconds();
    double seconds = run->finished - start;
    if (consumers) {
        uint64_t changes;
        double catch_up;
        if (feed_consumers_stop(consumers, &changes, &catch_up) != COFFER_OK)
            return 1;
        printf("  feed: %" PRIu64 " consumer(s) at nice %" PRIu64 " followed the log; each read "
               "%" PRIu64 " changes and caught up %.3f s after the last write\n",
               run->consumers, run->consumer_nice, changes, catch_up);
    }
    uint64_t rss_after = rss_bytes();
    coffer_verify_report verify;
    int status = coffer_verify(run->db, &verify);
    coffer_stats stats = {0};
    coffer_stats_get(run->db, &stats);
    if (atomic_load(&run->failure) || status != COFFER_OK) {
        fprintf(stderr, "coffer bench: %s\n",
                coffer_code_name(atomic_load(&run->failure) ? atomic_load(&run->failure) : status));
        return 1;
    }
    bench_report(run, seconds, rss_before, rss_after, &verify, stats.fsyncs);
    for (uint64_t i = 0; i < run->submitters; i++) {
        free(submitters[i].events);
        free(submitters[i].results);
        free(submitters[i].ids);
    }
    free(submitters);
    free(threads);
    return verify.ok ? 0 : 1;
}

/* `coffer bench --reopen DIR`: how long recovery takes (snapshot + log after it) on DIR, within
 * a memory budget when one is given (0: the default). */
static int bench_reopen(const char *dir, uint64_t memory_max)
{
    coffer_options options;
    coffer_options_init(&options);
    options.index_on = true; /* a snapshot taken after an eviction needs it */
    options.memory_bytes_max = memory_max;
    double start = now_seconds();
    coffer *db;
    int code = coffer_open(dir, &options, &db);
    double seconds = now_seconds() - start;
    if (code != COFFER_OK) {
        fprintf(stderr, "coffer bench: open %s: %s\n", dir, coffer_strerror(code));
        return 1;
    }
    coffer_stats stats;
    coffer_stats_get(db, &stats);
    printf("reopened %s in %.3f s: %" PRIu64 " accounts, %" PRIu64 " transfers, seq %" PRIu64 "\n",
           dir, seconds, stats.accounts, stats.transfers, stats.seq);
    printf("{\"mode\":\"reopen\",\"seconds\":%.3f,\"accounts\":%" PRIu64 ",\"transfers\":%" PRIu64
           ",\"seq\":%" PRIu64 "}\n",
           seconds, stats.accounts, stats.transfers, stats.seq);
    coffer_close(db);
    return 0;
}

/* The flag after the command, else the one before it, else the environment. */
static const char *flag_or_default(const char *after, const char *before, const char *variable)
{
    return after ? after : before ? before : getenv(variable);
}

static int bench_server(const cli_parsed *parsed, const cli_globals *globals)
{
    load_arguments arguments = {
        .url = parsed->values[BENCH_SERVER],
        .workload = "uniform",
        .token = flag_or_default(parsed->values[BENCH_TOKEN], globals->token, "COFFER_TOKEN"),
        .cacert = flag_or_default(parsed->values[BENCH_CACERT], globals->cacert, "COFFER_CACERT"),
        .accounts = 100000,
        .seats = 10000,
        .connections = 64,
        .duration_s = 10,
        .batch = 1,
        .seed = 1,
    };
    static const char *const workloads[] = {"uniform", "hot", "seats", "retries", NULL};
    int workload = 0;
    if (!cli_value_choice(&bench_spec, parsed, BENCH_WORKLOAD, workloads, &workload) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_CONNECTIONS, 1, 10000, &arguments.connections) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_DURATION, 1, 3600, &arguments.duration_s) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_BATCH, 1, COFFER_BATCH_EVENTS_MAX,
                       &arguments.batch) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_ACCOUNTS, 2, 10000000, &arguments.accounts) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_SEATS, 1, 10000000, &arguments.seats) ||
        !cli_value_u64(&bench_spec, parsed, BENCH_SEED, 0, UINT64_MAX, &arguments.seed))
        return CLI_EXIT_USAGE;
    arguments.workload = workloads[workload];
    /* Several instances: the load goes to their leader (one alone is loaded as it is). */
    char leader[CLIENT_SERVER_BYTES_MAX];
    if (arguments.url && strchr(arguments.url, ',')) {
        int status = client_find_leader(arguments.url, arguments.token, arguments.cacert, leader,
                                        sizeof leader);
        if (status != CLI_GO_ON)
            return status;
        fprintf(stderr, "coffer bench: the leader is %s\n", leader);
        arguments.url = leader;
    }
    return cli_bench_server(&arguments);
}

/* Exactly one mode, and only the options it takes. */
static int bench_mode(const cli_parsed *parsed, int *mode)
{
    int modes = 0;
    for (int id = BENCH_EMBEDDED; id <= BENCH_FEED; id++)
        if (parsed->values[id]) {
            *mode = id;
            modes++;
        }
    if (modes != 1)
        return cli_usage(&bench_spec, "one of --embedded, --server URL, --reopen DIR or --feed DIR "
                                      "(try 'coffer bench --help')");
    unsigned takes = *mode == BENCH_EMBEDDED ? BENCH_EMBEDDED_TAKES
                     : *mode == BENCH_SERVER ? BENCH_SERVER_TAKES
                     : *mode == BENCH_REOPEN ? BENCH_BIT(BENCH_MEMORY_MAX)
                                             : 0;
    for (int id = BENCH_WORKLOAD; id < BENCH_OPTION_COUNT; id++)
        if (parsed->values[id] && !(takes & BENCH_BIT(id)))
            return cli_usage(&bench_spec, "%s does not apply with %s", bench_options[id].name,
                             bench_options[*mode].name);
    return CLI_GO_ON;
}

/* After the run: how far the on-disk index was behind the log, and how long it took to catch
 * up with nothing more written. */
static void bench_index_report(coffer *db)
{
    coffer_stats stats;
    if (coffer_stats_get(db, &stats) != COFFER_OK || !stats.index_on)
        return;
    uint64_t lag = stats.durable_seq - stats.index_applied_seq;
    double start = now_seconds();
    while (stats.index_on && stats.index_applied_seq < stats.durable_seq &&
           coffer_stats_get(db, &stats) == COFFER_OK)
        usleep(10000);
    double catch_up = now_seconds() - start;
    double writing = (double)stats.index_write_us_total / 1e6;
    printf("  index: %" PRIu64 " events behind at the end, caught up in %.3f s; %" PRIu64
           " records, %" PRIu64 " events indexed in %.3f s of writes (%.0f events/s)\n",
           lag, catch_up, stats.index_records, stats.index_events, writing,
           writing > 0 ? (double)stats.index_events / writing : 0);
    printf("{\"mode\":\"index\",\"lag_events\":%" PRIu64 ",\"catch_up_seconds\":%.3f,"
           "\"events\":%" PRIu64 ",\"write_seconds\":%.3f}\n",
           lag, catch_up, stats.index_events, writing);
}

static int sum_file(const char *path, const struct stat *st, int type, struct FTW *walk)
{
    (void)path, (void)walk;
    if (type == FTW_F)
        bench_disk_bytes += (uint64_t)st->st_size;
    return 0;
}

static int compare_doubles(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* With --memory-max: the last tenth's rate, what memory evicted and holds, the disk, and the
 * latency of retries of old ids (each one's content read back first, then submitted again and
 * timed: an idempotent replay, answered from the index when memory evicted it). */
static int bench_memory_report(bench *run)
{
    enum { REPLAYS = 10000 };
    static double latencies[REPLAYS];
    uint64_t old = run->transfers - run->transfers / 10, seed = run->seed * 7919 + 1, replayed = 0;
    for (int i = 0; i < REPLAYS && old > 0; i++) {
        char id[24];
        format_id(id, 't', next_random(&seed) % old);
        coffer_transfer t;
        if (coffer_transfer_get(run->db, id, &t) != COFFER_OK)
            return 1;
        coffer_event event = {.op = COFFER_OP_TRANSFER,
                              .id = t.id,
                              .from = t.from,
                              .to = t.to,
                              .amount = t.amount_requested};
        coffer_result result;
        double start = now_seconds();
        int code = coffer_submit(run->db, &event, 1, false, &result);
        latencies[replayed++] = now_seconds() - start;
        if (code != COFFER_OK || !result.replayed)
            return 1;
    }
    qsort(latencies, replayed, sizeof *latencies, compare_doubles);
    coffer_stats stats;
    if (coffer_stats_get(run->db, &stats) != COFFER_OK)
        return 1;
    bench_disk_bytes = 0;
    if (run->durable_dir)
        nftw(run->durable_dir, sum_file, 16, FTW_PHYS);
    uint64_t batches = (run->transfers + run->batch - 1) / run->batch;
    uint64_t tenth_transfers = run->transfers - (batches - batches / 10) * run->batch;
    double started = atomic_load(&run->last_tenth_start);
    double tenth_rate = started > 0 ? (double)tenth_transfers / (run->finished - started) : 0;
    double p50 = replayed ? latencies[replayed / 2] : 0,
           p99 = replayed ? latencies[replayed * 99 / 100] : 0;
    printf("  last tenth: %" PRIu64 " transfers at %.0f transfers/s\n", tenth_transfers,
           tenth_rate);
    printf("  memory: budget %.1f MiB, %.1f MiB in use, filter %.1f MiB; resident now %.1f MiB, at "
           "most %.1f MiB; %" PRIu64 " evictions of %" PRIu64 " transfers (%.3f s); %" PRIu64
           " submissions retried after overloaded\n",
           (double)stats.memory_budget_bytes / 1048576.0,
           (double)stats.memory_used_bytes / 1048576.0,
           (double)stats.index_filter_bytes / 1048576.0, (double)rss_bytes() / 1048576.0,
           (double)peak_rss_bytes() / 1048576.0, stats.evictions, stats.evicted_transfers,
           (double)stats.eviction_us_total / 1e6, (uint64_t)atomic_load(&run->overloaded));
    printf("  disk: %.0f bytes per transfer; replays of old ids: p50 %.1f us, p99 %.1f us, max "
           "%.1f us (%" PRIu64 " replays)\n",
           (double)bench_disk_bytes / (double)run->transfers, p50 * 1e6, p99 * 1e6,
           replayed ? latencies[replayed - 1] * 1e6 : 0, replayed);
    printf("{\"mode\":\"memory\",\"budget_bytes\":%" PRIu64 ",\"used_bytes\":%" PRIu64
           ",\"rss_peak_bytes\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"overloaded\":%" PRIu64
           ",\"last_tenth_transfers_per_second\":%.0f,\"disk_bytes_per_transfer\":%.0f,"
           "\"replay_p50_us\":%.1f,\"replay_p99_us\":%.1f}\n",
           stats.memory_budget_bytes, stats.memory_used_bytes, peak_rss_bytes(), stats.evictions,
           (uint64_t)atomic_load(&run->overloaded), tenth_rate,
           (double)bench_disk_bytes / (double)run->transfers, p50 * 1e6, p99 * 1e6);
    return 0;
}

int cli_bench(int argc, char **argv, const cli_globals *globals)
{
    cli_parsed parsed;
    int status = cli_parse(&bench_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    if (globals->server && !parsed.values[BENCH_SERVER])
        parsed.values[BENCH_SERVER] = globals->server;
    int mode = BENCH_EMBEDDED;
    status = bench_mode(&parsed, &mode);
    if (status != CLI_GO_ON)
        return status;
    if (mode == BENCH_SERVER)
        return bench_server(&parsed, globals);
    if (mode == BENCH_REOPEN) {
        uint64_t memory_max = 0;
        if (!bench_memory_max(&parsed, &memory_max))
            return CLI_EXIT_USAGE;
        return bench_reopen(parsed.values[BENCH_REOPEN], memory_max);
    }
    if (mode == BENCH_FEED)
        return cli_bench_feed(parsed.values[BENCH_FEED]);
    static bench run;
    run = (bench){
        .accounts = 100000, .transfers = 10000000, .batch = 8190, .submitters = 2, .seed = 1};
    if (!bench_embedded_values(&run, &parsed))
        return CLI_EXIT_USAGE;
    coffer_options options;
    coffer_options_init(&options);
    options.accounts_max = (uint32_t)run.accounts + 2;
    options.transfers_max = (uint32_t)(run.transfers + run.accounts + 2);
    options.queue_events_max = (uint32_t)(run.batch * run.submitters + COFFER_BATCH_EVENTS_MAX);
    run.account_ids = calloc(run.accounts + 2, sizeof *run.account_ids);
    if (!run.account_ids)
        return 1;
    strcpy(run.account_ids[0], "bank");
    strcpy(run.account_ids[1], "hot");
    for (uint64_t i = 0; i < run.accounts; i++)
        format_id(run.account_ids[2 + i], 'u', i);
    options.fsync_never = run.fsync_never;
    options.index_on = run.index_on;
    options.memory_bytes_max = run.memory_max;
    options.log_location = run.log_location;
    if (run.durable_dir && access(run.durable_dir, F_OK) == 0) {
        fprintf(stderr, "coffer bench: %s exists; give a new directory\n", run.durable_dir);
        return CLI_EXIT_USAGE;
    }
    status = coffer_open(run.durable_dir, &options, &run.db);
    if (status != COFFER_OK) {
        fprintf(stderr, "coffer bench: open: %s\n", coffer_strerror(status));
        return 1;
    }
    uint64_t rss_empty = rss_bytes();
    int exit_code = 1;
    if (bench_setup(&run) == COFFER_OK) {
        /* Setup created the accounts and one funding transfer each: the figure per account
         * includes that transfer and its history, so it is an upper bound. */
        printf("setup: %" PRIu64 " accounts, %.0f bytes resident per account (with its funding "
               "transfer)\n",
               run.accounts + 2, (double)(rss_bytes() - rss_empty) / (double)(run.accounts + 2));
        exit_code = bench_run(&run);
        if (exit_code == 0)
            bench_index_report(run.db);
        if (exit_code == 0 && run.memory_max)
            exit_code = bench_memory_report(&run);
    }
    coffer_close(run.db);
    free(run.account_ids);
    if (run.durable_dir && !run.keep)
        remove_tree(run.durable_dir);
    return exit_code;
}
