/*
 * h5util.c - what every file of the HDF5 store uses (h5internal.h): errors
 * as IT_EIO with HDF5's own message, the HDF5 type each dtype is stored as,
 * reading and writing the string and integer attributes of the layout, and
 * the store's lock.  Calls no other file of the store.
 *
 * The lock.  The core loads tiles with the caller's lock (the GIL) released
 * so that f runs in other threads meanwhile.  A load reads the store's own
 * tables (the row index, the open file, the journal) that a store, a close
 * or a delete in another thread changes, and libhdf5 is thread-safe only
 * when built so (Debian's is: it then serialises every call with a global
 * lock of its own; other builds do not).  So every entry point of the store
 * takes one process-wide recursive mutex (recursive: close commits, attach
 * may free).  Loads therefore run one at a time, overlapping f, copies and
 * everything else the core does without the GIL, not each other.  Order: a thread may take it while holding the GIL, and
 * nobody holding it waits for the GIL (it_h5_list calls its callback with
 * the lock released).  A fork in the middle of an HDF5 call would leave the
 * child's copy locked forever: the forking thread takes the lock first.
 */
#define _GNU_SOURCE /* PTHREAD_MUTEX_RECURSIVE */
#include "h5internal.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the store's lock ------------------------------------------------------ */

static pthread_mutex_t h5_mu;
static pthread_once_t h5_mu_once = PTHREAD_ONCE_INIT;

static void make_mu(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h5_mu, &a);
    pthread_mutexattr_destroy(&a);
}

static void before_fork(void) { pthread_mutex_lock(&h5_mu); }
static void in_parent(void) { pthread_mutex_unlock(&h5_mu); }
/* The child's only thread has a new id, so it does not own the recursive
 * mutex its parent's thread locked and may not unlock it: make a new one. */
static void in_child(void) { make_mu(); }

static void h5_mu_init(void)
{
    make_mu();
    pthread_atfork(before_fork, in_parent, in_child);
}

void it__h5_lock(void)
{
    pthread_once(&h5_mu_once, h5_mu_init);
    pthread_mutex_lock(&h5_mu);
}

void it__h5_unlock(void) { pthread_mutex_unlock(&h5_mu); }

int it__h5_serial_loads(void)
{
    const char *v = getenv("INFINITE_TENSOR_HDF5_SERIAL");
    return v && *v && strcmp(v, "0") != 0;
}

/* ---- errors --------------------------------------------------------------- */

typedef struct walk_ctx {
    char text[160];
} walk_ctx;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    walk_ctx *w = data;
    if (n == 0 && e->desc)
        snprintf(w->text, sizeof w->text, "%s", e->desc);
    return 0;
}

