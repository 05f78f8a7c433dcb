/* tensorproto.c: TensorProto <-> oq_tensor, and external data resolution.
 * Data may be in raw_data (little-endian), in the typed repeated field the
 * ONNX spec assigns to the data type, or in an external file. */
#include "tensorproto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "checked.h"
#include "model.h"
#include "wirecheck.h"

static const char *tp_name(const Onnx__TensorProto *tp) {
    return tp->name && *tp->name ? tp->name : "<unnamed>";
}

bool oq_tensor_proto_is_external(const Onnx__TensorProto *tp) {
    return tp->has_data_location &&
           tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
}

oq_status oq_tensor_proto_size(const Onnx__TensorProto *tp, size_t *count, size_t *nbytes,
                               oq_error *err) {
    for (size_t i = 0; i < tp->n_dims; i++)
        if (tp->dims[i] < 0)
            return oq_err(err, OQ_EMODEL, "tensor '%s': dims[%zu] is negative (%lld)", tp_name(tp),
                          i, (long long)tp->dims[i]);
    if (tp->n_dims > INT32_MAX || !oq_dims_count(tp->dims, (int)tp->n_dims, count))
        return oq_err(err, OQ_EMODEL, "tensor '%s': the product of its dims overflows", tp_name(tp));
    int dt = tp->has_data_type ? tp->data_type : 0;
    if (!oq_dtype_valid(dt))
        return oq_err(err, OQ_EMODEL, "tensor '%s': invalid data_type %d", tp_name(tp), dt);
    if (dt == OQ_DTYPE_STRING) {
        *nbytes = 0;
        return OQ_OK;
    }
    if (!oq_dtype_nbytes((oq_dtype)dt, *count, nbytes))
        return oq_err(err, OQ_EMODEL, "tensor '%s': byte size overflows", tp_name(tp));
    return OQ_OK;
}

/* How many values the typed field for tp's type holds (*have) and must
 * hold for count elements (*need), per the TensorProto field comments. */
static void typed_counts(const Onnx__TensorProto *tp, size_t count, size_t nbytes, size_t *have,
                         size_t *need) {
    *need = count;
    switch (tp->data_type) {
    case OQ_DTYPE_FLOAT:
        *have = tp->n_float_data;
        break;
    case OQ_DTYPE_COMPLEX64:
        *have = tp->n_float_data;
        *need = count * 2; /* count * 8 bytes did not overflow, so this does not */
        break;
    case OQ_DTYPE_DOUBLE:
        *have = tp->n_double_data;
        break;
    case OQ_DTYPE_COMPLEX128:
        *have = tp->n_double_data;
        *need = count * 2;
        break;
    case OQ_DTYPE_INT64:
        *have = tp->n_int64_data;
        break;
    case OQ_DTYPE_UINT32:
    case OQ_DTYPE_UINT64:
        *have = tp->n_uint64_data;
        break;
    case OQ_DTYPE_STRING:
        *have = tp->n_string_data;
        break;
    case OQ_DTYPE_INT4:
    case OQ_DTYPE_UINT4:
        *have = tp->n_int32_data;
        *need = nbytes; /* two 4-bit values per entry */
        break;
    default:
        *have = tp->n_int32_data;
        break;
    }
}

