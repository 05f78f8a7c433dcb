/* sgemm_avx512.c: the AVX-512 register tile of the packed SGEMM, up to
 * 14 rows x 32 columns (28 zmm accumulators, 2 zmm loads of the vector
 * panel and one broadcast per row and depth step). Compiled for baseline
 * x86-64 with per-function target attributes; sgemm.c only calls it when
 * the CPU has AVX-512F/VL/DQ. */
#include <immintrin.h>

#include "sgemm_internal.h"

#define T512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))
#define MR_MAX 14

static inline __attribute__((always_inline)) T512 void tile512(const oq_sgemm_kargs *a, const int MR,
                                                                const int NV) {
    __m512 acc[MR_MAX][2];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    const float *x = a->x, *y = a->y;
    for (int k = a->kc; k > 0; k--) {
        __m512 b0 = _mm512_load_ps(y), b1 = NV > 1 ? _mm512_load_ps(y + 16) : b0;
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(x[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (NV > 1)
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        x += 32;
        y += 32;
    }
    const __m512 alpha = _mm512_set1_ps(a->alpha);
    if (a->alpha != 1.0f) {
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            acc[i][0] = _mm512_mul_ps(acc[i][0], alpha);
            acc[i][1] = _mm512_mul_ps(acc[i][1], alpha);
        }
    }
    if (a->trans) {
        float tile[MR_MAX * 32] __attribute__((aligned(64)));
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            _mm512_store_ps(tile + i * 32, acc[i][0]);
            _mm512_store_ps(tile + i * 32 + 16, acc[i][1]);
        }
        oq_sgemm_store_trans(a, tile);
        return;
    }
    const int nr = a->nr;
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    const __m512 beta = _mm512_set1_ps(a->beta);
    const bool rd = a->beta != 0.0f;
    __m512 bj0 = _mm512_setzero_ps(), bj1 = _mm512_setzero_ps();
    if (a->bj) {
        bj0 = _mm512_maskz_loadu_ps(m0, a->bj);
        if (NV > 1)
            bj1 = _mm512_maskz_loadu_ps(m1, a->bj + 16);
    }
    float *c = a->c;
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        float *ci = c + (size_t)i * a->ldc;
        __m512 r0 = acc[i][0], r1 = acc[i][1];
        if (rd) {
            r0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, ci), beta, r0);
            if (NV > 1)
                r1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, ci + 16), beta, r1);
        }
        if (a->bi || a->bj) {
            __m512 bi = _mm512_set1_ps(a->bi ? a->bi[i] : 0.0f);
            r0 = _mm512_add_ps(r0, _mm512_add_ps(bi, bj0));
            if (NV > 1)
                r1 = _mm512_add_ps(r1, _mm512_add_ps(bi, bj1));
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        if (NV > 1)
            _mm512_mask_storeu_ps(ci + 16, m1, r1);
    }
}

#define K512(MR)                                                                                           \
    static T512 void k512_##MR##_1(const oq_sgemm_kargs *a) { tile512(a, MR, 1); }                       \
    static T512 void k512_##MR##_2(const oq_sgemm_kargs *a) { tile512(a, MR, 2); }
K512(1)
K512(2)
K512(3)
K512(4)
K512(5)
K512(6)
K512(7)
K512(8)
K512(9)
K512(10)
K512(11)
K512(12)
K512(13)
K512(14)

typedef void (*kfn)(const oq_sgemm_kargs *a);
#define KP(MR) {k512_##MR##_1, k512_##MR##_2}
static const kfn k512_table[MR_MAX][2] = {KP(1), KP(2),  KP(3),  KP(4),  KP(5),  KP(6),  KP(7),
                                          KP(8), KP(9), KP(10), KP(11), KP(12), KP(13), KP(14)};

static void k512(const oq_sgemm_kargs *a) { k512_table[a->mr - 1][a->nr > 16](a); }

const oq_sgemm_kernel oq_sgemm_kernel_avx512 = {k512, MR_MAX, 32, 16};
