/*
 * h5journal.c - a crash-safe journaling virtual file driver for HDF5
 * (it_h5journal.h has the contract).
 *
 * State of an open file:
 *   eoa            HDF5's end of allocated space (get_eoa / set_eoa).
 *   eof            the logical file size HDF5 sees: grown by writes, set to
 *                  the EOA by truncate.  Reads past it return zeros.
 *   disk_size      the physical size of the file, which lags eof after a
 *                  truncate until the next commit.
 *   committed_eoa  the EOA of the last commit (the file size at open).  The
 *                  committed state refers to nothing at or past it, so writes
 *                  there go straight to the file; writes below it go to the
 *                  overlay, whose pages are authoritative below it.
 *
 * Commit (flush / close), only when something changed:
 *   1. write the journal (header, one record per dirty page range, trailer
 *      with a checksum of everything before it) and cut it to its length;
 *   2. copy the ranges into the file and resize it to eof;
 *   3. empty the journal; committed_eoa = eoa; drop the overlay.
 * pwrite is synchronous with respect to a later read by any process, so a
 * SIGKILL leaves either no complete journal (the old state is intact: only
 * space past its EOA was written) or a complete one, whose replay is
 * idempotent.  With IT_H5J_FSYNC the file is synced before step 1 (the
 * direct writes must be durable before a journal can make them live), the
 * journal before step 2 and the file before step 3.
 *
 * Journal format (all integers little-endian):
 *   header  48 bytes: "ITH5JNL1", u32 version (1), u32 page size (4096),
 *           u64 record count, u64 new EOA, u64 new file size,
 *           u64 total journal length in bytes
 *   record  u64 file address, u32 length (1..page size, the range lies in
 *           one page), u32 zero, then the bytes
 *   trailer "ITH5JEND", u64 checksum of every byte before the trailer
 * The journal is valid only if every field checks out, the records end
 * exactly at the trailer, the length matches the file size and the checksum
 * matches.  Replay: write each record at its address, then truncate/extend
 * the file to the new size.
 *
 * The tentative open: HDF5 opens a file once more to see whether it is
 * already open (cmp), then closes that second handle.  A process-wide
 * registry of open handles lets that handle skip recovery and leave the
 * journal (which the first handle owns) alone.  The registry also maps
 * H5Fget_vfd_handle's answer back to a handle for it_h5j_pending_bytes.
 */
#define _GNU_SOURCE /* pread, pwrite, ftruncate, fsync, flock */

#include "it_h5journal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if H5_VERSION_GE(1, 13, 0)
#include <H5FDdevelop.h>
#endif

#define PAGE 4096u
#define JVERSION 1u
#define HEAD_BYTES 48u
#define REC_BYTES 16u
#define TAIL_BYTES 16u
#define IO_CHUNK (256u * 1024u)
#define MAXADDR (((haddr_t)1 << (8 * sizeof(off_t) - 1)) - 1)
#define INFO_MAGIC 0x4a354849u /* tags our fapl driver info */

static const char HEAD_MAGIC[8] = {'I', 'T', 'H', '5', 'J', 'N', 'L', '1'};
static const char TAIL_MAGIC[8] = {'I', 'T', 'H', '5', 'J', 'E', 'N', 'D'};

/* ------------------------------------------------------------------ */
/* errors                                                               */

/* Push a message on HDF5's error stack (what h5py users see). */
static void push_err(const char *func, unsigned line, hid_t minor, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    H5Epush2(H5E_DEFAULT, __FILE__, func, line, H5E_ERR_CLS, H5E_VFL, minor, "%s", msg);
}

#define JERR(minor, ...) push_err(__func__, __LINE__, (minor), __VA_ARGS__)

/* ------------------------------------------------------------------ */
/* little-endian encoding and the checksum                             */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* A streaming 64-bit checksum over 8-byte words.  Each word step is a
 * bijection of the state for a fixed word, so changing any one word always
 * changes the result; the length is mixed in at the end.  It guards
 * against torn and damaged journals, not against an adversary. */
typedef struct jsum {
    uint64_t h, total;
    unsigned char tail[8];
    unsigned ntail;
} jsum;

static void sum_init(jsum *s)
{
    memset(s, 0, sizeof *s);
    s->h = 0x6a09e667f3bcc908ull;
}

