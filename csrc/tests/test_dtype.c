/*
 * test_dtype.c - element types and the strided N-d kernels (it_dtype.h).
 *
 * The kernels are checked element by element against references written
 * here: integer wrap-around, bool or/and, float16/bfloat16 added in float32
 * and rounded to nearest even, torch's NaN-propagating maximum/minimum.
 * The strided tests lay both operands out at random (permuted dims, gaps,
 * negative strides, zero source strides) inside guarded allocations and
 * check that no byte outside the destination region changes.
 */
#include "it_test_util.h"

#include <float.h>

static const it_combine all_ops[4] = {IT_COMBINE_SUM, IT_COMBINE_MAX, IT_COMBINE_MIN,
                                      IT_COMBINE_COPY};

static int is_complex(it_dtype dt)
{
    return dt == IT_C64 || dt == IT_C128;
}

static uint16_t u16_of(float f, int bf)
{
    return bf ? ref_f2bf(f) : ref_f2h(f);
}

/* ------------------------------------------------------------------ */

static void test_sizes_and_names(void **state)
{
    (void)state;
    static const size_t expect[IT_DTYPE_COUNT] = {1, 1, 1, 2, 4, 8, 2, 4, 8, 2, 2, 4, 8, 8, 16};
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        assert_int_equal(it_dtype_size((it_dtype)dt), expect[dt]);
        const char *n = it_dtype_name((it_dtype)dt);
        assert_non_null(n);
        assert_true(strlen(n) > 0);
        assert_string_not_equal(n, "invalid");
        for (int o = 0; o < dt; o++)
            assert_string_not_equal(n, it_dtype_name((it_dtype)o));
    }
    assert_string_equal(it_dtype_name(IT_F32), "float32");
    assert_int_equal(it_dtype_size(IT_DTYPE_COUNT), 0);
    assert_int_equal(it_dtype_size((it_dtype)-1), 0);
    assert_int_equal(it_dtype_size((it_dtype)1000), 0);
    assert_string_equal(it_dtype_name(IT_DTYPE_COUNT), "invalid");
    assert_string_equal(it_dtype_name((it_dtype)-1), "invalid");
}

static void test_supports(void **state)
{
    (void)state;
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        assert_int_equal(it_dtype_supports((it_dtype)dt, IT_COMBINE_SUM), 1);
        assert_int_equal(it_dtype_supports((it_dtype)dt, IT_COMBINE_COPY), 1);
        int mm = !is_complex((it_dtype)dt);
        assert_int_equal(it_dtype_supports((it_dtype)dt, IT_COMBINE_MAX), mm);
        assert_int_equal(it_dtype_supports((it_dtype)dt, IT_COMBINE_MIN), mm);
        assert_int_equal(it_dtype_supports((it_dtype)dt, IT_COMBINE_CUSTOM), 0);
    }
    assert_int_equal(it_dtype_supports(IT_DTYPE_COUNT, IT_COMBINE_SUM), 0);
    assert_int_equal(it_dtype_supports((it_dtype)-1, IT_COMBINE_COPY), 0);
}

/* ------------------------------------------------------------------ */
/* conversions                                                          */

/* The test's own reference agrees with the compiler's _Float16 / known
 * values, so the comparisons below test the core and not the reference. */
static void test_reference_self_check(void **state)
{
    (void)state;
    assert_int_equal(ref_f2h(1.0f), 0x3c00);
    assert_int_equal(ref_f2h(65504.0f), 0x7bff);
    assert_int_equal(ref_f2h(65520.0f), 0x7c00);
    assert_int_equal(ref_f2h(ldexpf(1.0f, -25)), 0x0000);
    assert_int_equal(ref_f2h(ldexpf(3.0f, -25)), 0x0002);
    assert_int_equal(ref_f2bf(1.0f), 0x3f80);
    assert_true(ref_h2f(0x3555) == 0.333251953125f);
#if defined(__FLT16_MAX__)
    rng_t r = {7};
    for (long i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)rng_next(&r);
        if (i < 65536 * 4)
            u = (uint32_t)i * 16411u; /* spread over the whole range too */
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f))
            continue;
        _Float16 h = (_Float16)f;
        uint16_t hb;
        memcpy(&hb, &h, 2);
        if (hb != ref_f2h(f))
            fail_msg("reference f2h(%a) = %04x but _Float16 gives %04x", (double)f, ref_f2h(f), hb);
    }
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t hb = (uint16_t)h;
        _Float16 x;
        memcpy(&x, &hb, 2);
        float a = (float)x, b = ref_h2f(hb);
        if (!(a == b || (isnan(a) && isnan(b))) || signbit(a) != signbit(b))
            fail_msg("reference h2f(%04x) = %a, _Float16 gives %a", h, (double)b, (double)a);
    }
#endif
}

static void test_half_to_float_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = it_half_to_float((uint16_t)h), want = ref_h2f((uint16_t)h);
        if (ref_half_isnan((uint16_t)h)) {
            if (!isnan(got))
                fail_msg("it_half_to_float(0x%04x) = %a, expected NaN", h, (double)got);
            continue;
        }
        uint32_t gb, wb;
        memcpy(&gb, &got, 4);
        memcpy(&wb, &want, 4);
        if (gb != wb)
            fail_msg("it_half_to_float(0x%04x) = %a, expected %a", h, (double)got, (double)want);
    }
}

static void test_bf16_to_float_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = it_bf16_to_float((uint16_t)h);
        if (ref_bf16_isnan((uint16_t)h)) {
            if (!isnan(got))
                fail_msg("it_bf16_to_float(0x%04x) = %a, expected NaN", h, (double)got);
            continue;
        }
        uint32_t gb;
        memcpy(&gb, &got, 4);
        if (gb != h << 16)
            fail_msg("it_bf16_to_float(0x%04x) has bits %08x, expected %08x", h, gb, h << 16);
    }
}

static void check_f2h(float f)
{
    uint16_t got = it_float_to_half(f), want = ref_f2h(f);
    if (isnan(f)) {
        if (!ref_half_isnan(got))
            fail_msg("it_float_to_half(NaN %a) = 0x%04x, not a NaN", (double)f, got);
        return;
    }
    if (got != want)
        fail_msg("it_float_to_half(%a) = 0x%04x, expected 0x%04x", (double)f, got, want);
}

static void check_f2bf(float f)
{
    uint16_t got = it_float_to_bf16(f), want = ref_f2bf(f);
    if (isnan(f)) {
        if (!ref_bf16_isnan(got))
            fail_msg("it_float_to_bf16(NaN %a) = 0x%04x, not a NaN", (double)f, got);
        return;
    }
    if (got != want)
        fail_msg("it_float_to_bf16(%a) = 0x%04x, expected 0x%04x", (double)f, got, want);
}

