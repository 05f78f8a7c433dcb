/* edit.h: editing primitives on a model's protobuf messages, allocated with
 * oq_model_allocator(m) so oq_model_free frees them. Edits invalidate graph
 * views: oq_graph_refresh afterwards, which also re-validates the graph. */
#ifndef OQ_EDIT_H
#define OQ_EDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "model.h"
#include "onnx.pb-c.h"
#include "status.h"
#include "tensor.h"

/* Position meaning "after the last node" for oq_edit_insert_node. */
#define OQ_EDIT_APPEND ((size_t)-1)

/* Nodes. g is the model's main graph (oq_model_proto(m)->graph) or any of
 * its subgraphs. The new node is placed at pos (0..n_node, or
 * OQ_EDIT_APPEND); domain and name may be NULL (unset); a NULL entry in
 * inputs or outputs becomes "" (an omitted optional slot). *out (optional)
 * borrows the new node. */
oq_status oq_edit_insert_node(oq_model *m, Onnx__GraphProto *g, size_t pos,
                              const char *op_type, const char *domain, const char *name,
                              const char *const *inputs, size_t n_inputs,
                              const char *const *outputs, size_t n_outputs,
                              Onnx__NodeProto **out, oq_error *err);
/* Removes and frees node `index`; its inputs/outputs are not rewired. */
oq_status oq_edit_remove_node(oq_model *m, Onnx__GraphProto *g, size_t index, oq_error *err);

/* Rewrites the node lists of view's graph and of all its subgraphs in the
 * view's topological order. ONNX requires node lists to be sorted; edits
 * that append consumers before producers break that, so sort (with a view
 * refreshed after the edits) before saving. The view is stale afterwards. */
oq_status oq_edit_sort_nodes(oq_model *m, const oq_graph *view, oq_error *err);

/* Sets input/output slot `slot` of node to name (slot == count appends). */
oq_status oq_edit_set_node_input(oq_model *m, Onnx__NodeProto *node, size_t slot,
                                 const char *name, oq_error *err);
oq_status oq_edit_set_node_output(oq_model *m, Onnx__NodeProto *node, size_t slot,
                                  const char *name, oq_error *err);
/* Makes node read new_name wherever it read old_name: its input slots and
 * the outer-scope references of its subgraphs (not where a subgraph defines
 * old_name itself). *replaced (optional) counts the slots changed; none is
 * not an error. All-or-nothing: on failure the node is unchanged. */
oq_status oq_edit_replace_input(oq_model *m, Onnx__NodeProto *node, const char *old_name,
                                const char *new_name, size_t *replaced, oq_error *err);

/* Attributes: set replaces an attribute of the same name (freeing it) or
 * appends one. */
oq_status oq_edit_set_attr_int(oq_model *m, Onnx__NodeProto *node, const char *name,
                               int64_t v, oq_error *err);
oq_status oq_edit_set_attr_float(oq_model *m, Onnx__NodeProto *node, const char *name,
                                 float v, oq_error *err);
oq_status oq_edit_set_attr_ints(oq_model *m, Onnx__NodeProto *node, const char *name,
                                const int64_t *v, size_t n, oq_error *err);
oq_status oq_edit_set_attr_floats(oq_model *m, Onnx__NodeProto *node, const char *name,
                                  const float *v, size_t n, oq_error *err);
oq_status oq_edit_set_attr_string(oq_model *m, Onnx__NodeProto *node, const char *name,
                                  const char *v, oq_error *err);
/* Steals tp (allocated with oq_model_allocator(m)), even on failure. */
oq_status oq_edit_set_attr_tensor_new(oq_model *m, Onnx__NodeProto *node, const char *name,
                                      Onnx__TensorProto *tp, oq_error *err);
/* Steals sub (a GraphProto allocated with oq_model_allocator(m), e.g. an
 * If branch built with the functions here), even on failure. */
