/*
 * webhooks_store.c — DATA_DIR/webhooks.json: every webhook with its secret, start, cursor and
 * state, rewritten whole (temp file, fsync, rename, fsync of the directory) so that a kill -9
 * leaves the old file or the new one. Mode 0600: it holds the signing secrets.
 */
#include "server/webhooks.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WEBHOOKS_FILE_FORMAT 1
#define WEBHOOKS_FILE_BYTES_MAX ((size_t)1 << 20)

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* ---- writing ------------------------------------------------------------------------------- */

static json_t *entry_json(const webhook *hook)
{
    const webhook_config *config = &hook->config;
    char secret[WEBHOOK_SECRET_TEXT_MAX + 1];
    webhook_secret_format(config->secret, config->secret_length, secret);
    json_t *entry = json_pack("{s:s, s:s, s:o, s:s, s:I, s:I, s:b}", "id", config->id, "url",
                              config->url, "types", webhook_types_json(config->types), "secret",
                              secret, "after", (json_int_t)config->after, "cursor",
                              (json_int_t)hook->cursor, "failing", hook->failing);
    explicit_bzero(secret, sizeof secret);
    if (entry && config->account[0])
        json_object_set_new(entry, "account", json_string(config->account));
    if (entry && config->batch > 1) /* absent: 1, as in files written before batches */
        json_object_set_new(entry, "batch", json_integer(config->batch));
    if (entry && config->batch_wait_ms > 0) /* absent: 0 */
        json_object_set_new(entry, "batch_wait_ms", json_integer(config->batch_wait_ms));
    return entry;
}

/* The file's text for the registry as it is now (malloc'd, NULL when out of memory). */
static char *snapshot(webhooks *hooks)
{
    json_t *list = json_array();
    pthread_mutex_lock(&hooks->lock);
    for (size_t i = 0; i < hooks->count; i++)
        json_array_append_new(list, entry_json(hooks->items[i]));
    hooks->dirty = false;
    hooks->saved_ns = monotonic_ns();
    pthread_mutex_unlock(&hooks->lock);
    json_t *root = json_pack("{s:i, s:o}", "format", WEBHOOKS_FILE_FORMAT, "webhooks", list);
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : 0;
    json_decref(root);
    return text;
}

