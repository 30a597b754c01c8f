/*
 * test_index.c — the on-disk index (src/index, src/engine/indexer.c) after the model test's
 * random streams: every transfer and history entry the engine answers from memory is in the
 * index with the same content; a kill -9 resumes from the last flush and ends byte for byte
 * where a rebuild from the log ends; a deleted, damaged or foreign index is rebuilt with a log
 * line; coffer verify finds a tampered entry. A balance at a past seq or time read from the
 * index equals memory's, and the engine's reads answer from the index what memory no longer
 * holds (simulated on the engine's memory loaded from its snapshot, read as if only the newest
 * part of each account's history were there and every transfer were evicted).
 */
#include "unit/support.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "files.h"
#include "index/cold.h"
#include "index/derive.h"
#include "index/index.h"
#include "log/snapshot.h"
#include "model/generator.h"
#include "model/reference.h"

#define WORKLOAD_EVENTS 3000
#define HISTORY_PAGE 64

/* A data directory fed by a model stream, and the engine's log lines. */
typedef struct workload {
    char dir[64];
    char index_path[96];
    ref_ledger *reference;
    gen *generator;
    uint64_t clock_ns;
    pthread_mutex_t log_mutex;
    char log[8192];
} workload;

static uint64_t workload_clock(void *context)
{
    return __atomic_load_n((uint64_t *)context, __ATOMIC_ACQUIRE);
}

static void workload_log(void *context, const char *line)
{
    workload *w = context;
    pthread_mutex_lock(&w->log_mutex);
    size_t used = strlen(w->log);
    snprintf(w->log + used, sizeof w->log - used, "%s\n", line);
    pthread_mutex_unlock(&w->log_mutex);
}

/* The data directories the running test made, for remove_test_dirs. */
static char test_dirs[3][64];
static size_t test_dirs_count;

