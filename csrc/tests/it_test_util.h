/*
 * it_test_util.h - helpers shared by the CMocka tests of the core.
 *
 * Header-only (every function is static inline) so that each test binary is
 * still built from one test_X.c plus the core sources.  Nothing here calls the
 * core to compute an expected value: the references (float16/bfloat16
 * conversions, window bounds, window domains, the dense value of a tensor)
 * are written out independently and by brute force.
 *
 * The fake tensor ("ft") wraps an it_tensor whose ops->compute fills each
 * output window with a deterministic function of the window index (plus a
 * checksum of its argument regions for a downstream tensor), counts every
 * call, checks every batch it is handed, and can misbehave on demand.
 * ft_reference() gives the dense value of any box by folding every window
 * that lies inside the finite dims, in lexicographic window order, from the
 * fill value; ft_read_check() reads a box through the core and compares.
 *
 * Built with TU_DEVICE defined, every fake tensor lives on a fake device
 * whose memory holds each byte XORed with 0x5A: the core can only get right
 * values out of it through the device-ops table, so any place where it
 * dereferences device memory itself shows up as wrong values.  The fake's
 * callbacks unscramble what they read and scramble what they hand back.
 */
#ifndef IT_TEST_UTIL_H
#define IT_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "it_common.h"
#include "it_dtype.h"
#include "it_geom.h"
#include "it_buffer.h"
#include "it_cache.h"
#include "it_tensor.h"

#ifdef TU_DEVICE
#define TU_DEV_TYPE IT_DEVICE_CUDA
#define TU_DEV_ID 3
#else
#define TU_DEV_TYPE IT_DEVICE_CPU
#define TU_DEV_ID 0
#endif

/* ------------------------------------------------------------------ */
/* the scrambled fake device                                            */

static long tu_dev_live; /* allocations alive */

static inline void tu_scramble(void *p, size_t n)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] ^= 0x5A;
}

static inline int tu_dev_alloc(void *ctx, int type, int id, size_t nbytes, void **data, void **handle)
{
    (void)ctx;
    if (type != TU_DEV_TYPE || id != TU_DEV_ID)
        return it_error_set(IT_EDEVICE, "fake device asked for %d:%d", type, id);
    /* through the core's allocator, so failure injection reaches it too */
    unsigned char *m = it_malloc(nbytes + 64);
    if (!m)
        return it_error_set(IT_ENOMEM, "fake device out of memory");
    memset(m, 0xCD, nbytes + 64); /* garbage: a value never written shows */
    *handle = m;
    *data = m + ((64 - ((uintptr_t)m & 63)) & 63);
    tu_dev_live++;
    return IT_OK;
}

static inline void tu_dev_release(void *ctx, void *handle)
{
    (void)ctx;
    it_free(handle);
    tu_dev_live--;
}

static inline int tu_on_dev(const it_view *v) { return v->device_type == IT_DEVICE_CUDA; }

/* A contiguous copy of a view's values in clear (malloc'd; cst gets its
 * strides). */
static inline char *tu_clear_copy(const it_view *v, int64_t *cst)
{
    size_t es = it_dtype_size(v->dtype);
    int64_t n = it_contiguous_strides(es, v->ndim, v->shape, cst);
    char *c = malloc((size_t)n + 1);
    assert_non_null(c);
    it_copy_nd(es, v->ndim, v->shape, c, cst, v->data, v->strides);
    if (tu_on_dev(v))
        tu_scramble(c, (size_t)n);
    return c;
}

/* dst (op)= src through contiguous host copies, unscrambling the operands on
 * the device and scrambling the result back. */
static inline int tu_dev_apply(void *ctx, it_combine op, const it_view *dst, const it_view *src)
{
    (void)ctx;
    if (dst->ndim != src->ndim || dst->dtype != src->dtype)
        return it_error_set(IT_EINVAL, "fake device: operands differ in rank or dtype");
    for (int d = 0; d < dst->ndim; d++)
        if (dst->shape[d] != src->shape[d])
            return it_error_set(IT_EINVAL, "fake device: operands differ in shape");
    if ((tu_on_dev(dst) && dst->device_id != TU_DEV_ID) || (tu_on_dev(src) && src->device_id != TU_DEV_ID))
        return it_error_set(IT_EDEVICE, "fake device: an operand is on another device");
    size_t es = it_dtype_size(dst->dtype);
    int64_t cst[IT_MAX_DIMS], n = it_contiguous_strides(es, dst->ndim, dst->shape, cst);
    char *a = tu_clear_copy(dst, cst), *b = tu_clear_copy(src, cst);
    int rc = IT_OK;
    if (op == IT_COMBINE_COPY)
        memcpy(a, b, (size_t)n);
    else
        rc = it_combine_nd(op, dst->dtype, dst->ndim, dst->shape, a, cst, b, cst);
    if (tu_on_dev(dst))
        tu_scramble(a, (size_t)n);
    if (rc == IT_OK)
        it_copy_nd(es, dst->ndim, dst->shape, dst->data, dst->strides, a, cst);
    free(a);
    free(b);
    return rc;
}

static const it_devops tu_devops = {IT_DEVOPS_VERSION, NULL, tu_dev_alloc, tu_dev_release, tu_dev_apply};

/* Unscramble (or scramble) a whole buffer the core handed over, in place;
 * nothing for a host buffer. */
static inline void tu_buffer_flip(it_buffer *b)
{
    if (b && b->device.ops == &tu_devops)
        tu_scramble(b->data, b->nbytes);
}

/* ------------------------------------------------------------------ */
/* error checking                                                       */

static inline void tu_check_recorded(int rc, const char *expr, const char *file, int line)
{
    const char *m = it_error_message();
    if (it_error_code() != rc)
        fail_msg("%s:%d: %s returned %d but it_error_code() is %d (message \"%s\")",
                 file, line, expr, rc, it_error_code(), m ? m : "(null)");
    if (m == NULL || m[0] == '\0')
        fail_msg("%s:%d: %s returned %d without an error message", file, line, expr, rc);
}

#define EXPECT_OK(expr)                                                                  \
    do {                                                                                 \
        it_error_clear();                                                                \
        int rc_ = (expr);                                                                \
        if (rc_ != IT_OK)                                                                \
            fail_msg("%s:%d: %s returned %d (message \"%s\")", __FILE__, __LINE__, #expr, \
                     rc_, it_error_message());                                           \
    } while (0)

