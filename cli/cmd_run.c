/* cmd_run.c: `onnxq run MODEL INPUT... [-o DIR] [--time N] [--threads N]`:
 * runs a model on tensor files and writes each output as DIR/<name>.npy. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <time.h>

#include "cli.h"
#include "exec.h"
#include "model.h"
#include "graph.h"
#include "prepare.h"
#include "tensorfile.h"

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: onnxq run MODEL INPUT... [-o DIR] [--time N] [--threads N] [--no-fold]\n"
            "                 [--no-fuse] [--profile]\n"
            "\n"
            "Runs MODEL on the tensors in the INPUT files (.npy, .npz or TensorProto .pb).\n"
            "Tensors whose names match model inputs feed those inputs; the rest feed the\n"
            "remaining inputs in order.\n"
            "\n"
            "  -o, --output DIR   write each output to DIR/<output name>.npy\n"
            "  --time N           run N times and print the median and minimum latency\n"
            "  --threads N        worker threads (default: one per core)\n"
            "  --profile          with --time: mean time per operator type over the runs\n"
            "                     after the first, then the slowest nodes\n"
            "  --no-fold          run the graph as stored (by default a BatchNormalization\n"
            "                     after a Conv with constant weights is folded into it, as\n"
            "                     runtimes do; outputs agree to float rounding)\n"
            "  --no-fuse          run every node on its own (by default element-wise nodes\n"
            "                     after a Conv, such as Relu, a residual Add or HardSwish,\n"
            "                     run inside it when nothing else reads the intermediates)\n"
            "  -h, --help         this help\n");
}

static int fail(const char *what, const oq_error *err) {
    fprintf(stderr, "onnxq: %s: %s\n", what, err->msg);
    return 1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Output names may hold '/', ':' and the like: keep a file-name-safe form. */
static void safe_name(const char *name, char *out, size_t len) {
    size_t i = 0;
    for (; name[i] && i + 1 < len; i++) {
        char c = name[i];
        out[i] = (c == '/' || c == '\\' || c == ':' || c == ' ' || (i == 0 && c == '.')) ? '_' : c;
    }
    out[i] = '\0';
    if (i == 0)
        snprintf(out, len, "output");
}

/* --profile: the executor shows every tensor to the observer as soon as
 * its node ran, so the time between two observer calls is the node that
 * produced the second tensor (plus the executor's bookkeeping for it). */
typedef struct {
    const oq_graph *g;
    const oq_plan *plan; /* fused nodes' time goes to the node that ran them */
    double last;
    double *by_node; /* ms summed over runs */
} profile_ctx;

static oq_status profile_observe(void *ctx, const char *name, const oq_tensor *t, oq_error *err) {
    (void)t;
    (void)err;
    profile_ctx *pc = ctx;
    double now = now_ms();
    const oq_value *v = oq_graph_value_by_name(pc->g, name);
    if (v && v->producer >= 0) {
        int head = oq_plan_fused_into(pc->plan, v->producer);
        pc->by_node[head >= 0 ? head : v->producer] += now - pc->last;
    }
    pc->last = now;
    return OQ_OK;
}

#define PROFILE_TOP_NODES 15

#define PROFILE_OP_LEN 64

/* Node i's op type, or for a node that ran others fused into it the chain
 * ("Conv+Add+Relu"); "" for the nodes fused away. */
static void profile_op_labels(const oq_graph *g, const oq_plan *plan, char (*lab)[PROFILE_OP_LEN], int n) {
    for (int i = 0; i < n; i++) {
        const Onnx__NodeProto *node = oq_graph_node(g, i);
        snprintf(lab[i], PROFILE_OP_LEN, "%s", node && node->op_type ? node->op_type : "?");
    }
    for (int i = 0; i < n; i++) { /* node order is topological: chains append in order */
        int head = oq_plan_fused_into(plan, i);
        if (head < 0)
            continue;
        size_t len = strlen(lab[head]);
        if (len + 1 < PROFILE_OP_LEN) {
            lab[head][len] = '+';
            snprintf(lab[head] + len + 1, PROFILE_OP_LEN - len - 1, "%s",
                     oq_graph_node(g, i)->op_type ? oq_graph_node(g, i)->op_type : "?");
        }
        lab[i][0] = '\0';
    }
}

