/*
 * webhooks.h — subscribers to the change feed: each webhook is a URL that receives every change
 * it selects as a signed POST (Standard Webhooks), in seq order, at least once. The registry and
 * its HTTP answers live in webhooks.c, its file DATA_DIR/webhooks.json in webhooks_store.c, the
 * delivery threads (one per webhook, each with its own feed reader) in webhooks_delivery.c.
 */
#ifndef COFFER_SERVER_WEBHOOKS_H
#define COFFER_SERVER_WEBHOOKS_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "server/encode.h"

#define WEBHOOKS_MAX 64
#define WEBHOOK_URL_MAX 2048
#define WEBHOOKS_FILE "webhooks.json"
/* Secrets are "whsec_" and the base64 (with padding) of 24 to 64 random bytes. */
#define WEBHOOK_SECRET_PREFIX "whsec_"
#define WEBHOOK_SECRET_BYTES_MIN 24
#define WEBHOOK_SECRET_BYTES_GENERATED 32
#define WEBHOOK_SECRET_BYTES_MAX 64
#define WEBHOOK_SECRET_TEXT_MAX (sizeof WEBHOOK_SECRET_PREFIX - 1 + 88) /* 88: base64 of 64 */
/* "v1," and the base64 of a 32-byte HMAC-SHA256. */
#define WEBHOOK_SIGNATURE_MAX 48
#define WEBHOOK_ERROR_MAX 160
/* Changes one POST may carry when a webhook asks for batches ("batch": 2 to this). */
#define WEBHOOK_BATCH_MAX 1000
/* The longest a caught-up batch webhook waits between POSTs ("batch_wait_ms"). */
#define WEBHOOK_BATCH_WAIT_MS_MAX 10000

typedef struct webhooks_options {
    uint64_t timeout_ms;       /* per attempt: connecting and the whole exchange */
    uint32_t max_failures;     /* consecutive failures before the webhook is marked failing */
    uint64_t backoff_first_ms; /* the bound of the first retry's delay; doubles per failure */
    uint64_t backoff_max_ms;   /* the bound never grows past this */
    uint64_t save_every_ms;    /* cursors are written at most this often while delivering */
    uint64_t feed_wait_ms;     /* a caught-up thread checks its stop flag this often */
    const char *user_agent;    /* "coffer/VERSION" */
} webhooks_options;

void webhooks_options_init(webhooks_options *options);

/* What a webhook is: checked on creation and on load, then never changed. */
typedef struct webhook_config {
    char id[COFFER_ACCOUNT_ID_MAX + 1];
    char url[WEBHOOK_URL_MAX + 1];
    uint32_t types;                          /* COFFER_CHANGE_BIT()s, never 0 */
    char account[COFFER_ACCOUNT_ID_MAX + 1]; /* "": every account */
    uint8_t secret[WEBHOOK_SECRET_BYTES_MAX];
    size_t secret_length;
    uint64_t after;         /* the seq it started after */
    uint32_t batch;         /* 1: one change per POST; more: a batch body of up to this many */
    uint32_t batch_wait_ms; /* once caught up, the wait between POSTs; 0 with batch 1 */
} webhook_config;

typedef struct webhooks webhooks;

/* One webhook's configuration and delivery state. Every field below `config` is guarded by the
 * registry's lock; the delivery thread is the only writer of the progress fields. */
typedef struct webhook {
    webhook_config config;
    webhooks *owner;
    pthread_cond_t wake; /* with the registry's lock: a stop or an enable ends a wait */
    atomic_bool stop;    /* also read by curl's progress callback, without the lock */
    bool retired;        /* deleted while its thread ran: the thread frees it */
    bool thread_running;
    bool failing;
    uint64_t cursor; /* the last seq delivered (or passed over by the filter) */
    uint64_t deliveries, failures, failures_total;
    uint64_t pending_timestamp_ns; /* of the change being delivered; 0 between changes */
    uint64_t last_attempt_ns, next_attempt_ns; /* wall clock; 0: none */
    char last_error[WEBHOOK_ERROR_MAX];
} webhook;

struct webhooks {
    pthread_mutex_t lock;      /* the registry and every webhook's state */
    pthread_mutex_t save_lock; /* one file write at a time, in the order of their snapshots */
    pthread_cond_t threads_done;
    webhook *items[WEBHOOKS_MAX];
    size_t count;
    unsigned threads_running;
    bool started;
    bool closing;
    bool dirty;        /* a cursor moved since the last write */
    uint64_t saved_ns; /* monotonic time of the last write */
    coffer *db;
    webhooks_options options;
    char path[4096]; /* DATA_DIR/webhooks.json */
    char directory[4096];
};

/* A webhook's figures as GET /v1/webhooks/{id} and the metrics show them (never the secret). */
typedef struct webhook_status {
    char id[COFFER_ACCOUNT_ID_MAX + 1];
    char url[WEBHOOK_URL_MAX + 1];
    uint32_t types;
    char account[COFFER_ACCOUNT_ID_MAX + 1];
    uint32_t batch, batch_wait_ms;
    bool failing;
    uint64_t cursor, lag_events;
    double lag_seconds;
    uint64_t deliveries, failures, failures_total;
    uint64_t last_attempt_ns, next_attempt_ns;
    char last_error[WEBHOOK_ERROR_MAX];
} webhook_status;

