/* test_prepare.c: quant/prepare on every shared model (prepared, saved,
 * reloaded and run must give the original outputs) and on small hand-built
 * models, one per opset converter, run before and after the conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edit.h"
#include "exec.h"
#include "graph.h"
#include "model.h"
#include "prepare.h"
#include "tensorproto.h"
#include "testutil.h"

#define MAX_OUT 8

/* ---- models ------------------------------------------------------------ */

static oq_model *load(const char *rel) {
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(tu_shared_path(rel), NULL, &m, &err) == OQ_OK, "%s: %s", rel,
                  err.msg);
    return m;
}

static oq_model *save_reload(oq_model *m) {
    oq_error err = {0};
    uint8_t *buf;
    size_t len;
    ck_assert_msg(oq_model_save_buffer(m, &buf, &len, &err) == OQ_OK, "%s", err.msg);
    oq_model *m2;
    ck_assert_msg(oq_model_load_buffer(buf, len, NULL, &m2, &err) == OQ_OK, "%s", err.msg);
    free(buf);
    return m2;
}

static int64_t opset_of(oq_model *m) {
    oq_error err = {0};
    oq_graph *g;
    ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "%s", err.msg);
    int64_t v = oq_graph_opset(g, "");
    oq_graph_free(g);
    return v;
}

static int count_op(const Onnx__GraphProto *g, const char *op) {
    int n = 0;
    for (size_t i = 0; i < g->n_node; i++)
        n += oq_node_is_onnx_op(g->node[i], op);
    return n;
}

static Onnx__NodeProto *find_op(const Onnx__GraphProto *g, const char *op) {
    for (size_t i = 0; i < g->n_node; i++)
        if (oq_node_is_onnx_op(g->node[i], op))
            return g->node[i];
    ck_abort_msg("no %s node", op);
    return NULL;
}

static const Onnx__TensorProto *find_init(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_initializer; i++)
        if (strcmp(g->initializer[i]->name, name) == 0)
            return g->initializer[i];
    return NULL;
}

/* Nodes must be listed producers first (what ONNX requires). */
static void assert_sorted(oq_model *m) {
    oq_error err = {0};
    oq_graph *g;
    ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "%s", err.msg);
    int n;
    const int *topo = oq_graph_topo_order(g, &n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(topo[i], i);
    oq_graph_free(g);
}

/* ---- running ----------------------------------------------------------- */

static oq_plan *plan(oq_model *m) {
    oq_error err = {0};
    oq_plan_opts o = oq_plan_opts_default();
    o.threads = 2;
    oq_plan *p;
    ck_assert_msg(oq_plan_new(m, &o, &p, &err) == OQ_OK, "plan: %s", err.msg);
    return p;
}

static int run(oq_plan *p, const oq_tensor *const *ins, int n_in, oq_tensor **outs) {
    oq_error err = {0};
    int n = oq_plan_output_count(p);
    ck_assert_int_le(n, MAX_OUT);
    ck_assert_msg(oq_plan_run(p, ins, n_in, outs, NULL, NULL, &err) == OQ_OK, "run: %s", err.msg);
    return n;
}

static void free_outs(oq_tensor **outs, int n) {
    for (int i = 0; i < n; i++)
        oq_tensor_free(outs[i]);
}

/* Same type and shape; floats within atol + rtol*|a|, other types equal. */
static void assert_close(const oq_tensor *a, const oq_tensor *b, double atol, double rtol,
                         const char *what) {
    ck_assert_msg(a->dtype == b->dtype && a->rank == b->rank && a->count == b->count,
                  "%s: type/shape differ", what);
    for (int i = 0; i < a->rank; i++)
        ck_assert_msg(a->dims[i] == b->dims[i], "%s: dim %d %lld vs %lld", what, i,
                      (long long)a->dims[i], (long long)b->dims[i]);
    if (a->dtype != OQ_DTYPE_FLOAT) {
        ck_assert_msg(memcmp(a->data, b->data, a->nbytes) == 0, "%s: values differ", what);
        return;
    }
    const float *x = a->data, *y = b->data;
    for (size_t i = 0; i < a->count; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        if (!(d <= atol + rtol * fabs((double)x[i])))
            ck_abort_msg("%s: element %zu: %.9g vs %.9g", what, i, (double)x[i], (double)y[i]);
    }
}

/* Deterministic, irregular values (no ties, so TopK and Hardmax are exact). */
static oq_tensor *input_f(int rank, const int64_t *dims, float seed) {
    oq_tensor *t = tu_tensor_new(OQ_DTYPE_FLOAT, rank, dims);
    float *v = t->data;
    for (size_t i = 0; i < t->count; i++)
        v[i] = 3.0f * sinf((float)i * 0.73f + seed) + 0.01f * (float)i;
    return t;
}

/* ---- building small models --------------------------------------------- */

static bool has_attr(const Onnx__NodeProto *n, const char *k) {
    return oq_node_attr(n, k) != NULL;
}

static int64_t attr_i(const Onnx__NodeProto *n, const char *k) {
    oq_error err = {0};
    int64_t v = -999;
    ck_assert(oq_node_attr_int(n, k, -999, &v, &err) == OQ_OK);
    return v;
}

static const char *attr_s(const Onnx__NodeProto *n, const char *k) {
    static char buf[64];
    oq_error err = {0};
    ck_assert(oq_node_attr_string(n, k, "", buf, sizeof buf, &err) == OQ_OK);
    return buf;
}

/* An int64 initializer's values, checked against want. */
static void assert_i64_init(const Onnx__GraphProto *g, const char *name, const int64_t *want,
                            size_t n) {
    const Onnx__TensorProto *tp = find_init(g, name);
    ck_assert_msg(tp, "no initializer '%s'", name);
    oq_error err = {0};
    oq_tensor *t;
    ck_assert(oq_tensor_from_proto(tp, NULL, 0, &t, &err) == OQ_OK);
    ck_assert_int_eq(t->dtype, OQ_DTYPE_INT64);
    ck_assert_uint_eq(t->count, n);
    ck_assert(memcmp(t->data, want, n * 8) == 0);
    oq_tensor_free(t);
}

/* Runs m on ins, raises it to opset 13 (expect_converted nodes rewritten),
 * saves and reloads it and runs it again: the outputs must agree. Returns
 * the upgraded model, which the caller frees. */
