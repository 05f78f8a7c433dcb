/* conformance.c: runs ONNX's backend node tests (model.onnx plus
 * test_data_set_N/{input,output}_K.pb) through the executor and compares
 * outputs with |got - want| <= 1e-4 + 1e-3 * |want| (exact for integers).
 *
 *   conformance [--min-pass N] [--expect FILE] DIR...
 *
 * Prints every failure with its reason and `N passed, M failed` per folder.
 * Exits 1 when a folder passes fewer than --min-pass tests or when a test
 * fails that FILE (lines "folder/test  reason") does not list as expected;
 * tests listed there that now pass are reported so the list stays true.
 * OQ_CONFORMANCE_FILTER=a,b runs only tests whose name contains a or b. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "op.h"
#include "model.h"
#include "tensorproto.h"

#define MAX_IO 32

static bool filtered_out(const char *name) {
    const char *f = getenv("OQ_CONFORMANCE_FILTER");
    if (!f || !*f)
        return false;
    /* Walk the comma-separated list in place: filters may be long. */
    for (const char *p = f; *p;) {
        size_t n = strcspn(p, ",");
        for (const char *h = name; n && *h; h++)
            if (strncmp(h, p, n) == 0)
                return false;
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

static bool is_float_type(oq_dtype t) {
    return t == OQ_DTYPE_FLOAT || t == OQ_DTYPE_DOUBLE || t == OQ_DTYPE_FLOAT16 || t == OQ_DTYPE_BFLOAT16;
}

/* Compares got with want; on mismatch writes a reason into why. */
static bool tensors_match(const oq_tensor *got, const oq_tensor *want, char *why, size_t len) {
    if (got->dtype != want->dtype) {
        snprintf(why, len, "dtype %s, expected %s", oq_dtype_name(got->dtype), oq_dtype_name(want->dtype));
        return false;
    }
    bool same_shape = got->rank == want->rank;
    for (int d = 0; same_shape && d < got->rank; d++)
        same_shape = got->dims[d] == want->dims[d];
    if (!same_shape) {
        char a[128], b[128];
        snprintf(why, len, "shape %s, expected %s", oq_tensor_describe(got, a, sizeof a),
                 oq_tensor_describe(want, b, sizeof b));
        return false;
    }
    for (size_t i = 0; i < want->count; i++) {
        if (is_float_type(want->dtype)) {
            double g = oq_tensor_get_f64(got, i), w = oq_tensor_get_f64(want, i);
            if (isnan(w) && isnan(g))
                continue;
            if (isinf(w) && g == w)
                continue;
            if (!(fabs(g - w) <= 1e-4 + 1e-3 * fabs(w))) {
                snprintf(why, len, "element %zu is %.9g, expected %.9g", i, g, w);
                return false;
            }
        } else if (oq_tensor_get_i64(got, i) != oq_tensor_get_i64(want, i)) {
            snprintf(why, len, "element %zu is %lld, expected %lld", i, (long long)oq_tensor_get_i64(got, i),
                     (long long)oq_tensor_get_i64(want, i));
            return false;
        }
    }
    return true;
}

/* Runs one test folder; returns true when every data set matches. */
static bool run_test(const char *dir, char *why, size_t len) {
    char path[8192];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    oq_error err = {0};
    oq_model *m = NULL;
    oq_plan *plan = NULL;
    bool ok = false;
    if (oq_model_load_file(path, NULL, &m, &err) != OQ_OK ||
        oq_plan_new(m, NULL, &plan, &err) != OQ_OK) {
        snprintf(why, len, "%s: %s", oq_status_name(err.code), err.msg);
        goto done;
    }
    int n_in = oq_plan_input_count(plan), n_out = oq_plan_output_count(plan);
    if (n_in > MAX_IO || n_out > MAX_IO) {
        snprintf(why, len, "too many inputs/outputs");
        goto done;
    }
    int sets = 0;
    for (int set = 0;; set++) {
        snprintf(path, sizeof path, "%s/test_data_set_%d", dir, set);
        if (access(path, F_OK) != 0)
            break;
        sets++;
        oq_tensor *in[MAX_IO] = {0}, *want[MAX_IO] = {0}, *got[MAX_IO] = {0};
        bool set_ok = true;
        for (int i = 0; i < n_in && set_ok; i++) {
            snprintf(path, sizeof path, "%s/test_data_set_%d/input_%d.pb", dir, set, i);
            oq_error e = {0};
            if (oq_tensor_load_pb(path, 0, &in[i], &e) != OQ_OK) {
                snprintf(why, len, "input %d: %s", i, e.msg);
                set_ok = false;
            }
        }
        for (int i = 0; i < n_out && set_ok; i++) {
            snprintf(path, sizeof path, "%s/test_data_set_%d/output_%d.pb", dir, set, i);
            oq_error e = {0};
            if (oq_tensor_load_pb(path, 0, &want[i], &e) != OQ_OK) {
                snprintf(why, len, "expected output %d: %s", i, e.msg);
                set_ok = false;
            }
        }
        if (set_ok) {
            oq_error e = {0};
            if (oq_plan_run(plan, (const oq_tensor *const *)in, n_in, got, NULL, NULL, &e) != OQ_OK) {
                snprintf(why, len, "run: %s: %s", oq_status_name(e.code), e.msg);
                set_ok = false;
            }
        }
        for (int i = 0; i < n_out && set_ok; i++) {
            char reason[256];
            if (!tensors_match(got[i], want[i], reason, sizeof reason)) {
                snprintf(why, len, "set %d output %d: %s", set, i, reason);
                set_ok = false;
            }
        }
        for (int i = 0; i < MAX_IO; i++) {
            oq_tensor_free(in[i]);
            oq_tensor_free(want[i]);
            oq_tensor_free(got[i]);
        }
        if (!set_ok)
            goto done;
    }
    if (sets == 0) {
        snprintf(why, len, "no test data");
        goto done;
    }
    ok = true;
done:
    oq_plan_free(plan);
    oq_model_free(m);
    return ok;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    char **names;
    size_t count;
} name_list;

static bool list_has(const name_list *l, const char *name) {
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->names[i], name) == 0)
            return true;
    return false;
}