static float f_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_float_to_half_cases(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},
        {65519.99f, 0x7bff},          /* below the midpoint to 65536 */
        {65520.0f, 0x7c00},           /* the midpoint: even is 65536 = inf */
        {-65520.0f, 0xfc00},
        {1e10f, 0x7c00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001},           /* smallest subnormal */
        {0x1p-25f, 0x0000},           /* tie between 0 and 2^-24: even is 0 */
        {0x1.000002p-25f, 0x0001},    /* just above the tie */
        {0x3p-25f, 0x0002},           /* 1.5 * 2^-24: tie, even is 2 */
        {0x5p-25f, 0x0002},           /* 2.5 * 2^-24: tie, even is 2 */
        {0x1p-14f, 0x0400},           /* smallest normal */
        {0x1p-14f - 0x1p-25f, 0x0400},/* 1023.5 * 2^-24: tie, even is 1024 */
        {0x1.002p0f, 0x3c00},         /* 1 + 2^-11: tie, even is 1 */
        {0x1.006p0f, 0x3c02},         /* 1 + 3*2^-11: tie, even is 1 + 2^-9 */
        {0x1.002002p0f, 0x3c01},      /* just above the tie */
        {0x1.001ffep0f, 0x3c00},      /* just below the tie */
        {2049.0f, 0x6800},            /* tie between 2048 and 2050 */
        {2051.0f, 0x6802},            /* tie between 2050 and 2052 */
        {1e-30f, 0x0000},
        {-1e-30f, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = it_float_to_half(cases[i].f);
        if (got != cases[i].h)
            fail_msg("it_float_to_half(%a) = 0x%04x, expected 0x%04x", (double)cases[i].f, got,
                     cases[i].h);
        check_f2h(cases[i].f);
    }
    /* NaNs stay NaN, including those whose payload lies only in the low
     * mantissa bits (a naive shift turns them into infinity). */
    uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f801fffu,
                       0x7fbfffffu, 0x7f802000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = it_float_to_half(f_of_bits(nans[i]));
        if (!ref_half_isnan(h))
            fail_msg("it_float_to_half(NaN bits %08x) = 0x%04x, not a NaN", nans[i], h);
        assert_int_equal(h & 0x8000, (nans[i] >> 16) & 0x8000);
    }
}

static void test_float_to_half_sweep(void **state)
{
    (void)state;
    /* every half, and the floats around every midpoint between neighbours */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        for (int s = 0; s < 2; s++) {
            uint16_t hb = (uint16_t)(h | (s ? 0x8000u : 0));
            float f = ref_h2f(hb);
            assert_int_equal(it_float_to_half(f), hb);
            float g = ref_h2f((uint16_t)(hb + 1));
            if ((hb & 0x7fff) == 0x7bff)
                g = s ? -65536.0f : 65536.0f;
            float mid = (float)(((double)f + (double)g) / 2); /* exact in float */
            check_f2h(mid);
            check_f2h(nextafterf(mid, 0.0f));
            check_f2h(nextafterf(mid, s ? -INFINITY : INFINITY));
            check_f2h(nextafterf(f, 0.0f));
        }
    }
    /* a sample of all floats */
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099)
        check_f2h(f_of_bits((uint32_t)u));
}

static void test_float_to_bf16_cases(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3f80},
        {0x1.01p0f, 0x3f80},     /* 1 + 2^-8: tie, even is 1 */
        {0x1.03p0f, 0x3f82},     /* 1 + 3*2^-8: tie, even is 1 + 2^-6 */
        {0x1.0102p0f, 0x3f81},   /* above the tie */
        {257.0f, 0x4380},        /* tie between 256 and 258 */
        {259.0f, 0x4382},        /* tie between 258 and 260 */
        {FLT_MAX, 0x7f80},       /* rounds up to infinity */
        {-FLT_MAX, 0xff80},
        {0x1.fep127f, 0x7f7f},   /* the largest bfloat16 */
        {INFINITY, 0x7f80},
        {-INFINITY, 0xff80},
        {0x1p-133f, 0x0001},     /* smallest bfloat16 subnormal */
        {0x1p-134f, 0x0000},     /* tie: even is 0 */
        {0x3p-134f, 0x0002},     /* tie: even is 2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = it_float_to_bf16(cases[i].f);
        if (got != cases[i].h)
            fail_msg("it_float_to_bf16(%a) = 0x%04x, expected 0x%04x", (double)cases[i].f, got,
                     cases[i].h);
    }
    uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f807fffu,
                       0x7fffffffu, 0x7f8000ffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = it_float_to_bf16(f_of_bits(nans[i]));
        if (!ref_bf16_isnan(h))
            fail_msg("it_float_to_bf16(NaN bits %08x) = 0x%04x, not a NaN", nans[i], h);
        assert_int_equal(h & 0x8000, (nans[i] >> 16) & 0x8000);
    }
}

static void test_float_to_bf16_sweep(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        if (ref_bf16_isnan((uint16_t)h))
            continue;
        uint32_t u = h << 16;
        check_f2bf(f_of_bits(u));
        check_f2bf(f_of_bits(u + 0x7fffu));
        check_f2bf(f_of_bits(u + 0x8000u));
        check_f2bf(f_of_bits(u + 0x8001u));
        check_f2bf(f_of_bits(u - 1u));
    }
    for (uint64_t u = 0; u < 0x100000000ull; u += 7919)
        check_f2bf(f_of_bits((uint32_t)u));
}

/* ------------------------------------------------------------------ */
/* element reference for the kernels                                    */

static uint64_t load_u(const unsigned char *p, size_t es)
{
    uint64_t v = 0;
    memcpy(&v, p, es); /* little-endian host */
    return v;
}

static int64_t load_s(const unsigned char *p, size_t es)
{
    uint64_t v = load_u(p, es);
    int sh = (int)(64 - 8 * es);
    return (int64_t)(v << sh) >> sh;
}

static int is_signed_int(it_dtype dt)
{
    return dt == IT_I8 || dt == IT_I16 || dt == IT_I32 || dt == IT_I64;
}

static int is_unsigned_int(it_dtype dt)
{
    return dt == IT_U8 || dt == IT_U16 || dt == IT_U32 || dt == IT_U64;
}

/* Check a floating result r (as doubles with raw bits) of op(a, b). */
static int check_float_rule(it_combine op, double a, double b, double r, uint64_t ab, uint64_t bb,
                            uint64_t rb, double sum, uint64_t sumbits)
{
    if (op == IT_COMBINE_SUM) {
        if (isnan(sum))
            return isnan(r);
        return rb == sumbits;
    }
    if (isnan(a) || isnan(b))
        return isnan(r);
    if (a == b)
        return rb == ab || rb == bb;
    if (op == IT_COMBINE_MAX)
        return rb == (a > b ? ab : bb);
    return rb == (a < b ? ab : bb);
}

