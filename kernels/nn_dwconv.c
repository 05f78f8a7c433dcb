/* nn_dwconv.c: the direct kernel for 2-D depthwise Conv (one input channel
 * per group), called by nn_conv.c: whole output planes, bias included, with
 * AVX-512 kernels for horizontal stride 1 and a portable one for the rest. */
#include <stdint.h>

#include "nn.h"

/* ---- portable ------------------------------------------------------------- */

/* acc[ow] += sum_kw wr[kw] * xr[ow*SW + off0 + kw*dil] over [lo, hi), every
 * tap known to be inside the row. KW and SW constant where it matters. */
#define DW_ROW(KW, SW)                                                         \
    for (int64_t ow = lo; ow < hi; ow++) {                                     \
        const float *xp = xr + (ow * (SW) + off0);                               \
        float acc = yr[ow];                                                    \
        for (int64_t q = 0; q < (KW); q++)                                     \
            acc += wr[q] * xp[q * dil];                                        \
        yr[ow] = acc;                                                          \
    }

static inline void dw_interior(float *restrict yr, const float *restrict xr, const float *restrict wr,
                        int64_t kw, int64_t sw, int64_t dil, int64_t off0, int64_t lo, int64_t hi) {
    if (kw == 3 && sw == 1) {
        DW_ROW(3, 1)
    } else if (kw == 3 && sw == 2) {
        DW_ROW(3, 2)
    } else if (kw == 5 && sw == 1) {
        DW_ROW(5, 1)
    } else if (kw == 5 && sw == 2) {
        DW_ROW(5, 2)
    } else if (kw == 7 && sw == 1) {
        DW_ROW(7, 1)
    } else {
        DW_ROW(kw, sw)
    }
}

/* y[ow] = bias + all KH x KW taps, for rows whose taps are all inside the
 * image and columns [lo, hi) likewise: one pass, one store per output.
 * (Blocking the columns by 16 with an overlapping last block measured
 * slower than letting the compiler vectorise this loop.) */
#define DW_FUSED(KH_, KW_, SW)                                                     \
    for (int64_t ow = lo; ow < hi; ow++) {                                         \
        const float *xp = x0 + (ow * (SW) + off0);                                 \
        float acc = bias;                                                          \
        for (int64_t a = 0; a < (KH_); a++)                                        \
            for (int64_t b = 0; b < (KW_); b++)                                    \
                acc += w[a * (KW_) + b] * xp[a * rstride + b * dil];               \
        yr[ow] = acc;                                                              \
    }

/* Returns false for kernel shapes without a fused loop. */
static inline bool dw_fused(float *restrict yr, const float *restrict x0, int64_t rstride,
                            const float *restrict w, float bias, int64_t kh, int64_t kw,
                            int64_t sw, int64_t dil, int64_t off0, int64_t lo, int64_t hi) {
    if (kh == 3 && kw == 3 && sw == 1) {
        DW_FUSED(3, 3, 1)
    } else if (kh == 3 && kw == 3 && sw == 2) {
        DW_FUSED(3, 3, 2)
    } else if (kh == 5 && kw == 5 && sw == 1) {
        DW_FUSED(5, 5, 1)
    } else if (kh == 5 && kw == 5 && sw == 2) {
        DW_FUSED(5, 5, 2)
    } else {
        return false;
    }
    return true;
}

static inline void dw_border(float *yr, const float *xr, const float *wr, int64_t kw, int64_t sw,
                      int64_t dil, int64_t pl, int64_t iw_n, int64_t from, int64_t to) {
    for (int64_t ow = from; ow < to; ow++) {
        float acc = 0.0f;
        for (int64_t q = 0; q < kw; q++) {
            int64_t iw = ow * sw - pl + q * dil;
            if (iw >= 0 && iw < iw_n)
                acc += wr[q] * xr[iw];
        }
        yr[ow] += acc;
    }
}

