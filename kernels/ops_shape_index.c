/* ops_shape_index.c: shape-family ops driven by index or pad tensors:
 * Gather, GatherElements, ScatterND, Pad. Indices come from the data at run
 * time, so every index is range-checked before it addresses memory and a bad
 * one fails the run with an error naming the node. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "ops_shape.h"

static int64_t idx_at(const oq_tensor *t, size_t i) {
    return t->dtype == OQ_DTYPE_INT64 ? ((const int64_t *)t->data)[i]
                                      : ((const int32_t *)t->data)[i];
}

static oq_status check_indices_type(const oq_node_ctx *ctx, const oq_tensor *t, bool allow_i32,
                                    oq_error *err) {
    if (t->dtype == OQ_DTYPE_INT64 || (allow_i32 && t->dtype == OQ_DTYPE_INT32))
        return OQ_OK;
    return oq_err(err, OQ_EINVAL, "%s: indices must be %s, got %s", ctx->label,
                  allow_i32 ? "int32 or int64" : "int64", oq_dtype_name(t->dtype));
}

static oq_status two_inputs(const oq_node_ctx *ctx, const oq_tensor *const *in, size_t *es,
                            oq_error *err) {
    if (ctx->n_inputs < 2 || !in[0] || !in[1])
        return oq_err(err, OQ_EMODEL, "%s: inputs data and indices are required", ctx->label);
    return oq_shape_elem_size(ctx, in[0], "data", es, err);
}

/* ---- Gather -------------------------------------------------------------- */

oq_status oq_shape_gather_prepare(oq_node_ctx *ctx, oq_error *err) {
    int64_t *v = malloc(sizeof *v);
    if (!v)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_ATTR_INT(ctx, "axis", 0, v, err);
    if (st != OQ_OK) {
        free(v);
        return st;
    }
    ctx->state = v;
    return OQ_OK;
}

oq_status oq_shape_gather_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    size_t es;
    oq_status st = two_inputs(ctx, in, &es, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0], *ind = in[1];
    if ((st = check_indices_type(ctx, ind, true, err)) != OQ_OK)
        return st;
    if (x->rank < 1)
        return oq_err(err, OQ_EINVAL, "%s: data must have rank >= 1", ctx->label);
    int axis;
    if ((st = oq_norm_axis(ctx, *(const int64_t *)ctx->state, x->rank, &axis, err)) != OQ_OK)
        return st;
    int r = x->rank - 1 + ind->rank;
    if (r > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: output rank %d exceeds %d", ctx->label, r,
                      OQ_MAX_RANK);
    if (x->dims[axis] == 0 && ind->count > 0)
        return oq_err(err, OQ_EINVAL, "%s: cannot gather from an empty axis", ctx->label);
    /* output = data.shape[:axis] + indices.shape + data.shape[axis+1:] */
    int64_t d[OQ_MAX_RANK];
    int n = 0;
    for (int k = 0; k < axis; k++)
        d[n++] = x->dims[k];
    for (int k = 0; k < ind->rank; k++)
        d[n++] = ind->dims[k];
    for (int k = axis + 1; k < x->rank; k++)
        d[n++] = x->dims[k];
    size_t count;
    if (!oq_dims_count(d, r, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    return oq_out_shape(&out[0], x->dtype, r, d, err);
}

/* Fails naming the node and the first index outside [-dim, dim). */
static oq_status check_range(const oq_node_ctx *ctx, const oq_tensor *ind, int64_t dim,
                             oq_error *err) {
    for (size_t i = 0; i < ind->count; i++) {
        int64_t v = idx_at(ind, i);
        if (v < -dim || v >= dim)
            return oq_err(err, OQ_EINVAL, "%s: index %lld at position %zu is out of range [%lld, %lld)",
                          ctx->label, (long long)v, i, (long long)-dim, (long long)dim);
    }
    return OQ_OK;
}

typedef struct {
    const unsigned char *in;
    unsigned char *out;
    const oq_tensor *ind;
    size_t n_ind, inner;  /* inner: bytes per gathered slice */
    int64_t dim;
} gather_job;

static void gather_tasks(void *arg, size_t begin, size_t end) {
    const gather_job *j = arg;
    for (size_t t = begin; t < end; t++) {
        size_t o = t / j->n_ind, i = t % j->n_ind;
        int64_t v = idx_at(j->ind, i);
        if (v < 0)
            v += j->dim;
        const unsigned char *src = j->in + (o * (size_t)j->dim + (size_t)v) * j->inner;
        unsigned char *dst = j->out + t * j->inner;
        switch (j->inner) {
        case 4: memcpy(dst, src, 4); break;
        case 8: memcpy(dst, src, 8); break;
        default: memcpy(dst, src, j->inner);
        }
    }
}

oq_status oq_shape_gather_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    const oq_tensor *x = in[0], *ind = in[1];
    int axis;
    oq_status st = oq_norm_axis(ctx, *(const int64_t *)ctx->state, x->rank, &axis, err);
    if (st != OQ_OK)
        return st;
    if ((st = check_range(ctx, ind, x->dims[axis], err)) != OQ_OK)
        return st;
    if (out[0].count == 0)
        return OQ_OK;
    size_t outer = 1, inner = oq_dtype_size(x->dtype);
    for (int k = 0; k < axis; k++)
        outer *= (size_t)x->dims[k];
    for (int k = axis + 1; k < x->rank; k++)
        inner *= (size_t)x->dims[k];
    gather_job j = {.in = x->data, .out = out[0].data, .ind = ind, .n_ind = ind->count,
                    .inner = inner, .dim = x->dims[axis]};
    oq_parallel_for(ctx->pool, outer * ind->count, inner >= 16384 ? 1 : 16384 / inner,
                    gather_tasks, &j);
    return OQ_OK;
}

