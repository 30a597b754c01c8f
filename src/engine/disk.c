/*
 * disk.c — room on the filesystem of the data directory. The log, the snapshots and the index
 * grow there, and a write of the log that the disk cannot take fails the log: a local log then
 * refuses writes and reads until a restart. So a reserve is kept: once the filesystem's free
 * space (what an unprivileged process may still use, as df counts it) is below it, the writer
 * refuses submissions with capacity_exceeded, naming the disk, while reads and hold expiries go
 * on; once there is room again (someone freed space, or grew the disk) submissions are taken
 * again, with no restart. The writer looks at most every DISK_CHECK_NS, so the reserve must
 * hold what the log and the index can write meanwhile (a few MiB at full speed).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#include "base/clock.h"
#include "engine/engine.h"

#define DISK_CHECK_NS (100ULL * 1000000ULL)
/* The default reserve, or a twentieth of a smaller filesystem's size. */
#define DISK_RESERVE_DEFAULT (256ULL << 20)
#define DISK_RESERVE_SHARE 20

/* The free and total bytes of the filesystem holding `dir`; false (errno set) when unreadable. */
static bool disk_space(const char *dir, uint64_t *free_bytes, uint64_t *size_bytes)
{
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0)
        return false;
    *free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
    if (size_bytes)
        *size_bytes = (uint64_t)fs.f_blocks * fs.f_frsize;
    return true;
}

void engine_disk_open(coffer *db)
{
    uint64_t asked = db->options.disk_reserve_bytes, free_bytes = 0, size_bytes = 0;
    db->disk_reserve = 0;
    db->disk_checked_ns = clock_monotonic_ns();
    if (!disk_space(db->dir, &free_bytes, &size_bytes)) {
        engine_log(db, "disk: the free space of %s cannot be read (%s): no reserve is kept",
                   db->dir, strerror(errno));
        return;
    }
    atomic_store(&db->disk_free, free_bytes); /* for the metric, even without a reserve */
    if (asked == COFFER_DISK_RESERVE_NONE) {
        engine_log(db, "disk: no reserve kept on the filesystem of %s: a full disk fails the log",
                   db->dir);
        return;
    }
    uint64_t reserve = asked;
    if (reserve == 0) {
        reserve = size_bytes / DISK_RESERVE_SHARE;
        if (reserve > DISK_RESERVE_DEFAULT)
            reserve = DISK_RESERVE_DEFAULT;
    }
    db->disk_reserve = reserve;
    db->disk_low = free_bytes < reserve;
    char free_text[32], reserve_text[32];
    engine_format_bytes(free_bytes, free_text, sizeof free_text);
    engine_format_bytes(reserve, reserve_text, sizeof reserve_text);
    engine_log(db,
               "disk: %s free on the filesystem of %s; writes are refused while less than %s "
               "(%s) is free%s",
               free_text, db->dir, reserve_text, asked ? "as configured" : "the default reserve",
               db->disk_low ? ": refusing them now" : "");
}

void engine_disk_look(coffer *db)
{
    uint64_t now = clock_monotonic_ns();
    if (now - db->disk_checked_ns < DISK_CHECK_NS)
        return;
    db->disk_checked_ns = now;
    uint64_t free_bytes;
    if (!disk_space(db->dir, &free_bytes, 0))
        return; /* as it was: a passing error decides nothing */
    atomic_store(&db->disk_free, free_bytes);
    bool low = db->disk_reserve && free_bytes < db->disk_reserve;
    if (low != db->disk_low) {
        char free_text[32], reserve_text[32];
        engine_format_bytes(free_bytes, free_text, sizeof free_text);
        engine_format_bytes(db->disk_reserve, reserve_text, sizeof reserve_text);
        engine_log(db,
                   low ? "disk: %s free on the filesystem of %s, below the reserve of %s: "
                         "refusing writes (capacity_exceeded) until there is room; reads go on"
                       : "disk: %s free on the filesystem of %s, above the reserve of %s again: "
                         "taking writes",
                   free_text, db->dir, reserve_text);
    }
    db->disk_low = low;
}

bool engine_disk_low(coffer *db)
{
    if (db->disk_reserve == 0)
        return false;
    engine_disk_look(db);
    return db->disk_low;
}

void engine_disk_refuse(coffer *db, uint64_t submissions)
{
    atomic_fetch_add_explicit(&db->refused_disk, submissions, memory_order_relaxed);
    char free_text[32], reserve_text[32];
    engine_format_bytes(atomic_load(&db->disk_free), free_text, sizeof free_text);
    engine_format_bytes(db->disk_reserve, reserve_text, sizeof reserve_text);
    pthread_mutex_lock(&db->mutex);
    snprintf(db->capacity_detail, sizeof db->capacity_detail,
             "disk reserve of %s reached: %s free on the filesystem of %s", reserve_text, free_text,
             db->dir);
    pthread_mutex_unlock(&db->mutex);
}

bool engine_disk_room(coffer *db, uint64_t bytes, uint64_t *free_bytes)
{
    *free_bytes = 0;
    if (db->disk_reserve == 0 || !disk_space(db->dir, free_bytes, 0))
        return true;
    atomic_store(&db->disk_free, *free_bytes);
    return *free_bytes >= db->disk_reserve && *free_bytes - db->disk_reserve >= bytes;
}
