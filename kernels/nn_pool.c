/* nn_pool.c: MaxPool (1..22, with Indices, ceil_mode, dilations,
 * storage_order), AveragePool (1..22, count_include_pad, ceil_mode,
 * dilations from 19), GlobalAveragePool and GlobalMaxPool. N-d windows;
 * planes (n, c) are split over the thread pool. float and double natively,
 * float16/int8/uint8 through float copies. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "nn.h"

typedef struct {
    oq_nn_window w;
    int64_t ceil_mode, storage_order, count_include_pad;
} pool_state;

static oq_status pool_prepare(oq_node_ctx *ctx, bool is_max, oq_error *err) {
    pool_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s = oq_nn_window_parse(ctx, &st->w, err);
    if (s != OQ_OK)
        return s;
    if (!st->w.n_kernel)
        return oq_err(err, OQ_EMODEL, "%s: kernel_shape is required", ctx->label);
    /* ceil_mode arrived in opset 10, dilations for AveragePool in 19; older
     * nodes simply do not carry them. */
    if ((s = OQ_ATTR_INT(ctx, "ceil_mode", 0, &st->ceil_mode, err)))
        return s;
    if (is_max) {
        if ((s = OQ_ATTR_INT(ctx, "storage_order", 0, &st->storage_order, err)))
            return s;
        if (st->storage_order != 0 && st->storage_order != 1)
            return oq_err(err, OQ_EINVAL, "%s: storage_order %lld", ctx->label,
                          (long long)st->storage_order);
    } else if ((s = OQ_ATTR_INT(ctx, "count_include_pad", 0, &st->count_include_pad, err))) {
        return s;
    }
    return OQ_OK;
}

oq_status oq_nn_maxpool_prepare(oq_node_ctx *ctx, oq_error *err) {
    return pool_prepare(ctx, true, err);
}

oq_status oq_nn_avgpool_prepare(oq_node_ctx *ctx, oq_error *err) {
    return pool_prepare(ctx, false, err);
}

static oq_status pool_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, bool is_max,
                              oq_nn_geom *g, oq_error *err) {
    const pool_state *st = ctx->state;
    const oq_tensor *x = ctx->n_inputs > 0 ? in[0] : NULL;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    if (!x)
        return oq_err(err, OQ_EMODEL, "%s: X is required", ctx->label);
    oq_dtype dt = x->dtype;
    bool ok = dt == OQ_DTYPE_FLOAT || dt == OQ_DTYPE_DOUBLE || dt == OQ_DTYPE_FLOAT16 ||
              (is_max && (dt == OQ_DTYPE_INT8 || dt == OQ_DTYPE_UINT8));
    if (!ok)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: X of type %s", ctx->label, oq_dtype_name(dt));
    if (x->rank < 3)
        return oq_err(err, OQ_EINVAL, "%s: X has rank %d (need N, C and spatial axes)",
                      ctx->label, x->rank);
    int nsp = x->rank - 2;
    if (st->w.n_kernel != (size_t)nsp)
        return oq_err(err, OQ_EINVAL, "%s: kernel_shape has %zu values for %d spatial axes",
                      ctx->label, st->w.n_kernel, nsp);
    /* As ORT: a pad as large as the kernel would make empty windows. */
    for (size_t i = 0; i < st->w.n_pads && st->w.auto_pad == OQ_NN_NOTSET; i++)
        if (st->w.pads[i] >= st->w.kernel[i % (size_t)nsp])
            return oq_err(err, OQ_EINVAL, "%s: pads[%zu] = %lld is not smaller than the kernel",
                          ctx->label, i, (long long)st->w.pads[i]);
    return oq_nn_window_geom(ctx, &st->w, nsp, x->dims + 2, st->w.kernel, st->ceil_mode != 0, g,
                             err);
}

static oq_status pool_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            bool is_max, oq_error *err) {
    oq_nn_geom g;
    oq_status s = pool_resolve(ctx, in, is_max, &g, err);
    if (s != OQ_OK)
        return s;
    int64_t dims[OQ_MAX_RANK];
    dims[0] = in[0]->dims[0];
    dims[1] = in[0]->dims[1];
    for (int i = 0; i < g.nsp; i++)
        dims[2 + i] = g.out[i];
    if ((s = oq_out_shape(&out[0], in[0]->dtype, g.nsp + 2, dims, err)))
        return s;
    if (is_max && ctx->n_outputs > 1)
        s = oq_out_shape(&out[1], OQ_DTYPE_INT64, g.nsp + 2, dims, err);
    return s;
}

