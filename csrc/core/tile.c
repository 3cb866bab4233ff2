/*
 * tile.c - the tiles of a tensor: the hash table that holds them; creating,
 * loading (from a backend), writing back, evicting and freeing them; making
 * a lazy tile's values valid; and read contexts, which pin the tiles a read
 * uses.  engine.h describes the layout and the flow of a read.
 *
 * The table.  A tensor's tiles are chained in buckets, a power of two that
 * doubles when the tiles would outnumber them, by a hash of the tile's
 * coordinates along the infinite dims.  A tile is one allocation: the
 * struct, then its coordinates, its window domain (first index and count
 * per window coordinate) and its bitmap; its values are a buffer on the
 * tensor's device.
 *
 * Lazy tiles.  With a sum and a zero fill, a new tile is not filled: its
 * first windows are copied in rather than added (x + 0 is x), as long as
 * they do not overlap one another, which saves a pass over the tile and a
 * read of it per window when windows do not overlap.  Such a tile is
 * TILE_LAZY: only the pixels its contributed windows cover hold values.
 * Everything that reads a tile's values calls it__tile_values first, which
 * zeroes the rest (and clears the flag); a window overlapping an earlier one
 * does the same before it is added (contribute.c).
 *
 * Read contexts.  A read pins each tile once, the first time it touches it
 * (the tile keeps the context's serial number), and unpins them all when it
 * ends; then the cache trims back to its budgets (cache.c).  A tile dropped
 * by it_tensor_clear while pinned is an orphan, freed by its last unpin.
 *
 * Backends see host memory only: a device tile is staged through a host
 * buffer.  Their load and store callbacks may run arbitrary code (a Python
 * store), even reads of the same tensor or a clear, so the tile is pinned
 * around each call and checked afterwards.
 *
 * Unlocked loads.  A backend attached with IT_BACKEND_UNLOCKED_LOAD (the
 * HDF5 store) loads with the caller's lock released, so f runs in other
 * threads meanwhile.  The tile is in the table already, marked TILE_LOADING
 * and pinned: a thread that needs it waits (it__ready_tile) until the
 * loader has counted its bits, or dropped it (then it looks again), and
 * wakes through wait.c's epoch, bumped once the tile is in its final state.
 */
#include "engine.h"

#include <stdatomic.h>
#include <string.h>

static atomic_uint_fast64_t next_serial = 1;

static int tile_evict_cb(it_cache_entry *e);
static void tile_free_cb(it_cache_entry *e);
static int tile_check_cb(const it_cache_entry *e);

/* How the cache lets a tile go (cache.h). */
static const it_cache_class tile_class = {tile_evict_cb, tile_free_cb, tile_check_cb};

static it_tile *entry_tile(const it_cache_entry *e) { return (it_tile *)((char *)e - offsetof(it_tile, ce)); }

/* ---- the tile table ----------------------------------------------------- */

it_tile *it__tile_lookup(const it_tensor *t, const int64_t *coord)
{
    if (!t->nbuckets)
        return NULL;
    uint64_t h = it__hash_coords(coord, t->ninf);
    for (it_tile *p = t->buckets[h & (t->nbuckets - 1)]; p; p = p->hnext)
        if (p->hash == h && memcmp(p->coord, coord, sizeof(int64_t) * (size_t)t->ninf) == 0)
            return p;
    return NULL;
}

static int table_grow(it_tensor *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    it_tile **b = it_calloc(n, sizeof *b);
    if (!b)
        return it_error_set(IT_ENOMEM, "out of memory growing the tile table");
    for (size_t i = 0; i < t->nbuckets; i++) {
        it_tile *p = t->buckets[i];
        while (p) {
            it_tile *next = p->hnext;
            p->hnext = b[p->hash & (n - 1)];
            b[p->hash & (n - 1)] = p;
            p = next;
        }
    }
    it_free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return IT_OK;
}