static workload *workload_create(uint64_t seed)
{
    workload *w = calloc(1, sizeof *w);
    assert_non_null(w);
    snprintf(w->dir, sizeof w->dir, "/tmp/coffer-index-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    assert_true(test_dirs_count < 3);
    snprintf(test_dirs[test_dirs_count++], sizeof test_dirs[0], "%s", w->dir);
    snprintf(w->index_path, sizeof w->index_path, "%s/%s", w->dir, INDEX_DIRECTORY);
    w->reference = ref_create(WORKLOAD_EVENTS + 64);
    w->generator = gen_create(seed, WORKLOAD_EVENTS + 64, w->reference);
    w->clock_ns = TEST_CLOCK_START_NS + seed % 1000;
    pthread_mutex_init(&w->log_mutex, 0);
    return w;
}

static void workload_free(workload *w)
{
    gen_destroy(w->generator);
    ref_destroy(w->reference);
    remove_tree(w->dir);
    pthread_mutex_destroy(&w->log_mutex);
    free(w);
}

/* Removes the test's data directories, whether it passed or failed (workload_free removes
 * them on the way, so most are gone already). */
static int remove_test_dirs(void **state)
{
    (void)state;
    for (size_t i = 0; i < test_dirs_count; i++)
        remove_tree(test_dirs[i]);
    test_dirs_count = 0;
    return 0;
}

static coffer *workload_open(workload *w, bool index_on)
{
    coffer_options options;
    coffer_options_init(&options);
    options.clock_ns = workload_clock;
    options.clock_context = &w->clock_ns;
    options.log = workload_log;
    options.log_context = w;
    options.index_on = index_on;
    options.fsync_never = true; /* no machine crash here: kill -9 keeps the page cache */
    coffer *db = 0;
    pthread_mutex_lock(&w->log_mutex);
    w->log[0] = 0; /* before the open: its index thread may log at once */
    pthread_mutex_unlock(&w->log_mutex);
    assert_int_equal(coffer_open(w->dir, &options, &db), COFFER_OK);
    return db;
}

/* Submits `events` more events of the stream (the reference follows, for the generator), one
 * batch in three under a submitter's name, so the index has names to keep. */
static void workload_run(workload *w, coffer *db, size_t events)
{
    static const char *const submitters[] = {0, "alice", "payments-service"};
    for (size_t done = 0, batches = 0; done < events; batches++) {
        coffer_event batch[GEN_BATCH_MAX];
        coffer_result results[GEN_BATCH_MAX], expected[GEN_BATCH_MAX];
        __atomic_store_n(&w->clock_ns, gen_next_clock(w->generator, w->clock_ns), __ATOMIC_RELEASE);
        bool atomic = false;
        size_t count = gen_next_batch(w->generator, batch, &atomic);
        const char *submitter = submitters[batches % 3];
        if (submitter)
            assert_int_equal(submit_batch_as(db, submitter, batch, count, atomic, results),
                             COFFER_OK);
        else
            assert_int_equal(coffer_submit(db, batch, count, atomic, results), COFFER_OK);
        ref_submit(w->reference, batch, count, atomic, w->clock_ns, expected);
        done += count;
    }
}

/* Waits (at most a minute) until the index has applied every durable seq. */
static void index_caught_up(coffer *db)
{
    for (int waited_ms = 0; waited_ms < 60000; waited_ms++) {
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
        assert_true(stats.index_on);
        if (stats.index_applied_seq == stats.durable_seq)
            return;
        usleep(1000);
    }
    fail_msg("the index did not catch up");
}

/* ---- the index answers what memory answers ---------------------------------------------- */

static void transfer_equal(const coffer_transfer *memory, const coffer_transfer *disk)
{
    assert_string_equal(disk->id, memory->id);
    assert_int_equal(disk->op, memory->op);
    assert_int_equal(disk->state, memory->state);
    assert_int_equal(disk->flags, memory->flags);
    assert_int_equal(disk->code, memory->code);
    assert_string_equal(disk->from, memory->from);
    assert_string_equal(disk->to, memory->to);
    assert_string_equal(disk->hold_id, memory->hold_id);
    assert_int_equal(disk->amount, memory->amount);
    assert_int_equal(disk->amount_requested, memory->amount_requested);
    assert_int_equal(disk->seq, memory->seq);
    assert_int_equal(disk->timestamp, memory->timestamp);
    assert_int_equal(disk->hold_timeout_ms, memory->hold_timeout_ms);
    assert_int_equal(disk->expires_at, memory->expires_at);
    assert_int_equal(disk->captured, memory->captured);
    /* Without its flag an expected version means nothing (nor is it shown): the index keeps 0,
     * memory keeps whatever the caller passed when the record has an aux part. */
    if (memory->flags & COFFER_FLAG_EXPECT_FROM)
        assert_int_equal(disk->expect_from_version, memory->expect_from_version);
    else
        assert_int_equal(disk->expect_from_version, 0);
    if (memory->flags & COFFER_FLAG_EXPECT_TO)
        assert_int_equal(disk->expect_to_version, memory->expect_to_version);
    else
        assert_int_equal(disk->expect_to_version, 0);
    assert_string_equal(disk->submitted_by, memory->submitted_by);
    assert_int_equal(disk->metadata_len, memory->metadata_len);
    assert_memory_equal(disk->metadata, memory->metadata, memory->metadata_len);
}

static void history_equal(const coffer_history_entry *memory, const coffer_history_entry *disk)
{
    assert_int_equal(disk->seq, memory->seq);
    assert_int_equal(disk->timestamp, memory->timestamp);
    assert_string_equal(disk->transfer_id, memory->transfer_id);
    assert_int_equal(disk->kind, memory->kind);
    assert_int_equal(disk->delta, memory->delta);
    assert_int_equal(disk->balance, memory->balance);
    assert_int_equal(disk->available, memory->available);
    assert_int_equal(disk->version, memory->version);
}

/* Every history entry of `account`, page by page, from memory and from the index. */
static size_t compare_history(coffer *db, index_db *index, const char *account)
{
    coffer_history_entry memory[HISTORY_PAGE], disk[HISTORY_PAGE];
    size_t total = 0;
    for (uint64_t after = 0;;) {
        size_t memory_count = 0, disk_count = 0;
        int code = coffer_history(db, account, after, HISTORY_PAGE, memory, &memory_count);
        assert_int_equal(index_history_page(index, account, after, HISTORY_PAGE, disk, &disk_count),
                         COFFER_OK);
        if (code == COFFER_ACCOUNT_NOT_FOUND)
            memory_count = 0;
        assert_int_equal(disk_count, memory_count);
        for (size_t i = 0; i < memory_count; i++)
            history_equal(&memory[i], &disk[i]);
        total += memory_count;
        if (memory_count < HISTORY_PAGE)
            return total;
        after = memory[memory_count - 1].seq;
    }
}

/* Reopens the directory without an index (memory rebuilt from the log) and compares. */
static void compare_with_memory(workload *w)
{
    coffer *db = workload_open(w, false);
    index_db *index = 0;
    char error[512];
    assert_int_equal(index_open(w->index_path, false, &index, error, sizeof error), COFFER_OK);
    size_t transfers = 0, history = 0, named = 0, ended_holds = 0;
    for (size_t i = 0; i < gen_transfer_count(w->generator); i++) {
        const char *id = gen_transfer_id(w->generator, i);
        coffer_transfer memory;
        index_transfer disk;
        int expected = coffer_transfer_get(db, id, &memory);
        assert_int_equal(index_get_transfer(index, id, strlen(id), &disk), expected);
        if (expected == COFFER_OK) {
            transfer_equal(&memory, &disk.transfer);
            transfers++;
            named += memory.submitted_by[0] != 0;
            ended_holds += memory.state == COFFER_STATE_CAPTURED ||
                           memory.state == COFFER_STATE_VOIDED ||
                           memory.state == COFFER_STATE_EXPIRED;
        }
    }
    for (size_t i = 0; i < gen_account_count(w->generator); i++)
        history += compare_history(db, index, gen_account_id(w->generator, i));
    assert_true(transfers > WORKLOAD_EVENTS / 4); /* the stream recorded plenty */
    assert_true(history > WORKLOAD_EVENTS / 4);
    assert_true(named > transfers / 4 && named < transfers); /* both kinds compared */
    assert_true(ended_holds > 0); /* holds read through their resolution keys */
    index_close(index);
    coffer_close(db);
}

static void index_matches_memory(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        workload *w = workload_create(seed);
        coffer *db = workload_open(w, true);
        workload_run(w, db, WORKLOAD_EVENTS / 2);
        coffer_close(db); /* the index may lag here: the next open goes on */
        db = workload_open(w, true);
        workload_run(w, db, WORKLOAD_EVENTS / 2);
        index_caught_up(db);
        coffer_close(db);
        compare_with_memory(w);
        workload_free(w);
    }
}

