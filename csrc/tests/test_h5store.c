/*
 * test_h5store.c - the HDF5 tile store (it_h5store.h; csrc/core/h5internal.h
 * lists its files).
 *
 * Every test works on real files in a fresh mkdtemp directory.  Tensors are
 * fakes (ft, it_test_util.h) attached to a store under an id; what is
 * checked does not go through the store's own reading code where it can be
 * avoided:
 *
 *  - values read back are compared with ft_reference (or, for the unsigned
 *    and bool dtypes with a max blend, with a reference that folds the
 *    window values converted to the dtype, so that wrap-around and bool
 *    "max = or" are exact);
 *  - the files are opened with the HDF5 C API and its default driver and
 *    checked against docs/file-format.md: group names, attributes, dataset
 *    types, shapes and chunks, and for every row of "tiles" the values are
 *    recomputed by brute force from the windows its "bits" row marks (so
 *    each committed tile is self-consistent, which is the crash-safety
 *    argument), and the rows of "index" are distinct;
 *  - crashes are real: a forked child writes, flushes and dies (_exit
 *    between reads or inside a commit, through the driver's test hook, or
 *    SIGKILL) without closing; the parent reopens and every value must be
 *    the reference (no window counted twice);
 *  - failures are injected with it_alloc_fail_after (the core's and the
 *    journal driver's allocations; HDF5's own are not hooked): each call
 *    fails cleanly, and whatever the store commits afterwards (a retry, a
 *    flush, the close) must still be consistent tiles only;
 *  - H5Fget_obj_count(H5F_OBJ_ALL, ...) is back to where it was after each
 *    test (no HDF5 handle left open) and LEAK_BEGIN/LEAK_END check the
 *    core's blocks.
 *
 * The tests named test_fail_* are the failure paths (IT_TEST_SKIP='test_fail_*'
 * leaves them out).  IT_H5S_CRASHES sets the number of crash runs (16).
 * Children never touch cmocka; they report through exit codes.
 */
#define _GNU_SOURCE /* fork, kill, mkdtemp, nanosleep */

#include "it_test_util.h"
#include "it_h5store.h"
#include "it_h5journal.h"

#include <hdf5.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_FAIL 3 /* a child's call failed */

static char tmpdir[256];
/* Prefixed to the messages of value checks (which failure point). */
static char where[512];

/* ------------------------------------------------------------------ */
/* files                                                                */

static const char *tpath(const char *name)
{
    static char buf[8][sizeof tmpdir + 260];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static const char *jpath_of(const char *path)
{
    static char buf[2][sizeof tmpdir + 280];
    static int k;
    k = (k + 1) % 2;
    snprintf(buf[k], sizeof buf[k], "%s-journal", path);
    return buf[k];
}

static long long fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void rm_store(const char *path)
{
    unlink(path);
    unlink(jpath_of(path));
}

/* Copy a file byte for byte (a snapshot of what a crash would leave). */
static void copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* A snapshot of a store: the file and, if there is one, its journal. */
static void snapshot(const char *src, const char *dst)
{
    rm_store(dst);
    copy_file(src, dst);
    if (fsize(jpath_of(src)) >= 0) {
        char j[420];
        snprintf(j, sizeof j, "%s", jpath_of(src));
        copy_file(j, jpath_of(dst));
    }
}

static void write_bytes(const char *path, const char *bytes)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(bytes, fp);
    assert_int_equal(fclose(fp), 0);
}

/* No HDF5 object (file, group, dataset, attribute) is left open: as many
 * as when the test started (0, unless an earlier test failed midway). */
static ssize_t h5_objects_at_start;

static void no_h5_objects(void)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != h5_objects_at_start)
        fail_msg("%zd HDF5 objects are still open", n - h5_objects_at_start);
}

/* After a failed it_h5_close: nothing may stay open.  (HDF5 1.10 keeps a
 * file id whose H5Fclose failed registered, with its file freed: nothing
 * can close it, and HDF5's exit handler crashes on it.) */
static void settle_h5_objects(int close_failed, const char *after)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL) - h5_objects_at_start;
    if (n != 0)
        fail_msg("%s%zd HDF5 object(s) still open after %s%s", where, n, after,
                 close_failed ? " and a failed it_h5_close (a file id left registered by a failed "
                                "H5Fclose: HDF5's exit handler will crash on it)"
                              : "");
}

static int test_setup(void **state)
{
    (void)state;
    h5_objects_at_start = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* stores                                                               */

static it_h5file *open_ok(const char *path, int mode, int gzip)
{
    it_h5file *f = NULL;
    EXPECT_OK(it_h5_open(path, mode, gzip, &f));
    assert_non_null(f);
    assert_int_equal(it_h5_is_open(f), 1);
    assert_int_equal(it_h5_readonly(f), mode == IT_H5_READ);
    return f;
}

static void close_unref(it_h5file *f)
{
    EXPECT_OK(it_h5_close(f));
    assert_int_equal(it_h5_is_open(f), 0);
    it_h5_unref(f);
}

/* ------------------------------------------------------------------ */
/* tensors                                                              */

typedef struct hspec {
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    it_dtype dtype;
    int64_t size[IT_MAX_DIMS], stride[IT_MAX_DIMS], offset[IT_MAX_DIMS];
    int64_t tile[IT_MAX_DIMS];
    it_combine combine;
    double fill;
    int64_t batch;
    uint64_t seed;
    int modulus;
} hspec;

static int hs_ninf(const hspec *s)
{
    int n = 0;
    for (int d = 0; d < s->ndim; d++)
        n += s->shape[d] == INF;
    return n;
}

/* The tile sizes of the infinite dims, in order (what write_meta gets). */
static int hs_tile_size(const hspec *s, int64_t *ts)
{
    int n = 0;
    for (int d = 0; d < s->ndim; d++)
        if (s->shape[d] == INF)
            ts[n++] = s->tile[d];
    return n;
}

static void hs_json(const hspec *s, char *buf, size_t n)
{
    snprintf(buf, n, "{\"dtype\": %d, \"ndim\": %d, \"seed\": %llu}", (int)s->dtype, s->ndim,
             (unsigned long long)s->seed);
}

static void meta_ok(it_h5file *f, const char *id, const hspec *s)
{
    int64_t ts[IT_MAX_DIMS];
    char json[200];
    int n = hs_tile_size(s, ts);
    hs_json(s, json, sizeof json);
    EXPECT_OK(it_h5_write_meta(f, id, json, ts, n));
}

static ft *mkft_only(const hspec *s, it_cache *c)
{
    ft *f = ft_new(s->ndim, s->shape, s->dtype);
    ft_set_window(f, s->size, s->stride, s->offset, NULL);
    for (int d = 0; d < s->ndim; d++)
        f->spec.tile_shape[d] = s->tile[d];
    f->spec.combine = s->combine;
    f->fill = s->fill;
    f->spec.batch_size = s->batch > 0 ? s->batch : 1;
    if (s->seed)
        f->seed = s->seed;
    if (s->modulus)
        f->modulus = s->modulus;
    ft_create_ok(f, c);
    return f;
}

/* A fake from s, attached to f under id when f is given. */
static ft *mkt(const hspec *s, it_cache *c, it_h5file *f, const char *id)
{
    ft *t = mkft_only(s, c);
    if (f)
        EXPECT_OK(it_h5_attach(f, id, t->t));
    return t;
}

/* ------------------------------------------------------------------ */
/* references                                                           */

/* x as the dtype holds it (wrap-around for unsigned, 0/1 for bool). */
static double conv(it_dtype dt, double x)
{
    unsigned char b[16];
    el_store(dt, b, x);
    return el_load(dt, b);
}

/* ft_reference folds doubles; for these dtypes a window's values are first
 * converted (unsigned wrap, bool), so fold converted values. */
static int conv_dtype(it_dtype dt)
{
    return dt == IT_BOOL || dt == IT_U8 || dt == IT_U16 || dt == IT_U32 || dt == IT_U64;
}

/* Fold window co's values into out (the step-1 box start/ext), converted. */
/* Cuts of dim d in (a, b]: pixels where some window starts or ends (one
 * by one: the tiles here are small). */
static int64_t raw_cuts(const it_window *w, int d, int64_t a, int64_t b)
{
    int64_t n = 0, o = w->offset[d], z = w->size[d], s = w->stride[d];
    for (int64_t p = a + 1; p <= b; p++) {
        if (w->map[d] == IT_MAP_FIXED)
            n += p == o || p == o + z;
        else
            n += ((p - o) % s + s) % s == 0 || ((p - o - z) % s + s) % s == 0;
    }
    return n;
}

/* Fold window co (its base values, converted) into out, the dense box of
 * extent ext at start, over the pixels that hold it: all of them, or with
 * counts (a record's fold counts, docs/file-format.md) and the window's bit
 * clear, those whose cell counts more windows than co's rank among the
 * windows covering the pixel, in lexicographic order. */
static void fold_window_where(ft *f, const int64_t *co, const int64_t *start, const int64_t *ext,
                              const unsigned char *counts, double *out)
{
    int nd = f->spec.ndim;
    const it_window *w = &f->spec.window;
    it_dtype dt = f->spec.dtype;
    int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], klo[IT_MAX_DIMS], khi[IT_MAX_DIMS], k[IT_MAX_DIMS];
    int64_t cdim[IT_MAX_DIMS];
    for (int d = 0; counts && d < nd; d++)
        cdim[d] = raw_cuts(w, d, start[d], start[d] + ext[d] - 1) + 1;
    ref_bounds(w, co, s, e);
    for (int d = 0; d < nd; d++) {
        klo[d] = IT_MAX(0, s[d] - start[d]);
        khi[d] = IT_MIN(ext[d] - 1, e[d] - 1 - start[d]);
        if (klo[d] > khi[d])
            return;
    }
    memcpy(k, klo, sizeof k);
    do {
        int64_t px[IT_MAX_DIMS], px1[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], local[IT_MAX_DIMS];
        int64_t cell = 0, rank = 0, idx = 0;
        for (int d = 0; d < nd; d++) {
            px[d] = start[d] + k[d];
            px1[d] = px[d] + 1;
            local[d] = px[d] - s[d];
            idx = idx * ext[d] + k[d];
            if (counts)
                cell = cell * cdim[d] + raw_cuts(w, d, start[d], px[d]);
        }
        if (counts) {
            assert_true(ref_domain(w, f->spec.shape, px, px1, lo, hi));
            for (int c = 0; c < w->ncoords; c++)
                rank = rank * (hi[c] - lo[c] + 1) + (co[c] - lo[c]);
            uint32_t n;
            memcpy(&n, counts + 4 * cell, 4);
            if (rank >= n)
                continue;
        }
        out[idx] = ft_fold(f, out[idx], conv(dt, ft_base(f, co, local)));
        if (f->spec.combine == IT_COMBINE_SUM) /* a max or min of dtype values is one */
            out[idx] = conv(dt, out[idx]);
    } while (tu_next_index(nd, k, klo, khi));
}

static void fold_window(ft *f, const int64_t *co, const int64_t *start, const int64_t *ext, double *out)
{
    fold_window_where(f, co, start, ext, NULL, out);
}

/* The dense value of a step-1 box with converted folds. */
static void conv_reference(ft *f, const it_box *box, double *out)
{
    const it_window *w = &f->spec.window;
    int64_t ext[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], co[IT_MAX_DIMS];
    int64_t n = tu_box_numel(box, ext);
    for (int d = 0; d < box->ndim; d++)
        assert_int_equal(box->step[d], 1);
    for (int64_t i = 0; i < n; i++)
        out[i] = conv(f->spec.dtype, f->fill);
    if (n == 0 || !ref_domain(w, f->spec.shape, box->start, box->stop, lo, hi))
        return;
    memcpy(co, lo, sizeof co);
    do {
        if (ref_window_valid(w, f->spec.shape, co))
            fold_window(f, co, box->start, ext, out);
    } while (tu_next_index(w->ncoords, co, lo, hi));
}

/* Read a box and compare (ft_read_check, with the converted reference for
 * the dtypes that need it); returns the code. */
static int read_check(ft *f, const it_box *b, int flags)
{
    if (!conv_dtype(f->spec.dtype))
        return ft_read_check(f, b, flags);
    ft_reset_per_read(f);
    long before = f->calls;
    it_buffer *out = NULL;
    it_error_clear();
    int rc = it_tensor_read(f->t, b, flags, &out);
    ft_check_errors(f);
    if (rc == IT_OK) {
        tu_buffer_flip(out);
        int64_t ext[IT_MAX_DIMS];
        int64_t n = tu_box_numel(b, ext);
        size_t es = tu_elsize(f->spec.dtype);
        double *ref = malloc(sizeof(double) * (size_t)(n ? n : 1));
        assert_non_null(ref);
        conv_reference(f, b, ref);
        assert_int_equal(out->dtype, f->spec.dtype);
        for (int64_t j = 0; j < n; j++) {
            double v = el_load(out->dtype, (const char *)out->data + j * (int64_t)es);
            if (v != ref[j]) {
                double e = ref[j];
                free(ref);
                fail_msg("%selement %lld reads %g, expected %g", where, (long long)j, v, e);
            }
        }
        free(ref);
        it_buffer_free(out);
    } else {
        tu_check_recorded(rc, "it_tensor_read", __FILE__, __LINE__);
        snprintf(f->last_msg, sizeof f->last_msg, "%s", it_error_message());
    }
    if ((flags & IT_READ_NO_COMPUTE) && f->calls != before)
        fail_msg("IT_READ_NO_COMPUTE read called compute");
    tu_cache_ok(f->cache);
    ft_check_released(f);
    return rc;
}

static void read_ok(ft *f, const it_box *b)
{
    int rc = read_check(f, b, 0);
    if (rc != IT_OK)
        fail_msg("read failed: %d (%s)", rc, f->last_msg);
}

static void read_all(ft *f, const it_box *b, int n)
{
    for (int i = 0; i < n; i++)
        read_ok(f, &b[i]);
}

