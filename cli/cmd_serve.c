/* cmd_serve.c: `onnxq serve`: settings from ONNXQ_* environment variables
 * (for Docker), overridden by flags; then run the daemon until SIGTERM or
 * SIGINT, which stop it gracefully (running jobs finish, exit status 0). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "server.h"

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: onnxq serve [options]\n"
            "\n"
            "Runs the HTTP API: POST /v1/jobs (multipart: model, calibration, eval, labels,\n"
            "config), POST /v1/quantize (the same, answered with the INT8 model), POST\n"
            "/v1/inspect (multipart: model), GET /v1/jobs[/{id}[/model|/report]], DELETE\n"
            "/v1/jobs/{id}, /healthz, /readyz, /metrics, /v1/version (docs/openapi.yaml).\n"
            "Each option also reads an environment variable; the flag wins.\n"
            "\n"
            "  --listen IP:PORT      address to bind (ONNXQ_LISTEN; default 127.0.0.1:8080; port 0 = any)\n"
            "  --data-dir DIR        jobs, uploads and results (ONNXQ_DATA_DIR; required)\n"
            "  --workers N           jobs run at once (ONNXQ_WORKERS; default 1)\n"
            "  --max-upload BYTES    largest request body, suffixes K M G (ONNXQ_MAX_UPLOAD; default 1G)\n"
            "  --max-queue N         jobs waiting before 429 (ONNXQ_MAX_QUEUE; default 16)\n"
            "  --token-file FILE     require 'Authorization: Bearer <token>' (ONNXQ_TOKEN_FILE)\n"
            "  --job-ttl SECONDS     remove finished jobs this long after they end; 0 = keep\n"
            "                        (ONNXQ_JOB_TTL; default 604800 = 7 days)\n"
            "  --grace SECONDS       on SIGTERM, running jobs get this long before they are\n"
            "                        stopped (ONNXQ_GRACE; default 30)\n"
            "  --max-connections N   open connections at once (ONNXQ_MAX_CONNECTIONS; default 256)\n"
            "  --idle-timeout SECONDS  close a connection idle this long (ONNXQ_IDLE_TIMEOUT; default 60)\n"
            "  --max-header-bytes BYTES  memory for one request's headers, suffixes K M\n"
            "                        (ONNXQ_MAX_HEADER_BYTES; default 64K)\n"
            "  -h, --help            this help\n");
}

/* A positive count with an optional binary suffix (K, M, G); false on junk
 * or overflow, so a typo never becomes a silent default. */
