/* ops_quant.c: the quant operator family (see op.h for the contract):
 * QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul,
 * MatMulInteger, QLinearConv and ConvInteger. Rounding is half to even and
 * results saturate to the output type, exactly as the ONNX spec says;
 * integer products accumulate in int32 before any requantization. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "op.h"

enum { PAR_GRAIN = 16384 };

/* Hot loops get an x86-64-v3 (AVX2 + FMA) clone picked at load time, with
 * the baseline build kept for other CPUs (gcc function multiversioning).
 * No loop here has a multiply-add that FMA could fuse, so both clones
 * round identically. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OQ_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OQ_CLONES
#endif

static size_t min_chunk_for(size_t work_per_item) {
    if (work_per_item == 0)
        work_per_item = 1;
    size_t c = PAR_GRAIN / work_per_item;
    return c ? c : 1;
}

static void free_state(void *state) {
    free(state);
}

/* ---- quantized element types --------------------------------------------- */

static bool is_float8(oq_dtype t) {
    return t == OQ_DTYPE_FLOAT8E4M3FN || t == OQ_DTYPE_FLOAT8E4M3FNUZ ||
           t == OQ_DTYPE_FLOAT8E5M2 || t == OQ_DTYPE_FLOAT8E5M2FNUZ;
}

/* Saturation range of an integer quantized type (ONNX QuantizeLinear). */
static bool qrange(oq_dtype t, int32_t *lo, int32_t *hi) {
    switch (t) {
    case OQ_DTYPE_UINT8: *lo = 0; *hi = 255; return true;
    case OQ_DTYPE_INT8: *lo = -128; *hi = 127; return true;
    case OQ_DTYPE_UINT16: *lo = 0; *hi = 65535; return true;
    case OQ_DTYPE_INT16: *lo = -32768; *hi = 32767; return true;
    case OQ_DTYPE_UINT4: *lo = 0; *hi = 15; return true;
    case OQ_DTYPE_INT4: *lo = -8; *hi = 7; return true;
    default: return false;
    }
}

/* Element i of an integer tensor; int4/uint4 pack two per byte, element
 * 2k in the low nibble of byte k (ONNX packing). */
static int32_t qload(const oq_tensor *t, size_t i) {
    const uint8_t *b = t->data;
    switch (t->dtype) {
    case OQ_DTYPE_UINT8: return b[i];
    case OQ_DTYPE_INT8: return ((const int8_t *)t->data)[i];
    case OQ_DTYPE_UINT16: return ((const uint16_t *)t->data)[i];
    case OQ_DTYPE_INT16: return ((const int16_t *)t->data)[i];
    case OQ_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case OQ_DTYPE_UINT4: return (b[i >> 1] >> ((i & 1) * 4)) & 15;
    case OQ_DTYPE_INT4: return (int32_t)(((b[i >> 1] >> ((i & 1) * 4)) & 15) ^ 8) - 8;
    default: return 0;
    }
}

static float fload(const oq_tensor *t, size_t i) {
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT: return ((const float *)t->data)[i];
    case OQ_DTYPE_FLOAT16: return oq_half_to_float(((const uint16_t *)t->data)[i]);
    case OQ_DTYPE_BFLOAT16: return oq_bf16_to_float(((const uint16_t *)t->data)[i]);
    case OQ_DTYPE_DOUBLE: return (float)((const double *)t->data)[i];
    default: return (float)oq_tensor_get_f64(t, i);
    }
}

static void fstore(oq_tensor *t, size_t i, float v) {
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT: ((float *)t->data)[i] = v; break;
    case OQ_DTYPE_FLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_half(v); break;
    case OQ_DTYPE_BFLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_bf16(v); break;
    default: break;
    }
}

static bool is_scale_type(oq_dtype t, int opset) {
    /* float16/bfloat16 scales arrive with QuantizeLinear/DequantizeLinear-19 */
    return t == OQ_DTYPE_FLOAT ||
           (opset >= 19 && (t == OQ_DTYPE_FLOAT16 || t == OQ_DTYPE_BFLOAT16));
}

/* Clamps q (already x / scale) to [lo, hi] and rounds it half to even.
 * lo and hi are integers, so clamping first gives the same result as
 * rounding first; NaN saturates low, as the reference's int cast does.
 * Adding and subtracting 1.5 * 2^23 rounds |q| < 2^22 to an integer in the
 * current rounding mode (round-half-even by default): nearbyintf's result,
 * in a form loops vectorise. */
static inline int32_t q_round_clamp(float q, float lo, float hi) {
    const float magic = 12582912.0f;
    q = q >= lo ? q : lo;
    q = q <= hi ? q : hi;
    q = (q + magic) - magic;
    return (int32_t)q;
}

/* ---- Q/DQ granularity ---------------------------------------------------- */

typedef enum { G_TENSOR, G_AXIS, G_BLOCK } gmode;

/* x viewed as [O, D, I] around the quantization axis; the scale of element
 * (o, d, i) is scale[0] (tensor), scale[d] (axis) or
 * scale[(o * S + d / B) * I + i] (blocked, S = ceil(D / B)). */
typedef struct {
    gmode mode;
    size_t O, D, I, S, B;
} qlayout;

typedef struct {
    int64_t axis, block_size, output_dtype, precision, saturate;
} qdq_state;

static oq_status qdq_prepare(oq_node_ctx *ctx, bool quantize, oq_error *err) {
    qdq_state st = {.axis = 1, .saturate = 1};
    oq_status s = OQ_OK;
    /* attributes by ONNX version: axis 13, saturate 19 (Q, float8 only),
     * block_size 21, output_dtype 21 (Q) / 23 (DQ), precision 23 (Q) */
    if (ctx->opset >= 13)
        s = OQ_ATTR_INT(ctx, "axis", 1, &st.axis, err);
    if (s == OQ_OK && quantize && ctx->opset >= 19)
        s = OQ_ATTR_INT(ctx, "saturate", 1, &st.saturate, err);
    if (s == OQ_OK && ctx->opset >= 21)
        s = OQ_ATTR_INT(ctx, "block_size", 0, &st.block_size, err);
    if (s == OQ_OK && ctx->opset >= (quantize ? 21 : 23))
        s = OQ_ATTR_INT(ctx, "output_dtype", 0, &st.output_dtype, err);
    if (s == OQ_OK && quantize && ctx->opset >= 23)
        s = OQ_ATTR_INT(ctx, "precision", 0, &st.precision, err);
    if (s != OQ_OK)
        return s;
    if (st.block_size < 0)
        return oq_err(err, OQ_EINVAL, "%s: block_size %lld is negative", ctx->label,
                      (long long)st.block_size);
    if (st.output_dtype < 0 || st.output_dtype >= OQ_DTYPE_COUNT)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: output_dtype %lld is not supported", ctx->label,
                      (long long)st.output_dtype);
    if (st.precision != 0 && st.precision != OQ_DTYPE_FLOAT && st.precision != OQ_DTYPE_FLOAT16 &&
        st.precision != OQ_DTYPE_BFLOAT16)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: precision %lld is not supported", ctx->label,
                      (long long)st.precision);
    qdq_state *p = malloc(sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    *p = st;
    ctx->state = p;
    return OQ_OK;
}

static oq_status q_prepare(oq_node_ctx *ctx, oq_error *err) {
    return qdq_prepare(ctx, true, err);
}
static oq_status dq_prepare(oq_node_ctx *ctx, oq_error *err) {
    return qdq_prepare(ctx, false, err);
}

static bool same_dims(const oq_tensor *a, const oq_tensor *b) {
    if (a->rank != b->rank)
        return false;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d])
            return false;
    return true;
}

/* Works out per-tensor / per-axis / blocked from the scale's shape and
 * checks the zero point has the same shape (ONNX QuantizeLinear-21). */
