/* report.c: evaluation of a quantized model against its FP32 original.
 * Memory is bounded: metrics stream per batch, and the per-layer pass holds
 * one batch of FP32 activations at a time. */
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "feed.h"
#include "strmap.h"

void oq_error_acc_add(oq_error_acc *a, const float *ref, const float *got, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double r = ref[i], g = got[i], e = g - r;
        a->sum_sq_err += e * e;
        a->sum_sq_ref += r * r;
        a->sum_sq_got += g * g;
        a->dot += r * g;
        if (fabs(e) > a->max_abs)
            a->max_abs = fabs(e);
    }
    a->count += n;
}

double oq_error_acc_mse(const oq_error_acc *a) { return a->count ? a->sum_sq_err / (double)a->count : 0; }

double oq_error_acc_cosine(const oq_error_acc *a) {
    double d = sqrt(a->sum_sq_ref) * sqrt(a->sum_sq_got);
    return d > 0 ? a->dot / d : (a->sum_sq_ref == a->sum_sq_got ? 1.0 : 0.0);
}

double oq_error_acc_sqnr_db(const oq_error_acc *a) {
    if (a->sum_sq_err == 0)
        return INFINITY;
    return 10.0 * log10(a->sum_sq_ref / a->sum_sq_err);
}

static json_t *finite_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* ---- per-output metrics ----------------------------------------------------- */

typedef struct {
    oq_error_acc acc;
    size_t top1_agree, top1_rows;
    size_t fp32_correct, int8_correct, labelled_rows;
    bool classes;   /* [rows, C>1] scores: top-1 metrics apply */
} output_stats;

static size_t argmax_row(const float *v, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static void output_add(output_stats *o, const oq_tensor *ref, const oq_tensor *got, const oq_tensor *labels,
                       int64_t row0) {
    oq_error_acc_add(&o->acc, ref->data, got->data, ref->count);
    o->classes = ref->rank == 2 && ref->dims[1] > 1;
    if (!o->classes)
        return;
    size_t rows = (size_t)ref->dims[0], c = (size_t)ref->dims[1];
    for (size_t r = 0; r < rows; r++) {
        size_t a = argmax_row((const float *)ref->data + r * c, c);
        size_t b = argmax_row((const float *)got->data + r * c, c);
        o->top1_agree += a == b;
        o->top1_rows++;
        if (labels && (int64_t)r + row0 < labels->dims[0]) {
            int64_t l = labels->dtype == OQ_DTYPE_INT64 ? ((const int64_t *)labels->data)[row0 + (int64_t)r]
                                                         : ((const int32_t *)labels->data)[row0 + (int64_t)r];
            o->fp32_correct += (int64_t)a == l;
            o->int8_correct += (int64_t)b == l;
            o->labelled_rows++;
        }
    }
}

static json_t *output_json(const char *name, const output_stats *o) {
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "mse", json_real(oq_error_acc_mse(&o->acc)));
    json_object_set_new(j, "max_abs_error", json_real(o->acc.max_abs));
    json_object_set_new(j, "cosine", json_real(oq_error_acc_cosine(&o->acc)));
    json_object_set_new(j, "sqnr_db", finite_or_null(oq_error_acc_sqnr_db(&o->acc)));
    if (o->classes && o->top1_rows) {
        json_object_set_new(j, "top1_agreement", json_real((double)o->top1_agree / (double)o->top1_rows));
        if (o->labelled_rows) {
            json_object_set_new(j, "fp32_accuracy", json_real((double)o->fp32_correct / (double)o->labelled_rows));
            json_object_set_new(j, "int8_accuracy", json_real((double)o->int8_correct / (double)o->labelled_rows));
        }
    }
    return j;
}

/* ---- per-layer: FP32 activations of one batch, compared as INT8 runs ---- */

typedef struct {
    oq_strmap *index;      /* tensor name -> slot */
    char **names;
    float **fp32;          /* this batch's FP32 values */
    size_t *counts;
    oq_error_acc *acc;
    size_t n, cap;
    size_t bytes, max_bytes;
} layer_set;

