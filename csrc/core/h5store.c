/*
 * h5store.c - persistent tiles in an HDF5 file: the tensors of a store.
 * See it_h5store.h for the contract, docs/file-format.md for the layout
 * and h5internal.h for the store as a whole.
 *
 * A tensor's metadata (its id, the JSON meta and the tile size) are
 * attributes of its group; listing and deleting tensors walk the groups.
 * Attaching a tensor gives it an h5tensor and a backend whose load and
 * store read and write one tile record: values and their checksum, bitmap
 * row and (new tiles) index row; each attached tensor holds a reference to
 * its file.  Calls h5file.c (references, and a commit when the journal holds
 * enough), h5rows.c and h5util.c.
 */
#include "h5internal.h"

#include <hdf5.h>
#include <stdio.h>
#include <string.h>

/* Commit when the journal holds this much (bytes rewritten in place). */
#define COMMIT_THRESHOLD (((int64_t)64) << 20)

/* ---- names ---------------------------------------------------------------- */

/* The group name of an id: "%" and "/" escaped as %25 and %2F; "." (a name
 * HDF5 reserves) as %2E; the empty id as "%". */
static char *escape(const char *id)
{
    size_t n = strlen(id), k = 0;
    char *s = it_malloc(3 * n + 2);
    if (!s)
        return NULL;
    if (n == 0 || strcmp(id, ".") == 0) {
        strcpy(s, n == 0 ? "%" : "%2E");
        return s;
    }
    for (size_t i = 0; i < n; i++) {
        if (id[i] == '%' || id[i] == '/') {
            s[k++] = '%';
            s[k++] = '2';
            s[k++] = id[i] == '%' ? '5' : 'F';
        } else {
            s[k++] = id[i];
        }
    }
    s[k] = '\0';
    return s;
}

/* ---- tensor metadata ----------------------------------------------------- */

static int h5u_read_meta(it_h5file *f, const char *id, char **json, int64_t *tile_size, int *ntile,
                         int *found)
{
    int rc;
    *found = 0;
    *json = NULL;
    *ntile = 0;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (f->tgrp < 0)
        return IT_OK;
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    htri_t e = H5Lexists(f->tgrp, name, H5P_DEFAULT);
    if (e <= 0) {
        H5Eclear2(H5E_DEFAULT);
        it_free(name);
        return IT_OK;
    }
    hid_t g = H5Gopen2(f->tgrp, name, H5P_DEFAULT);
    if (g < 0) {
        rc = it__h5_fail("opening the group of tensor", id);
    } else if (!it__h5_attr_exists(g, "meta") || !it__h5_attr_exists(g, "tile_size")) {
        if (H5Lexists(g, "metadata", H5P_DEFAULT) > 0)
            rc = it_error_set(IT_EINVAL, "tensor '%s' in %s was written by infinite-tensor 0.3 or 0.4, whose "
                              "format this version does not read: convert the file with `python -m "
                              "infinite_tensor.convert OLD.h5 NEW.h5` (docs/file-format.md), or use another id "
                              "or file", id, f->path);
        else
            rc = it_error_set(IT_EINVAL, "tensor '%s' has no metadata on disk in %s", id, f->path);
    } else if ((rc = it__h5_read_str_attr(g, "meta", json)) == IT_OK &&
               (rc = it__h5_read_ints_attr(g, "tile_size", tile_size, IT_MAX_DIMS, ntile)) == IT_OK) {
        *found = 1;
    }
    if (rc != IT_OK) {
        it_free(*json);
        *json = NULL;
    }
    if (g >= 0)
        H5Gclose(g);
    it_free(name);
    return rc;
}

static int h5u_write_meta(it_h5file *f, const char *id, const char *json, const int64_t *tile_size, int ntile)
{
    int rc;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r'): cannot register tensor '%s'",
                            f->path, id);
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    hid_t g = H5Lexists(f->tgrp, name, H5P_DEFAULT) > 0
                  ? H5Gopen2(f->tgrp, name, H5P_DEFAULT)
                  : H5Gcreate2(f->tgrp, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        rc = it__h5_fail("creating the group of tensor", id);
    if (rc == IT_OK)
        rc = it__h5_write_str_attr(g, "id", id);
    if (rc == IT_OK)
        rc = it__h5_write_str_attr(g, "meta", json);
    if (rc == IT_OK)
        rc = it__h5_write_ints_attr(g, "tile_size", tile_size, ntile);
    if (g >= 0)
        H5Gclose(g);
    it_free(name);
    return rc;
}

