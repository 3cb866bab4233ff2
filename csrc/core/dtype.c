/*
 * dtype.c - element types and the strided N-d kernels.
 *
 * Every kernel first "coalesces" its region: dims of extent 1 are dropped and
 * neighbouring dims whose strides chain in both operands (outer stride ==
 * inner extent * inner stride) are merged.  A tile row copied into a
 * contiguous output thus becomes one long inner loop, and a fully contiguous
 * region becomes one memcpy.  The outer dims are walked with an odometer;
 * only the innermost loop is specialised per dtype and operation, with a
 * contiguous fast path the compiler can vectorise.
 *
 * float16 and bfloat16 are combined in float32 and rounded back to nearest
 * even, which is what torch does on CPU for elementwise ops on those types.
 */
#include "it_dtype.h"
#include "it_geom.h" /* IT_MAX_DIMS */

#include <math.h>
#include <string.h>

static const size_t dtype_sizes[IT_DTYPE_COUNT] = {
    [IT_BOOL] = 1, [IT_U8] = 1, [IT_I8] = 1, [IT_I16] = 2, [IT_I32] = 4,
    [IT_I64] = 8, [IT_U16] = 2, [IT_U32] = 4, [IT_U64] = 8, [IT_F16] = 2,
    [IT_BF16] = 2, [IT_F32] = 4, [IT_F64] = 8, [IT_C64] = 8, [IT_C128] = 16,
};

static const char *const dtype_names[IT_DTYPE_COUNT] = {
    [IT_BOOL] = "bool", [IT_U8] = "uint8", [IT_I8] = "int8", [IT_I16] = "int16",
    [IT_I32] = "int32", [IT_I64] = "int64", [IT_U16] = "uint16", [IT_U32] = "uint32",
    [IT_U64] = "uint64", [IT_F16] = "float16", [IT_BF16] = "bfloat16",
    [IT_F32] = "float32", [IT_F64] = "float64", [IT_C64] = "complex64",
    [IT_C128] = "complex128",
};

size_t it_dtype_size(it_dtype dt)
{
    return ((unsigned)dt < IT_DTYPE_COUNT) ? dtype_sizes[dt] : 0;
}

const char *it_dtype_name(it_dtype dt)
{
    return ((unsigned)dt < IT_DTYPE_COUNT) ? dtype_names[dt] : "invalid";
}

int it_dtype_supports(it_dtype dt, it_combine op)
{
    if ((unsigned)dt >= IT_DTYPE_COUNT)
        return 0;
    switch (op) {
    case IT_COMBINE_SUM:
    case IT_COMBINE_COPY:
        return 1;
    case IT_COMBINE_MAX:
    case IT_COMBINE_MIN:
        return dt != IT_C64 && dt != IT_C128;
    default:
        return 0;
    }
}

