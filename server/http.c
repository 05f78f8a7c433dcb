/* http.c: the HTTP API on libmicrohttpd. Per-request state is made on the
 * first call, uploads are streamed part by part to the job's folder, an
 * error is decided once (the rest of the upload is swallowed, up to a cap)
 * and every 4xx/5xx answers {"error":{"code","message","detail"}}. Answers
 * that take long (POST /v1/quantize, /v1/inspect) are computed off the HTTP
 * thread while the connection is suspended. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "inspect.h"
#include "model.h"
#include "srv.h"

#define CONFIG_MAX (64 * 1024)  /* the config field is JSON text, not data */
#define BODY_MAX_OTHER (1 << 20) /* a body sent to a route that takes none */
#define MAX_CALIB_FILES 64
#define PP_BUFFER (64 * 1024)
/* Body bytes read and thrown away after an error was decided: enough for a
 * client that did not wait for "100 Continue" to finish sending and read
 * the answer, not enough for one streaming gigabytes to keep us busy. */
#define DISCARD_MAX (4u << 20)

/* The refusals the HTTP layer makes itself (library errors map through
 * status.h's table instead): one list, so a status always comes with the
 * same code, and queue() adds the headers each one requires. */
#define OQ_REFUSALS(X)                  \
    X(AUTH, 401, "EAUTH")               \
    X(METHOD, 405, "EMETHOD")           \
    X(TOO_LARGE, 413, "ELIMIT")         \
    X(MEDIA_TYPE, 415, "EMEDIATYPE")    \
    X(BUSY, 429, "EBUSY")               \
    X(UNAVAILABLE, 503, "EUNAVAILABLE")

typedef enum {
#define OQ_X(name, http, code) REFUSE_##name,
    OQ_REFUSALS(OQ_X)
#undef OQ_X
} refusal;

static const struct {
    unsigned http;
    const char *code;
} refusals[] = {
#define OQ_X(name, http, code) {http, code},
    OQ_REFUSALS(OQ_X)
#undef OQ_X
};

typedef enum { PART_NONE, PART_FILE, PART_CONFIG } part_kind;

typedef struct {
    struct oq_server *srv;
    struct MHD_Connection *conn;
    oq_route route;
    char id[OQ_JOB_ID_LEN + 1];
    char method[8];
    char path[200]; /* sanitized, for the log */
    const char *allow;
    int64_t start_ms;
    uint64_t bytes_in, bytes_out;
    unsigned status;
    bool responded;
    uint64_t discarded; /* body bytes swallowed after the error */
    bool cut;           /* ... until DISCARD_MAX: then the connection was closed */
    /* The error decided for this request: the first one wins. */
    bool failed;
    unsigned err_http;
    const char *err_code;
    char err_msg[OQ_ERROR_MSG_MAX];
    char err_detail[96];
    /* POST /v1/jobs, /v1/quantize, /v1/inspect */
    struct MHD_PostProcessor *pp;
    bool reserved, submitted, tmp_made;
    oq_job_spec spec;
    char dir[PATH_MAX];
    bool has_model, has_config;
    part_kind part;
    char part_key[64];
    uint64_t part_bytes;
    int fd;
    char *config;
    size_t config_len, config_cap;
    /* Answered off the HTTP thread (async): done and suspended are under
     * srv->wait_mu; the other fields are written by the job/inspect thread
     * before done is set and read by the HTTP thread after. */
    bool async, async_done, suspended;
    oq_job_waiter waiter;   /* POST /v1/quantize */
    char *inspect_text;     /* POST /v1/inspect: the JSON answer */
    bool job_headers;       /* X-Onnxq-Job-* on the answer */
    const char *disposition;
} oq_req;

static const char *const route_names[OQ_ROUTE_COUNT] = {
    "/healthz", "/readyz", "/v1/version", "/metrics", "/v1/jobs",
    "/v1/jobs/{id}", "/v1/jobs/{id}/model", "/v1/jobs/{id}/report", "/v1/quantize",
    "/v1/inspect", "unknown"};

