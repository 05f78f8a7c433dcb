/* nn_gemm.c: the matrix-product ops: Gemm (6..13), MatMul (1..13, numpy
 * batching), Einsum (12) and LSTM (7..22). Float goes through oq_sgemm, with
 * a constant B (weights) packed once at prepare for oq_sgemm_pb_run; double
 * to OpenBLAS, float16/bfloat16 through float copies, integer types through
 * plain loops. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blas.h"
#include "checked.h"
#include "nn.h"
#include "sgemm.h"

/* OpenBLAS runs a GEMM of at most this many multiply-adds on the calling
 * thread; batches of such GEMMs are spread over the pool instead. */
#define SMALL_GEMM_MNK 262144.0
/* Below this a plain loop beats the BLAS call overhead. */
#define TINY_GEMM_MNK 256.0

static bool is_int_dtype(oq_dtype dt) {
    return dt == OQ_DTYPE_INT32 || dt == OQ_DTYPE_INT64 || dt == OQ_DTYPE_UINT32 ||
           dt == OQ_DTYPE_UINT64;
}

static bool mm_dtype_ok(oq_dtype dt) {
    return dt == OQ_DTYPE_FLOAT || dt == OQ_DTYPE_DOUBLE || dt == OQ_DTYPE_FLOAT16 ||
           dt == OQ_DTYPE_BFLOAT16 || is_int_dtype(dt);
}

/* Stores v (wrapping like the C conversion of the low bits) into t[i]. */
static void store_int(oq_tensor *t, size_t i, uint64_t v) {
    switch (t->dtype) {
    case OQ_DTYPE_INT32: ((int32_t *)t->data)[i] = (int32_t)(uint32_t)v; break;
    case OQ_DTYPE_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
    case OQ_DTYPE_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    case OQ_DTYPE_UINT64: ((uint64_t *)t->data)[i] = v; break;
    default: break;
    }
}

static bool blas_int_ok(int64_t a, int64_t b, int64_t c) {
    return a <= INT_MAX && b <= INT_MAX && c <= INT_MAX;
}

/* ===================================================================== Gemm */

typedef struct {
    int64_t trans_a, trans_b, broadcast;
    float alpha, beta;
    /* float B constant: alpha * op(B) packed once (the packed run has no
     * alpha), with the data it was made from */
    oq_sgemm_pb *pb;
    const void *pb_src;
} gemm_state;

/* Packs a constant float B [rows, cols] (op(B) = B^T when trans) scaled by
 * alpha; *pb stays NULL for other inputs. */
static oq_status pack_const_b(const oq_node_ctx *ctx, bool trans, float alpha, oq_sgemm_pb **pb,
                              const void **src, oq_error *err) {
    const oq_tensor *b = ctx->n_inputs > 1 && ctx->const_inputs ? ctx->const_inputs[1] : NULL;
    if (!b || b->dtype != OQ_DTYPE_FLOAT || b->rank != 2 || b->count == 0 || !b->data ||
        b->dims[0] > INT_MAX || b->dims[1] > INT_MAX)
        return OQ_OK;
    int K = (int)(trans ? b->dims[1] : b->dims[0]), N = (int)(trans ? b->dims[0] : b->dims[1]);
    const float *data = b->data;
    float *scaled = NULL;
    if (alpha != 1.0f) {
        if (!(scaled = oq_nn_alloc_floats(b->count)))
            return oq_err(err, OQ_ENOMEM, "%s: out of memory packing B", ctx->label);
        for (size_t i = 0; i < b->count; i++)
            scaled[i] = alpha * data[i];
        data = scaled;
    }
    oq_status s = oq_sgemm_pack_b(trans, K, N, data, (int)b->dims[1], pb, err);
    free(scaled);
    if (s != OQ_OK) {
        oq_err_prefix(err, "%s: packing B: ", ctx->label);
        return s;
    }
    *src = b->data;
    return OQ_OK;
}

oq_status oq_nn_gemm_prepare(oq_node_ctx *ctx, oq_error *err) {
    gemm_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s;
    if ((s = OQ_ATTR_INT(ctx, "transA", 0, &st->trans_a, err)) ||
        (s = OQ_ATTR_INT(ctx, "transB", 0, &st->trans_b, err)) ||
        (s = oq_node_attr_float(ctx->node, "alpha", 1.0f, &st->alpha, err)) ||
        (s = oq_node_attr_float(ctx->node, "beta", 1.0f, &st->beta, err)))
        return s;
    /* Gemm-6 still has `broadcast` (0: C must already be M x N); 7 dropped it. */
    st->broadcast = 1;
    if (ctx->opset < 7 && (s = OQ_ATTR_INT(ctx, "broadcast", 0, &st->broadcast, err)))
        return s;
    return pack_const_b(ctx, st->trans_b != 0, st->alpha, &st->pb, &st->pb_src, err);
}

void oq_nn_gemm_release(void *state) {
    gemm_state *st = state;
    if (st)
        oq_sgemm_pb_free(st->pb);
    free(st);
}

typedef struct {
    int64_t M, N, K;
    int64_t cs0, cs1; /* C strides when broadcast to M x N */
} gemm_plan;

static oq_status gemm_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, gemm_plan *p,
                              oq_error *err) {
    const gemm_state *st = ctx->state;
    const oq_tensor *a = ctx->n_inputs > 0 ? in[0] : NULL, *b = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *c = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    if (!a || !b)
        return oq_err(err, OQ_EMODEL, "%s: A and B are required", ctx->label);
    /* Gemm-11 made C optional. */
    if (!c && ctx->opset < 11)
        return oq_err(err, OQ_EMODEL, "%s: C is required before opset 11", ctx->label);
    if (!mm_dtype_ok(a->dtype) || b->dtype != a->dtype || (c && c->dtype != a->dtype))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: unsupported or mixed dtypes (A %s, B %s)",
                      ctx->label, oq_dtype_name(a->dtype), oq_dtype_name(b->dtype));
    if (a->rank != 2 || b->rank != 2)
        return oq_err(err, OQ_EINVAL, "%s: A and B must be 2-D (ranks %d, %d)", ctx->label,
                      a->rank, b->rank);
    p->M = st->trans_a ? a->dims[1] : a->dims[0];
    p->K = st->trans_a ? a->dims[0] : a->dims[1];
    int64_t kb = st->trans_b ? b->dims[1] : b->dims[0];
    p->N = st->trans_b ? b->dims[0] : b->dims[1];
    if (kb != p->K)
        return oq_err(err, OQ_EINVAL, "%s: inner dims differ (%lld vs %lld)", ctx->label,
                      (long long)p->K, (long long)kb);
    if (!blas_int_ok(p->M, p->N, p->K) || a->dims[1] > INT_MAX || b->dims[1] > INT_MAX)
        return oq_err(err, OQ_ELIMIT, "%s: dimensions exceed the BLAS int range", ctx->label);
    p->cs0 = p->cs1 = 0;
    if (c) {
        /* C broadcasts unidirectionally to M x N (Gemm-7+). */
        int64_t c0 = c->rank == 2 ? c->dims[0] : 1;
        int64_t c1 = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
        if (c->rank > 2 || (c0 != 1 && c0 != p->M) || (c1 != 1 && c1 != p->N))
            return oq_err(err, OQ_EINVAL, "%s: C does not broadcast to [%lld, %lld]", ctx->label,
                          (long long)p->M, (long long)p->N);
        if (!st->broadcast && (c->rank != 2 || c0 != p->M || c1 != p->N))
            return oq_err(err, OQ_EINVAL, "%s: broadcast=0 needs C of shape [%lld, %lld]",
                          ctx->label, (long long)p->M, (long long)p->N);
        p->cs1 = c1 == 1 ? 0 : 1;
        p->cs0 = c0 == 1 ? 0 : c1;
    }
    return OQ_OK;
}

