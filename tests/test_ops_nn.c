/* test_ops_nn.c: the nn op family (Conv, ConvTranspose, Gemm, MatMul, Einsum,
 * LSTM, pools, norms) called through its registry entries with hand-built
 * nodes: hand-computed values, the fast paths (BLAS, im2col tiles, depthwise,
 * threads) against plain reference loops on random data, and error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "op.h"
#include "registry.h"
#include "testutil.h"
#include "threadpool.h"

/* ---- node builder --------------------------------------------------------- */

#define TN_MAX_ATTR 16

typedef struct {
    Onnx__NodeProto node;
    Onnx__AttributeProto attrs[TN_MAX_ATTR];
    Onnx__AttributeProto *ptrs[TN_MAX_ATTR];
    ProtobufCBinaryData strs[TN_MAX_ATTR][8];
    char *outs[4];
} tnode;

static void tn_init(tnode *n, const char *op) {
    memset(n, 0, sizeof *n);
    onnx__node_proto__init(&n->node);
    n->node.op_type = (char *)op;
    n->node.attribute = n->ptrs;
    static char o0[] = "y", o1[] = "y1", o2[] = "y2", o3[] = "y3";
    n->outs[0] = o0, n->outs[1] = o1, n->outs[2] = o2, n->outs[3] = o3;
    n->node.output = n->outs;
    n->node.n_output = 4;
}

static Onnx__AttributeProto *tn_add(tnode *n, const char *name, Onnx__AttributeProto__AttributeType t) {
    ck_assert(n->node.n_attribute < TN_MAX_ATTR);
    Onnx__AttributeProto *a = &n->attrs[n->node.n_attribute];
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = t;
    n->ptrs[n->node.n_attribute++] = a;
    return a;
}

static void tn_int(tnode *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void tn_float(tnode *n, const char *name, float v) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

/* v must outlive the node */
static void tn_ints(tnode *n, const char *name, const int64_t *v, size_t cnt) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = cnt;
    a->ints = (int64_t *)v;
}

static void tn_str(tnode *n, const char *name, const char *s) {
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)s;
    a->s.len = strlen(s);
}

static void tn_strs(tnode *n, const char *name, const char *const *s, size_t cnt) {
    size_t idx = n->node.n_attribute;
    Onnx__AttributeProto *a = tn_add(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
    ck_assert(cnt <= 8);
    for (size_t i = 0; i < cnt; i++) {
        n->strs[idx][i].data = (uint8_t *)s[i];
        n->strs[idx][i].len = strlen(s[i]);
    }
    a->n_strings = cnt;
    a->strings = n->strs[idx];
}

/* ---- tensors -------------------------------------------------------------- */

static oq_tensor *tens(oq_dtype dt, int rank, const int64_t *dims) {
    oq_tensor *t;
    oq_error err = {0};
    ck_assert_msg(oq_tensor_new(dt, rank, dims, 0, &t, &err) == OQ_OK, "%s", err.msg);
    return t;
}

/* rank, dims of a literal shape */
#define DIMS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8), (const int64_t[]){__VA_ARGS__}

static oq_tensor *ftens(const float *v, int rank, const int64_t *dims) {
    oq_tensor *t = tens(OQ_DTYPE_FLOAT, rank, dims);
    if (v)
        memcpy(t->data, v, t->nbytes);
    return t;
}

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static oq_tensor *rtens(int rank, const int64_t *dims) {
    oq_tensor *t = tens(OQ_DTYPE_FLOAT, rank, dims);
    float *d = t->data;
    for (size_t i = 0; i < t->count; i++)
        d[i] = frand();
    return t;
}

static void free_outs(oq_tensor *out, int n) {
    for (int i = 0; i < n; i++) {
        free(out[i].data);
        out[i].data = NULL;
    }
}

static oq_pool *test_pool;
/* Inputs run_op shows to prepare as constants (bit i: input i), as the
 * executor does for initializers: Conv/Gemm/MatMul then pack their weights. */
static unsigned run_const_mask;
/* Called between prepare and run when set (tests that change a constant's
 * values after packing to see which copy the run reads). */
static void (*run_hook)(const oq_tensor *const *in);

/* Runs op through prepare/infer/run/release; outputs are malloc'd (free
 * with free_outs). Returns the first failing status. */
static oq_status run_op(const char *op, int opset, tnode *n, const oq_tensor *const *in, int n_in,
                        oq_tensor *out, int n_out, oq_error *err) {
    const oq_op *e = oq_registry_find("", op, opset, NULL);
    if (!e)
        return oq_err(err, OQ_EUNSUPPORTED, "no entry for %s-%d", op, opset);
    const oq_tensor *consts[16] = {NULL};
    for (int i = 0; i < n_in && i < 16; i++)
        if (run_const_mask >> i & 1u)
            consts[i] = in[i];
    char label[64];
    snprintf(label, sizeof label, "node 't' (%s)", op);
    n->node.n_input = (size_t)n_in;
    n->node.n_output = (size_t)n_out;
    oq_node_ctx ctx = {.node = &n->node, .label = label, .opset = opset, .n_inputs = n_in,
                       .n_outputs = n_out, .const_inputs = consts, .pool = test_pool};
    memset(out, 0, (size_t)n_out * sizeof *out);
    oq_status s = e->prepare ? e->prepare(&ctx, err) : OQ_OK;
    if (s == OQ_OK)
        s = e->infer(&ctx, in, out, err);
    for (int i = 0; s == OQ_OK && i < n_out; i++) {
        size_t cnt = 1;
        for (int d = 0; d < out[i].rank; d++)
            cnt *= (size_t)out[i].dims[d];
        out[i].count = cnt;
        oq_dtype_nbytes(out[i].dtype, cnt, &out[i].nbytes);
        out[i].data = malloc(out[i].nbytes ? out[i].nbytes : 1);
        memset(out[i].data, 0xA5, out[i].nbytes); /* not zeroed: catch unwritten outputs */
    }
    if (s == OQ_OK && run_hook)
        run_hook(in);
    if (s == OQ_OK)
        s = e->run(&ctx, in, out, err);
    if (e->release)
        e->release(ctx.state);
    if (s != OQ_OK)
        free_outs(out, n_out);
    return s;
}

static void expect_close(const float *got, const double *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i]),
                      "%s: element %zu is %.7g, expected %.7g", what, i, got[i], want[i]);
}

static size_t prod(const int64_t *d, int n) {
    size_t c = 1;
    for (int i = 0; i < n; i++)
        c *= (size_t)d[i];
    return c;
}

/* ---- Conv ------------------------------------------------------------------- */

typedef struct {
    int nsp;
    int64_t N, C, M, group;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
    const char *auto_pad; /* NULL: explicit pads */
    bool bias;
} conv_case;

static void conv_geom(const conv_case *c, int64_t *out, int64_t *pb) {
    for (int i = 0; i < c->nsp; i++) {
        int64_t dk = (c->k[i] - 1) * c->d[i] + 1;
        if (c->auto_pad && strncmp(c->auto_pad, "SAME", 4) == 0) {
            out[i] = (c->in[i] + c->s[i] - 1) / c->s[i];
            int64_t total = (out[i] - 1) * c->s[i] + dk - c->in[i];
            if (total < 0)
                total = 0;
            pb[i] = strcmp(c->auto_pad, "SAME_UPPER") == 0 ? total / 2 : total - total / 2;
        } else {
            pb[i] = c->pb[i];
            out[i] = (c->in[i] + c->pb[i] + c->pe[i] - dk) / c->s[i] + 1;
        }
    }
}

/* Names the case in conv_check's failure messages when set. */
static const char *conv_label = "Conv";

static void conv_check(const conv_case *c) {
    int r = c->nsp + 2;
    int64_t xd[5] = {c->N, c->C}, wd[5] = {c->M, c->C / c->group};
    for (int i = 0; i < c->nsp; i++) {
        xd[2 + i] = c->in[i];
        wd[2 + i] = c->k[i];
    }
    oq_tensor *x = rtens(r, xd), *w = rtens(r, wd), *b = rtens(1, &c->M);
    tnode n;
    tn_init(&n, "Conv");
    tn_ints(&n, "strides", c->s, (size_t)c->nsp);
    tn_ints(&n, "dilations", c->d, (size_t)c->nsp);
    tn_int(&n, "group", c->group);
    int64_t pads[6];
    if (c->auto_pad) {
        tn_str(&n, "auto_pad", c->auto_pad);
    } else {
        for (int i = 0; i < c->nsp; i++) {
            pads[i] = c->pb[i];
            pads[c->nsp + i] = c->pe[i];
        }
        tn_ints(&n, "pads", pads, 2 * (size_t)c->nsp);
    }
    const oq_tensor *in[3] = {x, w, c->bias ? b : NULL};
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("Conv", 22, &n, in, 3, out, 1, &err) == OQ_OK, "%s", err.msg);
    int64_t od[3], pb[3];
    conv_geom(c, od, pb);
    ck_assert_int_eq(out[0].rank, r);
    for (int i = 0; i < c->nsp; i++)
        ck_assert_int_eq(out[0].dims[2 + i], od[i]);
    /* reference: direct loops in double */
    size_t P = prod(od, c->nsp), Pin = prod(c->in, c->nsp), K = prod(c->k, c->nsp);
    int64_t Cg = c->C / c->group, Mg = c->M / c->group;
    double *ref = calloc((size_t)(c->N * c->M) * P, sizeof *ref);
    const float *X = x->data, *W = w->data, *B = b->data;
    for (int64_t nn = 0; nn < c->N; nn++)
        for (int64_t m = 0; m < c->M; m++)
            for (size_t p = 0; p < P; p++) {
                int64_t oc[3], rem = (int64_t)p;
                for (int i = c->nsp - 1; i >= 0; i--) {
                    oc[i] = rem % od[i];
                    rem /= od[i];
                }
                double acc = c->bias ? B[m] : 0.0;
                int64_t g = m / Mg;
                for (int64_t ci = 0; ci < Cg; ci++)
                    for (size_t kk = 0; kk < K; kk++) {
                        int64_t kc[3], kr = (int64_t)kk;
                        for (int i = c->nsp - 1; i >= 0; i--) {
                            kc[i] = kr % c->k[i];
                            kr /= c->k[i];
                        }
                        size_t off = 0;
                        bool ok = true;
                        for (int i = 0; i < c->nsp; i++) {
                            int64_t ii = oc[i] * c->s[i] - pb[i] + kc[i] * c->d[i];
                            if (ii < 0 || ii >= c->in[i])
                                ok = false;
                            off = off * (size_t)c->in[i] + (size_t)(ii < 0 ? 0 : ii);
                        }
                        if (!ok)
                            continue;
                        acc += (double)X[((size_t)(nn * c->C + g * Cg + ci)) * Pin + off] *
                               W[((size_t)(m * Cg + ci)) * K + kk];
                    }
                ref[(size_t)(nn * c->M + m) * P + p] = acc;
            }
    expect_close(out[0].data, ref, (size_t)(c->N * c->M) * P, conv_label);
    free(ref);
    free_outs(out, 1);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(b);
}

