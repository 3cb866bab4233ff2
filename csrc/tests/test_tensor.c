/*
 * test_tensor.c - the tensor node and its read engine (it_tensor.h).
 *
 * Every tensor here is a fake (it_test_util.h): its compute fills each
 * window with a deterministic function of the window index, counts calls
 * and checks the batches it is handed.  Each read is compared with a dense
 * brute-force reference that folds every window lying inside the finite
 * dims, in lexicographic window order, from the fill value.  After every
 * operation the cache must pass it_cache_check with nothing pinned, and
 * every test ends with as many live core allocations as it started with.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include "it_test_util.h"

#include <math.h>

#include <pthread.h>
#include <time.h>

#define L IT_COORD_LIMIT



/* A 1-d infinite float64 tensor: window size 4, stride 2, offset -1. */
static ft *mk1d(it_cache *c, int64_t size, int64_t stride, int64_t offset, int64_t tile)
{
    ft *f = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(f, &size, &stride, &offset, NULL);
    f->spec.tile_shape[0] = tile;
    ft_create_ok(f, c);
    return f;
}

static void read1(ft *f, int64_t a, int64_t b, int64_t step)
{
    it_box bx = mkbox(1, &a, &b, &step);
    ft_read_ok(f, &bx);
}

static void read2(ft *f, int64_t a0, int64_t b0, int64_t a1, int64_t b1, int64_t s0, int64_t s1)
{
    it_box bx = mkbox(2, (int64_t[]){a0, a1}, (int64_t[]){b0, b1}, (int64_t[]){s0, s1});
    ft_read_ok(f, &bx);
}

static int read_nc(ft *f, const it_box *b)
{
    return ft_read_check(f, b, IT_READ_NO_COMPUTE);
}

static int window_done(ft *f, const int64_t *coords)
{
    int done = -1;
    EXPECT_OK(it_tensor_window_done(f->t, coords, &done));
    assert_true(done == 0 || done == 1);
    return done;
}

/* ------------------------------------------------------------------ */
/* creation                                                             */

static ft *base_fake(void)
{
    ft *f = ft_new(2, (int64_t[]){4, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){1, 3}, NULL, NULL);
    return f;
}

#define EXPECT_CREATE_FAILS(f, c, code1, code2)                                               \
    do {                                                                                      \
        it_error_clear();                                                                     \
        int rc_ = ft_create((f), (c));                                                        \
        if (rc_ != (code1) && rc_ != (code2))                                                 \
            fail_msg("%s:%d: it_tensor_create returned %d, expected %d (message \"%s\")",     \
                     __FILE__, __LINE__, rc_, (int)(code1), it_error_message());              \
        tu_check_recorded(rc_, "it_tensor_create", __FILE__, __LINE__);                       \
        assert_int_equal((f)->user_frees, 0); /* ownership only moves on success */          \
        (f)->t = NULL;                                                                        \
        ft_destroy(f);                                                                        \
    } while (0)

static int nop_compute(void *user, it_batch *b)
{
    (void)user;
    (void)b;
    return it_error_set(IT_ECALLBACK, "not expected to run");
}

static void test_create_errors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f;

    f = base_fake(); f->spec.ndim = IT_MAX_DIMS + 1;              EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.ndim = -1;                           EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.shape[0] = -2;                       EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.window.ndim = 1;                     EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.window.ncoords = 3;                  EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.window.size[1] = 0;                  EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.window.stride[0] = -1;               EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.window.map[1] = 2;                   EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.batch_size = 0;                      EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.batch_size = -3;                     EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.nargs = -1;                          EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.dtype = IT_DTYPE_COUNT;              EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EDTYPE);
    f = base_fake(); f->spec.dtype = IT_C64;
    f->spec.combine = IT_COMBINE_MAX;                             EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EDTYPE);
    f = base_fake(); f->spec.device_type = 2; f->spec.devops = NULL; EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EDEVICE);

    /* args: a NULL array, a wrong args window, a NULL upstream */
    ft *up = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(up, (int64_t[]){2}, NULL, NULL, NULL);
    ft_create_ok(up, c);
    it_window aw = mkwin(1, (int64_t[]){3}, NULL, NULL, (int[]){1}, 2);
    f = base_fake(); ft_add_arg(f, up, &aw);
    f->spec.args = NULL;
    it_error_clear();
    {
        /* ft_create fills spec.args; build the bad spec by hand */
        f->spec.arg_windows = f->arg_windows;
        f->spec.args = NULL;
        it_tensor *t = NULL;
        int rc = it_tensor_create(c, &f->spec, ft_ops(), f, &t);
        assert_int_equal(rc, IT_EINVAL);
        tu_check_recorded(rc, "it_tensor_create", __FILE__, __LINE__);
        it_tensor *arr[1] = {NULL};
        f->spec.args = arr;
        rc = it_tensor_create(c, &f->spec, ft_ops(), f, &t);
        assert_int_equal(rc, IT_EINVAL);
        tu_check_recorded(rc, "it_tensor_create", __FILE__, __LINE__);
        f->spec.nargs = 0;
        f->spec.args = NULL;
        f->spec.arg_windows = NULL;
        assert_int_equal(f->user_frees, 0);
        ft_destroy(f);
    }
    aw = mkwin(2, (int64_t[]){3, 3}, NULL, NULL, (int[]){1, 0}, 2); /* upstream has 1 dim */
    f = base_fake(); ft_add_arg(f, up, &aw);                      EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_ESHAPE);
    aw = mkwin(1, (int64_t[]){3}, NULL, NULL, (int[]){0}, 1);     /* ncoords must be 2 */
    f = base_fake(); ft_add_arg(f, up, &aw);                      EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    aw = mkwin(1, (int64_t[]){0}, NULL, NULL, (int[]){0}, 2);     /* size 0 */
    f = base_fake(); ft_add_arg(f, up, &aw);                      EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);

    /* ops: missing compute; CUSTOM without blend */
    {
        f = base_fake();
        it_tensor_ops ops = *ft_ops();
        ops.compute = NULL;
        it_tensor *t = NULL;
        it_error_clear();
        int rc = it_tensor_create(c, &f->spec, &ops, f, &t);
        assert_int_equal(rc, IT_EINVAL);
        tu_check_recorded(rc, "it_tensor_create", __FILE__, __LINE__);
        assert_int_equal(f->user_frees, 0);
        ft_destroy(f);
    }

    /* a good spec works, and the user pointer is freed once at the end */
    f = base_fake();
    ft_create_ok(f, c);
    assert_ptr_equal(it_tensor_get_user(f->t), f);
    ft_destroy(f);
    ft_destroy(up);
    it_cache_unref(c);
    LEAK_END;
}

/* Tiles too large to allocate are refused, and the user pointer stays the
 * caller's: "takes ownership of user on success only". */
static void test_create_toobig_keeps_user(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = base_fake();
    f->spec.tile_shape[1] = (int64_t)1 << 45;
    EXPECT_CREATE_FAILS(f, c, IT_ETOOBIG, IT_EINVAL);
    it_cache_unref(c);
    LEAK_END;
}

/* "combine: SUM, MAX, MIN or CUSTOM" and "IT_EINVAL with a message for each
 * mistake": COPY, an out-of-range value, or CUSTOM without ops->blend. */
static void test_create_invalid_combine(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f;
    f = base_fake(); f->spec.combine = IT_COMBINE_COPY;  EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake(); f->spec.combine = (it_combine)42;   EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    f = base_fake();
    it_tensor_ops ops = *ft_ops();
    ops.compute = nop_compute;
    ops.blend = NULL;
    f->spec.combine = IT_COMBINE_CUSTOM;
    it_tensor *t = NULL;
    it_error_clear();
    int rc = it_tensor_create(c, &f->spec, &ops, f, &t);
    assert_int_equal(rc, IT_EINVAL);
    tu_check_recorded(rc, "it_tensor_create", __FILE__, __LINE__);
    assert_int_equal(f->user_frees, 0);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* A negative tile extent on an infinite dim is a mistake, not "pick one". */
static void test_create_negative_tile(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = base_fake();
    f->spec.tile_shape[1] = -4;
    EXPECT_CREATE_FAILS(f, c, IT_EINVAL, IT_EINVAL);
    it_cache_unref(c);
    LEAK_END;
}

/* No ops table at all: an error, not a crash. */
static void test_create_null_ops(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = base_fake();
    it_tensor *t = NULL;
    it_error_clear();
    int rc = it_tensor_create(c, &f->spec, NULL, f, &t);
    assert_int_equal(rc, IT_EINVAL);
    tu_check_recorded(rc, "it_tensor_create", __FILE__, __LINE__);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_spec_and_user(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *up = ft_new(3, (int64_t[]){2, INF, INF}, IT_F32);
    ft_set_window(up, (int64_t[]){1, 3, 3}, (int64_t[]){1, 2, 2}, NULL, NULL);
    ft_create_ok(up, c);
    ft *f = ft_new(2, (int64_t[]){INF, 6}, IT_F64);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){2, 1}, (int64_t[]){-1, 0}, NULL);
    it_window aw = mkwin(3, (int64_t[]){2, 4, 4}, (int64_t[]){1, 2, 2}, (int64_t[]){0, -1, -1},
                         (int[]){IT_MAP_FIXED, 0, 1}, 2);
    ft_add_arg(f, up, &aw);
    f->spec.batch_size = 3;
    f->spec.tile_shape[0] = 10;
    ft_create_ok(f, c);
    const it_tensor_spec *sp = it_tensor_get_spec(f->t);
    assert_non_null(sp);
    assert_int_equal(sp->ndim, 2);
    assert_int_equal(sp->shape[0], INF);
    assert_int_equal(sp->shape[1], 6);
    assert_int_equal(sp->dtype, IT_F64);
    assert_int_equal(sp->window.size[0], 2);
    assert_int_equal(sp->window.offset[0], -1);
    assert_int_equal(sp->nargs, 1);
    assert_ptr_equal(sp->args[0], up->t);
    assert_int_equal(sp->arg_windows[0].map[0], IT_MAP_FIXED);
    assert_int_equal(sp->arg_windows[0].size[2], 4);
    assert_int_equal(sp->combine, IT_COMBINE_SUM);

    /* the upstream stays alive while f references it */
    it_tensor_ref(up->t);
    it_tensor_unref(up->t);
    assert_int_equal(up->user_frees, 0);

    /* set_user frees the old pointer through user_free */
    ft *g = ft_new(2, (int64_t[]){INF, 6}, IT_F64);
    g->spec = f->spec;
    g->up[0] = up;
    g->arg_windows[0] = aw;
    g->batch_size_now = 3;
    g->t = f->t;
    g->cache = c;
    it_tensor_set_user(f->t, g);
    assert_int_equal(f->user_frees, 1);
    assert_ptr_equal(it_tensor_get_user(f->t), g);
    f->t = NULL;
    read2(g, -3, 5, 0, 6, 1, 1); /* the new user pointer is the one computing */
    assert_true(g->calls > 0);
    assert_int_equal(f->calls, 0);
    it_tensor_ref(g->t);
    it_tensor_unref(g->t);
    assert_int_equal(g->user_frees, 0);
    EXPECT_ERR(it_tensor_set_batch_size(g->t, 0), IT_EINVAL);
    EXPECT_ERR(it_tensor_set_batch_size(g->t, -1), IT_EINVAL);
    EXPECT_OK(it_tensor_set_batch_size(g->t, 5));
    ft_destroy(g);
    ft_destroy(f); /* its tensor belonged to g */
    ft_destroy(up);
    it_tensor_unref(NULL);
    it_cache_unref(c);
    LEAK_END;
}