oq_status oq_nn_gemm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    gemm_plan p;
    oq_status s = gemm_resolve(ctx, in, &p, err);
    if (s != OQ_OK)
        return s;
    int64_t dims[2] = {p.M, p.N};
    return oq_out_shape(&out[0], in[0]->dtype, 2, dims, err);
}

/* Y = alpha*op(A)op(B) + beta*C in float (A, B, C, Y as float arrays). */
static void gemm_float(oq_pool *pool, const gemm_state *st, const gemm_plan *p, const float *a, int64_t lda,
                       const float *b, int64_t ldb, const float *c, float *y) {
    float beta = 0.0f;
    if (c && st->beta != 0.0f) {
        for (int64_t i = 0; i < p->M; i++) {
            const float *cr = c + i * p->cs0;
            float *yr = y + i * p->N;
            for (int64_t j = 0; j < p->N; j++)
                yr[j] = st->beta * cr[j * p->cs1];
        }
        beta = 1.0f;
    } else {
        memset(y, 0, (size_t)(p->M * p->N) * sizeof *y);
    }
    if (p->K == 0 || p->M == 0 || p->N == 0)
        return;
    oq_sgemm(pool, st->trans_a, st->trans_b, (int)p->M, (int)p->N, (int)p->K, st->alpha, a,
             (int)(lda > 0 ? lda : 1), b, (int)(ldb > 0 ? ldb : 1), beta, y, (int)(p->N > 0 ? p->N : 1));
}

/* gemm_float with B packed at prepare: a vector C (per column, or per row)
 * with beta 1 is the GEMM's bias epilogue; other C shapes are written first
 * and accumulated onto (beta = 1). */
static void gemm_float_packed(oq_pool *pool, const gemm_state *st, const gemm_plan *p, const float *a,
                              int64_t lda, const float *c, float *y) {
    if (p->M == 0 || p->N == 0)
        return;
    oq_sgemm_epilogue ep = {NULL, NULL, NULL, NULL};
    float beta = 0.0f;
    if (c && st->beta != 0.0f) {
        if (st->beta == 1.0f && p->cs0 == 0 && p->cs1 == 1) {
            ep.col_bias = c;
        } else if (st->beta == 1.0f && p->cs0 == 1 && p->cs1 == 0) {
            ep.row_bias = c;
        } else {
            for (int64_t i = 0; i < p->M; i++) {
                const float *cr = c + i * p->cs0;
                float *yr = y + i * p->N;
                for (int64_t j = 0; j < p->N; j++)
                    yr[j] = st->beta * cr[j * p->cs1];
            }
            beta = 1.0f;
        }
    }
    oq_sgemm_pb_run(pool, st->trans_a != 0, (int)p->M, a, (int)(lda > 0 ? lda : 1), st->pb, beta, y,
                    (int)p->N, &ep);
}

static void gemm_double(const gemm_state *st, const gemm_plan *p, const double *a, int64_t lda,
                        const double *b, int64_t ldb, const double *c, double *y) {
    double beta = 0.0;
    if (c && st->beta != 0.0f) {
        for (int64_t i = 0; i < p->M; i++)
            for (int64_t j = 0; j < p->N; j++)
                y[i * p->N + j] = (double)st->beta * c[i * p->cs0 + j * p->cs1];
        beta = 1.0;
    } else {
        memset(y, 0, (size_t)(p->M * p->N) * sizeof *y);
    }
    if (p->K == 0 || p->M == 0 || p->N == 0)
        return;
    cblas_dgemm(CblasRowMajor, st->trans_a ? CblasTrans : CblasNoTrans,
                st->trans_b ? CblasTrans : CblasNoTrans, (int)p->M, (int)p->N, (int)p->K,
                (double)st->alpha, a, (int)(lda > 0 ? lda : 1), b, (int)(ldb > 0 ? ldb : 1), beta,
                y, (int)(p->N > 0 ? p->N : 1));
}

static void gemm_int(const gemm_state *st, const gemm_plan *p, const oq_tensor *a,
                     const oq_tensor *b, const oq_tensor *c, oq_tensor *y) {
    int64_t lda = a->dims[1], ldb = b->dims[1];
    bool plain = st->alpha == 1.0f && st->beta == 1.0f;
    for (int64_t i = 0; i < p->M; i++) {
        for (int64_t j = 0; j < p->N; j++) {
            uint64_t acc = 0;
            for (int64_t k = 0; k < p->K; k++) {
                size_t ia = (size_t)(st->trans_a ? k * lda + i : i * lda + k);
                size_t ib = (size_t)(st->trans_b ? j * ldb + k : k * ldb + j);
                acc += (uint64_t)oq_tensor_get_i64(a, ia) * (uint64_t)oq_tensor_get_i64(b, ib);
            }
            uint64_t cv = c ? (uint64_t)oq_tensor_get_i64(c, (size_t)(i * p->cs0 + j * p->cs1)) : 0;
            uint64_t v;
            if (plain)
                v = acc + cv;
            else
                v = (uint64_t)(int64_t)((double)st->alpha * (double)(int64_t)acc +
                                        (double)st->beta * (double)(int64_t)cv);
            store_int(y, (size_t)(i * p->N + j), v);
        }
    }
}

oq_status oq_nn_gemm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    gemm_plan p;
    oq_status s = gemm_resolve(ctx, in, &p, err);
    if (s != OQ_OK)
        return s;
    const gemm_state *st = ctx->state;
    const oq_tensor *a = in[0], *b = in[1], *c = ctx->n_inputs > 2 ? in[2] : NULL;
    switch (a->dtype) {
    case OQ_DTYPE_FLOAT:
        if (st->pb && b->data == st->pb_src && oq_sgemm_pb_depth(st->pb) == (int)p.K &&
            oq_sgemm_pb_cols(st->pb) == (int)p.N)
            gemm_float_packed(ctx->pool, st, &p, a->data, a->dims[1], c ? c->data : NULL, out[0].data);
        else
            gemm_float(ctx->pool, st, &p, a->data, a->dims[1], b->data, b->dims[1], c ? c->data : NULL,
                       out[0].data);
        return OQ_OK;
    case OQ_DTYPE_DOUBLE:
        gemm_double(st, &p, a->data, a->dims[1], b->data, b->dims[1], c ? c->data : NULL,
                    out[0].data);
        return OQ_OK;
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: {
        float *fa = oq_nn_alloc_floats(a->count), *fb = oq_nn_alloc_floats(b->count);
        float *fc = c ? oq_nn_alloc_floats(c->count) : NULL;
        float *fy = oq_nn_alloc_floats(out[0].count);
        if (!fa || !fb || (c && !fc) || !fy) {
            free(fa), free(fb), free(fc), free(fy);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(a, fa);
        oq_nn_to_float(b, fb);
        if (c)
            oq_nn_to_float(c, fc);
        gemm_float(ctx->pool, st, &p, fa, a->dims[1], fb, b->dims[1], fc, fy);
        oq_nn_from_float(fy, &out[0]);
        free(fa), free(fb), free(fc), free(fy);
        return OQ_OK;
    }
    default:
        gemm_int(st, &p, a, b, c, &out[0]);
        return OQ_OK;
    }
}

/* =================================================================== MatMul */

typedef struct {
    int rb;                         /* broadcast batch rank */
    int64_t bdims[OQ_MAX_RANK];
    size_t sa[OQ_MAX_RANK], sb[OQ_MAX_RANK]; /* batch strides in matrices (0 = broadcast) */
    size_t batch;
    int64_t M, K, N;
    bool a_full;                    /* A's batch dims equal the output's */
    bool b_shared;                  /* every batch uses the same B matrix */
    int out_rank;
    int64_t out_dims[OQ_MAX_RANK];
} mm_plan;

