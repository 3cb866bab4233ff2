/*
 * device.c - the binding's device-ops table (it_device.h): memory that torch
 * allocates and arithmetic that torch does.
 *
 * This is how CUDA tensors work without CUDA at build time and without a GPU
 * at import: a tile is a torch.empty(..., dtype=uint8, device=...) block the
 * table keeps a reference to, and each copy, fill or combine the core asks
 * for becomes one torch op on views of that memory (wrapped through DLPack,
 * no copy).  The ops run on torch's current stream, in the order the core
 * issues them, after whatever f queued there; torch's caching allocator
 * reuses a freed tile only in that same stream order.
 *
 * The same table can be forced on for CPU tensors (_core._device_ops_on_cpu),
 * which runs the core's device path, and this file, on machines without a
 * GPU.
 *
 * The torch side is two callables _configure hands over (_bridge.py):
 * alloc(nbytes, device_type, device_id) -> tensor and
 * apply(op, dst, src) -> None.
 */
#include "binding.h"

static PyObject *alloc_fn, *apply_fn; /* strong references, set by _configure */
static module_state *dev_state;
static int on_cpu; /* force the table on for CPU tensors (tests) */

static int is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* Record the pending Python exception as the core's callback error. */
static int callback_failed(const char *what)
{
    return it_error_set(IT_ECALLBACK, "%s failed (the Python exception says why)", what);
}

/* IT_OK if fn may be called now; never call Python over a pending exception. */
static int ready(PyObject *fn)
{
    if (!fn)
        return it_error_set(IT_ESTATE, "device memory is not configured");
    if (PyErr_Occurred())
        return callback_failed("an earlier call");
    return IT_OK;
}

static int dev_alloc(void *ctx, int device_type, int device_id, size_t nbytes, void **data, void **handle)
{
    (void)ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *t = NULL, *p = NULL;
    int rc = ready(alloc_fn);
    if (rc == IT_OK &&
        (!(t = PyObject_CallFunction(alloc_fn, "nii", (Py_ssize_t)nbytes, device_type, device_id)) ||
         !(p = PyObject_CallMethod(t, "data_ptr", NULL))))
        rc = callback_failed("allocating device memory");
    if (rc == IT_OK) {
        *data = PyLong_AsVoidPtr(p);
        if (PyErr_Occurred()) {
            rc = callback_failed("allocating device memory");
        } else if (((uintptr_t)*data & 63) != 0) {
            rc = it_error_set(IT_ESTATE, "device memory is not 64-byte aligned");
        } else {
            *handle = t;
            t = NULL;
        }
    }
    Py_XDECREF(p);
    Py_XDECREF(t);
    PyGILState_Release(g);
    return rc;
}

static void dev_release(void *ctx, void *handle)
{
    (void)ctx;
    if (!handle || is_finalizing()) /* at shutdown torch may be gone: leave it */
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)handle);
    PyGILState_Release(g);
}

static int dev_apply(void *ctx, it_combine op, const it_view *dst, const it_view *src)
{
    (void)ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *d = NULL, *s = NULL, *r = NULL;
    int rc = ready(apply_fn);
    if (rc == IT_OK && (!(d = wrap_view(dev_state, dst)) || !(s = wrap_view(dev_state, src)) ||
                        !(r = PyObject_CallFunction(apply_fn, "iOO", (int)op, d, s))))
        rc = callback_failed("a device operation");
    Py_XDECREF(r);
    Py_XDECREF(s);
    Py_XDECREF(d);
    PyGILState_Release(g);
    return rc;
}

const it_devops binding_devops = {IT_DEVOPS_VERSION, NULL, dev_alloc, dev_release, dev_apply};

const it_devops *devops_for(int device_type)
{
    return device_type != kDLCPU || on_cpu ? &binding_devops : NULL;
}

int device_configure(module_state *st, PyObject *alloc, PyObject *apply)
{
    if (!PyCallable_Check(alloc) || !PyCallable_Check(apply)) {
        PyErr_SetString(PyExc_TypeError, "device_alloc and device_apply must be callable");
        return -1;
    }
    Py_XSETREF(alloc_fn, Py_NewRef(alloc));
    Py_XSETREF(apply_fn, Py_NewRef(apply));
    dev_state = st;
    return 0;
}

void device_clear(void)
{
    Py_CLEAR(alloc_fn);
    Py_CLEAR(apply_fn);
    dev_state = NULL;
}

/* _device_ops_on_cpu([flag]) -> the previous setting: run CPU tensors created
 * from now on through this table (tests of the device path). */
PyObject *mod_device_ops_on_cpu(PyObject *module, PyObject *args)
{
    (void)module;
    int prev = on_cpu, flag = prev;
    if (!PyArg_ParseTuple(args, "|p", &flag))
        return NULL;
    on_cpu = flag;
    return PyBool_FromLong(prev);
}
