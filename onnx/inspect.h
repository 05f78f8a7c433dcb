/* inspect.h: a quantization-oriented summary of a loaded model as a jansson
 * object, shared by `onnxq inspect` and the server's POST /v1/inspect.
 * It reads the protobuf structs only; no tensor data is decoded or read.
 *
 * JSON schema (every key listed is always present, in this order):
 *   ir_version        int | null
 *   producer_name     string ("" when absent); also producer_version,
 *                     model_domain, graph_name
 *   model_version     int | null
 *   opset_imports     {domain: version}; the default domain "" is spelled
 *                     "ai.onnx"; repeated domains keep the first entry
 *   default_opset     int | null (ai.onnx version; null when not imported)
 *   inputs, outputs   [{name, type, dtype, shape}]
 *                       type  "tensor" | "sparse_tensor" | "sequence" | "map"
 *                             | "optional" | "unknown"
 *                       dtype "float", "int64", ... (oq_dtype_name) | null
 *                       shape [dim, ...] | null (rank unknown); a dim is an
 *                             int, a string (symbolic, e.g. "N") or null
 *                     Graph inputs that have an initializer of the same name
 *                     (IR < 4 lists every weight as an input) are left out of
 *                     inputs and named in initializer_inputs instead.
 *   initializer_inputs [name]
 *   nodes             {count, by_op_type: {op: n}, by_domain: {domain: n},
 *                      subgraph_count, subgraph_by_op_type: {op: n},
 *                      local_functions}
 *                     count/by_op_type: the main graph; subgraph_*: nodes
 *                     inside If/Loop/Scan bodies at any depth. Ops of a
 *                     non-default domain are keyed "domain:op_type".
 *                     by_domain covers all graphs. These maps are sorted by
 *                     key.
 *   parameters        {count, bytes, tensors, initializers, constant_nodes,
 *                      external_tensors, by_dtype: {dtype: {tensors, count,
 *                      bytes}}}
 *                     Every initializer, sparse initializer and Constant node
 *                     value (value, sparse_value, value_float(s),
 *                     value_int(s), value_string(s)) of the main graph and
 *                     its subgraphs. count = elements, bytes from dims x
 *                     dtype size (strings: the bytes of their data).
 *                     by_dtype lists the dtypes present in ONNX data-type
 *                     order (float first).
 *   quantizable       {count, skipped_constant, skipped_non_float,
 *                      by_op_type: {op: {kind, integer_form, count,
 *                      constant_weight_count, foldable_weight_count,
 *                      nodes: [{index, name, constant_weight,
 *                      foldable_weight}]}}}
 *                     Main-graph, default-domain nodes whose op type is in
 *                     the table in inspect.c (ops with an integer kernel in
 *                     ONNX Runtime's QDQ/QLinear path), in table order; only
 *                     op types present appear. kind is "weighted",
 *                     "elementwise", "activation", "pool" or
 *                     "data_movement". Left out, only counted in skipped_*:
 *                     nodes that compute constants only (folded before
 *                     quantizing) and nodes whose data input is known to be
 *                     integer/bool (shape arithmetic such as Shape -> Gather
 *                     -> Unsqueeze -> Concat), judged from declared types and
 *                     a forward pass over the ops. index is the position in
 *                     graph.node; name is null when the node is unnamed.
 *                     For weighted kinds (null otherwise): constant_weight =
 *                     input 1 is an initializer or a Constant node's output;
 *                     foldable_weight = input 1 is that or is computed from
 *                     constants only (e.g. a Reshape of an initializer).
 *                     The *_count fields are null for non-weighted kinds.
 *   warnings          [{code, message}], codes: "no_default_opset",
 *                     "opset_below_10", "opset_below_13", "already_quantized",
 *                     "unknown_domain", "external_data",
 *                     "initializer_inputs" (IR >= 4 only),
 *                     "no_quantizable_nodes"
 *
 * Strings from the model that are not valid UTF-8 are reported with each bad
 * byte replaced by '?'. */
#ifndef OQ_INSPECT_H
#define OQ_INSPECT_H

#include <jansson.h>

#include "model.h"
#include "status.h"

/* Builds the summary of m. On success *out is a new reference the caller
 * releases with json_decref; on failure *out is NULL and err says why
 * (OQ_EMODEL for a tensor whose dims are negative or overflow, OQ_ELIMIT for
 * subgraphs nested too deeply, OQ_ENOMEM). m is not modified. */
oq_status oq_inspect_model(oq_model *m, json_t **out, oq_error *err);

#endif