oq_status oq_nn_maxpool_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    return pool_infer(ctx, in, out, true, err);
}

oq_status oq_nn_avgpool_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    return pool_infer(ctx, in, out, false, err);
}

typedef struct {
    const oq_nn_geom *g;
    const void *x;
    void *y;
    int64_t *ind;      /* MaxPool Indices, or NULL */
    size_t in_plane, out_plane;
    bool is_max, count_pad, col_major;
} pool_job;

/* Taps k in [0, K) with lim_lo <= start + k*d < lim_hi: [*lo, *hi). */
static void taps(int64_t start, int64_t d, int64_t K, int64_t lim_lo, int64_t lim_hi, int64_t *lo,
                 int64_t *hi) {
    int64_t l = start >= lim_lo ? 0 : (lim_lo - start + d - 1) / d;
    int64_t h = start < lim_hi ? (lim_hi - 1 - start) / d + 1 : 0;
    if (h > K)
        h = K;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* One pooling kernel per element type: leading spatial axes by an odometer,
 * the last axis as the inner loop. Max takes the first maximum (ORT). */
#define POOL_KERNEL(T, NAME, LOWEST)                                                          \
    static void NAME(void *arg, size_t q0, size_t q1) {                                       \
        const pool_job *j = arg;                                                              \
        const oq_nn_geom *g = j->g;                                                           \
        int nsp = g->nsp, last = nsp - 1;                                                     \
        for (size_t q = q0; q < q1; q++) {                                                    \
            const T *x = (const T *)j->x + q * j->in_plane;                                   \
            T *y = (T *)j->y + q * j->out_plane;                                              \
            int64_t oc[OQ_NN_MAX_SP] = {0};                                                   \
            for (size_t o = 0; o < j->out_plane; o++) {                                       \
                int64_t lo[OQ_NN_MAX_SP], hi[OQ_NN_MAX_SP], st[OQ_NN_MAX_SP];                 \
                double padded = 1.0, valid = 1.0;                                             \
                for (int i = 0; i < nsp; i++) {                                               \
                    st[i] = oc[i] * g->s[i] - g->pb[i];                                       \
                    taps(st[i], g->d[i], g->k[i], 0, g->in[i], &lo[i], &hi[i]);               \
                    valid *= (double)(hi[i] - lo[i]);                                         \
                    if (j->count_pad) {                                                       \
                        int64_t a, b;                                                         \
                        taps(st[i], g->d[i], g->k[i], -g->pb[i], g->in[i] + g->pe[i], &a, &b); \
                        padded *= (double)(b - a);                                            \
                    }                                                                         \
                }                                                                             \
                T best = LOWEST;                                                              \
                int64_t best_at = -1;                                                         \
                T sum = 0;                                                                    \
                if (valid > 0) {                                                              \
                    int64_t kc[OQ_NN_MAX_SP];                                                 \
                    for (int i = 0; i < last; i++)                                            \
                        kc[i] = lo[i];                                                        \
                    for (;;) {                                                                \
                        size_t row = 0;                                                       \
                        for (int i = 0; i < last; i++)                                        \
                            row = row * (size_t)g->in[i] + (size_t)(st[i] + kc[i] * g->d[i]); \
                        int64_t rb = (int64_t)row * g->in[last] + st[last];                   \
                        int64_t dl = g->d[last];                                              \
                        if (j->is_max) {                                                      \
                            for (int64_t k = lo[last]; k < hi[last]; k++)                     \
                                if (x[rb + k * dl] > best || best_at < 0) {                   \
                                    best = x[rb + k * dl];                                    \
                                    best_at = rb + k * dl;                                    \
                                }                                                             \
                        } else {                                                              \
                            for (int64_t k = lo[last]; k < hi[last]; k++)                     \
                                sum += x[rb + k * dl];                                        \
                        }                                                                     \
                        int i = last - 1;                                                     \
                        for (; i >= 0; i--) {                                                 \
                            if (++kc[i] < hi[i])                                              \
                                break;                                                        \
                            kc[i] = lo[i];                                                    \
                        }                                                                     \
                        if (i < 0)                                                            \
                            break;                                                            \
                    }                                                                         \
                }                                                                             \
                if (j->is_max) {                                                              \
                    y[o] = best;                                                              \
                    if (j->ind)                                                               \
                        j->ind[q * j->out_plane + o] = pool_index(j, q, best_at);             \
                } else {                                                                      \
                    double cnt = j->count_pad ? padded : valid;                               \
                    y[o] = cnt > 0 ? (T)(sum / (T)cnt) : (T)0;                                \
                }                                                                             \
                for (int i = last; i >= 0; i--) {                                             \
                    if (++oc[i] < g->out[i])                                                  \
                        break;                                                                \
                    oc[i] = 0;                                                                \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

/* MaxPool-8 Indices: flat over (N, C, spatial); storage_order 1 numbers the
 * spatial axes column-major. */
static int64_t pool_index(const pool_job *j, size_t q, int64_t at) {
    if (at < 0)
        at = 0;
    if (j->col_major) {
        const oq_nn_geom *g = j->g;
        int64_t rem = at, idx = 0, mul = 1;
        int64_t coord[OQ_NN_MAX_SP];
        for (int i = g->nsp - 1; i >= 0; i--) {
            coord[i] = rem % g->in[i];
            rem /= g->in[i];
        }
        for (int i = 0; i < g->nsp; i++) {
            idx += coord[i] * mul;
            mul *= g->in[i];
        }
        at = idx;
    }
    return (int64_t)(q * j->in_plane) + at;
}

POOL_KERNEL(float, pool_float, -FLT_MAX)
POOL_KERNEL(double, pool_double, -DBL_MAX)

/* Full 3x3 windows (no dilation) of one output row, columns [lo, hi):
 * max or mean of three input rows; SW constant so the loads vectorise. */
#define POOL3_ROW(SW)                                                                     \
    for (int64_t ow = lo; ow < hi; ow++) {                                                \
        int64_t c = ow * (SW) + off;                                                      \
        if (is_max) {                                                                     \
            float a = r0[c] > r0[c + 1] ? r0[c] : r0[c + 1];                              \
            a = a > r0[c + 2] ? a : r0[c + 2];                                            \
            float b = r1[c] > r1[c + 1] ? r1[c] : r1[c + 1];                              \
            b = b > r1[c + 2] ? b : r1[c + 2];                                            \
            float d = r2[c] > r2[c + 1] ? r2[c] : r2[c + 1];                              \
            d = d > r2[c + 2] ? d : r2[c + 2];                                            \
            a = a > b ? a : b;                                                            \
            yr[ow] = a > d ? a : d;                                                       \
        } else {                                                                          \
            yr[ow] = (r0[c] + r0[c + 1] + r0[c + 2] + r1[c] + r1[c + 1] + r1[c + 2] +     \
                      r2[c] + r2[c + 1] + r2[c + 2]) *                                    \
                     (1.0f / 9.0f);                                                       \
        }                                                                                 \
    }

static inline void pool3_row(float *restrict yr, const float *restrict r0,
                             const float *restrict r1, const float *restrict r2, int64_t off,
                             int64_t sw, int64_t lo, int64_t hi, bool is_max) {
    if (sw == 1) {
        POOL3_ROW(1)
    } else if (sw == 2) {
        POOL3_ROW(2)
    } else {
        POOL3_ROW(sw)
    }
}

/* 2-D float pooling without Indices: column taps are precomputed once per
 * chunk; windows wholly inside the input take an unchecked path (3x3
 * unrolled), the borders the checked one. */
OQ_NN_HOT static void pool2d_float(void *arg, size_t q0, size_t q1) {
    const pool_job *j = arg;
    const oq_nn_geom *g = j->g;
    int64_t IH = g->in[0], IW = g->in[1], OH = g->out[0], OW = g->out[1];
    int64_t KH = g->k[0], KW = g->k[1], sh = g->s[0], sw = g->s[1], dh = g->d[0], dw = g->d[1];
    int64_t *cols = malloc((size_t)OW * 4 * sizeof *cols);
    if (!cols) { /* fall back to the generic kernel, which needs no memory */
        pool_float(arg, q0, q1);
        return;
    }
    int64_t *wst = cols, *wlo = cols + OW, *whi = cols + 2 * OW, *wpad = cols + 3 * OW;
    int64_t in_lo = OW, in_hi = OW; /* columns whose window is whole */
    for (int64_t ow = 0; ow < OW; ow++) {
        int64_t a, b;
        wst[ow] = ow * sw - g->pb[1];
        taps(wst[ow], dw, KW, 0, IW, &wlo[ow], &whi[ow]);
        taps(wst[ow], dw, KW, -g->pb[1], IW + g->pe[1], &a, &b);
        wpad[ow] = b - a;
        bool whole = wlo[ow] == 0 && whi[ow] == KW;
        if (whole && in_lo == OW)
            in_lo = ow;
        if (whole)
            in_hi = ow + 1;
    }
    if (in_hi < in_lo)
        in_hi = in_lo;
    bool is_max = j->is_max;
    float inv_k = 1.0f / (float)(KH * KW);
    for (size_t q = q0; q < q1; q++) {
        const float *x = (const float *)j->x + q * j->in_plane;
        float *y = (float *)j->y + q * j->out_plane;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t hs = oh * sh - g->pb[0], hl, hh, a, b;
            taps(hs, dh, KH, 0, IH, &hl, &hh);
            taps(hs, dh, KH, -g->pb[0], IH + g->pe[0], &a, &b);
            int64_t hpad = b - a;
            float *yr = y + oh * OW;
            bool whole_rows = hl == 0 && hh == KH;
            int64_t lo = whole_rows ? in_lo : OW, hi = whole_rows ? in_hi : OW;
            if (lo < hi) {
                if (KH == 3 && KW == 3 && dh == 1 && dw == 1) {
                    const float *r0 = x + hs * IW;
                    pool3_row(yr, r0, r0 + IW, r0 + 2 * IW, -g->pb[1], sw, lo, hi, is_max);
                } else if (KH == 2 && KW == 2 && dh == 1 && dw == 1 && sw == 2) {
                    const float *restrict r0 = x + hs * IW, *restrict r1 = r0 + IW;
                    int64_t off = -g->pb[1];
                    for (int64_t ow = lo; ow < hi; ow++) {
                        int64_t c = 2 * ow + off;
                        if (is_max) {
                            float m0 = r0[c] > r0[c + 1] ? r0[c] : r0[c + 1];
                            float m1 = r1[c] > r1[c + 1] ? r1[c] : r1[c + 1];
                            yr[ow] = m0 > m1 ? m0 : m1;
                        } else {
                            yr[ow] = (r0[c] + r0[c + 1] + r1[c] + r1[c + 1]) * 0.25f;
                        }
                    }
                } else {
                    for (int64_t ow = lo; ow < hi; ow++) {
                        float best = -FLT_MAX, sum = 0.0f;
                        for (int64_t kh = 0; kh < KH; kh++) {
                            const float *xr = x + (hs + kh * dh) * IW + wst[ow];
                            for (int64_t kw = 0; kw < KW; kw++) {
                                float v = xr[kw * dw];
                                best = v > best ? v : best;
                                sum += v;
                            }
                        }
                        yr[ow] = is_max ? best : sum * inv_k;
                    }
                }
            }
            int64_t border[2][2] = {{0, lo}, {hi, OW}};
            for (int rg = 0; rg < 2; rg++)
            for (int64_t ow = border[rg][0]; ow < border[rg][1]; ow++) {
                float best = -FLT_MAX, sum = 0.0f;
                for (int64_t kh = hl; kh < hh; kh++) {
                    const float *xr = x + (hs + kh * dh) * IW;
                    for (int64_t kw = wlo[ow]; kw < whi[ow]; kw++) {
                        float v = xr[wst[ow] + kw * dw];
                        best = v > best ? v : best;
                        sum += v;
                    }
                }
                if (is_max) {
                    yr[ow] = best;
                } else {
                    int64_t cnt = j->count_pad ? hpad * wpad[ow] : (hh - hl) * (whi[ow] - wlo[ow]);
                    yr[ow] = cnt > 0 ? sum / (float)cnt : 0.0f;
                }
            }
        }
    }
    free(cols);
}

/* MaxPool 2x2, stride 2, no pads, every window inside the input (the CNN
 * downsampling layer): whole output rows with no border logic, so small
 * planes (7 to 14 columns) are not dominated by per-row setup. Same compare
 * expressions as the general kernel. */
OQ_NN_HOT static void maxpool2x2_float(void *arg, size_t q0, size_t q1) {
    const pool_job *j = arg;
    const oq_nn_geom *g = j->g;
    int64_t IW = g->in[1], OH = g->out[0], OW = g->out[1];
    for (size_t q = q0; q < q1; q++) {
        const float *x = (const float *)j->x + q * j->in_plane;
        float *y = (float *)j->y + q * j->out_plane;
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *restrict r0 = x + 2 * oh * IW, *restrict r1 = r0 + IW;
            float *restrict yr = y + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) {
                float m0 = r0[2 * ow] > r0[2 * ow + 1] ? r0[2 * ow] : r0[2 * ow + 1];
                float m1 = r1[2 * ow] > r1[2 * ow + 1] ? r1[2 * ow] : r1[2 * ow + 1];
                yr[ow] = m0 > m1 ? m0 : m1;
            }
        }
    }
}

static bool is_maxpool2x2(const oq_nn_geom *g) {
    if (g->nsp != 2)
        return false;
    for (int i = 0; i < 2; i++)
        if (g->k[i] != 2 || g->s[i] != 2 || g->d[i] != 1 || g->pb[i] != 0 || g->pe[i] != 0 ||
            2 * g->out[i] > g->in[i])
            return false;
    return true;
}

static oq_status pool_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          bool is_max, oq_error *err) {
    oq_nn_geom g;
    oq_status s = pool_resolve(ctx, in, is_max, &g, err);
    if (s != OQ_OK)
        return s;
    const pool_state *st = ctx->state;
    const oq_tensor *x = in[0];
    pool_job j = {.g = &g, .x = x->data, .y = out[0].data};
    j.ind = is_max && ctx->n_outputs > 1 ? out[1].data : NULL;
    j.in_plane = oq_nn_count(g.in, g.nsp);
    j.out_plane = oq_nn_count(g.out, g.nsp);
    j.is_max = is_max;
    j.count_pad = !is_max && st->count_include_pad;
    j.col_major = st->storage_order == 1;
    size_t planes = (size_t)(x->dims[0] * x->dims[1]);
    size_t min_chunk = OQ_NN_MIN_CHUNK(j.out_plane * oq_nn_count(g.k, g.nsp));
    if (out[0].count == 0)
        return OQ_OK;
    oq_range_fn fn = g.nsp == 2 && !j.ind ? pool2d_float : pool_float;
    if (is_max && !j.ind && is_maxpool2x2(&g))
        fn = maxpool2x2_float;
    if (x->dtype == OQ_DTYPE_FLOAT) {
        oq_parallel_for(ctx->pool, planes, min_chunk, fn, &j);
    } else if (x->dtype == OQ_DTYPE_DOUBLE) {
        oq_parallel_for(ctx->pool, planes, min_chunk, pool_double, &j);
    } else {
        float *fx = oq_nn_alloc_floats(x->count), *fy = oq_nn_alloc_floats(out[0].count);
        if (!fx || !fy) {
            free(fx), free(fy);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(x, fx);
        j.x = fx;
        j.y = fy;
        oq_parallel_for(ctx->pool, planes, min_chunk, fn, &j);
        oq_nn_from_float(fy, &out[0]);
        free(fx), free(fy);
    }
    return OQ_OK;
}

oq_status oq_nn_maxpool_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    return pool_run(ctx, in, out, true, err);
}

oq_status oq_nn_avgpool_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    return pool_run(ctx, in, out, false, err);
}

