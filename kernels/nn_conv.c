/* nn_conv.c: Conv and ConvTranspose (ONNX Conv-1/11/22, ConvTranspose-1/11/22)
 * in float. Conv: a constant W is packed per group at prepare and run through
 * oq_sgemm_pa_run (bias in the GEMM epilogue); im2col per group into a
 * bounded scratch tile kept in the node state, a direct GEMM for 1x1 stride-1
 * unpadded kernels, and 2-D depthwise convs sent to nn_dwconv.c;
 * ConvTranspose: cblas_sgemm into columns + col2im. */
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "blas.h"
#include "nn.h"
#include "sgemm.h"

/* Column tiles hold at most this many floats (about 2 MB), so the buffer
 * im2col writes is still in cache when sgemm reads it. */
#define CONV_COL_BUDGET ((size_t)1 << 19)
/* Convs (pointwise too) on fewer output positions than this are batched
 * over images through im2col (a copy) rather than one small GEMM per image. */
#define CONV_SMALL_IMAGE 256

typedef struct {
    oq_nn_window w;
    int64_t group;
    /* ConvTranspose only */
    size_t n_out_pad, n_out_shape;
    int64_t out_pad[OQ_NN_MAX_SP];
    int64_t out_shape[OQ_MAX_RANK];
    /* Column tile and batched output kept between runs (runs of one plan
     * never overlap): no malloc, page faults or zeroing per run. Sized by
     * the largest shape seen, which the tile budget bounds. */
    float *col, *tmp;
    size_t col_cap, tmp_cap;
    /* Conv with a constant W: each group's [Mg, Cg*k] weights packed once
     * (NULL when W is not constant or the conv is depthwise) */
    oq_sgemm_pa **pa;
    int64_t n_pa;
    const void *pa_src; /* W's data the packing was made from */
} conv_state;

void oq_nn_conv_release(void *state) {
    conv_state *st = state;
    if (!st)
        return;
    for (int64_t i = 0; st->pa && i < st->n_pa; i++)
        oq_sgemm_pa_free(st->pa[i]);
    free(st->pa);
    free(st->col);
    free(st->tmp);
    free(st);
}

/* buf holding at least n floats, reusing the previous one when it fits. */
static float *scratch_floats(float **buf, size_t *cap, size_t n) {
    if (*buf && *cap >= n)
        return *buf;
    float *nb = oq_nn_alloc_floats(n ? n : 1);
    if (!nb)
        return NULL;
    free(*buf);
    *buf = nb;
    *cap = n;
    return nb;
}

/* Everything a run needs, resolved from the state and the input shapes. */
typedef struct {
    oq_nn_geom g;      /* for ConvTranspose g.in is X's and g.out Y's spatial size */
    int64_t N, C, M, group, Cg, Mg;
    size_t Pin, Pout;  /* spatial element counts of X and Y */
    size_t Kprod;      /* kernel elements */
    const oq_post *post; /* fused element-wise program (Conv only), NULL when none */
} conv_plan;

static oq_status conv_prepare_common(oq_node_ctx *ctx, bool transpose, oq_error *err) {
    conv_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s = oq_nn_window_parse(ctx, &st->w, err);
    if (s != OQ_OK)
        return s;
    if ((s = OQ_ATTR_INT(ctx, "group", 1, &st->group, err)) != OQ_OK)
        return s;
    if (st->group < 1)
        return oq_err(err, OQ_EINVAL, "%s: group %lld must be >= 1", ctx->label,
                      (long long)st->group);
    if (!transpose)
        return OQ_OK;
    const int64_t *v;
    size_t n;
    if ((s = oq_node_attr_ints(ctx->node, "output_padding", &v, &n, err)) != OQ_OK)
        return s;
    if (n > OQ_NN_MAX_SP)
        return oq_err(err, OQ_EINVAL, "%s: output_padding has %zu values", ctx->label, n);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0)
            return oq_err(err, OQ_EINVAL, "%s: output_padding[%zu] is negative", ctx->label, i);
        st->out_pad[i] = v[i];
    }
    st->n_out_pad = n;
    if ((s = oq_node_attr_ints(ctx->node, "output_shape", &v, &n, err)) != OQ_OK)
        return s;
    if (n > OQ_MAX_RANK)
        return oq_err(err, OQ_EINVAL, "%s: output_shape has %zu values", ctx->label, n);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0)
            return oq_err(err, OQ_EINVAL, "%s: output_shape[%zu] is negative", ctx->label, i);
        st->out_shape[i] = v[i];
    }
    st->n_out_shape = n;
    return OQ_OK;
}

/* Outputs per single-channel group the direct depthwise kernel takes: with
 * its AVX-512 paths it also beats the GEMM on a 1-channel stem conv with 16
 * outputs (fmnist_cnn's first conv at b32: 0.19 -> 0.145 ms); with 64 it is
 * no better. */
#define CONV_DW_MAX_MG 16
/* The run's direct depthwise kernel takes these (see oq_nn_conv_run). */
static bool conv_is_depthwise(int64_t Cg, int64_t Mg, int nsp) { return Cg == 1 && Mg <= CONV_DW_MAX_MG && nsp == 2; }

/* Packs a constant W per group for oq_sgemm_pa_run. Shapes the run would
 * reject are left unpacked: the run reports them. */
static oq_status conv_pack_weights(oq_node_ctx *ctx, conv_state *st, oq_error *err) {
    const oq_tensor *w = ctx->n_inputs > 1 && ctx->const_inputs ? ctx->const_inputs[1] : NULL;
    if (!w || w->dtype != OQ_DTYPE_FLOAT || w->rank < 3 || !w->data)
        return OQ_OK;
    int64_t M = w->dims[0], Cg = w->dims[1], group = st->group;
    if (M <= 0 || M % group != 0 || conv_is_depthwise(Cg, M / group, w->rank - 2))
        return OQ_OK;
    int64_t Mg = M / group;
    size_t K = oq_nn_count(w->dims + 1, w->rank - 1), wsz;
    if (K == 0 || K > INT_MAX || Mg > INT_MAX || !oq_mul_size((size_t)M, K, &wsz) || wsz != w->count)
        return OQ_OK;
    if (!(st->pa = calloc((size_t)group, sizeof *st->pa)))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory packing W", ctx->label);
    st->n_pa = group;
    const float *wd = w->data;
    for (int64_t gi = 0; gi < group; gi++) {
        oq_status s = oq_sgemm_pack_a(false, (int)Mg, (int)K, wd + (size_t)(gi * Mg) * K, (int)K,
                                      &st->pa[gi], err);
        if (s != OQ_OK) {
            oq_err_prefix(err, "%s: packing W: ", ctx->label);
            return s;
        }
    }
    st->pa_src = w->data;
    return OQ_OK;
}

oq_status oq_nn_conv_prepare(oq_node_ctx *ctx, oq_error *err) {
    oq_status s = conv_prepare_common(ctx, false, err);
    if (s != OQ_OK)
        return s;
    ctx->accepts_post = true; /* every path below applies ctx->post (float output only) */
    return conv_pack_weights(ctx, ctx->state, err);
}

oq_status oq_nn_convtranspose_prepare(oq_node_ctx *ctx, oq_error *err) {
    return conv_prepare_common(ctx, true, err);
}