static void test_tile_shape(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(3, (int64_t[]){5, INF, INF}, IT_F32);
    ft_set_window(f, (int64_t[]){1, 4, 3}, (int64_t[]){1, 3, 7}, NULL, NULL);
    f->spec.tile_shape[0] = 99; /* ignored: finite dims are whole */
    f->spec.tile_shape[1] = 12;
    f->spec.tile_shape[2] = 0;  /* pick one: a multiple of the stride */
    ft_create_ok(f, c);
    int64_t ts[IT_MAX_DIMS];
    it_tensor_tile_shape(f->t, ts);
    assert_int_equal(ts[0], 5);
    assert_int_equal(ts[1], 12);
    assert_true(ts[2] > 0);
    assert_int_equal(ts[2] % 7, 0);
    it_box b = mkbox(3, (int64_t[]){0, -3, 5}, (int64_t[]){5, 20, 40}, NULL);
    ft_read_ok(f, &b);
    ft_destroy(f);

    f = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(f, (int64_t[]){16}, (int64_t[]){16}, NULL, NULL);
    ft_create_ok(f, c);
    it_tensor_tile_shape(f->t, ts);
    assert_true(ts[0] > 0);
    assert_int_equal(ts[0] % 16, 0);
    assert_true(ts[0] >= 1024 && ts[0] <= 1024 * 1024); /* "near 64K elements" */
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* reads                                                                */

static void test_read_1d(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, 4, 2, -1, 8);
    f->once = f->once_per_read = f->check_hull = 1;
    read1(f, -10, 10, 1);
    long calls = f->calls;
    assert_int_equal(calls, 12); /* windows -6 .. 5 meet [-10, 10): 2i + 3 > -10, 2i - 1 < 10 */
    read1(f, -10, 10, 1);
    assert_int_equal(f->calls, calls); /* cached */
    read1(f, 5, 30, 3);
    read1(f, -3, 4, 2);
    calls = f->calls;
    read1(f, 0, 0, 1);
    read1(f, 7, 3, 1);
    read1(f, 1000, 1000, 5);
    assert_int_equal(f->calls, calls); /* empty boxes compute nothing */
    read1(f, 100, 101, 1);
    read1(f, -1000, -990, 4);
    /* windows done after their reads; a far window is not */
    for (int64_t i = -6; i <= 5; i++)
        assert_int_equal(window_done(f, &i), 1);
    int64_t far = 100000;
    assert_int_equal(window_done(f, &far), 0);
    assert_true(it_tensor_tiles(f->t) > 0);
    assert_int_equal(it_tensor_bytes(f->t), it_tensor_tiles(f->t) * tu_tile_bytes(f->t));
    ft_destroy(f);
    assert_int_equal(it_cache_tiles(c), 0);
    assert_int_equal(tu_cache_bytes(c), 0);
    it_cache_unref(c);
    LEAK_END;
}

static void test_read_2d_finite(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){5, INF}, IT_I32);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){1, 2}, (int64_t[]){0, -1}, NULL);
    f->fill = 7;
    f->spec.tile_shape[1] = 6;
    ft_create_ok(f, c);
    f->once = f->once_per_read = f->check_hull = 1;
    read2(f, 0, 5, 0, 10, 1, 1);
    read2(f, -2, 8, -5, 9, 1, 2);  /* rows outside [0, 5) read the fill */
    read2(f, 4, 5, -20, 20, 1, 3);
    read2(f, 10, 20, 0, 4, 1, 1);  /* entirely outside the finite dim */
    read2(f, -7, -2, 0, 4, 2, 1);
    read2(f, 0, 5, 30, 31, 4, 1);
    ft_destroy(f);

    /* windows taller than the finite dim are never computed */
    f = ft_new(2, (int64_t[]){3, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){4, 2}, NULL, NULL, NULL);
    f->fill = -1;
    ft_create_ok(f, c);
    read2(f, 0, 3, -10, 10, 1, 1);
    assert_int_equal(f->calls, 0);
    ft_destroy(f);

    /* the reference's example: (10, None) with windows (7, 64) */
    f = ft_new(2, (int64_t[]){10, INF}, IT_F32);
    ft_set_window(f, (int64_t[]){7, 64}, NULL, NULL, NULL);
    ft_create_ok(f, c);
    read2(f, 0, 10, 0, 64, 1, 1);
    assert_int_equal(f->calls, 1);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* Windows far apart (stride > size): whole tiles inside the box hold no
 * window at all, on either side of tiles that do. */
static void test_read_sparse_windows(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, 2, 100, 0, 10); /* windows [100 i, 100 i + 2), tiles of 10 */
    f->fill = 0;
    f->once = 1;
    read1(f, 0, 20, 1);    /* tile [0, 10) has window 0, tile [10, 20) none */
    read1(f, -15, 5, 1);   /* the empty tile first */
    read1(f, -250, 250, 1);
    ft_destroy(f);
    f = ft_new(2, (int64_t[]){INF, 3}, IT_F32);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){7, 1}, NULL, NULL);
    f->spec.tile_shape[0] = 3;
    f->fill = -2;
    ft_create_ok(f, c);
    read2(f, 0, 30, 0, 3, 1, 1);
    read2(f, -30, 30, -1, 4, 2, 1);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* dimension_map on the output window: a FIXED dim covering a whole finite
 * dim (the README's (None, 1, 2) case with size > 1), dims sharing a
 * coordinate, and a permuted map. */
static void test_read_output_map(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(3, (int64_t[]){3, INF, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){3, 2, 2}, (int64_t[]){1, 2, 1}, (int64_t[]){0, 0, 1},
                  (int[]){IT_MAP_FIXED, 1, 2});
    f->spec.tile_shape[1] = 4;
    f->spec.tile_shape[2] = 4;
    ft_create_ok(f, c);
    f->once = f->once_per_read = f->check_hull = 1;
    it_box b = mkbox(3, (int64_t[]){-1, -3, -2}, (int64_t[]){4, 6, 5}, NULL);
    ft_read_ok(f, &b);
    b = mkbox(3, (int64_t[]){0, 0, 0}, (int64_t[]){3, 9, 9}, (int64_t[]){2, 2, 3});
    ft_read_ok(f, &b);
    ft_destroy(f);

    /* diagonal windows: both dims follow coordinate 0 */
    f = ft_new(2, (int64_t[]){INF, INF}, IT_I64);
    ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 2}, (int64_t[]){0, 1}, (int[]){0, 0});
    f->spec.tile_shape[0] = 5;
    f->spec.tile_shape[1] = 3;
    ft_create_ok(f, c);
    f->once = f->once_per_read = f->check_hull = 1;
    read2(f, -6, 9, -6, 9, 1, 1);
    read2(f, -20, 20, -20, 20, 3, 2);
    ft_destroy(f);

    /* permuted: dim 0 follows coordinate 1 and dim 1 coordinate 0 */
    f = ft_new(2, (int64_t[]){6, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){2, 3}, NULL, (int[]){1, 0});
    ft_create_ok(f, c);
    f->once = f->once_per_read = f->check_hull = 1;
    read2(f, 0, 6, -6, 9, 1, 1);
    read2(f, -2, 8, 3, 20, 1, 1);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_batches(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    const int64_t sizes[] = {1, 2, 3, 7, 100};
    for (int k = 0; k < 5; k++) {
        ft *f = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(f, (int64_t[]){3, 3}, (int64_t[]){2, 2}, NULL, NULL);
        f->spec.batch_size = sizes[k];
        f->spec.tile_shape[0] = f->spec.tile_shape[1] = 8;
        ft_create_ok(f, c);
        f->once = f->once_per_read = f->check_hull = 1;
        read2(f, 0, 12, 0, 12, 1, 1); /* 49 windows */
        assert_true(f->max_batch <= sizes[k]);
        if (sizes[k] > 1)
            assert_true(f->max_batch >= 2);
        long w = f->windows_ok;
        assert_int_equal(w, 49);
        read2(f, -5, 3, 10, 20, 1, 2);
        EXPECT_OK(it_tensor_set_batch_size(f->t, 2));
        f->batch_size_now = 2;
        f->max_batch = 0;
        read2(f, 20, 30, 20, 30, 1, 1);
        assert_true(f->max_batch <= 2);
        ft_destroy(f);
    }
    it_cache_unref(c);
    LEAK_END;
}

static void test_output_layouts(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    for (int layout = 0; layout < 4; layout++) {
        ft *f = ft_new(3, (int64_t[]){INF, 4, INF}, IT_F32);
        ft_set_window(f, (int64_t[]){3, 2, 4}, (int64_t[]){2, 1, 3}, (int64_t[]){1, 0, -2}, NULL);
        f->layout = layout;
        f->spec.batch_size = 2;
        ft_create_ok(f, c);
        it_box b = mkbox(3, (int64_t[]){-4, -1, -5}, (int64_t[]){7, 5, 9}, NULL);
        ft_read_ok(f, &b);
        b = mkbox(3, (int64_t[]){0, 0, 0}, (int64_t[]){12, 4, 12}, (int64_t[]){3, 1, 2});
        ft_read_ok(f, &b);
        ft_destroy(f);
    }
    it_cache_unref(c);
    LEAK_END;
}

