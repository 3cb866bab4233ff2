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

#if PY_VERSION_HEX < 0x030A0000 /* Python 3.9: Py_NewRef arrived in 3.10 */
static inline PyObject *Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#endif

#include "dlpack.h"
#include "it_tensor.h"

typedef struct module_state {
    PyTypeObject *Cache_type;
    PyTypeObject *Tensor_type;
    PyTypeObject *H5File_type;
    PyTypeObject *Blob_type;
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
    PyObject *CorruptBlobError;
    /* infinite_tensor/progress.py's hooks (NULL: none): progress(id, done,
     * total) as a plan of PROGRESS_MIN windows or more advances (at most
     * PROGRESS_STEPS times); read(id, stats) after a read that computed
     * windows of its tensor, when read_wanted() is true (the logger's level) */
    PyObject *progress_hook;
    PyObject *read_hook;
    PyObject *read_wanted;
    /* infinite_tensor/_sizing.py's probe (NULL: none): probe(device) -> the
     * bytes available there (an int, or None when unknown), asked before a
     * read whose estimate (it_tensor_read_estimate) needs probe_min_bytes
     * or more; a read needing more than is available raises MemoryError */
    PyObject *memory_probe;
    int64_t probe_min_bytes;
} module_state;

#define PROGRESS_MIN 32
#define PROGRESS_STEPS 200

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
/* Turn a core error code into the matching Python exception (with the
 * core's message); returns NULL. */
PyObject *raise_core(module_state *st, int rc);
/* The exception class of a core error code. */
PyObject *core_error_class(module_state *st, int rc);

/* convert.c: Python values into the core's types (the core checks them) */
#define GIVEN_MAX 8
/* Values past what the core can be told (a Python int past int64), each
 * clamped to its own value that every core check refuses. */
typedef struct given {
    int n;
    long long clamped[GIVEN_MAX];
    PyObject *obj[GIVEN_MAX]; /* the values given (strong references) */
} given;
void given_init(given *g);
void given_clear(given *g);
/* An int64 from anything with __index__.  Past int64: clamped and recorded
 * in g, or OverflowError when g is NULL.  -1 with an exception. */
int to_int64(PyObject *o, int64_t *out, given *g);
/* The same, past int64 meaning the nearest int64 (a limit: "no limit"). */
int to_int64_saturating(PyObject *o, int64_t *out);
/* Up to max entries of a sequence of ints (None: *none_value, or an error
 * when none_value is NULL).  Returns the sequence's length, which may exceed
 * max (entries past max are not read), or -1 with an exception; `what` is
 * the TypeError's message for a non-sequence. */
int int64_seq(PyObject *seq, int64_t *out, int max, const int64_t *none_value, given *g, const char *what);
/* A window tuple (size, stride, offset, dimension_map), the map's entries
 * ints or None, as TensorWindow._core_tuple() gives it; unchecked (the core
 * checks: it_window_check).  -1 with an exception. */
int parse_window(PyObject *obj, int ncoords, it_window *w, given *g);
/* The DLPack device of a torch.device; ValidationError for one the core
 * cannot hold (not cpu or cuda). */
int device_code(module_state *st, PyObject *device, int *type, int *id);
/* raise_core, with the values g recorded shown in place of their clamped
 * stand-ins; clears g.  Returns NULL. */
PyObject *raise_given(module_state *st, int rc, given *g);

/* dlpack.c */
/* Export a buffer (ownership passes to torch) as a torch.Tensor with the
 * given shape (ndim dims; must have the buffer's element count). */
PyObject *export_buffer(module_state *st, it_buffer *buf, int ndim, const int64_t *shape);
/* A torch.Tensor over memory the core owns (no ownership passes): valid only
 * while that memory lives, so used only inside one call. */
PyObject *wrap_view(module_state *st, const it_view *v);
/* A torch.Tensor over memory someone else keeps alive: release(ctx) runs
 * when torch frees the tensor (on any thread), or now on failure. */
PyObject *export_kept(module_state *st, const it_view *v, void (*release)(void *), void *ctx);
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

/* blob.c: the Blob type (a TensorBlob's file; it_blob.h) */
int blob_init(PyObject *module, module_state *st);

#endif