static oq_status q_layout(const oq_node_ctx *ctx, const qdq_state *st, const oq_tensor *x,
                          const oq_tensor *scale, const oq_tensor *zp, const char *sname,
                          qlayout *L, oq_error *err) {
    *L = (qlayout){.mode = G_TENSOR, .O = 1, .D = 1, .I = x->count, .S = 1, .B = 1};
    if (zp && zp->count != scale->count)
        return oq_err(err, OQ_EINVAL, "%s: zero point has %zu elements, %s has %zu", ctx->label,
                      zp->count, sname, scale->count);
    if (scale->count == 1)
        return OQ_OK; /* one value of any rank is per-tensor, as in the reference */
    if (ctx->opset < 13)
        return oq_err(err, OQ_EINVAL, "%s: %s must be a scalar before opset 13 (got %zu values)",
                      ctx->label, sname, scale->count);
    if (zp && !same_dims(zp, scale))
        return oq_err(err, OQ_EINVAL, "%s: zero point and %s shapes differ", ctx->label, sname);
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: a scalar input takes a scalar %s", ctx->label, sname);
    int a;
    oq_status s = oq_norm_axis(ctx, st->axis, x->rank, &a, err);
    if (s != OQ_OK)
        return s;
    size_t D = (size_t)x->dims[a];
    L->O = 1;
    L->I = 1;
    for (int d = 0; d < a; d++)
        L->O *= (size_t)x->dims[d];
    for (int d = a + 1; d < x->rank; d++)
        L->I *= (size_t)x->dims[d];
    L->D = D;
    if (st->block_size == 0) {
        if (scale->rank != 1 || scale->count != D)
            return oq_err(err, OQ_EINVAL,
                          "%s: per-axis %s must be 1-D with %zu values (axis %d), got %zu",
                          ctx->label, sname, D, a, scale->count);
        L->mode = G_AXIS;
        L->S = D;
        return OQ_OK;
    }
    /* blocked: same shape as x except ceil(D / block_size) along the axis */
    size_t B = (size_t)st->block_size, S = D / B + (D % B != 0);
    if (scale->rank != x->rank)
        return oq_err(err, OQ_EINVAL, "%s: blocked %s must have rank %d, got %d", ctx->label,
                      sname, x->rank, scale->rank);
    for (int d = 0; d < x->rank; d++) {
        size_t want = d == a ? S : (size_t)x->dims[d];
        if ((size_t)scale->dims[d] != want)
            return oq_err(err, OQ_EINVAL,
                          "%s: blocked %s dim %d is %lld, expected %zu (block_size %zu)",
                          ctx->label, sname, d, (long long)scale->dims[d], want, B);
    }
    L->mode = G_BLOCK;
    L->S = S;
    L->B = B;
    return OQ_OK;
}

static size_t q_sidx(const qlayout *L, size_t o, size_t d, size_t i) {
    switch (L->mode) {
    case G_AXIS: return d;
    case G_BLOCK: return (o * L->S + d / L->B) * L->I + i;
    default: return 0;
    }
}

/* ---- QuantizeLinear ------------------------------------------------------ */

static oq_status q_check(const oq_node_ctx *ctx, const oq_tensor *const *in, oq_dtype *ytype,
                         qlayout *L, oq_error *err) {
    const qdq_state *st = ctx->state;
    const oq_tensor *x = in[0], *scale = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *zp = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!x || !scale)
        return oq_err(err, OQ_EINVAL, "%s: needs inputs x and y_scale", ctx->label);
    bool x_ok = x->dtype == OQ_DTYPE_FLOAT || x->dtype == OQ_DTYPE_INT32 ||
                (ctx->opset >= 19 && (x->dtype == OQ_DTYPE_FLOAT16 || x->dtype == OQ_DTYPE_BFLOAT16));
    if (!x_ok)
        return oq_err(err, OQ_EINVAL, "%s: x has type %s, not allowed at opset %d", ctx->label,
                      oq_dtype_name(x->dtype), ctx->opset);
    if (!is_scale_type(scale->dtype, ctx->opset))
        return oq_err(err, scale->dtype == OQ_DTYPE_INT32 ? OQ_EUNSUPPORTED : OQ_EINVAL,
                      "%s: y_scale has type %s, not supported at opset %d", ctx->label,
                      oq_dtype_name(scale->dtype), ctx->opset);
    /* output type: y_zero_point's, else output_dtype (21), else uint8 */
    oq_dtype t = OQ_DTYPE_UINT8;
    if (zp) {
        t = zp->dtype;
        if (st->output_dtype && st->output_dtype != (int64_t)t)
            return oq_err(err, OQ_EINVAL, "%s: output_dtype %s does not match y_zero_point type %s",
                          ctx->label, oq_dtype_name((int)st->output_dtype), oq_dtype_name(t));
    } else if (st->output_dtype) {
        t = (oq_dtype)st->output_dtype;
    }
    int32_t lo = 0, hi = 0;
    if (is_float8(t))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: quantization to %s is not supported", ctx->label,
                      oq_dtype_name(t));
    bool t_ok = t == OQ_DTYPE_UINT8 || t == OQ_DTYPE_INT8 ||
                (ctx->opset >= 21 && qrange(t, &lo, &hi));
    if (!t_ok)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: quantization to %s is not supported at opset %d",
                      ctx->label, oq_dtype_name(t), ctx->opset);
    *ytype = t;
    return q_layout(ctx, st, x, scale, zp, "y_scale", L, err);
}

static oq_status q_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    oq_dtype t = OQ_DTYPE_UNDEFINED;
    qlayout L;
    oq_status s = q_check(ctx, in, &t, &L, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], t, in[0]->rank, in[0]->dims, err);
}

typedef struct {
    const oq_tensor *x;
    oq_tensor *y;
    qlayout L;
    const float *scale;  /* converted to float, one per scale element */
    const int32_t *zp;   /* one per scale element (all 0 when absent) */
    int32_t qlo, qhi;
    oq_dtype prec;       /* precision of x / scale */
} q_job;

/* x / scale rounded to the job's precision. */
static float q_div(const q_job *j, size_t i, float s) {
    const oq_tensor *x = j->x;
    float q;
    if (x->dtype == OQ_DTYPE_INT32)
        q = (float)((double)((const int32_t *)x->data)[i] / (double)s);
    else
        q = fload(x, i) / s; /* float division is exact-rounded: fine for half too */
    if (j->prec == OQ_DTYPE_FLOAT16)
        q = oq_half_to_float(oq_float_to_half(q));
    else if (j->prec == OQ_DTYPE_BFLOAT16)
        q = oq_bf16_to_float(oq_float_to_bf16(q));
    return q;
}

/* Quantizes n float32 elements to an 8/16-bit type. sstep 0: one scale and
 * zero point for all; 1: one per element (per-axis on the last axis,
 * blocked). */
#define Q_LOOP(T)                                                                   \
    do {                                                                            \
        T *restrict yy = y;                                                         \
        if (sstep == 0) {                                                           \
            float lo = (float)(qlo - zp[0]), hi = (float)(qhi - zp[0]), sc = s[0];  \
            for (size_t i = 0; i < n; i++)                                          \
                yy[i] = (T)(q_round_clamp(x[i] / sc, lo, hi) + zp[0]);              \
        } else {                                                                    \
            for (size_t i = 0; i < n; i++)                                          \
                yy[i] = (T)(q_round_clamp(x[i] / s[i], (float)(qlo - zp[i]),        \
                                          (float)(qhi - zp[i])) + zp[i]);           \
        }                                                                           \
    } while (0)

OQ_CLONES static void q_f32(const float *restrict x, void *restrict y, oq_dtype yt, size_t n,
                            const float *restrict s, const int32_t *restrict zp, int sstep,
                            int32_t qlo, int32_t qhi) {
    switch (yt) {
    case OQ_DTYPE_UINT8: Q_LOOP(uint8_t); break;
    case OQ_DTYPE_INT8: Q_LOOP(int8_t); break;
    case OQ_DTYPE_UINT16: Q_LOOP(uint16_t); break;
    case OQ_DTYPE_INT16: Q_LOOP(int16_t); break;
    default: break;
    }
}

static void q_store(oq_tensor *y, size_t i, int32_t v) {
    switch (y->dtype) {
    case OQ_DTYPE_UINT8: ((uint8_t *)y->data)[i] = (uint8_t)v; break;
    case OQ_DTYPE_INT8: ((int8_t *)y->data)[i] = (int8_t)v; break;
    case OQ_DTYPE_UINT16: ((uint16_t *)y->data)[i] = (uint16_t)v; break;
    case OQ_DTYPE_INT16: ((int16_t *)y->data)[i] = (int16_t)v; break;
    case OQ_DTYPE_UINT4: case OQ_DTYPE_INT4: {
        uint8_t *b = (uint8_t *)y->data + (i >> 1);
        uint8_t nib = (uint8_t)(v & 15);
        *b = (i & 1) ? (uint8_t)((*b & 0x0f) | (nib << 4)) : (uint8_t)((*b & 0xf0) | nib);
        break;
    }
    default: break;
    }
}

/* The run of elements from p that share a scale pattern, ending before e:
 * its scale/zero point pointers and whether they step per element. */
static size_t q_segment(const qlayout *L, size_t p, size_t e, size_t *si, int *sstep) {
    size_t row = p / L->I, i0 = p % L->I;
    size_t o = row / L->D, d = row % L->D, end;
    if (L->mode == G_AXIS && L->I == 1) {
        end = (o + 1) * L->D; /* per-axis on the last axis: scales step with d */
        *si = d;
        *sstep = 1;
    } else {
        end = (row + 1) * L->I;
        *si = q_sidx(L, o, d, i0);
        *sstep = L->mode == G_BLOCK; /* blocked: contiguous in i */
    }
    return end < e ? end : e;
}

