/* postop.h: element-wise "post-ops" a producer (Conv) applies to its output
 * as it writes it, so that Conv -> Relu, Conv -> Add(residual) -> Relu or
 * Conv -> HardSwish (or its Add/Clip/Div/Mul spelling) cost one pass over
 * memory instead of one per node. The executor matches the node chains
 * (exec.c) and hands the producer a short program of steps; this file
 * recognises which single nodes are such steps and runs the programs. */
#ifndef OQ_POSTOP_H
#define OQ_POSTOP_H

#include <stdbool.h>
#include <stddef.h>

#include "onnx.pb-c.h"
#include "tensor.h"

typedef enum {
    OQ_POST_MAX_C,      /* v = v < a ? a : v (Relu: a = 0; Clip's lower bound) */
    OQ_POST_MIN_C,      /* v = v > a ? a : v (Clip's upper bound) */
    OQ_POST_ADD_C,      /* v = v + a */
    OQ_POST_SUB_C,      /* v = v - a */
    OQ_POST_MUL_C,      /* v = v * a */
    OQ_POST_DIV_C,      /* v = v / a */
    OQ_POST_LEAKY,      /* v = v < 0 ? a * v : v */
    OQ_POST_HARDSIGMOID,/* v = clamp(a * v + b, 0, 1) */
    OQ_POST_HARDSWISH,  /* v = v * clamp(a * v + b, 0, 1) */
    OQ_POST_ADD_RES,    /* v = v + res[i]: a tensor of the output's shape */
    OQ_POST_MUL_X,      /* v = v * x: x is the producer's own output, before the steps */
} oq_post_kind;

typedef struct {
    oq_post_kind kind;
    float a, b;
} oq_post_step;

#define OQ_POST_MAX_STEPS 8

/* A program: steps applied in order to every element. res is the residual
 * tensor's data (same shape and layout as the output) when a step is
 * OQ_POST_ADD_RES, else NULL; it is set per run. */
typedef struct {
    int n;
    oq_post_step steps[OQ_POST_MAX_STEPS];
    const float *res;
} oq_post;

/* dst[i] = program(src[i]) for i < n, reading res[i] for OQ_POST_ADD_RES
 * (res points at the residual element matching src[0]; NULL when the
 * program has no such step). dst may equal src. */
void oq_post_apply(const oq_post *p, float *dst, const float *src, const float *res, size_t n);

/* The program over rows [0, rows) x [0, cols) of a matrix c with row
 * stride ldc, in place, the residual res (NULL when none) laid out as c. */
void oq_post_apply_rows(const oq_post *p, float *c, size_t ldc, size_t rows, size_t cols, const float *res);

/* Applies the program over a whole output with the residual at the same
 * offsets: out[i] = program(out[i]) with res[i]. */
static inline void oq_post_apply_all(const oq_post *p, float *out, size_t n) {
    oq_post_apply(p, out, out, p->res, n);
}

/* One input of a node as the matcher sees it. */
typedef struct {
    bool present;              /* false for an omitted optional input */
    const oq_tensor *constant; /* its value when constant, else NULL */
} oq_post_in;

typedef enum {
    OQ_POST_NO,       /* not an element-wise step on this value */
    OQ_POST_STEPS,    /* out[0 .. *n_out) are the whole node */
    OQ_POST_OTHER_IN, /* out[0] is an Add (OQ_POST_ADD_RES) or Mul (OQ_POST_MUL_X) whose
                         other input, *other, is not constant: the executor decides
                         whether it is a residual it can feed or the chain's root */
} oq_post_match;

/* How node `np` (opset `opset` of its domain) acts on the running value
 * when that value is its input `slot` (inputs in[0 .. n_in)). Constants
 * must be float scalars so the output's shape is the value's. At most two
 * steps (Clip). */
oq_post_match oq_post_match_node(const Onnx__NodeProto *np, int opset, int slot, const oq_post_in *in,
                                 int n_in, oq_post_step out[2], int *n_out, int *other);

#endif
