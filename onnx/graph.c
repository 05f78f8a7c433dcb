/* graph.c: builds the view per graph: local values, then subgraph views
 * (resolving outer names through their parents, as implicit inputs of the
 * owning node), then node inputs, consumers (CSR) and a stable Kahn order. */
#include "graph.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "strmap.h"

struct oq_graph {
    oq_model *model;
    Onnx__GraphProto *proto;
    oq_graph *parent;
    int owner_node;
    int depth;

    oq_strmap *names; /* name -> value index; keys borrowed from the model */
    oq_value *values;
    int n_values;
    size_t cap_values;

    int n_nodes;
    int *in_start, *in_vals;   /* CSR: explicit inputs per node */
    int *out_start, *out_vals; /* CSR: outputs per node */
    int *imp_start, *imp_vals; /* CSR: implicit (subgraph) inputs per node */
    int *imp_pairs;            /* (node, value) pairs while building */
    size_t n_imp_pairs, cap_imp_pairs;

    int *cons_start, *cons;    /* CSR: consumers per value */
    int *topo;
    int *real_inputs;
    int n_real_inputs;
    int *outputs;
    int n_outputs;

    oq_subgraph *subs;
    int n_subs;
};


/* ---- small helpers ---------------------------------------------------- */

/* calloc of n entries with a checked size; on failure records the error
 * and sets *st (first failure wins), so callers test st once. */
static void *graph_alloc(size_t n, size_t size, oq_status *st, oq_error *err, const char *what) {
    size_t bytes;
    oq_status fail;
    if (!oq_mul_size(n, size, &bytes)) {
        fail = oq_err(err, OQ_ELIMIT, "%s: %zu entries is too many", what, n);
    } else {
        void *p = calloc(1, bytes ? bytes : 1);
        if (p)
            return p;
        fail = oq_err(err, OQ_ENOMEM, "out of memory for %s (%zu entries)", what, n);
    }
    if (*st == OQ_OK)
        *st = fail;
    return NULL;
}

