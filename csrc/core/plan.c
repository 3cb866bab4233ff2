/*
 * plan.c - the planner: which windows a read must compute, computing them in
 * batches, the claims and waits of threads that need the same windows, and
 * the reach check made before any f runs.
 *
 * Steps 1 to 3 of a read (engine.h) are it__ensure: plan the regions of a
 * tensor into a set of pending windows (plan_region, collect_missing;
 * a cold read of one region, none of whose tiles exists, takes every window
 * meeting it without hashing), ensure in the same read context the upstream
 * regions those windows read, then compute them in batches (compute_pending)
 * and add each output to its tiles (contribute.c).  A custom-blend read marks the
 * tiles it completes while planning, and afterwards folds their remaining
 * deferred parts in and checks that they are complete (finish_region).
 *
 * Order.  Windows reach f in the order 0.4 gives them: each region's in
 * lexicographic order, then the new ones of the next region, and so on (a
 * list of windows: the list's order).  The regions are the user's (a list
 * read) or, upstream, the argument windows of the pending windows in their
 * order, so a batched f anywhere in a pipeline gets 0.4's batches.  Custom
 * blends are the exception: their windows are computed in lexicographic
 * order, which their fold needs.
 *
 * Re-entrancy.  f may read other tensors: that is a new top-level read with
 * its own context.  A thread-local stack of tensors whose f is running
 * catches f reading its own tensor (directly or through other tensors).
 *
 * Threads: see the claims below, and it_common.h ("Threads") for the
 * caller's lock, which callbacks may release.
 */
#include "engine.h"

#include <string.h>

/* The tensors whose f this thread is running, innermost first. */
typedef struct frame {
    const it_tensor *t;
    struct frame *up;
} frame;

static _Thread_local frame *computing;

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
            int64_t bit = it__bit_index(t, tile, w);
            if ((bit >= 0 && it__has_bit(tile, bit)) || (tile->deferred && it__deferred_has(t, tile, w)))
                continue;
            /* folded into every cell the region needs, if not into all of its
             * part (its waiting parts were not stored: fold.c) */
            if (t->canon && tile->folds && it__fold_covers(t, tile, w, start, stop))
                continue;
        }
        if ((rc = it__winset_add(pending, w)))
            return rc;
    } while (it__odometer_next(w, lo, n, t->ncoords));
    return IT_OK;
}

/* Plan one region: pin its tiles and collect missing windows into pending.
 * With pending NULL, only pin the region's tiles and count those that exist
 * and hold a window (*present). */
static int plan_region(read_ctx *ctx, it_tensor *t, const int64_t *rstart, const int64_t *rstop,
                       winset *pending, int64_t *present)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS];
    int custom = t->spec.combine == IT_COMBINE_CUSTOM;
    int rc;
    if (!it__clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    tile_walk tw;
    it__tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        int64_t ts[IT_MAX_DIMS], te[IT_MAX_DIMS];
        if ((rc = it__get_tile(ctx, t, tc, 0, &tile)))
            return rc;
        if (!pending) {
            *present += tile != NULL && it__tile_holds(tile); /* not an empty one loaded from nothing */
            continue;
        }
        if (tile && tile->ncontrib == tile->ntotal)
            continue;
        it__tile_window_box(t, tc, ts, te);
        if (custom && !(ctx->flags & IT_READ_NO_COMPUTE)) {
            if (tile && tile->mark != 0 && tile->mark != ctx->serial)
                return it_error_set(IT_ESTATE, BUSY_MSG);
            if (!tile) {
                int64_t lo[IT_MAX_DIMS], n[IT_MAX_DIMS], total;
                if ((rc = it_window_domain(&t->spec.window, t->spec.shape, ts, te, lo, n, &total)))
                    return rc;
                if (total == 0)
                    continue;
                if ((rc = it__get_tile(ctx, t, tc, 1, &tile)))
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
    } while (it__tiles_next(&tw));
    return IT_OK;
}

/* Fill an empty set with every window meeting the region [rstart, rstop)
 * (clipped to the finite dims), in lexicographic order, without hashing:
 * the set is only read as a sorted list afterwards. */
static int winset_domain(winset *s, const it_tensor *t, const int64_t *rstart, const int64_t *rstop)
{
    int64_t start[IT_MAX_DIMS], stop[IT_MAX_DIMS], lo[IT_MAX_DIMS], n[IT_MAX_DIMS], total;
    int rc;
    if (!it__clipped_region(t, rstart, rstop, 0, start, stop))
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
        it__odometer_next(w, lo, n, s->k);
    }
    return IT_OK;
}

