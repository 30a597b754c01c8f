/*
 * transport.c — the client commands' HTTP: one libcurl handle per command, URLs built with
 * escaping, answers read whole (bounded), and a clear word when no answer came at all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/percent.h"
#include "cli/client.h"
#include "coffer.h"

#define CLIENT_CONNECT_TIMEOUT_MS 5000L
#define CLIENT_TOTAL_TIMEOUT_MS 30000L

/* Appends text; with escape, percent-encodes all but [A-Za-z0-9._~:@-] (so '/' in an id
 * stays inside its path segment, and '+' in a time is not read as a space). */
void url_append(url_builder *url, const char *text, bool escape)
{
    percent_append(url->text, sizeof url->text, &url->length, &url->overflow, text,
                   escape ? ":@" : NULL);
}

void url_start(url_builder *url, const client *server, const char *path)
{
    *url = (url_builder){0};
    url_append(url, server->server, false);
    url->base_length = url->length;
    url_append(url, path, false);
}

void url_query(url_builder *url, const char *name, const char *value)
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
        answer->request_id[0] = answer->retry_after[0] = answer->location[0] = 0;
    }
    char replayed[16] = "";
    header_copy(data, length, "Idempotent-Replayed", replayed, sizeof replayed);
    if (replayed[0])
        answer->replayed = !strcasecmp(replayed, "true");
    header_copy(data, length, "X-Request-Id", answer->request_id, sizeof answer->request_id);
    header_copy(data, length, "Retry-After", answer->retry_after, sizeof answer->retry_after);
    header_copy(data, length, "Location", answer->location, sizeof answer->location);
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

void response_free(response *answer)
{
    free(answer->body);
    json_decref(answer->json);
    *answer = (response){0};
}

/* Whether `url` is a base URL: http(s)://host[:port][/prefix], no query. */
static bool base_url_valid(const char *url)
{
    bool http = !strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8);
    CURLU *parsed = curl_url();
    bool valid = parsed && http && strlen(url) < CLIENT_SERVER_BYTES_MAX &&
                 !strpbrk(url, "?# \t\r\n") &&
                 curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK;
    curl_url_cleanup(parsed);
    return valid;
}

/* Checks and keeps the servers' base URLs, comma separated, each without its trailing '/'. */
static int client_set_servers(client *server, const char *urls)
{
    server->server_count = server->server_current = 0;
    for (const char *at = urls;;) {
        size_t length = strcspn(at, ",");
        char url[CLIENT_SERVER_BYTES_MAX];
        if (length >= sizeof url)
            return cli_usage_error("--server: a URL longer than %d bytes",
                                   CLIENT_SERVER_BYTES_MAX - 1);
        memcpy(url, at, length);
        url[length] = 0;
        if (!base_url_valid(url))
            return cli_usage_error("--server needs an http:// or https:// URL, not '%s'", url);
        if (server->server_count == CLIENT_SERVERS_MAX)
            return cli_usage_error("--server: at most %d servers", CLIENT_SERVERS_MAX);
        while (length && url[length - 1] == '/')
            url[--length] = 0;
        memcpy(server->servers[server->server_count++], url, length + 1);
        if (!at[length])
            break;
        at += length + 1;
    }
    memcpy(server->server, server->servers[0], sizeof server->server);
    return CLI_GO_ON;
}

/* The CA file for https://: checked now, so that a wrong path is a usage error rather than a
 * failed connection. */
static int client_set_cacert(client *server, const char *cacert)
{
    if (!cacert)
        cacert = getenv(CLIENT_CACERT_ENV);
    if (!cacert || !*cacert)
        return CLI_GO_ON;
    if (access(cacert, R_OK) != 0)
        return cli_usage_error("--cacert %s: %s", cacert, strerror(errno));
    curl_easy_setopt(server->curl, CURLOPT_CAINFO, cacert);
    return CLI_GO_ON;
}

int client_open(client *server, const char *url, const char *cacert, bool json)
{
    *server = (client){0};
    if (!url)
        url = getenv(CLIENT_SERVER_ENV);
    if (!url || !*url)
        url = CLIENT_DEFAULT_SERVER;
    server->json = json;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(server->curl = curl_easy_init())) {
        fprintf(stderr, "coffer: cannot start libcurl\n");
        return CLI_EXIT_ERROR;
    }
    int status = client_set_servers(server, url);
    if (status == CLI_GO_ON)
        status = client_set_cacert(server, cacert);
    if (status != CLI_GO_ON)
        return status;
    CURL *curl = server->curl;
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, CLIENT_TOTAL_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    char user_agent[64];
    snprintf(user_agent, sizeof user_agent, "coffer/%s", coffer_version());
    curl_easy_setopt(curl, CURLOPT_USERAGENT, user_agent);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, server->curl_error);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CLIENT_RESPONSE_BYTES_MAX);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    return CLI_GO_ON;
}

void client_close(client *server)
{
    if (server->curl) {
        curl_easy_cleanup(server->curl);
        curl_global_cleanup();
    }
    server->curl = NULL;
}

