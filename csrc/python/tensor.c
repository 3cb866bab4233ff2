/*
 * tensor.c - the _core.Tensor type: one core tensor node, and the callbacks
 * through which the core calls f and blend.
 *
 * Calling f.  The core hands a batch of window indices and argument buffers.
 * Each argument buffer is exported to torch without a copy; f's outputs are
 * imported through DLPack and checked before the core copies them into
 * tiles.  A batched f gets lists and must return exactly one output per
 * window, as a sequence or as one tensor stacked along a new first dim.
 *
 * Checking outputs.  f's outputs, blend's results and converted tiles are
 * checked by one core function, it_view_check (shape, then device, then
 * dtype: 0.3's order), and a mismatch is worded in one place, mismatch()
 * below, in 0.3's words ("Function output shape (3, 6) does not match
 * expected window shape (6, 6)") with torch's names for devices and dtypes.
 * An output DLPack cannot import (meta, quantized, nested...) goes through
 * the same check on what its attributes say.
 *
 * Saying where.  An error about f's output (wrong shape, dtype, device, not
 * a tensor, a count that does not match) names the tensor id and the
 * window index in its message; an exception f (or blend) raises itself, or
 * that torch raises while we read the output, keeps its class and traceback
 * and gets a PEP 678 note instead (Python 3.11 on), once per tensor and
 * window it passes through: f reading another tensor that fails adds the
 * outer tensor's note below the inner one's.  Window indices come from the
 * core's copy, never from the list handed to a batched f, which f may have
 * changed.
 *
 * Grad mode.  f runs under no_grad.  Rather than entering a context manager
 * per window, the first computation of an outermost read switches grad off
 * for the thread and the end of that read switches it back (thread-local
 * bookkeeping, so nested reads from f leave it alone).
 *
 * Reference cycles: the core node owns f and blend (through the user
 * struct).  The GC is shown them only while this Python object is the node's
 * sole owner; a node shared with downstream nodes keeps them alive.
 */
#include "binding.h"

#include <limits.h>
#include <string.h>

typedef struct tensor_user {
    Py_ssize_t refs;    /* the node's, plus one per callback in progress */
    module_state *st;
    it_tensor *t;       /* the node owning this struct (borrowed) */
    PyObject *f;
    PyObject *blend;
    PyObject *device;   /* the declared torch.device, for messages */
    PyObject *dtype;    /* the declared torch.dtype, for messages */
    PyObject *id;       /* the tensor id, for messages (None if not given) */
    PyObject *spare;    /* a window-index tuple f did not keep, to refill */
    int batched;
} tensor_user;


static _Thread_local int read_depth;
static _Thread_local int grad_off_by_us;

/* ---- user struct --------------------------------------------------------- */

/* Drop a reference to a user struct (the core's user_free drops the node's).
 * Callbacks hold their own: a re-registration may replace the struct while f
 * runs, and the running call must keep the struct it started with. */
static void user_free(void *p)
{
    tensor_user *u = p;
    if (--u->refs > 0)
        return;
    Py_XDECREF(u->f);
    Py_XDECREF(u->blend);
    Py_XDECREF(u->device);
    Py_XDECREF(u->dtype);
    Py_XDECREF(u->id);
    Py_XDECREF(u->spare);
    PyMem_Free(u);
}

static tensor_user *user_new(module_state *st, PyObject *f, PyObject *blend, PyObject *device,
                             PyObject *dtype, PyObject *id, int batched)
{
    tensor_user *u = PyMem_Calloc(1, sizeof *u);
    if (!u) {
        PyErr_NoMemory();
        return NULL;
    }
    u->refs = 1;
    u->st = st;
    Py_INCREF(f);
    u->f = f;
    Py_XINCREF(blend == Py_None ? NULL : blend);
    u->blend = blend == Py_None ? NULL : blend;
    Py_INCREF(device);
    u->device = device;
    Py_INCREF(dtype);
    u->dtype = dtype;
    u->id = Py_NewRef(id);
    u->batched = batched;
    return u;
}

/* ---- saying which tensor and window an error is about --------------------- */

/* n windows of k coordinates each (n == 0: the tensor alone, as for blend) */
typedef struct where {
    const int64_t *coords;
    int64_t n;
    int k;
} where;

#define WHERE_SHOWN 4 /* windows a message lists before "and N more" */

static PyObject *coords_tuple(const int64_t *c, int k);

/* "infinite tensor 'id', window (0, 2)", "... windows (0, 0), (0, 1) and 3
 * more"; NULL with an exception. */
static PyObject *where_text(const tensor_user *u, const where *w)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    int64_t shown = w->n < WHERE_SHOWN ? w->n : WHERE_SHOWN;
    for (int64_t i = 0; i < shown; i++) {
        PyObject *c = coords_tuple(w->coords + i * w->k, w->k);
        PyObject *r = c ? PyObject_Repr(c) : NULL;
        Py_XDECREF(c);
        if (!r || PyList_Append(list, r) < 0) {
            Py_XDECREF(r);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(r);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *windows = sep ? PyUnicode_Join(sep, list) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(list);
    if (!windows)
        return NULL;
    PyObject *res;
    if (w->n == 0)
        res = PyUnicode_FromFormat("infinite tensor %R", u->id);
    else if (w->n <= WHERE_SHOWN)
        res = PyUnicode_FromFormat("infinite tensor %R, window%s %U", u->id, w->n == 1 ? "" : "s", windows);
    else
        res = PyUnicode_FromFormat("infinite tensor %R, windows %U and %lld more", u->id, windows,
                                   (long long)(w->n - shown));
    Py_DECREF(windows);
    return res;
}

/* Add a PEP 678 note to the exception set now, unless it has that note
 * already; the exception keeps its class and traceback.  Nothing before
 * Python 3.11, or if the note cannot be made. */
static void add_note(PyObject *note)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev && tb)
        PyException_SetTraceback(ev, tb);
    PyObject *notes = ev ? PyObject_GetAttrString(ev, "__notes__") : NULL;
    int have = notes && PyList_Check(notes) ? PySequence_Contains(notes, note) : 0;
    Py_XDECREF(notes);
    PyErr_Clear();
    if (ev && have == 0) {
        PyObject *r = PyObject_CallMethod(ev, "add_note", "O", note);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyErr_Restore(et, ev, tb);
#else
    (void)note;
#endif
}

/* Add "<verb> <what> of <where>" as a note to the exception set now.
 * Returns -1. */
static int note_current(const tensor_user *u, const where *w, const char *verb, const char *what)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *text = where_text(u, w);
    PyObject *note = text ? PyUnicode_FromFormat("%s %s of %U", verb, what, text) : NULL;
    Py_XDECREF(text);
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
    if (note)
        add_note(note);
    Py_XDECREF(note);
    return -1;
}

/* The exception set now came from calling `what` (f or blend): note where.
 * Returns -1. */
static int note_where(const tensor_user *u, const where *w, const char *what)
{
    return note_current(u, w, "raised in", what);
}

/* An output of f (or blend) was refused: our own checks' errors (the
 * mismatch classes, TypeError) get where in their message; anything else
 * (torch's, say) a note.  Returns -1. */
