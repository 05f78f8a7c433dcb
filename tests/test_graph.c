/* test_graph.c: the string map; the graph view over real models, ONNX's
 * node tests and hostile graphs; edits that must survive save + reload +
 * a rebuilt view, including under a tight memory budget. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "edit.h"
#include "graph.h"
#include "model.h"
#include "strmap.h"
#include "tensor.h"
#include "tensorproto.h"
#include "testutil.h"

#define LIST(...)                                                                                  \
    (const char *const[]){__VA_ARGS__},                                                            \
        sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define NONE NULL, 0

/* ---- helpers ---------------------------------------------------------- */

/* Check's ck_assert writes a mark point per call; invariant loops over big
 * graphs use these, which only reach Check on failure. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);                   \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

static oq_model *load(const char *rel) {
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(tu_shared_path(rel), NULL, &m, &err) == OQ_OK, "%s: %s", rel,
                  err.msg);
    return m;
}

static oq_graph *view(oq_model *m) {
    oq_error err = {0};
    oq_graph *g;
    ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "%s", err.msg);
    return g;
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

static bool int_in(const int *arr, int n, int x) {
    for (int i = 0; i < n; i++)
        if (arr[i] == x)
            return true;
    return false;
}

/* Checks every invariant of a view and its subgraphs; returns the number of
 * graphs checked. */
static int check_view(const oq_graph *g) {
    int nn = oq_graph_node_count(g), nv = oq_graph_value_count(g);
    CHECK(nn == (int)oq_graph_proto(g)->n_node);

    /* Topological order: a permutation, producers first. */
    int nt;
    const int *topo = oq_graph_topo_order(g, &nt);
    CHECK(nt == nn);
    int *pos = malloc(((size_t)nn + 1) * sizeof(int));
    for (int i = 0; i < nn; i++)
        pos[i] = -1;
    for (int i = 0; i < nt; i++) {
        CHECK(topo[i] >= 0 && topo[i] < nn);
        CHECK(pos[topo[i]] == -1);
        pos[topo[i]] = i;
    }
    for (int n = 0; n < nn; n++) {
        for (int half = 0; half < 2; half++) {
            int cnt;
            const int *vals = half ? oq_graph_node_implicit_inputs(g, n, &cnt)
                                   : oq_graph_node_inputs(g, n, &cnt);
            if (!half)
                CHECK(cnt == (int)oq_graph_node(g, n)->n_input);
            for (int i = 0; i < cnt; i++) {
                if (vals[i] < 0) {
                    CHECK(!half && oq_graph_node(g, n)->input[i][0] == '\0');
                    continue;
                }
                const oq_value *v = oq_graph_value(g, vals[i]);
                CHECK(v);
                if (!half)
                    CHECK(strcmp(v->name, oq_graph_node(g, n)->input[i]) == 0);
                CHECK_MSG(int_in(v->consumers, v->n_consumers, n),
                          "node %d not a consumer of '%s'", n, v->name);
                if (v->producer >= 0)
                    CHECK_MSG(pos[v->producer] < pos[n], "'%s' used before produced", v->name);
            }
        }
    }
    /* Values: producers, consumers, uses, outer links. */
    for (int vi = 0; vi < nv; vi++) {
        const oq_value *v = oq_graph_value(g, vi);
        CHECK(oq_graph_find_value(g, v->name) == vi);
        if (v->producer >= 0) {
            CHECK(v->kind == OQ_VALUE_NODE || v->kind == OQ_VALUE_CONSTANT);
            int cnt;
            const int *outs = oq_graph_node_outputs(g, v->producer, &cnt);
            CHECK(v->producer_slot >= 0 && v->producer_slot < cnt);
            CHECK(outs[v->producer_slot] == vi);
        } else {
            CHECK(v->kind != OQ_VALUE_NODE && v->kind != OQ_VALUE_CONSTANT);
        }
        int uses = 0;
        for (int c = 0; c < v->n_consumers; c++) {
            if (c)
                CHECK(v->consumers[c - 1] < v->consumers[c]);
            int cnt, cnt2;
            const int *ins = oq_graph_node_inputs(g, v->consumers[c], &cnt);
            const int *imp = oq_graph_node_implicit_inputs(g, v->consumers[c], &cnt2);
            CHECK(int_in(ins, cnt, vi) || int_in(imp, cnt2, vi));
            for (int i = 0; i < cnt; i++)
                uses += ins[i] == vi;
        }
        CHECK(uses == v->n_uses);
        if (v->kind == OQ_VALUE_OUTER) {
            CHECK(v->outer_graph == oq_graph_parent(g));
            const oq_value *ov = oq_graph_value(v->outer_graph, v->outer_value);
            CHECK(ov);
            CHECK(strcmp(ov->name, v->name) == 0);
            CHECK(oq_value_is_constant(v) == oq_value_is_constant(ov));
        }
        if (v->kind == OQ_VALUE_INITIALIZER)
            CHECK(v->tensor || v->sparse);
    }
    int nr, no;
    const int *real = oq_graph_real_inputs(g, &nr);
    for (int i = 0; i < nr; i++)
        CHECK(oq_graph_value(g, real[i])->kind == OQ_VALUE_INPUT);
    oq_graph_outputs(g, &no);
    CHECK(no == (int)oq_graph_proto(g)->n_output);
    free(pos);

    int graphs = 1;
    for (int s = 0; s < oq_graph_subgraph_count(g); s++) {
        const oq_subgraph *sg = oq_graph_subgraph(g, s);
        CHECK(sg->node >= 0 && sg->node < nn);
        CHECK(oq_graph_parent(sg->graph) == g);
        CHECK(oq_graph_owner_node(sg->graph) == sg->node);
        CHECK(oq_graph_depth(sg->graph) == oq_graph_depth(g) + 1);
        graphs += check_view(sg->graph);
    }
    return graphs;
}

static int count_op(const oq_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < oq_graph_node_count(g); i++)
        n += oq_node_is_onnx_op(oq_graph_node(g, i), op);
    return n;
}

static int find_node(const oq_graph *g, const char *name) {
    for (int i = 0; i < oq_graph_node_count(g); i++) {
        const char *nm = oq_graph_node(g, i)->name;
        if (nm && strcmp(nm, name) == 0)
            return i;
    }
    return -1;
}

/* A model built in memory: opset 13, float input x[2], bool input cond. */
static oq_model *new_model(void) {
    oq_error err = {0};
    oq_model *m;
    ck_assert(oq_model_new(&m, &err) == OQ_OK);
    ck_assert(oq_edit_set_opset(m, "", 13, &err) == OQ_OK);
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    ck_assert(oq_edit_add_graph_input(m, g, "x", 1, 1, (int64_t[]){2}, &err) == OQ_OK);
    ck_assert(oq_edit_add_graph_input(m, g, "cond", 9, 0, NULL, &err) == OQ_OK);
    return m;
}

static void add_node(oq_model *m, Onnx__GraphProto *g, const char *op, const char *name,
                     const char *const *in, size_t nin, const char *const *out, size_t nout) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, op, NULL, name, in, nin, out, nout,
                                      NULL, &err) == OQ_OK,
                  "%s", err.msg);
}

static void add_output(oq_model *m, Onnx__GraphProto *g, const char *name) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_add_graph_output(m, g, name, 1, -1, NULL, &err) == OQ_OK, "%s",
                  err.msg);
}

/* The view of m must fail with code and a message containing each needle. */
static void expect_view_error(oq_model *m, oq_status code, const char *n1, const char *n2) {
    oq_error err = {0};
    oq_graph *g = (oq_graph *)1;
    oq_status st = oq_graph_new(m, &g, &err);
    ck_assert_msg(st == code, "got %s (%s)", oq_status_name(st), err.msg);
    ck_assert(g == NULL);
    ck_assert_msg(!n1 || strstr(err.msg, n1), "'%s' not in: %s", n1, err.msg);
    ck_assert_msg(!n2 || strstr(err.msg, n2), "'%s' not in: %s", n2, err.msg);
}

static oq_tensor *float_tensor(int rank, const int64_t *dims, float fill) {
    oq_error err = {0};
    oq_tensor *t;
    ck_assert(oq_tensor_new(OQ_DTYPE_FLOAT, rank, dims, 0, &t, &err) == OQ_OK);
    for (size_t i = 0; i < t->count; i++)
        ((float *)t->data)[i] = fill + (float)i;
    return t;
}

/* ---- strmap ----------------------------------------------------------- */

