/* kutil.c: shape and element helpers shared by the op families. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checked.h"
#include "op.h"

oq_status oq_out_shape(oq_tensor *t, oq_dtype dtype, int rank, const int64_t *dims,
                       oq_error *err) {
    if (rank < 0 || rank > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "output rank %d exceeds %d", rank, OQ_MAX_RANK);
    for (int i = 0; i < rank; i++)
        if (dims[i] < 0)
            return oq_err(err, OQ_EINVAL, "output dim %d is negative (%lld)", i, (long long)dims[i]);
    t->dtype = dtype;
    t->rank = rank;
    if (rank)
        memmove(t->dims, dims, (size_t)rank * sizeof *dims);
    return OQ_OK;
}

oq_status oq_broadcast_shape(const oq_node_ctx *ctx, const oq_tensor *const *shapes, int n,
                             int *rank, int64_t *dims, oq_error *err) {
    int r = 0;
    for (int i = 0; i < n; i++)
        if (shapes[i] && shapes[i]->rank > r)
            r = shapes[i]->rank;
    for (int d = 0; d < r; d++)
        dims[d] = 1;
    for (int i = 0; i < n; i++) {
        const oq_tensor *t = shapes[i];
        if (!t)
            continue;
        int off = r - t->rank;
        for (int d = 0; d < t->rank; d++) {
            int64_t a = dims[off + d], b = t->dims[d];
            if (a == b || b == 1)
                continue;
            if (a == 1) {
                dims[off + d] = b;
                continue;
            }
            return oq_err(err, OQ_EINVAL, "%s: input %d dim %d (%lld) does not broadcast with %lld",
                          ctx->label, i, d, (long long)b, (long long)a);
        }
    }
    *rank = r;
    return OQ_OK;
}

void oq_broadcast_strides(const oq_tensor *t, int rank, const int64_t *dims, int64_t *strides) {
    int off = rank - t->rank;
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int td = d - off;
        if (td < 0 || t->dims[td] == 1) {
            strides[d] = 0;
        } else {
            strides[d] = s;
        }
        if (td >= 0)
            s *= t->dims[td];
    }
    (void)dims;
}

oq_status oq_norm_axis(const oq_node_ctx *ctx, int64_t axis, int rank, int *out, oq_error *err) {
    int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= (rank > 0 ? rank : 1))
        return oq_err(err, OQ_EINVAL, "%s: axis %lld is out of range for rank %d", ctx->label,
                      (long long)axis, rank);
    *out = (int)a;
    return OQ_OK;
}

int64_t oq_tensor_get_i64(const oq_tensor *t, size_t i) {
    switch (t->dtype) {
    case OQ_DTYPE_INT64: return ((const int64_t *)t->data)[i];
    case OQ_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case OQ_DTYPE_INT16: return ((const int16_t *)t->data)[i];
    case OQ_DTYPE_INT8: return ((const int8_t *)t->data)[i];
    case OQ_DTYPE_UINT8:
    case OQ_DTYPE_BOOL: return ((const uint8_t *)t->data)[i];
    case OQ_DTYPE_UINT16: return ((const uint16_t *)t->data)[i];
    case OQ_DTYPE_UINT32: return ((const uint32_t *)t->data)[i];
    case OQ_DTYPE_UINT64: return (int64_t)((const uint64_t *)t->data)[i];
    default: return (int64_t)oq_tensor_get_f64(t, i);
    }
}

double oq_tensor_get_f64(const oq_tensor *t, size_t i) {
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT: return ((const float *)t->data)[i];
    case OQ_DTYPE_DOUBLE: return ((const double *)t->data)[i];
    case OQ_DTYPE_FLOAT16: return oq_half_to_float(((const uint16_t *)t->data)[i]);
    case OQ_DTYPE_BFLOAT16: return oq_bf16_to_float(((const uint16_t *)t->data)[i]);
    case OQ_DTYPE_UINT64: return (double)((const uint64_t *)t->data)[i];
    default: return (double)oq_tensor_get_i64(t, i);
    }
}

float oq_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t oq_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = half_m * 2^-24 */
        uint32_t half_m = m >> shift;
        /* round to nearest even on the bits shifted out */
        uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_m & 1)))
            half_m++;
        return (uint16_t)(sign | half_m);
    }
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1) - ((uint32_t)(127 - 15) << 23);
    return (uint16_t)(sign | (r >> 13));
}

float oq_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t oq_float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1); /* round to nearest even */
    return (uint16_t)(x >> 16);
}
