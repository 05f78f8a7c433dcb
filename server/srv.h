/* srv.h: what the server's files share: structured logging, time, the job
 * store (jobs.c) behind the HTTP layer (http.c). Not a public header. */
#ifndef OQ_SRV_H
#define OQ_SRV_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
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
/* OQ_JOB_ID_LEN hex digits from getrandom; false when no random bytes. */
bool oq_random_id(char id[OQ_JOB_ID_LEN + 1]);
/* Replaces every occurrence of path in msg by label: clients never see (or
 * need) the server's folder names. */
void oq_msg_replace(char *msg, size_t cap, const char *path, const char *label);
/* The status whose name is name ("EMODEL"); OQ_EINTERNAL when unknown. */
oq_status oq_status_from_name(const char *name);

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

/* Someone waiting for a job to end (POST /v1/quantize). The store fills the
 * result fields, forgets the waiter, then calls notify once, with no lock
 * held, from the thread that ended the job (or from oq_jobs_drain when the
 * server stops before the job started: then state is QUEUED). */
typedef struct oq_job_waiter {
    void (*notify)(struct oq_job_waiter *w);
    void *ctx;
    oq_job_state state;
    oq_status status;  /* of the error (OQ_OK when succeeded) */
    bool shutdown;     /* ended (or not started) because the server stopped */
    char err_code[24];
    char err_msg[OQ_ERROR_MSG_MAX];
    int fd;            /* succeeded: the INT8 model opened for reading (the
                          waiter closes it), so a DELETE or the TTL sweep
                          cannot take it away; -1 otherwise */
    uint64_t size;
    struct oq_job_waiter *next_notify; /* the store's pending list */
} oq_job_waiter;

typedef struct {
    const char *data_dir;
    int workers;
    size_t max_queue;
    uint64_t ttl_s; /* finished jobs older than this are removed; 0 = never */
} oq_jobs_opts;

/* What a finished upload left in DATA_DIR/jobs/<id>/upload/: model.onnx,
 * calib-NN.bin (n_calib), eval.bin, labels.bin. */
typedef struct {
    char id[OQ_JOB_ID_LEN + 1];
    json_t *config; /* validated config object, stolen by oq_jobs_submit */
    int n_calib;
    bool has_eval, has_labels;
} oq_job_spec;

/* Creates DATA_DIR/jobs, loads the jobs found there (running ones become
 * failed: "interrupted by a restart", with their partial results removed;
 * queued ones are queued again), sweeps expired ones, starts the workers
 * and the TTL sweeper. */
oq_status oq_jobs_open(const oq_jobs_opts *o, oq_jobs **out, oq_error *err);
/* Refuses new jobs; queued ones stay queued on disk (the next start runs
 * them) and their waiters are told; running ones get grace_s seconds, then
 * are stopped through their abort flag and recorded failed ("server
 * shutting down"); joins the workers. The store still answers queries.
 * Idempotent. */
void oq_jobs_drain(oq_jobs *js, unsigned grace_s);
void oq_jobs_close(oq_jobs *js); /* drains (no grace), then frees; NULL-safe */
/* A fresh id and its upload folder (DATA_DIR/jobs/<id>/upload, into dir). */
oq_status oq_jobs_reserve(oq_jobs *js, char id[OQ_JOB_ID_LEN + 1], char *dir, size_t cap,
                          oq_error *err);
void oq_jobs_discard(oq_jobs *js, const char *id); /* removes a reserved, unsubmitted folder */
/* Queues the job; OQ_ELIMIT when the queue is full, *stopping set when the
 * store is draining. *view: its JSON. w (may be NULL) is told when the job
 * ends; it must stay valid until then. */
oq_status oq_jobs_submit(oq_jobs *js, oq_job_spec *spec, oq_job_waiter *w, json_t **view,
                         bool *stopping, oq_error *err);
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

/* The stages a job's run goes through, in order: "load" (reading the
 * uploads), the pipeline's own (prepare, calibrate, rewrite, evaluate, see
 * quantize.h), "save" (writing the results). */
#define OQ_STAGE_COUNT 6
const char *oq_job_stage_name(int stage);

/* Upper bounds (seconds) of the job duration histogram: jobs run from a
 * tenth of a second (a small model, dynamic mode) to about an hour. */
#define OQ_DURATION_BUCKETS 14
extern const double oq_duration_bounds[OQ_DURATION_BUCKETS];

/* What /metrics shows of the jobs since this process started. Durations
 * are run times (start to end) of jobs that ran, by final state; a job
 * cancelled while still queued never ran and is not observed. */
typedef struct {
    size_t counts[OQ_JOB_STATE_COUNT];                          /* jobs now, by state */
    uint64_t dur_le[OQ_JOB_STATE_COUNT][OQ_DURATION_BUCKETS]; /* cumulative: runs <= bound */
    uint64_t dur_count[OQ_JOB_STATE_COUNT];
    double dur_sum[OQ_JOB_STATE_COUNT];
    double stage_s[OQ_STAGE_COUNT]; /* seconds spent in each stage by ended runs */
} oq_jobs_metrics;
void oq_jobs_metrics_get(oq_jobs *js, oq_jobs_metrics *m);

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
    OQ_ROUTE_QUANTIZE,
    OQ_ROUTE_INSPECT,
    OQ_ROUTE_UNKNOWN,
    OQ_ROUTE_COUNT
} oq_route;

#define OQ_HTTP_CODE_MIN 100
#define OQ_HTTP_CODE_SPAN 500 /* codes 100..599 */

#define OQ_MAX_INSPECTS 4 /* POST /v1/inspect running at once before 429 */

struct oq_server {
    uint64_t max_upload;
    unsigned grace_s;
    char tmp_dir[4096]; /* DATA_DIR/tmp: POST /v1/inspect uploads */
    char *token; /* NULL: no authentication */
    size_t token_len;
    oq_jobs *jobs;
    struct MHD_Daemon *mhd;
    int listen_fd;
    unsigned port;
    char host[64];
    int stopping; /* atomic: /readyz and POSTs answer 503 once set */
    /* Requests answered off the HTTP thread (suspended connections). */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
    unsigned async_pending; /* under wait_mu: suspended-style requests not yet completed */
    unsigned inspects;      /* under wait_mu: inspect threads running */
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
