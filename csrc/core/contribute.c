/*
 * contribute.c - adding a window's output to the tiles it touches, and the
 * deferred parts of custom blends.
 *
 * A window's output is checked once (it_view_check: shape, device, dtype),
 * then, tile by tile, the part of it inside the tile is added and the
 * window's bit set (engine.h, "Contribution records").  A tile that
 * already has the bit is skipped.  Into a lazy tile (tile.c) a part that
 * meets none of the tile's earlier windows is copied rather than added
 * (while the tile has fewer than LAZY_MAX_WINDOWS).
 *
 * Blends.  Sum, max and min do not depend on order, so a window is added to
 * every tile it touches, creating tiles as needed.  A custom blend is a fold
 * whose answer depends on order; the 0.3 answer is the fold over covering
 * windows in lexicographic order.  To give it whatever the order of reads,
 * a custom-blend read completes every tile it touches (tile->mark, set by
 * the planner), adding windows in lexicographic order.  A window that also
 * touches a tile the read is not completing leaves its values for that tile
 * on the tile's deferred list, sorted by window index; when a later read
 * completes the tile, those parts are folded in at their place in the
 * order, so no window is computed twice.  Custom-blend tiles are about one
 * window wide (tensor.c picks them so), so completing them costs at most one
 * window beyond the read's edge per side.
 */
#include "engine.h"

#include <string.h>

/* 1 if a window's part [a, a + shape) (absolute; ts: the tile's origin) can
 * be copied into a lazy tile, which it then keeps lazy; otherwise the tile's
 * values are made valid first and the window must be added. */
int it__lazy_takes(const it_tensor *t, it_tile *tile, const int64_t *ts, const int64_t *a, const int64_t *shape)
{
    if (!(tile->flags & TILE_LAZY))
        return 0;
    int64_t lo[LAZY_MAX_WINDOWS * IT_MAX_DIMS], hi[LAZY_MAX_WINDOWS * IT_MAX_DIMS];
    int nb = tile->ncontrib < LAZY_MAX_WINDOWS ? it__lazy_boxes(t, tile, lo, hi) : -1;
    for (int k = 0; k < nb; k++) {
        int meet = 1;
        for (int d = 0; d < t->ndim && meet; d++) {
            int64_t x0 = a[d] - ts[d], x1 = x0 + shape[d];
            meet = IT_MAX(x0, lo[k * t->ndim + d]) < IT_MIN(x1, hi[k * t->ndim + d]);
        }
        if (meet)
            nb = -1;
    }
    if (nb < 0) {
        it__tile_values(t, tile);
        return 0;
    }
    return 1;
}

static int blend_custom(it_tensor *t, void *dst, const int64_t *shape,
                        const void *src, const int64_t *src_strides)
{
    it_buffer *existing = NULL, *incoming = NULL;
    it_view result;
    void *owner = NULL;
    int rc;
    if ((rc = it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, &existing)) ||
        (rc = it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, &incoming)) ||
        (rc = it__dev_apply(t, IT_COMBINE_COPY, shape, existing->data, existing->strides, dst, t->tstrides)) ||
        (rc = it__dev_apply(t, IT_COMBINE_COPY, shape, incoming->data, incoming->strides, src, src_strides)))
        goto fail;
    if ((rc = t->ops.blend(t->user, &existing, &incoming, &result, &owner)))
        goto fail;
    rc = it_view_check(&result, "blend's result", t->ndim, shape, t->spec.dtype, t->dev.type, t->dev.id);
    if (rc == IT_OK)
        rc = it__dev_apply(t, IT_COMBINE_COPY, shape, dst, t->tstrides, result.data, result.strides);
    t->ops.release_view(t->user, owner);
fail:
    it_buffer_free(existing);
    it_buffer_free(incoming);
    return rc;
}

/* dst = 0 + src along contiguous rows of floats: the value adding into a
 * zeroed tile gives (-0 becomes +0), at the speed of a copy. */
#define DEFINE_ADD0(NAME, T)                                                                    \
    static void NAME(int64_t n, T *restrict d, const T *restrict s)                             \
    {                                                                                           \
        for (int64_t i = 0; i < n; i++)                                                         \
            d[i] = (T)0 + s[i];                                                                 \
    }
DEFINE_ADD0(add0_f32, float)
DEFINE_ADD0(add0_f64, double)

