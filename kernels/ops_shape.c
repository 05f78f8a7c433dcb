/* ops_shape.c: the shape operator family's table (see op.h for the contract),
 * its shared helpers, and the ops that only compute shapes or fill/copy whole
 * tensors: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Constant,
 * ConstantOfShape, Range, Expand, Tile. The data-moving ops live in
 * ops_shape_move.c, ops_shape_index.c and ops_shape_resize.c. */
#include "ops_shape.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "tensorproto.h"

/* ---- shared helpers ------------------------------------------------------ */

oq_status oq_shape_elem_size(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                             size_t *es, oq_error *err) {
    size_t s = oq_dtype_size(t->dtype);
    if (s == 0 || t->dtype == OQ_DTYPE_STRING)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: %s has element type %s, which is not supported",
                      ctx->label, what, oq_dtype_name(t->dtype));
    *es = s;
    return OQ_OK;
}

oq_status oq_shape_read_ints(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                             bool allow_i32, int64_t *vals, int max, int *n, oq_error *err) {
    if (t->dtype != OQ_DTYPE_INT64 && !(allow_i32 && t->dtype == OQ_DTYPE_INT32))
        return oq_err(err, OQ_EINVAL, "%s: %s must be %s, got %s", ctx->label, what,
                      allow_i32 ? "int32 or int64" : "int64", oq_dtype_name(t->dtype));
    if (t->rank > 1)
        return oq_err(err, OQ_EINVAL, "%s: %s must be 1-D, got rank %d", ctx->label, what, t->rank);
    if (t->count > (size_t)max)
        return oq_err(err, OQ_EINVAL, "%s: %s has %zu values, at most %d fit", ctx->label, what,
                      t->count, max);
    if (t->count && !t->data)
        return oq_err(err, OQ_EINTERNAL, "%s: %s has no data", ctx->label, what);
    for (size_t i = 0; i < t->count; i++)
        vals[i] = oq_tensor_get_i64(t, i);
    *n = (int)t->count;
    return OQ_OK;
}

oq_status oq_shape_norm_axes(const oq_node_ctx *ctx, const char *what, const int64_t *axes,
                             int n, int rank, int *out, oq_error *err) {
    bool seen[OQ_MAX_RANK] = {false};
    for (int i = 0; i < n; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + rank : axes[i];
        if (a < 0 || a >= rank)
            return oq_err(err, OQ_EINVAL, "%s: %s[%d] = %lld is out of range for rank %d",
                          ctx->label, what, i, (long long)axes[i], rank);
        if (seen[a])
            return oq_err(err, OQ_EINVAL, "%s: %s repeats axis %lld", ctx->label, what,
                          (long long)a);
        seen[a] = true;
        out[i] = (int)a;
    }
    return OQ_OK;
}

static double saturate(double v, double lo, double hi) {
    if (isnan(v))
        return 0;
    v = nearbyint(v);
    return v < lo ? lo : v > hi ? hi : v;
}

bool oq_shape_store_f64(oq_dtype dtype, void *dst, double v) {
    switch (dtype) {
    case OQ_DTYPE_FLOAT: *(float *)dst = (float)v; return true;
    case OQ_DTYPE_DOUBLE: *(double *)dst = v; return true;
    case OQ_DTYPE_FLOAT16: *(uint16_t *)dst = oq_float_to_half((float)v); return true;
    case OQ_DTYPE_BFLOAT16: *(uint16_t *)dst = oq_float_to_bf16((float)v); return true;
    case OQ_DTYPE_INT8: *(int8_t *)dst = (int8_t)saturate(v, INT8_MIN, INT8_MAX); return true;
    case OQ_DTYPE_UINT8: *(uint8_t *)dst = (uint8_t)saturate(v, 0, UINT8_MAX); return true;
    case OQ_DTYPE_INT16: *(int16_t *)dst = (int16_t)saturate(v, INT16_MIN, INT16_MAX); return true;
    case OQ_DTYPE_UINT16: *(uint16_t *)dst = (uint16_t)saturate(v, 0, UINT16_MAX); return true;
    case OQ_DTYPE_INT32: *(int32_t *)dst = (int32_t)saturate(v, INT32_MIN, INT32_MAX); return true;
    case OQ_DTYPE_UINT32: *(uint32_t *)dst = (uint32_t)saturate(v, 0, UINT32_MAX); return true;
    case OQ_DTYPE_INT64: /* 2^63 is the first double past INT64_MAX */
        *(int64_t *)dst = isnan(v) ? 0 : v >= 9223372036854775808.0 ? INT64_MAX
                          : v < -9223372036854775808.0 ? INT64_MIN : (int64_t)nearbyint(v);
        return true;
    case OQ_DTYPE_UINT64:
        *(uint64_t *)dst = isnan(v) || v <= 0 ? 0 : v >= 18446744073709551616.0 ? UINT64_MAX
                           : (uint64_t)nearbyint(v);
        return true;
    case OQ_DTYPE_BOOL: *(uint8_t *)dst = v != 0; return true;
    default: return false;
    }
}

