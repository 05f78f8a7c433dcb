/* rewrite.h: inserts QuantizeLinear/DequantizeLinear so that ONNX Runtime,
 * TensorRT and OpenVINO fuse the quantized ops into integer kernels
 * (QLinearConv, QGemm, QLinearMatMul, QLinearAdd, ...), and the dynamic and
 * weight-only variants. Runs on a model prepared by prepare.h. */
#ifndef OQ_REWRITE_H
#define OQ_REWRITE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "model.h"
#include "status.h"

/* The calibrated range of an activation tensor (static mode). */
typedef oq_status (*oq_act_range_fn)(void *ctx, const char *tensor, float *lo, float *hi,
                                     oq_error *err);

typedef struct {
    char *node;     /* node name (or "#index" when unnamed) */
    char *op_type;
    bool quantized;
    char *reason;   /* why not, or how (e.g. "per-channel int8 weights") */
} oq_node_decision;

typedef struct {
    oq_node_decision *nodes; /* every node of the main graph before the rewrite */
    size_t n_nodes;
    int n_quantized;
    int n_excluded;
    int n_quantize_linear;   /* QuantizeLinear nodes added */
    int n_dequantize_linear; /* DequantizeLinear nodes added */
} oq_rewrite_result;

void oq_rewrite_result_free(oq_rewrite_result *r);
json_t *oq_rewrite_result_to_json(const oq_rewrite_result *r);

/* Names of the activation tensors the static rewrite needs ranges for
 * (malloc'd array of malloc'd strings; free with oq_strings_free). */
oq_status oq_rewrite_activation_tensors(oq_model *m, const oq_quant_config *cfg, char ***names,
                                        size_t *n, oq_error *err);
void oq_strings_free(char **s, size_t n);

oq_status oq_rewrite_static(oq_model *m, const oq_quant_config *cfg, oq_act_range_fn ranges,
                            void *ctx, oq_rewrite_result *res, oq_error *err);
oq_status oq_rewrite_dynamic(oq_model *m, const oq_quant_config *cfg, oq_rewrite_result *res,
                             oq_error *err);
oq_status oq_rewrite_weight_only(oq_model *m, const oq_quant_config *cfg, oq_rewrite_result *res,
                                 oq_error *err);

#endif