static void add0_nd(it_dtype dt, int ndim, const int64_t *shape, char *dst, const int64_t *ds, const char *src,
                    const int64_t *ss)
{
    if (ndim == 1) {
        if (dt == IT_F32)
            add0_f32(shape[0], (float *)dst, (const float *)src);
        else
            add0_f64(shape[0], (double *)dst, (const double *)src);
        return;
    }
    for (int64_t i = 0; i < shape[0]; i++)
        add0_nd(dt, ndim - 1, shape + 1, dst + i * ds[0], ds + 1, src + i * ss[0], ss + 1);
}

void it__copy_fresh(const it_tensor *t, const int64_t *shape, void *dst, const int64_t *dst_strides,
                    const void *src, const int64_t *src_strides)
{
    int L = t->ndim - 1;
    it_dtype dt = t->spec.dtype;
    if ((dt == IT_F32 || dt == IT_F64) && dst_strides[L] == (int64_t)t->elsize &&
        src_strides[L] == (int64_t)t->elsize && ((uintptr_t)dst | (uintptr_t)src) % t->elsize == 0) {
        add0_nd(dt, t->ndim, shape, dst, dst_strides, src, src_strides);
        return;
    }
    if (!(dt == IT_F16 || dt == IT_BF16 || dt == IT_F32 || dt == IT_F64 || dt == IT_C64 || dt == IT_C128)) {
        it_copy_nd(t->elsize, t->ndim, shape, dst, dst_strides, src, src_strides);
        return;
    }
    /* other floats: add into zeros, rounding as the kernels do */
    int64_t row[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0};
    do {
        char *d = dst;
        for (int k = 0; k < L; k++)
            d += row[k] * dst_strides[k];
        for (int64_t i = 0; i < shape[L]; i++)
            memset(d + i * dst_strides[L], 0, t->elsize);
    } while (it__odometer_next(row, zero, shape, L));
    it_combine_nd(IT_COMBINE_SUM, dt, t->ndim, shape, dst, dst_strides, src, src_strides);
}

void it__tile_extra(it_tensor *t, it_tile *tile, int64_t delta)
{
    tile->extra_bytes += delta;
    if (!it__tile_orphan(tile))
        t->bytes += delta;
    it__cache_resize(&tile->ce, delta);
}

it_deferred *it__deferred_find(const it_tensor *t, const it_tile *tile, const int64_t *w)
{
    for (it_deferred *d = tile->deferred; d; d = d->next)
        if (memcmp(d->coords, w, sizeof(int64_t) * (size_t)t->ncoords) == 0)
            return d;
    return NULL;
}

int it__deferred_has(const it_tensor *t, const it_tile *tile, const int64_t *w)
{
    return it__deferred_find(t, tile, w) != NULL;
}

int it__defer_part(it_tensor *t, it_tile *tile, const int64_t *w, const int64_t *ts, const int64_t *shape,
                   const int64_t *a, const char *src, const int64_t *src_strides, int64_t pending)
{
    size_t K = (size_t)t->ncoords, nd = (size_t)t->ndim;
    it_deferred *d = it_malloc(sizeof *d + sizeof(int64_t) * (K + nd));
    int rc;
    if (!d)
        return it_error_set(IT_ENOMEM, "out of memory keeping a window for later");
    if ((rc = it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, &d->part)) ||
        (rc = it__dev_apply(t, IT_COMBINE_COPY, shape, d->part->data, d->part->strides, src, src_strides))) {
        it_buffer_free(d->part);
        it_free(d);
        return rc;
    }
    memcpy(d->coords, w, sizeof(int64_t) * K);
    d->pending = pending;
    d->start = d->coords + K;
    for (size_t i = 0; i < nd; i++)
        d->start[i] = a[i] - ts[i];
    it_deferred **pp = &tile->deferred;
    while (*pp && it__lex_less((*pp)->coords, w, t->ncoords))
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    it__tile_extra(t, tile, (int64_t)d->part->capacity);
    t->mutations++;
    return IT_OK;
}

/* Fold the tile's deferred parts whose window comes before `before` (all of
 * them when before is NULL) into the tile, in order. */
