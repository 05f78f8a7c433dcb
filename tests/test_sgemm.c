/* test_sgemm.c: onnxq's packed SGEMM (kernels/sgemm.c) on every backend the
 * CPU has, against a plain double-accumulating reference loop: transpose
 * combinations, odd sizes, blocked sizes, padded leading dimensions, beta 0
 * over NaN, alpha, the bias epilogue, packed operands reused, both tile
 * roles (C computed straight or transposed), threads; plus agreement with
 * OpenBLAS and the packing errors. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "sgemm.h"
#include "sgemm_internal.h"
#include "testutil.h"
#include "threadpool.h"

static oq_pool *g_pool2;

static void setup(void) {
    oq_error err = {0};
    ck_assert_int_eq(oq_pool_new(2, &g_pool2, &err), OQ_OK);
    openblas_set_num_threads(1);
}

static void teardown(void) {
    oq_pool_free(g_pool2);
    g_pool2 = NULL;
    oq_sgemm_backend_set(OQ_SGEMM_AUTO);
    oq_sgemm_set_blocking(0, 0, 0);
    oq_sgemm_set_trans_mode(-1);
}

/* ---- data and reference ----------------------------------------------------- */

static unsigned g_seed = 12345u;
static unsigned rnd(void) {
    g_seed = g_seed * 1103515245u + 12345u;
    return (g_seed >> 8) & 0xFFFFFF;
}
static int rnd_in(int lo, int hi) { return lo + (int)(rnd() % (unsigned)(hi - lo + 1)); }
static float rnd_f(void) { return (float)rnd() / (float)0x800000 - 1.0f; } /* [-1, 1) */

static float *rand_mat(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = rnd_f();
    return p;
}

/* op(A) element (i, k), op(B) element (k, j), row-major storage. */
static double at_a(bool ta, const float *A, int lda, int i, int k) {
    return ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
}
static double at_b(bool tb, const float *B, int ldb, int k, int j) {
    return tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
}

/* C = alpha op(A) op(B) + beta C0 + row/col bias, in double. beta 0 ignores C0. */
static void reference(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                      int ldb, float beta, const float *C0, int ldc, const float *rb, const float *cb, double *out) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += at_a(ta, A, lda, i, k) * at_b(tb, B, ldb, k, j);
            double v = alpha * s;
            if (beta != 0.0f)
                v += beta * (double)C0[(size_t)i * ldc + j];
            if (rb)
                v += rb[i];
            if (cb)
                v += cb[j];
            out[(size_t)i * N + j] = v;
        }
}

/* Checks C against the reference within a tolerance relative to the
 * largest possible sum, and that padding columns past N were not touched. */
static void check_close(const char *what, int M, int N, int K, float alpha, float beta, const double *ref,
                        const float *C, int ldc, const float *C0) {
    double tol = 1e-5 * ((double)K * fabs(alpha) + fabs(beta) + 2.0) + 1e-6;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double got = C[(size_t)i * ldc + j], want = ref[(size_t)i * N + j];
            if (!(fabs(got - want) <= tol))
                ck_abort_msg("%s: M=%d N=%d K=%d alpha=%g beta=%g: C[%d][%d] = %.7g, want %.7g (tol %.3g)", what, M,
                             N, K, alpha, beta, i, j, got, want, tol);
        }
        for (int j = N; j < ldc; j++) {
            float got = C[(size_t)i * ldc + j], was = C0[(size_t)i * ldc + j];
            if (memcmp(&got, &was, sizeof got) != 0)
                ck_abort_msg("%s: M=%d N=%d K=%d: padding C[%d][%d] was overwritten", what, M, N, K, i, j);
        }
    }
}

static const oq_sgemm_backend k_backends[] = {OQ_SGEMM_AVX512, OQ_SGEMM_AVX2, OQ_SGEMM_OPENBLAS};
#define N_BACKENDS 3

/* ---- one product through each entry point ----------------------------------- */

typedef enum { VIA_SGEMM, VIA_PA, VIA_PB } via;

typedef struct {
    bool ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    bool row_bias, col_bias;
} prob;

