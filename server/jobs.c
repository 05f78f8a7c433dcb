/* jobs.c: the job store: jobs in memory (one mutex), persisted atomically as
 * DATA_DIR/jobs/<id>/job.json on every state change, a pthread worker pool
 * running oq_quantize on them off the HTTP threads, and a sweeper thread
 * removing finished jobs older than the TTL. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checked.h"
#include "config.h"
#include "model.h"
#include "quantize.h"
#include "srv.h"
#include "tensorfile.h"

#define JOB_JSON_MAX (1 << 20) /* a job.json larger than this is not ours */

typedef struct oq_job {
    char id[OQ_JOB_ID_LEN + 1];
    oq_job_state state;
    char stage[16];
    uint64_t done, total;
    int64_t created, started, finished; /* epoch ms; 0 = not yet */
    /* Per stage of the run (stage_names order): time spent, last progress,
     * whether it was entered. cur_stage is the timed stage's index + 1 (0:
     * none), entered at stage_since. */
    int64_t stage_ms[OQ_STAGE_COUNT];
    uint64_t stage_done[OQ_STAGE_COUNT], stage_total[OQ_STAGE_COUNT];
    bool stage_seen[OQ_STAGE_COUNT];
    int cur_stage;
    int64_t stage_since;
    char err_code[24];
    char err_msg[OQ_ERROR_MSG_MAX];
    int abort_flag; /* read by oq_quantize through a volatile pointer */
    bool shutdown_abort; /* the abort came from oq_jobs_drain, not a DELETE */
    oq_job_waiter *waiter;
    json_t *config;
    int n_calib;
    bool has_eval, has_labels;
    struct oq_job *next; /* creation order; the queue is the queued ones in this order */
} oq_job;

struct oq_jobs {
    char jobs_dir[PATH_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* workers: a job was queued, or stopping */
    pthread_cond_t done_cv; /* drain: a running job ended */
    pthread_cond_t sweep_cv;
    oq_job *head, *tail;
    size_t max_queue;
    int64_t ttl_ms; /* 0: keep forever */
    bool stopping, closing;
    pthread_t *threads;
    int n_threads;
    pthread_t sweeper;
    bool has_sweeper;
    oq_job_waiter *notify; /* waiters to tell once the lock is released */
    /* Runs that ended since this process started (for /metrics). */
    uint64_t dur_le[OQ_JOB_STATE_COUNT][OQ_DURATION_BUCKETS];
    uint64_t dur_count[OQ_JOB_STATE_COUNT];
    double dur_sum[OQ_JOB_STATE_COUNT];
    double stage_s[OQ_STAGE_COUNT];
};

const double oq_duration_bounds[OQ_DURATION_BUCKETS] = {0.1, 0.25, 0.5, 1,   2.5, 5,    10,
                                                         30,  60,   120, 300, 600, 1800, 3600};

static const char *const stage_names[OQ_STAGE_COUNT] = {"load",    "prepare",  "calibrate",
                                                        "rewrite", "evaluate", "save"};

const char *oq_job_stage_name(int stage) {
    return stage >= 0 && stage < OQ_STAGE_COUNT ? stage_names[stage] : "unknown";
}

static int stage_index(const char *name) {
    for (int i = 0; i < OQ_STAGE_COUNT; i++)
        if (strcmp(name, stage_names[i]) == 0)
            return i;
    return -1;
}

static const char *const state_names[OQ_JOB_STATE_COUNT] = {"queued", "running", "succeeded",
                                                            "failed", "cancelled"};

const char *oq_job_state_name(oq_job_state s) {
    return (unsigned)s < OQ_JOB_STATE_COUNT ? state_names[s] : "unknown";
}

static void job_free(oq_job *j) {
    if (!j)
        return;
    json_decref(j->config);
    free(j);
}

static void job_path(const oq_jobs *js, const char *id, const char *name, char *buf, size_t cap) {
    oq_path(buf, cap, "%s/%s%s%s", js->jobs_dir, id, name ? "/" : "", name ? name : "");
}

static json_t *time_json(int64_t ms) {
    if (!ms)
        return json_null();
    char buf[32];
    oq_iso8601(ms, buf, sizeof buf);
    return json_string(buf);
}

static json_t *seconds_json(int64_t from, int64_t to) {
    return from && to ? json_real((double)(to - from) / 1000.0) : json_null();
}

/* queued_s and run_s run on while the job is in that state; stages lists
 * the stages entered, in order, each with its time and last progress (so
 * "calibrate" keeps samples done of total after the job moved on). */
static json_t *timings_json(const oq_job *j) {
    int64_t now = oq_now_ms();
    int64_t queue_end = j->started ? j->started : j->finished ? j->finished : now;
    int64_t run_end = j->finished ? j->finished : now;
    json_t *stages = json_array();
    for (int i = 0; i < OQ_STAGE_COUNT; i++) {
        if (!j->stage_seen[i])
            continue;
        int64_t ms = j->stage_ms[i] + (j->cur_stage == i + 1 ? now - j->stage_since : 0);
        json_array_append_new(stages, json_pack("{s:s,s:f,s:I,s:I}", "name", stage_names[i], "seconds",
                                                (double)ms / 1000.0, "done", (json_int_t)j->stage_done[i],
                                                "total", (json_int_t)j->stage_total[i]));
    }
    json_t *t = json_object();
    json_object_set_new(t, "queued_s", seconds_json(j->created, queue_end));
    json_object_set_new(t, "run_s", seconds_json(j->started, j->started ? run_end : 0));
    json_object_set_new(t, "stages", stages);
    return t;
}

/* The job as the API shows it; internal adds what a restart needs. */
static json_t *job_json(const oq_job *j, bool internal) {
    char url[64];
    snprintf(url, sizeof url, "/v1/jobs/%s", j->id);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "state", json_string(oq_job_state_name(j->state)));
    json_object_set_new(o, "stage", j->stage[0] ? json_string(j->stage) : json_null());
    json_object_set_new(o, "progress", json_pack("{s:I,s:I}", "done", (json_int_t)j->done, "total",
                                                 (json_int_t)j->total));
    json_object_set_new(o, "created", time_json(j->created));
    json_object_set_new(o, "started", time_json(j->started));
    json_object_set_new(o, "finished", time_json(j->finished));
    json_object_set_new(o, "timings", timings_json(j));
    if (j->err_code[0])
        json_object_set_new(o, "error", json_pack("{s:s,s:o}", "code", j->err_code, "message",
                                                  oq_json_text(j->err_msg)));
    if (j->state == OQ_JOB_SUCCEEDED) {
        char u[96];
        snprintf(u, sizeof u, "%s/model", url);
        json_object_set_new(o, "model_url", json_string(u));
        snprintf(u, sizeof u, "%s/report", url);
        json_object_set_new(o, "report_url", json_string(u));
    }
    json_object_set_new(o, "inputs", json_pack("{s:i,s:b,s:b}", "calibration", j->n_calib, "eval",
                                               j->has_eval, "labels", j->has_labels));
    if (j->config)
        json_object_set(o, "config", j->config);
    if (internal)
        json_object_set_new(o, "ms", json_pack("{s:I,s:I,s:I}", "created", (json_int_t)j->created,
                                               "started", (json_int_t)j->started, "finished",
                                               (json_int_t)j->finished));
    return o;
}

