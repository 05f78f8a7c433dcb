/* calib.c: streaming calibration statistics (min/max, moving min/max, and an
 * adaptive histogram for the percentile, entropy and MSE methods) and the
 * calibrator that feeds them from the executor's observer. Memory per tensor
 * is fixed at creation: nothing here grows with the number of samples. */
#include "calib.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "params.h"
#include "strmap.h"

/* Upper bound on cfg->num_bins: keeps the int64 bin indices below 2^53 (exact
 * in double, see hist_fit) and the range searches cheap. */
#define CALIB_MAX_BINS (1 << 20)
/* Search budgets. A KL window costs O(num_quantized_bins), an MSE window
 * O(1): for the default 2048 bins both 1-D searches are exhaustive, the 2-D
 * MSE search too; the 2-D KL search is a grid then coordinate descent. */
#define ENTROPY_PAIR_BUDGET 1024
#define ENTROPY_LINE_BUDGET 8192
#define MSE_PAIR_BUDGET (1 << 20)
#define MSE_LINE_BUDGET (1 << 20)
/* Count given to an empty Q bin facing a non-empty P bin (MXNet/TVM smooth
 * their distributions the same way) so KL stays finite. */
#define KL_EPS_COUNT 1e-4
/* Most of the (non-zero) mass an entropy window may clip. Without a bound
 * KL happily clips almost everything: a window whose inside holds a single
 * occupied bin folds all the mass into it, P and Q are then the same spike
 * and KL is 0 (ppocr_cls's SE-block HardSigmoid went from [0, 0.34] to
 * [0, 0.13], 99.8% clipped). 1e-4 measured best of 1e-2..1e-4 on ppocr_cls,
 * fmnist_cnn and fmnist_vit; it also means a tensor with fewer than 1e4
 * values is never clipped, where a 2048-bin KL is noise anyway. */
#define ENTROPY_MAX_CLIP 1e-4
/* Fewer occupied bins than this (zeros left out): KL between a handful of
 * spikes says nothing about rounding error, so entropy keeps the extremes. */
#define ENTROPY_MIN_OCCUPIED 16

/* The histogram: bin k (an integer, k0 <= k < k0 + nbins) counts the values x
 * with floor((double)x * inv_w) == k, so bin edges are multiples of
 * w = 1/inv_w and 0 is always an edge (|x| folds exactly). Growing multiplies
 * inv_w by 2^-d: multiplying by a power of two is exact in binary floating
 * point, so floor(x * inv_w * 2^-d) == floor(floor(x * inv_w) * 2^-d) and old
 * bins merge into new ones exactly, with no second pass over old data. */
struct oq_stats {
    oq_calib_method method;
    double moving_average;
    double percentile;
    size_t samples;          /* update calls that carried values */
    uint64_t values;         /* values seen */
    uint64_t zeros;          /* values exactly 0 (entropy leaves them out, see range_entropy) */
    float min, max;          /* exact extremes of everything seen */
    double avg_min, avg_max; /* MOVING_MINMAX */
    size_t nbins;            /* 0 when the method keeps no histogram */
    bool grid;               /* histogram started: two distinct values seen */
    double inv_w;
    int64_t k0;
    uint64_t *hist, *scratch; /* nbins each; scratch is for re-binning */
};

static bool uses_histogram(oq_calib_method m) {
    return m == OQ_CALIB_PERCENTILE || m == OQ_CALIB_ENTROPY || m == OQ_CALIB_MSE;
}

oq_status oq_stats_new(const oq_quant_config *cfg, oq_stats **out, oq_error *err) {
    if (!cfg || !out)
        return oq_err(err, OQ_EINVAL, "oq_stats_new: NULL argument");
    *out = NULL;
    if ((unsigned)cfg->method > OQ_CALIB_MSE)
        return oq_err(err, OQ_EINVAL, "calibration method %d is unknown", (int)cfg->method);
    if (cfg->method == OQ_CALIB_MOVING_MINMAX &&
        !(cfg->moving_average > 0 && cfg->moving_average <= 1))
        return oq_err(err, OQ_EINVAL, "moving_average %g is not in (0, 1]", cfg->moving_average);
    if (cfg->method == OQ_CALIB_PERCENTILE && !(cfg->percentile > 0 && cfg->percentile <= 100))
        return oq_err(err, OQ_EINVAL, "percentile %g is not in (0, 100]", cfg->percentile);
    size_t nbins = 0;
    if (uses_histogram(cfg->method)) {
        if (cfg->num_bins < 2 || cfg->num_bins > CALIB_MAX_BINS)
            return oq_err(err, OQ_EINVAL, "num_bins %d is not in [2, %d]", cfg->num_bins,
                          CALIB_MAX_BINS);
        nbins = (size_t)cfg->num_bins;
    }
    oq_stats *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory for calibration statistics");
    s->method = cfg->method;
    s->moving_average = cfg->moving_average;
    s->percentile = cfg->percentile;
    s->nbins = nbins;
    if (nbins) {
        size_t bytes;
        if (!oq_mul_size(nbins, sizeof *s->hist, &bytes)) {
            free(s);
            return oq_err(err, OQ_ELIMIT, "histogram of %zu bins is too large", nbins);
        }
        s->hist = calloc(1, bytes);
        s->scratch = calloc(1, bytes);
        if (!s->hist || !s->scratch) {
            oq_stats_free(s);
            return oq_err(err, OQ_ENOMEM, "out of memory for a histogram of %zu bins", nbins);
        }
    }
    *out = s;
    return OQ_OK;
}

