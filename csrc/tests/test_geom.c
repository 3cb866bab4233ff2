/*
 * test_geom.c - boxes, windows and the window <-> pixel arithmetic
 * (it_geom.h).
 *
 * Small cases are checked against a brute-force enumeration of window
 * indices (a window counts when it meets the region in every dim, lies
 * wholly inside every finite dim, and has 0 in every coordinate no dim
 * follows); large ones near IT_COORD_LIMIT / IT_PARAM_LIMIT against exact
 * 128-bit arithmetic.
 */
#include "it_test_util.h"

typedef __int128 i128;

#define L IT_COORD_LIMIT
#define P IT_PARAM_LIMIT

static i128 floor128(i128 a, i128 b)
{
    i128 q = a / b, r = a % b;
    if (r != 0 && ((r < 0) != (b < 0)))
        q--;
    return q;
}

static i128 ceil128(i128 a, i128 b)
{
    return -floor128(-a, b);
}

/* ------------------------------------------------------------------ */

static void test_floordiv_ceildiv(void **state)
{
    (void)state;
    for (int64_t a = -60; a <= 60; a++) {
        for (int64_t b = 1; b <= 13; b++) {
            assert_int_equal(it_floordiv(a, b), (int64_t)floor128(a, b));
            assert_int_equal(it_ceildiv(a, b), (int64_t)ceil128(a, b));
            assert_true(it_floordiv(a, b) * b <= a && a < (it_floordiv(a, b) + 1) * b);
            assert_true(it_ceildiv(a, b) * b >= a && a > (it_ceildiv(a, b) - 1) * b);
        }
    }
    assert_int_equal(it_floordiv(-7, 2), -4);
    assert_int_equal(it_ceildiv(-7, 2), -3);
    assert_int_equal(it_floordiv(7, 2), 3);
    assert_int_equal(it_ceildiv(7, 2), 4);
    assert_int_equal(it_floordiv(-8, 2), -4);
    assert_int_equal(it_ceildiv(-8, 2), -4);
    assert_int_equal(it_floordiv(-1, 1000), -1);
    assert_int_equal(it_ceildiv(-1, 1000), 0);
    assert_int_equal(it_ceildiv(1, 1000), 1);
    assert_int_equal(it_floordiv(0, 5), 0);
    assert_int_equal(it_ceildiv(0, 5), 0);
    rng_t r = {1};
    for (int it = 0; it < 200000; it++) {
        int64_t a = (int64_t)rng_next(&r) >> rng_range(&r, 0, 62);
        int64_t b = (int64_t)(rng_next(&r) >> rng_range(&r, 1, 63));
        if (b <= 0)
            b = 1;
        if ((int64_t)floor128(a, b) != it_floordiv(a, b))
            fail_msg("it_floordiv(%lld, %lld) = %lld", (long long)a, (long long)b,
                     (long long)it_floordiv(a, b));
        if ((int64_t)ceil128(a, b) != it_ceildiv(a, b))
            fail_msg("it_ceildiv(%lld, %lld) = %lld", (long long)a, (long long)b,
                     (long long)it_ceildiv(a, b));
    }
}

/* The whole int64 range: "exact floor and ceiling of a / b for b > 0". */
static void test_floordiv_extremes(void **state)
{
    (void)state;
    const int64_t as[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, -L, L, -L - 1, L + 1,
                          -1, 0, 1, -P, P};
    const int64_t bs[] = {1, 2, 3, 7, P, P + 1, L, L - 1, INT64_MAX};
    for (size_t i = 0; i < sizeof as / sizeof as[0]; i++) {
        for (size_t j = 0; j < sizeof bs / sizeof bs[0]; j++) {
            int64_t a = as[i], b = bs[j];
            if (it_floordiv(a, b) != (int64_t)floor128(a, b))
                fail_msg("it_floordiv(%lld, %lld) = %lld, expected %lld", (long long)a,
                         (long long)b, (long long)it_floordiv(a, b), (long long)floor128(a, b));
            if (it_ceildiv(a, b) != (int64_t)ceil128(a, b))
                fail_msg("it_ceildiv(%lld, %lld) = %lld, expected %lld", (long long)a,
                         (long long)b, (long long)it_ceildiv(a, b), (long long)ceil128(a, b));
        }
    }
}

/* ------------------------------------------------------------------ */