/* Only a MatMul with a constant 2-D float B has a state: B packed once. */
typedef struct {
    oq_sgemm_pb *pb;
    const void *pb_src;
} mm_state;

oq_status oq_nn_matmul_prepare(oq_node_ctx *ctx, oq_error *err) {
    oq_sgemm_pb *pb = NULL;
    const void *src = NULL;
    oq_status s = pack_const_b(ctx, false, 1.0f, &pb, &src, err);
    if (s != OQ_OK || !pb)
        return s;
    mm_state *st = malloc(sizeof *st);
    if (!st) {
        oq_sgemm_pb_free(pb);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    }
    st->pb = pb;
    st->pb_src = src;
    ctx->state = st;
    return OQ_OK;
}

void oq_nn_matmul_release(void *state) {
    mm_state *st = state;
    if (st)
        oq_sgemm_pb_free(st->pb);
    free(st);
}

static oq_status mm_resolve(const oq_node_ctx *ctx, const oq_tensor *a, const oq_tensor *b,
                            mm_plan *p, oq_error *err) {
    if (!a || !b)
        return oq_err(err, OQ_EMODEL, "%s: A and B are required", ctx->label);
    if (!mm_dtype_ok(a->dtype) || b->dtype != a->dtype)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: unsupported or mixed dtypes (A %s, B %s)",
                      ctx->label, oq_dtype_name(a->dtype), oq_dtype_name(b->dtype));
    if (a->rank < 1 || b->rank < 1)
        return oq_err(err, OQ_EINVAL, "%s: inputs must have rank >= 1", ctx->label);
    /* numpy matmul: a 1-D A is a row [1, K], a 1-D B a column [K, 1]; the
     * added axis is dropped from the result. */
    int ra = a->rank >= 2 ? a->rank - 2 : 0, rbb = b->rank >= 2 ? b->rank - 2 : 0;
    p->M = a->rank >= 2 ? a->dims[a->rank - 2] : 1;
    p->K = a->dims[a->rank - 1];
    int64_t kb = b->rank >= 2 ? b->dims[b->rank - 2] : b->dims[0];
    p->N = b->rank >= 2 ? b->dims[b->rank - 1] : 1;
    if (kb != p->K)
        return oq_err(err, OQ_EINVAL, "%s: inner dims differ (%lld vs %lld)", ctx->label,
                      (long long)p->K, (long long)kb);
    p->rb = ra > rbb ? ra : rbb;
    size_t stride_a = 1, stride_b = 1;
    p->a_full = ra == p->rb;
    p->b_shared = true;
    for (int i = p->rb - 1; i >= 0; i--) {
        int ia = i - (p->rb - ra), ib = i - (p->rb - rbb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return oq_err(err, OQ_EINVAL, "%s: batch dims %lld and %lld do not broadcast",
                          ctx->label, (long long)da, (long long)db);
        p->bdims[i] = da == 1 ? db : da;
        p->sa[i] = da == 1 ? 0 : stride_a;
        p->sb[i] = db == 1 ? 0 : stride_b;
        if (da != p->bdims[i])
            p->a_full = false;
        if (p->sb[i] != 0 && p->bdims[i] != 1)
            p->b_shared = false;
        stride_a *= (size_t)da;
        stride_b *= (size_t)db;
    }
    int r = 0;
    for (int i = 0; i < p->rb; i++)
        p->out_dims[r++] = p->bdims[i];
    if (a->rank >= 2)
        p->out_dims[r++] = p->M;
    if (b->rank >= 2)
        p->out_dims[r++] = p->N;
    p->out_rank = r;
    size_t batch = 1;
    for (int i = 0; i < p->rb; i++)
        if (!oq_mul_size(batch, (size_t)p->bdims[i], &batch))
            return oq_err(err, OQ_ELIMIT, "%s: batch too large", ctx->label);
    p->batch = batch;
    size_t rows;
    if (!blas_int_ok(p->M, p->N, p->K) || !oq_mul_size(batch, (size_t)p->M, &rows) ||
        rows > INT_MAX)
        return oq_err(err, OQ_ELIMIT, "%s: dimensions exceed the BLAS int range", ctx->label);
    return OQ_OK;
}

oq_status oq_nn_matmul_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    mm_plan p;
    oq_status s = mm_resolve(ctx, ctx->n_inputs > 0 ? in[0] : NULL,
                             ctx->n_inputs > 1 ? in[1] : NULL, &p, err);
    if (s != OQ_OK)
        return s;
    return oq_out_shape(&out[0], in[0]->dtype, p.out_rank, p.out_dims, err);
}

/* Offsets (in matrices) of A and B for batch index t. */
static void mm_batch_offsets(const mm_plan *p, size_t t, size_t *oa, size_t *ob) {
    size_t a = 0, b = 0;
    for (int i = p->rb - 1; i >= 0; i--) {
        size_t c = t % (size_t)p->bdims[i];
        t /= (size_t)p->bdims[i];
        a += c * p->sa[i];
        b += c * p->sb[i];
    }
    *oa = a;
    *ob = b;
}

typedef struct {
    const mm_plan *p;
    const float *a, *b;
    float *y;
    oq_pool *pool; /* for each GEMM when batches run one after another; NULL inside a parallel loop */
} mm_job;

static void sgemm_nn(oq_pool *pool, const float *a, const float *b, float *y, int64_t M, int64_t N,
                     int64_t K) {
    if ((double)M * (double)N * (double)K <= TINY_GEMM_MNK) {
        for (int64_t i = 0; i < M; i++) {
            float *restrict yr = y + i * N;
            for (int64_t j = 0; j < N; j++)
                yr[j] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                float av = a[i * K + k];
                const float *restrict br = b + k * N;
                for (int64_t j = 0; j < N; j++)
                    yr[j] += av * br[j];
            }
        }
        return;
    }
    oq_sgemm(pool, false, false, (int)M, (int)N, (int)K, 1.0f, a, (int)K, b, (int)N, 0.0f, y, (int)N);
}

static void mm_batches(void *arg, size_t t0, size_t t1) {
    const mm_job *j = arg;
    const mm_plan *p = j->p;
    size_t ma = (size_t)(p->M * p->K), mb = (size_t)(p->K * p->N), my = (size_t)(p->M * p->N);
    for (size_t t = t0; t < t1; t++) {
        size_t oa, ob;
        mm_batch_offsets(p, t, &oa, &ob);
        sgemm_nn(j->pool, j->a + oa * ma, j->b + ob * mb, j->y + t * my, p->M, p->N, p->K);
    }
}

static void mm_float(oq_pool *pool, const mm_plan *p, const float *a, const float *b, float *y) {
    size_t ycount = p->batch * (size_t)(p->M * p->N);
    if (ycount == 0)
        return;
    if (p->K == 0) {
        memset(y, 0, ycount * sizeof *y);
        return;
    }
    if (p->b_shared && p->a_full) {
        /* [batch*M, K] x [K, N]: the Linear layer of a transformer, one GEMM. */
        sgemm_nn(pool, a, b, y, (int64_t)p->batch * p->M, p->N, p->K);
        return;
    }
    mm_job j = {p, a, b, y, NULL};
    double mnk = (double)p->M * (double)p->N * (double)p->K;
    if (p->batch >= 2 && mnk <= SMALL_GEMM_MNK) {
        oq_parallel_for(pool, p->batch, OQ_NN_MIN_CHUNK(mnk), mm_batches, &j);
    } else {
        j.pool = pool; /* one large GEMM at a time: split each over the pool */
        mm_batches(&j, 0, p->batch);
    }
}