static oq_status layers_capture(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    layer_set *ls = ctx;
    if (t->dtype != OQ_DTYPE_FLOAT)
        return OQ_OK;
    int slot;
    if (!oq_strmap_get(ls->index, name, &slot)) {
        if (ls->n == ls->cap) {
            size_t cap = ls->cap ? ls->cap * 2 : 64;
            char **nn = realloc(ls->names, cap * sizeof *nn);
            if (nn)
                ls->names = nn;
            float **nf = realloc(ls->fp32, cap * sizeof *nf);
            if (nf)
                ls->fp32 = nf;
            size_t *nc = realloc(ls->counts, cap * sizeof *nc);
            if (nc)
                ls->counts = nc;
            oq_error_acc *na = realloc(ls->acc, cap * sizeof *na);
            if (na)
                ls->acc = na;
            if (!nn || !nf || !nc || !na)
                return oq_err(err, OQ_ENOMEM, "out of memory tracking layers");
            ls->cap = cap;
        }
        slot = (int)ls->n;
        ls->names[slot] = strdup(name);
        ls->fp32[slot] = NULL;
        ls->counts[slot] = 0;
        memset(&ls->acc[slot], 0, sizeof ls->acc[slot]);
        if (!ls->names[slot])
            return oq_err(err, OQ_ENOMEM, "out of memory tracking layers");
        ls->n++;
        oq_status st = oq_strmap_put(ls->index, ls->names[slot], slot, err);
        if (st != OQ_OK)
            return st;
    }
    if (ls->counts[slot] != t->count) {
        /* Skip layers whose activations would exceed the memory cap. */
        if (ls->bytes + t->nbytes > ls->max_bytes) {
            ls->counts[slot] = 0;
            return OQ_OK;
        }
        float *buf = realloc(ls->fp32[slot], t->nbytes ? t->nbytes : 1);
        if (!buf)
            return oq_err(err, OQ_ENOMEM, "out of memory holding layer '%s'", name);
        ls->bytes = ls->bytes - ls->counts[slot] * sizeof(float) + t->nbytes;
        ls->fp32[slot] = buf;
        ls->counts[slot] = t->count;
    }
    memcpy(ls->fp32[slot], t->data, t->nbytes);
    return OQ_OK;
}

static oq_status layers_compare(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    (void)err;
    layer_set *ls = ctx;
    int slot;
    if (t->dtype != OQ_DTYPE_FLOAT || !oq_strmap_get(ls->index, name, &slot) || ls->counts[slot] != t->count ||
        !ls->fp32[slot])
        return OQ_OK;
    oq_error_acc_add(&ls->acc[slot], ls->fp32[slot], t->data, t->count);
    return OQ_OK;
}

static void layers_free(layer_set *ls) {
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->names[i]);
        free(ls->fp32[i]);
    }
    free(ls->names);
    free(ls->fp32);
    free(ls->counts);
    free(ls->acc);
    oq_strmap_free(ls->index);
}

/* ---- driver ------------------------------------------------------------------ */

/* Runs rows [start, start+b) of the data set through plan. */
static oq_status run_rows(oq_plan *plan, const oq_feed *feed, int64_t start, int64_t b, oq_tensor **outs,
                          oq_observer_fn obs, void *obs_ctx, oq_error *err) {
    oq_tensor *views[OQ_FEED_MAX_INPUTS] = {0};
    oq_status st = oq_feed_rows(feed, start, b, views, err);
    if (st == OQ_OK)
        st = oq_plan_run(plan, (const oq_tensor *const *)views, feed->n_inputs, outs, obs, obs_ctx, err);
    oq_feed_views_free(views, feed->n_inputs);
    return st;
}

