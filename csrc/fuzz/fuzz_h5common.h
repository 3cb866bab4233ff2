/*
 * fuzz_h5common.h - what the HDF5 harnesses (and the seed maker) share:
 * a scratch directory, whole-file helpers, a cheap window function, and
 * exercise_store(), which drives a store file through the public API the
 * way the binding does: open, look tensors up by id, read their metadata,
 * build a tensor from it, attach it, read (and in read-write mode compute
 * and store) tiles, flush, close.  On a damaged file every step may fail,
 * but only through the error API (fz_check_error): never a crash, a
 * sanitizer report or a leaked core block.
 *
 * The metadata string is the harnesses' own ("fz1 dtype ndim shape[3]
 * size[3] stride[3] offset[3]"): the core stores it without reading it
 * (the binding's JSON is parsed in Python), so any string will do.
 */
#ifndef FUZZ_H5COMMON_H
#define FUZZ_H5COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "it_cache.h"
#include "it_h5journal.h"
#include "it_h5store.h"
#include "it_tensor.h"

/*
 * LeakSanitizer: leaks inside libhdf5 itself are not reported.  On damaged
 * files libhdf5 1.10 leaks some of its own allocations when an operation
 * fails half-way (its frames carry no frame pointers, so the report cannot
 * even name the API call).  Leaks of ours are still caught: every core
 * block is counted (it_alloc_live_blocks) and the harnesses check that no
 * HDF5 identifier stays open after a store is closed.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libhdf5\n"; }

/* The ids the seeds use; a fuzzed file may rename their groups. */
static const char *const fz_ids[] = {"a", "b", "c/d%e", "gone"};
#define FZ_NIDS 4

/*
 * Set when an HDF5 write failed in a read-write session.  libhdf5 1.10 can
 * then keep an object of the damaged file open internally, so the file
 * stays open (with the journal driver's handle: 3 core blocks) until the
 * process exits, whatever our close does; a strong close degree is worse
 * (the close fails and the stale file id crashes H5_term_library at exit).
 * The harnesses skip their core-block leak check for such inputs.
 */
static int fz_h5_write_failed;

static void fz_note(int rc, int mode)
{
    if (rc == IT_EIO && mode != IT_H5_READ)
        fz_h5_write_failed = 1;
}

/* ---- files ------------------------------------------------------------- */

static char fz_dir[256];

static void fz_rmdir(void)
{
    char cmd[300];
    if (fz_dir[0] && strncmp(fz_dir, "/tmp/", 5) == 0 && !strchr(fz_dir, '\'')) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", fz_dir);
    }
}

/* A private scratch directory, removed at exit. */
static const char *fz_scratch(void)
{
    if (!fz_dir[0]) {
        snprintf(fz_dir, sizeof fz_dir, "/tmp/itfuzz-XXXXXX");
        FZ_CHECK(mkdtemp(fz_dir) != NULL, "mkdtemp: %s", strerror(errno));
        atexit(fz_rmdir);
    }
    return fz_dir;
}

/* (a new inode each time: a file libhdf5 still holds open from an earlier
 * input must not be taken for this one) */
static void fz_write_file(const char *path, const void *data, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f != NULL, "cannot write %s: %s", path, strerror(errno));
    FZ_CHECK(n == 0 || fwrite(data, 1, n, f) == n, "short write to %s", path);
    FZ_CHECK(fclose(f) == 0, "close %s", path);
}

