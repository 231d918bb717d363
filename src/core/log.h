/* log.h — structured logs: one JSON object per line on stdout.
 *
 *   log_info("order created", LOG_STR("order_id", id), LOG_INT("items", n));
 *
 * writes
 *
 *   {"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"order created",
 *    "service":"order","trace_id":"…","span_id":"…","order_id":"o-1","items":3}
 *
 * (on one line). Keys come in this order, always: ts (RFC 3339, UTC,
 * milliseconds), level, msg, service, then trace_id and span_id when the
 * calling thread has a trace context, then the caller's key/values in the
 * order given, then "truncated":true when the line hit its bound.
 *
 * The log_debug/log_info/log_warn/log_error macros test the level before
 * anything is evaluated or formatted, so a disabled debug line costs one
 * relaxed atomic load. (They are lower-case because <syslog.h> already owns
 * LOG_DEBUG, LOG_INFO and LOG_ERR.)
 *
 * A line is built in a per-thread buffer of LOG_LINE_MAX bytes (no
 * allocation, ever) and written with one write(2) under a process-wide
 * mutex, so lines from different threads of this process never interleave,
 * whatever the fd is. Between processes sharing one fd, whole lines are
 * guaranteed by the kernel for pipes when a line is at most PIPE_BUF (4096)
 * bytes and for regular files opened with O_APPEND; the runtime gives every
 * replica its own pipe, so that case does not arise there.
 *
 * Writes block when the reader is slow (as with any stdout). A write that
 * fails (EPIPE, EBADF, or EAGAIN on a non-blocking fd that stays full for
 * LOG_WRITE_WAIT_MS) drops the rest of the line and counts it in
 * log_dropped(). Not async-signal-safe: do not log from signal handlers. */
#ifndef STRATA_LOG_H
#define STRATA_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

/* 16 KiB: a stack trace or a request dump fits; a line this long is already
 * hard to read, and the bound keeps the per-thread buffer static. */
#define LOG_LINE_MAX 16384
/* How long a full non-blocking fd may stall a line before it is dropped. */
#define LOG_WRITE_WAIT_MS 100
/* Service names longer than this are cut (OTel has no limit; 100 is plenty). */
#define LOG_SERVICE_MAX 100

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

enum log_kind {
    LOG_KIND_STR,    /* NUL-terminated string, JSON-escaped; NULL → null */
    LOG_KIND_STRV,   /* struct str view, JSON-escaped; p NULL → null */
    LOG_KIND_INT,    /* int64_t */
    LOG_KIND_UINT,   /* uint64_t */
    LOG_KIND_BOOL,   /* true / false */
    LOG_KIND_DOUBLE, /* shortest round-trip form; NaN and infinities → null */
    LOG_KIND_JSON,   /* NUL-terminated pre-encoded JSON, copied as is (CR/LF → space) */
    LOG_KIND_ERRNO,  /* an errno value (sign ignored) → its strerror text */
};

/* One key/value. Build them with the LOG_* initializers below, which check
 * the value's type at compile time; keys are JSON-escaped too. A caller key
 * equal to a reserved key (ts, level, msg, service, trace_id, span_id,
 * truncated) is written with a leading underscore ("_msg") so that a line
 * never has a duplicate key. */
struct log_kv {
    const char *key;
    enum log_kind kind;
    union {
        const char *s;
        struct str sv;
        int64_t i;
        uint64_t u;
        bool b;
        double d;
        int err;
    } v;
};

#define LOG_STR(k, x)    { .key = (k), .kind = LOG_KIND_STR, .v.s = (x) }
#define LOG_STRV(k, x)   { .key = (k), .kind = LOG_KIND_STRV, .v.sv = (x) }
#define LOG_INT(k, x)    { .key = (k), .kind = LOG_KIND_INT, .v.i = (x) }
#define LOG_UINT(k, x)   { .key = (k), .kind = LOG_KIND_UINT, .v.u = (x) }
#define LOG_BOOL(k, x)   { .key = (k), .kind = LOG_KIND_BOOL, .v.b = (x) }
#define LOG_DOUBLE(k, x) { .key = (k), .kind = LOG_KIND_DOUBLE, .v.d = (x) }
#define LOG_JSON(k, x)   { .key = (k), .kind = LOG_KIND_JSON, .v.s = (x) }
#define LOG_ERRNO(k, x)  { .key = (k), .kind = LOG_KIND_ERRNO, .v.err = (x) }

/* Sets the service name and reads LOG_LEVEL. The service is
 * OTEL_SERVICE_NAME when that is set and not empty (the deployment names
 * the workload), else `service`, else "unknown_service"; cut to
 * LOG_SERVICE_MAX bytes. LOG_LEVEL is debug, info, warn or error, in any
 * case; anything else selects info and logs one warning naming the value.
 * Call once at startup, before other threads log: it is not thread-safe.
 * Logging works before log_init with service "unknown_service", level info,
 * fd 1. */
void log_init(const char *service);

/* Parses "debug", "info", "warn", "error" (ASCII case-insensitive).
 * 0 and *out set, or -EINVAL. Thread-safe. */
int log_level_parse(const char *s, enum log_level *out);
/* "debug", "info", "warn" or "error" (static); "info" for out-of-range values. */
const char *log_level_name(enum log_level level);

/* The minimum level written. Thread-safe (atomic). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* True when a line at `level` would be written. Thread-safe, one relaxed load. */
bool log_enabled(enum log_level level);

/* Where lines go (default 1). The fd stays the caller's. Thread-safe: a line
 * in flight goes to the fd it started with. */
void log_set_fd(int fd);

/* Sets the calling thread's trace context: trace_id 32 and span_id 16
 * lowercase hex digits, not all zero (W3C trace context). 0, or -EINVAL and
 * the context is left as it was. Thread-local: affects only this thread. */
int log_set_trace(const char *trace_id, const char *span_id);
/* Clears the calling thread's trace context. */
void log_clear_trace(void);

/* Writes one line at `level` with n key/values (kv may be NULL when n is 0),
 * unless the level is disabled. msg NULL is written as "". Over
 * LOG_LINE_MAX the msg, then string values are cut (on a UTF-8 boundary,
 * never inside an escape), values that cannot be cut (numbers, raw JSON)
 * are left out, and "truncated":true is added: a line is never split and
 * always valid JSON. Thread-safe; never allocates. */
void log_write(enum log_level level, const char *msg, const struct log_kv *kv, size_t n);

/* Lines (or rests of lines) that could not be written. Thread-safe. */
uint64_t log_dropped(void);

/* log_at(level, msg, LOG_STR(...), ...): the key/values are only evaluated
 * when the level is enabled. */
#define log_at(level, msg, ...)                                                        \
    (log_enabled(level)                                                                \
         ? log_write((level), (msg), (const struct log_kv[]){ { 0 }, ##__VA_ARGS__ } + 1, \
                     sizeof((const struct log_kv[]){ { 0 }, ##__VA_ARGS__ }) /             \
                             sizeof(struct log_kv) - 1)                                 \
         : (void)0)

#define log_debug(msg, ...) log_at(LOG_LEVEL_DEBUG, msg, ##__VA_ARGS__)
#define log_info(msg, ...)  log_at(LOG_LEVEL_INFO, msg, ##__VA_ARGS__)
#define log_warn(msg, ...)  log_at(LOG_LEVEL_WARN, msg, ##__VA_ARGS__)
#define log_error(msg, ...) log_at(LOG_LEVEL_ERROR, msg, ##__VA_ARGS__)

#endif
