/* exec.c: plans and runs a model on the CPU.
 * Plan: topological order from the graph view, one step per node with its
 * op resolved and prepared, constants decoded, constant subgraphs folded,
 * and for every value the step after which nothing reads it. Run: inputs
 * checked against their declarations, each step infers its output shapes,
 * takes buffers from a pool, runs, shows its outputs to the observer, and
 * returns dead buffers to the pool, so the pool's size after the first run
 * stays fixed however many runs follow. */
#include "exec.h"

#include <cblas.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "graph.h"
#include "op.h"
#include "registry.h"
#include "tensorproto.h"
#include "threadpool.h"

enum { SLOT_EMPTY, SLOT_CONST, SLOT_INPUT, SLOT_ACT, SLOT_OUTER };

/* OpenBLAS (pthread build) starts one worker per core when it loads, and
 * they spin in sched_yield for ~0.1 s before sleeping: a second core busy
 * during every short run (and competing with our pool at 2 threads).
 * Single-threaded calls never use them, so they are joined once. Weak: the
 * symbol is OpenBLAS-internal and absent from other BLAS builds. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static void blas_workers_stop(void) {
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
}

typedef struct {
    oq_tensor t;      /* shape + data; data owned by the slot for CONST, pooled for ACT */
    int kind;
    int last_use;     /* last step reading it; INT_MAX when it is a graph output */
    size_t buf_cap;   /* capacity of the pooled buffer behind t.data */
    int outer_value;  /* OUTER: value index in the parent plan */
    int folded_from;  /* CONST computed at plan time: the producing node, else -1 */
} slot;

typedef struct oq_plan oq_plan;

typedef struct {
    int node;
    const oq_op *op;
    oq_node_ctx ctx;
    int *in;                     /* value index per input slot, -1 for omitted */
    int *out;                    /* value index per output slot, -1 for omitted */
    const oq_tensor **in_ptrs;   /* scratch for a run */
    const oq_tensor **const_in;  /* ctx->const_inputs */
    oq_tensor *outs;             /* scratch output tensors */
    size_t *out_caps;            /* pooled capacity behind outs (omitted outputs) */
    char label[160];
    /* If: the two branch plans */
    oq_plan *then_plan, *else_plan;
    /* Fusion: a producer running the element-wise steps after it */
    oq_post post;           /* their program (post.res set per run) */
    int fused_out;          /* value the group produces, -1 when no group */
    int res_value;          /* the residual step's input value, -1 when none */
    int n_absorbed;
    int absorbed[OQ_POST_MAX_STEPS]; /* step indices of the absorbed nodes */
    int absorbed_by;        /* in an absorbed step: its producer's step, else -1 */
    bool fused_now;         /* the producer ran the group in the current run */
} step;

typedef struct {
    void *buf;
    size_t cap;
} pool_buf;

struct oq_plan {
    oq_model *model;
    oq_graph *graph;       /* owned by the root plan only */
    const oq_graph *view;  /* this plan's graph (a subgraph view for branches) */
    oq_plan *parent;       /* enclosing plan for If branches */
    oq_plan_opts opts;
    oq_pool *pool;         /* shared with branches */
    bool owns_pool;
    slot *slots;           /* one per graph value */
    int n_slots;
    step *steps;
    int n_steps;
    int *inputs;           /* value indices of real inputs */
    int n_inputs;
    int *outputs;          /* value indices of graph outputs */
    int n_outputs;
    pool_buf *free_bufs;   /* buffer pool (shared with branches via root) */
    size_t n_free, cap_free;
    size_t pool_bytes;     /* all pooled bytes, free or in use */
    oq_observer_fn observer; /* of the current run (root plan), for If branches */
    void *observer_ctx;
};

oq_plan_opts oq_plan_opts_default(void) {
    oq_plan_opts o = {0};
    o.fold_constants = true;
    return o;
}

static oq_plan *plan_root(oq_plan *p) {
    while (p->parent)
        p = p->parent;
    return p;
}

/* ---- buffer pool ----------------------------------------------------------- */

/* Returns a buffer of at least n bytes: the smallest free one that is not
 * more than twice too big, else a new 64-byte aligned allocation. */
static void *pool_take(oq_plan *p, size_t n, size_t *cap) {
    oq_plan *r = plan_root(p);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < r->n_free; i++) {
        size_t c = r->free_bufs[i].cap;
        if (c >= n && (c <= 2 * n + 4096) && (best == SIZE_MAX || c < r->free_bufs[best].cap))
            best = i;
    }
    if (best != SIZE_MAX) {
        void *b = r->free_bufs[best].buf;
        *cap = r->free_bufs[best].cap;
        r->free_bufs[best] = r->free_bufs[--r->n_free];
        return b;
    }
    size_t rounded = (n + 63) & ~(size_t)63;
    if (rounded < n)
        return NULL;
    void *b = aligned_alloc(64, rounded ? rounded : 64);
    if (!b)
        return NULL;
    *cap = rounded ? rounded : 64;
    r->pool_bytes += *cap;
    return b;
}

