/* tensorfile.c: .npy / .npz / TensorProto readers and the .npy writer.
 * One decoder reads an .npy from a "byte source" (memory, a file, or a ZIP
 * member being inflated), so every path shares the same checks. */
#define ZLIB_CONST
#include "tensorfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "checked.h"
#include "tensorproto.h"

/* .npy data is little-endian and copied as is. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensorfile.c assumes a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy itself refuses headers over 10000 bytes by default; a valid numeric
 * header is under 300, so 1 MiB only bounds the allocation. */
#define NPY_MAX_HEADER ((size_t)1 << 20)
#define NPY_MAX_PREAMBLE 12

#define ZIP_LOCAL_SIG 0x04034b50u
#define ZIP_CENTRAL_SIG 0x02014b50u
#define ZIP_EOCD_SIG 0x06054b50u
#define ZIP64_EOCD_SIG 0x06064b50u
#define ZIP64_LOCATOR_SIG 0x07064b50u
#define ZIP_DESCRIPTOR_SIG 0x08074b50u
#define ZIP_LOCAL_LEN 30u
#define ZIP_CENTRAL_LEN 46u
#define ZIP_EOCD_LEN 22u
#define ZIP64_EOCD_LEN 56u
#define ZIP64_LOCATOR_LEN 20u
#define ZIP_FLAG_ENCRYPTED 0x0001u
#define ZIP_FLAG_DESCRIPTOR 0x0008u
#define ZIP_FLAG_STRONG_ENCRYPTION 0x0040u
#define ZIP_FLAG_MASKED_HEADERS 0x2000u
#define ZIP_METHOD_STORED 0
#define ZIP_METHOD_DEFLATED 8

static oq_tensorfile_limits limits_resolve(const oq_tensorfile_limits *l) {
    oq_tensorfile_limits r = {0};
    if (l)
        r = *l;
    if (!r.max_file_bytes)
        r.max_file_bytes = OQ_TENSORFILE_DEFAULT_MAX_FILE;
    if (!r.max_tensor_bytes)
        r.max_tensor_bytes = OQ_TENSORFILE_DEFAULT_MAX_TENSOR;
    if (!r.max_total_bytes)
        r.max_total_bytes = OQ_TENSORFILE_DEFAULT_MAX_TOTAL;
    if (!r.max_members)
        r.max_members = OQ_TENSORFILE_DEFAULT_MAX_MEMBERS;
    return r;
}

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

void oq_tensor_list_free(oq_tensor_list *l) {
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        oq_tensor_free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* The file name without folders and without its last extension. */
static char *file_stem(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = '\0';
    }
    return s;
}

