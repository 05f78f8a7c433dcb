/* test_ops_quant.c: the quant op family called through its registry entries
 * with hand-built nodes: round half to even and saturation at both ends,
 * per-tensor / per-axis (axis 0 and 1) / blocked scales, scale and zero
 * point round trips, DynamicQuantizeLinear against hand-computed values,
 * integer matmul/conv against plain reference loops, and error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "op.h"
#include "registry.h"
#include "testutil.h"
#include "threadpool.h"

/* ---- node building --------------------------------------------------------- */

#define MAX_ATTR 8

typedef struct {
    Onnx__NodeProto node;
    Onnx__AttributeProto attr[MAX_ATTR];
    Onnx__AttributeProto *ptr[MAX_ATTR];
} tnode;

static void tn_init(tnode *n, const char *op) {
    memset(n, 0, sizeof *n);
    onnx__node_proto__init(&n->node);
    n->node.op_type = (char *)op;
    n->node.name = (char *)"t";
    n->node.attribute = n->ptr;
}

static Onnx__AttributeProto *tn_add(tnode *n, const char *name,
                                    Onnx__AttributeProto__AttributeType type) {
    ck_assert_int_lt((int)n->node.n_attribute, MAX_ATTR);
    Onnx__AttributeProto *a = &n->attr[n->node.n_attribute];
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    n->ptr[n->node.n_attribute++] = a;
    return a;
}

static void tn_int(tnode *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void tn_ints(tnode *n, const char *name, const int64_t *v, size_t k) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = k;
    a->ints = (int64_t *)v;
}

static void tn_string(tnode *n, const char *name, const char *v) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
}

/* ---- tensors --------------------------------------------------------------- */

static oq_tensor *mk(oq_dtype dt, int rank, const int64_t *dims, const void *data) {
    oq_error err = {0};
    oq_tensor *t;
    ck_assert_msg(oq_tensor_new(dt, rank, dims, 0, &t, &err) == OQ_OK, "%s", err.msg);
    if (data && t->nbytes)
        memcpy(t->data, data, t->nbytes);
    return t;
}

#define D(...) ((const int64_t[]){__VA_ARGS__})
#define F(...) ((const float[]){__VA_ARGS__})
#define U8(...) ((const uint8_t[]){__VA_ARGS__})
#define I8(...) ((const int8_t[]){__VA_ARGS__})
#define I32(...) ((const int32_t[]){__VA_ARGS__})

static oq_tensor *scalar_f(float v) {
    return mk(OQ_DTYPE_FLOAT, 0, NULL, &v);
}
static oq_tensor *scalar_u8(uint8_t v) {
    return mk(OQ_DTYPE_UINT8, 0, NULL, &v);
}
static oq_tensor *scalar_i8(int8_t v) {
    return mk(OQ_DTYPE_INT8, 0, NULL, &v);
}

/* ---- running one node -------------------------------------------------- */

#define MAX_OUT 4

typedef struct {
    int n;
    oq_tensor t[MAX_OUT];
    oq_error err;
    oq_status st;
} result;

static oq_pool *g_pool;

static void result_free(result *r) {
    for (int i = 0; i < r->n; i++)
        free(r->t[i].data);
    memset(r, 0, sizeof *r);
}

/* prepare -> infer -> allocate -> run -> release, as the executor does. */
static result run_node(tnode *n, int opset, int n_in, oq_tensor *const *in, int n_out) {
    result r = {0};
    r.n = n_out;
    const oq_op *op = oq_registry_find("", n->node.op_type, opset, NULL);
    ck_assert_msg(op != NULL, "no entry for %s-%d", n->node.op_type, opset);
    const oq_tensor *cin[16] = {NULL};
    for (int i = 0; i < n_in; i++)
        cin[i] = in[i];
    char label[64];
    snprintf(label, sizeof label, "node 't' (%s)", n->node.op_type);
    oq_node_ctx ctx = {.node = &n->node, .label = label, .opset = opset, .n_inputs = n_in,
                       .n_outputs = n_out, .const_inputs = cin, .pool = g_pool};
    r.st = op->prepare ? op->prepare(&ctx, &r.err) : OQ_OK;
    if (r.st != OQ_OK)
        return r;
    r.st = op->infer(&ctx, cin, r.t, &r.err);
    for (int i = 0; r.st == OQ_OK && i < n_out; i++) {
        oq_tensor *t = &r.t[i];
        ck_assert(oq_dims_count(t->dims, t->rank, &t->count));
        ck_assert(oq_dtype_nbytes(t->dtype, t->count, &t->nbytes));
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        memset(t->data, 0xA5, t->nbytes); /* outputs are not zeroed by the executor */
    }
    if (r.st == OQ_OK)
        r.st = op->run(&ctx, cin, r.t, &r.err);
    if (op->release)
        op->release(ctx.state);
    return r;
}

static void free_all(oq_tensor **t, int n) {
    for (int i = 0; i < n; i++)
        oq_tensor_free(t[i]);
}

static void expect_ok(const result *r) {
    ck_assert_msg(r->st == OQ_OK, "status %s: %s", oq_status_name(r->st), r->err.msg);
}

/* Integer outputs compared exactly, whatever their type. */
static void expect_ints(const oq_tensor *t, oq_dtype dt, const int64_t *want, size_t n) {
    ck_assert_msg(t->dtype == dt, "dtype %s, expected %s", oq_dtype_name(t->dtype),
                  oq_dtype_name(dt));
    ck_assert_uint_eq(t->count, n);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (dt == OQ_DTYPE_INT4 || dt == OQ_DTYPE_UINT4) {
            uint8_t b = ((const uint8_t *)t->data)[i / 2];
            v = (b >> ((i & 1) * 4)) & 15;
            if (dt == OQ_DTYPE_INT4 && v >= 8)
                v -= 16;
        } else {
            v = oq_tensor_get_i64(t, i);
        }
        ck_assert_msg(v == want[i], "[%zu] = %lld, expected %lld", i, (long long)v,
                      (long long)want[i]);
    }
}

#define EXPECT_INTS(t, dt, ...)                                                          \
    expect_ints(t, dt, (const int64_t[]){__VA_ARGS__},                                 \
                sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

static void expect_f(const oq_tensor *t, const float *want, size_t n, double tol) {
    ck_assert_int_eq(t->dtype, OQ_DTYPE_FLOAT);
    ck_assert_uint_eq(t->count, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(((const float *)t->data)[i] - want[i]) <= tol, "[%zu] = %.9g, expected %.9g",
                      i, ((const float *)t->data)[i], want[i]);
}

/* The error must name the node and contain a fragment of the reason. */
static void expect_err(result *r, oq_status code, const char *frag) {
    ck_assert_msg(r->st == code, "status %s, expected %s (%s)", oq_status_name(r->st),
                  oq_status_name(code), r->err.msg);
    ck_assert_msg(strstr(r->err.msg, "node 't'") != NULL, "message does not name the node: %s",
                  r->err.msg);
    if (frag)
        ck_assert_msg(strstr(r->err.msg, frag) != NULL, "message '%s' lacks '%s'", r->err.msg,
                      frag);
    result_free(r);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float rndf(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd() % 1000000) / 1000000.0f;
}

/* QuantizeLinear(x, scale, zp) at opset. */
static result quantize(int opset, oq_tensor *x, oq_tensor *scale, oq_tensor *zp) {
    tnode n;
    tn_init(&n, "QuantizeLinear");
    oq_tensor *in[3] = {x, scale, zp};
    return run_node(&n, opset, zp ? 3 : 2, in, 1);
}

/* ---- QuantizeLinear -------------------------------------------------------- */

START_TEST(quantize_rounds_half_to_even) {
    /* ties go to the even integer: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2 (never away from zero) */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(12),
                      F(2.5f, 3.5f, -2.5f, -3.5f, 0.5f, 1.5f, -0.5f, -1.5f, 2.4999f, 2.5001f, 126.5f, -127.5f));
    oq_tensor *s = scalar_f(1.0f), *z = scalar_i8(0);
    result r = quantize(13, x, s, z);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 2, 4, -2, -4, 0, 2, 0, -2, 2, 3, 126, -128);
    result_free(&r);
    /* through a scale: 5 / 2 = 2.5 -> 2, 7 / 2 = 3.5 -> 4, then the zero point */
    oq_tensor *x2 = mk(OQ_DTYPE_FLOAT, 1, D(4), F(5.0f, 7.0f, -5.0f, -7.0f));
    oq_tensor *s2 = scalar_f(2.0f), *z2 = scalar_u8(128);
    r = quantize(10, x2, s2, z2);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 130, 132, 126, 124);
    result_free(&r);
    /* the same ties through the int32-input and float16-scale paths */
    oq_tensor *xi = mk(OQ_DTYPE_INT32, 1, D(4), I32(5, 7, -5, -7));
    r = quantize(13, xi, s2, z2);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 130, 132, 126, 124);
    result_free(&r);
    uint16_t h2 = oq_float_to_half(2.0f);
    oq_tensor *sh = mk(OQ_DTYPE_FLOAT16, 0, NULL, &h2);
    r = quantize(19, x2, sh, z2);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 130, 132, 126, 124);
    result_free(&r);
    r = quantize(25, x2, sh, z2); /* precision follows the float16 scale */
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 130, 132, 126, 124);
    result_free(&r);
    free_all((oq_tensor *[]){x, s, z, x2, s2, z2, xi, sh}, 8);
}
END_TEST