void oq_stats_free(oq_stats *s) {
    if (!s)
        return;
    free(s->hist);
    free(s->scratch);
    free(s);
}

static size_t stats_bytes(const oq_stats *s) {
    return sizeof *s + 2 * s->nbins * sizeof *s->hist;
}

size_t oq_stats_samples(const oq_stats *s) {
    return s ? s->samples : 0;
}

void oq_stats_minmax(const oq_stats *s, float *min, float *max) {
    bool seen = s && s->samples > 0;
    if (min)
        *min = seen ? s->min : 0.0f;
    if (max)
        *max = seen ? s->max : 0.0f;
}

/* ---- histogram maintenance ------------------------------------------------ */

/* floor(a / b) for b > 0 (C division truncates toward zero). */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int64_t bin_of(double x, double inv_w) {
    return (int64_t)floor(x * inv_w);
}

/* Makes the window hold every bin of [lo, hi] (the new overall extremes),
 * halving the resolution as often as needed and re-centring. Old counts all
 * lie within [lo, hi], so they land inside the new window. */
static void hist_fit(oq_stats *s, double lo, double hi) {
    double inv = s->inv_w;
    int d = 0;
    while (floor(hi * inv) - floor(lo * inv) + 1 > (double)s->nbins) {
        inv *= 0.5;
        d++;
    }
    int64_t kmin = bin_of(lo, inv), kmax = bin_of(hi, inv), n = (int64_t)s->nbins;
    if (d == 0 && kmin >= s->k0 && kmax < s->k0 + n)
        return;
    /* Leave equal headroom on both sides so a drifting extreme does not
     * force a shift on every update. */
    int64_t k0n = kmin - (n - (kmax - kmin + 1)) / 2;
    memset(s->scratch, 0, s->nbins * sizeof *s->scratch);
    double f = ldexp(1.0, -d);
    for (size_t i = 0; i < s->nbins; i++) {
        if (!s->hist[i])
            continue;
        int64_t j = (int64_t)floor((double)(s->k0 + (int64_t)i) * f) - k0n;
        if (j < 0) /* unreachable: old data lies inside [lo, hi] */
            j = 0;
        if (j >= n)
            j = n - 1;
        s->scratch[j] += s->hist[i];
    }
    uint64_t *t = s->hist;
    s->hist = s->scratch;
    s->scratch = t;
    s->inv_w = inv;
    s->k0 = k0n;
}

/* Starts the grid once the data has a non-zero spread [lo, hi]: nbins - 1
 * widths across it, so its floor-indexed bins fit the window. */
static void hist_start(oq_stats *s, double lo, double hi, float earlier, uint64_t n_earlier) {
    double w = (hi - lo) / (double)(s->nbins - 1);
    s->inv_w = 1.0 / w;
    s->k0 = bin_of(lo, s->inv_w);
    s->grid = true;
    hist_fit(s, lo, hi); /* corrects any rounding in the span */
    if (n_earlier) {
        int64_t j = bin_of(earlier, s->inv_w) - s->k0;
        s->hist[j < 0 ? 0 : (j >= (int64_t)s->nbins ? (int64_t)s->nbins - 1 : j)] += n_earlier;
    }
}

static void hist_add(oq_stats *s, const float *data, size_t n) {
    const double inv = s->inv_w;
    const int64_t k0 = s->k0, last = (int64_t)s->nbins - 1;
    uint64_t *h = s->hist;
    for (size_t i = 0; i < n; i++) {
        int64_t j = (int64_t)floor((double)data[i] * inv) - k0;
        /* The window was fitted to this batch's extremes; the clamp only
         * guards the invariant. */
        j = j < 0 ? 0 : (j > last ? last : j);
        h[j]++;
    }
}