static void test_dtypes(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    const it_dtype dts[] = {IT_F64, IT_F32, IT_I64, IT_I32, IT_I16, IT_I8, IT_F16, IT_BF16};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        for (int comb = 0; comb < 3; comb++) {
            ft *f = ft_new(2, (int64_t[]){INF, 5}, dts[k]);
            ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 1}, NULL, NULL);
            f->modulus = 21; /* values in [-10, 10]: exact in every type, even summed */
            f->fill = comb == 1 ? -100 : comb == 2 ? 100 : 3;
            f->spec.combine = comb == 0 ? IT_COMBINE_SUM : comb == 1 ? IT_COMBINE_MAX : IT_COMBINE_MIN;
            f->layout = (int)k % 4;
            ft_create_ok(f, c);
            f->once = f->once_per_read = 1;
            read2(f, -3, 9, -1, 6, 1, 1);
            read2(f, 0, 20, 0, 5, 3, 2);
            ft_destroy(f);
        }
    }
    it_cache_unref(c);
    LEAK_END;
}

#ifndef TU_DEVICE
/* blend "mean": the weighted mean of the windows covering each pixel, with
 * the norm (the weights' sum, periodic with the stride) given by the caller,
 * against a direct sum over the windows; gaps hold the empty value. */
static void check_mean(int64_t stride)
{
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    int64_t shape[1] = {IT_DIM_INFINITE}, size[1] = {6}, step[1] = {stride}, offset[1] = {-1};
    ft *f = ft_new(1, shape, IT_F64);
    ft_set_window(f, size, step, offset, NULL);
    double weight[6] = {0.5, 1, 2, 2.5, 1, 0.25}, norm[16] = {0}, empty = -1.0;
    for (int64_t q = 0; q < stride; q++)
        for (int64_t j = 0; q + j * stride < 6; j++)
            norm[q] += weight[q + j * stride];
    it_mean m = {weight, norm, {stride}, {0}};
    memcpy(m.empty, &empty, sizeof empty);
    f->spec.mean = &m;
    ft_create_ok(f, c);
    for (int64_t st = 1; st <= 3; st++) {
        it_box box = {1, {-9}, {23}, {st}};
        it_buffer *buf = NULL;
        assert_int_equal(it_tensor_read(f->t, &box, 0, &buf), IT_OK);
        for (int64_t i = 0; i < buf->shape[0]; i++) {
            int64_t x = -9 + i * st;
            double num = 0, den = 0;
            for (int64_t k = -10; k <= 10; k++) {
                int64_t local = x - (offset[0] + k * stride);
                if (local >= 0 && local < 6) {
                    num += ft_base(f, &k, &local) * weight[local];
                    den += weight[local];
                }
            }
            double got = ((const double *)buf->data)[i], want = den > 0 ? num / den : empty;
            assert_true(fabs(got - want) <= 1e-12 * (1 + fabs(want)));
        }
        it_buffer_free(buf);
    }
    ft_check_errors(f);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_mean_blend(void **state)
{
    (void)state;
    check_mean(4); /* overlapping */
    check_mean(6); /* touching */
    check_mean(9); /* gaps: the empty value */
}

static void test_mean_refusals(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    int64_t shape[1] = {IT_DIM_INFINITE}, size[1] = {4}, step[1] = {2};
    double weight[4] = {1, 1, 1, 1}, norm[2] = {2, 2};
    it_mean m = {weight, norm, {2}, {0}};
    ft *f = ft_new(1, shape, IT_I32);
    ft_set_window(f, size, step, NULL, NULL);
    f->spec.mean = &m;
    assert_int_equal(ft_create(f, c), IT_EDTYPE); /* integers: no mean */
    f->spec.dtype = IT_F32;
    m.norm_shape[0] = 3;
    assert_int_equal(ft_create(f, c), IT_EINVAL); /* a norm of the wrong period */
    m.norm_shape[0] = 2;
    f->spec.combine = IT_COMBINE_MAX;
    assert_int_equal(ft_create(f, c), IT_EINVAL);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}
#endif

static void test_max_min(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    const double fills[] = {-1000, 0, 1000, -INFINITY, INFINITY};
    for (int k = 0; k < 5; k++) {
        for (int mx = 0; mx < 2; mx++) {
            ft *f = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
            ft_set_window(f, (int64_t[]){4, 3}, (int64_t[]){1, 2}, (int64_t[]){-2, 0}, NULL);
            f->spec.combine = mx ? IT_COMBINE_MAX : IT_COMBINE_MIN;
            f->fill = fills[k];
            f->spec.tile_shape[0] = 5;
            f->spec.tile_shape[1] = 4;
            ft_create_ok(f, c);
            f->once = f->once_per_read = 1;
            read2(f, 3, 6, 3, 8, 1, 1);     /* a middle piece first */
            read2(f, -4, 10, -4, 12, 1, 1); /* then around it */
            read2(f, -20, 20, 1, 2, 3, 1);
            ft_destroy(f);
        }
    }
    it_cache_unref(c);
    LEAK_END;
}

/* CUSTOM "last wins": the lexicographically last covering window, whatever
 * the read order. */
static void custom_orders(int blend_kind, int64_t byte_limit, int nd, uint64_t seed, int once)
{
    it_cache *c = mkcache(byte_limit, -1);
    ft *f;
    if (nd == 1) {
        f = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(f, (int64_t[]){5}, (int64_t[]){2}, (int64_t[]){0}, NULL);
        f->spec.tile_shape[0] = 4;
    } else {
        f = ft_new(2, (int64_t[]){INF, 7}, IT_F64);
        ft_set_window(f, (int64_t[]){3, 3}, (int64_t[]){2, 1}, (int64_t[]){-1, 0}, NULL);
        f->spec.tile_shape[0] = 3;
    }
    f->spec.combine = IT_COMBINE_CUSTOM;
    f->blend_kind = blend_kind;
    f->fill = 1; /* a fold from the fill: 2*a + b shows whether the first blend ran */
    f->modulus = 1001;
    f->seed = seed;
    f->spec.batch_size = (int64_t)(seed % 3) + 1;
    ft_create_ok(f, c);
    f->once_per_read = 1;
    f->once = once || byte_limit < 0;
    if (nd == 1) {
        read1(f, 4, 8, 1);
        read1(f, 0, 8, 1);
        read1(f, -6, 20, 1);
        read1(f, 30, 31, 1);
        read1(f, 12, 40, 3);
        read1(f, 28, 29, 1);
    } else {
        read2(f, 4, 8, 2, 5, 1, 1);
        read2(f, 0, 8, 0, 7, 1, 1);
        read2(f, -6, 20, -1, 8, 1, 1);
        read2(f, 30, 31, 3, 4, 1, 1);
        read2(f, 12, 40, 0, 7, 3, 2);
        read2(f, 28, 29, 0, 7, 1, 1);
    }
    rng_t r = {seed};
    for (int it = 0; it < 30; it++) {
        int64_t a = rng_range(&r, -30, 30), len = rng_range(&r, 1, 12), st = rng_range(&r, 1, 3);
        if (nd == 1)
            read1(f, a, a + len, st);
        else
            read2(f, a, a + len, rng_range(&r, -2, 4), rng_range(&r, 3, 9), st, 1);
    }
    ft_destroy(f);
    it_cache_unref(c);
}

static void test_custom_last_wins(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int nd = 1; nd <= 2; nd++)
        for (int kind = 0; kind < 2; kind++) {
            custom_orders(kind, -1, nd, 100 + (uint64_t)kind, 0);
            custom_orders(kind, 0, nd, 200 + (uint64_t)kind, 0);
            custom_orders(kind, 400, nd, 300 + (uint64_t)kind, 0);
        }
    LEAK_END;
}

/* CUSTOM 2*a + b: not commutative, so only a lexicographic fold from the
 * fill gives the reference. */
static void test_custom_fold_order(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int nd = 1; nd <= 2; nd++)
        for (int kind = 2; kind < 4; kind++) {
            custom_orders(kind, -1, nd, 400 + (uint64_t)kind, 0);
            custom_orders(kind, 0, nd, 500 + (uint64_t)kind, 0);
            custom_orders(kind, 700, nd, 600 + (uint64_t)kind, 0);
        }
    LEAK_END;
}

/* docs/decisions-draft.md: "with an unbounded cache, [every window is
 * computed] at most once ever" -- for a custom blend too. */
static void test_custom_once_unbounded(void **state)
{
    (void)state;
    LEAK_BEGIN;
    custom_orders(0, -1, 1, 11, 1);
    custom_orders(2, -1, 2, 12, 1);
    LEAK_END;
}

/* "Every window is computed at most once per read (upstream windows too)":
 * a custom-blend upstream read through two args of one downstream. */
static void test_custom_upstream_two_args(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int kind = 0; kind < 4; kind += 2) {
        it_cache *c = mkcache(-1, -1);
        ft *a = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(a, (int64_t[]){3}, (int64_t[]){2}, NULL, NULL);
        a->spec.combine = IT_COMBINE_CUSTOM;
        a->blend_kind = kind;
        a->modulus = 11;
        a->name = "upstream";
        ft_create_ok(a, c);
        ft *b = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(b, (int64_t[]){2}, NULL, NULL, NULL);
        it_window a0 = mkwin(1, (int64_t[]){3}, (int64_t[]){2}, (int64_t[]){-1}, NULL, 1);
        it_window a1 = mkwin(1, (int64_t[]){4}, (int64_t[]){2}, (int64_t[]){2}, NULL, 1);
        ft_add_arg(b, a, &a0);
        ft_add_arg(b, a, &a1);
        b->check_args = 1;
        b->name = "downstream";
        ft_create_ok(b, c);
        a->once_per_read = b->once_per_read = 1;
        read1(b, 0, 10, 1);
        read1(b, -10, 30, 1);
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* A window contributed from elsewhere to a custom-blend tensor takes its
 * place in the lexicographic fold like a computed one. */
static void test_custom_contribute_order(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int kind = 0; kind < 4; kind++) {
        it_cache *c = mkcache(-1, -1);
        ft *f = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(f, (int64_t[]){3}, (int64_t[]){2}, (int64_t[]){1}, NULL);
        f->spec.combine = IT_COMBINE_CUSTOM;
        f->blend_kind = kind;
        f->fill = -1;
        f->modulus = 11;
        f->spec.tile_shape[0] = kind < 2 ? 1 : 0;
        ft_create_ok(f, c);
        f->once = 1;
        int64_t w = -3; /* covers [-5, -2); window -4 covers [-7, -4) */
        it_view v;
        void *mem = ft_window_values(f, &w, 0, &v);
        EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
        free(mem);
        tu_cache_ok(c);
        read1(f, -6, 2, 1);
        w = 4; /* a window inside tiles already complete: a no-op */
        mem = ft_window_values(f, &w, 0, &v);
        EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
        free(mem);
        read1(f, -6, 12, 1);
        ft_destroy(f);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* A blend that fails midway (IT_ECALLBACK) or returns a malformed result
 * fails the read with a message and leaves consistent state: later reads
 * fold every window exactly once, in order. */
static void test_custom_blend_failure(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int mode = 0; mode < 3; mode++) {
        for (long k = 1; k <= 12; k++) {
            it_cache *c = mkcache(-1, -1);
            ft *f = ft_new(2, (int64_t[]){INF, 3}, IT_F64);
            ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 1}, NULL, NULL);
            f->spec.combine = IT_COMBINE_CUSTOM;
            f->blend_kind = (int)(k % 4);
            f->fill = 1;
            f->modulus = 11;
            f->spec.batch_size = 2;
            ft_create_ok(f, c);
            f->once_per_read = 1;
            it_box b = mkbox(2, (int64_t[]){-2, 0}, (int64_t[]){9, 3}, NULL);
            if (mode == 0) {
                f->blend_fail_call = k;
                int rc = ft_read_check(f, &b, 0);
                if (rc != IT_OK) {
                    assert_int_equal(rc, IT_ECALLBACK);
                    char want[64];
                    snprintf(want, sizeof want, "fake blend failed on call %ld", k);
                    assert_string_equal(f->last_msg, want);
                }
                f->blend_fail_call = 0;
            } else {
                f->blend_bad = mode; /* 1: wrong shape, 2: wrong dtype */
                int rc = ft_read_check(f, &b, 0);
                if (rc != IT_ESHAPE && rc != IT_EDTYPE)
                    fail_msg("a blend result of the wrong %s gave %d", mode == 1 ? "shape" : "dtype", rc);
                f->blend_bad = 0;
            }
            ft_read_ok(f, &b);
            it_box wide = mkbox(2, (int64_t[]){-8, 0}, (int64_t[]){14, 3}, NULL);
            ft_read_ok(f, &wide);
            ft_destroy(f);
            it_cache_unref(c);
        }
    }
    LEAK_END;
}

