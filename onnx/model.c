/* model.c: loading (mmap + wire check + budgeted unpack), saving (inline or
 * with an external data file, written atomically) and tensor traversal. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "checked.h"
#include "tensorproto.h"
#include "wirecheck.h"

struct oq_model {
    oq_budget_alloc alloc; /* first: its address is the allocator's data */
    Onnx__ModelProto *proto;
    char *base_dir;
};

Onnx__ModelProto *oq_model_proto(oq_model *m) { return m->proto; }
ProtobufCAllocator *oq_model_allocator(oq_model *m) { return &m->alloc.base; }
const char *oq_model_base_dir(const oq_model *m) { return m->base_dir; }
size_t oq_model_memory_used(const oq_model *m) { return m->alloc.used; }

void oq_model_free(oq_model *m) {
    if (!m)
        return;
    if (m->proto)
        onnx__model_proto__free_unpacked(m->proto, &m->alloc.base);
    free(m->base_dir);
    free(m);
}

static oq_status model_alloc(size_t budget, const char *base_dir, oq_model **out, oq_error *err) {
    oq_model *m = calloc(1, sizeof *m);
    if (!m)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    oq_budget_alloc_init(&m->alloc, budget);
    if (base_dir && !(m->base_dir = strdup(base_dir))) {
        free(m);
        return oq_err(err, OQ_ENOMEM, "out of memory");
    }
    *out = m;
    return OQ_OK;
}

oq_status oq_model_new(oq_model **out, oq_error *err) {
    oq_model *m = NULL;
    oq_status st = model_alloc(0, NULL, &m, err);
    if (st != OQ_OK)
        return st;
    ProtobufCAllocator *a = &m->alloc.base;
    m->proto = oq_pb_alloc(a, sizeof *m->proto);
    Onnx__GraphProto *g = oq_pb_alloc(a, sizeof *g);
    if (!m->proto || !g) {
        oq_pb_free(a, g);
        oq_model_free(m);
        return oq_err(err, OQ_ENOMEM, "out of memory");
    }
    onnx__model_proto__init(m->proto);
    onnx__graph_proto__init(g);
    m->proto->graph = g;
    m->proto->has_ir_version = 1;
    m->proto->ir_version = 10;
    *out = m;
    return OQ_OK;
}

static oq_status check_tensor(Onnx__TensorProto *tp, void *ctx, oq_error *err) {
    const oq_model *m = ctx;
    return oq_tensor_proto_check(tp, m->base_dir, err);
}

/* What every later stage relies on: a graph, an opset, and tensors whose
 * data agrees with their dims (so nothing downstream trusts a bad size). */
static oq_status check_model(oq_model *m, oq_error *err) {
    const Onnx__ModelProto *p = m->proto;
    if (!p->graph)
        return oq_err(err, OQ_EMODEL, "model has no graph (is this an ONNX model?)");
    if (p->n_opset_import == 0)
        return oq_err(err, OQ_EMODEL, "model has no opset_import (ONNX requires at least one)");
    return oq_model_for_each_tensor(m, check_tensor, m, err);
}

static oq_status load_bytes(const uint8_t *data, size_t len, const oq_load_opts *opts,
                            const char *base_dir, oq_model **out, oq_error *err) {
    *out = NULL;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : OQ_MODEL_DEFAULT_MAX_BYTES;
    int max_depth = opts && opts->max_depth > 0 ? opts->max_depth : OQ_MODEL_DEFAULT_MAX_DEPTH;
    if (len > max_bytes)
        return oq_err(err, OQ_ELIMIT, "model is %zu bytes, the limit is %zu", len, max_bytes);
    if (len == 0)
        return oq_err(err, OQ_EMODEL, "model is empty (0 bytes)");

    size_t needed = 0;
    oq_status st = oq_wire_check(&onnx__model_proto__descriptor, data, len, max_depth, "model",
                                 &needed, err);
    if (st != OQ_OK)
        return st;

    /* Unpacked, a real model takes about its file size (tensor bytes are
     * copied once); typed int64 data up to 8x. Inputs made of millions of
     * tiny messages take far more and are refused before any allocation. */
    size_t budget = opts && opts->max_memory ? opts->max_memory : 0;
    if (!budget && (!oq_mul_size(len, 8, &budget) || !oq_add_size(budget, (size_t)64 << 20, &budget)))
        budget = SIZE_MAX;
    if (needed > budget)
        return oq_err(err, OQ_ELIMIT,
                      "model needs about %zu bytes to unpack, over its memory budget of %zu bytes", needed,
                      budget);
    oq_model *m = NULL;
    st = model_alloc(budget, base_dir, &m, err);
    if (st != OQ_OK)
        return st;
    m->proto = onnx__model_proto__unpack(&m->alloc.base, len, data);
    if (!m->proto) {
        bool over = m->alloc.exceeded;
        oq_model_free(m);
        if (over)
            return oq_err(err, OQ_ELIMIT, "model needs more than its memory budget of %zu bytes to unpack", budget);
        return oq_err(err, OQ_EMODEL, "model: protobuf decoding failed");
    }
    st = check_model(m, err);
    if (st != OQ_OK) {
        oq_model_free(m);
        return st;
    }
    *out = m;
    return OQ_OK;
}