#define EXPECT_ERR(expr, code)                                                           \
    do {                                                                                 \
        it_error_clear();                                                                \
        int rc_ = (expr);                                                                \
        if (rc_ != (code))                                                               \
            fail_msg("%s:%d: %s returned %d, expected %d (message \"%s\")", __FILE__,     \
                     __LINE__, #expr, rc_, (int)(code), it_error_message());             \
        tu_check_recorded(rc_, #expr, __FILE__, __LINE__);                               \
    } while (0)

/* Either of two codes is acceptable (the contract leaves the choice open). */
#define EXPECT_ERR2(expr, c1, c2)                                                        \
    do {                                                                                 \
        it_error_clear();                                                                \
        int rc_ = (expr);                                                                \
        if (rc_ != (c1) && rc_ != (c2))                                                  \
            fail_msg("%s:%d: %s returned %d, expected %d or %d (message \"%s\")",         \
                     __FILE__, __LINE__, #expr, rc_, (int)(c1), (int)(c2),               \
                     it_error_message());                                                \
        tu_check_recorded(rc_, #expr, __FILE__, __LINE__);                               \
    } while (0)

/* Any error code (the contract names none for this mistake), with a message. */
#define EXPECT_FAILS(expr)                                                               \
    do {                                                                                 \
        it_error_clear();                                                                \
        int rc_ = (expr);                                                                \
        if (rc_ >= 0)                                                                    \
            fail_msg("%s:%d: %s returned %d, expected an error", __FILE__, __LINE__,      \
                     #expr, rc_);                                                        \
        tu_check_recorded(rc_, #expr, __FILE__, __LINE__);                               \
    } while (0)

/* IT_TEST_FILTER / IT_TEST_SKIP: run only / skip the tests whose names
 * match a pattern (cmocka's * and ? wildcards). */
static inline void tu_filters_from_env(void)
{
    const char *run = getenv("IT_TEST_FILTER"), *skip = getenv("IT_TEST_SKIP");
    if (run && *run)
        cmocka_set_test_filter(run);
    if (skip && *skip)
        cmocka_set_skip_filter(skip);
}

/* ------------------------------------------------------------------ */
/* random numbers (splitmix64)                                          */

typedef struct rng_t {
    uint64_t s;
} rng_t;

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi] (hi - lo must fit in int64). */
static inline int64_t rng_range(rng_t *r, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1u;
    if (span == 0)
        return (int64_t)rng_next(r);
    return (int64_t)((uint64_t)lo + rng_next(r) % span);
}

static inline int rng_chance(rng_t *r, int one_in)
{
    return rng_next(r) % (uint64_t)one_in == 0;
}

/* ------------------------------------------------------------------ */
/* reference float16 / bfloat16 conversions (round to nearest even)     */

static inline int ref_half_isnan(uint16_t h)
{
    return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

static inline int ref_bf16_isnan(uint16_t h)
{
    return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
}

static inline float ref_h2f(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? (double)NAN : (double)INFINITY;
    else
        v = ldexp((double)(m | 0x400), e - 25);
    float f = (float)v;
    return s ? -f : f;
}

static inline uint16_t ref_f2h(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
    if (isnan(f))
        return (uint16_t)(s | 0x7e00u);
    double a = fabs((double)f);
    if (a >= 65520.0) /* the tie between 65504 and 65536 goes to the even 65536 = inf */
        return (uint16_t)(s | 0x7c00u);
    if (a < ldexp(1.0, -14)) {
        double q = rint(ldexp(a, 24)); /* default rounding mode: nearest even */
        return (uint16_t)(s | (uint16_t)q);
    }
    int ex;
    (void)frexp(a, &ex);
    int e = ex - 1; /* a in [2^e, 2^(e+1)) */
    double q = rint(ldexp(a, 10 - e));
    if (q >= 2048.0) {
        q = 1024.0;
        e++;
    }
    return (uint16_t)(s | (uint16_t)(((e + 15) << 10) | ((int)q - 1024)));
}

static inline float ref_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t ref_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (isnan(f))
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ------------------------------------------------------------------ */
/* elements as doubles (for the tensor tests: small exact values)       */

static inline double el_load(it_dtype dt, const void *p)
{
    switch (dt) {
    case IT_BOOL: return *(const unsigned char *)p ? 1.0 : 0.0;
    case IT_U8: return (double)*(const uint8_t *)p;
    case IT_I8: return (double)*(const int8_t *)p;
    case IT_I16: { int16_t v; memcpy(&v, p, 2); return (double)v; }
    case IT_I32: { int32_t v; memcpy(&v, p, 4); return (double)v; }
    case IT_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case IT_U16: { uint16_t v; memcpy(&v, p, 2); return (double)v; }
    case IT_U32: { uint32_t v; memcpy(&v, p, 4); return (double)v; }
    case IT_U64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case IT_F16: { uint16_t v; memcpy(&v, p, 2); return (double)ref_h2f(v); }
    case IT_BF16: { uint16_t v; memcpy(&v, p, 2); return (double)ref_bf2f(v); }
    case IT_F32: { float v; memcpy(&v, p, 4); return (double)v; }
    case IT_F64: { double v; memcpy(&v, p, 8); return v; }
    case IT_C64: { float v; memcpy(&v, p, 4); return (double)v; }
    case IT_C128: { double v; memcpy(&v, p, 8); return v; }
    default: fail_msg("el_load: bad dtype %d", (int)dt);
    }
    return 0.0;
}

static inline void el_store(it_dtype dt, void *p, double x)
{
    switch (dt) {
    case IT_BOOL: *(unsigned char *)p = x != 0.0; break;
    case IT_U8: *(uint8_t *)p = (uint8_t)(int64_t)x; break;
    case IT_I8: *(int8_t *)p = (int8_t)x; break;
    case IT_I16: { int16_t v = (int16_t)x; memcpy(p, &v, 2); break; }
    case IT_I32: { int32_t v = (int32_t)x; memcpy(p, &v, 4); break; }
    case IT_I64: { int64_t v = (int64_t)x; memcpy(p, &v, 8); break; }
    case IT_U16: { uint16_t v = (uint16_t)(int64_t)x; memcpy(p, &v, 2); break; }
    case IT_U32: { uint32_t v = (uint32_t)(int64_t)x; memcpy(p, &v, 4); break; }
    case IT_U64: { uint64_t v = (uint64_t)(int64_t)x; memcpy(p, &v, 8); break; }
    case IT_F16: { uint16_t v = ref_f2h((float)x); memcpy(p, &v, 2); break; }
    case IT_BF16: { uint16_t v = ref_f2bf((float)x); memcpy(p, &v, 2); break; }
    case IT_F32: { float v = (float)x; memcpy(p, &v, 4); break; }
    case IT_F64: memcpy(p, &x, 8); break;
    case IT_C64: { float v[2] = {(float)x, 0.0f}; memcpy(p, v, 8); break; }
    case IT_C128: { double v[2] = {x, 0.0}; memcpy(p, v, 16); break; }
    default: fail_msg("el_store: bad dtype %d", (int)dt);
    }
}

static inline size_t tu_elsize(it_dtype dt)
{
    static const size_t sz[IT_DTYPE_COUNT] = {1, 1, 1, 2, 4, 8, 2, 4, 8, 2, 2, 4, 8, 8, 16};
    return (int)dt >= 0 && dt < IT_DTYPE_COUNT ? sz[dt] : 0;
}

/* ------------------------------------------------------------------ */
/* integer helpers and geometry references                              */

static inline int64_t ref_fdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static inline int64_t ref_cdiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && ((a < 0) == (b < 0)))
        q++;
    return q;
}

static inline int64_t ref_extent(int64_t start, int64_t stop, int64_t step)
{
    if (stop <= start)
        return 0;
    /* the span may exceed INT64_MAX (from -2^62 to 2^62): 128-bit */
    __int128 len = (__int128)stop - (__int128)start;
    __int128 n = (len + step - 1) / step;
    return n > INT64_MAX ? INT64_MAX : (int64_t)n;
}

static inline it_window mkwin(int ndim, const int64_t *size, const int64_t *stride,
                              const int64_t *offset, const int *map, int ncoords)
{
    it_window w;
    memset(&w, 0, sizeof w);
    w.ndim = ndim;
    w.ncoords = ncoords;
    for (int d = 0; d < ndim; d++) {
        w.size[d] = size[d];
        w.stride[d] = stride ? stride[d] : size[d];
        w.offset[d] = offset ? offset[d] : 0;
        w.map[d] = map ? map[d] : d;
    }
    return w;
}

static inline it_box mkbox(int ndim, const int64_t *start, const int64_t *stop, const int64_t *step)
{
    it_box b;
    memset(&b, 0, sizeof b);
    b.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        b.start[d] = start[d];
        b.stop[d] = stop[d];
        b.step[d] = step ? step[d] : 1;
    }
    return b;
}

static inline void ref_bounds(const it_window *w, const int64_t *coords, int64_t *s, int64_t *e)
{
    for (int d = 0; d < w->ndim; d++) {
        if (w->map[d] == IT_MAP_FIXED)
            s[d] = w->offset[d];
        else
            s[d] = coords[w->map[d]] * w->stride[d] + w->offset[d];
        e[d] = s[d] + w->size[d];
    }
}

/* A window index is valid for a tensor of this shape when every
 * coordinate no dim follows is 0 and the window lies inside every finite
 * dim. */
static inline int ref_window_valid(const it_window *w, const int64_t *shape, const int64_t *coords)
{
    int followed[IT_MAX_DIMS] = {0};
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    for (int d = 0; d < w->ndim; d++)
        if (w->map[d] != IT_MAP_FIXED)
            followed[w->map[d]] = 1;
    for (int c = 0; c < w->ncoords; c++)
        if (!followed[c] && coords[c] != 0)
            return 0;
    ref_bounds(w, coords, s, e);
    for (int d = 0; d < w->ndim; d++)
        if (shape[d] != IT_DIM_INFINITE && (s[d] < 0 || e[d] > shape[d]))
            return 0;
    return 1;
}

/* Exact domain for small values: per coordinate [lo, hi]; 0 when empty. */
static inline int ref_domain(const it_window *w, const int64_t *shape, const int64_t *start,
                             const int64_t *stop, int64_t *lo, int64_t *hi)
{
    int followed[IT_MAX_DIMS] = {0};
    for (int c = 0; c < w->ncoords; c++) { /* beyond any index a legal window can have */
        lo[c] = -(((int64_t)1 << 62) + ((int64_t)1 << 50));
        hi[c] = ((int64_t)1 << 62) + ((int64_t)1 << 50);
    }
    for (int d = 0; d < w->ndim; d++) {
        int64_t sz = w->size[d], st = w->stride[d], off = w->offset[d];
        if (start[d] >= stop[d])
            return 0;
        if (w->map[d] == IT_MAP_FIXED) {
            if (!(off < stop[d] && off + sz > start[d]))
                return 0;
            if (shape[d] != IT_DIM_INFINITE && (off < 0 || off + sz > shape[d]))
                return 0;
            continue;
        }
        int c = w->map[d];
        followed[c] = 1;
        int64_t l = ref_cdiv(start[d] - off - sz + 1, st);
        int64_t h = ref_fdiv(stop[d] - 1 - off, st);
        if (shape[d] != IT_DIM_INFINITE) {
            l = IT_MAX(l, ref_cdiv(-off, st));
            h = IT_MIN(h, ref_fdiv(shape[d] - off - sz, st));
        }
        lo[c] = IT_MAX(lo[c], l);
        hi[c] = IT_MIN(hi[c], h);
    }
    for (int c = 0; c < w->ncoords; c++) {
        if (!followed[c])
            lo[c] = hi[c] = 0;
        if (lo[c] > hi[c])
            return 0;
    }
    return 1;
}

/* Advance a multi-index in [lo, hi] (inclusive) in row-major order. */
static inline int tu_next_index(int n, int64_t *idx, const int64_t *lo, const int64_t *hi)
{
    for (int c = n - 1; c >= 0; c--) {
        if (idx[c] < hi[c]) {
            idx[c]++;
            return 1;
        }
        idx[c] = lo[c];
    }
    return 0;
}

static inline int tu_lex_less(int n, const int64_t *a, const int64_t *b)
{
    for (int c = 0; c < n; c++)
        if (a[c] != b[c])
            return a[c] < b[c];
    return 0;
}

/* ------------------------------------------------------------------ */
/* window -> count table                                                */

typedef struct wtab {
    int nc;
    size_t cap, n;
    int64_t *keys;
    long *vals;
    unsigned char *used;
} wtab;

static inline uint64_t wtab_hash(const int64_t *k, int nc)
{
    uint64_t h = 1469598103934665603ull;
    for (int c = 0; c < nc; c++) {
        h ^= (uint64_t)k[c] + 0x9E3779B97F4A7C15ull;
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return h;
}

static inline void wtab_init(wtab *t, int nc)
{
    memset(t, 0, sizeof *t);
    t->nc = nc;
}

static inline void wtab_free(wtab *t)
{
    free(t->keys);
    free(t->vals);
    free(t->used);
    int nc = t->nc;
    memset(t, 0, sizeof *t);
    t->nc = nc;
}

static inline long *wtab_slot(wtab *t, const int64_t *k, int create);

static inline void wtab_grow(wtab *t)
{
    wtab old = *t;
    t->cap = old.cap ? old.cap * 2 : 64;
    t->n = 0;
    t->keys = calloc(t->cap * (size_t)(t->nc ? t->nc : 1), sizeof(int64_t));
    t->vals = calloc(t->cap, sizeof(long));
    t->used = calloc(t->cap, 1);
    assert_non_null(t->keys);
    assert_non_null(t->vals);
    assert_non_null(t->used);
    for (size_t i = 0; i < old.cap; i++)
        if (old.used[i])
            *wtab_slot(t, old.keys + i * (size_t)(old.nc ? old.nc : 1), 1) = old.vals[i];
    free(old.keys);
    free(old.vals);
    free(old.used);
}

static inline long *wtab_slot(wtab *t, const int64_t *k, int create)
{
    size_t stride = (size_t)(t->nc ? t->nc : 1);
    if (t->cap == 0) {
        if (!create)
            return NULL;
        wtab_grow(t);
    }
    if (create && (t->n + 1) * 2 > t->cap)
        wtab_grow(t);
    size_t i = (size_t)(wtab_hash(k, t->nc) & (t->cap - 1));
    for (;;) {
        if (!t->used[i]) {
            if (!create)
                return NULL;
            t->used[i] = 1;
            memcpy(t->keys + i * stride, k, sizeof(int64_t) * (size_t)t->nc);
            t->vals[i] = 0;
            t->n++;
            return &t->vals[i];
        }
        if (memcmp(t->keys + i * stride, k, sizeof(int64_t) * (size_t)t->nc) == 0)
            return &t->vals[i];
        i = (i + 1) & (t->cap - 1);
    }
}

static inline long wtab_get(wtab *t, const int64_t *k)
{
    long *p = wtab_slot(t, k, 0);
    return p ? *p : 0;
}

static inline void wtab_clear(wtab *t)
{
    if (t->cap) {
        memset(t->used, 0, t->cap);
        t->n = 0;
    }
}

/* ------------------------------------------------------------------ */
/* the fake tensor                                                      */

#define FT_MAX_ARGS 4

typedef struct ft ft;
struct ft {
    it_tensor *t;
    it_cache *cache;
    it_tensor_spec spec;  /* what the tensor was created with (dtype follows retype) */
    double fill;          /* fill as a number (stored into spec.fill at create) */
    ft *up[FT_MAX_ARGS];  /* upstream fakes, one per arg */
    it_tensor *args_arr[FT_MAX_ARGS];
    it_window arg_windows[FT_MAX_ARGS];
    int64_t batch_size_now;

    /* value function */
    uint64_t seed;
    int modulus;      /* base values lie in [-(modulus/2), modulus/2] */
    int layout;       /* 0 contiguous, 1 negative strides, 2 column-major with gaps, 3 random */
    int blend_kind;   /* CUSTOM: 0/1 last wins (take incoming / copy), 2/3 2*a+b (in place / copy) */

    /* counters */
    long calls, ok_calls, failed_calls, releases, windows_ok;
    long blend_calls, blend_releases, blend_failed, user_frees;
    long blend_fail_call; /* fail the blend call with this number (1-based), 0: never */
    int blend_bad;        /* 1: result of the wrong shape, 2: of the wrong dtype */
    int64_t max_batch;
    wtab total, per_read;

    /* checks */
    int once;          /* fail if a window is computed twice (unbounded cache) */
    int once_per_read; /* fail if a window is computed twice in one top-level read */
    int check_args;    /* compare arg buffers with the reference */
    int check_hull;    /* every computed window intersects a registered region */
    int nhull, caphull;
    it_box *hulls;

    /* misbehaviour */
    long fail_call;   /* fail the call with this number (1-based), 0: never */
    int fail_repeat;  /* ...and every later call */
    int bad_out;      /* 1 shape, 2 dtype, 3 device (window 0 of each batch) */
    int read_self;    /* compute reads its own tensor (cycle) */
    int inner_rc;     /* what that read returned */
    int take_arg;     /* take args[0] of window 0 and free it ourselves */
    ft *nested;       /* compute also reads nested->t over the window's bounds */
    int nested_propagate; /* a failing nested read fails the compute with its code */
    long nested_reads;
    int clear_self_at_call; /* call it_tensor_clear(own tensor) inside this call */
    void (*pause)(void); /* called inside every compute: lets other threads run (threads test) */
    uint64_t rng_state;

    /* a callback never longjmps out of the core (cmocka's failure does):
     * it records the first problem here and the test fails after the call */
    const char *name; /* for messages */
    int nerr;
    char err[600];
    char last_msg[600]; /* the error message of the last failed ft_read_check */
};

static inline void ft_record(ft *f, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static inline void ft_record(ft *f, const char *fmt, ...)
{
    if (f->nerr++ == 0) {
        va_list ap;
        int len = snprintf(f->err, sizeof f->err, "%s: ", f->name ? f->name : "tensor");
        va_start(ap, fmt);
        vsnprintf(f->err + len, sizeof f->err - (size_t)len, fmt, ap);
        va_end(ap);
    }
}

/* In a callback: record the problem and make the callback fail. */
#define CB_FAIL(f, ...)                                                                  \
    do {                                                                                 \
        ft_record((f), __VA_ARGS__);                                                     \
        return it_error_set(IT_ECALLBACK, "test callback found a problem: %s", (f)->err); \
    } while (0)

static inline void ft_check_errors(const ft *f)
{
    if (f->nerr)
        fail_msg("%d problem(s) seen in callbacks; first: %s", f->nerr, f->err);
    for (int a = 0; a < f->spec.nargs; a++)
        ft_check_errors(f->up[a]);
    if (f->nested)
        ft_check_errors(f->nested);
}

static inline ft *ft_new(int ndim, const int64_t *shape, it_dtype dt)
{
    ft *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->spec.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        f->spec.shape[d] = shape[d];
    f->spec.dtype = dt;
    f->spec.device_type = TU_DEV_TYPE;
    f->spec.device_id = TU_DEV_ID;
#ifdef TU_DEVICE
    f->spec.devops = &tu_devops;
#endif
    f->spec.batch_size = 1;
    f->spec.combine = IT_COMBINE_SUM;
    f->seed = 12345;
    f->modulus = 101;
    f->rng_state = 99;
    wtab_init(&f->total, ndim);
    wtab_init(&f->per_read, ndim);
    return f;
}

static inline void ft_set_window(ft *f, const int64_t *size, const int64_t *stride,
                                 const int64_t *offset, const int *map)
{
    f->spec.window = mkwin(f->spec.ndim, size, stride, offset, map, f->spec.ndim);
}

static inline void ft_add_arg(ft *f, ft *up, const it_window *w)
{
    int a = f->spec.nargs++;
    assert_true(a < FT_MAX_ARGS);
    f->up[a] = up;
    f->arg_windows[a] = *w;
}

/* base value of pixel local[] of window coords[] */
static inline double ft_base(const ft *f, const int64_t *coords, const int64_t *local)
{
    uint64_t h = f->seed * 0x9E3779B97F4A7C15ull + 17;
    for (int c = 0; c < f->spec.ndim; c++) {
        h ^= (uint64_t)coords[c] + 0x632BE59BD9B4E019ull * (uint64_t)(c + 1);
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    int64_t v = (int64_t)(h % (uint64_t)f->modulus);
    for (int d = 0; d < f->spec.window.ndim; d++)
        v += local[d] * (2 * d + 3);
    return (double)(v % f->modulus - f->modulus / 2);
}

static inline double ft_fold(const ft *f, double a, double b)
{
    switch (f->spec.combine) {
    case IT_COMBINE_SUM: return a + b;
    case IT_COMBINE_MAX: return a > b ? a : b;
    case IT_COMBINE_MIN: return a < b ? a : b;
    case IT_COMBINE_CUSTOM: return f->blend_kind >= 2 ? 2 * a + b : b;
    default: fail_msg("ft_fold: combine %d", (int)f->spec.combine);
    }
    return 0;
}

static inline int64_t tu_box_numel(const it_box *b, int64_t *ext)
{
    int64_t n = 1;
    for (int d = 0; d < b->ndim; d++) {
        ext[d] = ref_extent(b->start[d], b->stop[d], b->step[d]);
        n *= ext[d];
    }
    return n;
}

static inline void ft_reference(ft *f, const it_box *box, double *out);

static inline double ft_arg_weight(int a, int64_t j)
{
    return (double)((a + 1) * ((j % 7) + 1));
}

/* The reference checksum of the args of window coords. */
static inline double ft_args_ref(ft *f, const int64_t *coords)
{
    double S = 0;
    for (int a = 0; a < f->spec.nargs; a++) {
        int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], ext[IT_MAX_DIMS];
        ref_bounds(&f->arg_windows[a], coords, s, e);
        it_box b = mkbox(f->arg_windows[a].ndim, s, e, NULL);
        int64_t n = tu_box_numel(&b, ext);
        double *tmp = malloc(sizeof(double) * (size_t)(n ? n : 1));
        assert_non_null(tmp);
        ft_reference(f->up[a], &b, tmp);
        for (int64_t j = 0; j < n; j++)
            S += ft_arg_weight(a, j) * tmp[j];
        free(tmp);
    }
    return S;
}

/* Dense reference of the box: out[numel], row-major. */
static inline void ft_reference(ft *f, const it_box *box, double *out)
{
    const it_window *w = &f->spec.window;
    int nd = f->spec.ndim, nc = w->ncoords;
    int64_t ext[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], co[IT_MAX_DIMS];
    int64_t n = tu_box_numel(box, ext);
    for (int64_t i = 0; i < n; i++)
        out[i] = f->fill;
    if (n == 0)
        return;
    int strided = 0;
    for (int d = 0; d < nd; d++)
        strided |= box->step[d] > 1;
    if (strided) {
        /* sample by sample: a strided box may span far more windows than it
         * has samples (up to the whole coordinate range) */
        int64_t k[IT_MAX_DIMS] = {0}, klo[IT_MAX_DIMS] = {0}, khi[IT_MAX_DIMS];
        for (int d = 0; d < nd; d++)
            khi[d] = ext[d] - 1;
        do {
            it_box one;
            int64_t idx = 0;
            one.ndim = nd;
            for (int d = 0; d < nd; d++) {
                one.start[d] = box->start[d] + k[d] * box->step[d];
                one.stop[d] = one.start[d] + 1;
                one.step[d] = 1;
                idx = idx * ext[d] + k[d];
            }
            ft_reference(f, &one, &out[idx]);
        } while (tu_next_index(nd, k, klo, khi));
        return;
    }
    if (!ref_domain(w, f->spec.shape, box->start, box->stop, lo, hi))
        return;
    memcpy(co, lo, sizeof(int64_t) * (size_t)nc);
    do {
        int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], klo[IT_MAX_DIMS], khi[IT_MAX_DIMS], k[IT_MAX_DIMS];
        if (!ref_window_valid(w, f->spec.shape, co))
            continue;
        ref_bounds(w, co, s, e);
        int empty = 0;
        for (int d = 0; d < nd; d++) {
            klo[d] = IT_MAX(0, ref_cdiv(s[d] - box->start[d], box->step[d]));
            khi[d] = IT_MIN(ext[d] - 1, ref_fdiv(e[d] - 1 - box->start[d], box->step[d]));
            if (klo[d] > khi[d])
                empty = 1;
        }
        if (empty)
            continue;
        double S = ft_args_ref(f, co);
        memcpy(k, klo, sizeof(int64_t) * (size_t)nd);
        do {
            int64_t local[IT_MAX_DIMS], idx = 0;
            for (int d = 0; d < nd; d++) {
                local[d] = box->start[d] + k[d] * box->step[d] - s[d];
                idx = idx * ext[d] + k[d];
            }
            out[idx] = ft_fold(f, out[idx], ft_base(f, co, local) + S);
        } while (tu_next_index(nd, k, klo, khi));
    } while (tu_next_index(nc, co, lo, hi));
}

static inline void ft_add_hull(ft *f, const it_box *b)
{
    if (f->nhull == f->caphull) {
        f->caphull = f->caphull ? 2 * f->caphull : 16;
        f->hulls = realloc(f->hulls, sizeof(it_box) * (size_t)f->caphull);
        assert_non_null(f->hulls);
    }
    f->hulls[f->nhull++] = *b;
}

/* Register box as read from f, and the arg regions of every window of f
 * that can be computed for it as read from the upstream fakes. */
static inline void ft_register(ft *f, const it_box *box)
{
    const it_window *w = &f->spec.window;
    int64_t lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], co[IT_MAX_DIMS];
    ft_add_hull(f, box);
    if (f->spec.nargs == 0 || !ref_domain(w, f->spec.shape, box->start, box->stop, lo, hi))
        return;
    memcpy(co, lo, sizeof(int64_t) * (size_t)w->ncoords);
    do {
        if (!ref_window_valid(w, f->spec.shape, co))
            continue;
        for (int a = 0; a < f->spec.nargs; a++) {
            int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
            ref_bounds(&f->arg_windows[a], co, s, e);
            it_box b = mkbox(f->arg_windows[a].ndim, s, e, NULL);
            ft_register(f->up[a], &b);
        }
    } while (tu_next_index(w->ncoords, co, lo, hi));
}

static inline int ft_in_hull(const ft *f, const int64_t *coords)
{
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    ref_bounds(&f->spec.window, coords, s, e);
    for (int h = 0; h < f->nhull; h++) {
        const it_box *b = &f->hulls[h];
        int ok = 1;
        for (int d = 0; d < b->ndim && ok; d++)
            ok = s[d] < b->stop[d] && e[d] > b->start[d];
        if (ok)
            return 1;
    }
    return 0;
}

static inline void tu_contig_strides(int nd, const int64_t *shape, size_t es, int64_t *st)
{
    int64_t s = (int64_t)es;
    for (int d = nd - 1; d >= 0; d--) {
        st[d] = s;
        if (d > 0) /* the product past dim 0 is never used (and may overflow) */
            s *= shape[d] > 0 ? shape[d] : 1;
    }
}

/* Strides and byte span for a view of shape in one of the layouts; *first
 * is the byte offset of element 0 from the start of the block. */
static inline size_t tu_layout(int layout, int nd, const int64_t *shape, size_t es, int64_t *st,
                               int64_t *first, uint64_t *rs)
{
    int64_t numel = 1;
    for (int d = 0; d < nd; d++)
        numel *= shape[d];
    if (layout == 3) {
        rng_t r = {*rs};
        layout = (int)rng_range(&r, 0, 2);
        *rs = r.s;
    }
    if (layout == 0 || nd == 0) {
        tu_contig_strides(nd, shape, es, st);
        *first = 0;
        return (size_t)numel * es;
    }
    if (layout == 1) {
        tu_contig_strides(nd, shape, es, st);
        for (int d = 0; d < nd; d++)
            st[d] = -st[d];
        *first = (numel - 1) * (int64_t)es;
        return (size_t)numel * es;
    }
    /* column-major with a one-element gap after every column */
    int64_t s = (int64_t)es;
    for (int d = 0; d < nd; d++) {
        st[d] = s;
        s = s * shape[d] + (int64_t)es;
    }
    *first = 0;
    return (size_t)s;
}

/* local multi-index -> byte offset */
static inline int64_t tu_offset(int nd, const int64_t *idx, const int64_t *st)
{
    int64_t o = 0;
    for (int d = 0; d < nd; d++)
        o += idx[d] * st[d];
    return o;
}

static inline int tu_buffer_contiguous(const it_buffer *b)
{
    int64_t st[IT_MAX_DIMS];
    tu_contig_strides(b->ndim, b->shape, tu_elsize(b->dtype), st);
    for (int d = 0; d < b->ndim; d++)
        if (b->shape[d] > 1 && b->strides[d] != st[d])
            return 0;
    return 1;
}

typedef struct tu_str {
    char s[200];
} tu_str;

static inline tu_str tu_fmt_coords(int n, const int64_t *c)
{
    tu_str r;
    int len = 0;
    r.s[0] = 0;
    for (int i = 0; i < n && len < 180; i++)
        len += snprintf(r.s + len, sizeof r.s - (size_t)len, "%s%lld", i ? "," : "", (long long)c[i]);
    return r;
}

static inline int ft_compute(void *user, it_batch *b)
{
    ft *f = user;
    const it_tensor_spec *sp = &f->spec;
    const it_window *w = &sp->window;
    int nd = sp->ndim;
    f->calls++;
    if (b->n < 1 || b->n > f->batch_size_now)
        CB_FAIL(f, "compute: batch of %lld windows with batch_size %lld", (long long)b->n,
                 (long long)f->batch_size_now);
    if (b->n > f->max_batch)
        f->max_batch = b->n;
    if (b->ncoords != nd)
        CB_FAIL(f, "compute: ncoords %d, expected %d", b->ncoords, nd);
    if (b->nargs != sp->nargs)
        CB_FAIL(f, "compute: nargs %d, expected %d", b->nargs, sp->nargs);
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t *co = b->coords + i * nd;
        /* windows come in the order they were first seen (plan.c, "Order"),
         * each once; a custom blend's in lexicographic order */
        for (int64_t j = 0; j < i; j++)
            if (!tu_lex_less(nd, b->coords + j * nd, co) && !tu_lex_less(nd, co, b->coords + j * nd))
                CB_FAIL(f, "compute: window (%s) twice in one batch", tu_fmt_coords(nd, co).s);
        if (sp->combine == IT_COMBINE_CUSTOM && i > 0 && !tu_lex_less(nd, co - nd, co))
            CB_FAIL(f, "compute: custom-blend batch coords not in strictly increasing lexicographic order");
        if (!ref_window_valid(w, sp->shape, co))
            CB_FAIL(f, "compute: window (%s) is not a valid window (sticks out of a finite dim"
                     " or has a nonzero unfollowed coordinate)", tu_fmt_coords(nd, co).s);
        if (f->check_hull && !ft_in_hull(f, co))
            CB_FAIL(f, "compute: window (%s) intersects no region that was read",
                     tu_fmt_coords(nd, co).s);
    }
    if (f->pause)
        f->pause();
    if (f->fail_call > 0 &&
        (f->calls == f->fail_call || (f->fail_repeat && f->calls > f->fail_call))) {
        f->failed_calls++;
        return it_error_set(IT_ECALLBACK, "fake compute failed on call %ld", f->calls);
    }
    if (f->clear_self_at_call > 0 && f->calls == f->clear_self_at_call)
        it_tensor_clear(f->t);
    if (f->read_self) {
        int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
        ref_bounds(w, b->coords, s, e);
        it_box bx = mkbox(nd, s, e, NULL);
        it_buffer *o = NULL;
        it_error_clear();
        f->inner_rc = it_tensor_read(f->t, &bx, 0, &o);
        it_buffer_free(o);
        if (f->inner_rc != IT_OK)
            return f->inner_rc;
    }
    if (f->nested) {
        for (int64_t i = 0; i < b->n; i++) {
            int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], ext[IT_MAX_DIMS];
            ref_bounds(w, b->coords + i * nd, s, e);
            it_box bx = mkbox(nd, s, e, NULL);
            it_buffer *o = NULL;
            int rc = it_tensor_read(f->nested->t, &bx, 0, &o);
            if (rc != IT_OK && f->nested_propagate)
                return rc;
            if (rc != IT_OK)
                CB_FAIL(f, "compute: nested read failed with %d (%s)", rc, it_error_message());
            tu_buffer_flip(o);
            int64_t n = tu_box_numel(&bx, ext);
            double *ref = malloc(sizeof(double) * (size_t)n);
            assert_non_null(ref);
            ft_reference(f->nested, &bx, ref);
            for (int64_t j = 0; j < n; j++)
                if (el_load(o->dtype, (char *)o->data + j * (int64_t)tu_elsize(o->dtype)) != ref[j])
                    CB_FAIL(f, "compute: nested read element %lld is wrong", (long long)j);
            free(ref);
            it_buffer_free(o);
            f->nested_reads++;
        }
    }

    size_t es = tu_elsize(sp->dtype);
    int64_t wn = 1;
    for (int d = 0; d < nd; d++)
        wn *= w->size[d];
    /* one block for the whole batch */
    int64_t st[IT_MAX_DIMS], first;
    uint64_t rs = f->rng_state;
    size_t span = tu_layout(f->layout, nd, w->size, es, st, &first, &rs);
    f->rng_state = rs + 1;
    size_t per = span + 2 * es + 64; /* room for a bigger shape (bad_out) */
    char *block = malloc(per * (size_t)b->n + 64);
    assert_non_null(block);
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t *co = b->coords + i * nd;
        double S = 0;
        for (int a = 0; a < sp->nargs; a++) {
            it_buffer *ab = b->args[a * b->n + i];
            const ft *up = f->up[a];
            int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
            if (ab == NULL)
                CB_FAIL(f, "compute: arg %d of window %lld is NULL", a, (long long)i);
            ref_bounds(&f->arg_windows[a], co, s, e);
            if (ab->ndim != up->spec.ndim || ab->dtype != up->spec.dtype)
                CB_FAIL(f, "compute: arg %d has ndim %d dtype %d, expected %d %d", a, ab->ndim,
                         (int)ab->dtype, up->spec.ndim, (int)up->spec.dtype);
            int64_t n = 1;
            for (int d = 0; d < ab->ndim; d++) {
                if (ab->shape[d] != e[d] - s[d])
                    CB_FAIL(f, "compute: arg %d dim %d has extent %lld, expected %lld", a, d,
                             (long long)ab->shape[d], (long long)(e[d] - s[d]));
                n *= ab->shape[d];
            }
            if (!tu_buffer_contiguous(ab))
                CB_FAIL(f, "compute: arg %d is not contiguous", a);
            tu_buffer_flip(ab); /* a fresh buffer for this call: read it in clear */
            double *ref = NULL;
            if (f->check_args) {
                it_box bx = mkbox(ab->ndim, s, e, NULL);
                ref = malloc(sizeof(double) * (size_t)(n ? n : 1));
                assert_non_null(ref);
                ft_reference(f->up[a], &bx, ref);
            }
            size_t aes = tu_elsize(ab->dtype);
            for (int64_t j = 0; j < n; j++) {
                double v = el_load(ab->dtype, (char *)ab->data + j * (int64_t)aes);
                if (ref && v != ref[j])
                    CB_FAIL(f, "compute: arg %d element %lld is %g, expected %g (window %lld)", a,
                             (long long)j, v, ref[j], (long long)co[0]);
                S += ft_arg_weight(a, j) * v;
            }
            free(ref);
            if (f->take_arg && a == 0 && i == 0) {
                b->args[0] = NULL;
                it_buffer_free(ab);
            }
        }
        char *base = block + (size_t)i * per;
        base += (64 - ((uintptr_t)base & 63)) & 63;
        it_view *v = &b->out[i];
        memset(v, 0, sizeof *v);
        v->data = base + first;
        v->dtype = sp->dtype;
        v->ndim = nd;
        v->device_type = TU_DEV_TYPE;
        v->device_id = TU_DEV_ID;
        for (int d = 0; d < nd; d++) {
            v->shape[d] = w->size[d];
            v->strides[d] = st[d];
        }
        int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS], k[IT_MAX_DIMS] = {0};
        for (int d = 0; d < nd; d++)
            hi[d] = w->size[d] - 1;
        if (wn > 0) {
            do {
                el_store(sp->dtype, (char *)v->data + tu_offset(nd, k, st), ft_base(f, co, k) + S);
            } while (tu_next_index(nd, k, lo, hi));
        }
        if (i == 0 && f->bad_out == 1)
            v->shape[0] = w->size[0] > 1 ? w->size[0] - 1 : 2;
        if (i == 0 && f->bad_out == 2)
            v->dtype = sp->dtype == IT_F64 ? IT_F32 : IT_F64;
        if (i == 0 && f->bad_out == 3)
            v->device_type = TU_DEV_TYPE == IT_DEVICE_CPU ? IT_DEVICE_CUDA : IT_DEVICE_CPU;
    }
