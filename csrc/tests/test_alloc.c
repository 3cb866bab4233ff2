/*
 * test_alloc.c - errors, the allocator hook, and every allocation failure
 * path (it_common.h).
 *
 * The sweeps run a whole scenario (caches, tensors, pipelines, custom
 * blends, nested reads, retype, contribute) with it_alloc_fail_after(N)
 * for N = 1, 2, ... until a run completes without hitting a failure.  Each
 * call either succeeds or returns IT_ENOMEM with a message; after a failure
 * the allocator is healed, the cache must be consistent with nothing
 * pinned, the failed operation must then succeed with the right values, and
 * once everything is freed it_alloc_live_blocks() is back where it started:
 * no failure path leaks, double-counts a window or corrupts a tile.
 */
#include "it_test_util.h"

#include <threads.h>


/* ------------------------------------------------------------------ */
/* errors                                                               */

static void test_error_api(void **state)
{
    (void)state;
    it_error_clear();
    assert_int_equal(it_error_code(), IT_OK);
    assert_non_null(it_error_message());
    assert_string_equal(it_error_message(), "");
    assert_int_equal(it_error_set(IT_EINVAL, "bad %d %s", 42, "thing"), IT_EINVAL);
    assert_int_equal(it_error_code(), IT_EINVAL);
    assert_string_equal(it_error_message(), "bad 42 thing");
    /* the last one wins */
    assert_int_equal(it_error_set(IT_ERANGE, "%s", "second"), IT_ERANGE);
    assert_int_equal(it_error_code(), IT_ERANGE);
    assert_string_equal(it_error_message(), "second");
    /* a very long message is kept safely (possibly truncated) */
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(it_error_set(IT_ETOOBIG, "%s%s", big, big), IT_ETOOBIG);
    assert_true(strlen(it_error_message()) > 10);
    assert_int_equal(it_error_message()[0], 'x');
    /* a message may contain a literal percent sign through %% */
    it_error_set(IT_EDTYPE, "100%% wrong");
    assert_string_equal(it_error_message(), "100% wrong");
    it_error_clear();
    assert_int_equal(it_error_code(), IT_OK);
    assert_string_equal(it_error_message(), "");
}

typedef struct thread_probe {
    int ok;
} thread_probe;

static int error_thread(void *arg)
{
    thread_probe *p = arg;
    /* a new thread starts clean */
    int clean = it_error_code() == IT_OK && strcmp(it_error_message(), "") == 0;
    it_error_set(IT_ERANGE, "from the thread");
    p->ok = clean && it_error_code() == IT_ERANGE &&
            strcmp(it_error_message(), "from the thread") == 0;
    return 0;
}

static void test_error_thread_local(void **state)
{
    (void)state;
    it_error_set(IT_EINVAL, "from main");
    thread_probe p = {0};
    thrd_t th;
    assert_int_equal(thrd_create(&th, error_thread, &p), thrd_success);
    assert_int_equal(thrd_join(th, NULL), thrd_success);
    assert_int_equal(p.ok, 1);
    assert_int_equal(it_error_code(), IT_EINVAL);
    assert_string_equal(it_error_message(), "from main");
    it_error_clear();
}

/* ------------------------------------------------------------------ */
/* the allocator                                                        */

static void test_alloc_basics(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    char *p = it_malloc(10);
    assert_non_null(p);
    memset(p, 1, 10);
    assert_int_equal(it_alloc_live_blocks(), live + 1);
    unsigned char *q = it_calloc(3, 4);
    assert_non_null(q);
    for (int i = 0; i < 12; i++)
        assert_int_equal(q[i], 0);
    assert_int_equal(it_alloc_live_blocks(), live + 2);
    q[11] = 7;
    q = it_realloc(q, 4000);
    assert_non_null(q);
    assert_int_equal(q[11], 7);
    q[3999] = 1;
    assert_int_equal(it_alloc_live_blocks(), live + 2);
    char *r = it_realloc(NULL, 8); /* like realloc: a new block */
    assert_non_null(r);
    assert_int_equal(it_alloc_live_blocks(), live + 3);
    it_free(r);
    it_free(p);
    it_free(q);
    it_free(NULL);
    assert_int_equal(it_alloc_live_blocks(), live);
}