oq_status oq_stats_update(oq_stats *s, const float *data, size_t n, oq_error *err) {
    if (!s || (!data && n))
        return oq_err(err, OQ_EINVAL, "oq_stats_update: NULL argument");
    if (n == 0) /* an empty tensor carries no extremes: not a sample */
        return OQ_OK;
    float bmin = data[0], bmax = data[0];
    uint64_t nzero = 0;
    for (size_t i = 0; i < n; i++) {
        float x = data[i];
        if (!isfinite(x))
            return oq_err(err, OQ_EDATA, "value %zu of %zu is %s", i, n,
                          isnan(x) ? "NaN" : (x > 0 ? "+Inf" : "-Inf"));
        bmin = x < bmin ? x : bmin;
        bmax = x > bmax ? x : bmax;
        nzero += x == 0.0f;
    }
    bool first = s->samples == 0;
    float nmin = first || bmin < s->min ? bmin : s->min;
    float nmax = first || bmax > s->max ? bmax : s->max;
    if (s->nbins) {
        if (s->grid) {
            hist_fit(s, nmin, nmax);
            hist_add(s, data, n);
        } else if (nmin < nmax) {
            /* Until now every value equalled s->min (s->values of them). */
            hist_start(s, nmin, nmax, s->min, s->values);
            hist_add(s, data, n);
        }
        /* else: still one distinct value, counted by s->values alone */
    }
    if (first) {
        s->avg_min = bmin;
        s->avg_max = bmax;
    } else {
        double c = s->moving_average;
        s->avg_min += c * ((double)bmin - s->avg_min);
        s->avg_max += c * ((double)bmax - s->avg_max);
    }
    s->min = nmin;
    s->max = nmax;
    s->samples++;
    s->values += n;
    s->zeros += nzero;
    return OQ_OK;
}

/* ---- histogram views -------------------------------------------------------- */

/* A dense copy of the histogram for the range searches: bin j covers
 * [lo + j w, lo + (j+1) w), in x or in |x|. */
typedef struct {
    double lo, w;
    size_t n;
    int64_t base; /* index of bin 0 in units of w; -base is the edge 0 when <= 0 */
    double *c;
    double total;
} hview;

static int64_t abs_index(int64_t k) {
    return k >= 0 ? k : -k - 1; /* bin [k w, (k+1) w) of x is bin -k-1 of |x| */
}

/* Builds a view of x (absolute false) or of |x|, extended to the edge 0 when
 * include_zero, without the exact zeros when drop_zeros, merging f adjacent bins (f as small as possible, edges kept
 * on multiples of f w so 0 stays an edge) so it has at most nbins bins. */
static oq_status view_new(const oq_stats *s, bool absolute, bool include_zero, bool drop_zeros,
                          hview *v, oq_error *err) {
    memset(v, 0, sizeof *v);
    int64_t kmin = bin_of(s->min, s->inv_w), kmax = bin_of(s->max, s->inv_w);
    int64_t a, b;
    if (!absolute) {
        a = kmin;
        b = kmax;
        if (include_zero) {
            a = a > 0 ? 0 : a;
            b = b < -1 ? -1 : b;
        }
    } else {
        if (kmin >= 0) {
            a = kmin;
            b = kmax;
        } else if (kmax < 0) {
            a = -kmax - 1;
            b = -kmin - 1;
        } else {
            a = 0;
            b = kmax > -kmin - 1 ? kmax : -kmin - 1;
        }
        if (include_zero)
            a = 0;
    }
    /* With f = ceil((b-a+1)/(nb-1)), (b-a)/f < nb-1 and the merged bins
     * floor(b/f) - floor(a/f) + 1 < (b-a)/f + 2 <= nb; the loop only guards. */
    int64_t nb = (int64_t)s->nbins;
    int64_t f = b - a + 1 <= nb ? 1 : (b - a + 1 + nb - 2) / (nb - 1);
    while (floor_div(b, f) - floor_div(a, f) + 1 > nb)
        f++;
    v->base = floor_div(a, f);
    v->n = (size_t)(floor_div(b, f) - v->base + 1);
    v->w = (double)f / s->inv_w;
    v->lo = (double)(v->base * f) / s->inv_w;
    v->c = calloc(v->n, sizeof *v->c);
    if (!v->c)
        return oq_err(err, OQ_ENOMEM, "out of memory for a histogram view of %zu bins", v->n);
    for (size_t i = 0; i < s->nbins; i++) {
        if (!s->hist[i])
            continue;
        int64_t k = s->k0 + (int64_t)i;
        int64_t j = floor_div(absolute ? abs_index(k) : k, f) - v->base;
        if (j < 0 || j >= (int64_t)v->n) /* unreachable: counts lie within [min, max] */
            continue;
        /* Exact zeros all fell in raw bin k = 0 (floor(0 * inv_w) = 0). */
        double c = (double)s->hist[i];
        if (drop_zeros && k == 0)
            c = fmax(c - (double)s->zeros, 0);
        v->c[j] += c;
        v->total += c;
    }
    return OQ_OK;
}