oq_status oq_tensor_proto_check(const Onnx__TensorProto *tp, const char *base_dir, oq_error *err) {
    size_t count, nbytes;
    oq_status st = oq_tensor_proto_size(tp, &count, &nbytes, err);
    if (st != OQ_OK)
        return st;
    if (tp->segment)
        return OQ_OK; /* a segment holds a slice; its size cannot be checked alone */
    if (oq_tensor_proto_is_external(tp)) {
        oq_external_ref ref;
        st = oq_external_resolve(tp, base_dir, &ref, err);
        if (st == OQ_OK && tp->data_type != OQ_DTYPE_STRING && ref.length != nbytes)
            st = oq_err(err, OQ_EMODEL, "tensor '%s': external data has %llu bytes, its dims need %zu",
                        tp_name(tp), (unsigned long long)ref.length, nbytes);
        return st;
    }
    if (tp->has_raw_data) {
        if (tp->data_type == OQ_DTYPE_STRING)
            return oq_err(err, OQ_EMODEL, "tensor '%s': string tensors cannot use raw_data", tp_name(tp));
        if (tp->raw_data.len != nbytes)
            return oq_err(err, OQ_EMODEL, "tensor '%s': raw_data has %zu bytes, its dims need %zu",
                          tp_name(tp), tp->raw_data.len, nbytes);
        return OQ_OK;
    }
    size_t have, need;
    typed_counts(tp, count, nbytes, &have, &need);
    if (have != need)
        return oq_err(err, OQ_EMODEL, "tensor '%s': has %zu %s values, its dims need %zu", tp_name(tp),
                      have, oq_dtype_name(tp->data_type), need);
    return OQ_OK;
}

/* ---- external data -------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *v) {
    if (!s || !*s)
        return false;
    uint64_t r = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || r > (UINT64_MAX - 9) / 10)
            return false;
        r = r * 10 + (uint64_t)(*s - '0');
    }
    *v = r;
    return true;
}

/* A location is safe when it is relative and no component is "..": it can
 * then only name something under base_dir (symlinks are checked after). */
static bool location_is_safe(const char *loc) {
    if (!*loc || loc[0] == '/')
        return false;
    for (const char *p = loc; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return false;
        if (memchr(p, '\\', n))
            return false; /* Windows separators could smuggle ".." past us */
        p += n;
        if (*p == '/')
            p++;
    }
    return true;
}

oq_status oq_external_resolve(const Onnx__TensorProto *tp, const char *base_dir,
                              oq_external_ref *ref, oq_error *err) {
    memset(ref, 0, sizeof *ref);
    const char *location = NULL, *offset = NULL, *length = NULL;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (!e->key)
            continue;
        if (strcmp(e->key, "location") == 0)
            location = e->value;
        else if (strcmp(e->key, "offset") == 0)
            offset = e->value;
        else if (strcmp(e->key, "length") == 0)
            length = e->value;
    }
    if (!location)
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data has no location", tp_name(tp));
    if (!base_dir)
        return oq_err(err, OQ_EMODEL,
                      "tensor '%s': external data '%s' but the model has no base folder "
                      "(loaded from memory)", tp_name(tp), location);
    if (!location_is_safe(location))
        return oq_err(err, OQ_EMODEL,
                      "tensor '%s': external data location '%s' must be a relative path "
                      "without '..'", tp_name(tp), location);
    if (offset && !parse_u64(offset, &ref->offset))
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data offset '%s' is not a number",
                      tp_name(tp), offset);
    if (length) {
        if (!parse_u64(length, &ref->length))
            return oq_err(err, OQ_EMODEL, "tensor '%s': external data length '%s' is not a number",
                          tp_name(tp), length);
        ref->has_length = true;
    }

    char joined[PATH_MAX * 2], real_base[PATH_MAX];
    snprintf(joined, sizeof joined, "%s/%s", base_dir, location);
    if (!realpath(base_dir, real_base))
        return oq_err(err, OQ_EIO, "external data folder '%s': %s", base_dir, strerror(errno));
    if (!realpath(joined, ref->path))
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data file '%s': %s", tp_name(tp),
                      location, strerror(errno));
    size_t nb = strlen(real_base);
    /* A symlink inside base_dir may still point outside it. */
    if (strncmp(ref->path, real_base, nb) != 0 || (ref->path[nb] != '/' && nb > 1))
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data '%s' resolves outside the model folder",
                      tp_name(tp), location);

    struct stat sb;
    if (stat(ref->path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data '%s' is not a regular file",
                      tp_name(tp), location);
    uint64_t size = (uint64_t)sb.st_size;
    if (ref->offset > size)
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data offset %llu is past the end of '%s' (%llu bytes)",
                      tp_name(tp), (unsigned long long)ref->offset, location, (unsigned long long)size);
    if (!ref->has_length)
        ref->length = size - ref->offset;
    else if (ref->length > size - ref->offset)
        return oq_err(err, OQ_EMODEL, "tensor '%s': external data offset %llu + length %llu runs past the end of '%s' (%llu bytes)",
                      tp_name(tp), (unsigned long long)ref->offset, (unsigned long long)ref->length,
                      location, (unsigned long long)size);
    return OQ_OK;
}

