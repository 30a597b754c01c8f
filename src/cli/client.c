/*
 * client.c — the `coffer` commands that talk to a running server over HTTP (docs/api.md):
 * account create|get|history, transfer [get], hold post|void|list and health. Human text by
 * default, the server's own JSON with --json. Exit 0 ok, 1 refused, 2 bad usage, 3 no server.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "cli/cli.h"

#define CLIENT_DEFAULT_SERVER "http://127.0.0.1:8080"
#define CLIENT_SERVER_ENV "COFFER_SERVER"
/* A history page of 1,000 entries is well under 1 MiB; 64 MiB only stops a runaway answer. */
#define CLIENT_RESPONSE_BYTES_MAX ((size_t)64 << 20)
#define CLIENT_CONNECT_TIMEOUT_MS 5000L
#define CLIENT_TOTAL_TIMEOUT_MS 30000L
#define CLIENT_URL_BYTES_MAX 4096
#define CLIENT_OPERANDS_MAX 1
#define CLIENT_NUMBER_BYTES 32
#define CLIENT_ID_BYTES 64
/* Returned by steps that did not finish the command: go on with the next step. */
#define CLIENT_GO_ON (-1)

static const char common_help[] =
    "\n"
    "Every command that talks to a server also takes:\n"
    "  --server URL   the server (default: $" CLIENT_SERVER_ENV ", else " CLIENT_DEFAULT_SERVER
    ")\n"
    "  --json         print the server's JSON instead of text\n"
    "Exit status: 0 success, 1 the server refused (the error is on stderr), 2 bad usage,\n"
    "3 the server could not be reached or did not answer.\n";

/* ---- command lines ------------------------------------------------------------------------ */

#define CLIENT_OPTIONS(X)                                                                          \
    X(SERVER, "--server", true)                                                                    \
    X(JSON, "--json", false)                                                                       \
    X(CURRENCY, "--currency", true)                                                                \
    X(MIN_BALANCE, "--min-balance", true)                                                          \
    X(UNBOUNDED, "--unbounded", false)                                                             \
    X(MAX_BALANCE, "--max-balance", true)                                                          \
    X(METADATA, "--metadata", true)                                                                \
    X(AT, "--at", true)                                                                            \
    X(AFTER, "--after", true)                                                                      \
    X(LIMIT, "--limit", true)                                                                      \
    X(ALL, "--all", false)                                                                         \
    X(FROM, "--from", true)                                                                        \
    X(TO, "--to", true)                                                                            \
    X(AMOUNT, "--amount", true)                                                                    \
    X(ID, "--id", true)                                                                            \
    X(KEY, "--key", true)                                                                          \
    X(HOLD, "--hold", true)                                                                        \
    X(EXPECT_FROM_VERSION, "--expect-from-version", true)                                          \
    X(EXPECT_TO_VERSION, "--expect-to-version", true)                                              \
    X(UP_TO, "--up-to", false)                                                                     \
    X(ACCOUNT, "--account", true)

enum client_option {
#define CLIENT_OPTION_ENUM(name, flag, takes_value) OPTION_##name,
    CLIENT_OPTIONS(CLIENT_OPTION_ENUM)
#undef CLIENT_OPTION_ENUM
        OPTION_COUNT
};

static const struct {
    const char *flag;
    bool takes_value;
} option_table[OPTION_COUNT] = {
#define CLIENT_OPTION_ROW(name, flag, takes_value) {flag, takes_value},
    CLIENT_OPTIONS(CLIENT_OPTION_ROW)
#undef CLIENT_OPTION_ROW
};

#define ALLOW(name) (1u << OPTION_##name)
#define ALLOW_COMMON (ALLOW(SERVER) | ALLOW(JSON))

typedef struct client client;
typedef struct command_line command_line;

/* One subcommand: its name for messages, its --help, what it accepts and what it does. */
typedef struct command {
    const char *name;         /* "account get" */
    const char *usage;        /* the --help text */
    uint32_t allowed;         /* ALLOW() bits */
    const char *operand_name; /* "ID", or NULL when the command takes no operand */
    int (*run)(client *server, const command_line *line);
} command;

struct command_line {
    const char *operand[CLIENT_OPERANDS_MAX];
    int operand_count;
    const char *value[OPTION_COUNT]; /* NULL: not given; a given switch reads as its flag */
};

static bool is_help(const char *arg)
{
    return !strcmp(arg, "--help") || !strcmp(arg, "-h");
}

/* Takes argv[*index] (an option, maybe "--name=value") and its value. */
static int parse_option(const command *cmd, int argc, char **argv, int *index, command_line *out)
{
    const char *arg = argv[*index], *equals = strchr(arg, '=');
    size_t name_length = equals ? (size_t)(equals - arg) : strlen(arg);
    int option = 0;
    while (option < OPTION_COUNT && (strlen(option_table[option].flag) != name_length ||
                                     strncmp(option_table[option].flag, arg, name_length)))
        option++;
    if (option == OPTION_COUNT || !(cmd->allowed & (1u << option)))
        return cli_usage_error("%s: unknown option '%.*s' (try 'coffer %s --help')", cmd->name,
                               (int)name_length, arg, cmd->name);
    const char *flag = option_table[option].flag;
    if (out->value[option])
        return cli_usage_error("%s: %s given twice", cmd->name, flag);
    if (!option_table[option].takes_value) {
        if (equals)
            return cli_usage_error("%s: %s takes no value", cmd->name, flag);
        out->value[option] = flag;
        return CLIENT_GO_ON;
    }
    if (equals) {
        out->value[option] = equals + 1;
    } else if (*index + 1 < argc) {
        out->value[option] = argv[++*index];
    } else {
        return cli_usage_error("%s: %s needs a value", cmd->name, flag);
    }
    return CLIENT_GO_ON;
}