static bool is_default_domain(const char *d) {
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

bool oq_node_is_onnx_op(const Onnx__NodeProto *n, const char *op_type) {
    return n && n->op_type && strcmp(n->op_type, op_type) == 0 && is_default_domain(n->domain);
}

static const char *node_label(const Onnx__NodeProto *n, int index, char *buf, size_t len) {
    const char *op = n && n->op_type ? n->op_type : "?";
    if (n && n->name && *n->name)
        snprintf(buf, len, "node '%s' (%s)", n->name, op);
    else if (index >= 0)
        snprintf(buf, len, "node #%d (%s)", index, op);
    else
        snprintf(buf, len, "an unnamed %s node", op);
    return buf;
}

const char *oq_graph_node_label(const oq_graph *g, int node, char *buf, size_t len) {
    return node_label(oq_graph_node(g, node), node, buf, len);
}

/* What defines value v, for "produced twice" messages. */
static const char *value_origin(const oq_graph *g, const oq_value *v, char *buf, size_t len) {
    switch (v->kind) {
    case OQ_VALUE_INPUT:
        return "a graph input";
    case OQ_VALUE_INITIALIZER:
        return "an initializer";
    case OQ_VALUE_OUTER:
        return "an enclosing graph";
    default:
        return node_label(g->proto->node[v->producer], v->producer, buf, len);
    }
}

static void set_info(oq_value *v, const Onnx__ValueInfoProto *vi) {
    /* First declaration wins, but one with a type beats one without. */
    if (!v->info || (!v->info->type && vi->type))
        v->info = vi;
}

/* ---- values ----------------------------------------------------------- */

static oq_status add_value(oq_graph *g, const char *name, oq_value_kind kind, int *out,
                           oq_error *err) {
    if (g->n_values == INT_MAX)
        return oq_err(err, OQ_ELIMIT, "graph has more than %d values", INT_MAX);
    if ((size_t)g->n_values == g->cap_values) {
        size_t cap, bytes;
        if (!oq_mul_size(g->cap_values ? g->cap_values : 8, 2, &cap) ||
            !oq_mul_size(cap, sizeof(oq_value), &bytes))
            return oq_err(err, OQ_ELIMIT, "graph value table of %d entries cannot grow",
                          g->n_values);
        oq_value *grown = realloc(g->values, bytes);
        if (!grown)
            return oq_err(err, OQ_ENOMEM, "out of memory for %zu graph values", cap);
        g->values = grown;
        g->cap_values = cap;
    }
    int idx = g->n_values;
    oq_status st = oq_strmap_put(g->names, name, idx, err);
    if (st != OQ_OK)
        return st;
    oq_value *v = &g->values[idx];
    memset(v, 0, sizeof *v);
    v->name = name;
    v->kind = kind;
    v->producer = -1;
    v->producer_slot = -1;
    v->graph_input = -1;
    v->graph_output = -1;
    v->initializer = -1;
    v->outer_value = -1;
    g->n_values++;
    *out = idx;
    return OQ_OK;
}

static oq_status add_implicit(oq_graph *g, int node, int value, oq_error *err) {
    if (g->n_imp_pairs + 2 > g->cap_imp_pairs) {
        size_t cap, bytes;
        if (!oq_mul_size(g->cap_imp_pairs ? g->cap_imp_pairs : 8, 2, &cap) ||
            !oq_mul_size(cap, sizeof(int), &bytes))
            return oq_err(err, OQ_ELIMIT, "too many implicit inputs");
        int *grown = realloc(g->imp_pairs, bytes);
        if (!grown)
            return oq_err(err, OQ_ENOMEM, "out of memory for implicit inputs");
        g->imp_pairs = grown;
        g->cap_imp_pairs = cap;
    }
    g->imp_pairs[g->n_imp_pairs++] = node;
    g->imp_pairs[g->n_imp_pairs++] = value;
    return OQ_OK;
}

/* *idx = index of name in g, adding an OUTER entry (and an implicit input
 * on the owning node of every graph crossed) when it comes from an
 * enclosing graph; -1 when nothing defines it. */
static oq_status resolve(oq_graph *g, const char *name, int *idx, oq_error *err) {
    *idx = -1;
    if (oq_strmap_get(g->names, name, idx))
        return OQ_OK;
    if (!g->parent)
        return OQ_OK;
    int pidx;
    oq_status st = resolve(g->parent, name, &pidx, err);
    if (st != OQ_OK || pidx < 0)
        return st;
    int local;
    if ((st = add_value(g, name, OQ_VALUE_OUTER, &local, err)) != OQ_OK)
        return st;
    const oq_value *pv = &g->parent->values[pidx];
    oq_value *v = &g->values[local];
    v->outer_graph = g->parent;
    v->outer_value = pidx;
    v->tensor = pv->tensor;
    v->sparse = pv->sparse;
    v->const_attr = pv->const_attr;
    v->info = pv->info;
    if ((st = add_implicit(g->parent, g->owner_node, pidx, err)) != OQ_OK)
        return st;
    *idx = local;
    return OQ_OK;
}

/* ---- build steps ------------------------------------------------------ */

/* The value attribute of a Constant node, in any of its forms (opset 1:
 * value; 11: sparse_value; 12: value_float(s), value_int(s), value_string(s)). */
static const Onnx__AttributeProto *constant_attr(const Onnx__NodeProto *node) {
    static const char *const names[] = {"value",        "value_float",  "value_floats",
                                        "value_int",    "value_ints",   "value_string",
                                        "value_strings", "sparse_value"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const Onnx__AttributeProto *a = oq_node_attr(node, names[i]);
        if (a)
            return a;
    }
    return NULL;
}

static oq_status index_local_values(oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = g->proto;
    char lbl[256], lbl2[256];
    oq_status st;
    int idx;

    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !*vi->name)
            return oq_err(err, OQ_EMODEL, "graph input %zu has no name", i);
        if (oq_strmap_get(g->names, vi->name, NULL))
            return oq_err(err, OQ_EMODEL, "graph input '%s' is listed twice", vi->name);
        if ((st = add_value(g, vi->name, OQ_VALUE_INPUT, &idx, err)) != OQ_OK)
            return st;
        g->values[idx].graph_input = (int)i;
        set_info(&g->values[idx], vi);
    }

    for (size_t i = 0; i < gp->n_initializer + gp->n_sparse_initializer; i++) {
        bool sparse = i >= gp->n_initializer;
        const Onnx__SparseTensorProto *sp = sparse ? gp->sparse_initializer[i - gp->n_initializer]
                                                   : NULL;
        const Onnx__TensorProto *tp = sparse ? (sp->values) : gp->initializer[i];
        const char *name = tp ? tp->name : NULL;
        if (!name || !*name)
            return oq_err(err, OQ_EMODEL, "%sinitializer %zu has no name", sparse ? "sparse " : "",
                          sparse ? i - gp->n_initializer : i);
        if (oq_strmap_get(g->names, name, &idx)) {
            oq_value *v = &g->values[idx];
            /* An input that also has an initializer: a constant (IR 3 lists
             * every initializer as an input; later IRs call it a default). */
            if (v->kind != OQ_VALUE_INPUT)
                return oq_err(err, OQ_EMODEL, "initializer '%s' is defined twice", name);
        } else if ((st = add_value(g, name, OQ_VALUE_INITIALIZER, &idx, err)) != OQ_OK) {
            return st;
        }
        oq_value *v = &g->values[idx];
        v->kind = OQ_VALUE_INITIALIZER;
        if (sparse) {
            v->sparse = sp;
        } else {
            v->tensor = tp;
            v->initializer = (int)i;
        }
    }

    for (int n = 0; n < g->n_nodes; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        bool is_const = oq_node_is_onnx_op(node, "Constant");
        for (size_t s = 0; s < node->n_output; s++) {
            const char *name = node->output[s];
            if (!name || !*name)
                continue; /* an omitted optional output */
            if (oq_strmap_get(g->names, name, &idx))
                return oq_err(err, OQ_EMODEL, "value '%s' is produced twice: by %s and by %s",
                              name, value_origin(g, &g->values[idx], lbl, sizeof lbl),
                              node_label(node, n, lbl2, sizeof lbl2));
            if ((st = add_value(g, name, is_const ? OQ_VALUE_CONSTANT : OQ_VALUE_NODE, &idx,
                                err)) != OQ_OK)
                return st;
            oq_value *v = &g->values[idx];
            v->producer = n;
            v->producer_slot = (int)s;
            if (is_const && s == 0) {
                v->const_attr = constant_attr(node);
                const Onnx__AttributeProto *a = v->const_attr;
                if (a && strcmp(a->name, "value") == 0 &&
                    oq_attr_type(a) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)
                    v->tensor = a->t;
            }
        }
    }

    /* Declared types of local values; outer ones are copied on resolution. */
    for (size_t i = 0; i < gp->n_output + gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi =
            i < gp->n_output ? gp->output[i] : gp->value_info[i - gp->n_output];
        if (vi->name && oq_strmap_get(g->names, vi->name, &idx))
            set_info(&g->values[idx], vi);
    }
    return OQ_OK;
}

