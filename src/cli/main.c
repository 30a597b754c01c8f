/*
 * main.c — entry point of the `coffer` command: the global flags, then the command word picks
 * a subcommand from one table, which also makes the top-level help.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "coffer.h"

/* Which global flags a command takes. */
#define TAKES_SERVER 0x1
#define TAKES_JSON 0x2

typedef struct command_entry {
    const char *name;
    const char *summary; /* for the help; '\n' continues it */
    int (*run)(int argc, char **argv, const cli_globals *globals);
    unsigned takes;
} command_entry;

static const command_entry commands[] = {
    {"serve", "run the HTTP/JSON server (docs/api.md)", cli_serve, 0},
    {"account", "on a server: create an account, show one, list its history", cli_account,
     TAKES_SERVER | TAKES_JSON},
    {"transfer", "move an amount between accounts; 'transfer get ID' shows one", cli_transfer,
     TAKES_SERVER | TAKES_JSON},
    {"hold", "post (capture), void or list pending holds", cli_hold, TAKES_SERVER | TAKES_JSON},
    {"health", "ask a server whether it is ready (exit 0 ready, 1 not)", cli_health,
     TAKES_SERVER | TAKES_JSON},
    {"events", "print a server's changes in order, one per line; --follow waits\nfor new ones",
     cli_events, TAKES_SERVER | TAKES_JSON},
    {"cluster", "'cluster status': a server's role, its leader and the members", cli_cluster,
     TAKES_SERVER | TAKES_JSON},
    {"bench", "run the engine in-process (--embedded) or a server (--server URL) under load",
     cli_bench, TAKES_SERVER},
    {"verify",
     "check a data directory, or a log in PostgreSQL (CONNINFO),\noffline: hash chain, "
     "replay, snapshot, invariants (exit 0 ok,\n1 problems)",
     cli_verify, TAKES_JSON},
    {"dump", "print the log (of DIR, or in PostgreSQL) as JSON lines, one\nevent per line",
     cli_dump, 0},
    {"token", "create, list or revoke the bearer tokens of a tokens file", cli_token, TAKES_JSON},
    {"codes", "list every result code with its value, HTTP status and message", cli_codes, 0},
    {"version", "print the version", NULL, 0},
};
#define COMMANDS_COUNT (sizeof commands / sizeof *commands)

enum { GLOBAL_SERVER, GLOBAL_JSON, GLOBAL_VERSION, GLOBAL_TOKEN, GLOBAL_CACERT };

static const cli_option global_options[] = {
    {GLOBAL_SERVER, "--server", "URL",
     "the server of the client commands (default: $COFFER_SERVER,\n"
     "else http://127.0.0.1:8080); several instances of one ledger:\n"
     "comma separated or repeated",
     true},
    {GLOBAL_JSON, "--json", NULL, "print JSON instead of text"},
    {GLOBAL_TOKEN, "--token", "TOKEN",
     "the bearer token the client commands send (default:\n$COFFER_TOKEN; see 'coffer token')"},
    {GLOBAL_CACERT, "--cacert", "FILE",
     "for an https:// server: trust the CA certificates (PEM) in\nFILE instead of the system's "
     "(default: $COFFER_CACERT)"},
    {GLOBAL_VERSION, "--version", NULL, "print the version"},
};

static const cli_spec global_spec = {
    .name = "",
    .synopsis = "[--server URL] [--token TOKEN] [--cacert FILE] [--json] <command> [options]",
    .options = global_options,
    .option_count = sizeof global_options / sizeof *global_options,
    .stops_at_operand = true,
};

int cli_usage_error(const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    fputs("coffer: ", stderr);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
    return CLI_EXIT_USAGE;
}

/* The part of the help the option table cannot make: the commands. */
static void print_commands(FILE *out)
{
    fputs("\ncommands:\n", out);
    for (size_t i = 0; i < COMMANDS_COUNT; i++) {
        fprintf(out, "  %-10s ", commands[i].name);
        for (const char *c = commands[i].summary; *c; c++) {
            fputc(*c, out);
            if (*c == '\n')
                fprintf(out, "  %-10s ", "");
        }
        fputc('\n', out);
    }
    fputs("\nRun 'coffer <command> --help' for a command's options.\n", out);
}

static void print_usage(FILE *out)
{
    cli_print_help(&global_spec, out);
    print_commands(out);
}

static int print_version(void)
{
    printf("coffer %s\n", coffer_version());
    return 0;
}

/* Refuses a global flag the command does not take, so that it is never silently ignored. */
static int check_globals(const command_entry *command, const cli_globals *globals)
{
    if (globals->server && !(command->takes & TAKES_SERVER))
        return cli_usage_error("%s: --server does not apply to it", command->name);
    if (globals->token && !(command->takes & TAKES_SERVER))
        return cli_usage_error("%s: --token does not apply to it", command->name);
    if (globals->cacert && !(command->takes & TAKES_SERVER))
        return cli_usage_error("%s: --cacert does not apply to it", command->name);
    if (globals->json && !(command->takes & TAKES_JSON))
        return cli_usage_error("%s: --json does not apply to it", command->name);
    return CLI_GO_ON;
}

int main(int argc, char **argv)
{
    cli_parsed parsed;
    int status = cli_parse(&global_spec, argc, argv, &parsed);
    if (status == 0) { /* --help printed the options; the commands come after */
        print_commands(stdout);
        return 0;
    }
    if (status != CLI_GO_ON)
        return status;
    if (parsed.values[GLOBAL_VERSION])
        return print_version();
    if (parsed.rest >= argc) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *word = argv[parsed.rest];
    if (!strcmp(word, "help"))
        return print_usage(stdout), 0;
    cli_globals globals = {parsed.values[GLOBAL_SERVER], parsed.values[GLOBAL_JSON] != NULL,
                           parsed.values[GLOBAL_TOKEN], parsed.values[GLOBAL_CACERT]};
    for (size_t i = 0; i < COMMANDS_COUNT; i++) {
        if (strcmp(commands[i].name, word))
            continue;
        status = check_globals(&commands[i], &globals);
        if (status != CLI_GO_ON)
            return status;
        if (!commands[i].run)
            return print_version();
        return commands[i].run(argc - parsed.rest, argv + parsed.rest, &globals);
    }
    return cli_usage_error("unknown command '%s' (try 'coffer --help')", word);
}
