/* rewrite.c: the helpers the three rewrite modes share -- an editing
 * context over the main graph with inferred element types, per-node
 * decisions for the report, exclusion rules, and emitters of quantized
 * initializers and QuantizeLinear/DequantizeLinear nodes. The modes live in
 * rewrite_static.c and rewrite_dynamic.c. */
#include "rewrite_internal.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "tensorproto.h"

/* ---- context ------------------------------------------------------------- */

/* Element type of output `slot` of a node whose inputs' types are known:
 * the ops that change type are listed, every other op keeps its first typed
 * input's type (true of the arithmetic and shape ops models use). */
static int32_t infer_out_type(const oq_rw *rw, int node, int slot) {
    const Onnx__NodeProto *n = rw->nodes[node];
    int nin;
    const int *ins = oq_graph_node_inputs(rw->g, node, &nin);
    const char *op = n->op_type ? n->op_type : "";
    bool onnx = !n->domain || !*n->domain || !strcmp(n->domain, "ai.onnx");
    if (onnx) {
        static const char *const i64[] = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin",
                                          "NonMaxSuppression"};
        static const char *const boolean[] = {"Equal", "Less", "Greater", "LessOrEqual",
                                              "GreaterOrEqual", "Not", "And", "Or", "Xor",
                                              "IsNaN", "IsInf"};
        for (size_t i = 0; i < sizeof i64 / sizeof *i64; i++)
            if (!strcmp(op, i64[i]))
                return OQ_DTYPE_INT64;
        for (size_t i = 0; i < sizeof boolean / sizeof *boolean; i++)
            if (!strcmp(op, boolean[i]))
                return OQ_DTYPE_BOOL;
        if (!strcmp(op, "Cast")) {
            int64_t to = 0;
            oq_error e = {0};
            oq_node_attr_int(n, "to", 0, &to, &e);
            return (int32_t)to;
        }
        if (!strcmp(op, "ConstantOfShape")) {
            const Onnx__TensorProto *tp = NULL;
            oq_error e = {0};
            oq_node_attr_tensor(n, "value", &tp, &e);
            return tp && tp->has_data_type ? tp->data_type : OQ_DTYPE_FLOAT;
        }
        if (!strcmp(op, "DequantizeLinear"))
            return OQ_DTYPE_FLOAT;
        if (!strcmp(op, "QuantizeLinear"))
            return nin > 2 && ins[2] >= 0 && rw->vtype[ins[2]] ? rw->vtype[ins[2]] : OQ_DTYPE_UINT8;
        if (!strcmp(op, "DynamicQuantizeLinear"))
            return slot == 1 ? OQ_DTYPE_FLOAT : OQ_DTYPE_UINT8;
        if (!strcmp(op, "MatMulInteger") || !strcmp(op, "ConvInteger"))
            return OQ_DTYPE_INT32;
        if ((!strcmp(op, "MaxPool") || !strcmp(op, "TopK")) && slot == 1)
            return OQ_DTYPE_INT64;
        if (!strcmp(op, "Where"))
            return nin > 1 && ins[1] >= 0 ? rw->vtype[ins[1]] : 0;
    }
    for (int i = 0; i < nin; i++)
        if (ins[i] >= 0 && rw->vtype[ins[i]])
            return rw->vtype[ins[i]];
    return 0;
}

static bool is_init(const oq_rw *rw, int v) {
    const oq_value *val = oq_graph_value(rw->g, v);
    return val && val->kind == OQ_VALUE_INITIALIZER && val->tensor && val->initializer >= 0;
}

static bool reshape_like(const Onnx__NodeProto *n) {
    return oq_node_is_onnx_op(n, "Reshape") || oq_node_is_onnx_op(n, "Flatten") ||
           oq_node_is_onnx_op(n, "Squeeze") || oq_node_is_onnx_op(n, "Unsqueeze");
}

/* Marks node's output as a folded constant when node is reshape-like and
 * reads only constants (exporters leave Reshape(weight) for the runtime). */
