/* log.c: the server's small shared helpers: one-line structured logs,
 * ISO-8601 times, sanitizing hostile text, and folder create/remove. */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "srv.h"

int64_t oq_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void oq_iso8601(int64_t ms, char *buf, size_t cap) {
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char date[24];
    if (!strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm))
        date[0] = '\0';
    snprintf(buf, cap, "%.19s.%03dZ", date, (int)(ms % 1000));
}

void oq_log(const char *event, const char *fmt, ...) {
    char line[2048], ts[32];
    oq_iso8601(oq_now_ms(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "ts=%s event=%s ", ts, event);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = m < 0 ? (size_t)n : (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the newline */
    line[len++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    for (size_t off = 0; off < len;) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void oq_sanitize(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    if (!cap)
        return;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\' ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

json_t *oq_json_text(const char *s) {
    json_t *j = json_string(s ? s : "");
    if (!j) { /* not UTF-8 */
        char buf[1024];
        oq_sanitize(buf, sizeof buf, s);
        j = json_string(buf);
    }
    return j;
}

bool oq_job_id_valid(const char *s, size_t len) {
    if (len != OQ_JOB_ID_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *f) {
    (void)st, (void)type, (void)f;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int oq_rm_tree(const char *dir) {
    return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

bool oq_path(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            buf[0] = '\0';
        return false;
    }
    return true;
}

int oq_mkdir_p(const char *dir) {
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

bool oq_random_id(char id[OQ_JOB_ID_LEN + 1]) {
    unsigned char raw[OQ_JOB_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return false;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(id + 2 * i, 3, "%02x", raw[i]);
    return true;
}

void oq_msg_replace(char *msg, size_t cap, const char *path, const char *label) {
    char out[OQ_ERROR_MSG_MAX * 2];
    size_t n = 0, lp = strlen(path), ll = strlen(label);
    if (!lp || !cap)
        return;
    for (const char *s = msg; *s && n + 1 < sizeof out;) {
        if (strncmp(s, path, lp) == 0 && n + ll + 1 < sizeof out) {
            memcpy(out + n, label, ll);
            n += ll;
            s += lp;
        } else
            out[n++] = *s++;
    }
    out[n] = '\0';
    snprintf(msg, cap, "%s", out);
}

oq_status oq_status_from_name(const char *name) {
    for (int i = 0; name && i < OQ_STATUS_COUNT; i++)
        if (strcmp(name, oq_status_name((oq_status)i)) == 0)
            return (oq_status)i;
    return OQ_EINTERNAL;
}
