/* params.c: scale/zero-point arithmetic and tensor quantization with the
 * exact rules of ONNX QuantizeLinear (round half to even, saturate), so what
 * we write offline equals what a runtime would compute. Ranges are computed
 * in double and rounded once to the float that goes into the model. */
#include "params.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"

float oq_round_half_even(float x) {
    /* QuantizeLinear rounds half to even; nearbyintf does so under the
     * default rounding mode (FE_TONEAREST), roundf would round ties away. */
    return nearbyintf(x);
}

oq_status oq_qtype_range(oq_dtype qtype, bool reduce_range, int32_t *qmin, int32_t *qmax,
                         oq_error *err) {
    int64_t lo, hi;
    switch (qtype) {
    case OQ_DTYPE_INT8:
        lo = INT8_MIN;
        hi = INT8_MAX;
        break;
    case OQ_DTYPE_UINT8:
        lo = 0;
        hi = UINT8_MAX;
        break;
    case OQ_DTYPE_INT16:
        lo = INT16_MIN;
        hi = INT16_MAX;
        break;
    case OQ_DTYPE_UINT16:
        lo = 0;
        hi = UINT16_MAX;
        break;
    case OQ_DTYPE_INT4:
        lo = -8;
        hi = 7;
        break;
    case OQ_DTYPE_UINT4:
        lo = 0;
        hi = 15;
        break;
    case OQ_DTYPE_INT32:
        lo = INT32_MIN;
        hi = INT32_MAX;
        break;
    default:
        return oq_err(err, OQ_EUNSUPPORTED,
                      "%s is not a quantized type (int8, uint8, int16, "
                      "uint16, int4, uint4, int32)",
                      oq_dtype_name(qtype));
    }
    if (reduce_range) {
        /* Half the values, i.e. one bit less: int8 -> [-64, 63], uint8 -> [0, 127]. */
        int64_t levels = (hi - lo + 1) / 2;
        if (lo < 0) {
            lo = -(levels / 2);
            hi = levels / 2 - 1;
        } else {
            hi = levels - 1;
        }
    }
    if (qmin)
        *qmin = (int32_t)lo;
    if (qmax)
        *qmax = (int32_t)hi;
    return OQ_OK;
}

/* Symmetric zero point: the middle of the integer range (0 for signed). */
static int32_t symmetric_zero_point(int32_t qmin, int32_t qmax) {
    return qmin < 0 ? 0 : (int32_t)(((int64_t)qmin + qmax + 1) / 2);
}

