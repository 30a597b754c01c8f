/*
 * cli.h — the `coffer` command: shared helpers for its subcommands. Bad usage exits 2 with a
 * one-line reason on stderr; --help on every subcommand.
 */
#ifndef COFFER_CLI_H
#define COFFER_CLI_H

#include <stdbool.h>
#include <stdint.h>

#define CLI_EXIT_ERROR 1 /* the server (or the engine) refused */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_UNREACHABLE 3 /* client commands: no server answered */

int cli_bench(int argc, char **argv);
int cli_verify(int argc, char **argv);
int cli_dump(int argc, char **argv);
int cli_serve(int argc, char **argv);
/* client.c: commands that talk to a server (--server URL, --json); argv[0] is the command. */
int cli_account(int argc, char **argv);
int cli_transfer(int argc, char **argv);
int cli_hold(int argc, char **argv);
int cli_health(int argc, char **argv);

/* Prints "coffer: <reason>" and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Parses a whole decimal number in [min, max]; false on anything else. */
bool cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);

#endif
