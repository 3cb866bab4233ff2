/*
 * test_backend.c - persistent tiles: the backend hook of it_tensor.h
 * (it_tensor_set_backend, it_tensor_flush, it_tensor_dirty,
 * it_tensor_max_domain) and the cache's write-back on eviction.
 *
 * The backend here is a fake ("fb"): an in-memory map from tile
 * coordinates to one record per tile (a copy of the values and of the
 * bitmap words, plus the domain they were stored with), shared by every
 * backend context opened over it, so that destroying a tensor without a
 * flush and creating a new one over the same map models a crash and a
 * reopen.  It counts loads and stores, fails the Nth of either on demand
 * (IT_EIO), checks every it_tile_io it is handed, and can run a hook inside
 * store (clear the tensor, read other tensors).
 *
 * What is checked is independent of the core: the values of every read are
 * compared with ft_reference (a brute-force lexicographic fold of every
 * window), every stored record is compared with a brute-force fold of the
 * windows its bitmap claims (so each record is self-consistent, which is
 * the whole crash-safety argument), and the windows a read computes are
 * counted against a brute-force count over the stored bitmaps.  Values are
 * small integers, so sums are exact in float64 and int64.
 */
#include "it_test_util.h"

/* ------------------------------------------------------------------ */
/* the fake backend                                                     */

typedef struct fb_rec {
    int64_t coord[IT_MAX_DIMS];
    it_dtype dtype;
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    size_t nbytes;
    unsigned char *vals;
    int ncoords;
    int64_t dom_lo[IT_MAX_DIMS], dom_n[IT_MAX_DIMS];
    int64_t nbits;
    uint64_t *bits;
    long writes;
} fb_rec;

typedef struct fb_map fb_map;
struct fb_map {
    int ninf;
    fb_rec *recs;
    size_t n, cap;
    /* counters */
    long load_calls, loads_found, load_fails;
    long store_calls, stores_ok, store_fails;
    long ctx_opened, ctx_frees;
    /* knobs: fail the load / store call with this number (cumulative over
     * the map, 1-based), and every later one with *_repeat; 0: never */
    long load_fail_at, store_fail_at;
    int load_fail_repeat, store_fail_repeat;
    int fail_coord_on; /* fail every load of this tile */
    int64_t fail_coord[IT_MAX_DIMS];
    /* load sets the unused bits of the last bitmap word (a store keeping
     * whole words may hand back junk there; the core must mask it) */
    int junk_tail;
    /* a hook run inside load, after the record is copied (the contract
     * says load must not touch the tensor: only defensive checks use it) */
    void (*load_hook)(fb_map *m);
    /* a hook run inside store, before the record is written (after it
     * with hook_after) */
    void (*hook)(fb_map *m, const it_tile_io *io);
    int hook_after;
    int hook_on_coord; /* only when storing this tile */
    int64_t hook_coord[IT_MAX_DIMS];
    void *hook_arg;
    const it_box *hook_box;
    long hook_times; /* runs left; < 0: unlimited */
    long hook_runs;
    int in_hook;
    /* problems seen in callbacks (a callback never fails the test itself) */
    int nerr;
    char err[600];
};

typedef struct fb_ctx {
    fb_map *m;
    int ndim;
    int64_t tshape[IT_MAX_DIMS];
    it_dtype dtype;
    double fill;
    int64_t max_domain;
} fb_ctx;

static void fb_record(fb_map *m, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void fb_record(fb_map *m, const char *fmt, ...)
{
    if (m->nerr++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->err, sizeof m->err, fmt, ap);
        va_end(ap);
    }
}

static void fb_check_errors(const fb_map *m)
{
    if (m->nerr)
        fail_msg("%d problem(s) seen in backend callbacks; first: %s", m->nerr, m->err);
}

static fb_map *fb_map_new(int ninf)
{
    fb_map *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->ninf = ninf;
    return m;
}

static void fb_map_free(fb_map *m)
{
    if (!m)
        return;
    fb_check_errors(m);
    if (m->ctx_frees != m->ctx_opened)
        fail_msg("backend free called %ld times for %ld contexts", m->ctx_frees, m->ctx_opened);
    for (size_t i = 0; i < m->n; i++) {
        free(m->recs[i].vals);
        free(m->recs[i].bits);
    }
    free(m->recs);
    free(m);
}

static fb_rec *fb_find(fb_map *m, const int64_t *coord)
{
    for (size_t i = 0; i < m->n; i++)
        if (memcmp(m->recs[i].coord, coord, sizeof(int64_t) * (size_t)m->ninf) == 0)
            return &m->recs[i];
    return NULL;
}

static int fb_rec_bit(const fb_rec *r, const int64_t *w)
{
    int64_t idx = 0;
    for (int c = 0; c < r->ncoords; c++) {
        int64_t k = w[c] - r->dom_lo[c];
        if (k < 0 || k >= r->dom_n[c])
            return -1;
        idx = idx * r->dom_n[c] + k;
    }
    return (int)((r->bits[idx >> 6] >> (idx & 63)) & 1u);
}

static int64_t fb_popcount(const fb_rec *r)
{
    int64_t n = 0;
    for (int64_t i = 0; i < (r->nbits + 63) / 64; i++)
        n += __builtin_popcountll(r->bits[i]);
    return n;
}

static long fb_total_writes(const fb_map *m)
{
    long n = 0;
    for (size_t i = 0; i < m->n; i++)
        n += m->recs[i].writes;
    return n;
}

/* Check an it_tile_io against what the tensor's spec implies; 0 if fine. */
static int fb_check_io(fb_ctx *x, const it_tile_io *io, const char *who)
{
    fb_map *m = x->m;
    const it_buffer *b = io->buf;
    if (io->ninf != m->ninf || (io->ninf > 0 && !io->coord)) {
        fb_record(m, "%s: ninf %d (coord %p), expected %d", who, io->ninf, (const void *)io->coord,
                  m->ninf);
        return -1;
    }
    if (!b || !b->data || b->dtype != x->dtype || b->ndim != x->ndim) {
        fb_record(m, "%s: bad buffer", who);
        return -1;
    }
    int64_t numel = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (b->shape[d] != x->tshape[d]) {
            fb_record(m, "%s: buffer dim %d is %lld, tile shape %lld", who, d,
                      (long long)b->shape[d], (long long)x->tshape[d]);
            return -1;
        }
        numel *= b->shape[d];
    }
    if (!tu_buffer_contiguous(b) || b->nbytes != (size_t)numel * tu_elsize(x->dtype)) {
        fb_record(m, "%s: buffer not contiguous or nbytes %zu for %lld elements", who, b->nbytes,
                  (long long)numel);
        return -1;
    }
    if (io->ncoords != x->ndim || !io->dom_lo || !io->dom_n) {
        fb_record(m, "%s: ncoords %d, expected %d", who, io->ncoords, x->ndim);
        return -1;
    }
    /* A tile no window can touch has nbits 0 and, at the time of writing,
     * uninitialised dom_lo / dom_n (tile_create copies what
     * it_window_domain left unwritten when it returns total 0): nothing
     * is checked there; see the report that came with this file. */
    if (io->nbits == 0)
        return 0;
    int64_t prod = 1;
    for (int c = 0; c < io->ncoords; c++) {
        if (io->dom_n[c] < 0) {
            fb_record(m, "%s: negative domain count", who);
            return -1;
        }
        prod *= io->dom_n[c];
    }
    if (prod != io->nbits || (io->nbits > 0 && !io->bits)) {
        fb_record(m, "%s: nbits %lld but the domain holds %lld windows", who,
                  (long long)io->nbits, (long long)prod);
        return -1;
    }
    if (io->nbits > x->max_domain) {
        fb_record(m, "%s: tile (%s) has %lld domain bits, more than it_tensor_max_domain %lld",
                  who, tu_fmt_coords(io->ninf, io->coord).s, (long long)io->nbits,
                  (long long)x->max_domain);
        return -1;
    }
    return 0;
}

static int fb_load(void *ctx, it_tile_io *io, int *found)
{
    fb_ctx *x = ctx;
    fb_map *m = x->m;
    m->load_calls++;
    *found = 0;
    if (fb_check_io(x, io, "load"))
        return it_error_set(IT_ECALLBACK, "fake load: bad tile io (%s)", m->err);
    /* on entry the values hold the fill and the bits are clear */
    size_t es = tu_elsize(x->dtype);
    for (size_t j = 0; j < io->buf->nbytes / es; j++)
        if (el_load(x->dtype, (char *)io->buf->data + j * es) != x->fill) {
            fb_record(m, "load: element %zu of the buffer handed in is not the fill", j);
            break;
        }
    for (int64_t i = 0; i < (io->nbits + 63) / 64; i++)
        if (io->bits[i]) {
            fb_record(m, "load: bits handed in are not clear");
            break;
        }
    if ((m->load_fail_at > 0 &&
         (m->load_calls == m->load_fail_at || (m->load_fail_repeat && m->load_calls > m->load_fail_at))) ||
        (m->fail_coord_on &&
         memcmp(io->coord, m->fail_coord, sizeof(int64_t) * (size_t)m->ninf) == 0)) {
        m->load_fails++;
        return it_error_set(IT_EIO, "fake load failed on call %ld (tile %s)", m->load_calls,
                            tu_fmt_coords(io->ninf, io->coord).s);
    }
    fb_rec *r = fb_find(m, io->coord);
    if (!r)
        return IT_OK;
    if (r->nbytes != io->buf->nbytes || r->nbits != io->nbits ||
        (r->nbits > 0 &&
         (memcmp(r->dom_lo, io->dom_lo, sizeof(int64_t) * (size_t)io->ncoords) != 0 ||
          memcmp(r->dom_n, io->dom_n, sizeof(int64_t) * (size_t)io->ncoords) != 0))) {
        fb_record(m, "load: tile (%s) has another domain or size than when it was stored",
                  tu_fmt_coords(io->ninf, io->coord).s);
        return it_error_set(IT_EIO, "fake load: stored record does not fit");
    }
    memcpy(io->buf->data, r->vals, r->nbytes);
    memcpy(io->bits, r->bits, sizeof(uint64_t) * (size_t)((r->nbits + 63) / 64));
    if (m->junk_tail && r->nbits % 64)
        io->bits[r->nbits / 64] |= ~(((uint64_t)1 << (r->nbits % 64)) - 1);
    m->loads_found++;
    *found = 1;
    if (m->load_hook)
        m->load_hook(m);
    return IT_OK;
}

static void fb_run_hook(fb_map *m, const it_tile_io *io)
{
    if (m->hook_on_coord && memcmp(io->coord, m->hook_coord, sizeof(int64_t) * (size_t)m->ninf))
        return;
    if (m->hook && m->hook_times != 0 && !m->in_hook) {
        if (m->hook_times > 0)
            m->hook_times--;
        m->in_hook++;
        m->hook_runs++;
        m->hook(m, io);
        m->in_hook--;
    }
}