static int32_t clamp_i64(int64_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

oq_status oq_qparams_compute(float lo, float hi, oq_dtype qtype, bool symmetric, bool reduce_range,
                             float min_range, oq_qparams *out, oq_error *err) {
    if (!out)
        return oq_err(err, OQ_EINVAL, "oq_qparams_compute: NULL argument");
    if (!isfinite(lo) || !isfinite(hi) || lo > hi)
        return oq_err(err, OQ_EINVAL, "range [%g, %g] is not a finite interval", (double)lo,
                      (double)hi);
    if (!isfinite(min_range) || min_range < 0)
        return oq_err(err, OQ_EINVAL, "min_range %g is not a finite non-negative number",
                      (double)min_range);
    int32_t qmin = 0, qmax = 0;
    oq_status st = oq_qtype_range(qtype, reduce_range, &qmin, &qmax, err);
    if (st != OQ_OK)
        return st;
    /* Zero must be exactly representable (zero padding, ReLU outputs): the
     * range always holds it, as in ONNX Runtime's compute_scale_zp. */
    double l = fmin((double)lo, 0.0), h = fmax((double)hi, 0.0);
    double steps = (double)qmax - (double)qmin;
    double scale_d;
    if (symmetric) {
        double a = fmax(-l, h);
        if (2 * a < (double)min_range) /* widen both sides to min_range in all */
            a = (double)min_range / 2;
        scale_d = 2 * a / steps;
    } else {
        if (h - l < (double)min_range) /* widen upwards */
            h = l + (double)min_range;
        scale_d = (h - l) / steps;
    }
    float scale = (float)scale_d;
    if (!(scale >= FLT_MIN)) {
        /* An empty range (a constant-zero tensor with min_range 0) or one so
         * small its scale is not a normal float: scale 1, zero point 0 (or
         * the middle for symmetric unsigned), as ONNX Runtime does. Every
         * value then quantizes to the zero point, which is what it is. */
        out->scale = 1.0f;
        out->zero_point = symmetric ? symmetric_zero_point(qmin, qmax) : clamp_i64(0, qmin, qmax);
        return OQ_OK;
    }
    out->scale = scale;
    if (symmetric) {
        out->zero_point = symmetric_zero_point(qmin, qmax);
    } else {
        /* With the float scale actually stored, so that zero dequantizes
         * from the zero point exactly. */
        double zp = nearbyint((double)qmin - l / (double)scale);
        out->zero_point = clamp_i64((int64_t)zp, qmin, qmax);
    }
    return OQ_OK;
}

/* Splits t's elements around axis into outer x channels x inner. */
static void axis_split(const oq_tensor *t, int axis, size_t *outer, size_t *channels,
                       size_t *inner) {
    size_t o = 1, in = 1;
    for (int d = 0; d < axis; d++)
        o *= (size_t)t->dims[d];
    for (int d = axis + 1; d < t->rank; d++)
        in *= (size_t)t->dims[d];
    *outer = o;
    *channels = (size_t)t->dims[axis];
    *inner = in;
}

static const char *tname(const oq_tensor *t, const char *fallback) {
    return t->name ? t->name : fallback;
}

oq_status oq_weight_qparams(const oq_tensor *w, int axis, oq_dtype qtype, bool symmetric,
                            bool reduce_range, oq_qparams **out, size_t *n, oq_error *err) {
    if (!w || !out || !n)
        return oq_err(err, OQ_EINVAL, "oq_weight_qparams: NULL argument");
    *out = NULL;
    *n = 0;
    const char *name = tname(w, "weight");
    if (w->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "weight '%s' is %s, not float", name,
                      oq_dtype_name(w->dtype));
    if (axis >= w->rank)
        return oq_err(err, OQ_EINVAL, "weight '%s': axis %d is out of range for rank %d", name,
                      axis, w->rank);
    size_t outer = 1, channels = 1, inner = w->count;
    if (axis >= 0)
        axis_split(w, axis, &outer, &channels, &inner);
    size_t bytes;
    if (!oq_mul_size(channels ? channels : 1, sizeof(oq_qparams), &bytes))
        return oq_err(err, OQ_ELIMIT, "weight '%s': %zu channels is too many", name, channels);
    float *mins = malloc(channels ? channels * sizeof(float) : 1);
    float *maxs = malloc(channels ? channels * sizeof(float) : 1);
    oq_qparams *p = malloc(bytes);
    oq_status st = OQ_OK;
    if (!mins || !maxs || !p) {
        st = oq_err(err, OQ_ENOMEM, "out of memory for the parameters of weight '%s'", name);
        goto done;
    }
    /* An empty channel has range [0, 0]: scale 1 below. */
    for (size_t c = 0; c < channels; c++)
        mins[c] = maxs[c] = 0.0f;
    const float *x = w->data;
    for (size_t o = 0, i = 0; o < outer; o++) {
        for (size_t c = 0; c < channels; c++) {
            float mn = mins[c], mx = maxs[c];
            for (size_t k = 0; k < inner; k++, i++) {
                float v = x[i];
                if (!isfinite(v)) {
                    st = oq_err(err, OQ_EDATA, "weight '%s': element %zu is %s", name, i,
                                isnan(v) ? "NaN" : "Inf");
                    goto done;
                }
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            mins[c] = mn;
            maxs[c] = mx;
        }
    }
    /* min_range 0: weights are exact values, a small channel keeps its
     * resolution (symmetric uses max |w| per channel inside compute). */
    for (size_t c = 0; c < channels && st == OQ_OK; c++) {
        st = oq_qparams_compute(mins[c], maxs[c], qtype, symmetric, reduce_range, 0.0f, &p[c], err);
        if (st != OQ_OK)
            oq_err_prefix(err, "weight '%s' channel %zu: ", name, c);
    }
done:
    free(mins);
    free(maxs);
    if (st != OQ_OK) {
        free(p);
        return st;
    }
    *out = p;
    *n = channels;
    return OQ_OK;
}

static oq_status check_params(const oq_qparams *p, size_t n, int32_t qmin, int32_t qmax,
                              oq_error *err) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(p[i].scale) || !(p[i].scale > 0))
            return oq_err(err, OQ_EINVAL, "scale %zu is %g; it must be finite and positive", i,
                          (double)p[i].scale);
        if (p[i].zero_point < qmin || p[i].zero_point > qmax)
            return oq_err(err, OQ_EINVAL, "zero point %zu is %d, outside [%d, %d]", i,
                          (int)p[i].zero_point, (int)qmin, (int)qmax);
    }
    return OQ_OK;
}

