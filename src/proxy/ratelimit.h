/* ratelimit.h — GCRA rate limiting for the gateway: a process-wide local
 * limiter and a Redis-backed global one, both answering with a decision the
 * engine turns into RateLimit-Limit / RateLimit-Remaining / RateLimit-Reset
 * and Retry-After headers (this module knows nothing of HTTP).
 *
 * GCRA (generic cell rate algorithm): a limit of `requests` per `period_ms`
 * has the emission interval T = period_ms / requests and the burst
 * tolerance tau = burst * T (burst 0 → requests). Per key it stores one
 * number, the theoretical arrival time TAT. A request at `now` is allowed
 * when max(TAT, now) + T - tau <= now, and then TAT becomes
 * max(TAT, now) + T. So `burst` requests pass at once, then one per T.
 * A TAT in the past is the same as no state at all.
 *
 * Time is kept in microseconds, integers only: T is rounded down to a whole
 * microsecond (at least 1: rates past one request per microsecond per key
 * are limited to that), tau is capped at 2^52 µs (142 years) so that the
 * Redis script's Lua numbers (doubles) stay exact.
 *
 * State is keyed by (limit name, key string), not by the config object, so
 * it survives a config reload that keeps the limit's name.
 *
 * Decisions, for the headers:
 *   limit          = burst (what a client may send at once);
 *   remaining      = requests allowed right now after this one (0 if denied);
 *   reset_s        = seconds, rounded up, until the bucket is full again
 *                    (all `burst` requests available);
 *   retry_after_s  = denied: seconds, rounded up and at least 1, until the
 *                    next request would be allowed; allowed: 0.
 * A failed-open decision (global limiter without a Redis answer) has
 * allowed = failed_open = true, limit = burst and the other fields 0: the
 * engine should write no RateLimit headers for it.
 *
 * Metrics (metrics_default(), registered once by rl_metrics_init(), which
 * rl_local_new and rl_global_new call):
 *   strata_proxy_ratelimit_redis_failures_total  global checks failed open
 *   strata_proxy_ratelimit_local_evictions_total local entries with live
 *                                                state evicted at the bound */
#ifndef STRATA_PROXY_RATELIMIT_H
#define STRATA_PROXY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"
#include "proxy/proxy_config.h"

struct loop;

struct rl_decision {
    bool allowed;
    bool failed_open;       /* global only: Redis did not answer in time; allowed is true */
    uint32_t limit;         /* RateLimit-Limit */
    uint32_t remaining;     /* RateLimit-Remaining */
    uint32_t reset_s;       /* RateLimit-Reset */
    uint32_t retry_after_s; /* Retry-After, when !allowed */
};

/* Registers the module's metric families on metrics_default(). Idempotent
 * and thread-safe; a registration failure leaves the metrics out (the
 * limiters work the same). */
void rl_metrics_init(void);

/* ---- local: one per process, shared by every worker thread -------------- */

struct rl_local;

/* A limiter holding at most max_keys (limit name, key) entries, all
 * allocated now: checks never allocate. The entries are split across up to
 * 64 shards with a mutex each (a shard holds max_keys / nshards of them),
 * so workers rarely wait for each other. When a shard is full, a new key
 * takes the place of an entry whose TAT has passed (found among the least
 * recently used), else of the least recently used entry; the latter loses
 * live state and is counted. Keys are identified by a 128-bit keyed
 * SipHash of (name, key), random per limiter, so outside input cannot aim
 * at one chain or forge another key's identity.
 * Returns NULL (errno EINVAL) when max_keys is 0 or above 2^31, or on
 * allocation failure (errno ENOMEM). Free with rl_local_free(). */
struct rl_local *rl_local_new(size_t max_keys);

/* Frees the limiter. No check may be running. NULL is a no-op. */
void rl_local_free(struct rl_local *rl);

/* Counts one request of key under limit cfg at now_ms (any clock that does
 * not go backwards, the same for every call: the engine passes
 * loop_now_ms) and fills *out. Thread-safe; never allocates. cfg->requests
 * and cfg->period_ms must be >= 1 (the config loader ensures it): otherwise
 * the request is allowed and out->failed_open set. */
void rl_local_check(struct rl_local *rl, const struct proxy_rate_limit *cfg, struct str key,
                    uint64_t now_ms, struct rl_decision *out);

/* Entries currently held, expired ones included (tests). Thread-safe. */
size_t rl_local_count(struct rl_local *rl);

/* ---- global: one per worker loop, state in Redis ------------------------ */

struct rl_global;
struct rl_pending;

/* d is valid only during the call. */
typedef void (*rl_cb)(const struct rl_decision *d, void *arg);

/* Redis commands time out after this long and the check fails open: 100 ms
 * is what a request may lose to the limiter when Redis stalls, against the
 * ~0.2 ms a healthy round trip on the same network costs. */
#define RL_GLOBAL_TIMEOUT_MS 100
/* Checks in flight per rl_global at most (as the Redis client's default
 * bound): past it rl_global_check() refuses with -ENOBUFS. */
#define RL_GLOBAL_MAX_PENDING 10000

/* A global limiter on loop l, with its own connection to redis_url
 * (redis.h's URL form). It connects in the background: until the
 * connection is up checks fail open (rl_global_is_connected tells). The
 * state of (name, key) lives in the Redis key "strata:rl:NAME:KEY" (a NAME
 * or KEY longer than 128 bytes or starting with '#' is replaced by '#' and
 * the hex BLAKE2b-128 of it, the same on every gateway), with a PEXPIRE of
 * when its TAT passes. The script takes the time from Redis (TIME), so
 * gateways with skewed clocks agree. Returns NULL on an invalid URL (logged
 * by redis.h) or allocation failure. On l's thread only, like every
 * rl_global function. */
struct rl_global *rl_global_new(struct loop *l, const char *redis_url);

/* Frees the limiter and its connection. Checks in flight are dropped
 * without their callbacks (their callers are going away too). May be called
 * from inside an rl_cb. NULL is a no-op. */
void rl_global_free(struct rl_global *g);

/* True while the Redis connection is up. */
bool rl_global_is_connected(const struct rl_global *g);

/* Counts one request of key under limit cfg in Redis. Returns 0 when cb
 * will run: exactly once, later, on the loop (never inside this call) —
 * with Redis' decision, or failed open (allowed, failed_open, counted in
 * rl_global_failures) when Redis is unreachable, answers with an error or
 * takes longer than RL_GLOBAL_TIMEOUT_MS. *out (out may be NULL) is then a
 * handle for rl_global_cancel, valid until cb starts. Returns <0 without
 * calling cb: -EINVAL (NULL g, cfg or cb; requests or period_ms 0),
 * -ENOBUFS (RL_GLOBAL_MAX_PENDING checks in flight), -ENOMEM; the last two
 * are counted as failures, and the caller should fail open. The key is
 * copied. */
int rl_global_check(struct rl_global *g, const struct proxy_rate_limit *cfg, struct str key,
                    rl_cb cb, void *arg, struct rl_pending **out);

/* Cancels a check whose callback has not run yet: it never runs and arg is
 * never touched again. The request may still be counted in Redis if it was
 * already sent. Must not be called after the callback started, nor twice. */
void rl_global_cancel(struct rl_pending *p);

/* Global checks that failed open since the process started (all
 * rl_global instances), -ENOBUFS and -ENOMEM refusals included; cancelled
 * checks are not counted. Thread-safe. */
uint64_t rl_global_failures(void);

#endif