static void pool_give(oq_plan *p, void *buf, size_t cap) {
    if (!buf)
        return;
    oq_plan *r = plan_root(p);
    if (r->n_free == r->cap_free) {
        size_t nc = r->cap_free ? r->cap_free * 2 : 32;
        pool_buf *g = realloc(r->free_bufs, nc * sizeof *g);
        if (!g) { /* cannot keep it: give it back to the system */
            r->pool_bytes -= cap;
            free(buf);
            return;
        }
        r->free_bufs = g;
        r->cap_free = nc;
    }
    r->free_bufs[r->n_free].buf = buf;
    r->free_bufs[r->n_free].cap = cap;
    r->n_free++;
}

size_t oq_plan_pool_bytes(const oq_plan *p) { return p->pool_bytes; }

oq_status oq_plan_each_folded(const oq_plan *p, oq_folded_fn fn, void *ctx, oq_error *err) {
    for (int v = 0; v < p->n_slots; v++) {
        const slot *s = &p->slots[v];
        if (s->kind != SLOT_CONST || s->folded_from < 0)
            continue;
        oq_status st = fn(ctx, oq_graph_value(p->view, v)->name, s->folded_from, &s->t, err);
        if (st != OQ_OK)
            return st;
    }
    return OQ_OK;
}

/* ---- plan ---------------------------------------------------------------- */

static void step_release(step *s) {
    if (s->op && s->op->release && s->ctx.state)
        s->op->release(s->ctx.state);
    free(s->in);
    free(s->out);
    free(s->in_ptrs);
    free(s->const_in);
    free(s->outs);
    free(s->out_caps);
    oq_plan_free(s->then_plan);
    oq_plan_free(s->else_plan);
}

void oq_plan_free(oq_plan *p) {
    if (!p)
        return;
    for (int i = 0; i < p->n_steps; i++)
        step_release(&p->steps[i]);
    free(p->steps);
    for (int i = 0; i < p->n_slots; i++) {
        slot *s = &p->slots[i];
        if (s->kind == SLOT_CONST)
            free(s->t.data);
        else if (s->kind == SLOT_ACT && s->t.data)
            free(s->t.data); /* only after a failed run; normally returned to the pool */
    }
    free(p->slots);
    free(p->inputs);
    free(p->outputs);
    for (size_t i = 0; i < p->n_free; i++)
        free(p->free_bufs[i].buf);
    free(p->free_bufs);
    if (p->owns_pool)
        oq_pool_free(p->pool);
    if (!p->parent)
        oq_graph_free(p->graph);
    free(p);
}

/* Sets count and nbytes from dtype/dims; checks the size limit. */
static oq_status size_tensor(const oq_plan *p, oq_tensor *t, const char *label, oq_error *err) {
    size_t count, nbytes;
    if (!oq_dims_count(t->dims, t->rank, &count))
        return oq_err(err, OQ_ELIMIT, "%s: output shape overflows", label);
    if (t->dtype == OQ_DTYPE_STRING || !oq_dtype_nbytes(t->dtype, count, &nbytes))
        return oq_err(err, OQ_EUNSUPPORTED, "%s: output type %s is not supported", label,
                      oq_dtype_name(t->dtype));
    size_t limit = p->opts.max_tensor_bytes ? p->opts.max_tensor_bytes : (size_t)4 << 30;
    if (nbytes > limit)
        return oq_err(err, OQ_ELIMIT, "%s: output of %zu bytes exceeds the limit of %zu", label,
                      nbytes, limit);
    t->count = count;
    t->nbytes = nbytes;
    return OQ_OK;
}

static oq_status plan_build(oq_plan *p, oq_error *err);

static oq_status plan_branch(oq_plan *parent, const oq_graph *view, oq_plan **out, oq_error *err) {
    oq_plan *b = calloc(1, sizeof *b);
    if (!b)
        return oq_err(err, OQ_ENOMEM, "out of memory planning a subgraph");
    b->model = parent->model;
    b->graph = parent->graph;
    b->view = view;
    b->parent = parent;
    b->opts = parent->opts;
    b->pool = parent->pool;
    oq_status st = plan_build(b, err);
    if (st != OQ_OK) {
        oq_plan_free(b);
        return st;
    }
    *out = b;
    return OQ_OK;
}

/* Executes one step: infer, allocate outputs, run. Used for runs and for
 * folding constants at plan time. */
static oq_status step_exec(oq_plan *p, step *s, oq_error *err);

static oq_status plan_fuse(oq_plan *p, oq_error *err);

