/* resilience.h — per-cluster run-time state for the sidecar role (Istio
 * DestinationRule connectionPool / outlierDetection, VirtualService retries):
 * circuit-breaking counters, the retry budget, retry decisions and backoff,
 * and outlier detection. Pure logic on atomics: no I/O, no clock of its own
 * (callers pass now_ms: any millisecond clock that does not go backwards,
 * the same for every call, such as loop_now_ms), no allocation after
 * resil_cluster_new.
 *
 * One struct resil_cluster per struct proxy_cluster of a loaded config,
 * shared by every worker thread. It copies what it needs from the cluster
 * (limits, outlier settings, endpoint names), so the config may go first.
 *
 * Circuit breaking. Every counter is exact (a compare-and-swap loop, never
 * over the limit even for a moment) and a limit of 0 means unlimited — the
 * counter still counts, for the budget and for metrics:
 *   requests     a request routed to the cluster, from routing until its
 *                response is complete, all its attempts included;
 *   retries      an attempt after the first, from when it is scheduled
 *                (its backoff wait included) until it ends;
 *   pending      a request waiting for a new upstream connection;
 *   connections  upstream connections open (the engine reports them).
 * Each refusal is counted by kind (resil_stats).
 *
 * Retry budget (Envoy's retry_budget, Linkerd's retry budget): retries in
 * flight stay ≤ max(budget_min_concurrency, requests in flight ×
 * budget_percent / 100, rounded down); 100 requests and 20 % → 20 retries,
 * the 21st is refused. The budget keeps a failing upstream from receiving
 * (1 + attempts) × its normal load just when it is least able to take it.
 *
 * Outlier detection follows Envoy (what Istio configures):
 *   - consecutive 5xx: 500..599, and local failures of both kinds (see
 *     resil_should_retry); consecutive gateway errors: 502, 503, 504 and
 *     local connect failures / timeouts (not resets). A 5xx that is not a
 *     gateway error restarts the gateway count; any other HTTP status
 *     restarts both; other local errors (-ENOMEM ...) say nothing about the
 *     endpoint and are ignored. A count reaching its threshold (0: trigger
 *     off) ejects the endpoint at once, and both counts restart;
 *   - at most n × max_ejection_percent / 100 (rounded down) of the
 *     cluster's n endpoints are ejected at a time, but at least 1 when
 *     n ≥ 2 (so 3 endpoints at 10 % → 1, 10 at 30 % → 3; the single
 *     endpoint of a cluster is ejected only at 100 %). A refused ejection
 *     is counted and the counts restart as well (as in Envoy), so it takes
 *     another full run of errors to try again;
 *   - each endpoint has a multiplier k: an ejection raises it by one and
 *     lasts base_ejection_ms × k, capped at max(RESIL_MAX_EJECTION_MS,
 *     base_ejection_ms) (k stops growing there); each whole interval the
 *     endpoint then spends admitted lowers k by one (resil_tick). So the
 *     second ejection in a row lasts twice the first;
 *   - an ejected endpoint is re-admitted when its time is over: at once for
 *     resil_is_ejected, and in the books (resil_ejected_count, the max
 *     percent) at the next resil_tick or ejection;
 *   - results reported for an ejected endpoint (late answers of requests
 *     sent before the ejection) are ignored.
 *
 * A NULL struct resil_cluster * is accepted everywhere (as metrics.h's
 * NULL children): no limits, nothing counted, nothing ejected.
 *
 * Thread safety: every function may be called from any thread at any time,
 * except resil_cluster_free and resil_cluster_inherit (see there). The hot
 * path (acquire/release, resil_report without an ejection, resil_is_ejected)
 * is lock-free; an ejection and resil_tick take a per-cluster mutex for a
 * few microseconds. */
#ifndef STRATA_PROXY_RESILIENCE_H
#define STRATA_PROXY_RESILIENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"
#include "proxy/proxy_config.h"