static int h5u_list(it_h5file *f, int (*fn)(void *ctx, const char *id, const char *json), void *ctx)
{
    int rc;
    H5G_info_t info;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (f->tgrp < 0)
        return IT_OK; /* read-only and empty */
    if (H5Gget_info(f->tgrp, &info) < 0)
        return it__h5_fail("listing", "tensors");
    for (hsize_t i = 0; rc == IT_OK && i < info.nlinks; i++) {
        char *name = NULL, *id = NULL, *json = NULL;
        ssize_t n = H5Lget_name_by_idx(f->tgrp, ".", H5_INDEX_NAME, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
        if (n >= 0 && !(name = it_malloc((size_t)n + 1)))
            return it_error_set(IT_ENOMEM, "out of memory listing %s", f->path);
        if (n < 0 || H5Lget_name_by_idx(f->tgrp, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, (size_t)n + 1,
                                        H5P_DEFAULT) < 0) {
            it_free(name);
            rc = it__h5_fail("listing", "tensors");
            break;
        }
        hid_t g = H5Gopen2(f->tgrp, name, H5P_DEFAULT);
        it_free(name);
        if (g < 0) {
            H5Eclear2(H5E_DEFAULT);
            continue; /* a dataset or a dangling link: not a tensor */
        }
        if (it__h5_attr_exists(g, "id") && it__h5_attr_exists(g, "meta")) {
            if (it__h5_read_str_attr(g, "id", &id) == IT_OK && it__h5_read_str_attr(g, "meta", &json) == IT_OK) {
                /* fn may run Python, which may let a thread in that waits
                 * for this lock while holding the GIL: call it unlocked */
                it__h5_unlock();
                rc = fn(ctx, id, json);
                it__h5_lock();
                if (rc == IT_OK && f->fid < 0)
                    rc = it_error_set(IT_ESTATE, "the HDF5 store %s was closed while it was listed", f->path);
            } else
                it_error_clear(); /* unreadable: the tensor's own open reports it */
        }
        H5Eclear2(H5E_DEFAULT);
        it_free(id);
        it_free(json);
        H5Gclose(g);
    }
    return rc;
}

static int h5u_delete(it_h5file *f, const char *id)
{
    int rc;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r'): cannot delete tensor '%s'",
                            f->path, id);
    char *name = escape(id);
    if (!name)
        return it_error_set(IT_ENOMEM, "out of memory");
    for (h5tensor *h = f->tensors; h; h = h->next)
        if (strcmp(h->name, name) == 0) {
            it__h5_close_handles(h);
            h->deleted = 1;
        }
    if (H5Lexists(f->tgrp, name, H5P_DEFAULT) > 0 && H5Ldelete(f->tgrp, name, H5P_DEFAULT) < 0)
        rc = it__h5_fail("deleting tensor", id);
    H5Eclear2(H5E_DEFAULT);
    it_free(name);
    return rc;
}

/* ---- tile checksums ------------------------------------------------------ */

/* The checksum of a tile's bytes kept in `sums`: against damage, not an
 * adversary.  Four lanes of multiply-rotate over little-endian 8-byte words
 * (several GB/s), then the lanes and the tail folded into a state that
 * starts from the length. */
static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t tile_sum(const void *data, size_t n)
{
    const unsigned char *b = data;
    const uint64_t k1 = 0x9E3779B185EBCA87ull, k2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t lane[4] = {k1, k2, k1 ^ k2, k1 + k2}, r = (uint64_t)n * k1;
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; l++) {
            const unsigned char *q = b + i + 8 * l;
            uint64_t w = (uint64_t)q[0] | (uint64_t)q[1] << 8 | (uint64_t)q[2] << 16 | (uint64_t)q[3] << 24 |
                         (uint64_t)q[4] << 32 | (uint64_t)q[5] << 40 | (uint64_t)q[6] << 48 | (uint64_t)q[7] << 56;
            lane[l] = rotl64(lane[l] + w * k2, 31) * k1;
        }
    for (int l = 0; l < 4; l++)
        r = rotl64(r ^ lane[l], 27) * k1 + k2;
    for (; i < n; i++)
        r = (r ^ b[i]) * k1;
    r ^= r >> 33;
    r *= k2;
    return r ^ (r >> 29);
}

/* ---- the backend ---------------------------------------------------------- */

