/* config.h: what the user asks of a quantization run. One struct, filled
 * with defaults by oq_quant_config_default and from JSON (the HTTP API's
 * `config` field, the CLI's --config) by oq_quant_config_from_json. */
#ifndef OQ_QUANT_CONFIG_H
#define OQ_QUANT_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dtype.h"
#include "status.h"

typedef enum {
    OQ_QMODE_STATIC = 0,  /* weights and activations int8, activations calibrated */
    OQ_QMODE_DYNAMIC,     /* weights offline, activations quantized at run time */
    OQ_QMODE_WEIGHT_ONLY, /* int8 weights + DequantizeLinear, float activations */
} oq_qmode;

typedef enum {
    OQ_CALIB_MINMAX = 0,
    OQ_CALIB_MOVING_MINMAX, /* exponential moving average of per-sample min/max */
    OQ_CALIB_PERCENTILE,    /* clip at a percentile of |x| (symmetric) or of each tail */
    OQ_CALIB_ENTROPY,       /* KL-divergence threshold search (TensorRT style) */
    OQ_CALIB_MSE,           /* clip range minimising the quantization MSE */
} oq_calib_method;

/* A per-tensor override: the first whose pattern (exact name or fnmatch
 * glob) matches a tensor applies. Unset fields keep the global setting. */
typedef struct {
    char *pattern;
    oq_dtype dtype;   /* 0 = global activation type */
    int symmetric;    /* -1 = global, 0 = asymmetric, 1 = symmetric */
    bool has_range;   /* fixed range instead of calibration */
    float lo, hi;
} oq_tensor_override;

typedef struct {
    oq_qmode mode;
    oq_calib_method method;
    double percentile;          /* for PERCENTILE, in (0, 100]; default 99.999 */
    double moving_average;      /* for MOVING_MINMAX, in (0, 1]; default 0.01 */
    int num_bins;               /* histogram bins; default 2048 */
    int max_samples;            /* calibration samples used; 0 = all */
    oq_dtype activation_type;   /* UINT8 (default: the u8s8 kernels ORT runs on x86), INT8, INT16, UINT16 */
    oq_dtype weight_type;       /* INT8 (default), UINT8, INT16, INT4 */
    bool activation_symmetric;  /* default false */
    bool weight_symmetric;      /* default true */
    bool per_channel;           /* default true */
    bool reduce_range;          /* 7-bit weights for old x86 VNNI-less kernels; default false */
    bool dedicated_qdq_pairs;   /* a Q->DQ pair per consumer (TensorRT); default false */
    float min_real_range;       /* smallest hi-lo of a calibrated range; default 1e-4 */
    char **op_types;            /* op types to quantize; NULL/0 = the default set */
    size_t n_op_types;
    char **exclude_nodes;       /* node names or fnmatch patterns never quantized */
    size_t n_exclude_nodes;
    char **exclude_op_types;
    size_t n_exclude_op_types;
    oq_tensor_override *overrides;
    size_t n_overrides;
    int threads;                /* executor threads; 0 = all cores */
} oq_quant_config;

oq_quant_config oq_quant_config_default(void);
/* Fills *out (defaults first) from a JSON object. Unknown keys, wrong types
 * and out-of-range values are EINVAL naming the key. On error *out holds
 * nothing to free. Keys: mode, method, percentile, moving_average, num_bins,
 * max_samples, activation_type, weight_type, activation_symmetric,
 * weight_symmetric, per_channel, reduce_range, dedicated_qdq_pairs,
 * min_real_range, op_types, exclude_nodes, exclude_op_types, overrides
 * ([{tensor, dtype, symmetric, range: [lo, hi]}]), threads. */
oq_status oq_quant_config_from_json(const json_t *j, oq_quant_config *out, oq_error *err);
/* The config as JSON (for the report). */
json_t *oq_quant_config_to_json(const oq_quant_config *c);
void oq_quant_config_free(oq_quant_config *c); /* frees the arrays, not c */

const char *oq_qmode_name(oq_qmode m);
const char *oq_calib_method_name(oq_calib_method m);

#endif