static int refuse_where(const tensor_user *u, const where *w, const char *what)
{
    module_state *st = u->st;
    PyObject *cls[] = {st->ShapeMismatchError, st->DtypeMismatchError, st->DeviceMismatchError, PyExc_TypeError};
    int ours = 0;
    for (size_t i = 0; i < sizeof cls / sizeof cls[0] && !ours; i++)
        ours = PyErr_ExceptionMatches(cls[i]);
    if (!ours)
        return note_current(u, w, "raised reading the output of", what);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    PyObject *msg = ev ? PyObject_Str(ev) : NULL;
    PyObject *text = msg ? where_text(u, w) : NULL;
    if (text) {
        PyErr_Format(et, "%U (%U)", msg, text);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
    } else {
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    Py_XDECREF(msg);
    Py_XDECREF(text);
    return -1;
}

/* ---- checking and importing outputs -------------------------------------- */

/* What an output must be (f's for a window, blend's for a region, a
 * converted tile) and the words its messages use. */
typedef struct expect {
    const char *who;    /* the subject of the messages: "Function output" (0.3's words) */
    const char *place;  /* what its shape must match: "window" */
    const char *callee; /* who returned it, for TypeErrors: "f" */
    int ndim;
    const int64_t *shape;
    it_dtype dtype;
    int device_type, device_id;
    PyObject *dtype_obj, *device_obj; /* the declared ones, for messages (borrowed) */
} expect;

/* f's output for one window of u's tensor. */
static expect f_expect(const tensor_user *u)
{
    const it_tensor_spec *spec = it_tensor_get_spec(u->t);
    expect e = {"Function output", "window", "f", spec->ndim, spec->window.size, spec->dtype,
                spec->device_type, spec->device_id, u->dtype, u->device};
    return e;
}

static PyObject *int64_tuple(int n, const int64_t *v)
{
    PyObject *t = PyTuple_New(n);
    for (int d = 0; t && d < n; d++) {
        PyObject *x = PyLong_FromLongLong(v[d]);
        if (!x) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, d, x);
    }
    return t;
}

/* Set the exception for it_view_check's code rc: the one wording of each
 * mismatch.  actual: the output's shape as a tuple, obj: the output (for its
 * device and dtype).  Returns -1. */
static int mismatch(module_state *st, const expect *e, int rc, PyObject *actual, PyObject *obj)
{
    if (rc == IT_ESHAPE) {
        PyObject *want = int64_tuple(e->ndim, e->shape);
        if (want && actual)
            PyErr_Format(st->ShapeMismatchError, "%s shape %R does not match expected %s shape %R", e->who,
                         actual, e->place, want);
        Py_XDECREF(want);
    } else if (rc == IT_EDEVICE) {
        PyObject *dev = PyObject_GetAttrString(obj, "device");
        if (dev)
            PyErr_Format(st->DeviceMismatchError, "%s is on device %S, tensor declared device %S.", e->who, dev,
                         e->device_obj);
        Py_XDECREF(dev);
    } else {
        PyObject *dt = PyObject_GetAttrString(obj, "dtype");
        if (dt)
            PyErr_Format(st->DtypeMismatchError, "%s has dtype %S, tensor declared dtype %S.", e->who, dt,
                         e->dtype_obj);
        Py_XDECREF(dt);
    }
    return -1;
}

/* Check an imported output (obj: the tensor it came from); -1 with an
 * exception. */
static int check_output(module_state *st, const expect *e, PyObject *obj, const it_view *v)
{
    int rc = it_view_check(v, e->who, e->ndim, e->shape, e->dtype, e->device_type, e->device_id);
    if (rc == IT_OK)
        return 0;
    PyObject *actual = rc == IT_ESHAPE ? int64_tuple(v->ndim, v->shape) : NULL;
    mismatch(st, e, rc, actual, obj);
    Py_XDECREF(actual);
    return -1;
}

/* A tensor DLPack cannot export because it is not dense (nested, sparse,
 * mkldnn...): 1 with a TypeError naming `who` set, 0 if it is a plain strided
 * tensor, -1 with an exception if its layout cannot be read. */
static int layout_error(PyObject *out, const char *who)
{
    PyObject *nested = PyObject_GetAttrString(out, "is_nested");
    int is_nested = nested ? PyObject_IsTrue(nested) : -1;
    Py_XDECREF(nested);
    if (is_nested < 0)
        return -1;
    if (is_nested) {
        PyErr_Format(PyExc_TypeError, "%s must return a dense (strided) torch.Tensor, got a nested tensor", who);
        return 1;
    }
    PyObject *layout = PyObject_GetAttrString(out, "layout");
    if (!layout)
        return -1;
    PyObject *name = PyObject_Str(layout);
    int strided = name ? PyUnicode_CompareWithASCIIString(name, "torch.strided") == 0 : -1;
    if (strided == 0)
        PyErr_Format(PyExc_TypeError, "%s must return a dense (strided) torch.Tensor, got layout %S", who, layout);
    Py_XDECREF(name);
    Py_DECREF(layout);
    return strided < 0 ? -1 : !strided;
}

/* An output DLPack could not import (a meta, sparse, quantized or nested
 * tensor, say; the import error is set): the same check as check_output,
 * on what its attributes say (the shape it reports; the device and dtype as
 * declared or not), so that it is refused for the rule it breaks, in the
 * same words; else for not being dense; else for the import error.
 * Returns -1. */
static int explain_unexportable(module_state *st, const expect *e, PyObject *obj)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *shape = PyObject_GetAttrString(obj, "shape");
    PyObject *actual = shape ? PySequence_Tuple(shape) : NULL;
    PyObject *dev = actual ? PyObject_GetAttrString(obj, "device") : NULL;
    PyObject *dt = dev ? PyObject_GetAttrString(obj, "dtype") : NULL;
    int dev_eq = dt ? PyObject_RichCompareBool(dev, e->device_obj, Py_EQ) : -1;
    int dt_eq = dev_eq >= 0 ? PyObject_RichCompareBool(dt, e->dtype_obj, Py_EQ) : -1;
    int rc = IT_OK, keep = 0;
    if (dt_eq < 0) {
        PyErr_Clear(); /* a nested tensor has no shape to read */
        keep = layout_error(obj, e->callee) != 1;
    } else {
        it_view seen = {0};
        Py_ssize_t n = PyTuple_GET_SIZE(actual);
        seen.ndim = n <= IT_MAX_DIMS ? (int)n : -1;
        for (int d = 0; d < seen.ndim; d++) {
            seen.shape[d] = PyLong_AsLongLong(PyTuple_GET_ITEM(actual, d));
            if (seen.shape[d] == -1 && PyErr_Occurred()) { /* a symbolic size (jagged) */
                PyErr_Clear();
                seen.ndim = -1;
            }
        }
        seen.device_type = dev_eq ? e->device_type : -1;
        seen.device_id = e->device_id;
        seen.dtype = dt_eq ? e->dtype : IT_DTYPE_COUNT;
        rc = it_view_check(&seen, e->who, e->ndim, e->shape, e->dtype, e->device_type, e->device_id);
        if (rc)
            mismatch(st, e, rc, actual, obj);
        else
            keep = layout_error(obj, e->callee) != 1;
    }
    if (keep) {
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    } else {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
    }
    Py_XDECREF(shape);
    Py_XDECREF(actual);
    Py_XDECREF(dev);
    Py_XDECREF(dt);
    return -1;
}

/* Import one output of f (for the window w) and check it; -1 with an
 * exception that names w. */
static int take_output(tensor_user *u, PyObject *out, const where *w, it_view *v, dl_hold *hold)
{
    module_state *st = u->st;
    expect e = f_expect(u);
    if (!PyObject_TypeCheck(out, (PyTypeObject *)st->torch_tensor)) {
        PyErr_Format(PyExc_TypeError, "f must return a torch.Tensor, got %.100s", Py_TYPE(out)->tp_name);
        return refuse_where(u, w, "f");
    }
    if (import_tensor(st, out, v, hold) < 0) {
        explain_unexportable(st, &e, out);
        return refuse_where(u, w, "f");
    }
    if (check_output(st, &e, out, v) < 0) {
        release_hold(hold);
        return refuse_where(u, w, "f");
    }
    return 0;
}

/* The i-th window of a batch (i < 0: all of them). */
static where batch_where(const it_batch *b, int64_t i)
{
    where w = {b->coords, b->n, b->ncoords};
    if (i >= 0) {
        w.coords = b->coords + i * b->ncoords;
        w.n = 1;
    }
    return w;
}