/* Under js->mu: a state change reaches the disk before anyone sees it
 * (write, fsync, rename), so a restart never finds a half-written job.json. */
static void persist_locked(oq_jobs *js, const oq_job *j) {
    char path[PATH_MAX];
    job_path(js, j->id, "job.json", path, sizeof path);
    json_t *o = job_json(j, true);
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    oq_error err = {0};
    if (!text)
        oq_log("error", "job=%s msg=\"job.json: out of memory\"", j->id);
    else if (oq_write_file_atomic(path, text, strlen(text), &err) != OQ_OK) {
        char m[600];
        oq_sanitize(m, sizeof m, err.msg);
        oq_log("error", "job=%s msg=\"%s\"", j->id, m);
    }
    free(text);
}

static bool terminal(oq_job_state s) {
    return s == OQ_JOB_SUCCEEDED || s == OQ_JOB_FAILED || s == OQ_JOB_CANCELLED;
}

/* One line per state change; an ended run adds its time (ms=, as on request
 * lines). */
static void log_state(const oq_job *j) {
    char ms[32] = "";
    if (terminal(j->state) && j->started && j->finished >= j->started)
        snprintf(ms, sizeof ms, " ms=%lld", (long long)(j->finished - j->started));
    if (j->err_code[0]) {
        char m[600];
        oq_sanitize(m, sizeof m, j->err_msg);
        oq_log("job", "job=%s state=%s%s code=%s msg=\"%s\"", j->id, oq_job_state_name(j->state), ms,
               j->err_code, m);
    } else
        oq_log("job", "job=%s state=%s%s", j->id, oq_job_state_name(j->state), ms);
}

/* Detaches j's waiter and fills its result; told in unlock_and_notify. */
static void release_waiter_locked(oq_jobs *js, oq_job *j, bool shutdown) {
    oq_job_waiter *w = j->waiter;
    if (!w)
        return;
    j->waiter = NULL;
    w->state = j->state;
    w->shutdown = shutdown;
    w->status = j->err_code[0] ? oq_status_from_name(j->err_code) : OQ_OK;
    snprintf(w->err_code, sizeof w->err_code, "%s", j->err_code);
    snprintf(w->err_msg, sizeof w->err_msg, "%s", j->err_msg);
    w->fd = -1;
    w->size = 0;
    if (j->state == OQ_JOB_SUCCEEDED) {
        char path[PATH_MAX];
        job_path(js, j->id, "model.int8.onnx", path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            w->fd = fd;
            w->size = (uint64_t)st.st_size;
        } else {
            if (fd >= 0)
                close(fd);
            w->status = OQ_EIO;
            snprintf(w->err_code, sizeof w->err_code, "%s", oq_status_name(OQ_EIO));
            snprintf(w->err_msg, sizeof w->err_msg, "job %s: the model file is missing", j->id);
        }
    }
    w->next_notify = js->notify;
    js->notify = w;
}

