/* ops_shape_move.c: shape-family ops that move contiguous blocks: Transpose,
 * Concat, Split, Slice. All are type-agnostic (bytes per element only) and
 * copy the longest contiguous runs they can; Transpose and Concat are hot in
 * transformer models, so both reduce their work to memcpy runs or a tiled
 * 2-D transpose and split it across the pool. */
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <xmmintrin.h>
#endif

#include "checked.h"
#include "ops_shape.h"

static oq_status need_input0(const oq_node_ctx *ctx, const oq_tensor *const *in, oq_error *err) {
    if (ctx->n_inputs < 1 || !in[0])
        return oq_err(err, OQ_EMODEL, "%s: input 0 is missing", ctx->label);
    return OQ_OK;
}

static oq_status int_state(oq_node_ctx *ctx, const char *name, int64_t def, oq_error *err) {
    int64_t *v = malloc(sizeof *v);
    if (!v)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_ATTR_INT(ctx, name, def, v, err);
    if (st != OQ_OK) {
        free(v);
        return st;
    }
    ctx->state = v;
    return OQ_OK;
}

/* ---- Transpose ----------------------------------------------------------- */

typedef struct {
    bool has_perm;
    int n;
    int64_t perm[OQ_MAX_RANK];
} perm_state;

oq_status oq_shape_transpose_prepare(oq_node_ctx *ctx, oq_error *err) {
    const int64_t *p;
    size_t n;
    oq_status st = oq_node_attr_ints(ctx->node, "perm", &p, &n, err);
    if (st != OQ_OK)
        return st;
    if (n > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "%s: perm has %zu values, at most %d are supported",
                      ctx->label, n, OQ_MAX_RANK);
    perm_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    s->has_perm = oq_node_attr(ctx->node, "perm") != NULL;
    s->n = (int)n;
    if (n)
        memcpy(s->perm, p, n * sizeof *p);
    ctx->state = s;
    return OQ_OK;
}

static oq_status transpose_perm(const oq_node_ctx *ctx, int rank, int *perm, oq_error *err) {
    const perm_state *s = ctx->state;
    if (!s->has_perm) { /* default: reverse the axes */
        for (int i = 0; i < rank; i++)
            perm[i] = rank - 1 - i;
        return OQ_OK;
    }
    if (s->n != rank)
        return oq_err(err, OQ_EINVAL, "%s: perm has %d values for an input of rank %d",
                      ctx->label, s->n, rank);
    bool seen[OQ_MAX_RANK] = {false};
    for (int i = 0; i < rank; i++) {
        int64_t p = s->perm[i];
        if (p < 0 || p >= rank || seen[p])
            return oq_err(err, OQ_EINVAL, "%s: perm is not a permutation of 0..%d", ctx->label,
                          rank - 1);
        seen[p] = true;
        perm[i] = (int)p;
    }
    return OQ_OK;
}

oq_status oq_shape_transpose_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                   oq_error *err) {
    oq_status st = need_input0(ctx, in, err);
    size_t es;
    if (st != OQ_OK || (st = oq_shape_elem_size(ctx, in[0], "input", &es, err)) != OQ_OK)
        return st;
    int perm[OQ_MAX_RANK];
    if ((st = transpose_perm(ctx, in[0]->rank, perm, err)) != OQ_OK)
        return st;
    int64_t d[OQ_MAX_RANK];
    for (int i = 0; i < in[0]->rank; i++)
        d[i] = in[0]->dims[perm[i]];
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, d, err);
}

/* A transpose reduced to its essential axes: size-1 axes dropped, input axes
 * that stay adjacent in the output merged. */
typedef struct {
    int rank;
    int64_t odims[OQ_MAX_RANK];  /* output dims */
    size_t istr[OQ_MAX_RANK];    /* input stride (elements) of each output axis */
    size_t es;
    const unsigned char *in;
    unsigned char *out;
    /* tiled case: output axis q reads the input's contiguous axis */
    int q;
    size_t rows, cols;           /* tile problem: rows along input-contiguous axis */
    size_t in_row_stride;        /* input stride of the output's innermost axis */
    size_t out_row_stride;       /* output stride of axis q */
    size_t jblocks;
} tr_job;