static void mark_fold(oq_rw *rw, int node) {
    const Onnx__NodeProto *n = rw->nodes[node];
    int nin, nout;
    const int *ins = oq_graph_node_inputs(rw->g, node, &nin);
    const int *outs = oq_graph_node_outputs(rw->g, node, &nout);
    if (!reshape_like(n) || nout != 1 || outs[0] < 0 || nin < 1 || ins[0] < 0 ||
        rw->vtype[ins[0]] != OQ_DTYPE_FLOAT || !oq_rw_is_const(rw, ins[0]))
        return;
    for (int s = 1; s < nin; s++)
        if (ins[s] >= 0 && !is_init(rw, ins[s]))
            return;
    int rank;
    int64_t dims[OQ_MAX_RANK];
    rw->fold[outs[0]] = node;
    if (!oq_rw_const_shape(rw, outs[0], &rank, dims))
        rw->fold[outs[0]] = -1;
}

/* A deterministic node reading only constants yields constants. */
static void mark_cderived(oq_rw *rw, int node) {
    const Onnx__NodeProto *n = rw->nodes[node];
    const char *op = n->op_type ? n->op_type : "";
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx"))
        return;
    if (strstr(op, "Random") || !strcmp(op, "Dropout") || !strcmp(op, "Constant"))
        return;
    for (size_t a = 0; a < n->n_attribute; a++)
        if (n->attribute[a]->g || n->attribute[a]->n_graphs)
            return;
    int nin, nout;
    const int *ins = oq_graph_node_inputs(rw->g, node, &nin);
    const int *outs = oq_graph_node_outputs(rw->g, node, &nout);
    bool any = false;
    for (int s = 0; s < nin; s++) {
        if (ins[s] < 0)
            continue;
        if (!rw->cderived[ins[s]])
            return;
        any = true;
    }
    for (int s = 0; any && s < nout; s++)
        if (outs[s] >= 0)
            rw->cderived[outs[s]] = true;
}

bool oq_rw_is_unreadable_const(const oq_rw *rw, int v) {
    return v >= 0 && v < rw->n_values && rw->cderived[v] && !oq_rw_is_const(rw, v);
}

/* Integer list from input slot (an int64 initializer) or attribute. */
static bool int_list(const oq_rw *rw, int node, int slot, const char *attr, int64_t *out, int *n) {
    const Onnx__NodeProto *nd = rw->nodes[node];
    int v = oq_rw_input(rw, node, slot);
    *n = 0;
    if (v >= 0) {
        oq_tensor *t = NULL;
        oq_error e = {0};
        const oq_value *val = oq_graph_value(rw->g, v);
        if (oq_tensor_from_proto(val->tensor, oq_model_base_dir(rw->m), 0, &t, &e) != OQ_OK)
            return false;
        bool ok = t->dtype == OQ_DTYPE_INT64 && t->count <= OQ_MAX_RANK;
        for (size_t i = 0; ok && i < t->count; i++)
            out[(*n)++] = ((const int64_t *)t->data)[i];
        oq_tensor_free(t);
        return ok;
    }
    const int64_t *a = NULL;
    size_t cnt = 0;
    oq_error e = {0};
    if (attr && oq_node_attr_ints(nd, attr, &a, &cnt, &e) != OQ_OK)
        return false;
    if (cnt > OQ_MAX_RANK)
        return false;
    for (size_t i = 0; i < cnt; i++)
        out[(*n)++] = a[i];
    return true;
}