/* Checks X, W, B and resolves the plan (shared by infer and run). */
static oq_status conv_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, bool transpose,
                              conv_plan *p, oq_error *err) {
    memset(p, 0, sizeof *p);
    const conv_state *st = ctx->state;
    const oq_tensor *x = ctx->n_inputs > 0 ? in[0] : NULL;
    const oq_tensor *w = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *b = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    if (!x || !w)
        return oq_err(err, OQ_EMODEL, "%s: X and W are required", ctx->label);
    if (x->dtype != OQ_DTYPE_FLOAT || w->dtype != OQ_DTYPE_FLOAT || (b && b->dtype != OQ_DTYPE_FLOAT))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: only float inputs are supported (X is %s, W %s)",
                      ctx->label, oq_dtype_name(x->dtype), oq_dtype_name(w->dtype));
    if (x->rank < 3 || w->rank != x->rank)
        return oq_err(err, OQ_EINVAL, "%s: X rank %d and W rank %d (need equal ranks >= 3)",
                      ctx->label, x->rank, w->rank);
    int nsp = x->rank - 2;
    int64_t group = st->group;
    p->N = x->dims[0];
    p->C = x->dims[1];
    p->group = group;
    if (p->C % group != 0)
        return oq_err(err, OQ_EINVAL, "%s: %lld input channels not divisible by group %lld",
                      ctx->label, (long long)p->C, (long long)group);
    p->Cg = p->C / group;
    if (!transpose) {
        p->M = w->dims[0];
        if (w->dims[1] != p->Cg || p->M % group != 0)
            return oq_err(err, OQ_EINVAL,
                          "%s: W is [%lld, %lld, ...] but X has %lld channels in %lld groups",
                          ctx->label, (long long)w->dims[0], (long long)w->dims[1],
                          (long long)p->C, (long long)group);
        p->Mg = p->M / group;
    } else {
        if (w->dims[0] != p->C)
            return oq_err(err, OQ_EINVAL, "%s: W has %lld input channels, X %lld", ctx->label,
                          (long long)w->dims[0], (long long)p->C);
        p->Mg = w->dims[1];
        if (!oq_mul_i64(p->Mg, group, &p->M))
            return oq_err(err, OQ_EINVAL, "%s: output channels overflow", ctx->label);
    }
    const int64_t *k = w->dims + 2;
    if (st->w.n_kernel) {
        if (st->w.n_kernel != (size_t)nsp)
            return oq_err(err, OQ_EINVAL, "%s: kernel_shape has %zu values for %d spatial axes",
                          ctx->label, st->w.n_kernel, nsp);
        for (int i = 0; i < nsp; i++)
            if (st->w.kernel[i] != k[i])
                return oq_err(err, OQ_EINVAL, "%s: kernel_shape[%d] = %lld but W has %lld",
                              ctx->label, i, (long long)st->w.kernel[i], (long long)k[i]);
    }
    if (b && (b->rank != 1 || b->dims[0] != p->M))
        return oq_err(err, OQ_EINVAL, "%s: B must be 1-D with %lld values", ctx->label,
                      (long long)p->M);
    oq_status s;
    if (!transpose) {
        if ((s = oq_nn_window_geom(ctx, &st->w, nsp, x->dims + 2, k, false, &p->g, err)) != OQ_OK)
            return s;
    } else {
        /* ConvTranspose: output = stride*(in-1) + output_padding + dilated kernel
         * - pads; output_shape (spec: pads are then ignored) or SAME auto_pad
         * (output = in*stride) fix the output and the pads follow from it. */
        const conv_state *cs = st;
        const oq_nn_window *wa = &cs->w;
        if ((wa->n_strides && wa->n_strides != (size_t)nsp) ||
            (wa->n_dilations && wa->n_dilations != (size_t)nsp) ||
            (wa->n_pads && wa->n_pads != 2 * (size_t)nsp) ||
            (cs->n_out_pad && cs->n_out_pad != (size_t)nsp))
            return oq_err(err, OQ_EINVAL,
                          "%s: strides/dilations/pads/output_padding lengths do not match %d "
                          "spatial axes",
                          ctx->label, nsp);
        const int64_t *oshape = NULL;
        if (cs->n_out_shape == (size_t)nsp)
            oshape = cs->out_shape;
        else if (cs->n_out_shape == (size_t)nsp + 2)
            oshape = cs->out_shape + 2;
        else if (cs->n_out_shape)
            return oq_err(err, OQ_EINVAL, "%s: output_shape has %zu values for %d spatial axes",
                          ctx->label, cs->n_out_shape, nsp);
        p->g.nsp = nsp;
        for (int i = 0; i < nsp; i++) {
            int64_t s_ = wa->n_strides ? wa->strides[i] : 1;
            int64_t d = wa->n_dilations ? wa->dilations[i] : 1;
            int64_t op = cs->n_out_pad ? cs->out_pad[i] : 0;
            int64_t inn = x->dims[2 + i], full, dk;
            if (k[i] < 1)
                return oq_err(err, OQ_EINVAL, "%s: kernel dim %d is %lld", ctx->label, i,
                              (long long)k[i]);
            /* full = stride*(in-1) + output_padding + (k-1)*dilation + 1 */
            if (!oq_mul_i64(k[i] - 1, d, &dk) || !oq_mul_i64(inn > 0 ? inn - 1 : 0, s_, &full) ||
                !oq_add_i64(full, dk, &full) || !oq_add_i64(full, 1, &full) ||
                !oq_add_i64(full, op, &full))
                return oq_err(err, OQ_EINVAL, "%s: output size overflows on axis %d", ctx->label,
                              i);
            int64_t out, pb, pe;
            if (oshape || wa->auto_pad == OQ_NN_SAME_UPPER || wa->auto_pad == OQ_NN_SAME_LOWER) {
                if (oshape)
                    out = oshape[i];
                else if (!oq_mul_i64(inn, s_, &out))
                    return oq_err(err, OQ_EINVAL, "%s: output size overflows", ctx->label);
                int64_t total = full - out;
                if (total < 0)
                    total = 0; /* the output extends past the last window: bias only */
                if (wa->auto_pad == OQ_NN_SAME_UPPER) {
                    pb = total / 2;
                    pe = total - pb;
                } else {
                    pe = total / 2;
                    pb = total - pe;
                }
            } else {
                pb = pe = 0;
                if (wa->auto_pad == OQ_NN_NOTSET && wa->n_pads) {
                    pb = wa->pads[i];
                    pe = wa->pads[i + nsp];
                }
                out = full - pb - pe;
                if (out < 0)
                    return oq_err(err, OQ_EINVAL, "%s: pads exceed the output on axis %d",
                                  ctx->label, i);
            }
            p->g.in[i] = inn;
            p->g.out[i] = out;
            p->g.k[i] = k[i];
            p->g.s[i] = s_;
            p->g.d[i] = d;
            p->g.pb[i] = pb;
            p->g.pe[i] = pe;
        }
    }
    p->Pin = oq_nn_count(x->dims + 2, nsp);
    p->Kprod = oq_nn_count(k, nsp);
    /* The output is not allocated yet at infer: check its count here. */
    size_t pout = 1;
    for (int i = 0; i < nsp; i++)
        if (!oq_mul_size(pout, (size_t)p->g.out[i], &pout))
            return oq_err(err, OQ_ELIMIT, "%s: output too large", ctx->label);
    p->Pout = pout;
    /* cblas takes int sizes */
    size_t kk1, kk2;
    if (p->Pin > INT_MAX || p->Pout > INT_MAX || p->M > INT_MAX ||
        !oq_mul_size((size_t)p->Cg, p->Kprod, &kk1) || kk1 > INT_MAX ||
        !oq_mul_size((size_t)p->Mg, p->Kprod, &kk2) || kk2 > INT_MAX)
        return oq_err(err, OQ_ELIMIT, "%s: dimensions exceed the BLAS int range", ctx->label);
    return OQ_OK;
}

static oq_status conv_infer_common(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                   bool transpose, oq_error *err) {
    conv_plan p;
    oq_status s = conv_resolve(ctx, in, transpose, &p, err);
    if (s != OQ_OK)
        return s;
    int64_t dims[OQ_MAX_RANK];
    dims[0] = p.N;
    dims[1] = p.M;
    for (int i = 0; i < p.g.nsp; i++)
        dims[2 + i] = p.g.out[i];
    return oq_out_shape(&out[0], OQ_DTYPE_FLOAT, p.g.nsp + 2, dims, err);
}

oq_status oq_nn_conv_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    return conv_infer_common(ctx, in, out, false, err);
}

oq_status oq_nn_convtranspose_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                    oq_error *err) {
    return conv_infer_common(ctx, in, out, true, err);
}

/* ---- im2col ---------------------------------------------------------------- */

typedef struct {
    const conv_plan *p;
    const float *x;   /* one image, one group: [Cg, Pin] */
    float *col;       /* row r of the tile starts at col + r*ld */
    size_t ld;
    size_t p0, ncols; /* output positions [p0, p0+ncols) of this image */
} im2col_job;

/* Splits a flat index into coordinates over dims (last fastest). */
static void unflatten(size_t idx, const int64_t *dims, int n, int64_t *coord) {
    for (int i = n - 1; i >= 0; i--) {
        coord[i] = (int64_t)(idx % (size_t)dims[i]);
        idx /= (size_t)dims[i];
    }
}

/* Valid j in [0, run) with 0 <= base + j*s < lim: [*lo, *hi). */
static void valid_span(int64_t base, int64_t s, int64_t lim, int64_t run, int64_t *lo, int64_t *hi) {
    int64_t l = base >= 0 ? 0 : (-base + s - 1) / s;
    int64_t h = base < lim ? (lim - 1 - base) / s + 1 : 0;
    if (l > run)
        l = run;
    if (h > run)
        h = run;
    if (h < l)
        h = l;
    *lo = l;
    *hi = h;
}

