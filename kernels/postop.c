/* postop.c: which single nodes are element-wise post-op steps, and the
 * loop that applies a program of steps to a producer's output. The step
 * formulas are the element-wise kernels' own (ops_elementwise*.c), so a
 * fused chain computes what the nodes would, up to the compiler fusing a
 * multiply and an add (-ffp-contract). */
#include "postop.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "graph.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POST_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define POST_HOT
#endif

/* Whole blocks of 32 values ride in two vector registers through every
 * step (GCC vector extensions: AVX-512 in the v4 clone, pairs of AVX2 or
 * SSE registers in the others): one load and one store per value, however
 * long the program. */
typedef float post_v __attribute__((vector_size(64)));
/* The helpers below are always inlined, so no vector crosses a call and
 * the ABI note about 64-byte vectors without AVX-512 does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef int32_t post_vi __attribute__((vector_size(64)));

#define POST_VLEN 16

static inline __attribute__((always_inline)) post_v vsel(post_vi m, post_v a, post_v b) {
    return (post_v)(((post_vi)a & m) | ((post_vi)b & ~m)); /* m ? a : b */
}

static inline __attribute__((always_inline)) post_v vload(const float *p) {
    post_v v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) post_v vclamp01(post_v v) {
    const post_v zero = {0}, one = zero + 1.0f;
    v = vsel(v < zero, zero, v);
    return vsel(v > one, one, v);
}

static inline __attribute__((always_inline)) post_v vstep(const oq_post_step *st, post_v v, post_v x,
                                                          const float *res) {
    const post_v zero = {0}, a = zero + st->a, b = zero + st->b;
    switch (st->kind) {
    case OQ_POST_MAX_C: return vsel(v < a, a, v);
    case OQ_POST_MIN_C: return vsel(v > a, a, v);
    case OQ_POST_ADD_C: return v + a;
    case OQ_POST_SUB_C: return v - a;
    case OQ_POST_MUL_C: return v * a;
    case OQ_POST_DIV_C: return v / a;
    case OQ_POST_LEAKY: return vsel(v < zero, a * v, v);
    case OQ_POST_HARDSIGMOID: return vclamp01(a * v + b);
    case OQ_POST_HARDSWISH: return v * vclamp01(a * v + b);
    case OQ_POST_ADD_RES: return v + vload(res);
    case OQ_POST_MUL_X: return v * x;
    }
    return v;
}

/* 32 values in place (res: theirs, or NULL). */
static inline __attribute__((always_inline)) void post_block(const oq_post *p, float *restrict v,
                                                             const float *restrict res) {
    post_v v0 = vload(v), v1 = vload(v + POST_VLEN), x0 = v0, x1 = v1;
    for (int s = 0; s < p->n; s++) {
        v0 = vstep(&p->steps[s], v0, x0, res);
        v1 = vstep(&p->steps[s], v1, x1, res ? res + POST_VLEN : NULL);
    }
    memcpy(v, &v0, sizeof v0);
    memcpy(v + POST_VLEN, &v1, sizeof v1);
}

/* n values in place: whole blocks of 32, then the tail through a padded
 * copy, so every value takes the same code. */
static inline __attribute__((always_inline)) void post_run(const oq_post *p, float *restrict v,
                                                           const float *restrict res, size_t n) {
    size_t i = 0;
    for (; i + 2 * POST_VLEN <= n; i += 2 * POST_VLEN)
        post_block(p, v + i, res ? res + i : NULL);
    if (i == n)
        return;
    float tv[2 * POST_VLEN] = {0}, tr[2 * POST_VLEN] = {0};
    size_t m = n - i;
    memcpy(tv, v + i, m * sizeof *tv);
    if (res)
        memcpy(tr, res + i, m * sizeof *tr);
    post_block(p, tv, res ? tr : NULL);
    memcpy(v + i, tv, m * sizeof *tv);
}

POST_HOT void oq_post_apply(const oq_post *p, float *dst, const float *src, const float *res, size_t n) {
    if (dst != src)
        memmove(dst, src, n * sizeof *dst);
    post_run(p, dst, res, n);
}

POST_HOT void oq_post_apply_rows(const oq_post *p, float *c, size_t ldc, size_t rows, size_t cols,
                                 const float *res) {
    for (size_t r = 0; r < rows; r++)
        post_run(p, c + r * ldc, res ? res + r * ldc : NULL, cols);
}

/* ---- matching single nodes ------------------------------------------------ */

/* A float constant of one element and rank <= 1: broadcasting it leaves the
 * running value's shape (rank >= 1) as it is. */