typedef struct outputs {
    int64_t n;
    dl_hold holds[]; /* one per output */
} outputs;

/* A batched f returned one tensor stacked along a new first dim: import it
 * once and cut it into per-window views in C.  1 when done (0 or -1 set in
 * *rc), 0 when the per-item path should handle it (and its errors). */
static int take_stacked(tensor_user *u, it_batch *b, PyObject *result, outputs *outs, int *rc)
{
    const it_tensor_spec *spec = it_tensor_get_spec(u->t);
    it_view whole;
    if (import_tensor(u->st, result, &whole, &outs->holds[0]) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (whole.ndim != spec->ndim + 1 || whole.shape[0] != b->n) {
        release_hold(&outs->holds[0]);
        return 0;
    }
    for (int64_t i = 0; i < b->n; i++) {
        it_view *v = &b->out[i];
        *v = whole;
        v->ndim = whole.ndim - 1;
        v->data = (char *)whole.data + i * whole.strides[0];
        memmove(v->shape, whole.shape + 1, sizeof(int64_t) * (size_t)v->ndim);
        memmove(v->strides, whole.strides + 1, sizeof(int64_t) * (size_t)v->ndim);
    }
    expect e = f_expect(u);
    *rc = check_output(u->st, &e, result, &b->out[0]); /* the views share shape, device and dtype */
    if (*rc < 0) {
        where w = batch_where(b, -1);
        refuse_where(u, &w, "f");
    }
    return 1;
}

static void switch_grad_off(module_state *st)
{
    if (grad_off_by_us)
        return;
    PyObject *on = PyObject_CallNoArgs(st->is_grad_enabled);
    if (!on) {
        PyErr_Clear();
        return;
    }
    if (on == Py_True) {
        PyObject *r = PyObject_CallOneArg(st->set_grad_enabled, Py_False);
        if (r)
            grad_off_by_us = 1;
        else
            PyErr_Clear();
        Py_XDECREF(r);
    }
    Py_DECREF(on);
}

/* Refill a tuple nobody else references with new window coordinates. */
static int refill_coords(PyObject *t, const int64_t *c, int k)
{
    for (int i = 0; i < k; i++) {
        PyObject *v = PyLong_FromLongLong(c[i]);
        if (!v)
            return -1;
        PyObject *old = PyTuple_GET_ITEM(t, i);
        PyTuple_SET_ITEM(t, i, v);
        Py_DECREF(old);
    }
    return 0;
}

static PyObject *coords_tuple(const int64_t *c, int k)
{
    PyObject *t = PyTuple_New(k);
    for (int i = 0; t && i < k; i++) {
        PyObject *v = PyLong_FromLongLong(c[i]);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* Export batch->args[a * n + i] (taking ownership). */
static PyObject *export_arg(module_state *st, it_batch *b, int a, int64_t i)
{
    it_buffer *buf = b->args[a * b->n + i];
    b->args[a * b->n + i] = NULL;
    return export_buffer(st, buf, buf->ndim, buf->shape);
}


/* Check a batched result and import its outputs; -1 with an exception. */
static int take_batch(tensor_user *u, it_batch *b, PyObject *result, outputs *outs)
{
    module_state *st = u->st;
    where all = batch_where(b, -1);
    if (PyObject_TypeCheck(result, (PyTypeObject *)st->torch_tensor)) {
        /* one tensor stacked along a new first dim */
        int rc;
        if (take_stacked(u, b, result, outs, &rc))
            return rc;
        Py_ssize_t m = PyObject_Length(result);
        if (m < 0)
            return refuse_where(u, &all, "f");
        if (m != b->n) {
            PyErr_Format(st->ShapeMismatchError,
                         "Batched f returned a tensor with %zd entries along dim 0 for a batch of "
                         "%lld windows", m, (long long)b->n);
            return refuse_where(u, &all, "f");
        }
        for (int64_t i = 0; i < b->n; i++) {
            PyObject *idx = PyLong_FromLongLong(i);
            PyObject *item = idx ? PyObject_GetItem(result, idx) : NULL;
            Py_XDECREF(idx);
            if (!item)
                return refuse_where(u, &all, "f");
            where one = batch_where(b, i);
            int r = take_output(u, item, &one, &b->out[i], &outs->holds[i]);
            Py_DECREF(item);
            if (r < 0)
                return -1;
        }
        return 0;
    }
    if (!PyList_Check(result) && !PyTuple_Check(result)) {
        PyErr_Format(PyExc_TypeError, "batched f must return a list of tensors, got %.100s",
                     Py_TYPE(result)->tp_name);
        return refuse_where(u, &all, "f");
    }
    PyObject *seq = PySequence_Fast(result, "batched f must return a list of tensors");
    if (!seq)
        return refuse_where(u, &all, "f");
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    if (m != b->n) {
        PyErr_Format(st->ShapeMismatchError,
                     "Batched f returned %zd outputs for a batch of %lld windows", m, (long long)b->n);
        Py_DECREF(seq);
        return refuse_where(u, &all, "f");
    }
    for (int64_t i = 0; i < b->n; i++) {
        where one = batch_where(b, i);
        if (take_output(u, PySequence_Fast_GET_ITEM(seq, i), &one, &b->out[i], &outs->holds[i]) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static void free_outputs(outputs *outs)
{
    if (!outs)
        return;
    for (int64_t i = 0; i < outs->n; i++)
        release_hold(&outs->holds[i]);
    PyMem_Free(outs);
}

/* Tell the progress hook how far the plan of this batch is; -1 with an
 * exception (an interrupt in a progress bar fails the batch like one in f). */
static int report_progress(tensor_user *u, const it_batch *b)
{
    PyObject *hook = Py_NewRef(u->st->progress_hook);
    PyObject *r = PyObject_CallFunction(hook, "OLL", u->id, (long long)(b->first + b->n), (long long)b->total);
    Py_DECREF(hook);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int compute_batch(tensor_user *u, PyObject *f, it_batch *b)
{
    module_state *st = u->st;
    PyObject *argv[1 + IT_MAX_ARGS] = {NULL};
    PyObject *result = NULL;
    int nargs = b->nargs, ok = 0;
    if (nargs > IT_MAX_ARGS) {
        PyErr_Format(PyExc_ValueError, "at most %d args are supported", IT_MAX_ARGS);
        return IT_ECALLBACK;
    }
    outputs *outs = PyMem_Calloc(1, sizeof(outputs) + sizeof(dl_hold) * (size_t)b->n);
    if (!outs) {
        PyErr_NoMemory();
        return IT_ECALLBACK;
    }
    outs->n = b->n;
    switch_grad_off(st);
    if (!u->batched) {
        /* f usually drops its window index: then the next call reuses the
         * tuple (sole reference, so no one can see it change), which saves
         * an allocation and the garbage collections it would trigger */
        PyObject *spare = u->spare;
        u->spare = NULL;
        if (spare && Py_REFCNT(spare) == 1 && PyTuple_GET_SIZE(spare) == b->ncoords &&
            refill_coords(spare, b->coords, b->ncoords) == 0) {
            argv[0] = spare;
        } else {
            Py_XDECREF(spare);
            if (PyErr_Occurred() || !(argv[0] = coords_tuple(b->coords, b->ncoords)))
                goto done;
        }
        for (int a = 0; a < nargs; a++)
            if (!(argv[1 + a] = export_arg(st, b, a, 0)))
                goto done;
    } else {
        if (!(argv[0] = PyList_New(b->n)))
            goto done;
        for (int64_t i = 0; i < b->n; i++) {
            PyObject *c = coords_tuple(b->coords + i * b->ncoords, b->ncoords);
            if (!c)
                goto done;
            PyList_SET_ITEM(argv[0], i, c);
        }
        for (int a = 0; a < nargs; a++) {
            if (!(argv[1 + a] = PyList_New(b->n)))
                goto done;
            for (int64_t i = 0; i < b->n; i++) {
                PyObject *x = export_arg(st, b, a, i);
                if (!x)
                    goto done;
                PyList_SET_ITEM(argv[1 + a], i, x);
            }
        }
    }
    result = PyObject_Vectorcall(f, argv, (size_t)(1 + nargs), NULL);
    if (!result) {
        where all = batch_where(b, -1);
        note_where(u, &all, "f");
        goto done;
    }
    if (u->batched) {
        ok = take_batch(u, b, result, outs) == 0;
    } else {
        where one = batch_where(b, 0);
        ok = take_output(u, result, &one, &b->out[0], &outs->holds[0]) == 0;
    }
    if (ok && st->progress_hook && b->total >= PROGRESS_MIN) {
        /* at most PROGRESS_STEPS reports a plan, and always its last batch */
        int64_t done = b->first + b->n;
        if (done == b->total || done * PROGRESS_STEPS / b->total != b->first * PROGRESS_STEPS / b->total)
            ok = report_progress(u, b) == 0;
    }
done:
    Py_XDECREF(result);
    if (!u->batched && argv[0] && Py_REFCNT(argv[0]) == 1 && !u->spare) {
        u->spare = argv[0]; /* keep our reference for the next call */
        argv[0] = NULL;
    }
    for (int a = 0; a <= nargs; a++)
        Py_XDECREF(argv[a]);
    if (!ok) {
        free_outputs(outs);
        return IT_ECALLBACK;
    }
    b->out_owner = outs;
    return IT_OK;
}

static int cb_compute(void *user, it_batch *b)
{
    tensor_user *u = user;
    PyObject *f = u->f;
    if (!f) {
        PyErr_SetString(u->st->TileAccessError, "this tensor's f was released by the garbage collector");
        return IT_ECALLBACK;
    }
    u->refs++;
    Py_INCREF(f);
    int rc = compute_batch(u, f, b);
    Py_DECREF(f);
    user_free(u);
    return rc;
}

static void cb_release(void *user, it_batch *b)
{
    (void)user;
    free_outputs(b->out_owner);
    b->out_owner = NULL;
}

static int blend_pair(tensor_user *u, PyObject *blend, it_buffer **existing, it_buffer **incoming,
                      it_view *result, void **owner)
{
    module_state *st = u->st;
    const it_tensor_spec *spec = it_tensor_get_spec(u->t);
    int64_t shape[IT_MAX_DIMS];
    int ndim = (*existing)->ndim;
    memcpy(shape, (*existing)->shape, sizeof(int64_t) * (size_t)ndim);
    *owner = NULL;
    PyObject *a = export_buffer(st, *existing, ndim, shape);
    *existing = NULL;
    PyObject *b = NULL;
    if (a) {
        b = export_buffer(st, *incoming, ndim, shape);
        *incoming = NULL;
    }
    PyObject *r = (a && b) ? PyObject_CallFunctionObjArgs(blend, a, b, NULL) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    where w = {NULL, 0, 0}; /* the core does not say which windows meet here */
    if (!r) {
        if (a && b)
            note_where(u, &w, "blend");
        return IT_ECALLBACK;
    }
    if (!PyObject_TypeCheck(r, (PyTypeObject *)st->torch_tensor)) {
        PyErr_Format(PyExc_TypeError, "blend must return a torch.Tensor, got %.100s", Py_TYPE(r)->tp_name);
        Py_DECREF(r);
        refuse_where(u, &w, "blend");
        return IT_ECALLBACK;
    }
    dl_hold *hold = PyMem_Calloc(1, sizeof *hold);
    if (!hold) {
        Py_DECREF(r);
        PyErr_NoMemory();
        return IT_ECALLBACK;
    }
    expect e = {"blend output", "region", "blend", ndim, shape, spec->dtype, spec->device_type,
                spec->device_id, u->dtype, u->device};
    int rc = import_tensor(st, r, result, hold);
    if (rc < 0) {
        explain_unexportable(st, &e, r);
    } else if ((rc = check_output(st, &e, r, result)) < 0) {
        release_hold(hold);
    }
    Py_DECREF(r);
    if (rc < 0) {
        PyMem_Free(hold);
        refuse_where(u, &w, "blend");
        return IT_ECALLBACK;
    }
    *owner = hold;
    return IT_OK;
}

static int cb_blend(void *user, it_buffer **existing, it_buffer **incoming, it_view *result, void **owner)
{
    tensor_user *u = user;
    PyObject *blend = u->blend;
    *owner = NULL;
    if (!blend) {
        PyErr_SetString(u->st->TileAccessError, "this tensor's blend was released by the garbage collector");
        return IT_ECALLBACK;
    }
    u->refs++;
    Py_INCREF(blend);
    int rc = blend_pair(u, blend, existing, incoming, result, owner);
    Py_DECREF(blend);
    user_free(u);
    return rc;
}

static void cb_release_view(void *user, void *owner)
{
    (void)user;
    if (owner) {
        release_hold(owner);
        PyMem_Free(owner);
    }
}

static const it_tensor_ops tensor_ops = {
    cb_compute, cb_release, cb_blend, cb_release_view, user_free,
};

/* ---- the Tensor type ------------------------------------------------------ */

/* fill: a 0-d CPU tensor of dtype (a torch.dtype), the value before any
 * window: its element into out, the core's code of its dtype into *dt.
 * -1 with an exception. */
static int read_fill(module_state *st, PyObject *fill, PyObject *dtype, it_dtype *dt, unsigned char *out)
{
    PyObject *fdt = PyObject_GetAttrString(fill, "dtype");
    int same = fdt ? PyObject_RichCompareBool(fdt, dtype, Py_EQ) : -1;
    Py_XDECREF(fdt);
    if (same < 0)
        return -1;
    it_view v;
    dl_hold hold;
    if (same && import_tensor(st, fill, &v, &hold) < 0)
        return -1;
    int ok = same && v.dtype < IT_DTYPE_COUNT && v.ndim == 0 && v.device_type == IT_DEVICE_CPU;
    if (ok) {
        *dt = v.dtype;
        memcpy(out, v.data, it_dtype_size(v.dtype));
    }
    if (same)
        release_hold(&hold);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "fill must be a 0-d CPU tensor of dtype %S", dtype);
        return -1;
    }
    return 0;
}

/* Tensor(cache, spec, tile_shape=None): a node from an
 * infinite_tensor._bridge.NodeSpec, a tuple of
 *     (shape, window, args, arg_windows, dtype, device, fill, f, blend,
 *      batch_size, combine, tensor_id)
 * (shape with None for infinite dims; windows as TensorWindow._core_tuple()
 * gives them; args core nodes; dtype and device torch objects; fill the 0-d
 * CPU tensor of dtype to start from; batch_size 0 when f is not batched).
 * tile_shape: the tile extent per dim for a persistent store (None: the
 * core picks). */
static PyObject *Tensor_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"cache", "spec", "tile_shape", NULL};
    static const int64_t infinite = IT_DIM_INFINITE;
    module_state *st = state_of_type(tp);
    PyObject *cache, *specobj, *tile_shape = Py_None;
    PyObject *shape, *window, *targs, *twins, *dtype, *device, *fill, *f, *blend, *tensor_id, *meanobj;
    int combine;
    long long batch;
    given g;
    it_tensor_spec spec;
    it_mean mean;
    Py_buffer wbuf = {0}, nbuf = {0};
    if (state_ready(st) < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!|O", kwlist, st->Cache_type, &cache, &PyTuple_Type, &specobj,
                                     &tile_shape) ||
        !PyArg_ParseTuple(specobj, "OOO!O!OOOOOLiOO:NodeSpec", &shape, &window, &PyTuple_Type, &targs,
                          &PyTuple_Type, &twins, &dtype, &device, &fill, &f, &blend, &batch, &combine,
                          &tensor_id, &meanobj))
        return NULL;
    memset(&spec, 0, sizeof spec);
    given_init(&g);
    /* the core checks everything: the binding only converts (the arrays
     * past IT_MAX_DIMS or IT_MAX_ARGS are not filled; the core refuses the
     * count before reading them) */
    int nd = int64_seq(shape, spec.shape, IT_MAX_DIMS, &infinite, &g, "shape must be a sequence");
    if (nd < 0)
        goto fail;
    spec.ndim = nd;
    if (read_fill(st, fill, dtype, &spec.dtype, spec.fill) < 0 ||
        device_code(st, device, &spec.device_type, &spec.device_id) < 0)
        goto fail;
    spec.devops = devops_for(spec.device_type);
    if (parse_window(window, nd, &spec.window, &g) < 0)
        goto fail;
    Py_ssize_t nargs = PyTuple_GET_SIZE(targs);
    if (nargs != PyTuple_GET_SIZE(twins)) {
        PyErr_SetString(PyExc_ValueError, "args and arg_windows must have the same length");
        goto fail;
    }
    it_tensor *upstream[IT_MAX_ARGS];
    it_window awins[IT_MAX_ARGS];
    for (Py_ssize_t a = 0; a < nargs && a < IT_MAX_ARGS; a++) {
        PyObject *o = PyTuple_GET_ITEM(targs, a);
        if (!PyObject_TypeCheck(o, st->Tensor_type)) {
            PyErr_SetString(PyExc_TypeError, "args must be core tensors");
            goto fail;
        }
        upstream[a] = ((TensorObject *)o)->t;
        if (parse_window(PyTuple_GET_ITEM(twins, a), nd, &awins[a], &g) < 0)
            goto fail;
    }
    spec.nargs = nargs > INT_MAX ? INT_MAX : (int)nargs;
    spec.args = upstream;
    spec.arg_windows = awins;
    spec.batch_size = batch > 0 ? batch : 1;
    spec.combine = (it_combine)combine;
    if (spec.combine == IT_COMBINE_CUSTOM && blend == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a custom-blend node needs a blend");
        goto fail;
    }
    if (meanobj != Py_None) {
        /* (weights, norm, norm_shape, empty): float64 buffers, the norm's
         * shape, and a 0-d tensor of dtype; sizes are the core's to check
         * against the buffers' */
        PyObject *nshape, *empty;
        it_dtype code;
        memset(&mean, 0, sizeof mean);
        if (!PyArg_ParseTuple(meanobj, "y*y*OO:mean", &wbuf, &nbuf, &nshape, &empty))
            goto fail;
        int n = int64_seq(nshape, mean.norm_shape, IT_MAX_DIMS, NULL, &g, "norm_shape must be a sequence");
        if (n < 0 || read_fill(st, empty, dtype, &code, mean.empty) < 0)
            goto fail;
        int64_t nw = 1, nn = 1;
        for (int d = 0; d < nd && d < n; d++) {
            nw *= spec.window.size[d];
            nn *= mean.norm_shape[d];
        }
        if (n != nd || wbuf.len != (Py_ssize_t)(sizeof(double) * (size_t)nw) ||
            nbuf.len != (Py_ssize_t)(sizeof(double) * (size_t)nn)) {
            PyErr_SetString(PyExc_ValueError, "the mean's weights or norm do not match the window and norm shape");
            goto fail;
        }
        mean.weight = wbuf.buf;
        mean.norm = nbuf.buf;
        spec.mean = &mean;
    }
    if (tile_shape != Py_None) {
        int n = int64_seq(tile_shape, spec.tile_shape, IT_MAX_DIMS, NULL, &g, "tile_shape must be a sequence");
        if (n < 0)
            goto fail;
        if (n != nd) {
            PyErr_SetString(PyExc_ValueError, "tile_shape must have one entry per dim");
            goto fail;
        }
    }
    tensor_user *u = user_new(st, f, blend, device, dtype, tensor_id, batch > 0);
    if (!u)
        goto fail;
    TensorObject *self = (TensorObject *)tp->tp_alloc(tp, 0);
    if (!self) {
        user_free(u);
        goto fail;
    }
    int rc = it_tensor_create(((CacheObject *)cache)->cache, &spec, &tensor_ops, u, &self->t);
    if (wbuf.obj) /* the core copied them */
        PyBuffer_Release(&wbuf);
    if (nbuf.obj)
        PyBuffer_Release(&nbuf);
    if (rc) {
        user_free(u);
        Py_DECREF(self);
        return raise_given(st, rc, &g);
    }
    given_clear(&g);
    u->t = self->t;
    self->cache = ((CacheObject *)cache)->cache;
    it_cache_ref(self->cache);
    return (PyObject *)self;
fail:
    if (wbuf.obj)
        PyBuffer_Release(&wbuf);
    if (nbuf.obj)
        PyBuffer_Release(&nbuf);
    given_clear(&g);
    return NULL;
}

static int Tensor_traverse(TensorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    if (self->t) {
        tensor_user *u = it_tensor_get_user(self->t);
        /* only while no other node shares f (see the essay above) */
        if (u && it_tensor_refs(self->t) == 1) {
            Py_VISIT(u->f);
            Py_VISIT(u->blend);
        }
    }
    return 0;
}

static int Tensor_clear(TensorObject *self)
{
    if (self->t && it_tensor_refs(self->t) == 1) {
        tensor_user *u = it_tensor_get_user(self->t);
        if (u) {
            Py_CLEAR(u->f);
            Py_CLEAR(u->blend);
        }
    }
    return 0;
}

static void Tensor_dealloc(TensorObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    it_tensor_unref(self->t);
    it_cache_unref(self->cache);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int coords_arg(TensorObject *self, PyObject *obj, int64_t *coords);
static PyObject *stats_dict(const it_tensor_stats *a);

/* Run a core call that may call f: a nested call counts the depth, and the
 * outermost one restores grad mode if a computation switched it off.
 * Returns the call's code (IT_ECALLBACK with a Python error set when the
 * recursion limit or the restore fails). */
typedef int (*core_call)(TensorObject *self, void *arg);

/* Whether the read hook wants this read (its logger logs debug records);
 * an error in asking counts as no. */
static int read_wanted(module_state *st)
{
    if (!st->read_wanted)
        return 1;
    PyObject *r = PyObject_CallNoArgs(st->read_wanted);
    int yes = r ? PyObject_IsTrue(r) : 0;
    Py_XDECREF(r);
    if (yes < 0 || !r)
        PyErr_Clear();
    return yes > 0;
}

static int run_reading(TensorObject *self, core_call fn, void *arg)
{
    module_state *st = state_of_type(Py_TYPE(self));
    it_tensor_stats before, after;
    if (Py_EnterRecursiveCall(" while reading an infinite tensor"))
        return IT_ECALLBACK;
    read_depth++;
    it_tensor_get_stats(self->t, &before);
    int rc = fn(self, arg);
    it_tensor_get_stats(self->t, &after);
    if (rc == IT_OK && st->read_hook && after.windows > before.windows && read_wanted(st)) {
        /* what this call did: the counters' growth */
        it_tensor_stats d = {after.reads - before.reads, after.cached_reads - before.cached_reads,
                             after.windows - before.windows, after.batches - before.batches,
                             after.compute_ns - before.compute_ns, after.read_ns - before.read_ns,
                             after.bytes_read - before.bytes_read};
        tensor_user *u = it_tensor_get_user(self->t);
        PyObject *stats = stats_dict(&d), *r = NULL;
        if (stats && u)
            r = PyObject_CallFunction(st->read_hook, "OO", u->id, stats);
        Py_XDECREF(stats);
        if (!r) /* a logging record that failed does not fail the read */
            PyErr_WriteUnraisable(st->read_hook);
        Py_XDECREF(r);
    }
    if (--read_depth == 0 && grad_off_by_us) {
        grad_off_by_us = 0;
        PyObject *exc_t, *exc_v, *exc_tb;
        PyErr_Fetch(&exc_t, &exc_v, &exc_tb);
        PyObject *r = PyObject_CallOneArg(st->set_grad_enabled, Py_True);
        Py_XDECREF(r);
        if (exc_t)
            PyErr_Restore(exc_t, exc_v, exc_tb);
        else if (!r)
            rc = IT_ECALLBACK;
    }
    Py_LeaveRecursiveCall();
    return rc;
}

typedef struct read_args {
    const it_box *boxes;
    int64_t n;
    int flags;
    it_buffer **bufs;
} read_args;

static int call_read(TensorObject *self, void *p)
{
    read_args *a = p;
    return it_tensor_read_many(self->t, a->boxes, a->n, a->flags, a->bufs);
}

/* A read's buffer as a tensor, the dims indexed by an int squeezed. */
static PyObject *export_read(module_state *st, const it_tensor_spec *spec, it_buffer *buf, uint32_t squeeze)
{
    int64_t shape[IT_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < spec->ndim; d++)
        if (!(squeeze & (1u << d)))
            shape[n++] = buf->shape[d];
    return export_buffer(st, buf, n, shape);
}

/* The device a tensor's reads live on, as torch names it; NULL for a kind
 * the probe is not asked about. */
static PyObject *device_name(const it_tensor_spec *spec)
{
    if (spec->device_type == kDLCPU)
        return PyUnicode_FromString("cpu");
    if (spec->device_type == kDLCUDA)
        return PyUnicode_FromFormat("cuda:%d", spec->device_id);
    return NULL;
}

/* "1.5 GiB" for a byte count. */
static void size_text(char *buf, size_t n, int64_t bytes)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1024.0 && i < 6) {
        v /= 1024.0;
        i++;
    }
    PyOS_snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, units[i]);
}

