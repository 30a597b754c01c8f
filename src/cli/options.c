/*
 * options.c — the table-driven parser of options.h: "--name value", "--name=value", switches,
 * "--" before operands, --help anywhere; and the generated help.
 */
#include "cli/options.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* "coffer: serve: <reason>", with a pointer to the command's help when `hint`. */
static int __attribute__((format(printf, 3, 4)))
usage(const cli_spec *spec, bool hint, const char *format, ...)
{
    char reason[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(reason, sizeof reason, format, arguments);
    va_end(arguments);
    const char *space = spec->name[0] ? " " : "";
    if (hint)
        return cli_usage_error("%s%s%s (try 'coffer%s%s --help')", spec->name,
                               spec->name[0] ? ": " : "", reason, space, spec->name);
    return cli_usage_error("%s%s%s", spec->name, spec->name[0] ? ": " : "", reason);
}

static bool is_help(const char *arg)
{
    return !strcmp(arg, "--help") || !strcmp(arg, "-h");
}

/* The option named by arg (up to '=' or its end), in the command's table or the common one. */
static const cli_option *find_option(const cli_spec *spec, const char *arg, size_t name_length)
{
    const cli_option *tables[] = {spec->options, spec->common};
    size_t counts[] = {spec->option_count, spec->common_count};
    for (size_t t = 0; t < 2; t++)
        for (size_t i = 0; i < counts[t]; i++) {
            const char *name = tables[t][i].name;
            if (strlen(name) == name_length && !strncmp(name, arg, name_length))
                return &tables[t][i];
        }
    return NULL;
}

static const char *option_name(const cli_spec *spec, int id)
{
    const cli_option *tables[] = {spec->options, spec->common};
    size_t counts[] = {spec->option_count, spec->common_count};
    for (size_t t = 0; t < 2; t++)
        for (size_t i = 0; i < counts[t]; i++)
            if (tables[t][i].id == id)
                return tables[t][i].name;
    return "?";
}

/* A repeated option's next value (after its '=' or in the next argument), appended to the
 * ones before it with a ','. */
static int join_value(const cli_spec *spec, const cli_option *option, int argc, char **argv,
                      int *index, const char *equals, cli_parsed *out)
{
    const char *value = equals ? equals + 1 : *index + 1 < argc ? argv[++*index] : NULL;
    if (!value)
        return usage(spec, false, "%s needs a value (%s)", option->name, option->value_name);
    const char *before = out->values[option->id];
    size_t length = strlen(before), added = strlen(value);
    if (length + 1 + added >= sizeof out->joined)
        return usage(spec, false, "%s: the values given are longer than %d bytes together",
                     option->name, CLI_JOINED_BYTES - 1);
    if (before != out->joined)
        memcpy(out->joined, before, length);
    out->joined[length] = ',';
    memcpy(out->joined + length + 1, value, added + 1);
    out->values[option->id] = out->joined;
    return CLI_GO_ON;
}

/* Takes argv[*index] (an option, maybe "--name=value") and its value. */
static int parse_option(const cli_spec *spec, int argc, char **argv, int *index, cli_parsed *out)
{
    const char *arg = argv[*index], *equals = strchr(arg, '=');
    size_t name_length = equals ? (size_t)(equals - arg) : strlen(arg);
    const cli_option *option = find_option(spec, arg, name_length);
    if (!option)
        return usage(spec, true, "unknown option '%.*s'", (int)name_length, arg);
    if (option->id < 0 || option->id >= CLI_OPTION_IDS_MAX)
        abort(); /* a table error: ids index cli_parsed.values */
    if (out->values[option->id] && option->repeats && option->value_name)
        return join_value(spec, option, argc, argv, index, equals, out);
    if (out->values[option->id])
        return usage(spec, false, "%s given twice", option->name);
    if (!option->value_name) {
        if (equals)
            return usage(spec, false, "%s takes no value", option->name);
        out->values[option->id] = option->name;
    } else if (equals) {
        out->values[option->id] = equals + 1;
    } else if (*index + 1 < argc) {
        out->values[option->id] = argv[++*index]; /* taken as is, even "-5" */
    } else {
        return usage(spec, false, "%s needs a value (%s)", option->name, option->value_name);
    }
    return CLI_GO_ON;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, cli_parsed *out)
{
    *out = (cli_parsed){0};
    /* --help anywhere wins over every mistake around it, except after the command word. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") && !spec->stops_at_operand; i++)
        if (is_help(argv[i])) {
            cli_print_help(spec, stdout);
            return 0;
        }
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (spec->stops_at_operand && (options_done || arg[0] != '-' || !arg[1])) {
            out->rest = i;
            return CLI_GO_ON;
        }
        if (!options_done && is_help(arg)) {
            cli_print_help(spec, stdout);
            return 0;
        }
        if (!options_done && !strcmp(arg, "--")) {
            options_done = true;
        } else if (!options_done && arg[0] == '-' && arg[1]) {
            int status = parse_option(spec, argc, argv, &i, out);
            if (status != CLI_GO_ON)
                return status;
        } else if (out->operand_count < spec->operands_max &&
                   out->operand_count < CLI_OPERANDS_MAX) {
            out->operands[out->operand_count++] = arg;
        } else {
            return usage(spec, true, "unexpected argument '%s'", arg);
        }
    }
    out->rest = argc;
    bool empty = out->operand_count && !out->operands[0][0];
    if (out->operand_count < spec->operands_min || empty)
        return usage(spec, true, "needs %s",
                     spec->operand_name ? spec->operand_name : "an operand");
    return CLI_GO_ON;
}

int cli_usage(const cli_spec *spec, const char *format, ...)
{
    char reason[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(reason, sizeof reason, format, arguments);
    va_end(arguments);
    return usage(spec, false, "%s", reason);
}

static void print_options(const cli_option *options, size_t count, FILE *out)
{
    for (size_t i = 0; i < count; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", options[i].name, options[i].value_name ? " " : "",
                 options[i].value_name ? options[i].value_name : "");
        fprintf(out, "  %-24s", left);
        if (strlen(left) > 24) /* a long name: the help starts on the next line */
            fprintf(out, "\n  %-24s", "");
        for (const char *help = options[i].help; *help; help++) {
            fputc(*help, out);
            if (*help == '\n')
                fprintf(out, "  %-24s", "");
        }
        fputc('\n', out);
    }
}