/* ---- GatherElements ------------------------------------------------------ */

oq_status oq_shape_gather_elements_infer(oq_node_ctx *ctx, const oq_tensor *const *in,
                                         oq_tensor *out, oq_error *err) {
    size_t es;
    oq_status st = two_inputs(ctx, in, &es, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0], *ind = in[1];
    if ((st = check_indices_type(ctx, ind, true, err)) != OQ_OK)
        return st;
    if (x->rank < 1 || ind->rank != x->rank)
        return oq_err(err, OQ_EINVAL, "%s: data (rank %d) and indices (rank %d) need one rank >= 1",
                      ctx->label, x->rank, ind->rank);
    int axis;
    if ((st = oq_norm_axis(ctx, *(const int64_t *)ctx->state, x->rank, &axis, err)) != OQ_OK)
        return st;
    for (int k = 0; k < x->rank; k++)
        if (k != axis && ind->dims[k] > x->dims[k])
            return oq_err(err, OQ_EINVAL, "%s: indices dim %d (%lld) exceeds data's (%lld)",
                          ctx->label, k, (long long)ind->dims[k], (long long)x->dims[k]);
    return oq_out_shape(&out[0], x->dtype, ind->rank, ind->dims, err);
}

oq_status oq_shape_gather_elements_run(oq_node_ctx *ctx, const oq_tensor *const *in,
                                       oq_tensor *out, oq_error *err) {
    const oq_tensor *x = in[0], *ind = in[1];
    int axis;
    oq_status st = oq_norm_axis(ctx, *(const int64_t *)ctx->state, x->rank, &axis, err);
    if (st != OQ_OK)
        return st;
    if ((st = check_range(ctx, ind, x->dims[axis], err)) != OQ_OK)
        return st;
    if (ind->count == 0)
        return OQ_OK;
    int r = x->rank;
    size_t es = oq_dtype_size(x->dtype), str[OQ_MAX_RANK], s = 1;
    for (int k = r - 1; k >= 0; k--) {
        str[k] = s;
        s *= (size_t)x->dims[k];
    }
    size_t idx[OQ_MAX_RANK] = {0}, base = 0;
    const unsigned char *src = x->data;
    unsigned char *dst = out[0].data;
    int64_t dim = x->dims[axis];
    for (size_t n = 0; n < ind->count; n++) {
        int64_t v = idx_at(ind, n);
        if (v < 0)
            v += dim;
        memcpy(dst + n * es, src + (base + (size_t)v * str[axis]) * es, es);
        for (int k = r - 1; k >= 0; k--) { /* odometer over indices; base skips the axis */
            if (k != axis)
                base += str[k];
            if (++idx[k] < (size_t)ind->dims[k])
                break;
            if (k != axis)
                base -= idx[k] * str[k];
            idx[k] = 0;
        }
    }
    return OQ_OK;
}

