/* ops_elementwise.h: internals shared by kernels/ops_elementwise*.c, not a
 * public API: the op kinds, the unary float kernels (ops_elementwise_math.c)
 * and the Cast conversion table (ops_elementwise_cast.c). */
#ifndef OQ_OPS_ELEMENTWISE_H
#define OQ_OPS_ELEMENTWISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef enum {
    /* unary math and activations */
    OQ_EW_ABS, OQ_EW_NEG, OQ_EW_SIGN, OQ_EW_CEIL, OQ_EW_FLOOR, OQ_EW_ROUND,
    OQ_EW_RECIPROCAL, OQ_EW_SQRT, OQ_EW_EXP, OQ_EW_LOG, OQ_EW_ERF, OQ_EW_TANH,
    OQ_EW_SIGMOID, OQ_EW_HARDSIGMOID, OQ_EW_HARDSWISH, OQ_EW_RELU, OQ_EW_LEAKYRELU,
    OQ_EW_ELU, OQ_EW_SELU, OQ_EW_SOFTPLUS, OQ_EW_MISH, OQ_EW_GELU,
    /* binary and variadic */
    OQ_EW_ADD, OQ_EW_SUB, OQ_EW_MUL, OQ_EW_DIV, OQ_EW_POW, OQ_EW_PRELU,
    OQ_EW_MAX, OQ_EW_MIN, OQ_EW_SUM, OQ_EW_MEAN,
    OQ_EW_EQUAL, OQ_EW_LESS, OQ_EW_LESSEQ, OQ_EW_GREATER, OQ_EW_GREATEREQ,
    OQ_EW_AND, OQ_EW_OR, OQ_EW_XOR, OQ_EW_NOT,
    /* the rest */
    OQ_EW_WHERE, OQ_EW_CLIP, OQ_EW_CAST, OQ_EW_CASTLIKE, OQ_EW_IDENTITY, OQ_EW_DROPOUT,
    OQ_EW_KIND_COUNT
} oq_ew_kind;

/* Parameters of a unary float op (kind < OQ_EW_ADD). */
typedef struct {
    oq_ew_kind kind;
    float alpha, beta, gamma; /* HardSigmoid, LeakyRelu, Elu, Selu */
    bool gelu_tanh;           /* Gelu approximate="tanh" */
} oq_ew_unary;

/* y[i] = op(x[i]) for i < n; x and y must not overlap. */
void oq_ew_unary_f32(const oq_ew_unary *u, const float *x, float *y, size_t n);
void oq_ew_unary_f64(const oq_ew_unary *u, const double *x, double *y, size_t n);
/* y[i] = min(max(x[i], lo), hi), NaN kept. */
void oq_ew_clip_f32(float lo, float hi, const float *x, float *y, size_t n);

/* Scalar float32 approximations used by the vector loops (exposed for tests). */
float oq_ew_expf(float x);
float oq_ew_logf(float x);
float oq_ew_tanhf(float x);
float oq_ew_erff(float x);

/* float16/bfloat16 <-> float32 for blocks. */
void oq_ew_to_f32(oq_dtype dt, const void *src, float *dst, size_t n);
void oq_ew_from_f32(oq_dtype dt, const float *src, void *dst, size_t n);

/* Converts n elements between numeric/bool types per the Cast rules
 * (float->int truncates toward zero and saturates, NaN -> 0; int->int wraps;
 * anything -> bool is != 0). NULL for pairs not handled (string, float8, int4). */
typedef void (*oq_ew_cast_fn)(const void *src, void *dst, size_t n);
oq_ew_cast_fn oq_ew_cast_kernel(oq_dtype from, oq_dtype to);

#endif
