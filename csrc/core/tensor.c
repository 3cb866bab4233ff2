/*
 * tensor.c - the public API of tensor nodes (it_tensor.h): creating one
 * (checking the spec, picking tile extents), references, reading a box,
 * clearing, trimming and flushing the tiles, attaching a backend, asking
 * whether a window is done or adding one from outside, and converting the
 * tiles to another dtype or device.  How a read flows through the engine's
 * files is in engine.h; this file checks the arguments, then calls down.
 *
 * Locking: none; the caller serialises every call (it_common.h, "Threads").
 */
#include "engine.h"

#include <math.h>
#include <string.h>

#define TILE_TARGET_ELEMS 8192
/* Device tiles are bigger: each operation on device memory costs a kernel
 * launch (microseconds), whatever its size, so fewer, larger pieces per
 * window and per read win where host tiles favour the CPU caches. */
#define TILE_TARGET_DEVICE_ELEMS (1 << 20)
/* Windows of a stride above the target get a tile each (up to this many
 * elements): a window's output then lands in one tile instead of a dozen,
 * in rows as long as the window's, and an argument region is gathered from
 * a few tiles. */
#define TILE_WINDOW_MAX_ELEMS (1 << 22)
#define TILE_MAX_BYTES (((int64_t)1) << 40)

static int check_box(const it_tensor *t, const it_box *box, int *empty)
{
    *empty = 0;
    if (box->ndim != t->ndim)
        return it_error_set(IT_EINVAL, "a %d-d box for a %d-d tensor", box->ndim, t->ndim);
    for (int d = 0; d < t->ndim; d++) {
        if (box->step[d] < 1)
            return it_error_set(IT_EINVAL, "step must be positive, got %lld", (long long)box->step[d]);
        if (box->start[d] < -IT_COORD_LIMIT || box->start[d] > IT_COORD_LIMIT ||
            box->stop[d] < -IT_COORD_LIMIT || box->stop[d] > IT_COORD_LIMIT)
            return it_error_set(IT_ERANGE, "coordinates must lie within +-2**%d", IT_COORD_LIMIT_LOG2);
        *empty |= it_box_extent(box, d) == 0;
    }
    int64_t numel;
    return it_box_numel(box, &numel);
}

/* The regions of n boxes, one after the other (empty boxes have none), and
 * where each box's end: (*group_end)[i], *ngroups of them. */
static int boxes_regions(const it_tensor *t, const it_box *boxes, int64_t n, const int *empty, regions *rg,
                         int64_t **starts, int64_t **stops, int64_t *count, int64_t *group_end, int64_t *ngroups)
{
    int64_t total = 0;
    int rc = IT_OK;
    *starts = *stops = NULL;
    *ngroups = 0;
    for (int64_t i = 0; i < n && rc == IT_OK; i++)
        if (!empty[i] && (rc = it__box_regions(t, &boxes[i], &rg[i])) == IT_OK)
            total += rg[i].n;
    if (rc == IT_OK && total > 0) {
        *starts = it_malloc(sizeof(int64_t) * (size_t)(total * t->ndim));
        *stops = it_malloc(sizeof(int64_t) * (size_t)(total * t->ndim));
        if (!*starts || !*stops)
            rc = it_error_set(IT_ENOMEM, "out of memory planning %lld regions", (long long)n);
    }
    for (int64_t i = 0, at = 0; i < n && rc == IT_OK; i++) {
        if (empty[i])
            continue;
        size_t sz = sizeof(int64_t) * (size_t)(rg[i].n * t->ndim);
        memcpy(*starts + at * t->ndim, rg[i].start, sz);
        memcpy(*stops + at * t->ndim, rg[i].stop, sz);
        at += rg[i].n;
        group_end[(*ngroups)++] = at;
    }
    *count = total;
    return rc;
}

static int read_many(it_tensor *t, const it_box *boxes, int64_t n, int flags, it_buffer **outs);