oq_status oq_model_load_buffer(const void *data, size_t len, const oq_load_opts *opts,
                               oq_model **out, oq_error *err) {
    return load_bytes(data, len, opts, opts ? opts->base_dir : NULL, out, err);
}

oq_status oq_model_load_file(const char *path, const oq_load_opts *opts, oq_model **out,
                             oq_error *err) {
    *out = NULL;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : OQ_MODEL_DEFAULT_MAX_BYTES;
    /* O_NONBLOCK: a FIFO must not block us before the regular-file check. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return oq_err(err, errno == ENOENT ? OQ_ENOTFOUND : OQ_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return oq_err(err, OQ_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return oq_err(err, OQ_ELIMIT, "%s: model is %lld bytes, the limit is %zu", path,
                      (long long)sb.st_size, max_bytes);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return oq_err(err, OQ_EIO, "%s: mmap: %s", path, strerror(errno));
        }
    }
    close(fd);

    char base_buf[PATH_MAX];
    const char *base_dir = opts && opts->base_dir ? opts->base_dir : NULL;
    if (!base_dir) {
        snprintf(base_buf, sizeof base_buf, "%s", path);
        base_dir = dirname(base_buf);
    }
    oq_status st = load_bytes(map, len, opts, base_dir, out, err);
    if (map)
        munmap(map, len);
    if (st != OQ_OK)
        oq_err_prefix(err, "%s: ", path);
    return st;
}

/* ---- traversal ---------------------------------------------------------- */

typedef struct {
    oq_tensor_proto_fn fn;
    void *ctx;
    oq_error *err;
} tensor_walk;

static oq_status walk_graph(tensor_walk *w, Onnx__GraphProto *g);

static oq_status walk_sparse(tensor_walk *w, Onnx__SparseTensorProto *sp) {
    oq_status st = OQ_OK;
    if (sp && sp->values)
        st = w->fn(sp->values, w->ctx, w->err);
    if (st == OQ_OK && sp && sp->indices)
        st = w->fn(sp->indices, w->ctx, w->err);
    return st;
}

static oq_status walk_nodes(tensor_walk *w, Onnx__NodeProto **nodes, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < nodes[i]->n_attribute; j++) {
            Onnx__AttributeProto *at = nodes[i]->attribute[j];
            oq_status st = OQ_OK;
            if (at->t)
                st = w->fn(at->t, w->ctx, w->err);
            for (size_t k = 0; st == OQ_OK && k < at->n_tensors; k++)
                st = w->fn(at->tensors[k], w->ctx, w->err);
            if (st == OQ_OK)
                st = walk_sparse(w, at->sparse_tensor);
            for (size_t k = 0; st == OQ_OK && k < at->n_sparse_tensors; k++)
                st = walk_sparse(w, at->sparse_tensors[k]);
            if (st == OQ_OK && at->g)
                st = walk_graph(w, at->g);
            for (size_t k = 0; st == OQ_OK && k < at->n_graphs; k++)
                st = walk_graph(w, at->graphs[k]);
            if (st != OQ_OK)
                return st;
        }
    }
    return OQ_OK;
}

static oq_status walk_graph(tensor_walk *w, Onnx__GraphProto *g) {
    if (!g)
        return OQ_OK;
    for (size_t i = 0; i < g->n_initializer; i++) {
        oq_status st = w->fn(g->initializer[i], w->ctx, w->err);
        if (st != OQ_OK)
            return st;
    }
    for (size_t i = 0; i < g->n_sparse_initializer; i++) {
        oq_status st = walk_sparse(w, g->sparse_initializer[i]);
        if (st != OQ_OK)
            return st;
    }
    return walk_nodes(w, g->node, g->n_node);
}