/* Notifications run without the lock: a waiter resumes an HTTP
 * connection, which takes libmicrohttpd's own locks. */
static void unlock_and_notify(oq_jobs *js) {
    oq_job_waiter *w = js->notify;
    js->notify = NULL;
    pthread_mutex_unlock(&js->mu);
    while (w) {
        oq_job_waiter *next = w->next_notify; /* w may be freed once told */
        w->notify(w);
        w = next;
    }
}

/* The uploads are only read by the run: once a job has ended they go. */
static void drop_upload(const oq_jobs *js, const char *id) {
    char path[PATH_MAX];
    job_path(js, id, "upload", path, sizeof path);
    oq_rm_tree(path);
}

/* Ends the timed stage at now (adds its time). */
static void stage_close(oq_job *j, int64_t now) {
    if (j->cur_stage > 0 && j->cur_stage <= OQ_STAGE_COUNT && now >= j->stage_since)
        j->stage_ms[j->cur_stage - 1] += now - j->stage_since;
    j->cur_stage = 0;
}

static void set_state_locked(oq_jobs *js, oq_job *j, oq_job_state s, const char *code,
                             const char *msg) {
    j->state = s;
    if (s == OQ_JOB_RUNNING)
        j->started = oq_now_ms();
    else if (s != OQ_JOB_QUEUED) {
        j->finished = oq_now_ms();
        stage_close(j, j->finished);
    }
    if (code) {
        snprintf(j->err_code, sizeof j->err_code, "%s", code);
        snprintf(j->err_msg, sizeof j->err_msg, "%s", msg ? msg : "");
    }
    persist_locked(js, j);
    log_state(j);
    if (terminal(s))
        release_waiter_locked(js, j, j->shutdown_abort);
}