/* 2-D im2col: the valid output columns of a row depend only on kw, so
 * they are computed once per row; each output row is zeros, a strided copy
 * of one input row, zeros. */
OQ_NN_HOT static void im2col2d_rows(void *arg, size_t r0, size_t r1) {
    const im2col_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int64_t IH = g->in[0], IW = g->in[1], OW = g->out[1], KH = g->k[0], KW = g->k[1];
    int64_t sh = g->s[0], sw = g->s[1];
    /* Stride 1 with the output the size of the input ("same" padding), whole
     * image in the tile: a row is the input plane shifted by a constant, so
     * one copy plus zeroing of the rows and columns shifted in from outside. */
    int64_t P = IH * IW;
    bool shifted = sh == 1 && sw == 1 && g->out[0] == IH && OW == IW && j->p0 == 0 &&
                   j->ncols == (size_t)P;
    for (size_t r = r0; shifted && r < r1; r++) {
        int64_t c = (int64_t)r / (KH * KW), kh = ((int64_t)r / KW) % KH, kw = (int64_t)r % KW;
        int64_t dy = kh * g->d[0] - g->pb[0], dx = kw * g->d[1] - g->pb[1];
        const float *xc = j->x + (size_t)c * p->Pin;
        float *restrict dst = j->col + r * j->ld;
        int64_t oh_lo = dy < 0 ? -dy : 0, oh_hi = dy > 0 ? IH - dy : IH;
        if (oh_hi <= oh_lo || dx >= OW || -dx >= OW) {
            memset(dst, 0, (size_t)P * sizeof *dst);
            continue;
        }
        int64_t delta = dy * IW + dx, i0 = oh_lo * OW, i1 = oh_hi * OW;
        int64_t lo = i0 > -delta ? i0 : -delta, hi = i1 < P - delta ? i1 : P - delta;
        if (lo > 0)
            memset(dst, 0, (size_t)lo * sizeof *dst);
        memcpy(dst + lo, xc + (lo + delta), (size_t)(hi - lo) * sizeof *dst);
        if (hi < P)
            memset(dst + hi, 0, (size_t)(P - hi) * sizeof *dst);
        for (int64_t oh = oh_lo; oh < oh_hi; oh++) { /* columns from the next/previous row */
            float *row = dst + oh * OW;
            if (dx > 0)
                for (int64_t ow = OW - dx; ow < OW; ow++)
                    row[ow] = 0.0f;
            else
                for (int64_t ow = 0; ow < -dx; ow++)
                    row[ow] = 0.0f;
        }
    }
    for (size_t r = r0; !shifted && r < r1; r++) {
        int64_t c = (int64_t)r / (KH * KW), kh = ((int64_t)r / KW) % KH, kw = (int64_t)r % KW;
        int64_t off = kw * g->d[1] - g->pb[1], lo, hi;
        valid_span(off, sw, IW, OW, &lo, &hi);
        const float *xc = j->x + (size_t)c * p->Pin;
        float *restrict dst = j->col + r * j->ld;
        int64_t pos = (int64_t)j->p0, end = pos + (int64_t)j->ncols;
        int64_t oh = pos / OW, ow0 = pos % OW;
        while (pos < end) {
            int64_t ow1 = OW < ow0 + (end - pos) ? OW : ow0 + (end - pos);
            int64_t ih = oh * sh - g->pb[0] + kh * g->d[0];
            int64_t a = lo > ow0 ? (lo < ow1 ? lo : ow1) : ow0;
            int64_t b = hi < ow1 ? (hi > a ? hi : a) : ow1;
            if (ih < 0 || ih >= IH) {
                a = b = ow1;
            } else {
                const float *restrict src = xc + ih * IW;
                if (sw == 1) {
                    for (int64_t ow = a; ow < b; ow++)
                        dst[ow - ow0] = src[ow + off];
                } else {
                    for (int64_t ow = a; ow < b; ow++)
                        dst[ow - ow0] = src[ow * sw + off];
                }
            }
            for (int64_t ow = ow0; ow < a; ow++)
                dst[ow - ow0] = 0.0f;
            for (int64_t ow = b; ow < ow1; ow++)
                dst[ow - ow0] = 0.0f;
            dst += ow1 - ow0;
            pos += ow1 - ow0;
            oh++;
            ow0 = 0;
        }
    }
}

/* Implicit GEMM for 2-D convs with packed weights: the SGEMM driver asks
 * for 32-lane panels of the column matrix (lanes: output positions,
 * consecutive images back to back; depth: c, kh, kw) and this writes them
 * straight from the input, so the column matrix is never materialised
 * and read back (one pass over the data instead of three). */
typedef struct {
    const conv_plan *p;
    const float *x;    /* lane 0's image, its group's first channel */
    size_t img_stride; /* floats from one image to the next: C * Pin */
} conv_pack_job;

/* Lanes of one output row of one image inside a panel. */
typedef struct {
    int lane, n;
    const float *img;
    int64_t oh, ow;
} conv_lane_run;

/* The lane runs of panel lanes [l0 + q0, l0 + q0 + w): at most 32. */
static int conv_lane_runs(const conv_pack_job *j, int l0, int q0, int w, conv_lane_run *run) {
    size_t P = j->p->Pout;
    int64_t OW = j->p->g.out[1];
    int nr = 0;
    for (int l = 0; l < w;) {
        size_t q = (size_t)(l0 + q0 + l), pos = q % P;
        int64_t oh = (int64_t)pos / OW, ow = (int64_t)pos % OW;
        int n = (int64_t)(w - l) < OW - ow ? w - l : (int)(OW - ow);
        run[nr++] = (conv_lane_run){l, n, j->x + (q / P) * j->img_stride, oh, ow};
        l += n;
    }
    return nr;
}

OQ_NN_HOT static void conv_pack_panels_scalar(void *arg, int l0, int nl, int k0, int kc, float *dst) {
    const conv_pack_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int64_t IH = g->in[0], IW = g->in[1], KH = g->k[0], KW = g->k[1];
    int64_t sh = g->s[0], sw = g->s[1], dh = g->d[0], dw = g->d[1], pt = g->pb[0], pl = g->pb[1];
    for (int q0 = 0; q0 < nl; q0 += 32) {
        float *pan = dst + (size_t)(q0 / 32) * (size_t)kc * 32;
        int w = nl - q0 < 32 ? nl - q0 : 32;
        conv_lane_run run[32];
        int nr = conv_lane_runs(j, l0, q0, w, run);
        for (int k = 0; k < kc; k++) {
            int64_t kk = k0 + k, c = kk / (KH * KW), kh = (kk / KW) % KH, kw = kk % KW;
            float *restrict d = pan + (size_t)k * 32;
            for (int r = 0; r < nr; r++) {
                const conv_lane_run *u = &run[r];
                float *restrict dr = d + u->lane;
                int64_t ih = u->oh * sh - pt + kh * dh;
                if (ih < 0 || ih >= IH) {
                    for (int e = 0; e < u->n; e++)
                        dr[e] = 0.0f;
                    continue;
                }
                const float *restrict src = u->img + (size_t)c * p->Pin + (size_t)(ih * IW);
                int64_t base = u->ow * sw - pl + kw * dw, lo, hi;
                valid_span(base, sw, IW, u->n, &lo, &hi);
                for (int64_t e = 0; e < lo; e++)
                    dr[e] = 0.0f;
                if (sw == 1)
                    for (int64_t e = lo; e < hi; e++)
                        dr[e] = src[base + e];
                else
                    for (int64_t e = lo; e < hi; e++)
                        dr[e] = src[base + e * sw];
                for (int64_t e = hi; e < u->n; e++)
                    dr[e] = 0.0f;
            }
            for (int e = w; e < 32; e++)
                d[e] = 0.0f;
        }
    }
}

static bool conv_simd_disabled; /* tests only: oq_nn_conv_set_simd */

bool oq_nn_conv_set_simd(bool on) {
    bool was = !conv_simd_disabled;
    conv_simd_disabled = !on;
    return was;
}

static bool conv_avx512_off(void) { return conv_simd_disabled; }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OQ_NN_NO_CLONES)
#include <immintrin.h>
#define CONV_HAVE_AVX512 1

/* 2-D im2col of a whole image with stride 1 or 2, AVX-512: each output row
 * is cut into chunks of 16 columns; a chunk is one or two masked loads of the
 * input row (lanes outside the row read as 0, which is the zero padding) and
 * one store, so small planes cost a few instructions per output row instead
 * of library calls and scalar edges. The masks depend only on kw, so they are
 * made once per column-matrix row. Stores are whole vectors (the spill past a
 * row is overwritten by the next one; cheaper than masked stores) except
 * near the end of the image's segment. */
