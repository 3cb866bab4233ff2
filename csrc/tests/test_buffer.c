/*
 * test_buffer.c - owned contiguous buffers and their views (it_buffer.h).
 */
#include "it_test_util.h"

#include <stdatomic.h>
#include <threads.h>

static void test_create_every_dtype(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    for (int dt = 0; dt < IT_DTYPE_COUNT; dt++) {
        it_buffer *b = NULL;
        EXPECT_OK(it_buffer_create((it_dtype)dt, 3, (int64_t[]){2, 3, 4}, &b));
        assert_non_null(b);
        size_t es = tu_elsize((it_dtype)dt);
        assert_int_equal(b->dtype, dt);
        assert_int_equal(b->ndim, 3);
        assert_int_equal(b->shape[0], 2);
        assert_int_equal(b->shape[1], 3);
        assert_int_equal(b->shape[2], 4);
        assert_int_equal(b->strides[2], (int64_t)es);
        assert_int_equal(b->strides[1], 4 * (int64_t)es);
        assert_int_equal(b->strides[0], 12 * (int64_t)es);
        assert_int_equal(b->nbytes, 24 * es);
        assert_int_equal((uintptr_t)b->data % 64, 0);
        memset(b->data, 0xab, b->nbytes); /* the whole region is writable */
        it_view v;
        memset(&v, 0x55, sizeof v);
        it_buffer_view(b, &v);
        assert_ptr_equal(v.data, b->data);
        assert_int_equal(v.dtype, dt);
        assert_int_equal(v.ndim, 3);
        assert_int_equal(v.device_type, IT_DEVICE_CPU);
        assert_int_equal(v.device_id, 0);
        for (int d = 0; d < 3; d++) {
            assert_int_equal(v.shape[d], b->shape[d]);
            assert_int_equal(v.strides[d], b->strides[d]);
        }
        it_buffer_free(b);
    }
    it_buffer_free(NULL);
    assert_int_equal(it_alloc_live_blocks(), live);
}

static void test_create_shapes(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    it_buffer *b = NULL;
    /* 0-d: one element */
    EXPECT_OK(it_buffer_create(IT_C128, 0, NULL, &b));
    assert_int_equal(b->ndim, 0);
    assert_int_equal(b->nbytes, 16);
    assert_int_equal((uintptr_t)b->data % 64, 0);
    memset(b->data, 1, 16);
    it_buffer_free(b);
    /* an empty dim */
    b = NULL;
    EXPECT_OK(it_buffer_create(IT_F32, 2, (int64_t[]){5, 0}, &b));
    assert_int_equal(b->nbytes, 0);
    assert_int_equal(b->shape[0], 5);
    assert_int_equal(b->shape[1], 0);
    it_buffer_free(b);
    /* IT_MAX_DIMS dims */
    int64_t shape[IT_MAX_DIMS];
    for (int d = 0; d < IT_MAX_DIMS; d++)
        shape[d] = d % 4 == 0 ? 2 : 1;
    b = NULL;
    EXPECT_OK(it_buffer_create(IT_U8, IT_MAX_DIMS, shape, &b));
    assert_int_equal(b->nbytes, 16);
    assert_int_equal(b->strides[IT_MAX_DIMS - 1], 1);
    assert_int_equal(b->strides[0], 8);
    it_buffer_free(b);
    /* a bigger one, written end to end */
    b = NULL;
    EXPECT_OK(it_buffer_create(IT_F64, 2, (int64_t[]){300, 700}, &b));
    assert_int_equal(b->nbytes, 300 * 700 * 8);
    memset(b->data, 0, b->nbytes);
    ((double *)b->data)[300 * 700 - 1] = 1.0;
    it_buffer_free(b);
    assert_int_equal(it_alloc_live_blocks(), live);
}

