/* prepare.c: readies a float model for QDQ insertion without changing what
 * it computes: refuses already-quantized models, moves Constant-node tensors
 * into initializers, folds Conv + BatchNormalization and raises the default
 * opset, rewriting the nodes whose meaning changed (ONNX docs/Changelog.md). */
#include "prepare.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "checked.h"
#include "edit.h"
#include "graph.h"
#include "op.h"
#include "tensorproto.h"

#define PREP_DEFAULT_OPSET 13 /* QuantizeLinear/DequantizeLinear with per-axis scales */
#define PREP_MAX_OPSET 17     /* the highest opset whose changes the table below covers */
#define PREP_MAX_DEPTH 64     /* subgraph nesting walked when counting (loader bounds it) */

static bool default_domain(const char *d) {
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

static bool str_eq(const char *a, const char *b) {
    return a && b && strcmp(a, b) == 0;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ======================================================================== */
/* Already-quantized nodes                                                  */
/* ======================================================================== */

static bool quantized_op(const Onnx__NodeProto *n) {
    const char *op = n->op_type ? n->op_type : "";
    if (default_domain(n->domain))
        return !strcmp(op, "QuantizeLinear") || !strcmp(op, "DequantizeLinear") ||
               !strcmp(op, "DynamicQuantizeLinear") || !strncmp(op, "QLinear", 7) ||
               !strcmp(op, "MatMulInteger") || !strcmp(op, "ConvInteger");
    if (!str_eq(n->domain, "com.microsoft"))
        return false;
    /* ONNX Runtime's contrib ops: QLinear*, QGemm, QAttention, QOrdered*,
     * QuantizeLinear, ... (an upper-case letter after Q, so QuickGelu, a
     * float op, is not one), the dequantizing and integer ops, and the
     * weight-only formats. */
    return (op[0] == 'Q' && op[1] >= 'A' && op[1] <= 'Z') || !strncmp(op, "Quantize", 8) ||
           !strncmp(op, "Dequantize", 10) || !strncmp(op, "DynamicQuantize", 15) ||
           strstr(op, "Integer") || !strncmp(op, "MatMulNBits", 11) ||
           !strcmp(op, "MatMulBnb4") || strstr(op, "BlockQuantized");
}

static int count_nodes(Onnx__NodeProto *const *nodes, size_t n, int depth);

static int count_graph(const Onnx__GraphProto *g, int depth) {
    return g && depth <= PREP_MAX_DEPTH ? count_nodes(g->node, g->n_node, depth) : 0;
}

static int count_nodes(Onnx__NodeProto *const *nodes, size_t n, int depth) {
    int total = 0;
    for (size_t i = 0; i < n; i++) {
        const Onnx__NodeProto *node = nodes[i];
        total += quantized_op(node);
        for (size_t a = 0; a < node->n_attribute; a++) {
            const Onnx__AttributeProto *at = node->attribute[a];
            total += count_graph(at->g, depth + 1);
            for (size_t k = 0; k < at->n_graphs; k++)
                total += count_graph(at->graphs[k], depth + 1);
        }
    }
    return total;
}

int oq_count_quantized_nodes(oq_model *m) {
    Onnx__ModelProto *mp = m ? oq_model_proto(m) : NULL;
    if (!mp)
        return 0;
    int total = count_graph(mp->graph, 0);
    for (size_t f = 0; f < mp->n_functions; f++) /* model-local functions too */
        total += count_nodes(mp->functions[f]->node, mp->functions[f]->n_node, 0);
    return total;
}

/* ======================================================================== */
/* Constant nodes -> initializers                                           */
/* ======================================================================== */

static bool graph_output(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_output; i++)
        if (str_eq(g->output[i]->name, name))
            return true;
    return false;
}

/* The tensor a Constant node holds, named after its output, as a new proto
 * allocated by the model (a `value` tensor is moved out of the node, which
 * is removed next). *out NULL: a form that is not a plain tensor (sparse,
 * strings, a function attribute reference), left in place. */
static oq_status constant_tensor(oq_model *m, Onnx__NodeProto *n, Onnx__TensorProto **out,
                                 oq_error *err) {
    *out = NULL;
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__AttributeProto *at = n->attribute[0];
    const char *name = n->output[0];
    if ((at->ref_attr_name && *at->ref_attr_name) || !at->name)
        return OQ_OK;
    Onnx__AttributeProto__AttributeType type = oq_attr_type(at);
    if (!strcmp(at->name, "value") && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR) {
        Onnx__TensorProto *tp = at->t;
        if (!tp || !tp->has_data_type || tp->data_type == OQ_DTYPE_STRING ||
            tp->data_type == OQ_DTYPE_UNDEFINED)
            return OQ_OK;
        char *nm = oq_pb_strdup(a, name);
        if (!nm)
            return oq_err(err, OQ_ENOMEM, "out of memory moving Constant '%s'", name);
        oq_pb_free(a, tp->name);
        tp->name = nm;
        at->t = NULL; /* the node goes; the tensor becomes the initializer */
        *out = tp;
        return OQ_OK;
    }
    /* Constant-12 scalar and list forms: value_float(s), value_int(s). */
    oq_dtype dt;
    int rank = 1;
    size_t count;
    if (!strcmp(at->name, "value_float") && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) {
        dt = OQ_DTYPE_FLOAT, rank = 0, count = 1;
    } else if (!strcmp(at->name, "value_floats") &&
               type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS) {
        dt = OQ_DTYPE_FLOAT, count = at->n_floats;
    } else if (!strcmp(at->name, "value_int") &&
               type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) {
        dt = OQ_DTYPE_INT64, rank = 0, count = 1;
    } else if (!strcmp(at->name, "value_ints") &&
               type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) {
        dt = OQ_DTYPE_INT64, count = at->n_ints;
    } else {
        return OQ_OK;
    }
    int64_t dims[1] = {(int64_t)count};
    oq_tensor *t;
    oq_status st = oq_tensor_new(dt, rank, dims, 0, &t, err);
    if (st != OQ_OK)
        return st;
    if (dt == OQ_DTYPE_FLOAT && rank == 0)
        *(float *)t->data = at->f;
    else if (dt == OQ_DTYPE_FLOAT)
        memcpy(t->data, at->floats, t->nbytes);
    else if (rank == 0)
        *(int64_t *)t->data = at->i;
    else
        memcpy(t->data, at->ints, t->nbytes);
    st = oq_tensor_to_proto(t, name, a, out, err);
    oq_tensor_free(t);
    return st;
}

oq_status oq_constants_to_initializers(oq_model *m, int *moved, oq_error *err) {
    if (moved)
        *moved = 0;
    if (!m)
        return oq_err(err, OQ_EINVAL, "constants to initializers: no model");
    oq_graph *view;
    oq_status st = oq_graph_new(m, &view, err); /* a valid graph before editing it */
    if (st != OQ_OK)
        return st;
    oq_graph_free(view);
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    int count = 0;
    for (size_t i = g->n_node; i-- > 0;) {
        Onnx__NodeProto *n = g->node[i];
        /* A graph output that is an initializer is legal ONNX, but runtimes
         * treat it unevenly; such a Constant stays a node. */
        if (!oq_node_is_onnx_op(n, "Constant") || n->n_output != 1 || !*n->output[0] ||
            n->n_attribute != 1 || graph_output(g, n->output[0]))
            continue;
        Onnx__TensorProto *tp;
        if ((st = constant_tensor(m, n, &tp, err)) != OQ_OK)
            return st;
        if (!tp)
            continue;
        if ((st = oq_edit_add_initializer_proto_new(m, g, tp, err)) != OQ_OK ||
            (st = oq_edit_remove_node(m, g, i, err)) != OQ_OK)
            return st;
        count++;
    }
    if (moved)
        *moved = count;
    return OQ_OK;
}

/* ======================================================================== */
/* Conv + BatchNormalization folding                                        */
/* ======================================================================== */

typedef struct {
    Onnx__NodeProto *conv, *bn;
    oq_tensor *w, *b;     /* folded weights and bias (owned) */
    char *w_name, *b_name; /* the Conv's W and B (b_name NULL: no bias) */
    bool w_own, b_own;    /* the Conv alone reads them: replace in place */
    char *y;              /* BatchNormalization's output, which the Conv takes over */
} bn_fold;

typedef struct {
    bn_fold *items;
    size_t n, cap;
    char **orphans; /* values the folds may leave unread: removed afterwards */
    size_t n_orphans, cap_orphans;
} fold_list;

static void fold_free(bn_fold *f) {
    oq_tensor_free(f->w);
    oq_tensor_free(f->b);
    free(f->w_name);
    free(f->b_name);
    free(f->y);
    memset(f, 0, sizeof *f);
}

static oq_status push_orphan(fold_list *fl, const char *name, oq_error *err) {
    if (fl->n_orphans == fl->cap_orphans) {
        size_t cap = fl->cap_orphans ? fl->cap_orphans * 2 : 16, bytes;
        char **p = oq_mul_size(cap, sizeof *p, &bytes) ? realloc(fl->orphans, bytes) : NULL;
        if (!p)
            return oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
        fl->orphans = p;
        fl->cap_orphans = cap;
    }
    if (!(fl->orphans[fl->n_orphans] = dup_str(name)))
        return oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
    fl->n_orphans++;
    return OQ_OK;
}

/* A FLOAT constant with tensor data, decoded; *t NULL when v is anything
 * else (the fold is then skipped, not an error). */
static oq_status const_float(oq_model *m, const oq_value *v, oq_tensor **t, oq_error *err) {
    *t = NULL;
    if (!v || !oq_value_is_constant(v) || !v->tensor || v->tensor->data_type != OQ_DTYPE_FLOAT)
        return OQ_OK;
    return oq_tensor_from_proto(v->tensor, oq_model_base_dir(m), 0, t, err);
}

/* Read by this one node slot and nothing else, so it can change in place. */
static bool sole_reader(const oq_value *v) {
    return v->kind == OQ_VALUE_INITIALIZER && v->n_uses == 1 && v->n_consumers == 1 &&
           v->graph_output < 0;
}

static bool output_read(const oq_graph *gv, int node, int slot) {
    int n;
    const int *outs = oq_graph_node_outputs(gv, node, &n);
    if (slot >= n || outs[slot] < 0)
        return false;
    const oq_value *v = oq_graph_value(gv, outs[slot]);
    return v->n_consumers > 0 || v->graph_output >= 0;
}

/* Decides whether BatchNormalization node j folds into the Conv feeding
 * it; if so fills f (with the folded tensors) and *ok. */
static oq_status plan_fold(oq_model *m, const oq_graph *gv, int j, bn_fold *f, bool *ok,
                           oq_error *err) {
    *ok = false;
    Onnx__NodeProto *bn = oq_graph_node(gv, j);
    int nin, nout;
    const int *bin = oq_graph_node_inputs(gv, j, &nin);
    oq_graph_node_outputs(gv, j, &nout);
    if (nin != 5 || nout < 1 || bin[0] < 0 || !*bn->output[0])
        return OQ_OK;
    for (int k = 1; k < nout; k++) /* training mode: running statistics are read */
        if (output_read(gv, j, k))
            return OQ_OK;
    oq_status st;
    int64_t opset = oq_graph_opset(gv, "");
    int64_t training = 0, spatial = 1;
    float eps = 1e-5f;
    if ((st = oq_node_attr_int(bn, "training_mode", 0, &training, err)) != OQ_OK ||
        (st = oq_node_attr_float(bn, "epsilon", 1e-5f, &eps, err)) != OQ_OK ||
        (opset < 9 && (st = oq_node_attr_int(bn, "spatial", 1, &spatial, err)) != OQ_OK))
        return st;
    if (training || spatial != 1)
        return OQ_OK;

    const oq_value *x = oq_graph_value(gv, bin[0]);
    if (x->kind != OQ_VALUE_NODE || x->producer_slot != 0 || x->n_consumers != 1 ||
        x->n_uses != 1 || x->graph_output >= 0)
        return OQ_OK;
    int c = x->producer;
    Onnx__NodeProto *conv = oq_graph_node(gv, c);
    int cin;
    const int *cins = oq_graph_node_inputs(gv, c, &cin);
    if (!oq_node_is_onnx_op(conv, "Conv") || conv->n_output != 1 || cin < 2 || cins[1] < 0)
        return OQ_OK;
    const oq_value *wv = oq_graph_value(gv, cins[1]);
    const oq_value *cbv = cin > 2 && cins[2] >= 0 ? oq_graph_value(gv, cins[2]) : NULL;

    oq_tensor *p[4] = {0}, *w = NULL, *cb = NULL;
    bool fits = true;
    for (int k = 0; k < 4 && st == OQ_OK; k++)
        if ((st = const_float(m, oq_graph_value(gv, bin[k + 1]), &p[k], err)) == OQ_OK && !p[k])
            fits = false;
    if (st == OQ_OK && fits && (st = const_float(m, wv, &w, err)) == OQ_OK && !w)
        fits = false;
    if (st == OQ_OK && fits && cbv && (st = const_float(m, cbv, &cb, err)) == OQ_OK && !cb)
        fits = false;
    int64_t M = w ? w->dims[0] : 0;
    if (st == OQ_OK && fits && (w->rank < 3 || M <= 0 || (cb && (int64_t)cb->count != M)))
        fits = false;
    for (int k = 0; k < 4 && st == OQ_OK && fits; k++)
        if ((int64_t)p[k]->count != M)
            fits = false;
    oq_tensor *nb = NULL;
    if (st == OQ_OK && fits)
        st = oq_tensor_new(OQ_DTYPE_FLOAT, 1, &M, 0, &nb, err);
    if (st == OQ_OK && fits) {
        /* y = (conv(x) - mean) * scale / sqrt(var + eps) + B (BatchNormalization,
         * inference), so with s = scale / sqrt(var + eps) per output channel:
         * W' = W * s, B' = (B_conv - mean) * s + B. */
        const float *scale = p[0]->data, *bias = p[1]->data, *mean = p[2]->data,
                    *var = p[3]->data;
        float *wd = w->data, *bd = nb->data;
        size_t per = w->count / (size_t)M;
        for (int64_t o = 0; o < M && fits; o++) {
            double d = (double)var[o] + (double)eps;
            if (!(d > 0)) { /* a negative variance is no BatchNormalization to fold */
                fits = false;
                break;
            }
            double s = (double)scale[o] / sqrt(d);
            for (size_t i = 0; i < per; i++)
                wd[(size_t)o * per + i] = (float)((double)wd[(size_t)o * per + i] * s);
            double b0 = cb ? (double)((const float *)cb->data)[o] : 0.0;
            bd[o] = (float)((b0 - (double)mean[o]) * s + (double)bias[o]);
        }
    }
    for (int k = 0; k < 4; k++)
        oq_tensor_free(p[k]);
    oq_tensor_free(cb);
    if (st != OQ_OK || !fits) {
        oq_tensor_free(w);
        oq_tensor_free(nb);
        return st;
    }
    f->conv = conv;
    f->bn = bn;
    f->w = w;
    f->b = nb;
    f->w_own = sole_reader(wv);
    f->b_own = cbv && sole_reader(cbv);
    f->w_name = dup_str(wv->name);
    f->b_name = cbv ? dup_str(cbv->name) : NULL;
    f->y = dup_str(bn->output[0]);
    if (!f->w_name || (cbv && !f->b_name) || !f->y) {
        fold_free(f);
        return oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
    }
    *ok = true;
    return OQ_OK;
}

/* Rewrites one planned fold: new weights and bias, the Conv takes the
 * BatchNormalization's output, which is removed. */
static oq_status apply_fold(oq_model *m, Onnx__GraphProto *g, oq_namer *nm, const bn_fold *f,
                            oq_error *err) {
    oq_status st;
    const char *name;
    char prefix[300];
    if (f->w_own) {
        st = oq_edit_replace_initializer(m, g, f->w_name, f->w, err);
    } else {
        snprintf(prefix, sizeof prefix, "%s_bnfold", f->w_name);
        if ((st = oq_namer_make(nm, prefix, &name, err)) == OQ_OK &&
            (st = oq_edit_add_initializer(m, g, name, f->w, err)) == OQ_OK)
            st = oq_edit_set_node_input(m, f->conv, 1, name, err);
    }
    if (st != OQ_OK)
        return st;
    if (f->b_own) {
        st = oq_edit_replace_initializer(m, g, f->b_name, f->b, err);
    } else {
        snprintf(prefix, sizeof prefix, "%s_bias", f->y);
        if ((st = oq_namer_make(nm, prefix, &name, err)) == OQ_OK &&
            (st = oq_edit_add_initializer(m, g, name, f->b, err)) == OQ_OK)
            st = oq_edit_set_node_input(m, f->conv, 2, name, err);
    }
    if (st != OQ_OK || (st = oq_edit_set_node_output(m, f->conv, 0, f->y, err)) != OQ_OK)
        return st;
    for (size_t i = 0; i < g->n_node; i++)
        if (g->node[i] == f->bn)
            return oq_edit_remove_node(m, g, i, err);
    return oq_err(err, OQ_EINTERNAL, "folded BatchNormalization node vanished");
}

/* Drops initializers and Constant nodes the folds left unread. */
static oq_status drop_orphans(oq_model *m, const fold_list *fl, oq_error *err) {
    oq_graph *gv;
    oq_status st = oq_graph_new(m, &gv, err);
    if (st != OQ_OK)
        return st;
    Onnx__GraphProto *g = oq_graph_proto(gv);
    Onnx__NodeProto **dead = NULL;
    size_t n_dead = 0, bytes;
    if (fl->n_orphans && (!oq_mul_size(fl->n_orphans, sizeof *dead, &bytes) ||
                          !(dead = malloc(bytes)))) {
        oq_graph_free(gv);
        return oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
    }
    for (size_t i = 0; i < fl->n_orphans && st == OQ_OK; i++) {
        const oq_value *v = oq_graph_value_by_name(gv, fl->orphans[i]);
        if (!v || v->n_consumers > 0 || v->graph_output >= 0)
            continue;
        if (v->kind == OQ_VALUE_CONSTANT) {
            bool seen = false;
            for (size_t k = 0; k < n_dead; k++)
                seen |= dead[k] == oq_graph_node(gv, v->producer);
            if (!seen)
                dead[n_dead++] = oq_graph_node(gv, v->producer);
        }
    }
    /* Initializers by name (the view borrows names: collect before editing). */
    char **names = NULL;
    size_t n_names = 0;
    if (fl->n_orphans && !(names = calloc(fl->n_orphans, sizeof *names)))
        st = oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
    for (size_t i = 0; i < fl->n_orphans && st == OQ_OK; i++) {
        const oq_value *v = oq_graph_value_by_name(gv, fl->orphans[i]);
        if (!v || v->kind != OQ_VALUE_INITIALIZER || v->n_consumers > 0 || v->graph_output >= 0)
            continue;
        bool seen = false;
        for (size_t k = 0; k < n_names; k++)
            seen |= strcmp(names[k], fl->orphans[i]) == 0;
        if (!seen && !(names[n_names++] = dup_str(fl->orphans[i])))
            st = oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
    }
    oq_graph_free(gv);
    for (size_t i = 0; i < n_names && st == OQ_OK; i++)
        if (names[i])
            st = oq_edit_remove_initializer(m, g, names[i], err);
    for (size_t k = 0; k < n_dead && st == OQ_OK; k++)
        for (size_t i = 0; i < g->n_node; i++)
            if (g->node[i] == dead[k]) {
                st = oq_edit_remove_node(m, g, i, err);
                break;
            }
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    free(dead);
    return st;
}

oq_status oq_fold_batchnorm(oq_model *m, int *folded, oq_error *err) {
    if (folded)
        *folded = 0;
    if (!m)
        return oq_err(err, OQ_EINVAL, "fold BatchNormalization: no model");
    oq_graph *gv;
    oq_status st = oq_graph_new(m, &gv, err);
    if (st != OQ_OK)
        return st;
    fold_list fl = {0};
    int n = oq_graph_node_count(gv);
    for (int j = 0; j < n && st == OQ_OK; j++) {
        if (!oq_node_is_onnx_op(oq_graph_node(gv, j), "BatchNormalization"))
            continue;
        if (fl.n == fl.cap) {
            size_t cap = fl.cap ? fl.cap * 2 : 16, bytes;
            bn_fold *p = oq_mul_size(cap, sizeof *p, &bytes) ? realloc(fl.items, bytes) : NULL;
            if (!p) {
                st = oq_err(err, OQ_ENOMEM, "out of memory folding BatchNormalization");
                break;
            }
            fl.items = p;
            fl.cap = cap;
        }
        bool ok;
        bn_fold *f = &fl.items[fl.n];
        memset(f, 0, sizeof *f);
        if ((st = plan_fold(m, gv, j, f, &ok, err)) != OQ_OK || !ok)
            continue;
        fl.n++;
        /* BatchNormalization's parameters, and weights other nodes shared,
         * may be left unread: collected while the view's names are valid. */
        int nin;
        const int *bin = oq_graph_node_inputs(gv, j, &nin);
        for (int k = 1; k < nin && st == OQ_OK; k++)
            st = push_orphan(&fl, oq_graph_value(gv, bin[k])->name, err);
        if (st == OQ_OK && !f->w_own)
            st = push_orphan(&fl, f->w_name, err);
        if (st == OQ_OK && f->b_name && !f->b_own)
            st = push_orphan(&fl, f->b_name, err);
    }
    Onnx__GraphProto *g = oq_graph_proto(gv);
    oq_graph_free(gv); /* edits below free strings the view borrowed */
    oq_namer *nm = NULL;
    if (st == OQ_OK && fl.n)
        st = oq_namer_new(m, &nm, err);
    for (size_t i = 0; i < fl.n && st == OQ_OK; i++) {
        st = apply_fold(m, g, nm, &fl.items[i], err);
        if (st != OQ_OK)
            oq_err_prefix(err, "folding BatchNormalization into Conv '%s': ",
                          fl.items[i].conv->name ? fl.items[i].conv->name : fl.items[i].y);
    }
    if (st == OQ_OK && fl.n)
        st = drop_orphans(m, &fl, err);
    if (st == OQ_OK && folded)
        *folded = (int)fl.n;
    oq_namer_free(nm);
    for (size_t i = 0; i < fl.n; i++)
        fold_free(&fl.items[i]);
    free(fl.items);
    for (size_t i = 0; i < fl.n_orphans; i++)
        free(fl.orphans[i]);
    free(fl.orphans);
    return st;
}

/* ======================================================================== */
/* Opset upgrade                                                            */
/* ======================================================================== */

/* Pass 1 (check) walks every graph with a view, refuses what cannot be
 * converted and records the nodes to rewrite with what it needs to know
 * (ranks, element types, constant scales). Pass 2 (apply) rewrites them
 * without the view, whose borrowed strings the edits free. A refused model
 * is therefore left unchanged. */

typedef struct cv_ctx cv_ctx;
typedef struct cv_node cv_node;
typedef oq_status (*cv_fn)(cv_ctx *c, cv_node *cn, oq_error *err);

typedef struct {
    const char *op;
    int since;      /* first opset with the op */
    int changes[3]; /* later opsets (<= PREP_MAX_OPSET) where its meaning changed; 0 ends */
    cv_fn convert;  /* NULL: onnxq cannot convert across those changes */
} op_rule;

enum { NEAREST_FLOOR, NEAREST_CEIL };

struct cv_node {
    const op_rule *rule; /* NULL: only consumed_inputs to drop */
    Onnx__GraphProto *g;
    Onnx__NodeProto *node;
    const oq_graph *gv; /* pass 1 only */
    int idx;            /* pass 1 only */
    char label[200];
    int rank;           /* rank of input 0 (or output 0), -1 unknown */
    int32_t elem;       /* element type of input 0, 0 unknown */
    int nearest;        /* Resize-10 nearest rounding */
    bool truncate;      /* drop the (unread) optional outputs */
};

struct cv_ctx {
    oq_model *m;
    int from, to;
    bool apply;
    oq_namer *namer;
    cv_node *plan;
    size_t n, cap;
    int edits; /* edits made to the current node */
};

/* ---- pass 1 helpers ---------------------------------------------------- */

static const oq_value *in_value(const cv_node *cn, int slot) {
    int n;
    const int *ins = oq_graph_node_inputs(cn->gv, cn->idx, &n);
    return slot < n && ins[slot] >= 0 ? oq_graph_value(cn->gv, ins[slot]) : NULL;
}

static const oq_value *out_value(const cv_node *cn, int slot) {
    int n;
    const int *outs = oq_graph_node_outputs(cn->gv, cn->idx, &n);
    return slot < n && outs[slot] >= 0 ? oq_graph_value(cn->gv, outs[slot]) : NULL;
}

/* True when the node lists optional outputs from slot `first` on; *read
 * tells whether any of them is read (by a node or as a graph output). */
static bool extra_outputs(const cv_node *cn, int first, bool *read) {
    bool any = false;
    *read = false;
    for (size_t k = (size_t)first; k < cn->node->n_output; k++) {
        if (!*cn->node->output[k])
            continue;
        any = true;
        *read |= output_read(cn->gv, cn->idx, (int)k);
    }
    return any;
}

static bool single_element(const oq_value *v) {
    int r = v ? oq_value_rank(v) : -1;
    if (r < 0)
        return false;
    for (int i = 0; i < r; i++) {
        oq_dim d = oq_value_dim(v, i);
        if (d.kind != OQ_DIM_VALUE || d.value != 1)
            return false;
    }
    return true;
}

static oq_status unsupported(const cv_ctx *c, const cv_node *cn, oq_error *err,
                             const char *why) {
    return oq_err(err, OQ_EUNSUPPORTED, "%s: cannot convert from opset %d to %d: %s", cn->label,
                  c->from, c->to, why);
}

/* ---- pass 2 helpers ---------------------------------------------------- */

static const char *node_base(const Onnx__NodeProto *n) {
    if (n->n_output && *n->output[0])
        return n->output[0];
    return n->name && *n->name ? n->name : n->op_type;
}

static oq_status drop_attr(cv_ctx *c, Onnx__NodeProto *n, const char *name, oq_error *err) {
    if (!oq_node_attr(n, name))
        return OQ_OK;
    c->edits++;
    return oq_edit_remove_attr(c->m, n, name, err);
}

/* Sets input slot (filling skipped slots with "" = omitted). */
static oq_status put_input(cv_ctx *c, Onnx__NodeProto *n, size_t slot, const char *name,
                           oq_error *err) {
    oq_status st = OQ_OK;
    while (st == OQ_OK && n->n_input < slot)
        st = oq_edit_set_node_input(c->m, n, n->n_input, "", err);
    c->edits++;
    return st == OQ_OK ? oq_edit_set_node_input(c->m, n, slot, name, err) : st;
}

/* Adds tensor t as an initializer of the node's graph named after the
 * node; *name is owned by the namer. */
static oq_status add_init(cv_ctx *c, cv_node *cn, const char *suffix, const oq_tensor *t,
                          const char **name, oq_error *err) {
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s_%s", node_base(cn->node), suffix);
    oq_status st = oq_namer_make(c->namer, prefix, name, err);
    return st == OQ_OK ? oq_edit_add_initializer(c->m, cn->g, *name, t, err) : st;
}

/* A 1-D initializer of n values of dtype (int64 or float) copied from v. */
static oq_status add_vector(cv_ctx *c, cv_node *cn, const char *suffix, oq_dtype dtype, const void *v,
                            size_t n, const char **name, oq_error *err) {
    int64_t dims[1] = {(int64_t)n};
    oq_tensor *t;
    oq_status st = oq_tensor_new(dtype, 1, dims, 0, &t, err);
    if (st != OQ_OK)
        return st;
    if (n)
        memcpy(t->data, v, t->nbytes);
    st = add_init(c, cn, suffix, t, name, err);
    oq_tensor_free(t);
    return st;
}

static oq_status add_i64(cv_ctx *c, cv_node *cn, const char *suffix, const int64_t *v, size_t n,
                         const char **name, oq_error *err) {
    return add_vector(c, cn, suffix, OQ_DTYPE_INT64, v, n, name, err);
}

static oq_status add_floats(cv_ctx *c, cv_node *cn, const char *suffix, const float *v, size_t n,
                            const char **name, oq_error *err) {
    return add_vector(c, cn, suffix, OQ_DTYPE_FLOAT, v, n, name, err);
}

/* A rank-0 float16/float/double initializer holding v. */
static oq_status add_scalar(cv_ctx *c, cv_node *cn, const char *suffix, oq_dtype dt, double v,
                            const char **name, oq_error *err) {
    oq_tensor *t;
    oq_status st = oq_tensor_new(dt, 0, NULL, 0, &t, err);
    if (st != OQ_OK)
        return st;
    if (dt == OQ_DTYPE_DOUBLE)
        *(double *)t->data = v;
    else if (dt == OQ_DTYPE_FLOAT16)
        *(uint16_t *)t->data = oq_float_to_half((float)v);
    else
        *(float *)t->data = (float)v;
    st = add_init(c, cn, suffix, t, name, err);
    oq_tensor_free(t);
    return st;
}

/* An INTS attribute becomes int64 input `slot` (opset 10+/13 style). */
static oq_status ints_to_input(cv_ctx *c, cv_node *cn, const char *attr, size_t slot,
                               oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    if (!oq_node_attr(n, attr))
        return OQ_OK;
    const int64_t *v;
    size_t count;
    const char *name;
    oq_status st = oq_node_attr_ints(n, attr, &v, &count, err);
    if (st == OQ_OK)
        st = add_i64(c, cn, attr, v, count, &name, err);
    if (st == OQ_OK)
        st = put_input(c, n, slot, name, err);
    return st == OQ_OK ? drop_attr(c, n, attr, err) : st;
}

static oq_status truncate_outputs(cv_ctx *c, Onnx__NodeProto *n, size_t keep) {
    ProtobufCAllocator *a = oq_model_allocator(c->m);
    for (size_t k = keep; k < n->n_output; k++)
        oq_pb_free(a, n->output[k]);
    if (n->n_output > keep) {
        n->n_output = keep;
        c->edits++;
    }
    return OQ_OK;
}

static oq_status set_op_type(cv_ctx *c, Onnx__NodeProto *n, const char *op, oq_error *err) {
    ProtobufCAllocator *a = oq_model_allocator(c->m);
    char *s = oq_pb_strdup(a, op);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory renaming op %s", n->op_type);
    oq_pb_free(a, n->op_type);
    n->op_type = s;
    c->edits++;
    return OQ_OK;
}

/* ---- converters -------------------------------------------------------- */

/* Add, Sub, Mul, Div, Pow, And, Or, Xor, Equal, Greater, Less: opset 7
 * replaced broadcast/axis (B aligned at `axis`) with numpy broadcasting,
 * which aligns trailing dims: the same thing only when axis puts B last. */
static oq_status cv_broadcast(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    oq_status st;
    if (c->apply) {
        if ((st = drop_attr(c, n, "broadcast", err)) != OQ_OK)
            return st;
        return drop_attr(c, n, "axis", err);
    }
    int64_t bc = 0, axis = 0;
    if ((st = oq_node_attr_int(n, "broadcast", 0, &bc, err)) != OQ_OK ||
        (st = oq_node_attr_int(n, "axis", 0, &axis, err)) != OQ_OK)
        return st;
    if (!bc || !oq_node_attr(n, "axis"))
        return OQ_OK;
    const oq_value *b = in_value(cn, 1);
    int ra = oq_value_rank(in_value(cn, 0)), rb = oq_value_rank(b);
    if (single_element(b) || (ra >= 0 && rb >= 0 && (axis == ra - rb || axis == -rb)))
        return OQ_OK;
    char why[200];
    snprintf(why, sizeof why,
             "broadcast=1 with axis=%lld (A rank %d, B rank %d) is not numpy-style broadcasting",
             (long long)axis, ra, rb);
    return unsupported(c, cn, err, why);
}

/* Gemm-7: C broadcasts unidirectionally; the `broadcast` flag went away. */
static oq_status cv_gemm(cv_ctx *c, cv_node *cn, oq_error *err) {
    return c->apply ? drop_attr(c, cn->node, "broadcast", err) : OQ_OK;
}

/* BatchNormalization-7 dropped is_test (the output count tells the mode),
 * -9 dropped spatial, -14 keeps training outputs only with training_mode. */
static oq_status cv_batchnorm(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    oq_status st;
    if (c->apply) {
        if ((c->to >= 7 && (st = drop_attr(c, n, "is_test", err)) != OQ_OK) ||
            (c->to >= 9 && (st = drop_attr(c, n, "spatial", err)) != OQ_OK))
            return st;
        return cn->truncate ? truncate_outputs(c, n, 1) : OQ_OK;
    }
    if (c->from < 9 && c->to >= 9) {
        int64_t spatial = 1;
        if ((st = oq_node_attr_int(n, "spatial", 1, &spatial, err)) != OQ_OK)
            return st;
        if (spatial != 1)
            return unsupported(c, cn, err,
                               "spatial=0 (per-activation statistics) has no form after opset 9");
    }
    bool read, extra = extra_outputs(cn, 1, &read);
    if (extra && c->from < 7 && c->to >= 7) {
        /* Before 7, is_test chose the mode; from 7 on, listed outputs do. */
        if (read)
            return unsupported(c, cn, err, "its training-mode outputs (mean, var) are read");
        cn->truncate = true;
    }
    if (extra && !cn->truncate && c->from < 14 && c->to >= 14)
        return unsupported(c, cn, err, "training-mode outputs changed in opset 14");
    return OQ_OK;
}

/* Cast-6: `to` is a TensorProto.DataType number instead of a type name. */
static int cast_type(const char *s) {
    static const char *const names[] = {"", "FLOAT", "UINT8", "INT8", "UINT16", "INT16",
                                        "INT32", "INT64", "STRING", "BOOL", "FLOAT16",
                                        "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128"};
    for (int i = 1; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcasecmp(s, names[i]))
            return i;
    return 0;
}

static oq_status cv_cast(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    const Onnx__AttributeProto *at = oq_node_attr(n, "to");
    if (!at || oq_attr_type(at) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING)
        return OQ_OK;
    char buf[32];
    oq_status st = oq_node_attr_string(n, "to", NULL, buf, sizeof buf, err);
    if (st != OQ_OK)
        return st;
    int to = cast_type(buf);
    if (!c->apply) {
        if (!to) {
            char why[100];
            snprintf(why, sizeof why, "unknown Cast type '%s'", buf);
            return unsupported(c, cn, err, why);
        }
        return OQ_OK;
    }
    c->edits++;
    return oq_edit_set_attr_int(c->m, n, "to", to, err); /* replaces the string */
}

static bool float_elem(int32_t e) {
    return e == 0 || e == OQ_DTYPE_FLOAT || e == OQ_DTYPE_DOUBLE || e == OQ_DTYPE_FLOAT16;
}

/* The type of a scalar input replacing an attribute: the node's input type,
 * float when undeclared (Clip and Pad before opset 11 only take
 * float16/float/double, and a wrong guess fails type checking when the
 * plan is built rather than computing something else). */
static oq_dtype input_float_type(const cv_node *cn) {
    return cn->elem ? (oq_dtype)cn->elem : OQ_DTYPE_FLOAT;
}

/* Clip-11: min and max are optional scalar inputs instead of attributes. */
static oq_status cv_clip(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    if (!c->apply) {
        cn->elem = oq_value_elem_type(in_value(cn, 0));
        return float_elem(cn->elem) ? OQ_OK
                                    : unsupported(c, cn, err, "input type is not a float type");
    }
    bool has_min = oq_node_attr(n, "min") != NULL, has_max = oq_node_attr(n, "max") != NULL;
    float lo = 0, hi = 0;
    const char *name;
    oq_status st = OQ_OK;
    if (has_min && (st = oq_node_attr_float(n, "min", 0, &lo, err)) == OQ_OK &&
        (st = add_scalar(c, cn, "min", input_float_type(cn), lo, &name, err)) == OQ_OK)
        st = put_input(c, n, 1, name, err);
    if (st == OQ_OK && has_max && (st = oq_node_attr_float(n, "max", 0, &hi, err)) == OQ_OK &&
        (st = add_scalar(c, cn, "max", input_float_type(cn), hi, &name, err)) == OQ_OK)
        st = put_input(c, n, 2, name, err); /* slot 1 stays "" without min */
    if (st == OQ_OK)
        st = drop_attr(c, n, "min", err);
    return st == OQ_OK ? drop_attr(c, n, "max", err) : st;
}

/* Concat-4 made axis required; before, it defaulted to 1. */
static oq_status cv_concat(cv_ctx *c, cv_node *cn, oq_error *err) {
    if (!c->apply || oq_node_attr(cn->node, "axis"))
        return OQ_OK;
    c->edits++;
    return oq_edit_set_attr_int(c->m, cn->node, "axis", 1, err);
}

/* Dropout-7 dropped is_test, -10 made the mask bool, -12 made ratio an
 * input. onnxq only runs inference, where Dropout is the identity. */
static oq_status cv_dropout(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    oq_status st;
    if (!c->apply) {
        bool read;
        if (extra_outputs(cn, 1, &read) && c->from < 10) {
            if (read && c->to >= 10)
                return unsupported(c, cn, err, "its mask output is read and becomes bool in opset 10");
            cn->truncate = !read;
        }
        return OQ_OK;
    }
    if (c->to >= 7 && (st = drop_attr(c, n, "is_test", err)) != OQ_OK)
        return st;
    if (c->to >= 12 && oq_node_attr(n, "ratio")) {
        float ratio = 0.5f;
        const char *name;
        if ((st = oq_node_attr_float(n, "ratio", 0.5f, &ratio, err)) != OQ_OK ||
            (st = add_scalar(c, cn, "ratio", OQ_DTYPE_FLOAT, ratio, &name, err)) != OQ_OK ||
            (st = put_input(c, n, 1, name, err)) != OQ_OK ||
            (st = drop_attr(c, n, "ratio", err)) != OQ_OK)
            return st;
    }
    return cn->truncate ? truncate_outputs(c, n, 1) : OQ_OK;
}

/* LpPool-2 / GlobalLpPool-2: p became an int (it was a float). */
static oq_status cv_lppool(cv_ctx *c, cv_node *cn, oq_error *err) {
    const Onnx__AttributeProto *at = oq_node_attr(cn->node, "p");
    if (!at || oq_attr_type(at) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
        return OQ_OK;
    if (!c->apply)
        return at->f >= 1 && at->f <= 64 && at->f == floorf(at->f)
                   ? OQ_OK
                   : unsupported(c, cn, err, "p is not a small whole number");
    c->edits++;
    return oq_edit_set_attr_int(c->m, cn->node, "p", (int64_t)at->f, err);
}

/* Pad-2 renamed paddings to pads; Pad-11 made pads and value inputs. */
static oq_status cv_pad(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    const char *pads = oq_node_attr(n, "pads") ? "pads" : "paddings";
    char mode[32];
    oq_status st = oq_node_attr_string(n, "mode", "constant", mode, sizeof mode, err);
    if (st != OQ_OK)
        return st;
    if (!c->apply) {
        cn->elem = oq_value_elem_type(in_value(cn, 0));
        if (!oq_node_attr(n, pads))
            return unsupported(c, cn, err, "it has no pads attribute");
        if (c->to >= 11 && !float_elem(cn->elem))
            return unsupported(c, cn, err, "input type is not a float type");
        return OQ_OK;
    }
    if (c->to < 11) { /* only the rename */
        if (strcmp(pads, "paddings") != 0)
            return OQ_OK;
        const int64_t *v;
        size_t count;
        if ((st = oq_node_attr_ints(n, pads, &v, &count, err)) != OQ_OK ||
            (st = oq_edit_set_attr_ints(c->m, n, "pads", v, count, err)) != OQ_OK)
            return st;
        return drop_attr(c, n, "paddings", err);
    }
    if ((st = ints_to_input(c, cn, pads, 1, err)) != OQ_OK)
        return st;
    float value = 0;
    if ((st = oq_node_attr_float(n, "value", 0, &value, err)) != OQ_OK)
        return st;
    if (!strcmp(mode, "constant") && value != 0) { /* constant_value defaults to 0 */
        const char *name;
        if ((st = add_scalar(c, cn, "value", input_float_type(cn), value, &name, err)) != OQ_OK ||
            (st = put_input(c, n, 2, name, err)) != OQ_OK)
            return st;
    }
    return drop_attr(c, n, "value", err);
}

/* Reshape-5: the shape is an input, not an attribute. */
static oq_status cv_reshape(cv_ctx *c, cv_node *cn, oq_error *err) {
    if (!c->apply)
        return cn->node->n_input >= 2 || oq_node_attr(cn->node, "shape")
                   ? OQ_OK
                   : unsupported(c, cn, err, "it has no shape");
    return cn->node->n_input >= 2 ? OQ_OK : ints_to_input(c, cn, "shape", 1, err);
}

/* Squeeze-13, Unsqueeze-13, ReduceSum-13: axes is an input. */
static oq_status cv_axes(cv_ctx *c, cv_node *cn, oq_error *err) {
    return c->apply ? ints_to_input(c, cn, "axes", 1, err) : OQ_OK;
}

/* Upsample-7..9 and Resize-10 map coordinates asymmetrically (x_in =
 * x_out / scale) and, as ONNX Runtime implements them, round "nearest"
 * down when upsampling and up when downsampling. Resize-11 defaults to
 * half_pixel and round_prefer_floor, so both are set explicitly. */
static oq_status resize_attrs(cv_ctx *c, Onnx__NodeProto *n, bool nearest, int rounding,
                              oq_error *err) {
    oq_status st = oq_edit_set_attr_string(c->m, n, "coordinate_transformation_mode",
                                           "asymmetric", err);
    c->edits++;
    if (st == OQ_OK && nearest)
        st = oq_edit_set_attr_string(c->m, n, "nearest_mode",
                                     rounding == NEAREST_CEIL ? "ceil" : "floor", err);
    return st;
}

/* Resize-11 takes X, roi, scales: roi is "" from opset 13, an empty
 * tensor before (it is only read by tf_crop_and_resize). */
static oq_status resize_inputs(cv_ctx *c, cv_node *cn, const char *scales, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    char *s = dup_str(scales); /* scales may be the slot string replaced below */
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory converting %s", n->op_type);
    const char *roi = "";
    oq_status st = OQ_OK;
    if (c->to < 13)
        st = add_floats(c, cn, "roi", NULL, 0, &roi, err);
    if (st == OQ_OK)
        st = put_input(c, n, 2, s, err);
    if (st == OQ_OK)
        st = put_input(c, n, 1, roi, err);
    free(s);
    return st;
}

static oq_status resize_mode(const cv_ctx *c, const cv_node *cn, bool *nearest, oq_error *err) {
    char mode[32];
    oq_status st = oq_node_attr_string(cn->node, "mode", "nearest", mode, sizeof mode, err);
    if (st != OQ_OK)
        return st;
    *nearest = !strcmp(mode, "nearest");
    if (!*nearest && strcmp(mode, "linear") != 0) {
        char why[100];
        snprintf(why, sizeof why, "mode '%s' is neither nearest nor linear", mode);
        return unsupported(c, cn, err, why);
    }
    return OQ_OK;
}

static oq_status cv_resize(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    bool nearest;
    oq_status st = resize_mode(c, cn, &nearest, err);
    if (st != OQ_OK)
        return st;
    if (c->apply)
        return (st = resize_inputs(c, cn, n->n_input > 1 ? n->input[1] : "", err)) == OQ_OK
                   ? resize_attrs(c, n, nearest, cn->nearest, err)
                   : st;
    if (!nearest)
        return OQ_OK;
    /* Per-axis rounding cannot be expressed after opset 11: every scale
     * must be >= 1 (floor) or every one <= 1 (ceil). */
    const oq_value *sv = in_value(cn, 1);
    if (!sv || !oq_value_is_constant(sv) || !sv->tensor || sv->tensor->data_type != OQ_DTYPE_FLOAT)
        return unsupported(c, cn, err, "nearest Resize-10 needs constant float scales");
    oq_tensor *t;
    if ((st = oq_tensor_from_proto(sv->tensor, oq_model_base_dir(c->m), 0, &t, err)) != OQ_OK)
        return st;
    bool up = true, down = true;
    for (size_t i = 0; i < t->count; i++) {
        float s = ((const float *)t->data)[i];
        up &= s >= 1;
        down &= s <= 1;
    }
    oq_tensor_free(t);
    if (!up && !down)
        return unsupported(c, cn, err, "nearest Resize-10 both up- and downsamples");
    cn->nearest = up ? NEAREST_FLOOR : NEAREST_CEIL;
    return OQ_OK;
}

/* Upsample: opset 7 scales attribute, 9 scales input, 10 deprecated in
 * favour of Resize (same meaning as Resize-10). */
static oq_status cv_upsample(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    bool nearest;
    oq_status st;
    if (!c->apply) {
        if (c->from < 7)
            return unsupported(c, cn, err,
                               "Upsample-1 (experimental width_scale/height_scale) is not converted");
        if ((st = resize_mode(c, cn, &nearest, err)) != OQ_OK)
            return st;
        if (c->from < 9 ? !oq_node_attr(n, "scales") : n->n_input < 2 || !*n->input[1])
            return unsupported(c, cn, err, "it has no scales");
        return OQ_OK;
    }
    if ((st = resize_mode(c, cn, &nearest, err)) != OQ_OK)
        return st;
    if (c->from < 9) { /* scales attribute -> input */
        const float *v;
        size_t count;
        const char *name;
        if ((st = oq_node_attr_floats(n, "scales", &v, &count, err)) != OQ_OK ||
            (st = add_floats(c, cn, "scales", v, count, &name, err)) != OQ_OK ||
            (st = put_input(c, n, 1, name, err)) != OQ_OK ||
            (st = drop_attr(c, n, "scales", err)) != OQ_OK)
            return st;
    }
    if (c->to < 10)
        return OQ_OK;
    if ((st = set_op_type(c, n, "Resize", err)) != OQ_OK || c->to < 11)
        return st; /* Resize-10 means what Upsample meant */
    /* Upsample scales are >= 1, where ONNX Runtime's nearest rounds down. */
    return (st = resize_inputs(c, cn, n->input[1], err)) == OQ_OK
               ? resize_attrs(c, n, nearest, NEAREST_FLOOR, err)
               : st;
}

/* RoiAlign-16 added coordinate_transformation_mode defaulting to
 * half_pixel; RoiAlign-10 behaved as output_half_pixel. */
static oq_status cv_roialign(cv_ctx *c, cv_node *cn, oq_error *err) {
    if (!c->apply || oq_node_attr(cn->node, "coordinate_transformation_mode"))
        return OQ_OK;
    c->edits++;
    return oq_edit_set_attr_string(c->m, cn->node, "coordinate_transformation_mode",
                                   "output_half_pixel", err);
}

/* Scatter-11 is deprecated: ScatterElements-11 is the same operation. */
static oq_status cv_scatter(cv_ctx *c, cv_node *cn, oq_error *err) {
    return c->apply ? set_op_type(c, cn->node, "ScatterElements", err) : OQ_OK;
}

/* Slice-10: starts, ends, axes are inputs. */
static oq_status cv_slice(cv_ctx *c, cv_node *cn, oq_error *err) {
    oq_status st;
    if (!c->apply)
        return oq_node_attr(cn->node, "starts") && oq_node_attr(cn->node, "ends")
                   ? OQ_OK
                   : unsupported(c, cn, err, "it has no starts/ends");
    if ((st = ints_to_input(c, cn, "starts", 1, err)) != OQ_OK ||
        (st = ints_to_input(c, cn, "ends", 2, err)) != OQ_OK)
        return st;
    return ints_to_input(c, cn, "axes", 3, err);
}

/* Softmax, LogSoftmax, Hardmax before 13 coerce the input to 2-D at `axis`
 * (default 1) and normalise each row; from 13 they work along one axis
 * (default -1). The same when axis is the last one; otherwise
 * Flatten(axis) -> op(axis=1) -> Reshape to the input's shape. */
static oq_status cv_softmax(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    if (!c->apply) {
        int ri = oq_value_rank(in_value(cn, 0)), ro = oq_value_rank(out_value(cn, 0));
        cn->rank = ri > ro ? ri : ro;
        return OQ_OK;
    }
    int64_t axis = 1;
    oq_status st = oq_node_attr_int(n, "axis", 1, &axis, err);
    if (st != OQ_OK)
        return st;
    if (cn->rank >= 0) {
        if (axis < -cn->rank || axis >= (cn->rank ? cn->rank : 1))
            return oq_err(err, OQ_EMODEL, "%s: axis %lld is out of range for rank %d", cn->label,
                          (long long)axis, cn->rank);
        if (axis < 0)
            axis += cn->rank;
        if (axis >= cn->rank - 1) {
            c->edits++;
            return oq_edit_set_attr_int(c->m, n, "axis", -1, err);
        }
    }
    if (n->n_input < 1 || n->n_output < 1)
        return oq_err(err, OQ_EMODEL, "%s: no input or output", cn->label);
    char *x = dup_str(n->input[0]), *y = dup_str(n->output[0]);
    char prefix[300];
    const char *shape = NULL, *flat = NULL, *y2d = NULL, *names[3];
    static const char *const suffix[] = {"flatten", "op", "reshape"};
    if (!x || !y)
        st = oq_err(err, OQ_ENOMEM, "out of memory converting %s", cn->label);
    const char *outs[3] = {"shape", "2d_in", "2d"};
    const char **dst[3] = {&shape, &flat, &y2d};
    for (int i = 0; i < 3 && st == OQ_OK; i++) {
        snprintf(prefix, sizeof prefix, "%s_%s", y, outs[i]);
        st = oq_namer_make(c->namer, prefix, dst[i], err);
    }
    for (int i = 0; i < 3 && st == OQ_OK; i++) {
        snprintf(prefix, sizeof prefix, "%s_%s", n->name && *n->name ? n->name : y, suffix[i]);
        st = oq_namer_make(c->namer, prefix, &names[i], err);
    }
    Onnx__NodeProto *fl = NULL;
    if (st == OQ_OK)
        st = oq_edit_insert_node(c->m, cn->g, OQ_EDIT_APPEND, "Shape", NULL, names[0],
                                 (const char *const[]){x}, 1, &shape, 1, NULL, err);
    if (st == OQ_OK)
        st = oq_edit_insert_node(c->m, cn->g, OQ_EDIT_APPEND, "Flatten", NULL, names[1],
                                 (const char *const[]){x}, 1, &flat, 1, &fl, err);
    if (st == OQ_OK)
        st = oq_edit_set_attr_int(c->m, fl, "axis", axis, err);
    if (st == OQ_OK)
        st = oq_edit_set_node_input(c->m, n, 0, flat, err);
    if (st == OQ_OK)
        st = oq_edit_set_node_output(c->m, n, 0, y2d, err);
    if (st == OQ_OK)
        st = oq_edit_set_attr_int(c->m, n, "axis", 1, err);
    if (st == OQ_OK)
        st = oq_edit_insert_node(c->m, cn->g, OQ_EDIT_APPEND, "Reshape", NULL, names[2],
                                 (const char *const[]){y2d, shape}, 2,
                                 (const char *const[]){y}, 1, NULL, err);
    c->edits++;
    free(x);
    free(y);
    return st;
}

/* Split-2 dropped the split input (attribute only); Split-13 made it an
 * input again. */
static oq_status cv_split(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    bool split_input = n->n_input >= 2 && *n->input[1];
    if (!c->apply)
        return c->from < 2 && split_input && c->to < 13
                   ? unsupported(c, cn, err, "the split input has no form in opsets 2 to 12")
                   : OQ_OK;
    return c->to >= 13 && !split_input ? ints_to_input(c, cn, "split", 1, err) : OQ_OK;
}

/* TopK-10: k is a 1-element int64 input. */
static oq_status cv_topk(cv_ctx *c, cv_node *cn, oq_error *err) {
    Onnx__NodeProto *n = cn->node;
    if (!c->apply)
        return oq_node_attr(n, "k") ? OQ_OK : unsupported(c, cn, err, "it has no k");
    int64_t k = 0;
    const char *name;
    oq_status st = oq_node_attr_int(n, "k", 0, &k, err);
    if (st == OQ_OK)
        st = add_i64(c, cn, "k", &k, 1, &name, err);
    if (st == OQ_OK)
        st = put_input(c, n, 1, name, err);
    return st == OQ_OK ? drop_attr(c, n, "k", err) : st;
}

/* Every default-domain op up to opset 17 (onnx.defs schema history), with
 * the opsets where its meaning changed (docs/Changelog.md). Versions that
 * only added types, optional attributes with the old behaviour as default,
 * or negative axes are compatible and not listed. consumed_inputs (gone in
 * opset 6) is dropped from any node generically. */
static const op_rule op_rules[] = {
    {"Abs", 1, {0}, NULL},
    {"Acos", 7, {0}, NULL},
    {"Acosh", 9, {0}, NULL},
    {"Add", 1, {7}, cv_broadcast},
    {"And", 1, {7}, cv_broadcast},
    {"ArgMax", 1, {0}, NULL},
    {"ArgMin", 1, {0}, NULL},
    {"Asin", 7, {0}, NULL},
    {"Asinh", 9, {0}, NULL},
    {"Atan", 7, {0}, NULL},
    {"Atanh", 9, {0}, NULL},
    {"AveragePool", 1, {0}, NULL},
    {"BatchNormalization", 1, {7, 9, 14}, cv_batchnorm},
    {"Bernoulli", 15, {0}, NULL},
    {"BitShift", 11, {0}, NULL},
    {"BlackmanWindow", 17, {0}, NULL},
    {"Cast", 1, {6}, cv_cast},
    {"CastLike", 15, {0}, NULL},
    {"Ceil", 1, {0}, NULL},
    {"Celu", 12, {0}, NULL},
    {"Clip", 1, {11}, cv_clip},
    {"Compress", 9, {0}, NULL},
    {"Concat", 1, {4}, cv_concat},
    {"ConcatFromSequence", 11, {0}, NULL},
    {"Constant", 1, {0}, NULL},
    {"ConstantOfShape", 9, {0}, NULL},
    {"Conv", 1, {0}, NULL},
    {"ConvInteger", 10, {0}, NULL},
    {"ConvTranspose", 1, {0}, NULL},
    {"Cos", 7, {0}, NULL},
    {"Cosh", 9, {0}, NULL},
    {"CumSum", 11, {0}, NULL},
    {"DFT", 17, {0}, NULL},
    {"DepthToSpace", 1, {0}, NULL}, /* 11 added mode, default DCR = the old behaviour */
    {"DequantizeLinear", 10, {0}, NULL},
    {"Det", 11, {0}, NULL},
    {"Div", 1, {7}, cv_broadcast},
    {"Dropout", 1, {7, 10, 12}, cv_dropout},
    {"DynamicQuantizeLinear", 11, {0}, NULL},
    {"Einsum", 12, {0}, NULL},
    {"Elu", 1, {0}, NULL},
    {"Equal", 1, {7}, cv_broadcast},
    {"Erf", 9, {0}, NULL},
    {"Exp", 1, {0}, NULL},
    {"Expand", 8, {0}, NULL},
    {"EyeLike", 9, {0}, NULL},
    {"Flatten", 1, {0}, NULL},
    {"Floor", 1, {0}, NULL},
    {"GRU", 1, {3, 7}, NULL},
    {"Gather", 1, {0}, NULL},
    {"GatherElements", 11, {0}, NULL},
    {"GatherND", 11, {0}, NULL},
    {"Gemm", 1, {7}, cv_gemm},
    {"GlobalAveragePool", 1, {0}, NULL},
    {"GlobalLpPool", 1, {2}, cv_lppool},
    {"GlobalMaxPool", 1, {0}, NULL},
    {"Greater", 1, {7}, cv_broadcast},
    {"GreaterOrEqual", 12, {0}, NULL},
    {"GridSample", 16, {0}, NULL},
    {"HammingWindow", 17, {0}, NULL},
    {"HannWindow", 17, {0}, NULL},
    {"HardSigmoid", 1, {0}, NULL},
    {"HardSwish", 14, {0}, NULL},
    {"Hardmax", 1, {13}, cv_softmax},
    {"Identity", 1, {0}, NULL},
    {"If", 1, {0}, NULL},
    {"InstanceNormalization", 1, {0}, NULL},
    {"IsInf", 10, {0}, NULL},
    {"IsNaN", 9, {0}, NULL},
    {"LRN", 1, {0}, NULL},
    {"LSTM", 1, {7}, NULL},
    {"LayerNormalization", 17, {0}, NULL},
    {"LeakyRelu", 1, {0}, NULL},
    {"Less", 1, {7}, cv_broadcast},
    {"LessOrEqual", 12, {0}, NULL},
    {"Log", 1, {0}, NULL},
    {"LogSoftmax", 1, {13}, cv_softmax},
    {"Loop", 1, {0}, NULL},
    {"LpNormalization", 1, {0}, NULL},
    {"LpPool", 1, {2}, cv_lppool},
    {"MatMul", 1, {0}, NULL},
    {"MatMulInteger", 10, {0}, NULL},
    {"Max", 1, {0}, NULL},
    {"MaxPool", 1, {0}, NULL},
    {"MaxRoiPool", 1, {0}, NULL},
    {"MaxUnpool", 9, {0}, NULL},
    {"Mean", 1, {0}, NULL},
    {"MeanVarianceNormalization", 9, {0}, NULL},
    {"MelWeightMatrix", 17, {0}, NULL},
    {"Min", 1, {0}, NULL},
    {"Mod", 10, {0}, NULL},
    {"Mul", 1, {7}, cv_broadcast},
    {"Multinomial", 7, {0}, NULL},
    {"Neg", 1, {0}, NULL},
    {"NegativeLogLikelihoodLoss", 12, {0}, NULL},
    {"NonMaxSuppression", 10, {0}, NULL},
    {"NonZero", 9, {0}, NULL},
    {"Not", 1, {0}, NULL},
    {"OneHot", 9, {0}, NULL},
    {"Optional", 15, {0}, NULL},
    {"OptionalGetElement", 15, {0}, NULL},
    {"OptionalHasElement", 15, {0}, NULL},
    {"Or", 1, {7}, cv_broadcast},
    {"PRelu", 1, {0}, NULL},
    {"Pad", 1, {2, 11}, cv_pad},
    {"Pow", 1, {7}, cv_broadcast},
    {"QLinearConv", 10, {0}, NULL},
    {"QLinearMatMul", 10, {0}, NULL},
    {"QuantizeLinear", 10, {0}, NULL},
    {"RNN", 1, {7}, NULL},
    {"RandomNormal", 1, {0}, NULL},
    {"RandomNormalLike", 1, {0}, NULL},
    {"RandomUniform", 1, {0}, NULL},
    {"RandomUniformLike", 1, {0}, NULL},
    {"Range", 11, {0}, NULL},
    {"Reciprocal", 1, {0}, NULL},
    {"ReduceL1", 1, {0}, NULL}, /* Reduce* other than ReduceSum keep axes until 18 */
    {"ReduceL2", 1, {0}, NULL},
    {"ReduceLogSum", 1, {0}, NULL},
    {"ReduceLogSumExp", 1, {0}, NULL},
    {"ReduceMax", 1, {0}, NULL},
    {"ReduceMean", 1, {0}, NULL},
    {"ReduceMin", 1, {0}, NULL},
    {"ReduceProd", 1, {0}, NULL},
    {"ReduceSum", 1, {13}, cv_axes},
    {"ReduceSumSquare", 1, {0}, NULL},
    {"Relu", 1, {0}, NULL},
    {"Reshape", 1, {5}, cv_reshape},
    {"Resize", 10, {11}, cv_resize},
    {"ReverseSequence", 10, {0}, NULL},
    {"RoiAlign", 10, {16}, cv_roialign},
    {"Round", 11, {0}, NULL},
    {"STFT", 17, {0}, NULL},
    {"Scan", 8, {9}, NULL},
    {"Scatter", 9, {11}, cv_scatter},
    {"ScatterElements", 11, {0}, NULL},
    {"ScatterND", 11, {0}, NULL},
    {"Selu", 1, {0}, NULL},
    {"SequenceAt", 11, {0}, NULL},
    {"SequenceConstruct", 11, {0}, NULL},
    {"SequenceEmpty", 11, {0}, NULL},
    {"SequenceErase", 11, {0}, NULL},
    {"SequenceInsert", 11, {0}, NULL},
    {"SequenceLength", 11, {0}, NULL},
    {"SequenceMap", 17, {0}, NULL},
    {"Shape", 1, {0}, NULL},
    {"Shrink", 9, {0}, NULL},
    {"Sigmoid", 1, {0}, NULL},
    {"Sign", 9, {0}, NULL},
    {"Sin", 7, {0}, NULL},
    {"Sinh", 9, {0}, NULL},
    {"Size", 1, {0}, NULL},
    {"Slice", 1, {10}, cv_slice},
    {"Softmax", 1, {13}, cv_softmax},
    {"SoftmaxCrossEntropyLoss", 12, {0}, NULL},
    {"Softplus", 1, {0}, NULL},
    {"Softsign", 1, {0}, NULL},
    {"SpaceToDepth", 1, {0}, NULL},
    {"Split", 1, {2, 13}, cv_split},
    {"SplitToSequence", 11, {0}, NULL},
    {"Sqrt", 1, {0}, NULL},
    {"Squeeze", 1, {13}, cv_axes},
    {"StringNormalizer", 10, {0}, NULL},
    {"Sub", 1, {7}, cv_broadcast},
    {"Sum", 1, {0}, NULL},
    {"Tan", 7, {0}, NULL},
    {"Tanh", 1, {0}, NULL},
    {"TfIdfVectorizer", 9, {0}, NULL},
    {"ThresholdedRelu", 10, {0}, NULL},
    {"Tile", 1, {6}, NULL},
    {"TopK", 1, {10}, cv_topk},
    {"Transpose", 1, {0}, NULL},
    {"Trilu", 14, {0}, NULL},
    {"Unique", 11, {0}, NULL},
    {"Unsqueeze", 1, {13}, cv_axes},
    {"Upsample", 1, {7, 9, 10}, cv_upsample},
    {"Where", 9, {0}, NULL},
    {"Xor", 1, {7}, cv_broadcast},
};

static const op_rule *find_rule(const char *op) {
    for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; i++)
        if (str_eq(op_rules[i].op, op))
            return &op_rules[i];
    return NULL;
}

/* The first opset in (from, to] where the rule's op changed, or 0. */
static int change_in_range(const op_rule *r, int from, int to) {
    for (int i = 0; i < 3 && r->changes[i]; i++)
        if (r->changes[i] > from && r->changes[i] <= to)
            return r->changes[i];
    return 0;
}

static oq_status plan_push(cv_ctx *c, const cv_node *cn, oq_error *err) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32, bytes;
        cv_node *p = oq_mul_size(cap, sizeof *p, &bytes) ? realloc(c->plan, bytes) : NULL;
        if (!p)
            return oq_err(err, OQ_ENOMEM, "out of memory planning the opset conversion");
        c->plan = p;
        c->cap = cap;
    }
    c->plan[c->n++] = *cn;
    return OQ_OK;
}