/* Downstream tensors hold references to their args: the upstream lives on
 * after its creator's reference goes, until the downstream goes. */
static void test_args_keep_upstream_alive(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *a = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(a, (int64_t[]){3}, (int64_t[]){2}, NULL, NULL);
    ft_create_ok(a, c);
    ft *b = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(b, (int64_t[]){2}, NULL, NULL, NULL);
    it_window aw = mkwin(1, (int64_t[]){4}, (int64_t[]){2}, (int64_t[]){-1}, NULL, 1);
    ft_add_arg(b, a, &aw);
    b->check_args = 1;
    ft_create_ok(b, c);
    it_tensor_unref(a->t); /* the creator's reference */
    assert_int_equal(a->user_frees, 0);
    read1(b, 0, 12, 1);
    read1(b, -9, 3, 2);
    it_tensor_unref(b->t);
    assert_int_equal(b->user_frees, 1);
    assert_int_equal(a->user_frees, 1); /* the last reference was b's */
    a->t = b->t = NULL;
    ft_destroy(b);
    ft_destroy(a);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* cache-facing operations                                              */

static void test_no_compute(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){INF, 6}, IT_F64);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){2, 3}, NULL, NULL);
    f->fill = 2;
    ft_create_ok(f, c);
    f->once = 1;
    it_box b = mkbox(2, (int64_t[]){-4, 0}, (int64_t[]){6, 6}, NULL);
    assert_int_equal(read_nc(f, &b), IT_ESTATE);
    assert_int_equal(f->calls, 0);
    ft_read_ok(f, &b);
    long calls = f->calls;
    assert_int_equal(read_nc(f, &b), IT_OK);
    it_box sub = mkbox(2, (int64_t[]){-3, 1}, (int64_t[]){5, 5}, (int64_t[]){2, 3});
    assert_int_equal(read_nc(f, &sub), IT_OK);
    it_box more = mkbox(2, (int64_t[]){-4, 0}, (int64_t[]){8, 6}, NULL);
    assert_int_equal(read_nc(f, &more), IT_ESTATE);
    assert_int_equal(f->calls, calls);
    ft_read_ok(f, &more);
    assert_int_equal(read_nc(f, &more), IT_OK);
    /* pixels no window can cover need no compute at all */
    it_box outside = mkbox(2, (int64_t[]){-4, 6}, (int64_t[]){4, 10}, NULL);
    int rc = read_nc(f, &outside);
    assert_true(rc == IT_OK || rc == IT_ESTATE);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_clear(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, 4, 2, -1, 8);
    ft *g = mk1d(c, 3, 3, 0, 6);
    f->once = g->once = 1;
    read1(f, -10, 30, 1);
    read1(g, -10, 30, 1);
    int64_t gbytes = it_tensor_bytes(g->t);
    assert_int_equal(tu_cache_bytes(c), it_tensor_bytes(f->t) + gbytes);
    it_tensor_clear(f->t);
    tu_cache_ok(c);
    assert_int_equal(it_tensor_tiles(f->t), 0);
    assert_int_equal(it_tensor_bytes(f->t), 0);
    assert_int_equal(tu_cache_bytes(c), gbytes); /* g is untouched */
    assert_int_equal(it_cache_tiles(c), it_tensor_tiles(g->t));
    int64_t w0 = 0;
    assert_int_equal(window_done(f, &w0), 0);
    assert_int_equal(window_done(g, &w0), 1);
    it_box b = mkbox(1, (int64_t[]){-10}, (int64_t[]){30}, NULL);
    assert_int_equal(read_nc(f, &b), IT_ESTATE);
    assert_int_equal(read_nc(g, &b), IT_OK);
    ft_forget(f);
    long calls = f->calls;
    read1(f, -10, 30, 1);
    assert_int_equal(f->calls - calls, calls); /* everything again, once */
    it_tensor_clear(f->t);
    it_tensor_clear(f->t); /* twice is fine */
    ft_forget(f);
    read1(f, 5, 6, 1);
    ft_destroy(f);
    ft_destroy(g);
    it_cache_unref(c);
    LEAK_END;
}

static void test_trim(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, 4, 4, 0, 16);
    it_box A = mkbox(1, (int64_t[]){0}, (int64_t[]){4}, NULL);
    it_box B = mkbox(1, (int64_t[]){1000}, (int64_t[]){1004}, NULL);
    it_box C = mkbox(1, (int64_t[]){-500}, (int64_t[]){-496}, NULL);
    ft_read_ok(f, &A);
    int64_t a_bytes = it_tensor_bytes(f->t);
    assert_true(a_bytes > 0);
    ft_read_ok(f, &B);
    int64_t b_bytes = it_tensor_bytes(f->t) - a_bytes;
    /* a limit it already meets evicts nothing */
    it_tensor_trim(f->t, a_bytes + b_bytes);
    tu_cache_ok(c);
    assert_int_equal(read_nc(f, &A), IT_OK);
    assert_int_equal(read_nc(f, &B), IT_OK);
    /* now A was used last: touch B again, then trim to B's size */
    assert_int_equal(read_nc(f, &B), IT_OK);
    it_tensor_trim(f->t, b_bytes);
    tu_cache_ok(c);
    assert_true(it_tensor_bytes(f->t) <= b_bytes);
    assert_int_equal(read_nc(f, &A), IT_ESTATE); /* least recently used: gone */
    assert_int_equal(read_nc(f, &B), IT_OK);
    /* A, B, C; touch A; trim to two reads' worth: B goes */
    ft_read_ok(f, &A);
    ft_read_ok(f, &C);
    assert_int_equal(read_nc(f, &A), IT_OK);
    it_tensor_trim(f->t, it_tensor_bytes(f->t) - b_bytes);
    tu_cache_ok(c);
    assert_int_equal(read_nc(f, &B), IT_ESTATE);
    assert_int_equal(read_nc(f, &A), IT_OK);
    assert_int_equal(read_nc(f, &C), IT_OK);
    /* trim to 0 drops everything; values come back on the next read */
    it_tensor_trim(f->t, 0);
    tu_cache_ok(c);
    assert_int_equal(it_tensor_bytes(f->t), 0);
    assert_int_equal(it_tensor_tiles(f->t), 0);
    assert_int_equal(tu_cache_bytes(c), 0);
    ft_read_ok(f, &A);
    ft_read_ok(f, &B);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_window_done(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){6, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){2, 4}, (int64_t[]){2, 2}, NULL, NULL);
    f->spec.tile_shape[1] = 8;
    ft_create_ok(f, c);
    int64_t w[2];
    for (w[0] = 0; w[0] < 3; w[0]++)
        for (w[1] = -3; w[1] < 5; w[1]++)
            assert_int_equal(window_done(f, w), 0);
    read2(f, 0, 6, 0, 8, 1, 1);
    for (w[0] = 0; w[0] < 3; w[0]++) {
        for (w[1] = -1; w[1] <= 3; w[1]++) /* the windows meeting [0, 8) */
            assert_int_equal(window_done(f, w), 1);
        w[1] = 40;
        assert_int_equal(window_done(f, w), 0);
    }
    it_tensor_clear(f->t);
    w[0] = 1;
    w[1] = 1;
    assert_int_equal(window_done(f, w), 0);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_contribute(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    it_view v;
    void *mem;

    /* on a fresh tensor: the contribution is never counted twice */
    ft *f = mk1d(c, 4, 2, 0, 16);
    f->once = 1;
    int64_t w = 3;
    mem = ft_window_values(f, &w, 0, &v);
    EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
    free(mem);
    tu_cache_ok(c);
    int done = window_done(f, &w);
    read1(f, 0, 16, 1);
    if (done)
        assert_int_equal(wtab_get(&f->total, &w), 0); /* done: not computed again */
    read1(f, -4, 20, 1);
    /* contributing a window every tile already has changes nothing */
    mem = ft_window_values(f, &w, 1000, &v);
    EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
    free(mem);
    w = 5;
    mem = ft_window_values(f, &w, 1000, &v);
    EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
    free(mem);
    tu_cache_ok(c);
    read1(f, -4, 20, 1);
    ft_destroy(f);

    /* into a cached tile that lacks it: window 1 of a tile [0, 16) whose
     * window 0 was read; its contributed values are what reads see */
    f = mk1d(c, 4, 4, 0, 16);
    f->once = 1;
    read1(f, 0, 1, 1);
    w = 1;
    assert_int_equal(window_done(f, &w), 0);
    mem = ft_window_values(f, &w, 100, &v);
    EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
    free(mem);
    tu_cache_ok(c);
    assert_int_equal(window_done(f, &w), 1);
    it_box b = mkbox(1, (int64_t[]){0}, (int64_t[]){16}, NULL);
    assert_int_equal(read_nc(f, &b), IT_ESTATE); /* windows 2 and 3 are missing */
    it_buffer *out = NULL;
    EXPECT_OK(it_tensor_read(f->t, &b, 0, &out));
    tu_buffer_flip(out);
    tu_cache_ok(c);
    assert_int_equal(wtab_get(&f->total, &w), 0);
    double ref[16];
    ft_reference(f, &b, ref);
    for (int i = 0; i < 16; i++) {
        double got = ((double *)out->data)[i], want = ref[i] + (i >= 4 && i < 8 ? 100 : 0);
        if (got != want)
            fail_msg("pixel %d reads %g, expected %g", i, got, want);
    }
    it_buffer_free(out);

    /* malformed contributions */
    w = 7;
    mem = ft_window_values(f, &w, 0, &v);
    v.shape[0] = 3;
    EXPECT_ERR(it_tensor_contribute(f->t, &w, &v), IT_ESHAPE);
    v.shape[0] = 4;
    v.ndim = 2;
    v.shape[1] = 1;
    EXPECT_ERR(it_tensor_contribute(f->t, &w, &v), IT_ESHAPE);
    v.ndim = 1;
    v.dtype = IT_F32;
    EXPECT_ERR(it_tensor_contribute(f->t, &w, &v), IT_EDTYPE);
    v.dtype = IT_F64;
    v.device_type = TU_DEV_TYPE == IT_DEVICE_CPU ? IT_DEVICE_CUDA : IT_DEVICE_CPU;
    EXPECT_ERR(it_tensor_contribute(f->t, &w, &v), IT_EDEVICE);
    v.device_type = TU_DEV_TYPE;
    v.device_id = TU_DEV_ID + 1;
    EXPECT_ERR(it_tensor_contribute(f->t, &w, &v), IT_EDEVICE);
    free(mem);
    tu_cache_ok(c);
    assert_int_equal(window_done(f, &w), 0);
    read1(f, 24, 32, 1);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* retype                                                               */

typedef struct conv_ctx {
    it_dtype from, to;
    long calls, fail_at;
    char err[200];
} conv_ctx;

#define CONV_FAIL(cc, ...)                                                       \
    do {                                                                         \
        snprintf((cc)->err, sizeof (cc)->err, __VA_ARGS__);                      \
        return it_error_set(IT_ECALLBACK, "converter: %s", (cc)->err);           \
    } while (0)

static int converter(void *ctx, const it_view *src, it_buffer *dst)
{
    conv_ctx *cc = ctx;
    cc->calls++;
    if (cc->fail_at && cc->calls == cc->fail_at)
        return it_error_set(IT_ECALLBACK, "converter refused tile %ld", cc->calls);
    if (src->dtype != cc->from || dst->dtype != cc->to || src->ndim != dst->ndim)
        CONV_FAIL(cc, "src dtype %d ndim %d, dst dtype %d ndim %d", (int)src->dtype,
                  src->ndim, (int)dst->dtype, dst->ndim);
    int nd = src->ndim;
    int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS], k[IT_MAX_DIMS] = {0}, n = 1;
    for (int d = 0; d < nd; d++) {
        if (src->shape[d] != dst->shape[d])
            CONV_FAIL(cc, "shapes differ in dim %d", d);
        hi[d] = src->shape[d] - 1;
        n *= src->shape[d];
    }
    if (!tu_buffer_contiguous(dst))
        CONV_FAIL(cc, "dst is not contiguous");
    if (n == 0)
        return IT_OK;
    size_t es = tu_elsize(dst->dtype);
    int64_t cst[IT_MAX_DIMS];
    char *clear = tu_clear_copy(src, cst);
    int64_t j = 0;
    do {
        double x = el_load(src->dtype, clear + tu_offset(nd, k, cst));
        el_store(dst->dtype, (char *)dst->data + j * (int64_t)es, x);
        j++;
    } while (tu_next_index(nd, k, lo, hi));
    free(clear);
    tu_buffer_flip(dst);
    return IT_OK;
}

