/* rewrite_dynamic.c: dynamic quantization (weights offline, activations by
 * DynamicQuantizeLinear at run time, in the MatMulInteger/ConvInteger ->
 * Cast -> Mul -> Add form ONNX Runtime fuses into DynamicQuantizeMatMul /
 * MatMulIntegerToFloat) and weight-only quantization (int8 weights behind a
 * DequantizeLinear, float activations). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewrite_internal.h"

static const char *const wo_ops[] = {"Conv", "ConvTranspose", "Gemm", "MatMul"};
static const char *const dyn_ops[] = {"Conv", "Gemm", "MatMul"};

/* One weighted node's constant weight: where it is and how to slice it. */
typedef struct {
    int w;        /* weight value */
    int axis;     /* per-channel axis, -1 per tensor */
    char why[256];
} wsel;

/* Common checks: op selected, not excluded, float input, constant float
 * weight. Returns false with the reason in s->why. */
static bool select_weight(const oq_rw *rw, int i, const char *const *ops, size_t n_ops,
                          bool *excluded, wsel *s) {
    const Onnx__NodeProto *n = rw->nodes[i];
    const char *op = n->op_type ? n->op_type : "";
    bool onnx = !n->domain || !*n->domain || !strcmp(n->domain, "ai.onnx");
    bool known = false;
    *excluded = false;
    s->w = -1;
    s->axis = -1;
    for (size_t k = 0; onnx && k < n_ops; k++)
        known |= !strcmp(ops[k], op);
    if (!known) {
        snprintf(s->why, sizeof s->why, "op type %s is not quantized in this mode", op);
        return false;
    }
    if (!oq_rw_op_selected(rw->cfg, op, ops, n_ops)) {
        snprintf(s->why, sizeof s->why, "op type %s is not in op_types", op);
        return false;
    }
    if (oq_rw_excluded(rw, i, s->why, sizeof s->why)) {
        *excluded = true;
        return false;
    }
    int x = oq_rw_input(rw, i, 0), w = oq_rw_input(rw, i, 1);
    if (x < 0 || !oq_rw_value_is_float(rw, x)) {
        snprintf(s->why, sizeof s->why, "input is not float");
        return false;
    }
    if (w < 0 || !oq_rw_is_const(rw, w) || !oq_rw_value_is_float(rw, w)) {
        snprintf(s->why, sizeof s->why, "weight '%s' is not a constant float initializer",
                 w >= 0 ? oq_rw_value_name(rw, w) : "");
        return false;
    }
    int r = 0;
    int64_t wd[OQ_MAX_RANK];
    if (!oq_rw_const_shape(rw, w, &r, wd)) {
        snprintf(s->why, sizeof s->why, "weight '%s' has no known shape", oq_rw_value_name(rw, w));
        return false;
    }
    oq_error e = {0};
    bool pc = rw->cfg->per_channel;
    if (!strcmp(op, "MatMul")) {
        s->axis = pc && r == 2 ? 1 : -1;
    } else if (!strcmp(op, "Gemm")) {
        if (r != 2) {
            snprintf(s->why, sizeof s->why, "Gemm weight is not 2-D");
            return false;
        }
        int64_t tb = 0;
        oq_node_attr_int(n, "transB", 0, &tb, &e);
        s->axis = pc ? (tb ? 0 : 1) : -1;
    } else {
        if (r < 3) {
            snprintf(s->why, sizeof s->why, "weight has rank < 3");
            return false;
        }
        int64_t group = 1;
        oq_node_attr_int(n, "group", 1, &group, &e);
        bool convt = !strcmp(op, "ConvTranspose");
        s->axis = pc && (!convt || group == 1) ? (convt ? 1 : 0) : -1;
    }
    s->w = w;
    return true;
}

static oq_status push_name(char **list, size_t *n, const char *name, oq_error *err) {
    if (!(list[*n] = strdup(name)))
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    (*n)++;
    return OQ_OK;
}

/* ---- weight-only --------------------------------------------------------- */

typedef struct {
    int v, axis;
    oq_rw_weight wt;
    bool emitted;
} wo_group;