/* Quantizes flat elements [b, e), one segment at a time. */
static void q_worker(void *arg, size_t b, size_t e) {
    const q_job *j = arg;
    bool fast = j->x->dtype == OQ_DTYPE_FLOAT && j->prec == OQ_DTYPE_FLOAT &&
                j->y->dtype != OQ_DTYPE_UINT4 && j->y->dtype != OQ_DTYPE_INT4;
    size_t es = oq_dtype_size(j->y->dtype);
    for (size_t p = b; p < e;) {
        size_t si;
        int step;
        size_t end = q_segment(&j->L, p, e, &si, &step);
        if (fast) {
            q_f32((const float *)j->x->data + p, (uint8_t *)j->y->data + p * es, j->y->dtype,
                  end - p, j->scale + si, j->zp + si, step, j->qlo, j->qhi);
        } else {
            for (size_t k = p; k < end; k++) {
                size_t q = si + (size_t)step * (k - p);
                int32_t zp = j->zp[q];
                float lo = (float)(j->qlo - zp), hi = (float)(j->qhi - zp);
                q_store(j->y, k, q_round_clamp(q_div(j, k, j->scale[q]), lo, hi) + zp);
            }
        }
        p = end;
    }
}

/* Converts scale and zero point to float / int32 arrays (count values each). */
static oq_status load_params(const oq_node_ctx *ctx, const oq_tensor *scale, const oq_tensor *zp,
                             float **sf, int32_t **zi, oq_error *err) {
    size_t n = scale->count, bytes;
    if (!oq_mul_size(n ? n : 1, sizeof(float) + sizeof(int32_t), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: scale too large", ctx->label);
    void *mem = malloc(bytes);
    if (!mem)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for %zu scales", ctx->label, n);
    *sf = mem;
    *zi = (int32_t *)((char *)mem + (n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        (*sf)[i] = fload(scale, i);
        (*zi)[i] = zp ? qload(zp, i) : 0;
    }
    return OQ_OK;
}

static oq_status q_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                       oq_error *err) {
    const qdq_state *st = ctx->state;
    oq_dtype t = OQ_DTYPE_UNDEFINED;
    q_job j = {.x = in[0], .y = &out[0]};
    oq_status s = q_check(ctx, in, &t, &j.L, err);
    if (s != OQ_OK)
        return s;
    const oq_tensor *scale = in[1], *zp = ctx->n_inputs > 2 ? in[2] : NULL;
    qrange(t, &j.qlo, &j.qhi);
    /* the division runs in the precision attribute's type, else (ONNX 23+)
     * in y_scale's type; earlier opsets divide in float */
    j.prec = OQ_DTYPE_FLOAT;
    if (ctx->opset >= 23)
        j.prec = st->precision ? (oq_dtype)st->precision : scale->dtype;
    if (in[0]->count == 0)
        return OQ_OK;
    float *sf;
    int32_t *zi;
    s = load_params(ctx, scale, zp, &sf, &zi, err);
    if (s != OQ_OK)
        return s;
    j.scale = sf;
    j.zp = zi;
    if (t == OQ_DTYPE_UINT4 || t == OQ_DTYPE_INT4) {
        q_worker(&j, 0, in[0]->count); /* two elements share a byte: one thread */
    } else {
        oq_parallel_for(ctx->pool, in[0]->count, PAR_GRAIN, q_worker, &j);
    }
    free(sf);
    return OQ_OK;
}

/* ---- DequantizeLinear ---------------------------------------------------- */

static oq_status dq_check(const oq_node_ctx *ctx, const oq_tensor *const *in, oq_dtype *ytype,
                          qlayout *L, oq_error *err) {
    const qdq_state *st = ctx->state;
    const oq_tensor *x = in[0], *scale = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *zp = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!x || !scale)
        return oq_err(err, OQ_EINVAL, "%s: needs inputs x and x_scale", ctx->label);
    if (is_float8(x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: dequantizing %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    int32_t lo = 0, hi = 0;
    bool x_ok = x->dtype == OQ_DTYPE_UINT8 || x->dtype == OQ_DTYPE_INT8 ||
                x->dtype == OQ_DTYPE_INT32 || (ctx->opset >= 21 && qrange(x->dtype, &lo, &hi));
    if (!x_ok)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: x has type %s, not supported at opset %d",
                      ctx->label, oq_dtype_name(x->dtype), ctx->opset);
    if (zp && zp->dtype != x->dtype)
        return oq_err(err, OQ_EINVAL, "%s: x_zero_point has type %s, x has %s", ctx->label,
                      oq_dtype_name(zp->dtype), oq_dtype_name(x->dtype));
    if (!is_scale_type(scale->dtype, ctx->opset))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: x_scale has type %s, not supported at opset %d",
                      ctx->label, oq_dtype_name(scale->dtype), ctx->opset);
    oq_dtype t = st->output_dtype ? (oq_dtype)st->output_dtype : scale->dtype;
    if (t != OQ_DTYPE_FLOAT && t != OQ_DTYPE_FLOAT16 && t != OQ_DTYPE_BFLOAT16)
        return oq_err(err, OQ_EINVAL, "%s: output_dtype %s is not a float type", ctx->label,
                      oq_dtype_name(t));
    *ytype = t;
    return q_layout(ctx, st, x, scale, zp, "x_scale", L, err);
}

static oq_status dq_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    oq_dtype t = OQ_DTYPE_UNDEFINED;
    qlayout L;
    oq_status s = dq_check(ctx, in, &t, &L, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], t, in[0]->rank, in[0]->dims, err);
}

typedef struct {
    const oq_tensor *x;
    oq_tensor *y;
    qlayout L;
    const float *scale;
    const int32_t *zp;
} dq_job;

#define DQ_LOOP(T)                                                                  \
    do {                                                                            \
        const T *restrict xx = x;                                                   \
        if (sstep == 0)                                                             \
            for (size_t i = 0; i < n; i++)                                          \
                y[i] = (float)((int32_t)xx[i] - zp[0]) * s[0];                      \
        else                                                                        \
            for (size_t i = 0; i < n; i++)                                          \
                y[i] = (float)((int32_t)xx[i] - zp[i]) * s[i];                      \
    } while (0)

/* Dequantizes n 8-bit elements to float32; sstep as in q_f32. */
OQ_CLONES static void dq_8bit(const void *restrict x, bool is_signed, float *restrict y,
                              size_t n, const float *restrict s, const int32_t *restrict zp,
                              int sstep) {
    if (is_signed)
        DQ_LOOP(int8_t);
    else
        DQ_LOOP(uint8_t);
}

static void dq_worker(void *arg, size_t b, size_t e) {
    const dq_job *j = arg;
    bool fast = j->y->dtype == OQ_DTYPE_FLOAT &&
                (j->x->dtype == OQ_DTYPE_UINT8 || j->x->dtype == OQ_DTYPE_INT8);
    for (size_t p = b; p < e;) {
        size_t si;
        int step;
        size_t end = q_segment(&j->L, p, e, &si, &step);
        if (fast) {
            dq_8bit((const uint8_t *)j->x->data + p, j->x->dtype == OQ_DTYPE_INT8,
                    (float *)j->y->data + p, end - p, j->scale + si, j->zp + si, step);
        } else {
            for (size_t k = p; k < end; k++) {
                size_t q = si + (size_t)step * (k - p);
                /* (x - zero point) exactly in integers, then one float multiply */
                int64_t v = (int64_t)qload(j->x, k) - j->zp[q];
                fstore(j->y, k, (float)v * j->scale[q]);
            }
        }
        p = end;
    }
}

static oq_status dq_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                        oq_error *err) {
    oq_dtype t = OQ_DTYPE_UNDEFINED;
    dq_job j = {.x = in[0], .y = &out[0]};
    oq_status s = dq_check(ctx, in, &t, &j.L, err);
    if (s != OQ_OK)
        return s;
    if (in[0]->count == 0)
        return OQ_OK;
    float *sf;
    int32_t *zi;
    s = load_params(ctx, in[1], ctx->n_inputs > 2 ? in[2] : NULL, &sf, &zi, err);
    if (s != OQ_OK)
        return s;
    j.scale = sf;
    j.zp = zi;
    oq_parallel_for(ctx->pool, in[0]->count, PAR_GRAIN, dq_worker, &j);
    free(sf);
    return OQ_OK;
}

/* ---- DynamicQuantizeLinear ----------------------------------------------- */

