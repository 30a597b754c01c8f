/*
 * engine.c — the single writer. Callers queue requests (submissions and reads); one thread
 * drains the queue into batches, stamps them with seq and a clock that never goes back, sweeps
 * expired holds, applies, and releases the callers in order. That one thread is what rules out
 * races on balances: no account is ever locked.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "engine/engine.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>

#include "base/check.h"
#include "base/clock.h"

static uint64_t wall_clock_ns(void *context)
{
    (void)context;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* The first version of coffer_options ended after `io`: no caller knows a shorter one. */
#define OPTIONS_SIZE_MIN (offsetof(coffer_options, io) + sizeof(const coffer_io *))

const char *coffer_version(void)
{
    return COFFER_VERSION_STRING;
}

void coffer_options_init_sized(coffer_options *options, size_t size_bytes)
{
    if (!options || size_bytes < OPTIONS_SIZE_MIN)
        return;
    /* accounts_max, transfers_max and memory_bytes_max stay 0: the memory budget's default
     * decides, at open, from the machine it runs on. */
    coffer_options defaults = {.size = sizeof defaults};
    defaults.queue_events_max = 64u * 1024;
    defaults.clock_ns = wall_clock_ns;
    /* A caller built with newer headers has fields this library does not know: zero = their
     * default; one built with older headers gets only the fields it knows. */
    memset(options, 0, size_bytes);
    memcpy(options, &defaults, size_bytes < sizeof defaults ? size_bytes : sizeof defaults);
    options->size = size_bytes;
}

/* Copies the caller's options over the defaults in `into`: only the `size` bytes it knows, and
 * none of a newer caller's fields unless they are zero (their defaults), which this library
 * could not honour. */
static int options_copy(coffer_options *into, const coffer_options *given)
{
    if (!given)
        return COFFER_OK;
    if (given->size < OPTIONS_SIZE_MIN)
        return COFFER_INVALID_ARGUMENT; /* not from coffer_options_init() */
    const unsigned char *bytes = (const unsigned char *)given;
    for (size_t i = sizeof *into; i < given->size; i++)
        if (bytes[i])
            return COFFER_INVALID_ARGUMENT;
    memcpy(into, given, given->size < sizeof *into ? given->size : sizeof *into);
    into->size = sizeof *into;
    return COFFER_OK;
}

/* ---- the memory budget -------------------------------------------------------------------- */

/* The cgroup v2 memory limit of this process, or 0 when there is none (or it is unreadable). */
static uint64_t cgroup_memory_limit(void)
{
    FILE *file = fopen("/sys/fs/cgroup/memory.max", "r");
    if (!file)
        return 0;
    unsigned long long limit = 0;
    if (fscanf(file, "%llu", &limit) != 1) /* "max": no limit */
        limit = 0;
    fclose(file);
    return limit;
}

/* Half of the machine's memory, or of the cgroup's limit when lower: the other half is for the
 * kernel, the page cache the log and snapshots go through, and the process's other memory. */
static uint64_t memory_budget_default(void)
{
    struct sysinfo info;
    uint64_t total = sysinfo(&info) == 0 ? (uint64_t)info.totalram * info.mem_unit : 0;
    uint64_t cgroup = cgroup_memory_limit();
    if (cgroup && (total == 0 || cgroup < total))
        total = cgroup;
    uint64_t budget = total / 2;
    if (budget < STORE_MEMORY_MIN)
        budget = STORE_MEMORY_MIN;
    return budget > STORE_MEMORY_MAX ? STORE_MEMORY_MAX : budget;
}

int engine_store_limits(const coffer_options *options, store_limits *out, bool *defaulted)
{
    uint64_t memory = options->memory_bytes_max;
    if (defaulted)
        *defaulted = memory == 0;
    if (memory == 0)
        memory = memory_budget_default();
    if (memory < STORE_MEMORY_MIN || memory > STORE_MEMORY_MAX ||
        options->accounts_max > STORE_RECORDS_MAX || options->transfers_max > STORE_RECORDS_MAX)
        return COFFER_INVALID_ARGUMENT;
    out->accounts_max = options->accounts_max ? options->accounts_max : STORE_RECORDS_MAX;
    out->transfers_max = options->transfers_max ? options->transfers_max : STORE_RECORDS_MAX;
    out->memory_max = memory;
    return COFFER_OK;
}