int it_tensor_read_many(it_tensor *t, const it_box *boxes, int64_t n, int flags, it_buffer **outs)
{
    int64_t t0 = it__now_ns(), windows = t->stats.windows;
    int rc = read_many(t, boxes, n, flags, outs);
    t->stats.reads++;
    t->stats.cached_reads += t->stats.windows == windows;
    t->stats.read_ns += it__now_ns() - t0;
    for (int64_t i = 0; i < n && rc == IT_OK; i++)
        t->stats.bytes_read += (int64_t)outs[i]->nbytes;
    return rc;
}

static int read_many(it_tensor *t, const it_box *boxes, int64_t n, int flags, it_buffer **outs)
{
    int rc = IT_OK, *empty = NULL;
    regions *rg = NULL, one_rg;
    int64_t *starts = NULL, *stops = NULL, *group_end = NULL, nreg = 0, ngroups = 0;
    for (int64_t i = 0; i < n; i++)
        outs[i] = NULL;
    if (n == 0)
        return IT_OK;
    empty = it_calloc((size_t)n, sizeof *empty);
    group_end = it_calloc((size_t)n, sizeof *group_end);
    memset(&one_rg, 0, sizeof one_rg);
    rg = n == 1 ? &one_rg : it_calloc((size_t)n, sizeof *rg); /* zeroed: regions_free takes it */
    if (!empty || !group_end || !rg) {
        rc = it_error_set(IT_ENOMEM, "out of memory reading %lld regions", (long long)n);
        goto done;
    }
    for (int64_t i = 0; i < n && rc == IT_OK; i++)
        rc = check_box(t, &boxes[i], &empty[i]);
    for (int64_t i = 0; i < n && rc == IT_OK; i++) {
        if (empty[i] || (flags & IT_READ_NO_COMPUTE))
            continue;
        int64_t rstop[IT_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) /* the samples' hull */
            rstop[d] = boxes[i].start[d] + (it_box_extent(&boxes[i], d) - 1) * boxes[i].step[d] + 1;
        rc = it__reach_check(t, boxes[i].start, rstop);
    }
    /* the results are allocated first: regions too large to hold fail here,
     * before any window is computed */
    for (int64_t i = 0; i < n && rc == IT_OK; i++)
        rc = it__box_buffer(t, &boxes[i], &outs[i]);
    if (rc == IT_OK)
        rc = boxes_regions(t, boxes, n, empty, rg, &starts, &stops, &nreg, group_end, &ngroups);
    if (rc == IT_OK && nreg > 0) {
        read_ctx ctx;
        uint64_t gen = t->generation;
        it__ctx_init(&ctx, flags);
        if (n == 1)
            it__sink_open(&ctx, t, &boxes[0], &rg[0], outs[0]);
        rc = it__ensure(&ctx, t, starts, stops, nreg, group_end, ngroups);
        if (rc == IT_OK && t->generation != gen)
            rc = it_error_set(IT_ESTATE, CLEARED_MSG);
        for (int64_t i = 0; i < n && rc == IT_OK; i++)
            if (!empty[i])
                rc = it__assemble_into(&ctx, t, &boxes[i], &rg[i], outs[i]);
        it__ctx_release(&ctx);
    }
done:
    if (rg) /* zeroed or filled: either frees */
        for (int64_t i = 0; i < n; i++)
            it__regions_free(&rg[i]);
    if (rg != &one_rg)
        it_free(rg);
    it_free(empty);
    it_free(group_end);
    it_free(starts);
    it_free(stops);
    if (rc)
        for (int64_t i = 0; i < n; i++) {
            it_buffer_free(outs[i]);
            outs[i] = NULL;
        }
    return rc;
}

int it_tensor_read(it_tensor *t, const it_box *box, int flags, it_buffer **out)
{
    return it_tensor_read_many(t, box, 1, flags, out);
}

void it_tensor_get_stats(const it_tensor *t, it_tensor_stats *out) { *out = t->stats; }
void it_tensor_reset_stats(it_tensor *t) { memset(&t->stats, 0, sizeof t->stats); }

/* Check a list of windows: each must lie inside the finite dims and within
 * the coordinate limits, and what it reads upstream too. */