#ifdef TU_DEVICE
    tu_scramble(block, per * (size_t)b->n + 64); /* the outputs live on the device */
#endif
    b->out_owner = block;
    f->ok_calls++;
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t *co = b->coords + i * nd;
        long *t = wtab_slot(&f->total, co, 1);
        long *r = wtab_slot(&f->per_read, co, 1);
        ++*t;
        ++*r;
        f->windows_ok++;
        if (f->once && *t > 1)
            ft_record(f, "compute: window (%s) computed %ld times with an unbounded cache",
                      tu_fmt_coords(nd, co).s, *t);
        if (f->once_per_read && *r > 1)
            ft_record(f, "compute: window (%s) computed %ld times in one read",
                      tu_fmt_coords(nd, co).s, *r);
    }
    return IT_OK;
}

static inline void ft_release(void *user, it_batch *b)
{
    ft *f = user;
    f->releases++;
    free(b->out_owner);
    b->out_owner = NULL;
}

static inline int ft_blend(void *user, it_buffer **existing, it_buffer **incoming, it_view *result,
                           void **owner)
{
    ft *f = user;
    f->blend_calls++;
    if (f->blend_fail_call > 0 && f->blend_calls == f->blend_fail_call) {
        f->blend_failed++;
        return it_error_set(IT_ECALLBACK, "fake blend failed on call %ld", f->blend_calls);
    }
    if (!existing || !incoming || !*existing || !*incoming)
        CB_FAIL(f, "blend: NULL buffer");
    it_buffer *ex = *existing, *in = *incoming;
    if (ex->ndim != in->ndim || ex->dtype != f->spec.dtype || in->dtype != f->spec.dtype)
        CB_FAIL(f, "blend: ndim %d/%d dtype %d/%d (tensor dtype %d)", ex->ndim, in->ndim,
                 (int)ex->dtype, (int)in->dtype, (int)f->spec.dtype);
    int64_t n = 1;
    for (int d = 0; d < ex->ndim; d++) {
        if (ex->shape[d] != in->shape[d])
            CB_FAIL(f, "blend: shapes differ in dim %d", d);
        n *= ex->shape[d];
    }
    if (!tu_buffer_contiguous(ex) || !tu_buffer_contiguous(in))
        CB_FAIL(f, "blend: buffers are not contiguous");
    tu_buffer_flip(ex);
    tu_buffer_flip(in);
    it_dtype dt = f->spec.dtype;
    size_t es = tu_elsize(dt);
    memset(result, 0, sizeof *result);
    switch (f->blend_kind) {
    case 0: /* last wins: hand back the incoming buffer itself */
        *incoming = NULL;
        tu_buffer_flip(in);
        it_buffer_view(in, result);
        *owner = in;
        break;
    case 2: /* 2*a + b in place in the existing buffer */
        for (int64_t j = 0; j < n; j++) {
            char *p = (char *)ex->data + j * (int64_t)es;
            el_store(dt, p, 2 * el_load(dt, p) + el_load(dt, (char *)in->data + j * (int64_t)es));
        }
        *existing = NULL;
        tu_buffer_flip(ex);
        it_buffer_view(ex, result);
        *owner = ex;
        break;
    case 1:
    case 3: { /* a fresh block with negative strides */
        int64_t st[IT_MAX_DIMS], first;
        uint64_t rs = 0;
        size_t span = tu_layout(1, ex->ndim, ex->shape, es, st, &first, &rs);
        char *mem = malloc(span + 16);
        assert_non_null(mem);
        int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS], k[IT_MAX_DIMS] = {0};
        for (int d = 0; d < ex->ndim; d++)
            hi[d] = ex->shape[d] - 1;
        int64_t j = 0;
        if (n > 0) {
            do {
                double a = el_load(dt, (char *)ex->data + j * (int64_t)es);
                double bb = el_load(dt, (char *)in->data + j * (int64_t)es);
                el_store(dt, mem + first + tu_offset(ex->ndim, k, st),
                         f->blend_kind == 1 ? bb : 2 * a + bb);
                j++;
            } while (tu_next_index(ex->ndim, k, lo, hi));
        }
#ifdef TU_DEVICE
        tu_scramble(mem, span + 16);
#endif
        result->data = mem + first;
        result->dtype = dt;
        result->ndim = ex->ndim;
        result->device_type = TU_DEV_TYPE;
        result->device_id = TU_DEV_ID;
        for (int d = 0; d < ex->ndim; d++) {
            result->shape[d] = ex->shape[d];
            result->strides[d] = st[d];
        }
        *owner = mem;
        break;
    }
    default:
        CB_FAIL(f, "blend kind %d", f->blend_kind);
    }
    if (f->blend_bad == 1)
        result->shape[0] += 1;
    if (f->blend_bad == 2)
        result->dtype = dt == IT_F64 ? IT_F32 : IT_F64;
    return IT_OK;
}