void it__table_unlink(it_tensor *t, it_tile *tile)
{
    it_tile **pp = &t->buckets[tile->hash & (t->nbuckets - 1)];
    while (*pp != tile)
        pp = &(*pp)->hnext;
    *pp = tile->hnext;
    tile->hnext = NULL;
    if (tile->flags & TILE_DIRTY) {
        tile->flags &= ~TILE_DIRTY;
        t->ndirty--;
    }
    t->ntiles--;
    t->mutations++;
    t->bytes -= tile->ce.bytes;
    it__cache_remove(&tile->ce);
}

void it__deferred_free(it_deferred *d)
{
    it_buffer_free(d->part);
    it_free(d);
}

void it__tile_free(it_tile *tile)
{
    if (!tile)
        return;
    while (tile->deferred) {
        it_deferred *d = tile->deferred;
        tile->deferred = d->next;
        it__deferred_free(d);
    }
    it_buffer_free(tile->buf);
    it_free(tile);
}

void it__tile_evict(it_tile *tile)
{
    it__table_unlink(tile->owner, tile);
    it__tile_free(tile);
}

/* Parts of windows a tile keeps for a canonical sum (fold.c) are not in its
 * record.  When the cache evicts a tile whose record is written, they wait
 * here, by tile coordinates, and rejoin the tile when it is loaded again,
 * so no window is computed twice because of an eviction.  They are a strip
 * along the edge of what has been read, outside the cache's counts. */
typedef struct it_parked {
    struct it_parked *next;
    it_deferred *list;
    int64_t bytes;
    int64_t coord[];
} it_parked;

static void park_kept(it_tile *tile)
{
    it_tensor *t = tile->owner;
    if (!tile->deferred || !t->backend.store || (tile->flags & TILE_DIRTY))
        return;
    it_parked *p = it_malloc(sizeof *p + sizeof(int64_t) * (size_t)t->ninf);
    if (!p)
        return; /* the parts go with the tile: their windows are computed again */
    memcpy(p->coord, tile->coord, sizeof(int64_t) * (size_t)t->ninf);
    p->list = tile->deferred;
    p->bytes = tile->extra_bytes;
    tile->deferred = NULL;
    p->next = t->parked;
    t->parked = p;
    t->parked_bytes += p->bytes;
}

static void unpark_kept(it_tensor *t, it_tile *tile)
{
    for (it_parked **pp = &t->parked; *pp; pp = &(*pp)->next) {
        it_parked *p = *pp;
        if (memcmp(p->coord, tile->coord, sizeof(int64_t) * (size_t)t->ninf) != 0)
            continue;
        *pp = p->next;
        t->parked_bytes -= p->bytes;
        tile->deferred = p->list;
        it__tile_extra(t, tile, p->bytes);
        it_free(p);
        return;
    }
}

void it__parked_free(it_tensor *t)
{
    while (t->parked) {
        it_parked *p = t->parked;
        t->parked = p->next;
        while (p->list) {
            it_deferred *d = p->list;
            p->list = d->next;
            it__deferred_free(d);
        }
        it_free(p);
    }
    t->parked_bytes = 0;
}

static int tile_evict_cb(it_cache_entry *e)
{
    it_tile *tile = entry_tile(e);
    if (tile->flags & TILE_DIRTY)
        return it__tile_writeback(tile, 1);
    park_kept(tile);
    it__tile_evict(tile);
    return IT_OK;
}

static void tile_free_cb(it_cache_entry *e) { it__tile_free(entry_tile(e)); }

static int tile_check_cb(const it_cache_entry *e)
{
    const it_tile *tile = entry_tile(e);
    if (tile->owner->cache != e->cache)
        return it_error_set(IT_ESTATE, "a tile is counted by a cache not its tensor's");
    if (tile->ncontrib < 0 || tile->ncontrib > tile->ntotal)
        return it_error_set(IT_ESTATE, "a tile's contribution count is out of range");
    return IT_OK;
}

