/*
 * h5jrecover.c - recovery at open: a journal left by a commit is read
 * through a buffered reader that checksums what it reads and checked from
 * end to end (the format is in h5jinternal.h); a valid one is replayed into
 * the file by a read-write open, or loaded into the overlay by a read-only
 * one, so that reads see the committed state and nothing on disk changes.
 * An invalid one is a commit that never finished: a read-write open empties
 * it.  A journal of a file another process holds is left alone (it belongs
 * to a live writer).  Calls h5jpages.c.
 */
#define _GNU_SOURCE /* ftruncate, fsync, flock */

#include "h5jinternal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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
            if (k == 0 || it__h5j_read_all(r->fd, r->buf, k, r->off) < 0)
                return -1;
            r->off += k;
            r->len = k;
            r->pos = 0;
        }
        size_t k = IT_MIN(n, r->len - r->pos);
        memcpy(o, r->buf + r->pos, k);
        it__h5j_sum_update(&r->sum, o, k);
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
    if (memcmp(h, HEAD_MAGIC, 8) != 0 || it__h5j_get_u32(h + 8) != JVERSION || it__h5j_get_u32(h + 12) != PAGE)
        return 0;
    out->nrec = it__h5j_get_u64(h + 16);
    out->eoa = it__h5j_get_u64(h + 24);
    out->size = it__h5j_get_u64(h + 32);
    out->total = it__h5j_get_u64(h + 40);
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
    *addr = it__h5j_get_u64(rh);
    *len = it__h5j_get_u32(rh + 8);
    if (*len == 0 || *len > PAGE || it__h5j_get_u32(rh + 12) != 0 || *addr > MAXADDR - PAGE ||
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
    uint64_t want = it__h5j_sum_final(&r->sum);
    if (r->off - r->len + r->pos != r->size - TAIL_BYTES || jr_get(r, t, sizeof t) < 0)
        return 0;
    return memcmp(t, TAIL_MAGIC, 8) == 0 && it__h5j_get_u64(t + 8) == want;
}

static void jr_rewind(jreader *r)
{
    r->off = 0;
    r->len = r->pos = 0;
    it__h5j_sum_init(&r->sum);
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
        if (!next_record(r, &addr, &len, data) || it_pwrite_all(f->fd, data, len, addr) < 0)
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
        if (!next_record(r, &addr, &len, data) || it__h5j_overlay_write(f, addr, len, data) < 0)
            return -1;
    }
    return 0;
}

/* Validate the journal open on jfd and act on it (top of this file). */
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
    it__h5j_sum_init(&r.sum);
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

/* Recovery at open: 0 (also when there is no journal, or another process
 * holds the file), or -1 with a message on HDF5's stack. */
int it__h5j_recover(jfile *f)
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
