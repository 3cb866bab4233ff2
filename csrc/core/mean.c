/*
 * mean.c - the weighted-mean blend: windows added as value x weight, reads
 * divided by the sum of the weights covering each pixel.
 *
 * A mean tensor (spec.mean) keeps in its tiles the sum over the windows
 * covering a pixel of value x weight, where weight is one window-shaped
 * array shared by every window (contribute.c adds each output that way).
 * The sum of the weights covering a pixel depends on the geometry only: with
 * windows on a product lattice (no dimension_map), along an infinite dim it
 * repeats with the window stride, so it is one array `norm` of the stride's
 * length along each infinite dim (index (x - offset) mod stride) and of the
 * dim's extent along each finite dim, computed once by the caller.  Every
 * assembled region (a read's result, an argument region of a downstream f)
 * is divided by it as its last step; where no window covers a pixel (norm
 * 0) the region holds `empty` (blend_init).  Tiles, and so persistent files,
 * hold the weighted sums; the weights are not stored.
 *
 * Floating dtypes on the host only (the caller checks).  A window is added
 * in the tile's precision (float32, float64; the half types through double),
 * and a read divides in double, rounded once to the dtype (float32 divides
 * in float when every norm entry is a float exactly: the same quotient,
 * rounded once).
 */
#include "engine.h"

#include <string.h>

static double load(it_dtype dt, const char *p)
{
    switch (dt) {
    case IT_F16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return it_half_to_float(h);
    }
    case IT_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return it_bf16_to_float(h);
    }
    case IT_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    default: {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    }
}

static void store(it_dtype dt, char *p, double v)
{
    switch (dt) {
    case IT_F16: {
        uint16_t h = it_float_to_half((float)v);
        memcpy(p, &h, 2);
        break;
    }
    case IT_BF16: {
        uint16_t h = it_float_to_bf16((float)v);
        memcpy(p, &h, 2);
        break;
    }
    case IT_F32: {
        float f = (float)v;
        memcpy(p, &f, 4);
        break;
    }
    default:
        memcpy(p, &v, 8);
    }
}

int it_mean_dtype_ok(it_dtype dt) { return dt == IT_F16 || dt == IT_BF16 || dt == IT_F32 || dt == IT_F64; }

/* One row of dst += src * w (dst and src strides in bytes, w's in
 * elements); float32 and float64 rows of contiguous elements take a loop
 * the compiler vectorises, in the row's own precision. */
/* dst (+)= src * w over n contiguous elements of type T (copy: dst =). */
#define DEFINE_WSUM(NAME, T)                                                                    \
    IT_MULTIVERSION static void NAME(int copy, int64_t n, T *restrict d, const T *restrict s,   \
                                     const T *restrict w)                                       \
    {                                                                                           \
        if (copy)                                                                               \
            for (int64_t i = 0; i < n; i++)                                                     \
                d[i] = (T)0 + s[i] * w[i]; /* 0 + x, as adding into zeros: -0 becomes 0 */     \
        else                                                                                    \
            for (int64_t i = 0; i < n; i++)                                                     \
                d[i] += s[i] * w[i];                                                            \
    }
DEFINE_WSUM(wsum_f32, float)
DEFINE_WSUM(wsum_f64, double)