static void test_retype(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){INF, 5}, IT_F64);
    ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 1}, NULL, NULL);
    f->spec.tile_shape[0] = 4;
    f->fill = 5;
    ft_create_ok(f, c);
    f->once = 1;
    it_box b = mkbox(2, (int64_t[]){-3, 0}, (int64_t[]){13, 5}, NULL);
    ft_read_ok(f, &b);
    int64_t bytes0 = it_tensor_bytes(f->t), tiles0 = it_tensor_tiles(f->t);
    int64_t weight0 = it_cache_weight(c);
    assert_true(tiles0 >= 2);

    /* a converter failing on the second tile changes nothing */
    float fill32 = 5.0f;
    conv_ctx cc = {IT_F64, IT_F32, 0, 2, ""};
    long live = it_alloc_live_blocks();
    EXPECT_ERR(it_tensor_retype(f->t, IT_F32, &fill32, converter, &cc), IT_ECALLBACK);
    assert_non_null(strstr(it_error_message(), "converter refused tile 2"));
    assert_int_equal(it_alloc_live_blocks(), live);
    tu_cache_ok(c);
    assert_int_equal(it_tensor_bytes(f->t), bytes0);
    assert_int_equal(it_tensor_tiles(f->t), tiles0);
    assert_int_equal(read_nc(f, &b), IT_OK); /* still float64, same values */

    /* float64 -> float32 */
    cc.calls = 0;
    cc.fail_at = 0;
    EXPECT_OK(it_tensor_retype(f->t, IT_F32, &fill32, converter, &cc));
    assert_string_equal(cc.err, "");
    if (it_tensor_canonical(f->t)) /* the parts of windows waiting on tiles too */
        assert_true(cc.calls >= tiles0);
    else
        assert_int_equal(cc.calls, tiles0);
    f->spec.dtype = IT_F32;
    tu_cache_ok(c);
    assert_int_equal(it_tensor_tiles(f->t), tiles0);
    assert_int_equal(it_tensor_bytes(f->t) * 2, bytes0);
    assert_int_equal(tu_cache_bytes(c), bytes0 / 2);
    assert_int_equal(it_cache_weight(c), weight0); /* tile and window bytes both halve */
    assert_int_equal(read_nc(f, &b), IT_OK);
    /* new windows are computed in the new dtype */
    read2(f, 10, 30, -2, 7, 1, 1);

    /* float32 -> int32 with a new fill */
    int32_t fill_i = 5;
    conv_ctx ci = {IT_F32, IT_I32, 0, 0, ""};
    EXPECT_OK(it_tensor_retype(f->t, IT_I32, &fill_i, converter, &ci));
    assert_string_equal(ci.err, "");
    if (it_tensor_canonical(f->t))
        assert_true(ci.calls >= it_tensor_tiles(f->t));
    else
        assert_int_equal(ci.calls, it_tensor_tiles(f->t));
    f->spec.dtype = IT_I32;
    assert_int_equal(read_nc(f, &b), IT_OK);
    read2(f, -30, 40, 0, 5, 2, 1);
    ft_destroy(f);

    /* a dtype the combine cannot handle is refused and changes nothing */
    f = ft_new(1, (int64_t[]){INF}, IT_F32);
    ft_set_window(f, (int64_t[]){3}, NULL, NULL, NULL);
    f->spec.combine = IT_COMBINE_MAX;
    f->fill = -50;
    ft_create_ok(f, c);
    read1(f, 0, 9, 1);
    float cfill[2] = {0, 0};
    conv_ctx cx = {IT_F32, IT_C64, 0, 0, ""};
    EXPECT_ERR2(it_tensor_retype(f->t, IT_C64, cfill, converter, &cx), IT_EDTYPE, IT_EINVAL);
    it_box b1 = mkbox(1, (int64_t[]){0}, (int64_t[]){9}, NULL);
    assert_int_equal(read_nc(f, &b1), IT_OK);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* lazy tiles (sum, zero fill: windows copied in until they overlap)    */

/* Reads in an order that leaves tiles partly written (only some of their
 * windows in), reads them, then adds overlapping or further windows, every
 * value checked against the brute-force reference.  Configurations: gaps
 * between windows, windows that tile the plane, overlapping windows, more
 * disjoint windows in a tile than a lazy tile keeps track of, a window added
 * from outside (contribute), and a dtype change of partly written tiles. */