static int fb_store(void *ctx, const it_tile_io *io)
{
    fb_ctx *x = ctx;
    fb_map *m = x->m;
    m->store_calls++;
    if (fb_check_io(x, io, "store"))
        return it_error_set(IT_ECALLBACK, "fake store: bad tile io (%s)", m->err);
    if (m->store_fail_at > 0 &&
        (m->store_calls == m->store_fail_at || (m->store_fail_repeat && m->store_calls > m->store_fail_at))) {
        m->store_fails++;
        return it_error_set(IT_EIO, "fake store failed on call %ld", m->store_calls);
    }
    if (!m->hook_after)
        fb_run_hook(m, io);
    int64_t nw = (io->nbits + 63) / 64;
    if (io->nbits % 64 && (io->bits[nw - 1] >> (io->nbits % 64)) != 0)
        fb_record(m, "store: bits set beyond the domain of tile (%s)",
                  tu_fmt_coords(io->ninf, io->coord).s);
    fb_rec *r = fb_find(m, io->coord);
    if (!r) {
        if (m->n == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->recs = realloc(m->recs, m->cap * sizeof *m->recs);
            assert_non_null(m->recs);
        }
        r = &m->recs[m->n++];
        memset(r, 0, sizeof *r);
        memcpy(r->coord, io->coord, sizeof(int64_t) * (size_t)io->ninf);
    }
    free(r->vals);
    free(r->bits);
    r->dtype = io->buf->dtype;
    r->ndim = io->buf->ndim;
    memcpy(r->shape, io->buf->shape, sizeof r->shape);
    r->nbytes = io->buf->nbytes;
    r->vals = malloc(r->nbytes ? r->nbytes : 1);
    r->bits = calloc((size_t)(nw ? nw : 1), sizeof(uint64_t));
    assert_non_null(r->vals);
    assert_non_null(r->bits);
    memcpy(r->vals, io->buf->data, r->nbytes);
    memcpy(r->bits, io->bits, sizeof(uint64_t) * (size_t)nw);
    r->ncoords = io->ncoords;
    memcpy(r->dom_lo, io->dom_lo, sizeof(int64_t) * (size_t)io->ncoords);
    memcpy(r->dom_n, io->dom_n, sizeof(int64_t) * (size_t)io->ncoords);
    r->nbits = io->nbits;
    r->writes++;
    m->stores_ok++;
    if (m->hook_after)
        fb_run_hook(m, io);
    return IT_OK;
}

static void fb_free(void *ctx)
{
    fb_ctx *x = ctx;
    x->m->ctx_frees++;
    free(x);
}

static const it_backend fb_backend = {IT_BACKEND_VERSION, fb_load, fb_store, fb_free};

/* A context over m for f's tensor (counted as opened). */
static fb_ctx *fb_ctx_new(fb_map *m, const ft *f)
{
    fb_ctx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->m = m;
    x->ndim = f->spec.ndim;
    it_tensor_tile_shape(f->t, x->tshape);
    x->dtype = f->spec.dtype;
    x->fill = f->fill;
    x->max_domain = it_tensor_max_domain(f->t);
    m->ctx_opened++;
    return x;
}

static void fb_attach(ft *f, fb_map *m, int flags)
{
    EXPECT_OK(it_tensor_set_backend(f->t, &fb_backend, fb_ctx_new(m, f), flags));
}

/* A deep copy of the map's records (counters and knobs are not copied). */
static fb_map *fb_snapshot(const fb_map *m)
{
    fb_map *s = fb_map_new(m->ninf);
    s->cap = s->n = m->n;
    s->recs = calloc(m->n ? m->n : 1, sizeof *s->recs);
    assert_non_null(s->recs);
    for (size_t i = 0; i < m->n; i++) {
        fb_rec *r = &s->recs[i];
        *r = m->recs[i];
        r->vals = malloc(r->nbytes ? r->nbytes : 1);
        r->bits = malloc(sizeof(uint64_t) * (size_t)((r->nbits + 63) / 64 + 1));
        assert_non_null(r->vals);
        assert_non_null(r->bits);
        memcpy(r->vals, m->recs[i].vals, r->nbytes);
        memcpy(r->bits, m->recs[i].bits, sizeof(uint64_t) * (size_t)((r->nbits + 63) / 64));
    }
    return s;
}

/* Every record of old is still in m with at least the same windows. */
static void fb_expect_superset(const fb_map *old, fb_map *m)
{
    for (size_t i = 0; i < old->n; i++) {
        const fb_rec *o = &old->recs[i];
        fb_rec *r = fb_find(m, o->coord);
        if (!r)
            fail_msg("stored tile (%s) disappeared", tu_fmt_coords(m->ninf, o->coord).s);
        if (r->nbits != o->nbits)
            fail_msg("stored tile (%s) changed its domain", tu_fmt_coords(m->ninf, o->coord).s);
        for (int64_t k = 0; k < (o->nbits + 63) / 64; k++)
            if ((o->bits[k] & ~r->bits[k]) != 0)
                fail_msg("stored tile (%s) lost windows it had (bits word %lld: %llx -> %llx)",
                         tu_fmt_coords(m->ninf, o->coord).s, (long long)k,
                         (unsigned long long)o->bits[k], (unsigned long long)r->bits[k]);
    }
}

/* Each record holds exactly the fold, from the fill and in lexicographic
 * order, of the windows its bitmap marks (f: the fake the tensor was made
 * from). */
static void fb_check_records(fb_map *m, ft *f)
{
    const it_window *w = &f->spec.window;
    int nd = f->spec.ndim;
    for (size_t i = 0; i < m->n; i++) {
        fb_rec *r = &m->recs[i];
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], numel = 1, tst[IT_MAX_DIMS];
        for (int d = 0, k = 0; d < nd; d++) {
            if (f->spec.shape[d] == INF)
                ts[d] = r->coord[k++] * r->shape[d];
            else
                ts[d] = 0;
            te[d] = ts[d] + r->shape[d];
            numel *= r->shape[d];
        }
        for (int d = nd - 1, s = 1; d >= 0; d--) {
            tst[d] = s;
            s *= (int)r->shape[d];
        }
        double *exp = malloc(sizeof(double) * (size_t)numel);
        assert_non_null(exp);
        for (int64_t j = 0; j < numel; j++)
            exp[j] = f->fill;
        for (int64_t k = 0; k < (r->nbits + 63) / 64; k++)
            if (r->nbits % 64 && k == (r->nbits - 1) / 64 && (r->bits[k] >> (r->nbits % 64)))
                fail_msg("record (%s) has bits beyond its domain", tu_fmt_coords(m->ninf, r->coord).s);
        if (r->nbits > 0) {
            int64_t co[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS];
            for (int c = 0; c < r->ncoords; c++) {
                lo[c] = co[c] = r->dom_lo[c];
                hi[c] = r->dom_lo[c] + r->dom_n[c] - 1;
            }
            do {
                if (fb_rec_bit(r, co) != 1)
                    continue;
                if (!ref_window_valid(w, f->spec.shape, co))
                    fail_msg("record (%s) marks window (%s), which is not a valid window",
                             tu_fmt_coords(m->ninf, r->coord).s, tu_fmt_coords(r->ncoords, co).s);
                int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], a[IT_MAX_DIMS], b[IT_MAX_DIMS], p[IT_MAX_DIMS];
                ref_bounds(w, co, s, e);
                int empty = 0;
                for (int d = 0; d < nd; d++) {
                    a[d] = IT_MAX(s[d], ts[d]);
                    b[d] = IT_MIN(e[d], te[d]) - 1;
                    empty |= a[d] > b[d];
                }
                if (empty)
                    fail_msg("record (%s) marks window (%s), which does not meet the tile",
                             tu_fmt_coords(m->ninf, r->coord).s, tu_fmt_coords(r->ncoords, co).s);
                double S = ft_args_ref(f, co);
                memcpy(p, a, sizeof p);
                do {
                    int64_t local[IT_MAX_DIMS], idx = 0;
                    for (int d = 0; d < nd; d++) {
                        local[d] = p[d] - s[d];
                        idx += (p[d] - ts[d]) * tst[d];
                    }
                    exp[idx] = ft_fold(f, exp[idx], ft_base(f, co, local) + S);
                } while (tu_next_index(nd, p, a, b));
            } while (tu_next_index(r->ncoords, co, lo, hi));
        }
        size_t es = tu_elsize(r->dtype);
        for (int64_t j = 0; j < numel; j++) {
            double v = el_load(r->dtype, r->vals + (size_t)j * es);
            if (v != exp[j]) {
                double e = exp[j];
                free(exp);
                fail_msg("record (%s) element %lld holds %g, but the windows its bitmap marks "
                         "(%lld of %lld) fold to %g",
                         tu_fmt_coords(m->ninf, r->coord).s, (long long)j, v,
                         (long long)fb_popcount(r), (long long)r->nbits, e);
            }
        }
        free(exp);
    }
}

/* ------------------------------------------------------------------ */
/* tensors                                                              */

typedef struct bspec {
    int ndim;
    int64_t shape[IT_MAX_DIMS];
    it_dtype dtype;
    int64_t size[IT_MAX_DIMS], stride[IT_MAX_DIMS], offset[IT_MAX_DIMS];
    int map[IT_MAX_DIMS];
    int use_map;
    int64_t tile[IT_MAX_DIMS];
    it_combine combine;
    int blend_kind;
    double fill;
    int64_t batch;
    uint64_t seed;
} bspec;

static int bs_ninf(const bspec *s)
{
    int n = 0;
    for (int d = 0; d < s->ndim; d++)
        n += s->shape[d] == INF;
    return n;
}

/* A fake from s (not counting as once-only), with a backend over m if m. */
static ft *mkft(const bspec *s, it_cache *c, fb_map *m, int flags)
{
    ft *f = ft_new(s->ndim, s->shape, s->dtype);
    ft_set_window(f, s->size, s->stride, s->offset, s->use_map ? s->map : NULL);
    for (int d = 0; d < s->ndim; d++)
        f->spec.tile_shape[d] = s->tile[d];
    f->spec.combine = s->combine;
    f->blend_kind = s->blend_kind;
    f->fill = s->fill;
    f->spec.batch_size = s->batch > 0 ? s->batch : 1;
    if (s->seed)
        f->seed = s->seed;
    ft_create_ok(f, c);
    if (m)
        fb_attach(f, m, flags);
    return f;
}

/* 1-d, overlapping windows (stride < size), offset, float64, fill 0 */
static const bspec S1 = {.ndim = 1, .shape = {INF}, .dtype = IT_F64, .size = {5}, .stride = {2},
                         .offset = {-1}, .tile = {8}, .combine = IT_COMBINE_SUM};
/* 1-d int64 with a nonzero fill and batches of 3 */
static const bspec S1I = {.ndim = 1, .shape = {INF}, .dtype = IT_I64, .size = {6}, .stride = {4},
                          .offset = {3}, .tile = {12}, .combine = IT_COMBINE_SUM, .fill = 7,
                          .batch = 3, .seed = 77};
/* 2-d: a finite dim and an infinite one */
static const bspec S2F = {.ndim = 2, .shape = {5, INF}, .dtype = IT_F64, .size = {2, 4},
                          .stride = {1, 3}, .offset = {0, -2}, .tile = {0, 6},
                          .combine = IT_COMBINE_SUM, .fill = -2, .seed = 5};
/* 2-d: two infinite dims */
static const bspec S2I = {.ndim = 2, .shape = {INF, INF}, .dtype = IT_F64, .size = {3, 3},
                          .stride = {2, 2}, .offset = {0, 1}, .tile = {4, 6},
                          .combine = IT_COMBINE_SUM, .seed = 9};

static it_box box1(int64_t a, int64_t b)
{
    return mkbox(1, &a, &b, NULL);
}

static it_box box2(int64_t a0, int64_t b0, int64_t a1, int64_t b1)
{
    return mkbox(2, (int64_t[]){a0, a1}, (int64_t[]){b0, b1}, NULL);
}

/* A few overlapping step-1 boxes for a spec (not tile-aligned). */
static int boxes_for(const bspec *s, it_box *out)
{
    if (s->ndim == 1) {
        out[0] = box1(3, 11);
        out[1] = box1(7, 20);
        out[2] = box1(-9, -2);
        return 3;
    }
    if (s->shape[0] != INF) {
        out[0] = box2(0, 5, 2, 9);
        out[1] = box2(1, 3, 5, 17);
        out[2] = box2(0, 5, -8, -1);
        return 3;
    }
    out[0] = box2(1, 6, 2, 9);
    out[1] = box2(3, 10, 5, 14);
    out[2] = box2(-7, -1, -4, 1);
    return 3;
}

/* The bounding box of n boxes, widened by `grow` on each side of every
 * infinite dim. */
