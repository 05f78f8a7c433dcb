/* graph.h: a read-only view of a model's graph and subgraphs: values with
 * producers, consumers, constants and types; a stable topological order;
 * opsets; typed attributes. Borrows the model; rebuild it after edits. */
#ifndef OQ_GRAPH_H
#define OQ_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "onnx.pb-c.h"
#include "status.h"

/* Subgraphs nested deeper than this are refused (ELIMIT); the loader's
 * nesting limit keeps real models far below it. */
#define OQ_GRAPH_MAX_NESTING 32

typedef struct oq_graph oq_graph;

typedef enum {
    OQ_VALUE_INPUT,       /* a real graph input: listed in graph.input, no initializer */
    OQ_VALUE_INITIALIZER, /* graph.initializer or sparse_initializer; also when the name is
                             listed in graph.input too (IR 3 style): treated as a constant */
    OQ_VALUE_CONSTANT,    /* output of a Constant node (default domain) */
    OQ_VALUE_NODE,        /* output of any other node */
    OQ_VALUE_OUTER,       /* subgraphs only: a value of an enclosing graph referenced here */
} oq_value_kind;

typedef struct oq_value {
    const char *name;        /* borrowed from the model */
    oq_value_kind kind;
    int producer;            /* node index (NODE, CONSTANT), else -1 */
    int producer_slot;       /* output position in the producer, else -1 */
    /* Nodes of this graph reading the value, ascending and each listed ONCE,
     * even when it reads the value in several input slots. A node whose
     * subgraph reads the value from outer scope is listed too (an implicit
     * input: it must run after the producer). */
    int n_consumers;
    const int *consumers;
    int n_uses;              /* explicit input slots reading it (a node reading it twice
                                counts twice; implicit subgraph reads not counted) */
    /* Constant data: the initializer, or a Constant node's `value` attribute;
     * NULL for other Constant forms (value_float, value_ints, sparse_value, ...)
     * and for sparse initializers. For OUTER values, copied from the value it
     * resolves to. */
    const Onnx__TensorProto *tensor;
    const Onnx__SparseTensorProto *sparse; /* sparse initializer, else NULL */
    /* CONSTANT only: the Constant node's value attribute in whichever form it
     * uses (value, value_float, value_ints, sparse_value, ...), else NULL. */
    const Onnx__AttributeProto *const_attr;
    /* Declared type: the first of graph.input, graph.output, value_info naming
     * it that carries a type (copied from the resolved value for OUTER). */
    const Onnx__ValueInfoProto *info;
    int graph_input;         /* index in graph.input, else -1 */
    int graph_output;        /* first index in graph.output, else -1 */
    int initializer;         /* index in graph.initializer, else -1 */
    /* OUTER only: where the name resolves (an enclosing graph and its value
     * index, itself possibly OUTER when it comes from further out). */
    const oq_graph *outer_graph;
    int outer_value;
} oq_value;

/* A subgraph attribute of a node (If's then_branch/else_branch, Loop's and
 * Scan's body, or one entry of a GRAPHS attribute). */
typedef struct {
    int node;                /* index of the owning node in the parent graph */
    const char *attr;        /* attribute name, borrowed */
    int attr_index;          /* position in a GRAPHS attribute, -1 for a GRAPH one */
    oq_graph *graph;         /* owned by the root view */
} oq_subgraph;

/* Builds the view of m's main graph and, recursively, of every subgraph.
 * Fails with EMODEL (message naming the node and value) when: a value is
 * produced twice (two nodes, a node and a graph input/initializer, or two
 * initializers); a node input or graph output names a value that no node,
 * graph input, initializer or (in subgraphs) enclosing graph defines -- an
 * empty input name means an omitted optional input and is fine; the nodes
 * have a cycle (subgraph outer-scope reads count as edges); an opset domain
 * is imported twice. A view that exists is therefore a valid DAG.
 * Names defined inside a subgraph shadow enclosing ones (not an error).
 * Model-local functions and training graphs are not indexed. */
oq_status oq_graph_new(oq_model *m, oq_graph **out, oq_error *err);
/* Rebuilds a root view from its model after edits. On failure the view is
 * left empty (no nodes, no values) but must still be freed. Pointers into the
 * old view (values, subgraph views) are invalid afterwards either way. */
oq_status oq_graph_refresh(oq_graph *g, oq_error *err);
/* Frees a root view with all its subgraph views. NULL, and subgraph views
 * (owned by their root), are ignored. */
void oq_graph_free(oq_graph *g);

oq_model *oq_graph_model(const oq_graph *g);
Onnx__GraphProto *oq_graph_proto(const oq_graph *g);
/* The enclosing graph and owning node of a subgraph view; NULL / -1 for the root. */
const oq_graph *oq_graph_parent(const oq_graph *g);
int oq_graph_owner_node(const oq_graph *g);
int oq_graph_depth(const oq_graph *g); /* 0 for the main graph */

/* Opset version imported for domain ("" and "ai.onnx" are the same domain),
 * 0 when not imported. A model with no opset_import at all (IR < 3) has
 * opset 1 of the default domain. */