static oq_status plan_build(oq_plan *p, oq_error *err) {
    const oq_graph *g = p->view;
    p->n_slots = oq_graph_value_count(g);
    p->slots = calloc((size_t)p->n_slots + 1, sizeof *p->slots);
    if (!p->slots)
        return oq_err(err, OQ_ENOMEM, "out of memory planning %d values", p->n_slots);
    const char *base_dir = oq_model_base_dir(p->model);
    for (int v = 0; v < p->n_slots; v++) {
        const oq_value *val = oq_graph_value(g, v);
        slot *s = &p->slots[v];
        s->last_use = -1;
        s->folded_from = -1;
        if (val->kind == OQ_VALUE_OUTER) {
            s->kind = SLOT_OUTER;
            s->outer_value = val->outer_value;
        } else if (val->tensor && (val->kind == OQ_VALUE_INITIALIZER || val->kind == OQ_VALUE_CONSTANT)) {
            oq_tensor *t;
            oq_status st = oq_tensor_from_proto(val->tensor, base_dir, p->opts.max_tensor_bytes, &t, err);
            if (st != OQ_OK)
                return st;
            s->t = *t;
            s->t.name = NULL;
            t->data = NULL;
            t->owns_data = false;
            oq_tensor_free(t);
            s->kind = SLOT_CONST;
        } else if (val->kind == OQ_VALUE_INITIALIZER) {
            return oq_err(err, OQ_EUNSUPPORTED, "initializer '%s': sparse initializers are not supported",
                          val->name);
        } else if (val->kind == OQ_VALUE_INPUT) {
            s->kind = SLOT_INPUT;
        }
    }

    int n_in, n_out;
    const int *ins = oq_graph_real_inputs(g, &n_in);
    const int *outs = oq_graph_outputs(g, &n_out);
    p->inputs = malloc(((size_t)n_in + 1) * sizeof(int));
    p->outputs = malloc(((size_t)n_out + 1) * sizeof(int));
    if (!p->inputs || !p->outputs)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    if (n_in)
        memcpy(p->inputs, ins, (size_t)n_in * sizeof(int));
    if (n_out)
        memcpy(p->outputs, outs, (size_t)n_out * sizeof(int));
    p->n_inputs = n_in;
    p->n_outputs = n_out;

    int n_topo;
    const int *topo = oq_graph_topo_order(g, &n_topo);
    p->steps = calloc((size_t)n_topo + 1, sizeof *p->steps);
    if (!p->steps)
        return oq_err(err, OQ_ENOMEM, "out of memory planning %d nodes", n_topo);

    for (int k = 0; k < n_topo; k++) {
        int node = topo[k];
        Onnx__NodeProto *np = oq_graph_node(g, node);
        /* Constant nodes whose value the view already decoded need no step. */
        int n_o;
        const int *o_idx = oq_graph_node_outputs(g, node, &n_o);
        if (oq_node_is_onnx_op(np, "Constant") && n_o == 1 && o_idx[0] >= 0 &&
            p->slots[o_idx[0]].kind == SLOT_CONST)
            continue;

        step *s = &p->steps[p->n_steps];
        s->node = node;
        s->fused_out = s->res_value = s->absorbed_by = -1;
        oq_graph_node_label(g, node, s->label, sizeof s->label);
        const char *domain = np->domain ? np->domain : "";
        int opset = (int)oq_graph_opset(g, domain);
        if (opset <= 0)
            return oq_err(err, OQ_EMODEL, "%s: the model imports no opset for domain '%s'", s->label, domain);
        bool known = false;
        bool is_if = oq_node_is_onnx_op(np, "If");
        s->op = is_if ? NULL : oq_registry_find(domain, np->op_type, opset, &known);
        if (!s->op && !is_if) {
            if (known)
                return oq_err(err, OQ_EUNSUPPORTED, "%s: op %s%s%s is not supported at opset %d", s->label,
                              *domain ? domain : "", *domain ? "." : "", np->op_type, opset);
            return oq_err(err, OQ_EUNSUPPORTED, "%s: op %s%s%s (opset %d) is not supported", s->label,
                          *domain ? domain : "", *domain ? "." : "", np->op_type ? np->op_type : "?", opset);
        }
        int n_i;
        const int *i_idx = oq_graph_node_inputs(g, node, &n_i);
        s->ctx.node = np;
        s->ctx.label = s->label;
        s->ctx.opset = opset;
        s->ctx.n_inputs = n_i;
        s->ctx.n_outputs = n_o;
        s->ctx.pool = p->pool;
        size_t ni = (size_t)n_i + 1, no = (size_t)n_o + 1;
        s->in = malloc(ni * sizeof(int));
        s->out = malloc(no * sizeof(int));
        s->in_ptrs = calloc(ni, sizeof *s->in_ptrs);
        s->const_in = calloc(ni, sizeof *s->const_in);
        s->outs = calloc(no, sizeof *s->outs);
        s->out_caps = calloc(no, sizeof *s->out_caps);
        p->n_steps++;
        if (!s->in || !s->out || !s->in_ptrs || !s->const_in || !s->outs || !s->out_caps)
            return oq_err(err, OQ_ENOMEM, "out of memory planning %s", s->label);
        memcpy(s->in, i_idx, (size_t)n_i * sizeof(int));
        memcpy(s->out, o_idx, (size_t)n_o * sizeof(int));
        bool all_const = true;
        for (int i = 0; i < n_i; i++) {
            int v = s->in[i];
            if (v >= 0 && p->slots[v].kind == SLOT_CONST)
                s->const_in[i] = &p->slots[v].t;
            else if (v >= 0)
                all_const = false;
        }
        s->ctx.const_inputs = s->const_in;

        if (is_if) {
            /* then_branch and else_branch are the node's two subgraphs. */
            for (int i = 0; i < oq_graph_subgraph_count(g); i++) {
                const oq_subgraph *sg = oq_graph_subgraph(g, i);
                if (sg->node != node)
                    continue;
                oq_plan **dst = strcmp(sg->attr, "then_branch") == 0   ? &s->then_plan
                                : strcmp(sg->attr, "else_branch") == 0 ? &s->else_plan
                                                                       : NULL;
                if (dst) {
                    oq_status st = plan_branch(p, sg->graph, dst, err);
                    if (st != OQ_OK) {
                        oq_err_prefix(err, "%s: %s: ", s->label, sg->attr);
                        return st;
                    }
                }
            }
            if (!s->then_plan || !s->else_plan)
                return oq_err(err, OQ_EMODEL, "%s: If needs then_branch and else_branch graphs", s->label);
            if (n_i < 1 || s->in[0] < 0)
                return oq_err(err, OQ_EMODEL, "%s: If needs a condition input", s->label);
            all_const = false;
        } else if (s->op->prepare) {
            oq_status st = s->op->prepare(&s->ctx, err);
            if (st != OQ_OK) {
                if (!strstr(err->msg, s->label))
                    oq_err_prefix(err, "%s: ", s->label);
                return st;
            }
        }
        int n_implicit;
        oq_graph_node_implicit_inputs(g, node, &n_implicit);
        if (all_const && n_implicit == 0 && p->opts.fold_constants && n_o > 0) {
            /* Fold: compute once now, keep the outputs as constants. */
            oq_status st = step_exec(p, s, err);
            if (st != OQ_OK)
                return st;
            for (int o = 0; o < n_o; o++) {
                int v = s->out[o];
                oq_tensor *t = &s->outs[o];
                void *data = NULL;
                if (t->nbytes) {
                    data = malloc(t->nbytes);
                    if (!data)
                        return oq_err(err, OQ_ENOMEM, "%s: out of memory folding a constant", s->label);
                    memcpy(data, t->data, t->nbytes);
                }
                pool_give(p, t->data, s->out_caps[o]);
                t->data = NULL;
                if (v < 0) {
                    free(data);
                    continue;
                }
                p->slots[v].t = *t;
                p->slots[v].t.data = data;
                p->slots[v].t.owns_data = true;
                p->slots[v].kind = SLOT_CONST;
                p->slots[v].folded_from = s->node;
            }
            step_release(s);
            memset(s, 0, sizeof *s);
            p->n_steps--;
            continue;
        }
        for (int o = 0; o < n_o; o++)
            if (s->out[o] >= 0)
                p->slots[s->out[o]].kind = SLOT_ACT;
    }

    /* Lifetimes: the last step reading each value (explicitly or from a
     * branch); graph outputs live to the end. */
    for (int k = 0; k < p->n_steps; k++) {
        step *s = &p->steps[k];
        for (int i = 0; i < s->ctx.n_inputs; i++)
            if (s->in[i] >= 0)
                p->slots[s->in[i]].last_use = k;
        int n_implicit;
        const int *imp = oq_graph_node_implicit_inputs(g, s->node, &n_implicit);
        for (int i = 0; i < n_implicit; i++)
            p->slots[imp[i]].last_use = k;
    }
    for (int i = 0; i < p->n_outputs; i++)
        p->slots[p->outputs[i]].last_use = INT_MAX;
    return p->opts.fuse ? plan_fuse(p, err) : OQ_OK;
}

