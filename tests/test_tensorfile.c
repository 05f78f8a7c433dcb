/* test_tensorfile.c: .npy / .npz / .pb tensor files: the shared calibration
 * and label files, .npy round trips, hand-made and hostile headers, ZIP
 * archives built here (stored, deflated, ZIP64, descriptors, bombs). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "tensorfile.h"
#include "testutil.h"

/* Written by Python 3.11's zipfile exactly as np.savez does (force_zip64
 * members): a = float32 [[1,2,3],[4,5,6]], labels = int64 [7,8,9]. The first
 * is stored into a seekable file (np.savez); the second deflated into a
 * non-seekable stream (np.savez_compressed to a pipe), so every member has a
 * data descriptor with 8-byte sizes. */
static const uint8_t py_savez_stored[548] = {
    0x50, 0x4b, 0x03, 0x04, 0x2d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x7c, 0x9c,
    0xde, 0xa2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00, 0x14, 0x00, 0x61, 0x2e,
    0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x98,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76,
    0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x66, 0x34, 0x27,
    0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72,
    0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65,
    0x27, 0x3a, 0x20, 0x28, 0x32, 0x2c, 0x20, 0x33, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40, 0x00,
    0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40, 0x00, 0x00, 0xa0, 0x40, 0x00, 0x00, 0xc0, 0x40, 0x50,
    0x4b, 0x03, 0x04, 0x2d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x08, 0x65, 0x1b,
    0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x00, 0x14, 0x00, 0x6c, 0x61, 0x62,
    0x65, 0x6c, 0x73, 0x2e, 0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x98, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x4e, 0x55, 0x4d, 0x50,
    0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63, 0x72, 0x27, 0x3a, 0x20, 0x27,
    0x3c, 0x69, 0x38, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74, 0x72, 0x61, 0x6e, 0x5f, 0x6f,
    0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73, 0x65, 0x2c, 0x20, 0x27, 0x73,
    0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x33, 0x2c, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a, 0x07, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x50, 0x4b, 0x01, 0x02, 0x2d, 0x03, 0x2d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x21, 0x00, 0x7c, 0x9c, 0xde, 0xa2, 0x98, 0x00, 0x00, 0x00, 0x98, 0x00, 0x00, 0x00, 0x05,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x61, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x2d, 0x03, 0x2d, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x08, 0x65, 0x1b, 0x5b, 0x98, 0x00, 0x00, 0x00, 0x98, 0x00,
    0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01,
    0xcf, 0x00, 0x00, 0x00, 0x6c, 0x61, 0x62, 0x65, 0x6c, 0x73, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b,
    0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x6b, 0x00, 0x00, 0x00, 0xa3, 0x01,
    0x00, 0x00, 0x00, 0x00,
};
static const uint8_t py_savez_deflated_stream[457] = {
    0x50, 0x4b, 0x03, 0x04, 0x2d, 0x00, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x05, 0x00, 0x14, 0x00, 0x61, 0x2e,
    0x6e, 0x70, 0x79, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50,
    0xc6, 0x50, 0xad, 0x9e, 0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0, 0x6e, 0x93, 0x66, 0xa2,
    0xae, 0xa3, 0xa0, 0x9e, 0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a,
    0x12, 0x77, 0x4b, 0xcc, 0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a,
    0x46, 0x3a, 0x0a, 0xc6, 0x9a, 0x3a, 0x0a, 0xb5, 0x0a, 0x64, 0x03, 0x2e, 0x06, 0x86, 0x06, 0x7b,
    0x06, 0x06, 0x06, 0x07, 0x20, 0x02, 0xe2, 0x06, 0x20, 0x5e, 0x00, 0xc4, 0x07, 0x1c, 0x00, 0x50,
    0x4b, 0x07, 0x08, 0x7c, 0x9c, 0xde, 0xa2, 0x58, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x98,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x4b, 0x03, 0x04, 0x2d, 0x00, 0x08, 0x00, 0x08,
    0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0x0a, 0x00, 0x14, 0x00, 0x6c, 0x61, 0x62, 0x65, 0x6c, 0x73, 0x2e, 0x6e, 0x70, 0x79, 0x01,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x9b, 0xec, 0x17, 0xea, 0x1b, 0x10, 0xc9, 0xc8, 0x50, 0xc6, 0x50, 0xad, 0x9e,
    0x92, 0x5a, 0x9c, 0x5c, 0xa4, 0x6e, 0xa5, 0xa0, 0x6e, 0x93, 0x69, 0xa1, 0xae, 0xa3, 0xa0, 0x9e,
    0x96, 0x5f, 0x54, 0x52, 0x94, 0x98, 0x17, 0x9f, 0x5f, 0x94, 0x92, 0x0a, 0x12, 0x77, 0x4b, 0xcc,
    0x29, 0x4e, 0x05, 0x8a, 0x17, 0x67, 0x24, 0x16, 0xa4, 0x02, 0xf9, 0x1a, 0xc6, 0x3a, 0x9a, 0x3a,
    0x0a, 0xb5, 0x0a, 0x14, 0x00, 0x2e, 0x76, 0x06, 0x08, 0xe0, 0x80, 0xd2, 0x9c, 0x50, 0x1a, 0x00,
    0x50, 0x4b, 0x07, 0x08, 0x08, 0x65, 0x1b, 0x5b, 0x4d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x4b, 0x01, 0x02, 0x2d, 0x03, 0x2d, 0x00,
    0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x7c, 0x9c, 0xde, 0xa2, 0x58, 0x00, 0x00, 0x00,
    0x98, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x61, 0x2e, 0x6e, 0x70, 0x79, 0x50, 0x4b, 0x01, 0x02, 0x2d,
    0x03, 0x2d, 0x00, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00, 0x08, 0x65, 0x1b, 0x5b, 0x4d,
    0x00, 0x00, 0x00, 0x98, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x80, 0x01, 0xa7, 0x00, 0x00, 0x00, 0x6c, 0x61, 0x62, 0x65, 0x6c, 0x73, 0x2e,
    0x6e, 0x70, 0x79, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x6b,
    0x00, 0x00, 0x00, 0x48, 0x01, 0x00, 0x00, 0x00, 0x00,
};

/* ---- helpers ------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bbuf;

static void bb_put(bbuf *b, const void *data, size_t len) {
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ck_assert(b->p);
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void bb_u8(bbuf *b, unsigned v) {
    uint8_t x = (uint8_t)v;
    bb_put(b, &x, 1);
}

static void bb_u16(bbuf *b, unsigned v) {
    bb_u8(b, v & 0xff);
    bb_u8(b, v >> 8 & 0xff);
}

static void bb_u32(bbuf *b, uint32_t v) {
    bb_u16(b, v & 0xffff);
    bb_u16(b, v >> 16);
}

static void bb_u64(bbuf *b, uint64_t v) {
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}

static void bb_str(bbuf *b, const char *s) {
    bb_put(b, s, strlen(s));
}

/* An .npy with the header text exactly as given (no padding added). */
static bbuf npy_raw(unsigned major, const char *header, const void *data, size_t dlen) {
    bbuf b = {0};
    bb_put(&b, "\x93NUMPY", 6);
    bb_u8(&b, major);
    bb_u8(&b, 0);
    if (major == 1)
        bb_u16(&b, (unsigned)strlen(header));
    else
        bb_u32(&b, (uint32_t)strlen(header));
    bb_str(&b, header);
    bb_put(&b, data, dlen);
    return b;
}

static oq_status parse_npy(const bbuf *b, oq_tensor **t, oq_error *err) {
    memset(err, 0, sizeof *err);
    return oq_npy_parse(b->p, b->n, 0, t, err);
}

/* Expects hdr (with dlen data bytes) to fail with code and msg (if non-NULL)
 * inside the message. */
static void expect_bad_header(unsigned major, const char *hdr, size_t dlen, oq_status code,
                              const char *msg) {
    uint8_t *data = calloc(1, dlen ? dlen : 1);
    ck_assert(data);
    bbuf b = npy_raw(major, hdr, data, dlen);
    oq_error err;
    oq_tensor *t = (oq_tensor *)1;
    oq_status st = parse_npy(&b, &t, &err);
    ck_assert_msg(st == code, "header %s: got %s (%s), want %s", hdr, oq_status_name(st), err.msg,
                  oq_status_name(code));
    ck_assert(t == NULL);
    ck_assert_msg(!msg || strstr(err.msg, msg), "header %s: message '%s' lacks '%s'", hdr,
                  err.msg, msg);
    free(b.p);
    free(data);
}