static void test_alloc_fail_after(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    char *keep = it_malloc(16);
    assert_non_null(keep);
    strcpy(keep, "still here");
    it_error_clear();
    it_alloc_fail_after(3);
    void *a = it_malloc(8), *b = it_calloc(2, 8), *c = it_malloc(8), *d = it_calloc(1, 1);
    char *e = it_realloc(keep, 1 << 20);
    it_alloc_fail_after(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c); /* the third */
    assert_null(d); /* and every later one */
    assert_null(e);
    assert_string_equal(keep, "still here"); /* a failed realloc keeps the block */
    assert_int_equal(it_error_code(), IT_OK); /* the allocator records no error */
    assert_int_equal(it_alloc_live_blocks(), live + 3);
    void *f = it_malloc(8);
    assert_non_null(f); /* healed */
    it_alloc_fail_after(1);
    assert_null(it_malloc(1));
    assert_null(it_calloc(1, 1));
    assert_null(it_realloc(NULL, 1));
    it_alloc_fail_after(-5); /* <= 0 disables */
    void *g = it_malloc(1);
    assert_non_null(g);
    it_free(a);
    it_free(b);
    it_free(f);
    it_free(g);
    it_free(keep);
    assert_int_equal(it_alloc_live_blocks(), live);
}

typedef struct hook_stats {
    long mallocs, callocs, reallocs, frees;
} hook_stats;

static void *h_malloc(size_t n, void *ctx)
{
    ((hook_stats *)ctx)->mallocs++;
    return malloc(n);
}

static void *h_calloc(size_t n, size_t s, void *ctx)
{
    ((hook_stats *)ctx)->callocs++;
    return calloc(n, s);
}

static void *h_realloc(void *p, size_t n, void *ctx)
{
    ((hook_stats *)ctx)->reallocs++;
    return realloc(p, n);
}

static void h_free(void *p, void *ctx)
{
    if (p)
        ((hook_stats *)ctx)->frees++;
    free(p);
}

static void test_alloc_hook(void **state)
{
    (void)state;
    long live = it_alloc_live_blocks();
    hook_stats st = {0, 0, 0, 0};
    it_allocator a = {h_malloc, h_calloc, h_realloc, h_free, &st};
    it_alloc_set(&a);
    void *p = it_malloc(100);
    void *q = it_calloc(4, 4);
    p = it_realloc(p, 300);
    assert_non_null(p);
    assert_non_null(q);
    assert_true(st.mallocs + st.callocs + st.reallocs >= 3);
    assert_int_equal(it_alloc_live_blocks(), live + 2);
    /* the core itself allocates through the hook */
    it_buffer *b = NULL;
    long before = st.mallocs + st.callocs + st.reallocs;
    EXPECT_OK(it_buffer_create(IT_F64, 1, (int64_t[]){10}, &b));
    assert_true(st.mallocs + st.callocs + st.reallocs > before);
    it_buffer_free(b);
    it_free(p);
    it_free(q);
    assert_true(st.frees >= 3);
    assert_int_equal(it_alloc_live_blocks(), live);
    it_alloc_set(NULL);
    long calls = st.mallocs + st.callocs + st.reallocs;
    p = it_malloc(10);
    it_free(p);
    assert_int_equal(st.mallocs + st.callocs + st.reallocs, calls); /* restored */
}

/* ------------------------------------------------------------------ */
/* failure sweeps                                                       */

typedef struct sweep {
    long n;       /* the failing allocation of this run */
    int hit;      /* a call of this run failed */
    int steps;
} sweep;

/* A call that allocates: OK, or IT_ENOMEM (then heal the allocator). */
static int sw_call(sweep *s, int rc, const char *what)
{
    s->steps++;
    if (rc == IT_OK)
        return IT_OK;
    if (rc != IT_ENOMEM)
        fail_msg("N=%ld: %s returned %d (%s), expected IT_OK or IT_ENOMEM", s->n, what, rc,
                 it_error_message());
    tu_check_recorded(rc, what, __FILE__, __LINE__);
    s->hit = 1;
    it_alloc_fail_after(0);
    return rc;
}