#define CONV_AVX512_MAX_CHUNKS 64 /* output rows up to 1024 wide */
__attribute__((target("avx512f"))) static void im2col2d_rows_avx512(void *arg, size_t r0,
                                                                     size_t r1) {
    const im2col_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int64_t IH = g->in[0], IW = g->in[1], OH = g->out[0], OW = g->out[1];
    int64_t KH = g->k[0], KW = g->k[1], sh = g->s[0], sw = g->s[1];
    int64_t nch = (OW + 15) / 16, P = OH * OW;
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 mlo[CONV_AVX512_MAX_CHUNKS], mhi[CONV_AVX512_MAX_CHUNKS];
    for (size_t r = r0; r < r1; r++) {
        int64_t c = (int64_t)r / (KH * KW), kh = ((int64_t)r / KW) % KH, kw = (int64_t)r % KW;
        int64_t off = kw * g->d[1] - g->pb[1];
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t ow0 = ch * 16, n = OW - ow0 < 16 ? OW - ow0 : 16;
            int64_t a = ow0 * sw + off, len = (n - 1) * sw + 1; /* input lanes spanned */
            int64_t t0 = a < 0 ? -a : 0, t1 = IW - a < len ? IW - a : len;
            uint32_t m = t1 > t0 ? (uint32_t)((((uint64_t)1 << (t1 - t0)) - 1) << t0) : 0;
            mlo[ch] = (__mmask16)m;
            mhi[ch] = (__mmask16)(m >> 16);
        }
        /* uintptr arithmetic: a chunk may start left of its input row */
        uintptr_t xc = (uintptr_t)(j->x + (size_t)c * p->Pin) + (uintptr_t)(off * (int64_t)sizeof(float));
        float *seg = j->col + r * j->ld;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t ih = oh * sh - g->pb[0] + kh * g->d[0];
            bool row_ok = ih >= 0 && ih < IH;
            const float *src = (const float *)(xc + (uintptr_t)((row_ok ? ih : 0) * IW * (int64_t)sizeof(float)));
            for (int64_t ch = 0; ch < nch; ch++) {
                int64_t pos = oh * OW + ch * 16;
                __m512 v = zero;
                if (row_ok) {
                    const float *sp = src + ch * 16 * sw;
                    if (sw == 1)
                        v = _mm512_maskz_loadu_ps(mlo[ch], sp);
                    else
                        v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mlo[ch], sp), evens,
                                                   _mm512_maskz_loadu_ps(mhi[ch], sp + 16));
                }
                if (pos + 16 <= P)
                    _mm512_storeu_ps(seg + pos, v);
                else
                    _mm512_mask_storeu_ps(seg + pos, (__mmask16)((1u << (P - pos)) - 1u), v);
            }
        }
    }
}

/* conv_pack_panels with AVX-512, stride 1 or 2 along the row: each lane run of
 * a panel row is at most two masked loads of the input row (lanes outside
 * it read as 0: the zero padding) and two masked stores. The loads'
 * offsets and masks depend only on the run and (kh, kw), not on the
 * channel, so they are tabulated once per panel. */
#define CONV_PACK_MAX_TAPS 49
/* How far ahead of a panel row the packers prefetch the input (a few
 * panels): at batch 32 the input comes from DRAM, and the one stream per
 * channel row a panel walks is more than the hardware prefetchers track
 * (ResNet-50's 3x3 convs at b32: 60 -> 44 ms). */
#ifndef CONV_PREFETCH_BYTES
#define CONV_PREFETCH_BYTES 512
#endif /* kernels up to 7x7 take the tabulated path */
/* Lanes [0, n) of a panel row (n <= 32) from consecutive source floats at
 * src: lanes outside mask m read as 0 (the zero padding) and are not
 * loaded, so src may point outside the input for them. */
__attribute__((target("avx512f"))) static inline void pack_run_s1(float *dr, uintptr_t src, int n, uint32_t m) {
    uint32_t all = n == 32 ? 0xffffffffu : (1u << n) - 1u;
    _mm512_mask_storeu_ps(dr, (__mmask16)all, _mm512_maskz_loadu_ps((__mmask16)m, (const void *)src));
    if (n > 16)
        _mm512_mask_storeu_ps(dr + 16, (__mmask16)(all >> 16),
                              _mm512_maskz_loadu_ps((__mmask16)(m >> 16), (const void *)(src + 64)));
}

/* Zeroes lanes [w, 32) of a panel row: lanes past the operand's range. */
__attribute__((target("avx512f"))) static inline void pack_zero_tail(float *d, int w) {
    if (w >= 32)
        return;
    const __m512 zero = _mm512_setzero_ps();
    int z = 32 - w;
    if (z > 16) {
        _mm512_storeu_ps(d + 16, zero);
        z -= 16;
    }
    _mm512_mask_storeu_ps(d + w, (__mmask16)((1u << z) - 1u), zero);
}

/* Bits 0, 2, 4, ..., 2(k-1): the source elements of the first k lanes at
 * stride 2. */
static inline uint64_t conv_even_bits(int64_t k) {
    return k >= 32 ? 0x5555555555555555ull : 0x5555555555555555ull & (((uint64_t)1 << (2 * k)) - 1);
}

__attribute__((target("avx512f"))) static void conv_pack_panels_avx512(void *arg, int l0, int nl, int k0,
                                                                       int kc, float *dst) {
    const conv_pack_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int64_t IH = g->in[0], IW = g->in[1], KH = g->k[0], KW = g->k[1], T = KH * KW;
    int64_t sh = g->s[0], sw = g->s[1], dh = g->d[0], dw = g->d[1], pt = g->pb[0], pl = g->pb[1];
    /* stride 2: lane e reads source element 2e; a load pair is compacted */
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int q0 = 0; q0 < nl; q0 += 32) {
        float *pan = dst + (size_t)(q0 / 32) * (size_t)kc * 32;
        int w = nl - q0 < 32 ? nl - q0 : 32;
        conv_lane_run run[32];
        int nr = conv_lane_runs(j, l0, q0, w, run);
        /* per run and tap: element offset from the channel plane (lane 0)
         * and the mask of source elements to load (lane e is element
         * e * sw), 0 when the row is out */
        int64_t off[32 * CONV_PACK_MAX_TAPS];
        uint64_t valid[32 * CONV_PACK_MAX_TAPS];
        for (int r = 0; r < nr; r++)
            for (int64_t kh = 0; kh < KH; kh++) {
                int64_t ih = run[r].oh * sh - pt + kh * dh;
                for (int64_t kw = 0; kw < KW; kw++) {
                    size_t e = (size_t)r * (size_t)T + (size_t)(kh * KW + kw);
                    int64_t base = run[r].ow * sw - pl + kw * dw; /* input column of lane 0 */
                    int64_t lo, hi;
                    valid_span(base, sw, IW, run[r].n, &lo, &hi);
                    bool row_ok = ih >= 0 && ih < IH;
                    uint64_t m = 0;
                    if (row_ok && hi > lo)
                        m = sw == 1 ? ((uint64_t)1 << hi) - ((uint64_t)1 << lo)
                                    : conv_even_bits(hi) & ~conv_even_bits(lo);
                    valid[e] = m;
                    off[e] = (row_ok ? ih : 0) * IW + base;
                }
            }
        int64_t c = k0 / T, t = k0 % T;
        for (int k = 0; k < kc; k++) {
            float *d = pan + (size_t)k * 32;
            size_t plane = (size_t)c * p->Pin;
            for (int r = 0; r < nr; r++) {
                size_t e = (size_t)r * (size_t)T + (size_t)t;
                int n = run[r].n;
                uint32_t all = n == 32 ? 0xffffffffu : (1u << n) - 1u;
                uint64_t m = valid[e];
                /* uintptr: lane 0 may sit left of the row; its load is masked off */
                uintptr_t src = (uintptr_t)(run[r].img + plane) + (uintptr_t)(off[e] * (int64_t)sizeof(float));
                float *dr = d + run[r].lane;
                if (t % KW == 0) /* one per input row the channel's taps read */
                    _mm_prefetch((const char *)(src + (uintptr_t)(CONV_PREFETCH_BYTES * sw)), _MM_HINT_T0);
                if (sw == 1) {
                    pack_run_s1(dr, src, n, (uint32_t)m);
                    continue;
                }
                __m512 v0 = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps((__mmask16)m, (const void *)src), evens,
                                                   _mm512_maskz_loadu_ps((__mmask16)(m >> 16), (const void *)(src + 64)));
                _mm512_mask_storeu_ps(dr, (__mmask16)all, v0);
                if (n > 16) {
                    __m512 v1 =
                        _mm512_permutex2var_ps(_mm512_maskz_loadu_ps((__mmask16)(m >> 32), (const void *)(src + 128)),
                                               evens, _mm512_maskz_loadu_ps((__mmask16)(m >> 48), (const void *)(src + 192)));
                    _mm512_mask_storeu_ps(dr + 16, (__mmask16)(all >> 16), v1);
                }
            }
            pack_zero_tail(d, w);
            if (++t == T) {
                t = 0;
                c++;
            }
        }
    }
}