int it__flush_deferred(it_tensor *t, it_tile *tile, const int64_t *before)
{
    while (tile->deferred && (!before || it__lex_less(tile->deferred->coords, before, t->ncoords))) {
        /* unlinked before the blend callback: nothing refers to it then */
        it_deferred *d = tile->deferred;
        tile->deferred = d->next;
        it__tile_extra(t, tile, -(int64_t)d->part->capacity);
        t->mutations++;
        int64_t bit = it__bit_index(t, tile, d->coords);
        int rc = IT_OK;
        if (bit >= 0 && !it__has_bit(tile, bit)) {
            char *dst = tile->buf->data;
            for (int i = 0; i < t->ndim; i++)
                dst += d->start[i] * t->tstrides[i];
            /* on failure the window is simply missing again: recomputed later */
            if ((rc = blend_custom(t, dst, d->part->shape, d->part->data, d->part->strides)) == IT_OK) {
                tile->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
                tile->ncontrib++;
                it__mark_dirty(t, tile);
            }
        }
        it__deferred_free(d);
        if (rc)
            return rc;
    }
    return IT_OK;
}

/*
 * Add window w (output v) to the tiles it touches that lack it.  With
 * only_marked, only tiles this context is completing receive it (custom
 * blends); otherwise missing tiles are created.
 */
int it__contribute(read_ctx *ctx, it_tensor *t, const int64_t *w, const it_view *v, int only_marked)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
    int rc;
    if ((rc = it_view_check(v, "window output", t->ndim, t->spec.window.size, t->spec.dtype, t->dev.type,
                            t->dev.id)) ||
        (rc = it_window_bounds(&t->spec.window, w, ws, we)))
        return rc;
    tile_walk tw;
    it__tiles_first(&tw, t, ws, we);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        int completing = 0;
        if ((rc = it__get_tile(ctx, t, tc, 1, &tile)))
            return rc;
        if (only_marked && tile->mark != 0 && tile->mark != ctx->serial)
            return it_error_set(IT_ESTATE, BUSY_MSG);
        if (only_marked && tile->mark == ctx->serial) {
            completing = 1;
            /* parts of earlier windows go first; a part of w itself is
             * superseded by the output in hand */
            if ((rc = it__flush_deferred(t, tile, w)))
                return rc;
            if (tile->deferred && !it__lex_less(w, tile->deferred->coords, t->ncoords)) {
                it_deferred *d = tile->deferred;
                tile->deferred = d->next;
                it__tile_extra(t, tile, -(int64_t)d->part->capacity);
                it__deferred_free(d);
            }
        }
        int64_t bit = it__bit_index(t, tile, w);
        if (bit < 0)
            return it_error_set(IT_ESTATE, "internal error: window outside its tile's domain");
        if (it__has_bit(tile, bit))
            continue;
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], shape[IT_MAX_DIMS], a[IT_MAX_DIMS];
        char *dst = tile->buf->data;
        const char *src = v->data;
        it__tile_box(t, tc, ts, te);
        for (int d = 0; d < t->ndim; d++) {
            a[d] = IT_MAX(ws[d], ts[d]);
            shape[d] = IT_MIN(we[d], te[d]) - a[d];
            dst += (a[d] - ts[d]) * t->tstrides[d];
            src += (a[d] - ws[d]) * v->strides[d];
        }
        if (only_marked && !completing) {
            if (!it__deferred_has(t, tile, w) &&
                (rc = it__defer_part(t, tile, w, ts, shape, a, src, v->strides, 0)))
                return rc;
            continue;
        }
        if (t->canon) { /* fold.c: sets the bit once every cell has w */
            if (tile->deferred && it__deferred_has(t, tile, w))
                continue; /* here already, waiting for the windows before it */
            if ((rc = it__fold_part(t, tile, w, bit, ts, ws, a, shape, src, v->strides)))
                return rc;
            t->mutations++;
            it__mark_dirty(t, tile);
            continue;
        }
        if (t->spec.combine == IT_COMBINE_CUSTOM) {
            rc = blend_custom(t, dst, shape, src, v->strides);
        } else if (t->spec.mean) { /* a weighted sum (mean.c), copied into a lazy tile like a sum */
            int64_t woff[IT_MAX_DIMS];
            for (int d = 0; d < t->ndim; d++)
                woff[d] = a[d] - ws[d];
            it__mean_add(t, it__lazy_takes(t, tile, ts, a, shape), shape, dst, t->tstrides, src, v->strides, woff);
        } else if (it__lazy_takes(t, tile, ts, a, shape))
            it__copy_fresh(t, shape, dst, t->tstrides, src, v->strides);
        else
            rc = it__dev_apply(t, t->spec.combine, shape, dst, t->tstrides, src, v->strides);
        if (rc)
            return rc;
        tile->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
        tile->ncontrib++;
        t->mutations++;
        it__mark_dirty(t, tile);
        if (ctx->sink.t == t)
            it__sink_write(ctx, t, tile, a, shape);
    } while (it__tiles_next(&tw));
    return IT_OK;
}
