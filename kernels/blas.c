/* blas.c: oq_sgemm. On the AVX-512/AVX2 backends it is onnxq's own packed
 * SGEMM (sgemm.c, both operands packed per call); on the OpenBLAS backend a
 * thread split over cblas_sgemm: products are cut into column blocks of C
 * (or row blocks when C is tall and narrow), each block an independent
 * single-threaded OpenBLAS call. */
#include "blas.h"

#include <cblas.h>
#include <stddef.h>

#include "sgemm_internal.h"

/* Below this many multiply-adds per thread, splitting costs more than it saves. */
#define SGEMM_MIN_WORK_PER_THREAD (1u << 21)

typedef struct {
    bool trans_a, trans_b, by_rows;
    int M, N, K;
    float alpha, beta;
    const float *A, *B;
    int lda, ldb, ldc;
    float *C;
    size_t block; /* rows or columns per chunk index */
} sgemm_job;

static void sgemm_range(void *arg, size_t begin, size_t end) {
    const sgemm_job *j = arg;
    size_t lo = begin * j->block, hi = end * j->block;
    size_t total = j->by_rows ? (size_t)j->M : (size_t)j->N;
    if (hi > total)
        hi = total;
    if (lo >= hi)
        return;
    int n = (int)(hi - lo);
    if (j->by_rows) {
        const float *a = j->trans_a ? j->A + lo : j->A + lo * (size_t)j->lda;
        cblas_sgemm(CblasRowMajor, j->trans_a ? CblasTrans : CblasNoTrans, j->trans_b ? CblasTrans : CblasNoTrans,
                    n, j->N, j->K, j->alpha, a, j->lda, j->B, j->ldb, j->beta, j->C + lo * (size_t)j->ldc, j->ldc);
    } else {
        const float *b = j->trans_b ? j->B + lo * (size_t)j->ldb : j->B + lo;
        cblas_sgemm(CblasRowMajor, j->trans_a ? CblasTrans : CblasNoTrans, j->trans_b ? CblasTrans : CblasNoTrans,
                    j->M, n, j->K, j->alpha, j->A, j->lda, b, j->ldb, j->beta, j->C + lo, j->ldc);
    }
}

void oq_sgemm(oq_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0)
        return;
    if (oq_sgemm_backend_get() != OQ_SGEMM_OPENBLAS) {
        oq_sgemm_raw(pool, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int threads = oq_pool_threads(pool);
    double work = (double)M * (double)N * (double)(K > 0 ? K : 1);
    if (threads <= 1 || work < (double)SGEMM_MIN_WORK_PER_THREAD * 2) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N,
                    K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    sgemm_job j = {trans_a, trans_b, false, M, N, K, alpha, beta, A, B, lda, ldb, ldc, C, 0};
    /* Split columns in multiples of 16 (whole vector registers) when C is
     * wide enough; otherwise split rows. */
    size_t parts = (size_t)threads;
    if ((size_t)N >= parts * 32) {
        size_t cols = ((size_t)N + parts - 1) / parts;
        j.block = (cols + 15) & ~(size_t)15;
        oq_parallel_for(pool, ((size_t)N + j.block - 1) / j.block, 1, sgemm_range, &j);
    } else {
        j.by_rows = true;
        j.block = ((size_t)M + parts - 1) / parts;
        oq_parallel_for(pool, ((size_t)M + j.block - 1) / j.block, 1, sgemm_range, &j);
    }
}
