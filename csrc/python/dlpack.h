/*
 * dlpack.h - the DLPack ABI, as the DLPack specification defines it
 * (https://dmlc.github.io/dlpack/latest/c_api.html), declared here so the
 * binding needs no third-party header.  Only the parts this binding uses.
 */
#ifndef IT_DLPACK_H
#define IT_DLPACK_H

#include <stdint.h>

#define IT_DLPACK_MAJOR 1
#define IT_DLPACK_MINOR 0

enum {
    kDLCPU = 1,
    kDLCUDA = 2,
    kDLCUDAHost = 3,
    kDLCUDAManaged = 13,
};

enum {
    kDLInt = 0,
    kDLUInt = 1,
    kDLFloat = 2,
    kDLBfloat = 4,
    kDLComplex = 5,
    kDLBool = 6,
};

typedef struct {
    int32_t device_type; /* an enum in the spec; enums are int-sized */
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL means compact row-major */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

#define DLPACK_FLAG_BITMASK_READ_ONLY (1ULL << 0)

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* The C exchange table (DLPack 1.3) a framework publishes as the capsule
 * "dlpack_exchange_api" in its tensor type's __dlpack_c_exchange_api__: the
 * same conversions as __dlpack__ / from_dlpack without building capsules or
 * calling into Python.  Only the members this binding uses are typed. */
typedef struct DLPackExchangeAPIHeader {
    DLPackVersion version;
    struct DLPackExchangeAPIHeader *prev_api;
} DLPackExchangeAPIHeader;

typedef struct DLPackExchangeAPI {
    DLPackExchangeAPIHeader header;
    void *managed_tensor_allocator;
    int (*managed_tensor_from_py_object_no_sync)(void *py_object, DLManagedTensorVersioned **out);
    /* Wrap a managed tensor (ownership passes) as a new tensor object. */
    int (*managed_tensor_to_py_object_no_sync)(DLManagedTensorVersioned *tensor, void **out_py_object);
    /* Describe a tensor object in a caller-owned DLTensor without taking a
     * reference: valid while the object lives unchanged.  May be NULL. */
    int (*dltensor_from_py_object_no_sync)(void *py_object, DLTensor *out);
    int (*current_work_stream)(int32_t device_type, int32_t device_id, void **out_stream);
} DLPackExchangeAPI;

#endif
