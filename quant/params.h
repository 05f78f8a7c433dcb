/* params.h: scale/zero-point arithmetic and tensor quantization, exactly as
 * ONNX QuantizeLinear defines it: q = saturate(round_half_even(x / scale) +
 * zero_point). */
#ifndef OQ_PARAMS_H
#define OQ_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef struct {
    float scale;
    int32_t zero_point;
} oq_qparams;

/* Integer range of a quantized type (INT8, UINT8, INT16, UINT16, INT4,
 * UINT4, INT32); reduce_range drops one bit (e.g. int8 -> [-64, 63]). */
oq_status oq_qtype_range(oq_dtype qtype, bool reduce_range, int32_t *qmin, int32_t *qmax,
                         oq_error *err);

/* Parameters for real range [lo, hi]: the range is first widened to hold 0
 * (so zero is exact) and to at least min_range. Symmetric: scale =
 * 2*max(|lo|,|hi|) / (qmax - qmin), zero point the middle of the integer
 * range (0 for signed types). Asymmetric: scale = (hi - lo) / (qmax - qmin),
 * zero point = round_half_even(qmin - lo / scale) clamped. */
oq_status oq_qparams_compute(float lo, float hi, oq_dtype qtype, bool symmetric, bool reduce_range,
                             float min_range, oq_qparams *out, oq_error *err);

/* Parameters for a weight tensor: per-tensor (axis < 0) or one per index of
 * axis (*n set to dims[axis]). *out is malloc'd, freed by the caller. */
oq_status oq_weight_qparams(const oq_tensor *w, int axis, oq_dtype qtype, bool symmetric,
                            bool reduce_range, oq_qparams **out, size_t *n, oq_error *err);

/* Quantizes float tensor x with params (1, or dims[axis] when axis >= 0)
 * into a new tensor of qtype (INT4/UINT4 packed two per byte, low nibble
 * first). */
oq_status oq_quantize_tensor(const oq_tensor *x, int axis, const oq_qparams *params, size_t n,
                             oq_dtype qtype, oq_tensor **out, oq_error *err);

/* Quantizes a bias to int32 with scale input_scale * w[i].scale (per output
 * channel, or one when n_w == 1), zero point 0. When a bias value would not
 * fit int32 at that scale, the weight scale of its channel is raised until
 * it does (w[i].scale is updated: requantize the weights with it). */
oq_status oq_quantize_bias(const oq_tensor *bias, float input_scale, oq_qparams *w, size_t n_w,
                           oq_tensor **out, bool *weights_changed, oq_error *err);

/* Round half to even, the rounding of QuantizeLinear. */
float oq_round_half_even(float x);

#endif