static void test_box_extent(void **state)
{
    (void)state;
    it_box b;
    memset(&b, 0, sizeof b);
    b.ndim = 6;
    int64_t cases[][4] = {
        /* start, stop, step, extent */
        {0, 10, 1, 10},   {0, 10, 3, 4},     {0, 9, 3, 3},      {-10, -1, 2, 5},
        {5, 5, 1, 0},     {5, 4, 1, 0},      {5, -100, 7, 0},   {-3, 4, 100, 1},
        {-L, L - 1, 1, INT64_MAX}, {-L + 1, L, 1, INT64_MAX}, {-L, L - 1, 2, L},
        {L - 1, L, 1, 1},  {-L, -L + 1, 5, 1}, {0, L, INT64_MAX, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int d = (int)(i % 6);
        b.start[d] = cases[i][0];
        b.stop[d] = cases[i][1];
        b.step[d] = cases[i][2];
        if (it_box_extent(&b, d) != cases[i][3])
            fail_msg("extent of [%lld, %lld) step %lld is %lld, expected %lld",
                     (long long)cases[i][0], (long long)cases[i][1], (long long)cases[i][2],
                     (long long)it_box_extent(&b, d), (long long)cases[i][3]);
    }
    rng_t r = {3};
    for (int it = 0; it < 100000; it++) {
        int64_t s = rng_range(&r, -L, L), e = rng_range(&r, -L, L);
        if (rng_chance(&r, 2)) {
            e = s + rng_range(&r, -100, 100);
            if (e > L || e < -L)
                e = s;
        }
        if ((i128)e - s > INT64_MAX)
            continue; /* the extent itself would not fit */
        int64_t st = rng_chance(&r, 2) ? rng_range(&r, 1, 10) : rng_range(&r, 1, INT64_MAX);
        b.start[0] = s;
        b.stop[0] = e;
        b.step[0] = st;
        i128 want = e > s ? ceil128((i128)e - s, st) : 0;
        if ((i128)it_box_extent(&b, 0) != want)
            fail_msg("extent of [%lld, %lld) step %lld", (long long)s, (long long)e, (long long)st);
    }
}

static void test_box_numel(void **state)
{
    (void)state;
    int64_t n = -5;
    it_box b = mkbox(3, (int64_t[]){0, -5, 2}, (int64_t[]){4, 5, 9}, (int64_t[]){1, 3, 2});
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 4 * 4 * 4);
    b = mkbox(0, NULL, NULL, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 1);
    b = mkbox(2, (int64_t[]){3, 0}, (int64_t[]){3, 10}, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 0);
    /* the limit is INT64_MAX / 16 = 2^59 - 1 */
    const int64_t lim = INT64_MAX / 16;
    b = mkbox(1, (int64_t[]){0}, (int64_t[]){lim}, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_true(n == lim);
    b = mkbox(1, (int64_t[]){-5}, (int64_t[]){lim - 4}, NULL);
    EXPECT_ERR(it_box_numel(&b, &n), IT_ETOOBIG);
    b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){(int64_t)1 << 30, ((int64_t)1 << 29) - 1}, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_true(n == ((int64_t)1 << 59) - ((int64_t)1 << 30));
    b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){(int64_t)1 << 30, (int64_t)1 << 29}, NULL);
    EXPECT_ERR(it_box_numel(&b, &n), IT_ETOOBIG);
    /* products that overflow int64 itself */
    b = mkbox(4, (int64_t[]){0, 0, 0, 0}, (int64_t[]){65536, 65536, 65536, 65536}, NULL);
    EXPECT_ERR(it_box_numel(&b, &n), IT_ETOOBIG);
    /* random products against 128-bit arithmetic */
    rng_t r = {9};
    for (int it = 0; it < 20000; it++) {
        int nd = (int)rng_range(&r, 1, 5);
        it_box bb;
        memset(&bb, 0, sizeof bb);
        bb.ndim = nd;
        i128 prod = 1;
        int zero = 0;
        for (int d = 0; d < nd; d++) {
            /* empty dims: test_box_numel_empty_dim */
            int64_t ext = rng_chance(&r, 3) ? rng_range(&r, 1, 40) : rng_range(&r, 1, (int64_t)1 << rng_range(&r, 1, 40));
            bb.start[d] = rng_range(&r, -1000, 1000);
            bb.step[d] = rng_range(&r, 1, 3);
            bb.stop[d] = bb.start[d] + ext * bb.step[d] - rng_range(&r, 0, bb.step[d] - 1);
            if (ext == 0)
                zero = 1;
            if (prod <= (i128)INT64_MAX)
                prod *= ext;
        }
        it_error_clear();
        int rc = it_box_numel(&bb, &n);
        if (zero || prod <= lim) {
            if (rc != IT_OK || n != (int64_t)(zero ? 0 : prod))
                fail_msg("it_box_numel: rc %d n %lld, expected %lld", rc, (long long)n,
                         (long long)(zero ? 0 : prod));
        } else if (rc != IT_ETOOBIG) {
            fail_msg("it_box_numel: rc %d, expected IT_ETOOBIG", rc);
        }
    }
}

/* ------------------------------------------------------------------ */

/* An empty dim makes the product 0 even when the others are huge: an empty
 * slice of a huge box is empty, not too big, whatever the dim order. */
static void test_box_numel_empty_dim(void **state)
{
    (void)state;
    int64_t n = -1;
    it_box b = mkbox(3, (int64_t[]){0, 9, 0}, (int64_t[]){(int64_t)1 << 40, 3, (int64_t)1 << 40}, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 0);
    b = mkbox(3, (int64_t[]){0, 0, 7}, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40, 7}, NULL);
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 0);
}

/* Boxes spanning the whole coordinate range: stop - start = 2^63 does not
 * fit in int64 but the extents with step >= 2 do. */