/* Reads "folder/test  reason" lines (# comments) into a list of keys. */
static void read_expected(const char *file, name_list *l) {
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "conformance: cannot read %s\n", file);
        exit(2);
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char key[512];
        if (line[0] == '#' || sscanf(line, "%511s", key) != 1)
            continue;
        l->names = realloc(l->names, (l->count + 1) * sizeof *l->names);
        l->names[l->count++] = strdup(key);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    int min_pass = 0;
    const char *expect = NULL;
    name_list expected = {0};
    int status = 0;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--min-pass") == 0 && a + 1 < argc) {
            min_pass = atoi(argv[++a]);
            continue;
        }
        if (strcmp(argv[a], "--expect") == 0 && a + 1 < argc) {
            expect = argv[++a];
            read_expected(expect, &expected);
            continue;
        }
        const char *root = argv[a];
        const char *folder = strrchr(root, '/') ? strrchr(root, '/') + 1 : root;
        DIR *d = opendir(root);
        if (!d) {
            fprintf(stderr, "conformance: cannot open %s\n", root);
            return 2;
        }
        name_list tests = {0};
        for (struct dirent *e; (e = readdir(d));) {
            if (strncmp(e->d_name, "test_", 5) != 0 || filtered_out(e->d_name))
                continue;
            tests.names = realloc(tests.names, (tests.count + 1) * sizeof *tests.names);
            tests.names[tests.count++] = strdup(e->d_name);
        }
        closedir(d);
        if (tests.count)
            qsort(tests.names, tests.count, sizeof *tests.names, cmp_str);
        int passed = 0, failed = 0, unexpected = 0;
        for (size_t i = 0; i < tests.count; i++) {
            char dir[4096], why[1024] = "", key[600];
            snprintf(dir, sizeof dir, "%s/%s", root, tests.names[i]);
            snprintf(key, sizeof key, "%s/%s", folder, tests.names[i]);
            bool listed = list_has(&expected, key);
            if (run_test(dir, why, sizeof why)) {
                passed++;
                if (listed)
                    printf("NOW PASSES (remove from %s): %s\n", expect, key);
            } else {
                failed++;
                printf("%s %s  %s\n", listed || !expect ? "FAIL" : "FAIL (unexpected)", key, why);
                if (expect && !listed)
                    unexpected++;
            }
            free(tests.names[i]);
        }
        free(tests.names);
        printf("%s: %d passed, %d failed\n", folder, passed, failed);
        if (passed < min_pass) {
            printf("%s: fewer than the required %d passed\n", folder, min_pass);
            status = 1;
        }
        if (unexpected) {
            printf("%s: %d unexpected failures\n", folder, unexpected);
            status = 1;
        }
    }
    for (size_t i = 0; i < expected.count; i++)
        free(expected.names[i]);
    free(expected.names);
    return status;
}
