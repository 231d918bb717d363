#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerror_r returning char * */
#endif
#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"

static atomic_int g_level = LOG_LEVEL_INFO;
static atomic_int g_fd = 1;
static atomic_uint_fast64_t g_dropped;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;

/* The service name, already JSON-escaped: it goes into every line. */
static char g_service[LOG_SERVICE_MAX * 6 + 1] = "unknown_service";
static size_t g_service_len = sizeof "unknown_service" - 1;

static _Thread_local struct {
    bool is_set;
    char trace_id[33];
    char span_id[17];
} t_trace;

/* The line under construction. Thread-local rather than on the stack: 16 KiB
 * is too much to ask of every caller's stack (worker threads may be small). */
static _Thread_local char t_line[LOG_LINE_MAX];

/* "YYYY-MM-DDTHH:MM:SS" for the last second this thread formatted: gmtime_r
 * once per second per thread instead of once per line. */
static _Thread_local struct {
    time_t sec;
    char text[32];
    size_t len;
} t_ts = { .sec = -1 };

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const char *const reserved_keys[] = { "ts", "level", "msg", "service",
                                             "trace_id", "span_id", "truncated" };

#define TRUNC_TAIL ",\"truncated\":true"
/* Room always kept for the truncation marker, "}" and "\n". */
#define TAIL_RESERVE (sizeof TRUNC_TAIL - 1 + 2)

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level > LOG_LEVEL_ERROR)
        return "info";
    return level_names[level];
}