/* ---- ScatterND ----------------------------------------------------------- */

enum { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN };

oq_status oq_shape_scatter_nd_prepare(oq_node_ctx *ctx, oq_error *err) {
    char buf[16];
    oq_status st = oq_node_attr_string(ctx->node, "reduction", "none", buf, sizeof buf, err);
    if (st != OQ_OK)
        return st;
    static const char *const names[] = {"none", "add", "mul", "max", "min"};
    int red = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(buf, names[i]) == 0)
            red = i;
    /* reduction arrived in opset 16 (none/add/mul), max/min in 18 */
    if (red < 0 || (red > RED_NONE && ctx->opset < 16) || (red > RED_MUL && ctx->opset < 18))
        return oq_err(err, OQ_EMODEL, "%s: reduction '%s' is not valid at opset %d", ctx->label,
                      buf, ctx->opset);
    int *s = malloc(sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    *s = red;
    ctx->state = s;
    return OQ_OK;
}

static bool scatter_reduce_type(oq_dtype t) {
    switch (t) {
    case OQ_DTYPE_FLOAT: case OQ_DTYPE_DOUBLE: case OQ_DTYPE_FLOAT16: case OQ_DTYPE_INT8:
    case OQ_DTYPE_UINT8: case OQ_DTYPE_INT16: case OQ_DTYPE_UINT16: case OQ_DTYPE_INT32:
    case OQ_DTYPE_UINT32: case OQ_DTYPE_INT64: case OQ_DTYPE_UINT64: return true;
    default: return false;
    }
}

oq_status oq_shape_scatter_nd_infer(oq_node_ctx *ctx, const oq_tensor *const *in,
                                    oq_tensor *out, oq_error *err) {
    size_t es;
    oq_status st = two_inputs(ctx, in, &es, err);
    if (st != OQ_OK)
        return st;
    if (ctx->n_inputs < 3 || !in[2])
        return oq_err(err, OQ_EMODEL, "%s: input updates is required", ctx->label);
    const oq_tensor *x = in[0], *ind = in[1], *upd = in[2];
    if ((st = check_indices_type(ctx, ind, false, err)) != OQ_OK)
        return st;
    if (upd->dtype != x->dtype)
        return oq_err(err, OQ_EINVAL, "%s: updates are %s, data %s", ctx->label,
                      oq_dtype_name(upd->dtype), oq_dtype_name(x->dtype));
    if (*(const int *)ctx->state != RED_NONE && !scatter_reduce_type(x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: reduction on %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank < 1 || ind->rank < 1)
        return oq_err(err, OQ_EINVAL, "%s: data and indices need rank >= 1", ctx->label);
    int q = ind->rank;
    int64_t k = ind->dims[q - 1];
    if (k > x->rank)
        return oq_err(err, OQ_EINVAL, "%s: index tuples of %lld exceed data rank %d", ctx->label,
                      (long long)k, x->rank);
    /* updates.shape = indices.shape[:-1] + data.shape[k:] */
    int ur = q - 1 + x->rank - (int)k;
    bool ok = upd->rank == ur;
    for (int i = 0; ok && i < q - 1; i++)
        ok = upd->dims[i] == ind->dims[i];
    for (int i = (int)k; ok && i < x->rank; i++)
        ok = upd->dims[q - 1 + i - (int)k] == x->dims[i];
    if (!ok)
        return oq_err(err, OQ_EINVAL, "%s: updates shape does not match indices and data",
                      ctx->label);
    return oq_out_shape(&out[0], x->dtype, x->rank, x->dims, err);
}

/* U: the type add/mul run in (unsigned for integers: wrap-around, not UB). */
#define SCATTER_REDUCE(T, U)                                                            \
    static void scatter_##T(T *restrict d, const T *restrict u, size_t n, int red) {    \
        switch (red) {                                                                  \
        case RED_ADD: for (size_t i = 0; i < n; i++) d[i] = (T)((U)d[i] + (U)u[i]); break; \
        case RED_MUL: for (size_t i = 0; i < n; i++) d[i] = (T)((U)d[i] * (U)u[i]); break; \
        case RED_MAX: for (size_t i = 0; i < n; i++) d[i] = u[i] > d[i] ? u[i] : d[i]; break; \
        default: for (size_t i = 0; i < n; i++) d[i] = u[i] < d[i] ? u[i] : d[i]; break; \
        }                                                                               \
    }
