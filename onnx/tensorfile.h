/* tensorfile.h: the files calibration data arrives in: NumPy .npy, NumPy .npz
 * (a ZIP of .npy members, stored or deflated) and serialized ONNX TensorProto
 * (.pb). Input is hostile: every size is checked before it is allocated. */
#ifndef OQ_TENSORFILE_H
#define OQ_TENSORFILE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

#define OQ_TENSORFILE_DEFAULT_MAX_FILE ((size_t)4 << 30)
#define OQ_TENSORFILE_DEFAULT_MAX_TENSOR ((size_t)2 << 30)
#define OQ_TENSORFILE_DEFAULT_MAX_TOTAL ((size_t)4 << 30)
#define OQ_TENSORFILE_DEFAULT_MAX_MEMBERS 1024

/* An owned list of owned tensors. Each is named: the npz member name without
 * ".npy", the file stem of a .npy, or a .pb's TensorProto name (its file stem
 * when the proto has none). */
typedef struct {
    oq_tensor **items;
    size_t count;
} oq_tensor_list;

/* Frees every tensor and the array and leaves l empty (l itself is the
 * caller's); NULL-safe. */
void oq_tensor_list_free(oq_tensor_list *l);

/* Bounds on one load; a 0 field (or a NULL pointer) takes the default. */
typedef struct {
    size_t max_file_bytes;   /* the file itself (4 GiB) */
    size_t max_tensor_bytes; /* one tensor's data (2 GiB) */
    size_t max_total_bytes;  /* all tensors of one file together (4 GiB) */
    size_t max_members;      /* members of an .npz (1024) */
} oq_tensorfile_limits;

/* .npy, format versions 1.0, 2.0 and 3.0, C order, little-endian numeric
 * dtypes (f2 f4 f8 i1 u1 i2 u2 i4 u4 i8 u8 b1 c8 c16). The tensor is
 * unnamed; max_tensor_bytes 0 = the default. */
oq_status oq_npy_parse(const void *data, size_t len, size_t max_tensor_bytes, oq_tensor **out,
                       oq_error *err);
/* Reads path straight into the tensor (no copy of the whole file); the
 * tensor is named after the file stem. Errors are prefixed with path. */
oq_status oq_npy_load(const char *path, const oq_tensorfile_limits *limits, oq_tensor **out,
                      oq_error *err);

/* Encodes t as .npy (v1.0, v2.0 if the header needs it, C order,
 * little-endian) into a malloc'd buffer the caller frees. */
oq_status oq_npy_encode(const oq_tensor *t, uint8_t **out, size_t *len, oq_error *err);
/* Writes t to path atomically (temporary file, fsync, rename). */
oq_status oq_npy_save(const char *path, const oq_tensor *t, oq_error *err);

/* .npz as written by np.savez / np.savez_compressed: members stored or
 * deflated, ZIP64 fields, data descriptors; every CRC-32 is verified. Members
 * come out in central-directory order; directory entries are skipped. On
 * error out is left empty. */
oq_status oq_npz_parse(const void *data, size_t len, const oq_tensorfile_limits *limits,
                       oq_tensor_list *out, oq_error *err);
oq_status oq_npz_load(const char *path, const oq_tensorfile_limits *limits, oq_tensor_list *out,
                      oq_error *err);

/* Any of the three, chosen by magic bytes: "\x93NUMPY" is .npy, "PK" plus a
 * local-header or end-record signature is .npz, anything else is tried as a
 * serialized TensorProto. name names a .npy (and a .pb whose proto has no
 * name); NULL leaves it unnamed. */
oq_status oq_tensorfile_parse(const void *data, size_t len, const char *name,
                              const oq_tensorfile_limits *limits, oq_tensor_list *out,
                              oq_error *err);
oq_status oq_tensorfile_load(const char *path, const oq_tensorfile_limits *limits,
                             oq_tensor_list *out, oq_error *err);

#endif