static inline void ft_release_view(void *user, void *owner)
{
    ft *f = user;
    f->blend_releases++;
    if (f->blend_kind == 0 || f->blend_kind == 2)
        it_buffer_free(owner);
    else
        free(owner);
}

static inline void ft_user_free(void *user)
{
    ((ft *)user)->user_frees++;
}

static inline const it_tensor_ops *ft_ops(void)
{
    static const it_tensor_ops ops = {ft_compute, ft_release, ft_blend, ft_release_view,
                                      ft_user_free};
    return &ops;
}

/* Create the tensor (spec fields set by the caller). */
static inline int ft_create(ft *f, it_cache *c)
{
    memset(f->spec.fill, 0, sizeof f->spec.fill);
    if (tu_elsize(f->spec.dtype))
        el_store(f->spec.dtype, f->spec.fill, f->fill);
    for (int a = 0; a < f->spec.nargs; a++)
        f->args_arr[a] = f->up[a]->t;
    f->spec.args = f->spec.nargs ? f->args_arr : NULL;
    f->spec.arg_windows = f->spec.nargs ? f->arg_windows : NULL;
    f->batch_size_now = f->spec.batch_size;
    f->cache = c;
    return it_tensor_create(c, &f->spec, ft_ops(), f, &f->t);
}