static void test_box_full_range(void **state)
{
    (void)state;
    it_box b = mkbox(3, (int64_t[]){-L, -L, -L}, (int64_t[]){L, L, L}, (int64_t[]){2, 3, L});
    assert_true(it_box_extent(&b, 0) == L);
    assert_true(it_box_extent(&b, 1) == INT64_C(3074457345618258603));
    assert_true(it_box_extent(&b, 2) == 2);
    int64_t n;
    EXPECT_ERR(it_box_numel(&b, &n), IT_ETOOBIG);
    b = mkbox(1, (int64_t[]){-L}, (int64_t[]){L}, (int64_t[]){(int64_t)1 << 60});
    EXPECT_OK(it_box_numel(&b, &n));
    assert_int_equal(n, 8);
}

static it_window good_window(void)
{
    return mkwin(3, (int64_t[]){3, 4, 4}, (int64_t[]){1, 4, 4}, (int64_t[]){0, -2, 5},
                 (int[]){IT_MAP_FIXED, 0, 1}, 2);
}

static void test_window_check(void **state)
{
    (void)state;
    it_window w = good_window();
    EXPECT_OK(it_window_check(&w));
    w = mkwin(2, (int64_t[]){1, 1}, NULL, NULL, NULL, 2);
    EXPECT_OK(it_window_check(&w));
    /* IT_MAX_DIMS dims, all sharing one coordinate */
    int64_t ones[IT_MAX_DIMS];
    int zeros[IT_MAX_DIMS];
    for (int d = 0; d < IT_MAX_DIMS; d++) {
        ones[d] = 1;
        zeros[d] = 0;
    }
    w = mkwin(IT_MAX_DIMS, ones, NULL, NULL, zeros, IT_MAX_DIMS);
    EXPECT_OK(it_window_check(&w));
    /* parameters exactly at the limits are fine */
    w = mkwin(2, (int64_t[]){P, 1}, (int64_t[]){1, P}, (int64_t[]){-P, P}, NULL, 2);
    EXPECT_OK(it_window_check(&w));

    w = good_window(); w.ndim = IT_MAX_DIMS + 1;       EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.ndim = -1;                    EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.ncoords = IT_MAX_DIMS + 1;    EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.ncoords = -1;                 EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.size[1] = 0;                  EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.size[2] = -4;                 EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.stride[1] = 0;                EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.stride[2] = -1;               EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.map[1] = 2;                   EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.map[2] = -2;                  EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    w = good_window(); w.map[0] = 100;                 EXPECT_ERR(it_window_check(&w), IT_EINVAL);
    /* beyond IT_PARAM_LIMIT: which of the two codes is not specified */
    w = good_window(); w.size[1] = P + 1;              EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    w = good_window(); w.stride[2] = P + 1;            EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    w = good_window(); w.offset[1] = P + 1;            EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    w = good_window(); w.offset[2] = -P - 1;           EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    w = good_window(); w.offset[0] = INT64_MIN;        EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    w = good_window(); w.size[0] = INT64_MAX;          EXPECT_ERR2(it_window_check(&w), IT_EINVAL, IT_ERANGE);
    /* a FIXED dim's size and offset are checked too */
    w = good_window(); w.size[0] = 0;                  EXPECT_ERR(it_window_check(&w), IT_EINVAL);
}

static void test_window_bounds_cases(void **state)
{
    (void)state;
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    /* identity map */
    it_window w = mkwin(2, (int64_t[]){3, 4}, (int64_t[]){2, 5}, (int64_t[]){-1, 7}, NULL, 2);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){4, -3}, s, e));
    assert_int_equal(s[0], 7);
    assert_int_equal(e[0], 10);
    assert_int_equal(s[1], -8);
    assert_int_equal(e[1], -4);
    /* a permuted map */
    w = mkwin(2, (int64_t[]){3, 4}, (int64_t[]){2, 5}, (int64_t[]){0, 0}, (int[]){1, 0}, 2);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){10, 1}, s, e));
    assert_int_equal(s[0], 2);
    assert_int_equal(e[0], 5);
    assert_int_equal(s[1], 50);
    assert_int_equal(e[1], 54);
    /* two dims following one coordinate; coordinate 1 is unused */
    w = mkwin(2, (int64_t[]){2, 3}, (int64_t[]){2, 3}, (int64_t[]){0, 1}, (int[]){0, 0}, 2);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){-2, 0}, s, e));
    assert_int_equal(s[0], -4);
    assert_int_equal(e[0], -2);
    assert_int_equal(s[1], -5);
    assert_int_equal(e[1], -2);
    /* the README's args window: (3, 4, 4) with map (None, 0, 1) */
    w = mkwin(3, (int64_t[]){3, 4, 4}, (int64_t[]){1, 4, 4}, NULL, (int[]){IT_MAP_FIXED, 0, 1}, 2);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){0, 1}, s, e));
    assert_int_equal(s[0], 0);
    assert_int_equal(e[0], 3); /* a FIXED dim covers [offset, offset + size) */
    assert_int_equal(s[1], 0);
    assert_int_equal(e[1], 4);
    assert_int_equal(s[2], 4);
    assert_int_equal(e[2], 8);
    /* FIXED with an offset, whatever the coordinates */
    w = mkwin(2, (int64_t[]){5, 2}, (int64_t[]){7, 2}, (int64_t[]){-3, 1}, (int[]){IT_MAP_FIXED, 0}, 1);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){-1000}, s, e));
    assert_int_equal(s[0], -3);
    assert_int_equal(e[0], 2);
    assert_int_equal(s[1], -1999);
    assert_int_equal(e[1], -1997);
    /* large but representable */
    w = mkwin(1, (int64_t[]){P}, (int64_t[]){P}, (int64_t[]){-P}, NULL, 1);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){(int64_t)1 << 13}, s, e));
    assert_true(s[0] == ((int64_t)1 << 61) - P);
    assert_true(e[0] == ((int64_t)1 << 61));
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){-((int64_t)1 << 13)}, s, e));
    assert_true(s[0] == -((int64_t)1 << 61) - P);
}

