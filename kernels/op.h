/* op.h: what an operator implementation provides to the executor.
 * Each op family lives in its own file (kernels/ops_<family>.c) and exports
 * one table of oq_op entries; the registry resolves (domain, op_type, opset)
 * to an entry when a plan is built, never during a run.
 *
 * Life of a node: prepare (once per plan: parse and check attributes, build
 * op state such as packed weights) -> for every run: infer (output dtypes
 * and shapes from the inputs' dtypes, shapes and, for shape-like inputs,
 * values) -> the executor allocates the outputs -> run (compute; never
 * allocates outputs, may use ctx scratch). */
#ifndef OQ_OP_H
#define OQ_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph.h"
#include "onnx.pb-c.h"
#include "postop.h"
#include "status.h"
#include "tensor.h"
#include "threadpool.h"

typedef struct oq_node_ctx {
    const Onnx__NodeProto *node; /* borrowed from the model */
    const char *label;           /* "node 'conv1' (Conv)" for error messages */
    int opset;                   /* version of the node's domain the model imports */
    int n_inputs, n_outputs;     /* slots as written in the node */
    /* Which inputs are constants (initializers, Constant nodes, or folded):
     * prepare may read their values through const_inputs[i] (NULL otherwise). */
    const oq_tensor *const *const_inputs;
    void *state;                 /* op-private, set by prepare, freed by release */
    oq_pool *pool;               /* worker threads for parallel loops */
    /* Fusion (oq_plan_opts.fuse): prepare sets accepts_post when run can
     * apply an element-wise program to its single float output as it writes
     * it; the executor then may set post for a run (else NULL), having
     * checked that a residual step's tensor has the output's shape. */
    bool accepts_post;
    const oq_post *post;
} oq_node_ctx;

typedef struct oq_op {
    const char *domain;   /* "" for the default ONNX domain */
    const char *op_type;
    int since_version;    /* first opset version this entry implements */
    int until_version;    /* last opset version it implements (inclusive) */
    /* Optional. Parses and checks attributes, sets ctx->state. */
    oq_status (*prepare)(oq_node_ctx *ctx, oq_error *err);
    /* Optional. Frees ctx->state. */
    void (*release)(void *state);
    /* Sets out[i].dtype, .rank and .dims for every output slot from the
     * inputs (in[i] is NULL for an omitted optional input). The executor
     * then computes sizes and allocates data. */
    oq_status (*infer)(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                       oq_error *err);
    /* Computes the outputs into out[i].data (allocated, zero-filled is NOT
     * guaranteed). */
    oq_status (*run)(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                     oq_error *err);
} oq_op;

typedef struct {
    const oq_op *ops;
    size_t count;
} oq_op_table;

/* The op families; each ops_<family>.c defines its table. */
extern const oq_op_table oq_ops_elementwise; /* unary/binary math, activations, compare, Where, Cast */
extern const oq_op_table oq_ops_shape;       /* Reshape, Transpose, Concat, Slice, Gather, Pad, ... */
extern const oq_op_table oq_ops_nn;          /* Conv, ConvTranspose, Gemm, MatMul, pools, norms */
extern const oq_op_table oq_ops_reduce;      /* Reduce*, ArgMax/ArgMin, Softmax family */
extern const oq_op_table oq_ops_quant;       /* QuantizeLinear, DequantizeLinear, QLinear*, *Integer */

/* ---- helpers for implementations (kernels/kutil.c) ---------------------- */

/* Sets t's dtype and shape (validating: rank <= OQ_MAX_RANK, dims >= 0). */
oq_status oq_out_shape(oq_tensor *t, oq_dtype dtype, int rank, const int64_t *dims,
                       oq_error *err);
/* Numpy-style broadcast of n shapes into out (rank = max rank); EINVAL
 * naming the ctx label when dims are incompatible. */
oq_status oq_broadcast_shape(const oq_node_ctx *ctx, const oq_tensor *const *shapes, int n,
                             int *rank, int64_t *dims, oq_error *err);
/* Element strides of t when broadcast to (rank, dims): 0 on broadcast axes. */
void oq_broadcast_strides(const oq_tensor *t, int rank, const int64_t *dims, int64_t *strides);
/* Normalises a possibly negative axis against rank; EINVAL if out of range. */
oq_status oq_norm_axis(const oq_node_ctx *ctx, int64_t axis, int rank, int *out, oq_error *err);
/* Reads an integer tensor (int32 or int64) element as int64. */
int64_t oq_tensor_get_i64(const oq_tensor *t, size_t i);
/* Reads any numeric tensor element as double. */
double oq_tensor_get_f64(const oq_tensor *t, size_t i);
/* IEEE half <-> float. */
float oq_half_to_float(uint16_t h);
uint16_t oq_float_to_half(float f);
float oq_bf16_to_float(uint16_t h);
uint16_t oq_float_to_bf16(float f);
/* The node's attributes, with the ctx label on errors. */
#define OQ_ATTR_INT(ctx, name, def, out, err) oq_node_attr_int((ctx)->node, name, def, out, err)

#endif
