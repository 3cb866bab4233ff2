/*
 * wait.c - waiting for work another thread is doing (see it_common.h,
 * "Threads", and the claims in plan.c).
 *
 * Every end of a piece of shared work (a batch of claimed windows, the
 * completion of a custom-blend tensor's tiles) bumps one process-wide epoch.
 * A thread that found work in progress notes the epoch, finishes what it can
 * do itself, then sleeps until the epoch moves and looks again.  Waking on
 * any progress, not on the one piece awaited, keeps the bookkeeping to a
 * counter; a waiter re-plans after each wake-up, which is cheap next to f.
 * A planner that may give the lock up while it plans (a tile loaded without
 * it) compares it__wait_others_epoch before and after: when another thread
 * ended some work meanwhile, what it planned from the tiles it looked at
 * first may be stale, and it plans again (plan.c, ensure_windows).
 *
 * No lost wake-ups: the epoch is read and bumped under the caller's lock,
 * and a waiter takes `mu` before giving that lock up, so a bump that follows
 * the waiter's look at the epoch cannot broadcast before the waiter sleeps.
 *
 * Owners of work are threads, named by the address of a thread-local byte,
 * and stamped with the fork generation: a forked child bumps it, so work
 * that threads of the parent had in progress (threads the child does not
 * have) stops counting there instead of being waited for forever.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "wait.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t moved = PTHREAD_COND_INITIALIZER;
static it_lock_hooks hooks;
static _Atomic uint64_t epoch;
static _Atomic uint64_t fork_gen = 1;
static atomic_int waiters;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static _Thread_local char me;
static _Thread_local uint64_t own_bumps; /* this thread's it__wait_progress calls */

static void before_fork(void) { pthread_mutex_lock(&mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&mu); }
static void after_fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&moved, NULL);
    atomic_store(&waiters, 0);
    atomic_fetch_add(&fork_gen, 1);
}

static void install_atfork(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

void it_set_lock_hooks(const it_lock_hooks *h)
{
    if (h)
        hooks = *h;
    else
        hooks = (it_lock_hooks){0};
}

it_owner it__owner_self(void)
{
    pthread_once(&atfork_once, install_atfork);
    return (it_owner){&me, atomic_load(&fork_gen)};
}

int it__owner_live(it_owner o) { return o.thread != NULL && o.gen == atomic_load(&fork_gen); }

int it__owner_is_self(it_owner o) { return o.thread == &me && it__owner_live(o); }

void *it__unlock(void) { return hooks.release ? hooks.release() : NULL; }

void it__relock(void *token)
{
    if (hooks.reacquire)
        hooks.reacquire(token);
}

uint64_t it__wait_epoch(void) { return atomic_load(&epoch); }

uint64_t it__wait_others_epoch(void) { return atomic_load(&epoch) - own_bumps; }

void it__wait_progress(void)
{
    own_bumps++;
    atomic_fetch_add(&epoch, 1);
    if (atomic_load(&waiters) > 0) {
        pthread_mutex_lock(&mu);
        pthread_cond_broadcast(&moved);
        pthread_mutex_unlock(&mu);
    }
}

void it__wait_until_moved(uint64_t seen)
{
    pthread_mutex_lock(&mu);
    /* count ourselves before looking: a bump then either sees a waiter and
     * broadcasts under mu, or happened before our look (sequentially
     * consistent atomics on both sides) */
    atomic_fetch_add(&waiters, 1);
    if (atomic_load(&epoch) != seen) {
        atomic_fetch_sub(&waiters, 1);
        pthread_mutex_unlock(&mu);
        return;
    }
    void *token = hooks.release ? hooks.release() : NULL;
    while (atomic_load(&epoch) == seen)
        pthread_cond_wait(&moved, &mu);
    atomic_fetch_sub(&waiters, 1);
    pthread_mutex_unlock(&mu);
    if (hooks.reacquire)
        hooks.reacquire(token);
}