START_TEST(quantize_matches_nearbyint_everywhere) {
    /* the vectorised rounding equals nearbyintf over a dense sweep of values and ties */
    enum { N = 40001 };
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(N), NULL);
    float *xv = x->data;
    for (int i = 0; i < N; i++)
        xv[i] = (float)(i - N / 2) * 0.0125f; /* [-250, 250], many exact .5 ties */
    oq_tensor *s = scalar_f(0.5f), *zu = scalar_u8(3), *zi = scalar_i8(-7);
    for (int pass = 0; pass < 2; pass++) {
        oq_tensor *z = pass ? zi : zu;
        result r = quantize(13, x, s, z);
        expect_ok(&r);
        int lo = pass ? -128 : 0, hi = pass ? 127 : 255, zp = pass ? -7 : 3;
        for (int i = 0; i < N; i++) {
            float q = nearbyintf(xv[i] / 0.5f) + (float)zp;
            int want = q < (float)lo ? lo : q > (float)hi ? hi : (int)q;
            int got = (int)oq_tensor_get_i64(&r.t[0], (size_t)i);
            ck_assert_msg(got == want, "x=%g: %d, expected %d", xv[i], got, want);
        }
        result_free(&r);
    }
    free_all((oq_tensor *[]){x, s, zu, zi}, 4);
}
END_TEST

START_TEST(quantize_saturates_both_ends) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(8),
                      F(1000.0f, -1000.0f, 127.4f, 127.5f, -128.5f, -128.6f, INFINITY, -INFINITY));
    oq_tensor *s = scalar_f(1.0f), *zi = scalar_i8(0);
    result r = quantize(13, x, s, zi);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 127, -128, 127, 127, -128, -128, 127, -128);
    result_free(&r);
    /* uint8 with a zero point near each end */
    oq_tensor *x2 = mk(OQ_DTYPE_FLOAT, 1, D(4), F(10.0f, -20.0f, 300.0f, -300.0f));
    oq_tensor *z250 = scalar_u8(250), *z10 = scalar_u8(10);
    r = quantize(13, x2, s, z250);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 255, 230, 255, 0);
    result_free(&r);
    r = quantize(13, x2, s, z10);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 20, 0, 255, 0);
    result_free(&r);
    /* NaN saturates low, like the reference's integer cast */
    oq_tensor *xn = mk(OQ_DTYPE_FLOAT, 1, D(1), F(NAN));
    r = quantize(13, xn, s, z10);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 0);
    result_free(&r);
    /* 16-bit types (opset 21) */
    int16_t z16 = 256;
    oq_tensor *zs16 = mk(OQ_DTYPE_INT16, 0, NULL, &z16);
    oq_tensor *x3 = mk(OQ_DTYPE_FLOAT, 1, D(5), F(0.0f, -514.0f, 65023.0f, -66047.0f, 70000.0f));
    oq_tensor *s2 = scalar_f(2.0f);
    r = quantize(21, x3, s2, zs16);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT16, 256, -1, 32767, -32768, 32767);
    result_free(&r);
    uint16_t zu16 = 0;
    oq_tensor *zsu16 = mk(OQ_DTYPE_UINT16, 0, NULL, &zu16);
    r = quantize(21, x3, s2, zsu16);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT16, 0, 0, 32512, 0, 35000);
    result_free(&r);
    /* 4-bit types pack two per byte, low nibble first */
    int8_t z4 = 0;
    oq_tensor *zs4 = mk(OQ_DTYPE_INT4, 0, NULL, &z4);
    oq_tensor *x4 = mk(OQ_DTYPE_FLOAT, 1, D(5), F(3.0f, -3.0f, 100.0f, -100.0f, 5.0f));
    r = quantize(21, x4, s2, zs4);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT4, 2, -2, 7, -8, 2);
    result_free(&r);
    free_all((oq_tensor *[]){x, s, zi, x2, z250, z10, xn, zs16, x3, s2, zsu16, zs4, x4}, 13);
}
END_TEST

START_TEST(quantize_default_zero_point_and_output_dtype) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(3), F(-1.0f, 2.0f, 600.0f));
    oq_tensor *s = scalar_f(2.0f);
    /* no zero point: uint8 with zero point 0 */
    result r = quantize(13, x, s, NULL);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 0, 1, 255);
    result_free(&r);
    /* output_dtype (opset 21) picks the type when there is no zero point */
    tnode n;
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "output_dtype", OQ_DTYPE_INT8);
    r = run_node(&n, 21, 2, (oq_tensor *[]){x, s}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 0, 1, 127);
    result_free(&r);
    /* ...and must agree with the zero point when both are given */
    oq_tensor *zu = scalar_u8(0);
    r = run_node(&n, 21, 3, (oq_tensor *[]){x, s, zu}, 1);
    expect_err(&r, OQ_EINVAL, "output_dtype");
    free_all((oq_tensor *[]){x, s, zu}, 3);
}
END_TEST

START_TEST(quantize_per_axis_0_and_1) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(2, 3), F(1, 2, 3, 4, 5, 6));
    /* axis 0: one scale per row */
    oq_tensor *s0 = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1.0f, 2.0f));
    oq_tensor *z0 = mk(OQ_DTYPE_INT8, 1, D(2), I8(0, 10));
    tnode n;
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "axis", 0);
    result r = run_node(&n, 13, 3, (oq_tensor *[]){x, s0, z0}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 1, 2, 3, 12, 12, 13); /* 4/2=2, 5/2=2.5->2, 6/2=3 */
    result_free(&r);
    /* axis 1 (the default): one scale per column */
    oq_tensor *s1 = mk(OQ_DTYPE_FLOAT, 1, D(3), F(1.0f, 2.0f, 4.0f));
    oq_tensor *z1 = mk(OQ_DTYPE_UINT8, 1, D(3), U8(0, 100, 200));
    r = quantize(13, x, s1, z1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 1, 101, 201, 4, 102, 202); /* 3/4 -> 1, 6/4=1.5 -> 2 */
    result_free(&r);
    /* negative axis, 3-D: axis -2 of [2, 3, 2] */
    oq_tensor *x3 = mk(OQ_DTYPE_FLOAT, 3, D(2, 3, 2), F(1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6));
    oq_tensor *z1u = mk(OQ_DTYPE_UINT8, 1, D(3), U8(0, 0, 0));
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "axis", -2);
    r = run_node(&n, 13, 3, (oq_tensor *[]){x3, s1, z1u}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 1, 1, 1, 1, 1, 1, 4, 4, 2, 2, 2, 2);
    result_free(&r);
    /* wrong length for the axis */
    r = run_node(&n, 13, 2, (oq_tensor *[]){x3, s0}, 1);
    expect_err(&r, OQ_EINVAL, "per-axis");
    /* per-axis needs opset 13 */
    r = quantize(10, x, s1, NULL);
    expect_err(&r, OQ_EINVAL, "scalar");
    free_all((oq_tensor *[]){x, s0, z0, s1, z1, x3, z1u}, 7);
}
END_TEST

