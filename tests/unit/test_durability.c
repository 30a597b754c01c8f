/*
 * test_durability.c — the durable engine across restarts, crashes and storage faults: a reopen
 * keeps every account, transfer, hold, history entry and version (after a clean close and after
 * a crash); a torn tail is cut at every byte of the last record and nothing before it is lost;
 * a flipped bit in the middle of the log or in a segment header refuses the open; a second
 * process cannot open a locked directory; failed writes and syncs (coffer_io) stop the engine
 * without losing an acknowledged batch; reads wait until what they see is durable.
 * Every test runs in its own temporary directory. "Crashes" are child processes that exit
 * without closing the engine, so recovery sees only what a real crash would leave behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log/checkpoint.h"
#include "log/record.h"
#include "log/wal.h"
#include "support.h"
#include "files.h"

extern char **environ;

enum {
    LOG_LINES_MAX = 128, /* log lines kept per open (the newest) */
    LOG_LINE_BYTES = 1024,
    FILES_MAX = 32,      /* files a data directory holds in these tests */
    RECORDS_MAX = 256,   /* records a segment holds in these tests */
    WAIT_MS_MAX = 10000, /* the longest any test waits for another thread */
};

#define MINUTE_MS 60000ULL
#define NS_PER_SECOND 1000000000ULL

/* Set in forked children: a failed check exits the child instead of jumping back into cmocka
 * (which would go on running the remaining tests in the child). */
static bool in_child;

static void expect_true_at(bool ok, const char *text, const char *file, int line)
{
    if (ok)
        return;
    if (in_child) {
        fprintf(stderr, "%s:%d: in the crashing child: check failed: %s\n", file, line, text);
        _exit(3);
    }
    _assert_true(0, text, file, line);
}

static void expect_int_at(long long actual, long long expected, const char *text, const char *file,
                          int line)
{
    if (actual == expected)
        return;
    if (in_child) {
        fprintf(stderr, "%s:%d: in the crashing child: %s is %lld, expected %lld\n", file, line,
                text, actual, expected);
        _exit(3);
    }
    _assert_int_equal((LargestIntegralType)actual, (LargestIntegralType)expected, file, line);
}

#define expect_true(condition) expect_true_at((condition), #condition, __FILE__, __LINE__)
#define expect_int(actual, expected)                                                               \
    expect_int_at((long long)(actual), (long long)(expected), #actual, __FILE__, __LINE__)

/* ---------------------------------------------------------------------------------------- */
/* Fault injection through coffer_io.                                                       */

/* Fails the Nth write_at or sync call (1-based; 0: never) with `error`, and counts calls made
 * after that, which a sticky-failed engine must not make. */
typedef struct fault {
    coffer_io io; /* io.context points back here */
    int error;
    atomic_long fail_write;
    atomic_long fail_sync;
    bool partial; /* the failing write first writes half of its bytes, as a torn write would */
    atomic_long writes;
    atomic_long syncs;
    atomic_bool fired;
    atomic_long calls_after;
} fault;

static int fault_write_at(int fd, const void *bytes, size_t length, uint64_t offset, void *context)
{
    fault *f = context;
    if (atomic_load(&f->fired))
        atomic_fetch_add(&f->calls_after, 1);
    long call = atomic_fetch_add(&f->writes, 1) + 1;
    if (call == atomic_load(&f->fail_write)) {
        atomic_store(&f->fired, true);
        if (f->partial && length > 1)
            (void)wal_io_default.write_at(fd, bytes, length / 2, offset, wal_io_default.context);
        errno = f->error;
        return -1;
    }
    return wal_io_default.write_at(fd, bytes, length, offset, wal_io_default.context);
}

static int fault_sync(int fd, void *context)
{
    fault *f = context;
    if (atomic_load(&f->fired))
        atomic_fetch_add(&f->calls_after, 1);
    long call = atomic_fetch_add(&f->syncs, 1) + 1;
    if (call == atomic_load(&f->fail_sync)) {
        atomic_store(&f->fired, true);
        errno = f->error;
        return -1;
    }
    return wal_io_default.sync(fd, wal_io_default.context);
}

static void fault_arm(fault *f, long fail_write, long fail_sync, int error, bool partial)
{
    memset(f, 0, sizeof *f);
    f->io = (coffer_io){fault_write_at, fault_sync, f};
    f->fail_write = fail_write;
    f->fail_sync = fail_sync;
    f->error = error;
    f->partial = partial;
}

/* Holds the next sync until the test gives a verdict: it succeeds or fails with EIO. */
typedef struct gate {
    coffer_io io;
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    bool armed;   /* the next sync waits */
    bool waiting; /* a sync is waiting for its verdict */
    int verdict;  /* 0: none yet; GATE_PASS or GATE_FAIL */
} gate;

enum { GATE_PASS = 1, GATE_FAIL = 2 };

static int gate_sync(int fd, void *context)
{
    gate *g = context;
    pthread_mutex_lock(&g->mutex);
    int verdict = GATE_PASS;
    if (g->armed) {
        g->armed = false;
        g->waiting = true;
        pthread_cond_broadcast(&g->changed);
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += WAIT_MS_MAX / 1000;
        while (g->verdict == 0)
            if (pthread_cond_timedwait(&g->changed, &g->mutex, &deadline) != 0)
                break;
        verdict = g->verdict ? g->verdict : GATE_FAIL; /* a test that never answers fails */
        g->verdict = 0;
        g->waiting = false;
    }
    pthread_mutex_unlock(&g->mutex);
    if (verdict == GATE_FAIL) {
        errno = EIO;
        return -1;
    }
    return wal_io_default.sync(fd, wal_io_default.context);
}

static int gate_write_at(int fd, const void *bytes, size_t length, uint64_t offset, void *context)
{
    (void)context;
    return wal_io_default.write_at(fd, bytes, length, offset, wal_io_default.context);
}

/* ---------------------------------------------------------------------------------------- */
/* The fixture: a temporary directory, the engine on it, its fake clock and its log lines.  */

typedef struct durable {
    char root[64]; /* this test's temporary directory, removed at the end */
    char dir[128]; /* the data directory in use, inside root */
    coffer *db;
    uint64_t clock_ns;          /* the engine's clock; its writer reads it: touch atomically */
    const coffer_io *io;        /* NULL: the real write and sync */
    uint64_t segment_bytes_max; /* 0: the default */
    uint32_t accounts_max, transfers_max;
    bool accept_data_loss;
    fault fault;
    gate gate;
    pthread_mutex_t log_mutex;
    uint64_t log_count; /* lines since the last open; the newest LOG_LINES_MAX are kept */
    char log[LOG_LINES_MAX][LOG_LINE_BYTES];
} durable;

static uint64_t durable_clock(void *context)
{
    durable *d = context;
    return __atomic_load_n(&d->clock_ns, __ATOMIC_SEQ_CST);
}

static void durable_clock_set(durable *d, uint64_t now_ns)
{
    __atomic_store_n(&d->clock_ns, now_ns, __ATOMIC_SEQ_CST);
}

static void durable_clock_advance_ms(durable *d, uint64_t milliseconds)
{
    __atomic_add_fetch(&d->clock_ns, milliseconds * TEST_NS_PER_MS, __ATOMIC_SEQ_CST);
}

static void log_capture(void *context, const char *line)
{
    durable *d = context;
    pthread_mutex_lock(&d->log_mutex);
    snprintf(d->log[d->log_count % LOG_LINES_MAX], LOG_LINE_BYTES, "%s", line);
    d->log_count++;
    pthread_mutex_unlock(&d->log_mutex);
}

static void log_clear(durable *d)
{
    pthread_mutex_lock(&d->log_mutex);
    d->log_count = 0;
    pthread_mutex_unlock(&d->log_mutex);
}

/* Does `line` contain `word` followed by the decimal `number` (and not a longer number)? */
static bool mentions_number(const char *line, const char *word, uint64_t number)
{
    char wanted[64];
    snprintf(wanted, sizeof wanted, "%s%llu", word, (unsigned long long)number);
    for (const char *at = strstr(line, wanted); at; at = strstr(at + 1, wanted)) {
        char next = at[strlen(wanted)];
        if (next < '0' || next > '9')
            return true;
    }
    return false;
}

/* Is there a log line (since the last open) containing `needle`, and `also` unless NULL, and
 * `word` followed by `number` unless `word` is NULL? */
static bool log_has(durable *d, const char *needle, const char *also, const char *word,
                    uint64_t number)
{
    bool found = false;
    pthread_mutex_lock(&d->log_mutex);
    uint64_t first = d->log_count > LOG_LINES_MAX ? d->log_count - LOG_LINES_MAX : 0;
    for (uint64_t i = first; i < d->log_count && !found; i++) {
        const char *line = d->log[i % LOG_LINES_MAX];
        found = strstr(line, needle) && (!also || strstr(line, also)) &&
                (!word || mentions_number(line, word, number));
    }
    pthread_mutex_unlock(&d->log_mutex);
    return found;
}

static void log_dump(durable *d)
{
    pthread_mutex_lock(&d->log_mutex);
    uint64_t first = d->log_count > LOG_LINES_MAX ? d->log_count - LOG_LINES_MAX : 0;
    for (uint64_t i = first; i < d->log_count; i++)
        print_message("engine log: %s\n", d->log[i % LOG_LINES_MAX]);
    pthread_mutex_unlock(&d->log_mutex);
}

#define assert_logged(d, needle, also, word, number)                                               \
    do {                                                                                           \
        if (!log_has((d), (needle), (also), (word), (number))) {                                   \
            log_dump(d);                                                                           \
            fail_msg("no engine log line has \"%s\" and \"%s\" and %s%llu", (needle),              \
                     (also) ? (const char *)(also) : "", (word) ? (const char *)(word) : "-",      \
                     (unsigned long long)(number));                                                \
        }                                                                                          \
    } while (0)

static coffer_options durable_options(durable *d)
{
    coffer_options options;
    coffer_options_init(&options);
    options.accounts_max = d->accounts_max;
    options.transfers_max = d->transfers_max;
    options.clock_ns = durable_clock;
    options.clock_context = d;
    options.log = log_capture;
    options.log_context = d;
    options.io = d->io;
    options.segment_bytes_max = d->segment_bytes_max;
    options.accept_data_loss = d->accept_data_loss;
    return options;
}

static int durable_try_open(durable *d)
{
    log_clear(d);
    coffer_options options = durable_options(d);
    return coffer_open(d->dir, &options, &d->db);
}

static void durable_open(durable *d)
{
    int code = durable_try_open(d);
    if (code != COFFER_OK)
        log_dump(d);
    assert_int_equal(code, COFFER_OK);
    assert_non_null(d->db);
}

static void durable_close(durable *d)
{
    coffer_close(d->db);
    d->db = NULL;
}

static void durable_reopen(durable *d)
{
    durable_close(d);
    durable_open(d);
}

/* ---------------------------------------------------------------------------------------- */
/* Files and directories.                                                                   */

static uint8_t *file_read(const char *path, size_t *length_out)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat info;
    assert_int_equal(fstat(fd, &info), 0);
    size_t length = (size_t)info.st_size;
    uint8_t *bytes = malloc(length ? length : 1);
    assert_non_null(bytes);
    assert_true(pread(fd, bytes, length, 0) == (ssize_t)length);
    close(fd);
    *length_out = length;
    return bytes;
}