void cli_print_help(const cli_spec *spec, FILE *out)
{
    fprintf(out, "usage: coffer%s%s%s%s\n", spec->name[0] ? " " : "", spec->name,
            spec->synopsis[0] ? " " : "", spec->synopsis);
    if (spec->description)
        fprintf(out, "\n%s", spec->description);
    if (spec->option_count) {
        fputs("\noptions:\n", out);
        print_options(spec->options, spec->option_count, out);
    }
    if (spec->common_count) {
        fputs("\nthe server (these may also come before the command, as in 'coffer --json "
              "account get ID'):\n",
              out);
        print_options(spec->common, spec->common_count, out);
    }
    if (spec->epilog)
        fprintf(out, "\n%s", spec->epilog);
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

bool cli_value_u64(const cli_spec *spec, const cli_parsed *parsed, int id, uint64_t min,
                   uint64_t max, uint64_t *out)
{
    const char *text = parsed->values[id];
    if (!text || cli_parse_u64(text, min, max, out))
        return true;
    if (max >= INT64_MAX) /* no upper bound worth naming */
        usage(spec, false, "%s needs a whole number of at least %" PRIu64 ", not '%s'",
              option_name(spec, id), min, text);
    else
        usage(spec, false, "%s needs a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'",
              option_name(spec, id), min, max, text);
    return false;
}

bool cli_value_i64(const cli_spec *spec, const cli_parsed *parsed, int id, int64_t min, int64_t max,
                   int64_t *out)
{
    const char *text = parsed->values[id];
    if (!text)
        return true;
    char *end;
    errno = 0;
    long long value = *text ? strtoll(text, &end, 10) : 0;
    if (*text && !errno && !*end && value >= min && value <= max) {
        *out = value;
        return true;
    }
    if (min == INT64_MIN && max == INT64_MAX)
        usage(spec, false, "%s needs a 64-bit integer, not '%s'", option_name(spec, id), text);
    else if (max == INT64_MAX)
        usage(spec, false, "%s needs a whole number of at least %" PRId64 ", not '%s'",
              option_name(spec, id), min, text);
    else
        usage(spec, false, "%s needs an integer from %" PRId64 " to %" PRId64 ", not '%s'",
              option_name(spec, id), min, max, text);
    return false;
}

bool cli_value_choice(const cli_spec *spec, const cli_parsed *parsed, int id,
                      const char *const *choices, int *out)
{
    const char *text = parsed->values[id];
    if (!text)
        return true;
    for (int i = 0; choices[i]; i++)
        if (!strcmp(choices[i], text)) {
            *out = i;
            return true;
        }
    usage(spec, true, "%s cannot be '%s'", option_name(spec, id), text);
    return false;
}