/* MemoryError (and -1) when a read of the boxes needs more memory than the
 * module's probe says is available; 0 otherwise, also when there is no
 * probe, the read is small, or the probe does not know. */
static int check_memory(module_state *st, TensorObject *self, const it_box *boxes, int64_t n)
{
    if (!st->memory_probe)
        return 0;
    it_read_estimate e;
    it_tensor_read_estimate(self->t, boxes, n, &e);
    if (e.needed < st->probe_min_bytes || e.result_bytes == INT64_MAX)
        return 0; /* small; or past counting, which the core refuses with its own message */
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    PyObject *dev = device_name(spec);
    if (!dev)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *got = PyObject_CallOneArg(st->memory_probe, dev);
    if (!got) {
        Py_DECREF(dev);
        return -1;
    }
    long long avail = got == Py_None ? -1 : PyLong_AsLongLong(got);
    Py_DECREF(got);
    if (avail == -1 && PyErr_Occurred()) {
        Py_DECREF(dev);
        return -1;
    }
    if (avail < 0 || e.needed <= avail) {
        Py_DECREF(dev);
        return 0;
    }
    int64_t tiles = e.tile_bytes > e.cached_bytes ? e.tile_bytes - e.cached_bytes : 0;
    char need[32], have[32], msg[512]; /* PyErr_Format has no %.1f */
    size_text(need, sizeof need, e.needed);
    size_text(have, sizeof have, avail);
    const char *name = PyUnicode_AsUTF8(dev);
    PyOS_snprintf(msg, sizeof msg,
                  "this read needs at least %s (%lld bytes: %lld for the result, %lld for new tiles, "
                  "%lld for a batch of f) but %s (%lld bytes) are available on %s; read it in parts "
                  "(iter_regions), or see t.plan(region)",
                  need, (long long)e.needed, (long long)e.result_bytes, (long long)tiles,
                  (long long)(tiles ? e.batch_bytes : 0), have, avail, name ? name : "?");
    PyErr_Clear(); /* PyUnicode_AsUTF8 cannot fail on an ASCII name; be sure */
    PyErr_SetString(PyExc_MemoryError, msg);
    Py_DECREF(dev);
    return -1;
}

