/* sgemm.c: the driver of onnxq's packed SGEMM: backend choice, packing into
 * 32-lane panels, Goto-style cache blocking (depth KC, broadcast-side MC,
 * vector-side NC), the thread split over the pool, and the packed-operand
 * objects. The register tiles live in sgemm_avx512.c / sgemm_avx2.c. On
 * the OpenBLAS backend the packed API hands each 32-lane panel (a plain
 * [K][32] matrix) to cblas_sgemm. */
#include "sgemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "checked.h"
#include "sgemm_internal.h"

#define PANEL OQ_SGEMM_PANEL

/* Depth block: a 32-lane vector panel of KC steps (32 KiB) stays in L1
 * while the broadcast rows stream past it. */
#define DEFAULT_KC 256
/* Depth block when the vector side is packed once (no per-call packing). */
#define DEEP_KC 512
/* Broadcast-side block (rows x KC) sized for L2. */
#define DEFAULT_MC 192
/* Vector-side block packed per call (KC x NC), sized for L2/L3. */
#define DEFAULT_NC 1024
/* Shallowest product worth computing transposed (see want_trans). */
#define TRANS_MIN_K 64
/* Below this many multiply-adds per thread, splitting costs more than it saves. */
#define MIN_WORK_PER_THREAD (1u << 21)

/* ---- backend -------------------------------------------------------------- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static oq_sgemm_backend g_best = OQ_SGEMM_OPENBLAS;    /* best the CPU has */
static oq_sgemm_backend g_default = OQ_SGEMM_OPENBLAS; /* best, or ONNXQ_SGEMM */
static oq_sgemm_backend g_backend = OQ_SGEMM_OPENBLAS; /* in use */
static bool g_has_avx2;                                /* for packing */

static bool cpu_has(oq_sgemm_backend b) {
    switch (b) {
    case OQ_SGEMM_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    case OQ_SGEMM_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case OQ_SGEMM_OPENBLAS:
        return true;
    default:
        return false;
    }
}

static void backend_init(void) {
    __builtin_cpu_init();
    g_best = cpu_has(OQ_SGEMM_AVX512) ? OQ_SGEMM_AVX512 : cpu_has(OQ_SGEMM_AVX2) ? OQ_SGEMM_AVX2 : OQ_SGEMM_OPENBLAS;
    g_default = g_best;
    g_has_avx2 = cpu_has(OQ_SGEMM_AVX2);
    const char *env = getenv("ONNXQ_SGEMM");
    if (env && *env) {
        oq_sgemm_backend want = OQ_SGEMM_AUTO;
        for (int b = OQ_SGEMM_AVX512; b <= OQ_SGEMM_OPENBLAS; b++)
            if (strcmp(env, oq_sgemm_backend_name((oq_sgemm_backend)b)) == 0)
                want = (oq_sgemm_backend)b;
        /* A wrong value is a configuration mistake worth one line, not a
         * failure: every backend computes the same product. */
        if (want == OQ_SGEMM_AUTO && strcmp(env, "auto") != 0)
            fprintf(stderr, "onnxq: ONNXQ_SGEMM=%s is not avx512|avx2|openblas; using %s\n", env,
                    oq_sgemm_backend_name(g_best));
        else if (want != OQ_SGEMM_AUTO && !cpu_has(want))
            fprintf(stderr, "onnxq: ONNXQ_SGEMM=%s: the CPU lacks it; using %s\n", env,
                    oq_sgemm_backend_name(g_best));
        else if (want != OQ_SGEMM_AUTO)
            g_default = want;
    }
    g_backend = g_default;
}

oq_sgemm_backend oq_sgemm_backend_get(void) {
    pthread_once(&g_once, backend_init);
    return g_backend;
}

const char *oq_sgemm_backend_name(oq_sgemm_backend b) {
    switch (b) {
    case OQ_SGEMM_AUTO:
        return "auto";
    case OQ_SGEMM_AVX512:
        return "avx512";
    case OQ_SGEMM_AVX2:
        return "avx2";
    case OQ_SGEMM_OPENBLAS:
        return "openblas";
    }
    return "?";
}

bool oq_sgemm_backend_set(oq_sgemm_backend b) {
    pthread_once(&g_once, backend_init);
    if (b == OQ_SGEMM_AUTO) {
        g_backend = g_default;
        return true;
    }
    if (!cpu_has(b))
        return false;
    g_backend = b;
    return true;
}

/* ---- portable tile (OpenBLAS backend's packed API) ------------------------ */

static void kgen(const oq_sgemm_kargs *a) {
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    const float *x = a->x, *y = a->y;
    for (int k = 0; k < a->kc; k++, x += PANEL, y += PANEL)
        for (int i = 0; i < a->mr; i++)
            for (int j = 0; j < 16; j++)
                acc[i][j] += x[i] * y[j];
    if (a->trans) {
        float tile[4 * PANEL];
        for (int i = 0; i < a->mr; i++)
            for (int j = 0; j < 16; j++)
                tile[i * PANEL + j] = a->alpha * acc[i][j];
        oq_sgemm_store_trans(a, tile);
        return;
    }
    for (int i = 0; i < a->mr; i++) {
        float *ci = a->c + (size_t)i * a->ldc;
        for (int j = 0; j < a->nr; j++) {
            float v = a->alpha * acc[i][j];
            if (a->beta != 0.0f)
                v += a->beta * ci[j];
            if (a->bi)
                v += a->bi[i];
            if (a->bj)
                v += a->bj[j];
            ci[j] = v;
        }
    }
}

