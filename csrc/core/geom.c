/*
 * geom.c - window <-> pixel arithmetic (see it_geom.h for the model).
 *
 * The domain of a region is computed per dim and intersected per
 * coordinate.  Along a sliding dim with stride s, offset o and size z, the
 * windows meeting [a, b) are exactly
 *
 *     ceil((a - o - z + 1) / s)  <=  i  <=  floor((b - 1 - o) / s),
 *
 * and on a finite dim of extent E the windows lying wholly inside [0, E) are
 *
 *     ceil(-o / s)  <=  i  <=  floor((E - z - o) / s).
 *
 * A block of a grid (a tile) spanning T pixels of an infinite dim meets at
 * most floor((T + z - 2) / s) + 1 windows along it, wherever it lies (the
 * bound of it_window_block_max, which sizes contribution bitmaps).
 *
 * Parameters are bounded by IT_PARAM_LIMIT (2^48) and region coordinates by
 * IT_COORD_LIMIT (2^62), so none of these sums can overflow; products of a
 * window index and a stride are still checked.  A span of a box can exceed
 * INT64_MAX (2^62 - (-2^62)), so extents are computed unsigned.
 */
#include "it_geom.h"

int64_t it_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int64_t it_ceildiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a > 0) ? q + 1 : q;
}

