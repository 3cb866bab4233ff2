/*
 * it_tensor.h - a tensor node: geometry, tiles, and the read engine.
 *
 * A tensor is defined by a function f that produces one output window at a
 * time.  The core never calls f itself: it calls ops->compute with a batch of
 * window indices and their argument regions, and the binding calls f.
 *
 * What is cached is tiles, not windows.  A tile is a block of the tensor's
 * grid: the whole extent of every finite dim times tile_shape[d] along every
 * infinite dim; tile k of an infinite dim covers [k * T, (k + 1) * T).  It holds the combined value of every window contribution
 * made to it, and a bitmap over the windows that can touch it records which
 * of them have contributed, so a window is never counted twice, whatever the
 * order of reads, evictions or failures.
 *
 * A read of a box (it_tensor_read) runs in a read context that pins every
 * tile it touches until the read ends; nested reads from callbacks get their
 * own context.  See csrc/core/engine.h for how a read flows through the
 * engine's files, and csrc/core/plan.c for the planner.
 *
 * Ownership: it_tensor_create returns one reference; args are referenced by
 * their downstream tensors.  The user pointer is owned by the tensor and
 * released through ops->user_free when the last reference goes.
 * Locking: none inside; the caller serialises calls (the binding holds the
 * GIL, and callbacks run with it).
 */
#ifndef IT_TENSOR_H
#define IT_TENSOR_H

#include "it_buffer.h"
#include "it_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct it_tensor it_tensor;

#define IT_MAX_ARGS 63 /* upstream tensors per tensor */

/* A batch of windows to compute, handed to ops->compute. */
typedef struct it_batch {
    int64_t n;             /* windows in the batch */
    int ncoords;           /* ints per window index */
    const int64_t *coords; /* n * ncoords, in the order planned (plan.c) */
    int nargs;
    /* nargs * n argument regions, arg-major: args[a * n + i].  The callee may
     * take any of them (set the slot to NULL); the core frees the rest. */
    it_buffer **args;
    it_view *out;    /* n views the callee fills */
    void *out_owner; /* the callee's handle for the views, see ops->release */
    /* progress: windows of this plan before this batch, and in the plan */
    int64_t first, total;
} it_batch;

/* What a tensor has done since it was created (or the counters reset):
 * reads of it (it_tensor_read/_read_many calls, a list read counting once),
 * those that computed none of its windows, windows computed, f calls, the
 * nanoseconds spent in ops->compute and in reads of it (a read's time
 * includes its upstreams' work), and the bytes its reads returned. */
typedef struct it_tensor_stats {
    int64_t reads, cached_reads, windows, batches, compute_ns, read_ns, bytes_read;
} it_tensor_stats;

typedef struct it_tensor_ops {
    /* Fill batch->out[0..n) with views of f's outputs.  IT_OK, or an error
     * code (IT_ECALLBACK when the callee recorded its own error). */
    int (*compute)(void *user, it_batch *batch);
    /* Release what a successful compute left in batch->out / out_owner. */
    void (*release)(void *user, it_batch *batch);
    /* Custom blend (IT_COMBINE_CUSTOM): combine *existing (the tile's current
     * values) and *incoming (the window's values), both contiguous buffers of
     * the same shape that the callee may take, into *result, which must have
     * that shape and the tensor's dtype.  *owner is released with
     * release_view. */
    int (*blend)(void *user, it_buffer **existing, it_buffer **incoming,
                 it_view *result, void **owner);
    void (*release_view)(void *user, void *owner);
    /* Free the user pointer (the tensor is being destroyed). */
    void (*user_free)(void *user);
} it_tensor_ops;

/* The weighted-mean blend (mean.c): every window's output is multiplied by
 * weight (window-shaped, contiguous) before it is summed into the tiles,
 * and every read divides by norm, the sum of the weights covering a pixel:
 * norm_shape[d] entries along dim d, the window stride along an infinite dim
 * (index (x - window offset) mod stride) and the extent along a finite one.
 * Where norm is 0 a read holds `empty` (one element of the dtype). */
