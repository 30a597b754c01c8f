/*
 * webhooks_delivery.c — one thread per webhook: it reads the feed after the webhook's cursor
 * with its own reader and filter, POSTs each change (libcurl, one kept-alive handle) signed as
 * Standard Webhooks says, and moves the cursor only on a 2xx. Failures are retried after a
 * jittered, doubling delay; past the bound the webhook is marked failing until enabled again.
 * Nothing here touches the writer: a dead receiver costs only its own thread.
 */
#define _GNU_SOURCE /* gettid, pthread_setname_np */
#include "server/webhooks.h"

#include <curl/curl.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "server/feed_http.h"

/* Changes read per feed call: the memory a webhook holds, whatever its lag (a batch webhook
 * reads this rounded up to whole batches: its batch size at a time when that is larger). */
#define WEBHOOK_PAGE 16

static uint64_t wall_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* ---- the pure parts ------------------------------------------------------------------------ */

bool webhook_sign(const uint8_t *secret, size_t secret_length, const char *id, uint64_t timestamp_s,
                  const char *body, size_t body_length, char out[WEBHOOK_SIGNATURE_MAX])
{
    char stamp[24];
    int stamp_length = snprintf(stamp, sizeof stamp, "%llu", (unsigned long long)timestamp_s);
    /* GnuTLS's HMAC (nettle: SHA-NI where the CPU has it) rather than libsodium's portable
     * SHA-256: 1.7 GB/s against 0.25 GB/s here, and a batch's body is hashed whole. */
    gnutls_hmac_hd_t hmac;
    if (gnutls_hmac_init(&hmac, GNUTLS_MAC_SHA256, secret, secret_length) < 0)
        return false;
    const struct {
        const void *bytes;
        size_t length;
    } parts[] = {
        {id, strlen(id)}, {".", 1}, {stamp, (size_t)stamp_length}, {".", 1}, {body, body_length}};
    bool hashed = true;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0] && hashed; i++)
        hashed = gnutls_hmac(hmac, parts[i].bytes, parts[i].length) == 0;
    uint8_t mac[32];
    gnutls_hmac_deinit(hmac, mac);
    if (hashed) {
        memcpy(out, "v1,", 3);
        sodium_bin2base64(out + 3, WEBHOOK_SIGNATURE_MAX - 3, mac, sizeof mac,
                          sodium_base64_VARIANT_ORIGINAL);
    }
    sodium_memzero(mac, sizeof mac);
    return hashed;
}

uint64_t webhook_backoff_bound_ms(const webhooks_options *options, uint64_t failures)
{
    uint64_t bound = options->backoff_first_ms;
    for (uint64_t i = 1; i < failures && bound < options->backoff_max_ms; i++)
        bound *= 2;
    return bound < options->backoff_max_ms ? bound : options->backoff_max_ms;
}

uint64_t webhook_backoff_ms(const webhooks_options *options, uint64_t failures)
{
    uint64_t bound = webhook_backoff_bound_ms(options, failures);
    if (bound >= UINT32_MAX)
        bound = UINT32_MAX - 1;
    return randombytes_uniform((uint32_t)bound + 1);
}

/* {"type", "timestamp", "data": the change}: the type's name and a time need no escaping, and
 * the change is written as the feed writes it (without a tree when it can be). */
static void append_change(text_buffer *t, const coffer_change *change)
{
    char timestamp[48];
    encode_time(timestamp, sizeof timestamp, change->timestamp);
    const char *type = coffer_change_type_name(change->type);
    /* Appended piece by piece: text_printf here was a tenth of the delivery thread's time. */
    TEXT_PUT(t, "{\"type\":\"");
    text_append(t, type, strlen(type));
    TEXT_PUT(t, "\",\"timestamp\":\"");
    text_append(t, timestamp, strlen(timestamp));
    TEXT_PUT(t, "\",\"data\":");
    encode_change_text(t, change);
    text_append(t, "}", 1);
}

static char *finish(text_buffer *t, size_t *length)
{
    if (t->failed) {
        free(t->bytes);
        *length = 0;
        return 0;
    }
    *length = t->length;
    return t->bytes;
}

char *webhook_body(const coffer_change *change, size_t *length)
{
    text_buffer t = {0};
    append_change(&t, change);
    return finish(&t, length);
}