static oq_status dyn_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    const oq_tensor *x = in[0];
    if (!x)
        return oq_err(err, OQ_EINVAL, "%s: missing input x", ctx->label);
    if (x->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "%s: x must be float, got %s", ctx->label,
                      oq_dtype_name(x->dtype));
    oq_status s = oq_out_shape(&out[0], OQ_DTYPE_UINT8, x->rank, x->dims, err);
    if (s == OQ_OK && ctx->n_outputs > 1)
        s = oq_out_shape(&out[1], OQ_DTYPE_FLOAT, 0, NULL, err);
    if (s == OQ_OK && ctx->n_outputs > 2)
        s = oq_out_shape(&out[2], OQ_DTYPE_UINT8, 0, NULL, err);
    return s;
}

/* y_scale and y_zero_point for x (ONNX DynamicQuantizeLinear-11): the range
 * is widened to include 0; a range of 0 (all zeros, or no elements) gives
 * scale 1 and zero point 0, as the reference implementation does. */
/* min(0, min(x)) and max(0, max(x)) as order-preserving int32 keys of the
 * bits (vectorises); *has_nan tells whether NaN elements were seen. */
OQ_CLONES static void minmax0(const float *restrict x, size_t n, float *mn_out, float *mx_out,
                              bool *has_nan) {
    enum { L = 16 };
    int32_t lo[L], hi[L];
    uint32_t nan[L];
    for (int j = 0; j < L; j++) {
        lo[j] = hi[j] = 0; /* the key of +0.0: the range always holds 0 */
        nan[j] = 0;
    }
    size_t i = 0;
    for (; i + L <= n; i += L)
        for (int j = 0; j < L; j++) {
            int32_t b;
            memcpy(&b, &x[i + j], sizeof b);
            int32_t k = b ^ ((b >> 31) & 0x7fffffff);
            uint32_t isnan_ = (uint32_t)((b & 0x7fffffff) > 0x7f800000);
            k = isnan_ ? 0 : k;
            lo[j] = k < lo[j] ? k : lo[j];
            hi[j] = k > hi[j] ? k : hi[j];
            nan[j] |= isnan_;
        }
    int32_t mn = 0, mx = 0;
    uint32_t any_nan = 0;
    for (int j = 0; j < L; j++) {
        mn = lo[j] < mn ? lo[j] : mn;
        mx = hi[j] > mx ? hi[j] : mx;
        any_nan |= nan[j];
    }
    for (; i < n; i++) {
        int32_t b;
        memcpy(&b, &x[i], sizeof b);
        int32_t k = b ^ ((b >> 31) & 0x7fffffff);
        if ((b & 0x7fffffff) > 0x7f800000) {
            any_nan = 1;
            continue;
        }
        mn = k < mn ? k : mn;
        mx = k > mx ? k : mx;
    }
    int32_t bl = mn ^ ((mn >> 31) & 0x7fffffff), bh = mx ^ ((mx >> 31) & 0x7fffffff);
    memcpy(mn_out, &bl, sizeof bl);
    memcpy(mx_out, &bh, sizeof bh);
    *has_nan = any_nan != 0;
}

static void dyn_params(const float *x, size_t n, float *scale, uint8_t *zp) {
    float mn, mx; /* min(0, min(x)), max(0, max(x)); NaN elements are left out */
    bool has_nan;
    minmax0(x, n, &mn, &mx, &has_nan);
    (void)has_nan;
    mn = mn + 0.0f; /* a -0.0 bound reads as 0 */
    mx = mx + 0.0f;
    if (mx == mn) {
        *scale = 1.0f;
        *zp = 0;
        return;
    }
    float s = (mx - mn) / 255.0f;
    float z = 0.0f - mn / s;
    z = z >= 0.0f ? z : 0.0f; /* clip to [0, 255] (NaN to 0), then round half to even */
    z = z <= 255.0f ? z : 255.0f;
    *scale = s;
    *zp = (uint8_t)nearbyintf(z);
}

static oq_status dyn_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    oq_status s = dyn_infer(ctx, in, out, err);
    if (s != OQ_OK)
        return s;
    float scale;
    uint8_t zp;
    dyn_params(in[0]->data, in[0]->count, &scale, &zp);
    q_job j = {.x = in[0], .y = &out[0], .qlo = 0, .qhi = 255, .prec = OQ_DTYPE_FLOAT};
    j.L = (qlayout){.mode = G_TENSOR, .O = 1, .D = 1, .I = in[0]->count, .S = 1, .B = 1};
    int32_t zi = zp;
    j.scale = &scale;
    j.zp = &zi;
    if (in[0]->count)
        oq_parallel_for(ctx->pool, in[0]->count, PAR_GRAIN, q_worker, &j);
    if (ctx->n_outputs > 1 && out[1].data)
        *(float *)out[1].data = scale;
    if (ctx->n_outputs > 2 && out[2].data)
        *(uint8_t *)out[2].data = zp;
    return OQ_OK;
}

/* ======================================================================== */
/* Integer matrix products: MatMulInteger, QLinearMatMul                    */
/* ======================================================================== */

/* sum of a[k] * b[k] in int32 with wrap-around (ONNX: "accumulation may
 * overflow if and only if in 32 bits"). Operands are at most 255 in
 * magnitude, so 32768 products fit an int32 exactly; blocks are then added
 * modulo 2^32. The inner loop is a pmaddwd-style dot product. */
OQ_CLONES static int32_t dot16(const int16_t *restrict a, const int16_t *restrict b, size_t K) {
    uint32_t total = 0;
    for (size_t k0 = 0; k0 < K; k0 += 32768) {
        size_t k1 = K - k0 < 32768 ? K : k0 + 32768;
        int32_t s = 0;
        for (size_t k = k0; k < k1; k++)
            s += (int32_t)a[k] * (int32_t)b[k];
        total += (uint32_t)s;
    }
    return (int32_t)total;
}

/* Strides of p broadcast (numpy rules) to (rank, dims); EINVAL otherwise. */
static oq_status bcast_strides(const oq_node_ctx *ctx, int prank,
                               const int64_t *pdims, const char *what, int rank,
                               const int64_t *dims, size_t *strides, oq_error *err) {
    if (prank > rank)
        return oq_err(err, OQ_EINVAL, "%s: %s has rank %d, more than %d", ctx->label, what, prank,
                      rank);
    size_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int pd = d - (rank - prank);
        if (pd < 0) {
            strides[d] = 0;
            continue;
        }
        if (pdims[pd] != 1 && pdims[pd] != dims[d])
            return oq_err(err, OQ_EINVAL, "%s: %s dim %d (%lld) does not broadcast to %lld",
                          ctx->label, what, pd, (long long)pdims[pd], (long long)dims[d]);
        strides[d] = pdims[pd] == 1 ? 0 : s;
        s *= (size_t)pdims[pd];
    }
    return OQ_OK;
}

typedef struct {
    int rank;                 /* output rank (batch dims + M/N as kept) */
    int64_t dims[OQ_MAX_RANK];
    int nb;                   /* output batch dims */
    int64_t bdims[OQ_MAX_RANK];
    size_t M, K, N;
    /* promoted operand shapes [batch..., M, K] and [batch..., K, N] at rank nb + 2 */
    int64_t adims[OQ_MAX_RANK + 2], bdims2[OQ_MAX_RANK + 2];
    size_t abstride[OQ_MAX_RANK], bbstride[OQ_MAX_RANK]; /* matrix index strides per batch dim */
    size_t batch_a, batch_b, batch_out;
    bool a1d, b1d;
} mm_geom;

