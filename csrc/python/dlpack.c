/*
 * dlpack.c - zero-copy exchange of buffers with torch.
 *
 * Two ways across, picked once at _configure:
 *
 * The C exchange table (DLPack 1.3, torch.Tensor.__dlpack_c_exchange_api__),
 * when torch has one.  Export hands a versioned managed tensor to
 * managed_tensor_to_py_object_no_sync, which wraps it as a torch.Tensor
 * directly.  Import fills a DLTensor on our stack with
 * dltensor_from_py_object_no_sync, without allocating anything; we keep a
 * reference to the tensor object until the values are in tiles.  Tens of
 * nanoseconds a conversion, against about 0.4 us through capsules.
 *
 * Capsules otherwise (older torch; tensor subclasses, which the table does
 * not promise to handle).  Export: the managed tensor goes into a "dltensor"
 * capsule for torch's from_dlpack; if torch never consumes it, the capsule
 * destructor runs the deleter.  Import: f's output goes through torch's
 * to_dlpack; both the legacy "dltensor" and the versioned
 * "dltensor_versioned" capsules are accepted; the capsule is renamed
 * "used_..." and we call the deleter once the values are in tiles.
 *
 * Either way an exported buffer lives in one block with its shape and
 * strides; the deleter frees the block and the buffer with it_free, which
 * needs neither the GIL nor any lock, so torch may run it on any thread,
 * even during interpreter shutdown.
 */
#include "binding.h"

#include <stddef.h>
#include <string.h>

typedef struct export_block {
    union {
        DLManagedTensor legacy;
        DLManagedTensorVersioned versioned;
    } mt;
    it_buffer *buf;
    void (*release)(void *); /* export_kept's: what keeps the memory, or NULL */
    void *ctx;
    int64_t shape[IT_MAX_DIMS];
    int64_t strides[IT_MAX_DIMS];
} export_block;

static void export_free(export_block *blk)
{
    it_buffer_free(blk->buf);
    if (blk->release)
        blk->release(blk->ctx);
    it_free(blk);
}

static void legacy_deleter(DLManagedTensor *self) { export_free(self->manager_ctx); }
static void versioned_deleter(DLManagedTensorVersioned *self) { export_free(self->manager_ctx); }

static void capsule_destructor(PyObject *capsule)
{
    /* torch renames a consumed capsule; anything still named "dltensor" was
     * never consumed and still owns its tensor */
    if (PyCapsule_IsValid(capsule, "dltensor")) { /* sets no exception either way */
        DLManagedTensor *mt = PyCapsule_GetPointer(capsule, "dltensor");
        if (mt && mt->deleter)
            mt->deleter(mt);
    }
}

static const DLDataType dl_types[IT_DTYPE_COUNT] = {
    [IT_BOOL] = {kDLBool, 8, 1},    [IT_U8] = {kDLUInt, 8, 1},     [IT_I8] = {kDLInt, 8, 1},
    [IT_I16] = {kDLInt, 16, 1},     [IT_I32] = {kDLInt, 32, 1},    [IT_I64] = {kDLInt, 64, 1},
    [IT_U16] = {kDLUInt, 16, 1},    [IT_U32] = {kDLUInt, 32, 1},   [IT_U64] = {kDLUInt, 64, 1},
    [IT_F16] = {kDLFloat, 16, 1},   [IT_BF16] = {kDLBfloat, 16, 1}, [IT_F32] = {kDLFloat, 32, 1},
    [IT_F64] = {kDLFloat, 64, 1},   [IT_C64] = {kDLComplex, 64, 1}, [IT_C128] = {kDLComplex, 128, 1},
};

int dtype_from_dl(DLDataType dt)
{
    if (dt.lanes != 1)
        return -1;
    for (int i = 0; i < IT_DTYPE_COUNT; i++)
        if (dl_types[i].code == dt.code && dl_types[i].bits == dt.bits)
            return i;
    return -1;
}

/* Hand blk (its dl_tensor filled in by the caller) to torch as a tensor;
 * the deleter frees blk and the buffer it holds. */