/* conv_pack_panels for stride 1 with the output the size of the input
 * ("same" padding): tap (kh, kw) of output position q reads the input
 * plane at q + (kh*dh - pt) * IW + (kw*dw - pl), so a panel row is one
 * shifted load per image the panel touches (1-3), masked where the tap
 * falls in the padding; small planes (7x7, 14x14) then cost a couple of
 * vector moves per row instead of one per output row. */
__attribute__((target("avx512f"))) static void conv_pack_panels_shift_avx512(void *arg, int l0, int nl,
                                                                             int k0, int kc, float *dst) {
    const conv_pack_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int64_t IH = g->in[0], IW = g->in[1], KH = g->k[0], KW = g->k[1], T = KH * KW;
    int64_t dh = g->d[0], dw = g->d[1], pt = g->pb[0], pl = g->pb[1];
    size_t P = p->Pout;
    for (int q0 = 0; q0 < nl; q0 += 32) {
        float *pan = dst + (size_t)(q0 / 32) * (size_t)kc * 32;
        int w = nl - q0 < 32 ? nl - q0 : 32;
        /* segments: lanes of one image */
        struct {
            int lane, n;
            const float *img;
            int64_t pos;
        } seg[32];
        int ns = 0;
        for (int l = 0; l < w;) {
            size_t q = (size_t)(l0 + q0 + l), pos = q % P;
            int n = (size_t)(w - l) < P - pos ? w - l : (int)(P - pos);
            seg[ns].lane = l;
            seg[ns].n = n;
            seg[ns].img = j->x + (q / P) * j->img_stride;
            seg[ns].pos = (int64_t)pos;
            ns++;
            l += n;
        }
        /* each lane's output row and column, walked from the first lane's */
        int32_t loh[32], low[32];
        size_t pos0 = (size_t)(l0 + q0) % P;
        int32_t oh = (int32_t)(pos0 / (size_t)IW), ow = (int32_t)(pos0 % (size_t)IW);
        for (int l = 0; l < 32; l++) {
            loh[l] = oh;
            low[l] = ow;
            if (++ow == IW) {
                ow = 0;
                if (++oh == IH)
                    oh = 0; /* the next image */
            }
        }
        __m512i oh0 = _mm512_loadu_si512(loh), oh1 = _mm512_loadu_si512(loh + 16);
        __m512i ow0 = _mm512_loadu_si512(low), ow1 = _mm512_loadu_si512(low + 16);
        __m512i vih = _mm512_set1_epi32((int32_t)IH), viw = _mm512_set1_epi32((int32_t)IW);
        int64_t delta[CONV_PACK_MAX_TAPS];
        uint32_t valid[CONV_PACK_MAX_TAPS]; /* lanes of the panel whose tap is inside */
        for (int64_t t = 0; t < T; t++) {
            int64_t dy = (t / KW) * dh - pt, dx = (t % KW) * dw - pl;
            delta[t] = dy * IW + dx;
            __m512i vdy = _mm512_set1_epi32((int32_t)dy), vdx = _mm512_set1_epi32((int32_t)dx);
            /* unsigned compares: a negative row or column is out too */
            __mmask16 lo = _mm512_cmplt_epu32_mask(_mm512_add_epi32(oh0, vdy), vih) &
                           _mm512_cmplt_epu32_mask(_mm512_add_epi32(ow0, vdx), viw);
            __mmask16 hi = _mm512_cmplt_epu32_mask(_mm512_add_epi32(oh1, vdy), vih) &
                           _mm512_cmplt_epu32_mask(_mm512_add_epi32(ow1, vdx), viw);
            valid[t] = (uint32_t)lo | (uint32_t)hi << 16;
        }
        int64_t c = k0 / T, t = k0 % T;
        for (int k = 0; k < kc; k++) {
            float *d = pan + (size_t)k * 32;
            size_t plane = (size_t)c * p->Pin;
            for (int si = 0; si < ns; si++) {
                int n = seg[si].n;
                uint32_t all = n == 32 ? 0xffffffffu : (1u << n) - 1u, m = (valid[t] >> seg[si].lane) & all;
                /* uintptr: the shifted start may sit before the plane; those lanes are masked off */
                uintptr_t src = (uintptr_t)(seg[si].img + plane) +
                                (uintptr_t)((seg[si].pos + delta[t]) * (int64_t)sizeof(float));
                pack_run_s1(d + seg[si].lane, src, n, m);
                if (t % KW == 0) /* one per input row the channel's taps read */
                    _mm_prefetch((const char *)(src + CONV_PREFETCH_BYTES), _MM_HINT_T0);
            }
            pack_zero_tail(d, w);
            if (++t == T) {
                t = 0;
                c++;
            }
        }
    }
}
#endif

/* Column panels for the packed GEMM: AVX-512 packers for row stride 1 or 2
 * (the shifted one for "same"-padded stride 1), else the portable one. */
static void conv_pack_panels(void *arg, int l0, int nl, int k0, int kc, float *dst) {
#ifdef CONV_HAVE_AVX512
    const conv_pack_job *j = arg;
    if ((j->p->g.s[1] == 1 || j->p->g.s[1] == 2) && j->p->Kprod <= CONV_PACK_MAX_TAPS && !conv_avx512_off() &&
        __builtin_cpu_supports("avx512f")) {
        const oq_nn_geom *g = &j->p->g;
        if (g->s[0] == 1 && g->s[1] == 1 && g->out[0] == g->in[0] && g->out[1] == g->in[1])
            conv_pack_panels_shift_avx512(arg, l0, nl, k0, kc, dst);
        else
            conv_pack_panels_avx512(arg, l0, nl, k0, kc, dst);
        return;
    }
#endif
    conv_pack_panels_scalar(arg, l0, nl, k0, kc, dst);
}

OQ_NN_HOT static void im2col_rows(void *arg, size_t r0, size_t r1) {
    const im2col_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int last = g->nsp - 1;
    for (size_t r = r0; r < r1; r++) {
        size_t c = r / p->Kprod;
        int64_t kc[OQ_NN_MAX_SP], oc[OQ_NN_MAX_SP];
        unflatten(r % p->Kprod, g->k, g->nsp, kc);
        unflatten(j->p0, g->out, g->nsp, oc);
        const float *xc = j->x + c * p->Pin;
        float *dst = j->col + r * j->ld;
        size_t left = j->ncols;
        while (left > 0) {
            int64_t run = g->out[last] - oc[last];
            if ((size_t)run > left)
                run = (int64_t)left;
            size_t off = 0;
            bool ok = true;
            for (int i = 0; i < last; i++) {
                int64_t ii = oc[i] * g->s[i] - g->pb[i] + kc[i] * g->d[i];
                if (ii < 0 || ii >= g->in[i]) {
                    ok = false;
                    break;
                }
                off = off * (size_t)g->in[i] + (size_t)ii;
            }
            if (!ok) {
                memset(dst, 0, (size_t)run * sizeof *dst);
            } else {
                const float *xr = xc + off * (size_t)g->in[last];
                int64_t s = g->s[last];
                int64_t base = oc[last] * s - g->pb[last] + kc[last] * g->d[last];
                int64_t lo, hi;
                valid_span(base, s, g->in[last], run, &lo, &hi);
                if (lo > 0)
                    memset(dst, 0, (size_t)lo * sizeof *dst);
                if (s == 1) {
                    if (hi > lo)
                        memcpy(dst + lo, xr + (base + lo), (size_t)(hi - lo) * sizeof *dst);
                } else {
                    for (int64_t q = lo; q < hi; q++)
                        dst[q] = xr[base + q * s];
                }
                if (hi < run)
                    memset(dst + hi, 0, (size_t)(run - hi) * sizeof *dst);
            }
            dst += run;
            left -= (size_t)run;
            oc[last] += run;
            for (int i = last; i > 0 && oc[i] == g->out[i]; i--) {
                oc[i] = 0;
                oc[i - 1]++;
            }
        }
    }
}

