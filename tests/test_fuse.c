/* test_fuse.c: executor fusion of element-wise chains into a Conv
 * (kernels/postop.c, plan_fuse in kernels/exec.c): post-op programs against
 * a scalar reference, the single-node matcher, and small in-memory models
 * (plus ppocr_cls and fmnist_cnn) run fused and unfused on the same inputs,
 * with the fusion decisions checked through oq_plan_fused_into. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edit.h"
#include "exec.h"
#include "graph.h"
#include "nn.h"
#include "postop.h"
#include "prepare.h"
#include "sgemm.h"
#include "testutil.h"

#define MAX_OUT 4
#define MAX_IN 4

/* ---- data ------------------------------------------------------------------ */

static uint32_t g_seed = 12345u;

static float rnd_uniform(void) { /* [-1, 1) */
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)(g_seed >> 8) / (float)(1u << 23) - 1.0f;
}

static void fill_random(float *v, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        v[i] = scale * rnd_uniform();
}

static oq_tensor *random_f(int rank, const int64_t *dims, float scale) {
    oq_tensor *t = tu_tensor_new(OQ_DTYPE_FLOAT, rank, dims);
    fill_random(t->data, t->count, scale);
    return t;
}

static bool same_bits(float a, float b) {
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

/* ---- 1. programs against a scalar reference ------------------------------- */

static float ref_clamp01(float v) {
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

/* One step on one value, as the element-wise kernels compute it. The
 * product goes through a volatile so it is rounded on its own (no FMA). */
static float ref_step(const oq_post_step *st, float v, float x, float r) {
    volatile float prod;
    switch (st->kind) {
    case OQ_POST_MAX_C: return v < st->a ? st->a : v;
    case OQ_POST_MIN_C: return v > st->a ? st->a : v;
    case OQ_POST_ADD_C: return v + st->a;
    case OQ_POST_SUB_C: return v - st->a;
    case OQ_POST_MUL_C: return v * st->a;
    case OQ_POST_DIV_C: return v / st->a;
    case OQ_POST_LEAKY: return v < 0.0f ? st->a * v : v;
    case OQ_POST_HARDSIGMOID: prod = st->a * v; return ref_clamp01(prod + st->b);
    case OQ_POST_HARDSWISH: prod = st->a * v; return v * ref_clamp01(prod + st->b);
    case OQ_POST_ADD_RES: return v + r;
    case OQ_POST_MUL_X: return v * x;
    }
    ck_abort_msg("unknown step kind %d", (int)st->kind);
    return v;
}

static float ref_program(const oq_post *p, float x, float r) {
    float v = x;
    for (int s = 0; s < p->n; s++)
        v = ref_step(&p->steps[s], v, x, r);
    return v;
}

static bool program_contracts(const oq_post *p) {
    for (int s = 0; s < p->n; s++)
        if (p->steps[s].kind == OQ_POST_HARDSIGMOID || p->steps[s].kind == OQ_POST_HARDSWISH)
            return true;
    return false;
}

static void check_value(const oq_post *p, float got, float want, bool loose, const char *what, size_t n,
                        size_t i) {
    if (loose && isfinite(want)) {
        double d = fabs((double)got - (double)want), lim = 1e-6 * fmax(1.0, fabs((double)want));
        ck_assert_msg(d <= lim, "%s (%d steps, first %d): n=%zu element %zu: %.9g, want %.9g", what, p->n,
                      (int)p->steps[0].kind, n, i, (double)got, (double)want);
        return;
    }
    ck_assert_msg(same_bits(got, want), "%s (%d steps, first %d): n=%zu element %zu: %.9g, want %.9g", what,
                  p->n, (int)p->steps[0].kind, n, i, (double)got, (double)want);
}

/* Inputs with the values where comparisons matter: zeros of both signs, the
 * bounds themselves, NaN and infinities, among random ones. */
static void fill_program_input(float *v, size_t n) {
    static const float special[] = {0.0f, -0.0f, 6.0f, -3.0f, 3.0f, 1.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < n; i++)
        v[i] = (i * 7 + 3) % 11 == 0 ? special[(i / 11) % (sizeof special / sizeof special[0])]
                                      : 8.0f * rnd_uniform();
}

#define PROG_MAX_N 70

/* oq_post_apply for every length 0..70, out of place and in place, with
 * the data starting on and off a vector boundary. */
static void check_apply(const oq_post *p, const char *what) {
    bool loose = program_contracts(p);
    float src[PROG_MAX_N + 2], res[PROG_MAX_N + 2], dst[PROG_MAX_N + 4], inpl[PROG_MAX_N + 2];
    for (size_t off = 0; off < 2; off++)
        for (size_t n = 0; n <= PROG_MAX_N; n++) {
            fill_program_input(src, PROG_MAX_N + 2);
            fill_random(res, PROG_MAX_N + 2, 4.0f);
            for (size_t i = 0; i < PROG_MAX_N + 4; i++)
                dst[i] = 1234.5f;
            memcpy(inpl, src, sizeof inpl);
            oq_post_apply(p, dst + off, src + off, res + off, n);
            oq_post_apply(p, inpl + off, inpl + off, res + off, n);
            for (size_t i = 0; i < n; i++) {
                float want = ref_program(p, src[off + i], res[off + i]);
                check_value(p, dst[off + i], want, loose, what, n, i);
                check_value(p, inpl[off + i], want, loose, what, n, i);
            }
            for (size_t i = 0; i < PROG_MAX_N + 4; i++)
                if (i < off || i >= off + n)
                    ck_assert_msg(dst[i] == 1234.5f, "%s: n=%zu wrote outside at %zu", what, n, i);
            for (size_t i = 0; i < PROG_MAX_N + 2; i++)
                if (i < off || i >= off + n)
                    ck_assert_msg(same_bits(inpl[i], src[i]), "%s: n=%zu in place wrote outside at %zu", what, n,
                                  i);
        }
}

/* oq_post_apply_rows over rows x cols of a matrix with ldc > cols: the
 * padding between rows stays as it was; the residual has C's layout. */
static void check_apply_rows(const oq_post *p, const char *what) {
    bool loose = program_contracts(p);
    static const size_t shapes[][3] = {{1, 1, 1}, {3, 5, 9},  {2, 32, 33}, {4, 33, 40},
                                       {5, 17, 64}, {3, 70, 71}, {1, 64, 64}, {0, 8, 8}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t rows = shapes[s][0], cols = shapes[s][1], ldc = shapes[s][2], total = (rows ? rows : 1) * ldc;
        float *c = malloc(total * sizeof *c), *orig = malloc(total * sizeof *orig);
        float *res = malloc(total * sizeof *res);
        ck_assert(c && orig && res);
        fill_program_input(orig, total);
        fill_random(res, total, 4.0f);
        memcpy(c, orig, total * sizeof *c);
        oq_post_apply_rows(p, c, ldc, rows, cols, res);
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < ldc; j++) {
                size_t i = r * ldc + j;
                if (j < cols)
                    check_value(p, c[i], ref_program(p, orig[i], res[i]), loose, what, cols, i);
                else
                    ck_assert_msg(same_bits(c[i], orig[i]), "%s: rows wrote padding at %zu,%zu", what, r, j);
            }
        free(c);
        free(orig);
        free(res);
    }
}

static oq_post program(int n, const oq_post_step *steps) {
    oq_post p;
    memset(&p, 0, sizeof p);
    p.n = n;
    memcpy(p.steps, steps, (size_t)n * sizeof *steps);
    return p;
}

START_TEST(post_every_step) {
    const oq_post_step steps[] = {
        {OQ_POST_MAX_C, 0.0f, 0.0f},         {OQ_POST_MAX_C, -1.5f, 0.0f},       {OQ_POST_MIN_C, 6.0f, 0.0f},
        {OQ_POST_MIN_C, -0.25f, 0.0f},       {OQ_POST_ADD_C, 3.0f, 0.0f},        {OQ_POST_SUB_C, 0.7f, 0.0f},
        {OQ_POST_MUL_C, -1.3f, 0.0f},        {OQ_POST_DIV_C, 6.0f, 0.0f},        {OQ_POST_DIV_C, -0.3f, 0.0f},
        {OQ_POST_LEAKY, 0.01f, 0.0f},        {OQ_POST_LEAKY, 0.2f, 0.0f},        {OQ_POST_HARDSIGMOID, 0.2f, 0.5f},
        {OQ_POST_HARDSIGMOID, 0.1667f, 0.3f}, {OQ_POST_HARDSWISH, 1.0f / 6.0f, 0.5f},
        {OQ_POST_ADD_RES, 0.0f, 0.0f},       {OQ_POST_MUL_X, 0.0f, 0.0f},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        oq_post p = program(1, &steps[i]);
        char what[64];
        snprintf(what, sizeof what, "step %zu (kind %d)", i, (int)steps[i].kind);
        check_apply(&p, what);
        check_apply_rows(&p, what);
    }
}
END_TEST

START_TEST(post_programs) {
    /* HardSwish as ppocr_cls spells it: Add 3, Clip 0..6, Mul x, Div 6 */
    const oq_post_step hswish[] = {{OQ_POST_ADD_C, 3.0f, 0},
                                   {OQ_POST_MAX_C, 0.0f, 0},
                                   {OQ_POST_MIN_C, 6.0f, 0},
                                   {OQ_POST_MUL_X, 0, 0},
                                   {OQ_POST_DIV_C, 6.0f, 0}};
    /* residual then Relu (ResNet) */
    const oq_post_step res_relu[] = {{OQ_POST_ADD_RES, 0, 0}, {OQ_POST_MAX_C, 0.0f, 0}};
    /* the residual after other steps, MUL_X after the residual: x is the
     * producer's value, not the running one */
    const oq_post_step mixed[] = {{OQ_POST_LEAKY, 0.1f, 0}, {OQ_POST_ADD_RES, 0, 0},
                                  {OQ_POST_MUL_X, 0, 0},    {OQ_POST_SUB_C, 0.5f, 0},
                                  {OQ_POST_HARDSWISH, 0.2f, 0.4f}, {OQ_POST_MUL_C, 2.0f, 0},
                                  {OQ_POST_MIN_C, 5.0f, 0}, {OQ_POST_MAX_C, -5.0f, 0}};
    const oq_post_step twice_x[] = {{OQ_POST_MUL_X, 0, 0}, {OQ_POST_MUL_X, 0, 0},
                                    {OQ_POST_HARDSIGMOID, 0.3f, 0.1f}};
    oq_post progs[] = {program(5, hswish), program(2, res_relu), program(8, mixed), program(3, twice_x),
                       program(0, hswish)};
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "program %zu", i);
        check_apply(&progs[i], what);
        check_apply_rows(&progs[i], what);
    }
    /* oq_post_apply_all reads the program's own residual */
    float v[45], r[45], want[45];
    fill_random(v, 45, 3.0f);
    fill_random(r, 45, 3.0f);
    oq_post p = program(2, res_relu);
    p.res = r;
    for (int i = 0; i < 45; i++)
        want[i] = ref_program(&p, v[i], r[i]);
    oq_post_apply_all(&p, v, 45);
    for (int i = 0; i < 45; i++)
        ck_assert(same_bits(v[i], want[i]));
}
END_TEST

