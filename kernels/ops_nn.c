/* ops_nn.c: the nn operator family table (see op.h for the contract) and the
 * helpers its files share: sliding-window geometry for Conv, ConvTranspose
 * and the pools, and float copies for dtypes computed through float.
 * Kernels live in nn_conv.c, nn_gemm.c, nn_pool.c and nn_norm.c. */
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "nn.h"

/* Last opset version checked against the specs: none of these operators has
 * a version newer than 22 up to opset 25. */
#define NN_UNTIL 25

#define NN_ENTRY_R(type, since, until, name, release)                                        \
    {"", type, since, until, oq_nn_##name##_prepare, release, oq_nn_##name##_infer,          \
     oq_nn_##name##_run}
#define NN_ENTRY(type, since, until, name) NN_ENTRY_R(type, since, until, name, oq_nn_release)

static const oq_op ops[] = {
    NN_ENTRY_R("Conv", 1, NN_UNTIL, conv, oq_nn_conv_release),
    NN_ENTRY_R("ConvTranspose", 1, NN_UNTIL, convtranspose, oq_nn_conv_release),
    /* Gemm-1..5 take a `broadcast` flag and a legacy C; 6+ share one entry
     * (C optional from 11, branched on ctx->opset). */
    NN_ENTRY_R("Gemm", 6, NN_UNTIL, gemm, oq_nn_gemm_release),
    NN_ENTRY_R("MatMul", 1, NN_UNTIL, matmul, oq_nn_matmul_release),
    NN_ENTRY("Einsum", 12, NN_UNTIL, einsum),
    /* LSTM-1 had output_sequence; 7 removed it, 14 added layout. */
    NN_ENTRY("LSTM", 7, NN_UNTIL, lstm),
    NN_ENTRY("MaxPool", 1, NN_UNTIL, maxpool),
    NN_ENTRY("AveragePool", 1, NN_UNTIL, avgpool),
    NN_ENTRY("GlobalAveragePool", 1, NN_UNTIL, globalavgpool),
    NN_ENTRY("GlobalMaxPool", 1, NN_UNTIL, globalmaxpool),
    /* BatchNormalization-1 had consumed_inputs; 6..15 differ in is_test,
     * spatial and training_mode, handled by opset in nn_norm.c. */
    NN_ENTRY("BatchNormalization", 6, NN_UNTIL, batchnorm),
    NN_ENTRY("InstanceNormalization", 6, NN_UNTIL, instancenorm),
    NN_ENTRY("LayerNormalization", 17, NN_UNTIL, layernorm),
};

const oq_op_table oq_ops_nn = {ops, sizeof ops / sizeof ops[0]};

void oq_nn_release(void *state) { free(state); }

/* ---- window geometry ---------------------------------------------------- */

static oq_status read_ints(const oq_node_ctx *ctx, const char *name, size_t max, int64_t min,
                           int64_t *dst, size_t *n, oq_error *err) {
    const int64_t *v;
    size_t cnt;
    oq_status st = oq_node_attr_ints(ctx->node, name, &v, &cnt, err);
    if (st != OQ_OK)
        return st;
    if (cnt > max)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: attribute %s has %zu values (at most %zu)",
                      ctx->label, name, cnt, max);
    for (size_t i = 0; i < cnt; i++) {
        if (v[i] < min)
            return oq_err(err, OQ_EINVAL, "%s: %s[%zu] = %lld (must be >= %lld)", ctx->label,
                          name, i, (long long)v[i], (long long)min);
        dst[i] = v[i];
    }
    *n = cnt;
    return OQ_OK;
}

