/* sgemm.h: onnxq's own packed SGEMM. Constant operands (Conv/Gemm/MatMul
 * weights) are packed once when the plan is built; the other operand is
 * packed per call into per-thread scratch. The inner kernel is chosen at
 * run time from the CPU (AVX-512, AVX2+FMA); OpenBLAS stays as the
 * reference and the fallback. All matrices are row-major. */
#ifndef OQ_SGEMM_H
#define OQ_SGEMM_H

#include <stdbool.h>

#include "postop.h"
#include "status.h"
#include "threadpool.h"

/* Kernel families, best first. OQ_SGEMM_AUTO picks the best the CPU has;
 * the environment variable ONNXQ_SGEMM=avx512|avx2|openblas overrides it
 * (read once). */
typedef enum { OQ_SGEMM_AUTO, OQ_SGEMM_AVX512, OQ_SGEMM_AVX2, OQ_SGEMM_OPENBLAS } oq_sgemm_backend;

/* The backend in use, and its name ("avx512", "avx2", "openblas"). */
oq_sgemm_backend oq_sgemm_backend_get(void);
const char *oq_sgemm_backend_name(oq_sgemm_backend b);
/* Tests and benches: force a backend (AUTO restores the default). Returns
 * false, changing nothing, when the CPU lacks it. Not thread-safe against
 * running GEMMs. */
bool oq_sgemm_backend_set(oq_sgemm_backend b);

/* Added to C as it is written: C[i][j] += row_bias[i] + col_bias[j]
 * (either may be NULL), after alpha/beta; then, when post is set, its
 * program runs on each element once the element is final (in the tile's
 * epilogue, while the tile is in cache), reading res[i * ldc + j] for a
 * residual step (res has C's layout). */
typedef struct {
    const float *row_bias;
    const float *col_bias;
    const oq_post *post;
    const float *res;
} oq_sgemm_epilogue;

/* A [M, K] packed once (op(A) = A or A^T). Owned by the caller. */
typedef struct oq_sgemm_pa oq_sgemm_pa;
oq_status oq_sgemm_pack_a(bool trans_a, int M, int K, const float *A, int lda, oq_sgemm_pa **out,
                          oq_error *err);
void oq_sgemm_pa_free(oq_sgemm_pa *pa);
int oq_sgemm_pa_rows(const oq_sgemm_pa *pa);
int oq_sgemm_pa_depth(const oq_sgemm_pa *pa);

/* B [K, N] packed once (op(B) = B or B^T). Owned by the caller. */
typedef struct oq_sgemm_pb oq_sgemm_pb;
oq_status oq_sgemm_pack_b(bool trans_b, int K, int N, const float *B, int ldb, oq_sgemm_pb **out,
                          oq_error *err);
void oq_sgemm_pb_free(oq_sgemm_pb *pb);
int oq_sgemm_pb_depth(const oq_sgemm_pb *pb);
int oq_sgemm_pb_cols(const oq_sgemm_pb *pb);

/* C[M, N] = A_packed * op(B) + beta * C (+ epilogue). ep may be NULL. pool
 * may be NULL (one thread); must not be called from inside an
 * oq_parallel_for chunk with a non-NULL pool. */
void oq_sgemm_pa_run(oq_pool *pool, const oq_sgemm_pa *A, bool trans_b, int N, const float *B, int ldb,
                     float beta, float *C, int ldc, const oq_sgemm_epilogue *ep);

/* B given as a packing function instead of a matrix, for operands that
 * exist only implicitly (Conv's im2col): the driver asks for lanes
 * [l0, l0 + nl) (columns of B) by depth [k0, k0 + kc) and the function
 * writes them as 32-lane panels, panel p (lanes l0 + 32p ..) at
 * dst + p * kc * 32, element (lane l, depth k) at [k * 32 + l % 32], and
 * zeroes the lanes of the last panel past nl. dst is 64-byte aligned. It
 * is called from pool threads concurrently, for disjoint ranges. */
typedef void (*oq_sgemm_pack_fn)(void *ctx, int l0, int nl, int k0, int kc, float *dst);

/* C[M, N] = A_packed * B + beta * C (+ epilogue), B [K, N] produced by
 * pack_b with K = oq_sgemm_pa_depth(A). Saves materialising B and then
 * packing it: one pass over the source instead of two. */
void oq_sgemm_pa_run_fn(oq_pool *pool, const oq_sgemm_pa *A, int N, oq_sgemm_pack_fn pack_b, void *ctx,
                        float beta, float *C, int ldc, const oq_sgemm_epilogue *ep);

/* C[M, N] = op(A) * B_packed + beta * C (+ epilogue). */
void oq_sgemm_pb_run(oq_pool *pool, bool trans_a, int M, const float *A, int lda, const oq_sgemm_pb *B,
                     float beta, float *C, int ldc, const oq_sgemm_epilogue *ep);

#endif