/* No answer at all: say which server, and for a write that went out, how to learn its fate. */
static int report_transport_error(client *server, const char *target, CURLcode result,
                                  const response *answer)
{
    if (answer->too_large || result == CURLE_FILESIZE_EXCEEDED) {
        fprintf(stderr, "error: the answer from %s is larger than %zu MiB\n", target,
                CLIENT_RESPONSE_BYTES_MAX >> 20);
        return CLI_EXIT_ERROR;
    }
    if (answer->out_of_memory) {
        fprintf(stderr, "error: out of memory reading the answer from %s\n", target);
        return CLI_EXIT_ERROR;
    }
    const char *why = server->curl_error[0] ? server->curl_error : curl_easy_strerror(result);
    long sent_bytes = 0;
    curl_easy_getinfo(server->curl, CURLINFO_REQUEST_SIZE, &sent_bytes);
    fprintf(stderr, "coffer: cannot reach the server at %s: %s\n", server->server, why);
    if (result == CURLE_PEER_FAILED_VERIFICATION || result == CURLE_SSL_CACERT_BADFILE)
        fprintf(stderr, "coffer: the server's certificate is not trusted: name its CA (or the "
                        "certificate itself) with --cacert FILE or " CLIENT_CACERT_ENV ".\n");
    else if (sent_bytes > 0 && server->retry_hint[0])
        fprintf(stderr,
                "coffer: the request was sent but not answered, so it may or may not "
                "have been applied; %s\n",
                server->retry_hint);
    else if (sent_bytes == 0)
        fprintf(stderr, "coffer: is 'coffer serve' running there? Name another server with "
                        "--server URL or " CLIENT_SERVER_ENV ".\n");
    return CLI_EXIT_UNREACHABLE;
}

/* One exchange with `target`: libcurl's result, the answer in *answer. */
static CURLcode perform(client *server, const char *target, const char *body,
                        const char *idempotency_key, response *answer)
{
    *answer = (response){0};
    char key_header[512], authorization[128];
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    if (headers && body) {
        curl_slist_append(headers, "Content-Type: application/json");
        curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    }
    if (headers && idempotency_key) {
        snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", idempotency_key);
        curl_slist_append(headers, key_header);
    }
    if (headers && server->token && *server->token) {
        snprintf(authorization, sizeof authorization, "Authorization: Bearer %s", server->token);
        curl_slist_append(headers, authorization);
    }
    CURL *curl = server->curl;
    server->curl_error[0] = 0;
    curl_easy_setopt(curl, CURLOPT_URL, target);
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
        return result;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer->status);
    if (answer->length) {
        answer->json = json_loadb(answer->body, answer->length, 0, NULL);
        if (answer->json && !json_is_object(answer->json)) {
            json_decref(answer->json);
            answer->json = NULL;
        }
    }
    return CURLE_OK;
}

/* 503 no_leader: this instance knows no leader, another may. */
static bool answer_no_leader(const response *answer)
{
    const json_t *code = answer->json ? json_object_get(answer->json, "code") : NULL;
    return answer->status == 503 && json_is_string(code) &&
           !strcmp(json_string_value(code), "no_leader");
}

/* Moves `server` to the next server not tried yet, `target` to the same path and query on
 * it. False when every one has been tried. */
static bool next_server(client *server, size_t *tried, const char *path, char *target, size_t size)
{
    if (++*tried >= server->server_count)
        return false;
    server->server_current = (server->server_current + 1) % server->server_count;
    memcpy(server->server, server->servers[server->server_current], sizeof server->server);
    int length = snprintf(target, size, "%s%s", server->server, path);
    return length > 0 && (size_t)length < size;
}

/* A 307's Location to follow: an http(s) URL that fits. The leader's base URL (the Location
 * without the path and query sent) becomes `server` when it ends with them. */
static bool take_location(client *server, const char *path, const response *answer, char *target,
                          size_t size)
{
    const char *location = answer->location;
    size_t length = strlen(location), path_length = strlen(path);
    bool http = !strncasecmp(location, "http://", 7) || !strncasecmp(location, "https://", 8);
    if (answer->status != 307 || !http || length >= size)
        return false;
    memcpy(target, location, length + 1);
    if (length > path_length && length - path_length < sizeof server->server &&
        !strcmp(location + length - path_length, path)) {
        memcpy(server->server, location, length - path_length);
        server->server[length - path_length] = 0;
    }
    return true;
}

int client_call(client *server, const url_builder *url, const char *body,
                const char *idempotency_key, response *answer)
{
    *answer = (response){0};
    if (url->overflow) {
        fprintf(stderr, "coffer: the request URL would be longer than %d bytes\n",
                CLIENT_URL_BYTES_MAX);
        return CLI_EXIT_USAGE;
    }
    const char *path = url->text + url->base_length;
    char target[CLIENT_URL_BYTES_MAX];
    memcpy(target, url->text, url->length + 1);
    size_t tried = 0;
    for (int hops = 0;;) {
        CURLcode result = perform(server, target, body, idempotency_key, answer);
        if (result == CURLE_ABORTED_BY_CALLBACK)
            return CLIENT_CALL_STOPPED;
        bool unreachable = result != CURLE_OK && !answer->too_large && !answer->out_of_memory &&
                           result != CURLE_FILESIZE_EXCEEDED;
        bool leaderless = result == CURLE_OK && answer_no_leader(answer);
        if ((unreachable || leaderless) && tried + 1 < server->server_count) {
            fprintf(stderr, "coffer: %s %s; trying the next server\n", server->server,
                    unreachable ? "cannot be reached" : "knows no leader");
            response_free(answer);
            if (!next_server(server, &tried, path, target, sizeof target))
                return CLI_EXIT_USAGE; /* the URL does not fit: cannot happen, bases are short */
            continue;
        }
        if (result != CURLE_OK)
            return report_transport_error(server, target, result, answer);
        if (hops < CLIENT_REDIRECTS_MAX &&
            take_location(server, path, answer, target, sizeof target)) {
            hops++; /* to the leader, with the same body */
            response_free(answer);
            continue;
        }
        return CLI_GO_ON;
    }
}

bool response_is_success(const response *answer)
{
    return answer->status >= 200 && answer->status < 300;
}