/* Compute the pending windows of t, in their order, in batches. */
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
            if ((rc = it__ensure(ctx, t->args[a], astart, astop, npend, NULL, 0)))
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
                if ((rc = it__assemble_box(ctx, t->args[a], &box, &argbufs[a * n + i])))
                    goto done;
            }
        }
        it_batch batch = {n, K, coords, nargs, argbufs, outs, NULL, first, npend};
        frame fr = {t, computing};
        computing = &fr;
        int64_t t0 = it__now_ns();
        rc = t->ops.compute(t->user, &batch);
        t->stats.compute_ns += it__now_ns() - t0;
        computing = fr.up;
        for (int64_t i = 0; i < (int64_t)nargs * n; i++) {
            it_buffer_free(argbufs[i]);
            argbufs[i] = NULL;
        }
        if (rc)
            goto done;
        t->stats.batches++;
        t->stats.windows += n;
        for (int64_t i = 0; i < n && rc == IT_OK; i++)
            rc = it__contribute(ctx, t, coords + i * K, &outs[i], t->spec.combine == IT_COMBINE_CUSTOM);
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
    if (!it__clipped_region(t, rstart, rstop, 0, start, stop))
        return IT_OK;
    tile_walk tw;
    it__tiles_first(&tw, t, start, stop);
    const int64_t *tc = tw.tc;
    do {
        it_tile *tile;
        if ((rc = it__ready_tile(ctx, t, tc, &tile)))
            return rc;
        if (!tile)
            continue;
        if (tile->mark == ctx->serial && tile->deferred && (rc = it__flush_deferred(t, tile, NULL)))
            return rc;
        if (tile->ncontrib != tile->ntotal)
            return it_error_set(IT_ESTATE, "a concurrent read of the same tiles is combining them "
                                           "(custom blend); read again");
    } while (it__tiles_next(&tw));
    return IT_OK;
}

/* ---- claims: windows a thread is computing -------------------------------
 *
 * Between planning and contributing, a read calls f, which may let other
 * threads run (the caller's lock is released inside callbacks).  So that
 * each window is computed once, a read claims the windows it is about to
 * compute (the pending set, registered in lexicographic order on the
 * tensor until its batches are done); a read that plans windows someone
 * else claimed computes the rest, then waits for progress and plans again
 * (wait.c).  A thread that
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

/* Drop from the pending set the windows another thread claimed
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
            if (!it__owner_live(c->owner) || !it__winset_has_sorted(c->ws, w))
                continue;
            if (it__owner_is_self(c->owner))
                return it_error_set(IT_ECYCLE, "f of a tensor reads that same tensor (a cycle)");
            taken = 1;
        }
        if (taken) {
            *foreign = 1;
            int rc = it__winset_append(dropped, w);
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
    const winset *wants;
} waiter;
static waiter *waiters;

static int sets_meet(const winset *a, const winset *b)
{
    for (int64_t i = 0; i < a->n; i++)
        if (it__winset_has_sorted(b, a->tuples + i * a->k))
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

/* Compute mine (in its order) with sorted, the same windows in
 * lexicographic order, registered as this thread's claim. */
static int compute_claimed(read_ctx *ctx, it_tensor *t, const winset *mine, const winset *sorted)
{
    claim c = {t->claims, it__owner_self(), sorted};
    t->claims = &c;
    int rc = compute_pending(ctx, t, mine);
    claim **p = &t->claims;
    while (*p != &c)
        p = &(*p)->next;
    *p = c.next;
    it__wait_progress();
    return rc;
}