static oq_model *upgrade_and_compare(oq_model *m, oq_tensor **ins, int n_in, int expect_converted,
                                     double tol) {
    int64_t from = opset_of(m);
    oq_tensor *before[MAX_OUT], *after[MAX_OUT];
    oq_plan *p = plan(m);
    int n = run(p, (const oq_tensor *const *)ins, n_in, before);
    oq_plan_free(p);

    oq_error err = {0};
    int converted = -1;
    ck_assert_msg(oq_upgrade_opset(m, 13, &converted, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(converted, expect_converted);
    ck_assert_int_eq(opset_of(m), 13);
    ck_assert_int_ge(oq_model_proto(m)->ir_version, 7);
    assert_sorted(m);
    oq_model *m2 = save_reload(m);
    p = plan(m2);
    int n2 = run(p, (const oq_tensor *const *)ins, n_in, after);
    oq_plan_free(p);
    ck_assert_int_eq(n, n2);
    for (int i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "opset %lld -> 13, output %d", (long long)from, i);
        assert_close(before[i], after[i], tol, tol, what);
    }
    free_outs(before, n);
    free_outs(after, n2);
    oq_model_free(m2);
    return m;
}

static void expect_error(oq_status st, const oq_error *err, oq_status code, const char *n1,
                         const char *n2) {
    ck_assert_msg(st == code, "got %s (%s)", oq_status_name(st), err->msg);
    ck_assert_msg(!n1 || strstr(err->msg, n1), "'%s' not in: %s", n1, err->msg);
    ck_assert_msg(!n2 || strstr(err->msg, n2), "'%s' not in: %s", n2, err->msg);
}

/* ---- shared models ----------------------------------------------------- */

typedef struct {
    const char *key;
    int constants, folded, opset_before, opset_after, converted;
} model_expect;

static const model_expect expects[] = {
    {"mnist-8", 0, 0, 8, 13, 0},
    {"cnn_mnist_pytorch", 1, 0, 9, 13, 1},  /* LogSoftmax on the last axis */
    {"fmnist_cnn", 2, 0, 13, 13, 0},
    {"fmnist_cnn_bn", 2, 3, 13, 13, 0},
    {"fmnist_vit", 51, 0, 17, 17, 0},
    {"fmnist_vit_op14", 61, 0, 14, 14, 0},
    {"ppocr_cls", 250, 35, 9, 13, 20},      /* Clip x18, Slice, Softmax */
};

START_TEST(shared_model) {
    const tu_model_info *mi = &tu_models[_i];
    const model_expect *ex = NULL;
    for (size_t k = 0; k < sizeof expects / sizeof expects[0]; k++)
        if (strcmp(expects[k].key, mi->key) == 0)
            ex = &expects[k];
    ck_assert_msg(ex, "no expectations for %s", mi->key);

    oq_model *orig = load(mi->model), *m = load(mi->model);
    Onnx__GraphProto *g = tu_model_graph(m);
    int consts_before = count_op(g, "Constant"), bn_before = count_op(g, "BatchNormalization");
    size_t inits_before = g->n_initializer;
    int64_t ir_before = oq_model_proto(m)->ir_version;

    oq_error err = {0};
    oq_prepare_result r;
    ck_assert_msg(oq_prepare_model(m, 0, &r, &err) == OQ_OK, "%s: %s", mi->key, err.msg);
    ck_assert_int_eq(r.existing_quantize, 0);
    ck_assert_int_eq(r.constants_to_initializers, ex->constants);
    ck_assert_int_eq(r.constants_to_initializers, consts_before);
    ck_assert_int_eq(r.batchnorms_folded, ex->folded);
    ck_assert_int_eq(r.opset_before, ex->opset_before);
    ck_assert_int_eq(r.opset_after, ex->opset_after);
    ck_assert_int_eq(r.nodes_converted, ex->converted);

    oq_model *m2 = save_reload(m);
    oq_model_free(m);
    g = tu_model_graph(m2);
    ck_assert_int_eq(count_op(g, "Constant"), 0);
    ck_assert_int_eq(count_op(g, "BatchNormalization"), bn_before - ex->folded);
    ck_assert_int_eq(opset_of(m2), ex->opset_after);
    if (ex->opset_after > ex->opset_before)
        ck_assert_int_ge(oq_model_proto(m2)->ir_version, 7);
    else
        ck_assert_int_eq(oq_model_proto(m2)->ir_version, ir_before);
    if (ir_before < 4) /* initializers no longer double as graph inputs */
        ck_assert_uint_eq(g->n_input, 1);
    if (!strcmp(mi->key, "fmnist_cnn_bn")) /* Conv biases replaced, BN parameters dropped */
        ck_assert_uint_eq(g->n_initializer, inits_before + 2 - 4 * 3);
    if (!strcmp(mi->key, "ppocr_cls")) {
        ck_assert_uint_eq(inits_before, 0);
        ck_assert_uint_gt(g->n_initializer, 0);
        ck_assert_int_eq(count_op(g, "Clip"), 18);
        ck_assert_uint_eq(find_op(g, "Clip")->n_input, 3);
        ck_assert_uint_eq(find_op(g, "Slice")->n_input, 4);
    }
    assert_sorted(m2);

    /* Same outputs as the original on evaluation samples. */
    oq_tensor *x;
    tu_eval_set(mi, &x, NULL, NULL);
    bool small = tu_sanitized();
    int64_t samples = !strcmp(mi->key, "ppocr_cls") ? (small ? 4 : 16) : (small ? 8 : 40);
    int64_t batch = mi->batch == 1 ? 1 : (!strcmp(mi->key, "ppocr_cls") ? 4 : 10);
    oq_plan *p0 = plan(orig), *p1 = plan(m2);
    for (int64_t s = 0; s < samples; s += batch) {
        oq_tensor *rows = tu_rows(x, s, batch), *a[MAX_OUT], *b[MAX_OUT];
        int na = run(p0, (const oq_tensor *const *)&rows, 1, a);
        int nb = run(p1, (const oq_tensor *const *)&rows, 1, b);
        ck_assert_int_eq(na, nb);
        for (int i = 0; i < na; i++) {
            char what[96];
            snprintf(what, sizeof what, "%s rows %lld..%lld output %d", mi->key, (long long)s,
                     (long long)(s + batch - 1), i);
            assert_close(a[i], b[i], 1e-4, 1e-4, what);
        }
        free_outs(a, na);
        free_outs(b, nb);
        oq_tensor_free(rows);
    }
    oq_plan_free(p0);
    oq_plan_free(p1);
    oq_tensor_free(x);
    oq_model_free(m2);
    oq_model_free(orig);
}
END_TEST

/* ---- refusing quantized models ---------------------------------------- */

START_TEST(quantized_model_refused) {
    oq_model *m = load("models/onnx-node-tests/onnx-1.12.0/test_qlinearconv/model.onnx");
    ck_assert_int_eq(oq_count_quantized_nodes(m), 1);
    int64_t opset = opset_of(m);
    oq_error err = {0};
    oq_prepare_result r;
    oq_status st = oq_prepare_model(m, 0, &r, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "already contains 1 quantized node",
                 "quantization-aware models are not quantized again");
    ck_assert_int_eq(r.existing_quantize, 1);
    ck_assert_int_eq(opset_of(m), opset); /* untouched */
    oq_model_free(m);

    m = load("models/onnx-node-tests/onnx-1.12.0/test_dequantizelinear/model.onnx");
    ck_assert_int_eq(oq_count_quantized_nodes(m), 1);
    oq_model_free(m);
    ck_assert_int_eq(oq_count_quantized_nodes(NULL), 0);
}
END_TEST

/* Default and com.microsoft quantized ops are counted, in subgraphs too;
 * float ops (QuickGelu, Relu) are not. */
START_TEST(count_quantized_kinds) {
    oq_model *m = tu_model_new(13);
    oq_error err = {0};
    ck_assert(oq_edit_set_opset(m, "com.microsoft", 1, &err) == OQ_OK);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 1, (int64_t[]){2});
    oq_edit_add_graph_input(m, g, "c", OQ_DTYPE_BOOL, 0, NULL, &err);
    tu_model_node(m, "Relu", "r", TU_LIST("x"), TU_LIST("r"));
    tu_model_node(m, "MatMulInteger", "mi", TU_LIST("x", "x"), TU_LIST("mi"));
    ck_assert(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, "QLinearAdd", "com.microsoft", "qa",
                                  TU_LIST("x"), TU_LIST("qa"), NULL, &err) == OQ_OK);
    ck_assert(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, "QuickGelu", "com.microsoft", "qg",
                                  TU_LIST("x"), TU_LIST("qg"), NULL, &err) == OQ_OK);
    ck_assert(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, "QGemm", "com.microsoft", "qgemm",
                                  TU_LIST("x"), TU_LIST("qgemm"), NULL, &err) == OQ_OK);
    Onnx__NodeProto *iff = tu_model_node(m, "If", "if", TU_LIST("c"), TU_LIST("y"));
    Onnx__GraphProto *then_b, *else_b;
    ck_assert(oq_edit_graph_new(m, "then", &then_b, &err) == OQ_OK);
    ck_assert(oq_edit_graph_new(m, "else", &else_b, &err) == OQ_OK);
    tu_model_node_in(m, then_b, "DequantizeLinear", "dq", TU_LIST("x", "x"), TU_LIST("t"));
    tu_model_node_in(m, else_b, "Identity", "id", TU_LIST("x"), TU_LIST("e"));
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "then_branch", then_b, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "else_branch", else_b, &err) == OQ_OK);
    ck_assert_int_eq(oq_count_quantized_nodes(m), 4);
    oq_model_free(m);
}
END_TEST

