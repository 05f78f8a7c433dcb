/* test_params.c: quant/params.c against hand-computed values: integer ranges
 * (with reduce_range), scales and zero points ([-2,2] int8 symmetric is
 * 4/255 and 0; [-1,3] uint8 is 4/255 and 64), round half to even, saturation,
 * per-axis quantization on axis 0 and 1, int4/uint4 packing, weight
 * parameters per tensor and per channel, and the int32 bias guard. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "testutil.h"

#define D(...) ((const int64_t[]){__VA_ARGS__})

static oq_tensor *mkf(int rank, const int64_t *dims, const float *data) {
    oq_error err = {0};
    oq_tensor *t;
    ck_assert_msg(oq_tensor_new(OQ_DTYPE_FLOAT, rank, dims, 0, &t, &err) == OQ_OK, "%s", err.msg);
    if (data)
        memcpy(t->data, data, t->nbytes);
    return t;
}

static oq_qparams qp(float lo, float hi, oq_dtype qt, bool sym, bool reduce, float min_range) {
    oq_error err = {0};
    oq_qparams p = {0, 0};
    ck_assert_msg(oq_qparams_compute(lo, hi, qt, sym, reduce, min_range, &p, &err) == OQ_OK, "%s",
                  err.msg);
    return p;
}

/* ---- integer ranges ------------------------------------------------------------ */

START_TEST(qtype_ranges) {
    static const struct {
        oq_dtype t;
        bool reduce;
        int32_t lo, hi;
    } cases[] = {
        {OQ_DTYPE_INT8, false, -128, 127},
        {OQ_DTYPE_UINT8, false, 0, 255},
        {OQ_DTYPE_INT16, false, -32768, 32767},
        {OQ_DTYPE_UINT16, false, 0, 65535},
        {OQ_DTYPE_INT4, false, -8, 7},
        {OQ_DTYPE_UINT4, false, 0, 15},
        {OQ_DTYPE_INT32, false, INT32_MIN, INT32_MAX},
        {OQ_DTYPE_INT8, true, -64, 63},
        {OQ_DTYPE_UINT8, true, 0, 127},
        {OQ_DTYPE_INT16, true, -16384, 16383},
        {OQ_DTYPE_UINT16, true, 0, 32767},
        {OQ_DTYPE_INT4, true, -4, 3},
        {OQ_DTYPE_UINT4, true, 0, 7},
        {OQ_DTYPE_INT32, true, -(1 << 30), (1 << 30) - 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        oq_error err = {0};
        int32_t lo = 1, hi = -1;
        ck_assert_int_eq(oq_qtype_range(cases[i].t, cases[i].reduce, &lo, &hi, &err), OQ_OK);
        ck_assert_msg(lo == cases[i].lo && hi == cases[i].hi, "%s reduce=%d: [%d, %d]",
                      oq_dtype_name(cases[i].t), cases[i].reduce, lo, hi);
    }
    oq_error err = {0};
    int32_t lo, hi;
    ck_assert_int_eq(oq_qtype_range(OQ_DTYPE_FLOAT, false, &lo, &hi, &err), OQ_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "float"));
}
END_TEST

/* ---- scales and zero points ------------------------------------------------------ */