/* ---- 2. the single-node matcher ------------------------------------------- */

typedef struct {
    oq_model *m;
    oq_tensor *consts[8];
    int n_consts;
} match_env;

static void env_free(match_env *e) {
    for (int i = 0; i < e->n_consts; i++)
        oq_tensor_free(e->consts[i]);
    oq_model_free(e->m);
}

static const oq_tensor *env_const(match_env *e, oq_dtype dt, int rank, const int64_t *dims, float v) {
    ck_assert_int_lt(e->n_consts, 8);
    oq_tensor *t = tu_tensor_new(dt, rank, dims);
    for (size_t i = 0; i < t->count; i++) {
        if (dt == OQ_DTYPE_FLOAT)
            ((float *)t->data)[i] = v + (float)i;
        else if (dt == OQ_DTYPE_INT32)
            ((int32_t *)t->data)[i] = (int32_t)v;
    }
    e->consts[e->n_consts++] = t;
    return t;
}

static const oq_tensor *scalar(match_env *e, float v) {
    return env_const(e, OQ_DTYPE_FLOAT, 0, NULL, v);
}

/* A node of op with n_in inputs ("" for the omitted ones) in e's model. */
static Onnx__NodeProto *mnode(match_env *e, const char *op, int n_in) {
    static const char *names[] = {"i0", "i1", "i2"};
    return tu_model_node(e->m, op, op, names, (size_t)n_in, TU_LIST("o"));
}

#define IN_VAL {true, NULL}
#define IN_NONE {false, NULL}
#define IN_C(t) {true, (t)}

typedef struct {
    oq_post_match m;
    int n;
    oq_post_step st[2];
    int other;
} match_res;

static match_res do_match(const Onnx__NodeProto *np, int opset, int slot, const oq_post_in *in, int n_in) {
    match_res r;
    memset(&r, 0, sizeof r);
    r.n = -7;
    r.other = -7;
    r.m = oq_post_match_node(np, opset, slot, in, n_in, r.st, &r.n, &r.other);
    return r;
}

static void expect_steps(match_res r, int n, oq_post_kind k0, float a0, float b0, oq_post_kind k1, float a1,
                         const char *what) {
    ck_assert_msg(r.m == OQ_POST_STEPS, "%s: match %d, want STEPS", what, (int)r.m);
    ck_assert_msg(r.n == n, "%s: %d steps, want %d", what, r.n, n);
    ck_assert_msg(r.st[0].kind == k0 && r.st[0].a == a0 && r.st[0].b == b0, "%s: step 0 is %d(%g, %g)", what,
                  (int)r.st[0].kind, (double)r.st[0].a, (double)r.st[0].b);
    if (n > 1)
        ck_assert_msg(r.st[1].kind == k1 && r.st[1].a == a1, "%s: step 1 is %d(%g)", what, (int)r.st[1].kind,
                      (double)r.st[1].a);
}

static void expect_no(match_res r, const char *what) {
    ck_assert_msg(r.m == OQ_POST_NO, "%s: match %d, want NO", what, (int)r.m);
}

START_TEST(match_unary) {
    match_env e = {tu_model_new(14), {0}, 0};
    oq_post_in one[1] = {IN_VAL};
    expect_steps(do_match(mnode(&e, "Relu", 1), 14, 0, one, 1), 1, OQ_POST_MAX_C, 0.0f, 0.0f, 0, 0, "Relu");
    expect_steps(do_match(mnode(&e, "Relu", 1), 6, 0, one, 1), 1, OQ_POST_MAX_C, 0.0f, 0.0f, 0, 0, "Relu-6");

    Onnx__NodeProto *n = mnode(&e, "LeakyRelu", 1);
    expect_steps(do_match(n, 14, 0, one, 1), 1, OQ_POST_LEAKY, 0.01f, 0.0f, 0, 0, "LeakyRelu default");
    tu_model_attr_float(e.m, n, "alpha", 0.3f);
    expect_steps(do_match(n, 14, 0, one, 1), 1, OQ_POST_LEAKY, 0.3f, 0.0f, 0, 0, "LeakyRelu alpha");

    n = mnode(&e, "HardSigmoid", 1);
    expect_steps(do_match(n, 14, 0, one, 1), 1, OQ_POST_HARDSIGMOID, 0.2f, 0.5f, 0, 0, "HardSigmoid default");
    tu_model_attr_float(e.m, n, "alpha", 0.25f);
    tu_model_attr_float(e.m, n, "beta", 0.125f);
    expect_steps(do_match(n, 14, 0, one, 1), 1, OQ_POST_HARDSIGMOID, 0.25f, 0.125f, 0, 0, "HardSigmoid attrs");

    expect_steps(do_match(mnode(&e, "HardSwish", 1), 14, 0, one, 1), 1, OQ_POST_HARDSWISH, 1.0f / 6.0f, 0.5f, 0,
                 0, "HardSwish");

    /* not element-wise steps, or not this value */
    expect_no(do_match(mnode(&e, "Sigmoid", 1), 14, 0, one, 1), "Sigmoid");
    expect_no(do_match(mnode(&e, "Relu", 1), 14, 1, one, 1), "Relu slot 1 of 1");
    expect_no(do_match(mnode(&e, "Relu", 1), 14, -1, one, 1), "Relu slot -1");

    /* a default-domain op name in another domain is not that op */
    oq_error err = {0};
    ck_assert(oq_edit_set_opset(e.m, "com.example", 1, &err) == OQ_OK);
    Onnx__NodeProto *dn = NULL;
    ck_assert(oq_edit_insert_node(e.m, tu_model_graph(e.m), OQ_EDIT_APPEND, "Relu", "com.example", "relu_x",
                                  TU_LIST("i0"), TU_LIST("o"), &dn, &err) == OQ_OK);
    expect_no(do_match(dn, 1, 0, one, 1), "Relu in com.example");
    Onnx__NodeProto *an = NULL;
    ck_assert(oq_edit_insert_node(e.m, tu_model_graph(e.m), OQ_EDIT_APPEND, "Relu", "ai.onnx", "relu_ai",
                                  TU_LIST("i0"), TU_LIST("o"), &an, &err) == OQ_OK);
    expect_steps(do_match(an, 14, 0, one, 1), 1, OQ_POST_MAX_C, 0.0f, 0.0f, 0, 0, "Relu in ai.onnx");
    env_free(&e);
}
END_TEST

