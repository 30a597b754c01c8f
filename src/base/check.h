/*
 * check.h — assertions that stay on in release builds, shared by every layer (base/ is below
 * all of them). Programmer errors crash loudly here; invariants that guard money are never
 * compiled out by NDEBUG.
 */
#ifndef COFFER_BASE_CHECK_H
#define COFFER_BASE_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define COFFER_ASSERT(condition)                                                                   \
    do {                                                                                           \
        if (__builtin_expect(!(condition), 0)) {                                                   \
            fprintf(stderr, "coffer: assertion failed: %s (%s:%d)\n", #condition, __FILE__,        \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define COFFER_UNREACHABLE() COFFER_ASSERT(0 && "unreachable")

#endif