/* Output columns [lo, hi) whose every kw tap is inside the row. */
static void dw_inner_cols(const oq_nn_geom *g, int64_t *lo, int64_t *hi) {
    int64_t IW = g->in[1], OW = g->out[1], sw = g->s[1], pl = g->pb[1];
    int64_t last = (g->k[1] - 1) * g->d[1]; /* offset of the last tap */
    int64_t l = pl > 0 ? (pl + sw - 1) / sw : 0; /* ow*sw - pl >= 0 */
    int64_t h = IW - 1 - last + pl >= 0 ? (IW - 1 - last + pl) / sw + 1 : 0;
    if (h > OW)
        h = OW;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* The fused program over finished plane q, while it is in cache. */
static inline void dw_post(const oq_nn_dw_job *j, size_t q, size_t P) {
    if (j->post)
        oq_post_apply(j->post, j->y + q * P, j->y + q * P, j->post->res ? j->post->res + q * P : NULL, P);
}

OQ_NN_HOT static void dw_planes_portable(const oq_nn_dw_job *j, size_t q0, size_t q1) {
    const oq_nn_geom *g = j->g;
    int64_t IH = g->in[0], IW = g->in[1], OH = g->out[0], OW = g->out[1];
    int64_t KH = g->k[0], KW = g->k[1], sh = g->s[0], sw = g->s[1], dh = g->d[0], dw = g->d[1];
    int64_t pt = g->pb[0], pl = g->pb[1];
    int64_t lo_all, hi_all;
    dw_inner_cols(g, &lo_all, &hi_all);
    for (size_t q = q0; q < q1; q++) {
        int64_t n = (int64_t)q / j->M, oc = (int64_t)q % j->M, ic = oc / j->Mg;
        const float *x = j->x + ((size_t)(n * j->C + ic)) * (size_t)(IH * IW);
        const float *w = j->w + (size_t)oc * (size_t)(KH * KW);
        float *y = j->y + q * (size_t)(OH * OW);
        float bias = j->b ? j->b[oc] : 0.0f;
        for (int64_t oh = 0; oh < OH; oh++) {
            float *yr = y + oh * OW;
            int64_t ih0 = oh * sh - pt;
            if (ih0 >= 0 && ih0 + (KH - 1) * dh < IH && hi_all > lo_all &&
                dw_fused(yr, x + ih0 * IW, IW * dh, w, bias, KH, KW, sw, dw, -pl, lo_all,
                         hi_all)) {
                /* interior done in one pass; borders with bounds checks */
                int64_t border[2][2] = {{0, lo_all}, {hi_all, OW}};
                for (int rg = 0; rg < 2; rg++)
                for (int64_t ow = border[rg][0]; ow < border[rg][1]; ow++) {
                    float acc = bias;
                    for (int64_t kh = 0; kh < KH; kh++) {
                        const float *xr = x + (ih0 + kh * dh) * IW;
                        for (int64_t kq = 0; kq < KW; kq++) {
                            int64_t iw = ow * sw - pl + kq * dw;
                            if (iw >= 0 && iw < IW)
                                acc += w[kh * KW + kq] * xr[iw];
                        }
                    }
                    yr[ow] = acc;
                }
                continue;
            }
            for (int64_t ow = 0; ow < OW; ow++)
                yr[ow] = bias;
            for (int64_t kh = 0; kh < KH; kh++) {
                int64_t ih = oh * sh - pt + kh * dh;
                if (ih < 0 || ih >= IH)
                    continue;
                const float *xr = x + ih * IW;
                const float *wr = w + kh * KW;
                /* borders: per-tap bounds checks */
                dw_border(yr, xr, wr, KW, sw, dw, pl, IW, 0, lo_all);
                dw_border(yr, xr, wr, KW, sw, dw, pl, IW, hi_all, OW);
                if (hi_all > lo_all)
                    dw_interior(yr, xr, wr, KW, sw, dw, -pl, lo_all, hi_all);
            }
        }
        dw_post(j, q, (size_t)(OH * OW));
    }
}

/* ---- AVX-512 -------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OQ_NN_NO_CLONES)
#include <immintrin.h>
#define DW_HAVE_AVX512 1

/* Both AVX-512 kernels compute 16 output columns per vector from unaligned
 * loads of the input row (horizontal stride 1), one per tap; lanes outside
 * the row are masked off and read as 0, which is the zero padding, so there
 * are no scalar borders. Blocks of up to 4 output rows are computed together
 * so that each input row loaded feeds every output row it reaches. */

/* Bit i set when input column a + i (i < 16) is inside [0, IW). */
static inline __mmask16 dw_lane_mask(int64_t a, int64_t IW) {
    int64_t lo = a < 0 ? -a : 0, hi = IW - a;
    if (lo > 16)
        lo = 16;
    if (hi > 16)
        hi = 16;
    if (hi <= lo)
        return 0;
    return (__mmask16)((((uint32_t)1 << hi) - 1) & ~(((uint32_t)1 << lo) - 1));
}

/* 16 columns of row xr from column a (may be negative): the address is
 * formed as an integer, since it may point before the row. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
dw_load(const float *xr, int64_t a, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const void *)((uintptr_t)xr + (uintptr_t)(a * (int64_t)sizeof(float))));
}

/* Stores rows [0, R) of a block's 16 columns at ow0 (the last vector of a
 * row masked to its width). */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_store(float *y, int64_t OW, int64_t ow0, int R, const __m512 *acc) {
    __mmask16 mo = OW - ow0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow0)) - 1);
    for (int r = 0; r < R; r++)
        _mm512_mask_storeu_ps(y + r * OW + ow0, mo, acc[r]);
}