static void test_lazy_tiles(void **state)
{
    (void)state;
    LEAK_BEGIN;
    struct { int64_t size, stride, offset, tile; } cfg[] = {
        {3, 5, 1, 10},  /* gaps */
        {4, 4, 0, 8},   /* windows tile the plane: nothing left to zero */
        {5, 3, -1, 9},  /* overlapping: the second window fills the tile */
        {1, 2, 0, 128}, /* 64 disjoint windows per tile, beyond the lazy limit */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        for (int dims = 1; dims <= 2; dims++) {
            it_cache *c = mkcache(-1, -1);
            ft *f = dims == 1 ? ft_new(1, (int64_t[]){INF}, IT_F64) : ft_new(2, (int64_t[]){INF, INF}, IT_F32);
            int64_t size[2] = {cfg[i].size, 3}, stride[2] = {cfg[i].stride, 2}, off[2] = {cfg[i].offset, 1};
            ft_set_window(f, size, stride, off, NULL);
            f->spec.tile_shape[0] = cfg[i].tile;
            f->spec.tile_shape[1] = 6;
            ft_create_ok(f, c);
            if (dims == 1) {
                read1(f, 3, 4, 1);     /* one window of a tile */
                read1(f, 0, 12, 1);    /* the rest of it, and the next */
                read1(f, -20, 40, 3);  /* steps over partly written tiles */
                read1(f, -40, 300, 1);
            } else {
                read2(f, 3, 4, 2, 3, 1, 1);
                read2(f, 0, 12, -5, 9, 1, 1);
                read2(f, -20, 40, -8, 12, 3, 2);
                read2(f, -40, 300, -9, 15, 1, 1);
            }
            ft_destroy(f);
            it_cache_unref(c);
        }
    }

    /* a window added from outside lands in a lazy tile; the tile is read
     * around it, then a dtype change converts a partly written tile */
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(f, (int64_t[]){3}, (int64_t[]){5}, NULL, NULL);
    f->spec.tile_shape[0] = 20;
    ft_create_ok(f, c);
    int64_t w = 2; /* covers [10, 13) */
    it_view v;
    void *mem = ft_window_values(f, &w, 0, &v);
    EXPECT_OK(it_tensor_contribute(f->t, &w, &v));
    free(mem);
    f->once = 1; /* window 2 must not be computed again */
    read1(f, 0, 15, 1);
    read1(f, 21, 22, 1); /* one window of the next tile */
    float fill32 = 0;
    conv_ctx cc = {IT_F64, IT_F32, 0, 0, ""};
    EXPECT_OK(it_tensor_retype(f->t, IT_F32, &fill32, converter, &cc));
    assert_string_equal(cc.err, "");
    f->spec.dtype = IT_F32;
    it_box b = mkbox(1, (int64_t[]){20}, (int64_t[]){25}, NULL);
    assert_int_equal(read_nc(f, &b), IT_OK); /* zeros around window 4, not old bytes */
    read1(f, -10, 60, 1);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* pipelines                                                            */

typedef struct pipe {
    ft *a, *b;
} pipe_t;

/* A: (2, inf, inf) float64, windows (1, 3, 3) stride (1, 2, 2), fill 3.
 * B: (inf, inf) float64, windows (2, 2), two args:
 *    arg 0 = A over [0, 2) x [2i - 1, 2i + 3) x [2j - 1, 2j + 3)  (FIXED dim)
 *    arg 1 = A over [-1, 3) x (j, i) permuted, reaching past A's finite dim. */
static pipe_t mkpipe(it_cache *c, int64_t batch, int take)
{
    pipe_t p;
    p.a = ft_new(3, (int64_t[]){2, INF, INF}, IT_F64);
    ft_set_window(p.a, (int64_t[]){1, 3, 3}, (int64_t[]){1, 2, 2}, NULL, NULL);
    p.a->fill = 3;
    p.a->seed = 77;
    p.a->spec.tile_shape[1] = 6;
    p.a->spec.tile_shape[2] = 6;
    p.a->layout = 3;
    ft_create_ok(p.a, c);
    p.b = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
    ft_set_window(p.b, (int64_t[]){2, 2}, NULL, NULL, NULL);
    it_window a0 = mkwin(3, (int64_t[]){2, 4, 4}, (int64_t[]){1, 2, 2}, (int64_t[]){0, -1, -1},
                         (int[]){IT_MAP_FIXED, 0, 1}, 2);
    it_window a1 = mkwin(3, (int64_t[]){4, 2, 3}, (int64_t[]){1, 1, 2}, (int64_t[]){-1, 0, 1},
                         (int[]){IT_MAP_FIXED, 1, 0}, 2);
    ft_add_arg(p.b, p.a, &a0);
    ft_add_arg(p.b, p.a, &a1);
    p.b->spec.batch_size = batch;
    p.b->spec.tile_shape[0] = 4;
    p.b->spec.tile_shape[1] = 4;
    p.b->check_args = 1;
    p.b->take_arg = take;
    ft_create_ok(p.b, c);
    return p;
}

static void pipe_free(pipe_t p)
{
    ft_destroy(p.b);
    ft_destroy(p.a);
}

static void pipeline_run(int64_t byte_limit, int64_t batch, int take)
{
    it_cache *c = mkcache(byte_limit, -1);
    pipe_t p = mkpipe(c, batch, take);
    p.a->once_per_read = p.b->once_per_read = 1;
    p.a->once = p.b->once = byte_limit < 0;
    p.a->check_hull = p.b->check_hull = 1;
    read2(p.b, 0, 4, 0, 4, 1, 1);
    read2(p.b, -5, 7, 2, 9, 1, 1);
    read2(p.b, 10, 20, -10, 0, 3, 2);
    read2(p.b, -5, 7, 2, 9, 1, 1);
    /* the upstream read directly agrees with what B was handed */
    it_box ab = mkbox(3, (int64_t[]){-1, -4, -4}, (int64_t[]){3, 10, 10}, NULL);
    ft_read_ok(p.a, &ab);
    if (byte_limit < 0) {
        it_box bb = mkbox(2, (int64_t[]){-5, 2}, (int64_t[]){7, 9}, NULL);
        long before = ft_calls_tree(p.b);
        assert_int_equal(read_nc(p.b, &bb), IT_OK);
        assert_int_equal(ft_calls_tree(p.b), before);
    }
    if (byte_limit == 0) {
        assert_int_equal(tu_cache_bytes(c), 0);
        assert_int_equal(it_cache_tiles(c), 0);
    }
    pipe_free(p);
    it_cache_unref(c);
}

static void test_pipeline(void **state)
{
    (void)state;
    LEAK_BEGIN;
    pipeline_run(-1, 1, 0);
    pipeline_run(-1, 3, 1);
    pipeline_run(-1, 50, 0);
    LEAK_END;
}

static void test_pipeline_bounded(void **state)
{
    (void)state;
    LEAK_BEGIN;
    pipeline_run(0, 1, 1);
    pipeline_run(0, 4, 0);
    pipeline_run(3000, 2, 0);
    pipeline_run(20000, 3, 1);
    LEAK_END;
}

/* B's compute reads A itself (a nested read in its own context). */
static void test_nested_read(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int k = 0; k < 3; k++) {
        int64_t limit = k == 0 ? -1 : k == 1 ? 0 : 2000;
        it_cache *c = mkcache(limit, -1);
        ft *a = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(a, (int64_t[]){3, 3}, (int64_t[]){2, 2}, NULL, NULL);
        a->spec.tile_shape[0] = a->spec.tile_shape[1] = 4;
        ft_create_ok(a, c);
        ft *b = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(b, (int64_t[]){2, 3}, (int64_t[]){2, 2}, NULL, NULL);
        b->spec.tile_shape[0] = b->spec.tile_shape[1] = 4;
        b->spec.batch_size = 2;
        b->nested = a;
        ft_create_ok(b, c);
        b->once_per_read = 1;
        b->once = limit < 0;
        read2(b, 0, 8, 0, 8, 1, 1);
        read2(b, -6, 3, 4, 12, 1, 1);
        assert_true(b->nested_reads > 0);
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* failures                                                             */

static void test_callback_failure(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    long needed = 0;
    for (long k = 1;; k++) {
        ft *f = ft_new(2, (int64_t[]){INF, 6}, IT_F64);
        ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 2}, (int64_t[]){-1, 0}, NULL);
        f->spec.tile_shape[0] = 4;
        f->spec.batch_size = 2;
        f->spec.combine = (k % 2) ? IT_COMBINE_SUM : IT_COMBINE_CUSTOM;
        f->blend_kind = 2;
        ft_create_ok(f, c);
        f->once = 1;
        f->once_per_read = 1;
        f->fail_call = k;
        it_box b = mkbox(2, (int64_t[]){-4, 0}, (int64_t[]){12, 6}, NULL);
        int rc = ft_read_check(f, &b, 0);
        if (rc == IT_OK) {
            assert_true(f->calls < k);
            needed = f->calls;
            ft_destroy(f);
            break;
        }
        assert_int_equal(rc, IT_ECALLBACK);
        char want[64];
        snprintf(want, sizeof want, "fake compute failed on call %ld", k);
        assert_string_equal(f->last_msg, want); /* the callback's own message survives */
        assert_int_equal(f->failed_calls, 1);
        /* the state is consistent and a later read gives the right values,
         * without computing any window twice */
        f->fail_call = 0;
        ft_read_ok(f, &b);
        it_box wide = mkbox(2, (int64_t[]){-10, 0}, (int64_t[]){20, 6}, NULL);
        ft_read_ok(f, &wide);
        ft_destroy(f);
        assert_true(k < 1000);
    }
    assert_true(needed >= 4);

    /* every call failing from the third on; reads of what is cached still work */
    ft *f = mk1d(c, 4, 2, 0, 8);
    f->once = 1;
    read1(f, 0, 6, 1);
    f->fail_call = f->calls + 1;
    f->fail_repeat = 1;
    it_box b = mkbox(1, (int64_t[]){0}, (int64_t[]){40}, NULL);
    assert_int_equal(ft_read_check(f, &b, 0), IT_ECALLBACK);
    assert_int_equal(ft_read_check(f, &b, 0), IT_ECALLBACK);
    read1(f, 1, 5, 1);
    f->fail_call = 0;
    f->fail_repeat = 0;
    ft_read_ok(f, &b);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_callback_failure_pipeline(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int side = 0; side < 2; side++) {
        for (long k = 1; k <= 12; k++) {
            it_cache *c = mkcache(side ? 4000 : -1, -1);
            pipe_t p = mkpipe(c, 2, (int)(k & 1));
            p.a->once = p.b->once = !side;
            ft *failing = side ? p.b : p.a;
            failing->fail_call = k;
            it_box b = mkbox(2, (int64_t[]){-3, 0}, (int64_t[]){5, 6}, NULL);
            int rc = ft_read_check(p.b, &b, 0);
            if (rc != IT_OK) {
                assert_int_equal(rc, IT_ECALLBACK);
                assert_non_null(strstr(p.b->last_msg, "fake compute failed"));
            }
            failing->fail_call = 0;
            ft_read_ok(p.b, &b);
            pipe_free(p);
            it_cache_unref(c);
        }
    }
    LEAK_END;
}

static void test_bad_output(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    const int codes[4] = {0, IT_ESHAPE, IT_EDTYPE, IT_EDEVICE};
    for (int bad = 1; bad <= 3; bad++) {
        ft *f = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 2}, NULL, NULL);
        f->spec.batch_size = 3;
        ft_create_ok(f, c);
        f->bad_out = bad;
        it_box b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){8, 8}, NULL);
        assert_int_equal(ft_read_check(f, &b, 0), codes[bad]);
        assert_true(f->ok_calls >= 1);
        f->bad_out = 0;
        ft_read_ok(f, &b);
        ft_read_ok(f, &b);
        ft_destroy(f);
    }
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* threads: callers serialise calls with one lock, which compute gives   */
/* up for a while (as f releases the GIL); a read meeting windows       */
/* another thread is computing waits for them with the lock released    */
/* (it_set_lock_hooks) instead of computing them again                  */

#define TH_THREADS 8
#define TH_READS 10

static pthread_mutex_t caller_lock = PTHREAD_MUTEX_INITIALIZER;
static void *caller_release(void)
{
    pthread_mutex_unlock(&caller_lock);
    return NULL;
}
static void caller_reacquire(void *token)
{
    (void)token;
    pthread_mutex_lock(&caller_lock);
}
static void pause_unlocked(void)
{
    pthread_mutex_unlock(&caller_lock);
    nanosleep(&(struct timespec){0, 100000}, NULL);
    pthread_mutex_lock(&caller_lock);
}

typedef struct th_job {
    ft *f;
    it_box box[TH_READS];
    it_buffer *out[TH_READS];
    int rc[TH_READS];
} th_job;

/* no cmocka assertion here (it would jump into the main thread's frame):
 * the main thread checks the results after the join */