/* Parse the n regions of a list (keys: a PySequence_Fast) into boxes and
 * squeeze masks; -1 with the exception naming the region that failed. */
static int parse_regions(const it_tensor_spec *spec, PyObject *keys, it_box *boxes, uint32_t *squeeze)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        if (PyList_Check(key)) {
            PyErr_Format(PyExc_TypeError, "region %zd of a list of regions is itself a list; give each "
                         "region as a tuple, e.g. sl[0:8, 0:8]", i);
            return -1;
        }
        if (parse_index(key, spec->ndim, spec->shape, &boxes[i], &squeeze[i]) < 0) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            PyErr_Format(et, "region %zd of the list: %S", i, ev);
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            return -1;
        }
    }
    return 0;
}

/* read_estimate(key or list of keys) -> it_tensor_read_estimate's numbers as a dict. */
static PyObject *Tensor_read_estimate(TensorObject *self, PyObject *key)
{
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    PyObject *keys = PyList_Check(key) ? PySequence_Fast(key, "a list of regions") : PyTuple_Pack(1, key);
    if (!keys)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    it_box *boxes = PyMem_Calloc((size_t)n + 1, sizeof *boxes);
    uint32_t *squeeze = PyMem_Calloc((size_t)n + 1, sizeof *squeeze);
    PyObject *out = NULL;
    if (!boxes || !squeeze) {
        PyErr_NoMemory();
        goto done;
    }
    if ((PyList_Check(key) ? parse_regions(spec, keys, boxes, squeeze)
                           : parse_index(key, spec->ndim, spec->shape, &boxes[0], &squeeze[0])) < 0)
        goto done;
    it_read_estimate e;
    it_tensor_read_estimate(self->t, boxes, n, &e);
    out = Py_BuildValue("{sLsLsLsLsLsL}", "result_bytes", (long long)e.result_bytes, "tiles",
                        (long long)e.tiles, "tile_bytes", (long long)e.tile_bytes, "cached_bytes",
                        (long long)e.cached_bytes, "batch_bytes", (long long)e.batch_bytes, "needed",
                        (long long)e.needed);
done:
    PyMem_Free(boxes);
    PyMem_Free(squeeze);
    Py_DECREF(keys);
    return out;
}