/* A copy of s in lexicographic order (for the claims' bisection). */
static int sorted_copy(const winset *s, winset *out)
{
    memset(out, 0, sizeof *out);
    out->k = s->k;
    if (s->n == 0)
        return IT_OK;
    if (!(out->tuples = it_malloc(sizeof(int64_t) * (size_t)(s->n * s->k))))
        return it_error_set(IT_ENOMEM, "out of memory planning windows");
    memcpy(out->tuples, s->tuples, sizeof(int64_t) * (size_t)(s->n * s->k));
    out->n = out->cap = s->n;
    return it__winset_sort(out);
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

/* What a read asks of a tensor: the windows meeting some regions, or a
 * list of windows (windows != NULL).  The regions come in groups (a user's
 * region may be cut into several, one per tile of a strided dim): group g
 * is regions [group_end[g - 1], group_end[g]); group_end NULL: one region
 * per group. */
typedef struct want {
    const int64_t *starts, *stops;
    int64_t nregions;
    const int64_t *group_end;
    int64_t ngroups;
    const int64_t *windows;
    int64_t nwindows;
} want;

/* Add to pending each listed window that some tile it touches lacks (or
 * that has no tile yet), pinning those tiles; the list's order is kept. */
static int plan_windows(read_ctx *ctx, it_tensor *t, const int64_t *windows, int64_t n, winset *pending)
{
    int K = t->ncoords, rc;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *w = windows + i * K;
        int64_t ws[IT_MAX_DIMS], we[IT_MAX_DIMS];
        if ((rc = it_window_bounds(&t->spec.window, w, ws, we)))
            return rc;
        if (!it__clip_finite(t, ws, we))
            continue;
        int missing = 0;
        tile_walk tw;
        it__tiles_first(&tw, t, ws, we);
        do {
            it_tile *tile;
            if ((rc = it__get_tile(ctx, t, tw.tc, 0, &tile)))
                return rc;
            int64_t bit = tile ? it__bit_index(t, tile, w) : -1;
            missing |= !tile || (bit >= 0 && !it__has_bit(tile, bit) &&
                                 !(tile->deferred && it__deferred_has(t, tile, w)));
        } while (it__tiles_next(&tw));
        if (missing && (rc = it__winset_add(pending, w)))
            return rc;
    }
    return IT_OK;
}

/* Plan the groups one by one, keeping the order in which windows are first
 * seen: each group's missing windows in lexicographic order, then the next
 * group's that are new (0.4's order). */
static int plan_in_order(read_ctx *ctx, it_tensor *t, const want *wt, winset *pending)
{
    winset one = {0};
    int rc = IT_OK;
    for (int64_t g = 0, r = 0; g < wt->ngroups && rc == IT_OK; g++) {
        int64_t end = wt->group_end ? wt->group_end[g] : g + 1;
        one.k = t->ncoords;
        for (; r < end && rc == IT_OK; r++)
            rc = plan_region(ctx, t, wt->starts + r * t->ndim, wt->stops + r * t->ndim, &one, NULL);
        if (rc == IT_OK)
            rc = it__winset_sort(&one);
        for (int64_t i = 0; i < one.n && rc == IT_OK; i++)
            rc = it__winset_add(pending, one.tuples + i * one.k);
        it__winset_free(&one);
    }
    return rc;
}

/* Plan what wt asks into pending; *sorted is 1 when pending is in
 * lexicographic order, 0 when it keeps the order the windows were asked in
 * (a list of windows, or several groups of regions).  A custom blend folds
 * windows in lexicographic order as they arrive at the tiles a read
 * completes (contribute.c), so its windows are always sorted. */
