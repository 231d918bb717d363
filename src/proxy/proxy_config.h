/* proxy_config.h — the compiled proxy config document (JSON), as the
 * control plane will serve it (DESIGN.md: listeners, routes, clusters).
 * Every field is described, with examples, in docs/gateway.md.
 *
 * A loaded config is immutable and refcounted: the engine swaps a new one
 * in atomically on reload, and each request keeps the config it was routed
 * with until it completes. Only the fields marked "run time" change after
 * load (endpoint health and load), and only through atomics.
 *
 * Unknown fields are errors, as are references to clusters, providers or
 * limits that do not exist: every message names the file and the JSON path
 * of the field ("proxy.json: $.routes[2].cluster: no cluster named ..."). */
#ifndef STRATA_PROXY_CONFIG_H
#define STRATA_PROXY_CONFIG_H

#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"
#include "core/str.h"

struct resil_cluster;

#define PROXY_MAX_METHODS 8

enum proxy_lb { PROXY_LB_ROUND_ROBIN, PROXY_LB_LEAST_REQUEST };

struct proxy_label {
    char *key, *value;
};

struct proxy_endpoint {
    struct net_addr addr;
    char name[64];           /* "127.0.0.1:8081", for logs and metrics */
    struct proxy_label *labels; /* "version": "v2", "zone": "a", "region": "eu" */
    size_t nlabels;
    const char *region, *zone; /* from the labels (region / topology.kubernetes.io/region, ...), or NULL */
    /* run time, shared by every worker */
    _Atomic int healthy;     /* 1 until active health checks say otherwise */
    _Atomic uint32_t active; /* requests in flight to it, all workers */
};

struct proxy_health_check {
    char *path;              /* NULL: no active checks, endpoints always healthy */
    uint32_t interval_ms;    /* default 2000 */
    uint32_t timeout_ms;     /* default 1000 */
    uint32_t healthy_threshold;   /* consecutive successes to re-admit; default 1 */
    uint32_t unhealthy_threshold; /* consecutive failures to eject; default 2 */
};

/* DestinationRule subset: the endpoints whose labels include all of these. */
struct proxy_subset {
    char *name;
    struct proxy_label *labels;
    size_t nlabels;
    uint32_t *members; /* indexes into the cluster's endpoints */
    size_t nmembers;
};

/* DestinationRule connectionPool: 0 = unlimited. */
struct proxy_circuit_breaker {
    uint32_t max_connections;      /* upstream connections open, all workers */
    uint32_t max_pending_requests; /* requests waiting for a connection */
    uint32_t max_requests;         /* requests in flight */
    uint32_t max_retries;          /* retries in flight */
};

/* DestinationRule outlierDetection; consecutive_* 0 = that trigger is off. */
struct proxy_outlier_detection {
    bool enabled;
    uint32_t consecutive_5xx;            /* default 5 */
    uint32_t consecutive_gateway_errors; /* 502, 503, 504, connect failures; default 0 (off) */
    uint32_t interval_ms;                /* default 10,000 */
    uint32_t base_ejection_ms;           /* default 30,000; × the endpoint's ejection count */
    uint32_t max_ejection_percent;       /* default 10 (at least one endpoint can always be ejected) */
};

/* Upstream TLS (mesh: mTLS to the destination's sidecar). */
struct proxy_upstream_tls {
    char *cert_file, *key_file; /* our workload certificate; NULL: none (plain TLS) */
    char *ca_file;              /* trust bundle */
    char *spiffe_id;            /* the identity the destination must present; or NULL and sni */
    char *sni;                  /* hostname to verify when no spiffe_id */
};

struct proxy_cluster {
    char *name;
    struct proxy_endpoint *endpoints;
    size_t nendpoints;
    enum proxy_lb lb;
    struct proxy_health_check health;
    struct proxy_subset *subsets;
    size_t nsubsets;
    struct proxy_circuit_breaker breaker;
    struct proxy_outlier_detection outlier;
    struct proxy_upstream_tls *tls; /* NULL: plain HTTP */
    bool locality_aware;            /* prefer endpoints in our zone, then region; default true when labelled */
    struct resil_cluster *resil;    /* run time: breaker, retry budget and outlier state (set by the engine) */
    uint64_t ejections_exported;    /* run time, main thread: ejections already counted in metrics */
};

