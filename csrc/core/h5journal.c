/*
 * h5journal.c - a crash-safe journaling virtual file driver for HDF5
 * (it_h5journal.h has the contract, h5jinternal.h the design): the
 * callbacks HDF5 calls, the registry of open handles, the public API, and
 * the names of files next to a file.  An open runs recovery first
 * (h5jrecover.c), unless another handle of this process has the file open
 * (the tentative open) or the file is being created; flush and close
 * commit (h5jcommit.c); reads and writes go through the overlay
 * (h5jpages.c).
 */
#define _GNU_SOURCE /* flock */

#include "h5jinternal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* the registry of open handles                                         */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static jfile *registry;

/* Another open handle of ours on the same file (dev/ino)?  Caller locks. */
static int reg_has_other(const jfile *f)
{
    for (const jfile *o = registry; o; o = o->reg_next)
        if (o != f && o->dev == f->dev && o->ino == f->ino)
            return 1;
    return 0;
}

static void reg_add(jfile *f)
{
    pthread_mutex_lock(&reg_lock);
    f->reg_next = registry;
    registry = f;
    pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(jfile *f)
{
    pthread_mutex_lock(&reg_lock);
    for (jfile **pp = &registry; *pp; pp = &(*pp)->reg_next) {
        if (*pp == f) {
            *pp = f->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

/* ------------------------------------------------------------------ */
/* names next to the file                                               */

#define NAME_LIMIT 255 /* NAME_MAX on Linux and the BSDs */

char *it_h5j_sibling(const char *path, const char *suffix, size_t reserve)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dlen = (size_t)(base - path), blen = strlen(base), slen = strlen(suffix);
    if (blen + slen + reserve <= NAME_LIMIT) {
        char *s = it_malloc(dlen + blen + slen + 1);
        if (s) {
            memcpy(s, path, dlen + blen);
            memcpy(s + dlen + blen, suffix, slen + 1);
        }
        return s;
    }
    /* FNV-1a over the whole component keeps cut names of different files apart */
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < blen; i++)
        h = (h ^ (unsigned char)base[i]) * 0x100000001b3u;
    size_t keep = slen + reserve + 17 < NAME_LIMIT ? NAME_LIMIT - slen - reserve - 17 : 0;
    if (keep > blen)
        keep = blen;
    char *s = it_malloc(dlen + keep + 17 + slen + 1);
    if (s) {
        memcpy(s, path, dlen + keep);
        snprintf(s + dlen + keep, 18, "~%016llx", (unsigned long long)h);
        memcpy(s + dlen + keep + 17, suffix, slen + 1);
    }
    return s;
}

char *it_h5j_journal_path(const char *path) { return it_h5j_sibling(path, "-journal", 0); }

/* ------------------------------------------------------------------ */
/* driver callbacks                                                     */

#define INFO_MAGIC 0x4a354849u /* tags our fapl driver info */

typedef struct jinfo {
    uint32_t magic;
    uint32_t flags;
} jinfo;

static hid_t driver_id = H5I_INVALID_HID; /* registered by it_h5j_set_fapl_flags */

static void *j_fapl_copy(const void *info)
{
    jinfo *c = malloc(sizeof *c); /* HDF5 owns it: the C library, not it_malloc */
    if (c)
        *c = *(const jinfo *)info;
    return c;
}

static herr_t j_fapl_free(void *info)
{
    free(info);
    return 0;
}

static void *j_fapl_get(H5FD_t *file)
{
    jinfo i = {INFO_MAGIC, ((jfile *)file)->flags};
    return j_fapl_copy(&i);
}

static herr_t j_terminate(void)
{
    driver_id = H5I_INVALID_HID;
    return 0;
}

static unsigned fapl_flags(hid_t fapl)
{
    const jinfo *i = NULL;
    H5E_BEGIN_TRY
    {
        i = H5Pget_driver_info(fapl);
    }
    H5E_END_TRY;
    unsigned flags = (i && i->magic == INFO_MAGIC) ? i->flags : 0;
    const char *env = getenv("IT_H5J_FSYNC");
    if (env && *env && strcmp(env, "0") != 0)
        flags |= IT_H5J_FSYNC;
    return flags;
}

static int ignore_disabled_locks(hid_t fapl)
{
    const char *env = getenv("HDF5_USE_FILE_LOCKING");
    if (env && strcmp(env, "BEST_EFFORT") == 0)
        return 1;
#if H5_VERSION_GE(1, 12, 1) || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)
    hbool_t use = 1, ignore = 0;
    if (H5Pget_file_locking(fapl, &use, &ignore) >= 0)
        return ignore != 0;
#endif
    return 0;
}

static void free_handle(jfile *f)
{
    it__h5j_ov_clear(&f->ov);
    if (f->jfd >= 0)
        close(f->jfd);
    if (f->fd >= 0)
        close(f->fd);
    it_free(f->path);
    it_free(f->jpath);
    it_free(f);
}

static jfile *new_handle(const char *name, unsigned flags, hid_t fapl)
{
    size_t n = strlen(name);
    jfile *f = it_calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->fd = f->jfd = -1;
    f->path = it_malloc(n + 1);
    f->jpath = it_h5j_journal_path(name);
    if (!f->path || !f->jpath) {
        free_handle(f);
        return NULL;
    }
    memcpy(f->path, name, n + 1);
    f->rw = (flags & H5F_ACC_RDWR) != 0;
    f->flags = fapl_flags(fapl);
    f->ignore_disabled_locks = ignore_disabled_locks(fapl);
    f->pid = getpid();
    return f;
}

static int open_flags(unsigned flags)
{
    int o = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & H5F_ACC_TRUNC)
        o |= O_TRUNC;
    if (flags & H5F_ACC_CREAT)
        o |= O_CREAT;
    if (flags & H5F_ACC_EXCL)
        o |= O_EXCL;
    return o | O_CLOEXEC;
}

/* Recovery, or (for a new file) dropping a journal left under its name. */
static int prepare(jfile *f, unsigned flags, int shared)
{
    if (shared)
        return 0; /* our other handle recovered it and owns the journal */
    int fresh = (flags & (H5F_ACC_TRUNC | H5F_ACC_EXCL)) ||
                ((flags & H5F_ACC_CREAT) && f->disk_size == 0);
    if (!fresh)
        return it__h5j_recover(f);
    if (unlink(f->jpath) < 0 && errno != ENOENT) {
        JERR(H5E_CANTOPENFILE, "cannot remove the old journal %s: %s", f->jpath, strerror(errno));
        return -1;
    }
    return 0;
}

static H5FD_t *j_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr)
{
    if (!name || !*name || maxaddr == 0 || (maxaddr != HADDR_UNDEF && maxaddr > MAXADDR)) {
        JERR(H5E_BADVALUE, "invalid file name or maxaddr");
        return NULL;
    }
    jfile *f = new_handle(name, flags, fapl);
    if (!f) {
        JERR(H5E_CANTALLOC, "out of memory opening %s", name);
        return NULL;
    }
    struct stat st;
    f->fd = open(name, open_flags(flags), 0666);
    if (f->fd < 0 || fstat(f->fd, &st) < 0) {
        JERR(H5E_CANTOPENFILE, "unable to open %s: %s", name, strerror(errno));
        free_handle(f);
        return NULL;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    /* Recovery updates these when it replays or loads a journal. */
    f->disk_size = f->eof = f->committed_eoa = (haddr_t)st.st_size;
    pthread_mutex_lock(&reg_lock);
    int shared = reg_has_other(f);
    pthread_mutex_unlock(&reg_lock);
    if (prepare(f, flags, shared) < 0) {
        free_handle(f);
        return NULL;
    }
    reg_add(f);
    return &f->pub;
}

/* May this handle remove the journal?  Only if no other process has the
 * file: HDF5 also closes a handle whose lock() failed because a live
 * writer holds the file, and that writer's journal must stay.  Without
 * working locks, only a handle that wrote the journal removes it. */
static int owns_file(jfile *f)
{
    if (flock(f->fd, LOCK_EX | LOCK_NB) == 0)
        return 1;
    return errno != EWOULDBLOCK && f->jfd >= 0;
}

int it__h5j_foreign(const jfile *f) { return f->pid != getpid(); }

static herr_t j_close(H5FD_t *file)
{
    jfile *f = (jfile *)file;
    herr_t rc = 0;
    if (it__h5j_foreign(f)) { /* the parent's file, lock and journal stay as they are */
        reg_remove(f);
        free_handle(f);
        return 0;
    }
    if (it__h5j_commit(f) < 0)
        f->abandoned = 1; /* as in j_flush(closing) */
    reg_remove(f);
    pthread_mutex_lock(&reg_lock);
    int shared = reg_has_other(f);
    pthread_mutex_unlock(&reg_lock);
    /* Remove the (empty) journal unless a commit failed and left one for
     * recovery, or another handle (of this process or another) uses it. */
    if (f->rw && !f->journal_dirty && !shared && owns_file(f) && unlink(f->jpath) < 0 &&
        errno != ENOENT) {
        JERR(H5E_CANTCLOSEFILE, "cannot remove the journal %s: %s", f->jpath, strerror(errno));
        rc = -1;
    }
    free_handle(f);
    return rc;
}

static int j_cmp(const H5FD_t *a, const H5FD_t *b)
{
    const jfile *x = (const jfile *)a, *y = (const jfile *)b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    return 0;
}

static herr_t j_query(const H5FD_t *file, unsigned long *flags)
{
    (void)file;
    /* As sec2, less SWMR: readers would not see the overlay. */
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_POSIX_COMPAT_HANDLE |
             H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
    return 0;
}

static haddr_t j_get_eoa(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const jfile *)file)->eoa;
}