static const oq_sgemm_kernel kernel_generic = {kgen, 4, 16, 4};

void oq_sgemm_store_trans(const oq_sgemm_kargs *a, const float *tile) {
    for (int j = 0; j < a->nr; j++) {
        float *cj = a->c + (size_t)j * a->ldc;
        float bj = a->bj ? a->bj[j] : 0.0f;
        for (int i = 0; i < a->mr; i++) {
            float v = tile[i * PANEL + j];
            if (a->beta != 0.0f)
                v += a->beta * cj[i];
            if (a->bi)
                v += a->bi[i];
            cj[i] = v + bj;
        }
    }
}

static const oq_sgemm_kernel *kernel_for(oq_sgemm_backend b) {
    switch (b) {
    case OQ_SGEMM_AVX512:
        return &oq_sgemm_kernel_avx512;
    case OQ_SGEMM_AVX2:
        return &oq_sgemm_kernel_avx2;
    default:
        return &kernel_generic;
    }
}

/* ---- tuning knobs for tests ----------------------------------------------- */

static int g_kc = DEFAULT_KC, g_mc = DEFAULT_MC, g_nc = DEFAULT_NC;
static int g_trans_mode = -1;

void oq_sgemm_set_blocking(int kc, int mc, int nc) {
    g_kc = kc > 0 ? kc : DEFAULT_KC;
    /* whole panels, so split points stay panel-aligned */
    g_mc = mc > 0 ? (mc + PANEL - 1) / PANEL * PANEL : DEFAULT_MC;
    g_nc = nc > 0 ? (nc + PANEL - 1) / PANEL * PANEL : DEFAULT_NC;
}

void oq_sgemm_set_trans_mode(int mode) { g_trans_mode = mode; }

/* ---- packing -------------------------------------------------------------- */

/* One operand as the driver sees it: "lanes" (rows of A, columns of B) by
 * depth. Either packed already (panel p at packed + p * pstride, depth
 * step k at + k * 32), raw (lane l, depth k at raw[l * ls + k * ks]), or
 * produced panel by panel by the caller's pack function. */
typedef struct {
    const float *packed;
    size_t pstride;
    const float *raw;
    size_t ls, ks;
    int lanes;
    oq_sgemm_pack_fn fn;
    void *fctx;
} opnd;

#ifndef PREFETCH_LANES
#define PREFETCH_LANES (4 * PANEL)
#endif

/* Packs lanes [l0, l0 + nl) x depth [k0, k0 + kc) of a raw operand into
 * panels of kc * 32 floats, lanes past nl zeroed. */
static void pack_panels(const opnd *o, int l0, int nl, int k0, int kc, float *dst) {
    if (o->fn) {
        o->fn(o->fctx, l0, nl, k0, kc, dst);
        return;
    }
    pthread_once(&g_once, backend_init);
    bool avx2 = g_has_avx2;
    if (o->ls == 1 && nl > PANEL) {
        /* lanes contiguous over several panels: walk each source row once,
         * left to right, so reads stream instead of jumping rows per panel */
        size_t pst = (size_t)kc * PANEL;
        for (int k = 0; k < kc; k++) {
            const float *s = o->raw + (size_t)l0 + (size_t)(k0 + k) * o->ks;
            float *d = dst + (size_t)k * PANEL;
            int l = 0;
            for (; l + PANEL <= nl; l += PANEL, d += pst)
                memcpy(d, s + l, PANEL * sizeof(float));
            if (l < nl) {
                memcpy(d, s + l, (size_t)(nl - l) * sizeof(float));
                memset(d + (nl - l), 0, (size_t)(PANEL - (nl - l)) * sizeof(float));
            }
        }
        return;
    }
    for (int p = 0; p * PANEL < nl; p++) {
        int w = nl - p * PANEL < PANEL ? nl - p * PANEL : PANEL;
        float *d = dst + (size_t)p * (size_t)kc * PANEL;
        const float *s = o->raw + (size_t)(l0 + p * PANEL) * o->ls + (size_t)k0 * o->ks;
        if (o->ls == 1) {
            /* lanes contiguous: row copies */
            for (int k = 0; k < kc; k++) {
                /* a later panel's row segment: rows are far apart, so no
                 * prefetcher sees it, and at batch 32 it comes from DRAM */
                __builtin_prefetch(s + (size_t)k * o->ks + PREFETCH_LANES);
                __builtin_prefetch(s + (size_t)k * o->ks + PREFETCH_LANES + 16);
                memcpy(d + (size_t)k * PANEL, s + (size_t)k * o->ks, (size_t)w * sizeof(float));
                if (w < PANEL)
                    memset(d + (size_t)k * PANEL + w, 0, (size_t)(PANEL - w) * sizeof(float));
            }
            continue;
        }
        if (avx2 && o->ks == 1) {
            oq_sgemm_pack_trans_avx2(s, o->ls, w, kc, d);
            continue;
        }
        /* depth contiguous: a transpose, eight lanes at a time so each
         * destination line is filled by consecutive writes */
        int l = 0;
        for (; l + 8 <= w; l += 8) {
            const float *s0 = s + (size_t)l * o->ls;
            for (int k = 0; k < kc; k++) {
                const float *sk = s0 + (size_t)k * o->ks;
                float *dk = d + (size_t)k * PANEL + l;
                for (int q = 0; q < 8; q++)
                    dk[q] = sk[(size_t)q * o->ls];
            }
        }
        for (; l < w; l++) {
            const float *sl = s + (size_t)l * o->ls;
            for (int k = 0; k < kc; k++)
                d[(size_t)k * PANEL + l] = sl[(size_t)k * o->ks];
        }
        if (w < PANEL)
            for (int k = 0; k < kc; k++)
                memset(d + (size_t)k * PANEL + w, 0, (size_t)(PANEL - w) * sizeof(float));
    }
}