/* ---- bias and post-ops ----------------------------------------------------- */

/* The GEMM epilogue writing channels [m0, ..) of output rows at y_at
 * (a position inside the output y): bias, then the fused program with the
 * residual at y_at's offset. */
static oq_sgemm_epilogue conv_epilogue(const conv_plan *p, const float *bias, int64_t m0, const float *y,
                                       const float *y_at) {
    oq_sgemm_epilogue ep = {bias ? bias + m0 : NULL, NULL, p->post, NULL};
    if (p->post && p->post->res)
        ep.res = p->post->res + (y_at - y);
    return ep;
}

/* Copies n floats of a scratch output into Y at y_at, applying the fused
 * program on the way. */
static void conv_store(const conv_plan *p, const float *y, float *y_at, const float *src, size_t n) {
    if (p->post)
        oq_post_apply(p->post, y_at, src, p->post->res ? p->post->res + (y_at - y) : NULL, n);
    else
        memcpy(y_at, src, n * sizeof *y_at);
}

/* The fused program over Y [rows, P] in parallel: for the paths that
 * finish Y in several passes (a non-constant W). */
typedef struct {
    const oq_post *post;
    float *y;
    size_t P;
} post_job;

static void post_rows(void *arg, size_t r0, size_t r1) {
    const post_job *j = arg;
    size_t off = r0 * j->P;
    oq_post_apply(j->post, j->y + off, j->y + off, j->post->res ? j->post->res + off : NULL, (r1 - r0) * j->P);
}

typedef struct {
    float *y;
    const float *b;
    size_t P, M;
} bias_job;

/* Fills rows of P values with the bias of their channel (0 without one). */
OQ_NN_HOT static void bias_rows(void *arg, size_t r0, size_t r1) {
    const bias_job *j = arg;
    for (size_t r = r0; r < r1; r++) {
        float bv = j->b ? j->b[r % j->M] : 0.0f;
        float *restrict y = j->y + r * j->P;
        for (size_t i = 0; i < j->P; i++)
            y[i] = bv;
    }
}

static size_t tile_cols(size_t rows, size_t total) {
    size_t cols = CONV_COL_BUDGET / (rows ? rows : 1);
    if (cols < 64)
        cols = 64;
    return cols < total ? cols : total;
}

/* im2col + sgemm over column tiles. Large images are tiled within the image
 * and the GEMM writes straight into Y; small images (fewer positions than a
 * tile) are batched, several per GEMM, through a scratch output so the BLAS
 * calls stay large. */
typedef struct {
    const conv_plan *p;
    oq_range_fn fill;
    const float *x; /* first image of the tile, its group */
    float *col;
    size_t K, ld;
} batch_fill_job;

/* im2col of images [i0, i1) of a batched tile, each into its P columns. */
static void batch_fill(void *arg, size_t i0, size_t i1) {
    const batch_fill_job *b = arg;
    const conv_plan *p = b->p;
    for (size_t i = i0; i < i1; i++) {
        im2col_job j = {p, b->x + i * (size_t)p->C * p->Pin, b->col + i * p->Pout, b->ld, 0, p->Pout};
        b->fill(&j, 0, b->K);
    }
}

static oq_status conv_im2col_gemm(oq_node_ctx *ctx, const conv_plan *p, const float *x,
                                  const float *w, oq_sgemm_pa *const *pa, const float *bias, float *y,
                                  oq_error *err) {
    size_t K = (size_t)p->Cg * p->Kprod, P = p->Pout;
    size_t ncols = tile_cols(K, P * (size_t)p->N);
    size_t per = P >= ncols ? 1 : ncols / P; /* images per tile when batching */
    bool batch = P < ncols && p->N > 1;
    if (batch)
        ncols = per * P;
    else if (ncols > P)
        ncols = P;
    conv_state *st = ctx->state;
    size_t n_col, n_tmp = 0;
    float *col = NULL, *tmp = NULL;
    if (!oq_mul_size(K, ncols, &n_col) || (batch && !oq_mul_size((size_t)p->Mg, ncols, &n_tmp)) ||
        !(col = scratch_floats(&st->col, &st->col_cap, n_col)) ||
        (batch && !(tmp = scratch_floats(&st->tmp, &st->tmp_cap, n_tmp))))
        return oq_err(err, OQ_ENOMEM, "%s: cannot allocate a %zu x %zu column buffer", ctx->label,
                      K, ncols);
    size_t min_rows = OQ_NN_MIN_CHUNK(ncols);
    oq_range_fn fill = p->g.nsp == 2 ? im2col2d_rows : im2col_rows;
    /* whole images only (the kernel walks every output row of the image) */
    bool whole = batch || ncols >= P;
#ifdef CONV_HAVE_AVX512
    if (p->g.nsp == 2 && whole && (p->g.s[1] == 1 || p->g.s[1] == 2) &&
        p->g.out[1] <= 16 * CONV_AVX512_MAX_CHUNKS &&
        __builtin_cpu_supports("avx512f") && !conv_avx512_off())
        fill = im2col2d_rows_avx512;
#else
    (void)whole;
#endif
    for (int64_t gi = 0; gi < p->group; gi++) {
        const float *wg = w + (size_t)(gi * p->Mg) * K;
        if (!batch) {
            for (int64_t n = 0; n < p->N; n++) {
                const float *xg = x + ((size_t)(n * p->C + gi * p->Cg)) * p->Pin;
                float *yg = y + ((size_t)(n * p->M + gi * p->Mg)) * P;
                oq_sgemm_epilogue ep = conv_epilogue(p, bias, gi * p->Mg, y, yg);
                if (!pa) {
                    bias_job bj = {yg, ep.row_bias, P, (size_t)p->Mg};
                    bias_rows(&bj, 0, (size_t)p->Mg); /* the GEMMs add onto it (beta = 1) */
                }
                for (size_t p0 = 0; p0 < P; p0 += ncols) {
                    size_t nc = P - p0 < ncols ? P - p0 : ncols;
                    im2col_job j = {p, xg, col, nc, p0, nc};
                    oq_parallel_for(ctx->pool, K, min_rows, fill, &j);
                    if (pa) {
                        /* the residual's offset is the tile's own, not the image's */
                        oq_sgemm_epilogue tep = conv_epilogue(p, bias, gi * p->Mg, y, yg + p0);
                        oq_sgemm_pa_run(ctx->pool, pa[gi], false, (int)nc, col, (int)nc, 0.0f, yg + p0,
                                        (int)P, &tep);
                    }
                    else
                        oq_sgemm(ctx->pool, false, false, (int)p->Mg, (int)nc, (int)K, 1.0f, wg, (int)K,
                                 col, (int)nc, 1.0f, yg + p0, (int)P);
                }
            }
            continue;
        }
        for (int64_t n0 = 0; n0 < p->N; n0 += (int64_t)per) {
            size_t nb = (size_t)(p->N - n0) < per ? (size_t)(p->N - n0) : per, nc = nb * P;
            const float *xt = x + (size_t)(n0 * p->C + gi * p->Cg) * p->Pin;
            /* one parallel loop over the tile's images, not one per image */
            batch_fill_job bj = {p, fill, xt, col, K, nc};
            oq_parallel_for(ctx->pool, nb, OQ_NN_MIN_CHUNK(K * P), batch_fill, &bj);
            if (pa) {
                oq_sgemm_epilogue ep = {bias ? bias + gi * p->Mg : NULL, NULL, NULL, NULL};
                oq_sgemm_pa_run(ctx->pool, pa[gi], false, (int)nc, col, (int)nc, 0.0f, tmp, (int)nc, &ep);
                for (size_t i = 0; i < nb; i++)
                    for (int64_t m = 0; m < p->Mg; m++)
                        conv_store(p, y, y + (size_t)((n0 + (int64_t)i) * p->M + gi * p->Mg + m) * P,
                                   tmp + (size_t)m * nc + i * P, P);
                continue;
            }
            oq_sgemm(ctx->pool, false, false, (int)p->Mg, (int)nc, (int)K, 1.0f, wg, (int)K, col, (int)nc,
                     0.0f, tmp, (int)nc);
            for (size_t i = 0; i < nb; i++)
                for (int64_t m = 0; m < p->Mg; m++) {
                    size_t row = (size_t)((n0 + (int64_t)i) * p->M + gi * p->Mg + m);
                    float *restrict yr = y + row * P;
                    const float *restrict tr = tmp + (size_t)m * nc + i * P;
                    float bv = bias ? bias[gi * p->Mg + m] : 0.0f;
                    for (size_t e = 0; e < P; e++)
                        yr[e] = tr[e] + bv;
                }
        }
    }
    return OQ_OK;
}

