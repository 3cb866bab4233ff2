/*
 * test_cache.c - the tile cache shared by the tensors of a store
 * (it_cache.h).
 *
 * Tiles only enter a cache through tensor reads, so these tests drive fake
 * tensors (it_test_util.h) and watch the cache: byte/tile/weight accounting,
 * LRU order across tensors, byte and weight limits, a limit of 0, pins held
 * by nested reads, clears while tiles are pinned, reference counting.
 * it_cache_check runs after every operation.
 */
#include "it_test_util.h"




static ft *mk1d(it_cache *c, it_dtype dt, int64_t size, int64_t stride, int64_t tile, uint64_t seed)
{
    ft *f = ft_new(1, (int64_t[]){INF}, dt);
    ft_set_window(f, &size, &stride, NULL, NULL);
    f->spec.tile_shape[0] = tile;
    f->seed = seed;
    ft_create_ok(f, c);
    return f;
}

static ft *mk2d(it_cache *c, int64_t rows, int64_t tile, uint64_t seed)
{
    ft *f = ft_new(2, (int64_t[]){rows, INF}, IT_F32);
    ft_set_window(f, (int64_t[]){2, 3}, (int64_t[]){1, 2}, NULL, NULL);
    f->spec.tile_shape[1] = tile;
    f->seed = seed;
    ft_create_ok(f, c);
    return f;
}

static void read1(ft *f, int64_t a, int64_t b)
{
    it_box bx = mkbox(1, &a, &b, NULL);
    ft_read_ok(f, &bx);
}

static int read1_nc(ft *f, int64_t a, int64_t b)
{
    it_box bx = mkbox(1, &a, &b, NULL);
    return ft_read_check(f, &bx, IT_READ_NO_COMPUTE);
}

/* Bytes, tiles and weight of the cache are the sums over its tensors. */
static void check_accounting(it_cache *c, ft **fs, int n)
{
    int64_t bytes = 0, tiles = 0, weight = 0;
    for (int i = 0; i < n; i++) {
        if (!fs[i])
            continue;
        const it_tensor *t = fs[i]->t;
        int64_t tb = tu_tile_bytes(t), wb = tu_window_bytes(t);
        /* plus the parts of windows a float sum keeps on its tiles until the
         * windows before them arrive (fold.c) */
        assert_true(it_tensor_bytes(t) >= it_tensor_tiles(t) * tb);
        bytes += it_tensor_bytes(t);
        tiles += it_tensor_tiles(t);
        weight += it_tensor_tiles(t) * ((tb + wb - 1) / wb);
    }
    assert_int_equal(it_cache_bytes(c), bytes);
    assert_int_equal(it_cache_tiles(c), tiles);
    assert_int_equal(it_cache_weight(c), weight);
    tu_cache_ok(c);
}

/* ------------------------------------------------------------------ */

static void test_create_limits_refs(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(1000, 7);
    int64_t bl = 0, wl = 0;
    it_cache_limits(c, &bl, &wl);
    assert_int_equal(bl, 1000);
    assert_int_equal(wl, 7);
    assert_int_equal(it_cache_bytes(c), 0);
    assert_int_equal(it_cache_tiles(c), 0);
    assert_int_equal(it_cache_weight(c), 0);
    assert_int_equal(it_cache_pinned(c), 0);
    it_cache_set_limits(c, -1, 0);
    it_cache_limits(c, &bl, &wl);
    assert_true(bl < 0);
    assert_int_equal(wl, 0);
    it_cache_set_limits(c, 0, -5);
    it_cache_limits(c, &bl, &wl);
    assert_int_equal(bl, 0);
    assert_true(wl < 0);
    it_cache_trim(c); /* nothing to trim */
    tu_cache_ok(c);
    it_cache_ref(c);
    it_cache_ref(c);
    it_cache_unref(c);
    it_cache_unref(c);
    tu_cache_ok(c); /* still alive: one reference left */
    it_cache_unref(c);
    it_cache_unref(NULL);
    LEAK_END;
}