static void mm_double(const mm_plan *p, const double *a, const double *b, double *y) {
    size_t ma = (size_t)(p->M * p->K), mb = (size_t)(p->K * p->N), my = (size_t)(p->M * p->N);
    if (p->K == 0) {
        memset(y, 0, p->batch * my * sizeof *y);
        return;
    }
    if (my == 0)
        return;
    for (size_t t = 0; t < p->batch; t++) {
        size_t oa, ob;
        mm_batch_offsets(p, t, &oa, &ob);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)p->M, (int)p->N, (int)p->K,
                    1.0, a + oa * ma, (int)p->K, b + ob * mb, (int)p->N, 0.0, y + t * my,
                    (int)p->N);
    }
}

static void mm_int(const mm_plan *p, const oq_tensor *a, const oq_tensor *b, oq_tensor *y) {
    size_t ma = (size_t)(p->M * p->K), mb = (size_t)(p->K * p->N), my = (size_t)(p->M * p->N);
    for (size_t t = 0; t < p->batch; t++) {
        size_t oa, ob;
        mm_batch_offsets(p, t, &oa, &ob);
        for (int64_t i = 0; i < p->M; i++)
            for (int64_t jn = 0; jn < p->N; jn++) {
                uint64_t acc = 0;
                for (int64_t k = 0; k < p->K; k++)
                    acc += (uint64_t)oq_tensor_get_i64(a, oa * ma + (size_t)(i * p->K + k)) *
                           (uint64_t)oq_tensor_get_i64(b, ob * mb + (size_t)(k * p->N + jn));
                store_int(y, t * my + (size_t)(i * p->N + jn), acc);
            }
    }
}

oq_status oq_nn_matmul_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    mm_plan p;
    oq_status s = mm_resolve(ctx, in[0], in[1], &p, err);
    if (s != OQ_OK)
        return s;
    const oq_tensor *a = in[0], *b = in[1];
    const mm_state *st = ctx->state;
    switch (a->dtype) {
    case OQ_DTYPE_FLOAT:
        /* B [K, N] packed: A's batch and rows are one [batch*M, K] product */
        if (st && b->data == st->pb_src && b->rank == 2 && oq_sgemm_pb_depth(st->pb) == (int)p.K &&
            oq_sgemm_pb_cols(st->pb) == (int)p.N) {
            if (p.batch * (size_t)p.M > 0)
                oq_sgemm_pb_run(ctx->pool, false, (int)(p.batch * (size_t)p.M), a->data, (int)p.K, st->pb,
                                0.0f, out[0].data, (int)p.N, NULL);
            return OQ_OK;
        }
        mm_float(ctx->pool, &p, a->data, b->data, out[0].data);
        return OQ_OK;
    case OQ_DTYPE_DOUBLE:
        mm_double(&p, a->data, b->data, out[0].data);
        return OQ_OK;
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_BFLOAT16: {
        float *fa = oq_nn_alloc_floats(a->count), *fb = oq_nn_alloc_floats(b->count);
        float *fy = oq_nn_alloc_floats(out[0].count);
        if (!fa || !fb || !fy) {
            free(fa), free(fb), free(fy);
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
        }
        oq_nn_to_float(a, fa);
        oq_nn_to_float(b, fb);
        mm_float(ctx->pool, &p, fa, fb, fy);
        oq_nn_from_float(fy, &out[0]);
        free(fa), free(fb), free(fy);
        return OQ_OK;
    }
    default:
        mm_int(&p, a, b, &out[0]);
        return OQ_OK;
    }
}

/* =================================================================== Einsum */

#define EIN_MAX_IN 16
#define EIN_MAX_TERM 16
#define EIN_LABELS 52
#define EIN_ELLIPSIS (-1)

typedef struct {
    int n_in;
    int len[EIN_MAX_IN];
    int8_t term[EIN_MAX_IN][EIN_MAX_TERM]; /* label 0..51 (ASCII order) or EIN_ELLIPSIS */
    bool explicit_out;
    int out_len;
    int8_t out[EIN_MAX_TERM];
} einsum_state;

static int ein_label(char ch) {
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return 26 + (ch - 'a');
    return -2;
}

/* Parses one term of the equation; returns false on a bad character. */
static bool ein_term(const char *s, size_t n, int8_t *term, int *len) {
    int l = 0;
    bool ell = false;
    for (size_t i = 0; i < n;) {
        if (s[i] == ' ') {
            i++;
            continue;
        }
        if (l >= EIN_MAX_TERM)
            return false;
        if (s[i] == '.') {
            if (ell || i + 2 >= n || s[i + 1] != '.' || s[i + 2] != '.')
                return false;
            ell = true;
            term[l++] = EIN_ELLIPSIS;
            i += 3;
            continue;
        }
        int lab = ein_label(s[i]);
        if (lab < 0)
            return false;
        term[l++] = (int8_t)lab;
        i++;
    }
    *len = l;
    return true;
}

oq_status oq_nn_einsum_prepare(oq_node_ctx *ctx, oq_error *err) {
    einsum_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    char eq[512];
    oq_status s = oq_node_attr_string(ctx->node, "equation", NULL, eq, sizeof eq, err);
    if (s != OQ_OK)
        return s;
    if (ctx->n_inputs < 1 || ctx->n_inputs > EIN_MAX_IN)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: %d inputs (1..%d supported)", ctx->label,
                      ctx->n_inputs, EIN_MAX_IN);
    const char *arrow = strstr(eq, "->");
    size_t lhs_len = arrow ? (size_t)(arrow - eq) : strlen(eq);
    const char *t = eq;
    int n = 0;
    for (;;) {
        const char *comma = memchr(t, ',', lhs_len - (size_t)(t - eq));
        size_t tl = comma ? (size_t)(comma - t) : lhs_len - (size_t)(t - eq);
        if (n >= ctx->n_inputs || !ein_term(t, tl, st->term[n], &st->len[n]))
            return oq_err(err, OQ_EINVAL, "%s: bad equation '%s' for %d inputs", ctx->label, eq,
                          ctx->n_inputs);
        n++;
        if (!comma)
            break;
        t = comma + 1;
    }
    if (n != ctx->n_inputs)
        return oq_err(err, OQ_EINVAL, "%s: equation '%s' has %d terms for %d inputs", ctx->label,
                      eq, n, ctx->n_inputs);
    st->n_in = n;
    if (arrow) {
        st->explicit_out = true;
        if (strstr(arrow + 2, "->") || !ein_term(arrow + 2, strlen(arrow + 2), st->out, &st->out_len))
            return oq_err(err, OQ_EINVAL, "%s: bad equation output in '%s'", ctx->label, eq);
        bool seen[EIN_LABELS + 1] = {false};
        for (int i = 0; i < st->out_len; i++) {
            int k = st->out[i] == EIN_ELLIPSIS ? EIN_LABELS : st->out[i];
            if (seen[k])
                return oq_err(err, OQ_EINVAL, "%s: output repeats a label in '%s'", ctx->label, eq);
            seen[k] = true;
        }
    } else {
        /* implicit output: the ellipsis, then labels used exactly once, in
         * alphabetical order (numpy's rule, which the ONNX spec follows) */
        int count[EIN_LABELS] = {0};
        bool any_ell = false;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < st->len[i]; j++) {
                if (st->term[i][j] == EIN_ELLIPSIS)
                    any_ell = true;
                else
                    count[st->term[i][j]]++;
            }
        int l = 0;
        if (any_ell)
            st->out[l++] = EIN_ELLIPSIS;
        for (int k = 0; k < EIN_LABELS; k++)
            if (count[k] == 1) {
                if (l >= EIN_MAX_TERM)
                    return oq_err(err, OQ_EUNSUPPORTED, "%s: too many output labels", ctx->label);
                st->out[l++] = (int8_t)k;
            }
        st->out_len = l;
    }
    return OQ_OK;
}