/* -- fixed shapes: square 3x3 or 5x5, vertical stride 1 or 2, no dilation --
 * R, K and SH are constants after inlining and every loop over rows and taps
 * is unrolled, so each (input row, output row) pair that meets is a fixed
 * list of FMAs with the weights in registers (measured 1.4x faster than the
 * table-driven kernel below on ppocr's planes); a padding row costs one
 * branch per 16 columns. */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_block_fixed(const oq_nn_geom *g, int R, int K, int SH, int64_t ih0, const float *x,
               const __m512 *wv, float bias, float *y) {
    int64_t IH = g->in[0], IW = g->in[1], OW = g->out[1], pl = g->pb[1];
    const int span = (R - 1) * SH + K; /* input rows from ih0 */
    const float *rows[3 * 2 + 5];
    bool inside[3 * 2 + 5];
#pragma GCC unroll 16
    for (int i = 0; i < span; i++) {
        inside[i] = ih0 + i >= 0 && ih0 + i < IH;
        rows[i] = x + (inside[i] ? ih0 + i : 0) * IW;
    }
    for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
        /* taps reach outside the row only near its ends */
        bool edge = ow0 - pl < 0 || ow0 + 15 - pl + (K - 1) >= IW;
        __mmask16 m[5];
#pragma GCC unroll 8
        for (int kw = 0; kw < K; kw++)
            m[kw] = edge ? dw_lane_mask(ow0 - pl + kw, IW) : (__mmask16)0xFFFF;
        __m512 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc[r] = _mm512_set1_ps(bias);
#pragma GCC unroll 16
        for (int i = 0; i < span; i++) {
            if (!inside[i])
                continue;
#pragma GCC unroll 8
            for (int kw = 0; kw < K; kw++) {
                __m512 v = dw_load(rows[i], ow0 - pl + kw, m[kw]);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    int kh = i - r * SH;
                    if (kh >= 0 && kh < K)
                        acc[r] = _mm512_fmadd_ps(v, wv[kh * K + kw], acc[r]);
                }
            }
        }
        dw_store(y, OW, ow0, R, acc);
    }
}

/* A plane in blocks of 4 or 3 rows, whichever computes fewer (6 rows: 3 + 3,
 * not 4 + 4); the last block overlaps the one before rather than being
 * narrower (its shared rows are written twice with the same values). */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_plane_fixed(const oq_nn_geom *g, int K, int SH, const float *x, const float *w, float bias,
               float *y) {
    int64_t OH = g->out[0], OW = g->out[1], pt = g->pb[0];
    __m512 wv[25];
#pragma GCC unroll 25
    for (int i = 0; i < K * K; i++)
        wv[i] = _mm512_set1_ps(w[i]);
    int R = OH < 4 ? (int)OH : (OH + 2) / 3 * 3 < (OH + 3) / 4 * 4 ? 3 : 4;
    for (int64_t oh0 = 0;; oh0 += R) {
        if (oh0 > OH - R)
            oh0 = OH - R;
        int64_t ih0 = oh0 * SH - pt;
        float *yb = y + oh0 * OW;
        switch (R) {
        case 1: dw_block_fixed(g, 1, K, SH, ih0, x, wv, bias, yb); break;
        case 2: dw_block_fixed(g, 2, K, SH, ih0, x, wv, bias, yb); break;
        case 3: dw_block_fixed(g, 3, K, SH, ih0, x, wv, bias, yb); break;
        default: dw_block_fixed(g, 4, K, SH, ih0, x, wv, bias, yb); break;
        }
        if (oh0 == OH - R)
            break;
    }
}

typedef struct dw_cache dw_cache;
/* One output plane from input plane x, weights w (KH * KW); c: see dw_cache. */
typedef void (*dw_plane_fn)(const oq_nn_geom *g, const dw_cache *c, const float *x, const float *w,
                            float bias, float *y);

#define DW_FIXED(K, SH)                                                                       \
    __attribute__((target("avx512f"))) static void dw_plane_k##K##s##SH(                      \
        const oq_nn_geom *g, const dw_cache *c, const float *x, const float *w, float bias,    \
        float *y) {                                                                           \
        (void)c;                                                                              \
        dw_plane_fixed(g, K, SH, x, w, bias, y);                                              \
    }