oq_status oq_rewrite_weight_only(oq_model *m, const oq_quant_config *cfg, oq_rewrite_result *res,
                                 oq_error *err) {
    if (res)
        memset(res, 0, sizeof *res);
    if (!m || !cfg || !res)
        return oq_err(err, OQ_EINVAL, "rewrite: no model, config or result");
    oq_rw rw;
    oq_status st = oq_rw_open(&rw, m, cfg, err);
    if (st != OQ_OK)
        return st;
    wo_group *groups = calloc((size_t)rw.n_nodes + 1, sizeof *groups);
    char **drop = calloc((size_t)rw.n_nodes + 1, sizeof *drop);
    size_t ng = 0, n_drop = 0;
    if (!groups || !drop)
        st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    if (st == OQ_OK)
        st = oq_rw_result_init(&rw, res, err);
    if (st == OQ_OK)
        st = oq_rw_check_qtypes(&rw, OQ_DTYPE_UNDEFINED, cfg->weight_type, cfg->per_channel, err);
    for (int i = 0; st == OQ_OK && i < rw.n_nodes; i++) {
        wsel s;
        bool excluded;
        if (!select_weight(&rw, i, wo_ops, sizeof wo_ops / sizeof *wo_ops, &excluded, &s)) {
            st = oq_rw_decide(res, i, false, excluded, err, "%s", s.why);
            continue;
        }
        wo_group *g = NULL;
        for (size_t k = 0; k < ng && !g; k++)
            if (groups[k].v == s.w && groups[k].axis == s.axis)
                g = &groups[k];
        if (!g) {
            g = &groups[ng++];
            g->v = s.w;
            g->axis = s.axis;
            oq_tensor *w = NULL;
            st = oq_rw_const_tensor(&rw, s.w, &w, err);
            if (st == OQ_OK)
                st = oq_rw_weight_params(oq_rw_value_name(&rw, s.w), w, s.axis, cfg->weight_type,
                                         cfg->weight_symmetric, cfg->reduce_range, &g->wt, err);
            if (st == OQ_OK)
                st = oq_rw_weight_emit(&rw, w, &g->wt, err);
            oq_tensor_free(w);
            if (st == OQ_OK)
                st = push_name(drop, &n_drop, oq_rw_value_name(&rw, s.w), err);
            if (st != OQ_OK)
                break;
        }
        const char *dq;
        st = oq_rw_add_dq(&rw, g->wt.q_name, g->wt.scale_name, g->wt.zp_name, g->axis,
                          oq_rw_value_name(&rw, s.w), &dq, err);
        if (st == OQ_OK)
            st = oq_edit_set_node_input(m, rw.nodes[i], 1, dq, err);
        if (st == OQ_OK)
            st = oq_rw_decide(res, i, true, false, err,
                              "%s %s weights%s behind DequantizeLinear; float activations",
                              s.axis >= 0 ? "per-channel" : "per-tensor",
                              oq_dtype_name(cfg->weight_type),
                              cfg->weight_symmetric ? " (symmetric)" : "");
    }
    if (st == OQ_OK)
        st = oq_rw_drop_unused_inits(&rw, drop, n_drop, err);
    if (st == OQ_OK)
        st = oq_rw_drop_dead_folds(&rw, err);
    res->n_dequantize_linear = rw.n_dq;
    if (st == OQ_OK)
        st = oq_rw_finish(&rw, err);
    for (size_t k = 0; groups && k < ng; k++)
        oq_rw_weight_clear(&groups[k].wt);
    free(groups);
    oq_strings_free(drop, n_drop);
    oq_rw_close(&rw);
    return st;
}

/* ---- dynamic ------------------------------------------------------------- */

/* Bias of a dynamic node as a new 1-D float tensor (Gemm beta folded), or
 * NULL with *c_name set when the bias is a non-constant tensor added as is. */
static oq_status dyn_bias(oq_rw *rw, int i, int64_t n_out, oq_tensor **bias, const char **c_name,
                          char *why, size_t why_len, oq_error *err) {
    *bias = NULL;
    *c_name = NULL;
    const Onnx__NodeProto *n = rw->nodes[i];
    int b = oq_rw_input(rw, i, 2);
    if (b < 0)
        return OQ_OK;
    float beta = 1;
    if (oq_node_is_onnx_op(n, "Gemm")) {
        oq_status st = oq_node_attr_float(n, "beta", 1.0f, &beta, err);
        if (st != OQ_OK)
            return st;
    }
    if (!oq_rw_is_const(rw, b)) {
        if (beta != 1.0f) {
            snprintf(why, why_len, "Gemm C is not constant and beta != 1");
            return OQ_EUNSUPPORTED;
        }
        *c_name = oq_rw_value_name(rw, b);
        return OQ_OK;
    }
    oq_status st = oq_rw_const_tensor(rw, b, bias, err);
    if (st != OQ_OK)
        return st;
    float *d = (*bias)->data;
    for (size_t k = 0; k < (*bias)->count; k++)
        d[k] *= beta;
    if ((int64_t)(*bias)->count == n_out) {
        (*bias)->rank = 1;
        (*bias)->dims[0] = n_out;
    }
    return OQ_OK;
}