static int check_elem(it_combine op, it_dtype dt, const unsigned char *a, const unsigned char *b,
                      const unsigned char *r)
{
    size_t es = tu_elsize(dt);
    if (op == IT_COMBINE_COPY)
        return memcmp(r, b, es) == 0;
    if (dt == IT_BOOL) {
        int x = a[0] != 0, y = b[0] != 0;
        int want = op == IT_COMBINE_MIN ? (x & y) : (x | y);
        return r[0] == want;
    }
    if (is_signed_int(dt) || is_unsigned_int(dt)) {
        uint64_t want;
        if (op == IT_COMBINE_SUM) {
            want = load_u(a, es) + load_u(b, es);
        } else if (is_signed_int(dt)) {
            int64_t x = load_s(a, es), y = load_s(b, es);
            want = (uint64_t)(op == IT_COMBINE_MAX ? (x > y ? x : y) : (x < y ? x : y));
        } else {
            uint64_t x = load_u(a, es), y = load_u(b, es);
            want = op == IT_COMBINE_MAX ? (x > y ? x : y) : (x < y ? x : y);
        }
        return memcmp(r, &want, es) == 0;
    }
    if (dt == IT_F32) {
        float x, y, z;
        uint32_t xb, yb, zb;
        memcpy(&x, a, 4); memcpy(&y, b, 4); memcpy(&z, r, 4);
        memcpy(&xb, a, 4); memcpy(&yb, b, 4); memcpy(&zb, r, 4);
        volatile float s = x + y;
        float sv = s;
        uint32_t sb;
        memcpy(&sb, &sv, 4);
        return check_float_rule(op, x, y, z, xb, yb, zb, sv, sb);
    }
    if (dt == IT_F64) {
        double x, y, z;
        uint64_t xb, yb, zb;
        memcpy(&x, a, 8); memcpy(&y, b, 8); memcpy(&z, r, 8);
        memcpy(&xb, a, 8); memcpy(&yb, b, 8); memcpy(&zb, r, 8);
        volatile double s = x + y;
        double sv = s;
        uint64_t sb;
        memcpy(&sb, &sv, 8);
        return check_float_rule(op, x, y, z, xb, yb, zb, sv, sb);
    }
    if (dt == IT_F16 || dt == IT_BF16) {
        int bf = dt == IT_BF16;
        uint16_t xb, yb, zb;
        memcpy(&xb, a, 2); memcpy(&yb, b, 2); memcpy(&zb, r, 2);
        float x = bf ? ref_bf2f(xb) : ref_h2f(xb);
        float y = bf ? ref_bf2f(yb) : ref_h2f(yb);
        float z = bf ? ref_bf2f(zb) : ref_h2f(zb);
        volatile float s = x + y; /* added in float32 ... */
        uint16_t sb = u16_of(s, bf); /* ... and rounded to nearest even */
        float sv = bf ? ref_bf2f(sb) : ref_h2f(sb);
        return check_float_rule(op, x, y, z, xb, yb, zb, sv, sb);
    }
    if (dt == IT_C64) {
        for (int k = 0; k < 2; k++) {
            float x, y, z;
            memcpy(&x, a + 4 * k, 4); memcpy(&y, b + 4 * k, 4); memcpy(&z, r + 4 * k, 4);
            volatile float s = x + y;
            float sv = s;
            if (isnan(sv) ? !isnan(z) : memcmp(&sv, &z, 4) != 0)
                return 0;
        }
        return 1;
    }
    if (dt == IT_C128) {
        for (int k = 0; k < 2; k++) {
            double x, y, z;
            memcpy(&x, a + 8 * k, 8); memcpy(&y, b + 8 * k, 8); memcpy(&z, r + 8 * k, 8);
            volatile double s = x + y;
            double sv = s;
            if (isnan(sv) ? !isnan(z) : memcmp(&sv, &z, 8) != 0)
                return 0;
        }
        return 1;
    }
    fail_msg("check_elem: dtype %d", (int)dt);
    return 0;
}

static void gen_float(rng_t *r, float *f)
{
    static const float pal[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, INFINITY, -INFINITY, NAN,
                                FLT_MAX, -FLT_MAX, 1e-40f, -1e-40f, 3.0f, 2048.0f};
    int k = (int)rng_range(r, 0, 9);
    if (k < 3) {
        uint32_t u = (uint32_t)rng_next(r);
        memcpy(f, &u, 4);
    } else if (k < 7) {
        *f = (float)rng_range(r, -64, 64) / 8.0f;
    } else {
        *f = pal[rng_range(r, 0, (int64_t)(sizeof pal / sizeof pal[0]) - 1)];
    }
}

static void gen_double(rng_t *r, double *f)
{
    static const double pal[] = {0.0, -0.0, 1.0, -1.0, 0.5, INFINITY, -INFINITY, NAN,
                                 DBL_MAX, -DBL_MAX, 1e-310, 3.0, 1e300};
    int k = (int)rng_range(r, 0, 9);
    if (k < 3) {
        uint64_t u = rng_next(r);
        memcpy(f, &u, 8);
    } else if (k < 7) {
        *f = (double)rng_range(r, -64, 64) / 8.0;
    } else {
        *f = pal[rng_range(r, 0, (int64_t)(sizeof pal / sizeof pal[0]) - 1)];
    }
}

static void gen_elem(rng_t *r, it_dtype dt, unsigned char *p)
{
    size_t es = tu_elsize(dt);
    switch (dt) {
    case IT_BOOL:
        p[0] = (unsigned char)rng_range(r, 0, 1);
        return;
    case IT_F16:
    case IT_BF16: {
        uint16_t v;
        if (rng_chance(r, 2)) {
            v = (uint16_t)rng_next(r);
        } else {
            float f;
            gen_float(r, &f);
            v = u16_of(f, dt == IT_BF16);
        }
        memcpy(p, &v, 2);
        return;
    }
    case IT_F32: {
        float f;
        gen_float(r, &f);
        memcpy(p, &f, 4);
        return;
    }
    case IT_F64: {
        double d;
        gen_double(r, &d);
        memcpy(p, &d, 8);
        return;
    }
    case IT_C64: {
        float f[2];
        gen_float(r, &f[0]);
        gen_float(r, &f[1]);
        memcpy(p, f, 8);
        return;
    }
    case IT_C128: {
        double d[2];
        gen_double(r, &d[0]);
        gen_double(r, &d[1]);
        memcpy(p, d, 16);
        return;
    }
    default: {
        uint64_t v;
        int k = (int)rng_range(r, 0, 5);
        if (k == 0)
            v = 0;
        else if (k == 1)
            v = ~(uint64_t)0; /* -1 / max unsigned */
        else if (k == 2)
            v = (uint64_t)1 << (8 * es - 1); /* min signed / 2^(bits-1) */
        else if (k == 3)
            v = ((uint64_t)1 << (8 * es - 1)) - 1; /* max signed */
        else
            v = rng_next(r);
        memcpy(p, &v, es);
        return;
    }
    }
}

/* ------------------------------------------------------------------ */
/* guarded random regions                                               */

typedef struct region {
    unsigned char *mem;
    size_t memsize;
    unsigned char *base;
    int64_t strides[IT_MAX_DIMS];
} region;

