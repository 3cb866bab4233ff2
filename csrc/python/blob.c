/*
 * blob.c - _core.Blob, an open blob file (csrc/core/blob.c, it_blob.h), for
 * infinite_tensor/blob.py's TensorBlob.  The Python class keeps tensorblob's
 * semantics (modes, cursor, index forms, messages); this type moves rows:
 * writes from a CPU tensor, reads and gathers into new tensors, and
 * zero-copy views that keep the mapping alive.
 *
 * Errors: an I/O failure is the OSError subclass of its errno (so a missing
 * file is FileNotFoundError, a second writer BlockingIOError), a file that
 * is not a blob CorruptBlobError, a row out of range IndexError, a refused
 * operation (a forked writer) OSError.
 */
#include "binding.h"
#include "it_blob.h"

#include <string.h>

typedef struct BlobObject {
    PyObject_HEAD
    it_blob *b;     /* NULL once closed */
    PyObject *path; /* str, for messages */
} BlobObject;

static module_state *st_of(PyObject *o) { return state_of_type(Py_TYPE(o)); }

static PyObject *raise_blob(module_state *st, int rc, PyObject *path)
{
    const char *msg = it_error_message();
    switch (rc) {
    case IT_EIO: {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "isO", it_blob_errno(), msg,
                                              path ? path : Py_None);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    case IT_ECORRUPT: PyErr_SetString(st->CorruptBlobError, msg); return NULL;
    case IT_ERANGE: PyErr_SetString(PyExc_IndexError, msg); return NULL;
    case IT_ESTATE: PyErr_SetString(PyExc_OSError, msg); return NULL;
    case IT_EINVAL:
    case IT_ESHAPE: PyErr_SetString(PyExc_ValueError, msg); return NULL;
    default: return raise_core(st, rc);
    }
}

static it_blob *open_blob(BlobObject *self)
{
    if (!self->b)
        PyErr_SetString(PyExc_OSError, "I/O operation on closed blob.");
    return self->b;
}

static PyObject *new_object(PyTypeObject *tp, it_blob *b, PyObject *path)
{
    BlobObject *self = (BlobObject *)tp->tp_alloc(tp, 0);
    if (!self) {
        it_blob_close(b);
        return NULL;
    }
    self->b = b;
    self->path = Py_NewRef(path);
    return (PyObject *)self;
}

/* Blob(path, writable, durability): open an existing blob. */
static PyObject *Blob_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "writable", "durability", NULL};
    PyObject *path, *bytes;
    int writable, durability;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Upi", kwlist, &path, &writable, &durability))
        return NULL;
    if (!PyUnicode_FSConverter(path, &bytes))
        return NULL;
    it_blob *b;
    int rc = it_blob_open(PyBytes_AS_STRING(bytes), writable, durability, &b);
    Py_DECREF(bytes);
    if (rc)
        return raise_blob(state_of_type(tp), rc, path);
    return new_object(tp, b, path);
}

/* _core.blob_create(path, dtype, dtype_name, shape, block_size,
 * max_cached_blocks, durability): a new blob, open for writing. */
static PyObject *mod_blob_create(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *path, *shape, *bytes;
    int dtype, durability;
    const char *name;
    long long block_size, max_cached;
    if (!PyArg_ParseTuple(args, "UisOLLi", &path, &dtype, &name, &shape, &block_size, &max_cached,
                          &durability))
        return NULL;
    it_blob_info info;
    memset(&info, 0, sizeof info);
    int64_t none = 0;
    int ndim = int64_seq(shape, info.shape, IT_MAX_DIMS - 1, &none, NULL, "shape must be a tuple of ints");
    if (ndim < 0)
        return NULL;
    if (ndim > IT_MAX_DIMS - 1) {
        PyErr_Format(PyExc_ValueError, "a blob's rows have at most %d dimensions", IT_MAX_DIMS - 1);
        return NULL;
    }
    if (strlen(name) > IT_BLOB_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "dtype name %s is longer than %d bytes", name, IT_BLOB_NAME_MAX);
        return NULL;
    }
    info.dtype = (it_dtype)dtype;
    strcpy(info.dtype_name, name);
    info.ndim = ndim;
    info.block_size = block_size;
    info.max_cached_blocks = max_cached;
    if (!PyUnicode_FSConverter(path, &bytes))
        return NULL;
    it_blob *b;
    int rc = it_blob_create(PyBytes_AS_STRING(bytes), &info, durability, &b);
    Py_DECREF(bytes);
    if (rc)
        return raise_blob(st, rc, path);
    return new_object(st->Blob_type, b, path);
}