void oq_shape_fill(void *dst, const void *elem, size_t es, size_t count) {
    if (!count)
        return;
    unsigned char *d = dst;
    bool zero = true;
    for (size_t i = 0; i < es; i++)
        zero = zero && ((const unsigned char *)elem)[i] == 0;
    if (zero) {
        memset(d, 0, es * count);
        return;
    }
    /* Doubling copies: log2(count) memcpy calls. */
    memcpy(d, elem, es);
    size_t done = 1;
    while (done < count) {
        size_t n = done < count - done ? done : count - done;
        memcpy(d + done * es, d, n * es);
        done += n;
    }
}

void oq_shape_free_state(void *state) {
    free(state);
}

/* One int64 attribute parsed at prepare time (axis, allowzero, ...). */
static oq_status prepare_int_attr(oq_node_ctx *ctx, const char *name, int64_t def, oq_error *err) {
    int64_t *v = malloc(sizeof *v);
    if (!v)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_ATTR_INT(ctx, name, def, v, err);
    if (st != OQ_OK) {
        free(v);
        return st;
    }
    ctx->state = v;
    return OQ_OK;
}

static oq_status need_inputs(const oq_node_ctx *ctx, const oq_tensor *const *in, int n,
                             oq_error *err) {
    if (ctx->n_inputs < n)
        return oq_err(err, OQ_EMODEL, "%s: needs %d inputs, has %d", ctx->label, n, ctx->n_inputs);
    for (int i = 0; i < n; i++)
        if (!in[i])
            return oq_err(err, OQ_EMODEL, "%s: input %d is missing", ctx->label, i);
    return OQ_OK;
}

/* Outputs that alias their input's bytes (Reshape, Flatten, Squeeze, ...). */
static oq_status copy_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    (void)ctx;
    (void)err;
    if (out[0].data != in[0]->data)
        oq_shape_copy(out[0].data, in[0]->data, in[0]->nbytes);
    return OQ_OK;
}

/* ---- Shape, Size --------------------------------------------------------- */

typedef struct {
    int64_t start, end;
    bool has_end;
} shape_state;

static oq_status shape_prepare(oq_node_ctx *ctx, oq_error *err) {
    shape_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_OK;
    if (ctx->opset >= 15) { /* Shape-15 added start/end */
        st = OQ_ATTR_INT(ctx, "start", 0, &s->start, err);
        s->has_end = oq_node_attr(ctx->node, "end") != NULL;
        if (st == OQ_OK)
            st = OQ_ATTR_INT(ctx, "end", 0, &s->end, err);
    }
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    return OQ_OK;
}

static void shape_range(const oq_node_ctx *ctx, int rank, int64_t *b, int64_t *e) {
    const shape_state *s = ctx->state;
    int64_t start = s ? s->start : 0, end = s && s->has_end ? s->end : rank;
    /* Shape-15: negative values count from the back; both clamp to [0, rank]. */
    if (start < 0)
        start += rank;
    if (end < 0)
        end += rank;
    start = start < 0 ? 0 : start > rank ? rank : start;
    end = end < 0 ? 0 : end > rank ? rank : end;
    *b = start;
    *e = end < start ? start : end;
}

static oq_status shape_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    int64_t b, e;
    shape_range(ctx, in[0]->rank, &b, &e);
    int64_t n = e - b;
    return oq_out_shape(&out[0], OQ_DTYPE_INT64, 1, &n, err);
}

static oq_status shape_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    (void)err;
    int64_t b, e;
    shape_range(ctx, in[0]->rank, &b, &e);
    int64_t *o = out[0].data;
    for (int64_t i = b; i < e; i++)
        o[i - b] = in[0]->dims[i];
    return OQ_OK;
}

static oq_status size_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    return oq_out_shape(&out[0], OQ_DTYPE_INT64, 0, NULL, err);
}