void engine_format_bytes(uint64_t bytes, char *out, size_t size)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    uint64_t scale = 1;
    while (unit < 4 && bytes >= scale * 1024) {
        scale *= 1024;
        unit++;
    }
    if (bytes % scale == 0)
        snprintf(out, size, "%llu %s", (unsigned long long)(bytes / scale), units[unit]);
    else
        snprintf(out, size, "%.1f %s", (double)bytes / (double)scale, units[unit]);
}

/* Notes why a submission is refused for room, for coffer_capacity_detail (writer thread). */
static void capacity_note(coffer *db)
{
    const store *s = &db->store;
    char limit[96], budget[32];
    engine_format_bytes(s->limits.memory_max, budget, sizeof budget);
    if (s->refusal == STORE_REFUSAL_TABLE)
        snprintf(limit, sizeof limit, "the table of %s is at its record limit", s->refusal_table);
    else if (s->refusal == STORE_REFUSAL_KERNEL)
        snprintf(limit, sizeof limit, "the kernel refused memory within the budget of %s", budget);
    else
        snprintf(limit, sizeof limit, "memory budget of %s reached", budget);
    pthread_mutex_lock(&db->mutex);
    snprintf(db->capacity_detail, sizeof db->capacity_detail,
             "%s: %llu accounts, %llu transfers held", limit, (unsigned long long)s->accounts_count,
             (unsigned long long)s->transfers_count);
    pthread_mutex_unlock(&db->mutex);
}

/* A submission refused for room while memory still holds records it could evict once the
 * on-disk index has them is waiting, not out of room: it is answered `overloaded` (retry
 * later), and an eviction is asked for once the batch is through; also while the index is
 * still opening (under load, memory filled before it had: capacity_exceeded was a lie). When
 * everything up to the last seq is evicted already (or there is no index), the budget is really
 * full: capacity_exceeded, as capacity_note says. */
static int room_refusal(coffer *db, int code)
{
    const store *s = &db->store;
    if (code != COFFER_CAPACITY_EXCEEDED || s->refusal != STORE_REFUSAL_MEMORY ||
        !engine_index_expected(db) || s->trimmed_seq >= db->last_seq)
        return code;
    db->evict_due = true;
    atomic_fetch_add_explicit(&db->overloaded_memory, 1, memory_order_relaxed);
    return COFFER_OVERLOADED;
}

int coffer_capacity_detail(coffer *db, char *out, size_t size)
{
    if (!db || !out || size == 0)
        return COFFER_INVALID_ARGUMENT;
    pthread_mutex_lock(&db->mutex);
    snprintf(out, size, "%s", db->capacity_detail);
    pthread_mutex_unlock(&db->mutex);
    return COFFER_OK;
}

/* The budget at open, and what it holds once recovered: operators size it from this line. */
static void memory_log(coffer *db, bool defaulted)
{
    const store *s = &db->store;
    char budget[32], used[32], tables[32], split[320] = "";
    engine_format_bytes(s->limits.memory_max, budget, sizeof budget);
    engine_format_bytes(s->budget.used, used, sizeof used);
    uint64_t share = engine_tables_budget(db);
    engine_format_bytes(share, tables, sizeof tables);
    if (db->options.index_on) {
        char staging[32], cache[32], allowance[32], taken[32];
        engine_format_bytes(engine_index_staging_max(db), staging, sizeof staging);
        engine_format_bytes(engine_index_cache_bytes(db), cache, sizeof cache);
        engine_format_bytes(engine_process_allowance(db), allowance, sizeof allowance);
        engine_format_bytes(engine_budget_taken(db), taken, sizeof taken);
        snprintf(split, sizeof split,
                 " (the index's filter and its staging %s and cache %s, and the process's "
                 "allowance %s, %s of them from the budget; a twelfth kept free for an "
                 "eviction's map)",
                 staging, cache, allowance, taken);
    }
    uint64_t accounts, transfers;
    store_capacity_estimate(share, &accounts, &transfers);
    engine_log(db,
               "memory budget %s (%s), tables %s%s: room for about %llu transfers or %llu "
               "accounts; %s in use by %llu accounts, %llu transfers",
               budget, defaulted ? "default: half of the machine's memory" : "as configured",
               tables, split, (unsigned long long)transfers, (unsigned long long)accounts, used,
               (unsigned long long)s->accounts_count, (unsigned long long)s->transfers_count);
}