char *webhook_batch_body(const coffer_change *changes, size_t count, size_t *length)
{
    char timestamp[48];
    encode_time(timestamp, sizeof timestamp, changes[count - 1].timestamp);
    text_buffer t = {0};
    text_printf(&t,
                "{\"type\":\"batch\",\"timestamp\":\"%s\",\"data\":{\"first_seq\":%llu,"
                "\"last_seq\":%llu,\"changes\":[",
                timestamp, (unsigned long long)changes[0].seq,
                (unsigned long long)changes[count - 1].seq);
    for (size_t i = 0; i < count; i++) {
        if (i)
            text_append(&t, ",", 1);
        append_change(&t, &changes[i]);
    }
    text_append(&t, "]}}", 3);
    return finish(&t, length);
}

void webhook_delivery_id(const webhook_config *config, uint64_t first_seq, uint64_t last_seq,
                         char out[48])
{
    if (config->batch > 1)
        snprintf(out, 48, "evt_%llu-%llu", (unsigned long long)first_seq,
                 (unsigned long long)last_seq);
    else
        snprintf(out, 48, "evt_%llu", (unsigned long long)first_seq);
}

/* ---- waiting ------------------------------------------------------------------------------- */

static bool stopped(webhook *hook)
{
    return atomic_load(&hook->stop);
}

/* Sleeps up to `delay_ms`, less when the webhook is stopped or enabled. The lock held. */
static void wait_locked(webhook *hook, uint64_t delay_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until); /* the clock hook->wake was made with */
    uint64_t ns = (uint64_t)until.tv_nsec + (delay_ms % 1000) * 1000000ULL;
    until.tv_sec += (time_t)(delay_ms / 1000 + ns / 1000000000ULL);
    until.tv_nsec = (long)(ns % 1000000000ULL);
    if (!stopped(hook))
        pthread_cond_timedwait(&hook->wake, &hook->owner->lock, &until);
}

static void wait_for(webhook *hook, uint64_t delay_ms)
{
    pthread_mutex_lock(&hook->owner->lock);
    wait_locked(hook, delay_ms);
    pthread_mutex_unlock(&hook->owner->lock);
}

/* Blocks while the webhook is failing (until POST .../enable). False once it is stopped. */
static bool wait_until_active(webhook *hook)
{
    pthread_mutex_lock(&hook->owner->lock);
    while (hook->failing && !stopped(hook))
        pthread_cond_wait(&hook->wake, &hook->owner->lock);
    pthread_mutex_unlock(&hook->owner->lock);
    return !stopped(hook);
}

/* ---- one exchange -------------------------------------------------------------------------- */

/* curl calls this during an exchange (about once a second when nothing moves): a stop aborts
 * it, so that shutdown does not wait for a receiver's timeout. */
static int check_stop(void *context, curl_off_t download_total, curl_off_t downloaded,
                      curl_off_t upload_total, curl_off_t uploaded)
{
    (void)download_total, (void)downloaded, (void)upload_total, (void)uploaded;
    return stopped(context) ? 1 : 0;
}

/* The receiver's answer is not read: only its status counts. */
static size_t discard(char *bytes, size_t size, size_t count, void *context)
{
    (void)bytes, (void)context;
    return size * count;
}

static CURL *client_new(webhook *hook)
{
    const webhooks_options *options = &hook->owner->options;
    CURL *curl = curl_easy_init();
    if (!curl)
        return 0;
    curl_easy_setopt(curl, CURLOPT_URL, hook->config.url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)options->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)options->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, options->user_agent);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, check_stop);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, hook);
    return curl;
}

/* One POST of `body`, the changes first_seq..last_seq: the HTTP status, or 0 with the reason
 * in `error`. */
static long post(CURL *curl, webhook *hook, uint64_t first_seq, uint64_t last_seq, const char *body,
                 size_t length, char *error, size_t error_size)
{
    char id[48], stamp[48], signature[WEBHOOK_SIGNATURE_MAX], header[96];
    uint64_t timestamp_s = (uint64_t)time(0);
    webhook_delivery_id(&hook->config, first_seq, last_seq, id);
    if (!webhook_sign(hook->config.secret, hook->config.secret_length, id, timestamp_s, body,
                      length, signature)) {
        snprintf(error, error_size, "the body could not be signed (GnuTLS's HMAC-SHA256 failed)");
        return 0;
    }
    struct curl_slist *headers = curl_slist_append(0, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    snprintf(header, sizeof header, "webhook-id: %s", id);
    headers = curl_slist_append(headers, header);
    snprintf(stamp, sizeof stamp, "webhook-timestamp: %llu", (unsigned long long)timestamp_s);
    headers = curl_slist_append(headers, stamp);
    snprintf(header, sizeof header, "webhook-signature: %s", signature);
    headers = curl_slist_append(headers, header);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)length);
    CURLcode code = headers ? curl_easy_perform(curl) : CURLE_OUT_OF_MEMORY;
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, (struct curl_slist *)0);
    curl_slist_free_all(headers);
    long status = 0;
    if (code == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(error, error_size, "%s", curl_easy_strerror(code));
    if (code == CURLE_OK && (status < 200 || status > 299))
        snprintf(error, error_size, "HTTP %ld%s", status,
                 status >= 300 && status < 400 ? " (redirects are not followed)" : "");
    return status;
}