void it__mark_dirty(it_tensor *t, it_tile *tile)
{
    if (t->backend.store && !(tile->flags & TILE_DIRTY) && !it__tile_orphan(tile)) {
        tile->flags |= TILE_DIRTY;
        t->ndirty++;
    }
}

static void tile_io(const it_tensor *t, it_tile *tile, it_tile_io *io)
{
    io->ninf = t->ninf;
    io->coord = tile->coord;
    io->buf = tile->buf;
    io->ncoords = t->ncoords;
    io->dom_lo = tile->dom_lo;
    io->dom_n = tile->dom_n;
    io->bits = tile->bits;
    io->nbits = it__record_bits(t, tile);
}

/* Backends see host memory only.  For a tile on a device, *stage is a host
 * buffer of the tile's shape holding a copy of its values (to_host) or the
 * fill value; NULL for a host tile. */
static int stage_tile(const it_tensor *t, const it_tile *tile, int to_host, it_buffer **stage)
{
    *stage = NULL;
    if (!t->dev.ops)
        return IT_OK;
    int rc = it_buffer_create(t->spec.dtype, t->ndim, t->tshape, stage);
    if (rc)
        return rc;
    it_view host, dev;
    it_buffer_view(*stage, &host);
    it_buffer_view(tile->buf, &dev);
    if (to_host)
        rc = it_dev_apply(&t->dev, IT_COMBINE_COPY, &host, &dev);
    else
        rc = it_dev_fill(&it_host_device, &host, t->spec.fill);
    if (rc) {
        it_buffer_free(*stage);
        *stage = NULL;
    }
    return rc;
}

/* The store callback may run arbitrary code (a Python store), even reads
 * that contribute to this very tile or clear the tensor: the tile is pinned
 * meanwhile, is marked clean before the call (so a change during it marks
 * it dirty again), and is freed by the unpin if it was dropped. */
int it__tile_writeback(it_tile *tile, int evict)
{
    it_tensor *t = tile->owner;
    it_tile_io io;
    if (!(tile->flags & TILE_DIRTY))
        return IT_OK;
    it__tile_pin(tile);
    tile->flags &= ~TILE_DIRTY;
    t->ndirty--;
    it__tile_values(t, tile);
    tile_io(t, tile, &io);
    it_buffer *stage;
    int rc = it__folds_sync(t, tile);
    if (rc == IT_OK)
        rc = stage_tile(t, tile, 1, &stage);
    if (rc == IT_OK) {
        if (stage)
            io.buf = stage;
        rc = t->backend.store(t->bctx, &io);
        it_buffer_free(stage);
    }
    if (rc != IT_OK)
        it__mark_dirty(t, tile);
    int orphan = it__tile_orphan(tile);
    it__tile_unpin(tile);
    if (!orphan && evict && rc == IT_OK && tile->ce.pins == 0 && !(tile->flags & TILE_DIRTY)) {
        park_kept(tile);
        it__tile_evict(tile);
    }
    return rc;
}

/* Pixel box of a tile. */
void it__tile_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop)
{
    for (int d = 0, k = 0; d < t->ndim; d++) {
        if (t->spec.shape[d] == IT_DIM_INFINITE) {
            start[d] = coord[k] * t->tshape[d];
            stop[d] = start[d] + t->tshape[d];
            k++;
        } else {
            start[d] = 0;
            stop[d] = t->spec.shape[d];
        }
    }
}

/* The part of a tile's box where windows can lie: a tile may cross
 * +-2**62 (its extent need not divide 2**62), and no window lies beyond. */
void it__tile_window_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop)
{
    it__tile_box(t, coord, start, stop);
    for (int d = 0; d < t->ndim; d++) {
        start[d] = IT_MAX(start[d], -IT_COORD_LIMIT);
        stop[d] = IT_MIN(stop[d], IT_COORD_LIMIT);
    }
}