/* ---- global pools ------------------------------------------------------------ */

oq_status oq_nn_globalavgpool_prepare(oq_node_ctx *ctx, oq_error *err) {
    (void)ctx;
    (void)err;
    return OQ_OK;
}

oq_status oq_nn_globalmaxpool_prepare(oq_node_ctx *ctx, oq_error *err) {
    (void)ctx;
    (void)err;
    return OQ_OK;
}

static oq_status global_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    const oq_tensor *x = ctx->n_inputs > 0 ? in[0] : NULL;
    if (!x)
        return oq_err(err, OQ_EMODEL, "%s: X is required", ctx->label);
    if (x->dtype != OQ_DTYPE_FLOAT && x->dtype != OQ_DTYPE_DOUBLE && x->dtype != OQ_DTYPE_FLOAT16)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: X of type %s", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank < 3)
        return oq_err(err, OQ_EINVAL, "%s: X has rank %d (need N, C and spatial axes)",
                      ctx->label, x->rank);
    int64_t dims[OQ_MAX_RANK];
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    for (int i = 2; i < x->rank; i++)
        dims[i] = 1;
    return oq_out_shape(&out[0], x->dtype, x->rank, dims, err);
}

oq_status oq_nn_globalavgpool_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                    oq_error *err) {
    return global_infer(ctx, in, out, err);
}

