/* test_calib.c: quant/calib.c. Min/max exact, moving average by hand, NaN/Inf
 * rejected with the tensor named, a histogram that grows while streaming
 * agreeing with a one-shot one, percentiles of a known distribution, entropy
 * and MSE clipping heavy-tailed data close to reference thresholds, entropy
 * never collapsing a range (one-sided data away from 0, a ReLU spike at 0,
 * a Cauchy tail, a small second mode: regressions from ppocr_cls), memory
 * fixed whatever the number of updates, and the calibrator as the observer of
 * a real model run (fmnist_cnn on 20 calibration samples). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "exec.h"
#include "graph.h"
#include "model.h"
#include "params.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------ */

static oq_quant_config cfg_for(oq_calib_method m, int bins) {
    oq_quant_config c = oq_quant_config_default();
    c.method = m;
    if (bins)
        c.num_bins = bins;
    return c;
}

static oq_stats *stats_new(const oq_quant_config *c) {
    oq_error err = {0};
    oq_stats *s;
    ck_assert_msg(oq_stats_new(c, &s, &err) == OQ_OK, "%s", err.msg);
    return s;
}

static void update(oq_stats *s, const float *x, size_t n) {
    oq_error err = {0};
    ck_assert_msg(oq_stats_update(s, x, n, &err) == OQ_OK, "%s", err.msg);
}

/* Feeds x in chunks of `chunk` values (one update = one sample). */
static void update_chunks(oq_stats *s, const float *x, size_t n, size_t chunk) {
    for (size_t i = 0; i < n; i += chunk)
        update(s, x + i, i + chunk <= n ? chunk : n - i);
}

static void range(const oq_stats *s, oq_dtype qt, bool sym, float *lo, float *hi) {
    oq_error err = {0};
    ck_assert_msg(oq_stats_range(s, qt, sym, lo, hi, &err) == OQ_OK, "%s", err.msg);
    ck_assert(isfinite(*lo) && isfinite(*hi) && *lo <= *hi);
}

/* xorshift64*, and Laplace(0, 1) by the inverse CDF, both in double and
 * rounded once to float: the same sequence as the Python script that
 * produced the entropy reference below (math.log is the C library's log). */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(0x2545F4914F6CDD1D);
}

static float laplace(uint64_t *s) {
    double u = ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53, v = u - 0.5;
    return (float)(v < 0 ? log(1 + 2 * v) : -log(1 - 2 * v));
}

