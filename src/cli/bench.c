/*
 * bench.c — `coffer bench --embedded`: drives the engine in-process with batches of generated
 * transfers from a few submitter threads, then checks the invariants. Prints a human summary
 * and, last, one JSON line for scripts (docs/benchmarks.md).
 */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/load.h"
#include "coffer.h"

static const char bench_usage[] =
    "usage: coffer bench --embedded [options]\n"
    "       coffer bench --server URL [--workload uniform|hot|seats|retries] [--connections C]\n"
    "                    [--duration S] [--batch B] [--accounts N] [--seats N] [--seed S]\n"
    "\n"
    "--server: keep-alive HTTP load on a running server (C connections, default 64; S seconds,\n"
    "default 10; B transfers per request, default 1). seats: holds on N seats (default 10000)\n"
    "that expire after 1 s; retries: a third of the requests repeat an earlier key. Prints\n"
    "requests/s, transfers/s, latency p50/p99/p999 and results by code, checks /v1/verify,\n"
    "and ends with one JSON line.\n"
    "\n"
    "       coffer bench --reopen DIR   time recovery of a data directory (e.g. one kept by\n"
    "                                   --embedded --durable DIR --keep)\n"
    "\n"
    "--embedded options:\n"
    "\n"
    "  --workload uniform|hot  uniform: random pairs of accounts; hot: every transfer debits one\n"
    "                          account (default uniform)\n"
    "  --accounts N            funded accounts (default 100000)\n"
    "  --transfers M           transfers to apply (default 10000000)\n"
    "  --batch B               events per submission, 1..8190 (default 8190)\n"
    "  --submitters T          threads submitting at once, 1..64 (default 2)\n"
    "  --seed S                random seed (default 1)\n"
    "  --durable DIR           run durably with its data in DIR (must not exist yet; removed\n"
    "                          afterwards unless --keep)\n"
    "  --fsync always|never    with --durable: sync every batch (default) or never (NOT durable)\n"
    "  --keep                  keep the --durable directory\n"
    "\n"
    "Without --durable the engine runs in memory. The last line is JSON: mode, workload,\n"
    "transfers, seconds, transfers_per_second, fsyncs, errors (counts by code), rss figures.\n";

enum workload { WORKLOAD_UNIFORM, WORKLOAD_HOT };

typedef struct bench {
    coffer *db;
    enum workload workload;
    uint64_t accounts, transfers, batch, submitters, seed;
    const char *durable_dir;
    bool fsync_never, keep;
    char (*account_ids)[24];
    atomic_uint_fast64_t next_batch;
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

/* Removes the bench's own data directory: its files and the directory (no subdirectories). */
static void remove_tree(const char *dir)
{
    DIR *listing = opendir(dir);
    if (!listing)
        return;
    struct dirent *item;
    char path[4096];
    while ((item = readdir(listing)))
        if (strcmp(item->d_name, ".") && strcmp(item->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, item->d_name);
            unlink(path);
        }
    closedir(listing);
    rmdir(dir);
}

static uint64_t rss_bytes(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    if (!status)
        return 0;
    char line[256];
    uint64_t kib = 0;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "VmRSS: %" SCNu64, &kib) == 1)
            break;
    fclose(status);
    return kib * 1024;
}

