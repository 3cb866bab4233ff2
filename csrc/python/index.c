/*
 * index.c - turning a __getitem__ key into a box.
 *
 * Finite dims follow Python and torch: a negative int counts from the end,
 * slices clamp to the extent.  Infinite dims take literal coordinates, so a
 * negative int is a negative pixel coordinate and a slice needs both ends.
 * Steps must be positive.  Anything with __index__ (numpy integers, 0-d
 * integer tensors) is an int.  A list is a list of regions (0.4), read by
 * the tensor (tensor.c), never one region.
 */
#include "binding.h"

#include <limits.h>

/* An int64 coordinate from an index-like object; -1 with an exception. */
static int as_coord(PyObject *o, int64_t *out, const char *what)
{
    PyObject *i = PyNumber_Index(o);
    if (!i)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < -IT_COORD_LIMIT || v > IT_COORD_LIMIT) {
        PyErr_Format(PyExc_IndexError, "%s %R is outside the supported range +-2**%d", what, o,
                     IT_COORD_LIMIT_LOG2);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_slice(PyObject *item, int d, int64_t extent, int64_t *start, int64_t *stop, int64_t *step)
{
    PySliceObject *sl = (PySliceObject *)item;
    if (sl->step == Py_None) {
        *step = 1;
    } else {
        if (as_coord(sl->step, step, "step") < 0)
            return -1;
        if (*step <= 0) {
            PyErr_SetString(PyExc_ValueError, "slice step must be greater than zero");
            return -1;
        }
    }
    if (extent == IT_DIM_INFINITE) {
        if (sl->start == Py_None && sl->stop == Py_None) {
            PyErr_Format(PyExc_IndexError,
                         "Slice must have start and stop for infinite dimensions (dim %d: the slice has "
                         "neither a start nor a stop; give both, e.g. 0:512)", d);
            return -1;
        }
        if (sl->start == Py_None || sl->stop == Py_None) {
            int no_start = sl->start == Py_None;
            PyErr_Format(PyExc_IndexError,
                         "Slice must have start and stop for infinite dimensions (dim %d: the slice has a "
                         "%s (%R) but no %s; give both)", d, no_start ? "stop" : "start",
                         no_start ? sl->stop : sl->start, no_start ? "start" : "stop");
            return -1;
        }
        if (as_coord(sl->start, start, "slice start") < 0 || as_coord(sl->stop, stop, "slice stop") < 0)
            return -1;
        return 0;
    }
    Py_ssize_t a, b, s;
    if (PySlice_Unpack(item, &a, &b, &s) < 0)
        return -1;
    PySlice_AdjustIndices((Py_ssize_t)extent, &a, &b, s);
    *start = a;
    *stop = b;
    return 0;
}

int parse_index(PyObject *key, int ndim, const int64_t *shape, it_box *box, uint32_t *squeeze)
{
    PyObject *items;
    if (PyTuple_Check(key)) {
        items = key;
        Py_INCREF(items);
    } else if (PyList_Check(key)) {
        /* 0.3 read a list as a tuple; since 0.4 a list is a list of regions,
         * which only a tensor's [] reads */
        PyErr_Format(PyExc_TypeError, "Invalid index %R: each index must be an int, slice, or Ellipsis (to "
                     "read several regions, pass a list of regions to the tensor, e.g. t[[sl[0:8], sl[16:24]]])",
                     key);
        return -1;
    } else {
        items = PyTuple_Pack(1, key);
        if (!items)
            return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items), ellipsis_at = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(items, i) == Py_Ellipsis) {
            if (ellipsis_at >= 0) {
                PyErr_SetString(PyExc_IndexError, "an index can only have a single ellipsis ('...')");
                goto fail;
            }
            ellipsis_at = i;
        }
    }
    Py_ssize_t explicit = n - (ellipsis_at >= 0);
    if (explicit > ndim) {
        PyErr_Format(PyExc_IndexError, "Too many indices for infinite tensor of dimension %d", ndim);
        goto fail;
    }
    box->ndim = ndim;
    *squeeze = 0;
    int d = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        int fill_to = d; /* dims filled with full slices before item i */
        if (i == ellipsis_at)
            fill_to = d + (int)(ndim - explicit);
        else if (i == n)
            fill_to = ndim;
        for (; d < fill_to; d++) {
            if (shape[d] == IT_DIM_INFINITE) {
                PyErr_Format(PyExc_IndexError,
                             "Slice must have start and stop for infinite dimensions (dim %d is "
                             "left open by the index; give it explicit bounds)", d);
                goto fail;
            }
            box->start[d] = 0;
            box->stop[d] = shape[d];
            box->step[d] = 1;
        }
        if (i == n || i == ellipsis_at)
            continue;
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (PySlice_Check(item)) {
            if (parse_slice(item, d, shape[d], &box->start[d], &box->stop[d], &box->step[d]) < 0)
                goto fail;
        } else if (PyIndex_Check(item) && !PyFloat_Check(item)) {
            int64_t v;
            if (as_coord(item, &v, "index") < 0)
                goto fail;
            if (shape[d] != IT_DIM_INFINITE) {
                int64_t w = v < 0 ? v + shape[d] : v;
                if (w < 0 || w >= shape[d]) {
                    PyErr_Format(PyExc_IndexError,
                                 "Index %lld is out of bounds for dimension %d with size %lld",
                                 (long long)v, d, (long long)shape[d]);
                    goto fail;
                }
                v = w;
            }
            box->start[d] = v;
            box->stop[d] = v + 1;
            box->step[d] = 1;
            *squeeze |= 1u << d;
        } else {
            PyErr_Format(PyExc_TypeError,
                         "infinite tensors are indexed by ints, slices and '...', got %.100s (to read "
                         "several regions, pass a list of regions, e.g. t[[sl[0:8], sl[16:24]]])",
                         Py_TYPE(item)->tp_name);
            goto fail;
        }
        d++;
    }
    Py_DECREF(items);
    return 0;
fail:
    Py_DECREF(items);
    return -1;
}