static const conv_case conv_cases[] = {
    /* 2-D: plain, padded, strided, dilated, asymmetric pads */
    {2, 1, 3, 4, 1, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 5, 6, 1, {11, 8}, {3, 2}, {2, 1}, {1, 2}, {0, 1}, {2, 0}, NULL, true},
    {2, 1, 4, 4, 2, {9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, NULL, false},
    {2, 1, 3, 2, 1, {8, 8}, {3, 3}, {2, 2}, {1, 1}, {0}, {0}, "SAME_UPPER", true},
    {2, 1, 3, 2, 1, {8, 7}, {2, 3}, {2, 2}, {1, 1}, {0}, {0}, "SAME_LOWER", true},
    {2, 1, 3, 2, 1, {6, 7}, {3, 3}, {1, 1}, {1, 1}, {0}, {0}, "VALID", false},
    /* stride 1, output the size of the input: shifted-copy im2col */
    {2, 2, 4, 5, 1, {6, 7}, {3, 3}, {1, 1}, {2, 2}, {2, 2}, {2, 2}, NULL, true},
    {2, 3, 2, 3, 1, {5, 4}, {5, 3}, {1, 1}, {1, 1}, {3, 0}, {1, 2}, NULL, true},
    {2, 1, 2, 3, 1, {3, 2}, {7, 5}, {1, 1}, {1, 1}, {3, 2}, {3, 2}, NULL, true},
    /* pointwise (direct GEMM) and strided pointwise */
    {2, 2, 8, 5, 1, {5, 6}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, NULL, true},
    {2, 1, 8, 6, 2, {5, 6}, {1, 1}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, NULL, true},
    /* depthwise 3x3 / 5x5, stride 1 and 2, dilation, multiplier 2 */
    {2, 2, 6, 6, 6, {10, 13}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 4, 4, 4, {11, 12}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 4, 4, 4, {12, 12}, {5, 5}, {1, 2}, {1, 1}, {2, 2}, {2, 2}, NULL, false},
    {2, 1, 3, 6, 3, {9, 9}, {3, 3}, {1, 1}, {2, 2}, {2, 1}, {1, 2}, NULL, true},
    {2, 1, 2, 2, 2, {3, 2}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {8, 9}, {7, 7}, {1, 1}, {1, 1}, {3, 3}, {3, 3}, NULL, true},
    {2, 2, 3, 3, 3, {9, 10}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {2, 2}, NULL, true},
    {2, 1, 2, 2, 2, {11, 13}, {5, 5}, {1, 1}, {1, 1}, {0, 0}, {3, 4}, NULL, true},
    /* 1-D and 3-D */
    {1, 2, 3, 4, 1, {17}, {4}, {2}, {2}, {3}, {1}, NULL, true},
    {1, 1, 4, 4, 4, {10}, {3}, {1}, {1}, {1}, {1}, NULL, true},
    {3, 1, 2, 3, 1, {5, 6, 4}, {3, 2, 2}, {1, 2, 1}, {1, 1, 2}, {1, 0, 1}, {1, 1, 0}, NULL, true},
    /* enough depthwise planes to be split over the pool */
    {2, 2, 64, 64, 64, {24, 24}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    /* large enough to need several im2col tiles */
    {2, 1, 64, 16, 1, {40, 40}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    /* whole-image AVX-512 im2col: rows wider than one vector (several
     * chunks, stride 1 and 2, dilated), images batched (P < 256) and not */
    {2, 3, 3, 8, 1, {23, 41}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 3, 8, 1, {20, 37}, {3, 3}, {1, 1}, {1, 2}, {1, 2}, {1, 2}, NULL, true},
    {2, 5, 4, 6, 1, {6, 5}, {3, 3}, {2, 1}, {1, 1}, {1, 0}, {0, 1}, NULL, false},
    {2, 3, 2, 5, 1, {9, 33}, {2, 4}, {2, 2}, {1, 1}, {0, 3}, {1, 0}, NULL, true},
    /* stride 3 (portable im2col), grouped with several outputs per group */
    {2, 2, 2, 4, 1, {13, 14}, {3, 3}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 8, 8, 2, {9, 20}, {3, 3}, {1, 2}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    /* pointwise on images of >= 256 positions, several images */
    {2, 3, 8, 16, 1, {16, 20}, {1, 1}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, NULL, true},
};

START_TEST(conv_vs_reference) {
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        conv_check(&conv_cases[i]);
}
END_TEST

/* W and B constant: W packed once per group at prepare, the bias added by
 * the GEMM epilogue; with the AVX-512 im2col and with the portable one. */
START_TEST(conv_packed_vs_reference) {
    run_const_mask = 0x6;
    for (int simd = 1; simd >= 0; simd--) {
        bool was = oq_nn_conv_set_simd(simd != 0);
        for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
            conv_check(&conv_cases[i]);
        oq_nn_conv_set_simd(was);
    }
    run_const_mask = 0;
}
END_TEST

/* Depthwise (one input channel per group, nn_dwconv.c): the AVX-512 kernels
 * (unrolled 3x3/5x5 with vertical stride 1 or 2; table-driven for other
 * kernels, strides and dilations along rows of stride 1) and the portable
 * one. Widths around the 16-column vectors (a row's last vector is partial,
 * taps reach the padding on both sides), plane heights that exercise the
 * row blocking (1..9, 13, and tall planes past the cached row tables),
 * padding wider than the kernel (whole rows and vectors of padding),
 * asymmetric pads, several images and 2 outputs per group. */
static const conv_case dw_cases[] = {
    /* ppocr_cls's shapes (48x192 input): 3x3 [2,1], 3x3 s1, 5x5 s1, 5x5 [2,1] */
    {2, 2, 8, 8, 8, {24, 96}, {3, 3}, {2, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 6, 6, 6, {12, 96}, {3, 3}, {2, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 5, 5, 5, {6, 96}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 5, 5, 5, {6, 96}, {5, 5}, {2, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 3, 7, 7, 7, {3, 96}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 2, 4, 4, 4, {3, 96}, {5, 5}, {2, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 3, 9, 9, 9, {2, 96}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    /* widths 7, 17, 33 and 200; heights 1..9 and 13 */
    {2, 1, 3, 3, 3, {1, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 3, 3, 3, {4, 17}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {5, 33}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {7, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {8, 17}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 1, 3, 3, 3, {9, 33}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 1, 2, 2, 2, {13, 200}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 2, 2, 2, {17, 33}, {5, 5}, {2, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 1, 2, 2, 2, {9, 17}, {3, 3}, {2, 1}, {1, 1}, {0, 1}, {0, 1}, NULL, true},
    /* tiny planes: 1x1 and 2x3 inputs, every tap but the centre in padding */
    {2, 2, 3, 3, 3, {1, 1}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 3, 3, 3, {1, 1}, {5, 5}, {2, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    {2, 2, 3, 3, 3, {2, 3}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 2, 3, 3, 3, {2, 3}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    /* asymmetric pads, no pads, padding wider than the kernel */
    {2, 2, 3, 3, 3, {7, 17}, {3, 3}, {1, 1}, {1, 1}, {0, 2}, {2, 0}, NULL, true},
    {2, 1, 3, 3, 3, {8, 33}, {5, 5}, {2, 1}, {1, 1}, {1, 0}, {3, 4}, NULL, true},
    {2, 1, 3, 3, 3, {10, 40}, {5, 5}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, NULL, true},
    {2, 1, 2, 2, 2, {3, 5}, {3, 3}, {1, 1}, {1, 1}, {4, 18}, {4, 3}, NULL, true},
    {2, 1, 2, 2, 2, {5, 20}, {5, 5}, {2, 1}, {1, 1}, {0, 0}, {0, 0}, "SAME_UPPER", true},
    /* strides [2,2] and [1,2] (portable: rows of stride 2) */
    {2, 2, 3, 3, 3, {11, 17}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {9, 33}, {5, 5}, {1, 2}, {1, 1}, {2, 2}, {2, 1}, NULL, true},
    {2, 1, 3, 3, 3, {12, 96}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {1, 1}, NULL, true},
    /* dilation 2 (both axes, rows only, columns only) */
    {2, 2, 3, 3, 3, {10, 33}, {3, 3}, {1, 1}, {2, 2}, {2, 2}, {2, 2}, NULL, true},
    {2, 1, 3, 3, 3, {11, 17}, {3, 3}, {2, 1}, {2, 1}, {2, 1}, {1, 1}, NULL, true},
    {2, 1, 3, 3, 3, {6, 20}, {5, 5}, {1, 1}, {1, 2}, {2, 4}, {2, 4}, NULL, true},
    /* 7x7, non-square kernels, a plane taller than the cached row tables
     * (40 rows: 10 blocks of 4), a kernel of 17 rows (portable) */
    {2, 2, 3, 3, 3, {9, 17}, {7, 7}, {1, 1}, {1, 1}, {3, 3}, {3, 3}, NULL, true},
    {2, 1, 2, 2, 2, {14, 40}, {7, 7}, {2, 1}, {1, 1}, {3, 3}, {3, 3}, NULL, true},
    {2, 1, 3, 3, 3, {7, 33}, {3, 5}, {1, 1}, {1, 1}, {1, 2}, {1, 2}, NULL, true},
    {2, 1, 3, 3, 3, {6, 17}, {1, 3}, {1, 1}, {1, 1}, {0, 1}, {0, 1}, NULL, true},
    {2, 1, 3, 3, 3, {8, 9}, {5, 1}, {2, 1}, {1, 1}, {2, 0}, {2, 0}, NULL, true},
    {2, 1, 2, 2, 2, {40, 20}, {7, 7}, {1, 1}, {1, 1}, {3, 3}, {3, 3}, NULL, true},
    {2, 1, 2, 2, 2, {40, 20}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 2, 2, 2, {20, 6}, {17, 1}, {1, 1}, {1, 1}, {8, 0}, {8, 0}, NULL, true},
    /* two outputs per group */
    {2, 2, 3, 6, 3, {6, 20}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, NULL, true},
    {2, 1, 2, 4, 2, {5, 18}, {5, 5}, {2, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
    /* enough planes to be split over the pool */
    {2, 4, 48, 48, 48, {3, 96}, {5, 5}, {1, 1}, {1, 1}, {2, 2}, {2, 2}, NULL, true},
};

/* Each case with and without bias, through the AVX-512 kernels and the
 * portable one, on the pool and on the caller's thread alone. */
START_TEST(depthwise_vs_reference) {
    oq_pool *saved = test_pool;
    char label[64];
    for (int simd = 1; simd >= 0; simd--) {
        bool was = oq_nn_conv_set_simd(simd != 0);
        for (int threads = 0; threads < 2; threads++) {
            test_pool = threads ? saved : NULL;
            for (size_t i = 0; i < sizeof dw_cases / sizeof dw_cases[0]; i++)
                for (int bias = 1; bias >= 0; bias--) {
                    conv_case c = dw_cases[i];
                    c.bias = bias != 0;
                    snprintf(label, sizeof label, "depthwise case %zu (simd %d, bias %d, pool %d)", i,
                             simd, bias, threads);
                    conv_label = label;
                    conv_check(&c);
                }
        }
        oq_nn_conv_set_simd(was);
    }
    conv_label = "Conv";
    test_pool = saved;
}
END_TEST

static void zero_input1(const oq_tensor *const *in) { memset(in[1]->data, 0, in[1]->nbytes); }

/* The run reads the packed copy made at prepare: zeroing W (or B) after
 * prepare changes nothing when the packed path is taken, and zeroes the
 * product when it is not (both are checked). */
START_TEST(packed_weights_are_used) {
    oq_tensor *x = rtens(DIMS(2, 3, 10, 10)), *w = rtens(DIMS(4, 3, 3, 3));
    oq_tensor *a = rtens(DIMS(5, 8)), *b = rtens(DIMS(8, 6));
    for (unsigned mask = 0; mask <= 2; mask += 2) {
        tnode n;
        oq_tensor out[1];
        oq_error err = {0};
        run_const_mask = mask;
        run_hook = zero_input1;
        tn_init(&n, "Conv");
        ck_assert_msg(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w}, 2, out, 1, &err) == OQ_OK, "%s",
                      err.msg);
        double sum = 0;
        for (size_t i = 0; i < out[0].count; i++)
            sum += fabs(((float *)out[0].data)[i]);
        ck_assert_msg(mask ? sum > 1.0 : sum == 0.0, "Conv const mask %u: sum %g", mask, sum);
        free_outs(out, 1);
        for (int op = 0; op < 2; op++) {
            float *bd = b->data;
            for (size_t i = 0; i < b->count; i++)
                bd[i] = frand();
            tn_init(&n, op ? "MatMul" : "Gemm");
            ck_assert_msg(run_op(op ? "MatMul" : "Gemm", 13, &n, (const oq_tensor *[]){a, b}, 2, out, 1,
                                 &err) == OQ_OK,
                          "%s", err.msg);
            sum = 0;
            for (size_t i = 0; i < out[0].count; i++)
                sum += fabs(((float *)out[0].data)[i]);
            ck_assert_msg(mask ? sum > 1.0 : sum == 0.0, "%s const mask %u: sum %g", op ? "MatMul" : "Gemm",
                          mask, sum);
            free_outs(out, 1);
        }
        float *wd = w->data;
        for (size_t i = 0; i < w->count; i++)
            wd[i] = frand();
    }
    run_hook = NULL;
    run_const_mask = 0;
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(a), oq_tensor_free(b);
}
END_TEST

START_TEST(conv_hand_values) {
    /* ONNX's basic_conv_with_padding example: 5x5 ramp, 3x3 ones, pads 1 */
    float xv[25], wv[9];
    for (int i = 0; i < 25; i++)
        xv[i] = (float)i;
    for (int i = 0; i < 9; i++)
        wv[i] = 1.0f;
    oq_tensor *x = ftens(xv, DIMS(1, 1, 5, 5)), *w = ftens(wv, DIMS(1, 1, 3, 3));
    static const int64_t ks[] = {3, 3}, pads[] = {1, 1, 1, 1};
    tnode n;
    tn_init(&n, "Conv");
    tn_ints(&n, "kernel_shape", ks, 2);
    tn_ints(&n, "pads", pads, 4);
    const oq_tensor *in[2] = {x, w};
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("Conv", 11, &n, in, 2, out, 1, &err) == OQ_OK, "%s", err.msg);
    static const float want[25] = {12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108,
                                   117, 81, 93, 144, 153, 162, 111, 72, 111, 117, 123, 84};
    for (int i = 0; i < 25; i++)
        ck_assert_float_eq(((float *)out[0].data)[i], want[i]);
    free_outs(out, 1);
    oq_tensor_free(x), oq_tensor_free(w);
}
END_TEST

START_TEST(conv_errors) {
    oq_tensor *x = rtens(DIMS(1, 4, 5, 5)), *w = rtens(DIMS(2, 3, 3, 3));
    oq_tensor *xi = tens(OQ_DTYPE_INT32, DIMS(1, 4, 5, 5));
    oq_tensor *w2 = rtens(DIMS(2, 2, 3, 3)), *b3 = rtens(DIMS(3));
    oq_tensor out[1];
    oq_error err = {0};
    tnode n;
    /* channel mismatch (W expects 3 input channels, X has 4, group 1) */
    tn_init(&n, "Conv");
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w}, 2, out, 1, &err),
                     OQ_EINVAL);
    ck_assert_msg(strstr(err.msg, "node 't' (Conv)"), "%s", err.msg);
    /* wrong dtype */
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){xi, w2}, 2, out, 1, &err),
                     OQ_EUNSUPPORTED);
    /* group that does not divide the channels */
    err = (oq_error){0};
    tn_init(&n, "Conv");
    tn_int(&n, "group", 3);
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    /* bias of the wrong length */
    err = (oq_error){0};
    tn_init(&n, "Conv");
    tn_int(&n, "group", 2);
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2, b3}, 3, out, 1, &err),
                     OQ_EINVAL);
    /* kernel_shape that disagrees with W; negative pads; zero stride;
     * unknown auto_pad; window larger than the padded input; overflow */
    static const int64_t k55[] = {5, 5}, negp[] = {-1, 0, 0, 0}, s0[] = {0, 1},
                         big[] = {INT64_MAX / 2, 1};
    tn_init(&n, "Conv");
    tn_int(&n, "group", 2);
    tn_ints(&n, "kernel_shape", k55, 2);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "Conv");
    tn_ints(&n, "pads", negp, 4);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "Conv");
    tn_ints(&n, "strides", s0, 2);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "Conv");
    tn_str(&n, "auto_pad", "SAME");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    oq_tensor *w9 = rtens(DIMS(2, 4, 9, 9));
    tn_init(&n, "Conv");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w9}, 2, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "Conv");
    tn_ints(&n, "dilations", big, 2);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, w9}, 2, out, 1, &err),
                     OQ_EINVAL);
    /* rank 2 X; missing W */
    oq_tensor *x2 = rtens(DIMS(4, 5));
    tn_init(&n, "Conv");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x2, w}, 2, out, 1, &err),
                     OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Conv", 22, &n, (const oq_tensor *[]){x, NULL}, 2, out, 1, &err),
                     OQ_EMODEL);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(xi), oq_tensor_free(w2);
    oq_tensor_free(b3), oq_tensor_free(w9), oq_tensor_free(x2);
}
END_TEST

