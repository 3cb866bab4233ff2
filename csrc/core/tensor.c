/*
 * tensor.c - tensor nodes, their tiles, and the read engine.
 *
 * Layout.  A tile covers the whole extent of every finite dim and
 * tile_shape[d] pixels of every infinite dim, stored C-contiguous in the
 * tensor's dim order.  Tiles live in a per-tensor hash table keyed by their
 * coordinates along the infinite dims (a tensor without infinite dims has one
 * tile, keyed by the empty tuple).
 *
 * Contribution records.  The windows that can touch a tile form a product
 * of ranges (its "domain", it_geom.h); a bitmap over that product records
 * which have been added.  Adding a window to a tile is one kernel call plus
 * setting its bit, with no callback in between, so a tile never holds half a
 * window, and a window whose bit is set is never added again: not after an
 * eviction (the tile is gone with its bitmap), not when two reads race to
 * compute the same window, not after a failure in the middle of a batch.
 *
 * Reading a box.  it_tensor_read opens a read context (a serial number and
 * the list of tiles it pinned), then:
 *   1. plan: walk the tiles meeting the box; skip complete ones (every window
 *      of the domain present); for the others collect the windows that meet
 *      the box there and are missing from the tile, into a set;
 *   2. order the pending windows lexicographically; ensure, recursively and
 *      in the same context, every upstream region they need, so each
 *      upstream window is computed at most once per read (its tiles stay
 *      pinned until the read ends);
 *   3. compute in batches: assemble each batch's argument regions into fresh
 *      buffers, call ops->compute, add each output to the tiles it touches;
 *   4. assemble the box from the tiles into a new buffer.
 *
 * Blends.  Sum, max and min do not depend on order, so a window is added to
 * every tile it touches, creating tiles as needed.  A custom blend is a fold
 * whose answer depends on order; the 0.3 answer is the fold over covering
 * windows in lexicographic order.  To give it whatever the order of reads,
 * a custom-blend read completes every tile it touches (tile->mark), adding
 * windows in lexicographic order.  A window that also touches a tile the read
 * is not completing leaves its values for that tile on the tile's deferred
 * list, sorted by window index; when a later read completes the tile, those
 * parts are folded in at their place in the order, so no window is computed
 * twice.  Custom-blend tiles are about one window wide, so completing them
 * costs at most one window beyond the read's edge per side.
 *
 * Lazy tiles.  With a sum and a zero fill, a new tile is not filled: its
 * first windows are copied in rather than added (x + 0 is x), as long as
 * they do not overlap one another, which saves a pass over the tile and a
 * read of it per window when windows do not overlap.  Such a tile is
 * TILE_LAZY: only the pixels its contributed windows cover hold values.
 * Everything that reads a tile's values calls tile_values first, which
 * zeroes the rest (and clears the flag); a window overlapping an earlier one
 * does the same before it is added.
 *
 * Re-entrancy.  f may read other tensors: that is a new top-level read with
 * its own context.  A thread-local stack of tensors whose f is running
 * catches f reading its own tensor (directly or through other tensors).
 */
#include "internal.h"
#include "it_pool.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define TILE_TARGET_ELEMS 8192
/* Device tiles are bigger: each operation on device memory costs a kernel
 * launch (microseconds), whatever its size, so fewer, larger pieces per
 * window and per read win where host tiles favour the CPU caches. */
#define TILE_TARGET_DEVICE_ELEMS (1 << 20)
#define TILE_MAX_BYTES (((int64_t)1) << 40)

struct it_tensor {
    int refs;
    it_cache *cache;
    it_tensor_spec spec; /* spec.args / spec.arg_windows point at the arrays below */
    it_tensor **args;
    it_window *arg_windows;
    it_tensor_ops ops;
    it_device dev; /* where tiles and reads live */
    void *user;
    size_t elsize;
    int ndim, ncoords, ninf;
    int inf_dim[IT_MAX_DIMS];
    int64_t tshape[IT_MAX_DIMS];
    int64_t tstrides[IT_MAX_DIMS]; /* bytes */
    int64_t window_bytes;
    it_tile **buckets;
    size_t nbuckets;
    int64_t ntiles;
    int64_t bytes;
    uint64_t generation; /* bumped by it_tensor_clear: reads in flight notice */
    uint64_t mutations;  /* bumped by every change to tiles: retype notices */
    it_backend backend;  /* backend.load == NULL: none */
    void *bctx;
    int bflags;
    int64_t ndirty;
    struct claim *claims; /* windows threads are computing right now */
    it_owner busy;        /* custom blends: the thread completing tiles */
    int busy_depth;
};

#define CLEARED_MSG "the cache of a tensor this read uses was cleared during the read"
#define BUSY_MSG "another read is combining these tiles with a custom blend right now; read again"

typedef struct read_ctx {
    uint64_t serial;
    int flags;
    it_tile **pins;
    size_t npins, cap;
} read_ctx;

typedef struct frame {
    const it_tensor *t;
    struct frame *up;
} frame;

static _Thread_local frame *computing;
static atomic_uint_fast64_t next_serial = 1;

it_cache *it__tensor_cache(const it_tensor *t) { return t->cache; }

/* ---- hashing and the tile table ---------------------------------------- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_coords(const int64_t *c, int n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++)
        h = mix(h ^ (uint64_t)c[i]);
    return h;
}

static it_tile *lookup(const it_tensor *t, const int64_t *coord)
{
    if (!t->nbuckets)
        return NULL;
    uint64_t h = hash_coords(coord, t->ninf);
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

static void table_unlink(it_tensor *t, it_tile *tile)
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
    t->bytes -= (int64_t)tile->buf->nbytes + tile->extra_bytes;
    it__cache_account(t->cache, tile, -1);
}

static void deferred_free(it_deferred *d)
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
        deferred_free(d);
    }
    it_buffer_free(tile->buf);
    it_free(tile);
}

void it__tile_evict(it_tile *tile)
{
    it__lru_remove(tile->owner->cache, tile);
    table_unlink(tile->owner, tile);
    it__tile_free(tile);
}

static void mark_dirty(it_tensor *t, it_tile *tile)
{
    if (t->backend.store && !(tile->flags & (TILE_DIRTY | TILE_ORPHAN))) {
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
    io->nbits = tile->ntotal;
}

static void tile_values(const it_tensor *t, it_tile *tile);

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
    tile_values(t, tile);
    tile_io(t, tile, &io);
    it_buffer *stage;
    int rc = stage_tile(t, tile, 1, &stage);
    if (rc == IT_OK) {
        if (stage)
            io.buf = stage;
        rc = t->backend.store(t->bctx, &io);
        it_buffer_free(stage);
    }
    if (rc != IT_OK)
        mark_dirty(t, tile);
    int orphan = (tile->flags & TILE_ORPHAN) != 0;
    it__tile_unpin(tile);
    if (!orphan && evict && rc == IT_OK && tile->pins == 0 && !(tile->flags & TILE_DIRTY))
        it__tile_evict(tile);
    return rc;
}

/* Pixel box of a tile. */
static void tile_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop)
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
static void tile_window_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop)
{
    tile_box(t, coord, start, stop);
    for (int d = 0; d < t->ndim; d++) {
        start[d] = IT_MAX(start[d], -IT_COORD_LIMIT);
        stop[d] = IT_MIN(stop[d], IT_COORD_LIMIT);
    }
}

/* Windows a lazy tile may take before it is filled: tile_values keeps
 * their boxes on the stack. */
#define LAZY_MAX_WINDOWS 32

/* Create a tile (not pinned, not on the LRU list: the caller pins it); a
 * lazy one (see above) if lazy is set and the tensor allows it. */
static int tile_create(it_tensor *t, const int64_t *coord, int lazy, it_tile **out)
{
    /* it_window_domain leaves lo and n alone when no window meets the tile */
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS] = {0}, n[IT_MAX_DIMS] = {0}, total;
    int rc;
    *out = NULL;
    tile_window_box(t, coord, start, stop);
    if ((rc = it_window_domain(&t->spec.window, t->spec.shape, start, stop, lo, n, &total)))
        return rc;
    if (total > (((int64_t)1) << 36))
        return it_error_set(IT_ETOOBIG, "a tile meets %lld windows; use larger tiles or strides",
                            (long long)total);
    if (t->ntiles + 1 > (int64_t)t->nbuckets && (rc = table_grow(t)))
        return rc;
    size_t nw = (size_t)((total + 63) / 64);
    size_t ints = (size_t)t->ninf + 2 * (size_t)t->ncoords;
    it_tile *tile = it_calloc(1, sizeof *tile + sizeof(int64_t) * ints + sizeof(uint64_t) * nw);
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
    tile->bits = (uint64_t *)(tile->dom_n + t->ncoords);
    memcpy(tile->coord, coord, sizeof(int64_t) * (size_t)t->ninf);
    memcpy(tile->dom_lo, lo, sizeof(int64_t) * (size_t)t->ncoords);
    memcpy(tile->dom_n, n, sizeof(int64_t) * (size_t)t->ncoords);
    tile->ntotal = total;
    tile->weight = ((int64_t)tile->buf->nbytes + t->window_bytes - 1) / t->window_bytes;
    tile->hash = hash_coords(coord, t->ninf);
    size_t slot = tile->hash & (t->nbuckets - 1);
    tile->hnext = t->buckets[slot];
    t->buckets[slot] = tile;
    t->ntiles++;
    t->mutations++;
    t->bytes += (int64_t)tile->buf->nbytes;
    it__cache_account(t->cache, tile, +1);
    *out = tile;
    return IT_OK;
}

/* Advance idx (n entries, lo/count ranges) lexicographically; 0 at the end. */
static int odometer_next(int64_t *idx, const int64_t *lo, const int64_t *count, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (++idx[i] < lo[i] + count[i])
            return 1;
        idx[i] = lo[i];
    }
    return 0;
}

/* Bit index of window w in tile's domain, or -1 if w is not in it. */
static int64_t bit_index(const it_tensor *t, const it_tile *tile, const int64_t *w)
{
    int64_t idx = 0;
    for (int c = 0; c < t->ncoords; c++) {
        int64_t r = w[c] - tile->dom_lo[c];
        if (r < 0 || r >= tile->dom_n[c])
            return -1;
        idx = idx * tile->dom_n[c] + r;
    }
    return idx;
}

static int has_bit(const it_tile *tile, int64_t i)
{
    return (tile->bits[i >> 6] >> (i & 63)) & 1u;
}