#define EIN_MAX_AXES (OQ_MAX_RANK + EIN_LABELS)

typedef struct {
    int n_out, n_sum;                  /* iteration axes: outputs first, then summed */
    int64_t dims[EIN_MAX_AXES];
    int64_t strides[EIN_MAX_IN][EIN_MAX_AXES];
    int out_rank;
    int64_t out_dims[OQ_MAX_RANK];
} ein_plan;

static oq_status ein_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, ein_plan *p,
                             oq_error *err) {
    const einsum_state *st = ctx->state;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    oq_dtype dt = OQ_DTYPE_UNDEFINED;
    int E = 0;
    int ell_rank[EIN_MAX_IN];
    int64_t ldim[EIN_LABELS];
    for (int k = 0; k < EIN_LABELS; k++)
        ldim[k] = -1;
    for (int i = 0; i < st->n_in; i++) {
        const oq_tensor *t = in[i];
        if (!t)
            return oq_err(err, OQ_EMODEL, "%s: input %d is missing", ctx->label, i);
        if (i == 0)
            dt = t->dtype;
        if (t->dtype != dt || !(mm_dtype_ok(dt) || dt == OQ_DTYPE_INT8 || dt == OQ_DTYPE_UINT8 ||
                                dt == OQ_DTYPE_INT16 || dt == OQ_DTYPE_UINT16))
            return oq_err(err, OQ_EUNSUPPORTED, "%s: unsupported or mixed dtype %s", ctx->label,
                          oq_dtype_name(t->dtype));
        int letters = 0;
        bool ell = false;
        for (int j = 0; j < st->len[i]; j++) {
            if (st->term[i][j] == EIN_ELLIPSIS)
                ell = true;
            else
                letters++;
        }
        ell_rank[i] = t->rank - letters;
        if (ell_rank[i] < 0 || (!ell && ell_rank[i] != 0))
            return oq_err(err, OQ_EINVAL, "%s: input %d has rank %d for %d subscripts", ctx->label,
                          i, t->rank, letters);
        if (ell_rank[i] > E)
            E = ell_rank[i];
    }
    /* ellipsis dims broadcast numpy-style, right-aligned */
    int64_t edims[OQ_MAX_RANK];
    for (int e = 0; e < E; e++)
        edims[e] = 1;
    for (int i = 0; i < st->n_in; i++) {
        const oq_tensor *t = in[i];
        int ax = 0;
        for (int j = 0; j < st->len[i]; j++) {
            int lab = st->term[i][j];
            if (lab == EIN_ELLIPSIS) {
                for (int e = 0; e < ell_rank[i]; e++) {
                    int64_t d = t->dims[ax + e];
                    int64_t *g = &edims[E - ell_rank[i] + e];
                    if (d != *g && d != 1 && *g != 1)
                        return oq_err(err, OQ_EINVAL, "%s: ellipsis dims do not broadcast",
                                      ctx->label);
                    if (*g == 1)
                        *g = d;
                }
                ax += ell_rank[i];
                continue;
            }
            int64_t d = t->dims[ax++];
            if (ldim[lab] >= 0 && ldim[lab] != d && d != 1 && ldim[lab] != 1)
                return oq_err(err, OQ_EINVAL, "%s: label '%c' has sizes %lld and %lld",
                              ctx->label, lab < 26 ? 'A' + lab : 'a' + lab - 26,
                              (long long)ldim[lab], (long long)d);
            if (ldim[lab] < 0 || ldim[lab] == 1)
                ldim[lab] = d;
        }
    }
    /* iteration axes: output order first */
    int axis_of_label[EIN_LABELS], ell_axis = -1, na = 0;
    for (int k = 0; k < EIN_LABELS; k++)
        axis_of_label[k] = -1;
    int out_rank = 0;
    for (int j = 0; j < st->out_len; j++) {
        int lab = st->out[j];
        if (lab == EIN_ELLIPSIS) {
            ell_axis = na;
            for (int e = 0; e < E; e++) {
                p->dims[na++] = edims[e];
                out_rank++;
            }
            continue;
        }
        if (ldim[lab] < 0)
            return oq_err(err, OQ_EINVAL, "%s: output label not in any input", ctx->label);
        axis_of_label[lab] = na;
        p->dims[na++] = ldim[lab];
        out_rank++;
    }
    if (out_rank > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: output rank %d", ctx->label, out_rank);
    p->n_out = na;
    if (ell_axis < 0 && E > 0) { /* ellipsis left out of the output: summed */
        ell_axis = na;
        for (int e = 0; e < E; e++)
            p->dims[na++] = edims[e];
    }
    for (int k = 0; k < EIN_LABELS; k++)
        if (ldim[k] >= 0 && axis_of_label[k] < 0) {
            axis_of_label[k] = na;
            p->dims[na++] = ldim[k];
        }
    p->n_sum = na - p->n_out;
    for (int i = 0; i < st->n_in; i++) {
        const oq_tensor *t = in[i];
        int64_t *s = p->strides[i];
        for (int a = 0; a < na; a++)
            s[a] = 0;
        int64_t stride[OQ_MAX_RANK], acc = 1;
        for (int d = t->rank - 1; d >= 0; d--) {
            stride[d] = acc;
            acc *= t->dims[d];
        }
        int ax = 0;
        for (int j = 0; j < st->len[i]; j++) {
            int lab = st->term[i][j];
            if (lab == EIN_ELLIPSIS) {
                for (int e = 0; e < ell_rank[i]; e++) {
                    if (t->dims[ax + e] != 1)
                        s[ell_axis + E - ell_rank[i] + e] += stride[ax + e];
                }
                ax += ell_rank[i];
                continue;
            }
            if (t->dims[ax] != 1)
                s[axis_of_label[lab]] += stride[ax]; /* repeated labels: the diagonal */
            ax++;
        }
    }
    p->out_rank = out_rank;
    for (int a = 0; a < out_rank; a++)
        p->out_dims[a] = p->dims[a];
    return OQ_OK;
}

oq_status oq_nn_einsum_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    ein_plan *p = malloc(sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status s = ein_resolve(ctx, in, p, err);
    if (s == OQ_OK)
        s = oq_out_shape(&out[0], in[0]->dtype, p->out_rank, p->out_dims, err);
    free(p);
    return s;
}

typedef struct {
    const ein_plan *p;
    int n_in;
    bool is_int;
    const double *fin[EIN_MAX_IN];
    const int64_t *iin[EIN_MAX_IN];
    double *fout;
    int64_t *iout;
} ein_job;

static void ein_range(void *arg, size_t o0, size_t o1) {
    const ein_job *j = arg;
    const ein_plan *p = j->p;
    int no = p->n_out, na = p->n_out + p->n_sum;
    for (size_t o = o0; o < o1; o++) {
        int64_t base[EIN_MAX_IN] = {0};
        size_t rem = o;
        for (int a = no - 1; a >= 0; a--) {
            int64_t c = (int64_t)(rem % (size_t)p->dims[a]);
            rem /= (size_t)p->dims[a];
            for (int i = 0; i < j->n_in; i++)
                base[i] += c * p->strides[i][a];
        }
        int64_t idx[EIN_MAX_AXES] = {0};
        int64_t off[EIN_MAX_IN];
        for (int i = 0; i < j->n_in; i++)
            off[i] = base[i];
        bool empty = false;
        for (int a = no; a < na; a++)
            if (p->dims[a] == 0)
                empty = true;
        double facc = 0.0;
        uint64_t iacc = 0;
        while (!empty) {
            if (j->is_int) {
                uint64_t prod = 1;
                for (int i = 0; i < j->n_in; i++)
                    prod *= (uint64_t)j->iin[i][off[i]];
                iacc += prod;
            } else {
                double prod = 1.0;
                for (int i = 0; i < j->n_in; i++)
                    prod *= j->fin[i][off[i]];
                facc += prod;
            }
            int a = na - 1;
            for (; a >= no; a--) {
                idx[a]++;
                for (int i = 0; i < j->n_in; i++)
                    off[i] += p->strides[i][a];
                if (idx[a] < p->dims[a])
                    break;
                for (int i = 0; i < j->n_in; i++)
                    off[i] -= idx[a] * p->strides[i][a];
                idx[a] = 0;
            }
            if (a < no)
                break;
        }
        if (j->is_int)
            j->iout[o] = (int64_t)iacc;
        else
            j->fout[o] = facc;
    }
}

oq_status oq_nn_einsum_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    const einsum_state *st = ctx->state;
    ein_plan *p = malloc(sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status s = ein_resolve(ctx, in, p, err);
    if (s != OQ_OK) {
        free(p);
        return s;
    }
    oq_dtype dt = in[0]->dtype;
    ein_job j = {.p = p, .n_in = st->n_in};
    j.is_int = !(dt == OQ_DTYPE_FLOAT || dt == OQ_DTYPE_DOUBLE || dt == OQ_DTYPE_FLOAT16 ||
                 dt == OQ_DTYPE_BFLOAT16);
    /* Inputs are widened to double (floating types) or int64 once, so the
     * inner loop is plain arithmetic. */
    void *bufs[EIN_MAX_IN + 1] = {NULL};
    bool ok = true;
    for (int i = 0; i < st->n_in && ok; i++) {
        size_t n = in[i]->count, bytes;
        if (!oq_mul_size(n ? n : 1, 8, &bytes) || !(bufs[i] = malloc(bytes))) {
            ok = false;
            break;
        }
        if (j.is_int) {
            int64_t *d = bufs[i];
            for (size_t e = 0; e < n; e++)
                d[e] = oq_tensor_get_i64(in[i], e);
            j.iin[i] = d;
        } else {
            double *d = bufs[i];
            for (size_t e = 0; e < n; e++)
                d[e] = oq_tensor_get_f64(in[i], e);
            j.fin[i] = d;
        }
    }
    size_t n_out = out[0].count, bytes;
    if (ok && (!oq_mul_size(n_out ? n_out : 1, 8, &bytes) || !(bufs[st->n_in] = malloc(bytes))))
        ok = false;
    if (ok) {
        j.fout = bufs[st->n_in];
        j.iout = bufs[st->n_in];
        size_t inner = 1;
        for (int a = p->n_out; a < p->n_out + p->n_sum; a++)
            inner *= (size_t)p->dims[a];
        oq_parallel_for(ctx->pool, n_out, OQ_NN_MIN_CHUNK(inner * (size_t)st->n_in), ein_range, &j);
        for (size_t e = 0; e < n_out; e++) {
            switch (dt) {
            case OQ_DTYPE_FLOAT: ((float *)out[0].data)[e] = (float)j.fout[e]; break;
            case OQ_DTYPE_DOUBLE: ((double *)out[0].data)[e] = j.fout[e]; break;
            case OQ_DTYPE_FLOAT16:
                ((uint16_t *)out[0].data)[e] = oq_float_to_half((float)j.fout[e]);
                break;
            case OQ_DTYPE_BFLOAT16:
                ((uint16_t *)out[0].data)[e] = oq_float_to_bf16((float)j.fout[e]);
                break;
            case OQ_DTYPE_INT8: ((int8_t *)out[0].data)[e] = (int8_t)j.iout[e]; break;
            case OQ_DTYPE_UINT8: ((uint8_t *)out[0].data)[e] = (uint8_t)j.iout[e]; break;
            case OQ_DTYPE_INT16: ((int16_t *)out[0].data)[e] = (int16_t)j.iout[e]; break;
            case OQ_DTYPE_UINT16: ((uint16_t *)out[0].data)[e] = (uint16_t)j.iout[e]; break;
            default: store_int(&out[0], e, (uint64_t)j.iout[e]); break;
            }
        }
    }
    for (int i = 0; i <= st->n_in; i++)
        free(bufs[i]);
    free(p);
    if (!ok)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    return OQ_OK;
}

/* ===================================================================== LSTM */

typedef enum {
    ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_AFFINE, ACT_LEAKYRELU, ACT_THRESHOLDEDRELU,
    ACT_SCALEDTANH, ACT_HARDSIGMOID, ACT_ELU, ACT_SOFTSIGN, ACT_SOFTPLUS
} lstm_act_kind;

typedef struct {
    lstm_act_kind kind;
    float alpha, beta;
} lstm_act;

typedef struct {
    int64_t hidden, input_forget, layout;
    int dirs;
    int direction; /* 0 forward, 1 reverse, 2 bidirectional */
    bool has_clip;
    float clip;
    lstm_act act[2][3]; /* per direction: f, g, h */
} lstm_state;

static const struct {
    const char *name;
    lstm_act_kind kind;
    int uses; /* 0 none, 1 alpha, 2 alpha+beta */
    float alpha, beta;
} lstm_acts[] = {
    {"Sigmoid", ACT_SIGMOID, 0, 0, 0},         {"Tanh", ACT_TANH, 0, 0, 0},
    {"Relu", ACT_RELU, 0, 0, 0},               {"Affine", ACT_AFFINE, 2, 1.0f, 0.0f},
    {"LeakyRelu", ACT_LEAKYRELU, 1, 0.01f, 0}, {"ThresholdedRelu", ACT_THRESHOLDEDRELU, 1, 1.0f, 0},
    {"ScaledTanh", ACT_SCALEDTANH, 2, 1.0f, 1.0f}, {"HardSigmoid", ACT_HARDSIGMOID, 2, 0.2f, 0.5f},
    {"Elu", ACT_ELU, 1, 1.0f, 0},              {"Softsign", ACT_SOFTSIGN, 0, 0, 0},
    {"Softplus", ACT_SOFTPLUS, 0, 0, 0},
};

oq_status oq_nn_lstm_prepare(oq_node_ctx *ctx, oq_error *err) {
    lstm_state *st = calloc(1, sizeof *st);
    if (!st)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    ctx->state = st;
    oq_status s;
    char dir[32];
    if ((s = OQ_ATTR_INT(ctx, "hidden_size", 0, &st->hidden, err)) ||
        (s = OQ_ATTR_INT(ctx, "input_forget", 0, &st->input_forget, err)) ||
        (s = oq_node_attr_string(ctx->node, "direction", "forward", dir, sizeof dir, err)))
        return s;
    /* layout arrived with LSTM-14 */
    if (ctx->opset >= 14 && (s = OQ_ATTR_INT(ctx, "layout", 0, &st->layout, err)))
        return s;
    if (st->layout != 0 && st->layout != 1)
        return oq_err(err, OQ_EINVAL, "%s: layout %lld", ctx->label, (long long)st->layout);
    if (st->hidden < 0)
        return oq_err(err, OQ_EINVAL, "%s: hidden_size %lld", ctx->label, (long long)st->hidden);
    if (strcmp(dir, "forward") == 0)
        st->direction = 0;
    else if (strcmp(dir, "reverse") == 0)
        st->direction = 1;
    else if (strcmp(dir, "bidirectional") == 0)
        st->direction = 2;
    else
        return oq_err(err, OQ_EINVAL, "%s: unknown direction '%s'", ctx->label, dir);
    st->dirs = st->direction == 2 ? 2 : 1;
    const Onnx__AttributeProto *clip = oq_node_attr(ctx->node, "clip");
    if (clip) {
        if ((s = oq_node_attr_float(ctx->node, "clip", 0.0f, &st->clip, err)))
            return s;
        if (!(st->clip > 0.0f))
            return oq_err(err, OQ_EINVAL, "%s: clip must be positive", ctx->label);
        st->has_clip = true;
    }
    const float *alphas, *betas;
    size_t n_alpha, n_beta, ia = 0, ib = 0;
    if ((s = oq_node_attr_floats(ctx->node, "activation_alpha", &alphas, &n_alpha, err)) ||
        (s = oq_node_attr_floats(ctx->node, "activation_beta", &betas, &n_beta, err)))
        return s;
    const Onnx__AttributeProto *acts = oq_node_attr(ctx->node, "activations");
    size_t n_acts = 0;
    if (acts) {
        if (oq_attr_type(acts) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS)
            return oq_err(err, OQ_EMODEL, "%s: activations must be strings", ctx->label);
        n_acts = acts->n_strings;
        if (n_acts != (size_t)(3 * st->dirs))
            return oq_err(err, OQ_EINVAL, "%s: %zu activations for %d directions", ctx->label,
                          n_acts, st->dirs);
    }
    static const char *defaults[3] = {"Sigmoid", "Tanh", "Tanh"};
    for (int d = 0; d < st->dirs; d++)
        for (int a = 0; a < 3; a++) {
            char name[32];
            if (acts) {
                ProtobufCBinaryData b = acts->strings[d * 3 + a];
                if (b.len >= sizeof name || memchr(b.data, 0, b.len))
                    return oq_err(err, OQ_EINVAL, "%s: bad activation name", ctx->label);
                memcpy(name, b.data, b.len);
                name[b.len] = '\0';
            } else {
                strcpy(name, defaults[a]);
            }
            size_t k = 0, nk = sizeof lstm_acts / sizeof lstm_acts[0];
            while (k < nk && strcasecmp(lstm_acts[k].name, name) != 0)
                k++;
            if (k == nk)
                return oq_err(err, OQ_EUNSUPPORTED, "%s: activation '%s'", ctx->label, name);
            lstm_act *A = &st->act[d][a];
            A->kind = lstm_acts[k].kind;
            A->alpha = lstm_acts[k].alpha;
            A->beta = lstm_acts[k].beta;
            /* alphas/betas are consumed in order by the activations that take them */
            if (lstm_acts[k].uses >= 1 && ia < n_alpha)
                A->alpha = alphas[ia++];
            if (lstm_acts[k].uses >= 2 && ib < n_beta)
                A->beta = betas[ib++];
        }
    return OQ_OK;
}

typedef struct {
    int64_t seq, batch, input, hidden;
} lstm_dims;

static oq_status lstm_resolve(const oq_node_ctx *ctx, const oq_tensor *const *in, lstm_dims *d,
                              oq_error *err) {
    const lstm_state *st = ctx->state;
    if (!st)
        return oq_err(err, OQ_EINTERNAL, "%s: not prepared", ctx->label);
    const oq_tensor *x = ctx->n_inputs > 0 ? in[0] : NULL, *w = ctx->n_inputs > 1 ? in[1] : NULL;
    const oq_tensor *r = ctx->n_inputs > 2 ? in[2] : NULL;
    if (!x || !w || !r)
        return oq_err(err, OQ_EMODEL, "%s: X, W and R are required", ctx->label);
    for (int i = 0; i < ctx->n_inputs && i < 8; i++) {
        if (!in[i] || i == 4)
            continue;
        if (in[i]->dtype != OQ_DTYPE_FLOAT)
            return oq_err(err, OQ_EUNSUPPORTED, "%s: input %d is %s (float only)", ctx->label, i,
                          oq_dtype_name(in[i]->dtype));
    }
    if (x->rank != 3 || w->rank != 3 || r->rank != 3)
        return oq_err(err, OQ_EINVAL, "%s: X, W and R must be 3-D", ctx->label);
    d->seq = st->layout ? x->dims[1] : x->dims[0];
    d->batch = st->layout ? x->dims[0] : x->dims[1];
    d->input = x->dims[2];
    int64_t H = st->hidden ? st->hidden : w->dims[1] / 4;
    if (H > INT_MAX / 8)
        return oq_err(err, OQ_ELIMIT, "%s: hidden_size %lld is too large", ctx->label,
                      (long long)H);
    d->hidden = H;
    int64_t D = st->dirs;
    if (w->dims[0] != D || w->dims[1] != 4 * H || w->dims[2] != d->input)
        return oq_err(err, OQ_EINVAL, "%s: W must be [%lld, %lld, %lld]", ctx->label,
                      (long long)D, (long long)(4 * H), (long long)d->input);
    if (r->dims[0] != D || r->dims[1] != 4 * H || r->dims[2] != H)
        return oq_err(err, OQ_EINVAL, "%s: R must be [%lld, %lld, %lld]", ctx->label,
                      (long long)D, (long long)(4 * H), (long long)H);
    const oq_tensor *b = ctx->n_inputs > 3 ? in[3] : NULL;
    if (b && (b->rank != 2 || b->dims[0] != D || b->dims[1] != 8 * H))
        return oq_err(err, OQ_EINVAL, "%s: B must be [%lld, %lld]", ctx->label, (long long)D,
                      (long long)(8 * H));
    const oq_tensor *sl = ctx->n_inputs > 4 ? in[4] : NULL;
    if (sl && (sl->rank != 1 || sl->dims[0] != d->batch ||
               (sl->dtype != OQ_DTYPE_INT32 && sl->dtype != OQ_DTYPE_INT64)))
        return oq_err(err, OQ_EINVAL, "%s: sequence_lens must be int32[%lld]", ctx->label,
                      (long long)d->batch);
    for (int i = 5; i <= 6; i++) {
        const oq_tensor *t = ctx->n_inputs > i ? in[i] : NULL;
        int64_t e0 = st->layout ? d->batch : D, e1 = st->layout ? D : d->batch;
        if (t && (t->rank != 3 || t->dims[0] != e0 || t->dims[1] != e1 || t->dims[2] != H))
            return oq_err(err, OQ_EINVAL, "%s: initial state %d has the wrong shape", ctx->label,
                          i);
    }
    const oq_tensor *pp = ctx->n_inputs > 7 ? in[7] : NULL;
    if (pp && (pp->rank != 2 || pp->dims[0] != D || pp->dims[1] != 3 * H))
        return oq_err(err, OQ_EINVAL, "%s: P must be [%lld, %lld]", ctx->label, (long long)D,
                      (long long)(3 * H));
    if (!blas_int_ok(d->seq * d->batch, 4 * H, d->input) || H > INT_MAX / 4)
        return oq_err(err, OQ_ELIMIT, "%s: dimensions exceed the BLAS int range", ctx->label);
    return OQ_OK;
}

oq_status oq_nn_lstm_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err) {
    lstm_dims d;
    oq_status s = lstm_resolve(ctx, in, &d, err);
    if (s != OQ_OK)
        return s;
    const lstm_state *st = ctx->state;
    int64_t D = st->dirs;
    int64_t ydims[4], hdims[3];
    if (st->layout) {
        int64_t y[4] = {d.batch, d.seq, D, d.hidden}, h[3] = {d.batch, D, d.hidden};
        memcpy(ydims, y, sizeof y);
        memcpy(hdims, h, sizeof h);
    } else {
        int64_t y[4] = {d.seq, D, d.batch, d.hidden}, h[3] = {D, d.batch, d.hidden};
        memcpy(ydims, y, sizeof y);
        memcpy(hdims, h, sizeof h);
    }
    if (ctx->n_outputs > 0 && (s = oq_out_shape(&out[0], OQ_DTYPE_FLOAT, 4, ydims, err)))
        return s;
    for (int i = 1; i < ctx->n_outputs && i < 3; i++)
        if ((s = oq_out_shape(&out[i], OQ_DTYPE_FLOAT, 3, hdims, err)))
            return s;
    return OQ_OK;
}