START_TEST(match_clip) {
    match_env e = {tu_model_new(13), {0}, 0};
    oq_post_in one[1] = {IN_VAL};
    /* Clip-6: attributes */
    Onnx__NodeProto *n = mnode(&e, "Clip", 1);
    tu_model_attr_float(e.m, n, "min", -1.0f);
    tu_model_attr_float(e.m, n, "max", 2.5f);
    expect_steps(do_match(n, 6, 0, one, 1), 2, OQ_POST_MAX_C, -1.0f, 0.0f, OQ_POST_MIN_C, 2.5f, "Clip-6 both");
    n = mnode(&e, "Clip", 1);
    tu_model_attr_float(e.m, n, "max", 6.0f);
    expect_steps(do_match(n, 6, 0, one, 1), 2, OQ_POST_MAX_C, -FLT_MAX, 0.0f, OQ_POST_MIN_C, 6.0f, "Clip-6 max");
    expect_steps(do_match(mnode(&e, "Clip", 1), 6, 0, one, 1), 2, OQ_POST_MAX_C, -FLT_MAX, 0.0f, OQ_POST_MIN_C,
                 FLT_MAX, "Clip-6 none");

    /* Clip-13: optional scalar constant inputs */
    const oq_tensor *lo = scalar(&e, 0.0f), *hi = scalar(&e, 6.0f);
    oq_post_in both[3] = {IN_VAL, IN_C(lo), IN_C(hi)};
    expect_steps(do_match(mnode(&e, "Clip", 3), 13, 0, both, 3), 2, OQ_POST_MAX_C, 0.0f, 0.0f, OQ_POST_MIN_C, 6.0f,
                 "Clip-13 both");
    oq_post_in min_only[2] = {IN_VAL, IN_C(lo)};
    expect_steps(do_match(mnode(&e, "Clip", 2), 13, 0, min_only, 2), 2, OQ_POST_MAX_C, 0.0f, 0.0f, OQ_POST_MIN_C,
                 FLT_MAX, "Clip-13 min");
    oq_post_in max_only[3] = {IN_VAL, IN_NONE, IN_C(hi)};
    expect_steps(do_match(mnode(&e, "Clip", 3), 13, 0, max_only, 3), 2, OQ_POST_MAX_C, -FLT_MAX, 0.0f,
                 OQ_POST_MIN_C, 6.0f, "Clip-13 max");
    expect_steps(do_match(mnode(&e, "Clip", 1), 13, 0, one, 1), 2, OQ_POST_MAX_C, -FLT_MAX, 0.0f, OQ_POST_MIN_C,
                 FLT_MAX, "Clip-13 none");
    const oq_tensor *lo1 = env_const(&e, OQ_DTYPE_FLOAT, 1, (int64_t[]){1}, -2.0f);
    oq_post_in rank1[3] = {IN_VAL, IN_C(lo1), IN_NONE};
    expect_steps(do_match(mnode(&e, "Clip", 3), 13, 0, rank1, 3), 2, OQ_POST_MAX_C, -2.0f, 0.0f, OQ_POST_MIN_C,
                 FLT_MAX, "Clip-13 rank-1 bound");

    const oq_tensor *two = env_const(&e, OQ_DTYPE_FLOAT, 1, (int64_t[]){2}, 0.0f);
    oq_post_in vec_bound[3] = {IN_VAL, IN_C(two), IN_C(hi)};
    expect_no(do_match(mnode(&e, "Clip", 3), 13, 0, vec_bound, 3), "Clip-13 2-element min");
    oq_post_in var_bound[3] = {IN_VAL, IN_C(lo), IN_VAL};
    expect_no(do_match(mnode(&e, "Clip", 3), 13, 0, var_bound, 3), "Clip-13 non-constant max");
    oq_post_in var_min[2] = {IN_VAL, IN_VAL};
    expect_no(do_match(mnode(&e, "Clip", 2), 13, 0, var_min, 2), "Clip-13 non-constant min");
    const oq_tensor *ilo = env_const(&e, OQ_DTYPE_INT32, 0, NULL, 0.0f);
    oq_post_in int_bound[2] = {IN_VAL, IN_C(ilo)};
    expect_no(do_match(mnode(&e, "Clip", 2), 13, 0, int_bound, 2), "Clip-13 int32 bound");
    /* the running value as a bound */
    expect_no(do_match(mnode(&e, "Clip", 3), 13, 1, both, 3), "Clip-13 value in slot 1");
    env_free(&e);
}
END_TEST

START_TEST(match_binary) {
    match_env e = {tu_model_new(13), {0}, 0};
    const oq_tensor *c = scalar(&e, 3.0f);
    oq_post_in vc[2] = {IN_VAL, IN_C(c)}, cv[2] = {IN_C(c), IN_VAL}, vv[2] = {IN_VAL, IN_VAL};
    static const struct {
        const char *op;
        oq_post_kind kind;
        bool commutes;
    } ops[] = {{"Add", OQ_POST_ADD_C, true}, {"Mul", OQ_POST_MUL_C, true}, {"Sub", OQ_POST_SUB_C, false},
               {"Div", OQ_POST_DIV_C, false}};
    for (size_t i = 0; i < 4; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s(v, 3)", ops[i].op);
        expect_steps(do_match(mnode(&e, ops[i].op, 2), 13, 0, vc, 2), 1, ops[i].kind, 3.0f, 0.0f, 0, 0, what);
        snprintf(what, sizeof what, "%s(3, v)", ops[i].op);
        match_res r = do_match(mnode(&e, ops[i].op, 2), 13, 1, cv, 2);
        if (ops[i].commutes)
            expect_steps(r, 1, ops[i].kind, 3.0f, 0.0f, 0, 0, what);
        else
            expect_no(r, what); /* 3 - v, 3 / v */
        snprintf(what, sizeof what, "%s-6(v, 3)", ops[i].op);
        expect_no(do_match(mnode(&e, ops[i].op, 2), 6, 0, vc, 2), what); /* the broadcast attribute era */
    }

    /* a non-constant other input */
    for (int slot = 0; slot < 2; slot++) {
        match_res r = do_match(mnode(&e, "Add", 2), 13, slot, vv, 2);
        ck_assert_msg(r.m == OQ_POST_OTHER_IN && r.n == 1 && r.st[0].kind == OQ_POST_ADD_RES &&
                          r.other == 1 - slot,
                      "Add(v, r) slot %d: match %d n %d kind %d other %d", slot, (int)r.m, r.n, (int)r.st[0].kind,
                      r.other);
        r = do_match(mnode(&e, "Mul", 2), 13, slot, vv, 2);
        ck_assert_msg(r.m == OQ_POST_OTHER_IN && r.n == 1 && r.st[0].kind == OQ_POST_MUL_X &&
                          r.other == 1 - slot,
                      "Mul(v, r) slot %d: match %d n %d kind %d other %d", slot, (int)r.m, r.n, (int)r.st[0].kind,
                      r.other);
        expect_no(do_match(mnode(&e, "Sub", 2), 13, slot, vv, 2), "Sub(v, r)");
        expect_no(do_match(mnode(&e, "Div", 2), 13, slot, vv, 2), "Div(v, r)");
    }

    /* constants that are not scalars of the value's type: the output's
     * shape or type would change, or the value would be per channel */
    const oq_tensor *two = env_const(&e, OQ_DTYPE_FLOAT, 1, (int64_t[]){2}, 1.0f);
    const oq_tensor *r2 = env_const(&e, OQ_DTYPE_FLOAT, 2, (int64_t[]){1, 1}, 1.0f);
    const oq_tensor *r1 = env_const(&e, OQ_DTYPE_FLOAT, 1, (int64_t[]){1}, 0.5f);
    const oq_tensor *ic = env_const(&e, OQ_DTYPE_INT32, 0, NULL, 2.0f);
    oq_post_in v_two[2] = {IN_VAL, IN_C(two)}, v_r2[2] = {IN_VAL, IN_C(r2)}, v_r1[2] = {IN_VAL, IN_C(r1)},
               v_ic[2] = {IN_VAL, IN_C(ic)};
    expect_no(do_match(mnode(&e, "Add", 2), 13, 0, v_two, 2), "Add 2-element const");
    expect_no(do_match(mnode(&e, "Mul", 2), 13, 0, v_two, 2), "Mul 2-element const");
    expect_no(do_match(mnode(&e, "Add", 2), 13, 0, v_r2, 2), "Add [1,1] const");
    expect_no(do_match(mnode(&e, "Div", 2), 13, 0, v_r2, 2), "Div [1,1] const");
    expect_no(do_match(mnode(&e, "Add", 2), 13, 0, v_ic, 2), "Add int32 const");
    expect_steps(do_match(mnode(&e, "Div", 2), 13, 0, v_r1, 2), 1, OQ_POST_DIV_C, 0.5f, 0.0f, 0, 0,
                 "Div [1] const");

    /* an omitted input, a third input, another domain */
    oq_post_in v_none[2] = {IN_VAL, IN_NONE};
    expect_no(do_match(mnode(&e, "Add", 2), 13, 0, v_none, 2), "Add(v, omitted)");
    oq_post_in three[3] = {IN_VAL, IN_C(c), IN_C(c)};
    expect_no(do_match(mnode(&e, "Add", 3), 13, 0, three, 3), "Add with 3 inputs");
    oq_error err = {0};
    ck_assert(oq_edit_set_opset(e.m, "com.microsoft", 1, &err) == OQ_OK);
    Onnx__NodeProto *ms = NULL;
    ck_assert(oq_edit_insert_node(e.m, tu_model_graph(e.m), OQ_EDIT_APPEND, "Add", "com.microsoft", "ms_add",
                                  TU_LIST("i0", "i1"), TU_LIST("o"), &ms, &err) == OQ_OK);
    expect_no(do_match(ms, 13, 0, vc, 2), "com.microsoft Add");
    expect_no(do_match(ms, 13, 0, vv, 2), "com.microsoft Add(v, r)");
    env_free(&e);
}
END_TEST