static void Blob_dealloc(BlobObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    it_blob_close(self->b);
    Py_XDECREF(self->path);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *Blob_close(BlobObject *self, PyObject *unused)
{
    it_blob_close(self->b);
    self->b = NULL;
    Py_RETURN_NONE;
}

static PyObject *Blob_length(BlobObject *self, PyObject *unused)
{
    it_blob *b = open_blob(self);
    if (!b)
        return NULL;
    int64_t n;
    int rc = it_blob_length(b, &n);
    if (rc)
        return raise_blob(st_of((PyObject *)self), rc, self->path);
    return PyLong_FromLongLong(n);
}

/* info() -> (dtype, dtype_name, shape, row_bytes, block_size, max_cached_blocks, writable) */
static PyObject *Blob_info(BlobObject *self, PyObject *unused)
{
    it_blob *b = open_blob(self);
    if (!b)
        return NULL;
    const it_blob_info *in = it_blob_info_of(b);
    PyObject *shape = PyTuple_New(in->ndim);
    if (!shape)
        return NULL;
    for (int d = 0; d < in->ndim; d++) {
        PyObject *v = PyLong_FromLongLong(in->shape[d]);
        if (!v) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, d, v);
    }
    return Py_BuildValue("isNLLLO", (int)in->dtype, in->dtype_name, shape, (long long)in->row_bytes,
                         (long long)in->block_size, (long long)in->max_cached_blocks,
                         it_blob_writable(b) ? Py_True : Py_False);
}

/* write(at, tensor) -> committed length; tensor: CPU, (n, *row shape), the blob's dtype. */
static PyObject *Blob_write(BlobObject *self, PyObject *args)
{
    module_state *st = st_of((PyObject *)self);
    long long at;
    PyObject *t;
    if (!PyArg_ParseTuple(args, "LO", &at, &t))
        return NULL;
    it_blob *b = open_blob(self);
    if (!b || state_ready(st) < 0)
        return NULL;
    it_view v;
    dl_hold hold;
    if (import_tensor(st, t, &v, &hold) < 0)
        return NULL;
    int64_t n = 0;
    int rc = v.device_type == kDLCPU
                 ? it_blob_write(b, at, &v, &n)
                 : it_error_set(IT_EINVAL, "rows to write must be in CPU memory");
    release_hold(&hold);
    if (rc)
        return raise_blob(st, rc, self->path);
    return PyLong_FromLongLong(n);
}

static PyObject *Blob_truncate(BlobObject *self, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    it_blob *b = open_blob(self);
    if (!b)
        return NULL;
    int rc = it_blob_truncate(b, n);
    if (rc)
        return raise_blob(st_of((PyObject *)self), rc, self->path);
    Py_RETURN_NONE;
}

static PyObject *Blob_sync(BlobObject *self, PyObject *unused)
{
    it_blob *b = open_blob(self);
    if (!b)
        return NULL;
    int rc = it_blob_sync(b);
    if (rc)
        return raise_blob(st_of((PyObject *)self), rc, self->path);
    Py_RETURN_NONE;
}

/* Export buf as a tensor of shape (n, *row) or, with squeeze, (*row). */
static PyObject *export_rows(module_state *st, it_buffer *buf, int squeeze)
{
    return squeeze ? export_buffer(st, buf, buf->ndim - 1, buf->shape + 1)
                   : export_buffer(st, buf, buf->ndim, buf->shape);
}

/* read(start, step, n) -> a new tensor of rows start, start + step, ... */
static PyObject *Blob_read(BlobObject *self, PyObject *args)
{
    module_state *st = st_of((PyObject *)self);
    long long start, step, n;
    if (!PyArg_ParseTuple(args, "LLL", &start, &step, &n))
        return NULL;
    it_blob *b = open_blob(self);
    if (!b || state_ready(st) < 0)
        return NULL;
    it_buffer *buf;
    int rc = it_blob_read(b, start, step, n, &buf);
    if (rc)
        return raise_blob(st, rc, self->path);
    return export_rows(st, buf, 0);
}

