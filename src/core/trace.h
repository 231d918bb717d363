/* trace.h — W3C Trace Context and OpenTelemetry spans exported over OTLP/HTTP.
 *
 *   struct trace_ctx parent;
 *   bool has_parent = trace_parse_traceparent(hdr, &parent) == 0;
 *   struct trace_span *s = trace_span_start(tracer, "GET /v1/users/{id}", TRACE_SPAN_SERVER,
 *                                           has_parent ? &parent : NULL);
 *   trace_span_make_current(s);                      (log lines carry its ids)
 *   trace_span_set_attr_int(s, "http.response.status_code", 200);
 *   char tp[TRACE_TRACEPARENT_LEN + 1];
 *   trace_format_traceparent(trace_span_ctx(s), tp); (outgoing calls)
 *   trace_span_end(s);                               (queued, exported in a batch)
 *
 * Three parts:
 *   - traceparent/tracestate (W3C Trace Context level 1): strict parsing and
 *     formatting; pure functions, safe from any thread;
 *   - spans: name, kind, ids, parent, times, status and bounded attributes;
 *     an ended span is encoded at once into the tracer's queue as OTLP/JSON
 *     and freed, so the queue holds bytes, not span objects;
 *   - the tracer: a bounded queue of batches, a loop timer that flushes, and
 *     one OTLP/HTTP JSON export in flight at a time through http1_client.
 *
 * Thread model: one tracer per loop thread (as one http1_client per loop).
 * A tracer, and every span started from it, is used only on that loop's
 * thread; there are no locks. A worker pool that wants spans hands its data
 * back to the loop (loop_post) and records there.
 *
 * Sampling is parent-based: a child keeps its parent's sampled flag; a new
 * root is sampled when its trace id falls under the configured ratio
 * (deterministic per trace id, as OpenTelemetry's TraceIdRatioBased). A span
 * that is not sampled, or whose tracer does not export, is non-recording:
 * it still has ids to propagate, but attributes and status are ignored and
 * ending it only frees it.
 *
 * Errors are negative errno values. */
#ifndef STRATA_TRACE_H
#define STRATA_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/str.h"

/* "00-" + 32 + "-" + 16 + "-" + 2 */
#define TRACE_TRACEPARENT_LEN 55
#define TRACE_FLAG_SAMPLED 0x01
/* W3C: vendors SHOULD propagate at least 512 characters of tracestate. */
#define TRACE_TRACESTATE_MAX 512
/* Attributes per span; more are dropped and counted (droppedAttributesCount). */
#define TRACE_MAX_ATTRS 32
/* Attribute string values and status messages are cut to this many bytes
 * (on a UTF-8 boundary): a URL or a user agent fits, a body does not. */
#define TRACE_MAX_VALUE 256
/* Keys longer than this are refused (a cut key would be a different key). */
#define TRACE_MAX_KEY 128
/* Span names are cut to this many bytes; names should be low-cardinality
 * ("GET /v1/users/{id}"), never the raw path. */
#define TRACE_MAX_NAME 128

struct trace_ctx {
    char trace_id[33]; /* 32 lowercase hex digits, not all zero */
    char span_id[17];  /* 16 lowercase hex digits, not all zero */
    uint8_t flags;     /* TRACE_FLAG_SAMPLED */
};

/* ---- W3C Trace Context ----------------------------------------------------- */

/* Parses a traceparent field value into *out. Strict:
 *   - version 00: exactly "00-<32 hex>-<16 hex>-<2 hex>" (55 bytes);
 *   - version ff: invalid;
 *   - versions 01..fe (forward compatibility): at least 55 bytes, parsed as
 *     version 00, and byte 55, if present, must be '-' (later fields ignored);
 * hex digits must be lowercase; an all-zero trace id or span id is invalid.
 * No whitespace is trimmed (the HTTP parser already trims OWS).
 * 0 on success; -EINVAL otherwise (*out is then unspecified). Thread-safe. */
int trace_parse_traceparent(struct str header, struct trace_ctx *out);

/* Writes "00-<trace_id>-<span_id>-<flags>" and a NUL into out. ctx must be
 * valid (see trace_ctx_is_valid); returns -EINVAL (out = "") otherwise, else
 * 0. Thread-safe. */
