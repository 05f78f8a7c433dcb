/* test_ops_reduce.c: the reduce op family (Reduce*, ArgMax/ArgMin, Softmax,
 * LogSoftmax, Hardmax, TopK, CumSum) called through its registry entries
 * with hand-built nodes: hand-computed values, every Reduce* against a plain
 * reference over all axis subsets and dtypes, the float32 fast paths
 * (last axis, inner blocks, threads) against the same reference on random
 * data, the opset splits (axes attribute vs input), empty sets and errors. */
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

static oq_tensor *mki(size_t n, const int64_t *v) {
    int64_t d = (int64_t)n;
    return mk(OQ_DTYPE_INT64, 1, &d, v);
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

static void expect_shape(const oq_tensor *t, int rank, const int64_t *dims) {
    ck_assert_int_eq(t->rank, rank);
    for (int i = 0; i < rank; i++)
        ck_assert_msg(t->dims[i] == dims[i], "dim %d: %lld, expected %lld", i,
                      (long long)t->dims[i], (long long)dims[i]);
}

static bool close_enough(double got, double want, double rel) {
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= 1e-5 + rel * fabs(want);
}

static void expect_f(const oq_tensor *t, const float *want, size_t n, double rel) {
    ck_assert_uint_eq(t->count, n);
    for (size_t i = 0; i < n; i++) {
        double g = oq_tensor_get_f64(t, i);
        ck_assert_msg(close_enough(g, want[i], rel), "[%zu] = %.9g, expected %.9g", i, g,
                      (double)want[i]);
    }
}

static void expect_i64(const oq_tensor *t, const int64_t *want, size_t n) {
    ck_assert_int_eq(t->dtype, OQ_DTYPE_INT64);
    ck_assert_uint_eq(t->count, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(((const int64_t *)t->data)[i] == want[i], "[%zu] = %lld, expected %lld", i,
                      (long long)((const int64_t *)t->data)[i], (long long)want[i]);
}

#define EXPECT_I64(t, ...)                                                               \
    expect_i64(t, (const int64_t[]){__VA_ARGS__}, sizeof((const int64_t[]){__VA_ARGS__}) / 8)
#define EXPECT_F(t, rel, ...)                                                            \
    expect_f(t, (const float[]){__VA_ARGS__}, sizeof((const float[]){__VA_ARGS__}) / 4, rel)

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

/* ---- Reduce* reference ------------------------------------------------------ */

static const char *const reduce_ops[] = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                                         "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                         "ReduceLogSumExp", "ReduceSumSquare"};
enum { N_REDUCE = sizeof reduce_ops / sizeof reduce_ops[0] };

/* Plain reference in double: every output of op over the axes in mask, in
 * one pass over x (two for LogSumExp). */
static double *ref_reduce(int op, const oq_tensor *x, const bool *mask, size_t n_out) {
    double *acc = malloc((n_out ? n_out : 1) * sizeof *acc);
    double *mx = malloc((n_out ? n_out : 1) * sizeof *mx);
    size_t *cnt = calloc(n_out ? n_out : 1, sizeof *cnt);
    for (size_t o = 0; o < n_out; o++) {
        acc[o] = op == 4 ? 1 : op == 2 ? -INFINITY : op == 3 ? INFINITY : 0;
        mx[o] = -INFINITY;
    }
    for (int pass = 0; pass < (op == 8 ? 2 : 1); pass++)
        for (size_t i = 0; i < x->count; i++) {
            /* output index: the kept coordinates, row-major */
            size_t r = i, o = 0, scale = 1;
            for (int d = x->rank - 1; d >= 0; d--) {
                size_t id = r % (size_t)x->dims[d];
                r /= (size_t)x->dims[d];
                if (!mask[d]) {
                    o += id * scale;
                    scale *= (size_t)x->dims[d];
                }
            }
            double v = oq_tensor_get_f64(x, i);
            if (op == 8 && pass == 0) {
                mx[o] = v > mx[o] ? v : mx[o];
                continue;
            }
            cnt[o]++;
            switch (op) {
            case 0: case 1: case 7: acc[o] += v; break;
            case 2: acc[o] = v > acc[o] ? v : acc[o]; break;
            case 3: acc[o] = v < acc[o] ? v : acc[o]; break;
            case 4: acc[o] *= v; break;
            case 5: acc[o] += fabs(v); break;
            case 6: case 9: acc[o] += v * v; break;
            case 8: acc[o] += exp(v - mx[o]); break;
            }
        }
    for (size_t o = 0; o < n_out; o++)
        switch (op) {
        case 1: acc[o] /= (double)cnt[o]; break;
        case 6: acc[o] = sqrt(acc[o]); break;
        case 7: acc[o] = log(acc[o]); break;
        case 8: acc[o] = isinf(mx[o]) ? mx[o] : mx[o] + log(acc[o]); break;
        default: break;
        }
    free(mx);
    free(cnt);
    return acc;
}

/* Runs op over mask at opset (axes attribute before 18 / ReduceSum 13, input after). */
static result run_reduce(int op, int opset, oq_tensor *x, const bool *mask, bool keepdims) {
    int64_t axes[OQ_MAX_RANK];
    size_t na = 0;
    for (int d = 0; d < x->rank; d++)
        if (mask[d])
            axes[na++] = (rnd() & 1) ? d - x->rank : d; /* negative axes too */
    tnode n;
    tn_init(&n, reduce_ops[op]);
    if (!keepdims)
        tn_int(&n, "keepdims", 0);
    bool input = opset >= (op == 0 ? 13 : 18);
    if (input) {
        oq_tensor *at = mki(na, axes);
        result r = run_node(&n, opset, 2, (oq_tensor *[]){x, at}, 1);
        oq_tensor_free(at);
        return r;
    }
    tn_ints(&n, "axes", axes, na);
    return run_node(&n, opset, 1, &x, 1);
}

static void check_reduce(int op, int opset, oq_tensor *x, const bool *mask, bool keepdims,
                         double rel) {
    result r = run_reduce(op, opset, x, mask, keepdims);
    expect_ok(&r);
    int64_t dims[OQ_MAX_RANK];
    int rank = 0;
    for (int d = 0; d < x->rank; d++)
        if (!mask[d])
            dims[rank++] = x->dims[d];
        else if (keepdims)
            dims[rank++] = 1;
    expect_shape(&r.t[0], rank, dims);
    ck_assert_int_eq(r.t[0].dtype, x->dtype);
    bool is_int = x->dtype == OQ_DTYPE_INT32 || x->dtype == OQ_DTYPE_INT64 || x->dtype == OQ_DTYPE_UINT8;
    double *ref = ref_reduce(op, x, mask, r.t[0].count);
    for (size_t o = 0; o < r.t[0].count; o++) {
        double want = ref[o];
        double got = oq_tensor_get_f64(&r.t[0], o);
        if (is_int)
            want = trunc(want); /* integer results truncate, as the reference's cast does */
        ck_assert_msg(is_int ? got == want : close_enough(got, want, rel),
                      "%s-%d %s out[%zu] = %.9g, expected %.9g", reduce_ops[op], opset,
                      oq_dtype_name(x->dtype), o, got, want);
    }
    free(ref);
    result_free(&r);
}

START_TEST(reduce_all_ops_axes_dtypes) {
    oq_dtype types[] = {OQ_DTYPE_FLOAT, OQ_DTYPE_DOUBLE, OQ_DTYPE_FLOAT16, OQ_DTYPE_INT32,
                        OQ_DTYPE_INT64, OQ_DTYPE_UINT8};
    const int64_t *shapes[] = {D(2, 3, 4), D(3, 1, 5, 2)};
    int ranks[] = {3, 4};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (int si = 0; si < 2; si++) {
            oq_tensor *x = mk(types[ti], ranks[si], shapes[si], NULL);
            for (size_t i = 0; i < x->count; i++) {
                double v = types[ti] == OQ_DTYPE_FLOAT || types[ti] == OQ_DTYPE_DOUBLE ||
                                   types[ti] == OQ_DTYPE_FLOAT16
                               ? 0.25 * (double)(rnd() % 8 + 1)
                               : (double)(rnd() % 2 + 1); /* products stay in range */
                switch (types[ti]) {
                case OQ_DTYPE_FLOAT: ((float *)x->data)[i] = (float)v; break;
                case OQ_DTYPE_DOUBLE: ((double *)x->data)[i] = v; break;
                case OQ_DTYPE_FLOAT16: ((uint16_t *)x->data)[i] = oq_float_to_half((float)v); break;
                case OQ_DTYPE_INT32: ((int32_t *)x->data)[i] = (int32_t)v; break;
                case OQ_DTYPE_INT64: ((int64_t *)x->data)[i] = (int64_t)v; break;
                default: ((uint8_t *)x->data)[i] = (uint8_t)v; break;
                }
            }
            double rel = types[ti] == OQ_DTYPE_FLOAT16 ? 2e-3 : 1e-5;
            for (unsigned m = 1; m < (1u << ranks[si]); m++) {
                bool mask[OQ_MAX_RANK] = {false};
                for (int d = 0; d < ranks[si]; d++)
                    mask[d] = (m >> d) & 1;
                for (int op = 0; op < N_REDUCE; op++) {
                    if ((types[ti] == OQ_DTYPE_UINT8 || types[ti] == OQ_DTYPE_FLOAT16) && op == 4)
                        continue; /* the product leaves the type's range: checked elsewhere */
                    for (int keep = 0; keep < 2; keep++) {
                        check_reduce(op, 13, x, mask, keep, rel);
                        check_reduce(op, 18, x, mask, keep, rel);
                    }
                }
            }
            oq_tensor_free(x);
        }
}
END_TEST

START_TEST(reduce_fast_paths_match_reference) {
    /* float32 [O, R, I] fast paths: last axis (threaded rows), inner blocks wider
     * than one 256-column block, axis 0, and a whole-tensor reduction */
    struct { int rank; int64_t dims[3]; bool mask[3]; } cases[] = {
        {2, {64, 1000}, {false, true}},
        {3, {4, 300, 70}, {false, true, false}},
        {3, {3, 50, 600}, {false, true, false}},
        {2, {300, 300}, {true, false}},
        {3, {7, 9, 11}, {true, true, true}},
        {3, {5, 6, 40}, {false, true, true}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        oq_tensor *x = mk(OQ_DTYPE_FLOAT, cases[c].rank, cases[c].dims, NULL);
        for (size_t i = 0; i < x->count; i++)
            ((float *)x->data)[i] = rndf(0.5f, 1.5f);
        for (int op = 0; op < N_REDUCE; op++)
            if (op != 4 || x->count < 5000) /* a long product under/overflows */
                check_reduce(op, 18, x, cases[c].mask, true, 1e-4);
        oq_tensor_free(x);
    }
    /* signs and magnitudes that stress max/min/L1 and the stable LogSumExp */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(8, 257), NULL);
    for (size_t i = 0; i < x->count; i++)
        ((float *)x->data)[i] = roundf(rndf(-80.0f, 80.0f)); /* exact sums */
    for (int op = 0; op < N_REDUCE; op++)
        if (op != 4 && op != 7)
            for (int m = 1; m < 4; m++)
                check_reduce(op, 18, x, (bool[]){m & 1, (m >> 1) & 1}, m & 1, 1e-5);
    oq_tensor_free(x);
}
END_TEST

START_TEST(reduce_hand_values_and_opsets) {
    /* the ONNX ReduceSum example: axes [1], keepdims */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 3, D(3, 2, 2), F(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12));
    oq_tensor *ax1 = mki(1, D(1)), *none = mki(0, NULL);
    tnode n;
    tn_init(&n, "ReduceSum");
    result r = run_node(&n, 13, 2, (oq_tensor *[]){x, ax1}, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 3, D(3, 1, 2));
    EXPECT_F(&r.t[0], 0, 4, 6, 12, 14, 20, 22);
    result_free(&r);
    /* ReduceSum-11 takes axes as an attribute */
    tn_ints(&n, "axes", D(-1), 1);
    tn_int(&n, "keepdims", 0);
    r = run_node(&n, 11, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(3, 2));
    EXPECT_F(&r.t[0], 0, 3, 7, 11, 15, 19, 23);
    result_free(&r);
    /* no axes: everything; empty axes with noop_with_empty_axes: the identity */
    tn_init(&n, "ReduceSum");
    r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 3, D(1, 1, 1));
    EXPECT_F(&r.t[0], 0, 78);
    result_free(&r);
    r = run_node(&n, 13, 2, (oq_tensor *[]){x, none}, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 78);
    result_free(&r);
    tn_int(&n, "noop_with_empty_axes", 1);
    r = run_node(&n, 13, 2, (oq_tensor *[]){x, none}, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 3, D(3, 2, 2));
    EXPECT_F(&r.t[0], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    result_free(&r);
    /* ReduceMean-13 (attribute) vs -18 (input): the LayerNorm shape */
    tn_init(&n, "ReduceMean");
    tn_ints(&n, "axes", D(-1), 1);
    r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 3, D(3, 2, 1));
    EXPECT_F(&r.t[0], 0, 1.5f, 3.5f, 5.5f, 7.5f, 9.5f, 11.5f);
    result_free(&r);
    tn_init(&n, "ReduceMean");
    oq_tensor *axm = mki(1, D(-1));
    r = run_node(&n, 18, 2, (oq_tensor *[]){x, axm}, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 1.5f, 3.5f, 5.5f, 7.5f, 9.5f, 11.5f);
    result_free(&r);
    /* bool ReduceMax/ReduceMin are any/all (opset 20) */
    uint8_t bv[6] = {0, 1, 0, 0, 0, 0};
    oq_tensor *b = mk(OQ_DTYPE_BOOL, 2, D(2, 3), bv);
    tn_init(&n, "ReduceMax");
    tn_int(&n, "keepdims", 0);
    r = run_node(&n, 20, 2, (oq_tensor *[]){b, axm}, 1);
    expect_ok(&r);
    ck_assert(((uint8_t *)r.t[0].data)[0] == 1 && ((uint8_t *)r.t[0].data)[1] == 0);
    result_free(&r);
    r = run_node(&n, 18, 2, (oq_tensor *[]){b, axm}, 1);
    expect_err(&r, OQ_EUNSUPPORTED, "bool");
    /* NaN wins max and min (numpy's rule), past the 16-lane blocks too; -0 == 0 */
    float nv[40];
    for (int i = 0; i < 40; i++)
        nv[i] = (float)i - 20.0f;
    nv[33] = NAN;
    oq_tensor *xn = mk(OQ_DTYPE_FLOAT, 2, D(2, 20), nv);
    for (int op = 2; op <= 3; op++) {
        tn_init(&n, reduce_ops[op]);
        r = run_node(&n, 18, 2, (oq_tensor *[]){xn, axm}, 1);
        expect_ok(&r);
        EXPECT_F(&r.t[0], 0, op == 2 ? -1.0f : -20.0f, NAN);
        result_free(&r);
    }
    oq_tensor *xz = mk(OQ_DTYPE_FLOAT, 1, D(3), F(-0.0f, -5.0f, 0.0f));
    tn_init(&n, "ReduceMax");
    r = run_node(&n, 18, 1, &xz, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 0.0f);
    result_free(&r);
    free_all((oq_tensor *[]){xn, xz}, 2);
    /* integer product wraps in the type */
    uint8_t u8[3] = {16, 16, 3};
    oq_tensor *u = mk(OQ_DTYPE_UINT8, 1, D(3), u8);
    tn_init(&n, "ReduceProd");
    r = run_node(&n, 18, 1, &u, 1);
    expect_ok(&r);
    ck_assert_int_eq(((uint8_t *)r.t[0].data)[0], (16 * 16 * 3) & 255);
    result_free(&r);
    free_all((oq_tensor *[]){x, ax1, none, axm, b, u}, 6);
}
END_TEST

