/*
 * webhooks.c — the registry of webhooks (at most WEBHOOKS_MAX, each with its delivery thread)
 * and the answers of /v1/webhooks: create (idempotent on the id), list, get, delete, enable.
 * Every change to the registry is written to DATA_DIR/webhooks.json before it is answered.
 */
#include "server/webhooks.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/decode.h"

void webhooks_options_init(webhooks_options *options)
{
    *options = (webhooks_options){
        .timeout_ms = 10000,
        .max_failures = 10,
        .backoff_first_ms = 500,
        .backoff_max_ms = 60000,
        .save_every_ms = 100,
        .feed_wait_ms = 500,
        .user_agent = "coffer/" COFFER_VERSION_STRING,
    };
}

static uint64_t wall_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* ---- checking a webhook -------------------------------------------------------------------- */

/* The rule of account ids: 1 to 64 bytes of [A-Za-z0-9._:@/-]. */
static bool id_valid(const char *id)
{
    size_t length = strlen(id);
    if (length == 0 || length > COFFER_ACCOUNT_ID_MAX)
        return false;
    for (size_t i = 0; i < length; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/-", id[i]))
            return false;
    return true;
}

static bool url_valid(const char *url)
{
    size_t length = strlen(url);
    bool scheme = !strncmp(url, "http://", 7) || !strncmp(url, "https://", 8);
    for (size_t i = 0; scheme && i < length; i++)
        scheme = url[i] > ' ' && url[i] < 127;
    return scheme && length <= WEBHOOK_URL_MAX && length > strlen("https://") - 1;
}

bool webhook_secret_parse(const char *text, uint8_t *secret, size_t *length)
{
    size_t prefix = strlen(WEBHOOK_SECRET_PREFIX);
    if (strncmp(text, WEBHOOK_SECRET_PREFIX, prefix) != 0 || strlen(text) > WEBHOOK_SECRET_TEXT_MAX)
        return false;
    const char *end = 0;
    const char *base64 = text + prefix;
    if (sodium_base642bin(secret, WEBHOOK_SECRET_BYTES_MAX, base64, strlen(base64), 0, length, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return false;
    return *end == 0 && *length >= WEBHOOK_SECRET_BYTES_MIN && *length <= WEBHOOK_SECRET_BYTES_MAX;
}

void webhook_secret_format(const uint8_t *secret, size_t length,
                           char out[WEBHOOK_SECRET_TEXT_MAX + 1])
{
    size_t prefix = strlen(WEBHOOK_SECRET_PREFIX);
    memcpy(out, WEBHOOK_SECRET_PREFIX, prefix);
    sodium_bin2base64(out + prefix, WEBHOOK_SECRET_TEXT_MAX + 1 - prefix, secret, length,
                      sodium_base64_VARIANT_ORIGINAL);
}

json_t *webhook_types_json(uint32_t types)
{
    json_t *names = json_array();
    for (int type = 1; type < COFFER_CHANGE_TYPE_LIMIT; type++)
        if (types & COFFER_CHANGE_BIT(type))
            json_array_append_new(names, json_string(coffer_change_type_name(type)));
    return names;
}

static int refuse(const char **field, const char **detail, const char *which, const char *why)
{
    *field = which;
    *detail = why;
    return COFFER_INVALID_FIELD;
}

/* A string member copied into out (at most size - 1 bytes); absent leaves out untouched. */
static int take_text(json_t *object, const char *key, char *out, size_t size, bool required,
                     const char **field, const char **detail)
{
    json_t *value = json_object_get(object, key);
    static _Thread_local char pointer[32];
    snprintf(pointer, sizeof pointer, "/%s", key);
    if (!value || (json_is_null(value) && !required)) /* null: as absent, as GET shows it */
        return required ? refuse(field, detail, pointer, "required") : COFFER_OK;
    if (!json_is_string(value) || strlen(json_string_value(value)) != json_string_length(value))
        return refuse(field, detail, pointer, "must be a string without NUL");
    if (json_string_length(value) >= size)
        return refuse(field, detail, pointer, "too long");
    memcpy(out, json_string_value(value), json_string_length(value) + 1);
    return COFFER_OK;
}

static int decode_types(json_t *object, webhook_config *config, const char **field,
                        const char **detail)
{
    json_t *list = json_object_get(object, "types"), *name;
    size_t index;
    config->types = COFFER_CHANGE_DEFAULT_TYPES;
    if (!list)
        return COFFER_OK;
    if (!json_is_array(list) || json_array_size(list) == 0)
        return refuse(field, detail, "/types", "a non-empty list of change types");
    config->types = 0;
    json_array_foreach(list, index, name)
    {
        int type = json_is_string(name)
                       ? coffer_change_type_parse(json_string_value(name), json_string_length(name))
                       : 0;
        if (!type)
            return refuse(field, detail, "/types",
                          "account.created, transfer.posted, hold.created, hold.posted, "
                          "hold.voided, hold.expired or transfer.rejected");
        config->types |= COFFER_CHANGE_BIT(type);
    }
    return COFFER_OK;
}

/* "batch": absent or 1, one change per POST; 2 to WEBHOOK_BATCH_MAX, batch bodies.
 * "batch_wait_ms": absent or 0; up to WEBHOOK_BATCH_WAIT_MS_MAX, with batches only. */
static int decode_batch_options(json_t *object, webhook_config *config, const char **field,
                                const char **detail)
{
    json_t *batch = json_object_get(object, "batch");
    json_t *wait = json_object_get(object, "batch_wait_ms");
    config->batch = 1;
    config->batch_wait_ms = 0;
    if (batch && !json_is_null(batch)) {
        if (!json_is_integer(batch) || json_integer_value(batch) < 1 ||
            json_integer_value(batch) > WEBHOOK_BATCH_MAX)
            return refuse(field, detail, "/batch",
                          "the most changes one POST carries, 1 to 1000 (1: one change per POST)");
        config->batch = (uint32_t)json_integer_value(batch);
    }
    if (!wait || json_is_null(wait))
        return COFFER_OK;
    if (!json_is_integer(wait) || json_integer_value(wait) < 0 ||
        json_integer_value(wait) > WEBHOOK_BATCH_WAIT_MS_MAX)
        return refuse(field, detail, "/batch_wait_ms",
                      "milliseconds between POSTs once caught up, 0 to 10000");
    if (json_integer_value(wait) > 0 && config->batch == 1)
        return refuse(field, detail, "/batch_wait_ms", "needs a batch of 2 or more");
    config->batch_wait_ms = (uint32_t)json_integer_value(wait);
    return COFFER_OK;
}

static int only_allowed(json_t *object, const char *const *allowed, const char **field,
                        const char **detail)
{
    const char *key = decode_unknown_key(object, allowed);
    if (!key)
        return COFFER_OK;
    static _Thread_local char pointer[48];
    snprintf(pointer, sizeof pointer, "/%.40s", key);
    return refuse(field, detail, pointer, "unknown field");
}

int webhook_config_decode(json_t *object, const char *const *allowed, webhook_config *config,
                          const char **field, const char **detail)
{
    memset(config, 0, sizeof *config);
    char secret[WEBHOOK_SECRET_TEXT_MAX + 2] = "";
    int code = only_allowed(object, allowed, field, detail);
    if (code == COFFER_OK)
        code = take_text(object, "id", config->id, sizeof config->id, true, field, detail);
    if (code == COFFER_OK && !id_valid(config->id))
        code = refuse(field, detail, "/id", "1 to 64 bytes of A-Z a-z 0-9 . _ : @ / -");
    if (code == COFFER_OK)
        code = take_text(object, "url", config->url, sizeof config->url, true, field, detail);
    if (code == COFFER_OK && !url_valid(config->url))
        code = refuse(field, detail, "/url", "an http:// or https:// URL of at most 2048 bytes");
    if (code == COFFER_OK)
        code = decode_types(object, config, field, detail);
    if (code == COFFER_OK)
        code = take_text(object, "account", config->account, sizeof config->account, false, field,
                         detail);
    json_t *account = json_object_get(object, "account");
    if (code == COFFER_OK && account && !json_is_null(account) && !id_valid(config->account))
        code = refuse(field, detail, "/account", "an account id");
    if (code == COFFER_OK)
        code = take_text(object, "secret", secret, sizeof secret, false, field, detail);
    if (code == COFFER_OK && secret[0] &&
        !webhook_secret_parse(secret, config->secret, &config->secret_length))
        code = refuse(field, detail, "/secret", "whsec_ and the base64 of 24 to 64 bytes");
    explicit_bzero(secret, sizeof secret);
    if (code == COFFER_OK)
        code = decode_batch_options(object, config, field, detail);
    return code;
}

/* ---- the registry -------------------------------------------------------------------------- */

webhook *webhook_new(webhooks *hooks, const webhook_config *config)
{
    webhook *hook = calloc(1, sizeof *hook);
    if (!hook)
        return 0;
    hook->config = *config;
    hook->owner = hooks;
    hook->cursor = config->after;
    /* Its waits (retry delays, batch_wait_ms) are timed on the monotonic clock: a step of the
     * wall clock neither lengthens nor cuts them. */
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&hook->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    atomic_init(&hook->stop, false);
    return hook;
}

void webhook_free(webhook *hook)
{
    pthread_cond_destroy(&hook->wake);
    explicit_bzero(hook->config.secret, sizeof hook->config.secret);
    free(hook);
}

/* The index of the webhook `id`, or -1. Under the lock. */
static int find(webhooks *hooks, const char *id)
{
    for (size_t i = 0; i < hooks->count; i++)
        if (!strcmp(hooks->items[i]->config.id, id))
            return (int)i;
    return -1;
}

bool webhooks_open(coffer *db, const char *data_dir, const webhooks_options *options,
                   webhooks **out, char *error, size_t error_size)
{
    *out = 0;
    webhooks *hooks = calloc(1, sizeof *hooks);
    if (!hooks || sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(error, error_size, "cannot start webhooks (out of memory)");
        free(hooks);
        return false;
    }
    pthread_mutex_init(&hooks->lock, 0);
    pthread_mutex_init(&hooks->save_lock, 0);
    pthread_cond_init(&hooks->threads_done, 0);
    hooks->db = db;
    hooks->options = *options;
    snprintf(hooks->directory, sizeof hooks->directory, "%s", data_dir);
    snprintf(hooks->path, sizeof hooks->path, "%s/%s", data_dir, WEBHOOKS_FILE);
    if (!webhooks_load(hooks, error, error_size)) {
        webhooks_close(hooks);
        return false;
    }
    *out = hooks;
    return true;
}

void webhooks_start(webhooks *hooks)
{
    pthread_mutex_lock(&hooks->lock);
    hooks->started = true;
    for (size_t i = 0; i < hooks->count; i++)
        webhook_thread_start(hooks->items[i]);
    pthread_mutex_unlock(&hooks->lock);
}

void webhooks_close(webhooks *hooks)
{
    if (!hooks)
        return;
    pthread_mutex_lock(&hooks->lock);
    hooks->closing = true;
    for (size_t i = 0; i < hooks->count; i++) {
        atomic_store(&hooks->items[i]->stop, true);
        pthread_cond_broadcast(&hooks->items[i]->wake);
    }
    while (hooks->threads_running > 0)
        pthread_cond_wait(&hooks->threads_done, &hooks->lock);
    pthread_mutex_unlock(&hooks->lock);
    if (hooks->started)
        webhooks_save_progress(hooks, 0);
    for (size_t i = 0; i < hooks->count; i++)
        webhook_free(hooks->items[i]);
    pthread_cond_destroy(&hooks->threads_done);
    pthread_mutex_destroy(&hooks->save_lock);
    pthread_mutex_destroy(&hooks->lock);
    free(hooks);
    curl_global_cleanup();
}

/* ---- answers ------------------------------------------------------------------------------- */

/* `body` (taken) as the compact text of an answer. */
static void answer_json(encoded *out, unsigned status, int code, json_t *body, bool replayed)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
    json_decref(body);
    if (!text) {
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return;
    }
    *out = (encoded){status, code, "application/json", replayed, text, strlen(text)};
}

static json_t *time_or_null(uint64_t ns)
{
    char text[48];
    if (!ns)
        return json_null();
    encode_time(text, sizeof text, ns);
    return json_string(text);
}

/* The figures of `hook` at `durable_seq`. Under the lock. */
static void status_of(const webhook *hook, uint64_t durable_seq, uint64_t now_ns,
                      webhook_status *status)
{
    const webhook_config *config = &hook->config;
    memcpy(status->id, config->id, sizeof status->id);
    memcpy(status->url, config->url, sizeof status->url);
    memcpy(status->account, config->account, sizeof status->account);
    status->types = config->types;
    status->batch = config->batch;
    status->batch_wait_ms = config->batch_wait_ms;
    status->failing = hook->failing;
    status->cursor = hook->cursor;
    status->lag_events = durable_seq > hook->cursor ? durable_seq - hook->cursor : 0;
    uint64_t pending = status->lag_events ? hook->pending_timestamp_ns : 0;
    status->lag_seconds = pending && now_ns > pending ? (double)(now_ns - pending) / 1e9 : 0;
    status->deliveries = hook->deliveries;
    status->failures = hook->failures;
    status->failures_total = hook->failures_total;
    status->last_attempt_ns = hook->last_attempt_ns;
    status->next_attempt_ns = hook->next_attempt_ns;
    memcpy(status->last_error, hook->last_error, sizeof status->last_error);
}

size_t webhooks_status_all(webhooks *hooks, webhook_status *out, size_t max)
{
    uint64_t durable_seq = coffer_durable_seq(hooks->db), now_ns = wall_ns();
    pthread_mutex_lock(&hooks->lock);
    size_t count = hooks->count < max ? hooks->count : max;
    for (size_t i = 0; i < count; i++)
        status_of(hooks->items[i], durable_seq, now_ns, &out[i]);
    pthread_mutex_unlock(&hooks->lock);
    return count;
}

static json_t *status_json(const webhook_status *status)
{
    return json_pack(
        "{s:s, s:s, s:o, s:o, s:I, s:I, s:s, s:I, s:I, s:f, s:I, s:I, s:o, s:o, s:o}", "id",
        status->id, "url", status->url, "types", webhook_types_json(status->types), "account",
        status->account[0] ? json_string(status->account) : json_null(), "batch",
        (json_int_t)status->batch, "batch_wait_ms", (json_int_t)status->batch_wait_ms, "state",
        status->failing ? "failing" : "active", "cursor", (json_int_t)status->cursor, "lag_events",
        (json_int_t)status->lag_events, "lag_seconds", status->lag_seconds, "deliveries",
        (json_int_t)status->deliveries, "failures", (json_int_t)status->failures, "last_error",
        status->last_error[0] ? json_string(status->last_error) : json_null(), "last_attempt_at",
        time_or_null(status->last_attempt_ns), "next_attempt_at",
        time_or_null(status->next_attempt_ns));
}

/* The answer showing one webhook (its secret too when `with_secret`). Under the lock. */
static void answer_webhook(encoded *out, const webhook *hook, unsigned status, bool with_secret,
                           bool replayed)
{
    webhook_status figures;
    status_of(hook, coffer_durable_seq(hook->owner->db), wall_ns(), &figures);
    json_t *body = status_json(&figures);
    if (body && with_secret) {
        char secret[WEBHOOK_SECRET_TEXT_MAX + 1];
        webhook_secret_format(hook->config.secret, hook->config.secret_length, secret);
        json_object_set_new(body, "secret", json_string(secret));
        explicit_bzero(secret, sizeof secret);
    }
    answer_json(out, status, status == 201 ? COFFER_CREATED : COFFER_OK, body, replayed);
}

/* The request's "after": absent, the durable seq now; else at most the durable seq. */
static int decode_after(json_t *object, coffer *db, webhook_config *config, bool *given,
                        const char **detail)
{
    json_t *after = json_object_get(object, "after");
    uint64_t durable_seq = coffer_durable_seq(db);
    *given = after != 0;
    config->after = durable_seq;
    if (!after)
        return COFFER_OK;
    if (!json_is_integer(after) || json_integer_value(after) < 0 ||
        (uint64_t)json_integer_value(after) > durable_seq) {
        *detail = "a seq from 0 to the durable seq (only changes after it are delivered)";
        return COFFER_INVALID_FIELD;
    }
    config->after = (uint64_t)json_integer_value(after);
    return COFFER_OK;
}

/* Whether a second create with the same id asks for what exists: the same url, types and
 * account, and the same secret and start when it gives them. */
static bool same_content(const webhook *hook, const webhook_config *asked, bool after_given)
{
    const webhook_config *have = &hook->config;
    return !strcmp(have->url, asked->url) && have->types == asked->types &&
           !strcmp(have->account, asked->account) && have->batch == asked->batch &&
           have->batch_wait_ms == asked->batch_wait_ms &&
           (!asked->secret_length ||
            (asked->secret_length == have->secret_length &&
             sodium_memcmp(asked->secret, have->secret, have->secret_length) == 0)) &&
           (!after_given || asked->after == have->after);
}

/* Adds the webhook (lock held): OK, a replay (exists), id_reused or capacity_exceeded. */
static int add(webhooks *hooks, const webhook_config *config, bool after_given, encoded *out)
{
    int index = find(hooks, config->id);
    if (index >= 0) {
        if (!same_content(hooks->items[index], config, after_given)) {
            encode_problem(out, COFFER_ID_REUSED, "/id",
                           "a webhook with this id exists with another url, types, account, "
                           "batch, batch_wait_ms, secret or start");
            return COFFER_ID_REUSED;
        }
        answer_webhook(out, hooks->items[index], 200, false, true);
        return COFFER_EXISTS;
    }
    if (hooks->count == WEBHOOKS_MAX) {
        encode_problem(out, COFFER_CAPACITY_EXCEEDED, 0, "at most 64 webhooks");
        return COFFER_CAPACITY_EXCEEDED;
    }
    webhook *hook = webhook_new(hooks, config);
    if (!hook) {
        encode_problem(out, COFFER_OUT_OF_MEMORY, 0, 0);
        return COFFER_OUT_OF_MEMORY;
    }
    if (!hook->config.secret_length) { /* none asked for: a new one, shown once */
        hook->config.secret_length = WEBHOOK_SECRET_BYTES_GENERATED;
        randombytes_buf(hook->config.secret, hook->config.secret_length);
    }
    hooks->items[hooks->count++] = hook;
    return COFFER_OK;
}

static void create_decoded(webhooks *hooks, json_t *object, encoded *out)
{
    static const char *const allowed[] = {"id",    "url",   "types",         "account", "secret",
                                          "after", "batch", "batch_wait_ms", 0};
    webhook_config config;
    const char *field = 0, *detail = 0;
    bool after_given = false;
    int code = webhook_config_decode(object, allowed, &config, &field, &detail);
    if (code == COFFER_OK &&
        (code = decode_after(object, hooks->db, &config, &after_given, &detail)) != COFFER_OK)
        field = "/after";
    if (code != COFFER_OK) {
        encode_problem(out, code, field, detail);
        return;
    }
    /* One create at a time: the file written before the answer says 201. */
    pthread_mutex_lock(&hooks->save_lock);
    pthread_mutex_lock(&hooks->lock);
    code = add(hooks, &config, after_given, out);
    pthread_mutex_unlock(&hooks->lock);
    explicit_bzero(config.secret, sizeof config.secret);
    if (code == COFFER_OK && webhooks_save(hooks) != COFFER_OK) {
        pthread_mutex_lock(&hooks->lock);
        webhook_free(hooks->items[--hooks->count]);
        pthread_mutex_unlock(&hooks->lock);
        encode_problem(out, COFFER_STORAGE_FAILED, 0, "webhooks.json could not be written");
    } else if (code == COFFER_OK) {
        pthread_mutex_lock(&hooks->lock);
        webhook *hook = hooks->items[hooks->count - 1];
        if (hooks->started)
            webhook_thread_start(hook);
        answer_webhook(out, hook, 201, true, false);
        pthread_mutex_unlock(&hooks->lock);
    }
    pthread_mutex_unlock(&hooks->save_lock);
}

void webhooks_create(webhooks *hooks, const char *body, size_t length, encoded *out)
{
    json_error_t error;
    json_t *object = json_loadb(body ? body : "", length, JSON_REJECT_DUPLICATES, &error);
    if (!object) {
        encode_problem(out, COFFER_INVALID_JSON, 0, error.text);
        return;
    }
    if (!json_is_object(object))
        encode_problem(out, COFFER_INVALID_FIELD, "", "the body must be a JSON object");
    else
        create_decoded(hooks, object, out);
    json_decref(object);
}

void webhooks_list(webhooks *hooks, encoded *out)
{
    webhook_status *all = malloc(WEBHOOKS_MAX * sizeof *all);
    json_t *list = json_array();
    size_t count = all ? webhooks_status_all(hooks, all, WEBHOOKS_MAX) : 0;
    for (size_t i = 0; i < count; i++)
        json_array_append_new(list, status_json(&all[i]));
    free(all);
    answer_json(out, 200, COFFER_OK, all ? json_pack("{s:o}", "webhooks", list) : 0, false);
}

void webhooks_get(webhooks *hooks, const char *id, encoded *out)
{
    pthread_mutex_lock(&hooks->lock);
    int index = find(hooks, id);
    if (index < 0)
        encode_problem(out, COFFER_WEBHOOK_NOT_FOUND, 0, 0);
    else
        answer_webhook(out, hooks->items[index], 200, false, false);
    pthread_mutex_unlock(&hooks->lock);
}

void webhooks_delete(webhooks *hooks, const char *id, encoded *out)
{
    pthread_mutex_lock(&hooks->save_lock);
    pthread_mutex_lock(&hooks->lock);
    int index = find(hooks, id);
    if (index >= 0) {
        webhook *hook = hooks->items[index];
        memmove(&hooks->items[index], &hooks->items[index + 1],
                (hooks->count - (size_t)index - 1) * sizeof *hooks->items);
        hooks->count--;
        /* Its thread may be in an exchange: it stops at the next check and frees the webhook. */
        atomic_store(&hook->stop, true);
        pthread_cond_broadcast(&hook->wake);
        if (hook->thread_running)
            hook->retired = true;
        else
            webhook_free(hook);
    }
    pthread_mutex_unlock(&hooks->lock);
    if (index < 0)
        encode_problem(out, COFFER_WEBHOOK_NOT_FOUND, 0, 0);
    else if (webhooks_save(hooks) != COFFER_OK)
        encode_problem(out, COFFER_STORAGE_FAILED, 0, "webhooks.json could not be written");
    else
        *out = (encoded){204, COFFER_OK, "application/json", false, strdup(""), 0};
    pthread_mutex_unlock(&hooks->save_lock);
}

void webhooks_enable(webhooks *hooks, const char *id, encoded *out)
{
    pthread_mutex_lock(&hooks->save_lock);
    pthread_mutex_lock(&hooks->lock);
    int index = find(hooks, id);
    bool was_failing = index >= 0 && hooks->items[index]->failing;
    if (was_failing) {
        webhook *hook = hooks->items[index];
        hook->failing = false;
        hook->failures = 0;
        pthread_cond_broadcast(&hook->wake);
    }
    pthread_mutex_unlock(&hooks->lock);
    int saved = was_failing ? webhooks_save(hooks) : COFFER_OK;
    pthread_mutex_lock(&hooks->lock);
    index = find(hooks, id);
    if (index < 0)
        encode_problem(out, COFFER_WEBHOOK_NOT_FOUND, 0, 0);
    else if (saved != COFFER_OK)
        encode_problem(out, COFFER_STORAGE_FAILED, 0, "webhooks.json could not be written");
    else
        answer_webhook(out, hooks->items[index], 200, false, false);
    pthread_mutex_unlock(&hooks->lock);
    pthread_mutex_unlock(&hooks->save_lock);
}