/* Stores v (already in range) as element i of a qtype buffer. INT4/UINT4
 * pack two per byte, element 2k in the low nibble (ONNX 4-bit layout). */
static void store_q(void *dst, oq_dtype qtype, size_t i, int32_t v) {
    switch (qtype) {
    case OQ_DTYPE_INT8: ((int8_t *)dst)[i] = (int8_t)v; break;
    case OQ_DTYPE_UINT8: ((uint8_t *)dst)[i] = (uint8_t)v; break;
    case OQ_DTYPE_INT16: ((int16_t *)dst)[i] = (int16_t)v; break;
    case OQ_DTYPE_UINT16: ((uint16_t *)dst)[i] = (uint16_t)v; break;
    case OQ_DTYPE_INT32: ((int32_t *)dst)[i] = v; break;
    case OQ_DTYPE_INT4:
    case OQ_DTYPE_UINT4: {
        uint8_t *b = (uint8_t *)dst + i / 2;
        uint8_t nib = (uint8_t)((uint32_t)v & 0xFu);
        *b = (uint8_t)(i % 2 ? (*b & 0x0Fu) | (uint8_t)(nib << 4) : (*b & 0xF0u) | nib);
        break;
    }
    default: break;
    }
}

oq_status oq_quantize_tensor(const oq_tensor *x, int axis, const oq_qparams *params, size_t n,
                             oq_dtype qtype, oq_tensor **out, oq_error *err) {
    if (!x || !params || !out)
        return oq_err(err, OQ_EINVAL, "oq_quantize_tensor: NULL argument");
    *out = NULL;
    const char *name = tname(x, "tensor");
    if (x->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "'%s' is %s, not float", name, oq_dtype_name(x->dtype));
    int32_t qmin = 0, qmax = 0;
    oq_status st = oq_qtype_range(qtype, false, &qmin, &qmax, err);
    if (st != OQ_OK)
        return st;
    size_t outer = 1, channels = 1, inner = x->count;
    if (axis >= 0) {
        if (axis >= x->rank)
            return oq_err(err, OQ_EINVAL, "'%s': axis %d is out of range for rank %d", name, axis,
                          x->rank);
        axis_split(x, axis, &outer, &channels, &inner);
    }
    if (n != channels)
        return oq_err(err, OQ_EINVAL, "'%s': %zu parameter sets for %zu %s", name, n, channels,
                      axis >= 0 ? "channels" : "tensor (per-tensor needs 1)");
    if ((st = check_params(params, n, qmin, qmax, err)) != OQ_OK) {
        oq_err_prefix(err, "'%s': ", name);
        return st;
    }
    oq_tensor *q;
    if ((st = oq_tensor_new(qtype, x->rank, x->dims, 0, &q, err)) != OQ_OK)
        return st;
    const float *src = x->data;
    for (size_t o = 0, i = 0; o < outer; o++) {
        for (size_t c = 0; c < channels; c++) {
            const float s = params[c].scale;
            const double zp = params[c].zero_point;
            for (size_t k = 0; k < inner; k++, i++) {
                float v = src[i];
                if (isnan(v)) {
                    oq_tensor_free(q);
                    return oq_err(err, OQ_EDATA, "'%s': element %zu is NaN", name, i);
                }
                /* QuantizeLinear: saturate(round_half_even(x / scale) + zp);
                 * the division in float as the runtimes do, the sum in double
                 * so a saturating (even infinite) quotient cannot wrap. */
                double r = (double)oq_round_half_even(v / s) + zp;
                int32_t qv = r <= qmin ? qmin : (r >= qmax ? qmax : (int32_t)r);
                store_q(q->data, qtype, i, qv);
            }
        }
    }
    *out = q;
    return OQ_OK;
}

/* Bias scale as the runtimes compute it: a float product. */
static float bias_scale(float input_scale, float weight_scale) {
    return input_scale * weight_scale;
}

/* True when bias magnitude b quantizes within +-INT32_MAX at scale s (> 0). */
static bool bias_fits(double b, float s) {
    return s >= FLT_MIN && nearbyint(b / (double)s) <= (double)INT32_MAX;
}

