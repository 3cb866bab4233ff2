/*
 * engine.h - the read engine's private header: the tensor node, read
 * contexts, window sets, tile walks and the regions of a box, and the
 * functions that one engine file calls in another.  Not installed; included
 * by the engine files only.  This essay is the engine as a whole; each file
 * opens with the details of its part.
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
 * Reading a box.  it_tensor_read (tensor.c) opens a read context (a serial
 * number and the list of tiles it pinned; tile.c), then:
 *   1. plan (plan.c): walk the tiles meeting the box; skip complete ones
 *      (every window of the domain present); for the others collect the
 *      windows that meet the box there and are missing from the tile, into
 *      a set (winset.c);
 *   2. order the pending windows lexicographically; ensure, recursively and
 *      in the same context, every upstream region they need, so each
 *      upstream window is computed at most once per read (its tiles stay
 *      pinned until the read ends);
 *   3. compute in batches (plan.c): assemble each batch's argument regions
 *      into fresh buffers (assemble.c), call ops->compute, add each output
 *      to the tiles it touches (contribute.c);
 *   4. assemble the box from the tiles into a new buffer (assemble.c).
 * Blends (and why a custom blend completes tiles in window order) are
 * explained in contribute.c, lazy tiles in tile.c, re-entrancy and the
 * claims of threads computing the same windows in plan.c.
 *
 * Files.  Each calls only the engine files listed below it:
 *   tensor.c      the public it_tensor_* API (it_tensor.h)
 *   plan.c        the planner, claims and waits between threads, the reach
 *                 check made before any f runs
 *   assemble.c    the regions of a box; copying them out of the tiles
 *   contribute.c  adding a window's output to tiles; the deferred parts of
 *                 custom blends
 *   tile.c        the tile table; creating, loading, writing back, evicting
 *                 and freeing tiles; lazy values; read contexts and pins
 *   winset.c      window sets; walking the tiles of a region
 *   cache.c       budgets and the LRU list (cache.h): below the tiles, it
 *                 knows each tile by the entry it embeds and reaches tile.c
 *                 only through the entry's class (evict, free, check)
 *   wait.c        owners of work and waiting for progress (wait.h)
 * Functions shared between files are named it__*
 * (the extension links every core file into one shared object); small ones
 * on hot paths are static inline below; everything else is static.
 */
#ifndef IT_ENGINE_H
#define IT_ENGINE_H

#include "cache.h"
#include "it_tensor.h"
#include "wait.h"

#define TILE_DIRTY 4u /* changed since loaded from / written to the backend */
#define TILE_LAZY 8u  /* only the pixels of contributed windows are written (tile.c) */
#define TILE_LOADING 16u /* a backend is filling it with the caller's lock released (tile.c) */
#define TILE_PREFIX 32u  /* canonical sum: its bits are the first ncontrib of its domain and its
                          * fold counts are not kept up to date (fold.c) */

typedef struct it_tile it_tile;

/* A window's values on its overlap with a tile, kept until the tile is
 * completed (custom blends; see contribute.c) or until the windows before it
 * reach the cells it covers (canonical sums; see fold.c). */
typedef struct it_deferred {
    struct it_deferred *next; /* lexicographic order of coords */
    it_buffer *part;
    int64_t pending;  /* canonical sums: cells of the part not yet folded */
    int64_t *start;  /* overlap start per dim, relative to the tile origin */
    int64_t coords[]; /* window index */
} it_deferred;