/* The whole file (malloc'd, *n bytes), or NULL if missing. */
static unsigned char *fz_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    FZ_CHECK(buf != NULL, "out of memory");
    for (size_t k; (k = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += k;
        if (len == cap) {
            FZ_CHECK(cap < ((size_t)1 << 30), "%s is too big to read", path);
            buf = realloc(buf, cap *= 2);
            FZ_CHECK(buf != NULL, "out of memory");
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

static long long fz_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* ---- a tensor described by the metadata --------------------------------- */

typedef struct fz_tensor {
    it_tensor_spec spec;
    long windows;
} fz_tensor;

static double fz_value(const int64_t *co, int nd, const int64_t *local)
{
    uint64_t h = 0x51ED270B27C5A3A1ull;
    for (int c = 0; c < nd; c++) {
        h ^= (uint64_t)co[c] + 0x9E3779B97F4A7C15ull * (uint64_t)(c + 1);
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    int64_t v = (int64_t)(h % 13) - 6;
    for (int d = 0; d < nd; d++)
        v += local[d] * (d + 1);
    return (double)v;
}

static void fz_store_el(it_dtype dt, void *p, double v)
{
    double f64 = v;
    float f32 = (float)v;
    int64_t i64 = (int64_t)v;
    int32_t i32 = (int32_t)v;
    uint8_t u8 = (uint8_t)(int)v;
    switch (dt) {
    case IT_F64: memcpy(p, &f64, 8); break;
    case IT_F32: memcpy(p, &f32, 4); break;
    case IT_I64: memcpy(p, &i64, 8); break;
    case IT_I32: memcpy(p, &i32, 4); break;
    default: memcpy(p, &u8, 1); break; /* IT_U8 */
    }
}

static int fz_compute(void *user, it_batch *b)
{
    fz_tensor *t = user;
    const it_window *w = &t->spec.window;
    int nd = t->spec.ndim;
    size_t es = it_dtype_size(t->spec.dtype);
    t->windows += (long)b->n;
    if (t->windows > 100000)
        return it_error_set(IT_ECALLBACK, "the fuzz window function gives up");
    int64_t wn = 1;
    for (int d = 0; d < nd; d++)
        wn *= w->size[d];
    char *block = malloc((size_t)(wn * b->n) * es + 1);
    FZ_CHECK(block != NULL, "out of memory");
    for (int64_t i = 0; i < b->n; i++) {
        const int64_t *co = b->coords + i * nd;
        it_view *v = &b->out[i];
        fz_contiguous_view(v, block + (size_t)(i * wn) * es, t->spec.dtype, nd, w->size);
        int64_t k[IT_MAX_DIMS] = {0};
        for (int64_t j = 0; j < wn; j++) {
            fz_store_el(t->spec.dtype, (char *)v->data + j * (int64_t)es, fz_value(co, nd, k));
            for (int d = nd - 1; d >= 0 && ++k[d] == w->size[d]; d--)
                k[d] = 0;
        }
    }
    b->out_owner = block;
    return IT_OK;
}

static void fz_release(void *user, it_batch *b) { free(b->out_owner); }

static const it_tensor_ops fz_ops = {fz_compute, fz_release, NULL, NULL, NULL};

/* The metadata string of a spec (3 entries per array, unused ones 0). */
static inline void fz_meta(const it_tensor_spec *s, char *buf, size_t n)
{
    int64_t v[4][3] = {{0}};
    for (int d = 0; d < s->ndim && d < 3; d++) {
        v[0][d] = s->shape[d];
        v[1][d] = s->window.size[d];
        v[2][d] = s->window.stride[d];
        v[3][d] = s->window.offset[d];
    }
    snprintf(buf, n, "fz1 %d %d %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
             (int)s->dtype, s->ndim, (long long)v[0][0], (long long)v[0][1], (long long)v[0][2],
             (long long)v[1][0], (long long)v[1][1], (long long)v[1][2], (long long)v[2][0],
             (long long)v[2][1], (long long)v[2][2], (long long)v[3][0], (long long)v[3][1],
             (long long)v[3][2]);
}

/* Parse metadata and tile sizes into a spec the harness is willing to run
 * (small windows, tiles of at most 1 MiB); 0 if they do not describe one. */
static int fz_parse_meta(const char *json, const int64_t *ts, int nts, it_tensor_spec *s)
{
    int dt, nd;
    long long v[4][3];
    memset(s, 0, sizeof *s);
    if (sscanf(json, "fz1 %d %d %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &dt, &nd,
               &v[0][0], &v[0][1], &v[0][2], &v[1][0], &v[1][1], &v[1][2], &v[2][0], &v[2][1],
               &v[2][2], &v[3][0], &v[3][1], &v[3][2]) != 14)
        return 0;
    if (nd < 1 || nd > 3 || !(dt == IT_F64 || dt == IT_F32 || dt == IT_I64 || dt == IT_I32 || dt == IT_U8))
        return 0;
    s->ndim = nd;
    s->dtype = (it_dtype)dt;
    s->device_type = IT_DEVICE_CPU;
    s->batch_size = 3;
    s->combine = IT_COMBINE_SUM;
    s->window.ndim = s->window.ncoords = nd;
    int k = 0;
    long long bytes = (long long)it_dtype_size(s->dtype);
    for (int d = 0; d < nd; d++) {
        if (v[0][d] != IT_DIM_INFINITE && (v[0][d] < 0 || v[0][d] > 64))
            return 0;
        if (v[1][d] < 1 || v[1][d] > 8 || v[2][d] < 1 || v[2][d] > 8 || v[3][d] < -64 || v[3][d] > 64)
            return 0;
        s->shape[d] = v[0][d];
        s->window.size[d] = v[1][d];
        s->window.stride[d] = v[2][d];
        s->window.offset[d] = v[3][d];
        s->window.map[d] = d;
        int64_t t = s->shape[d];
        if (t == IT_DIM_INFINITE) {
            if (k >= nts)
                return 0;
            t = ts[k++];
            if (t < 1 || t > 4096)
                return 0;
            s->tile_shape[d] = t;
        }
        bytes *= t > 0 ? t : 1;
        if (bytes > (1 << 20))
            return 0;
    }
    return k == nts;
}

/* Drive one open of path through the store API.  Returns the open's code. */
static int exercise_store(const char *path, int mode, int gzip, unsigned salt)
{
    it_h5file *f = NULL;
    ssize_t files_before = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE);
    it_error_clear();
    int rc = it_h5_open(path, mode, gzip, &f);
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "open mode %d: %d %s (%ld blocks)\n", mode, rc, it_error_message(),
                it_alloc_live_blocks());
    fz_note(rc, mode); /* a read-write open may write (the tensors group) */
    if (rc != IT_OK) {
        fz_check_error(rc, "it_h5_open");
        FZ_CHECK(f == NULL, "a failed open returned a file");
        return rc;
    }
    it_cache *cache = NULL;
    /* a small cache in read-write mode: tiles are evicted, so stored */
    FZ_CHECK(it_cache_create(mode == IT_H5_READ ? -1 : 4096, -1, &cache) == IT_OK, "cache_create");
    for (int i = 0; i < FZ_NIDS; i++) {
        char *json = NULL;
        int64_t ts[IT_MAX_DIMS];
        int nts = 0, found = 0;
        it_error_clear();
        rc = it_h5_read_meta(f, fz_ids[i], &json, ts, &nts, &found);
        if (getenv("FUZZ_DEBUG"))
            fprintf(stderr, "read_meta %s: %d found %d %s; open HDF5 objects %ld\n", fz_ids[i], rc, found,
                    it_error_message(), (long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL));
        if (rc != IT_OK) {
            fz_check_error(rc, "it_h5_read_meta");
            FZ_CHECK(json == NULL, "a failed read_meta returned a string");
            continue;
        }
        FZ_CHECK(found ? json != NULL : json == NULL, "read_meta: found %d json %p", found, (void *)json);
        FZ_CHECK(nts >= 0 && nts <= IT_MAX_DIMS, "read_meta: %d tile sizes", nts);
        fz_tensor *ft = calloc(1, sizeof *ft);
        FZ_CHECK(ft != NULL, "out of memory");
        if (!found || !fz_parse_meta(json, ts, nts, &ft->spec)) {
            it_free(json);
            free(ft);
            continue;
        }
        it_free(json);
        memset(ft->spec.fill, 0, sizeof ft->spec.fill);
        it_tensor *t = NULL;
        it_error_clear();
        rc = it_tensor_create(cache, &ft->spec, &fz_ops, ft, &t);
        if (rc != IT_OK) {
            fz_check_error(rc, "it_tensor_create");
            free(ft);
            continue;
        }
        it_error_clear();
        rc = it_h5_attach(f, fz_ids[i], t);
        fz_note(rc, mode);
        if (rc != IT_OK)
            fz_check_error(rc, "it_h5_attach");
        if (getenv("FUZZ_DEBUG"))
            fprintf(stderr, "mode %d: tensor '%s' attached: %d\n", mode, fz_ids[i], rc);
        /* read two boxes of a few tiles each: one from the origin, one
         * elsewhere (salt), step 1 then 2 */
        for (int k = 0; k < 2; k++) {
            it_box box;
            box.ndim = ft->spec.ndim;
            int64_t numel = 1;
            for (int d = 0; d < box.ndim; d++) {
                int64_t tile = ft->spec.shape[d] == IT_DIM_INFINITE ? ft->spec.tile_shape[d] : ft->spec.shape[d];
                int64_t base = k == 0 ? 0 : ((int64_t)(salt % 7) - 3) * tile;
                int64_t len = IT_MIN(2 * tile + 1, 64);
                box.start[d] = base - 1;
                box.stop[d] = base + len;
                box.step[d] = 1 + k;
                numel *= (len + 1 + k) / (1 + k);
            }
            if (numel > 8192)
                continue;
            it_buffer *out = NULL;
            it_error_clear();
            rc = it_tensor_read(t, &box, 0, &out);
            fz_note(rc, mode);
            if (getenv("FUZZ_DEBUG"))
                fprintf(stderr, "  read %d: %d %s (%ld blocks)\n", k, rc, it_error_message(),
                        it_alloc_live_blocks());
            if (rc != IT_OK) {
                fz_check_error(rc, "it_tensor_read");
                FZ_CHECK(out == NULL, "a failed read returned a buffer");
            }
            it_buffer_free(out);
        }
        if (mode != IT_H5_READ) {
            it_error_clear();
            rc = it_tensor_flush(t);
            fz_note(rc, mode);
            if (rc != IT_OK)
                fz_check_error(rc, "it_tensor_flush");
        }
        it_tensor_unref(t); /* the last reference: ft is ours again */
        free(ft);
    }
    if (mode != IT_H5_READ) {
        /* metadata writes and deletes on the (maybe damaged) file */
        int64_t ts[1] = {4};
        it_error_clear();
        rc = it_h5_write_meta(f, "fz-new", "fz1 12 1 -1 0 0 1 0 0 1 0 0 0 0 0", ts, 1);
        fz_note(rc, mode);
        if (rc != IT_OK)
            fz_check_error(rc, "it_h5_write_meta");
        it_error_clear();
        if (getenv("FUZZ_DEBUG"))
            fprintf(stderr, "write_meta: %d %s; open HDF5 objects %ld\n", rc, it_error_message(),
                    (long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL));
        rc = it_h5_delete(f, (salt & 1) ? "fz-new" : "gone");
        fz_note(rc, mode);
        if (getenv("FUZZ_DEBUG"))
            fprintf(stderr, "delete: %d %s; open HDF5 objects %ld\n", rc, it_error_message(),
                    (long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL));
        if (rc != IT_OK)
            fz_check_error(rc, "it_h5_delete");
        it_error_clear();
        rc = it_h5_flush(f);
        fz_note(rc, mode);
        if (rc != IT_OK)
            fz_check_error(rc, "it_h5_flush");
    }
    it_cache_unref(cache);
    it_error_clear();
    rc = it_h5_close(f);
    int close_rc = rc;
    fz_note(rc, mode);
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "close: %d %s (%ld blocks)\n", rc, it_error_message(), it_alloc_live_blocks());
    if (rc != IT_OK)
        fz_check_error(rc, "it_h5_close");
    it_h5_unref(f);
    /* No HDF5 identifier of ours outlives the store.  (When the close
     * itself failed - libhdf5 1.10 can leak an object internally after a
     * failed write on a damaged file, and then refuses to close the file
     * id: "objects still in open object info set" - the file id stays;
     * the driver's handle and the file's lock are gone all the same.) */
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL & ~H5F_OBJ_FILE);
    ssize_t files = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE);
    if (close_rc == IT_OK && files > files_before)
        open_ids += files - files_before;
    if (open_ids > 0) { /* say which, before failing */
        hid_t ids[8];
        ssize_t k = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_ALL, 8, ids);
        for (ssize_t i = 0; i < k; i++)
            fprintf(stderr, "open HDF5 id %lld: type %d (H5I_type_t), references %d\n",
                    (long long)ids[i], (int)H5Iget_type(ids[i]), H5Iget_ref(ids[i]));
    }
    FZ_CHECK(open_ids == 0, "%ld HDF5 identifiers are still open after the store was closed",
             (long)open_ids);
    return IT_OK;
}

#endif