static oq_status graph_build(oq_graph *g, oq_error *err);

static oq_status build_subgraphs(oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = g->proto;
    size_t total = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        for (size_t a = 0; a < node->n_attribute; a++) {
            const Onnx__AttributeProto *at = node->attribute[a];
            Onnx__AttributeProto__AttributeType t = oq_attr_type(at);
            if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH && at->g)
                total++;
            else if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS &&
                     !oq_add_size(total, at->n_graphs, &total))
                return oq_err(err, OQ_ELIMIT, "too many subgraphs");
        }
    }
    if (total == 0)
        return OQ_OK;
    if (total > INT_MAX)
        return oq_err(err, OQ_ELIMIT, "graph has %zu subgraphs", total);
    if (g->depth + 1 > OQ_GRAPH_MAX_NESTING)
        return oq_err(err, OQ_ELIMIT, "subgraphs are nested more than %d deep",
                      OQ_GRAPH_MAX_NESTING);
    oq_status ast = OQ_OK;
    g->subs = graph_alloc(total, sizeof *g->subs, &ast, err, "subgraph list");
    if (ast != OQ_OK)
        return ast;

    char lbl[256];
    for (int n = 0; n < g->n_nodes; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        for (size_t a = 0; a < node->n_attribute; a++) {
            const Onnx__AttributeProto *at = node->attribute[a];
            Onnx__AttributeProto__AttributeType t = oq_attr_type(at);
            size_t count = t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH ? (at->g ? 1 : 0)
                           : t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS ? at->n_graphs
                                                                               : 0;
            for (size_t k = 0; k < count; k++) {
                Onnx__GraphProto *sub =
                    t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH ? at->g : at->graphs[k];
                oq_graph *child = calloc(1, sizeof *child);
                if (!child)
                    return oq_err(err, OQ_ENOMEM, "out of memory for a subgraph view");
                oq_subgraph *s = &g->subs[g->n_subs++];
                s->node = n;
                s->attr = at->name ? at->name : "";
                s->attr_index = t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH ? -1 : (int)k;
                s->graph = child;
                child->model = g->model;
                child->proto = sub;
                child->parent = g;
                child->owner_node = n;
                child->depth = g->depth + 1;
                oq_status st = graph_build(child, err);
                if (st != OQ_OK) {
                    oq_err_prefix(err, "subgraph '%s' of %s: ", s->attr,
                                  node_label(node, n, lbl, sizeof lbl));
                    return st;
                }
            }
        }
    }
    return OQ_OK;
}

static oq_status resolve_inputs(oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = g->proto;
    const char *scope = g->parent ? ", initializer or enclosing graph" : " or initializer";
    char lbl[256];
    for (int n = 0; n < g->n_nodes; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        for (size_t s = 0; s < node->n_input; s++) {
            const char *name = node->input[s];
            int idx = -1;
            if (name && *name) {
                oq_status st = resolve(g, name, &idx, err);
                if (st != OQ_OK)
                    return st;
                if (idx < 0)
                    return oq_err(err, OQ_EMODEL,
                                  "%s input %zu '%s' is not produced by any node, graph input%s",
                                  node_label(node, n, lbl, sizeof lbl), s, name, scope);
            }
            g->in_vals[g->in_start[n] + (int)s] = idx;
        }
    }
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        if (!vi->name || !*vi->name)
            return oq_err(err, OQ_EMODEL, "graph output %zu has no name", i);
        int idx;
        oq_status st = resolve(g, vi->name, &idx, err);
        if (st != OQ_OK)
            return st;
        if (idx < 0)
            return oq_err(err, OQ_EMODEL,
                          "graph output '%s' is not produced by any node, graph input%s",
                          vi->name, scope);
        g->outputs[i] = idx;
        if (g->values[idx].graph_output < 0)
            g->values[idx].graph_output = (int)i;
        set_info(&g->values[idx], vi);
    }
    return OQ_OK;
}

static int cmp_pair(const void *a, const void *b) {
    const int *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* Implicit (node, value) pairs -> CSR, sorted and without duplicates
 * (then_branch and else_branch may both read the same outer value). */
static oq_status build_implicit(oq_graph *g, oq_error *err) {
    size_t np = g->n_imp_pairs / 2;
    oq_status st = OQ_OK;
    g->imp_start = graph_alloc((size_t)g->n_nodes + 1, sizeof(int), &st, err, "implicit inputs");
    g->imp_vals = graph_alloc(np, sizeof(int), &st, err, "implicit inputs");
    if (st != OQ_OK)
        return st;
    if (np)
        qsort(g->imp_pairs, np, 2 * sizeof(int), cmp_pair);
    int k = 0;
    size_t p = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        g->imp_start[n] = k;
        int last = -1;
        for (; p < np && g->imp_pairs[2 * p] == n; p++) {
            int v = g->imp_pairs[2 * p + 1];
            if (v != last)
                g->imp_vals[k++] = v;
            last = v;
        }
    }
    g->imp_start[g->n_nodes] = k;
    free(g->imp_pairs);
    g->imp_pairs = NULL;
    g->n_imp_pairs = g->cap_imp_pairs = 0;
    return OQ_OK;
}

