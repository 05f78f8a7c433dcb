/* ops_reduce.c: the reduce operator family (see op.h for the contract):
 * Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax, TopK and CumSum.
 * float32 reductions over one contiguous block of axes (the common case:
 * last axis, LayerNorm's ReduceMean) and softmax over any axis have fast,
 * threaded paths; every other dtype/axes combination takes a general path. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "op.h"

/* ---- shared helpers ------------------------------------------------------ */

enum { PAR_GRAIN = 16384 }; /* elements of work worth a thread hand-off */

static size_t min_chunk_for(size_t work_per_item) {
    if (work_per_item == 0)
        work_per_item = 1;
    size_t c = PAR_GRAIN / work_per_item;
    return c ? c : 1;
}

static bool is_float_dtype(oq_dtype t) {
    return t == OQ_DTYPE_FLOAT || t == OQ_DTYPE_DOUBLE || t == OQ_DTYPE_FLOAT16 ||
           t == OQ_DTYPE_BFLOAT16;
}

static bool is_int_dtype(oq_dtype t) {
    switch (t) {
    case OQ_DTYPE_INT8: case OQ_DTYPE_UINT8: case OQ_DTYPE_INT16: case OQ_DTYPE_UINT16:
    case OQ_DTYPE_INT32: case OQ_DTYPE_UINT32: case OQ_DTYPE_INT64: case OQ_DTYPE_UINT64:
        return true;
    default:
        return false;
    }
}

static bool is_unsigned_dtype(oq_dtype t) {
    return t == OQ_DTYPE_UINT8 || t == OQ_DTYPE_UINT16 || t == OQ_DTYPE_UINT32 ||
           t == OQ_DTYPE_UINT64 || t == OQ_DTYPE_BOOL;
}

/* Stores v into element i of a float-family tensor. */
static void store_f64(oq_tensor *t, size_t i, double v) {
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT: ((float *)t->data)[i] = (float)v; break;
    case OQ_DTYPE_DOUBLE: ((double *)t->data)[i] = v; break;
    case OQ_DTYPE_FLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_half((float)v); break;
    case OQ_DTYPE_BFLOAT16: ((uint16_t *)t->data)[i] = oq_float_to_bf16((float)v); break;
    default: break;
    }
}

/* Stores the low bits of v into element i of an integer or bool tensor
 * (two's complement wrap, as integer arithmetic in the type would). */
static void store_bits(oq_tensor *t, size_t i, uint64_t v) {
    switch (t->dtype) {
    case OQ_DTYPE_INT8: case OQ_DTYPE_UINT8: case OQ_DTYPE_BOOL:
        ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    case OQ_DTYPE_INT16: case OQ_DTYPE_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
    case OQ_DTYPE_INT32: case OQ_DTYPE_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
    case OQ_DTYPE_INT64: case OQ_DTYPE_UINT64: ((uint64_t *)t->data)[i] = v; break;
    default: break;
    }
}

/* A double converted to an integer type truncates toward zero (numpy's
 * astype, which the ONNX reference uses); NaN and out-of-range become 0 /
 * the nearest bound instead of undefined behaviour. */
static uint64_t f64_to_bits(double v, bool is_unsigned) {
    if (isnan(v))
        return 0;
    if (is_unsigned) {
        if (v <= 0)
            return 0;
        if (v >= 18446744073709551615.0)
            return UINT64_MAX;
        return (uint64_t)v;
    }
    if (v <= -9223372036854775808.0)
        return (uint64_t)INT64_MIN;
    if (v >= 9223372036854775807.0)
        return (uint64_t)INT64_MAX;
    return (uint64_t)(int64_t)v;
}

/* An order-preserving unsigned key: key(a) < key(b) iff a < b, for any
 * numeric dtype. -0.0 equals +0.0; NaN sorts above +inf (numpy's order). */
static uint64_t order_key(const oq_tensor *t, size_t i) {
    if (t->dtype == OQ_DTYPE_FLOAT) { /* the common case, without the double round trip */
        float f = ((const float *)t->data)[i] + 0.0f; /* -0.0 + 0.0 = +0.0 */
        uint32_t b;
        memcpy(&b, &f, sizeof b);
        if (isnan(f))
            b = 0x7fc00000u;
        return (b >> 31) ? (uint64_t)~b & 0xffffffffu : (uint64_t)(b | 0x80000000u);
    }
    if (is_float_dtype(t->dtype)) {
        double d = oq_tensor_get_f64(t, i);
        if (d == 0)
            d = 0; /* folds -0.0 into +0.0 */
        if (isnan(d))
            d = NAN;
        uint64_t b;
        memcpy(&b, &d, sizeof b);
        if (isnan(d))
            b &= ~(1ull << 63);
        return (b >> 63) ? ~b : b | (1ull << 63);
    }
    uint64_t v = (uint64_t)oq_tensor_get_i64(t, i);
    return is_unsigned_dtype(t->dtype) ? v : v ^ (1ull << 63);
}

/* Hot loops get an x86-64-v3 (AVX2 + FMA) clone picked at load time, with
 * the baseline build kept for other CPUs (gcc function multiversioning). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OQ_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OQ_CLONES
#endif

/* exp(x) for x <= 0 (every caller passes x - max), written so loops over
 * it vectorise: 2^n * p(r) with r = x - n ln2 in [-ln2/2, ln2/2] and a
 * degree-6 Taylor polynomial (relative error below 3e-7 over [-87.3, 0]).
 * Below -87.33 the result (under 2^-126) flushes to 0; NaN stays NaN.
 * Range checks are integer masks on the bits: float compares against
 * constants stop gcc's if-conversion under the default -ftrapping-math. */
static inline float exp_nonpos(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t bx;
    memcpy(&bx, &x, sizeof bx);
    int32_t ax = (int32_t)(bx & 0x7fffffffu);
    uint32_t tiny = 0u - (uint32_t)(ax > 0x42aea8f6); /* |x| > 87.33 */
    uint32_t nan = 0u - (uint32_t)(ax > 0x7f800000);
    uint32_t cb = (bx & ~tiny) | (0xc2aea8f6u & tiny);
    float xc;
    memcpy(&xc, &cb, sizeof xc);
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic; /* round(x / ln2), in [-126, 0] */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t sb = (uint32_t)((int32_t)n + 127) << 23;
    float sc;
    memcpy(&sc, &sb, sizeof sc);
    float res = p * sc;
    uint32_t rb;
    memcpy(&rb, &res, sizeof rb);
    rb &= ~tiny;
    rb = (rb & ~nan) | ((bx | 0x00400000u) & nan);
    memcpy(&res, &rb, sizeof res);
    return res;
}

/* y[i] = exp(x[i] - m) for m >= every x[i]; returns the sum of y. */
OQ_CLONES static float exp_shift_sum(const float *restrict x, float m, float *restrict y,
                                     size_t n) {
    enum { L = 16 };
    for (size_t i = 0; i < n; i++)
        y[i] = exp_nonpos(x[i] - m);
    float acc[L] = {0};
    size_t i = 0;
    for (; i + L <= n; i += L)
        for (int j = 0; j < L; j++)
            acc[j] += y[i + j];
    float s = 0;
    for (int j = 0; j < L; j++)
        s += acc[j];
    for (; i < n; i++)
        s += y[i];
    return s;
}

/* Column form: y[i] = exp(x[i] - m[i]); s[i] += y[i]. */
OQ_CLONES static void exp_shift_cols(const float *restrict x, const float *restrict m,
                                     float *restrict y, float *restrict s, size_t w) {
    for (size_t i = 0; i < w; i++) {
        float e = exp_nonpos(x[i] - m[i]);
        y[i] = e;
        s[i] += e;
    }
}

/* Max (is_max) or min of x[0..n): NaN if any element is NaN (numpy's
 * max/min); -inf / +inf for n == 0. Compared as order-preserving int32 keys
 * of the bits, with NaN tracked apart: about 3x faster than a NaN-aware
 * float select, and it vectorises on the baseline ISA too. */
OQ_CLONES static float lane_extreme(const float *restrict x, size_t n, bool is_max) {
    enum { L = 16 };
    int32_t acc[L];
    uint32_t nan[L];
    for (int j = 0; j < L; j++) {
        acc[j] = is_max ? INT32_MIN : INT32_MAX;
        nan[j] = 0;
    }
    size_t i = 0;
    for (; i + L <= n; i += L)
        for (int j = 0; j < L; j++) {
            int32_t b;
            memcpy(&b, &x[i + j], sizeof b);
            int32_t k = b ^ ((b >> 31) & 0x7fffffff); /* float order as signed int */
            acc[j] = (is_max ? k > acc[j] : k < acc[j]) ? k : acc[j];
            nan[j] |= (uint32_t)((b & 0x7fffffff) > 0x7f800000);
        }
    int32_t m = acc[0];
    uint32_t any_nan = 0;
    for (int j = 0; j < L; j++) {
        m = (is_max ? acc[j] > m : acc[j] < m) ? acc[j] : m;
        any_nan |= nan[j];
    }
    for (; i < n; i++) {
        int32_t b;
        memcpy(&b, &x[i], sizeof b);
        int32_t k = b ^ ((b >> 31) & 0x7fffffff);
        m = (is_max ? k > m : k < m) ? k : m;
        any_nan |= (uint32_t)((b & 0x7fffffff) > 0x7f800000);
    }
    if (any_nan)
        return NAN;
    if (m == (is_max ? INT32_MIN : INT32_MAX))
        return is_max ? -INFINITY : INFINITY; /* n == 0 */
    int32_t b = m ^ ((m >> 31) & 0x7fffffff);
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static float lane_max(const float *restrict x, size_t n) {
    return lane_extreme(x, n, true);
}

static float lane_min(const float *restrict x, size_t n) {
    return lane_extreme(x, n, false);
}

/* Splits t's dims around [a0, a1) into outer * mid * inner. */
static void split_dims(const oq_tensor *t, int a0, int a1, size_t *outer, size_t *mid,
                       size_t *inner) {
    size_t o = 1, m = 1, in = 1;
    for (int d = 0; d < t->rank; d++) {
        size_t n = (size_t)t->dims[d];
        if (d < a0)
            o *= n;
        else if (d < a1)
            m *= n;
        else
            in *= n;
    }
    *outer = o;
    *mid = m;
    *inner = in;
}

/* ======================================================================== */
/* Reduce*                                                                  */
/* ======================================================================== */

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_LOGSUM, R_LSE, R_SUMSQ } rkind;

typedef struct {
    rkind kind;
    bool keepdims;
    bool axes_input; /* axes come from input 1 (ReduceSum 13+, the others 18+) */
    bool noop_empty; /* noop_with_empty_axes */
    int n_attr_axes;
    int64_t attr_axes[OQ_MAX_RANK];
} reduce_state;

static oq_status reduce_prepare(oq_node_ctx *ctx, rkind kind, oq_error *err) {
    reduce_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    st->kind = kind;
    int64_t keep, noop = 0;
    oq_status s = OQ_ATTR_INT(ctx, "keepdims", 1, &keep, err);
    /* ONNX ReduceSum-13 and the other Reduce*-18 take axes as an input and
     * add noop_with_empty_axes; before that axes is an attribute. */
    st->axes_input = ctx->opset >= (kind == R_SUM ? 13 : 18);
    if (s == OQ_OK && st->axes_input)
        s = OQ_ATTR_INT(ctx, "noop_with_empty_axes", 0, &noop, err);
    if (s == OQ_OK && !st->axes_input) {
        const int64_t *axes = NULL;
        size_t n = 0;
        s = oq_node_attr_ints(ctx->node, "axes", &axes, &n, err);
        if (s == OQ_OK && n > OQ_MAX_RANK)
            s = oq_err(err, OQ_EINVAL, "%s: %zu axes given, more than any supported rank",
                       ctx->label, n);
        if (s == OQ_OK) {
            st->n_attr_axes = (int)n;
            if (n)
                memcpy(st->attr_axes, axes, n * sizeof *axes);
        }
    }
    if (s != OQ_OK) {
        free(st);
        return s;
    }
    st->keepdims = keep != 0;
    st->noop_empty = noop != 0;
    ctx->state = st;
    return OQ_OK;
}

#define REDUCE_PREP(fn, kind)                                  \
    static oq_status fn(oq_node_ctx *ctx, oq_error *err) {     \
        return reduce_prepare(ctx, kind, err);                 \
    }
REDUCE_PREP(prep_sum, R_SUM)
REDUCE_PREP(prep_mean, R_MEAN)
REDUCE_PREP(prep_max, R_MAX)
REDUCE_PREP(prep_min, R_MIN)
REDUCE_PREP(prep_prod, R_PROD)
REDUCE_PREP(prep_l1, R_L1)
REDUCE_PREP(prep_l2, R_L2)
REDUCE_PREP(prep_logsum, R_LOGSUM)
REDUCE_PREP(prep_lse, R_LSE)
REDUCE_PREP(prep_sumsq, R_SUMSQ)

static void free_state(void *state) {
    free(state);
}

static bool reduce_dtype_ok(const reduce_state *st, int opset, oq_dtype t) {
    if (is_float_dtype(t) || is_int_dtype(t))
        return true;
    /* ReduceMax/ReduceMin-20 accept bool */
    return t == OQ_DTYPE_BOOL && opset >= 20 && (st->kind == R_MAX || st->kind == R_MIN);
}

/* Which axes of x are reduced; *noop when the node is the identity
 * (empty axes with noop_with_empty_axes). */
static oq_status reduce_axes(const oq_node_ctx *ctx, const reduce_state *st, const oq_tensor *x,
                             const oq_tensor *axes_t, bool mask[OQ_MAX_RANK], bool *noop,
                             oq_error *err) {
    int64_t axes[OQ_MAX_RANK];
    int n = 0;
    if (st->axes_input) {
        if (axes_t && axes_t->count) {
            if (axes_t->dtype != OQ_DTYPE_INT64 && axes_t->dtype != OQ_DTYPE_INT32)
                return oq_err(err, OQ_EINVAL, "%s: axes must be int64, got %s", ctx->label,
                              oq_dtype_name(axes_t->dtype));
            if (axes_t->rank > 1)
                return oq_err(err, OQ_EINVAL, "%s: axes must be 1-D, got rank %d", ctx->label,
                              axes_t->rank);
            if (axes_t->count > (size_t)x->rank)
                return oq_err(err, OQ_EINVAL, "%s: %zu axes for a rank-%d input", ctx->label,
                              axes_t->count, x->rank);
            if (!axes_t->data)
                return oq_err(err, OQ_EINTERNAL, "%s: axes has no data", ctx->label);
            n = (int)axes_t->count;
            for (int i = 0; i < n; i++)
                axes[i] = oq_tensor_get_i64(axes_t, (size_t)i);
        }
    } else {
        n = st->n_attr_axes;
        memcpy(axes, st->attr_axes, (size_t)n * sizeof *axes);
    }
    *noop = false;
    for (int d = 0; d < OQ_MAX_RANK; d++)
        mask[d] = false;
    if (n == 0) {
        /* empty axes: reduce everything, unless noop_with_empty_axes (ONNX 13/18) */
        if (st->noop_empty)
            *noop = true;
        else
            for (int d = 0; d < x->rank; d++)
                mask[d] = true;
        return OQ_OK;
    }
    for (int i = 0; i < n; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + x->rank : axes[i];
        if (a < 0 || a >= x->rank)
            return oq_err(err, OQ_EINVAL, "%s: axis %lld is out of range for rank %d",
                          ctx->label, (long long)axes[i], x->rank);
        if (mask[a])
            return oq_err(err, OQ_EINVAL, "%s: axis %lld is repeated", ctx->label,
                          (long long)axes[i]);
        mask[a] = true;
    }
    return OQ_OK;
}

static oq_status reduce_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    const reduce_state *st = ctx->state;
    const oq_tensor *x = in[0];
    if (!x)
        return oq_err(err, OQ_EINVAL, "%s: missing input data", ctx->label);
    if (!reduce_dtype_ok(st, ctx->opset, x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: element type %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    bool mask[OQ_MAX_RANK], noop;
    oq_status s = reduce_axes(ctx, st, x, ctx->n_inputs > 1 ? in[1] : NULL, mask, &noop, err);
    if (s != OQ_OK)
        return s;
    if (noop)
        return oq_out_shape(&out[0], x->dtype, x->rank, x->dims, err);
    int64_t dims[OQ_MAX_RANK];
    int r = 0;
    for (int d = 0; d < x->rank; d++) {
        if (!mask[d])
            dims[r++] = x->dims[d];
        else if (st->keepdims)
            dims[r++] = 1;
    }
    return oq_out_shape(&out[0], x->dtype, r, dims, err);
}

/* -- float32 reduction of one contiguous block: x viewed as [O, R, I] ----- */

typedef struct {
    rkind kind;
    const float *x;
    float *y;
    size_t O, R, I;
    size_t nblk; /* I split into blocks of IB for the I > 1 path */
} ori_job;

enum { IB = 256 };

static float row_reduce(rkind kind, const float *restrict x, size_t n) {
    enum { L = 16 };
    float acc[L];
    size_t i = 0;
    float s;
    switch (kind) {
    case R_SUM: case R_MEAN: case R_L1: case R_SUMSQ: case R_L2: case R_LOGSUM:
        for (int j = 0; j < L; j++)
            acc[j] = 0;
        if (kind == R_L1) {
            for (; i + L <= n; i += L)
                for (int j = 0; j < L; j++)
                    acc[j] += fabsf(x[i + j]);
        } else if (kind == R_SUMSQ || kind == R_L2) {
            for (; i + L <= n; i += L)
                for (int j = 0; j < L; j++)
                    acc[j] += x[i + j] * x[i + j];
        } else {
            for (; i + L <= n; i += L)
                for (int j = 0; j < L; j++)
                    acc[j] += x[i + j];
        }
        s = 0;
        for (int j = 0; j < L; j++)
            s += acc[j];
        for (; i < n; i++)
            s += kind == R_L1 ? fabsf(x[i]) : (kind == R_SUMSQ || kind == R_L2) ? x[i] * x[i] : x[i];
        switch (kind) {
        case R_MEAN: return s / (float)n; /* n == 0 gives NaN, the mean of nothing */
        case R_L2: return sqrtf(s);
        case R_LOGSUM: return logf(s);
        default: return s;
        }
    case R_MAX:
        return lane_max(x, n);
    case R_MIN:
        return lane_min(x, n);
    case R_PROD:
        s = 1;
        for (; i < n; i++)
            s *= x[i];
        return s;
    case R_LSE: {
        float m = lane_max(x, n);
        if (isinf(m) || isnan(m))
            return m; /* empty or all -inf gives -inf; any +inf gives +inf */
        float e[256];
        s = 0;
        for (; i < n; i += 256) {
            size_t w = n - i < 256 ? n - i : 256;
            s += exp_shift_sum(x + i, m, e, w);
        }
        return m + logf(s);
    }
    }
    return 0;
}

static void ori_rows(void *arg, size_t b, size_t e) {
    const ori_job *j = arg;
    for (size_t o = b; o < e; o++)
        j->y[o] = row_reduce(j->kind, j->x + o * j->R, j->R);
}

/* Reduces the middle axis of [O, R, I] for one (o, block of I) task. */
static void ori_cols(void *arg, size_t b, size_t e) {
    const ori_job *j = arg;
    size_t R = j->R, I = j->I;
    for (size_t task = b; task < e; task++) {
        size_t o = task / j->nblk, i0 = (task % j->nblk) * IB;
        size_t w = I - i0 < IB ? I - i0 : IB;
        const float *restrict x = j->x + o * R * I + i0;
        float *restrict y = j->y + o * I + i0;
        float mx[IB];
        switch (j->kind) {
        case R_MAX: case R_MIN: case R_LSE: {
            bool mx_kind = j->kind != R_MIN;
            float *restrict acc = j->kind == R_LSE ? mx : y;
            for (size_t i = 0; i < w; i++)
                acc[i] = mx_kind ? -INFINITY : INFINITY;
            for (size_t r = 0; r < R; r++) {
                const float *restrict xr = x + r * I;
                if (mx_kind)
                    for (size_t i = 0; i < w; i++)
                        acc[i] = xr[i] > acc[i] || isnan(xr[i]) ? xr[i] : acc[i];
                else
                    for (size_t i = 0; i < w; i++)
                        acc[i] = xr[i] < acc[i] || isnan(xr[i]) ? xr[i] : acc[i];
            }
            if (j->kind != R_LSE)
                break;
            float ex[IB];
            for (size_t i = 0; i < w; i++)
                y[i] = 0;
            for (size_t r = 0; r < R; r++)
                exp_shift_cols(x + r * I, mx, ex, y, w);
            for (size_t i = 0; i < w; i++)
                y[i] = isinf(mx[i]) || isnan(mx[i]) ? mx[i] : mx[i] + logf(y[i]);
            break;
        }
        case R_PROD:
            for (size_t i = 0; i < w; i++)
                y[i] = 1;
            for (size_t r = 0; r < R; r++)
                for (size_t i = 0; i < w; i++)
                    y[i] *= x[r * I + i];
            break;
        default:
            for (size_t i = 0; i < w; i++)
                y[i] = 0;
            for (size_t r = 0; r < R; r++) {
                const float *restrict xr = x + r * I;
                if (j->kind == R_L1)
                    for (size_t i = 0; i < w; i++)
                        y[i] += fabsf(xr[i]);
                else if (j->kind == R_SUMSQ || j->kind == R_L2)
                    for (size_t i = 0; i < w; i++)
                        y[i] += xr[i] * xr[i];
                else
                    for (size_t i = 0; i < w; i++)
                        y[i] += xr[i];
            }
            if (j->kind == R_MEAN)
                for (size_t i = 0; i < w; i++)
                    y[i] /= (float)R;
            else if (j->kind == R_L2)
                for (size_t i = 0; i < w; i++)
                    y[i] = sqrtf(y[i]);
            else if (j->kind == R_LOGSUM)
                for (size_t i = 0; i < w; i++)
                    y[i] = logf(y[i]);
            break;
        }
    }
}

/* -- general path: any dtype, any axes ------------------------------------ */

typedef struct {
    rkind kind;
    const oq_tensor *x;
    oq_tensor *y;
    /* coalesced groups of axes */
    int nk, nr;
    size_t kdim[OQ_MAX_RANK], kstride[OQ_MAX_RANK]; /* kept groups, outermost first */
    size_t rdim[OQ_MAX_RANK], rstride[OQ_MAX_RANK]; /* reduced groups */
    size_t rcount;
} gen_job;

/* Walks the reduced elements for output j: calls body with each input offset. */
#define FOR_REDUCED(j, base, off, body)                                      \
    do {                                                                     \
        size_t idx_[OQ_MAX_RANK] = {0};                                      \
        size_t off = (base);                                                 \
        for (size_t n_ = 0; n_ < (j)->rcount; n_++) {                        \
            body;                                                            \
            for (int g_ = (j)->nr - 1; g_ >= 0; g_--) {                      \
                off += (j)->rstride[g_];                                     \
                if (++idx_[g_] < (j)->rdim[g_])                              \
                    break;                                                   \
                off -= (j)->rstride[g_] * (j)->rdim[g_];                     \
                idx_[g_] = 0;                                                \
            }                                                                \
        }                                                                    \
    } while (0)

static size_t gen_base(const gen_job *j, size_t out) {
    size_t base = 0;
    for (int g = j->nk - 1; g >= 0; g--) {
        base += (out % j->kdim[g]) * j->kstride[g];
        out /= j->kdim[g];
    }
    return base;
}

static double gen_reduce_f(const gen_job *j, size_t base) {
    const oq_tensor *x = j->x;
    double acc;
    switch (j->kind) {
    case R_MAX:
        acc = -INFINITY;
        FOR_REDUCED(j, base, off, {
            double v = oq_tensor_get_f64(x, off);
            acc = v > acc || isnan(v) ? v : acc;
        });
        return acc;
    case R_MIN:
        acc = INFINITY;
        FOR_REDUCED(j, base, off, {
            double v = oq_tensor_get_f64(x, off);
            acc = v < acc || isnan(v) ? v : acc;
        });
        return acc;
    case R_PROD:
        acc = 1;
        FOR_REDUCED(j, base, off, acc *= oq_tensor_get_f64(x, off));
        return acc;
    case R_LSE: {
        double m = -INFINITY;
        FOR_REDUCED(j, base, off, {
            double v = oq_tensor_get_f64(x, off);
            m = v > m || isnan(v) ? v : m;
        });
        if (isinf(m) || isnan(m))
            return m;
        acc = 0;
        FOR_REDUCED(j, base, off, acc += exp(oq_tensor_get_f64(x, off) - m));
        return m + log(acc);
    }
    default:
        acc = 0;
        FOR_REDUCED(j, base, off, {
            double v = oq_tensor_get_f64(x, off);
            acc += j->kind == R_L1 ? fabs(v) : (j->kind == R_SUMSQ || j->kind == R_L2) ? v * v : v;
        });
        if (j->kind == R_MEAN)
            return acc / (double)j->rcount;
        if (j->kind == R_L2)
            return sqrt(acc);
        if (j->kind == R_LOGSUM)
            return log(acc);
        return acc;
    }
}

/* Integer reductions: exact (wrapping) for Sum/Prod/Max/Min/L1/SumSquare;
 * Mean, L2, LogSum and LogSumExp computed in double and truncated, as the
 * reference implementation's float result cast back to the type is. */
static void gen_reduce_i(const gen_job *j, size_t base, size_t out) {
    const oq_tensor *x = j->x;
    bool uns = is_unsigned_dtype(x->dtype);
    uint64_t acc;
    switch (j->kind) {
    case R_MAX: case R_MIN: {
        bool mx = j->kind == R_MAX;
        /* the empty set gives the type's lowest (Max) or highest (Min) value (ONNX 18) */
        uint64_t lo, hi;
        switch (x->dtype) {
        case OQ_DTYPE_BOOL: lo = 0; hi = 1; break;
        case OQ_DTYPE_UINT8: lo = 0; hi = UINT8_MAX; break;
        case OQ_DTYPE_UINT16: lo = 0; hi = UINT16_MAX; break;
        case OQ_DTYPE_UINT32: lo = 0; hi = UINT32_MAX; break;
        case OQ_DTYPE_UINT64: lo = 0; hi = UINT64_MAX; break;
        case OQ_DTYPE_INT8: lo = (uint64_t)(int64_t)INT8_MIN; hi = INT8_MAX; break;
        case OQ_DTYPE_INT16: lo = (uint64_t)(int64_t)INT16_MIN; hi = INT16_MAX; break;
        case OQ_DTYPE_INT32: lo = (uint64_t)(int64_t)INT32_MIN; hi = INT32_MAX; break;
        default: lo = (uint64_t)INT64_MIN; hi = INT64_MAX; break;
        }
        acc = mx ? lo : hi;
        FOR_REDUCED(j, base, off, {
            uint64_t v = (uint64_t)oq_tensor_get_i64(x, off);
            bool gt = uns ? v > acc : (int64_t)v > (int64_t)acc;
            bool lt = uns ? v < acc : (int64_t)v < (int64_t)acc;
            if (mx ? gt : lt)
                acc = v;
        });
        break;
    }
    case R_PROD:
        acc = 1;
        FOR_REDUCED(j, base, off, acc *= (uint64_t)oq_tensor_get_i64(x, off));
        break;
    case R_SUM: case R_L1: case R_SUMSQ:
        acc = 0;
        FOR_REDUCED(j, base, off, {
            uint64_t v = (uint64_t)oq_tensor_get_i64(x, off);
            if (j->kind == R_L1 && !uns && (int64_t)v < 0)
                v = 0 - v;
            acc += j->kind == R_SUMSQ ? v * v : v;
        });
        break;
    default: {
        double d = gen_reduce_f(j, base);
        acc = f64_to_bits(d, uns);
        break;
    }
    }
    store_bits(j->y, out, acc);
}

static void gen_worker(void *arg, size_t b, size_t e) {
    const gen_job *j = arg;
    bool flt = is_float_dtype(j->x->dtype);
    for (size_t o = b; o < e; o++) {
        size_t base = gen_base(j, o);
        if (flt)
            store_f64(j->y, o, gen_reduce_f(j, base));
        else
            gen_reduce_i(j, base, o);
    }
}

static oq_status reduce_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    const reduce_state *st = ctx->state;
    const oq_tensor *x = in[0];
    oq_tensor *y = &out[0];
    bool mask[OQ_MAX_RANK], noop;
    oq_status s = reduce_axes(ctx, st, x, ctx->n_inputs > 1 ? in[1] : NULL, mask, &noop, err);
    if (s != OQ_OK)
        return s;
    if (noop) {
        if (x->nbytes)
            memcpy(y->data, x->data, x->nbytes);
        return OQ_OK;
    }
    if (y->count == 0)
        return OQ_OK;
    /* Coalesce adjacent axes of the same kind, dropping size-1 axes (an
     * empty reduced axis stays: it makes the reduction empty). */
    gen_job j = {.kind = st->kind, .x = x, .y = y, .rcount = 1};
    size_t gdim[OQ_MAX_RANK], gstride[OQ_MAX_RANK];
    bool gred[OQ_MAX_RANK];
    int ng = 0;
    size_t stride = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        size_t n = (size_t)x->dims[d];
        if (n != 1) {
            if (ng && gred[ng - 1] == mask[d] && gstride[ng - 1] * gdim[ng - 1] == stride) {
                gdim[ng - 1] *= n;
            } else {
                gdim[ng] = n;
                gstride[ng] = stride;
                gred[ng] = mask[d];
                ng++;
            }
        }
        stride *= n;
    }
    for (int g = ng - 1; g >= 0; g--) { /* groups were collected innermost first */
        if (gred[g]) {
            j.rdim[j.nr] = gdim[g];
            j.rstride[j.nr++] = gstride[g];
            j.rcount *= gdim[g];
        } else {
            j.kdim[j.nk] = gdim[g];
            j.kstride[j.nk++] = gstride[g];
        }
    }
    /* float32 with at most one reduced group: the [O, R, I] fast paths (an
     * empty reduction goes the general way, which never touches x) */
    if (x->dtype == OQ_DTYPE_FLOAT && j.nr <= 1 && j.rcount > 0) {
        ori_job oj = {.kind = st->kind, .x = x->data, .y = y->data, .O = 1, .R = j.rcount, .I = 1};
        int rpos = ng; /* position of the reduced group in outermost-first order */
        for (int g = ng - 1, p = 0; g >= 0; g--, p++)
            if (gred[g])
                rpos = p;
        for (int g = ng - 1, p = 0; g >= 0; g--, p++) {
            if (gred[g])
                continue;
            if (p < rpos)
                oj.O *= gdim[g];
            else
                oj.I *= gdim[g];
        }
        if (oj.I == 1) {
            oq_parallel_for(ctx->pool, oj.O, min_chunk_for(oj.R), ori_rows, &oj);
        } else {
            oj.nblk = (oj.I + IB - 1) / IB;
            size_t per = oj.R * (oj.I < IB ? oj.I : IB);
            oq_parallel_for(ctx->pool, oj.O * oj.nblk, min_chunk_for(per), ori_cols, &oj);
        }
        return OQ_OK;
    }
    oq_parallel_for(ctx->pool, y->count, min_chunk_for(j.rcount), gen_worker, &j);
    return OQ_OK;
}

/* ======================================================================== */
/* ArgMax / ArgMin                                                          */
/* ======================================================================== */

typedef struct {
    bool is_max;
    int64_t axis;
    bool keepdims;
    bool last; /* select_last_index (ONNX 12) */
} arg_state;

static oq_status arg_prepare(oq_node_ctx *ctx, bool is_max, oq_error *err) {
    int64_t axis, keep, last = 0;
    oq_status s = OQ_ATTR_INT(ctx, "axis", 0, &axis, err);
    if (s == OQ_OK)
        s = OQ_ATTR_INT(ctx, "keepdims", 1, &keep, err);
    if (s == OQ_OK && ctx->opset >= 12)
        s = OQ_ATTR_INT(ctx, "select_last_index", 0, &last, err);
    if (s != OQ_OK)
        return s;
    arg_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    *st = (arg_state){is_max, axis, keep != 0, last != 0};
    ctx->state = st;
    return OQ_OK;
}

static oq_status prep_argmax(oq_node_ctx *ctx, oq_error *err) {
    return arg_prepare(ctx, true, err);
}
static oq_status prep_argmin(oq_node_ctx *ctx, oq_error *err) {
    return arg_prepare(ctx, false, err);
}

static oq_status arg_axis(const oq_node_ctx *ctx, const arg_state *st, const oq_tensor *x,
                          int *axis, oq_error *err) {
    if (!x)
        return oq_err(err, OQ_EINVAL, "%s: missing input data", ctx->label);
    if (!is_float_dtype(x->dtype) && !is_int_dtype(x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: element type %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: input must have rank >= 1", ctx->label);
    oq_status s = oq_norm_axis(ctx, st->axis, x->rank, axis, err);
    if (s == OQ_OK && x->dims[*axis] == 0)
        s = oq_err(err, OQ_EINVAL, "%s: cannot take the arg%s of an empty axis", ctx->label,
                   st->is_max ? "max" : "min");
    return s;
}

static oq_status arg_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    const arg_state *st = ctx->state;
    int axis;
    oq_status s = arg_axis(ctx, st, in[0], &axis, err);
    if (s != OQ_OK)
        return s;
    int64_t dims[OQ_MAX_RANK];
    int r = 0;
    for (int d = 0; d < in[0]->rank; d++) {
        if (d != axis)
            dims[r++] = in[0]->dims[d];
        else if (st->keepdims)
            dims[r++] = 1;
    }
    return oq_out_shape(&out[0], OQ_DTYPE_INT64, r, dims, err);
}

typedef struct {
    const arg_state *st;
    const oq_tensor *x;
    int64_t *y;
    size_t R, I;
} arg_job;

static void arg_worker(void *arg, size_t b, size_t e) {
    const arg_job *j = arg;
    bool mx = j->st->is_max, last = j->st->last;
    for (size_t t = b; t < e; t++) {
        size_t o = t / j->I, i = t % j->I;
        size_t base = o * j->R * j->I + i;
        uint64_t best = order_key(j->x, base);
        size_t bi = 0;
        for (size_t r = 1; r < j->R; r++) {
            uint64_t k = order_key(j->x, base + r * j->I);
            bool better = mx ? (last ? k >= best : k > best) : (last ? k <= best : k < best);
            if (better) {
                best = k;
                bi = r;
            }
        }
        j->y[t] = (int64_t)bi;
    }
}

static oq_status arg_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    const arg_state *st = ctx->state;
    int axis;
    oq_status s = arg_axis(ctx, st, in[0], &axis, err);
    if (s != OQ_OK)
        return s;
    arg_job j = {.st = st, .x = in[0], .y = out[0].data};
    size_t O;
    split_dims(in[0], axis, axis + 1, &O, &j.R, &j.I);
    oq_parallel_for(ctx->pool, O * j.I, min_chunk_for(j.R * 4), arg_worker, &j);
    return OQ_OK;
}

/* ======================================================================== */
/* Softmax / LogSoftmax / Hardmax                                           */
/* ======================================================================== */

typedef enum { SM_SOFTMAX, SM_LOGSOFTMAX, SM_HARDMAX } smkind;

typedef struct {
    smkind kind;
    int64_t axis;
} sm_state;

static oq_status sm_prepare(oq_node_ctx *ctx, smkind kind, oq_error *err) {
    int64_t axis;
    /* ONNX 13 made the axis a single axis with default -1; before, the input
     * is coerced to 2-D at axis (default 1). */
    oq_status s = OQ_ATTR_INT(ctx, "axis", ctx->opset >= 13 ? -1 : 1, &axis, err);
    if (s != OQ_OK)
        return s;
    sm_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    st->kind = kind;
    st->axis = axis;
    ctx->state = st;
    return OQ_OK;
}

static oq_status prep_softmax(oq_node_ctx *ctx, oq_error *err) {
    return sm_prepare(ctx, SM_SOFTMAX, err);
}
static oq_status prep_logsoftmax(oq_node_ctx *ctx, oq_error *err) {
    return sm_prepare(ctx, SM_LOGSOFTMAX, err);
}
static oq_status prep_hardmax(oq_node_ctx *ctx, oq_error *err) {
    return sm_prepare(ctx, SM_HARDMAX, err);
}

/* The [O, R, I] view the op works on. */
static oq_status sm_layout(const oq_node_ctx *ctx, const sm_state *st, const oq_tensor *x,
                           size_t *O, size_t *R, size_t *I, oq_error *err) {
    if (!x)
        return oq_err(err, OQ_EINVAL, "%s: missing input", ctx->label);
    if (!is_float_dtype(x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: element type %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    if (ctx->opset >= 13) {
        if (x->rank == 0)
            return oq_err(err, OQ_EINVAL, "%s: input must have rank >= 1", ctx->label);
        int a;
        oq_status s = oq_norm_axis(ctx, st->axis, x->rank, &a, err);
        if (s != OQ_OK)
            return s;
        split_dims(x, a, a + 1, O, R, I);
        return OQ_OK;
    }
    /* coerced to [prod(dims[:axis]), prod(dims[axis:])], axis in [-r, r-1] */
    int64_t a = st->axis < 0 ? st->axis + x->rank : st->axis;
    if (a < 0 || a >= x->rank)
        return oq_err(err, OQ_EINVAL, "%s: axis %lld is out of range for rank %d", ctx->label,
                      (long long)st->axis, x->rank);
    split_dims(x, (int)a, x->rank, O, R, I);
    return OQ_OK;
}

static oq_status sm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    size_t O = 0, R = 0, I = 0;
    oq_status s = sm_layout(ctx, ctx->state, in[0], &O, &R, &I, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

typedef struct {
    smkind kind;
    const float *x;
    float *y;
    size_t R, I, nblk;
} sm_job;

enum { SB = 64 }; /* columns per block of the strided (I > 1) path */

static void sm_row(smkind kind, const float *restrict x, float *restrict y, size_t n) {
    if (kind == SM_HARDMAX) {
        float m = -INFINITY;
        size_t arg = 0;
        for (size_t i = 0; i < n; i++)
            if (x[i] > m) {
                m = x[i];
                arg = i;
            }
        for (size_t i = 0; i < n; i++)
            y[i] = 0;
        if (n)
            y[arg] = 1;
        return;
    }
    float m = lane_max(x, n);
    if (isinf(m)) {
        /* a +inf (or an all -inf row): the plain formula gives the limits */
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += exp((double)x[i] - (double)m);
        for (size_t i = 0; i < n; i++) {
            double e = (double)x[i] - (double)m;
            y[i] = kind == SM_SOFTMAX ? (float)(exp(e) / s) : (float)(e - log(s));
        }
        return;
    }
    float s = exp_shift_sum(x, m, y, n);
    if (kind == SM_SOFTMAX) {
        float inv = 1.0f / s;
        for (size_t i = 0; i < n; i++)
            y[i] *= inv;
    } else {
        /* (x - max) - log(sum): subtracting max first avoids cancellation */
        float ls = logf(s);
        for (size_t i = 0; i < n; i++)
            y[i] = (x[i] - m) - ls;
    }
}

static void sm_rows(void *arg, size_t b, size_t e) {
    const sm_job *j = arg;
    for (size_t o = b; o < e; o++)
        sm_row(j->kind, j->x + o * j->R, j->y + o * j->R, j->R);
}

/* Softmax over the middle axis of [O, R, I], SB columns at a time. */
static void sm_cols(void *arg, size_t b, size_t e) {
    const sm_job *j = arg;
    size_t R = j->R, I = j->I;
    for (size_t task = b; task < e; task++) {
        size_t o = task / j->nblk, i0 = (task % j->nblk) * SB;
        size_t w = I - i0 < SB ? I - i0 : SB;
        const float *restrict x = j->x + o * R * I + i0;
        float *restrict y = j->y + o * R * I + i0;
        float m[SB], s[SB];
        for (size_t i = 0; i < w; i++) {
            m[i] = -INFINITY;
            s[i] = 0;
        }
        if (j->kind == SM_HARDMAX) {
            size_t am[SB] = {0};
            for (size_t r = 0; r < R; r++)
                for (size_t i = 0; i < w; i++)
                    if (x[r * I + i] > m[i]) {
                        m[i] = x[r * I + i];
                        am[i] = r;
                    }
            for (size_t r = 0; r < R; r++)
                for (size_t i = 0; i < w; i++)
                    y[r * I + i] = am[i] == r ? 1.0f : 0.0f;
            continue;
        }
        for (size_t r = 0; r < R; r++)
            for (size_t i = 0; i < w; i++)
                m[i] = x[r * I + i] > m[i] ? x[r * I + i] : m[i];
        bool any_inf = false;
        for (size_t i = 0; i < w; i++)
            any_inf |= isinf(m[i]);
        if (any_inf) {
            for (size_t i = 0; i < w; i++) {
                double ds = 0;
                for (size_t r = 0; r < R; r++)
                    ds += exp((double)x[r * I + i] - (double)m[i]);
                for (size_t r = 0; r < R; r++) {
                    double d = (double)x[r * I + i] - (double)m[i];
                    y[r * I + i] = j->kind == SM_SOFTMAX ? (float)(exp(d) / ds) : (float)(d - log(ds));
                }
            }
            continue;
        }
        for (size_t r = 0; r < R; r++) /* LogSoftmax overwrites y below */
            exp_shift_cols(x + r * I, m, y + r * I, s, w);
        if (j->kind == SM_SOFTMAX) {
            for (size_t r = 0; r < R; r++)
                for (size_t i = 0; i < w; i++)
                    y[r * I + i] /= s[i];
        } else {
            for (size_t i = 0; i < w; i++)
                s[i] = logf(s[i]);
            for (size_t r = 0; r < R; r++)
                for (size_t i = 0; i < w; i++)
                    y[r * I + i] = (x[r * I + i] - m[i]) - s[i];
        }
    }
}

static void sm_compute(oq_pool *pool, sm_job *j, size_t O) {
    if (j->I == 1) {
        oq_parallel_for(pool, O, min_chunk_for(j->R * 4), sm_rows, j);
    } else {
        j->nblk = (j->I + SB - 1) / SB;
        size_t per = j->R * (j->I < SB ? j->I : SB) * 4;
        oq_parallel_for(pool, O * j->nblk, min_chunk_for(per), sm_cols, j);
    }
}

static oq_status sm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                        oq_error *err) {
    const sm_state *st = ctx->state;
    const oq_tensor *x = in[0];
    size_t O = 0, R = 0, I = 0;
    oq_status s = sm_layout(ctx, st, x, &O, &R, &I, err);
    if (s != OQ_OK)
        return s;
    if (x->count == 0)
        return OQ_OK;
    sm_job j = {.kind = st->kind, .R = R, .I = I};
    if (x->dtype == OQ_DTYPE_FLOAT) {
        j.x = x->data;
        j.y = out[0].data;
        sm_compute(ctx->pool, &j, O);
        return OQ_OK;
    }
    /* other float types: computed in float32 through a scratch copy */
    size_t bytes;
    if (!oq_mul_size(x->count, 2 * sizeof(float), &bytes))
        return oq_err(err, OQ_ELIMIT, "%s: input too large", ctx->label);
    float *buf = malloc(bytes);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for %zu bytes of scratch", ctx->label,
                      bytes);
    for (size_t i = 0; i < x->count; i++)
        buf[i] = (float)oq_tensor_get_f64(x, i);
    j.x = buf;
    j.y = buf + x->count;
    sm_compute(ctx->pool, &j, O);
    for (size_t i = 0; i < x->count; i++)
        store_f64(&out[0], i, j.y[i]);
    free(buf);
    return OQ_OK;
}

/* ======================================================================== */
/* TopK                                                                     */
/* ======================================================================== */

typedef struct {
    int64_t axis;
    int64_t k_attr; /* TopK-1 */
    bool largest, sorted;
} topk_state;

static oq_status topk_prepare(oq_node_ctx *ctx, oq_error *err) {
    int64_t axis, k = -1, largest = 1, sorted = 1;
    oq_status s = OQ_ATTR_INT(ctx, "axis", -1, &axis, err);
    if (s == OQ_OK && ctx->opset < 10) {
        s = OQ_ATTR_INT(ctx, "k", -1, &k, err);
        if (s == OQ_OK && k < 0)
            s = oq_err(err, OQ_EMODEL, "%s: attribute k is missing or negative", ctx->label);
    }
    /* ONNX TopK-11 adds largest and sorted */
    if (s == OQ_OK && ctx->opset >= 11)
        s = OQ_ATTR_INT(ctx, "largest", 1, &largest, err);
    if (s == OQ_OK && ctx->opset >= 11)
        s = OQ_ATTR_INT(ctx, "sorted", 1, &sorted, err);
    if (s != OQ_OK)
        return s;
    topk_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    *st = (topk_state){axis, k, largest != 0, sorted != 0};
    ctx->state = st;
    return OQ_OK;
}

static oq_status topk_check(const oq_node_ctx *ctx, const oq_tensor *const *in, int *axis,
                            int64_t *k, oq_error *err) {
    const topk_state *st = ctx->state;
    const oq_tensor *x = in[0];
    if (!x)
        return oq_err(err, OQ_EINVAL, "%s: missing input X", ctx->label);
    if (!is_float_dtype(x->dtype) && !is_int_dtype(x->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: element type %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: X must have rank >= 1", ctx->label);
    oq_status s = oq_norm_axis(ctx, st->axis, x->rank, axis, err);
    if (s != OQ_OK)
        return s;
    if (ctx->opset >= 10) {
        const oq_tensor *kt = ctx->n_inputs > 1 ? in[1] : NULL;
        if (!kt)
            return oq_err(err, OQ_EINVAL, "%s: missing input K", ctx->label);
        if (kt->dtype != OQ_DTYPE_INT64 || kt->count != 1 || kt->rank > 1)
            return oq_err(err, OQ_EINVAL, "%s: K must be a 1-element int64 tensor", ctx->label);
        if (!kt->data)
            return oq_err(err, OQ_EINTERNAL, "%s: K has no data", ctx->label);
        *k = ((const int64_t *)kt->data)[0];
    } else {
        *k = st->k_attr;
    }
    if (*k < 0 || *k > x->dims[*axis])
        return oq_err(err, OQ_EINVAL, "%s: k = %lld is out of range for an axis of %lld",
                      ctx->label, (long long)*k, (long long)x->dims[*axis]);
    return OQ_OK;
}

static oq_status topk_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    int axis = 0;
    int64_t k = 0;
    oq_status s = topk_check(ctx, in, &axis, &k, err);
    if (s != OQ_OK)
        return s;
    int64_t dims[OQ_MAX_RANK];
    memcpy(dims, in[0]->dims, (size_t)in[0]->rank * sizeof *dims);
    dims[axis] = k;
    s = oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, dims, err);
    if (s == OQ_OK && ctx->n_outputs > 1)
        s = oq_out_shape(&out[1], OQ_DTYPE_INT64, in[0]->rank, dims, err);
    return s;
}

typedef struct {
    uint64_t key; /* order key, inverted for largest so ascending order is wanted */
    int64_t idx;
} tk_item;

static int tk_cmp(const void *pa, const void *pb) {
    const tk_item *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx; /* ties: lower index first */
}

typedef struct {
    const oq_tensor *x;
    oq_tensor *vals, *idxs;
    size_t R, I, k, es;
    bool largest;
    atomic_int failed;
} tk_job;

static void tk_worker(void *arg, size_t b, size_t e) {
    tk_job *j = arg;
    size_t R = j->R, I = j->I, k = j->k;
    size_t bytes;
    tk_item *items = oq_mul_size(R ? R : 1, sizeof *items, &bytes) ? malloc(bytes) : NULL;
    if (!items) {
        atomic_store(&j->failed, 1);
        return;
    }
    const uint8_t *xb = j->x->data;
    for (size_t t = b; t < e; t++) {
        size_t o = t / I, i = t % I;
        size_t base = o * R * I + i;
        size_t n = 0;
        if (k <= 16 && k < R) {
            /* a small k: keep the best k sorted, insertion style */
            for (size_t r = 0; r < R; r++) {
                uint64_t key = order_key(j->x, base + r * I);
                if (j->largest)
                    key = ~key;
                if (n == k && key >= items[n - 1].key)
                    continue; /* equal keys keep the earlier (lower) index */
                size_t p = n < k ? n++ : k - 1;
                while (p > 0 && items[p - 1].key > key) {
                    items[p] = items[p - 1];
                    p--;
                }
                items[p] = (tk_item){key, (int64_t)r};
            }
        } else {
            for (size_t r = 0; r < R; r++) {
                uint64_t key = order_key(j->x, base + r * I);
                items[r] = (tk_item){j->largest ? ~key : key, (int64_t)r};
            }
            n = R;
            qsort(items, R, sizeof *items, tk_cmp);
        }
        size_t obase = o * k * I + i;
        for (size_t q = 0; q < k; q++) {
            size_t src = base + (size_t)items[q].idx * I, dst = obase + q * I;
            memcpy((uint8_t *)j->vals->data + dst * j->es, xb + src * j->es, j->es);
            if (j->idxs)
                ((int64_t *)j->idxs->data)[dst] = items[q].idx;
        }
    }
    free(items);
}

static oq_status topk_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    const topk_state *st = ctx->state;
    int axis = 0;
    int64_t k = 0;
    oq_status s = topk_check(ctx, in, &axis, &k, err);
    if (s != OQ_OK)
        return s;
    /* "sorted = 0" leaves the order unspecified; sorted output satisfies it */
    tk_job j = {.x = in[0], .vals = &out[0], .idxs = ctx->n_outputs > 1 ? &out[1] : NULL,
                .k = (size_t)k, .es = oq_dtype_size(in[0]->dtype), .largest = st->largest};
    atomic_init(&j.failed, 0);
    size_t O;
    split_dims(in[0], axis, axis + 1, &O, &j.R, &j.I);
    if (k == 0 || O * j.I == 0)
        return OQ_OK;
    oq_parallel_for(ctx->pool, O * j.I, min_chunk_for(j.R * 8), tk_worker, &j);
    if (atomic_load(&j.failed))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for TopK scratch", ctx->label);
    return OQ_OK;
}

/* ======================================================================== */
/* CumSum                                                                   */
/* ======================================================================== */

typedef struct {
    bool exclusive, reverse;
} cumsum_state;

static oq_status cumsum_prepare(oq_node_ctx *ctx, oq_error *err) {
    int64_t ex, rev;
    oq_status s = OQ_ATTR_INT(ctx, "exclusive", 0, &ex, err);
    if (s == OQ_OK)
        s = OQ_ATTR_INT(ctx, "reverse", 0, &rev, err);
    if (s != OQ_OK)
        return s;
    cumsum_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    st->exclusive = ex != 0;
    st->reverse = rev != 0;
    ctx->state = st;
    return OQ_OK;
}

static oq_status cumsum_check(const oq_node_ctx *ctx, const oq_tensor *const *in, oq_error *err) {
    const oq_tensor *x = in[0];
    if (!x || ctx->n_inputs < 2 || !in[1])
        return oq_err(err, OQ_EINVAL, "%s: needs inputs x and axis", ctx->label);
    switch (x->dtype) {
    case OQ_DTYPE_FLOAT: case OQ_DTYPE_DOUBLE: case OQ_DTYPE_FLOAT16: case OQ_DTYPE_BFLOAT16:
    case OQ_DTYPE_INT32: case OQ_DTYPE_INT64: case OQ_DTYPE_UINT32: case OQ_DTYPE_UINT64:
        break;
    default:
        return oq_err(err, OQ_EUNSUPPORTED, "%s: element type %s is not supported", ctx->label,
                      oq_dtype_name(x->dtype));
    }
    const oq_tensor *a = in[1];
    if ((a->dtype != OQ_DTYPE_INT32 && a->dtype != OQ_DTYPE_INT64) || a->count != 1 || a->rank > 1)
        return oq_err(err, OQ_EINVAL, "%s: axis must be an int32 or int64 scalar", ctx->label);
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: x must have rank >= 1", ctx->label);
    return OQ_OK;
}

static oq_status cumsum_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    oq_status s = cumsum_check(ctx, in, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

static oq_status cumsum_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    const cumsum_state *st = ctx->state;
    oq_status s = cumsum_check(ctx, in, err);
    if (s != OQ_OK)
        return s;
    if (!in[1]->data)
        return oq_err(err, OQ_EINTERNAL, "%s: axis has no data", ctx->label);
    int axis;
    s = oq_norm_axis(ctx, oq_tensor_get_i64(in[1], 0), in[0]->rank, &axis, err);
    if (s != OQ_OK)
        return s;
    const oq_tensor *x = in[0];
    oq_tensor *y = &out[0];
    size_t O, R, I;
    split_dims(x, axis, axis + 1, &O, &R, &I);
    bool flt = is_float_dtype(x->dtype);
    for (size_t o = 0; o < O; o++)
        for (size_t i = 0; i < I; i++) {
            double fa = 0;
            uint64_t ia = 0;
            for (size_t q = 0; q < R; q++) {
                size_t r = st->reverse ? R - 1 - q : q;
                size_t off = (o * R + r) * I + i;
                if (flt) {
                    double v = oq_tensor_get_f64(x, off);
                    if (!st->exclusive)
                        fa += v;
                    store_f64(y, off, fa);
                    if (st->exclusive)
                        fa += v;
                } else {
                    uint64_t v = (uint64_t)oq_tensor_get_i64(x, off);
                    if (!st->exclusive)
                        ia += v;
                    store_bits(y, off, ia);
                    if (st->exclusive)
                        ia += v;
                }
            }
        }
    return OQ_OK;
}

/* ---- the table ----------------------------------------------------------- */

#define RED(name, prep, lo, hi) {"", name, lo, hi, prep, free_state, reduce_infer, reduce_run}

static const oq_op ops[] = {
    RED("ReduceSum", prep_sum, 1, 12),
    RED("ReduceSum", prep_sum, 13, 25),
    RED("ReduceMean", prep_mean, 1, 17),
    RED("ReduceMean", prep_mean, 18, 25),
    RED("ReduceMax", prep_max, 1, 17),
    RED("ReduceMax", prep_max, 18, 25),
    RED("ReduceMin", prep_min, 1, 17),
    RED("ReduceMin", prep_min, 18, 25),
    RED("ReduceProd", prep_prod, 1, 17),
    RED("ReduceProd", prep_prod, 18, 25),
    RED("ReduceL1", prep_l1, 1, 17),
    RED("ReduceL1", prep_l1, 18, 25),
    RED("ReduceL2", prep_l2, 1, 17),
    RED("ReduceL2", prep_l2, 18, 25),
    RED("ReduceLogSum", prep_logsum, 1, 17),
    RED("ReduceLogSum", prep_logsum, 18, 25),
    RED("ReduceLogSumExp", prep_lse, 1, 17),
    RED("ReduceLogSumExp", prep_lse, 18, 25),
    RED("ReduceSumSquare", prep_sumsq, 1, 17),
    RED("ReduceSumSquare", prep_sumsq, 18, 25),
    {"", "ArgMax", 1, 25, prep_argmax, free_state, arg_infer, arg_run},
    {"", "ArgMin", 1, 25, prep_argmin, free_state, arg_infer, arg_run},
    {"", "Softmax", 1, 12, prep_softmax, free_state, sm_infer, sm_run},
    {"", "Softmax", 13, 25, prep_softmax, free_state, sm_infer, sm_run},
    {"", "LogSoftmax", 1, 12, prep_logsoftmax, free_state, sm_infer, sm_run},
    {"", "LogSoftmax", 13, 25, prep_logsoftmax, free_state, sm_infer, sm_run},
    {"", "Hardmax", 1, 12, prep_hardmax, free_state, sm_infer, sm_run},
    {"", "Hardmax", 13, 25, prep_hardmax, free_state, sm_infer, sm_run},
    {"", "TopK", 1, 9, topk_prepare, free_state, topk_infer, topk_run},
    {"", "TopK", 10, 25, topk_prepare, free_state, topk_infer, topk_run},
    {"", "CumSum", 11, 25, cumsum_prepare, free_state, cumsum_infer, cumsum_run},
};

const oq_op_table oq_ops_reduce = {ops, sizeof ops / sizeof ops[0]};