/* Transposes a 2-D float tensor into a new one. */
static oq_status transpose2(const oq_tensor *w, oq_tensor **out, oq_error *err) {
    int64_t dims[2] = {w->dims[1], w->dims[0]};
    oq_status st = oq_tensor_new(OQ_DTYPE_FLOAT, 2, dims, 0, out, err);
    if (st != OQ_OK)
        return st;
    const float *s = w->data;
    float *d = (*out)->data;
    for (int64_t r = 0; r < w->dims[0]; r++)
        for (int64_t c = 0; c < w->dims[1]; c++)
            d[c * w->dims[0] + r] = s[r * w->dims[1] + c];
    return OQ_OK;
}

typedef struct {
    int v;
    int layout; /* 0 as stored, 1 transposed (Gemm transB), 2 ConvInteger uint8 */
    oq_rw_weight wt;
} dyn_group;

/* DynamicQuantizeLinear -> {MatMulInteger|ConvInteger} -> Cast -> Mul -> [Add]
 * replacing node i; its output name is kept. */
static oq_status emit_dynamic(oq_rw *rw, int i, const dyn_group *g, float alpha,
                              const oq_tensor *bias, const char *c_name, int w_rank,
                              oq_error *err) {
    Onnx__NodeProto *n = rw->nodes[i];
    bool conv = oq_node_is_onnx_op(n, "Conv");
    const char *x = oq_rw_value_name(rw, oq_rw_input(rw, i, 0));
    const char *y = oq_rw_value_name(rw, oq_rw_output(rw, i, 0));
    const char *xq, *xs, *xz, *mm, *mmf, *sc, *yy;
    oq_status st = oq_rw_name(rw, x, "_quantized", &xq, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, x, "_scale", &xs, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, x, "_zero_point", &xz, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, y, conv ? "_conv_int32" : "_matmul_int32", &mm, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, y, "_float", &mmf, err);
    if (st == OQ_OK)
        st = oq_rw_name(rw, y, "_scale", &sc, err);
    if (st != OQ_OK)
        return st;
    /* DynamicQuantizeLinear-11: uint8, asymmetric over the range with 0.
     * One per node so ORT can fold it into DynamicQuantizeMatMul. */
    const char *dq_out[3] = {xq, xs, xz};
    st = oq_rw_add_node(rw, "DynamicQuantizeLinear", NULL, "DynamicQuantizeLinear", &x, 1, dq_out,
                        3, NULL, err);
    const char *mi_in[4] = {xq, g->wt.q_name, xz, g->wt.zp_name};
    Onnx__NodeProto *core = NULL;
    if (st == OQ_OK)
        st = oq_rw_add_node(rw, conv ? "ConvInteger" : "MatMulInteger", NULL,
                            conv ? "ConvInteger" : "MatMulInteger", mi_in, 4, &mm, 1, &core, err);
    if (st == OQ_OK && conv) {
        /* ConvInteger takes Conv's attributes: move them over. */
        core->attribute = n->attribute;
        core->n_attribute = n->n_attribute;
        n->attribute = NULL;
        n->n_attribute = 0;
    }
    Onnx__NodeProto *cast = NULL;
    if (st == OQ_OK)
        st = oq_rw_add_node(rw, "Cast", NULL, "Cast", &mm, 1, &mmf, 1, &cast, err);
    if (st == OQ_OK)
        st = oq_edit_set_attr_int(rw->m, cast, "to", OQ_DTYPE_FLOAT, err);
    /* The weight scale, times Gemm's alpha when it is not 1. */
    const char *ws = g->wt.scale_name;
    if (st == OQ_OK && alpha != 1.0f) {
        oq_qparams *p = malloc(g->wt.n * sizeof *p);
        if (!p)
            return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
        for (size_t k = 0; k < g->wt.n; k++)
            p[k] = (oq_qparams){g->wt.p[k].scale * alpha, g->wt.p[k].zero_point};
        const char *zp_unused;
        st = oq_rw_add_qparams(rw, y, p, g->wt.n, g->wt.qtype, g->wt.axis >= 0, &ws, &zp_unused,
                               err);
        free(p);
        if (st == OQ_OK)
            st = oq_edit_remove_initializer(rw->m, rw->gp, zp_unused, err);
    }
    const char *mul_in[2] = {xs, ws};
    if (st == OQ_OK)
        st = oq_rw_add_node(rw, "Mul", NULL, "Mul_scale", mul_in, 2, &sc, 1, NULL, err);
    bool has_bias = bias || c_name;
    if (st == OQ_OK && has_bias)
        st = oq_rw_name(rw, y, "_unbiased", &yy, err);
    else
        yy = y;
    const char *mul2_in[2] = {mmf, sc};
    if (st == OQ_OK)
        st = oq_rw_add_node(rw, "Mul", NULL, "Mul_rescale", mul2_in, 2, &yy, 1, NULL, err);
    if (st != OQ_OK || !has_bias)
        return st;
    const char *bname = c_name;
    if (bias) {
        oq_tensor *b = (oq_tensor *)bias;
        int64_t saved[OQ_MAX_RANK];
        int saved_rank = b->rank;
        memcpy(saved, b->dims, sizeof saved);
        if (conv) {
            /* Conv bias [M] broadcasts over [N, M, spatial...] as [M, 1, ...]. */
            b->rank = w_rank - 1;
            b->dims[0] = (int64_t)b->count;
            for (int k = 1; k < b->rank; k++)
                b->dims[k] = 1;
        }
        st = oq_rw_add_init(rw, y, "_bias", b, &bname, err);
        b->rank = saved_rank;
        memcpy(b->dims, saved, sizeof saved);
    }
    const char *add_in[2] = {yy, bname};
    if (st == OQ_OK)
        st = oq_rw_add_node(rw, "Add", NULL, "Add_bias", add_in, 2, &y, 1, NULL, err);
    return st;
}