/* A printable rendering of untrusted bytes (a member name) for messages. */
static const char *printable(const uint8_t *s, size_t n, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++)
        buf[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (o + 4 >= cap && n > o) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* ---- byte sources --------------------------------------------------- */

/* Delivers exactly `total` bytes, in order, from memory (stored), from a
 * file descriptor, or by inflating a raw deflate stream; optionally keeps
 * the CRC-32 of everything delivered. */
typedef enum { SRC_MEMORY, SRC_FD, SRC_DEFLATE } src_kind;

typedef struct {
    src_kind kind;
    const uint8_t *in; /* SRC_MEMORY: the bytes; SRC_DEFLATE: compressed bytes */
    size_t in_len;
    size_t in_fed;     /* SRC_DEFLATE: compressed bytes handed to zlib */
    int fd;            /* SRC_FD */
    size_t total;      /* bytes this source delivers */
    size_t done;       /* bytes delivered so far */
    bool crc_on;
    uint32_t crc;
    bool z_init, z_end;
    z_stream zs;
} bsrc;

static void bsrc_memory(bsrc *s, const uint8_t *data, size_t len) {
    memset(s, 0, sizeof *s);
    s->kind = SRC_MEMORY;
    s->in = data;
    s->in_len = len;
    s->total = len;
    s->fd = -1;
}

static void bsrc_fd(bsrc *s, int fd, size_t len) {
    memset(s, 0, sizeof *s);
    s->kind = SRC_FD;
    s->fd = fd;
    s->total = len;
}

static oq_status bsrc_deflate(bsrc *s, const uint8_t *in, size_t in_len, size_t total,
                              oq_error *err) {
    memset(s, 0, sizeof *s);
    s->kind = SRC_DEFLATE;
    s->in = in;
    s->in_len = in_len;
    s->total = total;
    s->fd = -1;
    /* windowBits -15: a ZIP member is a raw deflate stream, no zlib header. */
    if (inflateInit2(&s->zs, -15) != Z_OK)
        return oq_err(err, OQ_ENOMEM, "out of memory starting zlib inflate");
    s->z_init = true;
    return OQ_OK;
}

static void bsrc_end(bsrc *s) {
    if (s->z_init)
        inflateEnd(&s->zs);
    s->z_init = false;
}

/* One inflate call into out[0..cap); *got = bytes produced. */
static oq_status bsrc_step(bsrc *s, uint8_t *out, size_t cap, size_t *got, oq_error *err) {
    if (s->zs.avail_in == 0 && s->in_fed < s->in_len) {
        size_t chunk = s->in_len - s->in_fed;
        if (chunk > UINT_MAX)
            chunk = UINT_MAX;
        s->zs.next_in = s->in + s->in_fed;
        s->zs.avail_in = (uInt)chunk;
        s->in_fed += chunk;
    }
    uInt avail = cap > UINT_MAX ? UINT_MAX : (uInt)cap;
    uInt in_before = s->zs.avail_in;
    s->zs.next_out = out;
    s->zs.avail_out = avail;
    int zr = inflate(&s->zs, Z_NO_FLUSH);
    *got = avail - s->zs.avail_out;
    switch (zr) {
    case Z_STREAM_END:
        s->z_end = true;
        return OQ_OK;
    case Z_OK:
        if (*got || s->zs.avail_in != in_before)
            return OQ_OK;
        break;
    case Z_BUF_ERROR:
        break;
    case Z_MEM_ERROR:
        return oq_err(err, OQ_ENOMEM, "out of memory inflating");
    default:
        return oq_err(err, OQ_EDATA, "corrupt deflate data after %zu output bytes: %s",
                      s->done, s->zs.msg ? s->zs.msg : "zlib error");
    }
    /* No progress: zlib wants input there is none of. */
    return oq_err(err, OQ_EDATA,
                  "deflate data is truncated: its %zu compressed bytes end after %zu of %zu "
                  "output bytes",
                  s->in_len, s->done, s->total);
}

static oq_status bsrc_read(bsrc *s, void *dst, size_t n, oq_error *err) {
    if (n > s->total - s->done)
        return oq_err(err, OQ_EINTERNAL, "read of %zu bytes past the %zu-byte source", n, s->total);
    uint8_t *d = dst;
    if (s->kind == SRC_MEMORY) {
        if (n)
            memcpy(d, s->in + s->done, n);
    } else if (s->kind == SRC_FD) {
        size_t got = 0;
        while (got < n) {
            size_t want = n - got > ((size_t)1 << 30) ? (size_t)1 << 30 : n - got;
            ssize_t r = pread(s->fd, d + got, want, (off_t)(s->done + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return oq_err(err, OQ_EIO, "read error at byte %zu: %s", s->done + got,
                              strerror(errno));
            if (r == 0)
                return oq_err(err, OQ_EIO, "file shrank while being read (ends at byte %zu)",
                              s->done + got);
            got += (size_t)r;
        }
    } else {
        size_t got = 0;
        while (got < n) {
            if (s->z_end)
                return oq_err(err, OQ_EDATA,
                              "deflate data ends after %zu bytes; the member declares %zu",
                              s->done + got, s->total);
            size_t step;
            oq_status st = bsrc_step(s, d + got, n - got, &step, err);
            if (st != OQ_OK)
                return st;
            got += step;
        }
    }
    if (s->crc_on)
        s->crc = (uint32_t)crc32_z(s->crc, d, n);
    s->done += n;
    return OQ_OK;
}

/* After the last byte: a deflate stream must end exactly there. */
static oq_status bsrc_finish(bsrc *s, oq_error *err) {
    if (s->done != s->total)
        return oq_err(err, OQ_EINTERNAL, "source left with %zu unread bytes", s->total - s->done);
    while (s->kind == SRC_DEFLATE && !s->z_end) {
        uint8_t extra;
        size_t got;
        oq_status st = bsrc_step(s, &extra, 1, &got, err);
        if (st != OQ_OK)
            return st;
        if (got)
            return oq_err(err, OQ_EDATA, "deflate data inflates to more than the declared %zu bytes",
                          s->total);
    }
    return OQ_OK;
}

/* ---- .npy header ---------------------------------------------------- */

typedef struct {
    oq_dtype dtype;
    int rank;
    int64_t dims[OQ_MAX_RANK];
    bool fortran;
} npy_info;

typedef struct {
    const char *s;
    size_t n, i;
    size_t base; /* file offset of s[0], for messages */
    oq_error *err;
} hparse;

static oq_status hp_fail(const hparse *h, oq_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static oq_status hp_fail(const hparse *h, oq_status code, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return oq_err(h->err, code, "header: %s (byte %zu)", what, h->base + h->i);
}

static bool hp_is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void hp_ws(hparse *h) {
    while (h->i < h->n && hp_is_ws(h->s[h->i]))
        h->i++;
}

static int hp_peek(const hparse *h) {
    return h->i < h->n ? (unsigned char)h->s[h->i] : -1;
}

/* A Python string literal in single or double quotes, no escapes. */
static oq_status hp_string(hparse *h, char *buf, size_t cap) {
    char q = h->s[h->i++];
    size_t start = h->i;
    while (h->i < h->n && h->s[h->i] != q) {
        if (h->s[h->i] == '\\')
            return hp_fail(h, OQ_EDATA, "escape sequences are not supported in header strings");
        h->i++;
    }
    if (h->i >= h->n)
        return hp_fail(h, OQ_EDATA, "unterminated string");
    size_t len = h->i - start;
    h->i++;
    if (len >= cap)
        return hp_fail(h, OQ_EDATA, "string of %zu characters is longer than any valid value", len);
    memcpy(buf, h->s + start, len);
    buf[len] = '\0';
    return OQ_OK;
}

static oq_status hp_bool(hparse *h, bool *out) {
    size_t start = h->i;
    while (h->i < h->n && ((h->s[h->i] >= 'A' && h->s[h->i] <= 'Z') ||
                           (h->s[h->i] >= 'a' && h->s[h->i] <= 'z')))
        h->i++;
    size_t len = h->i - start;
    if (len == 4 && memcmp(h->s + start, "True", 4) == 0)
        *out = true;
    else if (len == 5 && memcmp(h->s + start, "False", 5) == 0)
        *out = false;
    else {
        h->i = start;
        return hp_fail(h, OQ_EDATA, "fortran_order must be True or False");
    }
    return OQ_OK;
}

/* A tuple of non-negative ints: "()", "(5,)", "(2, 3)", "(2L, 3L)" (Python 2). */
static oq_status hp_shape(hparse *h, npy_info *info) {
    if (hp_peek(h) != '(')
        return hp_fail(h, OQ_EDATA, "shape must be a tuple such as (2, 3)");
    h->i++;
    int rank = 0;
    bool comma = false;
    for (;;) {
        hp_ws(h);
        int c = hp_peek(h);
        if (c < 0)
            return hp_fail(h, OQ_EDATA, "unterminated shape tuple");
        if (c == ')') {
            /* Python reads "(5)" as the int 5, and numpy rejects it. */
            if (rank == 1 && !comma)
                return hp_fail(h, OQ_EDATA, "shape (%lld) is not a tuple; a 1-d shape is (%lld,)",
                               (long long)info->dims[0], (long long)info->dims[0]);
            h->i++;
            break;
        }
        if (rank > 0 && !comma)
            return hp_fail(h, OQ_EDATA, "expected ',' between shape dims");
        bool neg = false;
        if (c == '-') {
            neg = true;
            h->i++;
        }
        if (hp_peek(h) < '0' || hp_peek(h) > '9')
            return hp_fail(h, OQ_EDATA, "expected a dim in shape, found '%c'",
                           hp_peek(h) < 0 ? '?' : hp_peek(h));
        int64_t v = 0;
        while (hp_peek(h) >= '0' && hp_peek(h) <= '9') {
            if (!oq_mul_i64(v, 10, &v) || !oq_add_i64(v, h->s[h->i] - '0', &v))
                return hp_fail(h, OQ_EDATA, "shape dim %d does not fit in 64 bits", rank);
            h->i++;
        }
        if (hp_peek(h) == 'L' || hp_peek(h) == 'l')
            h->i++;
        if (neg && v != 0)
            return hp_fail(h, OQ_EDATA, "shape dim %d is negative (-%lld)", rank, (long long)v);
        if (rank == OQ_MAX_RANK)
            return hp_fail(h, OQ_EUNSUPPORTED, "shape has more than %d dims", OQ_MAX_RANK);
        info->dims[rank++] = v;
        comma = false;
        hp_ws(h);
        if (hp_peek(h) == ',') {
            h->i++;
            comma = true;
        }
    }
    info->rank = rank;
    return OQ_OK;
}

/* descr such as '<f4' to a dtype; what numpy writes is order + kind + size. */
static oq_status npy_descr_dtype(const char *d, oq_dtype *out, oq_error *err) {
    const char *p = d;
    char order = 0;
    if (*p == '<' || *p == '>' || *p == '=' || *p == '|')
        order = *p++;
    char kind = *p ? *p++ : 0;
    switch (kind) {
    case 'O':
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is an object array (pickled Python objects); "
                      "only numeric arrays are supported", d);
    case 'U':
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is a unicode string array; only numeric arrays are "
                      "supported", d);
    case 'S':
    case 'a':
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is a byte string array; only numeric arrays are "
                      "supported", d);
    case 'V':
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is a void/structured dtype; only numeric arrays are "
                      "supported", d);
    case 'M':
    case 'm':
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is a datetime/timedelta array; only numeric arrays are "
                      "supported", d);
    default:
        break;
    }
    unsigned size = 0;
    bool digits = false;
    while (*p >= '0' && *p <= '9' && size < 1000) {
        size = size * 10 + (unsigned)(*p++ - '0');
        digits = true;
    }
    static const struct {
        char kind;
        unsigned size;
        oq_dtype dtype;
    } map[] = {
        {'f', 2, OQ_DTYPE_FLOAT16}, {'f', 4, OQ_DTYPE_FLOAT},      {'f', 8, OQ_DTYPE_DOUBLE},
        {'i', 1, OQ_DTYPE_INT8},    {'i', 2, OQ_DTYPE_INT16},      {'i', 4, OQ_DTYPE_INT32},
        {'i', 8, OQ_DTYPE_INT64},   {'u', 1, OQ_DTYPE_UINT8},      {'u', 2, OQ_DTYPE_UINT16},
        {'u', 4, OQ_DTYPE_UINT32},  {'u', 8, OQ_DTYPE_UINT64},     {'b', 1, OQ_DTYPE_BOOL},
        {'c', 8, OQ_DTYPE_COMPLEX64}, {'c', 16, OQ_DTYPE_COMPLEX128},
    };
    oq_dtype dt = OQ_DTYPE_UNDEFINED;
    if (digits && *p == '\0')
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (map[i].kind == kind && map[i].size == size)
                dt = map[i].dtype;
    if (dt == OQ_DTYPE_UNDEFINED)
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is not a supported dtype (supported: f2 f4 f8 i1 i2 i4 "
                      "i8 u1 u2 u4 u8 b1 c8 c16, little-endian)", d);
    if (size > 1 && order == '>')
        return oq_err(err, OQ_EUNSUPPORTED,
                      "header: descr '%s' is big-endian; convert with arr.astype('<%c%u')", d,
                      kind, size);
    /* '|' means "byte order not applicable", which is only true of 1 byte. */
    if (size > 1 && order == '|')
        return oq_err(err, OQ_EDATA, "header: descr '%s' uses byte order '|' on a %u-byte type", d,
                      size);
    *out = dt;
    return OQ_OK;
}