static oq_status size_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    (void)ctx;
    (void)err;
    *(int64_t *)out[0].data = (int64_t)in[0]->count;
    return OQ_OK;
}

/* ---- Reshape, Flatten, Squeeze, Unsqueeze -------------------------------- */

static oq_status reshape_prepare(oq_node_ctx *ctx, oq_error *err) {
    /* Reshape-14 added allowzero; earlier versions always copy 0 dims. */
    return prepare_int_attr(ctx, "allowzero", 0, err);
}

static oq_status reshape_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status st = need_inputs(ctx, in, 2, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    int64_t want[OQ_MAX_RANK];
    int n;
    st = oq_shape_read_ints(ctx, in[1], "shape", false, want, OQ_MAX_RANK, &n, err);
    if (st != OQ_OK)
        return st;
    bool allowzero = ctx->opset >= 14 && ctx->state && *(const int64_t *)ctx->state != 0;
    int neg = -1;
    bool has_zero = false;
    for (int i = 0; i < n; i++) {
        if (want[i] == -1) {
            if (neg >= 0)
                return oq_err(err, OQ_EINVAL, "%s: shape has more than one -1 (at %d and %d)",
                              ctx->label, neg, i);
            neg = i;
        } else if (want[i] < -1) {
            return oq_err(err, OQ_EINVAL, "%s: shape[%d] is %lld; only -1 may be negative",
                          ctx->label, i, (long long)want[i]);
        } else if (want[i] == 0) {
            has_zero = true;
        }
    }
    /* Reshape-14: with allowzero a 0 is a real zero, and then -1 is ambiguous. */
    if (allowzero && has_zero && neg >= 0)
        return oq_err(err, OQ_EINVAL, "%s: shape holds both 0 and -1 with allowzero=1", ctx->label);
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        if (i == neg)
            continue;
        if (want[i] == 0 && !allowzero) {
            if (i >= x->rank)
                return oq_err(err, OQ_EINVAL,
                              "%s: shape[%d] is 0 (copy the input dim) but the input has rank %d",
                              ctx->label, i, x->rank);
            want[i] = x->dims[i];
        }
        if (!oq_mul_i64(known, want[i], &known))
            return oq_err(err, OQ_EINVAL, "%s: shape's element count overflows", ctx->label);
    }
    int64_t total = (int64_t)x->count;
    if (neg >= 0) {
        if (known == 0 || total % known != 0)
            return oq_err(err, OQ_EINVAL,
                          "%s: cannot infer the -1 dim: %lld elements do not divide by %lld",
                          ctx->label, (long long)total, (long long)known);
        want[neg] = total / known;
    } else if (known != total) {
        return oq_err(err, OQ_EINVAL, "%s: shape holds %lld elements, the input has %lld",
                      ctx->label, (long long)known, (long long)total);
    }
    return oq_out_shape(&out[0], x->dtype, n, want, err);
}

static oq_status flatten_prepare(oq_node_ctx *ctx, oq_error *err) {
    return prepare_int_attr(ctx, "axis", 1, err);
}

static oq_status flatten_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    int64_t axis = *(const int64_t *)ctx->state;
    /* Flatten: axis in [-r, r] (negative since opset 11); r gives (N, 1). */
    if (axis < -x->rank || axis > x->rank)
        return oq_err(err, OQ_EINVAL, "%s: axis %lld is out of range for rank %d", ctx->label,
                      (long long)axis, x->rank);
    if (axis < 0)
        axis += x->rank;
    int64_t d[2] = {1, 1};
    for (int i = 0; i < x->rank; i++)
        d[i < axis ? 0 : 1] *= x->dims[i]; /* cannot overflow: the product is x->count */
    return oq_out_shape(&out[0], x->dtype, 2, d, err);
}

/* Squeeze/Unsqueeze below opset 13 take axes as an attribute. */
typedef struct {
    bool has_axes;
    int n;
    int64_t axes[OQ_MAX_RANK];
} axes_state;

static oq_status axes_attr_prepare(oq_node_ctx *ctx, oq_error *err) {
    axes_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    const int64_t *a;
    size_t n;
    oq_status st = oq_node_attr_ints(ctx->node, "axes", &a, &n, err);
    if (st == OQ_OK && n > OQ_MAX_RANK)
        st = oq_err(err, OQ_EMODEL, "%s: axes has %zu values, at most %d fit", ctx->label, n,
                    OQ_MAX_RANK);
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    s->has_axes = oq_node_attr(ctx->node, "axes") != NULL;
    s->n = (int)n;
    if (n)
        memcpy(s->axes, a, n * sizeof *a);
    ctx->state = s;
    return OQ_OK;
}