/* ---- Constant nodes ----------------------------------------------------- */

static void set_tensor_attr(oq_model *m, Onnx__NodeProto *n, const oq_tensor *t) {
    oq_error err = {0};
    Onnx__TensorProto *tp;
    ck_assert(oq_tensor_to_proto(t, "", oq_model_allocator(m), &tp, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_tensor_new(m, n, "value", tp, &err) == OQ_OK);
}

/* Every tensor form becomes an initializer of the right type and shape;
 * strings and graph outputs stay Constant nodes; the model computes the
 * same. IR 3: the new initializers are declared as graph inputs. */
START_TEST(constants_all_forms) {
    oq_model *m = tu_model_new(13);
    oq_model_proto(m)->ir_version = 3;
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    tu_model_attr_floats(m, tu_model_node(m, "Constant", "c1", TU_NONE, TU_LIST("c_floats")),
                         "value_floats", TU_F32S(1, 2, 3));
    tu_model_attr_float(m, tu_model_node(m, "Constant", "c2", TU_NONE, TU_LIST("c_float")),
                        "value_float", 2.5f);
    tu_model_attr_ints(m, tu_model_node(m, "Constant", "c3", TU_NONE, TU_LIST("c_ints")),
                       "value_ints", TU_I64S(1, 3));
    tu_model_attr_int(m, tu_model_node(m, "Constant", "c4", TU_NONE, TU_LIST("c_int")), "value_int", 2);
    oq_tensor *t = input_f(1, (int64_t[]){3}, 0.5f);
    set_tensor_attr(m, tu_model_node(m, "Constant", "c5", TU_NONE, TU_LIST("c_tensor")), t);
    oq_tensor_free(t);
    oq_error err = {0};
    tu_model_attr_float(m, tu_model_node(m, "Constant", "c7", TU_NONE, TU_LIST("k")), "value_float", 7.0f);
    tu_model_node(m, "Mul", "mul1", TU_LIST("x", "c_floats"), TU_LIST("u"));
    tu_model_node(m, "Mul", "mul2", TU_LIST("u", "c_float"), TU_LIST("v"));
    tu_model_node(m, "Add", "add", TU_LIST("v", "c_tensor"), TU_LIST("w"));
    tu_model_node(m, "Reshape", "rs", TU_LIST("w", "c_ints"), TU_LIST("y"));
    tu_model_node(m, "Gather", "ga", TU_LIST("w", "c_int"), TU_LIST("z"));
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "k", 1);

    oq_tensor *x = input_f(1, (int64_t[]){3}, 0.0f), *before[MAX_OUT], *after[MAX_OUT];
    oq_plan *p = plan(m);
    int n = run(p, (const oq_tensor *const *)&x, 1, before);
    oq_plan_free(p);

    int moved = -1;
    ck_assert_msg(oq_constants_to_initializers(m, &moved, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(moved, 5);
    ck_assert_int_eq(count_op(g, "Constant"), 1); /* the graph output */
    ck_assert_uint_eq(g->n_initializer, 5);
    ck_assert_uint_eq(g->n_input, 1 + 5); /* IR 3: initializers are graph inputs too */
    const Onnx__TensorProto *i1 = find_init(g, "c_floats"), *i2 = find_init(g, "c_float"),
                            *i3 = find_init(g, "c_ints"), *i4 = find_init(g, "c_int"),
                            *i5 = find_init(g, "c_tensor");
    ck_assert(i1 && i2 && i3 && i4 && i5);
    ck_assert(i1->data_type == OQ_DTYPE_FLOAT && i1->n_dims == 1 && i1->dims[0] == 3);
    ck_assert(i2->data_type == OQ_DTYPE_FLOAT && i2->n_dims == 0);
    ck_assert(i4->data_type == OQ_DTYPE_INT64 && i4->n_dims == 0);
    ck_assert(i5->data_type == OQ_DTYPE_FLOAT && i5->n_dims == 1);
    assert_i64_init(g, "c_ints", TU_I64S(1, 3));

    oq_model *m2 = save_reload(m);
    p = plan(m2);
    int n2 = run(p, (const oq_tensor *const *)&x, 1, after);
    oq_plan_free(p);
    ck_assert_int_eq(n, n2);
    for (int i = 0; i < n; i++)
        assert_close(before[i], after[i], 0, 0, "constants to initializers");
    free_outs(before, n);
    free_outs(after, n2);
    oq_tensor_free(x);
    oq_model_free(m2);
    oq_model_free(m);

    /* A string tensor (here an empty one) stays a Constant node. */
    m = tu_model_new(13);
    g = tu_model_graph(m);
    oq_tensor *s = tu_tensor_new(OQ_DTYPE_FLOAT, 1, (int64_t[]){0});
    Onnx__NodeProto *cs = tu_model_node(m, "Constant", "c6", TU_NONE, TU_LIST("c_string"));
    Onnx__TensorProto *tp;
    ck_assert(oq_tensor_to_proto(s, "", oq_model_allocator(m), &tp, &err) == OQ_OK);
    tp->data_type = OQ_DTYPE_STRING;
    tp->has_raw_data = 0;
    ck_assert(oq_edit_set_attr_tensor_new(m, cs, "value", tp, &err) == OQ_OK);
    oq_tensor_free(s);
    tu_model_node(m, "Identity", "id", TU_LIST("c_string"), TU_LIST("str"));
    ck_assert(oq_edit_add_graph_output(m, g, "str", OQ_DTYPE_STRING, -1, NULL, &err) == OQ_OK);
    ck_assert(oq_constants_to_initializers(m, &moved, &err) == OQ_OK);
    ck_assert_int_eq(moved, 0);
    ck_assert_int_eq(count_op(g, "Constant"), 1);
    ck_assert_uint_eq(g->n_initializer, 0);
    oq_model_free(m);
}
END_TEST

/* ---- BatchNormalization folding ---------------------------------------- */

static void conv_bn(oq_model *m, const char *x, const char *w, const char *b, const char *sfx,
                    const float *scale, const float *bias, const float *mean, const float *var,
                    float eps) {
    Onnx__GraphProto *g = tu_model_graph(m);
    char names[6][32];
    const char *keys[6] = {"c", "y", "s", "bb", "m", "v"};
    for (int i = 0; i < 6; i++)
        snprintf(names[i], sizeof names[i], "%s_%s", keys[i], sfx);
    tu_model_init_f(m, g, names[2], 1, (int64_t[]){2}, scale);
    tu_model_init_f(m, g, names[3], 1, (int64_t[]){2}, bias);
    tu_model_init_f(m, g, names[4], 1, (int64_t[]){2}, mean);
    tu_model_init_f(m, g, names[5], 1, (int64_t[]){2}, var);
    if (b)
        tu_model_node(m, "Conv", names[0], TU_LIST(x, w, b), TU_LIST(names[0]));
    else
        tu_model_node(m, "Conv", names[0], TU_LIST(x, w), TU_LIST(names[0]));
    Onnx__NodeProto *bn = tu_model_node(m, "BatchNormalization", names[1],
                                        TU_LIST(names[0], names[2], names[3], names[4], names[5]),
                                        TU_LIST(names[1]));
    tu_model_attr_float(m, bn, "epsilon", eps);
}

static oq_tensor *init_data(const Onnx__GraphProto *g, const char *name) {
    const Onnx__TensorProto *tp = find_init(g, name);
    ck_assert_msg(tp, "no initializer %s", name);
    oq_error err = {0};
    oq_tensor *t;
    ck_assert(oq_tensor_from_proto(tp, NULL, 0, &t, &err) == OQ_OK);
    return t;
}

/* Hand-computed fold: s = scale / sqrt(var + eps) = {2/sqrt(4), 0.5/sqrt(1)}
 * = {1, 0.5}; W' = W * s per output channel; B' = (B - mean) * s + bias. */
START_TEST(fold_hand_computed) {
    oq_model *m = tu_model_new(13);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    tu_model_init_f(m, g, "W", 4, (int64_t[]){2, 2, 1, 1}, (const float[]){1, 2, 3, 4});
    tu_model_init_f(m, g, "B", 1, (int64_t[]){2}, (const float[]){1, 1});
    conv_bn(m, "x", "W", "B", "a", (const float[]){2, 0.5f}, (const float[]){0.5f, 0},
            (const float[]){1, -1}, (const float[]){3, 0}, 1.0f);
    tu_model_output(m, "y_a", 1);
    oq_tensor *x = input_f(4, (int64_t[]){1, 2, 2, 2}, 1.0f), *before[MAX_OUT], *after[MAX_OUT];
    oq_plan *p = plan(m);
    int n = run(p, (const oq_tensor *const *)&x, 1, before);
    oq_plan_free(p);

    oq_error err = {0};
    int folded = -1;
    ck_assert_msg(oq_fold_batchnorm(m, &folded, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(folded, 1);
    ck_assert_int_eq(count_op(g, "BatchNormalization"), 0);
    ck_assert_uint_eq(g->n_node, 1);
    ck_assert_str_eq(g->node[0]->output[0], "y_a");
    ck_assert_uint_eq(g->n_initializer, 2); /* W and B replaced, BN parameters gone */
    oq_tensor *w = init_data(g, "W"), *b = init_data(g, "B");
    const float want_w[] = {1, 2, 1.5f, 2}, want_b[] = {0.5f, 1};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(((float *)w->data)[i], want_w[i], 1e-7);
    for (int i = 0; i < 2; i++)
        ck_assert_float_eq_tol(((float *)b->data)[i], want_b[i], 1e-7);
    oq_tensor_free(w);
    oq_tensor_free(b);

    oq_model *m2 = save_reload(m);
    p = plan(m2);
    int n2 = run(p, (const oq_tensor *const *)&x, 1, after);
    oq_plan_free(p);
    for (int i = 0; i < n; i++)
        assert_close(before[i], after[i], 1e-5, 1e-5, "folded conv");
    free_outs(before, n);
    free_outs(after, n2);
    oq_tensor_free(x);
    oq_model_free(m2);
    oq_model_free(m);
}
END_TEST

/* Two Convs sharing W (no bias) each fold into new weights; W goes. Pairs
 * that must not fold: the Conv output read elsewhere, a BN mean that is a
 * graph input, BN running statistics read (training mode), a Conv output
 * that is a graph output. */
START_TEST(fold_shared_and_skipped) {
    oq_model *m = tu_model_new(13);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 3, 3});
    tu_model_input_f(m, "mean_in", 1, (int64_t[]){2});
    tu_model_init_f(m, g, "W", 4, (int64_t[]){2, 2, 1, 1}, (const float[]){1, -2, 0.5f, 3});
    const float sc[] = {1.5f, 0.25f}, bi[] = {0.1f, -0.2f}, me[] = {0.3f, 0.4f},
                va[] = {2, 0.5f};
    conv_bn(m, "x", "W", NULL, "a", sc, bi, me, va, 1e-5f);
    conv_bn(m, "x", "W", NULL, "b", bi, sc, va, me, 1e-3f);
    /* Conv output read twice */
    conv_bn(m, "x", "W", NULL, "c", sc, bi, me, va, 1e-5f);
    tu_model_node(m, "Relu", "relu_c", TU_LIST("c_c"), TU_LIST("r_c"));
    /* non-constant mean */
    tu_model_node(m, "Conv", "c_d", TU_LIST("x", "W"), TU_LIST("c_d"));
    tu_model_init_f(m, g, "s_d", 1, (int64_t[]){2}, sc);
    tu_model_node(m, "BatchNormalization", "y_d", TU_LIST("c_d", "s_d", "s_d", "mean_in", "s_d"),
                  TU_LIST("y_d"));
    /* Conv output is a graph output */
    conv_bn(m, "x", "W", NULL, "f", sc, bi, me, va, 1e-5f);
    const char *outs[] = {"y_a", "y_b", "y_c", "r_c", "y_d", "c_f"};
    for (int i = 0; i < 6; i++)
        tu_model_output(m, outs[i], 1);
    tu_model_output(m, "y_f", 1);

    oq_tensor *x = input_f(4, (int64_t[]){1, 2, 3, 3}, 2.0f);
    oq_tensor *mean = input_f(1, (int64_t[]){2}, 0.3f);
    oq_tensor *ins[2] = {x, mean};
    oq_tensor *before[MAX_OUT + 2], *after[MAX_OUT + 2];
    oq_error err = {0};
    oq_plan_opts o = oq_plan_opts_default();
    oq_plan *p;
    ck_assert_msg(oq_plan_new(m, &o, &p, &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(oq_plan_run(p, (const oq_tensor *const *)ins, 2, before, NULL, NULL, &err) ==
                      OQ_OK,
                  "%s", err.msg);
    oq_plan_free(p);

    int folded = -1;
    ck_assert_msg(oq_fold_batchnorm(m, &folded, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(folded, 2);
    ck_assert_int_eq(count_op(g, "BatchNormalization"), 3);
    ck_assert_ptr_null(find_init(g, "s_a")); /* the folded BN's parameters are gone */
    ck_assert_ptr_nonnull(find_init(g, "W")); /* still read by the unfolded Convs */
    ck_assert_ptr_nonnull(find_init(g, "W_bnfold"));
    ck_assert_ptr_nonnull(find_init(g, "W_bnfold_1"));

    oq_model *m2 = save_reload(m);
    assert_sorted(m2);
    ck_assert_msg(oq_plan_new(m2, &o, &p, &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(oq_plan_run(p, (const oq_tensor *const *)ins, 2, after, NULL, NULL, &err) ==
                      OQ_OK,
                  "%s", err.msg);
    int n = oq_plan_output_count(p);
    oq_plan_free(p);
    for (int i = 0; i < n; i++)
        assert_close(before[i], after[i], 1e-5, 1e-5, outs[i < 6 ? i : 0]);
    free_outs(before, n);
    free_outs(after, n);
    oq_model_free(m2);

    /* With only the shared pair left, the original W is dropped. */
    oq_model_free(m);
    m = tu_model_new(13);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 3, 3});
    tu_model_init_f(m, g, "W", 4, (int64_t[]){2, 2, 1, 1}, (const float[]){1, -2, 0.5f, 3});
    conv_bn(m, "x", "W", NULL, "a", sc, bi, me, va, 1e-5f);
    conv_bn(m, "x", "W", NULL, "b", bi, sc, va, me, 1e-3f);
    tu_model_output(m, "y_a", 1);
    tu_model_output(m, "y_b", 1);
    ck_assert_msg(oq_fold_batchnorm(m, &folded, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(folded, 2);
    ck_assert_ptr_null(find_init(g, "W"));
    ck_assert_uint_eq(g->n_initializer, 4); /* two weights, two new biases */
    ck_assert_uint_eq(g->n_node, 2);
    oq_model_free(m);

    /* Training mode (running statistics read) is not folded (no run: the
     * executor only does inference). */
    m = tu_model_new(13);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 3, 3});
    tu_model_init_f(m, g, "W", 4, (int64_t[]){2, 2, 1, 1}, (const float[]){1, -2, 0.5f, 3});
    tu_model_init_f(m, g, "s", 1, (int64_t[]){2}, sc);
    tu_model_node(m, "Conv", "c_e", TU_LIST("x", "W"), TU_LIST("c_e"));
    tu_model_node(m, "BatchNormalization", "y_e", TU_LIST("c_e", "s", "s", "s", "s"),
                  TU_LIST("y_e", "rm_e", "rv_e"));
    tu_model_output(m, "y_e", 1);
    tu_model_output(m, "rm_e", 1);
    ck_assert(oq_fold_batchnorm(m, &folded, &err) == OQ_OK);
    ck_assert_int_eq(folded, 0);
    ck_assert_uint_eq(g->n_node, 2);
    oq_tensor_free(x);
    oq_tensor_free(mean);
    oq_model_free(m);
}
END_TEST

/* ---- opset converters (run before and after) --------------------------- */

START_TEST(clip6) {
    oq_model *m = tu_model_new(6);
    tu_model_input_f(m, "x", 2, (int64_t[]){2, 5});
    Onnx__NodeProto *c1 = tu_model_node(m, "Clip", "both", TU_LIST("x"), TU_LIST("y"));
    tu_model_attr_float(m, c1, "min", -1.0f);
    tu_model_attr_float(m, c1, "max", 2.0f);
    tu_model_attr_float(m, tu_model_node(m, "Clip", "max_only", TU_LIST("x"), TU_LIST("z")), "max", 0.5f);
    tu_model_attr_float(m, tu_model_node(m, "Clip", "min_only", TU_LIST("x"), TU_LIST("w")), "min", -0.25f);
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "w", 1);
    oq_tensor *x = input_f(2, (int64_t[]){2, 5}, 0.2f);
    upgrade_and_compare(m, &x, 1, 3, 0);
    Onnx__GraphProto *g = tu_model_graph(m);
    for (size_t i = 0; i < g->n_node; i++)
        ck_assert(!has_attr(g->node[i], "min") && !has_attr(g->node[i], "max"));
    Onnx__NodeProto *z = g->node[1];
    ck_assert_uint_eq(z->n_input, 3);
    ck_assert_str_eq(z->input[1], ""); /* no min: omitted */
    ck_assert_uint_eq(g->node[2]->n_input, 2);
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

START_TEST(squeeze_unsqueeze11) {
    oq_model *m = tu_model_new(11);
    tu_model_input_f(m, "x", 4, (int64_t[]){2, 1, 3, 1});
    tu_model_attr_ints(m, tu_model_node(m, "Squeeze", "sq", TU_LIST("x"), TU_LIST("s")),
                       "axes", TU_I64S(1, 3));
    tu_model_attr_ints(m, tu_model_node(m, "Unsqueeze", "unsq", TU_LIST("s"), TU_LIST("y")),
                       "axes", TU_I64S(0, -1));
    tu_model_node(m, "Squeeze", "sq_all", TU_LIST("x"), TU_LIST("z")); /* no axes: every 1 */
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    oq_tensor *x = input_f(4, (int64_t[]){2, 1, 3, 1}, 0.0f);
    upgrade_and_compare(m, &x, 1, 2, 0);
    Onnx__GraphProto *g = tu_model_graph(m);
    Onnx__NodeProto *sq = g->node[0], *un = g->node[1];
    ck_assert(!has_attr(sq, "axes") && !has_attr(un, "axes"));
    ck_assert_uint_eq(sq->n_input, 2);
    assert_i64_init(g, sq->input[1], TU_I64S(1, 3));
    assert_i64_init(g, un->input[1], TU_I64S(0, -1));
    ck_assert_uint_eq(g->node[2]->n_input, 1);
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

START_TEST(split11) {
    oq_model *m = tu_model_new(11);
    tu_model_input_f(m, "x", 2, (int64_t[]){2, 4});
    Onnx__NodeProto *n = tu_model_node(m, "Split", "sp", TU_LIST("x"), TU_LIST("a", "b"));
    tu_model_attr_int(m, n, "axis", 1);
    tu_model_attr_ints(m, n, "split", TU_I64S(1, 3));
    tu_model_node(m, "Split", "sp_eq", TU_LIST("x"), TU_LIST("c", "d")); /* equal halves along 0 */
    tu_model_output(m, "a", 1);
    tu_model_output(m, "b", 1);
    tu_model_output(m, "c", 1);
    tu_model_output(m, "d", 1);
    oq_tensor *x = input_f(2, (int64_t[]){2, 4}, 0.0f);
    upgrade_and_compare(m, &x, 1, 1, 0);
    n = tu_model_graph(m)->node[0];
    ck_assert(!has_attr(n, "split"));
    assert_i64_init(tu_model_graph(m), n->input[1], TU_I64S(1, 3));
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

START_TEST(reducesum11) {
    oq_model *m = tu_model_new(11);
    tu_model_input_f(m, "x", 3, (int64_t[]){2, 3, 4});
    Onnx__NodeProto *n = tu_model_node(m, "ReduceSum", "rs", TU_LIST("x"), TU_LIST("y"));
    tu_model_attr_ints(m, n, "axes", TU_I64S(1));
    tu_model_attr_int(m, n, "keepdims", 0);
    tu_model_attr_ints(m, tu_model_node(m, "ReduceMean", "rm", TU_LIST("x"), TU_LIST("z")),
                       "axes", TU_I64S(-1));
    tu_model_node(m, "ReduceSum", "rs_all", TU_LIST("x"), TU_LIST("w"));
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "w", 1);
    oq_tensor *x = input_f(3, (int64_t[]){2, 3, 4}, 0.0f);
    upgrade_and_compare(m, &x, 1, 1, 0);
    Onnx__GraphProto *g = tu_model_graph(m);
    ck_assert(!has_attr(g->node[0], "axes") && g->node[0]->n_input == 2);
    ck_assert(has_attr(g->node[1], "axes")); /* ReduceMean keeps its attribute until 18 */
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* Softmax-11 coerces to 2-D at `axis`: on rank 3 with axis 1 that is a
 * softmax over the last two axes together, which opset 13 expresses as
 * Flatten -> Softmax -> Reshape. On the last axis only the attribute
 * changes. With the rank unknown, the Flatten form is used. */
START_TEST(softmax11) {
    oq_model *m = tu_model_new(11);
    tu_model_input_f(m, "x", 3, (int64_t[]){2, 3, 4});
    tu_model_input_f(m, "u", -1, NULL);
    tu_model_attr_int(m, tu_model_node(m, "Softmax", "sm", TU_LIST("x"), TU_LIST("y")), "axis", 1);
    tu_model_attr_int(m, tu_model_node(m, "LogSoftmax", "lsm", TU_LIST("x"), TU_LIST("z")), "axis", -1);
    tu_model_attr_int(m, tu_model_node(m, "Hardmax", "hm", TU_LIST("x"), TU_LIST("h")), "axis", 0);
    tu_model_node(m, "Softmax", "sm_u", TU_LIST("u"), TU_LIST("v")); /* default axis 1, rank unknown */
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "h", 1);
    tu_model_output(m, "v", 1);
    oq_tensor *x = input_f(3, (int64_t[]){2, 3, 4}, 0.0f), *u = input_f(3, (int64_t[]){3, 2, 2}, 1);
    oq_tensor *ins[2] = {x, u};
    upgrade_and_compare(m, ins, 2, 4, 1e-6);
    Onnx__GraphProto *g = tu_model_graph(m);
    ck_assert_int_eq(count_op(g, "Flatten"), 3);
    ck_assert_int_eq(count_op(g, "Reshape"), 3);
    ck_assert_int_eq(count_op(g, "Shape"), 3);
    ck_assert_int_eq(attr_i(find_op(g, "LogSoftmax"), "axis"), -1);
    ck_assert_int_eq(attr_i(find_op(g, "Softmax"), "axis"), 1);
    oq_tensor_free(x);
    oq_tensor_free(u);
    oq_model_free(m);
}
END_TEST

START_TEST(pad2) {
    oq_model *m = tu_model_new(2);
    tu_model_input_f(m, "x", 2, (int64_t[]){2, 3});
    Onnx__NodeProto *n = tu_model_node(m, "Pad", "pc", TU_LIST("x"), TU_LIST("y"));
    tu_model_attr_ints(m, n, "pads", TU_I64S(1, 0, 0, 2));
    tu_model_attr_float(m, n, "value", 1.5f);
    n = tu_model_node(m, "Pad", "pr", TU_LIST("x"), TU_LIST("z"));
    tu_model_attr_ints(m, n, "pads", TU_I64S(0, 1, 0, 2));
    tu_model_attr_str(m, n, "mode", "reflect");
    n = tu_model_node(m, "Pad", "pe", TU_LIST("x"), TU_LIST("w"));
    tu_model_attr_ints(m, n, "pads", TU_I64S(1, 1, 1, 1));
    tu_model_attr_str(m, n, "mode", "edge");
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "w", 1);
    oq_tensor *x = input_f(2, (int64_t[]){2, 3}, 0.0f);
    upgrade_and_compare(m, &x, 1, 3, 0);
    Onnx__GraphProto *g = tu_model_graph(m);
    ck_assert_uint_eq(g->node[0]->n_input, 3);
    ck_assert_uint_eq(g->node[1]->n_input, 2);
    assert_i64_init(g, g->node[0]->input[1], TU_I64S(1, 0, 0, 2));
    ck_assert(!has_attr(g->node[0], "pads") && !has_attr(g->node[0], "value"));
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

START_TEST(slice1) {
    oq_model *m = tu_model_new(1);
    tu_model_input_f(m, "x", 2, (int64_t[]){4, 5});
    Onnx__NodeProto *n = tu_model_node(m, "Slice", "s1", TU_LIST("x"), TU_LIST("y"));
    tu_model_attr_ints(m, n, "starts", TU_I64S(1, 0));
    tu_model_attr_ints(m, n, "ends", TU_I64S(3, -1));
    tu_model_attr_ints(m, n, "axes", TU_I64S(0, 1));
    n = tu_model_node(m, "Slice", "s2", TU_LIST("x"), TU_LIST("z"));
    tu_model_attr_ints(m, n, "starts", TU_I64S(2));
    tu_model_attr_ints(m, n, "ends", TU_I64S(1000));
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    oq_tensor *x = input_f(2, (int64_t[]){4, 5}, 0.0f);
    upgrade_and_compare(m, &x, 1, 2, 0);
    Onnx__GraphProto *g = tu_model_graph(m);
    ck_assert_uint_eq(g->node[0]->n_input, 4);
    ck_assert_uint_eq(g->node[1]->n_input, 3);
    assert_i64_init(g, g->node[0]->input[2], TU_I64S(3, -1));
    ck_assert_uint_eq(g->node[0]->n_attribute, 0);
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

static void check_resize(const Onnx__NodeProto *n, const char *nearest_mode) {
    ck_assert_str_eq(n->op_type, "Resize");
    ck_assert_uint_eq(n->n_input, 3);
    ck_assert_str_eq(n->input[1], ""); /* roi, optional from opset 13 */
    ck_assert_str_eq(attr_s(n, "coordinate_transformation_mode"), "asymmetric");
    if (nearest_mode)
        ck_assert_str_eq(attr_s(n, "nearest_mode"), nearest_mode);
}

START_TEST(upsample9) {
    oq_model *m = tu_model_new(9);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 3});
    tu_model_init_f(m, g, "sc", 1, (int64_t[]){4}, (const float[]){1, 1, 2, 3});
    tu_model_init_f(m, g, "sc2", 1, (int64_t[]){4}, (const float[]){1, 1, 2.5f, 1.5f});
    tu_model_node(m, "Upsample", "up_n", TU_LIST("x", "sc"), TU_LIST("y"));
    tu_model_attr_str(m, tu_model_node(m, "Upsample", "up_l", TU_LIST("x", "sc2"), TU_LIST("z")),
                      "mode", "linear");
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    oq_tensor *x = input_f(4, (int64_t[]){1, 2, 2, 3}, 0.0f);
    upgrade_and_compare(m, &x, 1, 2, 1e-6);
    check_resize(g->node[0], "floor");
    check_resize(g->node[1], NULL);
    ck_assert_str_eq(attr_s(g->node[1], "mode"), "linear");
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

START_TEST(upsample7) {
    oq_model *m = tu_model_new(7);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 1, 2, 3});
    tu_model_attr_floats(m, tu_model_node(m, "Upsample", "up", TU_LIST("x"), TU_LIST("y")),
                         "scales", TU_F32S(1, 1, 3, 2));
    tu_model_output(m, "y", 1);
    oq_tensor *x = input_f(4, (int64_t[]){1, 1, 2, 3}, 0.0f);
    upgrade_and_compare(m, &x, 1, 1, 0);
    Onnx__NodeProto *n = tu_model_graph(m)->node[0];
    check_resize(n, "floor");
    ck_assert(!has_attr(n, "scales"));
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* Resize-10 = asymmetric coordinates, nearest rounding down when
 * upsampling and up when downsampling (as ONNX Runtime and onnxq run it). */
START_TEST(resize10) {
    oq_model *m = tu_model_new(10);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 1, 5, 7});
    tu_model_init_f(m, g, "down", 1, (int64_t[]){4}, (const float[]){1, 1, 0.5f, 0.6f});
    tu_model_init_f(m, g, "up", 1, (int64_t[]){4}, (const float[]){1, 1, 1.5f, 2.2f});
    tu_model_node(m, "Resize", "r_down", TU_LIST("x", "down"), TU_LIST("y"));
    tu_model_node(m, "Resize", "r_up", TU_LIST("x", "up"), TU_LIST("z"));
    tu_model_attr_str(m, tu_model_node(m, "Resize", "r_lin", TU_LIST("x", "down"), TU_LIST("w")),
                      "mode", "linear");
    tu_model_output(m, "y", 1);
    tu_model_output(m, "z", 1);
    tu_model_output(m, "w", 1);
    oq_tensor *x = input_f(4, (int64_t[]){1, 1, 5, 7}, 0.0f);
    upgrade_and_compare(m, &x, 1, 3, 1e-6);
    check_resize(g->node[0], "ceil");
    check_resize(g->node[1], "floor");
    check_resize(g->node[2], NULL);
    oq_tensor_free(x);
    oq_model_free(m);

    /* Mixed up/down nearest scales have no opset-11 equivalent. */
    m = tu_model_new(10);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 1, 5, 7});
    tu_model_init_f(m, g, "mixed", 1, (int64_t[]){4}, (const float[]){1, 1, 0.5f, 2});
    tu_model_node(m, "Resize", "r_mixed", TU_LIST("x", "mixed"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    oq_error err = {0};
    oq_status st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "r_mixed", "up- and downsamples");
    ck_assert_int_eq(opset_of(m), 10);
    oq_model_free(m);
}
END_TEST

START_TEST(topk1) {
    oq_model *m = tu_model_new(1);
    tu_model_input_f(m, "x", 2, (int64_t[]){3, 5});
    tu_model_attr_int(m, tu_model_node(m, "TopK", "tk", TU_LIST("x"), TU_LIST("v", "i")), "k", 2);
    tu_model_output(m, "v", 1);
    tu_model_output(m, "i", 7);
    oq_tensor *x = input_f(2, (int64_t[]){3, 5}, 0.0f);
    upgrade_and_compare(m, &x, 1, 1, 0);
    Onnx__NodeProto *n = tu_model_graph(m)->node[0];
    ck_assert(!has_attr(n, "k"));
    assert_i64_init(tu_model_graph(m), n->input[1], TU_I64S(2));
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* Opset 3-era forms: Dropout is_test, ratio and an unread mask, Cast to a
 * type name, Concat's default axis, Relu consumed_inputs; then
 * BatchNormalization-6 is_test/spatial and an unread mean output. */
START_TEST(old_attribute_forms) {
    oq_model *m = tu_model_new(3);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    Onnx__NodeProto *n = tu_model_node(m, "Dropout", "dr", TU_LIST("x"), TU_LIST("d", "mask_unused"));
    tu_model_attr_float(m, n, "ratio", 0.25f);
    tu_model_attr_int(m, n, "is_test", 1);
    tu_model_attr_ints(m, tu_model_node(m, "Relu", "relu", TU_LIST("d"), TU_LIST("r")),
                       "consumed_inputs", TU_I64S(0));
    tu_model_attr_str(m, tu_model_node(m, "Cast", "cast", TU_LIST("r"), TU_LIST("c")), "to", "INT32");
    tu_model_node(m, "Concat", "cat", TU_LIST("r", "d"), TU_LIST("k"));
    tu_model_output(m, "c", OQ_DTYPE_INT32);
    tu_model_output(m, "k", 1);
    oq_tensor *x = input_f(4, (int64_t[]){1, 2, 2, 2}, 0.0f);
    upgrade_and_compare(m, &x, 1, 4, 0);
    Onnx__NodeProto *dr = find_op(g, "Dropout");
    ck_assert_uint_eq(dr->n_output, 1);
    ck_assert_uint_eq(dr->n_input, 2);
    ck_assert_uint_eq(dr->n_attribute, 0);
    ck_assert(!has_attr(find_op(g, "Relu"), "consumed_inputs"));
    ck_assert_int_eq(attr_i(find_op(g, "Cast"), "to"), OQ_DTYPE_INT32);
    ck_assert_int_eq(attr_i(find_op(g, "Concat"), "axis"), 1);
    oq_model_free(m);

    m = tu_model_new(6);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    tu_model_init_f(m, g, "s", 1, (int64_t[]){2}, (const float[]){1.5f, 0.5f});
    tu_model_init_f(m, g, "b", 1, (int64_t[]){2}, (const float[]){0.1f, 0.2f});
    n = tu_model_node(m, "BatchNormalization", "bn", TU_LIST("x", "s", "b", "b", "s"), TU_LIST("y"));
    tu_model_attr_int(m, n, "is_test", 1);
    tu_model_attr_int(m, n, "spatial", 1);
    tu_model_output(m, "y", 1);
    ck_assert_uint_eq(g->n_input, 3); /* IR 3: s and b are listed as inputs */
    upgrade_and_compare(m, &x, 1, 1, 0);
    ck_assert_uint_eq(find_op(g, "BatchNormalization")->n_attribute, 0);
    ck_assert_uint_eq(g->n_input, 1); /* IR 7: only x */
    oq_model_free(m);

    /* An unread mean output, listed (which opset 7+ reads as training mode):
     * dropped, so the converted model is an inference one the executor runs. */
    m = tu_model_new(6);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    tu_model_init_f(m, g, "s", 1, (int64_t[]){2}, (const float[]){1.5f, 0.5f});
    tu_model_attr_int(m, tu_model_node(m, "BatchNormalization", "bn", TU_LIST("x", "s", "s", "s", "s"),
                                       TU_LIST("y", "mean_unused")),
                      "is_test", 1);
    tu_model_output(m, "y", 1);
    oq_error err = {0};
    int conv = -1;
    ck_assert_msg(oq_upgrade_opset(m, 13, &conv, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(conv, 1);
    ck_assert_uint_eq(g->node[0]->n_output, 1);
    oq_plan_free(plan(m));
    oq_model_free(m);

    /* ... but read, it is refused. */
    m = tu_model_new(6);
    g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    tu_model_init_f(m, g, "s", 1, (int64_t[]){2}, (const float[]){1.5f, 0.5f});
    tu_model_node(m, "BatchNormalization", "bn_t", TU_LIST("x", "s", "s", "s", "s"), TU_LIST("y", "mean"));
    tu_model_output(m, "y", 1);
    tu_model_output(m, "mean", 1);
    oq_status st = oq_upgrade_opset(m, 13, &conv, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'bn_t' (BatchNormalization)", "training-mode");
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* Reshape-1 (shape attribute) and Scatter-9 the executor does not run at
 * their old opsets: the rewrite is checked by structure, the Reshape by
 * running the converted model. */
START_TEST(reshape_scatter_structure) {
    oq_model *m = tu_model_new(4);
    tu_model_input_f(m, "x", 2, (int64_t[]){2, 3});
    tu_model_attr_ints(m, tu_model_node(m, "Reshape", "rs", TU_LIST("x"), TU_LIST("y")),
                       "shape", TU_I64S(3, -1));
    tu_model_output(m, "y", 1);
    oq_error err = {0};
    int conv = -1;
    ck_assert_msg(oq_upgrade_opset(m, 13, &conv, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(conv, 1);
    Onnx__GraphProto *g = tu_model_graph(m);
    assert_i64_init(g, g->node[0]->input[1], TU_I64S(3, -1));
    oq_tensor *x = input_f(2, (int64_t[]){2, 3}, 0.0f), *y[MAX_OUT];
    oq_plan *p = plan(m);
    int n = run(p, (const oq_tensor *const *)&x, 1, y);
    oq_plan_free(p);
    ck_assert(y[0]->rank == 2 && y[0]->dims[0] == 3 && y[0]->dims[1] == 2);
    ck_assert(memcmp(y[0]->data, x->data, x->nbytes) == 0);
    free_outs(y, n);
    oq_tensor_free(x);
    oq_model_free(m);

    m = tu_model_new(9);
    tu_model_input_f(m, "x", 2, (int64_t[]){2, 3});
    oq_edit_add_graph_input(m, tu_model_graph(m), "i", OQ_DTYPE_INT64, 2, (int64_t[]){1, 3}, &err);
    tu_model_attr_int(m, tu_model_node(m, "Scatter", "sc", TU_LIST("x", "i", "x"), TU_LIST("y")), "axis", 1);
    tu_model_output(m, "y", 1);
    ck_assert_msg(oq_upgrade_opset(m, 13, &conv, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(conv, 1);
    ck_assert_str_eq(tu_model_graph(m)->node[0]->op_type, "ScatterElements");
    ck_assert_int_eq(attr_i(tu_model_graph(m)->node[0], "axis"), 1);
    oq_model_free(m);
}
END_TEST

/* Opset-6 broadcasting: axis aligning B with A's trailing dims is numpy
 * broadcasting; any other axis is refused, naming the node. */
START_TEST(broadcast6) {
    oq_model *m = tu_model_new(6);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "a", 3, (int64_t[]){2, 3, 4});
    tu_model_input_f(m, "b", 1, (int64_t[]){4});
    Onnx__NodeProto *n = tu_model_node(m, "Add", "add_ok", TU_LIST("a", "b"), TU_LIST("y"));
    tu_model_attr_int(m, n, "broadcast", 1);
    tu_model_attr_int(m, n, "axis", 2);
    tu_model_attr_int(m, tu_model_node(m, "Mul", "mul_ok", TU_LIST("y", "b"), TU_LIST("z")), "broadcast", 1);
    tu_model_output(m, "z", 1);
    oq_tensor *a = input_f(3, (int64_t[]){2, 3, 4}, 0.0f), *b = input_f(1, (int64_t[]){4}, 1.0f);
    oq_tensor *ins[2] = {a, b};
    upgrade_and_compare(m, ins, 2, 2, 0);
    ck_assert_uint_eq(g->node[0]->n_attribute, 0);
    ck_assert_uint_eq(g->node[1]->n_attribute, 0);
    oq_model_free(m);

    m = tu_model_new(6);
    tu_model_input_f(m, "a", 3, (int64_t[]){2, 3, 4});
    tu_model_input_f(m, "c", 1, (int64_t[]){3});
    n = tu_model_node(m, "Sub", "sub_axis1", TU_LIST("a", "c"), TU_LIST("y"));
    tu_model_attr_int(m, n, "broadcast", 1);
    tu_model_attr_int(m, n, "axis", 1);
    tu_model_output(m, "y", 1);
    oq_error err = {0};
    oq_status st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'sub_axis1' (Sub)", "broadcast=1 with axis=1");
    ck_assert_int_eq(opset_of(m), 6);
    ck_assert(has_attr(tu_model_graph(m)->node[0], "broadcast")); /* left as it was */
    oq_tensor_free(a);
    oq_tensor_free(b);
    oq_model_free(m);
}
END_TEST

/* Converters reach into subgraphs: the opset import covers them too. */
START_TEST(subgraph_converted) {
    oq_model *m = tu_model_new(11);
    oq_error err = {0};
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    oq_edit_add_graph_input(m, tu_model_graph(m), "cond", OQ_DTYPE_BOOL, 0, NULL, &err);
    Onnx__NodeProto *iff = tu_model_node(m, "If", "if", TU_LIST("cond"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    Onnx__GraphProto *tb, *eb;
    ck_assert(oq_edit_graph_new(m, "then", &tb, &err) == OQ_OK);
    ck_assert(oq_edit_graph_new(m, "else", &eb, &err) == OQ_OK);
    tu_model_attr_ints(m, tu_model_node_in(m, tb, "Unsqueeze", "un_t", TU_LIST("x"), TU_LIST("t")),
                       "axes", TU_I64S(0));
    ck_assert(oq_edit_add_graph_output(m, tb, "t", 1, -1, NULL, &err) == OQ_OK);
    tu_model_attr_ints(m, tu_model_node_in(m, eb, "Unsqueeze", "un_e", TU_LIST("x"), TU_LIST("e0")),
                       "axes", TU_I64S(1));
    tu_model_node_in(m, eb, "Transpose", "tr_e", TU_LIST("e0"), TU_LIST("e"));
    ck_assert(oq_edit_add_graph_output(m, eb, "e", 1, -1, NULL, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "then_branch", tb, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "else_branch", eb, &err) == OQ_OK);

    oq_tensor *x = input_f(1, (int64_t[]){3}, 0.0f), *c = tu_tensor_new(OQ_DTYPE_BOOL, 0, NULL);
    oq_tensor *ins[2] = {x, c}, *before[2][MAX_OUT], *after[2][MAX_OUT];
    oq_plan *p = plan(m);
    for (int k = 0; k < 2; k++) {
        *(uint8_t *)c->data = (uint8_t)k;
        run(p, (const oq_tensor *const *)ins, 2, before[k]);
    }
    oq_plan_free(p);
    int conv = -1;
    ck_assert_msg(oq_upgrade_opset(m, 13, &conv, &err) == OQ_OK, "%s", err.msg);
    ck_assert_int_eq(conv, 2);
    ck_assert_uint_eq(tb->node[0]->n_input, 2);
    ck_assert_uint_eq(tb->n_initializer, 1); /* the axes live in the subgraph */
    oq_model *m2 = save_reload(m);
    p = plan(m2);
    for (int k = 0; k < 2; k++) {
        *(uint8_t *)c->data = (uint8_t)k;
        run(p, (const oq_tensor *const *)ins, 2, after[k]);
        assert_close(before[k][0], after[k][0], 0, 0, k ? "then branch" : "else branch");
        free_outs(before[k], 1);
        free_outs(after[k], 1);
    }
    oq_plan_free(p);
    oq_tensor_free(x);
    oq_tensor_free(c);
    oq_model_free(m2);
    oq_model_free(m);
}
END_TEST

/* ---- refusals ------------------------------------------------------------ */

START_TEST(unknown_conversions_refused) {
    oq_error err = {0};
    /* Tile-1 (tiles + axis inputs) changed meaning in opset 6. */
    oq_model *m = tu_model_new(5);
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    tu_model_node(m, "Tile", "tile1", TU_LIST("x", "x", "x"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    oq_status st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'tile1' (Tile)", "changed meaning in opset 6");
    ck_assert_int_eq(opset_of(m), 5);
    oq_model_free(m);

    /* An experimental op of old opsets, unknown to the table. */
    memset(&err, 0, sizeof err);
    m = tu_model_new(7);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 2, 2});
    tu_model_node(m, "ImageScaler", "scaler", TU_LIST("x"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'scaler' (ImageScaler)", "does not know");
    oq_prepare_result r;
    memset(&err, 0, sizeof err);
    st = oq_prepare_model(m, 0, &r, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "ImageScaler", NULL);
    ck_assert_int_eq(opset_of(m), 7);
    oq_model_free(m);

    /* An op newer than the model's opset. */
    memset(&err, 0, sizeof err);
    m = tu_model_new(9);
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    tu_model_node(m, "ThresholdedRelu", "tr", TU_LIST("x"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'tr' (ThresholdedRelu)", "first appears in opset 10");
    oq_model_free(m);

    /* BatchNormalization spatial=0 has no later form. */
    memset(&err, 0, sizeof err);
    m = tu_model_new(8);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 2, 2, 2});
    tu_model_init_f(m, g, "s", 3, (int64_t[]){2, 2, 2}, (const float[]){1, 1, 1, 1, 1, 1, 1, 1});
    Onnx__NodeProto *bn0 =
        tu_model_node(m, "BatchNormalization", "bn0", TU_LIST("x", "s", "s", "s", "s"), TU_LIST("y"));
    tu_model_attr_int(m, bn0, "spatial", 0);
    tu_model_output(m, "y", 1);
    st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "'bn0' (BatchNormalization)", "spatial=0");
    oq_model_free(m);

    /* Default-domain nodes without a default-domain import. */
    memset(&err, 0, sizeof err);
    ck_assert(oq_model_new(&m, &err) == OQ_OK);
    ck_assert(oq_edit_set_opset(m, "com.microsoft", 1, &err) == OQ_OK);
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    tu_model_node(m, "Relu", "relu0", TU_LIST("x"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    st = oq_upgrade_opset(m, 13, NULL, &err);
    expect_error(st, &err, OQ_EMODEL, "'relu0' (Relu)", "does not import");
    oq_model_free(m);

    /* Targets beyond the table; lower targets leave the model alone. */
    memset(&err, 0, sizeof err);
    m = tu_model_new(9);
    tu_model_input_f(m, "x", 1, (int64_t[]){3});
    tu_model_node(m, "Relu", "relu", TU_LIST("x"), TU_LIST("y"));
    tu_model_output(m, "y", 1);
    st = oq_upgrade_opset(m, 21, NULL, &err);
    expect_error(st, &err, OQ_EUNSUPPORTED, "up to 17", NULL);
    int conv = -1;
    ck_assert(oq_upgrade_opset(m, 8, &conv, &err) == OQ_OK);
    ck_assert_int_eq(conv, 0);
    ck_assert_int_eq(opset_of(m), 9);
    ck_assert_int_eq(oq_model_proto(m)->ir_version, 4);
    ck_assert(oq_upgrade_opset(m, 17, &conv, &err) == OQ_OK);
    ck_assert_int_eq(opset_of(m), 17);
    ck_assert_int_eq(oq_model_proto(m)->ir_version, 8);
    ck_assert_int_eq(oq_upgrade_opset(m, -1, NULL, &err), OQ_EINVAL);
    oq_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("prepare");
    TCase *tc = tcase_create("shared_models");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, shared_model, 0, (int)tu_model_count);
    tcase_add_test(tc, quantized_model_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("steps");
    tcase_add_test(tc, count_quantized_kinds);
    tcase_add_test(tc, constants_all_forms);
    tcase_add_test(tc, fold_hand_computed);
    tcase_add_test(tc, fold_shared_and_skipped);
    suite_add_tcase(s, tc);
    tc = tcase_create("converters");
    tcase_add_test(tc, clip6);
    tcase_add_test(tc, squeeze_unsqueeze11);
    tcase_add_test(tc, split11);
    tcase_add_test(tc, reducesum11);
    tcase_add_test(tc, softmax11);
    tcase_add_test(tc, pad2);
    tcase_add_test(tc, slice1);
    tcase_add_test(tc, upsample9);
    tcase_add_test(tc, upsample7);
    tcase_add_test(tc, resize10);
    tcase_add_test(tc, topk1);
    tcase_add_test(tc, old_attribute_forms);
    tcase_add_test(tc, reshape_scatter_structure);
    tcase_add_test(tc, broadcast6);
    tcase_add_test(tc, subgraph_converted);
    tcase_add_test(tc, unknown_conversions_refused);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