START_TEST(quantize_blocked) {
    /* x [2, 5], axis 1, block 2: scale [2, 3], the last block is short */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(2, 5), F(2, 4, 6, 8, 10, 3, 6, 9, 12, 15));
    oq_tensor *s = mk(OQ_DTYPE_FLOAT, 2, D(2, 3), F(1, 2, 5, 3, 3, 5));
    oq_tensor *z = mk(OQ_DTYPE_UINT8, 2, D(2, 3), U8(0, 1, 2, 3, 4, 5));
    tnode n;
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "axis", 1);
    tn_int(&n, "block_size", 2);
    result r = run_node(&n, 21, 3, (oq_tensor *[]){x, s, z}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 2, 4, 4, 5, 4, 4, 5, 7, 8, 8);
    result_free(&r);
    /* dequantize back with the same layout */
    oq_tensor *q = mk(OQ_DTYPE_UINT8, 2, D(2, 5), U8(2, 4, 4, 5, 4, 4, 5, 7, 8, 8));
    tn_init(&n, "DequantizeLinear");
    tn_int(&n, "axis", 1);
    tn_int(&n, "block_size", 2);
    r = run_node(&n, 21, 3, (oq_tensor *[]){q, s, z}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(2, 4, 6, 8, 10, 3, 6, 9, 12, 15), 10, 0);
    result_free(&r);
    /* a scale that does not match ceil(5 / 2) = 3 blocks */
    oq_tensor *bad = mk(OQ_DTYPE_FLOAT, 2, D(2, 2), F(1, 1, 1, 1));
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "axis", 1);
    tn_int(&n, "block_size", 2);
    r = run_node(&n, 21, 2, (oq_tensor *[]){x, bad}, 1);
    expect_err(&r, OQ_EINVAL, "blocked");
    free_all((oq_tensor *[]){x, s, z, q, bad}, 5);
}
END_TEST

START_TEST(quantize_dequantize_round_trip) {
    /* |x - dq(q(x))| <= scale / 2 inside the representable range; zero maps exactly */
    enum { N = 4096 };
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(N / 4, 4), NULL);
    float *xv = x->data;
    for (int i = 0; i < N; i++)
        xv[i] = rndf(-3.0f, 5.0f);
    xv[0] = 0.0f;
    oq_tensor *s = mk(OQ_DTYPE_FLOAT, 1, D(4), F(8.0f / 255, 0.05f, 0.04f, 1.0f / 64));
    oq_tensor *zu = mk(OQ_DTYPE_UINT8, 1, D(4), U8(96, 60, 75, 0));
    oq_tensor *zi = mk(OQ_DTYPE_INT8, 1, D(4), I8(-32, -68, -53, -128));
    for (int pass = 0; pass < 2; pass++) {
        oq_tensor *z = pass ? zi : zu;
        result q = quantize(13, x, s, z);
        expect_ok(&q);
        oq_tensor *qt = &q.t[0];
        tnode n;
        tn_init(&n, "DequantizeLinear");
        result d = run_node(&n, 13, 3, (oq_tensor *[]){qt, s, z}, 1);
        expect_ok(&d);
        const float *y = d.t[0].data, *sv = s->data;
        for (int i = 0; i < N; i++) {
            float sc = sv[i % 4];
            int zp = (int)oq_tensor_get_i64(z, (size_t)(i % 4)), lo = pass ? -128 : 0;
            float qmin = (float)(lo - zp) * sc, qmax = (float)(lo + 255 - zp) * sc;
            float want = xv[i] < qmin ? qmin : xv[i] > qmax ? qmax : xv[i];
            ck_assert_msg(fabsf(y[i] - want) <= sc * 0.5f + 1e-6f, "x=%g dq=%g scale %g", xv[i],
                          y[i], sc);
        }
        ck_assert(y[0] == 0.0f);
        result_free(&q);
        result_free(&d);
    }
    free_all((oq_tensor *[]){x, s, zu, zi}, 4);
}
END_TEST

START_TEST(quantize_errors) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1, 2));
    oq_tensor *s = scalar_f(1.0f);
    /* x of a quantized type */
    oq_tensor *xi8 = mk(OQ_DTYPE_INT8, 1, D(2), I8(1, 2));
    result r = quantize(13, xi8, s, NULL);
    expect_err(&r, OQ_EINVAL, "int8");
    /* float8 targets are not supported */
    uint8_t f8 = 0;
    oq_tensor *z8 = mk(OQ_DTYPE_FLOAT8E4M3FN, 0, NULL, &f8);
    r = quantize(19, x, s, z8);
    expect_err(&r, OQ_EUNSUPPORTED, NULL);
    /* int16 before opset 21 */
    int16_t z16v = 0;
    oq_tensor *z16 = mk(OQ_DTYPE_INT16, 0, NULL, &z16v);
    r = quantize(19, x, s, z16);
    expect_err(&r, OQ_EUNSUPPORTED, "int16");
    /* zero point and scale of different sizes */
    oq_tensor *x2 = mk(OQ_DTYPE_FLOAT, 2, D(2, 2), F(1, 2, 3, 4));
    oq_tensor *s2 = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1, 1));
    oq_tensor *z0 = scalar_u8(0);
    r = quantize(13, x2, s2, z0);
    expect_err(&r, OQ_EINVAL, "zero point");
    /* axis out of range */
    tnode n;
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "axis", 2);
    r = run_node(&n, 13, 2, (oq_tensor *[]){x2, s2}, 1);
    expect_err(&r, OQ_EINVAL, "axis");
    /* float16 scale before opset 19 */
    uint16_t h = oq_float_to_half(1.0f);
    oq_tensor *sh = mk(OQ_DTYPE_FLOAT16, 0, NULL, &h);
    r = quantize(13, x, sh, NULL);
    expect_err(&r, OQ_EINVAL, "y_scale");
    /* negative block_size */
    tn_init(&n, "QuantizeLinear");
    tn_int(&n, "block_size", -1);
    r = run_node(&n, 21, 2, (oq_tensor *[]){x, s}, 1);
    expect_err(&r, OQ_EINVAL, "block_size");
    free_all((oq_tensor *[]){x, s, xi8, z8, z16, x2, s2, sh, z0}, 9);
}
END_TEST

/* ---- DequantizeLinear ------------------------------------------------------ */

