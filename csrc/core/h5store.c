/*
 * h5store.c - persistent tiles in an HDF5 file.  See it_h5store.h for the
 * contract and docs/file-format.md for the layout.
 *
 * Each attached tensor has an h5tensor: its group and dataset handles
 * (opened on first use, closed with the file), and the slot table, mapping
 * tile coordinates to rows of the four datasets (tiles, index, bits, sums;
 * no index without infinite dims, no sums in files older than the
 * checksums), read whole from "index" on first use.  A new tile takes the
 * next row.  The datasets grow by doubling (so a new tile rarely costs an
 * H5Dset_extent) and are cut back to the exact row count before every
 * commit, so a committed file always has ntiles rows everywhere.
 */
#define _POSIX_C_SOURCE 200809L /* kill, opendir */
#define _DEFAULT_SOURCE         /* flock */
#include "it_h5store.h"
#include "it_h5journal.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Commit when the journal holds this much (bytes rewritten in place). */
#define COMMIT_THRESHOLD (((int64_t)64) << 20)

typedef struct h5tensor h5tensor;

struct it_h5file {
    int refs;
    char *path;
    int readonly;
    int gzip;   /* -1: none */
    hid_t fid;  /* < 0: closed */
    hid_t tgrp; /* /tensors, while open */
    h5tensor *tensors; /* attached, linked through next */
    /* an HDF5 write failed since the last commit: HDF5's caches may hold a
     * half-written record, so this handle never commits again (the file
     * keeps its last commit) until it is closed and reopened */
    int failed;
    /* while open: the file's identity, for the list of files open in this
     * process (open_here) */
    dev_t dev;
    ino_t ino;
    pid_t pid;
    it_h5file *next_open;
};

struct h5tensor {
    it_h5file *file;
    h5tensor *next;
    char *name; /* escaped id */
    int deleted; /* its group was deleted: tile I/O refuses, so it cannot recreate it */
    it_dtype dtype;
    int ndim, ninf;
    int64_t tshape[IT_MAX_DIMS];
    int64_t row_bytes; /* bitmap bytes per tile */
    hid_t grp, dtiles, dindex, dbits, dsums; /* < 0 until opened; dsums < 0 also in older files */
    hsize_t tiles_chunk_rows, bits_chunk_rows; /* rows per chunk of tiles and bits, read when they open */
    /* slot table: coordinates of row r at coords[r * ninf]; open addressing
     * table of row + 1 (0: empty) */
    int loaded;
    int64_t nrows, rowcap; /* rows in use / rows the datasets have */
    int64_t *coords;
    int64_t coordcap;
    int64_t *table;
    int64_t tsize;
};

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
static int h5fail(const char *what, const char *name)
{
    walk_ctx w = {""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    return it_error_set(IT_EIO, "HDF5 failed %s%s%s%s%s%s", what, name ? " '" : "", name ? name : "",
                        name ? "'" : "", w.text[0] ? ": " : "", w.text);
}

static void quiet(void)
{
    static int done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors come back as messages, not stderr */
        done = 1;
    }
}

/* ---- dtypes ------------------------------------------------------------- */

/* The HDF5 type a dtype is stored as (caller closes it).  Little-endian;
 * bool as an enum FALSE/TRUE and complex as a compound {r, i} as h5py and
 * numpy expect; float16 as a 2-byte IEEE float; bfloat16, which HDF5 and
 * numpy lack, as its raw uint16 bits. */
static hid_t file_type(it_dtype dt)
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

/* ---- names ---------------------------------------------------------------- */

/* The group name of an id: "%" and "/" escaped as %25 and %2F; "." (a name
 * HDF5 reserves) as %2E; the empty id as "%". */