START_TEST(reduce_empty_sets) {
    /* x [2, 0, 3] reduced over the empty axis: the identity of each reduction */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 3, D(2, 0, 3), NULL);
    oq_tensor *ax = mki(1, D(1));
    float want[N_REDUCE] = {0, NAN, -INFINITY, INFINITY, 1, 0, 0, -INFINITY, -INFINITY, 0};
    for (int op = 0; op < N_REDUCE; op++) {
        tnode n;
        tn_init(&n, reduce_ops[op]);
        result r = run_node(&n, 18, 2, (oq_tensor *[]){x, ax}, 1);
        expect_ok(&r);
        expect_shape(&r.t[0], 3, D(2, 1, 3));
        for (int i = 0; i < 6; i++) {
            float g = ((float *)r.t[0].data)[i];
            ck_assert_msg(isnan(want[op]) ? isnan(g) : g == want[op], "%s: %g", reduce_ops[op], g);
        }
        result_free(&r);
    }
    /* integer max/min of nothing: the type's lowest/highest value */
    oq_tensor *xi = mk(OQ_DTYPE_INT32, 2, D(2, 0), NULL);
    tnode n;
    tn_init(&n, "ReduceMax");
    oq_tensor *ax1 = mki(1, D(1));
    result r = run_node(&n, 18, 2, (oq_tensor *[]){xi, ax1}, 1);
    expect_ok(&r);
    ck_assert_int_eq(((int32_t *)r.t[0].data)[0], INT32_MIN);
    result_free(&r);
    tn_init(&n, "ReduceMin");
    r = run_node(&n, 18, 2, (oq_tensor *[]){xi, ax1}, 1);
    expect_ok(&r);
    ck_assert_int_eq(((int32_t *)r.t[0].data)[1], INT32_MAX);
    result_free(&r);
    /* a zero-sized kept axis: an empty output */
    oq_tensor *x0 = mk(OQ_DTYPE_FLOAT, 2, D(0, 3), NULL);
    tn_init(&n, "ReduceSum");
    r = run_node(&n, 13, 2, (oq_tensor *[]){x0, ax1}, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(0, 1));
    result_free(&r);
    free_all((oq_tensor *[]){x, ax, xi, ax1, x0}, 5);
}
END_TEST