static void test_window_bounds_overflow(void **state)
{
    (void)state;
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    it_window w = mkwin(1, (int64_t[]){P}, (int64_t[]){P}, (int64_t[]){0}, NULL, 1);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){INT64_MAX}, s, e), IT_ERANGE);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){INT64_MIN}, s, e), IT_ERANGE);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){(int64_t)1 << 20}, s, e), IT_ERANGE);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){-((int64_t)1 << 20)}, s, e), IT_ERANGE);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){(int64_t)1 << 15}, s, e), IT_ERANGE);
    w = mkwin(1, (int64_t[]){1}, (int64_t[]){1}, (int64_t[]){0}, NULL, 1);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){INT64_MAX}, s, e), IT_ERANGE); /* stop overflows */
    w = mkwin(1, (int64_t[]){4}, (int64_t[]){1}, (int64_t[]){-8}, NULL, 1);
    EXPECT_ERR(it_window_bounds(&w, (int64_t[]){INT64_MIN}, s, e), IT_ERANGE); /* start overflows */
    /* an unused coordinate may hold anything */
    w = mkwin(1, (int64_t[]){2}, NULL, NULL, (int[]){0}, 2);
    EXPECT_OK(it_window_bounds(&w, (int64_t[]){3, INT64_MAX}, s, e));
    assert_int_equal(s[0], 6);
}

static void test_window_bounds_random(void **state)
{
    (void)state;
    rng_t r = {11};
    for (int it = 0; it < 50000; it++) {
        int nd = (int)rng_range(&r, 1, 4), nc = (int)rng_range(&r, 1, 4);
        it_window w;
        memset(&w, 0, sizeof w);
        w.ndim = nd;
        w.ncoords = nc;
        for (int d = 0; d < nd; d++) {
            w.size[d] = rng_chance(&r, 2) ? rng_range(&r, 1, 10) : rng_range(&r, 1, P);
            w.stride[d] = rng_chance(&r, 2) ? rng_range(&r, 1, 10) : rng_range(&r, 1, P);
            w.offset[d] = rng_chance(&r, 2) ? rng_range(&r, -10, 10) : rng_range(&r, -P, P);
            w.map[d] = rng_chance(&r, 5) ? IT_MAP_FIXED : (int)rng_range(&r, 0, nc - 1);
        }
        EXPECT_OK(it_window_check(&w));
        int64_t co[IT_MAX_DIMS], s[IT_MAX_DIMS], e[IT_MAX_DIMS];
        for (int c = 0; c < nc; c++)
            co[c] = rng_range(&r, -((int64_t)1 << 13), (int64_t)1 << 13);
        EXPECT_OK(it_window_bounds(&w, co, s, e));
        for (int d = 0; d < nd; d++) {
            i128 st = w.map[d] == IT_MAP_FIXED ? w.offset[d] : (i128)co[w.map[d]] * w.stride[d] + w.offset[d];
            if ((i128)s[d] != st || (i128)e[d] != st + w.size[d])
                fail_msg("it_window_bounds dim %d: [%lld, %lld)", d, (long long)s[d], (long long)e[d]);
        }
    }
}

/* ------------------------------------------------------------------ */
/* domains                                                              */

