/* model.h — the manifests of a deploy directory as typed, validated objects.
 *
 * model_load_dir reads every *.yaml / *.yml file of a directory (sorted by
 * name; hidden files skipped; subdirectories are not read, so deploy/ can
 * hold other YAML such as observability/ configs), decodes each document by
 * apiVersion + kind into the structs below, then validates across resources.
 * Everything the control plane does (compile proxy configs, run replicas)
 * reads this model and never the YAML.
 *
 * Errors and warnings name file, line and field, as cfg.h formats them:
 *   deploy/order.yaml:12:7: spec.replicas: expected an integer, got "three"
 *   deploy/mesh.yaml:40:13: spec.http[0].route[1].destination.subset: no DestinationRule for host "user" defines subset "v3" (deploy/mesh.yaml:60)
 * A model with any error is never returned: bad input applies nothing.
 * Fields strata does not implement are warnings naming them.
 *
 * Memory: everything (strings included) lives in the model's arena and the
 * cfg docs it keeps; model_free releases it all. A model is immutable once
 * returned: the control plane swaps whole models on apply. */
#ifndef STRATA_CONTROL_MODEL_H
#define STRATA_CONTROL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where an object or field was written. */
struct model_loc {
    const char *file;
    int line;
    int column; /* 1-based characters */
};

struct model_kv {
    const char *key, *value;
};

struct model_labels {
    struct model_kv *items;
    size_t n;
};

/* Kubernetes IntOrString for maxSurge/maxUnavailable/minAvailable. */
struct model_intstr {
    bool set;
    bool percent; /* value is a percentage ("25%") */
    int value;
};

struct model_env {
    const char *name;
    const char *value;          /* literal value, or NULL when value_from */
    const char *secret_name;    /* valueFrom.secretKeyRef */
    const char *configmap_name; /* valueFrom.configMapKeyRef */
    const char *key;            /* the ref's key */
    bool optional;
    struct model_loc loc;
};

struct model_probe {
    bool set;
    const char *path;   /* httpGet.path, default "/" */
    int port;           /* httpGet.port resolved to a containerPort number */
    int initial_delay_s, period_s, timeout_s; /* defaults 0, 10, 1 */
    int success_threshold, failure_threshold; /* defaults 1, 3 */
};

struct model_volume_mount {
    const char *mount_path;  /* as written ("/var/run/secrets/jwt") */
    const char *secret_name; /* the volume's secret.secretName, or NULL */
    const char *configmap_name; /* the volume's configMap.name, or NULL */
};

struct model_container {
    const char *name;
    const char *image; /* "strata/order-svc:dev" */
    const char **command; size_t ncommand; /* may be 0: the image's entrypoint */
    const char **args; size_t nargs;
    struct model_env *env; size_t nenv;
    int *ports; size_t nports; /* containerPort values, first = the main one */
    struct model_probe startup, readiness, liveness;
    int64_t cpu_request_millis; /* resources.requests.cpu, 0 when unset */
    int64_t memory_limit_bytes; /* resources.limits.memory, 0 when unset */
    struct model_volume_mount *mounts; size_t nmounts;
};

struct model_deployment {
    const char *name, *namespace;
    struct model_loc loc;
    int replicas;                   /* default 1 */
    struct model_labels selector;   /* spec.selector.matchLabels (required) */
    struct model_labels pod_labels; /* spec.template.metadata.labels */
    struct model_labels pod_annotations;
    const char *service_account;    /* default "default" */
    struct model_container *containers; size_t ncontainers; /* containers[0] is the app */
    struct model_intstr max_surge, max_unavailable; /* default 25% / 25% */
    int termination_grace_s;        /* default 30 */
    bool inject_sidecar;            /* false when annotation sidecar.istio.io/inject: "false" (template or
                                       object metadata), and for a gateway */
    bool is_gateway;                /* the pod runs the strata proxy image as the edge gateway */
    char template_hash[17];         /* hex of a hash over spec.template: changes trigger a rollout */
};

struct model_service_port {
    const char *name;
    int port;        /* the Service port */
    int target_port; /* resolved containerPort (defaults to port) */
    const char *target_port_name; /* targetPort as written when it is a port name, else NULL */
};

struct model_service {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_labels selector;
    struct model_service_port *ports; size_t nports;
};

struct model_configmap {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_kv *data; size_t ndata;
};

struct model_secret {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_kv *data; size_t ndata; /* stringData, and data base64-decoded */
    bool generated; /* declared by a strata.dev Database or GeneratedSecret, filled at run time:
                       data then lists the keys it will have, with "" values */
};

/* networking.k8s.io/v1 Ingress, served by the gateway. */
struct model_ingress_path {
    const char *path;
    bool exact;               /* pathType Exact (else Prefix; ImplementationSpecific = Prefix) */
    const char *service;      /* backend.service.name */
    int service_port;         /* backend.service.port.number (or resolved name) */
    const char *service_port_name; /* backend.service.port.name as written, else NULL */
};
struct model_ingress_rule {
    const char *host;         /* NULL: any */
    struct model_ingress_path *paths; size_t npaths;
};
struct model_ingress {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_ingress_rule *rules; size_t nrules;
    const char **tls_hosts; size_t ntls_hosts; /* spec.tls[].hosts (certificates come from the CA) */
};