/* The part of window w inside tile (tile-relative [lo, hi) per dim); 0 if
 * they do not meet. */
static int window_in_tile(const it_tensor *t, const it_tile *tile, const int64_t *w, int64_t *lo, int64_t *hi)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS], ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
    if (it_window_bounds(&t->spec.window, w, ws, we) != IT_OK)
        return 0;
    tile_box(t, tile->coord, ts, te);
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
static int lazy_boxes(const it_tensor *t, const it_tile *tile, int64_t *lo, int64_t *hi)
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
static void tile_values(const it_tensor *t, it_tile *tile)
{
    if (!(tile->flags & TILE_LAZY))
        return;
    int64_t lo[LAZY_MAX_WINDOWS * IT_MAX_DIMS], hi[LAZY_MAX_WINDOWS * IT_MAX_DIMS];
    int nb = lazy_boxes(t, tile, lo, hi), L = t->ndim - 1;
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
    } while (odometer_next(row, zero, t->tshape, L));
    tile->flags &= ~TILE_LAZY;
}

/* ---- read contexts ------------------------------------------------------ */

static int ctx_pin(read_ctx *ctx, it_tile *tile)
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

static void ctx_init(read_ctx *ctx, int flags)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->serial = atomic_fetch_add(&next_serial, 1);
    ctx->flags = flags;
}

static void ctx_release(read_ctx *ctx)
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

/* A tile missing from the cache, from the backend: *out is the loaded tile
 * (pinned once, not on the LRU list), or a fresh one if none is stored and
 * create is set, or NULL.  The load callback may run arbitrary code, hence
 * the pin (see it__tile_writeback). */
static int tile_load(it_tensor *t, const int64_t *coord, int create, it_tile **out)
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
    if (tile->ntotal > 0 && (rc = stage_tile(t, tile, 0, &stage)) == IT_OK) {
        if (stage)
            io.buf = stage;
        rc = t->backend.load(t->bctx, &io, &found);
    }
    if (rc == IT_OK && (tile->flags & TILE_ORPHAN))
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
    }
    if (rc != IT_OK || (!found && !create)) {
        /* never keep a tile that failed to load: written back later, it
         * would replace the stored one */
        if (!(tile->flags & TILE_ORPHAN)) {
            table_unlink(t, tile);
            tile->flags |= TILE_ORPHAN;
        }
        it__tile_unpin(tile);
        return rc;
    }
    *out = tile;
    return IT_OK;
}

/* Find or create (and pin) a tile. */
static int get_tile(read_ctx *ctx, it_tensor *t, const int64_t *coord, int create, it_tile **out)
{
    it_tile *tile = lookup(t, coord);
    int rc;
    *out = NULL;
    if (!tile && t->backend.load) {
        if ((rc = tile_load(t, coord, create, &tile)) || !tile)
            return rc;
        rc = ctx_pin(ctx, tile);
        it__tile_unpin(tile); /* the context's pin holds it now */
        if (rc)
            return rc;
        it_cache_trim(t->cache);
    } else if (!tile) {
        if (!create)
            return IT_OK;
        if ((rc = tile_create(t, coord, 1, &tile)))
            return rc;
        if ((rc = ctx_pin(ctx, tile))) {
            it__lru_push(t->cache, tile); /* leave it cached and evictable */
            it_cache_trim(t->cache);
            return rc;
        }
        it_cache_trim(t->cache);
    } else if ((rc = ctx_pin(ctx, tile))) {
        return rc;
    }
    *out = tile;
    return IT_OK;
}

/* ---- window sets -------------------------------------------------------- */

/* A set of window indices: the tuples in insertion order plus an open
 * addressing table of positions. */
typedef struct winset {
    int k;
    int64_t n, cap;   /* tuples stored / room */
    int64_t *tuples;  /* n * k */
    int64_t *slots;   /* table of positions + 1 (0 = empty) */
    int64_t nslots;
} winset;

static void winset_free(winset *s)
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
        uint64_t h = hash_coords(s->tuples + i * s->k, s->k);
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

static int winset_add(winset *s, const int64_t *w)
{
    int rc;
    if ((s->n + 1) * 2 > s->nslots && (rc = winset_rehash(s, s->nslots ? s->nslots * 2 : 256)))
        return rc;
    uint64_t h = hash_coords(w, s->k);
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

static int lex_less(const int64_t *a, const int64_t *b, int k)
{
    for (int i = 0; i < k; i++)
        if (a[i] != b[i])
            return a[i] < b[i];
    return 0;
}

/* Sort the tuples lexicographically (bottom-up merge sort, stable). */
static int winset_sort(winset *s)
{
    int64_t n = s->n, k = s->k;
    if (n < 2)
        return IT_OK;
    int sorted = 1;
    for (int64_t i = 1; i < n && sorted; i++)
        sorted = !lex_less(s->tuples + i * k, s->tuples + (i - 1) * k, (int)k);
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
                if (lex_less(a + j * k, a + i * k, (int)k))
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

/* ---- odometer over a product of ranges --------------------------------- */

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

/* Walks the tiles meeting a region in lexicographic order of their
 * coordinates:  tiles_first(&w, ...); do { ... w.tc ... } while (tiles_next(&w)); */
typedef struct tile_walk {
    int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS];
    int64_t tc[IT_MAX_DIMS]; /* the current tile */
    int ninf;
} tile_walk;

static void tiles_first(tile_walk *w, const it_tensor *t, const int64_t *start, const int64_t *stop)
{
    tile_ranges(t, start, stop, w->lo, w->n);
    memcpy(w->tc, w->lo, sizeof(int64_t) * (size_t)t->ninf);
    w->ninf = t->ninf;
}

static int tiles_next(tile_walk *w) { return odometer_next(w->tc, w->lo, w->n, w->ninf); }

/* Clip a region to the finite dims, in place; 0 if nothing is left. */
static int clip_finite(const it_tensor *t, int64_t *start, int64_t *stop)
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
static int clipped_region(const it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t i,
                          int64_t *start, int64_t *stop)
{
    memcpy(start, starts + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(stop, stops + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
    return clip_finite(t, start, stop);
}

/* ---- contributing a window --------------------------------------------- */

/* 1 if a window's part [a, a + shape) (absolute; ts: the tile's origin) can
 * be copied into a lazy tile, which it then keeps lazy; otherwise the tile's
 * values are made valid first and the window must be added. */
static int lazy_takes(const it_tensor *t, it_tile *tile, const int64_t *ts, const int64_t *a,
                      const int64_t *shape)
{
    if (!(tile->flags & TILE_LAZY))
        return 0;
    int64_t lo[LAZY_MAX_WINDOWS * IT_MAX_DIMS], hi[LAZY_MAX_WINDOWS * IT_MAX_DIMS];
    int nb = tile->ncontrib < LAZY_MAX_WINDOWS ? lazy_boxes(t, tile, lo, hi) : -1;
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
        tile_values(t, tile);
        return 0;
    }
    return 1;
}

static int check_output(const it_tensor *t, const it_view *v)
{
    if (v->device_type != t->dev.type || v->device_id != t->dev.id)
        return it_error_set(IT_EDEVICE, "window output is on device %d:%d, expected %d:%d",
                            v->device_type, v->device_id, t->dev.type, t->dev.id);
    if (v->dtype != t->spec.dtype)
        return it_error_set(IT_EDTYPE, "window output has dtype %s, expected %s",
                            it_dtype_name(v->dtype), it_dtype_name(t->spec.dtype));
    if (v->ndim != t->ndim)
        return it_error_set(IT_ESHAPE, "window output has %d dims, expected %d", v->ndim, t->ndim);
    for (int d = 0; d < t->ndim; d++)
        if (v->shape[d] != t->spec.window.size[d])
            return it_error_set(IT_ESHAPE, "window output has extent %lld on dim %d, expected %lld",
                                (long long)v->shape[d], d, (long long)t->spec.window.size[d]);
    return IT_OK;
}

/* A view of a part of a tile (tile strides) or of a window output. */
static void part_view(const it_tensor *t, it_view *v, const void *data, const int64_t *shape,
                      const int64_t *strides)
{
    it_view_make(v, &t->dev, (void *)data, t->spec.dtype, t->ndim, shape, strides);
}

/* dst (op)= src over shape, both on the tensor's device. */
static int dev_apply(const it_tensor *t, it_combine op, const int64_t *shape, void *dst,
                     const int64_t *dst_strides, const void *src, const int64_t *src_strides)
{
    if (!t->dev.ops) /* the hot path of host tensors: no views to build */
        return it_combine_nd(op, t->spec.dtype, t->ndim, shape, dst, dst_strides, src, src_strides);
    it_view dv, sv;
    part_view(t, &dv, dst, shape, dst_strides);
    part_view(t, &sv, src, shape, src_strides);
    return it_dev_apply(&t->dev, op, &dv, &sv);
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
        (rc = dev_apply(t, IT_COMBINE_COPY, shape, existing->data, existing->strides, dst, t->tstrides)) ||
        (rc = dev_apply(t, IT_COMBINE_COPY, shape, incoming->data, incoming->strides, src, src_strides)))
        goto fail;
    if ((rc = t->ops.blend(t->user, &existing, &incoming, &result, &owner)))
        goto fail;
    rc = IT_OK;
    if (result.dtype != t->spec.dtype || result.ndim != t->ndim ||
        result.device_type != t->dev.type || result.device_id != t->dev.id)
        rc = it_error_set(IT_ESHAPE, "blend returned a result of the wrong dtype, rank or device");
    for (int d = 0; rc == IT_OK && d < t->ndim; d++)
        if (result.shape[d] != shape[d])
            rc = it_error_set(IT_ESHAPE, "blend returned a result of the wrong shape");
    if (rc == IT_OK)
        rc = dev_apply(t, IT_COMBINE_COPY, shape, dst, t->tstrides, result.data, result.strides);
    t->ops.release_view(t->user, owner);
fail:
    it_buffer_free(existing);
    it_buffer_free(incoming);
    return rc;
}

/* Change a cached tile's byte count by delta (deferred parts come and go). */
static void tile_extra(it_tensor *t, it_tile *tile, int64_t delta)
{
    tile->extra_bytes += delta;
    if (!(tile->flags & TILE_ORPHAN)) {
        t->bytes += delta;
        *it__cache_counter(t->cache, tile) += delta;
    }
}

static int deferred_has(const it_tensor *t, const it_tile *tile, const int64_t *w)
{
    for (const it_deferred *d = tile->deferred; d; d = d->next)
        if (memcmp(d->coords, w, sizeof(int64_t) * (size_t)t->ncoords) == 0)
            return 1;
    return 0;
}

/* Keep window w's values on [a, b) (absolute pixels) for tile. */
static int defer_part(it_tensor *t, it_tile *tile, const int64_t *w, const int64_t *ts,
                      const int64_t *shape, const int64_t *a, const char *src, const int64_t *src_strides)
{
    size_t K = (size_t)t->ncoords, nd = (size_t)t->ndim;
    it_deferred *d = it_malloc(sizeof *d + sizeof(int64_t) * (K + nd));
    int rc;
    if (!d)
        return it_error_set(IT_ENOMEM, "out of memory keeping a window for later");
    if ((rc = it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, &d->part)) ||
        (rc = dev_apply(t, IT_COMBINE_COPY, shape, d->part->data, d->part->strides, src, src_strides))) {
        it_buffer_free(d->part);
        it_free(d);
        return rc;
    }
    memcpy(d->coords, w, sizeof(int64_t) * K);
    d->start = d->coords + K;
    for (size_t i = 0; i < nd; i++)
        d->start[i] = a[i] - ts[i];
    it_deferred **pp = &tile->deferred;
    while (*pp && lex_less((*pp)->coords, w, t->ncoords))
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    tile_extra(t, tile, (int64_t)d->part->capacity);
    t->mutations++;
    return IT_OK;
}

