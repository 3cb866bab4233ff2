/*
 * fold.c - float sums in a canonical order, whatever the order of reads.
 *
 * Float addition is not associative, so a pixel's sum depends on the order
 * its windows were added.  Windows reach a tile in the order reads happen,
 * so without care a tile read after its neighbour differs in the last bits
 * from the same tile read fresh.  Here every pixel's value is the fold of
 * its windows in lexicographic window order, starting from the fill value:
 * fill + v1 + v2 + ... with v1 < v2 < ... the windows covering it.  That is
 * the value the 0.3/0.4 memory store gives (it adds the stored windows in
 * that order at every read), so reads match it bit for bit.
 *
 * Cells.  The window starts and ends along each dim cut a tile into cells;
 * every pixel of a cell is covered by the same windows, C(cell), a product
 * of index ranges (per dim, the windows over the cell's first pixel, within
 * the tile's domain).  Each cell counts the
 * windows folded into it (tile->folds): always the first folds[c] of C(c)
 * in lexicographic order.  A window reaching a tile is, cell by cell of its
 * part:
 *   - folded now, when it is next in the cell's order (rank == folds[c]);
 *   - skipped, when already folded (rank < folds[c]: a window recomputed
 *     after a reopen, see below);
 *   - kept for later (rank > folds[c]): its part waits on the tile's
 *     deferred list, counting the cells it still owes (pending).
 * After a window is folded into a cell, the windows kept for that cell are
 * folded in turn while the next one in the order is there (the cascade).
 * Once every window of C(c) has arrived, folds[c] == |C(c)|: a read's
 * pixels are final as soon as the read's windows are computed, and no window
 * beyond them is computed.  A window's bit is set when it is folded into
 * every cell of its part in the tile; until then its kept part counts it as
 * present (the planner asks it__deferred_has).
 *
 * A read in lexicographic order (every fresh read) folds every window at
 * once: one add over the whole part, as before.  A tile whose windows have
 * all come in the order of its own bitmap (TILE_PREFIX: every tile of a
 * fresh read but those on its top and left edges) does not even look at
 * its cells: a window whose bit is the next one is next in every cell, and
 * the counts follow from the bitmap when the tile leaves that state or is
 * written.  Parts are only kept along the edge of what has been read, where
 * a later read brings the windows that come first (up to one window row and
 * column).  The counts cost 4 bytes per cell: with windows at stride s, one
 * or two cells per s pixels along each dim.
 *
 * Backends.  A tile record carries the fold counts after the bitmap (the
 * bitmap's 64-bit words, then one little-endian uint32 per cell, row-major
 * over the tile's cell grid), so a tile written while parts wait on it
 * reopens knowing which cells hold which windows; the parts themselves are
 * not written, and their windows are computed again when needed (folded
 * only into the cells that lack them).  A record without counts (a file
 * written before them) gives each cell the windows of its order whose bits
 * are set up to the first missing one.  Backends that cannot store counts
 * (stores written in Python) keep the order windows arrive in.
 *
 * Which tensors: sums (and weighted means) of floating dtypes on windows
 * that overlap enough for the order to matter: three windows on a pixel,
 * or two over a nonzero fill (a + b == b + a exactly; (f + a) + b need not
 * equal (f + b) + a).  Records carry counts for every floating dtype whose
 * windows can put two on a pixel, whatever the blend, so that a tensor's
 * rows have one width however it is opened (the blend is not stored); a
 * tensor that does not fold in order leaves them as they are.
 */
#include "engine.h"

#include <string.h>

/* ---- the cell grid -------------------------------------------------------- */

/* The first cut of dim d (a pixel where some window starts or ends) after
 * x; INT64_MAX if none. */
static int64_t next_cut(const it_window *win, int d, int64_t x)
{
    int64_t o = win->offset[d], z = win->size[d], best = INT64_MAX;
    if (win->map[d] == IT_MAP_FIXED) {
        if (o > x)
            return o;
        return o + z > x ? o + z : INT64_MAX;
    }
    int64_t s = win->stride[d], r[2] = {o, o + z};
    for (int k = 0; k < 2; k++) {
        int64_t p = r[k] + (it_floordiv(x - r[k], s) + 1) * s;
        best = IT_MIN(best, p);
    }
    return best;
}

