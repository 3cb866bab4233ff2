/*
 * module.c - the extension module infinite_tensor._core: module state,
 * the Cache type, error mapping, the limits the core defines (MAX_DIMS,
 * MAX_ARGS, PARAM_LIMIT_LOG2, COORD_LIMIT_LOG2, for messages), and the
 * core's window arithmetic for the Python layer (window_domain,
 * window_bounds, device_code), so that it never re-implements them.
 *
 * Multi-phase init with per-module state; every type is a heap type.  The
 * Python package calls _configure() once at import with the torch entry
 * points and its exception classes.
 */
#include "binding.h"
#include "it_pool.h"

#include <string.h>

module_state *state_of_type(PyTypeObject *tp)
{
    return (module_state *)PyType_GetModuleState(tp);
}

int state_ready(module_state *st)
{
    if (!st->from_dlpack || !st->DtypeMismatchError) {
        PyErr_SetString(PyExc_RuntimeError,
                        "infinite_tensor._core is not configured; import infinite_tensor first");
        return -1;
    }
    return 0;
}

PyObject *core_error_class(module_state *st, int rc)
{
    PyObject *exc;
    switch (rc) {
    case IT_ENOMEM:
    case IT_ETOOBIG: exc = PyExc_MemoryError; break;
    case IT_EINVAL: exc = st->ValidationError; break;
    case IT_ERANGE: exc = PyExc_IndexError; break;
    case IT_ESHAPE: exc = st->ShapeMismatchError; break;
    case IT_EDTYPE: exc = st->DtypeMismatchError; break;
    case IT_EDEVICE: exc = st->DeviceMismatchError; break;
    case IT_ESTATE:
    case IT_EIO: exc = st->TileAccessError; break;
    default: exc = st->InfiniteTensorError; break;
    }
    return exc ? exc : PyExc_RuntimeError;
}

PyObject *raise_core(module_state *st, int rc)
{
    const char *msg = it_error_message();
    if (rc == IT_ECALLBACK) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "a callback failed without setting an exception");
        return NULL;
    }
    PyErr_SetString(core_error_class(st, rc), msg[0] ? msg : "infinite_tensor core error");
    return NULL;
}

/* ---- Cache ----------------------------------------------------------------- */

static PyObject *Cache_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"byte_limit", "weight_limit", NULL};
    PyObject *bo = NULL, *wo = NULL;
    int64_t bytes = -1, weight = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO", kwlist, &bo, &wo) ||
        (bo && to_int64_saturating(bo, &bytes) < 0) || (wo && to_int64_saturating(wo, &weight) < 0))
        return NULL;
    CacheObject *self = (CacheObject *)tp->tp_alloc(tp, 0);
    if (!self)
        return NULL;
    int rc = it_cache_create(bytes, weight, &self->cache);
    if (rc) {
        Py_DECREF(self);
        return raise_core(state_of_type(tp), rc);
    }
    it_cache_set_device_limit(self->cache, bytes); /* the same budget, counted apart */
    return (PyObject *)self;
}