int trace_format_traceparent(const struct trace_ctx *ctx, char out[TRACE_TRACEPARENT_LEN + 1]);

/* True when ctx has well-formed, non-zero ids. Thread-safe. */
bool trace_ctx_is_valid(const struct trace_ctx *ctx);

/* The tracestate value to keep and pass on, as a view into header: OWS
 * trimmed; untouched when at most TRACE_TRACESTATE_MAX bytes, else cut after
 * the last whole list member that fits (W3C allows dropping members from the
 * end), possibly to empty. Members are not parsed or validated: tracestate
 * belongs to other vendors and is passed through. Thread-safe. */
struct str trace_tracestate_bound(struct str header);

/* True when a new root with this trace id is sampled at ratio (0..1): the
 * last 14 hex digits (56 bits, random in W3C level 2 ids) are compared with
 * ratio * 2^56, so every service with the same ratio decides alike.
 * ratio ≥ 1 → always, ≤ 0 (or NaN) → never. Thread-safe. */
bool trace_sample_ratio(const char *trace_id, double ratio);

/* ---- spans ----------------------------------------------------------------- */

/* Values are OTLP's SpanKind. */
enum trace_span_kind {
    TRACE_SPAN_INTERNAL = 1,
    TRACE_SPAN_SERVER = 2,
    TRACE_SPAN_CLIENT = 3,
    TRACE_SPAN_PRODUCER = 4,
    TRACE_SPAN_CONSUMER = 5,
};

/* Values are OTLP's Status.code. */
enum trace_status {
    TRACE_STATUS_UNSET = 0,
    TRACE_STATUS_OK = 1,
    TRACE_STATUS_ERROR = 2,
};

struct trace_span;
struct trace_tracer;

/* Starts a span named name (cut to TRACE_MAX_NAME bytes; NULL → "") at the
 * current wall-clock time. With a valid parent: same trace id, parent span
 * id = parent->span_id, sampled flag inherited (other flag bits cleared, as
 * W3C level 1 asks). Without (NULL or invalid): a new root with random ids,
 * sampled by the tracer's ratio. A fresh random span id either way.
 * tracer NULL: a non-recording span (ids only, for propagation).
 * Returns the span, owned by the caller until trace_span_end; NULL on
 * allocation failure — every trace_span_* function accepts NULL and does
 * nothing, so callers need no branch of their own. Tracer's thread only. */
struct trace_span *trace_span_start(struct trace_tracer *tracer, const char *name, enum trace_span_kind kind,
                                    const struct trace_ctx *parent);

/* Ends the span (end time = now) and gives it up: a recording span is
 * encoded into its tracer's export queue (or dropped and counted when the
 * queue is full); a non-recording one is freed. If it was the thread's
 * current span, the current span (and the log context) is cleared.
 * The span must not be used afterwards. NULL: no-op. Tracer's thread only. */
void trace_span_end(struct trace_span *span);

/* Attributes, OTLP's AnyValue types. Setting a key again replaces its value.
 * key: 1..TRACE_MAX_KEY bytes. String values over TRACE_MAX_VALUE bytes are
 * cut (on a UTF-8 boundary); invalid UTF-8 is exported as U+FFFD.
 * 0 on success (also on a non-recording or NULL span: nothing is stored);
 * -EINVAL bad key; -ENOSPC TRACE_MAX_ATTRS already set (the attribute is
 * dropped and counted in the span's droppedAttributesCount); -ENOMEM. */
int trace_span_set_attr_str(struct trace_span *span, const char *key, struct str value);
int trace_span_set_attr_int(struct trace_span *span, const char *key, int64_t value);
int trace_span_set_attr_double(struct trace_span *span, const char *key, double value);
int trace_span_set_attr_bool(struct trace_span *span, const char *key, bool value);

/* Sets the status, with OpenTelemetry's rules: UNSET is ignored; OK is final
 * (later calls are ignored); ERROR keeps message (cut to TRACE_MAX_VALUE
 * bytes), other codes drop it. 0, or -ENOMEM (the code is still set). */
int trace_span_set_status(struct trace_span *span, enum trace_status code, struct str message);

