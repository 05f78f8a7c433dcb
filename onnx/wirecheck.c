/* wirecheck.c: a descriptor-driven walk over protobuf wire format.
 * Every byte is visited once; nothing is allocated. */
#include "wirecheck.h"

#include <stdio.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_SGROUP = 3, WIRE_EGROUP = 4, WIRE_FIXED32 = 5 };
enum { MAX_COUNTED_FIELDS = 64, PATH_MAX_LEN = 384 };

typedef struct {
    const uint8_t *base; /* start of the whole buffer, for absolute offsets */
    int max_depth;
    size_t unpacked;     /* running estimate of protobuf-c's allocations */
    char path[PATH_MAX_LEN];
    oq_error *err;
} wire_walk;

/* Reads a varint at *p (< end); advances *p. false if truncated or > 10 bytes. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return 0;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1)
            return 0;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

static int expected_wire_type(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return WIRE_FIXED32;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return WIRE_FIXED64;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return WIRE_LEN;
    default:
        return WIRE_VARINT;
    }
}

/* Bytes one element of a repeated field takes in protobuf-c's array. */
static size_t element_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return 8;
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

/* Adds n to the estimate, saturating instead of wrapping. */
static void charge(wire_walk *w, size_t n) {
    w->unpacked = w->unpacked > SIZE_MAX - n ? SIZE_MAX : w->unpacked + n;
}

/* Number of elements in a packed payload of wire type wt. */
static size_t packed_count(const uint8_t *p, const uint8_t *end, int wt) {
    size_t len = (size_t)(end - p);
    if (wt == WIRE_FIXED32)
        return len / 4;
    if (wt == WIRE_FIXED64)
        return len / 8;
    size_t n = 0;
    for (; p < end; p++)
        n += !(*p & 0x80); /* each varint ends with a byte below 0x80 */
    return n;
}

static oq_status walk_fail(wire_walk *w, const uint8_t *at, const char *what) {
    return oq_err(w->err, OQ_EMODEL, "%s: %s at byte %zu", w->path, what, (size_t)(at - w->base));
}

/* Checks a packed repeated payload holds whole elements of wire type wt. */
static oq_status check_packed(wire_walk *w, const uint8_t *p, const uint8_t *end, int wt) {
    size_t len = (size_t)(end - p);
    if (wt == WIRE_FIXED32 && len % 4)
        return walk_fail(w, p, "packed fixed32 payload length is not a multiple of 4");
    if (wt == WIRE_FIXED64 && len % 8)
        return walk_fail(w, p, "packed fixed64 payload length is not a multiple of 8");
    if (wt == WIRE_VARINT) {
        uint64_t v;
        while (p < end)
            if (!read_varint(&p, end, &v))
                return walk_fail(w, p, "truncated or overlong varint in packed payload");
    }
    return OQ_OK;
}