/* Parses argv[1..] of one subcommand: exit code 0 after --help, 2 on bad usage, else GO_ON. */
static int parse_command_line(const command *cmd, int argc, char **argv, command_line *out)
{
    *out = (command_line){0};
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (is_help(argv[i])) {
            fputs(cmd->usage, stdout);
            fputs(common_help, stdout);
            return 0;
        }
    int operands_max = cmd->operand_name ? 1 : 0;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && !strcmp(arg, "--")) {
            options_done = true;
        } else if (!options_done && arg[0] == '-' && arg[1]) {
            int status = parse_option(cmd, argc, argv, &i, out);
            if (status != CLIENT_GO_ON)
                return status;
        } else if (out->operand_count < operands_max) {
            out->operand[out->operand_count++] = arg;
        } else {
            return cli_usage_error("%s: unexpected argument '%s' (try 'coffer %s --help')",
                                   cmd->name, arg, cmd->name);
        }
    }
    if (out->operand_count < operands_max || (operands_max && !out->operand[0][0]))
        return cli_usage_error("%s: needs %s (try 'coffer %s --help')", cmd->name,
                               cmd->operand_name, cmd->name);
    return CLIENT_GO_ON;
}

static bool parse_i64(const char *text, int64_t *out)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || *end)
        return false;
    *out = value;
    return true;
}

/* Reads an optional integer option; false (after a usage message) when it is not one. */
static bool option_i64(const command_line *line, int option, int64_t *out, bool *given)
{
    *given = line->value[option] != NULL;
    if (!*given || parse_i64(line->value[option], out))
        return true;
    cli_usage_error("%s needs an integer, not '%s'", option_table[option].flag,
                    line->value[option]);
    return false;
}

static bool option_u64(const command_line *line, int option, uint64_t *out, bool *given)
{
    *given = line->value[option] != NULL;
    if (!*given || cli_parse_u64(line->value[option], 0, UINT64_MAX, out))
        return true;
    cli_usage_error("%s needs a whole number, not '%s'", option_table[option].flag,
                    line->value[option]);
    return false;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct client {
    CURL *curl;
    char server[CLIENT_URL_BYTES_MAX]; /* base URL, no trailing '/' */
    bool json;
    /* For a write: what to run to learn its outcome when the answer is lost. */
    char retry_hint[256];
    char curl_error[CURL_ERROR_SIZE];
};

typedef struct response {
    long status;
    char *body; /* NUL-terminated, at most CLIENT_RESPONSE_BYTES_MAX bytes */
    size_t length, capacity;
    bool too_large, out_of_memory;
    bool replayed; /* Idempotent-Replayed: true */
    char request_id[128];
    char retry_after[32];
    json_t *json; /* the body when it is a JSON object, else NULL */
} response;

/* A URL under construction; overflow is sticky and checked once before sending. */
typedef struct url_builder {
    char text[CLIENT_URL_BYTES_MAX];
    size_t length;
    bool overflow, has_query;
} url_builder;

/* Appends text; with escape, percent-encodes all but [A-Za-z0-9._~:@-] (so '/' in an id
 * stays inside its path segment, and '+' in a time is not read as a space). */
static void url_append(url_builder *url, const char *text, bool escape)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *text && !url->overflow; text++) {
        unsigned char c = (unsigned char)*text;
        bool keep = !escape || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || strchr("-._~:@", c);
        if (url->length + (keep ? 1 : 3) >= sizeof url->text) {
            url->overflow = true;
            break;
        }
        if (keep) {
            url->text[url->length++] = (char)c;
        } else {
            url->text[url->length++] = '%';
            url->text[url->length++] = hex[c >> 4];
            url->text[url->length++] = hex[c & 15];
        }
    }
    url->text[url->length] = 0;
}

/* Starts a URL: the server, then path pieces, each segment (odd arguments) escaped. */
static void url_start(url_builder *url, const client *server, const char *path)
{
    *url = (url_builder){0};
    url_append(url, server->server, false);
    url_append(url, path, false);
}

static void url_query(url_builder *url, const char *name, const char *value)
{
    if (!value)
        return;
    url_append(url, url->has_query ? "&" : "?", false);
    url->has_query = true;
    url_append(url, name, false);
    url_append(url, "=", false);
    url_append(url, value, true);
}