static void make_region(rng_t *r, int nd, const int64_t *shape, size_t es, int allow_zero,
                        int allow_neg, region *R)
{
    int perm[IT_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        perm[d] = d;
    for (int d = nd - 1; d > 0; d--) {
        int j = (int)rng_range(r, 0, d);
        int t = perm[d];
        perm[d] = perm[j];
        perm[j] = t;
    }
    if (rng_chance(r, 3)) /* often plain row-major, so dims merge */
        for (int d = 0; d < nd; d++)
            perm[d] = nd - 1 - d;
    int64_t cur = (int64_t)es * (rng_chance(r, 5) ? 2 : 1);
    for (int k = 0; k < nd; k++) {
        int d = perm[k];
        R->strides[d] = cur;
        cur = cur * (shape[d] > 0 ? shape[d] : 1) + (rng_chance(r, 4) ? (int64_t)es * rng_range(r, 1, 3) : 0);
    }
    for (int d = 0; d < nd; d++) {
        if (allow_zero && rng_chance(r, 5))
            R->strides[d] = 0;
        if (allow_neg && rng_chance(r, 4))
            R->strides[d] = -R->strides[d];
    }
    int64_t minoff = 0, maxoff = 0, empty = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 0)
            empty = 1;
        int64_t span = (shape[d] - 1) * R->strides[d];
        if (span < 0)
            minoff += span;
        else
            maxoff += span;
    }
    if (empty)
        minoff = maxoff = 0;
    size_t guard = 2 * es;
    R->memsize = (size_t)(maxoff - minoff) + es + 2 * guard;
    R->mem = malloc(R->memsize);
    assert_non_null(R->mem);
    for (size_t i = 0; i < R->memsize; i++)
        R->mem[i] = (unsigned char)rng_next(r);
    R->base = R->mem + guard - minoff;
}

static void free_region(region *R)
{
    free(R->mem);
    R->mem = NULL;
}

/* Iterate the multi-index of a region; returns the element count. */
static int64_t numel_of(int nd, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < nd; d++)
        n *= shape[d];
    return n;
}

static int next_idx(int nd, int64_t *idx, const int64_t *shape)
{
    for (int d = nd - 1; d >= 0; d--) {
        if (++idx[d] < shape[d])
            return 1;
        idx[d] = 0;
    }
    return 0;
}

static int64_t off_of(int nd, const int64_t *idx, const int64_t *st)
{
    int64_t o = 0;
    for (int d = 0; d < nd; d++)
        o += idx[d] * st[d];
    return o;
}

/* One random combine case; returns 1 if it ran. */
static void run_combine_case(rng_t *r, it_combine op, it_dtype dt, int nd, const int64_t *shape)
{
    size_t es = tu_elsize(dt);
    region D, S;
    make_region(r, nd, shape, es, 0, 1, &D);
    make_region(r, nd, shape, es, 1, 1, &S);
    int64_t n = numel_of(nd, shape), idx[IT_MAX_DIMS] = {0};
    if (n > 0) {
        do {
            gen_elem(r, dt, D.base + off_of(nd, idx, D.strides));
            gen_elem(r, dt, S.base + off_of(nd, idx, S.strides));
        } while (next_idx(nd, idx, shape));
    }
    unsigned char *snap = malloc(D.memsize);
    unsigned char *mark = calloc(D.memsize, 1);
    assert_non_null(snap);
    assert_non_null(mark);
    memcpy(snap, D.mem, D.memsize);
    unsigned char *ssnap = malloc(S.memsize);
    assert_non_null(ssnap);
    memcpy(ssnap, S.mem, S.memsize);

    it_error_clear();
    int rc = it_combine_nd(op, dt, nd, shape, D.base, D.strides, S.base, S.strides);
    if (rc != IT_OK)
        fail_msg("it_combine_nd(op %d, %s, ndim %d) returned %d (%s)", (int)op, it_dtype_name(dt),
                 nd, rc, it_error_message());
    if (memcmp(ssnap, S.mem, S.memsize) != 0)
        fail_msg("it_combine_nd wrote to its source");
    memset(idx, 0, sizeof idx);
    if (n > 0) {
        do {
            int64_t od = off_of(nd, idx, D.strides), os = off_of(nd, idx, S.strides);
            size_t pos = (size_t)(D.base - D.mem + od);
            memset(mark + pos, 1, es);
            if (!check_elem(op, dt, snap + pos, S.base + os, D.base + od)) {
                char a[64] = "", b[64] = "", c[64] = "";
                for (size_t k = 0; k < es; k++) {
                    sprintf(a + 2 * k, "%02x", snap[pos + es - 1 - k]);
                    sprintf(b + 2 * k, "%02x", S.base[os + (int64_t)(es - 1 - k)]);
                    sprintf(c + 2 * k, "%02x", D.base[od + (int64_t)(es - 1 - k)]);
                }
                fail_msg("it_combine_nd(op %d, %s, ndim %d): dst %s (op)= src %s gave %s", (int)op,
                         it_dtype_name(dt), nd, a, b, c);
            }
        } while (next_idx(nd, idx, shape));
    }
    for (size_t i = 0; i < D.memsize; i++)
        if (!mark[i] && snap[i] != D.mem[i])
            fail_msg("it_combine_nd(op %d, %s, ndim %d) wrote byte %zu outside the region",
                     (int)op, it_dtype_name(dt), nd, i);
    free(snap);
    free(ssnap);
    free(mark);
    free_region(&D);
    free_region(&S);
}

static void random_shape(rng_t *r, int nd, int64_t *shape)
{
    for (int d = 0; d < nd; d++) {
        shape[d] = rng_range(r, 1, 4);
        if (rng_chance(r, 6))
            shape[d] = 1;
        if (rng_chance(r, 40))
            shape[d] = 0;
    }
    if (nd > 0 && rng_chance(r, 4))
        shape[nd - 1] = rng_range(r, 5, 70);
}

static void test_combine_random_strided(void **state)
{
    (void)state;
    rng_t r = {2024};
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        for (int o = 0; o < 4; o++) {
            it_combine op = all_ops[o];
            if (!it_dtype_supports((it_dtype)dt, op))
                continue;
            for (int it = 0; it < 250; it++) {
                int nd = (int)rng_range(&r, 0, 5);
                int64_t shape[IT_MAX_DIMS];
                random_shape(&r, nd, shape);
                run_combine_case(&r, op, (it_dtype)dt, nd, shape);
            }
        }
    }
}

static void test_combine_many_dims(void **state)
{
    (void)state;
    rng_t r = {77};
    int64_t shape[IT_MAX_DIMS];
    for (int d = 0; d < IT_MAX_DIMS; d++)
        shape[d] = 2;
    run_combine_case(&r, IT_COMBINE_SUM, IT_F32, IT_MAX_DIMS, shape);
    run_combine_case(&r, IT_COMBINE_MAX, IT_I16, IT_MAX_DIMS, shape);
    run_combine_case(&r, IT_COMBINE_COPY, IT_C128, IT_MAX_DIMS, shape);
    for (int d = 0; d < IT_MAX_DIMS; d++)
        shape[d] = (d % 5 == 0) ? 3 : 1;
    run_combine_case(&r, IT_COMBINE_MIN, IT_F16, IT_MAX_DIMS, shape);
    run_combine_case(&r, IT_COMBINE_SUM, IT_BF16, IT_MAX_DIMS, shape);
}

