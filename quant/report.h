/* report.h: what quantization cost, measured by running the FP32 and the
 * quantized model on the same rows: per model output (MSE, max abs error,
 * cosine similarity, SQNR, top-1 agreement for class scores, accuracy with
 * labels) and per layer (SQNR of every float tensor both models compute). */
#ifndef OQ_REPORT_H
#define OQ_REPORT_H

#include <jansson.h>

#include "config.h"
#include "exec.h"
#include "model.h"
#include "quantize.h"
#include "status.h"

typedef struct {
    oq_plan *fp32_plan;            /* the prepared FP32 model's plan */
    oq_model *int8_model;          /* the rewritten model */
    const oq_quant_config *cfg;
    const oq_quant_inputs *in;     /* eval rows, else calib rows; labels */
} oq_report_inputs;

/* Per-layer statistics use at most this many samples (one sample's
 * activations are held at a time). */
#define OQ_REPORT_LAYER_SAMPLES 64
/* Rows per run during the per-layer pass (models with a free batch dim). */
#define OQ_REPORT_LAYER_BATCH 4

/* Runs both models and returns a new JSON object with "evaluation". */
oq_status oq_report_evaluate(const oq_report_inputs *ri, json_t **out, oq_error *err);

/* Streaming comparison of two float arrays (exposed for tests). */
typedef struct {
    double sum_sq_err, sum_sq_ref, sum_sq_got, dot, max_abs;
    size_t count;
} oq_error_acc;

void oq_error_acc_add(oq_error_acc *a, const float *ref, const float *got, size_t n);
double oq_error_acc_mse(const oq_error_acc *a);
double oq_error_acc_cosine(const oq_error_acc *a);
/* 10 log10(sum ref^2 / sum err^2); +inf (reported as null) when exact. */
double oq_error_acc_sqnr_db(const oq_error_acc *a);

#endif