static void run_case(const prob *p, via v, oq_pool *pool, const char *tag) {
    int arows = p->ta ? p->K : p->M, brows = p->tb ? p->N : p->K;
    float *A = rand_mat((size_t)arows * p->lda), *B = rand_mat((size_t)brows * p->ldb);
    float *C = rand_mat((size_t)p->M * p->ldc), *C0 = malloc(((size_t)p->M * p->ldc + 1) * sizeof(float));
    /* oq_sgemm has no epilogue */
    bool bias_ok = v != VIA_SGEMM;
    float *rb = p->row_bias && bias_ok ? rand_mat((size_t)p->M) : NULL;
    float *cb = p->col_bias && bias_ok ? rand_mat((size_t)p->N) : NULL;
    double *ref = malloc(((size_t)p->M * p->N + 1) * sizeof(double));
    ck_assert_ptr_nonnull(C0);
    ck_assert_ptr_nonnull(ref);
    if (p->beta == 0.0f) /* beta 0: C must not be read, so garbage must not leak */
        for (size_t i = 0; i < (size_t)p->M * p->ldc; i++)
            if ((size_t)(i % p->ldc) < (size_t)p->N)
                C[i] = NAN;
    memcpy(C0, C, (size_t)p->M * p->ldc * sizeof(float));
    reference(p->ta, p->tb, p->M, p->N, p->K, p->alpha, A, p->lda, B, p->ldb, p->beta, C0, p->ldc, rb, cb, ref);
    oq_error err = {0};
    oq_sgemm_epilogue ep = {rb, cb, NULL, NULL};
    if (v == VIA_SGEMM) {
        oq_sgemm(pool, p->ta, p->tb, p->M, p->N, p->K, p->alpha, A, p->lda, B, p->ldb, p->beta, C, p->ldc);
    } else if (v == VIA_PA) {
        oq_sgemm_pa *pa = NULL;
        ck_assert_int_eq(oq_sgemm_pack_a(p->ta, p->M, p->K, A, p->lda, &pa, &err), OQ_OK);
        ck_assert_int_eq(oq_sgemm_pa_rows(pa), p->M);
        ck_assert_int_eq(oq_sgemm_pa_depth(pa), p->K);
        oq_sgemm_pa_run(pool, pa, p->tb, p->N, B, p->ldb, p->beta, C, p->ldc, &ep);
        oq_sgemm_pa_free(pa);
    } else {
        oq_sgemm_pb *pb = NULL;
        ck_assert_int_eq(oq_sgemm_pack_b(p->tb, p->K, p->N, B, p->ldb, &pb, &err), OQ_OK);
        ck_assert_int_eq(oq_sgemm_pb_depth(pb), p->K);
        ck_assert_int_eq(oq_sgemm_pb_cols(pb), p->N);
        oq_sgemm_pb_run(pool, p->ta, p->M, A, p->lda, pb, p->beta, C, p->ldc, &ep);
        oq_sgemm_pb_free(pb);
    }
    char what[160];
    snprintf(what, sizeof what, "%s %s ta=%d tb=%d via=%d threads=%d", tag,
             oq_sgemm_backend_name(oq_sgemm_backend_get()), p->ta, p->tb, (int)v, oq_pool_threads(pool));
    check_close(what, p->M, p->N, p->K, p->alpha, p->beta, ref, C, p->ldc, C0);
    free(A);
    free(B);
    free(C);
    free(C0);
    free(rb);
    free(cb);
    free(ref);
}

static prob make_prob(bool ta, bool tb, int M, int N, int K, int pad) {
    prob p;
    memset(&p, 0, sizeof p);
    p.ta = ta;
    p.tb = tb;
    p.M = M;
    p.N = N;
    p.K = K;
    p.lda = (ta ? M : K) + (pad ? rnd_in(0, pad) : 0);
    p.ldb = (tb ? K : N) + (pad ? rnd_in(0, pad) : 0);
    p.ldc = N + (pad ? rnd_in(0, pad) : 0);
    if (p.lda < 1)
        p.lda = 1;
    if (p.ldb < 1)
        p.ldb = 1;
    if (p.ldc < 1)
        p.ldc = 1;
    p.alpha = 1.0f;
    p.beta = 0.0f;
    return p;
}

/* ---- tests -------------------------------------------------------------------- */

/* Random odd sizes 1..70 in each dimension, every transpose combination,
 * entry point, tile role and beta kind, with small cache blocks so the
 * products also cross depth/row/column block edges. */
