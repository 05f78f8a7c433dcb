/* server.c: the daemon's life: bind the listen socket ourselves (so port 0
 * can be logged before anything else), recover the data directory, start
 * the workers and libmicrohttpd, and stop in the order that loses nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "srv.h"

#define TOKEN_MAX 4096

static oq_status read_token(const char *path, struct oq_server *s, oq_error *err) {
    FILE *f = fopen(path, "re");
    if (!f)
        return oq_err(err, OQ_EIO, "token file %s: %s", path, strerror(errno));
    char buf[TOKEN_MAX + 2];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n > TOKEN_MAX)
        return oq_err(err, OQ_EINVAL, "token file %s: over %d bytes", path, TOKEN_MAX);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--; /* `echo secret > file` leaves a newline */
    buf[n] = '\0';
    if (n == 0 || strlen(buf) != n)
        return oq_err(err, OQ_EINVAL, "token file %s: empty or binary", path);
    if (!(s->token = strdup(buf)))
        return oq_err(err, OQ_ENOMEM, "out of memory");
    s->token_len = n;
    return OQ_OK;
}

static oq_status bind_listen(const char *listen_at, struct oq_server *s, oq_error *err) {
    const char *colon = strrchr(listen_at, ':');
    size_t hl = colon ? (size_t)(colon - listen_at) : 0;
    char *end;
    unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (!colon || hl == 0 || hl >= sizeof s->host || !colon[1] || *end || port > 65535)
        return oq_err(err, OQ_EINVAL, "--listen '%s': expected IPv4:PORT, e.g. 127.0.0.1:8080",
                      listen_at);
    memcpy(s->host, listen_at, hl);
    s->host[hl] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, s->host, &sa.sin_addr) != 1)
        return oq_err(err, OQ_EINVAL, "--listen '%s': '%s' is not an IPv4 address", listen_at, s->host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return oq_err(err, OQ_EIO, "socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int e = errno;
        close(fd);
        return oq_err(err, OQ_EIO, "--listen %s: %s", listen_at, strerror(e));
    }
    s->listen_fd = fd;
    s->port = ntohs(sa.sin_port);
    return OQ_OK;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512], clean[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    oq_sanitize(clean, sizeof clean, msg);
    oq_log("mhd", "msg=\"%s\"", clean);
}

