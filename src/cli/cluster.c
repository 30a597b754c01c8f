/*
 * cluster.c — `coffer cluster status`: an instance's role, the leader, the term and what each
 * member has applied (GET /v1/cluster), and finding the leader among several servers for
 * `coffer bench --server A,B,C`.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"

static const char *text_or(const json_t *object, const char *key, const char *fallback)
{
    const char *text = text_field(object, key);
    return text ? text : fallback;
}

static void print_member(const json_t *member)
{
    char applied[CLIENT_NUMBER_BYTES];
    printf("  %-32s %-10s applied %-14s seen %s\n", text_or(member, "advertise", "?"),
           text_or(member, "role", "?"), field_text(member, "applied_seq", false, "-", applied),
           text_or(member, "seen_at", "?"));
}

static void print_cluster(const json_t *body, const response *answer, const void *context)
{
    (void)answer;
    const client *server = context;
    char applied[CLIENT_NUMBER_BYTES], term[CLIENT_NUMBER_BYTES];
    const json_t *ready = json_object_get(body, "ready");
    printf("%s: %s, %s\n", server->server, text_or(body, "role", "?"),
           json_is_true(ready) ? "ready" : "NOT ready");
    printf("  leader %s, term %s, applied seq %s\n", text_or(body, "leader", "(none known)"),
           field_text(body, "term", false, "-", term),
           field_text(body, "applied_seq", false, "-", applied));
    const json_t *members = json_object_get(body, "members");
    if (json_array_size(members) == 0) {
        printf("  members: none (a standalone instance keeps its own log)\n");
        return;
    }
    printf("  members:\n");
    size_t index;
    const json_t *member;
    json_array_foreach(members, index, member) print_member(member);
}

static int status(client *server, const cli_parsed *line)
{
    (void)line;
    url_builder url;
    url_start(&url, server, "/v1/cluster");
    return client_exchange(server, &url, NULL, NULL, print_cluster, server);
}

static const client_command cluster_commands[] = {
    {{.name = "cluster status",
      .synopsis = "[--server URL[,URL...]] [--json]",
      .description = "Shows an instance's part in the ledger (GET /v1/cluster): its role "
                     "(standalone, leader,\nfollower or candidate), whether it is ready, the "
                     "leader it knows, the term, the seq\nit has applied, and each member's "
                     "role, applied seq and when it was last seen.\nWith several servers, the "
                     "first that answers is shown.\n",
      .common = client_common_options,
      .common_count = CLIENT_COMMON_COUNT},
     status},
};

static const cli_spec cluster_group = {
    .name = "cluster",
    .synopsis = "status [options]",
    .description = "  status   an instance's role, the leader, the term and the members\n",
    .operand_name = "a subcommand: status",
    .operands_min = 1,
    .operands_max = 1,
    .epilog = "Run 'coffer cluster status --help' for its options.\n",
};

int cli_cluster(int argc, char **argv, const cli_globals *globals)
{
    return client_run_group(&cluster_group, cluster_commands,
                            sizeof cluster_commands / sizeof *cluster_commands, argc, argv,
                            globals);
}

/* The leader's URL from a GET /v1/cluster answer of `server`: the server itself when it
 * leads (or is standalone), the leader it names when it follows. */
static int leader_of(const client *server, const response *answer, char *out, size_t size)
{
    const char *role = answer->json ? text_field(answer->json, "role") : NULL;
    const char *leader = answer->json ? text_field(answer->json, "leader") : NULL;
    if (!response_is_success(answer) || !role) {
        fprintf(stderr, "coffer bench: GET %s/v1/cluster answered %ld: %.300s\n", server->server,
                answer->status, answer->body ? answer->body : "");
        return CLI_EXIT_ERROR;
    }
    if (!strcmp(role, "leader") || !strcmp(role, "standalone"))
        leader = server->server;
    if (!leader) {
        fprintf(stderr, "coffer bench: %s is a %s and knows no leader; retry in a moment\n",
                server->server, role);
        return CLI_EXIT_ERROR;
    }
    if (strlen(leader) >= size) {
        fprintf(stderr, "coffer bench: the leader's URL is too long: %.300s\n", leader);
        return CLI_EXIT_ERROR;
    }
    memcpy(out, leader, strlen(leader) + 1);
    return CLI_GO_ON;
}

int client_find_leader(const char *urls, const char *token, const char *cacert, char *out,
                       size_t size)
{
    client server;
    int status = client_open(&server, urls, cacert, false);
    server.token = token;
    response answer = {0};
    if (status == CLI_GO_ON) {
        url_builder url;
        url_start(&url, &server, "/v1/cluster");
        status = client_call(&server, &url, NULL, NULL, &answer);
    }
    if (status == CLI_GO_ON)
        status = leader_of(&server, &answer, out, size);
    response_free(&answer);
    client_close(&server);
    return status;
}