/* A read: on IT_ENOMEM, heal, check the state, and read again. */
static void sw_read(sweep *s, ft *f, const it_box *b, int flags)
{
    int rc = ft_read_check(f, b, flags); /* checks values when OK, the cache always */
    s->steps++;
    if (rc == IT_OK || (rc == IT_ESTATE && (flags & IT_READ_NO_COMPUTE)))
        return;
    if (rc != IT_ENOMEM)
        fail_msg("N=%ld: read returned %d (%s), expected IT_OK or IT_ENOMEM", s->n, rc, f->last_msg);
    s->hit = 1;
    it_alloc_fail_after(0);
    rc = ft_read_check(f, b, flags);
    if (rc != IT_OK && !(rc == IT_ESTATE && (flags & IT_READ_NO_COMPUTE)))
        fail_msg("N=%ld: the read after a failure returned %d (%s)", s->n, rc, f->last_msg);
}

static int sw_create_cache(sweep *s, int64_t bytes, int64_t weight, it_cache **c)
{
    *c = NULL;
    int rc = sw_call(s, it_cache_create(bytes, weight, c), "it_cache_create");
    if (rc != IT_OK && *c != NULL)
        fail_msg("N=%ld: it_cache_create failed but returned a cache", s->n);
    return rc;
}

static int sw_create(sweep *s, ft *f, it_cache *c)
{
    f->t = NULL;
    int rc = sw_call(s, ft_create(f, c), "it_tensor_create");
    if (rc != IT_OK) {
        if (f->user_frees != 0)
            fail_msg("N=%ld: a failed it_tensor_create called user_free", s->n);
        f->t = NULL;
    }
    return rc;
}

static void sw_free_fakes(ft **fs, int n)
{
    for (int i = 0; i < n; i++) /* downstream first: callers list them so */
        ft_destroy(fs[i]);
}

typedef void (*scenario_fn)(sweep *s);

static void run_sweep(scenario_fn fn, const char *name, long max_n)
{
    long n;
    char where[100];
    /* a cache left over its limits after a failure is reported once the
     * sweep is over, so that the other checks still run for every N */
    tu_opts *o = tu_options();
    o->defer_limit_checks = 1;
    o->limit_violations = 0;
    o->where = where;
    for (n = 1; n <= max_n; n++) {
        long live = it_alloc_live_blocks();
        sweep s = {n, 0, 0};
        snprintf(where, sizeof where, "%s, N=%ld", name, n);
        it_error_clear();
        it_alloc_fail_after(n);
        fn(&s);
        it_alloc_fail_after(0);
        if (it_alloc_live_blocks() != live)
            fail_msg("%s, N=%ld: %ld core blocks leaked", name, n, it_alloc_live_blocks() - live);
        if (!s.hit)
            break;
    }
    o->defer_limit_checks = 0;
    o->where = NULL;
    if (n > max_n)
        fail_msg("%s: still failing after %ld allocations", name, max_n);
    print_message("%s: %ld allocation failure points\n", name, n - 1);
    assert_true(n > 5); /* the scenario did allocate */
    if (o->limit_violations)
        fail_msg("%ld time(s) the cache was left over its limits after an operation ended; "
                 "first: %s", o->limit_violations, o->first_violation);
}

static void conv_run(const it_view *src, it_buffer *dst)
{
    int nd = src->ndim;
    int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS], k[IT_MAX_DIMS] = {0}, n = 1, j = 0;
    for (int d = 0; d < nd; d++) {
        hi[d] = src->shape[d] - 1;
        n *= src->shape[d];
    }
    if (n == 0)
        return;
    size_t es = tu_elsize(dst->dtype);
    int64_t cst[IT_MAX_DIMS];
    char *clear = tu_clear_copy(src, cst);
    do {
        el_store(dst->dtype, (char *)dst->data + j++ * (int64_t)es,
                 el_load(src->dtype, clear + tu_offset(nd, k, cst)));
    } while (tu_next_index(nd, k, lo, hi));
    free(clear);
    tu_buffer_flip(dst);
}

static int convert_cb(void *ctx, const it_view *src, it_buffer *dst)
{
    (void)ctx;
    conv_run(src, dst);
    return IT_OK;
}

/* One tensor: reads under a byte limit, clear, trim, NO_COMPUTE, window
 * done, contribute, retype. */