static int h5_load(void *ctx, it_tile_io *io, int *found);
static int h5_store(void *ctx, const it_tile_io *io);
static void h5_free(void *ctx);

static int deleted(const h5tensor *h)
{
    return it_error_set(IT_ESTATE, "tensor '%s' was deleted from %s (clear_tensor); create it again",
                        h->name, h->file->path);
}

static int h5_load_u(void *ctx, it_tile_io *io, int *found)
{
    h5tensor *h = ctx;
    int present, rc;
    *found = 0;
    if (h->deleted)
        return deleted(h);
    if ((rc = it__h5_open_tiles(h, 0, &present)) || !present)
        return rc;
    int64_t row = it__h5_table_find(h, io->coord);
    if (row < 0)
        return IT_OK;
    int64_t nbytes = (io->nbits + 7) / 8;
    if (nbytes > h->row_bytes)
        return it_error_set(IT_EIO, "a tile of tensor '%s' needs %lld bitmap bytes but the file has %lld",
                            h->name, (long long)nbytes, (long long)h->row_bytes);
    if (!it__h5_row_stored(h->dtiles, h->tiles_chunk_rows, row) ||
        !it__h5_row_stored(h->dbits, h->bits_chunk_rows, row))
        return it_error_set(IT_EIO, "a tile of tensor '%s' listed in %s is missing from the file (a damaged "
                            "chunk index)", h->name, h->file->path);
    hsize_t tail[IT_MAX_DIMS];
    hid_t mt = it__h5_file_type(h->dtype);
    for (int d = 0; d < h->ndim; d++)
        tail[d] = (hsize_t)h->tshape[d];
    int bad = it__h5_row_io(h->dtiles, mt, row, h->ndim + 1, tail, io->buf->data, 0) < 0;
    H5Tclose(mt);
    if (bad)
        return it__h5_fail("reading a tile of tensor", h->name);
    uint64_t sum = 0;
    if (h->dsums >= 0 && it__h5_row_io(h->dsums, H5T_NATIVE_UINT64, row, 1, NULL, &sum, 0) < 0)
        return it__h5_fail("reading a tile checksum of tensor", h->name);
    if (h->dsums >= 0 && sum != tile_sum(io->buf->data, io->buf->nbytes))
        return it_error_set(IT_EIO, "a tile of tensor '%s' in %s does not match its checksum: the file is "
                            "damaged", h->name, h->file->path);
    unsigned char *row_buf = it_malloc((size_t)h->row_bytes);
    if (!row_buf)
        return it_error_set(IT_ENOMEM, "out of memory reading a tile bitmap");
    tail[0] = (hsize_t)h->row_bytes;
    if (it__h5_row_io(h->dbits, H5T_NATIVE_UINT8, row, 2, tail, row_buf, 0) < 0) {
        it_free(row_buf);
        return it__h5_fail("reading a tile bitmap of tensor", h->name);
    }
    /* bit b is bit b % 8 of byte b / 8: the little-endian layout of the
     * core's 64-bit words */
    memcpy(io->bits, row_buf, (size_t)nbytes);
    it_free(row_buf);
    *found = 1;
    return IT_OK;
}