START_TEST(dequantize_types_and_axes) {
    tnode n;
    tn_init(&n, "DequantizeLinear");
    /* uint8 per tensor (the ONNX example) */
    oq_tensor *x = mk(OQ_DTYPE_UINT8, 1, D(4), U8(0, 3, 128, 255));
    oq_tensor *s = scalar_f(2.0f), *z = scalar_u8(128);
    result r = run_node(&n, 10, 3, (oq_tensor *[]){x, s, z}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-256, -250, 0, 254), 4, 0);
    result_free(&r);
    /* no zero point means 0 */
    r = run_node(&n, 13, 2, (oq_tensor *[]){x, s}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(0, 6, 256, 510), 4, 0);
    result_free(&r);
    /* int32 (no zero point) */
    oq_tensor *xi = mk(OQ_DTYPE_INT32, 1, D(3), I32(-1000000, 0, 1000000));
    oq_tensor *s3 = scalar_f(0.5f);
    r = run_node(&n, 10, 2, (oq_tensor *[]){xi, s3}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-500000, 0, 500000), 3, 0);
    result_free(&r);
    /* per-axis on axis 0 and axis 1 of int8 [2, 3] */
    oq_tensor *x2 = mk(OQ_DTYPE_INT8, 2, D(2, 3), I8(-128, 0, 127, 10, 20, 30));
    oq_tensor *sa0 = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1.0f, 0.5f));
    oq_tensor *za0 = mk(OQ_DTYPE_INT8, 1, D(2), I8(0, 10));
    tn_init(&n, "DequantizeLinear");
    tn_int(&n, "axis", 0);
    r = run_node(&n, 13, 3, (oq_tensor *[]){x2, sa0, za0}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-128, 0, 127, 0, 5, 10), 6, 0);
    result_free(&r);
    oq_tensor *sa1 = mk(OQ_DTYPE_FLOAT, 1, D(3), F(1.0f, 2.0f, 4.0f));
    oq_tensor *za1 = mk(OQ_DTYPE_INT8, 1, D(3), I8(-128, 0, 127));
    tn_init(&n, "DequantizeLinear");
    r = run_node(&n, 13, 3, (oq_tensor *[]){x2, sa1, za1}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(0, 0, 0, 138, 40, -388), 6, 0);
    result_free(&r);
    /* int16, uint16 and packed int4/uint4 (opset 21) */
    uint16_t xu16v[3] = {0, 32767, 65535}, zu16v = 32767;
    oq_tensor *xu16 = mk(OQ_DTYPE_UINT16, 1, D(3), xu16v), *zu16 = mk(OQ_DTYPE_UINT16, 0, NULL, &zu16v);
    r = run_node(&n, 21, 3, (oq_tensor *[]){xu16, s, zu16}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-65534, 0, 65536), 3, 0);
    result_free(&r);
    uint8_t packed[2] = {0x8F, 0x07}; /* int4 elements: -1, -8, 7 */
    oq_tensor *x4 = mk(OQ_DTYPE_INT4, 1, D(3), packed);
    r = run_node(&n, 21, 2, (oq_tensor *[]){x4, s}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-2, -16, 14), 3, 0);
    result_free(&r);
    oq_tensor *xu4 = mk(OQ_DTYPE_UINT4, 1, D(3), packed);
    r = run_node(&n, 21, 2, (oq_tensor *[]){xu4, s}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(30, 16, 14), 3, 0);
    result_free(&r);
    /* float16 scale gives a float16 output; output_dtype (23) overrides */
    uint16_t h = oq_float_to_half(0.5f);
    oq_tensor *sh = mk(OQ_DTYPE_FLOAT16, 0, NULL, &h);
    r = run_node(&n, 19, 3, (oq_tensor *[]){x, sh, z}, 1);
    expect_ok(&r);
    ck_assert_int_eq(r.t[0].dtype, OQ_DTYPE_FLOAT16);
    ck_assert(oq_half_to_float(((uint16_t *)r.t[0].data)[3]) == 63.5f);
    result_free(&r);
    tn_int(&n, "output_dtype", OQ_DTYPE_FLOAT);
    r = run_node(&n, 23, 3, (oq_tensor *[]){x, sh, z}, 1);
    expect_ok(&r);
    expect_f(&r.t[0], F(-64, -62.5f, 0, 63.5f), 4, 0);
    result_free(&r);
    free_all((oq_tensor *[]){x, s, z, xi, s3, x2, sa0, za0, sa1, za1, xu16, zu16, x4, xu4, sh}, 15);
}
END_TEST

START_TEST(dequantize_errors) {
    tnode n;
    tn_init(&n, "DequantizeLinear");
    oq_tensor *x = mk(OQ_DTYPE_UINT8, 1, D(2), U8(1, 2));
    oq_tensor *s = scalar_f(1.0f), *zi = scalar_i8(0);
    result r = run_node(&n, 13, 3, (oq_tensor *[]){x, s, zi}, 1);
    expect_err(&r, OQ_EINVAL, "x_zero_point");
    oq_tensor *xf = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1, 2));
    r = run_node(&n, 13, 2, (oq_tensor *[]){xf, s}, 1);
    expect_err(&r, OQ_EUNSUPPORTED, "float");
    uint8_t f8[2] = {0, 0};
    oq_tensor *x8 = mk(OQ_DTYPE_FLOAT8E5M2, 1, D(2), f8);
    r = run_node(&n, 19, 2, (oq_tensor *[]){x8, s}, 1);
    expect_err(&r, OQ_EUNSUPPORTED, NULL);
    r = run_node(&n, 13, 1, (oq_tensor *[]){x}, 1);
    expect_err(&r, OQ_EINVAL, "x_scale");
    tn_int(&n, "output_dtype", OQ_DTYPE_INT32);
    r = run_node(&n, 23, 2, (oq_tensor *[]){x, s}, 1);
    expect_err(&r, OQ_EINVAL, "output_dtype");
    free_all((oq_tensor *[]){x, s, zi, xf, x8}, 5);
}
END_TEST

/* ---- DynamicQuantizeLinear ------------------------------------------------- */

static void dyn_case(const float *xv, size_t n, float want_scale, int want_zp, const int64_t *want_y) {
    int64_t d = (int64_t)n;
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, &d, xv);
    tnode nd;
    tn_init(&nd, "DynamicQuantizeLinear");
    result r = run_node(&nd, 11, 1, &x, 3);
    expect_ok(&r);
    ck_assert_int_eq(r.t[1].rank, 0);
    ck_assert_int_eq(r.t[2].rank, 0);
    float sc = *(float *)r.t[1].data;
    ck_assert_msg(sc == want_scale, "scale %.9g, expected %.9g", sc, want_scale);
    expect_ints(&r.t[2], OQ_DTYPE_UINT8, (const int64_t[]){want_zp}, 1);
    expect_ints(&r.t[0], OQ_DTYPE_UINT8, want_y, n);
    result_free(&r);
    oq_tensor_free(x);
}

START_TEST(dynamic_quantize_hand_computed) {
    /* min -3, max 2: scale = 5 / 255, zero point = round(3 / scale) = 153;
     * -2.5 / scale = -127.49999 -> -127, 0.5 / scale = 25.5 -> 26 (even) */
    dyn_case(F(0, 2, -3, -2.5f, 1.34f, 0.5f), 6, 5.0f / 255.0f, 153,
             (const int64_t[]){153, 255, 0, 26, 221, 179});
    /* all positive: the range is widened to include 0, zero point 0 */
    dyn_case(F(1, 2.1f, 1.3f, 2.5f, 3.34f, 4.0f, 1.5f, 2.6f, 3.9f, 4.0f, 3.0f, 2.345f), 12,
             4.0f / 255.0f, 0, (const int64_t[]){64, 134, 83, 159, 213, 255, 96, 166, 249, 255, 191, 149});
    /* all negative: zero point saturates at 255 */
    dyn_case(F(-1, -2), 2, 2.0f / 255.0f, 255, (const int64_t[]){128, 0});
    /* mixed: zero point 63.75 -> 64 */
    dyn_case(F(-1, 0, 1, 3), 4, 4.0f / 255.0f, 64, (const int64_t[]){0, 64, 128, 255});
    /* NaN elements stay out of the range and quantize low; 40 elements cross the lanes */
    float xn[40];
    int64_t yn[40];
    for (int i = 0; i < 40; i++) {
        xn[i] = i == 7 ? NAN : (i % 2 ? 2.0f : -1.0f);
        yn[i] = i == 7 ? 0 : (i % 2 ? 255 : 0);
    }
    dyn_case(xn, 40, 3.0f / 255.0f, 85, yn);
    /* all zeros: scale 1, zero point 0 (the reference's rule for an empty range) */
    dyn_case(F(0, 0, 0), 3, 1.0f, 0, (const int64_t[]){0, 0, 0});
    /* wrong input type */
    oq_tensor *xi = mk(OQ_DTYPE_INT8, 1, D(1), I8(1));
    tnode nd;
    tn_init(&nd, "DynamicQuantizeLinear");
    result r = run_node(&nd, 11, 1, &xi, 3);
    expect_err(&r, OQ_EINVAL, "float");
    oq_tensor_free(xi);
}
END_TEST

/* ---- MatMulInteger / QLinearMatMul ---------------------------------------- */

