/* cmd_inspect.c: `onnxq inspect MODEL [--json]`. Loads a model, builds the
 * summary of onnx/inspect.h and prints it as a readable report or as JSON.
 * The text report is rendered from the JSON, so both always agree. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inspect.h"
#include "model.h"
#include "status.h"

#define NAME_COL_MAX 32 /* widest name column before names overflow it */
#define WRAP_COL 100

static void usage(FILE *f) {
    fputs("usage: onnxq inspect [--json] MODEL\n"
          "\n"
          "Describes an ONNX model for quantization: IR version, opset imports, producer,\n"
          "inputs and outputs, nodes by op type, parameters by dtype, the nodes onnxq can\n"
          "quantize, and warnings (old opset, already quantized, unknown domains, ...).\n"
          "\n"
          "options:\n"
          "  --json      print the summary as JSON (schema in onnx/inspect.h)\n"
          "  -h, --help  show this help\n",
          f);
}

/* Writes s with control characters shown as '?': names come from the
 * model, and must not move the cursor or split a line. */
static void put_clean(FILE *f, const char *s) {
    for (; s && *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

/* One line on stderr: "onnxq: <path>: <message>". Loader messages already
 * start with the path; it is not repeated. */
static void print_error(const char *path, const oq_error *err) {
    const char *msg = err->msg[0] ? err->msg : oq_status_desc(err->code);
    size_t n = strlen(path);
    fputs("onnxq: ", stderr);
    if (!(strncmp(msg, path, n) == 0 && msg[n] == ':')) {
        put_clean(stderr, path);
        fputs(": ", stderr);
    }
    put_clean(stderr, msg);
    fputc('\n', stderr);
}

static const char *jstr_or(json_t *o, const char *key, const char *dflt) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static long long jint_of(json_t *o, const char *key) {
    return (long long)json_integer_value(json_object_get(o, key));
}

/* "12.3 KiB" for readers; exact byte counts are printed beside it. */
static const char *human_bytes(long long bytes, char *buf, size_t len) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%lld B", bytes);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

/* "float[1,1,28,28]", "float[N,?]", "float[?rank]", "sequence". */
static void print_type(json_t *vi) {
    const char *type = jstr_or(vi, "type", "unknown");
    if (strcmp(type, "tensor") != 0 && strcmp(type, "sparse_tensor") != 0) {
        fputs(type, stdout);
        return;
    }
    if (strcmp(type, "sparse_tensor") == 0)
        fputs("sparse ", stdout);
    fputs(jstr_or(vi, "dtype", "?"), stdout);
    json_t *shape = json_object_get(vi, "shape");
    if (!json_is_array(shape)) {
        fputs("[rank unknown]", stdout);
        return;
    }
    fputc('[', stdout);
    size_t i;
    json_t *d;
    json_array_foreach(shape, i, d) {
        if (i)
            fputc(',', stdout);
        if (json_is_integer(d))
            printf("%lld", (long long)json_integer_value(d));
        else if (json_is_string(d))
            put_clean(stdout, json_string_value(d));
        else
            fputc('?', stdout);
    }
    fputc(']', stdout);
}

static void print_values(const char *title, json_t *list) {
    size_t i, width = 0;
    json_t *vi;
    printf("%s (%zu):\n", title, json_array_size(list));
    json_array_foreach(list, i, vi) {
        size_t n = strlen(jstr_or(vi, "name", ""));
        if (n > width)
            width = n;
    }
    if (width > NAME_COL_MAX)
        width = NAME_COL_MAX;
    json_array_foreach(list, i, vi) {
        const char *name = jstr_or(vi, "name", "");
        fputs("  ", stdout);
        put_clean(stdout, name);
        for (size_t n = strlen(name); n < width + 2; n++)
            fputc(' ', stdout);
        print_type(vi);
        fputc('\n', stdout);
    }
}

/* Names after a label, comma separated, wrapped under the first name. */
static void print_wrapped(const char *label, const char *const *names, size_t n) {
    int col = printf("      %s", label);
    int indent = col;
    for (size_t i = 0; i < n; i++) {
        int len = (int)strlen(names[i]) + (i + 1 < n ? 1 : 0);
        if (i > 0 && col + 1 + len > WRAP_COL) {
            printf("\n%*s", indent, "");
            col = indent;
        } else if (i > 0) {
            fputc(' ', stdout);
            col++;
        }
        put_clean(stdout, names[i]);
        if (i + 1 < n)
            fputc(',', stdout);
        col += len;
    }
    fputc('\n', stdout);
}

static void print_counts(json_t *counts) {
    const char *key;
    json_t *v;
    size_t width = 0;
    json_object_foreach(counts, key, v) {
        if (strlen(key) > width)
            width = strlen(key);
    }
    if (width > NAME_COL_MAX)
        width = NAME_COL_MAX;
    json_object_foreach(counts, key, v) {
        fputs("  ", stdout);
        put_clean(stdout, key);
        for (size_t n = strlen(key); n < width + 2; n++)
            fputc(' ', stdout);
        printf("%lld\n", (long long)json_integer_value(v));
    }
}

enum { W_ALL, W_CONSTANT, W_FOLDABLE, W_DYNAMIC };

/* The weight class of a quantizable node entry (W_ALL when not weighted). */
static int weight_class(json_t *e) {
    json_t *cw = json_object_get(e, "constant_weight");
    if (!json_is_boolean(cw))
        return W_ALL;
    if (json_is_true(cw))
        return W_CONSTANT;
    return json_is_true(json_object_get(e, "foldable_weight")) ? W_FOLDABLE : W_DYNAMIC;
}

/* Node labels of one quantizable op type with the given weight class;
 * "#12" for an unnamed node at graph.node[12]. */
static bool print_quant_nodes(json_t *nodes, const char *label, int filter) {
    size_t count = json_array_size(nodes), n = 0, i;
    const char **names = calloc(count ? count : 1, sizeof *names);
    char (*idx)[24] = calloc(count ? count : 1, sizeof *idx);
    if (!names || !idx) {
        free(names);
        free(idx);
        return false;
    }
    json_t *e;
    json_array_foreach(nodes, i, e) {
        if (filter != W_ALL && weight_class(e) != filter)
            continue;
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name) {
            snprintf(idx[n], sizeof idx[n], "#%lld", jint_of(e, "index"));
            name = idx[n];
        }
        names[n++] = name;
    }
    if (n)
        print_wrapped(label, names, n);
    free(names);
    free(idx);
    return true;
}

static bool print_text(const char *path, json_t *s) {
    char hb[32];
    fputs("model:       ", stdout);
    put_clean(stdout, path);
    json_t *ir = json_object_get(s, "ir_version");
    if (json_is_integer(ir))
        printf("\nir_version:  %lld\n", (long long)json_integer_value(ir));
    else
        fputs("\nir_version:  (not set)\n", stdout);
    const char *pname = jstr_or(s, "producer_name", ""), *pver = jstr_or(s, "producer_version", "");
    fputs("producer:    ", stdout);
    put_clean(stdout, *pname || *pver ? pname : "(not set)");
    if (*pver) {
        fputc(' ', stdout);
        put_clean(stdout, pver);
    }
    fputs("\ngraph:       ", stdout);
    put_clean(stdout, jstr_or(s, "graph_name", ""));
    fputs("\nopsets:      ", stdout);
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach(json_object_get(s, "opset_imports"), key, v) {
        printf("%s", first ? "" : ", ");
        put_clean(stdout, key);
        printf(" %lld", (long long)json_integer_value(v));
        first = false;
    }
    fputs(first ? "(none)\n\n" : "\n\n", stdout);

    print_values("inputs", json_object_get(s, "inputs"));
    print_values("outputs", json_object_get(s, "outputs"));
    json_t *init_inputs = json_object_get(s, "initializer_inputs");
    if (json_array_size(init_inputs))
        printf("initializers also listed as graph inputs: %zu (counted as weights, not inputs)\n",
               json_array_size(init_inputs));

    json_t *nodes = json_object_get(s, "nodes");
    printf("\nnodes (%lld):\n", jint_of(nodes, "count"));
    print_counts(json_object_get(nodes, "by_op_type"));
    if (jint_of(nodes, "subgraph_count") > 0) {
        printf("nodes in subgraphs (%lld):\n", jint_of(nodes, "subgraph_count"));
        print_counts(json_object_get(nodes, "subgraph_by_op_type"));
    }
    if (jint_of(nodes, "local_functions") > 0)
        printf("model-local functions: %lld\n", jint_of(nodes, "local_functions"));

    json_t *p = json_object_get(s, "parameters");
    printf("\nparameters: %lld values, %lld bytes (%s) in %lld tensors "
           "(%lld initializers, %lld Constant nodes",
           jint_of(p, "count"), jint_of(p, "bytes"), human_bytes(jint_of(p, "bytes"), hb, sizeof hb),
           jint_of(p, "tensors"), jint_of(p, "initializers"), jint_of(p, "constant_nodes"));
    if (jint_of(p, "external_tensors"))
        printf(", %lld external", jint_of(p, "external_tensors"));
    fputs(")\n", stdout);
    json_object_foreach(json_object_get(p, "by_dtype"), key, v) {
        printf("  %-10s %12lld values %12lld bytes %8lld tensors\n", key, jint_of(v, "count"),
               jint_of(v, "bytes"), jint_of(v, "tensors"));
    }

    json_t *q = json_object_get(s, "quantizable");
    printf("\nquantizable nodes (%lld", jint_of(q, "count"));
    if (jint_of(q, "skipped_constant") || jint_of(q, "skipped_non_float"))
        printf("; not counted: %lld computing constants, %lld on integer/bool data",
               jint_of(q, "skipped_constant"), jint_of(q, "skipped_non_float"));
    fputs("):\n", stdout);
    json_object_foreach(json_object_get(q, "by_op_type"), key, v) {
        json_t *list = json_object_get(v, "nodes");
        const char *kind = jstr_or(v, "kind", "");
        printf("  %-18s %5lld  %s -> %s", key, jint_of(v, "count"), kind,
               jstr_or(v, "integer_form", ""));
        bool ok;
        if (json_is_integer(json_object_get(v, "constant_weight_count"))) {
            printf(", %lld with constant weight", jint_of(v, "constant_weight_count"));
            long long folded = jint_of(v, "foldable_weight_count") - jint_of(v, "constant_weight_count");
            if (folded > 0)
                printf(", %lld folding to one", folded);
            fputc('\n', stdout);
            ok = print_quant_nodes(list, "constant weight: ", W_CONSTANT) &&
                 print_quant_nodes(list, "folds to const:  ", W_FOLDABLE) &&
                 print_quant_nodes(list, "dynamic weight:  ", W_DYNAMIC);
        } else {
            fputc('\n', stdout);
            ok = print_quant_nodes(list, "", W_ALL);
        }
        if (!ok)
            return false;
    }

    json_t *w = json_object_get(s, "warnings");
    size_t i;
    printf("\nwarnings (%zu):\n", json_array_size(w));
    json_array_foreach(w, i, v) {
        fputs("  - ", stdout);
        put_clean(stdout, jstr_or(v, "message", ""));
        fputs(" [", stdout);
        put_clean(stdout, jstr_or(v, "code", ""));
        fputs("]\n", stdout);
    }
    return true;
}

int oq_cmd_inspect(int argc, char **argv) {
    bool as_json = false, options_done = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                options_done = true;
            } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                usage(stdout);
                return 0;
            } else if (strcmp(a, "--json") == 0) {
                as_json = true;
            } else {
                fprintf(stderr, "onnxq: inspect: unknown option '%s' (see 'onnxq inspect --help')\n", a);
                return 2;
            }
            continue;
        }
        if (path) {
            fprintf(stderr, "onnxq: inspect: one model at a time ('%s' and '%s' given)\n", path, a);
            return 2;
        }
        path = a;
    }
    if (!path) {
        fputs("onnxq: inspect: no model given\n", stderr);
        usage(stderr);
        return 2;
    }

    oq_error err = {0};
    oq_model *m = NULL;
    json_t *summary = NULL;
    oq_load_opts opts = {0}; /* defaults: 2 GiB, depth 96, model's folder */
    oq_status st = oq_model_load_file(path, &opts, &m, &err);
    if (st == OQ_OK)
        st = oq_inspect_model(m, &summary, &err);
    oq_model_free(m); /* the summary holds copies, not pointers into m */
    if (st != OQ_OK) {
        print_error(path, &err);
        return 1;
    }

    bool ok = true;
    if (as_json) {
        char *text = json_dumps(summary, JSON_INDENT(2));
        if (!text)
            oq_err(&err, OQ_ENOMEM, "out of memory formatting the JSON report");
        ok = text && fputs(text, stdout) >= 0 && fputc('\n', stdout) != EOF;
        free(text);
    } else if (!(ok = print_text(path, summary))) {
        oq_err(&err, OQ_ENOMEM, "out of memory formatting the report");
    }
    json_decref(summary);
    if (fflush(stdout) != 0 || ferror(stdout))
        ok = false;
    if (!ok) {
        oq_err(&err, OQ_EIO, "cannot write the report to stdout"); /* first error wins */
        print_error(path, &err);
        return 1;
    }
    return 0;
}