static void test_create_errors(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    it_buffer *b = NULL;
    EXPECT_ERR(it_buffer_create(IT_F64, 2, (int64_t[]){(int64_t)1 << 62, 4}, &b), IT_ETOOBIG);
    EXPECT_ERR(it_buffer_create(IT_U8, 3, (int64_t[]){(int64_t)1 << 31, (int64_t)1 << 31, 4}, &b), IT_ETOOBIG);
    EXPECT_ERR(it_buffer_create(IT_C128, 1, (int64_t[]){INT64_MAX}, &b), IT_ETOOBIG);
    assert_null(b);
    /* malformed requests fail with a message (the code is not specified) */
    EXPECT_FAILS(it_buffer_create(IT_F32, 2, (int64_t[]){3, -1}, &b));
    EXPECT_FAILS(it_buffer_create(IT_DTYPE_COUNT, 1, (int64_t[]){3}, &b));
    EXPECT_FAILS(it_buffer_create(IT_F32, IT_MAX_DIMS + 1, (int64_t[IT_MAX_DIMS + 1]){0}, &b));
    EXPECT_FAILS(it_buffer_create(IT_F32, -1, NULL, &b));
    assert_null(b);
    /* out of memory */
    it_alloc_fail_after(1);
    it_error_clear();
    int rc = it_buffer_create(IT_F32, 1, (int64_t[]){10}, &b);
    it_alloc_fail_after(0);
    assert_int_equal(rc, IT_ENOMEM);
    tu_check_recorded(rc, "it_buffer_create", __FILE__, __LINE__);
    assert_null(b);
    assert_int_equal(it_alloc_live_blocks(), live);
}

static int free_in_thread(void *arg)
{
    it_buffer_free(arg);
    return 0;
}

/* The DLPack deleter frees buffers on whatever thread torch drops them. */
static void test_free_on_another_thread(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    it_buffer *bs[8];
    for (int i = 0; i < 8; i++)
        EXPECT_OK(it_buffer_create(IT_F32, 1, (int64_t[]){100 + i}, &bs[i]));
    assert_true(it_alloc_live_blocks() >= live + 8);
    thrd_t th[8];
    for (int i = 0; i < 8; i++)
        assert_int_equal(thrd_create(&th[i], free_in_thread, bs[i]), thrd_success);
    for (int i = 0; i < 8; i++)
        assert_int_equal(thrd_join(th[i], NULL), thrd_success);
    assert_int_equal(it_alloc_live_blocks(), live);
}

/* it_view_check: the one check of what the core is handed in place of values
 * it computes; shape first, then device, then dtype (0.3's order). */
static void test_view_check(void **state)
{
    (void)state;
    int64_t want[2] = {6, 6};
    it_view v = {.data = NULL, .dtype = IT_F32, .ndim = 2, .device_type = IT_DEVICE_CPU, .device_id = 0,
                 .shape = {6, 6}};
    EXPECT_OK(it_view_check(&v, "window output", 2, want, IT_F32, IT_DEVICE_CPU, 0));
    /* everything wrong: the shape is reported */
    it_view bad = v;
    bad.shape[1] = 3;
    bad.dtype = IT_I64;
    bad.device_type = IT_DEVICE_CUDA;
    EXPECT_ERR(it_view_check(&bad, "window output", 2, want, IT_F32, IT_DEVICE_CPU, 0), IT_ESHAPE);
    assert_string_equal(it_error_message(), "window output has shape (6, 3), expected (6, 6)");
    bad.ndim = 1;
    EXPECT_ERR(it_view_check(&bad, "window output", 2, want, IT_F32, IT_DEVICE_CPU, 0), IT_ESHAPE);
    assert_string_equal(it_error_message(), "window output has shape (6,), expected (6, 6)");
    bad.ndim = 0;
    EXPECT_ERR(it_view_check(&bad, "window output", 2, want, IT_F32, IT_DEVICE_CPU, 0), IT_ESHAPE);
    assert_string_equal(it_error_message(), "window output has shape (), expected (6, 6)");
    /* right shape: the device, then the dtype */
    bad = v;
    bad.dtype = IT_I64;
    bad.device_type = IT_DEVICE_CUDA;
    EXPECT_ERR(it_view_check(&bad, "a tile", 2, want, IT_F32, IT_DEVICE_CPU, 0), IT_EDEVICE);
    assert_string_equal(it_error_message(), "a tile is on device cuda:0, expected cpu");
    bad.device_type = IT_DEVICE_CPU;
    EXPECT_ERR(it_view_check(&bad, "a tile", 2, want, IT_F32, IT_DEVICE_CPU, 0), IT_EDTYPE);
    assert_string_equal(it_error_message(), "a tile has dtype int64, expected float32");
    /* same device type, another id */
    bad = v;
    bad.device_type = IT_DEVICE_CUDA;
    bad.device_id = 1;
    EXPECT_ERR(it_view_check(&bad, "x", 2, want, IT_F32, IT_DEVICE_CUDA, 0), IT_EDEVICE);
    assert_string_equal(it_error_message(), "x is on device cuda:1, expected cuda:0");
}