/* Contiguous operands merge into long loops: check a big one both ways. */
static void test_combine_large_contiguous(void **state)
{
    (void)state;
    int64_t shape[3] = {3, 7, 1000};
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        size_t es = tu_elsize((it_dtype)dt);
        int64_t st[3];
        int64_t total = it_contiguous_strides(es, 3, shape, st);
        assert_int_equal(total, 21000 * (int64_t)es);
        unsigned char *a = malloc((size_t)total), *b = malloc((size_t)total), *c = malloc((size_t)total);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        rng_t r = {(uint64_t)dt + 5};
        for (int64_t i = 0; i < 21000; i++) {
            gen_elem(&r, (it_dtype)dt, a + i * (int64_t)es);
            gen_elem(&r, (it_dtype)dt, b + i * (int64_t)es);
        }
        for (int o = 0; o < 4; o++) {
            if (!it_dtype_supports((it_dtype)dt, all_ops[o]))
                continue;
            memcpy(c, a, (size_t)total);
            EXPECT_OK(it_combine_nd(all_ops[o], (it_dtype)dt, 3, shape, c, st, b, st));
            for (int64_t i = 0; i < 21000; i++)
                if (!check_elem(all_ops[o], (it_dtype)dt, a + i * (int64_t)es, b + i * (int64_t)es,
                                c + i * (int64_t)es))
                    fail_msg("large contiguous %s op %d: element %lld wrong",
                             it_dtype_name((it_dtype)dt), o, (long long)i);
        }
        free(a);
        free(b);
        free(c);
    }
}

/* ------------------------------------------------------------------ */
/* hand-written kernel cases                                            */

#define COMBINE1(op, dt, dstp, srcp) \
    EXPECT_OK(it_combine_nd((op), (dt), 1, (int64_t[]){1}, (dstp), (int64_t[]){0}, (srcp), (int64_t[]){0}))

static void test_combine_int_wrap(void **state)
{
    (void)state;
    int64_t n4[1] = {4}, s1[1] = {1}, s2[1] = {2}, s4[1] = {4}, s8[1] = {8};
    {
        int8_t d[4] = {127, -128, 100, -1}, s[4] = {1, -1, 100, 1};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_I8, 1, n4, d, s1, s, s1));
        assert_int_equal(d[0], -128);
        assert_int_equal(d[1], 127);
        assert_int_equal(d[2], -56);
        assert_int_equal(d[3], 0);
    }
    {
        uint8_t d[4] = {255, 200, 0, 1}, s[4] = {1, 100, 0, 254};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_U8, 1, n4, d, s1, s, s1));
        assert_int_equal(d[0], 0);
        assert_int_equal(d[1], 44);
        assert_int_equal(d[2], 0);
        assert_int_equal(d[3], 255);
    }
    {
        int16_t d[4] = {32767, -32768, 1, -2}, s[4] = {1, -1, 2, 1};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_I16, 1, n4, d, s2, s, s2));
        assert_int_equal(d[0], -32768);
        assert_int_equal(d[1], 32767);
        assert_int_equal(d[2], 3);
        assert_int_equal(d[3], -1);
    }
    {
        uint16_t d[4] = {65535, 65535, 1, 0}, s[4] = {2, 65535, 2, 0};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_U16, 1, n4, d, s2, s, s2));
        assert_int_equal(d[0], 1);
        assert_int_equal(d[1], 65534);
        assert_int_equal(d[2], 3);
        assert_int_equal(d[3], 0);
    }
    {
        int32_t d[4] = {INT32_MAX, INT32_MIN, -5, 7}, s[4] = {1, -1, 5, -8};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_I32, 1, n4, d, s4, s, s4));
        assert_int_equal(d[0], INT32_MIN);
        assert_int_equal(d[1], INT32_MAX);
        assert_int_equal(d[2], 0);
        assert_int_equal(d[3], -1);
    }
    {
        uint32_t d[4] = {0xffffffffu, 0x80000000u, 3, 0}, s[4] = {1, 0x80000000u, 4, 0};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_U32, 1, n4, d, s4, s, s4));
        assert_int_equal(d[0], 0);
        assert_int_equal(d[1], 0);
        assert_int_equal(d[2], 7);
        assert_int_equal(d[3], 0);
    }
    {
        int64_t d[4] = {INT64_MAX, INT64_MIN, -3, 0}, s[4] = {1, -1, 3, INT64_MIN};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_I64, 1, n4, d, s8, s, s8));
        assert_true(d[0] == INT64_MIN);
        assert_true(d[1] == INT64_MAX);
        assert_true(d[2] == 0);
        assert_true(d[3] == INT64_MIN);
    }
    {
        uint64_t d[4] = {UINT64_MAX, 1ull << 63, 5, 0}, s[4] = {5, 1ull << 63, 6, 0};
        EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_U64, 1, n4, d, s8, s, s8));
        assert_true(d[0] == 4);
        assert_true(d[1] == 0);
        assert_true(d[2] == 11);
        assert_true(d[3] == 0);
    }
    /* MAX / MIN compare signed types as signed, unsigned as unsigned */
    {
        int8_t d[2] = {-1, -128}, s[2] = {1, 127};
        int64_t n2[1] = {2};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_I8, 1, n2, d, s1, s, s1));
        assert_int_equal(d[0], 1);
        assert_int_equal(d[1], 127);
        int8_t e[2] = {-1, -128};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_I8, 1, n2, e, s1, s, s1));
        assert_int_equal(e[0], -1);
        assert_int_equal(e[1], -128);
    }
    {
        uint8_t d[2] = {255, 0}, s[2] = {1, 128};
        int64_t n2[1] = {2};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_U8, 1, n2, d, s1, s, s1));
        assert_int_equal(d[0], 255);
        assert_int_equal(d[1], 128);
        uint8_t e[2] = {255, 0};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_U8, 1, n2, e, s1, s, s1));
        assert_int_equal(e[0], 1);
        assert_int_equal(e[1], 0);
    }
    {
        uint64_t d[2] = {1ull << 63, 1}, s[2] = {1, UINT64_MAX};
        int64_t n2[1] = {2};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_U64, 1, n2, d, s8, s, s8));
        assert_true(d[0] == 1ull << 63);
        assert_true(d[1] == UINT64_MAX);
        int64_t e[2] = {INT64_MIN, 0}, t[2] = {0, INT64_MAX};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_I64, 1, n2, e, s8, t, s8));
        assert_true(e[0] == INT64_MIN);
        assert_true(e[1] == 0);
        uint32_t u[2] = {0x80000000u, 7}, v[2] = {1, 0xffffffffu};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_U32, 1, n2, u, s4, v, s4));
        assert_int_equal(u[0], 1);
        assert_int_equal(u[1], 7);
        uint16_t w[2] = {65535, 0}, x[2] = {0, 65535};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_U16, 1, n2, w, s2, x, s2));
        assert_int_equal(w[0], 65535);
        assert_int_equal(w[1], 65535);
        int16_t y[2] = {-32768, 5}, z[2] = {32767, -5};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_I16, 1, n2, y, s2, z, s2));
        assert_int_equal(y[0], 32767);
        assert_int_equal(y[1], 5);
        int32_t p[2] = {INT32_MIN, -1}, q[2] = {0, INT32_MAX};
        EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_I32, 1, n2, p, s4, q, s4));
        assert_int_equal(p[0], INT32_MIN);
        assert_int_equal(p[1], -1);
    }
}