oq_status oq_external_read(const oq_external_ref *ref, void *dst, size_t len, oq_error *err) {
    int fd = open(ref->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return oq_err(err, OQ_EIO, "%s: %s", ref->path, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)dst + done, len - done, (off_t)(ref->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            return oq_err(err, OQ_EIO, "%s: short read at offset %llu: %s", ref->path,
                          (unsigned long long)(ref->offset + done), n == 0 ? "end of file" : strerror(e));
        }
        done += (size_t)n;
    }
    close(fd);
    return OQ_OK;
}

/* ---- decoding --------------------------------------------------------- */

/* Copies the typed repeated field into t->data, narrowing as the spec says
 * (int32_data carries 8/16-bit ints, bool, float16 bits, ...). The caller
 * has checked the field holds exactly the values the dims need. */
static void decode_typed(const Onnx__TensorProto *tp, oq_tensor *t) {
    size_t n = t->count;
    switch (t->dtype) {
    case OQ_DTYPE_FLOAT:
    case OQ_DTYPE_COMPLEX64:
        memcpy(t->data, tp->float_data, t->nbytes);
        break;
    case OQ_DTYPE_DOUBLE:
    case OQ_DTYPE_COMPLEX128:
        memcpy(t->data, tp->double_data, t->nbytes);
        break;
    case OQ_DTYPE_INT64:
        memcpy(t->data, tp->int64_data, t->nbytes);
        break;
    case OQ_DTYPE_INT32:
        memcpy(t->data, tp->int32_data, t->nbytes);
        break;
    case OQ_DTYPE_UINT32:
        for (size_t i = 0; i < n; i++)
            ((uint32_t *)t->data)[i] = (uint32_t)tp->uint64_data[i];
        break;
    case OQ_DTYPE_UINT64:
        memcpy(t->data, tp->uint64_data, t->nbytes);
        break;
    case OQ_DTYPE_INT4:
    case OQ_DTYPE_UINT4:
        for (size_t i = 0; i < t->nbytes; i++)
            ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i];
        break;
    default:
        if (oq_dtype_size(t->dtype) == 1)
            for (size_t i = 0; i < n; i++)
                ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i];
        else /* 16-bit types: int16, uint16, float16, bfloat16 */
            for (size_t i = 0; i < n; i++)
                ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i];
        break;
    }
}

oq_status oq_tensor_from_proto(const Onnx__TensorProto *tp, const char *base_dir,
                               size_t max_bytes, oq_tensor **out, oq_error *err) {
    *out = NULL;
    size_t count, nbytes;
    oq_status st = oq_tensor_proto_size(tp, &count, &nbytes, err);
    if (st != OQ_OK)
        return st;
    if (tp->data_type == OQ_DTYPE_STRING)
        return oq_err(err, OQ_EUNSUPPORTED, "tensor '%s': string tensors are not supported", tp_name(tp));
    if (tp->segment)
        return oq_err(err, OQ_EUNSUPPORTED, "tensor '%s': segmented tensors are not supported", tp_name(tp));

    /* Validate the data size before allocating anything sized by dims. */
    st = oq_tensor_proto_check(tp, base_dir, err);
    if (st != OQ_OK)
        return st;
    oq_tensor *t;
    st = oq_tensor_new((oq_dtype)tp->data_type, (int)tp->n_dims, tp->dims, max_bytes, &t, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "tensor '%s': ", tp_name(tp));
        return st;
    }
    if (oq_tensor_proto_is_external(tp)) {
        oq_external_ref ref;
        st = oq_external_resolve(tp, base_dir, &ref, err);
        if (st == OQ_OK)
            st = oq_external_read(&ref, t->data, nbytes, err);
    } else if (nbytes == 0) {
        /* empty tensor: protobuf-c leaves its data pointers NULL */
    } else if (tp->has_raw_data) {
        memcpy(t->data, tp->raw_data.data, nbytes);
    } else {
        decode_typed(tp, t);
    }
    if (st == OQ_OK && tp->name)
        st = oq_tensor_set_name(t, tp->name, err);
    if (st != OQ_OK) {
        oq_tensor_free(t);
        return st;
    }
    *out = t;
    return OQ_OK;
}