static float *laplace_data(uint64_t seed, size_t n_front, const float *front, size_t n) {
    float *x = malloc((n_front + n) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    if (n_front)
        memcpy(x, front, n_front * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[n_front + i] = laplace(&seed);
    return x;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- min/max and moving average ------------------------------------------------------- */

START_TEST(minmax_exact) {
    oq_quant_config c = cfg_for(OQ_CALIB_MINMAX, 0);
    oq_stats *s = stats_new(&c);
    oq_error err = {0};
    float lo, hi;
    ck_assert_int_eq(oq_stats_range(s, OQ_DTYPE_INT8, false, &lo, &hi, &err), OQ_ENOTFOUND);
    update(s, (const float[]){0.5f, -0.25f, 3.0f}, 3);
    update(s, NULL, 0); /* an empty tensor is not a sample */
    update(s, (const float[]){-1.75f, 2.0f}, 2);
    update(s, (const float[]){1.0f}, 1);
    ck_assert_uint_eq(oq_stats_samples(s), 3);
    oq_stats_minmax(s, &lo, &hi);
    ck_assert(lo == -1.75f && hi == 3.0f);
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert(lo == -1.75f && hi == 3.0f);
    range(s, OQ_DTYPE_UINT8, true, &lo, &hi);
    ck_assert(lo == -3.0f && hi == 3.0f);
    oq_stats_free(s);

    /* a constant tensor: a zero-width range, fine (params.c widens it) */
    for (int m = OQ_CALIB_MINMAX; m <= OQ_CALIB_MSE; m++) {
        c = cfg_for((oq_calib_method)m, 0);
        s = stats_new(&c);
        update(s, (const float[]){0.75f, 0.75f}, 2);
        update(s, (const float[]){0.75f}, 1);
        range(s, OQ_DTYPE_INT8, false, &lo, &hi);
        ck_assert_msg(lo == 0.75f && hi == 0.75f, "%s: [%g, %g]",
                      oq_calib_method_name((oq_calib_method)m), (double)lo, (double)hi);
        range(s, OQ_DTYPE_INT8, true, &lo, &hi);
        ck_assert(lo == -0.75f && hi == 0.75f);
        oq_stats_free(s);
    }
}
END_TEST

START_TEST(moving_average_by_hand) {
    oq_quant_config c = cfg_for(OQ_CALIB_MOVING_MINMAX, 0);
    c.moving_average = 0.5;
    oq_stats *s = stats_new(&c);
    /* batch extremes (-1, 1), (-3, 5), (-2, 3): min -1 -> -2 -> -2, max 1 -> 3 -> 3 */
    update(s, (const float[]){-1, 0, 1}, 3);
    update(s, (const float[]){5, -3}, 2);
    update(s, (const float[]){-2, 3, 0.5f}, 3);
    float lo, hi;
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo == -2.0f && hi == 3.0f, "[%g, %g]", (double)lo, (double)hi);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert(lo == -3.0f && hi == 3.0f);
    oq_stats_minmax(s, &lo, &hi); /* the extremes stay exact */
    ck_assert(lo == -3.0f && hi == 5.0f);
    oq_stats_free(s);

    /* c = 0.25: min -4 -> -4 + 0.25 * (0 - -4) = -3 -> -3 + 0.25 * (-7 - -3) = -4 */
    c.moving_average = 0.25;
    s = stats_new(&c);
    update(s, (const float[]){-4, 8}, 2);
    update(s, (const float[]){0, 4}, 2);
    update(s, (const float[]){-7, 4}, 2);
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert_msg(lo == -4.0f && hi == 6.25f, "[%g, %g]", (double)lo,
                  (double)hi); /* 8 -> 7 -> 6.25 */
    oq_stats_free(s);
}
END_TEST

/* ---- bad data and bad configs ---------------------------------------------------------- */

START_TEST(nan_inf_rejected) {
    static const float bad[3] = {NAN, INFINITY, -INFINITY};
    static const char *const word[3] = {"NaN", "+Inf", "-Inf"};
    for (int m = OQ_CALIB_MINMAX; m <= OQ_CALIB_MSE; m++) {
        oq_quant_config c = cfg_for((oq_calib_method)m, 0);
        oq_stats *s = stats_new(&c);
        update(s, (const float[]){1, 2}, 2);
        for (int k = 0; k < 3; k++) {
            oq_error err = {0};
            float x[4] = {0.5f, 1.5f, bad[k], 9};
            ck_assert_int_eq(oq_stats_update(s, x, 4, &err), OQ_EDATA);
            ck_assert_msg(strstr(err.msg, word[k]) && strstr(err.msg, "value 2"), "%s", err.msg);
        }
        /* rejected samples left nothing behind */
        ck_assert_uint_eq(oq_stats_samples(s), 1);
        float lo, hi;
        oq_stats_minmax(s, &lo, &hi);
        ck_assert(lo == 1.0f && hi == 2.0f);
        range(s, OQ_DTYPE_INT8, false, &lo, &hi);
        ck_assert(lo >= 1.0f && hi <= 2.0f);
        oq_stats_free(s);
    }
}
END_TEST

START_TEST(bad_configs_rejected) {
    oq_error err = {0};
    oq_stats *s = NULL;
    oq_quant_config c = cfg_for(OQ_CALIB_PERCENTILE, 1);
    ck_assert_int_eq(oq_stats_new(&c, &s, &err), OQ_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "num_bins"));
    memset(&err, 0, sizeof err);
    c = cfg_for(OQ_CALIB_PERCENTILE, 0);
    c.percentile = 0;
    ck_assert_int_eq(oq_stats_new(&c, &s, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    c = cfg_for(OQ_CALIB_MOVING_MINMAX, 0);
    c.moving_average = 1.5;
    ck_assert_int_eq(oq_stats_new(&c, &s, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    c = cfg_for((oq_calib_method)42, 0);
    ck_assert_int_eq(oq_stats_new(&c, &s, &err), OQ_EINVAL);
    ck_assert_ptr_null(s);
    /* a range for a non-quantized type */
    memset(&err, 0, sizeof err);
    c = cfg_for(OQ_CALIB_MINMAX, 0);
    s = stats_new(&c);
    update(s, (const float[]){1}, 1);
    float lo, hi;
    ck_assert_int_eq(oq_stats_range(s, OQ_DTYPE_FLOAT, false, &lo, &hi, &err), OQ_EUNSUPPORTED);
    oq_stats_free(s);
}
END_TEST

/* ---- histogram ------------------------------------------------------------------------- */

/* Streaming data whose range keeps growing (the histogram re-bins many
 * times, and starts from a constant first sample) gives the same
 * percentiles as one update with everything, within a bin of the coarser
 * histogram, and both agree with the exact quantiles of the sorted data. */
START_TEST(histogram_growth_matches_one_shot) {
    const size_t n = 200000, chunk = 1000;
    float *x = malloc(n * sizeof *x), *sorted = malloc(n * sizeof *sorted);
    uint64_t seed = 7;
    for (size_t i = 0; i < n; i++) {
        /* |x| grows with i: every chunk may push the range out */
        double scale = 0.01 + (double)i / 1000.0;
        x[i] = i < chunk ? 0.25f : (float)(laplace(&seed) * scale + 0.3 * scale);
    }
    memcpy(sorted, x, n * sizeof *x);
    qsort(sorted, n, sizeof *sorted, cmp_float);
    double span = (double)sorted[n - 1] - sorted[0];
    double amax = fmax(-sorted[0], sorted[n - 1]);
    static const double ps[] = {50, 80, 90, 99, 99.9, 99.99, 100};
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        oq_quant_config c = cfg_for(OQ_CALIB_PERCENTILE, 2048);
        c.percentile = ps[k];
        oq_stats *streamed = stats_new(&c), *once = stats_new(&c);
        update_chunks(streamed, x, n, chunk);
        update(once, x, n);
        ck_assert_uint_eq(oq_stats_samples(streamed), n / chunk);
        ck_assert_uint_eq(oq_stats_samples(once), 1);
        /* the streamed bins are narrower than 2 * span / (bins - 1), the
         * one-shot ones than span / (bins - 1) (+ rounding): each estimate is
         * within its own bin of the same data value, so they agree within
         * one bin of each */
        double bin = 2 * span / 2047 * (1 + 1e-9), tol = 1.5 * bin;
        float a_lo, a_hi, b_lo, b_hi;
        range(streamed, OQ_DTYPE_INT8, false, &a_lo, &a_hi);
        range(once, OQ_DTYPE_INT8, false, &b_lo, &b_hi);
        ck_assert_msg(fabs(a_lo - b_lo) <= tol && fabs(a_hi - b_hi) <= tol,
                      "p=%g: streamed [%g, %g], one-shot [%g, %g], bin %g", ps[k], (double)a_lo,
                      (double)a_hi, (double)b_lo, (double)b_hi, bin);
        /* the value of rank ceil(q n) lies in the bin the estimate comes from */
        double tail = (100 - ps[k]) / 200;
        double r_lo = ceil(tail * (double)n), r_hi = ceil((1 - tail) * (double)n);
        size_t il = r_lo > 0 ? (size_t)r_lo - 1 : 0, ih = r_hi > 0 ? (size_t)r_hi - 1 : 0;
        ck_assert_msg(fabs(a_lo - sorted[il]) <= bin && fabs(a_hi - sorted[ih]) <= bin,
                      "p=%g: streamed [%g, %g], data [%g, %g]", ps[k], (double)a_lo, (double)a_hi,
                      (double)sorted[il], (double)sorted[ih]);
        /* symmetric: |x| histogram, at most half as many bins */
        range(streamed, OQ_DTYPE_INT8, true, &a_lo, &a_hi);
        range(once, OQ_DTYPE_INT8, true, &b_lo, &b_hi);
        ck_assert_msg(fabs(a_hi - b_hi) <= tol && a_lo == -a_hi && a_hi <= amax,
                      "p=%g: |x| streamed %g one-shot %g", ps[k], (double)a_hi, (double)b_hi);
        if (ps[k] == 100) {
            ck_assert(a_hi == (float)amax);
            range(streamed, OQ_DTYPE_INT8, false, &a_lo, &a_hi);
            ck_assert(a_lo == sorted[0] && a_hi == sorted[n - 1]);
        }
        oq_stats_free(streamed);
        oq_stats_free(once);
    }
    free(x);
    free(sorted);
}
END_TEST

/* The constant values seen before the histogram could start are counted:
 * 1500 zeros, then 500 values in [1, 2]: the median is 0, not 1.5. */
START_TEST(histogram_counts_constant_prefix) {
    oq_quant_config c = cfg_for(OQ_CALIB_PERCENTILE, 2048);
    c.percentile = 1e-6; /* both tails at the median */
    oq_stats *s = stats_new(&c);
    float zeros[500] = {0}, ones[500];
    for (int i = 0; i < 3; i++)
        update(s, zeros, 500);
    for (int i = 0; i < 500; i++)
        ones[i] = 1.0f + (float)i / 500.0f;
    update(s, ones, 500);
    float lo, hi;
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert_msg(lo >= 0 && hi <= 2.0f / 2047, "median range [%g, %g]", (double)lo, (double)hi);
    oq_stats_free(s);
}
END_TEST

/* 1..100000 with ten outliers at 1e7, fed in order (the outliers last, so
 * the histogram has grown): percentiles within a bin (2e7/65535). */
START_TEST(percentile_known_distribution) {
    const size_t n = 100010;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < 100000; i++)
        x[i] = (float)(i + 1);
    for (size_t i = 100000; i < n; i++)
        x[i] = 1e7f;
    const double bin = 2e7 / 65535;
    float lo, hi;
    oq_quant_config c = cfg_for(OQ_CALIB_PERCENTILE, 65536);
    c.percentile = 99.9; /* |x|: rank 0.999 * 100010 = 99910 */
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n, 1000);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(fabs(hi - 99910.0) <= bin && lo == -hi, "hi %g", (double)hi);
    oq_stats_free(s);
    c.percentile = 99.8; /* tails at ranks 100 and 99910 */
    s = stats_new(&c);
    update_chunks(s, x, n, 1000);
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert_msg(fabs(lo - 100.0) <= bin && fabs(hi - 99910.0) <= bin, "[%g, %g]", (double)lo,
                  (double)hi);
    oq_stats_free(s);
    c.percentile = 100;
    s = stats_new(&c);
    update_chunks(s, x, n, 1000);
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert(lo == 1.0f && hi == 1e7f);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* ---- entropy ----------------------------------------------------------------------------- */

/* 200000 Laplace(0, 1) values (seed 1) after four outliers (300, -300, 200,
 * -150) placed first so the histogram starts at its final width (8192 bins
 * over [-300, 300]). Reference: TensorRT's recipe written independently in
 * Python on a one-shot histogram of |x| with 4096 bins over [0, 300]
 * (thresholds i * w for i = 128..4096, P with the outliers folded into bin
 * i-1, Q from 128 merged groups spread over P's non-zero bins, min KL(P||Q)):
 * i = 174, threshold 12.744. */
#define ENTROPY_REF 12.744
START_TEST(entropy_clips_heavy_tail) {
    static const float front[4] = {300, -300, 200, -150};
    const size_t n = 200000;
    float *x = laplace_data(1, 4, front, n);
    /* the same data as the Python reference: first values and the sum */
    ck_assert(x[4] == -0.5768406391143799f && x[5] == 0.418967604637146f);
    double sum = 0;
    for (size_t i = 4; i < n + 4; i++)
        sum += x[i];
    ck_assert_msg(fabs(sum - -115.29571013538862) < 1e-6, "sum %.12g", sum);

    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 8192);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n + 4, 1000);
    float lo, hi;
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(fabs(hi - ENTROPY_REF) <= 0.03 * ENTROPY_REF && lo == -hi, "symmetric %g vs %g",
                  (double)hi, ENTROPY_REF);
    /* asymmetric: windows of x holding 0, at least 256 bins; the data is
     * symmetric, so both ends land near the symmetric threshold */
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo < 0 && hi > 0 && fabs(hi - ENTROPY_REF) <= 0.25 * ENTROPY_REF &&
                      fabs(-lo - ENTROPY_REF) <= 0.25 * ENTROPY_REF,
                  "asymmetric [%g, %g]", (double)lo, (double)hi);
    /* int4: 8 quantized bins per side, a tighter clip than int8 */
    float lo4, hi4;
    range(s, OQ_DTYPE_INT4, true, &lo4, &hi4);
    ck_assert_msg(hi4 > 0 && hi4 < hi, "int4 %g vs int8 %g", (double)hi4, (double)hi);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* One-sided data (|Laplace|, seed 3, like a ReLU output) after two
 * outliers (60, 45), 4096 bins: the asymmetric search over windows [0, hi]
 * of at least 256 bins (uint8 has 256 levels on [0, hi]) is TensorRT's
 * search with 256 quantized bins. Reference (the same Python, 4096 bins over
 * [0, 60], 256 quantized bins): i = 725, threshold 10.620. lo stays at the
 * data minimum. */
#define ENTROPY_ONE_SIDED_REF 10.620
START_TEST(entropy_one_sided) {
    static const float front[2] = {60, 45};
    const size_t n = 100000;
    float *x = laplace_data(3, 2, front, n);
    double sum = 0;
    for (size_t i = 2; i < n + 2; i++) {
        x[i] = fabsf(x[i]);
        sum += x[i];
    }
    ck_assert_msg(fabs(sum - 99905.18194225419) < 1e-6, "sum %.12g", sum);
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 4096);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n + 2, 500);
    float lo, hi, mn, mx;
    oq_stats_minmax(s, &mn, &mx);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo == mn && fabs(hi - ENTROPY_ONE_SIDED_REF) <= 0.03 * ENTROPY_ONE_SIDED_REF,
                  "[%g, %g] vs %g", (double)lo, (double)hi, ENTROPY_ONE_SIDED_REF);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* Regression: with two distinct values the window ending at the first
 * folds the second into its bin, P equals Q and the KL is 0, the same as
 * for the full range: the tie must not clip half of the data away. */