typedef struct it_mean {
    const double *weight;
    const double *norm;
    int64_t norm_shape[IT_MAX_DIMS];
    unsigned char empty[16];
} it_mean;

typedef struct it_tensor_spec {
    int ndim;
    int64_t shape[IT_MAX_DIMS]; /* extent, or IT_DIM_INFINITE */
    it_dtype dtype;
    int device_type; /* where tiles, reads and f's outputs live (DLPack type) */
    int device_id;
    /* Copies and arithmetic on that memory: NULL for host memory (then
     * device_type must be IT_DEVICE_CPU), else a table that outlives the
     * tensor (it_device.h). */
    const it_devops *devops;
    it_window window; /* output window: ndim dims, ncoords == ndim */
    int nargs;
    it_tensor *const *args;      /* nargs upstream tensors (referenced) */
    const it_window *arg_windows; /* nargs windows: args[a]'s ndim dims, ncoords == ndim */
    int64_t batch_size;          /* >= 1; 1 means one window per call */
    it_combine combine;          /* SUM, MAX, MIN or CUSTOM */
    unsigned char fill[16];      /* one element of dtype: the value before any window */
    /* Tile extent per dim; only infinite dims are read, 0 there means "pick
     * one" (a multiple of the window stride near 8K elements per tile). */
    int64_t tile_shape[IT_MAX_DIMS];
    /* NULL, or the weighted-mean blend (combine SUM, a floating dtype, host
     * memory, a window without dimension_map); copied at creation */
    const it_mean *mean;
} it_tensor_spec;

/* Create a tensor whose tiles live in cache.  Checks the spec (IT_EINVAL
 * with a message for each mistake).  Takes ownership of user on success
 * only. */
int it_tensor_create(it_cache *cache, const it_tensor_spec *spec,
                     const it_tensor_ops *ops, void *user, it_tensor **out);
void it_tensor_ref(it_tensor *t);
void it_tensor_unref(it_tensor *t); /* NULL is fine */
/* References held right now (the binding shows f to the GC only while it
 * holds the only one). */
int it_tensor_refs(const it_tensor *t);

/* The spec the tensor was created with (args point at the live tensors). */
const it_tensor_spec *it_tensor_get_spec(const it_tensor *t);
void *it_tensor_get_user(const it_tensor *t);
/* Replace the user pointer; the old one is freed through ops->user_free. */
void it_tensor_set_user(it_tensor *t, void *user);
/* Replace the batch size (re-registration with a new configuration). */
int it_tensor_set_batch_size(it_tensor *t, int64_t batch_size);

#define IT_READ_NO_COMPUTE 1 /* fail with IT_ESTATE instead of computing */

/* Compute what the box needs and assemble it into a new contiguous buffer of
 * shape it_box_extent(box, d) (caller owns).  The box has the tensor's ndim;
 * steps >= 1; start/stop within IT_COORD_LIMIT.  Pixels outside finite dims
 * or covered by no window hold the fill value. */
int it_tensor_read(it_tensor *t, const it_box *box, int flags, it_buffer **out);
/* Read n boxes in one read: every window any of them needs is planned once
 * (a batched f sees them in the order 0.4 gives: the first box's in
 * lexicographic order, then the next box's new ones, ...), and every tile
 * stays pinned until all are assembled.  outs[i] as it_tensor_read's out;
 * on failure none is returned. */
int it_tensor_read_many(it_tensor *t, const it_box *boxes, int64_t n, int flags, it_buffer **outs);
void it_tensor_get_stats(const it_tensor *t, it_tensor_stats *out);
void it_tensor_reset_stats(it_tensor *t);
/* Compute the listed windows (n tuples of the tensor's window coordinates,
 * in that order, in batches of batch_size) that are not done yet, and what
 * they read upstream.  Each must lie inside the finite dims. */