/* ---- 3. models run fused and unfused --------------------------------------- */

static oq_plan *new_plan(oq_model *m, bool fuse, int threads) {
    oq_error err = {0};
    oq_plan_opts o = oq_plan_opts_default();
    o.threads = threads;
    o.fuse = fuse;
    oq_plan *p = NULL;
    ck_assert_msg(oq_plan_new(m, &o, &p, &err) == OQ_OK, "plan (fuse %d): %s", (int)fuse, err.msg);
    return p;
}

static int run_plan(oq_plan *p, oq_tensor *const *ins, int n_in, oq_tensor **outs, oq_observer_fn obs,
                    void *ctx) {
    oq_error err = {0};
    int n = oq_plan_output_count(p);
    ck_assert_int_le(n, MAX_OUT);
    ck_assert_msg(oq_plan_run(p, (const oq_tensor *const *)ins, n_in, outs, obs, ctx, &err) == OQ_OK, "run: %s",
                  err.msg);
    return n;
}

static void free_outs(oq_tensor **outs, int n) {
    for (int i = 0; i < n; i++)
        oq_tensor_free(outs[i]);
}

/* Same shape; |a - ref| <= 1e-5 * (1 + |ref|). */
static void assert_agree(const oq_tensor *ref, const oq_tensor *got, const char *what) {
    ck_assert_msg(ref->dtype == got->dtype && ref->rank == got->rank && ref->count == got->count,
                  "%s: type or shape differ", what);
    for (int d = 0; d < ref->rank; d++)
        ck_assert_msg(ref->dims[d] == got->dims[d], "%s: dim %d %lld vs %lld", what, d, (long long)ref->dims[d],
                      (long long)got->dims[d]);
    ck_assert_int_eq(ref->dtype, OQ_DTYPE_FLOAT);
    const float *a = ref->data, *b = got->data;
    for (size_t i = 0; i < ref->count; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        ck_assert_msg(d <= 1e-5 * (1.0 + fabs((double)a[i])), "%s: element %zu of %zu: fused %.9g, unfused %.9g",
                      what, i, ref->count, (double)b[i], (double)a[i]);
    }
}

/* Runs ins through plain (unfused) and fused: same outputs. The fused plan
 * runs twice, as buffers and per-run fusion state are reused. */
static void compare_plans(oq_plan *plain, oq_plan *fused, oq_tensor *const *ins, int n_in, const char *what) {
    oq_tensor *a[MAX_OUT], *b[MAX_OUT];
    int na = run_plan(plain, ins, n_in, a, NULL, NULL);
    for (int rep = 0; rep < 2; rep++) {
        int nb = run_plan(fused, ins, n_in, b, NULL, NULL);
        ck_assert_int_eq(na, nb);
        for (int i = 0; i < na; i++) {
            char w[160];
            snprintf(w, sizeof w, "%s: output %d (run %d)", what, i, rep);
            assert_agree(a[i], b[i], w);
        }
        free_outs(b, nb);
    }
    free_outs(a, na);
}

static int node_index(oq_model *m, const char *name) {
    const Onnx__GraphProto *g = tu_model_graph(m);
    for (size_t i = 0; i < g->n_node; i++)
        if (g->node[i]->name && strcmp(g->node[i]->name, name) == 0)
            return (int)i;
    ck_abort_msg("no node '%s'", name);
    return -1;
}

/* node ran inside producer (NULL: on its own) in plan p. */
static void expect_into(const oq_plan *p, oq_model *m, const char *node, const char *producer) {
    int got = oq_plan_fused_into(p, node_index(m, node));
    int want = producer ? node_index(m, producer) : -1;
    const Onnx__GraphProto *g = tu_model_graph(m);
    ck_assert_msg(got == want, "%s: fused into %s, want %s", node, got >= 0 ? g->node[got]->name : "(none)",
                  producer ? producer : "(none)");
}

static int count_fused(const oq_plan *p, oq_model *m) {
    int n = 0;
    for (size_t i = 0; i < tu_model_graph(m)->n_node; i++)
        n += oq_plan_fused_into(p, (int)i) >= 0;
    return n;
}

/* A Conv over nsp spatial dims: W [M, Cg, k...] and bias [M] random
 * initializers named after the node; pads `pad` on every side. */
static void conv_node(oq_model *m, const char *name, const char *x, const char *w_in, const char *y, int64_t M,
                      int64_t Cg, int nsp, int64_t k, int64_t stride, int64_t pad, int64_t group, bool bias) {
    Onnx__GraphProto *g = tu_model_graph(m);
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s_W", name);
    snprintf(bn, sizeof bn, "%s_B", name);
    if (!w_in) {
        int64_t dims[2 + 3] = {M, Cg, k, k, k};
        size_t count = (size_t)(M * Cg);
        for (int i = 0; i < nsp; i++)
            count *= (size_t)k;
        float *w = malloc(count * sizeof *w);
        ck_assert_ptr_nonnull(w);
        fill_random(w, count, 1.0f / sqrtf((float)(count / (size_t)M)));
        tu_model_init_f(m, g, wn, 2 + nsp, dims, w);
        free(w);
    }
    if (bias) {
        float b[512];
        ck_assert_int_le(M, 512);
        fill_random(b, (size_t)M, 0.5f);
        tu_model_init_f(m, g, bn, 1, (int64_t[]){M}, b);
    }
    const char *wname = w_in ? w_in : wn;
    Onnx__NodeProto *n = bias ? tu_model_node(m, "Conv", name, TU_LIST(x, wname, bn), TU_LIST(y))
                              : tu_model_node(m, "Conv", name, TU_LIST(x, wname), TU_LIST(y));
    int64_t pads[6] = {pad, pad, pad, pad, pad, pad}, strides[3] = {stride, stride, stride};
    tu_model_attr_ints(m, n, "pads", pads, (size_t)(2 * nsp));
    tu_model_attr_ints(m, n, "strides", strides, (size_t)nsp);
    if (group != 1)
        tu_model_attr_int(m, n, "group", group);
}

static void conv2d(oq_model *m, const char *name, const char *x, const char *y, int64_t M, int64_t C, int64_t k,
                   int64_t pad) {
    conv_node(m, name, x, NULL, y, M, C, 2, k, 1, pad, 1, true);
}

static void scalar_init(oq_model *m, const char *name, float v) {
    tu_model_init_f(m, tu_model_graph(m), name, 0, NULL, &v);
}

/* The backends and thread counts a model runs under: every model on one
 * and two threads, some also with OpenBLAS under the packed GEMMs. */
typedef struct {
    int threads;
    bool openblas;
} run_cfg;

static const run_cfg cfgs_all[] = {{1, false}, {2, false}, {1, true}, {2, true}};
static const run_cfg cfgs_threads[] = {{1, false}, {2, false}};

/* Builds both plans of m under cfg, compares them on ins, and calls
 * check(fused plan) for the fusion decisions. */
typedef void (*plan_check_fn)(const oq_plan *fused, oq_model *m);

static void run_model(oq_model *m, oq_tensor *const *ins, int n_in, const run_cfg *cfgs, size_t n_cfgs,
                      plan_check_fn check, const char *what) {
    for (size_t c = 0; c < n_cfgs; c++) {
        if (cfgs[c].openblas)
            ck_assert(oq_sgemm_backend_set(OQ_SGEMM_OPENBLAS));
        oq_plan *plain = new_plan(m, false, cfgs[c].threads), *fused = new_plan(m, true, cfgs[c].threads);
        for (size_t i = 0; i < tu_model_graph(m)->n_node; i++)
            ck_assert_int_eq(oq_plan_fused_into(plain, (int)i), -1);
        if (check)
            check(fused, m);
        char w[128];
        snprintf(w, sizeof w, "%s (%d thread%s%s)", what, cfgs[c].threads, cfgs[c].threads > 1 ? "s" : "",
                 cfgs[c].openblas ? ", openblas" : "");
        compare_plans(plain, fused, ins, n_in, w);
        oq_plan_free(plain);
        oq_plan_free(fused);
        oq_sgemm_backend_set(OQ_SGEMM_AUTO);
    }
}