START_TEST(odd_sizes_all_backends) {
    int iters = tu_sanitized() ? 40 : 150;
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (int it = 0; it < iters; it++) {
            prob p = make_prob(it & 1, (it >> 1) & 1, rnd_in(1, 70), rnd_in(1, 70), rnd_in(1, 70), 5);
            int kind = rnd_in(0, 2);
            p.beta = kind == 0 ? 0.0f : kind == 1 ? 1.0f : -0.75f;
            p.alpha = it % 3 == 0 ? 1.0f : 0.5f + (float)rnd_in(0, 8) * 0.25f;
            p.row_bias = rnd_in(0, 1);
            p.col_bias = rnd_in(0, 1);
            oq_sgemm_set_trans_mode(it % 5 == 0 ? -1 : (it % 5) & 1);
            oq_sgemm_set_blocking(it % 4 == 0 ? 0 : rnd_in(1, 40), it % 4 == 0 ? 0 : 32 * rnd_in(1, 2),
                                  it % 4 == 0 ? 0 : 32 * rnd_in(1, 2));
            via v = (via)(it % 3);
            if (v != VIA_SGEMM)
                p.alpha = 1.0f; /* the packed API has no alpha */
            run_case(&p, v, it % 7 == 0 ? g_pool2 : NULL, "odd");
        }
    }
}
END_TEST

/* Every register-tile edge: M, N in 1..33 around the 32-lane panels, with
 * both roles, against the reference. */
START_TEST(tile_edges) {
    int step = tu_sanitized() ? 3 : 1;
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (int mode = 0; mode <= 1; mode++) {
            oq_sgemm_set_trans_mode(mode);
            for (int M = 1; M <= 33; M += step)
                for (int N = 1; N <= 33; N += step) {
                    prob p = make_prob(false, false, M, N, 3 + (M + N) % 5, 0);
                    p.beta = (M + N) % 2 ? 1.0f : 0.0f;
                    p.col_bias = (M % 3) == 0;
                    p.row_bias = (N % 3) == 0;
                    run_case(&p, VIA_PA, NULL, "edges");
                }
        }
    }
}
END_TEST

/* Products larger than every cache block, split over two threads. */
START_TEST(big_blocked) {
    int M = 300, N = 700, K = 900;
    if (tu_sanitized())
        M = 70, N = 150, K = 300;
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (int c = 0; c < 4; c++) {
            prob p = make_prob(c & 1, c >> 1, M, N, K, 3);
            p.beta = c == 1 ? 0.5f : 0.0f;
            p.alpha = c == 2 ? 2.0f : 1.0f;
            run_case(&p, VIA_SGEMM, c % 2 ? g_pool2 : NULL, "big");
        }
        prob p = make_prob(false, false, M, N, K, 0);
        p.row_bias = p.col_bias = true;
        run_case(&p, VIA_PA, g_pool2, "big");
        run_case(&p, VIA_PB, g_pool2, "big");
        /* narrow N (the ResNet N=49 shapes) and tall M */
        p = make_prob(false, false, tu_sanitized() ? 200 : 512, 49, tu_sanitized() ? 300 : 1200, 0);
        p.col_bias = true;
        run_case(&p, VIA_PA, g_pool2, "narrow");
        run_case(&p, VIA_PB, NULL, "narrow");
        run_case(&p, VIA_SGEMM, g_pool2, "narrow");
    }
}
END_TEST

/* A packed once, reused over several B (both layouts), from two threads'
 * pool and from none; likewise B packed once against several A. */
