/*
 * fuzz_snapshot.c — libFuzzer target for snapshot loading (src/log/snapshot.c). Each input is
 * used twice: as a whole snapshot file (which must be refused cleanly unless it is one), and as
 * table contents that the harness seals into a snapshot with a valid header and hash, so the
 * loader's reference checks and the index rebuild see arbitrary records. It is also read as
 * the checkpoint and the manifest kept beside the log (log/checkpoint.c), which must be
 * refused or read cleanly too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "coffer.h"
#include "log/checkpoint.h"
#include "log/snapshot.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const store_limits limits = {64, 64, STORE_MEMORY_MIN};
static char dir[64];

static void ensure_dir(void)
{
    if (dir[0])
        return;
    /* Sealing a snapshot fsyncs the file and the directory, thousands of times a run: on a
     * memory file system (/dev/shm) that costs nothing, on a busy disk it costs minutes. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    /* The store asks for huge pages; each run would clear 2 MiB pages for a few records. */
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    snprintf(dir, sizeof dir, "%s/coffer-fuzz-snapshot-XXXXXX", base);
    if (!mkdtemp(dir))
        abort();
}

/* Loads `path` into a fresh store; anything but OK or a clean refusal is a bug (ASan). */
static void load(const char *path)
{
    store s;
    if (store_init(&s, &limits) != COFFER_OK)
        abort();
    snapshot_meta meta;
    char error[1024];
    (void)snapshot_load(&s, path, &meta, error, sizeof error);
    store_free(&s);
}

static void as_file(const uint8_t *data, size_t size)
{
    char path[128];
    snprintf(path, sizeof path, "%s/raw.cfs", dir);
    FILE *file = fopen(path, "wb");
    if (!file || (size && fwrite(data, 1, size, file) != size))
        abort();
    fclose(file);
    load(path);
}

/* Fills the tables from the input (cycled), seals them with snapshot_write, loads them back. */
static void as_tables(const uint8_t *data, size_t size)
{
    if (size < 8)
        return;
    store s;
    if (store_init(&s, &limits) != COFFER_OK)
        abort();
    store_counts counts = {data[0] % 8,  data[1] % 8,
                           data[2] % 16, data[3] % 4,
                           data[4] % 4,  8 + (uint64_t)(data[5] | (data[6] << 8)) % 4096,
                           data[7] % 4,  (uint64_t)(data[7] >> 4) % 4};
    if (store_restore_begin(&s, &counts) != COFFER_OK)
        abort();
    struct {
        void *bytes;
        size_t length;
    } tables[] = {
        {s.accounts, counts.accounts * sizeof *s.accounts},
        {s.transfers, counts.transfers * sizeof *s.transfers},
        {s.history, counts.history * sizeof *s.history},
        {s.expiries, counts.expiries * sizeof *s.expiries},
        {s.holds, counts.holds * sizeof *s.holds},
        {s.arena, counts.arena_used},
        {s.submitters, counts.submitters * sizeof *s.submitters},
    };
    size_t at = 8;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (size_t i = 0; i < tables[t].length; i++, at++)
            ((uint8_t *)tables[t].bytes)[i] = size > 8 ? data[8 + (at - 8) % (size - 8)] : 0;
    s.trimmed_seq = data[6] % 4; /* format 4 keeps it */
    snapshot_meta meta = {{1, 1, {0}}, 1, 1};
    char error[1024];
    if (snapshot_write(&s, &meta, dir, error, sizeof error) != COFFER_OK)
        abort();
    store_free(&s);
    char path[128];
    snprintf(path, sizeof path, "%s/snapshot-%020llu.cfs", dir, 1ULL);
    load(path);
}

/* Writes the input as DIR/checkpoint and DIR/manifest and reads them back; the manifest's
 * lines name files that mostly do not exist, which must be reported, not followed. */
static void as_log_files(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"checkpoint", "manifest"};
    for (size_t i = 0; i < 2; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *file = fopen(path, "wb");
        if (!file || (size && fwrite(data, 1, size, file) != size))
            abort();
        fclose(file);
    }
    wal_tip tip;
    bool found;
    char problems[4096];
    (void)checkpoint_read(dir, &tip, &found, problems, sizeof problems);
    (void)manifest_check(dir, &found, problems, sizeof problems);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ensure_dir();
    as_file(data, size);
    as_log_files(data, size);
    as_tables(data, size);
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_snapshot", argc, argv);
}
#endif