/* Cuts of dim d in (x0, x1]. */
static int64_t cuts_in(const it_window *win, int d, int64_t x0, int64_t x1)
{
    int64_t o = win->offset[d], z = win->size[d];
    if (win->map[d] == IT_MAP_FIXED)
        return (x0 < o && o <= x1) + (x0 < o + z && o + z <= x1);
    int64_t s = win->stride[d];
    int64_t n = it_floordiv(x1 - o, s) - it_floordiv(x0 - o, s);
    if (z % s)
        n += it_floordiv(x1 - o - z, s) - it_floordiv(x0 - o - z, s);
    return n;
}

/* The most windows on one pixel: per coordinate, the fewest its dims allow. */
static double max_cover(const it_window *win)
{
    double cover = 1;
    for (int c = 0; c < win->ncoords; c++) {
        int64_t k = INT64_MAX;
        for (int d = 0; d < win->ndim; d++)
            if (win->map[d] == c)
                k = IT_MIN(k, it_ceildiv(win->size[d], win->stride[d]));
        if (k != INT64_MAX)
            cover *= (double)k;
    }
    return cover;
}

int it__record_counted(const it_tensor *t)
{
    switch (t->spec.dtype) {
    case IT_F16: case IT_BF16: case IT_F32: case IT_F64: case IT_C64: case IT_C128:
        break;
    default:
        return 0;
    }
    double cover = max_cover(&t->spec.window);
    return cover >= 2 && cover < 4294967295.0;
}

int it__canon_wanted(const it_tensor *t)
{
    if (!it__record_counted(t) || t->spec.combine != IT_COMBINE_SUM)
        return 0;
    int zero = 1;
    for (size_t b = 0; b < t->elsize; b++)
        zero &= t->spec.fill[b] == 0;
    return max_cover(&t->spec.window) >= (zero ? 3 : 2);
}

int it_tensor_canonical(const it_tensor *t) { return t->canon; }

int64_t it_tensor_waiting_bytes(const it_tensor *t)
{
    int64_t n = t->parked_bytes;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (const it_tile *p = t->buckets[i]; p; p = p->hnext)
            n += p->extra_bytes;
    return n;
}

int64_t it__tile_cells(const it_tensor *t, const int64_t *coord, int64_t *cdim)
{
    int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], n = 1;
    it__tile_box(t, coord, ts, te);
    for (int d = 0; d < t->ndim; d++) {
        cdim[d] = te[d] > ts[d] ? cuts_in(&t->spec.window, d, ts[d], te[d] - 1) + 1 : 1;
        n *= cdim[d]; /* at most the tile's pixels: every cell holds one */
    }
    return n;
}

int64_t it_tensor_record_bits(const it_tensor *t, int with_folds)
{
    int64_t dom = it_tensor_max_domain(t);
    if (!with_folds || !it__record_counted(t))
        return dom;
    const it_window *win = &t->spec.window;
    int64_t cells = 1;
    for (int d = 0; d < t->ndim; d++) {
        int64_t e = t->tshape[d], k;
        if (win->map[d] == IT_MAP_FIXED)
            k = 3;
        else
            k = (win->size[d] % win->stride[d] ? 2 : 1) * (it_floordiv(e - 1, win->stride[d]) + 1) + 1;
        cells *= IT_MIN(k, e);
    }
    return (dom + 63) / 64 * 64 + 32 * cells;
}

int64_t it__record_bits(const it_tensor *t, const it_tile *tile)
{
    if (!tile->folds)
        return tile->ntotal;
    return (tile->ntotal + 63) / 64 * 64 + 32 * tile->ncells;
}

/* ---- the cells of a part ---------------------------------------------------- */

/* One dim's stretch of a part: the cells [first, first + n), where each
 * starts (x, n + 1 entries: the last is the part's end), and the window
 * indices along the dim's coordinate that cover each ([lo, hi]; lo > hi:
 * none; a dim that does not slide leaves the coordinate free or empties the
 * cell). */
typedef struct dimcells {
    int64_t first, n;
    int64_t *x, *lo, *hi;
} dimcells;

typedef struct partcells {
    int ndim;
    dimcells dim[IT_MAX_DIMS];
    int64_t *mem;
    int64_t local[384];
} partcells;

static void partcells_free(partcells *pc)
{
    if (pc->mem != pc->local)
        it_free(pc->mem);
}

/* Window indices covering pixel x of dim d (the rule of geom.c's
 * dim_range and it_window_span for one pixel). */