START_TEST(entropy_sparse_values_not_clipped) {
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 0);
    oq_stats *s = stats_new(&c);
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = i % 2 ? 2.0f : 1.0f;
    update(s, x, 64);
    float lo, hi;
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert_msg(lo == 1.0f && hi == 2.0f, "[%g, %g]", (double)lo, (double)hi);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(hi == 2.0f, "%g", (double)hi);
    oq_stats_free(s);
    /* a 0/1 mask */
    s = stats_new(&c);
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 3 == 0);
    update(s, x, 64);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo == 0.0f && hi == 1.0f, "[%g, %g]", (double)lo, (double)hi);
    oq_stats_free(s);
}
END_TEST


/* Uniform in [0, 1) from the same generator. */
static double uniform01(uint64_t *s) {
    return (double)(rng_next(s) >> 11) * 0x1p-53;
}

/* Values of x outside [lo, hi], counted on the raw data (not the histogram). */
static size_t count_outside(const float *x, size_t n, float lo, float hi) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += x[i] < lo || x[i] > hi;
    return k;
}

/* Regression (ppocr_cls, the SE block's HardSigmoid): one-sided data far
 * from 0, [0.13, 0.34], 512 values. The window holding 0 and ending at the
 * first occupied bin folded all the mass into that bin, P and Q were the
 * same spike, KL 0: the old search returned [0, 0.130], 99.8% clipped.
 * Now nothing may be clipped: the range is the data's. */