oq_status oq_nn_globalmaxpool_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                    oq_error *err) {
    return global_infer(ctx, in, out, err);
}

typedef struct {
    const void *x;
    void *y;
    size_t plane;
    bool is_max;
} global_job;

OQ_NN_HOT static void global_float(void *arg, size_t q0, size_t q1) {
    const global_job *j = arg;
    for (size_t q = q0; q < q1; q++) {
        const float *restrict x = (const float *)j->x + q * j->plane;
        if (j->is_max) {
            float m = j->plane ? x[0] : -FLT_MAX;
            for (size_t i = 1; i < j->plane; i++)
                m = x[i] > m ? x[i] : m;
            ((float *)j->y)[q] = m;
        } else {
            /* 8 partial sums: vectorises and keeps float error small */
            float part[8] = {0};
            size_t i = 0;
            for (; i + 8 <= j->plane; i += 8)
                for (int k = 0; k < 8; k++)
                    part[k] += x[i + k];
            double s = 0;
            for (int k = 0; k < 8; k++)
                s += part[k];
            for (; i < j->plane; i++)
                s += x[i];
            ((float *)j->y)[q] = j->plane ? (float)(s / (double)j->plane) : 0.0f;
        }
    }
}

static void global_double(void *arg, size_t q0, size_t q1) {
    const global_job *j = arg;
    for (size_t q = q0; q < q1; q++) {
        const double *x = (const double *)j->x + q * j->plane;
        double r;
        if (j->is_max) {
            r = j->plane ? x[0] : -DBL_MAX;
            for (size_t i = 1; i < j->plane; i++)
                r = x[i] > r ? x[i] : r;
        } else {
            r = 0;
            for (size_t i = 0; i < j->plane; i++)
                r += x[i];
            r = j->plane ? r / (double)j->plane : 0.0;
        }
        ((double *)j->y)[q] = r;
    }
}