/* ---- past balances and the cold reads -------------------------------------------------- */

#define HISTORY_MAX (4 * WORKLOAD_EVENTS)

/* Every history entry of `account` from memory, oldest first. */
static size_t history_all(coffer *db, const char *account, coffer_history_entry *all)
{
    size_t total = 0;
    for (uint64_t after = 0;;) {
        size_t count = 0;
        int code = coffer_history(db, account, after, HISTORY_PAGE, all + total, &count);
        if (code == COFFER_ACCOUNT_NOT_FOUND)
            return 0; /* the stream never created it */
        assert_int_equal(code, COFFER_OK);
        total += count;
        assert_true(total < HISTORY_MAX);
        if (count < HISTORY_PAGE)
            return total;
        after = all[total - 1].seq;
    }
}

static void past_equal(const coffer_account *memory, const coffer_account *other)
{
    assert_int_equal(other->balance, memory->balance);
    assert_int_equal(other->available, memory->available);
    assert_int_equal(other->debits_held, memory->debits_held);
    assert_int_equal(other->version, memory->version);
}

/* Memory's balance of `account` at a seq or time against the index's entry for it; true when
 * the index found one. */
static bool past_matches(coffer *db, index_db *index, const char *account, int at, uint64_t value)
{
    coffer_account memory;
    int code = coffer_account_get(db, account, at, value, &memory);
    if (code == COFFER_ACCOUNT_NOT_FOUND)
        return false; /* created after it */
    assert_int_equal(code, COFFER_OK);
    coffer_history_entry entry;
    size_t length = strlen(account);
    int found = at == COFFER_AT_SEQ ? index_history_at(index, account, length, value, &entry)
                                    : index_history_at_time(index, account, length, value, &entry);
    if (found == COFFER_TRANSFER_NOT_FOUND) {
        assert_int_equal(memory.version, 1);
        assert_int_equal(memory.balance, 0);
        return false;
    }
    assert_int_equal(found, COFFER_OK);
    assert_true(at == COFFER_AT_SEQ ? entry.seq <= value : entry.timestamp <= value);
    coffer_account disk = {.balance = entry.balance,
                           .available = entry.available,
                           .debits_held = entry.balance - entry.available,
                           .version = entry.version};
    past_equal(&memory, &disk);
    return true;
}