static oq_status build_consumers(oq_graph *g, oq_error *err) {
    int nv = g->n_values;
    oq_status st = OQ_OK;
    int *stamp = graph_alloc((size_t)nv, sizeof(int), &st, err, "consumer table");
    g->cons_start = graph_alloc((size_t)nv + 1, sizeof(int), &st, err, "consumer table");
    if (st != OQ_OK) {
        free(stamp);
        return st;
    }
    /* stamp[v] = last node counted for v, so a node is listed once per value. */
    for (int pass = 0; pass < 2; pass++) {
        for (int v = 0; v < nv; v++)
            stamp[v] = -1;
        for (int n = 0; n < g->n_nodes; n++) {
            for (int half = 0; half < 2; half++) {
                const int *vals = half ? g->imp_vals + g->imp_start[n] : g->in_vals + g->in_start[n];
                int cnt = half ? g->imp_start[n + 1] - g->imp_start[n]
                               : g->in_start[n + 1] - g->in_start[n];
                for (int i = 0; i < cnt; i++) {
                    int v = vals[i];
                    if (v < 0)
                        continue;
                    if (pass == 0 && !half)
                        g->values[v].n_uses++;
                    if (stamp[v] == n)
                        continue;
                    stamp[v] = n;
                    if (pass == 0)
                        g->values[v].n_consumers++;
                    else
                        g->cons[g->cons_start[v] + g->values[v].n_consumers++] = n;
                }
            }
        }
        if (pass == 0) {
            size_t total = 0;
            for (int v = 0; v < nv; v++) {
                g->cons_start[v] = (int)total;
                total += (size_t)g->values[v].n_consumers;
                g->values[v].n_consumers = 0;
            }
            if (total > INT_MAX) {
                free(stamp);
                return oq_err(err, OQ_ELIMIT, "graph has %zu consumer edges", total);
            }
            g->cons_start[nv] = (int)total;
            g->cons = graph_alloc(total, sizeof(int), &st, err, "consumer table");
            if (st != OQ_OK) {
                free(stamp);
                return st;
            }
        }
    }
    free(stamp);
    for (int v = 0; v < nv; v++)
        g->values[v].consumers = g->cons + g->cons_start[v];
    return OQ_OK;
}

/* First not-yet-ordered node producing an (explicit or implicit) input of n. */
static int pending_pred(const oq_graph *g, int n, const bool *done, int *via) {
    for (int half = 0; half < 2; half++) {
        const int *vals = half ? g->imp_vals + g->imp_start[n] : g->in_vals + g->in_start[n];
        int cnt = half ? g->imp_start[n + 1] - g->imp_start[n] : g->in_start[n + 1] - g->in_start[n];
        for (int i = 0; i < cnt; i++) {
            if (vals[i] < 0)
                continue;
            int p = g->values[vals[i]].producer;
            if (p >= 0 && !done[p]) {
                *via = vals[i];
                return p;
            }
        }
    }
    return -1;
}

/* Names the nodes of one cycle among the nodes Kahn could not order. */
static oq_status report_cycle(const oq_graph *g, const bool *done, oq_error *err) {
    oq_status st = OQ_OK;
    int *mark = graph_alloc((size_t)g->n_nodes, sizeof(int), &st, err, "cycle search");
    if (st != OQ_OK)
        return st;
    int x = 0;
    while (x < g->n_nodes && done[x])
        x++;
    /* Every unordered node has an unordered predecessor, so walking
     * predecessors must revisit a node; that node lies on a cycle. */
    int via, step = 1;
    while (x >= 0 && !mark[x]) {
        mark[x] = step++;
        x = pending_pred(g, x, done, &via);
    }
    free(mark);
    if (x < 0)
        return oq_err(err, OQ_EINTERNAL, "cycle search lost its way");
    char msg[OQ_ERROR_MSG_MAX], lbl[256];
    size_t len = (size_t)snprintf(msg, sizeof msg, "nodes form a cycle: %s",
                                  node_label(g->proto->node[x], x, lbl, sizeof lbl));
    int cur = x;
    for (int hops = 0; hops < 8; hops++) {
        int pred = pending_pred(g, cur, done, &via);
        if (pred < 0)
            break;
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s reads '%s' from %s",
                                    hops ? ", which" : "", g->values[via].name,
                                    node_label(g->proto->node[pred], pred, lbl, sizeof lbl));
        cur = pred;
        if (cur == x)
            break;
    }
    if (cur != x && len < sizeof msg)
        snprintf(msg + len, sizeof msg - len, " ...");
    return oq_err(err, OQ_EMODEL, "%s", msg);
}