/* Brute-force test of one small case. */
static void domain_case(rng_t *r, int nd, int nc, int64_t *nvalid_out)
{
    it_window w;
    memset(&w, 0, sizeof w);
    w.ndim = nd;
    w.ncoords = nc;
    int64_t shape[IT_MAX_DIMS], start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        w.size[d] = rng_range(r, 1, 5);
        w.stride[d] = rng_range(r, 1, 5);
        w.offset[d] = rng_range(r, -6, 6);
        w.map[d] = rng_chance(r, 5) ? IT_MAP_FIXED : (int)rng_range(r, 0, nc - 1);
        shape[d] = rng_chance(r, 2) ? IT_DIM_INFINITE : rng_range(r, 1, 12);
        start[d] = rng_range(r, -15, 15);
        stop[d] = start[d] + (rng_chance(r, 10) ? rng_range(r, -2, 0) : rng_range(r, 1, 10));
        if (shape[d] != IT_DIM_INFINITE && rng_chance(r, 2)) { /* often near the finite extent */
            start[d] = rng_range(r, -3, shape[d]);
            stop[d] = start[d] + rng_range(r, 1, 10);
        }
        if (w.map[d] == IT_MAP_FIXED && rng_chance(r, 2))
            w.offset[d] = rng_range(r, 0, 3);
    }
    EXPECT_OK(it_window_check(&w));
    int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total = -7;
    it_error_clear();
    int rc = it_window_domain(&w, shape, start, stop, lo, count, &total);
    if (rc != IT_OK)
        fail_msg("it_window_domain returned %d (%s)", rc, it_error_message());

    /* enumeration range per coordinate: loose bounds from any dim that
     * follows it, [-2, 2] for a coordinate no dim follows */
    int64_t elo[IT_MAX_DIMS], ehi[IT_MAX_DIMS];
    for (int c = 0; c < nc; c++) {
        elo[c] = -2;
        ehi[c] = 2;
    }
    for (int d = 0; d < nd; d++) {
        if (w.map[d] == IT_MAP_FIXED)
            continue;
        int c = w.map[d];
        elo[c] = (start[d] - w.offset[d] - w.size[d]) / w.stride[d] - 2;
        ehi[c] = (stop[d] - w.offset[d]) / w.stride[d] + 2;
    }
    int64_t idx[IT_MAX_DIMS], nvalid = 0;
    memcpy(idx, elo, sizeof idx);
    do {
        int valid = ref_window_valid(&w, shape, idx);
        int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS];
        ref_bounds(&w, idx, s, e);
        for (int d = 0; d < nd && valid; d++)
            valid = IT_MAX(s[d], start[d]) < IT_MIN(e[d], stop[d]);
        int inside = total > 0;
        for (int c = 0; c < nc && inside; c++)
            inside = idx[c] >= lo[c] && idx[c] < lo[c] + count[c];
        if (valid != inside) {
            char buf[128];
            int len = 0;
            for (int c = 0; c < nc; c++)
                len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%lld", c ? "," : "", (long long)idx[c]);
            for (int d = 0; d < nd; d++)
                print_message("dim %d: size %lld stride %lld offset %lld map %d shape %lld region [%lld, %lld)\n",
                              d, (long long)w.size[d], (long long)w.stride[d], (long long)w.offset[d],
                              w.map[d], (long long)shape[d], (long long)start[d], (long long)stop[d]);
            fail_msg("window (%s) %s the region but %s the domain (total %lld)", buf,
                     valid ? "meets" : "does not meet", inside ? "is in" : "is not in", (long long)total);
        }
        nvalid += valid;
    } while (tu_next_index(nc, idx, elo, ehi));
    if (nvalid != total)
        fail_msg("domain total %lld but %lld windows meet the region", (long long)total, (long long)nvalid);
    if (total > 0) {
        int64_t prod = 1;
        for (int c = 0; c < nc; c++)
            prod *= count[c];
        assert_int_equal(prod, total);
    }
    /* the tests' own helper agrees too */
    int64_t rlo[IT_MAX_DIMS], rhi[IT_MAX_DIMS];
    int ne = ref_domain(&w, shape, start, stop, rlo, rhi);
    if (ne != (total > 0))
        fail_msg("ref_domain disagrees (test helper bug)");
    if (ne)
        for (int c = 0; c < nc; c++)
            if (rlo[c] != lo[c] || rhi[c] != lo[c] + count[c] - 1)
                fail_msg("ref_domain disagrees on coordinate %d (test helper bug)", c);
    *nvalid_out = nvalid;
}

static void test_window_domain_bruteforce(void **state)
{
    (void)state;
    rng_t r = {5};
    int64_t nonempty = 0, n;
    for (int it = 0; it < 30000; it++) {
        int nd = (int)rng_range(&r, 1, 3), nc = (int)rng_range(&r, 1, 3);
        domain_case(&r, nd, nc, &n);
        nonempty += n > 0;
    }
    /* the generator must exercise non-empty domains a fair share of the time */
    assert_true(nonempty > 6000);
}

