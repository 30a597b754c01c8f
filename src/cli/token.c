/*
 * token.c — `coffer token create|list|revoke`: the tokens file `coffer serve --tokens` reads
 * (format and parsing in server/tokens.c). A new secret is printed once; only its hash is
 * written. Every change rewrites the file whole (temp file, fsync, rename, fsync directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "server/tokens.h"

#define TOKENS_FILE_HEADER "coffer-tokens 1\n"
#define TOKENS_FILE_BYTES_MAX ((size_t)TOKENS_MAX * TOKEN_LINE_MAX)

enum { TOKEN_NAME, TOKEN_SCOPE, TOKEN_ACCOUNTS, TOKEN_FILE, TOKEN_JSON };

/* Laid out so that each subcommand takes a contiguous run of the table. */
static const cli_option token_options[] = {
    {TOKEN_SCOPE, "--scope", "SCOPE",
     "read (GETs), write (also POSTs) or admin (also /metrics\nand /v1/verify)"},
    {TOKEN_ACCOUNTS, "--accounts", "PREFIX,...",
     "only accounts whose id starts with one of these (default: all)"},
    {TOKEN_NAME, "--name", "NAME",
     "the token's name (1-64 of [A-Za-z0-9._:@-]), unique in the file"},
    {TOKEN_FILE, "--file", "FILE", "the tokens file (created with mode 0600 if missing)"},
    {TOKEN_JSON, "--json", NULL, "print JSON"},
};

#define TOKEN_SPEC(word, synopsis_text, description_text, first, count)                            \
    {                                                                                              \
        .name = "token " word, .synopsis = synopsis_text, .description = description_text,         \
        .options = token_options + (first), .option_count = (count)                                \
    }

static const cli_spec create_spec = TOKEN_SPEC(
    "create", "--name NAME --scope read|write|admin [--accounts PREFIX,...] --file FILE [--json]",
    "Adds a token to the tokens file and prints its secret, once: only a hash is stored, so a\n"
    "lost secret cannot be recovered (revoke it and create another). A running server reads\n"
    "the file again on SIGHUP.\n",
    0, 5);
static const cli_spec list_spec = TOKEN_SPEC(
    "list", "--file FILE [--json]", "Lists the tokens of a file (never their secrets).\n", 3, 2);
static const cli_spec revoke_spec =
    TOKEN_SPEC("revoke", "--name NAME --file FILE",
               "Removes a token from the file; send SIGHUP to the server to apply it.\n", 2, 2);

/* The file's text (NUL-terminated) into *text; *missing when it does not exist. */
static int read_tokens_text(const char *path, char **text, size_t *length, bool *missing)
{
    *text = NULL;
    *length = 0;
    *missing = false;
    FILE *file = fopen(path, "rb");
    if (!file && errno == ENOENT) {
        /* A new file: made with mode 0600 by the write. */
        *missing = true;
        return CLI_GO_ON;
    }
    char *buffer = file ? malloc(TOKENS_FILE_BYTES_MAX + 2) : NULL;
    size_t read = buffer ? fread(buffer, 1, TOKENS_FILE_BYTES_MAX + 1, file) : 0;
    bool failed = !file || !buffer || ferror(file) || read > TOKENS_FILE_BYTES_MAX;
    if (file)
        fclose(file);
    if (failed) {
        fprintf(stderr, "coffer: cannot read %s: %s\n", path,
                buffer ? "too large or unreadable" : strerror(errno));
        free(buffer);
        return CLI_EXIT_ERROR;
    }
    buffer[read] = 0;
    *text = buffer;
    *length = read;
    return CLI_GO_ON;
}

/* Writes `text` to `path` so that a crash leaves either the old file or the new one. */
static int write_tokens_text(const char *path, const char *text, size_t length)
{
    char temporary[4096], directory[4096];
    if (snprintf(temporary, sizeof temporary, "%s.tmp", path) >= (int)sizeof temporary ||
        snprintf(directory, sizeof directory, "%s", path) >= (int)sizeof directory) {
        fprintf(stderr, "coffer: the path %s is too long\n", path);
        return CLI_EXIT_ERROR;
    }
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, text, length) == (ssize_t)length && fsync(fd) == 0;
    int error = errno;
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (ok && rename(temporary, path) != 0) {
        error = errno;
        ok = false;
    }
    if (!ok) {
        unlink(temporary);
        fprintf(stderr, "coffer: cannot write %s: %s\n", path, strerror(error));
        return CLI_EXIT_ERROR;
    }
    int directory_fd = open(dirname(directory), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd >= 0) {
        fsync(directory_fd);
        close(directory_fd);
    }
    return 0;
}