/* ---- ConvTranspose ----------------------------------------------------------- */

typedef struct {
    int nsp;
    int64_t N, C, M, group;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], op[3];
    int64_t oshape[3]; /* [0] > 0: output_shape attribute */
    const char *auto_pad;
} convt_case;

static void convt_check(const convt_case *c) {
    int r = c->nsp + 2;
    int64_t Mg = c->M / c->group, Cg = c->C / c->group;
    int64_t xd[5] = {c->N, c->C}, wd[5] = {c->C, Mg};
    for (int i = 0; i < c->nsp; i++) {
        xd[2 + i] = c->in[i];
        wd[2 + i] = c->k[i];
    }
    oq_tensor *x = rtens(r, xd), *w = rtens(r, wd), *b = rtens(1, &c->M);
    tnode n;
    tn_init(&n, "ConvTranspose");
    tn_ints(&n, "strides", c->s, (size_t)c->nsp);
    tn_ints(&n, "dilations", c->d, (size_t)c->nsp);
    tn_ints(&n, "output_padding", c->op, (size_t)c->nsp);
    tn_int(&n, "group", c->group);
    int64_t pads[6];
    for (int i = 0; i < c->nsp; i++) {
        pads[i] = c->pb[i];
        pads[c->nsp + i] = c->pe[i];
    }
    if (c->auto_pad)
        tn_str(&n, "auto_pad", c->auto_pad);
    else
        tn_ints(&n, "pads", pads, 2 * (size_t)c->nsp);
    if (c->oshape[0] > 0)
        tn_ints(&n, "output_shape", c->oshape, (size_t)c->nsp);
    const oq_tensor *in[3] = {x, w, b};
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("ConvTranspose", 22, &n, in, 3, out, 1, &err) == OQ_OK, "%s", err.msg);
    int64_t od[3], pb[3];
    for (int i = 0; i < c->nsp; i++) {
        int64_t full = c->s[i] * (c->in[i] - 1) + c->op[i] + (c->k[i] - 1) * c->d[i] + 1;
        if (c->oshape[0] > 0 || c->auto_pad) {
            od[i] = c->oshape[0] > 0 ? c->oshape[i] : c->in[i] * c->s[i];
            int64_t total = full - od[i] > 0 ? full - od[i] : 0;
            pb[i] = c->auto_pad && strcmp(c->auto_pad, "SAME_UPPER") == 0 ? total / 2
                                                                         : total - total / 2;
        } else {
            od[i] = full - c->pb[i] - c->pe[i];
            pb[i] = c->pb[i];
        }
        ck_assert_int_eq(out[0].dims[2 + i], od[i]);
    }
    size_t P = prod(od, c->nsp), Pin = prod(c->in, c->nsp), K = prod(c->k, c->nsp);
    double *ref = calloc((size_t)(c->N * c->M) * P, sizeof *ref);
    const float *X = x->data, *W = w->data, *B = b->data;
    for (int64_t nn = 0; nn < c->N; nn++) {
        for (int64_t m = 0; m < c->M; m++)
            for (size_t p = 0; p < P; p++)
                ref[(size_t)(nn * c->M + m) * P + p] = B[m];
        for (int64_t ci = 0; ci < c->C; ci++)
            for (size_t ip = 0; ip < Pin; ip++)
                for (int64_t ml = 0; ml < Mg; ml++)
                    for (size_t kk = 0; kk < K; kk++) {
                        int64_t icd[3], kc[3], a = (int64_t)ip, kr = (int64_t)kk;
                        for (int i = c->nsp - 1; i >= 0; i--) {
                            icd[i] = a % c->in[i];
                            a /= c->in[i];
                            kc[i] = kr % c->k[i];
                            kr /= c->k[i];
                        }
                        size_t off = 0;
                        bool ok = true;
                        for (int i = 0; i < c->nsp; i++) {
                            int64_t o = icd[i] * c->s[i] - pb[i] + kc[i] * c->d[i];
                            if (o < 0 || o >= od[i])
                                ok = false;
                            off = off * (size_t)od[i] + (size_t)(o < 0 ? 0 : o);
                        }
                        if (!ok)
                            continue;
                        int64_t m = (ci / Cg) * Mg + ml;
                        ref[(size_t)(nn * c->M + m) * P + off] +=
                            (double)X[(size_t)(nn * c->C + ci) * Pin + ip] *
                            W[(size_t)(ci * Mg + ml) * K + kk];
                    }
    }
    expect_close(out[0].data, ref, (size_t)(c->N * c->M) * P, "ConvTranspose");
    free(ref);
    free_outs(out, 1);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(b);
}

