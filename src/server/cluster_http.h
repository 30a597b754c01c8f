/*
 * cluster_http.h — what the HTTP API says about this instance's part in a ledger whose log
 * several instances share: GET /v1/cluster, the answer of /readyz, writes a follower refuses
 * (307 to the leader, or 503 while none leads), and reads that wait until this instance has
 * applied a seq (?min_seq or Coffer-Min-Seq).
 */
#ifndef COFFER_SERVER_CLUSTER_HTTP_H
#define COFFER_SERVER_CLUSTER_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "coffer.h"
#include "server/encode.h"
#include "server/head.h"

/* A read with min_seq waits at most this long for this instance to apply it, then answers
 * 503 seq_not_applied (with Retry-After). */
#define CLUSTER_MIN_SEQ_WAIT_MS 5000
/* The Location of a redirect: the leader's URL, then the request's path and query, each byte
 * of them escaped at most (three bytes each). */
#define CLUSTER_LOCATION_MAX (COFFER_CLUSTER_URL_MAX + 3 * HEAD_TARGET_MAX + 1)

typedef struct request request; /* http.h */

/* A Location under construction; overflow is sticky. */
typedef struct cluster_location {
    char text[CLUSTER_LOCATION_MAX];
    size_t length;
    bool overflow, has_query;
} cluster_location;

/* The leader's URL (without its trailing '/'), then `path` escaped where it must be. */
void cluster_location_start(cluster_location *location, const char *leader, const char *path);
/* Appends "?name=value" or "&name=value", both escaped; `value` NULL appends "?name". */
void cluster_location_query(cluster_location *location, const char *name, const char *value);

/* True for the codes a follower refuses a write with: not_leader and no_leader. */
bool cluster_refuses(int code);
/* The answer to a write refused with `code` when the leader known is `leader` ("" for none):
 * not_leader (307, its body naming the leader) when one is known, else no_leader (503).
 * Returns the code answered. */
int cluster_encode_refusal(encoded *out, int code, const char *leader);

/* Answers a write the engine refused with not_leader or no_leader: 307 with Location on the
 * leader (the same path and query), or 503 no_leader with Retry-After. Looks the leader up,
 * so it is for that path only. */
enum MHD_Result cluster_answer_refusal(request *r, int code);

/* Before a route starts (http.c): a GET or HEAD of the API (not the probes or metrics) with
 * min_seq above what this instance has
 * applied is suspended (no thread blocks) until it is applied or CLUSTER_MIN_SEQ_WAIT_MS
 * passed; resumed, it comes back here. True when the route may start now; false when the
 * request was answered (400 for a bad value, 503 seq_not_applied) or waits, with what to
 * return to libmicrohttpd in *result. */
bool cluster_read_may_start(request *r, enum MHD_Result *result);

/* GET /v1/cluster and GET /readyz. */
enum MHD_Result handle_cluster(request *r);
enum MHD_Result handle_ready(request *r);

#endif