/* Prints time per op type, largest first, then the slowest nodes. */
static void profile_print(const oq_graph *g, const oq_plan *plan, const double *by_node, int runs,
                          double total_ms) {
    int n = oq_graph_node_count(g);
    const char **ops = calloc((size_t)n + 1, sizeof *ops);
    double *ms = calloc((size_t)n + 1, sizeof *ms);
    int *count = calloc((size_t)n + 1, sizeof *count);
    char (*lab)[PROFILE_OP_LEN] = calloc((size_t)n + 1, sizeof *lab);
    int n_ops = 0;
    if (!ops || !ms || !count || !lab)
        goto done;
    profile_op_labels(g, plan, lab, n);
    for (int i = 0; i < n; i++) {
        const char *op = lab[i];
        if (!*op)
            continue;
        int k = 0;
        while (k < n_ops && strcmp(ops[k], op) != 0)
            k++;
        if (k == n_ops)
            ops[n_ops++] = op;
        ms[k] += by_node[i] / runs;
        count[k]++;
    }
    printf("%-24s %6s %10s %7s\n", "op", "nodes", "ms/run", "share");
    for (int shown = 0; shown < n_ops; shown++) {
        int best = -1;
        for (int k = 0; k < n_ops; k++)
            if (count[k] >= 0 && (best < 0 || ms[k] > ms[best]))
                best = k;
        printf("%-24s %6d %10.3f %6.1f%%\n", ops[best], count[best], ms[best],
               total_ms > 0 ? 100.0 * ms[best] / total_ms : 0.0);
        count[best] = -1;
    }
    /* The slowest nodes, to tell which of many same-type nodes cost most
     * (count is reused as a "shown" mark). */
    for (int i = 0; i < n; i++)
        count[i] = 0;
    printf("\n%-52s %10s %7s\n", "slowest nodes", "ms/run", "share");
    for (int shown = 0; shown < PROFILE_TOP_NODES && shown < n; shown++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!count[i] && (best < 0 || by_node[i] > by_node[best]))
                best = i;
        if (best < 0 || by_node[best] <= 0)
            break;
        count[best] = 1;
        char label[160];
        oq_graph_node_label(g, best, label, sizeof label);
        if (strcmp(lab[best], oq_graph_node(g, best)->op_type ? oq_graph_node(g, best)->op_type : "?") != 0) {
            size_t len = strlen(label); /* "node 'x' (Conv)" -> "node 'x' (Conv+Relu)" */
            if (len > 0 && label[len - 1] == ')') {
                char *open = strrchr(label, '(');
                if (open)
                    snprintf(open, sizeof label - (size_t)(open - label), "(%s)", lab[best]);
            }
        }
        printf("%-52.52s %10.3f %6.1f%%\n", label, by_node[best] / runs,
               total_ms > 0 ? 100.0 * by_node[best] / runs / total_ms : 0.0);
    }
done:
    free(lab);
    free(ops);
    free(ms);
    free(count);
}

