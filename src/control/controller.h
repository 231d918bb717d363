/* controller.h — the Deployment controller of the local runtime: turns the
 * model into running replicas (app + sidecar), keeps their endpoints in
 * every proxy's compiled config, and reports status.
 *
 * A pod's life: ports allocated (app, sidecar inbound/outbound/admin) →
 * registered with xds (token, identity) → its proxy config compiled and set
 * → replica started (runtime.h) → ready: its sidecar's inbound address joins
 * the endpoints of every Service that selects it, every affected proxy gets
 * a new config version → stop: removed from the endpoints first (pushed),
 * then SIGTERM, SIGKILL after the grace period.
 * Thread: the control plane's one worker loop; every call on it. */
#ifndef STRATA_CONTROL_CONTROLLER_H
#define STRATA_CONTROL_CONTROLLER_H

#include <jansson.h>
#include <stdbool.h>

#include "control/ca.h"
#include "control/datalayer.h"
#include "control/model.h"
#include "control/xds.h"
#include "core/http1_client.h"
#include "core/loop.h"

struct controller;

/* A free 127.0.0.1 port (bound, read, released) that is none of avoid[]:
 * the kernel may hand out a port that a listener named in a flag will bind
 * later (the gateway's, with SO_REUSEPORT: it would share it). <0 -errno. */
int controller_free_port(const int *avoid, size_t navoid);

struct controller_config {
    const char *state_dir;
    const char *images_dir;     /* the image store */
    const char *proxy_image;    /* the sidecar's image, "strata/proxy:dev" */
    const char *control_url;    /* "http://127.0.0.1:9900": what proxies long-poll */
    const char *gateway_http, *gateway_https; /* the gateway's public listeners */
    const char *trust_domain;   /* "strata.local" */
    const char *redis_addr;     /* for global rate limits, or NULL */
    uint32_t backoff_base_ms;   /* restart backoff (0: Kubernetes' 10 s) */
    uint32_t hpa_interval_ms;   /* autoscaler period (0: 15 s, as Kubernetes) */
    const char *otlp_endpoint;  /* OTEL_EXPORTER_OTLP_ENDPOINT for apps and proxies, or NULL */
    const int *reserved_ports;  /* never handed to a replica (public listeners, data layer) */
    size_t nreserved_ports;
    struct ca *ca;
    struct xds *xds;
};

/* Takes ownership of m and of secrets (object: Secret name → {key: value},
 * every Secret the model names, generated ones filled in). */
struct controller *controller_new(const struct controller_config *cfg, struct model *m, json_t *secrets);
/* Starts reconciling on loop l (client: probes, runtime). */
int controller_start(struct controller *c, struct loop *l, struct http1_client *client);
/* Every workload at its desired replicas, all ready. */
bool controller_ready(const struct controller *c);
/* {"ready", "version", "workloads": [{name, kind, replicas, ready, restarts,
 * version, pods: [...]}]}: a new reference. */
json_t *controller_status(const struct controller *c);
/* Prometheus HTTP service discovery: every app, sidecar and gateway
 * replica's /metrics address with labels job (app|sidecar|gateway),
 * workload, replica, version, service (a new reference). */
json_t *controller_sd_targets(const struct controller *c);
/* Recent events (a new array of {time, object, reason, message}). */
json_t *controller_events(const struct controller *c);
/* Applies a new desired state (takes ownership of m and secrets, as
 * controller_new): changed templates roll out (maxSurge/maxUnavailable,
 * readiness, PodDisruptionBudgets), replica counts scale, removed
 * Deployments stop, proxies get new configs. */
void controller_apply(struct controller *c, struct model *m, json_t *secrets);
/* The secrets currently in force (borrowed). */
const json_t *controller_secrets(const struct controller *c);

/* Operations of the admin API: 0, or <0 with a message in err.
 * -ENOENT unknown name, -EBUSY refused by a PodDisruptionBudget,
 * -EINVAL bad argument. */
int controller_scale(struct controller *c, const char *deployment, int replicas, char *err, size_t errsz);
int controller_rollout_restart(struct controller *c, const char *deployment, char *err, size_t errsz);
int controller_rollout_undo(struct controller *c, const char *deployment, char *err, size_t errsz);
/* Evicts one replica (name) or every replica of a Deployment, each only if
 * the PodDisruptionBudgets allow it; the Deployment replaces them.
 * *evicted / *blocked count them; -EBUSY when any was refused. */
int controller_drain(struct controller *c, const char *name, int *evicted, int *blocked, char *err, size_t errsz);

/* Removes every pod from the endpoints, then stops them all; done runs once
 * every process has exited. */
void controller_stop_all(struct controller *c, void (*done)(void *arg), void *arg);
/* Frees after controller_stop_all completed (or before start). */
void controller_free(struct controller *c);

#endif