/* Per-thread scratch, kept between calls (a fresh multi-megabyte malloc
 * per GEMM would mmap and page-fault every time); freed at thread exit. */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local float *t_scratch;
static _Thread_local size_t t_scratch_n;

static bool g_scratch_key_ok;

static void scratch_key_init(void) { g_scratch_key_ok = pthread_key_create(&g_scratch_key, free) == 0; }

static float *scratch_get(size_t n) {
    if (t_scratch && t_scratch_n >= n)
        return t_scratch;
    pthread_once(&g_scratch_once, scratch_key_init);
    size_t bytes;
    if (!oq_mul_size(n, sizeof(float), &bytes))
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        return NULL;
    free(t_scratch);
    t_scratch = p;
    t_scratch_n = n;
    /* without the key the buffer outlives a worker thread: a leak, not a fault */
    if (g_scratch_key_ok)
        pthread_setspecific(g_scratch_key, p);
    return p;
}

/* ---- the blocked product -------------------------------------------------- */

typedef struct {
    const oq_sgemm_kernel *kern;
    opnd x, y; /* broadcast side (tile rows), vector side (tile columns) */
    int K;
    float alpha, beta;
    float *C;
    size_t ldc;
    bool trans;            /* C(x lane, y lane) at C[y * ldc + x] */
    const float *bx, *by;  /* bias by x lane / y lane */
    const oq_post *post;   /* the epilogue's program, NULL when none */
    const float *res;      /* its residual, C's layout */
    bool split_y;
    size_t unit_count;     /* panels of the split side */
} job;

/* The post-op program over a finished tile: its rows of C are
 * contiguous runs of nr (or, transposed, mr) floats. */
static void post_tile(const job *j, const oq_sgemm_kargs *a) {
    size_t off = (size_t)(a->c - j->C);
    int rows = a->trans ? a->nr : a->mr, cols = a->trans ? a->mr : a->nr;
    oq_post_apply_rows(j->post, a->c, j->ldc, (size_t)rows, (size_t)cols, j->res ? j->res + off : NULL);
}

/* The same over all of C [M, N], for the paths without tiles. */
static void post_rect(const oq_sgemm_epilogue *ep, float *C, size_t ldc, int M, int N) {
    if (!ep || !ep->post)
        return;
    oq_post_apply_rows(ep->post, C, ldc, (size_t)M, (size_t)N, ep->res);
}

/* All tiles of one packed x block against one packed y block. xb(l) for
 * lane l of the block is xb + (l / 32) * xps + l % 32. */
static void macro(const job *j, int kc, bool first, bool last, int x0, int mx, const float *xb, size_t xps,
                  int y0, int ny, const float *yb, size_t yps) {
    const oq_sgemm_kernel *kn = j->kern;
    oq_sgemm_kargs a;
    a.kc = kc;
    a.trans = j->trans;
    a.alpha = j->alpha;
    a.beta = first ? j->beta : 1.0f;
    a.ldc = j->ldc;
    for (int yp = 0; yp * PANEL < ny; yp++) {
        const float *ypan = yb + (size_t)yp * yps;
        int pw = ny - yp * PANEL < PANEL ? ny - yp * PANEL : PANEL;
        for (int s = 0; s < pw; s += kn->nr_max) {
            int yl = y0 + yp * PANEL + s;
            a.y = ypan + s;
            a.nr = pw - s < kn->nr_max ? pw - s : kn->nr_max;
            a.bj = last && j->by ? j->by + yl : NULL;
            for (int xp = 0; xp * PANEL < mx; xp++) {
                int xw = mx - xp * PANEL < PANEL ? mx - xp * PANEL : PANEL;
                /* balanced row tiles: 32 rows as 11+11+10, not 14+14+4 */
                int tiles = (xw + kn->mr_max - 1) / kn->mr_max;
                int done = 0;
                for (int t = 0; t < tiles; t++) {
                    int mr = (xw - done) / (tiles - t);
                    int xl = x0 + xp * PANEL + done;
                    a.x = xb + (size_t)xp * xps + done;
                    a.mr = mr;
                    a.bi = last && j->bx ? j->bx + xl : NULL;
                    a.c = j->trans ? j->C + (size_t)yl * j->ldc + xl : j->C + (size_t)xl * j->ldc + yl;
                    kn->fn(&a);
                    if (last && j->post)
                        post_tile(j, &a);
                    done += mr;
                }
            }
        }
    }
}

