/*
 * account.c — `coffer account create|get|history`: accounts on a server, shown as one summary
 * line and details, and history as a table (all pages with --all).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"

enum { ACCOUNT_CREATE, ACCOUNT_GET, ACCOUNT_HISTORY };
static const client_command account_commands[3];

static void print_account_details(const json_t *account)
{
    char a[CLIENT_NUMBER_BYTES], b[CLIENT_NUMBER_BYTES];
    if (json_is_integer(json_object_get(account, "debits_posted")))
        printf("  posted: debits %s  credits %s\n",
               field_text(account, "debits_posted", true, "-", a),
               field_text(account, "credits_posted", true, "-", b));
    if (json_is_integer(json_object_get(account, "credits_held")))
        printf("  held: debits %s  credits %s\n", field_text(account, "debits_held", true, "-", a),
               field_text(account, "credits_held", true, "-", b));
    else if (json_is_integer(json_object_get(account, "debits_held")))
        printf("  held: debits %s\n", field_text(account, "debits_held", true, "-", a));
    if (json_object_get(account, "min_balance") || json_object_get(account, "max_balance"))
        printf("  limits: min balance %s  max balance %s\n",
               field_text(account, "min_balance", true, "unbounded", a),
               field_text(account, "max_balance", true, "none", b));
    print_metadata(account);
    if (text_field(account, "created_at"))
        printf("  created %s (seq %s)\n", text_field(account, "created_at"),
               field_text(account, "created_seq", false, "-", a));
}

/* "account user:1  KRW  balance 10,000  available 9,000  version 3", then the details.
 * The context is the verb before it ("created ") or "". */
static void print_account(const json_t *account, const response *answer, const void *context)
{
    char balance[CLIENT_NUMBER_BYTES], available[CLIENT_NUMBER_BYTES], version[CLIENT_NUMBER_BYTES],
        seq[CLIENT_NUMBER_BYTES];
    const char *id = text_field(account, "id"), *currency = text_field(account, "currency");
    printf("%saccount %s  %s  balance %s  available %s  version %s", (const char *)context,
           id ? id : "?", currency ? currency : "?",
           field_text(account, "balance", true, "?", balance),
           field_text(account, "available", true, "?", available),
           field_text(account, "version", false, "?", version));
    const json_t *at = json_object_get(account, "at");
    if (json_object_get(at, "seq"))
        printf("  at seq %s", field_text(at, "seq", false, "?", seq));
    else if (json_object_get(at, "timestamp"))
        printf("  at %s", field_text(at, "timestamp", false, "?", seq));
    puts(answer->replayed ? " (replayed)" : "");
    print_account_details(account);
}

