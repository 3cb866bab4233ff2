/*
 * h5file.c - the HDF5 files of the store: opening one through the
 * journaling driver (it_h5journal.h), creating a new one under a temporary
 * name, the files this process has open, committing, closing and
 * reopening.  Calls h5rows.c (a commit cuts every attached tensor's
 * datasets to their row count; a close closes their handles) and h5util.c.
 */
#define _POSIX_C_SOURCE 200809L /* kill, opendir */
#define _DEFAULT_SOURCE         /* flock */
#include "h5internal.h"

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

/* ---- creating files -------------------------------------------------------- */

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

/*
 * A new file is built under a temporary name next to the final one (the
 * root attribute and the tensors group), closed, and renamed into place, so
 * a crash while creating leaves either no file / the old file ("w") or a
 * complete empty store, never a file HDF5 cannot open.  A journal left
 * under the final name belongs to whatever was there before: it is removed
 * before the rename, or it would be replayed onto the new file.
 */
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
        rc = it__h5_fail("creating", path);
    if (rc == IT_OK)
        rc = it__h5_write_ints_attr(fid, "infinite_tensor_format", &v, -1);
    if (g >= 0)
        H5Gclose(g);
    if (fid >= 0 && H5Fclose(fid) < 0 && rc == IT_OK)
        rc = it__h5_fail("creating", path);
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

/* ---- files open in this process ------------------------------------------ */

/*
 * HDF5 hands a second H5Fopen of an open file the same shared file, and the
 * file lock is per open file description, so nothing below would stop a
 * second it_h5file on one file: each would keep its own slot tables and
 * hand out the same rows.  open_fid refuses a file (same device and inode)
 * that another it_h5file of this process has open, unless both are
 * read-only.  A forked child inherits the list; entries of another pid are
 * not its own.
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

/* ---- opening, committing, closing ------------------------------------------ */

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Refuse a file whose format attribute this version does not read. */
static int check_format(hid_t fid, const char *path)
{
    if (!it__h5_attr_exists(fid, "infinite_tensor_format"))
        return IT_OK; /* a new file, a 0.3 file or foreign data: tensors are checked one by one */
    int64_t v[1];
    int n = 0, rc = it__h5_read_ints_attr(fid, "infinite_tensor_format", v, 1, &n);
    if (rc == IT_OK && (n != 1 || v[0] < 1 || v[0] > IT_H5_FORMAT))
        rc = it_error_set(IT_EINVAL, "%s has infinite_tensor format %lld; this version reads format %d",
                          path, n == 1 ? (long long)v[0] : -1LL, IT_H5_FORMAT);
    return rc;
}

/* Open (or first create) f->path in mode and its /tensors group. */
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
            rc = it__h5_fail(mode == IT_H5_READ ? "opening (read-only)" : "opening", f->path);
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
            rc = it__h5_fail("opening group", "tensors");
        if (rc == IT_OK && !f->readonly && !it__h5_attr_exists(f->fid, "infinite_tensor_format")) {
            int64_t v = IT_H5_FORMAT;
            rc = it__h5_write_ints_attr(f->fid, "infinite_tensor_format", &v, -1);
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

/* open_fid_unlisted, refusing a file open here (above), then listing it. */
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

/* Once: HDF5's errors come back as messages (it__h5_fail), not on stderr. */
static void quiet(void)
{
    static int done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = 1;
    }
}

static int h5u_open(const char *path, int mode, int gzip_level, it_h5file **out)
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
    if (!f || !(f->path = it__h5_dupstr(path))) {
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

/* Cut every attached tensor's datasets to their row count, then commit. */
int it__h5_commit(it_h5file *f)
{
    int rc = IT_OK;
    if (f->failed)
        return it_error_set(IT_EIO, "an earlier write to %s failed: close and reopen it", f->path);
    for (h5tensor *h = f->tensors; h && rc == IT_OK; h = h->next)
        if (h->loaded && h->dtiles >= 0 && h->rowcap != h->nrows)
            rc = it__h5_fit_rows(h, h->nrows);
    if (rc == IT_OK && H5Fflush(f->fid, H5F_SCOPE_GLOBAL) < 0)
        rc = it__h5_fail("flushing", f->path);
    if (rc != IT_OK)
        f->failed = 1;
    return rc;
}

static int h5u_flush(it_h5file *f)
{
    if (f->fid < 0)
        return it_error_set(IT_ESTATE, "the HDF5 store %s is closed", f->path);
    if (f->readonly)
        return IT_OK;
    return it__h5_commit(f);
}

static int h5u_close(it_h5file *f)
{
    int rc = IT_OK;
    if (f->fid < 0)
        return IT_OK;
    if (!f->readonly)
        rc = it__h5_commit(f);
    if (f->failed)
        it_h5j_abandon(f->fid);
    f->failed = 0;
    for (h5tensor *h = f->tensors; h; h = h->next)
        it__h5_close_handles(h);
    if (f->tgrp >= 0)
        H5Gclose(f->tgrp);
    forget_open(f);
    /* even after a failed commit the handle goes: the journal keeps the
     * file at its last commit */
    if (H5Fclose(f->fid) < 0) {
        if (rc == IT_OK)
            rc = it__h5_fail("closing", f->path);
    }
    f->fid = f->tgrp = -1;
    return rc;
}

static int h5u_reopen(it_h5file *f)
{
    if (f->fid >= 0)
        return IT_OK;
    return open_fid(f, f->readonly ? IT_H5_READ : IT_H5_APPEND);
}

static void h5u_unref(it_h5file *f)
{
    if (!f || --f->refs > 0)
        return;
    h5u_close(f);
    it_error_clear();
    it_free(f->path);
    it_free(f);
}

/* ---- the public entry points, each under the store's lock (h5util.c) ---- */

int it_h5_open(const char *path, int mode, int gzip_level, it_h5file **out)
{
    it__h5_lock();
    int rc = h5u_open(path, mode, gzip_level, out);
    it__h5_unlock();
    return rc;
}

int it_h5_flush(it_h5file *f)
{
    it__h5_lock();
    int rc = h5u_flush(f);
    it__h5_unlock();
    return rc;
}

int it_h5_close(it_h5file *f)
{
    it__h5_lock();
    int rc = h5u_close(f);
    it__h5_unlock();
    return rc;
}

int it_h5_reopen(it_h5file *f)
{
    it__h5_lock();
    int rc = h5u_reopen(f);
    it__h5_unlock();
    return rc;
}

void it_h5_unref(it_h5file *f)
{
    it__h5_lock();
    h5u_unref(f);
    it__h5_unlock();
}
