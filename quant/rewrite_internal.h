/* rewrite_internal.h: what rewrite.c (shared helpers, static QDQ) and
 * rewrite_dynamic.c (dynamic and weight-only modes) share: one editing
 * context over the main graph, node decisions, and the emitters of
 * quantized initializers and QuantizeLinear/DequantizeLinear nodes. */
#ifndef OQ_REWRITE_INTERNAL_H
#define OQ_REWRITE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edit.h"
#include "graph.h"
#include "params.h"
#include "rewrite.h"

/* Editing context: a view of the main graph taken before any edit (node and
 * value indices below refer to it), the namer, and counters. */
typedef struct {
    oq_model *m;
    Onnx__GraphProto *gp;
    oq_graph *g;
    oq_namer *nm;
    const oq_quant_config *cfg;
    int64_t opset;          /* default-domain opset */
    int n_nodes, n_values;
    Onnx__NodeProto **nodes; /* the original nodes (stable pointers across inserts) */
    int32_t *vtype;         /* element type per value, declared or inferred (0 = unknown) */
    char **vnames;          /* value names, copied: edits free the model's strings */
    bool *cderived;         /* per value: computed from constants only (the executor folds
                               it at plan time, so no observer ever sees it) */
    int *fold;              /* per value: the Reshape/Flatten/Squeeze/Unsqueeze node that
                               computes it from constants only (read as a constant), or -1 */
    int n_q, n_dq;          /* QuantizeLinear / DequantizeLinear nodes added */
} oq_rw;

oq_status oq_rw_open(oq_rw *rw, oq_model *m, const oq_quant_config *cfg, oq_error *err);
void oq_rw_close(oq_rw *rw);
/* Sorts the node list topologically and checks the graph still builds. */
oq_status oq_rw_finish(oq_rw *rw, oq_error *err);

const char *oq_rw_value_name(const oq_rw *rw, int v);
bool oq_rw_value_is_float(const oq_rw *rw, int v);
/* The input value of node slot, -1 when absent or omitted. */
int oq_rw_input(const oq_rw *rw, int node, int slot);
int oq_rw_output(const oq_rw *rw, int node, int slot);
/* A constant: an initializer, or a reshape-like node of constants (the
 * executor folds those, so calibration never sees them: they are read as
 * constants and the node is dropped once nothing reads it). */
bool oq_rw_is_const(const oq_rw *rw, int v);
/* Computed from constants only but not readable as a constant here. */
bool oq_rw_is_unreadable_const(const oq_rw *rw, int v);
/* Shape of a constant; false when unknown. */
bool oq_rw_const_shape(const oq_rw *rw, int v, int *rank, int64_t *dims);
/* Decodes the constant value v into a new float tensor (EUNSUPPORTED for
 * non-float data). */
oq_status oq_rw_const_tensor(const oq_rw *rw, int v, oq_tensor **out, oq_error *err);

/* Result bookkeeping: res->nodes gets one entry per original node. */
oq_status oq_rw_result_init(oq_rw *rw, oq_rewrite_result *res, oq_error *err);
oq_status oq_rw_decide(oq_rewrite_result *res, int node, bool quantized, bool excluded,
                       oq_error *err, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Exclusion by cfg->exclude_op_types or exclude_nodes (exact or fnmatch);
 * writes why into buf and returns true when excluded. */
bool oq_rw_excluded(const oq_rw *rw, int node, char *buf, size_t len);
/* Is op_type selected by cfg->op_types (or, when empty, by def)? */
bool oq_rw_op_selected(const oq_quant_config *cfg, const char *op_type,
                       const char *const *def, size_t n_def);
bool oq_rw_pattern_match(const char *pattern, const char *name);

/* A fresh unique name from prefix + suffix (owned by the namer). */
oq_status oq_rw_name(oq_rw *rw, const char *prefix, const char *suffix, const char **out,
                     oq_error *err);
/* Adds t as a new initializer named after prefix+suffix; *name borrows. */
oq_status oq_rw_add_init(oq_rw *rw, const char *prefix, const char *suffix, const oq_tensor *t,
                         const char **name, oq_error *err);
/* Scale (float) and zero point (qtype) initializers: rank 0 when !vector
 * (per-tensor, as ORT's fusions want scalars), else 1-D of n. */
oq_status oq_rw_add_qparams(oq_rw *rw, const char *base, const oq_qparams *p, size_t n,
                            oq_dtype qtype, bool vector, const char **scale, const char **zp,
                            oq_error *err);
/* Appends a node named after prefix; outputs named after out_prefix+suffix
 * are made unique and returned in outs_made (may be NULL). */
oq_status oq_rw_add_node(oq_rw *rw, const char *op_type, const char *domain, const char *prefix,
                         const char *const *inputs, size_t n_in, const char *const *outputs,
                         size_t n_out, Onnx__NodeProto **out, oq_error *err);
/* x -> DequantizeLinear(scale, zp[, axis]) -> new value named base+"_dequantized". */
oq_status oq_rw_add_dq(oq_rw *rw, const char *x, const char *scale, const char *zp, int axis,
                       const char *base, const char **out, oq_error *err);
oq_status oq_rw_add_q(oq_rw *rw, const char *x, const char *scale, const char *zp,
                      const char *base, const char **out, oq_error *err);

/* A quantized weight: the initializers and the parameters used. */
typedef struct {
    char *src;             /* float initializer name */
    int axis;              /* per-channel axis, -1 per tensor */
    oq_dtype qtype;
    oq_qparams *p;         /* n entries (malloc'd) */
    size_t n;
    const char *q_name, *scale_name, *zp_name; /* borrowed from the namer */
} oq_rw_weight;

void oq_rw_weight_clear(oq_rw_weight *w);
/* Parameters for float weight w (per axis when axis >= 0) into *out. */
oq_status oq_rw_weight_params(const char *src, const oq_tensor *w, int axis, oq_dtype qtype,
                              bool symmetric, bool reduce_range, oq_rw_weight *out, oq_error *err);
/* Quantizes w with wt's parameters (possibly raised for a bias since) and
 * adds the quantized tensor, scale and zero point initializers. */
oq_status oq_rw_weight_emit(oq_rw *rw, const oq_tensor *w, oq_rw_weight *wt, oq_error *err);
/* Removes the folded reshape-like nodes nothing reads any more, and their
 * constant inputs when unused. */
oq_status oq_rw_drop_dead_folds(oq_rw *rw, oq_error *err);
/* Removes float initializers among names that no node reads any more and
 * that are no graph output. */
oq_status oq_rw_drop_unused_inits(oq_rw *rw, char *const *names, size_t n, oq_error *err);

/* Checks that the model's opset can hold Q/DQ of these types. */
oq_status oq_rw_check_qtypes(const oq_rw *rw, oq_dtype act, oq_dtype weight, bool per_channel,
                             oq_error *err);

#endif
