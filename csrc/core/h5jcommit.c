/*
 * h5jcommit.c - the commit of the journaling driver (steps 1-3 of
 * h5jinternal.h): the overlay's dirty ranges as records, written to the
 * journal through a buffered writer that checksums them, then copied into
 * the file; the journal emptied.  A commit that fails before its journal is
 * complete leaves the old state (a later flush retries); one that fails
 * after marks the handle broken, and the next open replays the journal.
 * The test hook is called at the commit's ordering points.  Calls
 * h5jpages.c.
 */
#define _GNU_SOURCE /* ftruncate, fsync */

#include "h5jinternal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* it_h5j_set_test_hook (it_h5journal.h): called at the named points below. */
static it_h5j_hook_fn test_hook;

static void hook(const char *point)
{
    if (test_hook)
        test_hook(point);
}

void it_h5j_set_test_hook(it_h5j_hook_fn fn) { test_hook = fn; }

/* ------------------------------------------------------------------ */
/* journal writing                                                      */

/* Buffered sequential writer that checksums what it writes. */
typedef struct jwriter {
    int fd;
    haddr_t off;
    unsigned char *buf;
    size_t used;
    jsum sum;
} jwriter;

static int jw_flush(jwriter *w)
{
    if (w->used && it_pwrite_all(w->fd, w->buf, w->used, w->off) < 0)
        return -1;
    w->off += w->used;
    w->used = 0;
    return 0;
}

static int jw_put(jwriter *w, const void *data, size_t n)
{
    const unsigned char *p = data;
    it__h5j_sum_update(&w->sum, p, n);
    while (n > 0) {
        size_t k = IT_MIN(n, IO_CHUNK - w->used);
        memcpy(w->buf + w->used, p, k);
        w->used += k;
        p += k;
        n -= k;
        if (w->used == IO_CHUNK && jw_flush(w) < 0)
            return -1;
    }
    return 0;
}

/* One record of a commit: a page's dirty range clipped to the new size. */
typedef struct jrec {
    const jpage *page;
    uint32_t lo, hi;
} jrec;

/* Records of the overlay in address order; *n gets their number. */
static jrec *collect_records(jfile *f, size_t *n)
{
    jpage **pages = it__h5j_ov_sorted(&f->ov);
    jrec *recs = it_malloc((f->ov.npages ? f->ov.npages : 1) * sizeof *recs);
    if (!pages || !recs) {
        it_free(pages);
        it_free(recs);
        JERR(H5E_CANTALLOC, "%s: out of memory for a commit", f->path);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < f->ov.npages; i++) {
        const jpage *p = pages[i];
        haddr_t ps = p->index * (haddr_t)PAGE;
        uint32_t hi = p->hi;
        if (ps + hi > f->eof) /* bytes past the new size would be cut anyway */
            hi = f->eof > ps + p->lo ? (uint32_t)(f->eof - ps) : p->lo;
        if (hi > p->lo)
            recs[k++] = (jrec){p, p->lo, hi};
    }
    it_free(pages);
    *n = k;
    return recs;
}

static uint64_t journal_length(const jrec *recs, size_t n)
{
    uint64_t len = HEAD_BYTES + TAIL_BYTES;
    for (size_t i = 0; i < n; i++)
        len += REC_BYTES + (recs[i].hi - recs[i].lo);
    return len;
}

static int write_records(jfile *f, jwriter *w, const jrec *recs, size_t n)
{
    unsigned char h[HEAD_BYTES];
    memcpy(h, HEAD_MAGIC, 8);
    it__h5j_put_u32(h + 8, JVERSION);
    it__h5j_put_u32(h + 12, PAGE);
    it__h5j_put_u64(h + 16, n);
    it__h5j_put_u64(h + 24, f->eoa);
    it__h5j_put_u64(h + 32, f->eof);
    it__h5j_put_u64(h + 40, journal_length(recs, n));
    if (jw_put(w, h, sizeof h) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char r[REC_BYTES] = {0};
        it__h5j_put_u64(r, recs[i].page->index * (uint64_t)PAGE + recs[i].lo);
        it__h5j_put_u32(r + 8, recs[i].hi - recs[i].lo);
        if (jw_put(w, r, sizeof r) < 0 ||
            jw_put(w, recs[i].page->data + recs[i].lo, recs[i].hi - recs[i].lo) < 0)
            return -1;
    }
    unsigned char t[TAIL_BYTES];
    memcpy(t, TAIL_MAGIC, 8);
    it__h5j_put_u64(t + 8, it__h5j_sum_final(&w->sum));
    if (jw_put(w, t, sizeof t) < 0 || jw_flush(w) < 0)
        return -1;
    return 0;
}

/* fsync the directory holding the journal, so that its name is durable. */
static int sync_dir(const jfile *f)
{
    const char *slash = strrchr(f->jpath, '/');
    /* "name" -> ".", "/name" -> "/", "a/b/name" -> "a/b" */
    size_t n = !slash ? 1 : slash == f->jpath ? 1 : (size_t)(slash - f->jpath);
    char *dir = it_malloc(n + 1);
    if (!dir) {
        JERR(H5E_CANTALLOC, "out of memory");
        return -1;
    }
    memcpy(dir, slash ? f->jpath : ".", n);
    dir[n] = '\0';
    int rc = -1, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        JERR(H5E_CANTOPENFILE, "cannot open the directory %s: %s", dir, strerror(errno));
    } else {
        rc = it__h5j_sync_fd(dfd, dir);
        close(dfd);
    }
    it_free(dir);
    return rc;
}

