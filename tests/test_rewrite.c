/* test_rewrite.c: the QDQ rewrite. Hand-built models check each rule
 * (Relu/Clip carry the Conv's Q, data movement shares parameters, dedicated
 * pairs, exclusions with reasons, graph outputs keep their names, shared
 * weights quantized once, int32 biases at s_x*s_w for Conv/Gemm and a
 * MatMul's bias Add, constant subgraphs, isolated element-wise ops left
 * float, overrides, errors); real models (fmnist_cnn, fmnist_vit, mnist-8,
 * prepared) are calibrated with a min/max observer, rewritten statically,
 * dynamically and weight-only, saved, reloaded and run against their FP32
 * reference outputs. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edit.h"
#include "exec.h"
#include "graph.h"
#include "model.h"
#include "prepare.h"
#include "rewrite.h"
#include "tensorproto.h"
#include "testutil.h"

#define CHECK(call)                                                                        \
    do {                                                                                   \
        oq_error e_ = {0};                                                                 \
        oq_status s_ = (call);                                                             \
        (void)e_;                                                                          \
        ck_assert_msg(s_ == OQ_OK, "%s failed: %s", #call, oq_status_name(s_));            \
    } while (0)
#define OK(call, errp) ck_assert_msg((call) == OQ_OK, "%s: %s", #call, (errp)->msg)
#define LIST(...) ((const char *const[]){__VA_ARGS__}), (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* ---- model building -------------------------------------------------------- */

typedef struct {
    oq_model *m;
    Onnx__GraphProto *g;
} mb;

static mb mb_new(int opset) {
    oq_error err = {0};
    mb b;
    OK(oq_model_new(&b.m, &err), &err);
    OK(oq_edit_set_opset(b.m, "", opset, &err), &err);
    b.g = oq_model_proto(b.m)->graph;
    return b;
}

static void mb_input(mb *b, const char *name, int rank, const int64_t *dims) {
    oq_error err = {0};
    OK(oq_edit_add_graph_input(b->m, b->g, name, OQ_DTYPE_FLOAT, rank, dims, &err), &err);
}

static void mb_output(mb *b, const char *name) {
    oq_error err = {0};
    OK(oq_edit_add_graph_output(b->m, b->g, name, OQ_DTYPE_FLOAT, -1, NULL, &err), &err);
}

/* A float initializer with values v[i] = scale * sin(seed + i). */
static void mb_init(mb *b, const char *name, int rank, const int64_t *dims, float scale, int seed) {
    oq_error err = {0};
    oq_tensor *t;
    OK(oq_tensor_new(OQ_DTYPE_FLOAT, rank, dims, 0, &t, &err), &err);
    float *d = t->data;
    for (size_t i = 0; i < t->count; i++)
        d[i] = scale * sinf((float)seed + 0.7f * (float)i);
    OK(oq_edit_add_initializer(b->m, b->g, name, t, &err), &err);
    oq_tensor_free(t);
}

static void mb_init_i64(mb *b, const char *name, int n, const int64_t *v) {
    oq_error err = {0};
    oq_tensor *t;
    int64_t dims[1] = {n};
    OK(oq_tensor_new(OQ_DTYPE_INT64, 1, dims, 0, &t, &err), &err);
    memcpy(t->data, v, (size_t)n * sizeof *v);
    OK(oq_edit_add_initializer(b->m, b->g, name, t, &err), &err);
    oq_tensor_free(t);
}

static Onnx__NodeProto *mb_node(mb *b, const char *op, const char *name, const char *const *in,
                                size_t nin, const char *const *out, size_t nout) {
    oq_error err = {0};
    Onnx__NodeProto *n;
    OK(oq_edit_insert_node(b->m, b->g, OQ_EDIT_APPEND, op, NULL, name, in, nin, out, nout, &n, &err),
       &err);
    return n;
}

/* ---- min/max observer and range function --------------------------------- */

typedef struct {
    char **names;
    size_t n;
    float *lo, *hi;
    bool *seen;
} mm_obs;

static void obs_init(mm_obs *o, char **names, size_t n) {
    o->names = names;
    o->n = n;
    o->lo = calloc(n + 1, sizeof *o->lo);
    o->hi = calloc(n + 1, sizeof *o->hi);
    o->seen = calloc(n + 1, sizeof *o->seen);
}

static void obs_free(mm_obs *o) {
    oq_strings_free(o->names, o->n);
    free(o->lo);
    free(o->hi);
    free(o->seen);
}

static oq_status obs_fn(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    (void)err;
    mm_obs *o = ctx;
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->names[i], name))
            continue;
        ck_assert_int_eq(t->dtype, OQ_DTYPE_FLOAT);
        const float *d = t->data;
        for (size_t k = 0; k < t->count; k++) {
            if (!o->seen[i] || d[k] < o->lo[i])
                o->lo[i] = d[k];
            if (!o->seen[i] || d[k] > o->hi[i])
                o->hi[i] = d[k];
            o->seen[i] = true;
        }
        break;
    }
    return OQ_OK;
}

static int range_calls;

static oq_status obs_range(void *ctx, const char *tensor, float *lo, float *hi, oq_error *err) {
    mm_obs *o = ctx;
    range_calls++;
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->names[i], tensor)) {
            if (!o->seen[i])
                return oq_err(err, OQ_ENOTFOUND, "tensor '%s' never seen", tensor);
            *lo = o->lo[i];
            *hi = o->hi[i];
            return OQ_OK;
        }
    return oq_err(err, OQ_ENOTFOUND, "tensor '%s' is not tracked", tensor);
}

/* ---- running ---------------------------------------------------------------- */

static oq_plan *plan_of(oq_model *m) {
    oq_error err = {0};
    oq_plan_opts po = oq_plan_opts_default();
    po.threads = 2;
    oq_plan *p;
    OK(oq_plan_new(m, &po, &p, &err), &err);
    return p;
}

/* Runs a one-input model on x and returns its first output; observer
 * optional. */
static oq_tensor *run1(oq_plan *p, const oq_tensor *x, oq_observer_fn obs, void *ctx) {
    oq_error err = {0};
    oq_tensor *out[4] = {0};
    const oq_tensor *in[1] = {x};
    ck_assert_int_le(oq_plan_output_count(p), 4);
    OK(oq_plan_run(p, in, 1, out, obs, ctx, &err), &err);
    for (int k = 1; k < 4; k++)
        oq_tensor_free(out[k]);
    return out[0];
}

/* Calibrates m's activation tensors (per cfg) on the first n rows of x, in
 * batches of `batch`. */
static void calibrate(oq_model *m, const oq_quant_config *cfg, const oq_tensor *x, int64_t n,
                      int64_t batch, mm_obs *o) {
    oq_error err = {0};
    char **names;
    size_t nn;
    OK(oq_rewrite_activation_tensors(m, cfg, &names, &nn, &err), &err);
    obs_init(o, names, nn);
    oq_plan *p = plan_of(m);
    for (int64_t s = 0; s < n; s += batch) {
        oq_tensor *rows = tu_rows(x, s, batch);
        oq_tensor_free(run1(p, rows, obs_fn, o));
        oq_tensor_free(rows);
    }
    oq_plan_free(p);
}