/* Fold the tile's deferred parts whose window comes before `before` (all of
 * them when before is NULL) into the tile, in order. */
static int flush_deferred(it_tensor *t, it_tile *tile, const int64_t *before)
{
    while (tile->deferred && (!before || lex_less(tile->deferred->coords, before, t->ncoords))) {
        /* unlinked before the blend callback: nothing refers to it then */
        it_deferred *d = tile->deferred;
        tile->deferred = d->next;
        tile_extra(t, tile, -(int64_t)d->part->capacity);
        t->mutations++;
        int64_t bit = bit_index(t, tile, d->coords);
        int rc = IT_OK;
        if (bit >= 0 && !has_bit(tile, bit)) {
            char *dst = tile->buf->data;
            for (int i = 0; i < t->ndim; i++)
                dst += d->start[i] * t->tstrides[i];
            /* on failure the window is simply missing again: recomputed later */
            if ((rc = blend_custom(t, dst, d->part->shape, d->part->data, d->part->strides)) == IT_OK) {
                tile->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
                tile->ncontrib++;
                mark_dirty(t, tile);
            }
        }
        deferred_free(d);
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
static int contribute(read_ctx *ctx, it_tensor *t, const int64_t *w, const it_view *v, int only_marked)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
    int rc;
    if ((rc = check_output(t, v)) || (rc = it_window_bounds(&t->spec.window, w, ws, we)))
        return rc;
    tile_walk tw;
    tiles_first(&tw, t, ws, we);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        int completing = 0;
        if ((rc = get_tile(ctx, t, tc, 1, &tile)))
            return rc;
        if (only_marked && tile->mark != 0 && tile->mark != ctx->serial)
            return it_error_set(IT_ESTATE, BUSY_MSG);
        if (only_marked && tile->mark == ctx->serial) {
            completing = 1;
            /* parts of earlier windows go first; a part of w itself is
             * superseded by the output in hand */
            if ((rc = flush_deferred(t, tile, w)))
                return rc;
            if (tile->deferred && !lex_less(w, tile->deferred->coords, t->ncoords)) {
                it_deferred *d = tile->deferred;
                tile->deferred = d->next;
                tile_extra(t, tile, -(int64_t)d->part->capacity);
                deferred_free(d);
            }
        }
        int64_t bit = bit_index(t, tile, w);
        if (bit < 0)
            return it_error_set(IT_ESTATE, "internal error: window outside its tile's domain");
        if (has_bit(tile, bit))
            continue;
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], shape[IT_MAX_DIMS], a[IT_MAX_DIMS];
        char *dst = tile->buf->data;
        const char *src = v->data;
        tile_box(t, tc, ts, te);
        for (int d = 0; d < t->ndim; d++) {
            a[d] = IT_MAX(ws[d], ts[d]);
            shape[d] = IT_MIN(we[d], te[d]) - a[d];
            dst += (a[d] - ts[d]) * t->tstrides[d];
            src += (a[d] - ws[d]) * v->strides[d];
        }
        if (only_marked && !completing) {
            if (!deferred_has(t, tile, w) &&
                (rc = defer_part(t, tile, w, ts, shape, a, src, v->strides)))
                return rc;
            continue;
        }
        if (t->spec.combine == IT_COMBINE_CUSTOM)
            rc = blend_custom(t, dst, shape, src, v->strides);
        else if (lazy_takes(t, tile, ts, a, shape))
            it_copy_nd(t->elsize, t->ndim, shape, dst, t->tstrides, src, v->strides);
        else
            rc = dev_apply(t, t->spec.combine, shape, dst, t->tstrides, src, v->strides);
        if (rc)
            return rc;
        tile->bits[bit >> 6] |= (uint64_t)1 << (bit & 63);
        tile->ncontrib++;
        t->mutations++;
        mark_dirty(t, tile);
    } while (tiles_next(&tw));
    return IT_OK;
}

/* ---- the parts of a box that hold samples -------------------------------- */

/*
 * A read with a large step samples few pixels from a long span; planning and
 * assembling the whole span would visit every tile (and window) between the
 * samples.  So a box is cut into "regions": along an infinite dim with step
 * > 1, one segment per tile that holds samples ([first sample, last sample +
 * 1) inside that tile); along other dims, the whole sampled span.  The
 * regions are the product of the segments.  A box of step 1 is one region.
 */
typedef struct regions {
    int64_t n;
    int64_t *start, *stop; /* n * ndim */
    int64_t one_start[IT_MAX_DIMS], one_stop[IT_MAX_DIMS];
} regions;

static void regions_free(regions *r)
{
    if (r->start != r->one_start || r->stop != r->one_stop) {
        it_free(r->start);
        it_free(r->stop);
    }
    r->start = r->stop = NULL;
}

/* Segments of dim d: one per tile holding samples when the dim is infinite
 * and strided, else the whole sampled span.  Writes up to max segments into
 * a/b (when given) and returns how many there are. */
static int64_t dim_segments(const it_tensor *t, const it_box *box, int d, int64_t *a, int64_t *b, int64_t max)
{
    int64_t n = it_box_extent(box, d), step = box->step[d], first = box->start[d];
    int64_t last = first + (n - 1) * step; /* a sample: within the box */
    if (step == 1 || t->spec.shape[d] != IT_DIM_INFINITE) {
        if (a && max > 0) {
            a[0] = first;
            b[0] = last + 1;
        }
        return 1;
    }
    int64_t T = t->tshape[d], count = 0;
    for (int64_t i = 0; i < n; count++) { /* i: first sample of the segment */
        int64_t pos = first + i * step;
        /* samples before the end of pos's tile; (tile end - first) fits:
         * both lie within 2^62 + T of the origin */
        int64_t k = IT_MIN(it_ceildiv((it_floordiv(pos, T) + 1) * T - first, step), n);
        if (a && count < max) {
            a[count] = pos;
            b[count] = first + (k - 1) * step + 1;
        }
        i = k;
    }
    return count;
}

/* Cut a non-empty box into regions (see above). */
static int box_regions(const it_tensor *t, const it_box *box, regions *r)
{
    int64_t nseg[IT_MAX_DIMS], total = 1;
    int64_t *sa[IT_MAX_DIMS] = {0}, *sb[IT_MAX_DIMS] = {0};
    int rc = IT_OK;
    r->start = r->stop = NULL;
    for (int d = 0; d < t->ndim; d++) {
        nseg[d] = dim_segments(t, box, d, NULL, NULL, 0);
        if (total > (((int64_t)1) << 32) / nseg[d])
            return it_error_set(IT_ETOOBIG, "the requested region is too fragmented to plan");
        total *= nseg[d];
    }
    r->n = total;
    if (total == 1) {
        r->start = r->one_start;
        r->stop = r->one_stop;
    } else {
        r->start = it_malloc(sizeof(int64_t) * (size_t)(total * t->ndim));
        r->stop = it_malloc(sizeof(int64_t) * (size_t)(total * t->ndim));
    }
    for (int d = 0; d < t->ndim && r->start && r->stop; d++) {
        sa[d] = it_malloc(sizeof(int64_t) * (size_t)nseg[d]);
        sb[d] = it_malloc(sizeof(int64_t) * (size_t)nseg[d]);
        if (!sa[d] || !sb[d])
            break;
        dim_segments(t, box, d, sa[d], sb[d], nseg[d]);
    }
    for (int d = 0; d < t->ndim; d++)
        if (!sa[d] || !sb[d])
            rc = it_error_set(IT_ENOMEM, "out of memory planning a strided read");
    if (rc == IT_OK) {
        int64_t idx[IT_MAX_DIMS] = {0}, zero[IT_MAX_DIMS] = {0};
        for (int64_t i = 0; i < total; i++) {
            for (int d = 0; d < t->ndim; d++) {
                r->start[i * t->ndim + d] = sa[d][idx[d]];
                r->stop[i * t->ndim + d] = sb[d][idx[d]];
            }
            odometer_next(idx, zero, nseg, t->ndim);
        }
    }
    for (int d = 0; d < t->ndim; d++) {
        it_free(sa[d]);
        it_free(sb[d]);
    }
    if (rc)
        regions_free(r);
    return rc;
}

/* ---- assembling a region ------------------------------------------------ */

/* Samples of a dim (start, step) at positions below x >= start; unsigned,
 * as x - start may exceed INT64_MAX for a box spanning the whole range. */