static PyObject *export_block_to_torch(module_state *st, export_block *blk, const DLTensor *dl)
{
    if (st->xapi) {
        DLManagedTensorVersioned *m = &blk->mt.versioned;
        m->version.major = IT_DLPACK_MAJOR;
        m->version.minor = IT_DLPACK_MINOR;
        m->manager_ctx = blk;
        m->deleter = versioned_deleter;
        m->flags = 0;
        m->dl_tensor = *dl;
        void *res = NULL;
        /* on failure torch has taken the tensor or not, we cannot tell:
         * leaking one buffer beats freeing it twice */
        if (st->xapi->managed_tensor_to_py_object_no_sync(m, &res) < 0)
            return NULL;
        return res;
    }
    DLManagedTensor *m = &blk->mt.legacy;
    m->dl_tensor = *dl;
    m->manager_ctx = blk;
    m->deleter = legacy_deleter;
    PyObject *capsule = PyCapsule_New(m, "dltensor", capsule_destructor);
    if (!capsule) {
        export_free(blk);
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(st->from_dlpack, capsule);
    Py_DECREF(capsule);
    return res;
}

/* A tensor over the view's memory (shape and byte strides as in v); owned,
 * when not NULL, is freed with the tensor (or now, on failure). */
static PyObject *export_view(module_state *st, const it_view *v, it_buffer *owned,
                             void (*release)(void *), void *ctx)
{
    export_block *blk = it_malloc(sizeof *blk);
    if (!blk) {
        it_buffer_free(owned);
        if (release)
            release(ctx);
        return PyErr_NoMemory();
    }
    blk->buf = owned;
    blk->release = release;
    blk->ctx = ctx;
    int64_t es = (int64_t)it_dtype_size(v->dtype);
    for (int d = 0; d < v->ndim; d++) {
        blk->shape[d] = v->shape[d];
        blk->strides[d] = v->strides[d] / es; /* DLPack counts elements; ours are whole ones */
    }
    DLTensor dl = {
        .data = v->data,
        .device = {v->device_type, v->device_id},
        .ndim = v->ndim,
        .dtype = dl_types[v->dtype],
        .shape = blk->shape,
        .strides = blk->strides,
        .byte_offset = 0,
    };
    return export_block_to_torch(st, blk, &dl);
}

PyObject *export_buffer(module_state *st, it_buffer *buf, int ndim, const int64_t *shape)
{
    it_view v;
    it_buffer_view(buf, &v);
    v.ndim = ndim; /* the same elements, contiguous, under the caller's shape */
    memcpy(v.shape, shape, sizeof(int64_t) * (size_t)ndim);
    it_contiguous_strides(it_dtype_size(buf->dtype), ndim, shape, v.strides);
    return export_view(st, &v, buf, NULL, NULL);
}

PyObject *wrap_view(module_state *st, const it_view *v) { return export_view(st, v, NULL, NULL, NULL); }

PyObject *export_kept(module_state *st, const it_view *v, void (*release)(void *), void *ctx)
{
    return export_view(st, v, NULL, release, ctx);
}

void release_hold(dl_hold *hold)
{
    Py_CLEAR(hold->obj);
    if (!hold->managed)
        return;
    if (hold->versioned) {
        DLManagedTensorVersioned *m = hold->managed;
        if (m->deleter)
            m->deleter(m);
    } else {
        DLManagedTensor *m = hold->managed;
        if (m->deleter)
            m->deleter(m);
    }
    hold->managed = NULL;
}

/* Take ownership of the tensor inside a capsule. */
static int take_capsule(PyObject *cap, dl_hold *hold, DLTensor **dl)
{
    const char *name = PyCapsule_CheckExact(cap) ? PyCapsule_GetName(cap) : NULL;
    if (name && strcmp(name, "dltensor") == 0) {
        DLManagedTensor *m = PyCapsule_GetPointer(cap, name);
        if (!m || PyCapsule_SetName(cap, "used_dltensor") < 0)
            return -1;
        hold->managed = m;
        hold->versioned = 0;
        *dl = &m->dl_tensor;
        return 0;
    }
    if (name && strcmp(name, "dltensor_versioned") == 0) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, name);
        if (!m)
            return -1;
        if (m->version.major > IT_DLPACK_MAJOR) {
            PyErr_Format(PyExc_BufferError, "DLPack version %u.%u is newer than supported %d.%d",
                         m->version.major, m->version.minor, IT_DLPACK_MAJOR, IT_DLPACK_MINOR);
            return -1;
        }
        if (PyCapsule_SetName(cap, "used_dltensor_versioned") < 0)
            return -1;
        hold->managed = m;
        hold->versioned = 1;
        *dl = &m->dl_tensor;
        return 0;
    }
    PyErr_Clear();
    PyErr_SetString(PyExc_BufferError, "to_dlpack did not return an unconsumed DLPack capsule");
    return -1;
}

