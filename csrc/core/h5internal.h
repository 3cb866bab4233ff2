/*
 * h5internal.h - the HDF5 tile store's private header: the open file, the
 * state of each attached tensor, and the functions that one store file
 * calls in another.  Not installed; included by the store's files only.
 * See it_h5store.h for the contract and docs/file-format.md for the layout.
 *
 * Each attached tensor has an h5tensor: its group and dataset handles
 * (opened on first use, closed with the file), and the slot table, mapping
 * tile coordinates to rows of the four datasets (tiles, index, bits, sums;
 * no index without infinite dims, no sums in files older than the
 * checksums), read whole from "index" on first use.  A new tile takes the
 * next row.  The datasets grow by doubling (so a new tile rarely costs an
 * H5Dset_extent) and are cut back to the exact row count before every
 * commit, so a committed file always has ntiles rows everywhere.
 *
 * Files.  Each calls only the store files listed below it:
 *   h5store.c  tensors: their metadata (group and attributes), listing and
 *              deleting them, attaching them, and the backend that loads
 *              and stores their tiles (with the tiles' checksums)
 *   h5file.c   files: opening, creating (under a temporary name), closing
 *              and committing; stale temporaries; the files open in this
 *              process
 *   h5rows.c   a tensor's datasets: opening or creating and checking them,
 *              the slot table, resizing, reading and writing one row
 *   h5util.c   HDF5's error messages, the dtypes on disk, attributes
 * All of them sit on the journaling driver (it_h5journal.h), through its
 * public API only.  Functions shared between files are named it__h5_*;
 * everything else is static.
 */
#ifndef IT_H5INTERNAL_H
#define IT_H5INTERNAL_H

#include "it_h5store.h"
#include "it_h5journal.h"

#include <sys/types.h>

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
     * process (open_here, h5file.c) */
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

/* h5file.c */
int it__h5_commit(it_h5file *f);

/* h5rows.c */
void it__h5_close_handles(h5tensor *h);
int it__h5_open_tiles(h5tensor *h, int create, int *present);
int it__h5_fit_rows(h5tensor *h, int64_t rows);
int it__h5_row_io(hid_t d, hid_t mtype, int64_t row, int rank, const hsize_t *tail, void *buf, int write);
int it__h5_row_stored(hid_t d, hsize_t rows_per_chunk, int64_t row);
int it__h5_table_room(h5tensor *h);
int it__h5_table_add(h5tensor *h);
int64_t it__h5_table_find(const h5tensor *h, const int64_t *coord);
int it__h5_coords_room(h5tensor *h, int64_t rows);

/* h5util.c */
/* The store's lock: one recursive mutex for the process, around every
 * entry point that calls HDF5 (libhdf5 is not thread-safe) and the backend's
 * callbacks, which run with the caller's lock released (loads) or held
 * (stores).  Never held while calling out (it_h5_list's callback). */
void it__h5_lock(void);
void it__h5_unlock(void);
/* 1 if loads keep the caller's lock (INFINITE_TENSOR_HDF5_SERIAL=1). */
int it__h5_serial_loads(void);
int it__h5_fail(const char *what, const char *name);
int it__h5_need_open(const it_h5file *f);
hid_t it__h5_file_type(it_dtype dt);
char *it__h5_dupstr(const char *s);
int it__h5_attr_exists(hid_t obj, const char *name);
int it__h5_write_str_attr(hid_t obj, const char *name, const char *value);
int it__h5_read_str_attr(hid_t obj, const char *name, char **out);
int it__h5_write_ints_attr(hid_t obj, const char *name, const int64_t *v, int n);
int it__h5_read_ints_attr(hid_t obj, const char *name, int64_t *v, int max, int *n);

#endif
