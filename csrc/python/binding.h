/*
 * binding.h - shared declarations of the CPython extension
 * infinite_tensor._core.  This is the only part of the project that includes
 * Python.h; it never re-implements core logic.
 *
 * Module state holds the torch entry points the Python package hands over at
 * import (_core._configure): the binding never imports torch by itself and
 * never links it.  It also holds the package's exception classes, so core
 * error codes turn into documented exceptions in one place (raise_core).
 */
#ifndef IT_BINDING_H
#define IT_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "dlpack.h"
#include "it_tensor.h"

typedef struct module_state {
    PyTypeObject *Cache_type;
    PyTypeObject *Tensor_type;
    PyTypeObject *H5File_type;
    /* torch entry points, set by _configure */
    PyObject *from_dlpack;      /* capsule -> torch.Tensor */
    PyObject *to_dlpack;        /* torch.Tensor -> capsule (legacy or versioned) */
    PyObject *torch_tensor;     /* the torch.Tensor type */
    PyObject *is_grad_enabled;  /* () -> bool */
    PyObject *set_grad_enabled; /* (bool) -> None */
    PyObject *tensor_is_neg;    /* torch.Tensor.is_neg, or NULL if torch has none */
    PyObject *tensor_is_conj;   /* torch.Tensor.is_conj, or NULL likewise */
    /* torch's C exchange table (NULL when this torch has none, or when
     * _configure was told not to use it): then the capsule functions above */
    const DLPackExchangeAPI *xapi;
    PyObject *xapi_owner; /* the capsule that keeps *xapi valid */
    /* the package's exceptions */
    PyObject *InfiniteTensorError;
    PyObject *ValidationError;
    PyObject *TileAccessError;
    PyObject *ShapeMismatchError;
    PyObject *DeviceMismatchError;
    PyObject *DtypeMismatchError;
} module_state;

/* _core.Cache: the core cache of a store. */
typedef struct CacheObject {
    PyObject_HEAD
    it_cache *cache;
} CacheObject;

/* _core.Tensor: a tensor node. */
typedef struct TensorObject {
    PyObject_HEAD
    it_tensor *t;
    it_cache *cache;
} TensorObject;

/* What keeps an imported tensor's memory valid until we release it: the
 * tensor object itself (exchange table), or a managed DLPack tensor whose
 * deleter we call (legacy or versioned capsule). */
typedef struct dl_hold {
    PyObject *obj;
    void *managed;
    int versioned;
} dl_hold;

/* module.c */
module_state *state_of_type(PyTypeObject *tp);
int state_ready(module_state *st); /* -1 with an exception if not configured */
/* Turn a core error code into the matching Python exception; returns NULL. */
PyObject *raise_core(module_state *st, int rc);

/* dlpack.c */
/* Export a buffer (ownership passes to torch) as a torch.Tensor with the
 * given shape (ndim dims; must have the buffer's element count). */
PyObject *export_buffer(module_state *st, it_buffer *buf, int ndim, const int64_t *shape);
/* A torch.Tensor over memory the core owns (no ownership passes): valid only
 * while that memory lives, so used only inside one call. */
PyObject *wrap_view(module_state *st, const it_view *v);
/* Import a torch tensor: fill *view and *hold.  -1 with an exception. */
int import_tensor(module_state *st, PyObject *obj, it_view *view, dl_hold *hold);
void release_hold(dl_hold *hold);
/* Map a DLPack dtype to the core's; -1 if unsupported. */
int dtype_from_dl(DLDataType dt);

/* device.c */
/* The device-ops table whose memory and arithmetic are torch's (tiles on
 * CUDA, or on the CPU when device ops are forced for tests). */
extern const it_devops binding_devops;
/* The table for a tensor on DLPack device type: NULL (the core's host
 * kernels) for the CPU unless forced. */
const it_devops *devops_for(int device_type);
/* _configure's part: the torch callables behind the table. */
int device_configure(module_state *st, PyObject *alloc, PyObject *apply);
void device_clear(void);
PyObject *mod_device_ops_on_cpu(PyObject *module, PyObject *args);

/* index.c */
/* Parse a __getitem__ key for a tensor of this shape into a box and the
 * mask of dims indexed by an int.  -1 with an exception. */
int parse_index(PyObject *key, int ndim, const int64_t *shape, it_box *box, uint32_t *squeeze);

/* tensor.c */
int tensor_type_init(PyObject *module, module_state *st);

/* store.c: the H5File type and attaching backends to tensors */
int store_init(PyObject *module, module_state *st);

#endif