static void past_balances_match_memory(void **state)
{
    (void)state;
    workload *w = workload_create(31);
    coffer *db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS);
    index_caught_up(db);
    coffer_close(db);
    db = workload_open(w, false);
    index_db *index = 0;
    char error[512];
    assert_int_equal(index_open(w->index_path, false, &index, error, sizeof error), COFFER_OK);
    coffer_history_entry *all = malloc(HISTORY_MAX * sizeof *all);
    assert_non_null(all);
    size_t found = 0, probes = 0;
    for (size_t a = 0; a < gen_account_count(w->generator); a++) {
        const char *account = gen_account_id(w->generator, a);
        size_t total = history_all(db, account, all);
        found += past_matches(db, index, account, COFFER_AT_SEQ, 0);
        found += past_matches(db, index, account, COFFER_AT_SEQ, UINT64_MAX);
        found += past_matches(db, index, account, COFFER_AT_TIMESTAMP, UINT64_MAX);
        for (size_t i = 0; i < total; i++) {
            for (int d = -1; d <= 1; d++) {
                found += past_matches(db, index, account, COFFER_AT_SEQ, all[i].seq + d);
                found +=
                    past_matches(db, index, account, COFFER_AT_TIMESTAMP, all[i].timestamp + d);
                probes += 2;
            }
        }
    }
    assert_true(probes > WORKLOAD_EVENTS && found > probes / 2);
    coffer_history_entry entry;
    assert_int_equal(index_history_at(index, "no-such-account", 15, UINT64_MAX, &entry),
                     COFFER_TRANSFER_NOT_FOUND);
    assert_int_equal(index_history_at_time(index, "no-such-account", 15, UINT64_MAX, &entry),
                     COFFER_TRANSFER_NOT_FOUND);
    free(all);
    index_close(index);
    coffer_close(db);
    workload_free(w);
}

/* Memory as the engine left it at close (its snapshot) and the index beside it: the reads of
 * cold.c run against these, and the engine (reopened without an index) gives memory's
 * answers through the public API. */
typedef struct cold_fixture {
    coffer *db;
    store memory;
    index_db *index;
    id_filter filter;
} cold_fixture;

static void cold_open(workload *w, cold_fixture *f)
{
    f->db = workload_open(w, false);
    store_limits limits = {1u << 20, 1u << 20, 256u << 20};
    assert_int_equal(store_init(&f->memory, &limits), COFFER_OK);
    snapshot_meta meta;
    bool found = false;
    char skipped[256] = "", error[512];
    assert_int_equal(
        snapshot_load_latest(&f->memory, w->dir, &meta, &found, skipped, sizeof skipped),
        COFFER_OK);
    /* Its tip is the log's last record (the engine's seq can be past it). */
    assert_true(found && meta.tip.last_seq == coffer_durable_seq(f->db));
    assert_int_equal(index_open(w->index_path, false, &f->index, error, sizeof error), COFFER_OK);
    assert_int_equal(index_position_get(f->index).applied_seq, meta.tip.last_seq);
    filter_init(&f->filter, 0);
    assert_int_equal(index_filter_attach(f->index, &f->filter, store_hash), COFFER_OK);
}