static void tr_simplify(const oq_tensor *x, const int *perm, tr_job *j) {
    int r = x->rank;
    int idx[OQ_MAX_RANK], nt = 0;
    for (int i = 0; i < r; i++)
        idx[i] = x->dims[i] == 1 ? -1 : nt++; /* index among non-trivial input axes */
    int64_t tdims[OQ_MAX_RANK];
    for (int i = 0; i < r; i++)
        if (idx[i] >= 0)
            tdims[idx[i]] = x->dims[i];
    /* non-trivial input axes in output order, grouped into runs consecutive in the input */
    int gfirst[OQ_MAX_RANK], ng = 0, last = -2;
    int64_t gdim[OQ_MAX_RANK];
    for (int k = 0; k < r; k++) {
        int a = idx[perm[k]];
        if (a < 0)
            continue;
        if (a == last + 1 && ng > 0) {
            gdim[ng - 1] *= tdims[a];
        } else {
            gfirst[ng] = a;
            gdim[ng] = tdims[a];
            ng++;
        }
        last = a;
    }
    /* input strides of each group: groups ordered by their first input axis */
    size_t istr_by_axis[OQ_MAX_RANK];
    size_t s = 1;
    for (int a = nt - 1; a >= 0; a--) {
        istr_by_axis[a] = s;
        s *= (size_t)tdims[a];
    }
    j->rank = ng;
    for (int g = 0; g < ng; g++) {
        j->odims[g] = gdim[g];
        /* a group's stride is that of its last (innermost) input axis */
        int la = gfirst[g];
        int64_t acc = tdims[la];
        while (acc < gdim[g])
            acc *= tdims[++la];
        j->istr[g] = istr_by_axis[la];
    }
}

/* Copies element runs of the innermost output axis (contiguous in the input). */
static void tr_runs(void *arg, size_t begin, size_t end) {
    const tr_job *j = arg;
    int r = j->rank;
    size_t run = (size_t)j->odims[r - 1] * j->es;
    size_t idx[OQ_MAX_RANK] = {0}, off = 0, rem = begin;
    for (int k = r - 2; k >= 0; k--) {
        idx[k] = rem % (size_t)j->odims[k];
        rem /= (size_t)j->odims[k];
        off += idx[k] * j->istr[k];
    }
    for (size_t o = begin; o < end; o++) {
        unsigned char *dst = j->out + o * run;
        const unsigned char *src = j->in + off * j->es;
        switch (run) { /* short runs: fixed-size copies the compiler inlines */
        case 4: memcpy(dst, src, 4); break;
        case 8: memcpy(dst, src, 8); break;
        case 16: memcpy(dst, src, 16); break;
        default: memcpy(dst, src, run);
        }
        for (int k = r - 2; k >= 0; k--) { /* odometer */
            off += j->istr[k];
            if (++idx[k] < (size_t)j->odims[k])
                break;
            off -= idx[k] * j->istr[k];
            idx[k] = 0;
        }
    }
}

#define TILE 32

/* 2-D transpose of one tile: out[j * ors + i] = in[i * irs + j] for i < ni,
 * j < nj (writes run along i, contiguous in the output). */
#define TR_TILE(T)                                                                          \
    static void tr_tile_##T(const T *restrict in, T *restrict out, size_t ni, size_t nj,     \
                            size_t irs, size_t ors) {                                       \
        for (size_t jj = 0; jj < nj; jj++)                                                  \
            for (size_t ii = 0; ii < ni; ii++)                                              \
                out[jj * ors + ii] = in[ii * irs + jj];                                      \
    }
TR_TILE(uint8_t)
TR_TILE(uint16_t)
TR_TILE(uint32_t)
TR_TILE(uint64_t)

#ifdef __SSE2__
/* 4-byte elements: 4x4 blocks through SSE registers (SSE2 is part of the
 * x86-64 baseline, so no runtime check); edges use the portable loop. */