static void scenario_single(sweep *s)
{
    it_cache *c;
    if (sw_create_cache(s, 600, -1, &c))
        return;
    ft *f = ft_new(2, (int64_t[]){INF, 3}, IT_F64);
    ft_set_window(f, (int64_t[]){3, 2}, (int64_t[]){2, 1}, (int64_t[]){-1, 0}, NULL);
    f->spec.tile_shape[0] = 4;
    f->spec.batch_size = 2;
    f->fill = 1;
    f->once_per_read = 1;
    if (sw_create(s, f, c)) {
        ft_destroy(f);
        it_cache_unref(c);
        return;
    }
    it_box b1 = mkbox(2, (int64_t[]){-3, 0}, (int64_t[]){9, 3}, NULL);
    it_box b2 = mkbox(2, (int64_t[]){5, -1}, (int64_t[]){20, 4}, (int64_t[]){2, 1});
    sw_read(s, f, &b1, 0);
    sw_read(s, f, &b2, 0);
    sw_read(s, f, &b1, IT_READ_NO_COMPUTE);
    int64_t w[2] = {1, 0};
    int done = 0;
    if (sw_call(s, it_tensor_window_done(f->t, w, &done), "it_tensor_window_done") == IT_OK)
        assert_true(done == 0 || done == 1);
    it_tensor_trim(f->t, 100);
    tu_cache_ok(c);
    sw_read(s, f, &b1, 0);
    it_tensor_clear(f->t);
    tu_cache_ok(c);
    sw_read(s, f, &b2, 0);
    /* contribute a window with its own values: never counted twice */
    {
        int64_t co[2] = {4, 0}, lo[2] = {0, 0}, hi[2] = {2, 1}, k[2] = {0, 0};
        double vals[6];
        int j = 0;
        do {
            vals[j++] = ft_base(f, co, k);
        } while (tu_next_index(2, k, lo, hi));
        it_view v;
        memset(&v, 0, sizeof v);
        v.data = vals;
        v.dtype = IT_F64;
        v.ndim = 2;
        v.device_type = TU_DEV_TYPE;
        v.device_id = TU_DEV_ID;
        v.shape[0] = 3;
        v.shape[1] = 2;
        v.strides[0] = 16;
        v.strides[1] = 8;
#ifdef TU_DEVICE
        tu_scramble(vals, sizeof vals);
#endif
        if (sw_call(s, it_tensor_contribute(f->t, co, &v), "it_tensor_contribute"))
            EXPECT_OK(it_tensor_contribute(f->t, co, &v));
        tu_cache_ok(c);
        sw_read(s, f, &b2, 0);
    }
    /* retype: all or nothing */
    {
        float fill = 1.0f;
        sw_read(s, f, &b1, 0);
        int64_t bytes = it_tensor_bytes(f->t);
        int rc = sw_call(s, it_tensor_retype(f->t, IT_F32, &fill, convert_cb, NULL), "it_tensor_retype");
        if (rc != IT_OK) {
            assert_int_equal(it_tensor_bytes(f->t), bytes); /* nothing changed */
            sw_read(s, f, &b1, IT_READ_NO_COMPUTE);     /* still float64 */
            EXPECT_OK(it_tensor_retype(f->t, IT_F32, &fill, convert_cb, NULL));
        }
        f->spec.dtype = IT_F32;
        tu_cache_ok(c);
        sw_read(s, f, &b1, IT_READ_NO_COMPUTE);
        sw_read(s, f, &b2, 0);
    }
    ft *fs[1] = {f};
    sw_free_fakes(fs, 1);
    it_cache_unref(c);
}

/* A two-stage pipeline whose downstream compute reads its arg buffers, with
 * a tiny cache shared by both. */
static void scenario_pipeline(sweep *s)
{
    it_cache *c;
    if (sw_create_cache(s, 300, -1, &c))
        return;
    ft *a = ft_new(2, (int64_t[]){2, INF}, IT_F64);
    ft_set_window(a, (int64_t[]){1, 3}, (int64_t[]){1, 2}, NULL, NULL);
    a->spec.tile_shape[1] = 4;
    a->fill = 2;
    if (sw_create(s, a, c)) {
        ft_destroy(a);
        it_cache_unref(c);
        return;
    }
    ft *b = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(b, (int64_t[]){2}, NULL, NULL, NULL);
    it_window aw = mkwin(2, (int64_t[]){3, 4}, (int64_t[]){1, 2}, (int64_t[]){-1, -1},
                         (int[]){IT_MAP_FIXED, 0}, 1);
    ft_add_arg(b, a, &aw);
    b->spec.batch_size = 2;
    b->spec.tile_shape[0] = 4;
    b->check_args = 1;
    b->take_arg = 1;
    if (sw_create(s, b, c)) {
        b->spec.nargs = 0; /* never referenced a */
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
        return;
    }
    a->once_per_read = b->once_per_read = 1;
    it_box b1 = mkbox(1, (int64_t[]){-3}, (int64_t[]){9}, NULL);
    it_box b2 = mkbox(1, (int64_t[]){6}, (int64_t[]){20}, (int64_t[]){3});
    sw_read(s, b, &b1, 0);
    sw_read(s, b, &b2, 0);
    it_box ab = mkbox(2, (int64_t[]){-1, -5}, (int64_t[]){3, 12}, NULL);
    sw_read(s, a, &ab, 0);
    it_cache_set_limits(c, 0, -1);
    sw_read(s, b, &b1, 0);
    ft *fs[2] = {b, a};
    sw_free_fakes(fs, 2);
    it_cache_unref(c);
}