static herr_t j_set_eoa(H5FD_t *file, H5FD_mem_t type, haddr_t addr)
{
    (void)type;
    ((jfile *)file)->eoa = addr;
    return 0;
}

static haddr_t j_get_eof(const H5FD_t *file, H5FD_mem_t type)
{
    (void)type;
    return ((const jfile *)file)->eof;
}

static herr_t j_get_handle(H5FD_t *file, hid_t fapl, void **handle)
{
    (void)fapl;
    if (!handle) {
        JERR(H5E_BADVALUE, "file handle pointer is NULL");
        return -1;
    }
    *handle = &((jfile *)file)->fd;
    return 0;
}

/* addr + size stays within what the driver addresses. */
static int range_ok(haddr_t addr, size_t size)
{
    return addr != HADDR_UNDEF && addr <= MAXADDR && (haddr_t)size <= MAXADDR - addr;
}

static herr_t j_read_real(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size,
                          void *buf)
{
    (void)type;
    (void)dxpl;
    jfile *f = (jfile *)file;
    if (!range_ok(addr, size)) {
        JERR(H5E_OVERFLOW, "%s: read at %llu of %zu bytes overflows", f->path,
             (unsigned long long)addr, size);
        return -1;
    }
    if (it__h5j_read_disk(f, addr, size, buf) < 0)
        return -1;
    it__h5j_patch_range(f, addr, size, IT_MIN(f->committed_eoa, f->eof), buf);
    return 0;
}