static oq_tensor *expect_good_header(unsigned major, const char *hdr, size_t dlen) {
    uint8_t *data = malloc(dlen ? dlen : 1);
    ck_assert(data);
    for (size_t i = 0; i < dlen; i++)
        data[i] = (uint8_t)(i * 7 + 1);
    bbuf b = npy_raw(major, hdr, data, dlen);
    oq_error err;
    oq_tensor *t;
    ck_assert_msg(parse_npy(&b, &t, &err) == OQ_OK, "header %s: %s", hdr, err.msg);
    ck_assert_uint_eq(t->nbytes, dlen);
    ck_assert(dlen == 0 || memcmp(t->data, data, dlen) == 0);
    free(b.p);
    free(data);
    return t;
}

/* A tensor of dtype/shape filled with a byte pattern. */
static oq_tensor *pattern_tensor(oq_dtype dt, int rank, const int64_t *dims, unsigned seed) {
    oq_error err = {0};
    oq_tensor *t;
    ck_assert_msg(oq_tensor_new(dt, rank, dims, 0, &t, &err) == OQ_OK, "%s", err.msg);
    uint8_t *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++)
        p[i] = (uint8_t)(i * 31 + seed * 17 + 3);
    if (dt == OQ_DTYPE_BOOL)
        for (size_t i = 0; i < t->nbytes; i++)
            p[i] &= 1;
    return t;
}

static bbuf encode(const oq_tensor *t) {
    oq_error err = {0};
    bbuf b = {0};
    ck_assert_msg(oq_npy_encode(t, &b.p, &b.n, &err) == OQ_OK, "%s", err.msg);
    b.cap = b.n;
    return b;
}

static void assert_same_tensor(const oq_tensor *a, const oq_tensor *b) {
    ck_assert_int_eq(a->dtype, b->dtype);
    ck_assert_int_eq(a->rank, b->rank);
    for (int i = 0; i < a->rank; i++)
        ck_assert_int_eq(a->dims[i], b->dims[i]);
    ck_assert_uint_eq(a->nbytes, b->nbytes);
    ck_assert(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
}

static void assert_shape(const oq_tensor *t, oq_dtype dt, int rank, const int64_t *dims) {
    char d[128];
    ck_assert_msg(t->dtype == dt, "dtype %s", oq_tensor_describe(t, d, sizeof d));
    ck_assert_msg(t->rank == rank, "rank of %s", oq_tensor_describe(t, d, sizeof d));
    for (int i = 0; i < rank; i++)
        ck_assert_msg(t->dims[i] == dims[i], "dims of %s", oq_tensor_describe(t, d, sizeof d));
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f, "cannot create %s", path);
    ck_assert(len == 0 || fwrite(data, 1, len, f) == len);
    ck_assert(fclose(f) == 0);
}

/* ---- ZIP builder ---------------------------------------------------------- */

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len;
    int method;            /* 0 stored, 8 deflated */
    bool zip64_local;      /* local sizes 0xFFFFFFFF, real ones in a zip64 extra */
    bool zip64_central;    /* central sizes and offset 0xFFFFFFFF + zip64 extra */
    bool descriptor;       /* flag bit 3: CRC and sizes follow the data */
    bool bad_descriptor;   /* ... and disagree with the central directory */
    bool no_dd_signature;  /* descriptor without its optional signature */
    uint32_t crc_xor;      /* corrupts the CRC in every header */
    uint16_t flags;        /* extra general-purpose flags (encryption) */
    unsigned fake_method;  /* non-zero: method written in the headers */
    int64_t usize_delta;   /* added to the declared uncompressed size */
    const uint8_t *tail;   /* deflated after the data, not declared */
    size_t tail_len;
    size_t trim;           /* declared, but left out of the deflate stream */
    uint64_t local_off;    /* non-zero: the central directory's offset */
    uint64_t csize_delta;  /* added to the declared compressed size */
} zmember;

typedef struct {
    bool zip64_eocd;
    const char *comment;
} zopts;