static void test_combine_bool(void **state)
{
    (void)state;
    int64_t n4[1] = {4}, s1[1] = {1};
    const unsigned char a[4] = {0, 0, 1, 1}, b[4] = {0, 1, 0, 1};
    unsigned char d[4];
    memcpy(d, a, 4);
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_BOOL, 1, n4, d, s1, b, s1));
    assert_memory_equal(d, ((unsigned char[]){0, 1, 1, 1}), 4);
    memcpy(d, a, 4);
    EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_BOOL, 1, n4, d, s1, b, s1));
    assert_memory_equal(d, ((unsigned char[]){0, 1, 1, 1}), 4);
    memcpy(d, a, 4);
    EXPECT_OK(it_combine_nd(IT_COMBINE_MIN, IT_BOOL, 1, n4, d, s1, b, s1));
    assert_memory_equal(d, ((unsigned char[]){0, 0, 0, 1}), 4);
    memcpy(d, a, 4);
    EXPECT_OK(it_combine_nd(IT_COMBINE_COPY, IT_BOOL, 1, n4, d, s1, b, s1));
    assert_memory_equal(d, b, 4);
    /* true + true stays true (1), never 2 */
    unsigned char t = 1, u = 1;
    COMBINE1(IT_COMBINE_SUM, IT_BOOL, &t, &u);
    assert_int_equal(t, 1);
}

static uint16_t h16(float f)
{
    return ref_f2h(f);
}

static void test_combine_half_rounding(void **state)
{
    (void)state;
    struct {
        uint16_t a, b, want;
    } hc[] = {
        {0x6800, 0x3c00, 0x6800}, /* 2048 + 1 = 2049: tie, even 2048 */
        {0x6801, 0x3c00, 0x6802}, /* 2050 + 1 = 2051: tie, even 2052 */
        {0x6800, 0x3c01, 0x6801}, /* 2048 + (1 + 2^-10): above the tie, 2050 */
        {0x7bff, 0x7bff, 0x7c00}, /* overflow to inf */
        {0x7bff, 0x4c00, 0x7c00}, /* 65504 + 16 = 65520: tie, even is inf */
        {0x7bff, 0x4800, 0x7bff}, /* 65504 + 8: below the tie */
        {0x0001, 0x0001, 0x0002}, /* subnormals */
        {0x03ff, 0x0001, 0x0400}, /* into the normals */
        {0x3c00, 0xbc00, 0x0000}, /* 1 + -1 = +0 */
        {0x8000, 0x8000, 0x8000}, /* -0 + -0 = -0 */
        {0x7c00, 0x3c00, 0x7c00},
    };
    for (size_t i = 0; i < sizeof hc / sizeof hc[0]; i++) {
        uint16_t d = hc[i].a, s = hc[i].b;
        COMBINE1(IT_COMBINE_SUM, IT_F16, &d, &s);
        if (d != hc[i].want)
            fail_msg("float16 %04x + %04x = %04x, expected %04x", hc[i].a, hc[i].b, d, hc[i].want);
    }
    {
        uint16_t d = 0x7c00, s = 0xfc00; /* inf + -inf */
        COMBINE1(IT_COMBINE_SUM, IT_F16, &d, &s);
        assert_true(ref_half_isnan(d));
        d = h16(1.0f);
        s = 0x7e01;
        COMBINE1(IT_COMBINE_SUM, IT_F16, &d, &s);
        assert_true(ref_half_isnan(d));
    }
    struct {
        uint16_t a, b, want;
    } bc[] = {
        {0x4380, 0x3f80, 0x4380}, /* 256 + 1 = 257: tie, even 256 */
        {0x4381, 0x3f80, 0x4382}, /* 258 + 1 = 259: tie, even 260 */
        {0x7f7f, 0x7f7f, 0x7f80}, /* overflow to inf */
        {0x3f80, 0xbf80, 0x0000},
        {0x3f80, 0x3b80, 0x3f80}, /* 1 + 2^-8: tie, even 1 */
    };
    for (size_t i = 0; i < sizeof bc / sizeof bc[0]; i++) {
        uint16_t d = bc[i].a, s = bc[i].b;
        COMBINE1(IT_COMBINE_SUM, IT_BF16, &d, &s);
        if (d != bc[i].want)
            fail_msg("bfloat16 %04x + %04x = %04x, expected %04x", bc[i].a, bc[i].b, d, bc[i].want);
    }
    {
        uint16_t d = 0x7f80, s = 0xff80;
        COMBINE1(IT_COMBINE_SUM, IT_BF16, &d, &s);
        assert_true(ref_bf16_isnan(d));
    }
    /* every pair of a sample of halves against the reference */
    rng_t r = {31};
    for (int it = 0; it < 300000; it++) {
        int bf = it & 1;
        uint16_t a = (uint16_t)rng_next(&r), b = (uint16_t)rng_next(&r);
        if (it % 3 == 0) /* nearby magnitudes: more rounding */
            b = (uint16_t)((a & 0xfc00) | (b & 0x83ff));
        uint16_t d = a;
        it_dtype dt = bf ? IT_BF16 : IT_F16;
        for (int o = 0; o < 3; o++) {
            d = a;
            COMBINE1(all_ops[o], dt, &d, &b);
            if (!check_elem(all_ops[o], dt, (unsigned char *)&a, (unsigned char *)&b,
                            (unsigned char *)&d))
                fail_msg("%s op %d: %04x, %04x gave %04x", bf ? "bfloat16" : "float16", o, a, b, d);
        }
    }
}

static void test_combine_nan_rules(void **state)
{
    (void)state;
    for (int o = 1; o <= 2; o++) {
        it_combine op = all_ops[o];
        int mx = op == IT_COMBINE_MAX;
        /* float32 */
        float fa[6] = {NAN, 1.0f, NAN, -INFINITY, INFINITY, 2.0f};
        float fb[6] = {1.0f, NAN, NAN, 1.0f, NAN, -3.0f};
        float fd[6];
        memcpy(fd, fa, sizeof fa);
        EXPECT_OK(it_combine_nd(op, IT_F32, 1, (int64_t[]){6}, fd, (int64_t[]){4}, fb, (int64_t[]){4}));
        assert_true(isnan(fd[0]));
        assert_true(isnan(fd[1]));
        assert_true(isnan(fd[2]));
        assert_true(fd[3] == (mx ? 1.0f : -INFINITY));
        assert_true(isnan(fd[4]));
        assert_true(fd[5] == (mx ? 2.0f : -3.0f));
        /* float64 */
        double da[6] = {NAN, 1.0, NAN, -INFINITY, INFINITY, 2.0};
        double db[6] = {1.0, NAN, NAN, 1.0, NAN, -3.0};
        EXPECT_OK(it_combine_nd(op, IT_F64, 1, (int64_t[]){6}, da, (int64_t[]){8}, db, (int64_t[]){8}));
        assert_true(isnan(da[0]));
        assert_true(isnan(da[1]));
        assert_true(isnan(da[2]));
        assert_true(da[3] == (mx ? 1.0 : -INFINITY));
        assert_true(isnan(da[4]));
        assert_true(da[5] == (mx ? 2.0 : -3.0));
        /* float16 and bfloat16 */
        for (int bf = 0; bf < 2; bf++) {
            uint16_t nan = bf ? 0x7fc0 : 0x7e00;
            uint16_t ha[6] = {nan, u16_of(1.0f, bf), nan, u16_of(-INFINITY, bf), u16_of(INFINITY, bf),
                              u16_of(2.0f, bf)};
            uint16_t hb[6] = {u16_of(1.0f, bf), nan, nan, u16_of(1.0f, bf), nan, u16_of(-3.0f, bf)};
            EXPECT_OK(it_combine_nd(op, bf ? IT_BF16 : IT_F16, 1, (int64_t[]){6}, ha, (int64_t[]){2},
                                    hb, (int64_t[]){2}));
            for (int k = 0; k < 3; k++)
                assert_true(bf ? ref_bf16_isnan(ha[k]) : ref_half_isnan(ha[k]));
            assert_int_equal(ha[3], mx ? u16_of(1.0f, bf) : u16_of(-INFINITY, bf));
            assert_true(bf ? ref_bf16_isnan(ha[4]) : ref_half_isnan(ha[4]));
            assert_int_equal(ha[5], u16_of(mx ? 2.0f : -3.0f, bf));
        }
    }
}

