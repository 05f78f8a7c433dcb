/* status.c: status names, HTTP codes and the first-error-wins recorder. */
#include "status.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *desc;
    int http;
} status_table[] = {
#define OQ_X_ROW(name, http, desc) {#name, desc, http},
    OQ_STATUS_MAP(OQ_X_ROW)
#undef OQ_X_ROW
};

const char *oq_status_name(oq_status s) {
    return (unsigned)s < OQ_STATUS_COUNT ? status_table[s].name : "EUNKNOWN";
}

const char *oq_status_desc(oq_status s) {
    return (unsigned)s < OQ_STATUS_COUNT ? status_table[s].desc : "unknown status";
}

int oq_status_http(oq_status s) {
    return (unsigned)s < OQ_STATUS_COUNT ? status_table[s].http : 500;
}

oq_status oq_verr(oq_error *err, oq_status code, const char *fmt, va_list ap) {
    if (err && err->code == OQ_OK && code != OQ_OK) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

oq_status oq_err(oq_error *err, oq_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    oq_verr(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void oq_err_prefix(oq_error *err, const char *fmt, ...) {
    if (!err || err->code == OQ_OK)
        return;
    char prefix[OQ_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the message right and copy the prefix in front, truncating. */
    size_t np = strlen(prefix), nm = strlen(err->msg);
    if (np >= sizeof err->msg)
        np = sizeof err->msg - 1;
    if (np + nm >= sizeof err->msg)
        nm = sizeof err->msg - 1 - np;
    memmove(err->msg + np, err->msg, nm);
    memcpy(err->msg, prefix, np);
    err->msg[np + nm] = '\0';
}
