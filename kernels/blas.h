/* blas.h: SGEMM for the kernels. OpenBLAS runs single-threaded (the
 * executor sets it) and this wrapper splits large products over the
 * executor's pool, so the pool is the only source of threads: no
 * oversubscription when kernels also parallelise around their GEMMs. */
#ifndef OQ_BLAS_H
#define OQ_BLAS_H

#include <stdbool.h>

#include "threadpool.h"

/* Row-major C = alpha * op(A) * op(B) + beta * C, with op(A) [M, K] and
 * op(B) [K, N]. pool may be NULL (one thread). Must not be called from
 * inside an oq_parallel_for chunk with a non-NULL pool. */
void oq_sgemm(oq_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

#endif
