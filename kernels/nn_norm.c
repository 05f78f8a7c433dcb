/* nn_norm.c: BatchNormalization (6..15, inference only), InstanceNormalization
 * (6..22) and LayerNormalization (17, with Mean/InvStdDev). Statistics are
 * accumulated in double; rows/planes are split over the thread pool. float
 * and double natively, float16/bfloat16 through float copies. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "nn.h"

static bool norm_dtype_ok(oq_dtype dt) {
    return dt == OQ_DTYPE_FLOAT || dt == OQ_DTYPE_DOUBLE || dt == OQ_DTYPE_FLOAT16 ||
           dt == OQ_DTYPE_BFLOAT16;
}

/* Whether output slot i is present (named) in the node. */
static bool has_output(const oq_node_ctx *ctx, int i) {
    return i < ctx->n_outputs && i < (int)ctx->node->n_output && ctx->node->output[i] &&
           ctx->node->output[i][0] != '\0';
}

/* Mean and population variance of n floats. Strict FP semantics forbid the
 * compiler to split a reduction, so 16 independent partial sums are kept by
 * hand (they vectorise); the partials are combined in double. */
static inline void mean_var_f32(const float *restrict x, size_t n, double *mean, double *var) {
    float part[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            part[k] += x[i + k];
    double s = 0;
    for (int k = 0; k < 16; k++)
        s += part[k];
    for (; i < n; i++)
        s += x[i];
    double m = n ? s / (double)n : 0.0;
    float fm = (float)m, sq[16] = {0};
    for (i = 0; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) {
            float d = x[i + k] - fm;
            sq[k] += d * d;
        }
    double ss = 0;
    for (int k = 0; k < 16; k++)
        ss += sq[k];
    for (; i < n; i++)
        ss += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *var = n ? ss / (double)n : 0.0;
}

/* y = x * a[c] + b[c] over rows of `plane` elements, channel c = row % ch. */
typedef struct {
    const void *x;
    void *y;
    const double *a, *b;
    size_t plane, ch;
} affine_job;

OQ_NN_HOT static void affine_float(void *arg, size_t r0, size_t r1) {
    const affine_job *j = arg;
    for (size_t r = r0; r < r1; r++) {
        float a = (float)j->a[r % j->ch], b = (float)j->b[r % j->ch];
        const float *restrict x = (const float *)j->x + r * j->plane;
        float *restrict y = (float *)j->y + r * j->plane;
        for (size_t i = 0; i < j->plane; i++)
            y[i] = x[i] * a + b;
    }
}

OQ_NN_HOT static void affine_double(void *arg, size_t r0, size_t r1) {
    const affine_job *j = arg;
    for (size_t r = r0; r < r1; r++) {
        double a = j->a[r % j->ch], b = j->b[r % j->ch];
        const double *restrict x = (const double *)j->x + r * j->plane;
        double *restrict y = (double *)j->y + r * j->plane;
        for (size_t i = 0; i < j->plane; i++)
            y[i] = x[i] * a + b;
    }
}

/* Runs the affine job on x (any norm dtype) into y. */
static oq_status affine_run(oq_node_ctx *ctx, affine_job *j, const oq_tensor *x, oq_tensor *y,
                            oq_error *err) {
    size_t rows = j->plane ? x->count / j->plane : 0;
    size_t min_chunk = OQ_NN_MIN_CHUNK(j->plane);
    j->x = x->data;
    j->y = y->data;
    if (x->dtype == OQ_DTYPE_FLOAT) {
        oq_parallel_for(ctx->pool, rows, min_chunk, affine_float, j);
    } else if (x->dtype == OQ_DTYPE_DOUBLE) {
        oq_parallel_for(ctx->pool, rows, min_chunk, affine_double, j);
    } else {
        float *f = oq_nn_alloc_floats(x->count);
        if (!f)
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        oq_nn_to_float(x, f);
        j->x = f;
        j->y = f;
        oq_parallel_for(ctx->pool, rows, min_chunk, affine_float, j);
        oq_nn_from_float(f, y);
        free(f);
    }
    return OQ_OK;
}

/* ======================================================== BatchNormalization */

typedef struct {
    float epsilon;
    int64_t spatial, training_mode;
} bn_state;

oq_status oq_nn_batchnorm_prepare(oq_node_ctx *ctx, oq_error *err) {
    bn_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s;
    if ((s = oq_node_attr_float(ctx->node, "epsilon", 1e-5f, &st->epsilon, err)))
        return s;
    st->spatial = 1;
    /* BatchNormalization-6/7 have `spatial` (0: per-element statistics);
     * 9 removed it; 14 added training_mode. */
    if (ctx->opset < 9 && (s = OQ_ATTR_INT(ctx, "spatial", 1, &st->spatial, err)))
        return s;
    if (ctx->opset >= 14 && (s = OQ_ATTR_INT(ctx, "training_mode", 0, &st->training_mode, err)))
        return s;
    if (st->training_mode)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: training_mode=1 is not supported", ctx->label);
    /* Before 14 the extra outputs (running and saved statistics) exist only
     * in training. */
    for (int i = 1; i < ctx->n_outputs; i++)
        if (has_output(ctx, i))
            return oq_err(err, OQ_EUNSUPPORTED, "%s: training outputs are not supported",
                          ctx->label);
    return OQ_OK;
}

static oq_status bn_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, size_t *ch,
                            size_t *plane, oq_error *err) {
    const bn_state *st = ctx->state;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    if (ctx->n_inputs < 5)
        return oq_err(err, OQ_EMODEL, "%s: needs X, scale, B, mean and var", ctx->label);
    for (int i = 0; i < 5; i++) {
        if (!in[i])
            return oq_err(err, OQ_EMODEL, "%s: input %d is missing", ctx->label, i);
        if (!norm_dtype_ok(in[i]->dtype))
            return oq_err(err, OQ_EUNSUPPORTED, "%s: input %d of type %s", ctx->label, i,
                          oq_dtype_name(in[i]->dtype));
    }
    const oq_tensor *x = in[0];
    if (x->rank < 2)
        return oq_err(err, OQ_EINVAL, "%s: X has rank %d (need N, C, ...)", ctx->label, x->rank);
    size_t C = (size_t)x->dims[1];
    size_t S = oq_nn_count(x->dims + 2, x->rank - 2);
    size_t want = st->spatial ? C : C * S;
    for (int i = 1; i < 5; i++)
        if (in[i]->count != want || (st->spatial && in[i]->rank != 1))
            return oq_err(err, OQ_EINVAL, "%s: input %d has %zu values, expected %zu", ctx->label,
                          i, in[i]->count, want);
    *ch = want;
    *plane = st->spatial ? S : 1;
    return OQ_OK;
}