/* Lazy views.  torch marks some tensors with a flag instead of computing
 * their values: the negative bit (torch._neg_view, the imaginary part of a
 * conjugate), the conjugate bit (z.conj()), and ZeroTensor
 * (torch._efficientzerotensor), which has no memory at all.  DLPack exports
 * the memory underneath and drops the flag, so such a tensor would be stored
 * with the wrong sign, or read through a NULL pointer.  Fake, functional and
 * wrapper-subclass tensors (FakeTensor, MaskedTensor, ...) have no memory
 * either.  Every imported tensor therefore gets one cheap check, is_neg()
 * through the cached method descriptor (is_conj() too for complex dtypes:
 * only they carry that bit), plus a test of the data pointer that costs
 * nothing; only a flagged tensor pays for resolve_conj()/resolve_neg() and a
 * second import.  Measured on the development machine (16x16 windows, a
 * trivial f): about 0.1 us more per window for real dtypes, most of it
 * inside torch's is_neg (it releases and retakes the GIL); complex dtypes
 * got faster, as the old check looked both methods up by name each time.
 * A ZeroTensor is cloned into real zeros; any other tensor without memory
 * is a TypeError. */

/* 1 if the view has elements but no memory, else 0. */
static int has_no_memory(const it_view *v)
{
    if (v->data)
        return 0;
    for (int d = 0; d < v->ndim; d++)
        if (v->shape[d] == 0)
            return 0;
    return 1;
}

/* 1 if the method descriptor meth says obj carries its flag, 0 if not (or
 * if this torch has no such method), -1 with an exception. */
static int flag_set(PyObject *meth, PyObject *obj)
{
    if (!meth)
        return 0;
    PyObject *r = PyObject_CallOneArg(meth, obj);
    if (!r)
        return -1;
    int set = r == Py_True ? 1 : r == Py_False ? 0 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return set;
}

static int has_lazy_bits(module_state *st, PyObject *obj, it_dtype dt)
{
    int set = flag_set(st->tensor_is_neg, obj);
    if (set == 0 && (dt == IT_C64 || dt == IT_C128))
        set = flag_set(st->tensor_is_conj, obj);
    return set;
}

/* A new tensor with obj's values in memory; NULL with an exception. */
static PyObject *materialize(PyObject *obj, int no_memory)
{
    PyObject *base;
    if (no_memory) {
        PyObject *r = PyObject_CallMethod(obj, "_is_zerotensor", NULL);
        int zero = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (zero < 0)
            return NULL;
        if (!zero) {
            PyErr_Format(PyExc_TypeError,
                         "expected a tensor holding its values in memory, got a %.100s with none (a fake, "
                         "functional or wrapper-subclass tensor?); return a plain torch.Tensor",
                         Py_TYPE(obj)->tp_name);
            return NULL;
        }
        base = PyObject_CallMethod(obj, "clone", NULL); /* ZeroTensor: real zeros */
    } else {
        base = Py_NewRef(obj);
    }
    PyObject *a = base ? PyObject_CallMethod(base, "resolve_conj", NULL) : NULL;
    Py_XDECREF(base);
    PyObject *b = a ? PyObject_CallMethod(a, "resolve_neg", NULL) : NULL;
    Py_XDECREF(a);
    return b;
}

