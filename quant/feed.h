/* feed.h: data sets (tensors whose first axis is the sample axis) fed to a
 * plan's inputs row by row, for calibration and for the report. */
#ifndef OQ_FEED_H
#define OQ_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "exec.h"
#include "status.h"
#include "tensor.h"

#define OQ_FEED_MAX_INPUTS 64

typedef struct {
    const oq_tensor *src[OQ_FEED_MAX_INPUTS]; /* per plan input, borrowed */
    int n_inputs;
    int64_t rows; /* samples every tensor holds */
} oq_feed;

/* Maps data tensors to the plan's inputs: tensors named like an input feed
 * it, the rest feed the remaining inputs in order. Checks the count, a
 * sample axis, the declared dtype and an equal number of samples; `what`
 * ("calibration", "evaluation") names the data set in errors. */
oq_status oq_feed_map(oq_feed *f, oq_plan *plan, const oq_tensor *const *data, size_t n,
                      const char *what, oq_error *err);
/* New tensors borrowing rows [start, start+b) of every input. */
oq_status oq_feed_rows(const oq_feed *f, int64_t start, int64_t b, oq_tensor **views, oq_error *err);
/* Frees the views and sets them to NULL. */
void oq_feed_views_free(oq_tensor **views, int n);

#endif