static void Cache_dealloc(CacheObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    it_cache_unref(self->cache);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *Cache_set_limits(CacheObject *self, PyObject *args)
{
    PyObject *bo, *wo;
    int64_t bytes, weight;
    if (!PyArg_ParseTuple(args, "OO", &bo, &wo) || to_int64_saturating(bo, &bytes) < 0 ||
        to_int64_saturating(wo, &weight) < 0)
        return NULL;
    it_cache_set_limits(self->cache, bytes, weight);
    it_cache_set_device_limit(self->cache, bytes);
    Py_RETURN_NONE;
}

static PyObject *Cache_set_tile_limit(CacheObject *self, PyObject *arg)
{
    int64_t n;
    if (to_int64_saturating(arg, &n) < 0)
        return NULL;
    it_cache_set_tile_limit(self->cache, n);
    Py_RETURN_NONE;
}

static PyObject *Cache_trim(CacheObject *self, PyObject *unused)
{
    (void)unused;
    it_cache_trim(self->cache);
    Py_RETURN_NONE;
}

static PyObject *Cache_hold(CacheObject *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    it_cache_hold(self->cache, on);
    Py_RETURN_NONE;
}

static PyObject *Cache_check(CacheObject *self, PyObject *unused)
{
    (void)unused;
    int rc = it_cache_check(self->cache);
    if (rc)
        return raise_core(state_of_type(Py_TYPE(self)), rc);
    Py_RETURN_NONE;
}

static PyObject *Cache_info(CacheObject *self, PyObject *unused)
{
    (void)unused;
    int64_t bl, wl;
    it_cache_limits(self->cache, &bl, &wl);
    return Py_BuildValue("{sLsLsLsLsLsLsL}", "bytes", (long long)it_cache_bytes(self->cache),
                         "device_bytes", (long long)it_cache_device_bytes(self->cache),
                         "tiles", (long long)it_cache_tiles(self->cache),
                         "weight", (long long)it_cache_weight(self->cache),
                         "pinned", (long long)it_cache_pinned(self->cache),
                         "byte_limit", (long long)bl, "weight_limit", (long long)wl);
}

static PyMethodDef Cache_methods[] = {
    {"set_limits", (PyCFunction)Cache_set_limits, METH_VARARGS, "set_limits(byte_limit, weight_limit); -1: none"},
    {"set_tile_limit", (PyCFunction)Cache_set_tile_limit, METH_O, "set_tile_limit(n); -1: none"},
    {"trim", (PyCFunction)Cache_trim, METH_NOARGS, "Evict unpinned tiles until within limits."},
    {"hold", (PyCFunction)Cache_hold, METH_O, "hold(True) defers eviction until the matching hold(False)."},
    {"check", (PyCFunction)Cache_check, METH_NOARGS, "Verify the cache's invariants."},
    {"info", (PyCFunction)Cache_info, METH_NOARGS, "Counters and limits as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Cache_slots[] = {
    {Py_tp_new, Cache_new},
    {Py_tp_dealloc, Cache_dealloc},
    {Py_tp_methods, Cache_methods},
    {Py_tp_doc, "The tile cache shared by the tensors of a store (internal)."},
    {0, NULL},
};

static PyType_Spec Cache_spec = {
    "infinite_tensor._core.Cache", sizeof(CacheObject), 0, Py_TPFLAGS_DEFAULT, Cache_slots,
};

/* ---- module functions ------------------------------------------------------ */

static PyObject *mod_configure(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"from_dlpack", "to_dlpack", "tensor_type", "is_grad_enabled",
                             "set_grad_enabled", "errors", "exchange_api", "device_alloc",
                             "device_apply", NULL};
    module_state *st = PyModule_GetState(module);
    PyObject *from, *to, *ttype, *isg, *setg, *errors, *xcap = Py_None, *dalloc = NULL, *dapply = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO!|OOO", kwlist, &from, &to, &ttype, &isg, &setg,
                                     &PyDict_Type, &errors, &xcap, &dalloc, &dapply))
        return NULL;
    if ((dalloc || dapply) && (!dalloc || !dapply)) {
        PyErr_SetString(PyExc_TypeError, "device_alloc and device_apply go together");
        return NULL;
    }
    if (dalloc && device_configure(st, dalloc, dapply) < 0)
        return NULL;
    if (!PyType_Check(ttype)) {
        PyErr_SetString(PyExc_TypeError, "tensor_type must be a type");
        return NULL;
    }
    const DLPackExchangeAPI *xapi = NULL;
    if (xcap != Py_None) {
        xapi = PyCapsule_GetPointer(xcap, "dlpack_exchange_api");
        if (!xapi)
            return NULL;
        /* walk to a table of our major version; its members up to
         * current_work_stream are fixed for every 1.x minor from 1.3 on */
        const DLPackExchangeAPIHeader *h = &xapi->header;
        while (h && h->version.major > IT_DLPACK_MAJOR)
            h = h->prev_api;
        xapi = h && h->version.major == IT_DLPACK_MAJOR && h->version.minor >= 3
                   ? (const DLPackExchangeAPI *)h : NULL;
        if (xapi && (!xapi->managed_tensor_to_py_object_no_sync || !xapi->dltensor_from_py_object_no_sync))
            xapi = NULL;
    }
    struct { const char *name; PyObject **slot; } names[] = {
        {"InfiniteTensorError", &st->InfiniteTensorError}, {"ValidationError", &st->ValidationError},
        {"TileAccessError", &st->TileAccessError}, {"ShapeMismatchError", &st->ShapeMismatchError},
        {"DeviceMismatchError", &st->DeviceMismatchError}, {"DtypeMismatchError", &st->DtypeMismatchError},
        {"CorruptBlobError", &st->CorruptBlobError},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PyObject *e = PyDict_GetItemString(errors, names[i].name);
        if (!e || !PyExceptionClass_Check(e)) {
            PyErr_Format(PyExc_ValueError, "errors must map %s to an exception class", names[i].name);
            return NULL;
        }
        Py_INCREF(e);
        Py_XSETREF(*names[i].slot, e);
    }
    Py_INCREF(from);
    Py_XSETREF(st->from_dlpack, from);
    Py_INCREF(to);
    Py_XSETREF(st->to_dlpack, to);
    Py_INCREF(ttype);
    Py_XSETREF(st->torch_tensor, ttype);
    Py_INCREF(isg);
    Py_XSETREF(st->is_grad_enabled, isg);
    Py_INCREF(setg);
    Py_XSETREF(st->set_grad_enabled, setg);
    /* looked up once: import_tensor calls them on every imported tensor */
    struct { const char *name; PyObject **slot; } flags[] = {
        {"is_neg", &st->tensor_is_neg}, {"is_conj", &st->tensor_is_conj},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        PyObject *m = PyObject_GetAttrString(ttype, flags[i].name);
        if (!m)
            PyErr_Clear();
        Py_XSETREF(*flags[i].slot, m);
    }
    st->xapi = xapi;
    Py_XSETREF(st->xapi_owner, xapi ? Py_NewRef(xcap) : NULL);
    Py_RETURN_NONE;
}