static void wsum_row(it_dtype dt, int copy, int64_t n, char *dst, int64_t ds, const char *src, int64_t ss,
                     const double *w, const float *wf, int64_t wst)
{
    if (dt == IT_F32 && ds == 4 && ss == 4 && wst == 1 && ((uintptr_t)dst | (uintptr_t)src) % 4 == 0) {
        wsum_f32(copy, n, (float *)dst, (const float *)src, wf);
        return;
    }
    if (dt == IT_F64 && ds == 8 && ss == 8 && wst == 1 && ((uintptr_t)dst | (uintptr_t)src) % 8 == 0) {
        wsum_f64(copy, n, (double *)dst, (const double *)src, w);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        store(dt, dst + i * ds,
              (copy ? 0.0 : load(dt, dst + i * ds)) + load(dt, src + i * ss) * w[i * wst]);
}

static void wsum(it_dtype dt, int copy, int ndim, const int64_t *shape, char *dst, const int64_t *ds,
                 const char *src, const int64_t *ss, const double *w, const float *wf, const int64_t *ws)
{
    if (ndim == 1) {
        wsum_row(dt, copy, shape[0], dst, ds[0], src, ss[0], w, wf, ws[0]);
        return;
    }
    for (int64_t i = 0; i < shape[0]; i++)
        wsum(dt, copy, ndim - 1, shape + 1, dst + i * ds[0], ds + 1, src + i * ss[0], ss + 1, w + i * ws[0],
             wf + i * ws[0], ws + 1);
}

void it__mean_add(const it_tensor *t, int copy, const int64_t *shape, void *dst, const int64_t *dst_strides,
                  const void *src, const int64_t *src_strides, const int64_t *woff)
{
    const it_mean *m = t->spec.mean;
    int64_t ws[IT_MAX_DIMS], at = 0;
    /* the window's weights are contiguous in its shape */
    for (int d = t->ndim - 1, step = 1; d >= 0; step *= (int)t->spec.window.size[d], d--) {
        ws[d] = step;
        at += woff[d] * step;
    }
    wsum(t->spec.dtype, copy, t->ndim, shape, dst, dst_strides, src, src_strides, m->weight + at,
         t->mean->weight_f32 + at, ws);
}

/* The norm's index along dim d of the box's first sample. */
static int64_t norm_index(const it_tensor *t, int d, int64_t x)
{
    if (t->spec.shape[d] != IT_DIM_INFINITE)
        return x;
    int64_t period = t->spec.mean->norm_shape[d], k = (x - t->spec.window.offset[d]) % period;
    return k < 0 ? k + period : k;
}

IT_MULTIVERSION static void div_f32(int64_t n, float *restrict v, const float *restrict w)
{
    for (int64_t j = 0; j < n; j++)
        v[j] /= w[j];
}

/* Divide the box's samples (a contiguous buffer shaped like the box) by the
 * norm at their coordinates, dim by dim; row is the norm's offset so far.
 * Along a dim the norm's index moves by the box's step, wrapping at the
 * period of an infinite dim (no division per sample). */
static void normalize(const it_tensor *t, const it_box *box, int d, char **p, int64_t row)
{
    const it_mean *m = t->spec.mean;
    int64_t n = it_box_extent(box, d), period = m->norm_shape[d], nstride = 1;
    for (int e = d + 1; e < t->ndim; e++)
        nstride *= m->norm_shape[e];
    int inf = t->spec.shape[d] == IT_DIM_INFINITE;
    int64_t k = norm_index(t, d, box->start[d]), step = inf ? box->step[d] % period : box->step[d];
    if (d + 1 == t->ndim && t->spec.dtype == IT_F32 && box->step[d] == 1) {
        /* the common row: float32 samples one apart; runs of the norm's row
         * without a wrap, each a loop the compiler vectorises */
        float *restrict v = (float *)*p;
        const double *nr = m->norm + row;
        const float *nf = t->mean->norm_f32 ? t->mean->norm_f32 + row : NULL;
        for (int64_t i = 0; i < n;) {
            int64_t run = inf ? IT_MIN(n - i, period - k) : n - i;
            if (nf && !t->mean->gaps) { /* one correctly rounded float division, as below */
                div_f32(run, v + i, nf + k);
            } else if (nf) {
                const float *restrict w = nf + k;
                for (int64_t j = 0; j < run; j++)
                    v[i + j] = w[j] > 0 ? v[i + j] / w[j] : 0.0f;
            } else {
                const double *restrict w = nr + k;
                for (int64_t j = 0; j < run; j++)
                    v[i + j] = w[j] > 0 ? (float)((double)v[i + j] / w[j]) : 0.0f;
            }
            if (t->mean->gaps) /* some pixel may be covered by no window */
                for (int64_t j = 0; j < run; j++)
                    if (!(nr[k + j] > 0))
                        memcpy(&v[i + j], m->empty, 4);
            i += run;
            k = inf ? 0 : k + run;
        }
        *p += n * 4;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t at = row + k * nstride;
        if (d + 1 < t->ndim) {
            normalize(t, box, d + 1, p, at);
        } else {
            double wsum_ = m->norm[at];
            if (wsum_ > 0)
                store(t->spec.dtype, *p, load(t->spec.dtype, *p) / wsum_);
            else
                memcpy(*p, m->empty, t->elsize);
            *p += t->elsize;
        }
        k += step;
        if (inf && k >= period)
            k -= period;
    }
}

void it__mean_normalize(const it_tensor *t, const it_box *box, it_buffer *buf)
{
    for (int d = 0; d < t->ndim; d++)
        if (it_box_extent(box, d) == 0)
            return;
    char *p = buf->data;
    normalize(t, box, 0, &p, 0);
}

int it__mean_copy(const it_tensor_spec *spec, it_mean_state **out)
{
    const it_mean *m = spec->mean;
    int64_t nw = 1, nn = 1;
    *out = NULL;
    if (!it_mean_dtype_ok(spec->dtype))
        return it_error_set(IT_EDTYPE, "the mean blend needs a floating dtype, got %s", it_dtype_name(spec->dtype));
    if (spec->devops)
        return it_error_set(IT_EDEVICE, "the mean blend is not available on devices yet");
    if (spec->combine != IT_COMBINE_SUM)
        return it_error_set(IT_EINVAL, "the mean blend adds weighted windows: combine must be SUM");
    for (int d = 0; d < spec->ndim; d++) {
        if (spec->window.map[d] != d)
            return it_error_set(IT_EINVAL, "the mean blend needs a window without a dimension_map");
        int64_t want = spec->shape[d] == IT_DIM_INFINITE ? spec->window.stride[d] : spec->shape[d];
        if (m->norm_shape[d] != want)
            return it_error_set(IT_EINVAL, "the mean's norm has %lld entries along dim %d, expected %lld",
                                (long long)m->norm_shape[d], d, (long long)want);
        nw *= spec->window.size[d];
        nn *= want;
    }
    it_mean_state *c = it_calloc(1, sizeof *c);
    double *w = it_malloc(sizeof(double) * (size_t)nw), *n = it_malloc(sizeof(double) * (size_t)nn);
    float *wf = it_malloc(sizeof(float) * (size_t)nw);
    if (!c || !w || !n || !wf) {
        it_free(c);
        it_free(w);
        it_free(n);
        it_free(wf);
        return it_error_set(IT_ENOMEM, "out of memory creating a mean tensor");
    }
    memcpy(w, m->weight, sizeof(double) * (size_t)nw);
    memcpy(n, m->norm, sizeof(double) * (size_t)nn);
    for (int64_t i = 0; i < nw; i++)
        wf[i] = (float)w[i];
    /* float32 reads divide in float when that is the same division: every
     * norm entry a float exactly (integers, sums of k/2^j: the usual weights) */
    int exact = 1;
    for (int64_t i = 0; i < nn; i++) {
        exact &= (double)(float)n[i] == n[i];
        c->gaps |= !(n[i] > 0);
    }
    if (exact && (c->norm_f32 = it_malloc(sizeof(float) * (size_t)nn)))
        for (int64_t i = 0; i < nn; i++)
            c->norm_f32[i] = (float)n[i];
    c->pub = *m;
    c->pub.weight = w;
    c->pub.norm = n;
    c->weight_f32 = wf;
    *out = c;
    return IT_OK;
}

void it__mean_free(it_mean_state *m)
{
    if (!m)
        return;
    it_free((void *)m->pub.weight);
    it_free((void *)m->pub.norm);
    it_free(m->weight_f32);
    it_free(m->norm_f32);
    it_free(m);
}
