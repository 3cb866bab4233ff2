/*
 * winset.c - sets of window indices, and walks over the tiles of a region.
 *
 * A window set holds tuples of k ints in insertion order plus an open
 * addressing table of their positions (linear probing, at most half full),
 * so the planner adds each missing window once however many tiles miss it.
 * Sorted (a stable bottom-up merge sort, skipped when the tuples already
 * are in order), a set is read as a list: the pending windows of a read are
 * computed in lexicographic order, and the claims of other threads
 * (plan.c) are searched by bisection.  The table is not used after sorting
 * or appending.
 *
 * A tile walk visits the tiles meeting a region in lexicographic order of
 * their coordinates: an odometer over the range of tile coordinates along
 * each infinite dim.  Regions are clipped to the finite dims first.
 */
#include "engine.h"

#include <string.h>

/* ---- window sets -------------------------------------------------------- */

void it__winset_free(winset *s)
{
    it_free(s->tuples);
    it_free(s->slots);
    memset(s, 0, sizeof *s);
}

static int winset_rehash(winset *s, int64_t nslots)
{
    int64_t *slots = it_calloc((size_t)nslots, sizeof *slots);
    if (!slots)
        return it_error_set(IT_ENOMEM, "out of memory planning windows");
    for (int64_t i = 0; i < s->n; i++) {
        uint64_t h = it__hash_coords(s->tuples + i * s->k, s->k);
        int64_t j = (int64_t)(h & (uint64_t)(nslots - 1));
        while (slots[j])
            j = (j + 1) & (nslots - 1);
        slots[j] = i + 1;
    }
    it_free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    return IT_OK;
}

int it__winset_add(winset *s, const int64_t *w)
{
    int rc;
    if ((s->n + 1) * 2 > s->nslots && (rc = winset_rehash(s, s->nslots ? s->nslots * 2 : 256)))
        return rc;
    uint64_t h = it__hash_coords(w, s->k);
    int64_t j = (int64_t)(h & (uint64_t)(s->nslots - 1));
    size_t sz = sizeof(int64_t) * (size_t)s->k;
    for (; s->slots[j]; j = (j + 1) & (s->nslots - 1))
        if (memcmp(s->tuples + (s->slots[j] - 1) * s->k, w, sz) == 0)
            return IT_OK;
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        int64_t *p = it_realloc(s->tuples, (size_t)cap * sz);
        if (!p)
            return it_error_set(IT_ENOMEM, "out of memory planning windows");
        s->tuples = p;
        s->cap = cap;
    }
    memcpy(s->tuples + s->n * s->k, w, sz);
    s->slots[j] = ++s->n;
    return IT_OK;
}

/* Sort the tuples lexicographically (bottom-up merge sort, stable). */
int it__winset_sort(winset *s)
{
    int64_t n = s->n, k = s->k;
    if (n < 2)
        return IT_OK;
    int sorted = 1;
    for (int64_t i = 1; i < n && sorted; i++)
        sorted = !it__lex_less(s->tuples + i * k, s->tuples + (i - 1) * k, (int)k);
    if (sorted)
        return IT_OK;
    size_t sz = sizeof(int64_t) * (size_t)k;
    int64_t *tmp = it_malloc((size_t)n * sz);
    if (!tmp)
        return it_error_set(IT_ENOMEM, "out of memory sorting windows");
    int64_t *a = s->tuples, *b = tmp;
    for (int64_t width = 1; width < n; width *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * width) {
            int64_t mid = IT_MIN(lo + width, n), hi = IT_MIN(lo + 2 * width, n);
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                if (it__lex_less(a + j * k, a + i * k, (int)k))
                    memcpy(b + (o++) * k, a + (j++) * k, sz);
                else
                    memcpy(b + (o++) * k, a + (i++) * k, sz);
            }
            while (i < mid)
                memcpy(b + (o++) * k, a + (i++) * k, sz);
            while (j < hi)
                memcpy(b + (o++) * k, a + (j++) * k, sz);
        }
        int64_t *x = a;
        a = b;
        b = x;
    }
    if (a != s->tuples)
        memcpy(s->tuples, a, (size_t)n * sz);
    it_free(tmp);
    /* the table now indexes stale positions; it is not used after sorting */
    return IT_OK;
}

/* 1 if w is in the sorted set s (binary search). */
int it__winset_has_sorted(const winset *s, const int64_t *w)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const int64_t *x = s->tuples + mid * s->k;
        if (it__lex_less(x, w, s->k))
            lo = mid + 1;
        else if (it__lex_less(w, x, s->k))
            hi = mid;
        else
            return 1;
    }
    return 0;
}

/* Add w at the end of a set read only as a sorted list (no table). */
int it__winset_append(winset *s, const int64_t *w)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 16;
        int64_t *p = it_realloc(s->tuples, sizeof(int64_t) * (size_t)(cap * s->k));
        if (!p)
            return it_error_set(IT_ENOMEM, "out of memory planning windows");
        s->tuples = p;
        s->cap = cap;
    }
    memcpy(s->tuples + s->n * s->k, w, sizeof(int64_t) * (size_t)s->k);
    s->n++;
    return IT_OK;
}

/* ---- walking the tiles of a region ------------------------------------- */

/* Tile coordinate ranges meeting [start, stop) along the infinite dims. */
static void tile_ranges(const it_tensor *t, const int64_t *start, const int64_t *stop,
                        int64_t *lo, int64_t *count)
{
    for (int k = 0; k < t->ninf; k++) {
        int d = t->inf_dim[k];
        lo[k] = it_floordiv(start[d], t->tshape[d]);
        count[k] = it_floordiv(stop[d] - 1, t->tshape[d]) - lo[k] + 1;
    }
}

void it__tiles_first(tile_walk *w, const it_tensor *t, const int64_t *start, const int64_t *stop)
{
    tile_ranges(t, start, stop, w->lo, w->n);
    memcpy(w->tc, w->lo, sizeof(int64_t) * (size_t)t->ninf);
    w->ninf = t->ninf;
}

int it__tiles_next(tile_walk *w) { return it__odometer_next(w->tc, w->lo, w->n, w->ninf); }

/* Clip a region to the finite dims, in place; 0 if nothing is left. */
int it__clip_finite(const it_tensor *t, int64_t *start, int64_t *stop)
{
    for (int d = 0; d < t->ndim; d++) {
        if (t->spec.shape[d] != IT_DIM_INFINITE) {
            start[d] = IT_MAX(start[d], 0);
            stop[d] = IT_MIN(stop[d], t->spec.shape[d]);
        }
        if (start[d] >= stop[d])
            return 0;
    }
    return 1;
}

/* Copy region number i of (start, stop) arrays and clip it; 0 if empty. */
int it__clipped_region(const it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t i,
                       int64_t *start, int64_t *stop)
{
    memcpy(start, starts + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(stop, stops + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
    return it__clip_finite(t, start, stop);
}