static void pixel_cover(const it_tensor *t, int d, int64_t x, int64_t *lo, int64_t *hi)
{
    const it_window *win = &t->spec.window;
    int64_t z = win->size[d], o = win->offset[d], s = win->stride[d], E = t->spec.shape[d];
    if (win->map[d] == IT_MAP_FIXED) {
        int in = o <= x && x < o + z && (E == IT_DIM_INFINITE || (o >= 0 && o + z <= E));
        *lo = in ? INT64_MIN : 1;
        *hi = in ? INT64_MAX : 0;
        return;
    }
    *lo = it_ceildiv(x - o - z + 1, s);
    *hi = it_floordiv(x - o, s);
    if (E != IT_DIM_INFINITE) {
        *lo = IT_MAX(*lo, it_ceildiv(-o, s));
        *hi = IT_MIN(*hi, it_floordiv(E - z - o, s));
    }
}

/* The cells of the part [a, a + shape) of tile (origin ts). */
static int partcells_make(const it_tensor *t, const int64_t *ts, const int64_t *a, const int64_t *shape,
                          partcells *pc)
{
    const it_window *win = &t->spec.window;
    int64_t need = 0, count[IT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        count[d] = cuts_in(win, d, a[d], a[d] + shape[d] - 1) + 1;
        need += 3 * count[d] + 1;
    }
    pc->ndim = t->ndim;
    pc->mem = need <= (int64_t)(sizeof pc->local / sizeof pc->local[0]) ? pc->local
                                                                       : it_malloc(sizeof(int64_t) * (size_t)need);
    if (!pc->mem)
        return it_error_set(IT_ENOMEM, "out of memory folding a window");
    int64_t *x = pc->mem;
    for (int d = 0; d < t->ndim; d++) {
        dimcells *dc = &pc->dim[d];
        dc->first = cuts_in(win, d, ts[d], a[d]);
        dc->n = count[d];
        dc->x = x;
        dc->lo = x + dc->n + 1;
        dc->hi = dc->lo + dc->n;
        int64_t at = a[d], end = a[d] + shape[d];
        for (int64_t i = 0; i < dc->n; i++) {
            x[i] = at;
            pixel_cover(t, d, at, &dc->lo[i], &dc->hi[i]);
            at = IT_MIN(next_cut(win, d, at), end);
        }
        x[dc->n] = end;
        x += 3 * dc->n + 1;
    }
    return IT_OK;
}

/* One cell of a part: its box, its index in the tile's grid and its order. */
typedef struct cell {
    int64_t start[IT_MAX_DIMS], shape[IT_MAX_DIMS];
    int64_t flat;
    int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS], total; /* C(cell) */
} cell;

/* The cell at idx (per dim, in the part); C(cell) is the windows covering
 * it within the tile's domain. */
static int cell_at(const it_tensor *t, const it_tile *tile, const partcells *pc, const int64_t *idx, cell *c)
{
    int64_t hi[IT_MAX_DIMS];
    int empty = 0;
    for (int k = 0; k < t->ncoords; k++) {
        c->lo[k] = tile->dom_lo[k];
        hi[k] = tile->dom_lo[k] + tile->dom_n[k] - 1;
    }
    c->flat = 0;
    for (int d = 0; d < t->ndim; d++) {
        const dimcells *dc = &pc->dim[d];
        int64_t i = idx[d], g = dc->first + i, k = t->spec.window.map[d];
        c->start[d] = dc->x[i];
        c->shape[d] = dc->x[i + 1] - dc->x[i];
        if (g >= tile->cdim[d])
            return it_error_set(IT_ESTATE, "internal error: a cell beyond its tile's grid");
        c->flat = c->flat * tile->cdim[d] + g;
        if (k == IT_MAP_FIXED) {
            empty |= dc->lo[i] > dc->hi[i];
        } else {
            c->lo[k] = IT_MAX(c->lo[k], dc->lo[i]);
            hi[k] = IT_MIN(hi[k], dc->hi[i]);
        }
    }
    c->total = tile->ntotal > 0 && !empty;
    for (int k = 0; k < t->ncoords; k++) {
        c->n[k] = IT_MAX(hi[k] - c->lo[k] + 1, 0);
        c->total *= c->n[k];
    }
    return IT_OK;
}

