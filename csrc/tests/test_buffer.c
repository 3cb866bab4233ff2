/*
 * test_buffer.c - owned contiguous buffers and their views (it_buffer.h).
 */
#include "it_test_util.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_every_dtype),
        cmocka_unit_test(test_create_shapes),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_free_on_another_thread),
        cmocka_unit_test(test_view_check),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
