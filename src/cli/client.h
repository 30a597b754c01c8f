/*
 * client.h — what the commands that talk to a server share: the connection (transport.c),
 * turning answers into output (render.c), and running a command (client.c). The commands
 * themselves are in account.c and transfer.c (transfers and holds).
 */
#ifndef COFFER_CLI_CLIENT_H
#define COFFER_CLI_CLIENT_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/options.h"

#define CLIENT_DEFAULT_SERVER "http://127.0.0.1:8080"
#define CLIENT_SERVER_ENV "COFFER_SERVER"
#define CLIENT_CACERT_ENV "COFFER_CACERT"
/* A history page of 1,000 entries is well under 1 MiB; 64 MiB only stops a runaway answer. */
#define CLIENT_RESPONSE_BYTES_MAX ((size_t)64 << 20)
#define CLIENT_URL_BYTES_MAX 4096
#define CLIENT_NUMBER_BYTES 32
#define CLIENT_ID_BYTES 64
/* --server may name several instances of one ledger (comma separated, or repeated). */
#define CLIENT_SERVERS_MAX 8
#define CLIENT_SERVER_BYTES_MAX (CLIENT_URL_BYTES_MAX / 2)
/* 307 redirects followed for one request: to the leader, at most this many hops. */
#define CLIENT_REDIRECTS_MAX 4

/* The options of every client command, by the id their values are kept under. */
enum client_option {
    OPTION_SERVER,
    OPTION_JSON,
    OPTION_CURRENCY,
    OPTION_MIN_BALANCE,
    OPTION_UNBOUNDED,
    OPTION_MAX_BALANCE,
    OPTION_METADATA,
    OPTION_AT,
    OPTION_AFTER,
    OPTION_LIMIT,
    OPTION_ALL,
    OPTION_FROM,
    OPTION_TO,
    OPTION_AMOUNT,
    OPTION_ID,
    OPTION_KEY,
    OPTION_HOLD,
    OPTION_EXPECT_FROM_VERSION,
    OPTION_EXPECT_TO_VERSION,
    OPTION_UP_TO,
    OPTION_ACCOUNT,
    OPTION_TOKEN,
    OPTION_FOLLOW,
    OPTION_TYPES,
};

/* --server, --token and --json, listed in every client command's spec as its `common` options. */
extern const cli_option client_common_options[];
#define CLIENT_COMMON_COUNT 3

/* client_call's answer when the command's own libcurl progress function aborted the request
 * (`coffer events --follow` on SIGINT or SIGTERM): nothing is printed. */
#define CLIENT_CALL_STOPPED (-2)

typedef struct client {
    CURL *curl;
    char server[CLIENT_SERVER_BYTES_MAX]; /* the base URL in use, no trailing '/' */
    /* Every server given, in order; requests go to `server` and move on to the next one when
     * it cannot be reached or has no leader (client_call). */
    char servers[CLIENT_SERVERS_MAX][CLIENT_SERVER_BYTES_MAX];
    size_t server_count, server_current;
    bool json;
    const char *token; /* sent as Authorization: Bearer; NULL: none */
    /* For a write: what to run to learn its outcome when the answer is lost. */
    char retry_hint[256];
    char curl_error[CURL_ERROR_SIZE];
} client;

typedef struct response {
    long status;
    char *body; /* NUL-terminated, at most CLIENT_RESPONSE_BYTES_MAX bytes */
    size_t length, capacity;
    bool too_large, out_of_memory;
    bool replayed; /* Idempotent-Replayed: true */
    char request_id[128];
    char retry_after[32];
    char location[CLIENT_URL_BYTES_MAX]; /* a redirect's Location */
    json_t *json;                        /* the body when it is a JSON object, else NULL */
} response;

/* A URL under construction; overflow is sticky and checked once before sending. */
typedef struct url_builder {
    char text[CLIENT_URL_BYTES_MAX];
    size_t length;
    size_t base_length; /* the server's part; the path and query follow */
    bool overflow, has_query;
} url_builder;

/* One client subcommand: what it parses and what it does with it. */
typedef struct client_command {
    cli_spec spec;
    int (*run)(client *server, const cli_parsed *line);
} client_command;

/* ---- transport.c -------------------------------------------------------------------------- */

/* The servers from --server (after the command, else before it), $COFFER_SERVER or the
 * default: one URL or several, comma separated; libcurl set up, trusting the CAs in `cacert` (a PEM
 * file; NULL: --cacert's default, $COFFER_CACERT, else the system's). CLI_GO_ON or an exit code.
 * client_close() in every case. */