START_TEST(strmap_basic) {
    oq_error err = {0};
    oq_strmap *m;
    ck_assert(oq_strmap_new(OQ_STRMAP_BORROW, 0, &m, &err) == OQ_OK);
    int v = 7;
    ck_assert(!oq_strmap_get(m, "a", &v));
    ck_assert_int_eq(v, 7);
    ck_assert(oq_strmap_put(m, "a", 1, &err) == OQ_OK);
    ck_assert(oq_strmap_put(m, "", 2, &err) == OQ_OK); /* the empty string is a key too */
    ck_assert(oq_strmap_get(m, "a", &v) && v == 1);
    ck_assert(oq_strmap_get(m, "", &v) && v == 2);
    ck_assert(oq_strmap_put(m, "a", 3, &err) == OQ_OK);
    ck_assert(oq_strmap_get(m, "a", &v) && v == 3);
    ck_assert_uint_eq(oq_strmap_count(m), 2);
    bool inserted = true;
    ck_assert(oq_strmap_add(m, "a", 9, &inserted, &v, &err) == OQ_OK);
    ck_assert(!inserted && v == 3);
    ck_assert(oq_strmap_add(m, "b", 9, &inserted, &v, &err) == OQ_OK);
    ck_assert(inserted && v == 9);
    const char *key = "b";
    ck_assert_ptr_eq(oq_strmap_key(m, "b"), key); /* borrowed: the caller's pointer */
    ck_assert(oq_strmap_put(m, NULL, 1, &err) == OQ_EINVAL);
    ck_assert(!oq_strmap_get(NULL, "a", NULL));
    oq_strmap_free(m);
    oq_strmap_free(NULL);
}
END_TEST

START_TEST(strmap_grow_remove_iterate) {
    oq_error err = {0};
    oq_strmap *m;
    ck_assert(oq_strmap_new(OQ_STRMAP_COPY, 0, &m, &err) == OQ_OK);
    enum { N = 20000 };
    char buf[32];
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "k%d", i);
        ck_assert(oq_strmap_put(m, buf, i, &err) == OQ_OK); /* copied: buf is reused */
    }
    ck_assert_uint_eq(oq_strmap_count(m), N);
    snprintf(buf, sizeof buf, "k5");
    ck_assert_ptr_ne(oq_strmap_key(m, buf), buf);
    /* Removing every third key must keep the others reachable (backward shift). */
    for (int i = 0; i < N; i += 3) {
        snprintf(buf, sizeof buf, "k%d", i);
        ck_assert(oq_strmap_remove(m, buf));
        ck_assert(!oq_strmap_remove(m, buf));
    }
    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "k%d", i);
        int v = -1;
        bool present = oq_strmap_get(m, buf, &v);
        ck_assert_msg(present == (i % 3 != 0), "key %s", buf);
        if (present)
            ck_assert_int_eq(v, i);
    }
    size_t it = 0, seen = 0;
    long long sum = 0;
    const char *k;
    int v;
    while (oq_strmap_next(m, &it, &k, &v)) {
        ck_assert_int_eq(atoi(k + 1), v);
        seen++;
        sum += v;
    }
    ck_assert_uint_eq(seen, oq_strmap_count(m));
    long long want = 0;
    for (int i = 0; i < N; i++)
        if (i % 3)
            want += i;
    ck_assert(sum == want);
    /* Re-adding after removal works. */
    ck_assert(oq_strmap_put(m, "k0", 42, &err) == OQ_OK);
    ck_assert(oq_strmap_get(m, "k0", &v) && v == 42);
    oq_strmap_free(m);
}
END_TEST

/* ---- real models ------------------------------------------------------ */

START_TEST(mnist8_ir3_view) {
    oq_model *m = load("models/mnist-8/model.onnx");
    oq_graph *g = view(m);
    check_view(g);
    ck_assert_int_eq(oq_graph_node_count(g), 12);
    ck_assert_int_eq(oq_graph_opset(g, ""), 8);
    ck_assert_int_eq(oq_graph_opset(g, "ai.onnx"), 8);
    ck_assert_int_eq(oq_graph_opset(g, "com.microsoft"), 0);
    /* IR 3: all 8 initializers are also graph inputs; only Input3 is real. */
    Onnx__GraphProto *gp = oq_graph_proto(g);
    ck_assert_uint_eq(gp->n_initializer, 8);
    ck_assert_uint_eq(gp->n_input, 9);
    int nr;
    const int *real = oq_graph_real_inputs(g, &nr);
    ck_assert_int_eq(nr, 1);
    ck_assert_str_eq(oq_graph_value(g, real[0])->name, "Input3");
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const oq_value *v = oq_graph_value_by_name(g, gp->initializer[i]->name);
        ck_assert(v && v->kind == OQ_VALUE_INITIALIZER && oq_value_is_constant(v));
        ck_assert(v->graph_input >= 0 && v->initializer == (int)i);
        ck_assert_ptr_eq(v->tensor, gp->initializer[i]);
    }
    /* Topological order = file order here, and covers all 12 nodes. */
    int nt;
    const int *topo = oq_graph_topo_order(g, &nt);
    ck_assert_int_eq(nt, 12);
    for (int i = 0; i < nt; i++)
        ck_assert_int_eq(topo[i], i);
    /* Producers and consumers along the first block. */
    const oq_value *conv = oq_graph_value_by_name(g, "Convolution28_Output_0");
    ck_assert(conv && conv->kind == OQ_VALUE_NODE);
    ck_assert_str_eq(oq_graph_node(g, conv->producer)->name, "Convolution28");
    ck_assert_int_eq(conv->n_consumers, 1);
    ck_assert_str_eq(oq_graph_node(g, conv->consumers[0])->name, "Plus30");
    const oq_value *out = oq_graph_value_by_name(g, "Plus214_Output_0");
    ck_assert(out && out->graph_output == 0 && out->n_consumers == 0);
    int no;
    const int *outs = oq_graph_outputs(g, &no);
    ck_assert(no == 1 && oq_graph_value(g, outs[0]) == out);
    /* Shapes: Input3 float [1,1,28,28]; a weight's shape from its tensor. */
    const oq_value *in = oq_graph_value_by_name(g, "Input3");
    ck_assert_int_eq(oq_value_elem_type(in), 1);
    ck_assert_int_eq(oq_value_rank(in), 4);
    int64_t want[4] = {1, 1, 28, 28};
    for (int i = 0; i < 4; i++) {
        oq_dim d = oq_value_dim(in, i);
        ck_assert(d.kind == OQ_DIM_VALUE && d.value == want[i]);
    }
    ck_assert(oq_value_dim(in, 4).kind == OQ_DIM_UNKNOWN);
    ck_assert(oq_value_dim(in, -1).kind == OQ_DIM_UNKNOWN);
    const oq_value *w = oq_graph_value_by_name(g, "Parameter5");
    ck_assert_int_eq(oq_value_rank(w), 4);
    ck_assert(oq_value_dim(w, 0).kind == OQ_DIM_VALUE && oq_value_dim(w, 0).value == 8);
    ck_assert_int_eq(oq_graph_find_value(g, "no such value"), -1);
    ck_assert_ptr_null(oq_graph_value(g, -1));
    ck_assert_ptr_null(oq_graph_node(g, 12));
    int cnt;
    ck_assert_ptr_null(oq_graph_node_inputs(g, 99, &cnt));
    ck_assert_int_eq(cnt, 0);
    char lbl[64];
    ck_assert_str_eq(oq_graph_node_label(g, 1, lbl, sizeof lbl), "node 'Convolution28' (Conv)");
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