struct it_tile {
    it_cache_entry ce;         /* what the cache knows: bytes, pins, LRU links */
    it_tensor *owner;
    it_tile *hnext;            /* hash chain in owner's table */
    it_buffer *buf;            /* the tile's values, tile_shape of owner */
    uint64_t hash;
    int64_t ncontrib;          /* bits set */
    int64_t ntotal;            /* windows that can contribute */
    uint32_t flags;            /* TILE_* */
    uint64_t pin_serial;       /* last read context that pinned it */
    uint64_t mark;             /* read context completing it (custom blend) */
    uint64_t wt_serial;        /* read context that wrote windows through (assemble.c) */
    int64_t wt_pixels;         /* pixels of that read's box it wrote through */
    int64_t *coord;            /* owner->ninf tile coordinates */
    int64_t *dom_lo;           /* owner->ncoords: first window index per coord */
    int64_t *dom_n;            /* owner->ncoords: windows per coord */
    uint64_t *bits;            /* ntotal bits, row-major over the domain */
    it_deferred *deferred;     /* parts waiting (custom blends, canonical sums) */
    int64_t extra_bytes;       /* bytes of the deferred parts */
    int64_t *cdim;             /* canonical sums: cells per dim (fold.c) */
    uint32_t *folds;           /*   windows folded per cell, row-major; NULL otherwise */
    int64_t ncells;
};

static inline int it__tile_orphan(const it_tile *tile) { return (tile->ce.flags & IT_CE_ORPHAN) != 0; }
static inline void it__tile_pin(it_tile *tile) { it__cache_pin(&tile->ce); }
static inline void it__tile_unpin(it_tile *tile) { it__cache_unpin(&tile->ce); }

struct it_tensor {
    int refs;
    it_tensor_stats stats;
    struct it_mean_state *mean; /* blend "mean" (mean.c); spec.mean points into it */
    it_cache *cache;
    it_tensor_spec spec; /* spec.args / spec.arg_windows point at the arrays below */
    it_tensor **args;
    it_window *arg_windows;
    it_tensor_ops ops;
    it_device dev; /* where tiles and reads live */
    void *user;
    size_t elsize;
    int ndim, ncoords, ninf;
    int disjoint; /* no two windows overlap (it_window_disjoint) */
    int canon;    /* sums fold in window order (fold.c) */
    int counted;  /* tiles keep fold counts: canon, or records that carry them */
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
    struct it_parked *parked; /* kept parts of tiles evicted to the backend (tile.c) */
    int64_t parked_bytes;
    struct claim *claims; /* windows threads are computing right now */
    it_owner busy;        /* custom blends: the thread completing tiles */
    int busy_depth;
};

#define CLEARED_MSG "the cache of a tensor this read uses was cleared during the read"
#define BUSY_MSG "another read is combining these tiles with a custom blend right now; read again"

/* Where a read wants its box (assemble.c, "Writing through"): set when
 * each window's pixels can go to the result as the window is added. */
typedef struct read_sink {
    it_tensor *t; /* NULL: no sink */
    it_buffer *buf;
    const int64_t *start, *stop; /* the box, step 1 */
} read_sink;

/* A read context (tile.c): a serial number and the tiles it pinned. */
typedef struct read_ctx {
    uint64_t serial;
    int flags;
    it_tile **pins;
    size_t npins, cap;
    read_sink sink;
} read_ctx;

/* Windows a lazy tile may take before it is filled: it__tile_values keeps
 * their boxes on the stack. */
#define LAZY_MAX_WINDOWS 32

/* A set of window indices: the tuples in insertion order plus an open
 * addressing table of positions. */
typedef struct winset {
    int k;
    int64_t n, cap;   /* tuples stored / room */
    int64_t *tuples;  /* n * k */
    int64_t *slots;   /* table of positions + 1 (0 = empty) */
    int64_t nslots;
} winset;

/* Walks the tiles meeting a region in lexicographic order of their
 * coordinates (winset.c):
 *   it__tiles_first(&w, ...); do { ... w.tc ... } while (it__tiles_next(&w)); */
typedef struct tile_walk {
    int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS];
    int64_t tc[IT_MAX_DIMS]; /* the current tile */
    int ninf;
} tile_walk;

/* A box cut into the regions that hold its samples (assemble.c): n boxes
 * [start, stop) of ndim ints each; one region lives in one_start/one_stop. */
typedef struct regions {
    int64_t n;
    int64_t *start, *stop; /* n * ndim */
    int64_t one_start[IT_MAX_DIMS], one_stop[IT_MAX_DIMS];
} regions;

/* ---- small helpers of several files ------------------------------------ */

/* Monotonic nanoseconds (the stats' clock; common.c). */
int64_t it__now_ns(void);