/* Copies a header's value when the line is "name: value" (name case-insensitive). */
static void header_copy(const char *line, size_t length, const char *name, char *value, size_t size)
{
    size_t name_length = strlen(name);
    if (length <= name_length || strncasecmp(line, name, name_length) || line[name_length] != ':')
        return;
    const char *start = line + name_length + 1, *end = line + length;
    while (start < end && (*start == ' ' || *start == '\t'))
        start++;
    while (end > start && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t copy = (size_t)(end - start) < size - 1 ? (size_t)(end - start) : size - 1;
    memcpy(value, start, copy);
    value[copy] = 0;
}

static size_t on_header(char *data, size_t size, size_t count, void *context)
{
    response *answer = context;
    size_t length = size * count;
    if (length >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response (after a 1xx) */
        answer->replayed = false;
        answer->request_id[0] = answer->retry_after[0] = 0;
    }
    char replayed[16] = "";
    header_copy(data, length, "Idempotent-Replayed", replayed, sizeof replayed);
    if (replayed[0])
        answer->replayed = !strcasecmp(replayed, "true");
    header_copy(data, length, "X-Request-Id", answer->request_id, sizeof answer->request_id);
    header_copy(data, length, "Retry-After", answer->retry_after, sizeof answer->retry_after);
    return length;
}

static size_t on_body(char *data, size_t size, size_t count, void *context)
{
    response *answer = context;
    size_t length = size * count;
    if (length > CLIENT_RESPONSE_BYTES_MAX - answer->length) {
        answer->too_large = true;
        return 0; /* aborts the transfer */
    }
    if (answer->length + length + 1 > answer->capacity) {
        size_t capacity = answer->capacity ? answer->capacity : 16384;
        while (capacity < answer->length + length + 1)
            capacity *= 2;
        if (capacity > CLIENT_RESPONSE_BYTES_MAX + 1)
            capacity = CLIENT_RESPONSE_BYTES_MAX + 1;
        char *grown = realloc(answer->body, capacity);
        if (!grown) {
            answer->out_of_memory = true;
            return 0;
        }
        answer->body = grown;
        answer->capacity = capacity;
    }
    memcpy(answer->body + answer->length, data, length);
    answer->length += length;
    answer->body[answer->length] = 0;
    return length;
}

static void response_free(response *answer)
{
    free(answer->body);
    json_decref(answer->json);
    *answer = (response){0};
}

/* Checks and keeps the server's base URL: http(s)://host[:port][/prefix], no query. */
static int client_set_server(client *server, const char *url)
{
    size_t length = strlen(url);
    bool http = !strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8);
    CURLU *parsed = curl_url();
    bool valid = parsed && http && length < CLIENT_URL_BYTES_MAX / 2 &&
                 !strpbrk(url, "?# \t\r\n") &&
                 curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK;
    curl_url_cleanup(parsed);
    if (!valid)
        return cli_usage_error("--server needs an http:// or https:// URL, not '%s'", url);
    while (length && url[length - 1] == '/')
        length--;
    memcpy(server->server, url, length);
    server->server[length] = 0;
    return CLIENT_GO_ON;
}

static int client_open(client *server, const command_line *line)
{
    *server = (client){0};
    const char *url = line->value[OPTION_SERVER];
    if (!url)
        url = getenv(CLIENT_SERVER_ENV);
    if (!url || !*url)
        url = CLIENT_DEFAULT_SERVER;
    server->json = line->value[OPTION_JSON] != NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(server->curl = curl_easy_init())) {
        fprintf(stderr, "coffer: cannot start libcurl\n");
        return CLI_EXIT_ERROR;
    }
    int status = client_set_server(server, url);
    if (status != CLIENT_GO_ON)
        return status;
    CURL *curl = server->curl;
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, CLIENT_TOTAL_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "coffer/0.1.0");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, server->curl_error);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CLIENT_RESPONSE_BYTES_MAX);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    return CLIENT_GO_ON;
}

static void client_close(client *server)
{
    if (server->curl) {
        curl_easy_cleanup(server->curl);
        curl_global_cleanup();
    }
    server->curl = NULL;
}

/* No answer at all: say which server, and for a write that went out, how to learn its fate. */
static int report_transport_error(client *server, const url_builder *url, CURLcode result,
                                  const response *answer)
{
    if (answer->too_large || result == CURLE_FILESIZE_EXCEEDED) {
        fprintf(stderr, "error: the answer from %s is larger than %zu MiB\n", url->text,
                CLIENT_RESPONSE_BYTES_MAX >> 20);
        return CLI_EXIT_ERROR;
    }
    if (answer->out_of_memory) {
        fprintf(stderr, "error: out of memory reading the answer from %s\n", url->text);
        return CLI_EXIT_ERROR;
    }
    const char *why = server->curl_error[0] ? server->curl_error : curl_easy_strerror(result);
    long sent_bytes = 0;
    curl_easy_getinfo(server->curl, CURLINFO_REQUEST_SIZE, &sent_bytes);
    fprintf(stderr, "coffer: cannot reach the server at %s: %s\n", server->server, why);
    if (sent_bytes > 0 && server->retry_hint[0])
        fprintf(stderr,
                "coffer: the request was sent but not answered, so it may or may not "
                "have been applied; %s\n",
                server->retry_hint);
    else if (sent_bytes == 0)
        fprintf(stderr, "coffer: is 'coffer serve' running there? Name another server with "
                        "--server URL or " CLIENT_SERVER_ENV ".\n");
    return CLI_EXIT_UNREACHABLE;
}

/* Sends one request and reads the whole answer. GO_ON when an HTTP answer arrived (of any
 * status); else the exit code, with the reason printed. The caller frees the response. */
static int client_call(client *server, const url_builder *url, const char *body,
                       const char *idempotency_key, response *answer)
{
    *answer = (response){0};
    if (url->overflow) {
        fprintf(stderr, "coffer: the request URL would be longer than %d bytes\n",
                CLIENT_URL_BYTES_MAX);
        return CLI_EXIT_USAGE;
    }
    char key_header[512];
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    if (headers && body) {
        curl_slist_append(headers, "Content-Type: application/json");
        curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    }
    if (headers && idempotency_key) {
        snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", idempotency_key);
        curl_slist_append(headers, key_header);
    }
    CURL *curl = server->curl;
    server->curl_error[0] = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url->text);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, answer);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
    CURLcode result = headers ? curl_easy_perform(curl) : CURLE_OUT_OF_MEMORY;
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (result != CURLE_OK)
        return report_transport_error(server, url, result, answer);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer->status);
    if (answer->length) {
        answer->json = json_loadb(answer->body, answer->length, 0, NULL);
        if (answer->json && !json_is_object(answer->json)) {
            json_decref(answer->json);
            answer->json = NULL;
        }
    }
    return CLIENT_GO_ON;
}

static bool is_success(const response *answer)
{
    return answer->status >= 200 && answer->status < 300;
}

/* ---- reading JSON answers ----------------------------------------------------------------- */

