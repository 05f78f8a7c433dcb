/* quantize.h: the whole quantization pipeline behind `onnxq quantize` and
 * the daemon's jobs: prepare -> calibrate (streaming) -> rewrite -> evaluate
 * FP32 vs INT8 -> report. */
#ifndef OQ_QUANTIZE_H
#define OQ_QUANTIZE_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "model.h"
#include "status.h"
#include "tensor.h"

/* Progress: stage ("prepare", "calibrate", "rewrite", "evaluate"), units
 * done of total (samples for calibrate/evaluate). Called from the
 * quantizing thread. */
typedef void (*oq_progress_fn)(void *ctx, const char *stage, size_t done, size_t total);

typedef struct {
    /* Calibration data: tensors whose first axis is the sample axis, one per
     * model input; tensors named like an input feed it, the rest feed the
     * remaining inputs in order. Needed in static mode; optional otherwise
     * (then the report is measured on it if no eval set is given). */
    const oq_tensor *const *calib;
    size_t n_calib;
    /* Evaluation data (same layout), optional. */
    const oq_tensor *const *eval;
    size_t n_eval;
    const oq_tensor *labels;   /* integer class labels [N] for the eval (or calib) rows */
    size_t max_eval_samples;   /* 0 = all */
    oq_progress_fn progress;
    void *progress_ctx;
    const volatile int *abort_flag; /* set to stop promptly (ECANCELLED) */
} oq_quant_inputs;

/* Quantizes m (left unchanged) into *out (a new model the caller frees) and
 * fills *report (a new JSON object; see README "Report") when report is
 * non-NULL. Errors name the input, tensor or node at fault. */
oq_status oq_quantize(oq_model *m, const oq_quant_config *cfg, const oq_quant_inputs *in,
                      oq_model **out, json_t **report, oq_error *err);

#endif