oq_status oq_model_for_each_tensor(oq_model *m, oq_tensor_proto_fn fn, void *ctx, oq_error *err) {
    tensor_walk w = {fn, ctx, err};
    Onnx__ModelProto *p = m->proto;
    oq_status st = walk_graph(&w, p->graph);
    for (size_t i = 0; st == OQ_OK && i < p->n_functions; i++)
        st = walk_nodes(&w, p->functions[i]->node, p->functions[i]->n_node);
    for (size_t i = 0; st == OQ_OK && i < p->n_training_info; i++) {
        st = walk_graph(&w, p->training_info[i]->initialization);
        if (st == OQ_OK)
            st = walk_graph(&w, p->training_info[i]->algorithm);
    }
    return st;
}

/* ---- internalize -------------------------------------------------------- */

static oq_status internalize_one(Onnx__TensorProto *tp, void *ctx, oq_error *err) {
    oq_model *m = ctx;
    if (!oq_tensor_proto_is_external(tp))
        return OQ_OK;
    oq_external_ref ref;
    oq_status st = oq_external_resolve(tp, m->base_dir, &ref, err);
    if (st != OQ_OK)
        return st;
    if (ref.length > SIZE_MAX)
        return oq_err(err, OQ_ELIMIT, "tensor '%s': external data too large", tp->name ? tp->name : "");
    ProtobufCAllocator *a = &m->alloc.base;
    uint8_t *data = oq_pb_alloc(a, (size_t)ref.length);
    if (!data)
        return oq_err(err, m->alloc.exceeded ? OQ_ELIMIT : OQ_ENOMEM,
                      "tensor '%s': no memory for %llu bytes of external data",
                      tp->name ? tp->name : "", (unsigned long long)ref.length);
    st = oq_external_read(&ref, data, (size_t)ref.length, err);
    if (st != OQ_OK) {
        oq_pb_free(a, data);
        return st;
    }
    if (tp->has_raw_data)
        oq_pb_free(a, tp->raw_data.data);
    tp->has_raw_data = 1;
    tp->raw_data.data = data;
    tp->raw_data.len = (size_t)ref.length;
    for (size_t i = 0; i < tp->n_external_data; i++)
        protobuf_c_message_free_unpacked(&tp->external_data[i]->base, a);
    oq_pb_free(a, tp->external_data);
    tp->external_data = NULL;
    tp->n_external_data = 0;
    tp->has_data_location = 0;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    return OQ_OK;
}

oq_status oq_model_internalize(oq_model *m, oq_error *err) {
    /* Raise the budget: the external bytes are memory the caller asked for. */
    m->alloc.limit = 0;
    return oq_model_for_each_tensor(m, internalize_one, m, err);
}

/* ---- saving --------------------------------------------------------------- */

oq_status oq_model_save_buffer(oq_model *m, uint8_t **out, size_t *len, oq_error *err) {
    *out = NULL;
    *len = 0;
    size_t n = onnx__model_proto__get_packed_size(m->proto);
    if (n > (size_t)INT32_MAX)
        return oq_err(err, OQ_ELIMIT,
                      "model serializes to %zu bytes, over protobuf's 2 GiB limit; save with external data", n);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "out of memory serializing %zu bytes", n);
    size_t packed = onnx__model_proto__pack(m->proto, buf);
    if (packed != n) {
        free(buf);
        return oq_err(err, OQ_EINTERNAL, "serialized %zu bytes, expected %zu", packed, n);
    }
    *out = buf;
    *len = n;
    return OQ_OK;
}