static void test_combine_complex(void **state)
{
    (void)state;
    float a[4] = {1, 2, 3, 4}, b[4] = {10, 20, 30, 40};
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_C64, 1, (int64_t[]){2}, a, (int64_t[]){8}, b,
                            (int64_t[]){8}));
    assert_true(a[0] == 11 && a[1] == 22 && a[2] == 33 && a[3] == 44);
    double c[2] = {1.5, -2.5}, d[2] = {0.25, 0.5};
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_C128, 0, NULL, c, NULL, d, NULL));
    assert_true(c[0] == 1.75 && c[1] == -2.0);
    EXPECT_OK(it_combine_nd(IT_COMBINE_COPY, IT_C128, 0, NULL, c, NULL, d, NULL));
    assert_true(c[0] == 0.25 && c[1] == 0.5);
    /* MAX / MIN are not defined for complex: IT_EDTYPE with a message, and
     * the destination is left alone */
    for (int dt = IT_C64; dt <= IT_C128; dt++) {
        for (int o = 1; o <= 2; o++) {
            _Alignas(16) unsigned char dst[32];
            _Alignas(16) unsigned char src[32];
            unsigned char snap[32];
            memset(dst, 0x5a, sizeof dst);
            memset(src, 0x11, sizeof src);
            memcpy(snap, dst, sizeof dst);
            int64_t es = (int64_t)tu_elsize((it_dtype)dt);
            EXPECT_ERR(it_combine_nd(all_ops[o], (it_dtype)dt, 1, (int64_t[]){2}, dst,
                                     (int64_t[]){es}, src, (int64_t[]){es}),
                       IT_EDTYPE);
            assert_memory_equal(dst, snap, sizeof dst);
        }
    }
}

static void test_combine_unsupported(void **state)
{
    (void)state;
    float d[2] = {1, 2}, s[2] = {3, 4};
    EXPECT_ERR2(it_combine_nd(IT_COMBINE_CUSTOM, IT_F32, 1, (int64_t[]){2}, d, (int64_t[]){4}, s,
                              (int64_t[]){4}),
                IT_EDTYPE, IT_EINVAL);
    assert_true(d[0] == 1 && d[1] == 2);
    EXPECT_ERR2(it_combine_nd(IT_COMBINE_SUM, IT_DTYPE_COUNT, 1, (int64_t[]){2}, d, (int64_t[]){4},
                              s, (int64_t[]){4}),
                IT_EDTYPE, IT_EINVAL);
    assert_true(d[0] == 1 && d[1] == 2);
}

static void test_combine_ndim0(void **state)
{
    (void)state;
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        for (int o = 0; o < 4; o++) {
            if (!it_dtype_supports((it_dtype)dt, all_ops[o]))
                continue;
            rng_t r = {(uint64_t)(dt * 4 + o)};
            for (int it = 0; it < 20; it++) {
                _Alignas(16) unsigned char a[16];
                _Alignas(16) unsigned char b[16];
                _Alignas(16) unsigned char d[16];
                gen_elem(&r, (it_dtype)dt, a);
                gen_elem(&r, (it_dtype)dt, b);
                memcpy(d, a, 16);
                EXPECT_OK(it_combine_nd(all_ops[o], (it_dtype)dt, 0, NULL, d, NULL, b, NULL));
                if (!check_elem(all_ops[o], (it_dtype)dt, a, b, d))
                    fail_msg("ndim 0 %s op %d wrong", it_dtype_name((it_dtype)dt), o);
            }
        }
    }
    /* a zero-extent region touches nothing */
    float d[3] = {1, 2, 3}, s[3] = {4, 5, 6};
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_F32, 2, (int64_t[]){3, 0}, d, (int64_t[]){4, 4}, s,
                            (int64_t[]){4, 4}));
    assert_true(d[0] == 1 && d[1] == 2 && d[2] == 3);
}

/* Broadcast and reversed sources by hand. */
static void test_combine_broadcast_and_reverse(void **state)
{
    (void)state;
    /* dst[i][j] += src[j] (row broadcast, stride 0 on dim 0) */
    int32_t dst[2][3] = {{1, 2, 3}, {4, 5, 6}}, row[3] = {10, 20, 30};
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_I32, 2, (int64_t[]){2, 3}, dst, (int64_t[]){12, 4},
                            row, (int64_t[]){0, 4}));
    assert_int_equal(dst[0][0], 11);
    assert_int_equal(dst[0][2], 33);
    assert_int_equal(dst[1][1], 25);
    assert_int_equal(dst[1][2], 36);
    /* scalar broadcast over a 2-d region */
    double m[2][2] = {{1, 5}, {-3, 0}}, scalar = 2.0;
    EXPECT_OK(it_combine_nd(IT_COMBINE_MAX, IT_F64, 2, (int64_t[]){2, 2}, m, (int64_t[]){16, 8},
                            &scalar, (int64_t[]){0, 0}));
    assert_true(m[0][0] == 2 && m[0][1] == 5 && m[1][0] == 2 && m[1][1] == 2);
    /* reversed source: dst[i] = src[3 - i] */
    int64_t v[4] = {0, 0, 0, 0}, src[4] = {1, 2, 3, 4};
    EXPECT_OK(it_combine_nd(IT_COMBINE_COPY, IT_I64, 1, (int64_t[]){4}, v, (int64_t[]){8}, &src[3],
                            (int64_t[]){-8}));
    assert_true(v[0] == 4 && v[1] == 3 && v[2] == 2 && v[3] == 1);
    /* transposed source */
    float t[2][3] = {{0}}, s[3][2] = {{1, 2}, {3, 4}, {5, 6}};
    EXPECT_OK(it_combine_nd(IT_COMBINE_SUM, IT_F32, 2, (int64_t[]){2, 3}, t, (int64_t[]){12, 4}, s,
                            (int64_t[]){4, 8}));
    assert_true(t[0][0] == 1 && t[0][1] == 3 && t[0][2] == 5);
    assert_true(t[1][0] == 2 && t[1][1] == 4 && t[1][2] == 6);
}

/* ------------------------------------------------------------------ */
/* copy / fill / strides                                                */