/* The q-quantile (q in [0, 1]), interpolating linearly inside the bin. */
static double view_quantile(const hview *v, double q) {
    double r = q * v->total, cum = 0;
    for (size_t j = 0; j < v->n; j++) {
        if (v->c[j] > 0 && cum + v->c[j] >= r) {
            double frac = (r - cum) / v->c[j];
            frac = frac < 0 ? 0 : (frac > 1 ? 1 : frac);
            return v->lo + ((double)j + frac) * v->w;
        }
        cum += v->c[j];
    }
    return v->lo + (double)v->n * v->w;
}

/* ---- range searches ----------------------------------------------------------- */

typedef double (*cost_fn)(void *ctx, size_t s, size_t e);

/* A candidate window [s, e) of a view and what ranks it: the cost first;
 * among equal costs (to rounding) the one clipping less data, then the
 * narrower. Equal costs are common: a window extended over empty bins
 * costs the same, and the narrower keeps more resolution (TensorRT takes
 * the first, i.e. narrowest, minimum); but a sparse tensor can also give a
 * window clipping real data the same KL as the full one (with two values
 * the second folds into the first one's bin and P equals Q), and clipping
 * is then the wrong choice. */
typedef struct {
    size_t s, e;
    double cost, inside;
} window;

typedef struct {
    cost_fn cost;
    void *ctx;
    const double *cum; /* prefix counts of the view, for `inside` */
} searcher;

static window evaluate(const searcher *q, size_t s, size_t e) {
    window w = {s, e, q->cost(q->ctx, s, e), q->cum[e] - q->cum[s]};
    return w;
}

static bool better(const window *a, const window *b) {
    double tol = 1e-12 * fabs(b->cost);
    if (a->cost < b->cost - tol)
        return true;
    if (a->cost > b->cost + tol)
        return false;
    if (a->inside != b->inside)
        return a->inside > b->inside;
    return a->e - a->s < b->e - b->s;
}

/* Best window along one end, i in [lo, hi], the other end fixed: every
 * stride-th candidate (about budget of them, hi included), then every
 * candidate within a stride of the best; exhaustive when budget >= hi-lo+1. */
static window search_line(const searcher *q, bool vary_start, size_t fixed, size_t lo, size_t hi,
                          size_t budget) {
#define AT(i) (vary_start ? evaluate(q, (i), fixed) : evaluate(q, fixed, (i)))
    size_t stride = (hi - lo) / (budget ? budget : 1) + 1, best_i = hi;
    window best = AT(hi);
    for (size_t i = lo; i < hi; i += stride) {
        window w = AT(i);
        if (better(&w, &best)) {
            best = w;
            best_i = i;
        }
    }
    if (stride > 1) {
        size_t a = best_i > lo + stride ? best_i - stride : lo;
        size_t b = best_i + stride < hi ? best_i + stride : hi;
        for (size_t i = a, centre = best_i; i <= b; i++) {
            if (i == centre)
                continue;
            window w = AT(i);
            if (better(&w, &best))
                best = w;
        }
    }
#undef AT
    return best;
}

/* Best window 0 <= s <= z <= e <= n with e - s >= min_width (the caller
 * ensures n >= min_width): a grid of about pair_budget (s, e) pairs (the
 * ends included; every pair when they fit), then coordinate descent from
 * the best, each step an exhaustive (or line_budget-strided) line search
 * over one end with the other fixed, until neither end moves. Each
 * accepted move is better(), so it cannot cycle. Exhaustive for small
 * histograms, else a local optimum from the best grid point (the KL
 * landscape is rugged: the full-resolution line searches matter most). */