static const char *text_field(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* Formats an integer for people: 10,000 and -1,500; with plus, +500 for a positive delta. */
static const char *format_grouped(int64_t value, bool plus, char out[CLIENT_NUMBER_BYTES])
{
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    size_t at = 0;
    if (value < 0)
        out[at++] = '-';
    if (value > 0 && plus)
        out[at++] = '+';
    for (int i = count - 1; i >= 0; i--) {
        out[at++] = digits[i];
        if (i && i % 3 == 0)
            out[at++] = ',';
    }
    out[at] = 0;
    return out;
}

/* A field as text: grouped digits (or plain, for versions and seqs), the string itself,
 * `when_null` for null, "?" when missing. */
static const char *field_text(const json_t *object, const char *key, bool grouped,
                              const char *when_null, char out[CLIENT_NUMBER_BYTES])
{
    const json_t *value = json_object_get(object, key);
    if (json_is_integer(value)) {
        if (grouped)
            return format_grouped(json_integer_value(value), false, out);
        snprintf(out, CLIENT_NUMBER_BYTES, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return out;
    }
    if (json_is_string(value))
        return json_string_value(value);
    if (json_is_null(value))
        return when_null;
    return "?";
}

/* Prints a JSON value compactly (metadata, problem fields); strings as they are. */
static void print_value(FILE *out, const json_t *value)
{
    if (json_is_string(value)) {
        fputs(json_string_value(value), out);
        return;
    }
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(text ? text : "?", out);
    free(text);
}

static void print_verbatim(const response *answer)
{
    if (!answer->length)
        return;
    fwrite(answer->body, 1, answer->length, stdout);
    if (answer->body[answer->length - 1] != '\n')
        putchar('\n');
}

/* A refusal on stderr: "error: <code>: <title>", then detail, field and the other fields. */
static void print_problem(const client *server, const response *answer)
{
    const json_t *problem = answer->json;
    const char *code = text_field(problem, "code"), *title = text_field(problem, "title");
    if (code) {
        fprintf(stderr, "error: %s: %s\n", code, title ? title : "(no title)");
    } else {
        fprintf(stderr, "error: HTTP %ld from %s", answer->status, server->server);
        if (answer->length)
            fputs(": ", stderr);
        for (size_t i = 0; i < answer->length && i < 200; i++) {
            unsigned char c = (unsigned char)answer->body[i];
            fputc(c < 0x20 || c == 0x7f ? ' ' : c, stderr);
        }
        fputc('\n', stderr);
    }
    static const char *const shown_elsewhere[] = {"type", "title", "status", "code", "instance"};
    const char *key;
    const json_t *value;
    const json_t *detail = json_object_get(problem, "detail");
    if (detail && !(title && json_is_string(detail) && !strcmp(json_string_value(detail), title))) {
        fputs("  detail: ", stderr);
        print_value(stderr, detail);
        fputc('\n', stderr);
    }
    json_object_foreach((json_t *)problem, key, value)
    {
        bool skip = !strcmp(key, "detail");
        for (size_t i = 0; i < sizeof shown_elsewhere / sizeof *shown_elsewhere; i++)
            skip = skip || !strcmp(key, shown_elsewhere[i]);
        if (skip)
            continue;
        fprintf(stderr, "  %s: ", key);
        print_value(stderr, value);
        fputc('\n', stderr);
    }
    if (answer->replayed)
        fputs("  replayed: this id was refused before and keeps that outcome; use a new id to "
              "try again\n",
              stderr);
    if (answer->retry_after[0])
        fprintf(stderr, "  retry after: %s s\n", answer->retry_after);
    if (answer->request_id[0])
        fprintf(stderr, "  request id: %s\n", answer->request_id);
}

static int flush_output(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    fprintf(stderr, "coffer: cannot write the output\n");
    return CLI_EXIT_ERROR;
}

typedef void (*body_printer)(const json_t *body, const response *answer, const void *context);

/* Turns an answer into output and the exit code: on success the printer (or, with --json, the
 * server's JSON as it came); else the problem on stderr (and with --json its JSON on stdout). */
static int client_finish(const client *server, const response *answer, body_printer print,
                         const void *context)
{
    if (is_success(answer)) {
        if (server->json) {
            print_verbatim(answer);
            return flush_output();
        }
        if (!answer->json) {
            fprintf(stderr, "error: the server at %s answered %ld without a JSON object\n",
                    server->server, answer->status);
            return CLI_EXIT_ERROR;
        }
        print(answer->json, answer, context);
        return flush_output();
    }
    if (server->json)
        print_verbatim(answer);
    fflush(stdout);
    print_problem(server, answer);
    return CLI_EXIT_ERROR;
}

/* One request from start to exit code; `body` (may be NULL) is consumed. */
static int client_exchange(client *server, const url_builder *url, json_t *body,
                           const char *idempotency_key, body_printer print, const void *context)
{
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!text) {
            fprintf(stderr, "coffer: out of memory\n");
            return CLI_EXIT_ERROR;
        }
    }
    response answer;
    int status = client_call(server, url, text, idempotency_key, &answer);
    free(text);
    if (status == CLIENT_GO_ON)
        status = client_finish(server, &answer, print, context);
    response_free(&answer);
    return status;
}

/* ---- building requests -------------------------------------------------------------------- */

/* Sets a string member; false (after a usage message) for text that is not UTF-8. */
static bool set_text(json_t *object, const char *key, const char *value)
{
    json_t *text = json_string(value);
    if (text && json_object_set_new(object, key, text) == 0)
        return true;
    cli_usage_error("%s is not valid UTF-8", key);
    return false;
}

static bool set_metadata(json_t *object, const command_line *line)
{
    const char *text = line->value[OPTION_METADATA];
    if (!text)
        return true;
    json_error_t error;
    json_t *metadata = json_loads(text, 0, &error);
    if (json_is_object(metadata))
        return json_object_set_new(object, "metadata", metadata) == 0;
    cli_usage_error("--metadata needs a JSON object%s%s", metadata ? "" : ": ",
                    metadata ? "" : error.text);
    json_decref(metadata);
    return false;
}

