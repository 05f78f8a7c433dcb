/* nn.h: private to the nn op family (ops_nn.c and nn_*.c): the entry points
 * the family table lists, the sliding-window geometry Conv, ConvTranspose and
 * the pools share, and small dtype helpers. Not part of the kernel contract. */
#ifndef OQ_NN_H
#define OQ_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "op.h"

#define OQ_NN_MAX_SP (OQ_MAX_RANK - 2) /* spatial axes after N and C */

/* A parallel loop costs tens of microseconds to wake the pool (measured
 * ~28 us on the 2-core VM): chunks get at least this many elementary
 * operations (multiply-adds, compares, copies), so small ops stay on the
 * calling thread. */
#define OQ_NN_PAR_GRAIN 262144
/* min_chunk for oq_parallel_for over items of `work` operations each */
#define OQ_NN_MIN_CHUNK(work) ((size_t)OQ_NN_PAR_GRAIN / ((size_t)(work) + 1) + 1)

/* Hot loops get AVX-512 and AVX2 clones picked at load time (the portable
 * version stays); the kernels/ flags themselves target baseline x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OQ_NN_NO_CLONES)
#define OQ_NN_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define OQ_NN_HOT
#endif

typedef enum { OQ_NN_NOTSET, OQ_NN_SAME_UPPER, OQ_NN_SAME_LOWER, OQ_NN_VALID } oq_nn_autopad;

/* Window attributes as written in the node; counts are 0 when absent. */
typedef struct {
    oq_nn_autopad auto_pad;
    size_t n_kernel, n_strides, n_dilations, n_pads;
    int64_t kernel[OQ_NN_MAX_SP], strides[OQ_NN_MAX_SP], dilations[OQ_NN_MAX_SP];
    int64_t pads[2 * OQ_NN_MAX_SP];
} oq_nn_window;

/* Window geometry resolved for one input shape. */
typedef struct {
    int nsp;
    int64_t in[OQ_NN_MAX_SP], out[OQ_NN_MAX_SP], k[OQ_NN_MAX_SP];
    int64_t s[OQ_NN_MAX_SP], d[OQ_NN_MAX_SP], pb[OQ_NN_MAX_SP], pe[OQ_NN_MAX_SP];
} oq_nn_geom;

/* Reads auto_pad, kernel_shape, strides, dilations and pads (values checked
 * where they do not depend on the input: kernel/strides/dilations >= 1,
 * pads >= 0, counts within OQ_NN_MAX_SP). */
oq_status oq_nn_window_parse(const oq_node_ctx *ctx, oq_nn_window *w, oq_error *err);

/* Resolves w for nsp spatial input dims `in` and kernel `k` (from the
 * attribute or the weights) into g: output sizes by the Conv/pool rule
 * (floor, or ceil with the last window starting inside the input or left
 * pad), and pads for auto_pad. EINVAL naming ctx->label on count mismatches
 * or an empty output. */
oq_status oq_nn_window_geom(const oq_node_ctx *ctx, const oq_nn_window *w, int nsp,
                            const int64_t *in, const int64_t *k, bool ceil_mode, oq_nn_geom *g,
                            oq_error *err);

/* Element count as size_t from checked dims (rank <= OQ_MAX_RANK). */
size_t oq_nn_count(const int64_t *dims, int n);

/* Float copies for dtypes computed through float (float16, bfloat16, int8,
 * uint8): `to` converts t's elements into dst, `from` writes src back. */
bool oq_nn_float_via(oq_dtype dt);
void oq_nn_to_float(const oq_tensor *t, float *dst);
void oq_nn_from_float(const float *src, oq_tensor *t);
/* Malloc of n floats with a checked size; NULL on overflow or failure. */
float *oq_nn_alloc_floats(size_t n);

/* Tests: false turns Conv's intrinsic paths (AVX-512 im2col, depthwise) off so the
 * portable ones can be checked on the same machine; returns the previous
 * setting. Not thread-safe against running convs. */
bool oq_nn_conv_set_simd(bool on);

/* 2-D depthwise Conv (nn_dwconv.c): one input channel per group. */
typedef struct {
    const oq_nn_geom *g;
    int64_t C, M, Mg;      /* input channels, output channels, outputs per group */
    const float *x, *w, *b; /* X [N, C, IH, IW], W [M, 1, KH, KW], B [M] or NULL */
    float *y;              /* Y [N, M, OH, OW] */
    bool simd;             /* the AVX-512 path may be used (oq_nn_conv_set_simd) */
    const oq_post *post;   /* fused element-wise program, applied per finished plane; or NULL */
} oq_nn_dw_job;

/* oq_range_fn over the N * M output planes: computes whole planes [q0, q1)
 * (q = n * M + oc), bias included, each plane finished before the next. */
void oq_nn_dw_planes(void *arg, size_t q0, size_t q1);
/* oq_nn_dw_planes over all `planes` on the pool, in chunks sized for the
 * kernel that will run. */
void oq_nn_dw_run(oq_pool *pool, oq_nn_dw_job *j, size_t planes);

/* ---- entry points listed in ops_nn.c ---------------------------------- */
#define OQ_NN_DECLARE(name)                                                              \
    oq_status oq_nn_##name##_prepare(oq_node_ctx *ctx, oq_error *err);                   \
    oq_status oq_nn_##name##_infer(oq_node_ctx *ctx, const oq_tensor *const *in,         \
                                   oq_tensor *out, oq_error *err);                       \
    oq_status oq_nn_##name##_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out, \
                                 oq_error *err);

OQ_NN_DECLARE(conv)
OQ_NN_DECLARE(convtranspose)
OQ_NN_DECLARE(gemm)
OQ_NN_DECLARE(matmul)
OQ_NN_DECLARE(einsum)
OQ_NN_DECLARE(lstm)
OQ_NN_DECLARE(maxpool)
OQ_NN_DECLARE(avgpool)
OQ_NN_DECLARE(globalavgpool)
OQ_NN_DECLARE(globalmaxpool)
OQ_NN_DECLARE(batchnorm)
OQ_NN_DECLARE(instancenorm)
OQ_NN_DECLARE(layernorm)

/* Every prepare above stores one malloc'd block (or NULL) in ctx->state,
 * freed by oq_nn_release, except Conv/ConvTranspose, Gemm and MatMul, whose
 * states also own run scratch and packed weights. */
void oq_nn_release(void *state);
void oq_nn_conv_release(void *state);
void oq_nn_gemm_release(void *state);
void oq_nn_matmul_release(void *state);

#endif