/* Parses the header dict s[0..n), which starts at file offset base. */
static oq_status npy_header_parse(const char *s, size_t n, size_t base, npy_info *info,
                                  oq_error *err) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 || c > 0x7e) && c != '\n' && c != '\t' && c != '\r')
            return oq_err(err, OQ_EDATA, "header: byte %zu is 0x%02x, not printable ASCII",
                          base + i, c);
    }
    hparse h = {s, n, 0, base, err};
    char descr[32] = "";
    bool have_descr = false, have_fortran = false, have_shape = false;
    oq_status st;
    memset(info, 0, sizeof *info);
    hp_ws(&h);
    if (hp_peek(&h) != '{')
        return hp_fail(&h, OQ_EDATA, "expected a Python dict starting with '{'");
    h.i++;
    for (;;) {
        hp_ws(&h);
        int c = hp_peek(&h);
        if (c == '}') {
            h.i++;
            break;
        }
        if (c != '\'' && c != '"')
            return hp_fail(&h, OQ_EDATA, "%s", c < 0 ? "unterminated dict" : "expected a quoted key");
        char key[32];
        size_t key_at = h.i;
        if ((st = hp_string(&h, key, sizeof key)) != OQ_OK)
            return st;
        hp_ws(&h);
        if (hp_peek(&h) != ':')
            return hp_fail(&h, OQ_EDATA, "expected ':' after key '%s'", key);
        h.i++;
        hp_ws(&h);
        c = hp_peek(&h);
        bool *seen = strcmp(key, "descr") == 0           ? &have_descr
                     : strcmp(key, "fortran_order") == 0 ? &have_fortran
                     : strcmp(key, "shape") == 0         ? &have_shape
                                                         : NULL;
        if (!seen) {
            h.i = key_at;
            return hp_fail(&h, OQ_EDATA,
                           "unexpected key '%s' (an .npy header has exactly 'descr', "
                           "'fortran_order' and 'shape')", key);
        }
        if (*seen) {
            h.i = key_at;
            return hp_fail(&h, OQ_EDATA, "key '%s' appears twice", key);
        }
        *seen = true;
        if (seen == &have_descr) {
            if (c == '[' || c == '{')
                return hp_fail(&h, OQ_EUNSUPPORTED,
                               "structured dtypes (record arrays) are not supported; save plain "
                               "numeric arrays");
            if (c != '\'' && c != '"')
                return hp_fail(&h, OQ_EDATA, "descr must be a string such as '<f4'");
            st = hp_string(&h, descr, sizeof descr);
        } else if (seen == &have_fortran) {
            st = hp_bool(&h, &info->fortran);
        } else {
            st = hp_shape(&h, info);
        }
        if (st != OQ_OK)
            return st;
        hp_ws(&h);
        c = hp_peek(&h);
        if (c == ',') {
            h.i++;
            continue;
        }
        if (c == '}') {
            h.i++;
            break;
        }
        return hp_fail(&h, OQ_EDATA, "expected ',' or '}' in the dict");
    }
    hp_ws(&h);
    if (h.i != h.n)
        return hp_fail(&h, OQ_EDATA, "unexpected text after the dict");
    if (!have_descr || !have_fortran || !have_shape)
        return oq_err(err, OQ_EDATA, "header: missing key '%s'",
                      !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if ((st = npy_descr_dtype(descr, &info->dtype, err)) != OQ_OK)
        return st;
    if (info->fortran) {
        /* With at most one dim above 1 both orders lay the bytes out alike. */
        int big = 0;
        bool empty = false;
        for (int i = 0; i < info->rank; i++) {
            big += info->dims[i] > 1;
            empty |= info->dims[i] == 0;
        }
        if (big > 1 && !empty)
            return oq_err(err, OQ_EUNSUPPORTED,
                          "header: fortran_order True is not supported; save with "
                          "np.ascontiguousarray");
    }
    return OQ_OK;
}

static const char *shape_str(const npy_info *info, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < info->rank && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)info->dims[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, info->rank == 1 ? ",)" : ")");
    return buf;
}

/* Decodes one .npy from s (all of it: the data must end exactly where the
 * shape says). limit bounds the tensor's bytes. */
