/* edit.c: editing primitives. New messages use protobuf-c init functions and
 * the model's allocator, so free_unpacked releases them like loaded data;
 * edits allocate first and commit last, so a failure changes nothing. */
#include "edit.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "checked.h"
#include "graph.h"
#include "strmap.h"
#include "tensorproto.h"

static oq_status nomem(oq_error *err, const char *what) {
    return oq_err(err, OQ_ENOMEM, "out of memory (or over the model's memory budget) %s", what);
}

static bool is_default_domain(const char *d) {
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

static bool str_eq(const char *a, const char *b) {
    return a && b && strcmp(a, b) == 0;
}

/* Room for one more entry at the end of a protobuf pointer array; NULL on
 * ENOMEM with the old array untouched. Elements move by memcpy only. */
static void **grow_array(ProtobufCAllocator *a, void **arr, size_t n) {
    void **p = arr;
    return oq_pb_array_grow(a, &p, n) ? p : NULL;
}

static void free_msg(ProtobufCAllocator *a, void *msg) {
    if (msg)
        protobuf_c_message_free_unpacked((ProtobufCMessage *)msg, a);
}

/* ---- "slots": string fields to overwrite in one all-or-nothing step --- */

typedef struct {
    char ***items;
    size_t n, cap;
} slot_vec;

static oq_status slots_push(slot_vec *v, char **slot, oq_error *err) {
    if (v->n == v->cap) {
        size_t cap, bytes;
        if (!oq_mul_size(v->cap ? v->cap : 16, 2, &cap) ||
            !oq_mul_size(cap, sizeof(char **), &bytes))
            return oq_err(err, OQ_ELIMIT, "too many names to rewrite");
        char ***grown = realloc(v->items, bytes);
        if (!grown)
            return oq_err(err, OQ_ENOMEM, "out of memory collecting names to rewrite");
        v->items = grown;
        v->cap = cap;
    }
    v->items[v->n++] = slot;
    return OQ_OK;
}

/* Points every collected slot at its own copy of name, freeing the old
 * strings; copies are made first so ENOMEM changes nothing. */
static oq_status slots_apply(ProtobufCAllocator *a, slot_vec *v, const char *name, oq_error *err) {
    if (v->n == 0)
        return OQ_OK;
    size_t bytes;
    if (!oq_mul_size(v->n, sizeof(char *), &bytes))
        return oq_err(err, OQ_ELIMIT, "too many names to rewrite");
    char **copies = malloc(bytes);
    if (!copies)
        return oq_err(err, OQ_ENOMEM, "out of memory renaming '%s'", name);
    for (size_t i = 0; i < v->n; i++) {
        copies[i] = oq_pb_strdup(a, name);
        if (!copies[i]) {
            for (size_t j = 0; j < i; j++)
                oq_pb_free(a, copies[j]);
            free(copies);
            return nomem(err, "renaming a value");
        }
    }
    for (size_t i = 0; i < v->n; i++) {
        oq_pb_free(a, *v->items[i]);
        *v->items[i] = copies[i];
    }
    free(copies);
    return OQ_OK;
}

/* True when g itself defines name (input, initializer or node output). */
static bool graph_defines(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_input; i++)
        if (str_eq(g->input[i]->name, name))
            return true;
    for (size_t i = 0; i < g->n_initializer; i++)
        if (str_eq(g->initializer[i]->name, name))
            return true;
    for (size_t i = 0; i < g->n_sparse_initializer; i++)
        if (g->sparse_initializer[i]->values &&
            str_eq(g->sparse_initializer[i]->values->name, name))
            return true;
    for (size_t n = 0; n < g->n_node; n++)
        for (size_t s = 0; s < g->node[n]->n_output; s++)
            if (str_eq(g->node[n]->output[s], name))
                return true;
    return false;
}

static oq_status collect_graph(Onnx__GraphProto *g, const char *old, bool top, int depth,
                               slot_vec *v, oq_error *err);

/* The subgraphs of node that read old from outer scope. */
static oq_status collect_node_subgraphs(Onnx__NodeProto *node, const char *old, int depth,
                                        slot_vec *v, oq_error *err) {
    for (size_t a = 0; a < node->n_attribute; a++) {
        Onnx__AttributeProto *at = node->attribute[a];
        Onnx__AttributeProto__AttributeType t = oq_attr_type(at);
        oq_status st = OQ_OK;
        if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH && at->g)
            st = collect_graph(at->g, old, false, depth + 1, v, err);
        else if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS)
            for (size_t k = 0; k < at->n_graphs && st == OQ_OK; k++)
                st = collect_graph(at->graphs[k], old, false, depth + 1, v, err);
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

/* Every string in g naming old; below the top graph only while old is an
 * outer-scope name there (a local definition shadows it). */
