/*
 * it_buffer.h - owned contiguous buffers and borrowed strided views.
 *
 * An it_buffer is one allocation holding its header and its data (aligned to
 * 64 bytes): the region the core assembles for a read or for an argument of
 * f.  Whoever holds the pointer owns it; the binding hands ownership to torch
 * through DLPack and frees it from the DLPack deleter, on any thread.
 *
 * An it_view borrows memory someone else owns (a torch tensor returned by
 * f): a data pointer, a shape and byte strides.
 */
#ifndef IT_BUFFER_H
#define IT_BUFFER_H

#include "it_device.h"
#include "it_dtype.h"
#include "it_geom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct it_buffer {
    void *data;
    size_t nbytes;
    size_t capacity; /* bytes allocated for data (>= nbytes) */
    struct it_buffer *pool_next; /* private: the recycling pool's link */
    it_dtype dtype;
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    int64_t strides[IT_MAX_DIMS]; /* bytes, row-major */
    it_device device; /* where data lives */
    void *handle;     /* a device allocation: what device.ops->release takes */
} it_buffer;

typedef struct it_view {
    void *data;
    it_dtype dtype;
    int ndim;
    int device_type;
    int device_id;
    int64_t shape[IT_MAX_DIMS];
    int64_t strides[IT_MAX_DIMS]; /* bytes */
} it_view;

/* Allocate an uninitialised contiguous buffer; caller owns it.  IT_ETOOBIG
 * if its size overflows, IT_ENOMEM if the allocation fails. */
int it_buffer_create(it_dtype dt, int ndim, const int64_t *shape, it_buffer **out);
/* The same on a device: host memory as above when dev->ops is NULL, else
 * memory from dev->ops->alloc (the header stays in host memory). */
int it_buffer_create_on(const it_device *dev, it_dtype dt, int ndim, const int64_t *shape,
                        it_buffer **out);
/* Free a buffer (NULL is fine).  Safe on any thread. */
void it_buffer_free(it_buffer *b);
/* Keep up to limit_bytes of freed buffers (>= 16 KiB) for reuse, so
 * a read does not pay page faults on a fresh mapping each time.  0 (the
 * default) disables the pool and frees what it holds.  Thread-safe. */
void it_buffer_pool_set_limit(size_t limit_bytes);
/* The pool's limit in bytes. */
size_t it_buffer_pool_limit(void);
/* Bytes the pool holds right now. */
size_t it_buffer_pool_bytes(void);

/* A view of the whole buffer. */
void it_buffer_view(const it_buffer *b, it_view *v);
/* A view of memory on dev: ndim dims of shape, byte strides. */
void it_view_make(it_view *v, const it_device *dev, void *data, it_dtype dt, int ndim,
                  const int64_t *shape, const int64_t *strides);

/* Whether v is what a caller takes: ndim dims of this shape, on device
 * (device_type, device_id), of dtype dt.  IT_OK, or IT_ESHAPE, IT_EDEVICE or
 * IT_EDTYPE, checked in that order (0.3's), with a message naming `what`
 * ("window output").  The one check of every tensor handed to the core
 * in place of values it computes: f's outputs, blend's results, converted
 * and loaded tiles; the binding words the same codes for Python. */
int it_view_check(const it_view *v, const char *what, int ndim, const int64_t *shape, it_dtype dt,
                  int device_type, int device_id);

/* dst (op)= src (op: SUM, MAX, MIN or COPY) through dev: the host kernels
 * when dev->ops is NULL (both views then in host memory), else the device's
 * table.  IT_EDTYPE if the kernels lack op for the dtype. */
int it_dev_apply(const it_device *dev, it_combine op, const it_view *dst, const it_view *src);
/* Set every element of dst (memory on dev) to *value, one host element. */
int it_dev_fill(const it_device *dev, const it_view *dst, const void *value);

#ifdef __cplusplus
}
#endif
#endif