static oq_status global_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            bool is_max, oq_error *err) {
    oq_status s = global_infer(ctx, in, out, err);
    if (s != OQ_OK)
        return s;
    const oq_tensor *x = in[0];
    size_t planes = (size_t)(x->dims[0] * x->dims[1]);
    global_job j = {x->data, out[0].data, planes ? x->count / planes : 0, is_max};
    size_t min_chunk = OQ_NN_MIN_CHUNK(j.plane);
    if (x->dtype == OQ_DTYPE_FLOAT) {
        oq_parallel_for(ctx->pool, planes, min_chunk, global_float, &j);
    } else if (x->dtype == OQ_DTYPE_DOUBLE) {
        oq_parallel_for(ctx->pool, planes, min_chunk, global_double, &j);
    } else {
        float *fx = oq_nn_alloc_floats(x->count), *fy = oq_nn_alloc_floats(out[0].count);
        if (!fx || !fy) {
            free(fx), free(fy);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(x, fx);
        j.x = fx;
        j.y = fy;
        oq_parallel_for(ctx->pool, planes, min_chunk, global_float, &j);
        oq_nn_from_float(fy, &out[0]);
        free(fx), free(fy);
    }
    return OQ_OK;
}

oq_status oq_nn_globalavgpool_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                  oq_error *err) {
    return global_run(ctx, in, out, false, err);
}

oq_status oq_nn_globalmaxpool_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                  oq_error *err) {
    return global_run(ctx, in, out, true, err);
}
