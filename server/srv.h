/* srv.h: what the server's files share: structured logging, time, the job
 * store (jobs.c) behind the HTTP layer (http.c). Not a public header. */
#ifndef OQ_SRV_H
#define OQ_SRV_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define OQ_JOB_ID_LEN 32 /* hex digits of 16 random bytes */

/* ---- log.c ---- */
/* One line to stderr: "ts=<ISO-8601> event=<event> <fmt...>", written at once. */
void oq_log(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t oq_now_ms(void);
/* "2024-05-01T12:00:00.123Z"; buf holds at least 32 bytes. */
void oq_iso8601(int64_t ms, char *buf, size_t cap);
/* Copies at most cap-1 bytes of src, printable ASCII only (others and '"',
 * '\\' become '?'): request text is hostile and goes into logs and JSON. */
void oq_sanitize(char *dst, size_t cap, const char *src);
/* A JSON string of s; s is sanitized when it is not valid UTF-8. */
json_t *oq_json_text(const char *s);
bool oq_job_id_valid(const char *s, size_t len);
/* Removes dir and everything under it (no symlinks followed). */
int oq_rm_tree(const char *dir);
/* snprintf for paths: false when the result did not fit (then buf is ""). */
bool oq_path(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int oq_mkdir_p(const char *dir);

/* ---- jobs.c ---- */
typedef enum {
    OQ_JOB_QUEUED = 0,
    OQ_JOB_RUNNING,
    OQ_JOB_SUCCEEDED,
    OQ_JOB_FAILED,
    OQ_JOB_CANCELLED,
    OQ_JOB_STATE_COUNT
} oq_job_state;
const char *oq_job_state_name(oq_job_state s);

typedef struct oq_jobs oq_jobs;

/* What a finished upload left in DATA_DIR/jobs/<id>/upload/: model.onnx,
 * calib-NN.bin (n_calib), eval.bin, labels.bin. */
typedef struct {
    char id[OQ_JOB_ID_LEN + 1];
    json_t *config; /* validated config object, stolen by oq_jobs_submit */
    int n_calib;
    bool has_eval, has_labels;
} oq_job_spec;

/* Creates DATA_DIR/jobs, loads the jobs found there (queued/running ones
 * become failed: "interrupted by a restart"), starts the workers. */
oq_status oq_jobs_open(const char *data_dir, int workers, size_t max_queue, oq_jobs **out,
                       oq_error *err);
/* Refuses new jobs, lets running ones finish, fails queued ones, joins the
 * workers; the store still answers queries. Idempotent. */
void oq_jobs_drain(oq_jobs *js);
void oq_jobs_close(oq_jobs *js); /* drains, then frees; NULL-safe */
/* A fresh id and its upload folder (DATA_DIR/jobs/<id>/upload, into dir). */
oq_status oq_jobs_reserve(oq_jobs *js, char id[OQ_JOB_ID_LEN + 1], char *dir, size_t cap,
                          oq_error *err);
void oq_jobs_discard(oq_jobs *js, const char *id); /* removes a reserved, unsubmitted folder */
/* Queues the job; OQ_ELIMIT when the queue is full. *view: its JSON. */
oq_status oq_jobs_submit(oq_jobs *js, oq_job_spec *spec, json_t **view, oq_error *err);
json_t *oq_jobs_view(oq_jobs *js, const char *id); /* NULL: unknown id */
json_t *oq_jobs_list(oq_jobs *js);
/* Opens a result ("model.int8.onnx", "report.json") of a succeeded job.
 * Returns an fd (size in *size) or -1 with *http 404 (unknown id), 409 (not
 * succeeded) or 500, and a message in err. */
int oq_jobs_open_result(oq_jobs *js, const char *id, const char *name, uint64_t *size, int *http,
                        oq_error *err);
/* DELETE: cancels a queued job (http 200) or asks a running one to stop
 * (202; the worker marks it cancelled), *view the job; removes a finished
 * one with its files (204); 404 when unknown. */
int oq_jobs_delete(oq_jobs *js, const char *id, json_t **view);
void oq_jobs_counts(oq_jobs *js, size_t counts[OQ_JOB_STATE_COUNT]);

/* ---- server.c / http.c ---- */
typedef enum {
    OQ_ROUTE_HEALTHZ = 0,
    OQ_ROUTE_READYZ,
    OQ_ROUTE_VERSION,
    OQ_ROUTE_METRICS,
    OQ_ROUTE_JOBS,
    OQ_ROUTE_JOB,
    OQ_ROUTE_JOB_MODEL,
    OQ_ROUTE_JOB_REPORT,
    OQ_ROUTE_UNKNOWN,
    OQ_ROUTE_COUNT
} oq_route;

#define OQ_HTTP_CODE_MIN 100
#define OQ_HTTP_CODE_SPAN 500 /* codes 100..599 */

struct oq_server {
    uint64_t max_upload;
    char *token; /* NULL: no authentication */
    size_t token_len;
    oq_jobs *jobs;
    struct MHD_Daemon *mhd;
    int listen_fd;
    unsigned port;
    char host[64];
    int stopping; /* atomic: /readyz answers 503 once set */
    /* Metrics, updated with atomic adds from the HTTP threads. */
    uint64_t requests[OQ_ROUTE_COUNT][OQ_HTTP_CODE_SPAN];
    uint64_t bytes_in, bytes_out;
};

/* http.c: libmicrohttpd callbacks; cls is the struct oq_server. */
enum MHD_Result oq_http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls);
void oq_http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe);
#endif
