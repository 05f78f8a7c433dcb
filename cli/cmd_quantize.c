/* cmd_quantize.c: `onnxq quantize MODEL -o OUT --calib FILE ...`. Command-line
 * options become config JSON keys, merged over --config, so the CLI and the
 * HTTP API validate settings in one place (quant/config.c). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "model.h"
#include "quantize.h"
#include "tensorfile.h"

static void quantize_usage(FILE *f) {
    fprintf(f,
            "usage: onnxq quantize MODEL -o OUT.onnx --calib FILE [options]\n"
            "\n"
            "Quantizes an FP32 ONNX model to an INT8 QDQ model and reports what it cost.\n"
            "Data files are .npy, .npz or TensorProto .pb; the first axis is the sample axis.\n"
            "\n"
            "  -o, --output FILE         the quantized model (written atomically)\n"
            "  --calib FILE              calibration data (repeat for several inputs)\n"
            "  --eval FILE               evaluation data for the report (default: the calibration data)\n"
            "  --labels FILE             integer class labels of the evaluation rows\n"
            "  --report FILE             write the JSON report here\n"
            "  --config JSON|@FILE       settings as JSON (see README); flags below override it\n"
            "  --mode static|dynamic|weight_only\n"
            "  --method minmax|moving_minmax|percentile|entropy|mse\n"
            "  --percentile P            for --method percentile (default 99.999)\n"
            "  --activation-type T       uint8 (default), int8, int16, uint16\n"
            "  --weight-type T           int8 (default), uint8, int16, int4\n"
            "  --per-tensor              one scale per weight tensor (default: per channel)\n"
            "  --symmetric-activations   activations symmetric around zero\n"
            "  --asymmetric-weights      weights with a zero point\n"
            "  --reduce-range            7-bit weights for CPUs without VNNI\n"
            "  --dedicated-qdq           a QuantizeLinear/DequantizeLinear pair per consumer (TensorRT)\n"
            "  --op-types A,B            op types to quantize (default: all onnxq knows)\n"
            "  --exclude NAME            node name or glob never quantized (repeatable)\n"
            "  --exclude-op-types A,B    op types never quantized\n"
            "  --samples N               calibration samples to use (default: all)\n"
            "  --eval-samples N          evaluation samples to use (default: all)\n"
            "  --threads N               worker threads (default: one per core)\n"
            "  --external-data           store weights in OUT.onnx.data beside the model\n"
            "  -h, --help                this help\n");
}

static json_t *csv_array(const char *s) {
    json_t *a = json_array();
    char *copy = strdup(s);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_string(tok));
    free(copy);
    return a;
}

static json_t *load_config_arg(const char *arg) {
    json_error_t je;
    json_t *j = arg[0] == '@' ? json_load_file(arg + 1, JSON_REJECT_DUPLICATES, &je)
                              : json_loads(arg, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        fprintf(stderr, "onnxq: --config: %s (line %d, column %d)\n", je.text, je.line, je.column);
    return j;
}

static int load_data(const char *path, oq_tensor_list *all) {
    oq_tensor_list l = {0};
    oq_error err = {0};
    if (oq_tensorfile_load(path, NULL, &l, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: %s\n", err.msg);
        return 1;
    }
    oq_tensor **grown = realloc(all->items, (all->count + l.count + 1) * sizeof *grown);
    if (!grown) {
        oq_tensor_list_free(&l);
        fprintf(stderr, "onnxq: out of memory\n");
        return 1;
    }
    all->items = grown;
    memcpy(all->items + all->count, l.items, l.count * sizeof *l.items);
    all->count += l.count;
    free(l.items);
    return 0;
}

static void print_summary(const json_t *rep) {
    const json_t *ev = json_object_get(rep, "evaluation");
    printf("evaluated on %lld %s samples\n", (long long)json_integer_value(json_object_get(ev, "samples")),
           json_string_value(json_object_get(ev, "dataset")));
    size_t i;
    const json_t *o;
    json_array_foreach(json_object_get(ev, "outputs"), i, o) {
        printf("  %s: sqnr %.2f dB, cosine %.6f, max abs error %.4g", json_string_value(json_object_get(o, "name")),
               json_number_value(json_object_get(o, "sqnr_db")), json_number_value(json_object_get(o, "cosine")),
               json_number_value(json_object_get(o, "max_abs_error")));
        if (json_object_get(o, "top1_agreement"))
            printf(", top-1 agreement %.2f%%", 100 * json_number_value(json_object_get(o, "top1_agreement")));
        if (json_object_get(o, "int8_accuracy"))
            printf(", accuracy %.2f%% -> %.2f%%", 100 * json_number_value(json_object_get(o, "fp32_accuracy")),
                   100 * json_number_value(json_object_get(o, "int8_accuracy")));
        printf("\n");
    }
    const json_t *m = json_object_get(rep, "model"), *n = json_object_get(rep, "nodes");
    printf("size %lld -> %lld bytes (%.1f%%), %lld nodes quantized, %lld excluded\n",
           (long long)json_integer_value(json_object_get(m, "size_bytes_fp32")),
           (long long)json_integer_value(json_object_get(m, "size_bytes_int8")),
           100 * json_number_value(json_object_get(m, "size_ratio")),
           (long long)json_integer_value(json_object_get(n, "quantized")),
           (long long)json_integer_value(json_object_get(n, "excluded")));
}

int oq_cmd_quantize(int argc, char **argv) {
    enum {
        O_CALIB = 256, O_EVAL, O_LABELS, O_REPORT, O_CONFIG, O_MODE, O_METHOD, O_PERCENTILE, O_ATYPE, O_WTYPE,
        O_PER_TENSOR, O_SYM_ACT, O_ASYM_W, O_REDUCE, O_DEDICATED, O_OPS, O_EXCLUDE, O_EXCL_OPS, O_SAMPLES,
        O_EVAL_SAMPLES, O_THREADS, O_EXTERNAL
    };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'}, {"calib", required_argument, NULL, O_CALIB},
        {"eval", required_argument, NULL, O_EVAL}, {"labels", required_argument, NULL, O_LABELS},
        {"report", required_argument, NULL, O_REPORT}, {"config", required_argument, NULL, O_CONFIG},
        {"mode", required_argument, NULL, O_MODE}, {"method", required_argument, NULL, O_METHOD},
        {"percentile", required_argument, NULL, O_PERCENTILE},
        {"activation-type", required_argument, NULL, O_ATYPE}, {"weight-type", required_argument, NULL, O_WTYPE},
        {"per-tensor", no_argument, NULL, O_PER_TENSOR}, {"symmetric-activations", no_argument, NULL, O_SYM_ACT},
        {"asymmetric-weights", no_argument, NULL, O_ASYM_W}, {"reduce-range", no_argument, NULL, O_REDUCE},
        {"dedicated-qdq", no_argument, NULL, O_DEDICATED}, {"op-types", required_argument, NULL, O_OPS},
        {"exclude", required_argument, NULL, O_EXCLUDE}, {"exclude-op-types", required_argument, NULL, O_EXCL_OPS},
        {"samples", required_argument, NULL, O_SAMPLES}, {"eval-samples", required_argument, NULL, O_EVAL_SAMPLES},
        {"threads", required_argument, NULL, O_THREADS}, {"external-data", no_argument, NULL, O_EXTERNAL},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out_path = NULL, *eval_path = NULL, *labels_path = NULL, *report_path = NULL;
    const char *calib_paths[64];
    int n_calib_paths = 0, status = 1;
    bool external = false;
    long eval_samples = 0;
    json_t *flags = json_object(), *cfg_json = NULL, *excludes = json_array();
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'o': out_path = optarg; break;
        case O_CALIB:
            if (n_calib_paths == 64) {
                fprintf(stderr, "onnxq: at most 64 --calib files\n");
                goto done;
            }
            calib_paths[n_calib_paths++] = optarg;
            break;
        case O_EVAL: eval_path = optarg; break;
        case O_LABELS: labels_path = optarg; break;
        case O_REPORT: report_path = optarg; break;
        case O_CONFIG:
            json_decref(cfg_json);
            if (!(cfg_json = load_config_arg(optarg))) {
                status = 2;
                goto done;
            }
            break;
        case O_MODE: json_object_set_new(flags, "mode", json_string(optarg)); break;
        case O_METHOD: json_object_set_new(flags, "method", json_string(optarg)); break;
        case O_PERCENTILE: json_object_set_new(flags, "percentile", json_real(atof(optarg))); break;
        case O_ATYPE: json_object_set_new(flags, "activation_type", json_string(optarg)); break;
        case O_WTYPE: json_object_set_new(flags, "weight_type", json_string(optarg)); break;
        case O_PER_TENSOR: json_object_set_new(flags, "per_channel", json_false()); break;
        case O_SYM_ACT: json_object_set_new(flags, "activation_symmetric", json_true()); break;
        case O_ASYM_W: json_object_set_new(flags, "weight_symmetric", json_false()); break;
        case O_REDUCE: json_object_set_new(flags, "reduce_range", json_true()); break;
        case O_DEDICATED: json_object_set_new(flags, "dedicated_qdq_pairs", json_true()); break;
        case O_OPS: json_object_set_new(flags, "op_types", csv_array(optarg)); break;
        case O_EXCLUDE: json_array_append_new(excludes, json_string(optarg)); break;
        case O_EXCL_OPS: json_object_set_new(flags, "exclude_op_types", csv_array(optarg)); break;
        case O_SAMPLES: json_object_set_new(flags, "max_samples", json_integer(atoll(optarg))); break;
        case O_EVAL_SAMPLES: eval_samples = atol(optarg); break;
        case O_THREADS: json_object_set_new(flags, "threads", json_integer(atoll(optarg))); break;
        case O_EXTERNAL: external = true; break;
        case 'h':
            quantize_usage(stdout);
            status = 0;
            goto done;
        default: quantize_usage(stderr); status = 2; goto done;
        }
    }
    if (optind + 1 != argc || !out_path || eval_samples < 0) {
        quantize_usage(stderr);
        status = 2;
        goto done;
    }
    if (json_array_size(excludes))
        json_object_set(flags, "exclude_nodes", excludes);
    if (!cfg_json)
        cfg_json = json_object();
    json_object_update(cfg_json, flags);

    const char *model_path = argv[optind];
    oq_error err = {0};
    oq_quant_config cfg;
    if (oq_quant_config_from_json(cfg_json, &cfg, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: %s\n", err.msg);
        status = 2;
        goto done;
    }
    oq_model *m = NULL, *q = NULL;
    oq_tensor_list calib = {0}, eval = {0}, labels = {0};
    json_t *report = NULL;
    if (oq_model_load_file(model_path, NULL, &m, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: %s\n", err.msg);
        goto cleanup;
    }
    for (int i = 0; i < n_calib_paths; i++)
        if (load_data(calib_paths[i], &calib))
            goto cleanup;
    if (eval_path && load_data(eval_path, &eval))
        goto cleanup;
    if (labels_path && load_data(labels_path, &labels))
        goto cleanup;
    if (labels.count > 1) {
        fprintf(stderr, "onnxq: %s: one labels tensor expected, found %zu\n", labels_path, labels.count);
        goto cleanup;
    }
    oq_quant_inputs in = {
        .calib = (const oq_tensor *const *)calib.items,
        .n_calib = calib.count,
        .eval = (const oq_tensor *const *)eval.items,
        .n_eval = eval.count,
        .labels = labels.count ? labels.items[0] : NULL,
        .max_eval_samples = (size_t)eval_samples,
    };
    if (oq_quantize(m, &cfg, &in, &q, &report, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: %s\n", err.msg);
        goto cleanup;
    }
    char data_name[4096];
    const char *slash = strrchr(out_path, '/');
    snprintf(data_name, sizeof data_name, "%s.data", slash ? slash + 1 : out_path);
    oq_save_opts so = {.external_data = external ? data_name : NULL};
    if (oq_model_save_file(q, out_path, &so, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: %s\n", err.msg);
        goto cleanup;
    }
    if (report_path) {
        char *text = json_dumps(report, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        if (!text || oq_write_file_atomic(report_path, text, strlen(text), &err) != OQ_OK) {
            fprintf(stderr, "onnxq: %s: %s\n", report_path, text ? err.msg : "out of memory");
            free(text);
            goto cleanup;
        }
        free(text);
    }
    print_summary(report);
    printf("wrote %s\n", out_path);
    status = 0;
cleanup:
    json_decref(report);
    oq_tensor_list_free(&calib);
    oq_tensor_list_free(&eval);
    oq_tensor_list_free(&labels);
    oq_model_free(q);
    oq_model_free(m);
    oq_quant_config_free(&cfg);
done:
    json_decref(flags);
    json_decref(excludes);
    json_decref(cfg_json);
    return status;
}
