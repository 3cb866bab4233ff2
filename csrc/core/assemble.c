/*
 * assemble.c - copying a box out of the tiles (step 4 of a read, engine.h),
 * and the argument regions of the windows a read computes.
 *
 * A read with a large step samples few pixels from a long span; planning and
 * assembling the whole span would visit every tile (and window) between the
 * samples.  So a box is cut into "regions": along an infinite dim with step
 * > 1, one segment per tile that holds samples ([first sample, last sample +
 * 1) inside that tile); along other dims, the whole sampled span.  The
 * regions are the product of the segments.  A box of step 1 is one region.
 *
 * Assembling fills the result with the fill value first if part of it lies
 * outside the finite dims or in a missing tile, then gathers one copy per
 * tile (a copy plan) and runs them: spread over the thread pool (pool.c)
 * when they move enough bytes, since they touch disjoint parts of the
 * result and only read tiles the read has pinned; in order on a device.
 *
 * Host copies of UNLOCK_MIN_BYTES or more run with the caller's lock
 * released (the GIL, through the lock hooks of it_common.h), so other
 * threads plan, run f or copy meanwhile.  That is safe because the copies
 * touch nothing shared but the pixels they read:
 *   - every tile in the plan is pinned in the read's context (no eviction
 *     or free until the read ends; a clear only orphans it);
 *   - every window meeting the box is in its tiles already, so nobody adds
 *     to the pixels copied (another thread's windows cover other pixels);
 *   - a lazy tile's values were made valid while planning, under the lock;
 *   - it_tensor_migrate refuses to convert a tensor with a pinned tile;
 *   - the result is the caller's own, and the plan lives on this stack.
 * Device copies run under the lock: the device table calls into torch.
 *
 * Writing through.  When no two windows overlap (it_window_disjoint), a
 * pixel's value is final as soon as its one window is added.  A read of a
 * step-1 box then copies each window's part of a tile into its result right
 * after adding it (it__sink_write), while the tile's bytes are still in the
 * CPU's caches, and counts the pixels per tile (wt_serial, wt_pixels).  The
 * assembly that follows skips every tile whose part of the box was written
 * through whole, so a cold read moves each byte of its box from a hot tile
 * instead of from memory.  The count is the read's own (another read that
 * writes through the same tile resets it to its serial), and anything less
 * than the whole part, or a result pre-filled for missing tiles, is copied
 * as usual: the skip is only ever an optimisation.
 */
#include "engine.h"
#include "it_pool.h"

#include <string.h>

/* Below this, giving the caller's lock up and taking it back (and the
 * chance of waiting for another thread's turn) costs more than it frees. */
#define UNLOCK_MIN_BYTES (((int64_t)1) << 16)

/* ---- the parts of a box that hold samples -------------------------------- */

void it__regions_free(regions *r)
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

/* Cut a non-empty box into regions (see the top of this file). */
int it__box_regions(const it_tensor *t, const it_box *box, regions *r)
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
            it__odometer_next(idx, zero, nseg, t->ndim);
        }
    }
    for (int d = 0; d < t->ndim; d++) {
        it_free(sa[d]);
        it_free(sb[d]);
    }
    if (rc)
        it__regions_free(r);
    return rc;
}

/* ---- writing through ------------------------------------------------------ */

void it__sink_open(read_ctx *ctx, it_tensor *t, const it_box *box, const regions *rg, it_buffer *buf)
{
    if (!t->disjoint || t->dev.ops || t->spec.combine == IT_COMBINE_CUSTOM || rg->n != 1)
        return;
    for (int d = 0; d < t->ndim; d++)
        if (box->step[d] != 1)
            return;
    ctx->sink = (read_sink){t, buf, box->start, box->stop};
}

/* Volume of [a, b) per dim, or 0 if empty. */
static int64_t box_volume(int ndim, const int64_t *a, const int64_t *b)
{
    int64_t v = 1;
    for (int d = 0; d < ndim; d++)
        v *= b[d] > a[d] ? b[d] - a[d] : 0;
    return v;
}

void it__sink_write(read_ctx *ctx, it_tensor *t, it_tile *tile, const int64_t *a, const int64_t *shape)
{
    const read_sink *s = &ctx->sink;
    int64_t lo[IT_MAX_DIMS], hi[IT_MAX_DIMS], n[IT_MAX_DIMS], ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
    it__tile_box(t, tile->coord, ts, te);
    const char *src = tile->buf->data;
    char *dst = s->buf->data;
    for (int d = 0; d < t->ndim; d++) {
        lo[d] = IT_MAX(a[d], s->start[d]);
        hi[d] = IT_MIN(a[d] + shape[d], s->stop[d]);
        if (lo[d] >= hi[d])
            return;
        n[d] = hi[d] - lo[d];
        src += (lo[d] - ts[d]) * t->tstrides[d];
        dst += (lo[d] - s->start[d]) * s->buf->strides[d];
    }
    it_copy_nd(t->elsize, t->ndim, n, dst, s->buf->strides, src, t->tstrides);
    if (tile->wt_serial != ctx->serial) {
        tile->wt_serial = ctx->serial;
        tile->wt_pixels = 0;
    }
    tile->wt_pixels += box_volume(t->ndim, lo, hi);
}