/* networking.istio.io VirtualService (HTTP routes only). */
struct model_string_match { /* Istio StringMatch */
    enum { MODEL_MATCH_NONE, MODEL_MATCH_EXACT, MODEL_MATCH_PREFIX, MODEL_MATCH_REGEX } kind;
    const char *value;
};
struct model_header_match {
    const char *name;
    struct model_string_match match;
};
struct model_http_match {
    struct model_string_match uri, method;
    struct model_header_match *headers; size_t nheaders;
};
struct model_route_dest {
    const char *host;   /* a Service name ("user" or "user.default.svc.cluster.local", normalized to "user") */
    const char *subset; /* NULL: all endpoints */
    int port;           /* 0: the Service's first port */
    int weight;         /* 0..100; a single destination without weight gets 100 */
    struct model_loc loc;
};
struct model_http_route {
    const char *name;
    struct model_http_match *matches; size_t nmatches; /* 0: matches everything */
    struct model_route_dest *route; size_t nroute;
    struct model_route_dest mirror; bool has_mirror; int mirror_percent; /* default 100 */
    int timeout_ms;       /* 0: none */
    int retry_attempts;   /* -1: not set */
    int per_try_timeout_ms;
    const char *retry_on; /* "5xx,connect-failure,..." as written, or NULL */
    int fault_delay_ms, fault_delay_percent;
    int fault_abort_status, fault_abort_percent;
    const char *rewrite_uri; /* rewrite.uri (prefix rewrite), or NULL */
};
struct model_virtualservice {
    const char *name, *namespace;
    struct model_loc loc;
    const char **hosts; size_t nhosts; /* normalized short Service names */
    const char **gateways; size_t ngateways; /* empty: mesh only; "mesh" explicit */
    struct model_http_route *http; size_t nhttp;
};

/* networking.istio.io DestinationRule. */
struct model_subset {
    const char *name;
    struct model_labels labels;
};
struct model_destinationrule {
    const char *name, *namespace;
    struct model_loc loc;
    const char *host; /* normalized short Service name */
    enum { MODEL_LB_DEFAULT, MODEL_LB_ROUND_ROBIN, MODEL_LB_LEAST_REQUEST } lb;
    int max_connections, max_pending_requests, max_requests, max_retries; /* 0: unset */
    bool outlier; /* outlierDetection present */
    int consecutive_5xx, consecutive_gateway_errors; /* -1: unset */
    int interval_ms, base_ejection_ms, max_ejection_percent; /* 0/-1: unset */
    struct model_subset *subsets; size_t nsubsets;
};

/* security.istio.io PeerAuthentication. */
struct model_peerauth {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_labels selector; /* empty: namespace-wide */
    bool permissive;              /* mtls.mode PERMISSIVE (STRICT otherwise; DISABLE is an error) */
};

/* security.istio.io AuthorizationPolicy. */
struct model_authz_source {
    const char **principals; size_t nprincipals;
    const char **not_principals; size_t nnot_principals;
    const char **namespaces; size_t nnamespaces;
    const char **not_namespaces; size_t nnot_namespaces;
    const char **request_principals; size_t nrequest_principals;         /* JWT iss/sub; "*" = any valid token */
    const char **not_request_principals; size_t nnot_request_principals;
};
struct model_authz_op {
    const char **methods; size_t nmethods;
    const char **not_methods; size_t nnot_methods;
    const char **paths; size_t npaths;         /* "/x", "/x*", "*x" */
    const char **not_paths; size_t nnot_paths;
};
struct model_authz_rule {
    struct model_authz_source *from; size_t nfrom;
    struct model_authz_op *to; size_t nto;
};
struct model_authzpolicy {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_labels selector; /* empty: every workload of the namespace */
    bool deny;                    /* action DENY (ALLOW otherwise) */
    struct model_authz_rule *rules; size_t nrules;
};

/* security.istio.io RequestAuthentication (applied at the gateway). */
struct model_jwt_rule {
    const char *issuer;
    const char **audiences; size_t naudiences;
    const char *jwks_uri;         /* "http://auth/.well-known/jwks.json": a Service name resolves to its endpoints */
    bool forward_original_token;
    struct model_kv *output_claim_to_headers; size_t noutput; /* claim → header */
};
struct model_requestauth {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_labels selector;
    struct model_jwt_rule *rules; size_t nrules;
};

/* policy/v1 PodDisruptionBudget. */
struct model_pdb {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_labels selector;
    struct model_intstr min_available, max_unavailable; /* exactly one set */
};

/* autoscaling/v2 HorizontalPodAutoscaler. */
struct model_hpa {
    const char *name, *namespace;
    struct model_loc loc;
    const char *target; /* scaleTargetRef.name, a Deployment */
    int min_replicas, max_replicas; /* min default 1 */
    int cpu_utilization;        /* target averageUtilization %, 0: none */
    int64_t requests_per_second_milli; /* Pods metric "requests_per_second" averageValue ×1000, 0: none */
    int scale_down_stabilization_s;    /* behavior.scaleDown.stabilizationWindowSeconds, default 300 */
    int scale_up_stabilization_s;      /* default 0 */
};