static bbuf deflate_raw(const uint8_t *data, size_t len, const uint8_t *tail, size_t tail_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    bbuf out = {0};
    out.cap = deflateBound(&zs, (uLong)(len + tail_len)) + 64;
    out.p = malloc(out.cap);
    ck_assert(out.p);
    zs.next_out = out.p;
    zs.avail_out = (uInt)out.cap;
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)len;
    ck_assert(deflate(&zs, Z_NO_FLUSH) == Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)tail;
    zs.avail_in = (uInt)tail_len;
    ck_assert(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    out.n = out.cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static bbuf zip_build(const zmember *m, size_t n, zopts o) {
    bbuf z = {0};
    uint64_t *offs = calloc(n ? n : 1, sizeof *offs);
    uint64_t *csizes = calloc(n ? n : 1, sizeof *csizes);
    ck_assert(offs && csizes);
    for (size_t i = 0; i < n; i++) {
        const zmember *e = &m[i];
        bbuf payload = {0};
        if (e->method == 8)
            payload = deflate_raw(e->data, e->len - e->trim, e->tail, e->tail_len);
        else
            bb_put(&payload, e->data, e->len);
        uint32_t crc = (uint32_t)crc32(0, e->data, (uInt)e->len) ^ e->crc_xor;
        uint64_t usize = (uint64_t)((int64_t)e->len + e->usize_delta);
        uint64_t csize = payload.n + e->csize_delta;
        csizes[i] = csize;
        offs[i] = z.n;
        unsigned flags = e->flags | (e->descriptor ? 8u : 0u);
        unsigned method = e->fake_method ? e->fake_method : (unsigned)e->method;
        bb_u32(&z, 0x04034b50);
        bb_u16(&z, 45);
        bb_u16(&z, flags);
        bb_u16(&z, method);
        bb_u16(&z, 0);
        bb_u16(&z, 0x21);
        bb_u32(&z, e->descriptor ? 0 : crc);
        if (e->zip64_local) {
            bb_u32(&z, 0xFFFFFFFF);
            bb_u32(&z, 0xFFFFFFFF);
        } else {
            bb_u32(&z, e->descriptor ? 0 : (uint32_t)csize);
            bb_u32(&z, e->descriptor ? 0 : (uint32_t)usize);
        }
        bb_u16(&z, (unsigned)strlen(e->name));
        bb_u16(&z, e->zip64_local ? 20 : 0);
        bb_str(&z, e->name);
        if (e->zip64_local) {
            bb_u16(&z, 1);
            bb_u16(&z, 16);
            bb_u64(&z, e->descriptor ? 0 : usize);
            bb_u64(&z, e->descriptor ? 0 : csize);
        }
        bb_put(&z, payload.p, payload.n);
        if (e->descriptor) {
            if (!e->no_dd_signature)
                bb_u32(&z, 0x08074b50);
            bb_u32(&z, crc);
            uint64_t dd_c = csize + (e->bad_descriptor ? 1 : 0);
            if (e->zip64_local) {
                bb_u64(&z, dd_c);
                bb_u64(&z, usize);
            } else {
                bb_u32(&z, (uint32_t)dd_c);
                bb_u32(&z, (uint32_t)usize);
            }
        }
        free(payload.p);
    }
    uint64_t cd_off = z.n;
    for (size_t i = 0; i < n; i++) {
        const zmember *e = &m[i];
        uint32_t crc = (uint32_t)crc32(0, e->data, (uInt)e->len) ^ e->crc_xor;
        uint64_t usize = (uint64_t)((int64_t)e->len + e->usize_delta);
        uint64_t off = e->local_off ? e->local_off : offs[i];
        bb_u32(&z, 0x02014b50);
        bb_u16(&z, 45);
        bb_u16(&z, 45);
        bb_u16(&z, e->flags | (e->descriptor ? 8u : 0u));
        bb_u16(&z, e->fake_method ? e->fake_method : (unsigned)e->method);
        bb_u16(&z, 0);
        bb_u16(&z, 0x21);
        bb_u32(&z, crc);
        bb_u32(&z, e->zip64_central ? 0xFFFFFFFF : (uint32_t)csizes[i]);
        bb_u32(&z, e->zip64_central ? 0xFFFFFFFF : (uint32_t)usize);
        bb_u16(&z, (unsigned)strlen(e->name));
        bb_u16(&z, e->zip64_central ? 28 : 0);
        bb_u16(&z, 0);
        bb_u16(&z, 0);
        bb_u16(&z, 0);
        bb_u32(&z, 0);
        bb_u32(&z, e->zip64_central ? 0xFFFFFFFF : (uint32_t)off);
        bb_str(&z, e->name);
        if (e->zip64_central) {
            bb_u16(&z, 1);
            bb_u16(&z, 24);
            bb_u64(&z, usize);
            bb_u64(&z, csizes[i]);
            bb_u64(&z, off);
        }
    }
    uint64_t cd_size = z.n - cd_off;
    if (o.zip64_eocd) {
        uint64_t z64 = z.n;
        bb_u32(&z, 0x06064b50);
        bb_u64(&z, 44);
        bb_u16(&z, 45);
        bb_u16(&z, 45);
        bb_u32(&z, 0);
        bb_u32(&z, 0);
        bb_u64(&z, n);
        bb_u64(&z, n);
        bb_u64(&z, cd_size);
        bb_u64(&z, cd_off);
        bb_u32(&z, 0x07064b50);
        bb_u32(&z, 0);
        bb_u64(&z, z64);
        bb_u32(&z, 1);
    }
    const char *comment = o.comment ? o.comment : "";
    bb_u32(&z, 0x06054b50);
    bb_u16(&z, 0);
    bb_u16(&z, 0);
    bb_u16(&z, o.zip64_eocd ? 0xFFFF : (unsigned)n);
    bb_u16(&z, o.zip64_eocd ? 0xFFFF : (unsigned)n);
    bb_u32(&z, o.zip64_eocd ? 0xFFFFFFFF : (uint32_t)cd_size);
    bb_u32(&z, o.zip64_eocd ? 0xFFFFFFFF : (uint32_t)cd_off);
    bb_u16(&z, (unsigned)strlen(comment));
    bb_str(&z, comment);
    free(offs);
    free(csizes);
    /* Set TENSORFILE_DUMP=dir to check the builder with `unzip -t`. */
    const char *dump = getenv("TENSORFILE_DUMP");
    if (dump) {
        static int k;
        char path[512];
        snprintf(path, sizeof path, "%s/z%03d.zip", dump, k++);
        write_file(path, z.p, z.n);
    }
    return z;
}

static oq_status parse_npz(const bbuf *z, const oq_tensorfile_limits *lim, oq_tensor_list *l,
                           oq_error *err) {
    memset(err, 0, sizeof *err);
    return oq_npz_parse(z->p, z->n, lim, l, err);
}

static void expect_npz_error(const zmember *m, size_t n, zopts o, const oq_tensorfile_limits *lim,
                             oq_status code, const char *msg) {
    bbuf z = zip_build(m, n, o);
    oq_error err;
    oq_tensor_list l = {(oq_tensor **)1, 99};
    oq_status st = parse_npz(&z, lim, &l, &err);
    ck_assert_msg(st == code, "got %s (%s), want %s", oq_status_name(st), err.msg,
                  oq_status_name(code));
    ck_assert(l.items == NULL && l.count == 0);
    ck_assert_msg(!msg || strstr(err.msg, msg), "message '%s' lacks '%s'", err.msg, msg);
    free(z.p);
}

/* Three members' .npy bytes for the archive tests. */
typedef struct {
    oq_tensor *t[3];
    bbuf npy[3];
} trio;

static trio trio_make(void) {
    trio r;
    int64_t d0[] = {2, 3}, d1[] = {5}, d2[] = {4, 1, 3};
    r.t[0] = pattern_tensor(OQ_DTYPE_FLOAT, 2, d0, 1);
    r.t[1] = pattern_tensor(OQ_DTYPE_INT64, 1, d1, 2);
    r.t[2] = pattern_tensor(OQ_DTYPE_UINT8, 3, d2, 3);
    for (int i = 0; i < 3; i++)
        r.npy[i] = encode(r.t[i]);
    return r;
}

static void trio_free(trio *r) {
    for (int i = 0; i < 3; i++) {
        oq_tensor_free(r->t[i]);
        free(r->npy[i].p);
    }
}

static void expect_trio(const trio *r, const oq_tensor_list *l, const char *const names[3]) {
    ck_assert_uint_eq(l->count, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(l->items[i]->name, names[i]);
        assert_same_tensor(l->items[i], r->t[i]);
    }
}

static const char *const trio_names[3] = {"x", "labels", "img/u8"};
static const char *const trio_files[3] = {"x.npy", "labels.npy", "img/u8.npy"};

/* ---- shared files ---------------------------------------------------------- */

static oq_tensor *load_shared(const char *rel) {
    oq_error err = {0};
    oq_tensor *t;
    const char *path = tu_shared_path(rel);
    ck_assert_msg(oq_npy_load(path, NULL, &t, &err) == OQ_OK, "%s", err.msg);
    /* The dispatcher must agree, and so must parsing the bytes in memory. */
    oq_tensor_list l;
    ck_assert_msg(oq_tensorfile_load(path, NULL, &l, &err) == OQ_OK, "%s", err.msg);
    ck_assert_uint_eq(l.count, 1);
    assert_same_tensor(t, l.items[0]);
    ck_assert_str_eq(l.items[0]->name, t->name);
    oq_tensor_list_free(&l);
    size_t len;
    uint8_t *bytes = tu_read_file(path, &len);
    ck_assert(bytes);
    oq_tensor *m;
    ck_assert_msg(oq_npy_parse(bytes, len, 0, &m, &err) == OQ_OK, "%s", err.msg);
    assert_same_tensor(t, m);
    oq_tensor_free(m);
    /* numpy wrote these; our encoder must produce the very same bytes. */
    bbuf again = encode(t);
    ck_assert_msg(again.n == len && memcmp(again.p, bytes, len) == 0, "%s: re-encoded bytes differ",
                  rel);
    free(again.p);
    free(bytes);
    return t;
}

/* Index of the first float outside [lo, hi] (or not finite); count if none.
 * (Checks are counted, not asserted per element: each ck_assert is a
 * message to Check's parent process.) */
static size_t first_outside(const oq_tensor *t, float lo, float hi) {
    const float *f = t->data;
    for (size_t i = 0; i < t->count; i++)
        if (!isfinite(f[i]) || f[i] < lo || f[i] > hi)
            return i;
    return t->count;
}

static void check_unit_floats(const oq_tensor *t) {
    size_t i = first_outside(t, 0.0f, 1.0f);
    ck_assert_msg(i == t->count, "value %zu is %g", i, (double)((const float *)t->data)[i]);
}

static void check_labels(const oq_tensor *t, int64_t hi) {
    const int64_t *v = t->data;
    size_t i = 0;
    while (i < t->count && v[i] >= 0 && v[i] <= hi)
        i++;
    ck_assert_msg(i == t->count, "label %zu is %lld", i, (long long)v[i]);
}

START_TEST(shared_calibration_inputs) {
    int64_t mn[] = {500, 1, 28, 28}, fm[] = {1000, 1, 28, 28}, pp[] = {64, 3, 48, 192};
    oq_tensor *m8 = load_shared("models/mnist-8/calib_input.npy");
    assert_shape(m8, OQ_DTYPE_FLOAT, 4, mn);
    ck_assert_str_eq(m8->name, "calib_input");
    check_unit_floats(m8);
    oq_tensor *fmn = load_shared("models/fmnist/calib_input.npy");
    assert_shape(fmn, OQ_DTYPE_FLOAT, 4, fm);
    check_unit_floats(fmn);
    oq_tensor *cnn = load_shared("models/cnn_mnist_pytorch/calib_input.npy");
    assert_shape(cnn, OQ_DTYPE_FLOAT, 4, mn);
    oq_tensor *ocr = load_shared("models/ppocr_cls/calib_input.npy");
    assert_shape(ocr, OQ_DTYPE_FLOAT, 4, pp);
    ck_assert_uint_eq(first_outside(ocr, -1.0f, 1.0f), ocr->count);

    /* The catalog says calib_input = pixel/255 of the first raw images. */
    int64_t u8d[] = {10000, 28, 28}, fu8d[] = {1000, 28, 28};
    oq_tensor *u8 = load_shared("models/data/mnist/mnist_u8.npy");
    assert_shape(u8, OQ_DTYPE_UINT8, 3, u8d);
    const uint8_t *px = u8->data;
    const float *cal = m8->data;
    size_t i = 0;
    while (i < m8->count && cal[i] == (float)(px[i] / 255.0))
        i++;
    ck_assert_msg(i == m8->count, "pixel %zu", i);
    oq_tensor *fu8 = load_shared("models/data/fashion_mnist/fashion_mnist_calib_u8.npy");
    assert_shape(fu8, OQ_DTYPE_UINT8, 3, fu8d);
    px = fu8->data;
    cal = fmn->data;
    for (i = 0; i < fmn->count && fabsf(cal[i] - (float)(px[i] / 255.0)) < 1e-6f;)
        i++;
    ck_assert_msg(i == fmn->count, "pixel %zu", i);
    oq_tensor_free(m8);
    oq_tensor_free(fmn);
    oq_tensor_free(cnn);
    oq_tensor_free(ocr);
    oq_tensor_free(u8);
    oq_tensor_free(fu8);
}
END_TEST

START_TEST(shared_labels_and_references) {
    int64_t l10k[] = {10000}, l64[] = {64}, l256[] = {256}, ev[] = {10000, 10}, ev95[] = {9500, 10};
    int64_t tl[] = {64, 48, 192, 3};
    oq_tensor *t = load_shared("models/data/mnist/mnist_labels.npy");
    assert_shape(t, OQ_DTYPE_INT64, 1, l10k);
    check_labels(t, 9);
    ck_assert_int_eq(((int64_t *)t->data)[0], 9);
    oq_tensor_free(t);
    t = load_shared("models/data/fashion_mnist/fashion_mnist_test_labels.npy");
    assert_shape(t, OQ_DTYPE_INT64, 1, l10k);
    check_labels(t, 9);
    oq_tensor_free(t);
    t = load_shared("models/data/textlines/textline_calib_labels.npy");
    assert_shape(t, OQ_DTYPE_INT64, 1, l64);
    check_labels(t, 1);
    oq_tensor_free(t);
    t = load_shared("models/data/textlines/textline_eval_labels.npy");
    assert_shape(t, OQ_DTYPE_INT64, 1, l256);
    check_labels(t, 1);
    oq_tensor_free(t);
    t = load_shared("models/data/textlines/textline_calib_u8.npy");
    assert_shape(t, OQ_DTYPE_UINT8, 4, tl);
    oq_tensor_free(t);
    static const char *const refs[] = {
        "models/fmnist/eval_ref_fp32_fmnist_cnn.npy", "models/fmnist/eval_ref_fp32_fmnist_cnn_bn.npy",
        "models/fmnist/eval_ref_fp32_fmnist_vit.npy", "models/fmnist/eval_ref_fp32_fmnist_vit_op14.npy"};
    for (size_t k = 0; k < sizeof refs / sizeof refs[0]; k++) {
        t = load_shared(refs[k]);
        assert_shape(t, OQ_DTYPE_FLOAT, 2, ev);
        ck_assert_uint_eq(first_outside(t, -1000.0f, 1000.0f), t->count);
        oq_tensor_free(t);
    }
    t = load_shared("models/mnist-8/eval_ref_fp32.npy");
    assert_shape(t, OQ_DTYPE_FLOAT, 2, ev95);
    oq_tensor_free(t);
}
END_TEST

START_TEST(pb_dispatch) {
    oq_error err = {0};
    oq_tensor_list l;
    const char *path = tu_shared_path("models/mnist-8/test_data_set_0/input_0.pb");
    ck_assert_msg(oq_tensorfile_load(path, NULL, &l, &err) == OQ_OK, "%s", err.msg);
    ck_assert_uint_eq(l.count, 1);
    int64_t d[] = {1, 1, 28, 28};
    assert_shape(l.items[0], OQ_DTYPE_FLOAT, 4, d);
    /* The proto's own name (the graph input it feeds) wins over the stem. */
    ck_assert_str_eq(l.items[0]->name, "Input3");
    oq_tensor_list_free(&l);
    oq_tensor_list_free(&l); /* idempotent on an emptied list */
    oq_tensor_list_free(NULL);

    /* Text is neither format: the message says what was tried. */
    static const char text[] = "1,2,3\n4,5,6\n";
    memset(&err, 0, sizeof err);
    ck_assert(oq_tensorfile_parse(text, sizeof text - 1, "x", NULL, &l, &err) != OQ_OK);
    ck_assert_msg(strstr(err.msg, "not an .npy"), "%s", err.msg);
    ck_assert(l.count == 0 && l.items == NULL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_parse(text, 0, "x", NULL, &l, &err), OQ_EDATA);

    /* Random bytes go to the TensorProto reader and must fail cleanly. */
    srand(7);
    uint8_t junk[300];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)rand() % sizeof junk;
        for (size_t i = 0; i < n; i++)
            junk[i] = (uint8_t)rand();
        memset(&err, 0, sizeof err);
        if (oq_tensorfile_parse(junk, n, "j", NULL, &l, &err) == OQ_OK)
            oq_tensor_list_free(&l);
    }
    oq_tensorfile_limits small = {.max_file_bytes = 4};
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_parse(text, sizeof text - 1, "x", &small, &l, &err), OQ_ELIMIT);

    /* A .pb over the tensor limit is refused after decoding. */
    oq_tensorfile_limits lim = {.max_tensor_bytes = 1000};
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_load(path, &lim, &l, &err), OQ_ELIMIT);
}
END_TEST