/* ---- lifecycle (webhooks.c) ---------------------------------------------------------------- */

/* Reads DATA_DIR/webhooks.json (none yet: no webhooks). False with a one-line reason naming the
 * file in `error` when it cannot be read or does not parse: the server must not start then, or
 * it would forget webhooks and their cursors. Delivery starts with webhooks_start. */
bool webhooks_open(coffer *db, const char *data_dir, const webhooks_options *options,
                   webhooks **out, char *error, size_t error_size);
void webhooks_start(webhooks *hooks);
/* Stops every delivery thread (an exchange in progress is aborted), writes the cursors and
 * frees. Before coffer_close: no thread reads the feed afterwards. NULL is a no-op. */
void webhooks_close(webhooks *hooks);

/* ---- the HTTP answers (webhooks.c) --------------------------------------------------------- */

void webhooks_create(webhooks *hooks, const char *body, size_t length, encoded *out);
void webhooks_list(webhooks *hooks, encoded *out);
void webhooks_get(webhooks *hooks, const char *id, encoded *out);
void webhooks_delete(webhooks *hooks, const char *id, encoded *out);
void webhooks_enable(webhooks *hooks, const char *id, encoded *out);

/* Every webhook's figures into out[0..max), in creation order; returns how many. */
size_t webhooks_status_all(webhooks *hooks, webhook_status *out, size_t max);

/* ---- shared by the three files ------------------------------------------------------------- */

/* Checks a webhook object (a request body or an entry of the file) into `config`. Keys beyond
 * `allowed` are refused. COFFER_OK, or invalid_field with the field and a reason. */
int webhook_config_decode(json_t *object, const char *const *allowed, webhook_config *config,
                          const char **field, const char **detail);
/* "whsec_..." to its bytes; false unless it is the prefix and the padded base64 of 24..64 bytes. */
bool webhook_secret_parse(const char *text, uint8_t *secret, size_t *length);
void webhook_secret_format(const uint8_t *secret, size_t length,
                           char out[WEBHOOK_SECRET_TEXT_MAX + 1]);
/* The types bits as a JSON array of names. */
json_t *webhook_types_json(uint32_t types);

/* Writes the registry's file (temp file, fsync, rename, fsync of the directory). COFFER_OK,
 * or storage_failed with the reason on stderr. The caller holds save_lock (not lock): the
 * snapshot and the write of one save are not interleaved with another's. */
int webhooks_save(webhooks *hooks);
/* Writes only when a cursor moved and the last write is older than `min_age_ms` (0: now).
 * Takes save_lock itself. */
void webhooks_save_progress(webhooks *hooks, uint64_t min_age_ms);
/* Reads the file into the registry (called once, before any thread starts). */
bool webhooks_load(webhooks *hooks, char *error, size_t error_size);

/* Starts the webhook's delivery thread (the registry's lock held). False when it could not. */
bool webhook_thread_start(webhook *hook);
/* A webhook of `config` at its start (cursor = config->after), not yet in the registry. */
webhook *webhook_new(webhooks *hooks, const webhook_config *config);
void webhook_free(webhook *hook);

/* ---- delivery (webhooks_delivery.c), pure parts for the tests ------------------------------ */

/* "v1,<base64 of HMAC-SHA256(secret, id "." timestamp "." body)>" (Standard Webhooks). False
 * when the HMAC could not be computed (GnuTLS refused it): nothing is written to `out`. */
bool webhook_sign(const uint8_t *secret, size_t secret_length, const char *id, uint64_t timestamp_s,
                  const char *body, size_t body_length, char out[WEBHOOK_SIGNATURE_MAX]);
/* The bound of the delay before retry number `failures` (1 for the first): the first bound,
 * doubled per failure, never above the maximum. */
uint64_t webhook_backoff_bound_ms(const webhooks_options *options, uint64_t failures);
/* The delay itself: uniform in [0, bound] ("full jitter", so that webhooks that failed
 * together do not retry together). */
uint64_t webhook_backoff_ms(const webhooks_options *options, uint64_t failures);
/* The body of one change's POST: {"type", "timestamp", "data": <the change>} (malloc'd). */
char *webhook_body(const coffer_change *change, size_t *length);
/* The body of a batch webhook's POST of changes[0..count), count >= 1 (malloc'd):
 * {"type": "batch", "timestamp": the last change's, "data": {"first_seq", "last_seq",
 * "changes": [the body webhook_body writes for each]}}. */
char *webhook_batch_body(const coffer_change *changes, size_t count, size_t *length);
/* The webhook-id of a delivery: "evt_SEQ" for one change of a webhook without batches,
 * "evt_FIRST-LAST" for a batch. */
void webhook_delivery_id(const webhook_config *config, uint64_t first_seq, uint64_t last_seq,
                         char out[48]);

#endif