static char *escape(const char *id)
{
    size_t n = strlen(id), k = 0;
    char *s = it_malloc(3 * n + 2);
    if (!s)
        return NULL;
    if (n == 0 || strcmp(id, ".") == 0) {
        strcpy(s, n == 0 ? "%" : "%2E");
        return s;
    }
    for (size_t i = 0; i < n; i++) {
        if (id[i] == '%' || id[i] == '/') {
            s[k++] = '%';
            s[k++] = '2';
            s[k++] = id[i] == '%' ? '5' : 'F';
        } else {
            s[k++] = id[i];
        }
    }
    s[k] = '\0';
    return s;
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = it_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- attributes ------------------------------------------------------------- */

static int attr_exists(hid_t obj, const char *name)
{
    htri_t e = H5Aexists(obj, name);
    return e > 0;
}

static int write_str_attr(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR), a = -1;
    int rc = IT_OK;
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    if (attr_exists(obj, name) && H5Adelete(obj, name) < 0)
        rc = h5fail("replacing attribute", name);
    if (rc == IT_OK && ((a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
                        H5Awrite(a, t, &value) < 0))
        rc = h5fail("writing attribute", name);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

/* A string attribute, fixed or variable length, as a new it_malloc string. */
static int read_str_attr(hid_t obj, const char *name, char **out)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), ft = -1, mt = -1, sp = -1;
    int rc = IT_OK;
    *out = NULL;
    if (a < 0)
        return h5fail("opening attribute", name);
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
            rc = h5fail("reading attribute", name);
        else if (!(*out = dupstr(v)))
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
            rc = h5fail("reading attribute", name);
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
static int write_ints_attr(hid_t obj, const char *name, const int64_t *v, int n)
{
    hsize_t dim = (hsize_t)(n < 0 ? 1 : n);
    hid_t sp = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL), a = -1;
    int rc = IT_OK;
    if (attr_exists(obj, name) && H5Adelete(obj, name) < 0)
        rc = h5fail("replacing attribute", name);
    if (rc == IT_OK && ((a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
                        (n != 0 && H5Awrite(a, H5T_NATIVE_INT64, v) < 0)))
        rc = h5fail("writing attribute", name);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int read_ints_attr(hid_t obj, const char *name, int64_t *v, int max, int *n)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), sp, ft;
    int rc = IT_OK;
    if (a < 0)
        return h5fail("opening attribute", name);
    sp = H5Aget_space(a);
    ft = H5Aget_type(a);
    hssize_t k = H5Sget_simple_extent_npoints(sp);
    if (H5Tget_class(ft) != H5T_INTEGER || k < 0 || k > max)
        rc = it_error_set(IT_EINVAL, "attribute '%s' is not a list of at most %d ints", name, max);
    else if (k > 0 && H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        rc = h5fail("reading attribute", name);
    *n = (int)k;
    H5Tclose(ft);
    H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* ---- files ----------------------------------------------------------------- */

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int check_format(hid_t fid, const char *path)
{
    if (!attr_exists(fid, "infinite_tensor_format"))
        return IT_OK; /* a new file, a 0.3 file or foreign data: tensors are checked one by one */
    int64_t v[1];
    int n = 0, rc = read_ints_attr(fid, "infinite_tensor_format", v, 1, &n);
    if (rc == IT_OK && (n != 1 || v[0] < 1 || v[0] > IT_H5_FORMAT))
        rc = it_error_set(IT_EINVAL, "%s has infinite_tensor format %lld; this version reads format %d",
                          path, n == 1 ? (long long)v[0] : -1LL, IT_H5_FORMAT);
    return rc;
}

/*
 * A new file is built under a temporary name next to the final one (the
 * root attribute and the tensors group), closed, and renamed into place, so
 * a crash while creating leaves either no file / the old file ("w") or a
 * complete empty store, never a file HDF5 cannot open.  A journal left
 * under the final name belongs to whatever was there before: it goes first,
 * or it would be replayed onto the new file.
 */
/*
 * The temporary name of a new file: "<stem>.creating-<pid>", where <stem> is
 * the final name, or a cut one ending in a hash (it_h5j_sibling) when the
 * temporary name or its journal ("...-journal") would pass NAME_MAX.  The
 * room kept for ".creating-", the pid and "-journal" does not depend on the
 * pid, so the stem is the same for every creator of one path.
 */
#define CREATING ".creating-"
#define CREATING_ROOM (sizeof CREATING - 1 + 10 + sizeof "-journal" - 1)

static char *creating_stem(const char *path) { return it_h5j_sibling(path, "", CREATING_ROOM); }

/* Remove "<stem>.creating-<pid>" files, and their journals, left by
 * creators that died. */
static void remove_stale_temps(const char *path)
{
    char *stem = creating_stem(path);
    if (!stem)
        return;
    const char *slash = strrchr(stem, '/');
    size_t dlen = slash ? (size_t)(slash - stem) : 0;
    const char *base = slash ? slash + 1 : stem;
    char dir[4096], full[4096 + 256];
    DIR *d = NULL;
    if (!slash) {
        strcpy(dir, ".");
    } else if (dlen == 0) {
        strcpy(dir, "/");
    } else if (dlen < sizeof dir) {
        memcpy(dir, stem, dlen);
        dir[dlen] = '\0';
    } else {
        goto out;
    }
    if (!(d = opendir(dir)))
        goto out;
    size_t blen = strlen(base), clen = sizeof CREATING - 1;
    for (struct dirent *e; (e = readdir(d));) {
        const char *n = e->d_name;
        if (strncmp(n, base, blen) != 0 || strncmp(n + blen, CREATING, clen) != 0)
            continue;
        char *end;
        long pid = strtol(n + blen + clen, &end, 10);
        if ((!*end || strcmp(end, "-journal") == 0) && pid > 0 && kill((pid_t)pid, 0) != 0 &&
            errno == ESRCH) {
            snprintf(full, sizeof full, "%s/%s", dir, n);
            unlink(full);
        }
    }
    closedir(d);
out:
    it_free(stem);
}

/*
 * Mode "w" on an existing file renames a new file over it, which no lock of
 * the old file would stop: take the old file's exclusive lock first (the one
 * h5journal.c takes for a writer) and hold it until the rename is done, so
 * that a file another process has open ("r" or writing) is refused like any
 * other conflicting open, and nobody opens the old file meanwhile.  *fd is
 * the descriptor to close after the rename (-1: none).  Locking disabled
 * with HDF5_USE_FILE_LOCKING=FALSE, or unsupported: nothing is checked.
 */
static int lock_replaced_file(const char *path, int *fd)
{
    const char *env = getenv("HDF5_USE_FILE_LOCKING");
    *fd = -1;
    if (env && (strcmp(env, "FALSE") == 0 || strcmp(env, "0") == 0))
        return IT_OK;
    int o = open(path, O_RDONLY | O_CLOEXEC);
    if (o < 0)
        return IT_OK; /* missing (or unreadable): nothing to protect, the create reports */
    if (flock(o, LOCK_EX | LOCK_NB) == 0) {
        *fd = o;
        return IT_OK;
    }
    int e = errno;
    close(o);
    if (e == EWOULDBLOCK)
        return it_error_set(IT_EIO, "unable to lock %s (exclusive): another process has it open", path);
    return IT_OK; /* locks unsupported here */
}

static int create_file(const char *path, hid_t fapl)
{
    char *stem = creating_stem(path), *journal = it_h5j_journal_path(path), *tmp = NULL;
    int rc = IT_OK;
    if (stem) {
        size_t n = strlen(stem) + CREATING_ROOM + 1;
        if ((tmp = it_malloc(n)))
            snprintf(tmp, n, "%s" CREATING "%ld", stem, (long)getpid());
        it_free(stem);
    }
    if (!tmp || !journal) {
        it_free(tmp);
        it_free(journal);
        return it_error_set(IT_ENOMEM, "out of memory creating %s", path);
    }
    int old = -1;
    rc = lock_replaced_file(path, &old);
    if (rc != IT_OK) {
        it_free(tmp);
        it_free(journal);
        return rc;
    }
    remove_stale_temps(path);
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), g = -1;
    int64_t v = IT_H5_FORMAT;
    if (fid < 0 || (g = H5Gcreate2(fid, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        rc = h5fail("creating", path);
    if (rc == IT_OK)
        rc = write_ints_attr(fid, "infinite_tensor_format", &v, -1);
    if (g >= 0)
        H5Gclose(g);
    if (fid >= 0 && H5Fclose(fid) < 0 && rc == IT_OK)
        rc = h5fail("creating", path);
    if (rc == IT_OK && unlink(journal) != 0 && errno != ENOENT)
        rc = it_error_set(IT_EIO, "cannot remove the stale journal %s: %s", journal, strerror(errno));
    if (rc == IT_OK && rename(tmp, path) != 0)
        rc = it_error_set(IT_EIO, "cannot create %s: %s", path, strerror(errno));
    if (rc != IT_OK) {
        char *tj = it_h5j_journal_path(tmp);
        unlink(tmp);
        if (tj)
            unlink(tj);
        it_free(tj);
    }
    if (old >= 0)
        close(old);
    it_free(tmp);
    it_free(journal);
    return rc;
}

/*
 * Files open in this process.  HDF5 hands a second H5Fopen of an open file
 * the same shared file, and the file lock is per open file description, so
 * nothing below would stop a second it_h5file on one file: each would keep
 * its own slot tables and hand out the same rows.  open_fid refuses a file
 * (same device and inode) that another it_h5file of this process has open,
 * unless both are read-only.
 * A forked child inherits the list; entries of another pid are not its own.
 */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static it_h5file *open_here;

static it_h5file *find_open(const struct stat *st, int readonly)
{
    pid_t me = getpid();
    for (it_h5file *o = open_here; o; o = o->next_open)
        if (o->dev == st->st_dev && o->ino == st->st_ino && o->pid == me && !(readonly && o->readonly))
            return o;
    return NULL;
}

static void forget_open(it_h5file *f)
{
    pthread_mutex_lock(&open_lock);
    for (it_h5file **p = &open_here; *p; p = &(*p)->next_open)
        if (*p == f) {
            *p = f->next_open;
            break;
        }
    f->next_open = NULL;
    pthread_mutex_unlock(&open_lock);
}

static int open_fid_unlisted(it_h5file *f, int mode);

static int open_fid(it_h5file *f, int mode)
{
    struct stat st;
    int rc = IT_OK;
    pthread_mutex_lock(&open_lock);
    if (stat(f->path, &st) == 0 && find_open(&st, mode == IT_H5_READ))
        rc = it_error_set(IT_ESTATE, "%s is already open in this process (by another store): close that "
                          "store first, or use it", f->path);
    if (rc == IT_OK)
        rc = open_fid_unlisted(f, mode);
    if (rc == IT_OK && stat(f->path, &st) != 0)
        memset(&st, 0, sizeof st); /* renamed away meanwhile: nothing to match */
    if (rc == IT_OK) {
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->pid = getpid();
        f->next_open = open_here;
        open_here = f;
    }
    pthread_mutex_unlock(&open_lock);
    return rc;
}

static int open_fid_unlisted(it_h5file *f, int mode)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    int rc = it_h5j_set_fapl(fapl);
    int exists = file_exists(f->path);
    f->fid = -1;
    if (rc == IT_OK) {
        if ((mode == IT_H5_READ || mode == IT_H5_RDWR) && !exists)
            rc = it_error_set(IT_EIO, "no such file: %s", f->path);
        else if (mode == IT_H5_EXCL && exists)
            rc = it_error_set(IT_EIO, "file exists: %s (mode 'w-' creates a new file only)", f->path);
        else if (mode == IT_H5_TRUNC || mode == IT_H5_EXCL || !exists)
            rc = create_file(f->path, fapl);
        else if (mode != IT_H5_READ)
            remove_stale_temps(f->path); /* a creator of this file that died (create_file does it too) */
        if (rc == IT_OK)
            f->fid = H5Fopen(f->path, mode == IT_H5_READ ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl);
        if (rc == IT_OK && f->fid < 0)
            rc = h5fail(mode == IT_H5_READ ? "opening (read-only)" : "opening", f->path);

    }
    H5Pclose(fapl);
    if (rc == IT_OK)
        rc = check_format(f->fid, f->path);
    if (rc == IT_OK) {
        htri_t has = H5Lexists(f->fid, "tensors", H5P_DEFAULT);
        if (has > 0)
            f->tgrp = H5Gopen2(f->fid, "tensors", H5P_DEFAULT);
        else if (!f->readonly)
            f->tgrp = H5Gcreate2(f->fid, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        else
            f->tgrp = -1; /* read-only and empty: no tensor is found */
        if ((has > 0 || !f->readonly) && f->tgrp < 0)
            rc = h5fail("opening group", "tensors");
        if (rc == IT_OK && !f->readonly && !attr_exists(f->fid, "infinite_tensor_format")) {
            int64_t v = IT_H5_FORMAT;
            rc = write_ints_attr(f->fid, "infinite_tensor_format", &v, -1);
        }
    }
    if (rc != IT_OK && f->fid >= 0) {
        if (f->tgrp >= 0)
            H5Gclose(f->tgrp);
        H5Fclose(f->fid);
        H5Eclear2(H5E_DEFAULT);
        f->fid = f->tgrp = -1;
    }
    return rc;
}

int it_h5_open(const char *path, int mode, int gzip_level, it_h5file **out)
{
    *out = NULL;
    quiet();
    if (mode < IT_H5_READ || mode > IT_H5_EXCL)
        return it_error_set(IT_EINVAL, "unknown open mode %d", mode);
    if (gzip_level < -1 || gzip_level > 9)
        return it_error_set(IT_EINVAL, "gzip level must be 0-9 (or none), got %d", gzip_level);
    if (gzip_level >= 0 && H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0)
        return it_error_set(IT_EINVAL, "this HDF5 library has no gzip (deflate) filter");
    it_h5file *f = it_calloc(1, sizeof *f);
    if (!f || !(f->path = dupstr(path))) {
        it_free(f);
        return it_error_set(IT_ENOMEM, "out of memory opening %s", path);
    }
    f->refs = 1;
    f->readonly = mode == IT_H5_READ;
    f->gzip = gzip_level;
    f->tgrp = -1;
    int rc = open_fid(f, mode);
    if (rc != IT_OK) {
        it_free(f->path);
        it_free(f);
        return rc;
    }
    *out = f;
    return IT_OK;
}

void it_h5_ref(it_h5file *f) { f->refs++; }

int it_h5_is_open(const it_h5file *f) { return f->fid >= 0; }
int it_h5_readonly(const it_h5file *f) { return f->readonly; }

static void close_handles(h5tensor *h)
{
    hid_t *ids[] = {&h->dtiles, &h->dindex, &h->dbits, &h->dsums};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        if (*ids[i] >= 0)
            H5Dclose(*ids[i]);
        *ids[i] = -1;
    }
    if (h->grp >= 0)
        H5Gclose(h->grp);
    h->grp = -1;
    /* the slot table is read again after a reopen */
    h->loaded = 0;
    h->nrows = h->rowcap = 0;
}

static int fit_rows(h5tensor *h, int64_t rows);

/* Cut every attached tensor's datasets to their row count, then commit. */
static int commit(it_h5file *f)
{
    int rc = IT_OK;
    if (f->failed)
        return it_error_set(IT_EIO, "an earlier write to %s failed: close and reopen it", f->path);
    for (h5tensor *h = f->tensors; h && rc == IT_OK; h = h->next)
        if (h->loaded && h->dtiles >= 0 && h->rowcap != h->nrows)
            rc = fit_rows(h, h->nrows);
    if (rc == IT_OK && H5Fflush(f->fid, H5F_SCOPE_GLOBAL) < 0)
        rc = h5fail("flushing", f->path);
    if (rc != IT_OK)
        f->failed = 1;
    return rc;
}

int it_h5_flush(it_h5file *f)
{
    if (f->fid < 0)
        return it_error_set(IT_ESTATE, "the HDF5 store %s is closed", f->path);
    if (f->readonly)
        return IT_OK;
    return commit(f);
}

int it_h5_close(it_h5file *f)
{
    int rc = IT_OK;
    if (f->fid < 0)
        return IT_OK;
    if (!f->readonly)
        rc = commit(f);
    if (f->failed)
        it_h5j_abandon(f->fid);
    f->failed = 0;
    for (h5tensor *h = f->tensors; h; h = h->next)
        close_handles(h);
    if (f->tgrp >= 0)
        H5Gclose(f->tgrp);
    forget_open(f);
    /* even after a failed commit the handle goes: the journal keeps the
     * file at its last commit */
    if (H5Fclose(f->fid) < 0) {
        if (rc == IT_OK)
            rc = h5fail("closing", f->path);
    }
    f->fid = f->tgrp = -1;
    return rc;
}

int it_h5_reopen(it_h5file *f)
{
    if (f->fid >= 0)
        return IT_OK;
    return open_fid(f, f->readonly ? IT_H5_READ : IT_H5_APPEND);
}

void it_h5_unref(it_h5file *f)
{
    if (!f || --f->refs > 0)
        return;
    it_h5_close(f);
    it_error_clear();
    it_free(f->path);
    it_free(f);
}

/* ---- tensor metadata ----------------------------------------------------- */

static int need_open(const it_h5file *f)
{
    if (f->fid < 0)
        return it_error_set(IT_ESTATE, "the HDF5 store %s is closed; reopen it (with store:) first",
                            f->path);
    return IT_OK;
}

int it_h5_read_meta(it_h5file *f, const char *id, char **json, int64_t *tile_size, int *ntile,
                    int *found)
{
    int rc;
    *found = 0;
    *json = NULL;
    *ntile = 0;
    if ((rc = need_open(f)))
        return rc;
    if (f->tgrp < 0)
        return IT_OK;
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    htri_t e = H5Lexists(f->tgrp, name, H5P_DEFAULT);
    if (e <= 0) {
        H5Eclear2(H5E_DEFAULT);
        it_free(name);
        return IT_OK;
    }
    hid_t g = H5Gopen2(f->tgrp, name, H5P_DEFAULT);
    if (g < 0) {
        rc = h5fail("opening the group of tensor", id);
    } else if (!attr_exists(g, "meta") || !attr_exists(g, "tile_size")) {
        if (H5Lexists(g, "metadata", H5P_DEFAULT) > 0)
            rc = it_error_set(IT_EINVAL, "tensor '%s' in %s was written by infinite-tensor 0.3, whose "
                              "format this version does not read; use another id or file", id, f->path);
        else
            rc = it_error_set(IT_EINVAL, "tensor '%s' has no metadata on disk in %s", id, f->path);
    } else if ((rc = read_str_attr(g, "meta", json)) == IT_OK &&
               (rc = read_ints_attr(g, "tile_size", tile_size, IT_MAX_DIMS, ntile)) == IT_OK) {
        *found = 1;
    }
    if (rc != IT_OK) {
        it_free(*json);
        *json = NULL;
    }
    if (g >= 0)
        H5Gclose(g);
    it_free(name);
    return rc;
}

int it_h5_write_meta(it_h5file *f, const char *id, const char *json, const int64_t *tile_size, int ntile)
{
    int rc;
    if ((rc = need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r'): cannot register tensor '%s'",
                            f->path, id);
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    hid_t g = H5Lexists(f->tgrp, name, H5P_DEFAULT) > 0
                  ? H5Gopen2(f->tgrp, name, H5P_DEFAULT)
                  : H5Gcreate2(f->tgrp, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        rc = h5fail("creating the group of tensor", id);
    if (rc == IT_OK)
        rc = write_str_attr(g, "id", id);
    if (rc == IT_OK)
        rc = write_str_attr(g, "meta", json);
    if (rc == IT_OK)
        rc = write_ints_attr(g, "tile_size", tile_size, ntile);
    if (g >= 0)
        H5Gclose(g);
    it_free(name);
    return rc;
}

int it_h5_list(it_h5file *f, int (*fn)(void *ctx, const char *id, const char *json), void *ctx)
{
    int rc;
    H5G_info_t info;
    if ((rc = need_open(f)))
        return rc;
    if (f->tgrp < 0)
        return IT_OK; /* read-only and empty */
    if (H5Gget_info(f->tgrp, &info) < 0)
        return h5fail("listing", "tensors");
    for (hsize_t i = 0; rc == IT_OK && i < info.nlinks; i++) {
        char *name = NULL, *id = NULL, *json = NULL;
        ssize_t n = H5Lget_name_by_idx(f->tgrp, ".", H5_INDEX_NAME, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
        if (n >= 0 && !(name = it_malloc((size_t)n + 1)))
            return it_error_set(IT_ENOMEM, "out of memory listing %s", f->path);
        if (n < 0 || H5Lget_name_by_idx(f->tgrp, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, (size_t)n + 1,
                                        H5P_DEFAULT) < 0) {
            it_free(name);
            rc = h5fail("listing", "tensors");
            break;
        }
        hid_t g = H5Gopen2(f->tgrp, name, H5P_DEFAULT);
        it_free(name);
        if (g < 0) {
            H5Eclear2(H5E_DEFAULT);
            continue; /* a dataset or a dangling link: not a tensor */
        }
        if (attr_exists(g, "id") && attr_exists(g, "meta")) {
            if (read_str_attr(g, "id", &id) == IT_OK && read_str_attr(g, "meta", &json) == IT_OK)
                rc = fn(ctx, id, json);
            else
                it_error_clear(); /* unreadable: the tensor's own open reports it */
        }
        H5Eclear2(H5E_DEFAULT);
        it_free(id);
        it_free(json);
        H5Gclose(g);
    }
    return rc;
}

int it_h5_delete(it_h5file *f, const char *id)
{
    int rc;
    if ((rc = need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r'): cannot delete tensor '%s'",
                            f->path, id);
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    for (h5tensor *h = f->tensors; h; h = h->next)
        if (strcmp(h->name, name) == 0) {
            close_handles(h);
            h->deleted = 1;
        }
    if (H5Lexists(f->tgrp, name, H5P_DEFAULT) > 0 && H5Ldelete(f->tgrp, name, H5P_DEFAULT) < 0)
        rc = h5fail("deleting tensor", id);
    H5Eclear2(H5E_DEFAULT);
    it_free(name);
    return rc;
}

/* ---- the slot table ------------------------------------------------------ */

static uint64_t hash_coord(const int64_t *c, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)c[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

/* Make room in the table for row h->nrows (the rows before it are in). */
static int table_room(h5tensor *h)
{
    if (2 * (h->nrows + 1) <= h->tsize)
        return IT_OK;
    int64_t n = h->tsize ? 2 * h->tsize : 64;
    while (2 * (h->nrows + 1) > n)
        n *= 2;
    int64_t *t = it_calloc((size_t)n, sizeof *t);
    if (!t)
        return it_error_set(IT_ENOMEM, "out of memory indexing tiles");
    for (int64_t r = 0; r < h->nrows; r++) {
        uint64_t i = hash_coord(h->coords + r * h->ninf, h->ninf) & (uint64_t)(n - 1);
        while (t[i])
            i = (i + 1) & (uint64_t)(n - 1);
        t[i] = r + 1;
    }
    it_free(h->table);
    h->table = t;
    h->tsize = n;
    return IT_OK;
}

/* Add row h->nrows (its coordinates are in place) to the table and count
 * it.  Cannot fail after a successful table_room. */
static int table_add(h5tensor *h)
{
    int rc = table_room(h);
    if (rc)
        return rc;
    int64_t row = h->nrows;
    uint64_t i = hash_coord(h->coords + row * h->ninf, h->ninf) & (uint64_t)(h->tsize - 1);
    while (h->table[i])
        i = (i + 1) & (uint64_t)(h->tsize - 1);
    h->table[i] = row + 1;
    h->nrows = row + 1;
    return IT_OK;
}

static int64_t table_find(const h5tensor *h, const int64_t *coord)
{
    if (!h->tsize)
        return -1;
    uint64_t i = hash_coord(coord, h->ninf) & (uint64_t)(h->tsize - 1);
    for (; h->table[i]; i = (i + 1) & (uint64_t)(h->tsize - 1)) {
        int64_t r = h->table[i] - 1;
        if (memcmp(h->coords + r * h->ninf, coord, sizeof(int64_t) * (size_t)h->ninf) == 0)
            return r;
    }
    return -1;
}

static int coords_room(h5tensor *h, int64_t rows)
{
    if (rows * IT_MAX(h->ninf, 1) <= h->coordcap)
        return IT_OK;
    int64_t cap = IT_MAX(h->coordcap * 2, 64);
    while (cap < rows * IT_MAX(h->ninf, 1))
        cap *= 2;
    int64_t *c = it_realloc(h->coords, sizeof(int64_t) * (size_t)cap);
    if (!c)
        return it_error_set(IT_ENOMEM, "out of memory indexing tiles");
    h->coords = c;
    h->coordcap = cap;
    return IT_OK;
}

static hid_t make_dataset(h5tensor *h, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int gzip, int fletcher)
{
    hsize_t zero[IT_MAX_DIMS + 1], max[IT_MAX_DIMS + 1];
    for (int i = 0; i < rank; i++) {
        zero[i] = i == 0 ? 0 : dims[i];
        max[i] = i == 0 ? H5S_UNLIMITED : dims[i];
    }
    hid_t sp = H5Screate_simple(rank, zero, max), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    if (gzip >= 0)
        H5Pset_deflate(dcpl, (unsigned)gzip);
    if (fletcher)
        H5Pset_fletcher32(dcpl); /* last: a checksum of the bytes on disk */
    hid_t d = H5Dcreate2(h->grp, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* Rows per chunk of a chunked dataset; 0 when it is not chunked. */
static hsize_t chunk_rows(hid_t d)
{
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[IT_MAX_DIMS + 1];
    int rank = dcpl < 0 ? -1 : H5Pget_chunk(dcpl, IT_MAX_DIMS + 1, chunk);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rank < 1 ? 0 : chunk[0];
}

/* 1 if the chunk holding row `row` of dataset d (rows_per_chunk from
 * chunk_rows) is stored.  A tile listed in the index whose chunk the file
 * cannot find has a damaged chunk index: HDF5 would read it as the fill
 * value, silently. */
static int row_stored(hid_t d, hsize_t rows_per_chunk, int64_t row)
{
    hsize_t off[IT_MAX_DIMS + 1] = {0}, size = 0;
    if (rows_per_chunk == 0)
        return 0;
    off[0] = (hsize_t)row - (hsize_t)row % rows_per_chunk;
    return H5Dget_chunk_storage_size(d, off, &size) >= 0 && size > 0;
}

/* Open (or with create, make) the group's datasets and read the slot
 * table.  *present = 0 when the tensor has no tile yet and create is 0. */
static int open_tiles(h5tensor *h, int create, int *present)
{
    it_h5file *f = h->file;
    int rc;
    *present = 0;
    if ((rc = need_open(f)))
        return rc;
    if (h->loaded && h->dtiles >= 0) {
        *present = 1;
        return IT_OK;
    }
    if (h->grp < 0 && (h->grp = H5Gopen2(f->tgrp, h->name, H5P_DEFAULT)) < 0)
        return h5fail("opening the group of tensor", h->name);
    htri_t has = H5Lexists(h->grp, "tiles", H5P_DEFAULT);
    if (has <= 0 && !create)
        return IT_OK;
    if (has > 0) {
        h->dtiles = H5Dopen2(h->grp, "tiles", H5P_DEFAULT);
        h->dbits = H5Dopen2(h->grp, "bits", H5P_DEFAULT);
        h->dindex = h->ninf > 0 ? H5Dopen2(h->grp, "index", H5P_DEFAULT) : -1;
        if (H5Lexists(h->grp, "sums", H5P_DEFAULT) > 0 && (h->dsums = H5Dopen2(h->grp, "sums", H5P_DEFAULT)) < 0) {
            rc = h5fail("opening the datasets of tensor", h->name);
            close_handles(h);
            return rc;
        }
    } else {
        hsize_t dims[IT_MAX_DIMS + 1], chunk[IT_MAX_DIMS + 1];
        hid_t type = file_type(h->dtype);
        dims[0] = chunk[0] = 1;
        for (int d = 0; d < h->ndim; d++)
            dims[d + 1] = chunk[d + 1] = (hsize_t)h->tshape[d];
        /* tiles: their own checksum in sums (Fletcher-32 here would cost
         * more than the write itself for uncompressed tiles) */
        h->dtiles = make_dataset(h, "tiles", type, h->ndim + 1, dims, chunk, f->gzip, 0);
        H5Tclose(type);
        hsize_t bdims[2] = {1, (hsize_t)h->row_bytes};
        hsize_t bchunk[2] = {(hsize_t)IT_MAX(1, IT_MIN(1024, 65536 / h->row_bytes)), (hsize_t)h->row_bytes};
        h->dbits = make_dataset(h, "bits", H5T_STD_U8LE, 2, bdims, bchunk, f->gzip, 1);
        hsize_t sdims[1] = {1}, schunk[1] = {1024};
        h->dsums = make_dataset(h, "sums", H5T_STD_U64LE, 1, sdims, schunk, -1, 1);
        if (h->ninf > 0) {
            hsize_t idims[2] = {1, (hsize_t)h->ninf}, ichunk[2] = {1024, (hsize_t)h->ninf};
            h->dindex = make_dataset(h, "index", H5T_STD_I64LE, 2, idims, ichunk, -1, 1);
        }
    }
    if (h->dtiles < 0 || h->dbits < 0 || (h->ninf > 0 && h->dindex < 0) || (has <= 0 && h->dsums < 0)) {
        rc = h5fail(has > 0 ? "opening the datasets of tensor" : "creating the datasets of tensor", h->name);
        close_handles(h);
        return rc;
    }
    /* check the shapes against the tensor, then read the slot table */
    hsize_t td[IT_MAX_DIMS + 2], bd[2], id[2] = {0, 0};
    hid_t sp = H5Dget_space(h->dtiles);
    int trank = H5Sget_simple_extent_ndims(sp);
    if (trank == h->ndim + 1)
        H5Sget_simple_extent_dims(sp, td, NULL);
    H5Sclose(sp);
    sp = H5Dget_space(h->dbits);
    int brank = H5Sget_simple_extent_ndims(sp);
    if (brank == 2)
        H5Sget_simple_extent_dims(sp, bd, NULL);
    H5Sclose(sp);
    int ok = trank == h->ndim + 1 && brank == 2 && bd[0] == td[0] && bd[1] == (hsize_t)h->row_bytes;
    for (int d = 0; ok && d < h->ndim; d++)
        ok = td[d + 1] == (hsize_t)h->tshape[d];
    if (ok && h->ninf > 0) {
        sp = H5Dget_space(h->dindex);
        ok = H5Sget_simple_extent_ndims(sp) == 2;
        if (ok)
            H5Sget_simple_extent_dims(sp, id, NULL);
        H5Sclose(sp);
        ok = ok && id[0] == td[0] && id[1] == (hsize_t)h->ninf;
    }
    if (ok && h->dsums >= 0) {
        hsize_t sd[1] = {0};
        sp = H5Dget_space(h->dsums);
        ok = H5Sget_simple_extent_ndims(sp) == 1;
        if (ok)
            H5Sget_simple_extent_dims(sp, sd, NULL);
        H5Sclose(sp);
        ok = ok && sd[0] == td[0];
    }
    if (ok && h->ninf == 0)
        ok = td[0] <= 1;
    if (!ok) {
        close_handles(h);
        return it_error_set(IT_EIO, "the datasets of tensor '%s' do not match its shape, tile size and "
                            "windows: the file is damaged or was changed by other software", h->name);
    }
    h->tiles_chunk_rows = chunk_rows(h->dtiles);
    h->bits_chunk_rows = chunk_rows(h->dbits);
    int64_t rows = (int64_t)td[0];
    if ((rc = coords_room(h, rows + 1))) {
        close_handles(h);
        return rc;
    }
    if (rows > 0 && h->ninf > 0 &&
        H5Dread(h->dindex, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, h->coords) < 0) {
        close_handles(h);
        return h5fail("reading the tile index of tensor", h->name);
    }
    h->nrows = 0;
    h->rowcap = rows;
    it_free(h->table);
    h->table = NULL;
    h->tsize = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (table_find(h, h->coords + r * h->ninf) >= 0) {
            close_handles(h);
            return it_error_set(IT_EIO, "the tile index of tensor '%s' lists a tile twice: the file is "
                                "damaged", h->name);
        }
        if ((rc = table_add(h))) { /* row r: h->nrows == r */
            close_handles(h);
            return rc;
        }
    }
    h->loaded = 1;
    *present = 1;
    return IT_OK;
}

/* Set the row count of the datasets (tiles, bits, and index and sums when
 * the tensor has them). */
static int fit_rows(h5tensor *h, int64_t rows)
{
    hsize_t td[IT_MAX_DIMS + 1], bd[2] = {(hsize_t)rows, (hsize_t)h->row_bytes},
            id[2] = {(hsize_t)rows, (hsize_t)h->ninf};
    td[0] = (hsize_t)rows;
    for (int d = 0; d < h->ndim; d++)
        td[d + 1] = (hsize_t)h->tshape[d];
    hsize_t sd[1] = {(hsize_t)rows};
    if (H5Dset_extent(h->dtiles, td) < 0 || H5Dset_extent(h->dbits, bd) < 0 ||
        (h->ninf > 0 && H5Dset_extent(h->dindex, id) < 0) || (h->dsums >= 0 && H5Dset_extent(h->dsums, sd) < 0))
        return h5fail("resizing the datasets of tensor", h->name);
    h->rowcap = rows;
    return IT_OK;
}

/* Write or read row `row` of dataset d: `cols` trailing dims given. */
static int row_io(hid_t d, hid_t mtype, int64_t row, int rank, const hsize_t *tail, void *buf, int write)
{
    hsize_t start[IT_MAX_DIMS + 1] = {0}, count[IT_MAX_DIMS + 1];
    start[0] = (hsize_t)row;
    count[0] = 1;
    for (int i = 1; i < rank; i++)
        count[i] = tail[i - 1];
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0)
        e = write ? H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf) : H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return e < 0 ? -1 : 0;
}

/* The checksum of a tile's bytes kept in `sums`: against damage, not an
 * adversary.  Four lanes of multiply-rotate over little-endian 8-byte words
 * (several GB/s), then the lanes, the tail and the length. */
static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t tile_sum(const void *data, size_t n)
{
    const unsigned char *b = data;
    const uint64_t k1 = 0x9E3779B185EBCA87ull, k2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t lane[4] = {k1, k2, k1 ^ k2, k1 + k2}, r = (uint64_t)n * k1;
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; l++) {
            const unsigned char *q = b + i + 8 * l;
            uint64_t w = (uint64_t)q[0] | (uint64_t)q[1] << 8 | (uint64_t)q[2] << 16 | (uint64_t)q[3] << 24 |
                         (uint64_t)q[4] << 32 | (uint64_t)q[5] << 40 | (uint64_t)q[6] << 48 | (uint64_t)q[7] << 56;
            lane[l] = rotl64(lane[l] + w * k2, 31) * k1;
        }
    for (int l = 0; l < 4; l++)
        r = rotl64(r ^ lane[l], 27) * k1 + k2;
    for (; i < n; i++)
        r = (r ^ b[i]) * k1;
    r ^= r >> 33;
    r *= k2;
    return r ^ (r >> 29);
}

/* ---- the backend ---------------------------------------------------------- */

static int deleted(const h5tensor *h)
{
    return it_error_set(IT_ESTATE, "tensor '%s' was deleted from %s (clear_tensor); create it again",
                        h->name, h->file->path);
}

static int h5_load(void *ctx, it_tile_io *io, int *found)
{
    h5tensor *h = ctx;
    int present, rc;
    *found = 0;
    if (h->deleted)
        return deleted(h);
    if ((rc = open_tiles(h, 0, &present)) || !present)
        return rc;
    int64_t row = table_find(h, io->coord);
    if (row < 0)
        return IT_OK;
    int64_t nbytes = (io->nbits + 7) / 8;
    if (nbytes > h->row_bytes)
        return it_error_set(IT_EIO, "a tile of tensor '%s' needs %lld bitmap bytes but the file has %lld",
                            h->name, (long long)nbytes, (long long)h->row_bytes);
    if (!row_stored(h->dtiles, h->tiles_chunk_rows, row) || !row_stored(h->dbits, h->bits_chunk_rows, row))
        return it_error_set(IT_EIO, "a tile of tensor '%s' listed in %s is missing from the file (a damaged "
                            "chunk index)", h->name, h->file->path);
    hsize_t tail[IT_MAX_DIMS];
    hid_t mt = file_type(h->dtype);
    for (int d = 0; d < h->ndim; d++)
        tail[d] = (hsize_t)h->tshape[d];
    int bad = row_io(h->dtiles, mt, row, h->ndim + 1, tail, io->buf->data, 0) < 0;
    H5Tclose(mt);
    if (bad)
        return h5fail("reading a tile of tensor", h->name);
    uint64_t sum = 0;
    if (h->dsums >= 0 && row_io(h->dsums, H5T_NATIVE_UINT64, row, 1, NULL, &sum, 0) < 0)
        return h5fail("reading a tile checksum of tensor", h->name);
    if (h->dsums >= 0 && sum != tile_sum(io->buf->data, io->buf->nbytes))
        return it_error_set(IT_EIO, "a tile of tensor '%s' in %s does not match its checksum: the file is "
                            "damaged", h->name, h->file->path);
    unsigned char *row_buf = it_malloc((size_t)h->row_bytes);
    if (!row_buf)
        return it_error_set(IT_ENOMEM, "out of memory reading a tile bitmap");
    tail[0] = (hsize_t)h->row_bytes;
    if (row_io(h->dbits, H5T_NATIVE_UINT8, row, 2, tail, row_buf, 0) < 0) {
        it_free(row_buf);
        return h5fail("reading a tile bitmap of tensor", h->name);
    }
    /* bit b is bit b % 8 of byte b / 8: the little-endian layout of the
     * core's 64-bit words */
    memcpy(io->bits, row_buf, (size_t)nbytes);
    it_free(row_buf);
    *found = 1;
    return IT_OK;
}

static int h5_store(void *ctx, const it_tile_io *io)
{
    h5tensor *h = ctx;
    it_h5file *f = h->file;
    int present, rc;
    if ((rc = need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r')", f->path);
    if (h->deleted)
        return deleted(h);
    if ((rc = open_tiles(h, 1, &present)))
        return rc;
    int64_t nbytes = (io->nbits + 7) / 8;
    if (nbytes > h->row_bytes)
        return it_error_set(IT_ESTATE, "internal error: a tile bitmap is wider than its row");
    if (f->failed)
        return it_error_set(IT_EIO, "an earlier write to %s failed: close and reopen it", f->path);
    int64_t row = table_find(h, io->coord);
    int fresh = row < 0;
    unsigned char *row_buf = it_calloc((size_t)h->row_bytes, 1);
    if (!row_buf)
        return it_error_set(IT_ENOMEM, "out of memory writing a tile bitmap");
    if (fresh) {
        row = h->nrows;
        if ((rc = coords_room(h, row + 1)) || (rc = table_room(h))) {
            it_free(row_buf);
            return rc;
        }
        if (row + 1 > h->rowcap && (rc = fit_rows(h, IT_MAX(2 * h->rowcap, row + 1)))) {
            f->failed = 1;
            it_free(row_buf);
            return rc;
        }
    }
    hsize_t tail[IT_MAX_DIMS];
    hid_t mt = file_type(h->dtype);
    for (int d = 0; d < h->ndim; d++)
        tail[d] = (hsize_t)h->tshape[d];
    /* values and their checksum, then bitmap, then (new tiles) the index
     * row: nothing commits in between, and a new row only counts once its
     * index row is there */
    int bad = row_io(h->dtiles, mt, row, h->ndim + 1, tail, io->buf->data, 1) < 0;
    H5Tclose(mt);
    uint64_t sum = tile_sum(io->buf->data, io->buf->nbytes);
    if (!bad && h->dsums >= 0)
        bad = row_io(h->dsums, H5T_NATIVE_UINT64, row, 1, NULL, &sum, 1) < 0;
    if (bad) {
        f->failed = 1;
        it_free(row_buf);
        return h5fail("writing a tile of tensor", h->name);
    }
    memcpy(row_buf, io->bits, (size_t)nbytes);
    if (nbytes > 0 && io->nbits % 8)
        row_buf[nbytes - 1] &= (unsigned char)((1u << (io->nbits % 8)) - 1);
    tail[0] = (hsize_t)h->row_bytes;
    bad = row_io(h->dbits, H5T_NATIVE_UINT8, row, 2, tail, row_buf, 1) < 0;
    it_free(row_buf);
    if (bad) {
        f->failed = 1;
        return h5fail("writing a tile bitmap of tensor", h->name);
    }
    if (fresh) {
        memcpy(h->coords + row * h->ninf, io->coord, sizeof(int64_t) * (size_t)h->ninf);
        tail[0] = (hsize_t)h->ninf;
        if (h->ninf > 0 && row_io(h->dindex, H5T_NATIVE_INT64, row, 2, tail, (void *)io->coord, 1) < 0) {
            f->failed = 1;
            return h5fail("writing the tile index of tensor", h->name);
        }
        if ((rc = table_add(h)))
            return rc; /* cannot fail: room was made above */
    }
    if (it_h5j_pending_bytes(f->fid) > COMMIT_THRESHOLD)
        return commit(f);
    return IT_OK;
}

static void h5_free(void *ctx)
{
    h5tensor *h = ctx;
    it_h5file *f = h->file;
    for (h5tensor **pp = &f->tensors; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    /* rows past the count would be committed as garbage: cut them now */
    if (f->fid >= 0 && h->loaded && h->dtiles >= 0 && h->rowcap != h->nrows && !f->readonly)
        fit_rows(h, h->nrows);
    close_handles(h);
    it_free(h->name);
    it_free(h->coords);
    it_free(h->table);
    it_free(h);
    it_h5_unref(f);
}

int it_h5_attach(it_h5file *f, const char *id, it_tensor *t)
{
    int rc;
    if ((rc = need_open(f)))
        return rc;
    const it_tensor_spec *s = it_tensor_get_spec(t);
    int64_t dom = it_tensor_max_domain(t);
    if (dom > ((int64_t)1) << 34)
        return it_error_set(IT_ETOOBIG, "up to %lld windows can touch one tile: use a smaller tile_size",
                            (long long)dom);
    h5tensor *h = it_calloc(1, sizeof *h);
    if (!h || !(h->name = escape(id))) {
        it_free(h);
        return it_error_set(IT_ENOMEM, "out of memory attaching a tensor");
    }
    for (h5tensor *o = f->tensors; o; o = o->next)
        if (!o->deleted && strcmp(o->name, h->name) == 0) {
            /* two slot tables over one group would hand out the same rows */
            it_free(h->name);
            it_free(h);
            return it_error_set(IT_ESTATE, "tensor '%s' is already attached to %s", id, f->path);
        }
    h->file = f;
    h->dtype = s->dtype;
    h->ndim = s->ndim;
    it_tensor_tile_shape(t, h->tshape);
    uint64_t tile_bytes = it_dtype_size(s->dtype);
    for (int d = 0; d < s->ndim; d++) {
        h->ninf += s->shape[d] == IT_DIM_INFINITE;
        tile_bytes *= (uint64_t)h->tshape[d];
    }
    h->row_bytes = IT_MAX((dom + 7) / 8, 1);
    h->grp = h->dtiles = h->dindex = h->dbits = h->dsums = -1;
    if (tile_bytes >= ((uint64_t)1) << 32) {
        it_free(h->name);
        it_free(h);
        return it_error_set(IT_ETOOBIG, "tiles of %llu bytes exceed HDF5's 4 GiB chunk limit: use a smaller "
                            "tile_size", (unsigned long long)tile_bytes);
    }
    it_backend b = {IT_BACKEND_VERSION, h5_load, h5_store, h5_free};
    it_h5_ref(f);
    h->next = f->tensors;
    f->tensors = h;
    return it_tensor_set_backend(t, &b, h, f->readonly ? IT_BACKEND_READONLY : 0);
}