static inline void ft_create_ok(ft *f, it_cache *c)
{
    it_error_clear();
    int rc = ft_create(f, c);
    if (rc != IT_OK)
        fail_msg("it_tensor_create failed: %d (%s)", rc, it_error_message());
}

/* Drop the tensor and free the fake.  Downstream fakes must go first. */
static inline void ft_destroy(ft *f)
{
    if (!f)
        return;
    ft_check_errors(f);
    if (f->t) {
        it_tensor_unref(f->t);
        f->t = NULL;
        if (f->user_frees != 1)
            fail_msg("user_free called %ld times when the last reference went", f->user_frees);
    }
    wtab_free(&f->total);
    wtab_free(&f->per_read);
    free(f->hulls);
    free(f);
}

static inline void ft_reset_per_read(ft *f)
{
    wtab_clear(&f->per_read);
    for (int a = 0; a < f->spec.nargs; a++)
        ft_reset_per_read(f->up[a]);
}

/* Forget the windows computed so far (after a clear / trim / eviction). */
static inline void ft_forget(ft *f)
{
    wtab_clear(&f->total);
}

static inline void ft_check_released(const ft *f)
{
    if (f->releases != f->ok_calls)
        fail_msg("release called %ld times after %ld successful computes", f->releases,
                 f->ok_calls);
    if (f->blend_releases != f->blend_calls - f->blend_failed)
        fail_msg("release_view called %ld times after %ld successful blends", f->blend_releases,
                 f->blend_calls - f->blend_failed);
    for (int a = 0; a < f->spec.nargs; a++)
        ft_check_released(f->up[a]);
}