START_TEST(qparams_hand_computed) {
    oq_qparams p = qp(-2, 2, OQ_DTYPE_INT8, true, false, 0);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(-2, 2, OQ_DTYPE_UINT8, true, false, 0);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p.zero_point, 128);
    /* symmetric takes max |x|: [-0.5, 2] is [-2, 2] */
    p = qp(-0.5f, 2, OQ_DTYPE_INT8, true, false, 0);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    p = qp(0, 255, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    /* round(0 - (-1)/(4/255)) = round(63.75) = 64 */
    p = qp(-1, 3, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p.zero_point, 64);
    /* int8: round(-128 + 63.75) = round(-64.25) = -64 */
    p = qp(-1, 3, OQ_DTYPE_INT8, false, false, 0);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p.zero_point, -64);
    /* zero is always in the range: [1, 3] -> [0, 3], [-3, -1] -> [-3, 0] */
    p = qp(1, 3, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == (float)(3.0 / 255.0));
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(-3, -1, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == (float)(3.0 / 255.0));
    ck_assert_int_eq(p.zero_point, 255);
    p = qp(-3, -1, OQ_DTYPE_INT8, false, false, 0);
    ck_assert_int_eq(p.zero_point, 127);
    /* int4 / uint4 / int16 */
    p = qp(-7.5f, 7.5f, OQ_DTYPE_INT4, true, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(0, 15, OQ_DTYPE_UINT4, false, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(-1, 1, OQ_DTYPE_UINT4, true, false, 0);
    ck_assert(p.scale == (float)(2.0 / 15.0));
    ck_assert_int_eq(p.zero_point, 8);
    p = qp(-1, 1, OQ_DTYPE_INT16, true, false, 0);
    ck_assert(p.scale == (float)(2.0 / 65535.0));
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(-1, 1, OQ_DTYPE_UINT16, true, false, 0);
    ck_assert_int_eq(p.zero_point, 32768);
}
END_TEST

START_TEST(qparams_reduce_range) {
    oq_qparams p = qp(-2, 2, OQ_DTYPE_INT8, true, true, 0);
    ck_assert(p.scale == (float)(4.0 / 127.0));
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(0, 127, OQ_DTYPE_UINT8, false, true, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(-1, 1, OQ_DTYPE_UINT8, true, true, 0);
    ck_assert(p.scale == (float)(2.0 / 127.0));
    ck_assert_int_eq(p.zero_point, 64);
    /* [-1, 3] on [0, 127]: scale 4/127, zp round(31.75) = 32 */
    p = qp(-1, 3, OQ_DTYPE_UINT8, false, true, 0);
    ck_assert(p.scale == (float)(4.0 / 127.0));
    ck_assert_int_eq(p.zero_point, 32);
}
END_TEST

START_TEST(qparams_min_range_and_empty) {
    /* [0, 0] widened to min_range: asymmetric upwards, symmetric both sides */
    oq_qparams p = qp(0, 0, OQ_DTYPE_UINT8, false, false, 1e-4f);
    ck_assert(p.scale == (float)((double)1e-4f / 255.0));
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(0, 0, OQ_DTYPE_INT8, false, false, 1e-4f);
    ck_assert(p.scale == (float)((double)1e-4f / 255.0));
    ck_assert_int_eq(p.zero_point, -128);
    p = qp(0, 0, OQ_DTYPE_INT8, true, false, 1e-4f);
    ck_assert(p.scale == (float)((double)1e-4f / 255.0));
    ck_assert_int_eq(p.zero_point, 0);
    /* [-5e-5, 0] asymmetric: hi widened to -5e-5 + 1e-4 */
    p = qp(-5e-5f, 0, OQ_DTYPE_UINT8, false, false, 1e-4f);
    ck_assert(p.scale == (float)((double)1e-4f / 255.0));
    ck_assert_int_eq(p.zero_point, (int)nearbyint(5e-5f / (double)p.scale));
    /* a range already wider than min_range is untouched */
    p = qp(-2, 2, OQ_DTYPE_INT8, true, false, 1e-4f);
    ck_assert(p.scale == (float)(4.0 / 255.0));
    /* empty range, min_range 0: scale 1 and zero point 0 (ONNX Runtime's
     * choice), the middle for symmetric unsigned */
    p = qp(0, 0, OQ_DTYPE_INT8, false, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(0, 0, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 0);
    p = qp(0, 0, OQ_DTYPE_UINT8, true, false, 0);
    ck_assert(p.scale == 1.0f);
    ck_assert_int_eq(p.zero_point, 128);
    /* a scale that would not be a normal float takes the same way out */
    p = qp(0, 1e-37f, OQ_DTYPE_UINT8, false, false, 0);
    ck_assert(p.scale == 1.0f);
    /* widest possible range still gives a finite scale */
    p = qp(-FLT_MAX, FLT_MAX, OQ_DTYPE_INT4, false, false, 0);
    ck_assert(isfinite(p.scale) && p.scale > 0);
}
END_TEST

START_TEST(qparams_rejects_bad_input) {
    oq_qparams p;
    oq_error err = {0};
    ck_assert_int_eq(oq_qparams_compute(2, 1, OQ_DTYPE_INT8, false, false, 0, &p, &err), OQ_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "[2, 1]"));
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_qparams_compute(NAN, 1, OQ_DTYPE_INT8, false, false, 0, &p, &err),
                     OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_qparams_compute(0, INFINITY, OQ_DTYPE_INT8, false, false, 0, &p, &err),
                     OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_qparams_compute(0, 1, OQ_DTYPE_INT8, false, false, -1, &p, &err),
                     OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_qparams_compute(0, 1, OQ_DTYPE_FLOAT, false, false, 0, &p, &err),
                     OQ_EUNSUPPORTED);
}
END_TEST

/* Over many random ranges: zero is a representable level, the integer range
 * covers [lo, hi] to within half a step, and the scale is the smallest that
 * does (hi - lo spread over every step). */
START_TEST(qparams_properties) {
    static const oq_dtype types[] = {OQ_DTYPE_INT8, OQ_DTYPE_UINT8, OQ_DTYPE_INT4, OQ_DTYPE_UINT16};
    uint64_t s = 12345;
    for (int it = 0; it < 4000; it++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double a = ldexp((double)(s >> 11) / 9007199254740992.0 - 0.3, (int)(s % 40) - 20);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double b = a + ldexp((double)(s >> 11) / 9007199254740992.0, (int)(s % 40) - 20);
        oq_dtype qt = types[it % 4];
        bool sym = (it / 4) % 2;
        float lo = (float)a, hi = (float)b;
        oq_qparams p = qp(lo, hi, qt, sym, false, 0);
        int32_t qmin, qmax;
        oq_error err = {0};
        ck_assert_int_eq(oq_qtype_range(qt, false, &qmin, &qmax, &err), OQ_OK);
        ck_assert(isfinite(p.scale) && p.scale >= FLT_MIN);
        ck_assert(p.zero_point >= qmin && p.zero_point <= qmax);
        double l = fmin(lo, 0), h = fmax(hi, 0), sc = p.scale;
        double rlo = ((double)qmin - p.zero_point) * sc, rhi = ((double)qmax - p.zero_point) * sc;
        ck_assert_msg(rlo <= l + sc * 0.5 + 1e-6 * fabs(l) && rhi >= h - sc * 0.5 - 1e-6 * fabs(h),
                      "[%g, %g] %s sym=%d: scale %g zp %d covers [%g, %g]", (double)lo, (double)hi,
                      oq_dtype_name(qt), sym, sc, p.zero_point, rlo, rhi);
        if (sym)
            ck_assert(fabs(sc - 2 * fmax(-l, h) / (qmax - qmin)) <= 1e-6 * sc);
        else
            ck_assert(fabs(sc - (h - l) / (qmax - qmin)) <= 1e-6 * sc);
    }
}
END_TEST

/* ---- rounding and quantization ----------------------------------------------------- */

START_TEST(round_half_even) {
    ck_assert(oq_round_half_even(2.5f) == 2.0f);
    ck_assert(oq_round_half_even(3.5f) == 4.0f);
    ck_assert(oq_round_half_even(-2.5f) == -2.0f);
    ck_assert(oq_round_half_even(-3.5f) == -4.0f);
    ck_assert(oq_round_half_even(0.5f) == 0.0f);
    ck_assert(oq_round_half_even(1.5f) == 2.0f);
    ck_assert(oq_round_half_even(-0.5f) == 0.0f);
    ck_assert(oq_round_half_even(2.4999998f) == 2.0f);
    ck_assert(oq_round_half_even(2.5000002f) == 3.0f);
    ck_assert(oq_round_half_even(-1.2f) == -1.0f);
    ck_assert(oq_round_half_even(8388609.0f) == 8388609.0f);
}
END_TEST

START_TEST(quantize_round_and_saturate) {
    oq_error err = {0};
    static const float xs[] = {2.5f,   3.5f,    -2.5f, 200,     -200,
                               127.5f, -128.5f, 0.4f,  FLT_MAX, -INFINITY};
    static const int8_t want[] = {2, 4, -2, 127, -128, 127, -128, 0, 127, -128};
    oq_tensor *x = mkf(1, D(10), xs), *q;
    oq_qparams p = {1.0f, 0};
    ck_assert_msg(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_INT8, &q, &err) == OQ_OK, "%s",
                  err.msg);
    ck_assert_int_eq(q->dtype, OQ_DTYPE_INT8);
    ck_assert_int_eq(q->rank, 1);
    ck_assert_int_eq(q->dims[0], 10);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(((int8_t *)q->data)[i] == want[i], "x=%g: %d, want %d", (double)xs[i],
                      ((int8_t *)q->data)[i], want[i]);
    oq_tensor_free(q);
    oq_tensor_free(x);

    /* uint8, scale 0.5, zp 128: x/s = 0, 0.5, 1.5, -128, -140, 128, 2.5 */
    static const float ys[] = {0, 0.25f, 0.75f, -64, -70, 64, 1.25f};
    static const uint8_t wantu[] = {128, 128, 130, 0, 0, 255, 130};
    x = mkf(1, D(7), ys);
    p = (oq_qparams){0.5f, 128};
    ck_assert_int_eq(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_UINT8, &q, &err), OQ_OK);
    for (int i = 0; i < 7; i++)
        ck_assert_msg(((uint8_t *)q->data)[i] == wantu[i], "x=%g: %d, want %d", (double)ys[i],
                      ((uint8_t *)q->data)[i], wantu[i]);
    oq_tensor_free(q);

    /* int16 and int32 saturate at their own bounds */
    p = (oq_qparams){1e-3f, 0};
    ck_assert_int_eq(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_INT16, &q, &err), OQ_OK);
    ck_assert_int_eq(((int16_t *)q->data)[3], -32768);
    ck_assert_int_eq(((int16_t *)q->data)[5], 32767);
    ck_assert_int_eq(((int16_t *)q->data)[1], 250);
    oq_tensor_free(q);
    p = (oq_qparams){1e-9f, 0};
    ck_assert_int_eq(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_INT32, &q, &err), OQ_OK);
    ck_assert_int_eq(((int32_t *)q->data)[3], INT32_MIN);
    ck_assert_int_eq(((int32_t *)q->data)[5], INT32_MAX);
    oq_tensor_free(q);
    oq_tensor_free(x);
}
END_TEST

