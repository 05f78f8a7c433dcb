/* rewrite_static.c: static QDQ insertion shaped for ONNX Runtime's QDQ
 * selectors (qdq_selectors.cc): every input of a quantized node comes from
 * a DequantizeLinear, its output goes to exactly one QuantizeLinear, biases
 * are int32 with scale s_x * s_w and zero point 0, Relu/Clip after a
 * quantized node carry the Q (ORT removes them when the zero point is the
 * type's minimum), and data-movement ops reuse their input's parameters so
 * ORT can drop the pair around them. On x86, ORT runs int8 activations by
 * first turning each Q -> DQ pair with a single consumer into uint8
 * (QDQS8ToU8Transformer); a Q read by several nodes, or an int8 constant of
 * an Add/Mul, is not converted and that group stays float there. uint8
 * activations fuse everywhere (checked with ORT 1.30 on the shared models). */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewrite_internal.h"

typedef enum {
    K_NONE = 0,
    K_WEIGHTED, /* Conv, ConvTranspose, Gemm, MatMul: weight (and bias) inputs */
    K_BINARY,   /* Add, Mul -> QLinearAdd / QLinearMul */
    K_VARIADIC, /* Concat -> QLinearConcat */
    K_UNARY,    /* one input, QLinear* kernel with its own output parameters */
    K_ACT,      /* Relu, Clip: folded into the producer's QuantizeLinear */
    K_DROP,     /* data movement: output keeps the input's parameters */
} op_kind;

typedef struct {
    const char *op;
    op_kind kind;
    const char *ort; /* what ONNX Runtime (CPU) turns the QDQ group into */
} op_info;

/* The ops onnxq quantizes, which is also the default op_types set: those
 * ORT's QDQ selector-action transformer fuses on CPU (Conv, MatMul, Gemm,
 * binary, variadic, unary, drop-QDQ rules), Relu/Clip (removed into the Q
 * by ReluQuantFusion/ClipQuantFusion) and ConvTranspose (QDQ for TensorRT
 * and OpenVINO; ORT's CPU provider keeps it in float). */
static const op_info op_table[] = {
    {"Conv", K_WEIGHTED, "QLinearConv"},
    {"ConvTranspose", K_WEIGHTED, "QDQ ConvTranspose (fused by TensorRT/OpenVINO; ORT CPU keeps float)"},
    {"Gemm", K_WEIGHTED, "QGemm"},
    {"MatMul", K_WEIGHTED, "QLinearMatMul"},
    {"Add", K_BINARY, "QLinearAdd"},
    {"Mul", K_BINARY, "QLinearMul"},
    {"Concat", K_VARIADIC, "QLinearConcat"},
    {"GlobalAveragePool", K_UNARY, "QLinearGlobalAveragePool"},
    {"AveragePool", K_UNARY, "QLinearAveragePool"},
    {"Sigmoid", K_UNARY, "QLinearSigmoid"},
    {"LeakyRelu", K_UNARY, "QLinearLeakyRelu"},
    {"Softmax", K_UNARY, "QLinearSoftmax"},
    {"Relu", K_ACT, NULL},
    {"Clip", K_ACT, NULL},
    {"MaxPool", K_DROP, NULL},
    {"Resize", K_DROP, NULL},
    {"Reshape", K_DROP, NULL},
    {"Transpose", K_DROP, NULL},
    {"Flatten", K_DROP, NULL},
    {"Squeeze", K_DROP, NULL},
    {"Unsqueeze", K_DROP, NULL},
    {"Gather", K_DROP, NULL},
    {"Split", K_DROP, NULL},
    {"Slice", K_DROP, NULL},
};
#define N_OPS (sizeof op_table / sizeof *op_table)

typedef struct {
    const op_info *info;
    op_kind kind;
    bool cand;       /* passes the local checks */
    bool quant;      /* final decision */
    int w_slot;      /* constant weight input, -1 none */
    int w_axis;      /* per-channel axis of the weight, -1 per tensor */
    int b_slot;      /* constant bias input, -1 none */
    int64_t n_out;   /* output channels (weight) */
    bool float_out;  /* Gemm/MatMul whose output stays float */
    int fused_act;   /* Relu/Clip consumer carrying this node's Q, -1 */
    int fused_from;  /* K_ACT: the producer it is fused into, -1 */
    int bias_add;    /* MatMul: the Add of its bias constant, -1 */
    int bias_of;     /* that Add: the MatMul, -1 */
    int bias_slot;   /* that Add: the input slot of the constant */
    float clip_lo, clip_hi;
    char why[300];   /* reason when not quantized */
    bool excluded;
} nplan;

typedef enum { T_NONE = 0, T_CALIB, T_INHERIT, T_CONST, T_FUSED } tmode;

typedef struct {
    tmode mode;
    int src;          /* T_INHERIT: the tensor whose parameters it shares */
    oq_dtype qtype;
    bool sym;
    bool has_p;
    oq_qparams p;
    bool clip;        /* output of a fused Clip: the Q must not reach past clip_hi */
    float clip_hi;
    const char *scale, *zp, *qconst; /* emitted initializer names */
} tplan;

typedef struct {
    oq_rw rw;
    nplan *np;
    tplan *tp;
    oq_rewrite_result *res;
} splan;

static const char *const *default_ops(size_t *n) {
    static const char *names[N_OPS];
    for (size_t i = 0; i < N_OPS; i++)
        names[i] = op_table[i].op;
    *n = N_OPS;
    return names;
}

static const oq_tensor_override *find_override(const oq_quant_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->n_overrides; i++)
        if (oq_rw_pattern_match(cfg->overrides[i].pattern, name))
            return &cfg->overrides[i];
    return NULL;
}

static void tensor_cfg(const oq_quant_config *cfg, const char *name, oq_dtype *qt, bool *sym,
                       const oq_tensor_override **ovp) {
    const oq_tensor_override *ov = find_override(cfg, name);
    *qt = ov && ov->dtype ? ov->dtype : cfg->activation_type;
    *sym = ov && ov->symmetric >= 0 ? ov->symmetric != 0 : cfg->activation_symmetric;
    if (ovp)
        *ovp = ov;
}

static void sp_free(splan *sp) {
    free(sp->np);
    free(sp->tp);
    oq_rw_close(&sp->rw);
}

static const char *vname(const splan *sp, int v) {
    return oq_rw_value_name(&sp->rw, v);
}