static bool scalar_const(const oq_post_in *in, float *out) {
    const oq_tensor *t = in->constant;
    if (!in->present || !t || t->dtype != OQ_DTYPE_FLOAT || t->count != 1 || t->rank > 1 || !t->data)
        return false;
    *out = ((const float *)t->data)[0];
    return true;
}

static bool is_onnx(const Onnx__NodeProto *np) {
    return !np->domain || !*np->domain || strcmp(np->domain, "ai.onnx") == 0;
}

static bool op_is(const Onnx__NodeProto *np, const char *op) {
    return np->op_type && strcmp(np->op_type, op) == 0;
}

/* Clip: bounds from attributes before opset 11, optional inputs after. */
static oq_post_match match_clip(const Onnx__NodeProto *np, int opset, int slot, const oq_post_in *in, int n_in,
                                oq_post_step out[2], int *n_out) {
    float lo = -FLT_MAX, hi = FLT_MAX;
    if (slot != 0)
        return OQ_POST_NO;
    if (opset < 11) {
        oq_error e;
        memset(&e, 0, sizeof e);
        if (oq_node_attr_float(np, "min", -FLT_MAX, &lo, &e) != OQ_OK ||
            oq_node_attr_float(np, "max", FLT_MAX, &hi, &e) != OQ_OK)
            return OQ_POST_NO;
    } else {
        if (n_in > 1 && in[1].present && !scalar_const(&in[1], &lo))
            return OQ_POST_NO;
        if (n_in > 2 && in[2].present && !scalar_const(&in[2], &hi))
            return OQ_POST_NO;
    }
    out[0] = (oq_post_step){OQ_POST_MAX_C, lo, 0.0f};
    out[1] = (oq_post_step){OQ_POST_MIN_C, hi, 0.0f};
    *n_out = 2;
    return OQ_POST_STEPS;
}

oq_post_match oq_post_match_node(const Onnx__NodeProto *np, int opset, int slot, const oq_post_in *in,
                                 int n_in, oq_post_step out[2], int *n_out, int *other) {
    *n_out = 1;
    *other = -1;
    if (!is_onnx(np) || np->n_output != 1 || slot < 0 || slot >= n_in)
        return OQ_POST_NO;
    oq_error e;
    memset(&e, 0, sizeof e);
    if (op_is(np, "Relu") && n_in == 1) {
        out[0] = (oq_post_step){OQ_POST_MAX_C, 0.0f, 0.0f};
        return OQ_POST_STEPS;
    }
    if (op_is(np, "Clip"))
        return match_clip(np, opset, slot, in, n_in, out, n_out);
    if (op_is(np, "LeakyRelu") && n_in == 1) {
        out[0] = (oq_post_step){OQ_POST_LEAKY, 0.01f, 0.0f};
        return oq_node_attr_float(np, "alpha", 0.01f, &out[0].a, &e) == OQ_OK ? OQ_POST_STEPS : OQ_POST_NO;
    }
    if (op_is(np, "HardSigmoid") && n_in == 1) {
        out[0] = (oq_post_step){OQ_POST_HARDSIGMOID, 0.2f, 0.5f};
        return oq_node_attr_float(np, "alpha", 0.2f, &out[0].a, &e) == OQ_OK &&
                       oq_node_attr_float(np, "beta", 0.5f, &out[0].b, &e) == OQ_OK
                   ? OQ_POST_STEPS
                   : OQ_POST_NO;
    }
    if (op_is(np, "HardSwish") && n_in == 1) { /* HardSwish-14: alpha 1/6, beta 0.5 */
        out[0] = (oq_post_step){OQ_POST_HARDSWISH, 1.0f / 6.0f, 0.5f};
        return OQ_POST_STEPS;
    }
    /* Binary ops from opset 7 (numpy broadcasting; older ones had a
     * `broadcast` attribute this does not read). */
    bool add = op_is(np, "Add"), sub = op_is(np, "Sub"), mul = op_is(np, "Mul"), div = op_is(np, "Div");
    if (!(add || sub || mul || div) || n_in != 2 || opset < 7)
        return OQ_POST_NO;
    int o = 1 - slot;
    float c;
    if (scalar_const(&in[o], &c)) {
        if ((sub || div) && slot != 0) /* c - v, c / v: not a step on v */
            return OQ_POST_NO;
        out[0] = (oq_post_step){add ? OQ_POST_ADD_C : sub ? OQ_POST_SUB_C : mul ? OQ_POST_MUL_C : OQ_POST_DIV_C,
                                c, 0.0f};
        return OQ_POST_STEPS;
    }
    if (!in[o].present || in[o].constant || !(add || mul))
        return OQ_POST_NO;
    out[0] = (oq_post_step){add ? OQ_POST_ADD_RES : OQ_POST_MUL_X, 0.0f, 0.0f};
    *other = o;
    return OQ_POST_OTHER_IN;
}