/* Create a tile (not pinned, not on the LRU list: the caller pins it); a
 * lazy one (see the top of this file) if lazy is set and the tensor allows it. */
static int tile_create(it_tensor *t, const int64_t *coord, int lazy, it_tile **out)
{
    /* it_window_domain leaves lo and n alone when no window meets the tile */
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS] = {0}, n[IT_MAX_DIMS] = {0}, total;
    int rc;
    *out = NULL;
    it__tile_window_box(t, coord, start, stop);
    if ((rc = it_window_domain(&t->spec.window, t->spec.shape, start, stop, lo, n, &total)))
        return rc;
    if (total > (((int64_t)1) << 36))
        return it_error_set(IT_ETOOBIG, "a tile meets %lld windows; use larger tiles or strides",
                            (long long)total);
    if (t->ntiles + 1 > (int64_t)t->nbuckets && (rc = table_grow(t)))
        return rc;
    size_t nw = (size_t)((total + 63) / 64);
    size_t ints = (size_t)t->ninf + 2 * (size_t)t->ncoords;
    int64_t cdim[IT_MAX_DIMS], ncells = t->counted ? it__tile_cells(t, coord, cdim) : 0;
    if (t->counted)
        ints += (size_t)t->ndim;
    /* the record a backend sees: the bitmap's words, then the fold counts */
    size_t nfw = (size_t)(ncells + 1) / 2;
    it_tile *tile = it_calloc(1, sizeof *tile + sizeof(int64_t) * ints + sizeof(uint64_t) * (nw + nfw));
    if (!tile)
        return it_error_set(IT_ENOMEM, "out of memory creating a tile");
    if ((rc = it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, t->tshape, &tile->buf))) {
        it_free(tile);
        return rc;
    }
    int zero = 1;
    for (size_t b = 0; b < t->elsize; b++)
        zero &= t->spec.fill[b] == 0;
    /* device memory is only ever filled through its table */
    int host = !t->dev.ops;
    if (host && lazy && zero && t->spec.combine == IT_COMBINE_SUM && t->ndim > 0) {
        tile->flags |= TILE_LAZY;
    } else if (host && zero) {
        memset(tile->buf->data, 0, tile->buf->nbytes);
    } else {
        it_view v;
        it_buffer_view(tile->buf, &v);
        if ((rc = it_dev_fill(&t->dev, &v, t->spec.fill))) {
            it_buffer_free(tile->buf);
            it_free(tile);
            return rc;
        }
    }
    tile->owner = t;
    tile->coord = (int64_t *)(tile + 1);
    tile->dom_lo = tile->coord + t->ninf;
    tile->dom_n = tile->dom_lo + t->ncoords;
    tile->bits = (uint64_t *)(tile->dom_n + t->ncoords + (t->counted ? t->ndim : 0));
    if (t->counted) {
        tile->cdim = tile->dom_n + t->ncoords;
        memcpy(tile->cdim, cdim, sizeof(int64_t) * (size_t)t->ndim);
        tile->folds = (uint32_t *)(tile->bits + nw);
        tile->ncells = ncells;
        if (t->canon)
            tile->flags |= TILE_PREFIX; /* no window yet: the empty prefix */
    }
    memcpy(tile->coord, coord, sizeof(int64_t) * (size_t)t->ninf);
    memcpy(tile->dom_lo, lo, sizeof(int64_t) * (size_t)t->ncoords);
    memcpy(tile->dom_n, n, sizeof(int64_t) * (size_t)t->ncoords);
    tile->ntotal = total;
    tile->ce.cls = &tile_class;
    tile->ce.owner = t;
    tile->ce.bytes = (int64_t)tile->buf->nbytes;
    tile->ce.weight = ((int64_t)tile->buf->nbytes + t->window_bytes - 1) / t->window_bytes;
    tile->ce.device = t->dev.ops != NULL;
    tile->hash = it__hash_coords(coord, t->ninf);
    size_t slot = tile->hash & (t->nbuckets - 1);
    tile->hnext = t->buckets[slot];
    t->buckets[slot] = tile;
    t->ntiles++;
    t->mutations++;
    t->bytes += tile->ce.bytes;
    it__cache_add(t->cache, &tile->ce);
    *out = tile;
    return IT_OK;
}