START_TEST(file_errors) {
    oq_error err = {0};
    oq_tensor *t = (oq_tensor *)1;
    oq_tensor_list l;
    ck_assert_int_eq(oq_npy_load("/nonexistent/x.npy", NULL, &t, &err), OQ_ENOTFOUND);
    ck_assert(t == NULL);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_load("/nonexistent/x.npz", NULL, &l, &err), OQ_ENOTFOUND);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_load("/tmp", NULL, &l, &err), OQ_EINVAL);
    oq_tensorfile_limits lim = {.max_file_bytes = 1000};
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_load(tu_shared_path("models/mnist-8/calib_input.npy"), &lim, &t, &err),
                     OQ_ELIMIT);
    lim = (oq_tensorfile_limits){.max_tensor_bytes = 1000};
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_load(tu_shared_path("models/mnist-8/calib_input.npy"), &lim, &t, &err),
                     OQ_ELIMIT);
    ck_assert_msg(strstr(err.msg, "calib_input.npy: "), "%s", err.msg);

    char *dir = tu_mkdtemp();
    ck_assert(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/empty.npy", dir);
    write_file(path, "", 0);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_load(path, NULL, &t, &err), OQ_EDATA);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_tensorfile_load(path, NULL, &l, &err), OQ_EDATA);
    /* The message names the file and what is wrong inside it. */
    snprintf(path, sizeof path, "%s/x.npy", dir);
    float data[6] = {0};
    bbuf b = npy_raw(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data,
                     sizeof data);
    write_file(path, b.p, b.n);
    free(b.p);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_load(path, NULL, &t, &err), OQ_EUNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "x.npy: header: fortran_order True is not supported; save with "
                                  "np.ascontiguousarray"), "%s", err.msg);
    /* .npz loads from files too, and dispatches from PK. */
    trio r = trio_make();
    zmember m[3];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 3; i++) {
        m[i].name = trio_files[i];
        m[i].data = r.npy[i].p;
        m[i].len = r.npy[i].n;
        m[i].method = i == 1 ? 8 : 0;
    }
    bbuf z = zip_build(m, 3, (zopts){0});
    snprintf(path, sizeof path, "%s/three.npz", dir);
    write_file(path, z.p, z.n);
    memset(&err, 0, sizeof err);
    ck_assert_msg(oq_npz_load(path, NULL, &l, &err) == OQ_OK, "%s", err.msg);
    expect_trio(&r, &l, trio_names);
    oq_tensor_list_free(&l);
    ck_assert_msg(oq_tensorfile_load(path, NULL, &l, &err) == OQ_OK, "%s", err.msg);
    expect_trio(&r, &l, trio_names);
    oq_tensor_list_free(&l);
    /* A bad member names the archive and the member. */
    z.p[z.n - 22 - 3 * 46 - 30] ^= 0xff; /* inside the last member's data */
    write_file(path, z.p, z.n);
    memset(&err, 0, sizeof err);
    ck_assert(oq_npz_load(path, NULL, &l, &err) != OQ_OK);
    ck_assert_msg(strstr(err.msg, "three.npz: member '"), "%s", err.msg);
    free(z.p);
    trio_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- .npy round trips ------------------------------------------------------- */

