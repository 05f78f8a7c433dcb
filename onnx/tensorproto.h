/* tensorproto.h: conversion between ONNX TensorProto and oq_tensor, and
 * access to external tensor data. */
#ifndef OQ_TENSORPROTO_H
#define OQ_TENSORPROTO_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "onnx.pb-c.h"
#include "status.h"
#include "tensor.h"

/* Where an external tensor's bytes are, resolved and checked. */
typedef struct {
    char path[4096];  /* resolved path inside the base folder */
    uint64_t offset;
    uint64_t length;  /* bytes; the whole rest of the file if not given */
    bool has_length;
} oq_external_ref;

bool oq_tensor_proto_is_external(const Onnx__TensorProto *tp);

/* Resolves tp's external_data entries inside base_dir: location must be a
 * relative path with no ".." that stays inside base_dir after symlinks, the
 * file must exist and offset+length lie within it. */
oq_status oq_external_resolve(const Onnx__TensorProto *tp, const char *base_dir,
                              oq_external_ref *ref, oq_error *err);
/* Reads exactly len bytes at ref->offset into dst. */
oq_status oq_external_read(const oq_external_ref *ref, void *dst, size_t len, oq_error *err);

/* Checks tp's dims (non-negative, product without overflow) and data type;
 * stores the element count and byte size (0 for strings). */
oq_status oq_tensor_proto_size(const Onnx__TensorProto *tp, size_t *count, size_t *nbytes,
                               oq_error *err);

/* Checks that tp's data agrees with its dims: raw_data bytes, the typed
 * field's value count, or (external) the file range, resolved in base_dir. */
oq_status oq_tensor_proto_check(const Onnx__TensorProto *tp, const char *base_dir, oq_error *err);

/* Decodes tp's data (raw_data, the typed field for its type, or external
 * data under base_dir) into a new owned tensor named after tp. The data must
 * match the dims exactly. max_bytes (0 = none) bounds the tensor's size. */
oq_status oq_tensor_from_proto(const Onnx__TensorProto *tp, const char *base_dir,
                               size_t max_bytes, oq_tensor **out, oq_error *err);

/* Builds a TensorProto holding t's data as raw_data, allocated with a (so it
 * can be added to a model allocated by the same allocator). */
oq_status oq_tensor_to_proto(const oq_tensor *t, const char *name, ProtobufCAllocator *a,
                             Onnx__TensorProto **out, oq_error *err);

/* Reads a serialized TensorProto (as in test_data_set_N/input_N.pb) into a
 * tensor; max_bytes (0 = 2 GiB) bounds the file. */
oq_status oq_tensor_load_pb(const char *path, size_t max_bytes, oq_tensor **out, oq_error *err);
oq_status oq_tensor_parse_pb(const void *data, size_t len, oq_tensor **out, oq_error *err);

#endif