/* Pass 1 over one graph and, recursively, its subgraphs (the opset import
 * covers them too). */
static oq_status check_graph(cv_ctx *c, const oq_graph *gv, oq_error *err) {
    int n = oq_graph_node_count(gv);
    oq_status st = OQ_OK;
    for (int i = 0; i < n && st == OQ_OK; i++) {
        Onnx__NodeProto *node = oq_graph_node(gv, i);
        if (!default_domain(node->domain))
            continue;
        cv_node cn = {.g = oq_graph_proto(gv), .node = node, .gv = gv, .idx = i, .rank = -1};
        oq_graph_node_label(gv, i, cn.label, sizeof cn.label);
        if (c->from == 0)
            return oq_err(err, OQ_EMODEL,
                          "%s is in the default domain, which the model does not import",
                          cn.label);
        const op_rule *r = find_rule(node->op_type);
        if (!r)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "%s: onnxq does not know how %s changed between opset %d and %d, "
                          "so it cannot raise the opset",
                          cn.label, node->op_type, c->from, c->to);
        if (r->since > c->from)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "%s: %s is not an opset %d op (it first appears in opset %d; an "
                          "experimental op?), so onnxq cannot convert it to opset %d",
                          cn.label, node->op_type, c->from, r->since, c->to);
        int changed = change_in_range(r, c->from, c->to);
        if (changed && !r->convert)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "%s: %s changed meaning in opset %d and onnxq cannot convert it from "
                          "opset %d to %d",
                          cn.label, node->op_type, changed, c->from, c->to);
        if (changed) {
            cn.rule = r;
            if ((st = r->convert(c, &cn, err)) != OQ_OK)
                return st;
        }
        if (changed || (c->from < 6 && oq_node_attr(node, "consumed_inputs")))
            st = plan_push(c, &cn, err);
    }
    for (int s = 0; s < oq_graph_subgraph_count(gv) && st == OQ_OK; s++)
        st = check_graph(c, oq_graph_subgraph(gv, s)->graph, err);
    return st;
}