static oq_tensor *random_input(int rank, const int64_t *dims, int seed) {
    oq_error err = {0};
    oq_tensor *t;
    OK(oq_tensor_new(OQ_DTYPE_FLOAT, rank, dims, 0, &t, &err), &err);
    float *d = t->data;
    unsigned s = (unsigned)seed * 2654435761u + 1;
    for (size_t i = 0; i < t->count; i++) {
        s = s * 1103515245u + 12345u;
        d[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return t;
}

static float max_abs_diff(const oq_tensor *a, const oq_tensor *b) {
    ck_assert_uint_eq(a->count, b->count);
    float m = 0;
    for (size_t i = 0; i < a->count; i++)
        m = fmaxf(m, fabsf(((const float *)a->data)[i] - ((const float *)b->data)[i]));
    return m;
}

static float max_abs(const oq_tensor *a) {
    float m = 0;
    for (size_t i = 0; i < a->count; i++)
        m = fmaxf(m, fabsf(((const float *)a->data)[i]));
    return m;
}

/* Save and reload (the rewritten model must serialise and load again). */
static oq_model *reload(oq_model *m) {
    oq_error err = {0};
    uint8_t *buf;
    size_t len;
    OK(oq_model_save_buffer(m, &buf, &len, &err), &err);
    oq_model *r;
    OK(oq_model_load_buffer(buf, len, NULL, &r, &err), &err);
    free(buf);
    oq_graph *g;
    OK(oq_graph_new(r, &g, &err), &err); /* builds: sorted, no dangling names */
    oq_graph_free(g);
    return r;
}

/* ---- graph queries ---------------------------------------------------------- */

static Onnx__GraphProto *gp_of(oq_model *m) {
    return oq_model_proto(m)->graph;
}

static int count_op(oq_model *m, const char *op) {
    Onnx__GraphProto *g = gp_of(m);
    int n = 0;
    for (size_t i = 0; i < g->n_node; i++)
        n += !strcmp(g->node[i]->op_type, op);
    return n;
}

/* Nodes of op type op reading name in any slot. */
static int count_readers(oq_model *m, const char *op, const char *name) {
    Onnx__GraphProto *g = gp_of(m);
    int n = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        if (op && strcmp(g->node[i]->op_type, op))
            continue;
        for (size_t s = 0; s < g->node[i]->n_input; s++)
            if (!strcmp(g->node[i]->input[s], name)) {
                n++;
                break;
            }
    }
    return n;
}

static Onnx__NodeProto *producer(oq_model *m, const char *name) {
    Onnx__GraphProto *g = gp_of(m);
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t s = 0; s < g->node[i]->n_output; s++)
            if (!strcmp(g->node[i]->output[s], name))
                return g->node[i];
    return NULL;
}

static Onnx__NodeProto *node_named(oq_model *m, const char *name) {
    Onnx__GraphProto *g = gp_of(m);
    for (size_t i = 0; i < g->n_node; i++)
        if (g->node[i]->name && !strcmp(g->node[i]->name, name))
            return g->node[i];
    return NULL;
}

static Onnx__NodeProto *first_reader(oq_model *m, const char *op, const char *name) {
    Onnx__GraphProto *g = gp_of(m);
    for (size_t i = 0; i < g->n_node; i++) {
        if (op && strcmp(g->node[i]->op_type, op))
            continue;
        for (size_t s = 0; s < g->node[i]->n_input; s++)
            if (!strcmp(g->node[i]->input[s], name))
                return g->node[i];
    }
    return NULL;
}

static const Onnx__TensorProto *init_named(oq_model *m, const char *name) {
    Onnx__GraphProto *g = gp_of(m);
    for (size_t i = 0; i < g->n_initializer; i++)
        if (!strcmp(g->initializer[i]->name, name))
            return g->initializer[i];
    return NULL;
}

static oq_tensor *init_tensor(oq_model *m, const char *name) {
    const Onnx__TensorProto *tp = init_named(m, name);
    ck_assert_msg(tp != NULL, "no initializer '%s'", name);
    oq_error err = {0};
    oq_tensor *t;
    OK(oq_tensor_from_proto(tp, NULL, 0, &t, &err), &err);
    return t;
}

static float scalar_f(oq_model *m, const char *name) {
    oq_tensor *t = init_tensor(m, name);
    ck_assert_int_eq(t->dtype, OQ_DTYPE_FLOAT);
    ck_assert_int_eq(t->rank, 0);
    float v = ((float *)t->data)[0];
    oq_tensor_free(t);
    return v;
}

static int64_t attr_axis(const Onnx__NodeProto *n, int64_t def) {
    int64_t v = def;
    oq_error err = {0};
    OK(oq_node_attr_int(n, "axis", def, &v, &err), &err);
    return v;
}

static const oq_node_decision *decision(const oq_rewrite_result *r, const char *node) {
    for (size_t i = 0; i < r->n_nodes; i++)
        if (!strcmp(r->nodes[i].node, node))
            return &r->nodes[i];
    ck_abort_msg("no decision for node '%s'", node);
    return NULL;
}

/* Static rewrite of m after calibrating on x (batch rows at once). */
static void rewrite_static_on(oq_model *m, const oq_quant_config *cfg, const oq_tensor *x,
                              oq_rewrite_result *res, mm_obs *o) {
    oq_error err = {0};
    calibrate(m, cfg, x, x->dims[0], x->dims[0], o);
    OK(oq_rewrite_static(m, cfg, obs_range, o, res, &err), &err);
}

static void dump(oq_model *q, const char *key, const char *mode);

/* ---- hand-built rules ------------------------------------------------------- */

/* x[1,2,6,6] -> Conv(W[3,2,3,3], B[3]) -> c -> Relu -> y (graph output) */
static mb conv_relu_model(void) {
    mb b = mb_new(13);
    mb_input(&b, "x", 4, (int64_t[]){1, 2, 6, 6});
    mb_init(&b, "W", 4, (int64_t[]){3, 2, 3, 3}, 0.5f, 1);
    mb_init(&b, "B", 1, (int64_t[]){3}, 0.2f, 2);
    mb_node(&b, "Conv", "conv", LIST("x", "W", "B"), LIST("c"));
    mb_node(&b, "Relu", "relu", LIST("c"), LIST("y"));
    mb_output(&b, "y");
    return b;
}