oq_status oq_tensor_to_proto(const oq_tensor *t, const char *name, ProtobufCAllocator *a,
                             Onnx__TensorProto **out, oq_error *err) {
    *out = NULL;
    Onnx__TensorProto *tp = oq_pb_alloc(a, sizeof *tp);
    if (!tp)
        return oq_err(err, OQ_ENOMEM, "out of memory building tensor '%s'", name);
    onnx__tensor_proto__init(tp);
    tp->name = oq_pb_strdup(a, name);
    tp->dims = t->rank ? oq_pb_calloc(a, (size_t)t->rank, sizeof(int64_t)) : NULL;
    tp->raw_data.data = oq_pb_alloc(a, t->nbytes);
    if (!tp->name || (t->rank && !tp->dims) || !tp->raw_data.data) {
        protobuf_c_message_free_unpacked(&tp->base, a);
        return oq_err(err, OQ_ENOMEM, "out of memory building tensor '%s'", name);
    }
    tp->n_dims = (size_t)t->rank;
    if (t->rank)
        memcpy(tp->dims, t->dims, (size_t)t->rank * sizeof(int64_t));
    tp->has_data_type = 1;
    tp->data_type = (int32_t)t->dtype;
    tp->has_raw_data = 1;
    tp->raw_data.len = t->nbytes;
    memcpy(tp->raw_data.data, t->data, t->nbytes);
    *out = tp;
    return OQ_OK;
}

/* ---- .pb files -------------------------------------------------------- */

oq_status oq_tensor_parse_pb(const void *data, size_t len, oq_tensor **out, oq_error *err) {
    *out = NULL;
    size_t needed = 0;
    oq_status st = oq_wire_check(&onnx__tensor_proto__descriptor, data, len,
                                 OQ_MODEL_DEFAULT_MAX_DEPTH, "tensor", &needed, err);
    if (st != OQ_OK)
        return st;
    oq_budget_alloc budget;
    size_t limit;
    if (!oq_mul_size(len, 8, &limit) || !oq_add_size(limit, (size_t)1 << 20, &limit) || needed > limit)
        return oq_err(err, OQ_ELIMIT, "tensor needs about %zu bytes to unpack, more than its budget", needed);
    oq_budget_alloc_init(&budget, limit);
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(&budget.base, len, data);
    if (!tp)
        return oq_err(err, budget.exceeded ? OQ_ELIMIT : OQ_EDATA,
                      budget.exceeded ? "tensor needs more memory than its budget" : "tensor: malformed TensorProto");
    st = oq_tensor_from_proto(tp, NULL, 0, out, err);
    onnx__tensor_proto__free_unpacked(tp, &budget.base);
    return st;
}

oq_status oq_tensor_load_pb(const char *path, size_t max_bytes, oq_tensor **out, oq_error *err) {
    *out = NULL;
    if (!max_bytes)
        max_bytes = (size_t)2 << 30;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return oq_err(err, OQ_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return oq_err(err, OQ_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return oq_err(err, OQ_ELIMIT, "%s: %lld bytes exceeds the limit of %zu", path,
                      (long long)sb.st_size, max_bytes);
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory reading %zu bytes", path, len);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd);
    oq_status st = done == len ? oq_tensor_parse_pb(buf, len, out, err)
                               : oq_err(err, OQ_EIO, "%s: short read", path);
    free(buf);
    if (st != OQ_OK)
        oq_err_prefix(err, "%s: ", path);
    return st;
}
