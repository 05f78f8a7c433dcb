/* status.h: the one error convention of onnxq.
 * Every fallible function returns an oq_status and fills a caller-owned
 * oq_error with a message naming the node, tensor, field or byte offset.
 * The status table is one X-macro so names and HTTP codes cannot drift. */
#ifndef OQ_STATUS_H
#define OQ_STATUS_H

#include <stdarg.h>

/* X(name, http_code, short description) */
#define OQ_STATUS_MAP(X)                                              \
    X(OK, 200, "ok")                                                  \
    X(EINVAL, 400, "invalid argument")                                \
    X(EMODEL, 422, "malformed model")                                 \
    X(EDATA, 422, "malformed tensor data")                            \
    X(EUNSUPPORTED, 422, "unsupported")                               \
    X(ELIMIT, 413, "limit exceeded")                                  \
    X(ENOTFOUND, 404, "not found")                                    \
    X(ENOMEM, 503, "out of memory")                                   \
    X(EIO, 500, "i/o error")                                          \
    X(ECANCELLED, 409, "cancelled")                                   \
    X(EINTERNAL, 500, "internal error")

typedef enum {
#define OQ_X_ENUM(name, http, desc) OQ_##name,
    OQ_STATUS_MAP(OQ_X_ENUM)
#undef OQ_X_ENUM
    OQ_STATUS_COUNT
} oq_status;

#define OQ_ERROR_MSG_MAX 512

/* Caller-owned, usually on the stack, zero-initialised: `oq_error err = {0};`.
 * First error wins: later oq_err calls do not overwrite an earlier message. */
typedef struct {
    oq_status code;
    char msg[OQ_ERROR_MSG_MAX];
} oq_error;

/* Records code + formatted message in err (if err is non-NULL and still OK);
 * returns code so callers can `return oq_err(err, OQ_EMODEL, "...")`. */
oq_status oq_err(oq_error *err, oq_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
oq_status oq_verr(oq_error *err, oq_status code, const char *fmt, va_list ap);

/* Prepends context ("node 'conv1': ") to an error already recorded. */
void oq_err_prefix(oq_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *oq_status_name(oq_status s);     /* "EMODEL" */
const char *oq_status_desc(oq_status s);     /* "malformed model" */
int oq_status_http(oq_status s);             /* 422 */

#endif