/* parse_index(shape, key) -> (starts, stops, steps, squeezed_dims) */
static PyObject *mod_parse_index(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *shape_obj, *key;
    int64_t shape[IT_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OO", &shape_obj, &key))
        return NULL;
    PyObject *fast = PySequence_Fast(shape_obj, "shape must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(fast);
    if (nd < 1 || nd > IT_MAX_DIMS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "shape must have 1 to %d dims", IT_MAX_DIMS);
        return NULL;
    }
    for (Py_ssize_t d = 0; d < nd; d++) {
        PyObject *e = PySequence_Fast_GET_ITEM(fast, d);
        shape[d] = e == Py_None ? IT_DIM_INFINITE : PyLong_AsLongLong(e);
    }
    Py_DECREF(fast);
    if (PyErr_Occurred())
        return NULL;
    it_box box;
    uint32_t squeeze;
    if (parse_index(key, (int)nd, shape, &box, &squeeze) < 0)
        return NULL;
    PyObject *res = PyTuple_New(4);
    PyObject *parts[3] = {PyTuple_New(nd), PyTuple_New(nd), PyTuple_New(nd)};
    PyObject *sq = PyList_New(0);
    if (!res || !parts[0] || !parts[1] || !parts[2] || !sq)
        goto fail;
    for (Py_ssize_t d = 0; d < nd; d++) {
        PyTuple_SET_ITEM(parts[0], d, PyLong_FromLongLong(box.start[d]));
        PyTuple_SET_ITEM(parts[1], d, PyLong_FromLongLong(box.stop[d]));
        PyTuple_SET_ITEM(parts[2], d, PyLong_FromLongLong(box.step[d]));
        if (squeeze & (1u << d)) {
            PyObject *v = PyLong_FromSsize_t(d);
            if (!v || PyList_Append(sq, v) < 0) {
                Py_XDECREF(v);
                goto fail;
            }
            Py_DECREF(v);
        }
    }
    for (int i = 0; i < 3; i++)
        PyTuple_SET_ITEM(res, i, parts[i]);
    PyTuple_SET_ITEM(res, 3, sq);
    return res;
fail:
    Py_XDECREF(res);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(parts[i]);
    Py_XDECREF(sq);
    return NULL;
}

/* The region's shape, starts and stops: ndim entries each (None in shape:
 * an infinite dim). */
static int region_arrays(PyObject *const *in, int ndim, int64_t *const *out, given *g)
{
    static const int64_t infinite = IT_DIM_INFINITE;
    for (int i = 0; i < 3; i++) {
        int n = int64_seq(in[i], out[i], IT_MAX_DIMS, i == 0 ? &infinite : NULL, g, "expected a sequence");
        if (n < 0)
            return -1;
        if (n != ndim) {
            PyErr_Format(PyExc_ValueError, "expected %d entries, got %d", ndim, n);
            return -1;
        }
    }
    return 0;
}

/* window_domain(window, ncoords, shape, starts, stops) -> (lo, count)
 * tuples, or None when no window meets the region; window as for
 * _core.Tensor.  The core checks the window and the region. */
static PyObject *mod_window_domain(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *window, *in[3];
    int ncoords;
    it_window w;
    int64_t shape[IT_MAX_DIMS], start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS], cnt[IT_MAX_DIMS], total;
    int64_t *const out[3] = {shape, start, stop};
    given g;
    given_init(&g);
    if (!PyArg_ParseTuple(args, "OiOOO", &window, &ncoords, &in[0], &in[1], &in[2]))
        return NULL;
    if (parse_window(window, ncoords, &w, &g) < 0)
        goto fail;
    int rc = it_window_check(&w);
    if (rc)
        return raise_given(st, rc, &g);
    if (region_arrays(in, w.ndim, out, &g) < 0)
        goto fail;
    if ((rc = it_window_domain(&w, shape, start, stop, lo, cnt, &total)))
        return raise_given(st, rc, &g);
    given_clear(&g);
    if (total == 0)
        Py_RETURN_NONE;
    PyObject *l = PyTuple_New(ncoords), *c = PyTuple_New(ncoords);
    for (int i = 0; l && c && i < ncoords; i++) {
        PyTuple_SET_ITEM(l, i, PyLong_FromLongLong(lo[i]));
        PyTuple_SET_ITEM(c, i, PyLong_FromLongLong(cnt[i]));
    }
    PyObject *r = (l && c) ? PyTuple_Pack(2, l, c) : NULL;
    Py_XDECREF(l);
    Py_XDECREF(c);
    return r;
fail:
    given_clear(&g);
    return NULL;
}