int64_t oq_graph_opset(const oq_graph *g, const char *domain);

/* Nodes, in file order. */
int oq_graph_node_count(const oq_graph *g);
Onnx__NodeProto *oq_graph_node(const oq_graph *g, int node); /* NULL when out of range */
/* Value index per input slot (-1 for an omitted optional input ""). */
const int *oq_graph_node_inputs(const oq_graph *g, int node, int *count);
/* Value index per output slot (-1 for an omitted optional output ""). */
const int *oq_graph_node_outputs(const oq_graph *g, int node, int *count);
/* Values of this graph the node's subgraphs read from outer scope, ascending. */
const int *oq_graph_node_implicit_inputs(const oq_graph *g, int node, int *count);
/* "node 'conv1' (Conv)" or "node #3 (Conv)" into buf; returns buf. */
const char *oq_graph_node_label(const oq_graph *g, int node, char *buf, size_t len);

/* Every node once, producers before consumers; among nodes ready at the
 * same time the one earlier in the file comes first, so a graph already
 * sorted keeps its order. */
const int *oq_graph_topo_order(const oq_graph *g, int *count);

/* Values known to this graph: its own plus the outer-scope values it reads. */
int oq_graph_value_count(const oq_graph *g);
const oq_value *oq_graph_value(const oq_graph *g, int value); /* NULL when out of range */
int oq_graph_find_value(const oq_graph *g, const char *name);  /* index or -1 */
const oq_value *oq_graph_value_by_name(const oq_graph *g, const char *name);

/* Inputs the caller must feed (graph.input minus initializers), in
 * graph.input order, as value indices. */
const int *oq_graph_real_inputs(const oq_graph *g, int *count);
/* graph.output as value indices, in order. */
const int *oq_graph_outputs(const oq_graph *g, int *count);

/* Direct subgraphs, ordered by node then attribute; recurse for deeper ones. */
int oq_graph_subgraph_count(const oq_graph *g);
const oq_subgraph *oq_graph_subgraph(const oq_graph *g, int i);

/* True for INITIALIZER and CONSTANT values, and OUTER ones resolving to them. */
bool oq_value_is_constant(const oq_value *v);

/* Tensor type of a value: from its TensorProto (or a Constant's scalar/list
 * attribute) when it has one, else from its ValueInfo. */
typedef enum {
    OQ_DIM_UNKNOWN = 0, /* no value and no name */
    OQ_DIM_VALUE,       /* dim_value */
    OQ_DIM_PARAM,       /* symbolic dim_param */
} oq_dim_kind;

typedef struct {
    oq_dim_kind kind;
    int64_t value;     /* OQ_DIM_VALUE */
    const char *param; /* OQ_DIM_PARAM, borrowed */
} oq_dim;

/* TensorProto.DataType of the value, 0 when unknown or not a tensor. */
int32_t oq_value_elem_type(const oq_value *v);
/* Rank, or -1 when the shape is unknown (or the rank exceeds INT_MAX). */
int oq_value_rank(const oq_value *v);
/* One dimension; OQ_DIM_UNKNOWN when axis is out of range or unknown. */
oq_dim oq_value_dim(const oq_value *v, int axis);

/* Typed attribute access. An absent attribute yields the default (or
 * NULL/0 for the borrowed forms) with OQ_OK; an attribute of another type
 * is an error (EMODEL naming the node and attribute), never a silent
 * default. Attributes without a `type` field (IR 1) are typed by the field
 * that is set. Borrowed results live as long as the node. */
const Onnx__AttributeProto *oq_node_attr(const Onnx__NodeProto *n, const char *name);
oq_status oq_node_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def,
                           int64_t *out, oq_error *err);
oq_status oq_node_attr_float(const Onnx__NodeProto *n, const char *name, float def,
                             float *out, oq_error *err);
oq_status oq_node_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out,
                            size_t *count, oq_error *err);
oq_status oq_node_attr_floats(const Onnx__NodeProto *n, const char *name, const float **out,
                              size_t *count, oq_error *err);
/* Copies the string (bytes without NUL, plus a terminator) into buf of cap
 * bytes; def (may be NULL = "") when absent. ELIMIT if it does not fit,
 * EMODEL if it holds a NUL byte. */
oq_status oq_node_attr_string(const Onnx__NodeProto *n, const char *name, const char *def,
                              char *buf, size_t cap, oq_error *err);
oq_status oq_node_attr_tensor(const Onnx__NodeProto *n, const char *name,
                              const Onnx__TensorProto **out, oq_error *err);
oq_status oq_node_attr_graph(const Onnx__NodeProto *n, const char *name,
                             const Onnx__GraphProto **out, oq_error *err);
/* The attribute's type, inferred for untyped (IR 1) attributes. */
Onnx__AttributeProto__AttributeType oq_attr_type(const Onnx__AttributeProto *a);

/* True when node is op_type in the default ONNX domain ("" or "ai.onnx"). */
bool oq_node_is_onnx_op(const Onnx__NodeProto *n, const char *op_type);

#endif