/* An idempotency key: the given --id or --key, or a new random one, said on stderr so the
 * same request can be retried. `*in_header` tells whether it goes in Idempotency-Key. */
/* What to tell the user when a write's outcome is unknown: the same id learns it. */
static void set_retry_hint(client *server, const char *id, bool in_header)
{
    snprintf(server->retry_hint, sizeof server->retry_hint,
             "run the same command with %s %s to learn its outcome", in_header ? "--key" : "--id",
             id);
}

static bool pick_id(const command_line *line, const char *prefix, char generated[CLIENT_ID_BYTES],
                    const char **id, bool *in_header)
{
    *in_header = line->value[OPTION_KEY] != NULL;
    *id = *in_header ? line->value[OPTION_KEY] : line->value[OPTION_ID];
    if (line->value[OPTION_ID] && line->value[OPTION_KEY]) {
        cli_usage_error("give the id with --id or with --key, not both");
        return false;
    }
    if (*id) {
        for (const char *c = *id; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) {
                cli_usage_error("an id is printable ASCII ([A-Za-z0-9._:@/-])");
                return false;
            }
        if (**id)
            return true;
        cli_usage_error("an id cannot be empty");
        return false;
    }
    unsigned char random[16];
    if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
        fprintf(stderr, "coffer: cannot read random bytes for an id; give one with --id\n");
        return false;
    }
    int at = snprintf(generated, CLIENT_ID_BYTES, "%s", prefix);
    for (size_t i = 0; i < sizeof random; i++)
        at += snprintf(generated + at, CLIENT_ID_BYTES - (size_t)at, "%02x", random[i]);
    *id = generated;
    fprintf(stderr, "coffer: id %s (generated; to retry this request, pass --id %s)\n", *id, *id);
    return true;
}

/* ---- accounts ----------------------------------------------------------------------------- */

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
    const json_t *metadata = json_object_get(account, "metadata");
    if (json_is_object(metadata) && json_object_size(metadata)) {
        fputs("  metadata: ", stdout);
        print_value(stdout, metadata);
        putchar('\n');
    }
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