static void heap_push(int *h, int *n, int v) {
    int i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static int heap_pop(int *h, int *n) {
    int top = h[0], last = h[--(*n)], i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            c++;
        if (h[c] >= last)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Kahn's algorithm with a min-heap of ready nodes: ties go to file order. */
static oq_status build_topo(oq_graph *g, oq_error *err) {
    size_t nn = (size_t)g->n_nodes;
    oq_status st = OQ_OK;
    int *indeg = graph_alloc(nn, sizeof(int), &st, err, "topological sort");
    int *heap = graph_alloc(nn, sizeof(int), &st, err, "topological sort");
    bool *done = graph_alloc(nn, sizeof(bool), &st, err, "topological sort");
    g->topo = graph_alloc(nn, sizeof(int), &st, err, "topological order");
    if (st != OQ_OK)
        goto out;
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].producer < 0)
            continue;
        for (int i = 0; i < g->values[v].n_consumers; i++)
            indeg[g->values[v].consumers[i]]++;
    }
    int hn = 0, k = 0;
    for (int n = 0; n < g->n_nodes; n++)
        if (indeg[n] == 0)
            heap_push(heap, &hn, n);
    while (hn > 0) {
        int n = heap_pop(heap, &hn);
        g->topo[k++] = n;
        done[n] = true;
        for (int s = g->out_start[n]; s < g->out_start[n + 1]; s++) {
            int v = g->out_vals[s];
            if (v < 0)
                continue;
            for (int i = 0; i < g->values[v].n_consumers; i++) {
                int c = g->values[v].consumers[i];
                if (--indeg[c] == 0)
                    heap_push(heap, &hn, c);
            }
        }
    }
    if (k < g->n_nodes)
        st = report_cycle(g, done, err);
out:
    free(indeg);
    free(heap);
    free(done);
    return st;
}

static oq_status build_io_lists(oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = g->proto;
    oq_status st = OQ_OK;
    g->real_inputs = graph_alloc(gp->n_input, sizeof(int), &st, err, "graph inputs");
    if (st != OQ_OK)
        return st;
    for (size_t i = 0; i < gp->n_input; i++) {
        int idx;
        if (oq_strmap_get(g->names, gp->input[i]->name, &idx) &&
            g->values[idx].kind == OQ_VALUE_INPUT)
            g->real_inputs[g->n_real_inputs++] = idx;
    }
    return OQ_OK;
}

static oq_status graph_build(oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = g->proto;
    oq_status st;
    if (gp->n_node > INT_MAX / 2 || gp->n_output > INT_MAX / 2)
        return oq_err(err, OQ_ELIMIT, "graph has %zu nodes and %zu outputs", gp->n_node,
                      gp->n_output);
    g->n_nodes = (int)gp->n_node;
    g->n_outputs = (int)gp->n_output;

    /* Slot totals index int CSR arrays: keep them within int. */
    size_t n_in = 0, n_out = 0, expected;
    for (size_t n = 0; n < gp->n_node; n++) {
        if (!gp->node[n])
            return oq_err(err, OQ_EMODEL, "node %zu is missing", n);
        if (!oq_add_size(n_in, gp->node[n]->n_input, &n_in) ||
            !oq_add_size(n_out, gp->node[n]->n_output, &n_out))
            return oq_err(err, OQ_ELIMIT, "too many node inputs/outputs");
    }
    if (n_in > INT_MAX || n_out > INT_MAX)
        return oq_err(err, OQ_ELIMIT, "graph has %zu node inputs and %zu node outputs", n_in,
                      n_out);
    if (!oq_add_size(n_out, gp->n_input, &expected) ||
        !oq_add_size(expected, gp->n_initializer, &expected) ||
        !oq_add_size(expected, gp->n_sparse_initializer, &expected))
        return oq_err(err, OQ_ELIMIT, "graph has too many values");
    for (size_t i = 0; i < gp->n_input + gp->n_output + gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi =
            i < gp->n_input                ? gp->input[i]
            : i < gp->n_input + gp->n_output ? gp->output[i - gp->n_input]
                                             : gp->value_info[i - gp->n_input - gp->n_output];
        if (!vi)
            return oq_err(err, OQ_EMODEL, "graph value info %zu is missing", i);
    }

    if ((st = oq_strmap_new(OQ_STRMAP_BORROW, expected, &g->names, err)) != OQ_OK)
        return st;
    size_t nn1 = (size_t)g->n_nodes + 1;
    g->in_start = graph_alloc(nn1, sizeof(int), &st, err, "node inputs");
    g->in_vals = graph_alloc(n_in, sizeof(int), &st, err, "node inputs");
    g->out_start = graph_alloc(nn1, sizeof(int), &st, err, "node outputs");
    g->out_vals = graph_alloc(n_out, sizeof(int), &st, err, "node outputs");
    g->outputs = graph_alloc(gp->n_output, sizeof(int), &st, err, "graph outputs");
    if (st != OQ_OK)
        return st;
    for (int n = 0, a = 0, b = 0; n < g->n_nodes; n++) {
        g->in_start[n] = a;
        g->out_start[n] = b;
        a += (int)gp->node[n]->n_input;
        b += (int)gp->node[n]->n_output;
        g->in_start[n + 1] = a;
        g->out_start[n + 1] = b;
    }

    if ((st = index_local_values(g, err)) != OQ_OK)
        return st;
    for (int n = 0; n < g->n_nodes; n++) {
        const Onnx__NodeProto *node = gp->node[n];
        for (size_t s = 0; s < node->n_output; s++) {
            int idx = -1;
            if (node->output[s] && *node->output[s])
                oq_strmap_get(g->names, node->output[s], &idx);
            g->out_vals[g->out_start[n] + (int)s] = idx;
        }
    }
    if ((st = build_subgraphs(g, err)) != OQ_OK)
        return st;
    if ((st = resolve_inputs(g, err)) != OQ_OK)
        return st;
    if ((st = build_implicit(g, err)) != OQ_OK)
        return st;
    if ((st = build_consumers(g, err)) != OQ_OK)
        return st;
    if ((st = build_io_lists(g, err)) != OQ_OK)
        return st;
    return build_topo(g, err);
}