/* window_bounds(window, index) -> tuple of slices: the pixels the window
 * with this index covers (window as for _core.Tensor; the index has as many
 * coordinates as it has entries, at least one).  The core checks both. */
static PyObject *mod_window_bounds(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *window, *index;
    int64_t coords[IT_MAX_DIMS] = {0}, start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
    it_window w;
    given g;
    given_init(&g);
    if (!PyArg_ParseTuple(args, "OO", &window, &index))
        return NULL;
    int n = int64_seq(index, coords, IT_MAX_DIMS, NULL, &g, "a window index must be a sequence");
    if (n < 0 || parse_window(window, n < 1 ? 1 : n, &w, &g) < 0) {
        given_clear(&g);
        return NULL;
    }
    int rc = it_window_check(&w);
    if (!rc)
        rc = it_window_bounds(&w, coords, start, stop);
    if (rc)
        return raise_given(st, rc, &g);
    PyObject *res = PyTuple_New(w.ndim);
    for (int d = 0; res && d < w.ndim; d++) {
        PyObject *a = PyLong_FromLongLong(start[d]), *b = PyLong_FromLongLong(stop[d]);
        PyObject *sl = a && b ? PySlice_New(a, b, NULL) : NULL;
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (!sl)
            Py_CLEAR(res);
        else
            PyTuple_SET_ITEM(res, d, sl);
    }
    return res;
}

