/* traces.h — the control plane's OTLP/HTTP trace receiver and its query API
 * (docs/observability-traces.md). Locally it stands where an OpenTelemetry
 * collector, Tempo or Jaeger would: every app, sidecar and gateway exports
 * its spans here, and the console and `strata why` read them back.
 *
 *   POST /v1/traces                (no token: exporters send none; the
 *                                   control plane listens on loopback)
 *        body: OTLP/HTTP JSON (ExportTraceServiceRequest, Content-Type
 *        application/json) of at most TRACES_MAX_BODY bytes. 200 {} when
 *        every span was kept; 200 {"partialSuccess":{"rejectedSpans":"N",
 *        "errorMessage":…}} when some spans were malformed (bad ids or
 *        times); 400 when the body is not an OTLP JSON request (nothing is
 *        kept then); 413 too large; 415 not JSON (protobuf) or compressed.
 *   GET  /v1/traces?service=&limit=&min_duration_ms=&error=    (token)
 *        {"traces":[{trace_id, root_service, root_name, start,
 *        start_unix_nano, duration_ms, spans, services, error}], "stats":…}
 *        newest first; limit 1..1000 (default 20).
 *   GET  /v1/traces/{trace_id}     (token)
 *        {"trace_id", "spans":[{span_id, parent_span_id, name, service,
 *        kind, start_unix_nano, end_unix_nano, duration_ms, attributes,
 *        status:{code, message}}]} sorted by start; 404 unknown.
 * Errors are JSON in DESIGN.md's format.
 *
 * The store is bounded: at most max_traces traces, max_spans spans and
 * TRACES_MAX_BYTES of span data; past any bound the oldest traces (first
 * received) are evicted first, and counted. A span already held (same
 * trace and span id: an exporter's retry) is not stored twice.
 *
 * Thread: everything runs on the service's single worker loop (the control
 * plane runs its service with WORKERS=1), so the store has no locks;
 * traces_register refuses a service with more than one worker. */
#ifndef STRATA_CONTROL_TRACES_H
#define STRATA_CONTROL_TRACES_H

#include <stddef.h>
#include <stdint.h>

#include "control/admin.h"
#include "core/service.h"

/* 4 MiB: the largest OTLP body accepted. A full batch from our exporter
 * (512 spans of ~1 KiB) is well under it; larger → 413. The service's
 * max_body must be at least this for POST /v1/traces to see such bodies
 * (a smaller max_body answers 413 earlier, in the HTTP server). */
#define TRACES_MAX_BODY (4u << 20)
/* 64 MiB: the span data kept (names, attributes, messages) across all
 * traces, whatever max_spans says. */
#define TRACES_MAX_BYTES (64u << 20)
/* Spans in one trace; more are dropped and counted. A request through
 * the whole mesh makes ~20. */
#define TRACES_MAX_SPANS_PER_TRACE 4096

struct traces;

/* An empty store of at most max_traces traces and max_spans spans in all
 * (0 → 1000 traces, 50,000 spans). NULL on allocation failure. */
struct traces *traces_new(size_t max_traces, size_t max_spans);
/* Frees the store. NULL: no-op. After the service has stopped. */
void traces_free(struct traces *t);

/* Adds the three routes to s (before service_run); auth is copied and
 * checks the token of the two GETs. 0, -EINVAL when s has more than one
 * worker (the store is not shared between threads), -ENOMEM. */
int traces_register(struct traces *t, struct service *s, const struct admin_auth *auth);

/* Counters since traces_new, for tests and status pages (worker loop). */
struct traces_stats {
    uint64_t traces, spans;       /* held now */
    uint64_t bytes;               /* span data held now */
    uint64_t received_spans;      /* stored (duplicates not counted) */
    uint64_t rejected_spans;      /* malformed spans, answered in partialSuccess */
    uint64_t duplicate_spans;     /* already held: ignored */
    uint64_t dropped_spans;       /* over TRACES_MAX_SPANS_PER_TRACE or the store's bounds */
    uint64_t evicted_traces;      /* evicted to make room, oldest first */
    uint64_t evicted_spans;       /* the spans they held */
    uint64_t requests, bad_requests;
};
void traces_get_stats(const struct traces *t, struct traces_stats *out);

#endif