/* The axes of Squeeze/Unsqueeze: attribute below opset 13, optional input 1 after. */
static oq_status get_axes(const oq_node_ctx *ctx, const oq_tensor *const *in, bool *has,
                          int64_t *axes, int *n, oq_error *err) {
    if (ctx->opset < 13) {
        const axes_state *s = ctx->state;
        *has = s->has_axes;
        *n = s->n;
        memcpy(axes, s->axes, sizeof s->axes);
        return OQ_OK;
    }
    *has = ctx->n_inputs > 1 && in[1];
    *n = 0;
    if (!*has)
        return OQ_OK;
    return oq_shape_read_ints(ctx, in[1], "axes", false, axes, OQ_MAX_RANK, n, err);
}

static oq_status squeeze_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    bool has;
    int64_t axes[OQ_MAX_RANK];
    int n, ax[OQ_MAX_RANK];
    if ((st = get_axes(ctx, in, &has, axes, &n, err)) != OQ_OK)
        return st;
    if (n > x->rank)
        return oq_err(err, OQ_EINVAL, "%s: %d axes for rank %d", ctx->label, n, x->rank);
    if ((st = oq_shape_norm_axes(ctx, "axes", axes, n, x->rank, ax, err)) != OQ_OK)
        return st;
    bool drop[OQ_MAX_RANK] = {false};
    if (has && n > 0) {
        for (int i = 0; i < n; i++) {
            if (x->dims[ax[i]] != 1)
                return oq_err(err, OQ_EINVAL, "%s: cannot squeeze axis %d of size %lld",
                              ctx->label, ax[i], (long long)x->dims[ax[i]]);
            drop[ax[i]] = true;
        }
    } else { /* no axes: every dim of size 1 goes */
        for (int i = 0; i < x->rank; i++)
            drop[i] = x->dims[i] == 1;
    }
    int64_t d[OQ_MAX_RANK];
    int r = 0;
    for (int i = 0; i < x->rank; i++)
        if (!drop[i])
            d[r++] = x->dims[i];
    return oq_out_shape(&out[0], x->dtype, r, d, err);
}

static oq_status unsqueeze_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                 oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    bool has;
    int64_t axes[OQ_MAX_RANK];
    int n, ax[OQ_MAX_RANK];
    if ((st = get_axes(ctx, in, &has, axes, &n, err)) != OQ_OK)
        return st;
    if (!has)
        return oq_err(err, OQ_EMODEL, "%s: axes are required", ctx->label);
    if (x->rank + n > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: output rank %d exceeds %d", ctx->label,
                      x->rank + n, OQ_MAX_RANK);
    int r = x->rank + n; /* axes index the output */
    if ((st = oq_shape_norm_axes(ctx, "axes", axes, n, r, ax, err)) != OQ_OK)
        return st;
    bool ins[OQ_MAX_RANK] = {false};
    for (int i = 0; i < n; i++)
        ins[ax[i]] = true;
    int64_t d[OQ_MAX_RANK];
    for (int i = 0, j = 0; i < r; i++)
        d[i] = ins[i] ? 1 : x->dims[j++];
    return oq_out_shape(&out[0], x->dtype, r, d, err);
}

/* ---- Constant, ConstantOfShape ------------------------------------------ */

static void tensor_state_free(void *state) {
    oq_tensor_free(state);
}

static oq_status small_tensor(const oq_node_ctx *ctx, oq_dtype dt, int rank, size_t n,
                              const void *data, oq_tensor **out, oq_error *err) {
    int64_t dims[1] = {(int64_t)n};
    oq_status st = oq_tensor_new(dt, rank, dims, 0, out, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "%s: ", ctx->label);
        return st;
    }
    oq_shape_copy((*out)->data, data, (*out)->nbytes);
    return OQ_OK;
}