static inline long ft_calls_tree(const ft *f)
{
    long n = f->calls;
    for (int a = 0; a < f->spec.nargs; a++)
        n += ft_calls_tree(f->up[a]);
    return n;
}

/* Test-wide switches (one copy per test binary). */
typedef struct tu_opts {
    int defer_limit_checks; /* count limit violations instead of failing at once */
    long limit_violations;
    char first_violation[200];
    const char *where;      /* prefixed to the first violation */
} tu_opts;

static inline tu_opts *tu_options(void)
{
    static tu_opts o;
    return &o;
}

static inline void tu_limit_violation(const char *fmt, long long a, long long b)
{
    tu_opts *o = tu_options();
    char msg[150];
    snprintf(msg, sizeof msg, fmt, a, b);
    if (!o->defer_limit_checks)
        fail_msg("%s", msg);
    if (o->limit_violations++ == 0)
        snprintf(o->first_violation, sizeof o->first_violation, "%s%s%s", o->where ? o->where : "",
                 o->where ? ": " : "", msg);
}

/* The cache is consistent, nothing is pinned, and it is within its limits. */
static inline void tu_cache_ok(it_cache *c)
{
    it_error_clear();
    int rc = it_cache_check(c);
    if (rc != IT_OK)
        fail_msg("it_cache_check: %d (%s)", rc, it_error_message());
    if (it_cache_pinned(c) != 0)
        fail_msg("%lld tiles still pinned after the operation", (long long)it_cache_pinned(c));
    int64_t bl, wl;
    it_cache_limits(c, &bl, &wl);
    if (bl >= 0 && it_cache_bytes(c) > bl)
        tu_limit_violation("cache holds %lld bytes over its limit %lld", (long long)it_cache_bytes(c),
                           (long long)bl);
    if (wl >= 0 && it_cache_weight(c) > wl)
        tu_limit_violation("cache holds weight %lld over its limit %lld",
                           (long long)it_cache_weight(c), (long long)wl);
    if (it_cache_bytes(c) < 0 || it_cache_tiles(c) < 0 || it_cache_weight(c) < 0)
        fail_msg("negative cache counters");
}

