/* test_ops_elementwise.c: the elementwise kernels called directly through
 * their oq_op entries: fast paths (vector math, collapsed broadcasts,
 * threads) against plain reference loops, hand-computed spec cases for every
 * op, and the error paths (types, shapes, arity, attributes). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op.h"
#include "testutil.h"

/* The portable (baseline x86-64) build of the float kernels, compiled into
 * this test under other names, so it can be checked against the clone the
 * CPU picks at load time (AVX2+FMA here). */
#define OQ_EW_NO_CLONES
#define oq_ew_unary_f32 portable_unary_f32
#define oq_ew_unary_f64 portable_unary_f64
#define oq_ew_clip_f32 portable_clip_f32
#define oq_ew_expf portable_expf
#define oq_ew_logf portable_logf
#define oq_ew_tanhf portable_tanhf
#define oq_ew_erff portable_erff
#define oq_ew_to_f32 portable_to_f32
#define oq_ew_from_f32 portable_from_f32
#include "ops_elementwise_math.c"
#undef oq_ew_unary_f32
#undef oq_ew_unary_f64
#undef oq_ew_clip_f32
#undef oq_ew_expf
#undef oq_ew_logf
#undef oq_ew_tanhf
#undef oq_ew_erff
#undef oq_ew_to_f32
#undef oq_ew_from_f32
void oq_ew_unary_f32(const oq_ew_unary *u, const float *x, float *y, size_t n);
void oq_ew_clip_f32(float lo, float hi, const float *x, float *y, size_t n);
float oq_ew_expf(float x);
float oq_ew_logf(float x);
float oq_ew_tanhf(float x);
float oq_ew_erff(float x);

/* ---- building and running a node ------------------------------------------ */

typedef struct {
    Onnx__NodeProto node;
    Onnx__AttributeProto attrs[8];
    Onnx__AttributeProto *ptrs[8];
    int64_t ints[8][8];
} tnode;

static void tn_init(tnode *t, const char *op) {
    memset(t, 0, sizeof *t);
    onnx__node_proto__init(&t->node);
    t->node.op_type = (char *)op;
    t->node.attribute = t->ptrs;
}

static Onnx__AttributeProto *tn_attr(tnode *t, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
    size_t i = t->node.n_attribute++;
    ck_assert(i < 8);
    Onnx__AttributeProto *a = &t->attrs[i];
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    t->ptrs[i] = a;
    return a;
}
static void tn_float(tnode *t, const char *name, float v) {
    Onnx__AttributeProto *a = tn_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}
static void tn_int(tnode *t, const char *name, int64_t v) {
    Onnx__AttributeProto *a = tn_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}
static void tn_str(tnode *t, const char *name, const char *v) {
    Onnx__AttributeProto *a = tn_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
}

static const oq_op *find_op(const char *name, int opset) {
    for (size_t i = 0; i < oq_ops_elementwise.count; i++) {
        const oq_op *op = &oq_ops_elementwise.ops[i];
        if (strcmp(op->op_type, name) == 0 && op->since_version <= opset &&
            opset <= op->until_version)
            return op;
    }
    return NULL;
}

static oq_pool *g_pool; /* two threads, for the parallel paths */

/* prepare + infer + allocate + run + release, like the executor. Outputs
 * are filled with junk before run so unwritten elements show. */
static oq_status run_node(tnode *tn, int opset, const oq_tensor *const *in, int n_in, int n_out,
                          oq_tensor **outs, oq_error *err) {
    for (int i = 0; i < n_out; i++)
        outs[i] = NULL;
    const oq_op *op = find_op(tn->node.op_type, opset);
    if (!op)
        return oq_err(err, OQ_ENOTFOUND, "no %s for opset %d", tn->node.op_type, opset);
    const oq_tensor *consts[8] = {0};
    oq_node_ctx ctx = {.node = &tn->node, .label = "node 't'", .opset = opset,
                       .n_inputs = n_in, .n_outputs = n_out, .const_inputs = consts,
                       .pool = g_pool};
    oq_status s = op->prepare ? op->prepare(&ctx, err) : OQ_OK;
    if (s)
        return s;
    oq_tensor o[4];
    memset(o, 0, sizeof o);
    s = op->infer(&ctx, in, o, err);
    for (int i = 0; s == OQ_OK && i < n_out; i++) {
        s = oq_tensor_new(o[i].dtype, o[i].rank, o[i].dims, 0, &outs[i], err);
        if (s == OQ_OK) {
            memset(outs[i]->data, 0xA5, outs[i]->nbytes);
            o[i] = *outs[i];
        }
    }
    if (s == OQ_OK)
        s = op->run(&ctx, in, o, err);
    if (op->release)
        op->release(ctx.state);
    if (s)
        for (int i = 0; i < n_out; i++) {
            oq_tensor_free(outs[i]);
            outs[i] = NULL;
        }
    return s;
}

/* One-output op that must succeed. */
static oq_tensor *run1(tnode *tn, int opset, const oq_tensor *const *in, int n_in) {
    oq_error err = {0};
    oq_tensor *out = NULL;
    oq_status s = run_node(tn, opset, in, n_in, 1, &out, &err);
    ck_assert_msg(s == OQ_OK, "%s: %s", tn->node.op_type, err.msg);
    return out;
}

/* An op that must fail with `code`; returns the message for inspection. */
static void expect_fail(tnode *tn, int opset, const oq_tensor *const *in, int n_in,
                        oq_status code) {
    oq_error err = {0};
    oq_tensor *out[2];
    oq_status s = run_node(tn, opset, in, n_in, 1, out, &err);
    ck_assert_msg(s == code, "%s: got %s (%s), want %s", tn->node.op_type, oq_status_name(s),
                  err.msg, oq_status_name(code));
    ck_assert_msg(s == OQ_ENOTFOUND || strstr(err.msg, "node 't'") || strstr(err.msg, "attribute"),
                  "message does not name the node: %s", err.msg);
}

static oq_tensor *mk(oq_dtype dt, int rank, const int64_t *dims, const void *data) {
    oq_tensor *t = NULL;
    oq_error err = {0};
    int64_t d0[1] = {0};
    ck_assert_msg(oq_tensor_new(dt, rank, rank ? dims : d0, 0, &t, &err) == OQ_OK, "%s", err.msg);
    if (data && t->nbytes)
        memcpy(t->data, data, t->nbytes);
    return t;
}
static oq_tensor *f32v(int rank, const int64_t *dims, const float *v) {
    return mk(OQ_DTYPE_FLOAT, rank, dims, v);
}
static oq_tensor *f32s(float v) { return mk(OQ_DTYPE_FLOAT, 0, NULL, &v); }

static void free_all(oq_tensor **t, int n) {
    for (int i = 0; i < n; i++)
        oq_tensor_free(t[i]);
}