/* The tile range x [x0, x1) by y [y0, y1), both panel-aligned at the start. */
static void run_block(const job *j, int x0, int x1, int y0, int y1) {
    int kc = g_kc, mc = g_mc, nc = g_nc;
    /* With the y side packed already, a deeper block halves the passes
     * over C and the per-tile epilogues; its panels stream from L2 anyway.
     * Pays most for narrow x sides (N=49 computed transposed). */
    if (j->y.packed && kc == DEFAULT_KC)
        kc = DEEP_KC;
    int K = j->K;
    if (kc > K)
        kc = K;
    if (mc > x1 - x0)
        mc = (x1 - x0 + PANEL - 1) / PANEL * PANEL;
    /* A packed y side costs nothing to revisit, so one y block: the x side
     * is then packed once, not once per y block. */
    if (nc > y1 - y0 || j->y.packed)
        nc = (y1 - y0 + PANEL - 1) / PANEL * PANEL;
    size_t need_x = j->x.packed ? 0 : (size_t)kc * (size_t)mc;
    size_t need_y = j->y.packed ? 0 : (size_t)kc * (size_t)nc;
    float *scratch = NULL;
    float fallback[2 * 64 * PANEL] __attribute__((aligned(64)));
    if (need_x + need_y) {
        scratch = scratch_get(need_x + need_y);
        if (!scratch) {
            /* Out of memory: finish the product in small blocks on the stack
             * rather than leave C wrong (the API has no error return). */
            kc = kc < 64 ? kc : 64;
            mc = nc = PANEL;
            need_x = j->x.packed ? 0 : (size_t)kc * PANEL;
            scratch = fallback;
        }
    }
    float *sx = scratch, *sy = scratch ? scratch + need_x : NULL;
    if (j->y.packed) {
        /* Nothing to pack on the y side: keep one x block's rows of C hot
         * (L2/L3) across the depth blocks instead of sweeping all of C per
         * depth block. */
        for (int ic = x0; ic < x1; ic += mc) {
            int mx = x1 - ic < mc ? x1 - ic : mc;
            for (int pc = 0; pc < K; pc += kc) {
                int kcur = K - pc < kc ? K - pc : kc;
                const float *xb = sx;
                size_t xps = (size_t)kcur * PANEL;
                if (j->x.packed) {
                    xb = j->x.packed + (size_t)(ic / PANEL) * j->x.pstride + (size_t)pc * PANEL;
                    xps = j->x.pstride;
                } else {
                    pack_panels(&j->x, ic, mx, pc, kcur, sx);
                }
                const float *yb = j->y.packed + (size_t)(y0 / PANEL) * j->y.pstride + (size_t)pc * PANEL;
                macro(j, kcur, pc == 0, pc + kcur == K, ic, mx, xb, xps, y0, y1 - y0, yb, j->y.pstride);
            }
        }
        return;
    }
    for (int jc = y0; jc < y1; jc += nc) {
        int ny = y1 - jc < nc ? y1 - jc : nc;
        for (int pc = 0; pc < K; pc += kc) {
            int kcur = K - pc < kc ? K - pc : kc;
            bool first = pc == 0, last = pc + kcur == K;
            if (!j->y.packed && x1 - x0 <= mc) {
                /* One x block: pack each y panel right before its tiles
                 * so it is still in L1 when they run. */
                const float *xb = j->x.packed ? j->x.packed + (size_t)(x0 / PANEL) * j->x.pstride + (size_t)pc * PANEL
                                              : sx;
                size_t xps = j->x.packed ? j->x.pstride : (size_t)kcur * PANEL;
                if (!j->x.packed)
                    pack_panels(&j->x, x0, x1 - x0, pc, kcur, sx);
                for (int yl = jc; yl < jc + ny; yl += PANEL) {
                    int w = jc + ny - yl < PANEL ? jc + ny - yl : PANEL;
                    pack_panels(&j->y, yl, w, pc, kcur, sy);
                    macro(j, kcur, first, last, x0, x1 - x0, xb, xps, yl, w, sy, (size_t)kcur * PANEL);
                }
                continue;
            }
            const float *yb;
            size_t yps;
            if (j->y.packed) {
                yb = j->y.packed + (size_t)(jc / PANEL) * j->y.pstride + (size_t)pc * PANEL;
                yps = j->y.pstride;
            } else {
                pack_panels(&j->y, jc, ny, pc, kcur, sy);
                yb = sy;
                yps = (size_t)kcur * PANEL;
            }
            for (int ic = x0; ic < x1; ic += mc) {
                int mx = x1 - ic < mc ? x1 - ic : mc;
                const float *xb;
                size_t xps;
                if (j->x.packed) {
                    xb = j->x.packed + (size_t)(ic / PANEL) * j->x.pstride + (size_t)pc * PANEL;
                    xps = j->x.pstride;
                } else {
                    pack_panels(&j->x, ic, mx, pc, kcur, sx);
                    xb = sx;
                    xps = (size_t)kcur * PANEL;
                }
                macro(j, kcur, first, last, ic, mx, xb, xps, jc, ny, yb, yps);
            }
        }
    }
}