int it_tensor_compute_windows(it_tensor *t, const int64_t *windows, int64_t n);
/* The windows a read of box would compute right now, in the order it would
 * compute them: *windows holds *n tuples (free it with it_free). */
int it_tensor_missing_windows(it_tensor *t, const it_box *box, int64_t **windows, int64_t *n);

/* What a read of n boxes takes in memory, from geometry alone (nothing is
 * planned, loaded or computed), saturating at INT64_MAX:
 *   result_bytes  the buffers the read returns, all boxes together;
 *   tiles, tile_bytes  the tiles holding the largest box, which the read
 *                 pins (finite dims whole);
 *   cached_bytes  t's tiles in memory now;
 *   batch_bytes   one batch of f: batch_size windows (at most as many as
 *                 meet the boxes) of output plus each arg's window;
 *   needed        result + the tiles beyond cached_bytes + one batch when
 *                 any tile is beyond them: what the read surely adds, when
 *                 the cached tiles are those it needs (a lower bound for
 *                 this tensor; what upstream tensors add is not counted). */
typedef struct it_read_estimate {
    int64_t result_bytes, tiles, tile_bytes, cached_bytes, batch_bytes, needed;
} it_read_estimate;
void it_tensor_read_estimate(const it_tensor *t, const it_box *boxes, int64_t n, it_read_estimate *out);

/* Drop every cached tile of t (pinned ones are dropped when unpinned),
 * without writing dirty ones to a backend (flush first to keep them).  A
 * read of t (or of a tensor downstream of it) in progress then fails with
 * IT_ESTATE rather than return values from a half-cleared cache. */
void it_tensor_clear(it_tensor *t);
/* Evict t's unpinned tiles, least recently used first, until t holds at most
 * byte_limit bytes. */
void it_tensor_trim(it_tensor *t, int64_t byte_limit);
int64_t it_tensor_bytes(const it_tensor *t);
int64_t it_tensor_tiles(const it_tensor *t);
/* The tile extent per dim (finite dims: their extent). */
void it_tensor_tile_shape(const it_tensor *t, int64_t *shape);

/* *done = 1 if the window has contributed to every cached tile it touches
 * and all those tiles are cached; 0 otherwise. */
int it_tensor_window_done(it_tensor *t, const int64_t *coords, int *done);
/* Add a window computed elsewhere to every tile that lacks it (creating
 * tiles as needed).  The output is checked like f's (IT_ESHAPE, IT_EDTYPE,
 * IT_EDEVICE).  With a custom blend the values wait, like a computed
 * window's, until a read completes each tile in lexicographic order. */
int it_tensor_contribute(it_tensor *t, const int64_t *coords, const it_view *out);

/* Convert every cached tile (and deferred custom-blend part) to dtype dt
 * through convert(ctx, src, dst): src is a view of the old values, dst a
 * buffer of the new dtype and the same shape to fill.  All or nothing: on any
 * failure nothing changes.  fill is the new fill element.  IT_ESTATE if a
 * read of the tensor is in progress or starts while convert runs. */
typedef int (*it_convert_fn)(void *ctx, const it_view *src, it_buffer *dst);
int it_tensor_retype(it_tensor *t, it_dtype dt, const void *fill,
                     it_convert_fn convert, void *ctx);
/* The same, moving the tiles to another device as well (dst buffers are
 * then on dev; src views on the old device).  A tensor with a backend may
 * change device but not dtype.  The tensor's reads, f's outputs and args
 * of downstream tensors then live on dev. */
int it_tensor_migrate(it_tensor *t, const it_device *dev, it_dtype dt, const void *fill,
                      it_convert_fn convert, void *ctx);