static void cold_close(cold_fixture *f)
{
    index_close(f->index);
    filter_free(&f->filter);
    store_free(&f->memory);
    coffer_close(f->db);
}

/* Every transfer by id as if memory had evicted it: the index's answer is memory's; an id
 * never recorded is not found, mostly by the filter alone. */
static void cold_transfers(workload *w, cold_fixture *f)
{
    size_t recorded = 0, filtered = 0;
    f->memory.trimmed_seq = 0;
    coffer_transfer memory, cold;
    const char *first = gen_transfer_id(w->generator, 0);
    assert_int_equal(cold_transfer_get(&f->memory, f->index, 0, first, strlen(first), &cold),
                     COFFER_TRANSFER_NOT_FOUND); /* never trimmed: memory's answer stands */
    f->memory.trimmed_seq = coffer_durable_seq(f->db);
    for (size_t i = 0; i < gen_transfer_count(w->generator); i++) {
        const char *id = gen_transfer_id(w->generator, i);
        int code = coffer_transfer_get(f->db, id, &memory);
        assert_int_equal(cold_transfer_get(&f->memory, f->index, &f->filter, id, strlen(id), &cold),
                         code);
        if (code == COFFER_OK) {
            transfer_equal(&memory, &cold);
            recorded++;
        }
    }
    for (int i = 0; i < 1000; i++) {
        char id[32];
        int length = snprintf(id, sizeof id, "never-recorded-%d", i);
        assert_int_equal(cold_transfer_get(&f->memory, f->index, 0, id, (size_t)length, &cold),
                         COFFER_TRANSFER_NOT_FOUND);
        filtered += !filter_maybe(&f->filter, store_hash(id, (size_t)length));
    }
    assert_true(recorded > gen_transfer_count(w->generator) / 4);
    assert_true(filtered > 950); /* a false positive costs a RocksDB get, not an error */
    assert_int_equal(cold_transfer_get(&f->memory, 0, 0, first, strlen(first), &cold),
                     COFFER_STORAGE_FAILED); /* trimmed without a readable index */
}

/* One account's history paged with the entries below ordinal hot_from read from the index:
 * the same entries as memory's, no duplicate and no gap, from every kind of starting point. */
static void cold_history(cold_fixture *f, uint32_t account, const coffer_history_entry *all,
                         size_t total, uint32_t hot_from)
{
    enum { LIMIT = 7 };
    coffer_history_entry page[LIMIT];
    for (size_t start = 0; start <= total; start += total / 5 + 1) {
        /* After the previous entry's seq, and just before this entry's: the same page. */
        for (int just_before = 0; just_before <= (start < total); just_before++) {
            uint64_t after = just_before ? all[start].seq - 1 : start ? all[start - 1].seq : 0;
            size_t next = start;
            for (;;) {
                size_t count = 0;
                assert_int_equal(cold_history_page(&f->memory, f->index, account, hot_from, after,
                                                   LIMIT, page, &count),
                                 COFFER_OK);
                assert_true(count <= LIMIT && next + count <= total);
                for (size_t i = 0; i < count; i++)
                    history_equal(&all[next + i], &page[i]);
                next += count;
                if (count < LIMIT)
                    break;
                after = page[count - 1].seq;
            }
            assert_int_equal(next, total);
        }
    }
}

/* One account's balances at past seqs and times with the entries below hot_from cold. */
static void cold_past(cold_fixture *f, const char *id, uint32_t account,
                      const coffer_history_entry *all, size_t total, uint32_t hot_from)
{
    for (size_t i = 0; i < total; i++) {
        for (int at = COFFER_AT_SEQ; at <= COFFER_AT_TIMESTAMP; at++) {
            uint64_t value = (at == COFFER_AT_SEQ ? all[i].seq : all[i].timestamp) - (i % 2);
            coffer_account memory, cold;
            int code = coffer_account_get(f->db, id, at, value, &memory);
            if (code == COFFER_ACCOUNT_NOT_FOUND)
                continue; /* created after it: decided before the history is read */
            assert_int_equal(code, COFFER_OK);
            assert_int_equal(
                cold_account_at(&f->memory, f->index, account, hot_from, at, value, &cold),
                COFFER_OK);
            past_equal(&memory, &cold);
        }
    }
}