/* A few overlapping step-1 boxes: per dim, three intervals. */
static int boxes_for(const hspec *s, it_box *out)
{
    static const int64_t inf_iv[3][2] = {{3, 11}, {7, 20}, {-9, -2}};
    for (int i = 0; i < 3; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].ndim = s->ndim;
        for (int d = 0; d < s->ndim; d++) {
            int64_t E = s->shape[d];
            out[i].step[d] = 1;
            if (E == INF) {
                out[i].start[d] = inf_iv[(i + d) % 3][0];
                out[i].stop[d] = inf_iv[(i + d) % 3][1];
            } else {
                out[i].start[d] = i == 1 && E > 2 ? 1 : 0;
                out[i].stop[d] = i == 2 && E > 2 ? E - 1 : E;
            }
        }
    }
    return 3;
}

static it_box hull(const hspec *s, const it_box *b, int n, int64_t grow)
{
    it_box h = b[0];
    for (int i = 1; i < n; i++)
        for (int d = 0; d < h.ndim; d++) {
            h.start[d] = IT_MIN(h.start[d], b[i].start[d]);
            h.stop[d] = IT_MAX(h.stop[d], b[i].stop[d]);
        }
    for (int d = 0; d < h.ndim; d++)
        if (s->shape[d] == INF) {
            h.start[d] -= grow;
            h.stop[d] += grow;
        }
    return h;
}

static it_box box1(int64_t a, int64_t b)
{
    return mkbox(1, &a, &b, NULL);
}

/* ------------------------------------------------------------------ */
/* the file as any HDF5 reader sees it                                  */

static hid_t raw_open(const char *path, unsigned flags)
{
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    if (f < 0)
        fail_msg("H5Fopen(%s) failed", path);
    return f;
}

static int raw_exists(hid_t loc, const char *name)
{
    htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
    assert_true(e >= 0);
    return e > 0;
}

static char *raw_str_attr(hid_t obj, const char *name)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t t = H5Aget_type(a);
    assert_int_equal(H5Tget_class(t), H5T_STRING);
    assert_true(H5Tis_variable_str(t) > 0);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(t));
    char *v = NULL;
    assert_true(H5Aread(a, mt, &v) >= 0);
    char *r = strdup(v);
    H5free_memory(v);
    H5Tclose(mt);
    H5Tclose(t);
    H5Aclose(a);
    return r;
}

static int raw_ints_attr(hid_t obj, const char *name, int64_t *v, int max)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t sp = H5Aget_space(a), t = H5Aget_type(a);
    assert_int_equal(H5Tget_class(t), H5T_INTEGER);
    assert_int_equal(H5Tget_size(t), 8);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    assert_true(n >= 0 && n <= max);
    if (n > 0)
        assert_true(H5Aread(a, H5T_NATIVE_INT64, v) >= 0);
    H5Tclose(t);
    H5Sclose(sp);
    H5Aclose(a);
    return (int)n;
}

static void raw_write_i64_attr(hid_t obj, const char *name, int64_t v)
{
    if (H5Aexists(obj, name) > 0)
        assert_true(H5Adelete(obj, name) >= 0);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

/* The file type documented for a dtype: checks class, size and details. */
static void check_file_type(hid_t t, it_dtype dt)
{
    H5T_class_t cl = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    switch (dt) {
    case IT_BOOL: {
        assert_int_equal(cl, H5T_ENUM);
        assert_int_equal(sz, 1);
        assert_int_equal(H5Tget_nmembers(t), 2);
        char name[16];
        int8_t v = 0;
        assert_true(H5Tenum_nameof(t, &v, name, sizeof name) >= 0);
        assert_string_equal(name, "FALSE");
        v = 1;
        assert_true(H5Tenum_nameof(t, &v, name, sizeof name) >= 0);
        assert_string_equal(name, "TRUE");
        break;
    }
    case IT_C64:
    case IT_C128: {
        size_t half = dt == IT_C64 ? 4 : 8;
        assert_int_equal(cl, H5T_COMPOUND);
        assert_int_equal(sz, 2 * half);
        assert_int_equal(H5Tget_nmembers(t), 2);
        char *n0 = H5Tget_member_name(t, 0), *n1 = H5Tget_member_name(t, 1);
        assert_string_equal(n0, "r");
        assert_string_equal(n1, "i");
        H5free_memory(n0);
        H5free_memory(n1);
        assert_int_equal(H5Tget_member_offset(t, 0), 0);
        assert_int_equal(H5Tget_member_offset(t, 1), half);
        hid_t m = H5Tget_member_type(t, 1);
        assert_int_equal(H5Tget_class(m), H5T_FLOAT);
        assert_int_equal(H5Tget_size(m), half);
        H5Tclose(m);
        break;
    }
    case IT_F16:
    case IT_F32:
    case IT_F64: {
        assert_int_equal(cl, H5T_FLOAT);
        assert_int_equal(sz, tu_elsize(dt));
        assert_int_equal(H5Tget_order(t), H5T_ORDER_LE);
        if (dt == IT_F16) {
            size_t spos, epos, esize, mpos, msize;
            assert_true(H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0);
            assert_int_equal(spos, 15);
            assert_int_equal(epos, 10);
            assert_int_equal(esize, 5);
            assert_int_equal(mpos, 0);
            assert_int_equal(msize, 10);
            assert_int_equal(H5Tget_ebias(t), 15);
        }
        break;
    }
    default: { /* integers; bfloat16 as its uint16 bits */
        int is_signed = dt == IT_I8 || dt == IT_I16 || dt == IT_I32 || dt == IT_I64;
        assert_int_equal(cl, H5T_INTEGER);
        assert_int_equal(sz, tu_elsize(dt));
        assert_int_equal(H5Tget_order(t), H5T_ORDER_LE);
        assert_int_equal(H5Tget_sign(t), is_signed ? H5T_SGN_2 : H5T_SGN_NONE);
        break;
    }
    }
}

/* Rank and dims of a dataset. */
static int raw_dims(hid_t d, hsize_t *dims)
{
    hid_t sp = H5Dget_space(d);
    int r = H5Sget_simple_extent_ndims(sp);
    assert_true(r >= 1 && r <= IT_MAX_DIMS + 1);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    return r;
}

/* Check the group of tensor f (name: the escaped id) in the file at path
 * against docs/file-format.md.  Every "tiles" row must hold exactly the
 * fold of the windows its "bits" row marks; "index" rows are distinct and
 * are added to seen (if given).  json: the expected meta (or NULL).
 * Returns the row count. */
static int64_t raw_check(const char *path, const char *name, ft *f, const char *json, wtab *seen)
{
    hid_t fid = raw_open(path, H5F_ACC_RDONLY);
    int64_t fmt = 0;
    assert_int_equal(raw_ints_attr(fid, "infinite_tensor_format", &fmt, 1), 1);
    assert_int_equal(fmt, 2);
    hid_t tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    assert_true(tg >= 0);
    hid_t g = H5Gopen2(tg, name, H5P_DEFAULT);
    if (g < 0)
        fail_msg("no group tensors/%s", name);
    const it_tensor_spec *sp = &f->spec;
    int nd = sp->ndim, ninf = 0;
    int64_t T[IT_MAX_DIMS], ts[IT_MAX_DIMS];
    it_tensor_tile_shape(f->t, T);
    for (int d = 0; d < nd; d++)
        ninf += sp->shape[d] == INF;
    /* attributes */
    if (json) {
        char *m = raw_str_attr(g, "meta");
        assert_string_equal(m, json);
        free(m);
    }
    assert_int_equal(raw_ints_attr(g, "tile_size", ts, IT_MAX_DIMS), ninf);
    for (int d = 0, k = 0; d < nd; d++)
        if (sp->shape[d] == INF)
            assert_int_equal(ts[k++], T[d]);
    /* datasets */
    hid_t dt = H5Dopen2(g, "tiles", H5P_DEFAULT), db = H5Dopen2(g, "bits", H5P_DEFAULT);
    hid_t di = ninf ? H5Dopen2(g, "index", H5P_DEFAULT) : -1;
    assert_true(dt >= 0 && db >= 0);
    assert_int_equal(ninf > 0, raw_exists(g, "index"));
    if (ninf)
        assert_true(di >= 0);
    hsize_t td[IT_MAX_DIMS + 1], bd[2], id[2], ch[IT_MAX_DIMS + 1];
    assert_int_equal(raw_dims(dt, td), nd + 1);
    assert_int_equal(raw_dims(db, bd), 2);
    int64_t rows = (int64_t)td[0];
    for (int d = 0; d < nd; d++)
        assert_int_equal(td[d + 1], T[d]);
    assert_int_equal(bd[0], rows);
    /* float sums whose windows overlap enough carry fold counts after the bitmap */
    int64_t row_bytes = IT_MAX((it_tensor_record_bits(f->t, 1) + 7) / 8, 1);
    int counted = it_tensor_record_bits(f->t, 1) != it_tensor_max_domain(f->t);
    assert_int_equal(bd[1], row_bytes);
    if (ninf) {
        assert_int_equal(raw_dims(di, id), 2);
        assert_int_equal(id[0], rows);
        assert_int_equal(id[1], ninf);
        hid_t it = H5Dget_type(di);
        assert_int_equal(H5Tget_class(it), H5T_INTEGER);
        assert_int_equal(H5Tget_size(it), 8);
        H5Tclose(it);
    } else {
        assert_true(rows <= 1);
    }
    /* chunks of one tile */
    hid_t pl = H5Dget_create_plist(dt);
    assert_int_equal(H5Pget_chunk(pl, nd + 1, ch), nd + 1);
    assert_int_equal(ch[0], 1);
    for (int d = 0; d < nd; d++)
        assert_int_equal(ch[d + 1], T[d]);
    H5Pclose(pl);
    hid_t ftype = H5Dget_type(dt);
    check_file_type(ftype, sp->dtype);
    /* read everything */
    size_t es = tu_elsize(sp->dtype);
    int64_t numel = 1;
    for (int d = 0; d < nd; d++)
        numel *= T[d];
    unsigned char *vals = malloc((size_t)(rows * numel) * es + 1);
    unsigned char *bits = malloc((size_t)(rows * row_bytes) + 1);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)(rows * IT_MAX(ninf, 1)) + 1);
    assert_true(vals && bits && idx);
    if (rows > 0) {
        /* the file type as the memory type: the raw little-endian bytes */
        if (H5Dread(dt, ftype, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) < 0) {
            H5Eprint2(H5E_DEFAULT, stderr);
            fail_msg("%s%s: HDF5 cannot read the tiles", where, name);
        }
        assert_true(H5Dread(db, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bits) >= 0);
        if (ninf)
            assert_true(H5Dread(di, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, idx) >= 0);
    }
    H5Tclose(ftype);
    wtab uniq;
    wtab_init(&uniq, ninf);
    double *ref = malloc(sizeof(double) * (size_t)numel);
    assert_non_null(ref);
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *c = idx + r * ninf;
        long *u = wtab_slot(&uniq, c, 1);
        if (++*u > 1)
            fail_msg("%s%s: tile (%s) has two rows", where, name, tu_fmt_coords(ninf, c).s);
        if (seen)
            ++*wtab_slot(seen, c, 1);
        /* the tile box */
        int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS];
        for (int d = 0, k = 0; d < nd; d++) {
            if (sp->shape[d] == INF) {
                start[d] = c[k++] * T[d];
                stop[d] = start[d] + T[d];
            } else {
                start[d] = 0;
                stop[d] = sp->shape[d];
            }
        }
        for (int64_t j = 0; j < numel; j++)
            ref[j] = conv(sp->dtype, f->fill);
        const unsigned char *brow = bits + r * row_bytes;
        int64_t nbits = 0;
        if (ref_domain(&sp->window, sp->shape, start, stop, lo, hi)) {
            int64_t co[IT_MAX_DIMS], b = 0;
            nbits = 1;
            for (int k = 0; k < sp->window.ncoords; k++)
                nbits *= hi[k] - lo[k] + 1;
            assert_true(nbits <= row_bytes * 8);
            memcpy(co, lo, sizeof co);
            const unsigned char *counts = brow + (nbits + 63) / 64 * 8;
            do {
                int marked = (brow[b >> 3] >> (b & 7)) & 1;
                if (marked && !ref_window_valid(&sp->window, sp->shape, co))
                    fail_msg("%s%s: row %lld marks an invalid window", where, name, (long long)r);
                if (counted && ref_window_valid(&sp->window, sp->shape, co))
                    fold_window_where(f, co, start, T, marked ? NULL : counts, ref);
                else if (marked)
                    fold_window(f, co, start, T, ref);
                b++;
            } while (tu_next_index(sp->window.ncoords, co, lo, hi));
        }
        int64_t bitmap_end = counted ? (nbits + 63) / 64 * 64 : row_bytes * 8;
        for (int64_t b = nbits; b < bitmap_end; b++)
            if ((brow[b >> 3] >> (b & 7)) & 1)
                fail_msg("%s%s: row %lld has bit %lld set past its %lld windows", where, name, (long long)r,
                         (long long)b, (long long)nbits);
        for (int64_t j = 0; j < numel; j++) {
            const unsigned char *p = vals + (size_t)(r * numel + j) * es;
            double v = el_load(sp->dtype, p);
            if (v != ref[j])
                fail_msg("%s%s: tile (%s) element %lld holds %g, but the windows its bits mark fold "
                         "to %g", where, name, tu_fmt_coords(ninf, c).s, (long long)j, v, ref[j]);
            if (sp->dtype == IT_C64 || sp->dtype == IT_C128) /* the imaginary part is 0 */
                assert_true(el_load(sp->dtype == IT_C64 ? IT_F32 : IT_F64, p + es / 2) == 0.0);
        }
    }
    free(ref);
    wtab_free(&uniq);
    free(vals);
    free(bits);
    free(idx);
    if (di >= 0)
        H5Dclose(di);
    H5Dclose(dt);
    H5Dclose(db);
    H5Gclose(g);
    H5Gclose(tg);
    assert_true(H5Fclose(fid) >= 0);
    return rows;
}

/* ------------------------------------------------------------------ */
/* 1. round trip                                                        */

