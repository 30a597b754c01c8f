/*
 * transfer.c — `coffer transfer` (move or hold an amount; `transfer get ID`) and `coffer hold
 * post|void|list`, on a server. Every write carries an id, given or generated and shown, so
 * that it can be retried without applying twice.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"

enum { HOLD_POST, HOLD_VOID, HOLD_LIST };
static const client_command transfer_command;
static const client_command hold_commands[3];

static int transfer_create(client *server, const cli_parsed *line)
{
    const cli_spec *spec = &transfer_command.spec;
    int64_t amount = 0;
    uint64_t timeout_ms = 0, from_version = 0, to_version = 0;
    bool has_hold = line->values[OPTION_HOLD],
         has_from_version = line->values[OPTION_EXPECT_FROM_VERSION],
         has_to_version = line->values[OPTION_EXPECT_TO_VERSION];
    if (!line->values[OPTION_FROM] || !line->values[OPTION_TO] || !line->values[OPTION_AMOUNT])
        return cli_usage(spec, "--from, --to and --amount are required (try 'coffer transfer "
                               "--help')");
    /* A positive amount is the API's rule too: refused here, it never reaches the server. */
    if (!cli_value_i64(spec, line, OPTION_AMOUNT, 1, INT64_MAX, &amount) ||
        !cli_value_u64(spec, line, OPTION_HOLD, 0, INT64_MAX, &timeout_ms) ||
        !cli_value_u64(spec, line, OPTION_EXPECT_FROM_VERSION, 0, INT64_MAX, &from_version) ||
        !cli_value_u64(spec, line, OPTION_EXPECT_TO_VERSION, 0, INT64_MAX, &to_version))
        return CLI_EXIT_USAGE;
    char generated[CLIENT_ID_BYTES];
    const char *id;
    bool in_header;
    if (!pick_id(server, line, "tx-", generated, &id, &in_header))
        return CLI_EXIT_USAGE;
    json_t *body = json_object();
    bool ok = body && (in_header || set_text(body, "id", id)) &&
              set_text(body, "from", line->values[OPTION_FROM]) &&
              set_text(body, "to", line->values[OPTION_TO]) &&
              json_object_set_new(body, "amount", json_integer(amount)) == 0;
    if (ok && has_hold)
        ok = json_object_set_new(body, "hold",
                                 json_pack("{sI}", "timeout_ms", (json_int_t)timeout_ms)) == 0;
    if (ok && (has_from_version || has_to_version)) {
        json_t *expect = json_object();
        if (has_from_version)
            json_object_set_new(expect, "from_version", json_integer((json_int_t)from_version));
        if (has_to_version)
            json_object_set_new(expect, "to_version", json_integer((json_int_t)to_version));
        ok = json_object_set_new(body, "expect", expect) == 0;
    }
    if (ok && line->values[OPTION_UP_TO])
        ok = json_object_set_new(body, "up_to", json_true()) == 0;
    if (!ok || !set_metadata(body, line)) {
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    url_builder url;
    url_start(&url, server, "/v1/transfers");
    return client_exchange(server, &url, body, in_header ? id : NULL, print_transfer_result, NULL);
}

/* `coffer transfer get ID`: "transfer pay-1: user:1 -> shop 500 (posted, seq 18)", details. */
static void print_transfer(const json_t *transfer, const response *answer, const void *context)
{
    (void)answer;
    (void)context;
    printf("transfer %s: ", text_field(transfer, "id") ? text_field(transfer, "id") : "?");
    print_transfer_summary(transfer);
    putchar('\n');
    if (text_field(transfer, "timestamp"))
        printf("  at %s\n", text_field(transfer, "timestamp"));
    const json_t *hold = json_object_get(transfer, "hold");
    if (json_is_object(hold)) {
        char timeout[CLIENT_NUMBER_BYTES];
        printf("  hold: timeout %s ms", field_text(hold, "timeout_ms", false, "?", timeout));
        if (text_field(transfer, "expires_at"))
            printf(", expires %s", text_field(transfer, "expires_at"));
        putchar('\n');
    }
    const json_t *expect = json_object_get(transfer, "expect");
    if (json_is_object(expect)) {
        fputs("  expect: ", stdout);
        print_value(stdout, expect);
        putchar('\n');
    }
    print_metadata(transfer);
}