static int plan(read_ctx *ctx, it_tensor *t, const want *wt, winset *pending, int *sorted)
{
    int rc;
    int64_t present = 0, nregions = wt->nregions;
    *sorted = 0;
    if (wt->windows)
        return plan_windows(ctx, t, wt->windows, wt->nwindows, pending);
    if (wt->ngroups > 1 && t->spec.combine != IT_COMBINE_CUSTOM)
        return plan_in_order(ctx, t, wt, pending);
    *sorted = 1;
    if (nregions == 1 && t->spec.combine != IT_COMBINE_CUSTOM) {
        /* the common cold read: none of the region's tiles exists, so every
         * window meeting the region is pending, in lexicographic order */
        if ((rc = plan_region(ctx, t, wt->starts, wt->stops, NULL, &present)))
            return rc;
        if (present == 0)
            return winset_domain(pending, t, wt->starts, wt->stops);
    }
    for (int64_t r = 0; r < nregions; r++)
        if ((rc = plan_region(ctx, t, wt->starts + r * t->ndim, wt->stops + r * t->ndim, pending, NULL)))
            return rc;
    return it__winset_sort(pending);
}

static int ensure_windows(read_ctx *ctx, it_tensor *t, const want *wt, uint64_t gen)
{
    for (;;) {
        winset pending = {0}, dropped = {0}, sorted = {0};
        int foreign = 0, stale = 0, in_order, rc;
        pending.k = dropped.k = t->ncoords;
        uint64_t seen = it__wait_epoch(), others = it__wait_others_epoch();
        if ((rc = plan(ctx, t, wt, &pending, &in_order)) || pending.n == 0)
            goto next;
        /* Planning may give the lock up (a tile loaded without it, or a wait
         * for a tile another thread is loading), and a window found missing
         * in a tile looked at before may have been computed meanwhile and
         * its claim released: computed again here, it would be computed
         * twice.  So if another thread ended some work while this one
         * planned, plan again: the tiles are pinned and loaded now, and that
         * plan keeps the lock from start to end. */
        if (it__wait_others_epoch() != others) {
            stale = 1;
            goto next;
        }
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
            if (in_order)
                rc = compute_claimed(ctx, t, &pending, &pending);
            else if ((rc = sorted_copy(&pending, &sorted)) == IT_OK)
                rc = compute_claimed(ctx, t, &pending, &sorted);
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
        it__winset_free(&pending);
        it__winset_free(&dropped);
        it__winset_free(&sorted);
        if (rc || (!foreign && !stale))
            return rc;
        if (t->generation != gen)
            return it_error_set(IT_ESTATE, CLEARED_MSG);
    }
}

int it__ensure(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions,
               const int64_t *group_end, int64_t ngroups)
{
    uint64_t gen = t->generation;
    int custom = t->spec.combine == IT_COMBINE_CUSTOM, rc;
    want wt = {starts, stops, nregions, group_end, group_end ? ngroups : nregions, NULL, 0};
    if (custom && (rc = busy_enter(t, gen)))
        return rc;
    rc = ensure_windows(ctx, t, &wt, gen);
    if (custom)
        for (int64_t r = 0; r < nregions && rc == IT_OK; r++)
            rc = finish_region(ctx, t, starts + r * t->ndim, stops + r * t->ndim);
    if (custom)
        busy_leave(ctx, t);
    if (rc == IT_OK && t->generation != gen)
        rc = it_error_set(IT_ESTATE, CLEARED_MSG);
    return rc;
}

int it__ensure_windows(read_ctx *ctx, it_tensor *t, const int64_t *windows, int64_t n)
{
    uint64_t gen = t->generation;
    want wt = {NULL, NULL, 0, NULL, 0, windows, n};
    int rc = ensure_windows(ctx, t, &wt, gen);
    if (rc == IT_OK && t->generation != gen)
        rc = it_error_set(IT_ESTATE, CLEARED_MSG);
    return rc;
}

int it__plan_missing(read_ctx *ctx, it_tensor *t, const int64_t *starts, const int64_t *stops, int64_t nregions,
                     winset *out)
{
    want wt = {starts, stops, nregions, NULL, 1, NULL, 0}; /* one group: one region's order */
    int sorted;
    out->k = t->ncoords;
    return plan(ctx, t, &wt, out, &sorted);
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
    if (!it__clipped_region(t, rstart, rstop, 0, start, stop))
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

int it__reach_check(const it_tensor *t, const int64_t *start, const int64_t *stop)
{
    reach_memo memo;
    memo.n = 0;
    return reach_check(t, start, stop, &memo, 0);
}