static void set_error(oq_req *r, unsigned http, const char *code, const char *detail,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_error(oq_req *r, unsigned http, const char *code, const char *detail,
                      const char *fmt, ...) {
    if (r->failed)
        return;
    r->failed = true;
    r->err_http = http;
    r->err_code = code;
    snprintf(r->err_detail, sizeof r->err_detail, "%s", detail ? detail : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof r->err_msg, fmt, ap);
    va_end(ap);
}

static void refuse(oq_req *r, refusal why, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(oq_req *r, refusal why, const char *detail, const char *fmt, ...) {
    char msg[OQ_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_error(r, refusals[why].http, refusals[why].code, detail, "%s", msg);
}

static void set_error_status(oq_req *r, const oq_error *err, const char *detail) {
    set_error(r, (unsigned)oq_status_http(err->code), oq_status_name(err->code), detail, "%s",
              err->msg);
}

/* ---- responses ---------------------------------------------------------- */

static enum MHD_Result queue(struct MHD_Connection *c, oq_req *r, unsigned status,
                             struct MHD_Response *resp, const char *ctype, uint64_t len) {
    if (!resp)
        return MHD_NO; /* out of memory: closing is all that is left */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (status == 405 && r->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (status == 429 || status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, status == 429 ? "5" : "30");
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->disposition)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, r->disposition);
    if (r->job_headers) {
        char url[64];
        snprintf(url, sizeof url, "/v1/jobs/%s", r->spec.id);
        MHD_add_response_header(resp, "X-Onnxq-Job-Id", r->spec.id);
        MHD_add_response_header(resp, "X-Onnxq-Job-Url", url);
        snprintf(url, sizeof url, "/v1/jobs/%s/report", r->spec.id);
        if (status == 200) /* a failed job has no report */
            MHD_add_response_header(resp, "X-Onnxq-Report-Url", url);
    }
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    r->responded = true;
    r->status = status;
    r->bytes_out = strcmp(r->method, "HEAD") == 0 ? 0 : len; /* HEAD sends no body */
    return ret;
}

/* Steals j. */
static enum MHD_Result send_json(struct MHD_Connection *c, oq_req *r, unsigned status, json_t *j,
                                 const char *location) {
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    size_t len = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    if (location)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
    return queue(c, r, status, resp, "application/json", len);
}

static enum MHD_Result send_error(struct MHD_Connection *c, oq_req *r) {
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(r->err_code ? r->err_code : "EINTERNAL"));
    json_object_set_new(e, "message", oq_json_text(r->err_msg));
    json_object_set_new(e, "detail", oq_json_text(r->err_detail));
    return send_json(c, r, r->err_http ? r->err_http : 500, json_pack("{s:o}", "error", e), NULL);
}

static enum MHD_Result send_fd(struct MHD_Connection *c, oq_req *r, int fd, uint64_t size,
                               const char *ctype) {
    struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return queue(c, r, 200, resp, ctype, size);
}

/* ---- routing and authentication ----------------------------------------- */

static bool is_get(const char *m) { return !strcmp(m, "GET") || !strcmp(m, "HEAD"); }

static void route(oq_req *r, const char *url, const char *method) {
    static const struct {
        const char *path;
        oq_route route;
    } fixed[] = {{"/healthz", OQ_ROUTE_HEALTHZ}, {"/readyz", OQ_ROUTE_READYZ},
                 {"/v1/version", OQ_ROUTE_VERSION}, {"/metrics", OQ_ROUTE_METRICS},
                 {"/v1/jobs", OQ_ROUTE_JOBS}, {"/v1/quantize", OQ_ROUTE_QUANTIZE},
                 {"/v1/inspect", OQ_ROUTE_INSPECT}};
    r->route = OQ_ROUTE_UNKNOWN;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(url, fixed[i].path) == 0)
            r->route = fixed[i].route;
    const char *prefix = "/v1/jobs/";
    bool bad_id = false;
    if (r->route == OQ_ROUTE_UNKNOWN && strncmp(url, prefix, strlen(prefix)) == 0) {
        const char *id = url + strlen(prefix), *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        if (!slash)
            r->route = OQ_ROUTE_JOB;
        else if (strcmp(slash, "/model") == 0)
            r->route = OQ_ROUTE_JOB_MODEL;
        else if (strcmp(slash, "/report") == 0)
            r->route = OQ_ROUTE_JOB_REPORT;
        /* Ids are ours (hex); anything else cannot name a job. */
        if (r->route != OQ_ROUTE_UNKNOWN && oq_job_id_valid(id, n))
            memcpy(r->id, id, n);
        else if (r->route != OQ_ROUTE_UNKNOWN)
            bad_id = true;
    }
    bool ok;
    switch (r->route) {
    case OQ_ROUTE_JOBS: r->allow = "GET, HEAD, POST"; ok = is_get(method) || !strcmp(method, "POST"); break;
    case OQ_ROUTE_JOB: r->allow = "GET, HEAD, DELETE"; ok = is_get(method) || !strcmp(method, "DELETE"); break;
    case OQ_ROUTE_QUANTIZE:
    case OQ_ROUTE_INSPECT: r->allow = "POST"; ok = !strcmp(method, "POST"); break;
    case OQ_ROUTE_UNKNOWN: ok = true; break;
    default: r->allow = "GET, HEAD"; ok = is_get(method); break;
    }
    if (r->route == OQ_ROUTE_UNKNOWN)
        set_error(r, 404, oq_status_name(OQ_ENOTFOUND), "route", "no route %s", r->path);
    else if (!ok)
        refuse(r, REFUSE_METHOD, "method", "%s is not allowed on %s (allowed: %s)", r->method,
               route_names[r->route], r->allow);
    else if (bad_id)
        set_error(r, 404, oq_status_name(OQ_ENOTFOUND), "id", "no job with that id");
}