static int check_windows(const it_tensor *t, const int64_t *windows, int64_t n)
{
    int K = t->ncoords, rc;
    for (int64_t i = 0; i < n; i++) {
        int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
        if ((rc = it_window_bounds(&t->spec.window, windows + i * K, ws, we)))
            return rc;
        for (int d = 0; d < t->ndim; d++)
            if (t->spec.shape[d] != IT_DIM_INFINITE && (ws[d] < 0 || we[d] > t->spec.shape[d]))
                return it_error_set(IT_EINVAL, "window %lld sticks out of finite dim %d", (long long)i, d);
        if ((rc = it__reach_check(t, ws, we)))
            return rc;
    }
    return IT_OK;
}

int it_tensor_compute_windows(it_tensor *t, const int64_t *windows, int64_t n)
{
    int rc;
    if (n <= 0)
        return IT_OK;
    if ((rc = check_windows(t, windows, n)))
        return rc;
    read_ctx ctx;
    it__ctx_init(&ctx, 0);
    rc = it__ensure_windows(&ctx, t, windows, n);
    it__ctx_release(&ctx);
    return rc;
}

int it_tensor_missing_windows(it_tensor *t, const it_box *box, int64_t **windows, int64_t *n)
{
    int empty, rc;
    regions rg;
    winset ws = {0};
    *windows = NULL;
    *n = 0;
    if ((rc = check_box(t, box, &empty)) || empty)
        return rc;
    if ((rc = it__box_regions(t, box, &rg)))
        return rc;
    read_ctx ctx; /* tiles may have to come from the backend */
    it__ctx_init(&ctx, IT_READ_NO_COMPUTE);
    rc = it__plan_missing(&ctx, t, rg.start, rg.stop, rg.n, &ws);
    it__ctx_release(&ctx);
    it__regions_free(&rg);
    if (rc == IT_OK) {
        *windows = ws.tuples; /* the caller frees them */
        *n = ws.n;
        ws.tuples = NULL;
    }
    it__winset_free(&ws);
    return rc;
}

/* min(a * b, cap) for a, b >= 0, without overflowing */
static int64_t capped_mul(int64_t a, int64_t b, int64_t cap)
{
    return b != 0 && a > cap / b ? cap : IT_MIN(a * b, cap);
}