START_TEST(matmul_integer_examples) {
    tnode n;
    tn_init(&n, "MatMulInteger");
    /* the ONNX example: a_zero_point 12 */
    oq_tensor *a = mk(OQ_DTYPE_UINT8, 2, D(4, 3), U8(11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0));
    oq_tensor *b = mk(OQ_DTYPE_UINT8, 2, D(3, 2), U8(1, 4, 2, 5, 3, 6));
    oq_tensor *az = mk(OQ_DTYPE_UINT8, 1, D(1), U8(12)), *bz = mk(OQ_DTYPE_UINT8, 1, D(1), U8(0));
    result r = run_node(&n, 10, 4, (oq_tensor *[]){a, b, az, bz}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, -38, -83, -44, -98, -50, -113, -56, -128);
    result_free(&r);
    /* per-row a zero point (M values) and per-column b zero point (N values) */
    oq_tensor *azr = mk(OQ_DTYPE_UINT8, 1, D(4), U8(11, 10, 9, 8));
    oq_tensor *bzc = mk(OQ_DTYPE_UINT8, 1, D(2), U8(1, 4));
    r = run_node(&n, 10, 4, (oq_tensor *[]){a, b, azr, bzc}, 1);
    expect_ok(&r);
    /* row 0 of a - 11 = [0, -4, -8]; columns of b - zp = [0, 1, 2] and [0, 1, 2] */
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, -20, -20, -20, -20, -20, -20, -20, -20);
    result_free(&r);
    /* 32-bit accumulation wraps: 70000 * 255 * 255 mod 2^32 */
    enum { K = 70000 };
    oq_tensor *ak = mk(OQ_DTYPE_UINT8, 2, D(1, K), NULL), *bk = mk(OQ_DTYPE_UINT8, 2, D(K, 1), NULL);
    memset(ak->data, 255, K);
    memset(bk->data, 255, K);
    r = run_node(&n, 10, 2, (oq_tensor *[]){ak, bk}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, (int32_t)(uint32_t)(70000ull * 65025ull));
    result_free(&r);
    /* errors: inner dims, zero point types */
    r = run_node(&n, 10, 2, (oq_tensor *[]){a, a}, 1);
    expect_err(&r, OQ_EINVAL, "inner");
    oq_tensor *bzi = scalar_i8(0);
    r = run_node(&n, 10, 4, (oq_tensor *[]){a, b, az, bzi}, 1);
    expect_err(&r, OQ_EINVAL, "zero point");
    oq_tensor *af = mk(OQ_DTYPE_FLOAT, 2, D(1, 3), F(1, 2, 3));
    r = run_node(&n, 10, 2, (oq_tensor *[]){af, b}, 1);
    expect_err(&r, OQ_EINVAL, "int8");
    free_all((oq_tensor *[]){a, b, az, bz, azr, bzc, ak, bk, bzi, af}, 10);
}
END_TEST

START_TEST(matmul_integer_batched_matches_reference) {
    /* int8 a [3, 1, 5, 7] x uint8... (same-type per operand) b [2, 7, 4] with broadcasting */
    oq_tensor *a = mk(OQ_DTYPE_INT8, 4, D(3, 1, 5, 7), NULL);
    oq_tensor *b = mk(OQ_DTYPE_UINT8, 3, D(2, 7, 4), NULL);
    for (size_t i = 0; i < a->count; i++)
        ((int8_t *)a->data)[i] = (int8_t)(rnd() % 256 - 128);
    for (size_t i = 0; i < b->count; i++)
        ((uint8_t *)b->data)[i] = (uint8_t)(rnd() % 256);
    oq_tensor *az = scalar_i8(-3);
    oq_tensor *bz = mk(OQ_DTYPE_UINT8, 1, D(4), U8(0, 128, 255, 7));
    tnode n;
    tn_init(&n, "MatMulInteger");
    result r = run_node(&n, 10, 4, (oq_tensor *[]){a, b, az, bz}, 1);
    expect_ok(&r);
    ck_assert_int_eq(r.t[0].rank, 4);
    ck_assert(r.t[0].dims[0] == 3 && r.t[0].dims[1] == 2 && r.t[0].dims[2] == 5 && r.t[0].dims[3] == 4);
    const int8_t *av = a->data;
    const uint8_t *bv = b->data, *bzv = bz->data;
    const int32_t *y = r.t[0].data;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int m = 0; m < 5; m++)
                for (int c = 0; c < 4; c++) {
                    int32_t s = 0;
                    for (int k = 0; k < 7; k++)
                        s += (av[(i * 5 + m) * 7 + k] + 3) * (bv[(j * 7 + k) * 4 + c] - bzv[c]);
                    ck_assert_int_eq(y[((i * 2 + j) * 5 + m) * 4 + c], s);
                }
    result_free(&r);
    /* 1-D operands: [7] x [7, 4] -> [4], [3, 5, 7] x [7] -> [3, 5] */
    oq_tensor *a1 = mk(OQ_DTYPE_UINT8, 1, D(7), U8(1, 2, 3, 4, 5, 6, 7));
    oq_tensor *b2 = mk(OQ_DTYPE_UINT8, 2, D(7, 4), NULL);
    for (size_t i = 0; i < 28; i++)
        ((uint8_t *)b2->data)[i] = (uint8_t)i;
    r = run_node(&n, 10, 2, (oq_tensor *[]){a1, b2}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, 448, 476, 504, 532);
    result_free(&r);
    oq_tensor *b1 = mk(OQ_DTYPE_UINT8, 1, D(7), U8(1, 1, 1, 1, 1, 1, 1));
    oq_tensor *a3 = mk(OQ_DTYPE_UINT8, 3, D(3, 5, 7), NULL);
    memset(a3->data, 2, a3->nbytes);
    r = run_node(&n, 10, 2, (oq_tensor *[]){a3, b1}, 1);
    expect_ok(&r);
    ck_assert_int_eq(r.t[0].rank, 2);
    for (int i = 0; i < 15; i++)
        ck_assert_int_eq(((int32_t *)r.t[0].data)[i], 14);
    result_free(&r);
    free_all((oq_tensor *[]){a, b, az, bz, a1, b2, b1, a3}, 8);
}
END_TEST

static result qlinear_matmul(int opset, oq_tensor *a, oq_tensor *as, oq_tensor *az, oq_tensor *b,
                             oq_tensor *bs, oq_tensor *bz, oq_tensor *ys, oq_tensor *yz) {
    tnode n;
    tn_init(&n, "QLinearMatMul");
    return run_node(&n, opset, 8, (oq_tensor *[]){a, as, az, b, bs, bz, ys, yz}, 1);
}