static inline uint64_t it__mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t it__hash_coords(const int64_t *c, int n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++)
        h = it__mix(h ^ (uint64_t)c[i]);
    return h;
}

/* Advance idx (n entries, lo/count ranges) lexicographically; 0 at the end. */
static inline int it__odometer_next(int64_t *idx, const int64_t *lo, const int64_t *count, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (++idx[i] < lo[i] + count[i])
            return 1;
        idx[i] = lo[i];
    }
    return 0;
}

/* Row-major position of window w (k coordinates) in the box of windows
 * [lo, lo + n), or -1 if w is not in it. */
static inline int64_t it__box_rank(int k, const int64_t *lo, const int64_t *n, const int64_t *w)
{
    int64_t idx = 0;
    for (int c = 0; c < k; c++) {
        int64_t r = w[c] - lo[c];
        if (r < 0 || r >= n[c])
            return -1;
        idx = idx * n[c] + r;
    }
    return idx;
}

/* Bit index of window w in tile's domain, or -1 if w is not in it. */
static inline int64_t it__bit_index(const it_tensor *t, const it_tile *tile, const int64_t *w)
{
    return it__box_rank(t->ncoords, tile->dom_lo, tile->dom_n, w);
}

static inline int it__has_bit(const it_tile *tile, int64_t i)
{
    return (tile->bits[i >> 6] >> (i & 63)) & 1u;
}

/* 1 if some window is in the tile, whole (a bit) or in part (a kept part,
 * or fold counts whose parts were not stored: fold.c). */
static inline int it__tile_holds(const it_tile *tile)
{
    if (tile->ncontrib > 0 || tile->deferred)
        return 1;
    for (int64_t i = 0; tile->folds && !(tile->flags & TILE_PREFIX) && i < tile->ncells; i++)
        if (tile->folds[i])
            return 1;
    return 0;
}

static inline int it__lex_less(const int64_t *a, const int64_t *b, int k)
{
    for (int i = 0; i < k; i++)
        if (a[i] != b[i])
            return a[i] < b[i];
    return 0;
}

/* ---- winset.c ------------------------------------------------------------ */

void it__winset_free(winset *s);
/* Add w unless it is there. */
int it__winset_add(winset *s, const int64_t *w);
/* Sort lexicographically; the set is then read as a list only. */
int it__winset_sort(winset *s);
int it__winset_has_sorted(const winset *s, const int64_t *w);
/* Add w at the end of a set read only as a sorted list. */
int it__winset_append(winset *s, const int64_t *w);
void it__tiles_first(tile_walk *w, const it_tensor *t, const int64_t *start, const int64_t *stop);
int it__tiles_next(tile_walk *w);
/* Clip a region to the finite dims, in place; 0 if nothing is left. */
int it__clip_finite(const it_tensor *t, int64_t *start, int64_t *stop);
/* Copy region number i of (start, stop) arrays and clip it; 0 if empty. */
int it__clipped_region(const it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t i,
                       int64_t *start, int64_t *stop);

/* ---- tile.c -------------------------------------------------------------- */

/* Unlink an unpinned, cached tile from its tensor and free it. */
void it__tile_evict(it_tile *tile);
/* Write a dirty tile to its tensor's backend (pinned meanwhile); with
 * evict, evict it afterwards if it is clean and unpinned. */
int it__tile_writeback(it_tile *tile, int evict);

/* The cached tile at coord (borrowed), or NULL. */
it_tile *it__tile_lookup(const it_tensor *t, const int64_t *coord);
/* Take a tile out of its tensor's table and out of the accounting (a
 * pinned one becomes an orphan, freed by its last unpin). */
void it__table_unlink(it_tensor *t, it_tile *tile);
void it__deferred_free(it_deferred *d);
/* Free the kept parts parked for t's evicted tiles (their windows are then
 * computed again when needed). */