static uint64_t rng_state = 88172645463325252ull;
static double rnd(void) { /* xorshift64, [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void check_shape(const oq_tensor *t, oq_dtype dt, int rank, const int64_t *dims) {
    ck_assert_int_eq(t->dtype, dt);
    ck_assert_int_eq(t->rank, rank);
    for (int d = 0; d < rank; d++)
        ck_assert_int_eq(t->dims[d], dims[d]);
}

static void check_f32(const oq_tensor *t, const float *want, size_t n) {
    ck_assert_int_eq(t->dtype, OQ_DTYPE_FLOAT);
    ck_assert_uint_eq(t->count, n);
    const float *g = t->data;
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i])) {
            ck_assert_msg(isnan(g[i]), "[%zu] got %g want nan", i, (double)g[i]);
            continue;
        }
        double tol = 1e-6 + 1e-5 * fabs(want[i]);
        ck_assert_msg(fabs((double)g[i] - want[i]) <= tol || g[i] == want[i],
                      "[%zu] got %.9g want %.9g", i, (double)g[i], (double)want[i]);
    }
}

/* ---- unary float32 against libm --------------------------------------------- */

typedef struct {
    const char *op;
    double (*ref)(double x, const double *p);
    double lo, hi;
    int nattr;
    const char *attr[2];
    float val[2];
    const char *sattr, *sval;
    int opset;
} unary_case;

static double r_abs(double x, const double *p) { (void)p; return fabs(x); }
static double r_neg(double x, const double *p) { (void)p; return -x; }
static double r_sign(double x, const double *p) { (void)p; return x > 0 ? 1 : x < 0 ? -1 : x; }
static double r_ceil(double x, const double *p) { (void)p; return ceil(x); }
static double r_floor(double x, const double *p) { (void)p; return floor(x); }
static double r_round(double x, const double *p) { (void)p; return nearbyint(x); }
static double r_recip(double x, const double *p) { (void)p; return 1.0 / x; }
static double r_sqrt(double x, const double *p) { (void)p; return sqrt(x); }
static double r_exp(double x, const double *p) { (void)p; return exp(x); }
static double r_log(double x, const double *p) { (void)p; return log(x); }
static double r_erf(double x, const double *p) { (void)p; return erf(x); }
static double r_tanh(double x, const double *p) { (void)p; return tanh(x); }
static double r_sigmoid(double x, const double *p) { (void)p; return 1.0 / (1.0 + exp(-x)); }
/* clamp keeping NaN, like numpy.clip */
static double ref_clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static double r_hsig(double x, const double *p) { return ref_clamp01(p[0] * x + p[1]); }
static double r_hswish(double x, const double *p) {
    (void)p;
    return x * ref_clamp01(x / 6 + 0.5);
}
static double r_relu(double x, const double *p) { (void)p; return x < 0 ? 0 : x; }
static double r_leaky(double x, const double *p) { return x < 0 ? p[0] * x : x; }
static double r_elu(double x, const double *p) { return x < 0 ? p[0] * (exp(x) - 1) : x; }
static double r_selu(double x, const double *p) {
    return x > 0 ? p[1] * x : p[1] * (p[0] * exp(x) - p[0]);
}
static double r_softplus(double x, const double *p) {
    (void)p;
    return x > 30 ? x : log1p(exp(x));
}
static double r_mish(double x, const double *p) { return x * tanh(r_softplus(x, p)); }
static double r_gelu(double x, const double *p) {
    (void)p;
    return 0.5 * x * (1 + erf(x / sqrt(2)));
}
static double r_gelu_tanh(double x, const double *p) {
    (void)p;
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

static const unary_case unary_cases[] = {
    {"Abs", r_abs, -100, 100, 0, {0}, {0}, NULL, NULL, 13},
    {"Neg", r_neg, -100, 100, 0, {0}, {0}, NULL, NULL, 13},
    {"Sign", r_sign, -3, 3, 0, {0}, {0}, NULL, NULL, 13},
    {"Ceil", r_ceil, -20, 20, 0, {0}, {0}, NULL, NULL, 13},
    {"Floor", r_floor, -20, 20, 0, {0}, {0}, NULL, NULL, 13},
    {"Round", r_round, -20, 20, 0, {0}, {0}, NULL, NULL, 11},
    {"Reciprocal", r_recip, -10, 10, 0, {0}, {0}, NULL, NULL, 13},
    {"Sqrt", r_sqrt, 0, 1000, 0, {0}, {0}, NULL, NULL, 13},
    {"Exp", r_exp, -90, 89, 0, {0}, {0}, NULL, NULL, 13},
    {"Log", r_log, 0, 1e6, 0, {0}, {0}, NULL, NULL, 13},
    {"Erf", r_erf, -5, 5, 0, {0}, {0}, NULL, NULL, 13},
    {"Tanh", r_tanh, -10, 10, 0, {0}, {0}, NULL, NULL, 13},
    {"Sigmoid", r_sigmoid, -30, 30, 0, {0}, {0}, NULL, NULL, 13},
    {"HardSigmoid", r_hsig, -10, 10, 2, {"alpha", "beta"}, {0.3f, 0.4f}, NULL, NULL, 6},
    {"HardSwish", r_hswish, -10, 10, 0, {0}, {0}, NULL, NULL, 14},
    {"Relu", r_relu, -10, 10, 0, {0}, {0}, NULL, NULL, 14},
    {"LeakyRelu", r_leaky, -10, 10, 1, {"alpha"}, {0.1f}, NULL, NULL, 16},
    {"Elu", r_elu, -10, 10, 1, {"alpha"}, {2.0f}, NULL, NULL, 6},
    {"Selu", r_selu, -10, 10, 2, {"alpha", "gamma"}, {2.0f, 3.0f}, NULL, NULL, 6},
    {"Softplus", r_softplus, -30, 30, 0, {0}, {0}, NULL, NULL, 1},
    {"Mish", r_mish, -30, 30, 0, {0}, {0}, NULL, NULL, 18},
    {"Gelu", r_gelu, -6, 6, 0, {0}, {0}, NULL, NULL, 20},
    {"Gelu", r_gelu_tanh, -6, 6, 0, {0}, {0}, "approximate", "tanh", 20},
};

static const float specials[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, 0.5f, -0.5f, 1.5f,
                                 2.5f, -2.5f, 3.5f, 88.0f, -88.0f, 100.0f, -100.0f, 1e7f,
                                 8388609.0f, -8388609.0f, 3e9f, INFINITY, -INFINITY, NAN};

/* A few ulp of float at the reference, plus an absolute floor for results
 * that cancel toward 0 (Gelu, Elu near their lower asymptotes). */
static bool close_enough(float got, double want) {
    if (isnan(want))
        return isnan(got);
    if (isinf((float)want)) /* beyond the float range */
        return got == (float)want;
    return fabs((double)got - want) <= 2e-6 * fabs(want) + 2e-6;
}

START_TEST(unary_f32_matches_libm) {
    const unary_case *c = &unary_cases[_i];
    const size_t n = 70001; /* crosses thread chunks and block tails */
    int64_t dims[1] = {(int64_t)n};
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, dims, NULL);
    float *xv = x->data;
    for (size_t i = 0; i < n; i++)
        xv[i] = (float)(c->lo + (c->hi - c->lo) * rnd());
    size_t nsp = sizeof specials / sizeof specials[0];
    for (size_t i = 0; i < nsp; i++)
        xv[i * 7] = specials[i];
    tnode tn;
    tn_init(&tn, c->op);
    double p[2] = {0, 0};
    for (int a = 0; a < c->nattr; a++) {
        tn_float(&tn, c->attr[a], c->val[a]);
        p[a] = c->val[a];
    }
    if (c->sattr)
        tn_str(&tn, c->sattr, c->sval);
    const oq_tensor *in[1] = {x};
    oq_tensor *y = run1(&tn, c->opset, in, 1);
    check_shape(y, OQ_DTYPE_FLOAT, 1, dims);
    const float *yv = y->data;
    for (size_t i = 0; i < n; i++) {
        double want = c->ref((double)xv[i], p);
        ck_assert_msg(close_enough(yv[i], want), "%s(%.9g) = %.9g, want %.9g", c->op,
                      (double)xv[i], (double)yv[i], want);
    }
    oq_tensor_free(x);
    oq_tensor_free(y);
}
END_TEST

/* The same ops in float64 (libm) and float16 (through float32). */
START_TEST(unary_f64_f16) {
    const unary_case *c = &unary_cases[_i];
    const size_t n = 1000;
    int64_t dims[1] = {(int64_t)n};
    oq_tensor *x = mk(OQ_DTYPE_DOUBLE, 1, dims, NULL);
    oq_tensor *h = mk(OQ_DTYPE_FLOAT16, 1, dims, NULL);
    double *xv = x->data;
    uint16_t *hv = h->data;
    double lo = c->lo > -10 ? c->lo : -10, hi = c->hi < 10 ? c->hi : 10;
    for (size_t i = 0; i < n; i++) {
        hv[i] = oq_float_to_half((float)(lo + (hi - lo) * rnd()));
        xv[i] = oq_half_to_float(hv[i]);
    }
    tnode tn;
    tn_init(&tn, c->op);
    double p[2] = {0, 0};
    for (int a = 0; a < c->nattr; a++) {
        tn_float(&tn, c->attr[a], c->val[a]);
        p[a] = c->val[a];
    }
    if (c->sattr)
        tn_str(&tn, c->sattr, c->sval);
    const oq_tensor *in[1] = {x};
    oq_tensor *y = run1(&tn, c->opset, in, 1);
    in[0] = h;
    oq_tensor *yh = run1(&tn, c->opset, in, 1);
    ck_assert_int_eq(yh->dtype, OQ_DTYPE_FLOAT16);
    for (size_t i = 0; i < n; i++) {
        double want = c->ref(xv[i], p);
        double got = ((double *)y->data)[i];
        ck_assert_msg(fabs(got - want) <= 1e-12 * fabs(want) + 1e-12 || (isnan(got) && isnan(want)),
                      "%s f64(%.17g) = %.17g want %.17g", c->op, xv[i], got, want);
        double gh = oq_half_to_float(((uint16_t *)yh->data)[i]);
        ck_assert_msg(fabs(gh - want) <= 1e-3 * fabs(want) + 1e-3 || (isnan(gh) && isnan(want)),
                      "%s f16(%g) = %g want %g", c->op, xv[i], gh, want);
    }
    free_all((oq_tensor *[]){x, h, y, yh}, 4);
}
END_TEST

START_TEST(vector_math_accuracy) {
    /* Dense sweeps of the approximations against libm (relative error). */
    double worst[4] = {0};
    for (int i = 0; i <= 400000; i++) {
        float x = -12.0f + 24.0f * (float)i / 400000.0f;
        float e = -87.0f + 175.0f * (float)i / 400000.0f;
        float l = (float)(1e-38 * pow(1e76, i / 400000.0));
        double r[4] = {
            fabs(oq_ew_expf(e) - exp(e)) / exp(e),
            fabs(oq_ew_logf(l) - log(l)) / fmax(fabs(log(l)), 1e-30),
            fabs(oq_ew_tanhf(x) - tanh(x)) / fmax(fabs(tanh(x)), 1e-30),
            fabs(oq_ew_erff(x) - erf(x)) / fmax(fabs(erf(x)), 1e-30),
        };
        for (int k = 0; k < 4; k++)
            worst[k] = fmax(worst[k], r[k]);
    }
    ck_assert_msg(worst[0] < 3e-7 && worst[1] < 3e-7 && worst[2] < 6e-7 && worst[3] < 6e-7,
                  "rel errors exp %g log %g tanh %g erf %g", worst[0], worst[1], worst[2],
                  worst[3]);
    ck_assert(oq_ew_expf(-104.0f) == 0.0f || oq_ew_expf(-104.0f) < 1e-44f);
    ck_assert(isinf(oq_ew_expf(89.0f)));
    ck_assert(oq_ew_expf(-88.0f) > 0 && fabs(oq_ew_expf(-88.0f) - exp(-88.0)) / exp(-88.0) < 1e-6);
    ck_assert(isinf(oq_ew_logf(0.0f)) && oq_ew_logf(0.0f) < 0);
    ck_assert(isnan(oq_ew_logf(-1.0f)) && isnan(oq_ew_expf(NAN)) && isnan(oq_ew_tanhf(NAN)));
    ck_assert(fabs(oq_ew_logf(1e-45f) - log((double)1e-45f)) < 1e-5); /* subnormal input */
}
END_TEST

START_TEST(unary_integers) {
    int64_t d[1] = {6};
    int8_t i8[6] = {-128, -5, 0, 3, 127, -1};
    oq_tensor *x = mk(OQ_DTYPE_INT8, 1, d, i8);
    const oq_tensor *in[1] = {x};
    tnode tn;
    tn_init(&tn, "Abs");
    oq_tensor *y = run1(&tn, 13, in, 1);
    int8_t abs_want[6] = {-128, 5, 0, 3, 127, 1}; /* |-128| wraps in int8 */
    ck_assert_mem_eq(y->data, abs_want, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Neg");
    y = run1(&tn, 13, in, 1);
    int8_t neg_want[6] = {-128, 5, 0, -3, -127, 1};
    ck_assert_mem_eq(y->data, neg_want, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Sign");
    y = run1(&tn, 13, in, 1);
    int8_t sign_want[6] = {-1, -1, 0, 1, 1, -1};
    ck_assert_mem_eq(y->data, sign_want, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Relu");
    y = run1(&tn, 14, in, 1);
    int8_t relu_want[6] = {0, 0, 0, 3, 127, 0};
    ck_assert_mem_eq(y->data, relu_want, 6);
    oq_tensor_free(y);
    oq_tensor_free(x);

    uint32_t u[3] = {0, 7, 4000000000u};
    int64_t d3[1] = {3};
    x = mk(OQ_DTYPE_UINT32, 1, d3, u);
    in[0] = x;
    tn_init(&tn, "Abs");
    y = run1(&tn, 13, in, 1);
    ck_assert_mem_eq(y->data, u, sizeof u);
    oq_tensor_free(y);
    tn_init(&tn, "Sign");
    y = run1(&tn, 13, in, 1);
    uint32_t usign[3] = {0, 1, 1};
    ck_assert_mem_eq(y->data, usign, sizeof usign);
    oq_tensor_free(y);
    tn_init(&tn, "Neg"); /* Neg takes no unsigned types */
    expect_fail(&tn, 13, in, 1, OQ_EMODEL);
    oq_tensor_free(x);

    int64_t i64[3] = {INT64_MIN, -9, 2};
    x = mk(OQ_DTYPE_INT64, 1, d3, i64);
    in[0] = x;
    tn_init(&tn, "Erf");
    y = run1(&tn, 13, in, 1);
    int64_t erf_want[3] = {-1, -1, 0}; /* erf(2) = 0.995 truncates to 0 */
    ck_assert_mem_eq(y->data, erf_want, sizeof erf_want);
    oq_tensor_free(y);
    oq_tensor_free(x);

    uint8_t b[4] = {0, 1, 1, 0};
    int64_t d4[1] = {4};
    x = mk(OQ_DTYPE_BOOL, 1, d4, b);
    in[0] = x;
    tn_init(&tn, "Not");
    y = run1(&tn, 1, in, 1);
    uint8_t nb[4] = {1, 0, 0, 1};
    ck_assert_int_eq(y->dtype, OQ_DTYPE_BOOL);
    ck_assert_mem_eq(y->data, nb, 4);
    oq_tensor_free(y);
    oq_tensor_free(x);
}
END_TEST

START_TEST(unary_spec_examples) {
    int64_t d[1] = {7};
    float xv[7] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 2.6f};
    oq_tensor *x = f32v(1, d, xv);
    const oq_tensor *in[1] = {x};
    tnode tn;
    tn_init(&tn, "Round"); /* half to even */
    oq_tensor *y = run1(&tn, 11, in, 1);
    check_f32(y, (float[]){-2, -2, -0.0f, 0, 2, 2, 3}, 7);
    ck_assert(signbit(((float *)y->data)[2]));
    oq_tensor_free(y);
    tn_init(&tn, "Ceil");
    y = run1(&tn, 13, in, 1);
    check_f32(y, (float[]){-2, -1, -0.0f, 1, 2, 3, 3}, 7);
    ck_assert(signbit(((float *)y->data)[2])); /* ceil(-0.5) is -0 */
    oq_tensor_free(y);
    tn_init(&tn, "Floor");
    y = run1(&tn, 13, in, 1);
    check_f32(y, (float[]){-3, -2, -1, 0, 1, 2, 2}, 7);
    oq_tensor_free(y);
    /* default attributes */
    tn_init(&tn, "HardSigmoid"); /* alpha 0.2 beta 0.5 */
    y = run1(&tn, 6, in, 1);
    check_f32(y, (float[]){0, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f, 1.0f}, 7);
    oq_tensor_free(y);
    tn_init(&tn, "LeakyRelu"); /* alpha 0.01 */
    y = run1(&tn, 6, in, 1);
    check_f32(y, (float[]){-0.025f, -0.015f, -0.005f, 0.5f, 1.5f, 2.5f, 2.6f}, 7);
    oq_tensor_free(y);
    tn_init(&tn, "Elu"); /* alpha 1 */
    y = run1(&tn, 6, in, 1);
    check_f32(y, (float[]){(float)expm1(-2.5), (float)expm1(-1.5), (float)expm1(-0.5), 0.5f, 1.5f,
                           2.5f, 2.6f}, 7);
    oq_tensor_free(y);
    tn_init(&tn, "Selu"); /* the spec's default alpha and gamma */
    y = run1(&tn, 6, in, 1);
    const double sa = 1.67326319217681884765625, sg = 1.05070102214813232421875;
    check_f32(y, (float[]){(float)(sg * sa * expm1(-2.5)), (float)(sg * sa * expm1(-1.5)),
                           (float)(sg * sa * expm1(-0.5)), (float)(sg * 0.5), (float)(sg * 1.5),
                           (float)(sg * 2.5), (float)(sg * 2.6)}, 7);
    oq_tensor_free(y);
    tn_init(&tn, "Gelu");
    tn_str(&tn, "approximate", "fast");
    expect_fail(&tn, 20, in, 1, OQ_EMODEL);
    tn_init(&tn, "Gelu");
    ck_assert_ptr_null(find_op("Gelu", 19)); /* newer ops are not found on older opsets */
    ck_assert_ptr_null(find_op("Relu", 26)); /* nor any op past the last version checked */
    oq_tensor_free(x);
}
END_TEST

/* ---- broadcasting binary ops against a reference ------------------------------ */

/* Offset of output element i in an input of shape (rank, dims) broadcast to
 * the output shape (orank, odims). */
static size_t bcast_offset(size_t i, int orank, const int64_t *odims, int rank,
                           const int64_t *dims) {
    size_t off = 0, mul = 1;
    for (int d = orank - 1; d >= 0; d--) {
        size_t idx = i % (size_t)odims[d];
        i /= (size_t)odims[d];
        int td = d - (orank - rank);
        if (td >= 0) {
            if (dims[td] != 1)
                off += idx * mul;
            mul *= (size_t)dims[td];
        }
    }
    return off;
}

typedef struct {
    int ra;
    int64_t a[5];
    int rb;
    int64_t b[5];
} shape_pair;

static const shape_pair bcast_shapes[] = {
    {4, {2, 3, 4, 5}, 4, {2, 3, 4, 5}},     /* same shape */
    {4, {2, 3, 4, 5}, 0, {0}},              /* tensor op scalar */
    {0, {0}, 3, {3, 4, 5}},                 /* scalar op tensor */
    {4, {2, 16, 7, 7}, 3, {16, 1, 1}},      /* per-channel bias */
    {4, {2, 16, 7, 7}, 4, {2, 16, 1, 1}},   /* squeeze-excite scale */
    {3, {4, 10, 64}, 1, {64}},              /* last-axis */
    {2, {37, 1}, 2, {1, 53}},               /* outer product */
    {4, {2, 3, 4, 5}, 3, {3, 1, 5}},        /* general */
    {3, {1, 4, 1}, 3, {3, 1, 6}},           /* both broadcast */
    {1, {1}, 1, {1}},                       /* single element */
    {3, {2, 0, 4}, 1, {4}},                 /* empty */
    {5, {3, 1, 2, 1, 70}, 4, {4, 2, 5, 70}},
    {2, {300, 257}, 2, {300, 1}},           /* large enough to thread */
    {3, {64, 32, 33}, 3, {64, 1, 33}},
};

static double ref_binop(const char *op, double x, double y) {
    if (!strcmp(op, "Add")) return x + y;
    if (!strcmp(op, "Sub")) return x - y;
    if (!strcmp(op, "Mul")) return x * y;
    if (!strcmp(op, "Div")) return x / y;
    if (!strcmp(op, "Max")) return x > y ? x : y;
    if (!strcmp(op, "Min")) return x < y ? x : y;
    if (!strcmp(op, "Pow")) return pow(x, y);
    if (!strcmp(op, "Less")) return x < y;
    if (!strcmp(op, "LessOrEqual")) return x <= y;
    if (!strcmp(op, "Greater")) return x > y;
    if (!strcmp(op, "GreaterOrEqual")) return x >= y;
    return x == y; /* Equal */
}

START_TEST(binary_broadcast_f32) {
    static const char *ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow",
                                "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"};
    const shape_pair *sp = &bcast_shapes[_i];
    oq_tensor *a = mk(OQ_DTYPE_FLOAT, sp->ra, sp->a, NULL);
    oq_tensor *b = mk(OQ_DTYPE_FLOAT, sp->rb, sp->b, NULL);
    for (size_t i = 0; i < a->count; i++)
        ((float *)a->data)[i] = (float)(0.1 + 4 * rnd());
    for (size_t i = 0; i < b->count; i++)
        ((float *)b->data)[i] = (float)((int)(8 * rnd()) * 0.5 + 0.5); /* some equal to a's */
    for (size_t i = 0; i < a->count && b->count; i += 3)
        ((float *)a->data)[i] = ((float *)b->data)[i % b->count];
    const oq_tensor *in[2] = {a, b};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        tnode tn;
        tn_init(&tn, ops[k]);
        oq_tensor *y = run1(&tn, 16, in, 2);
        int orank = sp->ra > sp->rb ? sp->ra : sp->rb;
        int64_t od[5];
        for (int d = 0; d < orank; d++) {
            int da = d - (orank - sp->ra), db = d - (orank - sp->rb);
            int64_t x = da >= 0 ? sp->a[da] : 1, z = db >= 0 ? sp->b[db] : 1;
            od[d] = x == 1 ? z : x;
        }
        bool cmp = k >= 7;
        check_shape(y, cmp ? OQ_DTYPE_BOOL : OQ_DTYPE_FLOAT, orank, od);
        for (size_t i = 0; i < y->count; i++) {
            float x = ((float *)a->data)[bcast_offset(i, orank, od, sp->ra, sp->a)];
            float z = ((float *)b->data)[bcast_offset(i, orank, od, sp->rb, sp->b)];
            double want = ref_binop(ops[k], x, z);
            if (cmp) {
                ck_assert_msg(((uint8_t *)y->data)[i] == (uint8_t)want, "%s [%zu]", ops[k], i);
            } else {
                float g = ((float *)y->data)[i];
                /* + - * / max min round exactly like the reference */
                bool ok = k == 6 ? fabs(g - want) <= 1e-6 * fabs(want) : g == (float)want;
                ck_assert_msg(ok, "%s shape#%d [%zu]: %g op %g = %g want %g", ops[k], _i, i,
                              (double)x, (double)z, (double)g, want);
            }
        }
        oq_tensor_free(y);
    }
    oq_tensor_free(a);
    oq_tensor_free(b);
}
END_TEST

START_TEST(binary_other_types) {
    /* every numeric type through Add and Less on a broadcast pair */
    static const oq_dtype types[] = {OQ_DTYPE_DOUBLE, OQ_DTYPE_FLOAT16, OQ_DTYPE_BFLOAT16,
                                     OQ_DTYPE_INT8, OQ_DTYPE_INT16, OQ_DTYPE_INT32,
                                     OQ_DTYPE_INT64, OQ_DTYPE_UINT8, OQ_DTYPE_UINT16,
                                     OQ_DTYPE_UINT32, OQ_DTYPE_UINT64};
    int64_t da[2] = {3, 4}, db[1] = {4};
    double av[12], bv[4];
    for (int i = 0; i < 12; i++)
        av[i] = i * 3 % 11;
    for (int i = 0; i < 4; i++)
        bv[i] = i * 2 + 1;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        oq_dtype dt = types[t];
        oq_tensor *a = mk(dt, 2, da, NULL), *b = mk(dt, 1, db, NULL);
        /* fill through Cast from double */
        oq_ew_cast_fn f = oq_ew_cast_kernel(OQ_DTYPE_DOUBLE, dt);
        f(av, a->data, 12);
        f(bv, b->data, 4);
        const oq_tensor *in[2] = {a, b};
        static const char *ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Less", "Equal"};
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            tnode tn;
            tn_init(&tn, ops[k]);
            oq_tensor *y = run1(&tn, 14, in, 2);
            double got[12];
            if (k >= 6) {
                ck_assert_int_eq(y->dtype, OQ_DTYPE_BOOL);
                for (int i = 0; i < 12; i++)
                    got[i] = ((uint8_t *)y->data)[i];
            } else {
                ck_assert_int_eq(y->dtype, dt);
                oq_ew_cast_kernel(dt, OQ_DTYPE_DOUBLE)(y->data, got, 12);
            }
            for (int i = 0; i < 12; i++) {
                double x = av[i], z = bv[i % 4];
                double want = ref_binop(ops[k], x, z);
                bool is_int = dt != OQ_DTYPE_DOUBLE && dt != OQ_DTYPE_FLOAT16 &&
                              dt != OQ_DTYPE_BFLOAT16;
                bool is_uint = dt == OQ_DTYPE_UINT8 || dt == OQ_DTYPE_UINT16 ||
                               dt == OQ_DTYPE_UINT32 || dt == OQ_DTYPE_UINT64;
                if (is_uint && want < 0) /* unsigned Sub wraps around */
                    want += ldexp(1.0, (int)oq_dtype_bits(dt));
                if (k == 3 && is_int)
                    want = trunc(want);
                double tol = dt == OQ_DTYPE_BFLOAT16  ? 0.01 * fabs(want)
                             : dt == OQ_DTYPE_FLOAT16 ? 1e-3 * fabs(want)
                                                      : 0;
                ck_assert_msg(fabs(got[i] - want) <= tol, "%s %s [%d]: %g want %g", ops[k],
                              oq_dtype_name(dt), i, got[i], want);
            }
            oq_tensor_free(y);
        }
        oq_tensor_free(a);
        oq_tensor_free(b);
    }
}
END_TEST