START_TEST(qlinear_matmul_examples) {
    /* the ONNX 2-D uint8 example */
    oq_tensor *a = mk(OQ_DTYPE_UINT8, 2, D(2, 4), U8(208, 236, 0, 238, 3, 214, 255, 29));
    oq_tensor *as = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.0066f)), *az = mk(OQ_DTYPE_UINT8, 1, D(1), U8(113));
    oq_tensor *b = mk(OQ_DTYPE_UINT8, 2, D(4, 3), U8(152, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247));
    oq_tensor *bs = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.00705f)), *bz = mk(OQ_DTYPE_UINT8, 1, D(1), U8(114));
    oq_tensor *ys = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.0107f)), *yz = mk(OQ_DTYPE_UINT8, 1, D(1), U8(118));
    result r = qlinear_matmul(10, a, as, az, b, bs, bz, ys, yz);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_UINT8, 168, 115, 255, 1, 66, 151);
    result_free(&r);
    /* int8: the spec saturates; row 1 col 2 is -236 before saturation (onnx
     * 1.21's reference output wraps it to 20, which is wrong) */
    oq_tensor *ai = mk(OQ_DTYPE_INT8, 2, D(2, 4), I8(81, 109, -127, 111, -124, 87, -128, -98));
    oq_tensor *asi = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.00659942626953125f)), *azi = mk(OQ_DTYPE_INT8, 1, D(1), I8(-14));
    oq_tensor *bi = mk(OQ_DTYPE_INT8, 2, D(4, 3), I8(25, -76, 117, -67, -101, -128, -127, 0, 119, 0, 127, 120));
    oq_tensor *bsi = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.007049560546875f)), *bzi = mk(OQ_DTYPE_INT8, 1, D(1), I8(-13));
    oq_tensor *ysi = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.0106964111328125f)), *yzi = mk(OQ_DTYPE_INT8, 1, D(1), I8(-9));
    r = qlinear_matmul(21, ai, asi, azi, bi, bsi, bzi, ysi, yzi);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 41, -12, -9, 1, -75, -128);
    result_free(&r);
    /* per-column b scale: doubling column 2's scale doubles its real value */
    oq_tensor *bsc = mk(OQ_DTYPE_FLOAT, 1, D(3), F(0.00705f, 0.00705f, 0.0141f));
    oq_tensor *bzc = mk(OQ_DTYPE_UINT8, 1, D(3), U8(114, 114, 114));
    oq_tensor *ys2 = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.0214f));
    r = qlinear_matmul(10, a, as, az, b, bsc, bzc, ys2, yz);
    expect_ok(&r);
    const uint8_t *y = r.t[0].data, *av = a->data, *bv = b->data;
    for (int m = 0; m < 2; m++)
        for (int c = 0; c < 3; c++) {
            int32_t acc = 0;
            for (int k = 0; k < 4; k++)
                acc += (av[m * 4 + k] - 113) * (bv[k * 3 + c] - 114);
            float mult = 0.0066f * ((const float *)bsc->data)[c] / 0.0214f;
            double q = nearbyint((double)acc * (double)mult) + 118;
            int want = q < 0 ? 0 : q > 255 ? 255 : (int)q;
            ck_assert_msg(y[m * 3 + c] == want, "[%d,%d] = %d, expected %d", m, c, y[m * 3 + c], want);
        }
    result_free(&r);
    /* a scale that varies along K is refused */
    oq_tensor *ask = mk(OQ_DTYPE_FLOAT, 2, D(1, 4), F(1, 1, 1, 1));
    oq_tensor *azk = mk(OQ_DTYPE_UINT8, 2, D(1, 4), U8(0, 0, 0, 0));
    r = qlinear_matmul(10, a, ask, azk, b, bs, bz, ys, yz);
    expect_err(&r, OQ_EINVAL, "along K");
    /* float16 scales only from opset 21 */
    uint16_t h = oq_float_to_half(0.01f);
    oq_tensor *hs = mk(OQ_DTYPE_FLOAT16, 1, D(1), &h);
    r = qlinear_matmul(10, a, hs, az, b, bs, bz, ys, yz);
    expect_err(&r, OQ_EINVAL, "scales");
    r = qlinear_matmul(10, a, as, bz, b, bs, bzi, ys, yz);
    expect_err(&r, OQ_EINVAL, "zero point");
    free_all((oq_tensor *[]){a, as, az, b, bs, bz, ys, yz, ai, asi, azi, bi, bsi, bzi, ysi, yzi,
                             bsc, bzc, ys2, ask, azk, hs}, 22);
}
END_TEST

START_TEST(qlinear_matmul_requantizes_half_to_even) {
    /* acc * 0.5 lands on exact ties: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4 */
    oq_tensor *a = mk(OQ_DTYPE_INT8, 2, D(8, 1), I8(1, 3, 5, 7, -1, -3, -5, -7));
    oq_tensor *b = mk(OQ_DTYPE_INT8, 2, D(1, 1), I8(1));
    oq_tensor *as = scalar_f(0.5f), *one = scalar_f(1.0f), *z = scalar_i8(0), *yz = scalar_i8(10);
    result r = qlinear_matmul(10, a, as, z, b, one, z, one, yz);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 10, 12, 12, 14, 10, 8, 8, 6);
    result_free(&r);
    /* the same ties through QLinearConv (1x1 kernel) */
    oq_tensor *x = mk(OQ_DTYPE_INT8, 4, D(1, 1, 2, 4), I8(1, 3, 5, 7, -1, -3, -5, -7));
    oq_tensor *w = mk(OQ_DTYPE_INT8, 4, D(1, 1, 1, 1), I8(1));
    tnode n;
    tn_init(&n, "QLinearConv");
    r = run_node(&n, 10, 8, (oq_tensor *[]){x, as, z, w, one, z, one, yz}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT8, 10, 12, 12, 14, 10, 8, 8, 6);
    result_free(&r);
    free_all((oq_tensor *[]){a, b, as, one, z, yz, x, w}, 8);
}
END_TEST

START_TEST(qlinear_matmul_matches_reference) {
    /* per-row a (M-vector), per-column b, random data: plain loop in double */
    enum { M = 9, K = 33, N = 17 };
    oq_tensor *a = mk(OQ_DTYPE_UINT8, 2, D(M, K), NULL), *b = mk(OQ_DTYPE_INT8, 2, D(K, N), NULL);
    for (size_t i = 0; i < a->count; i++)
        ((uint8_t *)a->data)[i] = (uint8_t)(rnd() % 256);
    for (size_t i = 0; i < b->count; i++)
        ((int8_t *)b->data)[i] = (int8_t)(rnd() % 256 - 128);
    oq_tensor *as = mk(OQ_DTYPE_FLOAT, 1, D(M), NULL), *az = mk(OQ_DTYPE_UINT8, 1, D(M), NULL);
    oq_tensor *bs = mk(OQ_DTYPE_FLOAT, 1, D(N), NULL), *bz = mk(OQ_DTYPE_INT8, 1, D(N), NULL);
    for (int i = 0; i < M; i++) {
        ((float *)as->data)[i] = rndf(0.001f, 0.02f);
        ((uint8_t *)az->data)[i] = (uint8_t)(rnd() % 256);
    }
    for (int i = 0; i < N; i++) {
        ((float *)bs->data)[i] = rndf(0.001f, 0.02f);
        ((int8_t *)bz->data)[i] = (int8_t)(rnd() % 20 - 10);
    }
    oq_tensor *ys = scalar_f(0.05f), *yz = scalar_u8(100);
    result r = qlinear_matmul(10, a, as, az, b, bs, bz, ys, yz);
    expect_ok(&r);
    const uint8_t *av = a->data, *azv = az->data, *y = r.t[0].data;
    const int8_t *bv = b->data, *bzv = bz->data;
    int saturated = 0;
    for (int m = 0; m < M; m++)
        for (int c = 0; c < N; c++) {
            int32_t acc = 0;
            for (int k = 0; k < K; k++)
                acc += (av[m * K + k] - azv[m]) * (bv[k * N + c] - bzv[c]);
            float mult = ((float *)as->data)[m] * ((float *)bs->data)[c] / 0.05f;
            double q = nearbyint((double)acc * (double)mult) + 100;
            int want = q < 0 ? 0 : q > 255 ? 255 : (int)q;
            saturated += want == 0 || want == 255;
            ck_assert_msg(y[m * N + c] == want, "[%d,%d] = %d, expected %d", m, c, y[m * N + c], want);
        }
    ck_assert_int_gt(saturated, 0); /* the data reaches both saturation paths */
    result_free(&r);
    free_all((oq_tensor *[]){a, b, as, az, bs, bz, ys, yz}, 8);
    /* batched: a [2, 3, 5] with [2, 3, 1] per-row scales, b [5, 4] per-column,
     * y_scale per output column [4] */
    oq_tensor *a3 = mk(OQ_DTYPE_INT8, 3, D(2, 3, 5), NULL), *b2 = mk(OQ_DTYPE_INT8, 2, D(5, 4), NULL);
    for (size_t i = 0; i < a3->count; i++)
        ((int8_t *)a3->data)[i] = (int8_t)(rnd() % 256 - 128);
    for (size_t i = 0; i < b2->count; i++)
        ((int8_t *)b2->data)[i] = (int8_t)(rnd() % 256 - 128);
    oq_tensor *as3 = mk(OQ_DTYPE_FLOAT, 3, D(2, 3, 1), F(0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f));
    oq_tensor *az3 = mk(OQ_DTYPE_INT8, 3, D(2, 3, 1), I8(0, 1, 2, -3, -4, 5));
    oq_tensor *bs2 = mk(OQ_DTYPE_FLOAT, 1, D(4), F(0.01f, 0.02f, 0.005f, 0.015f));
    oq_tensor *bz2 = mk(OQ_DTYPE_INT8, 1, D(4), I8(0, -1, 2, 0));
    oq_tensor *ys2 = mk(OQ_DTYPE_FLOAT, 1, D(4), F(0.01f, 0.02f, 0.03f, 0.04f));
    oq_tensor *yz2 = mk(OQ_DTYPE_INT8, 1, D(4), I8(0, 10, -10, 5));
    r = qlinear_matmul(21, a3, as3, az3, b2, bs2, bz2, ys2, yz2);
    expect_ok(&r);
    ck_assert(r.t[0].rank == 3 && r.t[0].dims[0] == 2 && r.t[0].dims[1] == 3 && r.t[0].dims[2] == 4);
    const int8_t *a3v = a3->data, *b2v = b2->data, *y3 = r.t[0].data;
    for (int bt = 0; bt < 2; bt++)
        for (int m = 0; m < 3; m++)
            for (int c = 0; c < 4; c++) {
                int32_t acc = 0;
                for (int k = 0; k < 5; k++)
                    acc += (a3v[(bt * 3 + m) * 5 + k] - ((int8_t *)az3->data)[bt * 3 + m]) *
                           (b2v[k * 4 + c] - ((int8_t *)bz2->data)[c]);
                float mult = ((float *)as3->data)[bt * 3 + m] * ((float *)bs2->data)[c] /
                             ((float *)ys2->data)[c];
                double q = nearbyint((double)acc * (double)mult) + ((int8_t *)yz2->data)[c];
                int want = q < -128 ? -128 : q > 127 ? 127 : (int)q;
                ck_assert_int_eq(y3[(bt * 3 + m) * 4 + c], want);
            }
    result_free(&r);
    free_all((oq_tensor *[]){a3, b2, as3, az3, bs2, bz2, ys2, yz2}, 8);
}
END_TEST