/* ---- the batch ----------------------------------------------------------------------------- */

/* Where the next expiry's outcome goes: a new entry of the batch's ticket, for the log, or
 * `unlogged` without a log. NULL when the ticket's list cannot grow. */
static coffer_result *ticket_expiry_outcome(engine_ticket *ticket, uint32_t hold,
                                            coffer_result *unlogged)
{
    if (!ticket)
        return unlogged;
    if (ticket->expiries_count == ticket->expiries_capacity) {
        size_t capacity = ticket->expiries_capacity ? 2 * ticket->expiries_capacity : 256;
        engine_expiry *grown = realloc(ticket->expiries, capacity * sizeof *grown);
        if (!grown)
            return 0;
        ticket->expiries = grown;
        ticket->expiries_capacity = capacity;
    }
    engine_expiry *expiry = &ticket->expiries[ticket->expiries_count++];
    expiry->hold = hold;
    return &expiry->result;
}

/* Expires every pending hold due at ts0: one event each at the front of the batch, soonest
 * first. Room is reserved a chunk at a time, since how many are due is known only here. */
static int sweep_expired(coffer *db, engine_ticket *ticket, uint64_t ts0, uint64_t *seq,
                         uint64_t *timestamp)
{
    store *s = &db->store;
    store_hold_ref due;
    while (store_hold_peek(s, &due) && due.expires_at <= ts0) {
        int code =
            store_reserve(s, 0, 0, 2 * ENGINE_EXPIRIES_PER_RESERVE, 0, ENGINE_EXPIRIES_PER_RESERVE);
        prefault_post(&db->prefault, &s->ahead);
        if (code == COFFER_CAPACITY_EXCEEDED)
            capacity_note(db);
        if (code != COFFER_OK)
            return room_refusal(db, code);
        for (uint64_t swept = 0; swept < ENGINE_EXPIRIES_PER_RESERVE && store_hold_peek(s, &due) &&
                                 due.expires_at <= ts0;) {
            if (s->transfers[due.transfer].state != COFFER_STATE_PENDING) {
                store_hold_pop(s); /* posted or voided since */
                continue;
            }
            coffer_result unlogged;
            coffer_result *outcome = ticket_expiry_outcome(ticket, due.transfer, &unlogged);
            if (!outcome)
                return COFFER_OUT_OF_MEMORY;
            store_hold_pop(s);
            ledger_expire(&db->ledger, due.transfer, (*seq)++, (*timestamp)++, outcome);
            swept++;
        }
    }
    return COFFER_OK;
}

static int reserve_batch(coffer *db, engine_request *batch)
{
    ledger_needs needs = {0};
    for (engine_request *request = batch; request; request = request->next)
        if (request->events)
            ledger_needs_add(&needs, request->events, request->count);
    int code = store_reserve(&db->store, needs.accounts, needs.transfers, needs.history,
                             needs.arena_bytes, needs.holds);
    prefault_post(&db->prefault, &db->store.ahead);
    if (code == COFFER_CAPACITY_EXCEEDED)
        capacity_note(db);
    return room_refusal(db, code);
}

/* Room for the name a submission is made under, which its transfers keep: COFFER_OK, or
 * capacity_exceeded for a new name past STORE_SUBMITTERS_MAX (that submission alone is
 * refused; names already known go on working). */
static int submitter_room(coffer *db, const engine_request *request)
{
    if (!request->submitted_by)
        return COFFER_OK;
    return store_submitter_room(&db->store, request->submitted_by, strlen(request->submitted_by));
}

/* A batch on an instance that follows: submissions are refused whole (every result says why,
 * nothing is applied or logged, no hold expires: expiries come from the leader's log), and
 * reads, the follower's own applies among them, run as on a leader. */
static void refuse_batch(coffer *db, engine_request *batch, int refusal)
{
    for (engine_request *request = batch; request; request = request->next) {
        if (atomic_load(&db->storage_failed) && !request->diagnostic) {
            request->status = COFFER_STORAGE_FAILED;
        } else if (request->events) {
            memset(request->results, 0, request->count * sizeof *request->results);
            for (size_t i = 0; i < request->count; i++)
                request->results[i].code = refusal;
            request->status = refusal;
        } else {
            request->status = request->read(db, request->context);
        }
    }
}