static const convt_case convt_cases[] = {
    {2, 1, 1, 2, 1, {3, 3}, {3, 3}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, NULL},
    {2, 2, 4, 6, 2, {4, 5}, {3, 2}, {2, 3}, {1, 2}, {1, 0}, {0, 1}, {1, 1}, {0}, NULL},
    {2, 1, 3, 2, 1, {3, 3}, {3, 3}, {3, 2}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, {10, 8}, NULL},
    {2, 1, 3, 2, 1, {3, 3}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, "SAME_UPPER"},
    {2, 1, 3, 2, 1, {3, 4}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, "SAME_LOWER"},
    {1, 3, 2, 4, 2, {7}, {4}, {2}, {2}, {1}, {2}, {0}, {0}, NULL},
    {3, 1, 2, 2, 1, {2, 3, 2}, {2, 2, 3}, {2, 1, 2}, {1, 2, 1}, {0, 1, 0}, {1, 0, 0},
     {1, 0, 0}, {0}, NULL},
    /* many columns: several col2im tiles */
    {2, 1, 8, 64, 1, {40, 40}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, {0, 0}, {0}, NULL},
};

START_TEST(convtranspose_vs_reference) {
    for (size_t i = 0; i < sizeof convt_cases / sizeof convt_cases[0]; i++)
        convt_check(&convt_cases[i]);
}
END_TEST

START_TEST(convtranspose_errors) {
    oq_tensor *x = rtens(DIMS(1, 2, 3, 3)), *w = rtens(DIMS(3, 2, 3, 3));
    oq_tensor out[1];
    oq_error err = {0};
    tnode n;
    tn_init(&n, "ConvTranspose");
    ck_assert_int_eq(run_op("ConvTranspose", 11, &n, (const oq_tensor *[]){x, w}, 2, out, 1, &err),
                     OQ_EINVAL);
    static const int64_t bigpads[] = {5, 5, 5, 5}, os3[] = {1, 2, 3};
    oq_tensor *w2 = rtens(DIMS(2, 2, 3, 3));
    tn_init(&n, "ConvTranspose");
    tn_ints(&n, "pads", bigpads, 4);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("ConvTranspose", 11, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "ConvTranspose");
    tn_ints(&n, "output_shape", os3, 3);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("ConvTranspose", 11, &n, (const oq_tensor *[]){x, w2}, 2, out, 1, &err),
                     OQ_EINVAL);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(w2);
}
END_TEST

/* ---- Gemm ------------------------------------------------------------------------ */

static void gemm_check(int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha, float beta,
                       int crank, const int64_t *cdims) {
    int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
    oq_tensor *a = rtens(2, ad), *b = rtens(2, bd), *c = crank >= 0 ? rtens(crank, cdims) : NULL;
    tnode n;
    tn_init(&n, "Gemm");
    tn_int(&n, "transA", ta);
    tn_int(&n, "transB", tb);
    tn_float(&n, "alpha", alpha);
    tn_float(&n, "beta", beta);
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("Gemm", 13, &n, (const oq_tensor *[]){a, b, c}, 3, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(out[0].dims[0], M);
    ck_assert_int_eq(out[0].dims[1], N);
    double *ref = calloc((size_t)(M * N), sizeof *ref);
    const float *A = a->data, *B = b->data;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
            double cv = 0;
            if (c) {
                const float *C = c->data;
                int64_t c0 = crank == 2 ? cdims[0] : 1, c1 = crank >= 1 ? cdims[crank - 1] : 1;
                cv = C[(c0 == 1 ? 0 : i) * c1 + (c1 == 1 ? 0 : j)];
            }
            ref[i * N + j] = alpha * acc + beta * cv;
        }
    expect_close(out[0].data, ref, (size_t)(M * N), "Gemm");
    free(ref);
    free_outs(out, 1);
    oq_tensor_free(a), oq_tensor_free(b), oq_tensor_free(c);
}

static void gemm_cases(void) {
    gemm_check(3, 5, 4, 1, 1, 0.25f, 0.35f, 2, (const int64_t[]){1, 5});
    gemm_check(7, 4, 9, 0, 0, 1.0f, 1.0f, 2, (const int64_t[]){7, 4});
    gemm_check(7, 4, 9, 1, 0, 1.0f, 0.5f, 2, (const int64_t[]){7, 1});
    gemm_check(2, 6, 3, 0, 1, 2.0f, 1.0f, 1, (const int64_t[]){6});
    gemm_check(2, 6, 3, 0, 1, 2.0f, 1.0f, 0, NULL);
    gemm_check(64, 100, 130, 0, 1, 1.0f, 1.0f, 1, (const int64_t[]){100});
    gemm_check(1, 33, 70, 0, 1, 1.0f, 1.0f, -1, NULL);
    gemm_check(4, 3, 0, 0, 0, 1.0f, 1.0f, 1, (const int64_t[]){3}); /* K = 0: beta*C */
    /* row-vector C [M, 1] with beta 1, scalar C, fc-layer shapes */
    gemm_check(9, 20, 33, 0, 1, 1.0f, 1.0f, 2, (const int64_t[]){9, 1});
    gemm_check(5, 7, 6, 1, 0, 0.5f, 1.0f, 2, (const int64_t[]){1, 1});
    gemm_check(32, 128, 3136, 0, 1, 1.0f, 1.0f, 1, (const int64_t[]){128});
    gemm_check(32, 10, 128, 0, 1, 1.0f, 1.0f, 2, (const int64_t[]){1, 10});
}

START_TEST(gemm_vs_reference) { gemm_cases(); }
END_TEST

/* B constant (packed once, alpha folded in), then B and C constant. */
START_TEST(gemm_packed_vs_reference) {
    run_const_mask = 0x2;
    gemm_cases();
    run_const_mask = 0x6;
    gemm_cases();
    run_const_mask = 0;
}
END_TEST

START_TEST(gemm_opsets_types_errors) {
    oq_tensor *a = rtens(DIMS(2, 3)), *b = rtens(DIMS(3, 4)), *c = rtens(DIMS(2, 4));
    oq_tensor out[1];
    oq_error err = {0};
    tnode n;
    tn_init(&n, "Gemm");
    /* C optional only from 11 */
    ck_assert_int_eq(run_op("Gemm", 9, &n, (const oq_tensor *[]){a, b, NULL}, 3, out, 1, &err),
                     OQ_EMODEL);
    err = (oq_error){0};
    ck_assert_msg(run_op("Gemm", 11, &n, (const oq_tensor *[]){a, b}, 2, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    free_outs(out, 1);
    /* opset 6 with broadcast=0 needs C of M x N */
    oq_tensor *c1 = rtens(DIMS(4));
    tn_init(&n, "Gemm");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 6, &n, (const oq_tensor *[]){a, b, c1}, 3, out, 1, &err),
                     OQ_EINVAL);
    tn_int(&n, "broadcast", 1);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 6, &n, (const oq_tensor *[]){a, b, c1}, 3, out, 1, &err), OQ_OK);
    free_outs(out, 1);
    ck_assert_ptr_null(oq_registry_find("", "Gemm", 5, NULL));
    ck_assert_ptr_null(oq_registry_find("", "Gemm", 26, NULL));
    /* mismatches */
    tn_init(&n, "Gemm");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 13, &n, (const oq_tensor *[]){a, a, c}, 3, out, 1, &err),
                     OQ_EINVAL);
    oq_tensor *cbad = rtens(DIMS(3, 4));
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 13, &n, (const oq_tensor *[]){a, b, cbad}, 3, out, 1, &err),
                     OQ_EINVAL);
    oq_tensor *a3 = rtens(DIMS(1, 2, 3));
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 13, &n, (const oq_tensor *[]){a3, b, c}, 3, out, 1, &err),
                     OQ_EINVAL);
    /* int32: exact integer result */
    oq_tensor *ia = tens(OQ_DTYPE_INT32, DIMS(2, 2)), *ib = tens(OQ_DTYPE_INT32, DIMS(2, 2));
    oq_tensor *ic = tens(OQ_DTYPE_INT32, DIMS(1));
    int32_t *pa = ia->data, *pb = ib->data;
    pa[0] = 1, pa[1] = 2, pa[2] = 3, pa[3] = 4;
    pb[0] = 5, pb[1] = 6, pb[2] = 7, pb[3] = 8;
    ((int32_t *)ic->data)[0] = 100;
    tn_init(&n, "Gemm");
    err = (oq_error){0};
    ck_assert_msg(run_op("Gemm", 13, &n, (const oq_tensor *[]){ia, ib, ic}, 3, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    int32_t *py = out[0].data;
    ck_assert_int_eq(py[0], 119);
    ck_assert_int_eq(py[1], 122);
    ck_assert_int_eq(py[2], 143);
    ck_assert_int_eq(py[3], 150);
    free_outs(out, 1);
    /* mixed dtypes */
    err = (oq_error){0};
    ck_assert_int_eq(run_op("Gemm", 13, &n, (const oq_tensor *[]){a, ib, NULL}, 3, out, 1, &err),
                     OQ_EUNSUPPORTED);
    oq_tensor_free(a), oq_tensor_free(b), oq_tensor_free(c), oq_tensor_free(c1);
    oq_tensor_free(cbad), oq_tensor_free(a3), oq_tensor_free(ia), oq_tensor_free(ib);
    oq_tensor_free(ic);
}
END_TEST

/* ---- MatMul ---------------------------------------------------------------------- */

/* numpy matmul reference on float tensors; returns malloc'd doubles */
static double *matmul_ref(const oq_tensor *a, const oq_tensor *b, const oq_tensor *y) {
    int ra = a->rank, rb = b->rank;
    int64_t M = ra >= 2 ? a->dims[ra - 2] : 1, K = a->dims[ra - 1];
    int64_t N = rb >= 2 ? b->dims[rb - 1] : 1;
    int bra = ra >= 2 ? ra - 2 : 0, brb = rb >= 2 ? rb - 2 : 0;
    int br = bra > brb ? bra : brb;
    size_t batch = 1;
    int64_t bd[8];
    for (int i = 0; i < br; i++) {
        int ia = i - (br - bra), ib = i - (br - brb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        bd[i] = da == 1 ? db : da;
        batch *= (size_t)bd[i];
    }
    double *ref = calloc(y->count ? y->count : 1, sizeof *ref);
    const float *A = a->data, *B = b->data;
    for (size_t t = 0; t < batch; t++) {
        size_t oa = 0, ob = 0, rem = t, sa = 1, sb = 1;
        for (int i = br - 1; i >= 0; i--) {
            size_t c = rem % (size_t)bd[i];
            rem /= (size_t)bd[i];
            int ia = i - (br - bra), ib = i - (br - brb);
            int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
            oa += (da == 1 ? 0 : c) * sa;
            ob += (db == 1 ? 0 : c) * sb;
            sa *= (size_t)da;
            sb *= (size_t)db;
        }
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)A[oa * (size_t)(M * K) + (size_t)(i * K + k)] *
                           B[ob * (size_t)(K * N) + (size_t)(k * N + j)];
                ref[t * (size_t)(M * N) + (size_t)(i * N + j)] = acc;
            }
    }
    return ref;
}