int64_t it_box_extent(const it_box *b, int d)
{
    if (b->stop[d] <= b->start[d])
        return 0;
    /* the span may exceed INT64_MAX (e.g. [-2^62, 2^62 + 1)): unsigned */
    uint64_t len = (uint64_t)b->stop[d] - (uint64_t)b->start[d];
    uint64_t step = (uint64_t)b->step[d];
    uint64_t n = len / step + (len % step != 0);
    return n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

int it_box_numel(const it_box *b, int64_t *out)
{
    int64_t n = 1;
    for (int d = 0; d < b->ndim; d++) {
        if (it_box_extent(b, d) == 0) {
            *out = 0;
            return IT_OK;
        }
    }
    for (int d = 0; d < b->ndim; d++) {
        int64_t e = it_box_extent(b, d);
        if (n > (INT64_MAX / 16) / e)
            return it_error_set(IT_ETOOBIG, "the requested region has too many elements");
        n *= e;
    }
    *out = n;
    return IT_OK;
}

int it_window_check(const it_window *w)
{
    if (w->ndim < 1 || w->ndim > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "a window must have 1 to %d dims, got %d", IT_MAX_DIMS, w->ndim);
    if (w->ncoords < 1 || w->ncoords > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "a window index must have 1 to %d entries, got %d",
                            IT_MAX_DIMS, w->ncoords);
    for (int d = 0; d < w->ndim; d++) {
        if (w->size[d] <= 0 || w->size[d] > IT_PARAM_LIMIT)
            return it_error_set(IT_EINVAL, "window size[%d] must be in [1, 2**%d], got %lld", d,
                                IT_PARAM_LIMIT_LOG2, (long long)w->size[d]);
        if (w->stride[d] <= 0 || w->stride[d] > IT_PARAM_LIMIT)
            return it_error_set(IT_EINVAL, "window stride[%d] must be in [1, 2**%d], got %lld", d,
                                IT_PARAM_LIMIT_LOG2, (long long)w->stride[d]);
        if (w->offset[d] < -IT_PARAM_LIMIT || w->offset[d] > IT_PARAM_LIMIT)
            return it_error_set(IT_EINVAL, "window offset[%d] must be within +-2**%d, got %lld", d,
                                IT_PARAM_LIMIT_LOG2, (long long)w->offset[d]);
        if (w->map[d] != IT_MAP_FIXED && (w->map[d] < 0 || w->map[d] >= w->ncoords))
            return it_error_set(IT_EINVAL,
                                "dimension_map[%d] = %d is not a valid window coordinate (0..%d)",
                                d, w->map[d], w->ncoords - 1);
    }
    return IT_OK;
}

int it_window_disjoint(const it_window *w)
{
    for (int c = 0; c < w->ncoords; c++) {
        int apart = 0;
        for (int d = 0; d < w->ndim && !apart; d++)
            apart = w->map[d] == c && w->stride[d] >= w->size[d];
        if (!apart)
            return 0;
    }
    return 1;
}

int it_window_bounds(const it_window *w, const int64_t *coords, int64_t *start, int64_t *stop)
{
    for (int d = 0; d < w->ndim; d++) {
        int64_t s = w->offset[d];
        if (w->map[d] != IT_MAP_FIXED) {
            int64_t p;
            if (__builtin_mul_overflow(coords[w->map[d]], w->stride[d], &p) ||
                __builtin_add_overflow(p, s, &s))
                return it_error_set(IT_ERANGE, "window index %lld is too far from the origin",
                                    (long long)coords[w->map[d]]);
        }
        if (s < -IT_COORD_LIMIT || s > IT_COORD_LIMIT - w->size[d])
            return it_error_set(IT_ERANGE, "window reaches beyond +-2**%d on dim %d", IT_COORD_LIMIT_LOG2, d);
        start[d] = s;
        stop[d] = s + w->size[d];
    }
    return IT_OK;
}

/* The windows along sliding dim d meeting [a, b) (a < b, inside [0, E) on
 * a finite dim): indices l..h, none when l > h.  On a finite dim of extent
 * E only the windows lying wholly inside [0, E) count. */
static void dim_range(const it_window *w, int d, int64_t E, int64_t a, int64_t b, int64_t *l, int64_t *h)
{
    int64_t z = w->size[d], o = w->offset[d], s = w->stride[d];
    *l = it_ceildiv(a - o - z + 1, s);
    *h = it_floordiv(b - 1 - o, s);
    if (E != IT_DIM_INFINITE) {
        *l = IT_MAX(*l, it_ceildiv(-o, s));
        *h = IT_MIN(*h, it_floordiv(E - z - o, s));
    }
}

int it_window_span(const it_window *w, const int64_t *shape, const int64_t *start, const int64_t *stop,
                   int64_t *lo, int64_t *hi, int *any)
{
    int used[IT_MAX_DIMS] = {0};
    *any = 0;
    for (int d = 0; d < w->ndim; d++)
        if (start[d] < -IT_COORD_LIMIT || start[d] > IT_COORD_LIMIT ||
            stop[d] < -IT_COORD_LIMIT || stop[d] > IT_COORD_LIMIT)
            return it_error_set(IT_ERANGE, "region [%lld, %lld) on dim %d is beyond +-2**%d",
                                (long long)start[d], (long long)stop[d], d, IT_COORD_LIMIT_LOG2);
    for (int d = 0; d < w->ndim; d++) {
        int64_t a = start[d], b = stop[d];
        int64_t E = shape[d], z = w->size[d], o = w->offset[d];
        if (E != IT_DIM_INFINITE) {
            a = IT_MAX(a, 0);
            b = IT_MIN(b, E);
        }
        if (a >= b)
            return IT_OK;
        int c = w->map[d];
        if (c == IT_MAP_FIXED) {
            if (E != IT_DIM_INFINITE && (o < 0 || o + z > E))
                return IT_OK;
            if (o >= b || o + z <= a)
                return IT_OK;
            continue;
        }
        int64_t l, h;
        dim_range(w, d, E, a, b, &l, &h);
        if (used[c]) {
            l = IT_MAX(l, lo[c]);
            h = IT_MIN(h, hi[c]);
        }
        used[c] = 1;
        lo[c] = l;
        hi[c] = h;
        if (l > h)
            return IT_OK;
    }
    for (int c = 0; c < w->ncoords; c++)
        if (!used[c])
            lo[c] = hi[c] = 0;
    *any = 1;
    return IT_OK;
}

int it_window_domain(const it_window *w, const int64_t *shape,
                     const int64_t *start, const int64_t *stop,
                     int64_t *lo, int64_t *count, int64_t *total)
{
    int64_t hi[IT_MAX_DIMS];
    int any, rc;
    *total = 0;
    if ((rc = it_window_span(w, shape, start, stop, lo, hi, &any)) || !any)
        return rc;
    int64_t n = 1;
    for (int c = 0; c < w->ncoords; c++) {
        if ((uint64_t)hi[c] - (uint64_t)lo[c] >= (uint64_t)INT64_MAX) /* hi >= lo here */
            return it_error_set(IT_ETOOBIG, "the region meets too many windows to enumerate");
        count[c] = hi[c] - lo[c] + 1;
        if (n > INT64_MAX / count[c])
            return it_error_set(IT_ETOOBIG, "the region meets too many windows to enumerate");
        n *= count[c];
    }
    *total = n;
    return IT_OK;
}

int64_t it_window_block_max(const it_window *w, const int64_t *shape, const int64_t *extent)
{
    /* per coordinate, the fewest windows any dim following it allows: along
     * an infinite dim a span of T pixels meets at most floor((T + z - 2) / s)
     * + 1 windows (wherever it lies); a finite dim allows the windows inside
     * it, the same for every block */
    int64_t per[IT_MAX_DIMS], total = 1;
    for (int c = 0; c < w->ncoords; c++)
        per[c] = -1;
    for (int d = 0; d < w->ndim; d++) {
        int c = w->map[d];
        int64_t n, l, h;
        if (c == IT_MAP_FIXED)
            continue;
        if (shape[d] == IT_DIM_INFINITE) {
            n = (extent[d] + w->size[d] - 2) / w->stride[d] + 1;
        } else {
            dim_range(w, d, shape[d], 0, shape[d], &l, &h);
            n = IT_MAX(h - l + 1, 0);
        }
        per[c] = per[c] < 0 ? n : IT_MIN(per[c], n);
    }
    for (int c = 0; c < w->ncoords; c++) {
        int64_t n = per[c] < 0 ? 1 : per[c];
        if (n == 0)
            return 0;
        if (total > INT64_MAX / n)
            return INT64_MAX;
        total *= n;
    }
    return total;
}