oq_status oq_nn_batchnorm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    size_t ch, plane;
    oq_status s = bn_resolve(ctx, in, &ch, &plane, err);
    if (s != OQ_OK)
        return s;
    if ((s = oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err)))
        return s;
    /* omitted optional outputs still get a (harmless) shape */
    for (int i = 1; i < ctx->n_outputs; i++)
        if ((s = oq_out_shape(&out[i], in[0]->dtype, 1, in[1]->dims, err)))
            return s;
    return OQ_OK;
}

oq_status oq_nn_batchnorm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    size_t ch, plane;
    oq_status s = bn_resolve(ctx, in, &ch, &plane, err);
    if (s != OQ_OK)
        return s;
    const bn_state *st = ctx->state;
    size_t bytes;
    double *ab;
    if (!oq_mul_size(ch ? ch : 1, 2 * sizeof(double), &bytes) || !(ab = malloc(bytes)))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    for (size_t c = 0; c < ch; c++) {
        double scale = oq_tensor_get_f64(in[1], c), bias = oq_tensor_get_f64(in[2], c);
        double mean = oq_tensor_get_f64(in[3], c), var = oq_tensor_get_f64(in[4], c);
        double a = scale / sqrt(var + (double)st->epsilon);
        ab[c] = a;
        ab[ch + c] = bias - mean * a;
    }
    affine_job j = {.a = ab, .b = ab + ch, .plane = plane, .ch = ch};
    s = affine_run(ctx, &j, in[0], &out[0], err);
    free(ab);
    return s;
}

/* ===================================================== InstanceNormalization */

typedef struct {
    float epsilon;
} in_state;