START_TEST(packed_reuse) {
    int M = 77, N = 130, K = 300;
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        oq_error err = {0};
        float *A = rand_mat((size_t)M * K), *Bk = rand_mat((size_t)K * N);
        oq_sgemm_pa *pa = NULL;
        oq_sgemm_pb *pb = NULL;
        ck_assert_int_eq(oq_sgemm_pack_a(false, M, K, A, K, &pa, &err), OQ_OK);
        ck_assert_int_eq(oq_sgemm_pack_b(false, K, N, Bk, N, &pb, &err), OQ_OK);
        float *rb = rand_mat((size_t)M), *cb = rand_mat((size_t)N);
        oq_sgemm_epilogue ep = {rb, cb, NULL, NULL};
        double *ref = malloc((size_t)M * N * sizeof(double));
        float *C = malloc((size_t)M * N * sizeof(float)), *C0 = calloc((size_t)M * N, sizeof(float));
        for (int r = 0; r < 6; r++) {
            oq_pool *pool = r % 2 ? g_pool2 : NULL;
            bool t = r % 3 == 1;
            int n = N - r * 7;
            /* a fresh B against the packed A */
            float *B = rand_mat((size_t)K * n);
            for (size_t i = 0; i < (size_t)M * n; i++)
                C[i] = NAN;
            /* t: B is given as B^T [n, K] */
            float *Bs = B;
            float *BT = NULL;
            if (t) {
                BT = malloc((size_t)K * n * sizeof(float));
                for (int k = 0; k < K; k++)
                    for (int j = 0; j < n; j++)
                        BT[(size_t)j * K + k] = B[(size_t)k * n + j];
                Bs = BT;
            }
            oq_sgemm_pa_run(pool, pa, t, n, Bs, t ? K : n, 0.0f, C, n, &ep);
            reference(false, false, M, n, K, 1.0f, A, K, B, n, 0.0f, C0, n, rb, cb, ref);
            check_close("pa reuse", M, n, K, 1.0f, 0.0f, ref, C, n, C0);
            /* a fresh A against the packed B */
            int m = M - r * 5;
            float *A2 = rand_mat((size_t)m * K);
            for (size_t i = 0; i < (size_t)m * N; i++)
                C[i] = NAN;
            oq_sgemm_pb_run(pool, false, m, A2, K, pb, 0.0f, C, N, &ep);
            reference(false, false, m, N, K, 1.0f, A2, K, Bk, N, 0.0f, C0, N, rb, cb, ref);
            check_close("pb reuse", m, N, K, 1.0f, 0.0f, ref, C, N, C0);
            free(A2);
            free(B);
            free(BT);
        }
        oq_sgemm_pa_free(pa);
        oq_sgemm_pb_free(pb);
        free(A);
        free(Bk);
        free(rb);
        free(cb);
        free(ref);
        free(C);
        free(C0);
    }
}
END_TEST

/* Packing is backend-independent: pack under one backend, run under each. */
START_TEST(packed_across_backends) {
    int M = 45, N = 61, K = 37;
    oq_error err = {0};
    float *A = rand_mat((size_t)M * K), *B = rand_mat((size_t)K * N);
    oq_sgemm_pa *pa = NULL;
    ck_assert_int_eq(oq_sgemm_pack_a(true, M, K, A, M, &pa, &err), OQ_OK); /* A given as [K, M] */
    double *ref = malloc((size_t)M * N * sizeof(double));
    float *C = malloc((size_t)M * N * sizeof(float)), *C0 = calloc((size_t)M * N, sizeof(float));
    reference(true, false, M, N, K, 1.0f, A, M, B, N, 0.0f, C0, N, NULL, NULL, ref);
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        oq_sgemm_pa_run(NULL, pa, false, N, B, N, 0.0f, C, N, NULL);
        check_close("pa across backends", M, N, K, 1.0f, 0.0f, ref, C, N, C0);
    }
    oq_sgemm_pa_free(pa);
    free(A);
    free(B);
    free(ref);
    free(C);
    free(C0);
}
END_TEST

/* K = 0 (C = beta C + bias), M or N = 1, alpha = 0. */
START_TEST(degenerate_sizes) {
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (int c = 0; c < 3; c++) {
            prob p = make_prob(false, false, 5, 9, 0, 2);
            p.beta = c == 0 ? 0.0f : 1.5f;
            p.row_bias = p.col_bias = c == 2;
            run_case(&p, c == 2 ? VIA_PA : VIA_SGEMM, NULL, "K=0");
            run_case(&p, VIA_PB, NULL, "K=0");
        }
        for (int c = 0; c < 8; c++) {
            prob p = make_prob(c & 1, c & 2, c & 4 ? 1 : 300, c & 4 ? 300 : 1, 200, 2);
            p.beta = 0.0f;
            run_case(&p, VIA_SGEMM, g_pool2, "M|N=1");
            run_case(&p, VIA_PA, g_pool2, "M|N=1");
            run_case(&p, VIA_PB, NULL, "M|N=1");
        }
        prob p = make_prob(false, false, 1, 1, 1, 0);
        run_case(&p, VIA_PA, NULL, "1x1x1");
        p = make_prob(false, true, 20, 30, 40, 0);
        p.alpha = 0.0f;
        p.beta = 0.5f;
        run_case(&p, VIA_SGEMM, NULL, "alpha=0");
        /* empty products leave C alone */
        float c = 3.0f;
        oq_sgemm(NULL, false, false, 0, 1, 1, 1.0f, &c, 1, &c, 1, 0.0f, &c, 1);
        ck_assert(c == 3.0f);
    }
}
END_TEST