int client_open(client *server, const char *url, const char *cacert, bool json);
void client_close(client *server);
/* Appends text; with escape, percent-encodes all but [A-Za-z0-9._~:@-]. */
void url_append(url_builder *url, const char *text, bool escape);
/* Starts a URL: the server, then `path` as is. */
void url_start(url_builder *url, const client *server, const char *path);
/* Adds "?name=value" or "&name=value" (value escaped); nothing when value is NULL. */
void url_query(url_builder *url, const char *name, const char *value);
/* Sends one request (a body makes it a POST) and reads the whole answer. CLI_GO_ON when an
 * HTTP answer arrived, of any status; CLIENT_CALL_STOPPED when the command aborted it; else
 * the exit code, with the reason printed. The caller frees the response. With several
 * servers, one that cannot be reached or answers 503 no_leader hands the request to the next
 * (the rest of the URL kept); a 307 is followed to its Location, the same body sent again (a
 * write's id makes that safe), at most CLIENT_REDIRECTS_MAX times. The server that answered
 * becomes `server` for the requests that follow. */
int client_call(client *server, const url_builder *url, const char *body,
                const char *idempotency_key, response *answer);
void response_free(response *answer);
bool response_is_success(const response *answer);

/* ---- cluster.c ---------------------------------------------------------------------------- */

/* The leader among `urls` (comma separated): asks them in order for GET /v1/cluster and takes
 * the first that leads (or is standalone), or the leader a follower names. Its URL into out;
 * CLI_GO_ON, or an exit code after saying why. */
int client_find_leader(const char *urls, const char *token, const char *cacert, char *out,
                       size_t size);

/* ---- render.c ----------------------------------------------------------------------------- */

typedef void (*body_printer)(const json_t *body, const response *answer, const void *context);

const char *text_field(const json_t *object, const char *key);
/* 10,000 and -1,500; with plus, +500 for a positive delta. */
const char *format_grouped(int64_t value, bool plus, char out[CLIENT_NUMBER_BYTES]);
/* A field as text: grouped digits (or plain), the string itself, `when_null` for null, "?"
 * when missing. */
const char *field_text(const json_t *object, const char *key, bool grouped, const char *when_null,
                       char out[CLIENT_NUMBER_BYTES]);
/* A JSON value compactly (metadata, problem fields); strings as they are. */
void print_value(FILE *out, const json_t *value);
/* "  metadata: {...}" when the object has non-empty metadata. */
void print_metadata(const json_t *object);
int flush_output(void);
/* An answer into output and the exit code: on success the printer (or with --json the
 * server's JSON as it came); else the problem on stderr (with --json its JSON on stdout). */
int client_finish(const client *server, const response *answer, body_printer print,
                  const void *context);
/* "user:1 -> shop 500 KRW (posted, seq 18)", and the like for holds, posts and voids. */
void print_transfer_summary(const json_t *transfer);
/* A write's answer: "created pay-1: user:1 -> shop 500 (posted, seq 18); user:1 balance ...". */
void print_transfer_result(const json_t *body, const response *answer, const void *context);

/* ---- client.c ----------------------------------------------------------------------------- */

/* One request from start to exit code; `body` (may be NULL) is consumed. */
int client_exchange(client *server, const url_builder *url, json_t *body,
                    const char *idempotency_key, body_printer print, const void *context);
/* Sets a string member; false (after a usage message) for text that is not UTF-8. */
bool set_text(json_t *object, const char *key, const char *value);
/* --metadata as a JSON object member; false (after a usage message) when it is not one. */
bool set_metadata(json_t *object, const cli_parsed *line);
/* The id of a write: --id or --key, or a new random one said on stderr so that the request
 * can be retried with it; `*in_header` when it goes in the Idempotency-Key header. Also sets
 * the retry hint. False after a message. */
bool pick_id(client *server, const cli_parsed *line, const char *prefix,
             char generated[CLIENT_ID_BYTES], const char **id, bool *in_header);
/* Parses, connects, runs one subcommand; argv[0] is its own word. */
int client_run(const client_command *command, int argc, char **argv, const cli_globals *globals);
/* A group (account, hold): argv[1] names the subcommand among `commands`. */
int client_run_group(const cli_spec *group, const client_command *commands, size_t count, int argc,
                     char **argv, const cli_globals *globals);

#endif