/* Keeps a copy of tracestate (bounded with trace_tracestate_bound), exported
 * with the span and returned by trace_span_tracestate for outgoing calls.
 * Children do not inherit it by themselves: pass it on explicitly.
 * 0 or -ENOMEM. */
int trace_span_set_tracestate(struct trace_span *span, struct str tracestate);
/* The span's tracestate; empty when none. Valid until the span ends. */
struct str trace_span_tracestate(const struct trace_span *span);

/* The span's own context (its trace id, its span id, its flags), for
 * propagation and for children. Borrowed: valid until trace_span_end.
 * NULL span → NULL. */
const struct trace_ctx *trace_span_ctx(const struct trace_span *span);
/* The parent span id, "" for a root (borrowed, as trace_span_ctx). */
const char *trace_span_parent_id(const struct trace_span *span);
/* False for non-recording spans (and NULL): skip building costly attributes. */
bool trace_span_is_recording(const struct trace_span *span);

/* Appends the span as one OTLP/JSON Span object (the element of
 * scopeSpans[].spans[]): ids as lowercase hex strings, kind and status code
 * as integers, times as decimal strings in nanoseconds, attributes as
 * [{key, value:{stringValue|intValue|doubleValue|boolValue}}]. All or
 * nothing: -ENOBUFS / -ENOMEM as buf_reserve. Not thread-safe for out. */
int trace_span_to_json(const struct trace_span *span, struct buf *out);

/* Log correlation: makes span the calling thread's current span and sets
 * log.h's trace context to its ids, so every log line carries trace_id and
 * span_id. NULL → as trace_clear_current. Thread-local. */
void trace_span_make_current(struct trace_span *span);
/* Clears the current span and the log trace context. Thread-local. */
void trace_clear_current(void);
/* The calling thread's current span, or NULL. */
struct trace_span *trace_current_span(void);

/* ---- the tracer and its exporter ------------------------------------------- *
 *
 * Batches of up to batch_size spans are POSTed as OTLP/HTTP JSON
 * (Content-Type: application/json) when a batch fills, flush_interval_ms
 * after a span enters an idle queue, or on trace_tracer_flush. One
 * request is in flight at a time. A batch that fails with a network error,
 * a timeout, 429, 502, 503 or 504 (OTLP/HTTP's retryable answers) is sent
 * again — the same bytes — after retry_initial_ms, doubling up to
 * retry_max_ms, less up to 20% jitter (a Retry-After in seconds replaces the
 * delay, capped at retry_max_ms); it is retried without limit, while new
 * spans keep queueing up to the bound. Any other non-2xx answer drops the
 * batch (counted in failed): the receiver would answer the same again. */

struct trace_config {
    const char *service_name;    /* resource service.name; NULL/"" → "unknown_service" */
    const char *scope_name;      /* instrumentation scope name; NULL/"" → "strata" */
    /* OTLP/HTTP endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT: spans are POSTed to
     * {endpoint}/v1/traces. traces_endpoint, as
     * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, is used as is and wins. Both
     * NULL/"" → export disabled: spans are non-recording, nothing is sent.
     * Only http:// with a numeric host or "localhost" (no DNS on a loop
     * thread); https:// is not supported yet: the tracer then logs an error
     * and runs disabled. */
    const char *endpoint;
    const char *traces_endpoint;
    double sample_ratio;         /* new roots sampled, 0..1; default 1 */
    uint32_t max_queue;          /* spans held (waiting + in flight); 0 → 2048 */
    size_t max_queue_bytes;      /* their encoded size; 0 → 16 MiB */
    uint32_t batch_size;         /* spans per export; 0 → 512; capped at max_queue */
    uint32_t flush_interval_ms;  /* a partial batch waits at most this; 0 → 1000 */
    uint32_t export_timeout_ms;  /* one export request; 0 → 10000 */
    uint32_t retry_initial_ms;   /* first retry delay, doubling; 0 → 1000 */
    uint32_t retry_max_ms;       /* retry delay cap; 0 → 30000 */
};

/* Fills cfg with the defaults above (endpoints NULL: disabled). */
void trace_config_init(struct trace_config *cfg);