/* The part of window w inside tile (tile-relative [lo, hi) per dim); 0 if
 * they do not meet. */
static int window_in_tile(const it_tensor *t, const it_tile *tile, const int64_t *w, int64_t *lo, int64_t *hi)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS], ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
    if (it_window_bounds(&t->spec.window, w, ws, we) != IT_OK)
        return 0;
    it__tile_box(t, tile->coord, ts, te);
    for (int d = 0; d < t->ndim; d++) {
        lo[d] = IT_MAX(ws[d], ts[d]) - ts[d];
        hi[d] = IT_MIN(we[d], te[d]) - ts[d];
        if (lo[d] >= hi[d])
            return 0;
    }
    return 1;
}

/* The parts of the windows contributed to a lazy tile (at most
 * LAZY_MAX_WINDOWS), as boxes lo/hi of t->ndim ints each; returns how many. */
int it__lazy_boxes(const it_tensor *t, const it_tile *tile, int64_t *lo, int64_t *hi)
{
    int nb = 0, K = t->ncoords;
    int64_t nw = (tile->ntotal + 63) / 64;
    for (int64_t i = 0; i < nw; i++)
        for (uint64_t x = tile->bits[i]; x; x &= x - 1) {
            int64_t bit = i * 64 + __builtin_ctzll(x), w[IT_MAX_DIMS];
            for (int c = K - 1; c >= 0; c--) {
                w[c] = tile->dom_lo[c] + bit % tile->dom_n[c];
                bit /= tile->dom_n[c];
            }
            if (nb < LAZY_MAX_WINDOWS && window_in_tile(t, tile, w, lo + nb * t->ndim, hi + nb * t->ndim))
                nb++;
        }
    return nb;
}

/* Make every value of a lazy tile valid: zero what no contributed window
 * covers, row by row (a row: fixed indices on all dims but the last). */
void it__tile_values(const it_tensor *t, it_tile *tile)
{
    if (!(tile->flags & TILE_LAZY))
        return;
    int64_t lo[LAZY_MAX_WINDOWS * IT_MAX_DIMS], hi[LAZY_MAX_WINDOWS * IT_MAX_DIMS];
    int nb = it__lazy_boxes(t, tile, lo, hi), L = t->ndim - 1;
    int64_t row[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0}, covered = 0, all = 1;
    size_t es = t->elsize;
    for (int k = 0; k < nb; k++) { /* the boxes are disjoint */
        int64_t v = 1;
        for (int d = 0; d < t->ndim; d++)
            v *= hi[k * t->ndim + d] - lo[k * t->ndim + d];
        covered += v;
    }
    for (int d = 0; d < t->ndim; d++)
        all *= t->tshape[d];
    if (covered == all) {
        tile->flags &= ~TILE_LAZY;
        return;
    }
    do {
        int64_t a[LAZY_MAX_WINDOWS], b[LAZY_MAX_WINDOWS];
        int n = 0;
        for (int k = 0; k < nb; k++) {
            const int64_t *bl = lo + k * t->ndim, *bh = hi + k * t->ndim;
            int in = 1;
            for (int d = 0; d < L && in; d++)
                in = bl[d] <= row[d] && row[d] < bh[d];
            if (!in)
                continue;
            int j = n++; /* insertion sort by start */
            for (; j > 0 && a[j - 1] > bl[L]; j--) {
                a[j] = a[j - 1];
                b[j] = b[j - 1];
            }
            a[j] = bl[L];
            b[j] = bh[L];
        }
        char *base = tile->buf->data;
        for (int d = 0; d < L; d++)
            base += row[d] * t->tstrides[d];
        int64_t x = 0;
        for (int k = 0; k <= n; k++) {
            int64_t end = k < n ? a[k] : t->tshape[L];
            if (end > x)
                memset(base + x * t->tstrides[L], 0, (size_t)(end - x) * es);
            if (k < n)
                x = IT_MAX(x, b[k]);
        }
    } while (it__odometer_next(row, zero, t->tshape, L));
    tile->flags &= ~TILE_LAZY;
}