START_TEST(reduce_errors) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(2, 3), NULL);
    tnode n;
    tn_init(&n, "ReduceSum");
    oq_tensor *bad = mki(1, D(2)), *rep = mki(2, D(1, -1));
    result r = run_node(&n, 13, 2, (oq_tensor *[]){x, bad}, 1);
    expect_err(&r, OQ_EINVAL, "out of range");
    r = run_node(&n, 13, 2, (oq_tensor *[]){x, rep}, 1);
    expect_err(&r, OQ_EINVAL, "repeated");
    oq_tensor *fax = mk(OQ_DTYPE_FLOAT, 1, D(1), F(0));
    r = run_node(&n, 13, 2, (oq_tensor *[]){x, fax}, 1);
    expect_err(&r, OQ_EINVAL, "int64");
    tn_init(&n, "ReduceL2");
    tn_ints(&n, "axes", D(0, 0), 2);
    r = run_node(&n, 13, 1, &x, 1);
    expect_err(&r, OQ_EINVAL, "repeated");
    tn_init(&n, "ReduceMean");
    tn_ints(&n, "axes", D(0, 1, 2, 3, 4, 5, 6, 7, 8), 9);
    r = run_node(&n, 13, 1, &x, 1);
    expect_err(&r, OQ_EINVAL, "axes");
    oq_tensor *s = mk(OQ_DTYPE_COMPLEX64, 1, D(1), NULL);
    tn_init(&n, "ReduceMax");
    r = run_node(&n, 18, 1, &s, 1);
    expect_err(&r, OQ_EUNSUPPORTED, "complex64");
    /* newer opsets than implemented are rejected */
    ck_assert_ptr_null(oq_registry_find("", "ReduceSum", 26, NULL));
    ck_assert_ptr_nonnull(oq_registry_find("", "ReduceSum", 1, NULL));
    free_all((oq_tensor *[]){x, bad, rep, fax, s}, 5);
}
END_TEST