/* Records an attempt's outcome for `count` changes up to `seq`. True when delivered; else sets
 * the delay before the next attempt (0 when the webhook has just been marked failing). */
static bool record(webhook *hook, long status, const char *error, uint64_t seq, size_t count,
                   uint64_t *delay_ms)
{
    webhooks *hooks = hook->owner;
    bool delivered = status >= 200 && status <= 299;
    pthread_mutex_lock(&hooks->lock);
    hook->last_attempt_ns = wall_ns();
    hook->next_attempt_ns = 0;
    *delay_ms = 0;
    if (delivered) {
        hook->deliveries += count;
        hook->failures = 0;
        hook->cursor = seq;
        hooks->dirty = true;
    } else {
        hook->failures++;
        hook->failures_total++;
        snprintf(hook->last_error, sizeof hook->last_error, "%s", error);
        if (hook->failures >= hooks->options.max_failures) {
            hook->failing = true;
            hooks->dirty = true;
        } else {
            *delay_ms = webhook_backoff_ms(&hooks->options, hook->failures);
            hook->next_attempt_ns = hook->last_attempt_ns + *delay_ms * 1000000ULL;
        }
    }
    pthread_mutex_unlock(&hooks->lock);
    return delivered;
}

static void set_pending(webhook *hook, uint64_t timestamp_ns)
{
    pthread_mutex_lock(&hook->owner->lock);
    hook->pending_timestamp_ns = timestamp_ns;
    pthread_mutex_unlock(&hook->owner->lock);
}

/* Delivers changes[0..count) in one POST (count is 1 unless the webhook asks for batches),
 * retrying the same body until a 2xx. False when the webhook is stopped first. */
static bool deliver(CURL *curl, webhook *hook, const coffer_change *changes, size_t count)
{
    size_t length = 0;
    char *body = hook->config.batch > 1 ? webhook_batch_body(changes, count, &length)
                                        : webhook_body(changes, &length);
    char error[WEBHOOK_ERROR_MAX];
    uint64_t first_seq = changes[0].seq, last_seq = changes[count - 1].seq;
    bool delivered = false;
    set_pending(hook, changes[0].timestamp);
    while (!delivered && wait_until_active(hook)) {
        long status =
            body ? post(curl, hook, first_seq, last_seq, body, length, error, sizeof error) : 0;
        if (!body)
            snprintf(error, sizeof error, "out of memory");
        if (stopped(hook))
            break; /* an aborted exchange is no failure of the receiver's */
        uint64_t delay_ms;
        delivered = record(hook, status, error, last_seq, count, &delay_ms);
        if (delay_ms)
            wait_for(hook, delay_ms);
        else if (!delivered)
            webhooks_save_progress(hook->owner, 0); /* failing: the state survives a restart */
    }
    set_pending(hook, 0);
    free(body);
    return delivered;
}

/* ---- the thread ---------------------------------------------------------------------------- */

static void note_error(webhook *hook, const char *what, int code)
{
    pthread_mutex_lock(&hook->owner->lock);
    snprintf(hook->last_error, sizeof hook->last_error, "%s (%s)", what, coffer_code_name(code));
    pthread_mutex_unlock(&hook->owner->lock);
}

/* Moves the cursor over changes the filter passed by (never back). */
static void pass_over(webhook *hook, uint64_t next_after)
{
    pthread_mutex_lock(&hook->owner->lock);
    if (next_after > hook->cursor) {
        hook->cursor = next_after;
        hook->owner->dirty = true;
    }
    pthread_mutex_unlock(&hook->owner->lock);
}