/* Tile extent along infinite dim d when the spec leaves it to us: a multiple
 * of the window stride.  Commutative blends aim at TILE_TARGET_ELEMS per
 * tile (TILE_TARGET_DEVICE_ELEMS on a device).  A custom blend completes
 * every tile a read touches (contribute.c), so its tiles are about one
 * window wide: a read then computes at most one window beyond its edge per
 * side. */
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
        double big_per = TILE_WINDOW_MAX_ELEMS / (double)finite_elems;
        double big_target = big_per > 1 ? pow(big_per, 1.0 / ninf) : 1.0;
        k = (int64_t)llround(target / (double)unit);
        if (k == 0) { /* the stride is over twice the target: one window per tile */
            int64_t most = IT_MAX((int64_t)llround(big_target), 1);
            return IT_MIN(IT_MIN(unit, size), most);
        }
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
            return it_error_set(IT_EINVAL, "dim %d must be infinite or in [1, 2**%d], got %lld", d,
                                IT_PARAM_LIMIT_LOG2, (long long)e);
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
            return it_error_set(IT_EINVAL, "tile_shape[%d] must be in [1, 2**%d], or 0 to pick one, got %lld",
                                d, IT_PARAM_LIMIT_LOG2, (long long)spec->tile_shape[d]);

    it_mean_state *mean = NULL;
    if (spec->mean && (rc = it__mean_copy(spec, &mean)))
        return rc;
    it_tensor *t = it_calloc(1, sizeof *t);
    if (!t) {
        it__mean_free(mean);
        return it_error_set(IT_ENOMEM, "out of memory creating a tensor");
    }
    t->spec = *spec;
    t->mean = mean;
    t->spec.mean = mean ? &mean->pub : NULL;
    if (spec->nargs > 0) {
        t->args = it_calloc((size_t)spec->nargs, sizeof *t->args);
        t->arg_windows = it_calloc((size_t)spec->nargs, sizeof *t->arg_windows);
        if (!t->args || !t->arg_windows) {
            it_free(t->args);
            it_free(t->arg_windows);
            it__mean_free(mean);
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
    t->disjoint = it_window_disjoint(&t->spec.window);
    t->canon = t->counted = it__canon_wanted(t);
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
    it__mean_free(t->mean);
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
    it__parked_free(t);
    for (size_t i = 0; i < t->nbuckets; i++) {
        while (t->buckets[i]) {
            it_tile *tile = t->buckets[i];
            if (tile->ce.pins == 0)
                it__tile_evict(tile);
            else
                it__table_unlink(t, tile); /* an orphan, freed by its last unpin */
        }
    }
}

void it_tensor_trim(it_tensor *t, int64_t byte_limit) { it__cache_trim_owner(t->cache, t, &t->bytes, byte_limit); }

/* a + b for a, b >= 0, saturating */
static int64_t capped_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

void it_tensor_read_estimate(const it_tensor *t, const it_box *boxes, int64_t n, it_read_estimate *out)
{
    const it_tensor_spec *s = &t->spec;
    int64_t es = (int64_t)it_dtype_size(s->dtype), windows = 0;
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < n; i++) {
        const it_box *b = &boxes[i];
        /* the windows meeting the box bound the batch f can get */
        int64_t lo[IT_MAX_DIMS], count[IT_MAX_DIMS], total;
        if (it_window_domain(&s->window, s->shape, b->start, b->stop, lo, count, &total) != IT_OK) {
            total = INT64_MAX; /* past counting (an error left for the read to report) */
            it_error_clear();
        }
        windows = capped_add(windows, total);
        int64_t elems = 1, tiles = 1, tile_elems = 1, empty = 0;
        for (int d = 0; d < s->ndim; d++) {
            int64_t len = b->stop[d] > b->start[d] ? b->stop[d] - b->start[d] : 0;
            int64_t samples = len ? (len - 1) / b->step[d] + 1 : 0;
            empty |= samples == 0;
            elems = capped_mul(elems, samples, INT64_MAX);
            if (s->shape[d] != IT_DIM_INFINITE) { /* a tile holds the whole dim */
                tile_elems = capped_mul(tile_elems, s->shape[d], INT64_MAX);
                continue;
            }
            int64_t T = t->tshape[d];
            tile_elems = capped_mul(tile_elems, T, INT64_MAX);
            if (!samples)
                continue;
            /* samples further apart than a tile each have their own tile;
             * closer ones leave none between the first and the last out */
            int64_t last = b->start[d] + (samples - 1) * b->step[d];
            int64_t span = it_floordiv(last, T) - it_floordiv(b->start[d], T) + 1;
            tiles = capped_mul(tiles, b->step[d] > T ? samples : span, INT64_MAX);
        }
        out->result_bytes = capped_add(out->result_bytes, capped_mul(elems, es, INT64_MAX));
        if (!empty && tiles > out->tiles) {
            out->tiles = tiles;
            out->tile_bytes = capped_mul(tiles, capped_mul(tile_elems, es, INT64_MAX), INT64_MAX);
        }
    }
    int64_t batch = IT_MIN(IT_MAX(s->batch_size, 1), windows), per = t->window_bytes;
    for (int a = 0; a < s->nargs; a++) {
        const it_window *w = &s->arg_windows[a];
        int64_t e = (int64_t)it_dtype_size(s->args[a]->spec.dtype);
        for (int d = 0; d < w->ndim; d++)
            e = capped_mul(e, w->size[d], INT64_MAX);
        per = capped_add(per, e);
    }
    out->batch_bytes = capped_mul(batch, per, INT64_MAX);
    out->cached_bytes = t->bytes;
    out->needed = out->result_bytes;
    if (out->tile_bytes > out->cached_bytes) {
        out->needed = capped_add(out->needed, out->tile_bytes - out->cached_bytes);
        out->needed = capped_add(out->needed, out->batch_bytes);
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
    if (flags & IT_BACKEND_FOLDS)
        t->counted = it__record_counted(t);
    else
        t->canon = t->counted = 0; /* its records cannot say which cells hold which windows */
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
        if (rc == IT_OK && !it__tile_orphan(dirty[i]))
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
    return it_window_block_max(&t->spec.window, t->spec.shape, t->tshape);
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
    if (!it__clip_finite(t, ws, we))
        return IT_OK;
    read_ctx ctx; /* tiles may have to come from the backend */
    it__ctx_init(&ctx, IT_READ_NO_COMPUTE);
    tile_walk tw;
    it__tiles_first(&tw, t, ws, we);
    const int64_t *tc = tw.tc;
    int all = 1;
    do {
        it_tile *tile;
        if ((rc = it__get_tile(&ctx, t, tc, 0, &tile)))
            break;
        int64_t bit = tile ? it__bit_index(t, tile, coords) : -1;
        /* a float sum's part waiting on the tile for earlier windows is
         * there too: a read would not compute the window again */
        if ((bit < 0 || !it__has_bit(tile, bit)) &&
            !(bit >= 0 && t->canon && tile->deferred && it__deferred_has(t, tile, coords))) {
            all = 0;
            break;
        }
    } while (it__tiles_next(&tw));
    it__ctx_release(&ctx);
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
    it__ctx_init(&ctx, 0);
    /* a custom blend must fold windows in order: with a fresh context no
     * tile is being completed, so the values wait on the tiles' lists */
    rc = it__contribute(&ctx, t, coords, out, t->spec.combine == IT_COMBINE_CUSTOM);
    it__ctx_release(&ctx);
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
    if (t->spec.mean && (!it_mean_dtype_ok(dt) || dev->ops))
        return it_error_set(IT_EDTYPE, "the mean blend needs a floating dtype in host memory");
    if (t->backend.load && dt != t->spec.dtype)
        return it_error_set(IT_ESTATE, "the tiles of a tensor with a backend cannot change dtype");
    if (!dev->ops && dev->type != IT_DEVICE_CPU)
        return it_error_set(IT_EDEVICE, "device type %d needs a device-ops table", dev->type);
    it__parked_free(t); /* parked parts stay where they are: their windows are computed again */
    /* the tiles and the deferred parts to convert, pinned while convert (a
     * callback) runs; nothing may be reading the tensor meanwhile */
    int64_t ntiles = t->ntiles, nparts = 0, k = 0;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (it_tile *p = t->buckets[i]; p; p = p->hnext) {
            if (p->ce.pins > 0)
                return it_error_set(IT_ESTATE, "a read of this tensor is in progress; convert it afterwards");
            for (it_deferred *d = p->deferred; d; d = d->next)
                nparts++;
        }
    it_tile **tiles = it_calloc((size_t)ntiles + 1, sizeof *tiles);
    it_buffer **fresh = it_calloc((size_t)(ntiles + nparts) + 1, sizeof *fresh);
    read_ctx ctx;
    it__ctx_init(&ctx, 0);
    if (!tiles || !fresh)
        rc = it_error_set(IT_ENOMEM, "out of memory converting tiles");
    for (size_t i = 0; i < t->nbuckets && rc == IT_OK; i++)
        for (it_tile *p = t->buckets[i]; p && rc == IT_OK; p = p->hnext) {
            tiles[k++] = p;
            rc = it__ctx_pin(&ctx, p);
        }
    uint64_t gen = t->generation, mut = t->mutations;
    int64_t f = 0;
    for (int64_t i = 0; i < ntiles && rc == IT_OK; i++) {
        it_tile *p = tiles[i];
        it_view src;
        it__tile_values(t, p);
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
        if (tiles[i]->ce.pins != 1)
            rc = it_error_set(IT_ESTATE, "a read of this tensor started during the conversion; try again");
    if (rc == IT_OK) {
        f = 0;
        for (int64_t i = 0; i < ntiles; i++) {
            it_tile *p = tiles[i];
            /* out of the cache's counts under the old buffers, back in under
             * the new ones (the device may count elsewhere) */
            it__cache_remove(&p->ce);
            t->bytes -= p->ce.bytes;
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
            p->ce.bytes = (int64_t)p->buf->nbytes + p->extra_bytes;
            p->ce.device = dev->ops != NULL;
            it__cache_add(t->cache, &p->ce);
            t->bytes += p->ce.bytes;
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
    it__ctx_release(&ctx);
    return rc;
}