static void apply_batch(coffer *db, engine_request *batch, engine_ticket *ticket)
{
    uint64_t clock = db->options.clock_ns(db->options.clock_context);
    uint64_t ts0 = clock > db->last_timestamp ? clock : db->last_timestamp + 1;
    uint64_t seq = db->last_seq + 1, timestamp = ts0;
    if (ticket) {
        ticket->seq_base = seq;
        ticket->ts0 = ts0;
        ticket->expiries_count = 0;
    }
    /* Sweep before submitted events, or on the timer (no batch); a batch of reads alone leaves
     * state as it is, so reads never move time. */
    bool submits = !batch;
    for (engine_request *request = batch; request; request = request->next)
        submits |= request->events != 0;
    /* After a storage failure nothing is applied: the log can no longer make it durable. */
    int reserved = atomic_load(&db->storage_failed) ? COFFER_STORAGE_FAILED : COFFER_OK;
    if (reserved == COFFER_OK && submits)
        reserved = sweep_expired(db, ticket, ts0, &seq, &timestamp);
    /* A disk short of its reserve: the submissions are refused, the expiries swept above go on. */
    if (reserved == COFFER_OK && batch && submits && engine_disk_low(db)) {
        reserved = COFFER_CAPACITY_EXCEEDED;
        uint64_t refused = 0;
        for (engine_request *request = batch; request; request = request->next)
            refused += request->events != 0;
        engine_disk_refuse(db, refused);
    }
    if (reserved == COFFER_OK)
        reserved = reserve_batch(db, batch);
    for (engine_request *request = batch; request; request = request->next) {
        bool refused = reserved == COFFER_STORAGE_FAILED && !request->diagnostic;
        if (refused || (request->events && reserved != COFFER_OK)) {
            request->status = reserved;
            continue;
        }
        if (!request->events) {
            request->status = request->read(db, request->context);
            continue;
        }
        request->status = submitter_room(db, request);
        if (request->status == COFFER_OK)
            request->status = engine_cold_prepare(db, request->events, request->count);
        if (request->status != COFFER_OK)
            continue;
        request->seq0 = seq;
        ledger_apply(&db->ledger, request->events, request->count, request->atomic,
                     request->submitted_by, seq, timestamp, request->results);
        seq += request->count;
        timestamp += request->count;
        for (size_t i = 0; i < request->count; i++) {
            /* Only this thread writes the counters; readers load them without a lock. */
            _Atomic uint64_t *counter = &db->codes[request->results[i].code];
            atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            db->recorded_since_snapshot +=
                request->results[i].seq != 0 && !request->results[i].replayed;
        }
        db->events_applied += request->count;
        request->status = COFFER_OK;
    }
    COFFER_ASSERT(seq > db->last_seq && timestamp >= ts0);
    /* Only stamped events move time: reads and empty sweeps leave seq and the clock alone. */
    if (seq > db->last_seq + 1) {
        atomic_fetch_add(&db->batch_events[engine_bucket(seq - 1 - db->last_seq, 1)], 1);
        atomic_fetch_add(&db->batch_events_total, seq - 1 - db->last_seq);
        db->last_seq = seq - 1;
        db->last_timestamp = timestamp - 1;
        db->batches++;
    }
}

/* ---- eviction ------------------------------------------------------------------------------ */

/* The tables' share from which an eviction waits for the index to have flushed half of what
 * memory holds (memory_upkeep). */
#define ENGINE_EVICT_WAIT_BYTES (64ULL << 20)

/* Evicts from memory what the on-disk index holds (store_trim up to the index's flushed seq),
 * once memory passes three quarters of its budget or a submission found no room (and, for large
 * tables, the index has flushed at least half of the seqs memory holds); from half the
 * budget on, the index is asked to flush soon, so that by then it holds what there is to evict.
 * Runs on the writer between batches, after the log thread has written every ticket handed to
 * it: a ticket names held records by their index, which an eviction moves. */