static window search_windows(const searcher *q, size_t z, size_t n, size_t min_width,
                             size_t pair_budget, size_t line_budget) {
    size_t na = z + 1, nbk = n - z + 1; /* positions of s and of e */
    size_t ka = na, kb = nbk;
    while (ka * kb > pair_budget && (ka > 2 || kb > 2)) {
        if (ka >= kb && ka > 2)
            ka = (ka + 1) / 2;
        else
            kb = (kb + 1) / 2;
    }
    window best = evaluate(q, 0, n);
    for (size_t i = 0; i < ka; i++) {
        size_t s = ka > 1 ? (size_t)llround((double)i * (double)(na - 1) / (double)(ka - 1)) : 0;
        for (size_t j = 0; j < kb; j++) {
            size_t e =
                z + (kb > 1 ? (size_t)llround((double)j * (double)(nbk - 1) / (double)(kb - 1))
                            : nbk - 1);
            if (e - s < min_width)
                continue;
            window w = evaluate(q, s, e);
            if (better(&w, &best))
                best = w;
        }
    }
    bool exhaustive = ka == na && kb == nbk;
    for (int round = 0; !exhaustive && round < 16; round++) {
        bool moved = false;
        size_t s_hi = best.e - min_width < z ? best.e - min_width : z;
        window w = search_line(q, true, best.e, 0, s_hi, line_budget);
        if (w.s != best.s && better(&w, &best)) {
            best = w;
            moved = true;
        }
        size_t e_lo = best.s + min_width > z ? best.s + min_width : z;
        w = search_line(q, false, best.s, e_lo, n, line_budget);
        if (w.e != best.e && better(&w, &best)) {
            best = w;
            moved = true;
        }
        if (!moved)
            break;
    }
    return best;
}

/* KL(P || Q) for the window [s, e) of the view, TensorRT's recipe: P is the
 * window with the mass outside it folded into its first and last bins; Q
 * merges the window (without the outliers) into nq groups of (e-s)/nq bins,
 * the last group taking the remainder, and spreads each group's count evenly
 * over the group's bins where P is non-zero. Both are normalised; a group
 * with no count facing non-zero P gets KL_EPS_COUNT per bin so the
 * divergence stays finite.
 *
 * Every p in a group g shares q_g, so with sums over the window
 *   KL = (sum p log p - sum_g P_g log q_g) / totP - log totP + log totQ
 * and prefix sums of c, c log c and (c > 0) make a window cost O(nq). */
typedef struct {
    const hview *v;
    size_t nq;
    const double *cum, *clc, *nzc; /* prefix sums of c, c log c, (c > 0): n+1 each */
    double max_clip;               /* most counts a window may leave outside */
} kl_ctx;

static double xlogx(double x) {
    return x > 0 ? x * log(x) : 0;
}

static double kl_window(const kl_ctx *k, size_t s, size_t e) {
    const double *c = k->v->c, *cum = k->cum;
    size_t n = k->v->n, nq = k->nq, m = (e - s) / nq;
    double tot_p = cum[n], tot_q = cum[e] - cum[s];
    if (!(tot_q > 0))
        return INFINITY;
    double left = cum[s], right = tot_p - cum[e];
    if (left + right > k->max_clip)
        return INFINITY;
    /* P of the edge bins (the same bin when the window is one bin wide) */
    bool one = e - 1 == s;
    double p_s = c[s] + left + (one ? right : 0), p_e = c[e - 1] + right + (one ? left : 0);
    double plogp = k->clc[e] - k->clc[s] - xlogx(c[s]) + xlogx(p_s);
    if (!one)
        plogp += xlogx(p_e) - xlogx(c[e - 1]);
    double acc = 0;
    for (size_t g = 0; g < nq; g++) {
        size_t a = s + g * m, b = g + 1 == nq ? e : a + m;
        double gsum = cum[b] - cum[a];
        double pg = gsum + (a == s ? left : 0) + (b == e ? right : 0);
        double nz = k->nzc[b] - k->nzc[a];
        if (a == s && c[s] == 0 && p_s > 0)
            nz += 1;
        if (b == e && !one && c[e - 1] == 0 && p_e > 0)
            nz += 1;
        if (nz == 0)
            continue;
        double q = gsum > 0 ? gsum / nz : KL_EPS_COUNT;
        acc += pg * log(q);
    }
    return (plogp - acc) / tot_p - log(tot_p) + log(tot_q);
}

static double kl_cost(void *ctx, size_t s, size_t e) {
    return kl_window(ctx, s, e);
}

/* Expected squared error of quantizing the view to [lo_edge(s), edge(e)]
 * with `steps` steps: in-range values get scale^2/12 (uniform rounding
 * error), clipped values the squared distance from their bin centre to the
 * bound. Prefix sums of counts, of count*centre and of count*centre^2 make
 * each candidate O(1). */