/* ---- float16 / bfloat16 ------------------------------------------------ */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float it_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t it_float_to_half(float f)
{
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, or nan (kept quiet) */
        return sign | 0x7c00u | (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0u);
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return sign | 0x7c00u;
    if (ax < 0x38800000u) { /* below the smallest normal: subnormal or zero */
        float m = nearbyintf(u2f(ax) * 16777216.0f); /* units of 2^-24, ties to even */
        return sign | (uint16_t)m;
    }
    uint32_t mant = ax & 0x7fffffu;
    uint32_t h = (((ax >> 23) - 112u) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is still the right encoding */
    return sign | (uint16_t)h;
}

float it_bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t it_float_to_bf16(float f)
{
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- region walking ---------------------------------------------------- */

typedef struct region {
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    int64_t ds[IT_MAX_DIMS];
    int64_t ss[IT_MAX_DIMS];
} region;

/* Drop unit dims and merge chained dims.  Returns 0 if the region is empty. */
static int coalesce(region *r, int ndim, const int64_t *shape,
                    const int64_t *ds, const int64_t *ss)
{
    r->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return 0;
        if (shape[d] == 1)
            continue;
        int k = r->ndim;
        if (k > 0 && r->ds[k - 1] == shape[d] * ds[d] && r->ss[k - 1] == shape[d] * ss[d]) {
            r->shape[k - 1] *= shape[d];
            r->ds[k - 1] = ds[d];
            r->ss[k - 1] = ss[d];
            continue;
        }
        r->shape[k] = shape[d];
        r->ds[k] = ds[d];
        r->ss[k] = ss[d];
        r->ndim++;
    }
    if (r->ndim == 0) { /* a single element */
        r->ndim = 1;
        r->shape[0] = 1;
        r->ds[0] = 0;
        r->ss[0] = 0;
    }
    return 1;
}

typedef void (*row_fn)(char *d, int64_t ds, const char *s, int64_t ss, int64_t n, const void *arg);

/* Call fn for every innermost row of the region. */
static void walk(const region *r, char *dst, const char *src, row_fn fn, const void *arg)
{
    int outer = r->ndim - 1;
    int64_t n = r->shape[outer], ds = r->ds[outer], ss = r->ss[outer];
    if (outer == 0) {
        fn(dst, ds, src, ss, n, arg);
        return;
    }
    int64_t idx[IT_MAX_DIMS];
    for (int d = 0; d < outer; d++)
        idx[d] = 0;
    for (;;) {
        fn(dst, ds, src, ss, n, arg);
        int d = outer - 1;
        for (; d >= 0; d--) {
            dst += r->ds[d];
            src += r->ss[d];
            if (++idx[d] < r->shape[d])
                break;
            dst -= r->ds[d] * r->shape[d];
            src -= r->ss[d] * r->shape[d];
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

/* ---- copy and fill ------------------------------------------------------ */

static void copy_row(char *d, int64_t ds, const char *s, int64_t ss, int64_t n, const void *arg)
{
    size_t es = *(const size_t *)arg;
    if (ds == (int64_t)es && ss == (int64_t)es) {
        memmove(d, s, (size_t)n * es);
        return;
    }
    switch (es) {
#define COPY_CASE(T)                                                          \
    case sizeof(T):                                                           \
        for (int64_t i = 0; i < n; i++, d += ds, s += ss) {                   \
            T v;                                                              \
            memcpy(&v, s, sizeof v);                                          \
            memcpy(d, &v, sizeof v);                                          \
        }                                                                     \
        return;
        COPY_CASE(uint8_t)
        COPY_CASE(uint16_t)
        COPY_CASE(uint32_t)
        COPY_CASE(uint64_t)
#undef COPY_CASE
    default:
        for (int64_t i = 0; i < n; i++, d += ds, s += ss)
            memcpy(d, s, es);
    }
}

void it_copy_nd(size_t elsize, int ndim, const int64_t *shape,
                void *dst, const int64_t *dst_strides,
                const void *src, const int64_t *src_strides)
{
    region r;
    if (ndim <= IT_MAX_DIMS && coalesce(&r, ndim, shape, dst_strides, src_strides))
        walk(&r, dst, src, copy_row, &elsize);
}

static void fill_row(char *d, int64_t ds, const char *s, int64_t ss, int64_t n, const void *arg)
{
    (void)ss;
    size_t es = *(const size_t *)arg;
    int uniform = 1; /* all bytes of the value equal: memset works */
    for (size_t b = 1; b < es; b++)
        uniform &= s[b] == s[0];
    if (ds == (int64_t)es && uniform) {
        memset(d, s[0], (size_t)n * es);
        return;
    }
    for (int64_t i = 0; i < n; i++, d += ds)
        memcpy(d, s, es);
}

void it_fill_nd(size_t elsize, int ndim, const int64_t *shape,
                void *dst, const int64_t *dst_strides, const void *value)
{
    int64_t zero[IT_MAX_DIMS] = {0};
    region r;
    if (ndim > IT_MAX_DIMS || !coalesce(&r, ndim, shape, dst_strides, zero))
        return;
    walk(&r, dst, value, fill_row, &elsize);
}

int64_t it_contiguous_strides(size_t elsize, int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = (int64_t)elsize;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) { /* holds nothing: any strides do, whatever the other extents */
            for (int k = 0; k < ndim; k++)
                strides[k] = (int64_t)elsize;
            return 0;
        }
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        if (shape[d] > 0 && s > INT64_MAX / shape[d])
            return -1;
        s *= shape[d];
    }
    return s;
}

/* ---- combine kernels ---------------------------------------------------- */

/* The row kernels are IT_MULTIVERSION (engine.h): baseline and AVX2. */

/* One row of dst = OP(dst, src) for element type T.  The contiguous branch
 * is a plain indexed loop the compiler vectorises. */
#define DEFINE_ROW(NAME, T, EXPR)                                             \
    IT_MULTIVERSION static void NAME(char *d, int64_t ds, const char *s, int64_t ss, \
                     int64_t n, const void *arg)                              \
    {                                                                         \
        (void)arg;                                                            \
        if (ds == (int64_t)sizeof(T) && ss == (int64_t)sizeof(T)) {           \
            T *restrict dp = (T *)d;                                          \
            const T *restrict sp = (const T *)s;                              \
            for (int64_t i = 0; i < n; i++) {                                 \
                T a = dp[i], b = sp[i];                                       \
                dp[i] = (EXPR);                                               \
            }                                                                 \
            return;                                                           \
        }                                                                     \
        for (int64_t i = 0; i < n; i++, d += ds, s += ss) {                   \
            T a, b;                                                           \
            memcpy(&a, d, sizeof a);                                          \
            memcpy(&b, s, sizeof b);                                          \
            a = (EXPR);                                                       \
            memcpy(d, &a, sizeof a);                                          \
        }                                                                     \
    }

#define WRAP_ADD(T, U) ((T)((U)a + (U)b))
#define FMAX(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
#define FMIN(a, b) (((a) < (b) || (a) != (a)) ? (a) : (b))
#define IMAX(a, b) ((a) > (b) ? (a) : (b))
#define IMIN(a, b) ((a) < (b) ? (a) : (b))

DEFINE_ROW(sum_bool, uint8_t, (uint8_t)((a | b) != 0))
DEFINE_ROW(max_bool, uint8_t, (uint8_t)((a | b) != 0))
DEFINE_ROW(min_bool, uint8_t, (uint8_t)((a & b) != 0))

#define INT_ROWS(SUF, T, U)                                                   \
    DEFINE_ROW(sum_##SUF, T, WRAP_ADD(T, U))                                  \
    DEFINE_ROW(max_##SUF, T, IMAX(a, b))                                      \
    DEFINE_ROW(min_##SUF, T, IMIN(a, b))
INT_ROWS(u8, uint8_t, uint8_t)
INT_ROWS(i8, int8_t, uint8_t)
INT_ROWS(i16, int16_t, uint16_t)
INT_ROWS(i32, int32_t, uint32_t)
INT_ROWS(i64, int64_t, uint64_t)
INT_ROWS(u16, uint16_t, uint16_t)
INT_ROWS(u32, uint32_t, uint32_t)
INT_ROWS(u64, uint64_t, uint64_t)

DEFINE_ROW(sum_f32, float, a + b)
DEFINE_ROW(max_f32, float, FMAX(a, b))
DEFINE_ROW(min_f32, float, FMIN(a, b))
DEFINE_ROW(sum_f64, double, a + b)
DEFINE_ROW(max_f64, double, FMAX(a, b))
DEFINE_ROW(min_f64, double, FMIN(a, b))

#define HALF_ROWS(SUF, TO, FROM)                                              \
    static inline uint16_t sum1_##SUF(uint16_t a, uint16_t b)                 \
    { return FROM(TO(a) + TO(b)); }                                           \
    static inline uint16_t max1_##SUF(uint16_t a, uint16_t b)                 \
    { float x = TO(a), y = TO(b); return (x > y || x != x) ? a : b; }         \
    static inline uint16_t min1_##SUF(uint16_t a, uint16_t b)                 \
    { float x = TO(a), y = TO(b); return (x < y || x != x) ? a : b; }         \
    DEFINE_ROW(sum_##SUF, uint16_t, sum1_##SUF(a, b))                         \
    DEFINE_ROW(max_##SUF, uint16_t, max1_##SUF(a, b))                         \
    DEFINE_ROW(min_##SUF, uint16_t, min1_##SUF(a, b))
HALF_ROWS(f16, it_half_to_float, it_float_to_half)
HALF_ROWS(bf16, it_bf16_to_float, it_float_to_bf16)

/* float16 sums on x86-64 CPUs with F16C: the conversions in hardware, eight
 * at a time (about 20x the portable row).  Both round to nearest even, so
 * the results are the same bits, NaN payloads aside. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <cpuid.h>
#include <stdatomic.h>
#define IT_HAVE_F16C_ROW 1
__attribute__((target("avx,f16c"))) static void sum_f16_f16c(char *d, int64_t ds, const char *s,
                                                            int64_t ss, int64_t n, const void *arg)
{
    if (ds != 2 || ss != 2) {
        sum_f16(d, ds, s, ss, n, arg);
        return;
    }
    uint16_t *dp = (uint16_t *)d;
    const uint16_t *sp = (const uint16_t *)s;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sp + i)));
        __m128i r = _mm256_cvtps_ph(_mm256_add_ps(a, b), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dp + i), r);
    }
    if (i < n)
        sum_f16(d + 2 * i, 2, s + 2 * i, 2, n - i, arg);
}

static row_fn sum_f16_row(void)
{
    static atomic_int have = -1; /* -1: not asked yet */
    int h = atomic_load_explicit(&have, memory_order_relaxed);
    if (h < 0) {
        /* F16C from CPUID (clang's __builtin_cpu_supports has no "f16c") */
        unsigned a, b, c, d;
        __builtin_cpu_init();
        h = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx");
        atomic_store_explicit(&have, h, memory_order_relaxed);
    }
    return h ? sum_f16_f16c : sum_f16;
}
#endif

/* Complex: the real and imaginary parts are added independently. */
typedef struct { float re, im; } c64;
typedef struct { double re, im; } c128;
DEFINE_ROW(sum_c64, c64, ((c64){a.re + b.re, a.im + b.im}))
DEFINE_ROW(sum_c128, c128, ((c128){a.re + b.re, a.im + b.im}))

static row_fn row_for(it_combine op, it_dtype dt)
{
#define PICK(SUF)                                                             \
    return op == IT_COMBINE_SUM ? sum_##SUF : op == IT_COMBINE_MAX ? max_##SUF \
                                                                   : min_##SUF
    switch (dt) {
    case IT_BOOL: PICK(bool);
    case IT_U8: PICK(u8);
    case IT_I8: PICK(i8);
    case IT_I16: PICK(i16);
    case IT_I32: PICK(i32);
    case IT_I64: PICK(i64);
    case IT_U16: PICK(u16);
    case IT_U32: PICK(u32);
    case IT_U64: PICK(u64);
    case IT_F16:
#ifdef IT_HAVE_F16C_ROW
        if (op == IT_COMBINE_SUM)
            return sum_f16_row();
#endif
        PICK(f16);
    case IT_BF16: PICK(bf16);
    case IT_F32: PICK(f32);
    case IT_F64: PICK(f64);
    case IT_C64: return op == IT_COMBINE_SUM ? sum_c64 : NULL;
    case IT_C128: return op == IT_COMBINE_SUM ? sum_c128 : NULL;
    default: return NULL;
    }
#undef PICK
}

int it_combine_nd(it_combine op, it_dtype dt, int ndim, const int64_t *shape,
                  void *dst, const int64_t *dst_strides,
                  const void *src, const int64_t *src_strides)
{
    if (!it_dtype_supports(dt, op))
        return it_error_set(IT_EDTYPE, "combining %s values with this blend is not supported",
                            it_dtype_name(dt));
    if (ndim > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "too many dims (%d)", ndim);
    if (op == IT_COMBINE_COPY) {
        it_copy_nd(it_dtype_size(dt), ndim, shape, dst, dst_strides, src, src_strides);
        return IT_OK;
    }
    region r;
    if (coalesce(&r, ndim, shape, dst_strides, src_strides))
        walk(&r, dst, src, row_for(op, dt), NULL);
    return IT_OK;
}