bool oq_rw_const_shape(const oq_rw *rw, int v, int *rank, int64_t *dims) {
    if (v < 0 || v >= rw->n_values)
        return false;
    if (is_init(rw, v)) {
        const Onnx__TensorProto *tp = oq_graph_value(rw->g, v)->tensor;
        if (tp->n_dims > OQ_MAX_RANK)
            return false;
        *rank = (int)tp->n_dims;
        for (size_t d = 0; d < tp->n_dims; d++)
            dims[d] = tp->dims[d];
        return true;
    }
    int node = rw->fold[v];
    if (node < 0)
        return false;
    int r;
    int64_t in[OQ_MAX_RANK], list[OQ_MAX_RANK];
    if (!oq_rw_const_shape(rw, oq_rw_input(rw, node, 0), &r, in))
        return false;
    int64_t count = 1;
    for (int d = 0; d < r; d++)
        count *= in[d];
    const Onnx__NodeProto *n = rw->nodes[node];
    int nl = 0;
    oq_error e = {0};
    if (oq_node_is_onnx_op(n, "Reshape")) {
        /* Reshape-5: 0 copies the input dim, one -1 is inferred. */
        if (!int_list(rw, node, 1, NULL, list, &nl))
            return false;
        int64_t known = 1;
        int infer = -1;
        for (int d = 0; d < nl; d++) {
            dims[d] = list[d] == 0 && d < r ? in[d] : list[d];
            if (dims[d] == -1) {
                if (infer >= 0)
                    return false;
                infer = d;
            } else if (dims[d] < 0) {
                return false;
            } else {
                known *= dims[d];
            }
        }
        if (infer >= 0)
            dims[infer] = known ? count / known : 0;
        *rank = nl;
    } else if (oq_node_is_onnx_op(n, "Flatten")) {
        int64_t axis = 1;
        oq_node_attr_int(n, "axis", 1, &axis, &e);
        if (axis < 0)
            axis += r;
        if (axis < 0 || axis > r)
            return false;
        int64_t a = 1;
        for (int d = 0; d < axis; d++)
            a *= in[d];
        dims[0] = a;
        dims[1] = a ? count / a : 0;
        *rank = 2;
    } else {
        bool sq = oq_node_is_onnx_op(n, "Squeeze");
        /* axes: an input from opset 13, an attribute before. */
        bool ok = rw->opset >= 13 ? int_list(rw, node, 1, NULL, list, &nl)
                                  : int_list(rw, node, -1, "axes", list, &nl);
        if (!ok)
            return false;
        int out_r = sq ? (nl ? r - nl : 0) : r + nl;
        if (sq && !nl)
            for (int d = 0; d < r; d++)
                out_r += in[d] != 1;
        if (out_r < 0 || out_r > OQ_MAX_RANK)
            return false;
        bool hit[OQ_MAX_RANK] = {false};
        for (int k = 0; k < nl; k++) {
            int64_t a = list[k] < 0 ? list[k] + (sq ? r : out_r) : list[k];
            if (a < 0 || a >= (sq ? r : out_r))
                return false;
            hit[a] = true;
        }
        int o = 0, i = 0;
        if (sq) {
            for (i = 0; i < r; i++)
                if (!(nl ? hit[i] : in[i] == 1))
                    dims[o++] = in[i];
        } else {
            for (o = 0; o < out_r; o++)
                dims[o] = hit[o] ? 1 : in[i++];
        }
        *rank = out_r;
    }
    int64_t c2 = 1;
    for (int d = 0; d < *rank; d++)
        c2 *= dims[d];
    return c2 == count;
}

oq_status oq_rw_open(oq_rw *rw, oq_model *m, const oq_quant_config *cfg, oq_error *err) {
    memset(rw, 0, sizeof *rw);
    rw->m = m;
    rw->cfg = cfg;
    Onnx__ModelProto *mp = oq_model_proto(m);
    if (!mp || !mp->graph)
        return oq_err(err, OQ_EMODEL, "rewrite: the model has no graph");
    rw->gp = mp->graph;
    oq_status st = oq_graph_new(m, &rw->g, err);
    if (st == OQ_OK)
        st = oq_namer_new(m, &rw->nm, err);
    if (st != OQ_OK) {
        oq_rw_close(rw);
        return st;
    }
    rw->opset = oq_graph_opset(rw->g, "");
    rw->n_nodes = oq_graph_node_count(rw->g);
    rw->n_values = oq_graph_value_count(rw->g);
    rw->nodes = calloc((size_t)rw->n_nodes + 1, sizeof *rw->nodes);
    rw->vtype = calloc((size_t)rw->n_values + 1, sizeof *rw->vtype);
    rw->vnames = calloc((size_t)rw->n_values + 1, sizeof *rw->vnames);
    rw->fold = malloc(((size_t)rw->n_values + 1) * sizeof *rw->fold);
    rw->cderived = calloc((size_t)rw->n_values + 1, sizeof *rw->cderived);
    if (!rw->nodes || !rw->vtype || !rw->vnames || !rw->fold || !rw->cderived) {
        oq_rw_close(rw);
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory for %d nodes", rw->n_nodes);
    }
    for (int i = 0; i < rw->n_nodes; i++)
        rw->nodes[i] = oq_graph_node(rw->g, i);
    for (int v = 0; v < rw->n_values; v++) {
        const oq_value *val = oq_graph_value(rw->g, v);
        rw->fold[v] = -1;
        rw->cderived[v] = oq_value_is_constant(val);
        rw->vtype[v] = oq_value_elem_type(val);
        if (!(rw->vnames[v] = strdup(val->name ? val->name : ""))) {
            oq_rw_close(rw);
            return oq_err(err, OQ_ENOMEM, "rewrite: out of memory copying names");
        }
    }
    int n_topo;
    const int *topo = oq_graph_topo_order(rw->g, &n_topo);
    for (int k = 0; k < n_topo; k++) {
        int nout;
        const int *outs = oq_graph_node_outputs(rw->g, topo[k], &nout);
        for (int s = 0; s < nout; s++)
            if (outs[s] >= 0 && !rw->vtype[outs[s]])
                rw->vtype[outs[s]] = infer_out_type(rw, topo[k], s);
        mark_fold(rw, topo[k]);
        mark_cderived(rw, topo[k]);
    }
    return OQ_OK;
}