START_TEST(entropy_one_sided_away_from_zero) {
    uint64_t seed = 7;
    float x[512];
    for (int i = 0; i < 512; i++)
        x[i] = (float)(0.13 + 0.21 * uniform01(&seed));
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 0);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, 512, 16);
    float lo, hi, mn, mx;
    oq_stats_minmax(s, &mn, &mx);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo == mn && hi == mx, "[%g, %g] vs data [%g, %g]", (double)lo, (double)hi,
                  (double)mn, (double)mx);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(hi == mx, "symmetric %g vs max %g", (double)hi, (double)mx);
    oq_stats_free(s);
    /* the same with plenty of values: KL may clip, but only a sliver */
    const size_t n = 200000;
    float *y = malloc(n * sizeof *y);
    ck_assert_ptr_nonnull(y);
    for (size_t i = 0; i < n; i++)
        y[i] = (float)(0.13 + 0.21 * uniform01(&seed));
    s = stats_new(&c);
    update_chunks(s, y, n, 1000);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    size_t out = count_outside(y, n, lo, hi);
    ck_assert_msg(out <= n / 10000 && hi > 0.33f, "[%g, %g] clips %zu of %zu", (double)lo,
                  (double)hi, out, n);
    oq_stats_free(s);
    free(y);
}
END_TEST

/* A ReLU output: 60% exact zeros, the rest |Laplace| (seed 5) after an
 * outlier at 40. Exact zeros quantize exactly whatever the range, so they
 * must not move the threshold: the range with the spike equals the range
 * of the non-zero values alone (same extremes, so the same grid). The old
 * search let the spike dominate the first quantized group and clipped at
 * about half the threshold found without it. */