int log_level_parse(const char *s, enum log_level *out)
{
    if (!s)
        return -EINVAL;
    for (int i = LOG_LEVEL_DEBUG; i <= LOG_LEVEL_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_set_level(enum log_level level)
{
    if ((unsigned)level > LOG_LEVEL_ERROR)
        level = LOG_LEVEL_INFO;
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&g_level, memory_order_relaxed);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

void log_set_fd(int fd)
{
    atomic_store_explicit(&g_fd, fd, memory_order_relaxed);
}

uint64_t log_dropped(void)
{
    return atomic_load_explicit(&g_dropped, memory_order_relaxed);
}

void log_init(const char *service)
{
    const char *env = getenv("OTEL_SERVICE_NAME");
    const char *name = env && *env ? env : service && *service ? service : "unknown_service";
    size_t n = strlen(name);

    if (n > LOG_SERVICE_MAX)
        n = LOG_SERVICE_MAX;
    g_service_len = json_escape(g_service, sizeof g_service - 1, str_make(name, n), NULL);
    g_service[g_service_len] = '\0';

    const char *lvl = getenv("LOG_LEVEL");
    enum log_level level = LOG_LEVEL_INFO;
    if (lvl && log_level_parse(lvl, &level) < 0) {
        log_set_level(LOG_LEVEL_INFO);
        log_warn("LOG_LEVEL not recognised, using info", LOG_STR("log_level", lvl));
        return;
    }
    log_set_level(level);
}

static bool is_lower_hex(const char *s, size_t n)
{
    bool nonzero = false;
    if (!s || strnlen(s, n + 1) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

int log_set_trace(const char *trace_id, const char *span_id)
{
    if (!is_lower_hex(trace_id, 32) || !is_lower_hex(span_id, 16))
        return -EINVAL;
    memcpy(t_trace.trace_id, trace_id, 33);
    memcpy(t_trace.span_id, span_id, 17);
    t_trace.is_set = true;
    return 0;
}

void log_clear_trace(void)
{
    t_trace.is_set = false;
}

/* ---- building a line ---------------------------------------------------- */

struct line {
    char *p;
    size_t n;
    size_t cap; /* usable bytes: the tail reserve lies beyond */
    bool is_truncated;
};

static bool put(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->n)
        return false;
    memcpy(l->p + l->n, s, n);
    l->n += n;
    return true;
}

#define PUT_LIT(l, s) put((l), (s), sizeof(s) - 1)

/* Writes s quoted and escaped, cut so that `keep` bytes stay free. False
 * when s had to be cut (or not even "" fit: then nothing is written). */
static bool put_string(struct line *l, struct str s, size_t keep)
{
    if (l->cap - l->n < keep + 2)
        return false;
    size_t used;
    l->p[l->n++] = '"';
    l->n += json_escape(l->p + l->n, l->cap - l->n - keep - 1, s, &used);
    l->p[l->n++] = '"';
    return used == s.n;
}

static void put_ts(struct line *l)
{
    struct timespec ts;
    char frac[8];

    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != t_ts.sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        t_ts.len = strftime(t_ts.text, sizeof t_ts.text, "%Y-%m-%dT%H:%M:%S", &tm);
        t_ts.sec = ts.tv_sec;
    }
    put(l, t_ts.text, t_ts.len);
    snprintf(frac, sizeof frac, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    put(l, frac, 5);
}

static size_t fmt_double(char *tmp, size_t sz, double d)
{
    if (!isfinite(d))
        return (size_t)snprintf(tmp, sz, "null");
    /* 15 digits print most values as people wrote them (0.1, not
     * 0.10000000000000001); 17 always round-trip. */
    int n = snprintf(tmp, sz, "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = snprintf(tmp, sz, "%.17g", d);
    return (size_t)n;
}

/* Appends ,"key": (or ,"_key": for a reserved key), whole or not at all. */
static bool put_key(struct line *l, const char *key)
{
    struct str k = str_from_cstr(key ? key : "");
    size_t mark = l->n, used;
    bool is_reserved = false;

    for (size_t i = 0; i < sizeof reserved_keys / sizeof *reserved_keys; i++)
        is_reserved |= strcmp(k.p, reserved_keys[i]) == 0;
    if (l->cap - l->n < 5) /* ,"_": */
        return false;
    l->p[l->n++] = ',';
    l->p[l->n++] = '"';
    if (is_reserved)
        l->p[l->n++] = '_';
    l->n += json_escape(l->p + l->n, l->cap - l->n - 2, k, &used);
    if (used != k.n) {
        l->n = mark;
        return false;
    }
    l->p[l->n++] = '"';
    l->p[l->n++] = ':';
    return true;
}

/* Appends one ,"key":value. False when the line is full: the member is then
 * either cut (strings) or left out entirely, and nothing more should follow. */
static bool put_kv(struct line *l, const struct log_kv *kv)
{
    size_t mark = l->n;
    char tmp[64];
    size_t tn;
    struct str s;

    if (!put_key(l, kv->key))
        goto fail;
    switch (kv->kind) {
    case LOG_KIND_STR:
        if (!kv->v.s)
            goto null;
        s = str_from_cstr(kv->v.s);
        goto string;
    case LOG_KIND_STRV:
        if (!kv->v.sv.p)
            goto null;
        s = kv->v.sv;
        goto string;
    case LOG_KIND_ERRNO: {
        char ebuf[128];
        int e = kv->v.err < 0 ? -kv->v.err : kv->v.err;
        s = str_from_cstr(strerror_r(e, ebuf, sizeof ebuf));
        if (l->cap - l->n < 2)
            goto fail;
        return put_string(l, s, 0);
    }
    case LOG_KIND_INT:
        tn = (size_t)snprintf(tmp, sizeof tmp, "%" PRId64, kv->v.i);
        break;
    case LOG_KIND_UINT:
        tn = (size_t)snprintf(tmp, sizeof tmp, "%" PRIu64, kv->v.u);
        break;
    case LOG_KIND_BOOL:
        tn = (size_t)snprintf(tmp, sizeof tmp, "%s", kv->v.b ? "true" : "false");
        break;
    case LOG_KIND_DOUBLE:
        tn = fmt_double(tmp, sizeof tmp, kv->v.d);
        break;
    case LOG_KIND_JSON: {
        if (!kv->v.s || !*kv->v.s)
            goto null;
        size_t n = strlen(kv->v.s);
        if (n > l->cap - l->n)
            goto fail;
        /* Newlines are whitespace between JSON tokens and invalid inside
         * strings, so blanking them keeps the value and the one-line rule. */
        char *w = l->p + l->n;
        for (size_t i = 0; i < n; i++) {
            char c = kv->v.s[i];
            w[i] = c == '\n' || c == '\r' ? ' ' : c;
        }
        l->n += n;
        return true;
    }
    default:
        goto null;
    }
    if (!put(l, tmp, tn))
        goto fail;
    return true;
null:
    if (!PUT_LIT(l, "null"))
        goto fail;
    return true;
string:
    if (l->cap - l->n < 2)
        goto fail;
    return put_string(l, s, 0);
fail:
    l->n = mark;
    return false;
}

static void write_line(const char *p, size_t n)
{
    int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);

    pthread_mutex_lock(&g_write_lock);
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            if (poll(&pfd, 1, LOG_WRITE_WAIT_MS) > 0)
                continue;
        }
        atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
        break;
    }
    pthread_mutex_unlock(&g_write_lock);
}

void log_write(enum log_level level, const char *msg, const struct log_kv *kv, size_t n)
{
    if (!log_enabled(level))
        return;
    int saved_errno = errno;
    struct line l = { .p = t_line, .n = 0, .cap = LOG_LINE_MAX - TAIL_RESERVE };

    PUT_LIT(&l, "{\"ts\":\"");
    put_ts(&l);
    PUT_LIT(&l, "\",\"level\":\"");
    const char *lname = log_level_name(level);
    put(&l, lname, strlen(lname));
    PUT_LIT(&l, "\",\"msg\":");

    /* The msg may take what the fixed members after it leave free. */
    size_t after = sizeof ",\"service\":\"\"" - 1 + g_service_len;
    if (t_trace.is_set)
        after += sizeof ",\"trace_id\":\"\",\"span_id\":\"\"" - 1 + 32 + 16;
    if (!put_string(&l, str_from_cstr(msg ? msg : ""), after))
        l.is_truncated = true;

    PUT_LIT(&l, ",\"service\":\"");
    put(&l, g_service, g_service_len);
    PUT_LIT(&l, "\"");
    if (t_trace.is_set) {
        PUT_LIT(&l, ",\"trace_id\":\"");
        put(&l, t_trace.trace_id, 32);
        PUT_LIT(&l, "\",\"span_id\":\"");
        put(&l, t_trace.span_id, 16);
        PUT_LIT(&l, "\"");
    }
    for (size_t i = 0; i < n && !l.is_truncated; i++)
        if (!put_kv(&l, &kv[i]))
            l.is_truncated = true;

    /* The reserve beyond cap is exactly for these. */
    l.cap = LOG_LINE_MAX;
    if (l.is_truncated)
        PUT_LIT(&l, TRUNC_TAIL);
    PUT_LIT(&l, "}\n");
    write_line(l.p, l.n);
    errno = saved_errno;
}