static int open_journal(jfile *f)
{
    if (f->jfd >= 0)
        return 0;
    f->jfd = open(f->jpath, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (f->jfd < 0) {
        JERR(H5E_CANTOPENFILE, "cannot open the journal %s: %s", f->jpath, strerror(errno));
        return -1;
    }
    return (f->flags & IT_H5J_FSYNC) ? sync_dir(f) : 0;
}

/* Step 1 of a commit: a complete journal on disk. */
static int write_journal(jfile *f, const jrec *recs, size_t n)
{
    jwriter w = {f->jfd, 0, it_malloc(IO_CHUNK), 0, {0}};
    if (!w.buf) {
        JERR(H5E_CANTALLOC, "%s: out of memory for a commit", f->path);
        return -1;
    }
    it__h5j_sum_init(&w.sum);
    f->journal_dirty = 1;
    int rc = write_records(f, &w, recs, n);
    it_free(w.buf);
    if (rc == 0 && ftruncate(f->jfd, (off_t)w.off) < 0)
        rc = -1;
    if (rc < 0) {
        JERR(H5E_WRITEERROR, "cannot write the journal %s: %s", f->jpath, strerror(errno));
        return -1;
    }
    return 0;
}

/* Step 2: copy the records into the file and give it its new size. */
static int apply_records(jfile *f, const jrec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        haddr_t at = recs[i].page->index * (haddr_t)PAGE + recs[i].lo;
        if (it_pwrite_all(f->fd, recs[i].page->data + recs[i].lo, recs[i].hi - recs[i].lo, at) < 0) {
            JERR(H5E_WRITEERROR, "%s: write at %llu failed: %s", f->path,
                 (unsigned long long)at, strerror(errno));
            return -1;
        }
        hook("page-applied");
    }
    if (f->disk_size != f->eof && ftruncate(f->fd, (off_t)f->eof) < 0) {
        JERR(H5E_WRITEERROR, "%s: cannot resize to %llu: %s", f->path,
             (unsigned long long)f->eof, strerror(errno));
        return -1;
    }
    f->disk_size = f->eof;
    return 0;
}

/* Step 3: the journal is empty again; the commit is over. */
static int end_commit(jfile *f)
{
    if (ftruncate(f->jfd, 0) < 0) {
        JERR(H5E_WRITEERROR, "cannot empty the journal %s: %s", f->jpath, strerror(errno));
        return -1;
    }
    f->journal_dirty = 0;
    f->committed_eoa = f->eoa;
    it__h5j_ov_clear(&f->ov);
    return 0;
}

static int journaled_commit(jfile *f, const jrec *recs, size_t n)
{
    int dosync = (f->flags & IT_H5J_FSYNC) != 0;
    hook("commit-start");
    if (dosync && it__h5j_sync_fd(f->fd, f->path) < 0)
        return -1;
    if (open_journal(f) < 0 || write_journal(f, recs, n) < 0)
        return -1; /* the old state still stands: a later flush may retry */
    /* The complete journal is the commit point: recovery would replay it.
     * Rewriting it now could tear it over a half-applied file, so after
     * any failure from here on the handle only reads. */
    f->broken = 1;
    if (dosync && it__h5j_sync_fd(f->jfd, f->jpath) < 0)
        return -1;
    hook("journal-written");
    if (apply_records(f, recs, n) < 0)
        return -1;
    if (dosync && it__h5j_sync_fd(f->fd, f->path) < 0)
        return -1;
    hook("applied");
    if (end_commit(f) < 0)
        return -1;
    f->broken = 0;
    return 0;
}

/* -1, with a message, once a commit failed after its journal was complete. */
int it__h5j_refuse_if_broken(const jfile *f)
{
    if (!f->broken)
        return 0;
    JERR(H5E_WRITEERROR, "%s: an earlier commit failed after writing its journal; close and "
                         "reopen the file to recover it",
         f->path);
    return -1;
}

/* Make the current state the committed one.  A failure before the journal
 * is complete keeps the overlay and the old state (a later flush retries);
 * one after leaves the journal for the next open to replay. */
int it__h5j_commit(jfile *f)
{
    if (!f->rw)
        return 0;
    if (it__h5j_foreign(f)) {
        JERR(H5E_WRITEERROR, "%s: opened by process %ld; this process (a fork of it) may only read it",
             f->path, (long)f->pid);
        return -1;
    }
    if (f->abandoned) {
        JERR(H5E_WRITEERROR, "%s: a write failed since the last commit: the file keeps that commit; "
             "close and reopen it", f->path);
        return -1;
    }
    if (it__h5j_refuse_if_broken(f) < 0)
        return -1;
    if (f->ov.npages == 0 && f->disk_size == f->eof) {
        /* Nothing on disk changes: only new space was written. */
        f->committed_eoa = f->eoa;
        return 0;
    }
    size_t n = 0;
    jrec *recs = collect_records(f, &n);
    if (!recs)
        return -1;
    int rc = journaled_commit(f, recs, n);
    it_free(recs);
    return rc;
}