START_TEST(npy_round_trip) {
    static const oq_dtype types[] = {
        OQ_DTYPE_FLOAT,  OQ_DTYPE_DOUBLE, OQ_DTYPE_FLOAT16, OQ_DTYPE_INT8,   OQ_DTYPE_UINT8,
        OQ_DTYPE_INT16,  OQ_DTYPE_UINT16, OQ_DTYPE_INT32,   OQ_DTYPE_UINT32, OQ_DTYPE_INT64,
        OQ_DTYPE_UINT64, OQ_DTYPE_BOOL,   OQ_DTYPE_COMPLEX64, OQ_DTYPE_COMPLEX128,
    };
    static const struct {
        int rank;
        int64_t dims[OQ_MAX_RANK];
    } shapes[] = {
        {0, {0}}, {1, {5}}, {2, {2, 3}}, {2, {0, 4}}, {1, {1}}, {8, {2, 1, 2, 1, 3, 1, 2, 1}},
    };
    char *dir = tu_mkdtemp();
    ck_assert(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/t.npy", dir);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            oq_tensor *t = pattern_tensor(types[k], shapes[s].rank, shapes[s].dims,
                                          (unsigned)(k * 7 + s));
            oq_error err = {0};
            ck_assert_msg(oq_npy_save(path, t, &err) == OQ_OK, "%s", err.msg);
            oq_tensor *back;
            ck_assert_msg(oq_npy_load(path, NULL, &back, &err) == OQ_OK, "%s %s",
                          oq_dtype_name(types[k]), err.msg);
            assert_same_tensor(t, back);
            ck_assert_str_eq(back->name, "t");
            size_t len;
            uint8_t *bytes = tu_read_file(path, &len);
            ck_assert(bytes);
            /* numpy's layout: 64-byte aligned data, header ends with '\n'. */
            ck_assert_uint_eq((len - t->nbytes) % 64, 0);
            ck_assert_int_eq(bytes[len - t->nbytes - 1], '\n');
            ck_assert_int_eq(bytes[6], 1);
            bbuf enc = encode(t);
            ck_assert(enc.n == len && memcmp(enc.p, bytes, len) == 0);
            free(enc.p);
            free(bytes);
            oq_tensor_free(back);
            oq_tensor_free(t);
        }
    }
    /* Exact header text for a scalar and a 1-d array, as numpy writes them. */
    int64_t five[] = {5};
    oq_tensor *t = pattern_tensor(OQ_DTYPE_FLOAT, 0, NULL, 0);
    bbuf b = encode(t);
    ck_assert(memcmp(b.p + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 55) == 0);
    free(b.p);
    oq_tensor_free(t);
    t = pattern_tensor(OQ_DTYPE_UINT8, 1, five, 0);
    b = encode(t);
    ck_assert(memcmp(b.p + 10, "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }", 57) == 0);
    free(b.p);
    oq_tensor_free(t);

    /* Only the final file is left behind (the temporary was renamed). */
    DIR *d = opendir(dir);
    ck_assert(d);
    int entries = 0;
    for (struct dirent *de; (de = readdir(d));)
        entries += de->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(entries, 1);

    /* A tensor whose byte count disagrees with its shape is not written. */
    int64_t three[] = {3};
    t = pattern_tensor(OQ_DTYPE_INT32, 1, three, 0);
    t->nbytes = 8;
    oq_error bad = {0};
    uint8_t *enc;
    size_t enc_len;
    ck_assert_int_eq(oq_npy_encode(t, &enc, &enc_len, &bad), OQ_EINVAL);
    t->nbytes = 12;
    oq_tensor_free(t);

    /* Types numpy has no dtype for, and unwritable places. */
    oq_error err = {0};
    int64_t two[] = {2};
    t = pattern_tensor(OQ_DTYPE_BFLOAT16, 1, two, 0);
    ck_assert_int_eq(oq_npy_save(path, t, &err), OQ_EUNSUPPORTED);
    oq_tensor_free(t);
    t = pattern_tensor(OQ_DTYPE_FLOAT, 1, two, 0);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_save("/nonexistent/dir/t.npy", t, &err), OQ_EIO);
    oq_tensor_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- .npy headers ------------------------------------------------------------ */

START_TEST(npy_header_variants) {
    oq_tensor *t;
    int64_t d23[] = {2, 3};
    /* Any key order, double quotes, odd whitespace, no trailing comma. */
    t = expect_good_header(1, "{\"shape\":(2,3),\"fortran_order\":False,\"descr\":\"<f4\"}\n", 24);
    assert_shape(t, OQ_DTYPE_FLOAT, 2, d23);
    oq_tensor_free(t);
    t = expect_good_header(1, "  {  'descr' : '<i4' ,\t'fortran_order':False,'shape':( 2 , 3 , ) , }  \n", 24);
    assert_shape(t, OQ_DTYPE_INT32, 2, d23);
    oq_tensor_free(t);
    /* Python 2 wrote long ints with an L. */
    t = expect_good_header(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (2L, 3L), }", 12);
    assert_shape(t, OQ_DTYPE_INT16, 2, d23);
    oq_tensor_free(t);
    t = expect_good_header(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 8);
    ck_assert_int_eq(t->rank, 0);
    ck_assert_int_eq(t->dtype, OQ_DTYPE_DOUBLE);
    oq_tensor_free(t);
    t = expect_good_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 7), }", 0);
    ck_assert_uint_eq(t->count, 0);
    oq_tensor_free(t);
    /* Version 2.0 and 3.0 have a 4-byte header length. */
    t = expect_good_header(2, "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }", 6);
    ck_assert_int_eq(t->dtype, OQ_DTYPE_UINT16);
    oq_tensor_free(t);
    t = expect_good_header(3, "{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }", 12);
    ck_assert_int_eq(t->dtype, OQ_DTYPE_UINT32);
    oq_tensor_free(t);
    /* Byte-order marks where they are valid for the size. */
    static const struct {
        const char *descr;
        oq_dtype dt;
        size_t size;
    } ok[] = {
        {"=f4", OQ_DTYPE_FLOAT, 4},  {"f4", OQ_DTYPE_FLOAT, 4},     {"<f2", OQ_DTYPE_FLOAT16, 2},
        {"|u1", OQ_DTYPE_UINT8, 1},  {"<u1", OQ_DTYPE_UINT8, 1},    {">u1", OQ_DTYPE_UINT8, 1},
        {"|i1", OQ_DTYPE_INT8, 1},   {"|b1", OQ_DTYPE_BOOL, 1},     {"<i8", OQ_DTYPE_INT64, 8},
        {"=u8", OQ_DTYPE_UINT64, 8}, {"<c8", OQ_DTYPE_COMPLEX64, 8}, {"<c16", OQ_DTYPE_COMPLEX128, 16},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3), }",
                 ok[i].descr);
        t = expect_good_header(1, hdr, 6 * ok[i].size);
        ck_assert_int_eq(t->dtype, ok[i].dt);
        oq_tensor_free(t);
    }
    /* Fortran order is the same layout when at most one dim exceeds 1. */
    t = expect_good_header(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 6, 1), }", 24);
    ck_assert_uint_eq(t->count, 6);
    oq_tensor_free(t);
    /* A max_tensor_bytes limit is exact. */
    uint8_t data[400] = {0};
    bbuf b = npy_raw(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }", data, 400);
    oq_error err = {0};
    ck_assert_int_eq(oq_npy_parse(b.p, b.n, 399, &t, &err), OQ_ELIMIT);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_parse(b.p, b.n, 400, &t, &err), OQ_OK);
    oq_tensor_free(t);
    free(b.p);
}
END_TEST

