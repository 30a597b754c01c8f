/*
 * options.h — the one command-line parser of `coffer`: every command describes its options in a
 * table (name, value, help) and gets them parsed, checked and its --help generated from it.
 * Bad usage prints one line, "coffer: <command>: <reason>", and exits 2.
 */
#ifndef COFFER_CLI_OPTIONS_H
#define COFFER_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_OPTION_IDS_MAX 32 /* option ids of one command are below this */
#define CLI_OPERANDS_MAX 2
#define CLI_JOINED_BYTES 8192 /* the values of a repeated option, joined */
/* Returned by a step that did not end the command: go on with the next one. */
#define CLI_GO_ON (-1)

typedef struct cli_option {
    int id;                 /* where the value goes in cli_parsed.values */
    const char *name;       /* "--listen" */
    const char *value_name; /* "HOST:PORT"; NULL for a switch that takes no value */
    const char *help;       /* one line; '\n' starts a continuation line */
    bool repeats; /* may be given several times: the values are joined with ',' (at most one
                     such option per command) */
} cli_option;

/* One command: its name for messages, its synopsis and text for --help, its options. */
typedef struct cli_spec {
    const char *name;        /* "serve", "account get" */
    const char *synopsis;    /* after "usage: coffer <name> " */
    const char *description; /* paragraphs before the options; may be NULL */
    const cli_option *options;
    size_t option_count;
    /* Options every server command takes (--server, --json), listed apart; may be NULL. */
    const cli_option *common;
    size_t common_count;
    const char *operand_name; /* "DIR", "an account ID"; NULL: no operand */
    size_t operands_min, operands_max;
    const char *epilog;    /* after the options; may be NULL */
    bool stops_at_operand; /* the global flags: parsing ends at the command word */
} cli_spec;

typedef struct cli_parsed {
    const char *values[CLI_OPTION_IDS_MAX]; /* NULL: not given; a switch reads as its name */
    const char *operands[CLI_OPERANDS_MAX];
    size_t operand_count;
    int rest; /* the first argument not parsed (argc when all were) */
    /* A repeated option's values, joined; its entry in `values` points here, so a cli_parsed
     * is used where it was parsed into, never copied. */
    char joined[CLI_JOINED_BYTES];
} cli_parsed;

/* Parses argv[1..argc) (argv[0] is the command's word). CLI_GO_ON when parsed; 0 after
 * printing --help; CLI_EXIT_USAGE after printing the reason. */
int cli_parse(const cli_spec *spec, int argc, char **argv, cli_parsed *out);
void cli_print_help(const cli_spec *spec, FILE *out);
/* Prints "coffer: <command>: <reason>" and returns CLI_EXIT_USAGE. */
int cli_usage(const cli_spec *spec, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Typed values. Each leaves *out alone when the option was not given and returns false after
 * printing the usage line when the value is not one. */
bool cli_value_u64(const cli_spec *spec, const cli_parsed *parsed, int id, uint64_t min,
                   uint64_t max, uint64_t *out);
bool cli_value_i64(const cli_spec *spec, const cli_parsed *parsed, int id, int64_t min, int64_t max,
                   int64_t *out);
/* The index of the value in `choices` (NULL-terminated). */
bool cli_value_choice(const cli_spec *spec, const cli_parsed *parsed, int id,
                      const char *const *choices, int *out);

/* Parses a whole decimal number in [min, max]; false on anything else. */
bool cli_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);

#endif