static oq_status npy_read(bsrc *s, size_t limit, oq_tensor **out, oq_error *err) {
    *out = NULL;
    uint8_t pre[NPY_MAX_PREAMBLE];
    size_t total = s->total;
    size_t n = total < 8 ? total : 8;
    oq_status st = bsrc_read(s, pre, n, err);
    if (st != OQ_OK)
        return st;
    if (n < NPY_MAGIC_LEN || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        if (n < NPY_MAGIC_LEN && memcmp(pre, NPY_MAGIC, n) == 0)
            return oq_err(err, OQ_EDATA, "data of %zu bytes ends inside the .npy magic", total);
        return oq_err(err, OQ_EDATA, "not an .npy file: it does not start with \\x93NUMPY");
    }
    if (n < 8)
        return oq_err(err, OQ_EDATA, "data of %zu bytes ends inside the .npy preamble", total);
    unsigned major = pre[6], minor = pre[7];
    size_t len_bytes;
    if (major == 1 && minor == 0)
        len_bytes = 2;
    else if ((major == 2 || major == 3) && minor == 0)
        len_bytes = 4;
    else
        return oq_err(err, OQ_EUNSUPPORTED,
                      ".npy format version %u.%u is not supported (1.0, 2.0 and 3.0 are)", major,
                      minor);
    size_t hstart = 8 + len_bytes;
    if (total < hstart)
        return oq_err(err, OQ_EDATA, "data of %zu bytes ends inside the .npy v%u preamble", total,
                      major);
    if ((st = bsrc_read(s, pre + 8, len_bytes, err)) != OQ_OK)
        return st;
    size_t hlen = len_bytes == 2 ? rd16(pre + 8) : rd32(pre + 8);
    size_t hend;
    if (!oq_add_size(hstart, hlen, &hend) || hend > total)
        return oq_err(err, OQ_EDATA,
                      "header: its length %zu (from byte %zu) runs past the end of the data "
                      "(%zu bytes)", hlen, hstart, total);
    if (hlen > NPY_MAX_HEADER)
        return oq_err(err, OQ_ELIMIT, "header: length %zu exceeds the %zu-byte limit", hlen,
                      NPY_MAX_HEADER);
    char *hdr = malloc(hlen + 1);
    if (!hdr)
        return oq_err(err, OQ_ENOMEM, "out of memory reading a %zu-byte header", hlen);
    npy_info info;
    st = bsrc_read(s, hdr, hlen, err);
    if (st == OQ_OK)
        st = npy_header_parse(hdr, hlen, hstart, &info, err);
    free(hdr);
    if (st != OQ_OK)
        return st;

    char shp[256];
    size_t count, nbytes;
    if (!oq_dims_count(info.dims, info.rank, &count) ||
        !oq_dtype_nbytes(info.dtype, count, &nbytes))
        return oq_err(err, OQ_EDATA, "header: shape %s of %s overflows the address space",
                      shape_str(&info, shp, sizeof shp), oq_dtype_name(info.dtype));
    size_t avail = total - hend;
    if (avail != nbytes)
        return oq_err(err, OQ_EDATA,
                      "data has %zu bytes after the header but shape %s of %s needs %zu (%s)",
                      avail, shape_str(&info, shp, sizeof shp), oq_dtype_name(info.dtype),
                      nbytes, avail < nbytes ? "truncated" : "trailing bytes");
    if (nbytes > limit)
        return oq_err(err, OQ_ELIMIT, "tensor %s of %s has %zu bytes, over the limit of %zu",
                      shape_str(&info, shp, sizeof shp), oq_dtype_name(info.dtype), nbytes,
                      limit);
    oq_tensor *t;
    if ((st = oq_tensor_new(info.dtype, info.rank, info.dims, 0, &t, err)) != OQ_OK)
        return st;
    if ((st = bsrc_read(s, t->data, nbytes, err)) != OQ_OK) {
        oq_tensor_free(t);
        return st;
    }
    *out = t;
    return OQ_OK;
}

oq_status oq_npy_parse(const void *data, size_t len, size_t max_tensor_bytes, oq_tensor **out,
                       oq_error *err) {
    *out = NULL;
    if (!data && len)
        return oq_err(err, OQ_EINVAL, "oq_npy_parse: NULL data");
    bsrc s;
    bsrc_memory(&s, data, len);
    return npy_read(&s, max_tensor_bytes ? max_tensor_bytes : OQ_TENSORFILE_DEFAULT_MAX_TENSOR,
                    out, err);
}

/* ---- files ------------------------------------------------------------ */

static oq_status open_file(const char *path, size_t max_bytes, int *fd_out, size_t *len,
                           oq_error *err) {
    /* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return oq_err(err, errno == ENOENT ? OQ_ENOTFOUND : OQ_EIO, "%s: cannot open: %s", path,
                      strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return oq_err(err, OQ_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return oq_err(err, OQ_EINVAL, "%s: not a regular file", path);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return oq_err(err, OQ_ELIMIT, "%s: file of %lld bytes exceeds the limit of %zu bytes",
                      path, (long long)sb.st_size, max_bytes);
    }
    *fd_out = fd;
    *len = (size_t)sb.st_size;
    return OQ_OK;
}

/* Reads all len bytes of fd into a new buffer. Plain reads rather than mmap:
 * a file truncated under a mapping kills the process with SIGBUS. */
static oq_status read_all(int fd, const char *path, size_t len, uint8_t **out, oq_error *err) {
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "%s: out of memory reading %zu bytes", path, len);
    size_t got = 0;
    while (got < len) {
        size_t want = len - got > ((size_t)1 << 30) ? (size_t)1 << 30 : len - got;
        ssize_t r = pread(fd, buf + got, want, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            return oq_err(err, OQ_EIO, "%s: %s at byte %zu", path,
                          r < 0 ? strerror(errno) : "file shrank while being read", got);
        }
        got += (size_t)r;
    }
    *out = buf;
    return OQ_OK;
}

/* An .npy from an open file, read straight into the tensor. */
static oq_status npy_from_fd(int fd, size_t len, const char *path, const oq_tensorfile_limits *lim,
                             oq_tensor **out, oq_error *err) {
    bsrc s;
    bsrc_fd(&s, fd, len);
    size_t limit = lim->max_tensor_bytes < lim->max_total_bytes ? lim->max_tensor_bytes
                                                                 : lim->max_total_bytes;
    oq_tensor *t;
    oq_status st = npy_read(&s, limit, &t, err);
    if (st == OQ_OK) {
        char *stem = file_stem(path);
        st = stem ? oq_tensor_set_name(t, stem, err)
                  : oq_err(err, OQ_ENOMEM, "out of memory naming a tensor");
        free(stem);
        if (st != OQ_OK) {
            oq_tensor_free(t);
            t = NULL;
        }
    }
    *out = t;
    return st;
}

oq_status oq_npy_load(const char *path, const oq_tensorfile_limits *limits, oq_tensor **out,
                      oq_error *err) {
    *out = NULL;
    oq_tensorfile_limits lim = limits_resolve(limits);
    int fd = -1;
    size_t len = 0;
    oq_status st = open_file(path, lim.max_file_bytes, &fd, &len, err);
    if (st != OQ_OK)
        return st;
    st = npy_from_fd(fd, len, path, &lim, out, err);
    close(fd);
    if (st != OQ_OK)
        oq_err_prefix(err, "%s: ", path);
    return st;
}

/* ---- .npy writer ---------------------------------------------------- */

static const char *npy_descr_of(oq_dtype dt) {
    switch (dt) {
    case OQ_DTYPE_FLOAT: return "<f4";
    case OQ_DTYPE_DOUBLE: return "<f8";
    case OQ_DTYPE_FLOAT16: return "<f2";
    case OQ_DTYPE_INT8: return "|i1";
    case OQ_DTYPE_UINT8: return "|u1";
    case OQ_DTYPE_INT16: return "<i2";
    case OQ_DTYPE_UINT16: return "<u2";
    case OQ_DTYPE_INT32: return "<i4";
    case OQ_DTYPE_UINT32: return "<u4";
    case OQ_DTYPE_INT64: return "<i8";
    case OQ_DTYPE_UINT64: return "<u8";
    case OQ_DTYPE_BOOL: return "|b1";
    case OQ_DTYPE_COMPLEX64: return "<c8";
    case OQ_DTYPE_COMPLEX128: return "<c16";
    default: return NULL;
    }
}