static void file_write(const char *path, const void *bytes, size_t length, bool append)
{
    int fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
    assert_true(fd >= 0);
    assert_true(write(fd, bytes, length) == (ssize_t)length);
    close(fd);
}

static uint64_t file_size(const char *path)
{
    struct stat info;
    assert_int_equal(stat(path, &info), 0);
    return (uint64_t)info.st_size;
}

static void file_flip_bit(const char *path, uint64_t offset, unsigned bit)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, (off_t)offset), 1);
    byte ^= (uint8_t)(1u << bit);
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)offset), 1);
    close(fd);
}

/* A copy of the regular files of a data directory, to put it back exactly before each trial. */
typedef struct saved_file {
    char name[256];
    uint8_t *bytes;
    size_t length;
} saved_file;

typedef struct saved_dir {
    saved_file files[FILES_MAX];
    size_t count;
} saved_dir;

static void dir_save(const char *dir, saved_dir *out)
{
    memset(out, 0, sizeof *out);
    DIR *listing = opendir(dir);
    assert_non_null(listing);
    struct dirent *item;
    while ((item = readdir(listing))) {
        char path[4096];
        struct stat info;
        snprintf(path, sizeof path, "%s/%s", dir, item->d_name);
        if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode))
            continue;
        assert_true(out->count < FILES_MAX && strlen(item->d_name) < sizeof out->files[0].name);
        saved_file *file = &out->files[out->count++];
        snprintf(file->name, sizeof file->name, "%s", item->d_name);
        file->bytes = file_read(path, &file->length);
    }
    closedir(listing);
}

/* Empties `dir` (snapshots written at a close, anything else) and writes the saved files. */
static void dir_restore(const char *dir, const saved_dir *saved)
{
    remove_tree(dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    for (size_t i = 0; i < saved->count; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, saved->files[i].name);
        file_write(path, saved->files[i].bytes, saved->files[i].length, false);
    }
}

static void saved_free(saved_dir *saved)
{
    for (size_t i = 0; i < saved->count; i++)
        free(saved->files[i].bytes);
    memset(saved, 0, sizeof *saved);
}

static const saved_file *saved_find(const saved_dir *saved, const char *name)
{
    for (size_t i = 0; i < saved->count; i++)
        if (strcmp(saved->files[i].name, name) == 0)
            return &saved->files[i];
    fail_msg("the data directory has no %s", name);
    return NULL;
}

/* One record of a segment, found by walking the segment with record_check. */
typedef struct record_span {
    uint64_t offset, length, seq_base, last_seq;
} record_span;

/* Walks a whole, valid segment; returns how many records it holds. */
static size_t segment_walk(const uint8_t *bytes, size_t length, record_span *spans)
{
    size_t count = 0;
    uint64_t offset = WAL_SEGMENT_HEADER_BYTES;
    while (offset < length) {
        record_header header;
        assert_int_equal(record_check(bytes + offset, length - offset, &header), RECORD_OK);
        assert_true(count < RECORDS_MAX);
        spans[count++] = (record_span){offset, header.length, header.seq_base, header.last_seq};
        offset += header.length;
    }
    assert_int_equal(offset, length);
    return count;
}

static void segment_name(char *out, size_t size, uint32_t segment)
{
    snprintf(out, size, "log-%010u.cfl", segment);
}

/* Runs `work` on an engine over d->dir in a child process that then exits without closing it,
 * which is a crash as far as the directory can tell: no clean shutdown, no snapshot at close. */