static void tr_tile_u32_sse(const uint32_t *restrict in, uint32_t *restrict out, size_t ni,
                            size_t nj, size_t irs, size_t ors) {
    size_t ni4 = ni & ~(size_t)3, nj4 = nj & ~(size_t)3;
    for (size_t jj = 0; jj < nj4; jj += 4)
        for (size_t ii = 0; ii < ni4; ii += 4) {
            const uint32_t *s = in + ii * irs + jj;
            __m128 r0 = _mm_loadu_ps((const float *)(const void *)s);
            __m128 r1 = _mm_loadu_ps((const float *)(const void *)(s + irs));
            __m128 r2 = _mm_loadu_ps((const float *)(const void *)(s + 2 * irs));
            __m128 r3 = _mm_loadu_ps((const float *)(const void *)(s + 3 * irs));
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            uint32_t *d = out + jj * ors + ii;
            _mm_storeu_ps((float *)(void *)d, r0);
            _mm_storeu_ps((float *)(void *)(d + ors), r1);
            _mm_storeu_ps((float *)(void *)(d + 2 * ors), r2);
            _mm_storeu_ps((float *)(void *)(d + 3 * ors), r3);
        }
    if (ni4 < ni) /* right columns of the output */
        for (size_t jj = 0; jj < nj4; jj++)
            for (size_t ii = ni4; ii < ni; ii++)
                out[jj * ors + ii] = in[ii * irs + jj];
    if (nj4 < nj) /* bottom rows */
        tr_tile_uint32_t(in + nj4, out + nj4 * ors, ni, nj - nj4, irs, ors);
}
#define TR_TILE_U32 tr_tile_u32_sse
#else
#define TR_TILE_U32 tr_tile_uint32_t
#endif

static void tr_tile_bytes(const unsigned char *in, unsigned char *out, size_t ni, size_t nj,
                          size_t irs, size_t ors, size_t es) {
    for (size_t jj = 0; jj < nj; jj++)
        for (size_t ii = 0; ii < ni; ii++)
            memcpy(out + (jj * ors + ii) * es, in + (ii * irs + jj) * es, es);
}

/* Tasks: (outer index over output axes other than q and the last) x (block
 * of TILE input-contiguous rows). Each writes whole output rows. */
static void tr_tiled(void *arg, size_t begin, size_t end) {
    const tr_job *j = arg;
    int r = j->rank;
    size_t es = j->es, ni = (size_t)j->odims[r - 1];
    for (size_t t = begin; t < end; t++) {
        size_t outer = t / j->jblocks, jb = t % j->jblocks;
        /* offsets of the outer index, in input and output elements */
        size_t rem = outer, ioff = 0, ooff = 0, ostr = ni;
        for (int k = r - 2; k >= 0; k--) {
            size_t d = (size_t)j->odims[k];
            if (k != j->q) {
                size_t i = rem % d;
                rem /= d;
                ioff += i * j->istr[k];
                ooff += i * ostr;
            }
            ostr *= d;
        }
        size_t j0 = jb * TILE, nj = j->rows - j0 < TILE ? j->rows - j0 : TILE;
        for (size_t i0 = 0; i0 < ni; i0 += TILE) {
            size_t nii = ni - i0 < TILE ? ni - i0 : TILE;
            const unsigned char *src = j->in + (ioff + i0 * j->in_row_stride + j0) * es;
            unsigned char *dst = j->out + (ooff + j0 * j->out_row_stride + i0) * es;
            switch (es) {
            case 1: tr_tile_uint8_t((const void *)src, (void *)dst, nii, nj, j->in_row_stride, j->out_row_stride); break;
            case 2: tr_tile_uint16_t((const void *)src, (void *)dst, nii, nj, j->in_row_stride, j->out_row_stride); break;
            case 4: TR_TILE_U32((const void *)src, (void *)dst, nii, nj, j->in_row_stride, j->out_row_stride); break;
            case 8: tr_tile_uint64_t((const void *)src, (void *)dst, nii, nj, j->in_row_stride, j->out_row_stride); break;
            default: tr_tile_bytes(src, dst, nii, nj, j->in_row_stride, j->out_row_stride, es);
            }
        }
    }
}