/* ---- fusion ------------------------------------------------------------- */

/* Who reads each value: reader r of value v is (step rd_step[rd_off[v] + r],
 * input slot rd_slot[...]); slot -1 for an If branch reading it implicitly. */
typedef struct {
    int *off, *step, *slot;
    int *producer; /* step producing each value, -1 for inputs and constants */
} readers;

static void readers_free(readers *r) {
    free(r->off);
    free(r->step);
    free(r->slot);
    free(r->producer);
}

static oq_status readers_build(const oq_plan *p, readers *r, oq_error *err) {
    size_t nv = (size_t)p->n_slots + 1;
    r->off = calloc(nv + 1, sizeof(int));
    r->producer = malloc(nv * sizeof(int));
    if (!r->off || !r->producer)
        return oq_err(err, OQ_ENOMEM, "out of memory planning fusion");
    for (int v = 0; v < p->n_slots; v++)
        r->producer[v] = -1;
    int total = 0;
    for (int pass = 0; pass < 2; pass++) {
        int *fill = NULL;
        if (pass == 1) {
            for (int v = 0; v < p->n_slots; v++)
                r->off[v + 1] += r->off[v];
            total = r->off[p->n_slots];
            r->step = malloc(((size_t)total + 1) * sizeof(int));
            r->slot = malloc(((size_t)total + 1) * sizeof(int));
            fill = calloc(nv, sizeof(int));
            if (!r->step || !r->slot || !fill) {
                free(fill);
                return oq_err(err, OQ_ENOMEM, "out of memory planning fusion");
            }
        }
        for (int k = 0; k < p->n_steps; k++) {
            const step *s = &p->steps[k];
            int n_imp;
            const int *imp = oq_graph_node_implicit_inputs(p->view, s->node, &n_imp);
            for (int i = 0; i < s->ctx.n_inputs + n_imp; i++) {
                int v = i < s->ctx.n_inputs ? s->in[i] : imp[i - s->ctx.n_inputs];
                if (v < 0)
                    continue;
                if (pass == 0) {
                    r->off[v + 1]++;
                    continue;
                }
                int at = r->off[v] + fill[v]++;
                r->step[at] = k;
                r->slot[at] = i < s->ctx.n_inputs ? i : -1;
            }
            if (pass == 0)
                for (int o = 0; o < s->ctx.n_outputs; o++)
                    if (s->out[o] >= 0)
                        r->producer[s->out[o]] = k;
        }
        free(fill);
    }
    return OQ_OK;
}