START_TEST(npy_bad_headers) {
    char hdr[256];
    static const struct {
        const char *descr;
        oq_status code;
        const char *msg;
    } bad[] = {
        {">f4", OQ_EUNSUPPORTED, "big-endian"},  {">i8", OQ_EUNSUPPORTED, "big-endian"},
        {"|O", OQ_EUNSUPPORTED, "object"},       {"<U5", OQ_EUNSUPPORTED, "unicode"},
        {"|S3", OQ_EUNSUPPORTED, "byte string"}, {"|V8", OQ_EUNSUPPORTED, "structured"},
        {"<M8[ns]", OQ_EUNSUPPORTED, "datetime"}, {"<m8", OQ_EUNSUPPORTED, "datetime"},
        {"|f4", OQ_EDATA, "byte order '|'"},     {"<f16", OQ_EUNSUPPORTED, "not a supported"},
        {"<f3", OQ_EUNSUPPORTED, NULL},          {"<x4", OQ_EUNSUPPORTED, NULL},
        {"<i4 ", OQ_EUNSUPPORTED, NULL},         {"", OQ_EUNSUPPORTED, NULL},
        {"<b2", OQ_EUNSUPPORTED, NULL},          {"<f99999999999", OQ_EUNSUPPORTED, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3), }",
                 bad[i].descr);
        expect_bad_header(1, hdr, 96, bad[i].code, bad[i].msg);
    }
    expect_bad_header(1, "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }",
                      16, OQ_EUNSUPPORTED, "structured");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
                      OQ_EUNSUPPORTED, "fortran_order True is not supported");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': 1, 'shape': (2, 3), }", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': Fals, 'shape': (2, 3), }", 24, OQ_EDATA, NULL);
    /* Shapes: rank, sign, overflow, not-a-tuple. */
    expect_bad_header(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }",
                      1, OQ_EUNSUPPORTED, "more than 8 dims");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", 12, OQ_EDATA,
                      "negative");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                      4, OQ_EDATA, "64 bits");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
                      4, OQ_EDATA, "overflows");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }",
                      4, OQ_EDATA, "overflows");
    /* Plausible but huge dims with little data: refused before allocating. */
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }",
                      4, OQ_EDATA, "truncated");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }", 20, OQ_EDATA,
                      "not a tuple");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }", 0, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,, 3), }", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3", 24, OQ_EDATA, NULL);
    /* Data shorter or longer than the shape needs. */
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23, OQ_EDATA,
                      "truncated");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 25, OQ_EDATA,
                      "trailing");
    /* Dict structure. */
    expect_bad_header(1, "{'descr': '<f4', 'shape': (2, 3), }", 24, OQ_EDATA, "missing key 'fortran_order'");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24,
                      OQ_EDATA, "unexpected key");
    expect_bad_header(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 24,
                      OQ_EDATA, "twice");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", 24, OQ_EDATA,
                      "after the dict");
    expect_bad_header(1, "{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3)}", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2, 3)}", 24, OQ_EDATA, "escape");
    expect_bad_header(1, "{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3)}", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "{descr: '<f4'}", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "hello", 24, OQ_EDATA, NULL);
    expect_bad_header(1, "", 0, OQ_EDATA, NULL);
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\xff", 24,
                      OQ_EDATA, "not printable ASCII");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\x01", 24,
                      OQ_EDATA, "not printable ASCII");
    expect_bad_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'descrxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': 1}",
                      24, OQ_EDATA, NULL);

    /* Magic, version, header length. */
    float data[6] = {0};
    oq_tensor *t = (oq_tensor *)1;
    oq_error err;
    bbuf b = npy_raw(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data, sizeof data);
    b.p[0] = 0x92;
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EDATA);
    ck_assert_msg(strstr(err.msg, "not an .npy"), "%s", err.msg);
    b.p[0] = 0x93;
    b.p[6] = 4;
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EUNSUPPORTED);
    b.p[6] = 1;
    b.p[7] = 1;
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EUNSUPPORTED);
    b.p[7] = 0;
    b.p[8] = 0xff;
    b.p[9] = 0xff; /* header length past the end of the file */
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EDATA);
    ck_assert_msg(strstr(err.msg, "runs past the end"), "%s", err.msg);
    b.p[8] = 4;
    b.p[9] = 0; /* a header that stops inside the dict */
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EDATA);
    free(b.p);
    /* v2 header length of 4 GiB - 1 with a tiny file. */
    b = npy_raw(2, "{}", NULL, 0);
    b.p[8] = b.p[9] = b.p[10] = b.p[11] = 0xff;
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_EDATA);
    free(b.p);
    /* A header longer than 1 MiB that really is there: a limit, not a read. */
    size_t big = ((size_t)1 << 20) + 64;
    char *h = malloc(big + 1);
    ck_assert(h);
    memset(h, ' ', big);
    h[big] = '\0';
    memcpy(h, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 55);
    b = npy_raw(2, h, data, 4);
    ck_assert_int_eq(parse_npy(&b, &t, &err), OQ_ELIMIT);
    free(b.p);
    free(h);
    ck_assert(t == NULL);
}
END_TEST

/* Every prefix of a valid file fails cleanly; so do prefixes of real data. */
START_TEST(npy_truncated) {
    int64_t d[] = {3, 4};
    oq_tensor *src = pattern_tensor(OQ_DTYPE_FLOAT, 2, d, 5);
    bbuf b = encode(src);
    oq_error err;
    oq_tensor *t;
    for (size_t n = 0; n < b.n; n++) {
        oq_status st = (memset(&err, 0, sizeof err), oq_npy_parse(b.p, n, 0, &t, &err));
        ck_assert_msg(st != OQ_OK, "prefix of %zu bytes parsed", n);
        ck_assert(t == NULL);
        ck_assert(err.msg[0] != '\0');
        /* Same bytes in a file of their own size: exactly sized buffers let
         * ASan see any read past the end. */
        uint8_t *exact = malloc(n ? n : 1);
        ck_assert(exact);
        memcpy(exact, b.p, n);
        memset(&err, 0, sizeof err);
        ck_assert(oq_npy_parse(exact, n, 0, &t, &err) != OQ_OK);
        oq_tensor_list l;
        memset(&err, 0, sizeof err);
        ck_assert(oq_tensorfile_parse(exact, n, "p", NULL, &l, &err) != OQ_OK);
        free(exact);
    }
    ck_assert_int_eq((memset(&err, 0, sizeof err), oq_npy_parse(b.p, b.n, 0, &t, &err)), OQ_OK);
    oq_tensor_free(t);
    free(b.p);
    oq_tensor_free(src);

    size_t len;
    uint8_t *labels = tu_read_file(tu_shared_path("models/data/mnist/mnist_labels.npy"), &len);
    ck_assert(labels);
    size_t cuts[] = {0, 5, 9, 10, 11, 64, 127, 128, 129, 135, 136, len / 2, len - 8, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        memset(&err, 0, sizeof err);
        ck_assert_msg(oq_npy_parse(labels, cuts[i], 0, &t, &err) != OQ_OK, "cut at %zu", cuts[i]);
    }
    /* ... and on disk, where the data is read straight into the tensor. */
    char *dir = tu_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/cut.npy", dir);
    write_file(path, labels, len - 8);
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(oq_npy_load(path, NULL, &t, &err), OQ_EDATA);
    tu_rmtree(dir);
    free(dir);
    free(labels);
}
END_TEST

/* Flipping bytes of a valid file never crashes; what parses is consistent. */
START_TEST(npy_byte_flips) {
    int64_t d[] = {2, 2, 3};
    oq_tensor *src = pattern_tensor(OQ_DTYPE_INT16, 3, d, 9);
    bbuf b = encode(src);
    uint8_t *copy = malloc(b.n);
    ck_assert(copy);
    static const uint8_t xors[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    size_t accepted = 0;
    for (size_t pos = 0; pos < b.n; pos++) {
        for (size_t k = 0; k < sizeof xors; k++) {
            memcpy(copy, b.p, b.n);
            copy[pos] ^= xors[k];
            oq_error err = {0};
            oq_tensor *t;
            if (oq_npy_parse(copy, b.n, 0, &t, &err) == OQ_OK) {
                ck_assert_uint_le(t->nbytes, b.n);
                accepted++;
                oq_tensor_free(t);
            } else {
                ck_assert(err.msg[0] != '\0');
            }
        }
    }
    ck_assert_uint_gt(accepted, 0); /* data-byte flips still parse */
    /* Random multi-byte damage in the header. */
    srand(1234);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(copy, b.p, b.n);
        int flips = 1 + rand() % 4;
        for (int f = 0; f < flips; f++)
            copy[(size_t)rand() % 128] = (uint8_t)rand();
        oq_error err = {0};
        oq_tensor *t;
        if (oq_npy_parse(copy, b.n, 0, &t, &err) == OQ_OK)
            oq_tensor_free(t);
    }
    free(copy);
    free(b.p);
    oq_tensor_free(src);
}
END_TEST