START_TEST(conv_relu_qdq_on_relu_output) {
    mb b = conv_relu_model();
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 6, 6}, 3);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);

    oq_quant_config cfg = oq_quant_config_default();
    cfg.activation_type = OQ_DTYPE_INT8;
    oq_error err = {0};
    char **names;
    size_t n;
    OK(oq_rewrite_activation_tensors(b.m, &cfg, &names, &n, &err), &err);
    /* exactly x and the Relu output: the Conv output is folded */
    ck_assert_uint_eq(n, 2);
    ck_assert(!strcmp(names[0], "x") || !strcmp(names[1], "x"));
    ck_assert(!strcmp(names[0], "y") || !strcmp(names[1], "y"));
    oq_strings_free(names, n);

    oq_rewrite_result res;
    mm_obs o;
    range_calls = 0;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    dump(b.m, "conv_relu", "static");
    ck_assert_int_eq(range_calls, 2);
    oq_model *q = reload(b.m);

    /* No Q/DQ on the Conv output: the Relu reads it directly. */
    ck_assert_int_eq(count_readers(q, "QuantizeLinear", "c"), 0);
    Onnx__NodeProto *relu = node_named(q, "relu");
    ck_assert_str_eq(relu->input[0], "c");
    ck_assert_int_eq(count_readers(q, NULL, "c"), 1);
    /* The graph output keeps its name, produced by a DequantizeLinear fed by
     * the Q of the Relu's (renamed) output. */
    ck_assert_str_eq(gp_of(q)->output[0]->name, "y");
    Onnx__NodeProto *dq = producer(q, "y");
    ck_assert_str_eq(dq->op_type, "DequantizeLinear");
    Onnx__NodeProto *qn = producer(q, dq->input[0]);
    ck_assert_str_eq(qn->op_type, "QuantizeLinear");
    ck_assert_str_eq(qn->input[0], relu->output[0]);
    ck_assert_int_eq(count_readers(q, NULL, relu->output[0]), 1);
    /* Relu output is asymmetric with zero point qmin: ORT removes the Relu. */
    oq_tensor *zp = init_tensor(q, qn->input[2]);
    ck_assert_int_eq(zp->dtype, OQ_DTYPE_INT8);
    ck_assert_int_eq(zp->rank, 0);
    ck_assert_int_eq(((int8_t *)zp->data)[0], -128);
    oq_tensor_free(zp);

    /* Conv inputs: x via DQ(Q(x)), W via per-channel DQ (axis 0), bias int32
     * via DQ with scale s_x * s_w[c], zero point 0. */
    Onnx__NodeProto *conv = node_named(q, "conv");
    Onnx__NodeProto *dqx = producer(q, conv->input[0]), *dqw = producer(q, conv->input[1]),
                    *dqb = producer(q, conv->input[2]);
    ck_assert_str_eq(dqx->op_type, "DequantizeLinear");
    ck_assert_str_eq(dqw->op_type, "DequantizeLinear");
    ck_assert_str_eq(dqb->op_type, "DequantizeLinear");
    ck_assert_str_eq(producer(q, dqx->input[0])->op_type, "QuantizeLinear");
    ck_assert_str_eq(producer(q, dqx->input[0])->input[0], "x");
    ck_assert_int_eq(attr_axis(dqw, -99), 0);
    oq_tensor *wq = init_tensor(q, dqw->input[0]), *ws = init_tensor(q, dqw->input[1]),
              *wz = init_tensor(q, dqw->input[2]);
    ck_assert_int_eq(wq->dtype, OQ_DTYPE_INT8);
    ck_assert_int_eq(ws->rank, 1);
    ck_assert_int_eq(ws->dims[0], 3);
    ck_assert_int_eq(wz->dtype, OQ_DTYPE_INT8);
    float sx = scalar_f(q, dqx->input[1]);
    oq_tensor *bq = init_tensor(q, dqb->input[0]), *bs = init_tensor(q, dqb->input[1]),
              *bz = init_tensor(q, dqb->input[2]);
    ck_assert_int_eq(bq->dtype, OQ_DTYPE_INT32);
    ck_assert_int_eq(bz->dtype, OQ_DTYPE_INT32);
    ck_assert_int_eq(attr_axis(dqb, -99), 0);
    for (int c = 0; c < 3; c++) {
        ck_assert_int_eq(((int8_t *)wz->data)[c], 0); /* symmetric weights */
        ck_assert_int_eq(((int32_t *)bz->data)[c], 0);
        float expect = sx * ((float *)ws->data)[c];
        ck_assert_float_eq(((float *)bs->data)[c], expect);
        float bb = 0.2f * sinf(2.0f + 0.7f * (float)c);
        ck_assert_float_eq_tol((float)((int32_t *)bq->data)[c] * expect, bb, expect);
    }
    oq_tensor_free(wq);
    oq_tensor_free(ws);
    oq_tensor_free(wz);
    oq_tensor_free(bq);
    oq_tensor_free(bs);
    oq_tensor_free(bz);
    /* The float weight and bias are gone. */
    ck_assert(init_named(q, "W") == NULL);
    ck_assert(init_named(q, "B") == NULL);

    ck_assert_int_eq(res.n_quantize_linear, 2);   /* x, y */
    ck_assert_int_eq(res.n_dequantize_linear, 4); /* x, W, B, y */
    ck_assert_int_eq(count_op(q, "QuantizeLinear"), 2);
    ck_assert_int_eq(count_op(q, "DequantizeLinear"), 4);
    ck_assert_int_eq(res.n_quantized, 2);
    ck_assert(decision(&res, "conv")->quantized);
    ck_assert(strstr(decision(&res, "conv")->reason, "QLinearConv"));
    ck_assert(decision(&res, "relu")->quantized);
    ck_assert(strstr(decision(&res, "relu")->reason, "conv"));

    /* It computes what the float model did, within the quantization error. */
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    float tol = 4 * (max_abs(ref) / 255.0f) + 0.05f * max_abs(ref);
    ck_assert_msg(max_abs_diff(y, ref) <= tol, "error %g > %g", (double)max_abs_diff(y, ref),
                  (double)tol);
    json_t *j = oq_rewrite_result_to_json(&res);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "quantize_linear_added")), 2);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "decisions")), 2);
    json_decref(j);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

START_TEST(symmetric_relu_keeps_conv_q) {
    /* With symmetric activations the Relu output's zero point is 0, not
     * qmin: ORT would keep the Relu, so the Conv gets its own Q. */
    mb b = conv_relu_model();
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 6, 6}, 5);
    oq_quant_config cfg = oq_quant_config_default();
    cfg.activation_symmetric = true;
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    ck_assert_int_eq(count_readers(b.m, "QuantizeLinear", "c"), 1);
    ck_assert_int_eq(res.n_quantize_linear, 3);
    ck_assert(strstr(decision(&res, "relu")->reason, "no integer kernel"));
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
}
END_TEST

START_TEST(reshape_reuses_params) {
    /* x -> Conv -> c -> Reshape -> r -> MatMul(Wm) -> y */
    mb b = mb_new(13);
    mb_input(&b, "x", 4, (int64_t[]){1, 2, 4, 4});
    mb_init(&b, "W", 4, (int64_t[]){2, 2, 1, 1}, 0.7f, 1);
    mb_init_i64(&b, "shape", 2, (int64_t[]){1, 32});
    mb_init(&b, "Wm", 2, (int64_t[]){32, 5}, 0.3f, 4);
    mb_node(&b, "Conv", "conv", LIST("x", "W"), LIST("c"));
    mb_node(&b, "Reshape", "reshape", LIST("c", "shape"), LIST("r"));
    mb_node(&b, "MatMul", "mm", LIST("r", "Wm"), LIST("y"));
    mb_output(&b, "y");
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 4, 4}, 7);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);

    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    /* ranges were needed for x and c only */
    ck_assert_uint_eq(o.n, 2);
    for (size_t i = 0; i < o.n; i++)
        ck_assert(!strcmp(o.names[i], "x") || !strcmp(o.names[i], "c"));
    oq_model *q = reload(b.m);
    Onnx__NodeProto *qc = first_reader(q, "QuantizeLinear", "c");
    Onnx__NodeProto *qr = first_reader(q, "QuantizeLinear", "r");
    ck_assert(qc && qr);
    ck_assert_str_eq(qc->input[1], qr->input[1]); /* same scale initializer */
    ck_assert_str_eq(qc->input[2], qr->input[2]); /* same zero point */
    /* Reshape reads the DQ of c; MatMul reads the DQ of r; the MatMul output
     * (graph output, no quantized consumer) stays float. */
    ck_assert_str_eq(producer(q, node_named(q, "reshape")->input[0])->op_type, "DequantizeLinear");
    Onnx__NodeProto *mm = node_named(q, "mm");
    ck_assert_str_eq(producer(q, mm->input[0])->op_type, "DequantizeLinear");
    ck_assert_str_eq(producer(q, mm->input[1])->op_type, "DequantizeLinear");
    ck_assert_int_eq(attr_axis(producer(q, mm->input[1]), -99), 1); /* per column */
    ck_assert_str_eq(mm->output[0], "y");
    ck_assert_int_eq(count_readers(q, "QuantizeLinear", "y"), 0);
    ck_assert(strstr(decision(&res, "reshape")->reason, "'c'"));
    ck_assert(strstr(decision(&res, "mm")->reason, "MatMulIntegerToFloat"));
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    ck_assert_float_le(max_abs_diff(y, ref), 0.05f * max_abs(ref) + 0.02f);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