static void test_accounting(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *fs[3];
    fs[0] = mk1d(c, IT_F64, 4, 2, 16, 1);  /* tile 128 B, window 32 B: weight 4 */
    fs[1] = mk1d(c, IT_I16, 5, 5, 7, 2);   /* tile 14 B, window 10 B: weight 2 */
    fs[2] = mk2d(c, 3, 5, 3);              /* tile 60 B, window 24 B: weight 3 */
    check_accounting(c, fs, 3);
    read1(fs[0], 0, 50);
    check_accounting(c, fs, 3);
    read1(fs[1], -30, 3);
    check_accounting(c, fs, 3);
    it_box b = mkbox(2, (int64_t[]){0, -7}, (int64_t[]){3, 21}, NULL);
    ft_read_ok(fs[2], &b);
    check_accounting(c, fs, 3);
    assert_int_equal(tu_tile_bytes(fs[0]->t), 128);
    assert_int_equal(tu_tile_bytes(fs[1]->t), 14);
    assert_int_equal(tu_tile_bytes(fs[2]->t), 60);
    it_tensor_clear(fs[1]->t);
    check_accounting(c, fs, 3);
    it_tensor_trim(fs[0]->t, 200);
    check_accounting(c, fs, 3);
    ft_destroy(fs[2]);
    fs[2] = NULL;
    check_accounting(c, fs, 3);
    ft_destroy(fs[0]);
    ft_destroy(fs[1]);
    assert_int_equal(it_cache_bytes(c), 0);
    assert_int_equal(it_cache_tiles(c), 0);
    assert_int_equal(it_cache_weight(c), 0);
    tu_cache_ok(c);
    it_cache_unref(c);
    LEAK_END;
}

/* One LRU list across every tensor of the cache. */
static void test_lru_across_tensors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *x = mk1d(c, IT_F64, 4, 4, 16, 1);
    ft *y = mk1d(c, IT_F64, 4, 4, 16, 2);
    ft *z = mk1d(c, IT_F64, 4, 4, 16, 3);
    ft *fs[3] = {x, y, z};
    read1(x, 0, 4);
    int64_t tb = it_cache_bytes(c);
    read1(y, 0, 4);
    read1(z, 0, 4);
    assert_int_equal(it_cache_bytes(c), 3 * tb);
    /* touch x: the order is now y, z, x */
    assert_int_equal(read1_nc(x, 0, 4), IT_OK);
    it_cache_set_limits(c, 2 * tb, -1);
    it_cache_trim(c);
    check_accounting(c, fs, 3);
    assert_int_equal(it_cache_bytes(c), 2 * tb);
    assert_int_equal(it_tensor_tiles(y->t), 0);
    assert_int_equal(read1_nc(y, 0, 4), IT_ESTATE);
    assert_int_equal(read1_nc(z, 0, 4), IT_OK);
    assert_int_equal(read1_nc(x, 0, 4), IT_OK);
    /* order z, x; reading y evicts z at the end of the read */
    read1(y, 0, 4);
    check_accounting(c, fs, 3);
    assert_int_equal(it_tensor_tiles(z->t), 0);
    assert_int_equal(it_tensor_tiles(x->t), 1);
    assert_int_equal(it_tensor_tiles(y->t), 1);
    /* a weight limit evicts the same way: each tile weighs 4 */
    it_cache_set_limits(c, -1, 4);
    it_cache_trim(c);
    check_accounting(c, fs, 3);
    assert_int_equal(it_tensor_tiles(x->t), 0);
    assert_int_equal(it_tensor_tiles(y->t), 1);
    ft_destroy(x);
    ft_destroy(y);
    ft_destroy(z);
    it_cache_unref(c);
    LEAK_END;
}

static void limit_run(int64_t byte_limit, int64_t weight_limit, uint64_t seed)
{
    it_cache *c = mkcache(byte_limit, weight_limit);
    ft *fs[3];
    fs[0] = mk1d(c, IT_F64, 4, 2, 8, seed);
    fs[1] = mk1d(c, IT_I32, 3, 1, 5, seed + 1);
    fs[2] = mk2d(c, 4, 6, seed + 2);
    for (int i = 0; i < 3; i++)
        fs[i]->once_per_read = 1;
    rng_t r = {seed};
    for (int it = 0; it < 60; it++) {
        int k = (int)rng_range(&r, 0, 2);
        int64_t a = rng_range(&r, -40, 40), len = rng_range(&r, 0, 25);
        if (k < 2) {
            read1(fs[k], a, a + len);
        } else {
            it_box b = mkbox(2, (int64_t[]){rng_range(&r, -1, 2), a}, (int64_t[]){rng_range(&r, 2, 5), a + len},
                             (int64_t[]){1, rng_range(&r, 1, 3)});
            ft_read_ok(fs[2], &b);
        }
        check_accounting(c, fs, 3);
        if (byte_limit == 0 || weight_limit == 0) {
            assert_int_equal(it_cache_tiles(c), 0);
            assert_int_equal(it_cache_bytes(c), 0);
        }
    }
    for (int i = 0; i < 3; i++)
        ft_destroy(fs[i]);
    tu_cache_ok(c);
    assert_int_equal(it_cache_tiles(c), 0);
    it_cache_unref(c);
}