/* Lowest IR version that may carry an opset (docs/Versioning.md). */
static int64_t ir_for_opset(int opset) {
    if (opset <= 8)
        return 3;
    if (opset <= 11)
        return opset - 5; /* 9: IR 4, 10: IR 5, 11: IR 6 */
    return opset <= 14 ? 7 : 8;
}

/* IR < 4 lists every initializer among the graph inputs because the format
 * required it; from IR 4 such an input is one a caller may override, which
 * stops runtimes from treating the weight as a constant (ONNX Runtime then
 * skips constant folding and QDQ fusion). Raising the IR, they go. */
static void drop_initializer_inputs(oq_model *m, Onnx__GraphProto *g) {
    ProtobufCAllocator *a = oq_model_allocator(m);
    size_t kept = 0;
    for (size_t i = 0; i < g->n_input; i++) {
        bool init = false;
        for (size_t k = 0; k < g->n_initializer && !init; k++)
            init = str_eq(g->initializer[k]->name, g->input[i]->name);
        if (init)
            protobuf_c_message_free_unpacked(&g->input[i]->base, a);
        else
            g->input[kept++] = g->input[i];
    }
    g->n_input = kept;
}

/* Runs pass 1 on m (from its current opset to `to`). The caller frees
 * c->plan. *gv_out (optional) receives the view the plan points into. */
