/* sgemm_bench.c: GFLOP/s of each SGEMM backend on the shapes onnxq's models
 * run (ResNet-50 convs as GEMM, BERT-base, the fmnist CNN), at 1 and 2
 * threads.   build/bench/bench_sgemm [SECONDS_PER_CELL] [THREADS...]
 * Backend columns are oq_sgemm (both operands packed per call); "+w"
 * columns run with the weight operand packed once (A for convs, B for the
 * BERT MatMuls), as the executor uses it; openblas is cblas_sgemm split
 * over the pool (the old oq_sgemm). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "blas.h"
#include "sgemm.h"
#include "sgemm_internal.h"
#include "threadpool.h"

typedef struct {
    const char *name;
    int M, N, K;
    bool weight_b; /* the constant operand is B (MatMul weights), else A */
} shape;

static const shape shapes[] = {
    {"r50 conv 3x3 c64", 64, 3136, 576, false},   {"r50 conv 1x1 c256", 256, 3136, 64, false},
    {"r50 conv 3x3 c512", 512, 49, 4608, false},  {"r50 conv 1x1 2048", 2048, 49, 512, false},
    {"r50 conv 3x3 c128", 128, 784, 1152, false}, {"bert qkv b1", 128, 768, 768, true},
    {"bert ffn1 b1", 128, 3072, 768, true},       {"bert ffn2 b1", 128, 768, 3072, true},
    {"bert qkv b32", 4096, 768, 768, true},       {"bert ffn1 b32", 4096, 3072, 768, true},
    {"bert ffn2 b32", 4096, 768, 3072, true},     {"fmnist conv1", 32, 784, 9, false},
    {"fmnist conv2", 64, 196, 288, false},
};

/* One thread: CPU time of this thread, so other processes on the (shared,
 * two-core) machine do not count; more threads: wall time. */
static clockid_t g_clock = CLOCK_MONOTONIC;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best GFLOP/s of 8 timed rounds, each about secs/8 long. */
static double measure(oq_pool *pool, const shape *s, const float *A, const float *B, float *C,
                      const oq_sgemm_pa *pa, const oq_sgemm_pb *pb, double secs) {
    double flops = 2.0 * s->M * s->N * s->K, best = 0;
    long reps = 1;
    for (int round = 0; round < 9; round++) {
        double t0 = now_s();
        for (long r = 0; r < reps; r++) {
            if (pa)
                oq_sgemm_pa_run(pool, pa, false, s->N, B, s->N, 0.0f, C, s->N, NULL);
            else if (pb)
                oq_sgemm_pb_run(pool, false, s->M, A, s->K, pb, 0.0f, C, s->N, NULL);
            else
                oq_sgemm(pool, false, false, s->M, s->N, s->K, 1.0f, A, s->K, B, s->N, 0.0f, C, s->N);
        }
        double dt = now_s() - t0;
        if (round == 0) { /* calibration */
            reps = (long)(secs / 8 / (dt > 1e-6 ? dt : 1e-6)) + 1;
            continue;
        }
        double g = flops * (double)reps / dt / 1e9;
        if (g > best)
            best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 0.6;
    if (secs <= 0)
        secs = 0.6;
    int thr[8] = {1, 2}, nthr = 2;
    if (argc > 2) {
        nthr = 0;
        for (int i = 2; i < argc && nthr < 8; i++)
            thr[nthr++] = atoi(argv[i]);
    }
    /* SGEMM_BLOCK=kc,mc,nc tries other cache blocks */
    const char *blk = getenv("SGEMM_BLOCK");
    if (blk) {
        int kc = 0, mc = 0, nc = 0;
        if (sscanf(blk, "%d,%d,%d", &kc, &mc, &nc) == 3)
            oq_sgemm_set_blocking(kc, mc, nc);
    }
    if (getenv("SGEMM_TRANS")) /* 0 or 1 forces the tile role, for tuning */
        oq_sgemm_set_trans_mode(atoi(getenv("SGEMM_TRANS")));
    const char *only = getenv("SGEMM_ONLY"); /* substring of the shape names */
    /* as the executor does: the pool is the only source of threads */
    openblas_set_num_threads(1);
    oq_sgemm_backend backs[] = {OQ_SGEMM_AVX512, OQ_SGEMM_AVX2, OQ_SGEMM_OPENBLAS};
    printf("%-20s %5s %5s %5s %2s", "shape", "M", "N", "K", "t");
    for (int b = 0; b < 3; b++)
        if (oq_sgemm_backend_set(backs[b])) {
            if (backs[b] == OQ_SGEMM_OPENBLAS)
                printf(" %9s", "openblas");
            else
                printf(" %9s %9s", oq_sgemm_backend_name(backs[b]), "+w");
        }
    printf("   (GFLOP/s)\n");
    for (int ti = 0; ti < nthr; ti++) {
        oq_pool *pool = NULL;
        oq_error err = {0};
        g_clock = thr[ti] > 1 ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID;
        if (thr[ti] > 1 && oq_pool_new(thr[ti], &pool, &err) != OQ_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const shape *s = &shapes[si];
            if (only && !strstr(s->name, only))
                continue;
            float *A = malloc(sizeof(float) * (size_t)s->M * (size_t)s->K);
            float *B = malloc(sizeof(float) * (size_t)s->K * (size_t)s->N);
            float *C = malloc(sizeof(float) * (size_t)s->M * (size_t)s->N);
            if (!A || !B || !C)
                return 1;
            srand(1);
            for (size_t i = 0; i < (size_t)s->M * (size_t)s->K; i++)
                A[i] = (float)rand() / RAND_MAX - 0.5f;
            for (size_t i = 0; i < (size_t)s->K * (size_t)s->N; i++)
                B[i] = (float)rand() / RAND_MAX - 0.5f;
            oq_sgemm_pa *pa = NULL;
            oq_sgemm_pb *pb = NULL;
            oq_status st = s->weight_b ? oq_sgemm_pack_b(false, s->K, s->N, B, s->N, &pb, &err)
                                       : oq_sgemm_pack_a(false, s->M, s->K, A, s->K, &pa, &err);
            if (st != OQ_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            printf("%-20s %5d %5d %5d %2d", s->name, s->M, s->N, s->K, thr[ti]);
            fflush(stdout);
            for (int b = 0; b < 3; b++) {
                if (!oq_sgemm_backend_set(backs[b]))
                    continue;
                printf(" %9.1f", measure(pool, s, A, B, C, NULL, NULL, secs));
                if (backs[b] != OQ_SGEMM_OPENBLAS)
                    printf(" %9.1f", measure(pool, s, A, B, C, pa, pb, secs));
                fflush(stdout);
            }
            printf("\n");
            oq_sgemm_pa_free(pa);
            oq_sgemm_pb_free(pb);
            free(A);
            free(B);
            free(C);
        }
        oq_pool_free(pool);
    }
    oq_sgemm_backend_set(OQ_SGEMM_AUTO);
    return 0;
}