static int64_t samples_before(int64_t x, int64_t start, int64_t step)
{
    uint64_t len = (uint64_t)x - (uint64_t)start;
    uint64_t n = len / (uint64_t)step + (len % (uint64_t)step != 0);
    return n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

/* The copies that assemble a box: one per tile, gathered first so that a
 * large read can spread them over the thread pool (they touch disjoint parts
 * of the result and only read tiles the read has pinned). */
typedef struct copy_job {
    const char *src;
    char *dst;
    int64_t n[IT_MAX_DIMS];  /* samples per dim */
    int64_t ss[IT_MAX_DIMS]; /* source strides, bytes */
} copy_job;

typedef struct copy_plan {
    const it_tensor *t;
    const it_buffer *buf;
    copy_job *jobs; /* local until more are needed */
    int64_t n, cap;
    int64_t bytes;
    copy_job local[4];
} copy_plan;

static void run_copy(void *ctx, int64_t j)
{
    const copy_plan *p = ctx;
    const copy_job *job = &p->jobs[j];
    it_copy_nd(p->t->elsize, p->t->ndim, job->n, job->dst, p->buf->strides, job->src, job->ss);
}

/* One copy on a device tensor (device ops are not spread over the pool). */
static int dev_copy(const copy_plan *p, const copy_job *job)
{
    return dev_apply(p->t, IT_COMBINE_COPY, job->n, job->dst, p->buf->strides, job->src, job->ss);
}

/* Queue one copy, or do it now if the queue cannot grow. */
static int plan_copy(copy_plan *p, const copy_job *job)
{
    if (p->n == p->cap) {
        int64_t cap = p->cap * 4;
        copy_job *jobs = p->jobs == p->local ? it_malloc(sizeof *jobs * (size_t)cap)
                                             : it_realloc(p->jobs, sizeof *jobs * (size_t)cap);
        if (!jobs) {
            if (p->t->dev.ops)
                return dev_copy(p, job);
            copy_plan one = {.t = p->t, .buf = p->buf, .jobs = (copy_job *)job, .n = 1};
            run_copy(&one, 0);
            return IT_OK;
        }
        if (p->jobs == p->local)
            memcpy(jobs, p->local, sizeof p->local);
        p->jobs = jobs;
        p->cap = cap;
    }
    p->jobs[p->n++] = *job;
    int64_t bytes = (int64_t)p->t->elsize;
    for (int d = 0; d < p->t->ndim; d++)
        bytes *= job->n[d];
    p->bytes += bytes;
    return IT_OK;
}

/* Queue the copies of the samples of box inside [start, stop) out of t's
 * tiles into the plan's buffer. */
static int copy_tiles(copy_plan *p, const it_box *box, const int64_t *start, const int64_t *stop)
{
    int rc = IT_OK;
    const it_tensor *t = p->t;
    const it_buffer *buf = p->buf;
    tile_walk tw;
    tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile = lookup(t, tc);
        if (!tile)
            continue;
        tile_values(t, tile);
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
        copy_job job;
        job.src = tile->buf->data;
        job.dst = buf->data;
        int skip = 0;
        tile_box(t, tc, ts, te);
        for (int d = 0; d < t->ndim; d++) {
            int64_t step = box->step[d];
            int64_t lo = IT_MAX(ts[d], start[d]), hi = IT_MIN(te[d], stop[d]);
            int64_t i0 = samples_before(lo, box->start[d], step);
            int64_t i1 = IT_MIN(buf->shape[d], samples_before(hi, box->start[d], step));
            if (i0 >= i1) {
                skip = 1;
                break;
            }
            job.n[d] = i1 - i0;
            job.src += (box->start[d] + i0 * step - ts[d]) * t->tstrides[d];
            job.dst += i0 * buf->strides[d];
            /* a step longer than the tile leaves one sample here: its stride
             * is never used (and the product could overflow) */
            job.ss[d] = job.n[d] > 1 ? t->tstrides[d] * step : 0;
        }
        if (!skip && (rc = plan_copy(p, &job)))
            return rc;
    } while (tiles_next(&tw));
    return IT_OK;
}

/* 1 if some tile meeting [start, stop) is missing. */
static int tiles_missing(const it_tensor *t, const int64_t *start, const int64_t *stop)
{
    tile_walk tw;
    tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        if (!lookup(t, tc))
            return 1;
    } while (tiles_next(&tw));
    return 0;
}

/* Copy the box (with steps) out of t's tiles into buf (shaped like the box);
 * pixels outside the finite dims or in missing tiles hold the fill value. */
static int assemble_into(it_tensor *t, const it_box *box, const regions *rg, it_buffer *buf)
{
    const int64_t *shape = buf->shape;
    int rc = IT_OK;
    for (int d = 0; d < t->ndim; d++)
        if (shape[d] == 0)
            return IT_OK;
    int need_fill = 0;
    for (int64_t i = 0; i < rg->n && !need_fill; i++) {
        int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
        memcpy(start, rg->start + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
        memcpy(stop, rg->stop + i * t->ndim, sizeof(int64_t) * (size_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            if (t->spec.shape[d] != IT_DIM_INFINITE && (start[d] < 0 || stop[d] > t->spec.shape[d]))
                need_fill = 1;
        need_fill = need_fill || !clip_finite(t, start, stop) || tiles_missing(t, start, stop);
    }
    if (need_fill) {
        it_view v;
        it_buffer_view(buf, &v);
        if ((rc = it_dev_fill(&t->dev, &v, t->spec.fill)))
            return rc;
    }
    copy_plan plan = {.t = t, .buf = buf, .cap = 4};
    plan.jobs = plan.local;
    for (int64_t i = 0; i < rg->n && rc == IT_OK; i++) {
        int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
        if (clipped_region(t, rg->start, rg->stop, i, start, stop))
            rc = copy_tiles(&plan, box, start, stop);
    }
    if (rc == IT_OK && t->dev.ops) {
        for (int64_t j = 0; j < plan.n && rc == IT_OK; j++) /* in the device's order */
            rc = dev_copy(&plan, &plan.jobs[j]);
    } else if (rc == IT_OK && plan.bytes >= it_pool_min_bytes()) {
        it_parallel_for(plan.n, run_copy, &plan);
    } else if (rc == IT_OK) {
        for (int64_t j = 0; j < plan.n; j++)
            run_copy(&plan, j);
    }
    if (plan.jobs != plan.local)
        it_free(plan.jobs);
    return rc;
}

/* A new buffer shaped like the box. */
static int box_buffer(const it_tensor *t, const it_box *box, it_buffer **out)
{
    int64_t shape[IT_MAX_DIMS] = {0};
    for (int d = 0; d < t->ndim; d++)
        shape[d] = it_box_extent(box, d);
    return it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, out);
}

/* Assemble a step-1 box (an argument region) into a new buffer. */
static int assemble_box(it_tensor *t, const it_box *box, it_buffer **out)
{
    regions rg;
    int rc = box_buffer(t, box, out);
    if (rc)
        return rc;
    rg.n = 1;
    rg.start = rg.one_start;
    rg.stop = rg.one_stop;
    memcpy(rg.one_start, box->start, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(rg.one_stop, box->stop, sizeof(int64_t) * (size_t)t->ndim);
    if ((rc = assemble_into(t, box, &rg, *out))) {
        it_buffer_free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- the planner -------------------------------------------------------- */

static int in_computing_stack(const it_tensor *t)
{
    for (const frame *f = computing; f; f = f->up)
        if (f->t == t)
            return 1;
    return 0;
}

/* Add to pending the windows of region [start, stop) missing from tile
 * (tile may be NULL: then every window of the region is missing). */
static int collect_missing(const it_tensor *t, const it_tile *tile,
                           const int64_t *start, const int64_t *stop, winset *pending)
{
    int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS], w[IT_MAX_DIMS], total;
    int rc;
    if ((rc = it_window_domain(&t->spec.window, t->spec.shape, start, stop, lo, n, &total)))
        return rc;
    if (total == 0)
        return IT_OK;
    memcpy(w, lo, sizeof(int64_t) * (size_t)t->ncoords);
    do {
        if (tile) {
            int64_t bit = bit_index(t, tile, w);
            if ((bit >= 0 && has_bit(tile, bit)) || (tile->deferred && deferred_has(t, tile, w)))
                continue;
        }
        if ((rc = winset_add(pending, w)))
            return rc;
    } while (odometer_next(w, lo, n, t->ncoords));
    return IT_OK;
}

/* Plan one region: pin its tiles and collect missing windows into pending.
 * With pending NULL, only pin the region's tiles and count those that exist
 * (*present). */
static int plan_region(read_ctx *ctx, it_tensor *t, const int64_t *rstart, const int64_t *rstop,
                       winset *pending, int64_t *present)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
    int custom = t->spec.combine == IT_COMBINE_CUSTOM;
    int rc;
    if (!clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    tile_walk tw;
    tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
        if ((rc = get_tile(ctx, t, tc, 0, &tile)))
            return rc;
        if (!pending) {
            *present += tile != NULL;
            continue;
        }
        if (tile && tile->ncontrib == tile->ntotal)
            continue;
        tile_window_box(t, tc, ts, te);
        if (custom && !(ctx->flags & IT_READ_NO_COMPUTE)) {
            if (tile && tile->mark != 0 && tile->mark != ctx->serial)
                return it_error_set(IT_ESTATE, BUSY_MSG);
            if (!tile) {
                int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS], total;
                if ((rc = it_window_domain(&t->spec.window, t->spec.shape, ts, te, lo, n, &total)))
                    return rc;
                if (total == 0)
                    continue;
                if ((rc = get_tile(ctx, t, tc, 1, &tile)))
                    return rc;
            }
            tile->mark = ctx->serial;
        } else if (!custom) {
            for (int d = 0; d < t->ndim; d++) {
                ts[d] = IT_MAX(ts[d], start[d]);
                te[d] = IT_MIN(te[d], stop[d]);
            }
        }
        if ((rc = collect_missing(t, tile, ts, te, pending)))
            return rc;
    } while (tiles_next(&tw));
    return IT_OK;
}

static int ensure(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions);

/* Fill an empty set with every window meeting the region [rstart, rstop)
 * (clipped to the finite dims), in lexicographic order, without hashing:
 * the set is only read as a sorted list afterwards. */
static int winset_domain(winset *s, const it_tensor *t, const int64_t *rstart, const int64_t *rstop)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS], n[IT_MAX_DIMS], total;
    int rc;
    if (!clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    if ((rc = it_window_domain(&t->spec.window, t->spec.shape, start, stop, lo, n, &total)))
        return rc;
    if (total == 0)
        return IT_OK;
    if (total > INT64_MAX / 8 / s->k ||
        !(s->tuples = it_malloc(sizeof(int64_t) * (size_t)(total * s->k))))
        return it_error_set(IT_ENOMEM, "out of memory planning %lld windows", (long long)total);
    s->n = s->cap = total;
    int64_t *w = s->tuples;
    memcpy(w, lo, sizeof(int64_t) * (size_t)s->k);
    for (int64_t i = 1; i < total; i++) {
        memcpy(w + s->k, w, sizeof(int64_t) * (size_t)s->k);
        w += s->k;
        odometer_next(w, lo, n, s->k);
    }
    return IT_OK;
}

/* Compute the pending windows (sorted) of t, in batches. */
static int compute_pending(read_ctx *ctx, it_tensor *t, const winset *pending)
{
    int K = t->ncoords, nargs = t->spec.nargs, rc = IT_OK;
    int64_t bs = t->spec.batch_size, npend = pending->n;
    it_buffer **argbufs = NULL;
    it_view *outs = NULL;
    int64_t *astart = NULL, *astop = NULL;
    uint64_t arg_gen[IT_MAX_ARGS];

    /* upstream first: every region the pending windows read, in one plan */
    if (nargs > 0) {
        astart = it_malloc(sizeof(int64_t) * (size_t)(npend * IT_MAX_DIMS));
        astop = it_malloc(sizeof(int64_t) * (size_t)(npend * IT_MAX_DIMS));
        if (!astart || !astop) {
            rc = it_error_set(IT_ENOMEM, "out of memory planning upstream reads");
            goto done;
        }
        for (int a = 0; a < nargs; a++) /* before any upstream f runs */
            arg_gen[a] = t->args[a]->generation;
        for (int a = 0; a < nargs; a++) {
            const it_window *aw = &t->arg_windows[a];
            for (int64_t i = 0; i < npend; i++)
                if ((rc = it_window_bounds(aw, pending->tuples + i * K, astart + i * aw->ndim,
                                           astop + i * aw->ndim)))
                    goto done;
            if ((rc = ensure(ctx, t->args[a], astart, astop, npend)))
                goto done;
        }
    }

    int64_t nb = IT_MIN(bs, npend);
    argbufs = it_calloc((size_t)(nargs * nb) + 1, sizeof *argbufs);
    outs = it_calloc((size_t)nb, sizeof *outs);
    if (!argbufs || !outs) {
        rc = it_error_set(IT_ENOMEM, "out of memory preparing a batch");
        goto done;
    }
    for (int64_t first = 0; first < npend; first += bs) {
        int64_t n = IT_MIN(bs, npend - first);
        const int64_t *coords = pending->tuples + first * K;
        for (int a = 0; a < nargs; a++) {
            const it_window *aw = &t->arg_windows[a];
            if (t->args[a]->generation != arg_gen[a]) {
                rc = it_error_set(IT_ESTATE, CLEARED_MSG);
                goto done;
            }
            for (int64_t i = 0; i < n; i++) {
                it_box box;
                box.ndim = aw->ndim;
                if ((rc = it_window_bounds(aw, coords + i * K, box.start, box.stop)))
                    goto done;
                for (int d = 0; d < aw->ndim; d++)
                    box.step[d] = 1;
                if ((rc = assemble_box(t->args[a], &box, &argbufs[a * n + i])))
                    goto done;
            }
        }
        it_batch batch = {n, K, coords, nargs, argbufs, outs, NULL};
        frame fr = {t, computing};
        computing = &fr;
        rc = t->ops.compute(t->user, &batch);
        computing = fr.up;
        for (int64_t i = 0; i < (int64_t)nargs * n; i++) {
            it_buffer_free(argbufs[i]);
            argbufs[i] = NULL;
        }
        if (rc)
            goto done;
        for (int64_t i = 0; i < n && rc == IT_OK; i++)
            rc = contribute(ctx, t, coords + i * K, &outs[i], t->spec.combine == IT_COMBINE_CUSTOM);
        t->ops.release(t->user, &batch);
        if (rc)
            goto done;
    }
done:
    if (argbufs)
        for (int64_t i = 0; i < (int64_t)nargs * nb; i++)
            it_buffer_free(argbufs[i]);
    it_free(argbufs);
    it_free(outs);
    it_free(astart);
    it_free(astop);
    return rc;
}

/* Custom blends: fold the remaining deferred parts into every tile of the
 * region this context is completing, and check that each tile is complete.
 * A tile can only be left incomplete when another thread's read of the same
 * tiles took over its completion while f ran; that read completes it, and
 * this one reports IT_ESTATE rather than assemble partial values. */
static int finish_region(read_ctx *ctx, it_tensor *t, const int64_t *rstart, const int64_t *rstop)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
    int rc;
    if (!clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    tile_walk tw;
    tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile = lookup(t, tc);
        if (!tile)
            continue;
        if (tile->mark == ctx->serial && tile->deferred && (rc = flush_deferred(t, tile, NULL)))
            return rc;
        if (tile->ncontrib != tile->ntotal)
            return it_error_set(IT_ESTATE, "a concurrent read of the same tiles is combining them "
                                           "(custom blend); read again");
    } while (tiles_next(&tw));
    return IT_OK;
}

