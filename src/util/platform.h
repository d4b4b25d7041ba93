/* SPDX-License-Identifier: MIT
 *
 * platform.h: feature-test macros, set once for every translation unit, and
 * the few compiler helpers the whole tree uses.
 */
#ifndef AG_UTIL_PLATFORM_H
#define AG_UTIL_PLATFORM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stdio.h>
#include <stdlib.h>

#define AG_UNUSED(x) ((void)(x))
#define AG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define AG_LIKELY(x) __builtin_expect(!!(x), 1)
#define AG_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Stays on in release builds: for invariants of our own, never for bytes that
 * came from the network. */
#define AG_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (AG_UNLIKELY(!(cond))) {                                                                \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Frees *pp and leaves NULL behind, so no pointer to freed memory stays reachable. */
#define AG_FREE(pp)                                                                                \
    do {                                                                                           \
        free(*(pp));                                                                               \
        *(pp) = NULL;                                                                              \
    } while (0)

#endif