static void job_range(void *ctx, size_t begin, size_t end) {
    const job *j = ctx;
    size_t lanes = (size_t)(j->split_y ? j->y.lanes : j->x.lanes);
    size_t hi_s = end * PANEL < lanes ? end * PANEL : lanes;
    int lo = (int)(begin * PANEL), hi = (int)hi_s;
    if (j->split_y)
        run_block(j, 0, j->x.lanes, lo, hi);
    else
        run_block(j, lo, hi, 0, j->y.lanes);
}

/* C = beta * C + bias when there is no depth to multiply. */
static void scale_only(int M, int N, float beta, float *C, size_t ldc, const float *rb, const float *cb) {
    for (int i = 0; i < M; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int n = 0; n < N; n++) {
            float v = beta != 0.0f ? beta * ci[n] : 0.0f;
            ci[n] = v + (rb ? rb[i] : 0.0f) + (cb ? cb[n] : 0.0f);
        }
    }
}

/* Padding waste of the vector side: 1.0 means none. */
static double fill(int n, int vec) { return (double)n / (double)((n + vec - 1) / vec * vec); }

/* Decides whether to compute C transposed (B's columns broadcast, A's rows
 * in vectors): pays when N is narrow and ragged (N=49) and M is not. */
static bool want_trans(const oq_sgemm_kernel *kn, int M, int N, int K) {
    if (g_trans_mode >= 0)
        return g_trans_mode > 0;
    /* The transposed store is scalar: shallow products (K=9) lose more
     * there than the padding costs. */
    return K >= TRANS_MIN_K && fill(M, kn->vec) > fill(N, kn->vec) + 0.05;
}

/* The busiest thread's share of u panels over t threads, over the mean:
 * 1.0 is a perfect split. */
static double split_imbalance(size_t u, size_t t) {
    size_t per = (u + t - 1) / t;
    return (double)(per * t) / (double)u;
}

/* How much worse a split of the per-call packed side may balance before
 * the other side is split instead. */
#define SPLIT_SLACK 0.05

/* a: the A side (lanes M), b: the B side (lanes N). */
static void drive(oq_pool *pool, const oq_sgemm_kernel *kn, const opnd *a, const opnd *b, int K, float alpha,
                  float beta, float *C, int ldc, const oq_sgemm_epilogue *ep) {
    int M = a->lanes, N = b->lanes;
    if (M <= 0 || N <= 0)
        return;
    const float *rb = ep ? ep->row_bias : NULL, *cb = ep ? ep->col_bias : NULL;
    if (K <= 0 || alpha == 0.0f) {
        scale_only(M, N, beta, C, (size_t)ldc, rb, cb);
        post_rect(ep, C, (size_t)ldc, M, N);
        return;
    }
    job j;
    memset(&j, 0, sizeof j);
    j.kern = kn;
    j.K = K;
    j.alpha = alpha;
    j.beta = beta;
    j.C = C;
    j.ldc = (size_t)ldc;
    j.trans = want_trans(kn, M, N, K);
    j.x = j.trans ? *b : *a;
    j.y = j.trans ? *a : *b;
    j.bx = j.trans ? cb : rb;
    j.by = j.trans ? rb : cb;
    j.post = ep ? ep->post : NULL;
    j.res = ep ? ep->res : NULL;
    size_t ux = ((size_t)j.x.lanes + PANEL - 1) / PANEL, uy = ((size_t)j.y.lanes + PANEL - 1) / PANEL;
    int threads = oq_pool_threads(pool);
    double work = (double)M * (double)N * (double)K;
    if (threads <= 1 || work < (double)MIN_WORK_PER_THREAD * 2 || (ux < 2 && uy < 2)) {
        job_range(&j, 0, ux); /* split_y false: the whole x range */
        return;
    }
    size_t t = (size_t)threads;
    /* Split the side that is packed per call when it has enough panels,
     * so no thread packs what another packs too, unless those panels
     * divide unevenly over the threads and the other side's do not: 7
     * panels (N=196) split 4/3 leave one thread idle a seventh of the time,
     * while packing the small side in both threads costs little. */
    double cx = split_imbalance(ux, t), cy = split_imbalance(uy, t);
    if (j.x.packed && !j.y.packed)
        j.split_y = (uy >= 2 * t || uy >= ux) && !(cy > cx + SPLIT_SLACK);
    else if (j.y.packed && !j.x.packed)
        j.split_y = !(ux >= 2 * t || ux >= uy) || cx > cy + SPLIT_SLACK;
    else
        j.split_y = uy >= ux;
    j.unit_count = j.split_y ? uy : ux;
    oq_parallel_for(pool, j.unit_count, 1, job_range, &j);
}

