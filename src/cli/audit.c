/*
 * audit.c — `coffer verify DIR` and `coffer dump DIR`: offline checks and the log as JSON
 * lines. Neither modifies the directory.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "coffer.h"
#include "engine/audit.h"

static const char verify_usage[] =
    "usage: coffer verify DIR [--json]\n"
    "\n"
    "Checks a data directory without changing it: the hash chain of every log record, a full\n"
    "replay into fresh state, the newest snapshot against that replay, what recovery would\n"
    "build against it, and every invariant (balances sum to zero per currency, accounts within\n"
    "their limits, held totals equal pending holds, one outcome per id).\n"
    "Exit status: 0 all good, 1 a problem was found, 2 bad usage.\n";

static const char dump_usage[] =
    "usage: coffer dump DIR\n"
    "\n"
    "Prints every logged event as one JSON object per line, in seq order.\n";

static void show_progress(const char *stage, uint64_t done, uint64_t total, void *context)
{
    (void)context;
    static int last_percent = -1;
    int percent = total ? (int)(done * 100 / total) : 100;
    if (percent == last_percent)
        return;
    last_percent = percent;
    fprintf(stderr, "\r%s: %3d%%", stage, percent);
    if (percent == 100)
        fputc('\n', stderr);
}

static void print_human(const char *dir, const audit_report *r)
{
    printf("coffer verify %s: %s\n", dir, r->ok ? "OK" : "PROBLEMS FOUND");
    printf("  log: %llu records in %llu segments, last seq %llu, chain %s\n",
           (unsigned long long)r->records, (unsigned long long)r->segments,
           (unsigned long long)r->last_seq, r->chain_ok ? "intact" : "BROKEN");
    printf("  chain tip hash: %s\n", r->tip_hash);
    if (r->chain_error[0])
        printf("    %s\n", r->chain_error);
    if (r->torn_bytes)
        printf("  a torn tail of %llu bytes: cut at the next open unless it holds acknowledged "
               "records (a problem above then says so)\n",
               (unsigned long long)r->torn_bytes);
    if (r->snapshot_found)
        printf("  snapshot at seq %llu: %s the replay; recovery from it %s the full replay\n",
               (unsigned long long)r->snapshot_seq,
               r->snapshot_matches ? "matches" : "DIFFERS FROM",
               r->recovery_matches ? "matches" : "DIFFERS FROM");
    else
        printf("  no snapshot: recovery replays the whole log\n");
    if (r->snapshot_error[0])
        printf("    %s\n", r->snapshot_error);
    printf("  invariants: %llu accounts, %llu transfers: %s\n",
           (unsigned long long)r->invariants.accounts_checked,
           (unsigned long long)r->invariants.transfers_checked,
           r->invariants.ok ? "all hold" : "VIOLATED");
    for (uint32_t i = 0; i < r->invariants.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++)
        printf("    %s\n", r->invariants.problems[i]);
}

static void json_text(const char *text)
{
    putchar('"');
    for (; *text; text++) {
        if (*text == '"' || *text == '\\')
            putchar('\\');
        if ((unsigned char)*text < 0x20)
            continue;
        putchar(*text);
    }
    putchar('"');
}

static void print_json(const audit_report *r)
{
    printf("{\"ok\":%s,\"log\":{\"records\":%llu,\"segments\":%llu,\"last_seq\":%llu,"
           "\"chain_ok\":%s,\"tip_hash\":\"%s\",\"torn_bytes\":%llu,\"error\":",
           r->ok ? "true" : "false", (unsigned long long)r->records,
           (unsigned long long)r->segments, (unsigned long long)r->last_seq,
           r->chain_ok ? "true" : "false", r->tip_hash, (unsigned long long)r->torn_bytes);
    json_text(r->chain_error);
    printf("},\"snapshot\":{\"found\":%s,\"seq\":%llu,\"matches_replay\":%s,"
           "\"recovery_matches\":%s,\"error\":",
           r->snapshot_found ? "true" : "false", (unsigned long long)r->snapshot_seq,
           r->snapshot_matches ? "true" : "false", r->recovery_matches ? "true" : "false");
    json_text(r->snapshot_error);
    printf("},\"invariants\":{\"ok\":%s,\"accounts\":%llu,\"transfers\":%llu,\"problems\":[",
           r->invariants.ok ? "true" : "false", (unsigned long long)r->invariants.accounts_checked,
           (unsigned long long)r->invariants.transfers_checked);
    for (uint32_t i = 0; i < r->invariants.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++) {
        if (i)
            putchar(',');
        json_text(r->invariants.problems[i]);
    }
    printf("]}}\n");
}

int cli_verify(int argc, char **argv)
{
    const char *dir = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(verify_usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (argv[i][0] == '-')
            return cli_usage_error("verify: unknown option '%s'", argv[i]);
        else if (dir)
            return cli_usage_error("verify: one directory only");
        else
            dir = argv[i];
    }
    if (!dir)
        return cli_usage_error("verify: which data directory? (coffer verify DIR)");
    if (access(dir, R_OK | X_OK) != 0)
        return cli_usage_error("verify: cannot read %s", dir);
    audit_options options = {0};
    if (!json && isatty(2))
        options.progress = show_progress;
    audit_report report;
    int code = audit_verify(dir, &options, &report);
    if (code != COFFER_OK) {
        fprintf(stderr, "coffer verify: %s\n", coffer_strerror(code));
        return 1;
    }
    if (json)
        print_json(&report);
    else
        print_human(dir, &report);
    return report.ok ? 0 : 1;
}

int cli_dump(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(dump_usage, stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-')
        return cli_usage_error("dump: usage: coffer dump DIR");
    char error[1024];
    if (audit_dump(argv[1], stdout, error, sizeof error) != COFFER_OK) {
        fflush(stdout);
        fprintf(stderr, "coffer dump: %s\n", error);
        return 1;
    }
    return 0;
}