/* ---- .npz ------------------------------------------------------------------- */

START_TEST(npz_python_fixtures) {
    static const float a[6] = {1, 2, 3, 4, 5, 6};
    static const int64_t labels[3] = {7, 8, 9};
    const struct {
        const uint8_t *p;
        size_t n;
    } fx[] = {{py_savez_stored, sizeof py_savez_stored},
              {py_savez_deflated_stream, sizeof py_savez_deflated_stream}};
    for (size_t k = 0; k < 2; k++) {
        oq_error err = {0};
        oq_tensor_list l;
        ck_assert_msg(oq_tensorfile_parse(fx[k].p, fx[k].n, NULL, NULL, &l, &err) == OQ_OK, "%s",
                      err.msg);
        ck_assert_uint_eq(l.count, 2);
        int64_t d23[] = {2, 3}, d3[] = {3};
        ck_assert_str_eq(l.items[0]->name, "a");
        assert_shape(l.items[0], OQ_DTYPE_FLOAT, 2, d23);
        ck_assert(memcmp(l.items[0]->data, a, sizeof a) == 0);
        ck_assert_str_eq(l.items[1]->name, "labels");
        assert_shape(l.items[1], OQ_DTYPE_INT64, 1, d3);
        ck_assert(memcmp(l.items[1]->data, labels, sizeof labels) == 0);
        oq_tensor_list_free(&l);
        /* Every truncation fails; every single-byte flip fails or parses. */
        for (size_t n = 0; n < fx[k].n; n++) {
            uint8_t *cut = malloc(n ? n : 1);
            ck_assert(cut);
            memcpy(cut, fx[k].p, n);
            memset(&err, 0, sizeof err);
            ck_assert_msg(oq_npz_parse(cut, n, NULL, &l, &err) != OQ_OK, "cut at %zu", n);
            free(cut);
        }
        uint8_t *copy = malloc(fx[k].n);
        ck_assert(copy);
        for (size_t pos = 0; pos < fx[k].n; pos++) {
            for (unsigned x = 1; x < 256; x <<= 1) {
                memcpy(copy, fx[k].p, fx[k].n);
                copy[pos] ^= (uint8_t)x;
                memset(&err, 0, sizeof err);
                if (oq_npz_parse(copy, fx[k].n, NULL, &l, &err) == OQ_OK)
                    oq_tensor_list_free(&l);
                else
                    ck_assert(err.msg[0] != '\0');
            }
        }
        free(copy);
    }
}
END_TEST

static void trio_members(const trio *r, zmember m[3], int method) {
    memset(m, 0, 3 * sizeof *m);
    for (int i = 0; i < 3; i++) {
        m[i].name = trio_files[i];
        m[i].data = r->npy[i].p;
        m[i].len = r->npy[i].n;
        m[i].method = method < 0 ? (i % 2 ? 8 : 0) : method;
    }
}

static void expect_trio_zip(const trio *r, const zmember *m, size_t n, zopts o) {
    bbuf z = zip_build(m, n, o);
    oq_error err;
    oq_tensor_list l;
    ck_assert_msg(parse_npz(&z, NULL, &l, &err) == OQ_OK, "%s", err.msg);
    expect_trio(r, &l, trio_names);
    oq_tensor_list_free(&l);
    free(z.p);
}

START_TEST(npz_variants) {
    trio r = trio_make();
    zmember m[4];
    static const int methods[] = {-1, 0, 8}; /* -1: stored and deflated mixed */
    for (size_t k = 0; k < 3; k++) {
        trio_members(&r, m, methods[k]);
        expect_trio_zip(&r, m, 3, (zopts){0});
        expect_trio_zip(&r, m, 3, (zopts){.comment = "written by a test"});
        expect_trio_zip(&r, m, 3, (zopts){.zip64_eocd = true});
        for (int i = 0; i < 3; i++)
            m[i].zip64_local = m[i].zip64_central = true;
        expect_trio_zip(&r, m, 3, (zopts){.zip64_eocd = true});
        for (int i = 0; i < 3; i++) {
            m[i].zip64_central = false;
            m[i].descriptor = true;
            m[i].no_dd_signature = i == 1;
        }
        expect_trio_zip(&r, m, 3, (zopts){0});
        for (int i = 0; i < 3; i++)
            m[i].zip64_local = false;
        expect_trio_zip(&r, m, 3, (zopts){0});
    }
    /* A folder entry (zip -r) is skipped. */
    trio_members(&r, m, 0);
    m[3] = m[2];
    m[2] = (zmember){.name = "img/", .data = (const uint8_t *)"", .len = 0};
    expect_trio_zip(&r, m, 4, (zopts){0});
    /* The empty archive, alone and through the dispatcher. */
    bbuf z = zip_build(NULL, 0, (zopts){0});
    ck_assert_uint_eq(z.n, 22);
    oq_error err;
    oq_tensor_list l;
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_OK);
    ck_assert_uint_eq(l.count, 0);
    oq_tensor_list_free(&l);
    ck_assert_int_eq(oq_tensorfile_parse(z.p, z.n, NULL, NULL, &l, &err), OQ_OK);
    ck_assert(l.count == 0 && l.items == NULL);
    free(z.p);
    trio_free(&r);
}
END_TEST

START_TEST(npz_bad_members) {
    trio r = trio_make();
    zmember m[3];
    oq_tensorfile_limits lim = {0};
    trio_members(&r, m, 8);
    m[1].crc_xor = 0x10;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "CRC-32 mismatch");
    trio_members(&r, m, 0);
    m[2].crc_xor = 1;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "CRC-32 mismatch");
    trio_members(&r, m, 0);
    m[0].flags = 1;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EUNSUPPORTED, "encrypted");
    trio_members(&r, m, 0);
    m[1].fake_method = 12;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EUNSUPPORTED, "method 12");
    trio_members(&r, m, 0);
    m[1].name = "readme.txt";
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EUNSUPPORTED, "member 'readme.txt': not an .npy");
    trio_members(&r, m, 0);
    m[2].name = "x.npy";
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "appears earlier");
    /* Offsets that point past the end, or into the central directory. */
    trio_members(&r, m, 0);
    m[1].local_off = 1u << 30;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "outside");
    trio_members(&r, m, 0);
    m[1].local_off = 0xFFFFFFF0u;
    m[1].zip64_central = true;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "outside");
    trio_members(&r, m, 0);
    m[1].local_off = 3; /* no local header there */
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "signature");
    trio_members(&r, m, 0);
    m[2].csize_delta = 1u << 20;
    m[2].usize_delta = 1 << 20;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "runs past");
    /* Stored sizes that disagree, descriptors that disagree. */
    trio_members(&r, m, 0);
    m[0].usize_delta = 4;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "stored member");
    trio_members(&r, m, 8);
    m[1].descriptor = m[1].bad_descriptor = true;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "data descriptor");
    trio_members(&r, m, 8);
    m[1].descriptor = m[1].bad_descriptor = m[1].zip64_local = true;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "data descriptor");
    /* Deflate streams longer or shorter than declared. */
    static const uint8_t junk[64] = {1, 2, 3};
    trio_members(&r, m, 8);
    m[0].tail = junk;
    m[0].tail_len = sizeof junk;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "more than the declared");
    trio_members(&r, m, 8);
    m[0].trim = 8;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, "ends after");
    /* Declared size disagreeing with the .npy inside. */
    trio_members(&r, m, 8);
    m[0].usize_delta = -4;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, NULL);
    trio_members(&r, m, 8);
    m[0].usize_delta = 4;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EDATA, NULL);
    /* An .npy inside that is itself refused names the member. */
    float d6[6] = {0};
    bbuf f = npy_raw(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", d6, sizeof d6);
    trio_members(&r, m, 8);
    m[1].data = f.p;
    m[1].len = f.n;
    expect_npz_error(m, 3, (zopts){0}, NULL, OQ_EUNSUPPORTED,
                     "member 'labels.npy': header: fortran_order True");
    free(f.p);
    /* Member count and total size limits. */
    trio_members(&r, m, 0);
    lim = (oq_tensorfile_limits){.max_members = 2};
    expect_npz_error(m, 3, (zopts){0}, &lim, OQ_ELIMIT, "3 members");
    lim = (oq_tensorfile_limits){.max_total_bytes = 24 + 40 + 11};
    expect_npz_error(m, 3, (zopts){0}, &lim, OQ_ELIMIT, NULL);
    lim.max_total_bytes = 24 + 40 + 12;
    bbuf z = zip_build(m, 3, (zopts){0});
    oq_error err;
    oq_tensor_list l;
    ck_assert_msg(parse_npz(&z, &lim, &l, &err) == OQ_OK, "%s", err.msg);
    oq_tensor_list_free(&l);
    lim = (oq_tensorfile_limits){.max_file_bytes = z.n - 1};
    ck_assert_int_eq(parse_npz(&z, &lim, &l, &err), OQ_ELIMIT);
    /* Damaged end records and central directories. */
    z.p[z.n - 22 + 10] = 200; /* total entries */
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_EUNSUPPORTED); /* != entries on disk */
    z.p[z.n - 22 + 8] = 200;
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_EDATA);
    z.p[z.n - 22 + 8] = z.p[z.n - 22 + 10] = 3;
    z.p[z.n - 22 + 16] ^= 1; /* central directory offset */
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_EDATA);
    z.p[z.n - 22 + 16] ^= 1;
    z.p[z.n - 22 + 4] = 1; /* disk number */
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_EUNSUPPORTED);
    z.p[z.n - 22 + 4] = 0;
    z.p[z.n - 1] = 'x'; /* trailing byte: no end record ends the file */
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_EDATA);
    free(z.p);
    trio_free(&r);
}
END_TEST