static void free_ins(oq_tensor **ins, int n) {
    for (int i = 0; i < n; i++)
        oq_tensor_free(ins[i]);
}

/* a. Conv -> Relu */
static void check_conv_relu(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "relu", "conv");
    expect_into(p, m, "conv", NULL);
}

/* x [1, 3, h, w] -> 3x3 Conv "conv" (8 outputs) -> unary `op` named `name`
 * -> y, run fused and unfused on inputs of the given scale. */
static void run_conv_unary(int opset, const char *op, const char *name, int64_t h, int64_t w, float scale,
                           const run_cfg *cfgs, size_t n_cfgs, plan_check_fn check,
                           const char *what) {
    oq_model *m = tu_model_new(opset);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, h, w});
    conv2d(m, "conv", "x", "c", 8, 3, 3, 1);
    tu_model_node(m, op, name, TU_LIST("c"), TU_LIST("y"));
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    oq_tensor *x = random_f(4, (int64_t[]){1, 3, h, w}, scale);
    run_model(m, &x, 1, cfgs, n_cfgs, check, what);
    oq_tensor_free(x);
    oq_model_free(m);
}

START_TEST(conv_relu) {
    run_conv_unary(13, "Relu", "relu", 10, 12, 1.0f, cfgs_all, 4, check_conv_relu, "conv -> relu");
}
END_TEST

/* b. Add(conv_a, conv_b) -> Relu: the later Conv absorbs both, the earlier
 * one's output as the residual. */
static void check_two_convs(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "add", "conv_b");
    expect_into(p, m, "relu", "conv_b");
    expect_into(p, m, "conv_a", NULL);
}

START_TEST(residual_two_convs) {
    for (int order = 0; order < 2; order++) { /* Add(a, b) and Add(b, a) */
        oq_model *m = tu_model_new(13);
        tu_model_input_f(m, "x", 4, (int64_t[]){2, 4, 9, 9});
        conv2d(m, "conv_a", "x", "ca", 6, 4, 3, 1);
        conv2d(m, "conv_b", "x", "cb", 6, 4, 1, 0);
        if (order)
            tu_model_node(m, "Add", "add", TU_LIST("cb", "ca"), TU_LIST("s"));
        else
            tu_model_node(m, "Add", "add", TU_LIST("ca", "cb"), TU_LIST("s"));
        tu_model_node(m, "Relu", "relu", TU_LIST("s"), TU_LIST("y"));
        tu_model_output(m, "y", OQ_DTYPE_FLOAT);
        oq_tensor *x = random_f(4, (int64_t[]){2, 4, 9, 9}, 1.0f);
        run_model(m, &x, 1, cfgs_all, 4, check_two_convs, order ? "Add(b, a) -> relu" : "Add(a, b) -> relu");
        oq_tensor_free(x);
        oq_model_free(m);
    }
}
END_TEST

/* c. HardSwish spelled Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6), at
 * opset 9 (Clip attributes) and 13 (Clip inputs), x in either Mul slot;
 * and HardSwish-14. */
static void check_hswish_chain(const oq_plan *p, oq_model *m) {
    const char *chain[] = {"add3", "clip", "mul", "div6"};
    for (int i = 0; i < 4; i++)
        expect_into(p, m, chain[i], "conv");
}

static void check_hswish14(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "hswish", "conv");
}

START_TEST(hardswish_chain) {
    for (int variant = 0; variant < 4; variant++) {
        int opset = variant & 1 ? 13 : 9;
        bool x_second = variant & 2;
        oq_model *m = tu_model_new(opset);
        tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 11, 13});
        conv_node(m, "conv", "x", NULL, "c", 8, 3, 2, 3, 2, 1, 1, true); /* stride 2 */
        scalar_init(m, "three", 3.0f);
        scalar_init(m, "six", 6.0f);
        scalar_init(m, "zero", 0.0f);
        tu_model_node(m, "Add", "add3", TU_LIST("c", "three"), TU_LIST("a"));
        if (opset < 11) {
            Onnx__NodeProto *cl = tu_model_node(m, "Clip", "clip", TU_LIST("a"), TU_LIST("k"));
            tu_model_attr_float(m, cl, "min", 0.0f);
            tu_model_attr_float(m, cl, "max", 6.0f);
        } else {
            tu_model_node(m, "Clip", "clip", TU_LIST("a", "zero", "six"), TU_LIST("k"));
        }
        if (x_second)
            tu_model_node(m, "Mul", "mul", TU_LIST("k", "c"), TU_LIST("p"));
        else
            tu_model_node(m, "Mul", "mul", TU_LIST("c", "k"), TU_LIST("p"));
        tu_model_node(m, "Div", "div6", TU_LIST("p", "six"), TU_LIST("y"));
        tu_model_output(m, "y", OQ_DTYPE_FLOAT);
        oq_tensor *x = random_f(4, (int64_t[]){1, 3, 11, 13}, 3.0f);
        char what[64];
        snprintf(what, sizeof what, "hardswish chain opset %d, x %s in Mul", opset, x_second ? "second" : "first");
        run_model(m, &x, 1, cfgs_threads, 2, check_hswish_chain, what);
        oq_tensor_free(x);
        oq_model_free(m);
    }

    run_conv_unary(14, "HardSwish", "hswish", 11, 13, 3.0f, cfgs_threads, 2, check_hswish14, "HardSwish-14");
}
END_TEST

/* Every step kind in one chain after a Conv, longer than a program holds:
 * the first steps fuse, the rest run on their own reading the fused value. */
static void check_long_chain(const oq_plan *p, oq_model *m) {
    /* 1+1+1+1+1+1+2 = 8 steps through "clip"; "hsig" would be the 9th */
    const char *fused[] = {"add", "sub", "mul", "div", "leaky", "hsw", "clip"};
    for (int i = 0; i < 7; i++)
        expect_into(p, m, fused[i], "conv");
    expect_into(p, m, "hsig", NULL);
    expect_into(p, m, "relu", NULL);
}

START_TEST(long_chain) {
    oq_model *m = tu_model_new(14);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 4, 8, 8});
    conv2d(m, "conv", "x", "c", 5, 4, 3, 1);
    scalar_init(m, "k1", 0.75f);
    scalar_init(m, "k2", -1.25f);
    tu_model_init_f(m, tu_model_graph(m), "k3", 1, (int64_t[]){1}, (const float[]){1.5f});
    tu_model_node(m, "Add", "add", TU_LIST("k1", "c"), TU_LIST("v1"));
    tu_model_node(m, "Sub", "sub", TU_LIST("v1", "k2"), TU_LIST("v2"));
    tu_model_node(m, "Mul", "mul", TU_LIST("v2", "k3"), TU_LIST("v3"));
    tu_model_node(m, "Div", "div", TU_LIST("v3", "k2"), TU_LIST("v4"));
    tu_model_attr_float(m, tu_model_node(m, "LeakyRelu", "leaky", TU_LIST("v4"), TU_LIST("v5")), "alpha", 0.2f);
    tu_model_node(m, "HardSwish", "hsw", TU_LIST("v5"), TU_LIST("v6"));
    tu_model_node(m, "Clip", "clip", TU_LIST("v6", "k2", "k1"), TU_LIST("v7"));
    Onnx__NodeProto *hs = tu_model_node(m, "HardSigmoid", "hsig", TU_LIST("v7"), TU_LIST("v8"));
    tu_model_attr_float(m, hs, "alpha", 0.3f);
    tu_model_node(m, "Relu", "relu", TU_LIST("v8"), TU_LIST("y"));
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    oq_tensor *x = random_f(4, (int64_t[]){1, 4, 8, 8}, 2.0f);
    run_model(m, &x, 1, cfgs_threads, 2, check_long_chain, "long chain");
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* d. What must not fuse. */
static void check_not_fused(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "relu_out", NULL);   /* its input is a graph output */
    expect_into(p, m, "relu_two", NULL);   /* its input has another reader */
    expect_into(p, m, "sig_two", NULL);
    expect_into(p, m, "mul_other", NULL);  /* Mul(x, z) with z not of the chain */
    expect_into(p, m, "relu_other", NULL);
    expect_into(p, m, "relu_mid", "conv_mid"); /* the chain ends at a value read twice */
    expect_into(p, m, "clip_mid", NULL);
    expect_into(p, m, "neg_mid", NULL);
    expect_into(p, m, "relu_outmid", "conv_outmid"); /* ... or at a graph output */
    expect_into(p, m, "clip_outmid", NULL);
    expect_into(p, m, "sub_rev", NULL);    /* 3 - x is not a step on x */
    expect_into(p, m, "add_vec", NULL);    /* per-channel constant */
}