static oq_status constant_prepare(oq_node_ctx *ctx, oq_error *err) {
    static const char *const names[] = {"value",      "value_float",  "value_floats",
                                        "value_int",  "value_ints",   "value_string",
                                        "value_strings", "sparse_value"};
    int which = -1, count = 0;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (oq_node_attr(ctx->node, names[i])) {
            which = i;
            count++;
        }
    if (count != 1)
        return oq_err(err, OQ_EMODEL, "%s: exactly one value attribute must be set, found %d",
                      ctx->label, count);
    oq_tensor *t = NULL;
    oq_status st = OQ_OK;
    switch (which) {
    case 0: {
        const Onnx__TensorProto *tp;
        st = oq_node_attr_tensor(ctx->node, "value", &tp, err);
        if (st == OQ_OK && tp && tp->data_type == OQ_DTYPE_STRING)
            return oq_err(err, OQ_EUNSUPPORTED, "%s: string constants are not supported",
                          ctx->label);
        if (st == OQ_OK) {
            st = oq_tensor_from_proto(tp, NULL, 0, &t, err);
            if (st != OQ_OK)
                oq_err_prefix(err, "%s: value: ", ctx->label);
        }
        break;
    }
    case 1: {
        float f;
        st = oq_node_attr_float(ctx->node, "value_float", 0, &f, err);
        if (st == OQ_OK)
            st = small_tensor(ctx, OQ_DTYPE_FLOAT, 0, 1, &f, &t, err);
        break;
    }
    case 2: {
        const float *f;
        size_t n;
        st = oq_node_attr_floats(ctx->node, "value_floats", &f, &n, err);
        if (st == OQ_OK)
            st = small_tensor(ctx, OQ_DTYPE_FLOAT, 1, n, f, &t, err);
        break;
    }
    case 3: {
        int64_t v;
        st = oq_node_attr_int(ctx->node, "value_int", 0, &v, err);
        if (st == OQ_OK)
            st = small_tensor(ctx, OQ_DTYPE_INT64, 0, 1, &v, &t, err);
        break;
    }
    case 4: {
        const int64_t *v;
        size_t n;
        st = oq_node_attr_ints(ctx->node, "value_ints", &v, &n, err);
        if (st == OQ_OK)
            st = small_tensor(ctx, OQ_DTYPE_INT64, 1, n, v, &t, err);
        break;
    }
    default:
        return oq_err(err, OQ_EUNSUPPORTED, "%s: attribute '%s' is not supported", ctx->label,
                      names[which]);
    }
    if (st != OQ_OK)
        return st;
    ctx->state = t;
    return OQ_OK;
}

static oq_status constant_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    (void)in;
    const oq_tensor *t = ctx->state;
    return oq_out_shape(&out[0], t->dtype, t->rank, t->dims, err);
}

static oq_status constant_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    (void)in;
    (void)err;
    const oq_tensor *t = ctx->state;
    oq_shape_copy(out[0].data, t->data, t->nbytes);
    return OQ_OK;
}

static oq_status cos_prepare(oq_node_ctx *ctx, oq_error *err) {
    const Onnx__TensorProto *tp;
    oq_status st = oq_node_attr_tensor(ctx->node, "value", &tp, err);
    if (st != OQ_OK)
        return st;
    oq_tensor *t = NULL;
    if (!tp) { /* ConstantOfShape: defaults to a float 0 */
        float zero = 0;
        st = small_tensor(ctx, OQ_DTYPE_FLOAT, 1, 1, &zero, &t, err);
    } else if (tp->data_type == OQ_DTYPE_STRING) {
        return oq_err(err, OQ_EUNSUPPORTED, "%s: string values are not supported", ctx->label);
    } else {
        st = oq_tensor_from_proto(tp, NULL, 0, &t, err);
        if (st != OQ_OK)
            oq_err_prefix(err, "%s: value: ", ctx->label);
    }
    if (st != OQ_OK)
        return st;
    if (t->count != 1 || oq_dtype_size(t->dtype) == 0) {
        oq_tensor_free(t);
        return oq_err(err, OQ_EMODEL, "%s: value must hold one element of a byte-sized type",
                      ctx->label);
    }
    ctx->state = t;
    return OQ_OK;
}

/* Reads a shape input of non-negative dims (ConstantOfShape, Expand). */
static oq_status read_dims(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                           int64_t *dims, int *n, oq_error *err) {
    if (t->count > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: %s has %zu dims, at most %d are supported",
                      ctx->label, what, t->count, OQ_MAX_RANK);
    oq_status st = oq_shape_read_ints(ctx, t, what, false, dims, OQ_MAX_RANK, n, err);
    if (st != OQ_OK)
        return st;
    for (int i = 0; i < *n; i++)
        if (dims[i] < 0)
            return oq_err(err, OQ_EINVAL, "%s: %s[%d] is negative (%lld)", ctx->label, what, i,
                          (long long)dims[i]);
    size_t count;
    if (!oq_dims_count(dims, *n, &count))
        return oq_err(err, OQ_ELIMIT, "%s: %s's element count overflows", ctx->label, what);
    return OQ_OK;
}