/* x -> Sigmoid -> s -> {Conv a, Conv b} -> Add -> y */
static mb fanout_model(void) {
    mb b = mb_new(13);
    mb_input(&b, "x", 4, (int64_t[]){1, 2, 4, 4});
    mb_init(&b, "Wa", 4, (int64_t[]){2, 2, 1, 1}, 0.7f, 1);
    mb_init(&b, "Wb", 4, (int64_t[]){2, 2, 1, 1}, 0.5f, 2);
    mb_node(&b, "Sigmoid", "sig", LIST("x"), LIST("s"));
    mb_node(&b, "Conv", "conv_a", LIST("s", "Wa"), LIST("a"));
    mb_node(&b, "Conv", "conv_b", LIST("s", "Wb"), LIST("bb"));
    mb_node(&b, "Add", "add", LIST("a", "bb"), LIST("y"));
    mb_output(&b, "y");
    return b;
}

START_TEST(dedicated_pairs) {
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 4, 4}, 9);
    for (int ded = 0; ded < 2; ded++) {
        mb b = fanout_model();
        oq_quant_config cfg = oq_quant_config_default();
        cfg.dedicated_qdq_pairs = ded;
        oq_rewrite_result res;
        mm_obs o;
        rewrite_static_on(b.m, &cfg, x, &res, &o);
        oq_model *q = reload(b.m);
        /* default: one Q for s and a DQ per consumer; dedicated: a pair each */
        ck_assert_int_eq(count_readers(q, "QuantizeLinear", "s"), ded ? 2 : 1);
        ck_assert_int_eq(count_readers(q, NULL, "s"), ded ? 2 : 1);
        const char *ia = node_named(q, "conv_a")->input[0], *ib = node_named(q, "conv_b")->input[0];
        ck_assert_str_ne(ia, ib);
        ck_assert_str_eq(producer(q, ia)->op_type, "DequantizeLinear");
        ck_assert_str_eq(producer(q, ib)->op_type, "DequantizeLinear");
        const char *qa = producer(q, ia)->input[0], *qb = producer(q, ib)->input[0];
        if (ded)
            ck_assert_str_ne(qa, qb);
        else
            ck_assert_str_eq(qa, qb);
        ck_assert(decision(&res, "add")->quantized);
        ck_assert(decision(&res, "sig")->quantized);
        oq_rewrite_result_free(&res);
        obs_free(&o);
        oq_model_free(q);
        oq_model_free(b.m);
    }
    oq_tensor_free(x);
}
END_TEST

START_TEST(exclusions_with_reasons) {
    mb b = fanout_model();
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 4, 4}, 11);
    oq_quant_config cfg = oq_quant_config_default();
    char *ex_nodes[] = {"conv_a", "nothing*"};
    char *ex_ops[] = {"Sigmoid"};
    cfg.exclude_nodes = ex_nodes;
    cfg.n_exclude_nodes = 2;
    cfg.exclude_op_types = ex_ops;
    cfg.n_exclude_op_types = 1;
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    const oq_node_decision *da = decision(&res, "conv_a"), *ds = decision(&res, "sig");
    ck_assert(!da->quantized);
    ck_assert(strstr(da->reason, "exclude_nodes"));
    ck_assert(!ds->quantized);
    ck_assert(strstr(ds->reason, "exclude_op_types"));
    ck_assert(decision(&res, "conv_b")->quantized);
    ck_assert_int_eq(res.n_excluded, 2);
    /* conv_a keeps its float weight; conv_b's is quantized */
    ck_assert_str_eq(node_named(b.m, "conv_a")->input[1], "Wa");
    ck_assert_str_eq(producer(b.m, node_named(b.m, "conv_b")->input[1])->op_type, "DequantizeLinear");
    ck_assert(init_named(b.m, "Wa") != NULL);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);

    /* by pattern */
    b = fanout_model();
    char *pat[] = {"conv_*"};
    cfg = oq_quant_config_default();
    cfg.exclude_nodes = pat;
    cfg.n_exclude_nodes = 1;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    ck_assert(!decision(&res, "conv_a")->quantized);
    ck_assert(!decision(&res, "conv_b")->quantized);
    ck_assert(strstr(decision(&res, "conv_b")->reason, "pattern 'conv_*'"));
    ck_assert_int_eq(res.n_excluded, 2);
    ck_assert(decision(&res, "add")->quantized);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);

    /* op_types restricts the set */
    b = fanout_model();
    char *only[] = {"Conv"};
    cfg = oq_quant_config_default();
    cfg.op_types = only;
    cfg.n_op_types = 1;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    ck_assert(decision(&res, "conv_a")->quantized);
    ck_assert(!decision(&res, "add")->quantized);
    ck_assert(strstr(decision(&res, "add")->reason, "op_types"));
    ck_assert_int_eq(res.n_excluded, 0);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
    oq_tensor_free(x);
}
END_TEST

START_TEST(shared_weight_once) {
    /* x -> MatMul(W) -> a ; x -> MatMul(W) -> b2 ; Add -> y */
    mb b = mb_new(13);
    mb_input(&b, "x", 2, (int64_t[]){3, 8});
    mb_init(&b, "W", 2, (int64_t[]){8, 4}, 0.5f, 3);
    mb_node(&b, "MatMul", "m1", LIST("x", "W"), LIST("a"));
    mb_node(&b, "Relu", "r", LIST("x"), LIST("xr"));
    mb_node(&b, "MatMul", "m2", LIST("xr", "W"), LIST("b2"));
    mb_node(&b, "Add", "add", LIST("a", "b2"), LIST("y"));
    mb_output(&b, "y");
    oq_tensor *x = random_input(2, (int64_t[]){3, 8}, 13);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);
    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    oq_model *q = reload(b.m);
    int int8_inits = 0;
    for (size_t i = 0; i < gp_of(q)->n_initializer; i++) {
        const Onnx__TensorProto *t = gp_of(q)->initializer[i];
        int8_inits += t->data_type == OQ_DTYPE_INT8 && t->n_dims == 2;
    }
    ck_assert_int_eq(int8_inits, 1);
    ck_assert(init_named(q, "W") == NULL);
    const char *w1 = producer(q, node_named(q, "m1")->input[1])->input[0];
    const char *w2 = producer(q, node_named(q, "m2")->input[1])->input[0];
    ck_assert_str_eq(w1, w2);
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    ck_assert_float_le(max_abs_diff(y, ref), 0.05f * max_abs(ref) + 0.02f);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