/* ---- claims: windows a thread is computing -------------------------------
 *
 * Between planning and contributing, a read calls f, which may let other
 * threads run (the caller's lock is released inside callbacks).  So that
 * each window is computed once, a read claims the windows it is about to
 * compute (the sorted pending set, registered on the tensor until its batches
 * are done); a read that plans windows someone else claimed computes the
 * rest, then waits for progress and plans again (wait.c).  A thread that
 * fails releases its claims like one that succeeds: the windows are missing
 * again, and the next plan computes them.
 *
 * No deadlock: a thread waits only for claims on the tensor it is ensuring,
 * after computing its own claims there, or (inside them) for tensors
 * upstream; the holder of a claim waits only upstream of it.  Waits follow
 * the graph, which has no cycle, and a thread meeting its own claim is
 * reading its own tensor through its upstreams: IT_ECYCLE, as before.
 * f may also read tensors that are not its args, and two tensors whose f
 * read each other form a cycle the graph does not show.  So a thread about
 * to wait first follows the waits its wait would join (the threads holding
 * the claims it needs, the claims those threads wait for, ...); if they lead
 * back to itself, waiting would never end, and it reports IT_ECYCLE instead,
 * which is what one thread alone gets for such a cycle.
 *
 * Custom blends complete tiles in window order, so one thread at a time
 * completes a custom-blend tensor's tiles (t->busy, for the whole of
 * ensure); the others wait for it, then find those tiles complete.
 */
typedef struct claim {
    struct claim *next;
    it_owner owner;
    const winset *ws; /* sorted */
} claim;

static int winset_has_sorted(const winset *s, const int64_t *w)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        const int64_t *x = s->tuples + mid * s->k;
        if (lex_less(x, w, s->k))
            lo = mid + 1;
        else if (lex_less(w, x, s->k))
            hi = mid;
        else
            return 1;
    }
    return 0;
}

/* Add w at the end of a set read only as a sorted list (no table). */
static int winset_append(winset *s, const int64_t *w)
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

/* Drop from the sorted pending set the windows another thread claimed
 * (*foreign: some were; they go to dropped, in order).  The order of the
 * rest is kept. */
static int drop_claimed(const it_tensor *t, winset *pending, winset *dropped, int *foreign)
{
    int64_t K = pending->k, keep = 0;
    int any = 0;
    *foreign = 0;
    for (const claim *c = t->claims; c && !any; c = c->next)
        any = it__owner_live(c->owner);
    if (!any)
        return IT_OK;
    for (int64_t i = 0; i < pending->n; i++) {
        const int64_t *w = pending->tuples + i * K;
        int taken = 0;
        for (const claim *c = t->claims; c && !taken; c = c->next) {
            if (!it__owner_live(c->owner) || !winset_has_sorted(c->ws, w))
                continue;
            if (it__owner_is_self(c->owner))
                return it_error_set(IT_ECYCLE, "f of a tensor reads that same tensor (a cycle)");
            taken = 1;
        }
        if (taken) {
            *foreign = 1;
            int rc = winset_append(dropped, w);
            if (rc)
                return rc;
        } else {
            if (keep != i)
                memmove(pending->tuples + keep * K, w, sizeof(int64_t) * (size_t)K);
            keep++;
        }
    }
    pending->n = keep;
    return IT_OK;
}

/* A thread asleep in ensure_windows: the windows of t it waits for.  On its
 * stack, listed while it sleeps; read and changed under the caller's lock. */
typedef struct waiter {
    struct waiter *next;
    it_owner owner;
    const it_tensor *t;
    const winset *wants; /* sorted */
} waiter;
static waiter *waiters;

static int sets_meet(const winset *a, const winset *b)
{
    for (int64_t i = 0; i < a->n; i++)
        if (winset_has_sorted(b, a->tuples + i * a->k))
            return 1;
    return 0;
}

/* 1 if the threads computing windows of t this thread wants wait, directly
 * or through others, for this thread. */
static int wait_closes_cycle(const it_tensor *t, const winset *wants, int depth)
{
    if (depth > 64) /* more threads in one chain than anyone runs */
        return 0;
    for (const claim *c = t->claims; c; c = c->next) {
        if (!it__owner_live(c->owner) || !sets_meet(wants, c->ws))
            continue;
        if (it__owner_is_self(c->owner))
            return 1;
        for (const waiter *w = waiters; w; w = w->next)
            if (it__owner_live(w->owner) && w->owner.thread == c->owner.thread &&
                wait_closes_cycle(w->t, w->wants, depth + 1))
                return 1;
    }
    return 0;
}

static int compute_claimed(read_ctx *ctx, it_tensor *t, const winset *mine)
{
    claim c = {t->claims, it__owner_self(), mine};
    t->claims = &c;
    int rc = compute_pending(ctx, t, mine);
    claim **p = &t->claims;
    while (*p != &c)
        p = &(*p)->next;
    *p = c.next;
    it__wait_progress();
    return rc;
}

static int busy_enter(it_tensor *t, uint64_t gen)
{
    for (;;) {
        if (!it__owner_live(t->busy)) {
            t->busy = it__owner_self();
            t->busy_depth = 1;
            return IT_OK;
        }
        if (it__owner_is_self(t->busy)) {
            t->busy_depth++;
            return IT_OK;
        }
        it__wait_until_moved(it__wait_epoch());
        if (t->generation != gen)
            return it_error_set(IT_ESTATE, CLEARED_MSG);
    }
}

/* Leave t to the other threads: drop this context's marks on its tiles
 * (they are complete, or this read failed; either way the next reader of
 * an incomplete one takes it over). */
static void busy_leave(read_ctx *ctx, it_tensor *t)
{
    if (--t->busy_depth > 0)
        return;
    for (size_t i = 0; i < ctx->npins; i++)
        if (ctx->pins[i]->owner == t && ctx->pins[i]->mark == ctx->serial)
            ctx->pins[i]->mark = 0;
    t->busy = (it_owner){0};
    it__wait_progress();
}