static int account_create(client *server, const command_line *line)
{
    int64_t min_balance = 0, max_balance = 0;
    bool has_min, has_max;
    if (!option_i64(line, OPTION_MIN_BALANCE, &min_balance, &has_min) ||
        !option_i64(line, OPTION_MAX_BALANCE, &max_balance, &has_max))
        return CLI_EXIT_USAGE;
    if (!line->value[OPTION_CURRENCY])
        return cli_usage_error("account create: --currency is required");
    if (has_min && line->value[OPTION_UNBOUNDED])
        return cli_usage_error("account create: --min-balance or --unbounded, not both");
    json_t *body = json_object();
    bool ok = body && set_text(body, "id", line->operand[0]) &&
              set_text(body, "currency", line->value[OPTION_CURRENCY]);
    if (ok && has_min)
        ok = json_object_set_new(body, "min_balance", json_integer(min_balance)) == 0;
    if (ok && line->value[OPTION_UNBOUNDED])
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

static int account_get(client *server, const command_line *line)
{
    if (line->value[OPTION_AT] && !line->value[OPTION_AT][0])
        return cli_usage_error("account get: --at needs a seq or an RFC 3339 time");
    url_builder url;
    url_start(&url, server, "/v1/accounts/");
    url_append(&url, line->operand[0], true);
    url_query(&url, "at", line->value[OPTION_AT]);
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
        return CLIENT_GO_ON;
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
    return CLIENT_GO_ON;
}

/* --all: follows next_after to the end, streaming (with --json, one merged page). */
static int account_history_all(client *server, const command_line *line, uint64_t after)
{
    uint64_t printed = 0;
    bool done = false;
    int status = CLIENT_GO_ON;
    while (status == CLIENT_GO_ON && !done) {
        char after_text[CLIENT_NUMBER_BYTES];
        snprintf(after_text, sizeof after_text, "%" PRIu64, after);
        url_builder url;
        url_start(&url, server, "/v1/accounts/");
        url_append(&url, line->operand[0], true);
        url_append(&url, "/history", false);
        url_query(&url, "after", after_text);
        url_query(&url, "limit", line->value[OPTION_LIMIT]);
        response answer;
        status = client_call(server, &url, NULL, NULL, &answer);
        if (status == CLIENT_GO_ON && (!is_success(&answer) || !answer.json))
            status = client_finish(server, &answer, print_history_page, line->operand[0]);
        else if (status == CLIENT_GO_ON)
            status = history_page_all(server, &answer, &after, &printed, &done);
        response_free(&answer);
    }
    if (status != CLIENT_GO_ON)
        return status;
    if (server->json)
        fputs(printed ? "],\"next_after\":null}\n" : "{\"entries\":[],\"next_after\":null}\n",
              stdout);
    else if (printed == 0)
        puts("no history entries");
    return flush_output();
}

static int account_history(client *server, const command_line *line)
{
    uint64_t after = 0, limit = 0;
    bool has_after, has_limit;
    if (!option_u64(line, OPTION_AFTER, &after, &has_after) ||
        !option_u64(line, OPTION_LIMIT, &limit, &has_limit))
        return CLI_EXIT_USAGE;
    if (line->value[OPTION_ALL])
        return account_history_all(server, line, after);
    url_builder url;
    url_start(&url, server, "/v1/accounts/");
    url_append(&url, line->operand[0], true);
    url_append(&url, "/history", false);
    url_query(&url, "after", line->value[OPTION_AFTER]);
    url_query(&url, "limit", line->value[OPTION_LIMIT]);
    return client_exchange(server, &url, NULL, NULL, print_history_page, line->operand[0]);
}

/* ---- transfers and holds ------------------------------------------------------------------ */

/* "user:1 -> shop 500 KRW (posted, seq 18)", and the like for holds, posts and voids. */
static void print_transfer_summary(const json_t *transfer)
{
    char number[CLIENT_NUMBER_BYTES];
    const char *hold = text_field(transfer, "post"), *voided = text_field(transfer, "void");
    const char *from = text_field(transfer, "from"), *to = text_field(transfer, "to");
    if (hold)
        printf("post of hold %s", hold);
    if (voided)
        printf("void of hold %s", voided);
    if (from && to)
        printf("%s%s -> %s", hold || voided ? ", " : "", from, to);
    if (json_is_integer(json_object_get(transfer, "amount")))
        printf(" %s", field_text(transfer, "amount", true, "", number));
    if (json_is_integer(json_object_get(transfer, "amount_requested")))
        printf(" of %s requested", field_text(transfer, "amount_requested", true, "", number));
    if (text_field(transfer, "currency"))
        printf(" %s", text_field(transfer, "currency"));
    const char *state = text_field(transfer, "state"), *code = text_field(transfer, "code");
    printf(" (%s", state ? state : code ? code : "?");
    if (state && code && strcmp(code, "created") && strcmp(code, "exists"))
        printf(": %s", code);
    if (json_is_integer(json_object_get(transfer, "captured")))
        printf("%s %s", state && !strcmp(state, "captured") ? "" : ", captured",
               field_text(transfer, "captured", true, "", number));
    if (json_object_get(transfer, "seq"))
        printf(", seq %s", field_text(transfer, "seq", false, "?", number));
    if (state && !strcmp(state, "pending") && text_field(transfer, "expires_at"))
        printf(", expires %s", text_field(transfer, "expires_at"));
    putchar(')');
}

/* "; user:1 balance 9,500 v2, shop balance 500 v2" (available too when it differs). An
 * account without its id is named by the transfer's from/to, else by its side. */
static void print_account_changes(const json_t *accounts, const json_t *transfer)
{
    static const char *const sides[] = {"from", "to"};
    const char *separator = "; ";
    for (size_t i = 0; i < 2; i++) {
        const json_t *account = json_object_get(accounts, sides[i]);
        if (!json_is_object(account))
            continue;
        char balance[CLIENT_NUMBER_BYTES], available[CLIENT_NUMBER_BYTES],
            version[CLIENT_NUMBER_BYTES];
        const char *id = text_field(account, "id");
        if (!id)
            id = text_field(transfer, sides[i]);
        printf("%s%s balance %s", separator, id ? id : sides[i],
               field_text(account, "balance", true, "?", balance));
        if (!json_equal(json_object_get(account, "balance"), json_object_get(account, "available")))
            printf(" available %s", field_text(account, "available", true, "?", available));
        printf(" v%s", field_text(account, "version", false, "?", version));
        separator = ", ";
    }
}

/* A write's answer: "created pay-1: user:1 -> shop 500 (posted, seq 18); user:1 balance ...". */
static void print_transfer_result(const json_t *body, const response *answer, const void *context)
{
    (void)context;
    const json_t *transfer = json_object_get(body, "transfer");
    const char *code = text_field(body, "code");
    printf("%s %s: ", code ? code : "done",
           text_field(transfer, "id") ? text_field(transfer, "id") : "?");
    print_transfer_summary(transfer);
    print_account_changes(json_object_get(body, "accounts"), transfer);
    puts(answer->replayed ? " (replayed)" : "");
}

static int transfer_create(client *server, const command_line *line)
{
    int64_t amount = 0;
    uint64_t timeout_ms = 0, from_version = 0, to_version = 0;
    bool has_amount, has_hold, has_from_version, has_to_version;
    if (!option_i64(line, OPTION_AMOUNT, &amount, &has_amount) ||
        !option_u64(line, OPTION_HOLD, &timeout_ms, &has_hold) ||
        !option_u64(line, OPTION_EXPECT_FROM_VERSION, &from_version, &has_from_version) ||
        !option_u64(line, OPTION_EXPECT_TO_VERSION, &to_version, &has_to_version))
        return CLI_EXIT_USAGE;
    if (!line->value[OPTION_FROM] || !line->value[OPTION_TO] || !has_amount)
        return cli_usage_error("transfer: --from, --to and --amount are required (try 'coffer "
                               "transfer --help')");
    if (from_version > INT64_MAX || to_version > INT64_MAX || timeout_ms > INT64_MAX)
        return cli_usage_error("transfer: a version or timeout is out of range");
    char generated[CLIENT_ID_BYTES];
    const char *id;
    bool in_header;
    if (!pick_id(line, "tx-", generated, &id, &in_header))
        return CLI_EXIT_USAGE;
    json_t *body = json_object();
    bool ok = body && (in_header || set_text(body, "id", id)) &&
              set_text(body, "from", line->value[OPTION_FROM]) &&
              set_text(body, "to", line->value[OPTION_TO]) &&
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
    if (ok && line->value[OPTION_UP_TO])
        ok = json_object_set_new(body, "up_to", json_true()) == 0;
    if (!ok || !set_metadata(body, line)) {
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    set_retry_hint(server, id, in_header);
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
    const json_t *metadata = json_object_get(transfer, "metadata");
    if (json_is_object(metadata) && json_object_size(metadata)) {
        fputs("  metadata: ", stdout);
        print_value(stdout, metadata);
        putchar('\n');
    }
}

static int transfer_get(client *server, const command_line *line)
{
    url_builder url;
    url_start(&url, server, "/v1/transfers/");
    url_append(&url, line->operand[0], true);
    return client_exchange(server, &url, NULL, NULL, print_transfer, NULL);
}

/* `hold post` and `hold void`: POST /v1/holds/{id}/post|void with its own idempotency key. */
static int hold_resolve(client *server, const command_line *line, const char *action)
{
    int64_t amount = 0;
    bool has_amount = false;
    if (!option_i64(line, OPTION_AMOUNT, &amount, &has_amount))
        return CLI_EXIT_USAGE;
    char generated[CLIENT_ID_BYTES], prefix[8];
    snprintf(prefix, sizeof prefix, "%s-", action);
    const char *id;
    bool in_header;
    if (!pick_id(line, prefix, generated, &id, &in_header))
        return CLI_EXIT_USAGE;
    json_t *body = json_object();
    bool ok = body && (in_header || set_text(body, "id", id));
    if (ok && has_amount)
        ok = json_object_set_new(body, "amount", json_integer(amount)) == 0;
    if (!ok) {
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    set_retry_hint(server, id, in_header);
    url_builder url;
    url_start(&url, server, "/v1/holds/");
    url_append(&url, line->operand[0], true);
    url_append(&url, !strcmp(action, "post") ? "/post" : "/void", false);
    return client_exchange(server, &url, body, in_header ? id : NULL, print_transfer_result, NULL);
}

static int hold_post(client *server, const command_line *line)
{
    return hold_resolve(server, line, "post");
}

static int hold_void(client *server, const command_line *line)
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

static int hold_list(client *server, const command_line *line)
{
    uint64_t limit = 0;
    bool has_limit;
    if (!option_u64(line, OPTION_LIMIT, &limit, &has_limit))
        return CLI_EXIT_USAGE;
    url_builder url;
    url_start(&url, server, "/v1/holds");
    url_query(&url, "account", line->value[OPTION_ACCOUNT]);
    url_query(&url, "limit", line->value[OPTION_LIMIT]);
    return client_exchange(server, &url, NULL, NULL, print_holds, NULL);
}

static void print_health(const json_t *body, const response *answer, const void *context)
{
    (void)answer;
    const client *server = context;
    printf("%s: %s\n", server->server,
           text_field(body, "status") ? text_field(body, "status") : "ready");
}

static int health(client *server, const command_line *line)
{
    (void)line;
    url_builder url;
    url_start(&url, server, "/readyz");
    return client_exchange(server, &url, NULL, NULL, print_health, server);
}

/* ---- the commands ------------------------------------------------------------------------- */

static const char account_usage[] =
    "usage: coffer account create|get|history ID [options]\n"
    "\n"
    "  create ID --currency C   create an account; also [--min-balance N | --unbounded]\n"
    "                           [--max-balance N] [--metadata JSON]\n"
    "  get ID [--at SEQ|TIME]   show an account, now or as it was at a seq or RFC 3339 time\n"
    "  history ID               list the account's changes, oldest first; [--after SEQ]\n"
    "                           [--limit N] [--all]\n"
    "\n"
    "Run 'coffer account <subcommand> --help' for details.\n";

static const command account_commands[] = {
    {"account create",
     "usage: coffer account create ID --currency C [--min-balance N | --unbounded]\n"
     "                             [--max-balance N] [--metadata JSON]\n"
     "\n"
     "Creates account ID (1-64 of A-Z a-z 0-9 . _ : @ / -) in currency C (1-12 of A-Z 0-9 _).\n"
     "The id is the account's idempotency key: the same command again answers with the same\n"
     "account, marked (replayed); the same id with other settings is refused (id_reused).\n"
     "\n"
     "  --currency C      required\n"
     "  --min-balance N   the floor for available: 0 (default) or below, an overdraft line\n"
     "  --unbounded       no floor at all (a funding or issuer account)\n"
     "  --max-balance N   a cap on balance plus incoming holds (default: none)\n"
     "  --metadata JSON   a JSON object of at most 1 KiB, stored verbatim\n",
     ALLOW_COMMON | ALLOW(CURRENCY) | ALLOW(MIN_BALANCE) | ALLOW(UNBOUNDED) | ALLOW(MAX_BALANCE) |
         ALLOW(METADATA),
     "an account ID", account_create},
    {"account get",
     "usage: coffer account get ID [--at SEQ|TIME]\n"
     "\n"
     "Shows the account: balance, available, version, held and posted totals, limits, metadata.\n"
     "  --at SEQ|TIME   the account as it was after the last change at or before a seq, or an\n"
     "                  RFC 3339 UTC time such as 2026-11-24T23:38:00Z\n",
     ALLOW_COMMON | ALLOW(AT), "an account ID", account_get},
    {"account history",
     "usage: coffer account history ID [--after SEQ] [--limit N] [--all]\n"
     "\n"
     "Lists the account's changes oldest first: seq, time, kind (posted, held, captured,\n"
     "released, expired), delta, balance and available after, version, transfer id.\n"
     "  --after SEQ   only changes after this seq (default 0)\n"
     "  --limit N     changes per page, 1-1000 (default 100)\n"
     "  --all         follow the pages to the end (with --json: one object with every entry)\n",
     ALLOW_COMMON | ALLOW(AFTER) | ALLOW(LIMIT) | ALLOW(ALL), "an account ID", account_history},
};

static const char transfer_usage[] =
    "usage: coffer transfer --from A --to B --amount N [options]\n"
    "       coffer transfer get ID\n"
    "\n"
    "Moves N minor units from account A to account B (same currency), or with --hold reserves\n"
    "them until 'coffer hold post' or 'coffer hold void' or the timeout.\n"
    "\n"
    "  --id KEY                   the transfer's id and idempotency key; without --id or --key\n"
    "                             a random id is made and shown on stderr, so that the same\n"
    "                             transfer can be retried with it\n"
    "  --key KEY                  the same, sent as the Idempotency-Key header\n"
    "  --hold TIMEOUT_MS          reserve instead of moving, for this many milliseconds\n"
    "  --expect-from-version V    apply only if account A is at version V (compare-and-set)\n"
    "  --expect-to-version W      apply only if account B is at version W\n"
    "  --up-to                    move as much of N as the limits allow (maybe 0)\n"
    "  --metadata JSON            a JSON object of at most 1 KiB, stored verbatim\n"
    "\n"
    "A retry with the same id and content answers with the first outcome, marked (replayed);\n"
    "after a refusal, use a new id to try again. 'coffer transfer get ID' shows a transfer\n"
    "(or a post or void) with its recorded outcome.\n";

static const command transfer_command = {
    "transfer", transfer_usage,
    ALLOW_COMMON | ALLOW(FROM) | ALLOW(TO) | ALLOW(AMOUNT) | ALLOW(ID) | ALLOW(KEY) | ALLOW(HOLD) |
        ALLOW(EXPECT_FROM_VERSION) | ALLOW(EXPECT_TO_VERSION) | ALLOW(UP_TO) | ALLOW(METADATA),
    NULL, transfer_create};

static const command transfer_get_command = {
    "transfer get",
    "usage: coffer transfer get ID\n"
    "\n"
    "Shows a transfer, post or void with its recorded outcome: its state (posted, pending,\n"
    "captured, voided, expired, rejected) and, for a rejection, the code it got.\n",
    ALLOW_COMMON, "a transfer ID", transfer_get};

static const char hold_usage[] =
    "usage: coffer hold post|void HOLD_ID [options]\n"
    "       coffer hold list [--account ID] [--limit N]\n"
    "\n"
    "  post HOLD_ID [--amount N] [--id KEY]   capture a pending hold, all of it or N (the\n"
    "                                         rest is released)\n"
    "  void HOLD_ID [--id KEY]                release a pending hold\n"
    "  list [--account ID] [--limit N]        pending holds, soonest expiry first\n"
    "\n"
    "Run 'coffer hold <subcommand> --help' for details.\n";

static const command hold_commands[] = {
    {"hold post",
     "usage: coffer hold post HOLD_ID [--amount N] [--id KEY | --key KEY]\n"
     "\n"
     "Captures the pending hold HOLD_ID: moves its amount, or only N of it and releases the\n"
     "rest. A post at or after the hold's expiry is refused (hold_expired).\n"
     "  --amount N   capture only N\n"
     "  --id KEY     the post's own id and idempotency key (default: a random one, shown on\n"
     "               stderr so that the same post can be retried)\n"
     "  --key KEY    the same, sent as the Idempotency-Key header\n",
     ALLOW_COMMON | ALLOW(AMOUNT) | ALLOW(ID) | ALLOW(KEY), "a HOLD_ID", hold_post},
    {"hold void",
     "usage: coffer hold void HOLD_ID [--id KEY | --key KEY]\n"
     "\n"
     "Releases the pending hold HOLD_ID; nothing moves.\n"
     "  --id KEY     the void's own id and idempotency key (default: a random one, shown on\n"
     "               stderr so that the same void can be retried)\n"
     "  --key KEY    the same, sent as the Idempotency-Key header\n",
     ALLOW_COMMON | ALLOW(ID) | ALLOW(KEY), "a HOLD_ID", hold_void},
    {"hold list",
     "usage: coffer hold list [--account ID] [--limit N]\n"
     "\n"
     "Lists holds that are still pending, soonest expiry first.\n"
     "  --account ID   only holds debiting or crediting this account\n"
     "  --limit N      at most N holds, 1-1000 (default 100)\n",
     ALLOW_COMMON | ALLOW(ACCOUNT) | ALLOW(LIMIT), NULL, hold_list},
};

static const command health_command = {
    "health",
    "usage: coffer health\n"
    "\n"
    "Asks the server whether it is ready (GET /readyz): exit 0 when it has recovered and\n"
    "accepts writes, 1 when it answers that it is not (the reason is on stderr).\n",
    ALLOW_COMMON, NULL, health};

/* Parses, connects, runs; argv[0] is the subcommand's own word. */
static int run_command(const command *cmd, int argc, char **argv)
{
    command_line line;
    int status = parse_command_line(cmd, argc, argv, &line);
    if (status != CLIENT_GO_ON)
        return status;
    client server;
    status = client_open(&server, &line);
    if (status == CLIENT_GO_ON)
        status = cmd->run(&server, &line);
    client_close(&server);
    return status;
}

/* Finds the subcommand named by argv[1] among `commands`, or explains the group. */
static int run_group(const char *group, const char *usage, const command *commands, size_t count,
                     int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("%s: which subcommand? (try 'coffer %s --help')", group, group);
    if (is_help(argv[1])) {
        fputs(usage, stdout);
        fputs(common_help, stdout);
        return 0;
    }
    size_t group_length = strlen(group);
    for (size_t i = 0; i < count; i++)
        if (!strcmp(commands[i].name + group_length + 1, argv[1]))
            return run_command(&commands[i], argc - 1, argv + 1);
    return cli_usage_error("%s: unknown subcommand '%s' (try 'coffer %s --help')", group, argv[1],
                           group);
}

int cli_account(int argc, char **argv)
{
    return run_group("account", account_usage, account_commands,
                     sizeof account_commands / sizeof *account_commands, argc, argv);
}

int cli_transfer(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "get"))
        return run_command(&transfer_get_command, argc - 1, argv + 1);
    return run_command(&transfer_command, argc, argv);
}

int cli_hold(int argc, char **argv)
{
    return run_group("hold", hold_usage, hold_commands,
                     sizeof hold_commands / sizeof *hold_commands, argc, argv);
}

int cli_health(int argc, char **argv)
{
    return run_command(&health_command, argc, argv);
}