typedef struct {
    const hview *v;
    double steps;
    bool symmetric; /* view of |x|: range [-edge(e), edge(e)] */
    const double *cn, *c1, *c2;
} mse_ctx;

static double mse_window(const mse_ctx *k, size_t s, size_t e) {
    const hview *v = k->v;
    size_t n = v->n;
    double lo = v->lo + (double)s * v->w, hi = v->lo + (double)e * v->w;
    double scale = k->symmetric ? 2 * hi / k->steps : (hi - lo) / k->steps;
    double in = k->cn[e] - k->cn[s];
    double below = k->symmetric ? 0 : k->c2[s] - 2 * lo * k->c1[s] + lo * lo * k->cn[s];
    double nab = k->cn[n] - k->cn[e], s1 = k->c1[n] - k->c1[e], s2 = k->c2[n] - k->c2[e];
    double above = s2 - 2 * hi * s1 + hi * hi * nab;
    return in * scale * scale / 12 + (below > 0 ? below : 0) + (above > 0 ? above : 0);
}

static double mse_cost(void *ctx, size_t s, size_t e) {
    return mse_window(ctx, s, e);
}

/* Prefix sums of c, c*centre and c*centre^2 (n+1 entries each). */
static oq_status prefix_sums(const hview *v, double **cn, double **c1, double **c2, oq_error *err) {
    size_t bytes;
    *cn = *c1 = *c2 = NULL;
    if (!oq_mul_size(v->n + 1, sizeof(double), &bytes))
        return oq_err(err, OQ_ELIMIT, "histogram view too large");
    *cn = malloc(bytes);
    *c1 = malloc(bytes);
    *c2 = malloc(bytes);
    if (!*cn || !*c1 || !*c2) {
        free(*cn);
        free(*c1);
        free(*c2);
        *cn = *c1 = *c2 = NULL;
        return oq_err(err, OQ_ENOMEM, "out of memory for histogram prefix sums");
    }
    (*cn)[0] = (*c1)[0] = (*c2)[0] = 0;
    for (size_t j = 0; j < v->n; j++) {
        double m = v->lo + ((double)j + 0.5) * v->w;
        (*cn)[j + 1] = (*cn)[j] + v->c[j];
        (*c1)[j + 1] = (*c1)[j] + v->c[j] * m;
        (*c2)[j + 1] = (*c2)[j] + v->c[j] * m * m;
    }
    return OQ_OK;
}

/* ENTROPY. Symmetric: over the histogram of |x| from 0, thresholds i*w for
 * i from nq = levels/2 (128 for int8: one quantized bin per positive level)
 * to the last bin; the threshold is the upper edge i*w of the best window
 * (TensorRT reports (i + 0.5)*w, half a bin more). Asymmetric: over the
 * histogram of x (extended to hold 0), windows [lo, hi] containing 0 of at
 * least nq = levels bins (256 for int8: an asymmetric range spreads all
 * levels over the window). When the histogram has no more bins than nq,
 * quantization is finer than the histogram and nothing is clipped.
 * Exact zeros are left out of P and Q: every candidate range holds 0, which
 * quantizes exactly, so they carry no error; kept, a ReLU's spike at 0
 * dominates the first group and KL keeps narrowing the window to shrink
 * that group. No window may clip more than ENTROPY_MAX_CLIP of the rest,
 * and too few occupied bins keep the extremes (ENTROPY_MIN_OCCUPIED). Costs
 * and ties: kl_window and better(); the search: search_windows. */