static void test_copy_nd_random(void **state)
{
    (void)state;
    rng_t r = {4242};
    static const size_t sizes[] = {1, 2, 3, 4, 8, 12, 16};
    for (int it = 0; it < 3000; it++) {
        size_t es = sizes[rng_range(&r, 0, 6)];
        int nd = (int)rng_range(&r, 0, 5);
        int64_t shape[IT_MAX_DIMS], idx[IT_MAX_DIMS] = {0};
        random_shape(&r, nd, shape);
        region D, S;
        make_region(&r, nd, shape, es, 0, 1, &D);
        make_region(&r, nd, shape, es, 1, 1, &S);
        unsigned char *snap = malloc(D.memsize), *mark = calloc(D.memsize, 1);
        assert_non_null(snap);
        assert_non_null(mark);
        memcpy(snap, D.mem, D.memsize);
        it_copy_nd(es, nd, shape, D.base, D.strides, S.base, S.strides);
        if (numel_of(nd, shape) > 0) {
            do {
                int64_t od = off_of(nd, idx, D.strides), os = off_of(nd, idx, S.strides);
                memset(mark + (D.base - D.mem) + od, 1, es);
                if (memcmp(D.base + od, S.base + os, es) != 0)
                    fail_msg("it_copy_nd(elsize %zu, ndim %d): element differs", es, nd);
            } while (next_idx(nd, idx, shape));
        }
        for (size_t i = 0; i < D.memsize; i++)
            if (!mark[i] && snap[i] != D.mem[i])
                fail_msg("it_copy_nd(elsize %zu, ndim %d) wrote outside the region", es, nd);
        free(snap);
        free(mark);
        free_region(&D);
        free_region(&S);
    }
    /* ndim 0 copies one element */
    unsigned char a[12] = {0}, b[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    it_copy_nd(12, 0, NULL, a, NULL, b, NULL);
    assert_memory_equal(a, b, 12);
}

static void test_fill_nd_random(void **state)
{
    (void)state;
    rng_t r = {555};
    static const size_t sizes[] = {1, 2, 3, 4, 8, 12, 16};
    for (int it = 0; it < 3000; it++) {
        size_t es = sizes[rng_range(&r, 0, 6)];
        int nd = (int)rng_range(&r, 0, 5);
        int64_t shape[IT_MAX_DIMS], idx[IT_MAX_DIMS] = {0};
        random_shape(&r, nd, shape);
        region D;
        make_region(&r, nd, shape, es, 1, 1, &D); /* zero strides are fine for a fill */
        unsigned char value[16];
        for (size_t k = 0; k < 16; k++)
            value[k] = (unsigned char)rng_next(&r);
        unsigned char *snap = malloc(D.memsize), *mark = calloc(D.memsize, 1);
        assert_non_null(snap);
        assert_non_null(mark);
        memcpy(snap, D.mem, D.memsize);
        it_fill_nd(es, nd, shape, D.base, D.strides, value);
        if (numel_of(nd, shape) > 0) {
            do {
                int64_t od = off_of(nd, idx, D.strides);
                memset(mark + (D.base - D.mem) + od, 1, es);
                if (memcmp(D.base + od, value, es) != 0)
                    fail_msg("it_fill_nd(elsize %zu, ndim %d): element not filled", es, nd);
            } while (next_idx(nd, idx, shape));
        }
        for (size_t i = 0; i < D.memsize; i++)
            if (!mark[i] && snap[i] != D.mem[i])
                fail_msg("it_fill_nd(elsize %zu, ndim %d) wrote outside the region", es, nd);
        free(snap);
        free(mark);
        free_region(&D);
    }
    double one = 0, v = 3.5;
    it_fill_nd(8, 0, NULL, &one, NULL, &v);
    assert_true(one == 3.5);
}

static void test_contiguous_strides(void **state)
{
    (void)state;
    int64_t st[IT_MAX_DIMS];
    assert_int_equal(it_contiguous_strides(4, 3, (int64_t[]){2, 3, 4}, st), 96);
    assert_int_equal(st[0], 48);
    assert_int_equal(st[1], 16);
    assert_int_equal(st[2], 4);
    assert_int_equal(it_contiguous_strides(8, 1, (int64_t[]){5}, st), 40);
    assert_int_equal(st[0], 8);
    assert_int_equal(it_contiguous_strides(2, 0, NULL, st), 2);
    assert_int_equal(it_contiguous_strides(16, 2, (int64_t[]){1, 1}, st), 16);
    assert_int_equal(st[1], 16);
    assert_int_equal(it_contiguous_strides(4, 3, (int64_t[]){2, 0, 3}, st), 0);
    assert_int_equal(st[2], 4);
    int64_t shape16[IT_MAX_DIMS];
    for (int d = 0; d < IT_MAX_DIMS; d++)
        shape16[d] = 2;
    assert_int_equal(it_contiguous_strides(1, IT_MAX_DIMS, shape16, st), 65536);
    assert_int_equal(st[0], 32768);
    assert_int_equal(st[15], 1);
    /* the largest sizes that fit, and the first that do not */
    assert_int_equal(it_contiguous_strides(8, 1, (int64_t[]){((int64_t)1 << 60) - 1}, st),
                     INT64_MAX - 7);
    assert_int_equal(it_contiguous_strides(8, 1, (int64_t[]){(int64_t)1 << 60}, st), -1);
    assert_int_equal(it_contiguous_strides(8, 2, (int64_t[]){(int64_t)1 << 62, 4}, st), -1);
    assert_int_equal(it_contiguous_strides(1, 3, (int64_t[]){(int64_t)1 << 31, (int64_t)1 << 31, 4}, st), -1);
    assert_int_equal(it_contiguous_strides(2, 1, (int64_t[]){INT64_MAX}, st), -1);
    assert_int_equal(it_contiguous_strides(1, 2, (int64_t[]){INT64_MAX, 2}, st), -1);
    assert_int_equal(it_contiguous_strides(1, 2, (int64_t[]){(int64_t)1 << 32, (int64_t)1 << 30}, st),
                     (int64_t)1 << 62);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_names),
        cmocka_unit_test(test_supports),
        cmocka_unit_test(test_reference_self_check),
        cmocka_unit_test(test_half_to_float_exhaustive),
        cmocka_unit_test(test_bf16_to_float_exhaustive),
        cmocka_unit_test(test_float_to_half_cases),
        cmocka_unit_test(test_float_to_half_sweep),
        cmocka_unit_test(test_float_to_bf16_cases),
        cmocka_unit_test(test_float_to_bf16_sweep),
        cmocka_unit_test(test_combine_int_wrap),
        cmocka_unit_test(test_combine_bool),
        cmocka_unit_test(test_combine_half_rounding),
        cmocka_unit_test(test_combine_nan_rules),
        cmocka_unit_test(test_combine_complex),
        cmocka_unit_test(test_combine_unsupported),
        cmocka_unit_test(test_combine_ndim0),
        cmocka_unit_test(test_combine_broadcast_and_reverse),
        cmocka_unit_test(test_combine_random_strided),
        cmocka_unit_test(test_combine_many_dims),
        cmocka_unit_test(test_combine_large_contiguous),
        cmocka_unit_test(test_copy_nd_random),
        cmocka_unit_test(test_fill_nd_random),
        cmocka_unit_test(test_contiguous_strides),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