void oq_rw_close(oq_rw *rw) {
    if (!rw)
        return;
    oq_graph_free(rw->g);
    oq_namer_free(rw->nm);
    free(rw->nodes);
    free(rw->vtype);
    for (int v = 0; rw->vnames && v < rw->n_values; v++)
        free(rw->vnames[v]);
    free(rw->vnames);
    free(rw->fold);
    free(rw->cderived);
    memset(rw, 0, sizeof *rw);
}

oq_status oq_rw_finish(oq_rw *rw, oq_error *err) {
    /* ONNX requires a topologically sorted node list; inserted nodes were
     * appended, so sort with a view of the edited graph, then check again. */
    oq_status st = oq_graph_refresh(rw->g, err);
    if (st == OQ_OK)
        st = oq_edit_sort_nodes(rw->m, rw->g, err);
    if (st == OQ_OK)
        st = oq_graph_refresh(rw->g, err);
    if (st != OQ_OK)
        oq_err_prefix(err, "rewrite produced an invalid graph: ");
    return st;
}

const char *oq_rw_value_name(const oq_rw *rw, int v) {
    return v >= 0 && v < rw->n_values ? rw->vnames[v] : "";
}

bool oq_rw_value_is_float(const oq_rw *rw, int v) {
    return v >= 0 && v < rw->n_values && rw->vtype[v] == OQ_DTYPE_FLOAT;
}

int oq_rw_input(const oq_rw *rw, int node, int slot) {
    int n;
    const int *ins = oq_graph_node_inputs(rw->g, node, &n);
    return slot >= 0 && slot < n ? ins[slot] : -1;
}

int oq_rw_output(const oq_rw *rw, int node, int slot) {
    int n;
    const int *outs = oq_graph_node_outputs(rw->g, node, &n);
    return slot >= 0 && slot < n ? outs[slot] : -1;
}

bool oq_rw_is_const(const oq_rw *rw, int v) {
    return v >= 0 && v < rw->n_values && (is_init(rw, v) || rw->fold[v] >= 0);
}

oq_status oq_rw_const_tensor(const oq_rw *rw, int v, oq_tensor **out, oq_error *err) {
    *out = NULL;
    const char *name = oq_rw_value_name(rw, v);
    if (!oq_rw_is_const(rw, v))
        return oq_err(err, OQ_EINVAL, "rewrite: '%s' is not a constant", name);
    int root = v;
    while (rw->fold[root] >= 0)
        root = oq_rw_input(rw, rw->fold[root], 0);
    const Onnx__TensorProto *tp = oq_graph_value(rw->g, root)->tensor;
    if (!tp->has_data_type || tp->data_type != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EUNSUPPORTED, "rewrite: constant '%s' is %s, float expected", name,
                      oq_dtype_name(tp->data_type));
    oq_status st = oq_tensor_from_proto(tp, oq_model_base_dir(rw->m), 0, out, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "rewrite: constant '%s': ", name);
        return st;
    }
    if (root != v) {
        int rank;
        int64_t dims[OQ_MAX_RANK];
        if (!oq_rw_const_shape(rw, v, &rank, dims)) {
            oq_tensor_free(*out);
            *out = NULL;
            return oq_err(err, OQ_EINTERNAL, "rewrite: no shape for folded constant '%s'", name);
        }
        (*out)->rank = rank;
        memcpy((*out)->dims, dims, sizeof dims);
    }
    return OQ_OK;
}