/* Constant time in the token's length, whatever the header holds. */
static bool token_ok(const struct oq_server *s, const char *header) {
    if (!header || strncmp(header, "Bearer ", 7) != 0)
        return false;
    const char *got = header + 7;
    size_t n = strlen(got);
    unsigned char diff = n != s->token_len;
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned char)((i < n ? got[i] : 0) ^ s->token[i]);
    return diff == 0;
}

/* ---- POST /v1/jobs: the multipart upload -------------------------------- */

static void close_part(oq_req *r) {
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->part = PART_NONE;
}

static bool open_file(oq_req *r, const char *name) {
    char path[PATH_MAX + 32];
    oq_path(path, sizeof path, "%s/%s", r->dir, name);
    r->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (r->fd < 0) {
        set_error(r, 500, oq_status_name(OQ_EIO), "upload", "cannot store the upload: %s",
                  strerror(errno));
        return false;
    }
    r->part = PART_FILE;
    return true;
}

static bool start_part(oq_req *r, const char *key) {
    close_part(r);
    oq_sanitize(r->part_key, sizeof r->part_key, key);
    const char *k = r->part_key;
    r->part_bytes = 0;
    const char *once = NULL;
    if (r->route == OQ_ROUTE_INSPECT && strcmp(key, "model") != 0) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), k, "unknown field '%s' (POST /v1/inspect takes: model)", k);
        return false;
    }
    if (!strcmp(key, "model"))
        once = r->has_model ? "model" : NULL;
    else if (!strcmp(key, "eval"))
        once = r->spec.has_eval ? "eval" : NULL;
    else if (!strcmp(key, "labels"))
        once = r->spec.has_labels ? "labels" : NULL;
    else if (!strcmp(key, "config"))
        once = r->has_config ? "config" : NULL;
    else if (strcmp(key, "calibration") != 0) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), k,
                  "unknown field '%s' (fields: model, calibration, eval, labels, config)", k);
        return false;
    }
    if (once) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), once, "field '%s' given more than once", once);
        return false;
    }
    if (!strcmp(key, "model")) {
        r->has_model = true;
        return open_file(r, "model.onnx");
    }
    if (!strcmp(key, "eval")) {
        r->spec.has_eval = true;
        return open_file(r, "eval.bin");
    }
    if (!strcmp(key, "labels")) {
        r->spec.has_labels = true;
        return open_file(r, "labels.bin");
    }
    if (!strcmp(key, "config")) {
        r->has_config = true;
        r->part = PART_CONFIG;
        return true;
    }
    if (r->spec.n_calib == MAX_CALIB_FILES) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), "calibration", "at most %d calibration files",
                  MAX_CALIB_FILES);
        return false;
    }
    char name[32];
    snprintf(name, sizeof name, "calib-%02d.bin", r->spec.n_calib++);
    return open_file(r, name);
}

static bool append_config(oq_req *r, const char *data, size_t size) {
    if (size > CONFIG_MAX - r->config_len) {
        refuse(r, REFUSE_TOO_LARGE, "config", "the config field is over %d bytes", CONFIG_MAX);
        return false;
    }
    if (r->config_len + size + 1 > r->config_cap) {
        size_t cap = r->config_cap ? r->config_cap : 1024;
        while (cap < r->config_len + size + 1)
            cap *= 2; /* geometric: bounded by CONFIG_MAX above */
        char *grown = realloc(r->config, cap);
        if (!grown) {
            set_error(r, 503, oq_status_name(OQ_ENOMEM), "config", "out of memory");
            return false;
        }
        r->config = grown;
        r->config_cap = cap;
    }
    memcpy(r->config + r->config_len, data, size);
    r->config_len += size;
    r->config[r->config_len] = '\0';
    return true;
}

