/*
 * buffer.c - owned contiguous buffers.
 *
 * One allocation holds the header and the data, the data rounded up to a
 * 64-byte boundary so kernels and torch see cache-line-aligned memory.  A
 * buffer is freed with a single it_free, which is safe on any thread: that
 * is what lets the binding free it from a DLPack deleter.
 *
 * Large buffers (a read's result, a big argument region) can be recycled
 * through a small pool: a fresh multi-megabyte mapping costs a page fault
 * and a page clear per 4 KiB on first touch, about as much as the copy that
 * fills it.  The pool keeps at most POOL_SLOTS buffers and limit bytes; a
 * request takes the smallest pooled buffer that fits without wasting more
 * than half of it.  A mutex guards it because buffers are freed from DLPack
 * deleters on any thread.
 */
#include "it_buffer.h"

#include <pthread.h>
#include <string.h>

#define DATA_ALIGN 64
#define POOL_MIN_BYTES (256u * 1024u)
#define POOL_SLOTS 8

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static it_buffer *pool[POOL_SLOTS];
static size_t pool_bytes, pool_limit;

static it_buffer *pool_take(size_t nbytes)
{
    it_buffer *best = NULL;
    int at = -1;
    if (nbytes < POOL_MIN_BYTES)
        return NULL;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS; i++) {
        it_buffer *b = pool[i];
        if (b && b->capacity >= nbytes && b->capacity / 2 <= nbytes &&
            (!best || b->capacity < best->capacity)) {
            best = b;
            at = i;
        }
    }
    if (best) {
        pool[at] = NULL;
        pool_bytes -= best->capacity;
    }
    pthread_mutex_unlock(&pool_lock);
    return best;
}

/* 1 if the pool kept b. */
static int pool_put(it_buffer *b)
{
    int kept = 0;
    if (b->capacity < POOL_MIN_BYTES)
        return 0;
    pthread_mutex_lock(&pool_lock);
    if (pool_bytes + b->capacity <= pool_limit) {
        for (int i = 0; i < POOL_SLOTS && !kept; i++) {
            if (!pool[i]) {
                pool[i] = b;
                pool_bytes += b->capacity;
                kept = 1;
            }
        }
    }
    pthread_mutex_unlock(&pool_lock);
    return kept;
}

void it_buffer_pool_set_limit(size_t limit_bytes)
{
    it_buffer *drop[POOL_SLOTS];
    int n = 0;
    pthread_mutex_lock(&pool_lock);
    pool_limit = limit_bytes;
    for (int i = 0; i < POOL_SLOTS; i++) {
        if (pool[i] && pool_bytes > pool_limit) {
            drop[n++] = pool[i];
            pool_bytes -= pool[i]->capacity;
            pool[i] = NULL;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    while (n > 0)
        it_free(drop[--n]);
}

size_t it_buffer_pool_bytes(void)
{
    pthread_mutex_lock(&pool_lock);
    size_t n = pool_bytes;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

int it_buffer_create(it_dtype dt, int ndim, const int64_t *shape, it_buffer **out)
{
    *out = NULL;
    size_t es = it_dtype_size(dt);
    if (es == 0)
        return it_error_set(IT_EDTYPE, "invalid dtype %d", (int)dt);
    if (ndim < 0 || ndim > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "a buffer must have 0 to %d dims", IT_MAX_DIMS);
    int64_t strides[IT_MAX_DIMS];
    int64_t nbytes = it_contiguous_strides(es, ndim, shape, strides);
    if (nbytes < 0 || (uint64_t)nbytes > SIZE_MAX / 2)
        return it_error_set(IT_ETOOBIG, "a region of this size cannot be allocated");
    it_buffer *b = pool_take((size_t)nbytes);
    if (!b) {
        size_t header = (sizeof(it_buffer) + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
        char *mem = it_malloc(header + (size_t)nbytes + DATA_ALIGN);
        if (!mem)
            return it_error_set(IT_ENOMEM, "out of memory allocating a %lld-byte region",
                                (long long)nbytes);
        b = (it_buffer *)mem;
        uintptr_t p = (uintptr_t)(mem + header);
        p = (p + DATA_ALIGN - 1) & ~(uintptr_t)(DATA_ALIGN - 1);
        b->data = (void *)p;
        b->capacity = (size_t)nbytes;
    }
    b->nbytes = (size_t)nbytes;
    b->dtype = dt;
    b->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        b->shape[d] = shape[d];
        b->strides[d] = strides[d];
    }
    *out = b;
    return IT_OK;
}

void it_buffer_free(it_buffer *b)
{
    if (b && !pool_put(b))
        it_free(b);
}

void it_buffer_view(const it_buffer *b, it_view *v)
{
    v->data = b->data;
    v->dtype = b->dtype;
    v->ndim = b->ndim;
    v->device_type = IT_DEVICE_CPU;
    v->device_id = 0;
    memcpy(v->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim);
    memcpy(v->strides, b->strides, sizeof(int64_t) * (size_t)b->ndim);
}