static oq_status mm_geometry(const oq_node_ctx *ctx, const oq_tensor *a, const oq_tensor *b,
                             mm_geom *g, oq_error *err) {
    memset(g, 0, sizeof *g);
    if (a->rank < 1 || b->rank < 1)
        return oq_err(err, OQ_EINVAL, "%s: matmul inputs must have rank >= 1", ctx->label);
    g->a1d = a->rank == 1;
    g->b1d = b->rank == 1;
    g->M = g->a1d ? 1 : (size_t)a->dims[a->rank - 2];
    g->K = (size_t)a->dims[a->rank - 1];
    size_t kb = (size_t)(g->b1d ? b->dims[0] : b->dims[b->rank - 2]);
    g->N = g->b1d ? 1 : (size_t)b->dims[b->rank - 1];
    if (kb != g->K)
        return oq_err(err, OQ_EINVAL, "%s: inner dimensions differ (%zu vs %zu)", ctx->label,
                      g->K, kb);
    int ra = a->rank > 2 ? a->rank - 2 : 0, rb = b->rank > 2 ? b->rank - 2 : 0;
    g->nb = ra > rb ? ra : rb;
    if (g->nb + 2 > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: rank too large", ctx->label);
    size_t sa = 1, sb = 1;
    for (int d = g->nb - 1; d >= 0; d--) {
        int da = d - (g->nb - ra), db = d - (g->nb - rb);
        int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
        if (x != y && x != 1 && y != 1)
            return oq_err(err, OQ_EINVAL, "%s: batch dims %lld and %lld do not broadcast",
                          ctx->label, (long long)x, (long long)y);
        g->bdims[d] = x == 1 ? y : x;
        g->abstride[d] = x == 1 ? 0 : sa;
        g->bbstride[d] = y == 1 ? 0 : sb;
        sa *= (size_t)x;
        sb *= (size_t)y;
        g->adims[d] = x;
        g->bdims2[d] = y;
    }
    g->batch_a = sa;
    g->batch_b = sb;
    g->batch_out = 1;
    for (int d = 0; d < g->nb; d++) {
        g->dims[g->rank++] = g->bdims[d];
        g->batch_out *= (size_t)g->bdims[d];
    }
    if (!g->a1d)
        g->dims[g->rank++] = (int64_t)g->M;
    if (!g->b1d)
        g->dims[g->rank++] = (int64_t)g->N;
    g->adims[g->nb] = (int64_t)g->M;
    g->adims[g->nb + 1] = (int64_t)g->K;
    g->bdims2[g->nb] = (int64_t)g->K;
    g->bdims2[g->nb + 1] = (int64_t)g->N;
    return OQ_OK;
}

/* A parameter (zero point or scale) of operand a or b, as strides over the
 * operand's promoted shape [batch..., rows, cols]. ONNX allows a 1-D
 * per-row vector of M values for a, read as [M, 1]. */
static oq_status mm_param_strides(const oq_node_ctx *ctx, const mm_geom *g, const oq_tensor *p,
                                  bool is_a, const oq_tensor *operand, const char *what,
                                  size_t *strides, oq_error *err) {
    const int64_t *odims = is_a ? g->adims : g->bdims2;
    int orank = g->nb + 2;
    int64_t pd[OQ_MAX_RANK + 1];
    int pr = p->rank;
    memcpy(pd, p->dims, (size_t)pr * sizeof *pd);
    if (p->count == 1) {
        pr = 0; /* per-tensor, whatever its rank */
    } else if (is_a && pr == 1 && !g->a1d && (size_t)pd[0] == g->M) {
        pd[1] = 1;
        pr = 2;
    } else if (pr > operand->rank) {
        return oq_err(err, OQ_EINVAL, "%s: %s has rank %d, more than the input's %d", ctx->label,
                      what, pr, operand->rank);
    }
    /* right-align against the operand's own shape, then map onto the promoted one */
    if (pr > 0 && ((is_a && g->a1d) || (!is_a && g->b1d))) {
        if (pr != 1)
            return oq_err(err, OQ_EINVAL, "%s: %s does not fit a 1-D input", ctx->label, what);
        /* a 1-D a is [1, K] (K last); a 1-D b is [K, 1] (K first) */
        if (!is_a) {
            pd[1] = 1;
            pr = 2;
        }
    }
    return bcast_strides(ctx, pr, pd, what, orank, odims, strides, err);
}

typedef struct {
    const mm_geom *g;
    const int16_t *A;  /* [batch_a][M][K] */
    const int16_t *Bt; /* [batch_b][N][K] */
    int32_t *C;        /* [batch_out][M][N] */
} mm_job;

static void mm_worker(void *arg, size_t b, size_t e) {
    const mm_job *j = arg;
    const mm_geom *g = j->g;
    for (size_t row = b; row < e; row++) {
        size_t ob = row / g->M, m = row % g->M;
        size_t ia = 0, ib = 0, rem = ob;
        for (int d = g->nb - 1; d >= 0; d--) {
            size_t idx = rem % (size_t)g->bdims[d];
            rem /= (size_t)g->bdims[d];
            ia += idx * g->abstride[d];
            ib += idx * g->bbstride[d];
        }
        const int16_t *arow = j->A + (ia * g->M + m) * g->K;
        const int16_t *bt = j->Bt + ib * g->N * g->K;
        int32_t *c = j->C + row * g->N;
        for (size_t n = 0; n < g->N; n++)
            c[n] = dot16(arow, bt + n * g->K, g->K);
    }
}

/* Materialises (operand - zero point) as int16: a as [batch][M][K], b
 * transposed to [batch][N][K]. */
static void mm_materialise(const mm_geom *g, const oq_tensor *t, const oq_tensor *zp,
                           const size_t *zst, bool is_a, int16_t *out) {
    size_t batch = is_a ? g->batch_a : g->batch_b;
    size_t R = is_a ? g->M : g->K, Cc = is_a ? g->K : g->N;
    const int64_t *pd = is_a ? g->adims : g->bdims2;
    int nb = g->nb;
    size_t idx[OQ_MAX_RANK] = {0};
    for (size_t bt = 0; bt < batch; bt++) {
        size_t zb = 0;
        for (int d = 0; d < nb; d++)
            zb += idx[d] * zst[d];
        for (size_t r = 0; r < R; r++)
            for (size_t c = 0; c < Cc; c++) {
                size_t src = (bt * R + r) * Cc + c;
                int32_t v = qload(t, src);
                if (zp)
                    v -= qload(zp, zb + r * zst[nb] + c * zst[nb + 1]);
                size_t dst = is_a ? src : (bt * Cc + c) * R + r;
                out[dst] = (int16_t)v;
            }
        for (int d = nb - 1; d >= 0; d--) {
            if (++idx[d] < (size_t)pd[d])
                break;
            idx[d] = 0;
        }
    }
}

/* Computes C = (a - a_zp) x (b - b_zp) into c (int32, output layout). */
static oq_status mm_int(oq_node_ctx *ctx, const mm_geom *g, const oq_tensor *a,
                        const oq_tensor *azp, const oq_tensor *b, const oq_tensor *bzp,
                        int32_t *c, oq_error *err) {
    size_t sa[OQ_MAX_RANK + 2] = {0}, sb[OQ_MAX_RANK + 2] = {0};
    oq_status s = OQ_OK;
    if (azp)
        s = mm_param_strides(ctx, g, azp, true, a, "a_zero_point", sa, err);
    if (s == OQ_OK && bzp)
        s = mm_param_strides(ctx, g, bzp, false, b, "b_zero_point", sb, err);
    if (s != OQ_OK)
        return s;
    size_t na = a->count, nbt = b->count, bytes;
    if (!oq_add_size(na, nbt, &bytes) || !oq_mul_size(bytes, sizeof(int16_t), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: inputs too large", ctx->label);
    int16_t *A = malloc(bytes ? bytes : 1);
    if (!A)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for %zu bytes of scratch", ctx->label,
                      bytes);
    int16_t *Bt = A + na;
    mm_materialise(g, a, azp, sa, true, A);
    mm_materialise(g, b, bzp, sb, false, Bt);
    mm_job j = {g, A, Bt, c};
    oq_parallel_for(ctx->pool, g->batch_out * g->M, min_chunk_for(g->N * g->K), mm_worker, &j);
    free(A);
    return OQ_OK;
}

static bool is_8bit(oq_dtype t) {
    return t == OQ_DTYPE_UINT8 || t == OQ_DTYPE_INT8;
}

static oq_status mmi_check(const oq_node_ctx *ctx, const oq_tensor *const *in, mm_geom *g,
                           oq_error *err) {
    const oq_tensor *a = in[0], *b = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *azp = ctx->n_inputs > 2 ? in[2] : NULL, *bzp = ctx->n_inputs > 3 ? in[3] : NULL;
    if (!a || !b)
        return oq_err(err, OQ_EINVAL, "%s: needs inputs A and B", ctx->label);
    if (!is_8bit(a->dtype) || !is_8bit(b->dtype))
        return oq_err(err, OQ_EINVAL, "%s: A and B must be int8 or uint8, got %s and %s",
                      ctx->label, oq_dtype_name(a->dtype), oq_dtype_name(b->dtype));
    if ((azp && azp->dtype != a->dtype) || (bzp && bzp->dtype != b->dtype))
        return oq_err(err, OQ_EINVAL, "%s: zero points must have their input's type", ctx->label);
    return mm_geometry(ctx, a, b, g, err);
}

static oq_status mmi_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    mm_geom g;
    oq_status s = mmi_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], OQ_DTYPE_INT32, g.rank, g.dims, err);
}

static oq_status mmi_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    mm_geom g;
    oq_status s = mmi_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    if (out[0].count == 0)
        return OQ_OK;
    return mm_int(ctx, &g, in[0], ctx->n_inputs > 2 ? in[2] : NULL, in[1],
                  ctx->n_inputs > 3 ? in[3] : NULL, out[0].data, err);
}

/* -- QLinearMatMul: inputs a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp */

static bool qlm_scale_ok(oq_dtype t, int opset) {
    /* QLinearMatMul-21 allows float16 and bfloat16 scales */
    return t == OQ_DTYPE_FLOAT || (opset >= 21 && (t == OQ_DTYPE_FLOAT16 || t == OQ_DTYPE_BFLOAT16));
}

static oq_status qlm_check(const oq_node_ctx *ctx, const oq_tensor *const *in, mm_geom *g,
                           oq_error *err) {
    if (ctx->n_inputs < 8)
        return oq_err(err, OQ_EINVAL, "%s: needs 8 inputs, got %d", ctx->label, ctx->n_inputs);
    for (int i = 0; i < 8; i++)
        if (!in[i])
            return oq_err(err, OQ_EINVAL, "%s: input %d is missing", ctx->label, i);
    const oq_tensor *a = in[0], *b = in[3];
    if (!is_8bit(a->dtype) || !is_8bit(b->dtype) || !is_8bit(in[7]->dtype))
        return oq_err(err, OQ_EINVAL, "%s: a, b and y_zero_point must be int8 or uint8",
                      ctx->label);
    if (in[2]->dtype != a->dtype || in[5]->dtype != b->dtype)
        return oq_err(err, OQ_EINVAL, "%s: zero points must have their input's type", ctx->label);
    if (!qlm_scale_ok(in[1]->dtype, ctx->opset) || !qlm_scale_ok(in[4]->dtype, ctx->opset) ||
        !qlm_scale_ok(in[6]->dtype, ctx->opset))
        return oq_err(err, OQ_EINVAL, "%s: scales must be float (float16/bfloat16 from opset 21)",
                      ctx->label);
    if (in[1]->count != in[2]->count || in[4]->count != in[5]->count ||
        in[6]->count != in[7]->count)
        return oq_err(err, OQ_EINVAL, "%s: each scale and zero point must have the same shape",
                      ctx->label);
    return mm_geometry(ctx, a, b, g, err);
}

static oq_status qlm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    mm_geom g;
    oq_status s = qlm_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[7]->dtype, g.rank, g.dims, err);
}

/* Requantizes acc with multiplier m: round half to even, add the zero point,
 * saturate (ONNX QLinearMatMul/QLinearConv: y = saturate(round(acc * m) + zp)). */
static inline int32_t requant(int32_t acc, float m, int32_t zp, int32_t lo, int32_t hi) {
    const double magic = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    double v = (double)acc * (double)m;
    double lo_d = (double)(lo - zp), hi_d = (double)(hi - zp);
    v = v >= lo_d ? v : lo_d; /* NaN saturates low; bounds are integers, so */
    v = v <= hi_d ? v : hi_d; /* clamping before rounding changes nothing */
    v = (v + magic) - magic;  /* half to even, as nearbyint in the default mode */
    return (int32_t)v + zp;
}

/* Requantizes one output row: y[n] = requant(acc[n], a * b[n] / ys[n]). */
static void qlm_row(const int32_t *acc, float a, const float *b, size_t bstep, const float *ys,
                    const int32_t *yz, size_t ystep, oq_tensor *y, size_t base, size_t N,
                    int32_t lo, int32_t hi) {
    for (size_t n = 0; n < N; n++) {
        /* multiplier in float, as a_scale * b_scale / y_scale */
        float m = a * b[n * bstep] / ys[n * ystep];
        int32_t v = requant(acc[n], m, yz[n * ystep], lo, hi);
        if (y->dtype == OQ_DTYPE_UINT8)
            ((uint8_t *)y->data)[base + n] = (uint8_t)v;
        else
            ((int8_t *)y->data)[base + n] = (int8_t)v;
    }
}

static oq_status qlm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    mm_geom g;
    oq_status s = qlm_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    oq_tensor *y = &out[0];
    if (y->count == 0)
        return OQ_OK;
    /* scale strides over the promoted output [batch..., M, N] */
    size_t sa[OQ_MAX_RANK + 2], sb[OQ_MAX_RANK + 2], sy[OQ_MAX_RANK + 2], tmp[OQ_MAX_RANK + 2];
    s = mm_param_strides(ctx, &g, in[1], true, in[0], "a_scale", sa, err);
    if (s == OQ_OK && sa[g.nb + 1] != 0)
        s = oq_err(err, OQ_EINVAL, "%s: a_scale must not vary along K", ctx->label);
    if (s == OQ_OK)
        s = mm_param_strides(ctx, &g, in[4], false, in[3], "b_scale", sb, err);
    if (s == OQ_OK && sb[g.nb] != 0)
        s = oq_err(err, OQ_EINVAL, "%s: b_scale must not vary along K", ctx->label);
    /* y_scale / y_zero_point broadcast against the real output shape */
    if (s == OQ_OK) {
        const oq_tensor *ys = in[6];
        int pr = ys->count == 1 ? 0 : ys->rank;
        s = bcast_strides(ctx, pr, ys->dims, "y_scale", y->rank, y->dims, tmp, err);
        if (s == OQ_OK) {
            /* map onto the promoted output: batch dims, then M, N (0 if dropped) */
            for (int d = 0; d < g.nb; d++)
                sy[d] = tmp[d];
            sy[g.nb] = g.a1d ? 0 : tmp[g.nb];
            sy[g.nb + 1] = g.b1d ? 0 : tmp[g.nb + (g.a1d ? 0 : 1)];
        }
    }
    if (s != OQ_OK)
        return s;
    size_t bytes;
    if (!oq_mul_size(y->count, sizeof(int32_t), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: output too large", ctx->label);
    int32_t *acc = malloc(bytes);
    if (!acc)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    s = mm_int(ctx, &g, in[0], in[2], in[3], in[5], acc, err);
    /* scales and the output zero point as plain float / int32 arrays */
    float *af = NULL, *bf = NULL, *yf = NULL;
    int32_t *zi = NULL, *unused = NULL;
    if (s == OQ_OK)
        s = load_params(ctx, in[1], NULL, &af, &unused, err);
    if (s == OQ_OK)
        s = load_params(ctx, in[4], NULL, &bf, &unused, err);
    if (s == OQ_OK)
        s = load_params(ctx, in[6], in[7], &yf, &zi, err);
    if (s == OQ_OK) {
        int32_t lo = 0, hi = 0;
        qrange(y->dtype, &lo, &hi);
        size_t idx[OQ_MAX_RANK] = {0}; /* output batch index */
        for (size_t ob = 0; ob < g.batch_out; ob++) {
            size_t ia = 0, ib = 0, iy = 0;
            for (int d = 0; d < g.nb; d++) {
                ia += idx[d] * sa[d];
                ib += idx[d] * sb[d];
                iy += idx[d] * sy[d];
            }
            for (size_t m = 0; m < g.M; m++) {
                size_t row = ob * g.M + m;
                qlm_row(acc + row * g.N, af[ia + m * sa[g.nb]], bf + ib, sb[g.nb + 1],
                        yf + iy + m * sy[g.nb], zi + iy + m * sy[g.nb], sy[g.nb + 1], y,
                        row * g.N, g.N, lo, hi);
            }
            for (int d = g.nb - 1; d >= 0; d--) {
                if (++idx[d] < (size_t)g.bdims[d])
                    break;
                idx[d] = 0;
            }
        }
    }
    free(af);
    free(bf);
    free(yf);
    free(acc);
    return s;
}

/* ======================================================================== */
/* Integer convolutions: ConvInteger, QLinearConv                           */
/* ======================================================================== */

enum { MAX_SP = OQ_MAX_RANK - 2 };

typedef enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID } pad_mode;

typedef struct {
    pad_mode auto_pad;
    int64_t group;
    int n_kernel, n_strides, n_dil, n_pads;
    int64_t kernel[MAX_SP], strides[MAX_SP], dil[MAX_SP], pads[2 * MAX_SP];
} conv_state;

static oq_status copy_ints(const oq_node_ctx *ctx, const char *name, int max, int64_t *dst,
                           int *n, oq_error *err) {
    const int64_t *v;
    size_t c;
    oq_status s = oq_node_attr_ints(ctx->node, name, &v, &c, err);
    if (s != OQ_OK)
        return s;
    if (c > (size_t)max)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: %s has %zu values, at most %d supported",
                      ctx->label, name, c, max);
    if (c)
        memcpy(dst, v, c * sizeof *v);
    *n = (int)c;
    return OQ_OK;
}