oq_status oq_rw_drop_dead_folds(oq_rw *rw, oq_error *err) {
    for (bool again = true; again;) {
        again = false;
        for (size_t k = rw->gp->n_node; k-- > 0;) {
            Onnx__NodeProto *n = rw->gp->node[k];
            int node = -1;
            for (int i = 0; i < rw->n_nodes && node < 0; i++)
                if (rw->nodes[i] == n)
                    node = i;
            int out = node >= 0 ? oq_rw_output(rw, node, 0) : -1;
            if (out < 0 || rw->fold[out] != node)
                continue;
            const char *name = n->output[0];
            bool used = false;
            for (size_t j = 0; j < rw->gp->n_node && !used; j++)
                for (size_t s = 0; s < rw->gp->node[j]->n_input && !used; s++)
                    used = !strcmp(rw->gp->node[j]->input[s], name);
            for (size_t j = 0; j < rw->gp->n_output && !used; j++)
                used = !strcmp(rw->gp->output[j]->name, name);
            if (used)
                continue;
            char *ins[OQ_MAX_RANK] = {0};
            size_t n_in = 0;
            for (size_t s = 0; s < n->n_input && n_in < OQ_MAX_RANK; s++)
                if (n->input[s] && *n->input[s] && !(ins[n_in++] = strdup(n->input[s])))
                    return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
            rw->fold[out] = -1;
            oq_status st = oq_edit_remove_node(rw->m, rw->gp, k, err);
            if (st == OQ_OK)
                st = oq_rw_drop_unused_inits(rw, ins, n_in, err);
            for (size_t s = 0; s < n_in; s++)
                free(ins[s]);
            if (st != OQ_OK)
                return st;
            again = true;
        }
    }
    return OQ_OK;
}

/* ---- decisions ----------------------------------------------------------- */

oq_status oq_rw_result_init(oq_rw *rw, oq_rewrite_result *res, oq_error *err) {
    memset(res, 0, sizeof *res);
    if (rw->n_nodes == 0)
        return OQ_OK;
    res->nodes = calloc((size_t)rw->n_nodes, sizeof *res->nodes);
    if (!res->nodes)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory for %d decisions", rw->n_nodes);
    res->n_nodes = (size_t)rw->n_nodes;
    for (int i = 0; i < rw->n_nodes; i++) {
        const Onnx__NodeProto *n = rw->nodes[i];
        char idx[32];
        snprintf(idx, sizeof idx, "#%d", i);
        res->nodes[i].node = strdup(n->name && *n->name ? n->name : idx);
        res->nodes[i].op_type = strdup(n->op_type ? n->op_type : "");
        if (!res->nodes[i].node || !res->nodes[i].op_type)
            return oq_err(err, OQ_ENOMEM, "rewrite: out of memory for decisions");
    }
    return OQ_OK;
}

oq_status oq_rw_decide(oq_rewrite_result *res, int node, bool quantized, bool excluded,
                       oq_error *err, const char *fmt, ...) {
    if (!res || node < 0 || (size_t)node >= res->n_nodes)
        return OQ_OK;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    oq_node_decision *d = &res->nodes[node];
    char *r = strdup(buf);
    if (!r)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory for a decision");
    free(d->reason);
    d->reason = r;
    if (d->quantized)
        res->n_quantized--;
    d->quantized = quantized;
    if (quantized)
        res->n_quantized++;
    if (excluded)
        res->n_excluded++;
    return OQ_OK;
}

bool oq_rw_pattern_match(const char *pattern, const char *name) {
    if (!pattern || !name)
        return false;
    return strcmp(pattern, name) == 0 || fnmatch(pattern, name, 0) == 0;
}

bool oq_rw_excluded(const oq_rw *rw, int node, char *buf, size_t len) {
    const Onnx__NodeProto *n = rw->nodes[node];
    const char *op = n->op_type ? n->op_type : "";
    for (size_t i = 0; i < rw->cfg->n_exclude_op_types; i++)
        if (rw->cfg->exclude_op_types[i] && !strcmp(rw->cfg->exclude_op_types[i], op)) {
            snprintf(buf, len, "excluded: op type %s is in exclude_op_types", op);
            return true;
        }
    const char *name = n->name ? n->name : "";
    if (!*name)
        return false;
    for (size_t i = 0; i < rw->cfg->n_exclude_nodes; i++) {
        const char *p = rw->cfg->exclude_nodes[i];
        if (!p)
            continue;
        if (!strcmp(p, name)) {
            snprintf(buf, len, "excluded: node name listed in exclude_nodes");
            return true;
        }
        if (fnmatch(p, name, 0) == 0) {
            snprintf(buf, len, "excluded: node name matches exclude_nodes pattern '%s'", p);
            return true;
        }
    }
    return false;
}