/* ---- ArgMax / ArgMin ------------------------------------------------------- */

START_TEST(argmax_argmin) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(2, 4), F(2, 5, 5, 1, -1, -7, 6, -7));
    tnode n;
    tn_init(&n, "ArgMax");
    tn_int(&n, "axis", 1);
    result r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(2, 1));
    EXPECT_I64(&r.t[0], 1, 2); /* ties: the first index */
    result_free(&r);
    tn_int(&n, "select_last_index", 1);
    tn_int(&n, "keepdims", 0);
    r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 1, D(2));
    EXPECT_I64(&r.t[0], 2, 2);
    result_free(&r);
    tn_init(&n, "ArgMin");
    tn_int(&n, "axis", -1);
    r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    EXPECT_I64(&r.t[0], 3, 1);
    result_free(&r);
    tn_int(&n, "select_last_index", 1);
    r = run_node(&n, 12, 1, &x, 1);
    expect_ok(&r);
    EXPECT_I64(&r.t[0], 3, 3);
    result_free(&r);
    /* axis 0 (the default) */
    tn_init(&n, "ArgMax");
    r = run_node(&n, 11, 1, &x, 1);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(1, 4));
    EXPECT_I64(&r.t[0], 0, 0, 1, 0);
    result_free(&r);
    /* int64 values beyond double precision stay distinct */
    int64_t big[3] = {(1ll << 53) + 1, (1ll << 53), (1ll << 53) + 1};
    oq_tensor *xb = mk(OQ_DTYPE_INT64, 1, D(3), big);
    tn_init(&n, "ArgMin");
    r = run_node(&n, 13, 1, &xb, 1);
    expect_ok(&r);
    EXPECT_I64(&r.t[0], 1);
    result_free(&r);
    /* an empty axis has no arg */
    oq_tensor *e = mk(OQ_DTYPE_FLOAT, 2, D(2, 0), NULL);
    tn_init(&n, "ArgMax");
    tn_int(&n, "axis", 1);
    r = run_node(&n, 13, 1, &e, 1);
    expect_err(&r, OQ_EINVAL, "empty");
    tn_init(&n, "ArgMax");
    tn_int(&n, "axis", 3);
    r = run_node(&n, 13, 1, &x, 1);
    expect_err(&r, OQ_EINVAL, "axis");
    free_all((oq_tensor *[]){x, xb, e}, 3);
}
END_TEST