static void run_then_crash(durable *d, void (*work)(durable *d))
{
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        in_child = true;
        int code = durable_try_open(d);
        expect_int(code, COFFER_OK);
        work(d);
        _exit(0); /* no coffer_close */
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---------------------------------------------------------------------------------------- */
/* A world of accounts, transfers, holds in every state, rejections and atomic batches.     */

#define META(text) .metadata = (text), .metadata_len = sizeof(text) - 1
#define ACCOUNT(name, currency_code, ...)                                                          \
    {                                                                                              \
        .op = COFFER_OP_CREATE_ACCOUNT, .id = (name), .currency = (currency_code), __VA_ARGS__     \
    }
#define TRANSFER(name, from_id, to_id, value, ...)                                                 \
    {                                                                                              \
        .op = COFFER_OP_TRANSFER, .id = (name), .from = (from_id), .to = (to_id),                  \
        .amount = (value), __VA_ARGS__                                                             \
    }
#define HOLD_MS(timeout) .hold_timeout_ms = (timeout)

enum { WORLD_EVENTS_MAX = 6 };

typedef struct world_batch {
    coffer_event events[WORLD_EVENTS_MAX];
    int codes[WORLD_EVENTS_MAX]; /* the outcome each event must get */
    size_t count;
    bool atomic;
    uint64_t advance_ms; /* the clock moves this far before the batch */
} world_batch;

/* One batch per entry: the table reads better than clang-format's one field per line. */
/* clang-format off */
static const world_batch world[] = {
    {.events = {ACCOUNT("bank", "USD", .flags = COFFER_FLAG_MIN_UNBOUNDED,
                        META("{\"kind\":\"issuer\"}")),
                ACCOUNT("alice", "USD"), ACCOUNT("bob", "USD"),
                ACCOUNT("jar", "USD", .flags = COFFER_FLAG_HAS_MAX, .max_balance = 500),
                ACCOUNT("euro", "EUR")},
     .codes = {COFFER_CREATED, COFFER_CREATED, COFFER_CREATED, COFFER_CREATED, COFFER_CREATED},
     .count = 5},
    {.events = {TRANSFER("fund-alice", "bank", "alice", 1000)},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {TRANSFER("t1", "alice", "bob", 100, META("{\"note\":\"rent\"}"))},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {TRANSFER("h-pending", "alice", "bob", 50, HOLD_MS(60 * MINUTE_MS))},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {TRANSFER("h-captured", "alice", "jar", 40, HOLD_MS(60 * MINUTE_MS))},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {{.op = COFFER_OP_POST, .id = "p-captured", .hold_id = "h-captured",
                 .amount = 25}},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {TRANSFER("h-voided", "alice", "bob", 30, HOLD_MS(60 * MINUTE_MS))},
     .codes = {COFFER_CREATED}, .count = 1},
    {.events = {{.op = COFFER_OP_VOID, .id = "v-voided", .hold_id = "h-voided"}},
     .codes = {COFFER_CREATED}, .count = 1},
    /* Rejections at steps 4-10 are recorded: the ids keep their codes forever. */
    {.events = {TRANSFER("t-poor", "alice", "bob", 1000000),
                TRANSFER("t-currency", "alice", "euro", 5),
                TRANSFER("t-version", "alice", "bob", 1, .flags = COFFER_FLAG_EXPECT_FROM,
                         .expect_from_version = 99),
                TRANSFER("t-missing", "alice", "nobody", 1),
                TRANSFER("t-same", "alice", "alice", 1),
                TRANSFER("t-cap", "bank", "jar", 1000)},
     .codes = {COFFER_INSUFFICIENT_BALANCE, COFFER_CURRENCY_MISMATCH, COFFER_VERSION_MISMATCH,
               COFFER_ACCOUNT_NOT_FOUND, COFFER_SAME_ACCOUNT, COFFER_EXCEEDS_MAX_BALANCE},
     .count = 6},
    {.events = {TRANSFER("h-expired", "alice", "bob", 20, HOLD_MS(1))},
     .codes = {COFFER_CREATED}, .count = 1},
    /* The sweep at the start of this batch expires h-expired. */
    {.events = {TRANSFER("t2", "bob", "alice", 10)},
     .codes = {COFFER_CREATED}, .count = 1, .advance_ms = 5},
    {.events = {TRANSFER("a-1", "alice", "bob", 5), TRANSFER("a-2", "bob", "jar", 5)},
     .codes = {COFFER_CREATED, COFFER_CREATED}, .count = 2, .atomic = true},
    {.events = {TRANSFER("f-1", "alice", "bob", 5), TRANSFER("f-2", "alice", "bob", 1000000),
                TRANSFER("f-3", "bob", "alice", 1)},
     .codes = {COFFER_BATCH_FAILED, COFFER_INSUFFICIENT_BALANCE, COFFER_BATCH_FAILED},
     .count = 3, .atomic = true},
    /* Up to: the jar's room (500 - 30) is less than alice's (830). */
    {.events = {TRANSFER("t-upto", "alice", "jar", 100000, .flags = COFFER_FLAG_UP_TO)},
     .codes = {COFFER_CREATED}, .count = 1},
};
/* clang-format on */

enum { WORLD_BATCHES = sizeof world / sizeof world[0] };

static const char *const world_accounts[] = {"bank", "alice", "bob", "jar", "euro"};
enum { WORLD_ACCOUNTS = sizeof world_accounts / sizeof world_accounts[0] };

/* Submits world batch `index`; the call itself must succeed. */
static int world_submit(durable *d, size_t index, coffer_result *results)
{
    const world_batch *batch = &world[index];
    if (batch->advance_ms)
        durable_clock_advance_ms(d, batch->advance_ms);
    memset(results, 0, WORLD_EVENTS_MAX * sizeof *results);
    return coffer_submit(d->db, batch->events, batch->count, batch->atomic, results);
}

/* Builds the world, checking every outcome (also in a crashing child). */
static void world_build(durable *d)
{
    for (size_t i = 0; i < WORLD_BATCHES; i++) {
        coffer_result results[WORLD_EVENTS_MAX];
        expect_int(world_submit(d, i, results), COFFER_OK);
        for (size_t k = 0; k < world[i].count; k++) {
            expect_int(results[k].code, world[i].codes[k]);
            expect_true(results[k].seq != 0);
        }
    }
}

/* Every id of the world has its outcome, and the balances are what the world makes them. */
static void world_assert_outcomes(coffer *db)
{
    for (size_t i = 0; i < WORLD_BATCHES; i++) {
        for (size_t k = 0; k < world[i].count; k++) {
            const coffer_event *event = &world[i].events[k];
            if (event->op == COFFER_OP_CREATE_ACCOUNT) {
                assert_string_equal(account_get(db, event->id).id, event->id);
                continue;
            }
            assert_recorded(db, event->id, world[i].codes[k]);
        }
    }
    assert_int_equal(transfer_get(db, "h-pending").state, COFFER_STATE_PENDING);
    assert_int_equal(transfer_get(db, "h-captured").state, COFFER_STATE_CAPTURED);
    assert_int_equal(transfer_get(db, "h-captured").captured, 25);
    assert_int_equal(transfer_get(db, "h-voided").state, COFFER_STATE_VOIDED);
    assert_int_equal(transfer_get(db, "h-expired").state, COFFER_STATE_EXPIRED);
    assert_int_equal(transfer_get(db, "t-upto").amount, 470);
    assert_int_equal(balance_of(db, "bank"), -1000);
    assert_int_equal(balance_of(db, "alice"), 410);
    assert_int_equal(available_of(db, "alice"), 360);
    assert_int_equal(balance_of(db, "bob"), 90);
    assert_int_equal(balance_of(db, "jar"), 500);
    assert_int_equal(balance_of(db, "euro"), 0);
}

/* Every batch of the world again: each event gets its original outcome and seq, nothing new. */
static void world_replay(durable *d)
{
    for (size_t i = 0; i < WORLD_BATCHES; i++) {
        coffer_result results[WORLD_EVENTS_MAX];
        assert_int_equal(
            coffer_submit(d->db, world[i].events, world[i].count, world[i].atomic, results),
            COFFER_OK);
        for (size_t k = 0; k < world[i].count; k++) {
            const coffer_event *event = &world[i].events[k];
            int code = world[i].codes[k];
            if (event->op == COFFER_OP_CREATE_ACCOUNT) {
                assert_int_equal(results[k].code, COFFER_EXISTS);
                continue;
            }
            assert_true(results[k].replayed);
            assert_int_equal(results[k].code, coffer_code_is_success(code) ? COFFER_EXISTS : code);
            assert_int_equal(results[k].seq, transfer_get(d->db, event->id).seq);
        }
    }
}

/* Everything a reader can see of the world. */
enum { HISTORY_MAX = 32, HOLDS_MAX = 8, WORLD_TRANSFERS_MAX = 32 };

typedef struct picture {
    coffer_stats stats;
    coffer_account accounts[WORLD_ACCOUNTS];
    coffer_account past[WORLD_ACCOUNTS]; /* as of t1's seq */
    coffer_history_entry history[WORLD_ACCOUNTS][HISTORY_MAX];
    size_t history_count[WORLD_ACCOUNTS];
    coffer_transfer transfers[WORLD_TRANSFERS_MAX];
    size_t transfers_count;
    coffer_transfer holds[HOLDS_MAX];
    size_t holds_count;
} picture;

static void picture_take(coffer *db, picture *p)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(coffer_stats_get(db, &p->stats), COFFER_OK);
    uint64_t t1_seq = transfer_get(db, "t1").seq;
    for (size_t i = 0; i < WORLD_ACCOUNTS; i++) {
        const char *id = world_accounts[i];
        assert_int_equal(coffer_account_get(db, id, COFFER_AT_NOW, 0, &p->accounts[i]), COFFER_OK);
        assert_int_equal(coffer_account_get(db, id, COFFER_AT_SEQ, t1_seq, &p->past[i]), COFFER_OK);
        assert_int_equal(
            coffer_history(db, id, 0, HISTORY_MAX, p->history[i], &p->history_count[i]), COFFER_OK);
        assert_true(p->history_count[i] < HISTORY_MAX);
    }
    for (size_t i = 0; i < WORLD_BATCHES; i++) {
        for (size_t k = 0; k < world[i].count; k++) {
            if (world[i].events[k].op == COFFER_OP_CREATE_ACCOUNT)
                continue;
            assert_true(p->transfers_count < WORLD_TRANSFERS_MAX);
            assert_int_equal(
                coffer_transfer_get(db, world[i].events[k].id, &p->transfers[p->transfers_count++]),
                COFFER_OK);
        }
    }
    assert_int_equal(coffer_holds_list(db, NULL, HOLDS_MAX, p->holds, &p->holds_count), COFFER_OK);
}

static void assert_same_account(const coffer_account *a, const coffer_account *b)
{
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->balance, b->balance);
    assert_int_equal(a->available, b->available);
    assert_int_equal(a->debits_held, b->debits_held);
    assert_int_equal(a->credits_held, b->credits_held);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->created_seq, b->created_seq);
    assert_int_equal(a->metadata_len, b->metadata_len);
    assert_memory_equal(a, b, sizeof *a);
}

static void assert_same_transfer(const coffer_transfer *a, const coffer_transfer *b)
{
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->code, b->code);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->seq, b->seq);
    assert_int_equal(a->timestamp, b->timestamp);
    assert_int_equal(a->amount, b->amount);
    assert_int_equal(a->expires_at, b->expires_at);
    assert_memory_equal(a, b, sizeof *a);
}

static void assert_same_picture(const picture *a, const picture *b)
{
    assert_int_equal(a->stats.seq, b->stats.seq);
    assert_int_equal(a->stats.durable_seq, b->stats.durable_seq);
    assert_int_equal(a->stats.accounts, b->stats.accounts);
    assert_int_equal(a->stats.transfers, b->stats.transfers);
    assert_int_equal(a->stats.holds_pending, b->stats.holds_pending);
    assert_int_equal(a->stats.holds_expired, b->stats.holds_expired);
    for (size_t i = 0; i < WORLD_ACCOUNTS; i++) {
        assert_same_account(&a->accounts[i], &b->accounts[i]);
        assert_same_account(&a->past[i], &b->past[i]);
        assert_int_equal(a->history_count[i], b->history_count[i]);
        for (size_t k = 0; k < a->history_count[i]; k++) {
            const coffer_history_entry *x = &a->history[i][k], *y = &b->history[i][k];
            assert_int_equal(x->seq, y->seq);
            assert_int_equal(x->kind, y->kind);
            assert_int_equal(x->delta, y->delta);
            assert_int_equal(x->version, y->version);
            assert_memory_equal(x, y, sizeof *x);
        }
    }
    assert_int_equal(a->transfers_count, b->transfers_count);
    for (size_t i = 0; i < a->transfers_count; i++)
        assert_same_transfer(&a->transfers[i], &b->transfers[i]);
    assert_int_equal(a->holds_count, b->holds_count);
    for (size_t i = 0; i < a->holds_count; i++)
        assert_same_transfer(&a->holds[i], &b->holds[i]);
}