static oq_status collect_graph(Onnx__GraphProto *g, const char *old, bool top, int depth,
                               slot_vec *v, oq_error *err) {
    if (depth > OQ_GRAPH_MAX_NESTING)
        return oq_err(err, OQ_ELIMIT, "subgraphs are nested more than %d deep",
                      OQ_GRAPH_MAX_NESTING);
    if (!top && graph_defines(g, old))
        return OQ_OK;
    oq_status st = OQ_OK;
    for (size_t n = 0; n < g->n_node && st == OQ_OK; n++) {
        Onnx__NodeProto *node = g->node[n];
        for (size_t s = 0; s < node->n_input && st == OQ_OK; s++)
            if (str_eq(node->input[s], old))
                st = slots_push(v, &node->input[s], err);
        for (size_t s = 0; s < node->n_output && st == OQ_OK; s++)
            if (str_eq(node->output[s], old))
                st = slots_push(v, &node->output[s], err);
        if (st == OQ_OK)
            st = collect_node_subgraphs(node, old, depth, v, err);
    }
    Onnx__ValueInfoProto **lists[3] = {g->input, g->output, g->value_info};
    size_t counts[3] = {g->n_input, g->n_output, g->n_value_info};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l] && st == OQ_OK; i++)
            if (str_eq(lists[l][i]->name, old))
                st = slots_push(v, &lists[l][i]->name, err);
    for (size_t i = 0; i < g->n_initializer && st == OQ_OK; i++)
        if (str_eq(g->initializer[i]->name, old))
            st = slots_push(v, &g->initializer[i]->name, err);
    for (size_t i = 0; i < g->n_sparse_initializer && st == OQ_OK; i++) {
        Onnx__TensorProto *vals = g->sparse_initializer[i]->values;
        if (vals && str_eq(vals->name, old))
            st = slots_push(v, &vals->name, err);
    }
    for (size_t i = 0; i < g->n_quantization_annotation && st == OQ_OK; i++)
        if (str_eq(g->quantization_annotation[i]->tensor_name, old))
            st = slots_push(v, &g->quantization_annotation[i]->tensor_name, err);
    return st;
}

/* ---- nodes ------------------------------------------------------------ */

oq_status oq_edit_insert_node(oq_model *m, Onnx__GraphProto *g, size_t pos,
                              const char *op_type, const char *domain, const char *name,
                              const char *const *inputs, size_t n_inputs,
                              const char *const *outputs, size_t n_outputs,
                              Onnx__NodeProto **out, oq_error *err) {
    if (out)
        *out = NULL;
    if (!m || !g || !op_type || !*op_type)
        return oq_err(err, OQ_EINVAL, "insert node: no model, graph or op_type");
    if ((n_inputs && !inputs) || (n_outputs && !outputs))
        return oq_err(err, OQ_EINVAL, "insert node %s: inputs or outputs missing", op_type);
    if (pos == OQ_EDIT_APPEND)
        pos = g->n_node;
    if (pos > g->n_node)
        return oq_err(err, OQ_EINVAL, "insert node %s at %zu: the graph has %zu nodes", op_type,
                      pos, g->n_node);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__NodeProto *node = oq_pb_alloc(a, sizeof *node);
    if (!node)
        return nomem(err, "inserting a node");
    onnx__node_proto__init(node);
    bool ok = (node->op_type = oq_pb_strdup(a, op_type)) != NULL;
    if (ok && domain)
        ok = (node->domain = oq_pb_strdup(a, domain)) != NULL;
    if (ok && name)
        ok = (node->name = oq_pb_strdup(a, name)) != NULL;
    if (ok && n_inputs)
        ok = (node->input = oq_pb_calloc(a, n_inputs, sizeof(char *))) != NULL;
    for (size_t i = 0; ok && i < n_inputs; i++) {
        ok = (node->input[i] = oq_pb_strdup(a, inputs[i] ? inputs[i] : "")) != NULL;
        node->n_input += ok; /* free_unpacked frees exactly the ones counted */
    }
    if (ok && n_outputs)
        ok = (node->output = oq_pb_calloc(a, n_outputs, sizeof(char *))) != NULL;
    for (size_t i = 0; ok && i < n_outputs; i++) {
        ok = (node->output[i] = oq_pb_strdup(a, outputs[i] ? outputs[i] : "")) != NULL;
        node->n_output += ok;
    }
    void **grown = ok ? grow_array(a, (void **)g->node, g->n_node) : NULL;
    if (!grown) {
        free_msg(a, node);
        return nomem(err, "inserting a node");
    }
    g->node = (Onnx__NodeProto **)grown;
    memmove(&g->node[pos + 1], &g->node[pos], (g->n_node - pos) * sizeof *g->node);
    g->node[pos] = node;
    g->n_node++;
    if (out)
        *out = node;
    return OQ_OK;
}