/* 1 if the read wrote tile's part [lo, hi) of its box through whole. */
static int written_through(const read_ctx *ctx, const it_buffer *buf, const it_tile *tile, const int64_t *lo,
                           const int64_t *hi, int ndim)
{
    return ctx->sink.buf == buf && tile->wt_serial == ctx->serial && tile->wt_pixels == box_volume(ndim, lo, hi);
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
    read_ctx *ctx; /* pins every tile copied from */
    int prefilled; /* the result was filled first: write-throughs were overwritten */
    it_tensor *t;
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
    return it__dev_apply(p->t, IT_COMBINE_COPY, job->n, job->dst, p->buf->strides, job->src, job->ss);
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
    it_tensor *t = p->t;
    const it_buffer *buf = p->buf;
    tile_walk tw;
    it__tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        if ((rc = it__ready_tile(p->ctx, t, tc, &tile)))
            return rc;
        if (!tile && p->prefilled)
            continue;
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS], lo[IT_MAX_DIMS], hi[IT_MAX_DIMS];
        it__tile_box(t, tc, ts, te);
        for (int d = 0; d < t->ndim; d++) {
            lo[d] = IT_MAX(ts[d], start[d]);
            hi[d] = IT_MIN(te[d], stop[d]);
        }
        if (tile && !p->prefilled && written_through(p->ctx, buf, tile, lo, hi, t->ndim))
            continue;
        copy_job job;
        int64_t src_off = 0;
        int skip = 0;
        job.dst = buf->data;
        for (int d = 0; d < t->ndim; d++) {
            int64_t step = box->step[d];
            int64_t i0 = samples_before(lo[d], box->start[d], step);
            int64_t i1 = IT_MIN(buf->shape[d], samples_before(hi[d], box->start[d], step));
            if (i0 >= i1) {
                skip = 1;
                break;
            }
            job.n[d] = i1 - i0;
            src_off += (box->start[d] + i0 * step - ts[d]) * t->tstrides[d];
            job.dst += i0 * buf->strides[d];
            /* a step longer than the tile leaves one sample here: its stride
             * is never used (and the product could overflow) */
            job.ss[d] = job.n[d] > 1 ? t->tstrides[d] * step : 0;
        }
        if (skip)
            continue;
        if (!tile) {
            /* present when the fill was decided, dropped since (another
             * thread's load failed): its part holds the fill value */
            it_view v;
            it_view_make(&v, &t->dev, job.dst, t->spec.dtype, t->ndim, job.n, buf->strides);
            if ((rc = it_dev_fill(&t->dev, &v, t->spec.fill)))
                return rc;
            continue;
        }
        it__tile_values(t, tile);
        job.src = (const char *)tile->buf->data + src_off;
        if ((rc = plan_copy(p, &job)))
            return rc;
    } while (it__tiles_next(&tw));
    return IT_OK;
}

/* 1 if some tile meeting [start, stop) is missing. */
static int tiles_missing(const it_tensor *t, const int64_t *start, const int64_t *stop)
{
    tile_walk tw;
    it__tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        if (!it__tile_lookup(t, tc))
            return 1;
    } while (it__tiles_next(&tw));
    return 0;
}

/* Copy the box (with steps) out of t's tiles into buf (shaped like the box);
 * pixels outside the finite dims or in missing tiles hold the fill value. */
int it__assemble_into(read_ctx *ctx, it_tensor *t, const it_box *box, const regions *rg, it_buffer *buf)
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
        need_fill = need_fill || !it__clip_finite(t, start, stop) || tiles_missing(t, start, stop);
    }
    if (need_fill) {
        it_view v;
        it_buffer_view(buf, &v);
        if ((rc = it_dev_fill(&t->dev, &v, t->spec.fill)))
            return rc;
    }
    copy_plan plan = {.ctx = ctx, .prefilled = need_fill, .t = t, .buf = buf, .cap = 4};
    plan.jobs = plan.local;
    for (int64_t i = 0; i < rg->n && rc == IT_OK; i++) {
        int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
        if (it__clipped_region(t, rg->start, rg->stop, i, start, stop))
            rc = copy_tiles(&plan, box, start, stop);
    }
    if (rc == IT_OK && t->dev.ops) {
        for (int64_t j = 0; j < plan.n && rc == IT_OK; j++) /* in the device's order */
            rc = dev_copy(&plan, &plan.jobs[j]);
    } else if (rc == IT_OK) {
        void *token = plan.bytes >= UNLOCK_MIN_BYTES ? it__unlock() : NULL;
        if (plan.bytes >= it_pool_min_bytes())
            it_parallel_for(plan.n, run_copy, &plan);
        else
            for (int64_t j = 0; j < plan.n; j++)
                run_copy(&plan, j);
        if (plan.bytes >= UNLOCK_MIN_BYTES)
            it__relock(token);
    }
    if (plan.jobs != plan.local)
        it_free(plan.jobs);
    if (rc == IT_OK && t->spec.mean) /* weighted sums to means (mean.c) */
        it__mean_normalize(t, box, buf);
    return rc;
}

/* A new buffer shaped like the box. */
int it__box_buffer(const it_tensor *t, const it_box *box, it_buffer **out)
{
    int64_t shape[IT_MAX_DIMS] = {0};
    for (int d = 0; d < t->ndim; d++)
        shape[d] = it_box_extent(box, d);
    return it_buffer_create_on(&t->dev, t->spec.dtype, t->ndim, shape, out);
}

/* Assemble a step-1 box (an argument region) into a new buffer. */
int it__assemble_box(read_ctx *ctx, it_tensor *t, const it_box *box, it_buffer **out)
{
    regions rg;
    int rc = it__box_buffer(t, box, out);
    if (rc)
        return rc;
    rg.n = 1;
    rg.start = rg.one_start;
    rg.stop = rg.one_stop;
    memcpy(rg.one_start, box->start, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(rg.one_stop, box->stop, sizeof(int64_t) * (size_t)t->ndim);
    if ((rc = it__assemble_into(ctx, t, box, &rg, *out))) {
        it_buffer_free(*out);
        *out = NULL;
    }
    return rc;
}