static void test_byte_limit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    limit_run(300, -1, 1);
    limit_run(1000, -1, 2);
    limit_run(97, -1, 3); /* smaller than some tiles: reads still work */
    LEAK_END;
}

static void test_weight_limit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    limit_run(-1, 3, 4);
    limit_run(-1, 10, 5);
    limit_run(500, 6, 6);
    LEAK_END;
}

static void test_zero_limit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    limit_run(0, -1, 7);
    limit_run(-1, 0, 8);
    /* every read computes again, once */
    it_cache *c = mkcache(0, -1);
    ft *f = mk1d(c, IT_F64, 4, 2, 8, 9);
    f->once_per_read = 1;
    read1(f, 0, 10);
    long calls = f->calls;
    read1(f, 0, 10);
    assert_int_equal(f->calls, 2 * calls);
    assert_int_equal(read1_nc(f, 0, 10), IT_ESTATE);
    ft_destroy(f);
    it_cache_unref(c);
    LEAK_END;
}

/* Lowering the limits and trimming; raising them keeps what is there. */
static void test_set_limits_and_trim(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *fs[2];
    fs[0] = mk1d(c, IT_F64, 4, 2, 8, 1);
    fs[1] = mk2d(c, 3, 4, 2);
    read1(fs[0], -50, 50);
    it_box b = mkbox(2, (int64_t[]){0, -20}, (int64_t[]){3, 20}, NULL);
    ft_read_ok(fs[1], &b);
    int64_t bytes = it_cache_bytes(c);
    it_cache_set_limits(c, bytes * 10, -1);
    it_cache_trim(c);
    assert_int_equal(it_cache_bytes(c), bytes);
    it_cache_set_limits(c, bytes / 3, -1);
    it_cache_trim(c);
    check_accounting(c, fs, 2);
    assert_true(it_cache_bytes(c) <= bytes / 3);
    it_cache_set_limits(c, -1, 2);
    it_cache_trim(c);
    check_accounting(c, fs, 2);
    it_cache_set_limits(c, 0, 0);
    it_cache_trim(c);
    assert_int_equal(it_cache_tiles(c), 0);
    check_accounting(c, fs, 2);
    it_cache_set_limits(c, -1, -1);
    ft_read_ok(fs[1], &b);
    read1(fs[0], -50, 50);
    check_accounting(c, fs, 2);
    ft_destroy(fs[0]);
    ft_destroy(fs[1]);
    it_cache_unref(c);
    LEAK_END;
}

/* it_tensor_trim / it_tensor_clear of one tensor leave the others alone. */
static void test_tensor_trim_is_local(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *fs[2];
    fs[0] = mk1d(c, IT_F64, 4, 2, 8, 1);
    fs[1] = mk1d(c, IT_F64, 4, 2, 8, 2);
    read1(fs[0], 0, 40);
    read1(fs[1], 0, 40);
    int64_t b1 = it_tensor_bytes(fs[1]->t);
    it_tensor_trim(fs[0]->t, 0);
    check_accounting(c, fs, 2);
    assert_int_equal(it_tensor_bytes(fs[0]->t), 0);
    assert_int_equal(it_tensor_bytes(fs[1]->t), b1);
    assert_int_equal(read1_nc(fs[1], 0, 40), IT_OK);
    read1(fs[0], 0, 40);
    it_tensor_clear(fs[1]->t);
    check_accounting(c, fs, 2);
    assert_int_equal(read1_nc(fs[0], 0, 40), IT_OK);
    ft_destroy(fs[0]);
    ft_destroy(fs[1]);
    it_cache_unref(c);
    LEAK_END;
}