static int transfer_get(client *server, const cli_parsed *line)
{
    url_builder url;
    url_start(&url, server, "/v1/transfers/");
    url_append(&url, line->operands[0], true);
    return client_exchange(server, &url, NULL, NULL, print_transfer, NULL);
}

/* `hold post` and `hold void`: POST /v1/holds/{id}/post|void with its own idempotency key. */
static int hold_resolve(client *server, const cli_parsed *line, const char *action)
{
    const cli_spec *spec = &hold_commands[!strcmp(action, "post") ? HOLD_POST : HOLD_VOID].spec;
    int64_t amount = 0;
    bool has_amount = line->values[OPTION_AMOUNT] != NULL;
    if (!cli_value_i64(spec, line, OPTION_AMOUNT, 1, INT64_MAX, &amount))
        return CLI_EXIT_USAGE;
    char generated[CLIENT_ID_BYTES], prefix[8];
    snprintf(prefix, sizeof prefix, "%s-", action);
    const char *id;
    bool in_header;
    if (!pick_id(server, line, prefix, generated, &id, &in_header))
        return CLI_EXIT_USAGE;
    json_t *body = json_object();
    bool ok = body && (in_header || set_text(body, "id", id));
    if (ok && has_amount)
        ok = json_object_set_new(body, "amount", json_integer(amount)) == 0;
    if (!ok) {
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    url_builder url;
    url_start(&url, server, "/v1/holds/");
    url_append(&url, line->operands[0], true);
    url_append(&url, !strcmp(action, "post") ? "/post" : "/void", false);
    return client_exchange(server, &url, body, in_header ? id : NULL, print_transfer_result, NULL);
}

static int hold_post(client *server, const cli_parsed *line)
{
    return hold_resolve(server, line, "post");
}

static int hold_void(client *server, const cli_parsed *line)
{
    return hold_resolve(server, line, "void");
}

static void print_holds(const json_t *body, const response *answer, const void *context)
{
    (void)answer;
    (void)context;
    const json_t *holds = json_object_get(body, "holds"), *hold;
    size_t index;
    if (json_array_size(holds) == 0)
        puts("no pending holds");
    json_array_foreach(holds, index, hold)
    {
        printf("hold %s: ", text_field(hold, "id") ? text_field(hold, "id") : "?");
        print_transfer_summary(hold);
        putchar('\n');
    }
}

static int hold_list(client *server, const cli_parsed *line)
{
    uint64_t limit = 0;
    if (!cli_value_u64(&hold_commands[HOLD_LIST].spec, line, OPTION_LIMIT, 1, 1000, &limit))
        return CLI_EXIT_USAGE;
    url_builder url;
    url_start(&url, server, "/v1/holds");
    url_query(&url, "account", line->values[OPTION_ACCOUNT]);
    url_query(&url, "limit", line->values[OPTION_LIMIT]);
    return client_exchange(server, &url, NULL, NULL, print_holds, NULL);
}

/* ---- the command tables ------------------------------------------------------------------- */

#define ID_OPTIONS(what)                                                                           \
    {OPTION_ID, "--id", "KEY",                                                                     \
     "the " what "'s id and idempotency key; without --id or --key a\nrandom id is made and "      \
     "shown on stderr, so that the same request\ncan be retried with it"},                         \
    {                                                                                              \
        OPTION_KEY, "--key", "KEY", "the same, sent as the Idempotency-Key header"                 \
    }

static const cli_option transfer_options[] = {
    {OPTION_FROM, "--from", "A", "the account debited (required)"},
    {OPTION_TO, "--to", "B", "the account credited, in the same currency (required)"},
    {OPTION_AMOUNT, "--amount", "N", "minor units to move, at least 1 (required)"},
    ID_OPTIONS("transfer"),
    {OPTION_HOLD, "--hold", "TIMEOUT_MS", "reserve instead of moving, for this many milliseconds"},
    {OPTION_EXPECT_FROM_VERSION, "--expect-from-version", "V",
     "apply only if account A is at version V (compare-and-set)"},
    {OPTION_EXPECT_TO_VERSION, "--expect-to-version", "W",
     "apply only if account B is at version W"},
    {OPTION_UP_TO, "--up-to", NULL, "move as much of N as the limits allow (maybe 0)"},
    {OPTION_METADATA, "--metadata", "JSON", "a JSON object of at most 1 KiB, stored verbatim"},
};

static const client_command transfer_command = {
    {.name = "transfer",
     .synopsis = "--from A --to B --amount N [options]\n       coffer transfer get ID",
     .description =
         "Moves N minor units from account A to account B (same currency), or with --hold "
         "reserves\nthem until 'coffer hold post' or 'coffer hold void' or the timeout. A retry "
         "with the same\nid and content answers with the first outcome, marked (replayed); "
         "after a refusal, use a\nnew id to try again.\n",
     .options = transfer_options,
     .option_count = sizeof transfer_options / sizeof *transfer_options,
     .common = client_common_options,
     .common_count = CLIENT_COMMON_COUNT},
    transfer_create,
};

static const client_command transfer_get_command = {
    {.name = "transfer get",
     .synopsis = "ID",
     .description = "Shows a transfer, post or void with its recorded outcome: its state "
                    "(posted, pending,\ncaptured, voided, expired, rejected) and, for a "
                    "rejection, the code it got.\n",
     .common = client_common_options,
     .common_count = CLIENT_COMMON_COUNT,
     .operand_name = "a transfer ID",
     .operands_min = 1,
     .operands_max = 1},
    transfer_get,
};

int cli_transfer(int argc, char **argv, const cli_globals *globals)
{
    if (argc >= 2 && !strcmp(argv[1], "get"))
        return client_run(&transfer_get_command, argc - 1, argv + 1, globals);
    return client_run(&transfer_command, argc, argv, globals);
}

static const cli_option post_options[] = {
    {OPTION_AMOUNT, "--amount", "N", "capture only N (at least 1); the rest is released"},
    ID_OPTIONS("post"),
};

static const cli_option void_options[] = {
    ID_OPTIONS("void"),
};

static const cli_option list_options[] = {
    {OPTION_ACCOUNT, "--account", "ID", "only holds debiting or crediting this account"},
    {OPTION_LIMIT, "--limit", "N", "at most N holds, 1-1000 (default 100)"},
};

#define HOLD_SPEC(options_table)                                                                   \
    .options = options_table, .option_count = sizeof options_table / sizeof *options_table,        \
    .common = client_common_options, .common_count = CLIENT_COMMON_COUNT

static const client_command hold_commands[3] = {
    [HOLD_POST] = {{.name = "hold post",
                    .synopsis = "HOLD_ID [--amount N] [--id KEY | --key KEY]",
                    .description = "Captures the pending hold HOLD_ID: moves its amount, or only "
                                   "N of it and releases the\nrest. A post at or after the "
                                   "hold's expiry is refused (hold_expired).\n",
                    HOLD_SPEC(post_options),
                    .operand_name = "a HOLD_ID",
                    .operands_min = 1,
                    .operands_max = 1},
                   hold_post},
    [HOLD_VOID] = {{.name = "hold void",
                    .synopsis = "HOLD_ID [--id KEY | --key KEY]",
                    .description = "Releases the pending hold HOLD_ID; nothing moves.\n",
                    HOLD_SPEC(void_options),
                    .operand_name = "a HOLD_ID",
                    .operands_min = 1,
                    .operands_max = 1},
                   hold_void},
    [HOLD_LIST] = {{.name = "hold list",
                    .synopsis = "[--account ID] [--limit N]",
                    .description = "Lists holds that are still pending, soonest expiry first.\n",
                    HOLD_SPEC(list_options)},
                   hold_list},
};

static const cli_spec hold_group = {
    .name = "hold",
    .synopsis = "post|void|list [HOLD_ID] [options]",
    .description = "  post HOLD_ID [--amount N] [--id KEY]   capture a pending hold, all of it "
                   "or N\n"
                   "  void HOLD_ID [--id KEY]                release a pending hold\n"
                   "  list [--account ID] [--limit N]        pending holds, soonest expiry "
                   "first\n",
    .operand_name = "a subcommand: post, void or list",
    .operands_min = 1,
    .operands_max = 1,
    .epilog = "Run 'coffer hold <subcommand> --help' for its options.\n",
};

int cli_hold(int argc, char **argv, const cli_globals *globals)
{
    return client_run_group(&hold_group, hold_commands, 3, argc, argv, globals);
}