static oq_status walk_message(wire_walk *w, const ProtobufCMessageDescriptor *desc,
                              const uint8_t *p, const uint8_t *end, int depth) {
    if (depth > w->max_depth)
        return oq_err(w->err, OQ_ELIMIT, "%s: messages nest deeper than %d levels at byte %zu",
                      w->path, w->max_depth, (size_t)(p - w->base));
    unsigned counts[MAX_COUNTED_FIELDS] = {0};
    size_t elements[MAX_COUNTED_FIELDS] = {0}; /* repeated elements per field */
    size_t path_len = strlen(w->path);
    charge(w, desc->sizeof_message + OQ_WIRE_BLOCK_OVERHEAD);
    while (p < end) {
        const uint8_t *tag_at = p;
        uint64_t key;
        if (!read_varint(&p, end, &key))
            return walk_fail(w, tag_at, "truncated or overlong field tag");
        int wt = (int)(key & 7);
        uint64_t number = key >> 3;
        if (number == 0 || number > 536870911u)
            return walk_fail(w, tag_at, "invalid field number");
        if (wt == WIRE_SGROUP || wt == WIRE_EGROUP || wt > WIRE_FIXED32)
            return walk_fail(w, tag_at, wt > WIRE_FIXED32 ? "invalid wire type" : "group wire type is not supported");

        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(desc, (unsigned)number);
        /* Name the field in the path for errors inside it. */
        if (f) {
            size_t idx = (size_t)(f - desc->fields);
            if (f->label == PROTOBUF_C_LABEL_REPEATED && idx < MAX_COUNTED_FIELDS)
                snprintf(w->path + path_len, sizeof w->path - path_len, ".%s[%u]", f->name, counts[idx]++);
            else
                snprintf(w->path + path_len, sizeof w->path - path_len, ".%s", f->name);
        } else {
            snprintf(w->path + path_len, sizeof w->path - path_len, ".<field %llu>", (unsigned long long)number);
        }

        const uint8_t *payload = p, *payload_end = NULL;
        switch (wt) {
        case WIRE_VARINT: {
            uint64_t v;
            if (!read_varint(&p, end, &v))
                return walk_fail(w, payload, "truncated or overlong varint");
            break;
        }
        case WIRE_FIXED64:
            if ((size_t)(end - p) < 8)
                return walk_fail(w, payload, "truncated 8-byte value");
            p += 8;
            break;
        case WIRE_FIXED32:
            if ((size_t)(end - p) < 4)
                return walk_fail(w, payload, "truncated 4-byte value");
            p += 4;
            break;
        case WIRE_LEN: {
            uint64_t n;
            if (!read_varint(&p, end, &n))
                return walk_fail(w, payload, "truncated or overlong length");
            if (n > (uint64_t)(end - p)) {
                char what[160];
                snprintf(what, sizeof what, "length %llu runs past the end of its message (%zu bytes left)",
                         (unsigned long long)n, (size_t)(end - p));
                return walk_fail(w, payload, what);
            }
            payload = p;
            payload_end = p + n;
            p = payload_end;
            break;
        }
        }

        if (f) {
            int want = expected_wire_type(f->type);
            int packed_ok = f->label == PROTOBUF_C_LABEL_REPEATED && want != WIRE_LEN && wt == WIRE_LEN;
            if (wt != want && !packed_ok) {
                char what[96];
                snprintf(what, sizeof what, "wire type %d where the field's type needs %d", wt, want);
                return walk_fail(w, tag_at, what);
            }
            size_t idx = (size_t)(f - desc->fields);
            if (f->label == PROTOBUF_C_LABEL_REPEATED && idx < MAX_COUNTED_FIELDS)
                elements[idx] += packed_ok ? packed_count(payload, payload_end, want) : 1;
            else if (f->label == PROTOBUF_C_LABEL_REPEATED)
                charge(w, packed_ok ? (size_t)(payload_end - payload) * 8 : 8);
            if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES)
                charge(w, (size_t)(payload_end - payload) + 1 + OQ_WIRE_BLOCK_OVERHEAD);
            if (packed_ok) {
                oq_status st = check_packed(w, payload, payload_end, want);
                if (st != OQ_OK)
                    return st;
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                oq_status st = walk_message(w, f->descriptor, payload, payload_end, depth + 1);
                if (st != OQ_OK)
                    return st;
            } else if (f->type == PROTOBUF_C_TYPE_STRING &&
                       memchr(payload, 0, (size_t)(payload_end - payload))) {
                /* protobuf-c keeps strings NUL-terminated: an embedded NUL
                 * would be silently cut, and saving would lose bytes. */
                return walk_fail(w, payload, "string contains a NUL byte");
            }
        }
        w->path[path_len] = '\0';
    }
    for (unsigned i = 0; i < desc->n_fields && i < MAX_COUNTED_FIELDS; i++)
        if (elements[i])
            charge(w, elements[i] * element_size(desc->fields[i].type) + OQ_WIRE_BLOCK_OVERHEAD);
    return OQ_OK;
}

oq_status oq_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                        size_t len, int max_depth, const char *root, size_t *unpacked,
                        oq_error *err) {
    wire_walk w = {.base = data, .max_depth = max_depth, .err = err};
    snprintf(w.path, sizeof w.path, "%s", root);
    oq_status st = walk_message(&w, desc, data, data + len, 0);
    if (unpacked)
        *unpacked = w.unpacked;
    return st;
}