/* Rank of window w in the cell's order; -1 if w does not cover it. */
static int64_t cell_rank(const it_tensor *t, const cell *c, const int64_t *w)
{
    return it__box_rank(t->ncoords, c->lo, c->n, w);
}

static void cell_window(const it_tensor *t, const cell *c, int64_t r, int64_t *w)
{
    for (int k = t->ncoords - 1; k >= 0; k--) {
        w[k] = c->lo[k] + r % c->n[k];
        r /= c->n[k];
    }
}

/* ---- folding -------------------------------------------------------------- */

/* Add the values of window w (whose pixels start at ws; src holds its part
 * starting at pixel sa) over the cell into the tile. */
static int fold_cell(it_tensor *t, it_tile *tile, const int64_t *ts, const cell *c, const int64_t *ws,
                     const char *src, const int64_t *sa, const int64_t *sstrides)
{
    char *dst = tile->buf->data;
    int64_t woff[IT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        dst += (c->start[d] - ts[d]) * t->tstrides[d];
        src += (c->start[d] - sa[d]) * sstrides[d];
        woff[d] = c->start[d] - ws[d];
    }
    if (t->spec.mean) {
        it__mean_add(t, 0, c->shape, dst, t->tstrides, src, sstrides, woff);
        return IT_OK;
    }
    return it__dev_apply(t, IT_COMBINE_SUM, c->shape, dst, t->tstrides, src, sstrides);
}

static void drop_kept(it_tensor *t, it_tile *tile, it_deferred *e)
{
    it_deferred **pp = &tile->deferred;
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    it__tile_extra(t, tile, -(int64_t)e->part->capacity);
    it__deferred_free(e);
    t->mutations++;
}

static void set_bit(it_tile *tile, int64_t bit)
{
    tile->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
    tile->ncontrib++;
}

/* Fold into the cell the windows kept for it while each is next in order. */
static int cascade(it_tensor *t, it_tile *tile, const int64_t *ts, const cell *c)
{
    int64_t u[IT_MAX_DIMS], us[IT_MAX_DIMS], ue[IT_MAX_DIMS], sa[IT_MAX_DIMS];
    int rc;
    while (tile->folds[c->flat] < c->total) {
        cell_window(t, c, tile->folds[c->flat], u);
        int64_t bit = it__bit_index(t, tile, u);
        if (bit >= 0 && it__has_bit(tile, bit)) { /* a record without counts: folded before */
            tile->folds[c->flat]++;
            continue;
        }
        it_deferred *e = tile->deferred ? it__deferred_find(t, tile, u) : NULL;
        if (!e)
            return IT_OK;
        if ((rc = it_window_bounds(&t->spec.window, u, us, ue)))
            return rc;
        for (int d = 0; d < t->ndim; d++)
            sa[d] = ts[d] + e->start[d];
        if ((rc = fold_cell(t, tile, ts, c, us, e->part->data, sa, e->part->strides)))
            return rc;
        tile->folds[c->flat]++;
        if (--e->pending == 0) {
            drop_kept(t, tile, e);
            if (bit >= 0)
                set_bit(tile, bit);
        }
    }
    return IT_OK;
}

enum { CELL_SKIP, CELL_FOLD, CELL_KEEP };

static int classify(const it_tensor *t, const it_tile *tile, const cell *c, const int64_t *w)
{
    int64_t r = cell_rank(t, c, w);
    if (r < 0)
        return -1;
    return r < tile->folds[c->flat] ? CELL_SKIP : r == tile->folds[c->flat] ? CELL_FOLD : CELL_KEEP;
}

/* Add w's whole part [a, a + shape) into the tile (copied into a lazy one). */
static int add_part(it_tensor *t, it_tile *tile, const int64_t *ts, const int64_t *ws, const int64_t *a,
                    const int64_t *shape, const char *src, const int64_t *sstrides)
{
    char *dst = tile->buf->data;
    int64_t woff[IT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        dst += (a[d] - ts[d]) * t->tstrides[d];
        woff[d] = a[d] - ws[d];
    }
    int copy = it__lazy_takes(t, tile, ts, a, shape);
    if (t->spec.mean)
        it__mean_add(t, copy, shape, dst, t->tstrides, src, sstrides, woff);
    else if (copy)
        it__copy_fresh(t, shape, dst, t->tstrides, src, sstrides);
    else
        return it__dev_apply(t, IT_COMBINE_SUM, shape, dst, t->tstrides, src, sstrides);
    return IT_OK;
}

