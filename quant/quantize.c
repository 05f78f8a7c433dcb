/* quantize.c: the pipeline. A copy of the input model is prepared (and its
 * constant nodes folded) and stays FP32: the calibration model and the
 * reference. A copy of that is rewritten, so tensor names match between the
 * two for per-layer comparison. */
#include "quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "calib.h"
#include "checked.h"
#include "constfold.h"
#include "exec.h"
#include "feed.h"
#include "graph.h"
#include "prepare.h"
#include "report.h"
#include "rewrite.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

/* ---- feeding calibration data ------------------------------------------- */

typedef struct {
    oq_feed feed;
    int64_t batch; /* rows per run */
} feeder;

/* Maps the data to the plan's inputs, rejects non-finite values (they would
 * poison every range), and picks the batch: the declared first dim when
 * fixed, else up to 32 rows. */
static oq_status feeder_init(feeder *f, oq_plan *plan, const oq_tensor *const *data, size_t n,
                             const char *what, oq_error *err) {
    oq_status st = oq_feed_map(&f->feed, plan, data, n, what, err);
    if (st != OQ_OK)
        return st;
    for (int i = 0; i < f->feed.n_inputs; i++) {
        const oq_tensor *t = f->feed.src[i];
        if (t->dtype != OQ_DTYPE_FLOAT)
            continue;
        const float *v = t->data;
        for (size_t e = 0; e < t->count; e++)
            if (!isfinite(v[e]))
                return oq_err(err, OQ_EDATA, "%s tensor '%s' holds %s at element %zu", what,
                              t->name ? t->name : "?", isnan(v[e]) ? "NaN" : "Inf", e);
    }
    if (f->feed.rows <= 0)
        return oq_err(err, OQ_EINVAL, "%s data has no samples", what);
    f->batch = 32;
    int64_t fixed = oq_plan_input_batch(plan, 0);
    if (fixed > 0)
        f->batch = fixed;
    if (f->batch > f->feed.rows && fixed > 0)
        return oq_err(err, OQ_EINVAL, "%s data has %lld samples, the model's batch is fixed at %lld", what,
                      (long long)f->feed.rows, (long long)fixed);
    return OQ_OK;
}

/* ---- calibration ---------------------------------------------------------- */

typedef struct {
    oq_calibrator *cal;
    const oq_quant_config *cfg;
} range_ctx;

static oq_status calib_range(void *ctx, const char *tensor, float *lo, float *hi, oq_error *err) {
    range_ctx *rc = ctx;
    return oq_calibrator_range(rc->cal, tensor, rc->cfg->activation_type, rc->cfg->activation_symmetric, lo,
                               hi, err);
}

static oq_status calibrate(oq_plan *plan, oq_calibrator *cal, const oq_quant_config *cfg,
                           const oq_quant_inputs *in, size_t *samples_used, oq_error *err) {
    feeder f;
    oq_status st = feeder_init(&f, plan, in->calib, in->n_calib, "calibration", err);
    if (st != OQ_OK)
        return st;
    int64_t rows = f.feed.rows;
    if (cfg->max_samples > 0 && rows > cfg->max_samples)
        rows = cfg->max_samples;
    /* A fixed-batch model takes whole batches only; the rest is unused. */
    bool fixed = oq_plan_input_batch(plan, 0) > 0;
    int64_t done = 0;
    for (int64_t s = 0; s < rows && (!fixed || s + f.batch <= rows); s += f.batch) {
        int64_t b = s + f.batch <= rows ? f.batch : rows - s;
        oq_tensor *views[64] = {0}, *outs[64] = {0};
        st = oq_feed_rows(&f.feed, s, b, views, err);
        if (st != OQ_OK)
            return st;
        int n_out = oq_plan_output_count(plan);
        st = oq_plan_run(plan, (const oq_tensor *const *)views, f.feed.n_inputs, outs, oq_calibrator_observe, cal,
                         err);
        oq_feed_views_free(views, f.feed.n_inputs);
        for (int o = 0; o < n_out && o < 64; o++)
            oq_tensor_free(outs[o]);
        if (st != OQ_OK) {
            oq_err_prefix(err, "calibration sample %lld: ", (long long)s);
            return st;
        }
        done = s + b;
        if (in->progress)
            in->progress(in->progress_ctx, "calibrate", (size_t)done, (size_t)rows);
    }
    *samples_used = (size_t)done;
    return OQ_OK;
}

/* ---- pipeline ---------------------------------------------------------------- */

static oq_status copy_model(oq_model *m, oq_model **out, oq_error *err) {
    uint8_t *buf;
    size_t len;
    oq_status st = oq_model_save_buffer(m, &buf, &len, err);
    if (st != OQ_OK)
        return st;
    oq_load_opts lo = {.base_dir = oq_model_base_dir(m)};
    st = oq_model_load_buffer(buf, len, &lo, out, err);
    free(buf);
    return st;
}

static size_t model_bytes(oq_model *m) {
    uint8_t *buf;
    size_t len = 0;
    oq_error e = {0};
    if (oq_model_save_buffer(m, &buf, &len, &e) == OQ_OK)
        free(buf);
    return len;
}