/* The own kernels agree with a direct cblas_sgemm call. */
START_TEST(openblas_agreement) {
    int M = 123, N = 257, K = 311;
    float *A = rand_mat((size_t)M * K), *B = rand_mat((size_t)N * K);
    float *C1 = malloc((size_t)M * N * sizeof(float)), *C2 = malloc((size_t)M * N * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 0.7f, A, K, B, K, 0.0f, C1, N);
    for (int b = 0; b < N_BACKENDS - 1; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (size_t i = 0; i < (size_t)M * N; i++)
            C2[i] = NAN;
        oq_sgemm(g_pool2, false, true, M, N, K, 0.7f, A, K, B, K, 0.0f, C2, N);
        for (size_t i = 0; i < (size_t)M * N; i++)
            ck_assert_msg(fabsf(C1[i] - C2[i]) <= 1e-4f * K, "%s: C[%zu] %g vs openblas %g",
                          oq_sgemm_backend_name(k_backends[b]), i, C2[i], C1[i]);
    }
    free(A);
    free(B);
    free(C1);
    free(C2);
}
END_TEST

START_TEST(backend_selection) {
    ck_assert(oq_sgemm_backend_set(OQ_SGEMM_OPENBLAS));
    ck_assert_int_eq(oq_sgemm_backend_get(), OQ_SGEMM_OPENBLAS);
    ck_assert_str_eq(oq_sgemm_backend_name(OQ_SGEMM_OPENBLAS), "openblas");
    ck_assert_str_eq(oq_sgemm_backend_name(OQ_SGEMM_AVX512), "avx512");
    ck_assert_str_eq(oq_sgemm_backend_name(OQ_SGEMM_AVX2), "avx2");
    __builtin_cpu_init();
    bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    ck_assert_int_eq(oq_sgemm_backend_set(OQ_SGEMM_AVX512), has512);
    ck_assert_int_eq(oq_sgemm_backend_set(OQ_SGEMM_AVX2), has2);
    ck_assert(oq_sgemm_backend_set(OQ_SGEMM_AUTO));
    /* AUTO is the best the CPU has, unless ONNXQ_SGEMM says otherwise */
    if (!getenv("ONNXQ_SGEMM"))
        ck_assert_int_eq(oq_sgemm_backend_get(),
                         has512 ? OQ_SGEMM_AVX512 : has2 ? OQ_SGEMM_AVX2 : OQ_SGEMM_OPENBLAS);
}
END_TEST

START_TEST(pack_errors) {
    oq_error err = {0};
    float a[16] = {0};
    oq_sgemm_pa *pa = (oq_sgemm_pa *)1;
    ck_assert_int_eq(oq_sgemm_pack_a(false, -1, 4, a, 4, &pa, &err), OQ_EINVAL);
    ck_assert_ptr_null(pa);
    ck_assert(strstr(err.msg, "negative") != NULL);
    oq_error e2 = {0};
    ck_assert_int_eq(oq_sgemm_pack_a(false, 4, 4, a, 3, &pa, &e2), OQ_EINVAL);
    ck_assert(strstr(e2.msg, "leading dimension") != NULL);
    oq_error e3 = {0};
    oq_sgemm_pb *pb = NULL;
    ck_assert_int_eq(oq_sgemm_pack_b(true, 4, 4, NULL, 4, &pb, &e3), OQ_EINVAL);
    ck_assert_ptr_null(pb);
    oq_error e4 = {0};
    ck_assert_int_eq(oq_sgemm_pack_b(false, 4, 4, a, 2, &pb, &e4), OQ_EINVAL);
    /* empty operands pack fine */
    oq_error e5 = {0};
    ck_assert_int_eq(oq_sgemm_pack_a(false, 3, 0, a, 1, &pa, &e5), OQ_OK);
    ck_assert_int_eq(oq_sgemm_pa_depth(pa), 0);
    oq_sgemm_pa_free(pa);
    oq_sgemm_pa_free(NULL);
    oq_sgemm_pb_free(NULL);
}
END_TEST