static void test_window_domain_cases(void **state)
{
    (void)state;
    int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total;
    /* the reference's example: shape (10, None), window (7, 64) */
    it_window w = mkwin(2, (int64_t[]){7, 64}, NULL, NULL, NULL, 2);
    EXPECT_OK(it_window_domain(&w, (int64_t[]){10, IT_DIM_INFINITE}, (int64_t[]){0, 0},
                               (int64_t[]){10, 64}, lo, count, &total));
    assert_int_equal(total, 1);
    assert_int_equal(lo[0], 0);
    assert_int_equal(count[0], 1);
    assert_int_equal(lo[1], 0);
    assert_int_equal(count[1], 1);
    /* offset -4 on a finite dim of 8 with size 8: nothing fits */
    w = mkwin(1, (int64_t[]){8}, NULL, (int64_t[]){-4}, NULL, 1);
    EXPECT_OK(it_window_domain(&w, (int64_t[]){8}, (int64_t[]){0}, (int64_t[]){8}, lo, count, &total));
    assert_int_equal(total, 0);
    /* overlapping windows on an infinite dim: size 4 stride 2 over [0, 10) */
    w = mkwin(1, (int64_t[]){4}, (int64_t[]){2}, NULL, NULL, 1);
    EXPECT_OK(it_window_domain(&w, (int64_t[]){IT_DIM_INFINITE}, (int64_t[]){0}, (int64_t[]){10},
                               lo, count, &total));
    assert_int_equal(lo[0], -1);
    assert_int_equal(count[0], 6);
    assert_int_equal(total, 6);
    /* negative region */
    EXPECT_OK(it_window_domain(&w, (int64_t[]){IT_DIM_INFINITE}, (int64_t[]){-9}, (int64_t[]){-8},
                               lo, count, &total));
    assert_int_equal(lo[0], -6); /* windows [-12, -8) and [-10, -6) */
    assert_int_equal(count[0], 2);
    /* empty region */
    EXPECT_OK(it_window_domain(&w, (int64_t[]){IT_DIM_INFINITE}, (int64_t[]){3}, (int64_t[]){3},
                               lo, count, &total));
    assert_int_equal(total, 0);
    /* an args window with a FIXED dim and a coordinate no dim follows */
    w = mkwin(2, (int64_t[]){3, 4}, (int64_t[]){1, 4}, NULL, (int[]){IT_MAP_FIXED, 1}, 3);
    EXPECT_OK(it_window_domain(&w, (int64_t[]){3, IT_DIM_INFINITE}, (int64_t[]){0, 0},
                               (int64_t[]){3, 8}, lo, count, &total));
    assert_int_equal(total, 2);
    assert_int_equal(lo[0], 0);
    assert_int_equal(count[0], 1);
    assert_int_equal(lo[1], 0);
    assert_int_equal(count[1], 2);
    assert_int_equal(lo[2], 0);
    assert_int_equal(count[2], 1);
    /* ...but the FIXED dim does not fit a finite extent of 2 */
    EXPECT_OK(it_window_domain(&w, (int64_t[]){2, IT_DIM_INFINITE}, (int64_t[]){0, 0},
                               (int64_t[]){2, 8}, lo, count, &total));
    assert_int_equal(total, 0);
}

/* Per-dim exact reference in 128 bits (identity map). */
static i128 dim_count(const it_window *w, int d, int64_t shape, int64_t start, int64_t stop, i128 *lo)
{
    if (start >= stop)
        return 0;
    i128 l = ceil128((i128)start - w->offset[d] - w->size[d] + 1, w->stride[d]);
    i128 h = floor128((i128)stop - 1 - w->offset[d], w->stride[d]);
    if (shape != IT_DIM_INFINITE) {
        i128 fl = ceil128(-(i128)w->offset[d], w->stride[d]);
        i128 fh = floor128((i128)shape - w->offset[d] - w->size[d], w->stride[d]);
        if (fl > l)
            l = fl;
        if (fh < h)
            h = fh;
    }
    *lo = l;
    return h >= l ? h - l + 1 : 0;
}

static int64_t pick_param(rng_t *r, int positive)
{
    int k = (int)rng_range(r, 0, 4);
    int64_t v;
    if (k == 0)
        v = P;
    else if (k == 1)
        v = rng_range(r, 1, 100);
    else if (k == 2)
        v = P - rng_range(r, 0, 5);
    else
        v = rng_range(r, 1, P);
    if (!positive && rng_chance(r, 2))
        v = -v;
    if (!positive && rng_chance(r, 6))
        v = 0;
    return v;
}

static int64_t pick_coord(rng_t *r)
{
    int k = (int)rng_range(r, 0, 5);
    if (k == 0)
        return L - rng_range(r, 0, 3);
    if (k == 1)
        return -L + rng_range(r, 0, 3);
    if (k == 2)
        return rng_range(r, -1000, 1000);
    return rng_range(r, -L, L);
}

static void test_window_domain_limits(void **state)
{
    (void)state;
    rng_t r = {17};
    int ok = 0, toobig = 0;
    for (int it = 0; it < 200000; it++) {
        int nd = (int)rng_range(&r, 1, 3);
        it_window w;
        memset(&w, 0, sizeof w);
        w.ndim = w.ncoords = nd;
        int64_t shape[IT_MAX_DIMS], start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            w.size[d] = pick_param(&r, 1);
            w.stride[d] = pick_param(&r, 1);
            w.offset[d] = pick_param(&r, 0);
            w.map[d] = d;
            int k = (int)rng_range(&r, 0, 3);
            shape[d] = k == 0 ? rng_range(&r, 1, 100) : k == 1 ? rng_range(&r, 1, L) : IT_DIM_INFINITE;
            start[d] = pick_coord(&r);
            stop[d] = rng_chance(&r, 3) ? start[d] + rng_range(&r, 0, 100) : pick_coord(&r);
            if (stop[d] > L)
                stop[d] = L;
            if (rng_chance(&r, 8)) {
                start[d] = -L;
                stop[d] = L;
            }
        }
        i128 cnt[IT_MAX_DIMS], lo128[IT_MAX_DIMS], prod = 1;
        int zero = 0, hugecount = 0;
        for (int d = 0; d < nd; d++) {
            cnt[d] = dim_count(&w, d, shape[d], start[d], stop[d], &lo128[d]);
            if (cnt[d] == 0)
                zero = 1;
            if (cnt[d] > INT64_MAX)
                hugecount = 1;
        }
        for (int d = 0; d < nd && !zero; d++) {
            prod *= cnt[d];
            if (prod > (i128)INT64_MAX)
                prod = (i128)INT64_MAX + 1; /* saturate */
        }
        int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total = -1;
        it_error_clear();
        int rc = it_window_domain(&w, shape, start, stop, lo, count, &total);
        if (zero) {
            if (rc != IT_OK || total != 0)
                fail_msg("limits case %d: empty domain gave rc %d total %lld (%s)", it, rc,
                         (long long)total, it_error_message());
        } else if (hugecount) {
            if (rc != IT_ETOOBIG && rc != IT_ERANGE)
                fail_msg("limits case %d: a count over INT64_MAX gave rc %d", it, rc);
            tu_check_recorded(rc, "it_window_domain", __FILE__, __LINE__);
        } else if (prod > (i128)INT64_MAX) {
            if (rc != IT_ETOOBIG)
                fail_msg("limits case %d: product over INT64_MAX gave rc %d", it, rc);
            tu_check_recorded(rc, "it_window_domain", __FILE__, __LINE__);
            toobig++;
        } else {
            if (rc != IT_OK)
                fail_msg("limits case %d: rc %d (%s), expected OK (dim0 region [%lld, %lld) size %lld "
                         "stride %lld offset %lld shape %lld)",
                         it, rc, it_error_message(), (long long)start[0], (long long)stop[0],
                         (long long)w.size[0], (long long)w.stride[0], (long long)w.offset[0],
                         (long long)shape[0]);
            if ((i128)total != prod)
                fail_msg("limits case %d: total %lld", it, (long long)total);
            for (int d = 0; d < nd; d++)
                if ((i128)lo[d] != lo128[d] || (i128)count[d] != cnt[d])
                    fail_msg("limits case %d dim %d: lo %lld count %lld, expected %lld %lld", it, d,
                             (long long)lo[d], (long long)count[d], (long long)lo128[d],
                             (long long)cnt[d]);
            ok++;
        }
    }
    assert_true(ok > 10000);
    assert_true(toobig > 100);
}