static void sum_word(jsum *s, uint64_t w)
{
    uint64_t x = s->h ^ (w * 0xc2b2ae3d27d4eb4full);
    x = (x << 29) | (x >> 35);
    s->h = x * 0x9e3779b97f4a7c15ull + 0x27d4eb2f165667c5ull;
}

static void sum_update(jsum *s, const unsigned char *p, size_t n)
{
    s->total += n;
    unsigned t = s->ntail & 7u; /* always < 8; the mask tells the compiler */
    if (t > 0) {
        size_t k = IT_MIN(n, (size_t)(8u - t));
        memcpy(s->tail + t, p, k);
        p += k;
        n -= k;
        t += (unsigned)k;
        if (t < 8) {
            s->ntail = t;
            return;
        }
        sum_word(s, get_u64(s->tail));
    }
    for (; n >= 8; p += 8, n -= 8)
        sum_word(s, get_u64(p));
    memcpy(s->tail, p, n);
    s->ntail = (unsigned)n;
}

static uint64_t sum_final(const jsum *s)
{
    jsum t = *s;
    memset(t.tail + t.ntail, 0, 8 - t.ntail);
    sum_word(&t, get_u64(t.tail) ^ ((uint64_t)t.ntail << 56));
    uint64_t h = t.h ^ t.total;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* ------------------------------------------------------------------ */
/* the overlay: a hash table of 4 KiB page images                       */

typedef struct jpage {
    struct jpage *next; /* hash chain */
    uint64_t index;     /* address / PAGE */
    uint32_t lo, hi;    /* dirty byte range in the page; lo == hi: clean */
    unsigned char data[PAGE];
} jpage;

typedef struct overlay {
    jpage **buckets;
    size_t nbuckets; /* power of two, or 0 */
    size_t npages;
} overlay;

static size_t ov_slot(const overlay *ov, uint64_t index)
{
    return (size_t)((index * 0x9e3779b97f4a7c15ull) >> 17) & (ov->nbuckets - 1);
}

static jpage *ov_find(const overlay *ov, uint64_t index)
{
    if (ov->npages == 0)
        return NULL;
    for (jpage *p = ov->buckets[ov_slot(ov, index)]; p; p = p->next)
        if (p->index == index)
            return p;
    return NULL;
}

/* Double the table (keeps chains short); 0 on success. */
static int ov_grow(overlay *ov)
{
    size_t n = ov->nbuckets ? ov->nbuckets * 2 : 64;
    jpage **nb = it_calloc(n, sizeof *nb);
    if (!nb)
        return -1;
    overlay bigger = {nb, n, ov->npages};
    for (size_t i = 0; i < ov->nbuckets; i++) {
        for (jpage *p = ov->buckets[i], *next; p; p = next) {
            next = p->next;
            size_t s = ov_slot(&bigger, p->index);
            p->next = nb[s];
            nb[s] = p;
        }
    }
    it_free(ov->buckets);
    *ov = bigger;
    return 0;
}

static int ov_insert(overlay *ov, jpage *p)
{
    if (ov->npages >= ov->nbuckets && ov_grow(ov) < 0)
        return -1;
    size_t s = ov_slot(ov, p->index);
    p->next = ov->buckets[s];
    ov->buckets[s] = p;
    ov->npages++;
    return 0;
}

static void ov_clear(overlay *ov)
{
    for (size_t i = 0; i < ov->nbuckets; i++) {
        for (jpage *p = ov->buckets[i], *next; p; p = next) {
            next = p->next;
            it_free(p);
        }
    }
    it_free(ov->buckets);
    memset(ov, 0, sizeof *ov);
}

static int page_cmp(const void *a, const void *b)
{
    const jpage *x = *(jpage *const *)a, *y = *(jpage *const *)b;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The pages in address order (so a commit writes the file sequentially);
 * NULL when out of memory.  The caller frees the array. */
static jpage **ov_sorted(const overlay *ov)
{
    jpage **arr = it_malloc((ov->npages ? ov->npages : 1) * sizeof *arr);
    if (!arr)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < ov->nbuckets; i++)
        for (jpage *p = ov->buckets[i]; p; p = p->next)
            arr[k++] = p;
    qsort(arr, k, sizeof *arr, page_cmp);
    return arr;
}

/* ------------------------------------------------------------------ */
/* the file handle and the registry of open handles                    */

typedef struct jinfo {
    uint32_t magic;
    uint32_t flags;
} jinfo;

typedef struct jfile {
    H5FD_t pub; /* first: HDF5 casts between the two */
    int fd;     /* the HDF5 file; get_handle hands out &fd */
    int jfd;    /* the journal, -1 until the first commit opens it */
    int rw;
    int journal_dirty; /* the journal may hold a commit: never unlink it */
    int broken;        /* a commit failed after its journal was complete */
    int abandoned;     /* a write failed or the owner gave up: never commit again (the file keeps its last commit) */
    unsigned flags;    /* IT_H5J_* */
    int ignore_disabled_locks;
    dev_t dev;
    ino_t ino;
    haddr_t eoa, eof, disk_size, committed_eoa;
    overlay ov;
    char *path, *jpath;
    struct jfile *reg_next;
} jfile;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static jfile *registry;
static hid_t driver_id = H5I_INVALID_HID;
static it_h5j_hook_fn test_hook;

static void hook(const char *point)
{
    if (test_hook)
        test_hook(point);
}

void it_h5j_set_test_hook(it_h5j_hook_fn fn) { test_hook = fn; }

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
/* raw I/O                                                              */

/* pwrite all of it; 0 or -1 with errno. */
static int write_all(int fd, const void *buf, size_t n, haddr_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (haddr_t)w;
    }
    return 0;
}