void oq_shape_transpose_bytes(oq_pool *pool, const oq_tensor *x, const int *perm, void *out,
                              size_t es) {
    if (x->count == 0)
        return;
    tr_job j = {.es = es, .in = x->data, .out = out};
    tr_simplify(x, perm, &j);
    int r = j.rank;
    if (r <= 1 || j.istr[r - 1] == 1) { /* identity or innermost runs stay contiguous */
        if (r <= 1) {
            memcpy(out, x->data, x->count * es);
            return;
        }
        size_t run = (size_t)j.odims[r - 1] * es;
        size_t n = x->count / (size_t)j.odims[r - 1];
        oq_parallel_for(pool, n, run >= 16384 ? 1 : 16384 / run, tr_runs, &j);
        return;
    }
    /* the output axis q holding the input's contiguous axis (stride 1) */
    int q = 0;
    for (int k = 0; k < r; k++)
        if (j.istr[k] == 1)
            q = k;
    j.q = q;
    j.rows = (size_t)j.odims[q];
    j.in_row_stride = j.istr[r - 1];
    size_t os = 1;
    for (int k = r - 1; k > q; k--)
        os *= (size_t)j.odims[k];
    j.out_row_stride = os;
    j.jblocks = (j.rows + TILE - 1) / TILE;
    size_t outer = x->count / (j.rows * (size_t)j.odims[r - 1]);
    size_t task_elems = TILE * (size_t)j.odims[r - 1];
    oq_parallel_for(pool, outer * j.jblocks, task_elems >= 16384 ? 1 : 16384 / task_elems,
                    tr_tiled, &j);
}

oq_status oq_shape_transpose_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                 oq_error *err) {
    int perm[OQ_MAX_RANK];
    oq_status st = transpose_perm(ctx, in[0]->rank, perm, err);
    if (st != OQ_OK)
        return st;
    oq_shape_transpose_bytes(ctx->pool, in[0], perm, out[0].data, oq_dtype_size(in[0]->dtype));
    return OQ_OK;
}

/* ---- Concat -------------------------------------------------------------- */

oq_status oq_shape_concat_prepare(oq_node_ctx *ctx, oq_error *err) {
    /* Concat-1 defaulted axis to 1; from opset 4 it is required. */
    if (ctx->opset >= 4 && !oq_node_attr(ctx->node, "axis"))
        return oq_err(err, OQ_EMODEL, "%s: attribute 'axis' is required", ctx->label);
    return int_state(ctx, "axis", 1, err);
}

static oq_status concat_axis(const oq_node_ctx *ctx, int rank, int *axis, oq_error *err) {
    return oq_norm_axis(ctx, *(const int64_t *)ctx->state, rank, axis, err);
}