START_TEST(integer_semantics) {
    /* Div truncates toward zero (Div-14 reference); x/0 -> 0; MIN/-1 wraps. */
    int64_t d[1] = {6};
    int32_t a[6] = {7, -7, 7, -7, INT32_MIN, 5};
    int32_t b[6] = {2, 2, -2, -2, -1, 0};
    oq_tensor *ta = mk(OQ_DTYPE_INT32, 1, d, a), *tb = mk(OQ_DTYPE_INT32, 1, d, b);
    const oq_tensor *in[2] = {ta, tb};
    tnode tn;
    tn_init(&tn, "Div");
    oq_tensor *y = run1(&tn, 14, in, 2);
    int32_t want[6] = {3, -3, -3, 3, INT32_MIN, 0};
    ck_assert_mem_eq(y->data, want, sizeof want);
    oq_tensor_free(y);
    tn_init(&tn, "Mul"); /* wraps */
    y = run1(&tn, 14, in, 2);
    int32_t mwant[6] = {14, -14, -14, 14, INT32_MIN, 0};
    ck_assert_mem_eq(y->data, mwant, sizeof mwant);
    oq_tensor_free(y);
    free_all((oq_tensor *[]){ta, tb}, 2);

    uint8_t ua[3] = {200, 3, 0}, ub[3] = {100, 5, 1};
    int64_t d3[1] = {3};
    ta = mk(OQ_DTYPE_UINT8, 1, d3, ua);
    tb = mk(OQ_DTYPE_UINT8, 1, d3, ub);
    in[0] = ta;
    in[1] = tb;
    tn_init(&tn, "Add");
    y = run1(&tn, 14, in, 2);
    ck_assert_mem_eq(y->data, ((uint8_t[]){44, 8, 1}), 3);
    oq_tensor_free(y);
    tn_init(&tn, "Sub");
    y = run1(&tn, 14, in, 2);
    ck_assert_mem_eq(y->data, ((uint8_t[]){100, 254, 255}), 3);
    oq_tensor_free(y);
    free_all((oq_tensor *[]){ta, tb}, 2);

    uint16_t ma[1] = {65535}, mb[1] = {65535}; /* promoted multiply must not overflow int */
    int64_t d1[1] = {1};
    ta = mk(OQ_DTYPE_UINT16, 1, d1, ma);
    tb = mk(OQ_DTYPE_UINT16, 1, d1, mb);
    in[0] = ta;
    in[1] = tb;
    tn_init(&tn, "Mul");
    y = run1(&tn, 14, in, 2);
    ck_assert_uint_eq(((uint16_t *)y->data)[0], 1);
    oq_tensor_free(y);
    free_all((oq_tensor *[]){ta, tb}, 2);
}
END_TEST