/* ---- read contexts ------------------------------------------------------ */

int it__ctx_pin(read_ctx *ctx, it_tile *tile)
{
    if (tile->pin_serial == ctx->serial)
        return IT_OK;
    if (ctx->npins == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 64;
        it_tile **p = it_realloc(ctx->pins, cap * sizeof *p);
        if (!p)
            return it_error_set(IT_ENOMEM, "out of memory pinning tiles");
        ctx->pins = p;
        ctx->cap = cap;
    }
    it__tile_pin(tile);
    tile->pin_serial = ctx->serial;
    ctx->pins[ctx->npins++] = tile;
    return IT_OK;
}

void it__ctx_init(read_ctx *ctx, int flags)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->serial = atomic_fetch_add(&next_serial, 1);
    ctx->flags = flags;
}

void it__ctx_release(read_ctx *ctx)
{
    it_cache *last = NULL;
    for (size_t i = ctx->npins; i-- > 0;) {
        it_tile *tile = ctx->pins[i];
        it_cache *c = tile->owner->cache;
        if (tile->pin_serial == ctx->serial)
            tile->pin_serial = 0;
        if (tile->mark == ctx->serial)
            tile->mark = 0; /* no longer being completed */
        it__tile_unpin(tile);
        if (c != last) {
            if (last)
                it_cache_trim(last);
            last = c;
        }
    }
    if (last)
        it_cache_trim(last);
    it_free(ctx->pins);
    ctx->pins = NULL;
    ctx->npins = ctx->cap = 0;
}

/* A tile missing from the cache, from the backend: *out is the loaded tile,
 * or a fresh empty one if none is stored (pinned once, not on the LRU
 * list).  The empty tile is kept even when the caller only looks (plans):
 * dropping it would make every later look load it again, and a planner
 * that looks again on every bit of progress would keep the tile loading
 * while the threads that would fill it wait for the load to end.  The load
 * callback may run arbitrary code, hence the pin (see it__tile_writeback). */
static int tile_load(it_tensor *t, const int64_t *coord, it_tile **out)
{
    it_tile *tile;
    it_tile_io io;
    int found = 0, rc;
    *out = NULL;
    if ((rc = tile_create(t, coord, 0, &tile)))
        return rc;
    it__tile_pin(tile);
    tile_io(t, tile, &io);
    it_buffer *stage = NULL;
    /* a tile no window can touch is never stored */
    int unlocked = 0;
    if (tile->ntotal > 0 && (rc = stage_tile(t, tile, 0, &stage)) == IT_OK) {
        if (stage)
            io.buf = stage;
        unlocked = (t->bflags & IT_BACKEND_UNLOCKED_LOAD) != 0;
        if (unlocked) {
            tile->flags |= TILE_LOADING;
            void *token = it__unlock();
            rc = t->backend.load(t->bctx, &io, &found);
            it__relock(token);
        } else {
            rc = t->backend.load(t->bctx, &io, &found);
        }
    }
    if (rc == IT_OK && it__tile_orphan(tile))
        rc = it_error_set(IT_ESTATE, CLEARED_MSG);
    if (rc == IT_OK && found && stage) {
        it_view host, dev;
        it_buffer_view(stage, &host);
        it_buffer_view(tile->buf, &dev);
        rc = it_dev_apply(&t->dev, IT_COMBINE_COPY, &dev, &host);
    }
    it_buffer_free(stage);
    if (rc == IT_OK && found) {
        int64_t n = 0, nw = (tile->ntotal + 63) / 64;
        if (tile->ntotal % 64)
            tile->bits[nw - 1] &= ((uint64_t)1 << (tile->ntotal % 64)) - 1;
        for (int64_t i = 0; i < nw; i++)
            n += __builtin_popcountll(tile->bits[i]);
        tile->ncontrib = n;
        tile->flags &= ~TILE_PREFIX; /* its counts come with it */
        rc = it__folds_loaded(t, tile);
    }
    if (rc == IT_OK && t->parked && !it__tile_orphan(tile))
        unpark_kept(t, tile);
    int keep = rc == IT_OK;
    /* never keep a tile that failed to load: written back later, it would
     * replace the stored one */
    if (!keep && !it__tile_orphan(tile))
        it__table_unlink(t, tile); /* pinned: an orphan now */
    if (unlocked) { /* final now: wake the threads waiting for it */
        tile->flags &= ~TILE_LOADING;
        it__wait_progress();
    }
    if (!keep) {
        it__tile_unpin(tile);
        return rc;
    }
    *out = tile;
    return IT_OK;
}