static int cmp_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

oq_status oq_rewrite_dynamic(oq_model *m, const oq_quant_config *cfg, oq_rewrite_result *res,
                             oq_error *err) {
    if (res)
        memset(res, 0, sizeof *res);
    if (!m || !cfg || !res)
        return oq_err(err, OQ_EINVAL, "rewrite: no model, config or result");
    oq_rw rw;
    oq_status st = oq_rw_open(&rw, m, cfg, err);
    if (st != OQ_OK)
        return st;
    dyn_group *groups = calloc((size_t)rw.n_nodes + 1, sizeof *groups);
    int *removed = calloc((size_t)rw.n_nodes + 1, sizeof *removed);
    char **drop = calloc((size_t)rw.n_nodes * 2 + 1, sizeof *drop);
    size_t ng = 0, n_drop = 0, n_removed = 0;
    if (!groups || !removed || !drop)
        st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    if (st == OQ_OK)
        st = oq_rw_result_init(&rw, res, err);
    /* MatMulInteger and ConvInteger take 8-bit types only. */
    oq_dtype wtype = cfg->weight_type == OQ_DTYPE_UINT8 ? OQ_DTYPE_UINT8 : OQ_DTYPE_INT8;
    if (st == OQ_OK && rw.opset < 11)
        st = oq_err(err, OQ_EUNSUPPORTED,
                    "dynamic quantization needs DynamicQuantizeLinear (opset 11); the model "
                    "imports opset %lld: prepare it first",
                    (long long)rw.opset);
    for (int i = 0; st == OQ_OK && i < rw.n_nodes; i++) {
        wsel s;
        bool excluded;
        Onnx__NodeProto *n = rw.nodes[i];
        if (!select_weight(&rw, i, dyn_ops, sizeof dyn_ops / sizeof *dyn_ops, &excluded, &s)) {
            st = oq_rw_decide(res, i, false, excluded, err, "%s", s.why);
            continue;
        }
        bool conv = oq_node_is_onnx_op(n, "Conv"), gemm = oq_node_is_onnx_op(n, "Gemm");
        int w_rank = 0;
        int64_t wd[OQ_MAX_RANK];
        oq_rw_const_shape(&rw, s.w, &w_rank, wd);
        float alpha = 1;
        int64_t trans_a = 0, trans_b = 0, n_out;
        if (gemm) {
            st = oq_node_attr_float(n, "alpha", 1.0f, &alpha, err);
            if (st == OQ_OK)
                st = oq_node_attr_int(n, "transA", 0, &trans_a, err);
            if (st == OQ_OK)
                st = oq_node_attr_int(n, "transB", 0, &trans_b, err);
            if (st != OQ_OK)
                break;
            if (trans_a) {
                st = oq_rw_decide(res, i, false, false, err,
                                  "Gemm with transA has no MatMulInteger form; left float");
                continue;
            }
        }
        n_out = conv ? wd[0] : trans_b ? wd[0] : wd[w_rank - 1];
        oq_tensor *bias = NULL;
        const char *c_name = NULL;
        char why[256] = "";
        oq_error berr = {0};
        oq_status bst = dyn_bias(&rw, i, n_out, &bias, &c_name, why, sizeof why, &berr);
        if (bst != OQ_OK) {
            if (bst != OQ_EUNSUPPORTED) {
                st = oq_err(err, bst, "%s", berr.msg);
                break;
            }
            st = oq_rw_decide(res, i, false, false, err, "%s; left float", why);
            continue;
        }
        /* ORT's CPU ConvInteger is uint8 x uint8: Conv weights become
         * asymmetric per-tensor uint8 whatever the weight type asked. */
        int layout = conv ? 2 : trans_b ? 1 : 0;
        int axis = conv ? -1 : (trans_b ? (s.axis >= 0 ? 1 : -1) : s.axis);
        dyn_group *g = NULL;
        for (size_t k = 0; k < ng && !g; k++)
            if (groups[k].v == s.w && groups[k].layout == layout)
                g = &groups[k];
        if (!g) {
            g = &groups[ng++];
            g->v = s.w;
            g->layout = layout;
            oq_tensor *w = NULL, *wt = NULL;
            st = oq_rw_const_tensor(&rw, s.w, &w, err);
            if (st == OQ_OK && layout == 1)
                st = transpose2(w, &wt, err);
            const oq_tensor *use = wt ? wt : w;
            if (st == OQ_OK)
                st = oq_rw_weight_params(oq_rw_value_name(&rw, s.w), use, axis,
                                         conv ? OQ_DTYPE_UINT8 : wtype,
                                         conv ? false : cfg->weight_symmetric, cfg->reduce_range,
                                         &g->wt, err);
            if (st == OQ_OK)
                st = oq_rw_weight_emit(&rw, use, &g->wt, err);
            oq_tensor_free(w);
            oq_tensor_free(wt);
            if (st == OQ_OK)
                st = push_name(drop, &n_drop, oq_rw_value_name(&rw, s.w), err);
        }
        if (st == OQ_OK)
            st = emit_dynamic(&rw, i, g, alpha, bias, c_name, w_rank, err);
        if (st == OQ_OK && bias)
            st = push_name(drop, &n_drop, oq_rw_value_name(&rw, oq_rw_input(&rw, i, 2)), err);
        oq_tensor_free(bias);
        if (st != OQ_OK)
            break;
        removed[n_removed++] = i;
        if (conv)
            st = oq_rw_decide(res, i, true, false, err,
                              "DynamicQuantizeLinear -> ConvInteger (per-tensor uint8 weights: "
                              "ORT's CPU ConvInteger is uint8 x uint8) -> Cast -> Mul%s",
                              oq_rw_input(&rw, i, 2) >= 0 ? " -> Add bias" : "");
        else
            st = oq_rw_decide(res, i, true, false, err,
                              "DynamicQuantizeLinear -> MatMulInteger (%s %s weights%s) -> Cast "
                              "-> Mul%s: ORT fuses it into DynamicQuantizeMatMul",
                              axis >= 0 ? "per-channel" : "per-tensor", oq_dtype_name(wtype),
                              cfg->weight_symmetric ? ", symmetric" : "",
                              oq_rw_input(&rw, i, 2) >= 0 ? " -> Add bias" : "");
    }
    /* The replaced nodes are the originals: their indices come first in the
     * node list, so remove from the highest down. */
    qsort(removed, n_removed, sizeof *removed, cmp_desc);
    for (size_t k = 0; st == OQ_OK && k < n_removed; k++) {
        st = oq_edit_remove_node(m, rw.gp, (size_t)removed[k], err);
        rw.nodes[removed[k]] = NULL;
    }
    if (st == OQ_OK)
        st = oq_rw_drop_unused_inits(&rw, drop, n_drop, err);
    if (st == OQ_OK)
        st = oq_rw_drop_dead_folds(&rw, err);
    if (st == OQ_OK)
        st = oq_rw_finish(&rw, err);
    for (size_t k = 0; groups && k < ng; k++)
        oq_rw_weight_clear(&groups[k].wt);
    free(groups);
    free(removed);
    oq_strings_free(drop, n_drop);
    oq_rw_close(&rw);
    return st;
}