START_TEST(nan_propagation) {
    int64_t d[1] = {3};
    float a[3] = {NAN, 1.0f, 2.0f}, b[3] = {1.0f, NAN, 1.0f};
    oq_tensor *ta = f32v(1, d, a), *tb = f32v(1, d, b);
    const oq_tensor *in[2] = {ta, tb};
    tnode tn;
    tn_init(&tn, "Max");
    oq_tensor *y = run1(&tn, 13, in, 2);
    check_f32(y, (float[]){NAN, NAN, 2.0f}, 3);
    oq_tensor_free(y);
    tn_init(&tn, "Min");
    y = run1(&tn, 13, in, 2);
    check_f32(y, (float[]){NAN, NAN, 1.0f}, 3);
    oq_tensor_free(y);
    in[0] = ta;
    tn_init(&tn, "Relu");
    y = run1(&tn, 14, in, 1);
    ck_assert(isnan(((float *)y->data)[0]));
    oq_tensor_free(y);
    tn_init(&tn, "Clip");
    y = run1(&tn, 13, in, 1);
    ck_assert(isnan(((float *)y->data)[0]));
    oq_tensor_free(y);
    free_all((oq_tensor *[]){ta, tb}, 2);
}
END_TEST

START_TEST(logic_and_where) {
    int64_t da[2] = {2, 2}, db[1] = {2};
    uint8_t a[4] = {0, 1, 1, 0}, b[2] = {1, 0};
    oq_tensor *ta = mk(OQ_DTYPE_BOOL, 2, da, a), *tb = mk(OQ_DTYPE_BOOL, 1, db, b);
    const oq_tensor *in[3] = {ta, tb, NULL};
    static const char *ops[] = {"And", "Or", "Xor", "Equal"};
    uint8_t want[4][4] = {{0, 0, 1, 0}, {1, 1, 1, 0}, {1, 1, 0, 0}, {0, 0, 1, 1}};
    for (int k = 0; k < 4; k++) {
        tnode tn;
        tn_init(&tn, ops[k]);
        oq_tensor *y = run1(&tn, k == 3 ? 11 : 7, in, 2);
        ck_assert_int_eq(y->dtype, OQ_DTYPE_BOOL);
        ck_assert_mem_eq(y->data, want[k], 4);
        oq_tensor_free(y);
    }
    /* Where: cond [2,2], x [2] int64, y scalar */
    int64_t xv[2] = {10, 20}, yv = -1;
    oq_tensor *tx = mk(OQ_DTYPE_INT64, 1, db, xv), *ty = mk(OQ_DTYPE_INT64, 0, NULL, &yv);
    in[1] = tx;
    in[2] = ty;
    tnode tn;
    tn_init(&tn, "Where");
    oq_tensor *y = run1(&tn, 16, in, 3);
    check_shape(y, OQ_DTYPE_INT64, 2, da);
    ck_assert_mem_eq(y->data, ((int64_t[]){-1, 20, 10, -1}), 32);
    oq_tensor_free(y);
    /* Where with every element size and a threaded broadcast */
    static const oq_dtype wt[] = {OQ_DTYPE_UINT8, OQ_DTYPE_FLOAT16, OQ_DTYPE_FLOAT,
                                  OQ_DTYPE_DOUBLE};
    int64_t cd[3] = {50, 1, 700}, xd[2] = {20, 700}, yd[1] = {1};
    oq_tensor *c = mk(OQ_DTYPE_BOOL, 3, cd, NULL);
    for (size_t i = 0; i < c->count; i++)
        ((uint8_t *)c->data)[i] = rnd() < 0.5;
    for (size_t t = 0; t < 4; t++) {
        oq_tensor *x = mk(wt[t], 2, xd, NULL), *z = mk(wt[t], 1, yd, NULL);
        size_t es = oq_dtype_size(wt[t]);
        for (size_t i = 0; i < x->nbytes; i++)
            ((uint8_t *)x->data)[i] = (uint8_t)(i * 7 + 1);
        memset(z->data, 0xEE, es);
        const oq_tensor *win[3] = {c, x, z};
        y = run1(&tn, 16, win, 3);
        int64_t od[3] = {50, 20, 700};
        check_shape(y, wt[t], 3, od);
        for (size_t i = 0; i < y->count; i++) {
            size_t ci = bcast_offset(i, 3, od, 3, cd), xi = bcast_offset(i, 3, od, 2, xd);
            const uint8_t *want_p = ((uint8_t *)c->data)[ci] ? (uint8_t *)x->data + xi * es
                                                              : (uint8_t *)z->data;
            ck_assert(memcmp((uint8_t *)y->data + i * es, want_p, es) == 0);
        }
        free_all((oq_tensor *[]){x, z, y}, 3);
    }
    free_all((oq_tensor *[]){ta, tb, tx, ty, c}, 5);
}
END_TEST