/* Preamble + header padded (as numpy does) so the data starts 64-aligned. */
static oq_status npy_header_build(const oq_tensor *t, char *buf, size_t cap, size_t *len,
                                  oq_error *err) {
    const char *descr = npy_descr_of(t->dtype);
    if (!descr)
        return oq_err(err, OQ_EUNSUPPORTED, "%s tensors have no .npy dtype",
                      oq_dtype_name(t->dtype));
    if (t->rank < 0 || t->rank > OQ_MAX_RANK)
        return oq_err(err, OQ_EINVAL, "tensor rank %d is outside 0..%d", t->rank, OQ_MAX_RANK);
    size_t count, nbytes;
    if (!oq_dims_count(t->dims, t->rank, &count) || !oq_dtype_nbytes(t->dtype, count, &nbytes) ||
        nbytes != t->nbytes || (nbytes && !t->data))
        return oq_err(err, OQ_EINVAL, "tensor's data does not match its shape");
    char dict[512];
    size_t o = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                                descr);
    for (int i = 0; i < t->rank; i++)
        o += (size_t)snprintf(dict + o, sizeof dict - o, "%s%lld", i ? ", " : "",
                              (long long)t->dims[i]);
    o += (size_t)snprintf(dict + o, sizeof dict - o, "%s), }", t->rank == 1 ? "," : "");
    /* v1.0 holds a header of up to 65535 bytes; ours is always far shorter,
     * but fall back to v2.0 rather than write a wrong length. */
    size_t pre = o + 1 + 10 <= 65535 + 10 ? 10 : 12;
    size_t padded = (pre + o + 1 + 63) / 64 * 64;
    if (padded > cap)
        return oq_err(err, OQ_EINTERNAL, ".npy header of %zu bytes overflows its buffer", padded);
    size_t hlen = padded - pre;
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = pre == 10 ? 1 : 2;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (char)(hlen >> (8 * i) & 0xff);
    memcpy(buf + pre, dict, o);
    memset(buf + pre + o, ' ', padded - pre - o - 1);
    buf[padded - 1] = '\n';
    *len = padded;
    return OQ_OK;
}

oq_status oq_npy_encode(const oq_tensor *t, uint8_t **out, size_t *len, oq_error *err) {
    *out = NULL;
    *len = 0;
    char hdr[1024];
    size_t hlen = 0, total;
    oq_status st = npy_header_build(t, hdr, sizeof hdr, &hlen, err);
    if (st != OQ_OK)
        return st;
    if (!oq_add_size(hlen, t->nbytes, &total))
        return oq_err(err, OQ_ELIMIT, "tensor of %zu bytes is too large to encode", t->nbytes);
    uint8_t *buf = malloc(total);
    if (!buf)
        return oq_err(err, OQ_ENOMEM, "out of memory encoding %zu .npy bytes", total);
    memcpy(buf, hdr, hlen);
    if (t->nbytes)
        memcpy(buf + hlen, t->data, t->nbytes);
    *out = buf;
    *len = total;
    return OQ_OK;
}