/* The chain of element-wise steps after producer k, starting at reader
 * `first` of its output x; `close`, when >= 0, is a Mul(x, chain) that must
 * end the chain (x then has two readers: HardSwish as Add/Clip/Div/Mul).
 * Fills the producer's group with the longest chain that can be fused and
 * returns whether there is one. */
static bool fuse_walk(oq_plan *p, const readers *r, int k, int first, int first_slot, int close) {
    step *pr = &p->steps[k];
    int x = pr->out[0];
    oq_post prog = {0};
    int absorbed[OQ_POST_MAX_STEPS], n_abs = 0, res = -1, best_len = 0, best_out = -1, best_res = -1;
    oq_post best = {0};
    bool closed = close < 0;
    int c = first, in_slot = first_slot;
    while (n_abs < OQ_POST_MAX_STEPS) {
        step *cs = &p->steps[c];
        if (c <= k || !cs->op || cs->absorbed_by >= 0 || cs->fused_out >= 0 || cs->ctx.n_outputs != 1 ||
            cs->out[0] < 0 || in_slot < 0)
            break;
        oq_post_in in[4];
        int n_in = cs->ctx.n_inputs;
        if (n_in > 4)
            break;
        for (int i = 0; i < n_in; i++) {
            in[i].present = cs->in[i] >= 0;
            in[i].constant = cs->const_in[i];
        }
        oq_post_step st[2];
        int n_st, other;
        oq_post_match m = oq_post_match_node(cs->ctx.node, cs->ctx.opset, in_slot, in, n_in, st, &n_st, &other);
        if (m == OQ_POST_NO || prog.n + n_st > OQ_POST_MAX_STEPS)
            break;
        if (m == OQ_POST_OTHER_IN) {
            int ov = cs->in[other];
            if (st[0].kind == OQ_POST_MUL_X) {
                if (c != close || ov != x)
                    break;
                closed = true;
            } else { /* a residual: one per chain, computed before the producer runs */
                if (res >= 0 || ov == x || c == close || r->producer[ov] >= k)
                    break;
                res = ov;
            }
        } else if (c == close) {
            break;
        }
        for (int i = 0; i < n_st; i++)
            prog.steps[prog.n++] = st[i];
        absorbed[n_abs++] = c;
        int nv = cs->out[0];
        if (closed) {
            best = prog;
            best_len = n_abs;
            best_out = nv;
            best_res = res;
        }
        /* go on while the value has exactly one reader, a step, and is no output */
        if (p->slots[nv].last_use == INT_MAX || r->off[nv + 1] - r->off[nv] != 1)
            break;
        c = r->step[r->off[nv]];
        in_slot = r->slot[r->off[nv]];
    }
    if (best_len == 0)
        return false;
    pr->post = best;
    pr->fused_out = best_out;
    pr->res_value = best_res;
    pr->n_absorbed = best_len;
    for (int i = 0; i < best_len; i++) {
        pr->absorbed[i] = absorbed[i];
        p->steps[absorbed[i]].absorbed_by = k;
    }
    return true;
}

/* Matches, for every producer that accepts a post-op program, the chain
 * of element-wise nodes after it whose intermediates nothing else reads. */
static oq_status plan_fuse(oq_plan *p, oq_error *err) {
    readers r = {0};
    oq_status st = readers_build(p, &r, err);
    for (int k = 0; st == OQ_OK && k < p->n_steps; k++) {
        step *s = &p->steps[k];
        if (!s->op || !s->ctx.accepts_post || s->absorbed_by >= 0 || s->ctx.n_outputs != 1 || s->out[0] < 0)
            continue;
        int x = s->out[0], nr = r.off[x + 1] - r.off[x];
        if (p->slots[x].last_use == INT_MAX)
            continue;
        const int *rs = r.step + r.off[x], *sl = r.slot + r.off[x];
        if (nr == 1)
            fuse_walk(p, &r, k, rs[0], sl[0], -1);
        else if (nr == 2 && rs[0] != rs[1] && !fuse_walk(p, &r, k, rs[0], sl[0], rs[1]))
            fuse_walk(p, &r, k, rs[1], sl[1], rs[0]);
    }
    readers_free(&r);
    return st;
}

int oq_plan_fused_into(const oq_plan *p, int node) {
    for (int k = 0; k < p->n_steps; k++)
        if (p->steps[k].node == node)
            return p->steps[k].absorbed_by >= 0 ? p->steps[p->steps[k].absorbed_by].node : -1;
    return -1;
}

oq_status oq_plan_new(oq_model *m, const oq_plan_opts *opts, oq_plan **out, oq_error *err) {
    *out = NULL;
    oq_plan *p = calloc(1, sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "out of memory creating a plan");
    p->model = m;
    p->opts = opts ? *opts : oq_plan_opts_default();
    oq_status st = oq_graph_new(m, &p->graph, err);
    if (st == OQ_OK) {
        p->view = p->graph;
        st = oq_pool_new(p->opts.threads, &p->pool, err);
        p->owns_pool = st == OQ_OK;
    }
    if (st == OQ_OK) {
        /* OpenBLAS stays single-threaded: kernels split GEMMs over our pool
         * (blas.c), so its spinning threads never compete with ours. */
        openblas_set_num_threads(1);
        blas_workers_stop();
        st = plan_build(p, err);
    }
    if (st != OQ_OK) {
        oq_plan_free(p);
        return st;
    }
    *out = p;
    return OQ_OK;
}

