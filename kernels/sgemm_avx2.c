/* sgemm_avx2.c: the AVX2+FMA register tile of the packed SGEMM, up to
 * 6 rows x 16 columns (12 ymm accumulators, 2 ymm loads of the vector panel
 * and one broadcast per row and depth step). Compiled for baseline x86-64
 * with per-function target attributes; sgemm.c only calls it when the CPU
 * has AVX2 and FMA. */
#include <immintrin.h>

#include "sgemm_internal.h"

#define T256 __attribute__((target("avx2,fma")))
#define MR_MAX 6

/* Lane mask for the first n (0..8) floats. */
static inline __attribute__((always_inline)) T256 __m256i mask8(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

static inline __attribute__((always_inline)) T256 void tile256(const oq_sgemm_kargs *a, const int MR,
                                                                const int NV) {
    __m256 acc[MR_MAX][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    const float *x = a->x, *y = a->y;
    for (int k = a->kc; k > 0; k--) {
        __m256 b0 = _mm256_load_ps(y), b1 = NV > 1 ? _mm256_load_ps(y + 8) : b0;
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(x + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            if (NV > 1)
                acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        x += 32;
        y += 32;
    }
    if (a->alpha != 1.0f) {
        const __m256 alpha = _mm256_set1_ps(a->alpha);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            acc[i][0] = _mm256_mul_ps(acc[i][0], alpha);
            acc[i][1] = _mm256_mul_ps(acc[i][1], alpha);
        }
    }
    if (a->trans) {
        float tile[MR_MAX * 32] __attribute__((aligned(32)));
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            _mm256_store_ps(tile + i * 32, acc[i][0]);
            _mm256_store_ps(tile + i * 32 + 8, acc[i][1]);
        }
        oq_sgemm_store_trans(a, tile);
        return;
    }
    const int nr = a->nr;
    const __m256i m0 = mask8(nr >= 8 ? 8 : nr), m1 = mask8(nr >= 16 ? 8 : nr > 8 ? nr - 8 : 0);
    const __m256 beta = _mm256_set1_ps(a->beta);
    const bool rd = a->beta != 0.0f;
    __m256 bj0 = _mm256_setzero_ps(), bj1 = _mm256_setzero_ps();
    if (a->bj) {
        bj0 = _mm256_maskload_ps(a->bj, m0);
        if (NV > 1)
            bj1 = _mm256_maskload_ps(a->bj + 8, m1);
    }
    float *c = a->c;
    /* vmaskmov is slow on AMD cores: only ragged tiles use it */
    const bool full = nr == 8 * NV;
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        float *ci = c + (size_t)i * a->ldc;
        __m256 r0 = acc[i][0], r1 = acc[i][1];
        if (rd) {
            r0 = _mm256_fmadd_ps(full ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0), beta, r0);
            if (NV > 1)
                r1 = _mm256_fmadd_ps(full ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1), beta, r1);
        }
        if (a->bi || a->bj) {
            __m256 bi = _mm256_set1_ps(a->bi ? a->bi[i] : 0.0f);
            r0 = _mm256_add_ps(r0, _mm256_add_ps(bi, bj0));
            if (NV > 1)
                r1 = _mm256_add_ps(r1, _mm256_add_ps(bi, bj1));
        }
        if (full) {
            _mm256_storeu_ps(ci, r0);
            if (NV > 1)
                _mm256_storeu_ps(ci + 8, r1);
            continue;
        }
        _mm256_maskstore_ps(ci, m0, r0);
        if (NV > 1)
            _mm256_maskstore_ps(ci + 8, m1, r1);
    }
}

#define K256(MR)                                                                                           \
    static T256 void k256_##MR##_1(const oq_sgemm_kargs *a) { tile256(a, MR, 1); }                       \
    static T256 void k256_##MR##_2(const oq_sgemm_kargs *a) { tile256(a, MR, 2); }
K256(1)
K256(2)
K256(3)
K256(4)
K256(5)
K256(6)

typedef void (*kfn)(const oq_sgemm_kargs *a);
#define KP(MR) {k256_##MR##_1, k256_##MR##_2}
static const kfn k256_table[MR_MAX][2] = {KP(1), KP(2), KP(3), KP(4), KP(5), KP(6)};

static void k256(const oq_sgemm_kargs *a) { k256_table[a->mr - 1][a->nr > 8](a); }

const oq_sgemm_kernel oq_sgemm_kernel_avx2 = {k256, MR_MAX, 16, 8};

/* Packing a depth-contiguous operand (A as stored, or B^T) is a transpose:
 * 8x8 blocks through registers instead of one scalar move per element. */
T256 void oq_sgemm_pack_trans_avx2(const float *s, size_t ls, int w, int kc, float *d) {
    int l = 0;
    for (; l + 8 <= w; l += 8) {
        const float *sl = s + (size_t)l * ls;
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 r0 = _mm256_loadu_ps(sl + k), r1 = _mm256_loadu_ps(sl + ls + k);
            __m256 r2 = _mm256_loadu_ps(sl + 2 * ls + k), r3 = _mm256_loadu_ps(sl + 3 * ls + k);
            __m256 r4 = _mm256_loadu_ps(sl + 4 * ls + k), r5 = _mm256_loadu_ps(sl + 5 * ls + k);
            __m256 r6 = _mm256_loadu_ps(sl + 6 * ls + k), r7 = _mm256_loadu_ps(sl + 7 * ls + k);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            float *dk = d + (size_t)k * 32 + l;
            _mm256_store_ps(dk + 0 * 32, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_store_ps(dk + 1 * 32, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_store_ps(dk + 2 * 32, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_store_ps(dk + 3 * 32, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_store_ps(dk + 4 * 32, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_store_ps(dk + 5 * 32, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_store_ps(dk + 6 * 32, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_store_ps(dk + 7 * 32, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (; k < kc; k++)
            for (int q = 0; q < 8; q++)
                d[(size_t)k * 32 + l + q] = sl[(size_t)q * ls + k];
    }
    for (; l < w; l++)
        for (int k = 0; k < kc; k++)
            d[(size_t)k * 32 + l] = s[(size_t)l * ls + k];
    if (w < 32)
        for (int k = 0; k < kc; k++)
            for (int q = w; q < 32; q++)
                d[(size_t)k * 32 + q] = 0.0f;
}