static it_box hull(const bspec *s, const it_box *b, int n, int64_t grow)
{
    it_box h = b[0];
    for (int i = 1; i < n; i++)
        for (int d = 0; d < h.ndim; d++) {
            h.start[d] = IT_MIN(h.start[d], b[i].start[d]);
            h.stop[d] = IT_MAX(h.stop[d], b[i].stop[d]);
        }
    for (int d = 0; d < h.ndim; d++)
        if (s->shape[d] == INF) {
            h.start[d] -= grow;
            h.stop[d] += grow;
        }
    return h;
}

/* The windows a read of the step-1 box must compute, given what m stores
 * and nothing cached: those meeting the box whose bit is missing from some
 * tile where they meet the box (a tile not stored misses every window). */
static long count_missing(const ft *f, fb_map *m, const it_box *box)
{
    const it_window *w = &f->spec.window;
    int nd = f->spec.ndim, nc = w->ncoords;
    int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0}, co[IT_MAX_DIMS], T[IT_MAX_DIMS];
    long n = 0;
    it_tensor_tile_shape(f->t, T);
    if (!ref_domain(w, f->spec.shape, box->start, box->stop, lo, hi))
        return 0;
    memcpy(co, lo, sizeof co);
    do {
        if (!ft_meets(f, co, box))
            continue;
        int64_t s[IT_MAX_DIMS], e[IT_MAX_DIMS], tlo[IT_MAX_DIMS], thi[IT_MAX_DIMS], tc[IT_MAX_DIMS];
        int k = 0;
        ref_bounds(w, co, s, e);
        for (int d = 0; d < nd; d++) {
            if (f->spec.shape[d] != INF)
                continue;
            int64_t a = IT_MAX(s[d], box->start[d]), b = IT_MIN(e[d], box->stop[d]);
            tlo[k] = ref_fdiv(a, T[d]);
            thi[k] = ref_fdiv(b - 1, T[d]);
            k++;
        }
        int missing = 0;
        memcpy(tc, tlo, sizeof tc);
        do {
            fb_rec *r = fb_find(m, tc);
            int bit = r ? fb_rec_bit(r, co) : 0;
            if (bit < 0)
                fail_msg("window (%s) meets tile (%s) but is outside its stored domain",
                         tu_fmt_coords(nc, co).s, tu_fmt_coords(k, tc).s);
            if (!bit) {
                missing = 1;
                break;
            }
        } while (k > 0 && tu_next_index(k, tc, tlo, thi));
        n += missing;
    } while (tu_next_index(nc, co, lo, hi));
    return n;
}

static void read_all(ft *f, const it_box *b, int n)
{
    for (int i = 0; i < n; i++)
        ft_read_ok(f, &b[i]);
}

/* ------------------------------------------------------------------ */
/* 1. write-back and reload                                             */