static oq_status cos_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    oq_status st = need_inputs(ctx, in, 1, err);
    if (st != OQ_OK)
        return st;
    int64_t dims[OQ_MAX_RANK];
    int n;
    if ((st = read_dims(ctx, in[0], "shape", dims, &n, err)) != OQ_OK)
        return st;
    const oq_tensor *v = ctx->state;
    return oq_out_shape(&out[0], v->dtype, n, dims, err);
}

static oq_status cos_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    (void)in;
    (void)err;
    const oq_tensor *v = ctx->state;
    oq_shape_fill(out[0].data, v->data, v->nbytes, out[0].count);
    return OQ_OK;
}

/* ---- Range ------------------------------------------------------------- */

static bool range_float(oq_dtype t) {
    return t == OQ_DTYPE_FLOAT || t == OQ_DTYPE_DOUBLE;
}

static oq_status range_count(const oq_node_ctx *ctx, const oq_tensor *const *in, int64_t *n,
                             oq_error *err) {
    oq_dtype dt = in[0]->dtype;
    for (int i = 0; i < 3; i++) {
        if (in[i]->dtype != dt)
            return oq_err(err, OQ_EINVAL, "%s: start, limit and delta must share a type (%s vs %s)",
                          ctx->label, oq_dtype_name(dt), oq_dtype_name(in[i]->dtype));
        if (in[i]->count != 1 || in[i]->rank > 1)
            return oq_err(err, OQ_EINVAL, "%s: input %d must be a scalar", ctx->label, i);
    }
    if (range_float(dt)) {
        double s = oq_tensor_get_f64(in[0], 0), l = oq_tensor_get_f64(in[1], 0),
               d = oq_tensor_get_f64(in[2], 0);
        if (!isfinite(s) || !isfinite(l) || !isfinite(d) || d == 0)
            return oq_err(err, OQ_EINVAL, "%s: start/limit/delta must be finite, delta non-zero",
                          ctx->label);
        double c = ceil((l - s) / d); /* Range-11: max(ceil((limit - start) / delta), 0) */
        if (!(c < 9007199254740992.0))
            return oq_err(err, OQ_ELIMIT, "%s: %g elements are too many", ctx->label, c);
        *n = c > 0 ? (int64_t)c : 0;
        return OQ_OK;
    }
    if (dt != OQ_DTYPE_INT16 && dt != OQ_DTYPE_INT32 && dt != OQ_DTYPE_INT64)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: type %s is not supported", ctx->label,
                      oq_dtype_name(dt));
    int64_t s = oq_tensor_get_i64(in[0], 0), l = oq_tensor_get_i64(in[1], 0),
            d = oq_tensor_get_i64(in[2], 0), diff;
    if (d == 0)
        return oq_err(err, OQ_EINVAL, "%s: delta is 0", ctx->label);
    if (__builtin_sub_overflow(l, s, &diff))
        return oq_err(err, OQ_EINVAL, "%s: limit - start overflows", ctx->label);
    if (d > 0)
        *n = diff > 0 ? (diff - 1) / d + 1 : 0;
    else
        *n = diff < 0 ? (diff + 1) / d + 1 : 0;
    return OQ_OK;
}

static oq_status range_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    oq_status st = need_inputs(ctx, in, 3, err);
    if (st != OQ_OK)
        return st;
    int64_t n;
    if ((st = range_count(ctx, in, &n, err)) != OQ_OK)
        return st;
    return oq_out_shape(&out[0], in[0]->dtype, 1, &n, err);
}

static oq_status range_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    (void)ctx;
    (void)err;
    size_t n = out[0].count;
    switch (in[0]->dtype) {
    case OQ_DTYPE_FLOAT: {
        float s = *(const float *)in[0]->data, d = *(const float *)in[2]->data;
        float *o = out[0].data;
        for (size_t i = 0; i < n; i++)
            o[i] = s + (float)i * d;
        break;
    }
    case OQ_DTYPE_DOUBLE: {
        double s = *(const double *)in[0]->data, d = *(const double *)in[2]->data;
        double *o = out[0].data;
        for (size_t i = 0; i < n; i++)
            o[i] = s + (double)i * d;
        break;
    }
    default: { /* every value lies in [start, limit): no overflow */
        int64_t s = oq_tensor_get_i64(in[0], 0), d = oq_tensor_get_i64(in[2], 0);
        for (size_t i = 0; i < n; i++) {
            int64_t v = s + (int64_t)i * d;
            if (in[0]->dtype == OQ_DTYPE_INT64)
                ((int64_t *)out[0].data)[i] = v;
            else if (in[0]->dtype == OQ_DTYPE_INT32)
                ((int32_t *)out[0].data)[i] = (int32_t)v;
            else
                ((int16_t *)out[0].data)[i] = (int16_t)v;
        }
        break;
    }
    }
    return OQ_OK;
}