START_TEST(variadic) {
    int64_t d1[2] = {2, 3}, d2[1] = {3}, d3[2] = {2, 1};
    float a[6] = {1, 9, 3, 4, 5, 6}, b[3] = {2, 2, 8}, c[2] = {0, 10};
    oq_tensor *ta = f32v(2, d1, a), *tb = f32v(1, d2, b), *tc = f32v(2, d3, c);
    const oq_tensor *in[3] = {ta, tb, tc};
    tnode tn;
    tn_init(&tn, "Sum");
    oq_tensor *y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){3, 11, 11, 16, 17, 24}, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Mean");
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){1, 11.0f / 3, 11.0f / 3, 16.0f / 3, 17.0f / 3, 8}, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Max");
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){2, 9, 8, 10, 10, 10}, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Min");
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){0, 0, 0, 2, 2, 6}, 6);
    oq_tensor_free(y);
    tn_init(&tn, "Max"); /* one input: a copy */
    y = run1(&tn, 13, in, 1);
    check_f32(y, a, 6);
    oq_tensor_free(y);
    /* float16 Mean of two */
    uint16_t h[3];
    for (int i = 0; i < 3; i++)
        h[i] = oq_float_to_half(b[i]);
    oq_tensor *th = mk(OQ_DTYPE_FLOAT16, 1, d2, h);
    const oq_tensor *hin[2] = {th, th};
    tn_init(&tn, "Mean");
    y = run1(&tn, 13, hin, 2);
    for (int i = 0; i < 3; i++)
        ck_assert(oq_half_to_float(((uint16_t *)y->data)[i]) == b[i]);
    oq_tensor_free(y);
    /* Sum takes float types only; inputs must share a type */
    int32_t iv[3] = {1, 2, 3};
    oq_tensor *ti = mk(OQ_DTYPE_INT32, 1, d2, iv);
    const oq_tensor *iin[2] = {ti, ti};
    tn_init(&tn, "Sum");
    expect_fail(&tn, 13, iin, 2, OQ_EMODEL);
    const oq_tensor *mixed[2] = {ta, ti};
    tn_init(&tn, "Max");
    expect_fail(&tn, 13, mixed, 2, OQ_EMODEL);
    tn_init(&tn, "Max");
    y = run1(&tn, 13, iin, 2);
    ck_assert_mem_eq(y->data, iv, sizeof iv);
    oq_tensor_free(y);
    free_all((oq_tensor *[]){ta, tb, tc, th, ti}, 5);
}
END_TEST