oq_status oq_nn_window_parse(const oq_node_ctx *ctx, oq_nn_window *w, oq_error *err) {
    memset(w, 0, sizeof *w);
    char ap[32];
    oq_status st = oq_node_attr_string(ctx->node, "auto_pad", "NOTSET", ap, sizeof ap, err);
    if (st != OQ_OK)
        return st;
    if (strcmp(ap, "NOTSET") == 0 || ap[0] == '\0')
        w->auto_pad = OQ_NN_NOTSET;
    else if (strcmp(ap, "SAME_UPPER") == 0)
        w->auto_pad = OQ_NN_SAME_UPPER;
    else if (strcmp(ap, "SAME_LOWER") == 0)
        w->auto_pad = OQ_NN_SAME_LOWER;
    else if (strcmp(ap, "VALID") == 0)
        w->auto_pad = OQ_NN_VALID;
    else
        return oq_err(err, OQ_EINVAL, "%s: unknown auto_pad '%s'", ctx->label, ap);
    if ((st = read_ints(ctx, "kernel_shape", OQ_NN_MAX_SP, 1, w->kernel, &w->n_kernel, err)) ||
        (st = read_ints(ctx, "strides", OQ_NN_MAX_SP, 1, w->strides, &w->n_strides, err)) ||
        (st = read_ints(ctx, "dilations", OQ_NN_MAX_SP, 1, w->dilations, &w->n_dilations, err)) ||
        (st = read_ints(ctx, "pads", 2 * OQ_NN_MAX_SP, 0, w->pads, &w->n_pads, err)))
        return st;
    return OQ_OK;
}

oq_status oq_nn_window_geom(const oq_node_ctx *ctx, const oq_nn_window *w, int nsp,
                            const int64_t *in, const int64_t *k, bool ceil_mode, oq_nn_geom *g,
                            oq_error *err) {
    size_t n = (size_t)nsp;
    if (nsp < 1 || nsp > OQ_NN_MAX_SP)
        return oq_err(err, OQ_EINVAL, "%s: %d spatial axes (1..%d supported)", ctx->label, nsp,
                      OQ_NN_MAX_SP);
    if ((w->n_kernel && w->n_kernel != n) || (w->n_strides && w->n_strides != n) ||
        (w->n_dilations && w->n_dilations != n) || (w->n_pads && w->n_pads != 2 * n))
        return oq_err(err, OQ_EINVAL,
                      "%s: kernel_shape/strides/dilations/pads lengths (%zu/%zu/%zu/%zu) do not "
                      "match %d spatial axes",
                      ctx->label, w->n_kernel, w->n_strides, w->n_dilations, w->n_pads, nsp);
    g->nsp = nsp;
    for (int i = 0; i < nsp; i++) {
        int64_t s = w->n_strides ? w->strides[i] : 1;
        int64_t d = w->n_dilations ? w->dilations[i] : 1;
        int64_t dk, num, out, pb = 0, pe = 0;
        if (k[i] < 1)
            return oq_err(err, OQ_EINVAL, "%s: kernel dim %d is %lld", ctx->label, i,
                          (long long)k[i]);
        if (!oq_mul_i64(k[i] - 1, d, &dk) || !oq_add_i64(dk, 1, &dk))
            return oq_err(err, OQ_EINVAL, "%s: dilated kernel overflows on axis %d", ctx->label,
                          i);
        switch (w->auto_pad) {
        case OQ_NN_SAME_UPPER:
        case OQ_NN_SAME_LOWER: {
            /* Conv-11/pool: output = ceil(in / stride), padding split evenly,
             * the odd cell at the end (SAME_UPPER) or the start (SAME_LOWER). */
            out = in[i] / s + (in[i] % s != 0);
            int64_t total;
            if (!oq_add_i64((out > 0 ? out - 1 : 0) * s, dk, &total))
                return oq_err(err, OQ_EINVAL, "%s: padding overflows on axis %d", ctx->label, i);
            total -= in[i];
            if (total < 0)
                total = 0;
            if (w->auto_pad == OQ_NN_SAME_UPPER) {
                pb = total / 2;
                pe = total - pb;
            } else {
                pe = total / 2;
                pb = total - pe;
            }
            break;
        }
        case OQ_NN_VALID:
        case OQ_NN_NOTSET:
            if (w->auto_pad == OQ_NN_NOTSET && w->n_pads) {
                pb = w->pads[i];
                pe = w->pads[i + nsp];
            }
            if (!oq_add_i64(in[i], pb, &num) || !oq_add_i64(num, pe, &num))
                return oq_err(err, OQ_EINVAL, "%s: padded size overflows on axis %d", ctx->label,
                              i);
            num -= dk;
            if (num < 0)
                return oq_err(err, OQ_EINVAL,
                              "%s: window %lld is larger than the padded input %lld on axis %d",
                              ctx->label, (long long)dk, (long long)(num + dk), i);
            out = num / s + 1;
            if (ceil_mode && num % s != 0) {
                out++;
                /* Pool-10+ ceil mode (as ONNX's reference and ORT): a last
                 * window starting beyond the input and left pad is dropped. */
                if ((out - 1) * s >= in[i] + pb)
                    out--;
            }
            break;
        default:
            return oq_err(err, OQ_EINTERNAL, "%s: bad auto_pad", ctx->label);
        }
        g->in[i] = in[i];
        g->out[i] = out;
        g->k[i] = k[i];
        g->s[i] = s;
        g->d[i] = d;
        g->pb[i] = pb;
        g->pe[i] = pe;
    }
    return OQ_OK;
}