int oq_plan_input_count(const oq_plan *p) { return p->n_inputs; }
int oq_plan_output_count(const oq_plan *p) { return p->n_outputs; }

const char *oq_plan_input_name(const oq_plan *p, int i) {
    return i >= 0 && i < p->n_inputs ? oq_graph_value(p->view, p->inputs[i])->name : NULL;
}

int oq_plan_input_dtype(const oq_plan *p, int i) {
    return i >= 0 && i < p->n_inputs ? oq_value_elem_type(oq_graph_value(p->view, p->inputs[i])) : 0;
}

int64_t oq_plan_input_batch(const oq_plan *p, int i) {
    if (i < 0 || i >= p->n_inputs)
        return -1;
    const oq_value *v = oq_graph_value(p->view, p->inputs[i]);
    if (oq_value_rank(v) < 1)
        return -1;
    oq_dim d = oq_value_dim(v, 0);
    return d.kind == OQ_DIM_VALUE && d.value > 0 ? d.value : -1;
}

const char *oq_plan_output_name(const oq_plan *p, int i) {
    return i >= 0 && i < p->n_outputs ? oq_graph_value(p->view, p->outputs[i])->name : NULL;
}

/* ---- run ------------------------------------------------------------------- */

/* The tensor behind value v, following OUTER values to enclosing plans. */
static const oq_tensor *value_tensor(oq_plan *p, int v) {
    while (p->slots[v].kind == SLOT_OUTER && p->parent) {
        v = p->slots[v].outer_value;
        p = p->parent;
    }
    const slot *s = &p->slots[v];
    if (s->kind == SLOT_CONST || ((s->kind == SLOT_ACT || s->kind == SLOT_INPUT) && s->t.data))
        return &s->t;
    return NULL;
}

static void release_slot(oq_plan *p, slot *s) {
    if (s->kind == SLOT_ACT && s->t.data) {
        pool_give(p, s->t.data, s->buf_cap);
        s->t.data = NULL;
        s->buf_cap = 0;
    }
}

static oq_status run_if(oq_plan *p, step *s, oq_error *err);

/* Points s->in_ptrs at the step's input tensors (NULL for omitted ones). */
static oq_status step_inputs(oq_plan *p, step *s, oq_error *err) {
    for (int i = 0; i < s->ctx.n_inputs; i++) {
        s->in_ptrs[i] = NULL;
        if (s->in[i] < 0)
            continue;
        s->in_ptrs[i] = value_tensor(p, s->in[i]);
        if (!s->in_ptrs[i])
            return oq_err(err, OQ_EINTERNAL, "%s: input %d has no value", s->label, i);
    }
    return OQ_OK;
}

static oq_status step_exec(oq_plan *p, step *s, oq_error *err) {
    oq_status in_st = step_inputs(p, s, err);
    if (in_st != OQ_OK)
        return in_st;
    if (!s->op)
        return run_if(p, s, err);
    for (int o = 0; o < s->ctx.n_outputs; o++)
        memset(&s->outs[o], 0, sizeof s->outs[o]);
    oq_status st = s->op->infer(&s->ctx, s->in_ptrs, s->outs, err);
    for (int o = 0; st == OQ_OK && o < s->ctx.n_outputs; o++) {
        oq_tensor *t = &s->outs[o];
        st = size_tensor(p, t, s->label, err);
        if (st != OQ_OK)
            break;
        t->data = pool_take(p, t->nbytes, &s->out_caps[o]);
        if (!t->data)
            st = oq_err(err, OQ_ENOMEM, "%s: out of memory for a %zu-byte output", s->label, t->nbytes);
    }
    if (st == OQ_OK)
        st = s->op->run(&s->ctx, s->in_ptrs, s->outs, err);
    if (st != OQ_OK) {
        for (int o = 0; o < s->ctx.n_outputs; o++) {
            pool_give(p, s->outs[o].data, s->out_caps[o]);
            s->outs[o].data = NULL;
        }
        if (!strstr(err->msg, s->label))
            oq_err_prefix(err, "%s: ", s->label);
    }
    return st;
}

/* Runs a branch plan with no inputs and copies its outputs into the If
 * node's outputs. */
static oq_status run_branch_into(oq_plan *b, step *s, oq_plan *p, oq_observer_fn obs, void *obs_ctx,
                                 oq_error *err);

static oq_status run_if(oq_plan *p, step *s, oq_error *err) {
    const oq_tensor *cond = s->in_ptrs[0];
    if (cond->count != 1 || (cond->dtype != OQ_DTYPE_BOOL && cond->dtype != OQ_DTYPE_INT64 &&
                             cond->dtype != OQ_DTYPE_INT32 && cond->dtype != OQ_DTYPE_UINT8))
        return oq_err(err, OQ_EINVAL, "%s: If condition must be a single bool", s->label);
    oq_plan *b = oq_tensor_get_i64(cond, 0) ? s->then_plan : s->else_plan;
    oq_plan *root = plan_root(p);
    return run_branch_into(b, s, p, root->observer, root->observer_ctx, err);
}

