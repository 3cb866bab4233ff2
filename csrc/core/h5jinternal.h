/*
 * h5jinternal.h - the journaling HDF5 driver's private header: the state of
 * an open file, the overlay, the journal format, and the functions that one
 * driver file calls in another.  Not installed; included by the driver's
 * files only.  it_h5journal.h has the contract; this essay is the driver as
 * a whole, and each file opens with the details of its part.
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
 * H5Fget_vfd_handle's answer back to a handle for it_h5j_pending_bytes and
 * it_h5j_abandon.
 *
 * Files.  Each calls only the driver files listed below it:
 *   h5journal.c   the driver's callbacks (open, close, read, write, flush,
 *                 truncate, locks), the registry of open handles, the
 *                 public API, the names of files next to a file
 *   h5jcommit.c   writing the journal and the commit (steps 1-3 above)
 *   h5jrecover.c  reading and checking a journal at open; replaying it, or
 *                 loading it into the overlay
 *   h5jpages.c    the overlay and its reads and writes, raw I/O, the
 *                 journal checksum, error messages on HDF5's stack
 * h5jcommit.c and h5jrecover.c do not call each other.  Functions shared
 * between files are named it__h5j_* (the little-endian encoders are static
 * inline below); everything else is static.
 */
#ifndef IT_H5JINTERNAL_H
#define IT_H5JINTERNAL_H

#include "it_h5journal.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

static const char HEAD_MAGIC[8] = {'I', 'T', 'H', '5', 'J', 'N', 'L', '1'};
static const char TAIL_MAGIC[8] = {'I', 'T', 'H', '5', 'J', 'E', 'N', 'D'};

/* ---- errors (h5jpages.c) ---- */

/* Push a message on HDF5's error stack (what h5py users see). */
void it__h5j_push_err(const char *file, const char *func, unsigned line, hid_t minor, const char *fmt, ...);

#define JERR(minor, ...) it__h5j_push_err(__FILE__, __func__, __LINE__, (minor), __VA_ARGS__)

/* ---- little-endian encoding ---- */

static inline void it__h5j_put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void it__h5j_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t it__h5j_get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t it__h5j_get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- the journal checksum (h5jpages.c) ---- */

/* A streaming 64-bit checksum over 8-byte words.  Each word step is a
 * bijection of the state for a fixed word, so changing any one word always
 * changes the result; the length is mixed in at the end.  It guards
 * against torn and damaged journals, not against an adversary. */
typedef struct jsum {
    uint64_t h, total;
    unsigned char tail[8];
    unsigned ntail;
} jsum;

void it__h5j_sum_init(jsum *s);
void it__h5j_sum_update(jsum *s, const unsigned char *p, size_t n);
uint64_t it__h5j_sum_final(const jsum *s);

/* ---- the overlay: a hash table of 4 KiB page images (h5jpages.c) ---- */

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

/* ---- an open file ---- */

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
    pid_t pid;         /* the process that opened it (a forked child must never write it) */
    dev_t dev;
    ino_t ino;
    haddr_t eoa, eof, disk_size, committed_eoa;
    overlay ov;
    char *path, *jpath;
    struct jfile *reg_next;
} jfile;

/* h5jpages.c */
void it__h5j_ov_clear(overlay *ov);
jpage **it__h5j_ov_sorted(const overlay *ov);
int it__h5j_read_all(int fd, void *buf, size_t n, haddr_t off);
int it__h5j_read_disk(jfile *f, haddr_t addr, size_t size, unsigned char *buf);
int it__h5j_sync_fd(int fd, const char *what);
void it__h5j_patch_range(const jfile *f, haddr_t addr, size_t size, haddr_t limit, unsigned char *buf);
int it__h5j_overlay_write(jfile *f, haddr_t addr, size_t size, const unsigned char *buf);

/* Whether f was opened by another process: a child forked while its parent
 * had the file open.  Parent and child share the file descriptor, its lock
 * and the journal, but each has its own copy of HDF5's caches, so anything
 * the child wrote would damage the parent's file: the child may read, and
 * nothing else (writes fail, commits and unlocks do nothing, and it never
 * removes the journal). */
int it__h5j_foreign(const jfile *f);

/* h5jcommit.c */
int it__h5j_commit(jfile *f);
int it__h5j_refuse_if_broken(const jfile *f);

/* h5jrecover.c */
int it__h5j_recover(jfile *f);

#endif