static bool write_all(oq_req *r, const char *data, size_t size) {
    while (size) {
        ssize_t w = write(r->fd, data, size);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            set_error(r, 500, oq_status_name(OQ_EIO), r->part_key, "cannot store the upload: %s",
                      w < 0 ? strerror(errno) : "short write");
            return false;
        }
        data += w;
        size -= (size_t)w;
    }
    return true;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size) {
    (void)kind, (void)filename, (void)content_type, (void)transfer_encoding;
    oq_req *r = cls;
    if (r->failed)
        return MHD_NO;
    if (!key)
        key = "";
    /* off == 0 starts a part, unless it continues an empty start of the same one. */
    bool same = r->part != PART_NONE && r->part_bytes == 0 && !strcmp(key, r->part_key);
    if (off == 0 && !same && !start_part(r, key))
        return MHD_NO;
    if (!size)
        return MHD_YES;
    r->part_bytes += size;
    bool ok = r->part == PART_CONFIG ? append_config(r, data, size) : write_all(r, data, size);
    return ok ? MHD_YES : MHD_NO;
}

static void begin_upload(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0) {
        refuse(r, REFUSE_MEDIA_TYPE, "Content-Type", "POST %s takes multipart/form-data",
               route_names[r->route]);
        return;
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && *end == '\0' && n > s->max_upload) {
            refuse(r, REFUSE_TOO_LARGE, "max-upload",
                   "the upload of %llu bytes is over the limit of %llu bytes", n,
                   (unsigned long long)s->max_upload);
            return;
        }
    }
    oq_error err = {0};
    if (r->route == OQ_ROUTE_INSPECT) {
        /* Not a job: a scratch folder under DATA_DIR/tmp, removed when the
         * request ends, whatever the outcome. */
        char id[OQ_JOB_ID_LEN + 1];
        if (!oq_random_id(id) || !oq_path(r->dir, sizeof r->dir, "%s/%s", s->tmp_dir, id) ||
            mkdir(r->dir, 0750) != 0) {
            set_error(r, 500, oq_status_name(OQ_EIO), "upload", "cannot store the upload: %s",
                      strerror(errno));
            return;
        }
        r->tmp_made = true;
    } else if (oq_jobs_reserve(s->jobs, r->spec.id, r->dir, sizeof r->dir, &err) != OQ_OK) {
        set_error_status(r, &err, "upload");
        return;
    } else
        r->reserved = true;
    r->pp = MHD_create_post_processor(c, PP_BUFFER, on_part, r);
    if (!r->pp)
        set_error(r, 400, oq_status_name(OQ_EINVAL), "Content-Type",
                  "malformed multipart/form-data Content-Type (no boundary?)");
}

static void stop_upload(oq_req *r) {
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    r->pp = NULL;
    close_part(r);
}

/* ---- answers computed off the HTTP thread ------------------------------- */

/* HTTP thread: true when the answer is ready; otherwise the connection is
 * suspended until async_finish resumes it (then the handler runs again).
 * Under wait_mu, so a finish between the check and the suspend is never
 * lost (libmicrohttpd ignores a suspend that follows a resume). */
static bool async_ready(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    pthread_mutex_lock(&s->wait_mu);
    bool done = r->async_done;
    if (!done && !r->suspended) {
        r->suspended = true;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&s->wait_mu);
    return done;
}

/* Any thread, once: r may be freed as soon as this returns. */
static void async_finish(struct oq_server *s, oq_req *r, bool inspect) {
    pthread_mutex_lock(&s->wait_mu);
    if (inspect)
        s->inspects--;
    r->async_done = true;
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
    pthread_cond_broadcast(&s->wait_cv);
    pthread_mutex_unlock(&s->wait_mu);
}

static void start_async(struct oq_server *s, oq_req *r) {
    pthread_mutex_lock(&s->wait_mu);
    s->async_pending++;
    pthread_mutex_unlock(&s->wait_mu);
    r->async = true;
}

static void job_notify(oq_job_waiter *w) {
    oq_req *r = w->ctx;
    async_finish(r->srv, r, false);
}