void it__parked_free(it_tensor *t);
/* A tile changed: with a backend, mark it dirty (written back before it goes). */
void it__mark_dirty(it_tensor *t, it_tile *tile);
/* Pixel box of a tile, and the part of it where windows can lie. */
void it__tile_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop);
void it__tile_window_box(const it_tensor *t, const int64_t *coord, int64_t *start, int64_t *stop);
/* The boxes (tile-relative) of the windows in a lazy tile; returns how many. */
int it__lazy_boxes(const it_tensor *t, const it_tile *tile, int64_t *lo, int64_t *hi);
/* Make every value of a tile valid (a lazy tile is zeroed where no window is). */
void it__tile_values(const it_tensor *t, it_tile *tile);
/* Read contexts: init, pin a tile once per context, unpin all and trim. */
void it__ctx_init(read_ctx *ctx, int flags);
int it__ctx_pin(read_ctx *ctx, it_tile *tile);
void it__ctx_release(read_ctx *ctx);
/* The cached tile at coord pinned in ctx, once no other thread is loading
 * it (tile.c); *out NULL when none is cached. */
int it__ready_tile(read_ctx *ctx, it_tensor *t, const int64_t *coord, it_tile **out);
/* The tile at coord, pinned in ctx: cached, else loaded from the backend,
 * else a new empty one (with create, or when the backend has none); *out
 * NULL when there is none. */
int it__get_tile(read_ctx *ctx, it_tensor *t, const int64_t *coord, int create, it_tile **out);
/* dst (op)= src over shape, both on the tensor's device. */
int it__dev_apply(const it_tensor *t, it_combine op, const int64_t *shape, void *dst,
                  const int64_t *dst_strides, const void *src, const int64_t *src_strides);

/* ---- contribute.c -------------------------------------------------------- */

/* Window w's deferred part waiting on tile, or NULL. */
it_deferred *it__deferred_find(const it_tensor *t, const it_tile *tile, const int64_t *w);
/* 1 if window w has a deferred part waiting on tile. */
int it__deferred_has(const it_tensor *t, const it_tile *tile, const int64_t *w);
/* Fold the deferred parts of windows before `before` (all: NULL) into tile. */
int it__flush_deferred(it_tensor *t, it_tile *tile, const int64_t *before);
/* Add window w (output v) to the tiles it touches that lack it. */
int it__contribute(read_ctx *ctx, it_tensor *t, const int64_t *w, const it_view *v, int only_marked);
/* Keep window w's values on [a, a + shape) (absolute; ts: the tile's
 * origin) on the tile's deferred list; pending: cells it owes (fold.c). */
int it__defer_part(it_tensor *t, it_tile *tile, const int64_t *w, const int64_t *ts, const int64_t *shape,
                   const int64_t *a, const char *src, const int64_t *src_strides, int64_t pending);
/* Change a cached tile's byte count by delta (deferred parts come and go). */
void it__tile_extra(it_tensor *t, it_tile *tile, int64_t delta);
/* 1 if a part can be copied into a lazy tile (see tile.c); otherwise the
 * tile's values are made valid first. */
int it__lazy_takes(const it_tensor *t, it_tile *tile, const int64_t *ts, const int64_t *a, const int64_t *shape);
/* The first values of a lazy tile's part: dst = src, or for floats dst =
 * 0 + src, what adding into a zeroed tile gives (-0.0 becomes +0.0). */
void it__copy_fresh(const it_tensor *t, const int64_t *shape, void *dst, const int64_t *dst_strides,
                    const void *src, const int64_t *src_strides);

/* ---- fold.c -------------------------------------------------------------- */

/* 1 if t's sums should fold in window order (set once, at creation). */
int it__canon_wanted(const it_tensor *t);
/* 1 if t's tile records carry fold counts (with a backend that stores them). */
int it__record_counted(const it_tensor *t);
/* Cells of the tile at coord (cdim: per dim). */
int64_t it__tile_cells(const it_tensor *t, const int64_t *coord, int64_t *cdim);
/* Bits of the tile's record: the bitmap, then the fold counts if any. */
int64_t it__record_bits(const it_tensor *t, const it_tile *tile);
/* Fold window w's part [a, a + shape) (src, its strides; the window starts
 * at ws, the tile at ts) into tile, in window order (bit: w's in tile). */