START_TEST(mnist8_attributes) {
    oq_model *m = load("models/mnist-8/model.onnx");
    oq_graph *g = view(m);
    const Onnx__NodeProto *conv = oq_graph_node(g, find_node(g, "Convolution28"));
    oq_error err = {0};
    const int64_t *ks;
    size_t n;
    ck_assert(oq_node_attr_ints(conv, "kernel_shape", &ks, &n, &err) == OQ_OK);
    ck_assert(n == 2 && ks[0] == 5 && ks[1] == 5);
    ck_assert(oq_node_attr_ints(conv, "absent", &ks, &n, &err) == OQ_OK);
    ck_assert(n == 0 && ks == NULL);
    char pad[32];
    ck_assert(oq_node_attr_string(conv, "auto_pad", "NOTSET", pad, sizeof pad, &err) == OQ_OK);
    ck_assert_str_eq(pad, "SAME_UPPER");
    ck_assert(oq_node_attr_string(conv, "absent", "NOTSET", pad, sizeof pad, &err) == OQ_OK);
    ck_assert_str_eq(pad, "NOTSET");
    ck_assert(oq_node_attr_string(conv, "auto_pad", NULL, pad, 4, &err) == OQ_ELIMIT);
    int64_t group;
    ck_assert(oq_node_attr_int(conv, "group", 1, &group, &err) == OQ_OK);
    ck_assert(group == 1);
    /* A wrong type is an error naming the node and attribute, not a default. */
    oq_error e2 = {0};
    int64_t x;
    ck_assert(oq_node_attr_int(conv, "kernel_shape", 3, &x, &e2) == OQ_EMODEL);
    ck_assert_msg(strstr(e2.msg, "kernel_shape") && strstr(e2.msg, "Convolution28") &&
                      strstr(e2.msg, "INTS"),
                  "%s", e2.msg);
    oq_error e3 = {0};
    float f;
    ck_assert(oq_node_attr_float(conv, "auto_pad", 0.f, &f, &e3) == OQ_EMODEL);
    const Onnx__TensorProto *t;
    oq_error e4 = {0};
    ck_assert(oq_node_attr_tensor(conv, "strides", &t, &e4) == OQ_EMODEL);
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

START_TEST(ppocr_constant_weights) {
    oq_model *m = load("models/ppocr_cls/model.onnx");
    oq_graph *g = view(m);
    check_view(g);
    ck_assert_uint_eq(oq_graph_proto(g)->n_initializer, 0);
    ck_assert_int_eq(count_op(g, "Constant"), 250);
    ck_assert_int_eq(oq_graph_opset(g, ""), 9);
    int convs = 0;
    for (int n = 0; n < oq_graph_node_count(g); n++) {
        const Onnx__NodeProto *node = oq_graph_node(g, n);
        if (!oq_node_is_onnx_op(node, "Conv"))
            continue;
        convs++;
        int cnt;
        const int *ins = oq_graph_node_inputs(g, n, &cnt);
        ck_assert(cnt >= 2);
        for (int i = 1; i < cnt; i++) { /* weight and optional bias */
            const oq_value *w = oq_graph_value(g, ins[i]);
            ck_assert_msg(w->kind == OQ_VALUE_CONSTANT && oq_value_is_constant(w), "%s",
                          w->name);
            ck_assert_msg(w->tensor, "Conv weight '%s' has no tensor", w->name);
            ck_assert(oq_node_is_onnx_op(oq_graph_node(g, w->producer), "Constant"));
            ck_assert_int_eq(oq_value_elem_type(w), 1);
            ck_assert_int_eq(oq_value_rank(w), i == 1 ? 4 : 1);
            /* Decodable as a tensor, like an initializer would be. */
            oq_tensor *tt;
            oq_error err = {0};
            ck_assert_msg(oq_tensor_from_proto(w->tensor, NULL, 0, &tt, &err) == OQ_OK, "%s",
                          err.msg);
            ck_assert_int_eq(tt->rank, i == 1 ? 4 : 1);
            oq_tensor_free(tt);
        }
    }
    ck_assert_int_eq(convs, 53);
    /* x: float [N,3,H,W] with symbolic dims named by paddle2onnx. */
    int nr;
    const int *real = oq_graph_real_inputs(g, &nr);
    ck_assert_int_eq(nr, 1);
    const oq_value *x = oq_graph_value(g, real[0]);
    ck_assert_str_eq(x->name, "x");
    ck_assert_int_eq(oq_value_rank(x), 4);
    oq_dim d0 = oq_value_dim(x, 0), d1 = oq_value_dim(x, 1);
    ck_assert(d0.kind == OQ_DIM_PARAM && strncmp(d0.param, "p2o.DynamicDimension", 20) == 0);
    ck_assert(d1.kind == OQ_DIM_VALUE && d1.value == 3);
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

START_TEST(fmnist_vit_view) {
    oq_model *m = load("models/fmnist/fmnist_vit.onnx");
    oq_graph *g = view(m);
    check_view(g);
    ck_assert_int_eq(count_op(g, "MatMul"), 12);
    ck_assert_int_eq(count_op(g, "LayerNormalization"), 5);
    ck_assert_int_eq(oq_graph_opset(g, ""), 17);
    int nr;
    const int *real = oq_graph_real_inputs(g, &nr);
    ck_assert_int_eq(nr, 1);
    oq_dim d0 = oq_value_dim(oq_graph_value(g, real[0]), 0);
    ck_assert(d0.kind == OQ_DIM_PARAM);
    /* Every MatMul has two resolved operands. */
    for (int n = 0; n < oq_graph_node_count(g); n++) {
        if (!oq_node_is_onnx_op(oq_graph_node(g, n), "MatMul"))
            continue;
        int cnt;
        const int *ins = oq_graph_node_inputs(g, n, &cnt);
        ck_assert(cnt == 2 && ins[0] >= 0 && ins[1] >= 0);
    }
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

START_TEST(other_real_models) {
    static const char *rels[] = {"models/cnn_mnist_pytorch/model.onnx",
                                 "models/fmnist/fmnist_cnn.onnx",
                                 "models/fmnist/fmnist_cnn_bn.onnx",
                                 "models/fmnist/fmnist_vit_op14.onnx"};
    for (size_t i = 0; i < sizeof rels / sizeof rels[0]; i++) {
        oq_model *m = load(rels[i]);
        oq_graph *g = view(m);
        check_view(g);
        oq_graph_free(g);
        oq_model_free(m);
    }
}
END_TEST

/* Every node-test model of one ONNX release builds a valid view. */
static void node_tests(const char *release, size_t min_count) {
    char pattern[4096];
    snprintf(pattern, sizeof pattern, "%s/models/onnx-node-tests/%s/*/model.onnx",
             tu_shared_dir(), release);
    glob_t gl;
    ck_assert_int_eq(glob(pattern, 0, NULL, &gl), 0);
    size_t ok = 0, with_subgraphs = 0;
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        oq_error err = {0};
        oq_model *m;
        ck_assert_msg(oq_model_load_file(gl.gl_pathv[i], NULL, &m, &err) == OQ_OK, "%s: %s",
                      gl.gl_pathv[i], err.msg);
        oq_graph *g;
        ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "%s: %s", gl.gl_pathv[i], err.msg);
        if (check_view(g) > 1)
            with_subgraphs++;
        ok++;
        oq_graph_free(g);
        oq_model_free(m);
    }
    ck_assert_msg(gl.gl_pathc >= min_count, "only %zu node tests in %s", gl.gl_pathc, release);
    ck_assert_uint_eq(ok, gl.gl_pathc);
    ck_assert_uint_ge(with_subgraphs, 1); /* test_if */
    printf("graph: %s: %zu/%zu node-test models viewed, %zu with subgraphs\n", release, ok,
           gl.gl_pathc, with_subgraphs);
    globfree(&gl);
}

START_TEST(node_tests_1_12) {
    node_tests("onnx-1.12.0", 524);
}
END_TEST

START_TEST(node_tests_1_21) {
    node_tests("onnx-1.21.0", 806);
}
END_TEST

/* ---- hostile graphs --------------------------------------------------- */

START_TEST(cycle_is_named) {
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "pre", LIST("x"), LIST("p"));
    add_node(m, g, "Add", "A", LIST("p", "b"), LIST("a"));
    add_node(m, g, "Relu", "B", LIST("a"), LIST("b"));
    add_output(m, g, "b");
    expect_view_error(m, OQ_EMODEL, "cycle", "node 'A' (Add)");
    expect_view_error(m, OQ_EMODEL, "node 'B' (Relu)", "'a'");
    oq_model_free(m);

    /* A node reading its own output. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Add", "self", LIST("x", "s"), LIST("s"));
    add_output(m, g, "s");
    expect_view_error(m, OQ_EMODEL, "cycle", "node 'self' (Add) reads 's' from node 'self'");
    oq_model_free(m);

    /* A cycle downstream of an acyclic prefix, among unnamed nodes. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", NULL, LIST("x"), LIST("r"));
    add_node(m, g, "Add", NULL, LIST("r", "d"), LIST("c"));
    add_node(m, g, "Neg", NULL, LIST("c"), LIST("d"));
    add_output(m, g, "d");
    expect_view_error(m, OQ_EMODEL, "cycle", "node #1 (Add)");
    oq_model_free(m);
}
END_TEST

START_TEST(dangling_input_is_named) {
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "r1", LIST("x"), LIST("y"));
    add_node(m, g, "Add", "add1", LIST("y", "ghost"), LIST("z"));
    add_output(m, g, "z");
    expect_view_error(m, OQ_EMODEL, "'ghost'", "node 'add1' (Add)");
    oq_model_free(m);

    /* An empty name is an omitted optional input, not dangling. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Clip", "clip", LIST("x", "", NULL), LIST("y", ""));
    add_output(m, g, "y");
    oq_graph *gv = view(m);
    check_view(gv);
    int cnt;
    const int *ins = oq_graph_node_inputs(gv, 0, &cnt);
    ck_assert(cnt == 3 && ins[1] == -1 && ins[2] == -1);
    const int *outs = oq_graph_node_outputs(gv, 0, &cnt);
    ck_assert(cnt == 2 && outs[0] >= 0 && outs[1] == -1);
    oq_graph_free(gv);
    oq_model_free(m);

    /* A graph output nothing produces. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "r", LIST("x"), LIST("y"));
    add_output(m, g, "nowhere");
    expect_view_error(m, OQ_EMODEL, "graph output 'nowhere'", NULL);
    oq_model_free(m);
}
END_TEST

START_TEST(duplicate_producers) {
    /* Two nodes. */
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "first", LIST("x"), LIST("y"));
    add_node(m, g, "Neg", "second", LIST("x"), LIST("y"));
    add_output(m, g, "y");
    expect_view_error(m, OQ_EMODEL, "'y' is produced twice", "node 'second' (Neg)");
    expect_view_error(m, OQ_EMODEL, "node 'first' (Relu)", NULL);
    oq_model_free(m);

    /* A node output shadowing a graph input. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "r", LIST("cond"), LIST("x"));
    add_output(m, g, "x");
    expect_view_error(m, OQ_EMODEL, "'x' is produced twice", "a graph input");
    oq_model_free(m);

    /* Two initializers of one name (built directly: the edit API refuses). */
    m = new_model();
    g = oq_model_proto(m)->graph;
    oq_error err = {0};
    int64_t d[1] = {2};
    oq_tensor *t = float_tensor(1, d, 0.f);
    Onnx__TensorProto *tp1, *tp2;
    ck_assert(oq_tensor_to_proto(t, "w", oq_model_allocator(m), &tp1, &err) == OQ_OK);
    ck_assert(oq_tensor_to_proto(t, "w", oq_model_allocator(m), &tp2, &err) == OQ_OK);
    ck_assert(oq_edit_add_initializer_proto_new(m, g, tp1, &err) == OQ_OK);
    ck_assert(oq_edit_add_initializer_proto_new(m, g, tp2, &err) == OQ_EINVAL); /* tp2 freed */
    ck_assert(oq_tensor_to_proto(t, "w", oq_model_allocator(m), &tp2, &err) == OQ_OK);
    /* sneak it in by hand */
    Onnx__TensorProto **arr = oq_pb_calloc(oq_model_allocator(m), 2, sizeof *arr);
    arr[0] = g->initializer[0];
    arr[1] = tp2;
    oq_pb_free(oq_model_allocator(m), g->initializer);
    g->initializer = arr;
    g->n_initializer = 2;
    add_node(m, g, "Add", "a", LIST("x", "w"), LIST("y"));
    add_output(m, g, "y");
    expect_view_error(m, OQ_EMODEL, "initializer 'w' is defined twice", NULL);
    oq_tensor_free(t);
    oq_model_free(m);

    /* A graph input listed twice; an opset domain imported twice. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    g->input[1]->name[0] = 'x'; /* "cond" becomes "x" */
    g->input[1]->name[1] = '\0';
    add_output(m, g, "x");
    expect_view_error(m, OQ_EMODEL, "graph input 'x' is listed twice", NULL);
    oq_model_free(m);

    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "r", LIST("x"), LIST("y"));
    add_output(m, g, "y");
    ck_assert(oq_edit_set_opset(m, "com.example", 1, &err) == OQ_OK);
    {
        Onnx__OperatorSetIdProto *o = oq_model_proto(m)->opset_import[1];
        oq_pb_free(oq_model_allocator(m), o->domain);
        o->domain = oq_pb_strdup(oq_model_allocator(m), "ai.onnx");
    }
    expect_view_error(m, OQ_EMODEL, "imported twice", NULL);
    oq_model_free(m);
}
END_TEST