static bool parse_size(const char *s, unsigned long long max, bool zero_ok, unsigned long long *out) {
    if (!s || *s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (errno || *end || (v == 0 && !zero_ok) || v > (max >> shift))
        return false;
    *out = v << shift;
    return true;
}

static bool parse_arg(const char *what, const char *s, unsigned long long max, unsigned long long *out) {
    if (parse_size(s, max, false, out))
        return true;
    fprintf(stderr, "onnxq: %s: '%s' is not a positive number up to %llu\n", what, s, max);
    return false;
}

static bool parse_arg0(const char *what, const char *s, unsigned long long max, unsigned long long *out) {
    if (parse_size(s, max, true, out))
        return true;
    fprintf(stderr, "onnxq: %s: '%s' is not a number from 0 to %llu\n", what, s, max);
    return false;
}

int oq_cmd_serve(int argc, char **argv) {
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},     {"data-dir", required_argument, NULL, 'd'},
        {"workers", required_argument, NULL, 'w'},    {"max-upload", required_argument, NULL, 'u'},
        {"max-queue", required_argument, NULL, 'q'},  {"token-file", required_argument, NULL, 't'},
        {"job-ttl", required_argument, NULL, 'T'},    {"grace", required_argument, NULL, 'g'},
        {"max-connections", required_argument, NULL, 'C'}, {"idle-timeout", required_argument, NULL, 'I'},
        {"max-header-bytes", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0}};
    const char *listen_at = getenv("ONNXQ_LISTEN"), *data_dir = getenv("ONNXQ_DATA_DIR");
    const char *token_file = getenv("ONNXQ_TOKEN_FILE");
    const char *workers_s = getenv("ONNXQ_WORKERS"), *upload_s = getenv("ONNXQ_MAX_UPLOAD");
    const char *queue_s = getenv("ONNXQ_MAX_QUEUE"), *ttl_s = getenv("ONNXQ_JOB_TTL");
    const char *grace_s = getenv("ONNXQ_GRACE"), *conn_s = getenv("ONNXQ_MAX_CONNECTIONS");
    const char *idle_s = getenv("ONNXQ_IDLE_TIMEOUT"), *header_s = getenv("ONNXQ_MAX_HEADER_BYTES");
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'l': listen_at = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'w': workers_s = optarg; break;
        case 'u': upload_s = optarg; break;
        case 'q': queue_s = optarg; break;
        case 't': token_file = optarg; break;
        case 'T': ttl_s = optarg; break;
        case 'g': grace_s = optarg; break;
        case 'C': conn_s = optarg; break;
        case 'I': idle_s = optarg; break;
        case 'H': header_s = optarg; break;
        case 'h': serve_usage(stdout); return 0;
        default: serve_usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        serve_usage(stderr);
        return 2;
    }
    unsigned long long workers = 1, max_upload = 1ull << 30, max_queue = 16, ttl = 7ull * 24 * 3600,
                       grace = 30, conns = 256, idle = 60, header = 64 * 1024;
    if ((workers_s && !parse_arg("--workers", workers_s, 256, &workers)) ||
        (upload_s && !parse_arg("--max-upload", upload_s, 1ull << 42, &max_upload)) ||
        (queue_s && !parse_arg("--max-queue", queue_s, 100000, &max_queue)) ||
        (ttl_s && !parse_arg0("--job-ttl", ttl_s, 100ull * 365 * 24 * 3600, &ttl)) ||
        (grace_s && !parse_arg0("--grace", grace_s, 24 * 3600, &grace)) ||
        (conn_s && !parse_arg("--max-connections", conn_s, 65536, &conns)) ||
        (idle_s && !parse_arg("--idle-timeout", idle_s, 24 * 3600, &idle)) ||
        (header_s && !parse_arg("--max-header-bytes", header_s, 16ull << 20, &header)))
        return 2;
    if (header < 4096) {
        fprintf(stderr, "onnxq: --max-header-bytes: %llu is below 4096\n", header);
        return 2;
    }
    if (!data_dir || !*data_dir) {
        fprintf(stderr, "onnxq: serve: --data-dir (or ONNXQ_DATA_DIR) is required\n");
        return 2;
    }
    oq_server_opts opts = {
        .listen = listen_at && *listen_at ? listen_at : "127.0.0.1:8080",
        .data_dir = data_dir,
        .token_file = token_file && *token_file ? token_file : NULL,
        .workers = (int)workers,
        .max_upload = max_upload,
        .max_queue = (size_t)max_queue,
        .job_ttl_s = ttl,
        .grace_s = (unsigned)grace,
        .max_connections = (unsigned)conns,
        .idle_timeout_s = (unsigned)idle,
        .max_header_bytes = (size_t)header,
    };
    /* Block the stop signals in every thread (they inherit the mask) and
     * take them here with sigwait: no async-signal-safety puzzles. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client hanging up is an error return, not a death */
    oq_server *srv = NULL;
    oq_error err = {0};
    if (oq_server_start(&opts, &srv, &err) != OQ_OK) {
        fprintf(stderr, "onnxq: serve: %s\n", err.msg);
        return 1;
    }
    int sig = 0;
    sigwait(&stop, &sig);
    (void)sig; /* oq_server_stop logs the drain as structured event=stop lines */
    oq_server_stop(srv);
    oq_server_free(srv);
    return 0;
}
