/*
 * check.c — the index against the log (coffer verify): every record up to the index's applied
 * seq is derived again (derive.c) and each key compared with what the index holds, byte for
 * byte; then counts show that the index holds nothing more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/derive.h"
#include "index/index.h"

struct index_check {
    index_db *index;
    record_scratch scratch;
    uint64_t transfers, history, resolutions; /* keys the log derives */
    char *error;
    size_t error_size;
    uint64_t seq; /* of the record being checked */
};

int index_check_begin(index_db *index, index_check **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return COFFER_OUT_OF_MEMORY;
    (*out)->index = index;
    return COFFER_OK;
}

void index_check_free(index_check *check)
{
    if (!check)
        return;
    record_scratch_free(&check->scratch);
    free(check);
}

static void key_text(char *out, size_t size, const uint8_t *key, size_t key_length)
{
    size_t length = key_length - 1 < size - 1 ? key_length - 1 : size - 1;
    for (size_t i = 0; i < length; i++)
        out[i] = key[1 + i] >= 0x20 && key[1 + i] < 0x7f ? (char)key[1 + i] : '.';
    out[length] = 0;
}

/* One derived put against the index: the same value under its key, or the difference. */
static int check_put(index_check *check, const char *what, const uint8_t *key, size_t key_length,
                     const uint8_t *value, size_t value_length)
{
    uint8_t found[TRANSFER_VALUE_MAX];
    size_t length = 0;
    int code = index_read_value(check->index, key, key_length, found, sizeof found, &length);
    const char *problem = code == COFFER_TRANSFER_NOT_FOUND ? "is missing"
                          : code != COFFER_OK               ? "is unreadable"
                          : length != value_length || memcmp(found, value, length) != 0
                              ? "differs from the log"
                              : 0;
    if (!problem)
        return 0;
    char name[80];
    key_text(name, sizeof name, key, key_length);
    snprintf(check->error, check->error_size, "%s %s (seq %llu) %s", what, name,
             (unsigned long long)check->seq, problem);
    return COFFER_STORAGE_FAILED;
}

static int check_transfer(void *context, const uint8_t *key, size_t key_length,
                          const uint8_t *value, size_t value_length)
{
    index_check *check = context;
    check->transfers++;
    return check_put(check, "transfer", key, key_length, value, value_length);
}

static int check_history(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                         size_t value_length)
{
    index_check *check = context;
    check->history++;
    return check_put(check, "history entry", key, key_length, value, value_length);
}

static int check_resolution(void *context, const uint8_t *key, size_t key_length,
                            const uint8_t *value, size_t value_length)
{
    index_check *check = context;
    check->resolutions++;
    return check_put(check, "hold", key, key_length, value, value_length);
}

bool index_check_record(index_check *check, const uint8_t *bytes, const record_header *header,
                        char *error, size_t error_size)
{
    check->error = error;
    check->error_size = error_size;
    check->seq = header->last_seq;
    index_sink sink = {check_transfer, check_history, check_resolution, check};
    int code = index_derive_record(bytes, header, &check->scratch, &sink);
    if (code != RECORD_OK && code != COFFER_STORAGE_FAILED)
        snprintf(error, error_size, "the record ending at seq %llu does not decode: %s",
                 (unsigned long long)header->last_seq, record_status_name(code));
    return code == RECORD_OK;
}

static int count_key(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                     size_t length)
{
    (void)key, (void)key_length, (void)value, (void)length;
    (*(uint64_t *)context)++;
    return 0;
}

bool index_check_finish(index_check *check, char *error, size_t error_size)
{
    uint64_t transfers = 0, history = 0, resolutions = 0;
    if (index_scan(check->index, INDEX_KEY_TRANSFER, count_key, &transfers) != COFFER_OK ||
        index_scan(check->index, INDEX_KEY_HISTORY, count_key, &history) != COFFER_OK ||
        index_scan(check->index, INDEX_KEY_RESOLUTION, count_key, &resolutions) != COFFER_OK) {
        snprintf(error, error_size, "a scan of its keys failed");
        return false;
    }
    if (transfers != check->transfers || history != check->history ||
        resolutions != check->resolutions) {
        snprintf(error, error_size,
                 "it holds %llu transfers, %llu history entries and %llu ended holds, the log "
                 "derives %llu, %llu and %llu",
                 (unsigned long long)transfers, (unsigned long long)history,
                 (unsigned long long)resolutions, (unsigned long long)check->transfers,
                 (unsigned long long)check->history, (unsigned long long)check->resolutions);
        return false;
    }
    return true;
}