/* Read a key; flags as for it_tensor_read. */
static PyObject *tensor_read(TensorObject *self, PyObject *key, int flags)
{
    module_state *st = state_of_type(Py_TYPE(self));
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    it_box box;
    uint32_t squeeze;
    it_buffer *buf = NULL;
    if (parse_index(key, spec->ndim, spec->shape, &box, &squeeze) < 0)
        return NULL;
    if (!(flags & IT_READ_NO_COMPUTE) && check_memory(st, self, &box, 1) < 0)
        return NULL;
    read_args a = {&box, 1, flags, &buf};
    int rc = run_reading(self, call_read, &a);
    if (rc) {
        it_buffer_free(buf); /* read, but grad mode could not be restored */
        return raise_core(st, rc);
    }
    return export_read(st, spec, buf, squeeze);
}

/* Read a list of regions in one read (0.4): a list of tensors, in order. */
static PyObject *tensor_read_list(TensorObject *self, PyObject *list, int flags)
{
    module_state *st = state_of_type(Py_TYPE(self));
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    PyObject *keys = PySequence_Fast(list, "a list of regions"), *out = NULL;
    if (!keys)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    it_box *boxes = PyMem_Calloc((size_t)n + 1, sizeof *boxes);
    uint32_t *squeeze = PyMem_Calloc((size_t)n + 1, sizeof *squeeze);
    it_buffer **bufs = PyMem_Calloc((size_t)n + 1, sizeof *bufs);
    if (!boxes || !squeeze || !bufs) {
        PyErr_NoMemory();
        goto done;
    }
    if (parse_regions(spec, keys, boxes, squeeze) < 0)
        goto done;
    if (!(flags & IT_READ_NO_COMPUTE) && check_memory(st, self, boxes, n) < 0)
        goto done;
    read_args a = {boxes, n, flags, bufs};
    int rc = run_reading(self, call_read, &a);
    if (rc) {
        for (Py_ssize_t i = 0; i < n; i++)
            it_buffer_free(bufs[i]);
        raise_core(st, rc);
        goto done;
    }
    if (!(out = PyList_New(n))) {
        for (Py_ssize_t i = 0; i < n; i++)
            it_buffer_free(bufs[i]);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = export_read(st, spec, bufs[i], squeeze[i]); /* takes the buffer */
        bufs[i] = NULL;
        if (!t) {
            for (Py_ssize_t j = i + 1; j < n; j++)
                it_buffer_free(bufs[j]);
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, t);
    }
done:
    PyMem_Free(boxes);
    PyMem_Free(squeeze);
    PyMem_Free(bufs);
    Py_DECREF(keys);
    return out;
}

