/*
 * pool.c - the worker threads behind it_parallel_for (see it_pool.h).
 *
 * One task at a time: the caller publishes (fn, ctx, n) under the mutex,
 * bumps the generation and wakes the workers; everybody, the caller too,
 * claims job numbers from an atomic counter until they run out.  A worker
 * counts itself in `running` while it may touch the task, and the caller
 * returns only once its own jobs are done and `running` is back to zero, so
 * the task (which lives on the caller's stack) is never read after it ends.
 * A worker that wakes late finds the counter exhausted and goes back to
 * sleep.
 */
#define _POSIX_C_SOURCE 200809L

#include "it_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct task {
    it_job_fn fn;
    void *ctx;
    int64_t n;
    atomic_int_fast64_t next;
} task;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER; /* workers wait for a task */
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER; /* the caller waits for running == 0 */
static task *current;      /* the task being run, or NULL */
static uint64_t generation; /* bumped per task */
static int running;         /* workers inside a task */
static int started;         /* workers created */
static int wanted = -1;     /* thread count, caller included; -1: not decided yet */
static int atfork_done;
static atomic_int_fast64_t min_bytes = 1 << 19;

static void run_jobs(task *tk)
{
    for (;;) {
        int64_t j = atomic_fetch_add(&tk->next, 1);
        if (j >= tk->n)
            return;
        tk->fn(tk->ctx, j);
    }
}

static void *worker(void *arg)
{
    int index = (int)(intptr_t)arg; /* workers past the thread count sit tasks out */
    uint64_t seen = 0;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (generation == seen || !current)
            pthread_cond_wait(&wake, &mu);
        seen = generation;
        if (index >= wanted - 1)
            continue;
        task *tk = current;
        running++;
        pthread_mutex_unlock(&mu);
        run_jobs(tk);
        pthread_mutex_lock(&mu);
        if (--running == 0)
            pthread_cond_broadcast(&idle); /* a caller may wait to start as well as to end */
    }
    return NULL;
}

/* Fork: the forking thread holds the mutex across fork, so the child gets
 * it unlocked and consistent; the child has none of the parent's workers
 * (whose waits the condition variables may still count), so it starts over
 * with fresh condition variables and an empty pool. */
static void before_fork(void) { pthread_mutex_lock(&mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&mu); }
static void after_fork_child(void)
{
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&idle, NULL);
    current = NULL;
    running = 0;
    started = 0;
    pthread_mutex_unlock(&mu);
}

static int default_threads(void)
{
    const char *env = getenv("INFINITE_TENSOR_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1)
            return v > IT_POOL_MAX_THREADS ? IT_POOL_MAX_THREADS : (int)v;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return ncpu < 1 ? 1 : ncpu > 4 ? 4 : (int)ncpu;
}

/* Under mu: decide the thread count, and start workers up to it. */
static void ensure_workers(void)
{
    if (wanted < 0)
        wanted = default_threads();
    if (!atfork_done) {
        atfork_done = pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
        if (!atfork_done)
            return; /* without fork safety, stay serial */
    }
    while (started < wanted - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker, (void *)(intptr_t)started);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break; /* fewer workers, same results */
        started++;
    }
}

void it_parallel_for(int64_t n, it_job_fn fn, void *ctx)
{
    task tk = {fn, ctx, n, 0};
    if (n <= 0)
        return;
    pthread_mutex_lock(&mu);
    if (n == 1 || current || wanted == 1) {
        /* one job, or another caller has the pool: run here */
        pthread_mutex_unlock(&mu);
        run_jobs(&tk);
        return;
    }
    ensure_workers();
    if (started == 0) {
        pthread_mutex_unlock(&mu);
        run_jobs(&tk);
        return;
    }
    while (running > 0) /* late workers of the previous task */
        pthread_cond_wait(&idle, &mu);
    current = &tk;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    run_jobs(&tk);
    pthread_mutex_lock(&mu);
    current = NULL;
    while (running > 0)
        pthread_cond_wait(&idle, &mu);
    pthread_mutex_unlock(&mu);
}

int it_pool_threads(void)
{
    pthread_mutex_lock(&mu);
    if (wanted < 0)
        wanted = default_threads();
    int n = wanted;
    pthread_mutex_unlock(&mu);
    return n;
}

int it_pool_set_threads(int n)
{
    pthread_mutex_lock(&mu);
    int old = wanted < 0 ? default_threads() : wanted;
    wanted = n < 1 ? 1 : n > IT_POOL_MAX_THREADS ? IT_POOL_MAX_THREADS : n;
    pthread_mutex_unlock(&mu);
    return old;
}

int64_t it_pool_min_bytes(void) { return atomic_load(&min_bytes); }

int64_t it_pool_set_min_bytes(int64_t bytes) { return atomic_exchange(&min_bytes, bytes < 0 ? 0 : bytes); }