/* Parses `text` to check it before it replaces the file: a file we would refuse to serve is
 * never written. */
static bool tokens_text_valid(const char *path, const char *text, size_t length)
{
    char error[256];
    tokens *table = tokens_parse(text, length, error, sizeof error);
    if (!table)
        fprintf(stderr, "coffer: %s: %s\n", path, error);
    tokens_release(table);
    return table != NULL;
}

/* --accounts p1,p2 into the token: CLI_GO_ON, or the usage status after saying why. */
static int take_prefixes(token *t, const char *list)
{
    char copy[TOKEN_LINE_MAX];
    if (snprintf(copy, sizeof copy, "%s", list) >= (int)sizeof copy)
        return cli_usage(&create_spec, "--accounts is too long");
    char *saved = NULL;
    for (char *prefix = strtok_r(copy, ",", &saved); prefix; prefix = strtok_r(NULL, ",", &saved)) {
        if (t->prefix_count == TOKEN_PREFIXES_MAX || !token_prefix_valid(prefix))
            return cli_usage(&create_spec,
                             "--accounts needs 1-%d prefixes of [A-Za-z0-9._:@/-], not '%s'",
                             TOKEN_PREFIXES_MAX, prefix);
        snprintf(t->prefixes[t->prefix_count++], sizeof t->prefixes[0], "%s", prefix);
    }
    return t->prefix_count > 0 ? CLI_GO_ON : cli_usage(&create_spec, "--accounts is empty");
}

/* The token of create's flags, with a new secret; CLI_GO_ON or an exit code. */
static int new_token(const cli_parsed *parsed, token *t, char secret[TOKEN_SECRET_LENGTH + 1])
{
    memset(t, 0, sizeof *t);
    const char *name = parsed->values[TOKEN_NAME], *scope = parsed->values[TOKEN_SCOPE];
    if (!name || !token_name_valid(name))
        return cli_usage(&create_spec, "--name needs 1-%d of [A-Za-z0-9._:@-]", TOKEN_NAME_MAX);
    if (!scope || !(t->scope = (uint8_t)token_scope_parse(scope)))
        return cli_usage(&create_spec, "--scope needs read, write or admin");
    if (!parsed->values[TOKEN_FILE])
        return cli_usage(&create_spec, "--file needs the tokens file");
    int status = CLI_GO_ON;
    if (parsed->values[TOKEN_ACCOUNTS] &&
        (status = take_prefixes(t, parsed->values[TOKEN_ACCOUNTS])) != CLI_GO_ON)
        return status;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->created_at_s = (uint64_t)time(NULL);
    token_secret_new(secret, t->hash);
    return CLI_GO_ON;
}

static int token_create(int argc, char **argv, bool json)
{
    cli_parsed parsed;
    int status = cli_parse(&create_spec, argc, argv, &parsed);
    token t;
    char secret[TOKEN_SECRET_LENGTH + 1];
    if (status != CLI_GO_ON || (status = new_token(&parsed, &t, secret)) != CLI_GO_ON)
        return status;
    const char *path = parsed.values[TOKEN_FILE];
    char *old = NULL, line[TOKEN_LINE_MAX + 2];
    size_t length;
    bool missing;
    if ((status = read_tokens_text(path, &old, &length, &missing)) != CLI_GO_ON)
        return status;
    char *text = malloc(length + sizeof TOKENS_FILE_HEADER + sizeof line + 1);
    if (!text || !token_format_line(&t, line, sizeof line)) {
        free(old);
        free(text);
        return fprintf(stderr, "coffer: out of memory\n"), CLI_EXIT_ERROR;
    }
    size_t at = missing ? (size_t)sprintf(text, "%s", TOKENS_FILE_HEADER) : 0;
    if (old) {
        memcpy(text + at, old, length);
        at += length;
        if (length && old[length - 1] != '\n')
            text[at++] = '\n';
    }
    at += (size_t)sprintf(text + at, "%s", line);
    status = tokens_text_valid(path, text, at) ? write_tokens_text(path, text, at) : CLI_EXIT_ERROR;
    free(old);
    free(text);
    if (status == 0 && (json || parsed.values[TOKEN_JSON]))
        printf("{\"name\":\"%s\",\"scope\":\"%s\",\"token\":\"%s\"}\n", t.name,
               token_scope_name(t.scope), secret);
    else if (status == 0)
        printf("%s\n", secret);
    sodium_memzero(secret, sizeof secret);
    return status;
}