static oq_status upgrade_check(oq_model *m, int to, cv_ctx *c, oq_graph **gv_out,
                               oq_error *err) {
    memset(c, 0, sizeof *c);
    c->m = m;
    c->to = to;
    oq_graph *gv;
    oq_status st = oq_graph_new(m, &gv, err);
    if (st != OQ_OK)
        return st;
    c->from = (int)oq_graph_opset(gv, "");
    if (c->from < to) {
        if (to > PREP_MAX_OPSET)
            st = oq_err(err, OQ_EUNSUPPORTED,
                        "onnxq raises opsets up to %d; %d was asked (the model has %d)",
                        PREP_MAX_OPSET, to, c->from);
        else
            st = check_graph(c, gv, err);
    }
    if (gv_out && st == OQ_OK)
        *gv_out = gv;
    else
        oq_graph_free(gv);
    return st;
}

oq_status oq_upgrade_opset(oq_model *m, int target_opset, int *converted, oq_error *err) {
    if (converted)
        *converted = 0;
    if (!m || target_opset < 0)
        return oq_err(err, OQ_EINVAL, "upgrade opset: no model or target opset %d", target_opset);
    int to = target_opset ? target_opset : PREP_DEFAULT_OPSET;
    cv_ctx c;
    oq_graph *gv = NULL;
    oq_status st = upgrade_check(m, to, &c, &gv, err);
    if (st != OQ_OK || c.from >= to) {
        oq_graph_free(gv);
        free(c.plan);
        return st;
    }
    oq_graph_free(gv); /* pass 2 edits free strings the view borrowed */
    Onnx__ModelProto *mp = oq_model_proto(m);
    /* Raised first, so initializers added below need no IR 3 graph input. */
    int64_t ir = ir_for_opset(to);
    if (!mp->has_ir_version || mp->ir_version < ir) {
        if ((!mp->has_ir_version || mp->ir_version < 4) && ir >= 4 && mp->graph)
            drop_initializer_inputs(m, mp->graph);
        mp->has_ir_version = 1;
        mp->ir_version = ir;
    }
    c.apply = true;
    int count = 0, inserted = 0;
    if (c.n)
        st = oq_namer_new(m, &c.namer, err);
    for (size_t i = 0; i < c.n && st == OQ_OK; i++) {
        cv_node *cn = &c.plan[i];
        size_t before = cn->g->n_node;
        c.edits = 0;
        if (c.from < 6 && oq_node_attr(cn->node, "consumed_inputs"))
            st = drop_attr(&c, cn->node, "consumed_inputs", err);
        if (st == OQ_OK && cn->rule)
            st = cn->rule->convert(&c, cn, err);
        if (st != OQ_OK && err && !strstr(err->msg, cn->label))
            oq_err_prefix(err, "%s: ", cn->label);
        count += c.edits > 0;
        inserted |= cn->g->n_node != before;
    }
    oq_namer_free(c.namer);
    free(c.plan);
    if (st == OQ_OK)
        st = oq_edit_set_opset(m, "", to, err);
    if (st == OQ_OK && inserted) { /* appended nodes: restore topological order */
        if ((st = oq_graph_new(m, &gv, err)) == OQ_OK)
            st = oq_edit_sort_nodes(m, gv, err);
        oq_graph_free(gv);
    }
    if (st == OQ_OK && converted)
        *converted = count;
    return st;
}