/* device_code(device) -> (DLPack device type, id) of a torch.device. */
static PyObject *mod_device_code(PyObject *module, PyObject *device)
{
    int type, id;
    if (device_code(PyModule_GetState(module), device, &type, &id) < 0)
        return NULL;
    return Py_BuildValue("(ii)", type, id);
}

static PyObject *mod_alloc_live_blocks(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(it_alloc_live_blocks());
}

/* One optional int64 argument (past int64: the nearest int64): set when
 * given; the previous value is returned either way. */
static int optional_int(PyObject *args, long long *value, int *is_set)
{
    PyObject *o = Py_None;
    int64_t v;
    *is_set = 0;
    if (!PyArg_ParseTuple(args, "|O", &o))
        return -1;
    if (o == Py_None)
        return 0;
    if (to_int64_saturating(o, &v) < 0)
        return -1;
    *value = v;
    *is_set = 1;
    return 0;
}

static PyObject *mod_buffer_pool(PyObject *module, PyObject *args)
{
    (void)module;
    long long limit;
    int is_set;
    if (optional_int(args, &limit, &is_set) < 0)
        return NULL;
    size_t held = it_buffer_pool_bytes();
    if (is_set)
        it_buffer_pool_set_limit(limit < 0 ? 0 : (size_t)limit);
    return PyLong_FromSize_t(held);
}

static PyObject *mod_buffer_pool_limit(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSize_t(it_buffer_pool_limit());
}

static PyObject *mod_copy_threads(PyObject *module, PyObject *args)
{
    (void)module;
    long long n;
    int is_set;
    if (optional_int(args, &n, &is_set) < 0)
        return NULL;
    if (is_set && n < 1) {
        PyErr_SetString(PyExc_ValueError, "the thread count must be at least 1");
        return NULL;
    }
    int old = is_set ? it_pool_set_threads(n > IT_POOL_MAX_THREADS ? IT_POOL_MAX_THREADS : (int)n)
                    : it_pool_threads();
    return PyLong_FromLong(old);
}

static PyObject *mod_parallel_min_bytes(PyObject *module, PyObject *args)
{
    (void)module;
    long long n;
    int is_set;
    if (optional_int(args, &n, &is_set) < 0)
        return NULL;
    return PyLong_FromLongLong(is_set ? it_pool_set_min_bytes(n) : it_pool_min_bytes());
}

/* set_hooks(progress, read, read_wanted): the callables (or None) of
 * binding.h's module_state; returns None. */
static PyObject *mod_set_hooks(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *h[3];
    if (!PyArg_ParseTuple(args, "OOO", &h[0], &h[1], &h[2]))
        return NULL;
    for (int i = 0; i < 3; i++)
        if (h[i] != Py_None && !PyCallable_Check(h[i])) {
            PyErr_SetString(PyExc_TypeError, "set_hooks takes three callables or None");
            return NULL;
        }
    Py_XSETREF(st->progress_hook, h[0] == Py_None ? NULL : Py_NewRef(h[0]));
    Py_XSETREF(st->read_hook, h[1] == Py_None ? NULL : Py_NewRef(h[1]));
    Py_XSETREF(st->read_wanted, h[2] == Py_None ? NULL : Py_NewRef(h[2]));
    Py_RETURN_NONE;
}