/* Frees everything g owns but keeps model/proto/parent/owner. */
static void graph_clear(oq_graph *g) {
    for (int i = 0; i < g->n_subs; i++) {
        graph_clear(g->subs[i].graph);
        free(g->subs[i].graph);
    }
    free(g->subs);
    oq_strmap_free(g->names);
    free(g->values);
    free(g->in_start);
    free(g->in_vals);
    free(g->out_start);
    free(g->out_vals);
    free(g->imp_start);
    free(g->imp_vals);
    free(g->imp_pairs);
    free(g->cons_start);
    free(g->cons);
    free(g->topo);
    free(g->real_inputs);
    free(g->outputs);
    oq_graph keep = {.model = g->model, .proto = g->proto, .parent = g->parent,
                     .owner_node = g->owner_node, .depth = g->depth};
    *g = keep;
}

static oq_status check_opsets(const Onnx__ModelProto *mp, oq_error *err) {
    if (mp->n_opset_import < 2)
        return OQ_OK;
    oq_strmap *seen;
    oq_status st = oq_strmap_new(OQ_STRMAP_BORROW, mp->n_opset_import, &seen, err);
    if (st != OQ_OK)
        return st;
    for (size_t i = 0; i < mp->n_opset_import && st == OQ_OK; i++) {
        const char *d = mp->opset_import[i]->domain;
        if (is_default_domain(d))
            d = "";
        bool inserted;
        st = oq_strmap_add(seen, d, 0, &inserted, NULL, err);
        if (st == OQ_OK && !inserted)
            st = oq_err(err, OQ_EMODEL, "opset domain '%s' is imported twice", d);
    }
    oq_strmap_free(seen);
    return st;
}

static oq_status graph_build_root(oq_graph *g, oq_error *err) {
    Onnx__ModelProto *mp = oq_model_proto(g->model);
    if (!mp || !mp->graph)
        return oq_err(err, OQ_EMODEL, "model has no graph");
    g->proto = mp->graph;
    oq_status st = check_opsets(mp, err);
    if (st == OQ_OK)
        st = graph_build(g, err);
    if (st != OQ_OK) {
        if (mp->graph->name && *mp->graph->name)
            oq_err_prefix(err, "graph '%s': ", mp->graph->name);
        graph_clear(g);
    }
    return st;
}

/* ---- public API ------------------------------------------------------- */

oq_status oq_graph_new(oq_model *m, oq_graph **out, oq_error *err) {
    *out = NULL;
    if (!m)
        return oq_err(err, OQ_EINVAL, "no model");
    oq_graph *g = calloc(1, sizeof *g);
    if (!g)
        return oq_err(err, OQ_ENOMEM, "out of memory for a graph view");
    g->model = m;
    g->owner_node = -1;
    oq_status st = graph_build_root(g, err);
    if (st != OQ_OK) {
        free(g);
        return st;
    }
    *out = g;
    return OQ_OK;
}

oq_status oq_graph_refresh(oq_graph *g, oq_error *err) {
    if (!g || g->parent)
        return oq_err(err, OQ_EINVAL, "only a root graph view can be refreshed");
    graph_clear(g);
    return graph_build_root(g, err);
}

void oq_graph_free(oq_graph *g) {
    if (!g || g->parent)
        return;
    graph_clear(g);
    free(g);
}

oq_model *oq_graph_model(const oq_graph *g) {
    return g->model;
}

Onnx__GraphProto *oq_graph_proto(const oq_graph *g) {
    return g->proto;
}

const oq_graph *oq_graph_parent(const oq_graph *g) {
    return g->parent;
}

int oq_graph_owner_node(const oq_graph *g) {
    return g->owner_node;
}

int oq_graph_depth(const oq_graph *g) {
    return g->depth;
}

int64_t oq_graph_opset(const oq_graph *g, const char *domain) {
    const Onnx__ModelProto *mp = oq_model_proto(g->model);
    if (!mp)
        return 0;
    bool want_default = is_default_domain(domain);
    if (mp->n_opset_import == 0)
        return want_default ? 1 : 0; /* IR < 3: opset 1 implied */
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        bool match = want_default ? is_default_domain(o->domain)
                                  : (o->domain && strcmp(o->domain, domain) == 0);
        if (match)
            return o->version;
    }
    return 0;
}

int oq_graph_node_count(const oq_graph *g) {
    return g->n_nodes;
}

Onnx__NodeProto *oq_graph_node(const oq_graph *g, int node) {
    return node >= 0 && node < g->n_nodes ? g->proto->node[node] : NULL;
}

static const int *csr_row(const int *start, const int *vals, int n_rows, int row, int *count) {
    if (!start || row < 0 || row >= n_rows) {
        *count = 0;
        return NULL;
    }
    *count = start[row + 1] - start[row];
    return vals + start[row];
}

