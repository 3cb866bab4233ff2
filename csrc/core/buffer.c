/*
 * buffer.c - owned contiguous buffers.
 *
 * One allocation holds the header and the data, the data rounded up to a
 * 64-byte boundary so kernels and torch see cache-line-aligned memory.  A
 * buffer is freed with a single it_free, which is safe on any thread: that
 * is what lets the binding free it from a DLPack deleter.
 *
 * Buffers can be recycled through a pool: a fresh mapping costs a page fault
 * and a page clear per 4 KiB on first touch, about as much as the copy or the
 * fill that follows.  Sizes from 16 KiB up are rounded to size classes (eight
 * per power of two, so at most 12.5% is wasted); each class keeps a LIFO list
 * of freed buffers, and the pool as a whole keeps at most limit bytes.  A
 * mutex guards it because buffers are freed from DLPack deleters on any
 * thread.  The pool is off (limit 0) until the binding turns it on, so the
 * core tests see every allocation.
 */
#include "it_buffer.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define DATA_ALIGN 64
#define POOL_MIN_BYTES (16u * 1024u)
#define POOL_CLASSES 48

typedef struct pool_class {
    size_t capacity;
    it_buffer *head;
} pool_class;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pool_class pool[POOL_CLASSES];
static size_t pool_bytes, pool_limit;

/* The capacity class of a request: rounded up to 1/8 of its power of two. */
static size_t class_capacity(size_t n)
{
    if (n < POOL_MIN_BYTES)
        return n;
    size_t p = 1;
    while (p <= n / 2)
        p <<= 1; /* p: the largest power of two <= n */
    size_t step = p / 8;
    return (n + step - 1) / step * step;
}