/* ---- persistent tiles ------------------------------------------------------
 *
 * A tensor may have a backend: a store that keeps tiles beyond the cache.
 * With one, a tile missing from the cache is first looked up in the backend
 * (values and contribution bitmap together), and a tile changed since it was
 * loaded or last written ("dirty") is written back before the cache evicts
 * it and when the tensor is flushed.  A tile is always stored as one record
 * of values plus bitmap, so whatever is stored is self-consistent: a window
 * whose bit is set has its values in that tile, and one whose bit is clear
 * has not.  That is the whole crash-safety argument on the core's side: a
 * backend that makes each record atomic (and commits in the order it is
 * given them) can lose a window only where it was not yet written, and the
 * window is then recomputed and added only to the tiles that lack it.
 *
 * Custom blends: parts of windows waiting for a tile's completion (see
 * contribute.c) are not stored; their windows are recomputed when needed.
 */
#define IT_BACKEND_VERSION 1

/* One tile as the backend sees it. */
typedef struct it_tile_io {
    int ninf;
    const int64_t *coord;  /* ninf tile coordinates */
    it_buffer *buf;        /* values: the tensor's tile shape and dtype, in host
                            * memory (a device tile is staged through it) */
    int ncoords;
    const int64_t *dom_lo; /* the windows that can touch the tile: ncoords */
    const int64_t *dom_n;  /*   ranges, first index and count */
    uint64_t *bits;        /* bitmap over that domain, row-major; with
                            * IT_BACKEND_FOLDS, fold counts after it (fold.c) */
    int64_t nbits;
} it_tile_io;

typedef struct it_backend {
    int version; /* IT_BACKEND_VERSION */
    /* Fill io->buf and io->bits with the stored tile at io->coord (on entry
     * buf holds the fill value and bits are clear).  *found = 0 when none is
     * stored.  Must not touch the tensor (it runs in the middle of a read). */
    int (*load)(void *ctx, it_tile_io *io, int *found);
    /* Store the tile (values and bitmap as one record). */
    int (*store)(void *ctx, const it_tile_io *io);
    /* Free ctx (the tensor is destroyed or gets another backend). */
    void (*free)(void *ctx);
} it_backend;

#define IT_BACKEND_READONLY 1 /* windows cannot be computed: reads of missing ones fail */
/* load is thread-safe and touches no caller state (no Python): the core
 * calls it with the caller's lock released (it_set_lock_hooks), so other
 * threads run meanwhile; a thread needing the tile waits for the load. */
#define IT_BACKEND_UNLOCKED_LOAD 2
/* The backend stores records of it_tensor_record_bits(t, 1) bits: the
 * bitmap followed by the fold counts of a tensor whose float sums fold in
 * window order (fold.c).  Without it such a tensor adds windows in the order
 * they arrive, and records are the bitmap alone. */
#define IT_BACKEND_FOLDS 4

/* Give t a backend (copied; ctx owned from now on, even on failure).
 * IT_ESTATE if t already caches tiles (they would shadow stored ones). */
int it_tensor_set_backend(it_tensor *t, const it_backend *backend, void *ctx, int flags);
/* Write every dirty tile of t to its backend.  On failure the unwritten
 * tiles stay dirty and cached; a later flush retries them. */
int it_tensor_flush(it_tensor *t);
/* Dirty tiles of t right now. */
int64_t it_tensor_dirty(const it_tensor *t);
/* An upper bound of the windows that can touch one tile (bitmap bits):
 * it_window_block_max of the output window over a tile. */
int64_t it_tensor_max_domain(const it_tensor *t);
/* An upper bound of a tile record's bits (io->nbits): the bitmap, plus the
 * fold counts when with_folds and t's sums fold in window order; the same
 * as it_tensor_max_domain otherwise. */
int64_t it_tensor_record_bits(const it_tensor *t, int with_folds);
/* 1 if t's sums fold in window order, whatever the order of reads (fold.c):
 * its tiles may then also hold parts of windows waiting for earlier ones. */
int it_tensor_canonical(const it_tensor *t);
/* Bytes of window parts waiting on t's tiles for earlier windows (custom
 * blends: for their tile's completion), cached or parked for evicted tiles.
 * The cached ones count in it_tensor_bytes too. */
int64_t it_tensor_waiting_bytes(const it_tensor *t);
#ifdef __cplusplus
}
#endif
#endif
