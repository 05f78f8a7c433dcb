/* ops_shape_resize.c: Resize (opsets 10..25) and Upsample (7..9).
 * Coordinates follow the ONNX reference implementation (onnx/reference/ops/
 * op_resize.py): each output axis gets a table of input taps and weights
 * (nearest, linear, cubic, with antialias and exclude_outside folded in),
 * and an output element is the tensor product of its axes' taps. Nearest
 * copies bytes for any type; linear/cubic compute in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "ops_shape.h"

enum { M_NEAREST, M_LINEAR, M_CUBIC };
enum {
    CT_HALF_PIXEL,
    CT_HALF_PIXEL_SYMMETRIC,
    CT_PYTORCH_HALF_PIXEL,
    CT_ALIGN_CORNERS,
    CT_ASYMMETRIC,
    CT_TF_HALF_PIXEL_FOR_NN,
    CT_TF_CROP_AND_RESIZE,
};
enum { NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL, NM_SIMPLE };
enum { KP_STRETCH, KP_NOT_LARGER, KP_NOT_SMALLER };

/* A tap table longer than this per output index is refused (a scale so
 * small that antialiasing would read millions of inputs per output). */
#define RS_MAX_TAPS 65536

typedef struct {
    bool upsample;
    int mode, ctm, nearest, policy;
    double cubic_a, extrapolation;
    bool exclude_outside, antialias, has_axes;
    int n_axes;
    int64_t axes[OQ_MAX_RANK];
    int n_scales;               /* Upsample-7 scales attribute */
    float scales[OQ_MAX_RANK];
} rs_state;