SCATTER_REDUCE(float, float)
SCATTER_REDUCE(double, double)
SCATTER_REDUCE(int8_t, uint32_t)
SCATTER_REDUCE(uint8_t, uint32_t)
SCATTER_REDUCE(int16_t, uint32_t)
SCATTER_REDUCE(uint16_t, uint32_t)
SCATTER_REDUCE(int32_t, uint32_t)
SCATTER_REDUCE(uint32_t, uint32_t)
SCATTER_REDUCE(int64_t, uint64_t)
SCATTER_REDUCE(uint64_t, uint64_t)

static void scatter_half(uint16_t *d, const uint16_t *u, size_t n, int red) {
    for (size_t i = 0; i < n; i++) {
        float a = oq_half_to_float(d[i]), b = oq_half_to_float(u[i]);
        float r = red == RED_ADD ? a + b : red == RED_MUL ? a * b : red == RED_MAX ? (b > a ? b : a)
                                                                                    : (b < a ? b : a);
        d[i] = oq_float_to_half(r);
    }
}

static void scatter_apply(oq_dtype t, void *d, const void *u, size_t n, int red) {
    switch (t) {
    case OQ_DTYPE_FLOAT: scatter_float(d, u, n, red); break;
    case OQ_DTYPE_DOUBLE: scatter_double(d, u, n, red); break;
    case OQ_DTYPE_FLOAT16: scatter_half(d, u, n, red); break;
    case OQ_DTYPE_INT8: scatter_int8_t(d, u, n, red); break;
    case OQ_DTYPE_UINT8: scatter_uint8_t(d, u, n, red); break;
    case OQ_DTYPE_INT16: scatter_int16_t(d, u, n, red); break;
    case OQ_DTYPE_UINT16: scatter_uint16_t(d, u, n, red); break;
    case OQ_DTYPE_INT32: scatter_int32_t(d, u, n, red); break;
    case OQ_DTYPE_UINT32: scatter_uint32_t(d, u, n, red); break;
    case OQ_DTYPE_INT64: scatter_int64_t(d, u, n, red); break;
    case OQ_DTYPE_UINT64: scatter_uint64_t(d, u, n, red); break;
    default: break; /* rejected by infer */
    }
}