static void run(webhook *hook, coffer_feed *feed, CURL *curl, coffer_change *page, size_t page_size)
{
    webhooks *hooks = hook->owner;
    const coffer_feed_filter filter = {hook->config.types,
                                       hook->config.account[0] ? hook->config.account : 0};
    pthread_mutex_lock(&hooks->lock);
    uint64_t cursor = hook->cursor;
    pthread_mutex_unlock(&hooks->lock);
    while (!stopped(hook)) {
        size_t count = 0, delivered = 0;
        uint64_t next_after = cursor, durable = coffer_durable_seq(hooks->db);
        int code = coffer_feed_read(feed, cursor, &filter, page, page_size, &count, &next_after);
        if (code != COFFER_OK) {
            note_error(hook, "the change feed cannot be read", code);
            wait_for(hook, hooks->options.feed_wait_ms);
            continue;
        }
        size_t batch = hook->config.batch > 1 ? hook->config.batch : 1;
        while (delivered < count) {
            size_t group = count - delivered < batch ? count - delivered : batch;
            if (!deliver(curl, hook, &page[delivered], group))
                break;
            delivered += group;
        }
        if (delivered < count)
            break; /* stopped */
        pass_over(hook, next_after);
        bool caught_up = next_after == cursor;
        cursor = next_after;
        /* The cursor is written at most every save_every_ms while changes come. A webhook that
         * keeps up with the writer is caught up after each of the log's rounds, and a write
         * (two fsyncs) per round competed with the log's own fsync on the same disk. Once a
         * whole wait brings nothing new, it is written at once. */
        webhooks_save_progress(hooks, hooks->options.save_every_ms);
        /* Sent everything that was durable when the read began: the webhook has caught up. With
         * batch_wait_ms, the changes that come meanwhile go out together in the next POST,
         * rather than a POST per log round (each costs both sides a whole HTTP exchange). A
         * webhook still behind (a full page short of the durable seq, or a filtered one whose
         * read stopped at its scan bound) never waits. */
        if (hook->config.batch_wait_ms > 0 && count > 0 && next_after >= durable)
            wait_for(hook, hook->config.batch_wait_ms);
        if (caught_up && coffer_feed_wait(hooks->db, cursor, hooks->options.feed_wait_ms) <= cursor)
            webhooks_save_progress(hooks, 0);
    }
}

static void *thread_main(void *argument)
{
    webhook *hook = argument;
    webhooks *hooks = hook->owner;
    pthread_setname_np(pthread_self(), "coffer-webhook"); /* as ps, top and perf show it */
    /* Delivery yields to the writer: a webhook may lag during a burst, never slow it. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), FEED_NICE);
    coffer_feed *feed = 0;
    CURL *curl = 0;
    /* A whole number of batches per page, so that a backlog goes out in full batches. */
    size_t batch = hook->config.batch > 1 ? hook->config.batch : 1;
    size_t page_size = (WEBHOOK_PAGE + batch - 1) / batch * batch;
    coffer_change *page = calloc(page_size, sizeof *page);
    int code = page ? coffer_feed_open(hooks->db, &feed) : COFFER_OUT_OF_MEMORY;
    if (code == COFFER_OK && !(curl = client_new(hook)))
        code = COFFER_OUT_OF_MEMORY;
    if (code == COFFER_OK)
        run(hook, feed, curl, page, page_size);
    else
        note_error(hook, "delivery cannot start", code);
    if (curl)
        curl_easy_cleanup(curl);
    if (feed)
        coffer_feed_close(feed);
    free(page);
    pthread_mutex_lock(&hooks->lock);
    hook->thread_running = false;
    bool retired = hook->retired;
    hooks->threads_running--;
    pthread_cond_broadcast(&hooks->threads_done);
    pthread_mutex_unlock(&hooks->lock);
    if (retired) /* deleted: nobody else holds it */
        webhook_free(hook);
    return 0;
}

bool webhook_thread_start(webhook *hook)
{
    if (hook->thread_running)
        return true;
    pthread_attr_t attributes;
    pthread_t thread;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    hook->thread_running = true;
    hook->owner->threads_running++;
    int error = pthread_create(&thread, &attributes, thread_main, hook);
    pthread_attr_destroy(&attributes);
    if (error) {
        hook->thread_running = false;
        hook->owner->threads_running--;
        snprintf(hook->last_error, sizeof hook->last_error, "no delivery thread: %s",
                 strerror(error));
    }
    return error == 0;
}