static oq_job *find_locked(oq_jobs *js, const char *id) {
    for (oq_job *j = js->head; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

static void append_locked(oq_jobs *js, oq_job *j) {
    j->next = NULL;
    if (js->tail)
        js->tail->next = j;
    else
        js->head = j;
    js->tail = j;
}

/* ---- running a job ----------------------------------------------------- */

typedef struct {
    oq_jobs *js;
    oq_job *j;
} progress_ctx;

static void progress(void *ctx, const char *stage, size_t done, size_t total) {
    progress_ctx *p = ctx;
    oq_job *j = p->j;
    char s[sizeof j->stage];
    oq_sanitize(s, sizeof s, stage); /* it reaches the log and job.json */
    int idx = stage_index(s);
    int64_t now = oq_now_ms();
    pthread_mutex_lock(&p->js->mu);
    bool changed = strcmp(j->stage, s) != 0;
    if (changed) {
        stage_close(j, now);
        if (idx >= 0) {
            j->cur_stage = idx + 1;
            j->stage_since = now;
            j->stage_seen[idx] = true;
        }
    }
    if (idx >= 0) {
        j->stage_done[idx] = done;
        j->stage_total[idx] = total;
    }
    memcpy(j->stage, s, sizeof j->stage);
    j->done = done;
    j->total = total;
    pthread_mutex_unlock(&p->js->mu);
    if (changed)
        oq_log("job", "job=%s state=running stage=%s total=%zu", p->j->id, s, total);
}

/* Our folder names in a message become the field the client sent. */
static void err_rename(oq_error *err, const char *path, const char *label) {
    oq_msg_replace(err->msg, sizeof err->msg, path, label);
}

static oq_status load_into(const char *path, const char *label, oq_tensor_list *all, oq_error *err) {
    oq_tensor_list l = {0};
    oq_status st = oq_tensorfile_load(path, NULL, &l, err);
    if (st != OQ_OK) {
        err_rename(err, path, label);
        return st;
    }
    size_t n, bytes;
    oq_tensor **grown = NULL;
    if (!oq_add_size(all->count, l.count, &n) || !oq_mul_size(n ? n : 1, sizeof *grown, &bytes) ||
        !(grown = realloc(all->items, bytes))) {
        oq_tensor_list_free(&l);
        return oq_err(err, OQ_ENOMEM, "%s: out of memory", label);
    }
    all->items = grown;
    memcpy(all->items + all->count, l.items, l.count * sizeof *l.items);
    all->count = n;
    free(l.items);
    return OQ_OK;
}

static oq_status run_job(oq_jobs *js, oq_job *j, oq_error *err) {
    char dir[PATH_MAX], up[PATH_MAX], path[PATH_MAX + 32], label[48];
    job_path(js, j->id, NULL, dir, sizeof dir);
    oq_path(up, sizeof up, "%s/upload", dir);
    oq_quant_config cfg;
    oq_status st = oq_quant_config_from_json(j->config, &cfg, err);
    if (st != OQ_OK)
        return st;
    oq_model *m = NULL, *q = NULL;
    oq_tensor_list calib = {0}, eval = {0}, labels = {0};
    json_t *report = NULL;
    char *text = NULL;
    progress_ctx pc = {js, j};
    size_t n_files = 1 + (size_t)j->n_calib + j->has_eval + j->has_labels, loaded = 0;
    progress(&pc, "load", loaded, n_files);
    oq_path(path, sizeof path, "%s/model.onnx", up);
    oq_load_opts lo = {.base_dir = up};
    if ((st = oq_model_load_file(path, &lo, &m, err)) != OQ_OK) {
        err_rename(err, path, "model");
        goto out;
    }
    progress(&pc, "load", ++loaded, n_files);
    for (int i = 0; i < j->n_calib; i++) {
        oq_path(path, sizeof path, "%s/calib-%02d.bin", up, i);
        snprintf(label, sizeof label, "calibration file %d", i + 1);
        if ((st = load_into(path, label, &calib, err)) != OQ_OK)
            goto out;
        progress(&pc, "load", ++loaded, n_files);
    }
    oq_path(path, sizeof path, "%s/eval.bin", up);
    if (j->has_eval && (st = load_into(path, "eval", &eval, err)) != OQ_OK)
        goto out;
    oq_path(path, sizeof path, "%s/labels.bin", up);
    if (j->has_labels && (st = load_into(path, "labels", &labels, err)) != OQ_OK)
        goto out;
    progress(&pc, "load", n_files, n_files);
    if (labels.count > 1) {
        st = oq_err(err, OQ_EDATA, "labels: one tensor expected, found %zu", labels.count);
        goto out;
    }
    oq_quant_inputs in = {
        .calib = (const oq_tensor *const *)calib.items,
        .n_calib = calib.count,
        .eval = (const oq_tensor *const *)eval.items,
        .n_eval = eval.count,
        .labels = labels.count ? labels.items[0] : NULL,
        .progress = progress,
        .progress_ctx = &pc,
        .abort_flag = &j->abort_flag,
    };
    if ((st = oq_quantize(m, &cfg, &in, &q, &report, err)) != OQ_OK)
        goto out;
    progress(&pc, "save", 0, 2);
    oq_path(path, sizeof path, "%s/model.int8.onnx", dir);
    if ((st = oq_model_save_file(q, path, NULL, err)) != OQ_OK) {
        err_rename(err, path, "model.int8.onnx");
        goto out;
    }
    progress(&pc, "save", 1, 2);
    text = json_dumps(report, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    oq_path(path, sizeof path, "%s/report.json", dir);
    if (!text)
        st = oq_err(err, OQ_ENOMEM, "report: out of memory");
    else if ((st = oq_write_file_atomic(path, text, strlen(text), err)) != OQ_OK)
        err_rename(err, path, "report.json");
    else
        progress(&pc, "save", 2, 2);
out:
    free(text);
    json_decref(report);
    oq_tensor_list_free(&calib);
    oq_tensor_list_free(&eval);
    oq_tensor_list_free(&labels);
    oq_model_free(q);
    oq_model_free(m);
    oq_quant_config_free(&cfg);
    return st;
}

static oq_job *first_queued_locked(oq_jobs *js) {
    for (oq_job *j = js->head; j; j = j->next)
        if (j->state == OQ_JOB_QUEUED)
            return j;
    return NULL;
}

/* Under js->mu, once per run that ended (not for restart recovery: a
 * process's metrics count what it ran). */
static void observe_locked(oq_jobs *js, const oq_job *j) {
    if (!terminal(j->state) || !j->started || j->finished < j->started)
        return;
    double s = (double)(j->finished - j->started) / 1000.0;
    for (int b = 0; b < OQ_DURATION_BUCKETS; b++)
        js->dur_le[j->state][b] += s <= oq_duration_bounds[b];
    js->dur_count[j->state]++;
    js->dur_sum[j->state] += s;
    for (int i = 0; i < OQ_STAGE_COUNT; i++)
        js->stage_s[i] += (double)j->stage_ms[i] / 1000.0;
}

static void *worker_main(void *arg) {
    oq_jobs *js = arg;
    pthread_mutex_lock(&js->mu);
    for (;;) {
        oq_job *j;
        while (!js->stopping && !(j = first_queued_locked(js)))
            pthread_cond_wait(&js->cv, &js->mu);
        if (js->stopping)
            break;
        set_state_locked(js, j, OQ_JOB_RUNNING, NULL, NULL);
        pthread_mutex_unlock(&js->mu);
        /* A running job is never removed (DELETE only sets its abort flag),
         * so j stays valid while the lock is released. */
        oq_error err = {0};
        oq_status st = run_job(js, j, &err);
        drop_upload(js, j->id);
        pthread_mutex_lock(&js->mu);
        if (st == OQ_OK)
            set_state_locked(js, j, OQ_JOB_SUCCEEDED, NULL, NULL);
        else if (st == OQ_ECANCELLED && j->shutdown_abort)
            set_state_locked(js, j, OQ_JOB_FAILED, oq_status_name(st),
                             "server shutting down: the job did not finish within the grace period");
        else
            set_state_locked(js, j, st == OQ_ECANCELLED ? OQ_JOB_CANCELLED : OQ_JOB_FAILED,
                             oq_status_name(st), err.msg);
        observe_locked(js, j);
        pthread_cond_broadcast(&js->done_cv);
        unlock_and_notify(js);
        pthread_mutex_lock(&js->mu);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

/* ---- recovery ---------------------------------------------------------- */

static int64_t ms_field(const json_t *o, const char *key) {
    return (int64_t)json_integer_value(json_object_get(json_object_get(o, "ms"), key));
}

static const char *str_or(const json_t *s) {
    return json_is_string(s) ? json_string_value(s) : "";
}

/* Temporary files ("*.tmp.XXXXXX") left by a crash in the middle of an
 * atomic write: never a result, never served. */
static void clean_job_dir(const oq_jobs *js, const oq_job *j) {
    char dir[PATH_MAX], p[PATH_MAX + 300];
    job_path(js, j->id, NULL, dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.") && oq_path(p, sizeof p, "%s/%s", dir, e->d_name)) {
            unlink(p);
            oq_log("recover", "job=%s msg=\"temporary file removed\"", j->id);
        }
    closedir(d);
}

static void recover_one(oq_jobs *js, const char *id) {
    char path[PATH_MAX];
    job_path(js, id, "job.json", path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > JOB_JSON_MAX) {
        /* An upload cut short by a crash: never accepted, nothing to list. */
        job_path(js, id, NULL, path, sizeof path);
        oq_rm_tree(path);
        oq_log("recover", "job=%s msg=\"incomplete upload removed\"", id);
        return;
    }
    json_error_t je;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    const char *state = json_string_value(json_object_get(o, "state"));
    int s = -1;
    for (int i = 0; state && i < OQ_JOB_STATE_COUNT; i++)
        if (strcmp(state, state_names[i]) == 0)
            s = i;
    oq_job *j = s >= 0 ? calloc(1, sizeof *j) : NULL;
    if (!j) {
        oq_log("recover", "job=%s msg=\"unreadable job.json skipped\"", id);
        json_decref(o);
        return;
    }
    memcpy(j->id, id, OQ_JOB_ID_LEN + 1);
    j->state = (oq_job_state)s;
    snprintf(j->stage, sizeof j->stage, "%s", str_or(json_object_get(o, "stage")));
    const json_t *pr = json_object_get(o, "progress"), *e = json_object_get(o, "error");
    json_int_t done = json_integer_value(json_object_get(pr, "done"));
    json_int_t total = json_integer_value(json_object_get(pr, "total"));
    j->done = done > 0 ? (uint64_t)done : 0;
    j->total = total > 0 ? (uint64_t)total : 0;
    j->created = ms_field(o, "created");
    j->started = ms_field(o, "started");
    j->finished = ms_field(o, "finished");
    const json_t *stages = json_object_get(json_object_get(o, "timings"), "stages");
    for (size_t i = 0; i < json_array_size(stages); i++) {
        const json_t *se = json_array_get(stages, i);
        int idx = stage_index(str_or(json_object_get(se, "name")));
        double sec = json_number_value(json_object_get(se, "seconds"));
        json_int_t d = json_integer_value(json_object_get(se, "done"));
        json_int_t t = json_integer_value(json_object_get(se, "total"));
        if (idx < 0 || !(sec >= 0 && sec < 1e9)) /* also rejects NaN */
            continue;
        j->stage_seen[idx] = true;
        j->stage_ms[idx] = (int64_t)(sec * 1000.0 + 0.5);
        j->stage_done[idx] = d > 0 ? (uint64_t)d : 0;
        j->stage_total[idx] = t > 0 ? (uint64_t)t : 0;
    }
    if (e) {
        snprintf(j->err_code, sizeof j->err_code, "%s", str_or(json_object_get(e, "code")));
        snprintf(j->err_msg, sizeof j->err_msg, "%s", str_or(json_object_get(e, "message")));
    }
    const json_t *in = json_object_get(o, "inputs");
    json_int_t nc = json_integer_value(json_object_get(in, "calibration"));
    j->n_calib = nc > 0 && nc < 1000 ? (int)nc : 0;
    j->has_eval = json_is_true(json_object_get(in, "eval"));
    j->has_labels = json_is_true(json_object_get(in, "labels"));
    j->config = json_incref(json_object_get(o, "config"));
    json_decref(o);
    /* Sorted insert by creation time keeps GET /v1/jobs in submission order. */
    oq_job **pp = &js->head;
    while (*pp && ((*pp)->created < j->created ||
                   ((*pp)->created == j->created && strcmp((*pp)->id, j->id) < 0)))
        pp = &(*pp)->next;
    j->next = *pp;
    *pp = j;
    if (!j->next)
        js->tail = j;
    clean_job_dir(js, j);
    if (j->state == OQ_JOB_RUNNING) {
        /* Its results may be half-written: only job.json stays. */
        char p[PATH_MAX];
        job_path(js, id, "model.int8.onnx", p, sizeof p);
        unlink(p);
        job_path(js, id, "report.json", p, sizeof p);
        unlink(p);
        drop_upload(js, id);
        set_state_locked(js, j, OQ_JOB_FAILED, oq_status_name(OQ_EINTERNAL),
                         "interrupted by a restart");
    } else if (j->state == OQ_JOB_QUEUED)
        oq_log("recover", "job=%s msg=\"queued again\"", id); /* its upload is complete */
}

static void recover(oq_jobs *js) {
    DIR *d = opendir(js->jobs_dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));)
        if (oq_job_id_valid(e->d_name, strlen(e->d_name)))
            recover_one(js, e->d_name);
    closedir(d);
}

/* ---- the API ----------------------------------------------------------- */

/* ---- TTL ----------------------------------------------------------------- */

/* Under js->mu: removes finished jobs whose end is older than the TTL. */
static void sweep_locked(oq_jobs *js) {
    if (!js->ttl_ms)
        return;
    int64_t now = oq_now_ms();
    oq_job **pp = &js->head, *prev = NULL;
    while (*pp) {
        oq_job *j = *pp;
        if (terminal(j->state) && j->finished && now - j->finished >= js->ttl_ms) {
            *pp = j->next;
            if (js->tail == j)
                js->tail = prev;
            char path[PATH_MAX];
            job_path(js, j->id, NULL, path, sizeof path);
            oq_rm_tree(path);
            oq_log("job", "job=%s state=%s msg=\"expired (ttl %llds)\"", j->id,
                   oq_job_state_name(j->state), (long long)(js->ttl_ms / 1000));
            job_free(j);
        } else {
            prev = j;
            pp = &j->next;
        }
    }
}

static void *sweeper_main(void *arg) {
    oq_jobs *js = arg;
    /* A quarter of the TTL, within 0.2..60 s: expiry is late by at most that. */
    int64_t period = js->ttl_ms / 4;
    period = period < 200 ? 200 : period > 60000 ? 60000 : period;
    pthread_mutex_lock(&js->mu);
    while (!js->closing) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (period % 1000) * 1000000;
        ts.tv_sec += (time_t)(period / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&js->sweep_cv, &js->mu, &ts);
        if (!js->closing)
            sweep_locked(js);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

/* ---- the API ----------------------------------------------------------- */

oq_status oq_jobs_open(const oq_jobs_opts *o, oq_jobs **out, oq_error *err) {
    *out = NULL;
    if (o->workers < 1 || o->workers > 256)
        return oq_err(err, OQ_EINVAL, "workers: %d is not in 1..256", o->workers);
    if (o->ttl_s > (uint64_t)INT64_MAX / 1000)
        return oq_err(err, OQ_EINVAL, "job ttl: %llu s is too large", (unsigned long long)o->ttl_s);
    oq_jobs *js = calloc(1, sizeof *js);
    if (!js)
        return oq_err(err, OQ_ENOMEM, "out of memory");
    int n = snprintf(js->jobs_dir, sizeof js->jobs_dir, "%s/jobs", o->data_dir);
    if (n < 0 || (size_t)n >= sizeof js->jobs_dir - 64) {
        free(js);
        return oq_err(err, OQ_EINVAL, "data dir: path too long");
    }
    if (oq_mkdir_p(js->jobs_dir) != 0) {
        int e = errno;
        free(js);
        return oq_err(err, OQ_EIO, "%s/jobs: %s", o->data_dir, strerror(e));
    }
    pthread_mutex_init(&js->mu, NULL);
    pthread_cond_init(&js->cv, NULL);
    pthread_cond_init(&js->done_cv, NULL);
    pthread_cond_init(&js->sweep_cv, NULL);
    js->max_queue = o->max_queue;
    js->ttl_ms = (int64_t)o->ttl_s * 1000;
    pthread_mutex_lock(&js->mu);
    recover(js);
    sweep_locked(js); /* leftovers that expired while the server was down */
    pthread_mutex_unlock(&js->mu);
    if (js->ttl_ms) {
        if (pthread_create(&js->sweeper, NULL, sweeper_main, js) != 0) {
            oq_jobs_close(js);
            return oq_err(err, OQ_EINTERNAL, "cannot start the TTL sweeper thread");
        }
        js->has_sweeper = true;
    }
    if (!(js->threads = calloc((size_t)o->workers, sizeof *js->threads))) {
        oq_jobs_close(js);
        return oq_err(err, OQ_ENOMEM, "out of memory");
    }
    for (; js->n_threads < o->workers; js->n_threads++)
        if (pthread_create(&js->threads[js->n_threads], NULL, worker_main, js) != 0) {
            oq_jobs_close(js);
            return oq_err(err, OQ_EINTERNAL, "cannot start worker threads");
        }
    *out = js;
    return OQ_OK;
}

static size_t count_locked(const oq_jobs *js, oq_job_state s) {
    size_t n = 0;
    for (const oq_job *j = js->head; j; j = j->next)
        n += j->state == s;
    return n;
}

void oq_jobs_drain(oq_jobs *js, unsigned grace_s) {
    if (!js)
        return;
    pthread_mutex_lock(&js->mu);
    bool was = js->stopping;
    js->stopping = true;
    pthread_cond_broadcast(&js->cv);
    if (was) {
        pthread_mutex_unlock(&js->mu);
        return;
    }
    /* Queued jobs stay queued (on disk too): the next start runs them. */
    for (oq_job *j = js->head; j; j = j->next)
        if (j->state == OQ_JOB_QUEUED && j->waiter)
            release_waiter_locked(js, j, true);
    size_t queued = count_locked(js, OQ_JOB_QUEUED), running = count_locked(js, OQ_JOB_RUNNING);
    oq_log("drain", "running=%zu queued=%zu grace_s=%u msg=\"queued jobs stay queued for the next start\"",
           running, queued, grace_s);
    unlock_and_notify(js);
    pthread_mutex_lock(&js->mu);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)grace_s;
    while (count_locked(js, OQ_JOB_RUNNING) > 0 &&
           pthread_cond_timedwait(&js->done_cv, &js->mu, &deadline) != ETIMEDOUT) {
    }
    running = 0;
    for (oq_job *j = js->head; j; j = j->next)
        if (j->state == OQ_JOB_RUNNING) {
            j->shutdown_abort = true;
            __atomic_store_n(&j->abort_flag, 1, __ATOMIC_RELAXED);
            running++;
        }
    if (running)
        oq_log("drain", "running=%zu msg=\"grace period over: stopping running jobs\"", running);
    pthread_mutex_unlock(&js->mu);
    for (int i = 0; i < js->n_threads; i++)
        pthread_join(js->threads[i], NULL); /* each ends its running job first */
    js->n_threads = 0;
    oq_log("drain", "msg=\"all workers stopped\"");
}

void oq_jobs_close(oq_jobs *js) {
    if (!js)
        return;
    oq_jobs_drain(js, 0);
    pthread_mutex_lock(&js->mu);
    js->closing = true;
    pthread_cond_broadcast(&js->sweep_cv);
    pthread_mutex_unlock(&js->mu);
    if (js->has_sweeper)
        pthread_join(js->sweeper, NULL);
    for (oq_job *j = js->head, *next; j; j = next) {
        next = j->next;
        job_free(j);
    }
    free(js->threads);
    pthread_cond_destroy(&js->cv);
    pthread_cond_destroy(&js->done_cv);
    pthread_cond_destroy(&js->sweep_cv);
    pthread_mutex_destroy(&js->mu);
    free(js);
}

oq_status oq_jobs_reserve(oq_jobs *js, char id[OQ_JOB_ID_LEN + 1], char *dir, size_t cap,
                          oq_error *err) {
    if (!oq_random_id(id))
        return oq_err(err, OQ_EIO, "no random bytes for a job id: %s", strerror(errno));
    char path[PATH_MAX];
    job_path(js, id, NULL, path, sizeof path);
    /* mkdir (not mkdir -p): an existing folder means an id collision. */
    if (mkdir(path, 0750) != 0)
        return oq_err(err, OQ_EIO, "job folder: %s", strerror(errno));
    oq_path(dir, cap, "%s/upload", path);
    if (mkdir(dir, 0750) != 0) {
        int e = errno;
        rmdir(path);
        return oq_err(err, OQ_EIO, "job upload folder: %s", strerror(e));
    }
    return OQ_OK;
}

void oq_jobs_discard(oq_jobs *js, const char *id) {
    char path[PATH_MAX];
    job_path(js, id, NULL, path, sizeof path);
    oq_rm_tree(path);
}

oq_status oq_jobs_submit(oq_jobs *js, oq_job_spec *spec, oq_job_waiter *w, json_t **view,
                         bool *stopping_out, oq_error *err) {
    *view = NULL;
    *stopping_out = false;
    oq_job *j = calloc(1, sizeof *j);
    if (!j) {
        json_decref(spec->config);
        spec->config = NULL;
        return oq_err(err, OQ_ENOMEM, "out of memory");
    }
    memcpy(j->id, spec->id, sizeof j->id);
    j->config = spec->config;
    spec->config = NULL;
    j->n_calib = spec->n_calib;
    j->has_eval = spec->has_eval;
    j->has_labels = spec->has_labels;
    j->created = oq_now_ms();
    pthread_mutex_lock(&js->mu);
    size_t queued = 0;
    for (oq_job *k = js->head; k; k = k->next)
        queued += k->state == OQ_JOB_QUEUED;
    if (js->stopping || queued >= js->max_queue) {
        bool stopping = js->stopping;
        pthread_mutex_unlock(&js->mu);
        job_free(j);
        *stopping_out = stopping;
        return stopping ? oq_err(err, OQ_ELIMIT, "the server is shutting down")
                        : oq_err(err, OQ_ELIMIT, "the queue is full (%zu jobs waiting)", queued);
    }
    append_locked(js, j);
    j->waiter = w;
    set_state_locked(js, j, OQ_JOB_QUEUED, NULL, NULL);
    *view = job_json(j, false);
    pthread_cond_signal(&js->cv);
    pthread_mutex_unlock(&js->mu);
    return OQ_OK;
}

json_t *oq_jobs_view(oq_jobs *js, const char *id) {
    pthread_mutex_lock(&js->mu);
    oq_job *j = find_locked(js, id);
    json_t *o = j ? job_json(j, false) : NULL;
    pthread_mutex_unlock(&js->mu);
    return o;
}

json_t *oq_jobs_list(oq_jobs *js) {
    json_t *a = json_array();
    pthread_mutex_lock(&js->mu);
    for (oq_job *j = js->head; j; j = j->next) {
        json_t *o = job_json(j, false);
        json_object_del(o, "config"); /* the list stays short; GET the job for it */
        json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&js->mu);
    return json_pack("{s:o}", "jobs", a);
}

int oq_jobs_open_result(oq_jobs *js, const char *id, const char *name, uint64_t *size, int *http,
                        oq_error *err) {
    char path[PATH_MAX];
    pthread_mutex_lock(&js->mu);
    oq_job *j = find_locked(js, id);
    oq_job_state s = j ? j->state : OQ_JOB_QUEUED;
    int fd = -1;
    if (!j) {
        *http = 404;
        oq_err(err, OQ_ENOTFOUND, "no job '%s'", id);
    } else if (s != OQ_JOB_SUCCEEDED) {
        *http = 409;
        oq_err(err, OQ_EINVAL, "job %s is %s, not succeeded", id, oq_job_state_name(s));
    } else {
        /* Opened under the lock: a concurrent DELETE cannot remove the file
         * between the check and the open (after it, unlink is harmless). */
        job_path(js, id, name, path, sizeof path);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            *size = (uint64_t)st.st_size;
        else {
            if (fd >= 0)
                close(fd);
            fd = -1;
            *http = 500;
            oq_err(err, OQ_EIO, "job %s: %s is missing", id, name);
        }
    }
    pthread_mutex_unlock(&js->mu);
    return fd;
}

int oq_jobs_delete(oq_jobs *js, const char *id, json_t **view) {
    *view = NULL;
    int http = 404;
    pthread_mutex_lock(&js->mu);
    oq_job **pp = &js->head, *prev = NULL;
    while (*pp && strcmp((*pp)->id, id) != 0) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    oq_job *j = *pp;
    if (j && j->state == OQ_JOB_QUEUED) {
        set_state_locked(js, j, OQ_JOB_CANCELLED, oq_status_name(OQ_ECANCELLED),
                         "cancelled before it started");
        drop_upload(js, j->id);
        *view = job_json(j, false);
        http = 200;
    } else if (j && j->state == OQ_JOB_RUNNING) {
        __atomic_store_n(&j->abort_flag, 1, __ATOMIC_RELAXED);
        oq_log("job", "job=%s state=running msg=\"cancel requested\"", j->id);
        *view = job_json(j, false);
        http = 202; /* the worker marks it cancelled when oq_quantize stops */
    } else if (j) {
        *pp = j->next;
        if (js->tail == j)
            js->tail = prev;
        char path[PATH_MAX];
        job_path(js, id, NULL, path, sizeof path);
        oq_rm_tree(path);
        oq_log("job", "job=%s state=%s msg=\"removed\"", j->id, oq_job_state_name(j->state));
        job_free(j);
        http = 204;
    }
    unlock_and_notify(js);
    return http;
}

void oq_jobs_metrics_get(oq_jobs *js, oq_jobs_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_lock(&js->mu);
    for (oq_job *j = js->head; j; j = j->next)
        m->counts[j->state]++;
    memcpy(m->dur_le, js->dur_le, sizeof m->dur_le);
    memcpy(m->dur_count, js->dur_count, sizeof m->dur_count);
    memcpy(m->dur_sum, js->dur_sum, sizeof m->dur_sum);
    memcpy(m->stage_s, js->stage_s, sizeof m->stage_s);
    pthread_mutex_unlock(&js->mu);
}

void oq_jobs_counts(oq_jobs *js, size_t counts[OQ_JOB_STATE_COUNT]) {
    memset(counts, 0, OQ_JOB_STATE_COUNT * sizeof *counts);
    pthread_mutex_lock(&js->mu);
    for (oq_job *j = js->head; j; j = j->next)
        counts[j->state]++;
    pthread_mutex_unlock(&js->mu);
}