/* The prefixes as "p1,p2", or "*" for every account. */
static void format_prefixes(const token *t, char *out, size_t size)
{
    snprintf(out, size, "%s", t->prefix_count ? "" : "*");
    for (size_t i = 0, at = 0; i < t->prefix_count && at < size; i++)
        at += (size_t)snprintf(out + at, size - at, "%s%s", i ? "," : "", t->prefixes[i]);
}

static int token_list(int argc, char **argv, bool json)
{
    cli_parsed parsed;
    int status = cli_parse(&list_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    if (!parsed.values[TOKEN_FILE])
        return cli_usage(&list_spec, "--file needs the tokens file");
    char error[512];
    tokens *table = tokens_load(parsed.values[TOKEN_FILE], error, sizeof error);
    if (!table)
        return fprintf(stderr, "coffer: %s\n", error), CLI_EXIT_ERROR;
    json = json || parsed.values[TOKEN_JSON];
    json_t *list = json_array();
    for (size_t i = 0; i < tokens_count(table); i++) {
        const token *t = tokens_at(table, i);
        char prefixes[TOKEN_LINE_MAX];
        format_prefixes(t, prefixes, sizeof prefixes);
        if (json)
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:I}", "name", t->name, "scope",
                                                  token_scope_name(t->scope), "accounts", prefixes,
                                                  "created_at_s", (json_int_t)t->created_at_s));
        else
            printf("%-24s %-6s %-24s %llu\n", t->name, token_scope_name(t->scope), prefixes,
                   (unsigned long long)t->created_at_s);
    }
    json_t *document = json_pack("{s:o}", "tokens", list);
    if (json) {
        json_dumpf(document, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    }
    json_decref(document);
    tokens_release(table);
    return 0;
}

/* The text without the line of the token named `name`; false when there is none. */
static bool remove_line(char *text, size_t *length, const char *name)
{
    size_t name_length = strlen(name);
    for (char *line = text; line < text + *length;) {
        char *end = memchr(line, '\n', (size_t)(text + *length - line));
        end = end ? end + 1 : text + *length;
        if (line != text && !strncmp(line, name, name_length) && line[name_length] == ' ') {
            memmove(line, end, (size_t)(text + *length - end));
            *length -= (size_t)(end - line);
            text[*length] = 0;
            return true;
        }
        line = end;
    }
    return false;
}

static int token_revoke(int argc, char **argv)
{
    cli_parsed parsed;
    int status = cli_parse(&revoke_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    const char *name = parsed.values[TOKEN_NAME], *path = parsed.values[TOKEN_FILE];
    if (!name || !token_name_valid(name) || !path)
        return cli_usage(&revoke_spec, "needs --name NAME and --file FILE");
    char *text;
    size_t length;
    bool missing;
    if ((status = read_tokens_text(path, &text, &length, &missing)) != CLI_GO_ON)
        return status;
    if (missing || !tokens_text_valid(path, text, length)) {
        if (missing)
            fprintf(stderr, "coffer: %s does not exist\n", path);
        free(text);
        return CLI_EXIT_ERROR;
    }
    if (!remove_line(text, &length, name)) {
        fprintf(stderr, "coffer: %s has no token named '%s'\n", path, name);
        free(text);
        return CLI_EXIT_ERROR;
    }
    status = write_tokens_text(path, text, length);
    free(text);
    return status;
}

int cli_token(int argc, char **argv, const cli_globals *globals)
{
    const char *word = argc > 1 ? argv[1] : "";
    if (!strcmp(word, "create"))
        return token_create(argc - 1, argv + 1, globals->json);
    if (!strcmp(word, "list"))
        return token_list(argc - 1, argv + 1, globals->json);
    if (!strcmp(word, "revoke"))
        return token_revoke(argc - 1, argv + 1);
    if (!strcmp(word, "--help") || !strcmp(word, "-h")) {
        printf("usage: coffer token create|list|revoke [options]\n\n"
               "Manages the bearer tokens of a tokens file (coffer serve --tokens FILE).\n"
               "Run 'coffer token <subcommand> --help' for its options.\n");
        return 0;
    }
    return cli_usage_error("token: needs create, list or revoke (try 'coffer token --help')");
}