START_TEST(clip_versions) {
    int64_t d[1] = {5};
    float xv[5] = {-3, -1, 0, 1, 3};
    oq_tensor *x = f32v(1, d, xv);
    tnode tn;
    tn_init(&tn, "Clip"); /* Clip-6: attributes */
    tn_float(&tn, "min", -1.5f);
    tn_float(&tn, "max", 2.0f);
    const oq_tensor *in[3] = {x, NULL, NULL};
    oq_tensor *y = run1(&tn, 6, in, 1);
    check_f32(y, (float[]){-1.5f, -1, 0, 1, 2}, 5);
    oq_tensor_free(y);
    tn_init(&tn, "Clip"); /* Clip-6 defaults: the float range */
    y = run1(&tn, 6, in, 1);
    check_f32(y, xv, 5);
    oq_tensor_free(y);
    /* Clip-11+: optional inputs */
    oq_tensor *lo = f32s(-0.5f), *hi = f32s(0.5f);
    tn_init(&tn, "Clip");
    in[1] = lo;
    in[2] = hi;
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){-0.5f, -0.5f, 0, 0.5f, 0.5f}, 5);
    oq_tensor_free(y);
    in[1] = NULL; /* max only */
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){-3, -1, 0, 0.5f, 0.5f}, 5);
    oq_tensor_free(y);
    in[1] = hi; /* min > max: everything becomes max (numpy.clip) */
    in[2] = lo;
    y = run1(&tn, 13, in, 3);
    check_f32(y, (float[]){-0.5f, -0.5f, -0.5f, -0.5f, -0.5f}, 5);
    oq_tensor_free(y);
    /* int8 with a [1]-shaped bound */
    int8_t iv[5] = {-128, -3, 0, 5, 127};
    int8_t b = -2;
    int64_t d1[1] = {1};
    oq_tensor *xi = mk(OQ_DTYPE_INT8, 1, d, iv), *bi = mk(OQ_DTYPE_INT8, 1, d1, &b);
    const oq_tensor *iin[2] = {xi, bi};
    y = run1(&tn, 13, iin, 2);
    ck_assert_mem_eq(y->data, ((int8_t[]){-2, -2, 0, 5, 127}), 5);
    oq_tensor_free(y);
    /* uint64 beyond int64 */
    uint64_t uv[2] = {UINT64_MAX, 5}, ub = UINT64_MAX - 1;
    int64_t d2[1] = {2};
    oq_tensor *xu = mk(OQ_DTYPE_UINT64, 1, d2, uv), *bu = mk(OQ_DTYPE_UINT64, 0, NULL, &ub);
    const oq_tensor *uin[3] = {xu, NULL, bu};
    y = run1(&tn, 13, uin, 3);
    ck_assert_mem_eq(y->data, ((uint64_t[]){UINT64_MAX - 1, 5}), 16);
    oq_tensor_free(y);
    /* errors: non-scalar bound, type mismatch, bounds as inputs before 11 */
    int64_t d5[1] = {5};
    in[1] = x;
    in[2] = NULL;
    (void)d5;
    expect_fail(&tn, 13, in, 2, OQ_EINVAL);
    const oq_tensor *bad[2] = {x, bi};
    expect_fail(&tn, 13, bad, 2, OQ_EMODEL);
    const oq_tensor *old[2] = {x, lo};
    expect_fail(&tn, 6, old, 2, OQ_EMODEL);
    free_all((oq_tensor *[]){x, lo, hi, xi, bi, xu, bu}, 7);
}
END_TEST

START_TEST(cast_rules) {
    int64_t d[1] = {9};
    float fv[9] = {1.9f, -1.9f, 300.0f, -300.0f, NAN, INFINITY, -INFINITY, 0.0f, 127.5f};
    oq_tensor *x = f32v(1, d, fv);
    const oq_tensor *in[2] = {x, NULL};
    tnode tn;
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_INT8);
    oq_tensor *y = run1(&tn, 13, in, 1);
    /* truncation toward zero, saturation, NaN -> 0 */
    ck_assert_mem_eq(y->data, ((int8_t[]){1, -1, 127, -128, 0, 127, -128, 0, 127}), 9);
    oq_tensor_free(y);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_UINT8);
    y = run1(&tn, 13, in, 1);
    ck_assert_mem_eq(y->data, ((uint8_t[]){1, 0, 255, 0, 0, 255, 0, 0, 127}), 9);
    oq_tensor_free(y);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_BOOL);
    y = run1(&tn, 13, in, 1);
    ck_assert_mem_eq(y->data, ((uint8_t[]){1, 1, 1, 1, 1, 1, 1, 0, 1}), 9);
    oq_tensor_free(y);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_INT64);
    y = run1(&tn, 13, in, 1);
    int64_t *l = y->data;
    ck_assert(l[0] == 1 && l[2] == 300 && l[4] == 0 && l[5] == INT64_MAX && l[6] == INT64_MIN);
    oq_tensor_free(y);
    oq_tensor_free(x);
    /* fixed point -> fixed point keeps the low bits: 200 (int16) -> -56 (int8) */
    int16_t sv[3] = {200, -129, 1000};
    int64_t d3[1] = {3};
    x = mk(OQ_DTYPE_INT16, 1, d3, sv);
    in[0] = x;
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_INT8);
    y = run1(&tn, 13, in, 1);
    ck_assert_mem_eq(y->data, ((int8_t[]){-56, 127, -24}), 3);
    oq_tensor_free(y);
    oq_tensor_free(x);
    /* float -> float16 -> float, bfloat16, double; Cast-1 names the type by string */
    float hv[4] = {1.0f / 3, 65504.0f, 1e6f, -2.5f};
    int64_t d4[1] = {4};
    x = f32v(1, d4, hv);
    in[0] = x;
    tn_init(&tn, "Cast");
    tn_str(&tn, "to", "FLOAT16");
    y = run1(&tn, 1, in, 1);
    ck_assert_int_eq(y->dtype, OQ_DTYPE_FLOAT16);
    uint16_t *h = y->data;
    ck_assert(h[0] == 0x3555 && h[1] == 0x7BFF && h[2] == 0x7C00 && h[3] == 0xC100);
    /* CastLike takes the type of its second input */
    const oq_tensor *cl[2] = {y, x};
    tn_init(&tn, "CastLike");
    oq_tensor *back = run1(&tn, 15, cl, 2);
    check_f32(back, (float[]){0.333251953f, 65504.0f, INFINITY, -2.5f}, 4);
    free_all((oq_tensor *[]){y, back}, 2);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_BFLOAT16);
    y = run1(&tn, 13, in, 1);
    ck_assert_uint_eq(((uint16_t *)y->data)[3], 0xC020);
    oq_tensor_free(y);
    /* same type: a copy */
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_FLOAT);
    y = run1(&tn, 13, in, 1);
    check_f32(y, hv, 4);
    oq_tensor_free(y);
    /* every pair of supported types exists in the table */
    static const oq_dtype all[] = {OQ_DTYPE_FLOAT, OQ_DTYPE_DOUBLE, OQ_DTYPE_FLOAT16,
                                   OQ_DTYPE_BFLOAT16, OQ_DTYPE_INT8, OQ_DTYPE_INT16,
                                   OQ_DTYPE_INT32, OQ_DTYPE_INT64, OQ_DTYPE_UINT8,
                                   OQ_DTYPE_UINT16, OQ_DTYPE_UINT32, OQ_DTYPE_UINT64,
                                   OQ_DTYPE_BOOL};
    for (size_t i = 0; i < 13; i++)
        for (size_t j = 0; j < 13; j++) {
            oq_ew_cast_fn f = oq_ew_cast_kernel(all[i], all[j]);
            ck_assert_ptr_nonnull(f);
            uint64_t src = 0, dst = 0;
            double one = 1.0;
            oq_ew_cast_kernel(OQ_DTYPE_DOUBLE, all[i])(&one, &src, 1);
            f(&src, &dst, 1);
            double r = 0;
            oq_ew_cast_kernel(all[j], OQ_DTYPE_DOUBLE)(&dst, &r, 1);
            ck_assert_msg(r == 1.0, "1 through %s -> %s gave %g", oq_dtype_name(all[i]),
                          oq_dtype_name(all[j]), r);
        }
    ck_assert_ptr_null(oq_ew_cast_kernel(OQ_DTYPE_FLOAT, OQ_DTYPE_STRING));
    ck_assert_ptr_null(oq_ew_cast_kernel(OQ_DTYPE_FLOAT8E4M3FN, OQ_DTYPE_FLOAT));
    /* unsupported targets fail at prepare with EUNSUPPORTED; bad ones with EMODEL */
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_STRING);
    expect_fail(&tn, 13, in, 1, OQ_EUNSUPPORTED);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", OQ_DTYPE_FLOAT8E4M3FN);
    expect_fail(&tn, 19, in, 1, OQ_EUNSUPPORTED);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", 23); /* float4e2m1 (Cast-23) */
    expect_fail(&tn, 23, in, 1, OQ_EUNSUPPORTED);
    tn_init(&tn, "Cast");
    tn_int(&tn, "to", 99);
    expect_fail(&tn, 13, in, 1, OQ_EMODEL);
    tn_init(&tn, "Cast");
    expect_fail(&tn, 13, in, 1, OQ_EMODEL); /* no 'to' */
    tn_init(&tn, "Cast");
    tn_float(&tn, "to", 1.0f);
    expect_fail(&tn, 13, in, 1, OQ_EMODEL); /* wrong attribute type */
    oq_tensor_free(x);
}
END_TEST