/* 300 s: Envoy's default max_ejection_time, which Istio does not expose. It
 * bounds how long a flapping endpoint stays out: with the 30 s default base
 * the 20th ejection in a row would otherwise last 10 minutes, the 100th 50. */
#define RESIL_MAX_EJECTION_MS 300000u

struct resil_cluster;

/* Why resil_retry_acquire refused. */
enum resil_retry_refusal {
    RESIL_OK = 0,
    RESIL_OVER_MAX_RETRIES, /* breaker.max_retries retries in flight */
    RESIL_OVER_BUDGET,      /* the retry budget is spent */
};

/* Cumulative counts (since resil_cluster_new, plus what resil_cluster_inherit
 * carried over) and current values, for metrics. */
struct resil_stats {
    uint64_t ejections;              /* endpoints ejected */
    uint64_t ejections_refused;      /* ejections not made: max_ejection_percent */
    uint64_t overflow_requests;      /* resil_request_acquire refused */
    uint64_t overflow_pending;       /* resil_pending_acquire refused */
    uint64_t overflow_connections;   /* resil_conn_allowed said no */
    uint64_t overflow_retries;       /* retries refused: max_retries */
    uint64_t retries_over_budget;    /* retries refused: the retry budget */
    /* now */
    uint32_t requests, pending, retries, connections;
    size_t ejected;                  /* as resil_ejected_count */
};

/* State for cluster c: nothing in flight, no endpoint ejected. c is only
 * read during the call. Returns NULL when c is NULL (errno EINVAL) or on
 * allocation failure (errno ENOMEM). Free with resil_cluster_free. */
struct resil_cluster *resil_cluster_new(const struct proxy_cluster *c);

/* Frees r. Nothing may use r any more, nor during the call. NULL: no-op. */
void resil_cluster_free(struct resil_cluster *r);

/* On a config reload: copies old's outlier state (ejections with their
 * end times, ejection multipliers, consecutive error counts) to the
 * endpoints of r with the same name, and old's cumulative stats to r's.
 * Nothing happens when the cluster names differ or r's outlier detection
 * is disabled (then nothing is ejected). Circuit-breaking counts are NOT
 * carried: requests running on the old config release on old, so old must
 * live until they are done and new requests count from 0 on r (with a
 * limit L, up to 2L may run for as long as the old ones last).
 * Call before r is visible to other threads; old may still be in use (its
 * state is read with atomic loads, so an event on old during the call may
 * or may not be carried). */
void resil_cluster_inherit(struct resil_cluster *r, const struct resil_cluster *old);

/* ---- circuit breaking: every acquire that returns true is released once -- */

/* A request starts: false (counted) when max_requests are in flight: the
 * engine answers 503 (Envoy's "overflow"). */
bool resil_request_acquire(struct resil_cluster *r);
void resil_request_release(struct resil_cluster *r);

/* A retry starts. False when max_retries retries are in flight, or when the
 * retry budget of rt (NULL: no budget) is spent; *why (may be NULL) says
 * which, and is RESIL_OK on success. Both refusals are counted. The max
 * is checked first. The request the retry belongs to must hold a request
 * (resil_request_acquire), or the budget has nothing to be a share of. */
bool resil_retry_acquire(struct resil_cluster *r, const struct proxy_retry *rt,
                         enum resil_retry_refusal *why);
void resil_retry_release(struct resil_cluster *r);

/* A request starts waiting for a new upstream connection (none idle in the
 * pool): false (counted) when max_pending_requests already wait. Release
 * when it gets its connection or gives up. */
bool resil_pending_acquire(struct resil_cluster *r);
void resil_pending_release(struct resil_cluster *r);

/* May a new upstream connection be opened? False when max_connections are
 * open; each false is counted, so ask once per request that needs a
 * connection, not in a loop. Advisory: the engine then waits for a pooled
 * one (or answers 503); workers asking at the same moment may all hear yes
 * and go a few over the limit, since a connection is counted only once
 * opened. */