START_TEST(entropy_relu_spike_ignored) {
    const size_t nz = 100000, n = 250000;
    float *x = calloc(n + 1, sizeof *x);
    ck_assert_ptr_nonnull(x);
    uint64_t seed = 5;
    x[0] = 40;
    for (size_t i = 1; i <= nz; i++)
        x[i] = fabsf(laplace(&seed));
    /* zeros interleaved with the values, so every update sees both */
    float *mixed = malloc((n + 1) * sizeof *mixed);
    ck_assert_ptr_nonnull(mixed);
    size_t j = 0, k = 1;
    mixed[j++] = 40;
    for (size_t i = 0; i < n; i++) /* 2 of every 5: exactly nz values */
        mixed[j++] = i % 5 < 2 ? x[k++] : 0.0f;
    ck_assert_uint_eq(k, nz + 1);
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 4096);
    oq_stats *a = stats_new(&c), *b = stats_new(&c);
    float zero = 0;
    update(a, &zero, 1); /* same extremes [0, 40] for both */
    update_chunks(a, x, nz + 1, 1000);
    update_chunks(b, mixed, n + 1, 1000);
    float lo_a, hi_a, lo_b, hi_b;
    range(a, OQ_DTYPE_UINT8, false, &lo_a, &hi_a);
    range(b, OQ_DTYPE_UINT8, false, &lo_b, &hi_b);
    ck_assert_msg(lo_b == 0 && fabsf(hi_b - hi_a) <= 1e-6f * hi_a, "spike %g vs without %g",
                  (double)hi_b, (double)hi_a);
    /* and it does clip the outlier: |Laplace| of 1e5 values tops out near 12 */
    ck_assert_msg(hi_b > 8 && hi_b < 20, "threshold %g", (double)hi_b);
    range(b, OQ_DTYPE_INT8, true, &lo_b, &hi_b);
    range(a, OQ_DTYPE_INT8, true, &lo_a, &hi_a);
    ck_assert_msg(fabsf(hi_b - hi_a) <= 1e-6f * hi_a, "symmetric spike %g vs without %g",
                  (double)hi_b, (double)hi_a);
    oq_stats_free(a);
    oq_stats_free(b);
    free(x);
    free(mixed);
}
END_TEST

/* Heavy tail: Cauchy (seed 11), 200000 values, max |x| in the thousands.
 * KL of a 2048-bin histogram finds the sparse tail cheap to clip; the
 * search may clip, but at most 1e-4 of the values (counted on the raw
 * data), and it must still clip the extreme tail. */
START_TEST(entropy_heavy_tail_clips_little) {
    const size_t n = 200000;
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    uint64_t seed = 11;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)tan(3.14159265358979 * (uniform01(&seed) - 0.5));
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 0);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n, 1000);
    float lo, hi, mn, mx;
    oq_stats_minmax(s, &mn, &mx);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    size_t out = count_outside(x, n, lo, hi);
    float amax = fmaxf(-mn, mx);
    ck_assert_msg(out <= n / 10000 && hi < 0.5f * amax, "symmetric %g (max %g) clips %zu of %zu",
                  (double)hi, (double)amax, out, n);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    out = count_outside(x, n, lo, hi);
    ck_assert_msg(out <= n / 10000 && lo > mn && hi < mx, "[%g, %g] of [%g, %g] clips %zu of %zu",
                  (double)lo, (double)hi, (double)mn, (double)mx, out, n);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* Bimodal: Laplace around 0 (seed 13) and 0.1% of the values spread over
 * [20, 60]. The second mode is real data, not outliers: its bins are sparse
 * so clipping it is cheap in KL (the old search clipped at 12.3, all 200
 * values), but it is 1e-3 of the mass, ten times what may be clipped. */
START_TEST(entropy_bimodal_keeps_second_mode) {
    const size_t n = 200000;
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    uint64_t seed = 13;
    for (size_t i = 0; i < n; i++)
        x[i] = i % 1000 == 0 ? (float)(20 + 40 * uniform01(&seed)) : laplace(&seed);
    oq_quant_config c = cfg_for(OQ_CALIB_ENTROPY, 0);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n, 1000);
    float lo, hi;
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    size_t out = count_outside(x, n, lo, hi);
    ck_assert_msg(out <= n / 10000 && hi > 50, "[%g, %g] clips %zu of %zu", (double)lo,
                  (double)hi, out, n);
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    out = count_outside(x, n, lo, hi);
    ck_assert_msg(out <= n / 10000 && hi > 50, "symmetric %g clips %zu of %zu", (double)hi,
                  out, n);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* ---- MSE ------------------------------------------------------------------------------- */

/* The MSE objective computed exactly on the raw data (no histogram): for a
 * clip at [-a, a] (or [0, a] when one_sided) with `steps` steps, the
 * squared distance of every clipped |x| to a, plus step^2/12 per value in
 * range. Returns the best a on a grid of `grid` points up to max |x|. */