START_TEST(pow_types) {
    int64_t d[1] = {4};
    float fb[4] = {2, -2, 0.5f, 9};
    int32_t ib[4] = {2, -3, 0, 5};
    int64_t ie[4] = {3, 3, 2, -1};
    float fe[4] = {0.5f, 2, 3, 1.5f};
    oq_tensor *xf = f32v(1, d, fb), *xi = mk(OQ_DTYPE_INT32, 1, d, ib);
    oq_tensor *ei = mk(OQ_DTYPE_INT64, 1, d, ie), *ef = f32v(1, d, fe);
    tnode tn;
    tn_init(&tn, "Pow");
    const oq_tensor *in[2] = {xf, ei}; /* float ** int64 */
    oq_tensor *y = run1(&tn, 15, in, 2);
    check_f32(y, (float[]){8, -8, 0.25f, 1.0f / 9}, 4);
    oq_tensor_free(y);
    in[0] = xi; /* int32 ** int64: exact integer power */
    y = run1(&tn, 15, in, 2);
    ck_assert_int_eq(y->dtype, OQ_DTYPE_INT32);
    ck_assert_mem_eq(y->data, ((int32_t[]){8, -27, 0, 0}), 16);
    oq_tensor_free(y);
    in[1] = ef; /* int32 ** float: truncated */
    y = run1(&tn, 15, in, 2);
    ck_assert_mem_eq(y->data, ((int32_t[]){1, 9, 0, 11}), 16);
    oq_tensor_free(y);
    in[0] = xf; /* float ** float */
    y = run1(&tn, 15, in, 2);
    check_f32(y, (float[]){sqrtf(2), 4, 0.125f, 27}, 4);
    oq_tensor_free(y);
    /* float ** scalar 2 (the LayerNorm pattern) */
    oq_tensor *two = f32s(2.0f);
    in[1] = two;
    y = run1(&tn, 13, in, 2);
    check_f32(y, (float[]){4, 4, 0.25f, 81}, 4);
    oq_tensor_free(y);
    /* mixed types before Pow-12 are an error */
    in[1] = ei;
    expect_fail(&tn, 7, in, 2, OQ_EMODEL);
    /* base types Pow does not take */
    uint8_t u[4] = {1, 2, 3, 4};
    oq_tensor *xu = mk(OQ_DTYPE_UINT8, 1, d, u);
    in[0] = xu;
    expect_fail(&tn, 15, in, 2, OQ_EMODEL);
    free_all((oq_tensor *[]){xf, xi, ei, ef, two, xu}, 6);
}
END_TEST

START_TEST(prelu_and_legacy_broadcast) {
    int64_t dx[4] = {1, 2, 2, 2}, ds[3] = {2, 1, 1}, ds1[1] = {2};
    float xv[8] = {-1, 2, -3, 4, -5, 6, -7, 8}, sv[2] = {0.5f, 0.25f};
    oq_tensor *x = f32v(4, dx, xv), *s = f32v(3, ds, sv), *s1 = f32v(1, ds1, sv);
    const oq_tensor *in[2] = {x, s};
    tnode tn;
    tn_init(&tn, "PRelu");
    oq_tensor *y = run1(&tn, 16, in, 2);
    check_f32(y, (float[]){-0.5f, 2, -1.5f, 4, -1.25f, 6, -1.75f, 8}, 8);
    oq_tensor_free(y);
    in[1] = s1; /* [2] against the last axis from opset 7 ... */
    y = run1(&tn, 16, in, 2);
    check_f32(y, (float[]){-0.5f, 2, -1.5f, 4, -2.5f, 6, -3.5f, 8}, 8);
    oq_tensor_free(y);
    y = run1(&tn, 6, in, 2); /* ... per channel before */
    check_f32(y, (float[]){-0.5f, 2, -1.5f, 4, -1.25f, 6, -1.75f, 8}, 8);
    oq_tensor_free(y);
    in[0] = s; /* slope must broadcast to X, not the other way */
    in[1] = x;
    expect_fail(&tn, 16, in, 2, OQ_EINVAL);

    /* Add-6 with broadcast=1, axis=1: B [2] lines up with A's dim 1 */
    in[0] = x;
    in[1] = s1;
    tn_init(&tn, "Add");
    tn_int(&tn, "broadcast", 1);
    tn_int(&tn, "axis", 1);
    y = run1(&tn, 6, in, 2);
    check_f32(y, (float[]){-0.5f, 2.5f, -2.5f, 4.5f, -4.75f, 6.25f, -6.75f, 8.25f}, 8);
    oq_tensor_free(y);
    tn_init(&tn, "Add"); /* default axis: trailing */
    tn_int(&tn, "broadcast", 1);
    y = run1(&tn, 6, in, 2);
    check_f32(y, (float[]){-0.5f, 2.25f, -2.5f, 4.25f, -4.5f, 6.25f, -6.5f, 8.25f}, 8);
    oq_tensor_free(y);
    tn_init(&tn, "Add"); /* broadcast=0 needs equal shapes */
    expect_fail(&tn, 6, in, 2, OQ_EINVAL);
    tn_init(&tn, "Add");
    tn_int(&tn, "broadcast", 1);
    tn_int(&tn, "axis", 4); /* past the end */
    expect_fail(&tn, 6, in, 2, OQ_EINVAL);
    tn_init(&tn, "Add");
    tn_int(&tn, "broadcast", 1);
    tn_int(&tn, "axis", 0); /* B's 2 against A's dim 0 of 1 */
    expect_fail(&tn, 6, in, 2, OQ_EINVAL);
    free_all((oq_tensor *[]){x, s, s1}, 3);
}
END_TEST

START_TEST(dropout_modes) {
    int64_t d[1] = {3};
    float xv[3] = {1, 2, 3};
    oq_tensor *x = f32v(1, d, xv);
    oq_tensor *ratio = f32s(0.5f), *zero = f32s(0.0f);
    uint8_t t = 1;
    oq_tensor *train = mk(OQ_DTYPE_BOOL, 0, NULL, &t);
    tnode tn;
    tn_init(&tn, "Dropout");
    const oq_tensor *in[3] = {x, ratio, NULL};
    oq_tensor *out[2];
    oq_error err = {0};
    ck_assert_int_eq(run_node(&tn, 13, in, 2, 2, out, &err), OQ_OK);
    check_f32(out[0], xv, 3);
    ck_assert_int_eq(out[1]->dtype, OQ_DTYPE_BOOL);
    ck_assert_mem_eq(out[1]->data, ((uint8_t[]){1, 1, 1}), 3);
    free_all(out, 2);
    in[2] = train; /* training with ratio 0.5: random, not supported */
    ck_assert_int_eq(run_node(&tn, 13, in, 3, 2, out, &err), OQ_EUNSUPPORTED);
    ck_assert(strstr(err.msg, "training_mode"));
    in[1] = zero; /* training with ratio 0 is the identity */
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(run_node(&tn, 13, in, 3, 2, out, &err), OQ_OK);
    check_f32(out[0], xv, 3);
    free_all(out, 2);
    /* Dropout-7: mask has the data type */
    ck_assert_int_eq(run_node(&tn, 7, in, 1, 2, out, &err), OQ_OK);
    check_f32(out[1], (float[]){1, 1, 1}, 3);
    free_all(out, 2);
    expect_fail(&tn, 7, in, 2, OQ_EMODEL); /* no ratio input before 12 */
    tn_init(&tn, "Identity");
    oq_tensor *y = run1(&tn, 13, in, 1);
    check_f32(y, xv, 3);
    oq_tensor_free(y);
    free_all((oq_tensor *[]){x, ratio, zero, train}, 4);
}
END_TEST

