/*
 * files.h — file helpers shared by the tests that make data directories (unit and crash).
 */
#ifndef COFFER_TESTS_FILES_H
#define COFFER_TESTS_FILES_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Removes a file or a directory tree (the test's own temp directories only). */
static inline void remove_tree(const char *path)
{
    struct stat info;
    if (lstat(path, &info) != 0)
        return;
    if (!S_ISDIR(info.st_mode)) {
        unlink(path);
        return;
    }
    DIR *listing = opendir(path);
    if (listing) {
        struct dirent *item;
        while ((item = readdir(listing))) {
            if (strcmp(item->d_name, ".") == 0 || strcmp(item->d_name, "..") == 0)
                continue;
            char child[4096];
            int length = snprintf(child, sizeof child, "%s/%s", path, item->d_name);
            if (length > 0 && (size_t)length < sizeof child)
                remove_tree(child);
        }
        closedir(listing);
    }
    rmdir(path);
}

/* Deletes the snapshots of data directory `dir`, so that its next open replays the whole log.
 * The number deleted, or -1 when one could not be. */
static inline int remove_snapshots(const char *dir)
{
    DIR *listing = opendir(dir);
    if (!listing)
        return -1;
    int removed = 0;
    struct dirent *item;
    while (removed >= 0 && (item = readdir(listing))) {
        if (strncmp(item->d_name, "snapshot-", 9) != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, item->d_name);
        removed = unlink(path) == 0 ? removed + 1 : -1;
    }
    closedir(listing);
    return removed;
}

#endif