bool resil_conn_allowed(struct resil_cluster *r);
/* Takes one of the cluster's max_connections (an upstream connection in
 * use: with HTTP/1.1 one per attempt in flight), without counting a
 * refusal: the engine then queues the request as pending (and counts
 * overflow_connections itself if it gives up). Release with
 * resil_conn_closed. */
bool resil_conn_acquire(struct resil_cluster *r);
/* Counts a request refused for want of a connection. */
void resil_conn_refused(struct resil_cluster *r);
/* An upstream connection of the cluster was opened / closed (every one
 * opened is closed once). */
void resil_conn_opened(struct resil_cluster *r);
void resil_conn_closed(struct resil_cluster *r);

/* ---- retries ---------------------------------------------------------- */

/* Should an attempt that ended with err / status be retried under rt
 * (Istio / Envoy retryOn)? err is 0 when an HTTP response with status came
 * back, else the local failure, of two kinds (as engine.c answers them):
 *   connect failure  -ECONNREFUSED, -EHOSTUNREACH, -ENETUNREACH,
 *                    -EADDRNOTAVAIL, -ETIMEDOUT (connect or answer timeout);
 *   reset            -ECONNRESET, -EPIPE, -EPROTO (malformed response);
 * other errors (-ENOMEM, -EMSGSIZE ...) are never retried. The
 * conditions, any of which may match:
 *   PROXY_RETRY_5XX            500..599, connect failures, resets;
 *   PROXY_RETRY_GATEWAY_ERROR  502, 503, 504, connect failures, resets
 *                              (Envoy retries every reset under 5xx and
 *                              gateway-error alike: the client would
 *                              otherwise get a 502/503 from us);
 *   PROXY_RETRY_CONNECT_FAILURE connect failures;
 *   PROXY_RETRY_RESET          connect failures and resets;
 *   PROXY_RETRY_STATUS_CODES   rt->status_codes.
 * Only for idempotent methods (GET HEAD OPTIONS PUT DELETE TRACE, matched
 * case-sensitively as RFC 9110 says) unless rt->non_idempotent. Whether
 * attempts remain and the budget allows are separate questions
 * (rt->attempts, resil_retry_acquire). Pure: any thread. */
bool resil_should_retry(const struct proxy_retry *rt, int err, int status, struct str method);

/* The wait before retry number attempt (1-based; 0 is taken as 1):
 * exponential with full jitter, uniform in [0, min(backoff_max_ms,
 * backoff_base_ms × 2^(attempt-1))] ms, drawn from random (a uniform 64-bit
 * value, e.g. rand_u64(); the modulo bias is below 2^-32). Pure. */
uint32_t resil_backoff_ms(const struct proxy_retry *rt, unsigned attempt, uint64_t random);

/* ---- outlier detection ------------------------------------------------ */

/* The result of an attempt on endpoint (an index into the cluster's
 * endpoints; out of range: ignored): err 0 with an HTTP status, or a local
 * failure as for resil_should_retry. May eject the endpoint (see the top of
 * this file). No-op when outlier detection is disabled. */
void resil_report(struct resil_cluster *r, size_t endpoint, int err, int status, uint64_t now_ms);

/* Is endpoint ejected at now_ms? False when out of range or outlier
 * detection is disabled. Lock-free. */
bool resil_is_ejected(const struct resil_cluster *r, size_t endpoint, uint64_t now_ms);

/* The engine calls this every outlier interval_ms (one thread at a time is
 * enough, any thread is safe): re-admits the endpoints whose ejection is
 * over, and lowers by one the ejection multiplier of each endpoint admitted
 * for a whole interval since it was re-admitted or last lowered. */
void resil_tick(struct resil_cluster *r, uint64_t now_ms);

/* Endpoints ejected, as of the last resil_tick or ejection. */
size_t resil_ejected_count(const struct resil_cluster *r);

/* Fills *out. The fields are read one by one (not a consistent snapshot). */
void resil_stats(const struct resil_cluster *r, struct resil_stats *out);

#endif
