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

#endif