static void matmul_check(int ra, const int64_t *ad, int rb, const int64_t *bd, int ry,
                         const int64_t *yd) {
    oq_tensor *a = rtens(ra, ad), *b = rtens(rb, bd);
    tnode n;
    tn_init(&n, "MatMul");
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("MatMul", 13, &n, (const oq_tensor *[]){a, b}, 2, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(out[0].rank, ry);
    for (int i = 0; i < ry; i++)
        ck_assert_int_eq(out[0].dims[i], yd[i]);
    double *ref = matmul_ref(a, b, &out[0]);
    expect_close(out[0].data, ref, out[0].count, "MatMul");
    free(ref);
    free_outs(out, 1);
    oq_tensor_free(a), oq_tensor_free(b);
}

static void matmul_cases(void) {
    matmul_check(DIMS(3), DIMS(3), 0, NULL);
    matmul_check(DIMS(4), DIMS(2, 4, 1), DIMS(2, 1));
    matmul_check(DIMS(1, 2, 4, 3), DIMS(3), DIMS(1, 2, 4));
    matmul_check(DIMS(3, 1, 3, 4), DIMS(1, 2, 4, 2), DIMS(3, 2, 3, 2));
    matmul_check(DIMS(2, 3, 4), DIMS(2, 4, 3), DIMS(2, 3, 3));
    /* folded: [batch*M, K] x [K, N] in one GEMM */
    matmul_check(DIMS(2, 17, 64), DIMS(64, 48), DIMS(2, 17, 48));
    matmul_check(DIMS(2, 3, 17, 64), DIMS(1, 1, 64, 48), DIMS(2, 3, 17, 48));
    /* many small batches over the pool; shared A */
    matmul_check(DIMS(2, 4, 17, 16), DIMS(2, 4, 16, 17), DIMS(2, 4, 17, 17));
    matmul_check(DIMS(17, 16), DIMS(6, 16, 40), DIMS(6, 17, 40));
    /* enough small batches to be split over the pool */
    matmul_check(DIMS(128, 17, 16), DIMS(128, 16, 17), DIMS(128, 17, 17));
    /* big single GEMM and a big batched one */
    matmul_check(DIMS(150, 300), DIMS(300, 200), DIMS(150, 200));
    matmul_check(DIMS(3, 70, 80), DIMS(3, 80, 90), DIMS(3, 70, 90));
    /* empty K and empty batch */
    matmul_check(DIMS(2, 3, 0), DIMS(2, 0, 4), DIMS(2, 3, 4));
    matmul_check(DIMS(0, 3, 2), DIMS(2, 4), DIMS(0, 3, 4));
    /* transformer Linear shapes: [B, T, C] x [C, 4C] */
    matmul_check(DIMS(2, 17, 96), DIMS(96, 384), DIMS(2, 17, 384));
    matmul_check(DIMS(5), DIMS(5, 3), DIMS(3));
}

START_TEST(matmul_vs_reference) { matmul_cases(); }
END_TEST

/* B constant: every case with a 2-D B takes the packed path. */
START_TEST(matmul_packed_vs_reference) {
    run_const_mask = 0x2;
    matmul_cases();
    run_const_mask = 0;
}
END_TEST

START_TEST(matmul_types_errors) {
    oq_tensor out[1];
    oq_error err = {0};
    tnode n;
    tn_init(&n, "MatMul");
    oq_tensor *a = tens(OQ_DTYPE_INT64, DIMS(2, 2)), *b = tens(OQ_DTYPE_INT64, DIMS(2));
    int64_t *pa = a->data, *pb = b->data;
    pa[0] = 1, pa[1] = 2, pa[2] = 3, pa[3] = 4;
    pb[0] = 10, pb[1] = 100;
    ck_assert_msg(run_op("MatMul", 13, &n, (const oq_tensor *[]){a, b}, 2, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(out[0].rank, 1);
    ck_assert_int_eq(((int64_t *)out[0].data)[0], 210);
    ck_assert_int_eq(((int64_t *)out[0].data)[1], 430);
    free_outs(out, 1);
    /* float16 through float */
    oq_tensor *h = tens(OQ_DTYPE_FLOAT16, DIMS(1, 2)), *h2 = tens(OQ_DTYPE_FLOAT16, DIMS(2, 1));
    uint16_t *ph = h->data, *ph2 = h2->data;
    ph[0] = oq_float_to_half(1.5f), ph[1] = oq_float_to_half(2.0f);
    ph2[0] = oq_float_to_half(4.0f), ph2[1] = oq_float_to_half(0.25f);
    err = (oq_error){0};
    ck_assert_msg(run_op("MatMul", 13, &n, (const oq_tensor *[]){h, h2}, 2, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    ck_assert_float_eq(oq_half_to_float(((uint16_t *)out[0].data)[0]), 6.5f);
    free_outs(out, 1);
    /* errors: inner dims, batch broadcast, rank 0, mixed types */
    oq_tensor *f1 = rtens(DIMS(2, 3)), *f2 = rtens(DIMS(4, 2)), *f3 = rtens(DIMS(2, 3, 4));
    oq_tensor *f4 = rtens(DIMS(3, 4, 2)), *s0 = rtens(0, NULL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("MatMul", 13, &n, (const oq_tensor *[]){f1, f2}, 2, out, 1, &err),
                     OQ_EINVAL);
    ck_assert_msg(strstr(err.msg, "node 't' (MatMul)"), "%s", err.msg);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("MatMul", 13, &n, (const oq_tensor *[]){f3, f4}, 2, out, 1, &err),
                     OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("MatMul", 13, &n, (const oq_tensor *[]){s0, f1}, 2, out, 1, &err),
                     OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("MatMul", 13, &n, (const oq_tensor *[]){f1, a}, 2, out, 1, &err),
                     OQ_EUNSUPPORTED);
    oq_tensor_free(a), oq_tensor_free(b), oq_tensor_free(h), oq_tensor_free(h2);
    oq_tensor_free(f1), oq_tensor_free(f2), oq_tensor_free(f3), oq_tensor_free(f4);
    oq_tensor_free(s0);
}
END_TEST

/* ---- Einsum ---------------------------------------------------------------------- */

static oq_tensor *einsum_run(const char *eq, const oq_tensor *const *in, int n_in, oq_status want) {
    tnode n;
    tn_init(&n, "Einsum");
    tn_str(&n, "equation", eq);
    static oq_tensor out[1];
    oq_error err = {0};
    oq_status s = run_op("Einsum", 12, &n, in, n_in, out, 1, &err);
    ck_assert_msg(s == want, "%s: %s", eq, err.msg);
    return s == OQ_OK ? &out[0] : NULL;
}

START_TEST(einsum_cases) {
    oq_tensor *a = rtens(DIMS(5, 2, 3)), *b = rtens(DIMS(5, 3, 4)), *m = rtens(DIMS(3, 4));
    oq_tensor *sq = rtens(DIMS(3, 5, 5)), *v = rtens(DIMS(5)), *w = rtens(DIMS(5));
    const float *A = a->data, *B = b->data, *Mx = m->data, *S = sq->data, *V = v->data,
                *W = w->data;
    /* batch matmul */
    oq_tensor *y = einsum_run("bij, bjk -> bik", (const oq_tensor *[]){a, b}, 2, OQ_OK);
    ck_assert_int_eq(y->rank, 3);
    for (int bb = 0; bb < 5; bb++)
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 4; k++) {
                double acc = 0;
                for (int j = 0; j < 3; j++)
                    acc += (double)A[bb * 6 + i * 3 + j] * B[bb * 12 + j * 4 + k];
                ck_assert_double_eq_tol(((float *)y->data)[bb * 8 + i * 4 + k], acc, 1e-5);
            }
    free_outs(y, 1);
    /* transpose, row sum, diagonal with ellipsis, inner product (implicit) */
    y = einsum_run("ij->ji", (const oq_tensor *[]){m}, 1, OQ_OK);
    ck_assert_int_eq(y->dims[0], 4);
    ck_assert_float_eq(((float *)y->data)[1 * 3 + 2], Mx[2 * 4 + 1]);
    free_outs(y, 1);
    y = einsum_run("ij->i", (const oq_tensor *[]){m}, 1, OQ_OK);
    ck_assert_double_eq_tol(((float *)y->data)[1], (double)Mx[4] + Mx[5] + Mx[6] + Mx[7], 1e-5);
    free_outs(y, 1);
    y = einsum_run("...ii ->...i", (const oq_tensor *[]){sq}, 1, OQ_OK);
    ck_assert_int_eq(y->rank, 2);
    ck_assert_float_eq(((float *)y->data)[2 * 5 + 3], S[2 * 25 + 3 * 5 + 3]);
    free_outs(y, 1);
    y = einsum_run("i,i", (const oq_tensor *[]){v, w}, 2, OQ_OK);
    ck_assert_int_eq(y->rank, 0);
    double dot = 0;
    for (int i = 0; i < 5; i++)
        dot += (double)V[i] * W[i];
    ck_assert_double_eq_tol(((float *)y->data)[0], dot, 1e-5);
    free_outs(y, 1);
    /* implicit output is alphabetical: "ji" alone transposes nothing back */
    y = einsum_run("ba", (const oq_tensor *[]){m}, 1, OQ_OK);
    ck_assert_int_eq(y->dims[0], 4);
    free_outs(y, 1);
    /* int64 */
    oq_tensor *ia = tens(OQ_DTYPE_INT64, DIMS(2, 2));
    int64_t *pi = ia->data;
    pi[0] = 1, pi[1] = 2, pi[2] = 3, pi[3] = 4;
    y = einsum_run("ii", (const oq_tensor *[]){ia}, 1, OQ_OK);
    ck_assert_int_eq(((int64_t *)y->data)[0], 5);
    free_outs(y, 1);
    /* errors */
    einsum_run("ij,jk->ik", (const oq_tensor *[]){m}, 1, OQ_EINVAL);
    einsum_run("ijk->i", (const oq_tensor *[]){m}, 1, OQ_EINVAL);
    einsum_run("i$->i", (const oq_tensor *[]){m}, 1, OQ_EINVAL);
    einsum_run("ij->ii", (const oq_tensor *[]){m}, 1, OQ_EINVAL);
    einsum_run("ij->k", (const oq_tensor *[]){m}, 1, OQ_EINVAL);
    einsum_run("ij,ij->ij", (const oq_tensor *[]){m, a}, 2, OQ_EINVAL);
    oq_tensor_free(a), oq_tensor_free(b), oq_tensor_free(m), oq_tensor_free(sq);
    oq_tensor_free(v), oq_tensor_free(w), oq_tensor_free(ia);
}
END_TEST

/* ---- pools ------------------------------------------------------------------------ */

typedef struct {
    int nsp;
    int64_t N, C;
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3];
    int ceil, count_pad, storage_order;
} pool_case;

static void pool_check(const pool_case *c, bool is_max, bool with_indices) {
    int r = c->nsp + 2;
    int64_t xd[5] = {c->N, c->C};
    for (int i = 0; i < c->nsp; i++)
        xd[2 + i] = c->in[i];
    oq_tensor *x = rtens(r, xd);
    tnode n;
    const char *op = is_max ? "MaxPool" : "AveragePool";
    tn_init(&n, op);
    tn_ints(&n, "kernel_shape", c->k, (size_t)c->nsp);
    tn_ints(&n, "strides", c->s, (size_t)c->nsp);
    tn_ints(&n, "dilations", c->d, (size_t)c->nsp);
    int64_t pads[6];
    for (int i = 0; i < c->nsp; i++) {
        pads[i] = c->pb[i];
        pads[c->nsp + i] = c->pe[i];
    }
    tn_ints(&n, "pads", pads, 2 * (size_t)c->nsp);
    tn_int(&n, "ceil_mode", c->ceil);
    if (is_max)
        tn_int(&n, "storage_order", c->storage_order);
    else
        tn_int(&n, "count_include_pad", c->count_pad);
    oq_tensor out[2];
    oq_error err = {0};
    int n_out = is_max && with_indices ? 2 : 1;
    ck_assert_msg(run_op(op, 22, &n, (const oq_tensor *[]){x}, 1, out, n_out, &err) == OQ_OK, "%s",
                  err.msg);
    int64_t od[3];
    for (int i = 0; i < c->nsp; i++) {
        int64_t dk = (c->k[i] - 1) * c->d[i] + 1, num = c->in[i] + c->pb[i] + c->pe[i] - dk;
        od[i] = num / c->s[i] + 1;
        if (c->ceil && num % c->s[i]) {
            od[i]++;
            if ((od[i] - 1) * c->s[i] >= c->in[i] + c->pb[i])
                od[i]--;
        }
        ck_assert_int_eq(out[0].dims[2 + i], od[i]);
    }
    size_t P = prod(od, c->nsp), Pin = prod(c->in, c->nsp), K = prod(c->k, c->nsp);
    const float *X = x->data;
    const float *Y = out[0].data;
    for (size_t q = 0; q < (size_t)(c->N * c->C); q++)
        for (size_t p = 0; p < P; p++) {
            int64_t oc[3], rem = (int64_t)p;
            for (int i = c->nsp - 1; i >= 0; i--) {
                oc[i] = rem % od[i];
                rem /= od[i];
            }
            double best = -INFINITY, sum = 0;
            int64_t best_at = -1, cnt = 0, cnt_pad = 0;
            for (size_t kk = 0; kk < K; kk++) {
                int64_t kc[3], kr = (int64_t)kk, idx[3];
                for (int i = c->nsp - 1; i >= 0; i--) {
                    kc[i] = kr % c->k[i];
                    kr /= c->k[i];
                }
                bool in_img = true, in_pad = true;
                for (int i = 0; i < c->nsp; i++) {
                    idx[i] = oc[i] * c->s[i] - c->pb[i] + kc[i] * c->d[i];
                    if (idx[i] < 0 || idx[i] >= c->in[i])
                        in_img = false;
                    if (idx[i] < -c->pb[i] || idx[i] >= c->in[i] + c->pe[i])
                        in_pad = false;
                }
                cnt_pad += in_pad;
                if (!in_img)
                    continue;
                size_t off = 0, offc = 0, mul = 1;
                for (int i = 0; i < c->nsp; i++)
                    off = off * (size_t)c->in[i] + (size_t)idx[i];
                for (int i = 0; i < c->nsp; i++) {
                    offc += (size_t)idx[i] * mul;
                    mul *= (size_t)c->in[i];
                }
                double v = X[q * Pin + off];
                cnt++;
                sum += v;
                if (v > best) {
                    best = v;
                    best_at = (int64_t)(q * Pin + (c->storage_order ? offc : off));
                }
            }
            if (is_max) {
                ck_assert_float_eq(Y[q * P + p], (float)best);
                if (with_indices)
                    ck_assert_int_eq(((int64_t *)out[1].data)[q * P + p], best_at);
            } else {
                double want = sum / (double)(c->count_pad ? cnt_pad : cnt);
                ck_assert_msg(fabs(Y[q * P + p] - want) < 1e-5, "avg %zu: %g vs %g", p,
                              Y[q * P + p], want);
            }
        }
    free_outs(out, n_out);
    oq_tensor_free(x);
}

static const pool_case pool_cases[] = {
    {2, 1, 2, {6, 7}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, 0, 0, 0},
    {2, 2, 3, {7, 7}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, 1, 0, 0},
    {2, 1, 1, {5, 5}, {3, 3}, {1, 1}, {1, 1}, {2, 1}, {2, 1}, 0, 1, 1},
    {2, 1, 2, {8, 9}, {3, 2}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, 1, 0},
    {2, 1, 1, {9, 9}, {2, 2}, {1, 1}, {2, 2}, {0, 0}, {0, 0}, 1, 0, 1},
    {1, 2, 2, {11}, {3}, {2}, {1}, {1}, {0}, 1, 1, 0},
    {3, 1, 1, {12, 11, 10}, {5, 5, 5}, {3, 3, 3}, {2, 2, 2}, {0, 0, 0}, {0, 0, 0}, 1, 1, 1},
    {3, 1, 2, {5, 6, 4}, {2, 3, 2}, {1, 2, 2}, {1, 1, 1}, {1, 0, 1}, {0, 2, 1}, 0, 0, 0},
    /* enough planes to be split over the pool */
    {2, 2, 32, {32, 32}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, 0, 1, 0},
    /* ResNet's 3x3/2 pad 1, and a 2x2/2 with ceil on odd sizes */
    {2, 1, 3, {12, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, 0, 0, 0},
    {2, 1, 2, {7, 9}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, 1, 1, 0},
    /* the MaxPool 2x2/2 fast path: CNN plane sizes, odd sizes in floor mode */
    {2, 3, 4, {14, 28}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, 0, 0, 0},
    {2, 2, 3, {7, 9}, {2, 2}, {2, 2}, {1, 1}, {0, 0}, {0, 0}, 0, 0, 0},
};

START_TEST(pools_vs_reference) {
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        pool_check(&pool_cases[i], true, true);  /* generic N-d kernel */
        pool_check(&pool_cases[i], true, false); /* 2-D kernel when no Indices */
        pool_check(&pool_cases[i], false, false);
    }
}
END_TEST

START_TEST(pool_types_errors) {
    /* uint8 MaxPool is exact; SAME_UPPER pads */
    oq_tensor *x = tens(OQ_DTYPE_UINT8, DIMS(1, 1, 3, 3));
    uint8_t *px = x->data;
    for (int i = 0; i < 9; i++)
        px[i] = (uint8_t)(250 - i * 10);
    static const int64_t k2[] = {2, 2};
    tnode n;
    tn_init(&n, "MaxPool");
    tn_ints(&n, "kernel_shape", k2, 2);
    tn_str(&n, "auto_pad", "SAME_UPPER");
    oq_tensor out[2];
    oq_error err = {0};
    ck_assert_msg(run_op("MaxPool", 12, &n, (const oq_tensor *[]){x}, 1, out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    ck_assert_int_eq(out[0].dims[2], 3);
    uint8_t *py = out[0].data;
    ck_assert_int_eq(py[0], 250);
    ck_assert_int_eq(py[8], 170);
    ck_assert_int_eq(py[4], 210);
    free_outs(out, 1);
    /* global pools */
    float gv[8] = {1, 2, 3, 4, -1, -2, -3, 10};
    oq_tensor *g = ftens(gv, DIMS(1, 2, 2, 2));
    tn_init(&n, "GlobalAveragePool");
    ck_assert(run_op("GlobalAveragePool", 22, &n, (const oq_tensor *[]){g}, 1, out, 1, &err) ==
              OQ_OK);
    ck_assert_int_eq(out[0].rank, 4);
    ck_assert_float_eq(((float *)out[0].data)[0], 2.5f);
    ck_assert_float_eq(((float *)out[0].data)[1], 1.0f);
    free_outs(out, 1);
    tn_init(&n, "GlobalMaxPool");
    ck_assert(run_op("GlobalMaxPool", 1, &n, (const oq_tensor *[]){g}, 1, out, 1, &err) == OQ_OK);
    ck_assert_float_eq(((float *)out[0].data)[1], 10.0f);
    free_outs(out, 1);
    /* errors: no kernel_shape, pads as large as the kernel, wrong rank, bad type */
    oq_tensor *f = rtens(DIMS(1, 1, 4, 4)), *f2 = rtens(DIMS(4, 4));
    oq_tensor *i32 = tens(OQ_DTYPE_INT32, DIMS(1, 1, 4, 4));
    tn_init(&n, "MaxPool");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("MaxPool", 12, &n, (const oq_tensor *[]){f}, 1, out, 1, &err), OQ_EMODEL);
    static const int64_t p2[] = {2, 2, 2, 2}, k3[] = {3, 3, 3};
    tn_init(&n, "AveragePool");
    tn_ints(&n, "kernel_shape", k2, 2);
    tn_ints(&n, "pads", p2, 4);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("AveragePool", 19, &n, (const oq_tensor *[]){f}, 1, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "AveragePool");
    tn_ints(&n, "kernel_shape", k3, 3);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("AveragePool", 19, &n, (const oq_tensor *[]){f}, 1, out, 1, &err),
                     OQ_EINVAL);
    tn_init(&n, "AveragePool");
    tn_ints(&n, "kernel_shape", k2, 2);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("AveragePool", 19, &n, (const oq_tensor *[]){f2}, 1, out, 1, &err),
                     OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("AveragePool", 19, &n, (const oq_tensor *[]){i32}, 1, out, 1, &err),
                     OQ_EUNSUPPORTED);
    tn_init(&n, "GlobalAveragePool");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("GlobalAveragePool", 1, &n, (const oq_tensor *[]){f2}, 1, out, 1, &err),
                     OQ_EINVAL);
    oq_tensor_free(x), oq_tensor_free(g), oq_tensor_free(f), oq_tensor_free(f2);
    oq_tensor_free(i32);
}
END_TEST

