/*
 * convert.c - Python values into the core's types, in one place: ints,
 * shapes, the window tuple, devices; and core errors back into exceptions
 * that show the values the caller gave.
 *
 * The core checks every value it is given (limits, dims, maps: it_geom.h,
 * it_tensor.h); this file only converts, so that no rule is written twice.
 * The one thing the core cannot be told is a Python int past int64.  Such a
 * value is clamped to one every core check refuses (within a few of
 * INT64_MAX or INT64_MIN, or INT_MAX / INT_MIN for a C int) and remembered
 * in a `given` record, each under its own clamped value.  If the core then
 * refuses, raise_given puts the value given back into the core's message in
 * place of the clamped one: "window size[0] must be in [1, 2**48], got
 * 18446744073709551616", worded once, in the core, with the true limit.
 */
#include "binding.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

void given_init(given *g) { g->n = 0; }

void given_clear(given *g)
{
    for (int i = 0; i < g->n; i++)
        Py_CLEAR(g->obj[i]);
    g->n = 0;
}

/* The value standing for obj past [lo, hi]: distinct per record, so that a
 * message can be mapped back; the bounds themselves once the record is full
 * (the core refuses them just the same). */
static long long clamp_given(given *g, PyObject *obj, int overflow, long long lo, long long hi)
{
    if (!g || g->n >= GIVEN_MAX)
        return overflow > 0 ? hi : lo;
    long long v = overflow > 0 ? hi - g->n : lo + g->n;
    g->clamped[g->n] = v;
    g->obj[g->n] = Py_NewRef(obj);
    g->n++;
    return v;
}

/* An int from anything with __index__; past [lo, hi]: clamped (and recorded
 * in g), or an OverflowError when g is NULL. */
static int to_ranged(PyObject *o, long long lo, long long hi, given *g, long long *out)
{
    PyObject *i = PyNumber_Index(o);
    if (!i)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && (v < lo || v > hi))
        overflow = v < lo ? -1 : 1;
    if (overflow) {
        if (!g) {
            PyErr_Format(PyExc_OverflowError, "%R does not fit in %d bits", o,
                         hi == LLONG_MAX ? 64 : (int)(sizeof(int) * 8));
            return -1;
        }
        v = clamp_given(g, o, overflow, lo, hi);
    }
    *out = v;
    return 0;
}

int to_int64(PyObject *o, int64_t *out, given *g)
{
    long long v;
    if (to_ranged(o, LLONG_MIN, LLONG_MAX, g, &v) < 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int to_int64_saturating(PyObject *o, int64_t *out)
{
    PyObject *i = PyNumber_Index(o);
    if (!i)
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = overflow > 0 ? INT64_MAX : overflow < 0 ? INT64_MIN : (int64_t)v;
    return 0;
}

int int64_seq(PyObject *seq, int64_t *out, int max, const int64_t *none_value, given *g, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < n && i < max; i++) {
        PyObject *e = PySequence_Fast_GET_ITEM(fast, i);
        if (e == Py_None && none_value) {
            out[i] = *none_value;
        } else if (to_int64(e, &out[i], g) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return n > INT_MAX ? INT_MAX : (int)n;
}

int parse_window(PyObject *obj, int ncoords, it_window *w, given *g)
{
    PyObject *size, *stride, *offset, *map;
    if (!PyArg_ParseTuple(obj, "OOOO", &size, &stride, &offset, &map))
        return -1;
    PyObject *fast = PySequence_Fast(map, "dimension_map must be a sequence");
    if (!fast)
        return -1;
    Py_ssize_t nmap = PySequence_Fast_GET_SIZE(fast);
    int n = int64_seq(size, w->size, IT_MAX_DIMS, NULL, g, "window size must be a sequence");
    if (n < 0 || int64_seq(stride, w->stride, IT_MAX_DIMS, NULL, g, "window stride must be a sequence") != n ||
        int64_seq(offset, w->offset, IT_MAX_DIMS, NULL, g, "window offset must be a sequence") != n ||
        nmap != n) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "window fields must have equal lengths");
        Py_DECREF(fast);
        return -1;
    }
    /* more than IT_MAX_DIMS: the core refuses ndim before it reads a field */
    w->ndim = n;
    w->ncoords = ncoords;
    for (int d = 0; d < n && d < IT_MAX_DIMS; d++) {
        /* None (or IT_MAP_FIXED) pins the dim; a C int in the core, so a
         * coordinate past int is clamped like a value past int64 */
        PyObject *e = PySequence_Fast_GET_ITEM(fast, d);
        long long v = IT_MAP_FIXED;
        if (e != Py_None && to_ranged(e, INT_MIN, INT_MAX, g, &v) < 0) {
            Py_DECREF(fast);
            return -1;
        }
        w->map[d] = (int)v;
    }
    Py_DECREF(fast);
    return 0;
}

int device_code(module_state *st, PyObject *device, int *type, int *id)
{
    PyObject *kind = PyObject_GetAttrString(device, "type");
    PyObject *index = kind ? PyObject_GetAttrString(device, "index") : NULL;
    int rc = -1;
    if (!index)
        goto done;
    *id = 0;
    if (index != Py_None) {
        long v = PyLong_AsLong(index);
        if (v == -1 && PyErr_Occurred())
            goto done;
        *id = (int)v;
    }
    if (PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "cpu") == 0) {
        *type = IT_DEVICE_CPU;
        rc = 0;
    } else if (PyUnicode_Check(kind) && PyUnicode_CompareWithASCIIString(kind, "cuda") == 0) {
        *type = IT_DEVICE_CUDA;
        rc = 0;
    } else {
        PyErr_Format(st->ValidationError ? st->ValidationError : PyExc_ValueError,
                     "device %S is not supported", device);
    }
done:
    Py_XDECREF(kind);
    Py_XDECREF(index);
    return rc;
}