#define S1D(dt, comb, fl, mod)                                                                  \
    {.ndim = 1, .shape = {INF}, .dtype = dt, .size = {6}, .stride = {4}, .offset = {3},         \
     .tile = {12}, .combine = comb, .fill = fl, .batch = 3, .seed = 77, .modulus = mod}

static const hspec RT[] = {
    S1D(IT_I64, IT_COMBINE_SUM, 7, 0),
    S1D(IT_U8, IT_COMBINE_MAX, 0, 21),
    S1D(IT_I8, IT_COMBINE_SUM, -3, 21),
    S1D(IT_I16, IT_COMBINE_MIN, 100, 0),
    S1D(IT_I32, IT_COMBINE_SUM, 0, 0),
    S1D(IT_U16, IT_COMBINE_SUM, 0, 21),  /* sums wrap around: the reference folds converted */
    S1D(IT_U32, IT_COMBINE_MAX, 5, 0),
    S1D(IT_U64, IT_COMBINE_MAX, 0, 0),
    S1D(IT_BF16, IT_COMBINE_SUM, 1, 21),
    S1D(IT_C128, IT_COMBINE_SUM, 2, 0),
    /* 2-d, a finite dim first */
    {.ndim = 2, .shape = {5, INF}, .dtype = IT_F32, .size = {2, 4}, .stride = {1, 3},
     .offset = {0, -2}, .tile = {0, 6}, .combine = IT_COMBINE_SUM, .fill = -2, .seed = 5},
    /* bool with a max blend: "or" */
    {.ndim = 2, .shape = {INF, INF}, .dtype = IT_BOOL, .size = {3, 3}, .stride = {2, 2},
     .offset = {0, 1}, .tile = {4, 6}, .combine = IT_COMBINE_MAX, .seed = 9, .modulus = 3},
    {.ndim = 2, .shape = {INF, 3}, .dtype = IT_F16, .size = {3, 2}, .stride = {2, 1},
     .offset = {1, 0}, .tile = {5, 0}, .combine = IT_COMBINE_SUM, .fill = 0.5, .seed = 11,
     .modulus = 21, .batch = 2},
    {.ndim = 1, .shape = {INF}, .dtype = IT_C64, .size = {5}, .stride = {2}, .offset = {-1},
     .tile = {8}, .combine = IT_COMBINE_SUM, .seed = 13},
    /* 3-d, two infinite dims around a finite one */
    {.ndim = 3, .shape = {INF, 2, INF}, .dtype = IT_F64, .size = {2, 2, 3}, .stride = {2, 1, 2},
     .offset = {0, 0, -1}, .tile = {3, 0, 4}, .combine = IT_COMBINE_SUM, .fill = 1, .seed = 17},
    /* no infinite dim: one tile, no index */
    {.ndim = 2, .shape = {6, 5}, .dtype = IT_I64, .size = {2, 3}, .stride = {2, 1},
     .offset = {0, 0}, .combine = IT_COMBINE_SUM, .fill = 4, .seed = 19},
};

static void roundtrip(const hspec *s, int k)
{
    char name[40], json[200];
    snprintf(name, sizeof name, "rt%d.h5", k);
    const char *path = tpath(name);
    rm_store(path);
    hs_json(s, json, sizeof json);
    int gzip = k % 3 == 0 ? -1 : k % 3 == 1 ? 4 : 0;
    it_cache *c = mkcache(-1, -1);
    it_box R[3];
    int nr = boxes_for(s, R);
    it_box big = hull(s, R, nr, 9);

    it_h5file *f = open_ok(path, IT_H5_APPEND, gzip);
    meta_ok(f, "t", s);
    ft *a = mkt(s, c, f, "t");
    a->once = 1;
    read_all(a, R, nr);
    int64_t ntiles = it_tensor_tiles(a->t);
    assert_true(ntiles > 0);
    assert_int_equal(it_tensor_dirty(a->t), ntiles);
    EXPECT_OK(it_tensor_flush(a->t));
    assert_int_equal(it_tensor_dirty(a->t), 0);
    EXPECT_OK(it_h5_close(f));
    EXPECT_OK(it_h5_close(f)); /* twice is fine */
    assert_int_equal(fsize(jpath_of(path)), -1); /* a clean close leaves no journal */
    ft_destroy(a);
    it_h5_unref(f);
    no_h5_objects();

    /* what any HDF5 reader sees */
    ft *probe = mkft_only(s, c);
    assert_int_equal(raw_check(path, "t", probe, json, NULL), ntiles);

    /* reopen: the regions come from the file, a bigger one computes only
     * the windows not read before */
    f = open_ok(path, k % 2 ? IT_H5_RDWR : IT_H5_APPEND, gzip);
    {
        char *js = NULL;
        int64_t ts[IT_MAX_DIMS], want[IT_MAX_DIMS];
        int n = -1, found = -1;
        EXPECT_OK(it_h5_read_meta(f, "t", &js, ts, &n, &found));
        assert_int_equal(found, 1);
        assert_string_equal(js, json);
        it_free(js);
        assert_int_equal(n, hs_tile_size(s, want));
        for (int i = 0; i < n; i++)
            assert_int_equal(ts[i], want[i]);
    }
    ft *b = mkt(s, c, f, "t");
    b->once = 1;
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    assert_int_equal(it_tensor_dirty(b->t), 0);
    long expect = ft_count_new(b, &big, R, nr);
    assert_true(expect > 0 || hs_ninf(s) == 0);
    read_ok(b, &big);
    if (it_tensor_record_bits(b->t, 1) != it_tensor_max_domain(b->t))
        /* a float sum's parts waiting for earlier windows are not stored:
         * those windows are computed again (only for the cells that lack them) */
        assert_true(b->windows_ok >= expect);
    else
        assert_int_equal(b->windows_ok, expect);
    EXPECT_OK(it_tensor_flush(b->t));
    EXPECT_OK(it_h5_flush(f));
    int64_t ntiles2 = it_tensor_tiles(b->t);
    ft_destroy(b);
    close_unref(f);
    assert_int_equal(raw_check(path, "t", probe, json, NULL), ntiles2);

    /* read-only: everything from the file */
    f = open_ok(path, IT_H5_READ, -1);
    ft *d = mkt(s, c, f, "t");
    read_ok(d, &big);
    read_all(d, R, nr);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
    ft_destroy(probe);
    close_unref(f);
    it_cache_unref(c);
    no_h5_objects();
}

static void test_roundtrip(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (size_t k = 0; k < sizeof RT / sizeof RT[0]; k++)
        roundtrip(&RT[k], (int)k);
    LEAK_END;
}

/* Several tensors in one file, tiles evicted and reloaded mid-read (stores
 * and loads of uncommitted rows), a strided read of stored data. */
static void test_shared_file_evictions(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("shared.h5");
    rm_store(path);
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, 2);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, 4);
    const hspec *sa = &RT[0], *sb = &RT[10], *sc = &RT[14];
    meta_ok(f, "a", sa);
    meta_ok(f, "b", sb);
    meta_ok(f, "c", sc);
    ft *a = mkt(sa, c, f, "a"), *b = mkt(sb, c, f, "b"), *d = mkt(sc, c, f, "c");
    a->once = b->once = d->once = 1; /* evicted tiles come back from the file */
    it_box Ra[3], Rb[3], Rc[3];
    int na = boxes_for(sa, Ra), nb = boxes_for(sb, Rb), nc = boxes_for(sc, Rc);
    it_box ha = hull(sa, Ra, na, 30), hb = hull(sb, Rb, nb, 20), hc = hull(sc, Rc, nc, 10);
    for (int rep = 0; rep < 2; rep++) {
        read_all(a, Ra, na);
        read_all(b, Rb, nb);
        read_all(d, Rc, nc);
        read_ok(a, &ha);
        read_ok(b, &hb);
        read_ok(d, &hc);
        if (rep == 0)
            EXPECT_OK(it_h5_flush(f)); /* commits what the evictions stored */
    }
    it_box st = ha;
    st.step[0] = 3;
    read_ok(a, &st);
    EXPECT_OK(it_tensor_flush(a->t));
    EXPECT_OK(it_tensor_flush(b->t));
    EXPECT_OK(it_tensor_flush(d->t));
    /* a destroyed tensor cuts its datasets back, the others stay usable */
    ft_destroy(b);
    read_ok(a, &ha);
    close_unref(f);
    ft *pa = mkft_only(sa, c), *pb = mkft_only(sb, c), *pc = mkft_only(sc, c);
    raw_check(path, "a", pa, NULL, NULL);
    raw_check(path, "b", pb, NULL, NULL);
    raw_check(path, "c", pc, NULL, NULL);
    f = open_ok(path, IT_H5_READ, -1);
    ft *a2 = mkt(sa, c, f, "a"), *b2 = mkt(sb, c, f, "b"), *c2 = mkt(sc, c, f, "c");
    read_ok(a2, &ha);
    read_ok(b2, &hb);
    read_ok(c2, &hc);
    assert_int_equal(a2->calls + b2->calls + c2->calls, 0);
    ft_destroy(a2);
    ft_destroy(b2);
    ft_destroy(c2);
    ft_destroy(pa);
    ft_destroy(pb);
    ft_destroy(pc);
    ft_destroy(a);
    ft_destroy(d);
    it_h5_unref(f);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 2. metadata                                                          */