START_TEST(quantize_per_axis) {
    oq_error err = {0};
    oq_tensor *q;
    /* axis 0 of [2, 3]: row 1 has scale 0.5 and zero point 1 */
    oq_tensor *x = mkf(2, D(2, 3), (const float[]){1, 2, 3, 1, 2, 3});
    oq_qparams p0[2] = {{1.0f, 0}, {0.5f, 1}};
    ck_assert_msg(oq_quantize_tensor(x, 0, p0, 2, OQ_DTYPE_INT8, &q, &err) == OQ_OK, "%s", err.msg);
    static const int8_t want0[] = {1, 2, 3, 3, 5, 7};
    ck_assert_mem_eq(q->data, want0, 6);
    oq_tensor_free(q);
    oq_tensor_free(x);
    /* axis 1 of [2, 3]: column scales 1, 2, 4 */
    x = mkf(2, D(2, 3), (const float[]){4, 4, 4, 8, 8, 8});
    oq_qparams p1[3] = {{1.0f, 0}, {2.0f, 0}, {4.0f, 0}};
    ck_assert_int_eq(oq_quantize_tensor(x, 1, p1, 3, OQ_DTYPE_INT8, &q, &err), OQ_OK);
    static const int8_t want1[] = {4, 2, 1, 8, 4, 2};
    ck_assert_mem_eq(q->data, want1, 6);
    oq_tensor_free(q);
    oq_tensor_free(x);
    /* axis 1 of a Conv-shaped [1, 2, 2, 2] (inner > 1) */
    x = mkf(4, D(1, 2, 2, 2), (const float[]){1, 2, 3, 4, 1, 2, 3, 4});
    oq_qparams p2[2] = {{1.0f, 10}, {0.25f, -10}};
    ck_assert_int_eq(oq_quantize_tensor(x, 1, p2, 2, OQ_DTYPE_INT8, &q, &err), OQ_OK);
    static const int8_t want2[] = {11, 12, 13, 14, -6, -2, 2, 6};
    ck_assert_mem_eq(q->data, want2, 8);
    oq_tensor_free(q);

    /* errors: parameter count, axis, scale, zero point, NaN */
    ck_assert_int_eq(oq_quantize_tensor(x, 1, p2, 1, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_quantize_tensor(x, -1, p2, 2, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_quantize_tensor(x, 4, p2, 2, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    oq_qparams bad[2] = {{0.0f, 0}, {1.0f, 0}};
    ck_assert_int_eq(oq_quantize_tensor(x, 1, bad, 2, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    bad[0] = (oq_qparams){NAN, 0};
    ck_assert_int_eq(oq_quantize_tensor(x, 1, bad, 2, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    bad[0] = (oq_qparams){1.0f, 200};
    ck_assert_int_eq(oq_quantize_tensor(x, 1, bad, 2, OQ_DTYPE_INT8, &q, &err), OQ_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "200"));
    memset(&err, 0, sizeof err);
    ((float *)x->data)[5] = NAN;
    ck_assert_int_eq(oq_quantize_tensor(x, 1, p2, 2, OQ_DTYPE_INT8, &q, &err), OQ_EDATA);
    ck_assert_ptr_nonnull(strstr(err.msg, "NaN"));
    oq_tensor_free(x);
}
END_TEST

START_TEST(quantize_int4_packing) {
    oq_error err = {0};
    oq_tensor *q;
    /* int4: 1, -2, 7, -8, 9 (-> 7), 0, 3 -> nibbles 1 E 7 8 7 0 3, low first */
    oq_tensor *x = mkf(1, D(7), (const float[]){1, -2, 7, -8, 9, 0, 3});
    oq_qparams p = {1.0f, 0};
    ck_assert_msg(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_INT4, &q, &err) == OQ_OK, "%s",
                  err.msg);
    ck_assert_uint_eq(q->nbytes, 4);
    static const uint8_t want[] = {0xE1, 0x87, 0x07, 0x03};
    ck_assert_mem_eq(q->data, want, 4);
    oq_tensor_free(q);
    oq_tensor_free(x);
    /* uint4 with zp 8, scale 0.5: 0 -> 8, 3.5 -> 15, 100 -> 15, -4 -> 0, 0.25 -> 8 (0.5 ties to 0)
     */
    x = mkf(1, D(5), (const float[]){0, 3.5f, 100, -4, 0.25f});
    p = (oq_qparams){0.5f, 8};
    ck_assert_int_eq(oq_quantize_tensor(x, -1, &p, 1, OQ_DTYPE_UINT4, &q, &err), OQ_OK);
    ck_assert_uint_eq(q->nbytes, 3);
    static const uint8_t wantu[] = {0xF8, 0x0F, 0x08};
    ck_assert_mem_eq(q->data, wantu, 3);
    oq_tensor_free(q);
    oq_tensor_free(x);
    /* per-axis int4 on [2, 3] (odd rows: a row ends mid-byte) */
    x = mkf(2, D(2, 3), (const float[]){1, 2, 3, 1, 2, 3});
    oq_qparams pa[2] = {{1.0f, 0}, {0.5f, -1}};
    ck_assert_int_eq(oq_quantize_tensor(x, 0, pa, 2, OQ_DTYPE_INT4, &q, &err), OQ_OK);
    static const uint8_t wanta[] = {0x21, 0x13, 0x53};
    ck_assert_mem_eq(q->data, wanta, 3);
    oq_tensor_free(q);
    oq_tensor_free(x);
}
END_TEST

/* Quantize -> dequantize of random data in range is within half a step. */
START_TEST(quantize_round_trip) {
    oq_error err = {0};
    int64_t n = 5000;
    oq_tensor *x = mkf(1, &n, NULL), *q;
    float *v = x->data;
    uint64_t s = 99;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 7.0 - 2.0); /* [-2, 5) */
    }
    static const oq_dtype types[] = {OQ_DTYPE_INT8, OQ_DTYPE_UINT8, OQ_DTYPE_INT16};
    for (int t = 0; t < 3; t++) {
        for (int sym = 0; sym < 2; sym++) {
            oq_qparams p = qp(-2, 5, types[t], sym, false, 0);
            ck_assert_int_eq(oq_quantize_tensor(x, -1, &p, 1, types[t], &q, &err), OQ_OK);
            for (int64_t i = 0; i < n; i++) {
                double qi = types[t] == OQ_DTYPE_INT8    ? ((int8_t *)q->data)[i]
                            : types[t] == OQ_DTYPE_UINT8 ? ((uint8_t *)q->data)[i]
                                                         : ((int16_t *)q->data)[i];
                double back = (qi - p.zero_point) * p.scale;
                /* x / scale is a float division: up to 65535 * 2^-24 of a step more for int16 */
                ck_assert_msg(fabs(back - v[i]) <= 0.51 * p.scale, "%s sym %d: %.9g -> %.9g",
                              oq_dtype_name(types[t]), sym, (double)v[i], back);
            }
            oq_tensor_free(q);
        }
    }
    oq_tensor_free(x);
}
END_TEST

/* ---- weight parameters ------------------------------------------------------------- */

START_TEST(weight_params_per_tensor_and_channel) {
    oq_error err = {0};
    oq_qparams *p;
    size_t n;
    oq_tensor *w = mkf(1, D(3), (const float[]){-1, 0.5f, 2});
    ck_assert_msg(oq_weight_qparams(w, -1, OQ_DTYPE_INT8, true, false, &p, &n, &err) == OQ_OK, "%s",
                  err.msg);
    ck_assert_uint_eq(n, 1);
    ck_assert(p[0].scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p[0].zero_point, 0);
    free(p);
    oq_tensor_free(w);

    /* Conv [O=3, I=1, 2, 2] on axis 0: channel absmax 1, 4, 0 (all zero) */
    w = mkf(4, D(3, 1, 2, 2), (const float[]){1, -0.5f, 0.25f, 0, -4, 1, 2, 3, 0, 0, 0, 0});
    ck_assert_int_eq(oq_weight_qparams(w, 0, OQ_DTYPE_INT8, true, false, &p, &n, &err), OQ_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert(p[0].scale == (float)(2.0 / 255.0));
    ck_assert(p[1].scale == (float)(8.0 / 255.0));
    ck_assert(p[2].scale == 1.0f); /* empty range, no min_range for weights */
    for (int c = 0; c < 3; c++)
        ck_assert_int_eq(p[c].zero_point, 0);
    free(p);
    /* reduce_range halves the steps: 2/127 and 8/127 */
    ck_assert_int_eq(oq_weight_qparams(w, 0, OQ_DTYPE_INT8, true, true, &p, &n, &err), OQ_OK);
    ck_assert(p[0].scale == (float)(2.0 / 127.0));
    ck_assert(p[1].scale == (float)(8.0 / 127.0));
    free(p);
    oq_tensor_free(w);

    /* Gemm B [K=2, N=3] on axis 1, asymmetric uint8: columns [0,255], [-1,3], [-2,-2] */
    w = mkf(2, D(2, 3), (const float[]){0, -1, -2, 255, 3, -2});
    ck_assert_int_eq(oq_weight_qparams(w, 1, OQ_DTYPE_UINT8, false, false, &p, &n, &err), OQ_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert(p[0].scale == 1.0f);
    ck_assert_int_eq(p[0].zero_point, 0);
    ck_assert(p[1].scale == (float)(4.0 / 255.0));
    ck_assert_int_eq(p[1].zero_point, 64);
    ck_assert(p[2].scale == (float)(2.0 / 255.0));
    ck_assert_int_eq(p[2].zero_point, 255);
    free(p);
    /* ... and symmetric int4 on axis 0: rows absmax 2 and 255 */
    ck_assert_int_eq(oq_weight_qparams(w, 0, OQ_DTYPE_INT4, true, false, &p, &n, &err), OQ_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(p[0].scale == (float)(4.0 / 15.0));
    ck_assert(p[1].scale == (float)(510.0 / 15.0));
    free(p);

    /* errors */
    ck_assert_int_eq(oq_weight_qparams(w, 2, OQ_DTYPE_INT8, true, false, &p, &n, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ((float *)w->data)[4] = INFINITY;
    ck_assert_int_eq(oq_tensor_set_name(w, "fc.weight", &err), OQ_OK);
    ck_assert_int_eq(oq_weight_qparams(w, 1, OQ_DTYPE_INT8, true, false, &p, &n, &err), OQ_EDATA);
    ck_assert_ptr_nonnull(strstr(err.msg, "fc.weight"));
    ck_assert_ptr_nonnull(strstr(err.msg, "Inf"));
    ck_assert_ptr_null(p);
    oq_tensor_free(w);
}
END_TEST

/* ---- bias ----------------------------------------------------------------------------- */

START_TEST(bias_quantization) {
    oq_error err = {0};
    oq_tensor *b = mkf(1, D(2), (const float[]){1.0f, -3.0f}), *q;
    oq_qparams w[2] = {{0.25f, 0}, {0.1f, 0}};
    bool changed = true;
    ck_assert_msg(oq_quantize_bias(b, 0.5f, w, 2, &q, &changed, &err) == OQ_OK, "%s", err.msg);
    ck_assert(!changed);
    ck_assert_int_eq(q->dtype, OQ_DTYPE_INT32);
    ck_assert_int_eq(((int32_t *)q->data)[0], 8);   /* 1 / 0.125 */
    ck_assert_int_eq(((int32_t *)q->data)[1], -60); /* -3 / (0.5f * 0.1f) = -59.99999... */
    ck_assert(w[0].scale == 0.25f && w[1].scale == 0.1f);
    oq_tensor_free(q);
    oq_tensor_free(b);

    /* ties to even, one shared weight scale */
    b = mkf(1, D(4), (const float[]){2.5f, -2.5f, 3.5f, 0.5f});
    oq_qparams one = {1.0f, 0};
    ck_assert_int_eq(oq_quantize_bias(b, 1.0f, &one, 1, &q, &changed, &err), OQ_OK);
    static const int32_t want[] = {2, -2, 4, 0};
    ck_assert_mem_eq(q->data, want, sizeof want);
    oq_tensor_free(q);

    /* errors */
    ck_assert_int_eq(oq_quantize_bias(b, 1.0f, w, 2, &q, &changed, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_quantize_bias(b, 0.0f, &one, 1, &q, &changed, &err), OQ_EINVAL);
    memset(&err, 0, sizeof err);
    ((float *)b->data)[2] = NAN;
    ck_assert_int_eq(oq_quantize_bias(b, 1.0f, &one, 1, &q, &changed, &err), OQ_EDATA);
    ck_assert_ptr_nonnull(strstr(err.msg, "NaN"));
    oq_tensor_free(b);
}
END_TEST

/* Bias 10 at scale 1e-3 * 1e-6 would be 1e10: the weight scale of that
 * channel rises to the smallest float for which it fits int32; the other
 * channel keeps its scale. */
START_TEST(bias_overflow_guard) {
    oq_error err = {0};
    const float in_scale = 1e-3f;
    oq_tensor *b = mkf(1, D(2), (const float[]){10.0f, 1e-3f}), *q;
    oq_qparams w[2] = {{1e-6f, 0}, {1e-6f, 0}};
    bool changed = false;
    ck_assert_msg(oq_quantize_bias(b, in_scale, w, 2, &q, &changed, &err) == OQ_OK, "%s", err.msg);
    ck_assert(changed);
    ck_assert(w[1].scale == 1e-6f);
    float ws = w[0].scale, below = nextafterf(ws, 0);
    ck_assert(ws > 1e-6f);
    ck_assert(nearbyint(10.0 / (double)(in_scale * ws)) <= INT32_MAX);
    ck_assert(nearbyint(10.0 / (double)(in_scale * below)) > INT32_MAX); /* smallest that fits */
    ck_assert(fabs(ws - 10.0 / (1e-3 * 2147483647.0)) <= 1e-6 * ws);
    int32_t q0 = ((int32_t *)q->data)[0], q1 = ((int32_t *)q->data)[1];
    ck_assert_int_eq(q0, (int32_t)nearbyint(10.0 / (double)(in_scale * ws)));
    ck_assert(fabs(q0 * (double)(in_scale * ws) - 10.0) <= (double)(in_scale * ws));
    ck_assert_int_eq(q1, (int32_t)nearbyint(1e-3 / (double)(in_scale * 1e-6f)));
    oq_tensor_free(q);
    oq_tensor_free(b);

    /* per-tensor weight scale: raised once, every value quantized with it */
    b = mkf(1, D(3), (const float[]){-20.0f, 1.0f, 0.5f});
    oq_qparams one = {1e-6f, 0};
    ck_assert_int_eq(oq_quantize_bias(b, in_scale, &one, 1, &q, &changed, &err), OQ_OK);
    ck_assert(changed);
    float s = in_scale * one.scale;
    ck_assert(nearbyint(20.0 / (double)s) <= INT32_MAX);
    ck_assert(nearbyint(20.0 / (double)(in_scale * nextafterf(one.scale, 0))) > INT32_MAX);
    ck_assert_int_eq(((int32_t *)q->data)[0], (int32_t)nearbyint(-20.0 / (double)s));
    ck_assert_int_eq(((int32_t *)q->data)[1], (int32_t)nearbyint(1.0 / (double)s));
    oq_tensor_free(q);
    oq_tensor_free(b);
}
END_TEST

int main(void) {
    Suite *s = suite_create("params");
    TCase *tc = tcase_create("params");
    tcase_add_test(tc, qtype_ranges);
    tcase_add_test(tc, qparams_hand_computed);
    tcase_add_test(tc, qparams_reduce_range);
    tcase_add_test(tc, qparams_min_range_and_empty);
    tcase_add_test(tc, qparams_rejects_bad_input);
    tcase_add_test(tc, qparams_properties);
    tcase_add_test(tc, round_half_even);
    tcase_add_test(tc, quantize_round_and_saturate);
    tcase_add_test(tc, quantize_per_axis);
    tcase_add_test(tc, quantize_int4_packing);
    tcase_add_test(tc, quantize_round_trip);
    tcase_add_test(tc, weight_params_per_tensor_and_channel);
    tcase_add_test(tc, bias_quantization);
    tcase_add_test(tc, bias_overflow_guard);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