/* pread up to n bytes; zeros past the end of the file.  0 or -1. */
static int read_all(int fd, void *buf, size_t n, haddr_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            memset(p, 0, n);
            return 0;
        }
        p += r;
        n -= (size_t)r;
        off += (haddr_t)r;
    }
    return 0;
}

/* The file as HDF5 would see it without the overlay: bytes at or past the
 * logical eof are zeros (a deferred shrink has not reached the disk). */
static int read_disk(jfile *f, haddr_t addr, size_t size, unsigned char *buf)
{
    size_t live = addr >= f->eof ? 0 : (size_t)IT_MIN((haddr_t)size, f->eof - addr);
    if (live > 0 && read_all(f->fd, buf, live, addr) < 0) {
        JERR(H5E_READERROR, "%s: read of %zu bytes at %llu failed: %s", f->path, live,
             (unsigned long long)addr, strerror(errno));
        return -1;
    }
    memset(buf + live, 0, size - live);
    return 0;
}

static int sync_fd(int fd, const char *what)
{
    if (fsync(fd) == 0)
        return 0;
    JERR(H5E_WRITEERROR, "fsync of %s failed: %s", what, strerror(errno));
    return -1;
}

/* ------------------------------------------------------------------ */
/* overlay reads and writes                                             */

/* Copy page p's bytes that fall in [addr, end) into buf (which holds addr). */
static void patch_page(const jpage *p, haddr_t addr, haddr_t end, unsigned char *buf)
{
    haddr_t ps = p->index * (haddr_t)PAGE;
    haddr_t a = IT_MAX(addr, ps), b = IT_MIN(end, ps + PAGE);
    if (a < b)
        memcpy(buf + (a - addr), p->data + (a - ps), (size_t)(b - a));
}

/* Copy the overlay's bytes in [addr, addr+size) that lie below limit. */
static void patch_range(const jfile *f, haddr_t addr, size_t size, haddr_t limit,
                        unsigned char *buf)
{
    haddr_t end = IT_MIN(addr + size, limit);
    if (f->ov.npages == 0 || addr >= end)
        return;
    uint64_t first = addr / PAGE, last = (end - 1) / PAGE;
    if (last - first + 1 <= 2 * (uint64_t)f->ov.npages) {
        for (uint64_t i = first; i <= last; i++) {
            const jpage *p = ov_find(&f->ov, i);
            if (p)
                patch_page(p, addr, end, buf);
        }
        return;
    }
    /* A long read over few pages: visit the pages instead (they never
     * overlap, so the order does not matter). */
    for (size_t s = 0; s < f->ov.nbuckets; s++)
        for (const jpage *p = f->ov.buckets[s]; p; p = p->next)
            if (p->index >= first && p->index <= last)
                patch_page(p, addr, end, buf);
}

/* The overlay page for index, created from the file when missing (unless
 * the caller overwrites all of it). */