static void test_window_domain_overflow(void **state)
{
    (void)state;
    int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total;
    int64_t inf3[3] = {IT_DIM_INFINITE, IT_DIM_INFINITE, IT_DIM_INFINITE};
    it_window w1 = mkwin(1, (int64_t[]){1}, NULL, NULL, NULL, 1);
    /* [-L, L) holds 2^63 windows of size 1: one count does not fit */
    EXPECT_ERR2(it_window_domain(&w1, inf3, (int64_t[]){-L}, (int64_t[]){L}, lo, count, &total),
                IT_ETOOBIG, IT_ERANGE);
    /* ...with stride 2 it is 2^62 and fits */
    it_window w2 = mkwin(1, (int64_t[]){1}, (int64_t[]){2}, NULL, NULL, 1);
    EXPECT_OK(it_window_domain(&w2, inf3, (int64_t[]){-L}, (int64_t[]){L}, lo, count, &total));
    assert_true(lo[0] == -((int64_t)1 << 61));
    assert_true(count[0] == ((int64_t)1 << 62));
    assert_true(total == ((int64_t)1 << 62));
    /* products: 2^31 * 2^31 fits, 2^32 * 2^31 = 2^63 does not, 2^40 * 2^40 does not */
    it_window w = mkwin(2, (int64_t[]){1, 1}, NULL, NULL, NULL, 2);
    EXPECT_OK(it_window_domain(&w, inf3, (int64_t[]){0, 0},
                               (int64_t[]){(int64_t)1 << 31, (int64_t)1 << 31}, lo, count, &total));
    assert_true(total == (int64_t)1 << 62);
    EXPECT_ERR(it_window_domain(&w, inf3, (int64_t[]){0, 0},
                                (int64_t[]){(int64_t)1 << 32, (int64_t)1 << 31}, lo, count, &total),
               IT_ETOOBIG);
    EXPECT_ERR(it_window_domain(&w, inf3, (int64_t[]){-L, -L}, (int64_t[]){L - 1, L - 1}, lo, count,
                                &total),
               IT_ETOOBIG);
    /* an empty dim makes the domain empty, however big the others are */
    it_window w3 = mkwin(3, (int64_t[]){1, 1, 1}, NULL, NULL, NULL, 3);
    EXPECT_OK(it_window_domain(&w3, inf3, (int64_t[]){0, 0, 5},
                               (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40, 5}, lo, count, &total));
    assert_int_equal(total, 0);
    it_window w4 = mkwin(3, (int64_t[]){1, 1, 4}, NULL, NULL, NULL, 3);
    EXPECT_OK(it_window_domain(&w4, (int64_t[]){IT_DIM_INFINITE, IT_DIM_INFINITE, 3},
                               (int64_t[]){0, 0, 0}, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40, 3},
                               lo, count, &total));
    assert_int_equal(total, 0);
    /* the far corners with the largest parameters */
    it_window wp = mkwin(1, (int64_t[]){P}, (int64_t[]){P}, (int64_t[]){-P}, NULL, 1);
    EXPECT_OK(it_window_domain(&wp, inf3, (int64_t[]){L - 1}, (int64_t[]){L}, lo, count, &total));
    assert_int_equal(total, 1);
    assert_true(lo[0] == ((int64_t)1 << 14)); /* covers [2^62 - P, 2^62) */
    EXPECT_OK(it_window_domain(&wp, inf3, (int64_t[]){-L}, (int64_t[]){-L + 1}, lo, count, &total));
    assert_int_equal(total, 1);
    assert_true(lo[0] == -((int64_t)1 << 14) + 1); /* covers [-2^62, -2^62 + P) */
}