static void *inspect_main(void *arg) {
    oq_req *r = arg;
    char path[PATH_MAX + 16];
    oq_path(path, sizeof path, "%s/model.onnx", r->dir);
    oq_load_opts lo = {.base_dir = r->dir};
    oq_model *m = NULL;
    json_t *summary = NULL;
    oq_error err = {0};
    oq_status st = oq_model_load_file(path, &lo, &m, &err);
    if (st == OQ_OK)
        st = oq_inspect_model(m, &summary, &err);
    oq_model_free(m);
    if (st == OQ_OK && !(r->inspect_text = json_dumps(summary, JSON_COMPACT)))
        st = oq_err(&err, OQ_ENOMEM, "out of memory formatting the summary");
    json_decref(summary);
    if (st != OQ_OK) {
        oq_msg_replace(err.msg, sizeof err.msg, path, "model");
        oq_msg_replace(err.msg, sizeof err.msg, r->dir, "upload");
        set_error_status(r, &err, "model");
    }
    async_finish(r->srv, r, true);
    return NULL;
}

/* The answer of a request whose work has finished (async_ready). */
static enum MHD_Result async_answer(struct MHD_Connection *c, oq_req *r) {
    if (r->route == OQ_ROUTE_INSPECT) {
        if (r->failed)
            return send_error(c, r);
        char *text = r->inspect_text;
        r->inspect_text = NULL;
        size_t len = strlen(text);
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(text);
        return queue(c, r, 200, resp, "application/json", len);
    }
    oq_job_waiter *w = &r->waiter;
    r->job_headers = true;
    if (w->state == OQ_JOB_SUCCEEDED && w->fd >= 0) {
        int fd = w->fd;
        w->fd = -1;
        r->disposition = "attachment; filename=\"model.int8.onnx\"";
        return send_fd(c, r, fd, w->size, "application/octet-stream");
    }
    if (w->shutdown)
        refuse(r, REFUSE_UNAVAILABLE, "server",
               w->state == OQ_JOB_QUEUED
                   ? "the server is shutting down; job %s stays queued and runs after the restart"
                   : "the server is shutting down; job %s was stopped",
               r->spec.id);
    else {
        oq_status st = w->status == OQ_OK ? OQ_EINTERNAL : w->status;
        set_error(r, (unsigned)oq_status_http(st), w->err_code[0] ? w->err_code : oq_status_name(st),
                  "job", "%s", w->err_msg[0] ? w->err_msg : oq_status_desc(st));
    }
    return send_error(c, r);
}

static enum MHD_Result finish_inspect(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    pthread_mutex_lock(&s->wait_mu);
    bool busy = s->inspects >= OQ_MAX_INSPECTS;
    if (!busy)
        s->inspects++;
    pthread_mutex_unlock(&s->wait_mu);
    if (busy) {
        refuse(r, REFUSE_BUSY, "inspect", "%d inspections are running; retry later", OQ_MAX_INSPECTS);
        return send_error(c, r);
    }
    start_async(s, r);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, inspect_main, r);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        set_error(r, 503, oq_status_name(OQ_ENOMEM), "inspect", "cannot start a thread: %s",
                  strerror(rc));
        async_finish(s, r, true);
    }
    return async_ready(s, c, r) ? async_answer(c, r) : MHD_YES;
}