START_TEST(not_fused) {
    oq_model *m = tu_model_new(13);
    Onnx__GraphProto *g = tu_model_graph(m);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 8, 8});
    tu_model_input_f(m, "z", 4, (int64_t[]){1, 4, 8, 8});
    scalar_init(m, "three", 3.0f);
    scalar_init(m, "lo", -0.5f);
    scalar_init(m, "hi", 0.5f);
    tu_model_init_f(m, g, "per_ch", 4, (int64_t[]){1, 4, 1, 1}, (const float[]){0.1f, 0.2f, 0.3f, 0.4f});
    conv2d(m, "conv_out", "x", "c_out", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu_out", TU_LIST("c_out"), TU_LIST("y_out"));
    conv2d(m, "conv_two", "x", "c_two", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu_two", TU_LIST("c_two"), TU_LIST("y_two"));
    tu_model_node(m, "Sigmoid", "sig_two", TU_LIST("c_two"), TU_LIST("s_two"));
    conv2d(m, "conv_other", "x", "c_other", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu_other", TU_LIST("c_other"), TU_LIST("r_other"));
    tu_model_node(m, "Mul", "mul_other", TU_LIST("c_other", "z"), TU_LIST("y_other"));
    conv2d(m, "conv_mid", "x", "c_mid", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu_mid", TU_LIST("c_mid"), TU_LIST("r_mid"));
    tu_model_node(m, "Clip", "clip_mid", TU_LIST("r_mid", "lo", "hi"), TU_LIST("y_mid"));
    tu_model_node(m, "Neg", "neg_mid", TU_LIST("r_mid"), TU_LIST("n_mid"));
    conv2d(m, "conv_outmid", "x", "c_outmid", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu_outmid", TU_LIST("c_outmid"), TU_LIST("r_outmid"));
    tu_model_node(m, "Clip", "clip_outmid", TU_LIST("r_outmid", "lo", "hi"), TU_LIST("y_outmid"));
    conv2d(m, "conv_rev", "x", "c_rev", 4, 3, 3, 1);
    tu_model_node(m, "Sub", "sub_rev", TU_LIST("three", "c_rev"), TU_LIST("y_rev"));
    conv2d(m, "conv_vec", "x", "c_vec", 4, 3, 3, 1);
    tu_model_node(m, "Add", "add_vec", TU_LIST("c_vec", "per_ch"), TU_LIST("y_vec"));
    /* the other values, more than MAX_OUT, concatenated into one output */
    const char *rest[] = {"y_out", "y_two", "s_two", "r_other", "y_other", "y_mid", "n_mid", "y_outmid",
                          "y_rev", "y_vec"};
    tu_model_attr_int(m, tu_model_node(m, "Concat", "cat", rest, 10, TU_LIST("all")), "axis", 1);
    tu_model_output(m, "all", OQ_DTYPE_FLOAT);
    tu_model_output(m, "c_out", OQ_DTYPE_FLOAT);
    tu_model_output(m, "r_outmid", OQ_DTYPE_FLOAT);
    oq_tensor *ins[2] = {random_f(4, (int64_t[]){1, 3, 8, 8}, 1.0f), random_f(4, (int64_t[]){1, 4, 8, 8}, 1.0f)};
    run_model(m, ins, 2, cfgs_threads, 2, check_not_fused, "not fused");
    free_ins(ins, 2);
    oq_model_free(m);
}
END_TEST

/* e. A residual that broadcasts at run time: the plan fuses the Add, the
 * run sees the shapes differ and runs the nodes one by one. */
static void check_bcast(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "add_mean", "conv_mean");
    expect_into(p, m, "relu_mean", "conv_mean");
    expect_into(p, m, "add_in", "conv_in");
    expect_into(p, m, "relu_in", "conv_in");
}

START_TEST(residual_broadcast) {
    oq_model *m = tu_model_new(13);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 4, 7, 9});
    tu_model_input_f(m, "r", -1, NULL); /* any shape */
    Onnx__NodeProto *rm = tu_model_node(m, "ReduceMean", "mean", TU_LIST("x"), TU_LIST("xm"));
    tu_model_attr_ints(m, rm, "axes", TU_I64S(2, 3)); /* [1, 4, 1, 1] */
    conv2d(m, "conv_mean", "x", "cm", 4, 4, 3, 1);
    tu_model_node(m, "Add", "add_mean", TU_LIST("cm", "xm"), TU_LIST("am"));
    tu_model_node(m, "Relu", "relu_mean", TU_LIST("am"), TU_LIST("ym"));
    conv2d(m, "conv_in", "x", "ci", 4, 4, 3, 1);
    tu_model_node(m, "Add", "add_in", TU_LIST("r", "ci"), TU_LIST("ai"));
    tu_model_node(m, "Relu", "relu_in", TU_LIST("ai"), TU_LIST("yi"));
    tu_model_output(m, "ym", OQ_DTYPE_FLOAT);
    tu_model_output(m, "yi", OQ_DTYPE_FLOAT);
    /* the same plans on residuals that do and do not broadcast, alternately */
    const int64_t shapes[][4] = {{1, 4, 1, 1}, {1, 4, 7, 9}, {1, 1, 7, 9}, {1, 4, 7, 9},
                                 {4, 7, 9, 0}, {2, 4, 7, 9}, {1, 4, 7, 9}};
    const int ranks[] = {4, 4, 4, 4, 3, 4, 4};
    for (size_t c = 0; c < 2; c++) {
        int threads = cfgs_threads[c].threads;
        oq_plan *plain = new_plan(m, false, threads), *fused = new_plan(m, true, threads);
        check_bcast(fused, m);
        for (size_t s = 0; s < sizeof ranks / sizeof ranks[0]; s++) {
            oq_tensor *ins[2] = {random_f(4, (int64_t[]){1, 4, 7, 9}, 1.0f), random_f(ranks[s], shapes[s], 1.0f)};
            char what[64];
            snprintf(what, sizeof what, "residual shape %zu, %d threads", s, threads);
            compare_plans(plain, fused, ins, 2, what);
            free_ins(ins, 2);
        }
        oq_plan_free(plain);
        oq_plan_free(fused);
    }
    oq_model_free(m);
}
END_TEST

/* f. Add(conv_a, r) with r computed after conv_a (topological order) but
 * before the Add: conv_a must not take the Add (r does not exist yet when
 * it runs). When r is another Conv's output, that Conv may take it. */
static void check_late_residual(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "add_sig", NULL);
    expect_into(p, m, "relu_sig", NULL);
    expect_into(p, m, "add_conv", "conv_late");
    expect_into(p, m, "relu_conv", "conv_late");
    expect_into(p, m, "conv_early2", NULL);
}

START_TEST(late_residual) {
    oq_model *m = tu_model_new(13);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 4, 6, 6});
    conv2d(m, "conv_early", "x", "ce", 4, 4, 3, 1);
    tu_model_node(m, "Sigmoid", "sig", TU_LIST("x"), TU_LIST("late"));
    tu_model_node(m, "Add", "add_sig", TU_LIST("ce", "late"), TU_LIST("as"));
    tu_model_node(m, "Relu", "relu_sig", TU_LIST("as"), TU_LIST("ys"));
    conv2d(m, "conv_early2", "x", "ce2", 4, 4, 3, 1);
    conv2d(m, "conv_late", "x", "cl", 4, 4, 1, 0);
    tu_model_node(m, "Add", "add_conv", TU_LIST("ce2", "cl"), TU_LIST("ac"));
    tu_model_node(m, "Relu", "relu_conv", TU_LIST("ac"), TU_LIST("yc"));
    tu_model_output(m, "ys", OQ_DTYPE_FLOAT);
    tu_model_output(m, "yc", OQ_DTYPE_FLOAT);
    /* the premise: the executor runs nodes in the order listed (valid here),
     * so "sig" runs after "conv_early" */
    oq_error err = {0};
    oq_graph *g = NULL;
    ck_assert(oq_graph_new(m, &g, &err) == OQ_OK);
    int n_topo = 0;
    const int *topo = oq_graph_topo_order(g, &n_topo);
    for (int i = 0; i < n_topo; i++)
        ck_assert_int_eq(topo[i], i);
    oq_graph_free(g);
    oq_tensor *x = random_f(4, (int64_t[]){1, 4, 6, 6}, 1.0f);
    run_model(m, &x, 1, cfgs_threads, 2, check_late_residual, "late residual");
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* g. The Conv paths, each with a residual (its offset is computed per
 * path) and an activation after it. */
static void check_path(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "add", "conv");
    expect_into(p, m, "act", "conv");
}

typedef struct {
    const char *what;
    int64_t N, C, H, W, M, k, stride, pad, group;
    int nsp;
    bool w_input; /* W a graph input: the program runs after the GEMMs */
    bool clip;    /* Clip(0, 6) instead of Relu */
    bool no_simd; /* the portable kernels (oq_nn_conv_set_simd) */
} path_case;