/* ---- ConvInteger / QLinearConv --------------------------------------------- */

START_TEST(conv_integer_examples) {
    oq_tensor *x = mk(OQ_DTYPE_UINT8, 4, D(1, 1, 3, 3), U8(2, 3, 4, 5, 6, 7, 8, 9, 10));
    oq_tensor *w = mk(OQ_DTYPE_UINT8, 4, D(1, 1, 2, 2), U8(1, 1, 1, 1));
    oq_tensor *xz = scalar_u8(1);
    tnode n;
    tn_init(&n, "ConvInteger");
    result r = run_node(&n, 10, 3, (oq_tensor *[]){x, w, xz}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, 12, 16, 24, 28);
    result_free(&r);
    /* padding is the zero point (0 after subtracting it); per-channel w zero points */
    oq_tensor *w2 = mk(OQ_DTYPE_UINT8, 4, D(2, 1, 2, 2), U8(1, 1, 1, 1, 1, 1, 1, 1));
    oq_tensor *wz = mk(OQ_DTYPE_UINT8, 1, D(2), U8(0, 1));
    tn_ints(&n, "pads", D(1, 1, 1, 1), 4);
    r = run_node(&n, 10, 4, (oq_tensor *[]){x, w2, xz, wz}, 1);
    expect_ok(&r);
    EXPECT_INTS(&r.t[0], OQ_DTYPE_INT32, 1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    result_free(&r);
    /* errors: channel mismatch, bad zero point shape, bad auto_pad */
    oq_tensor *w3 = mk(OQ_DTYPE_UINT8, 4, D(1, 2, 2, 2), NULL);
    tn_init(&n, "ConvInteger");
    r = run_node(&n, 10, 2, (oq_tensor *[]){x, w3}, 1);
    expect_err(&r, OQ_EINVAL, "channels");
    oq_tensor *wz3 = mk(OQ_DTYPE_UINT8, 1, D(3), U8(0, 0, 0));
    r = run_node(&n, 10, 4, (oq_tensor *[]){x, w2, xz, wz3}, 1);
    expect_err(&r, OQ_EINVAL, "w_zero_point");
    tn_string(&n, "auto_pad", "SIDEWAYS");
    r = run_node(&n, 10, 2, (oq_tensor *[]){x, w}, 1);
    expect_err(&r, OQ_EMODEL, "auto_pad");
    oq_tensor *wbig = mk(OQ_DTYPE_UINT8, 4, D(1, 1, 4, 4), NULL);
    tn_init(&n, "ConvInteger");
    r = run_node(&n, 10, 2, (oq_tensor *[]){x, wbig}, 1);
    expect_err(&r, OQ_EINVAL, "no output");
    free_all((oq_tensor *[]){x, w, xz, w2, wz, w3, wz3, wbig}, 8);
}
END_TEST

/* Plain reference for one 2-D grouped convolution in int32. */
static int32_t ref_conv_at(const oq_tensor *x, int xz, const oq_tensor *w, const int *wz, int G,
                           int nb, int m, int oy, int ox, int sy, int sx, int dy, int dx, int py,
                           int px) {
    int C = (int)x->dims[1], H = (int)x->dims[2], W = (int)x->dims[3];
    int M = (int)w->dims[0], Cg = (int)w->dims[1], KH = (int)w->dims[2], KW = (int)w->dims[3];
    int g = m / (M / G);
    int32_t s = 0;
    for (int c = 0; c < Cg; c++)
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                int iy = oy * sy - py + ky * dy, ix = ox * sx - px + kx * dx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                    continue;
                int xv = (int)oq_tensor_get_i64(x, (size_t)(((nb * C + g * Cg + c) * H + iy) * W + ix)) - xz;
                int wv = (int)oq_tensor_get_i64(w, (size_t)(((m * Cg + c) * KH + ky) * KW + kx)) - wz[m];
                s += xv * wv;
            }
    return s;
}