/* Call fn(t, tile, ts, cell, ctx) for every cell of the tile holding windows. */
static int each_cell(it_tensor *t, it_tile *tile, int (*fn)(it_tensor *, it_tile *, const int64_t *, cell *, void *),
                     void *ctx)
{
    int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], ws[IT_MAX_DIMS], we[IT_MAX_DIMS], shape[IT_MAX_DIMS];
    it__tile_box(t, tile->coord, ts, te);
    it__tile_window_box(t, tile->coord, ws, we);
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = we[d] - ws[d];
        if (shape[d] <= 0)
            return IT_OK;
    }
    partcells pc;
    int64_t idx[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0}, ncell[IT_MAX_DIMS];
    int rc = partcells_make(t, ts, ws, shape, &pc);
    if (rc)
        return rc;
    for (int d = 0; d < t->ndim; d++)
        ncell[d] = pc.dim[d].n;
    cell c;
    do {
        if ((rc = cell_at(t, tile, &pc, idx, &c)) == IT_OK && c.total > 0)
            rc = fn(t, tile, ts, &c, ctx);
    } while (rc == IT_OK && it__odometer_next(idx, zero, ncell, t->ndim));
    partcells_free(&pc);
    return rc;
}

/* A prefix tile's count for a cell: its windows among the tile's first
 * ncontrib (the ones whose bits are set). */
static int count_from_bits(it_tensor *t, it_tile *tile, const int64_t *ts, cell *c, void *ctx)
{
    (void)ts;
    (void)ctx;
    int64_t u[IT_MAX_DIMS], n = 0;
    memcpy(u, c->lo, sizeof(int64_t) * (size_t)t->ncoords);
    do
        n += it__bit_index(t, tile, u) < tile->ncontrib;
    while (it__odometer_next(u, c->lo, c->n, t->ncoords));
    tile->folds[c->flat] = (uint32_t)n;
    return IT_OK;
}

int it__folds_sync(it_tensor *t, it_tile *tile)
{
    if (!(tile->flags & TILE_PREFIX))
        return IT_OK;
    memset(tile->folds, 0, sizeof(uint32_t) * (size_t)tile->ncells);
    return tile->ncontrib > 0 ? each_cell(t, tile, count_from_bits, NULL) : IT_OK;
}