static int import_once(module_state *st, PyObject *obj, it_view *view, dl_hold *hold);

int import_tensor(module_state *st, PyObject *obj, it_view *view, dl_hold *hold)
{
    if (import_once(st, obj, view, hold) < 0)
        return -1;
    int no_memory = has_no_memory(view);
    int lazy = no_memory ? 1 : has_lazy_bits(st, obj, view->dtype);
    if (lazy == 0)
        return 0;
    release_hold(hold);
    if (lazy < 0)
        return -1;
    PyObject *fixed = materialize(obj, no_memory);
    if (!fixed)
        return -1;
    int rc = import_once(st, fixed, view, hold);
    if (rc == 0 && has_no_memory(view)) {
        release_hold(hold);
        PyErr_Format(PyExc_TypeError, "got a %.100s whose values torch could not put in memory",
                     Py_TYPE(obj)->tp_name);
        rc = -1;
    }
    Py_DECREF(fixed); /* *hold keeps the resolved tensor alive */
    return rc;
}

/* Fill *view from a DLTensor whose memory *hold keeps; -1 with an exception. */
static int view_from_dl(const DLTensor *dl, it_view *view, dl_hold *hold)
{
    int dt = dtype_from_dl(dl->dtype);
    if (dl->ndim > IT_MAX_DIMS) {
        release_hold(hold);
        PyErr_Format(PyExc_ValueError, "tensors of more than %d dims are not supported", IT_MAX_DIMS);
        return -1;
    }
    view->data = (char *)dl->data + dl->byte_offset;
    view->dtype = dt < 0 ? IT_DTYPE_COUNT : (it_dtype)dt;
    view->ndim = dl->ndim;
    view->device_type = dl->device.device_type;
    view->device_id = dl->device.device_id;
    int64_t es = dt < 0 ? 1 : (int64_t)it_dtype_size((it_dtype)dt), s = es;
    for (int d = dl->ndim - 1; d >= 0; d--) {
        view->shape[d] = dl->shape[d];
        view->strides[d] = dl->strides ? dl->strides[d] * es : s;
        s *= dl->shape[d];
    }
    return 0;
}

static int import_once(module_state *st, PyObject *obj, it_view *view, dl_hold *hold)
{
    hold->obj = NULL;
    hold->managed = NULL;
    if (st->xapi && Py_TYPE(obj) == (PyTypeObject *)st->torch_tensor) {
        DLTensor dl;
        if (st->xapi->dltensor_from_py_object_no_sync(obj, &dl) == 0) {
            hold->obj = Py_NewRef(obj);
            return view_from_dl(&dl, view, hold);
        }
        PyErr_Clear(); /* the capsule path below reports what is wrong */
    }
    PyObject *cap = PyObject_CallOneArg(st->to_dlpack, obj);
    if (!cap) {
        /* a tensor that requires grad cannot be exported as it is: detach
         * it (and resolve lazy bits) and try once more */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *fixed = PyObject_CallMethod(obj, "detach", NULL);
        PyObject *f2 = fixed ? PyObject_CallMethod(fixed, "resolve_conj", NULL) : NULL;
        PyObject *f3 = f2 ? PyObject_CallMethod(f2, "resolve_neg", NULL) : NULL;
        Py_XDECREF(fixed);
        Py_XDECREF(f2);
        if (f3) {
            cap = PyObject_CallOneArg(st->to_dlpack, f3);
            Py_DECREF(f3);
        }
        if (!cap) {
            PyErr_Clear();
            PyErr_Restore(et, ev, tb);
            return -1;
        }
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
    }
    DLTensor *dl;
    int rc = take_capsule(cap, hold, &dl);
    Py_DECREF(cap);
    if (rc < 0)
        return -1;
    return view_from_dl(dl, view, hold);
}