static oq_status conv_prepare(oq_node_ctx *ctx, oq_error *err) {
    conv_state st = {0};
    char pad[32];
    oq_status s = oq_node_attr_string(ctx->node, "auto_pad", "NOTSET", pad, sizeof pad, err);
    if (s != OQ_OK)
        return s;
    if (!strcmp(pad, "NOTSET"))
        st.auto_pad = PAD_NOTSET;
    else if (!strcmp(pad, "SAME_UPPER"))
        st.auto_pad = PAD_SAME_UPPER;
    else if (!strcmp(pad, "SAME_LOWER"))
        st.auto_pad = PAD_SAME_LOWER;
    else if (!strcmp(pad, "VALID"))
        st.auto_pad = PAD_VALID;
    else
        return oq_err(err, OQ_EMODEL, "%s: auto_pad '%s' is not valid", ctx->label, pad);
    s = OQ_ATTR_INT(ctx, "group", 1, &st.group, err);
    if (s == OQ_OK)
        s = copy_ints(ctx, "kernel_shape", MAX_SP, st.kernel, &st.n_kernel, err);
    if (s == OQ_OK)
        s = copy_ints(ctx, "strides", MAX_SP, st.strides, &st.n_strides, err);
    if (s == OQ_OK)
        s = copy_ints(ctx, "dilations", MAX_SP, st.dil, &st.n_dil, err);
    if (s == OQ_OK)
        s = copy_ints(ctx, "pads", 2 * MAX_SP, st.pads, &st.n_pads, err);
    if (s != OQ_OK)
        return s;
    if (st.group < 1)
        return oq_err(err, OQ_EMODEL, "%s: group %lld must be >= 1", ctx->label,
                      (long long)st.group);
    conv_state *p = malloc(sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    *p = st;
    ctx->state = p;
    return OQ_OK;
}

typedef struct {
    int nsp;
    size_t N, C, M, G, Cg, Mg;
    int64_t in[MAX_SP], k[MAX_SP], out[MAX_SP], stride[MAX_SP], dil[MAX_SP], pb[MAX_SP];
    size_t in_sp, out_sp, k_sp; /* products of spatial dims */
    int64_t ydims[OQ_MAX_RANK];
} conv_geom;

static oq_status conv_geometry(const oq_node_ctx *ctx, const oq_tensor *x, const oq_tensor *w,
                               conv_geom *g, oq_error *err) {
    const conv_state *st = ctx->state;
    memset(g, 0, sizeof *g);
    if (x->rank < 3 || w->rank != x->rank)
        return oq_err(err, OQ_EINVAL, "%s: x (rank %d) and w (rank %d) must have the same rank >= 3",
                      ctx->label, x->rank, w->rank);
    int nsp = x->rank - 2;
    g->nsp = nsp;
    g->N = (size_t)x->dims[0];
    g->C = (size_t)x->dims[1];
    g->M = (size_t)w->dims[0];
    g->G = (size_t)st->group;
    if (g->C % g->G || g->M % g->G || (size_t)w->dims[1] * g->G != g->C)
        return oq_err(err, OQ_EINVAL,
                      "%s: channels do not fit group %zu (x has %zu, w is [%zu, %lld, ...])",
                      ctx->label, g->G, g->C, g->M, (long long)w->dims[1]);
    g->Cg = g->C / g->G;
    g->Mg = g->M / g->G;
    if ((st->n_kernel && st->n_kernel != nsp) || (st->n_strides && st->n_strides != nsp) ||
        (st->n_dil && st->n_dil != nsp) || (st->n_pads && st->n_pads != 2 * nsp))
        return oq_err(err, OQ_EINVAL, "%s: attribute lengths do not match %d spatial dims",
                      ctx->label, nsp);
    g->in_sp = g->out_sp = g->k_sp = 1;
    for (int d = 0; d < nsp; d++) {
        int64_t in = x->dims[d + 2], k = w->dims[d + 2];
        int64_t s = st->n_strides ? st->strides[d] : 1, dl = st->n_dil ? st->dil[d] : 1;
        if (st->n_kernel && st->kernel[d] != k)
            return oq_err(err, OQ_EINVAL, "%s: kernel_shape[%d] = %lld but w has %lld", ctx->label,
                          d, (long long)st->kernel[d], (long long)k);
        if (s < 1 || dl < 1 || k < 1 || s > INT32_MAX || dl > INT32_MAX)
            return oq_err(err, OQ_EINVAL, "%s: stride, dilation and kernel must be >= 1",
                          ctx->label);
        int64_t ext; /* dilated kernel extent (SAME's (out - 1) * s stays below in) */
        if (!oq_mul_i64(dl, k - 1, &ext) || !oq_add_i64(ext, 1, &ext))
            return oq_err(err, OQ_ELIMIT, "%s: spatial dim %d is too large", ctx->label, d);
        int64_t pb = 0, pe = 0, out;
        switch (st->auto_pad) {
        case PAD_NOTSET:
            pb = st->n_pads ? st->pads[d] : 0;
            pe = st->n_pads ? st->pads[d + nsp] : 0;
            if (pb < 0 || pe < 0 || pb > INT32_MAX || pe > INT32_MAX)
                return oq_err(err, OQ_EINVAL, "%s: pads must be non-negative", ctx->label);
            out = in + pb + pe - ext < 0 ? 0 : (in + pb + pe - ext) / s + 1;
            break;
        case PAD_VALID:
            out = in - ext < 0 ? 0 : (in - ext) / s + 1;
            break;
        default: {
            out = (in + s - 1) / s;
            int64_t total = (out - 1) * s + ext - in;
            if (total < 0)
                total = 0;
            pb = st->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
            break;
        }
        }
        if (out < 1)
            return oq_err(err, OQ_EINVAL, "%s: spatial dim %d gives no output (input %lld, kernel %lld)",
                          ctx->label, d, (long long)in, (long long)ext);
        g->in[d] = in;
        g->k[d] = k;
        g->out[d] = out;
        g->stride[d] = s;
        g->dil[d] = dl;
        g->pb[d] = pb;
        g->in_sp *= (size_t)in;
        g->k_sp *= (size_t)k;
        if (!oq_mul_size(g->out_sp, (size_t)out, &g->out_sp))
            return oq_err(err, OQ_ELIMIT, "%s: output too large", ctx->label);
    }
    g->ydims[0] = (int64_t)g->N;
    g->ydims[1] = (int64_t)g->M;
    for (int d = 0; d < nsp; d++)
        g->ydims[d + 2] = g->out[d];
    return OQ_OK;
}

typedef struct {
    const conv_geom *g;
    const oq_tensor *x;
    int32_t xzp;
    size_t n, grp;
    int16_t *col;      /* [out_sp][Cg * k_sp] */
    const int16_t *W;  /* [M][Cg * k_sp] */
    int32_t *acc;      /* [N][M][out_sp] */
} conv_job;

/* Fills im2col rows [b, e): the patch of output position p, zero-point
 * adjusted, with padding as 0 (i.e. the zero point in the raw domain). */
static void conv_im2col(void *arg, size_t b, size_t e) {
    const conv_job *j = arg;
    const conv_geom *g = j->g;
    size_t ck = g->Cg * g->k_sp;
    const oq_tensor *x = j->x;
    for (size_t p = b; p < e; p++) {
        int64_t op[MAX_SP];
        size_t rem = p;
        for (int d = g->nsp - 1; d >= 0; d--) {
            op[d] = (int64_t)(rem % (size_t)g->out[d]);
            rem /= (size_t)g->out[d];
        }
        int16_t *row = j->col + p * ck;
        for (size_t kk = 0; kk < g->k_sp; kk++) {
            size_t krem = kk, off = 0;
            bool inside = true;
            int64_t kidx[MAX_SP];
            for (int d = g->nsp - 1; d >= 0; d--) {
                kidx[d] = (int64_t)(krem % (size_t)g->k[d]);
                krem /= (size_t)g->k[d];
            }
            for (int d = 0; d < g->nsp; d++) {
                int64_t pos = op[d] * g->stride[d] - g->pb[d] + kidx[d] * g->dil[d];
                if (pos < 0 || pos >= g->in[d]) {
                    inside = false;
                    break;
                }
                off = off * (size_t)g->in[d] + (size_t)pos;
            }
            for (size_t c = 0; c < g->Cg; c++) {
                int16_t v = 0;
                if (inside) {
                    size_t src = ((j->n * g->C + j->grp * g->Cg + c) * g->in_sp) + off;
                    v = (int16_t)(qload(x, src) - j->xzp);
                }
                row[c * g->k_sp + kk] = v;
            }
        }
    }
}

static void conv_dots(void *arg, size_t b, size_t e) {
    const conv_job *j = arg;
    const conv_geom *g = j->g;
    size_t ck = g->Cg * g->k_sp;
    for (size_t p = b; p < e; p++) {
        const int16_t *row = j->col + p * ck;
        for (size_t m = 0; m < g->Mg; m++) {
            size_t mm = j->grp * g->Mg + m;
            j->acc[(j->n * g->M + mm) * g->out_sp + p] = dot16(j->W + mm * ck, row, ck);
        }
    }
}

/* acc[N][M][out_sp] = conv(x - xzp, w - wzp[m]) in int32. */
static oq_status conv_int(oq_node_ctx *ctx, const conv_geom *g, const oq_tensor *x, int32_t xzp,
                          const oq_tensor *w, const oq_tensor *wzp, int32_t *acc, oq_error *err) {
    size_t ck = g->Cg * g->k_sp, wn = w->count, cn, bytes;
    if (!oq_mul_size(g->out_sp, ck, &cn) || !oq_add_size(cn, wn, &bytes) ||
        !oq_mul_size(bytes, sizeof(int16_t), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: convolution too large", ctx->label);
    int16_t *W = malloc(bytes ? bytes : 1);
    if (!W)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for %zu bytes of scratch", ctx->label,
                      bytes);
    int16_t *col = W + wn;
    for (size_t m = 0; m < g->M; m++) {
        int32_t z = wzp ? qload(wzp, wzp->count == 1 ? 0 : m) : 0;
        for (size_t i = 0; i < ck; i++)
            W[m * ck + i] = (int16_t)(qload(w, m * ck + i) - z);
    }
    conv_job j = {.g = g, .x = x, .xzp = xzp, .col = col, .W = W, .acc = acc};
    for (size_t n = 0; n < g->N; n++)
        for (size_t grp = 0; grp < g->G; grp++) {
            j.n = n;
            j.grp = grp;
            oq_parallel_for(ctx->pool, g->out_sp, min_chunk_for(ck), conv_im2col, &j);
            oq_parallel_for(ctx->pool, g->out_sp, min_chunk_for(ck * g->Mg), conv_dots, &j);
        }
    free(W);
    return OQ_OK;
}

/* x zero point: a scalar; w zero point: a scalar or one per output channel. */
static oq_status conv_zp_check(const oq_node_ctx *ctx, const conv_geom *g, const oq_tensor *x,
                               const oq_tensor *xzp, const oq_tensor *w, const oq_tensor *wzp,
                               oq_error *err) {
    if (xzp && (xzp->count != 1 || xzp->dtype != x->dtype))
        return oq_err(err, OQ_EINVAL, "%s: x_zero_point must be one value of x's type", ctx->label);
    if (wzp && ((wzp->count != 1 && (wzp->rank != 1 || wzp->count != g->M)) ||
                wzp->dtype != w->dtype))
        return oq_err(err, OQ_EINVAL,
                      "%s: w_zero_point must be w's type, one value or one per output channel (%zu)",
                      ctx->label, g->M);
    return OQ_OK;
}

static oq_status convi_check(const oq_node_ctx *ctx, const oq_tensor *const *in, conv_geom *g,
                             oq_error *err) {
    const oq_tensor *x = in[0], *w = ctx->n_inputs > 1 ? in[1] : NULL;
    if (!x || !w)
        return oq_err(err, OQ_EINVAL, "%s: needs inputs x and w", ctx->label);
    if (!is_8bit(x->dtype) || !is_8bit(w->dtype))
        return oq_err(err, OQ_EINVAL, "%s: x and w must be int8 or uint8, got %s and %s",
                      ctx->label, oq_dtype_name(x->dtype), oq_dtype_name(w->dtype));
    oq_status s = conv_geometry(ctx, x, w, g, err);
    if (s != OQ_OK)
        return s;
    return conv_zp_check(ctx, g, x, ctx->n_inputs > 2 ? in[2] : NULL, w,
                         ctx->n_inputs > 3 ? in[3] : NULL, err);
}

static oq_status convi_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    conv_geom g;
    oq_status s = convi_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], OQ_DTYPE_INT32, in[0]->rank, g.ydims, err);
}

static oq_status convi_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    conv_geom g;
    oq_status s = convi_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    if (out[0].count == 0)
        return OQ_OK;
    const oq_tensor *xzp = ctx->n_inputs > 2 ? in[2] : NULL;
    return conv_int(ctx, &g, in[0], xzp ? qload(xzp, 0) : 0, in[1],
                    ctx->n_inputs > 3 ? in[3] : NULL, out[0].data, err);
}

/* -- QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [B] -- */

static oq_status qlc_check(const oq_node_ctx *ctx, const oq_tensor *const *in, conv_geom *g,
                           oq_error *err) {
    if (ctx->n_inputs < 8)
        return oq_err(err, OQ_EINVAL, "%s: needs at least 8 inputs, got %d", ctx->label,
                      ctx->n_inputs);
    for (int i = 0; i < 8; i++)
        if (!in[i])
            return oq_err(err, OQ_EINVAL, "%s: input %d is missing", ctx->label, i);
    const oq_tensor *x = in[0], *w = in[3];
    if (!is_8bit(x->dtype) || !is_8bit(w->dtype) || !is_8bit(in[7]->dtype))
        return oq_err(err, OQ_EINVAL, "%s: x, w and y_zero_point must be int8 or uint8",
                      ctx->label);
    if (in[1]->dtype != OQ_DTYPE_FLOAT || in[4]->dtype != OQ_DTYPE_FLOAT ||
        in[6]->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "%s: scales must be float", ctx->label);
    oq_status s = conv_geometry(ctx, x, w, g, err);
    if (s == OQ_OK)
        s = conv_zp_check(ctx, g, x, in[2], w, in[5], err);
    if (s != OQ_OK)
        return s;
    if (in[1]->count != 1 || in[6]->count != 1 || in[7]->count != 1)
        return oq_err(err, OQ_EINVAL, "%s: x_scale, y_scale and y_zero_point must be one value",
                      ctx->label);
    if (in[4]->count != 1 && (in[4]->rank != 1 || in[4]->count != g->M))
        return oq_err(err, OQ_EINVAL, "%s: w_scale must be one value or one per output channel",
                      ctx->label);
    const oq_tensor *bias = ctx->n_inputs > 8 ? in[8] : NULL;
    if (bias && (bias->dtype != OQ_DTYPE_INT32 || bias->rank != 1 || bias->count != g->M))
        return oq_err(err, OQ_EINVAL, "%s: B must be int32 with %zu values", ctx->label, g->M);
    return OQ_OK;
}

static oq_status qlc_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    conv_geom g;
    oq_status s = qlc_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[7]->dtype, in[0]->rank, g.ydims, err);
}

static oq_status qlc_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    conv_geom g;
    oq_status s = qlc_check(ctx, in, &g, err);
    if (s != OQ_OK)
        return s;
    oq_tensor *y = &out[0];
    if (y->count == 0)
        return OQ_OK;
    size_t bytes;
    if (!oq_mul_size(y->count, sizeof(int32_t), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: output too large", ctx->label);
    int32_t *acc = malloc(bytes);
    if (!acc)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    s = conv_int(ctx, &g, in[0], qload(in[2], 0), in[3], in[5], acc, err);
    if (s == OQ_OK) {
        const oq_tensor *bias = ctx->n_inputs > 8 ? in[8] : NULL;
        int32_t lo = 0, hi = 0, yzp = qload(in[7], 0);
        qrange(y->dtype, &lo, &hi);
        float xs = fload(in[1], 0), ys = fload(in[6], 0);
        for (size_t n = 0; n < g.N; n++)
            for (size_t m = 0; m < g.M; m++) {
                /* multiplier in float as x_scale * w_scale / y_scale */
                float mult = xs * fload(in[4], in[4]->count == 1 ? 0 : m) / ys;
                uint32_t bv = bias ? (uint32_t)((const int32_t *)bias->data)[m] : 0;
                size_t base = (n * g.M + m) * g.out_sp;
                for (size_t p = 0; p < g.out_sp; p++) {
                    int32_t a = (int32_t)((uint32_t)acc[base + p] + bv);
                    q_store(y, base + p, requant(a, mult, yzp, lo, hi));
                }
            }
    }
    free(acc);
    return s;
}

/* ---- the table ----------------------------------------------------------- */

static const oq_op ops[] = {
    {"", "QuantizeLinear", 10, 25, q_prepare, free_state, q_infer, q_run},
    {"", "DequantizeLinear", 10, 25, dq_prepare, free_state, dq_infer, dq_run},
    {"", "DynamicQuantizeLinear", 11, 25, NULL, NULL, dyn_infer, dyn_run},
    {"", "MatMulInteger", 10, 25, NULL, NULL, mmi_infer, mmi_run},
    {"", "QLinearMatMul", 10, 25, NULL, NULL, qlm_infer, qlm_run},
    {"", "ConvInteger", 10, 25, conv_prepare, free_state, convi_infer, convi_run},
    {"", "QLinearConv", 10, 25, conv_prepare, free_state, qlc_infer, qlc_run},
};

const oq_op_table oq_ops_quant = {ops, sizeof ops / sizeof ops[0]};
