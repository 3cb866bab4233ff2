/*
 * it_h5store.h - tiles of persistent tensors in an HDF5 file (C API).
 *
 * One it_h5file is one HDF5 file opened through the journaling driver
 * (it_h5journal.h), so the file on disk is always the state of the last
 * commit.  Tensors are attached to it by id: each gets a backend
 * (it_tensor.h) whose load and store read and write one tile record, values
 * and contribution bitmap.  The layout (format version 2) is documented in
 * docs/file-format.md:
 *
 *   /                       attr infinite_tensor_format = 2
 *   /tensors/<name>         group per tensor (<name>: the id, "%" and "/"
 *                           escaped); attrs id, meta (JSON), tile_size
 *   /tensors/<name>/tiles   (ntiles, *tile_shape), the tensor's dtype
 *   /tensors/<name>/index   (ntiles, n_infinite) int64 tile coordinates
 *   /tensors/<name>/bits    (ntiles, row_bytes) uint8 contribution bitmaps
 *                           (and fold counts: fold.c)
 *   /tensors/<name>/sums    (ntiles,) uint64 checksums of the tiles' bytes
 *                           (none in files written before the checksums)
 *
 * A tile record is written as its values and their checksum, then its
 * bitmap row (and its index row when new); commits happen only between
 * records: at it_h5_flush, at close, and when the journal holds more than a
 * threshold of pending bytes.  So every committed tile has the values its bitmap
 * says, and a crash loses only what was not committed.
 *
 * Locking: none; HDF5 is not thread-safe and the caller serialises every
 * call (the binding holds the GIL).
 */
#ifndef IT_H5STORE_H
#define IT_H5STORE_H

#include "it_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IT_H5_FORMAT 2

typedef struct it_h5file it_h5file;

enum {
    IT_H5_READ = 0,   /* "r": the file must exist; read-only */
    IT_H5_RDWR = 1,   /* "r+": the file must exist */
    IT_H5_APPEND = 2, /* "a": open, or create if missing */
    IT_H5_TRUNC = 3,  /* "w": create, truncating an existing file */
    IT_H5_EXCL = 4    /* "w-" / "x": create; fail if the file exists */
};

/* Open path.  gzip_level: 0-9, or -1 for no compression.  The caller owns
 * one reference.  IT_EIO with a message if HDF5 fails (missing file in a
 * mode that needs one: the message starts with "no such file"). */
int it_h5_open(const char *path, int mode, int gzip_level, it_h5file **out);
void it_h5_ref(it_h5file *f);
/* Drop a reference; the last one closes the file (errors are lost: close
 * first to see them).  NULL is fine. */
void it_h5_unref(it_h5file *f);

/* Commit: the file on disk then holds every tile stored so far. */
int it_h5_flush(it_h5file *f);
/* Commit and close the file.  Attached tensors stay attached; their tile
 * I/O fails (IT_ESTATE) until it_h5_reopen. */
int it_h5_close(it_h5file *f);
/* Open a closed file again, for writing unless it was opened read-only
 * (never truncating). */
int it_h5_reopen(it_h5file *f);
int it_h5_is_open(const it_h5file *f);
int it_h5_readonly(const it_h5file *f);

/* A tensor's stored metadata: *found = 0 if the id is unknown.  *json is
 * allocated with it_malloc (caller frees); tile_size gets *ntile entries
 * (room for IT_MAX_DIMS).  IT_EINVAL if the id's group is not in this
 * format (a file of infinite-tensor 0.3, or foreign data). */
int it_h5_read_meta(it_h5file *f, const char *id, char **json, int64_t *tile_size, int *ntile,
                    int *found);
/* Create the tensor's group if needed and (over)write its metadata. */
int it_h5_write_meta(it_h5file *f, const char *id, const char *json, const int64_t *tile_size,
                     int ntile);
/* Call fn(ctx, id, json) for every tensor stored in the file (in the
 * order of their group names; groups not in this format are skipped).  A
 * non-zero return from fn stops the walk and is returned. */
int it_h5_list(it_h5file *f, int (*fn)(void *ctx, const char *id, const char *json), void *ctx);
/* Delete the tensor's group (metadata, tiles, bitmaps).  No-op if absent. */
int it_h5_delete(it_h5file *f, const char *id);

/* Make f the backend of t under id (whose metadata must have been
 * written).  The backend holds a reference to f.  IT_ESTATE if another
 * live tensor is attached under id (it_h5_delete detaches: the old
 * tensor's tile I/O then fails). */
int it_h5_attach(it_h5file *f, const char *id, it_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