static void *th_reader(void *arg)
{
    th_job *j = arg;
    pthread_mutex_lock(&caller_lock);
    for (int i = 0; i < TH_READS; i++)
        j->rc[i] = it_tensor_read(j->f->t, &j->box[i], 0, &j->out[i]);
    pthread_mutex_unlock(&caller_lock);
    return NULL;
}

static void threads_case(int custom, int64_t byte_limit, uint64_t seed)
{
    it_cache *c = mkcache(byte_limit, -1);
    ft *up = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
    ft_set_window(up, (int64_t[]){4, 4}, (int64_t[]){2, 2}, (int64_t[]){-1, 0}, NULL);
    up->seed = seed;
    ft_create_ok(up, c);
    ft *f = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
    ft_set_window(f, (int64_t[]){3, 3}, (int64_t[]){2, 2}, NULL, NULL);
    it_window aw = mkwin(2, (int64_t[]){5, 5}, (int64_t[]){2, 2}, (int64_t[]){-1, -1}, NULL, 2);
    ft_add_arg(f, up, &aw);
    f->seed = seed + 1;
    f->spec.batch_size = 3;
    if (custom) {
        f->spec.combine = IT_COMBINE_CUSTOM;
        f->blend_kind = 2; /* 2*a + b: order matters */
    }
    ft_create_ok(f, c);
    up->pause = f->pause = pause_unlocked;
    up->once = f->once = byte_limit < 0; /* nothing is lost, so never twice */

    static th_job jobs[TH_THREADS];
    pthread_t th[TH_THREADS];
    rng_t r = {seed};
    for (int k = 0; k < TH_THREADS; k++) {
        jobs[k].f = f;
        for (int i = 0; i < TH_READS; i++) {
            int64_t y = rng_range(&r, -20, 20), x = rng_range(&r, -20, 20);
            jobs[k].box[i] = mkbox(2, (int64_t[]){y, x},
                                   (int64_t[]){y + rng_range(&r, 1, 14), x + rng_range(&r, 1, 14)}, NULL);
            jobs[k].out[i] = NULL;
        }
    }
    it_set_lock_hooks(&(it_lock_hooks){caller_release, caller_reacquire});
    for (int k = 0; k < TH_THREADS; k++)
        assert_int_equal(pthread_create(&th[k], NULL, th_reader, &jobs[k]), 0);
    for (int k = 0; k < TH_THREADS; k++)
        pthread_join(th[k], NULL);
    it_set_lock_hooks(NULL);
    up->pause = f->pause = NULL;

    ft_check_errors(up);
    ft_check_errors(f);
    for (int k = 0; k < TH_THREADS; k++)
        for (int i = 0; i < TH_READS; i++) {
            if (jobs[k].rc[i] != IT_OK)
                fail_msg("thread %d read %d failed: %d", k, i, jobs[k].rc[i]);
            tu_buffer_flip(jobs[k].out[i]);
            ft_compare(f, &jobs[k].box[i], jobs[k].out[i]);
            it_buffer_free(jobs[k].out[i]);
        }
    tu_cache_ok(c);
    assert_int_equal(it_cache_pinned(c), 0);
    ft_destroy(f);
    ft_destroy(up);
    it_cache_unref(c);
}

static void test_threads_wait_for_claimed_windows(void **state)
{
    (void)state;
    LEAK_BEGIN;
    threads_case(0, -1, 41);
    threads_case(1, -1, 42);
    threads_case(0, 3000, 43); /* eviction pressure */
    threads_case(1, 3000, 44);
    LEAK_END;
}

static void test_cycle(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, 4, 4, 0, 8);
    f->read_self = 1;
    it_box b = mkbox(1, (int64_t[]){0}, (int64_t[]){8}, NULL);
    assert_int_equal(ft_read_check(f, &b, 0), IT_ECYCLE);
    assert_int_equal(f->inner_rc, IT_ECYCLE);
    f->read_self = 0;
    ft_read_ok(f, &b);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

static void test_read_errors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){INF, 4}, IT_F64);
    ft_set_window(f, (int64_t[]){1, 1}, NULL, NULL, NULL);
    ft_create_ok(f, c);
    it_buffer *out = NULL;
    it_box b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){4, 4}, (int64_t[]){0, 1});
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_EINVAL);
    b.step[0] = -1;
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_EINVAL);
    b = mkbox(1, (int64_t[]){0}, (int64_t[]){4}, NULL);
    EXPECT_ERR2(it_tensor_read(f->t, &b, 0, &out), IT_EINVAL, IT_ESHAPE);
    b = mkbox(2, (int64_t[]){-L - 1, 0}, (int64_t[]){0, 4}, NULL);
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ERANGE);
    b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){L + 1, 4}, NULL);
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ERANGE);
    b = mkbox(2, (int64_t[]){INT64_MIN, 0}, (int64_t[]){INT64_MAX, 4}, NULL);
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ERANGE);
    /* too many elements */
    b = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){(int64_t)1 << 60, 4}, NULL);
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ETOOBIG);
    assert_null(out);
    assert_int_equal(f->calls, 0);
    tu_cache_ok(c);
    b = mkbox(2, (int64_t[]){5, -3}, (int64_t[]){5, 10}, NULL);
    ft_read_ok(f, &b);
    assert_int_equal(f->calls, 0);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* An empty slice of a huge box is empty ("empty or reversed slices give a
 * dim of size 0 and compute nothing"), not too big. */
static void test_read_empty_huge_box(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){INF, 4}, IT_F64);
    ft_set_window(f, (int64_t[]){1, 1}, NULL, NULL, NULL);
    ft_create_ok(f, c);
    it_box b = mkbox(2, (int64_t[]){-((int64_t)1 << 61), 2}, (int64_t[]){(int64_t)1 << 61, 2}, NULL);
    ft_read_ok(f, &b);
    assert_int_equal(f->calls, 0);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* t[-2**62:2**62:2] has 2**62 samples: too big, not empty (the span
 * stop - start = 2**63 does not fit in int64, the extent does). */
static void test_read_full_range_box(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = ft_new(2, (int64_t[]){INF, 4}, IT_F64);
    ft_set_window(f, (int64_t[]){1, 1}, NULL, NULL, NULL);
    ft_create_ok(f, c);
    it_buffer *out = NULL;
    it_box b = mkbox(2, (int64_t[]){-L, 0}, (int64_t[]){L, 4}, (int64_t[]){2, 1});
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ETOOBIG);
    it_buffer_free(out);
    b = mkbox(2, (int64_t[]){-L, 0}, (int64_t[]){L, 4}, (int64_t[]){(int64_t)1 << 61, 1});
    ft_read_ok(f, &b); /* 4 x 4 samples */
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* Near +-2**62, a read whose windows (or their arguments' windows, or the
 * tiles a custom blend completes) would reach past the limit is refused
 * before any f runs; one just inside gives the right values. */