/* ---- Expand, Tile -------------------------------------------------------- */

/* Row-by-row copy of in into out, where each output axis reads input axis k
 * at index (o_k / div_k) % mod_k with stride str_k (Expand: div 1, mod 1 on
 * broadcast axes; Tile: mod = input dim). The last axis is copied in runs. */
typedef struct {
    int rank;
    int64_t odims[OQ_MAX_RANK], idims[OQ_MAX_RANK];
    size_t istride[OQ_MAX_RANK];
    size_t es;
    bool tile; /* Tile repeats whole input rows; Expand broadcasts size-1 dims */
    const unsigned char *in;
    unsigned char *out;
} bcast_job;

static void bcast_rows(void *arg, size_t begin, size_t end) {
    const bcast_job *j = arg;
    int r = j->rank;
    size_t es = j->es;
    int64_t olast = j->odims[r - 1], ilast = j->idims[r - 1];
    size_t row_bytes = (size_t)olast * es;
    for (size_t row = begin; row < end; row++) {
        /* decompose the row index over axes 0..r-2 */
        size_t rem = row, off = 0;
        for (int k = r - 2; k >= 0; k--) {
            size_t o = rem % (size_t)j->odims[k];
            rem /= (size_t)j->odims[k];
            off += (o % (size_t)j->idims[k]) * j->istride[k];
        }
        const unsigned char *src = j->in + off * es;
        unsigned char *dst = j->out + row * row_bytes;
        if (ilast == olast) {
            memcpy(dst, src, row_bytes);
        } else if (!j->tile || ilast == 1) { /* broadcast one element over the row */
            oq_shape_fill(dst, src, es, (size_t)olast);
        } else { /* Tile: repeat the input row */
            size_t ib = (size_t)ilast * es;
            for (size_t b = 0; b < row_bytes; b += ib)
                memcpy(dst + b, src, ib);
        }
    }
}

static void bcast_copy(const oq_node_ctx *ctx, const oq_tensor *x, oq_tensor *out, bool tile,
                       size_t es) {
    if (out->count == 0)
        return;
    if (out->rank == 0) {
        memcpy(out->data, x->data, es);
        return;
    }
    bcast_job j = {.rank = out->rank, .es = es, .tile = tile, .in = x->data, .out = out->data};
    int off = out->rank - x->rank;
    size_t s = 1;
    for (int k = out->rank - 1; k >= 0; k--) {
        j.odims[k] = out->dims[k];
        j.idims[k] = k < off ? 1 : x->dims[k - off];
        j.istride[k] = s;
        s *= (size_t)j.idims[k];
    }
    size_t rows = out->count / (size_t)out->dims[out->rank - 1];
    size_t row_bytes = (size_t)out->dims[out->rank - 1] * es;
    size_t min_rows = row_bytes >= 65536 ? 1 : 65536 / row_bytes;
    oq_parallel_for(ctx->pool, rows, min_rows, bcast_rows, &j);
}

static oq_status expand_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    oq_status st = need_inputs(ctx, in, 2, err);
    if (st != OQ_OK)
        return st;
    size_t es;
    if ((st = oq_shape_elem_size(ctx, in[0], "input", &es, err)) != OQ_OK)
        return st;
    oq_tensor shape = {.dtype = in[0]->dtype};
    if ((st = read_dims(ctx, in[1], "shape", shape.dims, &shape.rank, err)) != OQ_OK)
        return st;
    const oq_tensor *both[2] = {in[0], &shape};
    int rank;
    int64_t dims[OQ_MAX_RANK];
    if ((st = oq_broadcast_shape(ctx, both, 2, &rank, dims, err)) != OQ_OK)
        return st;
    size_t count;
    if (!oq_dims_count(dims, rank, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    return oq_out_shape(&out[0], in[0]->dtype, rank, dims, err);
}

static oq_status expand_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    (void)err;
    bcast_copy(ctx, in[0], &out[0], false, oq_dtype_size(in[0]->dtype));
    return OQ_OK;
}