/* JWT authentication (Istio RequestAuthentication). */
struct proxy_claim_header {
    char *claim;  /* top-level claim name: "sub", "role", "email" */
    char *header; /* forwarded as this request header */
};

struct proxy_jwt_provider {
    char *name;
    char *issuer;            /* required: the token's iss must equal it */
    char **audiences;        /* the token's aud must contain one; 0: not checked */
    size_t naudiences;
    char *jwks_uri;          /* http://HOST:PORT/path, numeric host */
    unsigned algorithms;     /* OR of enum jwt_alg values (they are bits); default ES256|RS256|EdDSA */
    uint32_t leeway_s;       /* clock skew allowed on exp/nbf/iat; default 30 */
    uint32_t jwks_refresh_s; /* default 300 */
    uint32_t max_token_bytes; /* longer tokens are refused unparsed; default 8192 */
    struct proxy_claim_header *claims_to_headers;
    size_t nclaims;
    bool forward_token;      /* keep Authorization upstream; default true (our services check it again) */
};

enum proxy_jwt_mode { PROXY_JWT_OFF, PROXY_JWT_OPTIONAL, PROXY_JWT_REQUIRED };

/* Rate limiting: GCRA, `requests` per `period_ms` with bursts of `burst`. */
enum proxy_rl_key { PROXY_RL_CLIENT_IP, PROXY_RL_JWT_SUB, PROXY_RL_HEADER };

struct proxy_rate_limit {
    char *name;
    enum proxy_rl_key key;
    char *header;        /* PROXY_RL_HEADER: the request header whose value is the key */
    uint32_t requests;   /* sustained rate: requests per period */
    uint32_t period_ms;
    uint32_t burst;      /* requests allowed at once; default = requests */
    bool global;         /* shared by every gateway through Redis; else per process */
};

enum proxy_waf_mode { PROXY_WAF_OFF, PROXY_WAF_DETECT, PROXY_WAF_BLOCK };

struct proxy_waf {
    enum proxy_waf_mode mode;
    int paranoia;          /* CRS paranoia level 1..4; default 1 */
    int anomaly_threshold; /* CRS inbound anomaly score threshold; default 5 */
};

struct proxy_header_match {
    char *name;
    char *exact;  /* one of exact, prefix, regex; none: present */
    char *prefix;
    regex_t *regex;
    bool invert;  /* matches when the header does NOT match */
};

struct proxy_header_op {
    char *name;
    char *value; /* NULL for remove */
};

struct proxy_header_rules {
    struct proxy_header_op *set; /* replace (or add when absent) */
    size_t nset;
    struct proxy_header_op *add; /* append */
    size_t nadd;
    char **remove;
    size_t nremove;
};

struct proxy_destination {
    struct proxy_cluster *cluster;
    const struct proxy_subset *subset; /* NULL: every endpoint */
    uint32_t weight; /* relative; default 1 */
};

struct proxy_mirror {
    struct proxy_destination dest;
    uint32_t percent_x100;  /* 0..10000: share of requests copied (hundredths of a percent) */
};

struct proxy_fault {
    uint32_t delay_ms;
    uint32_t delay_percent_x100;
    int abort_status;         /* 0: no abort */
    uint32_t abort_percent_x100;
};

enum {
    PROXY_RETRY_5XX = 1u << 0,
    PROXY_RETRY_GATEWAY_ERROR = 1u << 1,   /* 502, 503, 504 */
    PROXY_RETRY_CONNECT_FAILURE = 1u << 2,
    PROXY_RETRY_RESET = 1u << 3,
    PROXY_RETRY_STATUS_CODES = 1u << 4,    /* retriable_status_codes */
};

