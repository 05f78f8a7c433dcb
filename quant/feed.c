/* feed.c: mapping data sets onto plan inputs and slicing them into rows. */
#include "feed.h"

#include <stdbool.h>
#include <string.h>

oq_status oq_feed_map(oq_feed *f, oq_plan *plan, const oq_tensor *const *data, size_t n,
                      const char *what, oq_error *err) {
    memset(f, 0, sizeof *f);
    f->n_inputs = oq_plan_input_count(plan);
    if (f->n_inputs > OQ_FEED_MAX_INPUTS)
        return oq_err(err, OQ_EUNSUPPORTED, "model has %d inputs; at most %d are supported", f->n_inputs,
                      OQ_FEED_MAX_INPUTS);
    if (n != (size_t)f->n_inputs)
        return oq_err(err, OQ_EINVAL, "%s data has %zu tensors, the model has %d inputs", what, n, f->n_inputs);
    bool used[OQ_FEED_MAX_INPUTS] = {false};
    for (int i = 0; i < f->n_inputs; i++)
        for (size_t k = 0; k < n; k++)
            if (!used[k] && data[k]->name && strcmp(data[k]->name, oq_plan_input_name(plan, i)) == 0) {
                f->src[i] = data[k];
                used[k] = true;
                break;
            }
    for (int i = 0; i < f->n_inputs; i++)
        for (size_t k = 0; !f->src[i] && k < n; k++)
            if (!used[k]) {
                f->src[i] = data[k];
                used[k] = true;
            }
    f->rows = -1;
    for (int i = 0; i < f->n_inputs; i++) {
        const oq_tensor *t = f->src[i];
        const char *in = oq_plan_input_name(plan, i);
        if (t->rank < 1)
            return oq_err(err, OQ_EINVAL, "%s tensor '%s' for input '%s' needs a sample axis", what,
                          t->name ? t->name : "?", in);
        int want = oq_plan_input_dtype(plan, i);
        if (want && (int)t->dtype != want)
            return oq_err(err, OQ_EINVAL, "%s tensor '%s' is %s, input '%s' takes %s", what,
                          t->name ? t->name : "?", oq_dtype_name(t->dtype), in, oq_dtype_name(want));
        if (f->rows >= 0 && t->dims[0] != f->rows)
            return oq_err(err, OQ_EINVAL, "%s tensors disagree on the number of samples (%lld vs %lld)", what,
                          (long long)t->dims[0], (long long)f->rows);
        f->rows = t->dims[0];
    }
    return OQ_OK;
}

oq_status oq_feed_rows(const oq_feed *f, int64_t start, int64_t b, oq_tensor **views, oq_error *err) {
    for (int i = 0; i < f->n_inputs; i++) {
        const oq_tensor *t = f->src[i];
        int64_t dims[OQ_MAX_RANK];
        memcpy(dims, t->dims, sizeof dims);
        dims[0] = b;
        size_t row = t->nbytes / (size_t)t->dims[0];
        oq_status st = oq_tensor_wrap(t->dtype, t->rank, dims, (uint8_t *)t->data + (size_t)start * row,
                                      (size_t)b * row, &views[i], err);
        if (st != OQ_OK) {
            oq_feed_views_free(views, i);
            return st;
        }
    }
    return OQ_OK;
}

void oq_feed_views_free(oq_tensor **views, int n) {
    for (int i = 0; i < n; i++) {
        oq_tensor_free(views[i]);
        views[i] = NULL;
    }
}