/* Tensors hold references: the cache outlives its creator's reference. */
static void test_cache_outlives_tensors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    ft *f = mk1d(c, IT_F64, 4, 2, 8, 1);
    it_cache_unref(c); /* the tensor keeps it alive */
    read1(f, 0, 30);
    assert_true(it_cache_bytes(c) > 0);
    it_tensor_clear(f->t);
    read1(f, -10, 5);
    ft_destroy(f); /* the last reference: the cache goes too */
    LEAK_END;
}

/* Nested reads (a compute reading another tensor of the same cache) must
 * not evict tiles the outer read has pinned, even with a limit of 0. */
static void test_nested_pins(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const int64_t limits[3] = {0, 150, -1};
    for (int k = 0; k < 3; k++) {
        it_cache *c = mkcache(limits[k], -1);
        ft *a = mk1d(c, IT_F64, 3, 2, 4, 1);
        ft *b = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(b, (int64_t[]){3}, (int64_t[]){1}, NULL, NULL);
        b->spec.tile_shape[0] = 4;
        b->spec.batch_size = 2;
        b->nested = a;
        b->once_per_read = 1;
        ft_create_ok(b, c);
        read1(b, 0, 20);
        read1(b, -7, 3);
        read1(b, 15, 40);
        tu_cache_ok(c);
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* A pipeline sharing one small cache: upstream tiles the downstream read
 * uses stay pinned until it ends. */
static void test_pipeline_small_cache(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const int64_t limits[3] = {0, 200, 2000};
    for (int k = 0; k < 3; k++) {
        it_cache *c = mkcache(limits[k], -1);
        ft *a = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(a, (int64_t[]){2, 2}, (int64_t[]){1, 1}, NULL, NULL);
        a->spec.tile_shape[0] = a->spec.tile_shape[1] = 3;
        ft_create_ok(a, c);
        ft *b = ft_new(2, (int64_t[]){INF, INF}, IT_F64);
        ft_set_window(b, (int64_t[]){2, 2}, NULL, NULL, NULL);
        it_window aw = mkwin(2, (int64_t[]){4, 4}, (int64_t[]){2, 2}, (int64_t[]){-1, -1}, NULL, 2);
        ft_add_arg(b, a, &aw);
        b->spec.batch_size = 3;
        b->check_args = 1;
        ft_create_ok(b, c);
        a->once_per_read = b->once_per_read = 1;
        it_box box = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){8, 8}, NULL);
        ft_read_ok(b, &box);
        box = mkbox(2, (int64_t[]){-5, 3}, (int64_t[]){4, 11}, (int64_t[]){2, 1});
        ft_read_ok(b, &box);
        ft *fs[2] = {a, b};
        check_accounting(c, fs, 2);
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* A compute that clears its own tensor mid-read: the tiles the read holds
 * are dropped when unpinned.  The read returns right values or IT_ESTATE,
 * never wrong values, and a later read is right. */
static void test_clear_while_pinned(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int at = 1; at <= 4; at++) {
        it_cache *c = mkcache(-1, -1);
        ft *f = mk1d(c, IT_F64, 4, 2, 8, (uint64_t)at);
        f->clear_self_at_call = at;
        it_box b = mkbox(1, (int64_t[]){0}, (int64_t[]){20}, NULL);
        int rc = ft_read_check(f, &b, 0); /* compares values when rc == IT_OK */
        if (rc != IT_OK && rc != IT_ESTATE)
            fail_msg("read with a clear inside returned %d (%s)", rc, f->last_msg);
        tu_cache_ok(c);
        ft *fs[1] = {f};
        check_accounting(c, fs, 1);
        f->clear_self_at_call = 0;
        ft_read_ok(f, &b);
        ft_read_ok(f, &b);
        check_accounting(c, fs, 1);
        ft_destroy(f);
        it_cache_unref(c);
    }
    LEAK_END;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_limits_refs),
        cmocka_unit_test(test_accounting),
        cmocka_unit_test(test_lru_across_tensors),
        cmocka_unit_test(test_byte_limit),
        cmocka_unit_test(test_weight_limit),
        cmocka_unit_test(test_zero_limit),
        cmocka_unit_test(test_set_limits_and_trim),
        cmocka_unit_test(test_tensor_trim_is_local),
        cmocka_unit_test(test_cache_outlives_tensors),
        cmocka_unit_test(test_nested_pins),
        cmocka_unit_test(test_pipeline_small_cache),
        cmocka_unit_test(test_clear_while_pinned),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