static double exact_mse_best(const float *x, size_t n, double steps, bool one_sided, int grid) {
    double *ax = malloc(n * sizeof *ax), *c1 = malloc((n + 1) * sizeof *c1),
           *c2 = malloc((n + 1) * sizeof *c2);
    for (size_t i = 0; i < n; i++)
        ax[i] = fabs(x[i]);
    qsort(ax, n, sizeof *ax, cmp_double);
    c1[0] = c2[0] = 0;
    for (size_t i = 0; i < n; i++) {
        c1[i + 1] = c1[i] + ax[i];
        c2[i + 1] = c2[i] + ax[i] * ax[i];
    }
    double best = ax[n - 1], best_e = INFINITY;
    for (int g = 1; g <= grid; g++) {
        double a = ax[n - 1] * g / grid;
        size_t lo = 0, hi = n; /* first index with ax > a */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (ax[mid] > a)
                hi = mid;
            else
                lo = mid + 1;
        }
        double t = (double)(n - lo), s1 = c1[n] - c1[lo], s2 = c2[n] - c2[lo];
        double step = (one_sided ? a : 2 * a) / steps;
        double e = s2 - 2 * a * s1 + a * a * t + (double)lo * step * step / 12;
        if (e < best_e) {
            best_e = e;
            best = a;
        }
    }
    free(ax);
    free(c1);
    free(c2);
    return best;
}

/* Pure Laplace(0, 1): the MSE-optimal 8-bit clip is about 9.89 (Banner et
 * al., ACIQ: 2 e^-a = a / 98304 at the optimum), matched by the exact
 * objective on the data and by the histogram search. */
START_TEST(mse_laplace_matches_theory) {
    const size_t n = 1000000;
    float *x = laplace_data(2, 0, NULL, n);
    double best = exact_mse_best(x, n, 255, false, 4000);
    ck_assert_msg(fabs(best - 9.89) <= 0.6, "exact objective optimum %g", best);
    oq_quant_config c = cfg_for(OQ_CALIB_MSE, 2048);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n, 4096);
    float lo, hi;
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(fabs(hi - best) <= 0.02 * best && lo == -hi, "symmetric %g, exact %g", (double)hi,
                  best);
    range(s, OQ_DTYPE_INT8, false, &lo, &hi);
    ck_assert_msg(fabs(hi - best) <= 0.05 * best && fabs(-lo - best) <= 0.05 * best,
                  "asymmetric [%g, %g], exact %g", (double)lo, (double)hi, best);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* Laplace plus two outliers at +-300: MSE still clips far inside the max,
 * where the exact objective on the raw data has its minimum (about 84:
 * squared clipping of the outliers against the rounding error of a million
 * values). One-sided |x| with [0, a] over 255 steps too (the steps are half
 * as wide, so the optimum moves out to about 183 of 300). */
START_TEST(mse_clips_heavy_tail) {
    static const float front[2] = {300, -300};
    const size_t n = 1000000;
    float *x = laplace_data(4, 2, front, n);
    double best = exact_mse_best(x, n + 2, 255, false, 6000);
    ck_assert_msg(best > 20 && best < 150, "exact optimum %g", best);
    oq_quant_config c = cfg_for(OQ_CALIB_MSE, 2048);
    oq_stats *s = stats_new(&c);
    update_chunks(s, x, n + 2, 4096);
    float lo, hi;
    range(s, OQ_DTYPE_INT8, true, &lo, &hi);
    ck_assert_msg(fabs(hi - best) <= 0.03 * best, "symmetric %g, exact %g", (double)hi, best);
    oq_stats_free(s);

    for (size_t i = 0; i < n + 2; i++)
        x[i] = fabsf(x[i]);
    best = exact_mse_best(x, n + 2, 255, true, 6000);
    s = stats_new(&c);
    update_chunks(s, x, n + 2, 4096);
    float mn, mx;
    oq_stats_minmax(s, &mn, &mx);
    range(s, OQ_DTYPE_UINT8, false, &lo, &hi);
    ck_assert_msg(lo == mn && fabs(hi - best) <= 0.03 * best && hi < 0.7 * mx,
                  "one-sided [%g, %g], exact %g", (double)lo, (double)hi, best);
    oq_stats_free(s);
    free(x);
}
END_TEST

/* ---- calibrator ------------------------------------------------------------------------- */

static oq_tensor *mkf(int64_t n, const float *data) {
    oq_error err = {0};
    oq_tensor *t;
    ck_assert_msg(oq_tensor_new(OQ_DTYPE_FLOAT, 1, &n, 0, &t, &err) == OQ_OK, "%s", err.msg);
    if (data)
        memcpy(t->data, data, t->nbytes);
    return t;
}