/* Plan the regions into pending (sorted). */
static int plan(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions,
                winset *pending)
{
    int rc;
    int64_t present = 0;
    if (nregions == 1 && t->spec.combine != IT_COMBINE_CUSTOM) {
        /* the common cold read: none of the region's tiles exists, so every
         * window meeting the region is pending, in lexicographic order */
        if ((rc = plan_region(ctx, t, starts, stops, NULL, &present)))
            return rc;
        if (present == 0)
            return winset_domain(pending, t, starts, stops);
    }
    for (int64_t r = 0; r < nregions; r++)
        if ((rc = plan_region(ctx, t, starts + r * t->ndim, stops + r * t->ndim, pending, NULL)))
            return rc;
    return winset_sort(pending);
}

static int ensure_windows(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops,
                          int64_t nregions, uint64_t gen)
{
    for (;;) {
        winset pending = {0}, dropped = {0};
        int foreign = 0, rc;
        pending.k = dropped.k = t->ncoords;
        uint64_t seen = it__wait_epoch();
        if ((rc = plan(ctx, t, starts, stops, nregions, &pending)) || pending.n == 0)
            goto next;
        if (ctx->flags & IT_READ_NO_COMPUTE) {
            rc = it_error_set(IT_ESTATE, "the region needs %lld window(s) that have not been computed",
                              (long long)pending.n);
        } else if (t->bflags & IT_BACKEND_READONLY) {
            rc = it_error_set(IT_ESTATE, "the region needs %lld window(s) that are not stored, and the "
                              "store is read-only (mode 'r'): open it for writing to compute them",
                              (long long)pending.n);
        } else if (in_computing_stack(t)) {
            rc = it_error_set(IT_ECYCLE, "f of a tensor reads that same tensor (a cycle)");
        } else if ((rc = drop_claimed(t, &pending, &dropped, &foreign)) == IT_OK && pending.n > 0) {
            rc = compute_claimed(ctx, t, &pending);
        }
        if (rc == IT_OK && foreign && wait_closes_cycle(t, &dropped, 0))
            rc = it_error_set(IT_ECYCLE, "f of a tensor reads that same tensor (a cycle, through "
                                         "tensors that another thread is computing)");
        if (rc == IT_OK && foreign) {
            waiter me = {waiters, it__owner_self(), t, &dropped};
            waiters = &me;
            it__wait_until_moved(seen);
            waiter **p = &waiters;
            while (*p != &me)
                p = &(*p)->next;
            *p = me.next;
        }
    next:
        winset_free(&pending);
        winset_free(&dropped);
        if (rc || !foreign)
            return rc;
        if (t->generation != gen)
            return it_error_set(IT_ESTATE, CLEARED_MSG);
    }
}

static int ensure(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions)
{
    uint64_t gen = t->generation;
    int custom = t->spec.combine == IT_COMBINE_CUSTOM, rc;
    if (custom && (rc = busy_enter(t, gen)))
        return rc;
    rc = ensure_windows(ctx, t, starts, stops, nregions, gen);
    if (custom)
        for (int64_t r = 0; r < nregions && rc == IT_OK; r++)
            rc = finish_region(ctx, t, starts + r * t->ndim, stops + r * t->ndim);
    if (custom)
        busy_leave(ctx, t);
    if (rc == IT_OK && t->generation != gen)
        rc = it_error_set(IT_ESTATE, CLEARED_MSG);
    return rc;
}

/* ---- reach: every coordinate a read will use, checked before it starts ----
 *
 * Windows meeting a box near +-2**62 stick out of it, their arguments' windows
 * further, and the geometry refuses coordinates past the limit.  Found in
 * the middle of a read, that refusal would come after some f already ran, so
 * a read first follows the box through the graph: the windows of each tensor
 * meeting its region (a custom blend's: of the whole tiles it completes),
 * their bounds, and the regions of the arguments those windows read.  Window
 * bounds grow with the window index, so the two corner windows of the
 * domain bound everything.  A tensor met again with a region inside the one
 * already followed is not followed again (diamonds).
 */
#define REACH_MAX_DEPTH 1000
#define REACH_MEMO 32

typedef struct reach_memo {
    int n;
    const it_tensor *t[REACH_MEMO];
    int64_t start[REACH_MEMO][IT_MAX_DIMS], stop[REACH_MEMO][IT_MAX_DIMS];
} reach_memo;

/* 1 if [start, stop) of t lies inside a region already followed; otherwise
 * grows that region to cover it (and the caller follows the union). */
static int reach_seen(reach_memo *m, const it_tensor *t, int64_t *start, int64_t *stop)
{
    for (int i = 0; i < m->n; i++) {
        if (m->t[i] != t)
            continue;
        int inside = 1;
        for (int d = 0; d < t->ndim; d++)
            inside &= m->start[i][d] <= start[d] && stop[d] <= m->stop[i][d];
        if (inside)
            return 1;
        for (int d = 0; d < t->ndim; d++) {
            start[d] = m->start[i][d] = IT_MIN(start[d], m->start[i][d]);
            stop[d] = m->stop[i][d] = IT_MAX(stop[d], m->stop[i][d]);
        }
        return 0;
    }
    if (m->n < REACH_MEMO) {
        m->t[m->n] = t;
        memcpy(m->start[m->n], start, sizeof(int64_t) * (size_t)t->ndim);
        memcpy(m->stop[m->n], stop, sizeof(int64_t) * (size_t)t->ndim);
        m->n++;
    }
    return 0;
}

static int reach_check(const it_tensor *t, const int64_t *rstart, const int64_t *rstop, reach_memo *m, int depth)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS];
    int64_t s0[IT_MAX_DIMS], e0[IT_MAX_DIMS], s1[IT_MAX_DIMS], e1[IT_MAX_DIMS];
    int rc;
    if (depth > REACH_MAX_DEPTH)
        return it_error_set(IT_ETOOBIG, "the pipeline is more than %d tensors deep", REACH_MAX_DEPTH);
    if (!clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    if (t->spec.combine == IT_COMBINE_CUSTOM)
        for (int k = 0; k < t->ninf; k++) {
            int d = t->inf_dim[k];
            start[d] = IT_MAX(it_floordiv(start[d], t->tshape[d]) * t->tshape[d], -IT_COORD_LIMIT);
            stop[d] = IT_MIN((it_floordiv(stop[d] - 1, t->tshape[d]) + 1) * t->tshape[d], IT_COORD_LIMIT);
        }
    if (reach_seen(m, t, start, stop))
        return IT_OK;
    int any;
    if ((rc = it_window_span(&t->spec.window, t->spec.shape, start, stop, lo, hi, &any)) || !any)
        return rc;
    if ((rc = it_window_bounds(&t->spec.window, lo, s0, e0)) ||
        (rc = it_window_bounds(&t->spec.window, hi, s1, e1)))
        return rc;
    for (int a = 0; a < t->spec.nargs; a++) {
        const it_window *aw = &t->arg_windows[a];
        if ((rc = it_window_bounds(aw, lo, s0, e0)) || (rc = it_window_bounds(aw, hi, s1, e1)) ||
            (rc = reach_check(t->args[a], s0, e1, m, depth + 1)))
            return rc;
    }
    return IT_OK;
}

/* ---- public API ---------------------------------------------------------- */

int it_tensor_read(it_tensor *t, const it_box *box, int flags, it_buffer **out)
{
    int empty = 0, rc;
    *out = NULL;
    if (box->ndim != t->ndim)
        return it_error_set(IT_EINVAL, "a %d-d box for a %d-d tensor", box->ndim, t->ndim);
    for (int d = 0; d < t->ndim; d++) {
        if (box->step[d] < 1)
            return it_error_set(IT_EINVAL, "step must be positive, got %lld", (long long)box->step[d]);
        if (box->start[d] < -IT_COORD_LIMIT || box->start[d] > IT_COORD_LIMIT ||
            box->stop[d] < -IT_COORD_LIMIT || box->stop[d] > IT_COORD_LIMIT)
            return it_error_set(IT_ERANGE, "coordinates must lie within +-2**62");
        empty |= it_box_extent(box, d) == 0;
    }
    int64_t numel;
    if ((rc = it_box_numel(box, &numel)))
        return rc;
    if (!empty && !(flags & IT_READ_NO_COMPUTE)) {
        reach_memo memo;
        memo.n = 0;
        int64_t rstop[IT_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) /* the samples' hull */
            rstop[d] = box->start[d] + (it_box_extent(box, d) - 1) * box->step[d] + 1;
        if ((rc = reach_check(t, box->start, rstop, &memo, 0)))
            return rc;
    }
    /* the result is allocated first: a region too large to hold fails
     * here, before any window is computed */
    it_buffer *buf;
    if ((rc = box_buffer(t, box, &buf)))
        return rc;
    if (empty) {
        *out = buf;
        return IT_OK;
    }
    regions rg;
    if ((rc = box_regions(t, box, &rg))) {
        it_buffer_free(buf);
        return rc;
    }
    read_ctx ctx;
    uint64_t gen = t->generation;
    ctx_init(&ctx, flags);
    rc = ensure(&ctx, t, rg.start, rg.stop, rg.n);
    if (rc == IT_OK && t->generation != gen)
        rc = it_error_set(IT_ESTATE, CLEARED_MSG);
    if (rc == IT_OK)
        rc = assemble_into(t, box, &rg, buf);
    ctx_release(&ctx);
    regions_free(&rg);
    if (rc) {
        it_buffer_free(buf);
        return rc;
    }
    *out = buf;
    return IT_OK;
}

/* Tile extent along infinite dim d when the spec leaves it to us: a multiple
 * of the window stride.  Commutative blends aim at TILE_TARGET_ELEMS per
 * tile (TILE_TARGET_DEVICE_ELEMS on a device).  A custom blend completes every tile a read touches (see the essay
 * above), so its tiles are about one window wide: a read then computes at
 * most one window beyond its edge per side. */
/* min(a * b, cap) for a, b >= 0, without overflowing */
static int64_t capped_mul(int64_t a, int64_t b, int64_t cap)
{
    return b != 0 && a > cap / b ? cap : IT_MIN(a * b, cap);
}