int it__ready_tile(read_ctx *ctx, it_tensor *t, const int64_t *coord, it_tile **out)
{
    for (;;) {
        it_tile *tile = it__tile_lookup(t, coord);
        *out = tile;
        if (!tile)
            return IT_OK;
        if (!(tile->flags & TILE_LOADING))
            return it__ctx_pin(ctx, tile);
        /* pinned while we sleep; a failed load leaves it an orphan, which
         * the unpin frees, and we look again */
        it__tile_pin(tile);
        for (;;) {
            uint64_t seen = it__wait_epoch();
            if (!(tile->flags & TILE_LOADING))
                break;
            it__wait_until_moved(seen);
        }
        it__tile_unpin(tile);
    }
}

/* Find or create (and pin) a tile. */
int it__get_tile(read_ctx *ctx, it_tensor *t, const int64_t *coord, int create, it_tile **out)
{
    it_tile *tile;
    int rc;
    *out = NULL;
    if ((rc = it__ready_tile(ctx, t, coord, &tile)))
        return rc;
    if (tile) {
        *out = tile;
        return IT_OK;
    }
    if (!tile && t->backend.load) {
        if ((rc = tile_load(t, coord, &tile)))
            return rc;
        rc = it__ctx_pin(ctx, tile);
        it__tile_unpin(tile); /* the context's pin holds it now */
        if (rc)
            return rc;
        it_cache_trim(t->cache);
    } else if (!tile) {
        if (!create)
            return IT_OK;
        if ((rc = tile_create(t, coord, 1, &tile)))
            return rc;
        if ((rc = it__ctx_pin(ctx, tile))) {
            it__cache_list(&tile->ce); /* leave it cached and evictable */
            it_cache_trim(t->cache);
            return rc;
        }
        it_cache_trim(t->cache);
    }
    *out = tile;
    return IT_OK;
}

/* ---- copies on the tensor's device -------------------------------------- */

/* A view of a part of a tile (tile strides) or of a window output. */
static void part_view(const it_tensor *t, it_view *v, const void *data, const int64_t *shape,
                      const int64_t *strides)
{
    it_view_make(v, &t->dev, (void *)data, t->spec.dtype, t->ndim, shape, strides);
}

/* dst (op)= src over shape, both on the tensor's device. */
int it__dev_apply(const it_tensor *t, it_combine op, const int64_t *shape, void *dst,
                  const int64_t *dst_strides, const void *src, const int64_t *src_strides)
{
    if (!t->dev.ops) /* the hot path of host tensors: no views to build */
        return it_combine_nd(op, t->spec.dtype, t->ndim, shape, dst, dst_strides, src, src_strides);
    it_view dv, sv;
    part_view(t, &dv, dst, shape, dst_strides);
    part_view(t, &sv, src, shape, src_strides);
    return it_dev_apply(&t->dev, op, &dv, &sv);
}