/* ------------------------------------------------------------------ */
/* the recycling pool                                                   */

/* Counts the core's allocations of BIG bytes or more: buffers of the size
 * that malloc maps fresh (and the first touch faults in) unless the pool
 * serves them.  Smaller blocks (a read's copy plan, headers) come from
 * malloc's own free lists. */
#define BIG (64 * 1024)
static atomic_long big_allocs;

static void *count_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (n >= BIG)
        atomic_fetch_add(&big_allocs, 1);
    return malloc(n);
}

static void *count_calloc(size_t n, size_t size, void *ctx)
{
    (void)ctx;
    if (size && n >= BIG / size)
        atomic_fetch_add(&big_allocs, 1);
    return calloc(n, size);
}

static void *count_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (n >= BIG)
        atomic_fetch_add(&big_allocs, 1);
    return realloc(p, n);
}

static void count_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static void count_big_allocs(void)
{
    static const it_allocator counting = {count_malloc, count_calloc, count_realloc, count_free, NULL};
    atomic_store(&big_allocs, 0);
    it_alloc_set(&counting);
}

/* A tiny deterministic generator for the random sequences below. */
static uint64_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* A freed buffer is handed out again for the next request of its size
 * class, without any allocation; small buffers never enter the pool. */
static void test_pool_reuses_freed_buffers(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_buffer_pool_set_limit(1 << 20);
    it_buffer *b = NULL;
    EXPECT_OK(it_buffer_create(IT_F32, 2, (int64_t[]){100, 100}, &b)); /* 40,000 bytes */
    void *data = b->data;
    it_buffer_free(b);
    assert_true(it_buffer_pool_bytes() >= 40000);
    it_alloc_fail_after(1); /* the next allocation from the allocator fails */
    for (int i = 0; i < 10; i++) {
        /* another shape of the same size class: served by the pool */
        EXPECT_OK(it_buffer_create(IT_F64, 1, (int64_t[]){5000 - i}, &b));
        assert_ptr_equal(b->data, data);
        assert_int_equal(b->nbytes, (5000 - i) * 8);
        assert_int_equal(it_buffer_pool_bytes(), 0);
        it_buffer_free(b);
    }
    it_alloc_fail_after(0);
    size_t held = it_buffer_pool_bytes();
    EXPECT_OK(it_buffer_create(IT_U8, 1, (int64_t[]){1000}, &b)); /* below 16 KiB */
    it_buffer_free(b);
    assert_int_equal(it_buffer_pool_bytes(), held);
    it_buffer_pool_set_limit(0);
    assert_int_equal(it_buffer_pool_bytes(), 0);
    LEAK_END;
}

/* Whatever the order of creates, frees and limit changes, the pool never
 * holds more than its limit, and every buffer comes back: once all are
 * freed and the limit is 0, no block is left. */
static void test_pool_stays_within_its_limit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    enum { SLOTS = 64 };
    it_buffer *live[SLOTS] = {0};
    uint64_t seed = 7;
    size_t limit = 2 << 20;
    it_buffer_pool_set_limit(limit);
    for (int step = 0; step < 20000; step++) {
        uint64_t r = next_rand(&seed);
        int slot = (int)(r % SLOTS);
        if (step % 2500 == 2499) {
            limit = (size_t)(next_rand(&seed) % (4 << 20)); /* shrink or grow */
            it_buffer_pool_set_limit(limit);
        } else if (live[slot]) {
            it_buffer_free(live[slot]);
            live[slot] = NULL;
        } else {
            int64_t n = 1 + (int64_t)(next_rand(&seed) % (300 * 1024)); /* 1 B to 300 KiB */
            EXPECT_OK(it_buffer_create(IT_U8, 1, &n, &live[slot]));
            ((char *)live[slot]->data)[0] = ((char *)live[slot]->data)[n - 1] = (char)step; /* both ends usable */
        }
        assert_true(it_buffer_pool_bytes() <= limit);
    }
    for (int i = 0; i < SLOTS; i++)
        it_buffer_free(live[i]);
    assert_true(it_buffer_pool_bytes() <= limit);
    it_buffer_pool_set_limit(0);
    assert_int_equal(it_buffer_pool_bytes(), 0);
    LEAK_END;
}

