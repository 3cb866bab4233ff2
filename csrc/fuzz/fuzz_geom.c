/*
 * fuzz_geom.c - the window geometry (geom.c) and the read planner
 * (plan.c) against independent 128-bit references.
 *
 * One input is a sequence of operations, each chosen by one byte:
 *   floor/ceil division, box extents and element counts, window checks,
 *   window bounds, window domains (with the raw int64 parameters, edges
 *   like +-2^48, +-2^62 and INT64_MIN/MAX included), and a whole tensor:
 *   a small tensor with a cheap deterministic window function is created
 *   from decoded parameters and read through it_tensor_read with decoded
 *   boxes.  Every result of a small read is compared pixel by pixel with a
 *   direct computation (the fill folded with every valid window covering
 *   the pixel); every error must come through the core's error API; the
 *   cache invariants must hold after each read; and every core block must
 *   be freed at the end (it_alloc_live_blocks).  ASan/UBSan/LSan catch the
 *   rest.
 */
#include "fuzz_common.h"

#include "it_cache.h"
#include "it_geom.h"
#include "it_tensor.h"

typedef __int128 i128;

#define L62 ((i128)IT_COORD_LIMIT)

static i128 fdiv128(i128 a, i128 b)
{
    i128 q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static i128 cdiv128(i128 a, i128 b)
{
    i128 q = a / b;
    return (a % b != 0 && ((a < 0) == (b < 0))) ? q + 1 : q;
}

/* a value >= 1 from any int64 */
static int64_t positive(int64_t v)
{
    if (v == INT64_MIN)
        return INT64_MAX;
    if (v < 0)
        v = -v;
    return v ? v : 1;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ------------------------------------------------------------------ */
/* pure geometry                                                        */

static void op_div(fz_reader *r)
{
    int64_t a = fz_i64(r), b = positive(fz_i64(r));
    int64_t f = it_floordiv(a, b), c = it_ceildiv(a, b);
    FZ_CHECK((i128)f == fdiv128(a, b), "floordiv(%lld, %lld) = %lld", (long long)a, (long long)b,
             (long long)f);
    FZ_CHECK((i128)c == cdiv128(a, b), "ceildiv(%lld, %lld) = %lld", (long long)a, (long long)b,
             (long long)c);
}

static i128 ref_extent(int64_t start, int64_t stop, int64_t step)
{
    if (stop <= start)
        return 0;
    return cdiv128((i128)stop - start, step);
}

static void decode_box(fz_reader *r, it_box *b, int ndim, int near)
{
    memset(b, 0, sizeof *b);
    b->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        if (near) { /* a small box somewhere (maybe at an edge) */
            b->start[d] = fz_i64(r);
            uint8_t k = fz_u8(r);
            if (k < 200) {
                b->stop[d] = (int64_t)((uint64_t)b->start[d] + (uint64_t)(k % 13));
                b->step[d] = 1 + fz_u8(r) % 4;
            } else {
                b->stop[d] = fz_i64(r);
                b->step[d] = k < 230 ? positive(fz_i64(r)) : fz_i64(r);
            }
        } else {
            b->start[d] = fz_i64(r);
            b->stop[d] = fz_i64(r);
            b->step[d] = positive(fz_i64(r));
        }
    }
}

static void op_box(fz_reader *r)
{
    it_box b;
    decode_box(r, &b, (int)fz_range(r, 1, IT_MAX_DIMS), fz_u8(r) & 1);
    i128 prod = 1;
    int zero = 0;
    for (int d = 0; d < b.ndim; d++) {
        if (b.step[d] < 1)
            b.step[d] = 1;
        i128 e = ref_extent(b.start[d], b.stop[d], b.step[d]);
        i128 want = e > INT64_MAX ? INT64_MAX : e;
        int64_t got = it_box_extent(&b, d);
        FZ_CHECK((i128)got == want, "box_extent([%lld, %lld) step %lld) = %lld",
                 (long long)b.start[d], (long long)b.stop[d], (long long)b.step[d], (long long)got);
        zero |= e == 0;
        if (prod <= ((i128)1 << 62)) /* beyond, it is too big anyway (unless a later e is 0) */
            prod *= e;
    }
    int64_t n = -5;
    it_error_clear();
    int rc = it_box_numel(&b, &n);
    if (zero) {
        FZ_CHECK(rc == IT_OK && n == 0, "box_numel of an empty box: rc %d, n %lld", rc, (long long)n);
    } else if (prod > INT64_MAX / 16) {
        FZ_CHECK(rc == IT_ETOOBIG, "box_numel of a box of >= 2^59 elements: rc %d", rc);
        fz_check_error(rc, "it_box_numel");
    } else {
        FZ_CHECK(rc == IT_OK && (i128)n == prod, "box_numel: rc %d n %lld", rc, (long long)n);
    }
}

static int ref_window_ok(const it_window *w)
{
    if (w->ndim < 1 || w->ndim > IT_MAX_DIMS || w->ncoords < 1 || w->ncoords > IT_MAX_DIMS)
        return 0;
    for (int d = 0; d < w->ndim; d++) {
        if (w->size[d] < 1 || w->size[d] > IT_PARAM_LIMIT || w->stride[d] < 1 ||
            w->stride[d] > IT_PARAM_LIMIT || w->offset[d] < -IT_PARAM_LIMIT ||
            w->offset[d] > IT_PARAM_LIMIT)
            return 0;
        if (w->map[d] != IT_MAP_FIXED && (w->map[d] < 0 || w->map[d] >= w->ncoords))
            return 0;
    }
    return 1;
}

/* A window decoded loosely (wild = raw values) or as a valid one. */
static void decode_window(fz_reader *r, it_window *w, int ndim, int ncoords, int wild)
{
    memset(w, 0, sizeof *w);
    w->ndim = ndim;
    w->ncoords = ncoords;
    int nc = ncoords >= 1 && ncoords <= IT_MAX_DIMS ? ncoords : 1; /* for the map only */
    for (int d = 0; d < IT_MAX_DIMS; d++) {
        if (d >= ndim)
            break;
        if (wild) {
            w->size[d] = fz_i64(r);
            w->stride[d] = fz_i64(r);
            w->offset[d] = fz_i64(r);
        } else {
            w->size[d] = fz_u8(r) < 200 ? fz_range(r, 1, 5) : clamp(positive(fz_i64(r)), 1, IT_PARAM_LIMIT);
            w->stride[d] = fz_u8(r) < 200 ? fz_range(r, 1, 5) : clamp(positive(fz_i64(r)), 1, IT_PARAM_LIMIT);
            int64_t o = fz_i64(r);
            w->offset[d] = IT_MAX(IT_MIN(o, IT_PARAM_LIMIT), -IT_PARAM_LIMIT);
        }
        uint8_t k = fz_u8(r);
        w->map[d] = k < 160 ? d % nc : k < 200 ? IT_MAP_FIXED : (int)(k % (nc + 1)) - 1;
        if (wild && k >= 250)
            w->map[d] = (int)(int8_t)fz_u8(r);
    }
}

static void op_window(fz_reader *r)
{
    it_window w;
    uint8_t k = fz_u8(r);
    int ndim = k < 240 ? 1 + k % 4 : (int)(int8_t)fz_u8(r);
    int ncoords = fz_u8(r) < 240 ? ndim : (int)(int8_t)fz_u8(r);
    decode_window(r, &w, ndim > 0 && ndim <= IT_MAX_DIMS ? ndim : 1, ncoords, 1);
    w.ndim = ndim;
    it_error_clear();
    int rc = it_window_check(&w);
    int ok = ref_window_ok(&w);
    if (!ok) {
        FZ_CHECK(rc == IT_EINVAL, "window_check accepted a bad window (rc %d)", rc);
        fz_check_error(rc, "it_window_check");
        return;
    }
    FZ_CHECK(rc == IT_OK, "window_check refused a good window: %d (%s)", rc, it_error_message());
    /* bounds */
    int64_t co[IT_MAX_DIMS], s[IT_MAX_DIMS], e[IT_MAX_DIMS];
    for (int c = 0; c < w.ncoords; c++)
        co[c] = fz_i64(r);
    int inside = 1;
    i128 rs[IT_MAX_DIMS];
    for (int d = 0; d < w.ndim; d++) {
        rs[d] = w.offset[d] + (w.map[d] == IT_MAP_FIXED ? 0 : (i128)co[w.map[d]] * w.stride[d]);
        if (rs[d] < -L62 || rs[d] + w.size[d] > L62)
            inside = 0;
    }
    it_error_clear();
    rc = it_window_bounds(&w, co, s, e);
    if (!inside) {
        FZ_CHECK(rc == IT_ERANGE, "window_bounds of a window beyond 2^62: rc %d", rc);
        fz_check_error(rc, "it_window_bounds");
    } else {
        FZ_CHECK(rc == IT_OK, "window_bounds failed: %d (%s)", rc, it_error_message());
        for (int d = 0; d < w.ndim; d++)
            FZ_CHECK((i128)s[d] == rs[d] && (i128)e[d] == rs[d] + w.size[d],
                     "window_bounds dim %d: [%lld, %lld)", d, (long long)s[d], (long long)e[d]);
    }
}

/* Does the window with index co lie inside the shape and meet [a, b)? */
static int ref_meets(const it_window *w, const int64_t *shape, const i128 *co, const int64_t *a,
                     const int64_t *b)
{
    for (int d = 0; d < w->ndim; d++) {
        i128 s = w->offset[d] + (w->map[d] == IT_MAP_FIXED ? 0 : co[w->map[d]] * w->stride[d]);
        i128 e = s + w->size[d];
        if (shape[d] != IT_DIM_INFINITE && (s < 0 || e > shape[d]))
            return 0;
        if (!(s < b[d] && e > a[d]))
            return 0;
    }
    return 1;
}

static void op_domain(fz_reader *r)
{
    it_window w;
    int ndim = (int)fz_range(r, 1, 4);
    int ncoords = fz_u8(r) < 200 ? ndim : (int)fz_range(r, 1, 4);
    decode_window(r, &w, ndim, ncoords, 0);
    if (it_window_check(&w) != IT_OK) /* the decoder keeps it valid */
        FZ_CHECK(0, "decoded window invalid: %s", it_error_message());
    int64_t shape[IT_MAX_DIMS], a[IT_MAX_DIMS], b[IT_MAX_DIMS];
    int beyond = 0;
    for (int d = 0; d < ndim; d++) {
        uint8_t k = fz_u8(r);
        shape[d] = k < 128 ? IT_DIM_INFINITE
                   : k < 220 ? fz_range(r, 0, 64)
                             : clamp(positive(fz_i64(r)), 0, IT_COORD_LIMIT);
        a[d] = fz_i64(r);
        b[d] = fz_u8(r) < 128 ? (int64_t)((uint64_t)a[d] + fz_u8(r) % 16) : fz_i64(r);
        if (a[d] < -IT_COORD_LIMIT || a[d] > IT_COORD_LIMIT || b[d] < -IT_COORD_LIMIT ||
            b[d] > IT_COORD_LIMIT)
            beyond = 1;
    }
    int64_t lo[IT_MAX_DIMS], cnt[IT_MAX_DIMS], total = -7;
    it_error_clear();
    int rc = it_window_domain(&w, shape, a, b, lo, cnt, &total);
    if (beyond) {
        FZ_CHECK(rc == IT_ERANGE, "window_domain of a region beyond 2^62: rc %d", rc);
        fz_check_error(rc, "it_window_domain");
        return;
    }
    /* the reference: per coordinate the intersection of each dim's range */
    i128 rlo[IT_MAX_DIMS], rhi[IT_MAX_DIMS];
    int used[IT_MAX_DIMS] = {0}, empty = 0;
    for (int d = 0; d < ndim; d++) {
        i128 A = a[d], B = b[d], z = w.size[d], o = w.offset[d], s = w.stride[d];
        if (shape[d] != IT_DIM_INFINITE) {
            A = A > 0 ? A : 0;
            B = B < shape[d] ? B : shape[d];
        }
        if (A >= B) {
            empty = 1;
            continue;
        }
        if (w.map[d] == IT_MAP_FIXED) {
            if ((shape[d] != IT_DIM_INFINITE && (o < 0 || o + z > shape[d])) || o >= B || o + z <= A)
                empty = 1;
            continue;
        }
        i128 l = cdiv128(A - o - z + 1, s), h = fdiv128(B - 1 - o, s);
        if (shape[d] != IT_DIM_INFINITE) {
            i128 l2 = cdiv128(-o, s), h2 = fdiv128(shape[d] - z - o, s);
            l = l > l2 ? l : l2;
            h = h < h2 ? h : h2;
        }
        int c = w.map[d];
        if (used[c]) {
            l = l > rlo[c] ? l : rlo[c];
            h = h < rhi[c] ? h : rhi[c];
        }
        used[c] = 1;
        rlo[c] = l;
        rhi[c] = h;
    }
    i128 prod = 1;
    for (int c = 0; c < ncoords; c++) {
        if (!used[c])
            rlo[c] = rhi[c] = 0;
        if (rlo[c] > rhi[c])
            empty = 1;
        else { /* saturating at 2^63: anything above INT64_MAX is too many */
            i128 k = rhi[c] - rlo[c] + 1, cap = (i128)1 << 63;
            prod *= k < cap ? k : cap;
            prod = prod < cap ? prod : cap;
        }
    }
    if (empty) {
        FZ_CHECK(rc == IT_OK && total == 0, "window_domain of an empty domain: rc %d total %lld (%s)",
                 rc, (long long)total, it_error_message());
        return;
    }
    if (prod > INT64_MAX) {
        FZ_CHECK(rc == IT_ETOOBIG, "window_domain with > 2^63 windows: rc %d", rc);
        fz_check_error(rc, "it_window_domain");
        return;
    }
    FZ_CHECK(rc == IT_OK, "window_domain failed: %d (%s)", rc, it_error_message());
    FZ_CHECK((i128)total == prod, "window_domain total %lld, expected %lld", (long long)total,
             (long long)prod);
    for (int c = 0; c < ncoords; c++)
        FZ_CHECK((i128)lo[c] == rlo[c] && (i128)lo[c] + cnt[c] - 1 == rhi[c],
                 "window_domain coordinate %d: lo %lld count %lld, expected [%lld, %lld]", c,
                 (long long)lo[c], (long long)cnt[c], (long long)rlo[c], (long long)rhi[c]);
    /* and directly: the corners meet the region, one step outside does not */
    i128 co[IT_MAX_DIMS];
    for (int c = 0; c < ncoords; c++)
        co[c] = rlo[c];
    FZ_CHECK(ref_meets(&w, shape, co, a, b), "the first window of the domain misses the region");
    for (int c = 0; c < ncoords; c++)
        co[c] = rhi[c];
    FZ_CHECK(ref_meets(&w, shape, co, a, b), "the last window of the domain misses the region");
    for (int c = 0; c < ncoords; c++) {
        if (!used[c])
            continue;
        for (int k = 0; k < ncoords; k++)
            co[k] = rlo[k];
        co[c] = rlo[c] - 1;
        FZ_CHECK(!ref_meets(&w, shape, co, a, b), "a window before the domain meets the region");
        co[c] = rhi[c] + 1;
        FZ_CHECK(!ref_meets(&w, shape, co, a, b), "a window after the domain meets the region");
    }
}

/* ------------------------------------------------------------------ */
/* a tensor and its reads                                               */

typedef struct ftensor {
    it_tensor_spec spec;
    double fill;
    uint64_t seed;
    long windows; /* computed so far */
} ftensor;

#define MAX_WINDOWS_PER_CASE 200000 /* a planner that computes more is too slow to fuzz */

/* value of pixel local[] of window co[] */
static double wvalue(const ftensor *t, const int64_t *co, const int64_t *local)
{
    uint64_t h = t->seed;
    for (int c = 0; c < t->spec.ndim; c++) {
        h ^= (uint64_t)co[c] + 0x9E3779B97F4A7C15ull * (uint64_t)(c + 1);
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    int64_t v = (int64_t)(h % 13) - 6;
    for (int d = 0; d < t->spec.ndim; d++)
        v += local[d] * (d + 1);
    return (double)v;
}

static int window_valid(const it_window *w, const int64_t *shape, const int64_t *co)
{
    int followed[IT_MAX_DIMS] = {0};
    for (int d = 0; d < w->ndim; d++)
        if (w->map[d] != IT_MAP_FIXED)
            followed[w->map[d]] = 1;
    for (int c = 0; c < w->ncoords; c++)
        if (!followed[c] && co[c] != 0)
            return 0;
    for (int d = 0; d < w->ndim; d++) {
        i128 s = w->offset[d] + (w->map[d] == IT_MAP_FIXED ? 0 : (i128)co[w->map[d]] * w->stride[d]);
        /* (a window may stick out beyond +-2^62 when it meets a pixel
         * inside: the core computes it, and it counts) */
        if (shape[d] != IT_DIM_INFINITE && (s < 0 || s + w->size[d] > shape[d]))
            return 0;
    }
    return 1;
}

/* (memcpy: spec.fill is a byte array with no alignment) */
static void store_el(it_dtype dt, void *p, double v)
{
    double f64 = v;
    float f32 = (float)v;
    int64_t i64 = (int64_t)v;
    int32_t i32 = (int32_t)v;
    switch (dt) {
    case IT_F64: memcpy(p, &f64, 8); break;
    case IT_F32: memcpy(p, &f32, 4); break;
    case IT_I64: memcpy(p, &i64, 8); break;
    case IT_I32: memcpy(p, &i32, 4); break;
    default: abort();
    }
}

static double load_el(it_dtype dt, const void *p)
{
    double f64;
    float f32;
    int64_t i64;
    int32_t i32;
    switch (dt) {
    case IT_F64: memcpy(&f64, p, 8); return f64;
    case IT_F32: memcpy(&f32, p, 4); return f32;
    case IT_I64: memcpy(&i64, p, 8); return (double)i64;
    case IT_I32: memcpy(&i32, p, 4); return i32;
    default: abort();
    }
}

static int ft_compute(void *user, it_batch *b)
{
    ftensor *t = user;
    const it_window *w = &t->spec.window;
    int nd = t->spec.ndim;
    size_t es = it_dtype_size(t->spec.dtype);
    FZ_CHECK(b->n >= 1 && b->n <= t->spec.batch_size, "batch of %lld windows", (long long)b->n);
    FZ_CHECK(b->ncoords == nd && b->nargs == 0, "batch ncoords %d nargs %d", b->ncoords, b->nargs);
    t->windows += (long)b->n;
    if (t->windows > MAX_WINDOWS_PER_CASE)
        return it_error_set(IT_ECALLBACK, "the fuzz window function gives up after %d windows",
                            MAX_WINDOWS_PER_CASE);
    int64_t wn = 1;
    for (int d = 0; d < nd; d++)
        wn *= w->size[d];
    char *block = malloc((size_t)(wn * b->n) * es);
    FZ_CHECK(block != NULL, "out of memory in the window function");
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t *co = b->coords + i * nd;
        FZ_CHECK(window_valid(w, t->spec.shape, co), "compute got an invalid window index");
        if (i > 0) {
            int c = 0;
            while (c < nd && co[c] == co[c - nd])
                c++;
            FZ_CHECK(c < nd && co[c] > co[c - nd], "batch not in increasing lexicographic order");
        }
        it_view *v = &b->out[i];
        fz_contiguous_view(v, block + (size_t)(i * wn) * es, t->spec.dtype, nd, w->size);
        int64_t k[IT_MAX_DIMS] = {0};
        for (int64_t j = 0; j < wn; j++) {
            store_el(t->spec.dtype, (char *)v->data + j * (int64_t)es, wvalue(t, co, k));
            for (int d = nd - 1; d >= 0 && ++k[d] == w->size[d]; d--)
                k[d] = 0;
        }
    }
    b->out_owner = block;
    return IT_OK;
}

static void ft_release(void *user, it_batch *b) { free(b->out_owner); }

static double fold(it_combine op, double a, double b)
{
    return op == IT_COMBINE_SUM ? a + b : op == IT_COMBINE_MAX ? (a > b ? a : b) : (a < b ? a : b);
}

/* The expected value of pixel p: the fill folded with every valid window
 * covering it, in any order (SUM of small integers is exact). */
static double ref_pixel(const ftensor *t, const int64_t *p)
{
    const it_window *w = &t->spec.window;
    int nd = t->spec.ndim;
    double v = t->fill;
    for (int d = 0; d < nd; d++)
        if (t->spec.shape[d] != IT_DIM_INFINITE && (p[d] < 0 || p[d] >= t->spec.shape[d]))
            return v;
    i128 lo[IT_MAX_DIMS], hi[IT_MAX_DIMS];
    int used[IT_MAX_DIMS] = {0};
    for (int d = 0; d < nd; d++) {
        if (w->map[d] == IT_MAP_FIXED) {
            if (!(w->offset[d] <= p[d] && p[d] < w->offset[d] + w->size[d]))
                return v;
            continue;
        }
        int c = w->map[d];
        i128 l = cdiv128((i128)p[d] - w->offset[d] - w->size[d] + 1, w->stride[d]);
        i128 h = fdiv128((i128)p[d] - w->offset[d], w->stride[d]);
        if (used[c]) {
            l = l > lo[c] ? l : lo[c];
            h = h < hi[c] ? h : hi[c];
        }
        used[c] = 1;
        lo[c] = l;
        hi[c] = h;
    }
    for (int c = 0; c < nd; c++) {
        if (!used[c])
            lo[c] = hi[c] = 0;
        if (lo[c] > hi[c])
            return v;
    }
    int64_t co[IT_MAX_DIMS];
    for (int c = 0; c < nd; c++)
        co[c] = (int64_t)lo[c];
    for (;;) {
        if (window_valid(w, t->spec.shape, co)) {
            int64_t local[IT_MAX_DIMS];
            for (int d = 0; d < nd; d++)
                local[d] = p[d] - (w->offset[d] + (w->map[d] == IT_MAP_FIXED ? 0 : co[w->map[d]] * w->stride[d]));
            v = fold(t->spec.combine, v, wvalue(t, co, local));
        }
        int c = nd - 1;
        while (c >= 0 && co[c] == (int64_t)hi[c]) {
            co[c] = (int64_t)lo[c];
            c--;
        }
        if (c < 0)
            break;
        co[c]++;
    }
    return v;
}

/*
 * The core refuses (IT_ERANGE, before any window is computed) a read whose
 * windows would reach past +-2^62 (plan.c, "reach"), although the box
 * itself lies inside.  Along a dim of window size z, the windows meeting
 * [a, b) lie in [a - z + 1, b + z - 1), so a refusal is right only when that
 * span crosses the limit on some sliding dim.  (This used to be a blanket
 * allowance within 2^50 of the limit, while the planner failed such reads
 * half-way; reproducer kept as corpus/fuzz_geom/read-near-limit-erange.)
 */
static int may_reach_past_limit(const ftensor *ft, const it_box *b)
{
    const it_window *w = &ft->spec.window;
    for (int d = 0; d < b->ndim; d++) {
        if (w->map[d] == IT_MAP_FIXED)
            continue;
        if ((i128)b->start[d] - w->size[d] + 1 < -(i128)IT_COORD_LIMIT ||
            (i128)b->stop[d] + w->size[d] - 1 > (i128)IT_COORD_LIMIT)
            return 1;
    }
    return 0;
}

static void check_read(ftensor *ft, it_tensor *t, it_cache *cache, const it_box *box, int flags)
{
    int nd = ft->spec.ndim;
    int bad = 0;
    i128 n = 1;
    for (int d = 0; d < nd; d++) {
        if (box->step[d] < 1 || box->start[d] < -IT_COORD_LIMIT || box->start[d] > IT_COORD_LIMIT ||
            box->stop[d] < -IT_COORD_LIMIT || box->stop[d] > IT_COORD_LIMIT)
            bad = 1;
        else
            n *= ref_extent(box->start[d], box->stop[d], box->step[d]);
    }
    if (!bad && n > 512)
        return; /* too big to check (or to hold) */
    /* Work: windows meeting the box's hull times their elements.  The
     * planner may plan the whole hull (a strided box's gaps included), so
     * a read of a few samples can legitimately need 2^40 windows; such
     * reads are skipped rather than run out of memory. */
    i128 work = 1;
    for (int d = 0; d < nd && !bad; d++) {
        const it_window *w = &ft->spec.window;
        i128 span = box->stop[d] > box->start[d] ? (i128)box->stop[d] - box->start[d] : 0;
        work *= w->size[d];
        if (w->map[d] != IT_MAP_FIXED)
            work *= (span + w->size[d]) / w->stride[d] + 2;
        if (work > ((i128)1 << 22))
            return;
    }
    if (getenv("FUZZ_DEBUG")) { /* describe the case (for reproducers) */
        const it_tensor_spec *sp = &ft->spec;
        fprintf(stderr, "tensor ndim %d dtype %d combine %d batch %lld\n", nd, (int)sp->dtype,
                (int)sp->combine, (long long)sp->batch_size);
        for (int d = 0; d < nd; d++)
            fprintf(stderr, "  dim %d: shape %lld tile %lld size %lld stride %lld offset %lld map %d\n", d,
                    (long long)sp->shape[d], (long long)sp->tile_shape[d], (long long)sp->window.size[d],
                    (long long)sp->window.stride[d], (long long)sp->window.offset[d], sp->window.map[d]);
        for (int d = 0; d < nd; d++)
            fprintf(stderr, "  read dim %d: [%lld, %lld) step %lld\n", d, (long long)box->start[d],
                    (long long)box->stop[d], (long long)box->step[d]);
    }
    it_buffer *out = NULL;
    it_error_clear();
    int rc = it_tensor_read(t, box, flags, &out);
    if (bad) {
        FZ_CHECK(rc != IT_OK, "a read of a box with a step < 1 or beyond 2^62 succeeded");
        FZ_CHECK(out == NULL, "a failed read returned a buffer");
    }
    if (rc != IT_OK) {
        fz_check_error(rc, "it_tensor_read");
        FZ_CHECK(out == NULL, "a failed read returned a buffer");
        /* the window function gives up on huge plans; nothing else may fail
         * a valid read of a small box */
        FZ_CHECK(bad || rc == IT_ECALLBACK || (flags & IT_READ_NO_COMPUTE) ||
                     (rc == IT_ERANGE && may_reach_past_limit(ft, box)),
                 "a read of a small box failed: %d (%s)", rc, it_error_message());
    } else {
        FZ_CHECK(out != NULL, "read returned no buffer");
        FZ_CHECK(out->ndim == nd && out->dtype == ft->spec.dtype, "read buffer ndim/dtype");
        size_t es = it_dtype_size(ft->spec.dtype);
        FZ_CHECK(out->nbytes == (size_t)n * es, "read buffer has %zu bytes, expected %lld",
                 out->nbytes, (long long)n * (long long)es);
        int64_t k[IT_MAX_DIMS] = {0}, p[IT_MAX_DIMS];
        for (int64_t j = 0; j < (int64_t)n; j++) {
            for (int d = 0; d < nd; d++)
                p[d] = box->start[d] + k[d] * box->step[d];
            double got = load_el(ft->spec.dtype, (char *)out->data + j * (int64_t)es);
            double want = ref_pixel(ft, p);
            FZ_CHECK(got == want, "pixel %lld (%lld, %lld, %lld) reads %g, expected %g", (long long)j,
                     (long long)p[0], nd > 1 ? (long long)p[1] : 0LL, nd > 2 ? (long long)p[2] : 0LL,
                     got, want);
            for (int d = nd - 1; d >= 0 && ++k[d] == out->shape[d]; d--)
                k[d] = 0;
        }
        it_buffer_free(out);
    }
    it_error_clear();
    rc = it_cache_check(cache);
    FZ_CHECK(rc == IT_OK, "cache invariant broken after a read: %s", it_error_message());
}

/*
 * Tiles over 16 MiB are not fuzzed: a read allocates whole tiles, and a
 * tensor with big tiles asked for them.  (A picked tile extent used to be a
 * multiple of the stride, so a sparse window, size 1 and stride 7e8, got a
 * 5.9 GB tile for a one-pixel read: corpus/fuzz_geom/picked-tile-6gb.  The
 * estimate below still allows for a stride's worth.)
 */
static int tile_too_big(const it_tensor_spec *sp)
{
    i128 bytes = (i128)it_dtype_size(sp->dtype);
    for (int d = 0; d < sp->ndim; d++) {
        i128 picked = sp->window.map[d] == IT_MAP_FIXED ? sp->window.size[d] : (i128)sp->window.stride[d] + 8192;
        i128 ts = sp->shape[d] != IT_DIM_INFINITE ? sp->shape[d] : sp->tile_shape[d] > 0 ? sp->tile_shape[d] : picked;
        bytes *= ts > 0 ? ts : 1;
        if (bytes > ((i128)1 << 24))
            return 1;
    }
    return 0;
}

static void op_tensor(fz_reader *r)
{
    static const it_dtype dts[] = {IT_F64, IT_F32, IT_I64, IT_I32};
    static const it_combine ops[] = {IT_COMBINE_SUM, IT_COMBINE_MAX, IT_COMBINE_MIN};
    ftensor *ft = calloc(1, sizeof *ft);
    FZ_CHECK(ft != NULL, "out of memory");
    int nd = (int)fz_range(r, 1, 3);
    it_tensor_spec *sp = &ft->spec;
    sp->ndim = nd;
    sp->dtype = dts[fz_u8(r) % 4];
    sp->combine = ops[fz_u8(r) % 3];
    sp->device_type = IT_DEVICE_CPU;
    sp->batch_size = fz_range(r, 1, 5);
    ft->fill = (double)((int)fz_u8(r) % 7 - 3);
    store_el(sp->dtype, sp->fill, ft->fill);
    ft->seed = fz_u8(r);
    for (int d = 0; d < nd; d++) {
        uint8_t k = fz_u8(r);
        if (k < 140) {
            sp->shape[d] = IT_DIM_INFINITE;
        } else if (k < 240) {
            sp->shape[d] = fz_range(r, 0, 40);
        } else { /* only extents the core must refuse, or small ones */
            int64_t e = fz_i64(r);
            sp->shape[d] = e >= 0 && e < ((int64_t)1 << 41) ? e % 41 : e;
        }
        uint8_t tk = fz_u8(r);
        sp->tile_shape[d] = tk < 100 ? 0 : tk < 240 ? fz_range(r, 1, 16) : fz_i64(r);
    }
    decode_window(r, &sp->window, nd, nd, 0);
    if (fz_u8(r) >= 250) { /* a wild window the core must refuse */
        it_window w;
        decode_window(r, &w, nd, nd, 1);
        sp->window = w;
    }
    int shape_ok = 1;
    for (int d = 0; d < nd; d++)
        if (sp->shape[d] != IT_DIM_INFINITE && (sp->shape[d] < 0 || sp->shape[d] > IT_COORD_LIMIT))
            shape_ok = 0;
    if (tile_too_big(sp)) {
        free(ft);
        return;
    }
    int64_t byte_limit = fz_u8(r) < 128 ? -1 : fz_range(r, 0, 1 << 16);
    it_cache *cache = NULL;
    it_tensor *t = NULL;
    FZ_CHECK(it_cache_create(byte_limit, -1, &cache) == IT_OK, "cache_create");
    static const it_tensor_ops tops = {ft_compute, ft_release, NULL, NULL, NULL};
    it_error_clear();
    int rc = it_tensor_create(cache, sp, &tops, ft, &t);
    if (rc != IT_OK) {
        fz_check_error(rc, "it_tensor_create");
        FZ_CHECK(!shape_ok || !ref_window_ok(&sp->window) || rc == IT_ETOOBIG || rc == IT_EINVAL,
                 "tensor_create failed: %d (%s)", rc, it_error_message());
    } else {
        FZ_CHECK(shape_ok && ref_window_ok(&sp->window), "tensor_create accepted a bad spec");
        int nreads = (int)fz_range(r, 1, 4);
        for (int i = 0; i < nreads && r->n > 0; i++) {
            it_box box;
            decode_box(r, &box, nd, fz_u8(r) < 220);
            uint8_t k = fz_u8(r);
            int flags = k >= 240 ? IT_READ_NO_COMPUTE : 0;
            check_read(ft, t, cache, &box, flags);
            if (k % 16 == 1)
                it_tensor_clear(t);
            else if (k % 16 == 2)
                it_tensor_trim(t, fz_range(r, 0, 1 << 14));
        }
        it_tensor_unref(t);
    }
    it_cache_unref(cache);
    free(ft);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size};
    long live = it_alloc_live_blocks();
    for (int op = 0; op < 16 && r.n > 0; op++) {
        switch (fz_u8(&r) % 6) {
        case 0: op_div(&r); break;
        case 1: op_box(&r); break;
        case 2: op_window(&r); break;
        case 3: op_domain(&r); break;
        default: op_tensor(&r); break;
        }
    }
    FZ_CHECK(it_alloc_live_blocks() == live, "%ld core blocks leaked", it_alloc_live_blocks() - live);
    it_error_clear();
    return 0;
}