/* ---- Softmax family ---------------------------------------------------------- */

/* Reference softmax / logsoftmax in double over [O, R, I]. */
static void ref_softmax(bool logsm, const float *x, double *y, size_t O, size_t R, size_t I) {
    for (size_t o = 0; o < O; o++)
        for (size_t i = 0; i < I; i++) {
            double m = -INFINITY, s = 0;
            for (size_t r = 0; r < R; r++)
                m = fmax(m, x[(o * R + r) * I + i]);
            for (size_t r = 0; r < R; r++)
                s += exp(x[(o * R + r) * I + i] - m);
            for (size_t r = 0; r < R; r++) {
                double v = x[(o * R + r) * I + i] - m;
                y[(o * R + r) * I + i] = logsm ? v - log(s) : exp(v) / s;
            }
        }
}

START_TEST(softmax_matches_reference) {
    struct { int rank; int64_t dims[3]; int axis; size_t O, R, I; } cases[] = {
        {2, {37, 1000}, -1, 37, 1000, 1},   /* last axis, threaded rows */
        {3, {3, 50, 70}, 1, 3, 50, 70},      /* strided, blocks of 64 + 6 columns */
        {3, {2, 5, 130}, 0, 1, 2, 650},
        {2, {5, 3}, 1, 5, 3, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        oq_tensor *x = mk(OQ_DTYPE_FLOAT, cases[c].rank, cases[c].dims, NULL);
        for (size_t i = 0; i < x->count; i++)
            ((float *)x->data)[i] = rndf(-30.0f, 30.0f);
        double *want = malloc(x->count * sizeof *want);
        for (int logsm = 0; logsm < 2; logsm++) {
            ref_softmax(logsm, x->data, want, cases[c].O, cases[c].R, cases[c].I);
            tnode n;
            tn_init(&n, logsm ? "LogSoftmax" : "Softmax");
            tn_int(&n, "axis", cases[c].axis);
            result r = run_node(&n, 13, 1, &x, 1);
            expect_ok(&r);
            for (size_t i = 0; i < x->count; i++) {
                double g = ((float *)r.t[0].data)[i];
                ck_assert_msg(fabs(g - want[i]) <= 1e-6 + 2e-6 * fabs(want[i]),
                              "case %zu %s [%zu] = %.9g, expected %.9g", c,
                              logsm ? "LogSoftmax" : "Softmax", i, g, want[i]);
            }
            result_free(&r);
        }
        free(want);
        oq_tensor_free(x);
    }
}
END_TEST

START_TEST(softmax_semantics) {
    /* large numbers stay finite (stable form); -inf entries give 0 */
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(2, 4), F(1000, 1001, 1002, 1003, 0, -INFINITY, 0, -INFINITY));
    tnode n;
    tn_init(&n, "Softmax");
    result r = run_node(&n, 13, 1, &x, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-5, 0.0320586f, 0.08714432f, 0.23688282f, 0.64391426f, 0.5f, 0, 0.5f, 0);
    result_free(&r);
    /* far below the max: exp underflows to 0, LogSoftmax stays exact; NaN spreads */
    oq_tensor *xe = mk(OQ_DTYPE_FLOAT, 2, D(3, 3), F(0, -100, -200, 1, NAN, 2, 88, 89, -1e30f));
    r = run_node(&n, 13, 1, &xe, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-6, 1, 0, 0, NAN, NAN, NAN, 0.26894142f, 0.73105858f, 0);
    result_free(&r);
    tn_init(&n, "LogSoftmax");
    r = run_node(&n, 13, 1, &xe, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-6, 0, -100, -200, NAN, NAN, NAN, -1.31326169f, -0.31326169f, -1e30f);
    result_free(&r);
    tn_init(&n, "ReduceLogSumExp");
    tn_int(&n, "keepdims", 0);
    oq_tensor *ax1 = mki(1, D(1));
    oq_tensor *xl = mk(OQ_DTYPE_FLOAT, 2, D(2, 2), F(1000, 1000, -1000, -1000));
    r = run_node(&n, 18, 2, (oq_tensor *[]){xl, ax1}, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-6, 1000.6931472f, -999.3068528f);
    result_free(&r);
    free_all((oq_tensor *[]){xe, ax1, xl}, 3);
    tn_init(&n, "Softmax");
    /* opset 11 coerces to 2-D at axis 1: one softmax over all 4 of a [1, 2, 2] */
    oq_tensor *x3 = mk(OQ_DTYPE_FLOAT, 3, D(1, 2, 2), F(1, 2, 3, 4));
    r = run_node(&n, 11, 1, &x3, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-5, 0.0320586f, 0.08714432f, 0.23688282f, 0.64391426f);
    result_free(&r);
    /* opset 13: the default axis -1 alone */
    r = run_node(&n, 13, 1, &x3, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-5, 0.26894142f, 0.73105858f, 0.26894142f, 0.73105858f);
    result_free(&r);
    tn_init(&n, "LogSoftmax");
    r = run_node(&n, 13, 1, &x3, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-5, -1.31326169f, -0.31326169f, -1.31326169f, -0.31326169f);
    result_free(&r);
    /* Hardmax: first maximum wins; opset 11 flattens from the axis */
    oq_tensor *h = mk(OQ_DTYPE_FLOAT, 2, D(2, 3), F(1, 3, 3, -1, -2, -3));
    tn_init(&n, "Hardmax");
    r = run_node(&n, 13, 1, &h, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 0, 1, 0, 1, 0, 0);
    result_free(&r);
    tn_int(&n, "axis", 0);
    r = run_node(&n, 11, 1, &h, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 0, 1, 0, 0, 0, 0);
    result_free(&r);
    r = run_node(&n, 13, 1, &h, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 1, 1, 1, 0, 0, 0);
    result_free(&r);
    /* double and float16 go through the same kernel */
    double dv[3] = {1, 2, 3};
    oq_tensor *xd = mk(OQ_DTYPE_DOUBLE, 1, D(3), dv);
    tn_init(&n, "Softmax");
    r = run_node(&n, 13, 1, &xd, 1);
    expect_ok(&r);
    ck_assert_int_eq(r.t[0].dtype, OQ_DTYPE_DOUBLE);
    EXPECT_F(&r.t[0], 1e-5, 0.09003057f, 0.24472847f, 0.66524096f);
    result_free(&r);
    uint16_t hv[3] = {oq_float_to_half(1), oq_float_to_half(2), oq_float_to_half(3)};
    oq_tensor *xh = mk(OQ_DTYPE_FLOAT16, 1, D(3), hv);
    r = run_node(&n, 13, 1, &xh, 1);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 1e-3, 0.09003057f, 0.24472847f, 0.66524096f);
    result_free(&r);
    /* errors */
    tn_int(&n, "axis", 2);
    r = run_node(&n, 13, 1, &x, 1);
    expect_err(&r, OQ_EINVAL, "axis");
    oq_tensor *xi = mk(OQ_DTYPE_INT32, 1, D(3), NULL);
    tn_init(&n, "Softmax");
    r = run_node(&n, 13, 1, &xi, 1);
    expect_err(&r, OQ_EUNSUPPORTED, "int32");
    free_all((oq_tensor *[]){x, x3, h, xd, xh, xi}, 6);
}
END_TEST