static int h5_store_u(void *ctx, const it_tile_io *io)
{
    h5tensor *h = ctx;
    it_h5file *f = h->file;
    int present, rc;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (f->readonly)
        return it_error_set(IT_ESTATE, "the store %s is read-only (mode 'r')", f->path);
    if (h->deleted)
        return deleted(h);
    if ((rc = it__h5_open_tiles(h, 1, &present)))
        return rc;
    int64_t nbytes = (io->nbits + 7) / 8;
    if (nbytes > h->row_bytes)
        return it_error_set(IT_ESTATE, "internal error: a tile bitmap is wider than its row");
    if (f->failed)
        return it_error_set(IT_EIO, "an earlier write to %s failed: close and reopen it", f->path);
    int64_t row = it__h5_table_find(h, io->coord);
    int fresh = row < 0;
    unsigned char *row_buf = it_calloc((size_t)h->row_bytes, 1);
    if (!row_buf)
        return it_error_set(IT_ENOMEM, "out of memory writing a tile bitmap");
    if (fresh) {
        row = h->nrows;
        if ((rc = it__h5_coords_room(h, row + 1)) || (rc = it__h5_table_room(h))) {
            it_free(row_buf);
            return rc;
        }
        if (row + 1 > h->rowcap && (rc = it__h5_fit_rows(h, IT_MAX(2 * h->rowcap, row + 1)))) {
            f->failed = 1;
            it_free(row_buf);
            return rc;
        }
    }
    hsize_t tail[IT_MAX_DIMS];
    hid_t mt = it__h5_file_type(h->dtype);
    for (int d = 0; d < h->ndim; d++)
        tail[d] = (hsize_t)h->tshape[d];
    /* values and their checksum, then bitmap, then (new tiles) the index
     * row: nothing commits in between, and a new row only counts once its
     * index row is there */
    int bad = it__h5_row_io(h->dtiles, mt, row, h->ndim + 1, tail, io->buf->data, 1) < 0;
    H5Tclose(mt);
    uint64_t sum = tile_sum(io->buf->data, io->buf->nbytes);
    if (!bad && h->dsums >= 0)
        bad = it__h5_row_io(h->dsums, H5T_NATIVE_UINT64, row, 1, NULL, &sum, 1) < 0;
    if (bad) {
        f->failed = 1;
        it_free(row_buf);
        return it__h5_fail("writing a tile of tensor", h->name);
    }
    memcpy(row_buf, io->bits, (size_t)nbytes);
    if (nbytes > 0 && io->nbits % 8)
        row_buf[nbytes - 1] &= (unsigned char)((1u << (io->nbits % 8)) - 1);
    tail[0] = (hsize_t)h->row_bytes;
    bad = it__h5_row_io(h->dbits, H5T_NATIVE_UINT8, row, 2, tail, row_buf, 1) < 0;
    it_free(row_buf);
    if (bad) {
        f->failed = 1;
        return it__h5_fail("writing a tile bitmap of tensor", h->name);
    }
    if (fresh) {
        memcpy(h->coords + row * h->ninf, io->coord, sizeof(int64_t) * (size_t)h->ninf);
        tail[0] = (hsize_t)h->ninf;
        if (h->ninf > 0 && it__h5_row_io(h->dindex, H5T_NATIVE_INT64, row, 2, tail, (void *)io->coord, 1) < 0) {
            f->failed = 1;
            return it__h5_fail("writing the tile index of tensor", h->name);
        }
        if ((rc = it__h5_table_add(h)))
            return rc; /* cannot fail: room was made above */
    }
    if (it_h5j_pending_bytes(f->fid) > COMMIT_THRESHOLD)
        return it__h5_commit(f);
    return IT_OK;
}