static void memory_upkeep(coffer *db)
{
    store *s = &db->store;
    /* The index's id filter grows (~10 bits per transfer id) and counts against the budget. */
    s->budget.max = engine_tables_budget(db);
    uint64_t half = s->budget.max / 2;
    if ((s->budget.used < half && !db->evict_due) || !engine_index_usable(db))
        return;
    uint64_t flushed = engine_index_flushed_seq(db);
    if (flushed < db->last_seq)
        engine_index_flush_soon(db);
    if ((!db->evict_due && s->budget.used < half + half / 2) || flushed <= s->trimmed_seq)
        return;
    /* An eviction moves every record that stays, so it costs what memory holds, not what it
     * frees: past ENGINE_EVICT_WAIT_BYTES of tables it waits until the index has flushed at
     * least half of the seqs memory holds past the last one. Evicting whatever was flushed each
     * time memory passed three quarters spent more of the writer's core on evictions than on
     * batches, while the index, short of CPU on two cores, fell further behind
     * (docs/benchmarks.md). Meanwhile memory fills, and a full one answers overloaded until then.
     * Smaller tables evict in milliseconds, and waiting there only stalls the writer. */
    if (s->budget.max >= ENGINE_EVICT_WAIT_BYTES &&
        (flushed - s->trimmed_seq) * 2 < db->last_seq - s->trimmed_seq)
        return;
    db->evict_due = false;
    durability_drain(db);
    uint64_t before = s->budget.used, started = clock_monotonic_ns();
    store_trim_stats stats;
    int code = store_trim(s, flushed, &stats);
    if (code != COFFER_OK) {
        /* Nothing changed (its one allocation failed, or the arena is not in record order):
         * memory stays full, and writes are answered as the budget says. */
        engine_log(db, "memory: eviction up to seq %llu failed: %s", (unsigned long long)flushed,
                   coffer_code_name(code));
        return;
    }
    uint64_t took_us = (clock_monotonic_ns() - started) / 1000;
    atomic_fetch_add(&db->trims, 1);
    atomic_fetch_add(&db->trimmed_transfers, stats.transfers_evicted);
    atomic_fetch_add(&db->trimmed_history, stats.history_evicted);
    atomic_fetch_add(&db->trim_us_total, took_us);
    char from[32], to[32], budget[32];
    engine_format_bytes(before, from, sizeof from);
    engine_format_bytes(s->budget.used, to, sizeof to);
    engine_format_bytes(s->budget.max, budget, sizeof budget);
    engine_log(db,
               "memory: evicted %llu transfers and %llu history entries up to seq %llu (on disk in "
               "the index) in %llu ms; memory %s -> %s of %s",
               (unsigned long long)stats.transfers_evicted,
               (unsigned long long)stats.history_evicted, (unsigned long long)flushed,
               (unsigned long long)(took_us / 1000), from, to, budget);
}

/* ---- the writer thread --------------------------------------------------------------------- */

/* How long to sleep with an empty queue: until the next hold is due, at most a second. */
static struct timespec wait_deadline(coffer *db)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    uint64_t wait_ns = 1000000000ULL;
    store_hold_ref due;
    if (store_hold_peek(&db->store, &due)) {
        uint64_t now = db->options.clock_ns(db->options.clock_context);
        uint64_t until = due.expires_at > now ? due.expires_at - now : 0;
        if (until < wait_ns)
            wait_ns = until + 1000000; /* a millisecond past due */
    }
    deadline.tv_sec += (time_t)(wait_ns / 1000000000ULL);
    deadline.tv_nsec += (long)(wait_ns % 1000000000ULL);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return deadline;
}

/* With an injected clock, time is the caller's: holds expire only at the start of batches the
 * caller submits, so tests are deterministic. The wall clock also sweeps on a timer. */
static bool hold_due(coffer *db)
{
    if (db->options.clock_ns != wall_clock_ns || engine_write_refusal(db) != COFFER_OK)
        return false;
    store_hold_ref due;
    return store_hold_peek(&db->store, &due) &&
           due.expires_at <= db->options.clock_ns(db->options.clock_context);
}