/* ---- packed objects ------------------------------------------------------- */

typedef struct {
    int lanes, depth;
    float *data; /* ceil(lanes / 32) panels of depth * 32 floats */
} packed;

struct oq_sgemm_pa {
    packed p;
};
struct oq_sgemm_pb {
    packed p;
};

static oq_status pack_whole(const char *what, int lanes, int depth, const float *src, size_t ls, size_t ks,
                            int ld, int width, packed *out, oq_error *err) {
    if (lanes < 0 || depth < 0)
        return oq_err(err, OQ_EINVAL, "sgemm pack %s: negative size %d x %d", what, lanes, depth);
    if (ld < (width > 1 ? width : 1))
        return oq_err(err, OQ_EINVAL, "sgemm pack %s: leading dimension %d below the row width %d", what, ld,
                      width);
    if (!src && lanes > 0 && depth > 0)
        return oq_err(err, OQ_EINVAL, "sgemm pack %s: NULL matrix", what);
    out->lanes = lanes;
    out->depth = depth;
    out->data = NULL;
    if (lanes == 0 || depth == 0)
        return OQ_OK;
    size_t panels = ((size_t)lanes + PANEL - 1) / PANEL, n, bytes;
    if (!oq_mul_size(panels * PANEL, (size_t)depth, &n) || !oq_mul_size(n, sizeof(float), &bytes))
        return oq_err(err, OQ_ELIMIT, "sgemm pack %s: %d x %d is too large", what, lanes, depth);
    out->data = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!out->data)
        return oq_err(err, OQ_ENOMEM, "sgemm pack %s: out of memory for %d x %d", what, lanes, depth);
    opnd o = {NULL, 0, src, ls, ks, lanes, NULL, NULL};
    pack_panels(&o, 0, lanes, 0, depth, out->data);
    return OQ_OK;
}

oq_status oq_sgemm_pack_a(bool trans_a, int M, int K, const float *A, int lda, oq_sgemm_pa **out, oq_error *err) {
    *out = NULL;
    oq_sgemm_pa *pa = calloc(1, sizeof *pa);
    if (!pa)
        return oq_err(err, OQ_ENOMEM, "sgemm pack A: out of memory");
    oq_status st = trans_a ? pack_whole("A^T", M, K, A, 1, (size_t)lda, lda, M, &pa->p, err)
                           : pack_whole("A", M, K, A, (size_t)lda, 1, lda, K, &pa->p, err);
    if (st != OQ_OK) {
        free(pa);
        return st;
    }
    *out = pa;
    return OQ_OK;
}

void oq_sgemm_pa_free(oq_sgemm_pa *pa) {
    if (!pa)
        return;
    free(pa->p.data);
    free(pa);
}

int oq_sgemm_pa_rows(const oq_sgemm_pa *pa) { return pa->p.lanes; }
int oq_sgemm_pa_depth(const oq_sgemm_pa *pa) { return pa->p.depth; }

oq_status oq_sgemm_pack_b(bool trans_b, int K, int N, const float *B, int ldb, oq_sgemm_pb **out, oq_error *err) {
    *out = NULL;
    oq_sgemm_pb *pb = calloc(1, sizeof *pb);
    if (!pb)
        return oq_err(err, OQ_ENOMEM, "sgemm pack B: out of memory");
    oq_status st = trans_b ? pack_whole("B^T", N, K, B, (size_t)ldb, 1, ldb, K, &pb->p, err)
                           : pack_whole("B", N, K, B, 1, (size_t)ldb, ldb, N, &pb->p, err);
    if (st != OQ_OK) {
        free(pb);
        return st;
    }
    *out = pb;
    return OQ_OK;
}

void oq_sgemm_pb_free(oq_sgemm_pb *pb) {
    if (!pb)
        return;
    free(pb->p.data);
    free(pb);
}

int oq_sgemm_pb_depth(const oq_sgemm_pb *pb) { return pb->p.depth; }
int oq_sgemm_pb_cols(const oq_sgemm_pb *pb) { return pb->p.lanes; }

static opnd from_packed(const packed *p) {
    opnd o = {p->data, (size_t)p->depth * PANEL, NULL, 0, 0, p->lanes, NULL, NULL};
    return o;
}

static opnd raw_a(bool trans_a, int M, const float *A, int lda) {
    opnd o = {NULL, 0, A, trans_a ? 1 : (size_t)lda, trans_a ? (size_t)lda : 1, M, NULL, NULL};
    return o;
}