static void h5_free_u(void *ctx)
{
    h5tensor *h = ctx;
    it_h5file *f = h->file;
    for (h5tensor **pp = &f->tensors; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    /* rows past the count would be committed as garbage: cut them now */
    if (f->fid >= 0 && h->loaded && h->dtiles >= 0 && h->rowcap != h->nrows && !f->readonly)
        it__h5_fit_rows(h, h->nrows);
    it__h5_close_handles(h);
    it_free(h->name);
    it_free(h->coords);
    it_free(h->table);
    it_free(h);
    it_h5_unref(f);
}

/* The width of the stored bitmap rows of the tensor group `name`; 0 when
 * it has none yet. */
static int64_t stored_row_bytes(it_h5file *f, const char *name)
{
    int64_t w = 0;
    if (f->tgrp < 0 || H5Lexists(f->tgrp, name, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    hid_t g = H5Gopen2(f->tgrp, name, H5P_DEFAULT), d = -1, sp = -1;
    if (g >= 0 && H5Lexists(g, "bits", H5P_DEFAULT) > 0 && (d = H5Dopen2(g, "bits", H5P_DEFAULT)) >= 0 &&
        (sp = H5Dget_space(d)) >= 0 && H5Sget_simple_extent_ndims(sp) == 2) {
        hsize_t dims[2];
        H5Sget_simple_extent_dims(sp, dims, NULL);
        w = (int64_t)dims[1];
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    if (g >= 0)
        H5Gclose(g);
    H5Eclear2(H5E_DEFAULT);
    return w;
}

static int h5u_attach(it_h5file *f, const char *id, it_tensor *t)
{
    int rc;
    if ((rc = it__h5_need_open(f)))
        return rc;
    const it_tensor_spec *s = it_tensor_get_spec(t);
    int64_t dom = it_tensor_max_domain(t);
    if (dom > ((int64_t)1) << 34)
        return it_error_set(IT_ETOOBIG, "up to %lld windows can touch one tile: use a smaller tile_size",
                            (long long)dom);
    h5tensor *h = it_calloc(1, sizeof *h);
    if (!h || !(h->name = escape(id))) {
        it_free(h);
        return it_error_set(IT_ENOMEM, "out of memory attaching a tensor");
    }
    for (h5tensor *o = f->tensors; o; o = o->next)
        if (!o->deleted && strcmp(o->name, h->name) == 0) {
            /* two slot tables over one group would hand out the same rows */
            it_free(h->name);
            it_free(h);
            return it_error_set(IT_ESTATE, "tensor '%s' is already attached to %s", id, f->path);
        }
    h->file = f;
    h->dtype = s->dtype;
    h->ndim = s->ndim;
    it_tensor_tile_shape(t, h->tshape);
    uint64_t tile_bytes = it_dtype_size(s->dtype);
    for (int d = 0; d < s->ndim; d++) {
        h->ninf += s->shape[d] == IT_DIM_INFINITE;
        tile_bytes *= (uint64_t)h->tshape[d];
    }
    /* records carry fold counts (format 2) unless the tensor's rows were
     * written without them (format 1): those keep the bitmap alone */
    int64_t rec = it_tensor_record_bits(t, 1), stored = stored_row_bytes(f, h->name);
    int folds = rec != dom && (stored == 0 || stored == IT_MAX((rec + 7) / 8, 1));
    h->row_bytes = IT_MAX(((folds ? rec : dom) + 7) / 8, 1);
    h->grp = h->dtiles = h->dindex = h->dbits = h->dsums = -1;
    if (tile_bytes >= ((uint64_t)1) << 32) {
        it_free(h->name);
        it_free(h);
        return it_error_set(IT_ETOOBIG, "tiles of %llu bytes exceed HDF5's 4 GiB chunk limit: use a smaller "
                            "tile_size", (unsigned long long)tile_bytes);
    }
    if (folds && stored == 0 && !f->readonly) { /* a reader of format 1 would misread these rows */
        int64_t v = IT_H5_FORMAT;
        if ((rc = it__h5_write_ints_attr(f->fid, "infinite_tensor_format", &v, -1))) {
            it_free(h->name);
            it_free(h);
            return rc;
        }
    }
    it_backend b = {IT_BACKEND_VERSION, h5_load, h5_store, h5_free};
    it_h5_ref(f);
    h->next = f->tensors;
    f->tensors = h;
    /* loads take the store's lock, not the caller's (h5util.c) */
    int flags = (f->readonly ? IT_BACKEND_READONLY : 0) | (it__h5_serial_loads() ? 0 : IT_BACKEND_UNLOCKED_LOAD) |
                (folds ? IT_BACKEND_FOLDS : 0);

    return it_tensor_set_backend(t, &b, h, flags);
}

/* ---- the public entry points and the backend, each under the store's lock
 * (h5util.c) ------------------------------------------------------------- */

int it_h5_read_meta(it_h5file *f, const char *id, char **json, int64_t *tile_size, int *ntile,
                    int *found)
{
    it__h5_lock();
    int rc = h5u_read_meta(f, id, json, tile_size, ntile, found);
    it__h5_unlock();
    return rc;
}

int it_h5_write_meta(it_h5file *f, const char *id, const char *json, const int64_t *tile_size, int ntile)
{
    it__h5_lock();
    int rc = h5u_write_meta(f, id, json, tile_size, ntile);
    it__h5_unlock();
    return rc;
}

int it_h5_delete(it_h5file *f, const char *id)
{
    it__h5_lock();
    int rc = h5u_delete(f, id);
    it__h5_unlock();
    return rc;
}

static int h5_load(void *ctx, it_tile_io *io, int *found)
{
    it__h5_lock();
    int rc = h5_load_u(ctx, io, found);
    it__h5_unlock();
    return rc;
}

static int h5_store(void *ctx, const it_tile_io *io)
{
    it__h5_lock();
    int rc = h5_store_u(ctx, io);
    it__h5_unlock();
    return rc;
}

static void h5_free(void *ctx)
{
    it__h5_lock();
    h5_free_u(ctx);
    it__h5_unlock();
}

int it_h5_attach(it_h5file *f, const char *id, it_tensor *t)
{
    it__h5_lock();
    int rc = h5u_attach(f, id, t);
    it__h5_unlock();
    return rc;
}

int it_h5_list(it_h5file *f, int (*fn)(void *ctx, const char *id, const char *json), void *ctx)
{
    it__h5_lock();
    int rc = h5u_list(f, fn, ctx);
    it__h5_unlock();
    return rc;
}
