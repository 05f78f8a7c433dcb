/* ops_elementwise_math.c: the unary float kernels of the elementwise family.
 * float32 transcendental functions are branch-free polynomial/rational
 * approximations (a few ulp) so the loops vectorise; float64 uses libm. */
#include <math.h>
#include <string.h>

#include "op.h"
#include "ops_elementwise.h"

/* The loops below select with ?: rather than branch; GCC only if-converts
 * (vectorises) them when it may evaluate both sides, i.e. without FP traps,
 * which no kernel observes. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Hot loops get an AVX2+FMA clone picked at load time by the CPU; the
 * baseline x86-64 clone stays as the portable fallback. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OQ_EW_NO_CLONES)
#define EW_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EW_HOT
#endif

typedef union {
    float f;
    uint32_t u;
} f32bits;

/* exp: n = round(x / ln2), r = x - n ln2 (two-part ln2), Cephes polynomial,
 * times 2^n applied as two factors so results near the float range limits
 * overflow to inf / underflow to subnormals correctly. Clamps keep NaN. */
static inline float v_exp(float x) {
    x = x > 89.0f ? 89.0f : x;
    x = x < -104.0f ? -104.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    float n = t - 12582912.0f;
    f32bits tb = {t};
    int32_t ni = (int32_t)(tb.u - 0x4B400000u);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    int32_t n1 = ni / 2, n2 = ni - n1;
    f32bits s1 = {.u = (uint32_t)(n1 + 127) << 23}, s2 = {.u = (uint32_t)(n2 + 127) << 23};
    return y * s1.f * s2.f;
}

/* log: x = m 2^e with m in [sqrt(.5), sqrt(2)), Cephes polynomial in m-1;
 * subnormals are scaled up first; special values patched at the end. */
static inline float v_log(float x) {
    int sub = x < 1.17549435e-38f;
    f32bits b = {sub ? x * 8388608.0f : x};
    int32_t e = (int32_t)((b.u >> 23) & 0xffu) - 126 - (sub ? 23 : 0);
    b.u = (b.u & 0x007fffffu) | 0x3f000000u;
    float m = b.f;
    int lt = m < 0.707106781186547524f;
    e = lt ? e - 1 : e;
    m = lt ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float p = 7.0376836292E-2f;
    p = p * m - 1.1514610310E-1f;
    p = p * m + 1.1676998740E-1f;
    p = p * m - 1.2420140846E-1f;
    p = p * m + 1.4249322787E-1f;
    p = p * m - 1.6668057665E-1f;
    p = p * m + 2.0000714765E-1f;
    p = p * m - 2.4999993993E-1f;
    p = p * m + 3.3333331174E-1f;
    float fe = (float)e;
    float y = p * m * z;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    float r = m + y + 0.693359375f * fe;
    r = x < 0.0f ? NAN : r;
    r = x == 0.0f ? -INFINITY : r;
    r = x == INFINITY ? x : r;
    return x != x ? x : r;
}

/* log(1 + u) for u >= 0 without losing small u (Kahan's trick). */
static inline float v_log1p(float u) {
    float w = 1.0f + u;
    float l = v_log(w) * (u / (w - 1.0f));
    return w == 1.0f ? u : l;
}

/* tanh: odd rational approximation on [-7.9, 7.9] (saturated beyond). */
static inline float v_tanh(float x) {
    const float lim = 7.90531110763549805f;
    float xc = x > lim ? lim : x;
    xc = xc < -lim ? -lim : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float r = p / q;
    return fabsf(x) < 0.0004f ? x : r;
}

/* erf: odd rational approximation on [-4, 4] (erf is +-1 in float beyond). */
static inline float v_erf(float x) {
    float xc = x > 4.0f ? 4.0f : x;
    xc = xc < -4.0f ? -4.0f : xc;
    float x2 = xc * xc;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    p = p * xc;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return p / q;
}

/* Round half to even (Round-11) via the 2^23 trick: adding and subtracting
 * 2^23 rounds in the default rounding mode, which is to nearest even. */
