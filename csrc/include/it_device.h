/*
 * it_device.h - where a buffer's memory lives, and the device-ops table.
 *
 * The core never dereferences memory it does not know to be host memory.
 * Every copy, fill and combine of tile values goes through it_dev_apply,
 * which runs the host kernels (it_dtype.h) when the memory is plain host
 * memory and otherwise calls a device-ops table: the binding's, which drives
 * torch ops on the device (so CUDA needs no CUDA headers at build time and
 * no GPU at import time), or a test's.
 *
 * A device is (DLPack device type, device id, ops).  ops == NULL is host
 * memory handled by the core's own kernels, and then the type must be
 * IT_DEVICE_CPU.  A table may also manage host memory (type IT_DEVICE_CPU
 * with ops): the core then treats that memory exactly as it treats CUDA
 * memory, which is how the device path is tested on machines without a GPU.
 *
 * Ordering: the table decides.  The binding's runs every operation as a torch
 * op on torch's current stream, so operations on one device run in the order
 * the core issues them, after whatever f queued on that stream.
 */
#ifndef IT_DEVICE_H
#define IT_DEVICE_H

#include "it_dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IT_DEVICE_CPU 1  /* DLPack's kDLCPU */
#define IT_DEVICE_CUDA 2 /* DLPack's kDLCUDA */

#define IT_DEVOPS_VERSION 1

struct it_view;

typedef struct it_devops {
    int version; /* IT_DEVOPS_VERSION */
    void *ctx;
    /* Allocate nbytes of the device's memory.  *data is its address (at
     * least 64-byte aligned), *handle what release takes.  IT_OK, or an
     * error code (IT_ECALLBACK when the callee recorded its own message). */
    int (*alloc)(void *ctx, int device_type, int device_id, size_t nbytes,
                 void **data, void **handle);
    /* Free an allocation.  May be called on any thread. */
    void (*release)(void *ctx, void *handle);
    /* dst (op)= src elementwise over dst->shape (src has the same shape; its
     * strides may be 0 to broadcast).  Each view says where its memory is:
     * the device of the table, or IT_DEVICE_CPU for plain host memory (a
     * fill value, a staging buffer for a persistent store).  op is SUM, MAX,
     * MIN or COPY, with the meaning of it_dtype.h. */
    int (*apply)(void *ctx, it_combine op, const struct it_view *dst, const struct it_view *src);
} it_devops;

typedef struct it_device {
    int type;
    int id;
    const it_devops *ops; /* NULL: host memory, the core's kernels */
} it_device;

/* The host device (type CPU, no ops). */
extern const it_device it_host_device;

#ifdef __cplusplus
}
#endif
#endif