static uint64_t picture_last_timestamp(const picture *p)
{
    uint64_t last = 0;
    for (size_t i = 0; i < p->transfers_count; i++)
        if (p->transfers[i].timestamp > last)
            last = p->transfers[i].timestamp;
    return last;
}

/* ---------------------------------------------------------------------------------------- */
/* Restarts.                                                                                */

static void test_reopen_keeps_everything(void **state)
{
    durable *d = *state;
    picture *before = calloc(1, sizeof *before), *after = calloc(1, sizeof *after);
    assert_non_null(before);
    assert_non_null(after);
    durable_open(d);
    world_build(d);
    world_assert_outcomes(d->db);
    picture_take(d->db, before);
    verify_ok(d->db);
    durable_close(d);

    /* A clock an hour behind: event timestamps still never go back. */
    durable_clock_set(d, TEST_CLOCK_START_NS - 3600 * NS_PER_SECOND);
    durable_open(d);
    picture_take(d->db, after);
    assert_same_picture(before, after);
    world_assert_outcomes(d->db);
    verify_ok(d->db);

    /* Retries after the restart are replays with the original seqs, and record nothing. */
    world_replay(d);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
    assert_int_equal(stats.transfers, before->stats.transfers);
    assert_true(stats.seq >= before->stats.seq);

    /* A new transfer continues the seq and the clock. */
    coffer_result next = transfer(d->db, "t-after", "bob", "alice", 1);
    assert_int_equal(next.code, COFFER_CREATED);
    assert_int_equal(next.seq, stats.seq + 1);
    assert_true(next.timestamp > picture_last_timestamp(before));
    durable_reopen(d);
    coffer_transfer again = transfer_get(d->db, "t-after");
    assert_int_equal(again.seq, next.seq);
    assert_int_equal(again.timestamp, next.timestamp);
    assert_int_equal(balance_of(d->db, "alice"), 411);
    verify_ok(d->db);
    durable_close(d);

    /* The same world from a process that crashes instead of closing: the log alone. */
    snprintf(d->dir, sizeof d->dir, "%s/crashed", d->root);
    durable_clock_set(d, TEST_CLOCK_START_NS);
    run_then_crash(d, world_build);
    durable_open(d);
    picture_take(d->db, after);
    assert_same_picture(before, after);
    world_assert_outcomes(d->db);
    verify_ok(d->db);
    world_replay(d);
    free(before);
    free(after);
}

/* Holds due while the engine is closed expire at the first batch after the reopen (the
 * injected clock sweeps only at batches), and the expiry itself survives the next restart. */
static void test_hold_expires_across_restart(void **state)
{
    durable *d = *state;
    durable_open(d);
    create_issuer(d->db, "bank", "USD");
    create_account(d->db, "alice", "USD");
    create_account(d->db, "bob", "USD");
    fund(d->db, "fund", "bank", "alice", 100);
    assert_int_equal(hold(d->db, "h-due", "alice", "bob", 40, MINUTE_MS).code, COFFER_CREATED);
    assert_int_equal(hold(d->db, "h-post", "alice", "bob", 5, MINUTE_MS).code, COFFER_CREATED);
    assert_int_equal(hold(d->db, "h-later", "alice", "bob", 10, 10 * MINUTE_MS).code,
                     COFFER_CREATED);
    durable_close(d);

    durable_clock_advance_ms(d, 30 * 1000);
    durable_open(d);
    fund(d->db, "tick-1", "bank", "bob", 1);
    assert_int_equal(transfer_get(d->db, "h-due").state, COFFER_STATE_PENDING);
    assert_int_equal(available_of(d->db, "alice"), 45);
    durable_close(d);

    durable_clock_advance_ms(d, 60 * 1000);
    durable_open(d);
    /* No batch yet, so no sweep yet. */
    assert_int_equal(transfer_get(d->db, "h-due").state, COFFER_STATE_PENDING);
    /* The sweep at the start of this batch expires both due holds before the post runs. */
    coffer_result late = post_hold(d->db, "p-late", "h-post", 0);
    assert_int_equal(late.code, COFFER_HOLD_EXPIRED);
    assert_int_equal(transfer_get(d->db, "h-due").state, COFFER_STATE_EXPIRED);
    assert_int_equal(transfer_get(d->db, "h-post").state, COFFER_STATE_EXPIRED);
    assert_int_equal(transfer_get(d->db, "h-later").state, COFFER_STATE_PENDING);
    assert_int_equal(available_of(d->db, "alice"), 90);
    assert_int_equal(history_last(d->db, "alice").kind, COFFER_HISTORY_EXPIRED);
    verify_ok(d->db);
    coffer_account alice = account_get(d->db, "alice");
    durable_reopen(d);
    assert_int_equal(transfer_get(d->db, "h-due").state, COFFER_STATE_EXPIRED);
    assert_int_equal(transfer_get(d->db, "h-post").state, COFFER_STATE_EXPIRED);
    assert_int_equal(transfer_get(d->db, "h-later").state, COFFER_STATE_PENDING);
    assert_recorded(d->db, "p-late", COFFER_HOLD_EXPIRED);
    coffer_account reopened = account_get(d->db, "alice");
    assert_same_account(&alice, &reopened);
    coffer_transfer holds[4];
    size_t count = 0;
    assert_int_equal(coffer_holds_list(d->db, NULL, 4, holds, &count), COFFER_OK);
    assert_int_equal(count, 1);
    assert_string_equal(holds[0].id, "h-later");
    verify_ok(d->db);
}

/* ---------------------------------------------------------------------------------------- */
/* Torn tails and corruption. The log is written by a crashing child, then cut or damaged.  */

/* Accounts, a fund, six transfers, and a last atomic batch with metadata and a hold. */
static void torn_build(durable *d)
{
    coffer_event accounts[3] = {account_event("bank", "USD"), account_event("alice", "USD"),
                                account_event("bob", "USD")};
    accounts[0].flags = COFFER_FLAG_MIN_UNBOUNDED;
    coffer_result results[3];
    expect_int(coffer_submit(d->db, accounts, 3, false, results), COFFER_OK);
    coffer_event event = transfer_event("fund", "bank", "alice", 1000);
    expect_int(coffer_submit(d->db, &event, 1, false, results), COFFER_OK);
    for (int k = 1; k <= 6; k++) {
        char id[16];
        snprintf(id, sizeof id, "t-%d", k);
        event = transfer_event(id, "alice", "bob", 10 * k);
        expect_int(coffer_submit(d->db, &event, 1, false, results), COFFER_OK);
        expect_int(results[0].code, COFFER_CREATED);
    }
    coffer_event last[3] = {
        with_metadata(transfer_event("last-a", "alice", "bob", 1), "{\"last\":\"a\"}"),
        with_metadata(hold_event("last-b", "alice", "bob", 2, MINUTE_MS), "{\"last\":\"b\"}"),
        transfer_event("last-c", "bob", "alice", 1)};
    expect_int(coffer_submit(d->db, last, 3, true, results), COFFER_OK);
    expect_int(results[2].code, COFFER_CREATED);
}

/* The state torn_build leaves, with or without its last batch. */
static void torn_assert_state(coffer *db, bool with_last)
{
    for (int k = 1; k <= 6; k++) {
        char id[16];
        snprintf(id, sizeof id, "t-%d", k);
        assert_recorded(db, id, COFFER_CREATED);
    }
    const char *last[3] = {"last-a", "last-b", "last-c"};
    for (int k = 0; k < 3; k++) {
        if (with_last)
            assert_recorded(db, last[k], COFFER_CREATED);
        else
            assert_not_recorded(db, last[k]);
    }
    /* last-a and last-c cancel out; last-b holds 2 of alice's 790. */
    assert_int_equal(balance_of(db, "bob"), 210);
    assert_int_equal(balance_of(db, "alice"), 790);
    assert_int_equal(available_of(db, "alice"), with_last ? 788 : 790);
    verify_ok(db);
}

/* The crashed torn_build directory, its segment and the records in it. */
typedef struct crashed_log {
    saved_dir pristine;
    char path[4096];
    const uint8_t *bytes;
    size_t length;
    record_span spans[RECORDS_MAX];
    size_t count;
} crashed_log;

static crashed_log *crashed_log_make(durable *d)
{
    run_then_crash(d, torn_build);
    crashed_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    dir_save(d->dir, &log->pristine);
    char name[64];
    segment_name(name, sizeof name, 1);
    wal_segment_path(log->path, sizeof log->path, d->dir, 1);
    const saved_file *segment = saved_find(&log->pristine, name);
    log->bytes = segment->bytes;
    log->length = segment->length;
    log->count = segment_walk(log->bytes, log->length, log->spans);
    assert_int_equal(log->count, 9); /* accounts, fund, six transfers, the last batch */
    return log;
}

static void crashed_log_free(crashed_log *log)
{
    saved_free(&log->pristine);
    free(log);
}