static void cold_reads_come_from_the_index(void **state)
{
    (void)state;
    assert_true(COFFER_AT_SEQ + 1 == COFFER_AT_TIMESTAMP);
    workload *w = workload_create(32);
    coffer *db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS);
    index_caught_up(db);
    coffer_close(db); /* flushes the index, writes a snapshot */
    cold_fixture f;
    cold_open(w, &f);
    cold_transfers(w, &f);
    coffer_history_entry *all = malloc(HISTORY_MAX * sizeof *all);
    assert_non_null(all);
    size_t split = 0;
    for (size_t a = 0; a < gen_account_count(w->generator); a++) {
        const char *id = gen_account_id(w->generator, a);
        size_t total = history_all(f.db, id, all);
        if (total == 0)
            continue; /* never created, or never moved */
        uint32_t account =
            store_account_find(&f.memory, id, strlen(id), store_hash(id, strlen(id)));
        assert_int_not_equal(account, STORE_NONE);
        uint32_t hot_froms[] = {0, 1, (uint32_t)total / 2, (uint32_t)total};
        for (size_t h = 0; h < 4; h++) {
            cold_history(&f, account, all, total, hot_froms[h]);
            cold_past(&f, id, account, all, total, hot_froms[h]);
        }
        size_t count = 0;
        assert_int_equal(
            cold_history_page(&f.memory, 0, account, (uint32_t)total, 0, 1, all, &count),
            COFFER_STORAGE_FAILED); /* cold, and no index to read it from */
        split += total >= 4;
    }
    assert_true(split > 2); /* some accounts had both a cold and a hot part */
    free(all);
    cold_close(&f);
    workload_free(w);
}

/* ---- crash, rebuild, verify ---------------------------------------------------------------- */

static int hash_entry(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                      size_t length)
{
    uint64_t *hash = context;
    for (size_t i = 0; i < key_length; i++)
        *hash = (*hash ^ key[i]) * 0x100000001b3ull;
    for (size_t i = 0; i < length; i++)
        *hash = (*hash ^ value[i]) * 0x100000001b3ull;
    return 0;
}

/* A digest of every key and value of the closed index, and its applied seq. */
static uint64_t index_digest(const workload *w, uint64_t *applied_seq)
{
    index_db *index = 0;
    char error[512];
    assert_int_equal(index_open(w->index_path, false, &index, error, sizeof error), COFFER_OK);
    uint64_t hash = 0xcbf29ce484222325ull;
    const uint8_t prefixes[] = {INDEX_KEY_HISTORY, INDEX_KEY_META, INDEX_KEY_RESOLUTION,
                                INDEX_KEY_TRANSFER};
    for (size_t i = 0; i < sizeof prefixes; i++)
        assert_int_equal(index_scan(index, prefixes[i], hash_entry, &hash), COFFER_OK);
    *applied_seq = index_position_get(index).applied_seq;
    index_close(index);
    return hash;
}

/* Opens with the index on, lets it catch up, closes: the log lines stay in w->log. */
static uint64_t reopen_and_catch_up(workload *w)
{
    coffer *db = workload_open(w, true);
    index_caught_up(db);
    uint64_t durable = coffer_durable_seq(db);
    coffer_close(db);
    return durable;
}

static void log_has(workload *w, const char *text)
{
    if (!strstr(w->log, text)) {
        print_error("log lines:\n%s\nexpected: %s\n", w->log, text);
        fail();
    }
}

/* The child: a first half flushed by a clean close, a second half applied but not flushed
 * (a flush comes after 32 MiB of log or 30 s), then kill -9. */