static oq_status range_entropy(const oq_stats *s, int64_t levels, bool symmetric, double *lo,
                               double *hi, oq_error *err) {
    hview v;
    oq_status st = view_new(s, symmetric, true, true, &v, err);
    if (st != OQ_OK)
        return st;
    size_t nq = (size_t)(symmetric ? levels / 2 : levels), occupied = 0;
    for (size_t j = 0; j < v.n; j++)
        occupied += v.c[j] > 0;
    if (v.n <= nq || occupied < ENTROPY_MIN_OCCUPIED) {
        free(v.c);
        return OQ_OK; /* *lo, *hi keep the extremes */
    }
    size_t bytes;
    double *cum = NULL, *clc = NULL, *nzc = NULL;
    if (!oq_mul_size(v.n + 1, sizeof(double), &bytes)) {
        st = oq_err(err, OQ_ELIMIT, "histogram view too large");
    } else if (!(cum = malloc(bytes)) || !(clc = malloc(bytes)) || !(nzc = malloc(bytes))) {
        st = oq_err(err, OQ_ENOMEM, "out of memory for the entropy search");
    } else {
        cum[0] = clc[0] = nzc[0] = 0;
        for (size_t j = 0; j < v.n; j++) {
            cum[j + 1] = cum[j] + v.c[j];
            clc[j + 1] = clc[j] + xlogx(v.c[j]);
            nzc[j + 1] = nzc[j] + (v.c[j] > 0);
        }
        kl_ctx k = {&v, nq, cum, clc, nzc, ENTROPY_MAX_CLIP * v.total};
        searcher q = {kl_cost, &k, cum};
        /* symmetric: windows [0, i) of |x|, i from nq up */
        size_t z = symmetric ? 0 : (size_t)(-v.base);
        window w = search_windows(&q, z, v.n, nq, ENTROPY_PAIR_BUDGET, ENTROPY_LINE_BUDGET);
        *lo = symmetric ? -(v.lo + (double)w.e * v.w) : v.lo + (double)w.s * v.w;
        *hi = v.lo + (double)w.e * v.w;
    }
    free(cum);
    free(clc);
    free(nzc);
    free(v.c);
    return st;
}

/* MSE: the range minimising mse_window over bin edges; symmetric searches
 * the threshold on |x|, asymmetric the pair of edges around 0. */
static oq_status range_mse(const oq_stats *s, int64_t levels, bool symmetric, double *lo,
                           double *hi, oq_error *err) {
    hview v;
    oq_status st = view_new(s, symmetric, true, false, &v, err);
    if (st != OQ_OK)
        return st;
    double *cn, *c1, *c2;
    if ((st = prefix_sums(&v, &cn, &c1, &c2, err)) == OQ_OK) {
        mse_ctx k = {&v, (double)(levels - 1), symmetric, cn, c1, c2};
        searcher q = {mse_cost, &k, cn};
        size_t z = symmetric ? 0 : (size_t)(-v.base);
        window w = search_windows(&q, z, v.n, 1, MSE_PAIR_BUDGET, MSE_LINE_BUDGET);
        *lo = symmetric ? -(v.lo + (double)w.e * v.w) : v.lo + (double)w.s * v.w;
        *hi = v.lo + (double)w.e * v.w;
        free(cn);
        free(c1);
        free(c2);
    }
    free(v.c);
    return st;
}

/* PERCENTILE, as ONNX Runtime's HistogramCalibrater does: symmetric clips at
 * the p-th percentile of |x|; asymmetric cuts (100-p)/2 percent from each
 * tail of x. Linear interpolation inside a bin. */
static oq_status range_percentile(const oq_stats *s, double p, bool symmetric, double *lo,
                                  double *hi, oq_error *err) {
    hview v;
    oq_status st = view_new(s, symmetric, false, false, &v, err);
    if (st != OQ_OK)
        return st;
    if (symmetric) {
        *hi = view_quantile(&v, p / 100);
        *lo = -*hi;
    } else {
        double tail = (100 - p) / 200;
        *lo = view_quantile(&v, tail);
        *hi = view_quantile(&v, 1 - tail);
    }
    free(v.c);
    return OQ_OK;
}

oq_status oq_stats_range(const oq_stats *s, oq_dtype qtype, bool symmetric, float *lo, float *hi,
                         oq_error *err) {
    if (!s || !lo || !hi)
        return oq_err(err, OQ_EINVAL, "oq_stats_range: NULL argument");
    if (s->samples == 0)
        return oq_err(err, OQ_ENOTFOUND, "no calibration samples were seen");
    int32_t qmin, qmax;
    oq_status st = oq_qtype_range(qtype, false, &qmin, &qmax, err);
    if (st != OQ_OK)
        return st;
    int64_t levels = (int64_t)qmax - qmin + 1;
    double l = s->min, h = s->max;
    if (s->method == OQ_CALIB_MOVING_MINMAX) {
        l = s->avg_min;
        h = s->avg_max;
    } else if (uses_histogram(s->method) && s->grid) {
        /* (Without a grid every value so far was equal: nothing to clip.) */
        if (s->method == OQ_CALIB_PERCENTILE)
            st = range_percentile(s, s->percentile, symmetric, &l, &h, err);
        else if (s->method == OQ_CALIB_ENTROPY)
            st = range_entropy(s, levels, symmetric, &l, &h, err);
        else
            st = range_mse(s, levels, symmetric, &l, &h, err);
        if (st != OQ_OK)
            return st;
        /* Bin edges can overshoot the data: never report more than was seen. */
        if (symmetric) {
            h = fmin(h, fmax(fabs((double)s->min), fabs((double)s->max)));
            l = -h;
        } else {
            l = fmin(fmax(l, (double)s->min), (double)s->max);
            h = fmax(fmin(h, (double)s->max), l);
        }
    }
    if (symmetric) {
        double t = fmax(fabs(l), fabs(h));
        l = -t;
        h = t;
    }
    if (!(l <= h) || !isfinite(l) || !isfinite(h))
        return oq_err(err, OQ_EINTERNAL, "calibration produced the range [%g, %g]", l, h);
    *lo = (float)l;
    *hi = (float)h;
    return OQ_OK;
}