static opnd raw_b(bool trans_b, int N, const float *B, int ldb) {
    opnd o = {NULL, 0, B, trans_b ? (size_t)ldb : 1, trans_b ? 1 : (size_t)ldb, N, NULL, NULL};
    return o;
}

/* ---- OpenBLAS backend of the packed API ----------------------------------- */

/* Panel p of a packed operand is a row-major [K][32] matrix: A_p^T for a
 * packed A (C rows 32p..), B_p for a packed B (C columns 32p..). */
typedef struct {
    const packed *p;
    bool packed_is_a, trans_o; /* trans_o: the raw operand is given transposed */
    int other;                 /* N for a packed A, M for a packed B */
    const float *O;
    int ldo;
    float beta;
    float *C;
    int ldc;
    const float *rb, *cb;
} blas_job;

static void blas_panels(void *ctx, size_t begin, size_t end) {
    const blas_job *j = ctx;
    int K = j->p->depth;
    for (size_t p = begin; p < end; p++) {
        int l0 = (int)p * PANEL, w = j->p->lanes - l0 < PANEL ? j->p->lanes - l0 : PANEL;
        const float *pan = j->p->data + p * (size_t)K * PANEL;
        CBLAS_TRANSPOSE to = j->trans_o ? CblasTrans : CblasNoTrans;
        int rows = j->packed_is_a ? w : j->other, cols = j->packed_is_a ? j->other : w;
        float *c = j->packed_is_a ? j->C + (size_t)l0 * j->ldc : j->C + l0;
        if (j->packed_is_a)
            cblas_sgemm(CblasRowMajor, CblasTrans, to, w, j->other, K, 1.0f, pan, PANEL, j->O, j->ldo, j->beta, c,
                        j->ldc);
        else
            cblas_sgemm(CblasRowMajor, to, CblasNoTrans, j->other, w, K, 1.0f, j->O, j->ldo, pan, PANEL, j->beta,
                        c, j->ldc);
        if (!j->rb && !j->cb)
            continue;
        const float *rb = j->rb && j->packed_is_a ? j->rb + l0 : j->rb;
        const float *cb = j->cb && !j->packed_is_a ? j->cb + l0 : j->cb;
        for (int i = 0; i < rows; i++)
            for (int n = 0; n < cols; n++)
                c[(size_t)i * j->ldc + n] += (rb ? rb[i] : 0.0f) + (cb ? cb[n] : 0.0f);
    }
}

static void blas_run(oq_pool *pool, const blas_job *j) {
    int K = j->p->depth, lanes = j->p->lanes;
    if (lanes <= 0 || j->other <= 0)
        return;
    if (K <= 0) {
        int M = j->packed_is_a ? lanes : j->other, N = j->packed_is_a ? j->other : lanes;
        scale_only(M, N, j->beta, j->C, (size_t)j->ldc, j->rb, j->cb);
        return;
    }
    size_t panels = ((size_t)lanes + PANEL - 1) / PANEL;
    /* One OpenBLAS call on the unpacked operand: per-panel calls would each
     * repack the other operand inside OpenBLAS (4x slower measured). */
    float *u = scratch_get((size_t)lanes * (size_t)K);
    if (u) {
        for (int l = 0; l < lanes; l++)
            for (int k = 0; k < K; k++)
                u[(size_t)l * K + k] = j->p->data[(size_t)(l / PANEL) * K * PANEL + (size_t)k * PANEL + l % PANEL];
        if (j->packed_is_a)
            oq_sgemm(pool, false, j->trans_o, lanes, j->other, K, 1.0f, u, K, j->O, j->ldo, j->beta, j->C, j->ldc);
        else /* u holds B^T [N][K] */
            oq_sgemm(pool, j->trans_o, true, j->other, lanes, K, 1.0f, j->O, j->ldo, u, K, j->beta, j->C, j->ldc);
        int M = j->packed_is_a ? lanes : j->other, N = j->packed_is_a ? j->other : lanes;
        if (j->rb || j->cb)
            for (int i = 0; i < M; i++)
                for (int n = 0; n < N; n++)
                    j->C[(size_t)i * j->ldc + n] += (j->rb ? j->rb[i] : 0.0f) + (j->cb ? j->cb[n] : 0.0f);
        return;
    }
    double work = (double)lanes * (double)j->other * (double)K;
    if (oq_pool_threads(pool) <= 1 || work < (double)MIN_WORK_PER_THREAD * 2)
        blas_panels((void *)j, 0, panels);
    else
        oq_parallel_for(pool, panels, 1, blas_panels, (void *)j);
}

void oq_sgemm_pa_run(oq_pool *pool, const oq_sgemm_pa *A, bool trans_b, int N, const float *B, int ldb,
                     float beta, float *C, int ldc, const oq_sgemm_epilogue *ep) {
    oq_sgemm_backend be = oq_sgemm_backend_get();
    if (be == OQ_SGEMM_OPENBLAS) {
        blas_job j = {&A->p, true, trans_b, N, B, ldb, beta, C, ldc, ep ? ep->row_bias : NULL,
                      ep ? ep->col_bias : NULL};
        blas_run(pool, &j);
        post_rect(ep, C, (size_t)ldc, A->p.lanes, N);
        return;
    }
    opnd a = from_packed(&A->p), b = raw_b(trans_b, N, B, ldb);
    drive(pool, kernel_for(be), &a, &b, A->p.depth, 1.0f, beta, C, ldc, ep);
}

