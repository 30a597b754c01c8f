/*
 * client.c — running the commands that talk to a server (docs/api.md): parse with the shared
 * parser, connect, build the request, print the answer. Human text by default, the server's
 * own JSON with --json. Exit 0 ok, 1 refused, 2 bad usage, 3 no server. The commands are in
 * account.c and transfer.c; `coffer health` is here.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cli/client.h"

const cli_option client_common_options[CLIENT_COMMON_COUNT] = {
    {OPTION_SERVER, "--server", "URL",
     "the server (default: $" CLIENT_SERVER_ENV ", else " CLIENT_DEFAULT_SERVER ");\n"
     "several instances: comma separated or repeated, tried in order",
     true},
    {OPTION_TOKEN, "--token", "TOKEN", "the bearer token to send (default: $COFFER_TOKEN)"},
    {OPTION_JSON, "--json", NULL, "print the server's JSON instead of text"},
};

static const char exit_status_help[] =
    "Exit status: 0 success, 1 the server refused (the error is on stderr), 2 bad usage,\n"
    "3 the server could not be reached or did not answer.\n";

int client_exchange(client *server, const url_builder *url, json_t *body,
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
    if (status == CLI_GO_ON)
        status = client_finish(server, &answer, print, context);
    response_free(&answer);
    return status;
}

bool set_text(json_t *object, const char *key, const char *value)
{
    json_t *text = json_string(value);
    if (text && json_object_set_new(object, key, text) == 0)
        return true;
    cli_usage_error("%s is not valid UTF-8", key);
    return false;
}

bool set_metadata(json_t *object, const cli_parsed *line)
{
    const char *text = line->values[OPTION_METADATA];
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

/* What to tell the user when a write's outcome is unknown: the same id learns it. */
static void set_retry_hint(client *server, const char *id, bool in_header)
{
    snprintf(server->retry_hint, sizeof server->retry_hint,
             "run the same command with %s %s to learn its outcome", in_header ? "--key" : "--id",
             id);
}

static bool id_is_printable(const char *id)
{
    for (const char *c = id; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            return false;
    return true;
}

bool pick_id(client *server, const cli_parsed *line, const char *prefix,
             char generated[CLIENT_ID_BYTES], const char **id, bool *in_header)
{
    *in_header = line->values[OPTION_KEY] != NULL;
    *id = *in_header ? line->values[OPTION_KEY] : line->values[OPTION_ID];
    if (line->values[OPTION_ID] && line->values[OPTION_KEY]) {
        cli_usage_error("give the id with --id or with --key, not both");
        return false;
    }
    if (*id && !id_is_printable(*id)) {
        cli_usage_error("an id is printable ASCII ([A-Za-z0-9._:@/-])");
        return false;
    }
    if (*id && !**id) {
        cli_usage_error("an id cannot be empty");
        return false;
    }
    if (!*id) {
        unsigned char random[16];
        if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
            fprintf(stderr, "coffer: cannot read random bytes for an id; give one with --id\n");
            return false;
        }
        int at = snprintf(generated, CLIENT_ID_BYTES, "%s", prefix);
        for (size_t i = 0; i < sizeof random; i++)
            at += snprintf(generated + at, CLIENT_ID_BYTES - (size_t)at, "%02x", random[i]);
        *id = generated;
        fprintf(stderr, "coffer: id %s (generated; to retry this request, pass --id %s)\n", *id,
                *id);
    }
    set_retry_hint(server, *id, *in_header);
    return true;
}

int client_run(const client_command *command, int argc, char **argv, const cli_globals *globals)
{
    cli_parsed line;
    int status = cli_parse(&command->spec, argc, argv, &line);
    if (status == 0)
        fputs(exit_status_help, stdout);
    if (status != CLI_GO_ON)
        return status;
    /* The same flag after the command wins over the one before it. */
    const char *url = line.values[OPTION_SERVER] ? line.values[OPTION_SERVER] : globals->server;
    client server;
    status = client_open(&server, url, globals->cacert, line.values[OPTION_JSON] || globals->json);
    server.token = line.values[OPTION_TOKEN] ? line.values[OPTION_TOKEN]
                   : globals->token          ? globals->token
                                             : getenv("COFFER_TOKEN");
    if (status == CLI_GO_ON)
        status = command->run(&server, &line);
    client_close(&server);
    return status;
}

int client_run_group(const cli_spec *group, const client_command *commands, size_t count, int argc,
                     char **argv, const cli_globals *globals)
{
    cli_parsed parsed;
    int status = cli_parse(group, argc < 2 ? argc : 2, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    size_t group_length = strlen(group->name);
    for (size_t i = 0; i < count; i++)
        if (!strcmp(commands[i].spec.name + group_length + 1, argv[1]))
            return client_run(&commands[i], argc - 1, argv + 1, globals);
    return cli_usage_error("%s: unknown subcommand '%s' (try 'coffer %s --help')", group->name,
                           argv[1], group->name);
}

/* ---- coffer health ------------------------------------------------------------------------ */

static void print_health(const json_t *body, const response *answer, const void *context)
{
    (void)answer;
    const client *server = context;
    printf("%s: %s\n", server->server,
           text_field(body, "status") ? text_field(body, "status") : "ready");
}

static int health(client *server, const cli_parsed *line)
{
    (void)line;
    url_builder url;
    url_start(&url, server, "/readyz");
    return client_exchange(server, &url, NULL, NULL, print_health, server);
}

static const client_command health_command = {
    {.name = "health",
     .synopsis = "[--server URL] [--json]",
     .description = "Asks the server whether it is ready (GET /readyz): exit 0 when it has "
                    "recovered and\naccepts writes, 1 when it answers that it is not (the "
                    "reason is on stderr).\n",
     .common = client_common_options,
     .common_count = CLIENT_COMMON_COUNT},
    health,
};

int cli_health(int argc, char **argv, const cli_globals *globals)
{
    return client_run(&health_command, argc, argv, globals);
}