int it__fold_part(it_tensor *t, it_tile *tile, const int64_t *w, int64_t bit, const int64_t *ts,
                  const int64_t *ws, const int64_t *a, const int64_t *shape, const char *src,
                  const int64_t *sstrides)
{
    int rc;
    if (tile->flags & TILE_PREFIX) {
        /* windows have come in the tile's own order so far (every interior
         * tile of a fresh read): w is next in every cell it covers */
        if (bit == tile->ncontrib) {
            if ((rc = add_part(t, tile, ts, ws, a, shape, src, sstrides)) == IT_OK)
                set_bit(tile, bit);
            return rc;
        }
        if ((rc = it__folds_sync(t, tile)))
            return rc;
        tile->flags &= ~TILE_PREFIX;
    }
    partcells pc;
    int64_t idx[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0}, ncell[IT_MAX_DIMS], count[3] = {0, 0, 0};
    int64_t klo[IT_MAX_DIMS], khi[IT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        klo[d] = INT64_MAX;
        khi[d] = INT64_MIN;
    }
    cell c;
    if ((rc = partcells_make(t, ts, a, shape, &pc)))
        return rc;
    for (int d = 0; d < t->ndim; d++)
        ncell[d] = pc.dim[d].n;
    do {
        int k;
        if ((rc = cell_at(t, tile, &pc, idx, &c)))
            goto done;
        if ((k = classify(t, tile, &c, w)) < 0) {
            rc = it_error_set(IT_ESTATE, "internal error: a window does not cover a cell of its part");
            goto done;
        }
        count[k]++;
        for (int d = 0; k == CELL_KEEP && d < t->ndim; d++) {
            klo[d] = IT_MIN(klo[d], c.start[d]);
            khi[d] = IT_MAX(khi[d], c.start[d] + c.shape[d]);
        }
    } while (it__odometer_next(idx, zero, ncell, t->ndim));

    if (count[CELL_KEEP]) { /* keep the box of the cells that wait */
        const char *from = src;
        for (int d = 0; d < t->ndim; d++) {
            from += (klo[d] - a[d]) * sstrides[d];
            khi[d] -= klo[d];
        }
        if ((rc = it__defer_part(t, tile, w, ts, khi, klo, from, sstrides, count[CELL_KEEP])))
            goto done;
    }
    if (count[CELL_FOLD] && !count[CELL_SKIP] && !count[CELL_KEEP]) {
        /* every cell takes w now: one pass over the part, then in each cell
         * the windows waiting for w (or, in a record without counts, the
         * next windows in already) */
        if (tile->deferred)
            it__tile_values(t, tile); /* the cascades fold parts of windows */
        if ((rc = add_part(t, tile, ts, ws, a, shape, src, sstrides)))
            goto done;
        memset(idx, 0, sizeof idx);
        do {
            if ((rc = cell_at(t, tile, &pc, idx, &c)))
                goto done;
            tile->folds[c.flat]++;
            if ((rc = cascade(t, tile, ts, &c)))
                goto done;
        } while (it__odometer_next(idx, zero, ncell, t->ndim));
    } else if (count[CELL_FOLD]) {
        it__tile_values(t, tile); /* kept parts and lazy boxes do not mix */
        memset(idx, 0, sizeof idx);
        do {
            if ((rc = cell_at(t, tile, &pc, idx, &c)))
                goto done;
            if (classify(t, tile, &c, w) != CELL_FOLD)
                continue;
            if ((rc = fold_cell(t, tile, ts, &c, ws, src, a, sstrides)))
                goto done;
            tile->folds[c.flat]++;
            if ((rc = cascade(t, tile, ts, &c)))
                goto done;
        } while (it__odometer_next(idx, zero, ncell, t->ndim));
    }
    if (!count[CELL_KEEP])
        set_bit(tile, bit);
done:
    if (rc && count[CELL_KEEP]) {
        /* a failed fold leaves w in some cells: drop its kept part too, so
         * that w is missing, and recomputed into the cells that lack it */
        it_deferred *e = it__deferred_find(t, tile, w);
        if (e)
            drop_kept(t, tile, e);
    }
    partcells_free(&pc);
    return rc;
}

int it__fold_covers(const it_tensor *t, const it_tile *tile, const int64_t *w, const int64_t *start,
                    const int64_t *stop)
{
    if (tile->flags & TILE_PREFIX)
        return 0; /* whole windows only: w's bit would be set */
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS], ts[IT_MAX_DIMS], te[IT_MAX_DIMS], a[IT_MAX_DIMS], shape[IT_MAX_DIMS];
    if (it_window_bounds(&t->spec.window, w, ws, we) != IT_OK)
        return 0;
    it__tile_box(t, tile->coord, ts, te);
    for (int d = 0; d < t->ndim; d++) {
        a[d] = IT_MAX(IT_MAX(ws[d], ts[d]), start[d]);
        shape[d] = IT_MIN(IT_MIN(we[d], te[d]), stop[d]) - a[d];
        if (shape[d] <= 0)
            return 0;
    }
    partcells pc;
    int64_t idx[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0}, ncell[IT_MAX_DIMS];
    if (partcells_make(t, ts, a, shape, &pc)) {
        it_error_clear();
        return 0; /* computed again: the fold skips the cells that have it */
    }
    for (int d = 0; d < t->ndim; d++)
        ncell[d] = pc.dim[d].n;
    int all = 1;
    cell c;
    do {
        if (cell_at(t, tile, &pc, idx, &c) != IT_OK) {
            it_error_clear();
            all = 0;
        } else {
            all = classify(t, tile, &c, w) == CELL_SKIP;
        }
    } while (all && it__odometer_next(idx, zero, ncell, t->ndim));
    partcells_free(&pc);
    return all;
}

/* ---- records -------------------------------------------------------------- */

static int check_and_cascade(it_tensor *t, it_tile *tile, const int64_t *ts, cell *c, void *ctx)
{
    (void)ctx;
    if (tile->folds[c->flat] > c->total)
        return it_error_set(IT_EIO, "a stored tile counts more windows in a cell than cover it: the store's "
                                    "data is damaged");
    return cascade(t, tile, ts, c); /* no parts are kept yet: only set bits move it */
}

int it__folds_loaded(it_tensor *t, it_tile *tile)
{
    return tile->folds ? each_cell(t, tile, check_and_cascade, NULL) : IT_OK;
}