/* strata.dev/v1alpha1 RateLimitPolicy: limits on gateway routes. */
struct model_ratelimit_rule {
    const char *path_prefix;  /* the Ingress paths it applies to (prefix of the path), "/" for all */
    const char **methods; size_t nmethods; /* empty: all */
    enum { MODEL_RL_CLIENT_IP, MODEL_RL_JWT_SUB, MODEL_RL_HEADER } key;
    const char *header;       /* for MODEL_RL_HEADER */
    int requests;             /* per period */
    int period_s;
    int burst;
    bool global;              /* shared by all gateway replicas through Redis */
};
struct model_ratelimit {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_ratelimit_rule *rules; size_t nrules;
};

/* strata.dev/v1alpha1 WafPolicy: ModSecurity + CRS on gateway routes. */
struct model_waf {
    const char *name, *namespace;
    struct model_loc loc;
    const char **path_prefixes; size_t npath_prefixes;
    bool detect_only;
    int paranoia;            /* 1..4, default 1 */
    int anomaly_threshold;   /* default 5 */
};

/* strata.dev/v1alpha1 Database: a data-layer store with generated credentials,
 * handed over as the Secret spec.secretName with keys url, host, port,
 * username, password, database (PostgreSQL), url (Redis, NATS). */
struct model_database {
    const char *name, *namespace;
    struct model_loc loc;
    enum { MODEL_DB_POSTGRESQL, MODEL_DB_REDIS, MODEL_DB_NATS } engine;
    const char *secret_name;
};

/* strata.dev/v1alpha1 GeneratedSecret: a Secret whose values are made on
 * first start and kept in the state directory (e.g. JWT signing keys). */
struct model_generated_secret {
    const char *name, *namespace;
    struct model_loc loc;
    struct model_kv *keys; size_t nkeys; /* key → generator: "ec-p256-private-key", "random-32" */
};

struct model {
    const char *dir;
    struct model_deployment *deployments; size_t ndeployments;
    struct model_service *services; size_t nservices;
    struct model_configmap *configmaps; size_t nconfigmaps;
    struct model_secret *secrets; size_t nsecrets; /* includes the generated ones */
    struct model_ingress *ingresses; size_t ningresses;
    struct model_virtualservice *virtualservices; size_t nvirtualservices;
    struct model_destinationrule *destinationrules; size_t ndestinationrules;
    struct model_peerauth *peerauths; size_t npeerauths;
    struct model_authzpolicy *authzpolicies; size_t nauthzpolicies;
    struct model_requestauth *requestauths; size_t nrequestauths;
    struct model_pdb *pdbs; size_t npdbs;
    struct model_hpa *hpas; size_t nhpas;
    struct model_ratelimit *ratelimits; size_t nratelimits;
    struct model_waf *wafs; size_t nwafs;
    struct model_database *databases; size_t ndatabases;
    struct model_generated_secret *generated_secrets; size_t ngenerated_secrets;
    char digest[65]; /* sha256 hex over every file in order (name, NUL, 8-byte big-endian length, bytes): the desired-state version */
    void *internal;  /* arena, cfg docs */
};

/* Messages, each one line "file:line:col: field: message". */
struct model_diag {
    char **errors; size_t nerrors;
    char **warnings; size_t nwarnings;
};

/* Loads and validates dir. diag is (re)initialised by the call.
 * 0 and *out on success (warnings may be present);
 * -EINVAL with every error found in diag (not just the first), or -errno
 * when the directory cannot be read. diag must be released with
 * model_diag_free either way. */
int model_load_dir(const char *dir, struct model **out, struct model_diag *diag);
/* The same for files given one by one (tests, `apply -f FILE`). */
int model_load_files(const char *const *paths, size_t n, struct model **out, struct model_diag *diag);
/* The same for YAML held in memory: texts[i][0..lens[i]) reported as file
 * names[i] (fuzzing, the admin API's apply). The texts may be freed once
 * this returns. */
int model_load_buffers(const char *const *names, const char *const *texts, const size_t *lens, size_t n,
                       struct model **out, struct model_diag *diag);
void model_free(struct model *m);
void model_diag_free(struct model_diag *d);

/* Lookups by name (NULL when absent). */
const struct model_deployment *model_deployment(const struct model *m, const char *name);
const struct model_service *model_service(const struct model *m, const char *name);
const struct model_secret *model_secret(const struct model *m, const char *name);
const struct model_configmap *model_configmap(const struct model *m, const char *name);
const struct model_destinationrule *model_destinationrule(const struct model *m, const char *host);
/* True when every label of sel is in labels (an empty selector matches nothing). */
bool model_labels_match(const struct model_labels *sel, const struct model_labels *labels);
/* The value of key in labels, or NULL. */
const char *model_label(const struct model_labels *labels, const char *key);

#endif
