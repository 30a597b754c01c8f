/*
 * main.c — entry point of the `coffer` command: dispatches to subcommands and prints help.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "coffer.h"

static const char usage_text[] =
    "usage: coffer <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve              run the HTTP/JSON server (docs/api.md)\n"
    "  account ...        on a server: create an account, show one, list its history\n"
    "  transfer ...       move an amount between accounts; 'transfer get ID' shows one\n"
    "  hold ...           post (capture), void or list pending holds\n"
    "  health             ask a server whether it is ready (exit 0 ready, 1 not)\n"
    "  bench --embedded   run the engine in-process under load and report throughput\n"
    "  verify DIR         check a data directory offline: hash chain, replay, snapshot,\n"
    "                     invariants (exit 0 ok, 1 problems)\n"
    "  dump DIR           print the log as JSON lines, one event per line\n"
    "  codes              list every result code with its value, HTTP status and message\n"
    "  version            print the version\n"
    "\n"
    "Run 'coffer <command> --help' for a command's options.\n"
    "";

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

bool cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!text || !*text || *text == '-' || *text == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *end || value < min || value > max)
        return false;
    *out = value;
    return true;
}

static int print_codes(void)
{
    printf("%-22s %5s %5s  %s\n", "code", "value", "http", "message");
    for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
        const char *name = coffer_code_name(code);
        if (name)
            printf("%-22s %5d %5d  %s\n", name, code, coffer_code_http_status(code),
                   coffer_strerror(code));
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *command = argv[1];
    if (!strcmp(command, "--help") || !strcmp(command, "-h") || !strcmp(command, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(command, "version") || !strcmp(command, "--version")) {
        puts("coffer 0.1.0");
        return 0;
    }
    if (!strcmp(command, "codes"))
        return print_codes();
    if (!strcmp(command, "bench"))
        return cli_bench(argc - 1, argv + 1);
    if (!strcmp(command, "verify"))
        return cli_verify(argc - 1, argv + 1);
    if (!strcmp(command, "serve"))
        return cli_serve(argc - 1, argv + 1);
    if (!strcmp(command, "dump"))
        return cli_dump(argc - 1, argv + 1);
    if (!strcmp(command, "account"))
        return cli_account(argc - 1, argv + 1);
    if (!strcmp(command, "transfer"))
        return cli_transfer(argc - 1, argv + 1);
    if (!strcmp(command, "hold"))
        return cli_hold(argc - 1, argv + 1);
    if (!strcmp(command, "health"))
        return cli_health(argc - 1, argv + 1);
    return cli_usage_error("unknown command '%s' (try 'coffer --help')", command);
}