/* set_memory_probe(probe, min_bytes): binding.h's memory_probe (None: none). */
static PyObject *mod_set_memory_probe(PyObject *module, PyObject *args)
{
    module_state *st = PyModule_GetState(module);
    PyObject *probe;
    long long min_bytes;
    if (!PyArg_ParseTuple(args, "OL", &probe, &min_bytes))
        return NULL;
    if (probe != Py_None && !PyCallable_Check(probe)) {
        PyErr_SetString(PyExc_TypeError, "set_memory_probe takes a callable or None");
        return NULL;
    }
    Py_XSETREF(st->memory_probe, probe == Py_None ? NULL : Py_NewRef(probe));
    st->probe_min_bytes = min_bytes < 0 ? 0 : (int64_t)min_bytes;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_memory_probe", mod_set_memory_probe, METH_VARARGS,
     "set_memory_probe(probe, min_bytes): probe(device) -> available bytes (or None), asked before a read "
     "estimated to need min_bytes or more (None: no check)."},
    {"set_hooks", mod_set_hooks, METH_VARARGS,
     "set_hooks(progress, read, read_wanted): progress(id, done, total) as a large plan advances; "
     "read(id, stats) after a read that computed windows, when read_wanted() (None: no hook)."},
    {"_configure", (PyCFunction)(void (*)(void))mod_configure, METH_VARARGS | METH_KEYWORDS,
     "Hand the torch entry points and exception classes to the binding."},
    {"parse_index", mod_parse_index, METH_VARARGS,
     "parse_index(shape, key) -> (starts, stops, steps, squeezed dims)"},
    {"window_domain", mod_window_domain, METH_VARARGS,
     "window_domain(window, ncoords, shape, starts, stops) -> (lo, count) or None"},
    {"window_bounds", mod_window_bounds, METH_VARARGS,
     "window_bounds(window, index) -> the window's pixel slices"},
    {"device_code", mod_device_code, METH_O, "device_code(torch.device) -> (DLPack device type, id)"},
    {"alloc_live_blocks", mod_alloc_live_blocks, METH_NOARGS, "Core allocations currently live."},
    {"buffer_pool", mod_buffer_pool, METH_VARARGS,
     "buffer_pool([limit]) -> bytes the recycling pool holds; sets its limit when given."},
    {"buffer_pool_limit", mod_buffer_pool_limit, METH_NOARGS, "buffer_pool_limit() -> the recycling pool's limit."},
    {"copy_threads", mod_copy_threads, METH_VARARGS,
     "copy_threads([n]) -> threads that assemble large reads (caller included); sets n when given."},
    {"_device_ops_on_cpu", mod_device_ops_on_cpu, METH_VARARGS,
     "_device_ops_on_cpu([flag]) -> previous flag; CPU tensors created while set use the device-ops path."},
    {"parallel_min_bytes", mod_parallel_min_bytes, METH_VARARGS,
     "parallel_min_bytes([n]) -> bytes below which a read is assembled on one thread; sets n when given."},
    {NULL, NULL, 0, NULL},
};

#define DEFAULT_POOL_BYTES (256u * 1024u * 1024u)

/* The GIL is the lock that serialises calls into the core (it_common.h,
 * "Threads"): a read waiting for windows another thread computes lets it go. */
static void *gil_release(void) { return PyEval_SaveThread(); }
static void gil_reacquire(void *token) { PyEval_RestoreThread((PyThreadState *)token); }