DW_FIXED(3, 1)
DW_FIXED(3, 2)
DW_FIXED(5, 1)
DW_FIXED(5, 2)

/* -- any kernel up to 16 rows, any vertical stride and dilations ----------- */

#define DW_MAX_KH 16
#define DW_MAX_IN_ROWS (4 * DW_MAX_KH)

/* The input rows a block of output rows reads, padding rows left out: row i
 * starts at x + off[i] and feeds output row r with weight row wrow[i][r]
 * (its offset in the plane's weights; -1: none). */
typedef struct {
    int n;
    int64_t off[DW_MAX_IN_ROWS];
    int32_t wrow[DW_MAX_IN_ROWS][4];
} dw_rows;

/* The tables depend on the geometry only: those of the first blocks are made
 * once per range of planes (building them per plane cost as much as the
 * FMAs of a 28x28 7x7 plane); taller planes make the rest per plane. */
#define DW_CACHED_BLOCKS 8
struct dw_cache {
    dw_rows blk[DW_CACHED_BLOCKS];
};

static void dw_block_rows(const oq_nn_geom *g, int64_t oh0, int R, dw_rows *b) {
    int64_t IH = g->in[0], IW = g->in[1], KH = g->k[0], sh = g->s[0], dh = g->d[0], pt = g->pb[0];
    int64_t first = oh0 * sh - pt, last = (oh0 + R - 1) * sh - pt + (KH - 1) * dh;
    if (first < 0)
        first = 0;
    if (last > IH - 1)
        last = IH - 1;
    b->n = 0;
    for (int64_t ih = first; ih <= last; ih++) {
        bool used = false;
        int32_t *wr = b->wrow[b->n];
        for (int r = 0; r < R; r++) {
            int64_t t = ih - ((oh0 + r) * sh - pt); /* kh * dh for this output row */
            bool hit = t >= 0 && t < KH * dh && t % dh == 0;
            wr[r] = hit ? (int32_t)(t / dh * g->k[1]) : -1;
            used |= hit;
        }
        if (used) /* at most R * KH rows are */
            b->off[b->n++] = ih * IW;
    }
}

static void dw_cache_fill(const oq_nn_geom *g, dw_cache *c) {
    for (int64_t oh0 = 0, i = 0; oh0 < g->out[0] && i < DW_CACHED_BLOCKS; oh0 += 4, i++)
        dw_block_rows(g, oh0, g->out[0] - oh0 < 4 ? (int)(g->out[0] - oh0) : 4, &c->blk[i]);
}

/* R output rows (constant after inlining) from the table: per 16 columns and
 * kw tap one mask, then one load per input row for the rows it feeds. */
__attribute__((target("avx512f"), always_inline)) static inline void
dw_block_any(const oq_nn_geom *g, const dw_rows *b, int R, const float *x, const float *w, float bias,
             float *y) {
    int64_t IW = g->in[1], OW = g->out[1], KW = g->k[1], dw = g->d[1], pl = g->pb[1];
    for (int64_t ow0 = 0; ow0 < OW; ow0 += 16) {
        __m512 acc[4];
        for (int r = 0; r < R; r++)
            acc[r] = _mm512_set1_ps(bias);
        for (int64_t kw = 0; kw < KW; kw++) {
            int64_t a = ow0 - pl + kw * dw;
            __mmask16 m = dw_lane_mask(a, IW);
            for (int i = 0; i < b->n; i++) {
                __m512 v = dw_load(x + b->off[i], a, m);
                for (int r = 0; r < R; r++)
                    if (b->wrow[i][r] >= 0)
                        acc[r] = _mm512_fmadd_ps(v, _mm512_set1_ps(w[b->wrow[i][r] + kw]), acc[r]);
            }
        }
        dw_store(y, OW, ow0, R, acc);
    }
}

__attribute__((target("avx512f"))) static void dw_plane_any(const oq_nn_geom *g, const dw_cache *c,
                                                            const float *x, const float *w, float bias,
                                                            float *y) {
    int64_t OH = g->out[0], OW = g->out[1];
    dw_rows tmp;
    for (int64_t oh0 = 0, i = 0; oh0 < OH; oh0 += 4, i++) {
        int R = OH - oh0 < 4 ? (int)(OH - oh0) : 4;
        const dw_rows *b = &c->blk[i];
        if (i >= DW_CACHED_BLOCKS) {
            dw_block_rows(g, oh0, R, &tmp);
            b = &tmp;
        }
        float *yb = y + oh0 * OW;
        switch (R) {
        case 1: dw_block_any(g, b, 1, x, w, bias, yb); break;
        case 2: dw_block_any(g, b, 2, x, w, bias, yb); break;
        case 3: dw_block_any(g, b, 3, x, w, bias, yb); break;
        default: dw_block_any(g, b, 4, x, w, bias, yb); break;
        }
    }
}