static void test_read_edge_of_range(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *up = mk1d(c, 6, 4, -1, 16);
    ft *f = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(f, (int64_t[]){4}, (int64_t[]){4}, NULL, NULL);
    it_window aw = mkwin(1, (int64_t[]){12}, (int64_t[]){4}, (int64_t[]){-4}, NULL, 1);
    ft_add_arg(f, up, &aw);
    ft_create_ok(f, c);
    it_buffer *out = NULL;
    /* f's own windows fit, its argument's reach 4 past the limit */
    it_box b = mkbox(1, (int64_t[]){L - 4}, (int64_t[]){L}, NULL);
    EXPECT_ERR(it_tensor_read(f->t, &b, 0, &out), IT_ERANGE);
    /* up's windows [4i - 1, 4i + 5) meeting [L - 3, L) stick out */
    EXPECT_ERR(it_tensor_read(up->t, &b, 0, &out), IT_ERANGE);
    b = mkbox(1, (int64_t[]){-L}, (int64_t[]){-L + 2}, NULL);
    EXPECT_ERR(it_tensor_read(up->t, &b, 0, &out), IT_ERANGE);
    assert_null(out);
    assert_int_equal(up->calls + f->calls, 0);
    tu_cache_ok(c);
    ft_read_ok1(f, L - 24, L - 16);
    ft_read_ok1(up, L - 12, L - 6);
    ft_read_ok1(up, -L + 8, -L + 16);
    /* custom blend: the tiles completed are [L - 8, L) and reach no further */
    ft *g = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(g, (int64_t[]){4}, (int64_t[]){2}, NULL, NULL);
    g->spec.combine = IT_COMBINE_CUSTOM;
    g->blend_kind = 2;
    g->spec.tile_shape[0] = 6;
    ft_create_ok(g, c);
    /* L is a multiple of 2 but not of 6: the tile holding L - 1 ends past L */
    b = mkbox(1, (int64_t[]){L - 1}, (int64_t[]){L}, NULL);
    long before = g->calls;
    EXPECT_ERR(it_tensor_read(g->t, &b, 0, &out), IT_ERANGE);
    assert_int_equal(g->calls, before);
    ft_read_ok1(g, L - 40, L - 20);
    ft_destroy(g);
    ft_destroy(f);
    ft_destroy(up);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* random configurations                                                */

/* A random tensor definition (not created yet). */
static ft *random_fake(rng_t *r, int nd)
{
    int64_t shape[IT_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        shape[d] = rng_chance(r, 3) ? rng_range(r, 1, 8) : INF;
    const it_dtype dts[3] = {IT_F64, IT_F32, IT_I32};
    ft *f = ft_new(nd, shape, dts[rng_range(r, 0, 2)]);
    int64_t size[IT_MAX_DIMS], stride[IT_MAX_DIMS], off[IT_MAX_DIMS];
    int map[IT_MAX_DIMS];
    int use_map = rng_chance(r, 5);
    for (int d = 0; d < nd; d++) {
        size[d] = rng_range(r, 1, 4);
        stride[d] = rng_range(r, 1, 4);
        off[d] = rng_range(r, -3, 3);
        map[d] = d;
        if (use_map) {
            map[d] = rng_chance(r, 3) ? IT_MAP_FIXED : (int)rng_range(r, 0, nd - 1);
            if (map[d] == IT_MAP_FIXED && shape[d] != INF) {
                size[d] = rng_range(r, 1, shape[d]);
                off[d] = rng_range(r, 0, shape[d] - size[d]);
            }
        }
        f->spec.tile_shape[d] = rng_chance(r, 3) ? 0 : rng_range(r, 1, 9);
    }
    ft_set_window(f, size, stride, off, map);
    int comb = (int)rng_range(r, 0, 5);
    f->spec.combine = comb <= 2 ? IT_COMBINE_SUM : comb == 3 ? IT_COMBINE_MAX
                      : comb == 4 ? IT_COMBINE_MIN : IT_COMBINE_CUSTOM;
    f->blend_kind = (int)rng_range(r, 0, 3);
    f->fill = (double)rng_range(r, -5, 5);
    f->spec.batch_size = rng_range(r, 1, 5);
    f->layout = 3;
    f->seed = rng_next(r);
    f->rng_state = rng_next(r);
    if (f->spec.combine == IT_COMBINE_CUSTOM && f->blend_kind >= 2)
        f->modulus = 11; /* 2*a + b grows */
    return f;
}

static it_cache *random_cache(rng_t *r, int *unbounded)
{
    int kind = (int)rng_range(r, 0, 2);
    int64_t blim = kind == 1 ? rng_range(r, 0, 3000) : -1;
    int64_t wlim = kind == 2 ? rng_range(r, 0, 12) : -1;
    *unbounded = blim < 0 && wlim < 0;
    return mkcache(blim, wlim);
}

static it_box random_box(rng_t *r, int nd)
{
    int64_t st[IT_MAX_DIMS], sp[IT_MAX_DIMS], step[IT_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        st[d] = rng_range(r, -12, 12);
        sp[d] = st[d] + rng_range(r, 0, 10);
        step[d] = rng_chance(r, 3) ? rng_range(r, 2, 3) : 1;
    }
    return mkbox(nd, st, sp, step);
}

/* With an unbounded cache and a commutative combine, a valid window is done
 * exactly when it has been computed. */
static void check_done_matches(ft *f, rng_t *r)
{
    int nd = f->spec.ndim;
    for (int k = 0; k < 20; k++) {
        int64_t w[IT_MAX_DIMS];
        for (int c = 0; c < nd; c++)
            w[c] = rng_range(r, -8, 8);
        if (!ref_window_valid(&f->spec.window, f->spec.shape, w))
            continue;
        int done = window_done(f, w);
        long n = wtab_get(&f->total, w);
        if (done != (n > 0))
            fail_msg("window (%s): done = %d but computed %ld times", tu_fmt_coords(nd, w).s, done, n);
    }
}

/* IT_FUZZ_DIVISOR=k runs the first 1/k of the fuzz configurations (the
 * same ones, from the same seeds).  Only `make valgrind` sets it, for the
 * device copy (test_tensor_device: 40 s natively, about 50 times that under
 * valgrind); every other run does them all. */
static int fuzz_configs(int all)
{
    const char *env = getenv("IT_FUZZ_DIVISOR");
    int k = env ? atoi(env) : 1;
    return k > 1 ? (all + k - 1) / k : all;
}

static void test_fuzz(void **state)
{
    (void)state;
    LEAK_BEGIN;
    rng_t r = {20251122};
    for (int cfg = 0, n = fuzz_configs(6000); cfg < n; cfg++) {
        int unbounded;
        it_cache *c = random_cache(&r, &unbounded);
        int nd = (int)rng_range(&r, 1, 3);
        ft *f = random_fake(&r, nd);
        ft_create_ok(f, c);
        int custom = f->spec.combine == IT_COMBINE_CUSTOM;
        f->once_per_read = 1;
        f->once = unbounded;
        int cleared = 0;
        for (int op = 0; op < 12; op++) {
            it_box b = random_box(&r, nd);
            int what = (int)rng_range(&r, 0, 10);
            if (what <= 6) {
                ft_read_ok(f, &b);
                if (unbounded)
                    assert_int_equal(read_nc(f, &b), IT_OK);
            } else if (what == 10 && !custom) { /* custom: test_custom_contribute_order */
                /* a window computed elsewhere, with its true values: it is
                 * never counted twice, whatever was computed before or after */
                int64_t w[IT_MAX_DIMS];
                for (int k = 0; k < 10; k++) {
                    for (int cc = 0; cc < nd; cc++)
                        w[cc] = rng_range(&r, -4, 4);
                    if (ref_window_valid(&f->spec.window, f->spec.shape, w))
                        break;
                }
                if (ref_window_valid(&f->spec.window, f->spec.shape, w)) {
                    it_view v;
                    void *mem = ft_window_values(f, w, 0, &v);
                    EXPECT_OK(it_tensor_contribute(f->t, w, &v));
                    free(mem);
                    tu_cache_ok(c);
                    cleared = 1; /* done no longer means computed */
                }
            } else if (what == 7) {
                int rc = read_nc(f, &b);
                assert_true(rc == IT_OK || rc == IT_ESTATE);
            } else if (what == 8) {
                it_tensor_clear(f->t);
                tu_cache_ok(c);
                assert_int_equal(it_tensor_tiles(f->t), 0);
                ft_forget(f);
                cleared = 1;
            } else {
                int64_t lim = rng_range(&r, 0, it_tensor_bytes(f->t));
                it_tensor_trim(f->t, lim);
                tu_cache_ok(c);
                assert_true(it_tensor_bytes(f->t) <= lim);
                ft_forget(f);
                cleared = 1;
            }
            assert_int_equal(tu_cache_bytes(c), it_tensor_bytes(f->t));
            assert_int_equal(it_cache_tiles(c), it_tensor_tiles(f->t));
            /* a custom blend or a float sum may also hold parts of windows for later */
            if (custom || it_tensor_canonical(f->t))
                assert_true(it_tensor_bytes(f->t) >= it_tensor_tiles(f->t) * tu_tile_bytes(f->t));
            else
                assert_int_equal(it_tensor_bytes(f->t), it_tensor_tiles(f->t) * tu_tile_bytes(f->t));
            if (unbounded && !custom && !cleared)
                check_done_matches(f, &r);
        }
        ft_destroy(f);
        tu_cache_ok(c);
        assert_int_equal(it_cache_tiles(c), 0);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* Random two-stage pipelines: random args windows (maps, FIXED dims,
 * regions past the upstream's finite dims), the downstream compute checks
 * every arg buffer against the reference. */
static void test_fuzz_pipeline(void **state)
{
    (void)state;
    LEAK_BEGIN;
    rng_t r = {777};
    for (int cfg = 0, n = fuzz_configs(2000); cfg < n; cfg++) {
        int unbounded;
        it_cache *c = random_cache(&r, &unbounded);
        ft *a = random_fake(&r, (int)rng_range(&r, 1, 3));
        ft_create_ok(a, c);
        int nb = (int)rng_range(&r, 1, 3);
        ft *b = random_fake(&r, nb);
        if (b->spec.combine == IT_COMBINE_CUSTOM)
            b->blend_kind &= 1; /* keep the checksums small */
        if (b->spec.dtype == IT_F32)
            b->spec.dtype = IT_F64;
        int nargs = (int)rng_range(&r, 1, 2);
        for (int k = 0; k < nargs; k++) {
            int na = a->spec.ndim;
            int64_t size[IT_MAX_DIMS], stride[IT_MAX_DIMS], off[IT_MAX_DIMS];
            int map[IT_MAX_DIMS];
            for (int d = 0; d < na; d++) {
                size[d] = rng_range(&r, 1, 3);
                stride[d] = rng_range(&r, 1, 3);
                off[d] = rng_range(&r, -2, 2);
                map[d] = rng_chance(&r, 4) ? IT_MAP_FIXED : (int)rng_range(&r, 0, nb - 1);
            }
            it_window aw = mkwin(na, size, stride, off, map, nb);
            ft_add_arg(b, a, &aw);
        }
        b->check_args = 1;
        a->name = "upstream";
        b->name = "downstream";
        /* a custom-blend read completes whole tiles, so it may compute
         * windows beyond the region it was asked for */
        b->check_hull = b->spec.combine != IT_COMBINE_CUSTOM;
        a->check_hull = a->spec.combine != IT_COMBINE_CUSTOM && b->check_hull;
        b->take_arg = (int)rng_range(&r, 0, 1);
        ft_create_ok(b, c);
        a->once_per_read = b->once_per_read = 1;
        a->once = b->once = unbounded;
        for (int op = 0; op < 8; op++) {
            int what = (int)rng_range(&r, 0, 9);
            if (what <= 6) {
                it_box bx = random_box(&r, nb);
                ft_read_ok(b, &bx);
            } else if (what == 7) {
                it_box bx = random_box(&r, a->spec.ndim);
                ft_read_ok(a, &bx);
            } else if (what == 8) {
                it_tensor_clear(a->t);
                ft_forget(a);
                tu_cache_ok(c);
            } else {
                it_tensor_clear(b->t);
                ft_forget(b);
                tu_cache_ok(c);
            }
            assert_int_equal(tu_cache_bytes(c), it_tensor_bytes(a->t) + it_tensor_bytes(b->t));
        }
        ft_destroy(b);
        ft_destroy(a);
        tu_cache_ok(c);
        assert_int_equal(it_cache_tiles(c), 0);
        it_cache_unref(c);
    }
    LEAK_END;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_create_toobig_keeps_user),
        cmocka_unit_test(test_create_invalid_combine),
        cmocka_unit_test(test_create_negative_tile),
        cmocka_unit_test(test_create_null_ops),
        cmocka_unit_test(test_spec_and_user),
        cmocka_unit_test(test_tile_shape),
        cmocka_unit_test(test_read_1d),
        cmocka_unit_test(test_read_2d_finite),
        cmocka_unit_test(test_read_sparse_windows),
        cmocka_unit_test(test_read_output_map),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_output_layouts),
        cmocka_unit_test(test_dtypes),
#ifndef TU_DEVICE
        cmocka_unit_test(test_mean_blend),
        cmocka_unit_test(test_mean_refusals),
#endif
        cmocka_unit_test(test_max_min),
        cmocka_unit_test(test_custom_last_wins),
        cmocka_unit_test(test_custom_fold_order),
        cmocka_unit_test(test_custom_once_unbounded),
        cmocka_unit_test(test_custom_upstream_two_args),
        cmocka_unit_test(test_custom_contribute_order),
        cmocka_unit_test(test_custom_blend_failure),
        cmocka_unit_test(test_args_keep_upstream_alive),
        cmocka_unit_test(test_no_compute),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_window_done),
        cmocka_unit_test(test_contribute),
        cmocka_unit_test(test_retype),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_pipeline_bounded),
        cmocka_unit_test(test_nested_read),
        cmocka_unit_test(test_callback_failure),
        cmocka_unit_test(test_callback_failure_pipeline),
        cmocka_unit_test(test_bad_output),
        cmocka_unit_test(test_cycle),
        cmocka_unit_test(test_threads_wait_for_claimed_windows),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_read_full_range_box),
        cmocka_unit_test(test_read_edge_of_range),
        cmocka_unit_test(test_read_empty_huge_box),
        cmocka_unit_test(test_lazy_tiles),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_fuzz_pipeline),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
