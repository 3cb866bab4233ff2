/*
 * mkseeds.c - make the seed files of the HDF5 harnesses with the core
 * itself (run from the repository root; `make fuzz-seeds` builds and runs
 * it):
 *
 *   mkseeds OUTDIR
 *
 * writes OUTDIR/fuzz_h5file/{one,two,empty,meta-only}: small stores with
 * tensors "a", "b", "c/d%e" and "gone" (see fuzz_h5common.h), and for
 * fuzz_journal OUTDIR/journal-base.h5 plus OUTDIR/fuzz_journal/commit: the
 * data file and the complete journal of a real commit, captured at its
 * commit point (the "journal-written" test hook), so that replaying the
 * journal onto the base gives the committed file.  A journal harness input
 * is one flags byte followed by the journal (see fuzz_journal.c).
 *
 * HDF5 records object times, so seeds made twice differ in a few bytes;
 * the kept ones are the ones in the repository.
 */
#include "fuzz_h5common.h"

static const char *out_dir;
static const char *hook_file; /* the data file of the commit being captured */
static int captured;

static void copy_file(const char *from, const char *to, int flag_byte)
{
    size_t n = 0;
    unsigned char *b = fz_read_file(from, &n);
    FZ_CHECK(b != NULL, "cannot read %s", from);
    if (flag_byte >= 0) {
        unsigned char *c = malloc(n + 1);
        FZ_CHECK(c != NULL, "out of memory");
        c[0] = (unsigned char)flag_byte;
        memcpy(c + 1, b, n);
        fz_write_file(to, c, n + 1);
        free(c);
    } else {
        fz_write_file(to, b, n);
    }
    free(b);
}

static void capture(const char *point)
{
    char jpath[600], to[600];
    if (!hook_file || captured || strcmp(point, "journal-written") != 0)
        return;
    captured = 1;
    snprintf(jpath, sizeof jpath, "%s-journal", hook_file);
    snprintf(to, sizeof to, "%s/journal-base.h5", out_dir);
    copy_file(hook_file, to, -1);
    snprintf(to, sizeof to, "%s/fuzz_journal/commit", out_dir);
    copy_file(jpath, to, 0);
}

static it_tensor_spec spec1(int ndim, it_dtype dt, const int64_t *shape, const int64_t *size,
                            const int64_t *stride, const int64_t *offset, const int64_t *tile)
{
    it_tensor_spec s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    s.dtype = dt;
    s.device_type = IT_DEVICE_CPU;
    s.batch_size = 3;
    s.combine = IT_COMBINE_SUM;
    s.window.ndim = s.window.ncoords = ndim;
    for (int d = 0; d < ndim; d++) {
        s.shape[d] = shape[d];
        s.window.size[d] = size[d];
        s.window.stride[d] = stride[d];
        s.window.offset[d] = offset[d];
        s.window.map[d] = d;
        s.tile_shape[d] = tile[d];
    }
    return s;
}

/* Register s under id in f; with tiles, compute a box of them and flush. */
static void add_tensor(it_h5file *f, const char *id, const it_tensor_spec *s, int tiles)
{
    char meta[256];
    int64_t ts[IT_MAX_DIMS];
    int nts = 0;
    fz_meta(s, meta, sizeof meta);
    for (int d = 0; d < s->ndim; d++)
        if (s->shape[d] == IT_DIM_INFINITE)
            ts[nts++] = s->tile_shape[d];
    FZ_CHECK(it_h5_write_meta(f, id, meta, ts, nts) == IT_OK, "write_meta: %s", it_error_message());
    if (!tiles)
        return;
    it_cache *c = NULL;
    it_tensor *t = NULL;
    fz_tensor *ft = calloc(1, sizeof *ft);
    FZ_CHECK(ft != NULL, "out of memory");
    ft->spec = *s;
    FZ_CHECK(it_cache_create(-1, -1, &c) == IT_OK, "cache");
    FZ_CHECK(it_tensor_create(c, &ft->spec, &fz_ops, ft, &t) == IT_OK, "create: %s", it_error_message());
    FZ_CHECK(it_h5_attach(f, id, t) == IT_OK, "attach: %s", it_error_message());
    it_box b;
    b.ndim = s->ndim;
    for (int d = 0; d < s->ndim; d++) {
        b.start[d] = s->shape[d] == IT_DIM_INFINITE ? -s->tile_shape[d] : 0;
        b.stop[d] = s->shape[d] == IT_DIM_INFINITE ? tiles * s->tile_shape[d] - s->tile_shape[d] : s->shape[d];
        b.step[d] = 1;
    }
    it_buffer *out = NULL;
    FZ_CHECK(it_tensor_read(t, &b, 0, &out) == IT_OK, "read: %s", it_error_message());
    it_buffer_free(out);
    FZ_CHECK(it_tensor_flush(t) == IT_OK, "flush: %s", it_error_message());
    it_tensor_unref(t);
    it_cache_unref(c);
    free(ft);
}

static it_h5file *create(const char *name, int gzip)
{
    char path[600];
    it_h5file *f = NULL;
    snprintf(path, sizeof path, "%s/fuzz_h5file/%s", out_dir, name);
    FZ_CHECK(it_h5_open(path, IT_H5_TRUNC, gzip, &f) == IT_OK, "open %s: %s", path, it_error_message());
    return f;
}

static void done(it_h5file *f)
{
    FZ_CHECK(it_h5_close(f) == IT_OK, "close: %s", it_error_message());
    it_h5_unref(f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    char path[600];
    const int64_t inf = IT_DIM_INFINITE;
    it_tensor_spec a = spec1(1, IT_F64, (int64_t[]){inf}, (int64_t[]){3}, (int64_t[]){2}, (int64_t[]){-1},
                             (int64_t[]){8});
    it_tensor_spec b = spec1(2, IT_I32, (int64_t[]){inf, 5}, (int64_t[]){2, 2}, (int64_t[]){1, 1},
                             (int64_t[]){0, 0}, (int64_t[]){4, 0});
    it_tensor_spec c = spec1(3, IT_U8, (int64_t[]){inf, 3, inf}, (int64_t[]){1, 3, 2},
                             (int64_t[]){1, 1, 2}, (int64_t[]){0, 0, 1}, (int64_t[]){2, 0, 4});

    it_h5file *f = create("one", -1);
    add_tensor(f, "a", &a, 3);
    done(f);
    f = create("two", 4); /* gzip */
    add_tensor(f, "b", &b, 2);
    add_tensor(f, "c/d%e", &c, 2);
    done(f);
    f = create("empty", -1);
    done(f);
    f = create("meta-only", -1);
    add_tensor(f, "gone", &a, 0);
    add_tensor(f, "a", &b, 0); /* a's metadata with b's geometry */
    done(f);

    /* a commit over existing pages, captured at its commit point */
    snprintf(path, sizeof path, "%s/journal-work.h5", out_dir);
    f = NULL;
    FZ_CHECK(it_h5_open(path, IT_H5_TRUNC, -1, &f) == IT_OK, "open: %s", it_error_message());
    add_tensor(f, "a", &a, 2);
    done(f);
    FZ_CHECK(it_h5_open(path, IT_H5_RDWR, -1, &f) == IT_OK, "open: %s", it_error_message());
    hook_file = path;
    it_h5j_set_test_hook(capture);
    add_tensor(f, "b", &b, 1);
    done(f);
    it_h5j_set_test_hook(NULL);
    FZ_CHECK(captured, "no commit wrote a journal");
    unlink(path);
    return 0;
}