static PyObject *Tensor_getitem(TensorObject *self, PyObject *key)
{
    if (PyList_Check(key))
        return tensor_read_list(self, key, 0);
    return tensor_read(self, key, 0);
}

static PyObject *Tensor_read_cached(TensorObject *self, PyObject *key)
{
    if (PyList_Check(key))
        return tensor_read_list(self, key, IT_READ_NO_COMPUTE);
    return tensor_read(self, key, IT_READ_NO_COMPUTE);
}

typedef struct windows_args {
    const int64_t *windows;
    int64_t n;
} windows_args;

static int call_compute(TensorObject *self, void *p)
{
    windows_args *a = p;
    return it_tensor_compute_windows(self->t, a->windows, a->n);
}

/* compute_windows(list of window indices): compute those not done yet, in
 * that order, in batches of batch_size. */
static PyObject *Tensor_compute_windows(TensorObject *self, PyObject *arg)
{
    module_state *st = state_of_type(Py_TYPE(self));
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    int K = spec->ndim;
    PyObject *seq = PySequence_Fast(arg, "compute_windows takes a list of window indices");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int64_t *w = PyMem_Malloc(sizeof(int64_t) * (size_t)(n * K + 1));
    PyObject *result = NULL;
    if (!w) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (coords_arg(self, PySequence_Fast_GET_ITEM(seq, i), w + i * K) < 0)
            goto done;
    windows_args a = {w, n};
    int rc = run_reading(self, call_compute, &a);
    if (rc) {
        raise_core(st, rc);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(w);
    Py_DECREF(seq);
    return result;
}

/* missing_windows(key): the window indices (tuples) a read of key would
 * compute now, in the order it would compute them.  Computes nothing. */
static PyObject *Tensor_missing_windows(TensorObject *self, PyObject *key)
{
    module_state *st = state_of_type(Py_TYPE(self));
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    it_box box;
    uint32_t squeeze;
    int64_t *w = NULL, n = 0;
    if (parse_index(key, spec->ndim, spec->shape, &box, &squeeze) < 0)
        return NULL;
    int rc = it_tensor_missing_windows(self->t, &box, &w, &n);
    if (rc)
        return raise_core(st, rc);
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (int64_t i = 0; out && i < n; i++) {
        PyObject *t = PyTuple_New(spec->ndim);
        if (!t) {
            Py_CLEAR(out);
            break;
        }
        for (int d = 0; d < spec->ndim; d++) {
            PyObject *v = PyLong_FromLongLong(w[i * spec->ndim + d]);
            if (!v) {
                Py_DECREF(t);
                t = NULL;
                break;
            }
            PyTuple_SET_ITEM(t, d, v);
        }
        if (!t) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, t);
    }
    it_free(w);
    return out;
}

static PyObject *stats_dict(const it_tensor_stats *a)
{
    return Py_BuildValue("{sLsLsLsLsdsdsL}", "reads", (long long)a->reads, "cached_reads",
                         (long long)a->cached_reads, "windows", (long long)a->windows, "f_calls",
                         (long long)a->batches, "seconds_in_f", a->compute_ns * 1e-9, "seconds_reading",
                         a->read_ns * 1e-9, "bytes_read", (long long)a->bytes_read);
}

static PyObject *Tensor_stats(TensorObject *self, PyObject *unused)
{
    (void)unused;
    it_tensor_stats a;
    it_tensor_get_stats(self->t, &a);
    return stats_dict(&a);
}

static PyObject *Tensor_reset_stats(TensorObject *self, PyObject *unused)
{
    (void)unused;
    it_tensor_reset_stats(self->t);
    Py_RETURN_NONE;
}

static PyObject *Tensor_clear_cache(TensorObject *self, PyObject *unused)
{
    (void)unused;
    it_tensor_clear(self->t);
    Py_RETURN_NONE;
}

static PyObject *Tensor_flush(TensorObject *self, PyObject *unused)
{
    (void)unused;
    int rc = it_tensor_flush(self->t);
    if (rc)
        return raise_core(state_of_type(Py_TYPE(self)), rc);
    Py_RETURN_NONE;
}

static PyObject *Tensor_trim(TensorObject *self, PyObject *arg)
{
    int64_t limit;
    if (to_int64_saturating(arg, &limit) < 0)
        return NULL;
    it_tensor_trim(self->t, limit < 0 ? 0 : limit);
    Py_RETURN_NONE;
}

static int coords_arg(TensorObject *self, PyObject *obj, int64_t *coords)
{
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    int n = int64_seq(obj, coords, IT_MAX_DIMS, NULL, NULL, "a window index must be a sequence");
    if (n < 0)
        return -1;
    if (n != spec->ndim) {
        PyErr_Format(PyExc_ValueError, "a window index of this tensor has %d entries, got %d",
                     spec->ndim, n);
        return -1;
    }
    return 0;
}

static PyObject *Tensor_window_done(TensorObject *self, PyObject *arg)
{
    int64_t coords[IT_MAX_DIMS];
    int done;
    if (coords_arg(self, arg, coords) < 0)
        return NULL;
    int rc = it_tensor_window_done(self->t, coords, &done);
    if (rc)
        return raise_core(state_of_type(Py_TYPE(self)), rc);
    return PyBool_FromLong(done);
}

static PyObject *Tensor_contribute(TensorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    module_state *st = state_of_type(Py_TYPE(self));
    int64_t coords[IT_MAX_DIMS];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "contribute(window_index, output)");
        return NULL;
    }
    if (coords_arg(self, args[0], coords) < 0)
        return NULL;
    tensor_user *u = it_tensor_get_user(self->t);
    where w = {coords, 1, it_tensor_get_spec(self->t)->ndim};
    it_view v;
    dl_hold hold;
    if (take_output(u, args[1], &w, &v, &hold) < 0)
        return NULL;
    int rc = it_tensor_contribute(self->t, coords, &v);
    release_hold(&hold);
    if (rc)
        return raise_core(st, rc);
    Py_RETURN_NONE;
}

typedef struct convert_ctx {
    module_state *st;
    PyObject *fn;
    PyObject *device, *dtype; /* where the tiles go, for messages */
} convert_ctx;

/* convert(src) for one tile: src is wrapped without a copy (it lives until
 * the migration ends, after this call); the result, on the new device, is
 * copied into dst through dst's device. */
