/*
 * store.c - persistent backends for tensor nodes.
 *
 * _core.H5File wraps an it_h5file (csrc/core/h5*.c, it_h5store.h): open modes,
 * commit, close and reopen, tensor metadata, and attach_h5(node, id).
 *
 * attach_python(node, store, id, readonly) gives a node a backend that calls
 * back into a Python PersistentTileStore: store._core_read_tile(id, index)
 * returns None or (tile, contributions) with tile a contiguous CPU tensor of
 * the tile's shape and dtype and contributions an iterable of window-index
 * tuples; store._core_write_tile(id, index, tile, contributions) gets a copy
 * of the tile and the set of its contributing windows.  Both run with the
 * GIL held, in the middle of a read; the core pins the tile meanwhile.
 */
#include "binding.h"
#ifndef IT_NO_HDF5
#include "it_h5store.h"
#endif

#include <string.h>

static it_tensor *node_of(module_state *st, PyObject *o)
{
    if (!PyObject_TypeCheck(o, st->Tensor_type)) {
        PyErr_SetString(PyExc_TypeError, "expected a core tensor node");
        return NULL;
    }
    return ((TensorObject *)o)->t;
}

#ifndef IT_NO_HDF5 /* a build without the HDF5 C library has no H5File (HAVE_HDF5 = 0) */
typedef struct H5FileObject {
    PyObject_HEAD
    it_h5file *f;
} H5FileObject;

static module_state *st_of(PyObject *o) { return state_of_type(Py_TYPE(o)); }

/* ---- H5File ---------------------------------------------------------------- */

static PyObject *H5File_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "mode", "gzip", NULL};
    PyObject *path;
    int mode, gzip;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&ii", kwlist, PyUnicode_FSConverter, &path, &mode, &gzip))
        return NULL;
    H5FileObject *self = (H5FileObject *)tp->tp_alloc(tp, 0);
    if (!self) {
        Py_DECREF(path);
        return NULL;
    }
    int rc = it_h5_open(PyBytes_AS_STRING(path), mode, gzip, &self->f);
    Py_DECREF(path);
    if (rc) {
        Py_DECREF(self);
        return raise_core(state_of_type(tp), rc);
    }
    return (PyObject *)self;
}