const int *oq_graph_node_inputs(const oq_graph *g, int node, int *count) {
    return csr_row(g->in_start, g->in_vals, g->n_nodes, node, count);
}

const int *oq_graph_node_outputs(const oq_graph *g, int node, int *count) {
    return csr_row(g->out_start, g->out_vals, g->n_nodes, node, count);
}

const int *oq_graph_node_implicit_inputs(const oq_graph *g, int node, int *count) {
    return csr_row(g->imp_start, g->imp_vals, g->n_nodes, node, count);
}

const int *oq_graph_topo_order(const oq_graph *g, int *count) {
    *count = g->topo ? g->n_nodes : 0;
    return g->topo;
}

int oq_graph_value_count(const oq_graph *g) {
    return g->n_values;
}

const oq_value *oq_graph_value(const oq_graph *g, int value) {
    return value >= 0 && value < g->n_values ? &g->values[value] : NULL;
}

int oq_graph_find_value(const oq_graph *g, const char *name) {
    int idx;
    return oq_strmap_get(g->names, name, &idx) ? idx : -1;
}

const oq_value *oq_graph_value_by_name(const oq_graph *g, const char *name) {
    return oq_graph_value(g, oq_graph_find_value(g, name));
}

const int *oq_graph_real_inputs(const oq_graph *g, int *count) {
    *count = g->n_real_inputs;
    return g->real_inputs;
}

const int *oq_graph_outputs(const oq_graph *g, int *count) {
    *count = g->outputs ? g->n_outputs : 0;
    return g->outputs;
}

int oq_graph_subgraph_count(const oq_graph *g) {
    return g->n_subs;
}

const oq_subgraph *oq_graph_subgraph(const oq_graph *g, int i) {
    return i >= 0 && i < g->n_subs ? &g->subs[i] : NULL;
}

/* ---- values: constness and shapes ------------------------------------- */

static const oq_value *resolve_outer(const oq_value *v) {
    while (v && v->kind == OQ_VALUE_OUTER)
        v = oq_graph_value(v->outer_graph, v->outer_value);
    return v;
}

bool oq_value_is_constant(const oq_value *v) {
    v = resolve_outer(v);
    return v && (v->kind == OQ_VALUE_INITIALIZER || v->kind == OQ_VALUE_CONSTANT);
}

static const Onnx__TypeProto__Tensor *info_tensor_type(const oq_value *v) {
    const Onnx__TypeProto *t = v->info ? v->info->type : NULL;
    if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return t->tensor_type;
    return NULL;
}

/* Type and shape of a Constant given as value_float(s)/value_int(s)/
 * value_string(s): scalars have rank 0, lists rank 1. */
static bool const_attr_shape(const oq_value *v, int32_t *elem, int *rank, int64_t *dim0) {
    const Onnx__AttributeProto *a = v->const_attr;
    if (!a || v->tensor || strncmp(a->name, "value_", 6) != 0)
        return false;
    size_t n = 0;
    *rank = 1;
    switch (oq_attr_type(a)) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        *rank = 0;
        /* fall through */
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        *elem = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        n = a->n_floats;
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        *rank = 0;
        /* fall through */
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        *elem = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        n = a->n_ints;
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        *rank = 0;
        /* fall through */
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
        *elem = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
        n = a->n_strings;
        break;
    default:
        return false;
    }
    *dim0 = (int64_t)n;
    return true;
}

int32_t oq_value_elem_type(const oq_value *v) {
    if (!v)
        return 0;
    /* A constant's own data is authoritative over declarations. */
    if (v->tensor && v->tensor->has_data_type)
        return v->tensor->data_type;
    if (v->sparse && v->sparse->values && v->sparse->values->has_data_type)
        return v->sparse->values->data_type;
    int32_t elem;
    int rank;
    int64_t dim0;
    if (const_attr_shape(v, &elem, &rank, &dim0))
        return elem;
    const Onnx__TypeProto__Tensor *tt = info_tensor_type(v);
    return tt && tt->has_elem_type ? tt->elem_type : 0;
}

int oq_value_rank(const oq_value *v) {
    if (!v)
        return -1;
    size_t n;
    int32_t elem;
    int rank;
    int64_t dim0;
    if (v->tensor) {
        n = v->tensor->n_dims;
    } else if (v->sparse) {
        n = v->sparse->n_dims;
    } else if (const_attr_shape(v, &elem, &rank, &dim0)) {
        return rank;
    } else {
        const Onnx__TypeProto__Tensor *tt = info_tensor_type(v);
        if (!tt || !tt->shape)
            return -1;
        n = tt->shape->n_dim;
    }
    return n > INT_MAX ? -1 : (int)n;
}

oq_dim oq_value_dim(const oq_value *v, int axis) {
    oq_dim d = {OQ_DIM_UNKNOWN, 0, NULL};
    int rank = oq_value_rank(v);
    if (axis < 0 || axis >= rank)
        return d;
    int32_t elem;
    int64_t dim0;
    if (v->tensor || v->sparse) {
        d.kind = OQ_DIM_VALUE;
        d.value = v->tensor ? v->tensor->dims[axis] : v->sparse->dims[axis];
        return d;
    }
    if (const_attr_shape(v, &elem, &rank, &dim0)) {
        d.kind = OQ_DIM_VALUE;
        d.value = dim0;
        return d;
    }
    const Onnx__TensorShapeProto__Dimension *dim = info_tensor_type(v)->shape->dim[axis];
    if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
        d.kind = OQ_DIM_VALUE;
        d.value = dim->dim_value;
    } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
               dim->dim_param && *dim->dim_param) {
        d.kind = OQ_DIM_PARAM;
        d.param = dim->dim_param;
    }
    return d;
}