static int disk_write(jfile *f, haddr_t addr, size_t size, const unsigned char *buf)
{
    if (it_pwrite_all(f->fd, buf, size, addr) < 0) {
        JERR(H5E_WRITEERROR, "%s: write of %zu bytes at %llu failed: %s", f->path, size,
             (unsigned long long)addr, strerror(errno));
        return -1;
    }
    f->disk_size = IT_MAX(f->disk_size, addr + size);
    return 0;
}

static herr_t j_read(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, void *buf)
{
    jfile *f = (jfile *)file;
    if (f->abandoned) {
        JERR(H5E_READERROR, "%s: a write failed since the last commit: close and reopen it", f->path);
        return -1;
    }
    return j_read_real(file, type, dxpl, addr, size, buf);
}

static herr_t j_write(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size,
                      const void *buf)
{
    (void)type;
    (void)dxpl;
    jfile *f = (jfile *)file;
    if (it__h5j_refuse_if_broken(f) < 0)
        return -1;
    if (it__h5j_foreign(f)) {
        JERR(H5E_WRITEERROR, "%s: opened by process %ld; this process (a fork of it) may only read it",
             f->path, (long)f->pid);
        return -1;
    }
    if (!f->rw || !range_ok(addr, size)) {
        JERR(f->rw ? H5E_OVERFLOW : H5E_WRITEERROR, "%s: %s", f->path,
             f->rw ? "write address overflows" : "file is read-only");
        return -1;
    }
    const unsigned char *p = buf;
    haddr_t end = addr + size;
    haddr_t split = IT_MIN(IT_MAX(f->committed_eoa, addr), end);
    /* a failed write is not reported to HDF5 (its caches do not recover
     * from one: a later commit could hold a half-written chunk); the handle
     * stops committing instead, and the next flush reports the failure */
    if (f->abandoned)
        return 0;
    if ((split > addr && it__h5j_overlay_write(f, addr, (size_t)(split - addr), p) < 0) ||
        (end > split && disk_write(f, split, (size_t)(end - split), p + (split - addr)) < 0)) {
        f->abandoned = 1;
        return 0;
    }
    f->eof = IT_MAX(f->eof, end);
    return 0;
}

static herr_t j_flush(H5FD_t *file, hid_t dxpl, hbool_t closing)
{
    (void)dxpl;
    jfile *f = (jfile *)file;
    if (it__h5j_commit(f) < 0) {
        if (!closing)
            return -1;
        f->abandoned = 1; /* the file keeps its last commit; let HDF5 release the id */
    }
    return 0;
}

/* HDF5 wants the file to end at the EOA.  The change is made at the next
 * commit: shrinking now could cut off data the committed state uses. */
static herr_t j_truncate(H5FD_t *file, hid_t dxpl, hbool_t closing)
{
    (void)dxpl;
    (void)closing;
    jfile *f = (jfile *)file;
    if (it__h5j_refuse_if_broken(f) < 0)
        return -1;
    if (f->rw && !it__h5j_foreign(f))
        f->eof = f->eoa;
    return 0;
}

