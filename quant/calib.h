/* calib.h: streaming calibration statistics. Each tracked tensor keeps
 * min/max and, for the histogram methods, a histogram whose range grows (by
 * merging bins) when new extremes appear, so memory is fixed per tensor
 * whatever the number of samples. */
#ifndef OQ_CALIB_H
#define OQ_CALIB_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "status.h"
#include "tensor.h"

typedef struct oq_stats oq_stats;

/* Statistics for one tensor under cfg's method and parameters. */
oq_status oq_stats_new(const oq_quant_config *cfg, oq_stats **out, oq_error *err);
void oq_stats_free(oq_stats *s);
/* Adds one sample's values (float32). NaN or Inf is EDATA. */
oq_status oq_stats_update(oq_stats *s, const float *data, size_t n, oq_error *err);
/* Samples (update calls) and values seen. */
size_t oq_stats_samples(const oq_stats *s);
/* Observed extremes. */
void oq_stats_minmax(const oq_stats *s, float *min, float *max);
/* The real range [lo, hi] to quantize to qtype under the method: minmax
 * returns the extremes; the others clip. symmetric asks for a range centred
 * on zero. ENOTFOUND if no sample was seen. */
oq_status oq_stats_range(const oq_stats *s, oq_dtype qtype, bool symmetric, float *lo, float *hi,
                         oq_error *err);

/* A set of tracked tensors, fed by the executor's observer. */
typedef struct oq_calibrator oq_calibrator;

/* Tracks exactly the named tensors (others are ignored cheaply). */
oq_status oq_calibrator_new(const oq_quant_config *cfg, const char *const *names, size_t n,
                            oq_calibrator **out, oq_error *err);
void oq_calibrator_free(oq_calibrator *c);
/* An oq_observer_fn (kernels/exec.h): ctx is the calibrator. Float tensors
 * update their stats; tracked non-float tensors are EINVAL. */
oq_status oq_calibrator_observe(void *ctx, const char *name, const oq_tensor *t, oq_error *err);
oq_status oq_calibrator_range(const oq_calibrator *c, const char *name, oq_dtype qtype,
                              bool symmetric, float *lo, float *hi, oq_error *err);
const oq_stats *oq_calibrator_stats(const oq_calibrator *c, const char *name); /* NULL if untracked */
/* Bytes held by all statistics (constant after creation: for memory tests). */
size_t oq_calibrator_bytes(const oq_calibrator *c);

#endif
