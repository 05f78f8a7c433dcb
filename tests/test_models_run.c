/* test_models_run.c: the executor on the seven shared real models, on their
 * evaluation inputs, against ONNX Runtime's FP32 outputs; and memory that
 * does not grow with the number of runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/resource.h>

#include "exec.h"
#include "model.h"
#include "testutil.h"

static long peak_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static size_t argmax(const float *v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* Runs model on its evaluation set (all of it, or a prefix under ASan) and
 * compares each output with the reference. */
static void check_model(const tu_model_info *mi) {
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(tu_shared_path(mi->model), NULL, &m, &err) == OQ_OK, "%s", err.msg);
    oq_plan *plan;
    ck_assert_msg(oq_plan_new(m, NULL, &plan, &err) == OQ_OK, "%s: %s", mi->key, err.msg);
    oq_tensor *x, *ref;
    tu_eval_set(mi, &x, NULL, &ref);
    int64_t n = x->dims[0];
    if (tu_sanitized() && n > 400)
        n = 400;
    size_t classes = (size_t)ref->dims[1];
    size_t agree = 0, worst_at = 0;
    double worst = 0;
    for (int64_t s = 0; s < n; s += mi->batch) {
        int64_t b = s + mi->batch <= n ? mi->batch : n - s;
        oq_tensor *in = tu_rows(x, s, b);
        oq_tensor *out[1];
        ck_assert_msg(oq_plan_run(plan, (const oq_tensor *const *)&in, 1, out, NULL, NULL, &err) == OQ_OK,
                      "%s: %s", mi->key, err.msg);
        ck_assert_int_eq(out[0]->dims[0], b);
        ck_assert_uint_eq(out[0]->count, (size_t)b * classes);
        const float *got = out[0]->data, *want = (const float *)ref->data + (size_t)s * classes;
        for (int64_t i = 0; i < b; i++) {
            agree += argmax(got + i * classes, classes) == argmax(want + i * classes, classes);
            for (size_t c = 0; c < classes; c++) {
                double w = want[i * classes + c], g = got[i * classes + c];
                double excess = fabs(g - w) - (1e-4 + 1e-3 * fabs(w));
                if (excess > worst) {
                    worst = excess;
                    worst_at = (size_t)(s + i);
                }
            }
        }
        oq_tensor_free(out[0]);
        oq_tensor_free(in);
    }
    printf("%-18s %6lld samples, top-1 agreement %zu/%lld\n", mi->key, (long long)n, agree, (long long)n);
    ck_assert_msg(worst == 0, "%s: sample %zu differs beyond 1e-4 + 1e-3*|ref| by %g", mi->key, worst_at,
                  worst);
    oq_tensor_free(x);
    oq_tensor_free(ref);
    oq_plan_free(plan);
    oq_model_free(m);
}

START_TEST(real_model_matches_reference) { check_model(&tu_models[_i]); }
END_TEST

START_TEST(memory_does_not_grow_with_runs) {
    const tu_model_info *mi = &tu_models[5]; /* fmnist_vit_op14 */
    oq_error err = {0};
    oq_model *m;
    ck_assert(oq_model_load_file(tu_shared_path(mi->model), NULL, &m, &err) == OQ_OK);
    oq_plan *plan;
    ck_assert_msg(oq_plan_new(m, NULL, &plan, &err) == OQ_OK, "%s", err.msg);
    oq_tensor *x;
    tu_eval_set(mi, &x, NULL, NULL);
    int runs = tu_sanitized() ? 200 : 1000;
    size_t pool_after_10 = 0;
    long rss_after_10 = 0;
    for (int r = 0; r < runs; r++) {
        oq_tensor *in = tu_rows(x, r % x->dims[0], 1);
        oq_tensor *out[1];
        ck_assert(oq_plan_run(plan, (const oq_tensor *const *)&in, 1, out, NULL, NULL, &err) == OQ_OK);
        oq_tensor_free(out[0]);
        oq_tensor_free(in);
        if (r == 9) {
            pool_after_10 = oq_plan_pool_bytes(plan);
            rss_after_10 = peak_rss_kb();
        }
    }
    ck_assert_uint_eq(oq_plan_pool_bytes(plan), pool_after_10);
    long grown = peak_rss_kb() - rss_after_10;
    printf("peak RSS after 10 runs %ld KiB, after %d runs %ld KiB\n", rss_after_10, runs, peak_rss_kb());
    /* ASan's quarantine holds freed blocks, so RSS is only meaningful in
     * the plain build; the pool check above holds in both. */
    if (!tu_sanitized())
        ck_assert_msg(grown < 1024, "peak RSS grew by %ld KiB between 10 and %d runs", grown, runs);
    oq_tensor_free(x);
    oq_plan_free(plan);
    oq_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("models_run");
    TCase *tc = tcase_create("models");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, real_model_matches_reference, 0, (int)tu_model_count);
    tcase_add_test(tc, memory_does_not_grow_with_runs);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
