/*
 * device.c - dispatch of copies, fills and combines to the host kernels or a
 * device's ops table (see it_device.h).
 */
#include "it_buffer.h"

#include <string.h>

const it_device it_host_device = {IT_DEVICE_CPU, 0, NULL};

void it_view_make(it_view *v, const it_device *dev, void *data, it_dtype dt, int ndim,
                  const int64_t *shape, const int64_t *strides)
{
    v->data = data;
    v->dtype = dt;
    v->ndim = ndim;
    v->device_type = dev->type;
    v->device_id = dev->id;
    memcpy(v->shape, shape, sizeof(int64_t) * (size_t)ndim);
    memcpy(v->strides, strides, sizeof(int64_t) * (size_t)ndim);
}

int it_dev_apply(const it_device *dev, it_combine op, const it_view *dst, const it_view *src)
{
    if (dev->ops)
        return dev->ops->apply(dev->ops->ctx, op, dst, src);
    return it_combine_nd(op, dst->dtype, dst->ndim, dst->shape, dst->data, dst->strides,
                         src->data, src->strides);
}

int it_dev_fill(const it_device *dev, const it_view *dst, const void *value)
{
    if (!dev->ops) {
        it_fill_nd(it_dtype_size(dst->dtype), dst->ndim, dst->shape, dst->data, dst->strides, value);
        return IT_OK;
    }
    /* one host element broadcast over the region */
    it_view src;
    int64_t zero[IT_MAX_DIMS] = {0};
    it_view_make(&src, &it_host_device, (void *)value, dst->dtype, dst->ndim, dst->shape, zero);
    return dev->ops->apply(dev->ops->ctx, IT_COMBINE_COPY, dst, &src);
}