oq_status oq_nn_instancenorm_prepare(oq_node_ctx *ctx, oq_error *err) {
    in_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    return oq_node_attr_float(ctx->node, "epsilon", 1e-5f, &st->epsilon, err);
}

static oq_status instnorm_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in,
                                  oq_error *err) {
    if (ctx->n_inputs < 3 || !in[0] || !in[1] || !in[2])
        return oq_err(err, OQ_EMODEL, "%s: needs input, scale and B", ctx->label);
    const oq_tensor *x = in[0];
    if (!norm_dtype_ok(x->dtype) || in[1]->dtype != x->dtype || in[2]->dtype != x->dtype)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: unsupported or mixed dtypes (%s)", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank < 3)
        return oq_err(err, OQ_EINVAL, "%s: input has rank %d (need N, C and spatial axes)",
                      ctx->label, x->rank);
    for (int i = 1; i < 3; i++)
        if (in[i]->rank != 1 || in[i]->dims[0] != x->dims[1])
            return oq_err(err, OQ_EINVAL, "%s: input %d must be [%lld]", ctx->label, i,
                          (long long)x->dims[1]);
    return OQ_OK;
}

oq_status oq_nn_instancenorm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                   oq_error *err) {
    oq_status s = instnorm_resolve(ctx, in, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

typedef struct {
    const void *x;
    bool is_double;
    size_t plane;
    double *mean, *var; /* per plane */
} stats_job;

OQ_NN_HOT static void plane_stats(void *arg, size_t q0, size_t q1) {
    const stats_job *j = arg;
    for (size_t q = q0; q < q1; q++) {
        double s = 0, ss = 0;
        if (j->is_double) {
            const double *x = (const double *)j->x + q * j->plane;
            for (size_t i = 0; i < j->plane; i++)
                s += x[i];
            double m = j->plane ? s / (double)j->plane : 0;
            for (size_t i = 0; i < j->plane; i++)
                ss += (x[i] - m) * (x[i] - m);
            j->mean[q] = j->plane ? s / (double)j->plane : 0;
            j->var[q] = j->plane ? ss / (double)j->plane : 0;
        } else {
            mean_var_f32((const float *)j->x + q * j->plane, j->plane, &j->mean[q], &j->var[q]);
        }
    }
}

oq_status oq_nn_instancenorm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                 oq_error *err) {
    oq_status s = instnorm_resolve(ctx, in, err);
    if (s != OQ_OK)
        return s;
    const in_state *st = ctx->state;
    const oq_tensor *x = in[0];
    size_t C = (size_t)x->dims[1], planes = (size_t)x->dims[0] * C;
    size_t plane = planes ? x->count / planes : 0, bytes;
    double *buf;
    if (!oq_mul_size(planes ? planes : 1, 4 * sizeof(double), &bytes) || !(buf = malloc(bytes)))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    float *fx = NULL;
    stats_job sj = {x->data, x->dtype == OQ_DTYPE_DOUBLE, plane, buf, buf + planes};
    if (x->dtype != OQ_DTYPE_FLOAT && x->dtype != OQ_DTYPE_DOUBLE) {
        if (!(fx = oq_nn_alloc_floats(x->count))) {
            free(buf);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(x, fx);
        sj.x = fx;
    }
    oq_parallel_for(ctx->pool, planes, OQ_NN_MIN_CHUNK(2 * plane), plane_stats, &sj);
    free(fx);
    /* y = (x - mean) / sqrt(var + eps) * scale + B as one affine map per plane */
    double *a = buf + 2 * planes, *b = buf + 3 * planes;
    for (size_t q = 0; q < planes; q++) {
        double inv = 1.0 / sqrt(buf[planes + q] + (double)st->epsilon);
        a[q] = oq_tensor_get_f64(in[1], q % C) * inv;
        b[q] = oq_tensor_get_f64(in[2], q % C) - buf[q] * a[q];
    }
    affine_job j = {.a = a, .b = b, .plane = plane, .ch = planes ? planes : 1};
    s = affine_run(ctx, &j, x, &out[0], err);
    free(buf);
    return s;
}

/* ======================================================== LayerNormalization */

typedef struct {
    int64_t axis, stash_type;
    float epsilon;
} ln_state;

oq_status oq_nn_layernorm_prepare(oq_node_ctx *ctx, oq_error *err) {
    ln_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s;
    if ((s = OQ_ATTR_INT(ctx, "axis", -1, &st->axis, err)) ||
        (s = OQ_ATTR_INT(ctx, "stash_type", 1, &st->stash_type, err)) ||
        (s = oq_node_attr_float(ctx->node, "epsilon", 1e-5f, &st->epsilon, err)))
        return s;
    /* stash_type is the type of Mean/InvStdDev and of the statistics */
    if (st->stash_type != OQ_DTYPE_FLOAT && st->stash_type != OQ_DTYPE_DOUBLE &&
        st->stash_type != OQ_DTYPE_BFLOAT16 && st->stash_type != OQ_DTYPE_FLOAT16)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: stash_type %lld", ctx->label,
                      (long long)st->stash_type);
    return OQ_OK;
}

typedef struct {
    int axis;
    size_t rows, D;
    int64_t sstr[OQ_MAX_RANK], bstr[OQ_MAX_RANK]; /* scale/B strides over X.shape[axis:] */
} ln_plan;

static oq_status ln_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, ln_plan *p,
                            oq_error *err) {
    const ln_state *st = ctx->state;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    const oq_tensor *x = ctx->n_inputs > 0 ? in[0] : NULL, *sc = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *b = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!x || !sc)
        return oq_err(err, OQ_EMODEL, "%s: X and Scale are required", ctx->label);
    if (!norm_dtype_ok(x->dtype) || sc->dtype != x->dtype || (b && b->dtype != x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: unsupported or mixed dtypes (%s)", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank < 1)
        return oq_err(err, OQ_EINVAL, "%s: X must have rank >= 1", ctx->label);
    oq_status s = oq_norm_axis(ctx, st->axis, x->rank, &p->axis, err);
    if (s != OQ_OK)
        return s;
    int nd = x->rank - p->axis;
    p->rows = oq_nn_count(x->dims, p->axis);
    p->D = oq_nn_count(x->dims + p->axis, nd);
    /* Scale and B broadcast unidirectionally to X.shape[axis:]. */
    const oq_tensor *pr[2] = {sc, b};
    int64_t *str[2] = {p->sstr, p->bstr};
    for (int k = 0; k < 2; k++) {
        const oq_tensor *t = pr[k];
        if (!t)
            continue;
        if (t->rank > nd)
            return oq_err(err, OQ_EINVAL, "%s: %s has rank %d > %d", ctx->label,
                          k ? "B" : "Scale", t->rank, nd);
        for (int d = 0; d < t->rank; d++) {
            int64_t want = x->dims[x->rank - t->rank + d];
            if (t->dims[d] != want && t->dims[d] != 1)
                return oq_err(err, OQ_EINVAL, "%s: %s does not broadcast to the normalized shape",
                              ctx->label, k ? "B" : "Scale");
        }
        oq_broadcast_strides(t, nd, x->dims + p->axis, str[k]);
    }
    return OQ_OK;
}

oq_status oq_nn_layernorm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    ln_plan p;
    oq_status s = ln_resolve(ctx, in, &p, err);
    if (s != OQ_OK)
        return s;
    const ln_state *st = ctx->state;
    const oq_tensor *x = in[0];
    if ((s = oq_out_shape(&out[0], x->dtype, x->rank, x->dims, err)))
        return s;
    int64_t dims[OQ_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
        dims[d] = d < p.axis ? x->dims[d] : 1;
    for (int i = 1; i < ctx->n_outputs && i < 3; i++)
        if ((s = oq_out_shape(&out[i], (oq_dtype)st->stash_type, x->rank, dims, err)))
            return s;
    return OQ_OK;
}

typedef struct {
    const void *x;
    void *y;
    bool is_double;
    size_t D;
    const double *scale, *bias; /* expanded to D */
    const float *fscale, *fbias;
    double eps;
    double *mean, *inv;         /* per row */
} ln_job;

OQ_NN_HOT static void ln_rows(void *arg, size_t r0, size_t r1) {
    const ln_job *j = arg;
    size_t D = j->D;
    for (size_t r = r0; r < r1; r++) {
        double s = 0, ss = 0, m, inv;
        if (j->is_double) {
            const double *x = (const double *)j->x + r * D;
            double *y = (double *)j->y + r * D;
            for (size_t i = 0; i < D; i++)
                s += x[i];
            m = D ? s / (double)D : 0;
            for (size_t i = 0; i < D; i++)
                ss += (x[i] - m) * (x[i] - m);
            inv = 1.0 / sqrt((D ? ss / (double)D : 0) + j->eps);
            for (size_t i = 0; i < D; i++)
                y[i] = (x[i] - m) * inv * j->scale[i] + j->bias[i];
        } else {
            const float *restrict x = (const float *)j->x + r * D;
            float *restrict y = (float *)j->y + r * D;
            double var;
            mean_var_f32(x, D, &m, &var);
            inv = 1.0 / sqrt(var + j->eps);
            float fm = (float)m, finv = (float)inv;
            const float *restrict sc = j->fscale, *restrict bi = j->fbias;
            for (size_t i = 0; i < D; i++)
                y[i] = (x[i] - fm) * finv * sc[i] + bi[i];
        }
        j->mean[r] = m;
        j->inv[r] = inv;
    }
}

static void store_stat(oq_tensor *t, size_t i, double v) {
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT: ((float *)t->data)[i] = (float)v; break;
    case OQ_DTYPE_DOUBLE: ((double *)t->data)[i] = v; break;
    case OQ_DTYPE_FLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_half((float)v); break;
    case OQ_DTYPE_BFLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_bf16((float)v); break;
    default: break;
    }
}