static float lstm_apply(const lstm_act *a, float x) {
    switch (a->kind) {
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case ACT_TANH: return tanhf(x);
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_AFFINE: return a->alpha * x + a->beta;
    case ACT_LEAKYRELU: return x >= 0.0f ? x : a->alpha * x;
    case ACT_THRESHOLDEDRELU: return x > a->alpha ? x : 0.0f;
    case ACT_SCALEDTANH: return a->alpha * tanhf(a->beta * x);
    case ACT_HARDSIGMOID: {
        float v = a->alpha * x + a->beta;
        return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    case ACT_ELU: return x >= 0.0f ? x : a->alpha * (expf(x) - 1.0f);
    case ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case ACT_SOFTPLUS: return log1pf(expf(x));
    }
    return x;
}

static float lstm_clip(const lstm_state *st, float v) {
    if (st->has_clip)
        v = v < -st->clip ? -st->clip : v > st->clip ? st->clip : v;
    return v;
}

oq_status oq_nn_lstm_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                         oq_error *err) {
    lstm_dims dm;
    oq_status s = lstm_resolve(ctx, in, &dm, err);
    if (s != OQ_OK)
        return s;
    const lstm_state *st = ctx->state;
    const int64_t T = dm.seq, Bn = dm.batch, NI = dm.input, H = dm.hidden, D = st->dirs;
    const float *x = in[0]->data, *W = in[1]->data, *R = in[2]->data;
    const oq_tensor *bt = ctx->n_inputs > 3 ? in[3] : NULL, *sl = ctx->n_inputs > 4 ? in[4] : NULL;
    const oq_tensor *h0 = ctx->n_inputs > 5 ? in[5] : NULL, *c0 = ctx->n_inputs > 6 ? in[6] : NULL;
    const oq_tensor *pt = ctx->n_inputs > 7 ? in[7] : NULL;
    float *Y = ctx->n_outputs > 0 ? out[0].data : NULL;
    float *Yh = ctx->n_outputs > 1 ? out[1].data : NULL;
    float *Yc = ctx->n_outputs > 2 ? out[2].data : NULL;
    int64_t *lp = malloc((size_t)(Bn > 0 ? Bn : 1) * sizeof *lp);
    if (!lp)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    for (int64_t b = 0; b < Bn; b++) {
        lp[b] = sl ? oq_tensor_get_i64(sl, (size_t)b) : T;
        if (lp[b] < 0 || lp[b] > T) {
            int64_t bad = lp[b];
            free(lp);
            return oq_err(err, OQ_EINVAL, "%s: sequence_lens[%lld] = %lld (seq length %lld)",
                          ctx->label, (long long)b, (long long)bad, (long long)T);
        }
    }
    size_t n_xw, n_g, n_hc, tmp;
    float *xw = NULL, *g = NULL, *h = NULL, *c = NULL;
    bool ok = oq_mul_size((size_t)(T * Bn), (size_t)(4 * H), &n_xw) &&
              oq_mul_size((size_t)Bn, (size_t)(4 * H), &n_g) &&
              oq_mul_size((size_t)Bn, (size_t)H, &n_hc) && oq_add_size(n_xw, n_g, &tmp);
    if (ok) {
        xw = oq_nn_alloc_floats(n_xw);
        g = oq_nn_alloc_floats(n_g);
        h = oq_nn_alloc_floats(n_hc);
        c = oq_nn_alloc_floats(n_hc);
    }
    if (!ok || !xw || !g || !h || !c) {
        free(xw), free(g), free(h), free(c);
        free(lp);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    }
    if (Y)
        memset(Y, 0, out[0].count * sizeof *Y);
    /* Y index of (t, dir, b): layout 0 is [T, D, B, H], layout 1 [B, T, D, H]. */
#define Y_AT(t, dd, b)                                                                        \
    (st->layout ? Y + ((((b) * T + (t)) * D + (dd)) * H) : Y + ((((t) * D + (dd)) * Bn + (b)) * H))
#define S_AT(base, dd, b) (st->layout ? (base) + (((b) * D + (dd)) * H) : (base) + (((dd) * Bn + (b)) * H))
    for (int64_t dd = 0; dd < D; dd++) {
        bool reverse = st->direction == 1 || dd == 1;
        const float *Wd = W + dd * 4 * H * NI, *Rd = R + dd * 4 * H * H;
        const float *bias = bt ? (const float *)bt->data + dd * 8 * H : NULL;
        const float *P = pt ? (const float *)pt->data + dd * 3 * H : NULL;
        const lstm_act *af = &st->act[dd][0], *ag = &st->act[dd][1], *ah = &st->act[dd][2];
        /* X*W^T for every step at once: rows follow X's layout (t*B+b or b*T+t). */
        if (T * Bn > 0 && H > 0 && NI > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(T * Bn), (int)(4 * H),
                        (int)NI, 1.0f, x, (int)NI, Wd, (int)NI, 0.0f, xw, (int)(4 * H));
        else
            memset(xw, 0, n_xw * sizeof *xw);
        for (int64_t b = 0; b < Bn; b++) {
            for (int64_t k = 0; k < H; k++) {
                h[b * H + k] = h0 ? S_AT((const float *)h0->data, dd, b)[k] : 0.0f;
                c[b * H + k] = c0 ? S_AT((const float *)c0->data, dd, b)[k] : 0.0f;
            }
        }
        for (int64_t step = 0; step < T; step++) {
            if (H > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Bn, (int)(4 * H), (int)H,
                            1.0f, h, (int)H, Rd, (int)H, 0.0f, g, (int)(4 * H));
            for (int64_t b = 0; b < Bn; b++) {
                if (step >= lp[b])
                    continue;
                int64_t t = reverse ? lp[b] - 1 - step : step;
                const float *xr = xw + (st->layout ? b * T + t : t * Bn + b) * 4 * H;
                float *gr = g + b * 4 * H, *hr = h + b * H, *cr = c + b * H;
                for (int64_t k = 0; k < H; k++) {
                    /* gate order i, o, f, c (LSTM-7); P is [Pi, Po, Pf] */
                    float gi = gr[k] + xr[k], go = gr[H + k] + xr[H + k];
                    float gf = gr[2 * H + k] + xr[2 * H + k], gc = gr[3 * H + k] + xr[3 * H + k];
                    if (bias) {
                        gi += bias[k] + bias[4 * H + k];
                        go += bias[H + k] + bias[5 * H + k];
                        gf += bias[2 * H + k] + bias[6 * H + k];
                        gc += bias[3 * H + k] + bias[7 * H + k];
                    }
                    float cp = cr[k];
                    float it = lstm_apply(af, lstm_clip(st, gi + (P ? P[k] * cp : 0.0f)));
                    float ft = st->input_forget
                                   ? 1.0f - it
                                   : lstm_apply(af, lstm_clip(st, gf + (P ? P[2 * H + k] * cp : 0.0f)));
                    float ct = lstm_apply(ag, lstm_clip(st, gc));
                    float cn = ft * cp + it * ct;
                    float ot = lstm_apply(af, lstm_clip(st, go + (P ? P[H + k] * cn : 0.0f)));
                    cr[k] = cn;
                    hr[k] = ot * lstm_apply(ah, cn);
                }
                if (Y)
                    memcpy(Y_AT(t, dd, b), hr, (size_t)H * sizeof *hr);
            }
        }
        for (int64_t b = 0; b < Bn; b++) {
            if (Yh)
                memcpy(S_AT(Yh, dd, b), h + b * H, (size_t)H * sizeof *h);
            if (Yc)
                memcpy(S_AT(Yc, dd, b), c + b * H, (size_t)H * sizeof *c);
        }
    }
#undef Y_AT
#undef S_AT
    free(xw), free(g), free(h), free(c);
    free(lp);
    return OQ_OK;
}
