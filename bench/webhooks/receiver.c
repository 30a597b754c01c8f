/* A lean webhook receiver for scripts/bench-webhooks: what a receiver that keeps up with a busy
 * ledger does on its request path. It checks every POST's signature (Standard Webhooks:
 * HMAC-SHA256 over id.timestamp.body, keyed with the secret given as the only argument), counts
 * its changes (one, or a batch's range from its webhook-id evt_FIRST-LAST: the bench's webhook
 * has no filter, so every seq between is there) and answers 204 at once, leaving the body's
 * processing to later. It measures what delivery costs coffer, not what parsing costs a
 * receiver; bench/webhooks/receiver.mjs is the receiver that parses every body.
 *
 * Prints its port on the first line. GET /count answers the changes counted, GET /posts the POSTs
 * that carried them, GET /bad the POSTs refused (bad signature, malformed, or too large: 401,
 * 400, 413).
 *
 * Usage: webhook_receiver whsec_BASE64 */
#include <gnutls/crypto.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A batch of 1,000 changes is well under 4 MiB; at most 64 connections hold a body at once. */
enum { BODY_MAX = 4 << 20, CONNECTIONS_MAX = 64, SECRET_MAX = 64, SIGNATURE_TEXT = 3 + 44 };

static uint8_t secret[SECRET_MAX];
static size_t secret_length;
static atomic_uint_fast64_t changes, posts, refused;

typedef struct {
    char *bytes;
    size_t length, capacity;
    bool too_large;
} body;

static bool signature_valid(struct MHD_Connection *connection, const body *b)
{
    const char *id = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "webhook-id");
    const char *stamp =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "webhook-timestamp");
    const char *given =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "webhook-signature");
    if (id == NULL || stamp == NULL || given == NULL)
        return false;
    gnutls_hmac_hd_t hmac;
    if (gnutls_hmac_init(&hmac, GNUTLS_MAC_SHA256, secret, secret_length) < 0)
        return false;
    bool hashed = gnutls_hmac(hmac, id, strlen(id)) == 0 && gnutls_hmac(hmac, ".", 1) == 0 &&
                  gnutls_hmac(hmac, stamp, strlen(stamp)) == 0 && gnutls_hmac(hmac, ".", 1) == 0 &&
                  gnutls_hmac(hmac, b->bytes, b->length) == 0;
    uint8_t mac[32];
    gnutls_hmac_deinit(hmac, mac);
    char expected[SIGNATURE_TEXT + 1] = "v1,";
    sodium_bin2base64(expected + 3, sizeof expected - 3, mac, sizeof mac,
                      sodium_base64_VARIANT_ORIGINAL);
    /* The header may list several signatures, space separated; one match is enough. */
    for (const char *s = given; hashed && *s != '\0';) {
        size_t length = strcspn(s, " ");
        if (length == SIGNATURE_TEXT && sodium_memcmp(s, expected, SIGNATURE_TEXT) == 0)
            return true;
        s += length;
        s += strspn(s, " ");
    }
    return false;
}

/* Reads the digits at *text (at least one, at most 19: no overflow) and moves past them. */
static bool take_seq(const char **text, uint64_t *seq)
{
    size_t digits = strspn(*text, "0123456789");
    if (digits == 0 || digits > 19)
        return false;
    *seq = 0;
    for (size_t i = 0; i < digits; i++)
        *seq = *seq * 10 + (uint64_t)((*text)[i] - '0');
    *text += digits;
    return true;
}

/* The changes a delivery carries: evt_SEQ is one, evt_FIRST-LAST a batch of the range (at
 * most 1,000 changes); 0 for anything else. */
static uint64_t change_count(struct MHD_Connection *connection)
{
    const char *id = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "webhook-id");
    uint64_t first, last;
    if (id == NULL || strncmp(id, "evt_", 4) != 0)
        return 0;
    id += 4;
    if (!take_seq(&id, &first))
        return 0;
    if (*id == '\0')
        return 1;
    if (*id++ != '-' || !take_seq(&id, &last) || *id != '\0' || last < first ||
        last - first >= 1000)
        return 0;
    return last - first + 1;
}

static enum MHD_Result answer(struct MHD_Connection *connection, unsigned status, const char *text)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result handle(void *context, struct MHD_Connection *connection, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **request)
{
    (void)context, (void)version;
    if (strcmp(method, "GET") == 0) {
        char text[32];
        uint64_t value = strcmp(url, "/bad") == 0     ? atomic_load(&refused)
                         : strcmp(url, "/posts") == 0 ? atomic_load(&posts)
                                                      : atomic_load(&changes);
        snprintf(text, sizeof text, "%" PRIu64, value);
        return answer(connection, MHD_HTTP_OK, text);
    }
    body *b = *request;
    if (b == NULL) {
        if ((b = calloc(1, sizeof *b)) == NULL)
            return MHD_NO;
        *request = b;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (b->length + *upload_size > BODY_MAX) {
            b->too_large = true;
        } else {
            if (b->length + *upload_size > b->capacity) {
                size_t capacity = b->capacity ? b->capacity : 64 << 10;
                while (capacity < b->length + *upload_size)
                    capacity *= 2;
                char *grown = realloc(b->bytes, capacity);
                if (grown == NULL)
                    return MHD_NO;
                b->bytes = grown, b->capacity = capacity;
            }
            memcpy(b->bytes + b->length, upload, *upload_size);
            b->length += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    unsigned status = MHD_HTTP_NO_CONTENT;
    uint64_t count = change_count(connection);
    if (b->too_large)
        status = MHD_HTTP_CONTENT_TOO_LARGE;
    else if (count == 0)
        status = MHD_HTTP_BAD_REQUEST;
    else if (!signature_valid(connection, b))
        status = MHD_HTTP_UNAUTHORIZED;
    if (status == MHD_HTTP_NO_CONTENT) {
        atomic_fetch_add(&changes, count);
        atomic_fetch_add(&posts, 1);
    } else
        atomic_fetch_add(&refused, 1);
    return answer(connection, status, "");
}

static void completed(void *context, struct MHD_Connection *connection, void **request,
                      enum MHD_RequestTerminationCode code)
{
    (void)context, (void)connection, (void)code;
    body *b = *request;
    if (b != NULL) {
        free(b->bytes);
        free(b);
        *request = NULL;
    }
}

int main(int argc, char **argv)
{
    const char *prefix = "whsec_";
    if (argc != 2 || strncmp(argv[1], prefix, strlen(prefix)) != 0 || sodium_init() < 0 ||
        sodium_base642bin(secret, sizeof secret, argv[1] + strlen(prefix),
                          strlen(argv[1] + strlen(prefix)), NULL, &secret_length, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        fprintf(stderr, "usage: webhook_receiver whsec_BASE64 (the webhook's secret)\n");
        return 2;
    }
    /* SIGTERM and SIGINT wait for sigwait below, in no thread the daemon starts. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct MHD_Daemon *daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, handle,
                         NULL, MHD_OPTION_SOCK_ADDR, &address, MHD_OPTION_NOTIFY_COMPLETED,
                         completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTIONS_MAX, MHD_OPTION_END);
    if (daemon == NULL) {
        fprintf(stderr, "webhook_receiver: cannot listen on 127.0.0.1\n");
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL) {
        fprintf(stderr, "webhook_receiver: no port\n");
        MHD_stop_daemon(daemon);
        return 1;
    }
    printf("%u\n", info->port);
    fflush(stdout);
    int signal_number;
    sigwait(&stop, &signal_number);
    MHD_stop_daemon(daemon);
    return 0;
}