START_TEST(gemm_bias_and_float_output) {
    /* x[2,6] -> Gemm(B[4,6] transB, C[4], beta 0.5) -> y (graph output) */
    mb b = mb_new(13);
    mb_input(&b, "x", 2, (int64_t[]){2, 6});
    mb_init(&b, "B", 2, (int64_t[]){4, 6}, 0.4f, 1);
    mb_init(&b, "C", 1, (int64_t[]){4}, 1.5f, 2);
    Onnx__NodeProto *g = mb_node(&b, "Gemm", "gemm", LIST("x", "B", "C"), LIST("y"));
    oq_error err = {0};
    OK(oq_edit_set_attr_int(b.m, g, "transB", 1, &err), &err);
    OK(oq_edit_set_attr_float(b.m, g, "beta", 0.5f, &err), &err);
    mb_output(&b, "y");
    oq_tensor *x = random_input(2, (int64_t[]){2, 6}, 17);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);
    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    oq_model *q = reload(b.m);
    Onnx__NodeProto *gm = node_named(q, "gemm");
    ck_assert_str_eq(gm->output[0], "y"); /* float output: QGemm without Q */
    Onnx__NodeProto *dqb = producer(q, gm->input[1]), *dqc = producer(q, gm->input[2]),
                    *dqx = producer(q, gm->input[0]);
    ck_assert_int_eq(attr_axis(dqb, -99), 0); /* transB: rows are the outputs */
    float beta = 0;
    OK(oq_node_attr_float(gm, "beta", 1, &beta, &err), &err);
    ck_assert_float_eq(beta, 1.0f); /* folded into C */
    oq_tensor *cq = init_tensor(q, dqc->input[0]), *cs = init_tensor(q, dqc->input[1]),
              *bs = init_tensor(q, dqb->input[1]);
    float sx = scalar_f(q, dqx->input[1]);
    ck_assert_int_eq(cq->dtype, OQ_DTYPE_INT32);
    for (int c = 0; c < 4; c++) {
        float s = ((float *)cs->data)[c];
        ck_assert_float_eq(s, sx * ((float *)bs->data)[c]);
        float want = 0.5f * 1.5f * sinf(2.0f + 0.7f * (float)c);
        ck_assert_float_eq_tol((float)((int32_t *)cq->data)[c] * s, want, s);
    }
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    ck_assert_float_le(max_abs_diff(y, ref), 0.03f * max_abs(ref) + 0.01f);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(cq);
    oq_tensor_free(cs);
    oq_tensor_free(bs);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

START_TEST(matmul_bias_add) {
    /* x[2,3,8] -> MatMul(W[8,4]) -> Add(b[1,1,4]) -> Relu -> y: the bias
     * becomes int32 at s_x * s_w (per column), the MatMul output is not
     * rounded, the Add stays float; its output is quantized for the Relu. */
    mb b = mb_new(13);
    mb_input(&b, "x", 3, (int64_t[]){2, 3, 8});
    mb_init(&b, "W", 2, (int64_t[]){8, 4}, 0.5f, 1);
    mb_init(&b, "bias", 3, (int64_t[]){1, 1, 4}, 2.0f, 2);
    mb_node(&b, "MatMul", "mm", LIST("x", "W"), LIST("h"));
    mb_node(&b, "Add", "add", LIST("h", "bias"), LIST("hb"));
    mb_node(&b, "Sigmoid", "sig", LIST("hb"), LIST("y"));
    mb_output(&b, "y");
    oq_tensor *x = random_input(3, (int64_t[]){2, 3, 8}, 31);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);
    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    ck_assert_uint_eq(o.n, 3); /* x, hb, y: not h */
    oq_model *q = reload(b.m);
    ck_assert_int_eq(count_readers(q, "QuantizeLinear", "h"), 0);
    Onnx__NodeProto *add = node_named(q, "add");
    ck_assert_str_eq(add->input[0], "h");
    Onnx__NodeProto *dqb = producer(q, add->input[1]);
    ck_assert_str_eq(dqb->op_type, "DequantizeLinear");
    ck_assert_int_eq(attr_axis(dqb, -99), 2);
    oq_tensor *bq = init_tensor(q, dqb->input[0]), *bs = init_tensor(q, dqb->input[1]);
    Onnx__NodeProto *mm = node_named(q, "mm");
    float sx = scalar_f(q, producer(q, mm->input[0])->input[1]);
    oq_tensor *ws = init_tensor(q, producer(q, mm->input[1])->input[1]);
    ck_assert_int_eq(bq->dtype, OQ_DTYPE_INT32);
    ck_assert_int_eq(bq->rank, 3);
    for (int c = 0; c < 4; c++)
        ck_assert_float_eq(((float *)bs->data)[c], sx * ((float *)ws->data)[c]);
    oq_tensor_free(bq);
    oq_tensor_free(bs);
    oq_tensor_free(ws);
    ck_assert(!decision(&res, "add")->quantized);
    ck_assert(strstr(decision(&res, "add")->reason, "bias of"));
    ck_assert(strstr(decision(&res, "mm")->reason, "MatMulIntegerToFloat"));
    ck_assert(init_named(q, "bias") == NULL);
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    ck_assert_float_le(max_abs_diff(y, ref), 0.02f);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

START_TEST(isolated_elementwise_left_float) {
    /* Exp -> Add(k) -> Log beside a Conv: the Add touches no quantized
     * node, so it stays float; without any Conv/Gemm/MatMul it is kept. */
    for (int with_conv = 1; with_conv >= 0; with_conv--) {
        mb b = mb_new(13);
        mb_input(&b, "x", 4, (int64_t[]){1, 2, 3, 3});
        mb_init(&b, "k", 1, (int64_t[]){1}, 1.0f, 1);
        if (with_conv) {
            mb_init(&b, "W", 4, (int64_t[]){2, 2, 1, 1}, 0.5f, 2);
            mb_node(&b, "Conv", "conv", LIST("x", "W"), LIST("y1"));
            mb_output(&b, "y1");
        }
        mb_node(&b, "Exp", "exp", LIST("x"), LIST("e"));
        mb_node(&b, "Add", "add", LIST("e", "k"), LIST("a"));
        mb_node(&b, "Log", "log", LIST("a"), LIST("y2"));
        mb_output(&b, "y2");
        oq_tensor *x = random_input(4, (int64_t[]){1, 2, 3, 3}, 37);
        oq_quant_config cfg = oq_quant_config_default();
        oq_rewrite_result res;
        mm_obs o;
        rewrite_static_on(b.m, &cfg, x, &res, &o);
        const oq_node_decision *d = decision(&res, "add");
        ck_assert_msg(d->quantized == !with_conv, "%s", d->reason);
        if (with_conv) {
            ck_assert(strstr(d->reason, "not connected"));
            ck_assert_int_eq(count_readers(b.m, "QuantizeLinear", "e"), 0);
        } else {
            ck_assert_int_eq(count_readers(b.m, "QuantizeLinear", "e"), 1);
        }
        oq_tensor_free(x);
        oq_rewrite_result_free(&res);
        obs_free(&o);
        oq_model_free(b.m);
    }
}
END_TEST