/* Overrides cfg from the OpenTelemetry environment where set and not empty:
 * OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT,
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_BSP_SCHEDULE_DELAY,
 * OTEL_BSP_EXPORT_TIMEOUT (ms), OTEL_BSP_MAX_QUEUE_SIZE,
 * OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_TRACES_SAMPLER (always_on,
 * always_off, traceidratio and their parentbased_ forms — sampling here is
 * always parent-based) with OTEL_TRACES_SAMPLER_ARG, OTEL_TRACES_EXPORTER
 * (otlp, or none: no export) and OTEL_SDK_DISABLED=true (no export).
 * String fields point into the environment (getenv): use cfg before
 * changing it. A malformed value is skipped (the field keeps its
 * value) and the function returns -EINVAL with *bad_var (if not NULL) naming
 * the first such variable; the others are still applied. 0 otherwise.
 * Not thread-safe (getenv). */
int trace_config_from_env(struct trace_config *cfg, const char **bad_var);

/* A tracer on loop l with cfg (copied; NULL → trace_config_init's
 * defaults). Export is disabled (and an error logged once) when the endpoint
 * is unusable: not a URL, https, or a host that is not numeric or
 * "localhost". NULL with errno EINVAL for a sample_ratio outside 0..1,
 * ENOMEM on allocation failure, ENOBUFS for a service or scope name over
 * 64 KiB. Loop thread only. */
struct trace_tracer *trace_tracer_new(struct loop *l, const struct trace_config *cfg);

/* Cancels the export in flight (no callback of any kind runs afterwards,
 * including a pending flush callback) and frees the queue. Every span
 * started from this tracer must have ended before. NULL: no-op. Loop thread
 * only; the loop must run one more iteration to release the exporter's
 * connections. */
void trace_tracer_free(struct trace_tracer *t);

/* True when spans are exported (an endpoint is configured and usable).
 * NULL → false. */
bool trace_tracer_is_enabled(const struct trace_tracer *t);
/* The tracer's decision for a new root with this trace id:
 * trace_sample_ratio with the configured ratio. NULL tracer → false. */
bool trace_tracer_samples_root(const struct trace_tracer *t, const char *trace_id);

/* Exports everything queued now and whatever ends meanwhile, without waiting
 * for the flush interval (for shutdown). cb(0, arg) once nothing is queued
 * or in flight; cb(-ETIMEDOUT, arg) when timeout_ms passes first (what is
 * left stays queued and keeps being exported; free the tracer to give it
 * up). A batch in retry backoff is retried at once; later retries still back
 * off, within the deadline. cb runs later, never inside this call, and may
 * free the tracer. cb may be NULL. 0, -EBUSY if a flush is already pending,
 * -ENOMEM. Loop thread only. */
int trace_tracer_flush(struct trace_tracer *t, uint32_t timeout_ms, void (*cb)(int err, void *arg), void *arg);

/* Counters since the tracer was made (t not NULL; read on the loop thread;
 * valid until trace_tracer_free). Queue policy: when the queue is full
 * (max_queue spans or max_queue_bytes), a newly ended span is dropped: the
 * oldest are already encoded in batches, and a collector that is down or
 * slow gets the oldest data first when it comes back. */
struct trace_tracer_stats {
    uint64_t queued;   /* spans held now, waiting or in flight */
    uint64_t exported; /* accepted by the receiver (2xx, minus partial-success rejections) */
    uint64_t dropped;  /* refused at trace_span_end: queue full (or out of memory) */
    uint64_t failed;   /* given up after sending: a non-retryable status, or rejected in a
                        * partial success (what trace_tracer_free discards is not counted) */
    uint64_t retries;  /* export attempts that failed and were retried */
    uint64_t requests; /* export requests sent, retries included */
};
const struct trace_tracer_stats *trace_tracer_stats(const struct trace_tracer *t);
/* stats->dropped, for the common question. */
uint64_t trace_tracer_dropped(const struct trace_tracer *t);

/* The seam between spans (trace.c) and the exporter (trace_export.c):
 * trace_span_end calls this for a recording span; it appends the span's
 * encoding to the queue, or counts it dropped. Callers use trace_span_end. */
void trace_tracer_submit(struct trace_tracer *t, const struct trace_span *span);

#endif
