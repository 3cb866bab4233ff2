/*
 * it_pool.h - a small pool of worker threads for large copies.
 *
 * it_parallel_for(n, fn, ctx) runs fn(ctx, 0) .. fn(ctx, n - 1), spread over
 * the pool's workers and the calling thread, and returns when all have run.
 * Jobs must be independent (they write disjoint memory) and must not call
 * back into Python or into other core functions: they are plain loops over
 * memory the caller keeps alive and unchanged until the call returns.
 *
 * Workers start on first use.  Only one parallel_for runs at a time; a
 * second caller meanwhile (another thread) runs its jobs itself.  The pool
 * is fork-safe: a child process starts with no workers and makes new ones
 * when it needs them.
 *
 * The thread count (caller included) defaults to the number of CPUs, at
 * most 4 (memory bandwidth is saturated well before that on most machines),
 * or the environment variable INFINITE_TENSOR_NUM_THREADS; 1 turns the pool
 * off.
 */
#ifndef IT_POOL_H
#define IT_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IT_POOL_MAX_THREADS 64

typedef void (*it_job_fn)(void *ctx, int64_t job);

/* Run n jobs (in parallel when the pool has more than one thread). */
void it_parallel_for(int64_t n, it_job_fn fn, void *ctx);
/* Threads used by it_parallel_for, the caller included. */
int it_pool_threads(void);
/* Work below this many bytes is not worth waking threads for (callers
 * check; default 512 KiB).  Tests set 0 to send every copy through the pool.
 * Returns the previous value. */
int64_t it_pool_min_bytes(void);
int64_t it_pool_set_min_bytes(int64_t bytes);
/* Set the thread count (clamped to [1, IT_POOL_MAX_THREADS]); workers beyond
 * it sit tasks out.  Returns the previous count. */
int it_pool_set_threads(int n);

#ifdef __cplusplus
}
#endif
#endif