static void H5File_dealloc(H5FileObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    it_h5_unref(self->f);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *done(PyObject *self, int rc)
{
    if (rc)
        return raise_core(st_of(self), rc);
    Py_RETURN_NONE;
}

static PyObject *H5File_flush(H5FileObject *self, PyObject *unused)
{
    (void)unused;
    return done((PyObject *)self, it_h5_flush(self->f));
}

static PyObject *H5File_close(H5FileObject *self, PyObject *unused)
{
    (void)unused;
    return done((PyObject *)self, it_h5_close(self->f));
}

static PyObject *H5File_reopen(H5FileObject *self, PyObject *unused)
{
    (void)unused;
    return done((PyObject *)self, it_h5_reopen(self->f));
}

static PyObject *H5File_read_meta(H5FileObject *self, PyObject *arg)
{
    const char *id = PyUnicode_AsUTF8(arg);
    char *json;
    int64_t ts[IT_MAX_DIMS];
    int n, found;
    if (!id)
        return NULL;
    int rc = it_h5_read_meta(self->f, id, &json, ts, &n, &found);
    if (rc)
        return raise_core(st_of((PyObject *)self), rc);
    if (!found)
        Py_RETURN_NONE;
    PyObject *sizes = PyTuple_New(n);
    for (int i = 0; sizes && i < n; i++)
        PyTuple_SET_ITEM(sizes, i, PyLong_FromLongLong(ts[i]));
    PyObject *res = sizes ? Py_BuildValue("(sN)", json, sizes) : NULL;
    it_free(json);
    return res;
}

static PyObject *H5File_write_meta(H5FileObject *self, PyObject *args)
{
    const char *id, *json;
    PyObject *sizes;
    int64_t ts[IT_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "ssO!", &id, &json, &PyTuple_Type, &sizes))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(sizes);
    if (n > IT_MAX_DIMS) {
        PyErr_SetString(PyExc_ValueError, "too many tile sizes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ts[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(sizes, i));
        if (ts[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    return done((PyObject *)self, it_h5_write_meta(self->f, id, json, ts, (int)n));
}

static PyObject *H5File_delete(H5FileObject *self, PyObject *arg)
{
    const char *id = PyUnicode_AsUTF8(arg);
    if (!id)
        return NULL;
    return done((PyObject *)self, it_h5_delete(self->f, id));
}

static int list_one(void *ctx, const char *id, const char *json)
{
    PyObject *item = Py_BuildValue("(ss)", id, json);
    int bad = !item || PyList_Append((PyObject *)ctx, item) < 0;
    Py_XDECREF(item);
    return bad ? IT_ECALLBACK : IT_OK;
}

static PyObject *H5File_list(H5FileObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    int rc = it_h5_list(self->f, list_one, out);
    if (rc) {
        Py_DECREF(out);
        return raise_core(st_of((PyObject *)self), rc);
    }
    return out;
}

static PyObject *H5File_attach(H5FileObject *self, PyObject *args)
{
    const char *id;
    PyObject *node;
    if (!PyArg_ParseTuple(args, "Os", &node, &id))
        return NULL;
    it_tensor *t = node_of(st_of((PyObject *)self), node);
    if (!t)
        return NULL;
    return done((PyObject *)self, it_h5_attach(self->f, id, t));
}

static PyObject *H5File_get_open(H5FileObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(it_h5_is_open(self->f));
}

static PyMethodDef H5File_methods[] = {
    {"flush", (PyCFunction)H5File_flush, METH_NOARGS, "Commit every tile stored so far."},
    {"close", (PyCFunction)H5File_close, METH_NOARGS, "Commit and close the file."},
    {"reopen", (PyCFunction)H5File_reopen, METH_NOARGS, "Open a closed file again (never truncating)."},
    {"read_meta", (PyCFunction)H5File_read_meta, METH_O, "read_meta(id) -> (json, tile_size) or None"},
    {"write_meta", (PyCFunction)H5File_write_meta, METH_VARARGS, "write_meta(id, json, tile_size)"},
    {"delete", (PyCFunction)H5File_delete, METH_O, "Delete a tensor's group."},
    {"list", (PyCFunction)H5File_list, METH_NOARGS, "list() -> [(id, json)] of the tensors in the file"},
    {"attach", (PyCFunction)H5File_attach, METH_VARARGS, "attach(node, id): store node's tiles here."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef H5File_getset[] = {
    {"is_open", (getter)H5File_get_open, NULL, "Whether the file is open.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot H5File_slots[] = {
    {Py_tp_new, H5File_new},
    {Py_tp_dealloc, H5File_dealloc},
    {Py_tp_methods, H5File_methods},
    {Py_tp_getset, H5File_getset},
    {Py_tp_doc, "An HDF5 file of persistent tiles (see it_h5store.h)."},
    {0, NULL},
};

static PyType_Spec H5File_spec = {
    "infinite_tensor._core.H5File", sizeof(H5FileObject), 0, Py_TPFLAGS_DEFAULT, H5File_slots,
};

#endif /* IT_NO_HDF5 */

/* ---- the Python-store backend ---------------------------------------------- */

typedef struct pyback {
    module_state *st;
    PyObject *store; /* a weak reference: the store owns the node, which owns this */
    PyObject *id;
} pyback;

/* The store (a new reference), or NULL with an error recorded. */
static PyObject *live_store(pyback *b)
{
    PyObject *store = PyWeakref_GetObject(b->store);
    if (store == Py_None) {
        it_error_set(IT_ESTATE, "the persistent store of this tensor no longer exists");
        return NULL;
    }
    Py_INCREF(store);
    return store;
}

static PyObject *coord_tuple(const it_tile_io *io)
{
    PyObject *t = PyTuple_New(io->ninf);
    for (int i = 0; t && i < io->ninf; i++) {
        PyObject *v = PyLong_FromLongLong(io->coord[i]);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* Window index of bit b of the tile's domain (row-major). */
static PyObject *window_of_bit(const it_tile_io *io, int64_t b)
{
    PyObject *t = PyTuple_New(io->ncoords);
    for (int c = io->ncoords - 1; t && c >= 0; c--) {
        int64_t n = io->dom_n[c];
        PyObject *v = PyLong_FromLongLong(io->dom_lo[c] + b % n);
        b /= n;
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, c, v);
    }
    return t;
}

static int py_failed(void) { return it_error_set(IT_ECALLBACK, "a store callback raised"); }

static int py_load(void *ctx, it_tile_io *io, int *found)
{
    pyback *b = ctx;
    *found = 0;
    PyObject *store = live_store(b);
    if (!store)
        return IT_ESTATE;
    PyObject *idx = coord_tuple(io);
    PyObject *res = idx ? PyObject_CallMethod(store, "_core_read_tile", "OO", b->id, idx) : NULL;
    Py_XDECREF(idx);
    Py_DECREF(store);
    if (!res)
        return py_failed();
    if (res == Py_None) {
        Py_DECREF(res);
        return IT_OK;
    }
    PyObject *tile, *contrib;
    int rc = IT_OK;
    if (!PyArg_ParseTuple(res, "OO", &tile, &contrib)) {
        Py_DECREF(res);
        return py_failed();
    }
    it_view v;
    dl_hold hold;
    if (import_tensor(b->st, tile, &v, &hold) < 0) {
        Py_DECREF(res);
        return py_failed();
    }
    const it_buffer *buf = io->buf;
    /* PersistentTileStore._core_read_tile made it a contiguous CPU tensor */
    rc = it_view_check(&v, "the tile _read_tile returned", buf->ndim, buf->shape, buf->dtype, IT_DEVICE_CPU, 0);
    for (int d = 0; rc == IT_OK && d < v.ndim; d++)
        if (v.shape[d] > 1 && v.strides[d] != buf->strides[d])
            rc = it_error_set(IT_ESHAPE, "the tile _read_tile returned is not contiguous");
    if (rc == IT_OK)
        memcpy(buf->data, v.data, buf->nbytes);
    release_hold(&hold);
    /* contributions: window tuples inside the domain */
    PyObject *it = rc == IT_OK ? PyObject_GetIter(contrib) : NULL, *w;
    if (rc == IT_OK && !it)
        rc = py_failed();
    while (rc == IT_OK && (w = PyIter_Next(it))) {
        int64_t bit = 0;
        if (!PyTuple_Check(w) || PyTuple_GET_SIZE(w) != io->ncoords) {
            rc = it_error_set(IT_EINVAL, "a tile's contributions must be window-index tuples of %d ints",
                              io->ncoords);
        }
        for (int c = 0; rc == IT_OK && c < io->ncoords; c++) {
            long long x = PyLong_AsLongLong(PyTuple_GET_ITEM(w, c));
            if (x == -1 && PyErr_Occurred()) {
                rc = py_failed();
                break;
            }
            int64_t r = x - io->dom_lo[c];
            if (r < 0 || r >= io->dom_n[c])
                rc = it_error_set(IT_EIO, "the stored contributions of a tile list a window that cannot "
                                  "touch it: the store's data is damaged");
            bit = bit * io->dom_n[c] + r;
        }
        Py_DECREF(w);
        if (rc == IT_OK)
            io->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
    }
    if (rc == IT_OK && PyErr_Occurred())
        rc = py_failed();
    Py_XDECREF(it);
    Py_DECREF(res);
    if (rc == IT_OK)
        *found = 1;
    return rc;
}

static int py_store(void *ctx, const it_tile_io *io)
{
    pyback *b = ctx;
    it_buffer *copy;
    PyObject *store = live_store(b);
    if (!store)
        return IT_ESTATE;
    int rc = it_buffer_create(io->buf->dtype, io->buf->ndim, io->buf->shape, &copy);
    if (rc) {
        Py_DECREF(store);
        return rc;
    }
    memcpy(copy->data, io->buf->data, io->buf->nbytes);
    PyObject *tile = export_buffer(b->st, copy, io->buf->ndim, io->buf->shape);
    if (!tile) {
        Py_DECREF(store);
        return py_failed();
    }
    PyObject *contrib = PySet_New(NULL), *idx = coord_tuple(io);
    for (int64_t i = 0; contrib && i < io->nbits; i++) {
        if (!((io->bits[i >> 6] >> (i & 63)) & 1u))
            continue;
        PyObject *w = window_of_bit(io, i);
        if (!w || PySet_Add(contrib, w) < 0) {
            Py_XDECREF(w);
            Py_CLEAR(contrib);
            break;
        }
        Py_DECREF(w);
    }
    PyObject *res = contrib && idx ? PyObject_CallMethod(store, "_core_write_tile", "OOOO", b->id, idx,
                                                         tile, contrib)
                                   : NULL;
    Py_DECREF(store);
    Py_DECREF(tile);
    Py_XDECREF(contrib);
    Py_XDECREF(idx);
    if (!res)
        return py_failed();
    Py_DECREF(res);
    return IT_OK;
}

static void py_free(void *ctx)
{
    pyback *b = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF(b->store);
    Py_DECREF(b->id);
    PyGILState_Release(g);
    it_free(b);
}

static PyObject *mod_attach_python(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *node, *store, *id;
    int readonly;
    if (!PyArg_ParseTuple(args, "OOO!p", &node, &store, &PyUnicode_Type, &id, &readonly))
        return NULL;
    it_tensor *t = node_of(st, node);
    if (!t)
        return NULL;
    PyObject *ref = PyWeakref_NewRef(store, NULL);
    if (!ref)
        return NULL;
    pyback *b = it_malloc(sizeof *b);
    if (!b) {
        Py_DECREF(ref);
        return PyErr_NoMemory();
    }
    b->st = st;
    Py_INCREF(id);
    b->store = ref;
    b->id = id;
    it_backend be = {IT_BACKEND_VERSION, py_load, py_store, py_free};
    int rc = it_tensor_set_backend(t, &be, b, readonly ? IT_BACKEND_READONLY : 0);
    if (rc)
        return raise_core(st, rc);
    Py_RETURN_NONE;
}

static PyMethodDef store_functions[] = {
    {"attach_python", mod_attach_python, METH_VARARGS,
     "attach_python(node, store, id, readonly): keep node's tiles in a Python PersistentTileStore."},
    {NULL, NULL, 0, NULL},
};

int store_init(PyObject *module, module_state *st)
{
    if (PyModule_AddFunctions(module, store_functions) < 0)
        return -1;
#ifdef IT_NO_HDF5
    (void)st;
    return PyModule_AddIntConstant(module, "HAVE_HDF5", 0);
#else
    st->H5File_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &H5File_spec, NULL);
    if (!st->H5File_type)
        return -1;
    Py_INCREF(st->H5File_type);
    if (PyModule_AddObject(module, "H5File", (PyObject *)st->H5File_type) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "HAVE_HDF5", 1) < 0)
        return -1;
    return PyModule_AddIntConstant(module, "H5_FORMAT", IT_H5_FORMAT);
#endif
}