/* Record IT_EIO with HDF5's innermost message. */
int it__h5_fail(const char *what, const char *name)
{
    walk_ctx w = {""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    return it_error_set(IT_EIO, "HDF5 failed %s%s%s%s%s%s", what, name ? " '" : "", name ? name : "",
                        name ? "'" : "", w.text[0] ? ": " : "", w.text);
}

/* IT_ESTATE unless the file is open. */
int it__h5_need_open(const it_h5file *f)
{
    if (f->fid < 0)
        return it_error_set(IT_ESTATE, "the HDF5 store %s is closed; reopen it (with store:) first",
                            f->path);
    return IT_OK;
}

/* ---- dtypes ------------------------------------------------------------- */

/* The HDF5 type a dtype is stored as (caller closes it).  Little-endian;
 * bool as an enum FALSE/TRUE and complex as a compound {r, i} as h5py and
 * numpy expect; float16 as a 2-byte IEEE float; bfloat16, which HDF5 and
 * numpy lack, as its raw uint16 bits. */
hid_t it__h5_file_type(it_dtype dt)
{
    hid_t t = -1;
    switch (dt) {
    case IT_BOOL: {
        int8_t v0 = 0, v1 = 1;
        t = H5Tenum_create(H5T_NATIVE_INT8);
        H5Tenum_insert(t, "FALSE", &v0);
        H5Tenum_insert(t, "TRUE", &v1);
        return t;
    }
    case IT_U8: return H5Tcopy(H5T_STD_U8LE);
    case IT_I8: return H5Tcopy(H5T_STD_I8LE);
    case IT_I16: return H5Tcopy(H5T_STD_I16LE);
    case IT_I32: return H5Tcopy(H5T_STD_I32LE);
    case IT_I64: return H5Tcopy(H5T_STD_I64LE);
    case IT_U16:
    case IT_BF16: return H5Tcopy(H5T_STD_U16LE);
    case IT_U32: return H5Tcopy(H5T_STD_U32LE);
    case IT_U64: return H5Tcopy(H5T_STD_U64LE);
    case IT_F16:
        t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        return t;
    case IT_F32: return H5Tcopy(H5T_IEEE_F32LE);
    case IT_F64: return H5Tcopy(H5T_IEEE_F64LE);
    case IT_C64:
    case IT_C128: {
        hid_t part = dt == IT_C64 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
        size_t half = dt == IT_C64 ? 4 : 8;
        t = H5Tcreate(H5T_COMPOUND, 2 * half);
        H5Tinsert(t, "r", 0, part);
        H5Tinsert(t, "i", half, part);
        return t;
    }
    default: return -1;
    }
}

/* ---- strings and attributes ---------------------------------------------- */

char *it__h5_dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = it_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int it__h5_attr_exists(hid_t obj, const char *name)
{
    htri_t e = H5Aexists(obj, name);
    return e > 0;
}

int it__h5_write_str_attr(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR), a = -1;
    int rc = IT_OK;
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    if (it__h5_attr_exists(obj, name) && H5Adelete(obj, name) < 0)
        rc = it__h5_fail("replacing attribute", name);
    if (rc == IT_OK && ((a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
                        H5Awrite(a, t, &value) < 0))
        rc = it__h5_fail("writing attribute", name);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

/* A string attribute, fixed or variable length, as a new it_malloc string. */
int it__h5_read_str_attr(hid_t obj, const char *name, char **out)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), ft = -1, mt = -1, sp = -1;
    int rc = IT_OK;
    *out = NULL;
    if (a < 0)
        return it__h5_fail("opening attribute", name);
    ft = H5Aget_type(a);
    sp = H5Aget_space(a);
    if (H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        rc = it_error_set(IT_EINVAL, "attribute '%s' is not a single string", name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *v = NULL;
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, &v) < 0 || !v)
            rc = it__h5_fail("reading attribute", name);
        else if (!(*out = it__h5_dupstr(v)))
            rc = it_error_set(IT_ENOMEM, "out of memory reading attribute '%s'", name);
        if (v)
            H5free_memory(v);
    } else {
        size_t n = H5Tget_size(ft);
        char *v = it_calloc(n + 1, 1);
        mt = H5Tcopy(ft);
        if (!v)
            rc = it_error_set(IT_ENOMEM, "out of memory reading attribute '%s'", name);
        else if (H5Aread(a, mt, v) < 0)
            rc = it__h5_fail("reading attribute", name);
        if (rc == IT_OK)
            *out = v;
        else
            it_free(v);
    }
    if (mt >= 0)
        H5Tclose(mt);
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* n ints as a 1-d array, or one int as a scalar when n < 0 */
int it__h5_write_ints_attr(hid_t obj, const char *name, const int64_t *v, int n)
{
    hsize_t dim = (hsize_t)(n < 0 ? 1 : n);
    hid_t sp = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL), a = -1;
    int rc = IT_OK;
    if (it__h5_attr_exists(obj, name) && H5Adelete(obj, name) < 0)
        rc = it__h5_fail("replacing attribute", name);
    if (rc == IT_OK && ((a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
                        (n != 0 && H5Awrite(a, H5T_NATIVE_INT64, v) < 0)))
        rc = it__h5_fail("writing attribute", name);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

int it__h5_read_ints_attr(hid_t obj, const char *name, int64_t *v, int max, int *n)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), sp, ft;
    int rc = IT_OK;
    if (a < 0)
        return it__h5_fail("opening attribute", name);
    sp = H5Aget_space(a);
    ft = H5Aget_type(a);
    hssize_t k = H5Sget_simple_extent_npoints(sp);
    if (H5Tget_class(ft) != H5T_INTEGER || k < 0 || k > max)
        rc = it_error_set(IT_EINVAL, "attribute '%s' is not a list of at most %d ints", name, max);
    else if (k > 0 && H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        rc = it__h5_fail("reading attribute", name);
    *n = (int)k;
    H5Tclose(ft);
    H5Sclose(sp);
    H5Aclose(a);
    return rc;
}