/* A region beyond +-IT_COORD_LIMIT is outside what the core accepts: it is
 * reported, never silently wrapped into a wrong domain. */
static void test_window_domain_region_out_of_range(void **state)
{
    (void)state;
    int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total;
    int64_t inf1[1] = {IT_DIM_INFINITE};
    it_window w = mkwin(1, (int64_t[]){3}, (int64_t[]){2}, (int64_t[]){5}, NULL, 1);
    /* the full int64 range: start - offset wraps if unchecked */
    EXPECT_ERR(it_window_domain(&w, inf1, (int64_t[]){INT64_MIN}, (int64_t[]){INT64_MAX}, lo, count,
                                &total),
               IT_ERANGE);
    EXPECT_ERR(it_window_domain(&w, inf1, (int64_t[]){INT64_MIN}, (int64_t[]){0}, lo, count, &total),
               IT_ERANGE);
    EXPECT_ERR(it_window_domain(&w, inf1, (int64_t[]){0}, (int64_t[]){INT64_MAX}, lo, count, &total),
               IT_ERANGE);
    /* just beyond the limit */
    EXPECT_ERR(it_window_domain(&w, inf1, (int64_t[]){-L - 1}, (int64_t[]){0}, lo, count, &total),
               IT_ERANGE);
    EXPECT_ERR(it_window_domain(&w, inf1, (int64_t[]){0}, (int64_t[]){L + 1}, lo, count, &total),
               IT_ERANGE);
}

/* it_window_block_max bounds the windows meeting any block of the grid (a
 * tile: extent[d] pixels along an infinite dim, the whole of a finite one),
 * and is reached by some block when every dim slides on its own coordinate
 * of an infinite dim. */
static void test_window_block_max(void **state)
{
    (void)state;
    rng_t r = {23};
    int tight = 0;
    for (int it = 0; it < 4000; it++) {
        int nd = (int)rng_range(&r, 1, 3);
        it_window w;
        memset(&w, 0, sizeof w);
        w.ndim = w.ncoords = nd;
        int64_t shape[IT_MAX_DIMS], extent[IT_MAX_DIMS];
        int plain = 1;
        for (int d = 0; d < nd; d++) {
            w.size[d] = rng_range(&r, 1, 6);
            w.stride[d] = rng_range(&r, 1, 6);
            w.offset[d] = rng_range(&r, -6, 6);
            w.map[d] = rng_chance(&r, 4) ? (rng_chance(&r, 2) ? IT_MAP_FIXED : (int)rng_range(&r, 0, nd - 1)) : d;
            shape[d] = rng_chance(&r, 3) ? rng_range(&r, 1, 12) : IT_DIM_INFINITE;
            extent[d] = shape[d] == IT_DIM_INFINITE ? rng_range(&r, 1, 12) : shape[d];
            plain &= w.map[d] == d && shape[d] == IT_DIM_INFINITE;
        }
        EXPECT_OK(it_window_check(&w));
        int64_t bound = it_window_block_max(&w, shape, extent), most = 0;
        /* blocks anywhere (a tile's position is a multiple of its extent;
         * the bound holds wherever the block lies) */
        int64_t lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], pos[IT_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            lo[d] = shape[d] == IT_DIM_INFINITE ? -7 : 0;
            hi[d] = shape[d] == IT_DIM_INFINITE ? 7 : 0;
        }
        memcpy(pos, lo, sizeof pos);
        do {
            int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], dlo[IT_MAX_DIMS], cnt[IT_MAX_DIMS], total;
            for (int d = 0; d < nd; d++) {
                start[d] = pos[d];
                stop[d] = pos[d] + extent[d];
            }
            EXPECT_OK(it_window_domain(&w, shape, start, stop, dlo, cnt, &total));
            if (total > bound)
                fail_msg("a block at %lld meets %lld windows, it_window_block_max says %lld", (long long)pos[0],
                         (long long)total, (long long)bound);
            most = IT_MAX(most, total);
        } while (tu_next_index(nd, pos, lo, hi));
        if (plain) {
            assert_int_equal(most, bound);
            tight++;
        }
    }
    assert_true(tight > 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_floordiv_ceildiv),
        cmocka_unit_test(test_floordiv_extremes),
        cmocka_unit_test(test_box_extent),
        cmocka_unit_test(test_box_numel),
        cmocka_unit_test(test_box_numel_empty_dim),
        cmocka_unit_test(test_box_full_range),
        cmocka_unit_test(test_window_check),
        cmocka_unit_test(test_window_bounds_cases),
        cmocka_unit_test(test_window_bounds_overflow),
        cmocka_unit_test(test_window_bounds_random),
        cmocka_unit_test(test_window_domain_cases),
        cmocka_unit_test(test_window_domain_bruteforce),
        cmocka_unit_test(test_window_domain_limits),
        cmocka_unit_test(test_window_domain_overflow),
        cmocka_unit_test(test_window_domain_region_out_of_range),
        cmocka_unit_test(test_window_block_max),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