/* ---- packed weights ---------------------------------------------------------- */

/* Conv with W packed at prepare: per image and group, im2col into a small
 * tile (the whole image when it fits, so it stays in cache) and one packed
 * GEMM writing Y directly, the bias added by the GEMM's epilogue (no fill
 * pass, no scratch output, no copy). With threads and at least one image
 * per thread, images are split over the pool, each thread with its own
 * tile; otherwise the GEMMs and im2col are split. */
typedef struct {
    const conv_plan *p;
    oq_sgemm_pa *const *pa;
    const float *x, *b;
    float *y, *col;
    size_t K, ncols, slot_floats, slots;
    bool direct; /* 1x1, stride 1, unpadded: X is the column matrix */
    bool fused;  /* 2-D: column panels packed straight from X (conv_pack_panels) */
    oq_range_fn fill;
    size_t per;  /* > 0: small images, this many per GEMM into col as scratch output */
} conv_pk_job;

static void conv_batch_images(const conv_pk_job *j, int64_t n0, int64_t n1, float *tmp, oq_pool *pool);

static void conv_pk_images(const conv_pk_job *j, int64_t n0, int64_t n1, float *col, oq_pool *pool) {
    const conv_plan *p = j->p;
    size_t P = p->Pout, K = j->K;
    size_t min_rows = OQ_NN_MIN_CHUNK(j->ncols);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t gi = 0; gi < p->group; gi++) {
            const float *xg = j->x + ((size_t)(n * p->C + gi * p->Cg)) * p->Pin;
            float *yg = j->y + ((size_t)(n * p->M + gi * p->Mg)) * P;
            oq_sgemm_epilogue ep = conv_epilogue(p, j->b, gi * p->Mg, j->y, yg);
            if (j->direct) {
                oq_sgemm_pa_run(pool, j->pa[gi], false, (int)P, xg, (int)p->Pin, 0.0f, yg, (int)P, &ep);
                continue;
            }
            if (j->fused) {
                conv_pack_job pj = {p, xg, 0};
                oq_sgemm_pa_run_fn(pool, j->pa[gi], (int)P, conv_pack_panels, &pj, 0.0f, yg, (int)P, &ep);
                continue;
            }
            for (size_t p0 = 0; p0 < P; p0 += j->ncols) {
                size_t nc = P - p0 < j->ncols ? P - p0 : j->ncols;
                im2col_job ij = {p, xg, col, nc, p0, nc};
                if (pool)
                    oq_parallel_for(pool, K, min_rows, j->fill, &ij);
                else
                    j->fill(&ij, 0, K);
                oq_sgemm_epilogue tep = conv_epilogue(p, j->b, gi * p->Mg, j->y, yg + p0); /* the tile's offset */
                oq_sgemm_pa_run(pool, j->pa[gi], false, (int)nc, col, (int)nc, 0.0f, yg + p0, (int)P, &tep);
            }
        }
}

static void conv_pk_slots(void *arg, size_t s0, size_t s1) {
    const conv_pk_job *j = arg;
    int64_t N = j->p->N;
    for (size_t s = s0; s < s1; s++) {
        int64_t n0 = (int64_t)((size_t)N * s / j->slots), n1 = (int64_t)((size_t)N * (s + 1) / j->slots);
        float *slot = j->col + s * j->slot_floats;
        if (j->per)
            conv_batch_images(j, n0, n1, slot, NULL);
        else
            conv_pk_images(j, n0, n1, slot, NULL);
    }
}

/* Per-image work (multiply-adds) below which images, not GEMMs, are split
 * over the threads. */
#define CONV_IMAGE_SPLIT_WORK ((size_t)1 << 25)

static oq_status conv_packed_run(oq_node_ctx *ctx, const conv_plan *p, bool direct, const float *x,
                                 const float *b, float *y, oq_error *err) {
    conv_state *st = ctx->state;
    size_t K = (size_t)p->Cg * p->Kprod, P = p->Pout;
    conv_pk_job j = {p, st->pa, x, b, y, NULL, K, 0, 0, 1, direct, !direct && p->g.nsp == 2, NULL, 0};
    size_t threads = (size_t)oq_pool_threads(ctx->pool), work;
    if (!oq_mul_size(K, P * (size_t)p->M, &work))
        work = SIZE_MAX;
    bool by_image = threads > 1 && (size_t)p->N >= threads && work < CONV_IMAGE_SPLIT_WORK;
    if (by_image)
        j.slots = threads;
    if (!direct && !j.fused) {
        j.ncols = tile_cols(K, P);
        j.fill = p->g.nsp == 2 ? im2col2d_rows : im2col_rows;
#ifdef CONV_HAVE_AVX512
        if (p->g.nsp == 2 && j.ncols >= P && (p->g.s[1] == 1 || p->g.s[1] == 2) &&
            p->g.out[1] <= 16 * CONV_AVX512_MAX_CHUNKS && __builtin_cpu_supports("avx512f") &&
            !conv_avx512_off())
            j.fill = im2col2d_rows_avx512;
#endif
        size_t total;
        if (!oq_mul_size(K, j.ncols, &j.slot_floats) || !oq_mul_size(j.slot_floats, j.slots, &total) ||
            !(j.col = scratch_floats(&st->col, &st->col_cap, total)))
            return oq_err(err, OQ_ENOMEM, "%s: cannot allocate a %zu x %zu column buffer", ctx->label,
                          K, j.ncols);
    }
    if (by_image)
        oq_parallel_for(ctx->pool, j.slots, 1, conv_pk_slots, &j);
    else
        conv_pk_images(&j, 0, p->N, j.col, ctx->pool);
    return OQ_OK;
}

/* Small 2-D images with packed weights: several images per GEMM (one
 * packed-GEMM call over nb * P column lanes into a scratch output, then
 * copied to Y image by image). With threads and enough images, images are
 * split over the pool, each thread with its own scratch and whole GEMMs:
 * splitting each small GEMM instead costs a pool round trip per call. */
static void conv_batch_images(const conv_pk_job *j, int64_t n0, int64_t n1, float *tmp, oq_pool *pool) {
    const conv_plan *p = j->p;
    size_t P = p->Pout;
    for (int64_t gi = 0; gi < p->group; gi++)
        for (int64_t t0 = n0; t0 < n1; t0 += (int64_t)j->per) {
            size_t nb = (size_t)(n1 - t0) < j->per ? (size_t)(n1 - t0) : j->per, nc = nb * P;
            conv_pack_job pj = {p, j->x + (size_t)(t0 * p->C + gi * p->Cg) * p->Pin, (size_t)p->C * p->Pin};
            oq_sgemm_epilogue ep = {j->b ? j->b + gi * p->Mg : NULL, NULL, NULL, NULL};
            oq_sgemm_pa_run_fn(pool, j->pa[gi], (int)nc, conv_pack_panels, &pj, 0.0f, tmp, (int)nc, &ep);
            for (size_t i = 0; i < nb; i++)
                for (int64_t m = 0; m < p->Mg; m++)
                    conv_store(p, j->y, j->y + (size_t)((t0 + (int64_t)i) * p->M + gi * p->Mg + m) * P,
                               tmp + (size_t)m * nc + i * P, P);
        }
}

static oq_status conv_batched_packed(oq_node_ctx *ctx, const conv_plan *p, const float *x, const float *b,
                                     float *y, oq_error *err) {
    conv_state *st = ctx->state;
    size_t K = (size_t)p->Cg * p->Kprod, P = p->Pout;
    size_t per = tile_cols(K, P * (size_t)p->N) / P;
    if (per < 1)
        per = 1;
    size_t threads = (size_t)oq_pool_threads(ctx->pool);
    conv_pk_job j = {p, st->pa, x, b, y, NULL, K, 0, 0, 1, false, true, NULL, per};
    if (threads > 1 && (size_t)p->N >= threads)
        j.slots = threads;
    size_t total;
    if (!oq_mul_size((size_t)p->Mg, per * P, &j.slot_floats) || !oq_mul_size(j.slot_floats, j.slots, &total) ||
        !(j.col = scratch_floats(&st->tmp, &st->tmp_cap, total)))
        return oq_err(err, OQ_ENOMEM, "%s: cannot allocate a %lld x %zu output tile", ctx->label,
                      (long long)p->Mg, per * P);
    if (j.slots > 1)
        oq_parallel_for(ctx->pool, j.slots, 1, conv_pk_slots, &j);
    else
        conv_batch_images(&j, 0, p->N, j.col, ctx->pool);
    return OQ_OK;
}