/* ---- attributes ------------------------------------------------------- */

Onnx__AttributeProto__AttributeType oq_attr_type(const Onnx__AttributeProto *a) {
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
        return a->type;
    /* IR 1 had no `type`: the field that is set decides. */
    if (a->has_f)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->g)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->sparse_tensor)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR;
    if (a->tp)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO;
    if (a->n_floats)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (a->n_strings)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    if (a->n_tensors)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS;
    if (a->n_graphs)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS;
    if (a->n_sparse_tensors)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS;
    if (a->n_type_protos)
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static const char *attr_type_name(Onnx__AttributeProto__AttributeType t) {
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value(&onnx__attribute_proto__attribute_type__descriptor,
                                             (int)t);
    return ev ? ev->name : "?";
}

const Onnx__AttributeProto *oq_node_attr(const Onnx__NodeProto *n, const char *name) {
    if (!n || !name)
        return NULL;
    for (size_t i = 0; i < n->n_attribute; i++) {
        const Onnx__AttributeProto *a = n->attribute[i];
        if (a && a->name && strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}

/* Finds attribute name of type want: OK with *out NULL when absent, EMODEL
 * when present with another type. Lists of length 0 without a type (IR 1)
 * read as an empty list of the wanted type. */
static oq_status attr_lookup(const Onnx__NodeProto *n, const char *name,
                             Onnx__AttributeProto__AttributeType want,
                             const Onnx__AttributeProto **out, oq_error *err) {
    *out = NULL;
    const Onnx__AttributeProto *a = oq_node_attr(n, name);
    if (!a)
        return OQ_OK;
    Onnx__AttributeProto__AttributeType t = oq_attr_type(a);
    bool is_list = want == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS ||
                   want == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (t != want && !(is_list && t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)) {
        char lbl[256];
        return oq_err(err, OQ_EMODEL, "attribute '%s' of %s is %s, expected %s", name,
                      node_label(n, -1, lbl, sizeof lbl), attr_type_name(t),
                      attr_type_name(want));
    }
    *out = a;
    return OQ_OK;
}

oq_status oq_node_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def,
                           int64_t *out, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, &a, err);
    *out = a ? a->i : def;
    return st;
}

oq_status oq_node_attr_float(const Onnx__NodeProto *n, const char *name, float def,
                             float *out, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, &a, err);
    *out = a ? a->f : def;
    return st;
}

oq_status oq_node_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out,
                            size_t *count, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS, &a, err);
    *out = a ? a->ints : NULL;
    *count = a ? a->n_ints : 0;
    return st;
}

oq_status oq_node_attr_floats(const Onnx__NodeProto *n, const char *name, const float **out,
                              size_t *count, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS, &a, err);
    *out = a ? a->floats : NULL;
    *count = a ? a->n_floats : 0;
    return st;
}

oq_status oq_node_attr_string(const Onnx__NodeProto *n, const char *name, const char *def,
                              char *buf, size_t cap, oq_error *err) {
    if (!buf || cap == 0)
        return oq_err(err, OQ_EINVAL, "no buffer for attribute '%s'", name);
    buf[0] = '\0';
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, &a, err);
    if (st != OQ_OK)
        return st;
    const char *src = a ? (const char *)a->s.data : (def ? def : "");
    size_t len = a ? a->s.len : strlen(src);
    char lbl[256];
    if (a && len && memchr(src, '\0', len))
        return oq_err(err, OQ_EMODEL, "attribute '%s' of %s holds a NUL byte", name,
                      node_label(n, -1, lbl, sizeof lbl));
    if (len >= cap)
        return oq_err(err, OQ_ELIMIT, "attribute '%s' of %s is %zu bytes, more than %zu", name,
                      node_label(n, -1, lbl, sizeof lbl), len, cap - 1);
    if (len)
        memcpy(buf, src, len);
    buf[len] = '\0';
    return OQ_OK;
}

oq_status oq_node_attr_tensor(const Onnx__NodeProto *n, const char *name,
                              const Onnx__TensorProto **out, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR, &a, err);
    *out = a ? a->t : NULL;
    if (st == OQ_OK && a && !a->t) {
        char lbl[256];
        return oq_err(err, OQ_EMODEL, "attribute '%s' of %s has no tensor", name,
                      node_label(n, -1, lbl, sizeof lbl));
    }
    return st;
}

oq_status oq_node_attr_graph(const Onnx__NodeProto *n, const char *name,
                             const Onnx__GraphProto **out, oq_error *err) {
    const Onnx__AttributeProto *a;
    oq_status st = attr_lookup(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH, &a, err);
    *out = a ? a->g : NULL;
    if (st == OQ_OK && a && !a->g) {
        char lbl[256];
        return oq_err(err, OQ_EMODEL, "attribute '%s' of %s has no graph", name,
                      node_label(n, -1, lbl, sizeof lbl));
    }
    return st;
}