static bool write_all(int fd, const char *bytes, size_t length)
{
    while (length > 0) {
        ssize_t written = write(fd, bytes, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return false;
        bytes += written;
        length -= (size_t)written;
    }
    return true;
}

static bool sync_directory(const char *directory)
{
    int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool synced = fd >= 0 && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    return synced;
}

/* `text` into `path` through `path`.tmp: the old file or the new one survive a crash. */
static bool replace_file(const char *path, const char *directory, const char *text)
{
    char temporary[4200];
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    bool written = fchmod(fd, 0600) == 0 && write_all(fd, text, strlen(text)) && fsync(fd) == 0;
    written &= close(fd) == 0;
    if (!written || rename(temporary, path) != 0) {
        unlink(temporary);
        return false;
    }
    return sync_directory(directory);
}

int webhooks_save(webhooks *hooks)
{
    char *text = snapshot(hooks);
    bool saved = text && replace_file(hooks->path, hooks->directory, text);
    if (text)
        explicit_bzero(text, strlen(text));
    free(text);
    if (saved)
        return COFFER_OK;
    fprintf(stderr, "coffer: cannot write %s: %s\n", hooks->path,
            text ? strerror(errno) : "out of memory");
    pthread_mutex_lock(&hooks->lock);
    hooks->dirty = true; /* the cursors are still to be written */
    pthread_mutex_unlock(&hooks->lock);
    return COFFER_STORAGE_FAILED;
}

void webhooks_save_progress(webhooks *hooks, uint64_t min_age_ms)
{
    pthread_mutex_lock(&hooks->lock);
    bool due = hooks->dirty && monotonic_ns() - hooks->saved_ns >= min_age_ms * 1000000ULL;
    pthread_mutex_unlock(&hooks->lock);
    if (!due)
        return;
    pthread_mutex_lock(&hooks->save_lock);
    webhooks_save(hooks);
    pthread_mutex_unlock(&hooks->save_lock);
}

/* ---- reading ------------------------------------------------------------------------------- */

/* The whole file (malloc'd), or NULL: *missing when there is none. */
static char *read_file(const char *path, bool *missing, size_t *length)
{
    FILE *file = fopen(path, "rb");
    *missing = !file && errno == ENOENT;
    if (!file)
        return 0;
    char *text = malloc(WEBHOOKS_FILE_BYTES_MAX + 1);
    *length = text ? fread(text, 1, WEBHOOKS_FILE_BYTES_MAX + 1, file) : 0;
    bool failed = !text || ferror(file) || *length > WEBHOOKS_FILE_BYTES_MAX;
    fclose(file);
    if (failed) {
        free(text);
        return 0;
    }
    text[*length] = 0;
    return text;
}

static bool entry_load(webhooks *hooks, json_t *entry, char *error, size_t error_size)
{
    static const char *const allowed[] = {"id",     "url",           "types",  "account",
                                          "secret", "after",         "cursor", "failing",
                                          "batch",  "batch_wait_ms", 0};
    webhook_config config;
    const char *field = "", *detail = "";
    json_t *after = json_object_get(entry, "after"), *cursor = json_object_get(entry, "cursor"),
           *failing = json_object_get(entry, "failing");
    if (!json_is_object(entry) ||
        webhook_config_decode(entry, allowed, &config, &field, &detail) != COFFER_OK ||
        !config.secret_length || !json_is_integer(after) || json_integer_value(after) < 0 ||
        !json_is_integer(cursor) || json_integer_value(cursor) < 0 || !json_is_boolean(failing)) {
        snprintf(error, error_size, "webhook %zu: %s %s", hooks->count + 1,
                 field[0] ? field : "an entry", detail[0] ? detail : "is incomplete");
        return false;
    }
    config.after = (uint64_t)json_integer_value(after);
    for (size_t i = 0; i < hooks->count; i++)
        if (!strcmp(hooks->items[i]->config.id, config.id)) {
            snprintf(error, error_size, "webhook %s is listed twice", config.id);
            return false;
        }
    webhook *hook = webhook_new(hooks, &config);
    if (!hook) {
        snprintf(error, error_size, "out of memory");
        return false;
    }
    hook->cursor = (uint64_t)json_integer_value(cursor);
    hook->failing = json_is_true(failing);
    hooks->items[hooks->count++] = hook;
    explicit_bzero(&config, sizeof config);
    return true;
}

static bool registry_load(webhooks *hooks, json_t *root, char *error, size_t error_size)
{
    json_t *list = json_object_get(root, "webhooks"), *entry;
    size_t index;
    if (!json_is_object(root) ||
        json_integer_value(json_object_get(root, "format")) != WEBHOOKS_FILE_FORMAT ||
        !json_is_array(list)) {
        snprintf(error, error_size, "not a webhooks file of format %d", WEBHOOKS_FILE_FORMAT);
        return false;
    }
    if (json_array_size(list) > WEBHOOKS_MAX) {
        snprintf(error, error_size, "more than %d webhooks", WEBHOOKS_MAX);
        return false;
    }
    json_array_foreach(list, index,
                       entry) if (!entry_load(hooks, entry, error, error_size)) return false;
    return true;
}

bool webhooks_load(webhooks *hooks, char *error, size_t error_size)
{
    bool missing = false;
    size_t length = 0;
    char *text = read_file(hooks->path, &missing, &length);
    if (!text) {
        if (!missing)
            snprintf(error, error_size, "%s cannot be read: %s", hooks->path,
                     errno ? strerror(errno) : "larger than 1 MiB");
        return missing;
    }
    json_error_t parse_error;
    json_t *root = json_loadb(text, length, JSON_REJECT_DUPLICATES, &parse_error);
    explicit_bzero(text, length);
    free(text);
    char reason[256];
    bool loaded = root ? registry_load(hooks, root, reason, sizeof reason) : false;
    if (!root)
        snprintf(reason, sizeof reason, "line %d: %s", parse_error.line, parse_error.text);
    json_decref(root);
    if (!loaded)
        snprintf(error, error_size,
                 "%s is damaged (%s); restore it from a backup, or move it away to start "
                 "without webhooks",
                 hooks->path, reason);
    return loaded;
}