static void writeback_reload(const bspec *s)
{
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(bs_ninf(s));
    it_box R[4];
    int nr = boxes_for(s, R);
    ft *a = mkft(s, c, m, 0);
    a->once = 1;
    assert_int_equal(it_tensor_dirty(a->t), 0);
    read_all(a, R, nr);
    /* each window meeting the regions, once */
    assert_int_equal(a->windows_ok, ft_count_new(a, &R[0], NULL, 0) + ft_count_new(a, &R[1], &R[0], 1) +
                                        ft_count_new(a, &R[2], R, 2));
    /* nothing evicted with an unbounded cache, so nothing stored yet */
    assert_int_equal(m->store_calls, 0);
    int64_t ntiles = it_tensor_tiles(a->t);
    assert_true(ntiles > 0);
    /* every tile was created for a contribution: all are dirty */
    assert_int_equal(it_tensor_dirty(a->t), ntiles);
    EXPECT_OK(it_tensor_flush(a->t));
    assert_int_equal(it_tensor_dirty(a->t), 0);
    assert_int_equal(m->stores_ok, ntiles);
    assert_int_equal((int64_t)m->n, ntiles);
    EXPECT_OK(it_tensor_flush(a->t)); /* nothing left to write */
    assert_int_equal(m->stores_ok, ntiles);
    fb_check_records(m, a);
    ft_destroy(a);
    assert_int_equal(m->ctx_frees, 1);
    assert_int_equal(m->store_calls, ntiles); /* destroying writes nothing */

    /* reopen: the same regions come from the store alone */
    ft *b = mkft(s, c, m, 0);
    b->once = 1;
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    assert_true(m->loads_found > 0);
    assert_int_equal(it_tensor_dirty(b->t), 0);
    /* the windows read are done, after loading their tiles */
    {
        it_box hb = hull(s, R, nr, 0);
        int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0}, co[IT_MAX_DIMS];
        assert_true(ref_domain(&b->spec.window, b->spec.shape, hb.start, hb.stop, lo, hi));
        memcpy(co, lo, sizeof co);
        do {
            if (!ft_meets_any(b, co, R, nr))
                continue;
            int done = -1;
            EXPECT_OK(it_tensor_window_done(b->t, co, &done));
            if (done != 1)
                fail_msg("window (%s) read before the reopen is not done", tu_fmt_coords(b->spec.ndim, co).s);
        } while (tu_next_index(b->spec.ndim, co, lo, hi));
        tu_cache_ok(c);
    }
    /* contributing a stored window is a no-op: nothing becomes dirty */
    {
        int64_t w[IT_MAX_DIMS] = {0};
        it_box hb = hull(s, R, nr, 0);
        int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0};
        assert_true(ref_domain(&b->spec.window, b->spec.shape, hb.start, hb.stop, lo, hi));
        memcpy(w, lo, sizeof w);
        while (!ft_meets(b, w, &R[0]))
            assert_true(tu_next_index(b->spec.ndim, w, lo, hi));
        it_view v;
        void *mem = ft_window_values(b, w, 0, &v);
        EXPECT_OK(it_tensor_contribute(b->t, w, &v));
        free(mem);
        assert_int_equal(it_tensor_dirty(b->t), 0);
        read_all(b, R, nr);
        assert_int_equal(b->calls, 0);
    }
    /* a bigger region computes only the windows not yet stored */
    it_box big = hull(s, R, nr, 9);
    long expect = count_missing(b, m, &big);
    assert_int_equal(expect, ft_count_new(b, &big, R, nr));
    assert_true(expect > 1);
    /* a window added from elsewhere is one fewer to compute */
    {
        int64_t w[IT_MAX_DIMS] = {0}, lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0};
        assert_true(ref_domain(&b->spec.window, b->spec.shape, big.start, big.stop, lo, hi));
        memcpy(w, lo, sizeof w);
        while (!ft_meets(b, w, &big) || ft_meets_any(b, w, R, nr))
            assert_true(tu_next_index(b->spec.ndim, w, lo, hi));
        it_view v;
        void *mem = ft_window_values(b, w, 0, &v);
        EXPECT_OK(it_tensor_contribute(b->t, w, &v));
        free(mem);
        tu_cache_ok(c);
        assert_true(it_tensor_dirty(b->t) > 0);
        *wtab_slot(&b->total, w, 1) = 1; /* as if computed: computing it too fails once */
        expect--;
    }
    ft_read_ok(b, &big);
    assert_int_equal(b->windows_ok, expect);
    /* a strided read of the lot is right and computes nothing */
    {
        it_box st = big;
        for (int d = 0; d < st.ndim; d++)
            st.step[d] = d == 0 ? 3 : 2;
        long calls = b->calls;
        ft_read_ok(b, &st);
        assert_int_equal(b->calls, calls);
    }
    EXPECT_OK(it_tensor_flush(b->t));
    assert_int_equal(it_tensor_dirty(b->t), 0);
    fb_check_records(m, b);
    ft_destroy(b);

    /* and once more, with everything stored */
    ft *d = mkft(s, c, m, 0);
    ft_read_ok(d, &big);
    read_all(d, R, nr);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
    tu_cache_ok(c);
    assert_int_equal(it_cache_tiles(c), 0);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_writeback_reload(void **state)
{
    (void)state;
    LEAK_BEGIN;
    writeback_reload(&S1);
    writeback_reload(&S1I);
    writeback_reload(&S2F);
    writeback_reload(&S2I);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 2. eviction writes dirty tiles back                                  */

static void random_box(const bspec *s, rng_t *r, it_box *b, int strided)
{
    memset(b, 0, sizeof *b);
    b->ndim = s->ndim;
    for (int d = 0; d < s->ndim; d++) {
        if (s->shape[d] == INF) {
            b->start[d] = rng_range(r, -30, 30);
            b->stop[d] = b->start[d] + rng_range(r, 1, 14);
        } else {
            b->start[d] = rng_range(r, -1, s->shape[d] - 1);
            b->stop[d] = rng_range(r, b->start[d] + 1, s->shape[d] + 1);
        }
        b->step[d] = strided ? rng_range(r, 1, 3) : 1;
    }
}

static void eviction(const bspec *s, int by_bytes, uint64_t seed)
{
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(bs_ninf(s));
    ft *a = mkft(s, c, m, 0);
    a->once = 1; /* evicted tiles come back from the store: never recomputed */
    m->junk_tail = (int)(seed & 1);
    if (by_bytes) {
        it_cache_set_limits(c, 2 * tu_tile_bytes(a->t), -1);
        it_cache_set_device_limit(c, 2 * tu_tile_bytes(a->t));
    } else {
        it_cache_set_tile_limit(c, 1);
    }
    rng_t r = {seed};
    it_box B[24];
    int nb = 24;
    long stores_before_flush = 0;
    for (int i = 0; i < nb; i++) {
        random_box(s, &r, &B[i], i % 3 == 2);
        ft_read_ok(a, &B[i]);
        if (!by_bytes)
            assert_true(it_cache_tiles(c) <= 1);
        assert_true(it_tensor_dirty(a->t) <= it_tensor_tiles(a->t));
    }
    stores_before_flush = m->stores_ok;
    assert_true(stores_before_flush > 0); /* trims wrote dirty tiles back */
    assert_true(m->loads_found > 0);     /* and evicted tiles were loaded again */
    for (int i = 0; i < nb; i++)           /* everything again: right, nothing recomputed */
        ft_read_ok(a, &B[i]);
    /* it_tensor_trim writes dirty tiles back too: new windows far away,
     * with no cache limit, then trim the tensor to nothing */
    it_cache_set_tile_limit(c, -1);
    it_cache_set_limits(c, -1, -1);
    it_cache_set_device_limit(c, -1);
    it_box N[24];
    for (int i = 0; i < nb; i++) {
        N[i] = B[i];
        for (int d = 0; d < s->ndim; d++)
            if (s->shape[d] == INF) {
                N[i].start[d] += 70;
                N[i].stop[d] += 70;
            }
        ft_read_ok(a, &N[i]);
    }
    long st = m->stores_ok;
    int64_t dirty = it_tensor_dirty(a->t);
    assert_true(dirty > 1);
    it_tensor_trim(a->t, 0);
    tu_cache_ok(c);
    assert_int_equal(it_tensor_tiles(a->t), 0);
    assert_int_equal(it_tensor_dirty(a->t), 0);
    assert_int_equal(m->stores_ok - st, dirty);
    for (int i = 0; i < nb; i++) {
        ft_read_ok(a, &B[i]);
        ft_read_ok(a, &N[i]);
    }
    EXPECT_OK(it_tensor_flush(a->t));
    assert_int_equal(it_tensor_dirty(a->t), 0);
    fb_check_records(m, a);
    long computed = a->windows_ok;
    ft_destroy(a);

    ft *b = mkft(s, c, m, 0);
    for (int i = 0; i < nb; i++) {
        ft_read_ok(b, &B[i]);
        ft_read_ok(b, &N[i]);
    }
    assert_int_equal(b->calls, 0);
    assert_true(computed > 0);
    ft_destroy(b);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_eviction_writes(void **state)
{
    (void)state;
    LEAK_BEGIN;
    eviction(&S1, 0, 1);
    eviction(&S1, 1, 2);
    eviction(&S1I, 0, 3);
    eviction(&S2F, 0, 4);
    eviction(&S2F, 1, 5);
    eviction(&S2I, 0, 6);
    eviction(&S2I, 1, 7);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 3. crash model: some tiles written, the rest lost                    */

/* Reopen over m and read u: exactly the windows missing from the store are
 * computed, the values are right; then flush and check once more. */
static void reopen_check(const bspec *s, it_cache *c, fb_map *m, const it_box *u)
{
    ft *b = mkft(s, c, m, 0);
    b->once = 1;
    fb_check_records(m, b);
    fb_map *before = fb_snapshot(m);
    long expect = count_missing(b, m, u);
    ft_read_ok(b, u);
    assert_int_equal(b->windows_ok, expect);
    EXPECT_OK(it_tensor_flush(b->t));
    fb_check_records(m, b);
    fb_expect_superset(before, m);
    fb_map_free(before);
    ft_destroy(b);
    ft *d = mkft(s, c, m, 0);
    ft_read_ok(d, u);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
}

static void crash_flush(const bspec *s)
{
    it_box R[4];
    int nr = boxes_for(s, R);
    it_box u = hull(s, R, nr, 3);
    for (int k = 0;; k++) {
        it_cache *c = mkcache(-1, -1);
        fb_map *m = fb_map_new(bs_ninf(s));
        ft *a = mkft(s, c, m, 0);
        ft_read_ok(a, &R[0]);
        EXPECT_OK(it_tensor_flush(a->t));
        /* more windows: old tiles get dirty again, new tiles appear */
        read_all(a, R + 1, nr - 1);
        int64_t ndirty = it_tensor_dirty(a->t);
        assert_true(ndirty > 1);
        long stores = m->stores_ok;
        m->store_fail_at = m->store_calls + k + 1;
        m->store_fail_repeat = 1;
        it_error_clear();
        int rc = it_tensor_flush(a->t);
        if (k < ndirty) {
            assert_int_equal(rc, IT_EIO);
            tu_check_recorded(rc, "it_tensor_flush", __FILE__, __LINE__);
            assert_non_null(strstr(it_error_message(), "fake store failed"));
            assert_int_equal(m->stores_ok - stores, k);
            assert_int_equal(it_tensor_dirty(a->t), ndirty - k);
        } else {
            assert_int_equal(rc, IT_OK);
            assert_int_equal(it_tensor_dirty(a->t), 0);
        }
        /* crash: the tensor goes without another write */
        long calls = m->store_calls;
        m->store_fail_at = 0;
        ft_destroy(a);
        assert_int_equal(m->store_calls, calls);
        reopen_check(s, c, m, &u);
        fb_map_free(m);
        it_cache_unref(c);
        if (k >= ndirty)
            break;
    }
}

/* Store failures during eviction, reads going on, then a crash. */
static void crash_evict(const bspec *s, int k, uint64_t seed)
{
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, 2);
    fb_map *m = fb_map_new(bs_ninf(s));
    ft *a = mkft(s, c, m, 0);
    a->once = 1; /* a failed write keeps the tile: still never recomputed */
    m->store_fail_at = k + 1;
    m->store_fail_repeat = 1;
    rng_t r = {seed};
    it_box B[12];
    for (int i = 0; i < 12; i++) {
        random_box(s, &r, &B[i], 0);
        ft_read_ok(a, &B[i]);
    }
    assert_true(m->stores_ok <= k);
    assert_true(it_tensor_dirty(a->t) > 0);
    m->store_fail_at = 0;
    ft_destroy(a);
    it_box u = hull(s, B, 12, 0);
    reopen_check(s, c, m, &u);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_crash_partial(void **state)
{
    (void)state;
    LEAK_BEGIN;
    crash_flush(&S1);
    crash_flush(&S1I);
    crash_flush(&S2F);
    crash_flush(&S2I);
    for (int k = 0; k < 8; k += 3) {
        crash_evict(&S1, k, 10 + (uint64_t)k);
        crash_evict(&S1I, k, 20 + (uint64_t)k);
        crash_evict(&S2F, k, 30 + (uint64_t)k);
        crash_evict(&S2I, k, 40 + (uint64_t)k);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 4. a failed load                                                     */

static void test_failed_load(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(1);
    /* S1: window k covers [2k - 1, 2k + 4); tiles of 8 */
    ft *a = mkft(&S1, c, m, 0);
    it_box A = box1(14, 16);  /* windows 6..8: tiles 1, 2 */
    it_box A2 = box1(26, 40); /* tiles 3..5 */
    ft_read_ok(a, &A);
    ft_read_ok(a, &A2);
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);
    fb_map *snap = fb_snapshot(m);
    long writes = fb_total_writes(m);

    ft *b = mkft(&S1, c, m, 0);
    /* the first load fails: the read fails with the backend's error */
    it_box R = box1(26, 40); /* tiles 3 and 4, stored with every window meeting R */
    m->load_fail_at = m->load_calls + 1;
    assert_int_equal(ft_read_check(b, &R, 0), IT_EIO);
    assert_non_null(strstr(b->last_msg, "fake load failed"));
    assert_int_equal(it_tensor_tiles(b->t), 0);
    assert_int_equal(it_tensor_dirty(b->t), 0);
    assert_int_equal(b->calls, 0);
    /* the second load fails: the first tile may stay, clean */
    m->load_fail_at = m->load_calls + 2;
    assert_int_equal(ft_read_check(b, &R, 0), IT_EIO);
    assert_true(it_tensor_tiles(b->t) <= 1);
    assert_int_equal(it_tensor_dirty(b->t), 0);
    assert_int_equal(b->calls, 0);
    /* window_done reports a failed load too */
    {
        int64_t w = 7;
        int done = -1;
        it_tensor_clear(b->t);
        m->load_fail_at = m->load_calls + 1;
        EXPECT_ERR(it_tensor_window_done(b->t, &w, &done), IT_EIO);
        assert_int_equal(done, 0);
        assert_int_equal(it_tensor_tiles(b->t), 0);
    }
    m->load_fail_at = 0;
    EXPECT_OK(it_tensor_flush(b->t));
    assert_int_equal(fb_total_writes(m), writes);
    ft_read_ok(b, &R); /* right values, all from the store */
    assert_int_equal(b->calls, 0);

    /* a load failing while a window is added: window 3 ([5, 10)) meets
     * tile 1, which is stored, from a read of [0, 6) */
    it_tensor_clear(b->t);
    m->fail_coord_on = 1;
    m->fail_coord[0] = 1;
    it_box L = box1(0, 6);
    assert_int_equal(ft_read_check(b, &L, 0), IT_EIO);
    assert_non_null(strstr(b->last_msg, "fake load failed"));
    assert_true(b->calls > 0);
    {
        /* tile 1 was not kept: not cached, so it cannot be written back */
        int64_t w = 6; /* window 6 lies in tile 1 only */
        int done = -1;
        EXPECT_ERR(it_tensor_window_done(b->t, &w, &done), IT_EIO);
    }
    m->fail_coord_on = 0;
    EXPECT_OK(it_tensor_flush(b->t)); /* writes the tiles the read did change */
    assert_int_equal(fb_find(m, (int64_t[]){1})->writes, 1);
    fb_check_records(m, b);
    fb_expect_superset(snap, m);
    /* everything right afterwards; window 3 lands in tile 1 at last */
    it_box W = box1(-4, 44);
    ft_read_ok(b, &W);
    EXPECT_OK(it_tensor_flush(b->t));
    fb_check_records(m, b);
    fb_expect_superset(snap, m);
    {
        fb_rec *r1 = fb_find(m, (int64_t[]){1});
        assert_int_equal(fb_rec_bit(r1, (int64_t[]){3}), 1);
    }
    ft_destroy(b);
    ft *d = mkft(&S1, c, m, 0);
    ft_read_ok(d, &W);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
    fb_map_free(snap);
    fb_map_free(m);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 5. a failed store during a trim                                      */

static void failed_store_trim(const bspec *s, uint64_t seed)
{
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, 1);
    fb_map *m = fb_map_new(bs_ninf(s));
    ft *a = mkft(s, c, m, 0);
    a->once = 1;
    it_box R[4];
    int nr = boxes_for(s, R);
    ft_read_ok(a, &R[0]);
    assert_true(m->stores_ok > 0 || it_cache_tiles(c) <= 1);
    long ok = m->stores_ok;
    fb_map *snap = fb_snapshot(m);
    /* every store fails from now on */
    m->store_fail_at = m->store_calls + 1;
    m->store_fail_repeat = 1;
    rng_t r = {seed};
    it_box B[10];
    B[0] = R[1];
    B[1] = R[2];
    for (int i = 2; i < 10; i++)
        random_box(s, &r, &B[i], i % 2);
    for (int i = 0; i < 10; i++) {
        ft_read_ok(a, &B[i]); /* the reads themselves succeed */
        assert_true(it_tensor_dirty(a->t) > 0);
    }
    assert_true(m->store_fails > 0);
    assert_int_equal(m->stores_ok, ok);
    assert_true(it_cache_tiles(c) > 1); /* dirty tiles stayed cached */
    /* the store holds what it held: nothing half written */
    fb_check_records(m, a);
    fb_expect_superset(snap, m);
    int64_t dirty = it_tensor_dirty(a->t), tiles = it_tensor_tiles(a->t);
    /* a trim of the tensor stops at the failed write, keeping the tile */
    it_tensor_trim(a->t, 0);
    tu_cache_ok(c);
    assert_int_equal(it_tensor_dirty(a->t), dirty);
    assert_true(it_tensor_tiles(a->t) >= dirty && it_tensor_tiles(a->t) <= tiles);
    EXPECT_ERR(it_tensor_flush(a->t), IT_EIO);
    assert_non_null(strstr(it_error_message(), "fake store failed"));
    assert_int_equal(it_tensor_dirty(a->t), dirty);
    /* everything is still right (and nothing recomputed: once) */
    for (int i = 0; i < 10; i++)
        ft_read_ok(a, &B[i]);
    ft_read_ok(a, &R[0]);
    /* failures off: a flush writes everything */
    m->store_fail_at = 0;
    EXPECT_OK(it_tensor_flush(a->t));
    assert_int_equal(it_tensor_dirty(a->t), 0);
    it_cache_trim(c);
    assert_true(it_cache_tiles(c) <= 1);
    fb_check_records(m, a);
    fb_expect_superset(snap, m);
    ft_destroy(a);
    ft *b = mkft(s, c, m, 0);
    for (int i = 0; i < 10; i++)
        ft_read_ok(b, &B[i]);
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    ft_destroy(b);
    fb_map_free(snap);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_failed_store_trim(void **state)
{
    (void)state;
    LEAK_BEGIN;
    failed_store_trim(&S1, 50);
    failed_store_trim(&S1I, 51);
    failed_store_trim(&S2F, 52);
    failed_store_trim(&S2I, 53);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 6. read-only                                                         */

static void readonly(const bspec *s)
{
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(bs_ninf(s));
    it_box R[4];
    int nr = boxes_for(s, R);
    ft *a = mkft(s, c, m, 0);
    read_all(a, R, nr);
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);
    long writes = m->store_calls;

    it_cache_set_tile_limit(c, 1); /* evictions too: clean tiles just go */
    ft *b = mkft(s, c, m, IT_BACKEND_READONLY);
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    /* a strided read inside the stored regions also works */
    it_box st = R[1];
    st.step[st.ndim - 1] = 2;
    ft_read_ok(b, &st);
    assert_int_equal(b->calls, 0);
    /* a region needing a window not stored fails, computing nothing */
    it_box big = hull(s, R, nr, 6);
    assert_int_equal(ft_read_check(b, &big, 0), IT_ESTATE);
    if (!strstr(b->last_msg, "read-only"))
        fail_msg("the read-only failure says \"%s\"", b->last_msg);
    assert_int_equal(b->calls, 0);
    /* so does contributing a window, even one that is stored */
    int64_t w[IT_MAX_DIMS] = {0};
    int64_t lo[IT_MAX_DIMS] = {0}, hi[IT_MAX_DIMS] = {0};
    assert_true(ref_domain(&b->spec.window, b->spec.shape, R[0].start, R[0].stop, lo, hi));
    memcpy(w, lo, sizeof w);
    while (!ft_meets(b, w, &R[0]))
        assert_true(tu_next_index(b->spec.ndim, w, lo, hi));
    it_view v;
    void *mem = ft_window_values(b, w, 0, &v);
    EXPECT_ERR(it_tensor_contribute(b->t, w, &v), IT_ESTATE);
    assert_non_null(strstr(it_error_message(), "read-only"));
    free(mem);
    /* the stored windows are still readable, nothing became dirty */
    read_all(b, R, nr);
    assert_int_equal(b->calls, 0);
    assert_int_equal(it_tensor_dirty(b->t), 0);
    EXPECT_OK(it_tensor_flush(b->t));
    assert_int_equal(m->store_calls, writes);
    ft_destroy(b);
    assert_int_equal(m->store_calls, writes);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_readonly(void **state)
{
    (void)state;
    LEAK_BEGIN;
    readonly(&S1);
    readonly(&S1I);
    readonly(&S2F);
    readonly(&S2I);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 7. custom blends                                                     */

static void custom_reads(ft *f, const bspec *s, rng_t *r, it_box *B, int n, int fixed)
{
    for (int i = 0; i < n; i++) {
        if (fixed) {
            ft_read_ok(f, &B[i]);
            continue;
        }
        random_box(s, r, &B[i], i % 3 == 1);
        ft_read_ok(f, &B[i]);
    }
}

static void custom_backend(int kind, int nd, int64_t tile_limit, uint64_t seed)
{
    bspec s;
    memset(&s, 0, sizeof s);
    if (nd == 1) {
        s = (bspec){.ndim = 1, .shape = {INF}, .dtype = IT_F64, .size = {5}, .stride = {2},
                    .offset = {0}, .tile = {4}};
    } else {
        s = (bspec){.ndim = 2, .shape = {INF, 7}, .dtype = IT_F64, .size = {3, 3},
                    .stride = {2, 1}, .offset = {-1, 0}, .tile = {3, 0}};
    }
    s.combine = IT_COMBINE_CUSTOM;
    s.blend_kind = kind;
    s.fill = 1; /* 2*a + b shows whether the first blend ran */
    s.seed = seed;
    s.batch = (int64_t)(seed % 3) + 1;
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, tile_limit);
    fb_map *m = fb_map_new(1);
    ft *a = mkft(&s, c, m, 0);
    a->once_per_read = 1;
    rng_t r = {seed};
    it_box B[16];
    custom_reads(a, &s, &r, B, 16, 0);
    custom_reads(a, &s, &r, B, 16, 1);
    EXPECT_OK(it_tensor_flush(a->t));
    fb_check_records(m, a);
    ft_destroy(a);
    /* every tile the reads touched was completed and stored */
    ft *b = mkft(&s, c, m, 0);
    custom_reads(b, &s, &r, B, 16, 1);
    assert_int_equal(b->calls, 0);
    /* more reads, some new windows: values still the lexicographic fold */
    it_box C[8];
    custom_reads(b, &s, &r, C, 8, 0);
    EXPECT_OK(it_tensor_flush(b->t));
    fb_check_records(m, b);
    ft_destroy(b);
    ft *d = mkft(&s, c, m, 0);
    custom_reads(d, &s, &r, B, 16, 1);
    custom_reads(d, &s, &r, C, 8, 1);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
    fb_map_free(m);
    it_cache_unref(c);
}

/* A custom blend whose f fails midway, with evictions and a crash: the
 * stored tiles are lexicographic prefixes, completed correctly later. */
static void custom_failures(int kind, long fail_call, long store_ok, uint64_t seed)
{
    bspec s = {.ndim = 1, .shape = {INF}, .dtype = IT_F64, .size = {5}, .stride = {2},
               .offset = {0}, .tile = {4}, .combine = IT_COMBINE_CUSTOM, .blend_kind = kind,
               .fill = 1, .seed = seed, .batch = 1};
    it_cache *c = mkcache(-1, -1);
    it_cache_set_tile_limit(c, 1);
    fb_map *m = fb_map_new(1);
    ft *a = mkft(&s, c, m, 0);
    a->fail_call = fail_call;
    it_box big = box1(-10, 30);
    int rc = ft_read_check(a, &big, 0);
    assert_true(rc == IT_ECALLBACK || rc == IT_OK);
    EXPECT_OK(it_tensor_flush(a->t));
    fb_check_records(m, a);
    it_box part = box1(3, 9), more = box1(28, 41);
    ft_read_ok(a, &part);
    if (store_ok >= 0) { /* writes fail after store_ok more, in trims and the flush */
        m->store_fail_at = m->store_calls + store_ok + 1;
        m->store_fail_repeat = 1;
        ft_read_ok(a, &more);
        it_error_clear();
        rc = it_tensor_flush(a->t);
        assert_true(rc == IT_OK || rc == IT_EIO);
        m->store_fail_at = 0;
    }
    /* crash with a part unflushed (whatever trims did not write) */
    ft_destroy(a);
    ft *b = mkft(&s, c, m, 0);
    fb_check_records(m, b);
    ft_read_ok(b, &big);
    ft_read_ok(b, &part);
    ft_read_ok(b, &more);
    EXPECT_OK(it_tensor_flush(b->t));
    fb_check_records(m, b);
    ft_destroy(b);
    ft *d = mkft(&s, c, m, 0);
    ft_read_ok(d, &big);
    ft_read_ok(d, &more);
    assert_int_equal(d->calls, 0);
    ft_destroy(d);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_custom_backend(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int kind = 0; kind < 4; kind++)
        for (int nd = 1; nd <= 2; nd++) {
            custom_backend(kind, nd, 2, 100 + (uint64_t)(kind * 2 + nd));
            custom_backend(kind, nd, -1, 200 + (uint64_t)(kind * 2 + nd));
        }
    for (long k = 1; k <= 9; k += 2)
        custom_failures(2, k, -1, 300 + (uint64_t)k);
    custom_failures(0, 4, -1, 400);
    for (long k = 0; k <= 6; k += 2) {
        custom_failures(2, 5, k, 500 + (uint64_t)k);
        custom_failures(3, 0, k, 600 + (uint64_t)k);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 8. it_tensor_set_backend errors and ownership                        */

static void test_set_backend_errors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(1);
    ft *f = mkft(&S1, c, NULL, 0);
    it_backend bad = fb_backend;
    bad.version = IT_BACKEND_VERSION + 1;
    EXPECT_ERR(it_tensor_set_backend(f->t, &bad, fb_ctx_new(m, f), 0), IT_EINVAL);
    assert_int_equal(m->ctx_frees, 1); /* ctx owned even on failure */
    bad = fb_backend;
    bad.load = NULL;
    EXPECT_ERR(it_tensor_set_backend(f->t, &bad, fb_ctx_new(m, f), 0), IT_EINVAL);
    assert_int_equal(m->ctx_frees, 2);
    bad = fb_backend;
    bad.store = NULL;
    EXPECT_ERR(it_tensor_set_backend(f->t, &bad, fb_ctx_new(m, f), 0), IT_EINVAL);
    assert_int_equal(m->ctx_frees, 3);
    EXPECT_ERR(it_tensor_set_backend(f->t, NULL, NULL, 0), IT_EINVAL);
    /* without a backend nothing is ever dirty */
    ft_read_ok1(f, 0, 10);
    assert_true(it_tensor_tiles(f->t) > 0);
    assert_int_equal(it_tensor_dirty(f->t), 0);
    EXPECT_OK(it_tensor_flush(f->t));
    /* tiles cached: too late */
    EXPECT_ERR(it_tensor_set_backend(f->t, &fb_backend, fb_ctx_new(m, f), 0), IT_ESTATE);
    assert_int_equal(m->ctx_frees, 4);
    /* cleared: fine; a second backend is refused, the first stays */
    it_tensor_clear(f->t);
    fb_attach(f, m, 0);
    assert_int_equal(m->ctx_frees, 4);
    EXPECT_ERR(it_tensor_set_backend(f->t, &fb_backend, fb_ctx_new(m, f), 0), IT_ESTATE);
    assert_int_equal(m->ctx_frees, 5);
    ft_forget(f);
    ft_read_ok1(f, 0, 10);
    assert_true(it_tensor_dirty(f->t) > 0);
    EXPECT_OK(it_tensor_flush(f->t));
    assert_true(m->stores_ok > 0);
    /* a read or flush frees nothing; the last reference does, once */
    it_tensor_ref(f->t);
    it_tensor_unref(f->t);
    assert_int_equal(m->ctx_frees, 5);
    ft_destroy(f);
    assert_int_equal(m->ctx_frees, 6);
    /* a backend without free is fine */
    ft *g = mkft(&S1, c, NULL, 0);
    fb_ctx *x = fb_ctx_new(m, g);
    it_backend nofree = fb_backend;
    nofree.free = NULL;
    EXPECT_OK(it_tensor_set_backend(g->t, &nofree, x, 0));
    ft_read_ok1(g, 0, 10);
    assert_int_equal(g->calls, 0); /* from the store */
    ft_destroy(g);
    assert_int_equal(m->ctx_frees, 6);
    m->ctx_frees++; /* we free it ourselves */
    free(x);
    fb_map_free(m);
    it_cache_unref(c);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 9. it_tensor_max_domain bounds every tile's domain                  */

/* Brute force: valid windows whose bounds meet tile tc. */
static int64_t brute_domain(const ft *f, const int64_t *T, const int64_t *tc)
{
    const it_window *w = &f->spec.window;
    int nd = f->spec.ndim, nc = w->ncoords;
    int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], co[IT_MAX_DIMS];
    for (int d = 0, k = 0; d < nd; d++) {
        ts[d] = f->spec.shape[d] == INF ? tc[k++] * T[d] : 0;
        te[d] = f->spec.shape[d] == INF ? ts[d] + T[d] : f->spec.shape[d];
    }
    /* a generous range per coordinate from any dim following it, else 0 */
    for (int c = 0; c < nc; c++)
        lo[c] = hi[c] = 0;
    for (int d = 0; d < nd; d++) {
        int c = w->map[d];
        if (c == IT_MAP_FIXED)
            continue;
        lo[c] = ref_fdiv(ts[d] - w->offset[d] - w->size[d], w->stride[d]) - 3;
        hi[c] = ref_cdiv(te[d] - w->offset[d], w->stride[d]) + 3;
    }
    for (int c = 0; c < nc; c++) { /* unfollowed: a few, only 0 is valid */
        int followed = 0;
        for (int d = 0; d < nd; d++)
            followed |= w->map[d] == c;
        if (!followed) {
            lo[c] = -1;
            hi[c] = 1;
        }
    }
    it_box b = mkbox(nd, ts, te, NULL);
    int64_t n = 0;
    memcpy(co, lo, sizeof co);
    do
        n += ft_meets(f, co, &b);
    while (tu_next_index(nc, co, lo, hi));
    return n;
}

static void test_max_domain(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const bspec cases[] = {
        {.ndim = 1, .shape = {INF}, .size = {5}, .stride = {2}, .offset = {-1}, .tile = {8}},
        {.ndim = 1, .shape = {INF}, .size = {3}, .stride = {7}, .offset = {2}, .tile = {10}},
        {.ndim = 1, .shape = {INF}, .size = {7}, .stride = {3}, .offset = {-4}, .tile = {1}},
        {.ndim = 1, .shape = {INF}, .size = {4}, .stride = {4}, .offset = {0}, .tile = {4}},
        {.ndim = 1, .shape = {INF}, .size = {2}, .stride = {5}, .offset = {-3}, .tile = {3}},
        {.ndim = 1, .shape = {INF}, .size = {6}, .stride = {1}, .offset = {0}, .tile = {0}},
        {.ndim = 2, .shape = {6, INF}, .size = {2, 4}, .stride = {2, 3}, .offset = {0, -1},
         .tile = {0, 5}},
        {.ndim = 2, .shape = {7, INF}, .size = {3, 2}, .stride = {4, 5}, .offset = {1, 0},
         .tile = {0, 9}},
        {.ndim = 2, .shape = {9, INF}, .size = {2, 3}, .stride = {3, 3}, .offset = {-2, 1},
         .tile = {0, 2}},
        {.ndim = 2, .shape = {INF, INF}, .size = {3, 4}, .stride = {2, 1}, .offset = {-1, 2},
         .tile = {4, 3}},
        {.ndim = 2, .shape = {INF, 5}, .size = {2, 2}, .stride = {1, 1}, .offset = {0, 0},
         .map = {0, 0}, .use_map = 1, .tile = {4, 0}},
        {.ndim = 2, .shape = {INF, INF}, .size = {3, 2}, .stride = {2, 3}, .offset = {0, 1},
         .map = {0, 0}, .use_map = 1, .tile = {5, 4}},
        {.ndim = 2, .shape = {INF, 6}, .size = {3, 2}, .stride = {2, 1}, .offset = {0, 3},
         .map = {0, IT_MAP_FIXED}, .use_map = 1, .tile = {5, 0}},
        {.ndim = 2, .shape = {INF, INF}, .size = {3, 2}, .stride = {2, 1}, .offset = {0, -5},
         .map = {0, IT_MAP_FIXED}, .use_map = 1, .tile = {5, 3}},
        {.ndim = 3, .shape = {INF, 4, INF}, .size = {2, 2, 3}, .stride = {3, 1, 2},
         .offset = {0, 0, -2}, .tile = {3, 0, 4}},
        {.ndim = 2, .shape = {3, INF}, .size = {4, 2}, .stride = {1, 1}, .offset = {0, 0},
         .tile = {0, 4}}, /* no window fits the finite dim */
        {.ndim = 2, .shape = {8, INF}, .size = {3, 3}, .stride = {5, 2}, .offset = {-1, 0},
         .tile = {0, 0}},
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < ncases; i++) {
        bspec s = cases[i];
        s.dtype = IT_F64;
        s.combine = IT_COMBINE_SUM;
        s.seed = 1000 + (uint64_t)i;
        it_cache *c = mkcache(-1, -1);
        fb_map *m = fb_map_new(bs_ninf(&s));
        ft *f = mkft(&s, c, m, 0); /* the backend checks every tile io against the bound */
        int64_t md = it_tensor_max_domain(f->t), T[IT_MAX_DIMS], seen = 0;
        it_tensor_tile_shape(f->t, T);
        assert_true(md >= 0);
        int ninf = bs_ninf(&s);
        int64_t tc[IT_MAX_DIMS] = {0}, tlo[IT_MAX_DIMS], thi[IT_MAX_DIMS];
        for (int k = 0; k < ninf; k++) {
            tlo[k] = tc[k] = -3;
            thi[k] = 3;
        }
        do {
            int64_t n = brute_domain(f, T, tc);
            if (n > md)
                fail_msg("case %d: tile (%s) meets %lld windows, it_tensor_max_domain says %lld", i,
                         tu_fmt_coords(ninf, tc).s, (long long)n, (long long)md);
            seen = IT_MAX(seen, n);
        } while (tu_next_index(ninf, tc, tlo, thi));
        /* the core's tiles: their domain holds every window meeting them
         * and is within the bound (fb_check_io) */
        it_box b;
        memset(&b, 0, sizeof b);
        b.ndim = s.ndim;
        for (int d = 0; d < s.ndim; d++) {
            b.start[d] = s.shape[d] == INF ? -2 * T[d] - 1 : 0;
            b.stop[d] = s.shape[d] == INF ? 2 * T[d] + 1 : s.shape[d];
            b.step[d] = 1;
        }
        ft_read_ok(f, &b);
        EXPECT_OK(it_tensor_flush(f->t));
        fb_check_errors(m);
        for (size_t j = 0; j < m->n; j++) {
            int64_t n = brute_domain(f, T, m->recs[j].coord);
            if (m->recs[j].nbits < n)
                fail_msg("case %d: tile (%s) has a domain of %lld windows, but %lld meet it", i,
                         tu_fmt_coords(ninf, m->recs[j].coord).s, (long long)m->recs[j].nbits,
                         (long long)n);
            if (fb_popcount(&m->recs[j]) > n)
                fail_msg("case %d: tile (%s) marks more windows than meet it", i,
                         tu_fmt_coords(ninf, m->recs[j].coord).s);
        }
        fb_check_records(m, f);
        if (i == 15)
            assert_int_equal(md, 0);
        ft_destroy(f);
        fb_map_free(m);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 10. store callbacks that use the tensors                             */

static void hook_clear(fb_map *m, const it_tile_io *io)
{
    (void)io;
    it_tensor_clear(((ft *)m->hook_arg)->t);
}

/* Read a box of another fake and compare (recording, never failing). */
static void hook_read(fb_map *m, const it_tile_io *io)
{
    ft *g = m->hook_arg;
    const it_box *b = m->hook_box;
    it_buffer *out = NULL;
    int64_t ext[IT_MAX_DIMS];
    (void)io;
    int rc = it_tensor_read(g->t, b, 0, &out);
    if (rc == IT_OK) {
        tu_buffer_flip(out);
        int64_t n = tu_box_numel(b, ext);
        double *ref = malloc(sizeof(double) * (size_t)n);
        if (!ref) {
            it_buffer_free(out);
            return;
        }
        ft_reference(g, b, ref);
        for (int64_t j = 0; j < n; j++)
            if (el_load(out->dtype, (char *)out->data + j * (int64_t)tu_elsize(out->dtype)) != ref[j]) {
                fb_record(m, "store hook: a read of another tensor is wrong at element %lld",
                          (long long)j);
                break;
            }
        free(ref);
    }
    it_buffer_free(out);
}

static void hook_flush(fb_map *m, const it_tile_io *io)
{
    (void)io;
    int rc = it_tensor_flush(((ft *)m->hook_arg)->t);
    if (rc != IT_OK)
        fb_record(m, "store hook: a nested flush failed: %d (%s)", rc, it_error_message());
}

static void load_hook_clear(fb_map *m)
{
    it_tensor_clear(((ft *)m->hook_arg)->t);
}

/* After the hooks: everything reads right, flushes, and reopens right. */
static void hooks_off_check(ft **pf, const bspec *s, fb_map *m, const it_box *B, int n)
{
    ft *f = *pf;
    m->hook = NULL;
    m->load_hook = NULL;
    ft_forget(f);
    read_all(f, B, n);
    EXPECT_OK(it_tensor_flush(f->t));
    assert_int_equal(it_tensor_dirty(f->t), 0);
    fb_check_records(m, f);
    ft_destroy(f);
    *pf = NULL;
    it_cache *fresh = mkcache(-1, -1);
    ft *b = mkft(s, fresh, m, 0);
    read_all(b, B, n);
    assert_int_equal(b->calls, 0);
    ft_destroy(b);
    it_cache_unref(fresh);
}

static void test_store_reentrant(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const bspec *s = &S1;
    it_box B[3];
    int nb = boxes_for(s, B);

    /* (a) store clears its own tensor, during a flush */
    for (long times = 1; times <= 3; times += 2) {
        it_cache *c = mkcache(-1, -1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        read_all(f, B, nb);
        m->hook = hook_clear;
        m->hook_arg = f;
        m->hook_times = times;
        int rc = it_tensor_flush(f->t);
        assert_true(rc == IT_OK || rc < 0);
        assert_true(m->hook_runs > 0);
        assert_int_equal(it_tensor_tiles(f->t), 0);
        assert_int_equal(it_tensor_dirty(f->t), 0);
        tu_cache_ok(c);
        fb_check_records(m, f);
        hooks_off_check(&f, s, m, B, nb);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (b) store clears its own tensor, during trims inside reads */
    for (long times = 1; times <= 9; times += 4) {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, 1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        m->hook = hook_clear;
        m->hook_arg = f;
        m->hook_times = times;
        rng_t r = {60 + (uint64_t)times};
        for (int i = 0; i < 12; i++) {
            it_box b;
            random_box(s, &r, &b, i % 2);
            int rc = ft_read_check(f, &b, 0);
            if (rc != IT_OK && rc != IT_ESTATE)
                fail_msg("a read whose store clears the tensor returned %d (%s)", rc, f->last_msg);
        }
        assert_true(m->hook_runs > 0);
        fb_check_records(m, f);
        hooks_off_check(&f, s, m, B, nb);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (c) store reads another tensor (no backend) in the same cache */
    {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, 1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        ft *g = mkft(&S2F, c, NULL, 0);
        it_box gb = box2(0, 5, -3, 8);
        m->hook = hook_read;
        m->hook_arg = g;
        m->hook_box = &gb;
        m->hook_times = -1;
        rng_t r = {70};
        for (int i = 0; i < 12; i++) {
            it_box b;
            random_box(s, &r, &b, i % 2);
            ft_read_ok(f, &b);
        }
        EXPECT_OK(it_tensor_flush(f->t));
        assert_true(m->hook_runs > 0);
        fb_check_errors(m);
        hooks_off_check(&f, s, m, B, nb);
        ft_destroy(g);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (d) two persistent tensors whose stores read each other, sharing a
     * cache of two tiles: write-backs nest inside reads inside write-backs */
    {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, 2);
        fb_map *m = fb_map_new(1), *m2 = fb_map_new(2);
        ft *f = mkft(s, c, m, 0);
        ft *g = mkft(&S2I, c, m2, 0);
        it_box fb = box1(-5, 12), gb = box2(-2, 5, 0, 7);
        m->hook = hook_read;
        m->hook_arg = g;
        m->hook_box = &gb;
        m->hook_times = -1;
        m2->hook = hook_read;
        m2->hook_arg = f;
        m2->hook_box = &fb;
        m2->hook_times = -1;
        rng_t r = {80};
        for (int i = 0; i < 10; i++) {
            it_box b;
            random_box(s, &r, &b, i % 2);
            ft_read_ok(f, &b);
            random_box(&S2I, &r, &b, i % 3 == 0);
            ft_read_ok(g, &b);
        }
        EXPECT_OK(it_tensor_flush(f->t));
        EXPECT_OK(it_tensor_flush(g->t));
        assert_true(m->hook_runs > 0 && m2->hook_runs > 0);
        fb_check_errors(m);
        fb_check_errors(m2);
        m2->hook = NULL;
        fb_check_records(m2, g);
        hooks_off_check(&f, s, m, B, nb);
        ft_destroy(g);
        fb_map_free(m);
        fb_map_free(m2);
        it_cache_unref(c);
    }

    /* (f) store flushes its own tensor (the other dirty tiles) */
    {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, 2);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        m->hook = hook_flush;
        m->hook_arg = f;
        m->hook_times = -1;
        rng_t r = {95};
        for (int i = 0; i < 10; i++) {
            it_box b;
            random_box(s, &r, &b, i % 2);
            ft_read_ok(f, &b);
        }
        read_all(f, B, nb);
        EXPECT_OK(it_tensor_flush(f->t));
        assert_int_equal(it_tensor_dirty(f->t), 0);
        assert_true(m->hook_runs > 0);
        fb_check_errors(m);
        fb_check_records(m, f);
        hooks_off_check(&f, s, m, B, nb);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (g) defensive: a load that clears the tensor (which the contract
     * forbids) fails the read rather than crash */
    {
        it_cache *c = mkcache(-1, -1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        read_all(f, B, nb);
        EXPECT_OK(it_tensor_flush(f->t));
        ft_destroy(f);
        f = mkft(s, c, m, 0);
        m->hook_arg = f;
        m->load_hook = load_hook_clear;
        for (int i = 0; i < nb; i++) {
            int rc = ft_read_check(f, &B[i], 0);
            if (rc != IT_ESTATE)
                fail_msg("a read whose load clears the tensor returned %d (%s)", rc, f->last_msg);
        }
        m->load_hook = NULL;
        tu_cache_ok(c);
        hooks_off_check(&f, s, m, B, nb);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (h) the store of tile 1 reads its own tensor, adding windows to tile
     * 1 itself: the flush must write it again */
    for (int after = 0; after < 2; after++) {
        it_cache *c = mkcache(-1, -1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        it_box first = box1(0, 8), own = box1(0, 16);
        ft_read_ok(f, &first); /* windows -1..4: tiles -1, 0, 1 */
        m->hook_after = after;
        m->hook = hook_read;
        m->hook_arg = f;
        m->hook_box = &own; /* adds windows 5..8: tiles 1, 2 */
        m->hook_times = 1;
        m->hook_on_coord = 1;
        m->hook_coord[0] = 1;
        EXPECT_OK(it_tensor_flush(f->t));
        assert_int_equal(m->hook_runs, 1);
        assert_int_equal(it_tensor_dirty(f->t), 0);
        fb_check_errors(m);
        fb_check_records(m, f);
        m->hook = NULL;
        ft_destroy(f);
        f = mkft(s, c, m, 0);
        ft_read_ok(f, &own);
        assert_int_equal(f->calls, 0);
        ft_destroy(f);
        fb_map_free(m);
        it_cache_unref(c);
    }

    /* (e) store reads its own tensor (which may add windows to the very
     * tile being written: after the write, it must be dirty again) */
    for (int after = 0; after < 2; after++) {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, 1);
        fb_map *m = fb_map_new(1);
        ft *f = mkft(s, c, m, 0);
        it_box own = box1(-3, 9);
        m->hook_after = after;
        m->hook = hook_read;
        m->hook_arg = f;
        m->hook_box = &own;
        m->hook_times = -1;
        rng_t r = {90};
        for (int i = 0; i < 10; i++) {
            it_box b;
            random_box(s, &r, &b, i % 2);
            int rc = ft_read_check(f, &b, 0);
            if (rc != IT_OK)
                fail_msg("read %d with a store reading its own tensor: %d (%s)", i, rc, f->last_msg);
        }
        int rc = it_tensor_flush(f->t);
        if (rc != IT_OK)
            fail_msg("flush with a store reading its own tensor: %d (%s)", rc, it_error_message());
        fb_check_errors(m);
        hooks_off_check(&f, s, m, B, nb);
        fb_map_free(m);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 11. a pipeline of two persistent tensors                             */

static ft *mk_down(it_cache *c, ft *u, fb_map *m)
{
    ft *d = ft_new(1, (int64_t[]){INF}, IT_F64);
    ft_set_window(d, (int64_t[]){3}, (int64_t[]){3}, (int64_t[]){1}, NULL);
    d->spec.tile_shape[0] = 6;
    d->spec.batch_size = 2;
    d->seed = 4242;
    it_window aw = mkwin(1, (int64_t[]){4}, (int64_t[]){3}, (int64_t[]){-1}, NULL, 1);
    ft_add_arg(d, u, &aw);
    d->check_args = 1;
    d->name = "downstream";
    ft_create_ok(d, c);
    if (m)
        fb_attach(d, m, 0);
    return d;
}

static void test_pipeline_backend(void **state)
{
    (void)state;
    LEAK_BEGIN;
    for (int limit = -1; limit <= 2; limit += 3) {
        it_cache *c = mkcache(-1, -1);
        it_cache_set_tile_limit(c, limit);
        fb_map *mu = fb_map_new(1), *md = fb_map_new(1);
        ft *u = mkft(&S1, c, mu, 0);
        u->name = "upstream";
        ft *d = mk_down(c, u, md);
        u->once = d->once = 1; /* both persistent: nothing is computed twice */
        it_box R[3] = {box1(0, 10), box1(7, 25), box1(-12, -3)};
        read_all(d, R, 3);
        EXPECT_OK(it_tensor_flush(d->t));
        EXPECT_OK(it_tensor_flush(u->t));
        fb_check_records(mu, u);
        fb_check_records(md, d);
        ft_destroy(d);
        ft_destroy(u);
        /* both reopened: nothing computed anywhere */
        u = mkft(&S1, c, mu, 0);
        d = mk_down(c, u, md);
        read_all(d, R, 3);
        assert_int_equal(d->calls, 0);
        assert_int_equal(u->calls, 0);
        ft_destroy(d);
        ft_destroy(u);
        /* the downstream store alone: the upstream is not even read for
         * what is stored; new windows compute it afresh */
        fb_map *fresh = fb_map_new(1);
        u = mkft(&S1, c, fresh, 0);
        d = mk_down(c, u, md);
        read_all(d, R, 3);
        assert_int_equal(d->calls, 0);
        assert_int_equal(u->calls, 0);
        it_box far = box1(40, 52);
        ft_read_ok(d, &far);
        assert_true(d->calls > 0 && u->calls > 0);
        EXPECT_OK(it_tensor_flush(d->t));
        EXPECT_OK(it_tensor_flush(u->t));
        fb_check_records(md, d);
        fb_check_records(fresh, u);
        ft_destroy(d);
        ft_destroy(u);
        fb_map_free(fresh);
        fb_map_free(mu);
        fb_map_free(md);
        it_cache_unref(c);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* 12. random sequences of reads, trims, flushes, failures, crashes     */

static void fuzz_persist(const bspec *s, uint64_t seed, int nops)
{
    rng_t r = {seed};
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(bs_ninf(s));
    ft *f = mkft(s, c, m, 0);
    int fresh = 1; /* nothing of f is cached yet */
    it_box durable[64], pending[64];
    int ndur = 0, npend = 0;
    for (int op = 0; op < nops; op++) {
        int kind = (int)rng_range(&r, 0, 19);
        if (kind < 9) { /* read */
            it_box b;
            random_box(s, &r, &b, rng_chance(&r, 3));
            int step1 = 1;
            for (int d = 0; d < b.ndim; d++)
                step1 &= b.step[d] == 1;
            long expect = fresh && step1 && s->combine != IT_COMBINE_CUSTOM ? count_missing(f, m, &b) : -1;
            long before = f->windows_ok;
            int loads_armed = m->load_fail_at > m->load_calls;
            int rc = ft_read_check(f, &b, 0);
            if (rc == IT_OK) {
                if (expect >= 0 && f->windows_ok - before != expect)
                    fail_msg("op %d: a first read after a reopen computed %ld windows, %ld are "
                             "missing from the store", op, f->windows_ok - before, expect);
                if (npend < 64)
                    pending[npend++] = b;
            } else if (!(loads_armed && rc == IT_EIO)) {
                fail_msg("op %d: read failed with %d (%s)", op, rc, f->last_msg);
            }
            fresh = 0;
        } else if (kind < 11) { /* flush */
            it_error_clear();
            int rc = it_tensor_flush(f->t);
            if (rc == IT_OK) {
                assert_int_equal(it_tensor_dirty(f->t), 0);
                for (int i = 0; i < npend && ndur < 64; i++)
                    durable[ndur++] = pending[i];
                npend = 0;
            } else {
                assert_int_equal(rc, IT_EIO);
                assert_true(it_tensor_dirty(f->t) > 0);
            }
            fb_check_records(m, f);
        } else if (kind == 11) { /* arm a store failure */
            m->store_fail_at = m->store_calls + rng_range(&r, 1, 4);
            m->store_fail_repeat = rng_chance(&r, 2);
        } else if (kind == 12) { /* arm a load failure */
            m->load_fail_at = m->load_calls + rng_range(&r, 1, 4);
        } else if (kind == 13) {
            m->store_fail_at = m->load_fail_at = 0;
        } else if (kind == 14) { /* cache limits */
            it_cache_set_tile_limit(c, rng_range(&r, -1, 3));
            tu_cache_ok(c);
        } else if (kind == 15) {
            it_tensor_trim(f->t, rng_range(&r, 0, 3) * tu_tile_bytes(f->t));
            tu_cache_ok(c);
        } else if (kind < 18) { /* crash (sometimes after a clean flush) and reopen */
            if (kind == 17) {
                m->store_fail_at = 0;
                EXPECT_OK(it_tensor_flush(f->t));
                for (int i = 0; i < npend && ndur < 64; i++)
                    durable[ndur++] = pending[i];
            }
            npend = 0;
            long stores = m->store_calls;
            ft_destroy(f);
            assert_int_equal(m->store_calls, stores);
            fb_check_records(m, f = mkft(s, c, m, 0));
            fresh = 1;
            /* what was flushed is all there */
            if (kind == 17 && ndur > 0) {
                long lf = m->load_fail_at;
                m->load_fail_at = 0;
                for (int i = 0; i < ndur; i++)
                    ft_read_ok(f, &durable[i]);
                if (f->calls != 0)
                    fail_msg("op %d: %ld computes for regions flushed before the crash", op, f->calls);
                m->load_fail_at = lf > m->load_calls ? lf : 0;
                fresh = 0;
            }
        } else { /* window_done of a random window */
            int64_t w[IT_MAX_DIMS] = {0};
            for (int k = 0; k < s->ndim; k++)
                w[k] = s->shape[k] == INF ? rng_range(&r, -15, 15) : rng_range(&r, 0, 2);
            int done = -1;
            it_error_clear();
            int rc = it_tensor_window_done(f->t, w, &done);
            assert_true(rc == IT_OK || rc == IT_EIO);
            fresh = 0;
        }
        fb_check_errors(m);
    }
    m->store_fail_at = m->load_fail_at = 0;
    EXPECT_OK(it_tensor_flush(f->t));
    fb_check_records(m, f);
    ft_destroy(f);
    f = mkft(s, c, m, 0);
    for (int i = 0; i < ndur; i++)
        ft_read_ok(f, &durable[i]);
    for (int i = 0; i < npend; i++)
        ft_read_ok(f, &pending[i]);
    ft_destroy(f);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_fuzz_persist(void **state)
{
    (void)state;
    LEAK_BEGIN;
    bspec cu = {.ndim = 1, .shape = {INF}, .dtype = IT_F64, .size = {5}, .stride = {2},
                .offset = {1}, .tile = {4}, .combine = IT_COMBINE_CUSTOM, .blend_kind = 2,
                .fill = 1, .seed = 31, .batch = 2};
    for (uint64_t seed = 1; seed <= 16; seed++) {
        fuzz_persist(&S1, 1000 + seed, 150);
        fuzz_persist(&S1I, 2000 + seed, 150);
        fuzz_persist(&S2F, 3000 + seed, 120);
        fuzz_persist(&S2I, 4000 + seed, 120);
        fuzz_persist(&cu, 5000 + seed, 150);
    }
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* unlocked loads (IT_BACKEND_UNLOCKED_LOAD): the core calls load with  */
/* the caller's lock released; threads that need a tile being loaded   */
/* wait for it.  The fake backend is made thread-safe by a mutex of its */
/* own around both callbacks, as a real one must be.                    */

#include <pthread.h>
#include <time.h>

static pthread_mutex_t ul_caller = PTHREAD_MUTEX_INITIALIZER; /* the caller's lock */
static pthread_mutex_t ul_backend = PTHREAD_MUTEX_INITIALIZER; /* the backend's own */
static long ul_loads, ul_loads_unlocked;

static void *ul_release(void)
{
    pthread_mutex_unlock(&ul_caller);
    return NULL;
}
static void ul_reacquire(void *token)
{
    (void)token;
    pthread_mutex_lock(&ul_caller);
}

static int ul_load(void *ctx, it_tile_io *io, int *found)
{
    /* the caller's lock is free during an unlocked load: a single thread
     * can take it here (another thread may hold it for a moment: count) */
    int free_now = pthread_mutex_trylock(&ul_caller) == 0;
    if (free_now)
        pthread_mutex_unlock(&ul_caller);
    nanosleep(&(struct timespec){0, 200000}, NULL); /* a slow disk: other threads run meanwhile */
    pthread_mutex_lock(&ul_backend);
    ul_loads++;
    ul_loads_unlocked += free_now;
    int rc = fb_load(ctx, io, found);
    pthread_mutex_unlock(&ul_backend);
    return rc;
}

static int ul_store(void *ctx, const it_tile_io *io)
{
    pthread_mutex_lock(&ul_backend);
    int rc = fb_store(ctx, io);
    pthread_mutex_unlock(&ul_backend);
    return rc;
}

static const it_backend ul_backend_table = {IT_BACKEND_VERSION, ul_load, ul_store, fb_free};

static ft *ul_tensor(const bspec *s, it_cache *c, fb_map *m, int flags)
{
    ft *f = mkft(s, c, NULL, 0);
    EXPECT_OK(it_tensor_set_backend(f->t, &ul_backend_table, fb_ctx_new(m, f), flags));
    return f;
}

#define UL_THREADS 6
#define UL_READS 12

typedef struct ul_job {
    ft *f;
    it_box box[UL_READS];
    it_buffer *out[UL_READS];
    int rc[UL_READS];
} ul_job;

static void *ul_reader(void *arg)
{
    ul_job *j = arg;
    pthread_mutex_lock(&ul_caller);
    for (int i = 0; i < UL_READS; i++)
        j->rc[i] = it_tensor_read(j->f->t, &j->box[i], 0, &j->out[i]);
    pthread_mutex_unlock(&ul_caller);
    return NULL;
}

static void unlocked_loads(const bspec *s, uint64_t seed)
{
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(bs_ninf(s));
    rng_t r = {seed};
    static ul_job jobs[UL_THREADS];
    /* store every box's windows first */
    ft *a = mkft(s, c, m, 0);
    for (int k = 0; k < UL_THREADS; k++)
        for (int i = 0; i < UL_READS; i++) {
            random_box(s, &r, &jobs[k].box[i], i % 4 == 3);
            ft_read_ok(a, &jobs[k].box[i]);
        }
    EXPECT_OK(it_tensor_flush(a->t));
    ft_destroy(a);

    it_set_lock_hooks(&(it_lock_hooks){ul_release, ul_reacquire});
    /* one thread: every load runs with the caller's lock free */
    ul_loads = ul_loads_unlocked = 0;
    ft *b = ul_tensor(s, c, m, IT_BACKEND_UNLOCKED_LOAD);
    b->once = 1;
    pthread_mutex_lock(&ul_caller);
    for (int i = 0; i < UL_READS; i++)
        ft_read_ok(b, &jobs[0].box[i]);
    pthread_mutex_unlock(&ul_caller);
    assert_true(ul_loads > 0);
    assert_int_equal(ul_loads_unlocked, ul_loads);
    assert_int_equal(b->calls, 0); /* everything came from the store */
    ft_destroy(b);
    /* without the flag the lock stays held */
    ul_loads = ul_loads_unlocked = 0;
    b = ul_tensor(s, c, m, 0);
    pthread_mutex_lock(&ul_caller);
    ft_read_ok(b, &jobs[0].box[0]);
    pthread_mutex_unlock(&ul_caller);
    assert_true(ul_loads > 0);
    assert_int_equal(ul_loads_unlocked, 0);
    ft_destroy(b);

    /* many threads over a small cache: tiles are loaded, evicted and
     * loaded again while other threads wait for them or compute */
    it_cache_set_tile_limit(c, 3);
    b = ul_tensor(s, c, m, IT_BACKEND_UNLOCKED_LOAD);
    pthread_t th[UL_THREADS];
    for (int k = 0; k < UL_THREADS; k++) {
        jobs[k].f = b;
        for (int i = 0; i < UL_READS; i++)
            jobs[k].out[i] = NULL;
        assert_int_equal(pthread_create(&th[k], NULL, ul_reader, &jobs[k]), 0);
    }
    for (int k = 0; k < UL_THREADS; k++)
        pthread_join(th[k], NULL);
    it_set_lock_hooks(NULL);
    for (int k = 0; k < UL_THREADS; k++)
        for (int i = 0; i < UL_READS; i++) {
            if (jobs[k].rc[i] != IT_OK)
                fail_msg("thread %d read %d failed: %d", k, i, jobs[k].rc[i]);
            tu_buffer_flip(jobs[k].out[i]);
            ft_compare(b, &jobs[k].box[i], jobs[k].out[i]);
            it_buffer_free(jobs[k].out[i]);
        }
    assert_int_equal(b->calls, 0);
    tu_cache_ok(c);
    assert_int_equal(it_cache_pinned(c), 0);
    ft_destroy(b);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_unlocked_loads(void **state)
{
    (void)state;
    LEAK_BEGIN;
    unlocked_loads(&S1, 11);
    unlocked_loads(&S2F, 12);
    unlocked_loads(&S2I, 13);
    LEAK_END;
}

/* ------------------------------------------------------------------ */
/* a plan that gives the caller's lock up (an unlocked load) must not   */
/* compute a window that another thread finished meanwhile.  Thread B  */
/* reads window 0 and sits in f with the lock free; thread A plans     */
/* windows 0 and 1: it looks at tile 0 (window 0 missing, claimed by   */
/* B), then loads tile 1 without the lock, and during that load B      */
/* finishes window 0 and releases its claim.  A's plan, taken before,  */
/* still says window 0 is missing, and no claim says B has it: A must  */
/* plan again rather than compute window 0 a second time.  Windows and */
/* tiles are 4 wide, so window i is tile i.                             */

static pthread_mutex_t sp_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sp_cv = PTHREAD_COND_INITIALIZER;
static int sp_b_in_f, sp_go_b, sp_b_done, sp_pause_armed, sp_load_armed, sp_rc_b;
static it_buffer *sp_out_b;

static void sp_set(int *flag)
{
    pthread_mutex_lock(&sp_mu);
    *flag = 1;
    pthread_cond_broadcast(&sp_cv);
    pthread_mutex_unlock(&sp_mu);
}

static void sp_await(int *flag)
{
    pthread_mutex_lock(&sp_mu);
    while (!*flag)
        pthread_cond_wait(&sp_cv, &sp_mu);
    pthread_mutex_unlock(&sp_mu);
}

/* inside B's f (the first f call): let A in, and go on once A's plan is
 * loading tile 1 */
static void sp_pause(void)
{
    if (!sp_pause_armed)
        return;
    sp_pause_armed = 0;
    pthread_mutex_unlock(&ul_caller);
    sp_set(&sp_b_in_f);
    sp_await(&sp_go_b);
    pthread_mutex_lock(&ul_caller);
}

/* A's load of tile 1 (unlocked): B finishes its read meanwhile */
static int sp_load(void *ctx, it_tile_io *io, int *found)
{
    pthread_mutex_lock(&sp_mu);
    int hold = sp_load_armed && io->coord[0] == 1;
    if (hold)
        sp_load_armed = 0;
    pthread_mutex_unlock(&sp_mu);
    if (hold) {
        sp_set(&sp_go_b);
        sp_await(&sp_b_done);
    }
    return ul_load(ctx, io, found);
}

static const it_backend sp_backend_table = {IT_BACKEND_VERSION, sp_load, ul_store, fb_free};

static void *sp_reader_b(void *arg)
{
    ft *f = arg;
    it_box b = box1(0, 4);
    pthread_mutex_lock(&ul_caller);
    sp_rc_b = it_tensor_read(f->t, &b, 0, &sp_out_b);
    sp_set(&sp_b_done);
    pthread_mutex_unlock(&ul_caller);
    return NULL;
}

/* down: A reads f through a downstream tensor, whose two windows read
 * windows 0 and 1 of f as two regions (planned one after the other);
 * otherwise A reads [0, 8) of f (one region, planned all at once). */
static void stale_plan_case(int down)
{
    static const bspec SP = {.ndim = 1, .shape = {INF}, .dtype = IT_F64, .size = {4}, .stride = {4},
                             .tile = {4}, .combine = IT_COMBINE_SUM, .seed = 31};
    it_cache *c = mkcache(-1, -1);
    fb_map *m = fb_map_new(1);
    ft *f = mkft(&SP, c, NULL, 0);
    EXPECT_OK(it_tensor_set_backend(f->t, &sp_backend_table, fb_ctx_new(m, f), IT_BACKEND_UNLOCKED_LOAD));
    f->once = 1;
    f->pause = sp_pause;
    ft *d = NULL;
    if (down) {
        d = ft_new(1, (int64_t[]){INF}, IT_F64);
        ft_set_window(d, (int64_t[]){4}, (int64_t[]){4}, NULL, NULL);
        d->spec.tile_shape[0] = 4;
        d->seed = 32;
        it_window aw = mkwin(1, (int64_t[]){4}, (int64_t[]){4}, NULL, NULL, 1);
        ft_add_arg(d, f, &aw);
        d->check_args = 1;
        ft_create_ok(d, c);
        d->once = 1;
    }
    sp_b_in_f = sp_go_b = sp_b_done = 0;
    sp_pause_armed = sp_load_armed = 1;
    sp_out_b = NULL;

    it_set_lock_hooks(&(it_lock_hooks){ul_release, ul_reacquire});
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sp_reader_b, f), 0);
    sp_await(&sp_b_in_f);
    ft *a = down ? d : f;
    it_box box = box1(0, 8);
    it_buffer *out = NULL;
    pthread_mutex_lock(&ul_caller);
    int rc = it_tensor_read(a->t, &box, 0, &out);
    pthread_mutex_unlock(&ul_caller);
    pthread_join(th, NULL);
    it_set_lock_hooks(NULL);

    if (rc != IT_OK || sp_rc_b != IT_OK)
        fail_msg("reads failed: A %d, B %d (%s)", rc, sp_rc_b, it_error_message());
    assert_int_equal(sp_load_armed, 0); /* the interleaving above happened */
    ft_check_errors(f);
    if (d)
        ft_check_errors(d);
    if (f->calls != 2)
        fail_msg("f was called %ld times for its 2 windows: a window was computed twice", f->calls);
    tu_buffer_flip(out);
    ft_compare(a, &box, out);
    it_buffer_free(out);
    tu_buffer_flip(sp_out_b);
    it_box bb = box1(0, 4);
    ft_compare(f, &bb, sp_out_b);
    it_buffer_free(sp_out_b);
    sp_out_b = NULL;
    fb_check_errors(m);
    tu_cache_ok(c);
    assert_int_equal(it_cache_pinned(c), 0);
    ft_destroy(d);
    ft_destroy(f);
    fb_map_free(m);
    it_cache_unref(c);
}

static void test_unlocked_load_during_plan(void **state)
{
    (void)state;
    LEAK_BEGIN;
    stale_plan_case(0);
    stale_plan_case(1);
    LEAK_END;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writeback_reload),
        cmocka_unit_test(test_eviction_writes),
        cmocka_unit_test(test_crash_partial),
        cmocka_unit_test(test_failed_load),
        cmocka_unit_test(test_failed_store_trim),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_custom_backend),
        cmocka_unit_test(test_set_backend_errors),
        cmocka_unit_test(test_max_domain),
        cmocka_unit_test(test_store_reentrant),
        cmocka_unit_test(test_pipeline_backend),
        cmocka_unit_test(test_fuzz_persist),
        cmocka_unit_test(test_unlocked_loads),
        cmocka_unit_test(test_unlocked_load_during_plan),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