static const char *node_label(const splan *sp, int i, char *buf, size_t len) {
    return oq_graph_node_label(sp->rw.g, i, buf, len);
}

/* Reads a constant scalar input (Clip min/max). */
static bool const_scalar(const oq_rw *rw, int v, float *out) {
    if (!oq_rw_is_const(rw, v) || !oq_rw_value_is_float(rw, v))
        return false;
    oq_tensor *t = NULL;
    oq_error e = {0};
    if (oq_rw_const_tensor(rw, v, &t, &e) != OQ_OK)
        return false;
    bool ok = t->count == 1;
    if (ok)
        *out = ((const float *)t->data)[0];
    oq_tensor_free(t);
    return ok;
}

static bool clip_bounds(const oq_rw *rw, int node, float *lo, float *hi) {
    const Onnx__NodeProto *n = rw->nodes[node];
    *lo = -FLT_MAX;
    *hi = FLT_MAX;
    if (oq_node_is_onnx_op(n, "Relu")) {
        *lo = 0;
        return true;
    }
    if (rw->opset >= 11) {
        /* Clip-11+: min and max are optional inputs. */
        int vmin = oq_rw_input(rw, node, 1), vmax = oq_rw_input(rw, node, 2);
        if (vmin >= 0 && !const_scalar(rw, vmin, lo))
            return false;
        if (vmax >= 0 && !const_scalar(rw, vmax, hi))
            return false;
        return true;
    }
    oq_error e = {0};
    return oq_node_attr_float(n, "min", -FLT_MAX, lo, &e) == OQ_OK &&
           oq_node_attr_float(n, "max", FLT_MAX, hi, &e) == OQ_OK;
}

/* ---- local decisions ----------------------------------------------------- */

static bool is_quant_slot(const nplan *p, int slot) {
    switch (p->kind) {
    case K_WEIGHTED:
        return slot == 0 || (slot == 1 && p->w_slot < 0);
    case K_BINARY:
    case K_VARIADIC:
        return true;
    case K_UNARY:
    case K_ACT:
    case K_DROP:
        return slot == 0;
    default:
        return false;
    }
}

