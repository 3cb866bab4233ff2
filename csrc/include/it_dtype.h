/*
 * it_dtype.h - element types and the strided N-d kernels.
 *
 * The core stores every element type torch exchanges through DLPack.  The
 * kernels work on N-d regions described by a shape and byte strides for the
 * destination and the source; they merge dimensions that are contiguous in
 * both operands, so a region that is contiguous in its last dims becomes a
 * few long memcpy or add loops.
 *
 * Combining rules (the same as torch's elementwise ops on CPU):
 *   SUM   a + b; integers wrap around, bool is logical or, float16/bfloat16
 *         are added in float32 and rounded to nearest even;
 *   MAX   torch.maximum: NaN wins; bool is or;
 *   MIN   torch.minimum: NaN wins; bool is and;
 *   COPY  the source replaces the destination.
 * MAX and MIN are not defined for complex types.
 */
#ifndef IT_DTYPE_H
#define IT_DTYPE_H

#include "it_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum it_dtype {
    IT_BOOL = 0,
    IT_U8,
    IT_I8,
    IT_I16,
    IT_I32,
    IT_I64,
    IT_U16,
    IT_U32,
    IT_U64,
    IT_F16,
    IT_BF16,
    IT_F32,
    IT_F64,
    IT_C64,
    IT_C128,
    IT_DTYPE_COUNT
} it_dtype;

typedef enum it_combine {
    IT_COMBINE_SUM = 0,
    IT_COMBINE_MAX,
    IT_COMBINE_MIN,
    IT_COMBINE_COPY,
    IT_COMBINE_CUSTOM /* a callback combines; the kernels never see it */
} it_combine;

/* Bytes per element; 0 for an invalid dtype. */
size_t it_dtype_size(it_dtype dt);
/* Short name ("float32"), or "invalid". */
const char *it_dtype_name(it_dtype dt);
/* 1 if the kernels implement op for dt. */
int it_dtype_supports(it_dtype dt, it_combine op);

/* Conversions used by the float16/bfloat16 kernels (round to nearest even). */
float it_half_to_float(uint16_t h);
uint16_t it_float_to_half(float f);
float it_bf16_to_float(uint16_t h);
uint16_t it_float_to_bf16(float f);

/*
 * dst[i] (op)= src[i] over an ndim region of the given shape (ndim 0 to IT_MAX_DIMS:
 * 0 is one element).  Strides are in bytes; the source's may be negative or
 * zero (broadcast), the destination's negative but not zero.  Returns
 * IT_EDTYPE if op is not supported for dt, IT_EINVAL beyond IT_MAX_DIMS (the
 * copy and fill kernels then do nothing).
 */
int it_combine_nd(it_combine op, it_dtype dt, int ndim, const int64_t *shape,
                  void *dst, const int64_t *dst_strides,
                  const void *src, const int64_t *src_strides);

/* Copy elements of elsize bytes (a plain byte copy, any dtype). */
void it_copy_nd(size_t elsize, int ndim, const int64_t *shape,
                void *dst, const int64_t *dst_strides,
                const void *src, const int64_t *src_strides);

/* Set every element of the region to *value (elsize bytes). */
void it_fill_nd(size_t elsize, int ndim, const int64_t *shape,
                void *dst, const int64_t *dst_strides, const void *value);

/* Row-major byte strides for a contiguous buffer; returns total bytes, or -1
 * on overflow.  A buffer with a zero extent is 0 bytes whatever the other
 * extents (its strides are then all elsize). */
int64_t it_contiguous_strides(size_t elsize, int ndim, const int64_t *shape,
                              int64_t *strides);

#ifdef __cplusplus
}
#endif
#endif