oq_status oq_quantize_bias(const oq_tensor *bias, float input_scale, oq_qparams *w, size_t n_w,
                           oq_tensor **out, bool *weights_changed, oq_error *err) {
    if (!bias || !w || !out)
        return oq_err(err, OQ_EINVAL, "oq_quantize_bias: NULL argument");
    *out = NULL;
    if (weights_changed)
        *weights_changed = false;
    const char *name = tname(bias, "bias");
    if (bias->dtype != OQ_DTYPE_FLOAT)
        return oq_err(err, OQ_EINVAL, "bias '%s' is %s, not float", name,
                      oq_dtype_name(bias->dtype));
    if (!isfinite(input_scale) || !(input_scale > 0))
        return oq_err(err, OQ_EINVAL, "bias '%s': input scale %g must be finite and positive", name,
                      (double)input_scale);
    if (n_w == 0 || (n_w != 1 && n_w != bias->count))
        return oq_err(err, OQ_EINVAL, "bias '%s' has %zu values but %zu weight scales", name,
                      bias->count, n_w);
    for (size_t g = 0; g < n_w; g++)
        if (!isfinite(w[g].scale) || !(w[g].scale > 0))
            return oq_err(err, OQ_EINVAL, "bias '%s': weight scale %zu is %g", name, g,
                          (double)w[g].scale);
    const float *b = bias->data;
    for (size_t i = 0; i < bias->count; i++)
        if (!isfinite(b[i]))
            return oq_err(err, OQ_EDATA, "bias '%s': element %zu is %s", name, i,
                          isnan(b[i]) ? "NaN" : "Inf");
    /* The guard, per weight scale g (first pass, so every value of a shared
     * per-tensor scale sees the final one): with m = max |bias| over the
     * channels using g, the weight scale becomes the smallest float ws with
     * input_scale*ws (float product) >= FLT_MIN and round(m / that) <=
     * INT32_MAX; a scale that already satisfies this is left alone. It
     * starts from m / (input_scale * INT32_MAX) rounded up and steps one
     * float at a time (a step or two in practice) to the smallest such ws. */
    for (size_t g = 0; g < n_w; g++) {
        double m = 0;
        for (size_t i = g; i < bias->count; i += (n_w == 1 ? 1 : n_w))
            m = fmax(m, fabs((double)b[i]));
        if (bias_fits(m, bias_scale(input_scale, w[g].scale)))
            continue;
        double need = fmax(m / ((double)input_scale * (double)INT32_MAX),
                           (double)FLT_MIN / (double)input_scale);
        float ws = (float)need;
        if ((double)ws < need)
            ws = nextafterf(ws, INFINITY);
        for (int tries = 0;
             isfinite(ws) && !bias_fits(m, bias_scale(input_scale, ws)) && tries < 64; tries++)
            ws = nextafterf(ws, INFINITY);
        /* The float product can round up: a float or two below may fit too.
         * Fitting is monotone in ws, so stepping down while it still fits
         * finds the smallest. */
        for (int tries = 0; isfinite(ws) && tries < 64; tries++) {
            float lower = nextafterf(ws, 0.0f);
            if (!bias_fits(m, bias_scale(input_scale, lower)))
                break;
            ws = lower;
        }
        if (!isfinite(ws) || !bias_fits(m, bias_scale(input_scale, ws)))
            return oq_err(err, OQ_EDATA,
                          "bias '%s': value %g cannot be quantized to int32 at input scale %g "
                          "with any float weight scale",
                          name, m, (double)input_scale);
        w[g].scale = ws;
        if (weights_changed)
            *weights_changed = true;
    }
    oq_tensor *q;
    oq_status st = oq_tensor_new(OQ_DTYPE_INT32, bias->rank, bias->dims, 0, &q, err);
    if (st != OQ_OK)
        return st;
    int32_t *dst = q->data;
    for (size_t i = 0; i < bias->count; i++) {
        float s = bias_scale(input_scale, w[n_w == 1 ? 0 : i].scale);
        /* Round half to even in double (the quotient may need more than a
         * float's 24 bits); the guard above keeps it within int32. */
        double r = nearbyint((double)b[i] / (double)s);
        dst[i] = r >= (double)INT32_MAX ? INT32_MAX
                                        : (r <= -(double)INT32_MAX ? -INT32_MAX : (int32_t)r);
    }
    *out = q;
    return OQ_OK;
}