oq_status oq_nn_conv_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    conv_plan p;
    oq_status s = conv_resolve(ctx, in, false, &p, err);
    if (s != OQ_OK)
        return s;
    const float *x = in[0]->data, *w = in[1]->data;
    const float *b = ctx->n_inputs > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0].data;
    const oq_nn_geom *g = &p.g;
    if (out[0].count == 0)
        return OQ_OK;
    p.post = ctx->post;
    size_t K = (size_t)p.Cg * p.Kprod;
    /* Depthwise (one input channel per group, few outputs each): direct.
     * A single-channel stem conv with many outputs is better as a GEMM. */
    if (conv_is_depthwise(p.Cg, p.Mg, g->nsp)) {
        oq_nn_dw_job j = {g, p.C, p.M, p.Mg, x, w, b, y, !conv_avx512_off(), p.post};
        oq_nn_dw_run(ctx->pool, &j, (size_t)(p.N * p.M));
        return OQ_OK;
    }
    bool pointwise = true;
    for (int i = 0; i < g->nsp; i++)
        if (g->k[i] != 1 || g->s[i] != 1 || g->pb[i] != 0 || g->pe[i] != 0)
            pointwise = false;
    const conv_state *st = ctx->state;
    if (K > 0 && st->pa && st->n_pa == p.group && in[1]->data == st->pa_src &&
        oq_sgemm_pa_rows(st->pa[0]) == (int)p.Mg && oq_sgemm_pa_depth(st->pa[0]) == (int)K)
    {
        /* Small images: several per GEMM through the batched tile (measured
         * faster than one small GEMM per image at P = 49 and 196). */
        if (p.N > 1 && p.Pout < CONV_SMALL_IMAGE)
            return g->nsp == 2 && !pointwise ? conv_batched_packed(ctx, &p, x, b, y, err)
                                            : conv_im2col_gemm(ctx, &p, x, w, st->pa, b, y, err);
        return conv_packed_run(ctx, &p, pointwise, x, b, y, err);
    }
    bool direct = pointwise && (p.Pout >= CONV_SMALL_IMAGE || p.N == 1);
    if (K == 0 || direct) {
        /* The GEMMs accumulate onto Y pre-filled with the bias (beta = 1),
         * which costs no more than the zeroing sgemm does for beta = 0. */
        bias_job bj = {y, b, p.Pout, (size_t)p.M};
        oq_parallel_for(ctx->pool, (size_t)(p.N * p.M), OQ_NN_MIN_CHUNK(p.Pout), bias_rows, &bj);
    }
    if (K > 0) {
        if (direct) {
            /* 1x1, stride 1, no pads: X[n, group] is already the column matrix */
            for (int64_t n = 0; n < p.N; n++)
                for (int64_t gi = 0; gi < p.group; gi++)
                    oq_sgemm(ctx->pool, false, false, (int)p.Mg, (int)p.Pout, (int)K, 1.0f,
                             w + (size_t)(gi * p.Mg) * K, (int)K, x + ((size_t)(n * p.C + gi * p.Cg)) * p.Pin,
                             (int)p.Pin, 1.0f, y + ((size_t)(n * p.M + gi * p.Mg)) * p.Pout, (int)p.Pout);
        } else if ((s = conv_im2col_gemm(ctx, &p, x, w, NULL, b, y, err)) != OQ_OK) {
            return s;
        }
    }
    if (p.post) { /* W not constant: Y was finished by several passes, so one more */
        post_job pj = {p.post, y, p.Pout};
        oq_parallel_for(ctx->pool, (size_t)(p.N * p.M), OQ_NN_MIN_CHUNK(p.Pout), post_rows, &pj);
    }
    return OQ_OK;
}

/* ---- ConvTranspose ------------------------------------------------------------- */

typedef struct {
    const conv_plan *p;
    const float *col; /* [Mg*Kprod, ncols] */
    float *y;         /* one image, one group: [Mg, Pout] */
    size_t p0, ncols; /* input positions [p0, p0+ncols) */
} col2im_job;

OQ_NN_HOT static void col2im_rows(void *arg, size_t m0, size_t m1) {
    const col2im_job *j = arg;
    const conv_plan *p = j->p;
    const oq_nn_geom *g = &p->g;
    int last = g->nsp - 1;
    for (size_t m = m0; m < m1; m++) {
        float *ym = j->y + m * p->Pout;
        for (size_t kr = 0; kr < p->Kprod; kr++) {
            int64_t kc[OQ_NN_MAX_SP], ic[OQ_NN_MAX_SP];
            unflatten(kr, g->k, g->nsp, kc);
            unflatten(j->p0, g->in, g->nsp, ic);
            const float *src = j->col + (m * p->Kprod + kr) * j->ncols;
            size_t left = j->ncols;
            while (left > 0) {
                int64_t run = g->in[last] - ic[last];
                if ((size_t)run > left)
                    run = (int64_t)left;
                size_t off = 0;
                bool ok = true;
                for (int i = 0; i < last; i++) {
                    int64_t o = ic[i] * g->s[i] - g->pb[i] + kc[i] * g->d[i];
                    if (o < 0 || o >= g->out[i]) {
                        ok = false;
                        break;
                    }
                    off = off * (size_t)g->out[i] + (size_t)o;
                }
                if (ok) {
                    float *yr = ym + off * (size_t)g->out[last];
                    int64_t s = g->s[last];
                    int64_t base = ic[last] * s - g->pb[last] + kc[last] * g->d[last];
                    int64_t lo, hi;
                    valid_span(base, s, g->out[last], run, &lo, &hi);
                    for (int64_t q = lo; q < hi; q++)
                        yr[base + q * s] += src[q];
                }
                src += run;
                left -= (size_t)run;
                ic[last] += run;
                for (int i = last; i > 0 && ic[i] == g->in[i]; i--) {
                    ic[i] = 0;
                    ic[i - 1]++;
                }
            }
        }
    }
}

oq_status oq_nn_convtranspose_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                  oq_error *err) {
    conv_plan p;
    oq_status s = conv_resolve(ctx, in, true, &p, err);
    if (s != OQ_OK)
        return s;
    const float *x = in[0]->data, *w = in[1]->data;
    const float *b = ctx->n_inputs > 2 && in[2] ? in[2]->data : NULL;
    float *y = out[0].data;
    if (out[0].count == 0)
        return OQ_OK;
    size_t rows = (size_t)p.Mg * p.Kprod; /* columns per input position */
    for (size_t r = 0; r < (size_t)(p.N * p.M); r++) {
        float bv = b ? b[r % (size_t)p.M] : 0.0f;
        float *yr = y + r * p.Pout;
        for (size_t i = 0; i < p.Pout; i++)
            yr[i] = bv;
    }
    if (rows == 0 || p.Pin == 0 || p.Cg == 0)
        return OQ_OK;
    size_t ncols = tile_cols(rows, p.Pin), n;
    conv_state *st = ctx->state;
    float *col = NULL;
    if (!oq_mul_size(rows, ncols, &n) || !(col = scratch_floats(&st->col, &st->col_cap, n)))
        return oq_err(err, OQ_ENOMEM, "%s: cannot allocate a %zu x %zu column buffer", ctx->label,
                      rows, ncols);
    for (int64_t ni = 0; ni < p.N; ni++) {
        for (int64_t gi = 0; gi < p.group; gi++) {
            const float *xg = x + ((size_t)(ni * p.C + gi * p.Cg)) * p.Pin;
            const float *wg = w + (size_t)(gi * p.Cg) * rows;
            float *yg = y + ((size_t)(ni * p.M + gi * p.Mg)) * p.Pout;
            for (size_t p0 = 0; p0 < p.Pin; p0 += ncols) {
                size_t nc = p.Pin - p0 < ncols ? p.Pin - p0 : ncols;
                /* col[Mg*K, nc] = Wg^T [Mg*K, Cg] * Xg[Cg, p0:p0+nc] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)nc,
                            (int)p.Cg, 1.0f, wg, (int)rows, xg + p0, (int)p.Pin, 0.0f, col,
                            (int)nc);
                col2im_job j = {&p, col, yg, p0, nc};
                oq_parallel_for(ctx->pool, (size_t)p.Mg, OQ_NN_MIN_CHUNK(p.Kprod * nc), col2im_rows,
                                &j);
            }
        }
    }
    return OQ_OK;
}