/* Compare a buffer with the reference of f over box. */
static inline void ft_compare(ft *f, const it_box *box, const it_buffer *out)
{
    int64_t ext[IT_MAX_DIMS], st[IT_MAX_DIMS];
    int64_t n = tu_box_numel(box, ext);
    if (out == NULL)
        fail_msg("read returned IT_OK and no buffer");
    if (out->ndim != f->spec.ndim)
        fail_msg("read buffer ndim %d, expected %d", out->ndim, f->spec.ndim);
    if (out->dtype != f->spec.dtype)
        fail_msg("read buffer dtype %d, expected %d", (int)out->dtype, (int)f->spec.dtype);
    size_t es = tu_elsize(f->spec.dtype);
    tu_contig_strides(out->ndim, ext, es, st);
    for (int d = 0; d < out->ndim; d++) {
        if (out->shape[d] != ext[d])
            fail_msg("read buffer dim %d has extent %lld, expected %lld", d,
                     (long long)out->shape[d], (long long)ext[d]);
        if (n > 0 && ext[d] > 1 && out->strides[d] != st[d])
            fail_msg("read buffer dim %d has stride %lld, expected %lld (row-major)", d,
                     (long long)out->strides[d], (long long)st[d]);
    }
    if (out->nbytes != (size_t)n * es)
        fail_msg("read buffer nbytes %zu, expected %lld", out->nbytes, (long long)(n * (int64_t)es));
    if (n > 0 && ((uintptr_t)out->data & 63) != 0)
        fail_msg("read buffer data is not 64-byte aligned");
    double *ref = malloc(sizeof(double) * (size_t)(n ? n : 1));
    assert_non_null(ref);
    ft_reference(f, box, ref);
    for (int64_t j = 0; j < n; j++) {
        double v = el_load(out->dtype, (const char *)out->data + j * (int64_t)es);
        if (!(v == ref[j])) {
            int64_t rem = j, pix[IT_MAX_DIMS];
            for (int d = out->ndim - 1; d >= 0; d--) {
                pix[d] = box->start[d] + (rem % ext[d]) * box->step[d];
                rem /= ext[d];
            }
            char where[256];
            int len = 0;
            for (int d = 0; d < out->ndim; d++)
                len += snprintf(where + len, sizeof where - (size_t)len, "%s%lld", d ? "," : "",
                                (long long)pix[d]);
            double expect = ref[j];
            free(ref);
            fail_msg("pixel (%s) reads %g, expected %g (box dim0 [%lld,%lld) step %lld)", where, v,
                     expect, (long long)box->start[0], (long long)box->stop[0],
                     (long long)box->step[0]);
        }
    }
    free(ref);
}