oq_status oq_nn_layernorm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    ln_plan p;
    oq_status s = ln_resolve(ctx, in, &p, err);
    if (s != OQ_OK)
        return s;
    const ln_state *st = ctx->state;
    const oq_tensor *x = in[0], *sc = in[1], *b = ctx->n_inputs > 2 ? in[2] : NULL;
    size_t n, bytes;
    double *buf;
    if (!oq_add_size(2 * p.D, 2 * p.rows, &n) || !oq_mul_size(n ? n : 1, sizeof(double), &bytes) ||
        !(buf = malloc(bytes)))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ln_job j = {.x = x->data, .y = out[0].data, .is_double = x->dtype == OQ_DTYPE_DOUBLE,
                .D = p.D, .eps = (double)st->epsilon};
    double *scale = buf, *bias = buf + p.D;
    j.mean = buf + 2 * p.D;
    j.inv = j.mean + p.rows;
    int nd = x->rank - p.axis;
    const int64_t *nd_dims = x->dims + p.axis;
    for (size_t i = 0; i < p.D; i++) {
        size_t rem = i, so = 0, bo = 0;
        for (int d = nd - 1; d >= 0; d--) {
            size_t c = rem % (size_t)nd_dims[d];
            rem /= (size_t)nd_dims[d];
            so += c * (size_t)p.sstr[d];
            bo += c * (size_t)p.bstr[d];
        }
        scale[i] = oq_tensor_get_f64(sc, so);
        bias[i] = b ? oq_tensor_get_f64(b, bo) : 0.0;
    }
    j.scale = scale;
    j.bias = bias;
    float *fsb = oq_nn_alloc_floats(2 * p.D);
    if (!fsb) {
        free(buf);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    }
    for (size_t i = 0; i < p.D; i++) {
        fsb[i] = (float)scale[i];
        fsb[p.D + i] = (float)bias[i];
    }
    j.fscale = fsb;
    j.fbias = fsb + p.D;
    float *f = NULL;
    if (x->dtype != OQ_DTYPE_FLOAT && x->dtype != OQ_DTYPE_DOUBLE) {
        if (!(f = oq_nn_alloc_floats(x->count))) {
            free(buf);
            free(fsb);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(x, f);
        j.x = f;
        j.y = f;
    }
    oq_parallel_for(ctx->pool, p.rows, OQ_NN_MIN_CHUNK(3 * p.D), ln_rows, &j);
    if (f) {
        oq_nn_from_float(f, &out[0]);
        free(f);
    }
    for (size_t r = 0; r < p.rows; r++) {
        if (ctx->n_outputs > 1)
            store_stat(&out[1], r, j.mean[r]);
        if (ctx->n_outputs > 2)
            store_stat(&out[2], r, j.inv[r]);
    }
    free(buf);
    free(fsb);
    return OQ_OK;
}
