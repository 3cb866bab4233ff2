/*
 * fuzz_common.h - helpers shared by the fuzz harnesses (header-only, so each
 * harness is still one .c file plus the core).
 *
 * fz_reader turns the fuzzer's bytes into values.  Running out of bytes is
 * not an error: every further value is 0, so any input decodes to a
 * complete, deterministic test case.  fz_i64 favours the values where
 * integer arithmetic goes wrong (0, +-1, the parameter and coordinate
 * limits and their neighbours, INT64_MIN / INT64_MAX) over uniform ones.
 *
 * FZ_CHECK aborts with a message: the harness found a broken invariant.
 * (libFuzzer reports the abort as a crash and keeps the input.)
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "it_common.h"
#include "it_dtype.h"
#include "it_geom.h"
#include "it_tensor.h"

typedef struct fz_reader {
    const uint8_t *p;
    size_t n;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static inline uint64_t fz_u64(fz_reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)fz_u8(r) << (8 * i);
    return v;
}

/* An integer in [lo, hi] (hi - lo < 2^32). */
static inline int64_t fz_range(fz_reader *r, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1;
    uint32_t v = (uint32_t)fz_u8(r) | (uint32_t)fz_u8(r) << 8;
    if (span > 65536)
        v |= (uint32_t)fz_u8(r) << 16 | (uint32_t)fz_u8(r) << 24;
    return lo + (int64_t)(v % span);
}

/* Any int64, biased towards the edges. */
static inline int64_t fz_i64(fz_reader *r)
{
    static const int64_t edges[] = {
        0, 1, -1, 2, -2,
        IT_PARAM_LIMIT, IT_PARAM_LIMIT - 1, IT_PARAM_LIMIT + 1,
        -IT_PARAM_LIMIT, -IT_PARAM_LIMIT - 1, -IT_PARAM_LIMIT + 1,
        IT_COORD_LIMIT, IT_COORD_LIMIT - 1, IT_COORD_LIMIT + 1,
        -IT_COORD_LIMIT, -IT_COORD_LIMIT - 1, -IT_COORD_LIMIT + 1,
        INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1,
        INT64_MAX / 2, INT64_MIN / 2, (int64_t)1 << 32, -((int64_t)1 << 32),
    };
    const int nedges = (int)(sizeof edges / sizeof edges[0]);
    uint8_t k = fz_u8(r);
    if (k < 64) /* small values */
        return (int64_t)k - 32;
    if (k < 160) /* an edge */
        return edges[(k - 64) % nedges];
    if (k < 208) /* an edge plus a small delta */
        return (int64_t)((uint64_t)edges[fz_u8(r) % nedges] + (uint64_t)((int64_t)fz_u8(r) - 128));
    return (int64_t)fz_u64(r); /* raw */
}

#define FZ_CHECK(cond, ...)                                                          \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n  ", __FILE__, __LINE__,   \
                    #cond);                                                          \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* A failing core call must have recorded its code and a message. */
static inline void fz_check_error(int rc, const char *what)
{
    FZ_CHECK(rc < 0, "%s returned %d (not an IT_E* code)", what, rc);
    FZ_CHECK(it_error_code() == rc, "%s returned %d but it_error_code() is %d (\"%s\")", what, rc,
             it_error_code(), it_error_message());
    FZ_CHECK(it_error_message()[0] != '\0', "%s returned %d without a message", what, rc);
}

/* *v: a C-contiguous CPU view of nd dims of the given sizes at data (a
 * harness's window function lays its outputs out so). */
static inline void fz_contiguous_view(it_view *v, void *data, it_dtype dt, int nd, const int64_t *size)
{
    memset(v, 0, sizeof *v);
    v->data = data;
    v->dtype = dt;
    v->ndim = nd;
    v->device_type = IT_DEVICE_CPU;
    memcpy(v->shape, size, sizeof(int64_t) * (size_t)nd);
    it_contiguous_strides(it_dtype_size(dt), nd, v->shape, v->strides);
}

#endif