size_t oq_nn_count(const int64_t *dims, int n) {
    size_t c = 1;
    for (int i = 0; i < n; i++)
        c *= (size_t)dims[i];
    return c;
}

/* ---- float copies --------------------------------------------------------- */

bool oq_nn_float_via(oq_dtype dt) {
    return dt == OQ_DTYPE_FLOAT16 || dt == OQ_DTYPE_BFLOAT16 || dt == OQ_DTYPE_INT8 ||
           dt == OQ_DTYPE_UINT8;
}

void oq_nn_to_float(const oq_tensor *t, float *dst) {
    size_t n = t->count;
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT:
        memcpy(dst, t->data, n * sizeof *dst);
        break;
    case OQ_DTYPE_FLOAT16: {
        const uint16_t *s = t->data;
        for (size_t i = 0; i < n; i++)
            dst[i] = oq_half_to_float(s[i]);
        break;
    }
    case OQ_DTYPE_BFLOAT16: {
        const uint16_t *s = t->data;
        for (size_t i = 0; i < n; i++)
            dst[i] = oq_bf16_to_float(s[i]);
        break;
    }
    case OQ_DTYPE_INT8: {
        const int8_t *s = t->data;
        for (size_t i = 0; i < n; i++)
            dst[i] = s[i];
        break;
    }
    case OQ_DTYPE_UINT8: {
        const uint8_t *s = t->data;
        for (size_t i = 0; i < n; i++)
            dst[i] = s[i];
        break;
    }
    default:
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)oq_tensor_get_f64(t, i);
        break;
    }
}

void oq_nn_from_float(const float *src, oq_tensor *t) {
    size_t n = t->count;
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT:
        memcpy(t->data, src, n * sizeof *src);
        break;
    case OQ_DTYPE_FLOAT16: {
        uint16_t *d = t->data;
        for (size_t i = 0; i < n; i++)
            d[i] = oq_float_to_half(src[i]);
        break;
    }
    case OQ_DTYPE_BFLOAT16: {
        uint16_t *d = t->data;
        for (size_t i = 0; i < n; i++)
            d[i] = oq_float_to_bf16(src[i]);
        break;
    }
    /* int8/uint8 go through float only in max-like ops, whose results are
     * input values: the casts are exact. */
    case OQ_DTYPE_INT8: {
        int8_t *d = t->data;
        for (size_t i = 0; i < n; i++)
            d[i] = (int8_t)src[i];
        break;
    }
    case OQ_DTYPE_UINT8: {
        uint8_t *d = t->data;
        for (size_t i = 0; i < n; i++)
            d[i] = (uint8_t)src[i];
        break;
    }
    default:
        break;
    }
}

float *oq_nn_alloc_floats(size_t n) {
    size_t bytes;
    if (!oq_mul_size(n ? n : 1, sizeof(float), &bytes))
        return NULL;
    return malloc(bytes);
}