/* ---- TopK -------------------------------------------------------------------- */

START_TEST(topk_values_and_ties) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 2, D(3, 4), F(0, 1, 2, 3, 4, 5, 6, 7, 11, 10, 9, 8));
    oq_tensor *k3 = mki(1, D(3));
    tnode n;
    tn_init(&n, "TopK");
    result r = run_node(&n, 11, 2, (oq_tensor *[]){x, k3}, 2);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(3, 3));
    EXPECT_F(&r.t[0], 0, 3, 2, 1, 7, 6, 5, 11, 10, 9);
    EXPECT_I64(&r.t[1], 3, 2, 1, 3, 2, 1, 0, 1, 2);
    result_free(&r);
    tn_int(&n, "largest", 0);
    r = run_node(&n, 11, 2, (oq_tensor *[]){x, k3}, 2);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 0, 1, 2, 4, 5, 6, 8, 9, 10);
    EXPECT_I64(&r.t[1], 0, 1, 2, 0, 1, 2, 3, 2, 1);
    result_free(&r);
    /* axis 0 */
    oq_tensor *k2 = mki(1, D(2));
    tn_init(&n, "TopK");
    tn_int(&n, "axis", 0);
    r = run_node(&n, 11, 2, (oq_tensor *[]){x, k2}, 2);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(2, 4));
    EXPECT_F(&r.t[0], 0, 11, 10, 9, 8, 4, 5, 6, 7);
    EXPECT_I64(&r.t[1], 2, 2, 2, 2, 1, 1, 1, 1);
    result_free(&r);
    /* ties: the lower index first, for largest and smallest, small and large k */
    oq_tensor *t = mk(OQ_DTYPE_INT32, 1, D(6), (const int32_t[]){1, 2, 1, 2, 1, 2});
    tn_init(&n, "TopK");
    r = run_node(&n, 24, 2, (oq_tensor *[]){t, k3}, 2);
    expect_ok(&r);
    EXPECT_I64(&r.t[1], 1, 3, 5);
    result_free(&r);
    oq_tensor *k6 = mki(1, D(6));
    r = run_node(&n, 24, 2, (oq_tensor *[]){t, k6}, 2);
    expect_ok(&r);
    EXPECT_I64(&r.t[1], 1, 3, 5, 0, 2, 4);
    result_free(&r);
    tn_int(&n, "largest", 0);
    r = run_node(&n, 24, 2, (oq_tensor *[]){t, k6}, 2);
    expect_ok(&r);
    EXPECT_I64(&r.t[1], 0, 2, 4, 1, 3, 5);
    result_free(&r);
    /* TopK-1: k is an attribute */
    tn_init(&n, "TopK");
    tn_int(&n, "k", 1);
    r = run_node(&n, 1, 1, &x, 2);
    expect_ok(&r);
    EXPECT_F(&r.t[0], 0, 3, 7, 11);
    result_free(&r);
    /* uint64 beyond double precision */
    uint64_t uv[3] = {UINT64_MAX - 1, UINT64_MAX, 1};
    oq_tensor *u = mk(OQ_DTYPE_UINT64, 1, D(3), uv);
    oq_tensor *k1 = mki(1, D(1));
    tn_init(&n, "TopK");
    r = run_node(&n, 24, 2, (oq_tensor *[]){u, k1}, 2);
    expect_ok(&r);
    EXPECT_I64(&r.t[1], 1);
    ck_assert(((uint64_t *)r.t[0].data)[0] == UINT64_MAX);
    result_free(&r);
    /* k = 0 and errors */
    oq_tensor *k0 = mki(1, D(0)), *k9 = mki(1, D(9)), *kneg = mki(1, D(-1));
    r = run_node(&n, 11, 2, (oq_tensor *[]){x, k0}, 2);
    expect_ok(&r);
    expect_shape(&r.t[0], 2, D(3, 0));
    result_free(&r);
    r = run_node(&n, 11, 2, (oq_tensor *[]){x, k9}, 2);
    expect_err(&r, OQ_EINVAL, "out of range");
    r = run_node(&n, 11, 2, (oq_tensor *[]){x, kneg}, 2);
    expect_err(&r, OQ_EINVAL, "out of range");
    r = run_node(&n, 11, 1, &x, 2);
    expect_err(&r, OQ_EINVAL, "K");
    free_all((oq_tensor *[]){x, k3, k2, t, k6, u, k1, k0, k9, kneg}, 10);
}
END_TEST