static jpage *page_get(jfile *f, uint64_t index, int whole)
{
    jpage *p = ov_find(&f->ov, index);
    if (p)
        return p;
    p = it_malloc(sizeof *p);
    if (!p) {
        JERR(H5E_CANTALLOC, "%s: out of memory for an overlay page", f->path);
        return NULL;
    }
    p->index = index;
    p->lo = p->hi = 0;
    if (!whole && read_disk(f, index * (haddr_t)PAGE, PAGE, p->data) < 0) {
        it_free(p);
        return NULL;
    }
    if (ov_insert(&f->ov, p) < 0) {
        JERR(H5E_CANTALLOC, "%s: out of memory for the overlay", f->path);
        it_free(p);
        return NULL;
    }
    return p;
}

/* Put [addr, addr+size) into the overlay, marking it dirty. */
static int overlay_write(jfile *f, haddr_t addr, size_t size, const unsigned char *buf)
{
    haddr_t end = addr + size;
    while (addr < end) {
        haddr_t ps = addr / PAGE * PAGE;
        jpage *p = page_get(f, addr / PAGE, addr == ps && end >= ps + PAGE);
        if (!p)
            return -1;
        uint32_t lo = (uint32_t)(addr - ps);
        uint32_t hi = (uint32_t)(IT_MIN(end, ps + PAGE) - ps);
        memcpy(p->data + lo, buf, hi - lo);
        if (p->lo == p->hi) {
            p->lo = lo;
            p->hi = hi;
        } else {
            p->lo = IT_MIN(p->lo, lo);
            p->hi = IT_MAX(p->hi, hi);
        }
        buf += hi - lo;
        addr = ps + hi;
    }
    return 0;
}

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
    if (w->used && write_all(w->fd, w->buf, w->used, w->off) < 0)
        return -1;
    w->off += w->used;
    w->used = 0;
    return 0;
}

