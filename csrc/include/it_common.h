/*
 * it_common.h - errors and allocation for the infinite_tensor core.
 *
 * Errors are ints.  A fallible core function returns IT_OK (0) or a negative
 * IT_E* code and hands results back through out-parameters.  The function
 * that detects a problem records one human-readable message with
 * it_error_set(); callers only propagate the code.  The message lives in
 * thread-local storage, so two threads failing at once do not mix messages.
 *
 * All core allocations go through it_malloc/it_calloc/it_realloc/it_free.
 * Tests can install an allocator hook that fails the Nth allocation and can
 * count live blocks to find leaks.  it_free may be called from any thread
 * (DLPack deleters run wherever torch drops its last reference).
 */
#ifndef IT_COMMON_H
#define IT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IT_OK 0
#define IT_ENOMEM (-1)     /* an allocation failed */
#define IT_EINVAL (-2)     /* an argument is malformed */
#define IT_ERANGE (-3)     /* a coordinate or size is outside what the core represents */
#define IT_ESHAPE (-4)     /* a buffer has the wrong shape */
#define IT_EDTYPE (-5)     /* a buffer has the wrong dtype / the dtype lacks an operation */
#define IT_EDEVICE (-6)    /* a buffer lives on the wrong device */
#define IT_ECALLBACK (-7)  /* a callback failed; the callback recorded its own error */
#define IT_ESTATE (-8)     /* the object cannot do this now (cleared tensor, missing window) */
#define IT_ECYCLE (-9)     /* a tensor's f reads the same tensor again */
#define IT_ETOOBIG (-10)   /* a request is too large to plan or allocate */
#define IT_EIO (-11)       /* a storage backend failed to read or write (file, HDF5, callback store) */
#define IT_ECORRUPT (-12)  /* a file is not in a format this code reads (damaged, foreign, newer) */

/* Record the error message (printf-style) for this thread; returns code. */
int it_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The last message recorded on this thread ("" if none); borrowed. */
const char *it_error_message(void);
/* The last code recorded on this thread (IT_OK if none). */
int it_error_code(void);
void it_error_clear(void);

/* Allocator hook: all four functions are required; ctx is passed back. */
typedef struct it_allocator {
    void *(*malloc_fn)(size_t size, void *ctx);
    void *(*calloc_fn)(size_t n, size_t size, void *ctx);
    void *(*realloc_fn)(void *p, size_t size, void *ctx);
    void (*free_fn)(void *p, void *ctx);
    void *ctx;
} it_allocator;

/* Install a hook (NULL restores the C library).  Not thread-safe: call it
 * before any other core function runs. */
void it_alloc_set(const it_allocator *a);

/* Each returns NULL on failure (and does NOT record an error: the caller
 * knows what it was allocating and says so).  it_free(NULL) is a no-op. */
void *it_malloc(size_t size);
void *it_calloc(size_t n, size_t size);
void *it_realloc(void *p, size_t size);
void it_free(void *p);

/* Test support: make the allocation numbered n (counting from 1 after this
 * call) and every later one fail; n <= 0 disables.  Counts every
 * it_malloc/it_calloc/it_realloc. */
void it_alloc_fail_after(long n);
/* Blocks currently allocated through the it_* functions. */
long it_alloc_live_blocks(void);

/*
 * Threads.  The core keeps no locks of its own: callers serialise every call
 * into it with one lock of theirs (the Python binding: the GIL), which a
 * callback (f, blend, a backend) may release while it runs.  So a read can
 * meet windows that another thread is computing right now.  It computes the
 * others, then waits for those, with the caller's lock released through these
 * hooks: release() gives the lock up and returns a token, reacquire(token)
 * takes it back.  The core also gives the lock up around work that touches
 * nothing shared (copying a read's pinned tiles into its result; see
 * assemble.c), so other threads run meanwhile.  Without hooks the core
 * waits holding nothing (right when the caller has no lock, e.g. one
 * thread).  Set them once, before any read.
 */
typedef struct it_lock_hooks {
    void *(*release)(void);
    void (*reacquire)(void *token);
} it_lock_hooks;
void it_set_lock_hooks(const it_lock_hooks *hooks);

#define IT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define IT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Internal: x86-64 builds compile the arithmetic row kernels twice, for the
 * baseline and for AVX2, and pick one at load time (GCC/Clang function
 * multiversioning; dtype.c, mean.c).  No FMA: both give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define IT_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef IT_MULTIVERSION
#define IT_MULTIVERSION
#endif

#ifdef __cplusplus
}
#endif
/* pwrite all n bytes at off, going on after a signal or a short write:
 * 0, or -1 with errno (EIO for a write that makes no progress). */
int it_pwrite_all(int fd, const void *buf, size_t n, int64_t off);

#endif