START_TEST(overrides_apply) {
    mb b = conv_relu_model();
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 6, 6}, 19);
    oq_quant_config cfg = oq_quant_config_default();
    cfg.activation_type = OQ_DTYPE_INT8;
    oq_tensor_override ov[2] = {
        {.pattern = "y*", .dtype = OQ_DTYPE_UINT8, .symmetric = -1, .has_range = true, .lo = 0, .hi = 8},
        {.pattern = "x", .dtype = 0, .symmetric = 1},
    };
    cfg.overrides = ov;
    cfg.n_overrides = 2;
    oq_error err = {0};
    char **names;
    size_t n;
    OK(oq_rewrite_activation_tensors(b.m, &cfg, &names, &n, &err), &err);
    ck_assert_uint_eq(n, 1); /* y has a fixed range */
    ck_assert_str_eq(names[0], "x");
    oq_strings_free(names, n);
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    Onnx__NodeProto *qy = producer(b.m, producer(b.m, "y")->input[0]);
    ck_assert_float_eq_tol(scalar_f(b.m, qy->input[1]), 8.0f / 255.0f, 1e-7f);
    oq_tensor *zy = init_tensor(b.m, qy->input[2]);
    ck_assert_int_eq(zy->dtype, OQ_DTYPE_UINT8);
    ck_assert_int_eq(((uint8_t *)zy->data)[0], 0);
    oq_tensor_free(zy);
    Onnx__NodeProto *qx = first_reader(b.m, "QuantizeLinear", "x");
    oq_tensor *zx = init_tensor(b.m, qx->input[2]);
    ck_assert_int_eq(zx->dtype, OQ_DTYPE_INT8);
    ck_assert_int_eq(((int8_t *)zx->data)[0], 0); /* symmetric */
    oq_tensor_free(zx);
    /* the symmetric range is max |x| over 127.5 steps either side */
    float mx = 0;
    for (size_t i = 0; i < x->count; i++)
        mx = fmaxf(mx, fabsf(((float *)x->data)[i]));
    ck_assert_float_eq_tol(scalar_f(b.m, qx->input[1]), 2 * mx / 255.0f, 1e-6f);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
}
END_TEST

START_TEST(conv_clip_relu6) {
    /* Clip(0, 6) carries the Conv's Q: asymmetric from 0, and the Q's top
     * (scale * (qmax - zp)) must not pass 6 (ORT ClipQuantFusion). */
    mb b = mb_new(13);
    mb_input(&b, "x", 4, (int64_t[]){1, 2, 5, 5});
    mb_init(&b, "W", 4, (int64_t[]){3, 2, 3, 3}, 4.0f, 1);
    oq_error err = {0};
    oq_tensor *t;
    OK(oq_tensor_new(OQ_DTYPE_FLOAT, 0, NULL, 0, &t, &err), &err);
    OK(oq_edit_add_initializer(b.m, b.g, "lo", t, &err), &err);
    ((float *)t->data)[0] = 6.0f;
    OK(oq_edit_add_initializer(b.m, b.g, "hi", t, &err), &err);
    oq_tensor_free(t);
    mb_node(&b, "Conv", "conv", LIST("x", "W"), LIST("c"));
    mb_node(&b, "Clip", "clip", LIST("c", "lo", "hi"), LIST("r"));
    mb_node(&b, "Sigmoid", "sig", LIST("r"), LIST("y"));
    mb_output(&b, "y");
    oq_tensor *x = random_input(4, (int64_t[]){1, 2, 5, 5}, 23);
    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    dump(b.m, "conv_clip", "static");
    /* the Clip saturates: its observed maximum is 6 */
    for (size_t i = 0; i < o.n; i++)
        if (!strcmp(o.names[i], "r"))
            ck_assert_float_eq(o.hi[i], 6.0f);
    ck_assert_int_eq(count_readers(b.m, "QuantizeLinear", "c"), 0);
    Onnx__NodeProto *qr = first_reader(b.m, "QuantizeLinear", "r");
    ck_assert(qr != NULL);
    float s = scalar_f(b.m, qr->input[1]);
    oq_tensor *z = init_tensor(b.m, qr->input[2]);
    /* the default activation type, whichever it is: zero point = qmin */
    ck_assert_int_eq(z->dtype, cfg.activation_type);
    int zp = z->dtype == OQ_DTYPE_INT8 ? ((int8_t *)z->data)[0] : ((uint8_t *)z->data)[0];
    int qmin = z->dtype == OQ_DTYPE_INT8 ? -128 : 0;
    ck_assert_int_eq(zp, qmin);
    ck_assert_float_le(s * (float)(qmin + 255 - zp), 6.0f + FLT_EPSILON);
    ck_assert_float_ge(s, 6.0f / 255.0f * 0.999f);
    oq_tensor_free(z);
    ck_assert(decision(&res, "clip")->quantized);
    ck_assert(strstr(decision(&res, "clip")->reason, "conv"));
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
}
END_TEST

START_TEST(constant_subgraphs) {
    /* Reshape(W0) is read as a constant weight (the executor folds it, so it
     * is never calibrated) and the Reshape goes; Transpose(W1) cannot be
     * read here: that MatMul stays float, with the reason. */
    mb b = mb_new(13);
    mb_input(&b, "x", 2, (int64_t[]){2, 6});
    mb_init(&b, "W0", 3, (int64_t[]){1, 6, 4}, 0.5f, 1);
    mb_init_i64(&b, "shape", 2, (int64_t[]){6, 4});
    mb_init(&b, "W1", 2, (int64_t[]){4, 4}, 0.5f, 2);
    mb_node(&b, "Reshape", "rw", LIST("W0", "shape"), LIST("w0r"));
    mb_node(&b, "MatMul", "m0", LIST("x", "w0r"), LIST("h"));
    mb_node(&b, "Transpose", "tw", LIST("W1"), LIST("w1t"));
    mb_node(&b, "MatMul", "m1", LIST("h", "w1t"), LIST("y"));
    mb_output(&b, "y");
    oq_tensor *x = random_input(2, (int64_t[]){2, 6}, 29);
    oq_plan *p = plan_of(b.m);
    oq_tensor *ref = run1(p, x, NULL, NULL);
    oq_plan_free(p);
    oq_quant_config cfg = oq_quant_config_default();
    oq_rewrite_result res;
    mm_obs o;
    rewrite_static_on(b.m, &cfg, x, &res, &o);
    ck_assert(decision(&res, "m0")->quantized);
    ck_assert(!decision(&res, "m1")->quantized);
    ck_assert(strstr(decision(&res, "m1")->reason, "constants only"));
    oq_model *q = reload(b.m);
    ck_assert(node_named(q, "rw") == NULL);
    ck_assert(init_named(q, "W0") == NULL);
    ck_assert(init_named(q, "shape") == NULL);
    Onnx__NodeProto *dqw = producer(q, node_named(q, "m0")->input[1]);
    ck_assert_str_eq(dqw->op_type, "DequantizeLinear");
    ck_assert_int_eq(init_named(q, dqw->input[0])->n_dims, 2);
    ck_assert_str_eq(node_named(q, "m1")->input[1], "w1t");
    p = plan_of(q);
    oq_tensor *y = run1(p, x, NULL, NULL);
    ck_assert_float_le(max_abs_diff(y, ref), 0.05f * max_abs(ref) + 0.01f);
    oq_tensor_free(y);
    oq_plan_free(p);
    oq_tensor_free(ref);
    oq_tensor_free(x);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(q);
    oq_model_free(b.m);
}
END_TEST