struct proxy_retry {
    uint32_t attempts;        /* retries after the first try; 0: none */
    uint32_t per_try_timeout_ms; /* 0: the route's timeout */
    unsigned retry_on;        /* PROXY_RETRY_* bits */
    int status_codes[8];
    size_t nstatus_codes;
    bool non_idempotent;      /* retry POST/PATCH too */
    uint32_t backoff_base_ms; /* default 25 */
    uint32_t backoff_max_ms;  /* default 250 */
    uint32_t budget_percent;  /* retries in flight ≤ this % of requests in flight; default 20 */
    uint32_t budget_min_concurrency; /* retries always allowed below this many; default 3 */
};

enum proxy_authz_action { PROXY_AUTHZ_ALLOW, PROXY_AUTHZ_DENY };

/* One AuthorizationPolicy rule: matches when every present part matches
 * (from: any source entry; to: any operation entry). Strings ending in '*'
 * are prefixes, starting with '*' suffixes, "*" alone anything. */
struct proxy_authz_source {
    char **principals, **not_principals, **namespaces, **not_namespaces;
    size_t nprincipals, nnot_principals, nnamespaces, nnot_namespaces;
};
struct proxy_authz_operation {
    char **methods, **not_methods, **paths, **not_paths;
    size_t nmethods, nnot_methods, npaths, nnot_paths;
};
struct proxy_authz_rule {
    struct proxy_authz_source *from; /* any of them; 0: any source */
    size_t nfrom;
    struct proxy_authz_operation *to; /* any of them; 0: any operation */
    size_t nto;
};
struct proxy_authz_policy {
    char *name;
    enum proxy_authz_action action;
    struct proxy_authz_rule *rules; /* any of them; ALLOW with 0 rules allows nothing, DENY with 0 denies nothing */
    size_t nrules;
};

struct proxy_redirect {
    char *scheme;    /* NULL: keep */
    char *host;      /* NULL: keep */
    uint16_t port;   /* 0: default for the scheme / keep */
    char *path;      /* replaces the whole path, or NULL */
    char *prefix;    /* replaces the route's matched prefix, or NULL */
    int code;        /* 301, 302, 303, 307, 308; default 301 */
};

struct proxy_direct_response {
    int status;
    char *body;         /* may be NULL */
    char *content_type; /* default text/plain; charset=utf-8 */
};

struct proxy_route {
    char *name;
    char *host;           /* "*" any, "*.example.test" suffix, else exact (case-insensitive) */
    char *prefix;         /* path prefix, or NULL */
    char *exact;          /* exact path, or NULL */
    char *regex_src;      /* path regex (POSIX ERE, anchored), or NULL */
    regex_t *regex;
    char *methods[PROXY_MAX_METHODS];
    size_t nmethods;      /* 0: any */
    struct proxy_header_match *headers; /* all must match */
    size_t nheaders;

    /* what to do: one of forward (destinations), redirect, direct response */
    struct proxy_destination *destinations;
    size_t ndestinations;
    uint32_t total_weight;
    struct proxy_mirror *mirror;  /* or NULL */
    struct proxy_fault *fault;    /* or NULL */
    struct proxy_retry retry;     /* attempts 0: none */
    char **listeners;             /* only on these listeners; 0: all */
    size_t nlisteners;
    struct proxy_redirect *redirect;
    struct proxy_direct_response *direct;

    char *rewrite_prefix; /* replaces the matched prefix before forwarding */
    char *rewrite_host;   /* replaces Host */
    uint32_t timeout_ms;  /* 0 → 15 s */
    struct proxy_header_rules request_headers, response_headers;
    enum proxy_jwt_mode jwt_mode;
    const struct proxy_jwt_provider *jwt;   /* when jwt_mode != OFF */
    const struct proxy_rate_limit *rate_limit; /* or NULL */
    struct proxy_waf waf;
    uint64_t max_body_bytes;  /* 0: the listener's */
    uint32_t max_header_bytes; /* 0: the listener's */
};

enum proxy_listener_role { PROXY_ROLE_GATEWAY, PROXY_ROLE_INBOUND, PROXY_ROLE_OUTBOUND };
enum proxy_mtls_mode { PROXY_MTLS_STRICT, PROXY_MTLS_PERMISSIVE };