int it__fold_part(it_tensor *t, it_tile *tile, const int64_t *w, int64_t bit, const int64_t *ts,
                  const int64_t *ws, const int64_t *a, const int64_t *shape, const char *src,
                  const int64_t *sstrides);
/* 1 if window w is folded into every cell of tile within [start, stop). */
int it__fold_covers(const it_tensor *t, const it_tile *tile, const int64_t *w, const int64_t *start,
                    const int64_t *stop);
/* Bring a TILE_PREFIX tile's fold counts up to date (before its record is
 * written). */
int it__folds_sync(it_tensor *t, it_tile *tile);
/* Check and complete the fold counts of a tile just loaded. */
int it__folds_loaded(it_tensor *t, it_tile *tile);

/* ---- assemble.c ---------------------------------------------------------- */

void it__regions_free(regions *r);
/* Cut a non-empty box into regions. */
int it__box_regions(const it_tensor *t, const it_box *box, regions *r);
/* Copy the box out of t's tiles (pinned in ctx) into buf (shaped like the
 * box); large host copies run with the caller's lock released. */
int it__assemble_into(read_ctx *ctx, it_tensor *t, const it_box *box, const regions *rg, it_buffer *buf);
/* A new buffer shaped like the box (the caller frees it). */
int it__box_buffer(const it_tensor *t, const it_box *box, it_buffer **out);
/* Set ctx's sink for a read of box into buf when t can write through. */
void it__sink_open(read_ctx *ctx, it_tensor *t, const it_box *box, const regions *rg, it_buffer *buf);
/* Window part [a, a + shape) was just added to tile: copy it to the sink. */
void it__sink_write(read_ctx *ctx, it_tensor *t, it_tile *tile, const int64_t *a, const int64_t *shape);
/* Assemble a step-1 box into a new buffer (the caller frees it). */
int it__assemble_box(read_ctx *ctx, it_tensor *t, const it_box *box, it_buffer **out);

/* ---- mean.c -------------------------------------------------------------- */

int it_mean_dtype_ok(it_dtype dt);
/* A tensor's own copy of spec->mean (`pub`, whose arrays it owns) and what
 * adds and reads precompute from it. */
typedef struct it_mean_state {
    it_mean pub;
    float *weight_f32; /* the weights as floats */
    float *norm_f32;   /* the norm as floats when every entry is one exactly, else NULL */
    int gaps;          /* some norm entry is 0: pixels no window covers */
} it_mean_state;
/* Check spec->mean against the spec and copy it. */
int it__mean_copy(const it_tensor_spec *spec, it_mean_state **out);
void it__mean_free(it_mean_state *m);
/* dst += src * weight (copy: dst = src * weight) over shape, the weights
 * from offset woff in the window. */
void it__mean_add(const it_tensor *t, int copy, const int64_t *shape, void *dst, const int64_t *dst_strides,
                  const void *src, const int64_t *src_strides, const int64_t *woff);
/* Divide an assembled box (buf, shaped like it) by the norm. */
void it__mean_normalize(const it_tensor *t, const it_box *box, it_buffer *buf);

/* ---- plan.c -------------------------------------------------------------- */

/* Compute every window meeting the regions that t's tiles lack (and,
 * first, what they need upstream), in the context ctx.  The regions form
 * ngroups groups (group g ends before region group_end[g]; NULL: one
 * region each), planned in order (plan.c, "Order"). */
int it__ensure(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions,
               const int64_t *group_end, int64_t ngroups);
/* Compute the listed windows (n tuples) that t's tiles lack, in the list's
 * order, in the context ctx (a custom blend's values wait on the tiles'
 * deferred lists until a read completes each tile). */
int it__ensure_windows(read_ctx *ctx, it_tensor *t, const int64_t *windows, int64_t n);
/* The windows a read of the regions would compute now, into out (empty;
 * in the order they would be computed), pinning the tiles in ctx. */
int it__plan_missing(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions,
                     winset *out);
/* IT_ERANGE (or IT_ETOOBIG) if reading [start, stop) of t would use a
 * coordinate past +-2**62 anywhere upstream; checked before any f runs. */
int it__reach_check(const it_tensor *t, const int64_t *start, const int64_t *stop);

#endif