START_TEST(errors) {
    int64_t d2[1] = {2}, d3[1] = {3};
    float v[3] = {1, 2, 3};
    int64_t iv[3] = {1, 2, 3};
    oq_tensor *a = f32v(1, d2, v), *b = f32v(1, d3, v), *i = mk(OQ_DTYPE_INT64, 1, d3, iv);
    tnode tn;
    tn_init(&tn, "Add");
    const oq_tensor *in[3] = {a, b, NULL};
    expect_fail(&tn, 14, in, 2, OQ_EINVAL); /* [2] + [3] */
    in[0] = b;
    in[1] = i;
    expect_fail(&tn, 14, in, 2, OQ_EMODEL); /* float + int64 */
    expect_fail(&tn, 14, in, 1, OQ_EMODEL); /* one input */
    in[1] = NULL;
    expect_fail(&tn, 14, in, 2, OQ_EMODEL); /* missing input */
    in[0] = i;
    tn_init(&tn, "Sqrt");
    expect_fail(&tn, 13, in, 1, OQ_EMODEL); /* int64 sqrt */
    /* string tensors cannot be built with oq_tensor_new; infer looks at the header only */
    oq_tensor str_t = {.dtype = OQ_DTYPE_STRING, .rank = 1, .dims = {2}, .count = 2};
    const oq_tensor *str = &str_t;
    in[0] = str;
    tn_init(&tn, "Identity");
    expect_fail(&tn, 13, in, 1, OQ_EUNSUPPORTED);
    in[1] = str;
    tn_init(&tn, "Equal");
    expect_fail(&tn, 19, in, 2, OQ_EUNSUPPORTED);
    in[0] = b;
    in[1] = b;
    tn_init(&tn, "And");
    expect_fail(&tn, 7, in, 2, OQ_EMODEL); /* And of floats */
    tn_init(&tn, "Where");
    in[2] = b;
    expect_fail(&tn, 16, in, 3, OQ_EMODEL); /* float condition */
    tn_init(&tn, "Elu");
    tn_int(&tn, "alpha", 1); /* alpha must be a float */
    in[0] = b;
    expect_fail(&tn, 6, in, 1, OQ_EMODEL);
    free_all((oq_tensor *[]){a, b, i}, 3);
}
END_TEST

START_TEST(table_is_consistent) {
    for (size_t i = 0; i < oq_ops_elementwise.count; i++) {
        const oq_op *op = &oq_ops_elementwise.ops[i];
        ck_assert_str_eq(op->domain, "");
        ck_assert(op->since_version >= 1 && op->since_version <= op->until_version);
        ck_assert(op->infer && op->run && op->prepare && op->release);
        for (size_t j = i + 1; j < oq_ops_elementwise.count; j++) {
            const oq_op *o2 = &oq_ops_elementwise.ops[j];
            ck_assert(strcmp(op->op_type, o2->op_type) != 0 ||
                      o2->since_version > op->until_version ||
                      op->since_version > o2->until_version);
        }
    }
    static const char *need[] = {"Abs", "Neg", "Sign", "Ceil", "Floor", "Round", "Reciprocal",
                                 "Sqrt", "Exp", "Log", "Erf", "Tanh", "Sigmoid", "HardSigmoid",
                                 "HardSwish", "Relu", "LeakyRelu", "Elu", "Selu", "Softplus",
                                 "Mish", "Gelu", "PRelu", "Clip", "Add", "Sub", "Mul", "Div",
                                 "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less",
                                 "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor",
                                 "Not", "Where", "Cast", "CastLike", "Identity", "Dropout"};
    for (size_t k = 0; k < sizeof need / sizeof need[0]; k++)
        ck_assert_msg(find_op(need[k], 25), "%s missing", need[k]);
}
END_TEST

/* The dispatched clone of every unary float32 kernel against the portable
 * build: the same formulas, so equal up to FMA contraction (a few ulp). */
START_TEST(clones_match_portable) {
    enum { N = 4099 };
    static float x[N], fast[N], port[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(rnd() * 40 - 20);
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        x[i * 3] = specials[i];
    for (int k = OQ_EW_ABS; k <= OQ_EW_GELU; k++) {
        for (int g = 0; g < (k == OQ_EW_GELU ? 2 : 1); g++) {
            oq_ew_unary u = {.kind = (oq_ew_kind)k, .alpha = 0.3f, .beta = 0.4f, .gamma = 1.5f,
                             .gelu_tanh = g == 1};
            oq_ew_unary_f32(&u, x, fast, N);
            portable_unary_f32(&u, x, port, N);
            for (int i = 0; i < N; i++) {
                bool same = fast[i] == port[i] || (isnan(fast[i]) && isnan(port[i])) ||
                            fabsf(fast[i] - port[i]) <= 1e-6f * fabsf(port[i]) + 1e-6f;
                ck_assert_msg(same, "kind %d x=%.9g: clone %.9g portable %.9g", k, (double)x[i],
                              (double)fast[i], (double)port[i]);
            }
        }
    }
    oq_ew_clip_f32(-1.0f, 2.0f, x, fast, N);
    portable_clip_f32(-1.0f, 2.0f, x, port, N);
    ck_assert(memcmp(fast, port, sizeof fast) == 0);
    for (int i = 0; i < N; i++) {
        float v = x[i];
        ck_assert(oq_ew_expf(v) == portable_expf(v) ||
                  fabsf(oq_ew_expf(v) - portable_expf(v)) <= 1e-6f * portable_expf(v) || isnan(v));
        ck_assert(fabsf(oq_ew_tanhf(v) - portable_tanhf(v)) <= 1e-6f || isnan(v));
        ck_assert(fabsf(oq_ew_erff(v) - portable_erff(v)) <= 1e-6f || isnan(v));
        float a = fabsf(v);
        ck_assert(fabsf(oq_ew_logf(a) - portable_logf(a)) <= 1e-6f * fabsf(portable_logf(a)) ||
                  isnan(v) || a == 0 || isinf(a));
    }
}
END_TEST

/* Threaded and single-thread runs agree bit for bit. */
START_TEST(threads_agree) {
    int64_t da[4] = {4, 32, 40, 40}, db[3] = {32, 1, 1};
    oq_tensor *a = mk(OQ_DTYPE_FLOAT, 4, da, NULL), *b = mk(OQ_DTYPE_FLOAT, 3, db, NULL);
    for (size_t i = 0; i < a->count; i++)
        ((float *)a->data)[i] = (float)(rnd() * 8 - 4);
    for (size_t i = 0; i < b->count; i++)
        ((float *)b->data)[i] = (float)(rnd() * 8 - 4);
    static const char *ops[] = {"Mul", "Sigmoid", "Erf", "Tanh"};
    for (int k = 0; k < 4; k++) {
        const oq_tensor *in[2] = {a, b};
        tnode tn;
        tn_init(&tn, ops[k]);
        int nin = k == 0 ? 2 : 1;
        oq_tensor *y2 = run1(&tn, 13, in, nin);
        oq_pool *saved = g_pool;
        g_pool = NULL;
        oq_tensor *y1 = run1(&tn, 13, in, nin);
        g_pool = saved;
        ck_assert(memcmp(y1->data, y2->data, y1->nbytes) == 0);
        free_all((oq_tensor *[]){y1, y2}, 2);
    }
    free_all((oq_tensor *[]){a, b}, 2);
}
END_TEST

static void setup(void) {
    oq_error err = {0};
    ck_assert(oq_pool_new(2, &g_pool, &err) == OQ_OK);
}
static void teardown(void) {
    oq_pool_free(g_pool);
    g_pool = NULL;
}

int main(void) {
    Suite *s = suite_create("ops_elementwise");
    TCase *tc = tcase_create("kernels");
    tcase_add_checked_fixture(tc, setup, teardown);
    int nu = (int)(sizeof unary_cases / sizeof unary_cases[0]);
    tcase_add_loop_test(tc, unary_f32_matches_libm, 0, nu);
    tcase_add_loop_test(tc, unary_f64_f16, 0, nu);
    tcase_add_test(tc, vector_math_accuracy);
    tcase_add_test(tc, unary_integers);
    tcase_add_test(tc, unary_spec_examples);
    tcase_add_loop_test(tc, binary_broadcast_f32, 0,
                        (int)(sizeof bcast_shapes / sizeof bcast_shapes[0]));
    tcase_add_test(tc, binary_other_types);
    tcase_add_test(tc, integer_semantics);
    tcase_add_test(tc, nan_propagation);
    tcase_add_test(tc, logic_and_where);
    tcase_add_test(tc, variadic);
    tcase_add_test(tc, clip_versions);
    tcase_add_test(tc, cast_rules);
    tcase_add_test(tc, pow_types);
    tcase_add_test(tc, prelu_and_legacy_broadcast);
    tcase_add_test(tc, dropout_modes);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, table_is_consistent);
    tcase_add_test(tc, clones_match_portable);
    tcase_add_test(tc, threads_agree);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