/* ---- norms ------------------------------------------------------------------------ */

START_TEST(batchnorm_cases) {
    float xv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float s[2] = {1, 2}, b[2] = {0, 1}, m[2] = {2.5f, 6}, v[2] = {1.25f, 4};
    oq_tensor *x = ftens(xv, DIMS(1, 2, 2, 2)), *ts = ftens(s, DIMS(2)), *tb = ftens(b, DIMS(2));
    oq_tensor *tm = ftens(m, DIMS(2)), *tv = ftens(v, DIMS(2));
    tnode n;
    tn_init(&n, "BatchNormalization");
    tn_float(&n, "epsilon", 0.0f);
    oq_tensor out[3];
    oq_error err = {0};
    ck_assert_msg(run_op("BatchNormalization", 15, &n, (const oq_tensor *[]){x, ts, tb, tm, tv}, 5,
                         out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    const float *y = out[0].data;
    ck_assert_double_eq_tol(y[0], (1 - 2.5) / sqrt(1.25), 1e-6);
    ck_assert_double_eq_tol(y[7], 2 * (8 - 6) / 2.0 + 1, 1e-6);
    free_outs(out, 1);
    /* training_mode=1 and pre-14 training outputs are refused */
    tn_int(&n, "training_mode", 1);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("BatchNormalization", 15, &n, (const oq_tensor *[]){x, ts, tb, tm, tv},
                            5, out, 3, &err),
                     OQ_EUNSUPPORTED);
    tn_init(&n, "BatchNormalization");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("BatchNormalization", 9, &n, (const oq_tensor *[]){x, ts, tb, tm, tv}, 5,
                            out, 3, &err),
                     OQ_EUNSUPPORTED);
    /* opset 7, spatial=0: per-element statistics */
    oq_tensor *s8 = ftens(NULL, DIMS(2, 2, 2)), *b8 = ftens(NULL, DIMS(2, 2, 2));
    oq_tensor *m8 = ftens(NULL, DIMS(2, 2, 2)), *v8 = ftens(NULL, DIMS(2, 2, 2));
    for (int i = 0; i < 8; i++) {
        ((float *)s8->data)[i] = 1;
        ((float *)m8->data)[i] = (float)i;
        ((float *)v8->data)[i] = 1;
    }
    tn_init(&n, "BatchNormalization");
    tn_int(&n, "spatial", 0);
    tn_float(&n, "epsilon", 0.0f);
    err = (oq_error){0};
    ck_assert_msg(run_op("BatchNormalization", 7, &n, (const oq_tensor *[]){x, s8, b8, m8, v8}, 5,
                         out, 1, &err) == OQ_OK,
                  "%s", err.msg);
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(((float *)out[0].data)[i], 1.0f);
    free_outs(out, 1);
    /* wrong parameter length; missing input */
    tn_init(&n, "BatchNormalization");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("BatchNormalization", 15, &n, (const oq_tensor *[]){x, s8, tb, tm, tv},
                            5, out, 1, &err),
                     OQ_EINVAL);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("BatchNormalization", 15, &n, (const oq_tensor *[]){x, ts, tb, tm, NULL},
                            5, out, 1, &err),
                     OQ_EMODEL);
    oq_tensor_free(x), oq_tensor_free(ts), oq_tensor_free(tb), oq_tensor_free(tm);
    oq_tensor_free(tv), oq_tensor_free(s8), oq_tensor_free(b8), oq_tensor_free(m8);
    oq_tensor_free(v8);
}
END_TEST