oq_status oq_quantize(oq_model *m, const oq_quant_config *cfg, const oq_quant_inputs *in, oq_model **out,
                      json_t **report, oq_error *err) {
    *out = NULL;
    if (report)
        *report = NULL;
    double t_start = now_s();
    oq_model *fp32 = NULL, *q = NULL;
    oq_plan *plan = NULL;
    oq_calibrator *cal = NULL;
    char **names = NULL;
    size_t n_names = 0, calib_samples = 0;
    oq_rewrite_result rw = {0};
    oq_prepare_result prep = {0};
    json_t *rep = NULL;
    double t_prep = 0, t_cal = 0, t_rw = 0, t_eval = 0;
    oq_status st;

    if (in->progress)
        in->progress(in->progress_ctx, "prepare", 0, 1);
    int folded = 0;
    st = copy_model(m, &fp32, err);
    if (st == OQ_OK)
        st = oq_prepare_model(fp32, 13, &prep, err);
    if (st == OQ_OK)
        st = oq_fold_constant_nodes(fp32, &folded, err);
    if (st == OQ_OK)
        st = copy_model(fp32, &q, err);
    t_prep = now_s() - t_start;

    oq_plan_opts po = oq_plan_opts_default();
    po.threads = cfg->threads;
    po.abort_flag = in->abort_flag;
    if (st == OQ_OK)
        st = oq_plan_new(fp32, &po, &plan, err);

    if (st == OQ_OK && cfg->mode == OQ_QMODE_STATIC) {
        double t0 = now_s();
        if (!in->calib || in->n_calib == 0)
            st = oq_err(err, OQ_EINVAL, "static quantization needs calibration data");
        if (st == OQ_OK)
            st = oq_rewrite_activation_tensors(q, cfg, &names, &n_names, err);
        if (st == OQ_OK)
            st = oq_calibrator_new(cfg, (const char *const *)names, n_names, &cal, err);
        if (st == OQ_OK)
            st = calibrate(plan, cal, cfg, in, &calib_samples, err);
        t_cal = now_s() - t0;
    }
    if (st == OQ_OK) {
        double t0 = now_s();
        if (in->progress)
            in->progress(in->progress_ctx, "rewrite", 0, 1);
        range_ctx rc = {cal, cfg};
        if (cfg->mode == OQ_QMODE_STATIC)
            st = oq_rewrite_static(q, cfg, calib_range, &rc, &rw, err);
        else if (cfg->mode == OQ_QMODE_DYNAMIC)
            st = oq_rewrite_dynamic(q, cfg, &rw, err);
        else
            st = oq_rewrite_weight_only(q, cfg, &rw, err);
        t_rw = now_s() - t0;
    }
    if (st == OQ_OK && report) {
        double t0 = now_s();
        oq_report_inputs ri = {
            .fp32_plan = plan,
            .int8_model = q,
            .cfg = cfg,
            .in = in,
        };
        st = oq_report_evaluate(&ri, &rep, err);
        t_eval = now_s() - t0;
    }
    if (st == OQ_OK && report) {
        json_t *model = json_object();
        size_t before = model_bytes(m), after = model_bytes(q);
        json_object_set_new(model, "size_bytes_fp32", json_integer((json_int_t)before));
        json_object_set_new(model, "size_bytes_int8", json_integer((json_int_t)after));
        json_object_set_new(model, "size_ratio", json_real(before ? (double)after / (double)before : 0));
        json_object_set_new(rep, "model", model);
        json_t *pj = json_object();
        json_object_set_new(pj, "constants_to_initializers", json_integer(prep.constants_to_initializers));
        json_object_set_new(pj, "batchnorms_folded", json_integer(prep.batchnorms_folded));
        json_object_set_new(pj, "opset_before", json_integer(prep.opset_before));
        json_object_set_new(pj, "opset_after", json_integer(prep.opset_after));
        json_object_set_new(pj, "nodes_converted", json_integer(prep.nodes_converted));
        json_object_set_new(pj, "constant_nodes_folded", json_integer(folded));
        json_object_set_new(rep, "prepare", pj);
        json_object_set_new(rep, "nodes", oq_rewrite_result_to_json(&rw));
        json_t *cj = json_object();
        json_object_set_new(cj, "method", json_string(oq_calib_method_name(cfg->method)));
        json_object_set_new(cj, "samples", json_integer((json_int_t)calib_samples));
        json_object_set_new(cj, "tracked_tensors", json_integer((json_int_t)n_names));
        json_object_set_new(cj, "statistics_bytes", json_integer((json_int_t)(cal ? oq_calibrator_bytes(cal) : 0)));
        json_object_set_new(cj, "seconds", json_real(t_cal));
        json_object_set_new(rep, "calibration", cj);
        json_t *tj = json_object();
        json_object_set_new(tj, "prepare_seconds", json_real(t_prep));
        json_object_set_new(tj, "calibrate_seconds", json_real(t_cal));
        json_object_set_new(tj, "rewrite_seconds", json_real(t_rw));
        json_object_set_new(tj, "evaluate_seconds", json_real(t_eval));
        json_object_set_new(tj, "total_seconds", json_real(now_s() - t_start));
        json_object_set_new(rep, "timing", tj);
        json_object_set_new(rep, "peak_rss_bytes", json_integer(peak_rss_bytes()));
        json_object_set_new(rep, "config", oq_quant_config_to_json(cfg));
        json_object_set_new(rep, "onnxq_version", json_string(OQ_VERSION));
    }
    oq_rewrite_result_free(&rw);
    oq_strings_free(names, n_names);
    oq_calibrator_free(cal);
    oq_plan_free(plan);
    oq_model_free(fp32);
    if (st != OQ_OK) {
        oq_model_free(q);
        json_decref(rep);
        return st;
    }
    *out = q;
    if (report)
        *report = rep;
    return OQ_OK;
}