oq_status oq_shape_scatter_nd_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                  oq_error *err) {
    const oq_tensor *x = in[0], *ind = in[1], *upd = in[2];
    int red = *(const int *)ctx->state;
    size_t es = oq_dtype_size(x->dtype);
    if (out[0].data != x->data)
        oq_shape_copy(out[0].data, x->data, x->nbytes);
    int k = (int)ind->dims[ind->rank - 1];
    size_t slice = 1, str[OQ_MAX_RANK], s = 1;
    for (int i = x->rank - 1; i >= 0; i--) {
        str[i] = s;
        s *= (size_t)x->dims[i];
        if (i >= k)
            slice *= (size_t)x->dims[i];
    }
    size_t n_upd = 1;
    for (int i = 0; i < ind->rank - 1; i++)
        n_upd *= (size_t)ind->dims[i];
    const int64_t *iv = ind->data;
    unsigned char *dst = out[0].data;
    const unsigned char *src = upd->data;
    for (size_t u = 0; u < n_upd; u++) {
        size_t off = 0;
        for (int j = 0; j < k; j++) {
            int64_t v = iv[u * (size_t)k + (size_t)j], d = x->dims[j];
            if (v < -d || v >= d)
                return oq_err(err, OQ_EINVAL,
                              "%s: index %lld for axis %d (size %lld) is out of range in tuple %zu",
                              ctx->label, (long long)v, j, (long long)d, u);
            off += (size_t)(v < 0 ? v + d : v) * str[j];
        }
        if (red == RED_NONE)
            oq_shape_copy(dst + off * es, src + u * slice * es, slice * es);
        else
            scatter_apply(x->dtype, dst + off * es, src + u * slice * es, slice, red);
    }
    return OQ_OK;
}

/* ---- Pad ----------------------------------------------------------------- */

enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP };

typedef struct {
    int mode;
    float value;         /* Pad-2..10 attribute */
    const int64_t *pads; /* Pad-2..10 attribute, borrowed from the node */
    size_t n_pads;
} pad_state;

oq_status oq_shape_pad_prepare(oq_node_ctx *ctx, oq_error *err) {
    char mode[16];
    oq_status st = oq_node_attr_string(ctx->node, "mode", "constant", mode, sizeof mode, err);
    if (st != OQ_OK)
        return st;
    int m = strcmp(mode, "constant") == 0 ? PAD_CONSTANT
          : strcmp(mode, "reflect") == 0  ? PAD_REFLECT
          : strcmp(mode, "edge") == 0     ? PAD_EDGE
          : strcmp(mode, "wrap") == 0 && ctx->opset >= 19 ? PAD_WRAP /* wrap: Pad-19 */
                                          : -1;
    if (m < 0)
        return oq_err(err, OQ_EMODEL, "%s: mode '%s' is not valid at opset %d", ctx->label, mode,
                      ctx->opset);
    pad_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    s->mode = m;
    if (ctx->opset < 11) { /* pads and value became inputs in opset 11 */
        st = oq_node_attr_ints(ctx->node, "pads", &s->pads, &s->n_pads, err);
        if (st == OQ_OK)
            st = oq_node_attr_float(ctx->node, "value", 0.0f, &s->value, err);
        if (st == OQ_OK && !oq_node_attr(ctx->node, "pads"))
            st = oq_err(err, OQ_EMODEL, "%s: attribute 'pads' is required", ctx->label);
    }
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    return OQ_OK;
}

typedef struct {
    int rank, mode;
    int64_t lo[OQ_MAX_RANK];   /* first input index kept after negative pads crop */
    int64_t de[OQ_MAX_RANK];   /* input extent kept */
    int64_t pb[OQ_MAX_RANK];   /* positive pad before */
    int64_t od[OQ_MAX_RANK];   /* output dims */
    unsigned char value[16];   /* the constant, as one element of the data type */
} pad_params;