START_TEST(instancenorm_vs_reference) {
    oq_tensor *x = rtens(DIMS(2, 3, 4, 5)), *s = rtens(DIMS(3)), *b = rtens(DIMS(3));
    tnode n;
    tn_init(&n, "InstanceNormalization");
    tn_float(&n, "epsilon", 0.01f);
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_msg(run_op("InstanceNormalization", 22, &n, (const oq_tensor *[]){x, s, b}, 3, out, 1,
                         &err) == OQ_OK,
                  "%s", err.msg);
    const float *X = x->data, *S = s->data, *B = b->data;
    double ref[120];
    for (int q = 0; q < 6; q++) {
        double m = 0, var = 0;
        for (int i = 0; i < 20; i++)
            m += X[q * 20 + i];
        m /= 20;
        for (int i = 0; i < 20; i++)
            var += (X[q * 20 + i] - m) * (X[q * 20 + i] - m);
        var /= 20;
        for (int i = 0; i < 20; i++)
            ref[q * 20 + i] = (X[q * 20 + i] - m) / sqrt(var + 0.01) * S[q % 3] + B[q % 3];
    }
    expect_close(out[0].data, ref, 120, "InstanceNormalization");
    free_outs(out, 1);
    oq_tensor *b2 = rtens(DIMS(2));
    err = (oq_error){0};
    ck_assert_int_eq(run_op("InstanceNormalization", 22, &n, (const oq_tensor *[]){x, s, b2}, 3, out,
                            1, &err),
                     OQ_EINVAL);
    oq_tensor_free(x), oq_tensor_free(s), oq_tensor_free(b), oq_tensor_free(b2);
}
END_TEST

static void layernorm_check(int64_t axis, int srank, const int64_t *sdims, bool with_b) {
    oq_tensor *x = rtens(DIMS(2, 3, 4, 5)), *s = rtens(srank, sdims), *b = rtens(srank, sdims);
    tnode n;
    tn_init(&n, "LayerNormalization");
    tn_int(&n, "axis", axis);
    tn_float(&n, "epsilon", 0.1f);
    oq_tensor out[3];
    oq_error err = {0};
    ck_assert_msg(run_op("LayerNormalization", 17, &n, (const oq_tensor *[]){x, s, with_b ? b : NULL},
                         3, out, 3, &err) == OQ_OK,
                  "%s", err.msg);
    int a = (int)(axis < 0 ? axis + 4 : axis);
    size_t rows = prod(x->dims, a), D = 120 / rows;
    const float *X = x->data, *S = s->data, *B = b->data;
    double ref[120], mref[120], iref[120];
    for (size_t r = 0; r < rows; r++) {
        double m = 0, var = 0;
        for (size_t i = 0; i < D; i++)
            m += X[r * D + i];
        m /= (double)D;
        for (size_t i = 0; i < D; i++)
            var += (X[r * D + i] - m) * (X[r * D + i] - m);
        var /= (double)D;
        double inv = 1 / sqrt(var + 0.1);
        mref[r] = m;
        iref[r] = inv;
        size_t sc = s->count;
        for (size_t i = 0; i < D; i++)
            ref[r * D + i] = (X[r * D + i] - m) * inv * S[i % sc] + (with_b ? B[i % sc] : 0);
    }
    expect_close(out[0].data, ref, 120, "LayerNormalization");
    expect_close(out[1].data, mref, rows, "LayerNormalization Mean");
    expect_close(out[2].data, iref, rows, "LayerNormalization InvStdDev");
    ck_assert_int_eq(out[1].rank, 4);
    ck_assert_int_eq(out[1].dims[3], 1);
    free_outs(out, 3);
    oq_tensor_free(x), oq_tensor_free(s), oq_tensor_free(b);
}

START_TEST(layernorm_vs_reference) {
    layernorm_check(-1, DIMS(5), true);
    layernorm_check(1, DIMS(3, 4, 5), true);
    layernorm_check(0, DIMS(2, 3, 4, 5), false);
    layernorm_check(-2, DIMS(4, 5), true);
    layernorm_check(2, DIMS(1, 5), true); /* Scale broadcasts over axis 2 */
    oq_tensor *x = rtens(DIMS(2, 3)), *s = rtens(DIMS(4));
    tnode n;
    tn_init(&n, "LayerNormalization");
    oq_tensor out[1];
    oq_error err = {0};
    ck_assert_int_eq(run_op("LayerNormalization", 17, &n, (const oq_tensor *[]){x, s}, 2, out, 1,
                            &err),
                     OQ_EINVAL);
    tn_int(&n, "axis", 2);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("LayerNormalization", 17, &n, (const oq_tensor *[]){x, s}, 2, out, 1,
                            &err),
                     OQ_EINVAL);
    ck_assert_ptr_null(oq_registry_find("", "LayerNormalization", 16, NULL));
    oq_tensor_free(x), oq_tensor_free(s);
}
END_TEST

/* ---- LSTM --------------------------------------------------------------------------- */

static double sigm(double x) { return 1 / (1 + exp(-x)); }