static bool write_all(int fd, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len) {
        size_t want = len > ((size_t)1 << 30) ? (size_t)1 << 30 : len;
        ssize_t r = write(fd, p, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

/* fsync of the folder makes the rename itself durable. */
static void fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
}

oq_status oq_npy_save(const char *path, const oq_tensor *t, oq_error *err) {
    char hdr[1024];
    size_t hlen = 0, tmp_len;
    oq_status st = npy_header_build(t, hdr, sizeof hdr, &hlen, err);
    if (st != OQ_OK) {
        oq_err_prefix(err, "%s: ", path);
        return st;
    }
    static const char suffix[] = ".tmp.XXXXXX";
    if (!oq_add_size(strlen(path), sizeof suffix, &tmp_len))
        return oq_err(err, OQ_EINVAL, "path too long");
    char *tmp = malloc(tmp_len);
    if (!tmp)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    snprintf(tmp, tmp_len, "%s%s", path, suffix);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = oq_err(err, OQ_EIO, "%s: cannot create a temporary file: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    /* mkstemp makes the file 0600; a data file is readable like any other. */
    bool ok = fchmod(fd, 0644) == 0 && write_all(fd, hdr, hlen) &&
              write_all(fd, t->data, t->nbytes) && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return oq_err(err, OQ_EIO, "%s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    fsync_parent(path);
    return OQ_OK;
}

/* ---- .npz (ZIP) ------------------------------------------------------- */

typedef struct {
    uint64_t cd_off, cd_size, count;
} zip_dir;

typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint16_t flags, method;
    uint32_t crc;
    uint64_t csize, usize, local_off;
    uint64_t at; /* offset of this central directory entry */
} zip_entry;

/* Finds the end-of-central-directory record (APPNOTE 4.3.16; its comment may
 * make it start up to 64 KiB before the end) and its ZIP64 twin (4.3.14). */
static oq_status zip_find_dir(const uint8_t *p, size_t len, size_t max_members, zip_dir *d,
                              oq_error *err) {
    if (len < ZIP_EOCD_LEN)
        return oq_err(err, OQ_EDATA,
                      "file of %zu bytes is too short for a zip archive's 22-byte end record",
                      len);
    size_t last = len - ZIP_EOCD_LEN;
    size_t lo = last > 0xFFFF ? last - 0xFFFF : 0;
    size_t eocd = SIZE_MAX;
    for (size_t off = last + 1; off-- > lo;) {
        if (rd32(p + off) == ZIP_EOCD_SIG && off + ZIP_EOCD_LEN + rd16(p + off + 20) == len) {
            eocd = off;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        return oq_err(err, OQ_EDATA,
                      "no zip end-of-central-directory record at the end of the file (truncated, "
                      "or not a zip archive)");
    const uint8_t *e = p + eocd;
    uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_disk = rd16(e + 8), n = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    uint64_t limit = eocd;
    if (eocd >= ZIP64_LOCATOR_LEN && rd32(e - ZIP64_LOCATOR_LEN) == ZIP64_LOCATOR_SIG) {
        size_t loc = eocd - ZIP64_LOCATOR_LEN;
        uint32_t z_disk = rd32(p + loc + 4), n_disks = rd32(p + loc + 16);
        uint64_t z_off = rd64(p + loc + 8);
        if (z_disk != 0 || n_disks > 1)
            return oq_err(err, OQ_EUNSUPPORTED, "multi-disk (split) zip archives are not supported");
        if (z_off > loc || loc - z_off < ZIP64_EOCD_LEN)
            return oq_err(err, OQ_EDATA,
                          "zip64 end record offset %llu (from the locator at byte %zu) is out of "
                          "range", (unsigned long long)z_off, loc);
        const uint8_t *z = p + z_off;
        if (rd32(z) != ZIP64_EOCD_SIG)
            return oq_err(err, OQ_EDATA, "no zip64 end record signature at byte %llu",
                          (unsigned long long)z_off);
        disk = rd32(z + 16);
        cd_disk = rd32(z + 20);
        n_disk = rd64(z + 24);
        n = rd64(z + 32);
        cd_size = rd64(z + 40);
        cd_off = rd64(z + 48);
        limit = z_off;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n)
        return oq_err(err, OQ_EUNSUPPORTED, "multi-disk (split) zip archives are not supported");
    if (n > max_members)
        return oq_err(err, OQ_ELIMIT, "archive has %llu members, over the limit of %zu",
                      (unsigned long long)n, max_members);
    if (cd_off > limit || cd_size > limit - cd_off)
        return oq_err(err, OQ_EDATA,
                      "central directory (%llu bytes at byte %llu) runs past its end record at "
                      "byte %llu", (unsigned long long)cd_size, (unsigned long long)cd_off,
                      (unsigned long long)limit);
    uint64_t need;
    if (__builtin_mul_overflow(n, (uint64_t)ZIP_CENTRAL_LEN, &need) || need > cd_size)
        return oq_err(err, OQ_EDATA, "central directory of %llu bytes is too small for %llu entries",
                      (unsigned long long)cd_size, (unsigned long long)n);
    d->cd_off = cd_off;
    d->cd_size = cd_size;
    d->count = n;
    return OQ_OK;
}

/* Replaces the 0xFFFFFFFF placeholders among *usize, *csize and *off (NULL in
 * a local header) with the ZIP64 extra field's values, which appear in that
 * order and only for the placeholders (APPNOTE 4.5.3). */
static oq_status zip64_extra(const uint8_t *x, size_t xlen, uint64_t *usize, uint64_t *csize,
                             uint64_t *off, bool *found, oq_error *err) {
    bool need_u = *usize == 0xFFFFFFFFu, need_c = *csize == 0xFFFFFFFFu;
    bool need_o = off && *off == 0xFFFFFFFFu;
    *found = false;
    size_t i = 0;
    while (xlen - i >= 4) {
        uint16_t id = rd16(x + i), sz = rd16(x + i + 2);
        if (sz > xlen - i - 4)
            return oq_err(err, OQ_EDATA, "extra field 0x%04x of %u bytes runs past the extra area",
                          id, sz);
        if (id == 0x0001 && !*found) {
            const uint8_t *f = x + i + 4;
            size_t left = sz;
            *found = true;
            uint64_t *want[3] = {need_u ? usize : NULL, need_c ? csize : NULL, need_o ? off : NULL};
            for (int k = 0; k < 3; k++) {
                if (!want[k])
                    continue;
                if (left < 8)
                    return oq_err(err, OQ_EDATA, "zip64 extra field of %u bytes is too short", sz);
                *want[k] = rd64(f);
                f += 8;
                left -= 8;
            }
            need_u = need_c = need_o = false;
        }
        i += 4 + (size_t)sz;
    }
    if (need_u || need_c || need_o)
        return oq_err(err, OQ_EDATA, "sizes or offset are 0xFFFFFFFF but there is no zip64 extra field");
    return OQ_OK;
}

/* Parses the central directory entry at *pos (which must end by end). */
static oq_status zip_cd_entry(const uint8_t *p, uint64_t end, uint64_t *pos, zip_entry *e,
                              oq_error *err) {
    uint64_t at = *pos;
    if (end - at < ZIP_CENTRAL_LEN)
        return oq_err(err, OQ_EDATA, "central directory entry at byte %llu is truncated",
                      (unsigned long long)at);
    const uint8_t *q = p + at;
    if (rd32(q) != ZIP_CENTRAL_SIG)
        return oq_err(err, OQ_EDATA, "no central directory signature at byte %llu",
                      (unsigned long long)at);
    uint64_t nlen = rd16(q + 28), xlen = rd16(q + 30), clen = rd16(q + 32);
    if (end - at < ZIP_CENTRAL_LEN + nlen + xlen + clen)
        return oq_err(err, OQ_EDATA,
                      "central directory entry at byte %llu runs past the directory's end",
                      (unsigned long long)at);
    memset(e, 0, sizeof *e);
    e->at = at;
    e->flags = rd16(q + 8);
    e->method = rd16(q + 10);
    e->crc = rd32(q + 16);
    e->csize = rd32(q + 20);
    e->usize = rd32(q + 24);
    e->local_off = rd32(q + 42);
    e->name = q + ZIP_CENTRAL_LEN;
    e->name_len = (size_t)nlen;
    uint16_t disk = rd16(q + 34);
    bool found;
    oq_status st = zip64_extra(q + ZIP_CENTRAL_LEN + nlen, (size_t)xlen, &e->usize, &e->csize,
                               &e->local_off, &found, err);
    if (st != OQ_OK)
        return st;
    if (disk != 0 && disk != 0xFFFF)
        return oq_err(err, OQ_EUNSUPPORTED, "multi-disk (split) zip archives are not supported");
    *pos = at + ZIP_CENTRAL_LEN + nlen + xlen + clen;
    return OQ_OK;
}

/* Checks the member's local header (and data descriptor) against the
 * central directory; returns where its data starts. data_end is where member
 * data must end: the start of the central directory. */
static oq_status zip_local(const uint8_t *p, uint64_t data_end, const zip_entry *e,
                           uint64_t *data_off, oq_error *err) {
    if (e->local_off > data_end || data_end - e->local_off < ZIP_LOCAL_LEN)
        return oq_err(err, OQ_EDATA,
                      "local header offset %llu lies outside the member data (which ends at byte "
                      "%llu)", (unsigned long long)e->local_off, (unsigned long long)data_end);
    const uint8_t *l = p + e->local_off;
    if (rd32(l) != ZIP_LOCAL_SIG)
        return oq_err(err, OQ_EDATA, "no local header signature at byte %llu",
                      (unsigned long long)e->local_off);
    uint16_t flags = rd16(l + 6), method = rd16(l + 8);
    uint32_t crc = rd32(l + 14);
    uint64_t csize = rd32(l + 18), usize = rd32(l + 22);
    uint64_t nlen = rd16(l + 26), xlen = rd16(l + 28);
    uint64_t off = e->local_off + ZIP_LOCAL_LEN + nlen + xlen;
    if (off > data_end)
        return oq_err(err, OQ_EDATA, "local header at byte %llu runs past the member data",
                      (unsigned long long)e->local_off);
    if (nlen != e->name_len || memcmp(l + ZIP_LOCAL_LEN, e->name, e->name_len) != 0)
        return oq_err(err, OQ_EDATA, "local header at byte %llu names a different member",
                      (unsigned long long)e->local_off);
    if (method != e->method || (flags & ZIP_FLAG_ENCRYPTED) != (e->flags & ZIP_FLAG_ENCRYPTED))
        return oq_err(err, OQ_EDATA,
                      "local header at byte %llu disagrees with the central directory on the "
                      "method or encryption", (unsigned long long)e->local_off);
    bool z64;
    oq_status st = zip64_extra(l + ZIP_LOCAL_LEN + nlen, (size_t)xlen, &usize, &csize, NULL, &z64,
                               err);
    if (st != OQ_OK)
        return st;
    if (e->csize > data_end - off)
        return oq_err(err, OQ_EDATA,
                      "member data (%llu bytes at byte %llu) runs past the start of the central "
                      "directory at byte %llu", (unsigned long long)e->csize,
                      (unsigned long long)off, (unsigned long long)data_end);
    if (flags & ZIP_FLAG_DESCRIPTOR) {
        /* Sizes and CRC follow the data (APPNOTE 4.3.9), 8-byte sizes when the
         * local header has a zip64 field; the signature is optional. */
        uint64_t dd = off + e->csize;
        uint64_t need = z64 ? 20 : 12;
        if (data_end - dd >= 4 && rd32(p + dd) == ZIP_DESCRIPTOR_SIG)
            dd += 4;
        if (data_end - dd < need)
            return oq_err(err, OQ_EDATA, "data descriptor at byte %llu runs past the member data",
                          (unsigned long long)dd);
        crc = rd32(p + dd);
        csize = z64 ? rd64(p + dd + 4) : rd32(p + dd + 4);
        usize = z64 ? rd64(p + dd + 12) : rd32(p + dd + 8);
        if (crc != e->crc || csize != e->csize || usize != e->usize)
            return oq_err(err, OQ_EDATA,
                          "data descriptor at byte %llu (crc %08x, sizes %llu/%llu) disagrees with "
                          "the central directory (crc %08x, sizes %llu/%llu)",
                          (unsigned long long)dd, crc, (unsigned long long)csize,
                          (unsigned long long)usize, e->crc, (unsigned long long)e->csize,
                          (unsigned long long)e->usize);
    } else if (crc != e->crc || csize != e->csize || usize != e->usize) {
        return oq_err(err, OQ_EDATA,
                      "local header at byte %llu (crc %08x, sizes %llu/%llu) disagrees with the "
                      "central directory (crc %08x, sizes %llu/%llu)",
                      (unsigned long long)e->local_off, crc, (unsigned long long)csize,
                      (unsigned long long)usize, e->crc, (unsigned long long)e->csize,
                      (unsigned long long)e->usize);
    }
    *data_off = off;
    return OQ_OK;
}

/* Decodes one member into *out; used is the running total of tensor bytes. */
static oq_status npz_member(const uint8_t *p, const zip_dir *dir, const zip_entry *e,
                            const oq_tensorfile_limits *lim, size_t used, oq_tensor **out,
                            oq_error *err) {
    *out = NULL;
    if (e->flags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG_ENCRYPTION | ZIP_FLAG_MASKED_HEADERS))
        return oq_err(err, OQ_EUNSUPPORTED, "member is encrypted");
    if (e->method != ZIP_METHOD_STORED && e->method != ZIP_METHOD_DEFLATED)
        return oq_err(err, OQ_EUNSUPPORTED,
                      "compression method %u is not supported (np.savez stores, "
                      "np.savez_compressed deflates)", e->method);
    /* Zip bombs: refuse by the declared size before inflating anything; the
     * inflater never writes more than the declared size. */
    size_t limit = lim->max_tensor_bytes;
    if (lim->max_total_bytes - used < limit)
        limit = lim->max_total_bytes - used;
    uint64_t allowed = (uint64_t)limit + NPY_MAX_HEADER + NPY_MAX_PREAMBLE;
    if (allowed < limit)
        allowed = UINT64_MAX;
    if (e->usize > allowed)
        return oq_err(err, OQ_ELIMIT,
                      "member declares %llu uncompressed bytes, more than a tensor within the "
                      "limit of %zu bytes needs",
                      (unsigned long long)e->usize, limit);
    uint64_t data_off = 0;
    oq_status st = zip_local(p, dir->cd_off, e, &data_off, err);
    if (st != OQ_OK)
        return st;
    if (e->method == ZIP_METHOD_STORED && e->csize != e->usize)
        return oq_err(err, OQ_EDATA, "stored member has compressed size %llu but size %llu",
                      (unsigned long long)e->csize, (unsigned long long)e->usize);
    bsrc s;
    if (e->method == ZIP_METHOD_STORED) {
        bsrc_memory(&s, p + data_off, (size_t)e->usize);
    } else if ((st = bsrc_deflate(&s, p + data_off, (size_t)e->csize, (size_t)e->usize, err)) !=
               OQ_OK) {
        return st;
    }
    s.crc_on = true;
    oq_tensor *t = NULL;
    st = npy_read(&s, limit, &t, err);
    if (st == OQ_OK)
        st = bsrc_finish(&s, err);
    if (st == OQ_OK && s.crc != e->crc)
        st = oq_err(err, OQ_EDATA, "CRC-32 mismatch: the data gives %08x, the archive says %08x",
                    s.crc, e->crc);
    bsrc_end(&s);
    if (st != OQ_OK) {
        if (t)
            oq_tensor_free(t);
        return st;
    }
    *out = t;
    return OQ_OK;
}

oq_status oq_npz_parse(const void *data, size_t len, const oq_tensorfile_limits *limits,
                       oq_tensor_list *out, oq_error *err) {
    out->items = NULL;
    out->count = 0;
    if (!data && len)
        return oq_err(err, OQ_EINVAL, "oq_npz_parse: NULL data");
    oq_tensorfile_limits lim = limits_resolve(limits);
    const uint8_t *p = data;
    if (len > lim.max_file_bytes)
        return oq_err(err, OQ_ELIMIT, "archive of %zu bytes exceeds the limit of %zu bytes", len,
                      lim.max_file_bytes);
    zip_dir dir = {0};
    oq_status st = zip_find_dir(p, len, lim.max_members, &dir, err);
    if (st != OQ_OK)
        return st;
    oq_tensor_list list = {calloc(dir.count ? (size_t)dir.count : 1, sizeof(oq_tensor *)), 0};
    if (!list.items)
        return oq_err(err, OQ_ENOMEM, "out of memory listing %llu members",
                      (unsigned long long)dir.count);
    uint64_t pos = dir.cd_off, end = dir.cd_off + dir.cd_size;
    size_t used = 0;
    char shown[96];
    for (uint64_t i = 0; i < dir.count; i++) {
        zip_entry e;
        if ((st = zip_cd_entry(p, end, &pos, &e, err)) != OQ_OK) {
            oq_err_prefix(err, "central directory entry %llu: ", (unsigned long long)i);
            break;
        }
        printable(e.name, e.name_len, shown, sizeof shown);
        if (e.name_len && e.name[e.name_len - 1] == '/' && e.usize == 0)
            continue; /* a folder entry, as `zip -r` writes; no data */
        oq_tensor *t = NULL;
        char *stem = NULL;
        size_t stem_len = e.name_len >= 4 ? e.name_len - 4 : 0;
        if (memchr(e.name, 0, e.name_len))
            st = oq_err(err, OQ_EDATA, "the name contains a NUL byte");
        else if (e.name_len < 4 || memcmp(e.name + stem_len, ".npy", 4) != 0)
            st = oq_err(err, OQ_EUNSUPPORTED, "not an .npy array (np.savez names them x.npy)");
        else if (!(stem = strndup((const char *)e.name, stem_len)))
            st = oq_err(err, OQ_ENOMEM, "out of memory");
        for (size_t k = 0; st == OQ_OK && k < list.count; k++)
            if (strcmp(list.items[k]->name, stem) == 0)
                st = oq_err(err, OQ_EDATA, "a member of this name appears earlier");
        if (st == OQ_OK)
            st = npz_member(p, &dir, &e, &lim, used, &t, err);
        if (st == OQ_OK)
            st = oq_tensor_set_name(t, stem, err);
        free(stem);
        if (st != OQ_OK) {
            oq_tensor_free(t);
            oq_err_prefix(err, "member '%s': ", shown);
            break;
        }
        list.items[list.count++] = t;
        used += t->nbytes;
    }
    if (st != OQ_OK || list.count == 0) {
        oq_tensor_list_free(&list); /* an empty result owns nothing */
        return st;
    }
    *out = list;
    return OQ_OK;
}

oq_status oq_npz_load(const char *path, const oq_tensorfile_limits *limits, oq_tensor_list *out,
                      oq_error *err) {
    out->items = NULL;
    out->count = 0;
    oq_tensorfile_limits lim = limits_resolve(limits);
    int fd = -1;
    size_t len = 0;
    uint8_t *buf;
    oq_status st = open_file(path, lim.max_file_bytes, &fd, &len, err);
    if (st != OQ_OK)
        return st;
    st = read_all(fd, path, len, &buf, err);
    close(fd);
    if (st != OQ_OK)
        return st;
    st = oq_npz_parse(buf, len, &lim, out, err);
    free(buf);
    if (st != OQ_OK)
        oq_err_prefix(err, "%s: ", path);
    return st;
}

/* ---- dispatch ----------------------------------------------------------- */

static bool is_npy(const uint8_t *p, size_t len) {
    return len >= NPY_MAGIC_LEN && memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) == 0;
}

/* A local header first, or an end record first (an empty archive). */
static bool is_zip(const uint8_t *p, size_t len) {
    return len >= 4 && p[0] == 'P' && p[1] == 'K' &&
           ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
}

static oq_status list_of_one(oq_tensor *t, oq_tensor_list *out, oq_error *err) {
    out->items = malloc(sizeof *out->items);
    if (!out->items) {
        oq_tensor_free(t);
        return oq_err(err, OQ_ENOMEM, "out of memory");
    }
    out->items[0] = t;
    out->count = 1;
    return OQ_OK;
}

static oq_status pb_parse(const uint8_t *p, size_t len, const char *name,
                          const oq_tensorfile_limits *lim, oq_tensor **out, oq_error *err) {
    *out = NULL;
    oq_tensor *t;
    oq_error pb_err = {0};
    /* Anything that is neither .npy nor .npz is tried as a TensorProto, so
     * say so: the protobuf error alone would puzzle someone who sent a CSV. */
    oq_status st = oq_tensor_parse_pb(p, len, &t, &pb_err);
    if (st == OQ_EMODEL)
        st = OQ_EDATA; /* a tensor file is not a model */
    if (st != OQ_OK)
        return oq_err(err, st,
                      "not an .npy (\\x93NUMPY) or .npz (PK) file, and not a TensorProto: %s",
                      pb_err.msg);
    if (t->nbytes > lim->max_tensor_bytes || t->nbytes > lim->max_total_bytes) {
        size_t n = t->nbytes;
        oq_tensor_free(t);
        return oq_err(err, OQ_ELIMIT, "tensor of %zu bytes is over the limit of %zu", n,
                      lim->max_tensor_bytes < lim->max_total_bytes ? lim->max_tensor_bytes
                                                                   : lim->max_total_bytes);
    }
    if ((!t->name || !*t->name) && name && (st = oq_tensor_set_name(t, name, err)) != OQ_OK) {
        oq_tensor_free(t);
        return st;
    }
    *out = t;
    return OQ_OK;
}

oq_status oq_tensorfile_parse(const void *data, size_t len, const char *name,
                              const oq_tensorfile_limits *limits, oq_tensor_list *out,
                              oq_error *err) {
    out->items = NULL;
    out->count = 0;
    if (!data && len)
        return oq_err(err, OQ_EINVAL, "oq_tensorfile_parse: NULL data");
    oq_tensorfile_limits lim = limits_resolve(limits);
    const uint8_t *p = data;
    if (len == 0)
        return oq_err(err, OQ_EDATA, "tensor file is empty");
    if (len > lim.max_file_bytes)
        return oq_err(err, OQ_ELIMIT, "tensor file of %zu bytes exceeds the limit of %zu bytes",
                      len, lim.max_file_bytes);
    if (is_zip(p, len))
        return oq_npz_parse(p, len, &lim, out, err);
    oq_tensor *t;
    oq_status st;
    if (is_npy(p, len)) {
        size_t limit = lim.max_tensor_bytes < lim.max_total_bytes ? lim.max_tensor_bytes
                                                                   : lim.max_total_bytes;
        st = oq_npy_parse(p, len, limit, &t, err);
        if (st == OQ_OK && name && (st = oq_tensor_set_name(t, name, err)) != OQ_OK)
            oq_tensor_free(t);
    } else {
        st = pb_parse(p, len, name, &lim, &t, err);
    }
    return st == OQ_OK ? list_of_one(t, out, err) : st;
}

oq_status oq_tensorfile_load(const char *path, const oq_tensorfile_limits *limits,
                             oq_tensor_list *out, oq_error *err) {
    out->items = NULL;
    out->count = 0;
    oq_tensorfile_limits lim = limits_resolve(limits);
    int fd = -1;
    size_t len = 0;
    oq_status st = open_file(path, lim.max_file_bytes, &fd, &len, err);
    if (st != OQ_OK)
        return st;
    uint8_t magic[NPY_MAGIC_LEN];
    size_t mlen = len < sizeof magic ? len : sizeof magic;
    if (mlen && pread(fd, magic, mlen, 0) != (ssize_t)mlen) {
        st = oq_err(err, OQ_EIO, "%s: cannot read: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (is_npy(magic, mlen)) {
        /* .npy goes straight into its tensor: no copy of the whole file. */
        oq_tensor *t;
        st = npy_from_fd(fd, len, path, &lim, &t, err);
        close(fd);
        if (st == OQ_OK)
            st = list_of_one(t, out, err);
    } else {
        uint8_t *buf;
        st = read_all(fd, path, len, &buf, err);
        close(fd);
        if (st != OQ_OK)
            return st;
        char *stem = file_stem(path);
        if (!stem) {
            free(buf);
            return oq_err(err, OQ_ENOMEM, "out of memory");
        }
        st = oq_tensorfile_parse(buf, len, stem, &lim, out, err);
        free(stem);
        free(buf);
    }
    if (st != OQ_OK)
        oq_err_prefix(err, "%s: ", path);
    return st;
}