static void set_why(nplan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(nplan *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
}

static void decide_weighted(splan *sp, int i, nplan *p) {
    oq_rw *rw = &sp->rw;
    const Onnx__NodeProto *n = rw->nodes[i];
    const char *op = n->op_type;
    int x = oq_rw_input(rw, i, 0), w = oq_rw_input(rw, i, 1), b = oq_rw_input(rw, i, 2);
    p->w_slot = p->b_slot = -1;
    p->w_axis = -1;
    if (x < 0 || !oq_rw_value_is_float(rw, x)) {
        set_why(p, "input '%s' is not float", x >= 0 ? vname(sp, x) : "");
        return;
    }
    if (w < 0 || !oq_rw_value_is_float(rw, w)) {
        set_why(p, "second input '%s' is not float", w >= 0 ? vname(sp, w) : "");
        return;
    }
    bool wconst = oq_rw_is_const(rw, w);
    int wr = 0;
    int64_t wd[OQ_MAX_RANK];
    if (wconst && !oq_rw_const_shape(rw, w, &wr, wd)) {
        set_why(p, "weight '%s' has no known shape", vname(sp, w));
        return;
    }
    oq_error e = {0};
    if (!strcmp(op, "MatMul")) {
        if (!wconst) { /* activation x activation (attention): both calibrated */
            p->cand = true;
            return;
        }
        p->w_slot = 1;
        int r = wr;
        p->n_out = r >= 1 ? wd[r - 1] : 1;
        /* Per column (ONNX QLinearMatMul: b_scale 1-D over the columns) for a
         * 2-D weight; higher ranks per tensor. */
        p->w_axis = rw->cfg->per_channel && r == 2 ? 1 : -1;
        p->cand = true;
        return;
    }
    if (!wconst) {
        set_why(p, "weight '%s' is not a constant initializer", vname(sp, w));
        return;
    }
    if (!strcmp(op, "Gemm")) {
        if (wr != 2) {
            set_why(p, "Gemm weight '%s' is not 2-D", vname(sp, w));
            return;
        }
        int64_t trans_b = 0;
        oq_node_attr_int(n, "transB", 0, &trans_b, &e);
        p->w_slot = 1;
        p->w_axis = rw->cfg->per_channel ? (trans_b ? 0 : 1) : -1;
        p->n_out = wd[trans_b ? 0 : 1];
    } else { /* Conv, ConvTranspose */
        if (wr < 3) {
            set_why(p, "weight '%s' has rank < 3", vname(sp, w));
            return;
        }
        int64_t group = 1;
        oq_node_attr_int(n, "group", 1, &group, &e);
        bool convt = !strcmp(op, "ConvTranspose");
        p->w_slot = 1;
        /* Conv W is [M, C/g, k...]: output channels on axis 0. ConvTranspose
         * W is [C, M/g, k...]: axis 1 holds all output channels only when
         * group == 1. */
        p->w_axis = rw->cfg->per_channel && (!convt || group == 1) ? (convt ? 1 : 0) : -1;
        p->n_out = convt ? wd[1] * group : wd[0];
    }
    if (b >= 0) {
        int br = 0;
        int64_t bd[OQ_MAX_RANK];
        if (!oq_rw_is_const(rw, b) || !oq_rw_value_is_float(rw, b) ||
            !oq_rw_const_shape(rw, b, &br, bd)) {
            set_why(p, "bias '%s' is not a constant float initializer", vname(sp, b));
            return;
        }
        int64_t cnt = 1;
        for (int d = 0; d < br; d++)
            cnt *= bd[d];
        bool one_d = br == 1 || (br == 2 && bd[0] == 1 && !strcmp(op, "Gemm"));
        if (!one_d || cnt != p->n_out) {
            set_why(p, "bias '%s' is not a 1-D tensor of the output channels", vname(sp, b));
            return;
        }
        p->b_slot = 2;
    }
    p->cand = true;
}

static void decide_local(splan *sp, int i) {
    oq_rw *rw = &sp->rw;
    nplan *p = &sp->np[i];
    const Onnx__NodeProto *n = rw->nodes[i];
    const char *op = n->op_type ? n->op_type : "";
    p->fused_act = p->fused_from = p->bias_add = p->bias_of = -1;
    p->w_slot = p->b_slot = p->w_axis = -1;
    bool onnx = !n->domain || !*n->domain || !strcmp(n->domain, "ai.onnx");
    for (size_t k = 0; onnx && k < N_OPS; k++)
        if (!strcmp(op_table[k].op, op))
            p->info = &op_table[k];
    size_t n_def;
    const char *const *def = default_ops(&n_def);
    if (!p->info) {
        if (rw->cfg->n_op_types && oq_rw_op_selected(rw->cfg, op, def, 0))
            set_why(p, "onnxq has no quantized pattern for %s", op);
        else
            set_why(p, "op type %s is not quantized", op);
        return;
    }
    if (!oq_rw_op_selected(rw->cfg, op, def, n_def)) {
        set_why(p, "op type %s is not in op_types", op);
        return;
    }
    if (oq_rw_excluded(rw, i, p->why, sizeof p->why)) {
        p->excluded = true;
        return;
    }
    p->kind = p->info->kind;
    int nin, nout;
    const int *ins = oq_graph_node_inputs(rw->g, i, &nin);
    const int *outs = oq_graph_node_outputs(rw->g, i, &nout);
    for (int s = 0; s < nout; s++)
        if (outs[s] >= 0 && !oq_rw_value_is_float(rw, outs[s]) && p->kind != K_DROP) {
            set_why(p, "output '%s' is not float", vname(sp, outs[s]));
            return;
        }
    for (int s = 0; s < nin; s++)
        if (ins[s] >= 0 && oq_rw_is_unreadable_const(rw, ins[s]) &&
            (is_quant_slot(&(nplan){.kind = p->kind}, s) || (p->kind == K_WEIGHTED && s == 1))) {
            /* The executor folds it before any observer sees it, and onnxq
             * reads only initializers and reshapes of them. */
            set_why(p, "input '%s' is computed from constants only (fold it first)",
                    vname(sp, ins[s]));
            return;
        }
    switch (p->kind) {
    case K_WEIGHTED:
        decide_weighted(sp, i, p);
        return;
    case K_BINARY:
    case K_VARIADIC:
        for (int s = 0; s < nin; s++)
            if (ins[s] < 0 || !oq_rw_value_is_float(rw, ins[s])) {
                set_why(p, "input '%s' is not float", ins[s] >= 0 ? vname(sp, ins[s]) : "");
                return;
            }
        if (nin < 1)
            return;
        p->cand = true;
        return;
    default:
        break;
    }
    /* unary, activation, data movement: input 0 is the data */
    if (nin < 1 || ins[0] < 0 || !oq_rw_value_is_float(rw, ins[0])) {
        set_why(p, "data input '%s' is not float", nin > 0 && ins[0] >= 0 ? vname(sp, ins[0]) : "");
        return;
    }
    if (p->kind == K_DROP) {
        if (oq_rw_is_const(rw, ins[0])) {
            set_why(p, "data input '%s' is a constant", vname(sp, ins[0]));
            return;
        }
        if (!strcmp(op, "MaxPool") && nout > 1 && outs[1] >= 0) {
            set_why(p, "MaxPool with an indices output");
            return;
        }
    }
    if (p->kind == K_ACT && !clip_bounds(rw, i, &p->clip_lo, &p->clip_hi)) {
        set_why(p, "Clip bounds are not constant");
        return;
    }
    p->cand = true;
}

/* Can act (a Relu/Clip candidate) carry the Q of its producer? ORT removes
 * it only when the Q's representable range lies inside [min, max]
 * (ReluQuantFusion: zero point = qmin; ClipQuantFusion with float epsilon),
 * which holds for an asymmetric 8-bit range starting at 0. */
static bool act_fusable(const splan *sp, int act) {
    const nplan *a = &sp->np[act];
    int out = oq_rw_output(&sp->rw, act, 0);
    if (out < 0)
        return false;
    oq_dtype qt;
    bool sym;
    const oq_tensor_override *ov;
    tensor_cfg(sp->rw.cfg, vname(sp, out), &qt, &sym, &ov);
    if (sym || (qt != OQ_DTYPE_INT8 && qt != OQ_DTYPE_UINT8))
        return false;
    if (a->clip_lo > FLT_EPSILON)
        return false;
    if (ov && ov->has_range && (ov->lo < 0 || ov->hi > a->clip_hi))
        return false;
    return true;
}

static void mark(splan *sp, int v, tmode mode) {
    if (v >= 0 && sp->tp[v].mode == T_NONE)
        sp->tp[v].mode = mode;
}

static bool any_candidate_consumer(const splan *sp, int v) {
    const oq_value *val = oq_graph_value(sp->rw.g, v);
    for (int k = 0; val && k < val->n_consumers; k++)
        if (sp->np[val->consumers[k]].cand)
            return true;
    return false;
}

static void plan_outputs(splan *sp, int i) {
    nplan *p = &sp->np[i];
    int out = oq_rw_output(&sp->rw, i, 0);
    if (out < 0)
        return;
    const oq_value *val = oq_graph_value(sp->rw.g, out);
    if (val->n_consumers == 1 && val->graph_output < 0 && val->n_uses == 1) {
        int c = val->consumers[0];
        nplan *cp = &sp->np[c];
        if (cp->cand && cp->kind == K_ACT && oq_rw_input(&sp->rw, c, 0) == out &&
            act_fusable(sp, c)) {
            p->fused_act = c;
            cp->fused_from = i;
            cp->quant = true;
            sp->tp[out].mode = T_FUSED;
            int aout = oq_rw_output(&sp->rw, c, 0);
            sp->tp[aout].mode = T_CALIB;
            if (oq_node_is_onnx_op(sp->rw.nodes[c], "Clip")) {
                sp->tp[aout].clip = true;
                sp->tp[aout].clip_hi = cp->clip_hi;
            }
            return;
        }
    }
    bool gemm_like = oq_node_is_onnx_op(sp->rw.nodes[i], "Gemm") ||
                     oq_node_is_onnx_op(sp->rw.nodes[i], "MatMul");
    if (gemm_like && !any_candidate_consumer(sp, out)) {
        /* ORT's Gemm and MatMul selectors accept a group without Q: QGemm
         * with float output, MatMulIntegerToFloat. */
        p->float_out = true;
        return;
    }
    mark(sp, out, T_CALIB);
}

static int root_of(const splan *sp, int v) {
    return sp->tp[v].mode == T_INHERIT ? sp->tp[v].src : v;
}

/* MatMul -> Add(constant [.., N]), the bias of exporters' Linear layers.
 * The constant becomes an int32 bias at s_x * s_w like Gemm's, and the Add
 * stays float: ORT fuses a 2-D MatMul + Add into Gemm (MatMulAddFusion),
 * then into QGemm with that bias; otherwise it runs MatMulIntegerToFloat and
 * a float Add. Either way the product is never rounded to 8 bits, where
 * QLinearMatMul + QLinearAdd would round it and then the sum. */
static void bias_add_pattern(splan *sp, int i) {
    oq_rw *rw = &sp->rw;
    nplan *p = &sp->np[i];
    if (!p->cand || p->kind != K_BINARY || !oq_node_is_onnx_op(rw->nodes[i], "Add"))
        return;
    int a = oq_rw_input(rw, i, 0), b = oq_rw_input(rw, i, 1);
    int slot = oq_rw_is_const(rw, b) ? 1 : oq_rw_is_const(rw, a) ? 0 : -1;
    int act = slot == 1 ? a : b;
    if (slot < 0 || act < 0 || oq_rw_is_const(rw, act))
        return;
    const oq_value *val = oq_graph_value(rw->g, act);
    if (val->kind != OQ_VALUE_NODE || val->producer < 0 || val->n_consumers != 1 ||
        val->n_uses != 1 || val->graph_output >= 0)
        return;
    int mm = val->producer;
    nplan *mp = &sp->np[mm];
    if (!mp->cand || !oq_node_is_onnx_op(rw->nodes[mm], "MatMul") || mp->w_slot < 0)
        return;
    int r;
    int64_t dims[OQ_MAX_RANK];
    if (!oq_rw_const_shape(rw, slot ? b : a, &r, dims) || r < 1 || dims[r - 1] != mp->n_out)
        return;
    for (int d = 0; d + 1 < r; d++)
        if (dims[d] != 1)
            return;
    p->cand = false;
    p->bias_of = mm;
    p->bias_slot = slot;
    mp->bias_add = i;
    char lb[160];
    set_why(p, "bias of %s, as int32 at s_x*s_w: ORT makes a 2-D MatMul + Add a QGemm, "
               "else MatMulIntegerToFloat + float Add (the product is never rounded)",
            oq_graph_node_label(rw->g, mm, lb, sizeof lb));
}

/* Keeps the element-wise/pooling candidates connected (through other
 * candidates) to a Conv/Gemm/MatMul candidate. An isolated one, such as the
 * Add of epsilon inside a decomposed LayerNormalization (ReduceMean -> Add
 * -> Sqrt), would gain no integer kernel next to float neighbours and only
 * add rounding. A model without weighted candidates keeps all of them.
 * A MatMul's bias Add (float, see bias_add_pattern) connects like one. */
static oq_status restrict_to_region(splan *sp, oq_error *err) {
    oq_rw *rw = &sp->rw;
    int *queue = malloc(((size_t)rw->n_nodes + 1) * sizeof *queue);
    bool *seen = calloc((size_t)rw->n_nodes + 1, sizeof *seen);
    if (!queue || !seen) {
        free(queue);
        free(seen);
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    }
    int head = 0, tail = 0;
    for (int i = 0; i < rw->n_nodes; i++)
        if (sp->np[i].cand && sp->np[i].kind == K_WEIGHTED) {
            seen[i] = true;
            queue[tail++] = i;
        }
    bool any_seed = tail > 0;
    while (head < tail) {
        int i = queue[head++];
        int nin, nout;
        const int *ins = oq_graph_node_inputs(rw->g, i, &nin);
        const int *outs = oq_graph_node_outputs(rw->g, i, &nout);
        for (int s = 0; s < nin + nout; s++) {
            int v = s < nin ? ins[s] : outs[s - nin];
            const oq_value *val = v >= 0 ? oq_graph_value(rw->g, v) : NULL;
            if (!val || !oq_rw_value_is_float(rw, v))
                continue;
            if (s < nin && val->kind == OQ_VALUE_NODE && val->producer >= 0) {
                int pn = val->producer;
                if ((sp->np[pn].cand || sp->np[pn].bias_of >= 0) && !seen[pn]) {
                    seen[pn] = true;
                    queue[tail++] = pn;
                }
            }
            for (int k = 0; s >= nin && k < val->n_consumers; k++) {
                int c = val->consumers[k];
                if ((sp->np[c].cand || sp->np[c].bias_of >= 0) && !seen[c]) {
                    seen[c] = true;
                    queue[tail++] = c;
                }
            }
        }
    }
    for (int i = 0; any_seed && i < rw->n_nodes; i++) {
        nplan *p = &sp->np[i];
        if (p->cand && !seen[i] && p->kind != K_DROP && p->kind != K_ACT) {
            p->cand = false;
            set_why(p, "not connected to a quantized Conv/Gemm/MatMul: Q/DQ would only add "
                       "rounding between float neighbours");
        }
    }
    free(queue);
    free(seen);
    return OQ_OK;
}

/* Decides every node and marks the tensors to quantize. */
static oq_status plan_static(splan *sp, oq_error *err) {
    oq_rw *rw = &sp->rw;
    sp->np = calloc((size_t)rw->n_nodes + 1, sizeof *sp->np);
    sp->tp = calloc((size_t)rw->n_values + 1, sizeof *sp->tp);
    if (!sp->np || !sp->tp)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory planning %d nodes", rw->n_nodes);
    for (int i = 0; i < rw->n_nodes; i++)
        decide_local(sp, i);
    for (int i = 0; i < rw->n_nodes; i++)
        bias_add_pattern(sp, i);
    oq_status st = restrict_to_region(sp, err);
    if (st != OQ_OK)
        return st;
    /* Compute nodes: inputs and outputs quantized. */
    for (int i = 0; i < rw->n_nodes; i++) {
        nplan *p = &sp->np[i];
        if (!p->cand || p->kind == K_ACT || p->kind == K_DROP)
            continue;
        p->quant = true;
        int nin;
        const int *ins = oq_graph_node_inputs(rw->g, i, &nin);
        for (int s = 0; s < nin; s++)
            if (ins[s] >= 0 && is_quant_slot(p, s))
                mark(sp, ins[s], oq_rw_is_const(rw, ins[s]) ? T_CONST : T_CALIB);
    }
    for (int i = 0; i < rw->n_nodes; i++)
        if (sp->np[i].quant)
            plan_outputs(sp, i);
    /* Relu/Clip on a quantized tensor, and data movement after one, in
     * topological order so chains (Reshape -> Transpose) inherit through. */
    int n_topo;
    const int *topo = oq_graph_topo_order(rw->g, &n_topo);
    for (int k = 0; k < n_topo; k++) {
        int i = topo[k];
        nplan *p = &sp->np[i];
        if (!p->cand || p->quant || (p->kind != K_ACT && p->kind != K_DROP))
            continue;
        int x = oq_rw_input(rw, i, 0);
        tmode xm = sp->tp[x].mode;
        if (xm != T_CALIB && xm != T_INHERIT) {
            set_why(p, "input '%s' is not quantized%s", vname(sp, x),
                    p->kind == K_ACT ? " (no integer kernel to gain)"
                                     : " (no parameters to share)");
            continue;
        }
        p->quant = true;
        int nout;
        const int *outs = oq_graph_node_outputs(rw->g, i, &nout);
        for (int s = 0; s < nout; s++) {
            int o = outs[s];
            if (o < 0)
                continue;
            if (p->kind == K_ACT) {
                mark(sp, o, T_CALIB);
            } else {
                sp->tp[o].mode = T_INHERIT;
                sp->tp[o].src = root_of(sp, x);
            }
        }
    }
    return OQ_OK;
}

static oq_status sp_open(splan *sp, oq_model *m, const oq_quant_config *cfg, oq_error *err) {
    memset(sp, 0, sizeof *sp);
    oq_status st = oq_rw_open(&sp->rw, m, cfg, err);
    if (st == OQ_OK)
        st = plan_static(sp, err);
    if (st != OQ_OK)
        sp_free(sp);
    return st;
}

oq_status oq_rewrite_activation_tensors(oq_model *m, const oq_quant_config *cfg, char ***names,
                                        size_t *n, oq_error *err) {
    *names = NULL;
    *n = 0;
    if (!m || !cfg)
        return oq_err(err, OQ_EINVAL, "rewrite: no model or config");
    splan sp;
    oq_status st = sp_open(&sp, m, cfg, err);
    if (st != OQ_OK)
        return st;
    char **out = calloc((size_t)sp.rw.n_values + 1, sizeof *out);
    size_t k = 0;
    if (!out)
        st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory listing tensors");
    for (int v = 0; st == OQ_OK && v < sp.rw.n_values; v++) {
        if (sp.tp[v].mode != T_CALIB)
            continue;
        const oq_tensor_override *ov = find_override(cfg, vname(&sp, v));
        if (ov && ov->has_range)
            continue;
        if (!(out[k] = strdup(vname(&sp, v))))
            st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory listing tensors");
        else
            k++;
    }
    sp_free(&sp);
    if (st != OQ_OK) {
        oq_strings_free(out, k);
        return st;
    }
    *names = out;
    *n = k;
    return OQ_OK;
}

/* ---- parameters ---------------------------------------------------------- */

static oq_status calib_params(splan *sp, int v, oq_act_range_fn ranges, void *ctx, oq_error *err) {
    tplan *t = &sp->tp[v];
    const char *name = vname(sp, v);
    const oq_tensor_override *ov;
    tensor_cfg(sp->rw.cfg, name, &t->qtype, &t->sym, &ov);
    float lo, hi;
    oq_status st;
    if (ov && ov->has_range) {
        lo = ov->lo;
        hi = ov->hi;
    } else {
        if (!ranges)
            return oq_err(err, OQ_EINVAL, "rewrite: no range function for tensor '%s'", name);
        st = ranges(ctx, name, &lo, &hi, err);
        if (st != OQ_OK) {
            oq_err_prefix(err, "range of tensor '%s': ", name);
            return st;
        }
    }
    if (t->clip && hi > t->clip_hi)
        hi = t->clip_hi;
    st = oq_qparams_compute(lo, hi, t->qtype, t->sym, false, sp->rw.cfg->min_real_range, &t->p, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "tensor '%s': ", name);
        return st;
    }
    if (t->clip) {
        /* ClipQuantFusion keeps the Clip unless scale * (qmax - zp) <= max +
         * FLT_EPSILON; the rounding of the scale may overshoot by an ulp. */
        int32_t qmin, qmax;
        st = oq_qtype_range(t->qtype, false, &qmin, &qmax, err);
        if (st != OQ_OK)
            return st;
        for (int k = 0; k < 64 && t->p.scale * (float)(qmax - t->p.zero_point) > t->clip_hi + FLT_EPSILON;
             k++)
            t->p.scale = nextafterf(t->p.scale, 0.0f);
    }
    t->has_p = true;
    return OQ_OK;
}