oq_status oq_shape_concat_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err) {
    if (ctx->n_inputs < 1)
        return oq_err(err, OQ_EMODEL, "%s: needs at least one input", ctx->label);
    for (int i = 0; i < ctx->n_inputs; i++)
        if (!in[i])
            return oq_err(err, OQ_EMODEL, "%s: input %d is missing", ctx->label, i);
    const oq_tensor *x = in[0];
    size_t es;
    oq_status st = oq_shape_elem_size(ctx, x, "input 0", &es, err);
    if (st != OQ_OK)
        return st;
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: cannot concatenate scalars", ctx->label);
    int axis;
    if ((st = concat_axis(ctx, x->rank, &axis, err)) != OQ_OK)
        return st;
    int64_t d[OQ_MAX_RANK];
    memcpy(d, x->dims, sizeof d);
    for (int i = 1; i < ctx->n_inputs; i++) {
        const oq_tensor *y = in[i];
        if (y->dtype != x->dtype)
            return oq_err(err, OQ_EINVAL, "%s: input %d is %s, input 0 is %s", ctx->label, i,
                          oq_dtype_name(y->dtype), oq_dtype_name(x->dtype));
        if (y->rank != x->rank)
            return oq_err(err, OQ_EINVAL, "%s: input %d has rank %d, input 0 rank %d", ctx->label,
                          i, y->rank, x->rank);
        for (int k = 0; k < x->rank; k++)
            if (k != axis && y->dims[k] != x->dims[k])
                return oq_err(err, OQ_EINVAL, "%s: input %d dim %d is %lld, input 0 has %lld",
                              ctx->label, i, k, (long long)y->dims[k], (long long)x->dims[k]);
        if (!oq_add_i64(d[axis], y->dims[axis], &d[axis]))
            return oq_err(err, OQ_ELIMIT, "%s: concatenated dim overflows", ctx->label);
    }
    size_t count;
    if (!oq_dims_count(d, x->rank, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output element count overflows", ctx->label);
    return oq_out_shape(&out[0], x->dtype, x->rank, d, err);
}

typedef struct {
    const oq_tensor *const *in;
    int n;
    size_t *chunk;    /* bytes input i contributes per outer index */
    size_t row;       /* output bytes per outer index */
    unsigned char *out;
} concat_job;

static void concat_rows(void *arg, size_t begin, size_t end) {
    const concat_job *j = arg;
    for (size_t o = begin; o < end; o++) {
        unsigned char *dst = j->out + o * j->row;
        for (int i = 0; i < j->n; i++) {
            size_t c = j->chunk[i];
            if (c)
                memcpy(dst, (const unsigned char *)j->in[i]->data + o * c, c);
            dst += c;
        }
    }
}

oq_status oq_shape_concat_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err) {
    if (out[0].count == 0)
        return OQ_OK;
    int axis;
    oq_status st = concat_axis(ctx, out[0].rank, &axis, err);
    if (st != OQ_OK)
        return st;
    size_t es = oq_dtype_size(out[0].dtype), outer = 1, inner = es;
    for (int k = 0; k < axis; k++)
        outer *= (size_t)out[0].dims[k];
    for (int k = axis + 1; k < out[0].rank; k++)
        inner *= (size_t)out[0].dims[k];
    size_t stack[16], *chunk = stack;
    if (ctx->n_inputs > 16) {
        size_t bytes;
        if (!oq_mul_size((size_t)ctx->n_inputs, sizeof *chunk, &bytes) || !(chunk = malloc(bytes)))
            return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    }
    concat_job j = {.in = in, .n = ctx->n_inputs, .chunk = chunk, .out = out[0].data};
    for (int i = 0; i < j.n; i++) {
        chunk[i] = (size_t)in[i]->dims[axis] * inner;
        j.row += chunk[i];
    }
    if (outer == 1) { /* one contiguous block per input */
        concat_rows(&j, 0, 1);
    } else {
        oq_parallel_for(ctx->pool, outer, j.row >= 65536 ? 1 : 65536 / j.row, concat_rows, &j);
    }
    if (chunk != stack)
        free(chunk);
    return OQ_OK;
}

/* ---- Split --------------------------------------------------------------- */

typedef struct {
    int64_t axis;
    int64_t num_outputs;     /* Split-18; 0 when absent */
    const int64_t *split;    /* Split-2..12 attribute, borrowed from the node */
    size_t n_split;
    bool has_split_attr;
} split_state;

oq_status oq_shape_split_prepare(oq_node_ctx *ctx, oq_error *err) {
    split_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_ATTR_INT(ctx, "axis", 0, &s->axis, err);
    if (st == OQ_OK && ctx->opset < 13) { /* split became an input in opset 13 */
        st = oq_node_attr_ints(ctx->node, "split", &s->split, &s->n_split, err);
        s->has_split_attr = oq_node_attr(ctx->node, "split") != NULL;
    }
    if (st == OQ_OK && ctx->opset >= 18) { /* num_outputs added in opset 18 */
        st = OQ_ATTR_INT(ctx, "num_outputs", 0, &s->num_outputs, err);
        if (st == OQ_OK && oq_node_attr(ctx->node, "num_outputs") &&
            s->num_outputs != ctx->n_outputs)
            st = oq_err(err, OQ_EMODEL, "%s: num_outputs is %lld but the node has %d outputs",
                        ctx->label, (long long)s->num_outputs, ctx->n_outputs);
    }
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    return OQ_OK;
}

/* Size of output i along the axis; sizes validated by split_infer. */
static int64_t split_size(const oq_node_ctx *ctx, const oq_tensor *const *in, int64_t dim, int i) {
    const split_state *s = ctx->state;
    if (s->has_split_attr)
        return s->split[i];
    if (ctx->opset >= 13 && ctx->n_inputs > 1 && in[1])
        return oq_tensor_get_i64(in[1], (size_t)i);
    int64_t n = ctx->n_outputs;
    if (dim % n == 0)
        return dim / n;
    /* Split-18: uneven splits make every chunk ceil(dim / n), the last smaller */
    int64_t c = dim / n + 1;
    return i < n - 1 ? c : dim - c * (n - 1);
}

oq_status oq_shape_split_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status st = need_input0(ctx, in, err);
    size_t es;
    if (st != OQ_OK || (st = oq_shape_elem_size(ctx, in[0], "input", &es, err)) != OQ_OK)
        return st;
    const split_state *s = ctx->state;
    const oq_tensor *x = in[0];
    int axis;
    if ((st = oq_norm_axis(ctx, s->axis, x->rank, &axis, err)) != OQ_OK)
        return st;
    if (x->rank == 0)
        return oq_err(err, OQ_EINVAL, "%s: cannot split a scalar", ctx->label);
    int n = ctx->n_outputs;
    if (n < 1)
        return oq_err(err, OQ_EMODEL, "%s: has no outputs", ctx->label);
    int64_t dim = x->dims[axis];
    const oq_tensor *sp = ctx->opset >= 13 && ctx->n_inputs > 1 ? in[1] : NULL;
    if (sp) {
        if (sp->dtype != OQ_DTYPE_INT64 || sp->rank > 1)
            return oq_err(err, OQ_EINVAL, "%s: split must be a 1-D int64 tensor", ctx->label);
        if (s->num_outputs)
            return oq_err(err, OQ_EMODEL, "%s: both split and num_outputs are given", ctx->label);
    }
    if (s->has_split_attr || sp) {
        size_t ns = s->has_split_attr ? s->n_split : sp->count;
        if (ns != (size_t)n)
            return oq_err(err, OQ_EINVAL, "%s: split has %zu values for %d outputs", ctx->label, ns,
                          n);
        int64_t sum = 0;
        for (int i = 0; i < n; i++) {
            int64_t v = split_size(ctx, in, dim, i);
            if (v < 0 || !oq_add_i64(sum, v, &sum))
                return oq_err(err, OQ_EINVAL, "%s: split[%d] = %lld is invalid", ctx->label, i,
                              (long long)v);
        }
        if (sum != dim)
            return oq_err(err, OQ_EINVAL, "%s: split sums to %lld, the axis has %lld", ctx->label,
                          (long long)sum, (long long)dim);
    } else if (dim % n != 0) {
        if (ctx->opset < 18)
            return oq_err(err, OQ_EINVAL, "%s: axis of %lld does not split into %d equal parts",
                          ctx->label, (long long)dim, n);
        if (split_size(ctx, in, dim, n - 1) < 0)
            return oq_err(err, OQ_EINVAL, "%s: axis of %lld cannot give %d outputs", ctx->label,
                          (long long)dim, n);
    }
    for (int i = 0; i < n; i++) {
        int64_t d[OQ_MAX_RANK];
        memcpy(d, x->dims, sizeof d);
        d[axis] = split_size(ctx, in, dim, i);
        if ((st = oq_out_shape(&out[i], x->dtype, x->rank, d, err)) != OQ_OK)
            return st;
    }
    return OQ_OK;
}

