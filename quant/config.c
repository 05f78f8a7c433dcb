/* config.c: defaults and the JSON form of oq_quant_config. JSON comes from
 * users (the HTTP API), so every key and value is checked and errors name
 * the key. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "checked.h"

oq_quant_config oq_quant_config_default(void) {
    oq_quant_config c;
    memset(&c, 0, sizeof c);
    c.mode = OQ_QMODE_STATIC;
    c.method = OQ_CALIB_PERCENTILE;
    c.percentile = 99.999;
    c.moving_average = 0.01;
    c.num_bins = 2048;
    c.activation_type = OQ_DTYPE_UINT8;
    c.weight_type = OQ_DTYPE_INT8;
    c.activation_symmetric = false;
    c.weight_symmetric = true;
    c.per_channel = true;
    c.min_real_range = 1e-4f;
    return c;
}

static const char *const qmode_names[] = {"static", "dynamic", "weight_only"};
static const char *const method_names[] = {"minmax", "moving_minmax", "percentile", "entropy", "mse"};

const char *oq_qmode_name(oq_qmode m) {
    return (unsigned)m < sizeof qmode_names / sizeof *qmode_names ? qmode_names[m] : "?";
}

const char *oq_calib_method_name(oq_calib_method m) {
    return (unsigned)m < sizeof method_names / sizeof *method_names ? method_names[m] : "?";
}

static void free_strings(char **s, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

void oq_quant_config_free(oq_quant_config *c) {
    if (!c)
        return;
    free_strings(c->op_types, c->n_op_types);
    free_strings(c->exclude_nodes, c->n_exclude_nodes);
    free_strings(c->exclude_op_types, c->n_exclude_op_types);
    for (size_t i = 0; i < c->n_overrides; i++)
        free(c->overrides[i].pattern);
    free(c->overrides);
    c->op_types = c->exclude_nodes = c->exclude_op_types = NULL;
    c->overrides = NULL;
    c->n_op_types = c->n_exclude_nodes = c->n_exclude_op_types = c->n_overrides = 0;
}

static int lookup(const char *const *names, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

static oq_status get_enum(const json_t *v, const char *key, const char *const *names, size_t n,
                          int *out, oq_error *err) {
    int i = json_is_string(v) ? lookup(names, n, json_string_value(v)) : -1;
    if (i < 0) {
        char allowed[256] = "";
        for (size_t k = 0; k < n; k++) {
            strncat(allowed, k ? ", " : "", sizeof allowed - strlen(allowed) - 1);
            strncat(allowed, names[k], sizeof allowed - strlen(allowed) - 1);
        }
        return oq_err(err, OQ_EINVAL, "config.%s must be one of: %s", key, allowed);
    }
    *out = i;
    return OQ_OK;
}

static oq_status get_bool(const json_t *v, const char *key, bool *out, oq_error *err) {
    if (!json_is_boolean(v))
        return oq_err(err, OQ_EINVAL, "config.%s must be true or false", key);
    *out = json_is_true(v);
    return OQ_OK;
}

static oq_status get_number(const json_t *v, const char *key, double lo, double hi, double *out,
                            oq_error *err) {
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return oq_err(err, OQ_EINVAL, "config.%s must be a number in [%g, %g]", key, lo, hi);
    *out = json_number_value(v);
    return OQ_OK;
}

static oq_status get_int(const json_t *v, const char *key, long long lo, long long hi, int *out,
                         oq_error *err) {
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return oq_err(err, OQ_EINVAL, "config.%s must be an integer in [%lld, %lld]", key, lo, hi);
    *out = (int)json_integer_value(v);
    return OQ_OK;
}

static oq_status get_qtype(const json_t *v, const char *key, const oq_dtype *allowed, size_t n,
                           oq_dtype *out, oq_error *err) {
    oq_dtype t = json_is_string(v) ? oq_dtype_from_name(json_string_value(v)) : OQ_DTYPE_UNDEFINED;
    for (size_t i = 0; i < n; i++)
        if (allowed[i] == t) {
            *out = t;
            return OQ_OK;
        }
    char names[128] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(names, i ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, oq_dtype_name(allowed[i]), sizeof names - strlen(names) - 1);
    }
    return oq_err(err, OQ_EINVAL, "config.%s must be one of: %s", key, names);
}

static oq_status get_strings(const json_t *v, const char *key, char ***out, size_t *n, oq_error *err) {
    if (!json_is_array(v))
        return oq_err(err, OQ_EINVAL, "config.%s must be an array of strings", key);
    size_t count = json_array_size(v);
    if (count > 100000)
        return oq_err(err, OQ_ELIMIT, "config.%s has too many entries (%zu)", key, count);
    char **s = calloc(count + 1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || !*json_string_value(e)) {
            free_strings(s, i);
            return oq_err(err, OQ_EINVAL, "config.%s[%zu] must be a non-empty string", key, i);
        }
        if (!(s[i] = strdup(json_string_value(e)))) {
            free_strings(s, i);
            return oq_err(err, OQ_ENOMEM, "out of memory");
        }
    }
    free_strings(*out, *n);
    *out = s;
    *n = count;
    return OQ_OK;
}

static const oq_dtype act_types[] = {OQ_DTYPE_INT8, OQ_DTYPE_UINT8, OQ_DTYPE_INT16, OQ_DTYPE_UINT16};
static const oq_dtype weight_types[] = {OQ_DTYPE_INT8, OQ_DTYPE_UINT8, OQ_DTYPE_INT16, OQ_DTYPE_INT4};

static oq_status get_overrides(const json_t *v, oq_quant_config *c, oq_error *err) {
    if (!json_is_array(v))
        return oq_err(err, OQ_EINVAL, "config.overrides must be an array of objects");
    size_t count = json_array_size(v);
    if (count > 100000)
        return oq_err(err, OQ_ELIMIT, "config.overrides has too many entries (%zu)", count);
    oq_tensor_override *o = calloc(count + 1, sizeof *o);
    if (!o)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    c->overrides = o;
    c->n_overrides = 0;
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(v, i);
        char key[64];
        snprintf(key, sizeof key, "overrides[%zu]", i);
        if (!json_is_object(e))
            return oq_err(err, OQ_EINVAL, "config.%s must be an object", key);
        oq_tensor_override *ov = &o[i];
        ov->symmetric = -1;
        c->n_overrides = i + 1;
        const char *k;
        const json_t *val;
        json_object_foreach((json_t *)e, k, val) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.%s", key, k);
            oq_status st = OQ_OK;
            if (strcmp(k, "tensor") == 0) {
                if (!json_is_string(val) || !*json_string_value(val))
                    return oq_err(err, OQ_EINVAL, "config.%s must be a non-empty string", sub);
                if (!(ov->pattern = strdup(json_string_value(val))))
                    return oq_err(err, OQ_ENOMEM, "out of memory");
            } else if (strcmp(k, "dtype") == 0) {
                st = get_qtype(val, sub, act_types, sizeof act_types / sizeof *act_types, &ov->dtype, err);
            } else if (strcmp(k, "symmetric") == 0) {
                bool b = false;
                st = get_bool(val, sub, &b, err);
                ov->symmetric = b;
            } else if (strcmp(k, "range") == 0) {
                if (!json_is_array(val) || json_array_size(val) != 2 || !json_is_number(json_array_get(val, 0)) ||
                    !json_is_number(json_array_get(val, 1)))
                    return oq_err(err, OQ_EINVAL, "config.%s must be [lo, hi]", sub);
                double lo = json_number_value(json_array_get(val, 0)), hi = json_number_value(json_array_get(val, 1));
                if (!isfinite(lo) || !isfinite(hi) || lo > hi)
                    return oq_err(err, OQ_EINVAL, "config.%s must be finite with lo <= hi", sub);
                ov->has_range = true;
                ov->lo = (float)lo;
                ov->hi = (float)hi;
            } else {
                return oq_err(err, OQ_EINVAL, "config.%s: unknown key (tensor, dtype, symmetric, range)", sub);
            }
            if (st != OQ_OK)
                return st;
        }
        if (!ov->pattern)
            return oq_err(err, OQ_EINVAL, "config.%s needs a \"tensor\" name or pattern", key);
    }
    return OQ_OK;
}

oq_status oq_quant_config_from_json(const json_t *j, oq_quant_config *out, oq_error *err) {
    *out = oq_quant_config_default();
    if (!j)
        return OQ_OK;
    if (!json_is_object(j))
        return oq_err(err, OQ_EINVAL, "config must be a JSON object");
    const char *key;
    const json_t *v;
    oq_status st = OQ_OK;
    json_object_foreach((json_t *)j, key, v) {
        int i = 0;
        double d = 0;
        if (strcmp(key, "mode") == 0) {
            if ((st = get_enum(v, key, qmode_names, 3, &i, err)) == OQ_OK)
                out->mode = (oq_qmode)i;
        } else if (strcmp(key, "method") == 0) {
            if ((st = get_enum(v, key, method_names, 5, &i, err)) == OQ_OK)
                out->method = (oq_calib_method)i;
        } else if (strcmp(key, "percentile") == 0) {
            if ((st = get_number(v, key, 50, 100, &d, err)) == OQ_OK)
                out->percentile = d;
        } else if (strcmp(key, "moving_average") == 0) {
            if ((st = get_number(v, key, 1e-6, 1, &d, err)) == OQ_OK)
                out->moving_average = d;
        } else if (strcmp(key, "num_bins") == 0) {
            st = get_int(v, key, 128, 65536, &out->num_bins, err);
        } else if (strcmp(key, "max_samples") == 0) {
            st = get_int(v, key, 0, 1000000000, &out->max_samples, err);
        } else if (strcmp(key, "threads") == 0) {
            st = get_int(v, key, 0, 256, &out->threads, err);
        } else if (strcmp(key, "activation_type") == 0) {
            st = get_qtype(v, key, act_types, sizeof act_types / sizeof *act_types, &out->activation_type, err);
        } else if (strcmp(key, "weight_type") == 0) {
            st = get_qtype(v, key, weight_types, sizeof weight_types / sizeof *weight_types, &out->weight_type, err);
        } else if (strcmp(key, "activation_symmetric") == 0) {
            st = get_bool(v, key, &out->activation_symmetric, err);
        } else if (strcmp(key, "weight_symmetric") == 0) {
            st = get_bool(v, key, &out->weight_symmetric, err);
        } else if (strcmp(key, "per_channel") == 0) {
            st = get_bool(v, key, &out->per_channel, err);
        } else if (strcmp(key, "reduce_range") == 0) {
            st = get_bool(v, key, &out->reduce_range, err);
        } else if (strcmp(key, "dedicated_qdq_pairs") == 0) {
            st = get_bool(v, key, &out->dedicated_qdq_pairs, err);
        } else if (strcmp(key, "min_real_range") == 0) {
            if ((st = get_number(v, key, 0, 1e6, &d, err)) == OQ_OK)
                out->min_real_range = (float)d;
        } else if (strcmp(key, "op_types") == 0) {
            st = get_strings(v, key, &out->op_types, &out->n_op_types, err);
        } else if (strcmp(key, "exclude_nodes") == 0) {
            st = get_strings(v, key, &out->exclude_nodes, &out->n_exclude_nodes, err);
        } else if (strcmp(key, "exclude_op_types") == 0) {
            st = get_strings(v, key, &out->exclude_op_types, &out->n_exclude_op_types, err);
        } else if (strcmp(key, "overrides") == 0) {
            st = get_overrides(v, out, err);
        } else {
            st = oq_err(err, OQ_EINVAL, "config.%s: unknown key", key);
        }
        if (st != OQ_OK) {
            oq_quant_config_free(out);
            return st;
        }
    }
    return OQ_OK;
}

static json_t *strings_json(char **s, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(s[i]));
    return a;
}

json_t *oq_quant_config_to_json(const oq_quant_config *c) {
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string(oq_qmode_name(c->mode)));
    json_object_set_new(j, "method", json_string(oq_calib_method_name(c->method)));
    json_object_set_new(j, "percentile", json_real(c->percentile));
    json_object_set_new(j, "moving_average", json_real(c->moving_average));
    json_object_set_new(j, "num_bins", json_integer(c->num_bins));
    json_object_set_new(j, "max_samples", json_integer(c->max_samples));
    json_object_set_new(j, "activation_type", json_string(oq_dtype_name(c->activation_type)));
    json_object_set_new(j, "weight_type", json_string(oq_dtype_name(c->weight_type)));
    json_object_set_new(j, "activation_symmetric", json_boolean(c->activation_symmetric));
    json_object_set_new(j, "weight_symmetric", json_boolean(c->weight_symmetric));
    json_object_set_new(j, "per_channel", json_boolean(c->per_channel));
    json_object_set_new(j, "reduce_range", json_boolean(c->reduce_range));
    json_object_set_new(j, "dedicated_qdq_pairs", json_boolean(c->dedicated_qdq_pairs));
    json_object_set_new(j, "min_real_range", json_real(c->min_real_range));
    json_object_set_new(j, "op_types", strings_json(c->op_types, c->n_op_types));
    json_object_set_new(j, "exclude_nodes", strings_json(c->exclude_nodes, c->n_exclude_nodes));
    json_object_set_new(j, "exclude_op_types", strings_json(c->exclude_op_types, c->n_exclude_op_types));
    json_t *ov = json_array();
    for (size_t i = 0; i < c->n_overrides; i++) {
        const oq_tensor_override *o = &c->overrides[i];
        json_t *e = json_object();
        json_object_set_new(e, "tensor", json_string(o->pattern));
        if (o->dtype)
            json_object_set_new(e, "dtype", json_string(oq_dtype_name(o->dtype)));
        if (o->symmetric >= 0)
            json_object_set_new(e, "symmetric", json_boolean(o->symmetric));
        if (o->has_range)
            json_object_set_new(e, "range", json_pack("[ff]", (double)o->lo, (double)o->hi));
        json_array_append_new(ov, e);
    }
    json_object_set_new(j, "overrides", ov);
    json_object_set_new(j, "threads", json_integer(c->threads));
    return j;
}