static int module_exec(PyObject *module)
{
    module_state *st = PyModule_GetState(module);
    it_buffer_pool_set_limit(DEFAULT_POOL_BYTES);
    it_set_lock_hooks(&(it_lock_hooks){gil_release, gil_reacquire});
    st->Cache_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Cache_spec, NULL);
    if (!st->Cache_type)
        return -1;
    Py_INCREF(st->Cache_type);
    if (PyModule_AddObject(module, "Cache", (PyObject *)st->Cache_type) < 0) {
        Py_DECREF(st->Cache_type);
        return -1;
    }
    if (tensor_type_init(module, st) < 0 || store_init(module, st) < 0 || blob_init(module, st) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "DLPACK_MAJOR", IT_DLPACK_MAJOR) < 0 ||
        PyModule_AddIntConstant(module, "MAX_DIMS", IT_MAX_DIMS) < 0 ||
        PyModule_AddIntConstant(module, "MAX_ARGS", IT_MAX_ARGS) < 0 ||
        PyModule_AddIntConstant(module, "PARAM_LIMIT_LOG2", IT_PARAM_LIMIT_LOG2) < 0 ||
        PyModule_AddIntConstant(module, "COORD_LIMIT_LOG2", IT_COORD_LIMIT_LOG2) < 0 ||
        PyModule_AddIntConstant(module, "COMBINE_SUM", IT_COMBINE_SUM) < 0 ||
        PyModule_AddIntConstant(module, "COMBINE_MAX", IT_COMBINE_MAX) < 0 ||
        PyModule_AddIntConstant(module, "COMBINE_MIN", IT_COMBINE_MIN) < 0 ||
        PyModule_AddIntConstant(module, "COMBINE_CUSTOM", IT_COMBINE_CUSTOM) < 0)
        return -1;
    PyObject *names = PyDict_New();
    if (!names)
        return -1;
    for (int i = 0; i < IT_DTYPE_COUNT; i++) {
        PyObject *v = PyLong_FromLong(i);
        if (!v || PyDict_SetItemString(names, it_dtype_name((it_dtype)i), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(names);
            return -1;
        }
        Py_DECREF(v);
    }
    if (PyModule_AddObject(module, "DTYPES", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = PyModule_GetState(module);
    Py_VISIT(st->Cache_type);
    Py_VISIT(st->Tensor_type);
    Py_VISIT(st->H5File_type);
    Py_VISIT(st->from_dlpack);
    Py_VISIT(st->to_dlpack);
    Py_VISIT(st->xapi_owner);
    Py_VISIT(st->torch_tensor);
    Py_VISIT(st->is_grad_enabled);
    Py_VISIT(st->set_grad_enabled);
    Py_VISIT(st->tensor_is_neg);
    Py_VISIT(st->tensor_is_conj);
    Py_VISIT(st->InfiniteTensorError);
    Py_VISIT(st->ValidationError);
    Py_VISIT(st->TileAccessError);
    Py_VISIT(st->ShapeMismatchError);
    Py_VISIT(st->DeviceMismatchError);
    Py_VISIT(st->DtypeMismatchError);
    Py_VISIT(st->CorruptBlobError);
    Py_VISIT(st->Blob_type);
    Py_VISIT(st->progress_hook);
    Py_VISIT(st->read_hook);
    Py_VISIT(st->read_wanted);
    Py_VISIT(st->memory_probe);
    return 0;
}

static int module_clear(PyObject *module)
{
    module_state *st = PyModule_GetState(module);
    Py_CLEAR(st->Cache_type);
    Py_CLEAR(st->Tensor_type);
    Py_CLEAR(st->H5File_type);
    Py_CLEAR(st->from_dlpack);
    Py_CLEAR(st->to_dlpack);
    st->xapi = NULL;
    Py_CLEAR(st->xapi_owner);
    Py_CLEAR(st->torch_tensor);
    Py_CLEAR(st->is_grad_enabled);
    Py_CLEAR(st->set_grad_enabled);
    Py_CLEAR(st->tensor_is_neg);
    Py_CLEAR(st->tensor_is_conj);
    Py_CLEAR(st->InfiniteTensorError);
    Py_CLEAR(st->ValidationError);
    Py_CLEAR(st->TileAccessError);
    Py_CLEAR(st->ShapeMismatchError);
    Py_CLEAR(st->DeviceMismatchError);
    Py_CLEAR(st->DtypeMismatchError);
    Py_CLEAR(st->CorruptBlobError);
    Py_CLEAR(st->Blob_type);
    Py_CLEAR(st->progress_hook);
    Py_CLEAR(st->read_hook);
    Py_CLEAR(st->read_wanted);
    Py_CLEAR(st->memory_probe);
    device_clear();
    return 0;
}

static void module_free(void *module) { module_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "infinite_tensor._core",
    "The C core of infinite_tensor: tiles, cache, planner, DLPack exchange.",
    sizeof(module_state),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&module_def); }