oq_status oq_shape_split_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    const split_state *s = ctx->state;
    const oq_tensor *x = in[0];
    int axis;
    oq_status st = oq_norm_axis(ctx, s->axis, x->rank, &axis, err);
    if (st != OQ_OK)
        return st;
    size_t es = oq_dtype_size(x->dtype), outer = 1, inner = es;
    for (int k = 0; k < axis; k++)
        outer *= (size_t)x->dims[k];
    for (int k = axis + 1; k < x->rank; k++)
        inner *= (size_t)x->dims[k];
    size_t row = (size_t)x->dims[axis] * inner, off = 0;
    const unsigned char *src = x->data;
    for (int i = 0; i < ctx->n_outputs; i++) {
        size_t c = (size_t)split_size(ctx, in, x->dims[axis], i) * inner;
        unsigned char *dst = out[i].data;
        if (c && dst)
            for (size_t o = 0; o < outer; o++)
                memcpy(dst + o * c, src + o * row + off, c);
        off += c;
    }
    return OQ_OK;
}

/* ---- Slice --------------------------------------------------------------- */

typedef struct {
    /* Slice-1..9 attributes, borrowed from the node */
    const int64_t *starts, *ends, *axes;
    size_t n_starts, n_ends, n_axes;
    bool has_axes;
} slice_state;

