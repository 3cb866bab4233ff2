/*
 * common.c - the thread-local error slot, the allocator hook, the
 * monotonic clock of the tensors' counters, and a whole-buffer pwrite.
 *
 * Errors: one message buffer per thread.  it_error_set formats into it and
 * returns the code, so a detecting site reads `return it_error_set(...)`.
 *
 * Allocation: every core allocation funnels through one hook so tests can
 * (a) fail the Nth allocation to walk every error path and (b) count live
 * blocks to prove nothing leaks.  The counters are atomics because it_free
 * runs from DLPack deleters on whatever thread torch releases a tensor.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pwrite */

#include "it_common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_msg[512];
static _Thread_local int err_code;

int it_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_code = code;
    return code;
}

const char *it_error_message(void) { return err_msg; }
int it_error_code(void) { return err_code; }

void it_error_clear(void)
{
    err_msg[0] = '\0';
    err_code = IT_OK;
}

static void *libc_malloc(size_t n, void *ctx) { (void)ctx; return malloc(n); }
static void *libc_calloc(size_t n, size_t s, void *ctx) { (void)ctx; return calloc(n, s); }
static void *libc_realloc(void *p, size_t n, void *ctx) { (void)ctx; return realloc(p, n); }
static void libc_free(void *p, void *ctx) { (void)ctx; free(p); }

static it_allocator hook = {libc_malloc, libc_calloc, libc_realloc, libc_free, NULL};
static atomic_long live_blocks;
static atomic_long fail_countdown; /* > 0: allocations left before failing */
static atomic_int fail_armed;

void it_alloc_set(const it_allocator *a)
{
    if (a)
        hook = *a;
    else
        hook = (it_allocator){libc_malloc, libc_calloc, libc_realloc, libc_free, NULL};
}

void it_alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
    atomic_store(&fail_armed, n > 0);
}

long it_alloc_live_blocks(void) { return atomic_load(&live_blocks); }

/* 1 if this allocation must fail (failure injection). */
static int injected_failure(void)
{
    if (!atomic_load_explicit(&fail_armed, memory_order_relaxed))
        return 0;
    return atomic_fetch_sub(&fail_countdown, 1) <= 1;
}

void *it_malloc(size_t size)
{
    if (injected_failure())
        return NULL;
    void *p = hook.malloc_fn(size ? size : 1, hook.ctx);
    if (p)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

void *it_calloc(size_t n, size_t size)
{
    if (injected_failure())
        return NULL;
    if (n == 0 || size == 0)
        n = size = 1;
    void *p = hook.calloc_fn(n, size, hook.ctx);
    if (p)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

void *it_realloc(void *p, size_t size)
{
    if (!p)
        return it_malloc(size);
    if (injected_failure())
        return NULL;
    return hook.realloc_fn(p, size ? size : 1, hook.ctx);
}

void it_free(void *p)
{
    if (!p)
        return;
    atomic_fetch_sub(&live_blocks, 1);
    hook.free_fn(p, hook.ctx);
}

int64_t it__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int it_pwrite_all(int fd, const void *buf, size_t n, int64_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += k;
    }
    return 0;
}