static void meta_roundtrip(it_h5file *f, const char *id, const char *json, const int64_t *ts, int n)
{
    EXPECT_OK(it_h5_write_meta(f, id, json, ts, n));
    char *js = NULL;
    int64_t got[IT_MAX_DIMS];
    int gn = -1, found = -1;
    EXPECT_OK(it_h5_read_meta(f, id, &js, got, &gn, &found));
    assert_int_equal(found, 1);
    assert_non_null(js);
    assert_string_equal(js, json);
    it_free(js);
    assert_int_equal(gn, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(got[i], ts[i]);
}

static void expect_not_found(it_h5file *f, const char *id)
{
    char *js = (char *)1;
    int64_t got[IT_MAX_DIMS];
    int gn = -1, found = -1;
    EXPECT_OK(it_h5_read_meta(f, id, &js, got, &gn, &found));
    assert_int_equal(found, 0);
    assert_null(js);
    assert_int_equal(gn, 0);
}

static void test_meta(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("meta.h5");
    rm_store(path);
    it_h5file *f = open_ok(path, IT_H5_EXCL, 4);
    expect_not_found(f, "nothing");
    expect_not_found(f, "");
    const int64_t ts[IT_MAX_DIMS] = {512, 3, 1, 7, 9, 11, 13, 15};
    static const char *ids[] = {"a/b", "a%2Fb", "%", "", ".", "..", "/", "%2E", "a b\xc3\xa9", "x"};
    static const char *names[] = {"a%2Fb", "a%252Fb", "%25", "%", "%2E", "..", "%2F", "%252E",
                                  "a b\xc3\xa9", "x"};
    const int nid = (int)(sizeof ids / sizeof ids[0]);
    char json[64];
    for (int i = 0; i < nid; i++) {
        snprintf(json, sizeof json, "{\"k\": %d, \"s\": \"\\u00e9\xc3\xa9\"}", i);
        meta_roundtrip(f, ids[i], json, ts, i % 4);
    }
    /* each id kept its own record */
    for (int i = 0; i < nid; i++) {
        char *js = NULL;
        int64_t got[IT_MAX_DIMS];
        int gn, found;
        snprintf(json, sizeof json, "{\"k\": %d, \"s\": \"\\u00e9\xc3\xa9\"}", i);
        EXPECT_OK(it_h5_read_meta(f, ids[i], &js, got, &gn, &found));
        assert_int_equal(found, 1);
        assert_string_equal(js, json);
        assert_int_equal(gn, i % 4);
        it_free(js);
    }
    /* overwrite: another json, another tile_size length (0 and the maximum) */
    meta_roundtrip(f, "x", "{}", ts, IT_MAX_DIMS);
    meta_roundtrip(f, "x", "{\"again\": true}", ts, 0);
    meta_roundtrip(f, "x", "", ts, 1);
    /* a long JSON string (past HDF5's 64 KiB compact attribute limit) */
    size_t L = 200000;
    char *longjs = malloc(L + 1);
    assert_non_null(longjs);
    for (size_t i = 0; i < L; i++)
        longjs[i] = (char)('a' + i % 26);
    longjs[L] = '\0';
    meta_roundtrip(f, "long", longjs, ts, 2);
    close_unref(f);

    /* the layout: one group per id under the escaped name, attribute id */
    hid_t fid = raw_open(path, H5F_ACC_RDONLY);
    hid_t tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    assert_true(tg >= 0);
    for (int i = 0; i < nid; i++) {
        if (!raw_exists(tg, names[i]))
            fail_msg("id \"%s\" is not the group \"%s\"", ids[i], names[i]);
        hid_t g = H5Gopen2(tg, names[i], H5P_DEFAULT);
        char *v = raw_str_attr(g, "id");
        assert_string_equal(v, ids[i]);
        free(v);
        int64_t got[IT_MAX_DIMS];
        assert_int_equal(raw_ints_attr(g, "tile_size", got, IT_MAX_DIMS),
                         strcmp(ids[i], "x") == 0 ? 1 : i % 4);
        H5Gclose(g);
    }
    H5G_info_t gi;
    assert_true(H5Gget_info(tg, &gi) >= 0);
    assert_int_equal(gi.nlinks, nid + 1); /* + "long" */
    H5Gclose(tg);
    H5Fclose(fid);

    /* everything again after a reopen, read-only */
    f = open_ok(path, IT_H5_READ, -1);
    char *js = NULL;
    int64_t got[IT_MAX_DIMS];
    int gn, found;
    EXPECT_OK(it_h5_read_meta(f, "long", &js, got, &gn, &found));
    assert_int_equal(found, 1);
    assert_string_equal(js, longjs);
    it_free(js);
    EXPECT_OK(it_h5_read_meta(f, "x", &js, got, &gn, &found));
    assert_string_equal(js, "");
    it_free(js);
    assert_int_equal(gn, 1);
    expect_not_found(f, "a");
    expect_not_found(f, "a%2");
    close_unref(f);
    free(longjs);
    no_h5_objects();
    LEAK_END;
}

/* A file with no tensors group (foreign HDF5 data): read-only finds
 * nothing, a writable open adds the group and the format attribute. */
static void test_foreign_file(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("foreign.h5");
    rm_store(path);
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t g = H5Gcreate2(fid, "other", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(g);
    H5Fclose(fid);
    it_h5file *f = open_ok(path, IT_H5_READ, -1);
    expect_not_found(f, "t");
    it_cache *c = mkcache(-1, -1);
    ft *a = mkt(&RT[0], c, f, "t"); /* attaching needs no metadata on disk... */
    it_box b = box1(0, 10);
    assert_int_equal(read_check(a, &b, 0), IT_EIO); /* ...but its tiles need the group */
    assert_int_equal(a->calls, 0);
    ft_destroy(a);
    close_unref(f);
    f = open_ok(path, IT_H5_APPEND, -1);
    expect_not_found(f, "t");
    meta_ok(f, "t", &RT[0]);
    close_unref(f);
    fid = raw_open(path, H5F_ACC_RDONLY);
    int64_t v = 0;
    assert_int_equal(raw_ints_attr(fid, "infinite_tensor_format", &v, 1), 1);
    assert_int_equal(v, IT_H5_FORMAT);
    assert_true(raw_exists(fid, "other"));
    assert_true(raw_exists(fid, "tensors"));
    H5Fclose(fid);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 3. modes                                                             */

static void test_modes(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("modes.h5");
    rm_store(path);
    it_h5file *f = (it_h5file *)1;
    /* a missing file */
    EXPECT_ERR(it_h5_open(path, IT_H5_READ, -1, &f), IT_EIO);
    assert_null(f);
    assert_true(strncmp(it_error_message(), "no such file", 12) == 0);
    EXPECT_ERR(it_h5_open(path, IT_H5_RDWR, -1, &f), IT_EIO);
    assert_true(strncmp(it_error_message(), "no such file", 12) == 0);
    assert_int_equal(fsize(path), -1); /* and nothing was created */
    /* bad arguments */
    EXPECT_ERR(it_h5_open(path, 7, -1, &f), IT_EINVAL);
    EXPECT_ERR(it_h5_open(path, -1, -1, &f), IT_EINVAL);
    EXPECT_ERR(it_h5_open(path, IT_H5_APPEND, 10, &f), IT_EINVAL);
    EXPECT_ERR(it_h5_open(path, IT_H5_APPEND, -2, &f), IT_EINVAL);
    assert_null(f);
    assert_int_equal(fsize(path), -1);
    /* a directory where the file should be */
    EXPECT_FAILS(it_h5_open(tmpdir, IT_H5_READ, -1, &f));
    /* not an HDF5 file */
    const char *junk = tpath("junk.h5");
    write_bytes(junk, "this is not an HDF5 file, not at all, no superblock here\n");
    EXPECT_ERR(it_h5_open(junk, IT_H5_READ, -1, &f), IT_EIO);
    EXPECT_ERR(it_h5_open(junk, IT_H5_APPEND, -1, &f), IT_EIO);
    assert_true(strstr(it_error_message(), "junk.h5") != NULL);
    EXPECT_ERR(it_h5_open(junk, IT_H5_EXCL, -1, &f), IT_EIO);
    assert_true(strstr(it_error_message(), "exists") != NULL);
    /* TRUNC replaces it with an empty store */
    f = open_ok(junk, IT_H5_TRUNC, -1);
    expect_not_found(f, "t");
    close_unref(f);
    no_h5_objects();

    /* EXCL creates; then refuses */
    it_cache *c = mkcache(-1, -1);
    const hspec *s = &RT[0];
    it_box R[3];
    int nr = boxes_for(s, R);
    it_box big = hull(s, R, nr, 20);
    f = open_ok(path, IT_H5_EXCL, 2);
    meta_ok(f, "t", s);
    ft *a = mkt(s, c, f, "t");
    read_all(a, R, nr);
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);
    close_unref(f);
    f = (it_h5file *)1;
    EXPECT_ERR(it_h5_open(path, IT_H5_EXCL, -1, &f), IT_EIO);
    assert_null(f);

    /* READ: attach works, stored data reads, a region needing windows not
     * stored fails with IT_ESTATE and computes nothing; no writes */
    f = open_ok(path, IT_H5_READ, 4);
    assert_int_equal(it_h5_readonly(f), 1);
    a = mkt(s, c, f, "t");
    read_all(a, R, nr);
    assert_int_equal(a->calls, 0);
    assert_int_equal(read_check(a, &big, 0), IT_ESTATE);
    assert_int_equal(a->calls, 0);
    char json[200];
    int64_t ts[1] = {12};
    hs_json(s, json, sizeof json);
    EXPECT_ERR(it_h5_write_meta(f, "t", json, ts, 1), IT_ESTATE);
    assert_true(strstr(it_error_message(), "read-only") != NULL);
    EXPECT_ERR(it_h5_write_meta(f, "new", json, ts, 1), IT_ESTATE);
    EXPECT_ERR(it_h5_delete(f, "t"), IT_ESTATE);
    EXPECT_ERR(it_h5_delete(f, "absent"), IT_ESTATE);
    EXPECT_OK(it_h5_flush(f)); /* nothing to commit */
    read_all(a, R, nr);
    assert_int_equal(it_tensor_dirty(a->t), 0);
    /* a second read-only open of the same file at the same time */
    it_h5file *g = open_ok(path, IT_H5_READ, -1);
    ft *a2 = mkt(s, c, g, "t");
    read_all(a2, R, nr);
    assert_int_equal(a2->calls, 0);
    ft_destroy(a2);
    close_unref(g);
    /* close and reopen a read-only store: still read-only */
    EXPECT_OK(it_h5_close(f));
    EXPECT_OK(it_h5_reopen(f));
    assert_int_equal(it_h5_readonly(f), 1);
    EXPECT_ERR(it_h5_write_meta(f, "t", json, ts, 1), IT_ESTATE);
    it_tensor_clear(a->t);
    read_all(a, R, nr);
    assert_int_equal(a->calls, 0);
    ft_destroy(a);
    close_unref(f);
    assert_true(fsize(path) > 0);

    /* TRUNC empties the store */
    f = open_ok(path, IT_H5_TRUNC, -1);
    expect_not_found(f, "t");
    close_unref(f);
    f = open_ok(path, IT_H5_READ, -1);
    expect_not_found(f, "t");
    close_unref(f);
    /* a store opened with TRUNC reopens without truncating */
    f = open_ok(path, IT_H5_TRUNC, -1);
    meta_ok(f, "t", s);
    EXPECT_OK(it_h5_close(f));
    EXPECT_OK(it_h5_reopen(f));
    char *js = NULL;
    int64_t got[IT_MAX_DIMS];
    int gn, found;
    EXPECT_OK(it_h5_read_meta(f, "t", &js, got, &gn, &found));
    assert_int_equal(found, 1);
    it_free(js);
    close_unref(f);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 4. close / reopen                                                    */

static void test_close_reopen(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("reopen.h5");
    rm_store(path);
    const hspec *s = &RT[10];
    it_box R[3];
    int nr = boxes_for(s, R);
    it_box big = hull(s, R, nr, 12);
    it_cache *c = mkcache(-1, -1);
    it_h5file *f = open_ok(path, IT_H5_APPEND, 4);
    meta_ok(f, "t", s);
    ft *a = mkt(s, c, f, "t");
    a->once = 1;
    read_ok(a, &R[0]);
    EXPECT_OK(it_tensor_flush(a->t));
    read_ok(a, &R[1]); /* dirty, not flushed */
    int64_t dirty = it_tensor_dirty(a->t);
    assert_true(dirty > 0);
    EXPECT_OK(it_h5_close(f));
    assert_int_equal(it_h5_is_open(f), 0);
    /* every operation that needs the file fails with IT_ESTATE */
    EXPECT_ERR(it_tensor_flush(a->t), IT_ESTATE);
    assert_true(strstr(it_error_message(), "closed") != NULL);
    assert_int_equal(it_tensor_dirty(a->t), dirty); /* kept for later */
    EXPECT_ERR(it_h5_flush(f), IT_ESTATE);
    assert_true(strstr(it_error_message(), "closed") != NULL);
    char *js = (char *)1;
    int64_t got[IT_MAX_DIMS];
    int gn, found;
    EXPECT_ERR(it_h5_read_meta(f, "t", &js, got, &gn, &found), IT_ESTATE);
    assert_true(strstr(it_error_message(), "closed") != NULL);
    assert_null(js);
    assert_int_equal(found, 0);
    EXPECT_ERR(it_h5_write_meta(f, "u", "{}", got, 0), IT_ESTATE);
    EXPECT_ERR(it_h5_delete(f, "t"), IT_ESTATE);
    ft *b = mkft_only(s, c);
    EXPECT_ERR(it_h5_attach(f, "t", b->t), IT_ESTATE);
    ft_destroy(b);
    /* cached tiles still read; a load fails */
    read_ok(a, &R[0]);
    it_box other = R[2]; /* tiles not cached: loads */
    other.start[1] = 100;
    other.stop[1] = 110;
    long calls = a->calls;
    assert_int_equal(read_check(a, &other, 0), IT_ESTATE);
    assert_true(strstr(a->last_msg, "closed") != NULL);
    assert_int_equal(a->calls, calls);
    EXPECT_OK(it_h5_close(f)); /* closing a closed store is a no-op */
    /* a tensor destroyed while its store is closed */
    ft *e = mkft_only(s, c);
    it_h5file *g = open_ok(tpath("reopen2.h5"), IT_H5_TRUNC, -1);
    meta_ok(g, "t", s);
    EXPECT_OK(it_h5_attach(g, "t", e->t));
    read_ok(e, &R[0]);
    EXPECT_OK(it_tensor_flush(e->t));
    EXPECT_OK(it_h5_close(g));
    ft_destroy(e);
    it_h5_unref(g);

    /* reopen: the attached tensor works again, dirty tiles included */
    EXPECT_OK(it_h5_reopen(f));
    EXPECT_OK(it_h5_reopen(f)); /* open already: a no-op */
    assert_int_equal(it_h5_is_open(f), 1);
    assert_int_equal(it_h5_readonly(f), 0);
    EXPECT_OK(it_tensor_flush(a->t));
    assert_int_equal(it_tensor_dirty(a->t), 0);
    read_ok(a, &other);
    read_ok(a, &big);
    EXPECT_OK(it_tensor_flush(a->t));
    /* loads after a reopen (the slot table is read again) */
    EXPECT_OK(it_h5_close(f));
    EXPECT_OK(it_h5_reopen(f));
    it_tensor_clear(a->t);
    a->once = 0;
    calls = a->calls;
    read_ok(a, &big);
    assert_int_equal(a->calls, calls);
    /* another round with new tiles in between */
    it_box far = big;
    far.start[1] += 100;
    far.stop[1] += 100;
    read_ok(a, &far);
    EXPECT_OK(it_tensor_flush(a->t));
    EXPECT_OK(it_h5_close(f));
    EXPECT_OK(it_h5_reopen(f));
    it_tensor_clear(a->t);
    calls = a->calls;
    read_ok(a, &far);
    read_ok(a, &big);
    assert_int_equal(a->calls, calls);
    int64_t nt = 0;
    {
        /* the store keeps a reference: the tensor outlives the caller's */
        it_h5_ref(f);
        it_h5_unref(f);
        nt = it_tensor_tiles(a->t);
    }
    close_unref(f); /* the tensor still holds the store */
    ft *probe = mkft_only(s, c);
    assert_true(raw_check(path, "t", probe, NULL, NULL) >= nt);
    ft_destroy(probe);
    ft_destroy(a); /* the last reference: nothing to close */
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 5. many tiles                                                        */

/* The tiles of a 1-d tensor that the windows meeting the boxes touch. */
static void touched_tiles_1d(ft *f, const it_box *b, int n, wtab *out)
{
    int64_t T = f->spec.tile_shape[0];
    for (int i = 0; i < n; i++) {
        int64_t lo[1], hi[1];
        if (!ref_domain(&f->spec.window, f->spec.shape, b[i].start, b[i].stop, lo, hi))
            continue;
        for (int64_t w = lo[0]; w <= hi[0]; w++) {
            int64_t s[1], e[1];
            ref_bounds(&f->spec.window, &w, s, e);
            for (int64_t k = ref_fdiv(s[0], T); k <= ref_fdiv(e[0] - 1, T); k++)
                ++*wtab_slot(out, &k, 1);
        }
    }
}

/* Every key of a is in b and the other way round. */
static void same_keys(wtab *a, wtab *b)
{
    assert_int_equal(a->n, b->n);
    size_t stride = (size_t)(a->nc ? a->nc : 1);
    for (size_t i = 0; i < a->cap; i++)
        if (a->used[i] && !wtab_slot(b, a->keys + i * stride, 0))
            fail_msg("tile (%s) is missing", tu_fmt_coords(a->nc, a->keys + i * stride).s);
}

static void test_many_tiles(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("many.h5"), *snap = tpath("many-snap.h5");
    rm_store(path);
    const hspec s = {.ndim = 1, .shape = {INF}, .dtype = IT_I64, .size = {3}, .stride = {2},
                     .offset = {0}, .tile = {4}, .combine = IT_COMBINE_SUM, .seed = 21,
                     .batch = 16};
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, 48); /* evictions store tiles in the middle of the reads */
    it_h5file *f = open_ok(path, IT_H5_TRUNC, -1);
    meta_ok(f, "t", &s);
    ft *a = mkt(&s, c, f, "t");
    a->once = 1;
    enum { NP = 34, NN = 10, PIECE = 144 }; /* 36 tiles a piece: 1224 + 360 tiles */
    it_box P[NP], N[NN];
    for (int i = 0; i < NP; i++)
        P[i] = box1(i * PIECE, (i + 1) * PIECE);
    for (int i = 0; i < NN; i++)
        N[i] = box1(-(i + 1) * PIECE, -i * PIECE);
    read_all(a, P, NP);
    EXPECT_OK(it_tensor_flush(a->t));
    EXPECT_OK(it_h5_flush(f));
    wtab want, got;
    wtab_init(&want, 1);
    wtab_init(&got, 1);
    touched_tiles_1d(a, P, NP, &want);
    assert_true(want.n > 1200);
    /* the committed file (a copy, as a crash would leave it) has exactly
     * one row per tile in every dataset */
    snapshot(path, snap);
    ft *probe = mkft_only(&s, c);
    assert_int_equal(raw_check(snap, "t", probe, NULL, &got), (int64_t)want.n);
    same_keys(&want, &got);
    /* negative tiles: some stored by evictions only, then a commit */
    read_all(a, N, NN);
    EXPECT_OK(it_h5_flush(f));
    snapshot(path, snap);
    int64_t mid = raw_check(snap, "t", probe, NULL, NULL);
    assert_true(mid > (int64_t)want.n);
    /* and the whole lot */
    EXPECT_OK(it_tensor_flush(a->t));
    touched_tiles_1d(a, N, NN, &want);
    close_unref(f);
    wtab_free(&got);
    wtab_init(&got, 1);
    assert_int_equal(raw_check(path, "t", probe, NULL, &got), (int64_t)want.n);
    assert_true(mid <= (int64_t)want.n);
    same_keys(&want, &got);
    ft_destroy(a);
    /* everything comes back, in any order */
    it_cache_set_tile_limit(c, -1);
    f = open_ok(path, IT_H5_READ, -1);
    ft *b = mkt(&s, c, f, "t");
    for (int i = NN - 1; i >= 0; i -= 3)
        read_ok(b, &N[i]);
    read_ok(b, &(it_box){.ndim = 1, .start = {-NN * PIECE}, .stop = {NP * PIECE}, .step = {1}});
    assert_int_equal(b->calls, 0);
    ft_destroy(b);
    close_unref(f);
    /* more tiles after a reopen (the slot table read back and grown) */
    f = open_ok(path, IT_H5_APPEND, -1);
    b = mkt(&s, c, f, "t");
    b->once = 1;
    it_box more = box1(NP * PIECE - 10, NP * PIECE + 400);
    read_ok(b, &more);
    assert_int_equal(b->windows_ok, ft_count_new(b, &more, P, NP));
    EXPECT_OK(it_tensor_flush(b->t));
    touched_tiles_1d(b, &more, 1, &want);
    ft_destroy(b);
    close_unref(f);
    assert_int_equal(raw_check(path, "t", probe, NULL, NULL), (int64_t)want.n);
    ft_destroy(probe);
    wtab_free(&want);
    wtab_free(&got);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 6. delete                                                            */

static void test_delete(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("delete.h5");
    rm_store(path);
    const hspec *s = &RT[0];
    it_box R[3];
    int nr = boxes_for(s, R);
    it_cache *c = mkcache(-1, -1);
    it_h5file *f = open_ok(path, IT_H5_APPEND, 4);
    meta_ok(f, "a/b", s);
    meta_ok(f, "keep", s);
    ft *a = mkt(s, c, f, "a/b"), *k = mkt(s, c, f, "keep");
    read_all(a, R, 2);
    read_all(k, R, 2);
    EXPECT_OK(it_tensor_flush(a->t));
    EXPECT_OK(it_tensor_flush(k->t));
    EXPECT_OK(it_h5_flush(f));
    read_ok(a, &R[2]); /* a has dirty tiles */
    assert_true(it_tensor_dirty(a->t) > 0);
    EXPECT_OK(it_h5_delete(f, "a/b"));
    expect_not_found(f, "a/b");
    EXPECT_OK(it_h5_delete(f, "a/b")); /* absent: nothing to do */
    EXPECT_OK(it_h5_delete(f, "never"));
    /* the tensor still attached: cached tiles read, file I/O fails cleanly
     * (it is marked deleted, so it cannot recreate the group either) */
    read_all(a, R, nr);
    EXPECT_ERR(it_tensor_flush(a->t), IT_ESTATE);
    assert_true(it_tensor_dirty(a->t) > 0);
    it_tensor_clear(a->t);
    ft_forget(a);
    assert_int_equal(read_check(a, &R[0], 0), IT_ESTATE);
    /* the other tensor is untouched */
    it_tensor_clear(k->t);
    long calls = k->calls;
    read_all(k, R, 2);
    assert_int_equal(k->calls, calls);
    read_ok(k, &R[2]);
    EXPECT_OK(it_tensor_flush(k->t));
    EXPECT_OK(it_h5_close(f));
    hid_t fid = raw_open(path, H5F_ACC_RDONLY);
    hid_t tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    assert_false(raw_exists(tg, "a%2Fb"));
    assert_true(raw_exists(tg, "keep"));
    H5Gclose(tg);
    H5Fclose(fid);

    /* the id again: a new group, filled by a new tensor (the old one stays
     * deleted) */
    EXPECT_OK(it_h5_reopen(f));
    expect_not_found(f, "a/b");
    assert_int_equal(read_check(a, &R[0], 0), IT_ESTATE);
    meta_ok(f, "a/b", s);
    ft *a2 = mkt(s, c, f, "a/b");
    a2->once = 1;
    read_all(a2, R, nr);
    EXPECT_OK(it_tensor_flush(a2->t));
    EXPECT_OK(it_h5_close(f));
    ft *probe = mkft_only(s, c);
    assert_int_equal(raw_check(path, "a%2Fb", probe, NULL, NULL), it_tensor_tiles(a2->t));
    raw_check(path, "keep", probe, NULL, NULL);
    /* delete while closed fails; after a reopen it works, and a delete of
     * a tensor whose datasets hold spare rows leaves nothing behind */
    EXPECT_ERR(it_h5_delete(f, "a/b"), IT_ESTATE);
    EXPECT_OK(it_h5_reopen(f));
    it_box far = box1(500, 700);
    read_ok(k, &far);
    EXPECT_OK(it_tensor_flush(k->t)); /* rows grown by doubling, not cut back yet */
    EXPECT_OK(it_h5_delete(f, "keep"));
    EXPECT_OK(it_tensor_flush(k->t)); /* nothing dirty */
    EXPECT_OK(it_h5_flush(f));
    ft_destroy(k);
    ft_destroy(a);
    ft_destroy(a2);
    close_unref(f);
    fid = raw_open(path, H5F_ACC_RDONLY);
    tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    assert_false(raw_exists(tg, "keep"));
    assert_true(raw_exists(tg, "a%2Fb"));
    H5Gclose(tg);
    H5Fclose(fid);
    f = open_ok(path, IT_H5_READ, -1);
    ft *b = mkt(s, c, f, "a/b");
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    ft_destroy(b);
    close_unref(f);
    ft_destroy(probe);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 7. damaged files                                                     */

static hid_t raw_dataset(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims)
{
    hsize_t max[IT_MAX_DIMS + 1], ch[IT_MAX_DIMS + 1];
    for (int i = 0; i < rank; i++) {
        max[i] = i == 0 ? H5S_UNLIMITED : dims[i];
        ch[i] = i == 0 ? 1 : (dims[i] ? dims[i] : 1);
    }
    hid_t sp = H5Screate_simple(rank, dims, max), pl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(pl, rank, ch) >= 0);
    hid_t d = H5Dcreate2(g, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Pclose(pl);
    H5Sclose(sp);
    return d;
}

/* Build tensors/<name> by hand: the three datasets with these dims (rank
 * of tiles td_rank; no index when id_rows < 0; no bits when bd_rows < 0). */
static void raw_tensor(const char *path, const char *name, int td_rank, const hsize_t *td,
                       hsize_t bd_rows, hsize_t bd_cols, long id_rows)
{
    hid_t fid = raw_open(path, H5F_ACC_RDWR);
    hid_t tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    assert_true(tg >= 0);
    hid_t g = H5Gopen2(tg, name, H5P_DEFAULT);
    assert_true(g >= 0);
    H5Dclose(raw_dataset(g, "tiles", H5T_STD_I64LE, td_rank, td));
    if ((long)bd_rows >= 0) {
        hsize_t bd[2] = {bd_rows, bd_cols};
        H5Dclose(raw_dataset(g, "bits", H5T_STD_U8LE, 2, bd));
    }
    if (id_rows >= 0) {
        hsize_t idd[2] = {(hsize_t)id_rows, 1};
        H5Dclose(raw_dataset(g, "index", H5T_STD_I64LE, 2, idd));
    }
    H5Gclose(g);
    H5Gclose(tg);
    assert_true(H5Fclose(fid) >= 0);
}

static void expect_damaged(it_h5file *f, const hspec *s, it_cache *c, const char *id,
                           const char *words)
{
    ft *a = mkt(s, c, f, id);
    it_box b = box1(0, 30);
    for (int rep = 0; rep < 2; rep++) { /* and again: the handles were closed */
        assert_int_equal(read_check(a, &b, 0), IT_EIO);
        if (!strstr(a->last_msg, words))
            fail_msg("tensor %s: the error says \"%s\", expected \"%s\" in it", id, a->last_msg,
                     words);
    }
    assert_int_equal(a->calls, 0);
    ft_destroy(a);
}

static void test_damaged(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("damaged.h5");
    rm_store(path);
    const hspec *s = &RT[0]; /* 1-d int64, tile 12 */
    it_cache *c = mkcache(-1, -1);
    it_h5file *f = open_ok(path, IT_H5_APPEND, -1);
    static const char *ids[] = {"good", "shape", "rows", "noindex", "rank", "nobits", "bitcols",
                                "dup", "nometa", "old", "badmeta", "badts"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        meta_ok(f, ids[i], s);
    ft *g = mkt(s, c, f, "good"), *d = mkt(s, c, f, "dup");
    it_box R = box1(-20, 40);
    read_ok(g, &R);
    read_ok(d, &R);
    EXPECT_OK(it_tensor_flush(g->t));
    EXPECT_OK(it_tensor_flush(d->t));
    int64_t rb = IT_MAX((it_tensor_max_domain(g->t) + 7) / 8, 1);
    ft_destroy(d);
    close_unref(f);
    ft_destroy(g);

    /* by hand */
    raw_tensor(path, "shape", 2, (hsize_t[]){0, 5}, 0, (hsize_t)rb, 0);
    raw_tensor(path, "rows", 2, (hsize_t[]){2, 12}, 2, (hsize_t)rb, 3);
    raw_tensor(path, "noindex", 2, (hsize_t[]){1, 12}, 1, (hsize_t)rb, -1);
    raw_tensor(path, "rank", 1, (hsize_t[]){1}, 1, (hsize_t)rb, 1);
    raw_tensor(path, "nobits", 2, (hsize_t[]){1, 12}, (hsize_t)-1, 0, 1);
    raw_tensor(path, "bitcols", 2, (hsize_t[]){1, 12}, 1, (hsize_t)rb + 1, 1);
    hid_t fid = raw_open(path, H5F_ACC_RDWR);
    hid_t tg = H5Gopen2(fid, "tensors", H5P_DEFAULT);
    {
        /* a tile listed twice */
        hid_t di = H5Dopen2(tg, "dup/index", H5P_DEFAULT);
        hsize_t dims[2];
        assert_int_equal(raw_dims(di, dims), 2);
        assert_true(dims[0] >= 3);
        int64_t *ix = malloc(sizeof(int64_t) * dims[0]);
        assert_true(H5Dread(di, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ix) >= 0);
        ix[2] = ix[0];
        assert_true(H5Dwrite(di, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ix) >= 0);
        free(ix);
        H5Dclose(di);
        /* no meta; a 0.3 tensor; meta not a string; tile_size not ints */
        hid_t gm = H5Gopen2(tg, "nometa", H5P_DEFAULT);
        assert_true(H5Adelete(gm, "meta") >= 0);
        H5Gclose(gm);
        gm = H5Gopen2(tg, "old", H5P_DEFAULT);
        assert_true(H5Adelete(gm, "meta") >= 0);
        assert_true(H5Adelete(gm, "tile_size") >= 0);
        H5Gclose(H5Gcreate2(gm, "metadata", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        H5Gclose(gm);
        gm = H5Gopen2(tg, "badmeta", H5P_DEFAULT);
        raw_write_i64_attr(gm, "meta", 5);
        H5Gclose(gm);
        gm = H5Gopen2(tg, "badts", H5P_DEFAULT);
        assert_true(H5Adelete(gm, "tile_size") >= 0);
        hsize_t n17 = IT_MAX_DIMS + 1;
        hid_t sp = H5Screate_simple(1, &n17, NULL);
        hid_t at = H5Acreate2(gm, "tile_size", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        int64_t vals[IT_MAX_DIMS + 1] = {0};
        assert_true(H5Awrite(at, H5T_NATIVE_INT64, vals) >= 0);
        H5Aclose(at);
        H5Sclose(sp);
        H5Gclose(gm);
        /* a bare group */
        H5Gclose(H5Gcreate2(tg, "bare", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    }
    H5Gclose(tg);
    H5Fclose(fid);

    for (int mode = 0; mode < 2; mode++) {
        f = open_ok(path, mode ? IT_H5_APPEND : IT_H5_READ, -1);
        expect_damaged(f, s, c, "shape", "do not match");
        expect_damaged(f, s, c, "rows", "do not match");
        expect_damaged(f, s, c, "noindex", "HDF5 failed opening");
        expect_damaged(f, s, c, "rank", "do not match");
        expect_damaged(f, s, c, "nobits", "HDF5 failed opening");
        expect_damaged(f, s, c, "bitcols", "do not match");
        expect_damaged(f, s, c, "dup", "twice");
        /* another tile size over good data */
        hspec s8 = *s;
        s8.tile[0] = 8;
        expect_damaged(f, &s8, c, "good", "do not match");
        char *js = (char *)1;
        int64_t ts[IT_MAX_DIMS];
        int n, found;
        EXPECT_ERR(it_h5_read_meta(f, "nometa", &js, ts, &n, &found), IT_EINVAL);
        assert_true(strstr(it_error_message(), "no metadata") != NULL);
        assert_null(js);
        assert_int_equal(found, 0);
        EXPECT_ERR(it_h5_read_meta(f, "bare", &js, ts, &n, &found), IT_EINVAL);
        EXPECT_ERR(it_h5_read_meta(f, "old", &js, ts, &n, &found), IT_EINVAL);
        assert_true(strstr(it_error_message(), "0.3") != NULL);
        EXPECT_ERR(it_h5_read_meta(f, "badmeta", &js, ts, &n, &found), IT_EINVAL);
        assert_null(js);
        EXPECT_ERR(it_h5_read_meta(f, "badts", &js, ts, &n, &found), IT_EINVAL);
        assert_null(js);
        assert_int_equal(found, 0);
        /* the good tensor still reads, from the file alone */
        ft *g2 = mkt(s, c, f, "good");
        read_ok(g2, &R);
        assert_int_equal(g2->calls, 0);
        ft_destroy(g2);
        if (mode) { /* deleting the damaged tensors works */
            EXPECT_OK(it_h5_delete(f, "dup"));
            EXPECT_OK(it_h5_delete(f, "old"));
            expect_not_found(f, "dup");
        }
        close_unref(f);
        no_h5_objects();
    }

    /* the format version */
    const int64_t versions[] = {IT_H5_FORMAT + 1, 0, -1, 99};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        fid = raw_open(path, H5F_ACC_RDWR);
        raw_write_i64_attr(fid, "infinite_tensor_format", versions[i]);
        H5Fclose(fid);
        for (int mode = 0; mode < 3; mode++) {
            f = (it_h5file *)1;
            EXPECT_ERR(it_h5_open(path, mode == 0 ? IT_H5_READ : mode == 1 ? IT_H5_RDWR : IT_H5_APPEND,
                                  -1, &f),
                       IT_EINVAL);
            assert_null(f);
            char want[40];
            snprintf(want, sizeof want, "format %lld", (long long)versions[i]);
            if (!strstr(it_error_message(), want))
                fail_msg("\"%s\" does not say \"%s\"", it_error_message(), want);
            assert_true(strstr(it_error_message(), "format 2") != NULL);
            no_h5_objects();
        }
    }
    /* not an int */
    fid = raw_open(path, H5F_ACC_RDWR);
    assert_true(H5Adelete(fid, "infinite_tensor_format") >= 0);
    {
        hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
        H5Tset_size(t, 4);
        hid_t at = H5Acreate2(fid, "infinite_tensor_format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(at, t, "one") >= 0);
        H5Aclose(at);
        H5Sclose(sp);
        H5Tclose(t);
    }
    H5Fclose(fid);
    EXPECT_ERR(it_h5_open(path, IT_H5_READ, -1, &f), IT_EINVAL);
    /* back to 1: fine again */
    fid = raw_open(path, H5F_ACC_RDWR);
    raw_write_i64_attr(fid, "infinite_tensor_format", 1);
    H5Fclose(fid);
    f = open_ok(path, IT_H5_READ, -1);
    close_unref(f);

    /* a tensor without infinite dims whose tiles have two rows */
    const hspec *s0 = &RT[sizeof RT / sizeof RT[0] - 1];
    f = open_ok(path, IT_H5_APPEND, -1);
    meta_ok(f, "fin", s0);
    ft *p0 = mkt(s0, c, f, "fin");
    int64_t rb0 = IT_MAX((it_tensor_max_domain(p0->t) + 7) / 8, 1);
    ft_destroy(p0);
    close_unref(f);
    raw_tensor(path, "fin", 3, (hsize_t[]){2, 6, 5}, 2, (hsize_t)rb0, -1);
    f = open_ok(path, IT_H5_APPEND, -1);
    p0 = mkt(s0, c, f, "fin");
    it_box all = mkbox(2, (int64_t[]){0, 0}, (int64_t[]){6, 5}, NULL);
    assert_int_equal(read_check(p0, &all, 0), IT_EIO);
    assert_true(strstr(p0->last_msg, "do not match") != NULL);
    ft_destroy(p0);
    close_unref(f);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 8. crashes                                                           */

static const hspec CS = {.ndim = 1, .shape = {INF}, .dtype = IT_I64, .size = {5}, .stride = {3},
                         .offset = {-1}, .tile = {8}, .combine = IT_COMBINE_SUM, .seed = 31,
                         .batch = 2};
#define CRASH_LO (-150)
#define CRASH_HI 150
#define CRASH_SHIFT 100 /* each run's range moves on, overlapping the last one */

static pid_t fork_child(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        assert_int_equal(errno, EINTR);
    return st;
}

/* A child leaves from inside its n-th commit at this point of the driver. */
static const char *crash_point;
static long crash_countdown;

static void crash_hook(const char *point)
{
    if (crash_point && strcmp(point, crash_point) == 0 && --crash_countdown == 0)
        _exit(0);
}

/* The child: random reads (checked), tensor and store flushes, evictions;
 * leaves with _exit(0) at read number stop_at (never when < 0: killed or
 * left from the commit hook). */
static void child_run(const char *path, uint64_t seed, int ready_fd, long stop_at, int64_t shift)
{
    it_h5file *f = NULL;
    it_cache *c = NULL;
    if (it_h5_open(path, IT_H5_APPEND, 1, &f) || it_cache_create(-1, -1, &c))
        _exit(CHILD_FAIL);
    it_cache_set_tile_limit(c, 6);
    ft *a = ft_new(CS.ndim, CS.shape, CS.dtype);
    ft_set_window(a, CS.size, CS.stride, CS.offset, NULL);
    a->spec.tile_shape[0] = CS.tile[0];
    a->spec.batch_size = CS.batch;
    a->seed = CS.seed;
    if (ft_create(a, c) || it_h5_attach(f, "t", a->t))
        _exit(CHILD_FAIL);
    char one = 1;
    if (ready_fd >= 0 && write(ready_fd, &one, 1) != 1)
        _exit(CHILD_FAIL);
    if (crash_point)
        it_h5j_set_test_hook(crash_hook);
    rng_t r = {seed};
    for (long i = 0; i < 2000; i++) {
        if (i == stop_at)
            _exit(0);
        int64_t s0 = shift + rng_range(&r, CRASH_LO, CRASH_HI - 2);
        int64_t s1 = IT_MIN(shift + CRASH_HI, s0 + rng_range(&r, 1, 40));
        it_box b = box1(s0, s1);
        it_buffer *o = NULL;
        if (it_tensor_read(a->t, &b, 0, &o))
            _exit(CHILD_FAIL);
        tu_buffer_flip(o);
        double ref[64];
        ft_reference(a, &b, ref);
        for (int64_t j = 0; j < s1 - s0; j++)
            if (((int64_t *)o->data)[j] != (int64_t)ref[j])
                _exit(CHILD_FAIL + 1);
        it_buffer_free(o);
        if (rng_chance(&r, 3) && (it_tensor_flush(a->t) || it_h5_flush(f)))
            _exit(CHILD_FAIL);
    }
    _exit(0);
}

static void test_crash(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("crash.h5");
    rm_store(path);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, 1);
    meta_ok(f, "t", &CS);
    close_unref(f);
    it_cache *c = mkcache(-1, -1);
    const char *env = getenv("IT_H5S_CRASHES");
    int runs = env && atoi(env) > 0 ? atoi(env) : 16;
    rng_t rng = {4242};
    long total = -1, min_computed = -1, killed = 0, journals = 0;
    static const char *points[] = {"commit-start", "journal-written", "page-applied", "applied"};
    for (int run = 0; run < runs; run++) {
        /* 0: _exit between reads; 1, 3: SIGKILL; 2: _exit inside a commit */
        int kill_mode = run % 2, hook_mode = run % 4 == 2;
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        long stop_at = kill_mode || hook_mode ? -1 : (long)rng_range(&rng, 1, 30);
        const char *point = points[(run / 4) % 4];
        long countdown = (long)rng_range(&rng, 1, 3);
        pid_t pid = fork_child();
        if (pid == 0) {
            close(pfd[0]);
            if (hook_mode) { /* the hook goes in once the store is open */
                crash_point = point;
                crash_countdown = countdown;
            }
            child_run(path, 1000 + (uint64_t)run, pfd[1], stop_at, (int64_t)run * CRASH_SHIFT);
        }
        close(pfd[1]);
        char ch;
        if (read(pfd[0], &ch, 1) != 1) {
            close(pfd[0]);
            fail_msg("run %d: the child failed before starting (status 0x%x)", run, wait_child(pid));
        }
        close(pfd[0]);
        if (kill_mode) {
            struct timespec ts = {0, (long)rng_range(&rng, 0, 40) * 1000000L};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
        }
        int st = wait_child(pid);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && kill_mode)
            killed++;
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("run %d: the child ended with status 0x%x", run, st);
        journals += fsize(jpath_of(path)) > 0;

        /* read-only first (a pending journal is served from memory) */
        f = open_ok(path, IT_H5_READ, -1);
        char *js = NULL;
        int64_t ts[IT_MAX_DIMS];
        int n, found;
        EXPECT_OK(it_h5_read_meta(f, "t", &js, ts, &n, &found));
        assert_int_equal(found, 1);
        it_free(js);
        close_unref(f);
        /* then read-write: every value right, whatever was committed */
        f = open_ok(path, IT_H5_APPEND, 1);
        ft *a = mkt(&CS, c, f, "t");
        a->once = 1;
        int64_t shift = (int64_t)run * CRASH_SHIFT;
        it_box mine = box1(shift + CRASH_LO - 10, shift + CRASH_HI + 10);
        it_box all = box1(CRASH_LO - 10, shift + CRASH_HI + 10);
        read_ok(a, &mine); /* what this child read */
        long nw = ft_count_new(a, &mine, NULL, 0);
        if (min_computed < 0 || a->windows_ok * total < min_computed * nw) {
            min_computed = a->windows_ok;
            total = nw;
        }
        read_ok(a, &all); /* and everything before */
        ft_destroy(a); /* without a flush: the next child starts from the crash state */
        close_unref(f);
        ft *probe = mkft_only(&CS, c);
        raw_check(path, "t", probe, NULL, NULL);
        ft_destroy(probe);
        no_h5_objects();
    }
    print_message("    %d crashes (%ld killed), %ld left a journal to replay; a reopen computed as "
                  "few as %ld of the %ld windows\n", runs, killed, journals, min_computed, total);
    assert_true(journals > 0);
    assert_true(min_computed < total); /* some children did commit */
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 9. attach errors                                                     */

static void test_attach_errors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("attach.h5");
    rm_store(path);
    it_cache *c = mkcache(-1, -1);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, -1);
    /* tiles past HDF5's 4 GiB chunk limit (nothing is allocated) */
    const hspec big8 = {.ndim = 2, .shape = {INF, 1 << 20}, .dtype = IT_F32, .size = {1, 1 << 20},
                        .stride = {1, 1}, .tile = {2048, 0}, .combine = IT_COMBINE_SUM};
    const hspec exact = {.ndim = 2, .shape = {INF, 1 << 20}, .dtype = IT_U8, .size = {1, 1 << 20},
                         .stride = {1, 1}, .tile = {4096, 0}, .combine = IT_COMBINE_SUM};
    const hspec under = {.ndim = 2, .shape = {INF, 65535}, .dtype = IT_U8, .size = {1, 65535},
                         .stride = {1, 1}, .tile = {65537, 0}, .combine = IT_COMBINE_SUM};
    /* a bitmap of 2**35 windows per tile */
    const hspec dom = {.ndim = 1, .shape = {INF}, .dtype = IT_U8, .size = {((int64_t)1) << 35},
                       .stride = {1}, .tile = {1}, .combine = IT_COMBINE_SUM};
    const hspec *tb[] = {&big8, &exact, &dom};
    for (int i = 0; i < 3; i++) {
        meta_ok(f, "big", tb[i]);
        ft *a = mkft_only(tb[i], c);
        EXPECT_ERR(it_h5_attach(f, "big", a->t), IT_ETOOBIG);
        assert_true(strstr(it_error_message(), i < 2 ? "4 GiB" : "windows") != NULL);
        ft_destroy(a);
    }
    ft *u = mkt(&under, c, f, "big"); /* 2**32 - 1 bytes: accepted (not read) */
    ft_destroy(u);
    /* a tensor that caches tiles already, or has a backend */
    const hspec *s = &RT[0];
    meta_ok(f, "t", s);
    ft *a = mkft_only(s, c);
    read_ok(a, &(it_box){.ndim = 1, .start = {0}, .stop = {5}, .step = {1}});
    EXPECT_ERR(it_h5_attach(f, "t", a->t), IT_ESTATE);
    ft_destroy(a);
    a = mkt(s, c, f, "t");
    EXPECT_ERR(it_h5_attach(f, "t", a->t), IT_ESTATE);
    read_ok(a, &(it_box){.ndim = 1, .start = {0}, .stop = {5}, .step = {1}});
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);
    /* an id whose metadata was never written: its tiles fail cleanly */
    a = mkt(s, c, f, "unknown");
    it_box b = box1(0, 5);
    assert_int_equal(read_check(a, &b, 0), IT_EIO);
    it_box none = box1(0, 0);
    read_ok(a, &none);
    ft_destroy(a);
    close_unref(f); /* frees it: every failed attach gave its reference back */
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* checks after failures                                                */

/* Read box b of f and compare with ft_reference (int64 fakes), saying
 * `where` on failure. */
static void values_ok(ft *f, const it_box *b)
{
    int64_t ext[IT_MAX_DIMS];
    int64_t n = tu_box_numel(b, ext);
    it_buffer *o = NULL;
    it_error_clear();
    int rc = it_tensor_read(f->t, b, 0, &o);
    if (rc)
        fail_msg("%sreading the store: %d (%s)", where, rc, it_error_message());
    tu_buffer_flip(o);
    assert_int_equal(f->spec.dtype, IT_I64);
    double *ref = malloc(sizeof(double) * (size_t)n);
    assert_non_null(ref);
    ft_reference(f, b, ref);
    for (int64_t j = 0; j < n; j++) {
        int64_t v = ((const int64_t *)o->data)[j];
        if (v != (int64_t)ref[j]) {
            double e = ref[j];
            free(ref);
            fail_msg("%spixel %lld reads %lld, expected %g: a window was counted twice or lost",
                     where, (long long)(b->start[0] + j), (long long)v, e);
        }
    }
    free(ref);
    it_buffer_free(o);
    ft_check_errors(f);
    tu_cache_ok(f->cache);
}

/* The store at path: every committed row self-consistent, every value of
 * the big box right after a reopen (windows lost are computed again, none
 * counted twice). */
static void verify_store(const char *path, const hspec *s, it_cache *c)
{
    ft *probe = mkft_only(s, c);
    raw_check(path, "t", probe, NULL, NULL);
    ft_destroy(probe);
    it_h5file *f = NULL;
    it_error_clear();
    int rc = it_h5_open(path, IT_H5_APPEND, 1, &f);
    if (rc)
        fail_msg("%sreopening: %d (%s)", where, rc, it_error_message());
    ft *a = mkt(s, c, f, "t");
    it_box b = box1(-60, 70);
    values_ok(a, &b);
    ft_destroy(a);
    close_unref(f);
}

/* ------------------------------------------------------------------ */
/* 10. allocation failures                                              */

typedef struct sweep {
    long n;
    int hit;
    int policy; /* 1: a failed tensor flush is not retried; the store is closed (a crash) */
    int close_failed;
} sweep;

/* A call: OK, or a failure with a message (ENOMEM, or EIO when the failed
 * allocation was the journal driver's, under HDF5); heal the allocator. */
static int sw_call(sweep *s, int rc, const char *what)
{
    if (rc == IT_OK)
        return IT_OK;
    if (rc != IT_ENOMEM && rc != IT_EIO)
        fail_msg("N=%ld: %s returned %d (%s), expected IT_OK, IT_ENOMEM or IT_EIO", s->n, what, rc,
                 it_error_message());
    tu_check_recorded(rc, what, __FILE__, __LINE__);
    s->hit = 1;
    it_alloc_fail_after(0);
    return rc;
}

/* Must succeed now that the allocator is healed. */
static void sw_retry(sweep *s, int rc, const char *what)
{
    if (rc != IT_OK)
        fail_msg("N=%ld: %s failed again after the allocator healed: %d (%s)", s->n, what, rc,
                 it_error_message());
}

static void sw_read(sweep *s, ft *f, const it_box *b)
{
    int rc = read_check(f, b, 0);
    if (rc == IT_OK)
        return;
    if (rc != IT_ENOMEM && rc != IT_EIO)
        fail_msg("N=%ld: read returned %d (%s)", s->n, rc, f->last_msg);
    s->hit = 1;
    it_alloc_fail_after(0);
    rc = read_check(f, b, 0);
    if (rc != IT_OK)
        fail_msg("N=%ld: the read after a failure returned %d (%s)", s->n, rc, f->last_msg);
}

static const hspec AS = {.ndim = 1, .shape = {INF}, .dtype = IT_I64, .size = {5}, .stride = {3},
                         .offset = {-1}, .tile = {8}, .combine = IT_COMBINE_SUM, .seed = 41,
                         .batch = 2};

static it_box alloc_boxes(int i)
{
    static const int64_t iv[4][2] = {{0, 30}, {20, 60}, {-40, 5}, {-60, 70}};
    return box1(iv[i][0], iv[i][1]);
}

/* The committed base: a store with the tiles of box 0. */
static void alloc_base(const char *path, it_cache *c)
{
    rm_store(path);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, 1);
    meta_ok(f, "t", &AS);
    ft *a = mkt(&AS, c, f, "t");
    it_box b = alloc_boxes(0);
    read_ok(a, &b);
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);
    close_unref(f);
}

/* The scenario, failures armed: open, attach, read (loads and new windows
 * in stored tiles), flush, commit, more reads, close, reopen, close. */
static void alloc_scenario(sweep *s, const char *path)
{
    it_h5file *f = NULL;
    it_cache *c = NULL;
    ft *a = ft_new(AS.ndim, AS.shape, AS.dtype);
    ft_set_window(a, AS.size, AS.stride, AS.offset, NULL);
    a->spec.tile_shape[0] = AS.tile[0];
    a->spec.batch_size = AS.batch;
    a->seed = AS.seed;
    if (sw_call(s, it_h5_open(path, IT_H5_APPEND, 1, &f), "it_h5_open")) {
        assert_null(f);
        sw_retry(s, it_h5_open(path, IT_H5_APPEND, 1, &f), "it_h5_open");
    }
    if (sw_call(s, it_cache_create(-1, -1, &c), "it_cache_create"))
        sw_retry(s, it_cache_create(-1, -1, &c), "it_cache_create");
    it_cache_set_tile_limit(c, 3);
    if (sw_call(s, ft_create(a, c), "it_tensor_create"))
        sw_retry(s, ft_create(a, c), "it_tensor_create");
    if (sw_call(s, it_h5_attach(f, "t", a->t), "it_h5_attach"))
        sw_retry(s, it_h5_attach(f, "t", a->t), "it_h5_attach");
    int crashed = 0;
    for (int i = 0; i < 3 && !crashed; i++) {
        it_box b = alloc_boxes(i);
        sw_read(s, a, &b);
        if (sw_call(s, it_tensor_flush(a->t), "it_tensor_flush")) {
            if (s->policy == 1) {
                crashed = 1;
                break;
            }
            sw_retry(s, it_tensor_flush(a->t), "it_tensor_flush");
        }
        if (sw_call(s, it_h5_flush(f), "it_h5_flush")) {
            /* HDF5 1.10 cannot flush a file again once a flush of its
             * metadata cache failed ("slist already enabled?"): the store
             * is then closed, as after a crash */
            it_error_clear();
            int rc = it_h5_flush(f);
            if (rc != IT_OK && rc != IT_EIO)
                fail_msg("N=%ld: it_h5_flush after a failed one: %d (%s)", s->n, rc,
                         it_error_message());
            if (rc != IT_OK) {
                crashed = 1;
                break;
            }
        }
        if (i == 1) {
            if (sw_call(s, it_h5_close(f), "it_h5_close")) {
                assert_int_equal(it_h5_is_open(f), 0);
                s->close_failed = 1;
            }
            if (sw_call(s, it_h5_reopen(f), "it_h5_reopen"))
                sw_retry(s, it_h5_reopen(f), "it_h5_reopen");
            it_tensor_clear(a->t);
        }
    }
    /* close (after a failed flush: what a crash or Python's close() does) */
    if (sw_call(s, it_h5_close(f), "it_h5_close")) {
        assert_int_equal(it_h5_is_open(f), 0);
        s->close_failed = 1;
    }
    ft_destroy(a);
    it_h5_unref(f);
    it_cache_unref(c);
}

/* After the scenario: the file holds consistent tiles, every value reads
 * right (nothing counted twice). */
static void alloc_verify(sweep *s, const char *path, it_cache *c)
{
    snprintf(where, sizeof where, "N=%ld (policy %d): ", s->n, s->policy);
    verify_store(path, &AS, c);
    where[0] = '\0';
}

static void alloc_sweep(int policy, long max_n)
{
    const char *path = tpath("alloc.h5");
    it_cache *c = mkcache(-1, -1);
    long n;
    for (n = 1; n <= max_n; n++) {
        alloc_base(path, c);
        long live = it_alloc_live_blocks();
        sweep s = {n, 0, policy, 0};
        it_error_clear();
        it_alloc_fail_after(n);
        alloc_scenario(&s, path);
        it_alloc_fail_after(0);
        if (it_alloc_live_blocks() != live)
            fail_msg("N=%ld: %ld core blocks leaked", n, it_alloc_live_blocks() - live);
        snprintf(where, sizeof where, "N=%ld (policy %d): ", n, policy);
        settle_h5_objects(s.close_failed, "the scenario");
        where[0] = '\0';
        alloc_verify(&s, path, c);
        if (!s.hit)
            break;
    }
    if (n > max_n)
        fail_msg("still failing after %ld allocations", max_n);
    print_message("    policy %d: %ld allocation failure points\n", policy, n - 1);
    it_cache_unref(c);
}

static void test_fail_alloc_sweep(void **state)
{
    (void)state;
    LEAK_BEGIN;
    alloc_sweep(0, 5000);
    alloc_sweep(1, 5000);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 11. one failure at a time                                            */

enum { STEP_FLUSH_OLD, STEP_FLUSH_NEW, STEP_COMMIT, STEP_LOAD, STEP_CLOSE };

/* The store of AS with the windows of [0, 8) committed (fresh: nothing),
 * and more windows read: tiles stored before get new ones, new tiles. */
static ft *fail_base(const char *path, int gzip, int step, it_cache *c, it_h5file **pf)
{
    rm_store(path);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, gzip);
    meta_ok(f, "t", &AS);
    ft *a = mkt(&AS, c, f, "t");
    if (step != STEP_FLUSH_NEW) {
        read_ok(a, &(it_box){.ndim = 1, .start = {0}, .stop = {8}, .step = {1}});
        EXPECT_OK(it_tensor_flush(a->t));
        EXPECT_OK(it_h5_flush(f));
    }
    if (step == STEP_LOAD) { /* a fresh handle: the first load reads the slot table */
        ft_destroy(a);
        close_unref(f);
        f = open_ok(path, IT_H5_RDWR, gzip);
        a = mkt(&AS, c, f, "t");
    } else {
        read_ok(a, &(it_box){.ndim = 1, .start = {-40}, .stop = {16}, .step = {1}});
    }
    if (step == STEP_COMMIT || step == STEP_CLOSE) { /* stored, not committed */
        EXPECT_OK(it_tensor_flush(a->t));
        if (step == STEP_CLOSE) /* and committed metadata rewritten */
            EXPECT_OK(it_h5_write_meta(f, "t", "{\"rewritten\": 1}", AS.tile, 1));
    }
    *pf = f;
    return a;
}

static int fail_op(int step, it_h5file *f, ft *a)
{
    it_error_clear();
    switch (step) {
    case STEP_FLUSH_OLD:
    case STEP_FLUSH_NEW: return it_tensor_flush(a->t);
    case STEP_COMMIT: return it_h5_flush(f);
    case STEP_CLOSE: return it_h5_close(f);
    default: {
        it_buffer *o = NULL;
        it_box b = box1(0, 16);
        int rc = it_tensor_read(a->t, &b, 0, &o);
        it_buffer_free(o);
        return rc;
    }
    }
}

/* For k = 1, 2, ...: the k-th allocation of one operation fails (and every
 * later one until it returns).  The operation fails cleanly; if retry, it
 * is done again (it must work, except a commit: HDF5 1.10 cannot flush a
 * file again after a failed flush); then the store is closed (a commit,
 * as Python's close() does after a failed flush) and must hold consistent
 * tiles only: reopened, every value is right, no core block or HDF5 object
 * is left.  `words`: the failure this scan is after (it must happen). */
static void fail_scan(int step, int gzip, int retry, const char *words)
{
    const char *path = tpath("fail.h5");
    it_cache *c = mkcache(-1, -1);
    long hits = 0, k;
    for (k = 1; k < 1000; k++) {
        long live = it_alloc_live_blocks();
        it_h5file *f = NULL;
        ft *a = fail_base(path, gzip, step, c, &f);
        it_alloc_fail_after(k);
        int rc = fail_op(step, f, a);
        it_alloc_fail_after(0);
        char msg[300];
        snprintf(msg, sizeof msg, "%s", it_error_message());
        if (rc != IT_OK) {
            if (rc != IT_ENOMEM && rc != IT_EIO)
                fail_msg("k=%ld: %d (%s)", k, rc, msg);
            tu_check_recorded(rc, "the operation", __FILE__, __LINE__);
            hits += strstr(msg, words) != NULL;
            if (retry) {
                int rc2 = fail_op(step, f, a);
                if (rc2 != IT_OK && !(step == STEP_COMMIT && rc2 == IT_EIO))
                    fail_msg("k=%ld: the retry after \"%s\" failed: %d (%s)", k, msg, rc2,
                             it_error_message());
            }
        }
        it_error_clear();
        int close_failed = it_h5_close(f) != IT_OK || (step == STEP_CLOSE && rc != IT_OK);
        ft_destroy(a);
        it_h5_unref(f);
        snprintf(where, sizeof where, "k=%ld (the operation failed with \"%s\"%s, then the store "
                 "was closed): ", k, msg, retry ? " and was retried" : "");
        if (it_alloc_live_blocks() != live)
            fail_msg("%s%ld core blocks leaked", where, it_alloc_live_blocks() - live);
        settle_h5_objects(close_failed, "the scenario");
        verify_store(path, &AS, c);
        if (step == STEP_CLOSE) { /* the last commit, or the one the close made */
            it_h5file *g = open_ok(path, IT_H5_READ, -1);
            char *js = NULL;
            int64_t ts[IT_MAX_DIMS];
            int n = 0, found = 0;
            EXPECT_OK(it_h5_read_meta(g, "t", &js, ts, &n, &found));
            char json[200];
            hs_json(&AS, json, sizeof json);
            assert_int_equal(found, 1);
            if (strcmp(js, json) != 0 && strcmp(js, "{\"rewritten\": 1}") != 0)
                fail_msg("%sthe meta reads \"%s\"", where, js);
            it_free(js);
            close_unref(g);
        }
        where[0] = '\0';
        if (rc == IT_OK)
            break;
    }
    print_message("    %ld failure points, %ld of them \"%s\"\n", k - 1, hits, words);
    assert_true(hits > 0);
    it_cache_unref(c);
}

/* Writing a stored tile again: values, then the bitmap.  A failure in
 * between must not leave the new values with the old bitmap in a commit. */
static void test_fail_store_bitmap(void **state)
{
    (void)state;
    LEAK_BEGIN;
    fail_scan(STEP_FLUSH_OLD, -1, 0, "bitmap");
    LEAK_END;
}

/* New tiles: a failure once the index row is written (growing the slot
 * table) must not make the retry append a second row for the tile. */
static void test_fail_store_new_tiles(void **state)
{
    (void)state;
    LEAK_BEGIN;
    fail_scan(STEP_FLUSH_NEW, -1, 1, "indexing");
    LEAK_END;
}

/* The first load reads the slot table: a failure there closes what it
 * opened (the retry opens the datasets again). */
static void test_fail_load_index(void **state)
{
    (void)state;
    LEAK_BEGIN;
    fail_scan(STEP_LOAD, -1, 1, "indexing");
    LEAK_END;
}

/* A commit whose HDF5 flush fails (the journal driver's allocations fail
 * under it), with gzip chunks: then a retry, or just the close. */
static void test_fail_commit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    fail_scan(STEP_COMMIT, 1, 1, "flush");
    fail_scan(STEP_COMMIT, 1, 0, "flush");
    fail_scan(STEP_COMMIT, -1, 1, "HDF5");
    LEAK_END;
}

/* A close whose commit fails (stored tiles and rewritten metadata not yet
 * committed): an error, nothing left open, the file at a commit. */
static void test_fail_close(void **state)
{
    (void)state;
    LEAK_BEGIN;
    fail_scan(STEP_CLOSE, 1, 0, "HDF5");
    fail_scan(STEP_CLOSE, -1, 0, "HDF5");
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 12. locking                                                          */

/* Another process holds the store open for writing: both kinds of open
 * fail at once, with a message that says why (docs/file-format.md: "the
 * HDF5 error" is named). */
static int collect_ids(void *ctx, const char *id, const char *json)
{
    char *out = ctx;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s=%s;", id, json);
    return IT_OK;
}

static int stop_at_first(void *ctx, const char *id, const char *json)
{
    (void)json;
    (void)id;
    ++*(int *)ctx;
    return it_error_set(IT_EINVAL, "stop");
}

/* A second it_h5file on a file this process has open (by any name) would
 * hand out the same tile rows as the first: it is refused, until the first
 * closes.  it_h5_list walks the tensors of the file. */
static void test_one_handle_per_file_in_a_process(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("once.h5"), *alias = tpath("once-link.h5");
    rm_store(path);
    unlink(alias);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, -1), *g = NULL;
    assert_int_equal(link(path, alias), 0);
    const char *names[] = {path, alias};
    const int modes[] = {IT_H5_READ, IT_H5_RDWR, IT_H5_APPEND, IT_H5_TRUNC};
    for (int n = 0; n < 2; n++)
        for (int m = 0; m < 4; m++) { /* (two read-only handles are fine: test_modes) */
            it_error_clear();
            assert_int_equal(it_h5_open(names[n], modes[m], -1, &g), IT_ESTATE);
            assert_null(g);
            assert_non_null(strstr(it_error_message(), "already open in this process"));
        }
    const int64_t ts[1] = {8};
    assert_int_equal(it_h5_write_meta(f, "b", "{\"x\": 2}", ts, 1), IT_OK);
    assert_int_equal(it_h5_write_meta(f, "a/c", "{\"x\": 1}", ts, 1), IT_OK);
    char seen[256] = "";
    assert_int_equal(it_h5_list(f, collect_ids, seen), IT_OK);
    assert_string_equal(seen, "a/c={\"x\": 1};b={\"x\": 2};"); /* group names a%2Fc < b */
    int calls = 0;
    assert_int_equal(it_h5_list(f, stop_at_first, &calls), IT_EINVAL);
    assert_int_equal(calls, 1);
    assert_int_equal(it_h5_close(f), IT_OK);
    assert_int_equal(it_h5_list(f, collect_ids, seen), IT_ESTATE); /* closed */
    g = open_ok(alias, IT_H5_RDWR, -1); /* closed: another handle may open it */
    assert_int_equal(it_h5_reopen(f), IT_ESTATE); /* and the first cannot come back meanwhile */
    close_unref(g);
    /* a read-only handle keeps writers out, but not other readers */
    g = open_ok(alias, IT_H5_READ, -1);
    assert_int_equal(it_h5_reopen(f), IT_ESTATE);
    it_h5file *h = open_ok(path, IT_H5_READ, -1);
    close_unref(h);
    close_unref(g);
    assert_int_equal(it_h5_reopen(f), IT_OK);
    close_unref(f);
    unlink(alias);
    rm_store(path);
    LEAK_END;
}

/* Temporaries of creators that died, "<file>.creating-<pid>" and their
 * journals, go when the file is next created or opened for writing; a
 * name near NAME_MAX gets a cut temporary name, cleaned up the same way. */
static void test_stale_creation_temporaries(void **state)
{
    (void)state;
    LEAK_BEGIN;
    pid_t dead = fork_child();
    if (dead == 0)
        _exit(0);
    wait_child(dead);
    char name[256];
    for (int longname = 0; longname < 2; longname++) {
        if (longname) {
            memset(name, 'q', 247);
            memcpy(name + 247, ".h5", 4); /* 250 bytes */
        } else {
            snprintf(name, sizeof name, "temps.h5");
        }
        const char *path = tpath(name);
        rm_store(path);
        char *stem = it_h5j_sibling(path, "", sizeof ".creating-" - 1 + 10 + sizeof "-journal" - 1);
        assert_non_null(stem);
        assert_int_equal(strcmp(stem, path) == 0, !longname);
        char stale[600], stale_j[600], live_j[600], other[600];
        snprintf(stale, sizeof stale, "%s.creating-%ld", stem, (long)dead);
        snprintf(stale_j, sizeof stale_j, "%s.creating-%ld-journal", stem, (long)dead);
        snprintf(live_j, sizeof live_j, "%s.creating-1-journal", stem); /* init never dies */
        snprintf(other, sizeof other, "%s.creating-%ld-journalx", stem, (long)dead);
        for (int round = 0; round < 2; round++) { /* created, then opened for writing */
            const char *made[] = {stale, stale_j, live_j, other};
            for (int i = 0; i < 4; i++) {
                FILE *fp = fopen(made[i], "wb");
                assert_non_null(fp);
                fclose(fp);
            }
            close_unref(open_ok(path, round ? IT_H5_APPEND : IT_H5_TRUNC, -1));
            assert_int_equal(fsize(stale), -1);
            assert_int_equal(fsize(stale_j), -1);
            assert_int_equal(fsize(live_j), 0);
            assert_int_equal(fsize(other), 0);
            close_unref(open_ok(path, IT_H5_READ, -1)); /* a reader leaves everything */
        }
        unlink(live_j);
        unlink(other);
        it_free(stem);
        rm_store(path);
    }
    LEAK_END;
}

static void test_fail_open_locked(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("held.h5"); /* (a name without "lock" in it) */
    rm_store(path);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, -1);
    close_unref(f);
    int p1[2], p2[2];
    assert_int_equal(pipe(p1), 0);
    assert_int_equal(pipe(p2), 0);
    pid_t pid = fork_child();
    if (pid == 0) { /* the other process: holds the store open until told */
        it_h5file *g = NULL;
        char ch = 1;
        if (it_h5_open(path, IT_H5_APPEND, -1, &g))
            _exit(CHILD_FAIL);
        if (write(p1[1], &ch, 1) != 1 || read(p2[0], &ch, 1) != 1)
            _exit(CHILD_FAIL);
        _exit(it_h5_close(g) ? CHILD_FAIL : 0);
    }
    close(p1[1]);
    close(p2[0]);
    char ch;
    if (read(p1[0], &ch, 1) != 1)
        fail_msg("the child failed before opening (status 0x%x)", wait_child(pid));
    char msgs[2][300];
    int rcs[2];
    for (int mode = 0; mode < 2; mode++) {
        f = (it_h5file *)1;
        it_error_clear();
        rcs[mode] = it_h5_open(path, mode ? IT_H5_READ : IT_H5_APPEND, -1, &f);
        snprintf(msgs[mode], sizeof msgs[mode], "%s", it_error_message());
        if (rcs[mode] == IT_OK)
            close_unref(f);
        else
            assert_null(f);
    }
    ch = 1;
    assert_int_equal(write(p2[1], &ch, 1), 1);
    int st = wait_child(pid);
    close(p1[0]);
    close(p2[1]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    f = open_ok(path, IT_H5_APPEND, -1); /* free again */
    close_unref(f);
    no_h5_objects();
    for (int mode = 0; mode < 2; mode++) {
        if (rcs[mode] != IT_EIO)
            fail_msg("opening (%s) a store another process writes: %d (%s), expected IT_EIO",
                     mode ? "read-only" : "read-write", rcs[mode], msgs[mode]);
        if (!strstr(msgs[mode], "lock"))
            fail_msg("opening (%s) a store another process writes fails with \"%s\": it does not "
                     "say that the file is locked", mode ? "read-only" : "read-write", msgs[mode]);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 13. commits by volume                                                */

/* Rows of "bits" in the file with exactly `want` bits set. */
static int64_t rows_with_bits(const char *path, int want)
{
    hid_t fid = raw_open(path, H5F_ACC_RDONLY);
    hid_t d = H5Dopen2(fid, "tensors/t/bits", H5P_DEFAULT);
    assert_true(d >= 0);
    hsize_t dims[2];
    assert_int_equal(raw_dims(d, dims), 2);
    unsigned char *b = malloc((size_t)(dims[0] * dims[1]) + 1);
    assert_non_null(b);
    if (dims[0])
        assert_true(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
    int64_t n = 0;
    for (hsize_t r = 0; r < dims[0]; r++) {
        int bits = 0;
        for (hsize_t j = 0; j < dims[1]; j++)
            bits += __builtin_popcount(b[r * dims[1] + j]);
        n += bits == want;
    }
    free(b);
    H5Dclose(d);
    H5Fclose(fid);
    return n;
}

/* Rewriting more than 64 MiB of stored tiles commits on its own, between
 * two tile records, before it_h5_flush: big tiles (1 MiB), one new window
 * of one pixel each. */
static void test_auto_commit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("auto.h5"), *snap = tpath("auto-snap.h5");
    rm_store(path);
    enum { T = 1 << 16, NT = 72 };
    const hspec s = {.ndim = 1, .shape = {INF}, .dtype = IT_C128, .size = {1}, .stride = {1},
                     .tile = {T}, .combine = IT_COMBINE_SUM, .seed = 51, .fill = 1};
    it_cache *c = mkcache(-1, -1);
    it_h5file *f = open_ok(path, IT_H5_TRUNC, -1);
    meta_ok(f, "t", &s);
    ft *a = mkt(&s, c, f, "t");
    a->once = 1;
    for (int k = 0; k < NT; k++)
        read_ok(a, &(it_box){.ndim = 1, .start = {(int64_t)k * T}, .stop = {(int64_t)k * T + 1},
                             .step = {1}});
    EXPECT_OK(it_tensor_flush(a->t));
    EXPECT_OK(it_h5_flush(f));
    for (int k = 0; k < NT; k++)
        read_ok(a, &(it_box){.ndim = 1, .start = {(int64_t)k * T + 1},
                             .stop = {(int64_t)k * T + 2}, .step = {1}});
    EXPECT_OK(it_tensor_flush(a->t)); /* 72 MiB rewritten: a commit on the way */
    snapshot(path, snap);
    int64_t two = rows_with_bits(snap, 2), one = rows_with_bits(snap, 1);
    print_message("    before it_h5_flush the file holds %lld tiles with the new window, %lld "
                  "without\n", (long long)two, (long long)one);
    assert_int_equal(two + one, NT);
    assert_true(two >= 32 && two < NT);
    ft *probe = mkft_only(&s, c);
    assert_int_equal(raw_check(snap, "t", probe, NULL, NULL), NT);
    EXPECT_OK(it_h5_flush(f));
    close_unref(f);
    assert_int_equal(rows_with_bits(path, 2), NT);
    f = open_ok(path, IT_H5_READ, -1);
    ft *b = mkt(&s, c, f, "t");
    for (int k = 0; k < NT; k++)
        read_ok(b, &(it_box){.ndim = 1, .start = {(int64_t)k * T}, .stop = {(int64_t)k * T + 2},
                             .step = {1}});
    assert_int_equal(b->calls, 0);
    ft_destroy(b);
    ft_destroy(probe);
    ft_destroy(a);
    close_unref(f);
    it_cache_unref(c);
    no_h5_objects();
    LEAK_END;
}

/* ------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/it_h5s_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_roundtrip, test_setup),
        cmocka_unit_test_setup(test_shared_file_evictions, test_setup),
        cmocka_unit_test_setup(test_meta, test_setup),
        cmocka_unit_test_setup(test_foreign_file, test_setup),
        cmocka_unit_test_setup(test_modes, test_setup),
        cmocka_unit_test_setup(test_close_reopen, test_setup),
        cmocka_unit_test_setup(test_many_tiles, test_setup),
        cmocka_unit_test_setup(test_delete, test_setup),
        cmocka_unit_test_setup(test_damaged, test_setup),
        cmocka_unit_test_setup(test_crash, test_setup),
        cmocka_unit_test_setup(test_attach_errors, test_setup),
        cmocka_unit_test_setup(test_auto_commit, test_setup),
        cmocka_unit_test_setup(test_fail_store_bitmap, test_setup),
        cmocka_unit_test_setup(test_fail_store_new_tiles, test_setup),
        cmocka_unit_test_setup(test_fail_load_index, test_setup),
        cmocka_unit_test_setup(test_fail_commit, test_setup),
        cmocka_unit_test_setup(test_fail_close, test_setup),
        cmocka_unit_test_setup(test_fail_open_locked, test_setup),
        cmocka_unit_test_setup(test_one_handle_per_file_in_a_process, test_setup),
        cmocka_unit_test_setup(test_stale_creation_temporaries, test_setup),
        cmocka_unit_test_setup(test_fail_alloc_sweep, test_setup),
    };
    tu_filters_from_env();
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    ssize_t left = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (left > 0) {
        /* A test failed with HDF5 ids left open, possibly file ids that a
         * failed H5Fclose left registered with their files freed: HDF5's
         * exit handler would crash on them.  Leave without it (after the
         * leak check, which runs at exit otherwise). */
        fprintf(stderr, "%zd HDF5 object(s) left open by failed tests: leaving without HDF5's exit "
                "handler\n", left);
#ifdef __SANITIZE_ADDRESS__
        __lsan_do_leak_check();
#endif
        fflush(NULL);
        _exit(failed ? failed : 1);
    }
    return failed;
}