/* B given as a pack function (oq_sgemm_pa_run_fn, Conv's implicit GEMM):
 * this one reads a plain row-major B, so the result must equal the packed-A
 * product on that B, on every backend, tile role, block size and thread
 * count. The function also records that it only wrote the panels asked
 * for: lanes past the range are left to the driver's zeroing contract. */
typedef struct {
    const float *B;
    int N, K;
    int calls;
} fn_src;

static void pack_from_matrix(void *ctx, int l0, int nl, int k0, int kc, float *dst) {
    fn_src *f = ctx;
    __atomic_add_fetch(&f->calls, 1, __ATOMIC_RELAXED);
    ck_assert(l0 >= 0 && nl > 0 && l0 + nl <= f->N && k0 >= 0 && kc > 0 && k0 + kc <= f->K);
    ck_assert_int_eq((int)((uintptr_t)dst % 32), 0);
    for (int q = 0; q * 32 < nl; q++)
        for (int k = 0; k < kc; k++)
            for (int l = 0; l < 32; l++) {
                int lane = q * 32 + l;
                dst[((size_t)q * kc + k) * 32 + l] =
                    lane < nl ? f->B[(size_t)(k0 + k) * f->N + l0 + lane] : 0.0f;
            }
}

START_TEST(pack_fn_operand) {
    static const int shapes[][3] = {{64, 784, 288}, {32, 196, 9}, {70, 49, 300}, {5, 33, 65}, {33, 1, 7}};
    for (int b = 0; b < N_BACKENDS; b++) {
        if (!oq_sgemm_backend_set(k_backends[b]))
            continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int r = 0; r < 4; r++) {
                int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                oq_sgemm_set_trans_mode(r < 2 ? r : -1);
                oq_sgemm_set_blocking(r == 3 ? 16 : 0, r == 3 ? 32 : 0, r == 3 ? 64 : 0);
                oq_pool *pool = r % 2 ? g_pool2 : NULL;
                float *A = rand_mat((size_t)M * K), *B = rand_mat((size_t)K * N);
                float *rb = rand_mat((size_t)M), *C = malloc((size_t)M * N * sizeof(float));
                float *C0 = calloc((size_t)M * N, sizeof(float));
                double *ref = malloc((size_t)M * N * sizeof(double));
                ck_assert(C && C0 && ref);
                for (size_t i = 0; i < (size_t)M * N; i++)
                    C[i] = NAN;
                oq_error err = {0};
                oq_sgemm_pa *pa = NULL;
                ck_assert_int_eq(oq_sgemm_pack_a(false, M, K, A, K, &pa, &err), OQ_OK);
                fn_src f = {B, N, K, 0};
                oq_sgemm_epilogue ep = {rb, NULL, NULL, NULL};
                oq_sgemm_pa_run_fn(pool, pa, N, pack_from_matrix, &f, 0.0f, C, N, &ep);
                ck_assert_int_gt(f.calls, 0);
                reference(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C0, N, rb, NULL, ref);
                char what[96];
                snprintf(what, sizeof what, "pack fn %s %dx%dx%d r=%d",
                         oq_sgemm_backend_name(oq_sgemm_backend_get()), M, N, K, r);
                check_close(what, M, N, K, 1.0f, 0.0f, ref, C, N, C0);
                oq_sgemm_pa_free(pa);
                free(A);
                free(B);
                free(rb);
                free(C);
                free(C0);
                free(ref);
            }
        oq_sgemm_set_trans_mode(-1);
        oq_sgemm_set_blocking(0, 0, 0);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("sgemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, odd_sizes_all_backends);
    tcase_add_test(tc, tile_edges);
    tcase_add_test(tc, big_blocked);
    tcase_add_test(tc, packed_reuse);
    tcase_add_test(tc, packed_across_backends);
    tcase_add_test(tc, degenerate_sizes);
    tcase_add_test(tc, openblas_agreement);
    tcase_add_test(tc, backend_selection);
    tcase_add_test(tc, pack_errors);
    tcase_add_test(tc, pack_fn_operand);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