START_TEST(qlinear_conv_matches_reference) {
    /* grouped, strided, dilated, padded int8 conv with per-channel w scales and a bias */
    enum { NB = 2, C = 4, H = 9, W = 8, M = 6, G = 2, KH = 3, KW = 2 };
    oq_tensor *x = mk(OQ_DTYPE_INT8, 4, D(NB, C, H, W), NULL);
    oq_tensor *w = mk(OQ_DTYPE_INT8, 4, D(M, C / G, KH, KW), NULL);
    for (size_t i = 0; i < x->count; i++)
        ((int8_t *)x->data)[i] = (int8_t)(rnd() % 256 - 128);
    for (size_t i = 0; i < w->count; i++)
        ((int8_t *)w->data)[i] = (int8_t)(rnd() % 256 - 128);
    int wzv[M] = {0, 1, -2, 3, 0, -1};
    oq_tensor *wz = mk(OQ_DTYPE_INT8, 1, D(M), I8(0, 1, -2, 3, 0, -1));
    oq_tensor *ws = mk(OQ_DTYPE_FLOAT, 1, D(M), F(0.01f, 0.02f, 0.005f, 0.011f, 0.03f, 0.007f));
    oq_tensor *xs = scalar_f(0.02f), *xz = scalar_i8(5), *ys = scalar_f(0.6f), *yz = scalar_i8(-3);
    oq_tensor *bias = mk(OQ_DTYPE_INT32, 1, D(M), I32(100, -200, 3000, 0, -5, 77));
    tnode n;
    tn_init(&n, "QLinearConv");
    tn_int(&n, "group", G);
    tn_ints(&n, "strides", D(2, 1), 2);
    tn_ints(&n, "dilations", D(1, 2), 2);
    tn_ints(&n, "pads", D(1, 0, 2, 1), 4);
    result r = run_node(&n, 10, 9, (oq_tensor *[]){x, xs, xz, w, ws, wz, ys, yz, bias}, 1);
    expect_ok(&r);
    /* out H = (9 + 1 + 2 - 3) / 2 + 1 = 5, W = (8 + 0 + 1 - 3) / 1 + 1 = 7 */
    ck_assert(r.t[0].dims[2] == 5 && r.t[0].dims[3] == 7 && r.t[0].dtype == OQ_DTYPE_INT8);
    const int8_t *y = r.t[0].data;
    for (int nb = 0; nb < NB; nb++)
        for (int m = 0; m < M; m++)
            for (int oy = 0; oy < 5; oy++)
                for (int ox = 0; ox < 7; ox++) {
                    int32_t acc = ref_conv_at(x, 5, w, wzv, G, nb, m, oy, ox, 2, 1, 1, 2, 1, 0) +
                                  ((int32_t *)bias->data)[m];
                    float mult = 0.02f * ((float *)ws->data)[m] / 0.6f;
                    double q = nearbyint((double)acc * (double)mult) - 3;
                    int want = q < -128 ? -128 : q > 127 ? 127 : (int)q;
                    int got = y[((nb * M + m) * 5 + oy) * 7 + ox];
                    ck_assert_msg(got == want, "[%d,%d,%d,%d] = %d, expected %d", nb, m, oy, ox, got, want);
                }
    result_free(&r);
    /* ConvInteger with SAME_UPPER on the same data against the same reference */
    tn_init(&n, "ConvInteger");
    tn_string(&n, "auto_pad", "SAME_UPPER");
    tn_int(&n, "group", G);
    tn_ints(&n, "strides", D(2, 2), 2);
    r = run_node(&n, 10, 4, (oq_tensor *[]){x, w, xz, wz}, 1);
    expect_ok(&r);
    /* out = ceil(9/2) = 5, ceil(8/2) = 4; total pad H = 4*2+3-9 = 2 -> 1 before; W = 3*2+2-8 = 0 */
    ck_assert(r.t[0].dims[2] == 5 && r.t[0].dims[3] == 4);
    for (int nb = 0; nb < NB; nb++)
        for (int m = 0; m < M; m++)
            for (int oy = 0; oy < 5; oy++)
                for (int ox = 0; ox < 4; ox++)
                    ck_assert_int_eq(((int32_t *)r.t[0].data)[((nb * M + m) * 5 + oy) * 4 + ox],
                                     ref_conv_at(x, 5, w, wzv, G, nb, m, oy, ox, 2, 2, 1, 1, 1, 0));
    result_free(&r);
    /* QLinearConv errors: a per-channel x scale, a bias of the wrong type */
    tn_init(&n, "QLinearConv");
    tn_int(&n, "group", G);
    oq_tensor *xs2 = mk(OQ_DTYPE_FLOAT, 1, D(2), F(1, 1));
    r = run_node(&n, 10, 8, (oq_tensor *[]){x, xs2, xz, w, ws, wz, ys, yz}, 1);
    expect_err(&r, OQ_EINVAL, "x_scale");
    oq_tensor *fb = mk(OQ_DTYPE_FLOAT, 1, D(M), NULL);
    r = run_node(&n, 10, 9, (oq_tensor *[]){x, xs, xz, w, ws, wz, ys, yz, fb}, 1);
    expect_err(&r, OQ_EINVAL, "B must be int32");
    free_all((oq_tensor *[]){x, w, wz, ws, xs, xz, ys, yz, bias, xs2, fb}, 11);
}
END_TEST

START_TEST(qlinear_conv_example) {
    /* the ONNX QLinearConv example: a 1x1 uint8 kernel w = 0 with zero point 255 */
    static const uint8_t xv[49] = {255, 174, 162, 25, 203, 168, 58, 15, 59, 237, 95, 129, 0,
                                   64, 56, 242, 153, 221, 168, 12, 166, 232, 178, 186, 195, 237,
                                   162, 237, 188, 39, 124, 77, 80, 102, 43, 127, 230, 21, 83,
                                   41, 40, 134, 255, 154, 92, 141, 42, 148, 247};
    static const int64_t want[49] = {0, 81, 93, 230, 52, 87, 197, 240, 196, 18, 160, 126, 255,
                                     191, 199, 13, 102, 34, 87, 243, 89, 23, 77, 69, 60, 18,
                                     93, 18, 67, 216, 131, 178, 175, 153, 212, 128, 25, 234,
                                     172, 214, 215, 121, 0, 101, 163, 114, 213, 107, 8};
    oq_tensor *x = mk(OQ_DTYPE_UINT8, 4, D(1, 1, 7, 7), xv);
    oq_tensor *w = mk(OQ_DTYPE_UINT8, 4, D(1, 1, 1, 1), U8(0));
    oq_tensor *xs = scalar_f(0.003692046971991658f), *xz = scalar_u8(132);
    oq_tensor *ws = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0.0017279457533732057f));
    oq_tensor *wz = mk(OQ_DTYPE_UINT8, 1, D(1), U8(255));
    oq_tensor *ys = scalar_f(0.001626812620088458f), *yz = scalar_u8(123);
    tnode n;
    tn_init(&n, "QLinearConv");
    result r = run_node(&n, 10, 8, (oq_tensor *[]){x, xs, xz, w, ws, wz, ys, yz}, 1);
    expect_ok(&r);
    expect_ints(&r.t[0], OQ_DTYPE_UINT8, want, 49);
    result_free(&r);
    free_all((oq_tensor *[]){x, w, xs, xz, ws, wz, ys, yz}, 8);
}
END_TEST

START_TEST(opset_ranges) {
    /* newer opsets than implemented are rejected, not guessed */
    ck_assert_ptr_nonnull(oq_registry_find("", "QuantizeLinear", 25, NULL));
    ck_assert_ptr_null(oq_registry_find("", "QuantizeLinear", 26, NULL));
    ck_assert_ptr_null(oq_registry_find("", "QuantizeLinear", 9, NULL));
    ck_assert_ptr_nonnull(oq_registry_find("", "DynamicQuantizeLinear", 11, NULL));
    ck_assert_ptr_null(oq_registry_find("", "DynamicQuantizeLinear", 10, NULL));
    ck_assert_ptr_nonnull(oq_registry_find("", "QLinearMatMul", 21, NULL));
    ck_assert_ptr_nonnull(oq_registry_find("", "ConvInteger", 10, NULL));
}
END_TEST

/* The pool is made inside each (forked) test: threads do not survive fork. */
static void pool_setup(void) {
    oq_error err = {0};
    ck_assert_msg(oq_pool_new(2, &g_pool, &err) == OQ_OK, "%s", err.msg);
}

static void pool_teardown(void) {
    oq_pool_free(g_pool);
    g_pool = NULL;
}

int main(void) {
    Suite *s = suite_create("ops_quant");
    TCase *tc = tcase_create("ops_quant");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, quantize_rounds_half_to_even);
    tcase_add_test(tc, quantize_matches_nearbyint_everywhere);
    tcase_add_test(tc, quantize_saturates_both_ends);
    tcase_add_test(tc, quantize_default_zero_point_and_output_dtype);
    tcase_add_test(tc, quantize_per_axis_0_and_1);
    tcase_add_test(tc, quantize_blocked);
    tcase_add_test(tc, quantize_dequantize_round_trip);
    tcase_add_test(tc, quantize_errors);
    tcase_add_test(tc, dequantize_types_and_axes);
    tcase_add_test(tc, dequantize_errors);
    tcase_add_test(tc, dynamic_quantize_hand_computed);
    tcase_add_test(tc, matmul_integer_examples);
    tcase_add_test(tc, matmul_integer_batched_matches_reference);
    tcase_add_test(tc, qlinear_matmul_examples);
    tcase_add_test(tc, qlinear_matmul_requantizes_half_to_even);
    tcase_add_test(tc, qlinear_matmul_matches_reference);
    tcase_add_test(tc, conv_integer_examples);
    tcase_add_test(tc, qlinear_conv_matches_reference);
    tcase_add_test(tc, qlinear_conv_example);
    tcase_add_test(tc, opset_ranges);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