static int64_t pick_tile_extent(const it_tensor_spec *s, int d, int ninf, int64_t finite_elems)
{
    if (s->window.map[d] == IT_MAP_FIXED)
        return s->window.size[d];
    /* A multiple of the stride gives every tile the same number of windows;
     * nothing needs it, so sparse windows (a stride far above the window
     * size or the target) get tiles of their own size instead of a stride's
     * worth of memory that no window fills. */
    int64_t unit = s->window.stride[d], size = s->window.size[d], k;
    if (s->combine == IT_COMBINE_CUSTOM) {
        if (unit > size)
            return size; /* about one window wide, as below */
        k = it_ceildiv(size, unit);
    } else {
        double want = s->devops ? TILE_TARGET_DEVICE_ELEMS : TILE_TARGET_ELEMS;
        double per = want / (double)finite_elems;
        double target = per > 1 ? pow(per, 1.0 / ninf) : 1.0;
        k = (int64_t)llround(target / (double)unit);
        if (k == 0) /* the stride is over twice the target */
            return IT_MAX((int64_t)llround(target), 1);
    }
    return k * unit;
}

int it_tensor_create(it_cache *cache, const it_tensor_spec *spec,
                     const it_tensor_ops *ops, void *user, it_tensor **out)
{
    int rc;
    *out = NULL;
    if (!cache || !spec || !ops)
        return it_error_set(IT_EINVAL, "cache, spec and ops are required");
    if (!ops->compute || !ops->release)
        return it_error_set(IT_EINVAL, "compute and release callbacks are required");
    if (spec->ndim < 1 || spec->ndim > IT_MAX_DIMS)
        return it_error_set(IT_EINVAL, "a tensor must have 1 to %d dims, got %d", IT_MAX_DIMS, spec->ndim);
    size_t es = it_dtype_size(spec->dtype);
    if (!es)
        return it_error_set(IT_EDTYPE, "invalid dtype %d", (int)spec->dtype);
    if (!spec->devops && spec->device_type != IT_DEVICE_CPU)
        return it_error_set(IT_EDEVICE, "device type %d needs a device-ops table", spec->device_type);
    if (spec->devops && (spec->devops->version != IT_DEVOPS_VERSION || !spec->devops->alloc ||
                         !spec->devops->release || !spec->devops->apply))
        return it_error_set(IT_EINVAL, "the device-ops table is incomplete or of another version");
    int64_t finite_elems = 1;
    int ninf = 0;
    for (int d = 0; d < spec->ndim; d++) {
        int64_t e = spec->shape[d];
        if (e == IT_DIM_INFINITE) {
            ninf++;
            continue;
        }
        if (e < 1 || e > IT_PARAM_LIMIT)
            return it_error_set(IT_EINVAL, "dim %d must be infinite or in [1, 2**48], got %lld", d, (long long)e);
        if (finite_elems > IT_PARAM_LIMIT / e)
            return it_error_set(IT_ETOOBIG, "the finite dims hold too many elements");
        finite_elems *= e;
    }
    if (spec->window.ndim != spec->ndim || spec->window.ncoords != spec->ndim)
        return it_error_set(IT_EINVAL, "output_window has %d dims but tensor has %d dims",
                            spec->window.ndim, spec->ndim);
    if ((rc = it_window_check(&spec->window)))
        return rc;
    if (spec->nargs < 0 || spec->nargs > IT_MAX_ARGS)
        return it_error_set(IT_EINVAL, "a tensor takes 0 to %d args, got %d", IT_MAX_ARGS, spec->nargs);
    if (spec->nargs > 0 && (!spec->args || !spec->arg_windows))
        return it_error_set(IT_EINVAL, "args and their windows must be given together");
    for (int a = 0; a < spec->nargs; a++) {
        const it_window *aw = &spec->arg_windows[a];
        if (!spec->args[a])
            return it_error_set(IT_EINVAL, "args[%d] is missing", a);
        if (aw->ndim != spec->args[a]->ndim)
            return it_error_set(IT_EINVAL, "args_windows[%d] has %d dims but corresponding arg tensor has %d dims",
                                a, aw->ndim, spec->args[a]->ndim);
        if (aw->ncoords != spec->ndim)
            return it_error_set(IT_EINVAL, "args_windows[%d] must be driven by %d-entry window indices",
                                a, spec->ndim);
        if ((rc = it_window_check(aw)))
            return rc;
    }
    if (spec->batch_size < 1)
        return it_error_set(IT_EINVAL, "batch_size must be >= 1, got %lld", (long long)spec->batch_size);
    switch (spec->combine) {
    case IT_COMBINE_CUSTOM:
        if (!ops->blend || !ops->release_view)
            return it_error_set(IT_EINVAL, "a custom blend needs the blend and release_view callbacks");
        break;
    case IT_COMBINE_SUM:
    case IT_COMBINE_MAX:
    case IT_COMBINE_MIN:
        if (!it_dtype_supports(spec->dtype, spec->combine))
            return it_error_set(IT_EDTYPE, "this blend is not available for %s", it_dtype_name(spec->dtype));
        break;
    default:
        return it_error_set(IT_EINVAL, "combine must be SUM, MAX, MIN or CUSTOM, got %d", (int)spec->combine);
    }
    for (int d = 0; d < spec->ndim; d++)
        if (spec->shape[d] == IT_DIM_INFINITE &&
            (spec->tile_shape[d] < 0 || spec->tile_shape[d] > IT_PARAM_LIMIT))
            return it_error_set(IT_EINVAL, "tile_shape[%d] must be in [1, 2**48], or 0 to pick one, got %lld",
                                d, (long long)spec->tile_shape[d]);

    it_tensor *t = it_calloc(1, sizeof *t);
    if (!t)
        return it_error_set(IT_ENOMEM, "out of memory creating a tensor");
    t->spec = *spec;
    if (spec->nargs > 0) {
        t->args = it_calloc((size_t)spec->nargs, sizeof *t->args);
        t->arg_windows = it_calloc((size_t)spec->nargs, sizeof *t->arg_windows);
        if (!t->args || !t->arg_windows) {
            it_free(t->args);
            it_free(t->arg_windows);
            it_free(t);
            return it_error_set(IT_ENOMEM, "out of memory creating a tensor");
        }
        for (int a = 0; a < spec->nargs; a++) {
            t->args[a] = spec->args[a];
            it_tensor_ref(t->args[a]);
            t->arg_windows[a] = spec->arg_windows[a];
        }
    }
    t->spec.args = t->args;
    t->spec.arg_windows = t->arg_windows;
    t->refs = 1;
    t->cache = cache;
    it_cache_ref(cache);
    t->ops = *ops;
    t->dev.type = spec->device_type;
    t->dev.id = spec->device_id;
    t->dev.ops = spec->devops;
    t->user = user;
    t->elsize = es;
    t->ndim = spec->ndim;
    t->ncoords = spec->ndim;
    int64_t window_elems = 1, tile_elems = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (spec->shape[d] == IT_DIM_INFINITE) {
            t->inf_dim[t->ninf++] = d;
            int64_t e = spec->tile_shape[d] > 0 ? spec->tile_shape[d]
                                                 : pick_tile_extent(spec, d, ninf, finite_elems);
            t->tshape[d] = e;
        } else {
            t->tshape[d] = spec->shape[d];
        }
        t->spec.tile_shape[d] = t->tshape[d];
        window_elems = capped_mul(window_elems, spec->window.size[d], TILE_MAX_BYTES);
        tile_elems = capped_mul(tile_elems, t->tshape[d], TILE_MAX_BYTES);
    }
    t->window_bytes = IT_MAX(window_elems * (int64_t)es, 1);
    if (tile_elems >= TILE_MAX_BYTES / (int64_t)es) {
        t->user = NULL; /* ownership passes on success only */
        it_tensor_unref(t);
        return it_error_set(IT_ETOOBIG, "tiles of this tensor would be too large");
    }
    it_contiguous_strides(es, t->ndim, t->tshape, t->tstrides);
    *out = t;
    return IT_OK;
}

void it_tensor_ref(it_tensor *t) { t->refs++; }
int it_tensor_refs(const it_tensor *t) { return t->refs; }

void it_tensor_unref(it_tensor *t)
{
    if (!t || --t->refs > 0)
        return;
    it_tensor_clear(t);
    for (int a = 0; a < t->spec.nargs; a++)
        it_tensor_unref(t->args[a]);
    if (t->ops.user_free && t->user)
        t->ops.user_free(t->user);
    if (t->backend.free)
        t->backend.free(t->bctx);
    it_cache_unref(t->cache);
    it_free(t->args);
    it_free(t->arg_windows);
    it_free(t->buckets);
    it_free(t);
}

const it_tensor_spec *it_tensor_get_spec(const it_tensor *t) { return &t->spec; }
void *it_tensor_get_user(const it_tensor *t) { return t->user; }

void it_tensor_set_user(it_tensor *t, void *user)
{
    void *old = t->user;
    t->user = user;
    if (old && old != user && t->ops.user_free)
        t->ops.user_free(old);
}

int it_tensor_set_batch_size(it_tensor *t, int64_t batch_size)
{
    if (batch_size < 1)
        return it_error_set(IT_EINVAL, "batch_size must be >= 1, got %lld", (long long)batch_size);
    t->spec.batch_size = batch_size;
    return IT_OK;
}

void it_tensor_clear(it_tensor *t)
{
    t->generation++;
    for (size_t i = 0; i < t->nbuckets; i++) {
        while (t->buckets[i]) {
            it_tile *tile = t->buckets[i];
            if (tile->pins == 0) {
                it__tile_evict(tile);
            } else {
                table_unlink(t, tile);
                tile->flags |= TILE_ORPHAN;
            }
        }
    }
}

void it_tensor_trim(it_tensor *t, int64_t byte_limit)
{
    /* rescan from the head after each step: a write-back callback may
     * reorder the list or free tiles */
    int64_t guard = 2 * t->ntiles + 2;
    while (t->bytes > byte_limit && guard-- > 0) {
        it_tile *p = t->cache->lru_head;
        while (p && p->owner != t)
            p = p->next;
        if (!p)
            return;
        if (!(p->flags & TILE_DIRTY))
            it__tile_evict(p);
        else if (it__tile_writeback(p, 1) != IT_OK)
            return;
    }
}

int64_t it_tensor_bytes(const it_tensor *t) { return t->bytes; }
int64_t it_tensor_tiles(const it_tensor *t) { return t->ntiles; }