oq_status oq_report_evaluate(const oq_report_inputs *ri, json_t **out, oq_error *err) {
    *out = NULL;
    const oq_quant_inputs *in = ri->in;
    bool on_eval = in->eval && in->n_eval;
    const oq_tensor *const *data = on_eval ? in->eval : in->calib;
    size_t n_data = on_eval ? in->n_eval : in->n_calib;
    if (!data || !n_data)
        return oq_err(err, OQ_EINVAL, "no data to evaluate on: give calibration or evaluation data");

    oq_plan_opts po = oq_plan_opts_default();
    po.threads = ri->cfg->threads;
    po.abort_flag = in->abort_flag;
    oq_plan *q = NULL;
    oq_status st = oq_plan_new(ri->int8_model, &po, &q, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "quantized model: ");
        return st;
    }
    oq_feed feed;
    st = oq_feed_map(&feed, ri->fp32_plan, data, n_data, on_eval ? "evaluation" : "calibration", err);
    int n_out = oq_plan_output_count(ri->fp32_plan);
    output_stats *os = calloc((size_t)n_out + 1, sizeof *os);
    layer_set ls = {.max_bytes = (size_t)512 << 20};
    if (!os)
        st = oq_err(err, OQ_ENOMEM, "out of memory");
    if (st == OQ_OK)
        st = oq_strmap_new(OQ_STRMAP_BORROW, 256, &ls.index, err);

    int64_t rows = st == OQ_OK ? feed.rows : 0;
    if (in->max_eval_samples && rows > (int64_t)in->max_eval_samples)
        rows = (int64_t)in->max_eval_samples;
    int64_t fixed = oq_plan_input_batch(ri->fp32_plan, 0);
    int64_t batch = fixed > 0 ? fixed : 32;
    int64_t layer_rows = 0, done = 0;
    const oq_tensor *labels = in->labels;
    if (labels && labels->dtype != OQ_DTYPE_INT64 && labels->dtype != OQ_DTYPE_INT32)
        st = oq_err(err, OQ_EINVAL, "labels must be int64 or int32, not %s", oq_dtype_name(labels->dtype));
    if (labels && st == OQ_OK && labels->dims[0] < rows)
        st = oq_err(err, OQ_EINVAL, "labels has %lld rows, the data %lld", (long long)labels->dims[0],
                    (long long)rows);

    for (int64_t s = 0; st == OQ_OK && s < rows;) {
        bool layers = layer_rows < OQ_REPORT_LAYER_SAMPLES;
        /* While the per-layer pass holds a batch's FP32 activations, keep
         * batches small so that memory stays a few samples' worth. */
        int64_t step = layers && fixed <= 0 ? OQ_REPORT_LAYER_BATCH : batch;
        if (fixed > 0 && s + step > rows)
            break; /* a fixed-batch model takes whole batches only */
        int64_t b = s + step <= rows ? step : rows - s;
        oq_tensor *ref[64] = {0}, *got[64] = {0};
        st = run_rows(ri->fp32_plan, &feed, s, b, ref, layers ? layers_capture : NULL, &ls, err);
        if (st == OQ_OK)
            st = run_rows(q, &feed, s, b, got, layers ? layers_compare : NULL, &ls, err);
        if (layers)
            layer_rows += b;
        for (int o = 0; st == OQ_OK && o < n_out; o++) {
            if (ref[o]->dtype != OQ_DTYPE_FLOAT || got[o]->dtype != OQ_DTYPE_FLOAT || ref[o]->count != got[o]->count)
                continue; /* only float outputs of equal shape are compared */
            output_add(&os[o], ref[o], got[o], labels, s);
        }
        for (int o = 0; o < n_out; o++) {
            oq_tensor_free(ref[o]);
            oq_tensor_free(got[o]);
        }
        done = s + b;
        s += b;
        if (in->progress)
            in->progress(in->progress_ctx, "evaluate", (size_t)done, (size_t)rows);
    }
    if (st == OQ_OK) {
        json_t *ev = json_object();
        json_object_set_new(ev, "dataset", json_string(on_eval ? "evaluation" : "calibration"));
        if (!on_eval)
            json_object_set_new(ev, "note", json_string("no evaluation set was given: measured on the calibration "
                                                        "data, which the ranges were fitted to"));
        json_object_set_new(ev, "samples", json_integer((json_int_t)done));
        json_t *outs = json_array();
        for (int o = 0; o < n_out; o++)
            json_array_append_new(outs, output_json(oq_plan_output_name(ri->fp32_plan, o), &os[o]));
        json_object_set_new(ev, "outputs", outs);
        json_t *lj = json_array();
        for (size_t i = 0; i < ls.n; i++) {
            if (!ls.acc[i].count)
                continue;
            json_t *e = json_object();
            json_object_set_new(e, "tensor", json_string(ls.names[i]));
            json_object_set_new(e, "sqnr_db", finite_or_null(oq_error_acc_sqnr_db(&ls.acc[i])));
            json_object_set_new(e, "mse", json_real(oq_error_acc_mse(&ls.acc[i])));
            json_object_set_new(e, "max_abs_error", json_real(ls.acc[i].max_abs));
            json_array_append_new(lj, e);
        }
        json_object_set_new(ev, "layers", lj);
        json_object_set_new(ev, "layer_samples", json_integer((json_int_t)layer_rows));
        json_t *rep = json_object();
        json_object_set_new(rep, "evaluation", ev);
        *out = rep;
    }
    layers_free(&ls);
    free(os);
    oq_plan_free(q);
    return st;
}