bool oq_rw_op_selected(const oq_quant_config *cfg, const char *op_type,
                       const char *const *def, size_t n_def) {
    if (cfg->n_op_types == 0) {
        for (size_t i = 0; i < n_def; i++)
            if (!strcmp(def[i], op_type))
                return true;
        return false;
    }
    for (size_t i = 0; i < cfg->n_op_types; i++)
        if (cfg->op_types[i] && !strcmp(cfg->op_types[i], op_type))
            return true;
    return false;
}

/* ---- emitters ------------------------------------------------------------ */

oq_status oq_rw_name(oq_rw *rw, const char *prefix, const char *suffix, const char **out,
                     oq_error *err) {
    size_t a = strlen(prefix), b = suffix ? strlen(suffix) : 0, cap;
    if (!oq_add_size(a, b, &cap) || !oq_add_size(cap, 2, &cap))
        return oq_err(err, OQ_ELIMIT, "rewrite: name too long");
    char *buf = malloc(cap);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory making a name");
    snprintf(buf, cap, "%s%s", *prefix ? prefix : "t", suffix ? suffix : "");
    oq_status st = oq_namer_make(rw->nm, buf, out, err);
    free(buf);
    return st;
}

oq_status oq_rw_add_init(oq_rw *rw, const char *prefix, const char *suffix, const oq_tensor *t,
                         const char **name, oq_error *err) {
    oq_status st = oq_rw_name(rw, prefix, suffix, name, err);
    if (st == OQ_OK)
        st = oq_edit_add_initializer(rw->m, rw->gp, *name, t, err);
    return st;
}

static oq_status store_int(oq_tensor *t, size_t i, int32_t v, oq_error *err) {
    switch (t->dtype) {
    case OQ_DTYPE_INT8: ((int8_t *)t->data)[i] = (int8_t)v; return OQ_OK;
    case OQ_DTYPE_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)v; return OQ_OK;
    case OQ_DTYPE_INT16: ((int16_t *)t->data)[i] = (int16_t)v; return OQ_OK;
    case OQ_DTYPE_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)v; return OQ_OK;
    case OQ_DTYPE_INT32: ((int32_t *)t->data)[i] = v; return OQ_OK;
    case OQ_DTYPE_INT4:
    case OQ_DTYPE_UINT4: {
        /* Two per byte, low nibble first (ONNX int4 packing). */
        uint8_t *b = (uint8_t *)t->data + i / 2, nib = (uint8_t)(v & 0xF);
        *b = (uint8_t)(i % 2 ? (*b & 0x0F) | (nib << 4) : (*b & 0xF0) | nib);
        return OQ_OK;
    }
    default:
        return oq_err(err, OQ_EUNSUPPORTED, "rewrite: no zero point of type %s",
                      oq_dtype_name(t->dtype));
    }
}

oq_status oq_rw_add_qparams(oq_rw *rw, const char *base, const oq_qparams *p, size_t n,
                            oq_dtype qtype, bool vector, const char **scale, const char **zp,
                            oq_error *err) {
    int64_t dims[1] = {(int64_t)n};
    int rank = vector ? 1 : 0;
    if (!vector && n != 1)
        return oq_err(err, OQ_EINTERNAL, "rewrite: %zu parameters for a scalar", n);
    oq_tensor *s = NULL, *z = NULL;
    oq_status st = oq_tensor_new(OQ_DTYPE_FLOAT, rank, dims, 0, &s, err);
    if (st == OQ_OK)
        st = oq_tensor_new(qtype, rank, dims, 0, &z, err);
    for (size_t i = 0; st == OQ_OK && i < n; i++) {
        ((float *)s->data)[i] = p[i].scale;
        st = store_int(z, i, p[i].zero_point, err);
    }
    if (st == OQ_OK)
        st = oq_rw_add_init(rw, base, "_scale", s, scale, err);
    if (st == OQ_OK)
        st = oq_rw_add_init(rw, base, "_zero_point", z, zp, err);
    oq_tensor_free(s);
    oq_tensor_free(z);
    return st;
}

