/* sgemm_internal.h: what sgemm.c shares with its micro-kernel files, blas.c
 * and the tests. Every operand is packed into 32-lane panels: for each
 * group of 32 lanes (rows of A, columns of B) the depth runs outermost,
 * panel[k * 32 + lane], zero padded to 32 lanes. The same layout serves
 * either operand in either role, so an A packed once can be the broadcast
 * side (wide C) or the vector side (C computed transposed, for N=49-like
 * shapes). */
#ifndef OQ_SGEMM_INTERNAL_H
#define OQ_SGEMM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "sgemm.h"

#define OQ_SGEMM_PANEL 32

/* One register tile: acc[i][j] = sum_k x[k*32 + i] * y[k*32 + j] for
 * i < mr (broadcast side), j < nr (vector side), then
 * C = alpha * acc + beta * C (beta == 0: C is not read) + bi[i] + bj[j],
 * with C(i, j) at c[i*ldc + j], or c[j*ldc + i] when trans. */
typedef struct {
    int kc, mr, nr;
    const float *x, *y;
    float *c;
    size_t ldc;
    bool trans;
    float alpha, beta;
    const float *bi, *bj; /* NULL when absent */
} oq_sgemm_kargs;

typedef struct {
    void (*fn)(const oq_sgemm_kargs *a);
    int mr_max; /* rows of the tile (broadcast side) */
    int nr_max; /* columns (vector side), divides 32 */
    int vec;    /* floats per vector register: the padding granularity */
} oq_sgemm_kernel;

extern const oq_sgemm_kernel oq_sgemm_kernel_avx512;
extern const oq_sgemm_kernel oq_sgemm_kernel_avx2;

/* Packs one panel of a depth-contiguous operand: lane l, depth k at
 * s[l * ls + k] into d[k * 32 + l] for l < w (<= 32), zeroing lanes w..31.
 * d is 32-byte aligned. Needs AVX2. */
void oq_sgemm_pack_trans_avx2(const float *s, size_t ls, int w, int kc, float *d);

/* The epilogue of a transposed tile, shared by all kernels: tile[i*32 + j]
 * already holds alpha * acc. */
void oq_sgemm_store_trans(const oq_sgemm_kargs *a, const float *tile);

/* C[M, N] = alpha * op(A) * op(B) + beta * C with both operands packed per
 * call, on the current backend's own kernel (oq_sgemm in blas.c calls it
 * unless the backend is OPENBLAS). */
void oq_sgemm_raw(oq_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Tests: force cache-block sizes (depth, broadcast-side rows, vector-side
 * columns) so small products cross block edges; 0 restores the defaults. */
void oq_sgemm_set_blocking(int kc, int mc, int nc);

/* Tests and benches: force (1) or forbid (0) computing C transposed;
 * -1 restores the automatic choice. */
void oq_sgemm_set_trans_mode(int mode);

#endif