static oq_status write_all(int fd, const void *data, size_t len, const char *path, oq_error *err) {
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return oq_err(err, OQ_EIO, "%s: write: %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return OQ_OK;
}

static void fsync_dir_of(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    int dfd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* Opens a fresh temporary file beside path; *tmp receives its name. */
static int open_temp_beside(const char *path, char *tmp, size_t tmp_len) {
    snprintf(tmp, tmp_len, "%s.tmp.XXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd >= 0)
        fchmod(fd, 0644);
    return fd;
}

static oq_status commit_temp(int fd, const char *tmp, const char *path, oq_error *err) {
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return oq_err(err, OQ_EIO, "%s: fsync: %s", path, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return oq_err(err, OQ_EIO, "%s: rename: %s", path, strerror(e));
    }
    fsync_dir_of(path);
    return OQ_OK;
}

oq_status oq_write_file_atomic(const char *path, const void *data, size_t len, oq_error *err) {
    char tmp[PATH_MAX + 16];
    int fd = open_temp_beside(path, tmp, sizeof tmp);
    if (fd < 0)
        return oq_err(err, OQ_EIO, "%s: %s", path, strerror(errno));
    oq_status st = write_all(fd, data, len, path, err);
    if (st != OQ_OK) {
        close(fd);
        unlink(tmp);
        return st;
    }
    return commit_temp(fd, tmp, path, err);
}

/* While saving, tensors are rewritten in place and restored afterwards so
 * the caller's model is unchanged. Each change is recorded here. */
typedef struct {
    Onnx__TensorProto *tp;
    protobuf_c_boolean had_raw;
    ProtobufCBinaryData raw;
    protobuf_c_boolean had_location;
    int location;
    size_t n_external;
    Onnx__StringStringEntryProto **external;
    uint8_t *owned_raw; /* data read from an old external file, freed on restore */
} saved_tensor;

typedef struct {
    oq_model *m;
    const oq_save_opts *opts;
    saved_tensor *items;
    size_t count, cap;
    /* external output */
    int data_fd;
    const char *data_path;
    uint64_t data_off;
} save_ctx;

static saved_tensor *save_record(save_ctx *c, Onnx__TensorProto *tp, oq_error *err) {
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64, bytes;
        if (!oq_mul_size(cap, sizeof *c->items, &bytes))
            return NULL;
        saved_tensor *grown = realloc(c->items, bytes);
        if (!grown) {
            oq_err(err, OQ_ENOMEM, "out of memory saving the model");
            return NULL;
        }
        c->items = grown;
        c->cap = cap;
    }
    saved_tensor *s = &c->items[c->count++];
    memset(s, 0, sizeof *s);
    s->tp = tp;
    s->had_raw = tp->has_raw_data;
    s->raw = tp->raw_data;
    s->had_location = tp->has_data_location;
    s->location = tp->data_location;
    s->n_external = tp->n_external_data;
    s->external = tp->external_data;
    return s;
}

static void save_restore(save_ctx *c) {
    for (size_t i = c->count; i-- > 0;) {
        saved_tensor *s = &c->items[i];
        Onnx__TensorProto *tp = s->tp;
        if (tp->external_data != s->external) {
            for (size_t k = 0; k < tp->n_external_data; k++) {
                Onnx__StringStringEntryProto *e = tp->external_data[k];
                free(e->key);
                free(e->value);
                free(e);
            }
            free(tp->external_data);
        }
        free(s->owned_raw);
        tp->has_raw_data = s->had_raw;
        tp->raw_data = s->raw;
        tp->has_data_location = s->had_location;
        tp->data_location = s->location;
        tp->n_external_data = s->n_external;
        tp->external_data = s->external;
    }
    free(c->items);
    c->items = NULL;
    c->count = c->cap = 0;
}

/* Reads an external tensor's bytes (relative to the model's own folder). */
static oq_status read_external(save_ctx *c, Onnx__TensorProto *tp, uint8_t **data, size_t *len,
                               oq_error *err) {
    oq_external_ref ref;
    oq_status st = oq_external_resolve(tp, c->m->base_dir, &ref, err);
    if (st != OQ_OK)
        return st;
    if (ref.length > SIZE_MAX)
        return oq_err(err, OQ_ELIMIT, "external tensor too large");
    *len = (size_t)ref.length;
    *data = malloc(*len ? *len : 1);
    if (!*data)
        return oq_err(err, OQ_ENOMEM, "out of memory reading external data");
    st = oq_external_read(&ref, *data, *len, err);
    if (st != OQ_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

static Onnx__StringStringEntryProto *kv_new(const char *k, const char *v) {
    Onnx__StringStringEntryProto *e = malloc(sizeof *e);
    if (!e)
        return NULL;
    onnx__string_string_entry_proto__init(e);
    e->key = strdup(k);
    e->value = strdup(v);
    if (!e->key || !e->value) {
        free(e->key);
        free(e->value);
        free(e);
        return NULL;
    }
    return e;
}

/* Inline mode: pull external tensors into raw_data for the write. */
static oq_status prepare_inline(Onnx__TensorProto *tp, void *ctx, oq_error *err) {
    save_ctx *c = ctx;
    if (!oq_tensor_proto_is_external(tp))
        return OQ_OK;
    uint8_t *data;
    size_t len;
    oq_status st = read_external(c, tp, &data, &len, err);
    if (st != OQ_OK)
        return st;
    saved_tensor *s = save_record(c, tp, err);
    if (!s) {
        free(data);
        return oq_err(err, OQ_ENOMEM, "out of memory saving the model");
    }
    s->owned_raw = data;
    tp->has_raw_data = 1;
    tp->raw_data.data = data;
    tp->raw_data.len = len;
    tp->has_data_location = 0;
    tp->data_location = 0;
    tp->n_external_data = 0;
    tp->external_data = NULL;
    return OQ_OK;
}

/* External mode: tensors at or over the threshold go to the data file. */
static oq_status prepare_external(Onnx__TensorProto *tp, void *ctx, oq_error *err) {
    save_ctx *c = ctx;
    size_t threshold = c->opts->external_threshold ? c->opts->external_threshold : 1024;
    const uint8_t *data = NULL;
    size_t len = 0;
    uint8_t *owned = NULL;
    if (oq_tensor_proto_is_external(tp)) {
        oq_status st = read_external(c, tp, &owned, &len, err);
        if (st != OQ_OK)
            return st;
        data = owned;
    } else if (tp->has_raw_data && tp->raw_data.len >= threshold) {
        data = tp->raw_data.data;
        len = tp->raw_data.len;
    } else {
        return OQ_OK;
    }
    /* Align each tensor to 64 bytes so readers can map it for SIMD loads. */
    static const uint8_t zeros[64];
    size_t pad = (size_t)((64 - c->data_off % 64) % 64);
    oq_status st = write_all(c->data_fd, zeros, pad, c->data_path, err);
    if (st == OQ_OK)
        st = write_all(c->data_fd, data, len, c->data_path, err);
    if (st != OQ_OK) {
        free(owned);
        return st;
    }
    c->data_off += pad;
    char off[32], length[32];
    snprintf(off, sizeof off, "%llu", (unsigned long long)c->data_off);
    snprintf(length, sizeof length, "%zu", len);
    c->data_off += len;
    free(owned);

    saved_tensor *s = save_record(c, tp, err);
    Onnx__StringStringEntryProto **kv = s ? calloc(3, sizeof *kv) : NULL;
    if (kv) {
        kv[0] = kv_new("location", c->opts->external_data);
        kv[1] = kv_new("offset", off);
        kv[2] = kv_new("length", length);
    }
    if (!kv || !kv[0] || !kv[1] || !kv[2]) {
        if (kv)
            for (int i = 0; i < 3; i++)
                if (kv[i]) {
                    free(kv[i]->key);
                    free(kv[i]->value);
                    free(kv[i]);
                }
        free(kv);
        return oq_err(err, OQ_ENOMEM, "out of memory saving the model");
    }
    tp->has_raw_data = 0;
    tp->raw_data.data = NULL;
    tp->raw_data.len = 0;
    tp->has_data_location = 1;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    tp->n_external_data = 3;
    tp->external_data = kv;
    return OQ_OK;
}

static bool is_plain_file_name(const char *name) {
    return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

oq_status oq_model_save_file(oq_model *m, const char *path, const oq_save_opts *opts,
                             oq_error *err) {
    save_ctx c = {.m = m, .opts = opts, .data_fd = -1};
    char data_path[PATH_MAX + 16], data_tmp[PATH_MAX + 32];
    oq_status st;
    if (opts && opts->external_data) {
        if (!is_plain_file_name(opts->external_data))
            return oq_err(err, OQ_EINVAL, "external data name '%s' must be a plain file name",
                          opts->external_data);
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        snprintf(data_path, sizeof data_path, "%s/%s", dirname(dir), opts->external_data);
        c.data_fd = open_temp_beside(data_path, data_tmp, sizeof data_tmp);
        if (c.data_fd < 0)
            return oq_err(err, OQ_EIO, "%s: %s", data_path, strerror(errno));
        c.data_path = data_path;
        st = oq_model_for_each_tensor(m, prepare_external, &c, err);
    } else {
        st = oq_model_for_each_tensor(m, prepare_inline, &c, err);
    }

    uint8_t *buf = NULL;
    size_t len = 0;
    if (st == OQ_OK)
        st = oq_model_save_buffer(m, &buf, &len, err);
    save_restore(&c);
    if (st == OQ_OK && c.data_fd >= 0) {
        st = commit_temp(c.data_fd, data_tmp, data_path, err);
        c.data_fd = -1;
    }
    if (c.data_fd >= 0) {
        close(c.data_fd);
        unlink(data_tmp);
    }
    if (st == OQ_OK)
        st = oq_write_file_atomic(path, buf, len, err);
    free(buf);
    return st;
}