/* Ties between ready nodes go to file order; a sorted graph keeps its order. */
START_TEST(topo_order_is_stable) {
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "C", LIST("b"), LIST("c"));
    add_node(m, g, "Relu", "A", LIST("x"), LIST("a"));
    add_node(m, g, "Relu", "B", LIST("a"), LIST("b"));
    add_node(m, g, "Relu", "D", LIST("x"), LIST("d"));
    add_node(m, g, "Add", "E", LIST("d", "d"), LIST("e")); /* reads d twice */
    add_output(m, g, "c");
    add_output(m, g, "e");
    oq_graph *gv = view(m);
    check_view(gv);
    int nt;
    const int *topo = oq_graph_topo_order(gv, &nt);
    int want[5] = {1, 2, 0, 3, 4};
    ck_assert_int_eq(nt, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(topo[i], want[i]);
    /* Two input slots, one consumer entry. */
    const oq_value *d = oq_graph_value_by_name(gv, "d");
    ck_assert_int_eq(d->n_consumers, 1);
    ck_assert_int_eq(d->n_uses, 2);
    const oq_value *x = oq_graph_value_by_name(gv, "x");
    ck_assert_int_eq(x->n_consumers, 2);
    ck_assert(x->consumers[0] == 1 && x->consumers[1] == 3);

    /* Writing the order back makes the file sorted; the view then keeps it. */
    oq_error err = {0};
    ck_assert(oq_edit_sort_nodes(m, gv, &err) == OQ_OK);
    const char *names[5] = {"A", "B", "C", "D", "E"};
    for (int i = 0; i < 5; i++)
        ck_assert_str_eq(g->node[i]->name, names[i]);
    ck_assert(oq_graph_refresh(gv, &err) == OQ_OK);
    check_view(gv);
    topo = oq_graph_topo_order(gv, &nt);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(topo[i], i);
    /* A stale view is refused. */
    add_node(m, g, "Relu", "F", LIST("e"), LIST("f"));
    ck_assert(oq_edit_sort_nodes(m, gv, &err) == OQ_EINVAL);
    oq_graph_free(gv);
    oq_model_free(m);
}
END_TEST

/* 100k nodes in reverse order: sorted in n log n, then written back; a
 * 100k-node cycle is still reported; an earlier error in err is kept. */
START_TEST(long_chain_reverse_order) {
    enum { N = 100000 };
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    oq_error err = {0};
    char in[32], out[32];
    for (int k = 0; k < N; k++) {
        /* node k computes v(N-k) from v(N-k-1); v0 is x */
        if (N - k - 1 == 0)
            snprintf(in, sizeof in, "x");
        else
            snprintf(in, sizeof in, "v%d", N - k - 1);
        snprintf(out, sizeof out, "v%d", N - k);
        CHECK(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, "Relu", NULL, NULL, LIST(in), LIST(out),
                                  NULL, &err) == OQ_OK);
    }
    snprintf(out, sizeof out, "v%d", N);
    add_output(m, g, out);
    oq_graph *gv = view(m);
    int nt;
    const int *topo = oq_graph_topo_order(gv, &nt);
    ck_assert_int_eq(nt, N);
    for (int i = 0; i < N; i++)
        CHECK(topo[i] == N - 1 - i);
    ck_assert(oq_edit_sort_nodes(m, gv, &err) == OQ_OK);
    ck_assert_str_eq(g->node[0]->input[0], "x");
    ck_assert(oq_graph_refresh(gv, &err) == OQ_OK);
    check_view(gv);
    oq_graph_free(gv);

    /* Close the loop: the first node now reads the last value. */
    ck_assert(oq_edit_set_node_input(m, g->node[0], 0, out, &err) == OQ_OK);
    expect_view_error(m, OQ_EMODEL, "cycle", "node #0 (Relu)");
    oq_error earlier = {0};
    oq_err(&earlier, OQ_EIO, "earlier failure");
    oq_graph *none;
    ck_assert(oq_graph_new(m, &none, &earlier) == OQ_EMODEL);
    ck_assert(earlier.code == OQ_EIO && strcmp(earlier.msg, "earlier failure") == 0);
    oq_model_free(m);
}
END_TEST

/* Constant nodes in every form are constants with a known type and shape. */
START_TEST(constant_forms) {
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    oq_error err = {0};
    add_node(m, g, "Constant", "c_ints", NONE, LIST("shape"));
    ck_assert(oq_edit_set_attr_ints(m, g->node[0], "value_ints", (int64_t[]){1, 2, 3}, 3, &err) ==
              OQ_OK);
    add_node(m, g, "Constant", "c_float", NONE, LIST("scale"));
    ck_assert(oq_edit_set_attr_float(m, g->node[1], "value_float", 0.5f, &err) == OQ_OK);
    add_node(m, g, "Constant", "c_tensor", NONE, LIST("w"));
    oq_tensor *t = float_tensor(2, (int64_t[]){2, 3}, 0.f);
    Onnx__TensorProto *tp;
    ck_assert(oq_tensor_to_proto(t, "", oq_model_allocator(m), &tp, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_tensor_new(m, g->node[2], "value", tp, &err) == OQ_OK);
    add_node(m, g, "Reshape", "r", LIST("x", "shape"), LIST("y"));
    add_node(m, g, "Mul", "mul", LIST("y", "scale"), LIST("z"));
    add_node(m, g, "MatMul", "mm", LIST("z", "w"), LIST("out"));
    add_output(m, g, "out");
    oq_model *m2 = save_reload(m);
    oq_graph *gv = view(m2);
    check_view(gv);
    const oq_value *shape = oq_graph_value_by_name(gv, "shape");
    ck_assert(shape->kind == OQ_VALUE_CONSTANT && oq_value_is_constant(shape));
    ck_assert(shape->tensor == NULL && shape->const_attr != NULL);
    ck_assert_int_eq(oq_value_elem_type(shape), 7);
    ck_assert_int_eq(oq_value_rank(shape), 1);
    ck_assert(oq_value_dim(shape, 0).kind == OQ_DIM_VALUE && oq_value_dim(shape, 0).value == 3);
    const oq_value *scale = oq_graph_value_by_name(gv, "scale");
    ck_assert_int_eq(oq_value_elem_type(scale), 1);
    ck_assert_int_eq(oq_value_rank(scale), 0);
    const oq_value *w = oq_graph_value_by_name(gv, "w");
    ck_assert(w->tensor && w->const_attr && w->const_attr->t == w->tensor);
    ck_assert_int_eq(oq_value_rank(w), 2);
    ck_assert(oq_value_dim(w, 1).value == 3);
    ck_assert(!oq_value_is_constant(oq_graph_value_by_name(gv, "y")));
    ck_assert(!oq_value_is_constant(oq_graph_value_by_name(gv, "x")));
    ck_assert_int_eq(oq_value_rank(oq_graph_value_by_name(gv, "y")), -1); /* undeclared */
    ck_assert_int_eq(oq_value_elem_type(oq_graph_value_by_name(gv, "y")), 0);
    oq_graph_free(gv);
    oq_model_free(m2);
    oq_tensor_free(t);
    oq_model_free(m);
}
END_TEST

/* ---- subgraphs -------------------------------------------------------- */

static Onnx__GraphProto *new_branch(oq_model *m, const char *name) {
    oq_error err = {0};
    Onnx__GraphProto *b;
    ck_assert(oq_edit_graph_new(m, name, &b, &err) == OQ_OK);
    return b;
}

static void set_graph_attr(oq_model *m, Onnx__NodeProto *node, const char *attr,
                           Onnx__GraphProto *b) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_graph_new(m, node, attr, b, &err) == OQ_OK, "%s", err.msg);
}