/* ======================================================================== */
/* All steps                                                                */
/* ======================================================================== */

oq_status oq_prepare_model(oq_model *m, int target_opset, oq_prepare_result *res,
                           oq_error *err) {
    oq_prepare_result r = {0};
    if (res)
        *res = r;
    if (!m || target_opset < 0)
        return oq_err(err, OQ_EINVAL, "prepare: no model or target opset %d", target_opset);
    int to = target_opset ? target_opset : PREP_DEFAULT_OPSET;
    r.existing_quantize = oq_count_quantized_nodes(m);
    if (r.existing_quantize > 0) {
        if (res)
            *res = r;
        return oq_err(err, OQ_EUNSUPPORTED,
                      "model already contains %d quantized node%s (QuantizeLinear/"
                      "DequantizeLinear/QLinear*/*Integer); quantization-aware models are not "
                      "quantized again",
                      r.existing_quantize, r.existing_quantize == 1 ? "" : "s");
    }
    /* Refuse an unconvertible model before changing anything. */
    cv_ctx c;
    oq_status st = upgrade_check(m, to, &c, NULL, err);
    free(c.plan);
    if (st != OQ_OK)
        return st;
    r.opset_before = r.opset_after = c.from;
    if ((st = oq_constants_to_initializers(m, &r.constants_to_initializers, err)) != OQ_OK ||
        (st = oq_fold_batchnorm(m, &r.batchnorms_folded, err)) != OQ_OK)
        return st;
    if (c.from < to) { /* raise only, never lower */
        if ((st = oq_upgrade_opset(m, to, &r.nodes_converted, err)) != OQ_OK)
            return st;
        r.opset_after = to;
    }
    /* End with a sorted graph whose view builds. */
    oq_graph *gv;
    if ((st = oq_graph_new(m, &gv, err)) != OQ_OK)
        return st;
    st = oq_edit_sort_nodes(m, gv, err);
    if (st == OQ_OK)
        st = oq_graph_refresh(gv, err);
    oq_graph_free(gv);
    if (st == OQ_OK && res)
        *res = r;
    return st;
}