/* Takes whole requests from the queue up to a batch's worth of events (at least one). */
static engine_request *take_batch(coffer *db)
{
    engine_request *head = db->queue_head, *last = head;
    uint64_t events = last->events ? last->count : 1;
    while (last->next) {
        uint64_t more = last->next->events ? last->next->count : 1;
        if (events + more > COFFER_BATCH_EVENTS_MAX)
            break;
        events += more;
        last = last->next;
    }
    db->queue_head = last->next;
    if (!db->queue_head)
        db->queue_tail = 0;
    last->next = 0;
    db->queue_events -= events;
    return head;
}

static void *writer_main(void *argument)
{
    pthread_setname_np(pthread_self(), "coffer-writer"); /* as ps, top and perf show it */
    coffer *db = argument;
    pthread_mutex_lock(&db->mutex);
    for (;;) {
        while (!db->queue_head && !db->stopping) {
            if (hold_due(db) || follow_step_down_due(db))
                break;
            struct timespec deadline = wait_deadline(db);
            db->writer_idle = true;
            pthread_cond_timedwait(&db->wake, &db->mutex, &deadline);
            db->writer_idle = false;
        }
        if (!db->queue_head && db->stopping)
            break;
        engine_request *batch = db->queue_head ? take_batch(db) : 0;
        pthread_mutex_unlock(&db->mutex);
        if (db->cluster.on)
            follow_writer_tick(db); /* a leader whose log failed steps down here */
        int refusal = engine_write_refusal(db);
        if (refusal != COFFER_OK) {
            /* A follower: what it applies came from the log, durable already. */
            refuse_batch(db, batch, refusal);
            engine_release(db, batch, COFFER_OK);
            durability_snapshot_tick(db);
        } else if (db->dir) {
            engine_ticket *ticket = durability_ticket(db);
            apply_batch(db, batch, ticket);
            durability_publish(db, ticket, batch); /* answered once durable */
            durability_snapshot_tick(db);
            memory_upkeep(db);
        } else {
            apply_batch(db, batch, 0);
            engine_release(db, batch, COFFER_OK);
        }
        pthread_mutex_lock(&db->mutex);
    }
    pthread_mutex_unlock(&db->mutex);
    return 0;
}

void engine_release(coffer *db, engine_request *requests, int failure)
{
    engine_request *callbacks = 0, **callbacks_tail = &callbacks;
    pthread_mutex_lock(&db->mutex);
    for (engine_request *request = requests, *next; request; request = next) {
        next = request->next; /* the caller may free its request once done is set */
        if (failure != COFFER_OK && !request->diagnostic)
            request->status = failure;
        if (request->job->on_done) {
            request->next = 0; /* answered outside the lock: the callback may queue others */
            *callbacks_tail = request;
            callbacks_tail = &request->next;
            continue;
        }
        request->done = true;
        pthread_cond_signal(&request->done_cond);
    }
    pthread_mutex_unlock(&db->mutex);
    for (engine_request *request = callbacks, *next; request; request = next) {
        next = request->next;
        coffer_job *job = request->job; /* on_done may free or reuse the job */
        job->status = request->status;
        request->done = true;
        job->on_done(job);
    }
}

void engine_log(coffer *db, const char *format, ...)
{
    char line[1024];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(line, sizeof line, format, arguments);
    va_end(arguments);
    if (db->options.log)
        db->options.log(db->options.log_context, line);
    else
        fprintf(stderr, "coffer: %s\n", line);
}

/* Appends a request to the queue (db->mutex held). COFFER_OK, or why it was refused. Sets
 * *wake when the caller must signal the writer once it has let go of the mutex: only an idle
 * writer is signalled, and only once, so a busy one is not woken into a held lock. */
static int queue_push(coffer *db, engine_request *request, uint64_t events, bool *wake)
{
    *wake = false;
    if (db->stopping)
        return COFFER_SHUTTING_DOWN;
    if (db->queue_events + events > db->options.queue_events_max)
        return COFFER_OVERLOADED;
    request->next = 0;
    request->done = false;
    if (db->queue_tail)
        db->queue_tail->next = request;
    else
        db->queue_head = request;
    db->queue_tail = request;
    db->queue_events += events;
    *wake = db->writer_idle;
    db->writer_idle = false;
    return COFFER_OK;
}