static int lookup(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static oq_status rs_string(oq_node_ctx *ctx, const char *name, const char *def,
                           const char *const *names, int n, int *out, oq_error *err) {
    char buf[32];
    oq_status st = oq_node_attr_string(ctx->node, name, def, buf, sizeof buf, err);
    if (st != OQ_OK)
        return st;
    *out = lookup(buf, names, n);
    if (*out < 0)
        return oq_err(err, OQ_EMODEL, "%s: %s '%s' is not valid", ctx->label, name, buf);
    return OQ_OK;
}

static oq_status rs_prepare_common(oq_node_ctx *ctx, rs_state *s, oq_error *err) {
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    oq_status st = rs_string(ctx, "mode", "nearest", modes, 3, &s->mode, err);
    if (st != OQ_OK)
        return st;
    /* Resize-10 and Upsample: asymmetric coordinates; nearest rounds like
     * ONNX Runtime's "simple" mode (floor when upsampling, ceil when not). */
    s->ctm = CT_ASYMMETRIC;
    s->nearest = NM_SIMPLE;
    if (s->upsample || ctx->opset < 11) {
        if (s->mode == M_CUBIC)
            return oq_err(err, OQ_EMODEL, "%s: mode 'cubic' needs opset 11", ctx->label);
        return OQ_OK;
    }
    static const char *const ctms[] = {"half_pixel",    "half_pixel_symmetric",
                                       "pytorch_half_pixel", "align_corners",
                                       "asymmetric",    "tf_half_pixel_for_nn",
                                       "tf_crop_and_resize"};
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    static const char *const kps[] = {"stretch", "not_larger", "not_smaller"};
    if ((st = rs_string(ctx, "coordinate_transformation_mode", "half_pixel", ctms, 7, &s->ctm,
                        err)) != OQ_OK)
        return st;
    /* tf_half_pixel_for_nn existed in Resize-11 only; half_pixel_symmetric came in 19 */
    if ((s->ctm == CT_TF_HALF_PIXEL_FOR_NN && ctx->opset >= 13) ||
        (s->ctm == CT_HALF_PIXEL_SYMMETRIC && ctx->opset < 19))
        return oq_err(err, OQ_EMODEL, "%s: coordinate_transformation_mode %s is not in opset %d",
                      ctx->label, ctms[s->ctm], ctx->opset);
    if ((st = rs_string(ctx, "nearest_mode", "round_prefer_floor", nms, 4, &s->nearest, err)) !=
        OQ_OK)
        return st;
    float a, ev;
    int64_t ex;
    if ((st = oq_node_attr_float(ctx->node, "cubic_coeff_a", -0.75f, &a, err)) != OQ_OK ||
        (st = oq_node_attr_float(ctx->node, "extrapolation_value", 0.0f, &ev, err)) != OQ_OK ||
        (st = OQ_ATTR_INT(ctx, "exclude_outside", 0, &ex, err)) != OQ_OK)
        return st;
    s->cubic_a = a;
    s->extrapolation = ev;
    s->exclude_outside = ex != 0;
    if (ctx->opset >= 18) { /* antialias, axes, keep_aspect_ratio_policy: Resize-18 */
        int64_t aa;
        const int64_t *axes;
        size_t n;
        if ((st = OQ_ATTR_INT(ctx, "antialias", 0, &aa, err)) != OQ_OK ||
            (st = rs_string(ctx, "keep_aspect_ratio_policy", "stretch", kps, 3, &s->policy,
                            err)) != OQ_OK ||
            (st = oq_node_attr_ints(ctx->node, "axes", &axes, &n, err)) != OQ_OK)
            return st;
        s->antialias = aa != 0 && s->mode != M_NEAREST; /* antialias only filters linear/cubic */
        if (n > OQ_MAX_RANK)
            return oq_err(err, OQ_EMODEL, "%s: axes has %zu values, at most %d fit", ctx->label,
                          n, OQ_MAX_RANK);
        s->has_axes = oq_node_attr(ctx->node, "axes") != NULL;
        s->n_axes = (int)n;
        if (n)
            memcpy(s->axes, axes, n * sizeof *axes);
    }
    return OQ_OK;
}

static oq_status rs_prepare(oq_node_ctx *ctx, bool upsample, oq_error *err) {
    rs_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    s->upsample = upsample;
    oq_status st = rs_prepare_common(ctx, s, err);
    if (st == OQ_OK && upsample && ctx->opset < 9) { /* Upsample-7: scales attribute */
        const float *f;
        size_t n;
        st = oq_node_attr_floats(ctx->node, "scales", &f, &n, err);
        if (st == OQ_OK && (n == 0 || n > OQ_MAX_RANK))
            st = oq_err(err, OQ_EMODEL, "%s: attribute 'scales' needs 1..%d values", ctx->label,
                        OQ_MAX_RANK);
        if (st == OQ_OK) {
            s->n_scales = (int)n;
            memcpy(s->scales, f, n * sizeof *f);
        }
    }
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    return OQ_OK;
}

oq_status oq_shape_resize_prepare(oq_node_ctx *ctx, oq_error *err) {
    return rs_prepare(ctx, false, err);
}

oq_status oq_shape_upsample_prepare(oq_node_ctx *ctx, oq_error *err) {
    return rs_prepare(ctx, true, err);
}

/* ---- output shape and per-axis scales ------------------------------------ */

typedef struct {
    int rank;
    int64_t in[OQ_MAX_RANK], out[OQ_MAX_RANK];
    double scale[OQ_MAX_RANK];
    double roi_s[OQ_MAX_RANK], roi_e[OQ_MAX_RANK];
} rs_params;

static bool present(const oq_node_ctx *ctx, const oq_tensor *const *in, int i) {
    return ctx->n_inputs > i && in[i] && in[i]->count > 0;
}

static oq_status read_scales(const oq_node_ctx *ctx, const oq_tensor *t, int n, double *out,
                             oq_error *err) {
    if (t->dtype != OQ_DTYPE_FLOAT || t->rank != 1 || t->count != (size_t)n)
        return oq_err(err, OQ_EINVAL, "%s: scales must be %d floats, got %s with %zu values",
                      ctx->label, n, oq_dtype_name(t->dtype), t->count);
    for (int i = 0; i < n; i++) {
        out[i] = ((const float *)t->data)[i];
        if (!(out[i] > 0) || !isfinite(out[i]))
            return oq_err(err, OQ_EINVAL, "%s: scales[%d] = %g is not positive", ctx->label, i,
                          out[i]);
    }
    return OQ_OK;
}

static oq_status rs_compute(const oq_node_ctx *ctx, const oq_tensor *const *in, rs_params *p,
                            oq_error *err) {
    const rs_state *s = ctx->state;
    if (ctx->n_inputs < 1 || !in[0])
        return oq_err(err, OQ_EMODEL, "%s: input X is missing", ctx->label);
    const oq_tensor *x = in[0];
    int r = x->rank;
    if (r < 1)
        return oq_err(err, OQ_EINVAL, "%s: cannot resize a scalar", ctx->label);
    p->rank = r;
    for (int k = 0; k < r; k++) {
        p->in[k] = p->out[k] = x->dims[k];
        p->scale[k] = 1;
        p->roi_s[k] = 0;
        p->roi_e[k] = 1;
    }
    int ax[OQ_MAX_RANK], na = r;
    oq_status st;
    if (s->has_axes) {
        na = s->n_axes;
        if ((st = oq_shape_norm_axes(ctx, "axes", s->axes, na, r, ax, err)) != OQ_OK)
            return st;
    } else {
        for (int k = 0; k < r; k++)
            ax[k] = k;
    }
    double sc[OQ_MAX_RANK];
    bool use_scales = true;
    if (s->upsample && ctx->opset < 9) {
        if (s->n_scales != r)
            return oq_err(err, OQ_EINVAL, "%s: %d scales for an input of rank %d", ctx->label,
                          s->n_scales, r);
        for (int k = 0; k < r; k++)
            sc[k] = s->scales[k];
    } else if (s->upsample || ctx->opset < 11) { /* Upsample-9, Resize-10: X, scales */
        if (!present(ctx, in, 1))
            return oq_err(err, OQ_EMODEL, "%s: input scales is required", ctx->label);
        if ((st = read_scales(ctx, in[1], r, sc, err)) != OQ_OK)
            return st;
    } else { /* Resize-11+: X, roi, scales, sizes */
        bool hs = present(ctx, in, 2), hz = present(ctx, in, 3);
        if (hs == hz)
            return oq_err(err, OQ_EINVAL, "%s: exactly one of scales and sizes must be given",
                          ctx->label);
        if (hs) {
            if ((st = read_scales(ctx, in[2], na, sc, err)) != OQ_OK)
                return st;
        } else {
            use_scales = false;
            int64_t sz[OQ_MAX_RANK];
            int n;
            if ((st = oq_shape_read_ints(ctx, in[3], "sizes", false, sz, OQ_MAX_RANK, &n, err)) !=
                OQ_OK)
                return st;
            if (n != na)
                return oq_err(err, OQ_EINVAL, "%s: sizes has %d values, expected %d", ctx->label,
                              n, na);
            for (int i = 0; i < na; i++) {
                int k = ax[i];
                if (sz[i] < 0)
                    return oq_err(err, OQ_EINVAL, "%s: sizes[%d] is negative", ctx->label, i);
                if (x->dims[k] == 0 && sz[i] > 0)
                    return oq_err(err, OQ_EINVAL, "%s: cannot resize empty axis %d", ctx->label, k);
                p->out[k] = sz[i];
                p->scale[k] = x->dims[k] ? (double)sz[i] / (double)x->dims[k] : 1;
            }
            if (s->policy != KP_STRETCH) { /* Resize-18: one scale for all resized axes */
                double m = p->scale[ax[0]];
                for (int i = 1; i < na; i++)
                    m = s->policy == KP_NOT_LARGER ? fmin(m, p->scale[ax[i]])
                                                   : fmax(m, p->scale[ax[i]]);
                for (int i = 0; i < na; i++) {
                    int k = ax[i];
                    p->scale[k] = m;
                    double v = m * (double)x->dims[k] + 0.5; /* round half up */
                    if (!(v < 4611686018427387904.0))
                        return oq_err(err, OQ_ELIMIT, "%s: output dim %d too large", ctx->label, k);
                    p->out[k] = (int64_t)v;
                }
            }
        }
        if (s->ctm == CT_TF_CROP_AND_RESIZE) {
            if (!present(ctx, in, 1))
                return oq_err(err, OQ_EINVAL, "%s: tf_crop_and_resize needs roi", ctx->label);
            const oq_tensor *roi = in[1];
            if (roi->rank != 1 || roi->count != (size_t)(2 * na) ||
                (roi->dtype != OQ_DTYPE_FLOAT && roi->dtype != OQ_DTYPE_DOUBLE &&
                 roi->dtype != OQ_DTYPE_FLOAT16))
                return oq_err(err, OQ_EINVAL, "%s: roi must hold %d floats", ctx->label, 2 * na);
            for (int i = 0; i < na; i++) {
                p->roi_s[ax[i]] = oq_tensor_get_f64(roi, (size_t)i);
                p->roi_e[ax[i]] = oq_tensor_get_f64(roi, (size_t)(na + i));
                if (!isfinite(p->roi_s[ax[i]]) || !isfinite(p->roi_e[ax[i]]))
                    return oq_err(err, OQ_EINVAL, "%s: roi is not finite", ctx->label);
            }
        }
    }
    if (use_scales) {
        for (int i = 0; i < na; i++) {
            int k = ax[i];
            if (s->upsample && sc[i] < 1)
                return oq_err(err, OQ_EINVAL, "%s: Upsample scales must be >= 1 (got %g)",
                              ctx->label, sc[i]);
            /* output = floor(input * scale) */
            double v = floor((double)x->dims[k] * sc[i]);
            if (!(v < 4611686018427387904.0))
                return oq_err(err, OQ_ELIMIT, "%s: output dim %d too large", ctx->label, k);
            p->scale[k] = sc[i];
            p->out[k] = (int64_t)v;
        }
    }
    size_t count;
    if (!oq_dims_count(p->out, r, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    for (int k = 0; k < r; k++)
        if (p->in[k] == 0 && p->out[k] > 0)
            return oq_err(err, OQ_EINVAL, "%s: cannot resize empty axis %d", ctx->label, k);
    return OQ_OK;
}

oq_status oq_shape_resize_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    rs_params p;
    oq_status st = rs_compute(ctx, in, &p, err);
    if (st != OQ_OK)
        return st;
    const rs_state *s = ctx->state;
    size_t es;
    if ((st = oq_shape_elem_size(ctx, in[0], "X", &es, err)) != OQ_OK)
        return st;
    if (s->mode != M_NEAREST) {
        switch (in[0]->dtype) {
        case OQ_DTYPE_FLOAT: case OQ_DTYPE_DOUBLE: case OQ_DTYPE_FLOAT16: case OQ_DTYPE_BFLOAT16:
        case OQ_DTYPE_INT8: case OQ_DTYPE_UINT8: case OQ_DTYPE_INT16: case OQ_DTYPE_UINT16:
        case OQ_DTYPE_INT32: case OQ_DTYPE_UINT32: case OQ_DTYPE_INT64: case OQ_DTYPE_UINT64:
            break;
        default:
            return oq_err(err, OQ_EUNSUPPORTED, "%s: interpolating %s is not supported",
                          ctx->label, oq_dtype_name(in[0]->dtype));
        }
    }
    return oq_out_shape(&out[0], in[0]->dtype, p.rank, p.out, err);
}

/* ---- per-axis tap tables ------------------------------------------------- */

typedef struct {
    int n;                  /* taps per output index */
    int64_t *idx;           /* [out * n] input indices, clamped to the axis */
    double *w;              /* [out * n] weights */
    unsigned char *outside; /* [out] tf_crop_and_resize extrapolation flags, or NULL */
    bool identity;          /* output index o reads input o with weight 1 */
} rs_axis;

static double rs_coord(const rs_state *s, const rs_params *p, int k, int64_t o, bool *outside) {
    double d = (double)p->in[k], scale = p->scale[k], ow = scale * d, x, of = (double)o;
    *outside = false;
    switch (s->ctm) {
    case CT_HALF_PIXEL:
        return (of + 0.5) / scale - 0.5;
    case CT_HALF_PIXEL_SYMMETRIC: { /* centre of the implicit roi maps to the output's */
        double adj = (double)p->out[k] / ow, centre = d / 2;
        return centre * (1 - adj) + (of + 0.5) / scale - 0.5;
    }
    case CT_PYTORCH_HALF_PIXEL:
        return p->out[k] > 1 ? (of + 0.5) / scale - 0.5 : 0;
    case CT_ALIGN_CORNERS: /* as the reference: the unrounded output length */
        return ow == 1 ? 0 : of * (d - 1) / (ow - 1);
    case CT_TF_HALF_PIXEL_FOR_NN:
        return (of + 0.5) / scale;
    case CT_TF_CROP_AND_RESIZE: {
        double rs = p->roi_s[k], re = p->roi_e[k];
        x = ow == 1 ? (re - rs) * (d - 1) / 2 : of * (re - rs) * (d - 1) / (ow - 1);
        x += rs * (d - 1);
        *outside = x < 0 || x > d - 1;
        return x;
    }
    default: /* asymmetric */
        return of / scale;
    }
}

static double cubic_kernel(double x, double a) {
    x = fabs(x);
    if (x <= 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
}

static int rs_taps_count(const rs_state *s, double scale) {
    if (s->mode == M_NEAREST)
        return 1;
    if (!s->antialias)
        return s->mode == M_LINEAR ? 2 : 4;
    /* antialias widens the filter by 1/scale when downsampling */
    double sc = scale < 1 ? scale : 1, support = s->mode == M_LINEAR ? 1 : 2;
    double start = floor(-support / sc) + 1;
    double n = 2 - 2 * start;
    return n > RS_MAX_TAPS ? -1 : (int)n;
}

static void rs_axis_free(rs_axis *a) {
    free(a->idx);
    free(a->w);
    free(a->outside);
}

static oq_status rs_axis_build(const oq_node_ctx *ctx, const rs_params *p, int k, rs_axis *a,
                               oq_error *err) {
    const rs_state *s = ctx->state;
    int64_t d = p->in[k], od = p->out[k];
    memset(a, 0, sizeof *a);
    a->n = rs_taps_count(s, p->scale[k]);
    if (a->n < 0)
        return oq_err(err, OQ_ELIMIT, "%s: scale %g of axis %d needs too many filter taps",
                      ctx->label, p->scale[k], k);
    size_t n = (size_t)a->n, cells;
    if (!oq_mul_size((size_t)od, n, &cells) || cells > SIZE_MAX / sizeof(double))
        return oq_err(err, OQ_ELIMIT, "%s: resize tables overflow", ctx->label);
    a->idx = malloc(cells ? cells * sizeof *a->idx : 1);
    a->w = malloc(cells ? cells * sizeof *a->w : 1);
    if (s->ctm == CT_TF_CROP_AND_RESIZE)
        a->outside = calloc(od ? (size_t)od : 1, 1);
    if (!a->idx || !a->w || (s->ctm == CT_TF_CROP_AND_RESIZE && !a->outside)) {
        rs_axis_free(a);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for resize tables", ctx->label);
    }
    double scale = p->scale[k], sc = scale < 1 ? scale : 1, A = s->cubic_a;
    bool identity = od == d;
    for (int64_t o = 0; o < od; o++) {
        int64_t *ix = a->idx + (size_t)o * n;
        double *w = a->w + (size_t)o * n;
        bool out;
        double x = rs_coord(s, p, k, o, &out);
        if (out) {
            a->outside[o] = 1;
            for (size_t t = 0; t < n; t++) {
                ix[t] = 0;
                w[t] = 0;
            }
            identity = false;
            continue;
        }
        if (!(x > -1e15)) /* keeps the integer conversions below defined */
            x = -1e15;
        if (!(x < 1e15))
            x = 1e15;
        /* Taps sit left of x: base index xi with ratio in (0, 1]; an integer
         * x takes ratio 1 on the tap below it (as the reference does). */
        double xf = floor(x);
        int64_t xi = (int64_t)xf;
        double ratio = x - xf;
        if (ratio == 0) {
            xi -= 1;
            ratio = 1;
        }
        if (s->mode == M_NEAREST) {
            int64_t v;
            switch (s->nearest) {
            case NM_SIMPLE: v = scale < 1 ? (int64_t)ceil(x) : (int64_t)x; break;
            case NM_ROUND_PREFER_CEIL: v = ratio < 0.5 ? xi : xi + 1; break;
            case NM_FLOOR: v = ratio == 1 ? xi + 1 : xi; break;
            case NM_CEIL: v = xi + 1; break;
            default: v = ratio <= 0.5 ? xi : xi + 1; break;
            }
            ix[0] = v < 0 ? 0 : v >= d ? d - 1 : v;
            w[0] = 1;
        } else {
            int64_t base = xi - (int64_t)n / 2 + 1;
            if (!s->antialias && s->mode == M_LINEAR) {
                w[0] = 1 - ratio;
                w[1] = ratio;
            } else if (!s->antialias) {
                for (size_t t = 0; t < 4; t++)
                    w[t] = cubic_kernel((double)((int64_t)t - 1) - ratio, A);
            } else {
                double sum = 0, start = 1 - (double)n / 2;
                for (size_t t = 0; t < n; t++) {
                    double arg = (start + (double)t - ratio) * sc;
                    w[t] = s->mode == M_LINEAR ? fmax(0, 1 - fabs(arg)) : cubic_kernel(arg, A);
                    sum += w[t];
                }
                for (size_t t = 0; t < n && sum != 0; t++)
                    w[t] /= sum;
            }
            double sum = 0;
            for (size_t t = 0; t < n; t++) {
                int64_t v = base + (int64_t)t;
                if (s->exclude_outside && (v < 0 || v >= d))
                    w[t] = 0;
                sum += w[t];
                ix[t] = v < 0 ? 0 : v >= d ? d - 1 : v;
            }
            if (s->exclude_outside && sum != 0)
                for (size_t t = 0; t < n; t++)
                    w[t] /= sum;
        }
        /* identity: exactly one tap of weight 1 at index o, the rest 0 */
        for (size_t t = 0; identity && t < n; t++)
            identity = w[t] == 0 || (w[t] == 1 && ix[t] == o);
    }
    a->identity = identity;
    if (identity && n > 1) { /* collapse to one tap per output */
        for (int64_t o = 0; o < od; o++) {
            a->idx[o] = o;
            a->w[o] = 1;
        }
        a->n = 1;
    }
    return OQ_OK;
}

/* ---- evaluation ---------------------------------------------------------- */

typedef struct {
    int rank;
    rs_axis ax[OQ_MAX_RANK];
    int64_t od[OQ_MAX_RANK];
    size_t istr[OQ_MAX_RANK];
    size_t es, rows;
    const unsigned char *in;
    unsigned char *out;
    unsigned char extrap[16];  /* extrapolation value as one element (nearest) */
    double extrap_f;
    /* linear/cubic: per-task scratch for the outer axes' tap combinations */
    size_t ncombo, tasks;
    size_t *coff;
    double *cw;
} rs_job;

/* Decomposes a row index over axes 0..rank-2; false if any is outside. */
static bool rs_row_index(const rs_job *j, size_t row, int64_t *o) {
    size_t rem = row;
    bool inside = true;
    for (int k = j->rank - 2; k >= 0; k--) {
        o[k] = (int64_t)(rem % (size_t)j->od[k]);
        rem /= (size_t)j->od[k];
        if (j->ax[k].outside && j->ax[k].outside[o[k]])
            inside = false;
    }
    return inside;
}

static void rs_nearest_rows(void *arg, size_t begin, size_t end) {
    const rs_job *j = arg;
    int L = j->rank - 1;
    size_t es = j->es, n = (size_t)j->od[L];
    const rs_axis *al = &j->ax[L];
    for (size_t row = begin; row < end; row++) {
        int64_t o[OQ_MAX_RANK];
        unsigned char *dst = j->out + row * n * es;
        if (!rs_row_index(j, row, o)) {
            oq_shape_fill(dst, j->extrap, es, n);
            continue;
        }
        size_t off = 0;
        for (int k = 0; k < L; k++)
            off += (size_t)j->ax[k].idx[o[k]] * j->istr[k];
        const unsigned char *src = j->in + off * es;
        if (al->identity) {
            memcpy(dst, src, n * es);
        } else if (es == 4 && !al->outside) {
            const uint32_t *s = (const void *)src;
            uint32_t *dd = (void *)dst;
            for (size_t x = 0; x < n; x++)
                dd[x] = s[al->idx[x]];
        } else {
            for (size_t x = 0; x < n; x++)
                memcpy(dst + x * es, al->outside && al->outside[x] ? j->extrap
                                                                  : src + (size_t)al->idx[x] * es,
                       es);
        }
    }
}

#define RS_INTERP(T)                                                                          \
    static void rs_interp_##T(const rs_job *j, size_t begin, size_t end, size_t *coff,       \
                              double *cw) {                                                   \
        int L = j->rank - 1;                                                                  \
        size_t n = (size_t)j->od[L], nl = (size_t)j->ax[L].n;                                 \
        const rs_axis *al = &j->ax[L];                                                        \
        const T *in = (const T *)(const void *)j->in;                                         \
        for (size_t row = begin; row < end; row++) {                                          \
            int64_t o[OQ_MAX_RANK];                                                           \
            T *dst = (T *)(void *)j->out + row * n;                                           \
            if (!rs_row_index(j, row, o)) {                                                   \
                for (size_t x = 0; x < n; x++)                                                \
                    dst[x] = (T)j->extrap_f;                                                  \
                continue;                                                                     \
            }                                                                                 \
            /* tap combinations of the outer axes: input offset and weight */               \
            size_t nc = 1;                                                                    \
            coff[0] = 0;                                                                      \
            cw[0] = 1;                                                                        \
            for (int k = 0; k < L; k++) {                                                     \
                size_t na = (size_t)j->ax[k].n, b = (size_t)o[k] * na;                        \
                for (size_t c = nc; c-- > 0;) {                                               \
                    size_t co = coff[c];                                                      \
                    double cwv = cw[c];                                                       \
                    for (size_t t = na; t-- > 0;) {                                           \
                        coff[c * na + t] = co + (size_t)j->ax[k].idx[b + t] * j->istr[k];    \
                        cw[c * na + t] = cwv * j->ax[k].w[b + t];                             \
                    }                                                                         \
                }                                                                             \
                nc *= na;                                                                     \
            }                                                                                 \
            for (size_t x = 0; x < n; x++) {                                                  \
                if (al->outside && al->outside[x]) {                                          \
                    dst[x] = (T)j->extrap_f;                                                  \
                    continue;                                                                 \
                }                                                                             \
                const int64_t *ix = al->idx + x * nl;                                         \
                const double *w = al->w + x * nl;                                             \
                double acc = 0;                                                               \
                for (size_t c = 0; c < nc; c++) {                                             \
                    if (cw[c] == 0)                                                           \
                        continue;                                                             \
                    const T *src = in + coff[c];                                              \
                    double v = 0;                                                             \
                    for (size_t t = 0; t < nl; t++)                                           \
                        v += w[t] * (double)src[ix[t]];                                       \
                    acc += cw[c] * v;                                                         \
                }                                                                             \
                dst[x] = (T)acc;                                                              \
            }                                                                                 \
        }                                                                                     \
    }
RS_INTERP(float)
RS_INTERP(double)

/* Each task owns a slice of rows and its own combination scratch. */
static void rs_interp_tasks(void *arg, size_t begin, size_t end) {
    const rs_job *j = arg;
    for (size_t t = begin; t < end; t++) {
        size_t r0 = j->rows * t / j->tasks, r1 = j->rows * (t + 1) / j->tasks;
        size_t *coff = j->coff + t * j->ncombo;
        double *cw = j->cw + t * j->ncombo;
        if (j->es == sizeof(float))
            rs_interp_float(j, r0, r1, coff, cw);
        else
            rs_interp_double(j, r0, r1, coff, cw);
    }
}

static oq_status rs_interpolate(oq_node_ctx *ctx, rs_job *j, const oq_tensor *x, oq_tensor *out,
                                oq_error *err) {
    /* float and double are computed in place; other types through double copies */
    bool direct = x->dtype == OQ_DTYPE_FLOAT || x->dtype == OQ_DTYPE_DOUBLE;
    double *tin = NULL, *tout = NULL;
    oq_status st = OQ_OK;
    if (!direct) {
        size_t bi, bo;
        if (!oq_mul_size(x->count, sizeof(double), &bi) || !oq_mul_size(out->count, sizeof(double), &bo))
            return oq_err(err, OQ_ELIMIT, "%s: tensor too large", ctx->label);
        tin = malloc(bi ? bi : 1);
        tout = malloc(bo ? bo : 1);
        if (!tin || !tout) {
            st = oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
            goto done;
        }
        for (size_t i = 0; i < x->count; i++)
            tin[i] = oq_tensor_get_f64(x, i);
        j->in = (const void *)tin;
        j->out = (void *)tout;
        j->es = sizeof(double);
    } else {
        j->es = oq_dtype_size(x->dtype);
    }
    size_t threads = (size_t)oq_pool_threads(ctx->pool);
    size_t per_row = (size_t)j->od[j->rank - 1] * (size_t)j->ax[j->rank - 1].n * j->ncombo;
    size_t min_rows = per_row >= 8192 ? 1 : 8192 / (per_row ? per_row : 1);
    j->tasks = j->rows / min_rows;
    if (j->tasks > threads)
        j->tasks = threads;
    if (j->tasks < 1)
        j->tasks = 1;
    size_t cells;
    if (!oq_mul_size(j->tasks, j->ncombo, &cells) || cells > SIZE_MAX / sizeof(double)) {
        st = oq_err(err, OQ_ELIMIT, "%s: resize scratch overflows", ctx->label);
        goto done;
    }
    j->coff = malloc(cells * sizeof *j->coff);
    j->cw = malloc(cells * sizeof *j->cw);
    if (!j->coff || !j->cw) {
        st = oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        goto done;
    }
    oq_parallel_for(ctx->pool, j->tasks, 1, rs_interp_tasks, j);
    if (!direct)
        for (size_t i = 0; i < out->count; i++)
            oq_shape_store_f64(out->dtype, (unsigned char *)out->data + i * oq_dtype_size(out->dtype),
                               tout[i]);
done:
    free(j->coff);
    free(j->cw);
    free(tin);
    free(tout);
    return st;
}

oq_status oq_shape_resize_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    const rs_state *s = ctx->state;
    rs_params p;
    oq_status st = rs_compute(ctx, in, &p, err);
    if (st != OQ_OK || out[0].count == 0)
        return st;
    const oq_tensor *x = in[0];
    rs_job j = {.rank = p.rank, .es = oq_dtype_size(x->dtype), .in = x->data, .out = out[0].data,
                .extrap_f = s->extrapolation};
    oq_shape_store_f64(x->dtype, j.extrap, s->extrapolation);
    size_t str = 1, ncombo = 1;
    int built = 0;
    for (int k = p.rank - 1; k >= 0; k--) {
        j.istr[k] = str;
        str *= (size_t)p.in[k];
        j.od[k] = p.out[k];
    }
    for (; built < p.rank; built++)
        if ((st = rs_axis_build(ctx, &p, built, &j.ax[built], err)) != OQ_OK)
            goto done;
    for (int k = 0; k < p.rank - 1; k++)
        if (!oq_mul_size(ncombo, (size_t)j.ax[k].n, &ncombo) || ncombo > RS_MAX_TAPS) {
            st = oq_err(err, OQ_ELIMIT, "%s: too many filter taps across axes", ctx->label);
            goto done;
        }
    j.ncombo = ncombo;
    j.rows = out[0].count / (size_t)p.out[p.rank - 1];
    if (s->mode == M_NEAREST) {
        size_t rb = (size_t)p.out[p.rank - 1] * j.es;
        oq_parallel_for(ctx->pool, j.rows, rb >= 32768 ? 1 : 32768 / rb, rs_nearest_rows, &j);
    } else {
        st = rs_interpolate(ctx, &j, x, &out[0], err);
    }
done:
    for (int k = 0; k < built; k++)
        rs_axis_free(&j.ax[k]);
    return st;
}