/* repr(obj), cut short: a huge int would fill the screen. */
static PyObject *short_repr(PyObject *obj)
{
    PyObject *r = PyObject_Repr(obj);
    if (!r || PyUnicode_GET_LENGTH(r) <= 40)
        return r;
    PyObject *head = PyUnicode_Substring(r, 0, 37);
    PyObject *cut = head ? PyUnicode_FromFormat("%U... (%zd characters)", head, PyUnicode_GET_LENGTH(r)) : NULL;
    Py_XDECREF(head);
    Py_DECREF(r);
    return cut;
}

/* msg with every number that stands for a value given replaced by that
 * value's repr. */
static PyObject *with_given(const char *msg, const given *g)
{
    PyObject *parts = PyList_New(0);
    const char *p = msg, *copied = msg;
    while (parts && *p) {
        int starts = (isdigit((unsigned char)*p) || (*p == '-' && isdigit((unsigned char)p[1]))) &&
                     (p == msg || !isdigit((unsigned char)p[-1]));
        if (!starts) {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        int k = -1;
        for (int i = 0; errno == 0 && i < g->n && k < 0; i++)
            if (g->clamped[i] == v)
                k = i;
        if (k >= 0) {
            PyObject *text = PyUnicode_FromStringAndSize(copied, p - copied);
            PyObject *value = text ? short_repr(g->obj[k]) : NULL;
            if (!value || PyList_Append(parts, text) < 0 || PyList_Append(parts, value) < 0)
                Py_CLEAR(parts);
            Py_XDECREF(text);
            Py_XDECREF(value);
            copied = end;
        }
        p = end;
    }
    PyObject *rest = parts ? PyUnicode_FromString(copied) : NULL;
    if (!rest || PyList_Append(parts, rest) < 0)
        Py_CLEAR(parts);
    Py_XDECREF(rest);
    PyObject *empty = parts ? PyUnicode_FromString("") : NULL;
    PyObject *res = empty ? PyUnicode_Join(empty, parts) : NULL;
    Py_XDECREF(empty);
    Py_XDECREF(parts);
    return res;
}

PyObject *raise_given(module_state *st, int rc, given *g)
{
    if (rc == IT_ECALLBACK || g->n == 0) {
        given_clear(g);
        return raise_core(st, rc);
    }
    PyObject *msg = with_given(it_error_message(), g);
    given_clear(g);
    if (!msg)
        return NULL;
    PyErr_SetObject(core_error_class(st, rc), msg);
    Py_DECREF(msg);
    return NULL;
}
