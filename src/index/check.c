/*
 * check.c — the index against the log (coffer verify): every record up to the index's applied
 * seq is derived again (derive.c) and each key compared with what the index holds, byte for
 * byte; then counts show that the index holds nothing more and that every hold the log has
 * not resolved is still pending there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/derive.h"
#include "index/index.h"

struct index_check {
    index_db *index;
    record_scratch scratch;
    uint64_t transfers, history;    /* keys the log derives */
    uint64_t holds, holds_resolved; /* holds the index has, and those of them resolved */
    char *error;
    size_t error_size;
    uint64_t seq; /* of the record being checked */
};

/* What check_finish counts in the index. */
typedef struct index_counts {
    uint64_t keys, holds_pending;
} index_counts;

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

/* Reads `key` from the index: the length read, or 0 with the difference described. */
static size_t check_read(index_check *check, const char *what, const uint8_t *key,
                         size_t key_length, uint8_t *value, size_t capacity)
{
    size_t length = 0;
    int code = index_read_value(check->index, key, key_length, value, capacity, &length);
    if (code == COFFER_OK)
        return length;
    char name[80];
    key_text(name, sizeof name, key, key_length);
    snprintf(check->error, check->error_size, "%s %s (seq %llu) is %s", what, name,
             (unsigned long long)check->seq,
             code == COFFER_TRANSFER_NOT_FOUND ? "missing" : "unreadable");
    return 0;
}

static int differs(index_check *check, const char *what, const uint8_t *key, size_t key_length)
{
    char name[80];
    key_text(name, sizeof name, key, key_length);
    snprintf(check->error, check->error_size, "%s %s (seq %llu) differs from the log", what, name,
             (unsigned long long)check->seq);
    return COFFER_STORAGE_FAILED;
}

static int check_transfer(void *context, const uint8_t *key, size_t key_length,
                          const uint8_t *value, size_t value_length)
{
    index_check *check = context;
    check->transfers++;
    uint8_t found[TRANSFER_VALUE_MAX];
    size_t length = check_read(check, "transfer", key, key_length, found, sizeof found);
    if (length == 0)
        return COFFER_STORAGE_FAILED;
    /* A hold's state and captured amount change later: compared where the log resolves it. */
    bool hold = value[TRANSFER_VALUE_STATE] == COFFER_STATE_PENDING;
    if (hold) {
        check->holds++;
        found[TRANSFER_VALUE_STATE] = COFFER_STATE_PENDING;
        memset(found + TRANSFER_VALUE_CAPTURED, 0, 8);
    }
    if (length != value_length || memcmp(found, value, length) != 0)
        return differs(check, "transfer", key, key_length);
    return 0;
}

static int check_history(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                         size_t value_length)
{
    index_check *check = context;
    check->history++;
    uint8_t found[HISTORY_VALUE_MAX];
    size_t length = check_read(check, "history entry", key, key_length, found, sizeof found);
    if (length == 0)
        return COFFER_STORAGE_FAILED;
    if (length != value_length || memcmp(found, value, length) != 0)
        return differs(check, "history entry", key, key_length);
    return 0;
}

static int check_resolution(void *context, const uint8_t *key, size_t key_length, uint8_t state,
                            int64_t captured)
{
    index_check *check = context;
    uint8_t found[TRANSFER_VALUE_MAX];
    size_t length = 0;
    int code = index_read_value(check->index, key, key_length, found, sizeof found, &length);
    if (code == COFFER_TRANSFER_NOT_FOUND)
        return 0; /* a hold of a format-1 record: the index never had it */
    if (code != COFFER_OK || length < TRANSFER_VALUE_FIXED)
        return differs(check, "hold", key, key_length);
    check->holds_resolved++;
    if (found[TRANSFER_VALUE_STATE] != state ||
        (int64_t)index_get_u64(found + TRANSFER_VALUE_CAPTURED) != captured)
        return differs(check, "hold", key, key_length);
    return 0;
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

static int count_transfer(void *context, const uint8_t *key, size_t key_length,
                          const uint8_t *value, size_t length)
{
    (void)key, (void)key_length;
    index_counts *counts = context;
    counts->keys++;
    if (length >= TRANSFER_VALUE_FIXED && value[TRANSFER_VALUE_STATE] == COFFER_STATE_PENDING)
        counts->holds_pending++;
    return 0;
}

bool index_check_finish(index_check *check, char *error, size_t error_size)
{
    index_counts transfers = {0}, history = {0};
    if (index_scan(check->index, INDEX_KEY_TRANSFER, count_transfer, &transfers) != COFFER_OK ||
        index_scan(check->index, INDEX_KEY_HISTORY, count_transfer, &history) != COFFER_OK) {
        snprintf(error, error_size, "a scan of its keys failed");
        return false;
    }
    if (transfers.keys != check->transfers || history.keys != check->history) {
        snprintf(error, error_size,
                 "it holds %llu transfers and %llu history entries, the log derives %llu and %llu",
                 (unsigned long long)transfers.keys, (unsigned long long)history.keys,
                 (unsigned long long)check->transfers, (unsigned long long)check->history);
        return false;
    }
    uint64_t pending = check->holds - check->holds_resolved;
    if (transfers.holds_pending != pending) {
        snprintf(error, error_size, "it holds %llu pending holds, the log leaves %llu pending",
                 (unsigned long long)transfers.holds_pending, (unsigned long long)pending);
        return false;
    }
    return true;
}