/* main: R: Relu(x)->r; IF(cond)->y; Z: Neg(x)->z; S: Relu(x)->s (after IF in file).
 *   then: N: Neg(r)->s (shadows the outer s); T: Identity(s)->t_out
 *   else: Add(r, z)->e_sum; IF2(cond)->e_out
 *     then2: Identity(z)->t2       (z from two levels up)
 *     else2: Identity(e_sum)->t3   (e_sum from one level up) */
static oq_model *nested_if_model(void) {
    oq_model *m = new_model();
    oq_error err = {0};
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "Relu", "R", LIST("x"), LIST("r"));
    add_node(m, g, "If", "IF", LIST("cond"), LIST("y"));
    add_node(m, g, "Neg", "Z", LIST("x"), LIST("z"));
    add_node(m, g, "Relu", "S", LIST("x"), LIST("s"));
    add_output(m, g, "y");
    add_output(m, g, "s");

    Onnx__GraphProto *then_b = new_branch(m, "then");
    add_node(m, then_b, "Neg", "N", LIST("r"), LIST("s"));
    add_node(m, then_b, "Identity", "T", LIST("s"), LIST("t_out"));
    add_output(m, then_b, "t_out");

    Onnx__GraphProto *else_b = new_branch(m, "else");
    add_node(m, else_b, "Add", "EA", LIST("r", "z"), LIST("e_sum"));
    add_node(m, else_b, "If", "IF2", LIST("cond"), LIST("e_out"));
    add_output(m, else_b, "e_out");
    Onnx__GraphProto *then2 = new_branch(m, "then2");
    add_node(m, then2, "Identity", "T2", LIST("z"), LIST("t2"));
    add_output(m, then2, "t2");
    Onnx__GraphProto *else2 = new_branch(m, "else2");
    add_node(m, else2, "Identity", "T3", LIST("e_sum"), LIST("t3"));
    add_output(m, else2, "t3");
    set_graph_attr(m, else_b->node[1], "then_branch", then2);
    set_graph_attr(m, else_b->node[1], "else_branch", else2);

    set_graph_attr(m, g->node[1], "then_branch", then_b);
    set_graph_attr(m, g->node[1], "else_branch", else_b);
    (void)err;
    return m;
}

static const oq_graph *sub_named(const oq_graph *g, const char *attr) {
    for (int i = 0; i < oq_graph_subgraph_count(g); i++)
        if (strcmp(oq_graph_subgraph(g, i)->attr, attr) == 0)
            return oq_graph_subgraph(g, i)->graph;
    ck_abort_msg("no subgraph %s", attr);
    return NULL;
}