static oq_status pad_compute(const oq_node_ctx *ctx, const oq_tensor *const *in, pad_params *p,
                             oq_error *err) {
    const pad_state *s = ctx->state;
    const oq_tensor *x = in[0];
    int r = x->rank;
    int64_t raw[2 * OQ_MAX_RANK], axes_raw[OQ_MAX_RANK];
    int np, ax[OQ_MAX_RANK], na = r;
    bool has_axes = false;
    oq_status st;
    memset(p, 0, sizeof *p);
    p->rank = r;
    p->mode = s->mode;
    if (ctx->opset < 11) {
        if (s->n_pads > 2 * OQ_MAX_RANK)
            return oq_err(err, OQ_EINVAL, "%s: pads has %zu values for rank %d", ctx->label,
                          s->n_pads, r);
        np = (int)s->n_pads;
        memcpy(raw, s->pads, (size_t)np * sizeof *raw);
        if (!oq_shape_store_f64(x->dtype, p->value, s->value))
            return oq_err(err, OQ_EUNSUPPORTED, "%s: type %s is not supported", ctx->label,
                          oq_dtype_name(x->dtype));
    } else {
        if (ctx->n_inputs < 2 || !in[1])
            return oq_err(err, OQ_EMODEL, "%s: input pads is required", ctx->label);
        if ((st = oq_shape_read_ints(ctx, in[1], "pads", false, raw, 2 * OQ_MAX_RANK, &np,
                                     err)) != OQ_OK)
            return st;
        const oq_tensor *cv = ctx->n_inputs > 2 ? in[2] : NULL;
        if (cv && cv->count > 0) {
            if (cv->dtype != x->dtype || cv->count != 1)
                return oq_err(err, OQ_EINVAL, "%s: constant_value must be one %s", ctx->label,
                              oq_dtype_name(x->dtype));
            memcpy(p->value, cv->data, oq_dtype_size(x->dtype));
        }
        if (ctx->opset >= 18 && ctx->n_inputs > 3 && in[3]) { /* axes: Pad-18 */
            if ((st = oq_shape_read_ints(ctx, in[3], "axes", true, axes_raw, OQ_MAX_RANK, &na,
                                         err)) != OQ_OK)
                return st;
            if ((st = oq_shape_norm_axes(ctx, "axes", axes_raw, na, r, ax, err)) != OQ_OK)
                return st;
            has_axes = true;
        }
    }
    if (!has_axes)
        for (int i = 0; i < r; i++)
            ax[i] = i;
    if (np != 2 * na)
        return oq_err(err, OQ_EINVAL, "%s: pads has %d values, expected %d", ctx->label, np,
                      2 * na);
    int64_t pb[OQ_MAX_RANK] = {0}, pe[OQ_MAX_RANK] = {0};
    for (int i = 0; i < na; i++) { /* pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...] */
        pb[ax[i]] = raw[i];
        pe[ax[i]] = raw[na + i];
    }
    for (int k = 0; k < r; k++) {
        int64_t d = x->dims[k];
        /* negative pads crop first; positive pads then grow the cropped axis */
        if (pb[k] < -d || pe[k] < -d)
            return oq_err(err, OQ_EINVAL, "%s: pads crop more than the %lld elements of axis %d",
                          ctx->label, (long long)d, k);
        int64_t cb = pb[k] < 0 ? -pb[k] : 0, ce = pe[k] < 0 ? -pe[k] : 0;
        if (cb + ce > d)
            return oq_err(err, OQ_EINVAL, "%s: pads crop more than the %lld elements of axis %d",
                          ctx->label, (long long)d, k);
        p->lo[k] = cb;
        p->de[k] = d - cb - ce;
        p->pb[k] = pb[k] > 0 ? pb[k] : 0;
        int64_t add = (pb[k] > 0 ? pb[k] : 0), tail = (pe[k] > 0 ? pe[k] : 0);
        if (!oq_add_i64(p->de[k], add, &p->od[k]) || !oq_add_i64(p->od[k], tail, &p->od[k]))
            return oq_err(err, OQ_ELIMIT, "%s: padded dim %d overflows", ctx->label, k);
        if (p->mode != PAD_CONSTANT && p->de[k] == 0 && p->od[k] > 0)
            return oq_err(err, OQ_EINVAL, "%s: cannot pad an empty axis %d in this mode",
                          ctx->label, k);
    }
    size_t count;
    if (!oq_dims_count(p->od, r, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    return OQ_OK;
}

oq_status oq_shape_pad_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    if (ctx->n_inputs < 1 || !in[0])
        return oq_err(err, OQ_EMODEL, "%s: input data is missing", ctx->label);
    size_t es;
    oq_status st = oq_shape_elem_size(ctx, in[0], "data", &es, err);
    if (st != OQ_OK)
        return st;
    pad_params p;
    if ((st = pad_compute(ctx, in, &p, err)) != OQ_OK)
        return st;
    return oq_out_shape(&out[0], in[0]->dtype, p.rank, p.od, err);
}

/* Input index feeding output index o of an axis, or -1 for the constant. */
static int64_t pad_map(const pad_params *p, int k, int64_t o) {
    int64_t x = o - p->pb[k], de = p->de[k];
    if (x >= 0 && x < de)
        return p->lo[k] + x;
    switch (p->mode) {
    case PAD_EDGE:
        return p->lo[k] + (x < 0 ? 0 : de - 1);
    case PAD_REFLECT: { /* numpy 'reflect': mirror without repeating the edge, periodically */
        if (de == 1)
            return p->lo[k];
        int64_t period = 2 * (de - 1), m = x % period;
        if (m < 0)
            m += period;
        return p->lo[k] + (m >= de ? period - m : m);
    }
    case PAD_WRAP: {
        int64_t m = x % de;
        return p->lo[k] + (m < 0 ? m + de : m);
    }
    default:
        return -1;
    }
}

typedef struct {
    const pad_params *p;
    size_t es;
    size_t istr[OQ_MAX_RANK];
    const unsigned char *in;
    unsigned char *out;
} pad_job;

static void pad_rows(void *arg, size_t begin, size_t end) {
    const pad_job *j = arg;
    const pad_params *p = j->p;
    int r = p->rank, L = r - 1;
    size_t es = j->es, n = (size_t)p->od[L];
    for (size_t row = begin; row < end; row++) {
        unsigned char *dst = j->out + row * n * es;
        size_t rem = row, off = 0;
        bool constant = false;
        for (int k = r - 2; k >= 0; k--) {
            int64_t o = (int64_t)(rem % (size_t)p->od[k]);
            rem /= (size_t)p->od[k];
            int64_t s = pad_map(p, k, o);
            if (s < 0)
                constant = true;
            else
                off += (size_t)s * j->istr[k];
        }
        if (constant) {
            oq_shape_fill(dst, p->value, es, n);
            continue;
        }
        const unsigned char *src = j->in + off * es;
        size_t pb = (size_t)p->pb[L], de = (size_t)p->de[L];
        for (size_t o = 0; o < pb && o < n; o++) {
            int64_t s = pad_map(p, L, (int64_t)o);
            memcpy(dst + o * es, s < 0 ? p->value : src + (size_t)s * es, es);
        }
        oq_shape_copy(dst + pb * es, src + (size_t)p->lo[L] * es, de * es);
        for (size_t o = pb + de; o < n; o++) {
            int64_t s = pad_map(p, L, (int64_t)o);
            memcpy(dst + o * es, s < 0 ? p->value : src + (size_t)s * es, es);
        }
    }
}

oq_status oq_shape_pad_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    pad_params p;
    oq_status st = pad_compute(ctx, in, &p, err);
    if (st != OQ_OK || out[0].count == 0)
        return st;
    const oq_tensor *x = in[0];
    size_t es = oq_dtype_size(x->dtype);
    if (p.rank == 0) {
        memcpy(out[0].data, x->data, es);
        return OQ_OK;
    }
    pad_job j = {.p = &p, .es = es, .in = x->data, .out = out[0].data};
    size_t s = 1;
    for (int k = p.rank - 1; k >= 0; k--) {
        j.istr[k] = s;
        s *= (size_t)x->dims[k];
    }
    size_t n = (size_t)p.od[p.rank - 1], rows = out[0].count / n, rb = n * es;
    oq_parallel_for(ctx->pool, rows, rb >= 65536 ? 1 : 65536 / rb, pad_rows, &j);
    return OQ_OK;
}
