/*
 * driver.h — for builds without libFuzzer (gcc): runs a fuzz target over every file of the
 * given corpus directories, each also with every bit of its first 512 bytes flipped and cut at
 * every length up to 512 (every 64th beyond), so the seeds and their neighbours are exercised
 * on every build; libFuzzer (the clang tree) goes deeper.
 */
#ifndef COFFER_FUZZ_DRIVER_H
#define COFFER_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns the exit status: 0 when every directory was read and held at least one input. */
int fuzz_driver_main(const char *name, int argc, char **argv);

#endif