static oq_status run_steps(oq_plan *p, oq_observer_fn obs, void *obs_ctx, oq_error *err);

static oq_status run_branch_into(oq_plan *b, step *s, oq_plan *p, oq_observer_fn obs, void *obs_ctx,
                                 oq_error *err) {
    if (b->n_outputs != s->ctx.n_outputs)
        return oq_err(err, OQ_EMODEL, "%s: branch has %d outputs, the node %d", s->label, b->n_outputs,
                      s->ctx.n_outputs);
    oq_status st = run_steps(b, obs, obs_ctx, err);
    for (int o = 0; st == OQ_OK && o < s->ctx.n_outputs; o++) {
        const oq_tensor *src = value_tensor(b, b->outputs[o]);
        if (!src) {
            st = oq_err(err, OQ_EINTERNAL, "%s: branch output %d has no value", s->label, o);
            break;
        }
        oq_tensor *t = &s->outs[o];
        memset(t, 0, sizeof *t);
        st = oq_out_shape(t, src->dtype, src->rank, src->dims, err);
        if (st == OQ_OK)
            st = size_tensor(p, t, s->label, err);
        if (st == OQ_OK && !(t->data = pool_take(p, t->nbytes, &s->out_caps[o])))
            st = oq_err(err, OQ_ENOMEM, "%s: out of memory", s->label);
        if (st == OQ_OK && t->nbytes)
            memcpy(t->data, src->data, t->nbytes);
    }
    /* The branch's own values are dead now. */
    for (int v = 0; v < b->n_slots; v++)
        release_slot(b, &b->slots[v]);
    return st;
}

static oq_status observe(oq_plan *p, oq_observer_fn obs, void *obs_ctx, int v, oq_error *err) {
    if (!obs || v < 0)
        return OQ_OK;
    const char *name = oq_graph_value(p->view, v)->name;
    if (!name || !*name)
        return OQ_OK;
    oq_status st = obs(obs_ctx, name, &p->slots[v].t, err);
    if (st != OQ_OK && err && err->code == OQ_OK)
        oq_err(err, st, "observer stopped the run at '%s'", name);
    return st;
}

/* Runs producer s with its fused group when this run's tensors allow it
 * (sets s->fused_now): the group's output is computed straight into the
 * value the last absorbed node would have produced. */
static oq_status run_fused(oq_plan *p, step *s, oq_observer_fn obs, void *obs_ctx, oq_error *err) {
    s->fused_now = false;
    oq_status st = step_inputs(p, s, err);
    if (st != OQ_OK)
        return st;
    oq_tensor *t = &s->outs[0];
    memset(t, 0, sizeof *t);
    st = s->op->infer(&s->ctx, s->in_ptrs, s->outs, err);
    if (st != OQ_OK) {
        if (!strstr(err->msg, s->label))
            oq_err_prefix(err, "%s: ", s->label);
        return st;
    }
    const oq_tensor *res = s->res_value >= 0 ? value_tensor(p, s->res_value) : NULL;
    if (t->dtype != OQ_DTYPE_FLOAT || (s->res_value >= 0 && (!res || res->dtype != OQ_DTYPE_FLOAT ||
                                                              res->rank != t->rank ||
                                                              memcmp(res->dims, t->dims, (size_t)t->rank * sizeof *t->dims))))
        return OQ_OK; /* a broadcast residual, say: the nodes run one by one */
    if ((st = size_tensor(p, t, s->label, err)) != OQ_OK)
        return st;
    if (!(t->data = pool_take(p, t->nbytes, &s->out_caps[0])))
        return oq_err(err, OQ_ENOMEM, "%s: out of memory for a %zu-byte output", s->label, t->nbytes);
    s->post.res = res ? res->data : NULL;
    s->ctx.post = &s->post;
    st = s->op->run(&s->ctx, s->in_ptrs, s->outs, err);
    s->ctx.post = NULL;
    if (st != OQ_OK) {
        pool_give(p, t->data, s->out_caps[0]);
        t->data = NULL;
        if (!strstr(err->msg, s->label))
            oq_err_prefix(err, "%s: ", s->label);
        return st;
    }
    s->fused_now = true;
    slot *sl = &p->slots[s->fused_out];
    release_slot(p, sl);
    sl->t = *t;
    sl->buf_cap = s->out_caps[0];
    t->data = NULL;
    st = observe(p, obs, obs_ctx, s->fused_out, err);
    if (st == OQ_OK && sl->last_use < 0)
        release_slot(p, sl);
    return st;
}

/* Returns the buffers of values whose last reader was step k. */
static void release_after(oq_plan *p, const step *s, int k) {
    for (int i = 0; i < s->ctx.n_inputs; i++) {
        int v = s->in[i];
        if (v >= 0 && p->slots[v].last_use == k)
            release_slot(p, &p->slots[v]);
    }
    int n_implicit;
    const int *imp = oq_graph_node_implicit_inputs(p->view, s->node, &n_implicit);
    for (int i = 0; i < n_implicit; i++)
        if (p->slots[imp[i]].last_use == k)
            release_slot(p, &p->slots[imp[i]]);
}