/* Custom blends (the blend takes one of its buffers) read out of order. */
static void scenario_custom(sweep *s)
{
    it_cache *c;
    if (sw_create_cache(s, -1, -1, &c))
        return;
    ft *fs[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        ft *f = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(f, (int64_t[]){5}, (int64_t[]){2}, NULL, NULL);
        f->spec.combine = IT_COMBINE_CUSTOM;
        f->blend_kind = k == 0 ? 0 : 2;
        f->fill = 1;
        f->spec.tile_shape[0] = 3;
        f->spec.batch_size = 2;
        f->once_per_read = 1;
        if (sw_create(s, f, c)) {
            ft_destroy(f);
            sw_free_fakes(fs, 2);
            it_cache_unref(c);
            return;
        }
        fs[k] = f;
    }
    it_box b1 = mkbox(1, (int64_t[]){4}, (int64_t[]){8}, NULL);
    it_box b2 = mkbox(1, (int64_t[]){0}, (int64_t[]){12}, NULL);
    for (int k = 0; k < 2; k++) {
        sw_read(s, fs[k], &b1, 0);
        sw_read(s, fs[k], &b2, 0);
    }
    sw_free_fakes(fs, 2);
    it_cache_unref(c);
}

/* A compute that reads another tensor itself (a nested read). */
static void scenario_nested(sweep *s)
{
    it_cache *c;
    if (sw_create_cache(s, 100, -1, &c))
        return;
    ft *a = ft_new(1, (int64_t[]){INF}, IT_I32);
    ft_set_window(a, (int64_t[]){3}, (int64_t[]){2}, NULL, NULL);
    a->spec.tile_shape[0] = 4;
    if (sw_create(s, a, c)) {
        ft_destroy(a);
        it_cache_unref(c);
        return;
    }
    ft *b = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(b, (int64_t[]){2}, (int64_t[]){1}, NULL, NULL);
    b->spec.tile_shape[0] = 5;
    b->nested = a;
    b->nested_propagate = 1;
    if (sw_create(s, b, c)) {
        ft_destroy(b);
        ft_destroy(a);
        it_cache_unref(c);
        return;
    }
    it_box b1 = mkbox(1, (int64_t[]){-2}, (int64_t[]){10}, NULL);
    sw_read(s, b, &b1, 0);
    sw_read(s, b, &b1, 0);
    ft *fs[2] = {b, a};
    sw_free_fakes(fs, 2);
    it_cache_unref(c);
}

static void test_sweep_single(void **state)
{
    (void)state;
    run_sweep(scenario_single, "single tensor", 20000);
}

static void test_sweep_pipeline(void **state)
{
    (void)state;
    run_sweep(scenario_pipeline, "pipeline", 20000);
}

static void test_sweep_custom(void **state)
{
    (void)state;
    run_sweep(scenario_custom, "custom blend", 20000);
}

static void test_sweep_nested(void **state)
{
    (void)state;
    run_sweep(scenario_nested, "nested read", 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_api),
        cmocka_unit_test(test_error_thread_local),
        cmocka_unit_test(test_alloc_basics),
        cmocka_unit_test(test_alloc_fail_after),
        cmocka_unit_test(test_alloc_hook),
        cmocka_unit_test(test_sweep_single),
        cmocka_unit_test(test_sweep_pipeline),
        cmocka_unit_test(test_sweep_custom),
        cmocka_unit_test(test_sweep_nested),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