START_TEST(subgraph_outer_scope) {
    oq_model *m = nested_if_model();
    oq_graph *g = view(m);
    ck_assert_int_eq(check_view(g), 5);
    /* IF must wait for Z (later in the file) because else_branch reads z. */
    int nt;
    const int *topo = oq_graph_topo_order(g, &nt);
    int want[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(topo[i], want[i]);
    int ni;
    const int *imp = oq_graph_node_implicit_inputs(g, 1, &ni);
    ck_assert_int_eq(ni, 3); /* r, z and cond (read by IF2) */
    ck_assert(int_in(imp, ni, oq_graph_find_value(g, "r")));
    ck_assert(int_in(imp, ni, oq_graph_find_value(g, "z")));
    ck_assert(int_in(imp, ni, oq_graph_find_value(g, "cond")));
    const oq_value *z = oq_graph_value_by_name(g, "z");
    ck_assert(z->n_consumers == 1 && z->consumers[0] == 1 && z->n_uses == 0);
    const oq_value *cond = oq_graph_value_by_name(g, "cond");
    ck_assert(cond->n_consumers == 1 && cond->n_uses == 1);

    ck_assert_int_eq(oq_graph_subgraph_count(g), 2);
    const oq_graph *then_g = sub_named(g, "then_branch");
    const oq_graph *else_g = sub_named(g, "else_branch");
    ck_assert_int_eq(oq_graph_owner_node(then_g), 1);
    /* The branch's own s shadows the main graph's s. */
    const oq_value *s_in = oq_graph_value_by_name(then_g, "s");
    ck_assert(s_in->kind == OQ_VALUE_NODE && s_in->producer == 0);
    const oq_value *r_in = oq_graph_value_by_name(then_g, "r");
    ck_assert(r_in->kind == OQ_VALUE_OUTER && r_in->outer_graph == g);
    ck_assert_int_eq(r_in->outer_value, oq_graph_find_value(g, "r"));
    ck_assert_int_eq(oq_graph_find_value(then_g, "z"), -1); /* not referenced there */
    /* Two levels: then2 reads z through else_branch. */
    const oq_graph *then2 = sub_named(else_g, "then_branch");
    ck_assert_int_eq(oq_graph_depth(then2), 2);
    const oq_value *z2 = oq_graph_value_by_name(then2, "z");
    ck_assert(z2->kind == OQ_VALUE_OUTER && z2->outer_graph == else_g);
    const oq_value *z1 = oq_graph_value(else_g, z2->outer_value);
    ck_assert(z1->kind == OQ_VALUE_OUTER && z1->outer_graph == g);
    const oq_value *e_sum = oq_graph_value_by_name(else_g, "e_sum");
    ck_assert_int_eq(e_sum->n_consumers, 1); /* IF2, implicitly */
    ck_assert_int_eq(e_sum->n_uses, 0);
    ck_assert_int_eq(oq_graph_opset(then2, ""), 13);
    oq_graph_free(g);

    /* Renaming z reaches both subgraph levels; renaming s stops at the
     * branch that defines its own s. */
    oq_error err = {0};
    Onnx__GraphProto *gp = oq_model_proto(m)->graph;
    ck_assert_msg(oq_edit_rename_value(m, gp, "z", "zz", &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(oq_edit_rename_value(m, gp, "s", "s_main", &err) == OQ_OK, "%s", err.msg);
    g = view(m);
    check_view(g);
    then2 = sub_named(sub_named(g, "else_branch"), "then_branch");
    ck_assert_int_ge(oq_graph_find_value(then2, "zz"), 0);
    ck_assert_int_eq(oq_graph_find_value(g, "z"), -1);
    then_g = sub_named(g, "then_branch");
    ck_assert_int_ge(oq_graph_find_value(then_g, "s"), 0);
    ck_assert_str_eq(oq_graph_proto(then_g)->node[0]->output[0], "s");
    ck_assert_str_eq(oq_graph_proto(g)->output[1]->name, "s_main");
    oq_graph_free(g);

    /* Saved and reloaded, the same structure comes back. */
    oq_model *m2 = save_reload(m);
    g = view(m2);
    ck_assert_int_eq(check_view(g), 5);
    oq_graph_free(g);
    oq_model_free(m2);
    oq_model_free(m);
}
END_TEST

START_TEST(subgraph_errors) {
    /* A branch reading a name nothing defines. */
    oq_model *m = new_model();
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    add_node(m, g, "If", "IF", LIST("cond"), LIST("y"));
    add_output(m, g, "y");
    Onnx__GraphProto *b = new_branch(m, "then");
    add_node(m, b, "Identity", "T", LIST("nope"), LIST("t"));
    add_output(m, b, "t");
    set_graph_attr(m, g->node[0], "then_branch", b);
    expect_view_error(m, OQ_EMODEL, "subgraph 'then_branch' of node 'IF' (If)", "'nope'");
    oq_model_free(m);

    /* A branch reading its own If's output: a cycle through an implicit input. */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "If", "IF", LIST("cond"), LIST("y"));
    add_output(m, g, "y");
    b = new_branch(m, "then");
    add_node(m, b, "Identity", "T", LIST("y"), LIST("t"));
    add_output(m, b, "t");
    set_graph_attr(m, g->node[0], "then_branch", b);
    expect_view_error(m, OQ_EMODEL, "cycle", "node 'IF' (If)");
    oq_model_free(m);

    /* A branch output naming an outer value is fine (resolved outer). */
    m = new_model();
    g = oq_model_proto(m)->graph;
    add_node(m, g, "If", "IF", LIST("cond"), LIST("y"));
    add_output(m, g, "y");
    b = new_branch(m, "then");
    add_output(m, b, "x");
    set_graph_attr(m, g->node[0], "then_branch", b);
    oq_graph *gv = view(m);
    check_view(gv);
    const oq_graph *tb = oq_graph_subgraph(gv, 0)->graph;
    int no;
    const int *outs = oq_graph_outputs(tb, &no);
    ck_assert(no == 1 && oq_graph_value(tb, outs[0])->kind == OQ_VALUE_OUTER);
    ck_assert_int_eq(oq_value_elem_type(oq_graph_value(tb, outs[0])), 1); /* from x */
    oq_graph_free(gv);
    oq_model_free(m);
}
END_TEST

/* ---- edits ------------------------------------------------------------ */

static long find_input(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_input; i++)
        if (strcmp(g->input[i]->name, name) == 0)
            return (long)i;
    return -1;
}

START_TEST(edits_on_mnist8_survive_reload) {
    oq_model *m = load("models/mnist-8/model.onnx");
    Onnx__GraphProto *gp = oq_model_proto(m)->graph;
    oq_error err = {0};
    oq_namer *nm;
    ck_assert(oq_namer_new(m, &nm, &err) == OQ_OK);
    oq_graph *g = view(m);

    /* 1. Insert an Identity on the edge Convolution28 -> Plus30: the producer
     * writes a fresh name, the Identity maps it back to the old one. */
    const char *edge = "Convolution28_Output_0";
    const char *pre, *id_name;
    ck_assert(oq_namer_make(nm, "Convolution28_Output_0", &pre, &err) == OQ_OK);
    ck_assert_str_eq(pre, "Convolution28_Output_0_1");
    ck_assert(oq_namer_make(nm, "Identity", &id_name, &err) == OQ_OK);
    ck_assert_msg(oq_edit_rename_value(m, gp, edge, pre, &err) == OQ_OK, "%s", err.msg);
    int plus30 = find_node(g, "Plus30");
    size_t replaced;
    ck_assert(oq_edit_replace_input(m, gp->node[plus30], pre, edge, &replaced, &err) == OQ_OK);
    ck_assert_uint_eq(replaced, 1);
    int conv = find_node(g, "Convolution28");
    ck_assert(oq_edit_insert_node(m, gp, (size_t)conv + 1, "Identity", NULL, id_name, LIST(pre),
                                  LIST(edge), NULL, &err) == OQ_OK);
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    check_view(g);
    ck_assert_int_eq(oq_graph_node_count(g), 13);
    const oq_value *ve = oq_graph_value_by_name(g, edge);
    const oq_value *vp = oq_graph_value_by_name(g, pre);
    ck_assert_str_eq(oq_graph_node(g, ve->producer)->op_type, "Identity");
    ck_assert_str_eq(oq_graph_node(g, vp->producer)->name, "Convolution28");
    ck_assert(vp->n_consumers == 1 && vp->consumers[0] == ve->producer);
    ck_assert(ve->n_consumers == 1 &&
              strcmp(oq_graph_node(g, ve->consumers[0])->name, "Plus30") == 0);

    /* 2. Add an initializer (IR 3: a graph input is declared with it) and
     * feed it to Plus214 in place of Parameter194, then drop that one. */
    const char *bias;
    ck_assert(oq_namer_make(nm, "bias_extra", &bias, &err) == OQ_OK);
    oq_tensor *t10 = float_tensor(2, (int64_t[]){1, 10}, 0.25f);
    ck_assert_msg(oq_edit_add_initializer(m, gp, bias, t10, &err) == OQ_OK, "%s", err.msg);
    ck_assert(oq_edit_add_initializer(m, gp, bias, t10, &err) == OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_ge(find_input(gp, bias), 0);
    int plus214 = find_node(g, "Plus214");
    ck_assert(oq_edit_set_node_input(m, gp->node[plus214], 1, bias, &err) == OQ_OK);
    ck_assert(oq_edit_remove_initializer(m, gp, "Parameter194", &err) == OQ_OK);
    ck_assert_int_eq(find_input(gp, "Parameter194"), -1);
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    check_view(g);
    const oq_value *vb = oq_graph_value_by_name(g, bias);
    ck_assert(vb->kind == OQ_VALUE_INITIALIZER && vb->graph_input >= 0 && vb->n_consumers == 1);
    int nr;
    oq_graph_real_inputs(g, &nr);
    ck_assert_int_eq(nr, 1);
    ck_assert_int_eq(oq_graph_find_value(g, "Parameter194"), -1);

    /* 3. Replace a weight: same shape, new data; then retype an unused one. */
    oq_tensor *w = float_tensor(4, (int64_t[]){8, 1, 5, 5}, 0.5f);
    ck_assert_msg(oq_edit_replace_initializer(m, gp, "Parameter5", w, &err) == OQ_OK, "%s",
                  err.msg);
    oq_tensor *i8;
    ck_assert(oq_tensor_new(OQ_DTYPE_INT8, 1, (int64_t[]){3}, 0, &i8, &err) == OQ_OK);
    ck_assert(oq_edit_add_initializer(m, gp, "unused_q", t10, &err) == OQ_OK);
    ck_assert(oq_edit_replace_initializer(m, gp, "unused_q", i8, &err) == OQ_OK);
    long ui = find_input(gp, "unused_q");
    ck_assert_int_ge(ui, 0);
    ck_assert_int_eq(gp->input[ui]->type->tensor_type->elem_type, OQ_DTYPE_INT8);
    ck_assert_uint_eq(gp->input[ui]->type->tensor_type->shape->n_dim, 1);
    ck_assert(oq_edit_replace_initializer(m, gp, "missing", i8, &err) == OQ_ENOTFOUND);
    err = (oq_error){0};

    /* 4. Remove ReLU32, rewiring MaxPool Pooling66 to read its input. */
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    int relu = find_node(g, "ReLU32");
    int pool = find_node(g, "Pooling66");
    ck_assert(oq_edit_replace_input(m, gp->node[pool], "ReLU32_Output_0", "Plus30_Output_0",
                                    &replaced, &err) == OQ_OK);
    ck_assert_uint_eq(replaced, 1);
    ck_assert(oq_edit_remove_node(m, gp, (size_t)relu, &err) == OQ_OK);

    /* 5. Attributes and opsets. */
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    Onnx__NodeProto *c = gp->node[find_node(g, "Convolution110")];
    ck_assert(oq_edit_set_attr_ints(m, c, "dilations", (int64_t[]){1, 1}, 2, &err) == OQ_OK);
    ck_assert(oq_edit_set_opset(m, "ai.onnx", 13, &err) == OQ_OK);
    ck_assert(oq_edit_set_opset(m, "com.microsoft", 1, &err) == OQ_OK);
    ck_assert_uint_eq(oq_model_proto(m)->n_opset_import, 2);
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    check_view(g);
    ck_assert_int_eq(oq_graph_opset(g, ""), 13);
    ck_assert_int_eq(oq_graph_opset(g, "com.microsoft"), 1);
    ck_assert_int_eq(oq_graph_node_count(g), 12);
    oq_graph_free(g);

    /* Save, reload, rebuild: everything is still there and still valid. */
    oq_model *m2 = save_reload(m);
    g = view(m2);
    check_view(g);
    ck_assert_int_eq(oq_graph_node_count(g), 12);
    ck_assert_int_eq(oq_graph_opset(g, ""), 13);
    ck_assert_int_eq(oq_graph_opset(g, "com.microsoft"), 1);
    ck_assert_int_eq(find_node(g, "ReLU32"), -1);
    int id = find_node(g, id_name);
    ck_assert_int_ge(id, 0);
    ck_assert_str_eq(oq_graph_node(g, id)->input[0], pre);
    const int64_t *dil;
    size_t nd;
    ck_assert(oq_node_attr_ints(oq_graph_node(g, find_node(g, "Convolution110")), "dilations",
                                &dil, &nd, &err) == OQ_OK);
    ck_assert(nd == 2 && dil[0] == 1);
    const oq_value *w5 = oq_graph_value_by_name(g, "Parameter5");
    oq_tensor *back;
    ck_assert(oq_tensor_from_proto(w5->tensor, NULL, 0, &back, &err) == OQ_OK);
    ck_assert(back->count == 200 && ((float *)back->data)[0] == 0.5f &&
              ((float *)back->data)[199] == 199.5f);
    oq_tensor_free(back);
    ck_assert_int_eq(oq_value_elem_type(oq_graph_value_by_name(g, "unused_q")), OQ_DTYPE_INT8);
    /* IR 3 rule still holds: every initializer is a graph input. */
    Onnx__GraphProto *gp2 = oq_graph_proto(g);
    for (size_t i = 0; i < gp2->n_initializer; i++)
        ck_assert_int_ge(find_input(gp2, gp2->initializer[i]->name), 0);
    oq_graph_real_inputs(g, &nr);
    ck_assert_int_eq(nr, 1);
    oq_graph_free(g);
    oq_model_free(m2);

    oq_tensor_free(t10);
    oq_tensor_free(w);
    oq_tensor_free(i8);
    oq_namer_free(nm);
    oq_model_free(m);
}
END_TEST

START_TEST(attribute_round_trip) {
    oq_model *m = new_model();
    Onnx__GraphProto *gp = oq_model_proto(m)->graph;
    oq_error err = {0};
    Onnx__NodeProto *node;
    ck_assert(oq_edit_insert_node(m, gp, 0, "Custom", "com.example", "n", LIST("x"), LIST("y"),
                                  &node, &err) == OQ_OK);
    ck_assert(node == gp->node[0]);
    ck_assert(oq_edit_set_attr_int(m, node, "i", -5, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_float(m, node, "f", 0.5f, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_ints(m, node, "is", (int64_t[]){1, 2, 3}, 3, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_floats(m, node, "fs", (float[]){1.5f}, 1, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_ints(m, node, "empty", NULL, 0, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_string(m, node, "s", "hello", &err) == OQ_OK);
    oq_tensor *t = float_tensor(1, (int64_t[]){4}, 1.f);
    Onnx__TensorProto *tp;
    ck_assert(oq_tensor_to_proto(t, "", oq_model_allocator(m), &tp, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_tensor_new(m, node, "t", tp, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_int(m, node, "i", 7, &err) == OQ_OK); /* replaces */
    ck_assert_uint_eq(node->n_attribute, 7);
    ck_assert(oq_edit_remove_attr(m, node, "empty", &err) == OQ_OK);
    ck_assert(oq_edit_remove_attr(m, node, "empty", &err) == OQ_ENOTFOUND);
    err = (oq_error){0};
    add_output(m, gp, "y");

    oq_model *m2 = save_reload(m);
    oq_graph *g = view(m2);
    const Onnx__NodeProto *n2 = oq_graph_node(g, 0);
    ck_assert_str_eq(n2->domain, "com.example");
    int64_t i;
    float f;
    const int64_t *is;
    const float *fs;
    size_t cnt;
    char s[16];
    const Onnx__TensorProto *t2;
    ck_assert(oq_node_attr_int(n2, "i", 0, &i, &err) == OQ_OK && i == 7);
    ck_assert(oq_node_attr_float(n2, "f", 0, &f, &err) == OQ_OK && f == 0.5f);
    ck_assert(oq_node_attr_ints(n2, "is", &is, &cnt, &err) == OQ_OK && cnt == 3 && is[2] == 3);
    ck_assert(oq_node_attr_floats(n2, "fs", &fs, &cnt, &err) == OQ_OK && cnt == 1);
    ck_assert(oq_node_attr_string(n2, "s", NULL, s, sizeof s, &err) == OQ_OK);
    ck_assert_str_eq(s, "hello");
    ck_assert(oq_node_attr_tensor(n2, "t", &t2, &err) == OQ_OK && t2 && t2->n_dims == 1);
    ck_assert(oq_node_attr_int(n2, "missing", 42, &i, &err) == OQ_OK && i == 42);
    const Onnx__GraphProto *sub;
    ck_assert(oq_node_attr_graph(n2, "missing", &sub, &err) == OQ_OK && sub == NULL);
    oq_error e2 = {0};
    ck_assert(oq_node_attr_graph(n2, "t", &sub, &e2) == OQ_EMODEL);
    ck_assert_msg(strstr(e2.msg, "TENSOR") && strstr(e2.msg, "GRAPH") && strstr(e2.msg, "'n'"),
                  "%s", e2.msg);
    ck_assert(oq_attr_type(oq_node_attr(n2, "fs")) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    oq_graph_free(g);
    oq_model_free(m2);

    /* IR 1 attributes carry no type: the field that is set decides. */
    Onnx__AttributeProto *a = gp->node[0]->attribute[0];
    ck_assert_str_eq(a->name, "i");
    a->has_type = 0;
    ck_assert(oq_attr_type(a) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    ck_assert(oq_node_attr_int(gp->node[0], "i", 0, &i, &err) == OQ_OK && i == 7);
    oq_tensor_free(t);
    oq_model_free(m);
}
END_TEST

START_TEST(edit_argument_errors) {
    oq_model *m = new_model();
    Onnx__GraphProto *gp = oq_model_proto(m)->graph;
    oq_error err = {0};
#define EXPECT(call, code)                                                                         \
    do {                                                                                           \
        err = (oq_error){0};                                                                       \
        oq_status st_ = (call);                                                                    \
        ck_assert_msg(st_ == (code), "%s: got %s (%s)", #call, oq_status_name(st_), err.msg);     \
    } while (0)
    EXPECT(oq_edit_insert_node(m, gp, 5, "Relu", NULL, NULL, LIST("x"), LIST("y"), NULL, &err),
           OQ_EINVAL);
    EXPECT(oq_edit_insert_node(m, gp, 0, "", NULL, NULL, NONE, NONE, NULL, &err), OQ_EINVAL);
    EXPECT(oq_edit_insert_node(m, gp, 0, "Relu", NULL, NULL, NULL, 1, NONE, NULL, &err),
           OQ_EINVAL);
    EXPECT(oq_edit_remove_node(m, gp, 0, &err), OQ_EINVAL);
    add_node(m, gp, "Relu", "r", LIST("x"), LIST("y"));
    add_output(m, gp, "y");
    EXPECT(oq_edit_set_node_input(m, gp->node[0], 2, "z", &err), OQ_EINVAL);
    EXPECT(oq_edit_set_node_input(m, gp->node[0], 1, "", &err), OQ_OK); /* appends */
    ck_assert_uint_eq(gp->node[0]->n_input, 2);
    EXPECT(oq_edit_set_node_output(m, gp->node[0], 0, "y", &err), OQ_OK);
    EXPECT(oq_edit_rename_value(m, gp, "y", "x", &err), OQ_EINVAL);   /* x exists */
    EXPECT(oq_edit_rename_value(m, gp, "ghost", "g2", &err), OQ_ENOTFOUND);
    EXPECT(oq_edit_rename_value(m, gp, "y", "y", &err), OQ_OK);
    EXPECT(oq_edit_remove_initializer(m, gp, "ghost", &err), OQ_ENOTFOUND);
    EXPECT(oq_edit_set_opset(m, "", 0, &err), OQ_EINVAL);
    EXPECT(oq_edit_add_graph_input(m, gp, "x", 1, -1, NULL, &err), OQ_EINVAL); /* exists */
    EXPECT(oq_edit_add_graph_output(m, gp, "y", 1, -1, NULL, &err), OQ_EINVAL);
    EXPECT(oq_edit_add_graph_output(m, gp, "q", 1, 2, NULL, &err), OQ_EINVAL); /* no dims */
    EXPECT(oq_edit_set_attr_int(m, gp->node[0], "", 1, &err), OQ_EINVAL);
    EXPECT(oq_edit_set_attr_tensor_new(m, gp->node[0], "t", NULL, &err), OQ_EINVAL);
    EXPECT(oq_edit_add_initializer_proto_new(m, gp, NULL, &err), OQ_EINVAL);
    size_t rep = 9;
    EXPECT(oq_edit_replace_input(m, gp->node[0], "nothing", "x", &rep, &err), OQ_OK);
    ck_assert_uint_eq(rep, 0);
    oq_graph *g = view(m);
    check_view(g);
    oq_graph_free(g);
    oq_graph_free(NULL);
#undef EXPECT
    oq_model_free(m);
}
END_TEST

START_TEST(namer_never_clashes) {
    oq_model *m = load("models/mnist-8/model.onnx");
    oq_error err = {0};
    oq_namer *nm, *fresh;
    ck_assert(oq_namer_new(m, &nm, &err) == OQ_OK);
    ck_assert(oq_namer_new(m, &fresh, &err) == OQ_OK);
    const char *a;
    ck_assert(oq_namer_make(nm, "Input3", &a, &err) == OQ_OK);
    ck_assert_str_eq(a, "Input3_1");
    ck_assert(oq_namer_make(nm, "Input3", &a, &err) == OQ_OK);
    ck_assert_str_eq(a, "Input3_2");
    ck_assert(oq_namer_make(nm, "Convolution28", &a, &err) == OQ_OK); /* a node name */
    ck_assert_str_eq(a, "Convolution28_1");
    ck_assert(oq_namer_reserve(nm, "q_1", &err) == OQ_OK);
    ck_assert(oq_namer_make(nm, "q", &a, &err) == OQ_OK);
    ck_assert_str_eq(a, "q");
    ck_assert(oq_namer_make(nm, "q", &a, &err) == OQ_OK);
    ck_assert_str_eq(a, "q_2");
    ck_assert(oq_namer_make(nm, "", &a, &err) == OQ_EINVAL);
    err = (oq_error){0};
    /* Many names: all distinct and none present in the model. */
    oq_strmap *seen;
    ck_assert(oq_strmap_new(OQ_STRMAP_COPY, 0, &seen, &err) == OQ_OK);
    for (int i = 0; i < 3000; i++) {
        const char *prefix = i % 2 ? "Plus30_Output_0" : "n";
        ck_assert(oq_namer_make(nm, prefix, &a, &err) == OQ_OK);
        ck_assert_msg(!oq_namer_taken(fresh, a), "%s clashes with the model", a);
        bool inserted;
        ck_assert(oq_strmap_add(seen, a, i, &inserted, NULL, &err) == OQ_OK);
        ck_assert_msg(inserted, "%s handed out twice", a);
        ck_assert(oq_namer_taken(nm, a));
    }
    /* Subgraph names count too. */
    oq_model *m2 = nested_if_model();
    oq_namer *n2;
    ck_assert(oq_namer_new(m2, &n2, &err) == OQ_OK);
    ck_assert(oq_namer_taken(n2, "t2") && oq_namer_taken(n2, "IF2") && oq_namer_taken(n2, "e_sum"));
    ck_assert(oq_namer_make(n2, "t3", &a, &err) == OQ_OK);
    ck_assert_str_eq(a, "t3_1");
    oq_namer_free(n2);
    oq_model_free(m2);
    oq_strmap_free(seen);
    oq_namer_free(fresh);
    oq_namer_free(nm);
    oq_namer_free(NULL);
    oq_model_free(m);
}
END_TEST

START_TEST(refresh_failure_empties_view) {
    oq_model *m = load("models/mnist-8/model.onnx");
    oq_graph *g = view(m);
    oq_error err = {0};
    Onnx__GraphProto *gp = oq_model_proto(m)->graph;
    /* Make Convolution28 read Plus30's output: a cycle. */
    ck_assert(oq_edit_set_node_input(m, gp->node[1], 0, "Plus30_Output_0", &err) == OQ_OK);
    ck_assert(oq_graph_refresh(g, &err) == OQ_EMODEL);
    ck_assert_msg(strstr(err.msg, "cycle") && strstr(err.msg, "Convolution28"), "%s", err.msg);
    ck_assert_int_eq(oq_graph_node_count(g), 0);
    ck_assert_int_eq(oq_graph_value_count(g), 0);
    ck_assert_int_eq(oq_graph_find_value(g, "Input3"), -1);
    int n;
    ck_assert_ptr_null(oq_graph_topo_order(g, &n));
    ck_assert_int_eq(n, 0);
    oq_graph_real_inputs(g, &n);
    ck_assert_int_eq(n, 0);
    /* Undo, and the same handle works again. */
    ck_assert(oq_edit_set_node_input(m, gp->node[1], 0, "Input3", &err) == OQ_OK);
    err = (oq_error){0};
    ck_assert(oq_graph_refresh(g, &err) == OQ_OK);
    check_view(g);
    /* Subgraph views cannot be refreshed or freed on their own. */
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

/* Edits under a tight memory budget either succeed or fail with ENOMEM and
 * leave a model that still builds a valid view (no partial edit). A filler
 * (the graph's doc_string) eats the budget so that exactly `slack` bytes are
 * left; sweeping slack in 8-byte steps makes every allocation of every step
 * the failing one at some point (SQLite's fail-the-Nth-malloc, by budget). */
START_TEST(edits_fail_cleanly_over_budget) {
    const char *path = tu_shared_path("models/mnist-8/model.onnx");
    size_t len;
    uint8_t *bytes = tu_read_file(path, &len);
    ck_assert(bytes);
    oq_error err = {0};
    const size_t limit = 4 * len + (1 << 20);
    int failures[8] = {0};
    bool all_ok = false;
    oq_tensor *t = float_tensor(1, (int64_t[]){64}, 0.f);
    const char *long_name = "a_rather_long_replacement_name_for_the_edge_value_0123456789";
    for (size_t slack = 0; slack < 65536 && !all_ok; slack += 8) {
        oq_load_opts o = {.max_memory = limit};
        oq_model *m;
        err = (oq_error){0};
        ck_assert(oq_model_load_buffer(bytes, len, &o, &m, &err) == OQ_OK);
        Onnx__GraphProto *gp = oq_model_proto(m)->graph;
        size_t left = limit - oq_model_memory_used(m);
        ck_assert(left > slack + 64);
        char *filler = oq_pb_alloc(oq_model_allocator(m), left - slack - 64);
        ck_assert(filler);
        filler[0] = '\0';
        oq_pb_free(oq_model_allocator(m), gp->doc_string);
        gp->doc_string = filler;

        size_t nodes = gp->n_node, inits = gp->n_initializer, inputs = gp->n_input;
        int step;
        oq_status st = OQ_OK;
        for (step = 0; step < 8 && st == OQ_OK; step++) {
            err = (oq_error){0};
            switch (step) {
            case 0:
                st = oq_edit_insert_node(m, gp, 0, "Identity", NULL, "id_node", LIST("Input3"),
                                         LIST("id_out"), NULL, &err);
                break;
            case 1:
                st = oq_edit_rename_value(m, gp, "Plus30_Output_0", long_name, &err);
                break;
            case 2:
                st = oq_edit_add_initializer(m, gp, "extra_init", t, &err);
                break;
            case 3:
                st = oq_edit_set_attr_ints(m, gp->node[0], "marks", (int64_t[]){1, 1}, 2, &err);
                break;
            case 4:
                st = oq_edit_set_opset(m, "com.example", 1, &err);
                break;
            case 5:
                st = oq_edit_add_graph_output(m, gp, "id_out", 1, 2, (int64_t[]){-1, 28}, &err);
                break;
            case 6:
                st = oq_edit_set_attr_string(m, gp->node[0], "note", long_name, &err);
                break;
            case 7: /* last: it frees an 800-byte weight */
                st = oq_edit_replace_initializer(m, gp, "Parameter5", t, &err);
                break;
            }
        }
        step--;
        if (st != OQ_OK) {
            ck_assert_msg(st == OQ_ENOMEM, "step %d: %s (%s)", step, oq_status_name(st), err.msg);
            failures[step]++;
            /* The failed step changed nothing. */
            if (step == 0)
                ck_assert_uint_eq(gp->n_node, nodes);
            if (step == 2)
                ck_assert(gp->n_initializer == inits && gp->n_input == inputs);
            if (step == 4)
                ck_assert_uint_eq(oq_model_proto(m)->n_opset_import, 1);
        } else {
            all_ok = true;
        }
        /* Whatever happened, the model is consistent (the replaced weight
         * has another shape, which the view does not check). */
        oq_graph *g;
        err = (oq_error){0};
        ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "after step %d: %s", step, err.msg);
        check_view(g);
        if (step == 1 && st != OQ_OK) {
            ck_assert_int_ge(oq_graph_find_value(g, "Plus30_Output_0"), 0);
            ck_assert_int_eq(oq_graph_find_value(g, long_name), -1);
        }
        oq_graph_free(g);
        oq_model_free(m);
    }
    ck_assert(all_ok);
    for (int s = 0; s < 8; s++)
        ck_assert_msg(failures[s] > 0, "step %d never hit the budget", s);
    oq_tensor_free(t);
    free(bytes);
}
END_TEST

int main(void) {
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, strmap_basic);
    tcase_add_test(tc, strmap_grow_remove_iterate);
    tcase_add_test(tc, mnist8_ir3_view);
    tcase_add_test(tc, mnist8_attributes);
    tcase_add_test(tc, ppocr_constant_weights);
    tcase_add_test(tc, fmnist_vit_view);
    tcase_add_test(tc, other_real_models);
    tcase_add_test(tc, node_tests_1_12);
    tcase_add_test(tc, node_tests_1_21);
    tcase_add_test(tc, cycle_is_named);
    tcase_add_test(tc, dangling_input_is_named);
    tcase_add_test(tc, duplicate_producers);
    tcase_add_test(tc, topo_order_is_stable);
    tcase_add_test(tc, constant_forms);
    tcase_add_test(tc, long_chain_reverse_order);
    tcase_add_test(tc, subgraph_outer_scope);
    tcase_add_test(tc, subgraph_errors);
    tcase_add_test(tc, edits_on_mnist8_survive_reload);
    tcase_add_test(tc, attribute_round_trip);
    tcase_add_test(tc, edit_argument_errors);
    tcase_add_test(tc, namer_never_clashes);
    tcase_add_test(tc, refresh_failure_empties_view);
    tcase_add_test(tc, edits_fail_cleanly_over_budget);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