static enum MHD_Result finish_upload(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    if (r->pp && MHD_destroy_post_processor(r->pp) != MHD_YES)
        set_error(r, 400, oq_status_name(OQ_EINVAL), "body", "malformed or truncated multipart body");
    r->pp = NULL;
    close_part(r);
    if (r->failed)
        return send_error(c, r);
    if (!r->has_model) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), "model", "the 'model' file field is missing");
        return send_error(c, r);
    }
    if (r->route == OQ_ROUTE_INSPECT)
        return finish_inspect(s, c, r);
    json_t *cfg_json;
    if (r->has_config) {
        json_error_t je;
        cfg_json = json_loadb(r->config ? r->config : "", r->config_len, JSON_REJECT_DUPLICATES, &je);
        if (!cfg_json) {
            set_error(r, 400, oq_status_name(OQ_EINVAL), "config", "config: %s (line %d, column %d)",
                      je.text, je.line, je.column);
            return send_error(c, r);
        }
    } else
        cfg_json = json_object();
    oq_quant_config cfg;
    oq_error err = {0};
    if (!json_is_object(cfg_json)) {
        set_error(r, 400, oq_status_name(OQ_EINVAL), "config", "config: a JSON object expected");
        json_decref(cfg_json);
        return send_error(c, r);
    }
    if (oq_quant_config_from_json(cfg_json, &cfg, &err) != OQ_OK) {
        /* The library names the field ("config.per_channel must be ..."):
         * that path is the detail, and the message needs no prefix. */
        char field[sizeof r->err_detail] = "config";
        if (strncmp(err.msg, "config.", 7) == 0) {
            size_t n = strcspn(err.msg, ": ");
            if (n < sizeof field)
                snprintf(field, sizeof field, "%.*s", (int)n, err.msg);
        }
        set_error(r, 400, oq_status_name(OQ_EINVAL), field, "%s%s",
                  strncmp(err.msg, "config", 6) == 0 ? "" : "config: ", err.msg);
        json_decref(cfg_json);
        return send_error(c, r);
    }
    bool needs_calib = cfg.mode == OQ_QMODE_STATIC;
    oq_quant_config_free(&cfg);
    if (needs_calib && r->spec.n_calib == 0) {
        set_error(r, 422, oq_status_name(OQ_EDATA), "calibration",
                  "static mode needs calibration data: add a 'calibration' file field");
        json_decref(cfg_json);
        return send_error(c, r);
    }
    r->spec.config = cfg_json;
    json_t *view;
    bool sync = r->route == OQ_ROUTE_QUANTIZE, stopping = false;
    r->waiter.notify = job_notify;
    r->waiter.ctx = r;
    r->waiter.fd = -1;
    oq_status st = oq_jobs_submit(s->jobs, &r->spec, sync ? &r->waiter : NULL, &view, &stopping, &err);
    if (st == OQ_ELIMIT && stopping) {
        refuse(r, REFUSE_UNAVAILABLE, "server", "the server is shutting down");
        return send_error(c, r);
    }
    if (st == OQ_ELIMIT) {
        refuse(r, REFUSE_BUSY, "queue", "%s", err.msg);
        return send_error(c, r);
    }
    if (st != OQ_OK) {
        set_error_status(r, &err, "queue");
        return send_error(c, r);
    }
    r->submitted = true;
    if (sync) {
        json_decref(view);
        start_async(s, r);
        return async_ready(s, c, r) ? async_answer(c, r) : MHD_YES;
    }
    char location[64];
    snprintf(location, sizeof location, "/v1/jobs/%s", r->spec.id);
    json_t *body = json_pack("{s:O,s:O,s:O}", "id", json_object_get(view, "id"), "url",
                             json_object_get(view, "url"), "state", json_object_get(view, "state"));
    json_decref(view);
    return send_json(c, r, 202, body, location);
}

/* ---- the other routes --------------------------------------------------- */