oq_status oq_edit_remove_node(oq_model *m, Onnx__GraphProto *g, size_t index, oq_error *err) {
    if (!m || !g || index >= g->n_node)
        return oq_err(err, OQ_EINVAL, "remove node %zu: the graph has %zu nodes", index,
                      g ? g->n_node : 0);
    free_msg(oq_model_allocator(m), g->node[index]);
    memmove(&g->node[index], &g->node[index + 1], (g->n_node - index - 1) * sizeof *g->node);
    g->n_node--;
    return OQ_OK;
}

static oq_status sort_graph(const oq_graph *g, oq_error *err) {
    Onnx__GraphProto *gp = oq_graph_proto(g);
    int n;
    const int *topo = oq_graph_topo_order(g, &n);
    if ((size_t)n != gp->n_node)
        return oq_err(err, OQ_EINVAL, "sort nodes: the view is stale (%d nodes, graph has %zu)",
                      n, gp->n_node);
    if (n > 1) {
        size_t bytes;
        if (!oq_mul_size((size_t)n, sizeof *gp->node, &bytes))
            return oq_err(err, OQ_ELIMIT, "sort nodes: %d nodes", n);
        Onnx__NodeProto **sorted = malloc(bytes);
        if (!sorted)
            return oq_err(err, OQ_ENOMEM, "out of memory sorting %d nodes", n);
        for (int i = 0; i < n; i++)
            sorted[i] = gp->node[topo[i]];
        memcpy(gp->node, sorted, bytes);
        free(sorted);
    }
    /* Subgraphs hang off node attributes, which moved with their nodes. */
    for (int i = 0; i < oq_graph_subgraph_count(g); i++) {
        oq_status st = sort_graph(oq_graph_subgraph(g, i)->graph, err);
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

oq_status oq_edit_sort_nodes(oq_model *m, const oq_graph *view, oq_error *err) {
    if (!m || !view || oq_graph_model(view) != m)
        return oq_err(err, OQ_EINVAL, "sort nodes: the view is not of this model");
    return sort_graph(view, err);
}

static oq_status set_slot(oq_model *m, char ***arr, size_t *n, size_t slot, const char *name,
                          const char *what, oq_error *err) {
    if (!m || !name)
        return oq_err(err, OQ_EINVAL, "set node %s: no model or name", what);
    if (slot > *n)
        return oq_err(err, OQ_EINVAL, "set node %s %zu: the node has %zu", what, slot, *n);
    ProtobufCAllocator *a = oq_model_allocator(m);
    char *copy = oq_pb_strdup(a, name);
    if (!copy)
        return nomem(err, "setting a node input/output");
    if (slot == *n) {
        void **grown = grow_array(a, (void **)*arr, *n);
        if (!grown) {
            oq_pb_free(a, copy);
            return nomem(err, "setting a node input/output");
        }
        *arr = (char **)grown;
        (*arr)[(*n)++] = copy;
    } else {
        oq_pb_free(a, (*arr)[slot]);
        (*arr)[slot] = copy;
    }
    return OQ_OK;
}

oq_status oq_edit_set_node_input(oq_model *m, Onnx__NodeProto *node, size_t slot,
                                 const char *name, oq_error *err) {
    if (!node)
        return oq_err(err, OQ_EINVAL, "set node input: no node");
    return set_slot(m, &node->input, &node->n_input, slot, name, "input", err);
}

oq_status oq_edit_set_node_output(oq_model *m, Onnx__NodeProto *node, size_t slot,
                                  const char *name, oq_error *err) {
    if (!node)
        return oq_err(err, OQ_EINVAL, "set node output: no node");
    return set_slot(m, &node->output, &node->n_output, slot, name, "output", err);
}

oq_status oq_edit_replace_input(oq_model *m, Onnx__NodeProto *node, const char *old_name,
                                const char *new_name, size_t *replaced, oq_error *err) {
    if (replaced)
        *replaced = 0;
    if (!m || !node || !old_name || !*old_name || !new_name || !*new_name)
        return oq_err(err, OQ_EINVAL, "replace input: missing model, node or name");
    slot_vec v = {0};
    oq_status st = OQ_OK;
    for (size_t s = 0; s < node->n_input && st == OQ_OK; s++)
        if (str_eq(node->input[s], old_name))
            st = slots_push(&v, &node->input[s], err);
    if (st == OQ_OK)
        st = collect_node_subgraphs(node, old_name, 0, &v, err);
    if (st == OQ_OK)
        st = slots_apply(oq_model_allocator(m), &v, new_name, err);
    if (st == OQ_OK && replaced)
        *replaced = v.n;
    free(v.items);
    return st;
}

/* ---- attributes ------------------------------------------------------- */

static Onnx__AttributeProto *attr_new(ProtobufCAllocator *a, const char *name,
                                      Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *at = oq_pb_alloc(a, sizeof *at);
    if (!at)
        return NULL;
    onnx__attribute_proto__init(at);
    at->name = oq_pb_strdup(a, name);
    if (!at->name) {
        free_msg(a, at);
        return NULL;
    }
    at->has_type = 1;
    at->type = type;
    return at;
}

/* Installs at on node (replacing a same-named attribute); frees at on failure. */
static oq_status attr_put(oq_model *m, Onnx__NodeProto *node, Onnx__AttributeProto *at,
                          oq_error *err) {
    ProtobufCAllocator *a = oq_model_allocator(m);
    for (size_t i = 0; i < node->n_attribute; i++) {
        if (str_eq(node->attribute[i]->name, at->name)) {
            free_msg(a, node->attribute[i]);
            node->attribute[i] = at;
            return OQ_OK;
        }
    }
    void **grown = grow_array(a, (void **)node->attribute, node->n_attribute);
    if (!grown) {
        free_msg(a, at);
        return nomem(err, "setting an attribute");
    }
    node->attribute = (Onnx__AttributeProto **)grown;
    node->attribute[node->n_attribute++] = at;
    return OQ_OK;
}

static oq_status attr_args(oq_model *m, Onnx__NodeProto *node, const char *name, oq_error *err) {
    if (!m || !node || !name || !*name)
        return oq_err(err, OQ_EINVAL, "set attribute: missing model, node or name");
    return OQ_OK;
}

oq_status oq_edit_set_attr_int(oq_model *m, Onnx__NodeProto *node, const char *name,
                               int64_t v, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    Onnx__AttributeProto *at =
        attr_new(oq_model_allocator(m), name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!at)
        return nomem(err, "setting an attribute");
    at->has_i = 1;
    at->i = v;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_float(oq_model *m, Onnx__NodeProto *node, const char *name,
                                 float v, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    Onnx__AttributeProto *at =
        attr_new(oq_model_allocator(m), name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!at)
        return nomem(err, "setting an attribute");
    at->has_f = 1;
    at->f = v;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_ints(oq_model *m, Onnx__NodeProto *node, const char *name,
                                const int64_t *v, size_t n, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    if (n && !v)
        return oq_err(err, OQ_EINVAL, "set attribute '%s': no values", name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (at && n && !(at->ints = oq_pb_calloc(a, n, sizeof *at->ints))) {
        free_msg(a, at);
        at = NULL;
    }
    if (!at)
        return nomem(err, "setting an attribute");
    if (n)
        memcpy(at->ints, v, n * sizeof *at->ints);
    at->n_ints = n;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_floats(oq_model *m, Onnx__NodeProto *node, const char *name,
                                  const float *v, size_t n, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    if (n && !v)
        return oq_err(err, OQ_EINVAL, "set attribute '%s': no values", name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    if (at && n && !(at->floats = oq_pb_calloc(a, n, sizeof *at->floats))) {
        free_msg(a, at);
        at = NULL;
    }
    if (!at)
        return nomem(err, "setting an attribute");
    if (n)
        memcpy(at->floats, v, n * sizeof *at->floats);
    at->n_floats = n;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_string(oq_model *m, Onnx__NodeProto *node, const char *name,
                                  const char *v, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    if (!v)
        return oq_err(err, OQ_EINVAL, "set attribute '%s': no string", name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    size_t len = strlen(v);
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    if (at && !(at->s.data = oq_pb_alloc(a, len))) {
        free_msg(a, at);
        at = NULL;
    }
    if (!at)
        return nomem(err, "setting an attribute");
    memcpy(at->s.data, v, len);
    at->s.len = len;
    at->has_s = 1;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_tensor_new(oq_model *m, Onnx__NodeProto *node, const char *name,
                                      Onnx__TensorProto *tp, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st == OQ_OK && !tp)
        st = oq_err(err, OQ_EINVAL, "set attribute '%s': no tensor", name);
    if (st != OQ_OK) {
        if (m)
            free_msg(oq_model_allocator(m), tp);
        return st;
    }
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    if (!at) {
        free_msg(a, tp);
        return nomem(err, "setting an attribute");
    }
    at->t = tp;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_set_attr_graph_new(oq_model *m, Onnx__NodeProto *node, const char *name,
                                     Onnx__GraphProto *sub, oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st == OQ_OK && !sub)
        st = oq_err(err, OQ_EINVAL, "set attribute '%s': no graph", name);
    if (st != OQ_OK) {
        if (m)
            free_msg(oq_model_allocator(m), sub);
        return st;
    }
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__AttributeProto *at = attr_new(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    if (!at) {
        free_msg(a, sub);
        return nomem(err, "setting an attribute");
    }
    at->g = sub;
    return attr_put(m, node, at, err);
}

oq_status oq_edit_graph_new(oq_model *m, const char *name, Onnx__GraphProto **out,
                            oq_error *err) {
    *out = NULL;
    if (!m)
        return oq_err(err, OQ_EINVAL, "new graph: no model");
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__GraphProto *g = oq_pb_alloc(a, sizeof *g);
    if (!g)
        return nomem(err, "creating a graph");
    onnx__graph_proto__init(g);
    if (name && !(g->name = oq_pb_strdup(a, name))) {
        free_msg(a, g);
        return nomem(err, "creating a graph");
    }
    *out = g;
    return OQ_OK;
}

oq_status oq_edit_remove_attr(oq_model *m, Onnx__NodeProto *node, const char *name,
                              oq_error *err) {
    oq_status st = attr_args(m, node, name, err);
    if (st != OQ_OK)
        return st;
    for (size_t i = 0; i < node->n_attribute; i++) {
        if (str_eq(node->attribute[i]->name, name)) {
            free_msg(oq_model_allocator(m), node->attribute[i]);
            memmove(&node->attribute[i], &node->attribute[i + 1],
                    (node->n_attribute - i - 1) * sizeof *node->attribute);
            node->n_attribute--;
            return OQ_OK;
        }
    }
    return oq_err(err, OQ_ENOTFOUND, "node has no attribute '%s'", name);
}

/* ---- types, graph inputs/outputs -------------------------------------- */

/* A tensor TypeProto; has_shape false leaves the shape out, a negative dim
 * is unknown. Built top-down so one free_msg releases a partial one. */
static Onnx__TypeProto *tensor_type_new(ProtobufCAllocator *a, int32_t elem_type, bool has_shape,
                                        size_t rank, const int64_t *dims) {
    Onnx__TypeProto *tp = oq_pb_alloc(a, sizeof *tp);
    if (!tp)
        return NULL;
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = oq_pb_alloc(a, sizeof *tt);
    if (!tt) {
        free_msg(a, tp);
        return NULL;
    }
    onnx__type_proto__tensor__init(tt);
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = elem_type;
    if (!has_shape)
        return tp;
    Onnx__TensorShapeProto *sh = oq_pb_alloc(a, sizeof *sh);
    if (!sh) {
        free_msg(a, tp);
        return NULL;
    }
    onnx__tensor_shape_proto__init(sh);
    tt->shape = sh;
    if (rank && !(sh->dim = oq_pb_calloc(a, rank, sizeof *sh->dim))) {
        free_msg(a, tp);
        return NULL;
    }
    for (size_t i = 0; i < rank; i++) {
        Onnx__TensorShapeProto__Dimension *d = oq_pb_alloc(a, sizeof *d);
        if (!d) {
            free_msg(a, tp);
            return NULL;
        }
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        sh->dim[sh->n_dim++] = d;
    }
    return tp;
}

static Onnx__TypeProto *type_of_tensor_proto(ProtobufCAllocator *a, const Onnx__TensorProto *t) {
    return tensor_type_new(a, t->data_type, true, t->n_dims, t->dims);
}

static Onnx__ValueInfoProto *value_info_new(ProtobufCAllocator *a, const char *name,
                                            Onnx__TypeProto *type /* stolen */) {
    Onnx__ValueInfoProto *vi = oq_pb_alloc(a, sizeof *vi);
    if (!vi) {
        free_msg(a, type);
        return NULL;
    }
    onnx__value_info_proto__init(vi);
    vi->type = type;
    if (!(vi->name = oq_pb_strdup(a, name))) {
        free_msg(a, vi);
        return NULL;
    }
    return vi;
}

static long find_value_info(Onnx__ValueInfoProto **arr, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (str_eq(arr[i]->name, name))
            return (long)i;
    return -1;
}

static oq_status add_graph_io(oq_model *m, Onnx__GraphProto *g, bool input, const char *name,
                              int32_t elem_type, int rank, const int64_t *dims, oq_error *err) {
    const char *what = input ? "input" : "output";
    if (!m || !g || !name || !*name || (rank > 0 && !dims))
        return oq_err(err, OQ_EINVAL, "add graph %s: missing model, graph, name or dims", what);
    Onnx__ValueInfoProto ***arr = input ? &g->input : &g->output;
    size_t *n = input ? &g->n_input : &g->n_output;
    if (find_value_info(*arr, *n, name) >= 0)
        return oq_err(err, OQ_EINVAL, "graph %s '%s' already exists", what, name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__TypeProto *type = NULL;
    if (elem_type != 0) {
        type = tensor_type_new(a, elem_type, rank >= 0, rank > 0 ? (size_t)rank : 0, dims);
        if (!type)
            return nomem(err, "adding a graph input/output");
    }
    Onnx__ValueInfoProto *vi = value_info_new(a, name, type);
    void **grown = vi ? grow_array(a, (void **)*arr, *n) : NULL;
    if (!grown) {
        free_msg(a, vi);
        return nomem(err, "adding a graph input/output");
    }
    *arr = (Onnx__ValueInfoProto **)grown;
    (*arr)[(*n)++] = vi;
    return OQ_OK;
}

oq_status oq_edit_add_graph_input(oq_model *m, Onnx__GraphProto *g, const char *name,
                                  int32_t elem_type, int rank, const int64_t *dims,
                                  oq_error *err) {
    return add_graph_io(m, g, true, name, elem_type, rank, dims, err);
}

oq_status oq_edit_add_graph_output(oq_model *m, Onnx__GraphProto *g, const char *name,
                                   int32_t elem_type, int rank, const int64_t *dims,
                                   oq_error *err) {
    return add_graph_io(m, g, false, name, elem_type, rank, dims, err);
}

/* ---- initializers ----------------------------------------------------- */

static long find_initializer(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_initializer; i++)
        if (str_eq(g->initializer[i]->name, name))
            return (long)i;
    return -1;
}

/* IR < 4 requires every initializer of the main graph to be a graph input. */
static bool wants_initializer_inputs(oq_model *m, const Onnx__GraphProto *g) {
    const Onnx__ModelProto *mp = oq_model_proto(m);
    return mp && g == mp->graph && mp->has_ir_version && mp->ir_version < 4;
}

oq_status oq_edit_add_initializer_proto_new(oq_model *m, Onnx__GraphProto *g,
                                            Onnx__TensorProto *tp, oq_error *err) {
    if (!m) /* without a model there is no allocator to free tp with */
        return oq_err(err, OQ_EINVAL, "add initializer: no model");
    ProtobufCAllocator *a = oq_model_allocator(m);
    oq_status st = OQ_OK;
    if (!g || !tp || !tp->name || !*tp->name)
        st = oq_err(err, OQ_EINVAL, "add initializer: missing graph, tensor or name");
    else if (find_initializer(g, tp->name) >= 0)
        st = oq_err(err, OQ_EINVAL, "initializer '%s' already exists", tp->name);
    if (st != OQ_OK) {
        free_msg(a, tp);
        return st;
    }
    Onnx__ValueInfoProto *vi = NULL;
    bool need_input = wants_initializer_inputs(m, g) &&
                      find_value_info(g->input, g->n_input, tp->name) < 0;
    if (need_input) {
        Onnx__TypeProto *type = type_of_tensor_proto(a, tp);
        vi = type ? value_info_new(a, tp->name, type) : NULL;
    }
    void **grown_init = (!need_input || vi) ? grow_array(a, (void **)g->initializer,
                                                         g->n_initializer)
                                            : NULL;
    if (grown_init)
        g->initializer = (Onnx__TensorProto **)grown_init;
    void **grown_in = grown_init && need_input ? grow_array(a, (void **)g->input, g->n_input)
                                               : NULL;
    if (!grown_init || (need_input && !grown_in)) {
        free_msg(a, vi);
        free_msg(a, tp);
        return nomem(err, "adding an initializer");
    }
    g->initializer[g->n_initializer++] = tp;
    if (need_input) {
        g->input = (Onnx__ValueInfoProto **)grown_in;
        g->input[g->n_input++] = vi;
    }
    return OQ_OK;
}

oq_status oq_edit_add_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                  const oq_tensor *t, oq_error *err) {
    if (!m || !g || !t || !name || !*name)
        return oq_err(err, OQ_EINVAL, "add initializer: missing model, graph, tensor or name");
    if (find_initializer(g, name) >= 0)
        return oq_err(err, OQ_EINVAL, "initializer '%s' already exists", name);
    Onnx__TensorProto *tp;
    oq_status st = oq_tensor_to_proto(t, name, oq_model_allocator(m), &tp, err);
    if (st != OQ_OK)
        return st;
    return oq_edit_add_initializer_proto_new(m, g, tp, err);
}

oq_status oq_edit_replace_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                      const oq_tensor *t, oq_error *err) {
    if (!m || !g || !t || !name || !*name)
        return oq_err(err, OQ_EINVAL, "replace initializer: missing model, graph, tensor or name");
    long idx = find_initializer(g, name);
    if (idx < 0)
        return oq_err(err, OQ_ENOTFOUND, "no initializer '%s' to replace", name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__TensorProto *tp;
    oq_status st = oq_tensor_to_proto(t, name, a, &tp, err);
    if (st != OQ_OK)
        return st;

    /* Declarations of the name that must follow the new type and shape. */
    Onnx__ValueInfoProto **lists[3] = {g->input, g->output, g->value_info};
    size_t counts[3] = {g->n_input, g->n_output, g->n_value_info};
    size_t n_decl = 0;
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l]; i++)
            n_decl += str_eq(lists[l][i]->name, name);
    Onnx__TypeProto **types = NULL;
    if (n_decl) {
        size_t bytes;
        if (!oq_mul_size(n_decl, sizeof *types, &bytes) || !(types = calloc(1, bytes))) {
            free_msg(a, tp);
            return oq_err(err, OQ_ENOMEM, "out of memory replacing initializer '%s'", name);
        }
        for (size_t k = 0; k < n_decl; k++) {
            if (!(types[k] = type_of_tensor_proto(a, tp))) {
                for (size_t j = 0; j < k; j++)
                    free_msg(a, types[j]);
                free(types);
                free_msg(a, tp);
                return nomem(err, "replacing an initializer");
            }
        }
    }
    free_msg(a, g->initializer[idx]);
    g->initializer[idx] = tp;
    size_t k = 0;
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            if (str_eq(lists[l][i]->name, name)) {
                free_msg(a, lists[l][i]->type);
                lists[l][i]->type = types[k++];
            }
        }
    }
    free(types);
    return OQ_OK;
}

oq_status oq_edit_remove_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                     oq_error *err) {
    if (!m || !g || !name)
        return oq_err(err, OQ_EINVAL, "remove initializer: missing model, graph or name");
    long idx = find_initializer(g, name);
    if (idx < 0)
        return oq_err(err, OQ_ENOTFOUND, "no initializer '%s' to remove", name);
    ProtobufCAllocator *a = oq_model_allocator(m);
    size_t i = (size_t)idx;
    free_msg(a, g->initializer[i]);
    memmove(&g->initializer[i], &g->initializer[i + 1],
            (g->n_initializer - i - 1) * sizeof *g->initializer);
    g->n_initializer--;
    long in = find_value_info(g->input, g->n_input, name);
    if (in >= 0) {
        i = (size_t)in;
        free_msg(a, g->input[i]);
        memmove(&g->input[i], &g->input[i + 1], (g->n_input - i - 1) * sizeof *g->input);
        g->n_input--;
    }
    return OQ_OK;
}

/* ---- renaming, opsets ------------------------------------------------- */

oq_status oq_edit_rename_value(oq_model *m, Onnx__GraphProto *g, const char *old_name,
                               const char *new_name, oq_error *err) {
    if (!m || !g || !old_name || !*old_name || !new_name || !*new_name)
        return oq_err(err, OQ_EINVAL, "rename value: missing model, graph or name");
    if (strcmp(old_name, new_name) == 0)
        return OQ_OK;
    if (graph_defines(g, new_name))
        return oq_err(err, OQ_EINVAL, "cannot rename '%s' to '%s': '%s' already exists",
                      old_name, new_name, new_name);
    slot_vec v = {0};
    oq_status st = collect_graph(g, old_name, true, 0, &v, err);
    if (st == OQ_OK && v.n == 0)
        st = oq_err(err, OQ_ENOTFOUND, "no value '%s' to rename", old_name);
    if (st == OQ_OK)
        st = slots_apply(oq_model_allocator(m), &v, new_name, err);
    free(v.items);
    return st;
}

oq_status oq_edit_set_opset(oq_model *m, const char *domain, int64_t version, oq_error *err) {
    Onnx__ModelProto *mp = m ? oq_model_proto(m) : NULL;
    if (!mp || version <= 0)
        return oq_err(err, OQ_EINVAL, "set opset: no model or version %lld is not positive",
                      (long long)version);
    bool want_default = is_default_domain(domain);
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (want_default ? is_default_domain(o->domain) : str_eq(o->domain, domain)) {
            o->has_version = 1;
            o->version = version;
            return OQ_OK;
        }
    }
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__OperatorSetIdProto *o = oq_pb_alloc(a, sizeof *o);
    if (o) {
        onnx__operator_set_id_proto__init(o);
        o->has_version = 1;
        o->version = version;
        if (!(o->domain = oq_pb_strdup(a, want_default ? "" : domain))) {
            free_msg(a, o);
            o = NULL;
        }
    }
    void **grown = o ? grow_array(a, (void **)mp->opset_import, mp->n_opset_import) : NULL;
    if (!grown) {
        free_msg(a, o);
        return nomem(err, "adding an opset import");
    }
    mp->opset_import = (Onnx__OperatorSetIdProto **)grown;
    mp->opset_import[mp->n_opset_import++] = o;
    return OQ_OK;
}

/* ---- unique names ----------------------------------------------------- */

struct oq_namer {
    oq_strmap *taken;  /* every name in use; copied keys so edits cannot free them */
    oq_strmap *suffix; /* prefix -> next numeric suffix to try */
};

static oq_status namer_put(oq_namer *nm, const char *name, oq_error *err) {
    return name && *name ? oq_strmap_put(nm->taken, name, 0, err) : OQ_OK;
}

static oq_status namer_collect(oq_namer *nm, const Onnx__GraphProto *g, int depth,
                               oq_error *err) {
    if (depth > OQ_GRAPH_MAX_NESTING)
        return oq_err(err, OQ_ELIMIT, "subgraphs are nested more than %d deep",
                      OQ_GRAPH_MAX_NESTING);
    oq_status st = OQ_OK;
    for (size_t n = 0; n < g->n_node && st == OQ_OK; n++) {
        const Onnx__NodeProto *node = g->node[n];
        st = namer_put(nm, node->name, err);
        for (size_t s = 0; s < node->n_input && st == OQ_OK; s++)
            st = namer_put(nm, node->input[s], err);
        for (size_t s = 0; s < node->n_output && st == OQ_OK; s++)
            st = namer_put(nm, node->output[s], err);
        for (size_t a = 0; a < node->n_attribute && st == OQ_OK; a++) {
            const Onnx__AttributeProto *at = node->attribute[a];
            Onnx__AttributeProto__AttributeType t = oq_attr_type(at);
            if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH && at->g)
                st = namer_collect(nm, at->g, depth + 1, err);
            else if (t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS)
                for (size_t k = 0; k < at->n_graphs && st == OQ_OK; k++)
                    st = namer_collect(nm, at->graphs[k], depth + 1, err);
        }
    }
    for (size_t i = 0; i < g->n_input && st == OQ_OK; i++)
        st = namer_put(nm, g->input[i]->name, err);
    for (size_t i = 0; i < g->n_output && st == OQ_OK; i++)
        st = namer_put(nm, g->output[i]->name, err);
    for (size_t i = 0; i < g->n_value_info && st == OQ_OK; i++)
        st = namer_put(nm, g->value_info[i]->name, err);
    for (size_t i = 0; i < g->n_initializer && st == OQ_OK; i++)
        st = namer_put(nm, g->initializer[i]->name, err);
    for (size_t i = 0; i < g->n_sparse_initializer && st == OQ_OK; i++)
        if (g->sparse_initializer[i]->values)
            st = namer_put(nm, g->sparse_initializer[i]->values->name, err);
    return st;
}

oq_status oq_namer_new(oq_model *m, oq_namer **out, oq_error *err) {
    *out = NULL;
    if (!m)
        return oq_err(err, OQ_EINVAL, "namer: no model");
    oq_namer *nm = calloc(1, sizeof *nm);
    if (!nm)
        return oq_err(err, OQ_ENOMEM, "out of memory for a namer");
    const Onnx__ModelProto *mp = oq_model_proto(m);
    oq_status st = oq_strmap_new(OQ_STRMAP_COPY, 0, &nm->taken, err);
    if (st == OQ_OK)
        st = oq_strmap_new(OQ_STRMAP_COPY, 0, &nm->suffix, err);
    if (st == OQ_OK && mp && mp->graph)
        st = namer_collect(nm, mp->graph, 0, err);
    if (st != OQ_OK) {
        oq_namer_free(nm);
        return st;
    }
    *out = nm;
    return OQ_OK;
}

void oq_namer_free(oq_namer *nm) {
    if (!nm)
        return;
    oq_strmap_free(nm->taken);
    oq_strmap_free(nm->suffix);
    free(nm);
}

bool oq_namer_taken(const oq_namer *nm, const char *name) {
    return nm && oq_strmap_get(nm->taken, name, NULL);
}

oq_status oq_namer_reserve(oq_namer *nm, const char *name, oq_error *err) {
    if (!nm || !name || !*name)
        return oq_err(err, OQ_EINVAL, "namer: no name to reserve");
    return namer_put(nm, name, err);
}

oq_status oq_namer_make(oq_namer *nm, const char *prefix, const char **out, oq_error *err) {
    *out = NULL;
    if (!nm || !prefix || !*prefix)
        return oq_err(err, OQ_EINVAL, "namer: empty prefix");
    oq_status st;
    if (!oq_strmap_get(nm->taken, prefix, NULL)) {
        if ((st = namer_put(nm, prefix, err)) != OQ_OK)
            return st;
        *out = oq_strmap_key(nm->taken, prefix);
        return OQ_OK;
    }
    /* Resume from the last suffix handed out for this prefix, so making n
     * names with one prefix costs O(n), not O(n^2). */
    int next = 1;
    oq_strmap_get(nm->suffix, prefix, &next);
    size_t cap;
    if (!oq_add_size(strlen(prefix), 24, &cap))
        return oq_err(err, OQ_ELIMIT, "namer: prefix too long");
    char *buf = malloc(cap);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "out of memory making a name");
    for (;;) {
        if (next == INT_MAX) {
            free(buf);
            return oq_err(err, OQ_ELIMIT, "namer: no free name left for prefix '%s'", prefix);
        }
        snprintf(buf, cap, "%s_%d", prefix, next++);
        if (!oq_strmap_get(nm->taken, buf, NULL))
            break;
    }
    st = namer_put(nm, buf, err);
    if (st == OQ_OK)
        st = oq_strmap_put(nm->suffix, prefix, next, err);
    if (st == OQ_OK)
        *out = oq_strmap_key(nm->taken, buf);
    free(buf);
    return st;
}
