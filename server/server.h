/* server.h: the `onnxq serve` daemon: an HTTP API (libmicrohttpd) over a
 * data directory of jobs run by a worker pool. The caller owns signals:
 * start, wait for SIGTERM/SIGINT, then stop (which lets running jobs finish). */
#ifndef OQ_SERVER_H
#define OQ_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct oq_server oq_server;

typedef struct {
    const char *listen;       /* "IPv4:PORT"; port 0 = ephemeral */
    const char *data_dir;     /* created if missing; jobs live in DATA_DIR/jobs/<id>/ */
    const char *token_file;   /* NULL: no authentication */
    int workers;              /* concurrent jobs, >= 1 */
    uint64_t max_upload;      /* bytes of one request body */
    size_t max_queue;         /* queued (not yet running) jobs before 429 */
    unsigned max_connections; /* 0 = 256 */
    unsigned idle_timeout_s;  /* per-connection idle timeout; 0 = 60 */
    size_t max_header_bytes;  /* per-connection memory for request headers; 0 = 64 KiB */
    uint64_t job_ttl_s;       /* finished jobs removed after this; 0 = never */
    unsigned grace_s;         /* on stop, running jobs get this long to finish */
} oq_server_opts;

/* Binds, recovers the data directory, logs "listening on HOST:PORT" first,
 * starts the workers and the HTTP threads. */
oq_status oq_server_start(const oq_server_opts *opts, oq_server **out, oq_error *err);
unsigned oq_server_port(const oq_server *s);
/* Answers 503 to new POSTs (the listener stays open so jobs can still be
 * polled), gives running jobs the grace period, then stops them (recorded
 * failed), leaves queued jobs queued for the next start, closes. */
void oq_server_stop(oq_server *s);
void oq_server_free(oq_server *s); /* NULL-safe; stops first if needed */

#endif
