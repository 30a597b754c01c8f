/*
 * encode.h — every HTTP response the server sends, as status, content type and body: write
 * answers (single events and batches), reads, problems (RFC 9457) and probes. encode.c builds
 * them with jansson; encode_fast.c writes the commonest one (a created transfer) directly,
 * byte for byte the same (fuzz_encode checks it). The transport only sends what it is given.
 */
#ifndef COFFER_SERVER_ENCODE_H
#define COFFER_SERVER_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"
#include "server/text.h"

/* A response ready to send. */
typedef struct encoded {
    unsigned status;          /* HTTP status */
    int code;                 /* the coffer code it reports (metrics, logs, headers) */
    const char *content_type; /* static */
    bool replayed;            /* an idempotent replay: the Idempotent-Replayed header */
    char *body;               /* malloc'd and NUL-terminated; NULL when out of memory */
    size_t length;
} encoded;

/* RFC 3339 UTC with nanoseconds into out (at least 36 bytes). */
void encode_time(char *out, size_t size, uint64_t ns);

/* A problem for `code` with its status; `field` and `detail` may be NULL or empty. */
void encode_problem(encoded *out, int code, const char *field, const char *detail);

/* The answer to a write: `list` when the body was a list ({"accounts"|"transfers": [...]}),
 * `atomic` as the body asked; results[i] is the outcome of events[i]. */
void encode_write(encoded *out, const coffer_event *events, const coffer_result *results,
                  size_t count, bool list, bool atomic);

/* Reads (GET). A read that failed with `code` answers encode_read_failure. */
void encode_read_failure(encoded *out, int code);
void encode_account(encoded *out, const coffer_account *account, int at, uint64_t at_value);
/* A page of history: `count` entries out of at most `limit` asked for. */
void encode_history(encoded *out, const coffer_history_entry *entries, size_t count, size_t limit);
void encode_transfer(encoded *out, const coffer_transfer *transfer);
void encode_holds(encoded *out, const coffer_transfer *holds, size_t count);
void encode_verify(encoded *out, const coffer_verify_report *report);
/* {"status": word} for the probes (/healthz, /readyz). */
void encode_probe(encoded *out, const char *word);
/* /readyz: 200 {"status": "ready", "role"} for COFFER_OK, else the problem for `code` with
 * the role and why in `detail`. */
void encode_readiness(encoded *out, int code, const char *role, const char *detail);
/* A write sent to a follower: 307 not_leader, its problem naming the leader ("leader"). */
void encode_redirect(encoded *out, const char *leader);
/* GET /v1/cluster: role, leader (null when none), term, applied_seq, ready, members. */
void encode_cluster(encoded *out, const coffer_cluster_status *status);
/* Text of another format (the Prometheus exposition); `text` malloc'd or NULL (out of memory). */
void encode_text(encoded *out, const char *content_type, char *text, size_t length);

/*
 * One applied (or replayed) event's success object, appended to `t`: the whole body of a
 * single transfer, post or void ({"code", "transfer", "accounts"}), or with `item` an item of
 * a batch answer, followed by its "status" and, for a replay, "replayed". The general encoder
 * covers every event; encode_success_fast writes the same bytes directly for a transfer
 * without metadata and returns false, appending nothing, for any other event.
 */
void encode_success(text_buffer *t, const coffer_event *event, const coffer_result *result,
                    bool item);
bool encode_success_fast(text_buffer *t, const coffer_event *event, const coffer_result *result,
                         bool item);

/* One change of the feed as JSON: seq, timestamp, type, submitted_by, and the account or the
 * transfer with both accounts after it, as a write's answer shows them. Needs <jansson.h>. */
typedef struct json_t json_t;
json_t *encode_change_json(const coffer_change *change);
/* The same as compact text appended to `t`: encode_change_fast's when it takes the change (a
 * transfer posted or a hold created, without metadata: byte for byte the tree's text), else the
 * tree's. */
void encode_change_text(text_buffer *t, const coffer_change *change);
bool encode_change_fast(text_buffer *t, const coffer_change *change);
/* A page of the feed: {"events": [...], "next_after", "durable_seq"}. */
void encode_events(encoded *out, const coffer_change *changes, size_t count, uint64_t next_after,
                   uint64_t durable_seq);
/* One change as a Server-Sent Event ("id: SEQ", "event: TYPE", "data: JSON" and a blank line),
 * and a problem as an "error" event, appended to `t`. */
void encode_change_frame(text_buffer *t, const coffer_change *change);
void encode_problem_frame(text_buffer *t, int code, const char *detail);

/* Shared by the two success encoders. */
const char *encode_state_name(int state);
/* The HTTP status a result answers with: 201 for success and its replay, else the code's. */
int encode_result_status(const coffer_result *result);

#endif