START_TEST(calibrator_observer) {
    static const char *const names[] = {"a", "b", "a"}; /* a repeat is tracked once */
    oq_quant_config c = cfg_for(OQ_CALIB_MINMAX, 0);
    oq_calibrator *cal;
    oq_error err = {0};
    ck_assert_msg(oq_calibrator_new(&c, names, 3, &cal, &err) == OQ_OK, "%s", err.msg);
    oq_tensor *t = mkf(3, (const float[]){-1, 0.5f, 2});
    ck_assert_int_eq(oq_calibrator_observe(cal, "a", t, &err), OQ_OK);
    ck_assert_int_eq(oq_calibrator_observe(cal, "zzz", t, &err), OQ_OK); /* untracked */
    ck_assert_ptr_null(oq_calibrator_stats(cal, "zzz"));
    ck_assert_ptr_nonnull(oq_calibrator_stats(cal, "b"));
    ck_assert_uint_eq(oq_stats_samples(oq_calibrator_stats(cal, "a")), 1);
    float lo, hi;
    ck_assert_int_eq(oq_calibrator_range(cal, "a", OQ_DTYPE_INT8, false, &lo, &hi, &err), OQ_OK);
    ck_assert(lo == -1.0f && hi == 2.0f);
    /* tracked but never seen, and untracked */
    ck_assert_int_eq(oq_calibrator_range(cal, "b", OQ_DTYPE_INT8, false, &lo, &hi, &err),
                     OQ_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "'b'"));
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_calibrator_range(cal, "zzz", OQ_DTYPE_INT8, false, &lo, &hi, &err),
                     OQ_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "zzz"));
    memset(&err, 0, sizeof err);
    /* NaN: EDATA naming the tensor and the value */
    ((float *)t->data)[1] = NAN;
    ck_assert_int_eq(oq_calibrator_observe(cal, "b", t, &err), OQ_EDATA);
    ck_assert_msg(strstr(err.msg, "tensor 'b'") && strstr(err.msg, "NaN"), "%s", err.msg);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_calibrator_observe(cal, "zzz", t, &err), OQ_OK); /* untracked: not read */
    oq_tensor_free(t);
    /* a tracked non-float tensor: EINVAL naming it */
    oq_tensor *ti;
    int64_t two = 2;
    ck_assert_int_eq(oq_tensor_new(OQ_DTYPE_INT64, 1, &two, 0, &ti, &err), OQ_OK);
    ck_assert_int_eq(oq_calibrator_observe(cal, "a", ti, &err), OQ_EINVAL);
    ck_assert_msg(strstr(err.msg, "'a'") && strstr(err.msg, "int64"), "%s", err.msg);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_calibrator_observe(cal, "other", ti, &err), OQ_OK);
    oq_tensor_free(ti);
    oq_calibrator_free(cal);
    oq_calibrator_free(NULL);
    oq_stats_free(NULL);

    /* a bad config fails at creation */
    c.method = OQ_CALIB_ENTROPY;
    c.num_bins = 0;
    ck_assert_int_eq(oq_calibrator_new(&c, names, 3, &cal, &err), OQ_EINVAL);
}
END_TEST

/* Memory is fixed at creation: the same after 10 and after 10000 updates
 * whose range keeps growing, for every method. */
START_TEST(memory_constant) {
    static const char *const names[] = {"x", "y", "z"};
    int updates = tu_sanitized() ? 3000 : 10000;
    for (int m = OQ_CALIB_MINMAX; m <= OQ_CALIB_MSE; m++) {
        oq_quant_config c = cfg_for((oq_calib_method)m, 2048);
        oq_calibrator *cal;
        oq_error err = {0};
        ck_assert_int_eq(oq_calibrator_new(&c, names, 3, &cal, &err), OQ_OK);
        size_t at_start = oq_calibrator_bytes(cal), at_10 = 0;
        ck_assert(at_start > 0 && at_start < 3 * (2 * 2048 * 8 + 1024));
        oq_tensor *t = mkf(256, NULL);
        uint64_t seed = 11;
        for (int u = 0; u < updates; u++) {
            float *v = t->data;
            for (int i = 0; i < 256; i++)
                v[i] = laplace(&seed) * (1.0f + (float)u);
            for (int k = 0; k < 3; k++)
                ck_assert_int_eq(oq_calibrator_observe(cal, names[k], t, &err), OQ_OK);
            if (u + 1 == 10)
                at_10 = oq_calibrator_bytes(cal);
        }
        ck_assert_uint_eq(at_10, at_start);
        ck_assert_uint_eq(oq_calibrator_bytes(cal), at_start);
        ck_assert_uint_eq(oq_stats_samples(oq_calibrator_stats(cal, "y")), (size_t)updates);
        float lo, hi;
        ck_assert_int_eq(oq_calibrator_range(cal, "z", OQ_DTYPE_INT8, true, &lo, &hi, &err), OQ_OK);
        ck_assert(isfinite(hi) && hi > 0);
        oq_tensor_free(t);
        oq_calibrator_free(cal);
    }
}
END_TEST

/* ---- a real model ---------------------------------------------------------------------- */

#define N_METHODS 5