START_TEST(errors) {
    oq_error err = {0};
    oq_rewrite_result res;
    ck_assert_int_eq(oq_rewrite_static(NULL, NULL, NULL, NULL, &res, &err), OQ_EINVAL);
    /* opset 8 (mnist-8 unprepared): no QuantizeLinear yet */
    oq_model *m;
    OK(oq_model_load_file(tu_shared_path(tu_models[0].model), NULL, &m, &err), &err);
    oq_quant_config cfg = oq_quant_config_default();
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_rewrite_weight_only(m, &cfg, &res, &err), OQ_EUNSUPPORTED);
    ck_assert(strstr(err.msg, "opset"));
    oq_rewrite_result_free(&res);
    oq_model_free(m);
    /* a range function failing names the tensor */
    mb b = conv_relu_model();
    mm_obs o;
    char **names;
    size_t n;
    OK(oq_rewrite_activation_tensors(b.m, &cfg, &names, &n, &err), &err);
    obs_init(&o, names, n); /* nothing observed */
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_rewrite_static(b.m, &cfg, obs_range, &o, &res, &err), OQ_ENOTFOUND);
    ck_assert(strstr(err.msg, "never seen"));
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
    /* int16 activations need opset 21 */
    b = conv_relu_model();
    cfg.activation_type = OQ_DTYPE_INT16;
    OK(oq_rewrite_activation_tensors(b.m, &cfg, &names, &n, &err), &err);
    obs_init(&o, names, n);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_rewrite_static(b.m, &cfg, obs_range, &o, &res, &err), OQ_EUNSUPPORTED);
    ck_assert(strstr(err.msg, "opset 21"));
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_model_free(b.m);
}
END_TEST

/* ---- real models ------------------------------------------------------------- */

static const tu_model_info *model_info(const char *key) {
    for (size_t i = 0; i < tu_model_count; i++)
        if (!strcmp(tu_models[i].key, key))
            return &tu_models[i];
    ck_abort_msg("no model %s", key);
    return NULL;
}

static oq_model *load_prepared(const tu_model_info *mi) {
    oq_error err = {0};
    oq_model *m;
    OK(oq_model_load_file(tu_shared_path(mi->model), NULL, &m, &err), &err);
    oq_prepare_result pr;
    OK(oq_prepare_model(m, 13, &pr, &err), &err);
    return m;
}

static int argmax_row(const float *r, int64_t n) {
    int best = 0;
    for (int64_t k = 1; k < n; k++)
        if (r[k] > r[best])
            best = (int)k;
    return best;
}

typedef struct {
    double agree;
    float max_err;
    float ref_max;
} eval_result;

/* Runs m on the first n evaluation rows and compares with the reference. */
static eval_result evaluate(oq_model *m, const tu_model_info *mi, int64_t n) {
    oq_tensor *x, *ref;
    tu_eval_set(mi, &x, NULL, &ref);
    int64_t batch = mi->batch > 1 ? 50 : 1;
    oq_plan *p = plan_of(m);
    int64_t classes = ref->dims[ref->rank - 1];
    eval_result r = {0, 0, 0};
    int agree = 0;
    for (int64_t s = 0; s < n; s += batch) {
        oq_tensor *rows = tu_rows(x, s, batch);
        oq_tensor *y = run1(p, rows, NULL, NULL);
        ck_assert_uint_eq(y->count, (size_t)(batch * classes));
        for (int64_t b = 0; b < batch; b++) {
            const float *yr = (const float *)y->data + b * classes;
            const float *rr = (const float *)ref->data + (s + b) * classes;
            agree += argmax_row(yr, classes) == argmax_row(rr, classes);
            for (int64_t k = 0; k < classes; k++) {
                r.max_err = fmaxf(r.max_err, fabsf(yr[k] - rr[k]));
                r.ref_max = fmaxf(r.ref_max, fabsf(rr[k]));
            }
        }
        oq_tensor_free(y);
        oq_tensor_free(rows);
    }
    r.agree = (double)agree / (double)n;
    oq_plan_free(p);
    oq_tensor_free(x);
    oq_tensor_free(ref);
    return r;
}

static int64_t eval_rows(void) {
    return 200; /* small models: cheap enough under the sanitizers too */
}

/* Every Conv/Gemm/MatMul reads DequantizeLinear on its data and weight
 * inputs, and when its output is quantized feeds exactly one Q. */
static void check_weighted_nodes(oq_model *q, const oq_rewrite_result *res) {
    Onnx__GraphProto *g = gp_of(q);
    for (size_t i = 0; i < g->n_node; i++) {
        Onnx__NodeProto *n = g->node[i];
        if (strcmp(n->op_type, "Conv") && strcmp(n->op_type, "Gemm") && strcmp(n->op_type, "MatMul"))
            continue;
        const oq_node_decision *d = decision(res, n->name);
        ck_assert_msg(d->quantized, "%s not quantized: %s", n->name, d->reason);
        for (size_t s = 0; s < n->n_input && s < 3; s++) {
            Onnx__NodeProto *pr = producer(q, n->input[s]);
            ck_assert_msg(pr && !strcmp(pr->op_type, "DequantizeLinear"), "%s input %zu not from DQ",
                          n->name, s);
            if (s == 2) {
                const Onnx__TensorProto *b = init_named(q, pr->input[0]);
                ck_assert(b && b->data_type == OQ_DTYPE_INT32);
            }
        }
        int readers = count_readers(q, NULL, n->output[0]);
        int qs = count_readers(q, "QuantizeLinear", n->output[0]);
        int relus = count_readers(q, "Relu", n->output[0]);
        bool graph_out = false;
        for (size_t k = 0; k < g->n_output; k++)
            graph_out |= !strcmp(g->output[k]->name, n->output[0]);
        if (qs || relus)
            ck_assert_msg(readers == 1, "%s output has %d readers", n->name, readers);
        else
            ck_assert_msg(strcmp(n->op_type, "Conv") && (graph_out || readers >= 1),
                          "%s has no quantized output", n->name);
        if (relus) {
            Onnx__NodeProto *relu = first_reader(q, "Relu", n->output[0]);
            ck_assert_int_eq(count_readers(q, "QuantizeLinear", relu->output[0]), 1);
            ck_assert_int_eq(count_readers(q, NULL, relu->output[0]), 1);
        }
    }
}

/* OQ_REWRITE_DUMP=folder keeps the rewritten real models (to inspect them
 * with ONNX Runtime's optimizer, tools/ort/ort_tool.js optimize). */
static void dump(oq_model *q, const char *key, const char *mode) {
    const char *dir = getenv("OQ_REWRITE_DUMP");
    if (!dir || !*dir)
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s_%s.onnx", dir, key, mode);
    oq_error err = {0};
    OK(oq_model_save_file(q, path, NULL, &err), &err);
}

