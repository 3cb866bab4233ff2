/*
 * it_geom.h - boxes, windows and the window <-> pixel arithmetic.
 *
 * All coordinates are int64.  Pixel coordinates the core accepts lie in
 * [-IT_COORD_LIMIT, IT_COORD_LIMIT]; window sizes, strides and offsets lie in
 * [-IT_PARAM_LIMIT, IT_PARAM_LIMIT].  The functions check their inputs
 * against those bounds and report IT_ERANGE / IT_ETOOBIG rather than wrap;
 * the one quantity that may exceed int64, the length of a span between the
 * limits, is computed unsigned.
 *
 * A window places a block of size[d] pixels along each dim d of a tensor.
 * Its position is driven by a window index: a tuple of ncoords ints.  Dim d
 * follows coordinate map[d] (the identity when no dimension_map is given):
 *
 *     dim d covers [i * stride[d] + offset[d], i * stride[d] + offset[d] + size[d])
 *     where i = index[map[d]],
 *
 * and a dim whose map is IT_MAP_FIXED does not slide: it always covers
 * [offset[d], offset[d] + size[d]).  Several dims may follow one coordinate
 * (they move together); a coordinate no dim follows is always 0.
 *
 * For a tensor's output window, ncoords is the tensor's ndim.  For an args
 * window, the dims are the upstream tensor's and the coordinates are the
 * downstream window index.
 *
 * The "domain" of a region is the set of window indices whose window
 * intersects it.  It is always a product of one integer range per coordinate
 * (dims that share a coordinate intersect their ranges), so it is returned as
 * lo[c] and count[c].  On a finite dim of extent E, only windows lying wholly
 * inside [0, E) count (the 0.3 rule: a window that sticks out of a finite dim
 * is never computed).
 */
#ifndef IT_GEOM_H
#define IT_GEOM_H

#include "it_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IT_MAX_DIMS 16
#define IT_COORD_LIMIT_LOG2 62
#define IT_PARAM_LIMIT_LOG2 48
#define IT_COORD_LIMIT (((int64_t)1) << IT_COORD_LIMIT_LOG2)
#define IT_PARAM_LIMIT (((int64_t)1) << IT_PARAM_LIMIT_LOG2)
#define IT_DIM_INFINITE (-1) /* a shape entry for an unbounded dim */
#define IT_MAP_FIXED (-1)    /* a dimension_map entry of None */

typedef struct it_window {
    int ndim;    /* dims the window spans */
    int ncoords; /* length of a window index */
    int64_t size[IT_MAX_DIMS];
    int64_t stride[IT_MAX_DIMS];
    int64_t offset[IT_MAX_DIMS];
    int map[IT_MAX_DIMS]; /* coordinate per dim, or IT_MAP_FIXED */
} it_window;

/* A box: per dim the half-open range [start, stop) sampled every step. */
typedef struct it_box {
    int ndim;
    int64_t start[IT_MAX_DIMS];
    int64_t stop[IT_MAX_DIMS];
    int64_t step[IT_MAX_DIMS];
} it_box;

/* Exact floor and ceiling of a / b for b > 0, correct for negative a. */
int64_t it_floordiv(int64_t a, int64_t b);
int64_t it_ceildiv(int64_t a, int64_t b);

/* Samples a box takes along dim d: max(ceil((stop - start) / step), 0),
 * saturated at INT64_MAX. */
int64_t it_box_extent(const it_box *b, int d);
/* Product of the extents; IT_ETOOBIG if it exceeds INT64_MAX / 16. */
int it_box_numel(const it_box *b, int64_t *out);

/* Check a window: ndim and ncoords in range, sizes and strides > 0, all
 * parameters within IT_PARAM_LIMIT, map entries in [0, ncoords) or FIXED. */
int it_window_check(const it_window *w);

/* 1 if no two windows overlap: every window coordinate is followed by a dim
 * whose stride is at least the window's size there.  Each pixel then has at
 * most one window. */
int it_window_disjoint(const it_window *w);
/* Pixel bounds of the window with index coords (ncoords ints). */
int it_window_bounds(const it_window *w, const int64_t *coords,
                     int64_t *start, int64_t *stop);

/*
 * Domain of the region [start[d], stop[d]) of a tensor whose dims have the
 * given shape (IT_DIM_INFINITE or an extent).  Writes lo[c], count[c] for
 * each of w->ncoords coordinates and the product to *total (0 when nothing
 * intersects).  IT_ERANGE if the region lies beyond IT_COORD_LIMIT,
 * IT_ETOOBIG if the count overflows int64.
 */
int it_window_domain(const it_window *w, const int64_t *shape,
                     const int64_t *start, const int64_t *stop,
                     int64_t *lo, int64_t *count, int64_t *total);

/* The same without the count: the first and last index per coordinate
 * (lo[c] <= hi[c]; both 0 for a coordinate no dim follows), *any = 0 when
 * nothing intersects.  IT_ERANGE as above; never IT_ETOOBIG. */
int it_window_span(const it_window *w, const int64_t *shape, const int64_t *start, const int64_t *stop,
                   int64_t *lo, int64_t *hi, int *any);

/* An upper bound of the windows meeting one block of a grid (a tile): the
 * block spans extent[d] pixels along each infinite dim, anywhere on it, and
 * the whole of each finite dim.  0 when a finite dim holds no window;
 * saturated at INT64_MAX.  A tile's contribution bitmap needs no more bits. */
int64_t it_window_block_max(const it_window *w, const int64_t *shape, const int64_t *extent);

#ifdef __cplusplus
}
#endif
#endif