static oq_status tile_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    oq_status st = need_inputs(ctx, in, 2, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    size_t es;
    if ((st = oq_shape_elem_size(ctx, x, "input", &es, err)) != OQ_OK)
        return st;
    int64_t rep[OQ_MAX_RANK], dims[OQ_MAX_RANK];
    int n;
    if ((st = oq_shape_read_ints(ctx, in[1], "repeats", false, rep, OQ_MAX_RANK, &n, err)) != OQ_OK)
        return st;
    if (n != x->rank)
        return oq_err(err, OQ_EINVAL, "%s: repeats has %d values for an input of rank %d",
                      ctx->label, n, x->rank);
    for (int i = 0; i < n; i++) {
        if (rep[i] < 0)
            return oq_err(err, OQ_EINVAL, "%s: repeats[%d] is negative (%lld)", ctx->label, i,
                          (long long)rep[i]);
        if (!oq_mul_i64(x->dims[i], rep[i], &dims[i]))
            return oq_err(err, OQ_ELIMIT, "%s: output dim %d overflows", ctx->label, i);
    }
    size_t count;
    if (!oq_dims_count(dims, n, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    return oq_out_shape(&out[0], x->dtype, n, dims, err);
}

static oq_status tile_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    (void)err;
    bcast_copy(ctx, in[0], &out[0], true, oq_dtype_size(in[0]->dtype));
    return OQ_OK;
}

/* ---- the table ----------------------------------------------------------- */

#define FREE oq_shape_free_state

static const oq_op ops[] = {
    {"", "Shape", 1, 25, shape_prepare, FREE, shape_infer, shape_run},
    {"", "Size", 1, 25, NULL, NULL, size_infer, size_run},
    {"", "Reshape", 5, 25, reshape_prepare, FREE, reshape_infer, copy_run},
    {"", "Flatten", 1, 25, flatten_prepare, FREE, flatten_infer, copy_run},
    {"", "Squeeze", 1, 12, axes_attr_prepare, FREE, squeeze_infer, copy_run},
    {"", "Squeeze", 13, 25, NULL, NULL, squeeze_infer, copy_run},
    {"", "Unsqueeze", 1, 12, axes_attr_prepare, FREE, unsqueeze_infer, copy_run},
    {"", "Unsqueeze", 13, 25, NULL, NULL, unsqueeze_infer, copy_run},
    {"", "Constant", 1, 25, constant_prepare, tensor_state_free, constant_infer, constant_run},
    {"", "ConstantOfShape", 9, 25, cos_prepare, tensor_state_free, cos_infer, cos_run},
    {"", "Range", 11, 25, NULL, NULL, range_infer, range_run},
    {"", "Expand", 8, 25, NULL, NULL, expand_infer, expand_run},
    {"", "Tile", 6, 25, NULL, NULL, tile_infer, tile_run},
    {"", "Transpose", 1, 25, oq_shape_transpose_prepare, FREE, oq_shape_transpose_infer,
     oq_shape_transpose_run},
    {"", "Concat", 1, 25, oq_shape_concat_prepare, FREE, oq_shape_concat_infer,
     oq_shape_concat_run},
    {"", "Split", 2, 25, oq_shape_split_prepare, FREE, oq_shape_split_infer, oq_shape_split_run},
    {"", "Slice", 1, 25, oq_shape_slice_prepare, FREE, oq_shape_slice_infer, oq_shape_slice_run},
    {"", "Gather", 1, 25, oq_shape_gather_prepare, FREE, oq_shape_gather_infer,
     oq_shape_gather_run},
    {"", "GatherElements", 11, 25, oq_shape_gather_prepare, FREE, oq_shape_gather_elements_infer,
     oq_shape_gather_elements_run},
    {"", "ScatterND", 11, 25, oq_shape_scatter_nd_prepare, FREE, oq_shape_scatter_nd_infer,
     oq_shape_scatter_nd_run},
    {"", "Pad", 2, 25, oq_shape_pad_prepare, FREE, oq_shape_pad_infer, oq_shape_pad_run},
    {"", "Resize", 10, 25, oq_shape_resize_prepare, FREE, oq_shape_resize_infer,
     oq_shape_resize_run},
    {"", "Upsample", 7, 9, oq_shape_upsample_prepare, FREE, oq_shape_resize_infer,
     oq_shape_resize_run},
};

const oq_op_table oq_ops_shape = {ops, sizeof ops / sizeof ops[0]};