START_TEST(npz_zip_bomb) {
    /* 32 MiB of zeros deflates to ~32 KiB; the declared size is refused
     * before anything is inflated or allocated. */
    int64_t d[] = {(int64_t)8 << 20};
    oq_tensor *big = pattern_tensor(OQ_DTYPE_FLOAT, 1, d, 0);
    memset(big->data, 0, big->nbytes);
    bbuf npy = encode(big);
    oq_tensor_free(big);
    zmember m = {.name = "bomb.npy", .data = npy.p, .len = npy.n, .method = 8};
    bbuf z = zip_build(&m, 1, (zopts){0});
    ck_assert_uint_lt(z.n, 100000);
    oq_tensorfile_limits lim = {.max_tensor_bytes = 1 << 20};
    oq_error err;
    oq_tensor_list l;
    ck_assert_int_eq(parse_npz(&z, &lim, &l, &err), OQ_ELIMIT);
    ck_assert_msg(strstr(err.msg, "uncompressed bytes"), "%s", err.msg);
    lim = (oq_tensorfile_limits){.max_total_bytes = 1 << 20};
    ck_assert_int_eq(parse_npz(&z, &lim, &l, &err), OQ_ELIMIT);
    free(z.p);
    /* Lying about the size: declared small (and matching a small .npy
     * header), the stream inflates to far more: stopped at the declared size. */
    int64_t small[] = {16};
    oq_tensor *s = pattern_tensor(OQ_DTYPE_FLOAT, 1, small, 0);
    bbuf head = encode(s);
    oq_tensor_free(s);
    m = (zmember){.name = "liar.npy", .data = head.p, .len = head.n, .method = 8,
                  .tail = npy.p, .tail_len = npy.n};
    z = zip_build(&m, 1, (zopts){0});
    ck_assert_int_eq(parse_npz(&z, &lim, &l, &err), OQ_EDATA);
    ck_assert_msg(strstr(err.msg, "more than the declared"), "%s", err.msg);
    free(z.p);
    /* The same archive through ZIP64 fields claiming 2^62 bytes. */
    m = (zmember){.name = "huge.npy", .data = npy.p, .len = npy.n, .method = 8,
                  .zip64_local = true, .zip64_central = true, .usize_delta = (int64_t)1 << 62};
    z = zip_build(&m, 1, (zopts){.zip64_eocd = true});
    ck_assert_int_eq(parse_npz(&z, NULL, &l, &err), OQ_ELIMIT);
    free(z.p);
    free(head.p);
    free(npy.p);
    /* Member-count bomb: the limit is checked before the directory is read. */
    bbuf e = {0};
    bb_u32(&e, 0x06054b50);
    bb_u16(&e, 0);
    bb_u16(&e, 0);
    bb_u16(&e, 60000);
    bb_u16(&e, 60000);
    bb_u32(&e, 0);
    bb_u32(&e, 0);
    bb_u16(&e, 0);
    ck_assert_int_eq(parse_npz(&e, NULL, &l, &err), OQ_ELIMIT);
    lim = (oq_tensorfile_limits){.max_members = 100000};
    ck_assert_int_eq(parse_npz(&e, &lim, &l, &err), OQ_EDATA);
    free(e.p);
}
END_TEST

START_TEST(npz_truncated_and_flipped) {
    trio r = trio_make();
    zmember m[3];
    for (int variant = 0; variant < 3; variant++) {
        trio_members(&r, m, -1);
        zopts o = {0};
        if (variant == 1) {
            for (int i = 0; i < 3; i++)
                m[i].zip64_local = m[i].zip64_central = true;
            o.zip64_eocd = true;
        } else if (variant == 2) {
            for (int i = 0; i < 3; i++)
                m[i].descriptor = true;
            o.comment = "c";
        }
        bbuf z = zip_build(m, 3, o);
        oq_error err;
        oq_tensor_list l;
        for (size_t n = 0; n < z.n; n++) {
            uint8_t *cut = malloc(n ? n : 1);
            ck_assert(cut);
            memcpy(cut, z.p, n);
            ck_assert_msg(parse_npz(&(bbuf){cut, n, n}, NULL, &l, &err) != OQ_OK,
                          "variant %d cut at %zu", variant, n);
            ck_assert(l.count == 0);
            free(cut);
        }
        uint8_t *copy = malloc(z.n);
        ck_assert(copy);
        for (size_t pos = 0; pos < z.n; pos++) {
            for (unsigned x = 1; x < 256; x <<= 1) {
                memcpy(copy, z.p, z.n);
                copy[pos] ^= (uint8_t)x;
                if (parse_npz(&(bbuf){copy, z.n, z.n}, NULL, &l, &err) == OQ_OK)
                    oq_tensor_list_free(&l);
            }
        }
        srand(42 + (unsigned)variant);
        for (int iter = 0; iter < 5000; iter++) {
            memcpy(copy, z.p, z.n);
            for (int f = 0; f < 3; f++)
                copy[(size_t)rand() % z.n] = (uint8_t)rand();
            if (parse_npz(&(bbuf){copy, z.n, z.n}, NULL, &l, &err) == OQ_OK)
                oq_tensor_list_free(&l);
        }
        free(copy);
        free(z.p);
    }
    trio_free(&r);
}
END_TEST

static Suite *tensorfile_suite(void) {
    Suite *s = suite_create("tensorfile");
    TCase *tc = tcase_create("shared");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, shared_calibration_inputs);
    tcase_add_test(tc, shared_labels_and_references);
    tcase_add_test(tc, pb_dispatch);
    tcase_add_test(tc, file_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("npy");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, npy_round_trip);
    tcase_add_test(tc, npy_header_variants);
    tcase_add_test(tc, npy_bad_headers);
    tcase_add_test(tc, npy_truncated);
    tcase_add_test(tc, npy_byte_flips);
    suite_add_tcase(s, tc);
    tc = tcase_create("npz");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, npz_python_fixtures);
    tcase_add_test(tc, npz_variants);
    tcase_add_test(tc, npz_bad_members);
    tcase_add_test(tc, npz_zip_bomb);
    tcase_add_test(tc, npz_truncated_and_flipped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(tensorfile_suite());
}