int it_tensor_set_backend(it_tensor *t, const it_backend *backend, void *ctx, int flags)
{
    if (!backend || backend->version != IT_BACKEND_VERSION || !backend->load || !backend->store) {
        if (backend && backend->free)
            backend->free(ctx);
        return it_error_set(IT_EINVAL, "a backend of version %d with load and store is required",
                            IT_BACKEND_VERSION);
    }
    if (t->ntiles > 0 || t->backend.load) {
        if (backend->free)
            backend->free(ctx);
        return it_error_set(IT_ESTATE, "a backend must be attached before any tile is cached, once");
    }
    t->backend = *backend;
    t->bctx = ctx;
    t->bflags = flags;
    return IT_OK;
}

int it_tensor_flush(it_tensor *t)
{
    /* collect first: each write-back may run callbacks that change the table */
    int64_t n = 0, cap = t->ndirty;
    int rc = IT_OK;
    if (cap == 0)
        return IT_OK;
    it_tile **dirty = it_calloc((size_t)cap, sizeof *dirty);
    if (!dirty)
        return it_error_set(IT_ENOMEM, "out of memory flushing tiles");
    for (size_t i = 0; i < t->nbuckets && n < cap; i++)
        for (it_tile *p = t->buckets[i]; p && n < cap; p = p->hnext)
            if (p->flags & TILE_DIRTY) {
                it__tile_pin(p); /* kept alive until we get to it */
                dirty[n++] = p;
            }
    for (int64_t i = 0; i < n; i++) {
        if (rc == IT_OK && !(dirty[i]->flags & TILE_ORPHAN))
            rc = it__tile_writeback(dirty[i], 0);
        it__tile_unpin(dirty[i]);
    }
    it_free(dirty);
    if (rc == IT_OK && t->ndirty > 0) /* callbacks dirtied more: go again */
        return it_tensor_flush(t);
    return rc;
}

int64_t it_tensor_dirty(const it_tensor *t) { return t->ndirty; }

int64_t it_tensor_max_domain(const it_tensor *t)
{
    /* per coordinate, the fewest windows any dim following it allows: an
     * infinite dim lets floor((T + z - 2) / s) + 1 windows meet a tile of
     * extent T; a finite dim allows the windows inside it (the same for
     * every tile) */
    int64_t per[IT_MAX_DIMS], total = 1;
    const it_window *w = &t->spec.window;
    for (int c = 0; c < t->ncoords; c++)
        per[c] = -1;
    for (int d = 0; d < t->ndim; d++) {
        int c = w->map[d];
        int64_t n;
        if (c == IT_MAP_FIXED)
            continue;
        if (t->spec.shape[d] == IT_DIM_INFINITE) {
            n = (t->tshape[d] + w->size[d] - 2) / w->stride[d] + 1;
        } else {
            int64_t E = t->spec.shape[d];
            int64_t l = IT_MAX(it_ceildiv(-w->offset[d] - w->size[d] + 1, w->stride[d]),
                               it_ceildiv(-w->offset[d], w->stride[d]));
            int64_t h = IT_MIN(it_floordiv(E - 1 - w->offset[d], w->stride[d]),
                               it_floordiv(E - w->size[d] - w->offset[d], w->stride[d]));
            n = IT_MAX(h - l + 1, 0);
        }
        per[c] = per[c] < 0 ? n : IT_MIN(per[c], n);
    }
    for (int c = 0; c < t->ncoords; c++) {
        int64_t n = per[c] < 0 ? 1 : per[c];
        if (n == 0)
            return 0;
        if (total > INT64_MAX / n)
            return INT64_MAX;
        total *= n;
    }
    return total;
}

void it_tensor_tile_shape(const it_tensor *t, int64_t *shape)
{
    memcpy(shape, t->tshape, sizeof(int64_t) * (size_t)t->ndim);
}

int it_tensor_window_done(it_tensor *t, const int64_t *coords, int *done)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
    int rc;
    *done = 0;
    if ((rc = it_window_bounds(&t->spec.window, coords, ws, we)))
        return rc;
    if (!clip_finite(t, ws, we))
        return IT_OK;
    read_ctx ctx; /* tiles may have to come from the backend */
    ctx_init(&ctx, IT_READ_NO_COMPUTE);
    tile_walk tw;
    tiles_first(&tw, t, ws, we);
    const int64_t *tc = tw.tc;
    int all = 1;
    do {
        it_tile *tile;
        if ((rc = get_tile(&ctx, t, tc, 0, &tile)))
            break;
        int64_t bit = tile ? bit_index(t, tile, coords) : -1;
        if (bit < 0 || !has_bit(tile, bit)) {
            all = 0;
            break;
        }
    } while (tiles_next(&tw));
    ctx_release(&ctx);
    *done = rc == IT_OK && all;
    return rc;
}

int it_tensor_contribute(it_tensor *t, const int64_t *coords, const it_view *out)
{
    int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
    int rc;
    if ((rc = it_window_bounds(&t->spec.window, coords, ws, we)))
        return rc;
    if (t->bflags & IT_BACKEND_READONLY)
        return it_error_set(IT_ESTATE, "the store is read-only (mode 'r'): windows cannot be added");
    for (int d = 0; d < t->ndim; d++)
        if (t->spec.shape[d] != IT_DIM_INFINITE && (ws[d] < 0 || we[d] > t->spec.shape[d]))
            return it_error_set(IT_EINVAL, "window sticks out of finite dim %d", d);
    read_ctx ctx;
    ctx_init(&ctx, 0);
    /* a custom blend must fold windows in order: with a fresh context no
     * tile is being completed, so the values wait on the tiles' lists */
    rc = contribute(&ctx, t, coords, out, t->spec.combine == IT_COMBINE_CUSTOM);
    ctx_release(&ctx);
    return rc;
}

int it_tensor_retype(it_tensor *t, it_dtype dt, const void *fill, it_convert_fn convert, void *cctx)
{
    return it_tensor_migrate(t, &t->dev, dt, fill, convert, cctx);
}

int it_tensor_migrate(it_tensor *t, const it_device *dev, it_dtype dt, const void *fill,
                      it_convert_fn convert, void *cctx)
{
    size_t es = it_dtype_size(dt);
    int rc = IT_OK;
    if (!es)
        return it_error_set(IT_EDTYPE, "invalid dtype %d", (int)dt);
    if (t->spec.combine != IT_COMBINE_CUSTOM && !it_dtype_supports(dt, t->spec.combine))
        return it_error_set(IT_EDTYPE, "this blend is not available for %s", it_dtype_name(dt));
    if (t->backend.load && dt != t->spec.dtype)
        return it_error_set(IT_ESTATE, "the tiles of a tensor with a backend cannot change dtype");
    if (!dev->ops && dev->type != IT_DEVICE_CPU)
        return it_error_set(IT_EDEVICE, "device type %d needs a device-ops table", dev->type);
    /* the tiles and the deferred parts to convert, pinned while convert (a
     * callback) runs; nothing may be reading the tensor meanwhile */
    int64_t ntiles = t->ntiles, nparts = 0, k = 0;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (it_tile *p = t->buckets[i]; p; p = p->hnext) {
            if (p->pins > 0)
                return it_error_set(IT_ESTATE, "a read of this tensor is in progress; convert it afterwards");
            for (it_deferred *d = p->deferred; d; d = d->next)
                nparts++;
        }
    it_tile **tiles = it_calloc((size_t)ntiles + 1, sizeof *tiles);
    it_buffer **fresh = it_calloc((size_t)(ntiles + nparts) + 1, sizeof *fresh);
    read_ctx ctx;
    ctx_init(&ctx, 0);
    if (!tiles || !fresh)
        rc = it_error_set(IT_ENOMEM, "out of memory converting tiles");
    for (size_t i = 0; i < t->nbuckets && rc == IT_OK; i++)
        for (it_tile *p = t->buckets[i]; p && rc == IT_OK; p = p->hnext) {
            tiles[k++] = p;
            rc = ctx_pin(&ctx, p);
        }
    uint64_t gen = t->generation, mut = t->mutations;
    int64_t f = 0;
    for (int64_t i = 0; i < ntiles && rc == IT_OK; i++) {
        it_tile *p = tiles[i];
        it_view src;
        tile_values(t, p);
        it_buffer_view(p->buf, &src);
        if ((rc = it_buffer_create_on(dev, dt, t->ndim, t->tshape, &fresh[f])) == IT_OK)
            rc = convert(cctx, &src, fresh[f]);
        f++;
        for (it_deferred *d = p->deferred; d && rc == IT_OK; d = d->next, f++) {
            it_buffer_view(d->part, &src);
            if ((rc = it_buffer_create_on(dev, dt, t->ndim, d->part->shape, &fresh[f])) == IT_OK)
                rc = convert(cctx, &src, fresh[f]);
        }
    }
    if (rc == IT_OK && (t->generation != gen || t->mutations != mut || t->ntiles != ntiles))
        rc = it_error_set(IT_ESTATE, "the tensor changed while its tiles were converted; try again");
    for (int64_t i = 0; i < ntiles && rc == IT_OK; i++)
        if (tiles[i]->pins != 1)
            rc = it_error_set(IT_ESTATE, "a read of this tensor started during the conversion; try again");
    if (rc == IT_OK) {
        f = 0;
        for (int64_t i = 0; i < ntiles; i++) {
            it_tile *p = tiles[i];
            /* out of the cache's counts under the old buffers, back in under
             * the new ones (the device may count elsewhere) */
            it__cache_account(t->cache, p, -1);
            t->bytes -= (int64_t)p->buf->nbytes + p->extra_bytes;
            it_buffer_free(p->buf);
            p->buf = fresh[f];
            fresh[f++] = NULL;
            p->extra_bytes = 0;
            for (it_deferred *d = p->deferred; d; d = d->next) {
                it_buffer_free(d->part);
                d->part = fresh[f];
                fresh[f++] = NULL;
                p->extra_bytes += (int64_t)d->part->capacity;
            }
            it__cache_account(t->cache, p, +1);
            t->bytes += (int64_t)p->buf->nbytes + p->extra_bytes;
        }
        t->window_bytes = t->window_bytes / (int64_t)t->elsize * (int64_t)es;
        t->spec.dtype = dt;
        t->dev = *dev;
        t->spec.device_type = dev->type;
        t->spec.device_id = dev->id;
        t->spec.devops = dev->ops;
        t->elsize = es;
        memcpy(t->spec.fill, fill, es);
        it_contiguous_strides(es, t->ndim, t->tshape, t->tstrides);
        t->mutations++;
    }
    if (fresh)
        for (int64_t i = 0; i < ntiles + nparts; i++)
            it_buffer_free(fresh[i]);
    it_free(fresh);
    it_free(tiles);
    ctx_release(&ctx);
    return rc;
}