static oq_status const_params(splan *sp, int v, oq_tensor **data, oq_error *err) {
    tplan *t = &sp->tp[v];
    const char *name = vname(sp, v);
    const oq_tensor_override *ov;
    tensor_cfg(sp->rw.cfg, name, &t->qtype, &t->sym, &ov);
    oq_status st = oq_rw_const_tensor(&sp->rw, v, data, err);
    if (st != OQ_OK)
        return st;
    const float *x = (*data)->data;
    float lo = 0, hi = 0;
    for (size_t i = 0; i < (*data)->count; i++) {
        if (!isfinite(x[i]))
            return oq_err(err, OQ_EDATA, "constant '%s' holds %s at index %zu", name,
                          isnan(x[i]) ? "NaN" : "Inf", i);
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (ov && ov->has_range) {
        lo = ov->lo;
        hi = ov->hi;
    }
    st = oq_qparams_compute(lo, hi, t->qtype, t->sym, false, sp->rw.cfg->min_real_range, &t->p, err);
    if (st != OQ_OK)
        oq_err_prefix(err, "constant '%s': ", name);
    t->has_p = st == OQ_OK;
    return st;
}

/* ---- emission ------------------------------------------------------------ */

typedef struct {
    int node;
    int bnode, bslot;  /* where the bias is read and its DequantizeLinear goes */
    oq_tensor *bias;   /* float bias (beta folded), owned */
    oq_tensor *qbias;  /* int32 bias, owned */
} w_user;

typedef struct {
    int v;             /* weight value */
    int axis;
    oq_tensor *w;      /* float weight, owned */
    oq_rw_weight wt;
    w_user *users;
    size_t n_users;
} w_group;

static void groups_free(w_group *g, size_t n) {
    for (size_t i = 0; g && i < n; i++) {
        oq_tensor_free(g[i].w);
        oq_rw_weight_clear(&g[i].wt);
        for (size_t u = 0; u < g[i].n_users; u++) {
            oq_tensor_free(g[i].users[u].bias);
            oq_tensor_free(g[i].users[u].qbias);
        }
        free(g[i].users);
    }
    free(g);
}

static float input_scale(const splan *sp, int node) {
    int x = oq_rw_input(&sp->rw, node, 0);
    return sp->tp[root_of(sp, x)].p.scale;
}

static oq_status quantize_biases(splan *sp, w_group *g, oq_error *err) {
    /* Raising a weight scale for one bias changes the others' scales:
     * repeat until no scale moves (scales only grow, so this ends fast). */
    for (int round = 0; round < 8; round++) {
        bool changed = false;
        for (size_t u = 0; u < g->n_users; u++) {
            w_user *us = &g->users[u];
            if (!us->bias)
                continue;
            bool ch = false;
            oq_tensor_free(us->qbias);
            us->qbias = NULL;
            oq_status st = oq_quantize_bias(us->bias, input_scale(sp, us->node), g->wt.p, g->wt.n,
                                            &us->qbias, &ch, err);
            if (st != OQ_OK) {
                char lb[200];
                oq_err_prefix(err, "%s bias: ", node_label(sp, us->node, lb, sizeof lb));
                return st;
            }
            changed |= ch;
        }
        if (!changed)
            return OQ_OK;
    }
    return OQ_OK;
}

static oq_status emit_bias(splan *sp, w_group *g, w_user *us, oq_error *err) {
    oq_rw *rw = &sp->rw;
    const char *bname = vname(sp, oq_rw_input(rw, us->bnode, us->bslot));
    size_t n = g->wt.n;
    float sx = input_scale(sp, us->node);
    oq_qparams *bp = calloc(n, sizeof *bp);
    if (!bp)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory for bias parameters");
    /* ONNX Runtime folds this DequantizeLinear into QLinearConv/QGemm's
     * int32 bias: its scale must be s_x * s_w per channel, zero point 0. */
    for (size_t c = 0; c < n; c++)
        bp[c] = (oq_qparams){sx * g->wt.p[c].scale, 0};
    const char *qn, *sn, *zn, *dq;
    oq_status st = oq_rw_add_init(rw, bname, "_quantized", us->qbias, &qn, err);
    if (st == OQ_OK)
        st = oq_rw_add_qparams(rw, bname, bp, n, OQ_DTYPE_INT32, g->wt.axis >= 0, &sn, &zn, err);
    free(bp);
    /* per channel along the last axis (the only one not 1) */
    if (st == OQ_OK)
        st = oq_rw_add_dq(rw, qn, sn, zn, g->wt.axis >= 0 ? us->qbias->rank - 1 : -1, bname, &dq, err);
    if (st == OQ_OK)
        st = oq_edit_set_node_input(rw->m, rw->nodes[us->bnode], (size_t)us->bslot, dq, err);
    return st;
}

static oq_status load_bias(splan *sp, int node, w_user *us, oq_error *err) {
    nplan *p = &sp->np[node];
    oq_rw *rw = &sp->rw;
    if (p->bias_add >= 0) {
        us->bnode = p->bias_add;
        us->bslot = sp->np[p->bias_add].bias_slot;
        return oq_rw_const_tensor(rw, oq_rw_input(rw, us->bnode, us->bslot), &us->bias, err);
    }
    if (p->b_slot < 0)
        return OQ_OK;
    us->bnode = node;
    us->bslot = p->b_slot;
    oq_status st = oq_rw_const_tensor(rw, oq_rw_input(rw, node, p->b_slot), &us->bias, err);
    if (st != OQ_OK)
        return st;
    /* Gemm C of [1, N] broadcasts like [N]: store the 1-D form. */
    us->bias->rank = 1;
    us->bias->dims[0] = (int64_t)us->bias->count;
    if (oq_node_is_onnx_op(rw->nodes[node], "Gemm")) {
        float beta = 1;
        st = oq_node_attr_float(rw->nodes[node], "beta", 1.0f, &beta, err);
        if (st != OQ_OK)
            return st;
        if (beta != 1.0f) {
            /* QGemm takes a bias only with beta = 1: fold beta into C. */
            float *b = us->bias->data;
            for (size_t k = 0; k < us->bias->count; k++)
                b[k] *= beta;
            st = oq_edit_set_attr_float(rw->m, rw->nodes[node], "beta", 1.0f, err);
        }
    }
    return st;
}

static oq_status emit_weights(splan *sp, char ***drop, size_t *n_drop, oq_error *err) {
    oq_rw *rw = &sp->rw;
    const oq_quant_config *cfg = rw->cfg;
    w_group *groups = calloc((size_t)rw->n_nodes + 1, sizeof *groups);
    size_t ng = 0;
    oq_status st = groups ? OQ_OK : oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    for (int i = 0; st == OQ_OK && i < rw->n_nodes; i++) {
        nplan *p = &sp->np[i];
        if (!p->quant || p->kind != K_WEIGHTED || p->w_slot < 0)
            continue;
        int w = oq_rw_input(rw, i, p->w_slot);
        w_group *g = NULL;
        for (size_t k = 0; k < ng && !g; k++)
            if (groups[k].v == w && groups[k].axis == p->w_axis)
                g = &groups[k];
        if (!g) {
            g = &groups[ng++];
            g->v = w;
            g->axis = p->w_axis;
            g->users = calloc((size_t)rw->n_nodes, sizeof *g->users);
            if (!g->users) {
                st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
                break;
            }
            st = oq_rw_const_tensor(rw, w, &g->w, err);
            if (st == OQ_OK)
                st = oq_rw_weight_params(vname(sp, w), g->w, g->axis, cfg->weight_type,
                                         cfg->weight_symmetric, cfg->reduce_range, &g->wt, err);
        }
        if (st != OQ_OK)
            break;
        w_user *us = &g->users[g->n_users++];
        us->node = i;
        st = load_bias(sp, i, us, err);
    }
    for (size_t k = 0; st == OQ_OK && k < ng; k++) {
        w_group *g = &groups[k];
        st = quantize_biases(sp, g, err);
        if (st == OQ_OK)
            st = oq_rw_weight_emit(rw, g->w, &g->wt, err);
        for (size_t u = 0; st == OQ_OK && u < g->n_users; u++) {
            w_user *us = &g->users[u];
            nplan *p = &sp->np[us->node];
            const char *dq;
            st = oq_rw_add_dq(rw, g->wt.q_name, g->wt.scale_name, g->wt.zp_name, g->wt.axis,
                              vname(sp, g->v), &dq, err);
            if (st == OQ_OK)
                st = oq_edit_set_node_input(rw->m, rw->nodes[us->node], (size_t)p->w_slot, dq, err);
            if (st == OQ_OK && us->qbias) {
                st = emit_bias(sp, g, us, err);
                if (st == OQ_OK && !((*drop)[(*n_drop)++] =
                                         strdup(vname(sp, oq_rw_input(rw, us->bnode, us->bslot)))))
                    st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
            }
        }
        if (st == OQ_OK && !((*drop)[(*n_drop)++] = strdup(vname(sp, g->v))))
            st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    }
    groups_free(groups, ng);
    return st;
}

/* DequantizeLinear for every consumer slot that reads a quantized constant. */
static oq_status emit_consts(splan *sp, char ***drop, size_t *n_drop, oq_error *err) {
    oq_rw *rw = &sp->rw;
    for (int v = 0; v < rw->n_values; v++) {
        tplan *t = &sp->tp[v];
        if (t->mode != T_CONST)
            continue;
        oq_tensor *data = NULL, *q = NULL;
        oq_status st = const_params(sp, v, &data, err);
        if (st == OQ_OK)
            st = oq_quantize_tensor(data, -1, &t->p, 1, t->qtype, &q, err);
        if (st == OQ_OK)
            st = oq_rw_add_init(rw, vname(sp, v), "_quantized", q, &t->qconst, err);
        if (st == OQ_OK)
            st = oq_rw_add_qparams(rw, vname(sp, v), &t->p, 1, t->qtype, false, &t->scale, &t->zp,
                                   err);
        oq_tensor_free(data);
        oq_tensor_free(q);
        const oq_value *val = oq_graph_value(rw->g, v);
        for (int k = 0; st == OQ_OK && k < val->n_consumers; k++) {
            int c = val->consumers[k];
            if (!sp->np[c].quant)
                continue;
            int nin;
            const int *ins = oq_graph_node_inputs(rw->g, c, &nin);
            const char *dq = NULL;
            for (int s = 0; st == OQ_OK && s < nin; s++) {
                if (ins[s] != v || !is_quant_slot(&sp->np[c], s))
                    continue;
                if (!dq)
                    st = oq_rw_add_dq(rw, t->qconst, t->scale, t->zp, -1, vname(sp, v), &dq, err);
                if (st == OQ_OK)
                    st = oq_edit_set_node_input(rw->m, rw->nodes[c], (size_t)s, dq, err);
            }
        }
        if (st == OQ_OK && !((*drop)[(*n_drop)++] = strdup(vname(sp, v))))
            st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

static oq_status emit_activation_named(splan *sp, int v, const char *name, oq_error *err);

/* Inserts Q -> DQ for one activation tensor and rewires its readers. */
static oq_status emit_activation(splan *sp, int v, oq_error *err) {
    /* A copy: renaming the producer's output frees the model's string. */
    char *name_buf = strdup(vname(sp, v));
    if (!name_buf)
        return oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    oq_status st = emit_activation_named(sp, v, name_buf, err);
    free(name_buf);
    return st;
}

static oq_status emit_activation_named(splan *sp, int v, const char *name, oq_error *err) {
    oq_rw *rw = &sp->rw;
    const tplan *r = &sp->tp[root_of(sp, v)];
    const oq_value *val = oq_graph_value(rw->g, v);
    bool dedicated = rw->cfg->dedicated_qdq_pairs;
    bool prod_quant = val->producer >= 0 && val->kind == OQ_VALUE_NODE && sp->np[val->producer].quant;
    bool out_rename = prod_quant && val->graph_output >= 0;
    const char *src = name, *shared_q = NULL;
    oq_status st = OQ_OK;
    if (out_rename) {
        /* A graph output keeps its name: the producer writes a new tensor,
         * and the last DequantizeLinear produces the original name. */
        const char *fresh;
        st = oq_rw_name(rw, name, "_float", &fresh, err);
        int nout;
        const int *outs = oq_graph_node_outputs(rw->g, val->producer, &nout);
        for (int s = 0; st == OQ_OK && s < nout; s++)
            if (outs[s] == v)
                st = oq_edit_set_node_output(rw->m, rw->nodes[val->producer], (size_t)s, fresh, err);
        if (st != OQ_OK)
            return st;
        src = fresh;
        const char *qo, *dq_node;
        st = oq_rw_add_q(rw, src, r->scale, r->zp, name, &qo, err);
        if (st == OQ_OK)
            st = oq_rw_name(rw, name, "_DequantizeLinear", &dq_node, err);
        const char *ins[3] = {qo, r->scale, r->zp};
        if (st == OQ_OK)
            st = oq_edit_insert_node(rw->m, rw->gp, OQ_EDIT_APPEND, "DequantizeLinear", NULL,
                                     dq_node, ins, 3, &name, 1, NULL, err);
        if (st != OQ_OK)
            return st;
        rw->n_dq++;
        if (!dedicated)
            return OQ_OK; /* readers of the name read this DequantizeLinear */
    }
    int n_dq_consumers = 0;
    for (int k = 0; k < val->n_consumers; k++) {
        int c = val->consumers[k];
        int nin;
        const int *ins = oq_graph_node_inputs(rw->g, c, &nin);
        const char *dq = NULL;
        for (int s = 0; st == OQ_OK && s < nin; s++) {
            if (ins[s] != v || !(prod_quant || (sp->np[c].quant && is_quant_slot(&sp->np[c], s))))
                continue;
            if (!dq) {
                const char *qo = shared_q;
                if (dedicated || !qo) {
                    st = oq_rw_add_q(rw, src, r->scale, r->zp, name, &qo, err);
                    if (!dedicated)
                        shared_q = qo;
                }
                if (st == OQ_OK)
                    st = oq_rw_add_dq(rw, qo, r->scale, r->zp, -1, name, &dq, err);
                n_dq_consumers++;
            }
            if (st == OQ_OK)
                st = oq_edit_set_node_input(rw->m, rw->nodes[c], (size_t)s, dq, err);
        }
        if (st != OQ_OK)
            return st;
    }
    if (prod_quant && !out_rename && n_dq_consumers == 0) {
        /* An unread output of a quantized node (a Split branch): ORT's
         * selectors still want one Q per output. */
        const char *qo;
        st = oq_rw_add_q(rw, src, r->scale, r->zp, name, &qo, err);
    }
    return st;
}

static const char *qtype_word(oq_dtype t) {
    return oq_dtype_name(t);
}

static oq_status record(splan *sp, oq_error *err) {
    oq_rw *rw = &sp->rw;
    const oq_quant_config *cfg = rw->cfg;
    for (int i = 0; i < rw->n_nodes; i++) {
        nplan *p = &sp->np[i];
        oq_status st;
        if (!p->quant) {
            st = oq_rw_decide(sp->res, i, false, p->excluded, err, "%s", p->why[0] ? p->why : "not quantized");
        } else if (p->kind == K_WEIGHTED) {
            char w[96] = "", b[48] = "", o[160] = "";
            int x = oq_rw_input(rw, i, 0);
            const tplan *xt = &sp->tp[root_of(sp, x)];
            if (p->w_slot >= 0)
                snprintf(w, sizeof w, "%s %s weights%s", p->w_axis >= 0 ? "per-channel" : "per-tensor",
                         qtype_word(cfg->weight_type), cfg->weight_symmetric ? " (symmetric)" : "");
            else
                snprintf(w, sizeof w, "both inputs %s activations", qtype_word(xt->qtype));
            if (p->b_slot >= 0)
                snprintf(b, sizeof b, ", int32 bias");
            if (p->fused_act >= 0)
                snprintf(o, sizeof o, "; output quantized after %s '%s', which ORT folds into the Q",
                         sp->res ? sp->res->nodes[p->fused_act].op_type : "Relu",
                         sp->res ? sp->res->nodes[p->fused_act].node : "");
            else if (p->float_out)
                snprintf(o, sizeof o, "; float output (%s)",
                         oq_node_is_onnx_op(rw->nodes[i], "Gemm") ? "QGemm" : "MatMulIntegerToFloat");
            st = oq_rw_decide(sp->res, i, true, false, err, "%s: %s activations, %s%s%s", p->info->ort,
                              qtype_word(xt->qtype), w, b, o);
        } else if (p->kind == K_ACT) {
            if (p->fused_from >= 0)
                st = oq_rw_decide(sp->res, i, true, false, err,
                                  "carries the QuantizeLinear of '%s' (zero point = qmin: ORT "
                                  "removes it, ReluQuantFusion/ClipQuantFusion)",
                                  sp->res ? sp->res->nodes[p->fused_from].node : "");
            else
                st = oq_rw_decide(sp->res, i, true, false, err,
                                  "DequantizeLinear -> %s -> QuantizeLinear (no integer kernel)",
                                  rw->nodes[i]->op_type);
        } else if (p->kind == K_DROP) {
            int x = oq_rw_input(rw, i, 0);
            st = oq_rw_decide(sp->res, i, true, false, err,
                              "keeps the scale/zero point of '%s' (ORT drops the Q/DQ pair)",
                              vname(sp, root_of(sp, x)));
        } else {
            int o = oq_rw_output(rw, i, 0);
            st = oq_rw_decide(sp->res, i, true, false, err, "%s: %s activations", p->info->ort,
                              o >= 0 ? qtype_word(sp->tp[root_of(sp, o)].qtype) : "?");
        }
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

oq_status oq_rewrite_static(oq_model *m, const oq_quant_config *cfg, oq_act_range_fn ranges,
                            void *ctx, oq_rewrite_result *res, oq_error *err) {
    if (res)
        memset(res, 0, sizeof *res);
    if (!m || !cfg || !res)
        return oq_err(err, OQ_EINVAL, "rewrite: no model, config or result");
    splan sp;
    oq_status st = sp_open(&sp, m, cfg, err);
    if (st != OQ_OK)
        return st;
    sp.res = res;
    oq_rw *rw = &sp.rw;
    char **drop = calloc((size_t)rw->n_values + (size_t)rw->n_nodes + 1, sizeof *drop);
    size_t n_drop = 0;
    if (!drop)
        st = oq_err(err, OQ_ENOMEM, "rewrite: out of memory");
    if (st == OQ_OK)
        st = oq_rw_result_init(rw, res, err);
    if (st == OQ_OK)
        st = oq_rw_check_qtypes(rw, cfg->activation_type, cfg->weight_type, cfg->per_channel, err);
    for (size_t k = 0; st == OQ_OK && k < cfg->n_overrides; k++)
        if (cfg->overrides[k].dtype)
            st = oq_rw_check_qtypes(rw, cfg->overrides[k].dtype, OQ_DTYPE_UNDEFINED, false, err);
    /* Parameters: calibrated tensors first, then those sharing them. */
    for (int v = 0; st == OQ_OK && v < rw->n_values; v++)
        if (sp.tp[v].mode == T_CALIB) {
            st = calib_params(&sp, v, ranges, ctx, err);
            if (st == OQ_OK)
                st = oq_rw_add_qparams(rw, vname(&sp, v), &sp.tp[v].p, 1, sp.tp[v].qtype, false,
                                       &sp.tp[v].scale, &sp.tp[v].zp, err);
        }
    for (int v = 0; st == OQ_OK && v < rw->n_values; v++)
        if (sp.tp[v].mode == T_INHERIT) {
            tplan *t = &sp.tp[v];
            const tplan *r = &sp.tp[t->src];
            t->qtype = r->qtype;
            t->sym = r->sym;
            t->p = r->p;
            t->has_p = true;
            t->scale = r->scale;
            t->zp = r->zp;
        }
    if (st == OQ_OK)
        st = emit_consts(&sp, &drop, &n_drop, err);
    if (st == OQ_OK)
        st = emit_weights(&sp, &drop, &n_drop, err);
    for (int v = 0; st == OQ_OK && v < rw->n_values; v++)
        if (sp.tp[v].mode == T_CALIB || sp.tp[v].mode == T_INHERIT)
            st = emit_activation(&sp, v, err);
    if (st == OQ_OK)
        st = record(&sp, err);
    if (st == OQ_OK)
        st = oq_rw_drop_unused_inits(rw, drop, n_drop, err);
    if (st == OQ_OK)
        st = oq_rw_drop_dead_folds(rw, err);
    res->n_quantize_linear = rw->n_q;
    res->n_dequantize_linear = rw->n_dq;
    if (st == OQ_OK)
        st = oq_rw_finish(rw, err);
    oq_strings_free(drop, n_drop);
    sp_free(&sp);
    return st;
}