static it_buffer *pool_take(size_t capacity)
{
    it_buffer *b = NULL;
    if (capacity < POOL_MIN_BYTES)
        return NULL;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_CLASSES; i++) {
        if (pool[i].capacity == capacity && pool[i].head) {
            b = pool[i].head;
            pool[i].head = b->pool_next;
            pool_bytes -= capacity;
            break;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    return b;
}

/* 1 if the pool kept b. */
static int pool_put(it_buffer *b)
{
    int kept = 0;
    if (b->capacity < POOL_MIN_BYTES)
        return 0;
    pthread_mutex_lock(&pool_lock);
    if (pool_bytes + b->capacity <= pool_limit) {
        int free_slot = -1;
        for (int i = 0; i < POOL_CLASSES && !kept; i++) {
            if (pool[i].capacity == b->capacity) {
                b->pool_next = pool[i].head;
                pool[i].head = b;
                kept = 1;
            } else if (free_slot < 0 && !pool[i].head) {
                free_slot = i;
            }
        }
        if (!kept && free_slot >= 0) {
            pool[free_slot].capacity = b->capacity;
            b->pool_next = NULL;
            pool[free_slot].head = b;
            kept = 1;
        }
        if (kept)
            pool_bytes += b->capacity;
    }
    pthread_mutex_unlock(&pool_lock);
    return kept;
}

void it_buffer_pool_set_limit(size_t limit_bytes)
{
    it_buffer *drop = NULL;
    pthread_mutex_lock(&pool_lock);
    pool_limit = limit_bytes;
    for (int i = 0; i < POOL_CLASSES && pool_bytes > pool_limit; i++) {
        while (pool[i].head && pool_bytes > pool_limit) {
            it_buffer *b = pool[i].head;
            pool[i].head = b->pool_next;
            pool_bytes -= b->capacity;
            b->pool_next = drop;
            drop = b;
        }
    }
    pthread_mutex_unlock(&pool_lock);
    while (drop) {
        it_buffer *next = drop->pool_next;
        it_free(drop);
        drop = next;
    }
}

size_t it_buffer_pool_limit(void)
{
    pthread_mutex_lock(&pool_lock);
    size_t n = pool_limit;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

size_t it_buffer_pool_bytes(void)
{
    pthread_mutex_lock(&pool_lock);
    size_t n = pool_bytes;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

/* Check a buffer's dtype and shape; fill strides and *nbytes. */
static int buffer_layout(it_dtype dt, int ndim, const int64_t *shape, int64_t *strides, int64_t *nbytes)
{
    size_t es = it_dtype_size(dt);
    if (es == 0)
        return it_error_set(IT_EDTYPE, "invalid dtype %d", (int)dt);
    if (ndim < 0 || ndim > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "a buffer must have 0 to %d dims", IT_MAX_DIMS);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0)
            return it_error_set(IT_EINVAL, "a buffer extent must be >= 0, got %lld on dim %d",
                                (long long)shape[d], d);
    *nbytes = it_contiguous_strides(es, ndim, shape, strides);
    if (*nbytes < 0 || (uint64_t)*nbytes > SIZE_MAX / 2)
        return it_error_set(IT_ETOOBIG, "a region of this size cannot be allocated");
    return IT_OK;
}

static void buffer_set(it_buffer *b, it_dtype dt, int ndim, const int64_t *shape,
                       const int64_t *strides, int64_t nbytes)
{
    b->pool_next = NULL;
    b->nbytes = (size_t)nbytes;
    b->dtype = dt;
    b->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        b->shape[d] = shape[d];
        b->strides[d] = strides[d];
    }
}

int it_buffer_create_on(const it_device *dev, it_dtype dt, int ndim, const int64_t *shape,
                        it_buffer **out)
{
    int64_t strides[IT_MAX_DIMS], nbytes;
    int rc;
    *out = NULL;
    if (!dev->ops)
        return it_buffer_create(dt, ndim, shape, out);
    if ((rc = buffer_layout(dt, ndim, shape, strides, &nbytes)))
        return rc;
    it_buffer *b = it_calloc(1, sizeof *b);
    if (!b)
        return it_error_set(IT_ENOMEM, "out of memory allocating a buffer header");
    if ((rc = dev->ops->alloc(dev->ops->ctx, dev->type, dev->id, (size_t)nbytes, &b->data, &b->handle))) {
        it_free(b);
        return rc;
    }
    buffer_set(b, dt, ndim, shape, strides, nbytes);
    b->capacity = (size_t)nbytes;
    b->device = *dev;
    *out = b;
    return IT_OK;
}

int it_buffer_create(it_dtype dt, int ndim, const int64_t *shape, it_buffer **out)
{
    int64_t strides[IT_MAX_DIMS], nbytes;
    int rc;
    *out = NULL;
    if ((rc = buffer_layout(dt, ndim, shape, strides, &nbytes)))
        return rc;
    size_t capacity = class_capacity((size_t)nbytes);
    it_buffer *b = pool_take(capacity);
    if (!b) {
        size_t header = (sizeof(it_buffer) + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
        char *mem = it_malloc(header + capacity + DATA_ALIGN);
        if (!mem)
            return it_error_set(IT_ENOMEM, "out of memory allocating a %lld-byte region",
                                (long long)nbytes);
        b = (it_buffer *)mem;
        uintptr_t p = (uintptr_t)(mem + header);
        p = (p + DATA_ALIGN - 1) & ~(uintptr_t)(DATA_ALIGN - 1);
        b->data = (void *)p;
        b->capacity = capacity;
    }
    buffer_set(b, dt, ndim, shape, strides, nbytes);
    b->device = it_host_device;
    b->handle = NULL;
    *out = b;
    return IT_OK;
}

void it_buffer_free(it_buffer *b)
{
    if (!b)
        return;
    if (b->device.ops) { /* a header in host memory, the data on the device */
        b->device.ops->release(b->device.ops->ctx, b->handle);
        it_free(b);
    } else if (!pool_put(b)) {
        it_free(b);
    }
}

void it_buffer_view(const it_buffer *b, it_view *v)
{
    v->data = b->data;
    v->dtype = b->dtype;
    v->ndim = b->ndim;
    v->device_type = b->device.type;
    v->device_id = b->device.id;
    memcpy(v->shape, b->shape, sizeof(int64_t) * (size_t)b->ndim);
    memcpy(v->strides, b->strides, sizeof(int64_t) * (size_t)b->ndim);
}

/* "(3, 6)" into buf (cut short if it does not fit). */
static const char *shape_text(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, ndim == 1 ? ",)" : ")");
    return buf;
}

static const char *device_text(char *buf, size_t size, int type, int id)
{
    if (type == IT_DEVICE_CPU)
        snprintf(buf, size, "cpu");
    else if (type == IT_DEVICE_CUDA)
        snprintf(buf, size, "cuda:%d", id);
    else
        snprintf(buf, size, "DLPack device %d:%d", type, id);
    return buf;
}

int it_view_check(const it_view *v, const char *what, int ndim, const int64_t *shape, it_dtype dt,
                  int device_type, int device_id)
{
    int same = v->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = v->shape[d] == shape[d];
    if (!same) {
        char got[160], want[160];
        return it_error_set(IT_ESHAPE, "%s has shape %s, expected %s", what,
                            shape_text(got, sizeof got, v->ndim, v->shape), shape_text(want, sizeof want, ndim, shape));
    }
    if (v->device_type != device_type || v->device_id != device_id) {
        char got[40], want[40];
        return it_error_set(IT_EDEVICE, "%s is on device %s, expected %s", what,
                            device_text(got, sizeof got, v->device_type, v->device_id),
                            device_text(want, sizeof want, device_type, device_id));
    }
    if (v->dtype != dt)
        return it_error_set(IT_EDTYPE, "%s has dtype %s, expected %s", what, it_dtype_name(v->dtype),
                            it_dtype_name(dt));
    return IT_OK;
}