static void crash_child(workload *w)
{
    coffer *db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS / 2);
    index_caught_up(db);
    coffer_close(db);
    db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS / 2);
    index_caught_up(db);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_true(stats.index_flushed_seq < stats.index_applied_seq);
    raise(SIGKILL);
}

static void kill_resumes_from_checkpoint(void **state)
{
    (void)state;
    workload *w = workload_create(7);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        crash_child(w);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    uint64_t checkpoint = 0;
    index_digest(w, &checkpoint);
    uint64_t log_tail = reopen_and_catch_up(w);
    assert_true(checkpoint > 0 && checkpoint < log_tail); /* it had to replay the second half */
    assert_null(strstr(w->log, "rebuilding"));
    uint64_t resumed_seq = 0, rebuilt_seq = 0;
    uint64_t resumed = index_digest(w, &resumed_seq);
    assert_int_equal(resumed_seq, log_tail);

    remove_tree(w->index_path);
    reopen_and_catch_up(w);
    log_has(w, "is missing; building it from the log");
    assert_int_equal(index_digest(w, &rebuilt_seq), resumed);
    assert_int_equal(rebuilt_seq, log_tail);
    workload_free(w);
}

/* Writes one raw value into the closed index, as an attacker with the files could. */
static void index_tamper(const char *path, const uint8_t *key, size_t key_length,
                         const uint8_t *value, size_t length)
{
    rocksdb_options_t *options = rocksdb_options_create();
    char *error = 0;
    rocksdb_t *db = rocksdb_open(options, path, &error);
    assert_null(error);
    rocksdb_writeoptions_t *write = rocksdb_writeoptions_create();
    rocksdb_put(db, write, (const char *)key, key_length, (const char *)value, length, &error);
    assert_null(error);
    rocksdb_flushoptions_t *flush = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(flush, 1);
    rocksdb_flush(db, flush, &error);
    assert_null(error);
    rocksdb_flushoptions_destroy(flush);
    rocksdb_writeoptions_destroy(write);
    rocksdb_close(db);
    rocksdb_options_destroy(options);
}

/* Overwrites the start of every file of the index with zeroes (MANIFEST, CURRENT, tables). */
static void index_damage(const workload *w)
{
    char command[256];
    snprintf(command, sizeof command,
             "for f in %s/*; do dd if=/dev/zero of=$f bs=64 count=1 conv=notrunc 2>/dev/null; "
             "done",
             w->index_path);
    assert_int_equal(system(command), 0);
}

static void damaged_or_foreign_index_is_rebuilt(void **state)
{
    (void)state;
    workload *w = workload_create(11), *other = workload_create(12);
    coffer *db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS / 3);
    coffer_close(db);
    uint64_t good_seq = 0;
    uint64_t good = (reopen_and_catch_up(w), index_digest(w, &good_seq));

    index_damage(w);
    reopen_and_catch_up(w);
    log_has(w, "is damaged");
    uint64_t seq = 0;
    assert_int_equal(index_digest(w, &seq), good);

    /* An index of the previous format (its meta says so): rebuilt, not read. */
    uint8_t meta[256];
    size_t meta_length = 0;
    index_db *index = 0;
    char error[512];
    assert_int_equal(index_open(w->index_path, false, &index, error, sizeof error), COFFER_OK);
    assert_int_equal(
        index_read_value(index, (const uint8_t *)"M", 1, meta, sizeof meta, &meta_length),
        COFFER_OK);
    index_close(index);
    meta[0] = INDEX_FORMAT_VERSION - 1;
    index_tamper(w->index_path, (const uint8_t *)"M", 1, meta, meta_length);
    reopen_and_catch_up(w);
    char previous[32];
    snprintf(previous, sizeof previous, "its format is %d ", INDEX_FORMAT_VERSION - 1);
    log_has(w, previous);
    assert_int_equal(index_digest(w, &seq), good);

    /* Another ledger's index: its applied record is not in this log. */
    db = workload_open(other, true);
    workload_run(other, db, WORKLOAD_EVENTS / 3 + 200);
    index_caught_up(db);
    coffer_close(db);
    remove_tree(w->index_path);
    char command[256];
    snprintf(command, sizeof command, "cp -r %s %s", other->index_path, w->index_path);
    assert_int_equal(system(command), 0);
    reopen_and_catch_up(w);
    log_has(w, "rebuilding it from the log");
    assert_int_equal(index_digest(w, &seq), good);
    assert_int_equal(seq, good_seq);
    workload_free(other);
    workload_free(w);
}