typedef struct {
    int64_t T, B, I, H;
    int dirs;          /* 1 or 2 */
    bool reverse;      /* with dirs == 1 */
    bool bias, peep, init, lens, layout;
    float clip;
} lstm_case;

static void lstm_check(const lstm_case *c) {
    int64_t T = c->T, Bn = c->B, I = c->I, H = c->H, D = c->dirs;
    oq_tensor *x = c->layout ? rtens(DIMS(Bn, T, I)) : rtens(DIMS(T, Bn, I));
    oq_tensor *w = rtens(DIMS(D, 4 * H, I)), *r = rtens(DIMS(D, 4 * H, H));
    oq_tensor *b = rtens(DIMS(D, 8 * H)), *p = rtens(DIMS(D, 3 * H));
    oq_tensor *h0 = c->layout ? rtens(DIMS(Bn, D, H)) : rtens(DIMS(D, Bn, H));
    oq_tensor *c0 = c->layout ? rtens(DIMS(Bn, D, H)) : rtens(DIMS(D, Bn, H));
    oq_tensor *sl = tens(OQ_DTYPE_INT32, DIMS(Bn));
    for (int64_t bb = 0; bb < Bn; bb++)
        ((int32_t *)sl->data)[bb] = c->lens ? (int32_t)((T - bb) > 0 ? T - bb : 0) : (int32_t)T;
    tnode n;
    tn_init(&n, "LSTM");
    tn_int(&n, "hidden_size", H);
    tn_str(&n, "direction", D == 2 ? "bidirectional" : c->reverse ? "reverse" : "forward");
    if (c->layout)
        tn_int(&n, "layout", 1);
    if (c->clip > 0)
        tn_float(&n, "clip", c->clip);
    const oq_tensor *in[8] = {x, w, r, c->bias ? b : NULL, c->lens ? sl : NULL,
                              c->init ? h0 : NULL, c->init ? c0 : NULL, c->peep ? p : NULL};
    oq_tensor out[3];
    oq_error err = {0};
    ck_assert_msg(run_op("LSTM", 14, &n, in, 8, out, 3, &err) == OQ_OK, "%s", err.msg);
    const float *X = x->data, *Wt = w->data, *R = r->data, *Bv = b->data, *P = p->data;
    const float *Y = out[0].data, *Yh = out[1].data, *Yc = out[2].data;
    for (int64_t d = 0; d < D; d++) {
        bool rev = D == 2 ? d == 1 : c->reverse;
        for (int64_t bb = 0; bb < Bn; bb++) {
            double h[16], cc[16], hn[16];
            for (int64_t k = 0; k < H; k++) {
                size_t si = (size_t)(c->layout ? (bb * D + d) * H + k : (d * Bn + bb) * H + k);
                h[k] = c->init ? ((float *)h0->data)[si] : 0;
                cc[k] = c->init ? ((float *)c0->data)[si] : 0;
            }
            int64_t len = ((int32_t *)sl->data)[bb];
            if (!c->lens)
                len = T;
            for (int64_t step = 0; step < T; step++) {
                int64_t t = rev ? len - 1 - step : step;
                if (step >= len) {
                    int64_t tz = step; /* unused rows stay zero */
                    size_t yi = (size_t)(c->layout ? ((bb * T + tz) * D + d) * H
                                                   : ((tz * D + d) * Bn + bb) * H);
                    for (int64_t k = 0; k < H; k++)
                        ck_assert_float_eq(Y[yi + (size_t)k], 0.0f);
                    continue;
                }
                const float *xt = X + (c->layout ? (bb * T + t) * I : (t * Bn + bb) * I);
                for (int64_t k = 0; k < H; k++) {
                    double g[4];
                    for (int gi = 0; gi < 4; gi++) {
                        int64_t row = d * 4 * H + gi * H + k;
                        double acc = 0;
                        for (int64_t ii = 0; ii < I; ii++)
                            acc += (double)xt[ii] * Wt[row * I + ii];
                        for (int64_t hh = 0; hh < H; hh++)
                            acc += h[hh] * R[row * H + hh];
                        if (c->bias)
                            acc += Bv[d * 8 * H + gi * H + k] + Bv[d * 8 * H + 4 * H + gi * H + k];
                        g[gi] = acc;
                    }
                    double cl = c->clip > 0 ? c->clip : 1e30;
#define CLIP(v) ((v) < -cl ? -cl : (v) > cl ? cl : (v))
                    const float *pd = P + d * 3 * H;
                    double it = sigm(CLIP(g[0] + (c->peep ? pd[k] * cc[k] : 0)));
                    double ft = sigm(CLIP(g[2] + (c->peep ? pd[2 * H + k] * cc[k] : 0)));
                    double ct = tanh(CLIP(g[3]));
                    double cn = ft * cc[k] + it * ct;
                    double ot = sigm(CLIP(g[1] + (c->peep ? pd[H + k] * cn : 0)));
#undef CLIP
                    hn[k] = ot * tanh(cn);
                    cc[k] = cn; /* unit k only reads its own c */
                }
                for (int64_t k = 0; k < H; k++)
                    h[k] = hn[k];
                size_t yi = (size_t)(c->layout ? ((bb * T + t) * D + d) * H
                                               : ((t * D + d) * Bn + bb) * H);
                for (int64_t k = 0; k < H; k++)
                    ck_assert_msg(fabs(Y[yi + (size_t)k] - h[k]) < 1e-5, "Y t=%lld: %g vs %g",
                                  (long long)t, Y[yi + (size_t)k], h[k]);
            }
            size_t si = (size_t)(c->layout ? (bb * D + d) * H : (d * Bn + bb) * H);
            for (int64_t k = 0; k < H; k++) {
                ck_assert(fabs(Yh[si + (size_t)k] - h[k]) < 1e-5);
                ck_assert(fabs(Yc[si + (size_t)k] - cc[k]) < 1e-5);
            }
        }
    }
    free_outs(out, 3);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(r), oq_tensor_free(b);
    oq_tensor_free(p), oq_tensor_free(h0), oq_tensor_free(c0), oq_tensor_free(sl);
}

START_TEST(lstm_vs_reference) {
    static const lstm_case cases[] = {
        {3, 2, 4, 5, 1, false, false, false, false, false, false, 0},
        {4, 3, 2, 3, 1, true, true, true, true, false, false, 0},
        {4, 3, 3, 4, 2, false, true, true, true, true, false, 0},
        {5, 2, 3, 2, 2, false, true, false, false, true, true, 0.5f},
        {3, 1, 2, 7, 1, false, false, false, false, false, true, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        lstm_check(&cases[i]);
}
END_TEST

START_TEST(lstm_errors) {
    oq_tensor *x = rtens(DIMS(3, 2, 4)), *w = rtens(DIMS(1, 20, 4)), *r = rtens(DIMS(1, 20, 5));
    oq_tensor *sl = tens(OQ_DTYPE_INT32, DIMS(2));
    ((int32_t *)sl->data)[0] = 4; /* longer than the sequence */
    tnode n;
    tn_init(&n, "LSTM");
    tn_int(&n, "hidden_size", 5);
    oq_tensor out[2];
    oq_error err = {0};
    ck_assert_int_eq(run_op("LSTM", 14, &n, (const oq_tensor *[]){x, w, r, NULL, sl}, 5, out, 2, &err),
                     OQ_EINVAL);
    tn_init(&n, "LSTM");
    tn_int(&n, "hidden_size", 4);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("LSTM", 14, &n, (const oq_tensor *[]){x, w, r}, 3, out, 2, &err),
                     OQ_EINVAL);
    tn_init(&n, "LSTM");
    tn_str(&n, "direction", "sideways");
    err = (oq_error){0};
    ck_assert_int_eq(run_op("LSTM", 14, &n, (const oq_tensor *[]){x, w, r}, 3, out, 2, &err),
                     OQ_EINVAL);
    static const char *acts[] = {"Sigmoid", "Tanh", "Bogus"};
    tn_init(&n, "LSTM");
    tn_strs(&n, "activations", acts, 3);
    err = (oq_error){0};
    ck_assert_int_eq(run_op("LSTM", 14, &n, (const oq_tensor *[]){x, w, r}, 3, out, 2, &err),
                     OQ_EUNSUPPORTED);
    oq_tensor_free(x), oq_tensor_free(w), oq_tensor_free(r), oq_tensor_free(sl);
}
END_TEST

/* The same kernels on the caller's thread only (NULL pool) and on two threads. */
static void with_pool(void) {
    oq_error err = {0};
    ck_assert(oq_pool_new(2, &test_pool, &err) == OQ_OK);
}
static void without_pool(void) {
    oq_pool_free(test_pool);
    test_pool = NULL;
}

START_TEST(single_thread_paths) {
    oq_pool *saved = test_pool;
    test_pool = NULL;
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        conv_check(&conv_cases[i]);
    run_const_mask = 0x6;
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        conv_check(&conv_cases[i]);
    run_const_mask = 0;
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++)
        pool_check(&pool_cases[i], false, false);
    matmul_check(DIMS(2, 4, 17, 16), DIMS(2, 4, 16, 17), DIMS(2, 4, 17, 17));
    test_pool = saved;
}
END_TEST

int main(void) {
    Suite *s = suite_create("ops_nn");
    TCase *tc = tcase_create("ops_nn");
    tcase_add_checked_fixture(tc, with_pool, without_pool);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, conv_hand_values);
    tcase_add_test(tc, conv_vs_reference);
    tcase_add_test(tc, conv_packed_vs_reference);
    tcase_add_test(tc, depthwise_vs_reference);
    tcase_add_test(tc, packed_weights_are_used);
    tcase_add_test(tc, conv_errors);
    tcase_add_test(tc, convtranspose_vs_reference);
    tcase_add_test(tc, convtranspose_errors);
    tcase_add_test(tc, gemm_vs_reference);
    tcase_add_test(tc, gemm_packed_vs_reference);
    tcase_add_test(tc, gemm_opsets_types_errors);
    tcase_add_test(tc, matmul_vs_reference);
    tcase_add_test(tc, matmul_packed_vs_reference);
    tcase_add_test(tc, matmul_types_errors);
    tcase_add_test(tc, einsum_cases);
    tcase_add_test(tc, pools_vs_reference);
    tcase_add_test(tc, pool_types_errors);
    tcase_add_test(tc, batchnorm_cases);
    tcase_add_test(tc, instancenorm_vs_reference);
    tcase_add_test(tc, layernorm_vs_reference);
    tcase_add_test(tc, lstm_vs_reference);
    tcase_add_test(tc, lstm_errors);
    tcase_add_test(tc, single_thread_paths);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