static herr_t j_lock(H5FD_t *file, hbool_t rw)
{
    jfile *f = (jfile *)file;
    if (flock(f->fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
        return 0;
    if (errno == ENOSYS && f->ignore_disabled_locks)
        return 0;
    JERR(H5E_CANTLOCKFILE, "unable to lock %s (%s): %s", f->path, rw ? "exclusive" : "shared",
         errno == EWOULDBLOCK ? "another process has it open" : strerror(errno));
    return -1;
}

static herr_t j_unlock(H5FD_t *file)
{
    jfile *f = (jfile *)file;
    if (it__h5j_foreign(f))
        return 0; /* the lock belongs to the open file description the parent still uses */
    if (flock(f->fd, LOCK_UN) == 0 || (errno == ENOSYS && f->ignore_disabled_locks))
        return 0;
    JERR(H5E_CANTUNLOCKFILE, "unable to unlock %s: %s", f->path, strerror(errno));
    return -1;
}

#if H5_VERSION_GE(1, 14, 0)
static herr_t j_del(const char *name, hid_t fapl)
{
    (void)fapl;
    char *jpath = it_h5j_journal_path(name);
    if (!jpath)
        return -1;
    int rc = unlink(name) < 0 ? -1 : 0;
    if (unlink(jpath) < 0 && errno != ENOENT)
        rc = -1;
    it_free(jpath);
    return rc;
}
#endif

static const H5FD_class_t jclass = {
#if H5_VERSION_GE(1, 14, 0)
    .version = H5FD_CLASS_VERSION,
    .value = 611, /* unregistered driver values start at 512 */
#endif
    .name = "it_journal",
    .maxaddr = MAXADDR,
    .fc_degree = H5F_CLOSE_WEAK,
    .terminate = j_terminate,
    .fapl_size = sizeof(jinfo),
    .fapl_get = j_fapl_get,
    .fapl_copy = j_fapl_copy,
    .fapl_free = j_fapl_free,
    .open = j_open,
    .close = j_close,
    .cmp = j_cmp,
    .query = j_query,
    .get_eoa = j_get_eoa,
    .set_eoa = j_set_eoa,
    .get_eof = j_get_eof,
    .get_handle = j_get_handle,
    .read = j_read,
    .write = j_write,
    .flush = j_flush,
    .truncate = j_truncate,
    .lock = j_lock,
    .unlock = j_unlock,
#if H5_VERSION_GE(1, 14, 0)
    .del = j_del,
#endif
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

/* ------------------------------------------------------------------ */
/* public API                                                           */

int it_h5j_set_fapl_flags(hid_t fapl, unsigned flags)
{
    if (flags & ~IT_H5J_FSYNC)
        return it_error_set(IT_EINVAL, "it_h5j_set_fapl_flags: unknown flags 0x%x", flags);
    if (driver_id < 0 || H5Iis_valid(driver_id) <= 0) {
        driver_id = H5FDregister(&jclass);
        if (driver_id < 0)
            return it_error_set(IT_EIO, "HDF5 refused to register the journaling driver");
    }
    jinfo info = {INFO_MAGIC, flags};
    if (H5Pset_driver(fapl, driver_id, &info) < 0)
        return it_error_set(IT_EINVAL, "H5Pset_driver failed: is %lld a file access property list?",
                            (long long)fapl);
    return IT_OK;
}

int it_h5j_set_fapl(hid_t fapl) { return it_h5j_set_fapl_flags(fapl, 0); }

int64_t it_h5j_pending_bytes(hid_t file)
{
    void *handle = NULL;
    herr_t rc;
    H5E_BEGIN_TRY
    {
        rc = H5Fget_vfd_handle(file, H5P_DEFAULT, &handle);
    }
    H5E_END_TRY;
    if (rc < 0 || !handle)
        return -1;
    int64_t bytes = -1;
    pthread_mutex_lock(&reg_lock);
    for (const jfile *f = registry; f; f = f->reg_next)
        if ((const void *)&f->fd == handle)
            bytes = (int64_t)f->ov.npages * PAGE;
    pthread_mutex_unlock(&reg_lock);
    return bytes;
}

void it_h5j_abandon(hid_t file)
{
    void *handle = NULL;
    herr_t rc;
    H5E_BEGIN_TRY { rc = H5Fget_vfd_handle(file, H5P_DEFAULT, &handle); } H5E_END_TRY;
    if (rc < 0 || !handle)
        return;
    pthread_mutex_lock(&reg_lock);
    for (jfile *f = registry; f; f = f->reg_next)
        if ((void *)&f->fd == handle)
            f->abandoned = 1;
    pthread_mutex_unlock(&reg_lock);
}