/* OpenBLAS backend of oq_sgemm_pa_run_fn: B materialised one 32-column
 * panel at a time (a [K][32] matrix is exactly what the pack function
 * writes for full depth), one thread: this backend is the fallback. */
static void blas_run_fn(const packed *a, int N, oq_sgemm_pack_fn pack_b, void *ctx, float beta, float *C,
                        int ldc, const oq_sgemm_epilogue *ep) {
    int M = a->lanes, K = a->depth;
    const float *rb = ep ? ep->row_bias : NULL, *cb = ep ? ep->col_bias : NULL;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        scale_only(M, N, beta, C, (size_t)ldc, rb, cb);
        return;
    }
    /* the panel after A's copy starts on a cache line, as the contract says */
    size_t nu = ((size_t)M * (size_t)K + 15) & ~(size_t)15, npan = (size_t)K * PANEL;
    float *u = scratch_get(nu + npan);
    float stack_pan[64 * PANEL] __attribute__((aligned(64)));
    for (int l0 = 0; l0 < N; l0 += PANEL) {
        int w = N - l0 < PANEL ? N - l0 : PANEL;
        float *c = C + l0;
        if (u) {
            if (l0 == 0)
                for (int l = 0; l < M; l++)
                    for (int k = 0; k < K; k++)
                        u[(size_t)l * K + k] = a->data[(size_t)(l / PANEL) * npan + (size_t)k * PANEL + l % PANEL];
            float *pan = u + nu;
            pack_b(ctx, l0, w, 0, K, pan);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, w, K, 1.0f, u, K, pan, PANEL, beta, c, ldc);
        } else {
            /* Out of memory: per A panel and depth slices of 64 on the stack. */
            for (int k0 = 0; k0 < K; k0 += 64) {
                int kc = K - k0 < 64 ? K - k0 : 64;
                pack_b(ctx, l0, w, k0, kc, stack_pan);
                for (int p = 0; p * PANEL < M; p++) {
                    int mw = M - p * PANEL < PANEL ? M - p * PANEL : PANEL;
                    const float *ap = a->data + (size_t)p * npan + (size_t)k0 * PANEL;
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, mw, w, kc, 1.0f, ap, PANEL, stack_pan,
                                PANEL, k0 == 0 ? beta : 1.0f, c + (size_t)p * PANEL * (size_t)ldc, ldc);
                }
            }
        }
        if (rb || cb)
            for (int i = 0; i < M; i++)
                for (int n = 0; n < w; n++)
                    c[(size_t)i * ldc + n] += (rb ? rb[i] : 0.0f) + (cb ? cb[l0 + n] : 0.0f);
    }
}

void oq_sgemm_pa_run_fn(oq_pool *pool, const oq_sgemm_pa *A, int N, oq_sgemm_pack_fn pack_b, void *ctx,
                        float beta, float *C, int ldc, const oq_sgemm_epilogue *ep) {
    oq_sgemm_backend be = oq_sgemm_backend_get();
    if (be == OQ_SGEMM_OPENBLAS) {
        blas_run_fn(&A->p, N, pack_b, ctx, beta, C, ldc, ep);
        post_rect(ep, C, (size_t)ldc, A->p.lanes, N);
        return;
    }
    opnd a = from_packed(&A->p), b = {NULL, 0, NULL, 0, 0, N, pack_b, ctx};
    drive(pool, kernel_for(be), &a, &b, A->p.depth, 1.0f, beta, C, ldc, ep);
}

void oq_sgemm_pb_run(oq_pool *pool, bool trans_a, int M, const float *A, int lda, const oq_sgemm_pb *B,
                     float beta, float *C, int ldc, const oq_sgemm_epilogue *ep) {
    oq_sgemm_backend be = oq_sgemm_backend_get();
    if (be == OQ_SGEMM_OPENBLAS) {
        blas_job j = {&B->p, false, trans_a, M, A, lda, beta, C, ldc, ep ? ep->row_bias : NULL,
                      ep ? ep->col_bias : NULL};
        blas_run(pool, &j);
        post_rect(ep, C, (size_t)ldc, M, B->p.lanes);
        return;
    }
    opnd a = raw_a(trans_a, M, A, lda), b = from_packed(&B->p);
    drive(pool, kernel_for(be), &a, &b, B->p.depth, 1.0f, beta, C, ldc, ep);
}

void oq_sgemm_raw(oq_pool *pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    opnd a = raw_a(trans_a, M, A, lda), b = raw_b(trans_b, N, B, ldb);
    drive(pool, kernel_for(oq_sgemm_backend_get()), &a, &b, K, alpha, beta, C, ldc, NULL);
}
