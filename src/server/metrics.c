/*
 * metrics.c — see metrics.h. Counters are atomics bumped by the network threads; rendering
 * reads them without a lock (each figure is exact, the set is a near-instant snapshot).
 */
#include "server/metrics.h"

#include "server/framing_socket.h"

#include "server/text.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Request latency bounds in microseconds. */
static const uint64_t latency_bounds_us[METRICS_LATENCY_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};

void metrics_init(metrics *m)
{
    memset(m, 0, sizeof *m);
}

void metrics_request(metrics *m, int route, int code, unsigned status, uint64_t latency_ns)
{
    (void)status;
    if (route < 0 || route >= ROUTE_COUNT || code < 0 || code >= COFFER_CODE_LIMIT)
        return;
    atomic_fetch_add(&m->requests[route][code], 1);
    uint64_t us = latency_ns / 1000;
    size_t bucket = 0;
    while (bucket < METRICS_LATENCY_BUCKETS && us > latency_bounds_us[bucket])
        bucket++;
    atomic_fetch_add(&m->latency[bucket], 1);
    atomic_fetch_add(&m->latency_sum_us, us);
}

static void render_requests(text_buffer *t, const metrics *m)
{
    text_printf(
        t, "# HELP coffer_http_requests_total HTTP requests answered, by route and result code.\n"
           "# TYPE coffer_http_requests_total counter\n");
    for (int route = 1; route < ROUTE_COUNT; route++)
        for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
            uint64_t count = atomic_load(&m->requests[route][code]);
            if (count)
                text_printf(t, "coffer_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                            routes_name(route), coffer_code_name(code), (unsigned long long)count);
        }
    text_printf(t, "# HELP coffer_http_request_duration_seconds Time from request to response.\n"
                   "# TYPE coffer_http_request_duration_seconds histogram\n");
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= METRICS_LATENCY_BUCKETS; i++) {
        cumulative += atomic_load(&m->latency[i]);
        if (i < METRICS_LATENCY_BUCKETS)
            text_printf(t, "coffer_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        (double)latency_bounds_us[i] / 1e6, (unsigned long long)cumulative);
        else
            text_printf(t, "coffer_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)cumulative);
    }
    text_printf(t, "coffer_http_request_duration_seconds_sum %g\n",
                (double)atomic_load(&m->latency_sum_us) / 1e6);
    text_printf(t, "coffer_http_request_duration_seconds_count %llu\n",
                (unsigned long long)cumulative);
}

/* A histogram whose bucket i counts values up to base * 2^i (the last bucket: above all). */
static void render_histogram(text_buffer *t, const char *name, const char *help,
                             const uint64_t *buckets, double base, double scale, double sum)
{
    text_printf(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (int i = 0; i < COFFER_HISTOGRAM_BUCKETS; i++) {
        cumulative += buckets[i];
        if (i + 1 < COFFER_HISTOGRAM_BUCKETS)
            text_printf(t, "%s_bucket{le=\"%g\"} %llu\n", name, base * (double)(1u << i) * scale,
                        (unsigned long long)cumulative);
        else
            text_printf(t, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
    }
    text_printf(t, "%s_sum %g\n", name, sum);
    text_printf(t, "%s_count %llu\n", name, (unsigned long long)cumulative);
}

static void render_results(text_buffer *t, coffer *db)
{
    uint64_t counts[COFFER_CODE_LIMIT];
    if (coffer_code_counts(db, counts, COFFER_CODE_LIMIT) != COFFER_OK)
        return;
    text_printf(t, "# HELP coffer_results_total Engine results by code (conflicts, rejections, "
                   "successes).\n# TYPE coffer_results_total counter\n");
    for (int code = 0; code < COFFER_CODE_LIMIT; code++)
        if (counts[code])
            text_printf(t, "coffer_results_total{code=\"%s\"} %llu\n", coffer_code_name(code),
                        (unsigned long long)counts[code]);
}

/* The on-disk index (a durable engine): how far behind the log it is and what it costs. */
static void render_index(text_buffer *t, const coffer_stats *s)
{
    if (!s->index_on)
        return;
    uint64_t lag =
        s->durable_seq > s->index_applied_seq ? s->durable_seq - s->index_applied_seq : 0;
    text_printf(t,
                "# HELP coffer_index_applied_seq The last seq the on-disk index applied.\n"
                "# TYPE coffer_index_applied_seq gauge\ncoffer_index_applied_seq %llu\n"
                "# HELP coffer_index_lag_events Durable seqs the on-disk index has not applied "
                "yet.\n# TYPE coffer_index_lag_events gauge\ncoffer_index_lag_events %llu\n"
                "# HELP coffer_index_records_total Log records the on-disk index applied since "
                "start.\n# TYPE coffer_index_records_total counter\n"
                "coffer_index_records_total %llu\n"
                "# HELP coffer_index_write_seconds_total Time the on-disk index spent applying "
                "records.\n# TYPE coffer_index_write_seconds_total counter\n"
                "coffer_index_write_seconds_total %.6f\n"
                "# HELP coffer_index_filter_bytes Memory of the on-disk index's filter of the "
                "transfer ids it holds.\n# TYPE coffer_index_filter_bytes gauge\n"
                "coffer_index_filter_bytes %llu\n",
                (unsigned long long)s->index_applied_seq, (unsigned long long)lag,
                (unsigned long long)s->index_records, (double)s->index_write_us_total / 1e6,
                (unsigned long long)s->index_filter_bytes);
}

/* Eviction of what the on-disk index holds, and the lookups of evicted ids. */
static void render_eviction(text_buffer *t, const coffer_stats *s)
{
    static const struct {
        const char *name, *type, *help;
        size_t offset;
    } figures[] = {
        {"coffer_evictions_total", "counter", "Times memory evicted what the on-disk index holds.",
         offsetof(coffer_stats, evictions)},
        {"coffer_evicted_transfers_total", "counter", "Transfers evicted from memory.",
         offsetof(coffer_stats, evicted_transfers)},
        {"coffer_evicted_history_total", "counter", "History entries evicted from memory.",
         offsetof(coffer_stats, evicted_history)},
        {"coffer_evicted_seq", "gauge",
         "The highest seq evicted: older records may be answered from the index.",
         offsetof(coffer_stats, evicted_seq)},
        {"coffer_cold_checks_total", "counter",
         "Ids absent from memory checked against the index's filter.",
         offsetof(coffer_stats, cold_checks)},
        {"coffer_cold_reads_total", "counter",
         "Reads of the index for ids the filter could not rule out.",
         offsetof(coffer_stats, cold_reads)},
        {"coffer_overloaded_memory_total", "counter",
         "Submissions answered overloaded: memory full while the index caught up.",
         offsetof(coffer_stats, overloaded_memory)},
    };
    for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++) {
        uint64_t value;
        memcpy(&value, (const char *)s + figures[i].offset, sizeof value);
        text_printf(t, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", figures[i].name, figures[i].help,
                    figures[i].name, figures[i].type, figures[i].name, (unsigned long long)value);
    }
    text_printf(t,
                "# HELP coffer_eviction_seconds_total Time the writer spent evicting.\n# TYPE "
                "coffer_eviction_seconds_total counter\ncoffer_eviction_seconds_total %.6f\n",
                (double)s->eviction_us_total / 1e6);
}

static void render_engine(text_buffer *t, const coffer_stats *s)
{
    text_printf(t,
                "# HELP coffer_queue_events Events waiting for the writer.\n# TYPE "
                "coffer_queue_events gauge\ncoffer_queue_events %llu\n",
                (unsigned long long)s->queue_events);
    text_printf(t,
                "# HELP coffer_holds_pending Holds not yet posted, voided or expired.\n# TYPE "
                "coffer_holds_pending gauge\ncoffer_holds_pending %llu\n",
                (unsigned long long)s->holds_pending);
    text_printf(
        t,
        "# HELP coffer_holds_expired_total Holds ended by expiry since the data directory "
        "began.\n# TYPE coffer_holds_expired_total counter\ncoffer_holds_expired_total %llu\n",
        (unsigned long long)s->holds_expired);
    text_printf(
        t, "# HELP coffer_accounts Accounts.\n# TYPE coffer_accounts gauge\ncoffer_accounts %llu\n",
        (unsigned long long)s->accounts);
    text_printf(t,
                "# HELP coffer_transfers Recorded outcomes (transfers, posts, voids, "
                "rejections).\n# TYPE coffer_transfers gauge\ncoffer_transfers %llu\n",
                (unsigned long long)s->transfers);
    text_printf(
        t,
        "# HELP coffer_seq The last applied event seq.\n# TYPE coffer_seq gauge\ncoffer_seq %llu\n",
        (unsigned long long)s->seq);
    text_printf(t,
                "# HELP coffer_durable_seq The last seq known durable.\n# TYPE coffer_durable_seq "
                "gauge\ncoffer_durable_seq %llu\n",
                (unsigned long long)s->durable_seq);
    render_index(t, s);
    text_printf(t,
                "# HELP coffer_fsyncs_total Log syncs since start.\n# TYPE coffer_fsyncs_total "
                "counter\ncoffer_fsyncs_total %llu\n",
                (unsigned long long)s->fsyncs);
    text_printf(t,
                "# HELP coffer_storage_failed 1 after a failed log write or sync (writes and reads "
                "refused).\n# TYPE coffer_storage_failed gauge\ncoffer_storage_failed %d\n",
                s->storage_failed ? 1 : 0);
    text_printf(t,
                "# HELP coffer_memory_used_bytes What the in-memory tables and id indexes "
                "commit.\n# TYPE coffer_memory_used_bytes gauge\ncoffer_memory_used_bytes %llu\n",
                (unsigned long long)s->memory_used_bytes);
    text_printf(t,
                "# HELP coffer_memory_budget_bytes The memory budget (--memory-max): with the "
                "index on, memory evicts what the index holds; without it (or with nothing left "
                "to evict) writes get capacity_exceeded when it is reached.\n# TYPE "
                "coffer_memory_budget_bytes gauge\ncoffer_memory_budget_bytes %llu\n",
                (unsigned long long)s->memory_budget_bytes);
    render_eviction(t, s);
    text_printf(t,
                "# HELP coffer_disk_free_bytes Free space on the filesystem of the data "
                "directory (looked at most every 100 ms).\n# TYPE coffer_disk_free_bytes gauge\n"
                "coffer_disk_free_bytes %llu\n",
                (unsigned long long)s->disk_free_bytes);
    text_printf(t,
                "# HELP coffer_disk_reserve_bytes The free space kept on that filesystem "
                "(--disk-reserve; 0: none): below it, writes get capacity_exceeded.\n# TYPE "
                "coffer_disk_reserve_bytes gauge\ncoffer_disk_reserve_bytes %llu\n",
                (unsigned long long)s->disk_reserve_bytes);
    text_printf(t,
                "# HELP coffer_refused_disk_total Submissions refused with capacity_exceeded "
                "because the disk was below its reserve.\n# TYPE coffer_refused_disk_total "
                "counter\ncoffer_refused_disk_total %llu\n",
                (unsigned long long)s->refused_disk);
    render_histogram(t, "coffer_batch_events", "Events per applied batch.", s->batch_events, 1, 1,
                     (double)s->batch_events_total);
    render_histogram(t, "coffer_fsync_duration_seconds", "Duration of each log fsync.", s->fsync_us,
                     16, 1e-6, (double)s->fsync_us_total / 1e6);
}

static void render_feed(text_buffer *t, const metrics *m)
{
    text_printf(t,
                "# HELP coffer_feed_events_read_total Changes answered by GET /v1/events, in pages "
                "and streams.\n# TYPE coffer_feed_events_read_total counter\n"
                "coffer_feed_events_read_total %llu\n",
                (unsigned long long)atomic_load(&m->feed_events_read));
    text_printf(t,
                "# HELP coffer_feed_streams Event streams open.\n# TYPE coffer_feed_streams "
                "gauge\ncoffer_feed_streams %d\n",
                atomic_load(&m->feed_streams));
    text_printf(t,
                "# HELP coffer_feed_waiters Long-polls and min_seq reads waiting for the durable "
                "seq.\n# TYPE "
                "coffer_feed_waiters gauge\ncoffer_feed_waiters %zu\n",
                atomic_load(&m->feed_waiters));
    text_printf(t,
                "# HELP coffer_feed_streams_cut_total Event streams ended because their client "
                "read too slowly.\n# TYPE coffer_feed_streams_cut_total counter\n"
                "coffer_feed_streams_cut_total %llu\n",
                (unsigned long long)atomic_load(&m->feed_streams_cut));
}

/* One gauge or counter per webhook, labelled with its id (ids need no escaping: their bytes
 * are [A-Za-z0-9._:@/-]). */
static void render_webhook_figure(text_buffer *t, const char *name, const char *type,
                                  const char *help, const webhook_status *all, size_t count,
                                  double (*figure)(const webhook_status *status))
{
    text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < count; i++)
        text_printf(t, "%s{webhook=\"%s\"} %.15g\n", name, all[i].id, figure(&all[i]));
}

static double deliveries_of(const webhook_status *s)
{
    return (double)s->deliveries;
}

static double failures_of(const webhook_status *s)
{
    return (double)s->failures_total;
}

static double lag_events_of(const webhook_status *s)
{
    return (double)s->lag_events;
}

static double lag_seconds_of(const webhook_status *s)
{
    return s->lag_seconds;
}

static double failing_of(const webhook_status *s)
{
    return s->failing ? 1 : 0;
}

static void render_webhooks(text_buffer *t, webhooks *hooks)
{
    webhook_status *all = hooks ? malloc(WEBHOOKS_MAX * sizeof *all) : 0;
    size_t count = all ? webhooks_status_all(hooks, all, WEBHOOKS_MAX) : 0;
    if (count) {
        render_webhook_figure(t, "coffer_webhook_deliveries_total", "counter",
                              "Changes delivered (2xx) since start, by webhook.", all, count,
                              deliveries_of);
        render_webhook_figure(t, "coffer_webhook_failures_total", "counter",
                              "Failed delivery attempts since start, by webhook.", all, count,
                              failures_of);
        render_webhook_figure(t, "coffer_webhook_lag_events", "gauge",
                              "Durable changes after the webhook's cursor.", all, count,
                              lag_events_of);
        render_webhook_figure(t, "coffer_webhook_lag_seconds", "gauge",
                              "Age of the oldest change not yet delivered (0 when caught up).", all,
                              count, lag_seconds_of);
        render_webhook_figure(t, "coffer_webhook_failing", "gauge",
                              "1 when the webhook stopped after too many failures (enable it).",
                              all, count, failing_of);
    }
    free(all);
}

char *metrics_render(const metrics *m, coffer *db, const coffer_stats *stats, webhooks *hooks,
                     size_t *length)
{
    text_buffer t = {0};
    render_requests(&t, m);
    render_results(&t, db);
    render_engine(&t, stats);
    text_printf(&t,
                "# HELP coffer_http_deadline_closed_total Connections closed because a request's "
                "headers or body did not arrive in time.\n"
                "# TYPE coffer_http_deadline_closed_total counter\n"
                "coffer_http_deadline_closed_total %llu\n",
                (unsigned long long)atomic_load(&m->deadline_closed));
    text_printf(&t,
                "# HELP coffer_http_writes_undelivered_total Writes applied whose answer did "
                "not reach the client (the connection ended first; logged).\n"
                "# TYPE coffer_http_writes_undelivered_total counter\n"
                "coffer_http_writes_undelivered_total %llu\n",
                (unsigned long long)atomic_load(&m->writes_undelivered));
    text_printf(&t,
                "# HELP coffer_http_framing_refused_total Requests refused for their framing "
                "before libmicrohttpd parsed them (answered 400, 414 or 431; connection closed).\n"
                "# TYPE coffer_http_framing_refused_total counter\n"
                "coffer_http_framing_refused_total %llu\n",
                (unsigned long long)framing_sockets_refused());
    render_feed(&t, m);
    render_webhooks(&t, hooks);
    if (t.failed) {
        free(t.bytes);
        return 0;
    }
    *length = t.length;
    return t.bytes;
}