oq_status oq_server_start(const oq_server_opts *o, oq_server **out, oq_error *err) {
    *out = NULL;
    if (!o->data_dir || !*o->data_dir)
        return oq_err(err, OQ_EINVAL, "a data directory is required (--data-dir or ONNXQ_DATA_DIR)");
    if (o->max_upload == 0 || o->max_queue == 0)
        return oq_err(err, OQ_EINVAL, "--max-upload and --max-queue must be positive");
    struct oq_server *s = calloc(1, sizeof *s);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    s->listen_fd = -1;
    s->max_upload = o->max_upload;
    s->grace_s = o->grace_s;
    pthread_mutex_init(&s->wait_mu, NULL);
    pthread_cond_init(&s->wait_cv, NULL);
    size_t header_bytes = o->max_header_bytes ? o->max_header_bytes : (size_t)64 * 1024;
    oq_status st = OQ_OK;
    if (o->token_file && (st = read_token(o->token_file, s, err)) != OQ_OK)
        goto fail;
    if (oq_mkdir_p(o->data_dir) != 0) {
        st = oq_err(err, OQ_EIO, "data dir %s: %s", o->data_dir, strerror(errno));
        goto fail;
    }
    /* DATA_DIR/tmp holds in-flight inspect uploads only: whatever is there
     * at start was left by a crash. */
    if (!oq_path(s->tmp_dir, sizeof s->tmp_dir, "%s/tmp", o->data_dir) ||
        (oq_rm_tree(s->tmp_dir), oq_mkdir_p(s->tmp_dir)) != 0) {
        st = oq_err(err, OQ_EIO, "data dir %s/tmp: %s", o->data_dir, strerror(errno));
        goto fail;
    }
    if ((st = bind_listen(o->listen ? o->listen : "127.0.0.1:8080", s, err)) != OQ_OK)
        goto fail;
    unsigned max_conn = o->max_connections ? o->max_connections : 256u;
    unsigned idle = o->idle_timeout_s ? o->idle_timeout_s : 60u;
    oq_log("start", "msg=\"listening on %s:%u\" data_dir=\"%s\" workers=%d max_upload=%llu max_queue=%zu "
           "job_ttl_s=%llu grace_s=%u max_connections=%u idle_timeout_s=%u max_header_bytes=%zu auth=%s",
           s->host, s->port, o->data_dir, o->workers, (unsigned long long)o->max_upload, o->max_queue,
           (unsigned long long)o->job_ttl_s, o->grace_s, max_conn, idle, header_bytes,
           s->token ? "bearer" : "none");
    oq_jobs_opts jo = {.data_dir = o->data_dir, .workers = o->workers, .max_queue = o->max_queue,
                       .ttl_s = o->job_ttl_s};
    if ((st = oq_jobs_open(&jo, &s->jobs, err)) != OQ_OK)
        goto fail;
    /* Suspend/resume: POST /v1/quantize and /v1/inspect wait for their
     * answer off the HTTP thread, which keeps serving everyone else. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_AUTO;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, oq_http_on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, so every message comes through it */
        MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, max_conn,
        MHD_OPTION_CONNECTION_TIMEOUT, idle,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, header_bytes, /* bounds the request headers */
        MHD_OPTION_NOTIFY_COMPLETED, oq_http_on_completed, s,
        MHD_OPTION_END);
    if (!s->mhd) {
        st = oq_err(err, OQ_EIO, "cannot start the HTTP daemon on %s:%u", s->host, s->port);
        goto fail;
    }
    *out = s;
    return OQ_OK;
fail:
    oq_server_free(s);
    return st;
}

unsigned oq_server_port(const oq_server *s) { return s ? s->port : 0; }

void oq_server_stop(oq_server *s) {
    if (!s || __atomic_exchange_n(&s->stopping, 1, __ATOMIC_RELAXED))
        return;
    oq_log("stop", "msg=\"draining: new POSTs get 503, running jobs get %u s\"", s->grace_s);
    /* The listener stays open while draining: clients can still poll their
     * jobs and download results; new work is refused with 503. */
    oq_jobs_drain(s->jobs, s->grace_s);
    /* Every job has ended and told its waiter; inspects end on their own.
     * Let those answers go out before the daemon stops (libmicrohttpd must
     * not be stopped with suspended connections). Bounded: a client that
     * reads slowly does not hold the exit. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&s->wait_mu);
    bool late = false;
    while (s->inspects > 0 || (!late && s->async_pending > 0)) {
        if (late) /* an inspect thread still holds a suspended connection: wait for it */
            pthread_cond_wait(&s->wait_cv, &s->wait_mu);
        else if (pthread_cond_timedwait(&s->wait_cv, &s->wait_mu, &deadline) == ETIMEDOUT)
            late = true;
    }
    unsigned left = s->async_pending;
    pthread_mutex_unlock(&s->wait_mu);
    if (left)
        oq_log("stop", "pending=%u msg=\"closing connections still sending answers\"", left);
    if (s->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(s->mhd);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
        s->listen_fd = -1;
        MHD_stop_daemon(s->mhd); /* no request can reach the job store after this */
    }
    s->mhd = NULL;
    oq_jobs_close(s->jobs);
    s->jobs = NULL;
    oq_log("stop", "msg=\"stopped\"");
}

void oq_server_free(oq_server *s) {
    if (!s)
        return;
    if (s->mhd)
        oq_server_stop(s);
    oq_jobs_close(s->jobs);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    free(s->token);
    pthread_cond_destroy(&s->wait_cv);
    pthread_mutex_destroy(&s->wait_mu);
    free(s);
}