/* The AVX-512 plane kernel for g, or NULL: horizontal stride > 1, kernels
 * taller than DW_MAX_KH or too wide for the tables' int32 offsets, no
 * AVX-512. */
static dw_plane_fn dw_avx512_for(const oq_nn_geom *g) {
    if (g->s[1] != 1 || g->k[0] > DW_MAX_KH || g->k[1] > INT32_MAX / DW_MAX_KH ||
        !__builtin_cpu_supports("avx512f"))
        return NULL;
    if (g->k[0] == g->k[1] && (g->k[0] == 3 || g->k[0] == 5) && g->d[0] == 1 && g->d[1] == 1 &&
        (g->s[0] == 1 || g->s[0] == 2)) {
        if (g->k[0] == 3)
            return g->s[0] == 1 ? dw_plane_k3s1 : dw_plane_k3s2;
        return g->s[0] == 1 ? dw_plane_k5s1 : dw_plane_k5s2;
    }
    return dw_plane_any;
}

/* The input two planes ahead is prefetched (up to 16 KB): ppocr's 3x3
 * stride-[2,1] node at batch 32, whose blocks read 7 short row streams at
 * once, went 0.23 -> 0.13 ms in the model; its other nodes were unchanged. */
#define DW_PREFETCH_AHEAD 2

static void dw_planes_avx512(const oq_nn_dw_job *j, dw_plane_fn fn, const dw_cache *c, size_t q0,
                             size_t q1) {
    const oq_nn_geom *g = j->g;
    size_t Pin = (size_t)(g->in[0] * g->in[1]), Pout = (size_t)(g->out[0] * g->out[1]);
    size_t K = (size_t)(g->k[0] * g->k[1]);
    size_t pf_bytes = Pin * sizeof(float) < 16384 ? Pin * sizeof(float) : 16384;
    for (size_t q = q0; q < q1; q++) {
        if (q + DW_PREFETCH_AHEAD < q1) {
            size_t qa = q + DW_PREFETCH_AHEAD;
            int64_t na = (int64_t)qa / j->M, ica = (int64_t)qa % j->M / j->Mg;
            const char *xa = (const char *)(j->x + (size_t)(na * j->C + ica) * Pin);
            for (size_t o = 0; o < pf_bytes; o += 64)
                __builtin_prefetch(xa + o);
        }
        int64_t n = (int64_t)q / j->M, oc = (int64_t)q % j->M, ic = oc / j->Mg;
        fn(g, c, j->x + (size_t)(n * j->C + ic) * Pin, j->w + (size_t)oc * K, j->b ? j->b[oc] : 0.0f,
           j->y + q * Pout);
        dw_post(j, q, Pout);
    }
}
#endif

void oq_nn_dw_run(oq_pool *pool, oq_nn_dw_job *j, size_t planes) {
    const oq_nn_geom *g = j->g;
    size_t work = (size_t)(g->out[0] * g->out[1]) * (size_t)(g->k[0] * g->k[1]);
#ifdef DW_HAVE_AVX512
    /* The AVX-512 kernels do 2.5-6x the multiply-adds per ns of the portable
     * one: counted in full, a chunk could be a few microseconds, less than
     * waking a thread costs (ppocr at batch 1 split 4 of its depthwise
     * nodes, 3-9 us each, over 2 threads and ran them slower than on one). */
    if (j->simd && dw_avx512_for(g))
        work /= 4;
#endif
    oq_parallel_for(pool, planes, OQ_NN_MIN_CHUNK(work), oq_nn_dw_planes, j);
}

void oq_nn_dw_planes(void *arg, size_t q0, size_t q1) {
    const oq_nn_dw_job *j = arg;
#ifdef DW_HAVE_AVX512
    dw_plane_fn fn = j->simd ? dw_avx512_for(j->g) : NULL;
    if (fn == dw_plane_any) {
        dw_cache c;
        dw_cache_fill(j->g, &c);
        dw_planes_avx512(j, fn, &c, q0, q1);
        return;
    }
    if (fn) {
        dw_planes_avx512(j, fn, NULL, q0, q1);
        return;
    }
#endif
    dw_planes_portable(j, q0, q1);
}
