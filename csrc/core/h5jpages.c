/*
 * h5jpages.c - the bottom of the journaling driver (h5jinternal.h): the
 * overlay, a hash table of 4 KiB page images that holds every byte written
 * below the committed EOA since the last commit, and the reads and writes
 * that go through it; plain reads and writes of a file descriptor; the
 * journal checksum; error messages on HDF5's stack.  Calls no other file
 * of the driver.
 */
#define _GNU_SOURCE /* pread, pwrite, fsync */

#include "h5jinternal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* errors                                                               */

/* Push a message on HDF5's error stack (what h5py users see), as raised
 * at file:line in func (JERR gives its caller's). */
void it__h5j_push_err(const char *file, const char *func, unsigned line, hid_t minor, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    H5Epush2(H5E_DEFAULT, file, func, line, H5E_ERR_CLS, H5E_VFL, minor, "%s", msg);
}

/* ------------------------------------------------------------------ */
/* the journal checksum (h5jinternal.h)                                 */

void it__h5j_sum_init(jsum *s)
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

void it__h5j_sum_update(jsum *s, const unsigned char *p, size_t n)
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
        sum_word(s, it__h5j_get_u64(s->tail));
    }
    for (; n >= 8; p += 8, n -= 8)
        sum_word(s, it__h5j_get_u64(p));
    memcpy(s->tail, p, n);
    s->ntail = (unsigned)n;
}

uint64_t it__h5j_sum_final(const jsum *s)
{
    jsum t = *s;
    memset(t.tail + t.ntail, 0, 8 - t.ntail);
    sum_word(&t, it__h5j_get_u64(t.tail) ^ ((uint64_t)t.ntail << 56));
    uint64_t h = t.h ^ t.total;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* ------------------------------------------------------------------ */
/* the overlay: a hash table of 4 KiB page images                       */

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

/* Free every page: the overlay is empty. */
void it__h5j_ov_clear(overlay *ov)
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
jpage **it__h5j_ov_sorted(const overlay *ov)
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
/* raw I/O                                                              */

/* pread up to n bytes; zeros past the end of the file.  0 or -1. */
int it__h5j_read_all(int fd, void *buf, size_t n, haddr_t off)
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
int it__h5j_read_disk(jfile *f, haddr_t addr, size_t size, unsigned char *buf)
{
    size_t live = addr >= f->eof ? 0 : (size_t)IT_MIN((haddr_t)size, f->eof - addr);
    if (live > 0 && it__h5j_read_all(f->fd, buf, live, addr) < 0) {
        JERR(H5E_READERROR, "%s: read of %zu bytes at %llu failed: %s", f->path, live,
             (unsigned long long)addr, strerror(errno));
        return -1;
    }
    memset(buf + live, 0, size - live);
    return 0;
}

int it__h5j_sync_fd(int fd, const char *what)
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
void it__h5j_patch_range(const jfile *f, haddr_t addr, size_t size, haddr_t limit, unsigned char *buf)
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
    if (!whole && it__h5j_read_disk(f, index * (haddr_t)PAGE, PAGE, p->data) < 0) {
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
int it__h5j_overlay_write(jfile *f, haddr_t addr, size_t size, const unsigned char *buf)
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