static inline float v_rint(float x) {
    float a = fabsf(x);
    float r = copysignf((a + 8388608.0f) - 8388608.0f, x);
    return a < 8388608.0f ? r : x;
}
static inline float v_floor(float x) {
    float r = v_rint(x);
    return copysignf(r > x ? r - 1.0f : r, x);
}
static inline float v_ceil(float x) {
    float r = v_rint(x);
    return copysignf(r < x ? r + 1.0f : r, x);
}

/* Comparisons rather than fminf/fmaxf: they keep NaN and vectorise. */
static inline float clamp01(float v) {
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

static inline float v_sigmoid(float x) { return 1.0f / (1.0f + v_exp(-x)); }

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|. */
static inline float v_softplus(float x) {
    float pos = x > 0.0f ? x : 0.0f;
    return pos + v_log1p(v_exp(-fabsf(x)));
}

/* mish(x) = x tanh(softplus(x)) = x n / (n + 2) with n = e^x (e^x + 2);
 * beyond x = 20 the factor is 1 to float precision. */
static inline float v_mish(float x) {
    float e = v_exp(x > 20.0f ? 20.0f : x);
    float n = e * (e + 2.0f);
    float y = x * (n / (n + 2.0f));
    return x > 20.0f ? x : y;
}

float oq_ew_expf(float x) { return v_exp(x); }
float oq_ew_logf(float x) { return v_log(x); }
float oq_ew_tanhf(float x) { return v_tanh(x); }
float oq_ew_erff(float x) { return v_erf(x); }

#define LOOP(expr)                                                                               \
    do {                                                                                         \
        for (size_t i = 0; i < n; i++) {                                                         \
            float v = x[i];                                                                      \
            y[i] = (expr);                                                                       \
        }                                                                                        \
    } while (0)

EW_HOT void oq_ew_unary_f32(const oq_ew_unary *u, const float *restrict x, float *restrict y,
                            size_t n) {
    const float alpha = u->alpha, beta = u->beta, gamma = u->gamma;
    switch (u->kind) {
    case OQ_EW_ABS: LOOP(fabsf(v)); break;
    case OQ_EW_NEG: LOOP(-v); break;
    case OQ_EW_SIGN: LOOP(v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v); break; /* keeps 0 and NaN */
    case OQ_EW_CEIL: LOOP(v_ceil(v)); break;
    case OQ_EW_FLOOR: LOOP(v_floor(v)); break;
    case OQ_EW_ROUND: LOOP(v_rint(v)); break;
    case OQ_EW_RECIPROCAL: LOOP(1.0f / v); break;
    case OQ_EW_SQRT: LOOP(sqrtf(v)); break; /* scalar: math-errno keeps sqrtf a call */
    case OQ_EW_EXP: LOOP(v_exp(v)); break;
    case OQ_EW_LOG: LOOP(v_log(v)); break;
    case OQ_EW_ERF: LOOP(v_erf(v)); break;
    case OQ_EW_TANH: LOOP(v_tanh(v)); break;
    case OQ_EW_SIGMOID: LOOP(v_sigmoid(v)); break;
    case OQ_EW_HARDSIGMOID:
    case OQ_EW_HARDSWISH:
        /* HardSwish-14 is x * HardSigmoid(x) with alpha 1/6, beta 0.5 (set in prepare). */
        if (u->kind == OQ_EW_HARDSIGMOID) {
            LOOP(clamp01(alpha * v + beta));
        } else {
            LOOP(v * clamp01(alpha * v + beta));
        }
        break;
    case OQ_EW_RELU: LOOP(v < 0.0f ? 0.0f : v); break;
    case OQ_EW_LEAKYRELU: LOOP(v < 0.0f ? alpha * v : v); break;
    case OQ_EW_ELU: LOOP(v < 0.0f ? alpha * (v_exp(v) - 1.0f) : v); break;
    case OQ_EW_SELU: LOOP(v > 0.0f ? gamma * v : gamma * (alpha * v_exp(v) - alpha)); break;
    case OQ_EW_SOFTPLUS: LOOP(v_softplus(v)); break;
    case OQ_EW_MISH: LOOP(v_mish(v)); break;
    case OQ_EW_GELU:
        if (u->gelu_tanh) { /* Gelu-20 approximate="tanh" */
            LOOP(0.5f * v * (1.0f + v_tanh(0.7978845608028654f * (v + 0.044715f * v * v * v))));
        } else {
            LOOP(0.5f * v * (1.0f + v_erf(v * 0.7071067811865476f)));
        }
        break;
    default: LOOP(v * NAN); break; /* not a unary kind: infer never lets one through */
    }
}

#undef LOOP
#define LOOP(expr)                                                                               \
    do {                                                                                         \
        for (size_t i = 0; i < n; i++) {                                                         \
            double v = x[i];                                                                     \
            y[i] = (expr);                                                                       \
        }                                                                                        \
    } while (0)

static double clamp01_f64(double v) {
    v = v < 0.0 ? 0.0 : v;
    return v > 1.0 ? 1.0 : v;
}

static double softplus_f64(double v) {
    return (v > 0.0 ? v : 0.0) + log1p(exp(-fabs(v)));
}

void oq_ew_unary_f64(const oq_ew_unary *u, const double *restrict x, double *restrict y,
                     size_t n) {
    const double alpha = u->alpha, beta = u->beta, gamma = u->gamma;
    switch (u->kind) {
    case OQ_EW_ABS: LOOP(fabs(v)); break;
    case OQ_EW_NEG: LOOP(-v); break;
    case OQ_EW_SIGN: LOOP(v > 0.0 ? 1.0 : v < 0.0 ? -1.0 : v); break;
    case OQ_EW_CEIL: LOOP(ceil(v)); break;
    case OQ_EW_FLOOR: LOOP(floor(v)); break;
    case OQ_EW_ROUND: LOOP(nearbyint(v)); break; /* default mode: half to even */
    case OQ_EW_RECIPROCAL: LOOP(1.0 / v); break;
    case OQ_EW_SQRT: LOOP(sqrt(v)); break;
    case OQ_EW_EXP: LOOP(exp(v)); break;
    case OQ_EW_LOG: LOOP(log(v)); break;
    case OQ_EW_ERF: LOOP(erf(v)); break;
    case OQ_EW_TANH: LOOP(tanh(v)); break;
    case OQ_EW_SIGMOID: LOOP(v >= 0.0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v))); break;
    case OQ_EW_HARDSIGMOID: LOOP(clamp01_f64(alpha * v + beta)); break;
    case OQ_EW_HARDSWISH: LOOP(v * clamp01_f64(v / 6.0 + 0.5)); break; /* exact 1/6 */
    case OQ_EW_RELU: LOOP(v < 0.0 ? 0.0 : v); break;
    case OQ_EW_LEAKYRELU: LOOP(v < 0.0 ? alpha * v : v); break;
    case OQ_EW_ELU: LOOP(v < 0.0 ? alpha * expm1(v) : v); break;
    case OQ_EW_SELU: LOOP(v > 0.0 ? gamma * v : gamma * (alpha * exp(v) - alpha)); break;
    case OQ_EW_SOFTPLUS: LOOP(softplus_f64(v)); break;
    case OQ_EW_MISH: LOOP(v * tanh(softplus_f64(v))); break;
    case OQ_EW_GELU:
        if (u->gelu_tanh) {
            LOOP(0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
        } else {
            LOOP(0.5 * v * (1.0 + erf(v * 0.7071067811865476)));
        }
        break;
    default: LOOP(v * NAN); break;
    }
}
#undef LOOP

EW_HOT void oq_ew_clip_f32(float lo, float hi, const float *restrict x, float *restrict y,
                           size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v; /* min > max gives max, as numpy.clip does */
    }
}

void oq_ew_to_f32(oq_dtype dt, const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    if (dt == OQ_DTYPE_BFLOAT16) {
        for (size_t i = 0; i < n; i++) {
            f32bits b = {.u = (uint32_t)s[i] << 16};
            dst[i] = b.f;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = oq_half_to_float(s[i]);
    }
}

void oq_ew_from_f32(oq_dtype dt, const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    if (dt == OQ_DTYPE_BFLOAT16) {
        for (size_t i = 0; i < n; i++)
            d[i] = oq_float_to_bf16(src[i]);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = oq_float_to_half(src[i]);
    }
}
