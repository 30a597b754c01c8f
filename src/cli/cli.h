/*
 * cli.h — the `coffer` command: its subcommands and what they share. Bad usage exits 2 with a
 * one-line reason on stderr; --help on every subcommand (options.h parses them all).
 */
#ifndef COFFER_CLI_H
#define COFFER_CLI_H

#include <stdbool.h>
#include <stdint.h>

#define CLI_EXIT_ERROR 1 /* the server (or the engine) refused */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_UNREACHABLE 3 /* client commands: no server answered */
#define CLI_EXIT_NOT_RUN 3     /* coffer verify: the log could not be read, no verdict */

/* Flags given before the command word: `coffer --server URL --json account get x`. A command
 * that does not take one refuses it (main.c); the same flag after the command wins. */
typedef struct cli_globals {
    const char *server; /* NULL: not given */
    bool json;
    const char *token;  /* --token, else $COFFER_TOKEN; NULL: none */
    const char *cacert; /* --cacert, else $COFFER_CACERT: the CAs trusted for https://; NULL:
                           the system's */
} cli_globals;

/* Every command gets its own arguments (argv[0] is its word) and the global flags. */
int cli_bench(int argc, char **argv, const cli_globals *globals);
int cli_verify(int argc, char **argv, const cli_globals *globals);
int cli_dump(int argc, char **argv, const cli_globals *globals);
int cli_serve(int argc, char **argv, const cli_globals *globals);
int cli_codes(int argc, char **argv, const cli_globals *globals);
int cli_token(int argc, char **argv, const cli_globals *globals);
/* Commands that talk to a server (--server URL, --json): account.c, transfer.c, events.c,
 * cluster.c, client.c. */
int cli_account(int argc, char **argv, const cli_globals *globals);
int cli_transfer(int argc, char **argv, const cli_globals *globals);
int cli_hold(int argc, char **argv, const cli_globals *globals);
int cli_health(int argc, char **argv, const cli_globals *globals);
int cli_events(int argc, char **argv, const cli_globals *globals);
int cli_cluster(int argc, char **argv, const cli_globals *globals);

/* Prints "coffer: <reason>" and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif
