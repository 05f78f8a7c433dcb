/* ops_elementwise.c: the elementwise operator family: unary math and
 * activations, numpy-broadcasting arithmetic/comparison/logic, variadic
 * Max/Min/Sum/Mean, Where, Clip, Cast/CastLike, Identity and inference-mode
 * Dropout. Broadcasts are collapsed to a few dims and run as contiguous rows
 * (vector-vector, vector-scalar) split over the thread pool. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "op.h"
#include "ops_elementwise.h"

/* Selects written as ?: are only if-converted (vectorised) when the compiler
 * may evaluate both arms; kernels never observe FP exception flags. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OQ_EW_NO_CLONES)
#define EW_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EW_HOT
#endif

/* Elements per thread chunk below which a loop stays on one thread: waking
 * a worker costs ~10 us, which ~16K transcendental evaluations repay but
 * cheap memory-bound ops (add, relu, copy-like) only from ~64K. */
#define EW_MIN_CHUNK 16384
#define EW_MIN_CHUNK_CHEAP 65536
/* Block size for float16/bfloat16 computed through float32. */
#define EW_BLOCK 256

enum {
    C_UNARY, C_BINARY, C_COMPARE, C_LOGIC, C_POW, C_PRELU, C_VARIADIC,
    C_WHERE, C_CLIP, C_CAST, C_CASTLIKE, C_IDENTITY, C_DROPOUT
};

#define TM(t) (1u << OQ_DTYPE_##t)
#define M_FLT (TM(FLOAT) | TM(DOUBLE) | TM(FLOAT16) | TM(BFLOAT16))
#define M_SINT (TM(INT8) | TM(INT16) | TM(INT32) | TM(INT64))
#define M_UINT (TM(UINT8) | TM(UINT16) | TM(UINT32) | TM(UINT64))
#define M_NUM (M_FLT | M_SINT | M_UINT)
#define M_BOOL TM(BOOL)

/* Per op: ONNX name, class and the input types it takes (the latest
 * version's type constraints; older versions took subsets). */
static const struct {
    const char *name;
    int cls;
    uint32_t types;
} info[OQ_EW_KIND_COUNT] = {
    [OQ_EW_ABS] = {"Abs", C_UNARY, M_NUM},
    [OQ_EW_NEG] = {"Neg", C_UNARY, M_FLT | M_SINT},
    [OQ_EW_SIGN] = {"Sign", C_UNARY, M_NUM},
    [OQ_EW_CEIL] = {"Ceil", C_UNARY, M_FLT},
    [OQ_EW_FLOOR] = {"Floor", C_UNARY, M_FLT},
    [OQ_EW_ROUND] = {"Round", C_UNARY, M_FLT},
    [OQ_EW_RECIPROCAL] = {"Reciprocal", C_UNARY, M_FLT},
    [OQ_EW_SQRT] = {"Sqrt", C_UNARY, M_FLT},
    [OQ_EW_EXP] = {"Exp", C_UNARY, M_FLT},
    [OQ_EW_LOG] = {"Log", C_UNARY, M_FLT},
    [OQ_EW_ERF] = {"Erf", C_UNARY, M_NUM},
    [OQ_EW_TANH] = {"Tanh", C_UNARY, M_FLT},
    [OQ_EW_SIGMOID] = {"Sigmoid", C_UNARY, M_FLT},
    [OQ_EW_HARDSIGMOID] = {"HardSigmoid", C_UNARY, M_FLT},
    [OQ_EW_HARDSWISH] = {"HardSwish", C_UNARY, M_FLT},
    [OQ_EW_RELU] = {"Relu", C_UNARY, M_FLT | M_SINT},
    [OQ_EW_LEAKYRELU] = {"LeakyRelu", C_UNARY, M_FLT},
    [OQ_EW_ELU] = {"Elu", C_UNARY, M_FLT},
    [OQ_EW_SELU] = {"Selu", C_UNARY, M_FLT},
    [OQ_EW_SOFTPLUS] = {"Softplus", C_UNARY, M_FLT},
    [OQ_EW_MISH] = {"Mish", C_UNARY, M_FLT},
    [OQ_EW_GELU] = {"Gelu", C_UNARY, M_FLT},
    [OQ_EW_ADD] = {"Add", C_BINARY, M_NUM},
    [OQ_EW_SUB] = {"Sub", C_BINARY, M_NUM},
    [OQ_EW_MUL] = {"Mul", C_BINARY, M_NUM},
    [OQ_EW_DIV] = {"Div", C_BINARY, M_NUM},
    [OQ_EW_POW] = {"Pow", C_POW, M_FLT | TM(INT32) | TM(INT64)},
    [OQ_EW_PRELU] = {"PRelu", C_PRELU, M_NUM},
    [OQ_EW_MAX] = {"Max", C_VARIADIC, M_NUM},
    [OQ_EW_MIN] = {"Min", C_VARIADIC, M_NUM},
    [OQ_EW_SUM] = {"Sum", C_VARIADIC, M_FLT},
    [OQ_EW_MEAN] = {"Mean", C_VARIADIC, M_FLT},
    [OQ_EW_EQUAL] = {"Equal", C_COMPARE, M_NUM | M_BOOL},
    [OQ_EW_LESS] = {"Less", C_COMPARE, M_NUM},
    [OQ_EW_LESSEQ] = {"LessOrEqual", C_COMPARE, M_NUM},
    [OQ_EW_GREATER] = {"Greater", C_COMPARE, M_NUM},
    [OQ_EW_GREATEREQ] = {"GreaterOrEqual", C_COMPARE, M_NUM},
    [OQ_EW_AND] = {"And", C_LOGIC, M_BOOL},
    [OQ_EW_OR] = {"Or", C_LOGIC, M_BOOL},
    [OQ_EW_XOR] = {"Xor", C_LOGIC, M_BOOL},
    [OQ_EW_NOT] = {"Not", C_UNARY, M_BOOL},
    [OQ_EW_WHERE] = {"Where", C_WHERE, M_NUM | M_BOOL},
    [OQ_EW_CLIP] = {"Clip", C_CLIP, M_NUM},
    [OQ_EW_CAST] = {"Cast", C_CAST, M_NUM | M_BOOL},
    [OQ_EW_CASTLIKE] = {"CastLike", C_CASTLIKE, M_NUM | M_BOOL},
    [OQ_EW_IDENTITY] = {"Identity", C_IDENTITY, 0},
    [OQ_EW_DROPOUT] = {"Dropout", C_DROPOUT, M_FLT},
};

typedef struct {
    oq_ew_kind kind;
    int cls;
    oq_ew_unary u;           /* unary parameters */
    bool legacy;             /* opset < 7: `broadcast`/`axis` attributes, no numpy rules */
    bool legacy_bcast, legacy_has_axis;
    int64_t legacy_axis;
    oq_dtype cast_to;        /* Cast */
    float clip_min, clip_max; /* Clip < 11 attributes */
} ew_state;

/* One element of any numeric type (Clip bounds, Mean's divisor). */
typedef union {
    float f;
    double d;
    int64_t i;
    uint64_t u;
    uint16_t h;
    unsigned char bytes[8];
} ew_scalar;

/* ---- attributes ---------------------------------------------------------- */

static bool castable(oq_dtype t) {
    return (unsigned)t < 32 && ((M_NUM | M_BOOL) >> t) & 1u;
}

static oq_status parse_cast_to(oq_node_ctx *ctx, ew_state *st, oq_error *err) {
    const Onnx__AttributeProto *a = oq_node_attr(ctx->node, "to");
    if (!a)
        return oq_err(err, OQ_EMODEL, "%s: attribute 'to' is required", ctx->label);
    int64_t to = 0;
    oq_status s;
    if (oq_attr_type(a) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) {
        /* Cast-1 named the type by string ("FLOAT"); later versions by number. */
        char name[32];
        if ((s = oq_node_attr_string(ctx->node, "to", NULL, name, sizeof name, err)) != OQ_OK)
            return s;
        for (char *p = name; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        to = oq_dtype_from_name(name);
        if (to == OQ_DTYPE_UNDEFINED)
            return oq_err(err, OQ_EMODEL, "%s: 'to' names no tensor type ('%s')", ctx->label, name);
    } else if ((s = oq_node_attr_int(ctx->node, "to", 0, &to, err)) != OQ_OK) {
        return s;
    }
    /* TensorProto.DataType numbers run past OQ_DTYPE_COUNT in newer ONNX
     * (float4, int2, ...): valid types this executor does not implement. */
    if (to <= OQ_DTYPE_UNDEFINED || to > 32)
        return oq_err(err, OQ_EMODEL, "%s: 'to' is %lld, not a tensor data type", ctx->label,
                      (long long)to);
    if (!castable((oq_dtype)to))
        return oq_err(err, OQ_EUNSUPPORTED,
                      "%s: casting to %s (type %lld) is not supported (string, float8, 4-bit, "
                      "2-bit and complex types are not implemented)",
                      ctx->label, oq_dtype_name((int)to), (long long)to);
    st->cast_to = (oq_dtype)to;
    return OQ_OK;
}

static oq_status parse_attrs(oq_node_ctx *ctx, ew_state *st, oq_error *err) {
    const Onnx__NodeProto *n = ctx->node;
    oq_status s = OQ_OK;
    switch (st->kind) {
    case OQ_EW_HARDSIGMOID:
        if ((s = oq_node_attr_float(n, "alpha", 0.2f, &st->u.alpha, err)) != OQ_OK)
            return s;
        return oq_node_attr_float(n, "beta", 0.5f, &st->u.beta, err);
    case OQ_EW_HARDSWISH: /* HardSwish-14: HardSigmoid with alpha 1/6, beta 0.5 */
        st->u.alpha = 1.0f / 6.0f;
        st->u.beta = 0.5f;
        return OQ_OK;
    case OQ_EW_LEAKYRELU: return oq_node_attr_float(n, "alpha", 0.01f, &st->u.alpha, err);
    case OQ_EW_ELU: return oq_node_attr_float(n, "alpha", 1.0f, &st->u.alpha, err);
    case OQ_EW_SELU:
        if ((s = oq_node_attr_float(n, "alpha", 1.67326319217681884765625f, &st->u.alpha, err)) !=
            OQ_OK)
            return s;
        return oq_node_attr_float(n, "gamma", 1.05070102214813232421875f, &st->u.gamma, err);
    case OQ_EW_GELU: {
        char approx[16];
        if ((s = oq_node_attr_string(n, "approximate", "none", approx, sizeof approx, err)) !=
            OQ_OK)
            return s;
        if (strcmp(approx, "tanh") == 0)
            st->u.gelu_tanh = true;
        else if (strcmp(approx, "none") != 0)
            return oq_err(err, OQ_EMODEL,
                          "%s: approximate must be \"none\" or \"tanh\", not \"%s\"", ctx->label,
                          approx);
        return OQ_OK;
    }
    case OQ_EW_CLIP:
        if (ctx->opset < 11) { /* Clip-6: bounds are attributes, default to the float range */
            if ((s = oq_node_attr_float(n, "min", -FLT_MAX, &st->clip_min, err)) != OQ_OK)
                return s;
            return oq_node_attr_float(n, "max", FLT_MAX, &st->clip_max, err);
        }
        return OQ_OK;
    case OQ_EW_CAST: return parse_cast_to(ctx, st, err);
    default: break;
    }
    if (ctx->opset < 7 && (st->cls == C_BINARY || st->cls == C_COMPARE || st->cls == C_LOGIC ||
                           st->cls == C_POW)) {
        /* Before opset 7 these ops broadcast only B onto A, when broadcast=1,
         * aligned at `axis` (default: trailing dims). */
        int64_t b = 0;
        if ((s = oq_node_attr_int(n, "broadcast", 0, &b, err)) != OQ_OK)
            return s;
        st->legacy = true;
        st->legacy_bcast = b != 0;
        st->legacy_has_axis = oq_node_attr(n, "axis") != NULL;
        if ((s = oq_node_attr_int(n, "axis", 0, &st->legacy_axis, err)) != OQ_OK)
            return s;
    }
    return OQ_OK;
}

static oq_status ew_prepare(oq_node_ctx *ctx, oq_error *err) {
    const char *op = ctx->node && ctx->node->op_type ? ctx->node->op_type : "";
    int kind = -1;
    for (int k = 0; k < OQ_EW_KIND_COUNT; k++)
        if (strcmp(info[k].name, op) == 0)
            kind = k;
    if (kind < 0)
        return oq_err(err, OQ_EINTERNAL, "%s: not an elementwise operator", ctx->label);
    ew_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    st->kind = (oq_ew_kind)kind;
    st->cls = info[kind].cls;
    st->u.kind = (oq_ew_kind)kind;
    oq_status s = parse_attrs(ctx, st, err);
    if (s != OQ_OK) {
        free(st);
        return s;
    }
    ctx->state = st;
    return OQ_OK;
}

static void ew_release(void *state) { free(state); }

/* ---- shape and type checks (infer) -------------------------------------- */

static oq_status need_state(const oq_node_ctx *ctx, oq_error *err) {
    return ctx->state ? OQ_OK
                      : oq_err(err, OQ_EINTERNAL, "%s: run before prepare", ctx->label);
}

/* Input/output counts, and presence of the first `required` inputs. */
static oq_status check_arity(const oq_node_ctx *ctx, const oq_tensor *const *in, int min_in,
                             int max_in, int required, int max_out, oq_error *err) {
    if (ctx->n_inputs < min_in || ctx->n_inputs > max_in)
        return oq_err(err, OQ_EMODEL, "%s: takes %d to %d inputs, not %d", ctx->label, min_in,
                      max_in, ctx->n_inputs);
    if (ctx->n_outputs < 1 || ctx->n_outputs > max_out)
        return oq_err(err, OQ_EMODEL, "%s: takes 1 to %d outputs, not %d", ctx->label, max_out,
                      ctx->n_outputs);
    for (int i = 0; i < required && i < ctx->n_inputs; i++)
        if (!in[i])
            return oq_err(err, OQ_EMODEL, "%s: input %d is required", ctx->label, i);
    return OQ_OK;
}

static bool type_in(oq_dtype t, uint32_t mask) { return (unsigned)t < 32 && (mask >> t) & 1u; }

static oq_status check_type(const oq_node_ctx *ctx, const oq_tensor *t, int idx, uint32_t mask,
                            oq_error *err) {
    if (type_in(t->dtype, mask))
        return OQ_OK;
    /* Types this executor does not handle in elementwise ops at all. */
    bool unimpl = !castable(t->dtype);
    return oq_err(err, unimpl ? OQ_EUNSUPPORTED : OQ_EMODEL, "%s: input %d has type %s, %s",
                  ctx->label, idx, oq_dtype_name(t->dtype),
                  unimpl ? "which is not supported by this executor"
                         : "which the operator does not take");
}

static oq_status check_same_type(const oq_node_ctx *ctx, const oq_tensor *a, const oq_tensor *b,
                                 int ib, oq_error *err) {
    if (a->dtype == b->dtype)
        return OQ_OK;
    return oq_err(err, OQ_EMODEL, "%s: input %d has type %s but input 0 has %s", ctx->label, ib,
                  oq_dtype_name(b->dtype), oq_dtype_name(a->dtype));
}

static bool is_scalar_like(const oq_tensor *t) {
    size_t c;
    return oq_dims_count(t->dims, t->rank, &c) && c == 1;
}

/* The opset < 7 broadcast: B's dims matched against A's starting at axis. */
static oq_status legacy_view(const oq_node_ctx *ctx, const ew_state *st, const oq_tensor *a,
                             const oq_tensor *b, oq_tensor *v, oq_error *err) {
    *v = *b;
    if (!st->legacy_bcast) {
        bool same = a->rank == b->rank;
        for (int d = 0; same && d < a->rank; d++)
            same = a->dims[d] == b->dims[d];
        if (!same)
            return oq_err(err, OQ_EINVAL,
                          "%s: input shapes differ and broadcast=0 (opset %d needs equal shapes)",
                          ctx->label, ctx->opset);
        return OQ_OK;
    }
    if (b->rank > a->rank)
        return oq_err(err, OQ_EINVAL, "%s: input 1 has rank %d, more than input 0 (%d)",
                      ctx->label, b->rank, a->rank);
    int64_t axis = st->legacy_has_axis ? st->legacy_axis : a->rank - b->rank;
    if (axis < 0 || axis > a->rank - b->rank)
        return oq_err(err, OQ_EINVAL, "%s: axis %lld does not fit rank %d into rank %d",
                      ctx->label, (long long)axis, b->rank, a->rank);
    v->rank = a->rank;
    for (int d = 0; d < a->rank; d++)
        v->dims[d] = 1;
    for (int i = 0; i < b->rank; i++) {
        int64_t bd = b->dims[i], ad = a->dims[axis + i];
        if (bd != ad && bd != 1)
            return oq_err(err, OQ_EINVAL, "%s: input 1 dim %d (%lld) does not match input 0 dim "
                          "%lld (%lld)", ctx->label, i, (long long)bd, (long long)(axis + i),
                          (long long)ad);
        v->dims[axis + i] = bd;
    }
    return OQ_OK;
}

/* PRelu before opset 7 took a per-channel slope of shape [C] for X of shape
 * [N, C, ...]; from 7 the slope broadcasts unidirectionally (numpy) to X. */
static oq_status prelu_view(const oq_node_ctx *ctx, const oq_tensor *x, const oq_tensor *slope,
                            oq_tensor *v, oq_error *err) {
    *v = *slope;
    if (ctx->opset < 7 && slope->rank == 1 && x->rank >= 2 && slope->dims[0] == x->dims[1]) {
        v->rank = x->rank - 1;
        for (int d = 1; d < v->rank; d++)
            v->dims[d] = 1;
    }
    int rank;
    int64_t dims[OQ_MAX_RANK];
    const oq_tensor *pair[2] = {x, v};
    oq_status s = oq_broadcast_shape(ctx, pair, 2, &rank, dims, err);
    if (s != OQ_OK)
        return s;
    bool same = rank == x->rank;
    for (int d = 0; same && d < rank; d++)
        same = dims[d] == x->dims[d];
    if (!same)
        return oq_err(err, OQ_EINVAL, "%s: slope does not broadcast to the shape of X", ctx->label);
    return OQ_OK;
}

/* ---- the broadcast walker ------------------------------------------------ */

typedef struct ew_job ew_job;
/* Computes n outputs of one row; in[k] advances by one element per output
 * when s[k] is 1 and stays put (broadcast) when it is 0. */
typedef void (*ew_row)(const ew_job *J, const char *const *in, char *o, size_t n, const int *s);

struct ew_job {
    ew_row row;
    ew_row frow; /* the float32 row row_via_f32 runs for float16/bfloat16 */
    int nin;
    oq_dtype idt[3], odt;
    const char *base[3];
    char *out;
    size_t osize;
    int rank; /* collapsed */
    int64_t dims[OQ_MAX_RANK];
    int64_t str[3][OQ_MAX_RANK]; /* byte strides per input */
};

/* Strides of each input broadcast to out's shape, with size-1 dims dropped
 * and dims merged wherever every input is contiguous (or broadcast) across
 * them: same shapes become one row, [N,C,H,W] + [C,1,1] becomes rows of
 * H*W against a scalar, [M,K] + [K] rows of K. */
static void job_shape(ew_job *J, const oq_tensor *out, const oq_tensor *const *ins, int nin) {
    int64_t es[3][OQ_MAX_RANK];
    int r = out->rank;
    J->nin = nin;
    for (int k = 0; k < nin; k++) {
        oq_broadcast_strides(ins[k], r, out->dims, es[k]);
        int64_t sz = (int64_t)oq_dtype_size(ins[k]->dtype);
        for (int d = 0; d < r; d++)
            es[k][d] *= sz;
        J->base[k] = ins[k]->data;
        J->idt[k] = ins[k]->dtype;
    }
    int m = 0;
    for (int d = 0; d < r; d++) {
        if (out->dims[d] == 1)
            continue;
        bool merge = m > 0;
        for (int k = 0; merge && k < nin; k++)
            merge = J->str[k][m - 1] == es[k][d] * out->dims[d];
        if (merge) {
            J->dims[m - 1] *= out->dims[d];
            for (int k = 0; k < nin; k++)
                J->str[k][m - 1] = es[k][d];
        } else {
            J->dims[m] = out->dims[d];
            for (int k = 0; k < nin; k++)
                J->str[k][m] = es[k][d];
            m++;
        }
    }
    if (m == 0) {
        J->dims[0] = 1;
        for (int k = 0; k < nin; k++)
            J->str[k][0] = 0;
        m = 1;
    }
    J->rank = m;
    J->out = out->data;
    J->odt = out->dtype;
    J->osize = oq_dtype_size(out->dtype);
}

/* Runs outputs [begin, end) of a job, row by row. */
static void job_walk(void *arg, size_t begin, size_t end) {
    const ew_job *J = arg;
    const int r = J->rank, in_ = r - 1;
    int64_t idx[OQ_MAX_RANK];
    size_t rem = begin;
    for (int d = r - 1; d >= 0; d--) {
        idx[d] = (int64_t)(rem % (size_t)J->dims[d]);
        rem /= (size_t)J->dims[d];
    }
    const char *rs[3] = {0}; /* start of the current row per input */
    int s[3] = {0};
    for (int k = 0; k < J->nin; k++) {
        rs[k] = J->base[k];
        for (int d = 0; d < in_; d++)
            rs[k] += idx[d] * J->str[k][d];
        s[k] = J->str[k][in_] != 0;
    }
    size_t pos = begin;
    int64_t col = idx[in_];
    while (pos < end) {
        size_t len = (size_t)(J->dims[in_] - col);
        if (len > end - pos)
            len = end - pos;
        const char *p[3] = {0};
        for (int k = 0; k < J->nin; k++)
            p[k] = rs[k] + col * J->str[k][in_];
        J->row(J, p, J->out + pos * J->osize, len, s);
        pos += len;
        if (pos >= end)
            break; /* (stepping on would point past the inputs) */
        col = 0;
        for (int d = in_ - 1; d >= 0; d--) { /* next row: odometer over the outer dims */
            for (int k = 0; k < J->nin; k++)
                rs[k] += J->str[k][d];
            if (++idx[d] < J->dims[d])
                break;
            for (int k = 0; k < J->nin; k++)
                rs[k] -= J->dims[d] * J->str[k][d];
            idx[d] = 0;
        }
    }
}

/* Binary rows are memory-bound except Pow, integer division and the
 * float16/bfloat16 conversions. */
static size_t binary_chunk(oq_ew_kind k, oq_dtype dt) {
    if (k == OQ_EW_POW || dt == OQ_DTYPE_FLOAT16 || dt == OQ_DTYPE_BFLOAT16 ||
        (k == OQ_EW_DIV && dt != OQ_DTYPE_FLOAT && dt != OQ_DTYPE_DOUBLE))
        return EW_MIN_CHUNK;
    return EW_MIN_CHUNK_CHEAP;
}

static void job_run(const oq_node_ctx *ctx, ew_job *J, const oq_tensor *out,
                    const oq_tensor *const *ins, int nin, size_t min_chunk) {
    if (out->count == 0)
        return;
    job_shape(J, out, ins, nin);
    oq_parallel_for(ctx->pool, out->count, min_chunk, job_walk, J);
}

/* float16/bfloat16 rows: widen blocks to float32, run the float32 row,
 * narrow the result (or write bools straight through). */
static void row_via_f32(const ew_job *J, const char *const *in, char *o, size_t n, const int *s) {
    float buf[3][EW_BLOCK], ob[EW_BLOCK];
    for (size_t i = 0; i < n; i += EW_BLOCK) {
        size_t len = n - i < EW_BLOCK ? n - i : EW_BLOCK;
        const char *fin[3] = {0};
        for (int k = 0; k < J->nin; k++) {
            oq_ew_to_f32(J->idt[k], in[k] + (s[k] ? i * 2 : 0), buf[k], s[k] ? len : 1);
            fin[k] = (const char *)buf[k];
        }
        if (J->odt == OQ_DTYPE_BOOL) {
            J->frow(J, fin, o + i, len, s);
        } else {
            J->frow(J, fin, (char *)ob, len, s);
            oq_ew_from_f32(J->odt, ob, o + i * 2, len);
        }
    }
}

/* ---- binary rows ----------------------------------------------------------- */

/* No restrict: variadic ops accumulate in place (in[0] == o); GCC versions
 * the loops on an overlap check, so disjoint buffers still vectorise. */
#define ROW2(attr, name, T, OT, EXPR)                                                            \
    attr static void name(const ew_job *J, const char *const *in, char *po, size_t n,            \
                          const int *s) {                                                        \
        (void)J;                                                                                 \
        const T *a = (const T *)(const void *)in[0], *b = (const T *)(const void *)in[1];        \
        OT *o = (OT *)(void *)po;                                                                \
        if (s[0] && s[1]) {                                                                      \
            for (size_t i = 0; i < n; i++) {                                                     \
                const T x = a[i], y = b[i];                                                      \
                (void)y;                                                                         \
                o[i] = (OT)(EXPR);                                                               \
            }                                                                                    \
        } else if (s[0]) {                                                                       \
            const T y = b[0];                                                                    \
            (void)y;                                                                             \
            for (size_t i = 0; i < n; i++) {                                                     \
                const T x = a[i];                                                                \
                o[i] = (OT)(EXPR);                                                               \
            }                                                                                    \
        } else if (s[1]) {                                                                       \
            const T x = a[0];                                                                    \
            for (size_t i = 0; i < n; i++) {                                                     \
                const T y = b[i];                                                                \
                (void)y;                                                                         \
                o[i] = (OT)(EXPR);                                                               \
            }                                                                                    \
        } else {                                                                                 \
            const T x = a[0], y = b[0];                                                          \
            (void)y;                                                                             \
            const OT v = (OT)(EXPR);                                                             \
            for (size_t i = 0; i < n; i++)                                                       \
                o[i] = v;                                                                        \
        }                                                                                        \
    }

#define ROWS_CMP(attr, sfx, T)                                                                   \
    ROW2(attr, eq_##sfx, T, uint8_t, x == y)                                                     \
    ROW2(attr, lt_##sfx, T, uint8_t, x < y)                                                      \
    ROW2(attr, le_##sfx, T, uint8_t, x <= y)                                                     \
    ROW2(attr, gt_##sfx, T, uint8_t, x > y)                                                      \
    ROW2(attr, ge_##sfx, T, uint8_t, x >= y)

/* Floats: IEEE arithmetic; Max/Min propagate NaN like numpy.maximum. */
#define ROWS_FLT(attr, sfx, T)                                                                   \
    ROW2(attr, add_##sfx, T, T, x + y)                                                           \
    ROW2(attr, sub_##sfx, T, T, x - y)                                                           \
    ROW2(attr, mul_##sfx, T, T, x * y)                                                           \
    ROW2(attr, div_##sfx, T, T, x / y)                                                           \
    ROW2(attr, max_##sfx, T, T, (x >= y || x != x) ? x : y)                                      \
    ROW2(attr, min_##sfx, T, T, (x <= y || x != x) ? x : y)                                      \
    ROW2(attr, prelu_##sfx, T, T, x < 0 ? x * y : x)                                             \
    ROWS_CMP(attr, sfx, T)

/* Signed integers wrap like two's complement (computed unsigned: signed
 * overflow is UB in C). Div truncates toward zero (Div-14 reference);
 * x / 0 gives 0 and MIN / -1 wraps to MIN instead of trapping. */
#define ROWS_SINT(DT, sfx, T, W)                                                                 \
    ROW2(, add_##sfx, T, T, (T)((W)x + (W)y))                                                    \
    ROW2(, sub_##sfx, T, T, (T)((W)x - (W)y))                                                    \
    ROW2(, mul_##sfx, T, T, (T)((W)x * (W)y))                                                    \
    ROW2(, div_##sfx, T, T, y == 0 ? (T)0 : y == (T)-1 ? (T)(0u - (W)x) : (T)(x / y))            \
    ROW2(, max_##sfx, T, T, x > y ? x : y)                                                       \
    ROW2(, min_##sfx, T, T, x < y ? x : y)                                                       \
    ROW2(, prelu_##sfx, T, T, x < 0 ? (T)((W)x * (W)y) : x)                                      \
    ROWS_CMP(, sfx, T)

#define ROWS_UINT(DT, sfx, T, W)                                                                 \
    ROW2(, add_##sfx, T, T, (T)((W)x + (W)y))                                                    \
    ROW2(, sub_##sfx, T, T, (T)((W)x - (W)y))                                                    \
    ROW2(, mul_##sfx, T, T, (T)((W)x * (W)y))                                                    \
    ROW2(, div_##sfx, T, T, y == 0 ? (T)0 : (T)(x / y))                                          \
    ROW2(, max_##sfx, T, T, x > y ? x : y)                                                       \
    ROW2(, min_##sfx, T, T, x < y ? x : y)                                                       \
    ROW2(, prelu_##sfx, T, T, x)                                                                 \
    ROWS_CMP(, sfx, T)

/* X(DTYPE, suffix, C type, unsigned type wide enough to compute in) */
#define EW_SINT(X)                                                                               \
    X(INT8, i8, int8_t, uint32_t)                                                                \
    X(INT16, i16, int16_t, uint32_t)                                                             \
    X(INT32, i32, int32_t, uint32_t)                                                             \
    X(INT64, i64, int64_t, uint64_t)
#define EW_UINT(X)                                                                               \
    X(UINT8, u8, uint8_t, uint32_t)                                                              \
    X(UINT16, u16, uint16_t, uint32_t)                                                           \
    X(UINT32, u32, uint32_t, uint32_t)                                                           \
    X(UINT64, u64, uint64_t, uint64_t)

ROWS_FLT(EW_HOT, f32, float)
ROWS_FLT(, f64, double)
EW_SINT(ROWS_SINT)
EW_UINT(ROWS_UINT)
ROW2(, eq_bool, uint8_t, uint8_t, (x != 0) == (y != 0))
ROW2(, and_bool, uint8_t, uint8_t, (x != 0) & (y != 0))
ROW2(, or_bool, uint8_t, uint8_t, (x != 0) | (y != 0))
ROW2(, xor_bool, uint8_t, uint8_t, (x != 0) ^ (y != 0))

#define NUMTAB(op)                                                                               \
    [OQ_DTYPE_FLOAT] = op##_f32, [OQ_DTYPE_DOUBLE] = op##_f64, [OQ_DTYPE_INT8] = op##_i8,        \
    [OQ_DTYPE_INT16] = op##_i16, [OQ_DTYPE_INT32] = op##_i32, [OQ_DTYPE_INT64] = op##_i64,       \
    [OQ_DTYPE_UINT8] = op##_u8, [OQ_DTYPE_UINT16] = op##_u16, [OQ_DTYPE_UINT32] = op##_u32,      \
    [OQ_DTYPE_UINT64] = op##_u64, [OQ_DTYPE_FLOAT16] = row_via_f32,                              \
    [OQ_DTYPE_BFLOAT16] = row_via_f32,

static const ew_row add_tab[OQ_DTYPE_COUNT] = {NUMTAB(add)};
static const ew_row sub_tab[OQ_DTYPE_COUNT] = {NUMTAB(sub)};
static const ew_row mul_tab[OQ_DTYPE_COUNT] = {NUMTAB(mul)};
static const ew_row div_tab[OQ_DTYPE_COUNT] = {NUMTAB(div)};
static const ew_row max_tab[OQ_DTYPE_COUNT] = {NUMTAB(max)};
static const ew_row min_tab[OQ_DTYPE_COUNT] = {NUMTAB(min)};
static const ew_row prelu_tab[OQ_DTYPE_COUNT] = {NUMTAB(prelu)};
static const ew_row eq_tab[OQ_DTYPE_COUNT] = {NUMTAB(eq)[OQ_DTYPE_BOOL] = eq_bool};
static const ew_row lt_tab[OQ_DTYPE_COUNT] = {NUMTAB(lt)};
static const ew_row le_tab[OQ_DTYPE_COUNT] = {NUMTAB(le)};
static const ew_row gt_tab[OQ_DTYPE_COUNT] = {NUMTAB(gt)};
static const ew_row ge_tab[OQ_DTYPE_COUNT] = {NUMTAB(ge)};
static const ew_row and_tab[OQ_DTYPE_COUNT] = {[OQ_DTYPE_BOOL] = and_bool};
static const ew_row or_tab[OQ_DTYPE_COUNT] = {[OQ_DTYPE_BOOL] = or_bool};
static const ew_row xor_tab[OQ_DTYPE_COUNT] = {[OQ_DTYPE_BOOL] = xor_bool};

/* The row for op kind k on inputs of type dt (NULL if none). */
static ew_row pick_row(oq_ew_kind k, oq_dtype dt, ew_row *frow) {
    const ew_row *tab;
    switch (k) {
    case OQ_EW_ADD:
    case OQ_EW_SUM:
    case OQ_EW_MEAN: tab = add_tab; break;
    case OQ_EW_SUB: tab = sub_tab; break;
    case OQ_EW_MUL: tab = mul_tab; break;
    case OQ_EW_DIV: tab = div_tab; break;
    case OQ_EW_MAX: tab = max_tab; break;
    case OQ_EW_MIN: tab = min_tab; break;
    case OQ_EW_PRELU: tab = prelu_tab; break;
    case OQ_EW_EQUAL: tab = eq_tab; break;
    case OQ_EW_LESS: tab = lt_tab; break;
    case OQ_EW_LESSEQ: tab = le_tab; break;
    case OQ_EW_GREATER: tab = gt_tab; break;
    case OQ_EW_GREATEREQ: tab = ge_tab; break;
    case OQ_EW_AND: tab = and_tab; break;
    case OQ_EW_OR: tab = or_tab; break;
    case OQ_EW_XOR: tab = xor_tab; break;
    default: return NULL;
    }
    if ((unsigned)dt >= OQ_DTYPE_COUNT)
        return NULL;
    *frow = tab[OQ_DTYPE_FLOAT];
    return tab[dt];
}

/* ---- Pow ------------------------------------------------------------------ */

static double load_f64(oq_dtype dt, const char *p) {
    switch (dt) {
    case OQ_DTYPE_FLOAT: { float v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_DOUBLE: { double v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_FLOAT16: { uint16_t v; memcpy(&v, p, sizeof v); return oq_half_to_float(v); }
    case OQ_DTYPE_BFLOAT16: { uint16_t v; memcpy(&v, p, sizeof v); return oq_bf16_to_float(v); }
    case OQ_DTYPE_INT8: return *(const int8_t *)(const void *)p;
    case OQ_DTYPE_INT16: { int16_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_INT32: { int32_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_INT64: { int64_t v; memcpy(&v, p, sizeof v); return (double)v; }
    case OQ_DTYPE_UINT8: return *(const uint8_t *)(const void *)p;
    case OQ_DTYPE_UINT16: { uint16_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_UINT32: { uint32_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_UINT64: { uint64_t v; memcpy(&v, p, sizeof v); return (double)v; }
    default: return 0.0;
    }
}

static bool is_int_type(oq_dtype t) { return type_in(t, M_SINT | M_UINT); }

/* Integer element as int64 (uint64 wraps, which only matters for exponents
 * beyond 2^63, where the power has wrapped to 0 or +-1 long before). */
static int64_t load_i64(oq_dtype dt, const char *p) {
    switch (dt) {
    case OQ_DTYPE_INT8: return *(const int8_t *)(const void *)p;
    case OQ_DTYPE_INT16: { int16_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_INT32: { int32_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_INT64: { int64_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_UINT8: return *(const uint8_t *)(const void *)p;
    case OQ_DTYPE_UINT16: { uint16_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_UINT32: { uint32_t v; memcpy(&v, p, sizeof v); return v; }
    case OQ_DTYPE_UINT64: { uint64_t v; memcpy(&v, p, sizeof v); return (int64_t)v; }
    default: return 0;
    }
}

/* Integer power by squaring, wrapping like numpy's integer power. Negative
 * exponents give the truncated real result (1, -1 or 0); 0^-n gives 0. */
static int64_t ipow(int64_t x, int64_t e) {
    if (e < 0)
        return x == 1 ? 1 : x == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x, u = (uint64_t)e;
    while (u) {
        if (u & 1)
            r *= b;
        b *= b;
        u >>= 1;
    }
    return (int64_t)r;
}

static int64_t sat_f64_i64(double v, int64_t lo, int64_t hi) {
    if (v != v)
        return 0;
    if (v <= (double)lo)
        return lo;
    if (v >= (double)hi)
        return hi;
    return (int64_t)v;
}

/* float32 ** float32, with the common constant exponents done exactly. */
EW_HOT static void pow_f32(const ew_job *J, const char *const *in, char *po, size_t n,
                           const int *s) {
    (void)J;
    const float *a = (const float *)(const void *)in[0], *b = (const float *)(const void *)in[1];
    float *o = (float *)(void *)po;
    if (s[0] && !s[1]) {
        const float e = b[0];
        if (e == 2.0f) {
            for (size_t i = 0; i < n; i++)
                o[i] = a[i] * a[i];
        } else if (e == 1.0f) {
            for (size_t i = 0; i < n; i++)
                o[i] = a[i];
        } else {
            for (size_t i = 0; i < n; i++)
                o[i] = powf(a[i], e);
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        o[i] = powf(a[s[0] ? i : 0], b[s[1] ? i : 0]);
}

/* Any base/exponent type pair of Pow-12+ (output has the base's type). */
static void pow_generic(const ew_job *J, const char *const *in, char *o, size_t n, const int *s) {
    const oq_dtype ta = J->idt[0], tb = J->idt[1];
    const size_t ea = s[0] ? oq_dtype_size(ta) : 0, eb = s[1] ? oq_dtype_size(tb) : 0;
    const bool int_exp = is_int_type(tb);
    for (size_t i = 0; i < n; i++) {
        const char *pa = in[0] + i * ea, *pb = in[1] + i * eb;
        if (ta == OQ_DTYPE_INT32 || ta == OQ_DTYPE_INT64) {
            int64_t x = load_i64(ta, pa), r;
            if (int_exp)
                r = ipow(x, load_i64(tb, pb));
            else if (ta == OQ_DTYPE_INT32)
                r = sat_f64_i64(pow((double)x, load_f64(tb, pb)), INT32_MIN, INT32_MAX);
            else
                r = sat_f64_i64(pow((double)x, load_f64(tb, pb)), INT64_MIN, INT64_MAX);
            if (ta == OQ_DTYPE_INT32) {
                int32_t v = (int32_t)r;
                memcpy(o + i * 4, &v, 4);
            } else {
                memcpy(o + i * 8, &r, 8);
            }
            continue;
        }
        double r = pow(load_f64(ta, pa), load_f64(tb, pb));
        switch (ta) {
        case OQ_DTYPE_FLOAT: { float v = (float)r; memcpy(o + i * 4, &v, 4); break; }
        case OQ_DTYPE_DOUBLE: memcpy(o + i * 8, &r, 8); break;
        default: { /* float16, bfloat16 */
            uint16_t v = ta == OQ_DTYPE_FLOAT16 ? oq_float_to_half((float)r)
                                                : oq_float_to_bf16((float)r);
            memcpy(o + i * 2, &v, 2);
            break;
        }
        }
    }
}

/* ---- Where ----------------------------------------------------------------- */

#define WHERE_ROW(bits)                                                                          \
    static void where_##bits(const ew_job *J, const char *const *in, char *po, size_t n,         \
                             const int *s) {                                                     \
        (void)J;                                                                                 \
        const uint8_t *c = (const uint8_t *)in[0];                                               \
        const uint##bits##_t *x = (const uint##bits##_t *)(const void *)in[1];                   \
        const uint##bits##_t *y = (const uint##bits##_t *)(const void *)in[2];                   \
        uint##bits##_t *o = (uint##bits##_t *)(void *)po;                                        \
        if (s[0] && s[1] && s[2]) {                                                              \
            for (size_t i = 0; i < n; i++)                                                       \
                o[i] = c[i] ? x[i] : y[i];                                                       \
        } else {                                                                                 \
            const size_t sc = (size_t)s[0], sx = (size_t)s[1], sy = (size_t)s[2];                \
            for (size_t i = 0; i < n; i++)                                                       \
                o[i] = c[i * sc] ? x[i * sx] : y[i * sy];                                        \
        }                                                                                        \
    }
WHERE_ROW(8)
WHERE_ROW(16)
WHERE_ROW(32)
WHERE_ROW(64)

/* ---- unary ------------------------------------------------------------------ */

#define UN_SINT(DT, sfx, T, W)                                                                   \
    static void un_##sfx(oq_ew_kind k, const T *restrict x, T *restrict y, size_t n) {           \
        switch (k) {                                                                             \
        case OQ_EW_ABS:                                                                          \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = x[i] < 0 ? (T)(0u - (W)x[i]) : x[i];                                      \
            break;                                                                               \
        case OQ_EW_NEG:                                                                          \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = (T)(0u - (W)x[i]);                                                        \
            break;                                                                               \
        case OQ_EW_SIGN:                                                                         \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = (T)((x[i] > 0) - (x[i] < 0));                                             \
            break;                                                                               \
        case OQ_EW_RELU:                                                                         \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = x[i] < 0 ? (T)0 : x[i];                                                   \
            break;                                                                               \
        default: /* Erf-9 takes integers: erf of the value, truncated */                         \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = (T)erf((double)x[i]);                                                     \
            break;                                                                               \
        }                                                                                        \
    }
#define UN_UINT(DT, sfx, T, W)                                                                   \
    static void un_##sfx(oq_ew_kind k, const T *restrict x, T *restrict y, size_t n) {           \
        switch (k) {                                                                             \
        case OQ_EW_SIGN:                                                                         \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = (T)(x[i] > 0);                                                            \
            break;                                                                               \
        case OQ_EW_ERF:                                                                          \
            for (size_t i = 0; i < n; i++)                                                       \
                y[i] = (T)erf((double)x[i]);                                                     \
            break;                                                                               \
        default: /* Abs */                                                                       \
            memcpy(y, x, n * sizeof *x);                                                         \
            break;                                                                               \
        }                                                                                        \
    }
EW_SINT(UN_SINT)
EW_UINT(UN_UINT)

typedef struct {
    const ew_state *st;
    oq_dtype dt;
    size_t es;
    const char *x;
    char *y;
} un_job;

static void un_chunk(void *arg, size_t b, size_t e) {
    const un_job *J = arg;
    const size_t n = e - b;
    const void *x = J->x + b * J->es;
    void *y = J->y + b * J->es;
    const oq_ew_kind k = J->st->kind;
    switch (J->dt) {
    case OQ_DTYPE_FLOAT: oq_ew_unary_f32(&J->st->u, x, y, n); break;
    case OQ_DTYPE_DOUBLE: oq_ew_unary_f64(&J->st->u, x, y, n); break;
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: {
        float bi[EW_BLOCK], bo[EW_BLOCK];
        for (size_t i = 0; i < n; i += EW_BLOCK) {
            size_t len = n - i < EW_BLOCK ? n - i : EW_BLOCK;
            oq_ew_to_f32(J->dt, (const uint16_t *)x + i, bi, len);
            oq_ew_unary_f32(&J->st->u, bi, bo, len);
            oq_ew_from_f32(J->dt, bo, (uint16_t *)y + i, len);
        }
        break;
    }
#define UN_CASE(DT, sfx, T, W)                                                                   \
    case OQ_DTYPE_##DT: un_##sfx(k, x, y, n); break;
        EW_SINT(UN_CASE)
        EW_UINT(UN_CASE)
#undef UN_CASE
    case OQ_DTYPE_BOOL: { /* Not */
        const uint8_t *bx = x;
        uint8_t *by = y;
        for (size_t i = 0; i < n; i++)
            by[i] = bx[i] == 0;
        break;
    }
    default: break;
    }
}

static void run_contiguous(const oq_node_ctx *ctx, oq_range_fn fn, void *job, size_t count,
                           size_t min_chunk) {
    if (count)
        oq_parallel_for(ctx->pool, count, min_chunk, fn, job);
}

/* Unary ops worth threading at EW_MIN_CHUNK (the rest are memory-bound). */
static bool unary_is_costly(oq_ew_kind k, oq_dtype dt) {
    switch (k) {
    case OQ_EW_ABS:
    case OQ_EW_NEG:
    case OQ_EW_SIGN:
    case OQ_EW_CEIL:
    case OQ_EW_FLOOR:
    case OQ_EW_ROUND:
    case OQ_EW_RECIPROCAL:
    case OQ_EW_HARDSIGMOID:
    case OQ_EW_HARDSWISH:
    case OQ_EW_RELU:
    case OQ_EW_LEAKYRELU:
    case OQ_EW_NOT: return dt == OQ_DTYPE_FLOAT16 || dt == OQ_DTYPE_BFLOAT16;
    default: return true;
    }
}

/* ---- Clip -------------------------------------------------------------------- */

typedef struct {
    oq_dtype dt;
    size_t es;
    const char *x;
    char *y;
    ew_scalar lo, hi; /* .f for float32/16, .d double, .i signed, .u unsigned */
} clip_job;

static void clip_chunk(void *arg, size_t b, size_t e) {
    const clip_job *J = arg;
    const size_t n = e - b;
    const void *px = J->x + b * J->es;
    void *py = J->y + b * J->es;
    switch (J->dt) {
    case OQ_DTYPE_FLOAT: oq_ew_clip_f32(J->lo.f, J->hi.f, px, py, n); break;
    case OQ_DTYPE_DOUBLE: {
        const double *x = px, lo = J->lo.d, hi = J->hi.d;
        double *y = py;
        for (size_t i = 0; i < n; i++) {
            double v = x[i] < lo ? lo : x[i];
            y[i] = v > hi ? hi : v;
        }
        break;
    }
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: {
        float bi[EW_BLOCK], bo[EW_BLOCK];
        for (size_t i = 0; i < n; i += EW_BLOCK) {
            size_t len = n - i < EW_BLOCK ? n - i : EW_BLOCK;
            oq_ew_to_f32(J->dt, (const uint16_t *)px + i, bi, len);
            oq_ew_clip_f32(J->lo.f, J->hi.f, bi, bo, len);
            oq_ew_from_f32(J->dt, bo, (uint16_t *)py + i, len);
        }
        break;
    }
#define CLIP_CASE(DT, sfx, T, field)                                                             \
    case OQ_DTYPE_##DT: {                                                                        \
        const T *x = px, lo = (T)J->lo.field, hi = (T)J->hi.field;                               \
        T *y = py;                                                                               \
        for (size_t i = 0; i < n; i++) {                                                         \
            T v = x[i] < lo ? lo : x[i];                                                         \
            y[i] = v > hi ? hi : v;                                                              \
        }                                                                                        \
        break;                                                                                   \
    }
#define CLIP_SCASE(DT, sfx, T, W) CLIP_CASE(DT, sfx, T, i)
#define CLIP_UCASE(DT, sfx, T, W) CLIP_CASE(DT, sfx, T, u)
        EW_SINT(CLIP_SCASE)
        EW_UINT(CLIP_UCASE)
#undef CLIP_SCASE
#undef CLIP_UCASE
#undef CLIP_CASE
    default: break;
    }
}

/* Element 0 of t into the field clip_chunk reads for t's type. */
static ew_scalar load_bound(const oq_tensor *t) {
    ew_scalar v = {0};
    const char *p = t->data;
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT:
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: v.f = (float)load_f64(t->dtype, p); break;
    case OQ_DTYPE_DOUBLE: v.d = load_f64(t->dtype, p); break;
    case OQ_DTYPE_UINT64: memcpy(&v.u, p, 8); break;
    case OQ_DTYPE_UINT8:
    case OQ_DTYPE_UINT16:
    case OQ_DTYPE_UINT32: v.u = (uint64_t)load_i64(t->dtype, p); break;
    default: v.i = load_i64(t->dtype, p); break;
    }
    return v;
}

/* The widest range of t's type (an absent Clip-11 bound). */
static ew_scalar type_limit(oq_dtype t, bool upper) {
    ew_scalar v = {0};
    switch (t) {
    case OQ_DTYPE_FLOAT:
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: v.f = upper ? INFINITY : -INFINITY; break;
    case OQ_DTYPE_DOUBLE: v.d = upper ? INFINITY : -INFINITY; break;
    case OQ_DTYPE_INT8: v.i = upper ? INT8_MAX : INT8_MIN; break;
    case OQ_DTYPE_INT16: v.i = upper ? INT16_MAX : INT16_MIN; break;
    case OQ_DTYPE_INT32: v.i = upper ? INT32_MAX : INT32_MIN; break;
    case OQ_DTYPE_INT64: v.i = upper ? INT64_MAX : INT64_MIN; break;
    case OQ_DTYPE_UINT8: v.u = upper ? UINT8_MAX : 0; break;
    case OQ_DTYPE_UINT16: v.u = upper ? UINT16_MAX : 0; break;
    case OQ_DTYPE_UINT32: v.u = upper ? UINT32_MAX : 0; break;
    default: v.u = upper ? UINT64_MAX : 0; break;
    }
    return v;
}

/* ---- Cast ---------------------------------------------------------------------- */

typedef struct {
    oq_ew_cast_fn fn;
    size_t es, ed;
    const char *x;
    char *y;
} cast_job;

static void cast_chunk(void *arg, size_t b, size_t e) {
    const cast_job *J = arg;
    J->fn(J->x + b * J->es, J->y + b * J->ed, e - b);
}

static oq_status do_cast(const oq_node_ctx *ctx, const oq_tensor *x, oq_tensor *y,
                         oq_error *err) {
    if (y->count == 0)
        return OQ_OK;
    if (x->dtype == y->dtype) {
        if (y->data != x->data)
            memcpy(y->data, x->data, y->nbytes);
        return OQ_OK;
    }
    cast_job J = {oq_ew_cast_kernel(x->dtype, y->dtype), oq_dtype_size(x->dtype),
                  oq_dtype_size(y->dtype), x->data, y->data};
    if (!J.fn)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: no conversion from %s to %s", ctx->label,
                      oq_dtype_name(x->dtype), oq_dtype_name(y->dtype));
    run_contiguous(ctx, cast_chunk, &J, y->count, EW_MIN_CHUNK_CHEAP);
    return OQ_OK;
}

/* ---- infer ------------------------------------------------------------------------ */

static oq_status infer_unary(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)) || (s = check_arity(ctx, in, 1, 1, 1, 1, err)))
        return s;
    const ew_state *st = ctx->state;
    if ((s = check_type(ctx, in[0], 0, info[st->kind].types, err)))
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

static oq_status infer_binary(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)) || (s = check_arity(ctx, in, 2, 2, 2, 1, err)))
        return s;
    const ew_state *st = ctx->state;
    const oq_tensor *a = in[0], *b = in[1];
    if ((s = check_type(ctx, a, 0, info[st->kind].types, err)))
        return s;
    if (st->cls == C_POW && ctx->opset >= 12) { /* Pow-12: exponent type independent of base */
        if ((s = check_type(ctx, b, 1, M_NUM, err)))
            return s;
    } else if ((s = check_same_type(ctx, a, b, 1, err))) {
        return s;
    }
    oq_dtype odt = st->cls == C_COMPARE || st->cls == C_LOGIC ? OQ_DTYPE_BOOL : a->dtype;
    oq_tensor v;
    if (st->legacy) {
        if ((s = legacy_view(ctx, st, a, b, &v, err)))
            return s;
        return oq_out_shape(&out[0], odt, a->rank, a->dims, err);
    }
    if (st->cls == C_PRELU) {
        if ((s = prelu_view(ctx, a, b, &v, err)))
            return s;
        return oq_out_shape(&out[0], odt, a->rank, a->dims, err);
    }
    int rank;
    int64_t dims[OQ_MAX_RANK];
    if ((s = oq_broadcast_shape(ctx, in, 2, &rank, dims, err)))
        return s;
    return oq_out_shape(&out[0], odt, rank, dims, err);
}

static oq_status infer_variadic(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)) ||
        (s = check_arity(ctx, in, 1, INT32_MAX, ctx->n_inputs, 1, err)))
        return s;
    const ew_state *st = ctx->state;
    if ((s = check_type(ctx, in[0], 0, info[st->kind].types, err)))
        return s;
    for (int i = 1; i < ctx->n_inputs; i++)
        if ((s = check_same_type(ctx, in[0], in[i], i, err)))
            return s;
    int rank;
    int64_t dims[OQ_MAX_RANK];
    if ((s = oq_broadcast_shape(ctx, in, ctx->n_inputs, &rank, dims, err)))
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, rank, dims, err);
}

static oq_status infer_where(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)) || (s = check_arity(ctx, in, 3, 3, 3, 1, err)) ||
        (s = check_type(ctx, in[0], 0, M_BOOL, err)) ||
        (s = check_type(ctx, in[1], 1, M_NUM | M_BOOL, err)) ||
        (s = check_same_type(ctx, in[1], in[2], 2, err)))
        return s;
    int rank;
    int64_t dims[OQ_MAX_RANK];
    if ((s = oq_broadcast_shape(ctx, in, 3, &rank, dims, err)))
        return s;
    return oq_out_shape(&out[0], in[1]->dtype, rank, dims, err);
}

static oq_status infer_clip(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    if (ctx->opset < 11) {
        if ((s = check_arity(ctx, in, 1, 1, 1, 1, err)) ||
            (s = check_type(ctx, in[0], 0, M_FLT, err)))
            return s;
    } else {
        /* Clip-11: min and max are optional scalar inputs of the input's type. */
        if ((s = check_arity(ctx, in, 1, 3, 1, 1, err)) ||
            (s = check_type(ctx, in[0], 0, M_NUM, err)))
            return s;
        for (int i = 1; i < ctx->n_inputs; i++) {
            if (!in[i])
                continue;
            if ((s = check_same_type(ctx, in[0], in[i], i, err)))
                return s;
            if (!is_scalar_like(in[i]))
                return oq_err(err, OQ_EINVAL, "%s: %s must be a scalar", ctx->label,
                              i == 1 ? "min" : "max");
        }
    }
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

static oq_status infer_cast(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    const ew_state *st = ctx->state;
    oq_dtype to = st->cast_to;
    if (st->kind == OQ_EW_CASTLIKE) {
        if ((s = check_arity(ctx, in, 2, 2, 2, 1, err)) ||
            (s = check_type(ctx, in[1], 1, M_NUM | M_BOOL, err)))
            return s;
        to = in[1]->dtype;
    } else if ((s = check_arity(ctx, in, 1, 1, 1, 1, err))) {
        return s;
    }
    if ((s = check_type(ctx, in[0], 0, M_NUM | M_BOOL, err)))
        return s;
    return oq_out_shape(&out[0], to, in[0]->rank, in[0]->dims, err);
}

static oq_status infer_identity(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    oq_status s;
    if ((s = check_arity(ctx, in, 1, 1, 1, 1, err)))
        return s;
    if (in[0]->dtype == OQ_DTYPE_STRING || oq_dtype_bits(in[0]->dtype) == 0)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: input type %s is not supported", ctx->label,
                      oq_dtype_name(in[0]->dtype));
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err);
}

static oq_status infer_dropout(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status s;
    /* Dropout-12: ratio and training_mode became optional inputs. */
    if ((s = check_arity(ctx, in, 1, ctx->opset >= 12 ? 3 : 1, 1, 2, err)) ||
        (s = check_type(ctx, in[0], 0, M_FLT, err)))
        return s;
    if (ctx->n_inputs > 1 && in[1]) {
        if ((s = check_type(ctx, in[1], 1, M_FLT, err)))
            return s;
        if (!is_scalar_like(in[1]))
            return oq_err(err, OQ_EINVAL, "%s: ratio must be a scalar", ctx->label);
    }
    if (ctx->n_inputs > 2 && in[2]) {
        if ((s = check_type(ctx, in[2], 2, M_BOOL, err)))
            return s;
        if (!is_scalar_like(in[2]))
            return oq_err(err, OQ_EINVAL, "%s: training_mode must be a scalar", ctx->label);
    }
    if ((s = oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, in[0]->dims, err)))
        return s;
    if (ctx->n_outputs > 1) /* the mask is bool from Dropout-10, the data type before */
        return oq_out_shape(&out[1], ctx->opset >= 10 ? OQ_DTYPE_BOOL : in[0]->dtype,
                            in[0]->rank, in[0]->dims, err);
    return OQ_OK;
}

/* ---- run -------------------------------------------------------------------------- */

static oq_status run_unary(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    const ew_state *st = ctx->state;
    un_job J = {st, in[0]->dtype, oq_dtype_size(in[0]->dtype), in[0]->data, out[0].data};
    run_contiguous(ctx, un_chunk, &J, out[0].count,
                   unary_is_costly(st->kind, J.dt) ? EW_MIN_CHUNK : EW_MIN_CHUNK_CHEAP);
    return OQ_OK;
}

static oq_status run_binary(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                            oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    const ew_state *st = ctx->state;
    const oq_tensor *a = in[0], *b = in[1];
    oq_tensor v = *b;
    if (st->legacy)
        s = legacy_view(ctx, st, a, b, &v, err);
    else if (st->cls == C_PRELU)
        s = prelu_view(ctx, a, b, &v, err);
    if (s)
        return s;
    ew_job J = {0};
    if (st->kind == OQ_EW_POW) {
        if (a->dtype == OQ_DTYPE_FLOAT && b->dtype == OQ_DTYPE_FLOAT) {
            J.row = pow_f32;
        } else if ((a->dtype == OQ_DTYPE_FLOAT16 || a->dtype == OQ_DTYPE_BFLOAT16) &&
                   b->dtype == a->dtype) {
            J.row = row_via_f32;
            J.frow = pow_f32;
        } else {
            J.row = pow_generic;
        }
    } else {
        J.row = pick_row(st->kind, a->dtype, &J.frow);
    }
    if (!J.row)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: no kernel for type %s", ctx->label,
                      oq_dtype_name(a->dtype));
    const oq_tensor *ins[2] = {a, &v};
    job_run(ctx, &J, &out[0], ins, 2, binary_chunk(st->kind, a->dtype));
    return OQ_OK;
}

static oq_status run_variadic(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    const ew_state *st = ctx->state;
    oq_tensor *y = &out[0];
    const int n = ctx->n_inputs;
    if (n == 1) {
        if (y->count && y->data != in[0]->data)
            memcpy(y->data, in[0]->data, y->nbytes);
        return OQ_OK;
    }
    ew_job J = {0};
    J.row = pick_row(st->kind, y->dtype, &J.frow);
    if (!J.row)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: no kernel for type %s", ctx->label,
                      oq_dtype_name(y->dtype));
    const size_t chunk = binary_chunk(st->kind, y->dtype);
    const oq_tensor *ins[2] = {in[0], in[1]};
    job_run(ctx, &J, y, ins, 2, chunk);
    for (int i = 2; i < n; i++) { /* fold the rest into the output, in place */
        ins[0] = y;
        ins[1] = in[i];
        job_run(ctx, &J, y, ins, 2, chunk);
    }
    if (st->kind == OQ_EW_MEAN) {
        ew_scalar d = {0};
        switch (y->dtype) {
        case OQ_DTYPE_FLOAT: d.f = (float)n; break;
        case OQ_DTYPE_DOUBLE: d.d = n; break;
        case OQ_DTYPE_FLOAT16: d.h = oq_float_to_half((float)n); break;
        default: d.h = oq_float_to_bf16((float)n); break;
        }
        oq_tensor dv = {.dtype = y->dtype, .rank = 0, .count = 1, .data = &d};
        J.row = pick_row(OQ_EW_DIV, y->dtype, &J.frow);
        ins[0] = y;
        ins[1] = &dv;
        job_run(ctx, &J, y, ins, 2, chunk);
    }
    return OQ_OK;
}

static oq_status run_where(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    ew_job J = {0};
    switch (oq_dtype_size(out[0].dtype)) {
    case 1: J.row = where_8; break;
    case 2: J.row = where_16; break;
    case 4: J.row = where_32; break;
    case 8: J.row = where_64; break;
    default:
        return oq_err(err, OQ_EUNSUPPORTED, "%s: no kernel for type %s", ctx->label,
                      oq_dtype_name(out[0].dtype));
    }
    job_run(ctx, &J, &out[0], in, 3, EW_MIN_CHUNK_CHEAP);
    return OQ_OK;
}

static oq_status run_clip(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    oq_status s;
    if ((s = need_state(ctx, err)))
        return s;
    const ew_state *st = ctx->state;
    const oq_tensor *x = in[0];
    clip_job J = {x->dtype, oq_dtype_size(x->dtype), x->data, out[0].data, {0}, {0}};
    if (ctx->opset < 11) {
        if (x->dtype == OQ_DTYPE_DOUBLE) {
            J.lo.d = st->clip_min;
            J.hi.d = st->clip_max;
        } else {
            J.lo.f = st->clip_min;
            J.hi.f = st->clip_max;
        }
    } else {
        J.lo = ctx->n_inputs > 1 && in[1] ? load_bound(in[1]) : type_limit(x->dtype, false);
        J.hi = ctx->n_inputs > 2 && in[2] ? load_bound(in[2]) : type_limit(x->dtype, true);
    }
    run_contiguous(ctx, clip_chunk, &J, out[0].count, EW_MIN_CHUNK_CHEAP);
    return OQ_OK;
}

static oq_status run_cast(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                          oq_error *err) {
    return do_cast(ctx, in[0], &out[0], err);
}

static oq_status run_identity(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    (void)ctx;
    (void)err;
    if (out[0].nbytes && out[0].data != in[0]->data)
        memcpy(out[0].data, in[0]->data, out[0].nbytes);
    return OQ_OK;
}

static oq_status run_dropout(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    /* Inference only: Y = X. Dropout-12 training_mode=true would drop at
     * random, which only a ratio of 0 leaves the identity. Before opset 7
     * is_test=0 also meant training; such models are run as inference. */
    if (ctx->n_inputs > 2 && in[2] && in[2]->count && ((const uint8_t *)in[2]->data)[0]) {
        double ratio = 0.5; /* the default ratio */
        if (ctx->n_inputs > 1 && in[1] && in[1]->count)
            ratio = load_f64(in[1]->dtype, in[1]->data);
        if (ratio != 0.0)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "%s: training_mode is true with ratio %g (random dropout is not "
                          "supported; inference only)",
                          ctx->label, ratio);
    }
    if (out[0].nbytes && out[0].data != in[0]->data)
        memcpy(out[0].data, in[0]->data, out[0].nbytes);
    if (ctx->n_outputs > 1 && out[1].data && out[1].count) {
        oq_tensor *m = &out[1];
        switch (m->dtype) {
        case OQ_DTYPE_BOOL: memset(m->data, 1, m->count); break;
        case OQ_DTYPE_FLOAT:
            for (size_t i = 0; i < m->count; i++)
                ((float *)m->data)[i] = 1.0f;
            break;
        case OQ_DTYPE_DOUBLE:
            for (size_t i = 0; i < m->count; i++)
                ((double *)m->data)[i] = 1.0;
            break;
        default: {
            uint16_t one = m->dtype == OQ_DTYPE_FLOAT16 ? 0x3C00 : 0x3F80;
            for (size_t i = 0; i < m->count; i++)
                ((uint16_t *)m->data)[i] = one;
            break;
        }
        }
    }
    return OQ_OK;
}

/* ---- the table ------------------------------------------------------------------- */

/* Op versions up to 25 changed only the allowed types for these ops, besides
 * the rules branched on ctx->opset above (broadcast before 7, Clip-11
 * inputs, Dropout-10 mask type and -12 inputs, Pow-12 mixed types). */
#define EW_LAST 25
#define E(name, since, infer, run) {"", name, since, EW_LAST, ew_prepare, ew_release, infer, run}

static const oq_op ops[] = {
    E("Abs", 1, infer_unary, run_unary),
    E("Neg", 1, infer_unary, run_unary),
    E("Sign", 9, infer_unary, run_unary),
    E("Ceil", 1, infer_unary, run_unary),
    E("Floor", 1, infer_unary, run_unary),
    E("Round", 11, infer_unary, run_unary),
    E("Reciprocal", 1, infer_unary, run_unary),
    E("Sqrt", 1, infer_unary, run_unary),
    E("Exp", 1, infer_unary, run_unary),
    E("Log", 1, infer_unary, run_unary),
    E("Erf", 9, infer_unary, run_unary),
    E("Tanh", 1, infer_unary, run_unary),
    E("Sigmoid", 1, infer_unary, run_unary),
    E("HardSigmoid", 1, infer_unary, run_unary),
    E("HardSwish", 14, infer_unary, run_unary),
    E("Relu", 1, infer_unary, run_unary),
    E("LeakyRelu", 1, infer_unary, run_unary),
    E("Elu", 1, infer_unary, run_unary),
    E("Selu", 1, infer_unary, run_unary),
    E("Softplus", 1, infer_unary, run_unary),
    E("Mish", 18, infer_unary, run_unary),
    E("Gelu", 20, infer_unary, run_unary),
    E("Not", 1, infer_unary, run_unary),
    E("Add", 1, infer_binary, run_binary),
    E("Sub", 1, infer_binary, run_binary),
    E("Mul", 1, infer_binary, run_binary),
    E("Div", 1, infer_binary, run_binary),
    E("Pow", 1, infer_binary, run_binary),
    E("PRelu", 1, infer_binary, run_binary),
    E("Equal", 1, infer_binary, run_binary),
    E("Less", 1, infer_binary, run_binary),
    E("LessOrEqual", 12, infer_binary, run_binary),
    E("Greater", 1, infer_binary, run_binary),
    E("GreaterOrEqual", 12, infer_binary, run_binary),
    E("And", 1, infer_binary, run_binary),
    E("Or", 1, infer_binary, run_binary),
    E("Xor", 1, infer_binary, run_binary),
    E("Max", 1, infer_variadic, run_variadic),
    E("Min", 1, infer_variadic, run_variadic),
    E("Sum", 1, infer_variadic, run_variadic),
    E("Mean", 1, infer_variadic, run_variadic),
    E("Where", 9, infer_where, run_where),
    E("Clip", 1, infer_clip, run_clip),
    E("Cast", 1, infer_cast, run_cast),
    E("CastLike", 15, infer_cast, run_cast),
    E("Identity", 1, infer_identity, run_identity),
    E("Dropout", 1, infer_dropout, run_dropout),
};

const oq_op_table oq_ops_elementwise = {ops, sizeof ops / sizeof ops[0]};