static void static_model(const char *key, oq_dtype act_type, int64_t calib_rows, int expect_q,
                         int expect_dq) {
    const tu_model_info *mi = model_info(key);
    oq_model *m = load_prepared(mi);
    oq_tensor *cal = tu_calib_set(mi);
    oq_quant_config cfg = oq_quant_config_default();
    cfg.activation_type = act_type;
    mm_obs o;
    calibrate(m, &cfg, cal, calib_rows, mi->batch > 1 ? 25 : 1, &o);
    oq_rewrite_result res;
    oq_error err = {0};
    range_calls = 0;
    OK(oq_rewrite_static(m, &cfg, obs_range, &o, &res, &err), &err);
    ck_assert_int_eq(range_calls, (int)o.n); /* exactly the listed tensors */
    oq_model *q = reload(m);
    dump(q, key, act_type == OQ_DTYPE_UINT8 ? "static_u8" : "static");
    int nq = count_op(q, "QuantizeLinear"), ndq = count_op(q, "DequantizeLinear");
    ck_assert_int_eq(nq, res.n_quantize_linear);
    ck_assert_int_eq(ndq, res.n_dequantize_linear);
    check_weighted_nodes(q, &res);
    for (size_t i = 0; i < gp_of(q)->n_node; i++) {
        Onnx__NodeProto *n = gp_of(q)->node[i];
        if (!strcmp(n->op_type, "QuantizeLinear")) {
            const Onnx__TensorProto *zp = init_named(q, n->input[2]), *sc = init_named(q, n->input[1]);
            ck_assert(zp && sc && zp->n_dims == 0 && sc->n_dims == 0);
            ck_assert_int_eq(zp->data_type, act_type);
            ck_assert_int_eq(sc->data_type, OQ_DTYPE_FLOAT);
        }
    }
    eval_result r = evaluate(q, mi, eval_rows());
    fprintf(stderr, "%s static %s: top-1 agreement %.4f, max |logit error| %.4f (max |logit| %.2f), %d Q %d DQ\n",
            key, oq_dtype_name(act_type), r.agree, (double)r.max_err, (double)r.ref_max, nq, ndq);
    ck_assert_msg(r.agree >= 0.98, "%s: agreement %.4f", key, r.agree);
    ck_assert_msg(nq == expect_q && ndq == expect_dq, "%s: %d Q, %d DQ", key, nq, ndq);
    oq_rewrite_result_free(&res);
    obs_free(&o);
    oq_tensor_free(cal);
    oq_model_free(q);
    oq_model_free(m);
}

START_TEST(static_fmnist_cnn) {
    static_model("fmnist_cnn", oq_quant_config_default().activation_type, 100, 8, 18);
}
END_TEST

START_TEST(static_fmnist_vit) {
    /* int8 activations (the zero points' type is checked) */
    static_model("fmnist_vit", OQ_DTYPE_INT8, 100, 48, 87);
}
END_TEST

START_TEST(static_fmnist_vit_uint8) {
    /* uint8 activations: the same structure, zero points of the other type */
    static_model("fmnist_vit", OQ_DTYPE_UINT8, 100, 48, 87);
}
END_TEST

START_TEST(static_mnist8) {
    static_model("mnist-8", oq_quant_config_default().activation_type, 100, 8, 14);
}
END_TEST

static void other_mode(const char *key, bool dynamic, float max_rel_err) {
    const tu_model_info *mi = model_info(key);
    oq_model *m = load_prepared(mi);
    oq_quant_config cfg = oq_quant_config_default();
    cfg.mode = dynamic ? OQ_QMODE_DYNAMIC : OQ_QMODE_WEIGHT_ONLY;
    oq_rewrite_result res;
    oq_error err = {0};
    if (dynamic)
        OK(oq_rewrite_dynamic(m, &cfg, &res, &err), &err);
    else
        OK(oq_rewrite_weight_only(m, &cfg, &res, &err), &err);
    oq_model *q = reload(m);
    dump(q, key, dynamic ? "dynamic" : "weight_only");
    ck_assert_int_eq(count_op(q, "QuantizeLinear"), 0);
    Onnx__GraphProto *g = gp_of(q);
    for (size_t i = 0; i < g->n_node; i++) {
        Onnx__NodeProto *n = g->node[i];
        bool weighted = !strcmp(n->op_type, "Conv") || !strcmp(n->op_type, "Gemm") ||
                        !strcmp(n->op_type, "MatMul");
        if (!weighted)
            continue;
        const oq_node_decision *d = decision(&res, n->name);
        /* dynamic: every weighted node left is one that stayed float */
        if (dynamic)
            ck_assert_msg(!d->quantized, "%s still there", n->name);
        else if (d->quantized)
            ck_assert_str_eq(producer(q, n->input[1])->op_type, "DequantizeLinear");
        else
            ck_assert_msg(!strcmp(n->op_type, "MatMul") && !init_named(q, n->input[1]),
                          "%s: %s", n->name, d->reason);
    }
    if (dynamic) {
        ck_assert_int_gt(count_op(q, "DynamicQuantizeLinear"), 0);
        ck_assert_int_eq(count_op(q, "DynamicQuantizeLinear"),
                         count_op(q, "MatMulInteger") + count_op(q, "ConvInteger"));
        ck_assert_int_eq(count_op(q, "Cast"), count_op(q, "MatMulInteger") + count_op(q, "ConvInteger"));
    } else {
        ck_assert_int_eq(count_op(q, "DequantizeLinear"), res.n_dequantize_linear);
    }
    eval_result r = evaluate(q, mi, eval_rows());
    fprintf(stderr, "%s %s: top-1 agreement %.4f, max |logit error| %.4f (max |logit| %.2f), %d nodes quantized\n",
            key, dynamic ? "dynamic" : "weight-only", r.agree, (double)r.max_err, (double)r.ref_max,
            res.n_quantized);
    ck_assert_msg(r.agree >= 0.98, "%s: agreement %.4f", key, r.agree);
    ck_assert_msg(r.max_err <= max_rel_err * r.ref_max, "%s: max error %g", key, (double)r.max_err);
    ck_assert_int_gt(res.n_quantized, 0);
    oq_rewrite_result_free(&res);
    oq_model_free(q);
    oq_model_free(m);
}

START_TEST(dynamic_fmnist_cnn) {
    other_mode("fmnist_cnn", true, 0.10f);
}
END_TEST

START_TEST(dynamic_fmnist_vit) {
    other_mode("fmnist_vit", true, 0.10f);
}
END_TEST

START_TEST(weight_only_fmnist_cnn) {
    other_mode("fmnist_cnn", false, 0.05f);
}
END_TEST

START_TEST(weight_only_fmnist_vit) {
    other_mode("fmnist_vit", false, 0.05f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("rewrite");
    TCase *tc = tcase_create("rules");
    tcase_add_test(tc, conv_relu_qdq_on_relu_output);
    tcase_add_test(tc, symmetric_relu_keeps_conv_q);
    tcase_add_test(tc, reshape_reuses_params);
    tcase_add_test(tc, dedicated_pairs);
    tcase_add_test(tc, exclusions_with_reasons);
    tcase_add_test(tc, shared_weight_once);
    tcase_add_test(tc, gemm_bias_and_float_output);
    tcase_add_test(tc, matmul_bias_add);
    tcase_add_test(tc, isolated_elementwise_left_float);
    tcase_add_test(tc, overrides_apply);
    tcase_add_test(tc, conv_clip_relu6);
    tcase_add_test(tc, constant_subgraphs);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    TCase *rm = tcase_create("models");
    tcase_set_timeout(rm, 600);
    tcase_add_test(rm, static_fmnist_cnn);
    tcase_add_test(rm, static_fmnist_vit);
    tcase_add_test(rm, static_fmnist_vit_uint8);
    tcase_add_test(rm, static_mnist8);
    tcase_add_test(rm, dynamic_fmnist_cnn);
    tcase_add_test(rm, dynamic_fmnist_vit);
    tcase_add_test(rm, weight_only_fmnist_cnn);
    tcase_add_test(rm, weight_only_fmnist_vit);
    suite_add_tcase(s, rm);
    return tu_run_suite(s);
}