static int convert_tile(void *p, const it_view *src, it_buffer *dst)
{
    convert_ctx *c = p;
    PyObject *t = wrap_view(c->st, src);
    if (!t)
        return IT_ECALLBACK;
    PyObject *r = PyObject_CallOneArg(c->fn, t);
    Py_DECREF(t);
    if (!r)
        return IT_ECALLBACK;
    it_view v, dv;
    dl_hold hold;
    expect e = {"converted tile", "tile", "convert", dst->ndim, dst->shape, dst->dtype, dst->device.type,
                dst->device.id, c->dtype, c->device};
    if (import_tensor(c->st, r, &v, &hold) < 0) {
        Py_DECREF(r);
        return IT_ECALLBACK;
    }
    int bad = check_output(c->st, &e, r, &v);
    Py_DECREF(r);
    if (bad) {
        release_hold(&hold);
        return IT_ECALLBACK;
    }
    it_buffer_view(dst, &dv);
    int rc = it_dev_apply(&dst->device, IT_COMBINE_COPY, &dv, &v);
    release_hold(&hold);
    return rc;
}

/* migrate(device, dtype, fill, convert): move cached tiles to another
 * device and/or dtype (torch objects; fill as for Tensor()). */
static PyObject *Tensor_migrate(TensorObject *self, PyObject *args)
{
    module_state *st = state_of_type(Py_TYPE(self));
    it_dtype code;
    it_device dev = {0, 0, NULL};
    PyObject *device_obj, *dtype_obj, *fill, *fn;
    unsigned char fillv[16];
    if (!PyArg_ParseTuple(args, "OOOO", &device_obj, &dtype_obj, &fill, &fn) ||
        device_code(st, device_obj, &dev.type, &dev.id) < 0 || read_fill(st, fill, dtype_obj, &code, fillv) < 0)
        return NULL;
    dev.ops = devops_for(dev.type);
    convert_ctx c = {st, fn, device_obj, dtype_obj};
    int rc = it_tensor_migrate(self->t, &dev, code, fillv, convert_tile, &c);
    if (rc)
        return raise_core(st, rc);
    tensor_user *u = it_tensor_get_user(self->t);
    Py_INCREF(dtype_obj);
    Py_SETREF(u->dtype, dtype_obj);
    Py_INCREF(device_obj);
    Py_SETREF(u->device, device_obj);
    Py_RETURN_NONE;
}

/* set_callbacks(f, blend, batch_size): a re-registration's new f & co. */
static PyObject *Tensor_set_callbacks(TensorObject *self, PyObject *args)
{
    module_state *st = state_of_type(Py_TYPE(self));
    PyObject *f, *blend;
    long long batch;
    if (!PyArg_ParseTuple(args, "OOL", &f, &blend, &batch))
        return NULL;
    tensor_user *old = it_tensor_get_user(self->t);
    if (it_tensor_get_spec(self->t)->combine == IT_COMBINE_CUSTOM && blend == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a custom-blend node needs a blend");
        return NULL;
    }
    tensor_user *u = user_new(st, f, blend, old->device, old->dtype, old->id, batch > 0);
    if (!u)
        return NULL;
    u->t = self->t;
    int rc = it_tensor_set_batch_size(self->t, batch > 0 ? batch : 1);
    if (rc) {
        user_free(u);
        return raise_core(st, rc);
    }
    it_tensor_set_user(self->t, u); /* a callback in progress keeps the old one */
    Py_RETURN_NONE;
}

static PyObject *Tensor_get_nbytes(TensorObject *self, void *c)
{
    (void)c;
    return PyLong_FromLongLong(it_tensor_bytes(self->t));
}

static PyObject *Tensor_get_waiting_bytes(TensorObject *self, void *c)
{
    (void)c;
    return PyLong_FromLongLong(it_tensor_waiting_bytes(self->t));
}

static PyObject *Tensor_get_ndirty(TensorObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(it_tensor_dirty(self->t));
}

static PyObject *Tensor_get_ntiles(TensorObject *self, void *c)
{
    (void)c;
    return PyLong_FromLongLong(it_tensor_tiles(self->t));
}

static PyObject *Tensor_get_tile_shape(TensorObject *self, void *c)
{
    (void)c;
    int64_t shape[IT_MAX_DIMS];
    const it_tensor_spec *spec = it_tensor_get_spec(self->t);
    it_tensor_tile_shape(self->t, shape);
    PyObject *t = PyTuple_New(spec->ndim);
    for (int d = 0; t && d < spec->ndim; d++)
        PyTuple_SET_ITEM(t, d, PyLong_FromLongLong(shape[d]));
    return t;
}

static PyMethodDef Tensor_methods[] = {
    {"read_cached", (PyCFunction)Tensor_read_cached, METH_O,
     "Assemble a region from cached tiles only (TileAccessError if a window is missing)."},
    {"clear", (PyCFunction)Tensor_clear_cache, METH_NOARGS, "Drop every cached tile."},
    {"flush", (PyCFunction)Tensor_flush, METH_NOARGS, "Write dirty tiles to the backend."},
    {"trim", (PyCFunction)Tensor_trim, METH_O, "Evict LRU tiles until at most this many bytes remain."},
    {"window_done", (PyCFunction)Tensor_window_done, METH_O, "Whether a window is in every tile it touches."},
    {"stats", (PyCFunction)Tensor_stats, METH_NOARGS, "The tensor's counters as a dict."},
    {"reset_stats", (PyCFunction)Tensor_reset_stats, METH_NOARGS, "Zero the tensor's counters."},
    {"compute_windows", (PyCFunction)Tensor_compute_windows, METH_O,
     "Compute the listed windows that are not done yet, in that order, in batches."},
    {"read_estimate", (PyCFunction)Tensor_read_estimate, METH_O,
     "The memory a read of the key (or list of keys) takes, from geometry alone, as a dict."},
    {"missing_windows", (PyCFunction)Tensor_missing_windows, METH_O,
     "The windows a read of the key would compute now, in order (computes nothing)."},
    {"contribute", (PyCFunction)(void (*)(void))Tensor_contribute, METH_FASTCALL,
     "Add a window output computed elsewhere."},
    {"migrate", (PyCFunction)Tensor_migrate, METH_VARARGS,
     "migrate(device, dtype, fill, convert): move cached tiles to another device and/or dtype."},
    {"set_callbacks", (PyCFunction)Tensor_set_callbacks, METH_VARARGS, "Replace f, blend and batch size."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tensor_getset[] = {
    {"nbytes", (getter)Tensor_get_nbytes, NULL, "Bytes of cached tiles.", NULL},
    {"ntiles", (getter)Tensor_get_ntiles, NULL, "Cached tiles.", NULL},
    {"ndirty", (getter)Tensor_get_ndirty, NULL, "Cached tiles not yet written to the backend.", NULL},
    {"waiting_bytes", (getter)Tensor_get_waiting_bytes, NULL,
     "Bytes of window parts waiting for earlier windows (on cached tiles or parked).", NULL},
    {"tile_shape", (getter)Tensor_get_tile_shape, NULL, "Tile extent per dim.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tensor_slots[] = {
    {Py_tp_new, Tensor_new},
    {Py_tp_dealloc, Tensor_dealloc},
    {Py_tp_traverse, Tensor_traverse},
    {Py_tp_clear, Tensor_clear},
    {Py_mp_subscript, Tensor_getitem},
    {Py_tp_methods, Tensor_methods},
    {Py_tp_getset, Tensor_getset},
    {Py_tp_doc, "A tensor node of the C core (internal; see infinite_tensor.InfiniteTensor)."},
    {0, NULL},
};

static PyType_Spec Tensor_spec = {
    "infinite_tensor._core.Tensor",
    sizeof(TensorObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    Tensor_slots,
};

int tensor_type_init(PyObject *module, module_state *st)
{
    st->Tensor_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Tensor_spec, NULL);
    if (!st->Tensor_type)
        return -1;
    Py_INCREF(st->Tensor_type);
    return PyModule_AddObject(module, "Tensor", (PyObject *)st->Tensor_type) < 0 ? -1 : 0;
}