static int account_create(client *server, const cli_parsed *line)
{
    const cli_spec *spec = &account_commands[ACCOUNT_CREATE].spec;
    int64_t min_balance = 0, max_balance = 0;
    bool has_min = line->values[OPTION_MIN_BALANCE], has_max = line->values[OPTION_MAX_BALANCE];
    if (!cli_value_i64(spec, line, OPTION_MIN_BALANCE, INT64_MIN, INT64_MAX, &min_balance) ||
        !cli_value_i64(spec, line, OPTION_MAX_BALANCE, INT64_MIN, INT64_MAX, &max_balance))
        return CLI_EXIT_USAGE;
    if (!line->values[OPTION_CURRENCY])
        return cli_usage_error("account create: --currency is required");
    if (has_min && line->values[OPTION_UNBOUNDED])
        return cli_usage_error("account create: --min-balance or --unbounded, not both");
    json_t *body = json_object();
    bool ok = body && set_text(body, "id", line->operands[0]) &&
              set_text(body, "currency", line->values[OPTION_CURRENCY]);
    if (ok && has_min)
        ok = json_object_set_new(body, "min_balance", json_integer(min_balance)) == 0;
    if (ok && line->values[OPTION_UNBOUNDED])
        ok = json_object_set_new(body, "min_balance", json_null()) == 0;
    if (ok && has_max)
        ok = json_object_set_new(body, "max_balance", json_integer(max_balance)) == 0;
    if (!ok || !set_metadata(body, line)) {
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    url_builder url;
    url_start(&url, server, "/v1/accounts");
    return client_exchange(server, &url, body, NULL, print_account, "created ");
}

static int account_get(client *server, const cli_parsed *line)
{
    if (line->values[OPTION_AT] && !line->values[OPTION_AT][0])
        return cli_usage_error("account get: --at needs a seq or an RFC 3339 time");
    url_builder url;
    url_start(&url, server, "/v1/accounts/");
    url_append(&url, line->operands[0], true);
    url_query(&url, "at", line->values[OPTION_AT]);
    return client_exchange(server, &url, NULL, NULL, print_account, "");
}

static void print_history_header(void)
{
    printf("%8s  %-30s  %-8s  %14s  %16s  %16s  %7s  %s\n", "seq", "time", "kind", "delta",
           "balance", "available", "version", "transfer");
}

static void print_history_entry(const json_t *entry)
{
    char seq[CLIENT_NUMBER_BYTES], delta[CLIENT_NUMBER_BYTES], balance[CLIENT_NUMBER_BYTES],
        available[CLIENT_NUMBER_BYTES], version[CLIENT_NUMBER_BYTES];
    const json_t *delta_value = json_object_get(entry, "delta");
    if (json_is_integer(delta_value))
        format_grouped(json_integer_value(delta_value), true, delta);
    printf("%8s  %-30s  %-8s  %14s  %16s  %16s  %7s  %s\n",
           field_text(entry, "seq", false, "-", seq),
           text_field(entry, "timestamp") ? text_field(entry, "timestamp") : "-",
           text_field(entry, "kind") ? text_field(entry, "kind") : "-",
           json_is_integer(delta_value) ? delta : "?",
           field_text(entry, "balance", true, "-", balance),
           field_text(entry, "available", true, "-", available),
           field_text(entry, "version", false, "-", version),
           text_field(entry, "transfer_id") ? text_field(entry, "transfer_id") : "-");
}

/* One page of history as text; the context is the account id, for the next-page hint. */
static void print_history_page(const json_t *page, const response *answer, const void *context)
{
    (void)answer;
    const json_t *entries = json_object_get(page, "entries"), *entry;
    size_t index;
    if (json_array_size(entries) == 0) {
        puts("no history entries");
    } else {
        print_history_header();
        json_array_foreach(entries, index, entry) print_history_entry(entry);
    }
    const json_t *next = json_object_get(page, "next_after");
    if (json_is_integer(next))
        printf("more: coffer account history %s --after %" JSON_INTEGER_FORMAT "\n",
               (const char *)context, json_integer_value(next));
}

/* One page of an --all listing, printed as it arrives; `*after` moves to the next page. */
static int history_page_all(const client *server, const response *answer, uint64_t *after,
                            uint64_t *printed, bool *done)
{
    const json_t *entries = json_object_get(answer->json, "entries"), *entry;
    const json_t *next = json_object_get(answer->json, "next_after");
    if (!json_is_array(entries) || !(json_is_null(next) || json_is_integer(next))) {
        fprintf(stderr,
                "error: the server at %s answered a history page without entries or "
                "next_after\n",
                server->server);
        return CLI_EXIT_ERROR;
    }
    size_t index;
    json_array_foreach(entries, index, entry)
    {
        if (server->json) {
            if (*printed == 0)
                fputs("{\"entries\":[", stdout);
            if (*printed)
                putchar(',');
            json_dumpf(entry, stdout, JSON_COMPACT);
        } else {
            if (*printed == 0)
                print_history_header();
            print_history_entry(entry);
        }
        ++*printed;
    }
    *done = json_is_null(next);
    if (*done)
        return CLI_GO_ON;
    /* A next page must start later, so a confused server cannot keep us looping. */
    if (json_integer_value(next) < 0 || (uint64_t)json_integer_value(next) <= *after) {
        fflush(stdout);
        fprintf(stderr,
                "\nerror: the server's next_after %" JSON_INTEGER_FORMAT
                " does not move past %" PRIu64 "; stopping\n",
                json_integer_value(next), *after);
        return CLI_EXIT_ERROR;
    }
    *after = (uint64_t)json_integer_value(next);
    return CLI_GO_ON;
}

/* --all: follows next_after to the end, streaming (with --json, one merged page). */
static int account_history_all(client *server, const cli_parsed *line, uint64_t after)
{
    uint64_t printed = 0;
    bool done = false;
    int status = CLI_GO_ON;
    while (status == CLI_GO_ON && !done) {
        char after_text[CLIENT_NUMBER_BYTES];
        snprintf(after_text, sizeof after_text, "%" PRIu64, after);
        url_builder url;
        url_start(&url, server, "/v1/accounts/");
        url_append(&url, line->operands[0], true);
        url_append(&url, "/history", false);
        url_query(&url, "after", after_text);
        url_query(&url, "limit", line->values[OPTION_LIMIT]);
        response answer;
        status = client_call(server, &url, NULL, NULL, &answer);
        if (status == CLI_GO_ON && (!response_is_success(&answer) || !answer.json))
            status = client_finish(server, &answer, print_history_page, line->operands[0]);
        else if (status == CLI_GO_ON)
            status = history_page_all(server, &answer, &after, &printed, &done);
        response_free(&answer);
    }
    if (status != CLI_GO_ON)
        return status;
    if (server->json)
        fputs(printed ? "],\"next_after\":null}\n" : "{\"entries\":[],\"next_after\":null}\n",
              stdout);
    else if (printed == 0)
        puts("no history entries");
    return flush_output();
}

static int account_history(client *server, const cli_parsed *line)
{
    const cli_spec *spec = &account_commands[ACCOUNT_HISTORY].spec;
    uint64_t after = 0, limit = 0;
    if (!cli_value_u64(spec, line, OPTION_AFTER, 0, INT64_MAX, &after) ||
        !cli_value_u64(spec, line, OPTION_LIMIT, 1, 1000, &limit))
        return CLI_EXIT_USAGE;
    if (line->values[OPTION_ALL])
        return account_history_all(server, line, after);
    url_builder url;
    url_start(&url, server, "/v1/accounts/");
    url_append(&url, line->operands[0], true);
    url_append(&url, "/history", false);
    url_query(&url, "after", line->values[OPTION_AFTER]);
    url_query(&url, "limit", line->values[OPTION_LIMIT]);
    return client_exchange(server, &url, NULL, NULL, print_history_page, line->operands[0]);
}

static const cli_option create_options[] = {
    {OPTION_CURRENCY, "--currency", "C", "required: 1-12 of A-Z 0-9 _"},
    {OPTION_MIN_BALANCE, "--min-balance", "N",
     "the floor for available: 0 (default) or below, an overdraft line"},
    {OPTION_UNBOUNDED, "--unbounded", NULL, "no floor at all (a funding or issuer account)"},
    {OPTION_MAX_BALANCE, "--max-balance", "N",
     "a cap on balance plus incoming holds (default: none)"},
    {OPTION_METADATA, "--metadata", "JSON", "a JSON object of at most 1 KiB, stored verbatim"},
};

static const cli_option get_options[] = {
    {OPTION_AT, "--at", "SEQ|TIME",
     "the account as it was after the last change at or before a seq,\nor an RFC 3339 UTC "
     "time such as 2026-11-24T23:38:00Z"},
};

static const cli_option history_options[] = {
    {OPTION_AFTER, "--after", "SEQ", "only changes after this seq (default 0)"},
    {OPTION_LIMIT, "--limit", "N", "changes per page, 1-1000 (default 100)"},
    {OPTION_ALL, "--all", NULL,
     "follow the pages to the end (with --json: one object with every\nentry)"},
};

#define ACCOUNT_SPEC(options_table)                                                                \
    .options = options_table, .option_count = sizeof options_table / sizeof *options_table,        \
    .common = client_common_options, .common_count = CLIENT_COMMON_COUNT,                          \
    .operand_name = "an account ID", .operands_min = 1, .operands_max = 1

static const client_command account_commands[] = {
    [ACCOUNT_CREATE] = {{.name = "account create",
                         .synopsis = "ID --currency C [--min-balance N | --unbounded] "
                                     "[--max-balance N]\n                             "
                                     "[--metadata JSON]",
                         .description =
                             "Creates account ID (1-64 of A-Z a-z 0-9 . _ : @ / -) in currency "
                             "C. The id is the\naccount's idempotency key: the same command "
                             "again answers with the same\naccount, marked (replayed); the same "
                             "id with other settings is refused (id_reused).\n",
                         ACCOUNT_SPEC(create_options)},
                        account_create},
    [ACCOUNT_GET] = {{.name = "account get",
                      .synopsis = "ID [--at SEQ|TIME]",
                      .description = "Shows the account: balance, available, version, held and "
                                     "posted totals, limits, metadata.\n",
                      ACCOUNT_SPEC(get_options)},
                     account_get},
    [ACCOUNT_HISTORY] = {{.name = "account history",
                          .synopsis = "ID [--after SEQ] [--limit N] [--all]",
                          .description =
                              "Lists the account's changes oldest first: seq, time, kind "
                              "(posted, held, captured,\nreleased, expired), delta, balance and "
                              "available after, version, transfer id.\n",
                          ACCOUNT_SPEC(history_options)},
                         account_history},
};

static const cli_spec account_group = {
    .name = "account",
    .synopsis = "create|get|history ID [options]",
    .description = "  create ID --currency C   create an account\n"
                   "  get ID [--at SEQ|TIME]   show an account, now or as it was at a seq or time\n"
                   "  history ID               list the account's changes, oldest first\n",
    .operand_name = "a subcommand: create, get or history",
    .operands_min = 1,
    .operands_max = 1,
    .epilog = "Run 'coffer account <subcommand> --help' for its options.\n",
};

int cli_account(int argc, char **argv, const cli_globals *globals)
{
    return client_run_group(&account_group, account_commands,
                            sizeof account_commands / sizeof *account_commands, argc, argv,
                            globals);
}