/* ---- calibrator ----------------------------------------------------------------- */

struct oq_calibrator {
    oq_strmap *index; /* tracked name -> position in stats */
    oq_stats **stats;
    size_t n;
};

oq_status oq_calibrator_new(const oq_quant_config *cfg, const char *const *names, size_t n,
                            oq_calibrator **out, oq_error *err) {
    if (!cfg || !out || (!names && n))
        return oq_err(err, OQ_EINVAL, "oq_calibrator_new: NULL argument");
    *out = NULL;
    if (n > INT32_MAX)
        return oq_err(err, OQ_ELIMIT, "%zu tracked tensors is too many", n);
    oq_calibrator *c = calloc(1, sizeof *c);
    if (!c)
        return oq_err(err, OQ_ENOMEM, "out of memory for a calibrator");
    oq_status st = oq_strmap_new(OQ_STRMAP_COPY, n, &c->index, err);
    if (st == OQ_OK && n && !(c->stats = calloc(n, sizeof *c->stats)))
        st = oq_err(err, OQ_ENOMEM, "out of memory for %zu tracked tensors", n);
    for (size_t i = 0; st == OQ_OK && i < n; i++) {
        if (!names[i]) {
            st = oq_err(err, OQ_EINVAL, "tracked tensor name %zu is NULL", i);
            break;
        }
        bool inserted;
        st = oq_strmap_add(c->index, names[i], (int)c->n, &inserted, NULL, err);
        if (st != OQ_OK || !inserted) /* a repeated name is tracked once */
            continue;
        st = oq_stats_new(cfg, &c->stats[c->n], err);
        if (st == OQ_OK)
            c->n++;
        else
            oq_err_prefix(err, "tensor '%s': ", names[i]);
    }
    if (st != OQ_OK) {
        oq_calibrator_free(c);
        return st;
    }
    *out = c;
    return OQ_OK;
}

void oq_calibrator_free(oq_calibrator *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        oq_stats_free(c->stats[i]);
    free(c->stats);
    oq_strmap_free(c->index);
    free(c);
}

oq_status oq_calibrator_observe(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    oq_calibrator *c = ctx;
    int i;
    if (!c || !name)
        return oq_err(err, OQ_EINVAL, "oq_calibrator_observe: NULL argument");
    if (!oq_strmap_get(c->index, name, &i))
        return OQ_OK;
    if (!t)
        return oq_err(err, OQ_EINVAL, "tensor '%s': no tensor to observe", name);
    if (t->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "tensor '%s' is %s, calibration needs float", name,
                      oq_dtype_name(t->dtype));
    oq_status st = oq_stats_update(c->stats[i], t->data, t->count, err);
    if (st != OQ_OK)
        oq_err_prefix(err, "tensor '%s': ", name);
    return st;
}

oq_status oq_calibrator_range(const oq_calibrator *c, const char *name, oq_dtype qtype,
                              bool symmetric, float *lo, float *hi, oq_error *err) {
    if (!c || !name)
        return oq_err(err, OQ_EINVAL, "oq_calibrator_range: NULL argument");
    const oq_stats *s = oq_calibrator_stats(c, name);
    if (!s)
        return oq_err(err, OQ_ENOTFOUND, "tensor '%s' is not tracked by the calibrator", name);
    oq_status st = oq_stats_range(s, qtype, symmetric, lo, hi, err);
    if (st != OQ_OK)
        oq_err_prefix(err, "tensor '%s': ", name);
    return st;
}

const oq_stats *oq_calibrator_stats(const oq_calibrator *c, const char *name) {
    int i;
    if (!c || !name || !oq_strmap_get(c->index, name, &i))
        return NULL;
    return c->stats[i];
}

size_t oq_calibrator_bytes(const oq_calibrator *c) {
    if (!c)
        return 0;
    size_t total = sizeof *c + c->n * sizeof *c->stats;
    for (size_t i = 0; i < c->n; i++)
        total += stats_bytes(c->stats[i]);
    return total;
}