int oq_cmd_run(int argc, char **argv) {
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'}, {"time", required_argument, NULL, 't'},
        {"threads", required_argument, NULL, 'j'}, {"no-fold", no_argument, NULL, 'f'},
        {"no-fuse", no_argument, NULL, 'u'},       {"profile", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *out_dir = NULL;
    int time_runs = 0, threads = 0;
    bool fold = true, fuse = true, profile = false;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'o': out_dir = optarg; break;
        case 't': time_runs = atoi(optarg); break;
        case 'j': threads = atoi(optarg); break;
        case 'f': fold = false; break;
        case 'u': fuse = false; break;
        case 'p': profile = true; break;
        case 'h': run_usage(stdout); return 0;
        default: run_usage(stderr); return 2;
        }
    }
    if (optind >= argc || time_runs < 0 || threads < 0) {
        run_usage(stderr);
        return 2;
    }
    const char *model_path = argv[optind++];
    oq_error err = {0};
    oq_model *m = NULL;
    oq_plan *plan = NULL;
    oq_tensor_list files[64];
    int n_files = 0, status = 1;
    oq_tensor **outputs = NULL;
    const oq_tensor **feeds = NULL;
    double *times = NULL;
    oq_graph *prof_graph = NULL;
    profile_ctx prof = {NULL, NULL, 0.0, NULL};
    double prof_ms = 0;

    if (oq_model_load_file(model_path, NULL, &m, &err) != OQ_OK)
        return fail(model_path, &err);
    if (fold) {
        /* the quantizer's own, tested rewrite (quant/prepare.c); Constant
         * nodes become initializers first so their weights count as constant */
        int moved = 0, folded = 0;
        if (oq_constants_to_initializers(m, &moved, &err) != OQ_OK || oq_fold_batchnorm(m, &folded, &err) != OQ_OK) {
            fail(model_path, &err);
            goto done;
        }
        if (folded > 0 && time_runs > 0)
            fprintf(stderr, "onnxq: folded %d BatchNormalization into Conv (--no-fold keeps them)\n", folded);
    }
    oq_plan_opts po = oq_plan_opts_default();
    po.threads = threads;
    po.fuse = fuse; /* only the outputs are kept: intermediates may be fused away */
    if (oq_plan_new(m, &po, &plan, &err) != OQ_OK) {
        fail(model_path, &err);
        goto done;
    }
    int n_in = oq_plan_input_count(plan), n_out = oq_plan_output_count(plan);
    feeds = calloc((size_t)n_in + 1, sizeof *feeds);
    outputs = calloc((size_t)n_out + 1, sizeof *outputs);
    if (!feeds || !outputs) {
        fprintf(stderr, "onnxq: out of memory\n");
        goto done;
    }
    /* Gather tensors: by name first, then by position. */
    for (; optind < argc; optind++) {
        if (n_files == 64) {
            fprintf(stderr, "onnxq: at most 64 input files\n");
            goto done;
        }
        memset(&files[n_files], 0, sizeof files[n_files]);
        if (oq_tensorfile_load(argv[optind], NULL, &files[n_files], &err) != OQ_OK) {
            fail(argv[optind], &err);
            goto done;
        }
        n_files++;
    }
    int next_free = 0;
    for (int f = 0; f < n_files; f++)
        for (size_t k = 0; k < files[f].count; k++) {
            const oq_tensor *t = files[f].items[k];
            int slot = -1;
            for (int i = 0; i < n_in && slot < 0; i++)
                if (t->name && strcmp(t->name, oq_plan_input_name(plan, i)) == 0 && !feeds[i])
                    slot = i;
            while (slot < 0 && next_free < n_in && feeds[next_free])
                next_free++;
            if (slot < 0 && next_free < n_in)
                slot = next_free;
            if (slot < 0) {
                fprintf(stderr, "onnxq: more input tensors than the model's %d inputs\n", n_in);
                goto done;
            }
            feeds[slot] = t;
        }
    for (int i = 0; i < n_in; i++)
        if (!feeds[i]) {
            fprintf(stderr, "onnxq: no tensor given for input '%s'\n", oq_plan_input_name(plan, i));
            goto done;
        }

    int runs = time_runs > 0 ? time_runs : 1;
    times = calloc((size_t)runs, sizeof *times);
    if (!times)
        goto done;
    if (profile && time_runs > 0) {
        if (oq_graph_new(m, &prof_graph, &err) != OQ_OK) {
            fail(model_path, &err);
            goto done;
        }
        prof.g = prof_graph;
        prof.plan = plan;
        prof.by_node = calloc((size_t)oq_graph_node_count(prof_graph) + 1, sizeof *prof.by_node);
        if (!prof.by_node)
            goto done;
    }
    for (int r = 0; r < runs; r++) {
        for (int o = 0; o < n_out; o++) {
            oq_tensor_free(outputs[o]);
            outputs[o] = NULL;
        }
        if (prof.g && r == 1) /* the first run (buffers being allocated) is not profiled */
            memset(prof.by_node, 0, (size_t)oq_graph_node_count(prof.g) * sizeof *prof.by_node);
        double t0 = now_ms();
        prof.last = t0;
        if (oq_plan_run(plan, feeds, n_in, outputs, prof.g ? profile_observe : NULL, &prof, &err) != OQ_OK) {
            fail(model_path, &err);
            goto done;
        }
        times[r] = now_ms() - t0;
        if (r > 0 || runs == 1)
            prof_ms += times[r];
    }
    if (time_runs > 0) {
        qsort(times, (size_t)runs, sizeof *times, cmp_double);
        printf("latency over %d runs: median %.3f ms, min %.3f ms\n", runs, times[runs / 2], times[0]);
        if (prof.g) {
            int profiled = runs > 1 ? runs - 1 : 1;
            profile_print(prof.g, plan, prof.by_node, profiled, prof_ms / profiled);
        }
    }
    for (int o = 0; o < n_out; o++) {
        char desc[256];
        printf("%s: %s\n", oq_plan_output_name(plan, o), oq_tensor_describe(outputs[o], desc, sizeof desc));
        if (!out_dir)
            continue;
        if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "onnxq: %s: %s\n", out_dir, strerror(errno));
            goto done;
        }
        char name[256], path[4096];
        safe_name(oq_plan_output_name(plan, o), name, sizeof name);
        snprintf(path, sizeof path, "%s/%s.npy", out_dir, name);
        if (oq_npy_save(path, outputs[o], &err) != OQ_OK) {
            fail(path, &err);
            goto done;
        }
    }
    status = 0;
done:
    if (outputs)
        for (int o = 0; plan && o < oq_plan_output_count(plan); o++)
            oq_tensor_free(outputs[o]);
    free(outputs);
    free(feeds);
    free(times);
    free(prof.by_node);
    oq_graph_free(prof_graph);
    for (int f = 0; f < n_files; f++)
        oq_tensor_list_free(&files[f]);
    oq_plan_free(plan);
    oq_model_free(m);
    return status;
}