oq_status oq_rw_add_node(oq_rw *rw, const char *op_type, const char *domain, const char *prefix,
                         const char *const *inputs, size_t n_in, const char *const *outputs,
                         size_t n_out, Onnx__NodeProto **out, oq_error *err) {
    const char *name;
    oq_status st = oq_rw_name(rw, prefix, NULL, &name, err);
    if (st == OQ_OK)
        st = oq_edit_insert_node(rw->m, rw->gp, OQ_EDIT_APPEND, op_type, domain, name, inputs,
                                 n_in, outputs, n_out, out, err);
    return st;
}

oq_status oq_rw_add_dq(oq_rw *rw, const char *x, const char *scale, const char *zp, int axis,
                       const char *base, const char **out, oq_error *err) {
    const char *y, *node_prefix;
    oq_status st = oq_rw_name(rw, base, "_dequantized", &y, err);
    if (st != OQ_OK)
        return st;
    st = oq_rw_name(rw, base, "_DequantizeLinear", &node_prefix, err);
    if (st != OQ_OK)
        return st;
    const char *ins[3] = {x, scale, zp};
    Onnx__NodeProto *n;
    st = oq_edit_insert_node(rw->m, rw->gp, OQ_EDIT_APPEND, "DequantizeLinear", NULL, node_prefix,
                             ins, 3, &y, 1, &n, err);
    /* ONNX DequantizeLinear-13: axis only matters for 1-D scales; leave it
     * out for per-tensor ones. */
    if (st == OQ_OK && axis >= 0)
        st = oq_edit_set_attr_int(rw->m, n, "axis", axis, err);
    if (st == OQ_OK) {
        rw->n_dq++;
        *out = y;
    }
    return st;
}

oq_status oq_rw_add_q(oq_rw *rw, const char *x, const char *scale, const char *zp,
                      const char *base, const char **out, oq_error *err) {
    const char *y, *node_prefix;
    oq_status st = oq_rw_name(rw, base, "_quantized", &y, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, base, "_QuantizeLinear", &node_prefix, err);
    if (st != OQ_OK)
        return st;
    /* The zero point is always given: it fixes the output type, and ORT's
     * fusions (QDQS8ToU8, ReluQuantFusion) look for an explicit one. */
    const char *ins[3] = {x, scale, zp};
    st = oq_edit_insert_node(rw->m, rw->gp, OQ_EDIT_APPEND, "QuantizeLinear", NULL, node_prefix,
                             ins, 3, &y, 1, NULL, err);
    if (st == OQ_OK) {
        rw->n_q++;
        *out = y;
    }
    return st;
}

/* ---- weights ------------------------------------------------------------- */

void oq_rw_weight_clear(oq_rw_weight *w) {
    if (!w)
        return;
    free(w->src);
    free(w->p);
    memset(w, 0, sizeof *w);
}

oq_status oq_rw_weight_params(const char *src, const oq_tensor *w, int axis, oq_dtype qtype,
                              bool symmetric, bool reduce_range, oq_rw_weight *out, oq_error *err) {
    memset(out, 0, sizeof *out);
    out->src = strdup(src);
    if (!out->src)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    out->axis = axis;
    out->qtype = qtype;
    oq_status st = oq_weight_qparams(w, axis, qtype, symmetric, reduce_range, &out->p, &out->n, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "weight '%s': ", src);
        oq_rw_weight_clear(out);
    }
    return st;
}

oq_status oq_rw_weight_emit(oq_rw *rw, const oq_tensor *w, oq_rw_weight *wt, oq_error *err) {
    oq_tensor *q = NULL;
    oq_status st = oq_quantize_tensor(w, wt->axis, wt->p, wt->n, wt->qtype, &q, err);
    if (st == OQ_OK)
        st = oq_rw_add_init(rw, wt->src, "_quantized", q, &wt->q_name, err);
    oq_tensor_free(q);
    if (st == OQ_OK)
        st = oq_rw_add_qparams(rw, wt->src, wt->p, wt->n, wt->qtype, wt->axis >= 0,
                               &wt->scale_name, &wt->zp_name, err);
    if (st != OQ_OK)
        oq_err_prefix(err, "weight '%s': ", wt->src);
    return st;
}

