/*
 * driver.c — see driver.h.
 */
#include "fuzz/driver.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void run_mutations(uint8_t *bytes, size_t size, unsigned long *runs)
{
    LLVMFuzzerTestOneInput(bytes, size);
    (*runs)++;
    size_t flip_bytes = size < 512 ? size : 512;
    for (size_t bit = 0; bit < 8 * flip_bytes; bit++) {
        bytes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        LLVMFuzzerTestOneInput(bytes, size);
        bytes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        (*runs)++;
    }
    /* Every cut in the first 512 bytes, then every 64th: large seeds stay quick. */
    for (size_t cut = 0; cut < size; cut += cut < 512 ? 1 : 64) {
        uint8_t *prefix = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        if (!prefix)
            abort();
        memcpy(prefix, bytes, cut);
        LLVMFuzzerTestOneInput(prefix, cut);
        free(prefix);
        (*runs)++;
    }
}

static int run_file(const char *file, unsigned long *runs)
{
    struct stat info;
    if (stat(file, &info) != 0 || !S_ISREG(info.st_mode))
        return 0;
    FILE *input = fopen(file, "rb");
    size_t size = (size_t)info.st_size;
    uint8_t *bytes = malloc(size ? size : 1);
    if (!input || !bytes || fread(bytes, 1, size, input) != size)
        abort();
    fclose(input);
    run_mutations(bytes, size, runs);
    free(bytes);
    return 1;
}

static int run_directory(const char *name, const char *path, unsigned long *files,
                         unsigned long *runs)
{
    DIR *listing = opendir(path);
    if (!listing) {
        fprintf(stderr, "%s: cannot open %s\n", name, path);
        return 1;
    }
    struct dirent *item;
    while ((item = readdir(listing))) {
        char file[4096];
        snprintf(file, sizeof file, "%s/%s", path, item->d_name);
        *files += (unsigned long)run_file(file, runs);
    }
    closedir(listing);
    return 0;
}

int fuzz_driver_main(const char *name, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR...\n", name);
        return 2;
    }
    unsigned long files = 0, runs = 0;
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed |= run_directory(name, argv[i], &files, &runs);
    printf("%s: %lu inputs, %lu runs with their bit flips and truncations\n", name, files, runs);
    return failed || files == 0;
}