static void test_torn_tail_every_offset(void **state)
{
    durable *d = *state;
    crashed_log *log = crashed_log_make(d);
    const record_span *last = &log->spans[log->count - 1];
    uint64_t kept_seq = log->spans[log->count - 2].last_seq;
    assert_int_equal(last->offset + last->length, log->length);
    for (uint64_t cut = last->offset; cut < log->length; cut++) {
        dir_restore(d->dir, &log->pristine);
        file_write(log->path, log->bytes, cut, false);
        durable_open(d);
        uint64_t torn = cut - last->offset;
        if (torn > 0)
            assert_logged(d, "truncat", NULL, "", torn);
        else
            assert_false(log_has(d, "truncat", NULL, NULL, 0));
        assert_int_equal(file_size(log->path), last->offset);
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
        assert_int_equal(stats.seq, kept_seq);
        assert_int_equal(stats.durable_seq, kept_seq);
        torn_assert_state(d->db, false);
        if (torn > 8 && torn % 16 != 0 && cut + 8 < log->length) {
            durable_close(d);
            continue;
        }
        /* The log goes on from the cut, and the next recovery reads it whole. */
        coffer_result next = transfer(d->db, "after-cut", "alice", "bob", 1);
        assert_int_equal(next.code, COFFER_CREATED);
        assert_int_equal(next.seq, kept_seq + 1);
        durable_close(d);
        durable_open(d);
        assert_false(log_has(d, "truncat", NULL, NULL, 0));
        assert_int_equal(transfer_get(d->db, "after-cut").seq, next.seq);
        assert_not_recorded(d->db, "last-a");
        durable_close(d);
    }

    /* A flipped bit in the last record looks the same as a torn write: it is cut off. */
    dir_restore(d->dir, &log->pristine);
    file_flip_bit(log->path, last->offset + last->length / 2, 3);
    durable_open(d);
    assert_logged(d, "truncat", NULL, "", last->length);
    torn_assert_state(d->db, false);
    durable_close(d);

    /* Untouched, everything is there. */
    dir_restore(d->dir, &log->pristine);
    durable_open(d);
    assert_false(log_has(d, "truncat", NULL, NULL, 0));
    torn_assert_state(d->db, true);
    crashed_log_free(log);
}

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Bytes after the last record that are not a record (garbage, zeros from a file extended by a
 * crash, the start of a record that never finished) are a torn tail: cut, and nothing lost. */
static void test_garbage_tail_truncated(void **state)
{
    durable *d = *state;
    crashed_log *log = crashed_log_make(d);
    const record_span *last = &log->spans[log->count - 1];
    static const size_t lengths[] = {1, 3, 4, 5, 71, 72, 73, 104, 500, 4096};
    uint64_t random = 0x9E3779B97F4A7C15ULL;
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
            size_t length = lengths[i];
            uint8_t garbage[4096];
            if (kind == 0)
                for (size_t k = 0; k < length; k++)
                    garbage[k] = (uint8_t)xorshift(&random);
            if (kind == 1)
                memset(garbage, 0, length);
            if (kind == 2) { /* a copy of the last record's start, never finished */
                if (length >= last->length)
                    continue;
                memcpy(garbage, log->bytes + last->offset, length);
            }
            dir_restore(d->dir, &log->pristine);
            file_write(log->path, garbage, length, true);
            durable_open(d);
            assert_logged(d, "truncat", NULL, "", length);
            assert_int_equal(file_size(log->path), log->length);
            torn_assert_state(d->db, true);
            durable_close(d);
        }
    }
    crashed_log_free(log);
}

/* A damaged record followed by good ones is not a torn tail: the open refuses, naming the file
 * and the record's offset, and the log is left as it was. */
static void test_flipped_bit_mid_log_refused(void **state)
{
    durable *d = *state;
    crashed_log *log = crashed_log_make(d);
    size_t targets[] = {0, log->count / 2, log->count - 2};
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        const record_span *record = &log->spans[targets[t]];
        /* magic, version, length (low and high), entries, seq_base, ts0, last_seq, previous
         * hash, first entry, middle, own hash, last byte */
        uint64_t positions[] = {0,
                                4,
                                8,
                                11,
                                12,
                                16,
                                24,
                                32,
                                40,
                                72,
                                record->length / 2,
                                record->length - RECORD_HASH_BYTES,
                                record->length - 1};
        for (size_t p = 0; p < sizeof positions / sizeof positions[0]; p++) {
            dir_restore(d->dir, &log->pristine);
            file_flip_bit(log->path, record->offset + positions[p], (unsigned)(p % 8));
            d->db = (coffer *)1;
            int code = durable_try_open(d);
            if (code != COFFER_STORAGE_FAILED) {
                log_dump(d);
                fail_msg("record %zu, byte %llu flipped: open gave %s", targets[t],
                         (unsigned long long)positions[p], coffer_code_name(code));
            }
            assert_null(d->db);
            assert_logged(d, log->path, NULL, "offset ", record->offset);
            assert_int_equal(file_size(log->path), log->length);
        }
    }
    crashed_log_free(log);
}

static void test_flipped_bit_segment_header_refused(void **state)
{
    durable *d = *state;
    crashed_log *log = crashed_log_make(d);
    /* magic, version, segment number, seq before, chain hash, its own hash */
    static const uint64_t positions[] = {0, 7, 8, 12, 16, 24, 40, 55, 56, 63};
    for (size_t p = 0; p < sizeof positions / sizeof positions[0]; p++) {
        dir_restore(d->dir, &log->pristine);
        file_flip_bit(log->path, positions[p], (unsigned)(p % 8));
        d->db = (coffer *)1;
        int code = durable_try_open(d);
        if (code != COFFER_STORAGE_FAILED) {
            log_dump(d);
            fail_msg("header byte %llu flipped: open gave %s", (unsigned long long)positions[p],
                     coffer_code_name(code));
        }
        assert_null(d->db);
        assert_logged(d, log->path, NULL, NULL, 0);
        assert_int_equal(file_size(log->path), log->length);
    }
    crashed_log_free(log);
}

/* ---------------------------------------------------------------------------------------- */
/* The directory lock.                                                                      */

static void quiet_log(void *context, const char *line)
{
    (void)context;
    (void)line;
}

/* `test_durability --try-open DIR`: opens DIR in this other process; exits with the code. */
static int try_open_main(const char *dir)
{
    coffer_options options;
    coffer_options_init(&options);
    options.accounts_max = 1024;
    options.transfers_max = 16384;
    options.log = quiet_log;
    coffer *db = NULL;
    int code = coffer_open(dir, &options, &db);
    coffer_close(db);
    return code;
}