static int jw_put(jwriter *w, const void *data, size_t n)
{
    const unsigned char *p = data;
    sum_update(&w->sum, p, n);
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
    jpage **pages = ov_sorted(&f->ov);
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
    put_u32(h + 8, JVERSION);
    put_u32(h + 12, PAGE);
    put_u64(h + 16, n);
    put_u64(h + 24, f->eoa);
    put_u64(h + 32, f->eof);
    put_u64(h + 40, journal_length(recs, n));
    if (jw_put(w, h, sizeof h) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char r[REC_BYTES] = {0};
        put_u64(r, recs[i].page->index * (uint64_t)PAGE + recs[i].lo);
        put_u32(r + 8, recs[i].hi - recs[i].lo);
        if (jw_put(w, r, sizeof r) < 0 ||
            jw_put(w, recs[i].page->data + recs[i].lo, recs[i].hi - recs[i].lo) < 0)
            return -1;
    }
    unsigned char t[TAIL_BYTES];
    memcpy(t, TAIL_MAGIC, 8);
    put_u64(t + 8, sum_final(&w->sum));
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
        rc = sync_fd(dfd, dir);
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
    sum_init(&w.sum);
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
        if (write_all(f->fd, recs[i].page->data + recs[i].lo, recs[i].hi - recs[i].lo, at) < 0) {
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
    ov_clear(&f->ov);
    return 0;
}

static int journaled_commit(jfile *f, const jrec *recs, size_t n)
{
    int dosync = (f->flags & IT_H5J_FSYNC) != 0;
    hook("commit-start");
    if (dosync && sync_fd(f->fd, f->path) < 0)
        return -1;
    if (open_journal(f) < 0 || write_journal(f, recs, n) < 0)
        return -1; /* the old state still stands: a later flush may retry */
    /* The complete journal is the commit point: recovery would replay it.
     * Rewriting it now could tear it over a half-applied file, so after
     * any failure from here on the handle only reads. */
    f->broken = 1;
    if (dosync && sync_fd(f->jfd, f->jpath) < 0)
        return -1;
    hook("journal-written");
    if (apply_records(f, recs, n) < 0)
        return -1;
    if (dosync && sync_fd(f->fd, f->path) < 0)
        return -1;
    hook("applied");
    if (end_commit(f) < 0)
        return -1;
    f->broken = 0;
    return 0;
}

static int refuse_if_broken(const jfile *f)
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
static int commit(jfile *f)
{
    if (!f->rw)
        return 0;
    if (f->abandoned) {
        JERR(H5E_WRITEERROR, "%s: a write failed since the last commit: the file keeps that commit; "
             "close and reopen it", f->path);
        return -1;
    }
    if (refuse_if_broken(f) < 0)
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

/* ------------------------------------------------------------------ */
/* journal reading and recovery                                         */

/* Buffered sequential reader that checksums what it reads. */
typedef struct jreader {
    int fd;
    haddr_t off, size; /* next file offset to fill from; journal length */
    unsigned char *buf;
    size_t len, pos;
    jsum sum;
} jreader;

/* Read n bytes of the journal; 0, or -1 at its end or on an error. */
static int jr_get(jreader *r, void *out, size_t n)
{
    unsigned char *o = out;
    while (n > 0) {
        if (r->pos == r->len) {
            size_t k = (size_t)IT_MIN((haddr_t)IO_CHUNK, r->size - r->off);
            if (k == 0 || read_all(r->fd, r->buf, k, r->off) < 0)
                return -1;
            r->off += k;
            r->len = k;
            r->pos = 0;
        }
        size_t k = IT_MIN(n, r->len - r->pos);
        memcpy(o, r->buf + r->pos, k);
        sum_update(&r->sum, o, k);
        r->pos += k;
        o += k;
        n -= k;
    }
    return 0;
}

typedef struct jhead {
    uint64_t nrec, eoa, size, total;
} jhead;

static int parse_head(const unsigned char *h, uint64_t jsize, jhead *out)
{
    if (memcmp(h, HEAD_MAGIC, 8) != 0 || get_u32(h + 8) != JVERSION || get_u32(h + 12) != PAGE)
        return 0;
    out->nrec = get_u64(h + 16);
    out->eoa = get_u64(h + 24);
    out->size = get_u64(h + 32);
    out->total = get_u64(h + 40);
    if (out->total != jsize || out->size > MAXADDR || out->eoa > MAXADDR)
        return 0;
    /* Each record takes at least REC_BYTES + 1. */
    return out->nrec <= (jsize - HEAD_BYTES - TAIL_BYTES) / (REC_BYTES + 1);
}

/* One record: address and length checked, bytes into data (PAGE bytes). */
static int next_record(jreader *r, haddr_t *addr, uint32_t *len, unsigned char *data)
{
    unsigned char rh[REC_BYTES];
    if (jr_get(r, rh, sizeof rh) < 0)
        return 0;
    *addr = get_u64(rh);
    *len = get_u32(rh + 8);
    if (*len == 0 || *len > PAGE || get_u32(rh + 12) != 0 || *addr > MAXADDR - PAGE ||
        *addr / PAGE != (*addr + *len - 1) / PAGE)
        return 0;
    return jr_get(r, data, *len) == 0;
}

/* Walk the whole journal: 1 if it is complete and intact, else 0. */
static int journal_valid(jreader *r, jhead *h, unsigned char *data)
{
    unsigned char hb[HEAD_BYTES], t[TAIL_BYTES];
    if (r->size < HEAD_BYTES + TAIL_BYTES || jr_get(r, hb, sizeof hb) < 0 ||
        !parse_head(hb, r->size, h))
        return 0;
    for (uint64_t i = 0; i < h->nrec; i++) {
        haddr_t addr;
        uint32_t len;
        if (!next_record(r, &addr, &len, data))
            return 0;
    }
    uint64_t want = sum_final(&r->sum);
    if (r->off - r->len + r->pos != r->size - TAIL_BYTES || jr_get(r, t, sizeof t) < 0)
        return 0;
    return memcmp(t, TAIL_MAGIC, 8) == 0 && get_u64(t + 8) == want;
}

static void jr_rewind(jreader *r)
{
    r->off = 0;
    r->len = r->pos = 0;
    sum_init(&r->sum);
}

/* Replay a valid journal into the file (read-write open). */
static int replay(jfile *f, jreader *r, const jhead *h, unsigned char *data)
{
    unsigned char hb[HEAD_BYTES];
    jr_rewind(r);
    if (jr_get(r, hb, sizeof hb) < 0)
        return -1;
    for (uint64_t i = 0; i < h->nrec; i++) {
        haddr_t addr;
        uint32_t len;
        if (!next_record(r, &addr, &len, data) || write_all(f->fd, data, len, addr) < 0)
            return -1;
    }
    if (ftruncate(f->fd, (off_t)h->size) < 0)
        return -1;
    if ((f->flags & IT_H5J_FSYNC) && fsync(f->fd) < 0)
        return -1;
    f->disk_size = f->eof = f->committed_eoa = h->size;
    return 0;
}

/* Load a valid journal into the overlay (read-only open): reads see the
 * committed state and nothing on disk changes. */
static int load_overlay(jfile *f, jreader *r, const jhead *h, unsigned char *data)
{
    unsigned char hb[HEAD_BYTES];
    jr_rewind(r);
    if (jr_get(r, hb, sizeof hb) < 0)
        return -1;
    f->eof = h->size; /* page images below are read against the new size */
    f->committed_eoa = HADDR_MAX; /* the overlay is authoritative everywhere */
    for (uint64_t i = 0; i < h->nrec; i++) {
        haddr_t addr;
        uint32_t len;
        if (!next_record(r, &addr, &len, data) || overlay_write(f, addr, len, data) < 0)
            return -1;
    }
    return 0;
}

/* Validate the journal open on jfd and act on it (module comment). */
static int recover_from(jfile *f, int jfd, haddr_t jsize)
{
    unsigned char *data = it_malloc(PAGE);
    jreader r = {jfd, 0, jsize, it_malloc(IO_CHUNK), 0, 0, {0}};
    int rc = 0;
    if (!data || !r.buf) {
        JERR(H5E_CANTALLOC, "%s: out of memory for recovery", f->path);
        rc = -1;
        goto done;
    }
    sum_init(&r.sum);
    jhead h;
    int valid = journal_valid(&r, &h, data);
    if (valid && f->rw)
        rc = replay(f, &r, &h, data);
    else if (valid)
        rc = load_overlay(f, &r, &h, data);
    if (rc < 0) {
        JERR(H5E_CANTOPENFILE, "%s: recovery from %s failed: %s", f->path, f->jpath,
             strerror(errno));
        goto done;
    }
    /* Replayed, or torn (a commit that never finished): either way empty. */
    if (f->rw && ftruncate(jfd, 0) < 0) {
        JERR(H5E_CANTOPENFILE, "cannot empty the journal %s: %s", f->jpath, strerror(errno));
        rc = -1;
    }
done:
    it_free(data);
    it_free(r.buf);
    return rc;
}

/* Take a lock for the length of recovery.  1: locked, 0: go on without one
 * (locks unsupported), -1: another process holds the file, so the journal
 * belongs to a live writer (or a reader keeps it from being replayed). */
static int recovery_lock(jfile *f)
{
    if (flock(f->fd, (f->rw ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
        return 1;
    return errno == EWOULDBLOCK ? -1 : 0;
}

static int recover(jfile *f)
{
    int jfd = open(f->jpath, (f->rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (jfd < 0 && errno == ENOENT)
        return 0;
    if (jfd < 0) {
        JERR(H5E_CANTOPENFILE, "cannot open the journal %s: %s", f->jpath, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = 0;
    if (fstat(jfd, &st) < 0 || st.st_size == 0) {
        close(jfd);
        return 0;
    }
    int locked = recovery_lock(f);
    if (locked >= 0) {
        rc = recover_from(f, jfd, (haddr_t)st.st_size);
        if (locked)
            flock(f->fd, LOCK_UN);
    }
    close(jfd);
    return rc;
}

/* ------------------------------------------------------------------ */
/* driver callbacks                                                     */

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
    ov_clear(&f->ov);
    if (f->jfd >= 0)
        close(f->jfd);
    if (f->fd >= 0)
        close(f->fd);
    it_free(f->path);
    it_free(f->jpath);
    it_free(f);
}

/* ------------------------------------------------------------------ */
/* names next to the file                                               */
/* ------------------------------------------------------------------ */

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
        return recover(f);
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

static herr_t j_close(H5FD_t *file)
{
    jfile *f = (jfile *)file;
    herr_t rc = 0;
    if (commit(f) < 0)
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
    if (read_disk(f, addr, size, buf) < 0)
        return -1;
    patch_range(f, addr, size, IT_MIN(f->committed_eoa, f->eof), buf);
    return 0;
}

static int disk_write(jfile *f, haddr_t addr, size_t size, const unsigned char *buf)
{
    if (write_all(f->fd, buf, size, addr) < 0) {
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
    if (refuse_if_broken(f) < 0)
        return -1;
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
    if ((split > addr && overlay_write(f, addr, (size_t)(split - addr), p) < 0) ||
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
    if (commit(f) < 0) {
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
    if (refuse_if_broken(f) < 0)
        return -1;
    if (f->rw)
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