static oq_status run_steps(oq_plan *p, oq_observer_fn obs, void *obs_ctx, oq_error *err) {
    for (int k = 0; k < p->n_steps; k++) {
        step *s = &p->steps[k];
        if (p->opts.abort_flag && *p->opts.abort_flag)
            return oq_err(err, OQ_ECANCELLED, "run cancelled before %s", s->label);
        if (s->absorbed_by >= 0 && p->steps[s->absorbed_by].fused_now) {
            release_after(p, s, k); /* its producer computed it */
            continue;
        }
        oq_status st;
        if (s->fused_out >= 0) {
            if ((st = run_fused(p, s, obs, obs_ctx, err)) != OQ_OK)
                return st;
            if (s->fused_now) {
                release_after(p, s, k);
                continue;
            }
        }
        st = step_exec(p, s, err);
        if (st != OQ_OK)
            return st;
        for (int o = 0; o < s->ctx.n_outputs; o++) {
            int v = s->out[o];
            if (v < 0) { /* an omitted optional output: drop it at once */
                pool_give(p, s->outs[o].data, s->out_caps[o]);
                s->outs[o].data = NULL;
                continue;
            }
            slot *sl = &p->slots[v];
            release_slot(p, sl);
            sl->t = s->outs[o];
            sl->buf_cap = s->out_caps[o];
            s->outs[o].data = NULL;
            st = observe(p, obs, obs_ctx, v, err);
            if (st != OQ_OK)
                return st;
            if (sl->last_use < 0) /* nothing reads it */
                release_slot(p, sl);
        }
        /* Inputs whose last reader was this step go back to the pool. */
        release_after(p, s, k);
    }
    return OQ_OK;
}

static oq_status check_input(const oq_plan *p, int i, const oq_tensor *t, oq_error *err) {
    const oq_value *v = oq_graph_value(p->view, p->inputs[i]);
    int want = oq_value_elem_type(v);
    if (want && (int)t->dtype != want)
        return oq_err(err, OQ_EINVAL, "input '%s': dtype %s, the model declares %s", v->name,
                      oq_dtype_name(t->dtype), oq_dtype_name(want));
    int rank = oq_value_rank(v);
    if (rank >= 0 && rank != t->rank)
        return oq_err(err, OQ_EINVAL, "input '%s': rank %d, the model declares %d", v->name, t->rank, rank);
    for (int d = 0; rank >= 0 && d < rank; d++) {
        oq_dim dim = oq_value_dim(v, d);
        if (dim.kind == OQ_DIM_VALUE && dim.value != t->dims[d])
            return oq_err(err, OQ_EINVAL, "input '%s': dim %d is %lld, the model declares %lld", v->name, d,
                          (long long)t->dims[d], (long long)dim.value);
    }
    return OQ_OK;
}

static void release_all(oq_plan *p) {
    for (int v = 0; v < p->n_slots; v++) {
        slot *s = &p->slots[v];
        if (s->kind == SLOT_INPUT)
            memset(&s->t, 0, sizeof s->t);
        else
            release_slot(p, s);
    }
}

oq_status oq_plan_run(oq_plan *p, const oq_tensor *const *inputs, int n_inputs, oq_tensor **outputs,
                      oq_observer_fn observer, void *observer_ctx, oq_error *err) {
    for (int i = 0; i < p->n_outputs; i++)
        outputs[i] = NULL;
    if (n_inputs != p->n_inputs)
        return oq_err(err, OQ_EINVAL, "the model takes %d inputs, %d were given", p->n_inputs, n_inputs);
    oq_status st = OQ_OK;
    for (int i = 0; i < n_inputs && st == OQ_OK; i++) {
        if (!inputs[i]) {
            st = oq_err(err, OQ_EINVAL, "input '%s' is missing", oq_plan_input_name(p, i));
            break;
        }
        st = check_input(p, i, inputs[i], err);
        if (st != OQ_OK)
            break;
        slot *s = &p->slots[p->inputs[i]];
        s->t = *inputs[i];
        s->t.owns_data = false;
        s->t.name = NULL;
        st = observe(p, observer, observer_ctx, p->inputs[i], err);
    }
    p->observer = observer;
    p->observer_ctx = observer_ctx;
    if (st == OQ_OK)
        st = run_steps(p, observer, observer_ctx, err);
    for (int o = 0; st == OQ_OK && o < p->n_outputs; o++) {
        const oq_tensor *src = value_tensor(p, p->outputs[o]);
        if (!src) {
            st = oq_err(err, OQ_EINTERNAL, "output '%s' was not computed", oq_plan_output_name(p, o));
            break;
        }
        st = oq_tensor_new(src->dtype, src->rank, src->dims, 0, &outputs[o], err);
        if (st == OQ_OK && src->nbytes)
            memcpy(outputs[o]->data, src->data, src->nbytes);
        if (st == OQ_OK)
            st = oq_tensor_set_name(outputs[o], oq_plan_output_name(p, o), err);
    }
    release_all(p);
    if (st != OQ_OK)
        for (int o = 0; o < p->n_outputs; o++) {
            oq_tensor_free(outputs[o]);
            outputs[o] = NULL;
        }
    return st;
}