static int submit_or_fail(bench *run, coffer_event *events, size_t count, coffer_result *results)
{
    int status = coffer_submit(run->db, events, count, false, results);
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
        int status = coffer_submit(run->db, self->events, count, false, self->results);
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

static int bench_parse(bench *run, int argc, char **argv, bool *embedded)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : 0;
        bool ok = true;
        if (!strcmp(flag, "--embedded")) {
            *embedded = true;
            continue;
        } else if (!strcmp(flag, "--workload")) {
            ok = value && (!strcmp(value, "uniform") || !strcmp(value, "hot"));
            if (ok)
                run->workload = !strcmp(value, "hot") ? WORKLOAD_HOT : WORKLOAD_UNIFORM;
        } else if (!strcmp(flag, "--accounts")) {
            ok = cli_parse_u64(value, 2, 5000000, &run->accounts);
        } else if (!strcmp(flag, "--transfers")) {
            ok = cli_parse_u64(value, 1, 1000000000, &run->transfers);
        } else if (!strcmp(flag, "--batch")) {
            ok = cli_parse_u64(value, 1, COFFER_BATCH_EVENTS_MAX, &run->batch);
        } else if (!strcmp(flag, "--submitters")) {
            ok = cli_parse_u64(value, 1, 64, &run->submitters);
        } else if (!strcmp(flag, "--seed")) {
            ok = cli_parse_u64(value, 0, UINT64_MAX, &run->seed);
        } else if (!strcmp(flag, "--durable")) {
            ok = value && *value;
            run->durable_dir = value;
        } else if (!strcmp(flag, "--fsync")) {
            ok = value && (!strcmp(value, "always") || !strcmp(value, "never"));
            if (ok)
                run->fsync_never = !strcmp(value, "never");
        } else if (!strcmp(flag, "--keep")) {
            run->keep = true;
            continue;
        } else {
            return cli_usage_error("bench: unknown option '%s' (try 'coffer bench --help')", flag);
        }
        if (!ok)
            return cli_usage_error("bench: %s needs a valid value", flag);
        i++;
    }
    if (!*embedded)
        return cli_usage_error("bench: --embedded or --server URL (see --help)");
    return 0;
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
           ",\"submitters\":%" PRIu64 ",\"transfers\":%" PRIu64
           ",\"seconds\":%.6f,\"transfers_per_second\":%.0f,\"rss_bytes_per_transfer\":%.1f,"
           "\"fsyncs\":%" PRIu64 ",\"verify_ok\":%s,\"errors\":{",
           mode, workload, run->accounts, run->batch, run->submitters, run->transfers, seconds,
           rate, (double)(rss_after - rss_before) / (double)run->transfers, fsyncs,
           verify->ok ? "true" : "false");
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
    uint64_t rss_before = rss_bytes();
    double start = now_seconds();
    for (uint64_t i = 0; i < run->submitters; i++)
        pthread_create(&threads[i], 0, submitter_main, &submitters[i]);
    for (uint64_t i = 0; i < run->submitters; i++)
        pthread_join(threads[i], 0);
    double seconds = now_seconds() - start;
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

/* `coffer bench --reopen DIR`: how long recovery takes (snapshot + log after it) on DIR. */
static int bench_reopen(const char *dir)
{
    coffer_options options;
    coffer_options_init(&options);
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

static int bench_server(int argc, char **argv)
{
    load_arguments arguments = {0, "uniform", 100000, 10000, 64, 10, 1, 1};
    for (int i = 1; i < argc; i += 2) { /* every option here takes a value */
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : 0;
        bool ok = true;
        if (!strcmp(flag, "--server")) {
            ok = value != 0;
            arguments.url = value;
        } else if (!strcmp(flag, "--workload")) {
            ok = value && (!strcmp(value, "uniform") || !strcmp(value, "hot") ||
                           !strcmp(value, "seats") || !strcmp(value, "retries"));
            arguments.workload = value;
        } else if (!strcmp(flag, "--connections")) {
            ok = cli_parse_u64(value, 1, 10000, &arguments.connections);
        } else if (!strcmp(flag, "--duration")) {
            ok = cli_parse_u64(value, 1, 3600, &arguments.duration_s);
        } else if (!strcmp(flag, "--batch")) {
            ok = cli_parse_u64(value, 1, COFFER_BATCH_EVENTS_MAX, &arguments.batch);
        } else if (!strcmp(flag, "--accounts")) {
            ok = cli_parse_u64(value, 2, 10000000, &arguments.accounts);
        } else if (!strcmp(flag, "--seats")) {
            ok = cli_parse_u64(value, 1, 10000000, &arguments.seats);
        } else if (!strcmp(flag, "--seed")) {
            ok = cli_parse_u64(value, 0, UINT64_MAX, &arguments.seed);
        } else {
            return cli_usage_error("bench: unknown option '%s' with --server", flag);
        }
        if (!ok)
            return cli_usage_error("bench: %s needs a valid value", flag);
    }
    return cli_bench_server(&arguments);
}

int cli_bench(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_usage, stdout);
            return 0;
        }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--server"))
            return bench_server(argc, argv);
    if (argc == 3 && !strcmp(argv[1], "--reopen"))
        return bench_reopen(argv[2]);
    static bench run;
    run = (bench){
        .accounts = 100000, .transfers = 10000000, .batch = 8190, .submitters = 2, .seed = 1};
    bool embedded = false;
    int usage = bench_parse(&run, argc, argv, &embedded);
    if (usage)
        return usage;
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
    if (run.durable_dir && access(run.durable_dir, F_OK) == 0) {
        fprintf(stderr, "coffer bench: %s exists; give a new directory\n", run.durable_dir);
        return CLI_EXIT_USAGE;
    }
    int status = coffer_open(run.durable_dir, &options, &run.db);
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
    }
    coffer_close(run.db);
    free(run.account_ids);
    if (run.durable_dir && !run.keep)
        remove_tree(run.durable_dir);
    return exit_code;
}
