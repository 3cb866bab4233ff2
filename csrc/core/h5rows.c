/*
 * h5rows.c - the datasets of an attached tensor (h5internal.h has the
 * layout of the slot table): opening them, or creating them for the first
 * tile; checking their shapes against the tensor; reading the slot table
 * from "index"; resizing them to a row count; reading and writing one row;
 * closing them.  A new tile takes the next row: h5store.c makes room in the
 * slot table (it__h5_coords_room, it__h5_table_room) before it writes,
 * and adds the row (it__h5_table_add) once its index row is written.
 * Calls h5util.c.
 */
#include "h5internal.h"

#include <hdf5.h>
#include <string.h>

/* ---- the slot table ------------------------------------------------------ */

static uint64_t hash_coord(const int64_t *c, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)c[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

/* Make room in the table for row h->nrows (the rows before it are in). */
int it__h5_table_room(h5tensor *h)
{
    if (2 * (h->nrows + 1) <= h->tsize)
        return IT_OK;
    int64_t n = h->tsize ? 2 * h->tsize : 64;
    while (2 * (h->nrows + 1) > n)
        n *= 2;
    int64_t *t = it_calloc((size_t)n, sizeof *t);
    if (!t)
        return it_error_set(IT_ENOMEM, "out of memory indexing tiles");
    for (int64_t r = 0; r < h->nrows; r++) {
        uint64_t i = hash_coord(h->coords + r * h->ninf, h->ninf) & (uint64_t)(n - 1);
        while (t[i])
            i = (i + 1) & (uint64_t)(n - 1);
        t[i] = r + 1;
    }
    it_free(h->table);
    h->table = t;
    h->tsize = n;
    return IT_OK;
}

/* Add row h->nrows (its coordinates are in place) to the table and count
 * it.  Cannot fail after a successful it__h5_table_room. */
int it__h5_table_add(h5tensor *h)
{
    int rc = it__h5_table_room(h);
    if (rc)
        return rc;
    int64_t row = h->nrows;
    uint64_t i = hash_coord(h->coords + row * h->ninf, h->ninf) & (uint64_t)(h->tsize - 1);
    while (h->table[i])
        i = (i + 1) & (uint64_t)(h->tsize - 1);
    h->table[i] = row + 1;
    h->nrows = row + 1;
    return IT_OK;
}

/* The row of the tile at coord, or -1. */
int64_t it__h5_table_find(const h5tensor *h, const int64_t *coord)
{
    if (!h->tsize)
        return -1;
    uint64_t i = hash_coord(coord, h->ninf) & (uint64_t)(h->tsize - 1);
    for (; h->table[i]; i = (i + 1) & (uint64_t)(h->tsize - 1)) {
        int64_t r = h->table[i] - 1;
        if (memcmp(h->coords + r * h->ninf, coord, sizeof(int64_t) * (size_t)h->ninf) == 0)
            return r;
    }
    return -1;
}

/* Make room for the coordinates of `rows` rows. */
int it__h5_coords_room(h5tensor *h, int64_t rows)
{
    if (rows * IT_MAX(h->ninf, 1) <= h->coordcap)
        return IT_OK;
    int64_t cap = IT_MAX(h->coordcap * 2, 64);
    while (cap < rows * IT_MAX(h->ninf, 1))
        cap *= 2;
    int64_t *c = it_realloc(h->coords, sizeof(int64_t) * (size_t)cap);
    if (!c)
        return it_error_set(IT_ENOMEM, "out of memory indexing tiles");
    h->coords = c;
    h->coordcap = cap;
    return IT_OK;
}

/* ---- the datasets ---------------------------------------------------------- */

/* A chunked dataset with no rows yet, growing without limit along the
 * first dim; dims and chunk give every dim (dims[0] is not used). */
static hid_t make_dataset(h5tensor *h, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk, int gzip, int fletcher)
{
    hsize_t zero[IT_MAX_DIMS + 1], max[IT_MAX_DIMS + 1];
    for (int i = 0; i < rank; i++) {
        zero[i] = i == 0 ? 0 : dims[i];
        max[i] = i == 0 ? H5S_UNLIMITED : dims[i];
    }
    hid_t sp = H5Screate_simple(rank, zero, max), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    if (gzip >= 0)
        H5Pset_deflate(dcpl, (unsigned)gzip);
    if (fletcher)
        H5Pset_fletcher32(dcpl); /* last: a checksum of the bytes on disk */
    hid_t d = H5Dcreate2(h->grp, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* Rows per chunk of a chunked dataset; 0 when it is not chunked. */
static hsize_t chunk_rows(hid_t d)
{
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[IT_MAX_DIMS + 1];
    int rank = dcpl < 0 ? -1 : H5Pget_chunk(dcpl, IT_MAX_DIMS + 1, chunk);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rank < 1 ? 0 : chunk[0];
}

/* Open the group's datasets ("tiles" exists), or create them. */
static int open_datasets(h5tensor *h, int exists)
{
    it_h5file *f = h->file;
    if (exists) {
        h->dtiles = H5Dopen2(h->grp, "tiles", H5P_DEFAULT);
        h->dbits = H5Dopen2(h->grp, "bits", H5P_DEFAULT);
        h->dindex = h->ninf > 0 ? H5Dopen2(h->grp, "index", H5P_DEFAULT) : -1;
        if (H5Lexists(h->grp, "sums", H5P_DEFAULT) > 0 &&
            (h->dsums = H5Dopen2(h->grp, "sums", H5P_DEFAULT)) < 0)
            return it__h5_fail("opening the datasets of tensor", h->name);
    } else {
        hsize_t dims[IT_MAX_DIMS + 1], chunk[IT_MAX_DIMS + 1];
        hid_t type = it__h5_file_type(h->dtype);
        dims[0] = chunk[0] = 1;
        for (int d = 0; d < h->ndim; d++)
            dims[d + 1] = chunk[d + 1] = (hsize_t)h->tshape[d];
        /* tiles: their own checksum in sums (Fletcher-32 here would cost
         * more than the write itself for uncompressed tiles) */
        h->dtiles = make_dataset(h, "tiles", type, h->ndim + 1, dims, chunk, f->gzip, 0);
        H5Tclose(type);
        hsize_t bdims[2] = {1, (hsize_t)h->row_bytes};
        hsize_t bchunk[2] = {(hsize_t)IT_MAX(1, IT_MIN(1024, 65536 / h->row_bytes)), (hsize_t)h->row_bytes};
        h->dbits = make_dataset(h, "bits", H5T_STD_U8LE, 2, bdims, bchunk, f->gzip, 1);
        hsize_t sdims[1] = {1}, schunk[1] = {1024};
        h->dsums = make_dataset(h, "sums", H5T_STD_U64LE, 1, sdims, schunk, -1, 1);
        if (h->ninf > 0) {
            hsize_t idims[2] = {1, (hsize_t)h->ninf}, ichunk[2] = {1024, (hsize_t)h->ninf};
            h->dindex = make_dataset(h, "index", H5T_STD_I64LE, 2, idims, ichunk, -1, 1);
        }
    }
    if (h->dtiles < 0 || h->dbits < 0 || (h->ninf > 0 && h->dindex < 0) || (!exists && h->dsums < 0))
        return it__h5_fail(exists ? "opening the datasets of tensor" : "creating the datasets of tensor",
                           h->name);
    return IT_OK;
}

/* Check the shapes of the open datasets against the tensor; *rows: their
 * row count. */
static int check_shapes(h5tensor *h, int64_t *rows)
{
    hsize_t td[IT_MAX_DIMS + 2], bd[2], id[2] = {0, 0};
    hid_t sp = H5Dget_space(h->dtiles);
    int trank = H5Sget_simple_extent_ndims(sp);
    if (trank == h->ndim + 1)
        H5Sget_simple_extent_dims(sp, td, NULL);
    H5Sclose(sp);
    sp = H5Dget_space(h->dbits);
    int brank = H5Sget_simple_extent_ndims(sp);
    if (brank == 2)
        H5Sget_simple_extent_dims(sp, bd, NULL);
    H5Sclose(sp);
    int ok = trank == h->ndim + 1 && brank == 2 && bd[0] == td[0] && bd[1] == (hsize_t)h->row_bytes;
    for (int d = 0; ok && d < h->ndim; d++)
        ok = td[d + 1] == (hsize_t)h->tshape[d];
    if (ok && h->ninf > 0) {
        sp = H5Dget_space(h->dindex);
        ok = H5Sget_simple_extent_ndims(sp) == 2;
        if (ok)
            H5Sget_simple_extent_dims(sp, id, NULL);
        H5Sclose(sp);
        ok = ok && id[0] == td[0] && id[1] == (hsize_t)h->ninf;
    }
    if (ok && h->dsums >= 0) {
        hsize_t sd[1] = {0};
        sp = H5Dget_space(h->dsums);
        ok = H5Sget_simple_extent_ndims(sp) == 1;
        if (ok)
            H5Sget_simple_extent_dims(sp, sd, NULL);
        H5Sclose(sp);
        ok = ok && sd[0] == td[0];
    }
    if (ok && h->ninf == 0)
        ok = td[0] <= 1;
    if (!ok)
        return it_error_set(IT_EIO, "the datasets of tensor '%s' do not match its shape, tile size and "
                            "windows: the file is damaged or was changed by other software", h->name);
    *rows = (int64_t)td[0];
    return IT_OK;
}

/* Read the slot table: the coordinates of `rows` rows from "index" (none
 * without infinite dims), each tile listed once. */
static int read_slot_table(h5tensor *h, int64_t rows)
{
    int rc;
    if ((rc = it__h5_coords_room(h, rows + 1)))
        return rc;
    if (rows > 0 && h->ninf > 0 &&
        H5Dread(h->dindex, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, h->coords) < 0)
        return it__h5_fail("reading the tile index of tensor", h->name);
    h->nrows = 0;
    h->rowcap = rows;
    it_free(h->table);
    h->table = NULL;
    h->tsize = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (it__h5_table_find(h, h->coords + r * h->ninf) >= 0)
            return it_error_set(IT_EIO, "the tile index of tensor '%s' lists a tile twice: the file is "
                                "damaged", h->name);
        if ((rc = it__h5_table_add(h))) /* row r: h->nrows == r */
            return rc;
    }
    return IT_OK;
}

/* Open (or with create, make) the group's datasets and read the slot
 * table.  *present = 0 when the tensor has no tile yet and create is 0.
 * A failure once the group is open closes it and every dataset. */
int it__h5_open_tiles(h5tensor *h, int create, int *present)
{
    it_h5file *f = h->file;
    int64_t rows = 0;
    int rc;
    *present = 0;
    if ((rc = it__h5_need_open(f)))
        return rc;
    if (h->loaded && h->dtiles >= 0) {
        *present = 1;
        return IT_OK;
    }
    if (h->grp < 0 && (h->grp = H5Gopen2(f->tgrp, h->name, H5P_DEFAULT)) < 0)
        return it__h5_fail("opening the group of tensor", h->name);
    htri_t has = H5Lexists(h->grp, "tiles", H5P_DEFAULT);
    if (has <= 0 && !create)
        return IT_OK;
    if ((rc = open_datasets(h, has > 0)) || (rc = check_shapes(h, &rows)))
        goto fail;
    h->tiles_chunk_rows = chunk_rows(h->dtiles);
    h->bits_chunk_rows = chunk_rows(h->dbits);
    if ((rc = read_slot_table(h, rows)))
        goto fail;
    h->loaded = 1;
    *present = 1;
    return IT_OK;
fail:
    it__h5_close_handles(h);
    return rc;
}

/* Set the row count of the datasets (tiles, bits, and index and sums when
 * the tensor has them). */
int it__h5_fit_rows(h5tensor *h, int64_t rows)
{
    hsize_t td[IT_MAX_DIMS + 1], bd[2] = {(hsize_t)rows, (hsize_t)h->row_bytes},
            id[2] = {(hsize_t)rows, (hsize_t)h->ninf};
    td[0] = (hsize_t)rows;
    for (int d = 0; d < h->ndim; d++)
        td[d + 1] = (hsize_t)h->tshape[d];
    hsize_t sd[1] = {(hsize_t)rows};
    if (H5Dset_extent(h->dtiles, td) < 0 || H5Dset_extent(h->dbits, bd) < 0 ||
        (h->ninf > 0 && H5Dset_extent(h->dindex, id) < 0) || (h->dsums >= 0 && H5Dset_extent(h->dsums, sd) < 0))
        return it__h5_fail("resizing the datasets of tensor", h->name);
    h->rowcap = rows;
    return IT_OK;
}

/* Close the tensor's group and datasets; the slot table is read again
 * when they open next. */
void it__h5_close_handles(h5tensor *h)
{
    hid_t *ids[] = {&h->dtiles, &h->dindex, &h->dbits, &h->dsums};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        if (*ids[i] >= 0)
            H5Dclose(*ids[i]);
        *ids[i] = -1;
    }
    if (h->grp >= 0)
        H5Gclose(h->grp);
    h->grp = -1;
    h->loaded = 0;
    h->nrows = h->rowcap = 0;
}

/* ---- one row ------------------------------------------------------------- */

/* Write or read row `row` of dataset d, of rank `rank`: tail holds its
 * rank - 1 trailing dims.  0, or -1 when HDF5 fails. */
int it__h5_row_io(hid_t d, hid_t mtype, int64_t row, int rank, const hsize_t *tail, void *buf, int write)
{
    hsize_t start[IT_MAX_DIMS + 1] = {0}, count[IT_MAX_DIMS + 1];
    start[0] = (hsize_t)row;
    count[0] = 1;
    for (int i = 1; i < rank; i++)
        count[i] = tail[i - 1];
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0)
        e = write ? H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf) : H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return e < 0 ? -1 : 0;
}

/* 1 if the chunk holding row `row` of dataset d (rows_per_chunk: the
 * tensor's tiles_chunk_rows or bits_chunk_rows) is stored.  A tile listed in the index whose chunk the file
 * cannot find has a damaged chunk index: HDF5 would read it as the fill
 * value, silently. */
int it__h5_row_stored(hid_t d, hsize_t rows_per_chunk, int64_t row)
{
    hsize_t off[IT_MAX_DIMS + 1] = {0}, size = 0;
    if (rows_per_chunk == 0)
        return 0;
    off[0] = (hsize_t)row - (hsize_t)row % rows_per_chunk;
    return H5Dget_chunk_storage_size(d, off, &size) >= 0 && size > 0;
}
