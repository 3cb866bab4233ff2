/*
 * it_blob.h - a growable file of same-shaped rows, memory-mapped (the core of
 * infinite_tensor.blob.TensorBlob).
 *
 * One file per blob.  Format version 1 (docs/blob.md has the full table):
 *
 *   [0, 4096)      header: a superblock at 0 (magic, version, dtype, row
 *                  shape, row bytes; CRC-32) and two commit slots at 512 and
 *                  1024 (seq, length; CRC-32 each)
 *   [4096, ...)    rows, row-major and contiguous, little-endian: row i at
 *                  4096 + i * row_bytes
 *
 * The committed length is the one in the valid slot with the higher seq.  A
 * commit writes the other slot (one pwrite, after the rows it covers are in
 * place), so a process killed at any point leaves the last committed length
 * with every committed row intact; the CRC catches a slot torn by a power
 * loss, and the older slot then wins.  With durability IT_BLOB_FULL the rows
 * are msync'ed and the file fdatasync'ed before and after the slot is
 * written.  The file may be longer than its rows (space allocated ahead of
 * appends); it is trimmed when its last user closes it.
 *
 * Mapping: each open reserves a large range of address space once and maps
 * the file into its start, extending the mapping in place as the file grows;
 * so rows never move while a blob is open, and a view of them stays valid
 * until it is dropped (it holds the mapping: it_blob_map_ref).  Space past a
 * truncation is punched out but the file keeps its size while open, so no
 * view or other process touches a page past the end of the file.
 *
 * Locks (Linux open-file-description locks): a writable open takes byte 0
 * exclusively (a second writer, in any process, gets EWOULDBLOCK); every
 * open shares byte 1, which tells the last writer whether a reader still has
 * the file open before it trims.  A process that inherits a blob through
 * fork() may read it; writes from it are refused (IT_ESTATE).
 *
 * Errors: IT_EIO with it_blob_errno() the failing system call's errno (the
 * binding raises the matching OSError subclass); IT_ECORRUPT for a file that
 * is not a blob of a format this code reads; IT_ESTATE, IT_EINVAL, IT_ERANGE
 * as usual.  Not thread-safe: callers serialise calls on one blob (the
 * binding holds the GIL); views may be dropped on any thread.
 */
#ifndef IT_BLOB_H
#define IT_BLOB_H

#include "it_buffer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IT_BLOB_VERSION 1
#define IT_BLOB_DATA_OFFSET 4096
#define IT_BLOB_SLOT_A 512
#define IT_BLOB_SLOT_B 1024
#define IT_BLOB_NAME_MAX 32 /* dtype name bytes, NUL-padded */

enum { IT_BLOB_PROCESS = 0, IT_BLOB_FULL = 1 };

typedef struct it_blob it_blob;
typedef struct it_blob_map it_blob_map;

/* What a blob's superblock says. */
typedef struct it_blob_info {
    it_dtype dtype;
    char dtype_name[IT_BLOB_NAME_MAX + 1]; /* as the creator spelled it ("float") */
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    int64_t row_bytes;
    int64_t block_size;        /* stored for tensorblob's API; no effect on layout */
    int64_t max_cached_blocks; /* likewise; 0 for none */
} it_blob_info;

/* Create a new blob at path (which must not exist: IT_EIO with EEXIST) and
 * open it for writing.  The header is written to a temporary file beside
 * path and linked into place, so path never holds a partial header. */
int it_blob_create(const char *path, const it_blob_info *info, int durability, it_blob **out);
/* Open an existing blob.  IT_ECORRUPT for a file that is not one. */
int it_blob_open(const char *path, int writable, int durability, it_blob **out);
/* Close: release locks, trim the file when nothing else has it open, drop
 * the mapping (views keep it alive).  Frees b; NULL is fine. */
void it_blob_close(it_blob *b);

const it_blob_info *it_blob_info_of(const it_blob *b);
int it_blob_writable(const it_blob *b);
/* The committed length.  A read-only blob re-reads the commit slots (and
 * maps what the file gained), so it sees rows committed by a writer
 * elsewhere; IT_ECORRUPT if neither slot is valid any more. */
int it_blob_length(it_blob *b, int64_t *len);

/* Copy src (n rows: shape (n, *row shape), the blob's dtype, host memory,
 * any strides) to rows [at, at + n), at <= length, then commit the length
 * max(length, at + n).  Grows the file first (ENOSPC is an IT_EIO here,
 * never a SIGBUS later).  *new_len gets the committed length. */
int it_blob_write(it_blob *b, int64_t at, const it_view *src, int64_t *new_len);
/* Commit length n <= length (a truncation), freeing the space past it. */
int it_blob_truncate(it_blob *b, int64_t n);
/* Copy n rows start, start + step, ... (step may be negative; every row
 * must be < length) into a new buffer of shape (n, *row shape). */
int it_blob_read(it_blob *b, int64_t start, int64_t step, int64_t n, it_buffer **out);
/* Copy rows idx[0..n) (each in [-length, length): negatives count from the
 * end; IT_ERANGE otherwise) into a new buffer of shape (n, *row shape). */
int it_blob_gather(it_blob *b, const int64_t *idx, int64_t n, it_buffer **out);
/* msync + fdatasync everything written (whatever the durability). */
int it_blob_sync(it_blob *b);

/* The address of row 0 in the current mapping, and a reference to that
 * mapping that keeps it valid (rows [0, length) stay readable there) until
 * it_blob_map_unref, on any thread. */
char *it_blob_rows(it_blob *b, it_blob_map **ref);
void it_blob_map_unref(it_blob_map *m);

/* errno of the last IT_EIO on this thread. */
int it_blob_errno(void);
/* CRC-32 (the zlib / IEEE 802.3 polynomial), as zlib.crc32 computes it. */
uint32_t it_crc32(const void *data, size_t n);
/* Test support: make the next it_blob_write or it_blob_truncate call
 * _exit(86) at checkpoint `point` (1: file grown; 2: rows copied, slot not
 * written; 3: slot half written).  0 disables. */
void it_blob_crash_at(int point);

#ifdef __cplusplus
}
#endif
#endif