typedef struct {
    float v;
    int64_t i;
} vi;

static int vi_desc(const void *a, const void *b) {
    const vi *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : 1;
}

START_TEST(topk_matches_reference) {
    /* random values with many ties, k small (insertion path) and large (sort path) */
    enum { O = 6, R = 200, I = 3 };
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 3, D(O, R, I), NULL);
    for (size_t i = 0; i < x->count; i++)
        ((float *)x->data)[i] = (float)(rnd() % 50);
    int64_t ks[] = {1, 5, 16, 17, 120, 200};
    for (size_t kc = 0; kc < sizeof ks / sizeof ks[0]; kc++) {
        oq_tensor *k = mki(1, &ks[kc]);
        tnode n;
        tn_init(&n, "TopK");
        tn_int(&n, "axis", 1);
        result r = run_node(&n, 11, 2, (oq_tensor *[]){x, k}, 2);
        expect_ok(&r);
        vi col[R];
        for (int o = 0; o < O; o++)
            for (int i = 0; i < I; i++) {
                for (int q = 0; q < R; q++)
                    col[q] = (vi){((float *)x->data)[(o * R + q) * I + i], q};
                qsort(col, R, sizeof col[0], vi_desc);
                for (int q = 0; q < ks[kc]; q++) {
                    size_t off = (size_t)((o * ks[kc] + q) * I + i);
                    ck_assert_msg(((float *)r.t[0].data)[off] == col[q].v &&
                                      ((int64_t *)r.t[1].data)[off] == col[q].i,
                                  "k %lld [%d,%d,%d]", (long long)ks[kc], o, q, i);
                }
            }
        result_free(&r);
        oq_tensor_free(k);
    }
    oq_tensor_free(x);
}
END_TEST