static enum MHD_Result send_metrics(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return MHD_NO;
    fprintf(f, "# HELP onnxq_http_requests_total HTTP requests by route and status code.\n"
               "# TYPE onnxq_http_requests_total counter\n");
    for (int rt = 0; rt < OQ_ROUTE_COUNT; rt++)
        for (int k = 0; k < OQ_HTTP_CODE_SPAN; k++) {
            uint64_t n = __atomic_load_n(&s->requests[rt][k], __ATOMIC_RELAXED);
            if (n)
                fprintf(f, "onnxq_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                        route_names[rt], k + OQ_HTTP_CODE_MIN, (unsigned long long)n);
        }
    oq_jobs_metrics m;
    oq_jobs_metrics_get(s->jobs, &m);
    fprintf(f, "# HELP onnxq_jobs Jobs by state.\n# TYPE onnxq_jobs gauge\n");
    for (int st = 0; st < OQ_JOB_STATE_COUNT; st++)
        fprintf(f, "onnxq_jobs{state=\"%s\"} %zu\n", oq_job_state_name((oq_job_state)st), m.counts[st]);
    fprintf(f, "# HELP onnxq_queue_depth Jobs waiting for a worker.\n# TYPE onnxq_queue_depth gauge\n"
               "onnxq_queue_depth %zu\n", m.counts[OQ_JOB_QUEUED]);
    fprintf(f, "# HELP onnxq_job_duration_seconds Run time (start to end) of the jobs this process ran, "
               "by final state.\n# TYPE onnxq_job_duration_seconds histogram\n");
    static const oq_job_state ended[] = {OQ_JOB_SUCCEEDED, OQ_JOB_FAILED, OQ_JOB_CANCELLED};
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++) {
        oq_job_state st = ended[i];
        const char *name = oq_job_state_name(st);
        for (int b = 0; b < OQ_DURATION_BUCKETS; b++)
            fprintf(f, "onnxq_job_duration_seconds_bucket{state=\"%s\",le=\"%g\"} %llu\n", name,
                    oq_duration_bounds[b], (unsigned long long)m.dur_le[st][b]);
        fprintf(f, "onnxq_job_duration_seconds_bucket{state=\"%s\",le=\"+Inf\"} %llu\n"
                   "onnxq_job_duration_seconds_sum{state=\"%s\"} %.6f\n"
                   "onnxq_job_duration_seconds_count{state=\"%s\"} %llu\n",
                name, (unsigned long long)m.dur_count[st], name, m.dur_sum[st], name,
                (unsigned long long)m.dur_count[st]);
    }
    fprintf(f, "# HELP onnxq_job_stage_seconds_total Time the jobs this process ran spent in each stage.\n"
               "# TYPE onnxq_job_stage_seconds_total counter\n");
    for (int i = 0; i < OQ_STAGE_COUNT; i++)
        fprintf(f, "onnxq_job_stage_seconds_total{stage=\"%s\"} %.6f\n", oq_job_stage_name(i),
                m.stage_s[i]);
    fprintf(f, "# HELP onnxq_http_received_bytes_total Request body bytes received.\n"
               "# TYPE onnxq_http_received_bytes_total counter\nonnxq_http_received_bytes_total %llu\n",
            (unsigned long long)__atomic_load_n(&s->bytes_in, __ATOMIC_RELAXED));
    fprintf(f, "# HELP onnxq_http_sent_bytes_total Response body bytes sent.\n"
               "# TYPE onnxq_http_sent_bytes_total counter\nonnxq_http_sent_bytes_total %llu\n",
            (unsigned long long)__atomic_load_n(&s->bytes_out, __ATOMIC_RELAXED));
    if (fclose(f) != 0) {
        free(buf);
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(buf);
    return queue(c, r, 200, resp, "text/plain; version=0.0.4", len);
}

static enum MHD_Result dispatch(struct oq_server *s, struct MHD_Connection *c, oq_req *r) {
    json_t *j = NULL;
    oq_error err = {0};
    switch (r->route) {
    case OQ_ROUTE_HEALTHZ: return send_json(c, r, 200, json_pack("{s:s}", "status", "ok"), NULL);
    case OQ_ROUTE_READYZ:
        if (__atomic_load_n(&s->stopping, __ATOMIC_RELAXED)) {
            refuse(r, REFUSE_UNAVAILABLE, "server", "the server is shutting down");
            return send_error(c, r);
        }
        return send_json(c, r, 200, json_pack("{s:s}", "status", "ready"), NULL);
    case OQ_ROUTE_VERSION:
        return send_json(c, r, 200, json_pack("{s:s,s:s,s:s}", "name", "onnxq", "version", OQ_VERSION,
                                              "api", "v1"), NULL);
    case OQ_ROUTE_METRICS: return send_metrics(s, c, r);
    case OQ_ROUTE_QUANTIZE:
    case OQ_ROUTE_INSPECT: return finish_upload(s, c, r);
    case OQ_ROUTE_JOBS:
        if (!strcmp(r->method, "POST"))
            return finish_upload(s, c, r);
        return send_json(c, r, 200, oq_jobs_list(s->jobs), NULL);
    case OQ_ROUTE_JOB:
        if (!strcmp(r->method, "DELETE")) {
            int http = oq_jobs_delete(s->jobs, r->id, &j);
            if (http == 204) {
                struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
                return queue(c, r, 204, resp, "application/json", 0);
            }
            if (http != 404)
                return send_json(c, r, (unsigned)http, j, NULL);
        } else if ((j = oq_jobs_view(s->jobs, r->id)))
            return send_json(c, r, 200, j, NULL);
        set_error(r, 404, oq_status_name(OQ_ENOTFOUND), "id", "no job %s", r->id);
        return send_error(c, r);
    case OQ_ROUTE_JOB_MODEL:
    case OQ_ROUTE_JOB_REPORT: {
        bool model = r->route == OQ_ROUTE_JOB_MODEL;
        uint64_t size = 0;
        int http = 500;
        int fd = oq_jobs_open_result(s->jobs, r->id, model ? "model.int8.onnx" : "report.json", &size,
                                     &http, &err);
        if (fd < 0) {
            set_error(r, (unsigned)http, oq_status_name(err.code), "id", "%s", err.msg);
            return send_error(c, r);
        }
        return send_fd(c, r, fd, size, model ? "application/octet-stream" : "application/json");
    }
    default: break;
    }
    set_error(r, 404, oq_status_name(OQ_ENOTFOUND), "route", "no route %s", r->path);
    return send_error(c, r);
}

/* ---- the two callbacks -------------------------------------------------- */

enum MHD_Result oq_http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls) {
    (void)version;
    struct oq_server *s = cls;
    oq_req *r = *con_cls;
    if (!r) { /* first call: headers only */
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        r->srv = s;
        r->conn = c;
        r->fd = -1;
        r->waiter.fd = -1;
        r->start_ms = oq_now_ms();
        oq_sanitize(r->method, sizeof r->method, method);
        oq_sanitize(r->path, sizeof r->path, url);
        route(r, url, method);
        if (s->token && r->route != OQ_ROUTE_HEALTHZ && r->route != OQ_ROUTE_READYZ &&
            !token_ok(s, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
            r->failed = false; /* a 401 hides whether the route exists */
            refuse(r, REFUSE_AUTH, "Authorization", "a valid 'Authorization: Bearer' token is required");
        }
        bool post = !strcmp(r->method, "POST") &&
                    (r->route == OQ_ROUTE_JOBS || r->route == OQ_ROUTE_QUANTIZE || r->route == OQ_ROUTE_INSPECT);
        if (!r->failed && post && __atomic_load_n(&s->stopping, __ATOMIC_RELAXED))
            refuse(r, REFUSE_UNAVAILABLE, "server", "the server is shutting down; retry later");
        if (!r->failed && post)
            begin_upload(s, c, r);
        /* A client waiting for "100 Continue" has sent no body yet: answer
         * now and it never sends it. Others get the answer after their body. */
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (r->failed && expect && strcasecmp(expect, "100-continue") == 0)
            return send_error(c, r);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* consumed or swallowed, never buffered */
        r->bytes_in += n;
        if (r->failed || r->responded) {
            /* Swallowed so the client can read the answer, up to a cap:
             * then closing the connection is the only defence left. */
            r->discarded += n;
            if (r->discarded > DISCARD_MAX) {
                r->cut = true;
                return MHD_NO;
            }
            return MHD_YES;
        }
        if (!r->pp) {
            if (r->bytes_in > BODY_MAX_OTHER)
                refuse(r, REFUSE_TOO_LARGE, "body", "this route takes no body");
            return MHD_YES;
        }
        if (r->bytes_in > s->max_upload)
            refuse(r, REFUSE_TOO_LARGE, "max-upload", "the upload is over the limit of %llu bytes",
                   (unsigned long long)s->max_upload);
        else if (MHD_post_process(r->pp, upload_data, n) != MHD_YES)
            set_error(r, 400, oq_status_name(OQ_EINVAL), "body", "malformed multipart body");
        if (r->failed)
            stop_upload(r);
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    if (r->async) /* resumed (or resumed early): the answer is ready */
        return async_ready(s, c, r) ? async_answer(c, r) : MHD_YES;
    if (r->failed) {
        stop_upload(r);
        return send_error(c, r);
    }
    return dispatch(s, c, r);
}

void oq_http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe) {
    (void)c;
    struct oq_server *s = cls;
    oq_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    stop_upload(r);
    if (r->reserved && !r->submitted)
        oq_jobs_discard(s->jobs, r->spec.id); /* never accepted: nothing of it stays */
    if (r->tmp_made)
        oq_rm_tree(r->dir); /* an inspect upload: never kept */
    if (r->waiter.fd >= 0)
        close(r->waiter.fd); /* the client left before its model was sent */
    if (r->async) {
        pthread_mutex_lock(&s->wait_mu);
        s->async_pending--;
        pthread_cond_broadcast(&s->wait_cv);
        pthread_mutex_unlock(&s->wait_mu);
    }
    json_decref(r->spec.config);
    free(r->config);
    free(r->inspect_text);
    unsigned status = r->responded ? r->status : 0;
    if (status >= OQ_HTTP_CODE_MIN && status < OQ_HTTP_CODE_MIN + OQ_HTTP_CODE_SPAN)
        __atomic_fetch_add(&s->requests[r->route][status - OQ_HTTP_CODE_MIN], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->bytes_in, r->bytes_in, __ATOMIC_RELAXED);
    uint64_t out = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->bytes_out : 0;
    __atomic_fetch_add(&s->bytes_out, out, __ATOMIC_RELAXED);
    char code[40] = "";
    if (r->failed)
        snprintf(code, sizeof code, " code=%s", r->err_code ? r->err_code : "");
    char job[48] = "";
    if (r->submitted)
        snprintf(job, sizeof job, " job=%s", r->spec.id);
    oq_log("request", "method=%s path=\"%s\" route=\"%s\" status=%u bytes_in=%llu bytes_out=%llu ms=%lld%s%s%s%s",
           r->method, r->path, route_names[r->route], status, (unsigned long long)r->bytes_in,
           (unsigned long long)out, (long long)(oq_now_ms() - r->start_ms), code, job,
           toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1",
           r->cut ? " cut=discard-limit" : "");
    free(r);
}