static int churn_thread(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 4000; i++) {
        it_buffer *b = NULL;
        int64_t n = 16 * 1024 + (int64_t)(next_rand(&seed) % (128 * 1024));
        if (it_buffer_create(IT_U8, 1, &n, &b) != IT_OK)
            return 1;
        ((char *)b->data)[n - 1] = 1;
        it_buffer_free(b);
    }
    return 0;
}

/* Threads creating and freeing at once (DLPack deleters free on any
 * thread) keep the same invariants. */
static void test_pool_across_threads(void **state)
{
    (void)state;
    LEAK_BEGIN;
    size_t limit = 1 << 20;
    it_buffer_pool_set_limit(limit);
    thrd_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(thrd_create(&th[i], churn_thread, (void *)(uintptr_t)(i + 1)), thrd_success);
    for (int i = 0; i < 4; i++) {
        int rc = -1;
        assert_int_equal(thrd_join(th[i], &rc), thrd_success);
        assert_int_equal(rc, 0);
    }
    assert_true(it_buffer_pool_bytes() <= limit);
    it_buffer_pool_set_limit(0);
    LEAK_END;
}

/* The engine's steady state: once a read has run, the same read again
 * (tiles cleared, so every window is computed and added again) and reads
 * streaming through a bounded cache (tiles evicted and made anew) take all
 * their large memory (tiles, window outputs, results) from the pool: no
 * allocation of BIG bytes or more reaches the allocator. */
static ft *pool_fake(it_cache *c)
{
    /* overlapping 144x144 float32 windows (81 KiB) at stride 96, 128x128
     * tiles (64 KiB) */
    ft *f = ft_new(2, (int64_t[]){INF, INF}, IT_F32);
    ft_set_window(f, (int64_t[]){144, 144}, (int64_t[]){96, 96}, (int64_t[]){-24, -24}, NULL);
    f->spec.tile_shape[0] = f->spec.tile_shape[1] = 128;
    ft_create_ok(f, c);
    return f;
}

static void test_steady_state_reads_allocate_nothing_large(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_buffer_pool_set_limit(64 << 20);
    it_cache *c = mkcache(-1, -1);
    ft *f = pool_fake(c);
    ft_read_ok2(f, -300, 400, 10, 600);
    for (int round = 0; round < 3; round++) {
        it_tensor_clear(f->t);
        ft_forget(f);
        count_big_allocs();
        ft_read_ok2(f, -300, 400, 10, 600);
        it_alloc_set(NULL);
        assert_int_equal(atomic_load(&big_allocs), 0);
    }
    ft_destroy(f);
    it_cache_unref(c);

    /* a cache of 8 tiles, read band after band: each band evicts the last */
    int64_t budget = 8 * 128 * 128 * 4;
    c = mkcache(budget, -1);
    f = pool_fake(c);
    ft_read_ok2(f, 0, 128, 0, 512);
    count_big_allocs();
    for (int band = 1; band < 6; band++) {
        ft_read_ok2(f, band * 128, band * 128 + 128, 0, 512);
        assert_true(tu_cache_bytes(c) <= budget);
    }
    it_alloc_set(NULL);
    assert_int_equal(atomic_load(&big_allocs), 0);
    ft_destroy(f);
    it_cache_unref(c);
    it_buffer_pool_set_limit(0);
    LEAK_END;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_every_dtype),
        cmocka_unit_test(test_create_shapes),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_free_on_another_thread),
        cmocka_unit_test(test_view_check),
        cmocka_unit_test(test_pool_reuses_freed_buffers),
        cmocka_unit_test(test_pool_stays_within_its_limit),
        cmocka_unit_test(test_pool_across_threads),
        cmocka_unit_test(test_steady_state_reads_allocate_nothing_large),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