static int spawn_try_open(const char *dir)
{
    char *arguments[] = {"test_durability", "--try-open", (char *)dir, NULL};
    pid_t child;
    assert_int_equal(posix_spawn(&child, "/proc/self/exe", NULL, NULL, arguments, environ), 0);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_second_open_locked_out(void **state)
{
    durable *d = *state;
    durable_open(d);
    create_account(d->db, "alice", "USD");
    coffer *second = (coffer *)1;
    coffer_options options = durable_options(d);
    assert_int_equal(coffer_open(d->dir, &options, &second), COFFER_STORAGE_FAILED);
    assert_null(second);
    assert_logged(d, d->dir, NULL, NULL, 0);
    assert_int_equal(spawn_try_open(d->dir), COFFER_STORAGE_FAILED);
    /* The refused opens took nothing from the first. */
    create_account(d->db, "bob", "USD");
    durable_close(d);
    assert_int_equal(spawn_try_open(d->dir), COFFER_OK);
    durable_open(d);
    account_get(d->db, "alice");
    account_get(d->db, "bob");
}

/* ---------------------------------------------------------------------------------------- */
/* Storage faults.                                                                          */

/* What a run of the world against a faulty disk saw. */
typedef struct fault_run {
    int opened;          /* coffer_open's code */
    size_t acknowledged; /* world batches [0, acknowledged) were acknowledged */
    bool in_flight;      /* batch `acknowledged` got storage_failed while applied */
    coffer_result results[WORLD_BATCHES][WORLD_EVENTS_MAX];
    uint64_t durable_seq; /* stats after the failure */
} fault_run;

/* After the failure: every submit and read is refused, stats still answer. */
static void assert_refusing(durable *d, const char *error_text, fault_run *run)
{
    coffer_result results[WORLD_EVENTS_MAX];
    for (size_t i = run->acknowledged + 1; i < WORLD_BATCHES; i++)
        assert_int_equal(world_submit(d, i, results), COFFER_STORAGE_FAILED);
    coffer_account account;
    coffer_transfer transfer;
    coffer_history_entry entries[4];
    size_t count = 0;
    coffer_verify_report report;
    assert_int_equal(coffer_account_get(d->db, "bank", COFFER_AT_NOW, 0, &account),
                     COFFER_STORAGE_FAILED);
    assert_int_equal(coffer_transfer_get(d->db, "fund-alice", &transfer), COFFER_STORAGE_FAILED);
    assert_int_equal(coffer_history(d->db, "bank", 0, 4, entries, &count), COFFER_STORAGE_FAILED);
    assert_int_equal(coffer_holds_list(d->db, NULL, 1, &transfer, &count), COFFER_STORAGE_FAILED);
    assert_int_equal(coffer_verify(d->db, &report), COFFER_STORAGE_FAILED);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
    assert_true(stats.storage_failed);
    run->durable_seq = stats.durable_seq;
    assert_logged(d, error_text, NULL, NULL, 0);
}

/* Runs the world through `d->fault` until the failure, then checks the engine refuses. */
static void fault_run_world(durable *d, fault_run *run)
{
    memset(run, 0, sizeof *run);
    remove_tree(d->dir);
    durable_clock_set(d, TEST_CLOCK_START_NS);
    d->io = &d->fault.io;
    d->segment_bytes_max = 600; /* a new segment every two or three records */
    run->opened = durable_try_open(d);
    if (run->opened != COFFER_OK) {
        assert_int_equal(run->opened, COFFER_STORAGE_FAILED);
        assert_null(d->db);
        return;
    }
    for (; run->acknowledged < WORLD_BATCHES; run->acknowledged++) {
        size_t i = run->acknowledged;
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
        assert_false(stats.storage_failed);
        int status = world_submit(d, i, run->results[i]);
        if (status != COFFER_OK) {
            assert_int_equal(status, COFFER_STORAGE_FAILED);
            assert_true(atomic_load(&d->fault.fired));
            run->in_flight = true;
            break;
        }
        for (size_t k = 0; k < world[i].count; k++)
            assert_int_equal(run->results[i][k].code, world[i].codes[k]);
    }
    if (run->in_flight)
        assert_refusing(d, strerror(d->fault.error), run);
    durable_close(d);
    assert_int_equal(atomic_load(&d->fault.calls_after), 0); /* sticky: nothing written after */
}

/* Does any event of world batch `i` exist after the reopen? All of them or none may. */
static bool world_batch_present(coffer *db, size_t i)
{
    size_t present = 0;
    for (size_t k = 0; k < world[i].count; k++) {
        const coffer_event *event = &world[i].events[k];
        int code;
        if (event->op == COFFER_OP_CREATE_ACCOUNT) {
            coffer_account account;
            code = coffer_account_get(db, event->id, COFFER_AT_NOW, 0, &account);
            assert_true(code == COFFER_OK || code == COFFER_ACCOUNT_NOT_FOUND);
        } else {
            coffer_transfer record;
            code = coffer_transfer_get(db, event->id, &record);
            assert_true(code == COFFER_OK || code == COFFER_TRANSFER_NOT_FOUND);
        }
        present += code == COFFER_OK;
    }
    if (present != 0 && present != world[i].count)
        fail_msg("world batch %zu is partly there: %zu of %zu events", i, present, world[i].count);
    return present != 0;
}

static void assert_batch_as_answered(coffer *db, size_t i, const coffer_result *results)
{
    for (size_t k = 0; k < world[i].count; k++) {
        const coffer_event *event = &world[i].events[k];
        if (event->op == COFFER_OP_CREATE_ACCOUNT) {
            assert_int_equal(account_get(db, event->id).created_seq, results[k].seq);
            continue;
        }
        coffer_transfer record = transfer_get(db, event->id);
        assert_int_equal(record.code, results[k].code);
        assert_int_equal(record.seq, results[k].seq);
    }
}

/* Reopens with the real I/O: every acknowledged batch is there as it was answered, nothing
 * submitted after the failure is, the one in flight is whole or absent, and the log goes on.
 * Returns whether the batch in flight is there. */
static bool fault_check_reopen(durable *d, const fault_run *run)
{
    d->io = NULL;
    durable_open(d);
    for (size_t i = 0; i < run->acknowledged; i++) {
        assert_true(world_batch_present(d->db, i));
        assert_batch_as_answered(d->db, i, run->results[i]);
    }
    bool in_flight_present = false;
    if (run->in_flight) {
        in_flight_present = world_batch_present(d->db, run->acknowledged);
        if (in_flight_present)
            assert_batch_as_answered(d->db, run->acknowledged, run->results[run->acknowledged]);
        for (size_t i = run->acknowledged + 1; i < WORLD_BATCHES; i++)
            assert_false(world_batch_present(d->db, i));
    }
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
    assert_false(stats.storage_failed);
    if (run->in_flight && !in_flight_present)
        assert_int_equal(stats.durable_seq, run->durable_seq);
    verify_ok(d->db);
    /* Writable again, and what it writes is durable. */
    coffer_event accounts[2] = {account_event("late-a", "USD"), account_event("late-b", "USD")};
    coffer_result results[2];
    submit_batch(d->db, accounts, 2, false, results);
    assert_int_equal(results[1].code, COFFER_CREATED);
    durable_reopen(d);
    assert_int_equal(account_get(d->db, "late-b").created_seq, results[1].seq);
    durable_close(d);
    return in_flight_present;
}

/* How many write_at and sync calls the world makes on a healthy disk. */
static void fault_count_calls(durable *d, long *writes, long *syncs)
{
    fault_arm(&d->fault, 0, 0, 0, false);
    fault_run run;
    fault_run_world(d, &run);
    assert_int_equal(run.opened, COFFER_OK);
    assert_int_equal(run.acknowledged, WORLD_BATCHES);
    *writes = atomic_load(&d->fault.writes);
    *syncs = atomic_load(&d->fault.syncs);
    assert_true(*writes > (long)WORLD_BATCHES && *syncs > (long)WORLD_BATCHES);
    fault_check_reopen(d, &run);
}

/* Fails write call `n` for every n the world makes (the segment headers too). */
static void fault_sweep_writes(durable *d, int error, bool partial)
{
    long writes, syncs;
    fault_count_calls(d, &writes, &syncs);
    for (long n = 1; n <= writes; n++) {
        fault_arm(&d->fault, n, 0, error, partial);
        fault_run run;
        fault_run_world(d, &run);
        assert_true(atomic_load(&d->fault.fired));
        if (run.opened != COFFER_OK) { /* call 1: the first segment's header, in the open */
            d->io = NULL;
            durable_open(d);
            durable_close(d);
            continue;
        }
        assert_true(run.in_flight);
        /* Nothing of a failed write may surface, whole or torn. */
        assert_false(fault_check_reopen(d, &run));
    }
}

static void test_write_fails_eio(void **state)
{
    fault_sweep_writes(*state, EIO, false);
}

static void test_write_fails_enospc(void **state)
{
    fault_sweep_writes(*state, ENOSPC, false);
}

static void test_write_fails_torn(void **state)
{
    fault_sweep_writes(*state, EIO, true);
}

/* Fails sync call `n` for every n. The bytes of the batch in flight may be in the file (they
 * were written, only their sync failed): they may surface after a restart, but whole. */
static void test_sync_fails_eio(void **state)
{
    durable *d = *state;
    long writes, syncs;
    fault_count_calls(d, &writes, &syncs);
    for (long n = 1; n <= syncs; n++) {
        fault_arm(&d->fault, 0, n, EIO, false);
        fault_run run;
        fault_run_world(d, &run);
        assert_true(atomic_load(&d->fault.fired));
        if (run.opened != COFFER_OK) { /* the first segment's header, in the open */
            d->io = NULL;
            durable_open(d);
            durable_close(d);
            continue;
        }
        assert_true(run.in_flight);
        fault_check_reopen(d, &run);
    }
}

/* A failed write of the first segment's header inside the very first open (or a crash right
 * after the file is created) leaves log-0000000001.cfl empty or short. Nothing was ever
 * acknowledged, so once the disk is healthy the directory opens, empty. */
static void test_first_segment_header_torn(void **state)
{
    durable *d = *state;
    for (int partial = 0; partial < 2; partial++) {
        remove_tree(d->dir);
        fault_arm(&d->fault, 1, 0, ENOSPC, partial);
        d->io = &d->fault.io;
        assert_int_equal(durable_try_open(d), COFFER_STORAGE_FAILED);
        d->io = NULL;
        durable_open(d); /* the disk has room again */
        coffer_stats stats;
        assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
        assert_int_equal(stats.seq, 0);
        create_account(d->db, "alice", "USD");
        durable_reopen(d);
        account_get(d->db, "alice");
        durable_close(d);
    }
    /* The same left by a crash: an empty file, or a header cut short. */
    static const uint8_t header_start[30] = {'C', 'O', 'F', 'F', 'E', 'R', 'L', 'G', 1};
    for (size_t length = 0; length <= sizeof header_start; length += sizeof header_start) {
        remove_tree(d->dir);
        assert_int_equal(mkdir(d->dir, 0755), 0);
        char path[4096];
        wal_segment_path(path, sizeof path, d->dir, 1);
        file_write(path, header_start, length, false);
        durable_open(d);
        create_account(d->db, "alice", "USD");
        durable_reopen(d);
        account_get(d->db, "alice");
        durable_close(d);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Reads wait for durability.                                                               */

typedef struct caller {
    pthread_t thread;
    coffer *db;
    const char *id;
    bool submit; /* else read */
    coffer_result result;
    coffer_transfer record;
    int status;
    atomic_bool done;
} caller;

static void *caller_main(void *argument)
{
    caller *c = argument;
    if (c->submit) {
        coffer_event event = transfer_event(c->id, "alice", "bob", 5);
        c->status = coffer_submit(c->db, &event, 1, false, &c->result);
    } else {
        c->status = coffer_transfer_get(c->db, c->id, &c->record);
    }
    atomic_store(&c->done, true);
    return NULL;
}

static void caller_start(caller *c, coffer *db, const char *id, bool submit)
{
    memset(c, 0, sizeof *c);
    c->db = db;
    c->id = id;
    c->submit = submit;
    assert_int_equal(pthread_create(&c->thread, NULL, caller_main, c), 0);
}

static void sleep_ms(long milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

static void gate_wait_until_held(gate *g)
{
    for (int waited = 0; waited < WAIT_MS_MAX; waited += 5) {
        pthread_mutex_lock(&g->mutex);
        bool waiting = g->waiting;
        pthread_mutex_unlock(&g->mutex);
        if (waiting)
            return;
        sleep_ms(5);
    }
    fail_msg("the engine never synced");
}

static void gate_decide(gate *g, int verdict)
{
    pthread_mutex_lock(&g->mutex);
    g->verdict = verdict;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->mutex);
}

/* While a batch waits for its sync, a lookup of what it wrote waits too: it returns the batch
 * once durable, or storage_failed if the sync fails — never the unacknowledged state. */
static void test_reads_wait_for_durability(void **state)
{
    durable *d = *state;
    gate *g = &d->gate;
    g->io = (coffer_io){gate_write_at, gate_sync, g};
    pthread_mutex_init(&g->mutex, NULL);
    pthread_cond_init(&g->changed, NULL);
    d->io = &g->io;
    durable_open(d);
    create_issuer(d->db, "bank", "USD");
    create_account(d->db, "alice", "USD");
    create_account(d->db, "bob", "USD");
    fund(d->db, "fund", "bank", "alice", 100);

    int verdicts[2] = {GATE_PASS, GATE_FAIL};
    const char *ids[2] = {"t-slow", "t-lost"};
    for (int round = 0; round < 2; round++) {
        caller writer, reader;
        pthread_mutex_lock(&g->mutex);
        g->armed = true;
        pthread_mutex_unlock(&g->mutex);
        caller_start(&writer, d->db, ids[round], true);
        gate_wait_until_held(g);
        caller_start(&reader, d->db, ids[round], false);
        sleep_ms(100);
        bool read_early = atomic_load(&reader.done), written_early = atomic_load(&writer.done);
        gate_decide(g, verdicts[round]);
        pthread_join(writer.thread, NULL);
        pthread_join(reader.thread, NULL);
        assert_false(written_early);
        assert_false(read_early);
        if (verdicts[round] == GATE_PASS) {
            assert_int_equal(writer.status, COFFER_OK);
            assert_int_equal(writer.result.code, COFFER_CREATED);
            assert_int_equal(reader.status, COFFER_OK);
            assert_int_equal(reader.record.seq, writer.result.seq);
        } else {
            assert_int_equal(writer.status, COFFER_STORAGE_FAILED);
            assert_int_equal(reader.status, COFFER_STORAGE_FAILED);
        }
    }
    durable_close(d);
    pthread_cond_destroy(&g->changed);
    pthread_mutex_destroy(&g->mutex);
}

/* ---------------------------------------------------------------------------------------- */
/* Regressions of engine bugs this file found (both fixed). */

/* When only the sync fails the record is already in the file (the page cache has it); the
 * engine cuts the log back to its last durable offset, so the batch the caller was told failed
 * is not in the ledger after a restart. */
static void test_sync_failure_batch_cut_back(void **state)
{
    durable *d = *state;
    fault_arm(&d->fault, 0, 0, EIO, false);
    d->io = &d->fault.io;
    durable_open(d);
    create_issuer(d->db, "bank", "USD");
    create_account(d->db, "alice", "USD");
    atomic_store(&d->fault.fail_sync, atomic_load(&d->fault.syncs) + 1);
    coffer_event event = transfer_event("refused", "bank", "alice", 5);
    coffer_result result;
    assert_int_equal(coffer_submit(d->db, &event, 1, false, &result), COFFER_STORAGE_FAILED);
    durable_close(d);
    d->io = NULL;
    durable_open(d);
    assert_not_recorded(d->db, "refused");
    assert_int_equal(balance_of(d->db, "alice"), 0);
}

enum { ROOMY_HOLDS = 9000, ROOMY_BATCH = COFFER_BATCH_EVENTS_MAX };

/* Holds due all at once, then a full batch: one record of ROOMY_HOLDS expiries and
 * ROOMY_BATCH transfers, all acknowledged. */
static void roomy_build(durable *d)
{
    coffer_event *events = calloc(ROOMY_BATCH, sizeof *events);
    coffer_result *results = calloc(ROOMY_BATCH, sizeof *results);
    char(*ids)[16] = calloc(ROOMY_BATCH, sizeof *ids);
    expect_true(events && results && ids);
    coffer_event accounts[2] = {account_event("bank", "USD"), account_event("alice", "USD")};
    accounts[0].flags = COFFER_FLAG_MIN_UNBOUNDED;
    expect_int(coffer_submit(d->db, accounts, 2, false, results), COFFER_OK);
    for (int done = 0; done < ROOMY_HOLDS; done += 1000) {
        for (int i = 0; i < 1000; i++) {
            snprintf(ids[i], sizeof ids[i], "h-%d", done + i);
            events[i] = hold_event(ids[i], "bank", "alice", 1, 1);
        }
        expect_int(coffer_submit(d->db, events, 1000, false, results), COFFER_OK);
        expect_int(results[999].code, COFFER_CREATED);
    }
    durable_clock_advance_ms(d, 1000);
    for (int i = 0; i < ROOMY_BATCH; i++) {
        snprintf(ids[i], sizeof ids[i], "t-%d", i);
        events[i] = transfer_event(ids[i], "bank", "alice", 1);
    }
    expect_int(coffer_submit(d->db, events, ROOMY_BATCH, false, results), COFFER_OK);
    expect_int(results[ROOMY_BATCH - 1].code, COFFER_CREATED);
}

/* Recovery reserves room for a record as if every seq it spans could create an account: a
 * record spanning more seqs than the accounts table can ever hold (expiries are unbounded, and
 * a small accounts_max still rounds to 2 MiB) is acknowledged live, but after a crash the open
 * fails with capacity_exceeded ("needs more room than the configured limits"). */
static void test_replay_reserves_what_records_need(void **state)
{
    durable *d = *state;
    d->accounts_max = 100;
    d->transfers_max = 65536;
    run_then_crash(d, roomy_build);
    durable_open(d);
    assert_int_equal(balance_of(d->db, "alice"), ROOMY_BATCH);
    verify_ok(d->db);
}

/* ---------------------------------------------------------------------------------------- */
/* Acknowledged records missing: the checkpoint and the manifest beside the log.            */

/* Opening must fail, and a log line must name `file` (NULL: any) with `word`. */
static void assert_open_refused(durable *d, const char *file, const char *word)
{
    int code = durable_try_open(d);
    if (code == COFFER_OK)
        coffer_close(d->db);
    d->db = NULL;
    if (code != COFFER_STORAGE_FAILED || !log_has(d, "recovery refused", file, NULL, 0) ||
        !log_has(d, "recovery refused", word, NULL, 0)) {
        log_dump(d);
        fail_msg("open gave %s; expected a refusal naming %s and \"%s\"", coffer_code_name(code),
                 file ? file : "-", word);
    }
}

/* Waits up to `wait_ms` for the checkpoint to reach `seq`. */
static bool checkpoint_reaches(durable *d, uint64_t seq, int wait_ms)
{
    wal_tip tip = {0};
    bool found = false;
    char error[256];
    for (int waited_ms = 0; waited_ms <= wait_ms; waited_ms++) {
        expect_int(checkpoint_read(d->dir, &tip, &found, error, sizeof error), COFFER_OK);
        if (found && tip.last_seq == seq)
            return true;
        sleep_ms(1);
    }
    return false;
}

/* torn_build, then transfers to a new account a second apart until the checkpoint covers the
 * whole log. (The tick of a round still finishing may take the second first, so one transfer
 * may not be enough.) */
static void checkpointed_build(durable *d)
{
    torn_build(d);
    coffer_event carol = account_event("carol", "USD");
    coffer_result result;
    expect_int(coffer_submit(d->db, &carol, 1, false, &result), COFFER_OK);
    bool reached = false;
    for (int k = 1; k <= 20 && !reached; k++) {
        char id[32];
        snprintf(id, sizeof id, "checkpointed-%d", k);
        durable_clock_advance_ms(d, 2000);
        result = transfer(d->db, id, "bank", "carol", 1);
        expect_int(result.code, COFFER_CREATED);
        reached = checkpoint_reaches(d, result.seq, 300);
    }
    expect_true(reached);
}

/* The checkpoint follows the log within a second even when no write comes after the last one:
 * the idle log thread wakes to advance it. Before the second is up it stays behind. */
static void test_checkpoint_catches_up_when_idle(void **state)
{
    durable *d = *state;
    durable_open(d);
    coffer_event bank = account_event("bank", "USD");
    coffer_result result;
    assert_int_equal(coffer_submit(d->db, &bank, 1, false, &result), COFFER_OK);
    assert_int_equal(result.code, COFFER_CREATED);
    assert_false(checkpoint_reaches(d, result.seq, 50));
    durable_clock_advance_ms(d, 1000);
    assert_true(checkpoint_reaches(d, result.seq, WAIT_MS_MAX));
    durable_close(d);
}

static void add_other_account(durable *d)
{
    coffer_event other = account_event("other", "USD");
    coffer_result result;
    expect_int(coffer_submit(d->db, &other, 1, false, &result), COFFER_OK);
    expect_int(result.code, COFFER_CREATED);
}

/* An open writes the checkpoint, then the manifest. Stopped between the two (here: a clean
 * close, whose checkpoint is the log's tail, and the manifest deleted), the next open finds a
 * checkpoint at the very tail and nothing missing: it opens, and writes the manifest again.
 * With the checkpoint behind the tail, a missing manifest is still damage. */
static void test_open_stopped_before_the_manifest_is_no_damage(void **state)
{
    durable *d = *state;
    durable_open(d);
    coffer_event bank = account_event("bank", "USD");
    coffer_result result;
    assert_int_equal(coffer_submit(d->db, &bank, 1, false, &result), COFFER_OK);
    durable_close(d);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest", d->dir);
    assert_int_equal(unlink(path), 0);
    durable_open(d);
    assert_int_equal(access(path, F_OK), 0);
    coffer_account account;
    assert_int_equal(coffer_account_get(d->db, "bank", COFFER_AT_NOW, 0, &account), COFFER_OK);
    durable_close(d);
    /* Behind the tail: a write the checkpoint has not caught up with (its clock does not move),
     * then a crash. */
    run_then_crash(d, add_other_account);
    assert_int_equal(unlink(path), 0);
    assert_open_refused(d, path, "manifest");
}

/* After a crash whose checkpoint covers the whole log, cutting the log anywhere in its last
 * three records, or flipping a byte of the last one, loses acknowledged records: the open
 * refuses, naming the segment, and leaves it as it was. accept_data_loss opens anyway. */
static void test_acknowledged_tail_damage_refused(void **state)
{
    durable *d = *state;
    run_then_crash(d, checkpointed_build);
    saved_dir pristine;
    dir_save(d->dir, &pristine);
    char name[64], path[4096];
    segment_name(name, sizeof name, 1);
    wal_segment_path(path, sizeof path, d->dir, 1);
    const saved_file *segment = saved_find(&pristine, name);
    record_span spans[RECORDS_MAX];
    size_t count = segment_walk(segment->bytes, segment->length, spans);
    assert_true(count >= 11); /* torn_build's 9, carol, a transfer to carol or more */
    for (uint64_t cut = spans[count - 3].offset; cut < segment->length; cut++) {
        dir_restore(d->dir, &pristine);
        file_write(path, segment->bytes, cut, false);
        assert_open_refused(d, path, "checkpoint");
        assert_int_equal(file_size(path), cut);
    }
    const record_span *last = &spans[count - 1];
    dir_restore(d->dir, &pristine);
    file_flip_bit(path, last->offset + last->length / 2, 3);
    assert_open_refused(d, path, "checkpoint");

    d->accept_data_loss = true;
    durable_open(d);
    const char *named = path;
    assert_logged(d, "DATA LOSS ACCEPTED", named, NULL, 0);
    coffer_stats stats;
    assert_int_equal(coffer_stats_get(d->db, &stats), COFFER_OK);
    assert_int_equal(stats.seq, spans[count - 2].last_seq);
    torn_assert_state(d->db, true);
    char record[4096];
    snprintf(record, sizeof record, "%s/data-loss.log", d->dir);
    assert_true(file_size(record) > 0);
    durable_close(d);
    d->accept_data_loss = false;
    durable_open(d); /* the loss was accepted once: the checkpoint moved to the cut log */
    assert_false(log_has(d, "truncat", NULL, NULL, 0));
    saved_free(&pristine);
}

/* Several segments and a snapshot after a clean close: deleting or shortening any segment is
 * refused with its name, even one the snapshot covers, which recovery does not read. */
static void test_lost_segments_refused(void **state)
{
    durable *d = *state;
    d->segment_bytes_max = 1024;
    durable_open(d);
    world_build(d);
    durable_close(d);
    saved_dir pristine;
    dir_save(d->dir, &pristine);
    uint32_t segments = 0;
    for (size_t i = 0; i < pristine.count; i++)
        segments += strncmp(pristine.files[i].name, "log-", 4) == 0;
    assert_true(segments >= 3);
    for (uint32_t number = 1; number <= segments; number++) {
        char name[64], path[4096];
        segment_name(name, sizeof name, number);
        wal_segment_path(path, sizeof path, d->dir, number);
        const saved_file *segment = saved_find(&pristine, name);
        dir_restore(d->dir, &pristine);
        assert_int_equal(unlink(path), 0);
        assert_open_refused(d, path, "missing");
        dir_restore(d->dir, &pristine);
        file_write(path, segment->bytes, segment->length - 1, false);
        assert_open_refused(d, path, number < segments ? "shortened" : "checkpoint");
    }
    dir_restore(d->dir, &pristine);
    durable_open(d);
    world_assert_outcomes(d->db);
    saved_free(&pristine);
}

/* With no snapshot yet, the only segment deleted or cut to 0 or 30 bytes (inside its header)
 * would start an empty ledger: refused; accepted, the ledger starts empty and says so. */
static void test_only_segment_lost_refused(void **state)
{
    durable *d = *state;
    durable_open(d);
    torn_build(d);
    durable_close(d);
    saved_dir pristine;
    dir_save(d->dir, &pristine);
    char name[64], path[4096];
    segment_name(name, sizeof name, 1);
    wal_segment_path(path, sizeof path, d->dir, 1);
    const saved_file *segment = saved_find(&pristine, name);
    static const size_t lengths[] = {0, 30, 64};
    for (int delete = 1; delete >= 0; delete --) {
        for (size_t i = 0; i < (delete ? 1 : sizeof lengths / sizeof lengths[0]); i++) {
            dir_restore(d->dir, &pristine);
            for (size_t k = 0; k < pristine.count; k++)
                if (strncmp(pristine.files[k].name, "snapshot-", 9) == 0) {
                    char snapshot[4096];
                    snprintf(snapshot, sizeof snapshot, "%s/%s", d->dir, pristine.files[k].name);
                    assert_int_equal(unlink(snapshot), 0);
                }
            if (delete)
                assert_int_equal(unlink(path), 0);
            else
                file_write(path, segment->bytes, lengths[i], false);
            assert_open_refused(d, path, delete ? "missing" : "checkpoint");
        }
    }
    d->accept_data_loss = true;
    durable_open(d);
    const char *named = path;
    assert_logged(d, "DATA LOSS ACCEPTED", named, NULL, 0);
    assert_not_recorded(d->db, "fund");
    saved_free(&pristine);
}

/* ---------------------------------------------------------------------------------------- */

static int durable_setup(void **state)
{
    durable *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    snprintf(d->root, sizeof d->root, "/tmp/coffer-durability-XXXXXX");
    if (!mkdtemp(d->root)) {
        free(d);
        return -1;
    }
    snprintf(d->dir, sizeof d->dir, "%s/data", d->root);
    d->clock_ns = TEST_CLOCK_START_NS;
    d->accounts_max = 1024;
    d->transfers_max = 16384;
    pthread_mutex_init(&d->log_mutex, NULL);
    *state = d;
    return 0;
}

static int durable_teardown(void **state)
{
    durable *d = *state;
    if (d->db)
        coffer_close(d->db);
    remove_tree(d->root);
    pthread_mutex_destroy(&d->log_mutex);
    free(d);
    *state = NULL;
    return 0;
}

#define DURABLE_TEST(f) cmocka_unit_test_setup_teardown(f, durable_setup, durable_teardown)

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--try-open") == 0)
        return try_open_main(argv[2]);
    const struct CMUnitTest tests[] = {
        DURABLE_TEST(test_reopen_keeps_everything),
        DURABLE_TEST(test_hold_expires_across_restart),
        DURABLE_TEST(test_torn_tail_every_offset),
        DURABLE_TEST(test_garbage_tail_truncated),
        DURABLE_TEST(test_flipped_bit_mid_log_refused),
        DURABLE_TEST(test_flipped_bit_segment_header_refused),
        DURABLE_TEST(test_second_open_locked_out),
        DURABLE_TEST(test_write_fails_eio),
        DURABLE_TEST(test_write_fails_enospc),
        DURABLE_TEST(test_write_fails_torn),
        DURABLE_TEST(test_sync_fails_eio),
        DURABLE_TEST(test_first_segment_header_torn),
        DURABLE_TEST(test_reads_wait_for_durability),
        DURABLE_TEST(test_sync_failure_batch_cut_back),
        DURABLE_TEST(test_replay_reserves_what_records_need),
        DURABLE_TEST(test_checkpoint_catches_up_when_idle),
        DURABLE_TEST(test_open_stopped_before_the_manifest_is_no_damage),
        DURABLE_TEST(test_acknowledged_tail_damage_refused),
        DURABLE_TEST(test_lost_segments_refused),
        DURABLE_TEST(test_only_segment_lost_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
