/* constfold.c: constant folding by reusing the executor, which already
 * evaluates constant subgraphs once when it builds a plan. */
#include "constfold.h"

#include <stdlib.h>
#include <string.h>

#include "edit.h"
#include "exec.h"
#include "graph.h"

/* Outputs larger than this are kept only when no bigger than the node's
 * constant inputs together. */
#define SMALL_FOLD_BYTES ((size_t)64 << 10)

typedef struct {
    char *name;
    int node;
    oq_tensor *t;
} folded_value;

typedef struct {
    folded_value *v;
    size_t n, cap;
} folded_set;

static oq_status collect(void *ctx, const char *name, int node, const oq_tensor *t, oq_error *err) {
    folded_set *fs = ctx;
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 32;
        folded_value *g = realloc(fs->v, cap * sizeof *g);
        if (!g)
            return oq_err(err, OQ_ENOMEM, "out of memory folding constants");
        fs->v = g;
        fs->cap = cap;
    }
    folded_value *f = &fs->v[fs->n];
    f->node = node;
    f->name = strdup(name);
    oq_status st = f->name ? oq_tensor_new(t->dtype, t->rank, t->dims, 0, &f->t, err)
                           : oq_err(err, OQ_ENOMEM, "out of memory folding constants");
    if (st != OQ_OK) {
        free(f->name);
        return st;
    }
    if (t->nbytes)
        memcpy(f->t->data, t->data, t->nbytes);
    fs->n++;
    return OQ_OK;
}

static const folded_value *find_folded(const folded_set *fs, const char *name) {
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->v[i].name, name) == 0)
            return &fs->v[i];
    return NULL;
}

/* Bytes of a constant input: an initializer's data or a folded value. */
static size_t constant_bytes(const oq_graph *g, const folded_set *fs, int value) {
    const oq_value *v = oq_graph_value(g, value);
    const folded_value *f = find_folded(fs, v->name);
    if (f)
        return f->t->nbytes;
    if (v->tensor)
        return v->tensor->raw_data.len + v->tensor->n_float_data * 4 + v->tensor->n_int64_data * 8 +
               v->tensor->n_int32_data * 4 + v->tensor->n_double_data * 8;
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

oq_status oq_fold_constant_nodes(oq_model *m, int *folded_count, oq_error *err) {
    if (folded_count)
        *folded_count = 0;
    oq_plan_opts po = oq_plan_opts_default();
    po.threads = 1;
    oq_plan *plan = NULL;
    oq_graph *g = NULL;
    folded_set fs = {0};
    int *remove = NULL;
    size_t n_remove = 0;
    oq_status st = oq_plan_new(m, &po, &plan, err);
    if (st == OQ_OK)
        st = oq_plan_each_folded(plan, collect, &fs, err);
    oq_plan_free(plan);
    if (st == OQ_OK)
        st = oq_graph_new(m, &g, err);
    if (st == OQ_OK && fs.n) {
        remove = calloc(fs.n, sizeof *remove);
        if (!remove)
            st = oq_err(err, OQ_ENOMEM, "out of memory folding constants");
    }
    /* Pick the nodes: every output folded, none a graph output, not a blow-up. */
    Onnx__GraphProto *gp = g ? oq_graph_proto(g) : NULL;
    for (size_t i = 0; st == OQ_OK && i < fs.n; i++) {
        int node = fs.v[i].node;
        bool seen = false;
        for (size_t k = 0; k < n_remove; k++)
            seen |= remove[k] == node;
        if (seen)
            continue;
        int n_out, n_in;
        const int *outs = oq_graph_node_outputs(g, node, &n_out);
        const int *ins = oq_graph_node_inputs(g, node, &n_in);
        bool ok = true;
        size_t out_bytes = 0, in_bytes = 0;
        for (int o = 0; o < n_out && ok; o++) {
            if (outs[o] < 0)
                continue;
            const oq_value *v = oq_graph_value(g, outs[o]);
            const folded_value *f = find_folded(&fs, v->name);
            ok = f && v->graph_output < 0;
            if (f)
                out_bytes += f->t->nbytes;
        }
        for (int k = 0; k < n_in; k++)
            if (ins[k] >= 0)
                in_bytes += constant_bytes(g, &fs, ins[k]);
        if (!ok || (out_bytes > SMALL_FOLD_BYTES && out_bytes > in_bytes))
            continue;
        remove[n_remove++] = node;
    }
    /* Add the initializers, then remove the nodes from the back. */
    for (size_t i = 0; st == OQ_OK && i < fs.n; i++) {
        bool chosen = false;
        for (size_t k = 0; k < n_remove; k++)
            chosen |= remove[k] == fs.v[i].node;
        if (chosen)
            st = oq_edit_add_initializer(m, gp, fs.v[i].name, fs.v[i].t, err);
    }
    if (n_remove)
        qsort(remove, n_remove, sizeof *remove, cmp_desc);
    for (size_t k = 0; st == OQ_OK && k < n_remove; k++)
        st = oq_edit_remove_node(m, gp, (size_t)remove[k], err);
    /* Initializers nothing reads any more are dead weight in the file. */
    if (st == OQ_OK && n_remove)
        st = oq_graph_refresh(g, err);
    for (int v = 0; st == OQ_OK && n_remove && v < oq_graph_value_count(g); v++) {
        const oq_value *val = oq_graph_value(g, v);
        if (val->kind == OQ_VALUE_INITIALIZER && val->n_consumers == 0 && val->graph_output < 0 &&
            val->initializer >= 0) {
            char *name = strdup(val->name);
            st = name ? oq_edit_remove_initializer(m, gp, name, err) : oq_err(err, OQ_ENOMEM, "out of memory");
            free(name);
            if (st == OQ_OK)
                st = oq_graph_refresh(g, err);
            v = -1; /* the view was rebuilt: rescan */
        }
    }
    if (st == OQ_OK && n_remove) {
        st = oq_edit_sort_nodes(m, g, err);
        if (folded_count)
            *folded_count = (int)n_remove;
    }
    for (size_t i = 0; i < fs.n; i++) {
        free(fs.v[i].name);
        oq_tensor_free(fs.v[i].t);
    }
    free(fs.v);
    free(remove);
    oq_graph_free(g);
    return st;
}