/* Read box from f through the core, check everything; returns the code. */
static inline int ft_read_check(ft *f, const it_box *box, int flags)
{
    if (f->check_hull)
        ft_register(f, box);
    ft_reset_per_read(f);
    long before = ft_calls_tree(f);
    it_buffer *out = NULL;
    it_error_clear();
    int rc = it_tensor_read(f->t, box, flags, &out);
    ft_check_errors(f);
    if (rc == IT_OK) {
        tu_buffer_flip(out);
        ft_compare(f, box, out);
        it_buffer_free(out);
    } else {
        tu_check_recorded(rc, "it_tensor_read", __FILE__, __LINE__);
        snprintf(f->last_msg, sizeof f->last_msg, "%s", it_error_message());
    }
    if ((flags & IT_READ_NO_COMPUTE) && ft_calls_tree(f) != before)
        fail_msg("IT_READ_NO_COMPUTE read called compute");
    tu_cache_ok(f->cache);
    ft_check_released(f);
    return rc;
}

static inline void ft_read_ok(ft *f, const it_box *box)
{
    int rc = ft_read_check(f, box, 0);
    if (rc != IT_OK)
        fail_msg("it_tensor_read failed: %d (%s)", rc, f->last_msg);
}

static inline void ft_read_ok1(ft *f, int64_t a, int64_t b)
{
    it_box bx = mkbox(1, &a, &b, NULL);
    ft_read_ok(f, &bx);
}

static inline void ft_read_ok2(ft *f, int64_t a0, int64_t b0, int64_t a1, int64_t b1)
{
    int64_t s[2] = {a0, a1}, e[2] = {b0, b1};
    it_box bx = mkbox(2, s, e, NULL);
    ft_read_ok(f, &bx);
}

/* Bytes of one tile and one window of t, from the core's tile shape. */
static inline int64_t tu_tile_bytes(const it_tensor *t)
{
    const it_tensor_spec *sp = it_tensor_get_spec(t);
    int64_t ts[IT_MAX_DIMS], n = (int64_t)tu_elsize(sp->dtype);
    it_tensor_tile_shape(t, ts);
    for (int d = 0; d < sp->ndim; d++)
        n *= ts[d];
    return n;
}

static inline int64_t tu_window_bytes(const it_tensor *t)
{
    const it_tensor_spec *sp = it_tensor_get_spec(t);
    int64_t n = (int64_t)tu_elsize(sp->dtype);
    for (int d = 0; d < sp->window.ndim; d++)
        n *= sp->window.size[d];
    return n;
}

/* Shared by the test files. */
#define INF IT_DIM_INFINITE

/* Every core block allocated between LEAK_BEGIN and LEAK_END is freed. */
#define LEAK_BEGIN long live0_ = it_alloc_live_blocks(), dev0_ = tu_dev_live
#define LEAK_END                                                                            \
    do {                                                                                    \
        if (it_alloc_live_blocks() != live0_)                                               \
            fail_msg("%ld core blocks leaked", it_alloc_live_blocks() - live0_);            \
        if (tu_dev_live != dev0_)                                                           \
            fail_msg("%ld device allocations leaked", tu_dev_live - dev0_);                 \
    } while (0)

/* Bytes the cache holds in the memory the fake tensors use. */
static inline int64_t tu_cache_bytes(const it_cache *c)
{
#ifdef TU_DEVICE
    assert_int_equal(it_cache_bytes(c), 0); /* nothing of theirs in host memory */
    return it_cache_device_bytes(c);
#else
    assert_int_equal(it_cache_device_bytes(c), 0);
    return it_cache_bytes(c);
#endif
}

/* A new cache with these limits (< 0: none), its invariants checked. */
static inline it_cache *mkcache(int64_t bytes, int64_t weight)
{
    it_cache *c = NULL;
    EXPECT_OK(it_cache_create(bytes, weight, &c));
    assert_non_null(c);
#ifdef TU_DEVICE
    it_cache_set_device_limit(c, bytes); /* the same budget, for device memory */
#endif
    tu_cache_ok(c);
    return c;
}

/* ------------------------------------------------------------------ */
/* window sets and values for tests that count computations            */

/* Window w is valid and meets the step-1 box. */
static inline int ft_meets(const ft *f, const int64_t *w, const it_box *b)
{
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    if (!ref_window_valid(&f->spec.window, f->spec.shape, w))
        return 0;
    ref_bounds(&f->spec.window, w, s, e);
    for (int d = 0; d < b->ndim; d++)
        if (!(s[d] < b->stop[d] && e[d] > b->start[d]))
            return 0;
    return 1;
}

static inline int ft_meets_any(const ft *f, const int64_t *w, const it_box *b, int n)
{
    for (int i = 0; i < n; i++)
        if (ft_meets(f, w, &b[i]))
            return 1;
    return 0;
}

/* Windows meeting big and none of the n boxes `old`. */
static inline long ft_count_new(const ft *f, const it_box *big, const it_box *old, int nold)
{
    int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0}, co[IT_MAX_DIMS];
    long n = 0;
    if (!ref_domain(&f->spec.window, f->spec.shape, big->start, big->stop, lo, hi))
        return 0;
    /* a margin beyond the reference domain: those must not count */
    for (int c = 0; c < f->spec.window.ncoords; c++) {
        lo[c] -= 2;
        hi[c] += 2;
    }
    memcpy(co, lo, sizeof co);
    do {
        if (ft_meets(f, co, big) && !ft_meets_any(f, co, old, nold))
            n++;
    } while (tu_next_index(f->spec.window.ncoords, co, lo, hi));
    return n;
}

/* The values ft_compute would produce for one window, as a contiguous view
 * with `add` added to every element. */
static inline void *ft_window_values(ft *f, const int64_t *coords, double add, it_view *v)
{
    const it_window *w = &f->spec.window;
    int nd = f->spec.ndim;
    size_t es = tu_elsize(f->spec.dtype);
    int64_t n = 1, lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS], k[IT_MAX_DIMS] = {0};
    for (int d = 0; d < nd; d++) {
        n *= w->size[d];
        hi[d] = w->size[d] - 1;
    }
    char *mem = malloc((size_t)n * es);
    assert_non_null(mem);
    memset(v, 0, sizeof *v);
    v->data = mem;
    v->dtype = f->spec.dtype;
    v->ndim = nd;
    v->device_type = TU_DEV_TYPE;
    v->device_id = TU_DEV_ID;
    for (int d = 0; d < nd; d++)
        v->shape[d] = w->size[d];
    tu_contig_strides(nd, v->shape, es, v->strides);
    double S = ft_args_ref(f, coords);
    int64_t j = 0;
    do {
        el_store(f->spec.dtype, mem + j * (int64_t)es, ft_base(f, coords, k) + S + add);
        j++;
    } while (tu_next_index(nd, k, lo, hi));
#ifdef TU_DEVICE
    tu_scramble(mem, (size_t)n * es);
#endif
    return mem;
}

#endif