struct proxy_listener {
    char *name;
    struct net_addr addr;
    enum proxy_listener_role role; /* inbound: mTLS in front of the app; outbound: the app's HTTP_PROXY */
    enum proxy_mtls_mode mtls_mode;  /* inbound only */
    char *client_ca_file;            /* inbound: the trust bundle client certificates must chain to */
    /* TLS: certificates chosen by SNI, the first is the default; 0 = plain */
    char **cert_files, **key_files;
    size_t ncerts;
    uint16_t redirect_https_port; /* plain listener: answer 308 to https://host:PORT; 0: off */
    uint32_t hsts_max_age_s;      /* TLS listener: Strict-Transport-Security; 0: off */
    bool hsts_subdomains;
    uint32_t max_connections;         /* per worker; 0 → 10,000 */
    uint32_t max_connections_per_ip;  /* whole process; 0 → unlimited */
    uint32_t header_timeout_ms, idle_timeout_ms, body_timeout_ms; /* 0 → server defaults */
    uint32_t max_header_bytes;        /* 0 → 32 KiB */
    uint64_t max_body_bytes;          /* 0 → 1 MiB */
};

struct proxy_waf_global {
    char *crs_setup; /* default /etc/modsecurity/crs/crs-setup.conf */
    char *rules_dir; /* default /usr/share/modsecurity-crs/rules */
    int threads;     /* evaluation threads; default 1 */
};

struct proxy_config {
    _Atomic int refs;
    char *version;   /* "" when absent */
    struct proxy_listener *listeners;
    size_t nlisteners;
    struct proxy_route *routes;
    size_t nroutes;
    struct proxy_cluster *clusters;
    size_t nclusters;
    struct proxy_jwt_provider *jwt_providers;
    size_t njwt_providers;
    struct proxy_rate_limit *rate_limits;
    size_t nrate_limits;
    char *redis_url;              /* for global rate limits; NULL: none configured */
    struct proxy_waf_global waf;  /* used when a route enables the WAF */
    bool uses_waf;
    struct net_addr admin_addr;   /* admin listener; port 0 with admin_enabled false: off */
    bool admin_enabled;
    struct proxy_authz_policy *authz; /* inbound listeners only */
    size_t nauthz;
    char *workload;               /* this proxy's workload ("order"), for metrics; "" gateway */
    char *spiffe_id;              /* our own identity (from the workload certificate), or NULL */
    char *region, *zone;          /* our locality, for locality-aware balancing; NULL: unknown */
    char *app_ready_url;          /* sidecar: the app's readiness URL; /readyz follows it, drain waits for the app */
    uint32_t app_exit_wait_ms;    /* drain: how long outbound keeps serving for an app still up; default 30 s */
};

/* Loads and validates path. 0, or <0 with err "FILE: $.routes[2].cluster: ...". refs = 1. */
int proxy_config_load(const char *path, struct proxy_config **out, char *err, size_t errsz);
/* The same from text in memory; name is used in messages (fuzzed). */
int proxy_config_parse(const char *name, struct str text, struct proxy_config **out, char *err, size_t errsz);
/* Builds the config of quick mode: one listener on from (TLS when cert_file
 * is set) forwarding everything to the upstream URL to ("http://HOST:PORT"). */
int proxy_config_quick(const char *from, const char *to, const char *cert_file, const char *key_file,
                       struct proxy_config **out, char *err, size_t errsz);
struct proxy_config *proxy_config_ref(struct proxy_config *c);
void proxy_config_unref(struct proxy_config *c);
void proxy_config_free(struct proxy_config *c); /* regardless of refs: for loaders */

/* A request's view for matching. */
struct http1_header;
struct proxy_match_input {
    struct str host, path, method;
    const struct http1_header *headers;
    size_t nheaders;
    const char *listener; /* the listener's name: routes with `listeners` match only there */
};
/* The first route matching, or NULL. */
const struct proxy_route *proxy_route_match(const struct proxy_config *c, const struct proxy_match_input *in);
/* Destination by weight for a uniform random r in [0, total_weight). */
const struct proxy_destination *proxy_route_pick(const struct proxy_route *r, uint32_t rnd);

#endif