static void run_path(const path_case *pc) {
    oq_model *m = tu_model_new(13);
    int rank = 2 + pc->nsp;
    int64_t xd[5] = {pc->N, pc->C, pc->H, pc->W, pc->W};
    int64_t osz = (pc->H + 2 * pc->pad - pc->k) / pc->stride + 1;
    int64_t osw = (pc->W + 2 * pc->pad - pc->k) / pc->stride + 1;
    int64_t yd[5] = {pc->N, pc->M, pc->nsp == 1 ? osw : osz, osw, osw};
    if (pc->nsp == 1)
        xd[2] = pc->W;
    int64_t Cg = pc->C / pc->group;
    int64_t wd[5] = {pc->M, Cg, pc->k, pc->k, pc->k};
    tu_model_input_f(m, "x", rank, xd);
    tu_model_input_f(m, "r", rank, yd);
    if (pc->w_input)
        tu_model_input_f(m, "w", rank, wd);
    conv_node(m, "conv", "x", pc->w_input ? "w" : NULL, "c", pc->M, Cg, pc->nsp, pc->k, pc->stride, pc->pad,
              pc->group, true);
    tu_model_node(m, "Add", "add", TU_LIST("c", "r"), TU_LIST("a"));
    if (pc->clip) {
        scalar_init(m, "zero", 0.0f);
        scalar_init(m, "six", 6.0f);
        tu_model_node(m, "Clip", "act", TU_LIST("a", "zero", "six"), TU_LIST("y"));
    } else {
        tu_model_node(m, "Relu", "act", TU_LIST("a"), TU_LIST("y"));
    }
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    oq_tensor *ins[3] = {random_f(rank, xd, 2.0f), random_f(rank, yd, 2.0f), NULL};
    if (pc->w_input)
        ins[2] = random_f(rank, wd, 0.3f);
    bool simd = oq_nn_conv_set_simd(!pc->no_simd);
    run_model(m, ins, pc->w_input ? 3 : 2, cfgs_all, 4, check_path, pc->what);
    oq_nn_conv_set_simd(simd);
    free_ins(ins, pc->w_input ? 3 : 2);
    oq_model_free(m);
}

static const path_case paths[] = {
    /* what, N, C, H, W (H unused for 1-D), M, k, stride, pad, group, nsp, W input, Clip, portable */
    {"depthwise 3x3 -> Clip", 1, 8, 9, 11, 8, 3, 1, 1, 8, 2, false, true, false},
    {"depthwise 3x3 s2, batch 3", 3, 6, 10, 10, 6, 3, 2, 1, 6, 2, false, true, false},
    {"depthwise 5x5 x2 channel multiplier", 2, 4, 7, 7, 8, 5, 1, 2, 4, 2, false, false, false},
    {"depthwise 7x7 (any-shape kernel)", 1, 4, 12, 12, 4, 7, 1, 3, 4, 2, false, true, false},
    {"depthwise 3x3, portable kernel", 2, 8, 9, 11, 8, 3, 1, 1, 8, 2, false, true, true},
    {"W a graph input, 3x3", 1, 5, 9, 9, 7, 3, 1, 1, 1, 2, true, false, false},
    {"W a graph input, batched", 3, 5, 6, 6, 7, 3, 1, 1, 1, 2, true, false, false},
    {"W a graph input, 1x1 direct", 2, 16, 16, 16, 8, 1, 1, 0, 1, 2, true, false, false},
    {"batched small images N=4 7x7", 4, 6, 7, 7, 10, 3, 1, 1, 1, 2, false, false, false},
    {"batched small images N=5 7x7 grouped", 5, 6, 7, 7, 10, 3, 1, 1, 2, 2, false, true, false},
    {"1x1 direct GEMM", 1, 16, 16, 16, 12, 1, 1, 0, 1, 2, false, false, false},
    {"1x1 small images batched", 3, 16, 5, 5, 12, 1, 1, 0, 1, 2, false, false, false},
    {"1x1 grouped", 2, 8, 16, 16, 6, 1, 1, 0, 2, 2, false, false, false},
    {"3x3 per image, batch 2", 2, 3, 20, 20, 9, 3, 1, 1, 1, 2, false, false, false},
    {"3x3 per image, portable packers", 2, 3, 20, 20, 9, 3, 1, 1, 1, 2, false, false, true},
    {"3x3 grouped per image", 1, 6, 17, 17, 9, 3, 1, 1, 3, 2, false, true, false},
    {"1-D conv", 2, 6, 1, 40, 5, 3, 1, 1, 1, 1, false, false, false},
    {"1-D conv, tiled columns", 1, 64, 1, 3000, 8, 3, 1, 1, 1, 1, false, false, false},
    {"1x1 deep, small images, tiled columns", 2, 2100, 15, 17, 4, 1, 1, 0, 1, 2, false, false, false},
};

START_TEST(conv_paths) {
    run_path(&paths[_i]);
}
END_TEST

/* h. The observer sees graph inputs and the values computed, not the
 * fused-away intermediates. */
typedef struct {
    char names[32][32];
    int n;
} seen;

static oq_status record(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    (void)t;
    (void)err;
    seen *s = ctx;
    ck_assert_int_lt(s->n, 32);
    snprintf(s->names[s->n++], sizeof s->names[0], "%s", name);
    return OQ_OK;
}

static bool was_seen(const seen *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return true;
    return false;
}

/* Chains inside If branches (planned like the main graph), reading a
 * residual from the enclosing graph; and a main-graph chain whose output a
 * branch reads implicitly. Compared run for run, both branches. */
static void branch_conv(oq_model *m, Onnx__GraphProto *b, const char *sfx) {
    char cn[32], wn[32], bn[32], c[32], a[32], y[32], add[32], relu[32];
    snprintf(cn, sizeof cn, "conv_%s", sfx);
    snprintf(wn, sizeof wn, "W_%s", sfx);
    snprintf(bn, sizeof bn, "B_%s", sfx);
    snprintf(c, sizeof c, "c_%s", sfx);
    snprintf(a, sizeof a, "a_%s", sfx);
    snprintf(y, sizeof y, "y_%s", sfx);
    snprintf(add, sizeof add, "add_%s", sfx);
    snprintf(relu, sizeof relu, "relu_%s", sfx);
    float w[4 * 3 * 9], bias[4];
    fill_random(w, 4 * 3 * 9, 0.3f);
    fill_random(bias, 4, 0.3f);
    tu_model_init_f(m, tu_model_graph(m), wn, 4, (int64_t[]){4, 3, 3, 3}, w);
    tu_model_init_f(m, tu_model_graph(m), bn, 1, (int64_t[]){4}, bias);
    Onnx__NodeProto *n = tu_model_node_in(m, b, "Conv", cn, TU_LIST("x", wn, bn), TU_LIST(c));
    tu_model_attr_ints(m, n, "pads", TU_I64S(1, 1, 1, 1));
    tu_model_node_in(m, b, "Add", add, TU_LIST("rr", c), TU_LIST(a));
    tu_model_node_in(m, b, "Relu", relu, TU_LIST(a), TU_LIST(y));
    oq_error err = {0};
    ck_assert_msg(oq_edit_add_graph_output(m, b, y, OQ_DTYPE_FLOAT, -1, NULL, &err) == OQ_OK, "%s", err.msg);
}

static void check_if(const oq_plan *p, oq_model *m) {
    expect_into(p, m, "relu0", "conv0");
}

START_TEST(if_branches) {
    oq_model *m = tu_model_new(13);
    oq_error err = {0};
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 8, 8});
    ck_assert(oq_edit_add_graph_input(m, tu_model_graph(m), "cond", OQ_DTYPE_BOOL, 0, NULL, &err) == OQ_OK);
    conv2d(m, "conv0", "x", "c0", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu0", TU_LIST("c0"), TU_LIST("rr"));
    Onnx__NodeProto *iff = tu_model_node(m, "If", "if", TU_LIST("cond"), TU_LIST("y"));
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    Onnx__GraphProto *tb, *eb;
    ck_assert(oq_edit_graph_new(m, "then", &tb, &err) == OQ_OK);
    ck_assert(oq_edit_graph_new(m, "else", &eb, &err) == OQ_OK);
    branch_conv(m, tb, "t");
    branch_conv(m, eb, "e");
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "then_branch", tb, &err) == OQ_OK);
    ck_assert(oq_edit_set_attr_graph_new(m, iff, "else_branch", eb, &err) == OQ_OK);
    oq_tensor *ins[2] = {random_f(4, (int64_t[]){1, 3, 8, 8}, 1.0f), tu_tensor_new(OQ_DTYPE_BOOL, 0, NULL)};
    for (int c = 0; c < 2; c++) {
        *(uint8_t *)ins[1]->data = (uint8_t)c;
        run_model(m, ins, 2, cfgs_threads, 2, check_if, c ? "If, then branch" : "If, else branch");
        /* the branch's chain fused too: its intermediates never appear */
        for (int fuse = 0; fuse < 2; fuse++) {
            oq_plan *p = new_plan(m, fuse, 1);
            seen sn = {.n = 0};
            oq_tensor *out[MAX_OUT];
            free_outs(out, run_plan(p, ins, 2, out, record, &sn));
            const char *mid = c ? "a_t" : "a_e", *last = c ? "y_t" : "y_e";
            ck_assert_int_eq(was_seen(&sn, mid), !fuse);
            ck_assert(was_seen(&sn, last));
            ck_assert_int_eq(was_seen(&sn, "c0"), !fuse);
            oq_plan_free(p);
        }
    }
    free_ins(ins, 2);
    oq_model_free(m);
}
END_TEST

