/* model.h: loading and saving ONNX models.
 * The unpacked protobuf-c message is the source of truth: untouched fields,
 * unknown fields included, survive a load/save round trip. Everything in a
 * model (and every edit to it) is allocated by the model's budgeted
 * allocator and freed by oq_model_free. */
#ifndef OQ_MODEL_H
#define OQ_MODEL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "onnx.pb-c.h"
#include "status.h"

#define OQ_MODEL_DEFAULT_MAX_BYTES ((size_t)2 << 30)  /* protobuf's own 2 GiB ceiling */
#define OQ_MODEL_DEFAULT_MAX_DEPTH 96

typedef struct oq_model oq_model;

typedef struct {
    size_t max_bytes;     /* largest serialized model; 0 = OQ_MODEL_DEFAULT_MAX_BYTES */
    size_t max_memory;    /* budget for the unpacked message; 0 = 2 x size + 64 MiB */
    int max_depth;        /* message nesting limit; 0 = OQ_MODEL_DEFAULT_MAX_DEPTH */
    const char *base_dir; /* where external data lives; NULL = the model file's
                             folder (file loads) or no external data (buffers) */
} oq_load_opts;

oq_status oq_model_load_file(const char *path, const oq_load_opts *opts, oq_model **out,
                             oq_error *err);
oq_status oq_model_load_buffer(const void *data, size_t len, const oq_load_opts *opts,
                               oq_model **out, oq_error *err);
/* A new empty model (ir_version 10, an empty graph) for building from scratch. */
oq_status oq_model_new(oq_model **out, oq_error *err);
void oq_model_free(oq_model *m);

/* Borrowed views. Edits must allocate with oq_model_allocator(m). */
Onnx__ModelProto *oq_model_proto(oq_model *m);
ProtobufCAllocator *oq_model_allocator(oq_model *m);
const char *oq_model_base_dir(const oq_model *m); /* NULL when none */
size_t oq_model_memory_used(const oq_model *m);

typedef struct {
    /* NULL: every tensor inline. Otherwise initializers of at least
     * external_threshold bytes are written to this file, named relative to
     * the output model's folder (a plain file name, no directories). */
    const char *external_data;
    size_t external_threshold; /* 0 = 1024 bytes */
} oq_save_opts;

/* Serializes the model into a malloc'd buffer the caller frees. Tensors that
 * refer to external data keep their references. */
oq_status oq_model_save_buffer(oq_model *m, uint8_t **out, size_t *len, oq_error *err);
/* Writes the model atomically (temporary file, fsync, rename). With
 * opts->external_data, large tensors go to that file and the model refers to
 * them; the in-memory model is left unchanged. */
oq_status oq_model_save_file(oq_model *m, const char *path, const oq_save_opts *opts,
                             oq_error *err);

/* Reads every external tensor into raw_data so the model stands alone. */
oq_status oq_model_internalize(oq_model *m, oq_error *err);

/* Calls fn for every TensorProto in the model: initializers, Constant-node
 * and other tensor attributes, sparse tensors' values and indices, in every
 * graph and subgraph, functions and training graphs included. Stops at the
 * first non-OK status and returns it. */
typedef oq_status (*oq_tensor_proto_fn)(Onnx__TensorProto *tp, void *ctx, oq_error *err);
oq_status oq_model_for_each_tensor(oq_model *m, oq_tensor_proto_fn fn, void *ctx,
                                   oq_error *err);

/* Writes len bytes to path atomically: temp file in the same folder, fsync,
 * rename, fsync of the folder. */
oq_status oq_write_file_atomic(const char *path, const void *data, size_t len, oq_error *err);

#endif