/* Queues a request and blocks until the writer (or the log thread) has answered it. */
static int engine_call(coffer *db, engine_request *request, uint64_t events)
{
    pthread_cond_init(&request->done_cond, 0);
    pthread_mutex_lock(&db->mutex);
    bool wake;
    int status = queue_push(db, request, events, &wake);
    if (wake)
        pthread_cond_signal(&db->wake); /* the wait below lets go of the mutex at once */
    if (status == COFFER_OK) {
        while (!request->done)
            pthread_cond_wait(&request->done_cond, &db->mutex);
        status = request->status;
    }
    pthread_mutex_unlock(&db->mutex);
    pthread_cond_destroy(&request->done_cond);
    return status;
}

int engine_run_on_writer(coffer *db, engine_read_fn read, void *context, bool diagnostic)
{
    for (;;) {
        coffer_job job = {.on_done = 0};
        engine_request *request = engine_job_request(&job, read, context);
        request->diagnostic = diagnostic;
        int status = engine_start(db, &job);
        if (status != COFFER_OVERLOADED)
            return status;
        struct timespec pause = {0, 1000000}; /* the queue is full of callers: let it drain */
        nanosleep(&pause, 0);
    }
}

/* The engine keeps its state in the caller's job: it must fit, aligned. */
_Static_assert(sizeof(engine_job) <= sizeof(((coffer_job *)0)->reserved_),
               "engine_job does not fit in coffer_job.reserved_: raise COFFER_JOB_RESERVED_WORDS");
_Static_assert(_Alignof(engine_job) <= _Alignof(uint64_t),
               "engine_job needs more alignment than coffer_job.reserved_ has");

engine_request *engine_job_request(coffer_job *job, engine_read_fn read, void *context)
{
    engine_request *request = &engine_job_of(job)->request;
    memset(request, 0, offsetof(engine_request, done_cond)); /* the condition is set up later */
    request->read = read;
    request->context = context;
    request->job = job;
    return request;
}

int engine_start(coffer *db, coffer_job *job)
{
    engine_request *request = &engine_job_of(job)->request;
    COFFER_ASSERT(request->job == job && (request->events != 0) != (request->read != 0));
    uint64_t events = request->events ? request->count : 1;
    if (!job->on_done)
        return job->status = engine_call(db, request, events);
    bool wake;
    pthread_mutex_lock(&db->mutex);
    int status = queue_push(db, request, events, &wake);
    pthread_mutex_unlock(&db->mutex);
    if (wake)
        pthread_cond_signal(&db->wake);
    return status;
}

/* ---- public API ---------------------------------------------------------------------------- */

/* Checks a submission and starts it as `job` (see engine_start). */
static int submit_start(coffer *db, coffer_job *job, const char *submitted_by,
                        const coffer_event *events, size_t count, bool atomic,
                        coffer_result *results)
{
    if (!db || !events || !results || count == 0)
        return COFFER_INVALID_ARGUMENT;
    if (submitted_by && strnlen(submitted_by, COFFER_SUBMITTER_MAX + 1) > COFFER_SUBMITTER_MAX)
        return COFFER_INVALID_ARGUMENT;
    if (count > COFFER_BATCH_EVENTS_MAX)
        return COFFER_BATCH_TOO_LARGE;
    engine_request *request = engine_job_request(job, 0, 0);
    request->submitted_by = submitted_by && submitted_by[0] ? submitted_by : 0;
    request->events = events;
    request->count = count;
    request->atomic = atomic;
    request->results = results;
    return engine_start(db, job);
}

int coffer_submit(coffer *db, const coffer_event *events, size_t count, bool atomic,
                  coffer_result *results)
{
    coffer_job job = {.on_done = 0};
    return submit_start(db, &job, 0, events, count, atomic, results);
}

int coffer_submit_async(coffer *db, coffer_job *job, const coffer_event *events, size_t count,
                        bool atomic, coffer_result *results)
{
    return coffer_submit_as_async(db, job, 0, events, count, atomic, results);
}

int coffer_submit_as_async(coffer *db, coffer_job *job, const char *submitted_by,
                           const coffer_event *events, size_t count, bool atomic,
                           coffer_result *results)
{
    if (!engine_job_usable(job))
        return COFFER_INVALID_ARGUMENT;
    return submit_start(db, job, submitted_by, events, count, atomic, results);
}

int coffer_health(coffer *db)
{
    if (!db)
        return COFFER_INVALID_ARGUMENT;
    return atomic_load(&db->storage_failed) ? COFFER_STORAGE_FAILED : COFFER_OK;
}