/* row(i) -> a new tensor of row i (negative: from the end). */
static PyObject *Blob_row(BlobObject *self, PyObject *arg)
{
    module_state *st = st_of((PyObject *)self);
    long long i = PyLong_AsLongLong(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    it_blob *b = open_blob(self);
    if (!b || state_ready(st) < 0)
        return NULL;
    int64_t idx = i;
    it_buffer *buf;
    int rc = it_blob_gather(b, &idx, 1, &buf);
    if (rc)
        return raise_blob(st, rc, self->path);
    return export_rows(st, buf, 1);
}

/* gather(index) -> a new tensor of the rows an int64 CPU tensor names. */
static PyObject *Blob_gather(BlobObject *self, PyObject *arg)
{
    module_state *st = st_of((PyObject *)self);
    it_blob *b = open_blob(self);
    if (!b || state_ready(st) < 0)
        return NULL;
    it_view v;
    dl_hold hold;
    if (import_tensor(st, arg, &v, &hold) < 0)
        return NULL;
    it_buffer *buf = NULL;
    int rc;
    if (v.device_type != kDLCPU || v.dtype != IT_I64 || v.ndim != 1 ||
        (v.shape[0] > 1 && v.strides[0] != 8))
        rc = it_error_set(IT_EINVAL, "gather takes a contiguous 1-d int64 CPU tensor");
    else
        rc = it_blob_gather(b, v.data, v.shape[0], &buf);
    release_hold(&hold);
    if (rc)
        return raise_blob(st, rc, self->path);
    return export_rows(st, buf, 0);
}

static void unref_map(void *m) { it_blob_map_unref(m); }

/* view(start, stop) -> a tensor over rows [start, stop) of the mapping. */
static PyObject *Blob_view(BlobObject *self, PyObject *args)
{
    module_state *st = st_of((PyObject *)self);
    long long start, stop;
    if (!PyArg_ParseTuple(args, "LL", &start, &stop))
        return NULL;
    it_blob *b = open_blob(self);
    if (!b || state_ready(st) < 0)
        return NULL;
    int64_t len;
    int rc = it_blob_length(b, &len);
    if (rc)
        return raise_blob(st, rc, self->path);
    if (start < 0 || stop < start || stop > len) {
        PyErr_Format(PyExc_IndexError, "rows [%lld, %lld) are not within the blob's %lld rows",
                     start, stop, (long long)len);
        return NULL;
    }
    const it_blob_info *in = it_blob_info_of(b);
    int64_t shape[IT_MAX_DIMS];
    shape[0] = stop - start;
    memcpy(shape + 1, in->shape, sizeof(int64_t) * (size_t)in->ndim);
    it_blob_map *ref;
    char *rows = it_blob_rows(b, &ref);
    int64_t strides[IT_MAX_DIMS];
    it_contiguous_strides(it_dtype_size(in->dtype), in->ndim + 1, shape, strides);
    it_view v;
    it_view_make(&v, &it_host_device, rows + start * in->row_bytes, in->dtype, in->ndim + 1, shape,
                 strides);
    return export_kept(st, &v, unref_map, ref);
}

static PyObject *Blob_get_closed(BlobObject *self, void *c) { return PyBool_FromLong(!self->b); }

static PyMethodDef Blob_methods[] = {
    {"close", (PyCFunction)Blob_close, METH_NOARGS, "Close (idempotent); views stay valid."},
    {"length", (PyCFunction)Blob_length, METH_NOARGS, "The committed length (re-read when read-only)."},
    {"info", (PyCFunction)Blob_info, METH_NOARGS,
     "(dtype, dtype_name, shape, row_bytes, block_size, max_cached_blocks, writable)."},
    {"write", (PyCFunction)Blob_write, METH_VARARGS, "write(at, rows) -> committed length."},
    {"truncate", (PyCFunction)Blob_truncate, METH_O, "truncate(n): commit length n."},
    {"sync", (PyCFunction)Blob_sync, METH_NOARGS, "msync and fdatasync what was written."},
    {"read", (PyCFunction)Blob_read, METH_VARARGS, "read(start, step, n) -> rows (a copy)."},
    {"row", (PyCFunction)Blob_row, METH_O, "row(i) -> one row (a copy)."},
    {"gather", (PyCFunction)Blob_gather, METH_O, "gather(int64 tensor) -> rows (a copy)."},
    {"view", (PyCFunction)Blob_view, METH_VARARGS, "view(start, stop) -> rows (zero-copy)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Blob_getset[] = {
    {"closed", (getter)Blob_get_closed, NULL, "Whether close() ran.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Blob_slots[] = {
    {Py_tp_new, Blob_new},
    {Py_tp_dealloc, Blob_dealloc},
    {Py_tp_methods, Blob_methods},
    {Py_tp_getset, Blob_getset},
    {Py_tp_doc, "An open blob file (see it_blob.h; infinite_tensor.blob.TensorBlob wraps it)."},
    {0, NULL},
};

static PyType_Spec Blob_spec = {
    "infinite_tensor._core.Blob",
    sizeof(BlobObject),
    0,
    Py_TPFLAGS_DEFAULT,
    Blob_slots,
};

static PyObject *mod_blob_crash_at(PyObject *module, PyObject *arg)
{
    long point = PyLong_AsLong(arg);
    if (point == -1 && PyErr_Occurred())
        return NULL;
    it_blob_crash_at((int)point);
    Py_RETURN_NONE;
}

static PyMethodDef blob_functions[] = {
    {"blob_create", mod_blob_create, METH_VARARGS,
     "blob_create(path, dtype, dtype_name, shape, block_size, max_cached_blocks, durability) -> Blob."},
    {"blob_crash_at", mod_blob_crash_at, METH_O,
     "Test support: the next blob write or truncate exits the process at checkpoint n (0: off)."},
    {NULL, NULL, 0, NULL},
};

int blob_init(PyObject *module, module_state *st)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, &Blob_spec, NULL);
    if (!tp)
        return -1;
    st->Blob_type = (PyTypeObject *)tp;
    if (PyModule_AddObject(module, "Blob", Py_NewRef(tp)) < 0) {
        Py_DECREF(tp);
        return -1;
    }
    return PyModule_AddFunctions(module, blob_functions);
}