static oq_status fan_out(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    oq_calibrator **cals = ctx;
    for (int i = 0; i < N_METHODS; i++) {
        oq_status st = oq_calibrator_observe(cals[i], name, t, err);
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

/* fmnist_cnn on 20 calibration samples, one at a time, with the graph input,
 * every Conv/Relu/Gemm output and the logits tracked, under every method at
 * once: every range is finite and inside the observed extremes, ReLU outputs
 * are non-negative, and the input's extremes are those of the data. */
START_TEST(real_model_ranges) {
    const tu_model_info *mi = NULL;
    for (size_t i = 0; i < tu_model_count; i++)
        if (strcmp(tu_models[i].key, "fmnist_cnn") == 0)
            mi = &tu_models[i];
    ck_assert_ptr_nonnull(mi);
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(tu_shared_path(mi->model), NULL, &m, &err) == OQ_OK, "%s",
                  err.msg);
    oq_graph *g;
    ck_assert_msg(oq_graph_new(m, &g, &err) == OQ_OK, "%s", err.msg);
    const char *names[64];
    bool relu[64];
    size_t n = 0;
    int nin;
    const int *ins = oq_graph_real_inputs(g, &nin);
    ck_assert_int_eq(nin, 1);
    names[n] = oq_graph_value(g, ins[0])->name;
    relu[n++] = false;
    int count;
    const int *order = oq_graph_topo_order(g, &count);
    for (int k = 0; k < count && n < 64; k++) {
        const Onnx__NodeProto *node = oq_graph_node(g, order[k]);
        bool is_relu = strcmp(node->op_type, "Relu") == 0;
        if (is_relu || strcmp(node->op_type, "Conv") == 0 || strcmp(node->op_type, "Gemm") == 0) {
            names[n] = node->output[0];
            relu[n++] = is_relu;
        }
    }
    ck_assert_uint_ge(n, 8); /* input, 3 Conv, 4 Relu, 2 Gemm */
    oq_calibrator *cals[N_METHODS];
    for (int i = 0; i < N_METHODS; i++) {
        oq_quant_config c = cfg_for((oq_calib_method)i, 0);
        ck_assert_msg(oq_calibrator_new(&c, names, n, &cals[i], &err) == OQ_OK, "%s", err.msg);
    }
    oq_plan *plan;
    ck_assert_msg(oq_plan_new(m, NULL, &plan, &err) == OQ_OK, "%s", err.msg);
    oq_tensor *calib = tu_calib_set(mi);
    float dmin = INFINITY, dmax = -INFINITY;
    const int samples = 20;
    for (int i = 0; i < samples; i++) {
        oq_tensor *in = tu_rows(calib, i, 1), *out[1];
        const float *v = in->data;
        for (size_t k = 0; k < in->count; k++) {
            dmin = fminf(dmin, v[k]);
            dmax = fmaxf(dmax, v[k]);
        }
        ck_assert_msg(
            oq_plan_run(plan, (const oq_tensor *const *)&in, 1, out, fan_out, cals, &err) == OQ_OK,
            "%s", err.msg);
        oq_tensor_free(out[0]);
        oq_tensor_free(in);
    }
    for (int i = 0; i < N_METHODS; i++) {
        for (size_t k = 0; k < n; k++) {
            const oq_stats *s = oq_calibrator_stats(cals[i], names[k]);
            ck_assert_uint_eq(oq_stats_samples(s), (size_t)samples);
            float mn, mx;
            oq_stats_minmax(s, &mn, &mx);
            if (k == 0)
                ck_assert(mn == dmin && mx == dmax);
            if (relu[k])
                ck_assert_msg(mn >= 0, "%s min %g", names[k], (double)mn);
            for (int sym = 0; sym < 2; sym++) {
                float lo, hi;
                ck_assert_msg(oq_calibrator_range(cals[i], names[k], OQ_DTYPE_INT8, sym, &lo, &hi,
                                                  &err) == OQ_OK,
                              "%s", err.msg);
                float amax = fmaxf(fabsf(mn), fabsf(mx));
                ck_assert_msg(isfinite(lo) && isfinite(hi) && lo <= hi, "%s", names[k]);
                if (sym)
                    ck_assert_msg(lo == -hi && hi <= amax && hi > 0, "%s %s: %g of %g",
                                  oq_calib_method_name((oq_calib_method)i), names[k], (double)hi,
                                  (double)amax);
                else
                    ck_assert_msg(lo >= mn && hi <= mx && hi > lo, "%s %s: [%g, %g] of [%g, %g]",
                                  oq_calib_method_name((oq_calib_method)i), names[k], (double)lo,
                                  (double)hi, (double)mn, (double)mx);
                /* and parameters follow */
                oq_qparams p;
                ck_assert_int_eq(
                    oq_qparams_compute(lo, hi, OQ_DTYPE_INT8, sym, false, 1e-4f, &p, &err), OQ_OK);
                ck_assert(isfinite(p.scale) && p.scale > 0);
            }
            if (i == OQ_CALIB_MINMAX) {
                float lo, hi;
                ck_assert_int_eq(
                    oq_calibrator_range(cals[i], names[k], OQ_DTYPE_INT8, false, &lo, &hi, &err),
                    OQ_OK);
                ck_assert(lo == mn && hi == mx);
            }
        }
        oq_calibrator_free(cals[i]);
    }
    oq_tensor_free(calib);
    oq_plan_free(plan);
    oq_graph_free(g);
    oq_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("calib");
    TCase *tc = tcase_create("stats");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, minmax_exact);
    tcase_add_test(tc, moving_average_by_hand);
    tcase_add_test(tc, nan_inf_rejected);
    tcase_add_test(tc, bad_configs_rejected);
    tcase_add_test(tc, histogram_growth_matches_one_shot);
    tcase_add_test(tc, histogram_counts_constant_prefix);
    tcase_add_test(tc, percentile_known_distribution);
    tcase_add_test(tc, entropy_clips_heavy_tail);
    tcase_add_test(tc, entropy_one_sided);
    tcase_add_test(tc, entropy_sparse_values_not_clipped);
    tcase_add_test(tc, entropy_one_sided_away_from_zero);
    tcase_add_test(tc, entropy_relu_spike_ignored);
    tcase_add_test(tc, entropy_heavy_tail_clips_little);
    tcase_add_test(tc, entropy_bimodal_keeps_second_mode);
    tcase_add_test(tc, mse_laplace_matches_theory);
    tcase_add_test(tc, mse_clips_heavy_tail);
    suite_add_tcase(s, tc);
    TCase *tc2 = tcase_create("calibrator");
    tcase_set_timeout(tc2, 300);
    tcase_add_test(tc2, calibrator_observer);
    tcase_add_test(tc2, memory_constant);
    tcase_add_test(tc2, real_model_ranges);
    suite_add_tcase(s, tc2);
    return tu_run_suite(s);
}