/* Rewrites the first transfer the index holds with another amount. */
static int tamper_first(void *context, const uint8_t *key, size_t key_length, const uint8_t *value,
                        size_t length)
{
    uint8_t *copy = context;
    copy[0] = (uint8_t)key_length;
    memcpy(copy + 1, key, key_length);
    copy[1 + key_length] = (uint8_t)length;
    memcpy(copy + 2 + key_length, value, length);
    return 1;
}

static void verify_reports_index(void **state)
{
    (void)state;
    workload *w = workload_create(21);
    coffer *db = workload_open(w, true);
    workload_run(w, db, WORKLOAD_EVENTS / 3);
    index_caught_up(db);
    coffer_close(db);
    coffer_dir_report report;
    assert_int_equal(coffer_verify_dir(w->dir, 0, 0, 0, &report), COFFER_OK);
    assert_true(report.ok && report.index_found && report.index_ok);
    assert_int_equal(report.index_applied_seq, report.last_seq);

    /* One transfer's amount changed behind the log's back. */
    uint8_t entry[512];
    index_db *index = 0;
    char error[512];
    assert_int_equal(index_open(w->index_path, false, &index, error, sizeof error), COFFER_OK);
    assert_int_equal(index_scan(index, INDEX_KEY_TRANSFER, tamper_first, entry), 1);
    index_close(index);
    size_t key_length = entry[0], length = entry[1 + key_length];
    uint8_t *value = entry + 2 + key_length;
    value[32] ^= 1; /* the amount */
    index_tamper(w->index_path, entry + 1, key_length, value, length);
    assert_int_equal(coffer_verify_dir(w->dir, 0, 0, 0, &report), COFFER_OK);
    assert_false(report.ok);
    assert_true(report.index_found && !report.index_ok);
    assert_non_null(strstr(report.index_error, "differs from the log"));

    remove_tree(w->index_path);
    assert_int_equal(coffer_verify_dir(w->dir, 0, 0, 0, &report), COFFER_OK);
    assert_true(report.ok && !report.index_found);
    assert_non_null(strstr(report.index_error, "missing"));
    workload_free(w);
}

/* The index is opt-in: a durable engine opened with the default options keeps none. */
static void index_is_off_by_default(void **state)
{
    (void)state;
    workload *w = workload_create(22);
    coffer_options options;
    coffer_options_init(&options);
    assert_false(options.index_on);
    options.clock_ns = workload_clock;
    options.clock_context = &w->clock_ns;
    options.fsync_never = true;
    coffer *db = 0;
    assert_int_equal(coffer_open(w->dir, &options, &db), COFFER_OK);
    workload_run(w, db, WORKLOAD_EVENTS / 10);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(db, &stats), COFFER_OK);
    assert_false(stats.index_on);
    coffer_close(db);
    assert_int_equal(access(w->index_path, F_OK), -1);
    workload_free(w);
}

#define INDEX_TEST(f) cmocka_unit_test_teardown(f, remove_test_dirs)

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: its child forks before this process has used RocksDB, whose thread pool
         * is process-wide and does not survive a fork. */
        INDEX_TEST(kill_resumes_from_checkpoint),
        INDEX_TEST(index_matches_memory),
        INDEX_TEST(past_balances_match_memory),
        INDEX_TEST(cold_reads_come_from_the_index),
        INDEX_TEST(damaged_or_foreign_index_is_rebuilt),
        INDEX_TEST(verify_reports_index),
        INDEX_TEST(index_is_off_by_default),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