/* ---- CumSum ------------------------------------------------------------------ */

START_TEST(cumsum_modes) {
    oq_tensor *x = mk(OQ_DTYPE_FLOAT, 1, D(5), F(1, 2, 3, 4, 5));
    int32_t a0 = 0;
    oq_tensor *ax = mk(OQ_DTYPE_INT32, 0, NULL, &a0);
    struct { int ex, rev; float want[5]; } cases[] = {
        {0, 0, {1, 3, 6, 10, 15}},
        {1, 0, {0, 1, 3, 6, 10}},
        {0, 1, {15, 14, 12, 9, 5}},
        {1, 1, {14, 12, 9, 5, 0}},
    };
    for (int c = 0; c < 4; c++) {
        tnode n;
        tn_init(&n, "CumSum");
        tn_int(&n, "exclusive", cases[c].ex);
        tn_int(&n, "reverse", cases[c].rev);
        result r = run_node(&n, 14, 2, (oq_tensor *[]){x, ax}, 1);
        expect_ok(&r);
        expect_f(&r.t[0], cases[c].want, 5, 0);
        result_free(&r);
    }
    /* 2-D int64 along axis 1 (as int64) */
    int64_t xv[6] = {1, 2, 3, 4, 5, 6};
    oq_tensor *xi = mk(OQ_DTYPE_INT64, 2, D(2, 3), xv);
    oq_tensor *ax1 = mki(1, D(-1));
    tnode n;
    tn_init(&n, "CumSum");
    result r = run_node(&n, 11, 2, (oq_tensor *[]){xi, ax1}, 1);
    expect_ok(&r);
    EXPECT_I64(&r.t[0], 1, 3, 6, 4, 9, 15);
    result_free(&r);
    oq_tensor *ax5 = mki(1, D(5));
    r = run_node(&n, 11, 2, (oq_tensor *[]){xi, ax5}, 1);
    expect_err(&r, OQ_EINVAL, "axis");
    free_all((oq_tensor *[]){x, ax, xi, ax1, ax5}, 5);
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
    Suite *s = suite_create("ops_reduce");
    TCase *tc = tcase_create("ops_reduce");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, pool_setup, pool_teardown);
    tcase_add_test(tc, reduce_all_ops_axes_dtypes);
    tcase_add_test(tc, reduce_fast_paths_match_reference);
    tcase_add_test(tc, reduce_hand_values_and_opsets);
    tcase_add_test(tc, reduce_empty_sets);
    tcase_add_test(tc, reduce_errors);
    tcase_add_test(tc, argmax_argmin);
    tcase_add_test(tc, softmax_matches_reference);
    tcase_add_test(tc, softmax_semantics);
    tcase_add_test(tc, topk_values_and_ties);
    tcase_add_test(tc, topk_matches_reference);
    tcase_add_test(tc, cumsum_modes);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
