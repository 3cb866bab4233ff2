/*
 * test_pool.c - the worker pool behind large copies (it_pool.h), and reads
 * whose assembly goes through it.
 *
 * Every job must run exactly once whatever the thread count, two callers at
 * once must both finish (one of them runs its jobs itself), a child process
 * made by fork must get a working pool, and a read assembled by several
 * threads must equal the same read done by one.
 */
#define _POSIX_C_SOURCE 200809L
#include "it_test_util.h"

#include "it_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define NJOBS 5000

typedef struct counts {
    atomic_int hits[NJOBS];
    atomic_int threads_seen;
    pthread_t first;
    atomic_int other_thread;
} counts;

static void count_job(void *ctx, int64_t j)
{
    counts *c = ctx;
    atomic_fetch_add(&c->hits[j], 1);
    if (!pthread_equal(pthread_self(), c->first))
        atomic_store(&c->other_thread, 1);
    /* a little work, so that the workers get a share */
    volatile double x = 0;
    for (int i = 0; i < 200; i++)
        x += i * 0.5;
}

static void run_and_check(int threads, int64_t n)
{
    static counts c;
    memset(&c, 0, sizeof c);
    c.first = pthread_self();
    int old = it_pool_set_threads(threads);
    it_parallel_for(n, count_job, &c);
    it_pool_set_threads(old);
    for (int64_t j = 0; j < NJOBS; j++)
        assert_int_equal(atomic_load(&c.hits[j]), j < n ? 1 : 0);
    if (threads == 1)
        assert_int_equal(atomic_load(&c.other_thread), 0);
}

static void test_every_job_runs_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        run_and_check(threads, NJOBS);
        run_and_check(threads, 1);
        run_and_check(threads, 0);
        run_and_check(threads, 7);
    }
}

static void test_thread_count_settings(void **state)
{
    (void)state;
    int old = it_pool_set_threads(3);
    assert_int_equal(it_pool_threads(), 3);
    assert_int_equal(it_pool_set_threads(0), 3);
    assert_int_equal(it_pool_threads(), 1); /* clamped */
    it_pool_set_threads(1000);
    assert_int_equal(it_pool_threads(), IT_POOL_MAX_THREADS);
    it_pool_set_threads(old);
    int64_t mb = it_pool_set_min_bytes(-5);
    assert_int_equal(it_pool_min_bytes(), 0);
    it_pool_set_min_bytes(mb);
    assert_int_equal(it_pool_min_bytes(), mb);
}

/* Two threads calling it_parallel_for at once, many times over. */
typedef struct caller {
    counts c;
    int rounds;
    int ok;
} caller;

static void *caller_main(void *arg)
{
    caller *k = arg;
    k->ok = 1;
    for (int r = 0; r < k->rounds; r++) {
        for (int j = 0; j < NJOBS; j++)
            atomic_store(&k->c.hits[j], 0);
        k->c.first = pthread_self();
        it_parallel_for(NJOBS, count_job, &k->c);
        for (int j = 0; j < NJOBS; j++)
            if (atomic_load(&k->c.hits[j]) != 1)
                k->ok = 0;
    }
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    int old = it_pool_set_threads(3);
    static caller a, b;
    a.rounds = b.rounds = 200;
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, caller_main, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, caller_main, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    it_pool_set_threads(old);
    assert_true(a.ok);
    assert_true(b.ok);
}

/* The pool has workers when the process forks; the child's pool must work
 * (new workers) and give the same results. */
static void test_fork_child_gets_a_working_pool(void **state)
{
    (void)state;
    int old = it_pool_set_threads(2);
    run_and_check(2, NJOBS); /* workers exist now */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static counts c;
        c.first = pthread_self();
        it_parallel_for(NJOBS, count_job, &c);
        int bad = 0;
        for (int j = 0; j < NJOBS; j++)
            bad += atomic_load(&c.hits[j]) != 1;
        _exit(bad ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    it_pool_set_threads(old);
}

/* Reads assembled through the pool (every copy sent there) give the
 * brute-force reference values, with 1, 2 and 4 threads: windows gapped
 * and overlapping, steps, finite and infinite dims, float32 and float64. */
static void test_parallel_assembly_matches(void **state)
{
    (void)state;
    int64_t old_min = it_pool_set_min_bytes(0);
    int old_threads = it_pool_threads();
    for (int threads = 1; threads <= 4; threads *= 2) {
        it_pool_set_threads(threads);
        for (int variant = 0; variant < 2; variant++) {
            it_cache *cache;
            EXPECT_OK(it_cache_create(-1, -1, &cache));
            ft *f = ft_new(3, (int64_t[]){3, INF, INF}, variant ? IT_F32 : IT_F64);
            int64_t size[] = {3, 7, 5}, stride[] = {1, variant ? 9 : 3, 4}, offset[] = {0, -2, 1};
            ft_set_window(f, size, stride, offset, NULL);
            ft_create_ok(f, cache);
            int64_t boxes[][9] = {
                {0, -40, -33, 3, 60, 70, 1, 1, 1},
                {0, -40, -33, 3, 60, 70, 2, 3, 2},
                {1, 5, -100, 2, 6, 100, 1, 1, 7},
                {0, -45, -38, 3, 65, 75, 1, 1, 1},
            };
            for (size_t i = 0; i < sizeof boxes / sizeof boxes[0]; i++) {
                it_box bx = mkbox(3, boxes[i], boxes[i] + 3, boxes[i] + 6);
                ft_read_ok(f, &bx);
            }
            ft_destroy(f);
            it_cache_unref(cache);
        }
    }
    it_pool_set_threads(old_threads);
    it_pool_set_min_bytes(old_min);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_job_runs_once),
        cmocka_unit_test(test_thread_count_settings),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_fork_child_gets_a_working_pool),
        cmocka_unit_test(test_parallel_assembly_matches),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