oq_status oq_rw_drop_unused_inits(oq_rw *rw, char *const *names, size_t n, oq_error *err) {
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        if (!name)
            continue;
        bool used = false;
        for (size_t k = 0; k < rw->gp->n_node && !used; k++) {
            const Onnx__NodeProto *nd = rw->gp->node[k];
            for (size_t s = 0; s < nd->n_input && !used; s++)
                used = nd->input[s] && !strcmp(nd->input[s], name);
            /* A subgraph may read it from outer scope: keep it then. */
            for (size_t a = 0; a < nd->n_attribute && !used; a++)
                used = nd->attribute[a]->g || nd->attribute[a]->n_graphs;
        }
        for (size_t k = 0; k < rw->gp->n_output && !used; k++)
            used = rw->gp->output[k]->name && !strcmp(rw->gp->output[k]->name, name);
        if (used)
            continue;
        bool present = false;
        for (size_t k = 0; k < rw->gp->n_initializer && !present; k++)
            present = rw->gp->initializer[k]->name && !strcmp(rw->gp->initializer[k]->name, name);
        if (!present)
            continue;
        oq_status st = oq_edit_remove_initializer(rw->m, rw->gp, name, err);
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

oq_status oq_rw_check_qtypes(const oq_rw *rw, oq_dtype act, oq_dtype weight, bool per_channel,
                             oq_error *err) {
    oq_dtype types[2] = {act, weight};
    for (int i = 0; i < 2; i++) {
        oq_dtype t = types[i];
        if (t == OQ_DTYPE_UNDEFINED)
            continue;
        int32_t lo, hi;
        oq_status st = oq_qtype_range(t, false, &lo, &hi, err);
        if (st != OQ_OK)
            return st;
        /* QuantizeLinear/DequantizeLinear take 8-bit types from opset 10,
         * 16-bit and 4-bit ones only from opset 21. */
        bool eight = t == OQ_DTYPE_INT8 || t == OQ_DTYPE_UINT8;
        if (!eight && t != OQ_DTYPE_INT32 && rw->opset < 21)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "%s %s needs QuantizeLinear/DequantizeLinear of opset 21; the model "
                          "imports opset %lld",
                          i ? "weight type" : "activation type", oq_dtype_name(t),
                          (long long)rw->opset);
    }
    if (rw->opset < 10)
        return oq_err(err, OQ_EUNSUPPORTED,
                      "QuantizeLinear/DequantizeLinear need opset 10 (13 for per-channel); the "
                      "model imports opset %lld: prepare it first",
                      (long long)rw->opset);
    if (per_channel && rw->opset < 13)
        return oq_err(err, OQ_EUNSUPPORTED,
                      "per-channel DequantizeLinear needs opset 13; the model imports opset "
                      "%lld: prepare it first",
                      (long long)rw->opset);
    return OQ_OK;
}

/* ---- public helpers ------------------------------------------------------ */

void oq_rewrite_result_free(oq_rewrite_result *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n_nodes; i++) {
        free(r->nodes[i].node);
        free(r->nodes[i].op_type);
        free(r->nodes[i].reason);
    }
    free(r->nodes);
    memset(r, 0, sizeof *r);
}

json_t *oq_rewrite_result_to_json(const oq_rewrite_result *r) {
    json_t *j = json_object();
    if (!j || !r)
        return j;
    json_object_set_new(j, "quantized", json_integer(r->n_quantized));
    json_object_set_new(j, "excluded", json_integer(r->n_excluded));
    json_object_set_new(j, "quantize_linear_added", json_integer(r->n_quantize_linear));
    json_object_set_new(j, "dequantize_linear_added", json_integer(r->n_dequantize_linear));
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_nodes; i++) {
        const oq_node_decision *d = &r->nodes[i];
        json_t *o = json_object();
        json_object_set_new(o, "node", json_string(d->node ? d->node : ""));
        json_object_set_new(o, "op_type", json_string(d->op_type ? d->op_type : ""));
        json_object_set_new(o, "quantized", json_boolean(d->quantized));
        json_object_set_new(o, "reason", json_string(d->reason ? d->reason : ""));
        json_array_append_new(arr, o);
    }
    json_object_set_new(j, "decisions", arr);
    return j;
}

void oq_strings_free(char **s, size_t n) {
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}