START_TEST(observer) {
    oq_model *m = tu_model_new(13);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 8, 8});
    conv2d(m, "conv_a", "x", "ca", 4, 3, 3, 1);
    conv2d(m, "conv_b", "x", "cb", 4, 3, 3, 1);
    tu_model_node(m, "Add", "add", TU_LIST("ca", "cb"), TU_LIST("s"));
    tu_model_node(m, "Relu", "relu", TU_LIST("s"), TU_LIST("r"));
    tu_model_node(m, "Sigmoid", "sig", TU_LIST("r"), TU_LIST("y"));
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    oq_tensor *x = random_f(4, (int64_t[]){1, 3, 8, 8}, 1.0f), *out[MAX_OUT];
    const char *all[] = {"x", "ca", "cb", "s", "r", "y"};
    for (int fuse = 0; fuse < 2; fuse++) {
        oq_plan *p = new_plan(m, fuse, 1);
        seen s = {.n = 0};
        int n = run_plan(p, &x, 1, out, record, &s);
        free_outs(out, n);
        for (int i = 0; i < 6; i++) {
            bool want = !fuse || (strcmp(all[i], "cb") != 0 && strcmp(all[i], "s") != 0);
            ck_assert_msg(was_seen(&s, all[i]) == want, "fuse %d: '%s' seen %d, want %d", fuse, all[i],
                          (int)was_seen(&s, all[i]), (int)want);
        }
        ck_assert_int_eq(s.n, fuse ? 4 : 6); /* each once */
        oq_plan_free(p);
    }
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* An observer that stops the run at a fused group's output. */
static oq_status stop_at_r(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    (void)ctx;
    (void)t;
    if (strcmp(name, "r") == 0)
        return oq_err(err, OQ_ECANCELLED, "stopped at %s", name);
    return OQ_OK;
}

START_TEST(observer_stops) {
    oq_model *m = tu_model_new(13);
    tu_model_input_f(m, "x", 4, (int64_t[]){1, 3, 8, 8});
    conv2d(m, "conv", "x", "c", 4, 3, 3, 1);
    tu_model_node(m, "Relu", "relu", TU_LIST("c"), TU_LIST("r"));
    tu_model_node(m, "Sigmoid", "sig", TU_LIST("r"), TU_LIST("y"));
    tu_model_output(m, "y", OQ_DTYPE_FLOAT);
    oq_tensor *x = random_f(4, (int64_t[]){1, 3, 8, 8}, 1.0f), *out[MAX_OUT];
    oq_plan *p = new_plan(m, true, 1);
    oq_error err = {0};
    ck_assert_int_eq(oq_plan_run(p, (const oq_tensor *const *)&x, 1, out, stop_at_r, NULL, &err), OQ_ECANCELLED);
    ck_assert_msg(strstr(err.msg, "stopped at r"), "%s", err.msg);
    /* and the plan still runs afterwards */
    oq_plan *plain = new_plan(m, false, 1);
    compare_plans(plain, p, &x, 1, "after a stopped run");
    oq_plan_free(plain);
    oq_plan_free(p);
    oq_tensor_free(x);
    oq_model_free(m);
}
END_TEST

/* i. Real models: folded as 'onnxq run' folds them, fused and unfused
 * outputs agree on calibration rows, and the expected chains fuse. */
static void real_model(const char *key, int64_t rows, int64_t batch, plan_check_fn check) {
    const tu_model_info *mi = NULL;
    for (size_t i = 0; i < tu_model_count; i++)
        if (strcmp(tu_models[i].key, key) == 0)
            mi = &tu_models[i];
    ck_assert_ptr_nonnull(mi);
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_msg(oq_model_load_file(tu_shared_path(mi->model), NULL, &m, &err) == OQ_OK, "%s", err.msg);
    int moved = 0, folded = 0;
    ck_assert_msg(oq_constants_to_initializers(m, &moved, &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(oq_fold_batchnorm(m, &folded, &err) == OQ_OK, "%s", err.msg);
    oq_tensor *calib = tu_calib_set(mi);
    ck_assert_int_ge(calib->dims[0], rows);
    for (int threads = 1; threads <= 2; threads++) {
        oq_plan *plain = new_plan(m, false, threads), *fused = new_plan(m, true, threads);
        /* every fused node went into a Conv */
        const Onnx__GraphProto *g = tu_model_graph(m);
        for (size_t i = 0; i < g->n_node; i++) {
            int into = oq_plan_fused_into(fused, (int)i);
            if (into >= 0)
                ck_assert_str_eq(g->node[into]->op_type, "Conv");
        }
        check(fused, m);
        for (int64_t r = 0; r + batch <= rows; r += batch) {
            oq_tensor *x = tu_rows(calib, r, batch);
            char what[96];
            snprintf(what, sizeof what, "%s rows %lld..%lld, %d threads", key, (long long)r,
                     (long long)(r + batch - 1), threads);
            compare_plans(plain, fused, &x, 1, what);
            oq_tensor_free(x);
        }
        oq_plan_free(plain);
        oq_plan_free(fused);
    }
    oq_tensor_free(calib);
    oq_model_free(m);
}

/* Every node of these op types fused; returns how many there are. */
static int expect_all_fused(const oq_plan *p, oq_model *m, const char *op) {
    const Onnx__GraphProto *g = tu_model_graph(m);
    int n = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        if (strcmp(g->node[i]->op_type, op) != 0)
            continue;
        n++;
        ck_assert_msg(oq_plan_fused_into(p, (int)i) >= 0, "%s %s not fused", op, g->node[i]->name);
    }
    return n;
}

/* ppocr_cls (BatchNormalizations folded): HardSwish spelled Add/Clip/Mul/Div
 * 18 times, each whole chain after a Conv; 15 Relu and the 9 SE blocks'
 * HardSigmoid after Convs; 7 residual Adds. Not the SE Muls (a [N, C, 1, 1]
 * factor) nor the classifier's Add after MatMul. */
static void check_ppocr(const oq_plan *p, oq_model *m) {
    ck_assert_int_eq(expect_all_fused(p, m, "Clip"), 18);
    ck_assert_int_eq(expect_all_fused(p, m, "Div"), 18);
    ck_assert_int_eq(expect_all_fused(p, m, "Relu"), 15);
    ck_assert_int_eq(expect_all_fused(p, m, "HardSigmoid"), 9);
    int n = count_fused(p, m);
    ck_assert_msg(n >= 18 * 4 + 15 + 9 + 7, "ppocr_cls: %d nodes fused", n);
}

/* fmnist_cnn: the three Conv -> Relu (not the Relu after the Gemm). */
static void check_fmnist(const oq_plan *p, oq_model *m) {
    const Onnx__GraphProto *g = tu_model_graph(m);
    int relus = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        if (strcmp(g->node[i]->op_type, "Relu") != 0)
            continue;
        int into = oq_plan_fused_into(p, (int)i);
        relus += into >= 0;
        ck_assert_int_eq(into >= 0, i > 0 && strcmp(g->node[i - 1]->op_type, "Conv") == 0);
    }
    ck_assert_int_eq(relus, 3);
    ck_assert_int_eq(count_fused(p, m), 3);
}

START_TEST(ppocr_cls) {
    bool small = tu_sanitized();
    real_model("ppocr_cls", small ? 2 : 8, small ? 2 : 4, check_ppocr);
}
END_TEST

START_TEST(fmnist_cnn) {
    real_model("fmnist_cnn", tu_sanitized() ? 8 : 32, 8, check_fmnist);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fuse");
    TCase *tc = tcase_create("programs");
    tcase_add_test(tc, post_every_step);
    tcase_add_test(tc, post_programs);
    suite_add_tcase(s, tc);
    tc = tcase_create("matcher");
    tcase_add_test(tc, match_unary);
    tcase_add_test(tc, match_clip);
    tcase_add_test(tc, match_binary);
    suite_add_tcase(s, tc);
    tc = tcase_create("executor");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, conv_relu);
    tcase_add_test(tc, residual_two_convs);
    tcase_add_test(tc, hardswish_chain);
    tcase_add_test(tc, long_chain);
    tcase_add_test(tc, not_fused);
    tcase_add_test(tc, residual_broadcast);
    tcase_add_test(tc, late_residual);
    tcase_add_loop_test(tc, conv_paths, 0, (int)(sizeof paths / sizeof paths[0]));
    tcase_add_test(tc, if_branches);
    tcase_add_test(tc, observer);
    tcase_add_test(tc, observer_stops);
    suite_add_tcase(s, tc);
    tc = tcase_create("models");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, ppocr_cls);
    tcase_add_test(tc, fmnist_cnn);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