oq_status oq_shape_slice_prepare(oq_node_ctx *ctx, oq_error *err) {
    slice_state *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", ctx->label);
    oq_status st = OQ_OK;
    if (ctx->opset < 10) { /* starts/ends/axes became inputs in opset 10 */
        st = oq_node_attr_ints(ctx->node, "starts", &s->starts, &s->n_starts, err);
        if (st == OQ_OK)
            st = oq_node_attr_ints(ctx->node, "ends", &s->ends, &s->n_ends, err);
        if (st == OQ_OK)
            st = oq_node_attr_ints(ctx->node, "axes", &s->axes, &s->n_axes, err);
        s->has_axes = oq_node_attr(ctx->node, "axes") != NULL;
        if (st == OQ_OK && (!oq_node_attr(ctx->node, "starts") || !oq_node_attr(ctx->node, "ends")))
            st = oq_err(err, OQ_EMODEL, "%s: attributes 'starts' and 'ends' are required",
                        ctx->label);
    }
    if (st != OQ_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    return OQ_OK;
}

typedef struct {
    int64_t start[OQ_MAX_RANK], step[OQ_MAX_RANK], dims[OQ_MAX_RANK];
} slice_params;

static oq_status slice_read(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                            int64_t *v, int *n, oq_error *err) {
    return oq_shape_read_ints(ctx, t, what, true, v, OQ_MAX_RANK, n, err);
}

static oq_status slice_compute(const oq_node_ctx *ctx, const oq_tensor *const *in,
                               slice_params *p, oq_error *err) {
    const oq_tensor *x = in[0];
    int r = x->rank;
    int64_t starts[OQ_MAX_RANK], ends[OQ_MAX_RANK], axes[OQ_MAX_RANK], steps[OQ_MAX_RANK];
    int ns, ne, na = -1, nst = -1;
    oq_status st;
    if (ctx->opset < 10) {
        const slice_state *s = ctx->state;
        if (s->n_starts > OQ_MAX_RANK || s->n_ends > OQ_MAX_RANK || s->n_axes > OQ_MAX_RANK)
            return oq_err(err, OQ_EINVAL, "%s: more starts/ends/axes than dims", ctx->label);
        ns = (int)s->n_starts;
        ne = (int)s->n_ends;
        memcpy(starts, s->starts, (size_t)ns * sizeof *starts);
        memcpy(ends, s->ends, (size_t)ne * sizeof *ends);
        if (s->has_axes) {
            na = (int)s->n_axes;
            memcpy(axes, s->axes, (size_t)na * sizeof *axes);
        }
    } else {
        if (ctx->n_inputs < 3 || !in[1] || !in[2])
            return oq_err(err, OQ_EMODEL, "%s: inputs starts and ends are required", ctx->label);
        if ((st = slice_read(ctx, in[1], "starts", starts, &ns, err)) != OQ_OK ||
            (st = slice_read(ctx, in[2], "ends", ends, &ne, err)) != OQ_OK)
            return st;
        if (ctx->n_inputs > 3 && in[3] &&
            (st = slice_read(ctx, in[3], "axes", axes, &na, err)) != OQ_OK)
            return st;
        if (ctx->n_inputs > 4 && in[4] &&
            (st = slice_read(ctx, in[4], "steps", steps, &nst, err)) != OQ_OK)
            return st;
    }
    if (ne != ns || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return oq_err(err, OQ_EINVAL, "%s: starts, ends, axes and steps differ in length",
                      ctx->label);
    if (ns > r)
        return oq_err(err, OQ_EINVAL, "%s: %d starts for an input of rank %d", ctx->label, ns, r);
    int ax[OQ_MAX_RANK];
    if (na < 0) {
        for (int i = 0; i < ns; i++)
            ax[i] = i;
    } else if ((st = oq_shape_norm_axes(ctx, "axes", axes, ns, r, ax, err)) != OQ_OK) {
        return st;
    }
    for (int k = 0; k < r; k++) {
        p->start[k] = 0;
        p->step[k] = 1;
        p->dims[k] = x->dims[k];
    }
    for (int i = 0; i < ns; i++) {
        int k = ax[i];
        int64_t d = x->dims[k], s = starts[i], e = ends[i], step = nst >= 0 ? steps[i] : 1;
        if (step == 0)
            return oq_err(err, OQ_EINVAL, "%s: steps[%d] is 0", ctx->label, i);
        /* Slice-10+: negative starts/ends count from the back, then clamp to
         * [0, d] for positive steps and [0, d-1] / [-1, d-1] for negative. */
        if (s < 0)
            s += d;
        if (e < 0)
            e += d;
        int64_t len;
        if (step > 0) {
            s = s < 0 ? 0 : s > d ? d : s;
            e = e < 0 ? 0 : e > d ? d : e;
            len = e > s ? (e - s - 1) / step + 1 : 0;
        } else {
            s = s < 0 ? 0 : s > d - 1 ? d - 1 : s;
            e = e < -1 ? -1 : e > d - 1 ? d - 1 : e;
            int64_t mag = step < -INT64_MAX ? INT64_MAX : -step;
            len = s > e ? (s - e - 1) / mag + 1 : 0;
        }
        p->start[k] = s;
        p->step[k] = step;
        p->dims[k] = len;
    }
    return OQ_OK;
}

oq_status oq_shape_slice_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err) {
    oq_status st = need_input0(ctx, in, err);
    size_t es;
    if (st != OQ_OK || (st = oq_shape_elem_size(ctx, in[0], "input", &es, err)) != OQ_OK)
        return st;
    slice_params p;
    if ((st = slice_compute(ctx, in, &p, err)) != OQ_OK)
        return st;
    return oq_out_shape(&out[0], in[0]->dtype, in[0]->rank, p.dims, err);
}

typedef struct {
    int rank;
    size_t es;
    const slice_params *p;
    int64_t istr[OQ_MAX_RANK]; /* input strides in elements */
    const unsigned char *in;
    unsigned char *out;
} slice_job;

static void slice_rows(void *arg, size_t begin, size_t end) {
    const slice_job *j = arg;
    const slice_params *p = j->p;
    int r = j->rank;
    size_t es = j->es, n = (size_t)p->dims[r - 1];
    int64_t step = p->step[r - 1], s_last = j->istr[r - 1];
    for (size_t row = begin; row < end; row++) {
        size_t rem = row;
        int64_t off = p->start[r - 1] * s_last;
        for (int k = r - 2; k >= 0; k--) {
            size_t o = rem % (size_t)p->dims[k];
            rem /= (size_t)p->dims[k];
            off += (p->start[k] + (int64_t)o * p->step[k]) * j->istr[k];
        }
        const unsigned char *src = j->in + off * (int64_t)es;
        unsigned char *dst = j->out + row * n * es;
        if (step == 1) {
            memcpy(dst, src, n * es);
        } else if (es == 4) {
            const uint32_t *s = (const void *)src;
            uint32_t *d = (void *)dst;
            for (size_t i = 0; i < n; i++)
                d[i] = s[(int64_t)i * step];
        } else {
            for (size_t i = 0; i < n; i++)
                memcpy(dst + i * es, src + (int64_t)i * step * (int64_t)es, es);
        }
    }
}

oq_status oq_shape_slice_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err) {
    if (out[0].count == 0)
        return OQ_OK;
    slice_params p;
    oq_status st = slice_compute(ctx, in, &p, err);
    if (st != OQ_OK)
        return st;
    const oq_tensor *x = in[0];
    size_t es = oq_dtype_size(x->dtype);
    if (x->rank == 0) {
        memcpy(out[0].data, x->data, es);
        return OQ_OK;
    }
    slice_job j = {.rank = x->rank, .es = es, .p = &p, .in = x->data, .out = out[0].data};
    int64_t s = 1;
    for (int k = x->rank - 1; k >= 0; k--) {
        j.istr[k] = s;
        s *= x->dims[k];
    }
    size_t n = (size_t)p.dims[x->rank - 1], rows = out[0].count / n, rb = n * es;
    oq_parallel_for(ctx->pool, rows, rb >= 65536 ? 1 : 65536 / rb, slice_rows, &j);
    return OQ_OK;
}