oq_status oq_edit_set_attr_graph_new(oq_model *m, Onnx__NodeProto *node, const char *name,
                                     Onnx__GraphProto *sub, oq_error *err);
/* A new empty GraphProto named name (may be NULL), allocated with the model's
 * allocator, to fill and hand to oq_edit_set_attr_graph_new. */
oq_status oq_edit_graph_new(oq_model *m, const char *name, Onnx__GraphProto **out,
                            oq_error *err);
/* Removes an attribute; ENOTFOUND when the node has none of that name. */
oq_status oq_edit_remove_attr(oq_model *m, Onnx__NodeProto *node, const char *name,
                              oq_error *err);

/* Initializers. Adding a name that g already has as an initializer is
 * EINVAL. In an IR < 4 model's main graph every initializer must also be a
 * graph input, so add also declares one (typed from the tensor) when absent;
 * replace retypes graph.input/output/value_info entries of that name to the
 * new tensor's type and shape; remove also drops a graph.input of that name
 * (it only fed the initializer; leaving it would turn a constant into a
 * required input). */
oq_status oq_edit_add_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                  const oq_tensor *t, oq_error *err);
/* Steals tp (allocated with oq_model_allocator(m), named), even on failure. */
oq_status oq_edit_add_initializer_proto_new(oq_model *m, Onnx__GraphProto *g,
                                            Onnx__TensorProto *tp, oq_error *err);
/* Replaces the data, type and shape of initializer name (ENOTFOUND if absent),
 * keeping its position; the old TensorProto is freed. */
oq_status oq_edit_replace_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                      const oq_tensor *t, oq_error *err);
oq_status oq_edit_remove_initializer(oq_model *m, Onnx__GraphProto *g, const char *name,
                                     oq_error *err);

/* Graph inputs/outputs with a tensor type: elem_type 0 leaves the type out;
 * rank < 0 leaves the shape out; a negative dim is an unknown dimension. */
oq_status oq_edit_add_graph_input(oq_model *m, Onnx__GraphProto *g, const char *name,
                                  int32_t elem_type, int rank, const int64_t *dims,
                                  oq_error *err);
oq_status oq_edit_add_graph_output(oq_model *m, Onnx__GraphProto *g, const char *name,
                                   int32_t elem_type, int rank, const int64_t *dims,
                                   oq_error *err);

/* Renames value old_name to new_name throughout g: node inputs and outputs,
 * graph inputs/outputs, value_info, initializers, quantization annotations,
 * and references from subgraphs that read it from outer scope (a subgraph
 * defining old_name itself shadows it and is left alone). EINVAL when
 * new_name is already defined in g; ENOTFOUND when g never mentions old_name.
 * All-or-nothing: on failure the model is unchanged. */
oq_status oq_edit_rename_value(oq_model *m, Onnx__GraphProto *g, const char *old_name,
                               const char *new_name, oq_error *err);

/* Sets the imported opset version of domain ("" and "ai.onnx" are the
 * same; the existing entry keeps its spelling), adding the import if missing. */
oq_status oq_edit_set_opset(oq_model *m, const char *domain, int64_t version, oq_error *err);

/* Unique names. A namer snapshots every value and node name of the model
 * (main graph and subgraphs; names share one namespace) and hands out names
 * clashing with none of them nor with any name it returned before: prefix
 * itself when free, else prefix_1, prefix_2, ... Names the caller adds to
 * the model by other means after oq_namer_new should be reserved. */
typedef struct oq_namer oq_namer;

oq_status oq_namer_new(oq_model *m, oq_namer **out, oq_error *err);
void oq_namer_free(oq_namer *nm); /* NULL is a no-op */
/* *out is owned by the namer and valid until oq_namer_free. */
oq_status oq_namer_make(oq_namer *nm, const char *prefix, const char **out, oq_error *err);
oq_status oq_namer_reserve(oq_namer *nm, const char *name, oq_error *err);
bool oq_namer_taken(const oq_namer *nm, const char *name);

#endif