static void engine_free_options(coffer *db)
{
    free(db->log_location);
    free(db->log_name);
}

static void engine_free(coffer *db)
{
    engine_free_options(db);
    engine_cold_free(db);
    ledger_free(&db->ledger);
    store_free(&db->store);
    free(db);
}

int coffer_open(const char *dir, const coffer_options *options, coffer **db_out)
{
    if (!db_out)
        return COFFER_INVALID_ARGUMENT;
    *db_out = 0;
    coffer *db = calloc(1, sizeof *db);
    if (!db)
        return COFFER_OUT_OF_MEMORY;
    coffer_options_init(&db->options);
    int copied = options_copy(&db->options, options);
    if (!db->options.clock_ns)
        db->options.clock_ns = wall_clock_ns;
    db->lock_fd = -1;
    /* The caller may free its strings once the open returns: keep copies. */
    if (copied == COFFER_OK && db->options.log_location) {
        db->log_location = strdup(db->options.log_location);
        db->log_name = db->options.log_name ? strdup(db->options.log_name) : 0;
        if (!db->log_location || (db->options.log_name && !db->log_name))
            copied = COFFER_OUT_OF_MEMORY;
        db->options.log_location = db->log_location;
        db->options.log_name = db->log_name;
    } else {
        db->options.log_name = 0;
    }
    store_limits limits;
    bool defaulted;
    if (copied != COFFER_OK || db->options.queue_events_max < COFFER_BATCH_EVENTS_MAX ||
        engine_store_limits(&db->options, &limits, &defaulted) != COFFER_OK) {
        bool memory = copied == COFFER_OUT_OF_MEMORY;
        engine_free_options(db);
        free(db);
        return memory ? COFFER_OUT_OF_MEMORY : COFFER_INVALID_ARGUMENT;
    }
    int code = store_init(&db->store, &limits);
    /* Recovery has the whole budget (nothing else runs yet): a snapshot taken under the
     * tables' share then always fits, as does what recovery replays before it evicts. The
     * writer's first upkeep lowers it to the share. */
    if (code == COFFER_OK)
        code = ledger_init(&db->ledger, &db->store);
    if (code == COFFER_OK)
        code = engine_cold_init(db);
    if (code == COFFER_OK && dir)
        code = durability_open(db, dir); /* recovers, starts the log */
    /* Also when recovery ran out of room: the line says how far it got. */
    if (dir && (code == COFFER_OK || code == COFFER_CAPACITY_EXCEEDED))
        memory_log(db, defaulted);
    if (dir && code == COFFER_OK)
        engine_disk_open(db);
    if (code != COFFER_OK) {
        engine_free(db);
        return code;
    }
    pthread_mutex_init(&db->mutex, 0);
    pthread_cond_init(&db->wake, 0);
    engine_verify_init(db);
    prefault_start(&db->prefault); /* optional: without it the writer faults pages itself */
    if (pthread_create(&db->writer, 0, writer_main, db) != 0) {
        engine_verify_stop(db);
        prefault_stop(&db->prefault);
        durability_close(db);
        engine_free(db);
        return COFFER_INTERNAL;
    }
    indexer_start(db); /* after the writer: the index only reads what the log holds */
    if (db->cluster.on && follow_start(db) != COFFER_OK) {
        coffer_close(db);
        return COFFER_INTERNAL;
    }
    *db_out = db;
    return COFFER_OK;
}

void coffer_close(coffer *db)
{
    if (!db)
        return;
    follow_stop(db);        /* first: its applies and checks use the indexer and the writer */
    indexer_stop(db);       /* it reads the log, which durability_close closes */
    engine_verify_stop(db); /* before the writer: a running check waits for it */
    pthread_mutex_lock(&db->mutex);
    db->stopping = true;
    pthread_cond_signal(&db->wake);
    pthread_mutex_unlock(&db->mutex);
    pthread_join(db->writer, 0); /* the writer drains the queue first */
    durability_close(db);        /* the log thread drains what the writer handed it */
    prefault_stop(&db->prefault);
    pthread_cond_destroy(&db->wake);
    pthread_mutex_destroy(&db->mutex);
    engine_free(db);
}
